/*
 * Unit tests for src/errors.c (SPEC 7: ferry's own JSON error responses),
 * json_escape, and src/sbuf.h.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <check.h>

#include "errors.h"
#include "fate.h"
#include "http1.h"
#include "sbuf.h"

static struct sbuf out;

static void
teardown(void)
{
	sbuf_free(&out);
}

static const char *
build(const struct error_args *a)
{
	sbuf_clear(&out);
	ferror_build(&out, a);
	ck_assert(!out.oom);
	sbuf_add(&out, "", 1);
	return out.p;
}

static const char *
esc(const char *s, size_t len)
{
	sbuf_clear(&out);
	json_escape(&out, s, len);
	sbuf_add(&out, "", 1);
	return out.p;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1)

START_TEST(test_table)
{
	static const struct {
		enum ferry_error e;
		int status;
		const char *code;
	} want[] = {
		{ FE_BAD_REQUEST, 400, "BAD_REQUEST" },
		{ FE_INVALID_SERVICE_AUTH, 403, "INVALID_SERVICE_AUTH" },
		{ FE_UNKNOWN_SERVICE, 404, "UNKNOWN_SERVICE" },
		{ FE_METHOD_NOT_ALLOWED, 405, "METHOD_NOT_ALLOWED" },
		{ FE_REQUEST_TIMEOUT, 408, "REQUEST_TIMEOUT" },
		{ FE_PAYLOAD_TOO_LARGE, 413, "PAYLOAD_TOO_LARGE" },
		{ FE_RATE_LIMITED, 429, "RATE_LIMITED" },
		{ FE_HEADERS_TOO_LARGE, 431, "HEADERS_TOO_LARGE" },
		{ FE_SERVICE_ERROR, 502, "SERVICE_ERROR" },
		{ FE_SERVICE_UNAVAILABLE, 503, "SERVICE_UNAVAILABLE" },
		{ FE_SERVICE_TIMEOUT, 504, "SERVICE_TIMEOUT" },
		{ FE_LOOP_DETECTED, 508, "LOOP_DETECTED" },
	};

	ck_assert_int_eq(sizeof(want) / sizeof(want[0]), FE_COUNT);
	for (size_t i = 0; i < FE_COUNT; i++) {
		ck_assert_int_eq(ferror_status(want[i].e), want[i].status);
		ck_assert_str_eq(ferror_code(want[i].e), want[i].code);
	}
}
END_TEST

START_TEST(test_build_close)
{
	static const char body[] =
	    "{\"success\":false,\"error\":{\"code\":\"SERVICE_UNAVAILABLE\","
	    "\"message\":\"circuit open for user-service\"}}";
	struct error_args a = {
		.err = FE_SERVICE_UNAVAILABLE,
		.message = "circuit open for user-service",
		.correlation = "corr-1xxx", .correlation_len = 6,
	};
	char want[512];

	snprintf(want, sizeof(want),
	    "HTTP/1.1 503 Service Unavailable\r\n"
	    "content-type: application/json\r\n"
	    "content-length: %zu\r\n"
	    "x-ferry-error: SERVICE_UNAVAILABLE\r\n"
	    "x-correlation-id: corr-1\r\n"
	    "connection: close\r\n"
	    "\r\n"
	    "%s", sizeof(body) - 1, body);
	ck_assert_uint_eq(sizeof(body) - 1, 98);
	ck_assert_str_eq(build(&a), want);
}
END_TEST

/* SPEC §7: the gRPC form, trailers-only, its message percent-encoded */
START_TEST(test_build_grpc)
{
	struct error_args a = {
		.err = FE_SERVICE_UNAVAILABLE,
		.message = "50% of \"svc\"\n\xc3\xa9",
		.correlation = "c-1", .correlation_len = 3,
		.request_id = "r-1", .request_id_len = 3,
		.keep_alive = true, .keep_alive_timeout = 60,
	};

	sbuf_clear(&out);
	ferror_build_grpc(&out, &a, ferror_grpc_status(a.err, false));
	sbuf_add(&out, "", 1);
	ck_assert_str_eq(out.p,
	    "HTTP/1.1 200 OK\r\n"
	    "content-type: application/grpc\r\n"
	    "content-length: 0\r\n"
	    "grpc-status: 14\r\n"
	    "grpc-message: 50%25 of \"svc\"%0A%C3%A9\r\n"
	    "x-ferry-error: SERVICE_UNAVAILABLE\r\n"
	    "x-correlation-id: c-1\r\n"
	    "x-request-id: r-1\r\n"
	    "keep-alive: timeout=60\r\n"
	    "\r\n");
	ck_assert_int_eq(ferror_grpc_status(FE_SERVICE_TIMEOUT, false), 4);
	ck_assert_int_eq(ferror_grpc_status(FE_REQUEST_TIMEOUT, false), 4);
	ck_assert_int_eq(ferror_grpc_status(FE_INVALID_SERVICE_AUTH, false), 16);
	ck_assert_int_eq(ferror_grpc_status(FE_INVALID_SERVICE_AUTH, true), 7);
	ck_assert_int_eq(ferror_grpc_status(FE_RATE_LIMITED, false), 8);
	ck_assert_int_eq(ferror_grpc_status(FE_SERVICE_ERROR, false), 13);
	ck_assert_int_eq(ferror_grpc_status(FE_BAD_REQUEST, false), 13);
	ck_assert_int_eq(ferror_grpc_status(FE_UNKNOWN_SERVICE, false), 12);
	/* an answer without grpc-status, as gRPC clients read its HTTP status */
	ck_assert_int_eq(grpc_status_of_http(400), 13);
	ck_assert_int_eq(grpc_status_of_http(401), 16);
	ck_assert_int_eq(grpc_status_of_http(403), 7);
	ck_assert_int_eq(grpc_status_of_http(404), 12);
	ck_assert_int_eq(grpc_status_of_http(429), 14);
	ck_assert_int_eq(grpc_status_of_http(502), 14);
	ck_assert_int_eq(grpc_status_of_http(503), 14);
	ck_assert_int_eq(grpc_status_of_http(504), 14);
	ck_assert_int_eq(grpc_status_of_http(200), 2);
	ck_assert_int_eq(grpc_status_of_http(500), 2);
	ck_assert_int_eq(grpc_status_of_http(204), 2);
}
END_TEST

