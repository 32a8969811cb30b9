#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "h2_frames.h"
#include "swar.h"

/* one TLS record's worth of plaintext */
#define H2_WRITE_CHUNK 16384

int
h2_send_frames(nghttp2_session *ng, struct conn *c)
{
	uint8_t pack[H2_WRITE_CHUNK];
	size_t used = 0;

	while (conn_pending(c) <= CONN_HIGH_MARK) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(ng, &p);

		if (n < 0)
			return -1;
		if (n == 0)
			break;
		/* P is good until the next call: write or copy it now */
		if (used + (size_t)n > sizeof(pack)) {
			if (conn_write(c, pack, used) != 0)
				return -1;
			used = 0;
		}
		if ((size_t)n >= sizeof(pack)) {
			if (conn_write(c, p, (size_t)n) != 0)
				return -1;
			continue;
		}
		memcpy(pack + used, p, (size_t)n);
		used += (size_t)n;
	}
	return used > 0 ? conn_write(c, pack, used) : 0;
}

/* Lending leans on what nghttp2 does, not only on what it documents
 * (lent bytes kept until on_frame_send or on_frame_not_send): ferry frees
 * or reuses them once the stream is reset or closed, because nghttp2 1.52
 * never reads the fields of a HEADERS it drops (a request's, cancelled by
 * the RST_STREAM; a response's, whose stream closed: session_prep_frame
 * refuses both before it packs) nor of one a deleted session frees, and
 * ferry sets no on_frame_not_send on these sessions. That was read in
 * 1.52's source; another library copies the fields, as before. */
bool
h2_lend_ok(void)
{
	static _Atomic int ok = -1;
	int v = atomic_load_explicit(&ok, memory_order_relaxed);

	if (v < 0) {
		const nghttp2_info *info = nghttp2_version(0);

		v = info != NULL && info->version_num >> 8 == 0x0134;	/* 1.52.x */
		atomic_store_explicit(&ok, v, memory_order_relaxed);
	}
	return v == 1;
}

/* memchr finds the CR fast; heads ferry built have no bare CR, but a
 * stray one is stepped over as memmem would */
char *
h2_line_end(char *p, const char *end)
{
	while (p < end && (p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
		if (p + 1 < end && p[1] == '\n')
			return p;
		p++;
	}
	return NULL;
}

/* A-Z to a-z from P to END, eight bytes at a time; bytes with the high
 * bit set are no letters. */
static void
lower_ascii(char *p, const char *end)
{
	for (; end - p >= 8; p += 8) {
		uint64_t x = swar_load(p);
		uint64_t upper = swar_in_range(x & ~SWAR_HIGHS, 'A', 'Z') & ~x;

		x |= upper >> 2;	/* 0x80 >> 2 is the case bit */
		memcpy(p, &x, 8);
	}
	for (; p < end; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
}

bool
h2_next_field(char **p, char *end, struct h2_field *f)
{
	char *eol, *colon, *v;

	for (;; *p = eol + 2) {
		if ((eol = h2_line_end(*p, end)) == NULL || eol == *p)
			return false;
		if ((colon = memchr(*p, ':', (size_t)(eol - *p))) != NULL)
			break;
	}
	lower_ascii(*p, colon);
	for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
		;
	*f = (struct h2_field){ *p, v, (size_t)(colon - *p), (size_t)(eol - v) };
	*p = eol + 2;
	return true;
}

uint8_t
h2_nv_flags(const char *name, size_t nlen, bool seed)
{
#define IS(lit) (nlen == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)
	if (nlen < 11 || nlen > 19 || (name[0] != 'x' && name[0] != 't' && name[0] != 'g'))
		return NGHTTP2_NV_FLAG_NONE;
	if (IS("x-service-auth"))
		return NGHTTP2_NV_FLAG_NO_INDEX;
	if (IS("x-request-id") || IS("x-correlation-id") || IS("traceparent") ||
	    IS("x-ferry-deadline-ms") || IS("grpc-timeout"))
		return seed ? NGHTTP2_NV_FLAG_NONE : NGHTTP2_NV_FLAG_NO_INDEX;
#undef IS
	return NGHTTP2_NV_FLAG_NONE;
}

size_t
h2_lines_to_nv(char *p, char *end, nghttp2_nv *nv, size_t n, size_t max, bool seed)
{
	struct h2_field f;

	if (p == NULL)
		return n;	/* an empty sbuf has no memory yet */
	while (n < max && h2_next_field(&p, end, &f)) {
#define IS(lit) (f.nlen == sizeof(lit) - 1 && memcmp(f.name, lit, sizeof(lit) - 1) == 0)
		if (IS("connection") || IS("keep-alive") || IS("proxy-connection") ||
		    IS("transfer-encoding") || IS("upgrade"))
			continue;
#undef IS
		nv[n++] = (nghttp2_nv){ (uint8_t *)f.name, (uint8_t *)f.value, f.nlen, f.vlen,
		    h2_nv_flags(f.name, f.nlen, seed) };
	}
	return n;
}
