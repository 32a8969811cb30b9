#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "ids.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "proxy.h"
#include "server.h"
#include "worker.h"

struct mail {
	mail_fn fn;
	void *arg;
	struct mail *next;
};

static void
endpoint_init(struct endpoint *ep, const struct conf_addr *a)
{
	ep->conf = a;
	snprintf(ep->addr_text, sizeof(ep->addr_text), "%s", a->text);
	if (a->is_ip) {
		memcpy(&ep->sa, &a->sa, a->salen);
		ep->salen = a->salen;
		ep->resolved = true;
	}
}

static int
services_init(struct worker *w)
{
	const struct config *c = w->conf;

	w->n_svcs = c->n_services;
	w->svcs = calloc(c->n_services ? c->n_services : 1, sizeof(*w->svcs));
	if (w->svcs == NULL)
		return -1;
	size_t most = 1;

	for (size_t i = 0; i < c->n_services; i++) {
		struct svc_state *s = &w->svcs[i];

		s->conf = &c->services[i];
		s->n_eps = s->conf->n_endpoints;
		s->eps = calloc(s->n_eps ? s->n_eps : 1, sizeof(*s->eps));
		/* runs on the main thread: the registry is not shared yet */
		if (s->eps == NULL || (s->rt = runtime_service(server_runtime(w->srv), s->conf)) == NULL)
			return -1;
		for (size_t j = 0; j < s->n_eps; j++) {
			endpoint_init(&s->eps[j], &s->conf->endpoints[j]);
			s->eps[j].rt = &s->rt->eps[j];
		}
		s->rr = (uint32_t)w->id;	/* workers start on different endpoints */
		if (s->n_eps > most)
			most = s->n_eps;
	}
	w->cands = calloc(most, sizeof(*w->cands));
	return w->cands ? 0 : -1;
}

/* The local app behind the inbound listener, seen as a service with one
 * plain-HTTP loopback endpoint. */
static int
inbound_init(struct worker *w)
{
	const struct conf_inbound *in = &w->conf->inbound;
	struct conf_service *sc = &w->inbound_conf;
	struct svc_state *s = &w->inbound;

	memset(sc, 0, sizeof(*sc));
	sc->name = "local_app";
	sc->endpoints = (struct conf_addr *)&in->local_app;
	sc->n_endpoints = 1;
	sc->timeouts = in->timeouts;
	sc->retries.buffer = 64 * 1024;
	sc->breaker.max_concurrent = in->max_concurrent;
	sc->pool = (struct conf_pool){ .max_idle_per_endpoint = 64, .idle_timeout = 30000,
	    .max_per_endpoint = 1024 };
	s->conf = sc;
	s->n_eps = 1;
	if ((s->eps = calloc(1, sizeof(*s->eps))) == NULL)
		return -1;
	endpoint_init(&s->eps[0], &in->local_app);
	return inbound_keys_init(&w->inbound_keys, in);
}

static void
services_free(struct worker *w)
{
	for (size_t i = 0; i < w->n_svcs; i++) {
		struct svc_state *s = &w->svcs[i];

		pool_close_idle(s);
		for (size_t j = 0; j < s->n_eps; j++)
			if (s->eps[j].session)
				SSL_SESSION_free(s->eps[j].session);
		free(s->eps);
	}
	free(w->svcs);
	w->svcs = NULL;
	free(w->cands);
	w->cands = NULL;
	if (w->inbound.eps) {
		pool_close_idle(&w->inbound);
		free(w->inbound.eps);
		w->inbound.eps = NULL;
	}
	inbound_keys_free(&w->inbound_keys);
}

static int
add_listener(struct worker *w, enum listener_kind kind, const struct conf_listener *lc,
    const struct conf_addr *addr, size_t service)
{
	char err[256];
	struct listener *l;
	int fd = listener_socket(addr, true, err, sizeof(err));

	if (fd < 0) {
		log_error("%s", err);
		return -1;
	}
	if ((l = listener_new(w, kind, lc, service, fd)) == NULL) {
		close(fd);
		return -1;
	}
	l->next = w->listeners;
	w->listeners = l;
	return 0;
}

static void
sweep(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	int64_t now = clock_now_ms();

	(void)fd;
	(void)what;
	atomic_store(&w->heartbeat_ms, now);
	for (size_t i = 0; i < w->n_svcs; i++)
		pool_sweep(&w->svcs[i], now);
}

