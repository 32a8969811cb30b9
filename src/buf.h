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
 * Returns the free space (0 when MAX is reached or memory is short). */
static inline size_t
buf_prepare(struct buf *b, size_t min, size_t max)
{
	if (b->cap - b->end >= min)
		return b->cap - b->end;
	if (b->start > 0) {
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
		if (b->cap - b->end >= min)
			return b->cap - b->end;
	}
	if (b->cap < max) {
		size_t ncap = b->cap ? b->cap * 2 : min;
		char *n;

		while (ncap - b->end < min && ncap < max)
			ncap *= 2;
		if (ncap > max)
			ncap = max;
		if ((n = realloc(b->data, ncap)) == NULL)
			return b->cap - b->end;
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

static inline void
buf_free(struct buf *b)
{
	free(b->data);
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
