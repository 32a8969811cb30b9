#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "affinity.h"
#include "blocks.h"
#include "clock.h"
#include "exchange.h"
#include "exporter.h"
#include "h2_mem.h"
#include "ids.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "proxy.h"
#include "worker.h"

struct mail {
	mail_fn fn;
	void (*drop)(void *arg);
	void *arg;
	struct mail *next;
};

static struct endpoint *
endpoint_new(const struct ep_spec *sp)
{
	struct endpoint *ep = calloc(1, sizeof(*ep));

	if (ep == NULL)
		return NULL;
	memcpy(&ep->sa, &sp->sa, sp->salen);
	ep->salen = sp->salen;
	snprintf(ep->addr_text, sizeof(ep->addr_text), "%s", sp->text);
	memcpy(ep->host, sp->host, sizeof(ep->host));
	ep->host_is_ip = sp->host_is_ip;
	ep->weight = sp->weight;
	return ep;
}

/* EP takes its state of the set SET names it in: the process-wide state,
 * this worker's share of it and its outlier state, each held (runtime.h);
 * SET holds them meanwhile, so taking a hold here is safe. */
static void
endpoint_bind(struct worker *w, struct endpoint *ep, const struct ep_set *set, size_t i)
{
	const struct ep_spec *sp = &set->items[i];

	if (sp->rt != NULL)
		ep_runtime_ref(sp->rt);
	if (set->outliers != NULL)
		outlier_group_ref(set->outliers);
	if (ep->rt != NULL)
		ep_runtime_unref(ep->rt);
	if (ep->outliers != NULL)
		outlier_group_unref(ep->outliers);
	ep->rt = sp->rt;
	ep->share = ep->rt ? ep_runtime_share(ep->rt, (unsigned)w->id) : NULL;
	ep->outlier = sp->outlier;
	ep->outliers = set->outliers;
	ep->weight = sp->weight;
}

static void
endpoint_free(struct endpoint *ep)
{
	if (ep->session)
		SSL_SESSION_free(ep->session);
	if (ep->rt != NULL)
		ep_runtime_unref(ep->rt);
	if (ep->outliers != NULL)
		outlier_group_unref(ep->outliers);
	free(ep);
}

struct ep_set *
ep_set_copy(const struct ep_set *set)
{
	size_t size = sizeof(*set) + set->n * sizeof(set->items[0]);
	struct ep_set *copy = malloc(size);

	if (copy == NULL)
		return NULL;
	memcpy(copy, set, size);
	for (size_t i = 0; i < set->n; i++)
		if (set->items[i].rt != NULL)
			ep_runtime_ref(set->items[i].rt);
	if (set->outliers != NULL)
		outlier_group_ref(set->outliers);
	return copy;
}

void
ep_set_free(struct ep_set *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++)
		if (set->items[i].rt != NULL)
			ep_runtime_unref(set->items[i].rt);
	if (set->outliers != NULL)
		outlier_group_unref(set->outliers);
	free(set);
}

/* An endpoint DNS no longer names: no new requests; freed once its last
 * connection and attempt are gone. */
static void
endpoint_retire(struct worker *w, struct endpoint *ep)
{
	while (ep->idle)
		pool_discard(ep->idle);
	ep->retired = true;	/* connections in use close when done */
	h2_up_retire_endpoint(w, ep);
	ep->next_retired = w->retired;
	w->retired = ep;
}

/* An old generation's requests may still pick EP: it is in one of the
 * sets that generation holds. */
static bool
named_by_old(const struct worker *w, const struct endpoint *ep)
{
	for (const struct generation *g = w->old; g != NULL; g = g->next_old)
		for (size_t i = 0; i < g->n_svcs; i++)
			for (size_t j = 0; j < g->svcs[i].n_eps; j++)
				if (g->svcs[i].eps[j] == ep)
					return true;
	return false;
}

