/*
 * State that several workers write goes on cache lines of its own: a line
 * two CPUs take turns writing moves between them at every write, and on
 * the request path those round trips cost more than everything else the
 * shared policy state does.
 */
#ifndef FERRY_CACHELINE_H
#define FERRY_CACHELINE_H

#include <stdlib.h>
#include <string.h>

#define CACHE_LINE	64

/* Zeroed memory for SIZE bytes starting on a line (and a whole number of
 * lines, so nothing else is placed on its last one); free() frees it. */
static inline void *
cacheline_calloc(size_t size)
{
	size_t n = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
	void *p;

	if (n < size || (p = aligned_alloc(CACHE_LINE, n)) == NULL)
		return NULL;
	return memset(p, 0, n);
}

#endif
