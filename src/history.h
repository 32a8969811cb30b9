/*
 * The status page's charts (SPEC §16): per service, requests, errors and
 * p50/p99 time to the response head over the last 15 minutes, in 5 s
 * buckets, kept in memory and served as /history.
 *
 * Pure: the caller passes the wall-clock time and the service's
 * cumulative counters (metrics_totals(), read on the main thread at each
 * housekeeping tick and before each /history); a bucket gets what the
 * counters grew by since the previous reading. So the request path does
 * nothing for the charts beyond the counters /metrics already keeps, and
 * a bucket is exact to within the tick (1 s).
 *
 * Memory: one ring of HISTORY_POINTS buckets per charted service,
 * allocated when a config is loaded (history_set) and kept across reloads
 * for the services that stay: history_series_bytes() each.
 */
#ifndef FERRY_HISTORY_H
#define FERRY_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define HISTORY_POINTS		180
#define HISTORY_STEP_MS		5000

/* One bucket as read: counts, and the interpolated quantiles of the time
 * to the response head (0 when no request in the bucket had one). */
struct history_point {
	int64_t start_ms;		/* wall clock, a multiple of the step */
	uint32_t requests;
	uint32_t errors;
	double p50_ms;
	double p99_ms;
};

struct history_series;

struct history_series *history_series_new(void);
void history_series_free(struct history_series *s);
/* The service's cumulative totals T seen at NOW_MS: what they grew by
 * since the last call goes to the bucket holding NOW_MS (the newest one if
 * the clock stepped back). The first call only takes the baseline. */
void history_series_record(struct history_series *s, int64_t now_ms,
    const struct metrics_totals *t);
/* The HISTORY_POINTS buckets ending with the one holding NOW_MS, oldest
 * first; a bucket without traffic (or from before the series began) is
 * zero. */
void history_series_read(const struct history_series *s, int64_t now_ms,
    struct history_point out[HISTORY_POINTS]);

/* Quantile Q (0 < Q < 1) in milliseconds of a request_duration_seconds
 * histogram (METRICS_DURATION_BUCKETS counts, not cumulative): linear
 * inside the bucket that holds the rank, as Prometheus's
 * histogram_quantile; the last finite bound for the +Inf bucket; 0 when
 * the histogram is empty. */
double history_quantile(const uint32_t *counts, double q);

/* ------------------------------------------------------ the set ---- */

/* The series of every charted service, in the config's order. */
struct history_entry {
	char *name;
	enum metric_dir dir;
	int metrics_id;
	struct history_series *series;
};

struct history_key {
	const char *name;
	enum metric_dir dir;
	int metrics_id;			/* < 0: not charted */
};

struct history;

struct history *history_new(void);
void history_free(struct history *h);
/* The set becomes KEYS: a series of the same name and direction is kept
 * with its buckets, a new one starts empty, the others are freed. -1 when
 * out of memory (the set is unchanged). */
int history_set(struct history *h, const struct history_key *keys, size_t n);
size_t history_entries(struct history *h, struct history_entry **out);

/* Bytes of one charted service (the ring and its header; the name
 * besides): what man/ferry.8 states. */
size_t history_series_bytes(void);

#endif
