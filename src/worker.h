/*
 * A worker: one thread, one event loop, its own listening sockets
 * (SO_REUSEPORT) and its own upstream pools. A request lives and dies on
 * one worker, so the request path takes no lock. The main thread talks to
 * workers only through their mailbox.
 */
#ifndef FERRY_WORKER_H
#define FERRY_WORKER_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "accesslog.h"
#include "affinity.h"
#include "balancer.h"
#include "inbound.h"
#include "latency.h"
#include "metrics.h"
#include "runtime.h"
#include "sbuf.h"

struct server;
struct upconn;
struct client;
struct h1_req;
struct h2conn;
struct h2up;
struct exporter;

/* A service endpoint (one address) as this worker sees it. Endpoints come
 * and go with DNS; one that goes is retired and freed once nothing uses
 * it (no connection, no attempt, no set of an older config). */
struct endpoint {
	struct sockaddr_storage sa;
	socklen_t salen;
	char addr_text[80];		/* "127.0.0.1:5000", for messages */
	char host[256];			/* for SNI and verification: the name it came from */
	bool host_is_ip;
	uint32_t weight;		/* SRV weight, else 1 */
	struct upconn *idle;		/* idle pooled connections, newest first */
	uint32_t n_idle, n_active;
	uint64_t opened;		/* connections opened, ever */
	SSL_SESSION *session;		/* for resumption, owned */
	struct ep_runtime *rt;		/* shared by all workers; NULL inbound */
	struct ep_share *share;		/* this worker's share of rt's gauges */
	/* its outlier state and the group that holds it (and counts it
	 * against the cap): those of the last set that named it. A request
	 * records in that group, never in a newer set's, where the endpoint
	 * may not be. NULL inbound. */
	struct outlier *outlier;
	struct outlier_group *outliers;
	uint32_t in_flight;		/* attempts on it now, this worker */
	uint32_t held;			/* exchanges waiting on it (attempt.c) */
	double ewma_ms;			/* latency to the response head; failures
					   as penalties (ewma_failure) */
	int64_t ewma_last_ms;
	struct lb_backoff backoff;	/* after failed connects, this worker */
	bool retired;			/* gone from the set: pools nothing */
	bool speaks_h2;			/* chose h2 by ALPN (protocol auto) */
	struct endpoint *next_retired;
};

/* Per-service runtime state in one worker. */
struct svc_state {
	const struct conf_service *conf;
	struct endpoint **eps;
	size_t n_eps;
	uint32_t rr;			/* round robin cursor */
	struct svc_runtime *rt;		/* shared by all workers; NULL inbound */
	struct latency lat;		/* to the response head, for hedging */
};

/* A service's endpoint set, as discovery publishes it to every worker. */
struct ep_spec {
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[80];
	char host[256];			/* configured host (name or IP literal) */
	bool host_is_ip;
	uint32_t weight;		/* SRV weight, else 1 */
	struct ep_runtime *rt;
	struct outlier *outlier;
};

struct ep_set {
	size_t service;			/* index in CONF's services */
	const struct config *conf;	/* the snapshot that index refers to */
	struct outlier_group *outliers;
	size_t n;
	struct ep_spec items[];
};

enum listener_kind {
	LK_OUTBOUND,			/* routes by target / Host */
	LK_SERVICE,			/* a service's own listen port */
	LK_INBOUND,			/* TLS from peers to the local app */
};

struct conn_cap;

/* A listening socket (listener.c). W, kind and service are the proxy's;
 * the admin listener has W NULL and its own ACCEPT. */
struct listener {
	struct worker *w;
	enum listener_kind kind;
	const struct conf_listener *conf;
	size_t service;			/* LK_SERVICE: index in config */
	int fd;
	struct event *ev;
	struct event *ev_resume;	/* ends a pause for want of descriptors; a
					   waiter at the cap looks again (listener.c) */
	/* takes each accepted connection; counts it with
	 * listener_client_add() and calls listener_client_gone() when it
	 * ends */
	void (*accept)(struct listener *l, int fd, const struct sockaddr *peer,
	    socklen_t len);
	void *arg;			/* for ACCEPT */
	uint32_t n_clients;
	/* max_connections holds for the address, whichever worker serves a
	 * connection: the count is shared with the twins (listener.c) */
	struct conn_cap *cap;
	/* handed to a sibling and not yet settled there (listener.c): keeps
	 * a closed listener from being freed under the hand-off */
	_Atomic uint32_t n_away;
	bool paused;
	bool at_cap;			/* among its count's waiters (listener.c) */
	/* its idle HTTP/1 connections, oldest first, and the timer at the
	 * oldest's idle_timeout (h1_down.c; the timer made when first needed) */
	struct client *idle_first, *idle_last;
	struct event *ev_idle;
	struct sockaddr_storage local;	/* bound address: its twins on siblings share it */
	struct listener *next;
};

