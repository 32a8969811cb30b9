/*
 * A growable output string for building message heads. Reused across
 * requests (cleared, not freed), so steady state allocates nothing.
 *
 * A head may carry a service key: sbuf_mark_secret() names the bytes,
 * and the buffer wipes them wherever it lets go of them (clear, free, and
 * the old memory of a grow), so no freed block keeps a copy.
 */
#ifndef FERRY_SBUF_H
#define FERRY_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;		/* an append failed; the content is incomplete */
	size_t secret_from, secret_to;	/* bytes to wipe; equal: none */
};

static inline void
sbuf_wipe_secret(struct sbuf *s)
{
	if (s->secret_to > s->secret_from)
		explicit_bzero(s->p + s->secret_from, s->secret_to - s->secret_from);
	s->secret_from = s->secret_to = 0;
}

/* Bytes [AT, AT + N) are a secret. Several make one span from the first
 * to the last, the bytes between included: wipe it (sbuf_wipe_secret)
 * only once done with the content. */
static inline void
sbuf_mark_secret(struct sbuf *s, size_t at, size_t n)
{
	if (n == 0 || at > s->len || n > s->len - at)
		return;
	if (s->secret_to == s->secret_from || at < s->secret_from)
		s->secret_from = at;
	if (at + n > s->secret_to)
		s->secret_to = at + n;
}

static inline bool
sbuf_grow(struct sbuf *s, size_t more)
{
	size_t ncap;
	char *n;

	if (s->cap - s->len >= more)
		return true;
	ncap = s->cap ? s->cap : 1024;
	while (ncap - s->len < more)
		ncap *= 2;
	if (s->p == NULL) {
		/* the first block: a thread's spare (blocks.h) */
		if ((n = blocks_get(ncap)) == NULL) {
			s->oom = true;
			return false;
		}
	} else if (s->secret_to > s->secret_from) {
		/* realloc could move it and free the old copy unwiped */
		if ((n = blocks_get(ncap)) == NULL) {
			s->oom = true;
			return false;
		}
		memcpy(n, s->p, s->len);
		explicit_bzero(s->p + s->secret_from, s->secret_to - s->secret_from);
		blocks_put(s->p);
	} else if ((n = realloc(s->p, ncap)) == NULL) {
		s->oom = true;
		return false;
	}
	s->p = n;
	s->cap = ncap;
	return true;
}

static inline void
sbuf_add(struct sbuf *s, const void *d, size_t n)
{
	if (n == 0 || !sbuf_grow(s, n))
		return;
	memcpy(s->p + s->len, d, n);
	s->len += n;
}

static inline void
sbuf_adds(struct sbuf *s, const char *str)
{
	sbuf_add(s, str, strlen(str));
}

static inline void
sbuf_clear(struct sbuf *s)
{
	if (s->secret_to > s->secret_from)
		sbuf_wipe_secret(s);
	s->len = 0;
	s->oom = false;
}

static inline void
sbuf_free(struct sbuf *s)
{
	if (s->secret_to > s->secret_from)
		sbuf_wipe_secret(s);
	/* a first block never grown came from blocks_get(BLOCKS_SMALL); a
	 * grown one may be realloc's */
	if (s->cap == BLOCKS_SMALL)
		blocks_put_sized(s->p, s->cap);
	else
		blocks_put(s->p);
	s->p = NULL;
	s->len = s->cap = 0;
}

/*
 * Writing through a pointer: a caller that knows a bound for what it
 * appends takes the room once (sbuf_room), writes with the put_ helpers,
 * each of which returns the new end, and sets the length (sbuf_commit).
 * An access log line is ~40 appends; one capacity check instead of 40 is
 * most of its cost.
 */
static inline char *
sbuf_room(struct sbuf *s, size_t n)
{
	return sbuf_grow(s, n) ? s->p + s->len : NULL;
}

static inline void
sbuf_commit(struct sbuf *s, const char *end)
{
	s->len = (size_t)(end - s->p);
}

static inline char *
put_mem(char *p, const void *d, size_t n)
{
	memcpy(p, d, n);
	return p + n;
}

/* A string literal: its length is known when compiled. */
#define PUT_LIT(p, lit)	put_mem((p), (lit), sizeof(lit) - 1)

#define PUT_U64_MAX	20	/* digits of UINT64_MAX */

static inline char *
put_u64(char *p, unsigned long long v)
{
	char tmp[PUT_U64_MAX];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return put_mem(p, tmp + i, sizeof(tmp) - i);
}

/* Appends the decimal form of V. */
static inline void
sbuf_addu(struct sbuf *s, unsigned long long v)
{
	char *p = sbuf_room(s, PUT_U64_MAX);

	if (p != NULL)
		sbuf_commit(s, put_u64(p, v));
}

/* V in lower-case hex (a chunk size). */
static inline void
sbuf_addx(struct sbuf *s, unsigned long long v)
{
	char tmp[16];
	int i = (int)sizeof(tmp);

	do {
		tmp[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	sbuf_add(s, tmp + i, sizeof(tmp) - (size_t)i);
}

#endif
