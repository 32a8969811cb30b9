/*
 * Unit tests for src/latency.c: the recent 95th percentile time to the
 * response head behind hedging: {after: p95} (SPEC §16); fake clock.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "latency.h"

#define NOW 1000000

/* within the histogram's resolution (a quarter of a power of two) */
static void
ck_near(int64_t got, int64_t want)
{
	ck_assert_msg(got >= want - want / 4 - 1 && got <= want + want / 4 + 1,
	    "got %lld, want about %lld", (long long)got, (long long)want);
}

START_TEST(test_empty_and_too_few)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(latency_quantile(&l, 0.95, NOW), -1);
	for (int i = 0; i < LATENCY_MIN_SAMPLES - 1; i++)
		latency_add(&l, 1000, NOW);
	ck_assert_int_eq(latency_quantile(&l, 0.95, NOW), -1);
	latency_add(&l, 1000, NOW);
	ck_near(latency_quantile(&l, 0.95, NOW), 1000);
}
END_TEST

START_TEST(test_p95_of_a_mix)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	/* 90% at 2 ms, 10% at 200 ms: p95 is in the slow tenth */
	for (int i = 0; i < 1000; i++)
		latency_add(&l, i % 10 == 0 ? 200000 : 2000, NOW);
	ck_near(latency_quantile(&l, 0.95, NOW), 200000);
	ck_near(latency_quantile(&l, 0.5, NOW), 2000);
	/* 99% fast: p95 is fast */
	memset(&l, 0, sizeof(l));
	for (int i = 0; i < 1000; i++)
		latency_add(&l, i % 100 == 0 ? 200000 : 2000, NOW);
	ck_near(latency_quantile(&l, 0.95, NOW), 2000);
}
END_TEST

START_TEST(test_uniform_spread)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	for (int64_t us = 1; us <= 100000; us += 25)	/* under MAX_SAMPLES */
		latency_add(&l, us, NOW);
	ck_near(latency_quantile(&l, 0.95, NOW), 95000);
	ck_near(latency_quantile(&l, 0.5, NOW), 50000);
}
END_TEST

START_TEST(test_extremes)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < 20; i++) {
		latency_add(&l, -5, NOW);
		latency_add(&l, 0, NOW);
		latency_add(&l, INT64_MAX, NOW);
	}
	ck_assert_int_ge(latency_quantile(&l, 0.95, NOW), (int64_t)1 << 35);
	ck_assert_int_eq(latency_quantile(&l, 0.1, NOW), 0);
}
END_TEST

/* Old answers fade: after a change, the estimate follows within a few
 * half-lives, and by sample count under heavy traffic. */
START_TEST(test_recent_by_time)
{
	struct latency l;
	int64_t now = NOW;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < 1000; i++)
		latency_add(&l, 100000, now);
	ck_near(latency_quantile(&l, 0.95, now), 100000);
	/* the service got fast: 10 answers a second for two minutes */
	for (int s = 0; s < 120; s++) {
		now += 1000;
		for (int i = 0; i < 10; i++)
			latency_add(&l, 3000, now);
	}
	ck_near(latency_quantile(&l, 0.95, now), 3000);
	/* and a long silence leaves too few to say anything */
	now += 20 * LATENCY_HALF_LIFE_MS;
	ck_assert_int_eq(latency_quantile(&l, 0.95, now), -1);
}
END_TEST

START_TEST(test_recent_by_count)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < 100000; i++)
		latency_add(&l, 100000, NOW);
	ck_assert_uint_le(l.total, LATENCY_MAX_SAMPLES);
	/* all at once, no time passing: the newest samples still win */
	for (int i = 0; i < 4 * LATENCY_MAX_SAMPLES; i++)
		latency_add(&l, 3000, NOW);
	ck_near(latency_quantile(&l, 0.95, NOW), 3000);
}
END_TEST

START_TEST(test_clock_jump)
{
	struct latency l;

	memset(&l, 0, sizeof(l));
	for (int i = 0; i < 100; i++)
		latency_add(&l, 5000, NOW);
	/* a huge jump ends in bounded work and an empty estimate */
	ck_assert_int_eq(latency_quantile(&l, 0.95, INT64_MAX / 2), -1);
	for (int i = 0; i < 20; i++)
		latency_add(&l, 7000, INT64_MAX / 2);
	ck_near(latency_quantile(&l, 0.95, INT64_MAX / 2), 7000);
}
END_TEST

static Suite *
latency_suite(void)
{
	Suite *s = suite_create("latency");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_empty_and_too_few);
	tcase_add_test(tc, test_p95_of_a_mix);
	tcase_add_test(tc, test_uniform_spread);
	tcase_add_test(tc, test_extremes);
	tcase_add_test(tc, test_recent_by_time);
	tcase_add_test(tc, test_recent_by_count);
	tcase_add_test(tc, test_clock_jump);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(latency_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
