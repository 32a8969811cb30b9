/*
 * Retry policy (SPEC §6 Retries, Failures): whether a failed attempt is
 * tried again and after how long, and the per-service retry budget.
 *
 * Pure: the caller passes the time and a random number; nothing here reads
 * a clock, logs or allocates after retry_budget_new(). The conf is passed
 * on every call and never stored, so a reload that changes the numbers
 * applies at once while the budget's counts survive it.
 *
 * Order of use for one failed attempt:
 *	d = retry_decide(&svc->retries, &in, ids_random());
 *	if (d.retry && !retry_budget_take(budget, &svc->retries, now))
 *		-> no retry, retry_budget_exhausted_total++
 * so the budget counts only retries that the rules allowed.
 */
#ifndef FERRY_RETRY_H
#define FERRY_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* How one attempt ended; the non-OK ones are the failures of SPEC §6. */
enum attempt_result {
	AR_OK,			/* a response head other than 502/503/504 */
	AR_CONNECT_FAILURE,	/* TCP connect or TLS handshake failed, or timed out */
	AR_REFUSED,		/* ECONNREFUSED */
	AR_RESET,		/* reset or close before a complete response */
	AR_PER_TRY_TIMEOUT,	/* no response head within per_try */
	AR_STATUS_502,
	AR_STATUS_503,
	AR_STATUS_504,
};

/* What the breaker, outlier detection and retries count as a failure. */
bool attempt_is_failure(enum attempt_result r);
/* The retries.on bit (enum retry_on) of R; 0 for AR_OK. */
uint32_t attempt_retry_on(enum attempt_result r);

struct retry_input {
	enum attempt_result result;
	uint32_t retries_done;	/* retries already made (0 after the first attempt) */
	bool idempotent;	/* GET HEAD OPTIONS PUT DELETE TRACE, or Idempotency-Key */
	bool request_bytes_sent;/* any byte of the request went to write/SSL_write */
	bool replayable;	/* the whole request body is buffered (<= retries.buffer) */
	int64_t now_ms;
	int64_t deadline_ms;	/* the request deadline; INT64_MAX = none */
};

struct retry_decision {
	bool retry;
	int64_t delay_ms;	/* backoff before the retry; 0 when !retry */
	const char *why_not;	/* static string when !retry, NULL otherwise */
};

/*
 * One place decides (nginx ngx_http_upstream_next): no retry when the
 * attempt succeeded, the result is not in c->on, retries_done >= c->max,
 * the request is not idempotent and the result is not connect-failure or
 * refused (or any byte was sent), the body was streamed (not replayable)
 * and a byte was sent, or now + delay >= deadline.
 * delay is full-jitter exponential backoff: uniform in
 * [0, min(backoff_max, backoff_base * 2^retries_done)], drawn from RAND
 * (rand 0 gives 0, UINT64_MAX gives the cap).
 */
struct retry_decision retry_decide(const struct conf_retries *c,
    const struct retry_input *in, uint64_t rand);

/* The why_not strings, for comparison by pointer. */
extern const char retry_why_ok[];
extern const char retry_why_not_on[];
extern const char retry_why_max[];
extern const char retry_why_not_idempotent[];
extern const char retry_why_streamed[];
extern const char retry_why_deadline[];

/*
 * Retry budget of one service, shared by all workers (lock-free): over the
 * last 10 seconds, retries <= budget_ratio * original requests +
 * budget_min_per_second * 10. Owned by whoever keeps per-service runtime
 * state (it must outlive config reloads); free with retry_budget_free().
 */
struct retry_budget;

/* Requests are counted per worker, 0 .. N_WORKERS - 1 (any index is taken
 * modulo N_WORKERS); NULL when out of memory. */
struct retry_budget *retry_budget_new(unsigned n_workers);
void retry_budget_free(struct retry_budget *b);
/* Count an original request (not a retry), in WORKER's count. */
void retry_budget_request(struct retry_budget *b, unsigned worker, int64_t now_ms);
/* true, and the retry is counted, when the budget allows one more. */
bool retry_budget_take(struct retry_budget *b, const struct conf_retries *c,
    int64_t now_ms);
/* Counts in the current window, for tests and the admin page. */
void retry_budget_counts(struct retry_budget *b, int64_t now_ms,
    uint64_t *requests, uint64_t *retries);

#endif
