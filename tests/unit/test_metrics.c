/*
 * Unit tests for src/metrics.c and src/metrics_render.c (SPEC §8): service
 * ids, per-worker shards, the Prometheus text rendering, and, when
 * promtool is installed, `promtool check metrics` on a real scrape.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "metrics.h"
#include "sbuf.h"

static struct sbuf out;

static const char *
render(struct metrics *m, const struct metrics_gauges *g)
{
	sbuf_clear(&out);
	metrics_render(m, g, &out);
	ck_assert(!out.oom);
	sbuf_add(&out, "", 1);
	return out.p;
}

/* LINE appears as a whole line of TEXT. */
static bool
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = text;

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
		p++;
	}
	return false;
}

#define ck_line(text, line) \
	ck_assert_msg(has_line(text, line), "missing line: %s\n%s", line, text)

START_TEST(test_service_ids)
{
	struct metrics *m = metrics_new(2);
	char name[32];

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(metrics_service_id(m, "a"), 0);
	ck_assert_int_eq(metrics_service_id(m, "b"), 1);
	ck_assert_int_eq(metrics_service_id(m, "a"), 0);
	for (int i = 2; i < METRICS_MAX_SERVICES; i++) {
		snprintf(name, sizeof(name), "svc-%d", i);
		ck_assert_int_eq(metrics_service_id(m, name), i);
	}
	ck_assert_int_eq(metrics_service_id(m, "one-too-many"), -1);
	ck_assert_int_eq(metrics_service_id(m, "b"), 1);
	/* every page is usable by every shard, the main thread's included */
	snprintf(name, sizeof(name), "svc-%d", METRICS_MAX_SERVICES - 1);
	metrics_retry(metrics_shard(m, 2), METRICS_MAX_SERVICES - 1);
	ck_assert_ptr_null(metrics_shard(m, 3));
	metrics_retry(NULL, 0);				/* no shard: no-op */
	metrics_retry(metrics_shard(m, 0), METRICS_MAX_SERVICES);  /* bad id */
	render(m, NULL);
	ck_line(out.p, "ferry_retries_total{service=\"svc-1023\"} 1");
	ck_line(out.p, "ferry_retries_total{service=\"a\"} 0");
	metrics_free(m);
}
END_TEST