static void
retired_sweep(struct worker *w, bool all)
{
	struct endpoint **pp = &w->retired, *ep;

	while ((ep = *pp) != NULL) {
		if (all || (ep->n_active == 0 && ep->n_idle == 0 && ep->in_flight == 0 &&
		    ep->held == 0 && !named_by_old(w, ep))) {
			*pp = ep->next_retired;
			while (ep->idle)
				pool_discard(ep->idle);
			endpoint_free(ep);
		} else {
			pp = &ep->next_retired;
		}
	}
}

void
worker_release_idle(struct worker *w, struct ep_runtime *ep)
{
	for (size_t i = 0; i < w->gen->n_svcs; i++)
		for (size_t j = 0; j < w->gen->svcs[i].n_eps; j++)
			if (w->gen->svcs[i].eps[j]->rt == ep && w->gen->svcs[i].eps[j]->idle) {
				pool_discard(w->gen->svcs[i].eps[j]->idle);
				return;
			}
}

static void
release_idle_mail(struct worker *w, void *arg)
{
	worker_release_idle(w, arg);
	ep_runtime_unref(arg);
}

/* Each message holds EP, so its address names no other endpoint's state
 * by the time it arrives; FROM holds it now. */
void
worker_release_idle_elsewhere(struct worker *from, struct ep_runtime *ep)
{
	for (uint32_t i = 0; i < from->n_siblings; i++)
		if (&from->siblings[i] != from) {
			ep_runtime_ref(ep);
			if (!worker_post(&from->siblings[i], release_idle_mail, ep))
				ep_runtime_unref(ep);
		}
}

static long
find_same(struct endpoint **old, size_t n, const struct ep_spec *sp)
{
	for (size_t i = 0; i < n; i++)
		if (old[i] && old[i]->salen == sp->salen &&
		    memcmp(&old[i]->sa, &sp->sa, sp->salen) == 0)
			return (long)i;
	return -1;
}

void
worker_set_endpoints(struct worker *w, const struct ep_set *set)
{
	struct svc_state *s;
	struct endpoint **eps;

	if (set->conf != w->gen->conf || set->service >= w->gen->n_svcs)
		return;		/* meant for another snapshot */
	s = &w->gen->svcs[set->service];
	if ((eps = calloc(set->n ? set->n : 1, sizeof(*eps))) == NULL)
		goto nomem;
	if (set->n > w->n_cands) {
		struct lb_candidate *c = realloc(w->cands, set->n * sizeof(*c));

		if (c == NULL) {
			free(eps);
			goto nomem;
		}
		w->cands = c;
		w->n_cands = set->n;
	}
	/* new addresses first, so a failure leaves the old set untouched */
	for (size_t i = 0; i < set->n; i++) {
		if (find_same(s->eps, s->n_eps, &set->items[i]) >= 0)
			continue;
		if ((eps[i] = endpoint_new(&set->items[i])) == NULL) {
			for (size_t j = 0; j < i; j++)
				if (eps[j])
					endpoint_free(eps[j]);
			free(eps);
			goto nomem;
		}
	}
	/* an address that stays keeps its pool, session and EWMA */
	for (size_t i = 0; i < set->n; i++) {
		long k;

		if (eps[i] == NULL && (k = find_same(s->eps, s->n_eps, &set->items[i])) >= 0) {
			eps[i] = s->eps[k];
			s->eps[k] = NULL;
		}
		/* a duplicate address needs its own object (discovery dedupes) */
		if (eps[i] == NULL && (eps[i] = endpoint_new(&set->items[i])) == NULL)
			continue;
		endpoint_bind(w, eps[i], set, i);
	}
	for (size_t i = 0; i < s->n_eps; i++)
		if (s->eps[i])
			endpoint_retire(w, s->eps[i]);
	free(s->eps);
	s->eps = eps;
	s->n_eps = 0;
	for (size_t i = 0; i < set->n; i++)
		if (eps[i])
			eps[s->n_eps++] = eps[i];
	return;
nomem:	/* the last good set stays */
	log_error("worker %d: out of memory applying endpoints service=%s; it keeps %zu",
	    w->id, s->conf->name, s->n_eps);
}

