/*
 * Metrics (SPEC §8): per-worker counter shards, summed when /metrics is
 * scraped, rendered as Prometheus text format 0.0.4.
 *
 * Hot path: each worker owns one shard and is its only writer, so an
 * increment is a relaxed load and a relaxed store (no lock, no locked
 * instruction, no cache line shared with another worker); the scraper
 * reads the shards with relaxed loads.
 *
 * Services are known by a small stable id (0..METRICS_MAX_SERVICES-1)
 * that the main thread assigns by NAME and never reuses, so counters
 * survive config reloads, and those of a removed service stay. The main
 * thread must call metrics_service_id() for every service of a config
 * BEFORE it publishes that config to the workers (the call allocates the
 * shard storage for the id). Id -1 means "no service" (service="").
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "errors.h"
#include "fate.h"
#include "sbuf.h"

#define METRICS_MAX_SERVICES	1024

enum metric_dir { DIR_OUTBOUND = 0, DIR_INBOUND = 1 };

/* upstream_attempts_total{result=}: ok connect_failure timeout reset 5xx */
enum upstream_result {
	UR_OK,
	UR_CONNECT_FAILURE,
	UR_TIMEOUT,
	UR_RESET,
	UR_5XX,
	UR_COUNT
};

/* hedges_total{result=}: won lost budget (SPEC §16) */
enum hedge_result {
	HEDGE_WON,		/* its response head came first */
	HEDGE_LOST,		/* cancelled, or it failed */
	HEDGE_BUDGET,		/* not sent: the retry budget was spent */
	HEDGE_COUNT
};

/* auth_failures_total{reason=}: missing invalid peer_not_allowed no_client_cert */
enum auth_reason {
	AUTH_MISSING,
	AUTH_INVALID,
	AUTH_PEER_NOT_ALLOWED,
	AUTH_NO_CLIENT_CERT,
	AUTH_COUNT
};

/* spans_dropped_total{reason=}: queue_full export_failed shutdown */
enum span_drop {
	SPAN_DROP_QUEUE_FULL,		/* the export queue was full */
	SPAN_DROP_EXPORT_FAILED,	/* the collector was down, slow or said no */
	SPAN_DROP_SHUTDOWN,		/* still queued when the worker stopped */
	SPAN_DROP_COUNT
};

struct metrics;
struct metrics_shard;

/* Shards 0..n_workers-1 are the workers'; shard n_workers is the main
 * thread's (health checks and anything else counted there). */
struct metrics *metrics_new(unsigned n_workers);
void metrics_free(struct metrics *m);

/* Main thread: the id of service NAME, created if new; -1 if the registry
 * is full (METRICS_MAX_SERVICES) or out of memory. */
int metrics_service_id(struct metrics *m, const char *name);

/* NULL when WORKER > n_workers. Every hot-path call accepts a NULL shard
 * (and does nothing). */
struct metrics_shard *metrics_shard(struct metrics *m, unsigned worker);

/*
 * Hot path, on the shard's own thread. SVC is an id from
 * metrics_service_id() or -1.
 */
/* requests_total{direction,service,code} and request_duration_seconds
 * (HEAD_US: microseconds to the response head; < 0: not observed).
 * STATUS outside 100..599 (no response at all) is counted as code="0". */
void metrics_request(struct metrics_shard *s, enum metric_dir d, int svc,
    int status, int64_t head_us);
/* errors_total{direction,service,code=<§7 code>} */
void metrics_error(struct metrics_shard *s, enum metric_dir d, int svc,
    enum ferry_error e);
void metrics_attempt(struct metrics_shard *s, int svc, enum upstream_result r);
void metrics_retry(struct metrics_shard *s, int svc);
void metrics_budget_exhausted(struct metrics_shard *s, int svc);
/* upstream_resends_total{service}: a request sent again on a new
 * connection after a pooled one the upstream had closed (not an attempt) */
