/*
 * Unit tests for src/h2_frames.c: fields from HTTP/1-shaped head text, as
 * HTTP/2 wants them (names lower-cased in place).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "h2_frames.h"

/* Every byte value at every offset of a name that spans whole and partial
 * 8-byte words: only A-Z change, each to its lower case. */
START_TEST(test_names_lowered_every_byte)
{
	char text[64], want[32];

	for (size_t nlen = 1; nlen <= 20; nlen++)
		for (size_t pos = 0; pos < nlen; pos++)
			for (unsigned b = 1; b < 256; b++) {
				struct h2_field f;
				char *p = text;

				if (b == ':' || b == '\r' || b == '\n')
					continue;
				memset(text, 'Q', nlen);
				text[pos] = (char)b;
				memcpy(text + nlen, ": v\r\n\r\n", 7);
				for (size_t i = 0; i < nlen; i++)
					want[i] = text[i] >= 'A' && text[i] <= 'Z' ?
					    (char)(text[i] + 32) : text[i];
				ck_assert(h2_next_field(&p, text + nlen + 7, &f));
				ck_assert_ptr_eq(f.name, text);
				ck_assert_uint_eq(f.nlen, nlen);
				ck_assert_msg(memcmp(f.name, want, nlen) == 0,
				    "byte 0x%02x at %zu of %zu", b, pos, nlen);
				ck_assert_uint_eq(f.vlen, 1);
				ck_assert_int_eq(f.value[0], 'v');
				/* then the blank line ends the head */
				ck_assert(!h2_next_field(&p, text + nlen + 7, &f));
			}
}
END_TEST

/* The value keeps its case; a line without a colon is skipped. */
START_TEST(test_fields_and_values)
{
	char text[] = "no colon here\r\nX-Upper-Name-Long: Mixed Case\r\nB:\r\n\r\n";
	char *p = text, *end = text + sizeof(text) - 1;
	struct h2_field f;

	ck_assert(h2_next_field(&p, end, &f));
	ck_assert_uint_eq(f.nlen, 17);
	ck_assert(memcmp(f.name, "x-upper-name-long", 17) == 0);
	ck_assert_uint_eq(f.vlen, 10);
	ck_assert(memcmp(f.value, "Mixed Case", 10) == 0);
	ck_assert(memcmp(text, "no colon here", 13) == 0);
	ck_assert(h2_next_field(&p, end, &f));
	ck_assert_uint_eq(f.nlen, 1);
	ck_assert_int_eq(f.name[0], 'b');
	ck_assert_uint_eq(f.vlen, 0);
	ck_assert(!h2_next_field(&p, end, &f));
}
END_TEST

/* The key is never indexed, seed or not; the per-message fields are
 * indexed only in a seed head; other fields (and look-alikes) always may
 * be. The trailers' and the heads' lines get the same flags. */
START_TEST(test_nv_flags)
{
	static const char *const per_message[] = { "x-request-id", "x-correlation-id",
	    "traceparent", "x-ferry-deadline-ms", "grpc-timeout" };
	static const char *const others[] = { "x-request-ids", "x-service-aut", "tracestate",
	    "x-ferry-deadline", "grpc-encoding", "content-type", "x" };
	char text[] = "x-service-auth: k\r\nX-Request-Id: r\r\naccept: */*\r\n\r\n";
	nghttp2_nv nv[4];

	ck_assert_int_eq(h2_nv_flags("x-service-auth", 14, false), NGHTTP2_NV_FLAG_NO_INDEX);
	ck_assert_int_eq(h2_nv_flags("x-service-auth", 14, true), NGHTTP2_NV_FLAG_NO_INDEX);
	for (size_t i = 0; i < sizeof(per_message) / sizeof(per_message[0]); i++) {
		size_t n = strlen(per_message[i]);

		ck_assert_int_eq(h2_nv_flags(per_message[i], n, false), NGHTTP2_NV_FLAG_NO_INDEX);
		ck_assert_int_eq(h2_nv_flags(per_message[i], n, true), NGHTTP2_NV_FLAG_NONE);
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		ck_assert_int_eq(h2_nv_flags(others[i], strlen(others[i]), false),
		    NGHTTP2_NV_FLAG_NONE);
	ck_assert_uint_eq(h2_lines_to_nv(text, text + sizeof(text) - 1, nv, 0, 4, true), 3);
	ck_assert_int_eq(nv[0].flags, NGHTTP2_NV_FLAG_NO_INDEX);
	ck_assert_int_eq(nv[1].flags, NGHTTP2_NV_FLAG_NONE);	/* lowered, then seeded */
	ck_assert_int_eq(nv[2].flags, NGHTTP2_NV_FLAG_NONE);
}
END_TEST

/* A seed head first, then one every H2_SEED_EVERY, across the wrap. */
START_TEST(test_seed_due)
{
	uint32_t heads = 0, seeds = 0;

	ck_assert(h2_seed_due(&heads));
	for (uint32_t i = 1; i < 4 * H2_SEED_EVERY; i++)
		seeds += h2_seed_due(&heads);
	ck_assert_uint_eq(seeds, 3);
	heads = UINT32_MAX;	/* UINT32_MAX + 1 is a multiple of it */
	ck_assert(!h2_seed_due(&heads));
	ck_assert(h2_seed_due(&heads));
}
END_TEST

static Suite *
h2_frames_suite(void)
{
	Suite *s = suite_create("h2_frames");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_names_lowered_every_byte);
	tcase_add_test(tc, test_fields_and_values);
	tcase_add_test(tc, test_nv_flags);
	tcase_add_test(tc, test_seed_due);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(h2_frames_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
