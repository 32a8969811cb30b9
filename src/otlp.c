/*
 * The protobuf writer and the OTLP messages (see otlp.h). Nested messages
 * are length-prefixed, so each one's size is worked out before it is
 * written: the shapes are few and shallow, and no scratch copy is needed.
 */
#include <string.h>

#include "otlp.h"

size_t
pb_varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

void
pb_varint(struct sbuf *o, uint64_t v)
{
	uint8_t *b;

	/* straight into the buffer: a span is mostly tags and lengths */
	if (!sbuf_grow(o, 10))
		return;
	b = (uint8_t *)o->p + o->len;
	while (v >= 0x80) {
		*b++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*b++ = (uint8_t)v;
	o->len = (size_t)((char *)b - o->p);
}

void
pb_tag(struct sbuf *o, uint32_t field, enum pb_wire w)
{
	pb_varint(o, (uint64_t)field << 3 | w);
}

void
pb_bytes(struct sbuf *o, uint32_t field, const void *p, size_t n)
{
	pb_tag(o, field, PB_LEN);
	pb_varint(o, n);
	sbuf_add(o, p, n);
}

void
pb_fixed64(struct sbuf *o, uint32_t field, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));	/* little-endian */
	pb_tag(o, field, PB_I64);
	sbuf_add(o, b, 8);
}

void
pb_fixed32(struct sbuf *o, uint32_t field, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	pb_tag(o, field, PB_I32);
	sbuf_add(o, b, 4);
}

/* ------------------------------------------------------ KeyValue ---- */

/* AnyValue: string_value = 1, int_value = 3 (int64: two's complement) */
static size_t
anyvalue_size(const struct otlp_attr *a)
{
	return a->is_int ? 1 + pb_varint_len((uint64_t)a->i) : pb_len_field(a->len);
}

/* KeyValue: key = 1, value = 2 */
static size_t
keyvalue_size(const struct otlp_attr *a)
{
	return pb_len_field(strlen(a->key)) + pb_len_field(anyvalue_size(a));
}

static size_t
attrs_size(const struct otlp_attr *a, size_t n)
{
	size_t s = 0;

	for (size_t i = 0; i < n; i++)
		s += pb_len_field(keyvalue_size(&a[i]));
	return s;
}

/* Each attribute as field FIELD (a repeated KeyValue) of the message. */
static void
attrs_put(struct sbuf *o, uint32_t field, const struct otlp_attr *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		pb_tag(o, field, PB_LEN);
		pb_varint(o, keyvalue_size(&a[i]));
		pb_bytes(o, 1, a[i].key, strlen(a[i].key));
		pb_tag(o, 2, PB_LEN);
		pb_varint(o, anyvalue_size(&a[i]));
		if (a[i].is_int) {
			pb_tag(o, 3, PB_VARINT);
			pb_varint(o, (uint64_t)a[i].i);
		} else {
			pb_bytes(o, 1, a[i].str, a[i].len);
		}
	}
}

/* ---------------------------------------------------------- Span ---- */

/* Status: message = 2, code = 3 */
static size_t
status_size(const struct otlp_span *s)
{
	size_t n = 0;

	if (s->status_msg)
		n += pb_len_field(strlen(s->status_msg));
	if (s->status != OTLP_STATUS_UNSET)
		n += 2;
	return n;
}

/*
 * Span: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5,
 * kind = 6, start_time_unix_nano = 7 (fixed64), end_time_unix_nano = 8
 * (fixed64), attributes = 9, events = 11, dropped_events_count = 12,
 * status = 15, flags = 16 (fixed32). Written in field order.
 */
static size_t
span_size(const struct otlp_span *s)
{
	size_t n = pb_len_field(16) + pb_len_field(8);

	if (s->parent_id)
		n += pb_len_field(8);
	n += pb_len_field(s->name_len);
	n += 2 + 9 + 9;				/* kind, start, end */
	n += attrs_size(s->attrs, s->n_attrs);
	n += s->events_len;
	if (s->dropped_events)
		n += 1 + pb_varint_len(s->dropped_events);
	if (status_size(s) > 0)
		n += pb_len_field(status_size(s));
	n += 2 + 4;				/* flags: tag 16 takes two bytes */
	return n;
}

void
otlp_span(struct sbuf *o, const struct otlp_span *s)
{
	size_t st = status_size(s);
	size_t size = span_size(s);

	if (!sbuf_grow(o, size + 16))
		return;
	pb_tag(o, 2, PB_LEN);			/* ScopeSpans.spans */
	pb_varint(o, size);
	pb_bytes(o, 1, s->trace_id, 16);
	pb_bytes(o, 2, s->span_id, 8);
	if (s->parent_id)
		pb_bytes(o, 4, s->parent_id, 8);
	pb_bytes(o, 5, s->name, s->name_len);
	pb_tag(o, 6, PB_VARINT);
	pb_varint(o, (uint64_t)s->kind);
	pb_fixed64(o, 7, s->start_ns);
	pb_fixed64(o, 8, s->end_ns);
	attrs_put(o, 9, s->attrs, s->n_attrs);
	sbuf_add(o, s->events, s->events_len);
	if (s->dropped_events) {
		pb_tag(o, 12, PB_VARINT);
		pb_varint(o, s->dropped_events);
	}
	if (st > 0) {
		pb_tag(o, 15, PB_LEN);
		pb_varint(o, st);
		if (s->status_msg)
			pb_bytes(o, 2, s->status_msg, strlen(s->status_msg));
		if (s->status != OTLP_STATUS_UNSET) {
			pb_tag(o, 3, PB_VARINT);
			pb_varint(o, (uint64_t)s->status);
		}
	}
	pb_fixed32(o, 16, s->flags);
}

