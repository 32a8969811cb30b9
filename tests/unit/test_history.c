/*
 * Unit tests for src/history.c (SPEC §16, the status page's charts): the
 * ring of 5 s buckets fed from cumulative counters, driven by a fake wall
 * clock; the quantiles; the set kept across config reloads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "history.h"

/* a wall clock far from 0, on a bucket boundary */
#define T0	((int64_t)1700000000000)

static struct history_point pts[HISTORY_POINTS];
static struct metrics_totals tot;

/* N more requests, F of them failed, each with a head after US µs. */
static void
traffic(unsigned n, unsigned f, int64_t us)
{
	int b = 0;

	while (b < METRICS_DURATION_BUCKETS - 1 && us > metrics_duration_bounds_us[b])
		b++;
	tot.requests += n;
	tot.failed += f;
	tot.duration[b] += n;
}

static const struct history_point *
newest(const struct history_series *s, int64_t now, int back)
{
	history_series_read(s, now, pts);
	return &pts[HISTORY_POINTS - 1 - back];
}

START_TEST(test_first_reading_is_the_baseline)
{
	struct history_series *s = history_series_new();

	ck_assert_ptr_nonnull(s);
	memset(&tot, 0, sizeof(tot));
	traffic(1000, 7, 800);		/* before the series began */
	history_series_record(s, T0 + 100, &tot);
	history_series_read(s, T0 + 100, pts);
	for (int i = 0; i < HISTORY_POINTS; i++) {
		ck_assert_int_eq(pts[i].requests, 0);
		ck_assert_int_eq(pts[i].errors, 0);
		ck_assert(pts[i].p50_ms == 0 && pts[i].p99_ms == 0);
		ck_assert_int_eq(pts[i].start_ms, T0 - (HISTORY_POINTS - 1 - i) * HISTORY_STEP_MS);
	}
	history_series_free(s);
}
END_TEST

START_TEST(test_growth_goes_to_the_bucket_of_the_reading)
{
	struct history_series *s = history_series_new();

	memset(&tot, 0, sizeof(tot));
	history_series_record(s, T0, &tot);
	traffic(3, 1, 800);
	history_series_record(s, T0 + 1000, &tot);
	traffic(2, 0, 800);
	history_series_record(s, T0 + 4999, &tot);
	ck_assert_int_eq(newest(s, T0 + 4999, 0)->requests, 5);
	ck_assert_int_eq(newest(s, T0 + 4999, 0)->errors, 1);
	/* the next bucket begins at T0 + 5 s */
	traffic(4, 4, 800);
	history_series_record(s, T0 + 5000, &tot);
	ck_assert_int_eq(newest(s, T0 + 5000, 0)->requests, 4);
	ck_assert_int_eq(newest(s, T0 + 5000, 0)->errors, 4);
	ck_assert_int_eq(newest(s, T0 + 5000, 0)->start_ms, T0 + 5000);
	ck_assert_int_eq(newest(s, T0 + 5000, 1)->requests, 5);
	ck_assert_int_eq(newest(s, T0 + 5000, 1)->start_ms, T0);
	ck_assert_int_eq(newest(s, T0 + 5000, 2)->requests, 0);
	/* read later without a new reading: a quiet bucket is zero, and the
	 * old ones move left */
	ck_assert_int_eq(newest(s, T0 + 10000, 0)->requests, 0);
	ck_assert_int_eq(newest(s, T0 + 10000, 1)->requests, 4);
	ck_assert_int_eq(newest(s, T0 + 10000, 2)->requests, 5);
	history_series_free(s);
}
END_TEST

