/*
 * A worker: one thread, one event loop, its own listening sockets
 * (SO_REUSEPORT) and its own upstream pools. A request lives and dies on
 * one worker, so the request path takes no lock. The main thread talks to
 * workers only through their mailbox.
 */
#ifndef FERRY_WORKER_H
#define FERRY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "balancer.h"
#include "inbound.h"
#include "runtime.h"
#include "sbuf.h"

struct server;
struct upconn;
struct client;

/* A service endpoint as this worker sees it. */
struct endpoint {
	const struct conf_addr *conf;
	struct sockaddr_storage sa;
	socklen_t salen;
	bool resolved;
	char addr_text[64];		/* "127.0.0.1:5000", for messages */
	struct upconn *idle;		/* idle pooled connections, newest first */
	uint32_t n_idle, n_active;
	uint64_t opened;		/* connections opened, ever */
	SSL_SESSION *session;		/* for resumption, owned */
	struct ep_runtime *rt;		/* shared by all workers; NULL inbound */
	uint32_t in_flight;		/* attempts on it now, this worker */
	double ewma_ms;			/* latency to the response head */
	int64_t ewma_last_ms;
};

/* Per-service runtime state in one worker. */
struct svc_state {
	const struct conf_service *conf;
	struct endpoint *eps;
	size_t n_eps;
	uint32_t rr;			/* round robin cursor */
	struct svc_runtime *rt;		/* shared by all workers; NULL inbound */
};

enum listener_kind {
	LK_OUTBOUND,			/* routes by target / Host */
	LK_SERVICE,			/* a service's own listen port */
	LK_INBOUND,			/* TLS from peers to the local app */
};

struct listener {
	struct worker *w;
	enum listener_kind kind;
	const struct conf_listener *conf;
	size_t service;			/* LK_SERVICE: index in config */
	int fd;
	struct event *ev;
	_Atomic uint32_t n_clients;
	struct client *clients;		/* every open downstream connection */
	bool paused;
	struct listener *next;
};

struct worker {
	int id;
	struct server *srv;
	struct event_base *base;
	pthread_t thread;
	struct config *conf;		/* snapshot in force (a reference) */
	struct svc_state *svcs;		/* one per conf->services */
	size_t n_svcs;
	struct svc_state inbound;	/* the local app, behind the inbound listener */
	struct conf_service inbound_conf;	/* what the session needs of it */
	struct key_macs inbound_keys;
	struct listener *listeners;
	struct sbuf scratch;		/* response heads */
	struct lb_candidate *cands;	/* balancer input, as many as the most endpoints */
	struct event *ev_sweep;		/* pool expiry */
	struct event *ev_mail;
	int mail_fd;			/* eventfd: wakes the loop for mail */
	pthread_mutex_t mail_lock;
	struct mail *mail;
	_Atomic uint32_t n_clients;
	struct client *clients;		/* every open downstream connection */
	_Atomic int64_t heartbeat_ms;	/* loop progress, for the watchdog */
	bool draining;
};

/* Messages from the main thread, run on the worker's loop. */
typedef void (*mail_fn)(struct worker *w, void *arg);
void worker_post(struct worker *w, mail_fn fn, void *arg);

int worker_init(struct worker *w, struct server *srv, int id, struct config *conf);
int worker_start(struct worker *w);
void worker_stop(struct worker *w);	/* ask the loop to end */
void worker_join(struct worker *w);
void worker_free(struct worker *w);

/* Draws the via tokens; once, before workers start. */
void worker_via_init(void);
/* The process-wide via tokens, "1.1 ferry-XXXXXXXX-out" / "-in". */
const char *via_token_out(void);
const char *via_token_in(void);

#endif
