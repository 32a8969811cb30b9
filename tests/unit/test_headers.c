/*
 * Unit tests for src/headers.c: classification, hop-by-hop removal, the
 * request and response heads ferry writes (SPEC 5), target_split and
 * host_strip_port.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "config.h"
#include "headers.h"
#include "http1.h"
#include "sbuf.h"

#define VIA "1.1 ferry-0badcafe-out"
#define TP_APP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP_NEW "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static struct http_parser hp;
static struct http_head head;
static struct sbuf out;

/* Parses the head of MSG (a request, or a response) and classifies it. */
static int
parse(const char *msg, bool response)
{
	size_t used;
	enum http_status st;

	http_parser_init(&hp, response, &head);
	st = http_parse(&hp, msg, strlen(msg), 0, &used);
	ck_assert_msg(st == HTTP_HEAD_DONE, "parse: status %d (%s)", st,
	    hp.err_text ? hp.err_text : "");
	return headers_classify(msg, &head);
}

static const struct request_ids new_ids = {
	.correlation = "c-1", .correlation_len = 3,
	.request = "r-1", .request_len = 3,
};

static struct upstream_head_args
outbound_args(const struct request_ids *ids)
{
	return (struct upstream_head_args){
		.host = "user-service",
		.target = "/api",
		.target_len = 4,
		.auth_key = NULL,
		.ids = ids,
		.via = VIA,
	};
}

/* The request head written for MSG, as a string. */
static const char *
build_req(const char *msg, const struct upstream_head_args *a)
{
	ck_assert_int_eq(parse(msg, false), 0);
	sbuf_clear(&out);
	headers_build_request(&out, msg, &head, a);
	ck_assert(!out.oom);
	sbuf_add(&out, "", 1);
	return out.p;
}

static const char *
build_resp(const char *msg, const struct downstream_head_args *a)
{
	ck_assert_int_eq(parse(msg, true), 0);
	sbuf_clear(&out);
	headers_build_response(&out, msg, &head, a);
	ck_assert(!out.oom);
	sbuf_add(&out, "", 1);
	return out.p;
}

static void
teardown(void)
{
	sbuf_free(&out);
}

START_TEST(test_classify_kinds)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\n"
	    "HOST: a\r\n"
	    "connection: close\r\n"
	    "Keep-Alive: 1\r\n"
	    "Proxy-Connection: x\r\n"
	    "Proxy-Authorization: x\r\n"
	    "Upgrade: x\r\n"
	    "te: x\r\n"
	    "Content-Length: 0\r\n"
	    "Expect: x\r\n"
	    "X-Service-Auth: x\r\n"
	    "X-CORRELATION-ID: x\r\n"
	    "x-request-id: x\r\n"
	    "Traceparent: x\r\n"
	    "TraceState: x\r\n"
	    "Via: x\r\n"
	    "X-Ferry-Peer: x\r\n"
	    "X-Forwarded-For: x\r\n"
	    "X-Forwarded-Proto: x\r\n"
	    "Idempotency-Key: x\r\n"
	    "X-Other: x\r\n"
	    "Hostname: x\r\n"
	    "Tes: x\r\n"
	    "V: x\r\n"
	    "\r\n";
	static const enum hdr_kind want[] = {
		HDR_HOST, HDR_CONNECTION, HDR_KEEP_ALIVE, HDR_PROXY_CONNECTION,
		HDR_PROXY_AUTHORIZATION, HDR_UPGRADE, HDR_TE, HDR_CONTENT_LENGTH,
		HDR_EXPECT, HDR_SERVICE_AUTH, HDR_CORRELATION_ID, HDR_REQUEST_ID,
		HDR_TRACEPARENT, HDR_TRACESTATE, HDR_VIA, HDR_FERRY_PEER,
		HDR_FORWARDED_FOR, HDR_FORWARDED_PROTO, HDR_IDEMPOTENCY_KEY,
		HDR_OTHER, HDR_OTHER, HDR_OTHER, HDR_OTHER,
	};

	ck_assert_int_eq(parse(msg, false), 0);
	ck_assert_uint_eq(head.n_headers, sizeof(want) / sizeof(want[0]));
	for (uint32_t i = 0; i < head.n_headers; i++)
		ck_assert_msg(head.h[i].kind == want[i], "header %u: kind %d, want %d", i,
		    head.h[i].kind, want[i]);
	ck_assert_ptr_eq(headers_find(&head, HDR_VIA), &head.h[14]);
	ck_assert_ptr_null(headers_find(&head, HDR_TRANSFER_ENCODING));
	ck_assert_int_eq(headers_count(&head, HDR_OTHER), 4);
	ck_assert_int_eq(headers_count(&head, HDR_HOST), 1);

	/* a response may carry Transfer-Encoding */
	ck_assert_int_eq(parse("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", true), 0);
	ck_assert_int_eq(head.h[0].kind, HDR_TRANSFER_ENCODING);
}
END_TEST

START_TEST(test_classify_connection_hop)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "X-A: 1\r\n"
	    "Connection: x-a ,\tKEEP-ALIVE, , x-b\r\n"
	    "x-b: 2\r\n"
	    "X-AB: 3\r\n"
	    "Keep-Alive: 4\r\n"
	    "connection: X-C\r\n"
	    "x-c: 5\r\n"
	    "X-D: 6\r\n"
	    "\r\n";

	ck_assert_int_eq(parse(msg, false), 0);
	ck_assert(!head.h[0].hop);	/* Host */
	ck_assert(head.h[1].hop);	/* X-A */
	ck_assert(!head.h[2].hop);	/* Connection itself: kind, not hop */
	ck_assert(head.h[3].hop);	/* x-b */
	ck_assert(!head.h[4].hop);	/* X-AB: not a prefix match */
	ck_assert(head.h[5].hop);	/* Keep-Alive */
	ck_assert(head.h[7].hop);	/* x-c from the second Connection */
	ck_assert(!head.h[8].hop);	/* X-D */
	ck_assert_int_eq(headers_count(&head, HDR_CONNECTION), 2);
}
END_TEST

