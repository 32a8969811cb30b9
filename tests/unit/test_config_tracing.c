/*
 * Unit tests for the tracing: section (SPEC §13, src/config_tracing.c):
 * defaults, the collector URL taken apart, TLS, every error at its
 * FILE:LINE:COL, and its /config rendering.
 */
#include "config_fixture.h"
#include "config_json.h"

START_TEST(test_absent)
{
	struct config *c = load_ok("workers: 1\n");

	ck_assert(!c->tracing.enabled);
	config_unref(c);
}
END_TEST

START_TEST(test_defaults)
{
	struct config *c = load_ok("tracing:\n  otlp: http://127.0.0.1:4318\n");
	const struct conf_tracing *t = &c->tracing;

	ck_assert(t->enabled);
	ck_assert(!t->https);
	ck_assert_str_eq(t->host, "127.0.0.1");
	ck_assert_uint_eq(t->port, 4318);
	ck_assert_str_eq(t->authority, "127.0.0.1:4318");
	ck_assert_str_eq(t->path, "/v1/traces");	/* no path: OTLP's */
	/* an IP literal is the address: no lookup */
	ck_assert(t->addr->ready);
	ck_assert_uint_gt(t->addr->salen, 0);
	ck_assert_str_eq(t->service_name, "ferry");
	ck_assert(t->sample_ratio == 1.0);
	ck_assert_uint_eq(t->max_queue, 8192);
	ck_assert_uint_eq(t->batch_max_spans, 512);
	ck_assert_int_eq(t->batch_interval, 1000);
	config_unref(c);
}
END_TEST

START_TEST(test_full)
{
	struct config *c = load_ok("tracing:\n"
	    "  otlp: https://localhost/otel/traces\n"
	    "  tls: {ca: ca.pem, server_name: collector}\n"
	    "  service_name: order-service\n"
	    "  sample_ratio: 0.25\n"
	    "  max_queue: 100\n"
	    "  batch: {max_spans: 10, interval: 250ms}\n");
	const struct conf_tracing *t = &c->tracing;

	ck_assert(t->https);
	ck_assert_uint_eq(t->port, 443);
	ck_assert_str_eq(t->authority, "localhost");
	ck_assert_str_eq(t->path, "/otel/traces");
	/* a name: discovery looks it up, not the loader */
	ck_assert(!t->addr->ready);
	ck_assert_ptr_nonnull(t->tls.ctx);
	ck_assert_str_eq(t->tls.server_name, "collector");
	ck_assert_str_eq(t->service_name, "order-service");
	ck_assert(t->sample_ratio == 0.25);
	ck_assert_uint_eq(t->max_queue, 100);
	ck_assert_uint_eq(t->batch_max_spans, 10);
	ck_assert_int_eq(t->batch_interval, 250);
	config_unref(c);
}
END_TEST

static const struct {
	const char *yaml, *want;
} error_cases[] = {
	{ "tracing:\n  service_name: x\n",
	  F ":2:3: tracing: otlp is required (the collector's URL)\n" },
	{ "tracing:\n  otlp: grpc://127.0.0.1:4317\n",
	  F ":2:9: tracing.otlp: bad URL \"grpc://127.0.0.1:4317\" (expected "
	  "http://HOST:PORT/PATH or https://...)\n" },
	{ "tracing:\n  otlp: http://user:pw@127.0.0.1:4318/v1/traces\n",
	  F ":2:9: tracing.otlp: bad URL \"http://user:pw@127.0.0.1:4318/v1/traces\" "
	  "(no user info or fragment allowed)\n" },
	{ "tracing:\n  otlp: http:///v1/traces\n",
	  F ":2:9: tracing.otlp: bad URL \"http:///v1/traces\" (no host)\n" },
	{ "tracing:\n  otlp: http://127.0.0.1:99999\n  sample_ratio: 1.5\n"
	  "  batch: {max_spans: 0, interval: 0s}\n  max_queue: 0\n  colour: blue\n",
	  F ":2:9: tracing.otlp: bad URL \"http://127.0.0.1:99999\" (port must be 1..65535)\n"
	  F ":3:17: tracing.sample_ratio: 1.5 is out of range (0..1)\n"
	  F ":4:22: tracing.batch.max_spans: 0 is out of range (1..65536)\n"
	  F ":4:35: tracing.batch.interval: 0s is out of range (1ms..1h)\n"
	  F ":5:14: tracing.max_queue: 0 is out of range (1..10000000)\n"
	  F ":6:3: tracing: unknown key \"colour\"\n" },
	{ "tracing:\n  otlp: http://127.0.0.1:4318\n  tls: {ca: ca.pem}\n",
	  F ":3:3: tracing: tls needs an https:// otlp URL\n" },
	{ "tracing:\n  otlp: https://127.0.0.1:4318\n",
	  F ":2:3: tracing: an https:// otlp URL needs tls.ca (the CA that signed the "
	  "collector's certificate)\n" },
	{ "tracing:\n  otlp: https://127.0.0.1:4318\n  tls: {ca: garbage.pem}\n",
	  NULL },
	{ "tracing: [http://127.0.0.1:4318]\n",
	  F ":1:10: tracing: expected a mapping, got a list\n" },
};

START_TEST(test_errors)
{
	struct config *c = load(error_cases[_i].yaml);

	ck_assert_ptr_null(c);
	if (error_cases[_i].want)
		ck_assert_msg(strcmp(errs, error_cases[_i].want) == 0, "want:\n%sgot:\n%s",
		    error_cases[_i].want, errs);
	else
		ck_assert_msg(strstr(errs, F ":3:8: tracing: tls: cannot load CA ") != NULL, "got:\n%s", errs);
}
END_TEST

START_TEST(test_json)
{
	struct config *c = load_ok("tracing:\n  otlp: http://127.0.0.1:4318/v1/traces\n"
	    "  service_name: svc\n  sample_ratio: 0.5\n");
	struct sbuf out = { 0 };

	config_to_json(c, &out);
	sbuf_add(&out, "", 1);
	ck_assert_msg(strstr(out.p, "\"tracing\":{\"otlp\":\"http://127.0.0.1:4318/v1/traces\","
	    "\"tls\":null,\"service_name\":\"svc\",\"sample_ratio\":0.5,\"max_queue\":8192,"
	    "\"batch\":{\"max_spans\":512,\"interval\":\"1s\"}}") != NULL, "%s", out.p);
	sbuf_free(&out);
	config_unref(c);
	c = load_ok("workers: 1\n");
	config_to_json(c, &out);
	sbuf_add(&out, "", 1);
	ck_assert_ptr_nonnull(strstr(out.p, "\"tracing\":null"));
	sbuf_free(&out);
	config_unref(c);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("config_tracing");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_absent);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_full);
	tcase_add_loop_test(tc, test_errors, 0, sizeof(error_cases) / sizeof(error_cases[0]));
	tcase_add_test(tc, test_json);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
