/*
 * Hedged requests (SPEC §16): when no response head has arrived `after`
 * an attempt began, the same request goes to another endpoint too, and
 * the first response head wins.
 *
 * A hedge is a second exchange that proxy.c never hands to a client: it
 * holds a copy of the request and one attempt, its hedge_of points at the
 * exchange it races for, and its codec reports to it as to any other.
 * When its final head comes first, its attempt moves into the exchange's
 * own slot (the codec's handover op) and the exchange's attempt is
 * cancelled; when the exchange's own attempt fails, a racing hedge takes
 * its place the same way. A cancelled attempt records no outcome: no
 * breaker, outlier or EWMA penalty. Private to proxy.c and attempt.c.
 */
#ifndef FERRY_HEDGE_H
#define FERRY_HEDGE_H

#include "exchange.h"

/* The attempt just begun in X: when a hedge may follow (x->hedge_at_ms). */
void hedge_plan(struct exchange *x, int64_t now);
/* x->hedge_at_ms passed: sends the request to another endpoint too, when
 * it still may and the retry budget allows. */
void hedge_start(struct exchange *x, int64_t now);
/* X's request body has all arrived, after a hedge fell due: one may
 * follow `after` from now. */
void hedge_body_done(struct exchange *x, int64_t now);
/* Hedge H's response head (not a failure) came first: X takes it. */
void hedge_won(struct exchange *h);
/* Hedge H failed with R (counted against its endpoint); RECORD false:
 * refused before anything was learnt of its endpoint. */
void hedge_failed(struct exchange *h, enum attempt_result r, bool record);
/* X's own attempt failed (and was recorded): a racing hedge takes its
 * place. False when none races (or the deadline passed: they are
 * cancelled), and the failure takes its usual course. */
bool hedge_takeover(struct exchange *x);
/* X ends: every racing hedge is cancelled. */
void hedge_cancel_all(struct exchange *x);
/* X's own attempt answers: every racing hedge lost (attempt_lost). */
void hedge_lost_all(struct exchange *x);

#endif
