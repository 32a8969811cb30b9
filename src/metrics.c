/*
 * Metrics registry and the hot path: per-worker shards, single writer
 * each; see metrics.h.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_priv.h"

/* request_duration_seconds buckets, in microseconds (metrics_render.c
 * prints them as le) */
const int64_t metrics_duration_bounds_us[N_BUCKETS - 1] = {
	500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000
};

/* Single writer per counter: no locked instruction needed. */
static inline void
ctr_add(ctr *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	    memory_order_relaxed);
}

struct metrics *
metrics_new(unsigned n_workers)
{
	struct metrics *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->n_shards = n_workers + 1;
	if ((m->shards = calloc(m->n_shards, sizeof(*m->shards))) == NULL) {
		metrics_free(m);
		return NULL;
	}
	for (unsigned i = 0; i < m->n_shards; i++) {
		if ((m->shards[i] = cacheline_calloc(sizeof(struct metrics_shard))) == NULL) {
			metrics_free(m);
			return NULL;
		}
	}
	return m;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (unsigned i = 0; i < m->n_shards && m->shards; i++) {
		if (m->shards[i] == NULL)
			continue;
		for (int p = 0; p < N_PAGES; p++)
			free(m->shards[i]->raw[p]);
		free(m->shards[i]);
	}
	free(m->shards);
	for (unsigned i = 0; i < m->n_services; i++)
		free(m->names[i]);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Called with the lock held: storage for ids of page PG in every shard,
 * published (release) only when all allocations succeeded. */
static int
add_page(struct metrics *m, unsigned pg)
{
	struct metrics_shard *s;
	unsigned i;

	for (i = 0; i < m->n_shards; i++) {
		s = m->shards[i];
		/* calloc of a large block takes fresh zero pages: ids never
		 * counted cost no memory */
		s->raw[pg] = calloc(1, SVC_PER_PAGE * sizeof(struct svc_ctr) +
		    CACHE_LINE);
		if (s->raw[pg] == NULL) {
			while (i-- > 0) {
				free(m->shards[i]->raw[pg]);
				m->shards[i]->raw[pg] = NULL;
			}
			return -1;
		}
	}
	for (i = 0; i < m->n_shards; i++) {
		s = m->shards[i];
		atomic_store_explicit(&s->pages[pg],
		    (struct svc_ctr *)(((uintptr_t)s->raw[pg] + CACHE_LINE - 1) &
		    ~(uintptr_t)(CACHE_LINE - 1)), memory_order_release);
	}
	return 0;
}

int
metrics_service_id(struct metrics *m, const char *name)
{
	unsigned id;
	char *copy;

	pthread_mutex_lock(&m->lock);
	for (id = 0; id < m->n_services; id++)
		if (strcmp(m->names[id], name) == 0)
			goto out;
	if (id == METRICS_MAX_SERVICES || (copy = strdup(name)) == NULL)
		goto fail;
	if (id % SVC_PER_PAGE == 0 && add_page(m, id / SVC_PER_PAGE) == -1) {
		free(copy);
		goto fail;
	}
	m->names[id] = copy;
	m->n_services++;
out:
	pthread_mutex_unlock(&m->lock);
	return (int)id;
fail:
	pthread_mutex_unlock(&m->lock);
	return -1;
}

struct metrics_shard *
metrics_shard(struct metrics *m, unsigned worker)
{
	return worker < m->n_shards ? m->shards[worker] : NULL;
}

void
metrics_request(struct metrics_shard *s, enum metric_dir d, int svc,
    int status, int64_t head_us)
{
	struct svc_ctr *c;
	unsigned b, i = d == DIR_INBOUND;

	if ((c = svc_of(s, svc)) == NULL)
		return;
	ctr_add(&c->v[C_REQ + i * N_CODES +
	    (status >= 100 && status <= 599 ? status - 99 : 0)], 1);
	if (head_us < 0)
		return;
	for (b = 0; b < N_BUCKETS - 1 && head_us > metrics_duration_bounds_us[b]; b++)
		;
	ctr_add(&c->v[C_BUCKET + i * N_BUCKETS + b], 1);
	ctr_add(&c->v[C_SUM + i], (uint64_t)head_us);
}

void
metrics_error(struct metrics_shard *s, enum metric_dir d, int svc,
    enum ferry_error e)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL || (unsigned)e >= FE_COUNT)
		return;
	ctr_add(&c->v[C_ERR + (d == DIR_INBOUND) * FE_COUNT + e], 1);
}

