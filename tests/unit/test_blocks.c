/*
 * Unit tests for src/blocks.c: spare 16 KiB blocks kept per thread, for
 * ferry's read buffers and OpenSSL's record buffers.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <openssl/crypto.h>

#include "blocks.h"
#include "buf.h"
#include "poison.h"
#include "sbuf.h"

/* A build that keeps no block (MSan): each goes back to malloc. */
static bool
keeps_blocks(void)
{
	blocks_thread_end();
	blocks_put(blocks_get(BLOCKS_MIN));
	return blocks_kept() > 0;
}

/* KEEP + 2 blocks of SIZE given back: KEEP are kept (KEPT counts them),
 * and none after the thread's end. */
static void
fill_past_bound(size_t size, size_t keep, size_t (*kept)(void))
{
	void *p[BLOCKS_SMALL_KEEP + 2];

	ck_assert_uint_le(keep, BLOCKS_SMALL_KEEP);
	blocks_thread_end();
	for (size_t i = 0; i < keep + 2; i++)
		p[i] = blocks_get(size);
	for (size_t i = 0; i < keep + 2; i++)
		blocks_put(p[i]);
	ck_assert_uint_eq(kept(), keep);
	blocks_thread_end();
	ck_assert_uint_eq(kept(), 0);
}

START_TEST(test_block_is_kept_and_reused)
{
	char *p, *q;

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	ck_assert_uint_eq(blocks_kept(), 0);
	p = blocks_get(BLOCKS_MIN);
	ck_assert_ptr_nonnull(p);
	/* every block serves the largest request of the class */
	ck_assert_uint_ge(malloc_usable_size(p), BLOCKS_SIZE);
	memset(p, 0x5a, BLOCKS_MIN);	/* the taker's part (poison.h) */
	blocks_put(p);
	ck_assert_uint_eq(blocks_kept(), 1);
	q = blocks_get(BLOCKS_SIZE);
	ck_assert_ptr_eq(q, p);
	memset(q, 0x5a, BLOCKS_SIZE);
	ck_assert_uint_eq(blocks_kept(), 0);
	blocks_put(q);
	blocks_thread_end();
	ck_assert_uint_eq(blocks_kept(), 0);
}
END_TEST

START_TEST(test_other_sizes_go_to_malloc)
{
	void *small, *big;

	blocks_thread_end();
	small = blocks_get(BLOCKS_MIN - 1);
	/* past the class's usable size (malloc rounds BLOCKS_SIZE up) */
	big = blocks_get(BLOCKS_SIZE + 64);
	ck_assert_ptr_nonnull(small);
	ck_assert_ptr_nonnull(big);
	ck_assert_uint_lt(malloc_usable_size(small), malloc_usable_size(big));
	blocks_put(small);
	blocks_put(big);
	ck_assert_uint_eq(blocks_kept(), 0);
	blocks_put(NULL);
	ck_assert_uint_eq(blocks_kept(), 0);
}
END_TEST

/* A put that names the size keeps what blocks_get's classes gave, and no
 * other block; an sbuf grown by realloc to a class's size is no block of
 * it (kept, it would be handed out as BLOCKS_SIZE long). */
START_TEST(test_sized_put_follows_the_classes)
{
	static char kib[1024];
	struct sbuf s = { 0 };
	void *p;

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	p = blocks_get(BLOCKS_MIN);
	blocks_put_sized(p, BLOCKS_MIN);
	ck_assert_uint_eq(blocks_kept(), 1);
	ck_assert_ptr_eq(blocks_get(BLOCKS_SIZE), p);
	blocks_put_sized(p, BLOCKS_SIZE);
	ck_assert_uint_eq(blocks_kept(), 1);
	p = blocks_get(BLOCKS_SMALL);
	blocks_put_sized(p, BLOCKS_SMALL);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	blocks_put_sized(blocks_get(2048), 2048);
	blocks_put_sized(blocks_get(BLOCKS_SIZE + 64), BLOCKS_SIZE + 64);
	ck_assert_uint_eq(blocks_kept(), 1);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	blocks_thread_end();
	memset(kib, 'k', sizeof(kib));
	for (int i = 0; i < 16; i++)
		sbuf_add(&s, kib, sizeof(kib));
	ck_assert_uint_eq(s.cap, BLOCKS_MIN);	/* 1024, then realloc'd */
	sbuf_free(&s);
	ck_assert_uint_eq(blocks_kept(), 0);
	ck_assert_uint_eq(blocks_small_kept(), 0);
	blocks_thread_end();
}
END_TEST

START_TEST(test_kept_blocks_bounded)
{
	if (!keeps_blocks())
		return;
	fill_past_bound(BLOCKS_MIN, BLOCKS_KEEP, blocks_kept);
}
END_TEST