START_TEST(test_counters)
{
	struct metrics *m = metrics_new(2);
	struct metrics_shard *w0, *w1, *main_shard;
	int users, orders;
	const char *t;

	users = metrics_service_id(m, "users");
	orders = metrics_service_id(m, "orders");
	w0 = metrics_shard(m, 0);
	w1 = metrics_shard(m, 1);
	main_shard = metrics_shard(m, 2);

	metrics_request(w0, DIR_OUTBOUND, users, 200, 400);	/* le 0.0005 */
	metrics_request(w1, DIR_OUTBOUND, users, 200, 500);	/* le 0.0005 */
	metrics_request(w1, DIR_OUTBOUND, users, 503, 501);	/* le 0.001 */
	metrics_request(w0, DIR_OUTBOUND, users, 200, 60000000);	/* le 60 */
	metrics_request(w0, DIR_OUTBOUND, users, 200, 60000001);	/* +Inf */
	metrics_request(w0, DIR_INBOUND, orders, 0, -1);	/* no head */
	metrics_request(w0, DIR_INBOUND, orders, 1000, 2000000);
	metrics_request(w0, DIR_OUTBOUND, -1, 404, 100);
	metrics_error(w0, DIR_OUTBOUND, -1, FE_UNKNOWN_SERVICE);
	metrics_error(w1, DIR_OUTBOUND, users, FE_SERVICE_UNAVAILABLE);
	metrics_error(w0, DIR_OUTBOUND, users, FE_SERVICE_UNAVAILABLE);
	metrics_error(w0, DIR_INBOUND, orders, FE_INVALID_SERVICE_AUTH);
	metrics_error(w0, DIR_INBOUND, orders, FE_COUNT);	/* ignored */
	metrics_attempt(w0, users, UR_OK);
	metrics_attempt(w1, users, UR_CONNECT_FAILURE);
	metrics_attempt(w1, users, UR_5XX);
	metrics_attempt(w1, users, UR_5XX);
	metrics_retry(w0, users);
	metrics_retry(w1, users);
	metrics_budget_exhausted(w1, users);
	metrics_resend(w0, users);
	metrics_resend(w1, users);
	metrics_resend(w1, users);
	metrics_rate_limited(w0, DIR_INBOUND, orders);
	metrics_conn_opened(w0, users);
	metrics_conn_opened(main_shard, users);		/* health check */
	metrics_tls_handshake(w0, DIR_OUTBOUND, false);
	metrics_tls_handshake(w1, DIR_OUTBOUND, true);
	metrics_tls_handshake(w1, DIR_OUTBOUND, true);
	metrics_tls_handshake(w1, DIR_INBOUND, false);
	metrics_auth_failure(w0, AUTH_INVALID);
	metrics_auth_failure(w1, AUTH_NO_CLIENT_CERT);
	metrics_config_reload(m, true);
	metrics_config_reload(m, true);
	metrics_config_reload(m, false);

	t = render(m, NULL);
	ck_line(t, "# TYPE ferry_requests_total counter");
	ck_line(t, "ferry_requests_total{direction=\"outbound\",service=\"users\",code=\"200\"} 4");
	ck_line(t, "ferry_requests_total{direction=\"outbound\",service=\"users\",code=\"503\"} 1");
	ck_line(t, "ferry_requests_total{direction=\"inbound\",service=\"orders\",code=\"0\"} 2");
	ck_line(t, "ferry_requests_total{direction=\"outbound\",service=\"\",code=\"404\"} 1");
	ck_assert_ptr_null(strstr(t, "code=\"201\""));	/* zeros omitted */

	ck_line(t, "# TYPE ferry_request_duration_seconds histogram");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"outbound\",service=\"users\",le=\"0.0005\"} 2");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"outbound\",service=\"users\",le=\"0.001\"} 3");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"outbound\",service=\"users\",le=\"30\"} 3");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"outbound\",service=\"users\",le=\"60\"} 4");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"outbound\",service=\"users\",le=\"+Inf\"} 5");
	ck_line(t, "ferry_request_duration_seconds_sum{direction=\"outbound\",service=\"users\"} 120.001402");
	ck_line(t, "ferry_request_duration_seconds_count{direction=\"outbound\",service=\"users\"} 5");
	/* the request without a head is counted, not observed */
	ck_line(t, "ferry_request_duration_seconds_count{direction=\"inbound\",service=\"orders\"} 1");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"inbound\",service=\"orders\",le=\"2.5\"} 1");
	ck_line(t, "ferry_request_duration_seconds_bucket{direction=\"inbound\",service=\"orders\",le=\"1\"} 0");
	ck_line(t, "ferry_request_duration_seconds_sum{direction=\"inbound\",service=\"orders\"} 2.000000");

	ck_line(t, "ferry_errors_total{direction=\"outbound\",service=\"\",code=\"UNKNOWN_SERVICE\"} 1");
	ck_line(t, "ferry_errors_total{direction=\"outbound\",service=\"users\",code=\"SERVICE_UNAVAILABLE\"} 2");
	ck_line(t, "ferry_errors_total{direction=\"inbound\",service=\"orders\",code=\"INVALID_SERVICE_AUTH\"} 1");
	ck_line(t, "ferry_upstream_attempts_total{service=\"users\",result=\"ok\"} 1");
	ck_line(t, "ferry_upstream_attempts_total{service=\"users\",result=\"connect_failure\"} 1");
	ck_line(t, "ferry_upstream_attempts_total{service=\"users\",result=\"5xx\"} 2");
	ck_line(t, "ferry_upstream_attempts_total{service=\"users\",result=\"timeout\"} 0");
	ck_line(t, "ferry_upstream_attempts_total{service=\"orders\",result=\"reset\"} 0");
	ck_line(t, "ferry_retries_total{service=\"users\"} 2");
	ck_line(t, "ferry_retry_budget_exhausted_total{service=\"users\"} 1");
	ck_line(t, "ferry_upstream_resends_total{service=\"users\"} 3");
	ck_line(t, "ferry_rate_limited_total{direction=\"inbound\",service=\"orders\"} 1");
	ck_line(t, "ferry_rate_limited_total{direction=\"outbound\",service=\"orders\"} 0");
	ck_line(t, "ferry_upstream_connections_opened_total{service=\"users\"} 2");
	ck_line(t, "ferry_tls_handshakes_total{direction=\"outbound\",resumed=\"false\"} 1");
	ck_line(t, "ferry_tls_handshakes_total{direction=\"outbound\",resumed=\"true\"} 2");
	ck_line(t, "ferry_tls_handshakes_total{direction=\"inbound\",resumed=\"false\"} 1");
	ck_line(t, "ferry_tls_handshakes_total{direction=\"inbound\",resumed=\"true\"} 0");
	ck_line(t, "ferry_auth_failures_total{reason=\"missing\"} 0");
	ck_line(t, "ferry_auth_failures_total{reason=\"invalid\"} 1");
	ck_line(t, "ferry_auth_failures_total{reason=\"peer_not_allowed\"} 0");
	ck_line(t, "ferry_auth_failures_total{reason=\"no_client_cert\"} 1");
	ck_line(t, "ferry_config_reloads_total{result=\"success\"} 2");
	ck_line(t, "ferry_config_reloads_total{result=\"failure\"} 1");
	ck_line(t, "ferry_build_info{version=\"" FERRY_VERSION "\"} 1");
	/* "no service" gets no zero series */
	ck_assert_ptr_null(strstr(t, "ferry_retries_total{service=\"\"}"));
	metrics_free(m);
}
END_TEST

