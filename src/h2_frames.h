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
size_t h2_lines_to_nv(char *p, char *end, nghttp2_nv *nv, size_t n, size_t max);

/* HPACK flags for a field: values unique to one message (ids, trace
 * context) would only churn the peer's dynamic table, and the service
 * key is never indexed at all (RFC 7541 §7.1.3: secrets stay out of the
 * compression context). */
uint8_t h2_nv_flags(const char *name, size_t nlen);

#endif
