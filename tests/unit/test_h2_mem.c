/*
 * Unit tests for src/h2_mem.c: nghttp2's allocator (blocks wiped when
 * freed; small ones kept per thread, within a bound).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "h2_mem.h"
#include "poison.h"

static nghttp2_mem *mem;

static void
setup(void)
{
	mem = h2_mem();
}

static bool
all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* A build that keeps no block (MSan): each goes back to malloc. */
static bool
keeps_blocks(void)
{
	void *p = mem->malloc(16, NULL);

	mem->free(p, NULL);
	return h2_mem_cached() > 0;
}

START_TEST(test_freed_block_is_wiped_and_reused)
{
	unsigned char *p, *q;

	if (!keeps_blocks())
		return;
	h2_mem_thread_end();
	p = mem->malloc(48, NULL);
	memset(p, 0xAA, 48);
	mem->free(p, NULL);
	ck_assert_uint_eq(h2_mem_cached(), 48);
	q = mem->malloc(40, NULL);	/* the same 48-byte class */
	ck_assert_ptr_eq(q, p);
	kept_unpoison(q, 48);	/* an ASan build poisons past the 40 asked for */
	ck_assert(all_zero(q, 48));
	ck_assert_uint_eq(h2_mem_cached(), 0);
	mem->free(q, NULL);
	h2_mem_thread_end();
	ck_assert_uint_eq(h2_mem_cached(), 0);
}
END_TEST

START_TEST(test_calloc_zero_from_kept_block)
{
	unsigned char *p, *q;

	p = mem->malloc(100, NULL);
	memset(p, 0x55, 100);
	mem->free(p, NULL);
	q = mem->calloc(4, 25, NULL);
	ck_assert_ptr_nonnull(q);
	ck_assert(all_zero(q, 100));
	mem->free(q, NULL);
	ck_assert_ptr_null(mem->calloc(SIZE_MAX / 2, 3, NULL));
	ck_assert_ptr_null(mem->malloc(SIZE_MAX - 8, NULL));
	h2_mem_thread_end();
}
END_TEST

START_TEST(test_kept_bytes_bounded)
{
	enum { N = 2 * H2_MEM_CACHE_MAX / 1024 };
	void **blocks = calloc(N, sizeof(*blocks));

	for (int i = 0; i < N; i++) {
		blocks[i] = mem->malloc(1000 + (size_t)(i % 24), NULL);
		ck_assert_ptr_nonnull(blocks[i]);
		memset(blocks[i], i, 1000);
	}
	for (int i = 0; i < N; i++)
		mem->free(blocks[i], NULL);
	ck_assert_uint_le(h2_mem_cached(), H2_MEM_CACHE_MAX);
	/* larger blocks go back at once */
	h2_mem_thread_end();
	mem->free(mem->malloc(1025, NULL), NULL);
	mem->free(mem->malloc(70000, NULL), NULL);
	ck_assert_uint_eq(h2_mem_cached(), 0);
	free(blocks);
}
END_TEST

START_TEST(test_realloc)
{
	unsigned char *p = mem->realloc(NULL, 10, NULL), *q;

	ck_assert_ptr_nonnull(p);
	memcpy(p, "0123456789", 10);
	q = mem->realloc(p, 12, NULL);
	ck_assert_ptr_nonnull(q);
	if (keeps_blocks())
		ck_assert_ptr_eq(q, p);	/* fits the 16-byte block it has */
	ck_assert(memcmp(q, "0123456789", 10) == 0);
	p = mem->realloc(q, 5000, NULL);	/* moves, keeps the bytes */
	ck_assert_ptr_nonnull(p);
	ck_assert(memcmp(p, "0123456789", 10) == 0);
	p[4999] = 'x';
	ck_assert_ptr_null(mem->realloc(p, 0, NULL));	/* frees */
	mem->free(NULL, NULL);
	h2_mem_thread_end();
}
END_TEST

/* Streams of two sizes are kept apart, up to H2_STREAMS_KEEP each; a
 * kept one comes back zeroed up to ZERO_END; a third size is not kept. */
START_TEST(test_streams_kept_per_size)
{
	enum { DOWN = 4400, UP = 4000, OTHER = 5000, ZERO_END = 1000 };
	unsigned char *p, *q, *many[H2_STREAMS_KEEP + 2];

	h2_mem_thread_end();
	p = h2_stream_alloc(DOWN, ZERO_END);
	ck_assert_ptr_nonnull(p);
	ck_assert(all_zero(p, ZERO_END));
	memset(p, 0xAA, DOWN);
	h2_stream_free(p, DOWN);
	if (h2_streams_kept(DOWN) == 0)
		return;		/* an MSan build: nothing is kept */
	ck_assert_uint_eq(h2_streams_kept(DOWN), 1);
	ck_assert_uint_eq(h2_streams_kept(UP), 0);
	q = h2_stream_alloc(UP, ZERO_END);	/* not a DOWN one */
	ck_assert_ptr_ne(q, p);
	h2_stream_free(q, UP);
	ck_assert_uint_eq(h2_streams_kept(UP), 1);
	q = h2_stream_alloc(DOWN, ZERO_END);
	ck_assert_ptr_eq(q, p);
	ck_assert(all_zero(q, ZERO_END));
	ck_assert_int_eq(q[ZERO_END], 0xAA);	/* past ZERO_END: left as it was */
	h2_stream_free(q, DOWN);
	h2_stream_free(h2_stream_alloc(OTHER, 0), OTHER);
	ck_assert_uint_eq(h2_streams_kept(OTHER), 0);

	for (size_t i = 0; i < H2_STREAMS_KEEP + 2; i++)
		many[i] = h2_stream_alloc(DOWN, 0);
	ck_assert_uint_eq(h2_streams_kept(DOWN), 0);
	for (size_t i = 0; i < H2_STREAMS_KEEP + 2; i++)
		h2_stream_free(many[i], DOWN);
	ck_assert_uint_eq(h2_streams_kept(DOWN), H2_STREAMS_KEEP);
	h2_stream_free(NULL, DOWN);
	ck_assert_uint_eq(h2_streams_kept(DOWN), H2_STREAMS_KEEP);
	h2_mem_thread_end();
	ck_assert_uint_eq(h2_streams_kept(DOWN), 0);
	ck_assert_uint_eq(h2_streams_kept(UP), 0);
}
END_TEST