/* Every family of §8 has HELP and TYPE, even with no data at all. */
START_TEST(test_families)
{
	static const char *const fam[][2] = {
		{ "requests_total", "counter" },
		{ "request_duration_seconds", "histogram" },
		{ "upstream_attempts_total", "counter" },
		{ "retries_total", "counter" },
		{ "retry_budget_exhausted_total", "counter" },
		{ "upstream_resends_total", "counter" },
		{ "circuit_state", "gauge" },
		{ "circuit_opened_total", "counter" },
		{ "errors_total", "counter" },
		{ "rate_limited_total", "counter" },
		{ "upstream_connections", "gauge" },
		{ "upstream_connections_opened_total", "counter" },
		{ "tls_handshakes_total", "counter" },
		{ "endpoint_healthy", "gauge" },
		{ "downstream_connections", "gauge" },
		{ "auth_failures_total", "counter" },
		{ "config_reloads_total", "counter" },
		{ "certificate_expiry_seconds", "gauge" },
		{ "build_info", "gauge" },
	};
	struct metrics *m = metrics_new(1);
	struct metrics_gauges none = { 0 };
	char line[128];
	const char *t;

	for (int pass = 0; pass < 2; pass++) {
		t = render(m, pass ? &none : NULL);
		for (size_t i = 0; i < sizeof(fam) / sizeof(fam[0]); i++) {
			snprintf(line, sizeof(line), "# TYPE ferry_%s %s",
			    fam[i][0], fam[i][1]);
			ck_line(t, line);
			snprintf(line, sizeof(line), "# HELP ferry_%s ",
			    fam[i][0]);
			ck_assert_ptr_nonnull(strstr(t, line));
		}
	}
	metrics_free(m);
}
END_TEST

