/*
 * Outlier detection (SPEC §6): an endpoint with consecutive_failures
 * failures in a row is ejected for base_ejection x times ejected (at most
 * 300 s); at most max_ejection_percent of a service's endpoints, rounded
 * down but at least one when there are two or more, are out at a time.
 *
 * Per endpoint and for the whole process: all workers share one group per
 * service, updated with C11 atomics, no locks. Pure: the caller passes the
 * time; nothing here reads a clock, logs or allocates after
 * outlier_group_new(). The conf is passed on every call, never stored.
 *
 * The group has a fixed number of endpoints; when the endpoint set of a
 * service changes (DNS), build a new group and carry each endpoint that
 * stays over (outlier_carry), or its ejection would end with the set.
 * times_ejected never decays: an endpoint that keeps being ejected stays
 * at the longer durations, bounded by the 300 s cap.
 */
#ifndef FERRY_OUTLIER_H
#define FERRY_OUTLIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define OUTLIER_MAX_EJECTION_MS	300000

/* A service's endpoints; owns the n endpoint states, index 0..n-1. */
struct outlier_group;
struct outlier;

struct outlier_group *outlier_group_new(size_t n_endpoints);	/* NULL: no memory */
void outlier_group_free(struct outlier_group *g);
/* Holders of G count themselves, as of an endpoint's state (runtime.h):
 * a first hold and the free on the main thread only. */
void outlier_group_ref(struct outlier_group *g);
void outlier_group_unref(struct outlier_group *g);	/* any thread; never frees */
bool outlier_group_held(struct outlier_group *g);
struct outlier *outlier_get(struct outlier_group *g, size_t i);	/* i < n */

/*
 * The outcome of one attempt to O. A success clears the consecutive
 * count; the Nth failure in a row ejects O unless the group is at its cap
 * (then O stays due and the next failure tries again). Failures while O
 * is ejected (of requests sent before) are not counted.
 * consecutive_failures == 0 disables ejection.
 */
void outlier_record(struct outlier_group *g, struct outlier *o,
    const struct conf_outlier *c, bool failure, int64_t now_ms);

/* Whether O is out at NOW. The first call after the ejection ran out
 * returns it and frees its place under the cap. */
bool outlier_ejected(struct outlier_group *g, struct outlier *o, int64_t now_ms);

/* O of the new group G takes over FROM, the same endpoint's state in the
 * group before: failures in a row, times ejected, and an ejection still
 * running at NOW while G's cap has room (beyond it the ejection ends).
 * Before any worker sees G; what workers record in the old group
 * meanwhile is lost. */
void outlier_carry(struct outlier_group *g, struct outlier *o, const struct outlier *from,
    const struct conf_outlier *c, int64_t now_ms);

uint32_t outlier_times_ejected(const struct outlier *o);
/* How many endpoints of G count against the cap (ejected, not yet seen
 * expired). */
size_t outlier_group_ejected(struct outlier_group *g);
/* The cap for N endpoints at PERCENT. */
size_t outlier_max_ejected(size_t n, uint32_t percent);

#endif
