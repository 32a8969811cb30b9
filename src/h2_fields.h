/*
 * HTTP/1-shaped field lines as HTTP/2 fields (h2_fields.c), for both
 * HTTP/2 codecs: inside ferry a head or a set of trailers is text,
 * "name: value\r\n" lines, whichever protocol it came in.
 */
#ifndef FERRY_H2_FIELDS_H
#define FERRY_H2_FIELDS_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

/* The lines from P to END as fields NV[N..MAX): names lowered in place
 * (HTTP/2 wants them so), values pointing into the lines, and without
 * what only HTTP/1 connections carry (connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade). Stops at an empty line.
 * Returns the new count. */
size_t h2_lines_to_nv(char *p, char *end, nghttp2_nv *nv, size_t n, size_t max);

#endif