static void
g_circuit(void *arg, void (*emit)(void *, const char *, double), void *ctx)
{
	ck_assert_ptr_eq(arg, &out);
	emit(ctx, "users", 0);
	emit(ctx, "orders", 2);
}

static void
g_opened(void *arg, void (*emit)(void *, const char *, double), void *ctx)
{
	(void)arg;
	emit(ctx, "orders", 7);
}

static void
g_upconn(void *arg, void (*emit)(void *, const char *, const char *, double),
    void *ctx)
{
	(void)arg;
	emit(ctx, "users", "active", 3);
	emit(ctx, "users", "idle", 5);
}

static void
g_healthy(void *arg, void (*emit)(void *, const char *, const char *, double),
    void *ctx)
{
	(void)arg;
	emit(ctx, "users", "127.0.0.1:5000", 1);
	emit(ctx, "users", "[::1]:5001", 0);
}

static void
g_down(void *arg, void (*emit)(void *, const char *, double), void *ctx)
{
	(void)arg;
	emit(ctx, "outbound", 12);
	emit(ctx, "inbound", 0);
}

static void
g_cert(void *arg, void (*emit)(void *, const char *, double), void *ctx)
{
	(void)arg;
	emit(ctx, "inbound", 86400.5);
	emit(ctx, "expired \"svc\"\\\n", -3600);
	emit(ctx, "tiny", 0.1);
}

static const struct metrics_gauges gauges = {
	.arg = &out,
	.circuit_states = g_circuit,
	.circuit_opened = g_opened,
	.upstream_connections = g_upconn,
	.endpoint_healthy = g_healthy,
	.downstream_connections = g_down,
	.certificate_expiry = g_cert,
};

START_TEST(test_gauges_and_escaping)
{
	struct metrics *m = metrics_new(1);
	int q = metrics_service_id(m, "we\"ird\\na\nme\xff\xc3\xa9");
	const char *t;

	metrics_retry(metrics_shard(m, 0), q);
	t = render(m, &gauges);
	ck_line(t, "ferry_circuit_state{service=\"users\"} 0");
	ck_line(t, "ferry_circuit_state{service=\"orders\"} 2");
	ck_line(t, "ferry_circuit_opened_total{service=\"orders\"} 7");
	ck_line(t, "ferry_upstream_connections{service=\"users\",state=\"active\"} 3");
	ck_line(t, "ferry_upstream_connections{service=\"users\",state=\"idle\"} 5");
	ck_line(t, "ferry_endpoint_healthy{service=\"users\",endpoint=\"127.0.0.1:5000\"} 1");
	ck_line(t, "ferry_endpoint_healthy{service=\"users\",endpoint=\"[::1]:5001\"} 0");
	ck_line(t, "ferry_downstream_connections{listener=\"outbound\"} 12");
	ck_line(t, "ferry_downstream_connections{listener=\"inbound\"} 0");
	ck_line(t, "ferry_certificate_expiry_seconds{name=\"inbound\"} 86400.5");
	ck_line(t, "ferry_certificate_expiry_seconds{name=\"expired \\\"svc\\\"\\\\\\n\"} -3600");
	ck_line(t, "ferry_certificate_expiry_seconds{name=\"tiny\"} 0.1");
	/* quote, backslash, newline escaped; invalid UTF-8 replaced */
	ck_line(t, "ferry_retries_total{service=\"we\\\"ird\\\\na\\nme\xef\xbf\xbd\xc3\xa9\"} 1");
	metrics_free(m);
}
END_TEST

/* Workers count while the main thread adds services and scrapes. */
struct worker_arg {
	struct metrics_shard *s;
	_Atomic int *n_ids;
	int n;
};

static void *
worker_main(void *p)
{
	struct worker_arg *a = p;

	for (int i = 0; i < a->n; i++) {
		int ids = atomic_load_explicit(a->n_ids, memory_order_acquire);

		metrics_request(a->s, DIR_OUTBOUND, i % ids, 200, i % 3000);
		metrics_attempt(a->s, i % ids, UR_OK);
	}
	return NULL;
}

