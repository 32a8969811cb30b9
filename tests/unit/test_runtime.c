/*
 * Unit tests for src/runtime.c: an endpoint's gauges kept in one share per
 * worker, each on its own cache line, and added up for /services; an
 * address keeps its state across lookups; what nobody holds is freed.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include <check.h>

#include "runtime.h"

static struct runtime *rt;
static struct svc_runtime *svc;

static void
setup(void)
{
	struct conf_service c = { .name = "users" };

	rt = runtime_new(NULL, 3);	/* 3 workers + the main thread */
	ck_assert_ptr_nonnull(rt);
	svc = runtime_service(rt, &c);
	ck_assert_ptr_nonnull(svc);
}

static void
teardown(void)
{
	runtime_free(rt);
}

START_TEST(test_shares_apart)
{
	struct ep_runtime *e = runtime_endpoint(svc, "10.0.0.5:5000");

	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->n_shares, 4);
	for (unsigned i = 0; i < e->n_shares; i++) {
		struct ep_share *sh = ep_runtime_share(e, i);

		ck_assert_uint_eq((uintptr_t)sh % CACHE_LINE, 0);
		/* nothing of the endpoint's read-mostly part on a share's line */
		ck_assert((char *)sh >= (char *)&e->h2 + sizeof(e->h2));
	}
	/* another worker index maps onto an existing share, never past them */
	ck_assert_ptr_eq(ep_runtime_share(e, 4), ep_runtime_share(e, 0));
	ck_assert_ptr_eq(runtime_endpoint(svc, "10.0.0.5:5000"), e);
}
END_TEST

START_TEST(test_gauges_add_up)
{
	struct ep_runtime *e = runtime_endpoint(svc, "10.0.0.5:5000");
	struct ep_gauges g;

	ep_runtime_gauges(e, &g);
	ck_assert_int_eq(g.idle + g.active + g.in_flight + g.streams, 0);
	ck_assert_uint_eq(g.ewma_us, 0);

	/* worker 0 opened two and pooled one; worker 2 has one in use, a
	 * stream on it, and checked back in a connection worker 1 counts */
	atomic_store(&ep_runtime_share(e, 0)->idle, 1);
	atomic_store(&ep_runtime_share(e, 0)->active, 1);
	atomic_store(&ep_runtime_share(e, 2)->active, 1);
	atomic_store(&ep_runtime_share(e, 2)->in_flight, 1);
	atomic_store(&ep_runtime_share(e, 2)->streams, 1);
	atomic_store(&ep_runtime_share(e, 1)->idle, 2);
	ep_runtime_gauges(e, &g);
	ck_assert_int_eq(g.idle, 3);
	ck_assert_int_eq(g.active, 2);
	ck_assert_int_eq(g.in_flight, 1);
	ck_assert_int_eq(g.streams, 1);

	/* the EWMA is the mean of the workers that measured one */
	atomic_store(&ep_runtime_share(e, 0)->ewma_us, 1000);
	ep_runtime_gauges(e, &g);
	ck_assert_uint_eq(g.ewma_us, 1000);
	atomic_store(&ep_runtime_share(e, 2)->ewma_us, 3000);
	ep_runtime_gauges(e, &g);
	ck_assert_uint_eq(g.ewma_us, 2000);
}
END_TEST

START_TEST(test_endpoints_apart)
{
	struct ep_runtime *a = runtime_endpoint(svc, "10.0.0.5:5000");
	struct ep_runtime *b = runtime_endpoint(svc, "10.0.0.6:5000");

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	atomic_store(&ep_runtime_share(a, 0)->in_flight, 5);
	{
		struct ep_gauges g;

		ep_runtime_gauges(b, &g);
		ck_assert_int_eq(g.in_flight, 0);
	}
}
END_TEST

/* What nobody holds goes at the next compaction, and only then: a hold
 * taken and let go in between keeps nothing; an address seen again after
 * its state went starts afresh. */
START_TEST(test_compact_frees_what_nobody_holds)
{
	struct ep_runtime *a = runtime_endpoint(svc, "10.0.0.5:5000");
	struct ep_runtime *b = runtime_endpoint(svc, "10.0.0.6:5000");
	struct outlier_group *g1 = runtime_outlier_group(rt, 2);
	struct outlier_group *g2 = runtime_outlier_group(rt, 2);

	ck_assert_ptr_nonnull(g1);
	ck_assert_ptr_nonnull(g2);
	ep_runtime_ref(a);
	ep_runtime_ref(a);		/* two holders */
	ep_runtime_ref(b);
	outlier_group_ref(g2);
	ck_assert_uint_eq(runtime_compact(rt), 1);	/* g1, held by none */
	ck_assert_uint_eq(svc->n_eps, 2);

	ep_runtime_unref(b);
	ep_runtime_unref(a);
	ck_assert_uint_eq(runtime_compact(rt), 1);	/* b */
	ck_assert_uint_eq(svc->n_eps, 1);
	ck_assert_ptr_eq(svc->eps[0], a);
	ck_assert_ptr_eq(runtime_endpoint(svc, "10.0.0.5:5000"), a);

	atomic_store(&a->healthy, false);
	ep_runtime_unref(a);
	outlier_group_unref(g2);
	ck_assert_uint_eq(runtime_compact(rt), 2);
	ck_assert_uint_eq(svc->n_eps, 0);
	ck_assert_uint_eq(runtime_compact(rt), 0);

	a = runtime_endpoint(svc, "10.0.0.5:5000");
	ck_assert_ptr_nonnull(a);
	ck_assert(atomic_load(&a->healthy));
	ck_assert_uint_eq(atomic_load(&a->refs), 0);
}
END_TEST

static Suite *
runtime_suite(void)
{
	Suite *s = suite_create("runtime");
	TCase *tc = tcase_create("shares");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_shares_apart);
	tcase_add_test(tc, test_gauges_add_up);
	tcase_add_test(tc, test_endpoints_apart);
	tcase_add_test(tc, test_compact_frees_what_nobody_holds);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(runtime_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
