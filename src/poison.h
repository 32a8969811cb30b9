/*
 * Memory a cache keeps for reuse (blocks.c, h2_mem.c) is poisoned while
 * it is kept, and what a taker asked for is unpoisoned when it is handed
 * out. So an ASan build runs the same caching paths as a release build,
 * and a use of a kept block, or past what was asked for, is reported as
 * ASan reports a use after free or an overflow (ASan's own quarantine
 * never sees kept blocks). Without ASan these are no-ops.
 *
 * Only memory that owns nothing is poisoned: LeakSanitizer does not follow
 * pointers kept in poisoned memory, so a kept object that still owns
 * buffers (h1_down.c's spare request states) would make them look leaked.
 * For the same reason it does not see the chain of a thread's kept
 * blocks (each link is in the poisoned block before it): a thread gives
 * its spares back before it ends, or before a leak check (worker.c,
 * main.c, the fuzz harness).
 */
#ifndef FERRY_POISON_H
#define FERRY_POISON_H

#include <stdbool.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define FERRY_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FERRY_ASAN 1
#endif
#endif

#ifdef FERRY_ASAN
#include <sanitizer/asan_interface.h>

static inline void
kept_poison(const volatile void *p, size_t n)
{
	ASAN_POISON_MEMORY_REGION(p, n);
}

static inline void
kept_unpoison(const volatile void *p, size_t n)
{
	ASAN_UNPOISON_MEMORY_REGION(p, n);
}

/* For tests: whether the byte at P is poisoned (always false without ASan). */
static inline bool
kept_is_poisoned(const volatile void *p)
{
	return __asan_address_is_poisoned(p) != 0;
}
#else
static inline void
kept_poison(const volatile void *p, size_t n)
{
	(void)p;
	(void)n;
}

static inline void
kept_unpoison(const volatile void *p, size_t n)
{
	(void)p;
	(void)n;
}

static inline bool
kept_is_poisoned(const volatile void *p)
{
	(void)p;
	return false;
}
#endif

#endif
