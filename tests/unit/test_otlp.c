/*
 * Unit tests for src/otlp.c: the protobuf writer and the OTLP messages,
 * against known bytes. The expected messages were encoded by protobufjs
 * from the official opentelemetry-proto definitions (tests/e2e/otlp), an
 * encoder that shares nothing with ferry's.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "otlp.h"
#include "tracing.h"

/* protobufjs: the Span below, and the request around it */
static const char SPAN_HEX[] =
    "0a100102030405060708090a0b0c0d0e0f1012081112131415161718220821222324252627282a03474554"
    "30033900002a36fe9c97174140423936fe9c97174a100a0875726c2e7061746812040a022f614a140a0e66"
    "657272792e617474656d707473120218024a120a036e6567120b18ffffffffffffffffff015a230920a131"
    "36fe9c9717120572657472791a110a0b66657272792e72657472791202180160037a171213534552564943"
    "455f554e415641494c41424c451802850101030000";
static const char REQ_HEX[] =
    "0af0010a170a150a0c736572766963652e6e616d6512050a0373766312d4010a0e0a0566657272791205"
    "302e312e3012c101";

static size_t
unhex(const char *h, uint8_t *out)
{
	size_t n = strlen(h) / 2;

	for (size_t i = 0; i < n; i++) {
		unsigned v;

		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
	return n;
}

static void
assert_bytes(const struct sbuf *got, const uint8_t *want, size_t n)
{
	ck_assert_uint_eq(got->len, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg((uint8_t)got->p[i] == want[i], "byte %zu: %02x, want %02x", i,
		    (uint8_t)got->p[i], want[i]);
}

START_TEST(test_varint)
{
	static const struct { uint64_t v; const char *hex; } cases[] = {
		{ 0, "00" }, { 1, "01" }, { 127, "7f" }, { 128, "8001" }, { 300, "ac02" },
		{ 16384, "808001" }, { UINT64_MAX, "ffffffffffffffffff01" },
	};
	uint8_t want[16];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sbuf o = { 0 };
		size_t n = unhex(cases[i].hex, want);

		pb_varint(&o, cases[i].v);
		assert_bytes(&o, want, n);
		ck_assert_uint_eq(pb_varint_len(cases[i].v), n);
		sbuf_free(&o);
	}
}
END_TEST

START_TEST(test_fields)
{
	struct sbuf o = { 0 };
	uint8_t want[64];
	size_t n;

	pb_bytes(&o, 5, "GET", 3);		/* Span.name */
	pb_fixed64(&o, 7, 0x0102030405060708ull);
	pb_fixed32(&o, 16, 0x301);		/* a two-byte tag */
	pb_tag(&o, 6, PB_VARINT);
	pb_varint(&o, 3);
	n = unhex("2a03474554" "390807060504030201" "850101030000" "3003", want);
	assert_bytes(&o, want, n);
	sbuf_free(&o);
}
END_TEST

static const uint8_t trace_id[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static const uint8_t span_id[8] = { 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18 };
static const uint8_t parent_id[8] = { 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28 };

static void
sample_span(struct sbuf *o, struct sbuf *events)
{
	const struct otlp_attr attrs[] = {
		{ .key = "url.path", .str = "/a", .len = 2 },
		{ .key = "ferry.attempts", .is_int = true, .i = 2 },
		{ .key = "neg", .is_int = true, .i = -1 },
	};
	const struct otlp_attr ev[] = { { .key = "ferry.retry", .is_int = true, .i = 1 } };

	otlp_event(events, 1700000000000500000ull, "retry", ev, 1);
	otlp_span(o, &(struct otlp_span){
		.trace_id = trace_id, .span_id = span_id, .parent_id = parent_id,
		.flags = 0x301, .name = "GET", .name_len = 3, .kind = OTLP_KIND_CLIENT,
		.start_ns = 1700000000000000000ull, .end_ns = 1700000000001000000ull,
		.attrs = attrs, .n_attrs = 3,
		.events = events->p, .events_len = events->len, .dropped_events = 3,
		.status = OTLP_STATUS_ERROR, .status_msg = "SERVICE_UNAVAILABLE",
	});
}

START_TEST(test_span)
{
	struct sbuf o = { 0 }, events = { 0 };
	uint8_t want[512];
	size_t n = unhex(SPAN_HEX, want);

	sample_span(&o, &events);
	/* ScopeSpans.spans: tag 2, the length (two bytes), then the Span */
	ck_assert_uint_eq(n, 193);
	ck_assert_uint_eq((uint8_t)o.p[0], 0x12);
	ck_assert_uint_eq((uint8_t)o.p[1], 0xc1);
	ck_assert_uint_eq((uint8_t)o.p[2], 0x01);
	ck_assert_uint_eq(o.len, n + 3);
	ck_assert_mem_eq(o.p + 3, want, n);
	sbuf_free(&o);
	sbuf_free(&events);
}
END_TEST

START_TEST(test_request)
{
	struct sbuf spans = { 0 }, events = { 0 }, o = { 0 };
	uint8_t want[1024];
	size_t n = unhex(REQ_HEX, want);

	sample_span(&spans, &events);
	otlp_request(&o, "svc", "0.1.0", spans.p, spans.len);
	n += unhex(SPAN_HEX, want + n);
	assert_bytes(&o, want, n);
	sbuf_free(&o);
	sbuf_free(&spans);
	sbuf_free(&events);
}
END_TEST

START_TEST(test_root_span_without_parent_or_status)
{
	struct sbuf o = { 0 };
	const struct otlp_attr a = { .key = "k", .str = "", .len = 0 };

	otlp_span(&o, &(struct otlp_span){
		.trace_id = trace_id, .span_id = span_id, .flags = 0x101,
		.name = "HTTP", .name_len = 4, .kind = OTLP_KIND_SERVER,
		.attrs = &a, .n_attrs = 1,
	});
	/* no field 4 (parent), 12 (dropped events) or 15 (status) */
	ck_assert_uint_eq((uint8_t)o.p[1], o.len - 2);
	ck_assert_ptr_null(memmem(o.p, o.len, "\x22\x08", 2));
	ck_assert_ptr_null(memmem(o.p, o.len, "\x7a", 1));
	ck_assert_ptr_nonnull(memmem(o.p, o.len, "\x30\x02", 2));	/* kind SERVER */
	sbuf_free(&o);
}
END_TEST

START_TEST(test_clean)
{
	char out[16];

	ck_assert_uint_eq(tracing_clean(out, sizeof(out), "/a b\xff", 5), 9);
	ck_assert_str_eq(out, "/a%20b%FF");
	/* cut to fit, never inside an escape */
	ck_assert_uint_eq(tracing_clean(out, 6, "/\xff\xff", 3), 4);
	ck_assert_str_eq(out, "/%FF");
}
END_TEST

/* partial_success.rejected_spans of a collector's answer */
static bool
rejected_of(const char *hex, uint64_t *n)
{
	uint8_t b[256];

	return otlp_response_rejected(b, unhex(hex, b), n);
}

START_TEST(test_response_rejected)
{
	uint64_t n = 99;

	/* an empty message: all taken */
	ck_assert(otlp_response_rejected("", 0, &n));
	ck_assert_uint_eq(n, 0);
	/* partial_success { rejected_spans: 3, error_message: "no" } */
	ck_assert(rejected_of("0a06" "0803" "12026e6f", &n));
	ck_assert_uint_eq(n, 3);
	/* 300 (a two-byte varint), unknown fields of every wire type around
	 * it skipped: varint, fixed64, fixed32, bytes */
	ck_assert(rejected_of("1001" "19" "0102030405060708" "0a10" "18ac02" "08ac02"
	    "2501020304" "2a03616263", &n));
	ck_assert_uint_eq(n, 300);
	/* a message seen twice is merged: the later value wins */
	ck_assert(rejected_of("0a0208050a020807", &n));
	ck_assert_uint_eq(n, 7);
	/* a negative count (int64 -1, ten bytes) means nothing rejected */
	ck_assert(rejected_of("0a0b08ffffffffffffffffff01", &n));
	ck_assert_uint_eq(n, 0);
	/* malformed: cut inside a length, a length past the end, a varint
	 * past ten bytes, a group, field number 0, a cut fixed64 */
	ck_assert(!rejected_of("0a0608031202", &n));
	ck_assert(!rejected_of("0a05", &n));
	ck_assert(!rejected_of("0a0b08ffffffffffffffffffff01", &n));
	ck_assert(!rejected_of("0b", &n));
	ck_assert(!rejected_of("0001", &n));
	ck_assert(!rejected_of("190102", &n));
	/* not protobuf at all: a JSON body */
	ck_assert(!otlp_response_rejected("{\"partialSuccess\":{}}", 21, &n));
}
END_TEST

static Suite *
otlp_suite(void)
{
	Suite *s = suite_create("otlp");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_varint);
	tcase_add_test(tc, test_fields);
	tcase_add_test(tc, test_span);
	tcase_add_test(tc, test_request);
	tcase_add_test(tc, test_root_span_without_parent_or_status);
	tcase_add_test(tc, test_clean);
	tcase_add_test(tc, test_response_rejected);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(otlp_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
