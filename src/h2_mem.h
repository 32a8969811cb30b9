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
 * H2_MEM_CACHE_MAX bytes a thread). Sanitizer builds keep none: every
 * block goes back to malloc, where ASan watches it.
 */
#ifndef FERRY_H2_MEM_H
#define FERRY_H2_MEM_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#define H2_MEM_CACHE_MAX (256 * 1024)

nghttp2_mem *h2_mem(void);

/* Bytes the calling thread keeps on its free lists. */
size_t h2_mem_cached(void);

/* Gives the calling thread's free lists back to malloc (a worker that
 * ends calls it). */
void h2_mem_thread_end(void);

#endif
