/*
 * Unit tests for src/ratelimit.c (SPEC §6 Rate limit): a token bucket of
 * `burst` refilled at `rps`, driven by a fake clock in microseconds.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "ratelimit.h"

static struct conf_rate_limit
rl(double rps, uint32_t burst)
{
	struct conf_rate_limit c = { .enabled = true, .rps = rps, .burst = burst };

	return c;
}

#define MS(x)	((int64_t)(x) * 1000)

START_TEST(test_disabled)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = { .enabled = false };
	int64_t ra = -1;

	for (int i = 0; i < 10000; i++)
		ck_assert(bucket_take(b, &c, 0, &ra));
	ck_assert_int_eq(ra, -1);
	bucket_free(b);
}
END_TEST

START_TEST(test_burst_then_refill)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = rl(10, 5);
	int64_t ra;

	for (int i = 0; i < 5; i++)
		ck_assert_msg(bucket_take(b, &c, MS(1000), &ra), "burst %d", i);
	ck_assert(!bucket_take(b, &c, MS(1000), &ra));
	ck_assert_int_eq(ra, 100);		/* one token per 100 ms */
	ck_assert(!bucket_take(b, &c, MS(1050), &ra));
	ck_assert_int_eq(ra, 50);
	ck_assert(!bucket_take(b, &c, MS(1100) - 1, &ra));
	ck_assert_int_eq(ra, 1);		/* 1 us left: at least 1 ms */
	ck_assert(bucket_take(b, &c, MS(1100), &ra));
	ck_assert(!bucket_take(b, &c, MS(1100), &ra));
	ck_assert_int_eq(ra, 100);
	/* 350 ms later: 3 tokens (and a half) */
	for (int i = 0; i < 3; i++)
		ck_assert(bucket_take(b, &c, MS(1450), &ra));
	ck_assert(!bucket_take(b, &c, MS(1450), &ra));
	ck_assert_int_eq(ra, 50);
	bucket_free(b);
}
END_TEST

/* A long idle time fills the bucket to burst, not beyond. */
START_TEST(test_capacity)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = rl(100, 20);
	int64_t ra;
	int n = 0;

	while (bucket_take(b, &c, 0, &ra))
		n++;
	ck_assert_int_eq(n, 20);
	for (n = 0; bucket_take(b, &c, MS(3600000), &ra); n++)
		;
	ck_assert_int_eq(n, 20);
	bucket_free(b);
}
END_TEST

START_TEST(test_retry_after_rounding)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = rl(3, 1);
	int64_t ra;

	ck_assert(bucket_take(b, &c, 0, &ra));
	ck_assert(!bucket_take(b, &c, 0, &ra));
	ck_assert_int_eq(ra, 334);		/* 333.33 ms, rounded up */
	bucket_free(b);

	b = bucket_new();
	c = rl(0.5, 1);
	ck_assert(bucket_take(b, &c, 0, &ra));
	ck_assert(!bucket_take(b, &c, MS(500), &ra));
	ck_assert_int_eq(ra, 1500);
	ck_assert(bucket_take(b, &c, MS(2000), &ra));
	bucket_free(b);

	b = bucket_new();
	c = rl(1000000, 1);			/* a token every microsecond */
	ck_assert(bucket_take(b, &c, 0, &ra));
	ck_assert(!bucket_take(b, &c, 0, &ra));
	ck_assert_int_eq(ra, 1);
	ck_assert(bucket_take(b, &c, 1, &ra));
	bucket_free(b);
}
END_TEST

/* Steady traffic faster than rps for 2 s: burst + 2 * rps get through. */
static void
steady(double rps, uint32_t burst, int64_t step_us)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = rl(rps, burst);
	int64_t ra, want = burst + (int64_t)(2 * rps), n = 0;

	for (int64_t t = 0; t < MS(2000); t += step_us)
		if (bucket_take(b, &c, 777777 + t, &ra))
			n++;
	ck_assert_msg(n >= want - 1 && n <= want + 1,
	    "rps %g burst %u: %lld admitted, want %lld +-1", rps, burst,
	    (long long)n, (long long)want);
	bucket_free(b);
}

