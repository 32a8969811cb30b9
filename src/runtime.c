#include <stdlib.h>
#include <string.h>

#include "runtime.h"

struct retired {
	struct ep_runtime *eps;
	size_t n_eps;
	struct outlier_group *outliers;
	struct retired *next;
};

struct runtime {
	struct svc_runtime **svcs;
	size_t n;
	struct retired *retired;	/* endpoint state a reload replaced */
	struct bucket *inbound_bucket;
	struct breaker *inbound_breaker;
};

struct runtime *
runtime_new(void)
{
	struct runtime *rt = calloc(1, sizeof(*rt));

	if (rt == NULL)
		return NULL;
	rt->inbound_bucket = bucket_new();
	rt->inbound_breaker = breaker_new();
	if (rt->inbound_bucket == NULL || rt->inbound_breaker == NULL) {
		runtime_free(rt);
		return NULL;
	}
	return rt;
}

static void
eps_free(struct svc_runtime *s)
{
	for (size_t i = 0; i < s->n_eps; i++)
		free(s->eps[i].address);
	free(s->eps);
	outlier_group_free(s->outliers);
	s->eps = NULL;
	s->outliers = NULL;
	s->n_eps = 0;
}

static void
svc_free(struct svc_runtime *s)
{
	if (s == NULL)
		return;
	eps_free(s);
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
	while (rt->retired) {
		struct retired *r = rt->retired;
		struct svc_runtime tmp = { .eps = r->eps, .n_eps = r->n_eps,
		    .outliers = r->outliers };

		rt->retired = r->next;
		eps_free(&tmp);
		free(r);
	}
	bucket_free(rt->inbound_bucket);
	breaker_free(rt->inbound_breaker);
	free(rt);
}

static bool
same_endpoints(const struct svc_runtime *s, const struct conf_service *c)
{
	if (s->n_eps != c->n_endpoints)
		return false;
	for (size_t i = 0; i < s->n_eps; i++)
		if (strcmp(s->eps[i].address, c->endpoints[i].text) != 0)
			return false;
	return true;
}

static int
eps_init(struct svc_runtime *s, const struct conf_service *c)
{
	size_t n = c->n_endpoints;

	s->eps = calloc(n ? n : 1, sizeof(*s->eps));
	s->outliers = outlier_group_new(n);
	if (s->eps == NULL || s->outliers == NULL)
		return -1;
	s->n_eps = n;
	for (size_t i = 0; i < n; i++) {
		if ((s->eps[i].address = strdup(c->endpoints[i].text)) == NULL)
			return -1;
		s->eps[i].outlier = outlier_get(s->outliers, i);
		atomic_init(&s->eps[i].healthy, true);
	}
	return 0;
}

struct svc_runtime *
runtime_service(struct runtime *rt, const struct conf_service *c)
{
	struct svc_runtime *s, **grown;

	for (size_t i = 0; i < rt->n; i++) {
		s = rt->svcs[i];
		if (strcmp(s->name, c->name) != 0)
			continue;
		if (!same_endpoints(s, c)) {
			/* workers of the old config may still use the old state:
			 * keep it until exit */
			struct retired *r = calloc(1, sizeof(*r));

			if (r == NULL)
				return NULL;
			*r = (struct retired){ s->eps, s->n_eps, s->outliers, rt->retired };
			rt->retired = r;
			s->eps = NULL;
			s->outliers = NULL;
			s->n_eps = 0;
			if (eps_init(s, c) != 0)
				return NULL;
		}
		return s;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->metrics_id = -1;
	s->name = strdup(c->name);
	s->breaker = breaker_new();
	s->bucket = bucket_new();
	s->budget = retry_budget_new();
	if (s->name == NULL || s->breaker == NULL || s->bucket == NULL ||
	    s->budget == NULL || eps_init(s, c) != 0 ||
	    (grown = realloc(rt->svcs, (rt->n + 1) * sizeof(*grown))) == NULL) {
		svc_free(s);
		return NULL;
	}
	rt->svcs = grown;
	rt->svcs[rt->n++] = s;
	return s;
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

bool
runtime_any_healthy(const struct svc_runtime *s)
{
	for (size_t i = 0; i < s->n_eps; i++)
		if (atomic_load_explicit(&s->eps[i].healthy, memory_order_relaxed))
			return true;
	return false;
}
