/*
 * listeners: outbound, inbound and admin (SPEC §3), and the checks across
 * every address ferry binds: loopback unless allow_remote, and no two
 * listeners on one address and port.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config_priv.h"
#include "inbound.h"
#include "tls_ctx.h"

static void
listener_init(struct loader *l, struct conf_listener *li, const char *addr)
{
	const char *why;

	memset(li, 0, sizeof(*li));
	li->max_connections = 10000;
	li->idle_timeout = 60000;
	li->header_read_timeout = 10000;
	if (parse_addr(addr, &li->address, &why) != 0)
		l->oom = true;	/* the defaults are valid: only ENOMEM gets here */
}

static void
fld_laddr(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_addr *a = (void *)((char *)obj + f->off);
	struct conf_addr n;

	(void)key;
	if (get_addr(l, val, &n, true) == 0) {
		conf_addr_clear(a);
		*a = n;
	}
}

#define LISTENER_FIELDS(base) \
	{ "address", fld_laddr, (base) + offsetof(struct conf_listener, address), \
	  0, 0, NULL }, \
	{ "allow_remote", fld_bool, (base) + offsetof(struct conf_listener, allow_remote), \
	  0, 0, NULL }, \
	{ "max_connections", fld_u32, \
	  (base) + offsetof(struct conf_listener, max_connections), 1, 1000000, NULL }, \
	{ "max_request_body", fld_size, \
	  (base) + offsetof(struct conf_listener, max_request_body), 0, 0, NULL }, \
	{ "idle_timeout", fld_duration, \
	  (base) + offsetof(struct conf_listener, idle_timeout), 1, 0, NULL }, \
	{ "header_read_timeout", fld_duration, \
	  (base) + offsetof(struct conf_listener, header_read_timeout), 1, 0, NULL }

static const struct field listener_fields[] = {
	LISTENER_FIELDS(0),
	{ NULL, NULL, 0, 0, 0, NULL },
};

static void
fld_listener(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	(void)key;
	walk_map(l, val, (char *)obj + f->off, listener_fields);
}

static void
fld_strings(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	char ***v = (void *)((char *)obj + f->off);
	size_t *n = (void *)((char *)obj + f->min);	/* min holds the count's offset */

	(void)key;
	free_strings(*v, *n);
	*v = get_strings(l, val, n, NULL);
}

/*
 * An absent key admits any identity. An empty list reads as "nobody" to
 * one person and "anybody" to another (and was taken as anybody), and a
 * bare "allowed_peers:" is null: both are refused, so a list emptied by
 * mistake cannot open the listener to every certificate the CA signed.
 */
static void
fld_allowed_peers(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_inbound *in = obj;

	(void)f;
	(void)key;
	free_strings(in->allowed_peers, in->n_allowed_peers);
	in->allowed_peers = NULL;
	in->n_allowed_peers = 0;
	if (ynode_is_null(val) || (val->kind == YSEQ && val->n == 0)) {
		lerr(l, val, "must list at least one identity (without the key, any "
		    "identity is allowed)");
		return;
	}
	in->allowed_peers = get_strings(l, val, &in->n_allowed_peers, NULL);
}

/* "name" or "name:port"; IP literals are always accepted, so need no entry. */
static bool
check_admin_host(struct loader *l, const struct ynode *at, const char *s)
{
	const char *colon = strchr(s, ':');
	size_t n = colon ? (size_t)(colon - s) : strlen(s);
	bool ok = valid_dns_name(s, n);
	char q[128];

	if (ok && colon != NULL) {
		const char *p = colon + 1;
		long port = 0;

		ok = *p != '\0' && strlen(p) <= 5;
		for (; ok && *p; p++) {
			ok = *p >= '0' && *p <= '9';
			port = port * 10 + (*p - '0');
		}
		ok = ok && port >= 1 && port <= 65535;
	}
	if (!ok)
		lerr(l, at, "bad host name %s (a name, or name:port)", quote(s, q, sizeof(q)));
	return ok;
}

static void
fld_admin_hosts(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct config *c = obj;

	(void)f;
	(void)key;
	free_strings(c->admin_hosts, c->n_admin_hosts);
	c->admin_hosts = get_strings(l, val, &c->n_admin_hosts, check_admin_host);
}

