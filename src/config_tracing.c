/*
 * The tracing: section (SPEC §13): the OTLP/HTTP collector's URL, its TLS
 * settings, and sampling and batching. The URL is taken apart at load
 * time; the collector's name is looked up by discovery (discovery.h), so
 * neither the loader nor the workers' exporters wait on DNS.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_priv.h"
#include "log.h"
#include "tls_ctx.h"

#define DEFAULT_PATH "/v1/traces"

static struct conf_collector *
collector_new(void)
{
	struct conf_collector *a = calloc(1, sizeof(*a));

	if (a != NULL && pthread_mutex_init(&a->mu, NULL) != 0) {
		free(a);
		return NULL;
	}
	return a;
}

bool
collector_addr_get(struct conf_collector *a, struct sockaddr_storage *sa, socklen_t *salen,
    uint32_t *moves)
{
	if (!atomic_load_explicit(&a->ready, memory_order_acquire))
		return false;
	pthread_mutex_lock(&a->mu);
	memcpy(sa, &a->sa, a->salen);
	*salen = a->salen;
	*moves = a->moves;
	pthread_mutex_unlock(&a->mu);
	return true;
}

bool
collector_addr_set(struct conf_collector *a, const struct sockaddr *sa, socklen_t salen)
{
	bool news;

	if (salen > sizeof(a->sa))
		return false;
	pthread_mutex_lock(&a->mu);
	news = !atomic_load_explicit(&a->ready, memory_order_relaxed) || a->salen != salen ||
	    memcmp(&a->sa, sa, salen) != 0;
	if (news) {
		if (atomic_load_explicit(&a->ready, memory_order_relaxed))
			a->moves++;
		memcpy(&a->sa, sa, salen);
		a->salen = salen;
	}
	pthread_mutex_unlock(&a->mu);
	atomic_store_explicit(&a->ready, true, memory_order_release);
	return news;
}

/* http[s]://host[:port][/path]: no user info (a password in a URL ends
 * up in logs), no fragment; the query stays with the path. */
static void
fld_otlp(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_tracing *t = obj;
	const char *s = get_scalar(l, val, "a URL"), *rest, *slash, *why;
	struct conf_addr a;
	char q[128], *auth;
	size_t alen;

	(void)f;
	(void)key;
	if (s == NULL)
		return;
	if (strncasecmp(s, "http://", 7) == 0) {
		t->https = false;
		rest = s + 7;
	} else if (strncasecmp(s, "https://", 8) == 0) {
		t->https = true;
		rest = s + 8;
	} else {
		lerr(l, val, "bad URL %s (expected http://HOST:PORT/PATH or https://...)",
		    quote(s, q, sizeof(q)));
		return;
	}
	slash = rest + strcspn(rest, "/?#");
	alen = (size_t)(slash - rest);
	if (memchr(rest, '@', alen) != NULL || strchr(s, '#') != NULL) {
		lerr(l, val, "bad URL %s (no user info or fragment allowed)",
		    quote(s, q, sizeof(q)));
		return;
	}
	if (alen == 0 || (auth = strndup(rest, alen)) == NULL) {
		if (alen == 0)
			lerr(l, val, "bad URL %s (no host)", quote(s, q, sizeof(q)));
		else
			l->oom = true;
		return;
	}
	memset(&a, 0, sizeof(a));
	if (strrchr(auth, ':') == NULL || (auth[0] == '[' && auth[alen - 1] == ']')) {
		/* no port: the scheme's */
		char *withport;

		if (asprintf(&withport, "%s:%u", auth, t->https ? 443u : 80u) < 0) {
			free(auth);
			l->oom = true;
			return;
		}
		if (parse_addr(withport, &a, &why) != 0) {
			lerr(l, val, "bad URL %s (%s)", quote(s, q, sizeof(q)), why);
			free(withport);
			free(auth);
			return;
		}
		free(withport);
	} else if (parse_addr(auth, &a, &why) != 0) {
		lerr(l, val, "bad URL %s (%s)", quote(s, q, sizeof(q)), why);
		free(auth);
		return;
	}
	free(t->otlp);
	free(t->host);
	free(t->authority);
	free(t->path);
	t->otlp = strdup(s);
	t->host = strdup(a.host);
	t->port = a.port;
	t->authority = auth;
	t->path = strdup(*slash == '\0' || strcmp(slash, "/") == 0 ? DEFAULT_PATH :
	    *slash == '?' ? "/" : slash);
	if (t->addr == NULL && (t->addr = collector_new()) == NULL)
		l->oom = true;
	else if (a.is_ip)
		collector_addr_set(t->addr, (const struct sockaddr *)&a.sa, a.salen);
	conf_addr_clear(&a);
	if (t->otlp == NULL || t->host == NULL || t->path == NULL)
		l->oom = true;
}