START_TEST(test_build_keepalive_retry)
{
	static const char body[] =
	    "{\"success\":false,\"error\":{\"code\":\"RATE_LIMITED\","
	    "\"message\":\"over the rate limit\"}}";
	struct error_args a = {
		.err = FE_RATE_LIMITED,
		.message = "over the rate limit",
		.correlation = "c", .correlation_len = 1,
		.request_id = "r-2", .request_id_len = 3,
		.retry_after = 3,
		.keep_alive = true, .keep_alive_timeout = 60,
	};
	char want[512];

	snprintf(want, sizeof(want),
	    "HTTP/1.1 429 Too Many Requests\r\n"
	    "content-type: application/json\r\n"
	    "content-length: %zu\r\n"
	    "x-ferry-error: RATE_LIMITED\r\n"
	    "x-correlation-id: c\r\n"
	    "x-request-id: r-2\r\n"
	    "retry-after: 3\r\n"
	    "keep-alive: timeout=60\r\n"
	    "\r\n"
	    "%s", sizeof(body) - 1, body);
	ck_assert_str_eq(build(&a), want);
}
END_TEST

/* SPEC §16: error.attempts lists the attempts, in the JSON form only */
START_TEST(test_build_attempts)
{
	static const char body[] =
	    "{\"success\":false,\"error\":{\"code\":\"SERVICE_UNAVAILABLE\","
	    "\"message\":\"connect 127.0.0.1:5001: connection refused (2 attempts)\","
	    "\"attempts\":[{\"endpoint\":\"127.0.0.1:5001\",\"result\":\"refused\",\"ms\":1},"
	    "{\"endpoint\":\"[::1]:5002\",\"result\":\"connect_failure\",\"ms\":250}]}}";
	struct attempt_notes notes = { .count = 2, .n = {
		{ .addr = { 127, 0, 0, 1 }, .port = 5001, .family = AF_INET,
		  .result = AR_REFUSED, .ms = 1 },
		{ .addr = { [15] = 1 }, .port = 5002, .family = AF_INET6,
		  .result = AR_CONNECT_FAILURE, .ms = 250 },
	} };
	struct attempt_notes none = { .count = 0 };
	struct error_args a = {
		.err = FE_SERVICE_UNAVAILABLE,
		.message = "connect 127.0.0.1:5001: connection refused (2 attempts)",
		.attempts = &notes,
	};
	const char *got = build(&a);

	ck_assert_ptr_nonnull(strstr(got, "\r\n\r\n"));
	ck_assert_str_eq(strstr(got, "\r\n\r\n") + 4, body);
	/* to a remote peer: the local app's address stays out */
	a.attempts_endpoint = "local_app";
	got = build(&a);
	ck_assert_ptr_null(strstr(got, "127.0.0.1:5001\","));
	ck_assert_ptr_nonnull(strstr(got, "\"attempts\":[{\"endpoint\":\"local_app\","
	    "\"result\":\"refused\",\"ms\":1},{\"endpoint\":\"local_app\""));
	a.attempts_endpoint = NULL;
	/* no attempt made: an empty list */
	a.attempts = &none;
	got = build(&a);
	ck_assert_ptr_nonnull(strstr(got, ",\"attempts\":[]}}"));
	/* the gRPC form keeps grpc-message a sentence */
	a.attempts = &notes;
	sbuf_clear(&out);
	ferror_build_grpc(&out, &a, 14);
	sbuf_add(&out, "", 1);
	ck_assert_ptr_null(strstr(out.p, "attempts\""));
	ck_assert_ptr_null(strstr(out.p, "5002"));
}
END_TEST

