/*
 * Process-wide runtime state of services and endpoints: what all workers
 * share (circuit breaker, rate-limit bucket, retry budget, outlier
 * ejection, health, connection counts). It is keyed by service name and
 * endpoint address, not stored in the config, so a reload keeps it for
 * what did not change. Created and looked up on the main thread only;
 * workers use the objects through lock-free calls.
 */
#ifndef FERRY_RUNTIME_H
#define FERRY_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "config.h"
#include "outlier.h"
#include "ratelimit.h"
#include "retry.h"

struct ep_runtime {
	char *address;			/* as configured: host:port */
	struct outlier *outlier;	/* in the service's group */
	_Atomic uint32_t conns;		/* open upstream connections, all workers */
	_Atomic bool healthy;		/* by active health checks; starts true */
	_Atomic uint32_t hc_streak;	/* consecutive results in the other direction */
};

struct svc_runtime {
	char *name;
	int metrics_id;
	struct breaker *breaker;
	struct bucket *bucket;
	struct retry_budget *budget;
	struct outlier_group *outliers;
	struct ep_runtime *eps;
	size_t n_eps;
};

struct runtime;

struct runtime *runtime_new(void);
void runtime_free(struct runtime *rt);
/* The state of service SVC, created on first sight; NULL when out of memory.
 * Endpoints are matched by address; a changed endpoint list starts fresh
 * outlier state for that service. */
struct svc_runtime *runtime_service(struct runtime *rt, const struct conf_service *svc);
/* Shared state of the inbound listener (rate limit, max_concurrent). */
struct bucket *runtime_inbound_bucket(struct runtime *rt);
struct breaker *runtime_inbound_breaker(struct runtime *rt);

/* Health: when none of a service's endpoints is healthy, all are used. */
bool runtime_any_healthy(const struct svc_runtime *s);

#endif
