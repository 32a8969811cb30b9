#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "refs.h"
#include "runtime.h"

struct retired_group {
	struct outlier_group *g;
	struct retired_group *next;
};

struct runtime {
	struct svc_runtime **svcs;
	size_t n;
	struct retired_group *groups;
	struct bucket *inbound_bucket;
	struct breaker *inbound_breaker;
	struct metrics *metrics;
	int inbound_metrics_id;
	unsigned n_shares;		/* workers + the main thread */
};

struct runtime *
runtime_new(struct metrics *m, unsigned n_workers)
{
	struct runtime *rt = calloc(1, sizeof(*rt));

	if (rt == NULL)
		return NULL;
	rt->metrics = m;
	rt->inbound_metrics_id = -1;
	rt->n_shares = n_workers + 1;
	rt->inbound_bucket = bucket_new();
	rt->inbound_breaker = breaker_new();
	if (rt->inbound_bucket == NULL || rt->inbound_breaker == NULL) {
		runtime_free(rt);
		return NULL;
	}
	return rt;
}

static void
svc_free(struct svc_runtime *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n_eps; i++)
		free(s->eps[i]);
	free(s->eps);
	breaker_free(s->breaker);
	bucket_free(s->bucket);
	retry_budget_free(s->budget);
	free(s->name);
	free(s);
}

void
runtime_free(struct runtime *rt)
{
	if (rt == NULL)
		return;
	for (size_t i = 0; i < rt->n; i++)
		svc_free(rt->svcs[i]);
	free(rt->svcs);
	while (rt->groups) {
		struct retired_group *r = rt->groups;

		rt->groups = r->next;
		outlier_group_free(r->g);
		free(r);
	}
	bucket_free(rt->inbound_bucket);
	breaker_free(rt->inbound_breaker);
	free(rt);
}

struct svc_runtime *
runtime_service(struct runtime *rt, const struct conf_service *c)
{
	struct svc_runtime *s, **grown;

	for (size_t i = 0; i < rt->n; i++)
		if (strcmp(rt->svcs[i]->name, c->name) == 0)
			return rt->svcs[i];
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->metrics_id = rt->metrics ? metrics_service_id(rt->metrics, c->name) : -1;
	s->n_shares = rt->n_shares;
	s->name = strdup(c->name);
	s->breaker = breaker_new();
	s->bucket = bucket_new();
	s->budget = retry_budget_new(rt->n_shares);
	if (s->name == NULL || s->breaker == NULL || s->bucket == NULL ||
	    s->budget == NULL ||
	    (grown = realloc(rt->svcs, (rt->n + 1) * sizeof(*grown))) == NULL) {
		svc_free(s);
		return NULL;
	}
	rt->svcs = grown;
	rt->svcs[rt->n++] = s;
	return s;
}

struct ep_runtime *
runtime_endpoint(struct svc_runtime *s, const char *address)
{
	struct ep_runtime *e, **grown;

	for (size_t i = 0; i < s->n_eps; i++)
		if (strcmp(s->eps[i]->address, address) == 0)
			return s->eps[i];
	if ((e = cacheline_calloc(sizeof(*e) + s->n_shares * sizeof(e->share[0]))) == NULL ||
	    (grown = realloc(s->eps, (s->n_eps + 1) * sizeof(*grown))) == NULL) {
		free(e);
		return NULL;
	}
	snprintf(e->address, sizeof(e->address), "%s", address);
	atomic_init(&e->healthy, true);
	e->n_shares = s->n_shares;
	s->eps = grown;
	s->eps[s->n_eps++] = e;
	return e;
}

void
ep_runtime_ref(struct ep_runtime *e)
{
	refs_take(&e->refs);
}

void
ep_runtime_unref(struct ep_runtime *e)
{
	refs_drop(&e->refs);
}

size_t
runtime_compact(struct runtime *rt)
{
	struct retired_group **pp = &rt->groups, *r;
	size_t freed = 0;

	for (size_t i = 0; i < rt->n; i++) {
		struct svc_runtime *s = rt->svcs[i];
		size_t kept = 0;

		for (size_t j = 0; j < s->n_eps; j++) {
			if (refs_none(&s->eps[j]->refs)) {
				free(s->eps[j]);
				freed++;
			} else {
				s->eps[kept++] = s->eps[j];
			}
		}
		s->n_eps = kept;
	}
	while ((r = *pp) != NULL) {
		if (!outlier_group_held(r->g)) {
			*pp = r->next;
			outlier_group_free(r->g);
			free(r);
			freed++;
		} else {
			pp = &r->next;
		}
	}
	return freed;
}

struct outlier_group *
runtime_outlier_group(struct runtime *rt, size_t n)
{
	struct retired_group *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->g = outlier_group_new(n)) == NULL) {
		free(r);
		return NULL;
	}
	r->next = rt->groups;
	rt->groups = r;
	return r->g;
}

struct bucket *
runtime_inbound_bucket(struct runtime *rt)
{
	return rt->inbound_bucket;
}

struct breaker *
runtime_inbound_breaker(struct runtime *rt)
{
	return rt->inbound_breaker;
}

void
runtime_inbound_on(struct runtime *rt)
{
	/* inbound requests are labelled with the app they reach; the series
	 * exist once an inbound listener does */
	if (rt->inbound_metrics_id < 0 && rt->metrics)
		rt->inbound_metrics_id = metrics_service_id(rt->metrics, "local_app");
}

int
runtime_inbound_metrics_id(struct runtime *rt)
{
	return rt->inbound_metrics_id;
}

size_t
runtime_services(struct runtime *rt, struct svc_runtime ***out)
{
	*out = rt->svcs;
	return rt->n;
}

struct ep_share *
ep_runtime_share(struct ep_runtime *e, unsigned worker)
{
	return &e->share[worker % e->n_shares];
}

void
ep_runtime_gauges(const struct ep_runtime *e, struct ep_gauges *out)
{
	uint64_t ewma_sum = 0;
	unsigned with_ewma = 0;

	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < e->n_shares; i++) {
		const struct ep_share *sh = &e->share[i];
		uint64_t ewma = atomic_load_explicit(&sh->ewma_us, memory_order_relaxed);

		out->idle += atomic_load_explicit(&sh->idle, memory_order_relaxed);
		out->active += atomic_load_explicit(&sh->active, memory_order_relaxed);
		out->in_flight += atomic_load_explicit(&sh->in_flight, memory_order_relaxed);
		out->streams += atomic_load_explicit(&sh->streams, memory_order_relaxed);
		if (ewma) {
			ewma_sum += ewma;
			with_ewma++;
		}
	}
	out->ewma_us = with_ewma ? ewma_sum / with_ewma : 0;
}
