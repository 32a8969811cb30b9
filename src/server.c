#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "accesslog.h"
#include "admin.h"
#include "admin_pages.h"
#include "clean_maps.h"
#include "clock.h"
#include "config_json.h"
#include "discovery.h"
#include "exporter.h"
#include "health.h"
#include "history.h"
#include "ids.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "proxy.h"
#include "resolver.h"
#include "runtime.h"
#include "watch.h"
#include "server.h"
#include "status_page.h"
#include "worker.h"

struct server {
	struct config *conf;
	struct event_base *base;
	struct worker *workers;
	uint32_t n_workers;
	struct admin *admin;
	struct runtime *runtime;
	struct metrics *metrics;
	struct history *history;	/* the status page's charts */
	struct accesslog *alog;
	struct resolver *resolver;
	struct health *health;
	struct discovery *discovery;
	struct watch *watch;		/* watch: true */
	bool workers_started;
	bool level_from_cli;		/* -l wins over log.level, reloads too */
	bool ready_once;		/* /ready said 200: a reload does not undo it */
	bool collecting;		/* a reload gathers the first sets */
	bool collect_failed;		/* and one was lost (out of memory) */
	struct ep_set **collected;
	size_t n_collected;
	struct event *ev_term, *ev_int, *ev_hup, *ev_usr1, *ev_drain;
	bool ready;
	bool draining;
	bool drain_late;		/* drain_delay is over */
	bool spans_flushing;		/* exporters told to send what they hold */
	bool notified_ready;
	bool code_ran_once;	/* startup or a reload since the last tick */
	int64_t last_watchdog_ms;
	uint32_t clients_peak;		/* most client connections since the last trim */
	size_t free_after_trim;		/* the heap's free bytes then (or since) */
	struct event *ev_tick;
	int64_t drain_start_ms;
	/* as the SIGTERM found them: a reload during the drain changes
	 * neither (SPEC §10 counts both from the signal) */
	int64_t drain_delay_ms, drain_timeout_ms;
	int exit_code;
};

/* ------------------------------------------------------ endpoints ---- */

static void
apply_set(struct worker *w, void *arg)
{
	worker_set_endpoints(w, arg);
	ep_set_free(arg);
}

/* Every worker gets its own copy of SET, or none does: the copies and
 * their messages are all made before any goes. False: none went, and
 * discovery sends the set again with the next answer. */
static bool
publish_to_workers(struct server *srv, const struct ep_set *set)
{
	struct ep_set **copies = calloc(srv->n_workers, sizeof(*copies));
	struct mail **mails = calloc(srv->n_workers, sizeof(*mails));
	uint32_t i;

	for (i = 0; copies && mails && i < srv->n_workers; i++)
		if ((copies[i] = ep_set_copy(set)) == NULL ||
		    (mails[i] = worker_mail_new(apply_set, NULL, copies[i])) == NULL)
			break;
	bool made = i == srv->n_workers;	/* all of them (a worker at least) */

	if (made) {
		for (i = 0; i < srv->n_workers; i++)
			worker_mail_post(&srv->workers[i], mails[i]);
	} else {
		log_error("out of memory publishing endpoints; the workers keep their sets");
		for (i = 0; copies && mails && i < srv->n_workers; i++) {
			worker_mail_free(mails[i]);
			ep_set_free(copies[i]);
		}
	}
	free(mails);
	free(copies);
	return made;
}

/* Discovery found a new address set: every worker gets its own copy. */
static bool
publish_set(void *arg, const struct ep_set *set)
{
	struct server *srv = arg;

	if (srv->collecting) {
		struct ep_set *copy = ep_set_copy(set), **grown;

		if (copy == NULL || (grown = realloc(srv->collected,
		    (srv->n_collected + 1) * sizeof(*grown))) == NULL) {
			ep_set_free(copy);
			srv->collect_failed = true;	/* fails the reload */
			return false;
		}
		srv->collected = grown;
		srv->collected[srv->n_collected++] = copy;
		return true;
	}
	if (!srv->workers_started) {
		/* before the loops run: no request can see a half state */
		for (uint32_t i = 0; i < srv->n_workers; i++)
			worker_set_endpoints(&srv->workers[i], set);
		return true;
	}
	return publish_to_workers(srv, set);
}


