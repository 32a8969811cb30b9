/*
 * Endpoint choice (SPEC §6 Load balancing) and the latency EWMA it uses.
 *
 * Pure: the caller builds the candidate list (availability from health
 * checks and outlier ejection, its own in-flight counts and EWMAs), and
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
};

/*
 * The index of the chosen candidate, or -1 when none is available.
 * AVOID (an index, or -1 for none) is skipped when another candidate is
 * available, so a retry goes to a different endpoint when there is one.
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

#endif