/* A read buffer's first block comes from the spares and goes back to them;
 * one that grows past the class leaves its block behind. */
START_TEST(test_buf_uses_blocks)
{
	struct buf b = { 0 };
	char *first;

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	ck_assert_uint_ge(buf_prepare(&b, 16384, 1 << 20), 16384);
	first = b.data;
	memset(b.data, 'x', 100);
	b.end = 100;
	ck_assert_uint_ge(buf_prepare(&b, 32768, 1 << 20), 32768);
	ck_assert_ptr_ne(b.data, first);
	ck_assert_int_eq(b.data[99], 'x');
	ck_assert_uint_eq(blocks_kept(), 1);	/* the first block, back */
	buf_free(&b);
	ck_assert_uint_eq(blocks_kept(), 1);	/* 64 KiB is no block */
	ck_assert_uint_ge(buf_prepare(&b, 16384, 1 << 20), 16384);
	ck_assert_ptr_eq(b.data, first);
	buf_free(&b);
	blocks_thread_end();
}
END_TEST

/* The small class: an sbuf's first block, kept apart from the 16 KiB
 * ones, up to BLOCKS_SMALL_KEEP; one that grows leaves it to realloc. */
START_TEST(test_small_blocks)
{
	void *blk;
	struct sbuf s = { 0 };
	char *first;

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	blk = blocks_get(BLOCKS_SMALL);
	ck_assert_ptr_nonnull(blk);
	memset(blk, 1, BLOCKS_SMALL);
	blocks_put(blk);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	ck_assert_uint_eq(blocks_kept(), 0);
	ck_assert_ptr_eq(blocks_get(BLOCKS_SMALL), blk);
	blocks_put(blk);
	/* sbuf's first block is one */
	sbuf_add(&s, "abc", 3);
	ck_assert_ptr_eq(s.p, blk);
	first = s.p;
	sbuf_free(&s);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	sbuf_add(&s, "abc", 3);
	ck_assert_ptr_eq(s.p, first);
	for (int i = 0; i < 2000; i++)
		sbuf_add(&s, "0123456789", 10);
	ck_assert(!s.oom);
	ck_assert_int_eq(s.p[3], '0');
	ck_assert_int_eq(s.p[s.len - 1], '9');
	sbuf_free(&s);
	/* a block of another usable size is none of the class (malloc
	 * rounds to 16 bytes) */
	blk = blocks_get(BLOCKS_SMALL - 16);
	blocks_put(blk);
	ck_assert_uint_eq(blocks_small_kept(), 0);
	fill_past_bound(BLOCKS_SMALL, BLOCKS_SMALL_KEEP, blocks_small_kept);
}
END_TEST

/* blocks_decay frees the spares no take needed since its last call, of
 * both classes; what a steady load takes stays. */
START_TEST(test_decay)
{
	void *big[BLOCKS_KEEP], *small[20];

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	for (int i = 0; i < BLOCKS_KEEP; i++)
		big[i] = blocks_get(BLOCKS_MIN);
	for (int i = 0; i < 20; i++)
		small[i] = blocks_get(BLOCKS_SMALL);
	for (int i = 0; i < BLOCKS_KEEP; i++)
		blocks_put(big[i]);
	for (int i = 0; i < 20; i++)
		blocks_put(small[i]);
	ck_assert_uint_eq(blocks_kept(), BLOCKS_KEEP);
	ck_assert_uint_eq(blocks_small_kept(), 20);
	blocks_decay();		/* the first call only sets the mark */
	ck_assert_uint_eq(blocks_kept(), BLOCKS_KEEP);
	ck_assert_uint_eq(blocks_small_kept(), 20);
	/* two big and five small in use at once, twice over */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 2; i++)
			big[i] = blocks_get(BLOCKS_MIN);
		for (int i = 0; i < 5; i++)
			small[i] = blocks_get(BLOCKS_SMALL);
		for (int i = 0; i < 2; i++)
			blocks_put(big[i]);
		for (int i = 0; i < 5; i++)
			blocks_put(small[i]);
	}
	blocks_decay();
	ck_assert_uint_eq(blocks_kept(), 2);
	ck_assert_uint_eq(blocks_small_kept(), 5);
	/* the warm ones stayed: the next takes are served from them */
	big[0] = blocks_get(BLOCKS_MIN);
	blocks_put(big[0]);
	ck_assert_uint_eq(blocks_kept(), 2);
	blocks_decay();
	ck_assert_uint_eq(blocks_kept(), 1);
	ck_assert_uint_eq(blocks_small_kept(), 0);
	blocks_decay();
	ck_assert_uint_eq(blocks_kept(), 0);
	blocks_thread_end();
}
END_TEST

/* A stream's body buffer starts with a block of the small class, kept
 * and reused, however few bytes come first. */
