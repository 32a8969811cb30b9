/*
 * The scrape: sums the shards and writes Prometheus text format 0.0.4.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_priv.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "0.0.0"
#endif

static const char *const bucket_le[N_BUCKETS] = {
	"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
	"0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"
};
static const char *const dir_names[2] = { "outbound", "inbound" };
static const char *const result_names[UR_COUNT] = {
	"ok", "connect_failure", "timeout", "reset", "5xx"
};
static const char *const hedge_names[HEDGE_COUNT] = { "won", "lost", "budget" };
static const char *const span_drop_names[SPAN_DROP_COUNT] = {
	"queue_full", "export_failed", "shutdown",
};
static const char *const auth_names[AUTH_COUNT] = {
	"missing", "invalid", "peer_not_allowed", "no_client_cert"
};

/* Length of the valid UTF-8 sequence at S, or 0. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* A label value per the text format: \\, \" and \n escaped; invalid
 * UTF-8 replaced by U+FFFD (the parser rejects it). */
static void
add_label_value(struct sbuf *o, const char *v)
{
	const unsigned char *s = (const unsigned char *)(v ? v : "");
	size_t n = strlen((const char *)s), i = 0, ul;

	while (i < n) {
		if (s[i] == '\\' || s[i] == '"') {
			char e[2] = { '\\', (char)s[i] };

			sbuf_add(o, e, 2);
		} else if (s[i] == '\n')
			sbuf_add(o, "\\n", 2);
		else if (s[i] < 0x80)
			sbuf_add(o, s + i, 1);
		else if ((ul = utf8_seq(s + i, n - i)) > 0) {
			sbuf_add(o, s + i, ul);
			i += ul;
			continue;
		} else
			sbuf_adds(o, "\xef\xbf\xbd");
		i++;
	}
}

static void
add_double(struct sbuf *o, double v)
{
	char tmp[40];

	if (v != v)
		sbuf_adds(o, "NaN");
	else if (v > 1.7976931348623157e308)
		sbuf_adds(o, "+Inf");
	else if (v < -1.7976931348623157e308)
		sbuf_adds(o, "-Inf");
	else if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v) {
		snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
		sbuf_adds(o, tmp);
	} else {
		snprintf(tmp, sizeof(tmp), "%.15g", v);
		if (strtod(tmp, NULL) != v)
			snprintf(tmp, sizeof(tmp), "%.17g", v);
		sbuf_adds(o, tmp);
	}
}

static void
family(struct sbuf *o, const char *name, const char *type, const char *help)
{
	sbuf_adds(o, "# HELP ferry_");
	sbuf_adds(o, name);
	sbuf_add(o, " ", 1);
	sbuf_adds(o, help);
	sbuf_adds(o, "\n# TYPE ferry_");
	sbuf_adds(o, name);
	sbuf_add(o, " ", 1);
	sbuf_adds(o, type);
	sbuf_add(o, "\n", 1);
}

/* "ferry_NAME{k1="v1",k2="v2",k3="v3"} "; unused keys NULL. */
static void
series(struct sbuf *o, const char *name, const char *k1, const char *v1,
    const char *k2, const char *v2, const char *k3, const char *v3)
{
	const char *k[3] = { k1, k2, k3 }, *v[3] = { v1, v2, v3 };

	sbuf_adds(o, "ferry_");
	sbuf_adds(o, name);
	sbuf_add(o, "{", 1);
	for (int i = 0; i < 3 && k[i]; i++) {
		if (i)
			sbuf_add(o, ",", 1);
		sbuf_adds(o, k[i]);
		sbuf_add(o, "=\"", 2);
		add_label_value(o, v[i]);
		sbuf_add(o, "\"", 1);
	}
	sbuf_add(o, "} ", 2);
}

static void
value_u(struct sbuf *o, uint64_t v)
{
	sbuf_addu(o, v);
	sbuf_add(o, "\n", 1);
}

struct emit_ctx {
	struct sbuf *o;
	const char *name, *k1, *k2;
};

static void
emit1(void *arg, const char *l1, double v)
{
	struct emit_ctx *c = arg;

	series(c->o, c->name, c->k1, l1, NULL, NULL, NULL, NULL);
	add_double(c->o, v);
	sbuf_add(c->o, "\n", 1);
}

static void
emit2(void *arg, const char *l1, const char *l2, double v)
{
	struct emit_ctx *c = arg;

	series(c->o, c->name, c->k1, l1, c->k2, l2, NULL, NULL);
	add_double(c->o, v);
	sbuf_add(c->o, "\n", 1);
}