START_TEST(test_quiet_buckets_are_zero_and_old_ones_leave)
{
	struct history_series *s = history_series_new();
	int64_t t = T0;

	memset(&tot, 0, sizeof(tot));
	history_series_record(s, t, &tot);
	/* one request in each of HISTORY_POINTS buckets */
	for (int i = 0; i < HISTORY_POINTS; i++, t += HISTORY_STEP_MS) {
		traffic(1, 0, 800);
		history_series_record(s, t, &tot);
	}
	t -= HISTORY_STEP_MS;
	history_series_read(s, t, pts);
	for (int i = 0; i < HISTORY_POINTS; i++)
		ck_assert_int_eq(pts[i].requests, 1);
	/* 3 quiet buckets, then one with traffic: a reading now covers them */
	t += 4 * HISTORY_STEP_MS;
	traffic(9, 2, 800);
	history_series_record(s, t, &tot);
	history_series_read(s, t, pts);
	ck_assert_int_eq(pts[HISTORY_POINTS - 1].requests, 9);
	for (int i = 1; i <= 3; i++)
		ck_assert_int_eq(pts[HISTORY_POINTS - 1 - i].requests, 0);
	ck_assert_int_eq(pts[HISTORY_POINTS - 5].requests, 1);
	/* more than 15 minutes quiet: nothing old is left */
	t += 1000 * HISTORY_STEP_MS;
	history_series_record(s, t, &tot);
	history_series_read(s, t, pts);
	for (int i = 0; i < HISTORY_POINTS; i++)
		ck_assert_int_eq(pts[i].requests, 0);
	history_series_free(s);
}
END_TEST

START_TEST(test_clock_stepping_back_loses_nothing)
{
	struct history_series *s = history_series_new();

	memset(&tot, 0, sizeof(tot));
	history_series_record(s, T0 + 20000, &tot);
	traffic(2, 0, 800);
	history_series_record(s, T0 + 20000, &tot);
	/* the clock went 12 s back: counted in the newest bucket, shown
	 * again once the clock is past it */
	traffic(3, 0, 800);
	history_series_record(s, T0 + 8000, &tot);
	ck_assert_int_eq(newest(s, T0 + 8000, 0)->requests, 0);
	ck_assert_int_eq(newest(s, T0 + 20000, 0)->requests, 5);
	/* a counter that went down (it never should) adds nothing */
	tot.requests = 1;
	history_series_record(s, T0 + 21000, &tot);
	ck_assert_int_eq(newest(s, T0 + 21000, 0)->requests, 5);
	traffic(1, 0, 800);
	history_series_record(s, T0 + 22000, &tot);
	ck_assert_int_eq(newest(s, T0 + 22000, 0)->requests, 6);
	history_series_free(s);
}
END_TEST

START_TEST(test_quantiles_interpolate_in_the_duration_buckets)
{
	uint32_t c[METRICS_DURATION_BUCKETS] = { 0 };

	ck_assert(history_quantile(c, 0.5) == 0);
	/* 10 in (1 ms, 2.5 ms]: linear inside it, as histogram_quantile */
	c[2] = 10;
	ck_assert_double_eq_tol(history_quantile(c, 0.5), 1.75, 1e-9);
	ck_assert_double_eq_tol(history_quantile(c, 0.99), 2.485, 1e-9);
	/* 50 in (0, 0.5 ms], 50 in (25, 50 ms] */
	memset(c, 0, sizeof(c));
	c[0] = 50;
	c[6] = 50;
	ck_assert_double_eq_tol(history_quantile(c, 0.5), 0.5, 1e-9);
	ck_assert_double_eq_tol(history_quantile(c, 0.99), 25 + 25 * 0.98, 1e-9);
	/* beyond the last bound (60 s): the last bound */
	memset(c, 0, sizeof(c));
	c[METRICS_DURATION_BUCKETS - 1] = 3;
	ck_assert_double_eq_tol(history_quantile(c, 0.5), 60000, 1e-9);
}
END_TEST

START_TEST(test_points_carry_the_quantiles_of_their_bucket)
{
	struct history_series *s = history_series_new();

	memset(&tot, 0, sizeof(tot));
	history_series_record(s, T0, &tot);
	traffic(98, 0, 30000);		/* (25, 50 ms] */
	traffic(2, 2, 700000);		/* (0.5, 1 s] */
	history_series_record(s, T0 + 1, &tot);
	traffic(10, 0, 300);		/* next bucket: (0, 0.5 ms] */
	history_series_record(s, T0 + HISTORY_STEP_MS, &tot);
	const struct history_point *p = newest(s, T0 + HISTORY_STEP_MS, 1);

	ck_assert_double_eq_tol(p->p50_ms, 25 + 25 * (50.0 / 98), 1e-6);
	ck_assert_double_eq_tol(p->p99_ms, 500 + 500 * 0.5, 1e-6);
	p = newest(s, T0 + HISTORY_STEP_MS, 0);
	ck_assert_double_eq_tol(p->p50_ms, 0.25, 1e-9);
	history_series_free(s);
}
END_TEST

