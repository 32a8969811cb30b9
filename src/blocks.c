#include <malloc.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "blocks.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEEP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
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
	size_t n;
};

static _Thread_local struct spares spares;

static _Atomic size_t usable;

/* The usable size of a block: what malloc gives for BLOCKS_SIZE. Every
 * thread computes the same value, so the race to store it is benign. */
static __attribute__((noinline)) size_t
usable_init(void)
{
	void *p = malloc(BLOCKS_SIZE);
	size_t u;

	if (p == NULL)
		return 0;
	u = malloc_usable_size(p);
	free(p);
	usable = u;
	return u;
}

static inline size_t
block_usable(void)
{
	size_t u = usable;

	return u != 0 ? u : usable_init();
}

void *
blocks_get(size_t n)
{
	size_t u;

	if (!KEEP || n < BLOCKS_MIN || n > BLOCKS_SIZE)
		return malloc(n);
	if (spares.n > 0)
		return spares.block[--spares.n];
	/* a request of the usable size itself gets a block of that size */
	u = block_usable();
	return malloc(u != 0 ? u : n);
}

void
blocks_put(void *p)
{
	/* most of what OpenSSL frees is NULL */
	if (p == NULL)
		return;
	if (KEEP && spares.n < BLOCKS_KEEP &&
	    malloc_usable_size(p) == block_usable()) {
		spares.block[spares.n++] = p;
		return;
	}
	free(p);
}

size_t
blocks_kept(void)
{
	return spares.n;
}

void
blocks_thread_end(void)
{
	while (spares.n > 0)
		free(spares.block[--spares.n]);
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
