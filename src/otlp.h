/*
 * OTLP trace messages (opentelemetry-proto, collector/trace/v1) written
 * by hand: a protobuf writer of varints and length-delimited fields, and
 * the few messages ferry sends. No protobuf runtime: ferry only writes,
 * and what it writes is small and fixed in shape.
 *
 * Field numbers follow the opentelemetry-proto files (collector/trace,
 * trace, common and resource, v1); comments name message and field.
 */
#ifndef FERRY_OTLP_H
#define FERRY_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

/* ---- the wire format ---- */
enum pb_wire { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

size_t pb_varint_len(uint64_t v);
void pb_varint(struct sbuf *o, uint64_t v);
void pb_tag(struct sbuf *o, uint32_t field, enum pb_wire w);
/* A length-delimited field: tag, length, bytes. */
void pb_bytes(struct sbuf *o, uint32_t field, const void *p, size_t n);
void pb_fixed64(struct sbuf *o, uint32_t field, uint64_t v);
void pb_fixed32(struct sbuf *o, uint32_t field, uint32_t v);
/* The size of a length-delimited field of N bytes (tag under 16). */
static inline size_t
pb_len_field(size_t n)
{
	return 1 + pb_varint_len(n) + n;
}

/* ---- trace messages ---- */

/* Span.SpanKind */
enum otlp_kind { OTLP_KIND_SERVER = 2, OTLP_KIND_CLIENT = 3 };
/* Status.StatusCode */
enum otlp_status { OTLP_STATUS_UNSET = 0, OTLP_STATUS_OK = 1, OTLP_STATUS_ERROR = 2 };

/* A KeyValue whose AnyValue is a string_value (STR, LEN) or, with
 * IS_INT, an int_value. Strings must be valid UTF-8 (the caller's). */
struct otlp_attr {
	const char *key;
	const char *str;
	size_t len;
	bool is_int;
	int64_t i;
};

struct otlp_span {
	const uint8_t *trace_id;	/* 16 bytes */
	const uint8_t *span_id;		/* 8 bytes */
	const uint8_t *parent_id;	/* 8 bytes, or NULL for a root span */
	uint32_t flags;			/* Span.flags: W3C trace flags, SpanFlags */
	const char *name;
	size_t name_len;
	enum otlp_kind kind;
	uint64_t start_ns, end_ns;	/* Unix epoch */
	const struct otlp_attr *attrs;
	size_t n_attrs;
	const char *events;		/* Span.events fields, already encoded */
	size_t events_len;
	uint32_t dropped_events;
	enum otlp_status status;
	const char *status_msg;		/* NULL: none */
};

/* Appends SPAN as a ScopeSpans.spans field (tag, length, Span), the unit
 * a batch is made of. */
void otlp_span(struct sbuf *o, const struct otlp_span *s);
/* Appends one Span.events field: an Event named NAME at TIME_NS. */
void otlp_event(struct sbuf *o, uint64_t time_ns, const char *name,
    const struct otlp_attr *attrs, size_t n_attrs);
/* Appends an ExportTraceServiceRequest: one ResourceSpans with resource
 * attribute service.name = SERVICE, one ScopeSpans of scope "ferry"
 * (version VERSION) holding SPANS (ScopeSpans.spans fields, LEN bytes). */
void otlp_request(struct sbuf *o, const char *service, const char *version,
    const char *spans, size_t len);

/* Reads a collector's ExportTraceServiceResponse (P, LEN bytes): *REJECTED
 * gets partial_success.rejected_spans (0 when absent or negative), the
 * spans of the batch it did not take. False when P is not a well-formed
 * message (then nothing is known of what was rejected). Unknown fields
 * are skipped, as protobuf wants. */
bool otlp_response_rejected(const void *p, size_t len, uint64_t *rejected);

#endif