typedef void (*gauge1_fn)(void *, metrics_emit1, void *);
typedef void (*gauge2_fn)(void *, metrics_emit2, void *);

static void
gauge1(struct sbuf *o, const struct metrics_gauges *g, gauge1_fn fn,
    const char *name, const char *type, const char *help, const char *k1)
{
	struct emit_ctx c = { o, name, k1, NULL };

	family(o, name, type, help);
	if (g != NULL && fn != NULL)
		fn(g->arg, emit1, &c);
}

static void
gauge2(struct sbuf *o, const struct metrics_gauges *g, gauge2_fn fn,
    const char *name, const char *help, const char *k1, const char *k2)
{
	struct emit_ctx c = { o, name, k1, k2 };

	family(o, name, "gauge", help);
	if (g != NULL && fn != NULL)
		fn(g->arg, emit2, &c);
}

/* The sums over shards of every service's counters: [0] is "no service",
 * [1 + id] service id. */
struct snap {
	unsigned n;				/* services + 1 */
	const char **name;
	uint64_t (*v)[C_NCTR];
	uint64_t g[G_NCTR];
};

static int
snap_take(struct metrics *m, struct snap *sn)
{
	sn->n = m->n_services + 1;
	sn->name = calloc(sn->n, sizeof(*sn->name));
	sn->v = calloc(sn->n, sizeof(*sn->v));
	if (sn->name == NULL || sn->v == NULL)
		return -1;
	memset(sn->g, 0, sizeof(sn->g));
	sn->name[0] = "";
	for (unsigned i = 1; i < sn->n; i++)
		sn->name[i] = m->names[i - 1];
	for (unsigned w = 0; w < m->n_shards; w++) {
		struct metrics_shard *s = m->shards[w];

		for (unsigned i = 0; i < sn->n; i++) {
			struct svc_ctr *c = svc_of(s, (int)i - 1);

			for (int k = 0; c && k < C_NCTR; k++)
				sn->v[i][k] += ctr_get(&c->v[k]);
		}
		for (int k = 0; k < G_NCTR; k++)
			sn->g[k] += ctr_get(&s->g[k]);
	}
	return 0;
}

/* Per-service counter family: one series per service and per value of
 * KEY (N counters at BASE; KEY NULL: one); zero series are written for
 * real services only. BY_DIR: KEY is the direction, written first. */
static void
svc_family(struct sbuf *o, struct snap *sn, const char *name, const char *help,
    int base, int n, const char *key, const char *const *vals)
{
	bool by_dir = key != NULL && strcmp(key, "direction") == 0;

	family(o, name, "counter", help);
	for (unsigned i = 0; i < sn->n; i++) {
		for (int k = 0; k < n; k++) {
			uint64_t v = sn->v[i][base + k];

			if (v == 0 && i == 0)
				continue;
			if (key == NULL)
				series(o, name, "service", sn->name[i],
				    NULL, NULL, NULL, NULL);
			else if (by_dir)
				series(o, name, key, vals[k],
				    "service", sn->name[i], NULL, NULL);
			else
				series(o, name, "service", sn->name[i],
				    key, vals[k], NULL, NULL);
			value_u(o, v);
		}
	}
}

static void
render_requests(struct sbuf *o, struct snap *sn)
{
	char code[8];

	family(o, "requests_total", "counter",
	    "Requests answered, by direction, service and status code.");
	for (unsigned i = 0; i < sn->n; i++) {
		for (int d = 0; d < 2; d++) {
			for (int k = 0; k < N_CODES; k++) {
				uint64_t v = sn->v[i][C_REQ + d * N_CODES + k];

				if (v == 0)
					continue;
				snprintf(code, sizeof(code), "%d", k ? k + 99 : 0);
				series(o, "requests_total", "direction",
				    dir_names[d], "service", sn->name[i],
				    "code", code);
				value_u(o, v);
			}
		}
	}
	family(o, "request_duration_seconds", "histogram",
	    "Time from request to response head.");
	for (unsigned i = 0; i < sn->n; i++) {
		for (int d = 0; d < 2; d++) {
			uint64_t *b = &sn->v[i][C_BUCKET + d * N_BUCKETS];
			uint64_t cum = 0, us = sn->v[i][C_SUM + d];

			for (int k = 0; k < N_BUCKETS; k++)
				cum += b[k];
			if (cum == 0)
				continue;
			cum = 0;
			for (int k = 0; k < N_BUCKETS; k++) {
				cum += b[k];
				series(o, "request_duration_seconds_bucket",
				    "direction", dir_names[d], "service",
				    sn->name[i], "le", bucket_le[k]);
				value_u(o, cum);
			}
			series(o, "request_duration_seconds_sum", "direction",
			    dir_names[d], "service", sn->name[i], NULL, NULL);
			snprintf(code, sizeof(code), ".%06u",
			    (unsigned)(us % 1000000));
			sbuf_addu(o, us / 1000000);
			sbuf_adds(o, code);
			sbuf_add(o, "\n", 1);
			series(o, "request_duration_seconds_count", "direction",
			    dir_names[d], "service", sn->name[i], NULL, NULL);
			value_u(o, cum);
		}
	}
}

