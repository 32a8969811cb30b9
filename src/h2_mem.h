/*
 * Memory for the nghttp2 sessions whose headers carry service keys.
 * nghttp2 copies header values into memory of its own (a request's fields
 * when submitted, each decoded field of a peer's head, its HPACK tables
 * and frame buffers) and frees it without a wipe; sessions made with
 * this allocator zero every block they free.
 */
#ifndef FERRY_H2_MEM_H
#define FERRY_H2_MEM_H

#include <nghttp2/nghttp2.h>

nghttp2_mem *h2_wiping_mem(void);

#endif
