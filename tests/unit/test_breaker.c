/*
 * Unit tests for src/breaker.c (SPEC §6 Circuit breaker, max_concurrent):
 * every transition with a fake clock, and concurrent use.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "breaker.h"

static struct conf_breaker
conf(void)
{
	struct conf_breaker c = {
		.consecutive_failures = 5, .open_for = 10000,
		.half_open_requests = 1, .max_concurrent = 1024,
	};

	return c;
}

/* N failed requests at NOW, each let through first. */
static void
fail_n(struct breaker *b, const struct conf_breaker *c, int n, int64_t now)
{
	int64_t ra;

	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(breaker_allow(b, c, now, &ra), BREAKER_PASS);
		breaker_record(b, c, BREAKER_PASS, true, now);
	}
}

START_TEST(test_closed_to_open)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra = -1;

	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_CLOSED);
	fail_n(b, &c, 4, 100);
	ck_assert_int_eq(breaker_state(b, &c, 100), BREAKER_CLOSED);
	ck_assert_uint_eq(breaker_failures(b), 4);
	ck_assert_uint_eq(breaker_opened_total(b), 0);
	fail_n(b, &c, 1, 200);
	ck_assert_int_eq(breaker_state(b, &c, 200), BREAKER_OPEN);
	ck_assert_uint_eq(breaker_opened_total(b), 1);
	ck_assert_int_eq(breaker_allow(b, &c, 200, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 10000);
	breaker_free(b);
	/* a threshold of one: the first failure opens it */
	b = breaker_new();
	c.consecutive_failures = 1;
	fail_n(b, &c, 1, 0);
	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_OPEN);
	breaker_free(b);
}
END_TEST

START_TEST(test_success_resets)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();

	fail_n(b, &c, 4, 0);
	breaker_record(b, &c, BREAKER_PASS, false, 0);
	ck_assert_uint_eq(breaker_failures(b), 0);
	fail_n(b, &c, 4, 0);
	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_CLOSED);
	fail_n(b, &c, 1, 0);
	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_OPEN);
	breaker_free(b);
}
END_TEST