START_TEST(test_build_head_only)
{
	static const char body[] =
	    "{\"success\":false,\"error\":{\"code\":\"UNKNOWN_SERVICE\","
	    "\"message\":\"no service for host \\\"x\\\"\"}}";
	struct error_args a = {
		.err = FE_UNKNOWN_SERVICE,
		.message = "no service for host \"x\"",
		.head_only = true,
	};
	char want[512];

	/* the length of the body a GET would get, and no body */
	snprintf(want, sizeof(want),
	    "HTTP/1.1 404 Not Found\r\n"
	    "content-type: application/json\r\n"
	    "content-length: %zu\r\n"
	    "x-ferry-error: UNKNOWN_SERVICE\r\n"
	    "connection: close\r\n"
	    "\r\n", sizeof(body) - 1);
	ck_assert_str_eq(build(&a), want);
	a.head_only = false;
	ck_assert_str_eq(build(&a) + strlen(want), body);
}
END_TEST

/* Each error parses as an HTTP response with the right status, headers,
 * and a body of exactly content-length bytes in the seed's shape. */
START_TEST(test_build_parses)
{
	enum ferry_error e = (enum ferry_error)_i;
	static struct http_parser hp;
	static struct http_head head;
	struct error_args a = {
		.err = e,
		.message = "m\xc3\xa9ss\"age\n\x01\xff",
		.correlation = "cid", .correlation_len = 3,
		.retry_after = e == FE_RATE_LIMITED ? 7 : 0,
		.keep_alive = e % 2, .keep_alive_timeout = 5,
	};
	char body[256];
	const char *msg;
	size_t len, used;
	bool ctype = false, ferr = false, cid = false, retry = false;

	msg = build(&a);
	len = out.len - 1;
	http_parser_init(&hp, true, &head);
	ck_assert_int_eq(http_parse(&hp, msg, len, 0, &used), HTTP_HEAD_DONE);
	ck_assert_int_eq(head.status, ferror_status(e));
	ck_assert(head.reason.len > 0);
	ck_assert(head.has_length);
	ck_assert_uint_eq(head.content_length, len - used);
	for (uint32_t i = 0; i < head.n_headers; i++) {
		const struct http_header *h = &head.h[i];

		if (slice_eq_ci(msg, h->name, "content-type"))
			ctype = slice_eq_ci(msg, h->value, "application/json");
		if (slice_eq_ci(msg, h->name, "x-ferry-error"))
			ferr = slice_eq_ci(msg, h->value, ferror_code(e));
		if (slice_eq_ci(msg, h->name, "x-correlation-id"))
			cid = slice_eq_ci(msg, h->value, "cid");
		if (slice_eq_ci(msg, h->name, "retry-after"))
			retry = slice_eq_ci(msg, h->value, "7");
	}
	ck_assert(ctype);
	ck_assert(ferr);
	ck_assert(cid);
	ck_assert(retry == (e == FE_RATE_LIMITED));
	ck_assert(head.keep_alive == (bool)(e % 2));
	ck_assert_int_eq(http_parse(&hp, msg + used, len - used, 0, &used), HTTP_MSG_DONE);
	ck_assert_uint_eq(used, head.content_length);
	snprintf(body, sizeof(body),
	    "{\"success\":false,\"error\":{\"code\":\"%s\","
	    "\"message\":\"m\xc3\xa9ss\\\"age\\u000a\\u0001\\ufffd\"}}", ferror_code(e));
	ck_assert_uint_eq(used, strlen(body));
	ck_assert_mem_eq(msg + len - used, body, used);
}
END_TEST

