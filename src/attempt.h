/*
 * Upstream attempts of one exchange (attempt.c): the endpoint choice, the
 * pool bound, the outcome that the breaker, outlier detection and the
 * balancer learn, and whether another attempt follows. Private to proxy.c
 * and attempt.c; codecs report through exchange.h.
 */
#ifndef FERRY_ATTEMPT_H
#define FERRY_ATTEMPT_H

#include "exchange.h"

/* Picks an endpoint and starts an attempt on it, or answers 503. */
void attempt_start(struct exchange *x);
/* The balancer's choice for X, or NULL; HEDGE: not an endpoint X or one
 * of its hedges is on. */
struct endpoint *attempt_pick(struct exchange *x, int64_t now, bool hedge);
/* EP's connections are below pool.max_per_endpoint (or it has none). */
bool attempt_pool_below_bound(const struct exchange *x, const struct endpoint *ep);
/* EP has an idle connection, or room for one more (pool.max_per_endpoint). */
bool attempt_pool_room(const struct exchange *x, const struct endpoint *ep);
/* Starts an attempt of X on EP. */
void attempt_begin(struct exchange *x, struct endpoint *ep, int64_t now);
/* The attempt's outcome, once. */
void attempt_record(struct exchange *x, enum attempt_result r);
/* An attempt ends without an outcome and is not listed (a re-send). */
void attempt_drop(struct exchange *x);
/* X names x->ep while nothing of it counts there (see attempt.c), and
 * no longer; attempt_start() and the end of X let go. */
void attempt_hold(struct exchange *x);
void attempt_unhold(struct exchange *x);
/* An attempt ends without an outcome (the client went away, shutdown):
 * listed as "cancelled". */
void attempt_cancel(struct exchange *x);
/* The same for an attempt that lost a race: its endpoint's EWMA learns
 * that it was at least this slow. */
void attempt_lost(struct exchange *x);
/* After a failed attempt (R, with request bytes SENT): may another one
 * follow, after *DELAY ms? Takes from the retry budget when so. */
bool attempt_retry_allowed(struct exchange *x, enum attempt_result r, bool sent,
    int64_t *delay);
/* The next attempt, on another endpoint when there is one, after DELAY. */
void attempt_retry_schedule(struct exchange *x, int64_t delay);
/* The connect or per-try deadline passed. */
void attempt_timed_out(struct exchange *x, int64_t now);
/* The attempt's connection goes back to the pool or away. */
void attempt_release(struct exchange *x, bool reusable);

/* proxy.c */
void proxy_arm_timer(struct exchange *x);

#endif
