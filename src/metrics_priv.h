/*
 * The layout of the metrics registry, shared by metrics.c (registry and
 * hot path) and metrics_render.c (the scrape). Not for other modules.
 */
#ifndef FERRY_METRICS_PRIV_H
#define FERRY_METRICS_PRIV_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cacheline.h"
#include "metrics.h"

#define SVC_PER_PAGE	64
#define N_PAGES		(METRICS_MAX_SERVICES / SVC_PER_PAGE)
#define N_CODES		501	/* [0]: no/invalid status; [1..500]: 100..599 */
#define N_BUCKETS	METRICS_DURATION_BUCKETS

typedef _Atomic uint64_t ctr;

/* One service's counters in one shard: a flat array, so that a scrape can
 * sum shards without knowing what each counter is. */
enum {
	C_REQ = 0,				/* [dir][code] */
	C_BUCKET = C_REQ + 2 * N_CODES,		/* [dir][bucket], not cumulative */
	C_SUM = C_BUCKET + 2 * N_BUCKETS,	/* [dir], microseconds */
	C_ERR = C_SUM + 2,			/* [dir][enum ferry_error] */
	C_RL = C_ERR + 2 * FE_COUNT,		/* [dir] */
	C_ATT = C_RL + 2,			/* [enum upstream_result] */
	C_RETRY = C_ATT + UR_COUNT,
	C_BUDGET,
	C_OPENED,
	C_RESEND,
	C_CUT,					/* [dir][enum end_cause] */
	C_GRPC = C_CUT + 2 * END_COUNT,		/* [dir][grpc status 0..16] */
	C_FAIL = C_GRPC + 2 * GRPC_STATUSES,	/* [dir] metrics_failed() */
	C_HEDGE = C_FAIL + 2,			/* [enum hedge_result] */
	C_FATE = C_HEDGE + HEDGE_COUNT,		/* [dir][enum fate] */
	C_CZ = C_FATE + 2 * FATE_COUNT,		/* [dir][in, out] compression bytes */
	C_NCTR = C_CZ + 4
};

struct svc_ctr {
	ctr v[C_NCTR];
};

/* Counters not kept per service. */
enum {
	G_TLS = 0,				/* [dir][resumed] */
	G_AUTH = G_TLS + 4,			/* [enum auth_reason] */
	G_SPANS = G_AUTH + AUTH_COUNT,		/* spans_exported_total */
	G_SPANS_DROPPED,			/* [enum span_drop] */
	G_NCTR = G_SPANS_DROPPED + SPAN_DROP_COUNT
};

struct metrics_shard {
	/* read by this shard's thread only (acquire), written by main */
	alignas(CACHE_LINE) _Atomic(struct svc_ctr *) pages[N_PAGES];
	void *raw[N_PAGES];			/* what to free */
	alignas(CACHE_LINE) ctr g[G_NCTR];
	struct svc_ctr nosvc;			/* service id -1 */
};

struct metrics {
	unsigned n_shards;
	struct metrics_shard **shards;
	pthread_mutex_t lock;			/* the name registry */
	char *names[METRICS_MAX_SERVICES];
	unsigned n_services;
	_Atomic uint64_t reloads[2];		/* [ok] */
};

static inline uint64_t
ctr_get(ctr *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* The counters of service ID (-1: none) in shard S, or NULL. */
static inline struct svc_ctr *
svc_of(struct metrics_shard *s, int id)
{
	struct svc_ctr *p;

	if (s == NULL || id >= METRICS_MAX_SERVICES)
		return NULL;
	if (id < 0)
		return &s->nosvc;
	p = atomic_load_explicit(&s->pages[id / SVC_PER_PAGE],
	    memory_order_acquire);
	return p ? p + id % SVC_PER_PAGE : NULL;
}

#endif
