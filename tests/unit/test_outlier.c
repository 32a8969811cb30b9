/*
 * Unit tests for src/outlier.c (SPEC §6 Outlier detection): ejection
 * after consecutive failures, growing durations, the max_ejection_percent
 * cap, expiry; fake clock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "outlier.h"

static struct conf_outlier
conf(void)
{
	struct conf_outlier c = {
		.consecutive_failures = 5, .base_ejection = 30000,
		.max_ejection_percent = 50,
	};

	return c;
}

static void
fail_n(struct outlier_group *g, size_t i, const struct conf_outlier *c, int n,
    int64_t now)
{
	for (int k = 0; k < n; k++)
		outlier_record(g, outlier_get(g, i), c, true, now);
}

static bool
out(struct outlier_group *g, size_t i, int64_t now)
{
	return outlier_ejected(g, outlier_get(g, i), now);
}

START_TEST(test_eject_after_n)
{
	struct outlier_group *g = outlier_group_new(4);
	struct conf_outlier c = conf();

	fail_n(g, 0, &c, 4, 1000);
	ck_assert(!out(g, 0, 1000));
	fail_n(g, 0, &c, 1, 1000);
	ck_assert(out(g, 0, 1000));
	ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 0)), 1);
	ck_assert_uint_eq(outlier_group_ejected(g), 1);
	/* base_ejection x 1, then it comes back by itself */
	ck_assert(out(g, 0, 30999));
	ck_assert(!out(g, 0, 31000));
	ck_assert_uint_eq(outlier_group_ejected(g), 0);
	ck_assert(!out(g, 1, 1000));
	outlier_group_free(g);
}
END_TEST

/* A new set's group takes over the state of the endpoints that stay,
 * ejections within its own cap. */
START_TEST(test_carry)
{
	struct outlier_group *old = outlier_group_new(4), *g = outlier_group_new(2);
	struct conf_outlier c = conf();

	c.max_ejection_percent = 100;
	fail_n(old, 0, &c, 5, 1000);
	fail_n(old, 1, &c, 5, 1000);
	fail_n(old, 2, &c, 3, 1000);
	ck_assert_uint_eq(outlier_group_ejected(old), 2);
	c.max_ejection_percent = 50;	/* one of two in G */
	outlier_carry(g, outlier_get(g, 0), outlier_get(old, 0), &c, 2000);
	outlier_carry(g, outlier_get(g, 1), outlier_get(old, 1), &c, 2000);
	ck_assert(out(g, 0, 2000));
	ck_assert(!out(g, 1, 2000));	/* over G's cap: back */
	ck_assert_uint_eq(outlier_group_ejected(g), 1);
	ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 1)), 1);
	/* the ejection ends when it would have */
	ck_assert(out(g, 0, 30999));
	ck_assert(!out(g, 0, 31000));
	ck_assert_uint_eq(outlier_group_ejected(g), 0);
	/* failures in a row carry too: two more eject */
	outlier_carry(g, outlier_get(g, 1), outlier_get(old, 2), &c, 31000);
	fail_n(g, 1, &c, 2, 31000);
	ck_assert(out(g, 1, 31000));
	outlier_group_free(old);
	outlier_group_free(g);
}
END_TEST

START_TEST(test_success_resets)
{
	struct outlier_group *g = outlier_group_new(4);
	struct conf_outlier c = conf();

	fail_n(g, 0, &c, 4, 0);
	outlier_record(g, outlier_get(g, 0), &c, false, 0);
	fail_n(g, 0, &c, 4, 0);
	ck_assert(!out(g, 0, 0));
	fail_n(g, 0, &c, 1, 0);
	ck_assert(out(g, 0, 0));
	outlier_group_free(g);
}
END_TEST

/* base x times ejected, at most 300 s. */
START_TEST(test_duration_grows)
{
	struct outlier_group *g = outlier_group_new(2);
	struct conf_outlier c = conf();
	static const int64_t want[] = { 100000, 200000, 300000, 300000, 300000 };
	int64_t now = 0;

	c.base_ejection = 100000;
	for (int i = 0; i < 5; i++) {
		fail_n(g, 1, &c, 5, now);
		ck_assert(out(g, 1, now + want[i] - 1));
		ck_assert_msg(!out(g, 1, now + want[i]), "ejection %d", i + 1);
		ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 1)),
		    (uint32_t)i + 1);
		now += want[i];
	}
	/* a base above the cap is the cap */
	c.base_ejection = 1000000;
	fail_n(g, 0, &c, 5, now);
	ck_assert(out(g, 0, now + 299999));
	ck_assert(!out(g, 0, now + 300000));
	outlier_group_free(g);
}
END_TEST

