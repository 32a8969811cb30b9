/*
 * Unit tests for src/affinity.c: a worker gets a CPU of its own only when
 * the process may use exactly as many CPUs as it has workers.
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

static Suite *
affinity_suite(void)
{
	Suite *s = suite_create("affinity");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_one_cpu_each_in_order);
	tcase_add_test(tc, test_more_cpus_than_workers);
	tcase_add_test(tc, test_fewer_cpus_than_workers);
	tcase_add_test(tc, test_empty_and_last_cpu);
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