START_TEST(test_build_long_message)
{
	char msg[5000];
	const char *o, *b;
	char want[64];

	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	o = build(&(struct error_args){ .err = FE_SERVICE_ERROR, .message = msg });
	b = strstr(o, "\r\n\r\n");
	ck_assert_ptr_nonnull(b);
	b += 4;
	snprintf(want, sizeof(want), "\r\ncontent-length: %zu\r\n", strlen(b));
	ck_assert_ptr_nonnull(strstr(o, want));
	ck_assert_uint_eq(strlen(b), 4999 + 63);
}
END_TEST

START_TEST(test_escape_ascii)
{
	ck_assert_str_eq(ESC(""), "");
	ck_assert_str_eq(ESC("plain text 123 {}[]:,/'"), "plain text 123 {}[]:,/'");
	ck_assert_str_eq(ESC("a\"b"), "a\\\"b");
	ck_assert_str_eq(ESC("a\\b"), "a\\\\b");
	ck_assert_str_eq(ESC("\"\\\""), "\\\"\\\\\\\"");
	ck_assert_str_eq(ESC("line\nbreak"), "line\\u000abreak");
	ck_assert_str_eq(ESC("\r\t\b\f"), "\\u000d\\u0009\\u0008\\u000c");
	ck_assert_str_eq(ESC("\x01"), "\\u0001");
	ck_assert_str_eq(ESC("\x1f"), "\\u001f");
	ck_assert_str_eq(ESC("\x7f"), "\\u007f");
	ck_assert_str_eq(ESC("a\0b"), "a\\u0000b");
	ck_assert_str_eq(ESC(" ~"), " ~");
}
END_TEST

