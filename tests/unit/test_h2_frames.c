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

static Suite *
h2_frames_suite(void)
{
	Suite *s = suite_create("h2_frames");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_names_lowered_every_byte);
	tcase_add_test(tc, test_fields_and_values);
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
