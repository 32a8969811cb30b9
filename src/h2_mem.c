#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "h2_mem.h"

static void *
wm_malloc(size_t size, void *arg)
{
	(void)arg;
	return malloc(size);
}

static void
wm_free(void *p, void *arg)
{
	(void)arg;
	if (p == NULL)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

static void *
wm_calloc(size_t n, size_t size, void *arg)
{
	(void)arg;
	return calloc(n, size);
}

/* Never realloc itself: it could move the block and free the old copy. */
static void *
wm_realloc(void *p, size_t size, void *arg)
{
	size_t old;
	void *n;

	if (p == NULL)
		return malloc(size);
	if (size == 0) {
		wm_free(p, arg);
		return NULL;
	}
	old = malloc_usable_size(p);
	if (size <= old)
		return p;
	if ((n = malloc(size)) == NULL)
		return NULL;
	memcpy(n, p, old);
	wm_free(p, arg);
	return n;
}

nghttp2_mem *
h2_wiping_mem(void)
{
	/* nghttp2 wants it writable, and reads it only */
	static nghttp2_mem mem = {
		.malloc = wm_malloc,
		.free = wm_free,
		.calloc = wm_calloc,
		.realloc = wm_realloc,
	};

	return &mem;
}
