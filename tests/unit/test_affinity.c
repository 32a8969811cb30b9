/*
 * Unit tests for src/affinity.c: a worker gets a CPU of its own only when
 * the process may use exactly as many CPUs as it has workers, and is let
 * loose while its long turns of HTTP/2 work wait long for it.
 */
#include <sched.h>
#include <stdlib.h>

#include <check.h>

#include "affinity.h"

static cpu_set_t
set_of(const int *cpus, int n)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	for (int i = 0; i < n; i++)
		CPU_SET(cpus[i], &s);
	return s;
}

START_TEST(test_one_cpu_each_in_order)
{
	cpu_set_t s = set_of((const int[]){ 7, 2, 5 }, 3);

	ck_assert_int_eq(affinity_cpu(&s, 3, 0), 2);
	ck_assert_int_eq(affinity_cpu(&s, 3, 1), 5);
	ck_assert_int_eq(affinity_cpu(&s, 3, 2), 7);
	ck_assert_int_eq(affinity_cpu(&s, 3, 3), -1);	/* no such worker */
}
END_TEST

START_TEST(test_more_cpus_than_workers)
{
	/* a share of a bigger host: every ferry on it would take CPU 0 */
	cpu_set_t s = set_of((const int[]){ 0, 1, 2, 3 }, 4);

	ck_assert_int_eq(affinity_cpu(&s, 2, 0), -1);
	ck_assert_int_eq(affinity_cpu(&s, 2, 1), -1);
}
END_TEST

START_TEST(test_fewer_cpus_than_workers)
{
	cpu_set_t s = set_of((const int[]){ 1 }, 1);

	ck_assert_int_eq(affinity_cpu(&s, 2, 0), -1);
	ck_assert_int_eq(affinity_cpu(&s, 1, 0), 1);
}
END_TEST

START_TEST(test_empty_and_last_cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	ck_assert_int_eq(affinity_cpu(&s, 0, 0), -1);
	ck_assert_int_eq(affinity_cpu(&s, 1, 0), -1);
	s = set_of((const int[]){ CPU_SETSIZE - 1 }, 1);
	ck_assert_int_eq(affinity_cpu(&s, 1, 0), CPU_SETSIZE - 1);
}
END_TEST

/* The counters of a thread, as schedstat shows them, and of its worker's
 * requests; H1_PER_TURN: the HTTP/1.x requests each turn to come begins
 * (the others, ten HTTP/2 streams a turn). */
struct counters {
	uint64_t run_ns, wait_ns, runs;
	struct affinity_work work;
	unsigned h1_per_turn;
};

/* Feeds W a second of N turns that each ran RUN_US and waited WAIT_US;
 * returns what affinity_watch_sample said. */
static bool
second(struct affinity_watch *w, struct counters *c, uint64_t n, uint64_t run_us,
    uint64_t wait_us)
{
	c->run_ns += n * run_us * 1000;
	c->wait_ns += n * wait_us * 1000;
	c->runs += n;
	if (c->h1_per_turn)
		c->work.h1_requests += n * c->h1_per_turn;
	else
		c->work.h2_streams += n * 10;
	return affinity_watch_sample(w, c->run_ns, c->wait_ns, c->runs, c->work);
}

/* One second short of letting W loose. */
static void
almost_loose(struct affinity_watch *w, struct counters *c)
{
	for (int k = 1; k < AFFINITY_LOOSE_AFTER; k++)
		ck_assert(!second(w, c, 1000, 300, 900));
}

static void
start(struct affinity_watch *w, struct counters *c)
{
	/* the first sample is a base, whatever it says */
	ck_assert(!affinity_watch_sample(w, c->run_ns, c->wait_ns, c->runs, c->work));
}

START_TEST(test_long_turns_that_wait_loosen_short_ones_bind_again)
{
	struct affinity_watch w = { 0 };
	struct counters c = { .run_ns = 900000000, .wait_ns = 800000000, .runs = 3000 };

	start(&w, &c);
	for (int i = 1; i < AFFINITY_LOOSE_AFTER; i++)
		ck_assert(!second(&w, &c, 1000, AFFINITY_LOOSE_US, AFFINITY_LOOSE_US));
	ck_assert(second(&w, &c, 1000, AFFINITY_LOOSE_US, AFFINITY_LOOSE_US));
	ck_assert(w.loose);
	/* long turns, or turns between the marks: it stays loose */
	ck_assert(!second(&w, &c, 1000, 300, 0));
	for (int i = 0; i < 10; i++)
		ck_assert(!second(&w, &c, 1000, AFFINITY_BIND_US + 1, 5));
	for (int i = 1; i < AFFINITY_BIND_AFTER; i++)
		ck_assert(!second(&w, &c, 1000, AFFINITY_BIND_US, 400));
	ck_assert(second(&w, &c, 5000, 20, 30));
	ck_assert(!w.loose);
}
END_TEST