/* The local app behind the inbound listener, seen as a service with one
 * plain loopback endpoint: HTTP/1.1, or h2c prior knowledge, which makes
 * its attempts streams of h2_up.c like any `protocol: h2` service's. */
static int
gen_inbound_init(struct generation *g)
{
	const struct conf_inbound *in = &g->conf->inbound;
	struct conf_service *sc = &g->inbound_conf;
	struct svc_state *s = &g->inbound;
	struct ep_spec sp = { .host_is_ip = true, .weight = 1 };

	sc->name = "local_app";
	sc->endpoints = (struct conf_addr *)&in->local_app;
	sc->n_endpoints = 1;
	sc->protocol = in->local_app_protocol == LOCAL_H2C ? PROTO_H2 : PROTO_HTTP1;
	sc->timeouts = in->timeouts;
	sc->retries.buffer = 64 * 1024;
	sc->breaker.max_concurrent = in->max_concurrent;
	sc->headers = in->headers;	/* the config's: it outlives the generation */
	sc->compression = in->compression;
	sc->pool = (struct conf_pool){ .max_idle_per_endpoint = 64, .idle_timeout = 30000,
	    .max_per_endpoint = 1024 };
	s->conf = sc;
	snprintf(sp.host, sizeof(sp.host), "%s", in->local_app.host);
	memcpy(&sp.sa, &in->local_app.sa, in->local_app.salen);
	sp.salen = in->local_app.salen;
	snprintf(sp.text, sizeof(sp.text), "%s", in->local_app.text);
	if ((s->eps = calloc(1, sizeof(*s->eps))) == NULL ||
	    (s->eps[0] = endpoint_new(&sp)) == NULL)
		return -1;
	s->n_eps = 1;
	return inbound_keys_init(&g->inbound_keys, in);
}

/* Service endpoints belong to the worker (current arrays and the retired
 * list), not to a generation: only the local app's is the generation's.
 * W is NULL before the generation was ever current. */
static void
gen_free(struct worker *w, struct generation *g)
{
	for (size_t i = 0; i < g->n_svcs; i++)
		free(g->svcs[i].eps);
	free(g->svcs);
	if (g->inbound.eps) {
		pool_close_idle(&g->inbound);
		/* no client holds the generation, so its h2c sessions to the
		 * local app carry no request: they go with their endpoint */
		if (w != NULL)
			h2_up_close_endpoint(w, g->inbound.eps[0]);
		if (g->inbound.eps[0] != NULL)	/* else gen_inbound_init ran out */
			endpoint_free(g->inbound.eps[0]);
		free(g->inbound.eps);
	}
	inbound_keys_free(&g->inbound_keys);
	config_unref(g->conf);
	free(g);
}

/* Takes the caller's reference to CONF. RTS: each service's shared state,
 * as the main thread looked it up. */
static struct generation *
gen_new(struct config *conf, struct svc_runtime **rts, int worker_id)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (g == NULL) {
		config_unref(conf);
		return NULL;
	}
	g->conf = conf;
	g->refs = 1;
	/* counted once there: gen_free walks them */
	if ((g->svcs = calloc(conf->n_services ? conf->n_services : 1, sizeof(*g->svcs))) == NULL)
		goto fail;
	g->n_svcs = conf->n_services;
	for (size_t i = 0; i < g->n_svcs; i++) {
		g->svcs[i].conf = &conf->services[i];
		g->svcs[i].rt = rts[i];
		g->svcs[i].rr = (uint32_t)worker_id;	/* workers start apart */
	}
	if (conf->inbound.enabled && gen_inbound_init(g) != 0)
		goto fail;
	return g;