START_TEST(test_buf_first_block_small_class)
{
	struct buf b = { 0 };
	char *first;

	if (!keeps_blocks())
		return;
	blocks_thread_end();
	ck_assert(buf_append(&b, "0123456789", 10, 1 << 20));
	ck_assert_uint_ge(b.cap, BLOCKS_SMALL);
	first = b.data;
	buf_free(&b);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	ck_assert(buf_append(&b, "x", 1, 1 << 20));
	ck_assert_ptr_eq(b.data, first);
	buf_free(&b);
	/* a bound below the class still holds */
	ck_assert(buf_append(&b, "0123456789", 10, 64));
	ck_assert_uint_le(b.cap, 64);
	ck_assert(!buf_append(&b, "0123456789012345678901234567890123456789012345678901234567890", 61, 64));
	buf_free(&b);
	blocks_thread_end();
}
END_TEST

/* OpenSSL's record buffers (16 KiB and a header) come from the spares
 * once hooked; its other allocations, and realloc, behave as its own. */
START_TEST(test_openssl_hook)
{
	void *rec, *again, *small, *grown;

	/* each test runs in a fresh child: OpenSSL has allocated nothing */
	if (!blocks_hook_openssl()) {
		ck_assert(!keeps_blocks());	/* only MSan builds refuse */
		return;
	}
	blocks_thread_end();
	rec = OPENSSL_malloc(16712);
	ck_assert_ptr_nonnull(rec);
	memset(rec, 1, 16712);
	OPENSSL_free(rec);
	ck_assert_uint_eq(blocks_kept(), 1);
	again = OPENSSL_malloc(16584);
	ck_assert_ptr_eq(again, rec);
	OPENSSL_clear_free(again, 16584);
	ck_assert_uint_eq(blocks_kept(), 1);
	ck_assert_ptr_null(OPENSSL_malloc(0));
	small = OPENSSL_zalloc(24);
	ck_assert_ptr_nonnull(small);
	ck_assert_int_eq(((char *)small)[23], 0);
	grown = OPENSSL_realloc(small, 100000);
	ck_assert_ptr_nonnull(grown);
	ck_assert_int_eq(((char *)grown)[23], 0);
	ck_assert_ptr_null(OPENSSL_realloc(grown, 0));
	OPENSSL_free(NULL);
	ck_assert_uint_eq(blocks_kept(), 1);
	blocks_thread_end();
}
END_TEST

/* A second hook is refused once OpenSSL has allocated: its own functions
 * stay, and nothing mixes. */
START_TEST(test_openssl_hook_too_late)
{
	OPENSSL_free(OPENSSL_malloc(32));
	ck_assert(!blocks_hook_openssl());
}
END_TEST

#ifdef FERRY_ASAN
/* ASan builds keep blocks as release builds do, poisoned while kept: ASan
 * sees a use of a kept block, or past what its taker asked for. */
START_TEST(test_kept_blocks_poisoned)
{
	char *p, *q;

	blocks_thread_end();
	p = blocks_get(BLOCKS_MIN);
	ck_assert(!kept_is_poisoned(p + BLOCKS_MIN - 1));
	ck_assert(kept_is_poisoned(p + BLOCKS_MIN));
	blocks_put(p);
	ck_assert_uint_eq(blocks_kept(), 1);
	ck_assert(kept_is_poisoned(p));
	ck_assert(kept_is_poisoned(p + BLOCKS_MIN - 1));
	q = blocks_get(BLOCKS_SIZE);
	ck_assert_ptr_eq(q, p);
	ck_assert(!kept_is_poisoned(q + BLOCKS_SIZE - 1));
	blocks_put(q);
	p = blocks_get(BLOCKS_SMALL);
	blocks_put(p);
	ck_assert_uint_eq(blocks_small_kept(), 1);
	ck_assert(kept_is_poisoned(p));
	blocks_thread_end();
}
END_TEST
#endif

static Suite *
blocks_suite(void)
{
	Suite *s = suite_create("blocks");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_block_is_kept_and_reused);
	tcase_add_test(tc, test_other_sizes_go_to_malloc);
	tcase_add_test(tc, test_kept_blocks_bounded);
	tcase_add_test(tc, test_sized_put_follows_the_classes);
	tcase_add_test(tc, test_buf_uses_blocks);
	tcase_add_test(tc, test_small_blocks);
	tcase_add_test(tc, test_decay);
	tcase_add_test(tc, test_buf_first_block_small_class);
	tcase_add_test(tc, test_openssl_hook);
	tcase_add_test(tc, test_openssl_hook_too_late);
#ifdef FERRY_ASAN
	tcase_add_test(tc, test_kept_blocks_poisoned);
#endif
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(blocks_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