START_TEST(test_escape_utf8_valid)
{
	ck_assert_str_eq(ESC("caf\xc3\xa9"), "caf\xc3\xa9");			/* é */
	ck_assert_str_eq(ESC("\xc2\x80"), "\xc2\x80");				/* U+0080 */
	ck_assert_str_eq(ESC("\xdf\xbf"), "\xdf\xbf");				/* U+07FF */
	ck_assert_str_eq(ESC("\xe0\xa0\x80"), "\xe0\xa0\x80");			/* U+0800 */
	ck_assert_str_eq(ESC("\xe2\x82\xac"), "\xe2\x82\xac");			/* € */
	ck_assert_str_eq(ESC("\xed\x9f\xbf"), "\xed\x9f\xbf");			/* U+D7FF */
	ck_assert_str_eq(ESC("\xee\x80\x80"), "\xee\x80\x80");			/* U+E000 */
	ck_assert_str_eq(ESC("\xef\xbf\xbf"), "\xef\xbf\xbf");			/* U+FFFF */
	ck_assert_str_eq(ESC("\xf0\x90\x80\x80"), "\xf0\x90\x80\x80");		/* U+10000 */
	ck_assert_str_eq(ESC("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");		/* 😀 */
	ck_assert_str_eq(ESC("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");		/* U+10FFFF */
	ck_assert_str_eq(ESC("\xe6\x97\xa5\"\xe6\x9c\xac"), "\xe6\x97\xa5\\\"\xe6\x9c\xac");
}
END_TEST

#define R "\\ufffd"

START_TEST(test_escape_utf8_invalid)
{
	/* stray continuation and bytes never valid in UTF-8 */
	ck_assert_str_eq(ESC("\x80"), R);
	ck_assert_str_eq(ESC("a\xbf" "b"), "a" R "b");
	ck_assert_str_eq(ESC("\xfe\xff"), R R);
	ck_assert_str_eq(ESC("\xf5\x80\x80\x80"), R R R R);
	/* truncated sequences, at the end and before ASCII */
	ck_assert_str_eq(ESC("\xc3"), R);
	ck_assert_str_eq(ESC("\xe2\x82"), R R);
	ck_assert_str_eq(ESC("\xf0\x9f\x98"), R R R);
	ck_assert_str_eq(ESC("\xe2\x82" "A"), R R "A");
	ck_assert_str_eq(ESC("\xc3" "\""), R "\\\"");
	/* a lead byte followed by another lead byte */
	ck_assert_str_eq(ESC("\xc3\xc3\xa9"), R "\xc3\xa9");
	/* overlong encodings */
	ck_assert_str_eq(ESC("\xc0\x80"), R R);
	ck_assert_str_eq(ESC("\xc1\xbf"), R R);
	ck_assert_str_eq(ESC("\xc0\xaf"), R R);
	ck_assert_str_eq(ESC("\xe0\x80\x80"), R R R);
	ck_assert_str_eq(ESC("\xe0\x9f\xbf"), R R R);
	ck_assert_str_eq(ESC("\xf0\x80\x80\x80"), R R R R);
	ck_assert_str_eq(ESC("\xf0\x8f\xbf\xbf"), R R R R);
	/* UTF-16 surrogates */
	ck_assert_str_eq(ESC("\xed\xa0\x80"), R R R);
	ck_assert_str_eq(ESC("\xed\xbf\xbf"), R R R);
	ck_assert_str_eq(ESC("\xed\xa0\xbd\xed\xb8\x80"), R R R R R R);
	/* above U+10FFFF */
	ck_assert_str_eq(ESC("\xf4\x90\x80\x80"), R R R R);
	/* valid text around invalid bytes is kept */
	ck_assert_str_eq(ESC("\xc3\xa9\xff\xc3\xa9"), "\xc3\xa9" R "\xc3\xa9");
}
END_TEST

START_TEST(test_escape_appends)
{
	sbuf_clear(&out);
	sbuf_adds(&out, "pre:");
	json_escape(&out, "a\"", 2);
	json_escape(&out, "b", 1);
	json_escape(&out, "", 0);
	sbuf_add(&out, "", 1);
	ck_assert_str_eq(out.p, "pre:a\\\"b");
}
END_TEST

/* Strict UTF-8 decode: length of the sequence at S, or 0. */
static size_t
strict_utf8(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Whether S is a valid JSON string body (what goes between the quotes). */
static bool
json_string_ok(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;

	for (size_t i = 0; i < n;) {
		size_t l;

		if (s[i] == '"' || s[i] < 0x20)
			return false;
		if (s[i] == '\\') {
			if (i + 1 >= n)
				return false;
			if (s[i + 1] == 'u') {
				if (i + 6 > n)
					return false;
				for (int k = 2; k < 6; k++)
					if (s[i + k] == 0 ||
					    !strchr("0123456789abcdefABCDEF", s[i + k]))
						return false;
				i += 6;
			} else if (s[i + 1] != 0 && strchr("\"\\/bfnrt", s[i + 1])) {
				i += 2;
			} else {
				return false;
			}
			continue;
		}
		if ((l = strict_utf8(s + i, n - i)) == 0)
			return false;
		i += l;
	}
	return true;
}

/* Valid UTF-8 with nothing to escape: no controls, DEL, quote, backslash. */
static bool
plain_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t l;

		if (s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '\\')
			return false;
		if ((l = strict_utf8(s + i, n - i)) == 0)
			return false;
		i += l;
	}
	return true;
}

/* json_escape as it was, one byte at a time: the eight-at-a-time scan
 * must write exactly the same. */
static void
escape_ref(struct sbuf *o, const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		char e[8];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			sbuf_add(o, s + i, 1);
		} else if (c >= 0x80) {
			/* the valid UTF-8 sequence starting here, or U+FFFD */
			size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 :
			    c >= 0xf0 && c <= 0xf4 ? 4 : 0;
			bool ok = len > 0 && i + len <= n;
			uint32_t cp = c & (0x7f >> len);

			for (size_t k = 1; ok && k < len; k++) {
				ok = (s[i + k] & 0xc0) == 0x80;
				cp = cp << 6 | (s[i + k] & 0x3f);
			}
			if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
			    (len == 4 && (cp < 0x10000 || cp > 0x10ffff))))
				ok = false;
			if (ok) {
				sbuf_add(o, s + i, len);
				i += len - 1;
			} else {
				sbuf_adds(o, "\\ufffd");
			}
		} else if (c == '"' || c == '\\') {
			e[0] = '\\';
			e[1] = (char)c;
			sbuf_add(o, e, 2);
		} else {
			snprintf(e, sizeof(e), "\\u%04x", c);
			sbuf_add(o, e, 6);
		}
	}
}

