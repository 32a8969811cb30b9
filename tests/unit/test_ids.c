/*
 * Unit tests for src/ids.c: UUIDv4, W3C traceparent, ID validation.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "ids.h"

#define N_DRAWS 10000

static bool
is_lowerhex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool
valid_s(const char *s)
{
	return ids_valid(s, strlen(s));
}

static bool
tp_valid_s(const char *s)
{
	return ids_traceparent_valid(s, strlen(s));
}

static void
check_uuid_format(const char *u)
{
	for (int i = 0; i < UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			ck_assert_msg(u[i] == '-', "uuid %.36s: no '-' at %d", u, i);
			continue;
		}
		ck_assert_msg(is_lowerhex(u[i]), "uuid %.36s: byte %d not lowercase hex",
		    u, i);
	}
	ck_assert_msg(u[14] == '4', "uuid %.36s: version nibble not 4", u);
	ck_assert_msg(strchr("89ab", u[19]) != NULL, "uuid %.36s: variant not 10xx", u);
}

START_TEST(test_uuid4_format)
{
	char buf[UUID_LEN + 8];

	ck_assert_int_eq(UUID_LEN, 36);
	for (int n = 0; n < 1000; n++) {
		memset(buf, 'Z', sizeof(buf));
		ids_uuid4(buf);
		check_uuid_format(buf);
		/* exactly UUID_LEN bytes written, no NUL */
		for (size_t i = UUID_LEN; i < sizeof(buf); i++)
			ck_assert_int_eq(buf[i], 'Z');
		/* a generated UUID is a valid x-request-id */
		ck_assert(ids_valid(buf, UUID_LEN));
	}
}
END_TEST

START_TEST(test_uuid4_variants)
{
	bool seen[4] = { false };
	char u[UUID_LEN];

	/* all four variant digits 8, 9, a, b show up */
	for (int n = 0; n < 2000; n++) {
		ids_uuid4(u);
		seen[strchr("89ab", u[19]) - "89ab"] = true;
	}
	for (int i = 0; i < 4; i++)
		ck_assert_msg(seen[i], "variant digit %c never drawn", "89ab"[i]);
}
END_TEST

