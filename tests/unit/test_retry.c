/*
 * Unit tests for src/retry.c (SPEC §6 Retries, Failures): the retry
 * decision and the per-service retry budget, with a fake clock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "retry.h"

#define ALL_ON	(RETRY_ON_CONNECT_FAILURE | RETRY_ON_REFUSED | RETRY_ON_RESET | \
    RETRY_ON_PER_TRY_TIMEOUT | RETRY_ON_502 | RETRY_ON_503 | RETRY_ON_504)

static const enum attempt_result failures[] = {
	AR_CONNECT_FAILURE, AR_REFUSED, AR_RESET, AR_PER_TRY_TIMEOUT,
	AR_STATUS_502, AR_STATUS_503, AR_STATUS_504,
};
#define N_FAILURES (sizeof(failures) / sizeof(failures[0]))

static const struct conf_retries defaults = {
	.max = 2, .on = ALL_ON, .backoff_base = 25, .backoff_max = 250,
	.budget_ratio = 0.2, .budget_min_per_second = 10, .buffer = 65536,
};

/* A GET that failed before anything was sent, lots of time left. */
static struct retry_input
input(enum attempt_result r)
{
	return (struct retry_input){ .result = r, .idempotent = true,
	    .replayable = true, .now_ms = 1000, .deadline_ms = 16000 };
}

START_TEST(test_failure_classes)
{
	ck_assert(!attempt_is_failure(AR_OK));
	for (size_t i = 0; i < N_FAILURES; i++)
		ck_assert(attempt_is_failure(failures[i]));
	ck_assert_uint_eq(attempt_retry_on(AR_OK), 0);
	ck_assert_uint_eq(attempt_retry_on(AR_STATUS_503), RETRY_ON_503);
	ck_assert_uint_eq(attempt_retry_on(AR_PER_TRY_TIMEOUT), RETRY_ON_PER_TRY_TIMEOUT);
	/* success is never retried */
	{
		struct retry_input in = input(AR_OK);
		struct retry_decision d = retry_decide(&defaults, &in, 0);

		ck_assert(!d.retry);
		ck_assert_ptr_eq(d.why_not, retry_why_ok);
	}
}
END_TEST

/* Each failure is retried when its bit is in `on`, and only then. */
START_TEST(test_on_mask)
{
	struct conf_retries c = defaults;

	for (size_t i = 0; i < N_FAILURES; i++) {
		struct retry_input in = input(failures[i]);
		uint32_t bit = attempt_retry_on(failures[i]);
		struct retry_decision d;

		c.on = bit;
		d = retry_decide(&c, &in, 0);
		ck_assert_msg(d.retry, "result %d with only its bit", failures[i]);
		ck_assert_ptr_null(d.why_not);
		c.on = ALL_ON & ~bit;
		d = retry_decide(&c, &in, 0);
		ck_assert_msg(!d.retry, "result %d without its bit", failures[i]);
		ck_assert_ptr_eq(d.why_not, retry_why_not_on);
		ck_assert_int_eq(d.delay_ms, 0);
		c.on = 0;
		ck_assert(!retry_decide(&c, &in, 0).retry);
	}
}
END_TEST

START_TEST(test_max)
{
	struct conf_retries c = defaults;
	struct retry_input in = input(AR_STATUS_503);

	c.max = 3;
	for (in.retries_done = 0; in.retries_done < 3; in.retries_done++)
		ck_assert(retry_decide(&c, &in, 0).retry);
	ck_assert_ptr_eq(retry_decide(&c, &in, 0).why_not, retry_why_max);
	in.retries_done = 100;
	ck_assert(!retry_decide(&c, &in, 0).retry);
	c.max = 0;
	in.retries_done = 0;
	ck_assert_ptr_eq(retry_decide(&c, &in, 0).why_not, retry_why_max);
}
END_TEST

