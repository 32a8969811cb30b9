/*
 * Circuit breaker and max_concurrent of one service (SPEC §6), shared by
 * all workers through C11 atomics, no locks.
 *
 * Pure: the caller passes the time; nothing here reads a clock, logs or
 * allocates after breaker_new(). The conf is passed on every call and
 * never stored, so the state survives a reload that changes the numbers
 * (open_for, thresholds) and the new numbers apply at once.
 *
 * Use per request:
 *	if (!breaker_enter(b, c)) -> 503, retry-after: 1
 *	v = breaker_allow(b, c, now, &ra);	(for every attempt)
 *	REJECT -> 503 with retry-after (or stop retrying)
 *	PASS/PROBE -> attempt, then breaker_record(b, c, v, failure, now)
 *	breaker_leave(b) after the last byte
 * Every PROBE must end in breaker_record() or breaker_cancel(); a probe
 * that never does frees its place after another open_for (a safety net,
 * so a lost record cannot wedge the breaker half-open).
 */
#ifndef FERRY_BREAKER_H
#define FERRY_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* The values are those of the circuit_state metric. */
enum breaker_state {
	BREAKER_CLOSED = 0,	/* requests pass; consecutive failures counted */
	BREAKER_OPEN = 1,	/* requests rejected until open_for has passed */
	BREAKER_HALF_OPEN = 2,	/* half_open_requests probes pass, the rest wait */
};

enum breaker_verdict {
	BREAKER_PASS,		/* go ahead, record the outcome */
	BREAKER_PROBE,		/* go ahead as a half-open probe, record it */
	BREAKER_REJECT,		/* do not send; 503 with retry-after */
};

/* Owned by the per-service runtime state (outlives reloads). */
struct breaker;

struct breaker *breaker_new(void);	/* NULL when out of memory */
void breaker_free(struct breaker *b);

/*
 * REJECT sets *retry_after_ms to the time until half-open (>= 1); a
 * request turned away in half-open because the probes are out gets 1000
 * (the probe usually settles it within that). consecutive_failures == 0
 * disables the breaker: always PASS.
 */
enum breaker_verdict breaker_allow(struct breaker *b, const struct conf_breaker *c,
    int64_t now_ms, int64_t *retry_after_ms);

/*
 * The outcome of an attempt that got PASS or PROBE (REJECT is ignored).
 * Closed: a failure adds to the consecutive count, a success clears it;
 * at consecutive_failures the breaker opens. Half-open: a probe's failure
 * re-opens it, its success closes it. Outcomes of requests let through
 * before the breaker opened are ignored while it is open. Each opening,
 * re-openings included, counts in breaker_opened_total().
 */
void breaker_record(struct breaker *b, const struct conf_breaker *c,
    enum breaker_verdict v, bool failure, int64_t now_ms);

/*
 * An attempt that got V ended with no outcome (the client went away, the
 * request was cancelled): nothing is learnt, and a PROBE gives its place
 * back so another request can probe. Use instead of breaker_record().
 */
void breaker_cancel(struct breaker *b, enum breaker_verdict v);

/* The state at NOW: open turns half-open by time alone. */
enum breaker_state breaker_state(struct breaker *b, const struct conf_breaker *c,
    int64_t now_ms);
uint64_t breaker_opened_total(struct breaker *b);
/* Consecutive failures while closed (for tests and the admin page). */
uint32_t breaker_failures(struct breaker *b);

/* max_concurrent: requests from admission to their last byte, a retried
 * request counting once. false (nothing counted) when at the limit. */
bool breaker_enter(struct breaker *b, const struct conf_breaker *c);
void breaker_leave(struct breaker *b);
uint32_t breaker_in_flight(struct breaker *b);

#endif
