#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "admin.h"
#include "clock.h"
#include "ids.h"
#include "listener.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "worker.h"

struct server {
	struct config *conf;
	struct event_base *base;
	struct worker *workers;
	uint32_t n_workers;
	struct admin *admin;
	struct runtime *runtime;
	struct evdns_base *dns;
	struct event *ev_term, *ev_int, *ev_hup, *ev_usr1, *ev_drain;
	size_t dns_pending;		/* first lookups still running */
	bool ready;
	bool draining;
	int64_t drain_start_ms;
	int exit_code;
};

/* ------------------------------------------------------------ DNS ---- */

struct resolved {
	size_t service, endpoint;
	struct sockaddr_storage sa;
	socklen_t salen;
};

struct lookup {
	struct server *srv;
	size_t service, endpoint;
	bool first;
};

static void
apply_resolved(struct worker *w, void *arg)
{
	struct resolved *r = arg;
	struct endpoint *ep = &w->svcs[r->service].eps[r->endpoint];

	memcpy(&ep->sa, &r->sa, r->salen);
	ep->salen = r->salen;
	ep->resolved = true;
	free(r);
}

static void
lookup_done(int result, struct evutil_addrinfo *res, void *arg)
{
	struct lookup *lk = arg;
	struct server *srv = lk->srv;
	const struct conf_addr *a = &srv->conf->services[lk->service].endpoints[lk->endpoint];

	if (result != 0 || res == NULL) {
		log_warn("resolve %s: %s", a->text, evutil_gai_strerror(result));
	} else {
		for (uint32_t i = 0; i < srv->n_workers; i++) {
			struct resolved *r = calloc(1, sizeof(*r));

			if (r == NULL)
				continue;
			r->service = lk->service;
			r->endpoint = lk->endpoint;
			memcpy(&r->sa, res->ai_addr, res->ai_addrlen);
			r->salen = (socklen_t)res->ai_addrlen;
			worker_post(&srv->workers[i], apply_resolved, r);
		}
		log_debug("resolved %s", a->text);
	}
	if (res)
		evutil_freeaddrinfo(res);
	if (lk->first && --srv->dns_pending == 0 && !srv->draining)
		srv->ready = true;
	free(lk);
}

static int
dns_start(struct server *srv)
{
	const struct config *c = srv->conf;
	struct evutil_addrinfo hints = { 0 };

	for (size_t i = 0; i < c->n_services; i++)
		for (size_t j = 0; j < c->services[i].n_endpoints; j++)
			srv->dns_pending += !c->services[i].endpoints[j].is_ip;
	if (srv->dns_pending == 0)
		return 0;
	srv->dns = evdns_base_new(srv->base, c->n_nameservers ? 0 :
	    EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (srv->dns == NULL)
		return -1;
	for (size_t i = 0; i < c->n_nameservers; i++)
		if (evdns_base_nameserver_sockaddr_add(srv->dns,
		    (struct sockaddr *)&c->nameservers[i].sa, c->nameservers[i].salen, 0) != 0)
			log_warn("resolver: cannot use nameserver %s", c->nameservers[i].text);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	for (size_t i = 0; i < c->n_services; i++) {
		for (size_t j = 0; j < c->services[i].n_endpoints; j++) {
			const struct conf_addr *a = &c->services[i].endpoints[j];
			struct lookup *lk;
			char port[8];

			if (a->is_ip || (lk = calloc(1, sizeof(*lk))) == NULL)
				continue;
			lk->srv = srv;
			lk->service = i;
			lk->endpoint = j;
			lk->first = true;
			snprintf(port, sizeof(port), "%u", a->port);
			evdns_getaddrinfo(srv->dns, a->host, port, &hints, lookup_done, lk);
		}
	}
	return 0;
}

struct runtime *
server_runtime(struct server *srv)
{
	return srv->runtime;
}

/* ---------------------------------------------------------- admin ---- */

int
server_admin_page(struct server *srv, const char *path, size_t len, struct sbuf *body,
    struct server_page *page)
{
	page->status = 200;
	page->reason = "OK";
	page->content_type = "text/plain; charset=utf-8";
	if (len == 8 && memcmp(path, "/healthz", 8) == 0) {
		sbuf_adds(body, "ok\n");
		return 0;
	}
	if (len == 6 && memcmp(path, "/ready", 6) == 0) {
		if (srv->ready && !srv->draining) {
			sbuf_adds(body, "ready\n");
		} else {
			page->status = 503;
			page->reason = "Service Unavailable";
			sbuf_adds(body, srv->draining ? "draining\n" : "starting\n");
		}
		return 0;
	}
	return -1;
}

/* ---------------------------------------------------------- drain ---- */

static void
set_draining(struct worker *w, void *arg)
{
	struct listener *l;

	w->draining = true;
	if (arg == NULL)
		return;
	/* after drain_delay: peers have been told; stop taking new ones */
	for (l = w->listeners; l; l = l->next)
		if (l->kind == LK_INBOUND)
			listener_close(l);
}

static uint32_t
clients_open(struct server *srv)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < srv->n_workers; i++)
		n += atomic_load(&srv->workers[i].n_clients);
	return n;
}

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	int64_t elapsed = clock_now_ms() - srv->drain_start_ms;
	uint32_t open = clients_open(srv);

	(void)fd;
	(void)what;
	if (elapsed >= srv->conf->drain_delay) {
		static bool inbound_closed;

		if (!inbound_closed) {
			inbound_closed = true;
			for (uint32_t i = 0; i < srv->n_workers; i++)
				worker_post(&srv->workers[i], set_draining, srv);
		}
		if (open == 0 || elapsed >= srv->conf->drain_timeout) {
			if (open)
				log_warn("drain timeout: closing %u connections still open", open);
			else
				log_info("drained; exiting");
			event_base_loopexit(srv->base, NULL);
			return;
		}
	}
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	const struct timeval tick = { 0, 100 * 1000 };

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (srv->draining) {
			log_warn("second signal: exiting now");
			event_base_loopexit(srv->base, NULL);
			return;
		}
		log_info("draining delay_ms=%lld timeout_ms=%lld",
		    (long long)srv->conf->drain_delay, (long long)srv->conf->drain_timeout);
		srv->draining = true;
		srv->ready = false;
		srv->drain_start_ms = clock_now_ms();
		for (uint32_t i = 0; i < srv->n_workers; i++)
			worker_post(&srv->workers[i], set_draining, NULL);
		event_add(srv->ev_drain, &tick);
		return;
	case SIGHUP:
		log_warn("reload is not implemented yet; keeping the running config");
		return;
	case SIGUSR1:
		return;
	}
}

