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

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "cacheline.h"
#include "config.h"
#include "outlier.h"
#include "ratelimit.h"
#include "retry.h"

/* One worker's share of an endpoint's gauges, for /services: written by
 * that worker alone, on its own cache line (cacheline.h), read by the admin
 * page, which adds the shares up (ep_runtime_gauges). */
struct ep_share {
	alignas(CACHE_LINE) _Atomic int32_t idle, active;	/* pooled connections */
	_Atomic int32_t in_flight;
	_Atomic int32_t streams;	/* open HTTP/2 streams */
	_Atomic uint64_t ewma_us;	/* this worker's latency EWMA; 0: none yet */
};

/* One endpoint address (a DNS name may give several), kept while anyone
 * holds it (below). What is above the shares is written rarely (a
 * connection opened, a health check), so the lines every request reads
 * stay in every CPU. */
struct ep_runtime {
	char address[80];		/* "10.0.0.5:5000", "[fd00::1]:5000" */
	_Atomic uint32_t refs;		/* holders (ep_runtime_ref) */
	_Atomic uint32_t conns;		/* open upstream connections, all workers */
	_Atomic bool healthy;		/* by active health checks; starts true */
	_Atomic uint32_t hc_streak;	/* consecutive results against the state */
	_Atomic bool h2;		/* spoken to over HTTP/2 */
	unsigned n_shares;
	struct ep_share share[];	/* one per worker (runtime_new) */
};

/* The sums of E's shares; ewma_us is the mean of the workers that have
 * one (each worker keeps its own EWMA of what it saw). */
struct ep_gauges {
	int32_t idle, active, in_flight, streams;
	uint64_t ewma_us;
};
void ep_runtime_gauges(const struct ep_runtime *e, struct ep_gauges *out);
/* Worker WORKER's share of E (any index is taken modulo the shares). */
struct ep_share *ep_runtime_share(struct ep_runtime *e, unsigned worker);

/*
 * Who holds an endpoint's state (and an outlier group, outlier_group_ref)
 * counts itself: discovery's published set, each copy of a set posted to
 * a worker, each worker's struct endpoint, each health check. Only the
 * main thread frees, in runtime_compact(), what nobody holds; and only it
 * takes a first hold (its lookup by address), so a worker's last release
 * never races a free. Anyone else takes a hold only while holding one
 * already. DNS churn thus costs memory only for what is in use.
 */
void ep_runtime_ref(struct ep_runtime *e);
void ep_runtime_unref(struct ep_runtime *e);	/* any thread; never frees */

struct svc_runtime {
	char *name;
	int metrics_id;
	struct breaker *breaker;
	struct bucket *bucket;
	struct retry_budget *budget;
	struct ep_runtime **eps;	/* every address held (runtime_compact) */
	size_t n_eps;
	unsigned n_shares;		/* of each endpoint (runtime_new) */
};

struct runtime;

struct metrics;

/* Service metrics ids come from M (may be NULL in tests). State that
 * workers write on every request is kept in one share per worker, for
 * workers 0 .. N_WORKERS - 1 and the main thread (index N_WORKERS), as
 * metrics shards are. */
struct runtime *runtime_new(struct metrics *m, unsigned n_workers);
void runtime_free(struct runtime *rt);
/* The state of service SVC (by name), created on first sight; NULL when
 * out of memory. Main thread only. */
struct svc_runtime *runtime_service(struct runtime *rt, const struct conf_service *svc);
/* The state of one endpoint address of S, created on first sight; not
 * held: the caller takes its hold before the next runtime_compact(). */
struct ep_runtime *runtime_endpoint(struct svc_runtime *s, const char *address);
/* An outlier group for a new endpoint set, not held (as above). */
struct outlier_group *runtime_outlier_group(struct runtime *rt, size_t n_endpoints);
/* Frees the endpoint states and outlier groups nobody holds (main thread;
 * each second). Returns how many went. */
size_t runtime_compact(struct runtime *rt);
/* Shared state of the inbound listener (rate limit, max_concurrent). */
struct bucket *runtime_inbound_bucket(struct runtime *rt);
struct breaker *runtime_inbound_breaker(struct runtime *rt);
int runtime_inbound_metrics_id(struct runtime *rt);
/* An inbound listener exists (main thread, before workers see it). */
void runtime_inbound_on(struct runtime *rt);
/* Every service ever seen (for the admin pages), in order of first sight. */
size_t runtime_services(struct runtime *rt, struct svc_runtime ***out);


#endif