void
metrics_grpc(struct metrics_shard *s, enum metric_dir d, int svc, int status)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL || status < 0 || status >= GRPC_STATUSES)
		return;
	ctr_add(&c->v[C_GRPC + (d == DIR_INBOUND) * GRPC_STATUSES + status], 1);
}

void
metrics_compression(struct metrics_shard *s, enum metric_dir d, int svc,
    uint64_t in, uint64_t out)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL)
		return;
	ctr_add(&c->v[C_CZ + (d == DIR_INBOUND) * 2], in);
	ctr_add(&c->v[C_CZ + (d == DIR_INBOUND) * 2 + 1], out);
}

void
metrics_cut(struct metrics_shard *s, enum metric_dir d, int svc, enum end_cause cause)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL || cause == END_DONE || (unsigned)cause >= END_COUNT)
		return;
	ctr_add(&c->v[C_CUT + (d == DIR_INBOUND) * END_COUNT + cause], 1);
}

void
metrics_fate(struct metrics_shard *s, enum metric_dir d, int svc, enum fate f)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL || (unsigned)f >= FATE_COUNT)
		return;
	ctr_add(&c->v[C_FATE + (d == DIR_INBOUND) * FATE_COUNT + f], 1);
}

void
metrics_attempt(struct metrics_shard *s, int svc, enum upstream_result r)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) == NULL || (unsigned)r >= UR_COUNT)
		return;
	ctr_add(&c->v[C_ATT + r], 1);
}

void
metrics_retry(struct metrics_shard *s, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_RETRY], 1);
}

void
metrics_budget_exhausted(struct metrics_shard *s, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_BUDGET], 1);
}

void
metrics_resend(struct metrics_shard *s, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_RESEND], 1);
}

void
metrics_hedge(struct metrics_shard *s, int svc, enum hedge_result r)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL && (unsigned)r < HEDGE_COUNT)
		ctr_add(&c->v[C_HEDGE + r], 1);
}

void
metrics_rate_limited(struct metrics_shard *s, enum metric_dir d, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_RL + (d == DIR_INBOUND)], 1);
}

void
metrics_failed(struct metrics_shard *s, enum metric_dir d, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_FAIL + (d == DIR_INBOUND)], 1);
}

void
metrics_conn_opened(struct metrics_shard *s, int svc)
{
	struct svc_ctr *c;

	if ((c = svc_of(s, svc)) != NULL)
		ctr_add(&c->v[C_OPENED], 1);
}

void
metrics_tls_handshake(struct metrics_shard *s, enum metric_dir d, bool resumed)
{
	if (s != NULL)
		ctr_add(&s->g[G_TLS + (d == DIR_INBOUND) * 2 + resumed], 1);
}

void
metrics_auth_failure(struct metrics_shard *s, enum auth_reason r)
{
	if (s != NULL && (unsigned)r < AUTH_COUNT)
		ctr_add(&s->g[G_AUTH + r], 1);
}

void
metrics_spans_exported(struct metrics_shard *s, uint64_t n)
{
	if (s != NULL)
		ctr_add(&s->g[G_SPANS], n);
}

void
metrics_spans_dropped(struct metrics_shard *s, enum span_drop r, uint64_t n)
{
	if (s != NULL && (unsigned)r < SPAN_DROP_COUNT)
		ctr_add(&s->g[G_SPANS_DROPPED + r], n);
}

void
metrics_config_reload(struct metrics *m, bool ok)
{
	atomic_fetch_add_explicit(&m->reloads[ok], 1, memory_order_relaxed);
}