START_TEST(test_classify_two_hosts)
{
	ck_assert_int_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", false), -1);
	ck_assert_int_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", false), -1);
	ck_assert_int_eq(parse("GET / HTTP/1.0\r\n\r\n", false), 0);
}
END_TEST

START_TEST(test_request_hop_by_hop)
{
	static const char msg[] =
	    "POST /orig HTTP/1.1\r\n"
	    "Host: app.local\r\n"
	    "X-First: 1\r\n"
	    "Connection: keep-alive, X-Drop-Me\r\n"
	    "Keep-Alive: timeout=5\r\n"
	    "Proxy-Connection: keep-alive\r\n"
	    "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
	    "TE: gzip\r\n"
	    "Upgrade: h2c\r\n"
	    "x-drop-me: secret\r\n"
	    "X-Mixed-CASE: Value With  Spaces\r\n"
	    "Content-Length: 3\r\n"
	    "X-Last: z\r\n"
	    "\r\n"
	    "abc";
	struct upstream_head_args a = outbound_args(&new_ids);

	ck_assert_str_eq(build_req(msg, &a),
	    "POST /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "X-First: 1\r\n"
	    "X-Mixed-CASE: Value With  Spaces\r\n"
	    "Content-Length: 3\r\n"
	    "X-Last: z\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
}
END_TEST

START_TEST(test_request_te_trailers)
{
	struct upstream_head_args a = outbound_args(&new_ids);

	ck_assert_str_eq(build_req("GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nTE: trailers\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
	ck_assert_str_eq(build_req("GET / HTTP/1.1\r\nHost: a\r\nte: Trailers\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nte: Trailers\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
	ck_assert_str_eq(build_req(
	    "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers, deflate\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
}
END_TEST

START_TEST(test_request_upgrade)
{
	static const char msg[] =
	    "GET /ws HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "Connection: Upgrade\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Key: k\r\n"
	    "\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	a.target = "/ws";
	a.target_len = 3;
	a.upgrade = true;
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /ws HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Key: k\r\n"
	    "connection: upgrade\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
	/* not being tunnelled: Upgrade goes */
	a.upgrade = false;
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /ws HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "Sec-WebSocket-Key: k\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
}
END_TEST

START_TEST(test_request_service_auth)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\nHost: a\r\nX-Service-Auth: app-key\r\nX-B: b\r\n"
	    "x-service-auth: other\r\n\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	a.auth_key = "svc-key";
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nX-B: b\r\n"
	    "x-service-auth: svc-key\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
	/* no auth for this service: the app's key does not leak */
	a.auth_key = NULL;
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nX-B: b\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
}
END_TEST

/* The key's bytes in the built head are marked for sbuf to wipe, and a
 * request's own x-service-auth values can be zeroed in place. */
START_TEST(test_service_auth_wiped)
{
	char msg[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Service-Auth: app-key\r\nX-B: b\r\n"
	    "x-service-auth: other\r\n\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);
	const char *k, *v;
	size_t at;

	a.auth_key = "svc-key";
	k = strstr(build_req(msg, &a), "svc-key");
	ck_assert_ptr_nonnull(k);
	at = (size_t)(k - out.p);
	ck_assert_uint_eq(out.secret_from, at);
	ck_assert_uint_eq(out.secret_to, at + 7);
	sbuf_wipe_secret(&out);
	ck_assert(memcmp(out.p + at, "\0\0\0\0\0\0\0\r\n", 9) == 0);
	ck_assert(strncmp(out.p, "GET /api HTTP/1.1\r\n", 19) == 0);
	ck_assert_uint_eq(out.secret_to, 0);

	/* found before: the zeros end the string */
	k = strstr(msg, "X-Service-Auth: ") + 16;
	v = strstr(msg, "x-service-auth: ") + 16;
	headers_wipe_values(msg, &head, HDR_SERVICE_AUTH);
	ck_assert(memcmp(k, "\0\0\0\0\0\0\0\r\nX-B: b", 15) == 0);
	ck_assert(memcmp(v, "\0\0\0\0\0\r\n\r\n", 9) == 0);
}
END_TEST

START_TEST(test_request_ids_from_app)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "X-Correlation-Id: app-corr.1\r\n"
	    "X-A: a\r\n"
	    "X-Request-ID: app-req\r\n"
	    "x-correlation-id: second\r\n"
	    "x-request-id: second\r\n"
	    "\r\n";
	struct request_ids ids = {
		.correlation = "app-corr.1", .correlation_len = 10,
		.request = "app-req", .request_len = 7,
		.correlation_from_app = true, .request_from_app = true,
	};
	struct upstream_head_args a = outbound_args(&ids);

	/* kept in place, name case preserved; repeats dropped */
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "X-Correlation-Id: app-corr.1\r\n"
	    "X-A: a\r\n"
	    "X-Request-ID: app-req\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
}
END_TEST

START_TEST(test_request_ids_replaced)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "X-Correlation-Id: bad id\r\n"
	    "X-A: a\r\n"
	    "X-Request-ID: \r\n"
	    "\r\n";
	struct request_ids ids = {
		.correlation = "123e4567-e89b-42d3-a456-426614174000", .correlation_len = 36,
		.request = "r-new", .request_len = 5,
	};
	struct upstream_head_args a = outbound_args(&ids);

	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "X-A: a\r\n"
	    "x-correlation-id: 123e4567-e89b-42d3-a456-426614174000\r\n"
	    "x-request-id: r-new\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");

	/* mixed: one kept, one new */
	ids.correlation = "mine";
	ids.correlation_len = 4;
	ids.correlation_from_app = true;
	ck_assert_str_eq(build_req(
	    "GET / HTTP/1.1\r\nHost: a\r\nx-correlation-id: mine\r\n"
	    "x-request-id: bad/id\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nx-correlation-id: mine\r\n"
	    "x-request-id: r-new\r\nvia: " VIA "\r\n\r\n");
}
END_TEST

START_TEST(test_request_traceparent)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "traceparent: " TP_APP "\r\n"
	    "X-A: a\r\n"
	    "tracestate: vendor=1\r\n"
	    "\r\n";
	struct request_ids ids = new_ids;
	struct upstream_head_args a = outbound_args(&ids);

	/* valid: passes unchanged, tracestate too */
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "traceparent: " TP_APP "\r\n"
	    "X-A: a\r\n"
	    "tracestate: vendor=1\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
	/* replaced: a new traceparent, and tracestate dropped */
	ids.traceparent = TP_NEW;
	ids.traceparent_len = strlen(TP_NEW);
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "X-A: a\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "traceparent: " TP_NEW "\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
	/* absent: added */
	ck_assert_str_eq(build_req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\n"
	    "traceparent: " TP_NEW "\r\nvia: " VIA "\r\n\r\n");
}
END_TEST

START_TEST(test_request_via)
{
	struct upstream_head_args a = outbound_args(&new_ids);

	/* appended to the last via header, in place */
	ck_assert_str_eq(build_req(
	    "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 a\r\nX-A: a\r\n"
	    "VIA: 1.1 b (x)\r\nX-B: b\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\nVia: 1.0 a\r\nX-A: a\r\n"
	    "VIA: 1.1 b (x), " VIA "\r\nX-B: b\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\n\r\n");
	/* one via */
	ck_assert_str_eq(build_req(
	    "GET / HTTP/1.1\r\nHost: a\r\nvia: 1.1 ferry-12345678-out\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\n"
	    "via: 1.1 ferry-12345678-out, " VIA "\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\n\r\n");
	/* the inbound token */
	a.via = "1.1 ferry-0badcafe-in";
	ck_assert_str_eq(build_req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &a),
	    "GET /api HTTP/1.1\r\nhost: user-service\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\n"
	    "via: 1.1 ferry-0badcafe-in\r\n\r\n");
}
END_TEST

START_TEST(test_request_host_and_target)
{
	static const char msg[] =
	    "GET http://user-service:8080/api/x?y=1 HTTP/1.1\r\n"
	    "X-Before: 1\r\n"
	    "Host: ignored.example:8080\r\n"
	    "X-After: 2\r\n"
	    "\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	a.host = "users.internal";
	a.target = "/api/x?y=1";
	a.target_len = 10;
	ck_assert_str_eq(build_req(msg, &a),
	    "GET /api/x?y=1 HTTP/1.1\r\n"
	    "host: users.internal\r\n"
	    "X-Before: 1\r\n"
	    "X-After: 2\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
	/* an HTTP/1.0 request without Host: still HTTP/1.1 with Host upstream */
	ck_assert_str_eq(build_req("DELETE /z HTTP/1.0\r\n\r\n", &a),
	    "DELETE /api/x?y=1 HTTP/1.1\r\nhost: users.internal\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nvia: " VIA "\r\n\r\n");
}
END_TEST

START_TEST(test_request_passthrough)
{
	/* unknown headers, odd spacing in values, repeats: all byte for byte */
	static const char msg[] =
	    "PUT /x HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "accept: */*\r\n"
	    "Set-Thing: a=1; b=\"2,3\"\r\n"
	    "X-Dup: 1\r\n"
	    "x-dup: 2\r\n"
	    "X-Empty:\r\n"
	    "X-UTF8: caf\xc3\xa9\r\n"
	    "Authorization: Bearer abc\r\n"
	    "Cookie: a=b; c=d\r\n"
	    "\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	ck_assert_str_eq(build_req(msg, &a),
	    "PUT /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "accept: */*\r\n"
	    "Set-Thing: a=1; b=\"2,3\"\r\n"
	    "X-Dup: 1\r\n"
	    "x-dup: 2\r\n"
	    "X-Empty: \r\n"
	    "X-UTF8: caf\xc3\xa9\r\n"
	    "Authorization: Bearer abc\r\n"
	    "Cookie: a=b; c=d\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: " VIA "\r\n"
	    "\r\n");
}
END_TEST

START_TEST(test_request_inbound)
{
	static const char msg[] =
	    "POST /in HTTP/1.1\r\n"
	    "Host: me\r\n"
	    "X-Ferry-Peer: forged\r\n"
	    "X-Forwarded-Proto: http\r\n"
	    "X-Forwarded-For: 1.2.3.4\r\n"
	    "x-service-auth: inbound-key\r\n"
	    "Content-Length: 0\r\n"
	    "x-forwarded-for: 5.6.7.8\r\n"
	    "\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	a.host = "localhost";
	a.target = "/in";
	a.target_len = 3;
	a.via = "1.1 ferry-0badcafe-in";
	a.peer = "spiffe://example.org/billing";
	a.forwarded_for = "10.0.0.9";
	ck_assert_str_eq(build_req(msg, &a),
	    "POST /in HTTP/1.1\r\n"
	    "host: localhost\r\n"
	    "X-Forwarded-For: 1.2.3.4\r\n"
	    "Content-Length: 0\r\n"
	    "x-forwarded-for: 5.6.7.8, 10.0.0.9\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "via: 1.1 ferry-0badcafe-in\r\n"
	    "x-ferry-peer: spiffe://example.org/billing\r\n"
	    "x-forwarded-proto: https\r\n"
	    "\r\n");
	/* no x-forwarded-for yet */
	ck_assert_str_eq(build_req("GET / HTTP/1.1\r\nHost: me\r\n\r\n", &a),
	    "GET /in HTTP/1.1\r\nhost: localhost\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\n"
	    "via: 1.1 ferry-0badcafe-in\r\n"
	    "x-ferry-peer: spiffe://example.org/billing\r\n"
	    "x-forwarded-proto: https\r\n"
	    "x-forwarded-for: 10.0.0.9\r\n\r\n");
}
END_TEST

/* Whether HDR (a full "name: value" line) is in OUT. */
static bool
has_line(const char *o, const char *line)
{
	char want[256];

	snprintf(want, sizeof(want), "\r\n%s\r\n", line);
	return strstr(o, want) != NULL;
}

/*
 * A header named in Connection is hop-by-hop, but the headers that frame
 * the message must still go with it: the body is forwarded as it came.
 * Dropping Content-Length or Transfer-Encoding makes the upstream read the
 * body as the next request (smuggling). Refusing the request (classify
 * returning -1) would be fine too.
 */
START_TEST(test_request_connection_cannot_drop_framing)
{
	static const char cl[] =
	    "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n"
	    "Content-Length: 5\r\n\r\nhello";
	static const char te[] =
	    "POST / HTTP/1.1\r\nHost: a\r\nConnection: Transfer-Encoding\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);
	bool cl_ok = true, te_ok = true;

	if (parse(cl, false) == 0) {
		sbuf_clear(&out);
		headers_build_request(&out, cl, &head, &a);
		sbuf_add(&out, "", 1);
		cl_ok = has_line(out.p, "Content-Length: 5");
	}
	if (parse(te, false) == 0) {
		sbuf_clear(&out);
		headers_build_request(&out, te, &head, &a);
		sbuf_add(&out, "", 1);
		te_ok = has_line(out.p, "Transfer-Encoding: chunked");
	}
	ck_assert_msg(cl_ok && te_ok, "dropped:%s%s", cl_ok ? "" : " Content-Length",
	    te_ok ? "" : " Transfer-Encoding");
}
END_TEST

/* Every forwarded request carries ferry's via token (SPEC 5: loop
 * detection depends on it), even when the app lists "via" in Connection. */
START_TEST(test_request_connection_cannot_drop_via)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\nHost: a\r\nConnection: via\r\nVia: 1.0 a\r\n\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	if (parse(msg, false) != 0)
		return;
	sbuf_clear(&out);
	headers_build_request(&out, msg, &head, &a);
	sbuf_add(&out, "", 1);
	ck_assert_msg(strstr(out.p, VIA) != NULL, "no via token:\n%s", out.p);
}
END_TEST

/* Inbound, the peer address is always appended to x-forwarded-for (SPEC
 * 5), even when the caller lists the header in Connection. */
START_TEST(test_request_connection_cannot_drop_xff)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for\r\n"
	    "X-Forwarded-For: 1.2.3.4\r\n\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	a.peer = "peer";
	a.forwarded_for = "10.0.0.9";
	if (parse(msg, false) != 0)
		return;
	sbuf_clear(&out);
	headers_build_request(&out, msg, &head, &a);
	sbuf_add(&out, "", 1);
	ck_assert_msg(strstr(out.p, "10.0.0.9") != NULL, "peer address lost:\n%s", out.p);
}
END_TEST

/* The IDs ferry reports back to the app are the ones sent upstream (SPEC
 * 5); an app ID named in Connection must not vanish on the way. */
START_TEST(test_request_connection_cannot_drop_ids)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-correlation-id, X-Request-Id\r\n"
	    "x-correlation-id: app-c\r\nx-request-id: app-r\r\n\r\n";
	struct request_ids ids = {
		.correlation = "app-c", .correlation_len = 5,
		.request = "app-r", .request_len = 5,
		.correlation_from_app = true, .request_from_app = true,
	};
	struct upstream_head_args a = outbound_args(&ids);

	if (parse(msg, false) != 0)
		return;
	sbuf_clear(&out);
	headers_build_request(&out, msg, &head, &a);
	sbuf_add(&out, "", 1);
	ck_assert_msg(strstr(out.p, ": app-c\r\n") != NULL &&
	    strstr(out.p, ": app-r\r\n") != NULL, "IDs lost:\n%s", out.p);
}
END_TEST

/* Lines copied whole (runs) and fields rebuilt one by one write the same
 * bytes: the same fields, spaced canonically or not, come out alike, and
 * what ferry drops or appends between them keeps its place. */
START_TEST(test_request_runs_match_rebuilt_fields)
{
	static const char canonical[] =
	    "POST /x HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "A: 1\r\n"
	    "B: two words\r\n"
	    "Connection: X-Hop\r\n"
	    "X-Hop: gone\r\n"
	    "C: 3\r\n"
	    "Via: 1.0 app\r\n"
	    "D: 4\r\n"
	    "E: 5\r\n"
	    "\r\n";
	static const char spaced[] =
	    "POST /x HTTP/1.1\r\n"
	    "Host: a\r\n"
	    "A:1\r\n"
	    "B:   two words  \r\n"
	    "Connection: X-Hop\r\n"
	    "X-Hop: gone\r\n"
	    "C:\t3\t\r\n"
	    "Via:  1.0 app\r\n"
	    "D: 4 \r\n"
	    "E: 5\r\n"
	    "\r\n";
	static const char want[] =
	    "POST /api HTTP/1.1\r\n"
	    "host: user-service\r\n"
	    "A: 1\r\n"
	    "B: two words\r\n"
	    "C: 3\r\n"
	    "Via: 1.0 app, " VIA "\r\n"
	    "D: 4\r\n"
	    "E: 5\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "\r\n";
	struct upstream_head_args a = outbound_args(&new_ids);

	ck_assert_str_eq(build_req(canonical, &a), want);
	ck_assert_str_eq(build_req(spaced, &a), want);
}
END_TEST

START_TEST(test_response_runs_match_rebuilt_fields)
{
	static const char canonical[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Server: s\r\n"
	    "X-Request-Id: up\r\n"
	    "Content-Length: 2\r\n"
	    "Keep-Alive: timeout=5\r\n"
	    "ETag: \"e\"\r\n"
	    "\r\n";
	static const char spaced[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Server:s\r\n"
	    "X-Request-Id: up\r\n"
	    "Content-Length:  2 \r\n"
	    "Keep-Alive: timeout=5\r\n"
	    "ETag: \"e\"\t\r\n"
	    "\r\n";
	static const char want[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Server: s\r\n"
	    "Content-Length: 2\r\n"
	    "ETag: \"e\"\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "keep-alive: timeout=60\r\n"
	    "\r\n";
	struct downstream_head_args a = {
		.ids = &new_ids, .keep_alive = true, .keep_alive_timeout = 60,
	};

	ck_assert_str_eq(build_resp(canonical, &a), want);
	ck_assert_str_eq(build_resp(spaced, &a), want);
}
END_TEST

START_TEST(test_response_basic)
{
	static const char msg[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain\r\n"
	    "X-Correlation-Id: from-upstream\r\n"
	    "Connection: keep-alive, X-Hop\r\n"
	    "x-request-id: from-upstream\r\n"
	    "Keep-Alive: timeout=99\r\n"
	    "X-Hop: 1\r\n"
	    "Transfer-Encoding: chunked\r\n"
	    "Set-Cookie: a=1\r\n"
	    "set-cookie: b=2\r\n"
	    "Via: 1.1 upstream\r\n"
	    "\r\n";
	struct downstream_head_args a = {
		.ids = &new_ids, .keep_alive = true, .keep_alive_timeout = 60,
	};

	ck_assert_str_eq(build_resp(msg, &a),
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain\r\n"
	    "Transfer-Encoding: chunked\r\n"
	    "Set-Cookie: a=1\r\n"
	    "set-cookie: b=2\r\n"
	    "Via: 1.1 upstream\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "keep-alive: timeout=60\r\n"
	    "\r\n");

	a.keep_alive = false;
	a.dechunk = true;
	ck_assert_str_eq(build_resp(msg, &a),
	    "HTTP/1.1 200 OK\r\n"
	    "Content-Type: text/plain\r\n"
	    "Set-Cookie: a=1\r\n"
	    "set-cookie: b=2\r\n"
	    "Via: 1.1 upstream\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "connection: close\r\n"
	    "\r\n");
}
END_TEST

START_TEST(test_response_status_line)
{
	struct downstream_head_args a = {
		.ids = &new_ids, .keep_alive = true, .keep_alive_timeout = 5,
	};

	ck_assert_str_eq(build_resp("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", &a),
	    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nkeep-alive: timeout=5\r\n\r\n");
	/* no reason phrase: RFC 9110's, or none for a code it names none for */
	ck_assert_str_eq(build_resp("HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", &a),
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nkeep-alive: timeout=5\r\n\r\n");
	ck_assert_str_eq(build_resp("HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", &a),
	    "HTTP/1.1 299 \r\nContent-Length: 0\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nkeep-alive: timeout=5\r\n\r\n");
	a.keep_alive_timeout = 0;
	ck_assert_str_eq(build_resp("HTTP/1.1 204 No Content\r\n\r\n", &a),
	    "HTTP/1.1 204 No Content\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nkeep-alive: timeout=0\r\n\r\n");
}
END_TEST

START_TEST(test_response_interim_and_upgrade)
{
	static const char up[] =
	    "HTTP/1.1 101 Switching Protocols\r\n"
	    "Connection: Upgrade\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	    "\r\n";
	struct downstream_head_args a = { .ids = NULL, .keep_alive = true,
	    .keep_alive_timeout = 60 };

	/* an interim response: no IDs */
	ck_assert_str_eq(build_resp(
	    "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", &a),
	    "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n"
	    "keep-alive: timeout=60\r\n\r\n");

	a.ids = &new_ids;
	a.upgrade = true;
	ck_assert_str_eq(build_resp(up, &a),
	    "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "connection: upgrade\r\n"
	    "\r\n");

	/* Upgrade on a response that is not tunnelled goes */
	a.upgrade = false;
	ck_assert_str_eq(build_resp(
	    "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", &a),
	    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
	    "x-correlation-id: c-1\r\nx-request-id: r-1\r\nkeep-alive: timeout=60\r\n\r\n");
}
END_TEST

START_TEST(test_response_connection_cannot_drop_framing)
{
	static const char cl[] =
	    "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello";
	static const char te[] =
	    "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
	struct downstream_head_args a = {
		.ids = &new_ids, .keep_alive = true, .keep_alive_timeout = 60,
	};
	bool cl_ok = true, te_ok = true;

	if (parse(cl, true) == 0) {
		sbuf_clear(&out);
		headers_build_response(&out, cl, &head, &a);
		sbuf_add(&out, "", 1);
		cl_ok = has_line(out.p, "Content-Length: 5");
	}
	if (parse(te, true) == 0) {
		sbuf_clear(&out);
		headers_build_response(&out, te, &head, &a);
		sbuf_add(&out, "", 1);
		te_ok = has_line(out.p, "Transfer-Encoding: chunked");
	}
	ck_assert_msg(cl_ok && te_ok, "dropped:%s%s", cl_ok ? "" : " Content-Length",
	    te_ok ? "" : " Transfer-Encoding");
}
END_TEST

struct split_case {
	const char *target;
	const char *path;	/* NULL: same as target */
	const char *auth;	/* NULL: none */
};

static const struct split_case split_cases[] = {
	{ "/", NULL, NULL },
	{ "/p?q", NULL, NULL },
	{ "/redirect?to=http://evil/x", NULL, NULL },
	{ "*", NULL, NULL },
	{ "svc:443", NULL, NULL },
	{ "", NULL, NULL },
	{ "http://svc:8080/p?q", "/p?q", "svc:8080" },
	{ "https://user@svc/", "/", "svc" },
	{ "https://user:pw@svc:8443/x", "/x", "svc:8443" },
	{ "http://a@@b/", "/", "b" },
	{ "http://a@x@b@svc/y", "/y", "svc" },
	{ "http://svc", "/", "svc" },
	{ "http://svc/", "/", "svc" },
	/* no path but a query: the caller puts a "/" in front */
	{ "http://svc?x=1", "?x=1", "svc" },
	{ "HTTP://User-Service/a/b", "/a/b", "User-Service" },
	{ "http://[::1]:8080/p", "/p", "[::1]:8080" },
	{ "http://svc#frag", "/", "svc" },
	{ "git+ssh://svc/x", "/x", "svc" },
	{ "ht tp://svc/x", NULL, NULL },
};

/* Every head ferry sends, parsed again, has the framing ferry used: over a
 * grid of framing headers (with the whitespace, case and list forms a
 * hostile upstream tries), each response the parser and
 * headers_framing_ok accept is rebuilt, for HTTP/1.1 and for HTTP/1.0
 * clients (dechunked), and parsed again. */
START_TEST(test_response_framing_reparsed)
{
	static const char *const te[] = {
		NULL, "chunked", "Chunked", "chunked\t", "chunked ", " chunked",
		"gzip, chunked", "chunked, gzip", "gzip", "identity", "chunked,chunked",
		"\tchunked\t", "chunked;q=1", "x",
	};
	static const char *const cl[] = { NULL, "5", "0", " 5", "5 ", "5\t", "05", "5, 5" };
	/* a second Transfer-Encoding header after the first */
	static const char *const te2[] = { NULL, "chunked", "gzip" };
	unsigned checked = 0;

	for (size_t i = 0; i < sizeof(te) / sizeof(te[0]) * 3; i++) {
		for (size_t j = 0; j < sizeof(cl) / sizeof(cl[0]); j++) {
			for (int dechunk = 0; dechunk < 2; dechunk++) {
				char msg[512], *again;
				struct http_parser hp2;
				struct http_head h2;
				enum http_status st;
				size_t used;
				bool chunked, has_length;
				uint64_t length;

				const char *t1 = te[i / 3], *t2 = te2[i % 3];

				snprintf(msg, sizeof(msg), "HTTP/1.1 200 OK\r\n%s%s%s%s%s%s%s%s%s\r\n",
				    t1 ? "Transfer-Encoding: " : "", t1 ? t1 : "", t1 ? "\r\n" : "",
				    t2 ? "Transfer-Encoding: " : "", t2 ? t2 : "", t2 ? "\r\n" : "",
				    cl[j] ? "Content-Length: " : "", cl[j] ? cl[j] : "",
				    cl[j] ? "\r\n" : "");
				http_parser_init(&hp, true, &head);
				st = http_parse(&hp, msg, strlen(msg), 0, &used);
				if (st != HTTP_HEAD_DONE)
					continue;
				headers_classify(msg, &head);
				if (!headers_framing_ok(msg, &head))
					continue;
				chunked = head.chunked && !dechunk;
				has_length = head.has_length;
				length = head.content_length;
				sbuf_clear(&out);
				headers_build_response(&out, msg, &head, &(struct downstream_head_args){
				    .dechunk = dechunk && head.chunked, .keep_alive = true,
				    .keep_alive_timeout = 5 });
				again = strndup(out.p, out.len);
				http_parser_init(&hp2, true, &h2);
				st = http_parse(&hp2, again, strlen(again), 0, &used);
				ck_assert_msg(st == HTTP_HEAD_DONE, "re-parse failed: %s", again);
				ck_assert_msg(h2.chunked == chunked, "chunked %d then %d: %s",
				    chunked, h2.chunked, again);
				if (!chunked) {
					ck_assert_msg(h2.has_length == has_length, "length: %s", again);
					ck_assert(h2.content_length == length);
				}
				ck_assert_msg(headers_find(&h2, HDR_TRANSFER_ENCODING) == NULL ||
				    h2.chunked, "TE not chunked re-emitted: %s", again);
				free(again);
				checked++;
			}
		}
	}
	ck_assert_uint_gt(checked, 10);
}
END_TEST

static bool
framing_ok(const char *msg, bool response)
{
	parse(msg, response);
	return headers_framing_ok(msg, &head);
}

START_TEST(test_framing_ok)
{
	ck_assert(!framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n", true));
	ck_assert(!head.chunked);
	ck_assert(framing_ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true));
	ck_assert(framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n", true));
	/* chunked, but gzip-coded under it: where the header goes (HTTP/2,
	 * HTTP/1.0, a re-coded body) gzip bytes would pass for the body */
	ck_assert(!framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true));
	ck_assert(head.chunked);
	ck_assert(!framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", true));
	ck_assert(!framing_ok("POST /up HTTP/1.1\r\nHost: svc\r\n"
	    "Transfer-Encoding: identity, chunked\r\n\r\n", false));
	/* the parser reads "chunked<TAB>" as another coding, and the last
	 * header makes it chunked; re-emitted, both read "chunked"
	 * (regressions/head_rewrite/te-chunked-tab-then-chunked) */
	ck_assert(!framing_ok("POST /up HTTP/1.1\r\nHost: svc\r\n"
	    "Transfer-Encoding: chunked\t\r\nTransfer-Encoding: chunked\r\n\r\n", false));
	ck_assert(head.chunked);
	ck_assert(!framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", true));
	ck_assert(!framing_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t, chunked\r\n\r\n",
	    true));
}
END_TEST

START_TEST(test_lookalikes_dropped)
{
	const char *msg = "GET / HTTP/1.1\r\nHost: a\r\nX_Ferry_Peer: evil\r\n"
	    "x_service_auth: k\r\nx_forwarded_for: 1.2.3.4\r\nx_correlation_id: c\r\n"
	    "my_header: kept\r\nx-ferry_peer: mixed\r\n\r\n";
	const char *req;

	parse(msg, false);
	req = build_req(msg, &(struct upstream_head_args){ .host = "svc", .target = "/",
	    .target_len = 1, .ids = &new_ids, .via = VIA });
	ck_assert_ptr_null(strcasestr(req, "x_ferry_peer"));
	ck_assert_ptr_null(strcasestr(req, "x_service_auth"));
	ck_assert_ptr_null(strcasestr(req, "x_forwarded_for"));
	ck_assert_ptr_null(strcasestr(req, "x_correlation_id"));
	ck_assert_ptr_null(strcasestr(req, "x-ferry_peer"));
	ck_assert_ptr_nonnull(strstr(req, "my_header: kept\r\n"));
	ck_assert(headers_trailer_allowed("x-sum", 5));
	ck_assert(headers_trailer_allowed("my_header", 9));
	ck_assert(!headers_trailer_allowed("X-Service-Auth", 14));
	ck_assert(!headers_trailer_allowed("x_ferry_peer", 12));
	ck_assert(!headers_trailer_allowed("content-length", 14));
	ck_assert(!headers_trailer_allowed("host", 4));
}
END_TEST

START_TEST(test_target_split)
{
	const struct split_case *c = &split_cases[_i];
	const char *path, *auth;
	size_t path_len, auth_len;
	const char *want_path = c->path ? c->path : c->target;

	target_split(c->target, strlen(c->target), &path, &path_len, &auth, &auth_len);
	ck_assert_msg(path_len == strlen(want_path) && memcmp(path, want_path, path_len) == 0,
	    "%s: path \"%.*s\", want \"%s\"", c->target, (int)path_len, path, want_path);
	if (c->auth == NULL) {
		ck_assert_msg(auth == NULL, "%s: authority \"%.*s\", want none", c->target,
		    (int)auth_len, auth);
		ck_assert_uint_eq(auth_len, 0);
	} else {
		ck_assert_msg(auth != NULL && auth_len == strlen(c->auth) &&
		    memcmp(auth, c->auth, auth_len) == 0,
		    "%s: authority \"%.*s\", want \"%s\"", c->target, auth ? (int)auth_len : 0,
		    auth ? auth : "", c->auth);
	}
}
END_TEST

START_TEST(test_target_split_not_terminated)
{
	/* only LEN bytes are read */
	static const char t[] = "http://svc/pathXXXX";
	const char *path, *auth;
	size_t path_len, auth_len;

	target_split(t, 15, &path, &path_len, &auth, &auth_len);
	ck_assert_uint_eq(path_len, 5);
	ck_assert_mem_eq(path, "/path", 5);
	ck_assert_uint_eq(auth_len, 3);
	ck_assert_mem_eq(auth, "svc", 3);
	target_split(t, 10, &path, &path_len, &auth, &auth_len);
	ck_assert_uint_eq(auth_len, 3);
	ck_assert_uint_eq(path_len, 1);
	ck_assert_mem_eq(path, "/", 1);
}
END_TEST

struct strip_case {
	const char *host;
	const char *name;
};

static const struct strip_case strip_cases[] = {
	{ "svc", "svc" },
	{ "svc:80", "svc" },
	{ "svc:", "svc" },
	{ "Svc.Example.COM:8443", "Svc.Example.COM" },
	{ "[::1]:80", "::1" },
	{ "[::1]", "::1" },
	{ "[fe80::1%25eth0]:443", "fe80::1%25eth0" },
	{ "127.0.0.1:5000", "127.0.0.1" },
	{ "", "" },
};

START_TEST(test_host_strip_port)
{
	const struct strip_case *c = &strip_cases[_i];
	const char *name;
	size_t len;

	host_strip_port(c->host, strlen(c->host), &name, &len);
	ck_assert_msg(len == strlen(c->name) && memcmp(name, c->name, len) == 0,
	    "%s: \"%.*s\", want \"%s\"", c->host, (int)len, name, c->name);
}
END_TEST

/* A head of the sender's own: N headers (a request's Host among them)
 * filled so the sender's part is MINE bytes, as ferry writes it. */
static char *
head_at(bool response, int n, size_t mine)
{
	const char *start = response ? "HTTP/1.1 200 OK\r\n" : "GET /api HTTP/1.1\r\n";
	struct sbuf s = { 0 };
	size_t fixed = strlen(start) + 2, fill;

	sbuf_adds(&s, start);
	if (!response) {
		sbuf_adds(&s, "Host: user-service\r\n");
		fixed += strlen("Host: user-service\r\n");
		n--;
	}
	for (int i = 0; i < n; i++)
		fixed += strlen("x-h000: \r\n");
	ck_assert(mine >= fixed);
	fill = mine - fixed;
	for (int i = 0; i < n; i++) {
		size_t k = fill / (size_t)(n - i);
		char name[16];

		snprintf(name, sizeof(name), "x-h%03d: ", i);
		sbuf_adds(&s, name);
		for (size_t j = 0; j < k; j++)
			sbuf_add(&s, "v", 1);
		sbuf_adds(&s, "\r\n");
		fill -= k;
	}
	sbuf_adds(&s, "\r\n");
	sbuf_add(&s, "", 1);
	return s.p;
}

/* OUT is accepted by ferry's parser (the next hop), or refused as too
 * large, as the builder said. */
static void
assert_next_hop(bool response, bool fits)
{
	struct http_parser p2;
	struct http_head h2;
	size_t used;
	enum http_status st;

	ck_assert(fits == headers_fit(out.p, out.len));
	http_parser_init(&p2, response, &h2);
	st = http_parse(&p2, out.p, out.len, 0, &used);
	if (fits) {
		ck_assert_msg(st == HTTP_HEAD_DONE, "next hop: %d %d", st, p2.err);
		ck_assert_uint_eq(h2.mine_bytes, HTTP_MAX_HEAD);
		ck_assert_uint_eq(h2.n_headers - h2.n_own, HTTP_MAX_HEADERS);
	} else {
		ck_assert_int_eq(st, HTTP_ERROR);
		ck_assert_int_eq(p2.err, HTTP_ERR_TOO_LARGE);
	}
	http_parser_free(&p2);
}

START_TEST(test_limits_request_at_the_limits)
{
	char *msg = head_at(false, HTTP_MAX_HEADERS, HTTP_MAX_HEAD);
	struct request_ids ids = new_ids;
	struct upstream_head_args a = outbound_args(&ids);
	struct conf_hrule add = { "x-env", "prod", false };
	struct conf_hrule set = { "x-h000", "v", false };
	struct conf_hrules more = { .add = &add, .n_add = 1 };
	struct conf_hrules longer = { .set = &set, .n_set = 1 };
	static char long_value[700];
	bool fits;

	/* 100 headers and 64 KiB of the app's: ferry's own added, the next
	 * ferry still takes it */
	ck_assert_int_eq(parse(msg, false), 0);
	ck_assert_uint_eq(head.mine_bytes, HTTP_MAX_HEAD);
	a.auth_key = "k3y";
	a.ids = &ids;
	ids.traceparent = TP_NEW;
	ids.traceparent_len = strlen(TP_NEW);
	sbuf_clear(&out);
	fits = headers_build_request(&out, msg, &head, &a);
	ck_assert(fits);
	ck_assert(out.len > HTTP_MAX_HEAD);
	assert_next_hop(false, true);

	/* a header rule adding one more: over, and the next hop agrees */
	a.rules[1] = &more;
	sbuf_clear(&out);
	ck_assert(!headers_build_request(&out, msg, &head, &a));
	assert_next_hop(false, false);

	/* one setting a header anew (x-h000 had 645 bytes), but longer:
	 * over in bytes */
	memset(long_value, 'w', sizeof(long_value) - 1);
	set.value = long_value;
	a.rules[1] = &longer;
	sbuf_clear(&out);
	ck_assert(!headers_build_request(&out, msg, &head, &a));
	assert_next_hop(false, false);
	free(msg);
}
END_TEST

START_TEST(test_limits_response_at_the_limits)
{
	char *msg = head_at(true, HTTP_MAX_HEADERS, HTTP_MAX_HEAD);
	struct conf_hrule add = { "x-frame-options", "DENY", false };
	struct conf_hrules more = { .add = &add, .n_add = 1 };
	struct head_coding coding = { .encoded = "zstd", .chunked = true };
	struct downstream_head_args a = {
		.ids = &new_ids, .keep_alive = true, .keep_alive_timeout = 60,
	};

	ck_assert_int_eq(parse(msg, true), 0);
	sbuf_clear(&out);
	ck_assert(headers_build_response(&out, msg, &head, &a));
	assert_next_hop(true, true);

	/* compressed: content-encoding, vary and transfer-encoding are
	 * ferry's too */
	a.coding = &coding;
	sbuf_clear(&out);
	ck_assert(headers_build_response(&out, msg, &head, &a));
	assert_next_hop(true, true);

	a.rules[0] = &more;
	sbuf_clear(&out);
	ck_assert(!headers_build_response(&out, msg, &head, &a));
	assert_next_hop(true, false);
	free(msg);
}
END_TEST

START_TEST(test_limits_fit)
{
	struct sbuf t = { 0 };

	/* ferry's own kinds do not count, up to the hard cap of fields */
	sbuf_adds(&t, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_MAX_HEADERS; i++)
		sbuf_adds(&t, "x-a: 1\r\n");
	for (int i = HTTP_MAX_HEADERS; i < HTTP_MAX_FIELDS; i++)
		sbuf_adds(&t, "via: 1.1 x\r\n");
	sbuf_adds(&t, "\r\n");
	ck_assert(headers_fit(t.p, t.len));
	t.len -= 2;
	sbuf_adds(&t, "via: 1.1 x\r\n\r\n");
	ck_assert(!headers_fit(t.p, t.len));

	/* one more of the sender's own */
	sbuf_clear(&t);
	sbuf_adds(&t, "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
		sbuf_adds(&t, "x-a: 1\r\n");
	sbuf_adds(&t, "\r\n");
	ck_assert(!headers_fit(t.p, t.len));
	sbuf_free(&t);
}
END_TEST

static Suite *
headers_suite(void)
{
	Suite *s = suite_create("headers");
	TCase *tc = tcase_create("classify");
	TCase *tq = tcase_create("request");
	TCase *tr = tcase_create("response");
	TCase *tt = tcase_create("target");
	TCase *tl = tcase_create("limits");

	tcase_add_test(tc, test_classify_kinds);
	tcase_add_test(tc, test_classify_connection_hop);
	tcase_add_test(tc, test_classify_two_hosts);
	tcase_add_checked_fixture(tc, NULL, teardown);
	suite_add_tcase(s, tc);

	tcase_add_test(tq, test_request_hop_by_hop);
	tcase_add_test(tq, test_lookalikes_dropped);
	tcase_add_test(tq, test_response_framing_reparsed);
	tcase_add_test(tq, test_framing_ok);
	tcase_add_test(tq, test_request_te_trailers);
	tcase_add_test(tq, test_request_upgrade);
	tcase_add_test(tq, test_request_service_auth);
	tcase_add_test(tq, test_service_auth_wiped);
	tcase_add_test(tq, test_request_ids_from_app);
	tcase_add_test(tq, test_request_ids_replaced);
	tcase_add_test(tq, test_request_traceparent);
	tcase_add_test(tq, test_request_via);
	tcase_add_test(tq, test_request_host_and_target);
	tcase_add_test(tq, test_request_passthrough);
	tcase_add_test(tq, test_request_runs_match_rebuilt_fields);
	tcase_add_test(tq, test_response_runs_match_rebuilt_fields);
	tcase_add_test(tq, test_request_inbound);
	tcase_add_test(tq, test_request_connection_cannot_drop_framing);
	tcase_add_test(tq, test_request_connection_cannot_drop_via);
	tcase_add_test(tq, test_request_connection_cannot_drop_xff);
	tcase_add_test(tq, test_request_connection_cannot_drop_ids);
	tcase_add_checked_fixture(tq, NULL, teardown);
	suite_add_tcase(s, tq);

	tcase_add_test(tr, test_response_basic);
	tcase_add_test(tr, test_response_status_line);
	tcase_add_test(tr, test_response_interim_and_upgrade);
	tcase_add_test(tr, test_response_connection_cannot_drop_framing);
	tcase_add_checked_fixture(tr, NULL, teardown);
	suite_add_tcase(s, tr);

	tcase_add_test(tl, test_limits_request_at_the_limits);
	tcase_add_test(tl, test_limits_response_at_the_limits);
	tcase_add_test(tl, test_limits_fit);
	tcase_add_checked_fixture(tl, NULL, teardown);
	suite_add_tcase(s, tl);

	tcase_add_loop_test(tt, test_target_split, 0,
	    sizeof(split_cases) / sizeof(split_cases[0]));
	tcase_add_test(tt, test_target_split_not_terminated);
	tcase_add_loop_test(tt, test_host_strip_port, 0,
	    sizeof(strip_cases) / sizeof(strip_cases[0]));
	suite_add_tcase(s, tt);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(headers_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
