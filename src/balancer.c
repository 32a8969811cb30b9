/*
 * Endpoint choice. See balancer.h.
 */
#include "balancer.h"

/* Uniform A onto [0, N) by the high half of A * N (no modulo bias). */
static uint32_t
below(uint32_t a, uint32_t n)
{
	return (uint32_t)(((uint64_t)a * n) >> 32);
}

/* Which candidates a pick may take: the available ones, less the one a
 * retry avoids (unless it is the only one), less those in connect backoff
 * (unless no other is left). */
struct sel {
	long avoid;
	bool avoid_ok;
	bool backoff_ok;
};

static bool
eligible(const struct lb_candidate *c, size_t i, const struct sel *s)
{
	return c[i].available && (s->avoid_ok || (long)i != s->avoid) &&
	    (s->backoff_ok || !c[i].backoff);
}

/* Index of the Kth (0-based) eligible candidate. */
static long
kth(const struct lb_candidate *c, size_t n, const struct sel *s, size_t k)
{
	for (size_t i = 0; i < n; i++)
		if (eligible(c, i, s) && k-- == 0)
			return (long)i;
	return -1;
}

static long
pick_rr(const struct lb_candidate *c, size_t n, const struct sel *s, uint32_t *rr)
{
	size_t start = *rr % n, i;

	for (size_t k = 0; k < n; k++) {
		i = (start + k) % n;
		if (eligible(c, i, s)) {
			*rr = (uint32_t)((i + 1) % n);
			return (long)i;
		}
	}
	return -1;
}

/* The better of A and B by (in_flight + 1) * EWMA. */
static long
p2c(const struct lb_candidate *c, long a, long b)
{
	double ea = c[a].ewma_ms, eb = c[b].ewma_ms, sa, sb;

	/* an unmeasured one borrows the other's EWMA: in-flight decides */
	if (ea <= 0)
		ea = eb;
	if (eb <= 0)
		eb = ea;
	if (ea <= 0)
		ea = eb = 1;
	sa = ((double)c[a].in_flight + 1) * ea;
	sb = ((double)c[b].in_flight + 1) * eb;
	if (sa != sb)
		return sa < sb ? a : b;
	/* equal: let the unmeasured one get its first sample */
	if (c[b].ewma_ms <= 0 && c[a].ewma_ms > 0)
		return b;
	return a;
}

/* Unequal weights among the eligible ones (SRV records); equal ones,
 * zero included, mean every one counts alike. */
static bool
weighted(const struct lb_candidate *c, size_t n, const struct sel *s)
{
	long first = -1;

	for (size_t i = 0; i < n; i++) {
		if (!eligible(c, i, s))
			continue;
		if (first < 0)
			first = (long)i;
		else if (c[i].weight != c[first].weight)
			return true;
	}
	return false;
}

/* The eligible candidate where POINT falls on the line of their weights
 * laid end to end, skipping SKIP. */
static long
at_weight(const struct lb_candidate *c, size_t n, const struct sel *s, long skip,
    uint64_t point)
{
	long last = -1;

	for (size_t i = 0; i < n; i++) {
		if (!eligible(c, i, s) || (long)i == skip || c[i].weight == 0)
			continue;
		last = (long)i;
		if (point < c[i].weight)
			return (long)i;
		point -= c[i].weight;
	}
	return last;
}

static uint64_t
total_weight(const struct lb_candidate *c, size_t n, const struct sel *s, long skip)
{
	uint64_t t = 0;

	for (size_t i = 0; i < n; i++)
		if (eligible(c, i, s) && (long)i != skip)
			t += c[i].weight;
	return t;
}

/* Weighted variants: round robin walks the weight line (weights 3 and 1
 * give A A A B), random and p2c draw by weight. */
static long
pick_weighted(enum lb_kind kind, const struct lb_candidate *c, size_t n,
    const struct sel *s, uint32_t *rr, uint32_t r1, uint32_t r2)
{
	uint64_t total = total_weight(c, n, s, -1), t2;
	long a, b;

	if (total == 0)
		return -1;	/* unreachable: weighted() needs a non-zero one */
	switch (kind) {
	case LB_ROUND_ROBIN:
		return at_weight(c, n, s, -1, (*rr)++ % total);
	case LB_RANDOM:
		return at_weight(c, n, s, -1, (uint64_t)r1 * total >> 32);
	case LB_P2C_EWMA:
	default:
		a = at_weight(c, n, s, -1, (uint64_t)r1 * total >> 32);
		t2 = total_weight(c, n, s, a);
		if (t2 == 0)
			return a;
		b = at_weight(c, n, s, a, (uint64_t)r2 * t2 >> 32);
		return b < 0 ? a : p2c(c, a, b);
	}
}

