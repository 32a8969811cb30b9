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

/* The fields of a head, read one by one as the codecs do. */
static size_t
h2_fields(char *p, char *end, struct h2_field *f, size_t max)
{
	size_t n = 0;

	while (n < max && h2_next_field(&p, end, &f[n]))
		n++;
	return n;
}

/* F reads NAME: VALUE (NUL-free texts, stray CRs allowed). */
static void
assert_field(const struct h2_field *f, const char *name, const char *value)
{
	ck_assert_uint_eq(f->nlen, strlen(name));
	ck_assert(memcmp(f->name, name, f->nlen) == 0);
	ck_assert_uint_eq(f->vlen, strlen(value));
	ck_assert(memcmp(f->value, value, f->vlen) == 0);
}

/* Every byte value at every offset of a name that spans whole and partial
 * 8-byte words: only A-Z change, each to its lower case. */
START_TEST(test_names_lowered_every_byte)
{
	char text[64], want[32];

	for (size_t nlen = 1; nlen <= 20; nlen++)
		for (size_t pos = 0; pos < nlen; pos++)
			for (unsigned b = 1; b < 256; b++) {
				struct h2_field f[2];

				if (b == ':' || b == '\r' || b == '\n')
					continue;
				memset(text, 'Q', nlen);
				text[pos] = (char)b;
				memcpy(text + nlen, ": v\r\n\r\n", 7);
				for (size_t i = 0; i < nlen; i++)
					want[i] = text[i] >= 'A' && text[i] <= 'Z' ?
					    (char)(text[i] + 32) : text[i];
				/* one field: then the blank line ends the head */
				ck_assert_uint_eq(h2_fields(text, text + nlen + 7, f, 2), 1);
				ck_assert_ptr_eq(f[0].name, text);
				ck_assert_uint_eq(f[0].nlen, nlen);
				ck_assert_msg(memcmp(f[0].name, want, nlen) == 0,
				    "byte 0x%02x at %zu of %zu", b, pos, nlen);
				ck_assert_uint_eq(f[0].vlen, 1);
				ck_assert_int_eq(f[0].value[0], 'v');
			}
}
END_TEST

/* The value keeps its case; a line without a colon is skipped, unchanged.
 * A stray CR in a name or a value is part of the line, a value may start
 * with tabs, and a line cut before its CRLF ends the fields. */
START_TEST(test_fields_and_values)
{
	char text[] = "no colon here\r\nX-Upper-Name-Long: Mixed Case\r\nB:\r\n\r\nc: d\r\n";
	char odd[] = "Na\rMe: a\rb\r\nNO COLON\r\nT:\t\t v \r\nCut: x";
	struct h2_field f[4];

	/* the blank line ends them: c is not a field of this head */
	ck_assert_uint_eq(h2_fields(text, text + sizeof(text) - 1, f, 4), 2);
	assert_field(&f[0], "x-upper-name-long", "Mixed Case");
	assert_field(&f[1], "b", "");
	ck_assert(memcmp(text, "no colon here", 13) == 0);
	/* MAX bounds them */
	ck_assert_uint_eq(h2_fields(text, text + sizeof(text) - 1, f, 1), 1);
	ck_assert_uint_eq(h2_fields(text, text + sizeof(text) - 1, f, 0), 0);

	ck_assert_uint_eq(h2_fields(odd, odd + sizeof(odd) - 1, f, 4), 2);
	assert_field(&f[0], "na\rme", "a\rb");
	assert_field(&f[1], "t", "v ");
	ck_assert(memcmp(odd + 12, "NO COLON", 8) == 0);
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

/* A short name at the very end of the buffer, at every length: lowered
 * within it (ASan sees any byte read past the end). */
START_TEST(test_short_name_at_buffer_end)
{
	for (size_t nlen = 1; nlen <= 9; nlen++) {
		size_t len = nlen + 5;
		char *text = malloc(len);
		struct h2_field f[2];

		ck_assert_ptr_nonnull(text);
		memset(text, 'N', nlen);
		memcpy(text + nlen, ": v\r\n", 5);
		ck_assert_uint_eq(h2_fields(text, text + len, f, 2), 1);
		ck_assert_uint_eq(f[0].nlen, nlen);
		for (size_t i = 0; i < nlen; i++)
			ck_assert_int_eq(f[0].name[i], 'n');
		ck_assert_uint_eq(f[0].vlen, 1);
		free(text);
	}
}
END_TEST

/* The line-by-line reading h2_fields must agree with: the line's end is
 * the first CRLF, its name ends at its first colon. */
static size_t
reference_fields(char *p, char *end, struct h2_field *f, size_t max)
{
	size_t n = 0;

	while (n < max) {
		char *eol = NULL, *colon, *v;

		for (char *q = p; q + 1 < end; q++)
			if (q[0] == '\r' && q[1] == '\n') {
				eol = q;
				break;
			}
		if (eol == NULL || eol == p)
			break;
		if ((colon = memchr(p, ':', (size_t)(eol - p))) != NULL) {
			for (char *q = p; q < colon; q++)
				if (*q >= 'A' && *q <= 'Z')
					*q = (char)(*q + 32);
			for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
				;
			f[n++] = (struct h2_field){ p, v, (size_t)(colon - p), (size_t)(eol - v) };
		}
		p = eol + 2;
	}
	return n;
}

/* Random heads of the bytes that matter (colons, CRs, LFs, blanks, both
 * cases) at every length up to 200: the same fields, and the same text
 * after, as the reference reads them. */
START_TEST(test_fields_match_reference)
{
	static const char alphabet[] = "::\r\r\n\n  \taAzZ-09\x80\xff";
	unsigned seed = 12345;
	size_t total = 0;

	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(round % 200) + 1, k, kr;
		char *a = malloc(len), *b = malloc(len);
		struct h2_field fa[64], fb[64];

		ck_assert(a != NULL && b != NULL);
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			a[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		memcpy(b, a, len);
		k = h2_fields(a, a + len, fa, 64);
		kr = reference_fields(b, b + len, fb, 64);
		ck_assert_uint_eq(k, kr);
		total += k;
		ck_assert(memcmp(a, b, len) == 0);
		for (size_t i = 0; i < k; i++) {
			ck_assert_int_eq(fa[i].name - a, fb[i].name - b);
			ck_assert_int_eq(fa[i].value - a, fb[i].value - b);
			ck_assert_uint_eq(fa[i].nlen, fb[i].nlen);
			ck_assert_uint_eq(fa[i].vlen, fb[i].vlen);
		}
		free(a);
		free(b);
	}
	ck_assert_uint_gt(total, 10000);	/* the heads did have fields */
}
END_TEST

static Suite *
h2_frames_suite(void)
{
	Suite *s = suite_create("h2_frames");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_names_lowered_every_byte);
	tcase_add_test(tc, test_fields_and_values);
	tcase_add_test(tc, test_short_name_at_buffer_end);
	tcase_add_test(tc, test_fields_match_reference);
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