/* --------------------------------------------------------- startup ---- */

/* Every address must be free (a bind without SO_REUSEPORT), so ferry never
 * shares a port with another process by accident. */
static int
probe_addresses(const struct config *c)
{
	char err[256];
	int bad = 0;

	if (listener_probe(&c->outbound.address, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferry: listeners.outbound: %s\n", err);
		bad++;
	}
	if (c->inbound.enabled && listener_probe(&c->inbound.listener.address, err, sizeof(err)) != 0) {
		fprintf(stderr, "ferry: listeners.inbound: %s\n", err);
		bad++;
	}
	for (size_t i = 0; i < c->n_services; i++)
		if (c->services[i].has_listen &&
		    listener_probe(&c->services[i].listen, err, sizeof(err)) != 0) {
			fprintf(stderr, "ferry: services.%s.listen: %s\n", c->services[i].name, err);
			bad++;
		}
	return bad ? -1 : 0;
}

static void
server_free(struct server *srv)
{
	for (uint32_t i = 0; i < srv->n_workers; i++)
		worker_free(&srv->workers[i]);
	free(srv->workers);
	runtime_free(srv->runtime);
	admin_free(srv->admin);
	if (srv->dns)
		evdns_base_free(srv->dns, 1);
	if (srv->ev_term) event_free(srv->ev_term);
	if (srv->ev_int) event_free(srv->ev_int);
	if (srv->ev_hup) event_free(srv->ev_hup);
	if (srv->ev_usr1) event_free(srv->ev_usr1);
	if (srv->ev_drain) event_free(srv->ev_drain);
	if (srv->base)
		event_base_free(srv->base);
	config_unref(srv->conf);
}

int
server_run(struct config *conf, bool log_level_from_cli)
{
	struct server srv = { .conf = conf, .exit_code = 0 };
	char err[256];
	int afd;
	uint32_t started = 0;

	(void)log_level_from_cli;
	signal(SIGPIPE, SIG_IGN);
	ids_thread_init();
	worker_via_init();
	if (probe_addresses(conf) != 0) {
		config_unref(conf);
		return 1;
	}
	if ((afd = listener_socket(&conf->admin.address, false, err, sizeof(err))) < 0) {
		fprintf(stderr, "ferry: listeners.admin: %s\n", err);
		config_unref(conf);
		return 1;
	}
	if ((srv.base = event_base_new()) == NULL ||
	    (srv.admin = admin_start(&srv, srv.base, afd)) == NULL) {
		fprintf(stderr, "ferry: cannot set up the event loop\n");
		close(afd);
		server_free(&srv);
		return 1;
	}
	if ((srv.runtime = runtime_new()) == NULL) {
		server_free(&srv);
		return 1;
	}
	srv.n_workers = conf->workers;
	if ((srv.workers = calloc(srv.n_workers, sizeof(*srv.workers))) == NULL) {
		server_free(&srv);
		return 1;
	}
	for (uint32_t i = 0; i < srv.n_workers; i++) {
		if (worker_init(&srv.workers[i], &srv, (int)i, conf) != 0) {
			fprintf(stderr, "ferry: worker %u failed to start\n", i);
			srv.n_workers = i + 1;
			server_free(&srv);
			return 1;
		}
	}
	srv.ev_term = evsignal_new(srv.base, SIGTERM, on_signal, &srv);
	srv.ev_int = evsignal_new(srv.base, SIGINT, on_signal, &srv);
	srv.ev_hup = evsignal_new(srv.base, SIGHUP, on_signal, &srv);
	srv.ev_usr1 = evsignal_new(srv.base, SIGUSR1, on_signal, &srv);
	srv.ev_drain = event_new(srv.base, -1, EV_PERSIST, drain_tick, &srv);
	event_add(srv.ev_term, NULL);
	event_add(srv.ev_int, NULL);
	event_add(srv.ev_hup, NULL);
	event_add(srv.ev_usr1, NULL);
	for (; started < srv.n_workers; started++)
		if (worker_start(&srv.workers[started]) != 0)
			break;
	if (started < srv.n_workers || dns_start(&srv) != 0) {
		fprintf(stderr, "ferry: startup failed\n");
		srv.exit_code = 1;
	} else {
		srv.ready = srv.dns_pending == 0;
		log_info("ferry %s started workers=%u outbound=%s admin=%s", FERRY_VERSION,
		    srv.n_workers, conf->outbound.address.text, conf->admin.address.text);
		event_base_dispatch(srv.base);
	}
	for (uint32_t i = 0; i < started; i++)
		worker_stop(&srv.workers[i]);
	for (uint32_t i = 0; i < started; i++)
		worker_join(&srv.workers[i]);
	server_free(&srv);
	return srv.exit_code;
}
