/*
 * A flat input buffer: bytes [start, end) received and not yet consumed.
 * Parsers keep offsets relative to start, so compacting (moving the live
 * bytes to the front) never invalidates them.
 */
#ifndef FERRY_BUF_H
#define FERRY_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

struct buf {
	char *data;
	size_t start, end, cap;
};

static inline size_t
buf_len(const struct buf *b)
{
	return b->end - b->start;
}

static inline char *
buf_head(const struct buf *b)
{
	return b->data + b->start;
}

static inline void
buf_consume(struct buf *b, size_t n)
{
	b->start += n;
	if (b->start == b->end)
		b->start = b->end = 0;
}

/* Room for at least MIN more bytes at the end, growing up to MAX total.
 * Returns the free space (0 when MAX is reached or memory is short).
 * Input may hold a service key not yet checked (a head still arriving):
 * bytes moved away from are zeroed, and no old block is freed unwiped. */
static inline size_t
buf_prepare(struct buf *b, size_t min, size_t max)
{
	if (b->cap - b->end >= min)
		return b->cap - b->end;
	if (b->start > 0) {
		size_t len = b->end - b->start;
		/* the moved bytes' old place that the move did not cover */
		size_t stale = b->start > len ? b->start : len;

		memmove(b->data, b->data + b->start, len);
		explicit_bzero(b->data + stale, b->end - stale);
		b->end = len;
		b->start = 0;
		if (b->cap - b->end >= min)
			return b->cap - b->end;
	}
	if (b->cap < max) {
		/* a first block of at least BLOCKS_SMALL where MAX allows: a
		 * stream's body buffers come and go by the dozen, and a
		 * thread keeps that size (blocks.h), not a 64-byte one */
		size_t ncap = b->cap ? b->cap * 2 :
		    min < BLOCKS_SMALL && max >= BLOCKS_SMALL ? BLOCKS_SMALL : min;
		char *n;

		/* a 16 KiB block is BLOCKS_SIZE long anyway: with all of
		 * it, a 16 KiB record and the next one's head fit without
		 * a second block, a copy and a wipe */
		if (b->cap == 0 && ncap >= BLOCKS_MIN && ncap < BLOCKS_SIZE &&
		    max >= BLOCKS_SIZE)
			ncap = BLOCKS_SIZE;

		while (ncap - b->end < min && ncap < max)
			ncap *= 2;
		if (ncap > max)
			ncap = max;
		if ((n = blocks_get(ncap)) == NULL)
			return b->cap - b->end;
		if (b->end > 0) {
			memcpy(n, b->data, b->end);
			explicit_bzero(b->data, b->end);
		}
		blocks_put_sized(b->data, b->cap);
		b->data = n;
		b->cap = ncap;
	}
	return b->cap - b->end;
}

/* Appends N bytes at P; false when that would pass MAX or memory is short. */
static inline bool
buf_append(struct buf *b, const void *p, size_t n, size_t max)
{
	if (n == 0)
		return true;
	if (buf_len(b) + n > max || buf_prepare(b, n, max) < n)
		return false;
	memcpy(b->data + b->end, p, n);
	b->end += n;
	return true;
}

/* Drops every byte held, zeroed first: input never parsed may hold a
 * service key (proxy_request zeroes those of the heads it takes). */
static inline void
buf_drop_wiped(struct buf *b)
{
	if (buf_len(b) > 0)
		explicit_bzero(buf_head(b), buf_len(b));
	buf_consume(b, buf_len(b));
}

static inline void
buf_free(struct buf *b)
{
	blocks_put_sized(b->data, b->cap);
	b->data = NULL;
	b->start = b->end = b->cap = 0;
}

/* Give the memory back while a connection sits idle with nothing buffered. */
static inline void
buf_shrink_if_empty(struct buf *b)
{
	if (b->start == b->end)
		buf_free(b);
}

#endif
