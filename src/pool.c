#include <stdlib.h>

#include <openssl/ssl.h>

#include "clock.h"
#include "log.h"
#include "pool.h"

/* The gauges of /services, in this worker's share. */
static void
gauge(struct endpoint *ep, int idle, int active)
{
	if (ep->share == NULL)
		return;
	if (idle)
		atomic_fetch_add_explicit(&ep->share->idle, idle, memory_order_relaxed);
	if (active)
		atomic_fetch_add_explicit(&ep->share->active, active, memory_order_relaxed);
}

bool
pool_idle_elsewhere(const struct endpoint *ep)
{
	struct ep_gauges g;

	if (ep->rt == NULL)
		return false;
	ep_runtime_gauges(ep->rt, &g);
	return g.idle > (int32_t)ep->n_idle;
}

static void
idle_unlink(struct upconn *u)
{
	struct endpoint *ep = u->ep;

	if (u->prev)
		u->prev->next = u->next;
	else
		ep->idle = u->next;
	if (u->next)
		u->next->prev = u->prev;
	u->next = u->prev = NULL;
	u->idle = false;
	ep->n_idle--;
}

void
pool_discard(struct upconn *u)
{
	if (u->idle) {
		idle_unlink(u);
		gauge(u->ep, -1, 0);
	} else {
		u->ep->n_active--;
		gauge(u->ep, 0, -1);
	}
	if (u->ep->rt)
		atomic_fetch_sub_explicit(&u->ep->rt->conns, 1, memory_order_relaxed);
	conn_free(u->c);
	buf_free(&u->in);
	http_parser_free(&u->parser);	/* a re-framed response's trailer field */
	free(u);
}

/* While idle, any readable event means the upstream closed (or sent bytes
 * nobody asked for): either way the connection cannot be reused. */
static void
idle_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct upconn *u = arg;

	(void)c;
	if (ev == CONN_DRAINED)
		return;
	log_debug("upstream %s closed an idle connection", u->ep->addr_text);
	pool_discard(u);
}

struct upconn *
pool_checkout(struct endpoint *ep, int64_t now)
{
	struct upconn *u;

	while ((u = ep->idle) != NULL) {
		idle_unlink(u);
		ep->n_active++;
		gauge(ep, -1, 1);
		if (now >= u->expire_ms) {
			pool_discard(u);
			continue;
		}
		u->reused = true;
		return u;
	}
	return NULL;
}

static void
save_session(struct upconn *u)
{
	SSL *ssl = conn_ssl(u->c);
	SSL_SESSION *s;

	/* TLS 1.3 tickets arrive after the handshake, with the first read;
	 * keep the newest resumable session for the next connection. A new
	 * ticket is a new SSL_SESSION: the same one was copied already (a
	 * copy per request cost more than the rest of the TLS work) */
	if (ssl == NULL || SSL_get0_session(ssl) == u->session_saved ||
	    (s = SSL_get1_session(ssl)) == NULL)
		return;
	u->session_saved = s;
	if (!SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(s);
		return;
	}
	if (u->ep->session)
		SSL_SESSION_free(u->ep->session);
	/* a copy: OpenSSL marks the live one not resumable when its
	 * connection is freed without a TLS shutdown (as pools do) */
	u->ep->session = SSL_SESSION_dup(s);
	SSL_SESSION_free(s);
}

struct upconn *
pool_connect(struct worker *w, struct svc_state *s, struct endpoint *ep,
    conn_cb cb, void *arg, int64_t now)
{
	const struct conf_service *svc = s->conf;
	const struct conf_tls_client *t = &svc->tls;
	struct upconn *u = calloc(1, sizeof(*u));
	const char *name;

	if (u == NULL)
		return NULL;
	name = t->server_name ? t->server_name : ep->host;
	u->c = conn_connect(w->base, (struct sockaddr *)&ep->sa, ep->salen,
	    t->enabled ? t->ctx : NULL,
	    /* SNI carries names only, never IP literals (RFC 6066) */
	    (t->server_name || !ep->host_is_ip) ? name : NULL,
	    name, t->verify_san, ep->session, cb, arg);
	if (u->c == NULL) {
		free(u);
		return NULL;
	}
	if (svc->auth_key)
		conn_wipe_output(u->c);	/* request heads carry the key */
	u->ep = ep;
	u->w = w;
	u->born_ms = now;
	http_parser_init(&u->parser, true, &u->head);
	ep->n_active++;
	ep->opened++;
	gauge(ep, 0, 1);
	if (ep->rt)
		atomic_fetch_add_explicit(&ep->rt->conns, 1, memory_order_relaxed);
	return u;
}

void
pool_checkin(struct upconn *u, const struct conf_pool *pc, int64_t now,
    int64_t keepalive_ms)
{
	struct endpoint *ep = u->ep;
	int64_t expire = now + pc->idle_timeout;

	save_session(u);
	if (keepalive_ms > 0 && now + keepalive_ms - 1000 < expire)
		expire = now + keepalive_ms - 1000;
	if (ep->retired || expire <= now || ep->n_idle >= pc->max_idle_per_endpoint ||
	    (pc->max_requests_per_connection &&
	     u->requests >= pc->max_requests_per_connection) ||
	    (pc->max_connection_age && now - u->born_ms >= pc->max_connection_age) ||
	    buf_len(&u->in) > 0) {
		pool_discard(u);
		return;
	}
	ep->n_active--;
	gauge(ep, 1, -1);
	u->expire_ms = expire;
	u->idle = true;
	u->prev = NULL;
	u->next = ep->idle;
	if (ep->idle)
		ep->idle->prev = u;
	ep->idle = u;
	ep->n_idle++;
	buf_free(&u->in);
	http_parser_free(&u->parser);	/* idle connections hold no buffers */
	conn_release_buffers(u->c);
	conn_set_cb(u->c, idle_event, u);
}

void
pool_sweep(struct svc_state *s, int64_t now)
{
	for (size_t i = 0; i < s->n_eps; i++) {
		struct upconn *u = s->eps[i]->idle, *next;

		for (; u; u = next) {
			next = u->next;
			if (now >= u->expire_ms)
				pool_discard(u);
		}
	}
}

void
pool_close_idle(struct svc_state *s)
{
	for (size_t i = 0; i < s->n_eps; i++)
		while (s->eps[i]->idle)
			pool_discard(s->eps[i]->idle);
}
