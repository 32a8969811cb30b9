/*
 * Unit tests for src/slab.c: pages of same-sized objects that go back to
 * the system once every object on them is gone.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <check.h>

#include "poison.h"
#include "slab.h"

#define OBJ 232			/* not a multiple of 16: the stride rounds up */
#define PER_PAGE_MIN ((SLAB_PAGE - 64) / 240)

/* S's pages, or with LIVE its objects handed out */
static size_t
count(struct slab *s, bool live)
{
	size_t n_pages, n_live;

	slab_count(s, &n_pages, &n_live);
	return live ? n_live : n_pages;
}

static const unsigned char zeros[OBJ];

/* N objects from S, each checked zeroed and aligned, then filled with a
 * byte of its index. */
static void
fill(struct slab *s, void **p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		p[i] = slab_alloc(s, OBJ);
		ck_assert_ptr_nonnull(p[i]);
		ck_assert_uint_eq((uintptr_t)p[i] % 16, 0);
		ck_assert(memcmp(p[i], zeros, OBJ) == 0);
		memset(p[i], (int)(i & 0xff) | 1, OBJ);
	}
}

START_TEST(test_objects_are_distinct_zeroed_and_span_pages)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	size_t n = 3 * PER_PAGE_MIN;
	void **p = calloc(n, sizeof(*p));

	fill(&s, p, n);
	ck_assert_uint_eq(count(&s, true), n);
	ck_assert_uint_ge(count(&s, false), 3);
	ck_assert_uint_le(count(&s, false), 4);
	/* no object was written over by another */
	for (size_t i = 0; i < n; i++) {
		unsigned char want = (unsigned char)((i & 0xff) | 1);

		for (size_t k = 0; k < OBJ; k++)
			ck_assert_uint_eq(((unsigned char *)p[i])[k], want);
	}
	for (size_t i = 0; i < n; i++)
		slab_free(&s, p[i]);
	ck_assert_uint_eq(count(&s, true), 0);
	/* one empty page is kept against churn, the others went */
	ck_assert_uint_eq(count(&s, false), 1);
	slab_trim(&s);
	ck_assert_uint_eq(count(&s, false), 0);
	free(p);
}
END_TEST

START_TEST(test_a_page_with_one_live_object_stays_the_rest_go)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	size_t n = 4 * PER_PAGE_MIN;
	void **p = calloc(n, sizeof(*p));
	size_t pages;

	fill(&s, p, n);
	pages = count(&s, false);
	/* in reverse, keeping the very first object */
	for (size_t i = n; i-- > 1;)
		slab_free(&s, p[i]);
	ck_assert_uint_eq(count(&s, true), 1);
	/* its page, and one kept empty */
	ck_assert_uint_eq(count(&s, false), 2);
	ck_assert_uint_lt(count(&s, false), pages);
#ifndef FERRY_ASAN
	{
		/* the last page emptied first: kept, its memory dropped; the
		 * third went back to the system */
		unsigned char in_core[SLAB_PAGE / 4096];
		uintptr_t kept = (uintptr_t)p[n - 1] & ~(uintptr_t)(SLAB_PAGE - 1);
		uintptr_t gone = (uintptr_t)p[2 * PER_PAGE_MIN] & ~(uintptr_t)(SLAB_PAGE - 1);

		ck_assert_int_eq(mincore((void *)kept, SLAB_PAGE, in_core), 0);
		for (size_t i = 0; i < sizeof(in_core); i++)
			ck_assert_uint_eq(in_core[i] & 1, 0);
		ck_assert_int_eq(mincore((void *)gone, SLAB_PAGE, in_core), -1);
		ck_assert_int_eq(errno, ENOMEM);
	}
#endif
	for (size_t k = 0; k < OBJ; k++)
		ck_assert_uint_eq(((unsigned char *)p[0])[k], 1);
	slab_free(&s, p[0]);
	ck_assert_uint_eq(count(&s, false), 1);
	slab_trim(&s);
	free(p);
}
END_TEST

START_TEST(test_reuse_hands_out_zeroed_memory)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	void *keep = slab_alloc(&s, OBJ), *a, *b;

	/* a freed object on a page still in use is handed out again, zeroed */
	a = slab_alloc(&s, OBJ);
	memset(a, 0xee, OBJ);
	slab_free(&s, a);
	b = slab_alloc(&s, OBJ);
	ck_assert_ptr_eq(a, b);
	ck_assert(memcmp(b, zeros, OBJ) == 0);
	slab_free(&s, b);
	slab_free(&s, keep);
	/* the kept empty page, its memory given back, serves again */
	ck_assert_uint_eq(count(&s, false), 1);
	a = slab_alloc(&s, OBJ);
	ck_assert(memcmp(a, zeros, OBJ) == 0);
	ck_assert_uint_eq(count(&s, false), 1);
	slab_free(&s, a);
	slab_trim(&s);
}
END_TEST

START_TEST(test_free_object_is_poisoned_under_asan)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	char *a = slab_alloc(&s, OBJ), *b = slab_alloc(&s, OBJ);

	ck_assert(!kept_is_poisoned(a));
	ck_assert(!kept_is_poisoned(a + OBJ - 1));
	slab_free(&s, a);
