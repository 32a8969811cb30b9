/*
 * defaults: and services: (SPEC §3). Every service starts as a copy of the
 * parsed defaults and its own keys override them one by one, so
 * "timeouts: {request: 2s}" keeps the default connect, per_try and
 * stream_idle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_priv.h"
#include "tls_ctx.h"

#define RETRY_ON_ALL 0x7fu

static const char *const lb_names[] = { "p2c_ewma", "round_robin", "random", NULL };
static const char *const proto_names[] = { "http1", "h2", "auto", NULL };

void
defaults_init(struct conf_service *d)
{
	memset(d, 0, sizeof(*d));
	d->timeouts = (struct conf_timeouts){ 1000, 15000, 0, 300000 };
	d->retries = (struct conf_retries){ 2, RETRY_ON_ALL, 25, 250, 0.2, 10, 64 << 10 };
	d->breaker = (struct conf_breaker){ 5, 10000, 1, 1024 };
	d->outlier = (struct conf_outlier){ 5, 30000, 50 };
	d->pool = (struct conf_pool){ 64, 30000, 1024, 0, 0 };
	d->load_balancer = LB_P2C_EWMA;
	d->protocol = PROTO_HTTP1;
	d->dns_refresh = 30000;
	d->tls.min_version = TLS1_2_VERSION;
	d->health_check.interval = 5000;
	d->health_check.timeout = 1000;
	d->health_check.healthy = 2;
	d->health_check.unhealthy = 3;
	compression_init(&d->compression);
}

static void
fld_retry_on(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	static const char *const names[] = {
		"connect-failure", "refused", "reset", "per-try-timeout",
		"502", "503", "504", NULL,
	};
	uint32_t *mask = (uint32_t *)(void *)((char *)obj + f->off), m = 0;
	char q[128];

	(void)key;
	if (!want_seq(l, val))
		return;
	for (size_t i = 0; val->kind == YSEQ && i < val->n; i++) {
		size_t mark = path_push_idx(l, i), k;
		const char *s = get_scalar(l, val->items[i], "a retry condition");

		for (k = 0; s != NULL && names[k] != NULL; k++)
			if (strcmp(s, names[k]) == 0)
				break;
		if (s != NULL && names[k] == NULL)
			lerr(l, val->items[i], "unknown retry condition %s (expected "
			    "connect-failure, refused, reset, per-try-timeout, 502, 503 "
			    "or 504)", quote(s, q, sizeof(q)));
		else if (s != NULL)
			m |= 1u << k;
		path_pop(l, mark);
	}
	*mask = m;
}

static const struct field backoff_fields[] = {
	{ "base", fld_duration, offsetof(struct conf_retries, backoff_base), 0, 0, NULL },
	{ "max", fld_duration, offsetof(struct conf_retries, backoff_max), 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field budget_fields[] = {
	{ "ratio", fld_double, offsetof(struct conf_retries, budget_ratio), 0, 100, NULL },
	{ "min_per_second", fld_u32, offsetof(struct conf_retries, budget_min_per_second),
	  0, 1000000, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field retries_fields[] = {
	{ "max", fld_u32, offsetof(struct conf_retries, max), 0, 100, NULL },
	{ "on", fld_retry_on, offsetof(struct conf_retries, on), 0, 0, NULL },
	{ "backoff", fld_section, 0, 0, 0, backoff_fields },
	{ "budget", fld_section, 0, 0, 0, budget_fields },
	{ "buffer", fld_size, offsetof(struct conf_retries, buffer), 0, 1 << 30, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* after: a duration, or p95 */
static void
fld_hedge_after(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_hedging *h = obj;
	const char *s = val->kind == YSCALAR && !val->bad ? val->str : NULL, *why;
	char q[128];
	int64_t ms;

	(void)f;
	(void)key;
	if (s != NULL && strcmp(s, "p95") == 0) {
		h->after_p95 = true;
		h->after = 0;
		return;
	}
	if ((s = get_scalar(l, val, "a duration or p95")) == NULL)
		return;
	if (parse_duration(s, &ms, &why) != 0) {
		lerr(l, val, "bad duration %s (%s; or p95)", quote(s, q, sizeof(q)), why);
		return;
	}
	if (ms < 1 || ms > DURATION_MAX_MS) {
		lerr(l, val, "%s is out of range (1ms..100000h, or p95)", s);
		return;
	}
	h->after_p95 = false;
	h->after = ms;
}

