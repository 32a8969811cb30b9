#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_pages.h"
#include "clock.h"
#include "errors.h"
#include "tls_ctx.h"

static const char *const circuit_names[] = { "closed", "open", "half-open" };

static void
add_json_string(struct sbuf *out, const char *s)
{
	sbuf_add(out, "\"", 1);
	json_escape(out, s, strlen(s));
	sbuf_add(out, "\"", 1);
}

static void
add_double(struct sbuf *out, double v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%.3f", v);
	sbuf_adds(out, tmp);
}

void
admin_page_services(const struct admin_view *v, struct sbuf *out)
{
	int64_t now = clock_now_ms();

	sbuf_adds(out, "{\"services\":[");
	for (size_t i = 0; i < v->conf->n_services; i++) {
		const struct conf_service *c = &v->conf->services[i];
		struct svc_runtime *s = runtime_service(v->rt, c);
		const struct ep_spec *specs;
		struct outlier_group *g;
		size_t n = discovery_current(v->disc, i, &specs, &g);

		if (s == NULL)
			continue;
		if (i)
			sbuf_add(out, ",", 1);
		sbuf_adds(out, "{\"name\":");
		add_json_string(out, c->name);
		sbuf_adds(out, ",\"circuit\":\"");
		sbuf_adds(out, circuit_names[breaker_state(s->breaker, &c->breaker, now)]);
		sbuf_adds(out, "\",\"in_flight\":");
		sbuf_addu(out, breaker_in_flight(s->breaker));
		sbuf_adds(out, ",\"circuit_opened_total\":");
		sbuf_addu(out, breaker_opened_total(s->breaker));
		sbuf_adds(out, ",\"endpoints\":[");
		for (size_t j = 0; j < n; j++) {
			struct ep_runtime *e = specs[j].rt;
			struct ep_gauges gg;

			ep_runtime_gauges(e, &gg);

			if (j)
				sbuf_add(out, ",", 1);
			sbuf_adds(out, "{\"address\":");
			add_json_string(out, e->address);
			sbuf_adds(out, atomic_load(&e->healthy) ? ",\"healthy\":true" :
			    ",\"healthy\":false");
			sbuf_adds(out, specs[j].outlier && outlier_ejected(g, specs[j].outlier, now) ?
			    ",\"ejected\":true" : ",\"ejected\":false");
			sbuf_adds(out, ",\"in_flight\":");
			sbuf_addu(out, (unsigned)(gg.in_flight > 0 ? gg.in_flight : 0));
			sbuf_adds(out, ",\"ewma_ms\":");
			add_double(out, (double)gg.ewma_us / 1000.0);
			sbuf_adds(out, atomic_load(&e->h2) ? ",\"protocol\":\"h2\"" :
			    ",\"protocol\":\"http1\"");
			sbuf_adds(out, ",\"streams\":");
			sbuf_addu(out, (unsigned)(gg.streams > 0 ? gg.streams : 0));
			sbuf_adds(out, ",\"pool\":{\"idle\":");
			sbuf_addu(out, (unsigned)(gg.idle > 0 ? gg.idle : 0));
			sbuf_adds(out, ",\"active\":");
			sbuf_addu(out, (unsigned)(gg.active > 0 ? gg.active : 0));
			sbuf_adds(out, "}}");
		}
		sbuf_adds(out, "]}");
	}
	sbuf_adds(out, "]}\n");
}

/* ------------------------------------------------------ history ---- */

static void
add_series(struct sbuf *out, const char *key, const struct history_point *p,
    int field)
{
	sbuf_adds(out, ",\"");
	sbuf_adds(out, key);
	sbuf_adds(out, "\":[");
	for (int i = 0; i < HISTORY_POINTS; i++) {
		if (i)
			sbuf_add(out, ",", 1);
		switch (field) {
		case 0: sbuf_addu(out, p[i].requests); break;
		case 1: sbuf_addu(out, p[i].errors); break;
		case 2: add_double(out, p[i].p50_ms); break;
		default: add_double(out, p[i].p99_ms); break;
		}
	}
	sbuf_add(out, "]", 1);
}

/* Every series shares one time axis: start_ms once, then per service its
 * counts and quantiles, index for index. */