/* POST: only connect-failure/refused (nothing sent), unless Idempotency-Key. */
START_TEST(test_not_idempotent)
{
	struct conf_retries c = defaults;

	for (size_t i = 0; i < N_FAILURES; i++) {
		struct retry_input in = input(failures[i]);
		bool connect = failures[i] == AR_CONNECT_FAILURE ||
		    failures[i] == AR_REFUSED;
		struct retry_decision d;

		in.idempotent = false;
		in.request_bytes_sent = !connect;
		d = retry_decide(&c, &in, 0);
		ck_assert_msg(d.retry == connect, "POST, result %d", failures[i]);
		if (!connect)
			ck_assert_ptr_eq(d.why_not, retry_why_not_idempotent);
		/* nothing sent does not make a reset or a 503 safe for POST */
		in.request_bytes_sent = false;
		ck_assert(retry_decide(&c, &in, 0).retry == connect);
		/* with Idempotency-Key (or an idempotent method) all retry */
		in.idempotent = true;
		in.request_bytes_sent = !connect;
		ck_assert_msg(retry_decide(&c, &in, 0).retry, "keyed, result %d",
		    failures[i]);
		/* a caller saying bytes left on a failed connect is believed */
		in.idempotent = false;
		in.request_bytes_sent = true;
		ck_assert(!retry_decide(&c, &in, 0).retry);
	}
}
END_TEST

START_TEST(test_streamed_body)
{
	struct conf_retries c = defaults;
	struct retry_input in = input(AR_STATUS_502);

	in.replayable = false;
	in.request_bytes_sent = true;
	ck_assert_ptr_eq(retry_decide(&c, &in, 0).why_not, retry_why_streamed);
	in.result = AR_RESET;
	ck_assert(!retry_decide(&c, &in, 0).retry);
	/* nothing of it sent yet: the body is still whole */
	in.result = AR_CONNECT_FAILURE;
	in.request_bytes_sent = false;
	ck_assert(retry_decide(&c, &in, 0).retry);
	/* buffered bodies replay */
	in.result = AR_STATUS_502;
	in.replayable = true;
	in.request_bytes_sent = true;
	ck_assert(retry_decide(&c, &in, 0).retry);
}
END_TEST

START_TEST(test_deadline)
{
	struct conf_retries c = defaults;
	struct retry_input in = input(AR_RESET);
	struct retry_decision d;

	/* rand UINT64_MAX: delay is the cap, 25 ms for the first retry */
	in.deadline_ms = in.now_ms + 25;
	d = retry_decide(&c, &in, UINT64_MAX);
	ck_assert(!d.retry && d.why_not == retry_why_deadline);
	in.deadline_ms = in.now_ms + 26;
	d = retry_decide(&c, &in, UINT64_MAX);
	ck_assert(d.retry && d.delay_ms == 25);
	/* no delay, but no time left either */
	for (int64_t left = -1; left <= 1; left++) {
		in.deadline_ms = in.now_ms + left;
		ck_assert(retry_decide(&c, &in, 0).retry == (left == 1));
	}
	in.deadline_ms = INT64_MAX;
	in.now_ms = -5000;
	ck_assert(retry_decide(&c, &in, UINT64_MAX).retry);
}
END_TEST