#ifdef FERRY_ASAN
	ck_assert(kept_is_poisoned(a));
	ck_assert(kept_is_poisoned(a + OBJ - 1));
	/* past what was asked for, inside the rounded-up stride */
	ck_assert(kept_is_poisoned(b + OBJ));
#endif
	slab_free(&s, b);
	slab_trim(&s);
}
END_TEST

START_TEST(test_free_null_is_a_no_op)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;

	slab_free(&s, NULL);
	ck_assert_uint_eq(count(&s, false), 0);
	ck_assert_uint_eq(count(&s, true), 0);
}
END_TEST

START_TEST(test_another_size_on_the_same_slab_aborts)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;

	(void)slab_alloc(&s, OBJ);
	(void)slab_alloc(&s, OBJ + 8);
}
END_TEST

/* Two threads take and give back at once: the counts add up and no
 * object is handed to both. */
static struct slab shared = SLAB_PAGED_INITIALIZER;

static void *
churn(void *arg)
{
	unsigned char tag = (unsigned char)(uintptr_t)arg;
	void *p[300];

	for (int round = 0; round < 200; round++) {
		for (size_t i = 0; i < 300; i++) {
			if ((p[i] = slab_alloc(&shared, OBJ)) == NULL)
				return (void *)1;
			memset(p[i], tag, OBJ);
		}
		for (size_t i = 0; i < 300; i++) {
			for (size_t k = 0; k < OBJ; k++)
				if (((unsigned char *)p[i])[k] != tag)
					return (void *)1;
			slab_free(&shared, p[i]);
		}
	}
	return NULL;
}

/* A connection may be freed by another thread than the one that made it
 * (the main thread at shutdown). */
static void *
free_all(void *arg)
{
	void **p = arg;

	for (size_t i = 0; p[i] != NULL; i++)
		slab_free(&shared, p[i]);
	return NULL;
}

START_TEST(test_another_thread_frees)
{
	size_t n = 2 * PER_PAGE_MIN + 7;
	void **p = calloc(n + 1, sizeof(*p));
	pthread_t t;

	fill(&shared, p, n);
	ck_assert_int_eq(pthread_create(&t, NULL, free_all, p), 0);
	pthread_join(t, NULL);
	ck_assert_uint_eq(count(&shared, true), 0);
	ck_assert_uint_eq(count(&shared, false), 1);
	slab_trim(&shared);
	free(p);
}
END_TEST

START_TEST(test_threads_share_a_slab)
{
	pthread_t t1, t2;
	void *r1, *r2;

	ck_assert_int_eq(pthread_create(&t1, NULL, churn, (void *)(uintptr_t)0x11), 0);
	ck_assert_int_eq(pthread_create(&t2, NULL, churn, (void *)(uintptr_t)0x22), 0);
	pthread_join(t1, &r1);
	pthread_join(t2, &r2);
	ck_assert_ptr_null(r1);
	ck_assert_ptr_null(r2);
	ck_assert_uint_eq(count(&shared, true), 0);
	ck_assert_uint_le(count(&shared, false), 1);
	slab_trim(&shared);
}
END_TEST

#ifndef FERRY_ASAN
/* (ASan reports these itself: the mark is read from poisoned memory) */
START_TEST(test_double_free_aborts)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	void *a = slab_alloc(&s, OBJ), *b = slab_alloc(&s, OBJ);

	(void)b;
	slab_free(&s, a);
	slab_free(&s, a);
}
END_TEST
#endif

START_TEST(test_pointer_inside_an_object_aborts)
{
	static struct slab s = SLAB_PAGED_INITIALIZER;
	char *a = slab_alloc(&s, OBJ);

	slab_free(&s, a + 16);
}
END_TEST

START_TEST(test_direct_slab_is_calloc_and_free)
{
	static struct slab s = { .mu = PTHREAD_MUTEX_INITIALIZER, .direct = true };
	char *a = slab_alloc(&s, OBJ);

	ck_assert_ptr_nonnull(a);
	ck_assert(memcmp(a, zeros, OBJ) == 0);
	ck_assert_uint_eq(count(&s, true), 1);
	ck_assert_uint_eq(count(&s, false), 0);
	slab_free(&s, a);
	ck_assert_uint_eq(count(&s, true), 0);
#ifdef FERRY_ASAN
	/* ASan's quarantine holds it: a stale use is reported */
	ck_assert(kept_is_poisoned(a));
#endif
}
END_TEST

static Suite *
slab_suite(void)
{
	Suite *s = suite_create("slab");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_objects_are_distinct_zeroed_and_span_pages);
	tcase_add_test(tc, test_a_page_with_one_live_object_stays_the_rest_go);
	tcase_add_test(tc, test_reuse_hands_out_zeroed_memory);
	tcase_add_test(tc, test_free_object_is_poisoned_under_asan);
	tcase_add_test(tc, test_free_null_is_a_no_op);
	tcase_add_test_raise_signal(tc, test_another_size_on_the_same_slab_aborts, SIGABRT);
	tcase_add_test(tc, test_threads_share_a_slab);
	tcase_add_test(tc, test_another_thread_frees);
#ifndef FERRY_ASAN
	tcase_add_test_raise_signal(tc, test_double_free_aborts, SIGABRT);
#endif
	tcase_add_test_raise_signal(tc, test_pointer_inside_an_object_aborts, SIGABRT);
	tcase_add_test(tc, test_direct_slab_is_calloc_and_free);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(slab_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
