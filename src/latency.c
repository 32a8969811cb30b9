/*
 * Recent latency estimate. See latency.h.
 */
#include "latency.h"

/* Values below 8 µs have a bucket each; above, four per power of two. */
static int
bucket_of(int64_t us)
{
	int e;

	if (us < 8)
		return us < 0 ? 0 : (int)us;
	e = 63 - __builtin_clzll((unsigned long long)us);
	if (e > 35)
		return LATENCY_BUCKETS - 1;
	return 8 + (e - 3) * 4 + (int)((us >> (e - 2)) & 3);
}

static void
bucket_range(int i, int64_t *low, int64_t *width)
{
	int e;

	if (i < 8) {
		*low = i;
		*width = 1;
		return;
	}
	e = 3 + (i - 8) / 4;
	*low = (int64_t)(4 + (i - 8) % 4) << (e - 2);
	*width = (int64_t)1 << (e - 2);
}

static void
halve(struct latency *l)
{
	l->total = 0;
	for (int i = 0; i < LATENCY_BUCKETS; i++) {
		l->n[i] >>= 1;
		l->total += l->n[i];
	}
}

/* The halvings due by NOW: at most 32 do anything. */
static void
decay(struct latency *l, int64_t now_ms)
{
	for (int k = 0; l->halve_at_ms && now_ms >= l->halve_at_ms; k++) {
		if (k < 32)
			halve(l);
		l->halve_at_ms += LATENCY_HALF_LIFE_MS;
		if (k >= 32)
			l->halve_at_ms = now_ms + LATENCY_HALF_LIFE_MS;
	}
}

void
latency_add(struct latency *l, int64_t us, int64_t now_ms)
{
	if (l->halve_at_ms == 0)
		l->halve_at_ms = now_ms + LATENCY_HALF_LIFE_MS;
	decay(l, now_ms);
	if (l->total >= LATENCY_MAX_SAMPLES)
		halve(l);
	l->n[bucket_of(us)]++;
	l->total++;
}

int64_t
latency_quantile(struct latency *l, double q, int64_t now_ms)
{
	double rank, cum = 0;

	decay(l, now_ms);
	if (l->total < LATENCY_MIN_SAMPLES)
		return -1;
	rank = q * l->total;
	for (int i = 0; i < LATENCY_BUCKETS; i++) {
		int64_t low, width;

		if (l->n[i] == 0 || cum + l->n[i] < rank) {
			cum += l->n[i];
			continue;
		}
		/* spread evenly within the bucket */
		bucket_range(i, &low, &width);
		return low + (int64_t)((double)width * (rank - cum) / l->n[i]);
	}
	return -1;	/* not reached: rank <= total */
}