/* Span.Event: time_unix_nano = 1 (fixed64), name = 2, attributes = 3 */
void
otlp_event(struct sbuf *o, uint64_t time_ns, const char *name,
    const struct otlp_attr *attrs, size_t n_attrs)
{
	size_t nl = strlen(name);

	pb_tag(o, 11, PB_LEN);			/* Span.events */
	pb_varint(o, 9 + pb_len_field(nl) + attrs_size(attrs, n_attrs));
	pb_fixed64(o, 1, time_ns);
	pb_bytes(o, 2, name, nl);
	attrs_put(o, 3, attrs, n_attrs);
}

/* ------------------------------------------------------- request ---- */

/*
 * ExportTraceServiceRequest { resource_spans = 1: ResourceSpans {
 *   resource = 1: Resource { attributes = 1 },
 *   scope_spans = 2: ScopeSpans { scope = 1: InstrumentationScope {
 *     name = 1, version = 2 }, spans = 2 (the batch) } } }
 */
void
otlp_request(struct sbuf *o, const char *service, const char *version,
    const char *spans, size_t len)
{
	const struct otlp_attr svc = { .key = "service.name", .str = service,
	    .len = strlen(service) };
	size_t resource = attrs_size(&svc, 1);
	size_t scope = pb_len_field(5) + pb_len_field(strlen(version));
	size_t scope_spans = pb_len_field(scope) + len;
	size_t resource_spans = pb_len_field(resource) + pb_len_field(scope_spans);

	pb_tag(o, 1, PB_LEN);
	pb_varint(o, resource_spans);
	pb_tag(o, 1, PB_LEN);
	pb_varint(o, resource);
	attrs_put(o, 1, &svc, 1);
	pb_tag(o, 2, PB_LEN);
	pb_varint(o, scope_spans);
	pb_tag(o, 1, PB_LEN);
	pb_varint(o, scope);
	pb_bytes(o, 1, "ferry", 5);
	pb_bytes(o, 2, version, strlen(version));
	sbuf_add(o, spans, len);
}

/* ------------------------------------------------------ response ---- */

/* A varint at *I (P, LEN bytes); false when cut or over ten bytes. */
static bool
rd_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (*i >= len)
			return false;
		*v |= (uint64_t)(p[*i] & 0x7f) << shift;
		if (!(p[(*i)++] & 0x80))
			return true;
	}
	return false;
}

/* The next field at *I: its number, its wire type, its varint value
 * (PB_VARINT) or its bytes (PB_LEN: *SUB, *SUB_LEN); the others are
 * stepped over. False when malformed (groups included: proto3 has none). */
static bool
rd_field(const uint8_t *p, size_t len, size_t *i, uint64_t *field, int *wire,
    uint64_t *v, const uint8_t **sub, size_t *sub_len)
{
	uint64_t tag;

	if (!rd_varint(p, len, i, &tag) || (tag >> 3) == 0)
		return false;
	*field = tag >> 3;
	*wire = (int)(tag & 7);
	switch (*wire) {
	case PB_VARINT:
		return rd_varint(p, len, i, v);
	case PB_I64:
	case PB_I32:
		if (len - *i < (*wire == PB_I64 ? 8u : 4u))
			return false;
		*i += *wire == PB_I64 ? 8 : 4;
		return true;
	case PB_LEN:
		if (!rd_varint(p, len, i, v) || *v > len - *i)
			return false;
		*sub = p + *i;
		*sub_len = (size_t)*v;
		*i += (size_t)*v;
		return true;
	default:
		return false;
	}
}

/*
 * ExportTraceServiceResponse { partial_success = 1:
 *   ExportTracePartialSuccess { rejected_spans = 1 (int64),
 *   error_message = 2 } }
 */
bool
otlp_response_rejected(const void *msg, size_t len, uint64_t *rejected)
{
	const uint8_t *p = msg, *sub = NULL, *s2;
	size_t i = 0, sub_len = 0, s2_len;
	uint64_t field, v;
	int wire;

	*rejected = 0;
	while (i < len) {
		if (!rd_field(p, len, &i, &field, &wire, &v, &sub, &sub_len))
			return false;
		if (field != 1 || wire != PB_LEN)
			continue;
		/* a later value wins (protobuf merges a message seen twice) */
		for (size_t j = 0; j < sub_len;) {
			if (!rd_field(sub, sub_len, &j, &field, &wire, &v, &s2, &s2_len))
				return false;
			if (field == 1 && wire == PB_VARINT)
				*rejected = (int64_t)v > 0 ? v : 0;
		}
	}
	return true;
}