const struct config *
server_config(struct server *srv)
{
	return srv->conf;
}

const struct conf_listener *
server_admin_conf(struct server *srv)
{
	return &srv->conf->admin;
}

/* NULL when the access log is off. */
static struct accesslog *
server_accesslog(struct server *srv)
{
	return srv->alog && accesslog_enabled(srv->alog) ? srv->alog : NULL;
}

/* --------------------------------------------------------- charts ---- */

/* Each charted service's buckets take what its counters grew by. */
static void
history_sample(struct server *srv)
{
	struct history_entry *e;
	size_t n = history_entries(srv->history, &e);
	int64_t now = clock_wall_ms();
	struct metrics_totals t;

	for (size_t i = 0; i < n; i++) {
		metrics_totals(srv->metrics, e[i].metrics_id, e[i].dir, &t);
		history_series_record(e[i].series, now, &t);
	}
}

/* The charted services become those of C (and the local app when the
 * inbound listener is on): kept ones keep their buckets. Before C reaches
 * the workers, so that the new ones' baselines come before their first
 * request. */
static void
history_follow(struct server *srv, const struct config *c)
{
	struct history_key *keys = calloc(c->n_services + 1, sizeof(*keys));
	size_t n = 0;

	if (keys == NULL) {
		log_warn("status page charts: out of memory; they keep the services they had");
		return;
	}
	for (size_t i = 0; i < c->n_services; i++) {
		struct svc_runtime *rt = runtime_service(srv->runtime, &c->services[i]);

		if (rt != NULL)
			keys[n++] = (struct history_key){ c->services[i].name, DIR_OUTBOUND,
			    rt->metrics_id };
	}
	if (c->inbound.enabled)
		keys[n++] = (struct history_key){ "local_app", DIR_INBOUND,
		    runtime_inbound_metrics_id(srv->runtime) };
	if (history_set(srv->history, keys, n) != 0)
		log_warn("status page charts: out of memory; they keep the services they had");
	free(keys);
	history_sample(srv);
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
	if (len == 1 && path[0] == '/') {
		page->content_type = "text/html; charset=utf-8";
		sbuf_add(body, status_page_html, status_page_html_len);
		return 0;
	}
	if (len == 7 && memcmp(path, "/config", 7) == 0) {
		page->content_type = "application/json";
		config_to_json(srv->conf, body);
		return 0;
	}
	if ((len == 8 && memcmp(path, "/metrics", 8) == 0) ||
	    (len == 9 && memcmp(path, "/services", 9) == 0)) {
		struct admin_view v = {
			.conf = srv->conf, .rt = srv->runtime, .disc = srv->discovery,
			.metrics = srv->metrics, .workers = srv->workers,
			.n_workers = srv->n_workers,
			.admin_conns = admin_connections(srv->admin),
		};

		if (path[1] == 'm') {
			page->content_type = "text/plain; version=0.0.4; charset=utf-8";
			admin_page_metrics(&v, body);
		} else {
			page->content_type = "application/json";
			admin_page_services(&v, body);
		}
		return 0;
	}
	if (len == 8 && memcmp(path, "/history", 8) == 0) {
		page->content_type = "application/json";
		history_sample(srv);
		admin_page_history(srv->history, clock_wall_ms(), body);
		return 0;
	}
	if (len == 6 && memcmp(path, "/ready", 6) == 0) {
		if (srv->ready && !srv->draining &&
		    (srv->ready_once || discovery_ready(srv->discovery))) {
			/* names of a reloaded config being looked up do not
			 * make a serving sidecar unready */
			srv->ready_once = true;
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

/* --------------------------------------------------------- reload ---- */

static void
reload_error(void *arg, const char *line)
{
	(void)arg;
	log_error("reload: %s", line);
}

static void
swap_mail_free(struct swap *sw)
{
	for (size_t i = 0; i < sw->n_sets; i++)
		ep_set_free(sw->sets[i]);
	free(sw->sets);
	free(sw->rts);
	free(sw);
}

/* The worker takes the config reference; the rest goes here. */
static void
swap_mail(struct worker *w, void *arg)
{
	worker_swap(w, arg);
	swap_mail_free(arg);
}

static void
warn_restart(const char *what, const char *was, const char *now)
{
	if (strcmp(was, now) != 0)
		log_warn("reload: %s changed from %s to %s; that takes a restart", what, was, now);
}

/* What a reload cannot change in place is said, not silently ignored. */
static void
reload_limits(const struct config *old, const struct config *c)
{
	warn_restart("listeners.outbound.address", old->outbound.address.text,
	    c->outbound.address.text);
	warn_restart("listeners.admin.address", old->admin.address.text, c->admin.address.text);
	if (old->inbound.enabled && c->inbound.enabled)
		warn_restart("listeners.inbound.address", old->inbound.listener.address.text,
		    c->inbound.listener.address.text);
	warn_restart("log.access", old->log_access, c->log_access);
	for (size_t i = 0; i < old->n_nameservers || i < c->n_nameservers; i++)
		if (i >= old->n_nameservers || i >= c->n_nameservers ||
		    strcmp(old->nameservers[i].text, c->nameservers[i].text) != 0) {
			log_warn("reload: resolver.nameservers changed; that takes a restart");
			break;
		}
	if (old->workers != c->workers)
		log_warn("reload: workers changed from %u to %u; that takes a restart",
		    old->workers, c->workers);
}

/* True when OLD already has a listening socket on A (ferry's own port
 * would fail a probe without SO_REUSEPORT). */
static bool
held_by(const struct config *old, const struct conf_addr *a)
{
	if (strcmp(old->outbound.address.text, a->text) == 0 ||
	    strcmp(old->admin.address.text, a->text) == 0 ||
	    (old->inbound.enabled &&
	     strcmp(old->inbound.listener.address.text, a->text) == 0))
		return true;
	for (size_t i = 0; i < old->n_services; i++)
		if (old->services[i].has_listen &&
		    strcmp(old->services[i].listen.text, a->text) == 0)
			return true;
	return false;
}

static int
reload_probe_one(const struct config *old, const struct config *c,
    const char *what, const struct conf_addr *a)
{
	char err[256];

	if (held_by(old, a) || listener_probe(a, err, sizeof(err)) == 0)
		return 0;
	log_error("reload: %s:%d:%d: %s: %s", c->path, a->pos.line, a->pos.col, what, err);
	return -1;
}

/* The addresses a reload would newly bind are checked as at startup
 * (SPEC §2, §10): one in use fails the reload, rather than a reload
 * counted a success with a service port that never listens. */
static int
reload_probe(const struct config *old, const struct config *c)
{
	char what[300];
	int bad = 0;

	if (c->inbound.enabled && !old->inbound.enabled &&
	    reload_probe_one(old, c, "listeners.inbound.address",
	    &c->inbound.listener.address) != 0)
		bad++;
	for (size_t i = 0; i < c->n_services; i++) {
		if (!c->services[i].has_listen)
			continue;
		snprintf(what, sizeof(what), "services.%s.listen", c->services[i].name);
		if (reload_probe_one(old, c, what, &c->services[i].listen) != 0)
			bad++;
	}
	return bad ? -1 : 0;
}

/* A worker's copy of the new snapshot: its shared state and first sets. */
static struct swap *
swap_new(struct server *srv, struct config *next, struct svc_runtime **rts)
{
	struct swap *sw = calloc(1, sizeof(*sw));

	if (sw == NULL)
		return NULL;
	sw->rts = calloc(next->n_services ? next->n_services : 1, sizeof(*sw->rts));
	sw->sets = calloc(srv->n_collected ? srv->n_collected : 1, sizeof(*sw->sets));
	if (sw->rts == NULL || sw->sets == NULL)
		goto fail;
	memcpy(sw->rts, rts, next->n_services * sizeof(*rts));
	for (size_t i = 0; i < srv->n_collected; i++) {
		if ((sw->sets[i] = ep_set_copy(srv->collected[i])) == NULL)
			goto fail;
		sw->n_sets++;
	}
	sw->conf = config_ref(next);
	return sw;
fail:
	swap_mail_free(sw);
	return NULL;
}

static void
collected_free(struct server *srv)
{
	for (size_t i = 0; i < srv->n_collected; i++)
		ep_set_free(srv->collected[i]);
	free(srv->collected);
	srv->collected = NULL;
	srv->n_collected = 0;
}

static void server_reload(struct server *srv);

static void
watch_changed(void *arg)
{
	server_reload(arg);
}

/* watch: true follows the config in force (it may turn it on or off). */
static void
watch_update(struct server *srv)
{
	if (!srv->conf->watch) {
		watch_free(srv->watch);
		srv->watch = NULL;
		return;
	}
	if (srv->watch == NULL &&
	    (srv->watch = watch_new(srv->base, watch_changed, srv)) == NULL)
		return;
	if (watch_set(srv->watch, srv->conf) != 0)
		log_warn("watch: not every file can be watched");
}

/* SIGHUP (or a watched file changed): the new file and every file it names
 * are loaded and validated in full first; on any error the running config
 * stays. Then every worker gets the new snapshot: new requests use it,
 * requests in flight finish on theirs, no connection is dropped, and what
 * is kept by name (breakers, health, pools, counters) survives. */
static void
server_reload(struct server *srv)
{
	struct config *next;
	struct discovery *disc;
	struct svc_runtime **rts;
	struct swap **swaps;
	struct mail **mails;
	uint32_t i;

	notify_reloading();
	srv->code_ran_once = true;
	next = config_load(srv->conf->path, reload_error, NULL);
	if (next == NULL) {
		metrics_config_reload(srv->metrics, false);
		log_error("reload failed; the running configuration stays in force");
		notify_ready();
		return;
	}
	if (reload_probe(srv->conf, next) != 0) {
		config_unref(next);
		metrics_config_reload(srv->metrics, false);
		log_error("reload failed; the running configuration stays in force");
		notify_ready();
		return;
	}
	reload_limits(srv->conf, next);
	if (next->inbound.enabled)
		runtime_inbound_on(srv->runtime);
	rts = calloc(next->n_services ? next->n_services : 1, sizeof(*rts));
	swaps = calloc(srv->n_workers, sizeof(*swaps));
	mails = calloc(srv->n_workers, sizeof(*mails));
	disc = discovery_new(srv->base, srv->runtime, srv->resolver, srv->health,
	    publish_set, srv);
	for (size_t k = 0; rts && k < next->n_services; k++)
		if ((rts[k] = runtime_service(srv->runtime, &next->services[k])) == NULL)
			goto fail;
	/* the first sets are collected for the swap, not posted on their own */
	srv->collecting = true;
	srv->collect_failed = false;
	if (rts == NULL || swaps == NULL || mails == NULL || disc == NULL ||
	    discovery_start(disc, next, srv->discovery) != 0 || srv->collect_failed)
		goto fail;
	srv->collecting = false;
	/* every worker's message is made before any goes: past this point
	 * the reload cannot fail here (a worker that cannot apply it keeps
	 * the old config and says so: worker_swap) */
	for (i = 0; i < srv->n_workers; i++)
		if ((swaps[i] = swap_new(srv, next, rts)) == NULL ||
		    (mails[i] = worker_mail_new(swap_mail, NULL, swaps[i])) == NULL)
			goto fail;
	history_follow(srv, next);
	for (i = 0; i < srv->n_workers; i++)
		worker_mail_post(&srv->workers[i], mails[i]);
	discovery_free(srv->discovery, disc);
	srv->discovery = disc;
	config_unref(srv->conf);
	srv->conf = next;
	admin_reconf(srv->admin, &next->admin);
	collected_free(srv);
	free(mails);
	free(swaps);
	free(rts);
	metrics_config_reload(srv->metrics, true);
	if (!srv->level_from_cli)
		log_set_level(next->log_level);
	log_info("reloaded %s services=%zu", next->path, next->n_services);
	watch_update(srv);
	notify_ready();
	return;
fail:
	srv->collecting = false;
	log_error("reload: out of memory; the running configuration stays in force");
	for (i = 0; swaps && i < srv->n_workers; i++)
		if (swaps[i]) {
			worker_mail_free(mails[i]);
			config_unref(swaps[i]->conf);
			swap_mail_free(swaps[i]);
		}
	free(mails);
	discovery_free(disc, srv->discovery);
	/* the new sets' checks were pointed at NEXT, which goes */
	discovery_rewatch(srv->discovery);
	collected_free(srv);
	free(swaps);
	free(rts);
	config_unref(next);
	metrics_config_reload(srv->metrics, false);
	notify_ready();
}

/* ---------------------------------------------------------- drain ---- */

/* SPEC §10: at once, responses say "connection: close" and /ready 503. */
static void
drain_begin(struct worker *w, void *arg)
{
	(void)arg;
	w->draining = true;
}

/* After drain_delay: peers have been told. The inbound listener serves what
 * waits in its accept queue and closes; the outbound one keeps accepting
 * (the app, stopping too, still makes calls). Idle connections go. */
static void
drain_late(struct worker *w, void *arg)
{
	struct listener *l;

	(void)arg;
	w->inbound_closed = true;
	for (l = w->listeners; l; l = l->next)
		if (l->kind == LK_INBOUND)
			listener_close(l);
	proxy_close_idle(w);
}

static uint32_t
clients_open(struct server *srv)
{
	uint32_t n = 0;

	/* a connection on its way between workers counts in n_incoming */
	for (uint32_t i = 0; i < srv->n_workers; i++)
		n += atomic_load(&srv->workers[i].n_clients) +
		    atomic_load(&srv->workers[i].n_incoming);
	return n;
}

static void
flush_spans(struct worker *w, void *arg)
{
	(void)arg;
	exporter_flush(w->exporter);
}

/* SPEC §13: the spans of the requests just drained reach the collector
 * before exit (within drain_timeout); true once every exporter is idle. */
static bool
spans_flushed(struct server *srv)
{
	bool idle = true;

	if (!srv->spans_flushing) {
		srv->spans_flushing = true;
		for (uint32_t i = 0; i < srv->n_workers; i++)
			worker_post(&srv->workers[i], flush_spans, NULL);
		return false;
	}
	for (uint32_t i = 0; i < srv->n_workers; i++)
		idle = idle && exporter_idle(srv->workers[i].exporter);
	return idle;
}

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	int64_t elapsed = clock_now_ms() - srv->drain_start_ms;
	uint32_t open;

	(void)fd;
	(void)what;
	if (elapsed < srv->drain_delay_ms)
		return;
	if (!srv->drain_late) {
		srv->drain_late = true;
		for (uint32_t i = 0; i < srv->n_workers; i++)
			worker_post(&srv->workers[i], drain_late, NULL);
		return;		/* let them close idle connections first */
	}
	open = clients_open(srv);
	if (open == 0 && elapsed < srv->drain_timeout_ms && srv->conf->tracing.enabled &&
	    !spans_flushed(srv))
		return;
	if (open == 0 || elapsed >= srv->drain_timeout_ms) {
		if (open)
			log_warn("drain timeout: ending %u connections still open", open);
		else
			log_info("drained; exiting");
		event_base_loopexit(srv->base, NULL);
	}
}

static void
drain_start(struct server *srv)
{
	const struct timeval tick = { 0, 50 * 1000 };

	log_info("draining delay_ms=%lld timeout_ms=%lld",
	    (long long)srv->conf->drain_delay, (long long)srv->conf->drain_timeout);
	notify_stopping();
	notify_status("draining");
	srv->draining = true;
	srv->drain_start_ms = clock_now_ms();
	srv->drain_delay_ms = srv->conf->drain_delay;
	srv->drain_timeout_ms = srv->conf->drain_timeout;
	for (uint32_t i = 0; i < srv->n_workers; i++)
		worker_post(&srv->workers[i], drain_begin, NULL);
	event_add(srv->ev_drain, &tick);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (srv->draining) {
			log_warn("second signal: exiting now");
			event_base_loopexit(srv->base, NULL);
			return;
		}
		drain_start(srv);
		return;
	case SIGHUP:
		server_reload(srv);
		return;
	case SIGUSR1:
		if (srv->alog)
			accesslog_reopen(srv->alog);
		return;
	}
}

/* glibc keeps freed heap pages: RSS would stay at its high-water mark
 * for good (a burst of connections, of TLS handshakes). Each tick, when
 * the open connections fell TRIM_AFTER_CLOSED below their peak, or the
 * heap's free bytes grew TRIM_AFTER_FREE since the last trim, the free
 * pages go back to the system (malloc_trim walks every arena: well under
 * a millisecond for a few MiB, at most once a tick). */
#define TRIM_AFTER_CLOSED 256
#define TRIM_AFTER_FREE (1024 * 1024)

static bool
trim_heap(struct server *srv)
{
#ifdef __GLIBC__
	uint32_t n = clients_open(srv);
	struct mallinfo2 mi = mallinfo2();
	bool closed = n + TRIM_AFTER_CLOSED <= srv->clients_peak;

	if (n > srv->clients_peak)
		srv->clients_peak = n;
	if (mi.fordblks < srv->free_after_trim)
		srv->free_after_trim = mi.fordblks;
	if (!closed && mi.fordblks < srv->free_after_trim + TRIM_AFTER_FREE)
		return false;
	malloc_trim(0);
	srv->clients_peak = n;
	srv->free_after_trim = mi.fordblks;
	return true;
#else
	(void)srv;
	return false;
#endif
}

/* Code that ran once (startup, a reload, the handshakes and parsing of a
 * burst that is over) holds its pages mapped in RSS for good; the first
 * tick after startup or a reload, and each trim after a burst, give them
 * back. At most once a tick: pages still hot cost one minor fault per
 * 64 KiB to map again. */
static void
release_memory(struct server *srv)
{
	size_t bytes;

	if (!trim_heap(srv) && !srv->code_ran_once)
		return;
	srv->code_ran_once = false;
	bytes = clean_maps_release();
	log_debug("code mappings released kib=%zu", bytes / 1024);
}

/* Every second, or twice per watchdog interval if that is shorter. */
static int64_t
housekeeping_tick_ms(void)
{
	int64_t wd = notify_watchdog_interval_us() / 1000;

	return wd > 0 && wd / 2 < 1000 ? (wd / 2 > 0 ? wd / 2 : 1) : 1000;
}

/* Each tick: READY=1 once /ready would say 200, and the watchdog ping
 * while every worker's loop is making progress (a stalled worker stops the
 * pings, so systemd restarts ferry). */
static void
housekeeping(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	int64_t now = clock_now_ms(), wd = notify_watchdog_interval_us() / 1000;

	(void)fd;
	(void)what;
	history_sample(srv);
	runtime_compact(srv->runtime);	/* what DNS dropped and nobody holds */
	release_memory(srv);
	if (!srv->notified_ready && discovery_ready(srv->discovery)) {
		srv->notified_ready = true;
		notify_ready();
		notify_status("serving %zu services with %u workers", srv->conf->n_services,
		    srv->n_workers);
	}
	/* ticks come up to half a tick early or late: ping at the tick
	 * nearest the interval, never a whole tick after it */
	if (wd > 0 && now - srv->last_watchdog_ms + housekeeping_tick_ms() / 2 >= wd) {
		bool alive = true;

		/* workers stamp their heartbeat every second */
		for (uint32_t i = 0; i < srv->n_workers; i++)
			if (now - atomic_load(&srv->workers[i].heartbeat_ms) > 2 * wd + 1000)
				alive = false;
		if (alive) {
			notify_watchdog();
			srv->last_watchdog_ms = now;
		}
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
	/* users before what they use: workers and discovery (health checks
	 * included) hold pointers into the runtime */
	for (uint32_t i = 0; srv->workers && i < srv->n_workers; i++)
		worker_free(&srv->workers[i]);
	free(srv->workers);
	if (srv->alog)
		accesslog_close(srv->alog);	/* workers are stopped: loses no line */
	discovery_free(srv->discovery, NULL);
	health_free(srv->health);
	resolver_free(srv->resolver);
	resolver_global_cleanup();	/* a no-op when it was not initialised */
	watch_free(srv->watch);
	admin_free(srv->admin);
	runtime_free(srv->runtime);
	history_free(srv->history);
	metrics_free(srv->metrics);
	if (srv->ev_term) event_free(srv->ev_term);
	if (srv->ev_int) event_free(srv->ev_int);
	if (srv->ev_hup) event_free(srv->ev_hup);
	if (srv->ev_usr1) event_free(srv->ev_usr1);
	if (srv->ev_drain) event_free(srv->ev_drain);
	if (srv->ev_tick) event_free(srv->ev_tick);
	if (srv->base)
		event_base_free(srv->base);
	config_unref(srv->conf);
}

int
server_run(struct config *conf, bool log_level_from_cli)
{
	struct server srv = { .conf = conf, .exit_code = 0, .code_ran_once = true };
	char err[256];
	int afd;
	uint32_t started = 0;

	signal(SIGPIPE, SIG_IGN);
	notify_init();
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
	srv.n_workers = conf->workers;
	srv.level_from_cli = log_level_from_cli;
	if ((srv.metrics = metrics_new(srv.n_workers)) == NULL ||
	    (srv.runtime = runtime_new(srv.metrics, srv.n_workers)) == NULL ||
	    (srv.history = history_new()) == NULL) {
		server_free(&srv);
		return 1;
	}
	if (conf->inbound.enabled)
		runtime_inbound_on(srv.runtime);
	history_follow(&srv, conf);
	if ((srv.alog = accesslog_open(conf->log_access, srv.n_workers, err, sizeof(err))) == NULL) {
		fprintf(stderr, "ferry: log.access: %s\n", err);
		server_free(&srv);
		return 1;
	}
	if ((srv.workers = calloc(srv.n_workers, sizeof(*srv.workers))) == NULL) {
		server_free(&srv);
		return 1;
	}
	for (uint32_t i = 0; i < srv.n_workers; i++) {
		struct worker_deps deps = {
			.rt = srv.runtime, .metrics = srv.metrics, .alog = server_accesslog(&srv),
			.workers = srv.workers, .n_workers = srv.n_workers,
		};

		if (worker_init(&srv.workers[i], &deps, (int)i, conf) != 0) {
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
	srv.ev_tick = event_new(srv.base, -1, EV_PERSIST, housekeeping, &srv);
	event_add(srv.ev_term, NULL);
	event_add(srv.ev_int, NULL);
	event_add(srv.ev_hup, NULL);
	event_add(srv.ev_usr1, NULL);
	if (resolver_global_init() == 0)
		srv.resolver = resolver_new(srv.base, conf->nameservers, conf->n_nameservers);
	if (srv.resolver)
		/* glibc waits 5 s a try; 2 s keeps startup and failover short
		 * while a loaded DNS server still gets to answer */
		resolver_set_timeout(srv.resolver, 2000);
	srv.health = health_new(srv.base);
	srv.discovery = discovery_new(srv.base, srv.runtime, srv.resolver, srv.health,
	    publish_set, &srv);
	if (srv.resolver == NULL || srv.health == NULL || srv.discovery == NULL ||
	    discovery_start(srv.discovery, conf, NULL) != 0) {
		fprintf(stderr, "ferry: cannot start service discovery\n");
		server_free(&srv);
		return 1;
	}
	for (; started < srv.n_workers; started++)
		if (worker_start(&srv.workers[started]) != 0)
			break;
	srv.workers_started = true;
	if (started < srv.n_workers) {
		fprintf(stderr, "ferry: startup failed\n");
		srv.exit_code = 1;
	} else {
		int64_t tick_ms = housekeeping_tick_ms();
		const struct timeval tick = { tick_ms / 1000, tick_ms % 1000 * 1000 };

		srv.ready = true;
		watch_update(&srv);
		event_add(srv.ev_tick, &tick);
		housekeeping(-1, 0, &srv);
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