/* base x times is cut to 300 s only when it is longer: a base that does
 * not divide 300 s is not rounded up to the cap a step early. */
START_TEST(test_duration_below_cap_is_exact)
{
	struct outlier_group *g = outlier_group_new(2);
	struct conf_outlier c = conf();

	/* 200 s x 1 is under the cap: the first ejection is 200 s, not 300 s */
	c.base_ejection = 200000;
	fail_n(g, 0, &c, 5, 0);
	ck_assert(out(g, 0, 199999));
	ck_assert_msg(!out(g, 0, 200000), "first ejection of 200 s lasted longer");
	/* 7 s x 42 = 294 s, still under it; 7 s x 43 is past it */
	c.base_ejection = 7000;
	for (uint32_t i = 1; i <= 43; i++) {
		int64_t now = (int64_t)i * 1000000, want = i < 43 ? 7000 * (int64_t)i : 300000;

		fail_n(g, 1, &c, 5, now);
		ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 1)), i);
		ck_assert(out(g, 1, now + want - 1));
		ck_assert_msg(!out(g, 1, now + want), "ejection %u", i);
	}
	outlier_group_free(g);
}
END_TEST

/* Failures of requests sent before the ejection are not counted. */
START_TEST(test_failures_while_ejected)
{
	struct outlier_group *g = outlier_group_new(2);
	struct conf_outlier c = conf();

	fail_n(g, 0, &c, 5, 0);
	fail_n(g, 0, &c, 20, 10);
	ck_assert(out(g, 0, 29999));
	ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 0)), 1);
	/* back: it takes N fresh failures again */
	fail_n(g, 0, &c, 4, 30000);
	ck_assert(!out(g, 0, 30000));
	fail_n(g, 0, &c, 1, 30000);
	ck_assert(out(g, 0, 30000));
	ck_assert(out(g, 0, 30000 + 59999));
	outlier_group_free(g);
}
END_TEST

START_TEST(test_cap_values)
{
	ck_assert_uint_eq(outlier_max_ejected(1, 50), 0);
	ck_assert_uint_eq(outlier_max_ejected(1, 99), 0);
	ck_assert_uint_eq(outlier_max_ejected(1, 100), 1);
	ck_assert_uint_eq(outlier_max_ejected(2, 50), 1);
	ck_assert_uint_eq(outlier_max_ejected(2, 0), 1);	/* at least one */
	ck_assert_uint_eq(outlier_max_ejected(2, 100), 2);
	ck_assert_uint_eq(outlier_max_ejected(3, 50), 1);
	ck_assert_uint_eq(outlier_max_ejected(3, 67), 2);
	ck_assert_uint_eq(outlier_max_ejected(3, 100), 3);
	ck_assert_uint_eq(outlier_max_ejected(10, 50), 5);
	ck_assert_uint_eq(outlier_max_ejected(10, 0), 1);
	ck_assert_uint_eq(outlier_max_ejected(10, 19), 1);
	ck_assert_uint_eq(outlier_max_ejected(10, 20), 2);
	ck_assert_uint_eq(outlier_max_ejected(0, 50), 0);
	ck_assert_uint_eq(outlier_max_ejected(250, 33), 82);
}
END_TEST

/* Eject every endpoint in turn; return how many went out. */
static size_t
eject_all(size_t n, uint32_t percent)
{
	struct outlier_group *g = outlier_group_new(n);
	struct conf_outlier c = conf();
	size_t ejected = 0;

	c.max_ejection_percent = percent;
	for (size_t i = 0; i < n; i++)
		fail_n(g, i, &c, 5, 0);
	for (size_t i = 0; i < n; i++)
		if (out(g, i, 1))
			ejected++;
	ck_assert_uint_eq(outlier_group_ejected(g), ejected);
	outlier_group_free(g);
	return ejected;
}

START_TEST(test_cap_enforced)
{
	ck_assert_uint_eq(eject_all(1, 50), 0);		/* never the only one */
	ck_assert_uint_eq(eject_all(1, 100), 1);
	ck_assert_uint_eq(eject_all(2, 50), 1);
	ck_assert_uint_eq(eject_all(2, 0), 1);
	ck_assert_uint_eq(eject_all(3, 50), 1);
	ck_assert_uint_eq(eject_all(3, 100), 3);
	ck_assert_uint_eq(eject_all(10, 50), 5);
	ck_assert_uint_eq(eject_all(10, 30), 3);
}
END_TEST