fail:
	gen_free(NULL, g);	/* with the caller's reference */
	return NULL;
}

struct generation *
gen_ref(struct generation *g)
{
	g->refs++;
	return g;
}

/* The old generations no client holds any more go, at the end of the
 * loop's turn (gen_unref). */
static void
gens_reap(struct deferred *d)
{
	struct worker *w = (struct worker *)((char *)d - offsetof(struct worker, gen_reap));
	struct generation **pp = &w->old, *g;

	while ((g = *pp) != NULL) {
		if (g->refs == 0) {
			*pp = g->next_old;
			gen_free(w, g);
		} else {
			pp = &g->next_old;
		}
	}
}

/* Not freed here: the last client may let go inside a callback of the
 * generation's own connection to the local app (a pipelined request
 * begins on the new config as the h2c answer to the one before ends, in
 * nghttp2's callback), and gen_free closes those connections. */
void
gen_unref(struct worker *w, struct generation *g)
{
	if (--g->refs == 0)
		worker_defer(w, &w->gen_reap);
}

static void
services_free(struct worker *w)
{
	struct generation *g = w->gen;

	if (g) {
		for (size_t i = 0; i < g->n_svcs; i++) {
			pool_close_idle(&g->svcs[i]);
			for (size_t j = 0; j < g->svcs[i].n_eps; j++)
				endpoint_free(g->svcs[i].eps[j]);
		}
		/* with the old ones, whoever still counts on it */
		w->gen = NULL;
		g->next_old = w->old;
		w->old = g;
	}
	worker_defer_cancel(w, &w->gen_reap);
	while (w->old) {
		g = w->old;
		w->old = g->next_old;
		gen_free(w, g);
	}
	retired_sweep(w, true);
	free(w->cands);
	w->cands = NULL;
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

/* A listener a reload closed stays while connections it accepted point
 * at it (listener_client_gone), or connections it handed to a sibling
 * may still come back to it; after the last one it goes. */
static void
closed_listeners_sweep(struct worker *w)
{
	struct listener **pp = &w->listeners, *l;

	while ((l = *pp) != NULL) {
		if (l->fd < 0 && !listener_in_use(l)) {
			*pp = l->next;
			listener_free(l);
		} else {
			pp = &l->next;
		}
	}
}

static void watch_placement(struct worker *w);

void
worker_free_later(struct worker *w, event_callback_fn fn, void *arg)
{
	if (event_base_once(w->base, -1, EV_TIMEOUT, fn, arg, NULL) == 0)
		return;
	if (w->n_later == WORKER_LATER_MAX) {
		log_error("worker %d: out of memory: a connection's memory is lost", w->id);
		return;
	}
	w->later[w->n_later].fn = fn;
	w->later[w->n_later].arg = arg;
	w->n_later++;
}

static void
later_run(struct worker *w)
{
	while (w->n_later > 0) {
		w->n_later--;
		w->later[w->n_later].fn(-1, EV_TIMEOUT, w->later[w->n_later].arg);
	}
}

static void
sweep(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	int64_t now = clock_now_ms();

	(void)fd;
	(void)what;
	atomic_store(&w->heartbeat_ms, now);
	for (size_t i = 0; i < w->gen->n_svcs; i++)
		pool_sweep(&w->gen->svcs[i], now);
	if (w->gen->inbound.eps)
		pool_sweep(&w->gen->inbound, now);
	retired_sweep(w, false);
	closed_listeners_sweep(w);
	later_run(w);
	watch_placement(w);
	/* what a burst left on the free lists, unused for a second, goes */
	h2_mem_decay();
	blocks_decay();
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
		if (w->ended && m->drop)
			m->drop(m->arg);
		else
			m->fn(w, m->arg);
		free(m);
	}
}

bool
worker_post(struct worker *w, mail_fn fn, void *arg)
{
	return worker_post_owning(w, fn, NULL, arg);
}

