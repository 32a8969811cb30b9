/*
 * Spare 16 KiB blocks, kept per thread.
 *
 * A proxied request takes four blocks of about 16 KiB and gives them back
 * before it ends: the read buffers of both connections (buf.h) and
 * OpenSSL's record buffers of the upstream connection, which pool_checkin
 * releases so that an idle connection holds none. Blocks that size miss
 * glibc's per-thread cache and cost a trip through the arena each (bin
 * search, split, coalesce); a thread keeps up to BLOCKS_KEEP of them
 * instead, which is no more than the arena would keep after free().
 *
 * HTTP/2 adds a second size: a client's stream takes head text buffers
 * (sbuf.h) of 1 KiB by the dozen, 32 streams a connection at once, which
 * outruns glibc's cache of seven blocks a size; a thread keeps up to
 * BLOCKS_SMALL_KEEP of those.
 *
 * A block is an ordinary malloc block (free() and realloc() take it) of
 * one usable size per class; any block of that usable size given back is
 * kept. ASan builds keep them too, poisoned while kept (poison.h), so ASan
 * watches the paths a release build runs.
 *
 * What a burst left behind goes back: blocks_decay, called by the worker
 * every second, frees the spares that no take needed since its last call.
 */
#ifndef FERRY_BLOCKS_H
#define FERRY_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>

#define BLOCKS_MIN	16384			/* smallest request served */
#define BLOCKS_SIZE	(16384 + 512)		/* and largest: a TLS record buffer */
#define BLOCKS_KEEP	8			/* per thread */
#define BLOCKS_SMALL	1024			/* an sbuf's first block */
#define BLOCKS_SMALL_KEEP 1024			/* per thread */

/* malloc(N), from the thread's spares when N is in a class. */
void *blocks_get(size_t n);
/* free(P), kept when P is a block of a class and there is room. */
void blocks_put(void *p);
/* The same for P from blocks_get(N) and never realloc'd: N says its
 * class, so P's own memory (malloc's size word) is not read, a cache miss
 * when P has gone cold. */
void blocks_put_sized(void *p, size_t n);
/* Blocks the calling thread keeps: 16 KiB ones, and small ones. */
size_t blocks_kept(void);
size_t blocks_small_kept(void);
/* Gives the calling thread's spares back to malloc (a worker that ends
 * calls it). */
void blocks_thread_end(void);
/* Gives back the calling thread's spares that sat unused since its last
 * call: the fewest kept in between, of each class. */
void blocks_decay(void);
/* A stack of N kept blocks (malloc's), taken from the top, that held no
 * fewer than LOW since the last call: its bottom LOW were not taken and
 * are freed (the top ones are the warmest), the rest move down, and LOW
 * starts again at N. */
void blocks_stack_decay(void **stack, size_t *n, size_t *low);
/* Routes OpenSSL's allocations through here. Only before OpenSSL's first
 * allocation; false if too late (or in an MSan build). */
bool blocks_hook_openssl(void);

#endif
