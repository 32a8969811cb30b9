/*
 * Unit tests for src/fate.c (SPEC §16: the fate of each request, and the
 * list of its attempts).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <check.h>

#include "fate.h"

/* What a request that got the upstream's 200 on its first try records. */
static struct fate_input
served(void)
{
	return (struct fate_input){
		.cause = END_DONE, .ferr = -1, .status = 200, .last = AR_OK,
	};
}

/* ferry's own error E after the last attempt ended with LAST. */
static struct fate_input
ferry_error(enum ferry_error e, int last, uint32_t retries)
{
	return (struct fate_input){
		.cause = END_DONE, .ferr = (int)e, .status = (uint32_t)ferror_status(e),
		.retries = retries, .last = last,
	};
}

START_TEST(test_names_closed_list)
{
	static const char *const want[FATE_COUNT] = {
		"ok", "ok_after_retry", "ok_by_hedge", "upstream_error", "timeout",
		"connect_failed", "reset", "breaker_open", "rate_limited",
		"over_concurrency", "no_endpoint", "budget_exhausted", "rejected",
		"client_gone", "shutdown",
	};

	for (int f = 0; f < FATE_COUNT; f++)
		ck_assert_str_eq(fate_name((enum fate)f), want[f]);
	ck_assert_str_eq(fate_name(FATE_COUNT), "unknown");
}
END_TEST

START_TEST(test_served)
{
	struct fate_input in = served();

	ck_assert_int_eq(fate_derive(&in), FATE_OK);
	/* the upstream's own 4xx is its answer: ok */
	in.status = 404;
	ck_assert_int_eq(fate_derive(&in), FATE_OK);
	in.status = 200;
	in.retries = 1;
	ck_assert_int_eq(fate_derive(&in), FATE_OK_AFTER_RETRY);
	in.won_by_hedge = true;
	ck_assert_int_eq(fate_derive(&in), FATE_OK_BY_HEDGE);
}
END_TEST

/* The upstream's own 5xx reached the app: upstream_error, whatever
 * stopped the retries (max, budget, breaker). */
START_TEST(test_upstream_error)
{
	struct fate_input in = served();

	in.status = 503;
	in.last = AR_STATUS_503;
	ck_assert_int_eq(fate_derive(&in), FATE_UPSTREAM_ERROR);
	in.budget_refused = true;
	in.retries = 2;
	ck_assert_int_eq(fate_derive(&in), FATE_UPSTREAM_ERROR);
	in = served();
	in.status = 500;	/* not retried, still the upstream's 5xx */
	ck_assert_int_eq(fate_derive(&in), FATE_UPSTREAM_ERROR);
	/* gRPC: a trailers-only UNAVAILABLE, its 503, in an HTTP 200 */
	in = served();
	in.last = AR_STATUS_503;
	ck_assert_int_eq(fate_derive(&in), FATE_UPSTREAM_ERROR);
}
END_TEST

START_TEST(test_ferry_errors_after_attempts)
{
	struct fate_input in;

	in = ferry_error(FE_SERVICE_UNAVAILABLE, AR_REFUSED, 2);
	ck_assert_int_eq(fate_derive(&in), FATE_CONNECT_FAILED);
	in = ferry_error(FE_SERVICE_UNAVAILABLE, AR_CONNECT_FAILURE, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_CONNECT_FAILED);
	/* a connect that timed out: ferry's 504, but the connect failed */
	in = ferry_error(FE_SERVICE_TIMEOUT, AR_CONNECT_FAILURE, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_CONNECT_FAILED);
	in = ferry_error(FE_SERVICE_ERROR, AR_RESET, 2);
	ck_assert_int_eq(fate_derive(&in), FATE_RESET);
	in = ferry_error(FE_SERVICE_TIMEOUT, AR_PER_TRY_TIMEOUT, 1);
	ck_assert_int_eq(fate_derive(&in), FATE_TIMEOUT);
	/* the grpc-timeout passed after the head (attempt ok) */
	in = ferry_error(FE_SERVICE_TIMEOUT, AR_OK, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_TIMEOUT);
	/* a deadline spent on arrival: no attempt */
	in = ferry_error(FE_SERVICE_TIMEOUT, -1, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_TIMEOUT);
	/* gRPC to an http1 service: refused before any attempt */
	in = ferry_error(FE_SERVICE_ERROR, -1, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_REJECTED);
	/* a 503 with nothing to try */
	in = ferry_error(FE_SERVICE_UNAVAILABLE, -1, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_NO_ENDPOINT);
}
END_TEST

/* budget_exhausted: ferry's own error answered because the budget
 * refused the retry that would have followed. */