/* A counter family by direction, service and one more label, whose
 * values LABEL names (NULL: no series for that index). */
static void
render_by_label(struct sbuf *o, struct snap *sn, const char *name, const char *help,
    int base, int n, const char *label, const char *(*value)(int, char *))
{
	char tmp[12];

	family(o, name, "counter", help);
	for (unsigned i = 0; i < sn->n; i++) {
		for (int d = 0; d < 2; d++) {
			for (int k = 0; k < n; k++) {
				uint64_t v = sn->v[i][base + d * n + k];
				const char *lv;

				if (v == 0 || (lv = value(k, tmp)) == NULL)
					continue;
				series(o, name, "direction", dir_names[d], "service",
				    sn->name[i], label, lv);
				value_u(o, v);
			}
		}
	}
}

static const char *
error_label(int e, char *tmp)
{
	(void)tmp;
	return ferror_code((enum ferry_error)e);
}

static const char *
cause_label(int c, char *tmp)
{
	(void)tmp;
	return end_cause_name((enum end_cause)c);	/* NULL for END_DONE */
}

static const char *
fate_label(int f, char *tmp)
{
	(void)tmp;
	return fate_name((enum fate)f);
}

static const char *
grpc_label(int g, char *tmp)
{
	snprintf(tmp, 12, "%d", g);
	return tmp;
}

static const char *
stage_label(int k, char *tmp)
{
	(void)tmp;
	return k ? "out" : "in";
}

static void
render_global(struct sbuf *o, struct metrics *m, struct snap *sn)
{
	static const char *const resumed[2] = { "false", "true" };
	static const char *const reload[2] = { "failure", "success" };

	family(o, "tls_handshakes_total", "counter",
	    "TLS handshakes completed, by direction and session resumption.");
	for (int d = 0; d < 2; d++) {
		for (int r = 0; r < 2; r++) {
			series(o, "tls_handshakes_total", "direction",
			    dir_names[d], "resumed", resumed[r], NULL, NULL);
			value_u(o, sn->g[G_TLS + d * 2 + r]);
		}
	}
	family(o, "auth_failures_total", "counter",
	    "Inbound requests refused by service authentication.");
	for (int r = 0; r < AUTH_COUNT; r++) {
		series(o, "auth_failures_total", "reason", auth_names[r],
		    NULL, NULL, NULL, NULL);
		value_u(o, sn->g[G_AUTH + r]);
	}
	family(o, "spans_exported_total", "counter",
	    "Trace spans the OTLP collector accepted.");
	sbuf_adds(o, "ferry_spans_exported_total ");
	value_u(o, sn->g[G_SPANS]);
	family(o, "spans_dropped_total", "counter",
	    "Trace spans dropped, by reason.");
	for (int r = 0; r < SPAN_DROP_COUNT; r++) {
		series(o, "spans_dropped_total", "reason", span_drop_names[r],
		    NULL, NULL, NULL, NULL);
		value_u(o, sn->g[G_SPANS_DROPPED + r]);
	}
	family(o, "config_reloads_total", "counter",
	    "Configuration reloads, by result.");
	for (int r = 1; r >= 0; r--) {
		series(o, "config_reloads_total", "result", reload[r],
		    NULL, NULL, NULL, NULL);
		value_u(o, atomic_load_explicit(&m->reloads[r],
		    memory_order_relaxed));
	}
}

void
metrics_totals(struct metrics *m, int svc, enum metric_dir d,
    struct metrics_totals *t)
{
	unsigned i = d == DIR_INBOUND;