static const struct field batch_fields[] = {
	{ "max_spans", fld_u32, offsetof(struct conf_tracing, batch_max_spans), 1, 65536, NULL },
	{ "interval", fld_duration, offsetof(struct conf_tracing, batch_interval), 1, 3600000,
	  NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field tracing_fields[] = {
	{ "otlp", fld_otlp, 0, 0, 0, NULL },
	{ "tls", fld_tls, offsetof(struct conf_tracing, tls), 0, 0, NULL },
	{ "service_name", fld_string, offsetof(struct conf_tracing, service_name), 0, 0, NULL },
	{ "sample_ratio", fld_double, offsetof(struct conf_tracing, sample_ratio), 0, 1, NULL },
	{ "max_queue", fld_u32, offsetof(struct conf_tracing, max_queue), 1, 10000000, NULL },
	{ "batch", fld_section, 0, 0, 0, batch_fields },
	{ NULL, NULL, 0, 0, 0, NULL },
};

void
fld_tracing(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_tracing *t = &((struct config *)obj)->tracing;

	(void)f;
	(void)key;
	if (!want_map(l, val))
		return;
	t->enabled = true;
	t->sample_ratio = 1.0;
	t->max_queue = 8192;
	t->batch_max_spans = 512;
	t->batch_interval = 1000;
	walk_map(l, val, t, tracing_fields);
	if (t->service_name == NULL && (t->service_name = strdup("ferry")) == NULL)
		l->oom = true;
}

void
check_tracing(struct loader *l, const struct ynode *node)
{
	struct conf_tracing *t = &l->c->tracing;
	const struct ynode *tls, *tkey;
	enum tls_what what;
	char err[512];
	size_t mark;

	if (!t->enabled)
		return;
	mark = path_push(l, "tracing");
	tls = ymap_get(node, "tls", &tkey);
	if (t->otlp == NULL) {
		if (ymap_get(node, "otlp", NULL) == NULL)
			lerr(l, node, "otlp is required (the collector's URL)");
	} else if (!t->https && tls != NULL) {
		lerr(l, tkey, "tls needs an https:// otlp URL");
	} else if (t->https && (tls == NULL || t->tls.ca == NULL)) {
		lerr(l, tls ? tls : node, "an https:// otlp URL needs tls.ca (the CA that "
		    "signed the collector's certificate)");
	} else if (t->https && (t->tls.cert == NULL) != (t->tls.key == NULL)) {
		lerr(l, tls, "tls.cert and tls.key go together");
	} else if (t->https) {
		t->tls.ctx = tls_client_ctx_build(&t->tls, &what, err, sizeof(err));
		if (t->tls.ctx == NULL)
			lerr(l, tls, "tls: %s", err);
	}
	path_pop(l, mark);
}

void
tracing_conf_free(struct conf_tracing *t)
{
	free(t->otlp);
	free(t->host);
	free(t->authority);
	free(t->path);
	if (t->addr != NULL)
		pthread_mutex_destroy(&t->addr->mu);
	free(t->addr);
	free(t->service_name);
	free(t->tls.ca);
	free(t->tls.cert);
	free(t->tls.key);
	free(t->tls.server_name);
	free(t->tls.verify_san);
	SSL_CTX_free(t->tls.ctx);
}