long
balancer_pick(enum lb_kind kind, const struct lb_candidate *c, size_t n,
    long avoid, uint32_t *rr, uint64_t rand)
{
	size_t avail = 0, m = 0;
	struct sel s = { avoid, true, true };
	uint32_t r1 = (uint32_t)rand, r2 = (uint32_t)(rand >> 32), k1, k2;

	for (size_t i = 0; i < n; i++)
		if (c[i].available)
			avail++;
	if (avail == 0 || n > UINT32_MAX)
		return -1;
	/* the avoided one only when it is the only one */
	s.avoid_ok = !(avoid >= 0 && (size_t)avoid < n && c[avoid].available &&
	    avail > 1);
	/* one in connect backoff only when all that are left are */
	s.backoff_ok = false;
	for (size_t i = 0; i < n; i++)
		if (eligible(c, i, &s))
			m++;
	if (m == 0) {
		s.backoff_ok = true;
		for (size_t i = 0; i < n; i++)
			if (eligible(c, i, &s))
				m++;
	}

	if (weighted(c, n, &s))
		return pick_weighted(kind, c, n, &s, rr, r1, r2);
	switch (kind) {
	case LB_ROUND_ROBIN:
		return pick_rr(c, n, &s, rr);
	case LB_RANDOM:
		return kth(c, n, &s, below(r1, (uint32_t)m));
	case LB_P2C_EWMA:
	default:
		if (m == 1)
			return kth(c, n, &s, 0);
		/* two distinct draws: the second among the other m - 1 */
		k1 = below(r1, (uint32_t)m);
		k2 = below(r2, (uint32_t)m - 1);
		if (k2 >= k1)
			k2++;
		return p2c(c, kth(c, n, &s, k1), kth(c, n, &s, k2));
	}
}

/* exp(-x) for x >= 0 without libm (not linked): exp(-x/1024) by its
 * Taylor series, squared ten times; relative error below 1e-8. Past
 * x = 40 (400 s without a sample) the weight is 0. */
static double
decay(double x)
{
	double y, e;

	if (x <= 0)
		return 1;
	if (x > 40)
		return 0;
	y = x / 1024;
	e = 1 - y * (1 - y / 2 * (1 - y / 3 * (1 - y / 4 * (1 - y / 5))));
	for (int i = 0; i < 10; i++)
		e *= e;
	return e;
}

void
ewma_update(double *ewma_ms, double sample_ms, int64_t *last_ms, int64_t now_ms)
{
	double w;

	if (sample_ms < 0)
		sample_ms = 0;
	if (*ewma_ms <= 0 || sample_ms >= *ewma_ms) {
		/* the first sample, or a peak: taken whole */
		*ewma_ms = sample_ms;
		*last_ms = now_ms;
		return;
	}
	w = decay((double)(now_ms - *last_ms) / EWMA_DECAY_MS);
	*ewma_ms = *ewma_ms * w + sample_ms * (1 - w);
	if (now_ms > *last_ms)
		*last_ms = now_ms;
}

double
ewma_current(double ewma_ms, int64_t last_ms, int64_t now_ms)
{
	if (ewma_ms <= 0)
		return 0;
	return ewma_ms * decay((double)(now_ms - last_ms) / EWMA_DECAY_MS);
}

void
ewma_failure(double *ewma_ms, double latency_ms, int64_t *last_ms, int64_t now_ms)
{
	double cur = ewma_current(*ewma_ms, *last_ms, now_ms);
	double p = cur * EWMA_PENALTY_FACTOR;

	/* the cap bounds the growth, never lowers what is there */
	if (p > EWMA_PENALTY_MAX_MS)
		p = cur > EWMA_PENALTY_MAX_MS ? cur : EWMA_PENALTY_MAX_MS;
	if (p < EWMA_PENALTY_MS)
		p = EWMA_PENALTY_MS;
	if (latency_ms > p)
		p = latency_ms;
	/* p >= the stored EWMA: taken whole; else (an old peak) the decayed
	 * value plus p's share, which is still >= p */
	ewma_update(ewma_ms, p, last_ms, now_ms);
}

void
backoff_failed(struct lb_backoff *b, int64_t now_ms)
{
	int64_t d = CONNECT_BACKOFF_BASE_MS;

	/* attempts begun before the backoff, or made because nothing else
	 * was left, fail into it: one step per backoff period, not per
	 * attempt, so a burst of refusals does not jump to the cap */
	if (now_ms < b->until_ms)
		return;
	for (uint32_t i = 0; i < b->failures && d < CONNECT_BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > CONNECT_BACKOFF_MAX_MS)
		d = CONNECT_BACKOFF_MAX_MS;
	if (b->failures < UINT32_MAX)
		b->failures++;
	b->until_ms = now_ms + d;
}

void
backoff_reset(struct lb_backoff *b)
{
	b->failures = 0;
	b->until_ms = 0;
}

bool
backoff_active(const struct lb_backoff *b, int64_t now_ms)
{
	return now_ms < b->until_ms;
}
