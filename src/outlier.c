/*
 * Outlier detection. See outlier.h.
 *
 * An endpoint is ejected while `until` holds a time; NOT_EJECTED otherwise.
 * The group counts the endpoints holding a time, which is what the cap
 * limits. Ejecting first reserves a place in that count, then claims the
 * endpoint with a CAS on `until` (giving the place back if another thread
 * won); returning it is the one CAS that clears `until`, and its winner
 * gives the place back. So the count never exceeds the cap and never
 * counts an endpoint twice.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "outlier.h"
#include "refs.h"

#define NOT_EJECTED	INT64_MIN

struct outlier {
	_Atomic uint32_t failures;	/* consecutive */
	_Atomic uint32_t times_ejected;
	_Atomic int64_t until;		/* ms, or NOT_EJECTED */
};

struct outlier_group {
	_Atomic size_t ejected;		/* endpoints holding an `until` */
	_Atomic uint32_t refs;		/* holders (outlier_group_ref) */
	size_t n;
	struct outlier o[];
};

struct outlier_group *
outlier_group_new(size_t n)
{
	struct outlier_group *g;

	if (n > (SIZE_MAX - sizeof(*g)) / sizeof(g->o[0]))
		return NULL;
	if ((g = malloc(sizeof(*g) + n * sizeof(g->o[0]))) == NULL)
		return NULL;
	atomic_init(&g->ejected, 0);
	atomic_init(&g->refs, 0);
	g->n = n;
	for (size_t i = 0; i < n; i++) {
		atomic_init(&g->o[i].failures, 0);
		atomic_init(&g->o[i].times_ejected, 0);
		atomic_init(&g->o[i].until, NOT_EJECTED);
	}
	return g;
}

void
outlier_group_free(struct outlier_group *g)
{
	free(g);
}

void
outlier_group_ref(struct outlier_group *g)
{
	refs_take(&g->refs);
}

void
outlier_group_unref(struct outlier_group *g)
{
	refs_drop(&g->refs);
}

bool
outlier_group_held(struct outlier_group *g)
{
	return !refs_none(&g->refs);
}

struct outlier *
outlier_get(struct outlier_group *g, size_t i)
{
	return i < g->n ? &g->o[i] : NULL;
}

size_t
outlier_max_ejected(size_t n, uint32_t percent)
{
	size_t cap;

	if (percent > 100)
		percent = 100;
	/* n * percent without overflow for any realistic n */
	cap = n / 100 * percent + n % 100 * percent / 100;
	if (cap == 0 && n >= 2)
		cap = 1;
	return cap;
}

/* Clear an ejection that ran out; true when this call returned it. */
static bool
expire(struct outlier_group *g, struct outlier *o, int64_t now_ms)
{
	int64_t u = atomic_load(&o->until);

	if (u == NOT_EJECTED || now_ms < u)
		return false;
	if (!atomic_compare_exchange_strong(&o->until, &u, NOT_EJECTED))
		return false;	/* another thread returned (or re-ejected) it */
	atomic_fetch_sub(&g->ejected, 1);
	return true;
}

/* Reserve a place under the cap. */
static bool
reserve(struct outlier_group *g, size_t cap)
{
	size_t n = atomic_load(&g->ejected);

	do {
		if (n >= cap)
			return false;
	} while (!atomic_compare_exchange_weak(&g->ejected, &n, n + 1));
	return true;
}

static int64_t
duration(const struct conf_outlier *c, uint32_t times)
{
	int64_t base = c->base_ejection > 0 ? c->base_ejection : 0;

	/* capped only when base x times is past the cap: the quotient is
	 * rounded down, so at times == max / base the product can still be
	 * under it (200 s x 1; 7 s x 42 = 294 s) */
	if (base >= OUTLIER_MAX_EJECTION_MS ||
	    times > OUTLIER_MAX_EJECTION_MS / (base > 0 ? base : 1))
		return OUTLIER_MAX_EJECTION_MS;
	return base * times;
}

static void
eject(struct outlier_group *g, struct outlier *o, const struct conf_outlier *c,
    int64_t now_ms)
{
	size_t cap = outlier_max_ejected(g->n, c->max_ejection_percent);
	int64_t none = NOT_EJECTED;
	uint32_t times;

	if (!reserve(g, cap)) {
		/* ejections that ran out unseen still hold places */
		for (size_t i = 0; i < g->n; i++)
			expire(g, &g->o[i], now_ms);
		if (!reserve(g, cap))
			return;		/* at the cap: stays due */
	}
	/* only the thread that claims `until` counts the ejection */
	times = atomic_load(&o->times_ejected) + 1;
	if (!atomic_compare_exchange_strong(&o->until, &none,
	    now_ms + duration(c, times))) {
		atomic_fetch_sub(&g->ejected, 1);
		return;
	}
	atomic_store(&o->times_ejected, times);
	atomic_store(&o->failures, 0);
}

void
outlier_record(struct outlier_group *g, struct outlier *o,
    const struct conf_outlier *c, bool failure, int64_t now_ms)
{
	uint32_t n;

	if (c->consecutive_failures == 0)
		return;
	if (!failure) {
		if (atomic_load(&o->failures) != 0)	/* no write on the hot path */
			atomic_store(&o->failures, 0);
		return;
	}
	/* requests sent before the ejection say nothing new */
	if (outlier_ejected(g, o, now_ms))
		return;
	n = atomic_load(&o->failures);
	while (n < UINT32_MAX &&
	    !atomic_compare_exchange_weak(&o->failures, &n, n + 1))
		;
	if (n + 1 >= c->consecutive_failures || n == UINT32_MAX)
		eject(g, o, c, now_ms);
}

bool
outlier_ejected(struct outlier_group *g, struct outlier *o, int64_t now_ms)
{
	int64_t u = atomic_load(&o->until);

	if (u == NOT_EJECTED)
		return false;
	if (now_ms < u)
		return true;
	expire(g, o, now_ms);
	return false;
}

void
outlier_carry(struct outlier_group *g, struct outlier *o, const struct outlier *from,
    const struct conf_outlier *c, int64_t now_ms)
{
	int64_t until = atomic_load(&from->until);

	atomic_store(&o->failures, atomic_load(&from->failures));
	atomic_store(&o->times_ejected, atomic_load(&from->times_ejected));
	if (until != NOT_EJECTED && now_ms < until &&
	    reserve(g, outlier_max_ejected(g->n, c->max_ejection_percent)))
		atomic_store(&o->until, until);
}

uint32_t
outlier_times_ejected(const struct outlier *o)
{
	return atomic_load(&o->times_ejected);
}

size_t
outlier_group_ejected(struct outlier_group *g)
{
	return atomic_load(&g->ejected);
}
