/*
 * Unit tests for src/balancer.c (SPEC §6 Load balancing): round_robin,
 * random and p2c_ewma choices, avoiding the previous endpoint on a retry,
 * the latency EWMA, its failure penalty and the connect backoff.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "balancer.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))

static const enum lb_kind kinds[] = { LB_P2C_EWMA, LB_ROUND_ROBIN, LB_RANDOM };

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

START_TEST(test_none_available)
{
	struct lb_candidate c[3] = {
		{ false, 0, 1, 1, false }, { false, 0, 1, 1, false }, { false, 0, 1, 1, false },
	};
	uint32_t rr = 0;

	for (size_t k = 0; k < N(kinds); k++) {
		ck_assert_int_eq(balancer_pick(kinds[k], c, 3, -1, &rr, 0), -1);
		ck_assert_int_eq(balancer_pick(kinds[k], c, 3, 1, &rr, UINT64_MAX), -1);
		ck_assert_int_eq(balancer_pick(kinds[k], c, 0, -1, &rr, 0), -1);
		ck_assert_int_eq(balancer_pick(kinds[k], NULL, 0, -1, &rr, 0), -1);
	}
}
END_TEST

START_TEST(test_single)
{
	struct lb_candidate c[1] = { { true, 7, 3.5, 1, false } };
	struct lb_candidate d[3] = {
		{ false, 0, 0, 1, false }, { true, 0, 0, 1, false }, { false, 0, 0, 1, false },
	};
	uint32_t rr = 5;

	for (size_t k = 0; k < N(kinds); k++)
		for (int i = 0; i < 100; i++) {
			uint64_t r = next_rand();

			ck_assert_int_eq(balancer_pick(kinds[k], c, 1, -1, &rr, r), 0);
			/* the one to avoid is the only one: it is used */
			ck_assert_int_eq(balancer_pick(kinds[k], c, 1, 0, &rr, r), 0);
			ck_assert_int_eq(balancer_pick(kinds[k], d, 3, 1, &rr, r), 1);
			ck_assert_int_eq(balancer_pick(kinds[k], d, 3, 0, &rr, r), 1);
		}
}
END_TEST

START_TEST(test_round_robin)
{
	struct lb_candidate c[5] = {
		{ true, 0, 0, 1, false }, { false, 0, 0, 1, false }, { true, 0, 0, 1, false },
		{ true, 0, 0, 1, false },
		{ false, 0, 0, 1, false },
	};
	static const long want[] = { 0, 2, 3, 0, 2, 3, 0 };
	uint32_t rr = 0;

	for (size_t i = 0; i < N(want); i++)
		ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), want[i]);
	/* an endpoint coming back joins the cycle */
	c[4].available = true;
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), 2);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), 3);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), 4);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), 0);
	/* a retry skips the one it came from */
	rr = 2;
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 5, 2, &rr, 0), 3);
	/* a cursor from a bigger endpoint set still works */
	rr = 1000003;
	ck_assert_int_ge(balancer_pick(LB_ROUND_ROBIN, c, 5, -1, &rr, 0), 0);
}
END_TEST

/* SRV weights: shares follow the weights; zero weights count alike */
START_TEST(test_weights)
{
	struct lb_candidate c[3] = {
		{ true, 0, 0, 3, false }, { true, 0, 0, 1, false }, { false, 0, 0, 6, false },
	};
	struct lb_candidate z[2] = { { true, 0, 0, 0, false }, { true, 0, 0, 0, false } };
	int seen[3] = { 0 }, zs[2] = { 0 };
	uint32_t rr = 0;
	static const long want[] = { 0, 0, 0, 1, 0, 0, 0, 1 };

	for (size_t i = 0; i < N(want); i++)
		ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), want[i]);
	for (int i = 0; i < 40000; i++)
		seen[balancer_pick(LB_RANDOM, c, 3, -1, &rr, next_rand())]++;
	ck_assert_int_eq(seen[2], 0);
	ck_assert(seen[0] > 28000 && seen[0] < 32000);	/* 3/4 */
	/* a retry avoids the heavy one when another exists */
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, 0, &rr, next_rand()), 1);
	for (int i = 0; i < 10000; i++)
		zs[balancer_pick(LB_RANDOM, z, 2, -1, &rr, next_rand())]++;
	ck_assert(zs[0] > 4000 && zs[1] > 4000);
}
END_TEST