/* h2_mem_decay frees what no allocation took since its last call: the
 * fewest kept in between, per class and per stream size; what a steady
 * load keeps taking stays. */
START_TEST(test_decay)
{
	enum { N = 40, SIZE = 100, DOWN = 4400 };
	void *b[N], *st[N];

	if (!keeps_blocks())
		return;
	h2_mem_thread_end();
	for (int i = 0; i < N; i++) {
		b[i] = mem->malloc(SIZE, NULL);
		st[i] = h2_stream_alloc(DOWN, 0);
	}
	for (int i = 0; i < N; i++) {
		mem->free(b[i], NULL);
		h2_stream_free(st[i], DOWN);
	}
	ck_assert_uint_eq(h2_mem_cached(), N * 112);
	ck_assert_uint_eq(h2_streams_kept(DOWN), N);
	/* the first call sees no interval yet: the mark starts here */
	h2_mem_decay();
	ck_assert_uint_eq(h2_mem_cached(), N * 112);
	ck_assert_uint_eq(h2_streams_kept(DOWN), N);
	/* a load that takes 10 at a time: those 10 stay, 30 go */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 10; i++) {
			b[i] = mem->malloc(SIZE, NULL);
			st[i] = h2_stream_alloc(DOWN, 0);
		}
		for (int i = 0; i < 10; i++) {
			mem->free(b[i], NULL);
			h2_stream_free(st[i], DOWN);
		}
	}
	h2_mem_decay();
	ck_assert_uint_eq(h2_mem_cached(), 10 * 112);
	ck_assert_uint_eq(h2_streams_kept(DOWN), 10);
	/* still in use: reused, not freed, and still zeroed when taken */
	b[0] = mem->calloc(1, SIZE, NULL);
	ck_assert(all_zero(b[0], SIZE));
	mem->free(b[0], NULL);
	/* a second that took one block and no stream: one block stays */
	h2_mem_decay();
	ck_assert_uint_eq(h2_mem_cached(), 112);
	ck_assert_uint_eq(h2_streams_kept(DOWN), 0);
	/* a quiet second: the rest goes */
	h2_mem_decay();
	ck_assert_uint_eq(h2_mem_cached(), 0);
	h2_mem_thread_end();
}
END_TEST

#ifdef FERRY_ASAN
/* ASan builds keep blocks and streams as release builds do, poisoned
 * while kept: ASan sees a use of one, or past what its taker asked for. */
START_TEST(test_kept_poisoned)
{
	unsigned char *p, *q;

	h2_mem_thread_end();
	p = mem->malloc(40, NULL);		/* a 48-byte block */
	ck_assert(!kept_is_poisoned(p + 39));
	ck_assert(kept_is_poisoned(p + 40));
	mem->free(p, NULL);
	ck_assert(kept_is_poisoned(p));
	q = mem->realloc(NULL, 20, NULL);	/* the 32-byte class */
	q = mem->realloc(q, 30, NULL);		/* grows in place */
	ck_assert(!kept_is_poisoned(q + 29));
	ck_assert(kept_is_poisoned(q + 30));
	mem->free(q, NULL);
	p = h2_stream_alloc(4400, 100);
	h2_stream_free(p, 4400);
	ck_assert(kept_is_poisoned(p));
	ck_assert(kept_is_poisoned(p + 4399));
	q = h2_stream_alloc(4400, 100);
	ck_assert_ptr_eq(q, p);
	ck_assert(!kept_is_poisoned(q + 4399));
	h2_stream_free(q, 4400);
	h2_mem_thread_end();
}
END_TEST
#endif

static Suite *
h2_mem_suite(void)
{
	Suite *s = suite_create("h2_mem");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, test_freed_block_is_wiped_and_reused);
	tcase_add_test(tc, test_calloc_zero_from_kept_block);
	tcase_add_test(tc, test_kept_bytes_bounded);
	tcase_add_test(tc, test_realloc);
	tcase_add_test(tc, test_streams_kept_per_size);
	tcase_add_test(tc, test_decay);
#ifdef FERRY_ASAN
	tcase_add_test(tc, test_kept_poisoned);
#endif
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(h2_mem_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
