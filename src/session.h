/*
 * The proxy session, shared by its two halves: the downstream side
 * (downstream.c: the app's or a peer's connection, request parsing,
 * timers) and the upstream side (upstream.c: attempts, pools, relaying
 * the response). One client owns one exchange at a time.
 */
#ifndef FERRY_SESSION_H
#define FERRY_SESSION_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "buf.h"
#include "clock.h"
#include "conn.h"
#include "errors.h"
#include "headers.h"
#include "http1.h"
#include "ids.h"
#include "inbound.h"
#include "pool.h"
#include "sbuf.h"
#include "worker.h"

#define CLIENT_BUF_MAX (HTTP_MAX_HEAD + 16384)
#define UPSTREAM_BUF_MAX (HTTP_MAX_HEAD + 16384)
#define LINGER_MS 1000

enum client_state {
	CL_IDLE,	/* waiting for (the rest of) a request head */
	CL_BODY,	/* forwarding the request body upstream */
	CL_WAIT,	/* request sent: waiting for or relaying the response */
	CL_TUNNEL,	/* after 101: bytes both ways until one side closes */
	CL_CLOSING,	/* final bytes queued: flush, then close */
	CL_LINGER,	/* flushed and shut down: drain input briefly, then close */
};

/* One request and its upstream attempt. Kept apart from the connection,
 * so an HTTP/2 stream can own one too. */
struct exchange {
	struct client *cl;
	struct upconn *up;
	struct svc_state *svc;
	struct endpoint *ep;
	int64_t start_ms;
	int64_t start_us;
	int64_t start_wall_ms;		/* realtime, for the access log */
	int64_t head_us;		/* to the response head (0: none yet) */
	int ferr;			/* ferry's own error answered, or -1 */
	const char *cut;		/* why a started response was cut */
	bool accounted;			/* metrics and access log written */
	int64_t deadline_ms;		/* request timeout, until the head */
	int64_t try_deadline_ms;	/* this attempt, until the head */
	int64_t connect_deadline_ms;	/* 0 once connected */
	int64_t last_io_ms;		/* body/tunnel activity, after the head */
	uint32_t attempts;
	uint32_t retries;
	bool attempt_open;		/* its outcome is not recorded yet */
	int64_t attempt_start_ms;
	int64_t retry_at_ms;		/* backoff: the next attempt starts then */
	int64_t pool_wait_until_ms;	/* waiting for a pooled connection */
	int64_t pool_asked_ms;		/* other workers asked to free one */
	const struct endpoint *avoid;	/* endpoint of the failed attempt */
	enum breaker_verdict verdict;	/* admission by the circuit breaker */
	struct breaker *entered;	/* counted in its max_concurrent */
	bool http10;
	bool head_method;
	bool idempotent;
	bool keep_alive;		/* the client's side allows reuse */
	bool upgrade;
	bool req_done;			/* the whole request went upstream */
	bool resp_head;			/* response head sent to the client */
	bool replayable;		/* reqhead holds the whole request so far */
	bool resent;			/* already re-sent once after a stale reuse */
	uint8_t interims;		/* 1xx responses seen (bounded) */
	bool dechunk;
	bool close_after;		/* close the client after this response */
	int64_t up_keepalive_ms;	/* upstream's Keep-Alive: timeout */
	uint32_t status;
	uint64_t bytes_in, bytes_out;
	char corr[129];
	char rid[129];
	char tp[TRACEPARENT_LEN + 1];	/* sent upstream (the app's or new) */
	size_t tp_len;
	struct request_ids ids;
};

struct client {
	struct worker *w;
	struct listener *lis;
	struct conn *c;
	struct generation *gen;		/* the snapshot of the current request */
	enum client_state state;
	bool closed;
	bool read_paused;		/* by back-pressure or a full buffer */
	struct buf in;
	uint32_t parsed;		/* head bytes already fed to the parser */
	int64_t head_start_ms;		/* first byte of the current head, 0 none */
	int64_t idle_since_ms;
	int64_t linger_until_ms;
	struct http_parser parser;
	struct http_head head;
	struct sbuf reqhead;		/* request for upstream (head + replayable body) */
	struct sbuf logline;		/* method and path, for the access log */
	size_t reqhead_len;		/* bytes of reqhead that are the head */
	struct sbuf *body_dst;		/* where the parser puts a chunked body */
	bool in_process;		/* client_process is on the stack */
	struct event *timer;
	struct exchange x;
	struct client *next, *prev;	/* the worker's list */
	char peer[INET6_ADDRSTRLEN + 8];	/* address */
	bool has_identity;			/* inbound: peer_id is set */
	char peer_id[PEER_ID_MAX];		/* inbound: verified identity */
};

/* downstream.c */
/* False when the write failed: the client is closed and its exchange is
 * over (x->up released). The one rule of every write-then-continue path:
 * on false, return at once and touch nothing of the exchange. */
bool client_write(struct client *cl, const void *p, size_t n);
/* The same for the last bytes of a response, counted before they leave. */
bool client_write_last(struct client *cl, const void *p, size_t n);
void client_close(struct client *cl, const char *reason);
void client_arm_timer(struct client *cl);
void pause_client(struct client *cl);
void resume_client(struct client *cl);
unsigned keepalive_secs(const struct client *cl);
void send_error(struct client *cl, enum ferry_error e, const char *message,
    unsigned retry_after, bool close);
void exchange_done(struct client *cl);

/* The response head leaves now: head_us, at least 1 (0 means none, and
 * one of ferry's own errors can be built within a microsecond). */
static inline void
exchange_head_sent(struct exchange *x)
{
	int64_t us = clock_now_us() - x->start_us;

	x->head_us = us > 0 ? us : 1;
}

/* metrics.c ids: the service's, the local app's inbound, or none */
int exchange_metrics_id(const struct exchange *x);

/* upstream.c */
void attempt_start(struct exchange *x);
void attempt_failed_conn(struct exchange *x);
/* The connect or per-try deadline passed. */
void attempt_timed_out(struct exchange *x, int64_t now);
void exchange_release_upstream(struct exchange *x, bool reusable);
/* An attempt ends without an outcome (the client went away). */
void attempt_drop(struct exchange *x);

#endif
