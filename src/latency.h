/*
 * A service's recent time to the response head, per worker: a log-scale
 * histogram (four buckets per power of two, so within 19%) that halves
 * every LATENCY_HALF_LIFE_MS and whenever it holds LATENCY_MAX_SAMPLES,
 * so old traffic fades. hedging: {after: p95} reads its 95th percentile.
 *
 * Pure: the caller passes the time; nothing here reads a clock, logs or
 * allocates. A zeroed struct is an empty estimate. Its fields are
 * latency.c's; it is a value so a service's state can embed it.
 */
#ifndef FERRY_LATENCY_H
#define FERRY_LATENCY_H

#include <stdint.h>

#define LATENCY_BUCKETS		140	/* 0 .. 2^36 µs (19 hours) */
#define LATENCY_MIN_SAMPLES	16	/* fewer: no estimate */
#define LATENCY_MAX_SAMPLES	4096
#define LATENCY_HALF_LIFE_MS	15000

struct latency {
	uint32_t n[LATENCY_BUCKETS];
	uint32_t total;
	int64_t halve_at_ms;		/* 0: empty, never started */
};

/* One response head, US microseconds after its attempt began. */
void latency_add(struct latency *l, int64_t us, int64_t now_ms);
/* The Q quantile (0 < Q < 1) in microseconds, or -1 with fewer than
 * LATENCY_MIN_SAMPLES (after the decay due by NOW_MS). */
int64_t latency_quantile(struct latency *l, double q, int64_t now_ms);

#endif
