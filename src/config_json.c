/*
 * The effective configuration as JSON, for GET /config. The form of each
 * value is described in config_json.h. Keys are never read here: where a
 * key was loaded, only the literal "<redacted>" is written.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_json.h"
#include "errors.h"

#define REDACTED "\"<redacted>\""

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const lb_names[] = { "p2c_ewma", "round_robin", "random" };
static const char *const proto_names[] = { "http1", "h2", "auto" };
static const char *const retry_on_names[] = {
	"connect-failure", "refused", "reset", "per-try-timeout", "502", "503", "504",
};

/* "NAME": with a leading comma unless FIRST. */
static void
key(struct sbuf *o, const char *name, bool first)
{
	if (!first)
		sbuf_add(o, ",", 1);
	sbuf_add(o, "\"", 1);
	sbuf_adds(o, name);
	sbuf_add(o, "\":", 2);
}

static void
str(struct sbuf *o, const char *s)
{
	if (s == NULL) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "\"", 1);
	json_escape(o, s, strlen(s));
	sbuf_add(o, "\"", 1);
}

static void
str_list(struct sbuf *o, char *const *v, size_t n)
{
	sbuf_add(o, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		str(o, v[i]);
	}
	sbuf_add(o, "]", 1);
}

static void
addr_list(struct sbuf *o, const struct conf_addr *v, size_t n)
{
	sbuf_add(o, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		str(o, v[i].text);
	}
	sbuf_add(o, "]", 1);
}

static void
boolean(struct sbuf *o, bool b)
{
	sbuf_adds(o, b ? "true" : "false");
}

static void
num(struct sbuf *o, unsigned long long v)
{
	sbuf_addu(o, v);
}

/* A finite double in the shortest form that reads back the same. */
static void
real(struct sbuf *o, double v)
{
	char tmp[40];

	if (!isfinite(v)) {
		sbuf_adds(o, "null");
		return;
	}
	for (int prec = 6; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	sbuf_adds(o, tmp);
}

/* A duration in the largest unit dividing it: "250ms", "5s", "2m", "1h". */
static void
duration(struct sbuf *o, int64_t ms)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {
		{ 3600000, "h" }, { 60000, "m" }, { 1000, "s" }, { 1, "ms" },
	};
	char tmp[32];

	if (ms == 0) {
		sbuf_adds(o, "\"0s\"");
		return;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms % units[i].ms == 0) {
			snprintf(tmp, sizeof(tmp), "\"%lld%s\"",
			    (long long)(ms / units[i].ms), units[i].unit);
			sbuf_adds(o, tmp);
			return;
		}
	}
}

static void
listener_fields(struct sbuf *o, const struct conf_listener *l)
{
	key(o, "address", true);
	str(o, l->address.text);
	key(o, "allow_remote", false);
	boolean(o, l->allow_remote);
	key(o, "max_connections", false);
	num(o, l->max_connections);
	key(o, "max_request_body", false);
	num(o, l->max_request_body);
	key(o, "idle_timeout", false);
	duration(o, l->idle_timeout);
	key(o, "header_read_timeout", false);
	duration(o, l->header_read_timeout);
}

static void
listener(struct sbuf *o, const struct conf_listener *l)
{
	sbuf_add(o, "{", 1);
	listener_fields(o, l);
	sbuf_add(o, "}", 1);
}

static void
timeouts(struct sbuf *o, const struct conf_timeouts *t)
{
	key(o, "timeouts", false);
	sbuf_add(o, "{", 1);
	key(o, "connect", true);
	duration(o, t->connect);
	key(o, "request", false);
	duration(o, t->request);
	key(o, "per_try", false);
	duration(o, t->per_try);
	key(o, "stream_idle", false);
	duration(o, t->stream_idle);
	sbuf_add(o, "}", 1);
}

static void
rate_limit(struct sbuf *o, const struct conf_rate_limit *r)
{
	key(o, "rate_limit", false);
	if (!r->enabled) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	key(o, "rps", true);
	real(o, r->rps);
	key(o, "burst", false);
	num(o, r->burst);
	sbuf_add(o, "}", 1);
}