static const struct field hedging_fields[] = {
	{ "after", fld_hedge_after, offsetof(struct conf_hedging, after), 1, 0, NULL },
	{ "max", fld_u32, offsetof(struct conf_hedging, max), 0, 3, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* hedging: {after, max}; after is required unless max is 0 (off, which
 * is how a service turns off what defaults turned on). */
static void
fld_hedging(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_hedging *h = (void *)((char *)obj + f->off);

	*h = (struct conf_hedging){ .max = 1 };
	if (!want_map(l, val))
		return;
	walk_map(l, val, h, hedging_fields);
	if (h->max > 0 && ymap_get(val, "after", NULL) == NULL)
		lerr(l, key, "missing required key \"after\" (a duration or p95)");
	h->enabled = h->max > 0;
}

static const struct field breaker_fields[] = {
	{ "consecutive_failures", fld_u32,	/* 0 disables the breaker */
	  offsetof(struct conf_breaker, consecutive_failures), 0, 1000000, NULL },
	{ "open_for", fld_duration, offsetof(struct conf_breaker, open_for), 1, 0, NULL },
	{ "half_open_requests", fld_u32,
	  offsetof(struct conf_breaker, half_open_requests), 1, 1000000, NULL },
	{ "max_concurrent", fld_u32, offsetof(struct conf_breaker, max_concurrent),
	  1, 1000000, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field outlier_fields[] = {
	{ "consecutive_failures", fld_u32,	/* 0 disables ejection */
	  offsetof(struct conf_outlier, consecutive_failures), 0, 1000000, NULL },
	{ "base_ejection", fld_duration, offsetof(struct conf_outlier, base_ejection),
	  1, 0, NULL },
	{ "max_ejection_percent", fld_u32,
	  offsetof(struct conf_outlier, max_ejection_percent), 0, 100, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field pool_fields[] = {
	{ "max_idle_per_endpoint", fld_u32,
	  offsetof(struct conf_pool, max_idle_per_endpoint), 0, 1000000, NULL },
	{ "idle_timeout", fld_duration, offsetof(struct conf_pool, idle_timeout), 1, 0, NULL },
	{ "max_per_endpoint", fld_u32, offsetof(struct conf_pool, max_per_endpoint),
	  1, 1000000, NULL },
	{ "max_requests_per_connection", fld_u32,
	  offsetof(struct conf_pool, max_requests_per_connection), 0, 1000000000, NULL },
	{ "max_connection_age", fld_duration,
	  offsetof(struct conf_pool, max_connection_age), 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* The policies a service inherits from defaults: key by key. */
#define POLICY_FIELDS \
	{ "timeouts", fld_section, offsetof(struct conf_service, timeouts), 0, 0, \
	  timeouts_fields }, \
	{ "retries", fld_section, offsetof(struct conf_service, retries), 0, 0, \
	  retries_fields }, \
	{ "hedging", fld_hedging, offsetof(struct conf_service, hedging), 0, 0, NULL }, \
	{ "circuit_breaker", fld_section, offsetof(struct conf_service, breaker), 0, 0, \
	  breaker_fields }, \
	{ "outlier_detection", fld_section, offsetof(struct conf_service, outlier), 0, 0, \
	  outlier_fields }, \
	{ "pool", fld_section, offsetof(struct conf_service, pool), 0, 0, pool_fields }, \
	{ "load_balancer", fld_enum, offsetof(struct conf_service, load_balancer), 0, 0, \
	  lb_names }, \
	{ "compression", fld_section, offsetof(struct conf_service, compression), 0, 0, \
	  compression_fields }

static const struct field defaults_fields[] = {
	POLICY_FIELDS,
	{ "headers", fld_default_headers, 0, 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* Was N already reported? Then a check across keys would only repeat it. */
static bool
reported(const struct loader *l, const struct ynode *n)
{
	for (size_t i = 0; n != NULL && i < l->n_errs; i++)
		if (l->errs[i].line == n->line && l->errs[i].col == n->col)
			return true;
	return n != NULL && n->bad;
}

/*
 * A constraint between two keys of one mapping (LOW <= HIGH). It is
 * reported at whichever of them MAP sets itself, so a value inherited from
 * defaults is blamed where it was written, once.
 */
static void
check_le(struct loader *l, const struct ynode *map, const char *prefix,
    const char *lowkey, int64_t low, const char *highkey, int64_t high)
{
	const struct ynode *lo = ymap_get(map, lowkey, NULL);
	const struct ynode *hi = ymap_get(map, highkey, NULL);
	char a[32], b[32], path[1100];

	if (low <= high || (lo == NULL && hi == NULL) || reported(l, lo) ||
	    reported(l, hi))
		return;
	format_duration(low, a, sizeof(a));
	format_duration(high, b, sizeof(b));
	if (lo != NULL) {
		snprintf(path, sizeof(path), "%s%s%s.%s", l->path, *l->path ? "." : "",
		    prefix, lowkey);
		lerr_path(l, lo, path, "%s is more than %s.%s (%s)", a, prefix, highkey, b);
	} else {
		snprintf(path, sizeof(path), "%s%s%s.%s", l->path, *l->path ? "." : "",
		    prefix, highkey);
		lerr_path(l, hi, path, "%s is less than %s.%s (%s)", b, prefix, lowkey, a);
	}
}

/* per_try more than request could never be used whole; NODE is the map
 * holding "timeouts" (a service, defaults or the inbound listener). */
void
check_timeouts(struct loader *l, const struct conf_timeouts *t,
    const struct ynode *node)
{
	const struct ynode *tm = ymap_get(node, "timeouts", NULL);

	if (t->per_try == 0 || tm == NULL || tm->kind != YMAP)
		return;
	check_le(l, tm, "timeouts", "per_try", t->per_try, "request", t->request);
}

static void
check_policies(struct loader *l, const struct conf_service *s, const struct ynode *node)
{
	const struct ynode *r = ymap_get(node, "retries", NULL);
	const struct ynode *b = ymap_get(r, "backoff", NULL);
	size_t mark;

	check_timeouts(l, &s->timeouts, node);
	if (b == NULL || b->kind != YMAP)
		return;
	mark = path_push(l, "retries");
	check_le(l, b, "backoff", "base", s->retries.backoff_base, "max",
	    s->retries.backoff_max);
	path_pop(l, mark);
}

void
load_defaults(struct loader *l, const struct ynode *val)
{
	size_t mark = path_push(l, "defaults");

	walk_map(l, val, &l->defaults, defaults_fields);
	path_pop(l, mark);
}

void
check_defaults(struct loader *l, const struct ynode *val)
{
	size_t mark = path_push(l, "defaults");

	check_policies(l, &l->defaults, val);
	path_pop(l, mark);
}

static void
fld_endpoints(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_service *s = obj;

	(void)f;
	(void)key;
	if (!want_seq(l, val))
		return;
	if (val->kind != YSEQ || val->n == 0) {
		lerr(l, val, "must not be empty");
		return;
	}
	for (size_t i = 0; i < s->n_endpoints; i++)
		conf_addr_clear(&s->endpoints[i]);
	free(s->endpoints);
	s->n_endpoints = 0;
	if ((s->endpoints = calloc(val->n, sizeof(*s->endpoints))) == NULL) {
		l->oom = true;
		return;
	}
	for (size_t i = 0; i < val->n; i++) {
		size_t mark = path_push_idx(l, i);

		if (get_addr(l, val->items[i], &s->endpoints[s->n_endpoints], false) == 0)
			s->n_endpoints++;
		path_pop(l, mark);
	}
}

static bool
check_name(struct loader *l, const struct ynode *at, const char *s)
{
	char q[128];

	if (valid_dns_name(s, strlen(s)))
		return true;
	lerr(l, at, "bad host name %s", quote(s, q, sizeof(q)));
	return false;
}

static void
fld_hostname(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	char **p = (char **)(void *)((char *)obj + f->off);
	char *s;

	(void)key;
	if ((s = get_string(l, val)) == NULL)
		return;
	if (!check_name(l, val, s)) {
		free(s);
		return;
	}
	free(*p);
	*p = s;
}

static void
fld_hosts(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_service *s = obj;

	(void)f;
	(void)key;
	free_strings(s->hosts, s->n_hosts);
	s->hosts = get_strings(l, val, &s->n_hosts, check_name);
}

static void
fld_listen_addr(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_service *s = obj;

	(void)f;
	(void)key;
	conf_addr_clear(&s->listen);
	s->has_listen = get_addr(l, val, &s->listen, true) == 0;
}

static const struct field listen_fields[] = {
	{ "address", fld_listen_addr, 0, 0, 0, NULL },
	{ "allow_remote", fld_bool, offsetof(struct conf_service, listen_allow_remote),
	  0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* listen: ADDRESS, or listen: {address: ADDRESS, allow_remote: true} */
static void
fld_listen(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_service *s = obj;

	if (val->kind != YMAP) {
		fld_listen_addr(l, f, key, val, obj);
		return;
	}
	walk_map(l, val, obj, listen_fields);
	if (!s->has_listen && ymap_get(val, "address", NULL) == NULL)
		lerr(l, key, "missing required key \"address\"");
}

static void
fld_min_version(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "a TLS version");
	int *v = (int *)(void *)((char *)obj + f->off);
	char q[128];

	(void)key;
	if (s == NULL)
		return;
	if (strcmp(s, "1.2") == 0)
		*v = TLS1_2_VERSION;
	else if (strcmp(s, "1.3") == 0)
		*v = TLS1_3_VERSION;
	else
		lerr(l, val, "unknown value %s (expected \"1.2\" or \"1.3\")",
		    quote(s, q, sizeof(q)));
}

static const struct field tls_fields[] = {
	{ "ca", fld_path, offsetof(struct conf_tls_client, ca), 0, 0, NULL },
	{ "cert", fld_path, offsetof(struct conf_tls_client, cert), 0, 0, NULL },
	{ "key", fld_path, offsetof(struct conf_tls_client, key), 0, 0, NULL },
	{ "server_name", fld_hostname, offsetof(struct conf_tls_client, server_name),
	  0, 0, NULL },
	{ "verify_san", fld_string, offsetof(struct conf_tls_client, verify_san), 0, 0, NULL },
	{ "min_version", fld_min_version, offsetof(struct conf_tls_client, min_version),
	  0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

void
fld_tls(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_tls_client *t = (void *)((char *)obj + f->off);

	(void)key;
	t->enabled = true;
	walk_map(l, val, t, tls_fields);
}

static const struct field auth_fields[] = {
	{ "key_env", fld_string, offsetof(struct conf_service, auth_key_env), 0, 0, NULL },
	{ "key_file", fld_path, offsetof(struct conf_service, auth_key_file), 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field health_fields[] = {
	{ "path", fld_string, offsetof(struct conf_health_check, path), 0, 0, NULL },
	{ "interval", fld_duration, offsetof(struct conf_health_check, interval), 1, 0, NULL },
	{ "timeout", fld_duration, offsetof(struct conf_health_check, timeout), 1, 0, NULL },
	{ "healthy", fld_u32, offsetof(struct conf_health_check, healthy), 1, 1000, NULL },
	{ "unhealthy", fld_u32, offsetof(struct conf_health_check, unhealthy), 1, 1000, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* It goes on a request line as it is: no space, CR, LF or other control. */
static bool
path_is_clean(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static void
fld_health_check(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_health_check *h = (void *)((char *)obj + f->off);
	const struct ynode *p;
	char q[128];

	h->enabled = true;
	if (!want_map(l, val))
		return;
	walk_map(l, val, h, health_fields);
	if ((p = ymap_get(val, "path", NULL)) == NULL)
		lerr(l, key, "missing required key \"path\"");
	else if (h->path != NULL && (h->path[0] != '/' || !path_is_clean(h->path))) {
		size_t mark = path_push(l, "path");

		lerr(l, p, h->path[0] != '/' ? "%s must start with '/'" :
		    "%s: spaces and control characters are not allowed in a request path",
		    quote(h->path, q, sizeof(q)));
		path_pop(l, mark);
	}
}

static const struct field service_fields[] = {
	{ "endpoints", fld_endpoints, 0, 0, 0, NULL },
	{ "srv", fld_hostname, offsetof(struct conf_service, srv), 0, 0, NULL },
	{ "hosts", fld_hosts, 0, 0, 0, NULL },
	{ "dns_refresh", fld_duration, offsetof(struct conf_service, dns_refresh),
	  1000, 0, NULL },
	{ "listen", fld_listen, 0, 0, 0, NULL },
	{ "tls", fld_tls, offsetof(struct conf_service, tls), 0, 0, NULL },
	{ "auth", fld_section, 0, 0, 0, auth_fields },
	{ "rate_limit", fld_rate_limit, offsetof(struct conf_service, rate_limit), 0, 0, NULL },
	{ "health_check", fld_health_check, offsetof(struct conf_service, health_check),
	  0, 0, NULL },
	{ "protocol", fld_enum, offsetof(struct conf_service, protocol), 0, 0, proto_names },
	{ "headers", fld_section, offsetof(struct conf_service, headers), 0, 0, headers_fields },
	POLICY_FIELDS,
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* Reports a TLS error at the node of the file that caused it. */
static void
tls_error(struct loader *l, const struct ynode *tls, const struct ynode *key,
    enum tls_what what, const char *err)
{
	static const char *const keys[] = { NULL, "ca", "cert", "key" };
	const struct ynode *at = NULL;
	size_t mark = path_push(l, "tls");

	if (what != TLS_ERR_OTHER && (at = ymap_get(tls, keys[what], NULL)) != NULL)
		path_push(l, keys[what]);
	lerr(l, at ? at : key, "%s", err);
	path_pop(l, mark);
}

static void
check_tls(struct loader *l, struct conf_service *s, const struct ynode *node)
{
	const struct ynode *key, *tls = ymap_get(node, "tls", &key);
	enum tls_what what;
	char err[512];
	size_t mark;

	if (!s->tls.enabled || tls == NULL ||
	    (tls->kind != YMAP && !ynode_is_null(tls)))
		return;		/* absent, or its type was reported */
	mark = path_push(l, "tls");
	if (s->tls.ca == NULL && ymap_get(tls, "ca", NULL) == NULL)
		lerr(l, key, "missing required key \"ca\"");
	if ((ymap_get(tls, "cert", NULL) == NULL) != (ymap_get(tls, "key", NULL) == NULL))
		lerr(l, key, "cert and key must be given together");
	path_pop(l, mark);
	if (s->tls.ca == NULL || (s->tls.cert == NULL) != (s->tls.key == NULL))
		return;
	s->tls.ctx = tls_client_ctx_build(&s->tls, &what, err, sizeof(err));
	if (s->tls.ctx == NULL)
		tls_error(l, tls, key, what, err);
}

static bool
all_loopback(const struct conf_service *s)
{
	if (s->srv != NULL)
		return false;
	for (size_t i = 0; i < s->n_endpoints; i++)
		if (!s->endpoints[i].is_loopback)
			return false;
	return true;
}

static void
check_auth(struct loader *l, struct conf_service *s, const struct ynode *node)
{
	const struct ynode *akey, *auth = ymap_get(node, "auth", &akey);
	const struct ynode *envkey, *env, *filekey, *file;
	size_t mark;

	if (auth == NULL || (auth->kind != YMAP && !ynode_is_null(auth)))
		return;		/* absent, or its type was reported */
	env = ymap_get(auth, "key_env", &envkey);
	file = ymap_get(auth, "key_file", &filekey);
	mark = path_push(l, "auth");
	if (env != NULL && file != NULL)
		lerr(l, filekey, "key_env and key_file are mutually exclusive");
	else if (env == NULL && file == NULL)
		lerr(l, akey, "missing required key \"key_env\" or \"key_file\"");
	else if (env != NULL && s->auth_key_env != NULL) {
		path_push(l, "key_env");
		s->auth_key = secret_from_env(l, env, s->auth_key_env);
	} else if (file != NULL && s->auth_key_file != NULL) {
		path_push(l, "key_file");
		s->auth_key = secret_from_file(l, file, s->auth_key_file);
	}
	path_pop(l, mark);
	if (!s->tls.enabled && !all_loopback(s)) {
		mark = path_push(l, "auth");
		lerr(l, akey, "a service key must not cross the network in clear text: "
		    "add tls, or use only loopback endpoints");
		path_pop(l, mark);
	}
}

static void
check_service(struct loader *l, struct conf_service *s, const struct ynode *key,
    const struct ynode *node)
{
	const struct ynode *srvkey;
	bool has_ep = ymap_get(node, "endpoints", NULL) != NULL;

	if (ymap_get(node, "srv", &srvkey) != NULL && has_ep)
		lerr(l, srvkey, "endpoints and srv are mutually exclusive");
	else if (srvkey == NULL && !has_ep)
		lerr(l, key, "missing required key \"endpoints\" (or \"srv\")");
	check_tls(l, s, node);
	/* SPEC §3: auto is the default with tls */
	if (ymap_get(node, "protocol", NULL) == NULL && s->tls.enabled)
		s->protocol = PROTO_AUTO;
	if (s->tls.ctx != NULL) {
		/* SPEC §12: what ALPN offers; h2 alone needs the server to pick it */
		static const unsigned char h1[] = "\x08http/1.1", h2[] = "\x02h2",
		    both[] = "\x02h2\x08http/1.1";
		const unsigned char *p = s->protocol == PROTO_H2 ? h2 :
		    s->protocol == PROTO_AUTO ? both : h1;
		size_t n = s->protocol == PROTO_H2 ? sizeof(h2) - 1 :
		    s->protocol == PROTO_AUTO ? sizeof(both) - 1 : sizeof(h1) - 1;

		if (SSL_CTX_set_alpn_protos(s->tls.ctx, p, (unsigned)n) != 0)
			l->oom = true;
	}
	check_auth(l, s, node);
	check_policies(l, s, node);
	check_rules_coding(l, key, &s->headers, &s->compression, false);
	if (s->tls.server_name != NULL)
		s->upstream_host = s->tls.server_name;
	else if (s->n_hosts > 0)
		s->upstream_host = s->hosts[0];
	else
		s->upstream_host = s->name;
}

/* The node of hosts entry H of a service, for the message position. */
static const struct ynode *
host_node(const struct ynode *svc, const char *h, const struct ynode *dflt)
{
	const struct ynode *hosts = ymap_get(svc, "hosts", NULL);

	for (size_t i = 0; hosts != NULL && hosts->kind == YSEQ && i < hosts->n; i++)
		if (hosts->items[i]->kind == YSCALAR && strcmp(hosts->items[i]->str, h) == 0)
			return hosts->items[i];
	return dflt;
}

/* Names route case-insensitively, so two that differ only in case, or a
 * host that another service already answers to, would be ambiguous.
 * Exact duplicates were reported as duplicate keys already. SVCS is the
 * services: mapping, one pair per loaded service. */
static void
check_routes(struct loader *l, const struct ynode *svcs)
{
	char q[128], path[1100];

	for (size_t i = 0; i < l->c->n_services; i++) {
		const struct conf_service *s = &l->c->services[i];
		const struct ynode *key = svcs->pairs[i].key;

		for (size_t j = 0; j < i; j++) {
			const struct conf_service *o = &l->c->services[j];

			if (strcmp(s->name, o->name) == 0)
				continue;
			if (strcasecmp(s->name, o->name) == 0)
				lerr_path(l, key, "services",
				    "duplicate service %s (names are case-insensitive)",
				    quote(s->name, q, sizeof(q)));
			for (size_t k = 0; k < o->n_hosts; k++)
				if (strcasecmp(s->name, o->hosts[k]) == 0)
					lerr_path(l, key, "services", "service %s is "
					    "already a host of service %s",
					    quote(s->name, q, sizeof(q)), o->name);
			for (size_t h = 0; h < s->n_hosts; h++) {
				bool clash = strcasecmp(s->hosts[h], o->name) == 0;

				for (size_t k = 0; k < o->n_hosts && !clash; k++)
					clash = strcasecmp(s->hosts[h], o->hosts[k]) == 0;
				if (!clash)
					continue;
				snprintf(path, sizeof(path), "services.%s.hosts", s->name);
				lerr_path(l, host_node(svcs->pairs[i].val, s->hosts[h], key),
				    path, "%s already routes to service %s",
				    quote(s->hosts[h], q, sizeof(q)), o->name);
			}
		}
	}
}

/* The walk: every service starts from the parsed defaults. */
void
load_services(struct loader *l, const struct ynode *val)
{
	struct config *c = l->c;
	size_t top = path_push(l, "services");

	if (!want_map(l, val) || val->kind != YMAP || val->n == 0)
		goto out;
	if ((c->services = calloc(val->n, sizeof(*c->services))) == NULL) {
		l->oom = true;
		goto out;
	}
	for (size_t i = 0; i < val->n; i++) {
		const struct ynode *k = val->pairs[i].key;
		struct conf_service *s = &c->services[c->n_services];
		char q[128];
		size_t mark;

		if (k->kind != YSCALAR)
			continue;	/* reported when the tree was checked */
		*s = l->defaults;	/* holds no pointers: a plain copy is right */
		if ((s->name = strdup(k->str)) == NULL) {
			l->oom = true;
			break;
		}
		c->n_services++;
		s->pos.line = k->line;
		s->pos.col = k->col;
		if (!valid_dns_name(k->str, k->len))
			lerr(l, k, "bad service name %s (letters, digits, '-', '_' and "
			    "'.' only)", quote(k->str, q, sizeof(q)));
		mark = path_push(l, k->str);
		if (want_map(l, val->pairs[i].val))
			walk_map(l, val->pairs[i].val, s, service_fields);
		path_pop(l, mark);
	}
out:
	path_pop(l, top);
}

/* Only after a walk without shape errors: then service I is pair I. */
void
check_services(struct loader *l, const struct ynode *val)
{
	struct config *c = l->c;
	size_t top;

	if (val->kind != YMAP || val->n != c->n_services)
		return;
	top = path_push(l, "services");
	for (size_t i = 0; i < c->n_services; i++) {
		const struct ynode *v = val->pairs[i].val;
		size_t mark;

		if (v->kind != YMAP && !ynode_is_null(v))
			continue;	/* a failed ${VAR}: reported */
		mark = path_push(l, c->services[i].name);
		check_service(l, &c->services[i], val->pairs[i].key, v);
		path_pop(l, mark);
	}
	path_pop(l, top);
	check_routes(l, val);
}

void
service_free(struct conf_service *s)
{
	free(s->name);
	for (size_t i = 0; i < s->n_endpoints; i++)
		conf_addr_clear(&s->endpoints[i]);
	free(s->endpoints);
	free(s->srv);
	free_strings(s->hosts, s->n_hosts);
	conf_addr_clear(&s->listen);
	free(s->tls.ca);
	free(s->tls.cert);
	free(s->tls.key);
	free(s->tls.server_name);
	free(s->tls.verify_san);
	SSL_CTX_free(s->tls.ctx);
	free(s->auth_key_env);
	free(s->auth_key_file);
	secret_free(s->auth_key);
	free(s->health_check.path);
	headers_conf_free(&s->headers);
}