static void
check_same_as_ref(const unsigned char *in, size_t len)
{
	struct sbuf ref = { 0 };

	sbuf_clear(&out);
	json_escape(&out, (const char *)in, len);
	escape_ref(&ref, in, len);
	ck_assert(!out.oom && !ref.oom);
	ck_assert_msg(out.len == ref.len && (len == 0 || memcmp(out.p, ref.p, ref.len) == 0),
	    "escaped \"%.*s\", want \"%.*s\"", (int)out.len, out.p ? out.p : "",
	    (int)ref.len, ref.p ? ref.p : "");
	sbuf_free(&ref);
}

/* Every byte value at every offset of 8-byte words, alone, next to
 * another, and in runs that end at each length. */
START_TEST(test_escape_every_byte_every_offset)
{
	unsigned char in[40];

	for (unsigned b = 0; b < 256; b++)
		for (size_t pos = 0; pos < 24; pos++)
			for (size_t len = pos + 1; len <= pos + 17 && len <= sizeof(in); len += 4) {
				memset(in, 'a', sizeof(in));
				in[pos] = (unsigned char)b;
				if (pos + 1 < len)
					in[pos + 1] = (unsigned char)(b ^ 0x5c);
				check_same_as_ref(in, len);
			}
}
END_TEST

START_TEST(test_escape_fuzz)
{
	unsigned seed = 12345;
	unsigned char in[64];

	for (int n = 0; n < 20000; n++) {
		size_t len = (size_t)(n % 64);

		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			/* favour the interesting bytes */
			in[i] = (seed >> 16) & 1 ? (unsigned char)(0x80 | (seed >> 8)) :
			    (unsigned char)(seed >> 9);
		}
		sbuf_clear(&out);
		check_same_as_ref(in, len);
		ck_assert_msg(json_string_ok(out.p ? out.p : "", out.len),
		    "invalid JSON string from input %d", n);
		/* printable, valid UTF-8 without quotes or backslashes passes
		 * unchanged */
		if (plain_utf8(in, len))
			ck_assert(out.len == len && (len == 0 || memcmp(out.p, in, len) == 0));
	}
}
END_TEST

static size_t
utf8_encode(uint32_t cp, unsigned char *o)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | cp >> 6);
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

START_TEST(test_escape_valid_utf8_unchanged)
{
	unsigned seed = 777;
	unsigned char in[200];

	for (int n = 0; n < 20000; n++) {
		size_t len = 0;

		while (len < sizeof(in) - 4) {
			uint32_t cp;

			seed = seed * 1103515245u + 12345u;
			switch ((seed >> 12) & 3) {
			case 0:
				cp = 0x20 + (seed >> 16) % 0x5f;
				break;
			case 1:
				cp = 0x80 + (seed >> 16) % 0x780;
				break;
			case 2:
				cp = 0x800 + (seed >> 14) % 0xf800;
				break;
			default:
				cp = 0x10000 + (seed >> 8) % 0x100000;
				break;
			}
			if (cp == '"' || cp == '\\' || cp == 0x7f || (cp >= 0xd800 && cp <= 0xdfff))
				continue;
			len += utf8_encode(cp, in + len);
			if ((seed >> 20) % 8 == 0)
				break;
		}
		sbuf_clear(&out);
		json_escape(&out, (const char *)in, len);
		ck_assert_msg(out.len == len && memcmp(out.p, in, len) == 0,
		    "valid UTF-8 changed (draw %d)", n);
	}
}
END_TEST

/* json_escape takes its room 4,096 input bytes at a time and never cuts
 * inside a UTF-8 sequence: valid and broken sequences, and runs of
 * continuation bytes, across each cut read as they do whole. */
