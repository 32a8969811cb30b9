/*
 * Pages of objects of one size, for what every connection holds for its
 * whole life (struct conn, struct client).
 *
 * With malloc those objects sit between the small blocks libevent keeps
 * for every descriptor it has seen (about 50 bytes each, never freed), so
 * after a burst of connections closed, no page of the heap came free and
 * RSS stayed where the burst left it (9,000 connections: 12.7 MiB, not
 * the 8.5 it started from). Here they live in pages of their own, and a
 * page whose objects are all gone goes back to the system.
 *
 * One slab serves every thread (a mutex: a connection allocates once,
 * not per request). An object is zeroed when handed out. A free that is
 * not of a live object of the slab (a double free) aborts rather than
 * hand one object to two connections.
 *
 * ASan builds give connections plain calloc/free (a "direct" slab): ASan's
 * quarantine then catches a stale pointer to a freed connection, which a
 * reused slot would hide, and LeakSanitizer reports a connection never
 * freed, which a reachable page would hide. The page logic is still run
 * under ASan by its unit tests (SLAB_PAGED_INITIALIZER), with pages from
 * malloc and free objects poisoned (poison.h).
 */
#ifndef FERRY_SLAB_H
#define FERRY_SLAB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "poison.h"

#define SLAB_PAGE	(64 * 1024)

struct slab_page;

struct slab {
	pthread_mutex_t mu;
	size_t size;			/* of an object, set by the first slab_alloc */
	struct slab_page *partial;	/* pages with a free object (a full one is
					 * found from its objects) */
	struct slab_page *empty;	/* at most one, kept against churn */
	size_t pages;			/* all of them, the empty one too */
	size_t live;			/* objects handed out */
	bool direct;			/* calloc/free, no pages (ASan builds) */
};

#define SLAB_PAGED_INITIALIZER { .mu = PTHREAD_MUTEX_INITIALIZER }
#ifdef FERRY_ASAN
#define SLAB_INITIALIZER { .mu = PTHREAD_MUTEX_INITIALIZER, .direct = true }
#else
#define SLAB_INITIALIZER SLAB_PAGED_INITIALIZER
#endif

/* A zeroed object of SIZE bytes (every call on S must pass the same), or
 * NULL when memory is short. */
void *slab_alloc(struct slab *s, size_t size);
/* Gives P (from slab_alloc on S, or NULL) back. */
void slab_free(struct slab *s, void *p);
/* Pages S holds (the kept empty one too), and objects handed out. */
void slab_count(struct slab *s, size_t *pages, size_t *live);
/* Gives S's empty page back too (a leak check, a test). */
void slab_trim(struct slab *s);

#endif