static void
mail_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct mail *m, *next, *rev = NULL;

	uint64_t v;

	(void)what;
	(void)!read(fd, &v, sizeof(v));
	pthread_mutex_lock(&w->mail_lock);
	m = w->mail;
	w->mail = NULL;
	pthread_mutex_unlock(&w->mail_lock);
	for (; m; m = next) {		/* oldest first */
		next = m->next;
		m->next = rev;
		rev = m;
	}
	for (m = rev; m; m = next) {
		next = m->next;
		m->fn(w, m->arg);
		free(m);
	}
}

void
worker_post(struct worker *w, mail_fn fn, void *arg)
{
	struct mail *m = malloc(sizeof(*m));

	if (m == NULL) {
		log_error("worker %d: out of memory for a message", w->id);
		return;
	}
	m->fn = fn;
	m->arg = arg;
	pthread_mutex_lock(&w->mail_lock);
	m->next = w->mail;
	w->mail = m;
	pthread_mutex_unlock(&w->mail_lock);
	/* an eventfd wakes the loop without making libevent take locks */
	(void)!write(w->mail_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
}

int
worker_init(struct worker *w, struct server *srv, int id, struct config *conf)
{
	const struct timeval second = { 1, 0 };

	memset(w, 0, sizeof(*w));
	w->mail_fd = -1;
	w->id = id;
	w->srv = srv;
	w->conf = config_ref(conf);
	pthread_mutex_init(&w->mail_lock, NULL);
	if ((w->base = event_base_new()) == NULL)
		return -1;
	w->ev_sweep = event_new(w->base, -1, EV_PERSIST, sweep, w);
	if ((w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		return -1;
	w->ev_mail = event_new(w->base, w->mail_fd, EV_READ | EV_PERSIST, mail_deliver, w);
	if (w->ev_sweep == NULL || w->ev_mail == NULL || services_init(w) != 0)
		return -1;
	event_add(w->ev_sweep, &second);
	event_add(w->ev_mail, NULL);
	if (add_listener(w, LK_OUTBOUND, &conf->outbound, &conf->outbound.address, 0) != 0)
		return -1;
	if (conf->inbound.enabled && (inbound_init(w) != 0 ||
	    add_listener(w, LK_INBOUND, &conf->inbound.listener,
	    &conf->inbound.listener.address, 0) != 0))
		return -1;
	for (size_t i = 0; i < conf->n_services; i++)
		if (conf->services[i].has_listen &&
		    add_listener(w, LK_SERVICE, &conf->outbound,
		    &conf->services[i].listen, i) != 0)
			return -1;
	atomic_store(&w->heartbeat_ms, clock_now_ms());
	return 0;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	ids_thread_init();
	event_base_loop(w->base, 0);
	return NULL;
}

int
worker_start(struct worker *w)
{
	return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

static void
stop_loop(struct worker *w, void *arg)
{
	(void)arg;
	event_base_loopexit(w->base, NULL);
}

void
worker_stop(struct worker *w)
{
	worker_post(w, stop_loop, NULL);
}

void
worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

void
worker_free(struct worker *w)
{
	struct listener *l, *next;
	struct mail *m, *mnext;

	proxy_close_all(w);

	for (l = w->listeners; l; l = next) {
		next = l->next;
		listener_free(l);
	}
	services_free(w);
	for (m = w->mail; m; m = mnext) {
		mnext = m->next;
		free(m);
	}
	if (w->ev_sweep)
		event_free(w->ev_sweep);
	if (w->ev_mail)
		event_free(w->ev_mail);
	if (w->mail_fd >= 0)
		close(w->mail_fd);
	if (w->base)
		event_base_free(w->base);
	sbuf_free(&w->scratch);
	pthread_mutex_destroy(&w->mail_lock);
	config_unref(w->conf);
}

static char via_out[32], via_in[32];

void
worker_via_init(void)
{
	/* eight hex digits chosen at random when the process starts */
	unsigned v = (unsigned)ids_random();

	snprintf(via_out, sizeof(via_out), "1.1 ferry-%08x-out", v);
	snprintf(via_in, sizeof(via_in), "1.1 ferry-%08x-in", v);
}

const char *
via_token_out(void)
{
	return via_out;
}

const char *
via_token_in(void)
{
	return via_in;
}