void metrics_resend(struct metrics_shard *s, int svc);
void metrics_hedge(struct metrics_shard *s, int svc, enum hedge_result r);
#define GRPC_STATUSES 17
/* A gRPC call's status (0..16), seen or answered. */
void metrics_grpc(struct metrics_shard *s, enum metric_dir d, int svc, int status);
/* A request cut for CAUSE (not END_DONE). */
void metrics_cut(struct metrics_shard *s, enum metric_dir d, int svc, enum end_cause cause);
/* compression_bytes_total{direction,service,stage}: bytes into (IN) and
 * out of (OUT) one of ferry's encoders or decoders (SPEC §14). */
void metrics_compression(struct metrics_shard *s, enum metric_dir d, int svc,
    uint64_t in, uint64_t out);
void metrics_rate_limited(struct metrics_shard *s, enum metric_dir d, int svc);
/* request_fate_total{direction,service,fate}: once per request (SPEC §16) */
void metrics_fate(struct metrics_shard *s, enum metric_dir d, int svc, enum fate f);
/* A request that failed as the status page's charts count it (SPEC §16):
 * answered with one of ferry's own errors (§7, either form) or with the
 * upstream's own 5xx. Not a Prometheus family of its own. */
void metrics_failed(struct metrics_shard *s, enum metric_dir d, int svc);
void metrics_conn_opened(struct metrics_shard *s, int svc);
void metrics_tls_handshake(struct metrics_shard *s, enum metric_dir d,
    bool resumed);
void metrics_auth_failure(struct metrics_shard *s, enum auth_reason r);
/* SPEC §13: spans the collector accepted (a 2xx), and spans dropped */
void metrics_spans_exported(struct metrics_shard *s, uint64_t n);
void metrics_spans_dropped(struct metrics_shard *s, enum span_drop r, uint64_t n);

/* Main thread. */
void metrics_config_reload(struct metrics *m, bool ok);

/*
 * Gauges and process-wide counters owned by other modules, read at scrape
 * time through callbacks, so this module knows nothing of workers. Each
 * callback is called once per scrape (a NULL one emits no series; the
 * family's HELP and TYPE are written all the same) and calls EMIT once
 * per series, with CTX. Strings are copied before EMIT returns. Each
 * series must be emitted once (sum over workers before emitting).
 */
typedef void (*metrics_emit1)(void *ctx, const char *l1, double v);
typedef void (*metrics_emit2)(void *ctx, const char *l1, const char *l2,
    double v);

struct metrics_gauges {
	void *arg;
	/* circuit_state{service}: 0 closed, 1 open, 2 half-open */
	void (*circuit_states)(void *arg, metrics_emit1 emit, void *ctx);
	/* circuit_opened_total{service} (a counter) */
	void (*circuit_opened)(void *arg, metrics_emit1 emit, void *ctx);
	/* upstream_connections{service,state}: state "active" or "idle" */
	void (*upstream_connections)(void *arg, metrics_emit2 emit, void *ctx);
	/* endpoint_healthy{service,endpoint}: 1 or 0 */
	void (*endpoint_healthy)(void *arg, metrics_emit2 emit, void *ctx);
	/* downstream_connections{listener} */
	void (*downstream_connections)(void *arg, metrics_emit1 emit, void *ctx);
	/* certificate_expiry_seconds{name} */
	void (*certificate_expiry)(void *arg, metrics_emit1 emit, void *ctx);
};

/* request_duration_seconds: METRICS_DURATION_BUCKETS buckets, the last
 * one +Inf; the upper bounds of the others, in microseconds. */
#define METRICS_DURATION_BUCKETS 17
extern const int64_t metrics_duration_bounds_us[METRICS_DURATION_BUCKETS - 1];

/* One service's counters in one direction, summed over the shards. */
struct metrics_totals {
	uint64_t requests;	/* requests_total, every code */
	uint64_t failed;	/* metrics_failed() */
	uint64_t duration[METRICS_DURATION_BUCKETS];	/* not cumulative */
};

/* Main thread (or any one thread at a time): service SVC's totals
 * (zero for an id with no counters). */
void metrics_totals(struct metrics *m, int svc, enum metric_dir d,
    struct metrics_totals *t);

/* Main thread (or any one thread at a time): appends every family of §8
 * to OUT. G may be NULL. */
void metrics_render(struct metrics *m, const struct metrics_gauges *g,
    struct sbuf *out);

#endif