START_TEST(test_backoff_bounds)
{
	struct conf_retries c = defaults;
	struct retry_input in = input(AR_STATUS_503);
	static const int64_t caps[] = { 25, 50, 100, 200, 250, 250, 250 };
	uint64_t x = 88172645463325252ull;

	c.max = UINT32_MAX;
	in.deadline_ms = INT64_MAX;
	for (uint32_t n = 0; n < 7; n++) {
		int64_t lo = INT64_MAX, hi = -1;

		in.retries_done = n;
		ck_assert_int_eq(retry_decide(&c, &in, 0).delay_ms, 0);
		ck_assert_int_eq(retry_decide(&c, &in, UINT64_MAX).delay_ms, caps[n]);
		for (int i = 0; i < 20000; i++) {
			int64_t d;

			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			d = retry_decide(&c, &in, x).delay_ms;
			ck_assert_int_ge(d, 0);
			ck_assert_int_le(d, caps[n]);
			lo = d < lo ? d : lo;
			hi = d > hi ? d : hi;
		}
		/* full jitter: the whole range is used */
		ck_assert_int_eq(lo, 0);
		ck_assert_int_eq(hi, caps[n]);
	}
	/* a huge retry count neither overflows nor passes the cap */
	in.retries_done = 4000000000u;
	ck_assert_int_eq(retry_decide(&c, &in, UINT64_MAX).delay_ms, 250);
	c.backoff_max = INT64_MAX / 2;
	c.backoff_base = 1;
	in.retries_done = 200;
	ck_assert_int_eq(retry_decide(&c, &in, UINT64_MAX).delay_ms, INT64_MAX / 2);
	/* no backoff configured */
	c.backoff_base = c.backoff_max = 0;
	ck_assert_int_eq(retry_decide(&c, &in, UINT64_MAX).delay_ms, 0);
	/* the middle of the random range is the middle of the delay range */
	c.backoff_base = 25, c.backoff_max = 250, in.retries_done = 4;
	ck_assert_int_eq(retry_decide(&c, &in, UINT64_MAX / 2).delay_ms, 125);
}
END_TEST

/* min_per_second alone: 10 * mps retries in 10 s, then none. */
START_TEST(test_budget_min_per_second)
{
	struct retry_budget *b = retry_budget_new(1);
	struct conf_retries c = { .budget_ratio = 0, .budget_min_per_second = 10 };

	for (int i = 0; i < 100; i++)
		ck_assert_msg(retry_budget_take(b, &c, 5000), "take %d", i);
	ck_assert(!retry_budget_take(b, &c, 5000));
	ck_assert(!retry_budget_take(b, &c, 14999));
	/* second 5 leaves the window at 15.000 */
	for (int i = 0; i < 100; i++)
		ck_assert(retry_budget_take(b, &c, 15000));
	ck_assert(!retry_budget_take(b, &c, 15000));
	retry_budget_free(b);
}
END_TEST

/* The window slides by whole seconds: old seconds expire one by one. */
START_TEST(test_budget_slides)
{
	struct retry_budget *b = retry_budget_new(1);
	struct conf_retries c = { .budget_ratio = 0, .budget_min_per_second = 1 };
	uint64_t req, ret;

	for (int s = 0; s < 10; s++) {
		ck_assert(retry_budget_take(b, &c, s * 1000 + 500));
		retry_budget_counts(b, s * 1000 + 500, &req, &ret);
		ck_assert_uint_eq(ret, (uint64_t)s + 1);
	}
	ck_assert(!retry_budget_take(b, &c, 9999));
	for (int s = 10; s < 30; s++) {
		/* exactly one second's worth came free */
		ck_assert(retry_budget_take(b, &c, s * 1000));
		ck_assert(!retry_budget_take(b, &c, s * 1000 + 999));
	}
	/* long quiet: everything expired, even across a slot's reuse */
	retry_budget_counts(b, 1000000, &req, &ret);
	ck_assert_uint_eq(ret, 0);
	for (int i = 0; i < 10; i++)
		ck_assert(retry_budget_take(b, &c, 1000000));
	ck_assert(!retry_budget_take(b, &c, 1000000));
	retry_budget_free(b);
}
END_TEST