START_TEST(test_budget_exhausted)
{
	struct fate_input in = ferry_error(FE_SERVICE_UNAVAILABLE, AR_REFUSED, 0);

	in.budget_refused = true;
	ck_assert_int_eq(fate_derive(&in), FATE_BUDGET_EXHAUSTED);
	in = ferry_error(FE_SERVICE_TIMEOUT, AR_PER_TRY_TIMEOUT, 1);
	in.budget_refused = true;
	ck_assert_int_eq(fate_derive(&in), FATE_BUDGET_EXHAUSTED);
}
END_TEST

START_TEST(test_refusals)
{
	static const enum fate refusals[] = {
		FATE_BREAKER_OPEN, FATE_OVER_CONCURRENCY, FATE_NO_ENDPOINT,
		FATE_RATE_LIMITED,
	};
	struct fate_input in;

	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		in = ferry_error(refusals[i] == FATE_RATE_LIMITED ? FE_RATE_LIMITED :
		    FE_SERVICE_UNAVAILABLE, -1, 0);
		in.refused = refusals[i];
		ck_assert_int_eq(fate_derive(&in), refusals[i]);
	}
	/* after a 503 and a retry, no endpoint left to try: the refusal names it */
	in = ferry_error(FE_SERVICE_UNAVAILABLE, AR_STATUS_503, 1);
	in.refused = FATE_NO_ENDPOINT;
	ck_assert_int_eq(fate_derive(&in), FATE_NO_ENDPOINT);
	/* a 429 is rate_limited even without the mark */
	in = ferry_error(FE_RATE_LIMITED, -1, 0);
	ck_assert_int_eq(fate_derive(&in), FATE_RATE_LIMITED);
}
END_TEST

START_TEST(test_rejected)
{
	static const enum ferry_error four[] = {
		FE_BAD_REQUEST, FE_INVALID_SERVICE_AUTH, FE_UNKNOWN_SERVICE,
		FE_METHOD_NOT_ALLOWED, FE_REQUEST_TIMEOUT, FE_PAYLOAD_TOO_LARGE,
		FE_HEADERS_TOO_LARGE, FE_LOOP_DETECTED,
	};

	for (size_t i = 0; i < sizeof(four) / sizeof(four[0]); i++) {
		struct fate_input in = ferry_error(four[i], -1, 0);

		ck_assert_int_eq(fate_derive(&in), FATE_REJECTED);
	}
}
END_TEST

/* A cut: the cause decides, before anything else. */
START_TEST(test_cuts)
{
	static const struct {
		enum end_cause cause;
		enum fate fate;
	} want[] = {
		{ END_CLIENT_CLOSED, FATE_CLIENT_GONE },
		{ END_CLIENT_READ_ERROR, FATE_CLIENT_GONE },
		{ END_CLIENT_WRITE_FAILED, FATE_CLIENT_GONE },
		{ END_UPSTREAM_CLOSED, FATE_RESET },
		{ END_MALFORMED_UPSTREAM_BODY, FATE_RESET },
		{ END_MALFORMED_REQUEST_BODY, FATE_REJECTED },
		{ END_REQUEST_BODY_TOO_LARGE, FATE_REJECTED },
		{ END_REQUEST_TRAILERS_TOO_LARGE, FATE_REJECTED },
		{ END_OUT_OF_MEMORY, FATE_RESET },
		{ END_STREAM_IDLE, FATE_TIMEOUT },
		{ END_SHUTDOWN, FATE_SHUTDOWN },
		{ END_DEADLINE, FATE_TIMEOUT },
		/* a decoded response cut on the way, as a malformed one is */
		{ END_DECOMPRESSION_BOMB, FATE_RESET },
		/* refused by ferry's authentication, as its 403 is */
		{ END_PEER_UNTRUSTED, FATE_REJECTED },
		/* ferry closed a connection the client held in a header
		 * block past header_read_timeout, as that block's 408 is */
		{ END_CLIENT_TIMEOUT, FATE_REJECTED },
		/* ... or that broke HTTP/2's rules (a GOAWAY with an error) */
		{ END_CLIENT_PROTOCOL_ERROR, FATE_REJECTED },
	};

	ck_assert_int_eq(sizeof(want) / sizeof(want[0]), END_COUNT - 1);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct fate_input in = served();

		in.cause = want[i].cause;
		ck_assert_int_eq(fate_derive(&in), want[i].fate);
		/* waiting with no answer yet */
		in.status = 0;
		in.last = -1;
		ck_assert_int_eq(fate_derive(&in), want[i].fate);
	}
}
END_TEST

static struct attempt_note
note(uint16_t port, uint8_t result, uint32_t ms)
{
	return (struct attempt_note){
		.addr = { 10, 0, 0, 5 }, .port = port, .family = AF_INET,
		.result = result, .ms = ms,
	};
}

static char *
notes_text(const struct attempt_notes *ns)
{
	struct sbuf o = { 0 };

	fate_notes_json(&o, ns, NULL);
	sbuf_add(&o, "", 1);
	ck_assert(!o.oom);
	return o.p;
}