START_TEST(test_open_retry_after)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra;

	fail_n(b, &c, 5, 1000);
	ck_assert_int_eq(breaker_allow(b, &c, 1000, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 10000);
	ck_assert_int_eq(breaker_allow(b, &c, 4500, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 6500);
	/* outcomes of requests already in flight neither extend nor close it */
	breaker_record(b, &c, BREAKER_PASS, true, 5000);
	breaker_record(b, &c, BREAKER_PASS, false, 5000);
	ck_assert_uint_eq(breaker_opened_total(b), 1);
	ck_assert_int_eq(breaker_allow(b, &c, 5000, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 6000);
	ck_assert_int_eq(breaker_allow(b, &c, 10999, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 1);
	ck_assert_int_eq(breaker_state(b, &c, 10999), BREAKER_OPEN);
	/* a clock read a moment before it opened: still open, not expired */
	ck_assert_int_eq(breaker_allow(b, &c, 990, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 10000);
	/* open_for over: half-open by time alone */
	ck_assert_int_eq(breaker_state(b, &c, 11000), BREAKER_HALF_OPEN);
	ck_assert_int_eq(breaker_allow(b, &c, 11000, &ra), BREAKER_PROBE);
	breaker_free(b);
}
END_TEST

START_TEST(test_half_open_probes)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra = -1;

	c.half_open_requests = 3;
	fail_n(b, &c, 5, 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(breaker_allow(b, &c, 10000 + i, &ra), BREAKER_PROBE);
	ck_assert_int_eq(breaker_state(b, &c, 10003), BREAKER_HALF_OPEN);
	for (int i = 0; i < 10; i++) {
		ra = -1;
		ck_assert_int_eq(breaker_allow(b, &c, 10003, &ra), BREAKER_REJECT);
		ck_assert_int_ge(ra, 1);
	}
	/* requests let through before it opened say nothing now */
	breaker_record(b, &c, BREAKER_PASS, false, 10004);
	ck_assert_int_eq(breaker_state(b, &c, 10004), BREAKER_HALF_OPEN);
	breaker_record(b, &c, BREAKER_REJECT, false, 10004);
	ck_assert_int_eq(breaker_state(b, &c, 10004), BREAKER_HALF_OPEN);
	/* one probe succeeds: closed, everything passes */
	breaker_record(b, &c, BREAKER_PROBE, false, 10005);
	ck_assert_int_eq(breaker_state(b, &c, 10005), BREAKER_CLOSED);
	ck_assert_int_eq(breaker_allow(b, &c, 10005, &ra), BREAKER_PASS);
	ck_assert_uint_eq(breaker_failures(b), 0);
	/* the other probes, settling later, count like any request */
	breaker_record(b, &c, BREAKER_PROBE, true, 10006);
	ck_assert_uint_eq(breaker_failures(b), 1);
	ck_assert_uint_eq(breaker_opened_total(b), 1);
	breaker_free(b);
}
END_TEST

START_TEST(test_failed_probe_reopens)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra;

	c.half_open_requests = 2;
	fail_n(b, &c, 5, 0);
	ck_assert_int_eq(breaker_allow(b, &c, 12000, &ra), BREAKER_PROBE);
	ck_assert_int_eq(breaker_allow(b, &c, 12000, &ra), BREAKER_PROBE);
	breaker_record(b, &c, BREAKER_PROBE, true, 12500);
	ck_assert_int_eq(breaker_state(b, &c, 12500), BREAKER_OPEN);
	ck_assert_uint_eq(breaker_opened_total(b), 2);
	/* open_for again, from the failed probe */
	ck_assert_int_eq(breaker_allow(b, &c, 13000, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 9500);
	/* the other probe of that spell settles while open: ignored */
	breaker_record(b, &c, BREAKER_PROBE, false, 13000);
	ck_assert_int_eq(breaker_state(b, &c, 13000), BREAKER_OPEN);
	breaker_record(b, &c, BREAKER_PROBE, true, 13000);
	ck_assert_uint_eq(breaker_opened_total(b), 2);
	ck_assert_int_eq(breaker_allow(b, &c, 22499, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 1);
	/* and round again: probe, success, closed */
	ck_assert_int_eq(breaker_allow(b, &c, 22500, &ra), BREAKER_PROBE);
	breaker_record(b, &c, BREAKER_PROBE, false, 22600);
	ck_assert_int_eq(breaker_state(b, &c, 22600), BREAKER_CLOSED);
	ck_assert_uint_eq(breaker_opened_total(b), 2);
	breaker_free(b);
}
END_TEST

/* A probe whose outcome is never recorded cannot wedge it half-open. */
START_TEST(test_lost_probe)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra;

	fail_n(b, &c, 5, 0);
	ck_assert_int_eq(breaker_allow(b, &c, 10000, &ra), BREAKER_PROBE);
	ck_assert_int_eq(breaker_allow(b, &c, 19999, &ra), BREAKER_REJECT);
	ck_assert_int_eq(breaker_allow(b, &c, 20000, &ra), BREAKER_PROBE);
	ck_assert_int_eq(breaker_allow(b, &c, 20000, &ra), BREAKER_REJECT);
	breaker_free(b);
}
END_TEST

/* A probe that ends with no outcome gives its place back, decides nothing. */
START_TEST(test_cancel)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra;

	fail_n(b, &c, 5, 0);
	ck_assert_int_eq(breaker_allow(b, &c, 10000, &ra), BREAKER_PROBE);
	ck_assert_int_eq(breaker_allow(b, &c, 10000, &ra), BREAKER_REJECT);
	breaker_cancel(b, BREAKER_PASS);	/* not a probe: nothing */
	ck_assert_int_eq(breaker_allow(b, &c, 10000, &ra), BREAKER_REJECT);
	breaker_cancel(b, BREAKER_PROBE);
	ck_assert_int_eq(breaker_state(b, &c, 10000), BREAKER_HALF_OPEN);
	ck_assert_int_eq(breaker_allow(b, &c, 10001, &ra), BREAKER_PROBE);
	breaker_record(b, &c, BREAKER_PROBE, true, 10002);
	breaker_cancel(b, BREAKER_PROBE);	/* open again: no effect */
	ck_assert_int_eq(breaker_allow(b, &c, 10002, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 10000);
	breaker_free(b);
}
END_TEST

/* The conf is read on every call: a reload applies to the live state. */
START_TEST(test_reload)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t ra;

	fail_n(b, &c, 3, 0);
	c.consecutive_failures = 3;
	fail_n(b, &c, 1, 0);		/* 4 >= 3 */
	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_OPEN);
	c.open_for = 2000;
	ck_assert_int_eq(breaker_state(b, &c, 2000), BREAKER_HALF_OPEN);
	/* disabled: always passes, whatever the state */
	c.consecutive_failures = 0;
	ck_assert_int_eq(breaker_allow(b, &c, 0, &ra), BREAKER_PASS);
	ck_assert_int_eq(breaker_state(b, &c, 0), BREAKER_CLOSED);
	fail_n(b, &c, 100, 0);
	ck_assert_uint_eq(breaker_opened_total(b), 1);
	breaker_free(b);
}
END_TEST

/* Times are kept in 40 bits; crossing that boundary changes nothing. */
START_TEST(test_clock_wrap)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	int64_t t = (INT64_C(1) << 40) - 5, ra;

	fail_n(b, &c, 5, t);
	ck_assert_int_eq(breaker_allow(b, &c, t + 100, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 9900);
	ck_assert_int_eq(breaker_allow(b, &c, t + 10000, &ra), BREAKER_PROBE);
	breaker_free(b);
	b = breaker_new();
	fail_n(b, &c, 5, -7000);
	ck_assert_int_eq(breaker_allow(b, &c, -1000, &ra), BREAKER_REJECT);
	ck_assert_int_eq(ra, 4000);
	breaker_free(b);
}
END_TEST

START_TEST(test_max_concurrent)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();

	c.max_concurrent = 3;
	for (int i = 0; i < 3; i++)
		ck_assert(breaker_enter(b, &c));
	ck_assert(!breaker_enter(b, &c));
	ck_assert_uint_eq(breaker_in_flight(b), 3);
	breaker_leave(b);
	ck_assert_uint_eq(breaker_in_flight(b), 2);
	ck_assert(breaker_enter(b, &c));
	ck_assert(!breaker_enter(b, &c));
	/* lowered by a reload: no new ones until below it */
	c.max_concurrent = 2;
	breaker_leave(b);
	ck_assert(!breaker_enter(b, &c));
	breaker_leave(b);
	ck_assert(breaker_enter(b, &c));
	for (int i = 0; i < 5; i++)
		breaker_leave(b);
	ck_assert_uint_eq(breaker_in_flight(b), 0);	/* never below zero */
	breaker_free(b);
}
END_TEST

struct worker_arg {
	struct breaker *b;
	const struct conf_breaker *c;
	atomic_int *probes, *entered, *start;
	int mode;
};

static void *
worker(void *arg)
{
	struct worker_arg *w = arg;
	int64_t ra;

	while (!atomic_load(w->start))
		;
	for (int i = 0; i < 5000; i++) {
		switch (w->mode) {
		case 0:
			breaker_record(w->b, w->c, BREAKER_PASS, true, 0);
			break;
		case 1:
			if (breaker_allow(w->b, w->c, 20000, &ra) == BREAKER_PROBE)
				atomic_fetch_add(w->probes, 1);
			break;
		default:
			if (breaker_enter(w->b, w->c)) {
				int n = atomic_fetch_add(w->entered, 1) + 1;

				ck_assert_int_le(n, (int)w->c->max_concurrent);
				atomic_fetch_sub(w->entered, 1);
				breaker_leave(w->b);
			}
		}
	}
	return NULL;
}

static void
run_workers(struct breaker *b, const struct conf_breaker *c, int mode,
    atomic_int *probes, atomic_int *entered)
{
	struct worker_arg a[4];
	pthread_t t[4];
	atomic_int start = 0;

	for (int i = 0; i < 4; i++) {
		a[i] = (struct worker_arg){ b, c, probes, entered, &start, mode };
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
	}
	atomic_store(&start, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
}

START_TEST(test_threads)
{
	struct breaker *b = breaker_new();
	struct conf_breaker c = conf();
	atomic_int probes = 0, entered = 0;

	c.consecutive_failures = 100;
	c.half_open_requests = 10;
	c.max_concurrent = 2;
	/* 20000 failures at once: it opens exactly once */
	run_workers(b, &c, 0, &probes, &entered);
	ck_assert_uint_eq(breaker_opened_total(b), 1);
	/* half-open: exactly half_open_requests probes among 20000 asks */
	run_workers(b, &c, 1, &probes, &entered);
	ck_assert_int_eq(atomic_load(&probes), 10);
	run_workers(b, &c, 2, &probes, &entered);
	ck_assert_uint_eq(breaker_in_flight(b), 0);
	breaker_free(b);
}
END_TEST

static Suite *
breaker_suite(void)
{
	Suite *s = suite_create("breaker");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_closed_to_open);
	tcase_add_test(tc, test_success_resets);
	tcase_add_test(tc, test_open_retry_after);
	tcase_add_test(tc, test_half_open_probes);
	tcase_add_test(tc, test_failed_probe_reopens);
	tcase_add_test(tc, test_lost_probe);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_reload);
	tcase_add_test(tc, test_clock_wrap);
	tcase_add_test(tc, test_max_concurrent);
	tcase_add_test(tc, test_threads);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(breaker_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