START_TEST(test_random)
{
	struct lb_candidate c[4] = {
		{ true, 0, 0, 1, false }, { false, 0, 0, 1, false }, { true, 0, 0, 1, false },
		{ true, 0, 0, 1, false },
	};
	int seen[4] = { 0 };
	uint32_t rr = 0;

	ck_assert_int_eq(balancer_pick(LB_RANDOM, c, 4, -1, &rr, 0), 0);
	ck_assert_int_eq(balancer_pick(LB_RANDOM, c, 4, -1, &rr, UINT64_MAX), 3);
	for (int i = 0; i < 30000; i++) {
		long p = balancer_pick(LB_RANDOM, c, 4, -1, &rr, next_rand());

		ck_assert(p >= 0 && p < 4);
		seen[p]++;
	}
	ck_assert_int_eq(seen[1], 0);
	for (int i = 0; i < 4; i += 1 + (i == 0))
		ck_assert_msg(seen[i] > 9000 && seen[i] < 11000, "%d: %d", i, seen[i]);
	ck_assert_uint_eq(rr, 0);	/* the cursor is round_robin's */
	for (int i = 0; i < 1000; i++)
		ck_assert_int_ne(balancer_pick(LB_RANDOM, c, 4, 2, &rr, next_rand()), 2);
}
END_TEST

START_TEST(test_p2c_lighter)
{
	/* score (in_flight + 1) * ewma: 10, 8, 30 */
	struct lb_candidate c[3] = {
		{ true, 1, 5, 1, false }, { true, 0, 8, 1, false }, { true, 2, 10, 1, false },
	};
	int seen[3] = { 0 };
	uint32_t rr = 0;

	/* two candidates: both are always drawn, the lighter always wins */
	for (int i = 0; i < 5000; i++)
		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, next_rand()), 1);
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 1);
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, UINT64_MAX), 1);
	/* three: the heaviest never wins, the lightest wins 2/3 of draws */
	for (int i = 0; i < 30000; i++)
		seen[balancer_pick(LB_P2C_EWMA, c, 3, -1, &rr, next_rand())]++;
	ck_assert_int_eq(seen[2], 0);
	ck_assert_msg(seen[1] > 19000 && seen[1] < 21000, "lightest: %d", seen[1]);
	/* unavailable ones are not drawn, however light */
	c[1].available = false;
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, -1, &rr, next_rand()), 0);
}
END_TEST

START_TEST(test_p2c_avoid)
{
	struct lb_candidate c[3] = {
		{ true, 0, 1, 1, false }, { true, 50, 50, 1, false }, { false, 0, 1, 1, false },
	};
	uint32_t rr = 0;

	for (int i = 0; i < 1000; i++) {
		uint64_t r = next_rand();

		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, 0, &rr, r), 1);
		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, -1, &rr, r), 0);
		/* avoiding an unavailable or unknown index changes nothing */
		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, 2, &rr, r), 0);
		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 3, 17, &rr, r), 0);
	}
}
END_TEST

/* A new endpoint (no EWMA yet) gets traffic but is not flooded. */
START_TEST(test_p2c_unmeasured)
{
	struct lb_candidate c[2] = { { true, 0, 10, 1, false }, { true, 0, 0, 1, false } };
	uint32_t rr = 0;

	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 1);
	c[1].in_flight = 1;
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 0);
	c[0].in_flight = 3;
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 1);
	/* neither measured: fewer in flight wins */
	c[0].ewma_ms = 0;
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 1);
	c[1].in_flight = 9;
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 0);
}
END_TEST