	memset(t, 0, sizeof(*t));
	/* a page, once published, stays until metrics_free(): no lock */
	for (unsigned w = 0; svc >= 0 && w < m->n_shards; w++) {
		struct svc_ctr *c = svc_of(m->shards[w], svc);

		if (c == NULL)
			continue;
		for (int k = 0; k < N_CODES; k++)
			t->requests += ctr_get(&c->v[C_REQ + i * N_CODES + k]);
		for (int k = 0; k < N_BUCKETS; k++)
			t->duration[k] += ctr_get(&c->v[C_BUCKET + i * N_BUCKETS + k]);
		t->failed += ctr_get(&c->v[C_FAIL + i]);
	}
}

void
metrics_render(struct metrics *m, const struct metrics_gauges *g,
    struct sbuf *out)
{
	struct snap sn;
	int rc;

	/* names are never freed before metrics_free(): the snapshot's
	 * pointers stay good, and the callbacks run without the lock */
	pthread_mutex_lock(&m->lock);
	rc = snap_take(m, &sn);
	pthread_mutex_unlock(&m->lock);
	if (rc == -1) {
		out->oom = true;
		goto done;
	}
	render_requests(out, &sn);
	svc_family(out, &sn, "upstream_attempts_total",
	    "Upstream attempts, by result.", C_ATT, UR_COUNT, "result",
	    result_names);
	svc_family(out, &sn, "retries_total", "Retries sent.", C_RETRY, 1,
	    NULL, NULL);
	svc_family(out, &sn, "retry_budget_exhausted_total",
	    "Retries the retry budget refused.", C_BUDGET, 1, NULL, NULL);
	svc_family(out, &sn, "upstream_resends_total",
	    "Requests sent again on a new connection after a pooled connection "
	    "the upstream had closed (not attempts, not retries).", C_RESEND, 1,
	    NULL, NULL);
	svc_family(out, &sn, "hedges_total",
	    "Hedged attempts, by result: won (its response head came first), lost "
	    "(cancelled or failed), budget (not sent: the retry budget was spent).",
	    C_HEDGE, HEDGE_COUNT, "result", hedge_names);
	gauge1(out, g, g ? g->circuit_states : NULL, "circuit_state", "gauge",
	    "Circuit breaker state: 0 closed, 1 open, 2 half-open.", "service");
	gauge1(out, g, g ? g->circuit_opened : NULL, "circuit_opened_total",
	    "counter", "Times the circuit breaker opened.", "service");
	render_by_label(out, &sn, "errors_total", "Error responses ferry produced, by SPEC 7 code.",
	    C_ERR, FE_COUNT, "code", error_label);
	render_by_label(out, &sn, "requests_cut_total",
	    "Requests cut before their end, by cause (the access log's error).",
	    C_CUT, END_COUNT, "cause", cause_label);
	render_by_label(out, &sn, "request_fate_total",
	    "Requests by the one outcome each ended with (SPEC 16; the access log's fate).",
	    C_FATE, FATE_COUNT, "fate", fate_label);
	render_by_label(out, &sn, "grpc_responses_total",
	    "gRPC calls by grpc-status (the service's, the one gRPC makes of the HTTP status "
	    "when it sent none, or ferry's own errors).",
	    C_GRPC, GRPC_STATUSES, "grpc_status", grpc_label);
	render_by_label(out, &sn, "compression_bytes_total",
	    "Bytes into (stage in) and out of (stage out) ferry's compressors and "
	    "decompressors.", C_CZ, 2, "stage", stage_label);
	svc_family(out, &sn, "rate_limited_total",
	    "Requests refused by the rate limit.", C_RL, 2, "direction",
	    dir_names);
	gauge2(out, g, g ? g->upstream_connections : NULL,
	    "upstream_connections", "Upstream connections, by state.",
	    "service", "state");
	svc_family(out, &sn, "upstream_connections_opened_total",
	    "Upstream connections opened.", C_OPENED, 1, NULL, NULL);
	gauge2(out, g, g ? g->endpoint_healthy : NULL, "endpoint_healthy",
	    "1 when the endpoint passes health checks, else 0.",
	    "service", "endpoint");
	gauge1(out, g, g ? g->downstream_connections : NULL,
	    "downstream_connections", "gauge",
	    "Open downstream connections, by listener.", "listener");
	render_global(out, m, &sn);
	gauge1(out, g, g ? g->certificate_expiry : NULL,
	    "certificate_expiry_seconds", "gauge",
	    "Seconds until each loaded certificate expires.", "name");
	family(out, "build_info", "gauge", "The running ferry's version.");
	series(out, "build_info", "version", FERRY_VERSION, NULL, NULL, NULL,
	    NULL);
	sbuf_adds(out, "1\n");
done:
	free(sn.name);
	free(sn.v);
}