static const struct field admin_fields[] = {
	LISTENER_FIELDS(offsetof(struct config, admin)),
	{ "hosts", fld_admin_hosts, 0, 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static void
fld_local_app(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_addr *a = (void *)((char *)obj + f->off), n;

	(void)key;
	/* an IP or localhost, like a listener: the app runs on this host */
	if (get_addr(l, val, &n, true) == 0) {
		conf_addr_clear(a);
		*a = n;
	}
}

static const struct field inbound_tls_fields[] = {
	{ "cert", fld_path, offsetof(struct conf_inbound, cert), 0, 0, NULL },
	{ "key", fld_path, offsetof(struct conf_inbound, key), 0, 0, NULL },
	{ "client_ca", fld_path, offsetof(struct conf_inbound, client_ca), 0, 0, NULL },
	{ "allowed_peers", fld_allowed_peers, 0, 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field inbound_auth_fields[] = {
	{ "keys_env", fld_strings, offsetof(struct conf_inbound, auth_keys_env),
	  offsetof(struct conf_inbound, n_auth_keys_env), 0, NULL },
	{ "keys_file", fld_path, offsetof(struct conf_inbound, auth_keys_file), 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* in enum local_app_protocol order */
static const char *const local_app_protocols[] = { "http1", "h2c", NULL };

static const struct field inbound_fields[] = {
	LISTENER_FIELDS(offsetof(struct conf_inbound, listener)),
	/* the only TLS listener: the others have no handshake to time */
	{ "handshake_timeout", fld_duration,
	  offsetof(struct conf_inbound, listener) +
	  offsetof(struct conf_listener, handshake_timeout), 1, 0, NULL },
	{ "tls", fld_section, 0, 0, 0, inbound_tls_fields },
	{ "auth", fld_section, 0, 0, 0, inbound_auth_fields },
	{ "local_app", fld_local_app, offsetof(struct conf_inbound, local_app), 0, 0, NULL },
	{ "local_app_protocol", fld_enum, offsetof(struct conf_inbound, local_app_protocol),
	  0, 0, local_app_protocols },
	{ "timeouts", fld_section, offsetof(struct conf_inbound, timeouts), 0, 0,
	  timeouts_fields },
	{ "rate_limit", fld_rate_limit, offsetof(struct conf_inbound, rate_limit), 0, 0, NULL },
	{ "max_concurrent", fld_u32, offsetof(struct conf_inbound, max_concurrent),
	  1, 1000000, NULL },
	{ "headers", fld_section, offsetof(struct conf_inbound, headers), 0, 0, headers_fields },
	{ "compression", fld_section, offsetof(struct conf_inbound, compression), 0, 0,
	  compression_fields },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static void
inbound_tls(struct loader *l, struct conf_inbound *in, const struct ynode *key,
    const struct ynode *node)
{
	static const char *const keys[] = { NULL, "client_ca", "cert", "key" };
	const struct ynode *tkey, *tls = ymap_get(node, "tls", &tkey), *at;
	enum tls_what what;
	size_t mark;
	char err[512];

	if (tls == NULL) {
		lerr(l, key, "missing required key \"tls\"");
		return;
	}
	if (tls->kind != YMAP && !ynode_is_null(tls))
		return;		/* reported as the wrong type */
	mark = path_push(l, "tls");
	if (ymap_get(tls, "cert", NULL) == NULL)
		lerr(l, tkey, "missing required key \"cert\"");
	if (ymap_get(tls, "key", NULL) == NULL)
		lerr(l, tkey, "missing required key \"key\"");
	/* inbound is mutual TLS: a peer without a verified certificate would
	 * have no identity for allowed_peers and x-ferry-peer */
	if (ymap_get(tls, "client_ca", NULL) == NULL)
		lerr(l, tkey, "missing required key \"client_ca\"");
	if (in->cert != NULL && in->key != NULL && in->client_ca != NULL) {
		in->ctx = tls_server_ctx_build(in->cert, in->key, in->client_ca,
		    in->allowed_peers, in->n_allowed_peers, &what, err, sizeof(err));
		if (in->ctx == NULL) {
			at = what == TLS_ERR_OTHER ? NULL : ymap_get(tls, keys[what], NULL);
			if (at != NULL)
				path_push(l, keys[what]);
			lerr(l, at ? at : tkey, "%s", err);
		}
	}
	path_pop(l, mark);
}

/* The N KEYS read become IN's HMACs, and are wiped and freed: only a
 * key's HMAC is needed to check it (inbound.h). */
static void
keys_to_macs(struct loader *l, const struct ynode *at, struct conf_inbound *in,
    char **keys, size_t n)
{
	if (n > 0 && (in->auth_key_macs = calloc(n, KEY_MAC_LEN)) == NULL)
		l->oom = true;
	for (size_t i = 0; i < n; i++) {
		if (in->auth_key_macs != NULL) {
			if (inbound_key_mac(keys[i], strlen(keys[i]),
			    in->auth_key_macs[in->n_auth_keys]) == 0)
				in->n_auth_keys++;
			else
				lerr(l, at, "no random bytes for the key's HMAC");
		}
		secret_free(keys[i]);
	}
	free(keys);
}

/* "No keys" is only said when no other error in the block explains it:
 * none since BEFORE, and none from the walk (EXPLAINED). */
static void
inbound_auth(struct loader *l, struct conf_inbound *in, const struct ynode *node,
    size_t before, bool explained)
{
	const struct ynode *akey, *auth = ymap_get(node, "auth", &akey);
	const struct ynode *env, *file;
	char **keys = NULL;
	size_t mark, n = 0;

	if (auth == NULL || (auth->kind != YMAP && !ynode_is_null(auth)))
		return;
	in->auth_enabled = true;
	env = ymap_get(auth, "keys_env", NULL);
	file = ymap_get(auth, "keys_file", NULL);
	mark = path_push(l, "auth");
	if (env == NULL && file == NULL)
		lerr(l, akey, "missing required key \"keys_env\" or \"keys_file\"");
	if (in->n_auth_keys_env > 0 &&
	    (keys = calloc(in->n_auth_keys_env, sizeof(char *))) == NULL)
		l->oom = true;
	for (size_t i = 0; keys != NULL && i < in->n_auth_keys_env; i++) {
		const struct ynode *at = env;
		char *k;
		size_t m = path_push(l, "keys_env");

		/* the item node with that name, for the position */
		for (size_t j = 0; env->kind == YSEQ && j < env->n; j++) {
			if (env->items[j]->kind == YSCALAR &&
			    strcmp(env->items[j]->str, in->auth_keys_env[i]) == 0) {
				at = env->items[j];
				path_push_idx(l, j);
				break;
			}
		}
		if ((k = secret_from_env(l, at, in->auth_keys_env[i])) != NULL)
			keys[n++] = k;
		path_pop(l, m);
	}
	if (file != NULL && in->auth_keys_file != NULL) {
		size_t m = path_push(l, "keys_file");

		secrets_from_keys_file(l, file, in->auth_keys_file, &keys, &n);
		path_pop(l, m);
	}
	keys_to_macs(l, akey, in, keys, n);
	if (in->n_auth_keys == 0 && l->n_errs == before && !explained)
		lerr(l, akey, "no keys: keys_env and keys_file gave none");
	path_pop(l, mark);
}

/* The walk of listeners.inbound; check_inbound does the rest. */
static void
load_inbound(struct loader *l, const struct ynode *val)
{
	struct conf_inbound *in = &l->c->inbound;
	size_t mark = path_push(l, "inbound"), before = l->n_errs;

	in->enabled = true;
	in->timeouts = l->defaults.timeouts;	/* then its own keys override */
	in->compression = l->defaults.compression;
	walk_map(l, val, in, inbound_fields);
	l->inbound_errs = l->n_errs - before;
	path_pop(l, mark);
}

void
check_inbound(struct loader *l, const struct ynode *listeners)
{
	struct conf_inbound *in = &l->c->inbound;
	const struct ynode *key, *val = ymap_get(listeners, "inbound", &key);
	size_t top, mark, before = l->n_errs;

	if (val == NULL || (val->kind != YMAP && !ynode_is_null(val)))
		return;		/* absent, or a failed ${VAR}: reported */
	top = path_push(l, "listeners");
	mark = path_push(l, "inbound");
	inbound_tls(l, in, key, val);
	inbound_auth(l, in, val, before, l->inbound_errs > 0);
	if (ymap_get(val, "local_app", NULL) == NULL)
		lerr(l, key, "missing required key \"local_app\"");
	check_timeouts(l, &in->timeouts, val);
	check_rules_coding(l, key, &in->headers, &in->compression, true);
	path_pop(l, mark);
	path_pop(l, top);
}

static const struct field listeners_fields[] = {
	{ "outbound", fld_listener, offsetof(struct config, outbound), 0, 0, NULL },
	{ "inbound", fld_skip, 0, 0, 0, NULL },	/* after the walk: see below */
	{ "admin", fld_section, 0, 0, 0, admin_fields },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* Defaults first, so an absent listeners: still gives outbound and admin. */
void
listeners_init(struct loader *l)
{
	struct config *c = l->c;

	listener_init(l, &c->outbound, "127.0.0.1:15001");
	listener_init(l, &c->admin, "127.0.0.1:15000");
	listener_init(l, &c->inbound.listener, "0.0.0.0:15443");
	c->inbound.listener.handshake_timeout = 5000;
	c->inbound.max_concurrent = 1024;
}

void
load_listeners(struct loader *l, const struct ynode *val)
{
	const struct ynode *in;
	size_t mark = path_push(l, "listeners");

	walk_map(l, val, l->c, listeners_fields);
	if ((in = ymap_get(val, "inbound", NULL)) != NULL)
		load_inbound(l, in);
	path_pop(l, mark);
}

void
inbound_free(struct conf_inbound *in)
{
	conf_addr_clear(&in->listener.address);
	free(in->cert);
	free(in->key);
	free(in->client_ca);
	free_strings(in->allowed_peers, in->n_allowed_peers);
	free_strings(in->auth_keys_env, in->n_auth_keys_env);
	free(in->auth_keys_file);
	if (in->auth_key_macs)
		OPENSSL_cleanse(in->auth_key_macs, in->n_auth_keys * KEY_MAC_LEN);
	free(in->auth_key_macs);
	conf_addr_clear(&in->local_app);
	headers_conf_free(&in->headers);
	SSL_CTX_free(in->ctx);
}

/* Every address ferry binds, for the checks below. */
struct bound {
	char path[600];
	const struct conf_addr *a;
	bool local_only;	/* must be loopback unless allow_remote */
	bool allow_remote;
};

static bool
is_any(const struct conf_addr *a)
{
	if (a->sa.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
}

static bool
same_ip(const struct conf_addr *a, const struct conf_addr *b)
{
	if (a->sa.ss_family != b->sa.ss_family)
		return false;
	if (a->sa.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)&b->sa)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr,
	    &((const struct sockaddr_in6 *)&b->sa)->sin6_addr, 16) == 0;
}

/* Could binding both fail or steal each other's connections? The wildcard
 * covers every address of its family ([::] usually both), and localhost
 * is 127.0.0.1 and ::1. */
static bool
overlap(const struct conf_addr *a, const struct conf_addr *b)
{
	if (a->port != b->port)
		return false;
	if (!a->is_ip || !b->is_ip) {
		const struct conf_addr *o = a->is_ip ? a : b;

		return !o->is_ip || o->is_loopback || is_any(o);
	}
	if (is_any(a) || is_any(b)) {
		const struct conf_addr *w = is_any(a) ? a : b, *o = w == a ? b : a;

		return w->sa.ss_family == AF_INET6 || o->sa.ss_family == AF_INET;
	}
	return same_ip(a, b);
}

static bool
later(const struct conf_addr *a, const struct conf_addr *b)
{
	return a->pos.line > b->pos.line ||
	    (a->pos.line == b->pos.line && a->pos.col > b->pos.col);
}

static void
check_bound(struct loader *l, struct bound *v, size_t n)
{
	char msg[1400];

	for (size_t i = 0; i < n; i++) {
		const struct conf_addr *a = v[i].a;

		if (v[i].local_only && !v[i].allow_remote && !a->is_loopback) {
			snprintf(msg, sizeof(msg), "%s: %s is not a loopback address "
			    "(set allow_remote: true to accept remote connections)",
			    v[i].path, a->text);
			lerr_at(l, a->pos.line, a->pos.col, msg);
		}
		for (size_t j = 0; j < i; j++) {
			const struct bound *x = later(a, v[j].a) ? &v[i] : &v[j];
			const struct bound *y = x == &v[i] ? &v[j] : &v[i];

			if (!overlap(a, v[j].a))
				continue;
			snprintf(msg, sizeof(msg), "%s: %s is already used by %s",
			    x->path, x->a->text, y->path);
			lerr_at(l, x->a->pos.line, x->a->pos.col, msg);
		}
	}
}

void
check_listeners(struct loader *l)
{
	struct config *c = l->c;
	struct bound *v;
	size_t n = 0;

	if ((v = calloc(3 + c->n_services, sizeof(*v))) == NULL) {
		l->oom = true;
		return;
	}
	v[n++] = (struct bound){ .path = "listeners.outbound.address",
	    .a = &c->outbound.address, .local_only = true,
	    .allow_remote = c->outbound.allow_remote };
	if (c->inbound.enabled)
		v[n++] = (struct bound){ .path = "listeners.inbound.address",
		    .a = &c->inbound.listener.address };
	v[n++] = (struct bound){ .path = "listeners.admin.address",
	    .a = &c->admin.address, .local_only = true,
	    .allow_remote = c->admin.allow_remote };
	for (size_t i = 0; i < c->n_services; i++) {
		const struct conf_service *s = &c->services[i];

		if (!s->has_listen)
			continue;
		snprintf(v[n].path, sizeof(v[n].path), "services.%s.listen", s->name);
		v[n].a = &s->listen;
		v[n].local_only = true;
		/* a listen port is a door into the outbound listener */
		v[n].allow_remote = s->listen_allow_remote || c->outbound.allow_remote;
		n++;
	}
	check_bound(l, v, n);
	free(v);
}
