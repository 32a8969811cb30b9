/*
 * Token bucket as GCRA (the generic cell rate algorithm of ATM, as in
 * redis-cell): the state is one atomic "theoretical arrival time" (TAT),
 * the moment the bucket would be full again, so taking a token is a single
 * CAS and tokens and refill time can never be seen half-updated.
 *
 * With T = 1/rps, a token is free when TAT - now <= (burst - 1) * T; taking
 * it moves TAT to max(TAT, now) + T. That admits exactly `burst` at once
 * from a full bucket, then one every T: the token bucket of the SPEC.
 * Time is kept in nanoseconds so T = 1e9/rps loses nothing that matters
 * (rps is at most 1e9 by the loader).
 *
 * TAT - now is a debt in time, priced at the T it was built with. So that
 * a reload changing rps or burst keeps the tokens rather than the time
 * (raising rps from 0.01 must not keep a client waiting 100 s), the bucket
 * remembers the rps and burst it last saw and, when they change, the
 * thread that notices first converts the debt into the new price.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"

#define TAU_MAX_NS	(INT64_MAX / 4)

struct bucket {
	_Atomic int64_t tat_ns;		/* INT64_MIN: never used, full */
	_Atomic uint64_t seen;		/* rps (as float) and burst; 0: none yet */
};

/* The emission interval T and the burst tolerance tau of a conf. */
struct rate {
	int64_t t_ns, tau_ns;
	uint32_t burst;
};

static struct rate
rate_of(double rps, uint32_t burst)
{
	struct rate r;
	double t = 1e9 / rps;

	/* 1e15 ns is 1 / RATELIMIT_MIN_RPS, the least the loader allows */
	r.t_ns = t < 1 ? 1 : (t > 1e15 ? (int64_t)1e15 : (int64_t)(t + 0.5));
	r.burst = burst > 0 ? burst : 1;
	/* bounded so TAT + T cannot overflow: tiny rps with a huge burst */
	if (r.burst > 1 && r.t_ns > TAU_MAX_NS / (r.burst - 1))
		r.tau_ns = TAU_MAX_NS;
	else
		r.tau_ns = (int64_t)(r.burst - 1) * r.t_ns;
	return r;
}

static uint64_t
seen_key(const struct conf_rate_limit *c)
{
	float f = (float)c->rps;
	uint32_t bits;

	memcpy(&bits, &f, sizeof(bits));
	return ((uint64_t)bits << 32) | c->burst;
}

static struct rate
seen_rate(uint64_t key)
{
	uint32_t bits = (uint32_t)(key >> 32);
	float f;

	memcpy(&f, &bits, sizeof(f));
	return rate_of(f, (uint32_t)key);
}

/* The conf changed from OLD to NEW: the tokens spent and not yet refilled
 * stay spent (at most a bucketful), re-priced at NEW's interval. */
static void
rescale(struct bucket *b, struct rate old, struct rate new, int64_t now_ns)
{
	int64_t tat = atomic_load(&b->tat_ns), ntat;
	double debt;

	do {
		debt = tat > now_ns ? (double)(tat - now_ns) / (double)old.t_ns : 0;
		if (debt > new.burst)
			debt = new.burst;
		debt *= (double)new.t_ns;
		if (debt <= 0)
			ntat = INT64_MIN;	/* full */
		else
			ntat = now_ns + (debt > (double)TAU_MAX_NS ? TAU_MAX_NS :
			    (int64_t)debt);
	} while (!atomic_compare_exchange_weak(&b->tat_ns, &tat, ntat));
}

struct bucket *
bucket_new(void)
{
	struct bucket *b;

	if ((b = malloc(sizeof(*b))) == NULL)
		return NULL;
	atomic_init(&b->tat_ns, INT64_MIN);
	atomic_init(&b->seen, 0);
	return b;
}

void
bucket_free(struct bucket *b)
{
	free(b);
}

bool
bucket_take(struct bucket *b, const struct conf_rate_limit *c, int64_t now_us,
    int64_t *retry_after_ms)
{
	int64_t now_ns = now_us * 1000, tat, start, wait_ns;
	uint64_t key, seen;
	struct rate r;

	if (!c->enabled)
		return true;
	if (!(c->rps > 0)) {	/* the loader forbids it; refuse, never divide */
		*retry_after_ms = 1000;
		return false;
	}
	r = rate_of(c->rps, c->burst);
	key = seen_key(c);
	seen = atomic_load(&b->seen);
	if (seen != key && atomic_compare_exchange_strong(&b->seen, &seen, key) &&
	    seen != 0)
		rescale(b, seen_rate(seen), r, now_ns);

	tat = atomic_load(&b->tat_ns);
	do {
		start = tat > now_ns ? tat : now_ns;
		wait_ns = start - now_ns - r.tau_ns;
		if (wait_ns > 0) {
			/* whole ms, rounded up: never before the token is there */
			*retry_after_ms = (wait_ns + 999999) / 1000000;
			return false;
		}
	} while (!atomic_compare_exchange_weak(&b->tat_ns, &tat, start + r.t_ns));
	return true;
}