START_TEST(test_threads)
{
	enum { W = 4, N = 200000, IDS = 200 };
	struct metrics *m = metrics_new(W);
	struct worker_arg args[W];
	pthread_t th[W];
	_Atomic int n_ids = 1;
	char name[32], line[128];
	uint64_t total = 0;
	const char *t, *p;

	metrics_service_id(m, "s0");
	for (int i = 0; i < W; i++) {
		args[i] = (struct worker_arg){ metrics_shard(m, (unsigned)i),
		    &n_ids, N };
		ck_assert_int_eq(pthread_create(&th[i], NULL, worker_main,
		    &args[i]), 0);
	}
	/* ids (and their pages) appear while workers run: published like a
	 * config, after metrics_service_id() returned */
	for (int i = 1; i < IDS; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		ck_assert_int_eq(metrics_service_id(m, name), i);
		atomic_store_explicit(&n_ids, i + 1, memory_order_release);
		if (i % 50 == 0)
			render(m, &gauges);
	}
	for (int i = 0; i < W; i++)
		pthread_join(th[i], NULL);
	t = render(m, &gauges);
	/* every request counted exactly once */
	for (p = t; (p = strstr(p, "\nferry_requests_total{")) != NULL; p++) {
		const char *e = strchr(p + 1, '\n');

		total += strtoull((const char *)memrchr(p, ' ',
		    (size_t)(e - p)) + 1, NULL, 10);
	}
	ck_assert_uint_eq(total, (uint64_t)W * N);
	total = 0;
	for (int i = 0; i < IDS; i++) {
		snprintf(line, sizeof(line),
		    "ferry_upstream_attempts_total{service=\"s%d\",result=\"ok\"} ", i);
		ck_assert_ptr_nonnull(p = strstr(t, line));
		total += strtoull(p + strlen(line), NULL, 10);
	}
	ck_assert_uint_eq(total, (uint64_t)W * N);
	metrics_free(m);
}
END_TEST

static const char *
find_promtool(void)
{
	static const char *const paths[] = { "/usr/bin/promtool",
	    "/usr/local/bin/promtool" };

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

START_TEST(test_promtool)
{
	const char *promtool = find_promtool();
	struct metrics *m = metrics_new(2);
	char path[] = "/tmp/ferry-metrics-XXXXXX", cmd[256];
	int fd, users, rc;

	if (promtool == NULL) {
		fprintf(stderr, "promtool not installed (Debian package "
		    "prometheus): skipping promtool check\n");
		metrics_free(m);
		return;
	}
	users = metrics_service_id(m, "users");
	metrics_service_id(m, "we\"ird\\\nname\xff");
	metrics_request(metrics_shard(m, 0), DIR_OUTBOUND, users, 200, 1234);
	metrics_request(metrics_shard(m, 1), DIR_INBOUND, -1, 403, 50);
	metrics_error(metrics_shard(m, 1), DIR_INBOUND, -1,
	    FE_INVALID_SERVICE_AUTH);
	metrics_auth_failure(metrics_shard(m, 1), AUTH_MISSING);
	metrics_config_reload(m, false);
	render(m, &gauges);
	ck_assert_int_ne(fd = mkstemp(path), -1);
	ck_assert_int_eq(write(fd, out.p, out.len - 1), (ssize_t)(out.len - 1));
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s check metrics < %s 1>&2", promtool,
	    path);
	rc = system(cmd);
	unlink(path);
	ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0,
	    "promtool check metrics failed on:\n%s", out.p);
	metrics_free(m);
}
END_TEST

static Suite *
metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_service_ids);
	tcase_add_test(tc, test_counters);
	tcase_add_test(tc, test_families);
	tcase_add_test(tc, test_gauges_and_escaping);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_promtool);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(metrics_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	sbuf_free(&out);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