void
admin_page_history(struct history *h, int64_t now_ms, struct sbuf *out)
{
	static const char *const dirs[] = { "outbound", "inbound" };
	struct history_point *p = calloc(HISTORY_POINTS, sizeof(*p));
	struct history_entry *e;
	size_t n = history_entries(h, &e);

	if (p == NULL) {
		out->oom = true;
		return;
	}
	sbuf_adds(out, "{\"step_s\":");
	sbuf_addu(out, HISTORY_STEP_MS / 1000);
	sbuf_adds(out, ",\"points\":");
	sbuf_addu(out, HISTORY_POINTS);
	/* wall clock: after 1970 */
	sbuf_adds(out, ",\"now_ms\":");
	sbuf_addu(out, (unsigned long long)now_ms);
	sbuf_adds(out, ",\"start_ms\":[");
	for (int i = 0; i < HISTORY_POINTS; i++) {
		if (i)
			sbuf_add(out, ",", 1);
		sbuf_addu(out, (unsigned long long)((now_ms / HISTORY_STEP_MS -
		    (HISTORY_POINTS - 1) + i) * HISTORY_STEP_MS));
	}
	sbuf_adds(out, "],\"services\":[");
	for (size_t i = 0; i < n; i++) {
		history_series_read(e[i].series, now_ms, p);
		if (i)
			sbuf_add(out, ",", 1);
		sbuf_adds(out, "{\"name\":");
		add_json_string(out, e[i].name);
		sbuf_adds(out, ",\"direction\":\"");
		sbuf_adds(out, dirs[e[i].dir == DIR_INBOUND]);
		sbuf_add(out, "\"", 1);
		add_series(out, "requests", p, 0);
		add_series(out, "errors", p, 1);
		add_series(out, "p50_ms", p, 2);
		add_series(out, "p99_ms", p, 3);
		sbuf_add(out, "}", 1);
	}
	sbuf_adds(out, "]}\n");
	free(p);
}

/* ------------------------------------------------------- gauges ---- */

static void
g_circuit_states(void *arg, metrics_emit1 emit, void *ctx)
{
	const struct admin_view *v = arg;
	int64_t now = clock_now_ms();

	for (size_t i = 0; i < v->conf->n_services; i++) {
		const struct conf_service *c = &v->conf->services[i];
		struct svc_runtime *s = runtime_service(v->rt, c);

		if (s)
			emit(ctx, c->name, (double)breaker_state(s->breaker, &c->breaker, now));
	}
}

static void
g_circuit_opened(void *arg, metrics_emit1 emit, void *ctx)
{
	const struct admin_view *v = arg;

	for (size_t i = 0; i < v->conf->n_services; i++) {
		struct svc_runtime *s = runtime_service(v->rt, &v->conf->services[i]);

		if (s)
			emit(ctx, s->name, (double)breaker_opened_total(s->breaker));
	}
}

static void
g_upstream_connections(void *arg, metrics_emit2 emit, void *ctx)
{
	const struct admin_view *v = arg;

	for (size_t i = 0; i < v->conf->n_services; i++) {
		struct svc_runtime *s = runtime_service(v->rt, &v->conf->services[i]);
		int64_t idle = 0, active = 0;

		if (s == NULL)
			continue;
		for (size_t j = 0; j < s->n_eps; j++) {
			struct ep_gauges gg;

			ep_runtime_gauges(s->eps[j], &gg);
			idle += gg.idle;
			active += gg.active;
		}
		emit(ctx, s->name, "active", (double)(active > 0 ? active : 0));
		emit(ctx, s->name, "idle", (double)(idle > 0 ? idle : 0));
	}
}

static void
g_endpoint_healthy(void *arg, metrics_emit2 emit, void *ctx)
{
	const struct admin_view *v = arg;

	for (size_t i = 0; i < v->conf->n_services; i++) {
		const struct ep_spec *specs;
		struct outlier_group *g;
		size_t n = discovery_current(v->disc, i, &specs, &g);

		for (size_t j = 0; j < n; j++)
			emit(ctx, v->conf->services[i].name, specs[j].rt->address,
			    atomic_load(&specs[j].rt->healthy) ? 1.0 : 0.0);
	}
}

static void
g_downstream_connections(void *arg, metrics_emit1 emit, void *ctx)
{
	const struct admin_view *v = arg;
	uint32_t out = 0, in = 0;

	for (uint32_t i = 0; i < v->n_workers; i++) {
		out += atomic_load(&v->workers[i].conns_outbound);
		in += atomic_load(&v->workers[i].conns_inbound);
	}
	emit(ctx, "outbound", (double)out);
	if (v->conf->inbound.enabled)
		emit(ctx, "inbound", (double)in);
	emit(ctx, "admin", (double)v->admin_conns);
}

static void
expiry(metrics_emit1 emit, void *ctx, const char *name, const char *path)
{
	long long secs;
	char err[256];

	if (path && tls_cert_expiry(path, &secs, err, sizeof(err)) == 0)
		emit(ctx, name, (double)secs);
}

static void
g_certificate_expiry(void *arg, metrics_emit1 emit, void *ctx)
{
	const struct admin_view *v = arg;

	if (v->conf->inbound.enabled)
		expiry(emit, ctx, "inbound", v->conf->inbound.cert);
	for (size_t i = 0; i < v->conf->n_services; i++)
		if (v->conf->services[i].tls.enabled)
			expiry(emit, ctx, v->conf->services[i].name, v->conf->services[i].tls.cert);
}

void
admin_page_metrics(const struct admin_view *v, struct sbuf *out)
{
	const struct metrics_gauges g = {
		.arg = (void *)v,
		.circuit_states = g_circuit_states,
		.circuit_opened = g_circuit_opened,
		.upstream_connections = g_upstream_connections,
		.endpoint_healthy = g_endpoint_healthy,
		.downstream_connections = g_downstream_connections,
		.certificate_expiry = g_certificate_expiry,
	};

	metrics_render(v->metrics, &g, out);
}