bool
worker_post_owning(struct worker *w, mail_fn fn, void (*drop)(void *arg), void *arg)
{
	struct mail *m = worker_mail_new(fn, drop, arg);

	if (m == NULL) {
		log_error("worker %d: out of memory for a message", w->id);
		return false;
	}
	worker_mail_post(w, m);
	return true;
}

struct mail *
worker_mail_new(mail_fn fn, void (*drop)(void *arg), void *arg)
{
	struct mail *m = malloc(sizeof(*m));

	if (m != NULL)
		*m = (struct mail){ .fn = fn, .drop = drop, .arg = arg };
	return m;
}

void
worker_mail_free(struct mail *m)
{
	free(m);
}

void
worker_mail_post(struct worker *w, struct mail *m)
{
	bool first;

	pthread_mutex_lock(&w->mail_lock);
	first = w->mail == NULL;
	m->next = w->mail;
	w->mail = m;
	pthread_mutex_unlock(&w->mail_lock);
	/* an eventfd wakes the loop without making libevent take locks; mail
	 * already waiting has woken it (mail_deliver reads the eventfd before
	 * it takes the list), so a burst of hand-overs costs one write */
	if (first)
		(void)!write(w->mail_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
}

static int
gen_start(struct worker *w, struct config *conf)
{
	struct svc_runtime **rts = calloc(conf->n_services ? conf->n_services : 1, sizeof(*rts));

	if (rts == NULL)
		return -1;
	/* main thread, before the loop runs: the registry is not shared yet */
	for (size_t i = 0; i < conf->n_services; i++)
		if ((rts[i] = runtime_service(w->rt, &conf->services[i])) == NULL) {
			free(rts);
			return -1;
		}
	w->gen = gen_new(config_ref(conf), rts, w->id);
	free(rts);
	return w->gen ? 0 : -1;
}

/*
 * The worker's thread runs SCHED_BATCH unless the config says `normal`:
 * waking for a socket it then never preempts the thread that has the CPU
 * (the app beside it, a backend) mid-slice, and takes its turn with the
 * work of all that came meanwhile: under load, far fewer context switches
 * for it and for them (README, "scheduling"); on an idle CPU it runs at
 * once as before. Only the normal policy is changed, and only what was
 * changed here goes back: one set from outside (systemd's
 * CPUSchedulingPolicy=, chrt) stays.
 */
static void
apply_scheduling(struct worker *w, const struct config *c)
{
	int now = sched_getscheduler(0) & ~SCHED_RESET_ON_FORK;
	int want = c->scheduling == CONF_SCHED_BATCH ? SCHED_BATCH : SCHED_OTHER;

	if (now == want || (now != SCHED_OTHER && !(now == SCHED_BATCH && w->made_batch)))
		return;
	if (sched_setscheduler(0, want, &(struct sched_param){ .sched_priority = 0 }) != 0) {
		log_warn("worker %d: scheduling policy unchanged: %s", w->id, strerror(errno));
		return;
	}
	w->made_batch = want == SCHED_BATCH;
}

/*
 * cpu_affinity: auto binds the worker to its CPU (affinity.h); off, or a
 * process allowed more or fewer CPUs than it has workers, leaves it where
 * it started. Only what was bound here is undone. Denied (a system call
 * filter), the worker runs unbound and says so, at start and at each
 * reload that asks again.
 */
static void
apply_affinity(struct worker *w, const struct config *c)
{
	int cpu = c->cpu_affinity == CONF_AFFINITY_AUTO ?
	    affinity_cpu(&w->allowed, w->n_siblings, (unsigned)w->id) : -1;
	cpu_set_t one;
	int err;

	if (cpu < 0)
		w->placement = (struct affinity_watch){ 0 };	/* bound again if auto returns */
	else if (w->placement.loose)
		cpu = -1;
	if (cpu == w->bound_cpu)
		return;
	if (cpu < 0) {
		err = pthread_setaffinity_np(pthread_self(), sizeof(w->allowed), &w->allowed);
	} else {
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		err = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
	}
	if (err != 0) {
		log_info("worker %d: CPU affinity unchanged: %s", w->id, strerror(err));
		return;
	}
	w->bound_cpu = cpu;
}

/* cpu_affinity: auto also lets a bound worker loose while its long turns
 * of HTTP/2 work wait long for its CPU, and binds it again when its turns
 * are short (affinity.h) */
static void
watch_placement(struct worker *w)
{
	char buf[96];
	unsigned long long run, wait, runs;	/* ns, ns, times */
	int bound = w->bound_cpu;
	ssize_t n;

	if (w->schedstat_fd < 0 || (bound < 0 && !w->placement.loose))
		return;
	if ((n = pread(w->schedstat_fd, buf, sizeof(buf) - 1, 0)) <= 0)
		return;
	buf[n] = '\0';
	if (sscanf(buf, "%llu %llu %llu", &run, &wait, &runs) != 3 ||
	    !affinity_watch_sample(&w->placement, run, wait, runs, w->work))
		return;
	apply_affinity(w, w->gen->conf);
	if (w->placement.loose && w->bound_cpu >= 0)
		w->placement.loose = false;	/* denied (logged): it stays bound */
	else if (bound >= 0 && w->bound_cpu < 0)
		log_info("worker %d: let loose from CPU %d: long turns, long waits for it",
		    w->id, bound);
	else if (bound < 0 && w->bound_cpu >= 0)
		log_info("worker %d: bound to CPU %d again", w->id, w->bound_cpu);
}

/* Listeners follow the new snapshot: limits from it, service ports added
 * or closed. Addresses of the main listeners need a restart (the main
 * thread says so). */
static void
swap_listeners(struct worker *w, const struct config *old, const struct config *conf)
{
	struct listener **pp = &w->listeners, *l;

	while ((l = *pp) != NULL) {
		bool keep = true;

		if (l->fd < 0) {
			/* closed, but its connections read limits from it:
			 * their own kind's while the config has one (a drain
			 * closed the inbound listener) */
			l->conf = l->kind == LK_INBOUND && conf->inbound.enabled ?
			    &conf->inbound.listener : &conf->outbound;
			pp = &l->next;
			continue;
		}
		switch (l->kind) {
		case LK_OUTBOUND:
			l->conf = &conf->outbound;
			break;
		case LK_INBOUND:
			keep = conf->inbound.enabled;
			l->conf = &conf->inbound.listener;
			break;
		case LK_SERVICE: {
			const char *name = old->services[l->service].name;

			keep = false;
			for (size_t i = 0; i < conf->n_services; i++)
				if (strcmp(conf->services[i].name, name) == 0 &&
				    conf->services[i].has_listen &&
				    strcmp(conf->services[i].listen.text,
				    old->services[l->service].listen.text) == 0) {
					l->service = i;
					l->conf = &conf->outbound;
					keep = true;
				}
			break;
		}
		}
		if (keep || l->fd < 0) {
			pp = &l->next;
			continue;
		}
		/* its connections may still be open: the object stays, closed,
		 * with limits from a config that lives as long as they do */
		listener_close(l);
		l->service = SIZE_MAX;
		l->conf = &conf->outbound;
		pp = &l->next;
	}
	for (l = w->listeners; l; l = l->next) {
		proxy_listener_reconf(l);
		listener_recheck(l);	/* max_connections may have grown */
	}
	for (size_t i = 0; i < conf->n_services; i++) {
		bool have = false;

		if (!conf->services[i].has_listen)
			continue;
		for (l = w->listeners; l && !have; l = l->next)
			have = l->kind == LK_SERVICE && l->fd >= 0 && l->service == i;
		if (!have)
			add_listener(w, LK_SERVICE, &conf->outbound, &conf->services[i].listen, i);
	}
	if (conf->inbound.enabled && !old->inbound.enabled && !w->inbound_closed &&
	    add_listener(w, LK_INBOUND, &conf->inbound.listener,
	    &conf->inbound.listener.address, 0) != 0)
		log_error("worker %d: cannot open the inbound listener", w->id);
}

static bool
same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Pooled connections were authenticated under these settings. Files
 * rewritten in place (cert renewal) keep the connections, as peers do. */
static bool
same_tls(const struct conf_tls_client *a, const struct conf_tls_client *b)
{
	return a->enabled == b->enabled && a->min_version == b->min_version &&
	    same_str(a->ca, b->ca) && same_str(a->cert, b->cert) && same_str(a->key, b->key) &&
	    same_str(a->server_name, b->server_name) && same_str(a->verify_san, b->verify_san);
}

void
worker_swap(struct worker *w, struct swap *sw)
{
	struct generation *g = gen_new(sw->conf, sw->rts, w->id), *old = w->gen;

	if (g == NULL) {
		log_error("worker %d: out of memory applying the new config", w->id);
		return;
	}
	/* a service that stays keeps its endpoints (pools, sessions, EWMA):
	 * the new generation shares them; the old one keeps its array for the
	 * requests it still runs. Endpoints of services that went retire. */
	for (size_t j = 0; j < old->n_svcs; j++) {
		bool kept = false;

		for (size_t i = 0; i < g->n_svcs && !kept; i++) {
			struct svc_state *ns = &g->svcs[i];

			if (strcmp(old->svcs[j].conf->name, ns->conf->name) != 0 ||
			    !same_tls(&old->svcs[j].conf->tls, &ns->conf->tls))
				continue;	/* new TLS settings: new connections */
			ns->eps = malloc((old->svcs[j].n_eps ? old->svcs[j].n_eps : 1) *
			    sizeof(*ns->eps));
			if (ns->eps == NULL)
				break;	/* starts empty (discovery's set follows); they retire */
			kept = true;
			if (old->svcs[j].n_eps > 0)	/* eps is NULL before a first set */
				memcpy(ns->eps, old->svcs[j].eps,
				    old->svcs[j].n_eps * sizeof(*ns->eps));
			ns->n_eps = old->svcs[j].n_eps;
			ns->lat = old->svcs[j].lat;
		}
		if (!kept)
			for (size_t k = 0; k < old->svcs[j].n_eps; k++)
				endpoint_retire(w, old->svcs[j].eps[k]);
	}
	w->gen = g;
	for (size_t k = 0; k < sw->n_sets; k++)
		worker_set_endpoints(w, sw->sets[k]);
	swap_listeners(w, old->conf, g->conf);
	apply_scheduling(w, g->conf);
	apply_affinity(w, g->conf);
	old->next_old = w->old;
	w->old = old;
	gen_unref(w, old);
}

/* ------------------------------------------------------ deferred ---- */

/* Runs what was deferred during a turn of the loop, after its callbacks
 * (worker_turn), before the next poll. */
static void
deferred_run(struct worker *w)
{
	struct deferred *d;

	/* what a run defers anew (a flush that fails a stream, say) runs too */
	while ((d = w->defer_head) != NULL) {
		worker_defer_cancel(w, d);
		d->run(d);
	}
}

int
worker_turn(struct worker *w, int flags)
{
	int rc = event_base_loop(w->base, flags);

	deferred_run(w);
	return rc;
}

void
worker_defer(struct worker *w, struct deferred *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = NULL;
	d->prev = w->defer_tail;
	if (w->defer_tail)
		w->defer_tail->next = d;
	else
		w->defer_head = d;
	w->defer_tail = d;
}

void
worker_defer_cancel(struct worker *w, struct deferred *d)
{
	if (!d->queued)
		return;
	d->queued = false;
	if (d->prev)
		d->prev->next = d->next;
	else
		w->defer_head = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else
		w->defer_tail = d->prev;
	d->next = d->prev = NULL;
}

int
worker_init(struct worker *w, const struct worker_deps *deps, int id, struct config *conf)
{
	const struct timeval second = { 1, 0 };

	memset(w, 0, sizeof(*w));
	w->mail_fd = -1;
	w->schedstat_fd = -1;
	w->gen_reap.run = gens_reap;
	w->id = id;
	w->rt = deps->rt;
	w->siblings = deps->workers;
	w->n_siblings = deps->n_workers;
	w->ms = metrics_shard(deps->metrics, (unsigned)id);
	w->alog = deps->alog ? accesslog_worker(deps->alog, (unsigned)id) : NULL;
	pthread_mutex_init(&w->mail_lock, NULL);
	if ((w->base = event_base_new()) == NULL)
		return -1;
	w->ev_sweep = event_new(w->base, -1, EV_PERSIST, sweep, w);
	if ((w->mail_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		return -1;
	w->ev_mail = event_new(w->base, w->mail_fd, EV_READ | EV_PERSIST, mail_deliver, w);
	w->exporter = exporter_new(w);
	if (w->exporter == NULL || w->ev_sweep == NULL || w->ev_mail == NULL ||
	    gen_start(w, conf) != 0)
		return -1;
	event_add(w->ev_sweep, &second);
	event_add(w->ev_mail, NULL);
	if (add_listener(w, LK_OUTBOUND, &conf->outbound, &conf->outbound.address, 0) != 0)
		return -1;
	if (conf->inbound.enabled && add_listener(w, LK_INBOUND, &conf->inbound.listener,
	    &conf->inbound.listener.address, 0) != 0)
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

	apply_scheduling(w, w->gen->conf);
	w->bound_cpu = -1;
	/* this thread's: /proc/thread-self resolves when opened */
	w->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	if (pthread_getaffinity_np(pthread_self(), sizeof(w->allowed), &w->allowed) == 0)
		apply_affinity(w, w->gen->conf);
	ids_thread_init();
	if (w->alog)
		accesslog_attach(w->alog, w->base);
	/* one turn at a time, each with one reading of the clock (clock.h);
	 * a turn ends early when the loop is told to exit */
	do {
		clock_turn_begin();
	} while (worker_turn(w, EVLOOP_ONCE) == 0 && !event_base_got_exit(w->base));
	clock_turn_end();
	w->ended = true;
	proxy_close_all(w);	/* their access log lines go out before detaching */
	later_run(w);
	if (w->alog) {
		accesslog_flush(w->alog);
		accesslog_detach(w->alog);
	}
	h2_mem_thread_end();
	blocks_thread_end();
	if (w->schedstat_fd >= 0)
		close(w->schedstat_fd);
	w->schedstat_fd = -1;
	return NULL;
}

int
worker_start(struct worker *w)
{
	char name[16];

	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return -1;
	/* top -H, perf and /proc tell the workers apart */
	snprintf(name, sizeof(name), "ferry-worker-%d", w->id);
	pthread_setname_np(w->thread, name);
	return 0;
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

	w->ended = true;		/* also when its thread never ran */
	proxy_close_all(w);

	for (l = w->listeners; l; l = next) {
		next = l->next;
		listener_free(l);
	}
	services_free(w);
	for (m = w->mail; m; m = mnext) {
		mnext = m->next;
		if (m->drop)
			m->drop(m->arg);
		free(m);
	}
	exporter_free(w->exporter);
	if (w->ev_sweep)
		event_free(w->ev_sweep);
	if (w->ev_mail)
		event_free(w->ev_mail);
	if (w->mail_fd >= 0)
		close(w->mail_fd);
	if (w->base)
		event_base_free(w->base);
	sbuf_free(&w->scratch);
	sbuf_free(&w->scratch_up);
	pthread_mutex_destroy(&w->mail_lock);
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
