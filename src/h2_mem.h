/*
 * Memory for ferry's nghttp2 sessions.
 *
 * nghttp2 copies header values into memory of its own (a request's fields
 * when submitted, each decoded field of a peer's head, its HPACK tables
 * and frame buffers) and frees it without a wipe; every block freed
 * through this allocator is zeroed first, so no service key outlives its
 * message there.
 *
 * It allocates about fifteen small blocks per stream. A burst of streams
 * outruns glibc's per-thread cache (seven blocks of a size), and each
 * block then costs a trip through the arena; so blocks of up to 1 KiB are
 * kept, wiped, on free lists of the thread that freed them (at most
 * H2_MEM_CACHE_MAX bytes a thread). ASan builds keep them too, poisoned
 * while kept (poison.h), so ASan watches the paths a release build runs.
 * What a burst left behind goes back: h2_mem_decay, called by the worker
 * every second, frees the kept blocks and streams that no allocation
 * needed since its last call.
 */
#ifndef FERRY_H2_MEM_H
#define FERRY_H2_MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define H2_MEM_CACHE_MAX (1024 * 1024)

nghttp2_mem *h2_mem(void);

/* Bytes the calling thread keeps on its free lists. */
size_t h2_mem_cached(void);

/* A stream of SIZE bytes zeroed up to ZERO_END: a stream's head table is
 * last, and only its first n_headers entries are ever read, so it is left
 * unzeroed. Streams come and go 32 at a time on a connection, each 1 to
 * 2.5 KiB, past glibc's per-thread
 * cache: a thread keeps up to H2_STREAMS_KEEP of each of two sizes (the
 * client's streams and the upstream's), which is no more than the arena
 * would keep after free(); poisoned while kept in ASan builds. */
#define H2_STREAMS_KEEP 256
void *h2_stream_alloc(size_t size, size_t zero_end);
/* P came from h2_stream_alloc(SIZE). */
void h2_stream_free(void *p, size_t size);
/* Streams of SIZE the calling thread keeps. */
size_t h2_streams_kept(size_t size);

/* Gives the calling thread's free lists and streams back to malloc (a
 * worker that ends calls it). */
void h2_mem_thread_end(void);
/* Gives back what the calling thread kept unused since its last call:
 * the fewest blocks kept in between, of each class, and of streams. */
void h2_mem_decay(void);

#endif