START_TEST(test_budget_ratio)
{
	struct retry_budget *b = retry_budget_new(3);	/* requests from 3 workers */
	struct conf_retries c = { .budget_ratio = 0.2, .budget_min_per_second = 0 };
	uint64_t req, ret;

	ck_assert(!retry_budget_take(b, &c, 0));	/* no traffic, no retries */
	for (int i = 0; i < 50; i++)
		retry_budget_request(b, (unsigned)i % 4, i * 100);	/* 50 over 5 s; 3 is 0 */
	for (int i = 0; i < 10; i++)
		ck_assert(retry_budget_take(b, &c, 5000));
	ck_assert(!retry_budget_take(b, &c, 5000));
	retry_budget_counts(b, 5000, &req, &ret);
	ck_assert_uint_eq(req, 50);
	ck_assert_uint_eq(ret, 10);
	/* the first requests (second 0) leave the window at 10 s: 40 left,
	 * 8 retries allowed, 10 still counted */
	ck_assert(!retry_budget_take(b, &c, 10000));
	/* both together: 0.2 * 50 + 2 * 10 */
	c.budget_min_per_second = 2;
	for (int i = 0; i < 20; i++)
		ck_assert(retry_budget_take(b, &c, 5000));
	ck_assert(!retry_budget_take(b, &c, 5000));
	retry_budget_free(b);
}
END_TEST

/* Clocks before 0 (floor, not truncation, to the second). */
START_TEST(test_budget_negative_clock)
{
	struct retry_budget *b = retry_budget_new(1);
	struct conf_retries c = { .budget_min_per_second = 1 };

	for (int s = -5; s < 5; s++)
		ck_assert(retry_budget_take(b, &c, s * 1000 - 1));
	ck_assert(!retry_budget_take(b, &c, 3999));
	ck_assert(retry_budget_take(b, &c, 4000));	/* second -6 expired */
	ck_assert(!retry_budget_take(b, &c, 4000));
	retry_budget_free(b);
}
END_TEST

struct hammer {
	struct retry_budget *b;
	const struct conf_retries *c;
	int64_t now_ms;
	atomic_int *granted, *start;
	unsigned worker;
};

static void *
hammer_take(void *arg)
{
	struct hammer *h = arg;
	int mine = 0;

	while (!atomic_load(h->start))
		;
	for (int i = 0; i < 20000; i++) {
		if (i % 4 == 0)
			retry_budget_request(h->b, h->worker, h->now_ms);
		mine += retry_budget_take(h->b, h->c, h->now_ms);
	}
	atomic_fetch_add(h->granted, mine);
	return NULL;
}

/* 4 threads: never more than the limit, with all their clocks in one
 * second (_i == 0: exactly the limit) or each in its own (20 rounds). */
START_TEST(test_budget_threads)
{
	struct conf_retries c = { .budget_ratio = 0, .budget_min_per_second = 100 };

	for (int round = 0; round < (_i ? 20 : 1); round++) {
		struct retry_budget *b = retry_budget_new(4);
		struct hammer h[4];
		pthread_t t[4];
		atomic_int granted = 0, start = 0;

		for (int i = 0; i < 4; i++) {
			h[i] = (struct hammer){ b, &c, 3000 + _i * i * 1000, &granted,
			    &start, (unsigned)i };
			ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_take, &h[i]), 0);
		}
		atomic_store(&start, 1);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		ck_assert_int_le(atomic_load(&granted), 1000);
		ck_assert_int_ge(atomic_load(&granted), _i ? 900 : 1000);
		retry_budget_free(b);
	}
}
END_TEST

static Suite *
retry_suite(void)
{
	Suite *s = suite_create("retry");
	TCase *tc = tcase_create("decide");
	TCase *tb = tcase_create("budget");

	tcase_add_test(tc, test_failure_classes);
	tcase_add_test(tc, test_on_mask);
	tcase_add_test(tc, test_max);
	tcase_add_test(tc, test_not_idempotent);
	tcase_add_test(tc, test_streamed_body);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_backoff_bounds);
	suite_add_tcase(s, tc);
	tcase_add_test(tb, test_budget_min_per_second);
	tcase_add_test(tb, test_budget_slides);
	tcase_add_test(tb, test_budget_ratio);
	tcase_add_test(tb, test_budget_negative_clock);
	tcase_add_loop_test(tb, test_budget_threads, 0, 2);
	tcase_set_timeout(tb, 30);
	suite_add_tcase(s, tb);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(retry_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
