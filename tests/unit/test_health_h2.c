/*
 * Unit tests for src/health_h2.c (SPEC §6 health checks over HTTP/2):
 * the check's client session against a real nghttp2 server session, the
 * bytes carried in memory both ways. The server records the request's
 * fields and answers as each test says; some tests feed the client bytes
 * no server would send.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <nghttp2/nghttp2.h>

#include "h2_mem.h"
#include "health_h2.h"

struct srv {
	nghttp2_session *ng;
	char fields[2048];	/* "name: value\n" of the request, in order */
	int32_t sid;		/* the request's stream, once its headers arrived */
};

static int
srv_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct srv *s = arg;
	size_t have = strlen(s->fields);

	(void)ng;
	(void)flags;
	(void)frame;
	snprintf(s->fields + have, sizeof(s->fields) - have, "%.*s: %.*s\n",
	    (int)nlen, (const char *)name, (int)vlen, (const char *)value);
	return 0;
}

static int
srv_on_frame(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct srv *s = arg;

	(void)ng;
	if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		s->sid = frame->hd.stream_id;
	return 0;
}

static void
srv_init(struct srv *s)
{
	nghttp2_session_callbacks *cb;

	memset(s, 0, sizeof(*s));
	ck_assert_int_eq(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_header_callback(cb, srv_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, srv_on_frame);
	ck_assert_int_eq(nghttp2_session_server_new(&s->ng, cb, s), 0);
	nghttp2_session_callbacks_del(cb);
	ck_assert_int_eq(nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

/* Carries the bytes both ways until neither side has more to say;
 * returns the client's last word. */
static enum hc_h2_result
pump(struct hc_h2 *c, struct srv *s)
{
	enum hc_h2_result r = HC_H2_MORE;
	struct buf out = { 0 };

	for (int round = 0; round < 16 && r == HC_H2_MORE; round++) {
		const uint8_t *p;
		ssize_t n;
		bool moved = false;

		r = hc_h2_output(c, &out);
		if (buf_len(&out) > 0) {
			ck_assert_int_eq(nghttp2_session_mem_recv(s->ng,
			    (const uint8_t *)buf_head(&out), buf_len(&out)), (ssize_t)buf_len(&out));
			buf_consume(&out, buf_len(&out));
			moved = true;
		}
		while (r == HC_H2_MORE && (n = nghttp2_session_mem_send(s->ng, &p)) > 0) {
			r = hc_h2_input(c, p, (size_t)n);
			moved = true;
		}
		if (!moved)
			break;
	}
	buf_free(&out);
	return r;
}

static void
respond(struct srv *s, const char *status)
{
	const nghttp2_nv nv[] = {
		{ (uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0 },
	};

	ck_assert_int_gt(s->sid, 0);
	ck_assert_int_eq(nghttp2_submit_response(s->ng, s->sid, nv, 1, NULL), 0);
}

START_TEST(test_request_and_200)
{
	struct hc_h2 *c = hc_h2_new("/health?x=1", "svc.internal", false, "k3y");
	struct srv s;

	srv_init(&s);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(pump(c, &s), HC_H2_MORE);
	ck_assert_str_eq(s.fields, ":method: GET\n:scheme: http\n:authority: svc.internal\n"
	    ":path: /health?x=1\nuser-agent: ferry-health-check\nx-service-auth: k3y\n");
	respond(&s, "200");
	ck_assert_int_eq(pump(c, &s), HC_H2_DONE);
	ck_assert_int_eq(hc_h2_status(c), 200);
	ck_assert_ptr_null(hc_h2_error(c));
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

START_TEST(test_tls_scheme_and_no_key)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", true, NULL);
	struct srv s;

	srv_init(&s);
	ck_assert_int_eq(pump(c, &s), HC_H2_MORE);
	ck_assert_ptr_nonnull(strstr(s.fields, ":scheme: https\n"));
	ck_assert_ptr_null(strstr(s.fields, "x-service-auth"));
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

START_TEST(test_503_is_a_status)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct srv s;

	srv_init(&s);
	pump(c, &s);
	respond(&s, "503");
	ck_assert_int_eq(pump(c, &s), HC_H2_DONE);
	ck_assert_int_eq(hc_h2_status(c), 503);
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

START_TEST(test_interim_skipped)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	const nghttp2_nv early[] = { { (uint8_t *)":status", (uint8_t *)"103", 7, 3, 0 } };
	struct srv s;

	srv_init(&s);
	pump(c, &s);
	ck_assert_int_ge(nghttp2_submit_headers(s.ng, NGHTTP2_FLAG_NONE, s.sid, NULL,
	    early, 1, NULL), 0);
	ck_assert_int_eq(pump(c, &s), HC_H2_MORE);
	respond(&s, "204");
	ck_assert_int_eq(pump(c, &s), HC_H2_DONE);
	ck_assert_int_eq(hc_h2_status(c), 204);
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

START_TEST(test_reset_stream_fails)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct srv s;

	srv_init(&s);
	pump(c, &s);
	ck_assert_int_eq(nghttp2_submit_rst_stream(s.ng, NGHTTP2_FLAG_NONE, s.sid,
	    NGHTTP2_INTERNAL_ERROR), 0);
	ck_assert_int_eq(pump(c, &s), HC_H2_FAILED);
	ck_assert_int_eq(hc_h2_status(c), 0);
	ck_assert_str_eq(hc_h2_error(c), "the server reset the stream (INTERNAL_ERROR)");
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

START_TEST(test_goaway_before_the_stream_fails)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct srv s;

	srv_init(&s);
	pump(c, &s);
	ck_assert_int_eq(nghttp2_submit_goaway(s.ng, NGHTTP2_FLAG_NONE, 0,
	    NGHTTP2_NO_ERROR, NULL, 0), 0);
	ck_assert_int_eq(pump(c, &s), HC_H2_FAILED);
	ck_assert_ptr_nonnull(strstr(hc_h2_error(c), "reset the stream (REFUSED_STREAM)"));
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

/* What an HTTP/1.1-only server says to the HTTP/2 preface. */
START_TEST(test_http1_answer_fails)
{
	static const char h1[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
	    "Connection: close\r\n\r\n";
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct buf out = { 0 };

	ck_assert_int_eq(hc_h2_output(c, &out), HC_H2_MORE);
	ck_assert_int_gt(buf_len(&out), 24);
	ck_assert_int_eq(memcmp(buf_head(&out), NGHTTP2_CLIENT_MAGIC, 24), 0);
	/* the session answers with GOAWAY: failed once that is out */
	hc_h2_input(c, h1, sizeof(h1) - 1);
	ck_assert_int_eq(hc_h2_output(c, &out), HC_H2_FAILED);
	ck_assert_str_eq(hc_h2_error(c), "bad HTTP/2 from the server: PROTOCOL_ERROR");
	/* nothing changes it afterwards */
	ck_assert_int_eq(hc_h2_eof(c), HC_H2_FAILED);
	ck_assert_int_eq(hc_h2_output(c, &out), HC_H2_FAILED);
	buf_free(&out);
	hc_h2_free(c);
}
END_TEST

START_TEST(test_eof_fails)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct srv s;

	srv_init(&s);
	pump(c, &s);
	ck_assert_int_eq(hc_h2_eof(c), HC_H2_FAILED);
	ck_assert_str_eq(hc_h2_error(c), "connection closed before the response head");
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

/* Every prefix of a good exchange, cut at each byte: never DONE early,
 * never a crash; the whole of it is DONE. */
START_TEST(test_answer_in_single_bytes)
{
	struct hc_h2 *c = hc_h2_new("/h", "svc", false, NULL);
	struct srv s;
	const uint8_t *p;
	ssize_t n;
	enum hc_h2_result r = HC_H2_MORE;
	struct buf all = { 0 }, out = { 0 };

	srv_init(&s);
	hc_h2_output(c, &out);
	ck_assert_int_eq(nghttp2_session_mem_recv(s.ng, (const uint8_t *)buf_head(&out),
	    buf_len(&out)), (ssize_t)buf_len(&out));
	respond(&s, "200");
	while ((n = nghttp2_session_mem_send(s.ng, &p)) > 0)
		ck_assert(buf_append(&all, p, (size_t)n, 1 << 20));
	for (size_t i = 0; i < buf_len(&all); i++) {
		ck_assert_int_eq(r, HC_H2_MORE);
		r = hc_h2_input(c, buf_head(&all) + i, 1);
	}
	ck_assert_int_eq(r, HC_H2_DONE);
	ck_assert_int_eq(hc_h2_status(c), 200);
	buf_free(&all);
	buf_free(&out);
	hc_h2_free(c);
	nghttp2_session_del(s.ng);
}
END_TEST

/* as a thread that ends does: nghttp2's blocks the thread kept go back */
static void
caches_end(void)
{
	h2_mem_thread_end();
}

static Suite *
health_h2_suite(void)
{
	Suite *s = suite_create("health_h2");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, NULL, caches_end);

	tcase_add_test(tc, test_request_and_200);
	tcase_add_test(tc, test_tls_scheme_and_no_key);
	tcase_add_test(tc, test_503_is_a_status);
	tcase_add_test(tc, test_interim_skipped);
	tcase_add_test(tc, test_reset_stream_fails);
	tcase_add_test(tc, test_goaway_before_the_stream_fails);
	tcase_add_test(tc, test_http1_answer_fails);
	tcase_add_test(tc, test_eof_fails);
	tcase_add_test(tc, test_answer_in_single_bytes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(health_h2_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
