#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "blocks.h"
#include "poison.h"

/* ASan builds keep blocks too, poisoned while kept (poison.h) */
#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#define KEEP 0
#endif
#endif
#if !defined(KEEP) && defined(__GLIBC__)
#define KEEP 1
#endif
#ifndef KEEP
#define KEEP 0
#endif

struct spares {
	void *block[BLOCKS_KEEP];
	size_t n, low;
	void *small[BLOCKS_SMALL_KEEP];
	size_t n_small, low_small;	/* LOW: the fewest kept since blocks_decay */
};

static _Thread_local struct spares spares;

/* The usable sizes of a block of each class: what malloc gives for
 * BLOCKS_SIZE and BLOCKS_SMALL. Every thread computes the same values, so
 * the race to store them is benign. */
static _Atomic size_t usable, usable_small;

static __attribute__((noinline)) void
usable_init(void)
{
	void *p = malloc(BLOCKS_SIZE), *q = malloc(BLOCKS_SMALL);

	if (p != NULL && q != NULL) {
		usable_small = malloc_usable_size(q);
		usable = malloc_usable_size(p);
	}
	free(p);
	free(q);
}

static inline size_t
block_usable(void)
{
	if (usable == 0)
		usable_init();
	return usable;
}

/* P (a block of U usable bytes, or NULL) given for a request of N: only
 * those N are the taker's (poison.h). */
static inline void *
handed_out(void *p, size_t n, size_t u)
{
	if (p != NULL) {
		kept_unpoison(p, n);
		kept_poison((char *)p + n, u - n);
	}
	return p;
}

void *
blocks_get(size_t n)
{
	size_t u;

	if (!KEEP || n < BLOCKS_SMALL || n > BLOCKS_SIZE)
		return malloc(n);
	if (n >= BLOCKS_MIN) {
		if (spares.n > 0) {
			if (--spares.n < spares.low)
				spares.low = spares.n;
			return handed_out(spares.block[spares.n], n, usable);
		}
		/* a request of the usable size itself gets a block of that size;
		 * one taken before the size is known is as long, so that
		 * blocks_put_sized may keep it */
		if ((u = block_usable()) == 0)
			u = BLOCKS_SIZE;
		return handed_out(malloc(u), n, u);
	}
	(void)block_usable();	/* sets both usable sizes */
	u = usable_small;
	if (u == 0 || n > u)
		return malloc(n);
	if (spares.n_small > 0) {
		if (--spares.n_small < spares.low_small)
			spares.low_small = spares.n_small;
		return handed_out(spares.small[spares.n_small], n, u);
	}
	return handed_out(malloc(u), n, u);
}

void
blocks_put(void *p)
{
	size_t u;

	/* most of what OpenSSL frees is NULL */
	if (p == NULL)
		return;
	if (KEEP) {
		u = malloc_usable_size(p);
		if (u == block_usable() && spares.n < BLOCKS_KEEP) {
			kept_poison(p, u);
			spares.block[spares.n++] = p;
			return;
		}
		if (u == usable_small && spares.n_small < BLOCKS_SMALL_KEEP) {
			kept_poison(p, u);
			spares.small[spares.n_small++] = p;
			return;
		}
	}
	free(p);
}

void
blocks_put_sized(void *p, size_t n)
{
	if (p == NULL)
		return;
	/* blocks_get's classes: its own take of N gave a block of that
	 * class's usable size */
	if (KEEP && n >= BLOCKS_MIN && n <= BLOCKS_SIZE && usable != 0 &&
	    spares.n < BLOCKS_KEEP) {
		kept_poison(p, usable);
		spares.block[spares.n++] = p;
		return;
	}
	if (KEEP && n >= BLOCKS_SMALL && n <= usable_small &&
	    spares.n_small < BLOCKS_SMALL_KEEP) {
		kept_poison(p, usable_small);
		spares.small[spares.n_small++] = p;
		return;
	}
	free(p);
}

size_t
blocks_kept(void)
{
	return spares.n;
}

size_t
blocks_small_kept(void)
{
	return spares.n_small;
}

void
blocks_thread_end(void)
{
	while (spares.n > 0)
		free(spares.block[--spares.n]);
	while (spares.n_small > 0)
		free(spares.small[--spares.n_small]);
	spares.low = spares.low_small = 0;
}

void
blocks_stack_decay(void **stack, size_t *n, size_t *low)
{
	size_t drop = *low < *n ? *low : *n;

	for (size_t i = 0; i < drop; i++)
		free(stack[i]);
	memmove(stack, stack + drop, (*n - drop) * sizeof(*stack));
	*n -= drop;
	*low = *n;
}

void
blocks_decay(void)
{
	blocks_stack_decay(spares.block, &spares.n, &spares.low);
	blocks_stack_decay(spares.small, &spares.n_small, &spares.low_small);
}

static void *
ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return n == 0 ? NULL : blocks_get(n);	/* as OpenSSL's own does */
}

/* as OpenSSL's own does; a block is a malloc block, realloc takes it */
static void *
ossl_realloc(void *p, size_t n, const char *file, int line)
{
	if (p == NULL)
		return ossl_malloc(n, file, line);
	if (n == 0) {
		blocks_put(p);
		return NULL;
	}
	return realloc(p, n);
}

static void
ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	blocks_put(p);
}

bool
blocks_hook_openssl(void)
{
	return KEEP && CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1;
}
