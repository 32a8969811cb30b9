/*
 * Spans of proxied requests (SPEC §13): the trace context each request
 * carries upstream, the sampling decision, the retry events, and at its
 * end the span handed to the worker's exporter (exporter.h). All of it
 * runs on the request's worker and takes no lock.
 */
#ifndef FERRY_TRACING_H
#define FERRY_TRACING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

struct exchange;

/* With tracing on: the request's trace context. IN (IN_LEN bytes) is the
 * app's or peer's valid traceparent, or NULL. Draws the span's id, decides
 * sampling (an incoming sampled flag is obeyed; a trace that starts here
 * is sampled at sample_ratio), and writes the traceparent that goes
 * upstream into x->tp: the same trace-id, the span's id as parent-id. */
void tracing_begin(struct exchange *x, const char *in, size_t in_len);
/* Another attempt follows after BACKOFF_MS: an event on the span. */
void tracing_retry(struct exchange *x, int64_t backoff_ms);
/* The request is over (its access log line is written now too): its span
 * goes to the exporter, once. */
void tracing_end(struct exchange *x, enum end_cause cause);

/* Cleans TEXT for a span attribute: bytes outside '!'..'~' become %XX
 * (a string in protobuf must be UTF-8, and a path in a span is its
 * percent-encoded form anyway); cut to fit CAP - 1. Returns the length. */
size_t tracing_clean(char *out, size_t cap, const char *text, size_t len);

#endif