START_TEST(test_counts_saturate)
{
	struct history_series *s = history_series_new();

	memset(&tot, 0, sizeof(tot));
	history_series_record(s, T0, &tot);
	tot.requests = (uint64_t)UINT32_MAX + 10;
	history_series_record(s, T0 + 1, &tot);
	tot.requests += 5;
	history_series_record(s, T0 + 2, &tot);
	ck_assert_uint_eq(newest(s, T0 + 2, 0)->requests, UINT32_MAX);
	history_series_free(s);
}
END_TEST

static struct history_entry *
entry(struct history *h, const char *name)
{
	struct history_entry *e;
	size_t n = history_entries(h, &e);

	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].name, name) == 0)
			return &e[i];
	return NULL;
}

START_TEST(test_set_keeps_series_by_name_across_reloads)
{
	struct history *h = history_new();
	struct history_entry *e;
	struct history_series *a;
	const struct history_key one[] = {
		{ "a", DIR_OUTBOUND, 0 }, { "b", DIR_OUTBOUND, 1 },
		{ "local_app", DIR_INBOUND, 2 }, { "full", DIR_OUTBOUND, -1 },
	};
	const struct history_key two[] = {
		{ "c", DIR_OUTBOUND, 3 }, { "a", DIR_OUTBOUND, 0 }, { "a", DIR_OUTBOUND, 0 },
		{ "a", DIR_INBOUND, 4 },
	};

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(history_set(h, one, 4), 0);
	/* a service without counters (the registry was full) is not charted */
	ck_assert_uint_eq(history_entries(h, &e), 3);
	ck_assert_str_eq(e[0].name, "a");
	ck_assert_str_eq(e[2].name, "local_app");
	ck_assert_int_eq(e[2].dir, DIR_INBOUND);
	ck_assert_int_eq(e[2].metrics_id, 2);
	a = entry(h, "a")->series;
	memset(&tot, 0, sizeof(tot));
	history_series_record(a, T0, &tot);
	traffic(4, 1, 800);
	history_series_record(a, T0 + 1, &tot);

	/* b and local_app go; a keeps its buckets; c and inbound a are new;
	 * a name given twice is charted once */
	ck_assert_int_eq(history_set(h, two, 4), 0);
	ck_assert_uint_eq(history_entries(h, &e), 3);
	ck_assert_str_eq(e[0].name, "c");
	ck_assert_str_eq(e[1].name, "a");
	ck_assert_int_eq(e[1].dir, DIR_OUTBOUND);
	ck_assert_ptr_eq(e[1].series, a);
	ck_assert_int_eq(newest(e[1].series, T0 + 1, 0)->requests, 4);
	ck_assert_int_eq(e[2].dir, DIR_INBOUND);
	ck_assert_ptr_ne(e[2].series, a);
	ck_assert_int_eq(newest(e[2].series, T0 + 1, 0)->requests, 0);
	ck_assert_ptr_null(entry(h, "b"));

	ck_assert_int_eq(history_set(h, NULL, 0), 0);
	ck_assert_uint_eq(history_entries(h, &e), 0);
	history_free(h);
}
END_TEST

START_TEST(test_memory_per_service)
{
	/* what man/ferry.8 states: about 13.5 KiB per charted service */
	ck_assert_uint_ge(history_series_bytes(),
	    HISTORY_POINTS * (2 + METRICS_DURATION_BUCKETS) * sizeof(uint32_t));
	ck_assert_uint_le(history_series_bytes(), 14 * 1024);
}
END_TEST

static Suite *
history_suite(void)
{
	Suite *s = suite_create("history");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_first_reading_is_the_baseline);
	tcase_add_test(tc, test_growth_goes_to_the_bucket_of_the_reading);
	tcase_add_test(tc, test_quiet_buckets_are_zero_and_old_ones_leave);
	tcase_add_test(tc, test_clock_stepping_back_loses_nothing);
	tcase_add_test(tc, test_quantiles_interpolate_in_the_duration_buckets);
	tcase_add_test(tc, test_points_carry_the_quantiles_of_their_bucket);
	tcase_add_test(tc, test_counts_saturate);
	tcase_add_test(tc, test_set_keeps_series_by_name_across_reloads);
	tcase_add_test(tc, test_memory_per_service);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(history_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
