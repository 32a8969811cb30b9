/*
 * Endpoint choice (SPEC §6 Load balancing) and the latency EWMA it uses.
 *
 * Pure: the caller builds the candidate list (availability from health
 * checks and outlier ejection, its own in-flight counts, EWMAs and
 * connect backoffs, whose state it owns), and
 * passes the random number and the time; nothing here keeps state,
 * allocates, reads a clock or locks.
 */
#ifndef FERRY_BALANCER_H
#define FERRY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Time constant of the latency EWMA: a sample's weight falls to 1/e after
 * this long (Finagle's and Linkerd's peak-EWMA default). */
#define EWMA_DECAY_MS	10000.0

struct lb_candidate {
	bool available;		/* not ejected, healthy (or none is) */
	uint32_t in_flight;	/* requests on it now */
	double ewma_ms;		/* latency EWMA; 0 = not measured yet */
	uint32_t weight;	/* SRV weight (others 1): its share of picks; when
				   every eligible one is 0, all count alike */
	bool backoff;		/* in connect backoff (struct lb_backoff) */
};

/*
 * The index of the chosen candidate, or -1 when none is available.
 * AVOID (an index, or -1 for none) is skipped when another candidate is
 * available, so a retry goes to a different endpoint when there is one.
 * Then candidates in connect backoff are skipped when one that is not
 * remains: backoff keeps a refusing endpoint out of the first choice but
 * never leaves a service whose endpoints all refuse without one to try.
 * RR is the caller's round-robin cursor (per worker; not atomic), only
 * read and advanced for LB_ROUND_ROBIN. RAND is a uniform 64-bit number.
 *
 * round_robin: the next available candidate at or after the cursor.
 * random: uniform among the available ones.
 * p2c_ewma: two distinct random available candidates; the lower
 * (in_flight + 1) * ewma_ms wins. An unmeasured candidate (ewma 0) is
 * scored with the other one's EWMA, so a new endpoint is compared by
 * in-flight alone and gets traffic without being flooded before its
 * first response; ties go to the unmeasured one, then to the first drawn.
 */
long balancer_pick(enum lb_kind kind, const struct lb_candidate *c, size_t n,
    long avoid, uint32_t *rr, uint64_t rand);

/*
 * Fold a latency sample into *EWMA_MS (peak EWMA): the first sample sets
 * it; a sample above the average sets it at once, so a slowing endpoint
 * is avoided right away; otherwise the average decays toward the sample
 * by exp(-dt / EWMA_DECAY_MS), dt being the time since the previous
 * sample (*LAST_MS, updated). Not atomic: one writer per EWMA.
 */
void ewma_update(double *ewma_ms, double sample_ms, int64_t *last_ms,
    int64_t now_ms);

/*
 * The EWMA as seen at NOW, for lb_candidate.ewma_ms: it decays toward 0
 * while no sample arrives (Finagle's PeakEwma reads it the same way), so
 * an endpoint that was slow and therefore got no traffic is tried again
 * after a while instead of being starved for ever.
 */
double ewma_current(double ewma_ms, int64_t last_ms, int64_t now_ms);

/*
 * Failures cost an endpoint (Finagle's and linkerd2-proxy's answer to the
 * endpoint that fails fast): a refused connect or a quick 503 takes no
 * time and leaves nothing in flight, so by latency alone the dead endpoint
 * would look the best. A failed attempt (SPEC §6 Failures) that took
 * LATENCY_MS is folded in as a peak of
 *   max(LATENCY_MS, EWMA_PENALTY_MS, min(EWMA_PENALTY_FACTOR * current,
 *       EWMA_PENALTY_MAX_MS))
 * (current: ewma_current() at NOW; the cap only bounds growth, a higher
 * current stays). 1 s is the default connect timeout and far above a
 * healthy in-cluster response: after one failure the endpoint loses
 * every p2c comparison with a working one while that one's
 * (in_flight + 1) * EWMA stays under 1 s; doubling on each further
 * failure ranks a failing slow endpoint below its own healthy past. The
 * penalty decays like any sample (EWMA_DECAY_MS): from 1 s to a few ms in
 * about a minute, and the endpoint gets traffic again as soon as it
 * compares well; from the 10 s cap it takes about 23 s more.
 */
#define EWMA_PENALTY_MS		1000.0
#define EWMA_PENALTY_FACTOR	2.0
#define EWMA_PENALTY_MAX_MS	10000.0

void ewma_failure(double *ewma_ms, double latency_ms, int64_t *last_ms,
    int64_t now_ms);

/*
 * Connect backoff: after a failed connect (refused, timed out, TLS
 * handshake failed) an endpoint is in backoff for 250 ms, doubling with
 * each further failed connect up to 4 s; a response from it (any status)
 * ends it. While in backoff it is left out of every balancer's choice
 * unless no other candidate is left (balancer_pick). Short enough that a
 * restarted endpoint is back within seconds, long enough that a refusing
 * one costs at most a few connects a second per worker. A failure while
 * already in backoff does not extend or escalate it. Caller-owned state,
 * one writer.
 */
#define CONNECT_BACKOFF_BASE_MS	250
#define CONNECT_BACKOFF_MAX_MS	4000

struct lb_backoff {
	uint32_t failures;	/* failed connects in a row */
	int64_t until_ms;	/* in backoff before this time */
};

void backoff_failed(struct lb_backoff *b, int64_t now_ms);
void backoff_reset(struct lb_backoff *b);
bool backoff_active(const struct lb_backoff *b, int64_t now_ms);

#endif