START_TEST(test_accuracy)
{
	steady(100, 20, 1000);
	steady(100, 1, 100);
	steady(7.5, 3, 100);
	steady(10000, 100, 20);
	steady(1000, 1000, 333);
	steady(1, 1, 1000);
	steady(333.3, 50, 7);
}
END_TEST

/* A reload keeps the tokens, not the time they were priced at. */
START_TEST(test_reload)
{
	struct bucket *b = bucket_new();
	struct conf_rate_limit c = rl(0.01, 1);	/* a token every 100 s */
	int64_t ra;
	int n;

	ck_assert(bucket_take(b, &c, 0, &ra));
	ck_assert(!bucket_take(b, &c, 0, &ra));
	ck_assert_int_eq(ra, 100000);
	c = rl(1000, 1);
	ck_assert(!bucket_take(b, &c, 0, &ra));
	ck_assert_int_eq(ra, 1);		/* empty, at the new price */
	ck_assert(bucket_take(b, &c, MS(1), &ra));
	/* idle since: full at the new size */
	c = rl(10, 100);
	for (n = 0; bucket_take(b, &c, MS(100000), &ra); n++)
		;
	ck_assert_int_eq(n, 100);
	/* burst down with one token spent: it stays spent */
	ck_assert(bucket_take(b, &c, MS(110000), &ra));
	c = rl(10, 5);
	for (n = 0; bucket_take(b, &c, MS(110000), &ra); n++)
		;
	ck_assert_int_eq(n, 4);
	/* burst down below what was spent: empty, not in debt for longer */
	for (n = 0; n < 50; n++)
		ck_assert(bucket_take(b, &c, MS(120000), &ra) == (n < 5));
	c = rl(10, 100);
	for (n = 0; n < 10; n++)
		ck_assert(bucket_take(b, &c, MS(120000), &ra));
	c = rl(10, 3);
	ck_assert(!bucket_take(b, &c, MS(120000), &ra));
	ck_assert_int_eq(ra, 100);
	/* burst up with one spent: the new room is there at once */
	ck_assert(bucket_take(b, &c, MS(130000), &ra));
	c = rl(10, 50);
	for (n = 0; bucket_take(b, &c, MS(130000), &ra); n++)
		;
	ck_assert_int_eq(n, 49);
	bucket_free(b);
}
END_TEST

struct hammer {
	struct bucket *b;
	const struct conf_rate_limit *c;
	bool moving;
	int admitted;
	atomic_int *start;
};

static void *
hammer(void *arg)
{
	struct hammer *h = arg;
	int64_t ra;

	while (!atomic_load(h->start))
		;
	for (int i = 0; i < 100000; i++)
		if (bucket_take(h->b, h->c, h->moving ? i * 10 : 0, &ra))
			h->admitted++;
	return NULL;
}

/* 4 threads: never more than the bucket allows. */
static int
run_threads(const struct conf_rate_limit *c, bool moving)
{
	struct bucket *b = bucket_new();
	struct hammer h[4];
	pthread_t t[4];
	atomic_int start = 0;
	int total = 0;

	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ b, c, moving, 0, &start };
		ck_assert_int_eq(pthread_create(&t[i], NULL, hammer, &h[i]), 0);
	}
	atomic_store(&start, 1);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		total += h[i].admitted;
	}
	bucket_free(b);
	return total;
}

START_TEST(test_threads)
{
	struct conf_rate_limit c = rl(1, 1000);
	int n;

	/* one instant: exactly the burst */
	ck_assert_int_eq(run_threads(&c, false), 1000);
	/* each thread's clock runs 0..1 s: at most burst + 1 s of rps */
	c = rl(1000, 100);
	n = run_threads(&c, true);
	ck_assert_int_le(n, 100 + 1000 + 1);
	ck_assert_int_ge(n, 1000);
}
END_TEST

static Suite *
ratelimit_suite(void)
{
	Suite *s = suite_create("ratelimit");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_disabled);
	tcase_add_test(tc, test_burst_then_refill);
	tcase_add_test(tc, test_capacity);
	tcase_add_test(tc, test_retry_after_rounding);
	tcase_add_test(tc, test_accuracy);
	tcase_add_test(tc, test_reload);
	tcase_add_test(tc, test_threads);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ratelimit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