/* What one config snapshot means to a worker. A request runs on the
 * generation current when it began; the old one goes when its last
 * client does (SPEC §10: in-flight requests finish on their config). */
struct generation {
	struct config *conf;		/* a reference */
	struct svc_state *svcs;		/* one per conf->services */
	size_t n_svcs;
	struct svc_state inbound;	/* the local app, behind the inbound listener */
	struct conf_service inbound_conf;	/* what the session needs of it */
	struct key_macs inbound_keys;
	uint32_t refs;			/* clients on it, and 1 while current;
					   at 0, freed at the turn's end */
	struct generation *next_old;
};

/* A new snapshot for the workers: its services' shared state (looked up
 * on the main thread) and their first endpoint sets. */
struct swap {
	struct config *conf;		/* a reference, for the worker */
	struct svc_runtime **rts;	/* one per conf->services */
	struct ep_set **sets;
	size_t n_sets;
};

/* What a worker gets from its owner at worker_init: the process-wide
 * state it shares and its sibling workers. It calls nothing above it. */
struct worker_deps {
	struct runtime *rt;
	struct metrics *metrics;
	struct accesslog *alog;		/* NULL: the access log is off */
	struct worker *workers;		/* all of them, this one included */
	uint32_t n_workers;
};

/* Work put off to the end of the loop's turn, run once however often it
 * is asked for: an HTTP/2 session flushes there, so the frames of every
 * stream that became ready this turn leave in one write. The owner of D
 * cancels it before freeing D. */
struct deferred {
	struct deferred *next, *prev;
	void (*run)(struct deferred *d);
	bool queued;
};

#define WORKER_LATER_MAX 64

struct worker {
	int id;
	struct runtime *rt;		/* shared: breakers, buckets, health */
	struct worker *siblings;	/* every worker, this one included */
	uint32_t n_siblings;
	struct event_base *base;
	pthread_t thread;
	struct generation *gen;		/* current */
	struct generation *old;		/* earlier ones still in use */
	struct deferred gen_reap;	/* frees those let go this turn */
	struct listener *listeners;
	struct sbuf scratch;		/* downstream codec: heads, rechunked bodies */
	struct client *scratch_holder;	/* its response head waits in scratch */
	struct deferred head_flush;	/* writes it at the latest at turn's end */
	struct sbuf scratch_up;		/* upstream codec: unframed bodies */
	struct metrics_shard *ms;	/* this worker's counters */
	struct accesslog_buf *alog;	/* NULL when the access log is off */
	struct exporter *exporter;	/* spans to the OTLP collector (SPEC §13) */
	struct lb_candidate *cands;	/* balancer input, as many as the most endpoints */
	size_t n_cands;
	struct endpoint *retired;	/* gone from DNS, still in use */
	struct event *ev_sweep;		/* pool expiry */
	struct event *ev_mail;
	struct deferred *defer_head, *defer_tail;
	/* frees worker_free_later could not schedule (no memory for the
	 * event): the next sweep runs them */
	struct {
		event_callback_fn fn;
		void *arg;
	} later[WORKER_LATER_MAX];
	uint32_t n_later;
	int mail_fd;			/* eventfd: wakes the loop for mail */
	pthread_mutex_t mail_lock;
	struct mail *mail;
	_Atomic uint32_t n_clients;
	_Atomic uint32_t n_incoming;	/* connections siblings handed it, not yet taken */
	_Atomic bool cap_recheck_due;	/* a sibling freed a place (listener.c) */
	/* its loop is over: the turns that close its connections still run
	 * mail and poll its listeners, but a connection taken or handed over
	 * now would open after they closed (and, in worker_free, settle on a
	 * listener freed already): listeners accept no more and
	 * worker_post_owning's mail is dropped instead */
	bool ended;
	_Atomic uint32_t conns_outbound;	/* downstream_connections gauge */
	_Atomic uint32_t conns_inbound;
	struct client *clients;		/* every open HTTP/1 downstream connection */
	struct h1_req *h1_spares;	/* their request state, kept for reuse (h1_down.c) */
	uint32_t n_h1_spares;
	struct h2conn *h2conns;		/* every HTTP/2 one */
	struct h2up *h2ups;		/* HTTP/2 connections to endpoints */
	size_t h2up_grown;		/* their streams' windows past the first
					   (h2_up.c: stream_taken) */
	_Atomic int64_t heartbeat_ms;	/* loop progress, for the watchdog */
	bool draining;
	bool inbound_closed;		/* by the drain: a reload opens none again */
	bool made_batch;		/* SCHED_BATCH set by apply_scheduling() */
	cpu_set_t allowed;		/* the thread's CPUs as it started */
	int bound_cpu;			/* by apply_affinity(); -1: not bound */
	struct affinity_watch placement;	/* what it waits while bound */
	struct affinity_work work;	/* what it began, for the watch */
	int schedstat_fd;		/* its thread's, or -1 */
};

