/*
 * x-ferry-deadline-ms (SPEC §16): the milliseconds left of a request's
 * deadline, read from a request head and written into each attempt's.
 * Pure: no clock, no I/O.
 */
#ifndef FERRY_DEADLINE_H
#define FERRY_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

#include "http1.h"

/* The width of the value ferry writes: each attempt rewrites it in place,
 * so the head keeps its length. 10 digits are 115 days. */
#define DEADLINE_DIGITS 10
#define DEADLINE_MAX_MS INT64_C(9999999999)

/* The smallest well-formed x-ferry-deadline-ms of H (MSG its first byte),
 * or -1 when there is none. Each line caps the deadline, so the smallest
 * wins; a value past DEADLINE_MAX_MS is read as DEADLINE_MAX_MS. A line
 * that is not all digits (empty, signed, fractional, with a unit) is
 * skipped, and *MALFORMED set. */
int64_t deadline_from_head(const char *msg, const struct http_head *h, bool *malformed);

/* Writes LEFT (clamped to 0..DEADLINE_MAX_MS), right-aligned with leading
 * spaces (optional whitespace to every HTTP parser), into the
 * DEADLINE_DIGITS bytes at P. */
void deadline_write(char *p, int64_t left);

#endif