static int
cmp_uuid(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

START_TEST(test_uuid4_unique)
{
	char (*u)[UUID_LEN] = calloc(N_DRAWS, UUID_LEN);

	ck_assert_ptr_nonnull(u);
	for (int i = 0; i < N_DRAWS; i++) {
		ids_uuid4(u[i]);
		check_uuid_format(u[i]);
	}
	qsort(u, N_DRAWS, UUID_LEN, cmp_uuid);
	for (int i = 1; i < N_DRAWS; i++)
		ck_assert_msg(memcmp(u[i - 1], u[i], UUID_LEN) != 0,
		    "duplicate uuid %.36s", u[i]);
	free(u);
}
END_TEST

/* Every random position of ID (N_DRAWN of them, at POS) draws each of
 * the 16 hex digits within 2000 ids: a skewed digit table or a nibble
 * never used would leave one out (a fair one misses with p < 1e-50). */
static void
check_all_digits(void (*make)(char *), size_t len, const int *pos, size_t n_pos)
{
	static const char digits[] = "0123456789abcdef";
	uint16_t seen[64] = { 0 };
	char id[128];

	ck_assert_uint_le(n_pos, 64);
	ck_assert_uint_le(len, sizeof(id));
	for (int n = 0; n < 2000; n++) {
		make(id);
		for (size_t i = 0; i < n_pos; i++) {
			const char *d = strchr(digits, id[pos[i]]);

			ck_assert_msg(d != NULL && id[pos[i]] != '\0', "not hex: %.*s", (int)len, id);
			seen[i] |= (uint16_t)(1u << (d - digits));
		}
	}
	for (size_t i = 0; i < n_pos; i++)
		ck_assert_msg(seen[i] == 0xffff, "position %d drew digits 0x%04x only",
		    pos[i], seen[i]);
}

START_TEST(test_uuid4_uses_all_digits)
{
	int pos[30];
	size_t n = 0;

	/* all but the dashes, the version (14) and the variant (19) */
	for (int i = 0; i < UUID_LEN; i++)
		if (i != 8 && i != 13 && i != 18 && i != 23 && i != 14 && i != 19)
			pos[n++] = i;
	ck_assert_uint_eq(n, 30);
	check_all_digits(ids_uuid4, UUID_LEN, pos, n);
}
END_TEST

START_TEST(test_traceparent_uses_all_digits)
{
	int pos[48];
	size_t n = 0;

	for (int i = 3; i < 35; i++)		/* trace-id */
		pos[n++] = i;
	for (int i = 36; i < 52; i++)		/* parent-id */
		pos[n++] = i;
	check_all_digits(ids_traceparent, TRACEPARENT_LEN, pos, n);
}
END_TEST

START_TEST(test_random_varies)
{
	uint64_t a = ids_random(), b = ids_random(), c = ids_random();

	ck_assert(a != b || b != c);
	ids_thread_init();
	ck_assert(ids_random() != ids_random() || ids_random() != ids_random());
}
END_TEST

START_TEST(test_valid_lengths)
{
	char s[200];

	memset(s, 'a', sizeof(s));
	ck_assert(!ids_valid(s, 0));
	ck_assert(!ids_valid("", 0));
	ck_assert(ids_valid(s, 1));
	ck_assert(ids_valid(s, 64));
	ck_assert(ids_valid(s, 127));
	ck_assert(ids_valid(s, 128));
	ck_assert(!ids_valid(s, 129));
	ck_assert(!ids_valid(s, 200));
}
END_TEST

START_TEST(test_valid_charset)
{
	ck_assert(valid_s("abcdefghijklmnopqrstuvwxyz"));
	ck_assert(valid_s("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
	ck_assert(valid_s("0123456789"));
	ck_assert(valid_s("._:-"));
	ck_assert(valid_s("req-1.2_3:4"));
	ck_assert(valid_s("123e4567-e89b-12d3-a456-426614174000"));
	ck_assert(valid_s("-"));
	ck_assert(valid_s(":"));

	ck_assert(!valid_s("a b"));
	ck_assert(!valid_s(" a"));
	ck_assert(!valid_s("a "));
	ck_assert(!valid_s("a/b"));
	ck_assert(!valid_s("a\tb"));
	ck_assert(!valid_s("a+b"));
	ck_assert(!valid_s("a@b"));
	ck_assert(!valid_s("a,b"));
	ck_assert(!valid_s("a;b"));
	ck_assert(!valid_s("a\"b"));
	ck_assert(!valid_s("a=b"));
	ck_assert(!valid_s("a\\b"));
	ck_assert(!valid_s("caf\xc3\xa9"));		/* é */
	ck_assert(!valid_s("\xe2\x82\xac"));		/* € */
	ck_assert(!valid_s("a\r\nb"));
	ck_assert(!valid_s("a\x7f"));
	ck_assert(!valid_s("\xff"));
	/* an embedded NUL is not a terminator */
	ck_assert(!ids_valid("ab\0cd", 5));
	ck_assert(ids_valid("ab\0cd", 2));
}
END_TEST

START_TEST(test_valid_every_byte)
{
	for (int c = 0; c < 256; c++) {
		char s[3] = { 'x', (char)c, 'y' };
		bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';

		ck_assert_msg(ids_valid(s, 3) == want, "byte 0x%02x", c);
	}
}
END_TEST

START_TEST(test_traceparent_format)
{
	char buf[TRACEPARENT_LEN + 8];

	ck_assert_int_eq(TRACEPARENT_LEN, 55);
	for (int n = 0; n < 1000; n++) {
		memset(buf, 'Z', sizeof(buf));
		ids_traceparent(buf);
		ck_assert_mem_eq(buf, "00-", 3);
		for (int i = 3; i < 35; i++)
			ck_assert_msg(is_lowerhex(buf[i]), "trace-id byte %d: %.55s", i, buf);
		ck_assert_int_eq(buf[35], '-');
		for (int i = 36; i < 52; i++)
			ck_assert_msg(is_lowerhex(buf[i]), "parent-id byte %d: %.55s", i, buf);
		ck_assert_mem_eq(buf + 52, "-01", 3);
		ck_assert(memcmp(buf + 3, "00000000000000000000000000000000", 32) != 0);
		ck_assert(memcmp(buf + 36, "0000000000000000", 16) != 0);
		for (size_t i = TRACEPARENT_LEN; i < sizeof(buf); i++)
			ck_assert_int_eq(buf[i], 'Z');
		ck_assert_msg(ids_traceparent_valid(buf, TRACEPARENT_LEN),
		    "generated traceparent refused: %.55s", buf);
	}
}
END_TEST

START_TEST(test_traceparent_unique)
{
	char a[TRACEPARENT_LEN], b[TRACEPARENT_LEN];

	for (int n = 0; n < 1000; n++) {
		ids_traceparent(a);
		ids_traceparent(b);
		ck_assert(memcmp(a + 3, b + 3, 32) != 0);
		ck_assert(memcmp(a + 36, b + 36, 16) != 0);
	}
}
END_TEST

#define TP_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define TP_PARENT "00f067aa0ba902b7"
#define TP_OK "00-" TP_TRACE "-" TP_PARENT "-01"

START_TEST(test_traceparent_valid_ok)
{
	ck_assert_int_eq(strlen(TP_OK), TRACEPARENT_LEN);
	ck_assert(tp_valid_s(TP_OK));
	ck_assert(tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-00"));
	ck_assert(tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-ff"));
	/* only one nonzero nibble is enough */
	ck_assert(tp_valid_s("00-00000000000000000000000000000001-0000000000000001-01"));
}
END_TEST

START_TEST(test_traceparent_valid_case)
{
	ck_assert(!tp_valid_s("00-4BF92F3577B34DA6A3CE929D0E0E4736-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-4bf92f3577b34da6a3ce929d0e0e473A-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-00F067AA0BA902B7-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-0A"));
	ck_assert(!tp_valid_s("0A-" TP_TRACE "-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-4bf92f3577b34da6a3ce929d0e0e473g-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-0g"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-+1"));
}
END_TEST

START_TEST(test_traceparent_valid_zero)
{
	ck_assert(!tp_valid_s("00-00000000000000000000000000000000-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-0000000000000000-01"));
	ck_assert(!tp_valid_s("00-00000000000000000000000000000000-0000000000000000-01"));
}
END_TEST

START_TEST(test_traceparent_valid_version)
{
	ck_assert(!tp_valid_s("ff-" TP_TRACE "-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("FF-" TP_TRACE "-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("ff-" TP_TRACE "-" TP_PARENT "-01-extra"));
	/* a future version of the exact length */
	ck_assert(tp_valid_s("01-" TP_TRACE "-" TP_PARENT "-01"));
	ck_assert(tp_valid_s("cc-" TP_TRACE "-" TP_PARENT "-01"));
	/* a future version may append "-..." fields */
	ck_assert(tp_valid_s("01-" TP_TRACE "-" TP_PARENT "-01-suffix"));
	ck_assert(tp_valid_s("fe-" TP_TRACE "-" TP_PARENT "-01-"));
	/* but the next byte must be the dash */
	ck_assert(!tp_valid_s("01-" TP_TRACE "-" TP_PARENT "-01suffix"));
	ck_assert(!tp_valid_s("01-" TP_TRACE "-" TP_PARENT "-011"));
	/* version 00 is exactly 55 bytes */
	ck_assert(!tp_valid_s(TP_OK "-suffix"));
	ck_assert(!tp_valid_s(TP_OK "-"));
	ck_assert(!tp_valid_s(TP_OK "0"));
	ck_assert(!tp_valid_s(TP_OK " "));
}
END_TEST

START_TEST(test_traceparent_valid_length)
{
	char s[TRACEPARENT_LEN + 1];

	memcpy(s, TP_OK, TRACEPARENT_LEN);
	for (size_t len = 0; len < TRACEPARENT_LEN; len++)
		ck_assert_msg(!ids_traceparent_valid(s, len), "prefix of %zu accepted", len);
	ck_assert(ids_traceparent_valid(s, TRACEPARENT_LEN));
	/* short fields */
	ck_assert(!tp_valid_s("00-4bf92f3577b34da6a3ce929d0e0e473-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-00f067aa0ba902b-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "-1"));
	ck_assert(!tp_valid_s("0-" TP_TRACE "-" TP_PARENT "-01"));
	/* fields of the wrong length, total length right */
	ck_assert(!tp_valid_s("00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "0-1"));
	ck_assert(!tp_valid_s("000-4bf92f3577b34da6a3ce929d0e0e473-" TP_PARENT "-01"));
}
END_TEST

/* TP has an all-zero id at [FROM, TO): refused, and taken with any one
 * of its digits made non-zero. */
static void
check_zero_id(const char *tp, int from, int to)
{
	char t[TRACEPARENT_LEN + 1];

	memcpy(t, tp, sizeof(t));
	ck_assert(!ids_traceparent_valid(t, TRACEPARENT_LEN));
	for (int pos = from; pos < to; pos++) {
		t[pos] = "1a"[pos % 2];
		ck_assert_msg(ids_traceparent_valid(t, TRACEPARENT_LEN), "%c at %d", t[pos], pos);
		t[pos] = '0';
	}
}

/* The hex check reads eight bytes at a time: every byte value, at every
 * position of the trace-id and parent-id, is judged as a byte-by-byte
 * reading would. */
START_TEST(test_traceparent_valid_every_byte)
{
	char tp[TRACEPARENT_LEN + 1];

	for (int pos = 3; pos < 52; pos++) {
		if (pos == 35)
			continue;
		for (unsigned b = 0; b < 256; b++) {
			bool hex = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f');

			memcpy(tp, TP_OK, sizeof(tp));
			tp[pos] = (char)b;
			ck_assert_msg(ids_traceparent_valid(tp, TRACEPARENT_LEN) == hex,
			    "byte 0x%02x at %d", b, pos);
		}
	}
	/* all zero in either id is refused, one digit off zero is not */
	check_zero_id("00-00000000000000000000000000000000-" TP_PARENT "-01", 3, 35);
	check_zero_id("00-" TP_TRACE "-0000000000000000-01", 36, 52);
}
END_TEST

START_TEST(test_traceparent_valid_separators)
{
	ck_assert(!tp_valid_s("00_" TP_TRACE "-" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "_" TP_PARENT "-01"));
	ck_assert(!tp_valid_s("00-" TP_TRACE "-" TP_PARENT "_01"));
	ck_assert(!tp_valid_s("00 " TP_TRACE " " TP_PARENT " 01"));
	/* an embedded NUL */
	ck_assert(!ids_traceparent_valid(
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7\0-01",
	    TRACEPARENT_LEN));
}
END_TEST

static Suite *
ids_suite(void)
{
	Suite *s = suite_create("ids");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_uuid4_format);
	tcase_add_test(tc, test_uuid4_variants);
	tcase_add_test(tc, test_uuid4_unique);
	tcase_add_test(tc, test_uuid4_uses_all_digits);
	tcase_add_test(tc, test_traceparent_uses_all_digits);
	tcase_add_test(tc, test_random_varies);
	tcase_add_test(tc, test_valid_lengths);
	tcase_add_test(tc, test_valid_charset);
	tcase_add_test(tc, test_valid_every_byte);
	tcase_add_test(tc, test_traceparent_format);
	tcase_add_test(tc, test_traceparent_unique);
	tcase_add_test(tc, test_traceparent_valid_ok);
	tcase_add_test(tc, test_traceparent_valid_case);
	tcase_add_test(tc, test_traceparent_valid_zero);
	tcase_add_test(tc, test_traceparent_valid_version);
	tcase_add_test(tc, test_traceparent_valid_length);
	tcase_add_test(tc, test_traceparent_valid_separators);
	tcase_add_test(tc, test_traceparent_valid_every_byte);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ids_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