/* Arms timer EV to fire at AT_MS (clock_now_ms() time; past means now). */
static inline void
timer_at(struct event *ev, int64_t at_ms, int64_t now_ms)
{
	int64_t d = at_ms > now_ms ? at_ms - now_ms : 0;
	struct timeval tv = { (time_t)(d / 1000), (suseconds_t)(d % 1000 * 1000) };

	event_add(ev, &tv);
}

/* Messages from the main thread, run on the worker's loop. */
typedef void (*mail_fn)(struct worker *w, void *arg);
/* False when out of memory: ARG was not posted. */
bool worker_post(struct worker *w, mail_fn fn, void *arg);
/* DROP(ARG) instead of FN if W's loop has ended when the mail comes, or
 * W is freed before: for an ARG that holds a resource (a descriptor). */
bool worker_post_owning(struct worker *w, mail_fn fn, void (*drop)(void *arg), void *arg);
/* A message made before a change is committed, so that handing it over
 * after cannot fail: NULL when out of memory. worker_mail_post hands it
 * to W, which frees it once run; worker_mail_free frees one never posted
 * (not its ARG). */
struct mail *worker_mail_new(mail_fn fn, void (*drop)(void *arg), void *arg);
void worker_mail_post(struct worker *w, struct mail *m);
void worker_mail_free(struct mail *m);

int worker_init(struct worker *w, const struct worker_deps *deps, int id,
    struct config *conf);
/* Installs a new snapshot (worker thread). Takes SW's config reference. */
void worker_swap(struct worker *w, struct swap *sw);
struct generation *gen_ref(struct generation *g);
void gen_unref(struct worker *w, struct generation *g);
int worker_start(struct worker *w);
void worker_stop(struct worker *w);	/* ask the loop to end */
void worker_join(struct worker *w);
void worker_free(struct worker *w);

/* One turn of W's loop (event_base_loop with FLAGS), then what its
 * callbacks deferred: the worker's loop and whatever drives it in its
 * place (a fuzz harness) turn it only through here. */
int worker_turn(struct worker *w, int flags);
void worker_defer(struct worker *w, struct deferred *d);
void worker_defer_cancel(struct worker *w, struct deferred *d);
/* FN(-1, EV_TIMEOUT, ARG) at the next turn of W's loop, off the caller's
 * stack (a connection's free); without memory for that, at the next
 * sweep, or as the worker ends. */
void worker_free_later(struct worker *w, event_callback_fn fn, void *arg);

/* Closes one idle pooled connection to EP, if this worker has one. */
void worker_release_idle(struct worker *w, struct ep_runtime *ep);
/* Asks every other worker to do so (a request of FROM waits at
 * pool.max_per_endpoint). */
void worker_release_idle_elsewhere(struct worker *from, struct ep_runtime *ep);
/* Replaces a service's endpoints; worker thread, or before it starts. */
void worker_set_endpoints(struct worker *w, const struct ep_set *set);
/* A copy of SET that holds what it names (runtime.h), to post to a worker;
 * main thread. ep_set_free lets go, on any thread. */
struct ep_set *ep_set_copy(const struct ep_set *set);
void ep_set_free(struct ep_set *set);

/* Draws the via tokens; once, before workers start. */
void worker_via_init(void);
/* The process-wide via tokens, "1.1 ferry-XXXXXXXX-out" / "-in". */
const char *via_token_out(void);
const char *via_token_in(void);

#endif
