/*
 * Unit tests for src/deadline.c: reading x-ferry-deadline-ms from a
 * request head and writing it into the fixed-width slot (SPEC §16), and the
 * slot headers_build_request leaves for it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "deadline.h"
#include "headers.h"
#include "http1.h"
#include "sbuf.h"

static struct http_parser hp;
static struct http_head head;

static void
parse(const char *msg)
{
	size_t used;
	enum http_status st;

	http_parser_init(&hp, false, &head);
	st = http_parse(&hp, msg, strlen(msg), 0, &used);
	ck_assert_msg(st == HTTP_HEAD_DONE, "parse: status %d", st);
	ck_assert_int_eq(headers_classify(msg, &head), 0);
}

/* The deadline read from a request carrying the header lines LINES. */
static int64_t
read_lines(const char *lines, bool *malformed)
{
	static char msg[1024];

	snprintf(msg, sizeof(msg), "GET / HTTP/1.1\r\nHost: a\r\n%s\r\n", lines);
	parse(msg);
	return deadline_from_head(msg, &head, malformed);
}

START_TEST(test_read_plain)
{
	bool bad = true;

	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 950\r\n", &bad), 950);
	ck_assert(!bad);
	ck_assert_int_eq(read_lines("X-Ferry-Deadline-Ms: 0\r\n", &bad), 0);
	ck_assert(!bad);
	/* what ferry itself writes: padded on the left */
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms:        950 \r\n", &bad), 950);
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 000042\r\n", &bad), 42);
	ck_assert(!bad);
}
END_TEST

START_TEST(test_read_absent)
{
	bool bad = true;

	ck_assert_int_eq(read_lines("x-other: 5\r\n", &bad), -1);
	ck_assert(!bad);
	/* a look-alike is not the header (and is dropped, as ferry's own) */
	ck_assert_int_eq(read_lines("x_ferry_deadline_ms: 5\r\n", &bad), -1);
	ck_assert(!bad);
}
END_TEST

START_TEST(test_read_malformed)
{
	static const char *const bad_values[] = {
		"-5", "+5", "1.5", "5ms", "0x10", "1 2", "1,2", "abc", "1e3", "\xff",
	};
	char line[64];
	bool bad;

	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		snprintf(line, sizeof(line), "x-ferry-deadline-ms: %s\r\n", bad_values[i]);
		bad = false;
		ck_assert_msg(read_lines(line, &bad) == -1, "%s was read", bad_values[i]);
		ck_assert_msg(bad, "%s not reported", bad_values[i]);
	}
	bad = false;
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms:\r\n", &bad), -1);
	ck_assert(bad);
}
END_TEST

/* Huge values saturate instead of overflowing: they cap nothing. */
START_TEST(test_read_huge)
{
	bool bad = true;

	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 9999999999\r\n", &bad),
	    DEADLINE_MAX_MS);
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 10000000000\r\n", &bad),
	    DEADLINE_MAX_MS);
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: "
	    "99999999999999999999999999999999999999999999999999\r\n", &bad), DEADLINE_MAX_MS);
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 18446744073709551617\r\n", &bad),
	    DEADLINE_MAX_MS);
	ck_assert(!bad);
}
END_TEST

/* Every line is a cap: the smallest well-formed one wins, a malformed one
 * is skipped (and reported). */
START_TEST(test_read_many)
{
	bool bad = true;

	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: 900\r\n"
	    "x-ferry-deadline-ms: 300\r\nx-ferry-deadline-ms: 500\r\n", &bad), 300);
	ck_assert(!bad);
	ck_assert_int_eq(read_lines("x-ferry-deadline-ms: -1\r\n"
	    "x-ferry-deadline-ms: 700\r\n", &bad), 700);
	ck_assert(bad);
}
END_TEST

static const char *
written(int64_t left)
{
	static char buf[DEADLINE_DIGITS + 1];

	memset(buf, 'x', sizeof(buf));
	deadline_write(buf, left);
	ck_assert_int_eq(buf[DEADLINE_DIGITS], 'x');	/* not one byte more */
	buf[DEADLINE_DIGITS] = '\0';
	return buf;
}

START_TEST(test_write)
{
	ck_assert_str_eq(written(950), "       950");
	ck_assert_str_eq(written(0), "         0");
	ck_assert_str_eq(written(-20), "         0");
	ck_assert_str_eq(written(DEADLINE_MAX_MS), "9999999999");
	ck_assert_str_eq(written(INT64_MAX), "9999999999");
	ck_assert_str_eq(written(1000000000), "1000000000");
}
END_TEST

/* headers_build_request drops the request's lines and leaves one line
 * whose value starts at *deadline_at, DEADLINE_DIGITS wide. */
START_TEST(test_slot_in_request)
{
	static const char msg[] =
	    "GET / HTTP/1.1\r\nHost: a\r\nx-ferry-deadline-ms: 99\r\n"
	    "X-Ferry-Deadline-Ms: 5\r\nx-keep: 1\r\n\r\n";
	static const struct request_ids ids = {
		.correlation = "c", .correlation_len = 1, .request = "r", .request_len = 1,
	};
	struct sbuf out = { 0 };
	size_t at = 0;
	struct http_head back;
	struct http_parser p2;
	size_t used;
	bool bad;
	const char *first;

	parse(msg);
	headers_build_request(&out, msg, &head, &(struct upstream_head_args){
		.host = "svc", .target = "/", .target_len = 1, .ids = &ids,
		.via = "1.1 ferry-0badcafe-out", .deadline_at = &at,
	});
	ck_assert(!out.oom);
	ck_assert(at > 0 && at + DEADLINE_DIGITS + 2 <= out.len);
	deadline_write(out.p + at, 1234);
	sbuf_add(&out, "", 1);
	first = strstr(out.p, "eadline-ms");
	ck_assert_ptr_nonnull(first);
	ck_assert_msg(strstr(first + 1, "eadline-ms") == NULL, "two lines:\n%s", out.p);
	ck_assert_msg(strstr(out.p, "\r\nx-ferry-deadline-ms:       1234\r\n") != NULL,
	    "%s", out.p);
	ck_assert(strstr(out.p, "x-keep: 1\r\n") != NULL);
	/* and a parser reads it back as 1234 */
	http_parser_init(&p2, false, &back);
	ck_assert_int_eq(http_parse(&p2, out.p, out.len - 1, 0, &used), HTTP_HEAD_DONE);
	ck_assert_int_eq(headers_classify(out.p, &back), 0);
	ck_assert_int_eq(deadline_from_head(out.p, &back, &bad), 1234);
	sbuf_free(&out);
}
END_TEST

static Suite *
deadline_suite(void)
{
	Suite *s = suite_create("deadline");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_read_plain);
	tcase_add_test(tc, test_read_absent);
	tcase_add_test(tc, test_read_malformed);
	tcase_add_test(tc, test_read_huge);
	tcase_add_test(tc, test_read_many);
	tcase_add_test(tc, test_write);
	tcase_add_test(tc, test_slot_in_request);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(deadline_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
