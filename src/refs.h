/*
 * Counted holds on an object shared by the main thread and the workers
 * (runtime.h says who holds what): a hold is taken where the taker
 * already holds one, or on the main thread, and let go anywhere; only the
 * main thread frees, and only what nobody holds, so a last release never
 * races a free.
 */
#ifndef FERRY_REFS_H
#define FERRY_REFS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

static inline void
refs_take(_Atomic uint32_t *r)
{
	atomic_fetch_add_explicit(r, 1, memory_order_relaxed);
}

/* release: the holder's last use happens before the free that reads the
 * count (acquire, refs_none) */
static inline void
refs_drop(_Atomic uint32_t *r)
{
	atomic_fetch_sub_explicit(r, 1, memory_order_release);
}

static inline bool
refs_none(_Atomic uint32_t *r)
{
	return atomic_load_explicit(r, memory_order_acquire) == 0;
}

#endif