static void
retries(struct sbuf *o, const struct conf_retries *r)
{
	bool first = true;

	key(o, "retries", false);
	sbuf_add(o, "{", 1);
	key(o, "max", true);
	num(o, r->max);
	key(o, "on", false);
	sbuf_add(o, "[", 1);
	for (size_t i = 0; i < sizeof(retry_on_names) / sizeof(retry_on_names[0]); i++) {
		if ((r->on & (1u << i)) == 0)
			continue;
		if (!first)
			sbuf_add(o, ",", 1);
		first = false;
		str(o, retry_on_names[i]);
	}
	sbuf_add(o, "]", 1);
	key(o, "backoff", false);
	sbuf_add(o, "{", 1);
	key(o, "base", true);
	duration(o, r->backoff_base);
	key(o, "max", false);
	duration(o, r->backoff_max);
	sbuf_add(o, "}", 1);
	key(o, "budget", false);
	sbuf_add(o, "{", 1);
	key(o, "ratio", true);
	real(o, r->budget_ratio);
	key(o, "min_per_second", false);
	num(o, r->budget_min_per_second);
	sbuf_add(o, "}", 1);
	key(o, "buffer", false);
	num(o, r->buffer);
	sbuf_add(o, "}", 1);
}

static void
hrule_map(struct sbuf *o, const struct conf_hrule *r, size_t n)
{
	sbuf_add(o, "{", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		sbuf_add(o, "\"", 1);
		json_escape(o, r[i].name, strlen(r[i].name));
		sbuf_add(o, "\":", 2);
		/* a value from the environment may be a secret */
		str(o, r[i].secret ? "<redacted>" : r[i].value);
	}
	sbuf_add(o, "}", 1);
}

static void
hrules(struct sbuf *o, const struct conf_hrules *r)
{
	sbuf_add(o, "{", 1);
	key(o, "set", true);
	hrule_map(o, r->set, r->n_set);
	key(o, "add", false);
	hrule_map(o, r->add, r->n_add);
	key(o, "remove", false);
	str_list(o, r->remove, r->n_remove);
	sbuf_add(o, "}", 1);
}

/* "headers": {"request": {...}, "response": {...}} (SPEC §15) */
static void
headers_rules(struct sbuf *o, const struct conf_headers *h, bool first)
{
	key(o, "headers", first);
	sbuf_add(o, "{", 1);
	key(o, "request", true);
	hrules(o, &h->request);
	key(o, "response", false);
	hrules(o, &h->response);
	sbuf_add(o, "}", 1);
}

/* "compression": {...} (SPEC §14); "encodings": [] when off */
static void
compression(struct sbuf *o, const struct conf_compression *c)
{
	key(o, "compression", false);
	sbuf_add(o, "{", 1);
	key(o, "encodings", true);
	sbuf_add(o, "[", 1);
	for (unsigned i = 0; i < c->n_encodings; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		str(o, c->encodings[i] == 1 ? "zstd" : "gzip");
	}
	sbuf_add(o, "]", 1);
	key(o, "min_size", false);
	num(o, c->min_size);
	key(o, "types", false);
	sbuf_add(o, "[", 1);
	for (unsigned i = 0; i < c->n_types; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		str(o, c->types[i]);
	}
	sbuf_add(o, "]", 1);
	key(o, "level", false);
	sbuf_add(o, "{", 1);
	key(o, "zstd", true);
	num(o, c->level_zstd);
	key(o, "gzip", false);
	num(o, c->level_gzip);
	sbuf_add(o, "}}", 2);
}

/* "hedging": null when off */
static void
hedging(struct sbuf *o, const struct conf_hedging *h)
{
	key(o, "hedging", false);
	if (!h->enabled) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	key(o, "after", true);
	if (h->after_p95)
		str(o, "p95");
	else
		duration(o, h->after);
	key(o, "max", false);
	num(o, h->max);
	sbuf_add(o, "}", 1);
}

static void
policies(struct sbuf *o, const struct conf_service *s)
{
	const struct conf_breaker *b = &s->breaker;
	const struct conf_outlier *x = &s->outlier;
	const struct conf_pool *p = &s->pool;

	timeouts(o, &s->timeouts);
	retries(o, &s->retries);
	hedging(o, &s->hedging);

	key(o, "circuit_breaker", false);
	sbuf_add(o, "{", 1);
	key(o, "consecutive_failures", true);
	num(o, b->consecutive_failures);
	key(o, "open_for", false);
	duration(o, b->open_for);
	key(o, "half_open_requests", false);
	num(o, b->half_open_requests);
	key(o, "max_concurrent", false);
	num(o, b->max_concurrent);
	sbuf_add(o, "}", 1);

	key(o, "outlier_detection", false);
	sbuf_add(o, "{", 1);
	key(o, "consecutive_failures", true);
	num(o, x->consecutive_failures);
	key(o, "base_ejection", false);
	duration(o, x->base_ejection);
	key(o, "max_ejection_percent", false);
	num(o, x->max_ejection_percent);
	sbuf_add(o, "}", 1);

	key(o, "pool", false);
	sbuf_add(o, "{", 1);
	key(o, "max_idle_per_endpoint", true);
	num(o, p->max_idle_per_endpoint);
	key(o, "idle_timeout", false);
	duration(o, p->idle_timeout);
	key(o, "max_per_endpoint", false);
	num(o, p->max_per_endpoint);
	key(o, "max_requests_per_connection", false);
	num(o, p->max_requests_per_connection);
	key(o, "max_connection_age", false);
	duration(o, p->max_connection_age);
	sbuf_add(o, "}", 1);

	key(o, "load_balancer", false);
	str(o, (unsigned)s->load_balancer < 3 ? lb_names[s->load_balancer] : NULL);
	headers_rules(o, &s->headers, false);
	compression(o, &s->compression);
}