START_TEST(test_escape_long_slices)
{
	static const unsigned char seqs[][5] = {
		{ 2, 0xc3, 0xa9 }, { 3, 0xe2, 0x82, 0xac }, { 4, 0xf0, 0x9f, 0x98, 0x80 },
		{ 1, 0xc3 }, { 2, 0xe2, 0x82 }, { 4, 0x80, 0x80, 0x80, 0x80 },
		{ 3, 0xf0, 0x9f, 0x98 }, { 2, 0x0a, 0x22 },
	};
	static unsigned char in[3 * 4096 + 64];

	for (size_t q = 0; q < sizeof(seqs) / sizeof(seqs[0]); q++)
		for (size_t at = 4096 - 6; at <= 4096 + 2; at++) {
			size_t n = seqs[q][0];

			memset(in, 'x', sizeof(in));
			memcpy(in + at, seqs[q] + 1, n);
			memcpy(in + at + 4096, seqs[q] + 1, n);
			check_same_as_ref(in, at + n);
			check_same_as_ref(in, at + 4096 + n + 7);
			check_same_as_ref(in, sizeof(in));
		}
	/* all continuation bytes: no cut point in reach, each one escaped */
	memset(in, 0x80, sizeof(in));
	check_same_as_ref(in, sizeof(in));
}
END_TEST

START_TEST(test_sbuf)
{
	struct sbuf s = { 0 };
	char big[3000];

	sbuf_add(&s, "x", 0);
	ck_assert_ptr_null(s.p);
	ck_assert_uint_eq(s.len, 0);
	sbuf_addu(&s, 0);
	sbuf_adds(&s, " ");
	sbuf_addu(&s, 42);
	sbuf_adds(&s, " ");
	sbuf_addu(&s, ULLONG_MAX);
	ck_assert_uint_eq(s.len, 25);
	ck_assert_mem_eq(s.p, "0 42 18446744073709551615", 25);
	/* grows past its first size, keeping the content */
	memset(big, 'b', sizeof(big));
	sbuf_add(&s, big, sizeof(big));
	ck_assert_uint_eq(s.len, 25 + sizeof(big));
	ck_assert_uint_ge(s.cap, s.len);
	ck_assert_mem_eq(s.p, "0 42 ", 5);
	ck_assert_mem_eq(s.p + 25, big, sizeof(big));
	/* cleared, not freed */
	s.oom = true;
	sbuf_clear(&s);
	ck_assert_uint_eq(s.len, 0);
	ck_assert(!s.oom);
	ck_assert_ptr_nonnull(s.p);
	sbuf_free(&s);
	ck_assert_ptr_null(s.p);
	ck_assert_uint_eq(s.cap, 0);
}
END_TEST

static Suite *
errors_suite(void)
{
	Suite *s = suite_create("errors");
	TCase *tb = tcase_create("build");
	TCase *te = tcase_create("escape");
	TCase *ts = tcase_create("sbuf");

	tcase_add_test(tb, test_table);
	tcase_add_test(tb, test_build_close);
	tcase_add_test(tb, test_build_grpc);
	tcase_add_test(tb, test_build_keepalive_retry);
	tcase_add_test(tb, test_build_head_only);
	tcase_add_test(tb, test_build_attempts);
	tcase_add_loop_test(tb, test_build_parses, 0, FE_COUNT);
	tcase_add_test(tb, test_build_long_message);
	tcase_add_checked_fixture(tb, NULL, teardown);
	suite_add_tcase(s, tb);

	tcase_add_test(te, test_escape_ascii);
	tcase_add_test(te, test_escape_utf8_valid);
	tcase_add_test(te, test_escape_utf8_invalid);
	tcase_add_test(te, test_escape_appends);
	tcase_add_test(te, test_escape_fuzz);
	tcase_add_test(te, test_escape_every_byte_every_offset);
	tcase_add_test(te, test_escape_long_slices);
	tcase_add_test(te, test_escape_valid_utf8_unchanged);
	tcase_add_checked_fixture(te, NULL, teardown);
	suite_add_tcase(s, te);

	tcase_add_test(ts, test_sbuf);
	suite_add_tcase(s, ts);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(errors_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