START_TEST(test_short_turns_or_short_waits_keep_it_bound)
{
	struct affinity_watch w = { 0 };
	struct counters c = { 0 };

	start(&w, &c);
	/* HTTP/1.1 on a busy CPU: short turns, long waits */
	for (int i = 0; i < 20; i++)
		ck_assert(!second(&w, &c, 5000, 60, 900));
	/* long turns, on a CPU of its own */
	for (int i = 0; i < 20; i++)
		ck_assert(!second(&w, &c, 1000, 500, AFFINITY_LOOSE_US - 1));
	ck_assert(!w.loose);
}
END_TEST

START_TEST(test_a_second_that_does_not_argue_breaks_the_streak)
{
	struct affinity_watch w = { 0 };
	struct counters c = { 0 };

	start(&w, &c);
	for (int i = 0; i < 10; i++) {
		almost_loose(&w, &c);
		ck_assert(!second(&w, &c, 500, AFFINITY_LOOSE_US - 1, 900));
	}
	ck_assert(!w.loose);
}
END_TEST

START_TEST(test_an_idle_worker_is_not_moved)
{
	struct affinity_watch w = { 0 };
	struct counters c = { 0 };

	start(&w, &c);
	/* a few long turns that waited long say nothing about load */
	for (int i = 0; i < 20; i++)
		ck_assert(!second(&w, &c, AFFINITY_MIN_RUNS - 1, 5000, 5000));
	/* and an idle second between busy ones breaks the streak */
	for (int i = 0; i < 10; i++) {
		almost_loose(&w, &c);
		ck_assert(!second(&w, &c, 3, 300, 900));
	}
	ck_assert(!w.loose);
}
END_TEST

START_TEST(test_counters_that_go_back_start_over)
{
	struct affinity_watch w = { 0 };
	struct counters c = { .run_ns = 4000000000, .wait_ns = 3000000000, .runs = 100000 };

	start(&w, &c);
	almost_loose(&w, &c);
	/* each counter smaller in turn: no second's difference */
	c = (struct counters){ 10, 3000000000, 200000, c.work, 0 };
	ck_assert(!affinity_watch_sample(&w, c.run_ns, c.wait_ns, c.runs, c.work));
	c = (struct counters){ 4000000000, 10, 300000, c.work, 0 };
	ck_assert(!affinity_watch_sample(&w, c.run_ns, c.wait_ns, c.runs, c.work));
	c = (struct counters){ 5000000000, 3000000000, 5, c.work, 0 };
	ck_assert(!affinity_watch_sample(&w, c.run_ns, c.wait_ns, c.runs, c.work));
	almost_loose(&w, &c);
	ck_assert(second(&w, &c, 1000, 300, 900));
	ck_assert(w.loose);
}
END_TEST

START_TEST(test_http1_turns_keep_it_bound)
{
	struct affinity_watch w = { 0 };
	struct counters c = { .h1_per_turn = 6 };

	start(&w, &c);
	/* HTTP/1.1 at full load: long turns that wait long, but a loose
	 * worker would pay more for each request (affinity.h) */
	for (int i = 0; i < 20; i++)
		ck_assert(!second(&w, &c, 1800, 160, 420));
	/* streams and requests alike: the streams may be half */
	for (int i = 0; i < 20; i++) {
		c.work.h2_streams += 1800 * 6 - 1;
		ck_assert(!second(&w, &c, 1800, 160, 420));
	}
	/* turns that began nothing (a long TLS handshake each) */
	c.h1_per_turn = 0;
	for (int i = 0; i < 20; i++) {
		c.work.h2_streams -= 1800 * 10;
		ck_assert(!second(&w, &c, 1800, 160, 420));
	}
	ck_assert(!w.loose);
	/* half of them streams: HTTP/2's batches move it */
	c.h1_per_turn = 6;
	for (int i = 1; i < AFFINITY_LOOSE_AFTER; i++) {
		c.work.h2_streams += 1800 * 6;
		ck_assert(!second(&w, &c, 1800, 160, 420));
	}
	c.work.h2_streams += 1800 * 6;
	ck_assert(second(&w, &c, 1800, 160, 420));
	ck_assert(w.loose);
	/* loose, HTTP/1.1's short turns bind it again */
	for (int i = 1; i < AFFINITY_BIND_AFTER; i++)
		ck_assert(!second(&w, &c, 5000, 20, 30));
	ck_assert(second(&w, &c, 5000, 20, 30));
	ck_assert(!w.loose);
}
END_TEST

static Suite *
affinity_suite(void)
{
	Suite *s = suite_create("affinity");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_one_cpu_each_in_order);
	tcase_add_test(tc, test_more_cpus_than_workers);
	tcase_add_test(tc, test_fewer_cpus_than_workers);
	tcase_add_test(tc, test_empty_and_last_cpu);
	tcase_add_test(tc, test_long_turns_that_wait_loosen_short_ones_bind_again);
	tcase_add_test(tc, test_short_turns_or_short_waits_keep_it_bound);
	tcase_add_test(tc, test_a_second_that_does_not_argue_breaks_the_streak);
	tcase_add_test(tc, test_an_idle_worker_is_not_moved);
	tcase_add_test(tc, test_counters_that_go_back_start_over);
	tcase_add_test(tc, test_http1_turns_keep_it_bound);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(affinity_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