START_TEST(test_notes_json)
{
	struct attempt_notes ns = { 0 };
	struct attempt_note v6 = { .port = 443, .family = AF_INET6, .result = AR_STATUS_504,
	    .ms = 4294967295u };
	char *t;

	t = notes_text(&ns);
	ck_assert_str_eq(t, "[]");
	free(t);
	memcpy(v6.addr, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	fate_note_add(&ns, &(struct attempt_note){ .result = NOTE_CANCELLED });
	fate_note_add(&ns, &v6);
	t = notes_text(&ns);
	ck_assert_str_eq(t, "[{\"endpoint\":null,\"result\":\"cancelled\",\"ms\":0},"
	    "{\"endpoint\":\"[2001:db8::1]:443\",\"result\":\"504\",\"ms\":4294967295}]");
	free(t);
	/* IPv4 at its widest and narrowest, as inet_ntop writes it */
	ns = (struct attempt_notes){ 0 };
	fate_note_add(&ns, &(struct attempt_note){ .addr = { 255, 250, 100, 99 }, .port = 65535,
	    .family = AF_INET, .result = AR_STATUS_502 });
	fate_note_add(&ns, &(struct attempt_note){ .addr = { 0, 0, 0, 0 }, .port = 0,
	    .family = AF_INET, .result = AR_STATUS_502, .ms = 1 });
	t = notes_text(&ns);
	ck_assert_str_eq(t, "[{\"endpoint\":\"255.250.100.99:65535\",\"result\":\"502\",\"ms\":0},"
	    "{\"endpoint\":\"0.0.0.0:0\",\"result\":\"502\",\"ms\":1}]");
	free(t);
	ck_assert_str_eq(fate_result_name(AR_PER_TRY_TIMEOUT), "timeout");
	ck_assert_str_eq(fate_result_name(AR_STATUS_502), "502");
	ck_assert_str_eq(fate_result_name(200), "unknown");
}
END_TEST

/* Bounded: the first FATE_MAX_NOTES - 1 stay, the last slot follows the
 * latest attempt. */
START_TEST(test_notes_cap)
{
	struct attempt_notes ns = { 0 };
	char *t;

	for (uint16_t i = 1; i <= 20; i++)
		fate_note_add(&ns, &(struct attempt_note){ .port = i, .result = AR_RESET });
	ck_assert_uint_eq(ns.count, FATE_MAX_NOTES);
	for (unsigned i = 0; i < FATE_MAX_NOTES - 1; i++)
		ck_assert_uint_eq(ns.n[i].port, i + 1);
	ck_assert_uint_eq(ns.n[FATE_MAX_NOTES - 1].port, 20);
	/* a hedge cancelled after the deciding attempt leaves it listed;
	 * cancelled ones follow each other */
	fate_note_add(&ns, &(struct attempt_note){ .port = 21, .result = NOTE_CANCELLED });
	ck_assert_uint_eq(ns.n[FATE_MAX_NOTES - 1].port, 20);
	ns.n[FATE_MAX_NOTES - 1].result = NOTE_CANCELLED;
	fate_note_add(&ns, &(struct attempt_note){ .port = 22, .result = NOTE_CANCELLED });
	ck_assert_uint_eq(ns.n[FATE_MAX_NOTES - 1].port, 22);
	fate_note_add(&ns, &(struct attempt_note){ .port = 23, .result = AR_OK });
	ck_assert_uint_eq(ns.n[FATE_MAX_NOTES - 1].port, 23);

	ns.count = 0;
	fate_note_add(&ns, (const struct attempt_note[]){ note(5000, AR_REFUSED, 2) });
	fate_note_add(&ns, (const struct attempt_note[]){ note(5001, AR_OK, 9) });
	t = notes_text(&ns);
	ck_assert_str_eq(t, "[{\"endpoint\":\"10.0.0.5:5000\",\"result\":\"refused\",\"ms\":2},"
	    "{\"endpoint\":\"10.0.0.5:5001\",\"result\":\"ok\",\"ms\":9}]");
	free(t);
}
END_TEST

static Suite *
fate_suite(void)
{
	Suite *s = suite_create("fate");
	TCase *t = tcase_create("core");

	tcase_add_test(t, test_names_closed_list);
	tcase_add_test(t, test_served);
	tcase_add_test(t, test_upstream_error);
	tcase_add_test(t, test_ferry_errors_after_attempts);
	tcase_add_test(t, test_budget_exhausted);
	tcase_add_test(t, test_refusals);
	tcase_add_test(t, test_rejected);
	tcase_add_test(t, test_cuts);
	tcase_add_test(t, test_notes_json);
	tcase_add_test(t, test_notes_cap);
	suite_add_tcase(s, t);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(fate_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
