/*
 * What both HTTP/2 codecs (h2_down.c, h2_up.c) do alike: a session's
 * output, and fields from text. Inside ferry a head or a set of trailers
 * is HTTP/1-shaped text, "name: value\r\n" lines, whichever protocol it
 * came in.
 */
#ifndef FERRY_H2_FRAMES_H
#define FERRY_H2_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "http1.h"

struct conn;

/* Fields of a head as nghttp2 takes them: a whole head at the hard cap
 * (http1.h) and the pseudo-fields. */
#define H2_MAX_NV (HTTP_MAX_FIELDS + 8)
/* SETTINGS_MAX_HEADER_LIST_SIZE ferry advertises, and the header blocks
 * it sends: a head at the hard cap, counted as RFC 9113 6.5.2 counts
 * (32 bytes for each field, where http1.h counts 4), pseudo-fields too. */
#define H2_MAX_HEADER_LIST (HTTP_MAX_HEAD_ALL + 28 * H2_MAX_NV)

/* Moves the frames NG has ready to C, packed into as few writes as they
 * fit (a TLS record holds 16 KiB): the frames of every stream that became
 * ready this turn share a record and a syscall. Stops while C holds more
 * than CONN_HIGH_MARK; the rest waits in NG for CONN_DRAINED. 0, or -1
 * when NG failed or C broke. */
int h2_send_frames(nghttp2_session *ng, struct conn *c);

/* The end of the line at P: its "\r\n", or NULL before END. */
char *h2_line_end(char *p, const char *end);

/* A "name: value" line of HTTP/1 head text, as HTTP/2 wants it. */
struct h2_field {
	char *name, *value;
	size_t nlen, vlen;
};

/* Reads the field line at *P (before END) into F, its name lower-cased in
 * place, and moves *P past it; lines without a colon are skipped. false
 * at the blank line that ends the head, or at END. */
bool h2_next_field(char **p, char *end, struct h2_field *f);

/* The lines from P to END as fields NV[N..MAX): names lowered in place
 * (HTTP/2 wants them so), values pointing into the lines, and without
 * what only HTTP/1 connections carry (connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade). Stops at an empty line.
 * Returns the new count. */
size_t h2_lines_to_nv(char *p, char *end, nghttp2_nv *nv, size_t n, size_t max, bool seed);

/* Whether the nghttp2 ferry runs with is one that lending was checked
 * against (h2_frames.c). */
bool h2_lend_ok(void);

/* NV[0..N) lent to nghttp2 (where h2_lend_ok): it packs the fields from
 * their bytes where they are (names already lower-case), not from a copy
 * it lower-cases. The caller keeps those bytes as they are until the
 * HEADERS are packed, or dropped unsent (a stream reset or closed, a
 * session deleted: nghttp2 reads no field of those). */
static inline void
h2_lend_fields(nghttp2_nv *nv, size_t n)
{
	if (!h2_lend_ok())
		return;
	for (size_t i = 0; i < n; i++)
		nv[i].flags |= NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
}

/* HPACK flags for a field. The service key is never indexed (RFC 7541
 * §7.1.3: secrets stay out of the compression context). The values of
 * ferry's per-message fields (ids, trace context, the time left) would
 * only churn the peer's dynamic table, so they are not indexed either,
 * except in a SEED head: then they enter the table once, and every later
 * head of the session names them by index (nghttp2 finds a name in the
 * dynamic table for a never-indexed field) instead of sending, and
 * Huffman-coding, the name in full. Those names are in no static table. */
uint8_t h2_nv_flags(const char *name, size_t nlen, bool seed);

/* Heads a session sends from one seed head to the next: often enough to
 * put back names that other fields pushed out of the table, rare enough
 * that the seeds churn nothing. */
#define H2_SEED_EVERY 256

/* Whether the head a session is about to send seeds the names; *HEADS
 * counts the session's heads (it wraps harmlessly). */
static inline bool
h2_seed_due(uint32_t *heads)
{
	return (*heads)++ % H2_SEED_EVERY == 0;
}

#endif
