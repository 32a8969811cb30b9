/*
 * Rate limit (SPEC §6): a token bucket of capacity `burst` refilled at
 * `rps` tokens a second, one per listener or service, shared by all
 * workers without a lock.
 *
 * Pure: the caller passes the time in microseconds; nothing here reads a
 * clock, logs or allocates after bucket_new(). The conf is passed on every
 * call and never stored: a reload that changes rps or burst applies to the
 * next request, and the tokens already spent stay spent.
 */
#ifndef FERRY_RATELIMIT_H
#define FERRY_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Owned by the per-listener or per-service runtime state. A new bucket
 * is full. */
struct bucket;

/* The slowest rate the bucket keeps exactly: its interval T = 1/rps is
 * held at most 1e15 ns (1e6 s, 11.6 days) so TAT arithmetic stays far
 * from overflow; a slower rps would be served at this one. The loader
 * refuses less. */
#define RATELIMIT_MIN_RPS	0.000001
/* The longest (burst - 1) / rps, in seconds, the bucket holds exactly: its
 * burst tolerance is kept under INT64_MAX / 4 ns (ratelimit.c), about 73
 * years; a slower refill of a larger burst would let fewer requests
 * through at once than asked. The loader refuses more. */
#define RATELIMIT_MAX_BURST_S	2305843009.0

struct bucket *bucket_new(void);	/* NULL when out of memory */
void bucket_free(struct bucket *b);

/*
 * true when a token was taken (always when the limit is not enabled);
 * else *retry_after_ms is the time until one token is available (>= 1),
 * for the 429's retry-after.
 */
bool bucket_take(struct bucket *b, const struct conf_rate_limit *c,
    int64_t now_us, int64_t *retry_after_ms);

#endif