static void
service_tls(struct sbuf *o, const struct conf_tls_client *t)
{
	key(o, "tls", false);
	if (!t->enabled) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	key(o, "ca", true);
	str(o, t->ca);
	key(o, "cert", false);
	str(o, t->cert);
	key(o, "key", false);		/* the private key's path, not a secret */
	str(o, t->key);
	key(o, "server_name", false);
	str(o, t->server_name);
	key(o, "verify_san", false);
	str(o, t->verify_san);
	key(o, "min_version", false);
	str(o, t->min_version == TLS1_3_VERSION ? "1.3" : "1.2");
	sbuf_add(o, "}", 1);
}

/* The key's name, and "<redacted>" for the key itself. */
static void
service_auth(struct sbuf *o, const struct conf_service *s)
{
	key(o, "auth", false);
	if (s->auth_key_env == NULL && s->auth_key_file == NULL) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	if (s->auth_key_env != NULL) {
		key(o, "key_env", true);
		str(o, s->auth_key_env);
	} else {
		key(o, "key_file", true);
		str(o, s->auth_key_file);
	}
	key(o, "key", false);
	sbuf_adds(o, s->auth_key != NULL ? REDACTED : "null");
	sbuf_add(o, "}", 1);
}

static void
service(struct sbuf *o, const struct conf_service *s)
{
	const struct conf_health_check *h = &s->health_check;

	sbuf_add(o, "{", 1);
	key(o, "name", true);
	str(o, s->name);
	key(o, "endpoints", false);
	addr_list(o, s->endpoints, s->n_endpoints);
	key(o, "srv", false);
	str(o, s->srv);
	key(o, "hosts", false);
	str_list(o, s->hosts, s->n_hosts);
	key(o, "dns_refresh", false);
	duration(o, s->dns_refresh);
	key(o, "listen", false);
	if (s->has_listen) {
		sbuf_add(o, "{", 1);
		key(o, "address", true);
		str(o, s->listen.text);
		key(o, "allow_remote", false);
		boolean(o, s->listen_allow_remote);
		sbuf_add(o, "}", 1);
	} else
		sbuf_adds(o, "null");
	service_tls(o, &s->tls);
	service_auth(o, s);
	policies(o, s);
	rate_limit(o, &s->rate_limit);
	key(o, "health_check", false);
	if (h->enabled) {
		sbuf_add(o, "{", 1);
		key(o, "path", true);
		str(o, h->path);
		key(o, "interval", false);
		duration(o, h->interval);
		key(o, "timeout", false);
		duration(o, h->timeout);
		key(o, "healthy", false);
		num(o, h->healthy);
		key(o, "unhealthy", false);
		num(o, h->unhealthy);
		sbuf_add(o, "}", 1);
	} else
		sbuf_adds(o, "null");
	key(o, "protocol", false);
	str(o, (unsigned)s->protocol < 3 ? proto_names[s->protocol] : NULL);
	sbuf_add(o, "}", 1);
}

