/*
 * Rings of 5 s buckets fed from cumulative counters; see history.h.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"

/* 32 bits: 4 billion requests in 5 s is out of reach; saturates anyway */
struct slot {
	uint32_t requests;
	uint32_t errors;
	uint32_t duration[METRICS_DURATION_BUCKETS];
};

struct history_series {
	bool primed;			/* PREV holds a baseline */
	int64_t last;			/* the newest bucket's number (ms / step) */
	struct metrics_totals prev;
	struct slot ring[HISTORY_POINTS];	/* bucket k at ring[k % POINTS] */
};

struct history {
	struct history_entry *v;
	size_t n;
};

size_t
history_series_bytes(void)
{
	return sizeof(struct history_series);
}

struct history_series *
history_series_new(void)
{
	return calloc(1, sizeof(struct history_series));
}

void
history_series_free(struct history_series *s)
{
	free(s);
}

static int64_t
bucket_of(int64_t ms)
{
	/* floor, also before 1970 */
	return ms >= 0 ? ms / HISTORY_STEP_MS : -((-ms + HISTORY_STEP_MS - 1) / HISTORY_STEP_MS);
}

/* Where bucket K lives in the ring. */
static size_t
slot_of(int64_t k)
{
	int64_t i = k % HISTORY_POINTS;

	return (size_t)(i < 0 ? i + HISTORY_POINTS : i);
}

/* What a counter grew by; one that went down (it never should) gave 0. */
static uint32_t
grew(uint64_t now, uint64_t then)
{
	uint64_t d = now > then ? now - then : 0;

	return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void
add(uint32_t *c, uint32_t n)
{
	*c = UINT32_MAX - *c < n ? UINT32_MAX : *c + n;
}

void
history_series_record(struct history_series *s, int64_t now_ms,
    const struct metrics_totals *t)
{
	int64_t k = bucket_of(now_ms);
	struct slot *sl;

	if (!s->primed) {
		s->primed = true;
		s->last = k;
		s->prev = *t;
		return;
	}
	if (k > s->last) {
		/* the buckets passed since: no traffic was seen in them */
		int64_t from = k - s->last > HISTORY_POINTS ? k - HISTORY_POINTS : s->last;

		for (int64_t j = from + 1; j <= k; j++)
			memset(&s->ring[slot_of(j)], 0, sizeof(struct slot));
		s->last = k;
	}
	sl = &s->ring[slot_of(s->last)];
	add(&sl->requests, grew(t->requests, s->prev.requests));
	add(&sl->errors, grew(t->failed, s->prev.failed));
	for (int b = 0; b < METRICS_DURATION_BUCKETS; b++)
		add(&sl->duration[b], grew(t->duration[b], s->prev.duration[b]));
	s->prev = *t;
}

void
history_series_read(const struct history_series *s, int64_t now_ms,
    struct history_point out[HISTORY_POINTS])
{
	int64_t cur = bucket_of(now_ms);

	/* after the clock stepped back, the newest buckets show again once
	 * it is past them: every series keeps the same time axis */
	for (int i = 0; i < HISTORY_POINTS; i++) {
		int64_t k = cur - (HISTORY_POINTS - 1) + i;
		struct history_point *p = &out[i];
		const struct slot *sl = &s->ring[slot_of(k)];

		memset(p, 0, sizeof(*p));
		p->start_ms = k * HISTORY_STEP_MS;
		/* buckets after the newest recorded one had no traffic yet */
		if (!s->primed || k > s->last || k <= s->last - HISTORY_POINTS)
			continue;
		p->requests = sl->requests;
		p->errors = sl->errors;
		p->p50_ms = history_quantile(sl->duration, 0.5);
		p->p99_ms = history_quantile(sl->duration, 0.99);
	}
}

double
history_quantile(const uint32_t *counts, double q)
{
	const int last = METRICS_DURATION_BUCKETS - 1;
	uint64_t total = 0, below = 0;
	double rank, lo, hi;
	int b;

	for (b = 0; b <= last; b++)
		total += counts[b];
	if (total == 0)
		return 0;
	rank = q * (double)total;
	for (b = 0; b < last && (double)(below + counts[b]) < rank; b++)
		below += counts[b];
	if (b == last)
		return (double)metrics_duration_bounds_us[last - 1] / 1000.0;
	lo = b == 0 ? 0 : (double)metrics_duration_bounds_us[b - 1];
	hi = (double)metrics_duration_bounds_us[b];
	return (lo + (hi - lo) * ((rank - (double)below) / counts[b])) / 1000.0;
}

/* ------------------------------------------------------ the set ---- */

struct history *
history_new(void)
{
	return calloc(1, sizeof(struct history));
}

static void
entry_free(struct history_entry *e)
{
	free(e->name);
	history_series_free(e->series);
}

void
history_free(struct history *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->n; i++)
		entry_free(&h->v[i]);
	free(h->v);
	free(h);
}

static struct history_entry *
find(struct history *h, const struct history_key *k)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->v[i].series && h->v[i].dir == k->dir &&
		    strcmp(h->v[i].name, k->name) == 0)
			return &h->v[i];
	return NULL;
}

int
history_set(struct history *h, const struct history_key *keys, size_t n)
{
	struct history_entry *v = calloc(n ? n : 1, sizeof(*v)), *old;
	size_t m = 0;

	if (v == NULL)
		return -1;
	/* everything new is allocated before anything old is touched */
	for (size_t i = 0; i < n; i++) {
		bool seen = false;

		for (size_t j = 0; j < m && !seen; j++)
			seen = v[j].dir == keys[i].dir && strcmp(v[j].name, keys[i].name) == 0;
		if (keys[i].metrics_id < 0 || seen)
			continue;
		v[m].dir = keys[i].dir;
		v[m].metrics_id = keys[i].metrics_id;
		if ((v[m].name = strdup(keys[i].name)) == NULL)
			goto fail;
		if (find(h, &keys[i]) == NULL &&
		    (v[m].series = history_series_new()) == NULL) {
			m++;
			goto fail;
		}
		m++;
	}
	/* then the kept series move over; what is left of the old set goes */
	for (size_t i = 0; i < m; i++) {
		if (v[i].series != NULL)
			continue;
		old = find(h, &(struct history_key){ v[i].name, v[i].dir, 0 });
		v[i].series = old->series;
		old->series = NULL;
	}
	for (size_t i = 0; i < h->n; i++)
		entry_free(&h->v[i]);
	free(h->v);
	h->v = v;
	h->n = m;
	return 0;
fail:
	for (size_t i = 0; i < m; i++)
		entry_free(&v[i]);
	free(v);
	return -1;
}

size_t
history_entries(struct history *h, struct history_entry **out)
{
	*out = h->v;
	return h->n;
}