/* At the cap an endpoint stays due; when a place frees it goes out on its
 * next failure, even if nobody asked about the expired one. */
START_TEST(test_cap_frees)
{
	struct outlier_group *g = outlier_group_new(3);
	struct conf_outlier c = conf();

	fail_n(g, 0, &c, 5, 0);
	fail_n(g, 1, &c, 7, 10);
	ck_assert(out(g, 0, 10));
	ck_assert(!out(g, 1, 10));
	ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 1)), 0);
	/* endpoint 0's ejection ran out at 30000, unseen */
	fail_n(g, 1, &c, 1, 30000);
	ck_assert(out(g, 1, 30000));
	ck_assert(!out(g, 0, 30000));
	ck_assert_uint_eq(outlier_group_ejected(g), 1);
	/* a success while due clears it */
	fail_n(g, 2, &c, 5, 30000);
	ck_assert(!out(g, 2, 30000));
	outlier_record(g, outlier_get(g, 2), &c, false, 30000);
	fail_n(g, 2, &c, 1, 60000);
	ck_assert(!out(g, 2, 60000));
	outlier_group_free(g);
}
END_TEST

START_TEST(test_disabled)
{
	struct outlier_group *g = outlier_group_new(4);
	struct conf_outlier c = conf();

	c.consecutive_failures = 0;
	fail_n(g, 0, &c, 1000, 0);
	ck_assert(!out(g, 0, 0));
	ck_assert_uint_eq(outlier_times_ejected(outlier_get(g, 0)), 0);
	/* turned on by a reload: counting starts from there */
	c.consecutive_failures = 1;
	fail_n(g, 0, &c, 1, 0);
	ck_assert(out(g, 0, 0));
	ck_assert_ptr_null(outlier_get(g, 4));
	outlier_group_free(g);
}
END_TEST

struct hammer {
	struct outlier_group *g;
	const struct conf_outlier *c;
	unsigned seed;
	atomic_int *start;
};

static void *
hammer(void *arg)
{
	struct hammer *h = arg;
	unsigned x = h->seed;

	while (!atomic_load(h->start))
		;
	for (int i = 0; i < 200000; i++) {
		int64_t now = i / 10;
		size_t e;

		x = x * 1103515245u + 12345u;
		e = (x >> 16) % 10;
		outlier_record(h->g, outlier_get(h->g, e), h->c, (x >> 8) % 8 != 0, now);
		ck_assert_uint_le(outlier_group_ejected(h->g), 5);
		(void)outlier_ejected(h->g, outlier_get(h->g, (e + 1) % 10), now);
	}
	return NULL;
}

START_TEST(test_threads)
{
	struct outlier_group *g = outlier_group_new(10);
	struct conf_outlier c = conf();
	struct hammer h[4];
	pthread_t t[4];
	atomic_int start = 0;
	size_t n = 0;

	c.consecutive_failures = 3;
	c.base_ejection = 50;
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ g, &c, (unsigned)i * 7919u + 1, &start };
		ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, &h[i]), 0);
	}
	atomic_store(&start, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	/* the count matches the endpoints really out */
	for (size_t i = 0; i < 10; i++)
		if (out(g, i, 19999))
			n++;
	ck_assert_uint_eq(outlier_group_ejected(g), n);
	ck_assert_uint_le(n, 5);
	for (size_t i = 0; i < 10; i++)
		ck_assert(!out(g, i, 1000000000));
	ck_assert_uint_eq(outlier_group_ejected(g), 0);
	outlier_group_free(g);
}
END_TEST

static Suite *
outlier_suite(void)
{
	Suite *s = suite_create("outlier");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_eject_after_n);
	tcase_add_test(tc, test_success_resets);
	tcase_add_test(tc, test_duration_grows);
	tcase_add_test(tc, test_duration_below_cap_is_exact);
	tcase_add_test(tc, test_failures_while_ejected);
	tcase_add_test(tc, test_carry);
	tcase_add_test(tc, test_cap_values);
	tcase_add_test(tc, test_cap_enforced);
	tcase_add_test(tc, test_cap_frees);
	tcase_add_test(tc, test_disabled);
	tcase_add_test(tc, test_threads);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(outlier_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