static bool
near(double a, double b)
{
	double d = a - b;

	return (d < 0 ? -d : d) <= 1e-6 * (b < 0 ? -b : b) + 1e-9;
}

START_TEST(test_ewma)
{
	double e = 0;
	int64_t last = 0;

	ewma_update(&e, 20, &last, 5000);		/* the first sample sets it */
	ck_assert(near(e, 20));
	ck_assert_int_eq(last, 5000);
	ewma_update(&e, 10, &last, 15000);		/* one time constant later */
	ck_assert_msg(near(e, 10 + 10 * 0.36787944117144233), "%.9f", e);
	ck_assert_int_eq(last, 15000);
	ewma_update(&e, 1, &last, 15000);		/* no time passed: no weight */
	ck_assert(near(e, 10 + 10 * 0.36787944117144233));
	ewma_update(&e, 500, &last, 15001);		/* a peak counts at once */
	ck_assert(near(e, 500));
	ewma_update(&e, 100, &last, 15001 + 5000);	/* half a time constant */
	ck_assert_msg(near(e, 100 + 400 * 0.60653065971263342), "%.9f", e);
	ewma_update(&e, 100, &last, 10000000);		/* long ago: the sample */
	ck_assert(near(e, 100));
	ewma_update(&e, -5, &last, 10000001);		/* nonsense clamps to 0 */
	ck_assert(e >= 0 && e <= 100);
}
END_TEST

START_TEST(test_ewma_current)
{
	ck_assert(near(ewma_current(40, 1000, 1000), 40));
	ck_assert(near(ewma_current(40, 1000, 900), 40));	/* clock behind */
	ck_assert(near(ewma_current(40, 1000, 11000), 40 * 0.36787944117144233));
	ck_assert(near(ewma_current(40, 1000, 31000), 40 * 0.049787068367863944));
	ck_assert(ewma_current(40, 0, 1000000) == 0);
	ck_assert(ewma_current(0, 0, 5) == 0);
	/* a decayed slow endpoint wins again against a busy fast one */
	{
		struct lb_candidate c[2] = {
			{ true, 3, 2, 1, false }, { true, 0, ewma_current(100, 0, 40000), 1, false },
		};
		uint32_t rr = 0;

		ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 1);
	}
}
END_TEST

/* A failure is a penalty sample: max(latency, 1 s, 2 x current), the
 * doubling capped at 10 s (fake clock). */
START_TEST(test_ewma_failure)
{
	double e = 0, cur, want;
	int64_t last = 0;

	ewma_failure(&e, 0.2, &last, 1000);		/* a refused connect: 1 s */
	ck_assert(near(e, EWMA_PENALTY_MS));
	ck_assert_int_eq(last, 1000);
	ewma_failure(&e, 0.2, &last, 1000);		/* again: doubled */
	ck_assert(near(e, 2000));
	ewma_failure(&e, 0.2, &last, 1000);
	ck_assert(near(e, 4000));
	ewma_failure(&e, 0.2, &last, 1000);
	ck_assert(near(e, 8000));
	ewma_failure(&e, 0.2, &last, 1000);		/* the cap */
	ck_assert(near(e, EWMA_PENALTY_MAX_MS));
	ewma_failure(&e, 0.2, &last, 1000);
	ck_assert(near(e, EWMA_PENALTY_MAX_MS));
	/* decays like a sample: tried again after a while */
	ck_assert(ewma_current(e, last, 1000 + 60000) < 30);
	ck_assert(ewma_current(e, last, 1000 + 90000) < 2);

	/* a fast endpoint's failure costs it the fixed penalty */
	e = 0;
	ewma_update(&e, 3, &last, 5000);
	ewma_failure(&e, 1, &last, 5001);
	ck_assert(near(e, EWMA_PENALTY_MS));
	/* a timeout longer than the penalty counts as what it took */
	e = 0;
	ewma_update(&e, 3, &last, 5000);
	ewma_failure(&e, 5000, &last, 10000);
	ck_assert(near(e, 5000));
	ck_assert_int_eq(last, 10000);
	/* a slow endpoint (above the cap) never looks better for failing */
	e = 0;
	ewma_update(&e, 20000, &last, 5000);
	ewma_failure(&e, 1, &last, 5000);
	ck_assert(near(e, 20000));
	/* an old peak, decayed: at least 2 x what the balancer saw */
	e = 0;
	ewma_update(&e, 8000, &last, 0);
	cur = ewma_current(e, last, 20000);
	want = 2 * cur;
	ck_assert(want > EWMA_PENALTY_MS && want < 8000);
	ewma_failure(&e, 1, &last, 20000);
	ck_assert_msg(e >= want - 1e-9, "%.3f < %.3f", e, want);
	ck_assert(ewma_current(e, last, 20000) >= want - 1e-9);
}
END_TEST