static void
inbound(struct sbuf *o, const struct conf_inbound *in)
{
	bool first = true;

	if (!in->enabled) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	listener_fields(o, &in->listener);
	key(o, "handshake_timeout", false);
	duration(o, in->listener.handshake_timeout);
	key(o, "tls", false);
	sbuf_add(o, "{", 1);
	key(o, "cert", true);
	str(o, in->cert);
	key(o, "key", false);		/* the private key's path */
	str(o, in->key);
	key(o, "client_ca", false);
	str(o, in->client_ca);
	key(o, "allowed_peers", false);
	if (in->n_allowed_peers > 0)
		str_list(o, in->allowed_peers, in->n_allowed_peers);
	else
		sbuf_adds(o, "null");
	sbuf_add(o, "}", 1);

	key(o, "auth", false);
	if (in->auth_enabled) {
		sbuf_add(o, "{", 1);
		if (in->n_auth_keys_env > 0) {
			key(o, "keys_env", first);
			str_list(o, in->auth_keys_env, in->n_auth_keys_env);
			first = false;
		}
		if (in->auth_keys_file != NULL) {
			key(o, "keys_file", first);
			str(o, in->auth_keys_file);
			first = false;
		}
		/* one entry per key: how many there are is not secret */
		key(o, "keys", first);
		sbuf_add(o, "[", 1);
		for (size_t i = 0; i < in->n_auth_keys; i++) {
			if (i > 0)
				sbuf_add(o, ",", 1);
			sbuf_adds(o, REDACTED);
		}
		sbuf_add(o, "]}", 2);
	} else
		sbuf_adds(o, "null");

	key(o, "local_app", false);
	str(o, in->local_app.text);
	key(o, "local_app_protocol", false);
	str(o, in->local_app_protocol == LOCAL_H2C ? "h2c" : "http1");
	timeouts(o, &in->timeouts);
	rate_limit(o, &in->rate_limit);
	key(o, "max_concurrent", false);
	num(o, in->max_concurrent);
	headers_rules(o, &in->headers, false);
	compression(o, &in->compression);
	sbuf_add(o, "}", 1);
}

/* SPEC §13; null when off. The URL is shown as written: it holds no
 * credentials (the loader refuses user info). */
static void
tracing(struct sbuf *o, const struct conf_tracing *t)
{
	key(o, "tracing", false);
	if (!t->enabled) {
		sbuf_adds(o, "null");
		return;
	}
	sbuf_add(o, "{", 1);
	key(o, "otlp", true);
	str(o, t->otlp);
	service_tls(o, &t->tls);
	key(o, "service_name", false);
	str(o, t->service_name);
	key(o, "sample_ratio", false);
	real(o, t->sample_ratio);
	key(o, "max_queue", false);
	num(o, t->max_queue);
	key(o, "batch", false);
	sbuf_add(o, "{", 1);
	key(o, "max_spans", true);
	num(o, t->batch_max_spans);
	key(o, "interval", false);
	duration(o, t->batch_interval);
	sbuf_add(o, "}}", 2);
}

void
config_to_json(const struct config *c, struct sbuf *o)
{
	sbuf_add(o, "{", 1);
	key(o, "workers", true);
	num(o, c->workers);
	key(o, "scheduling", false);
	str(o, (unsigned)c->scheduling <= CONF_SCHED_NORMAL ? conf_scheduling_names[c->scheduling] :
	    NULL);
	key(o, "cpu_affinity", false);
	str(o, (unsigned)c->cpu_affinity <= CONF_AFFINITY_OFF ?
	    conf_affinity_names[c->cpu_affinity] : NULL);

	key(o, "log", false);
	sbuf_add(o, "{", 1);
	key(o, "level", true);
	str(o, (unsigned)c->log_level < 4 ? level_names[c->log_level] : NULL);
	key(o, "access", false);
	str(o, c->log_access);
	sbuf_add(o, "}", 1);

	key(o, "drain_delay", false);
	duration(o, c->drain_delay);
	key(o, "drain_timeout", false);
	duration(o, c->drain_timeout);
	key(o, "watch", false);
	boolean(o, c->watch);

	/* what every service and the inbound listener apply first */
	key(o, "defaults", false);
	sbuf_add(o, "{", 1);
	headers_rules(o, &c->default_headers, true);
	sbuf_add(o, "}", 1);

	/* [] = the nameservers of /etc/resolv.conf */
	key(o, "resolver", false);
	sbuf_add(o, "{", 1);
	key(o, "nameservers", true);
	addr_list(o, c->nameservers, c->n_nameservers);
	sbuf_add(o, "}", 1);
	tracing(o, &c->tracing);

	key(o, "listeners", false);
	sbuf_add(o, "{", 1);
	key(o, "outbound", true);
	listener(o, &c->outbound);
	key(o, "inbound", false);
	inbound(o, &c->inbound);
	key(o, "admin", false);
	sbuf_add(o, "{", 1);
	listener_fields(o, &c->admin);
	key(o, "hosts", false);
	str_list(o, c->admin_hosts, c->n_admin_hosts);
	sbuf_add(o, "}}", 2);

	key(o, "services", false);
	sbuf_add(o, "[", 1);
	for (size_t i = 0; i < c->n_services; i++) {
		if (i > 0)
			sbuf_add(o, ",", 1);
		service(o, &c->services[i]);
	}
	sbuf_add(o, "]}", 2);
}