/* A refusing endpoint (fast, nothing in flight) loses to a working one. */
START_TEST(test_p2c_failed_endpoint)
{
	struct lb_candidate c[2] = { { true, 0, 0, 1, false }, { true, 0, 0, 1, false } };
	double dead = 0, live = 0;
	int64_t ld = 0, ll = 0;
	uint32_t rr = 0;

	ewma_update(&live, 2, &ll, 1000);
	/* unmeasured, the dead one would win the tie (test_p2c_unmeasured) */
	c[1].ewma_ms = ewma_current(live, ll, 1000);
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 0);
	ewma_failure(&dead, 0.1, &ld, 1000);
	c[0].ewma_ms = ewma_current(dead, ld, 1001);
	for (uint32_t busy = 0; busy < 400; busy += 50) {
		c[1].in_flight = busy;
		for (int i = 0; i < 100; i++)
			ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, next_rand()), 1);
	}
	/* a penalty, not a wall: a live one busy enough loses */
	c[1].in_flight = 600;
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 0);
	/* and, decayed, the failed one is tried again */
	c[1].in_flight = 0;
	c[0].ewma_ms = ewma_current(dead, ld, 1000 + 80000);
	ck_assert_int_eq(balancer_pick(LB_P2C_EWMA, c, 2, -1, &rr, 0), 0);
}
END_TEST

/* 250 ms, doubling per failed connect up to 4 s; reset by a response. */
START_TEST(test_backoff)
{
	struct lb_backoff b = { 0, 0 };
	static const int64_t steps[] = { 250, 500, 1000, 2000, 4000, 4000, 4000 };
	int64_t now = 1000;

	ck_assert(!backoff_active(&b, 0));
	ck_assert(!backoff_active(&b, now));
	for (size_t i = 0; i < N(steps); i++) {
		backoff_failed(&b, now);
		ck_assert_int_eq(b.until_ms, now + steps[i]);
		ck_assert(backoff_active(&b, now));
		ck_assert(backoff_active(&b, now + steps[i] - 1));
		ck_assert(!backoff_active(&b, now + steps[i]));
		/* attempts begun before it fail into it: no step, no extension */
		backoff_failed(&b, now + 1);
		backoff_failed(&b, now + steps[i] - 1);
		ck_assert_int_eq(b.until_ms, now + steps[i]);
		now += steps[i];
	}
	ck_assert_uint_eq(b.failures, N(steps));
	backoff_reset(&b);
	ck_assert(!backoff_active(&b, now));
	backoff_failed(&b, now);
	ck_assert_int_eq(b.until_ms, now + CONNECT_BACKOFF_BASE_MS);
	/* a clock far on, a count far up: still the cap */
	b.failures = UINT32_MAX;
	backoff_failed(&b, INT64_C(1) << 50);
	ck_assert_int_eq(b.until_ms, (INT64_C(1) << 50) + CONNECT_BACKOFF_MAX_MS);
	ck_assert_uint_eq(b.failures, UINT32_MAX);
}
END_TEST

/* In backoff: skipped while another is left, by every balancer; never
 * left with nothing to try. */
START_TEST(test_backoff_pick)
{
	struct lb_candidate c[3] = {
		{ true, 0, 0, 1, true }, { true, 0, 0, 1, false }, { true, 0, 0, 1, false },
	};
	uint32_t rr = 0;

	for (size_t k = 0; k < N(kinds); k++) {
		for (int i = 0; i < 1000; i++)
			ck_assert_int_ne(balancer_pick(kinds[k], c, 3, -1, &rr, next_rand()), 0);
		/* p2c: even when it scores best */
		c[0].ewma_ms = 0.001;
		c[1].ewma_ms = c[2].ewma_ms = 50;
		c[1].in_flight = c[2].in_flight = 10;
		for (int i = 0; i < 1000; i++)
			ck_assert_int_ne(balancer_pick(kinds[k], c, 3, -1, &rr, next_rand()), 0);
		c[0].ewma_ms = c[1].ewma_ms = c[2].ewma_ms = 0;
		c[1].in_flight = c[2].in_flight = 0;
		/* the others ejected: the one in backoff is used */
		c[1].available = c[2].available = false;
		for (int i = 0; i < 100; i++)
			ck_assert_int_eq(balancer_pick(kinds[k], c, 3, -1, &rr, next_rand()), 0);
		/* all in backoff: all are used */
		c[1].available = c[2].available = true;
		c[1].backoff = c[2].backoff = true;
		{
			int seen[3] = { 0 };

			for (int i = 0; i < 3000; i++)
				seen[balancer_pick(kinds[k], c, 3, -1, &rr, next_rand())]++;
			ck_assert_msg(seen[0] > 500 && seen[1] > 500 && seen[2] > 500,
			    "kind %zu: %d %d %d", k, seen[0], seen[1], seen[2]);
		}
		/* the retry's avoid rule comes first: the other one, in
		 * backoff, rather than the one that just failed */
		c[2].available = false;
		c[1].backoff = false;
		for (int i = 0; i < 100; i++)
			ck_assert_int_eq(balancer_pick(kinds[k], c, 3, 1, &rr, next_rand()), 0);
		/* with a third one out of backoff, that one */
		c[2].available = true;
		c[2].backoff = false;
		for (int i = 0; i < 100; i++)
			ck_assert_int_eq(balancer_pick(kinds[k], c, 3, 1, &rr, next_rand()), 2);
		c[1].backoff = c[2].backoff = false;
		c[0].backoff = true;
	}
	/* round robin walks on past it */
	rr = 0;
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), 1);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), 2);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), 1);
	c[0].backoff = false;
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), 2);
	ck_assert_int_eq(balancer_pick(LB_ROUND_ROBIN, c, 3, -1, &rr, 0), 0);
	/* weighted (SRV): the heavy one in backoff gets nothing */
	c[0].weight = 5;
	c[0].backoff = true;
	for (size_t k = 0; k < N(kinds); k++)
		for (int i = 0; i < 1000; i++)
			ck_assert_int_ne(balancer_pick(kinds[k], c, 3, -1, &rr, next_rand()), 0);
}
END_TEST

static Suite *
balancer_suite(void)
{
	Suite *s = suite_create("balancer");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_weights);
	tcase_add_test(tc, test_none_available);
	tcase_add_test(tc, test_single);
	tcase_add_test(tc, test_round_robin);
	tcase_add_test(tc, test_random);
	tcase_add_test(tc, test_p2c_lighter);
	tcase_add_test(tc, test_p2c_avoid);
	tcase_add_test(tc, test_p2c_unmeasured);
	tcase_add_test(tc, test_ewma);
	tcase_add_test(tc, test_ewma_current);
	tcase_add_test(tc, test_ewma_failure);
	tcase_add_test(tc, test_p2c_failed_endpoint);
	tcase_add_test(tc, test_backoff);
	tcase_add_test(tc, test_backoff_pick);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(balancer_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
