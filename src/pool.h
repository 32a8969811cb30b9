/*
 * Upstream connections and the per-worker, per-endpoint pools of idle ones.
 * An idle connection keeps its read interest, so an upstream close is seen
 * and the connection dropped at once; each is stamped with the moment it
 * must be closed (idle_timeout, or a second before the upstream's own
 * Keep-Alive timeout), checked when it is taken and by a periodic sweep.
 */
#ifndef FERRY_POOL_H
#define FERRY_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "conn.h"
#include "http1.h"
#include "worker.h"

struct upconn {
	struct conn *c;
	struct endpoint *ep;
	struct worker *w;
	struct upconn *next, *prev;	/* idle list */
	bool idle;
	bool reused;			/* served a request before this one */
	int64_t born_ms;
	int64_t expire_ms;		/* idle: close at this time */
	uint32_t requests;
	uint64_t sent_before;		/* conn_bytes_written when this request began */
	const void *session_saved;	/* the SSL_SESSION last copied to ep */
	struct buf in;
	uint32_t parsed;		/* head bytes already parsed */
	bool read_eof;			/* a tunnel's upstream half-closed: no
					   more reads (its EOF would report
					   readable forever) */
	struct http_parser parser;
	struct http_head head;
};

/* An idle connection for EP, or NULL. */
struct upconn *pool_checkout(struct endpoint *ep, int64_t now);
/* A new connection (connect and TLS start now; CB reports the outcome). */
struct upconn *pool_connect(struct worker *w, struct svc_state *s, struct endpoint *ep,
    conn_cb cb, void *arg, int64_t now);
/* Back to the idle list under PC (the pool settings in force: a pooled
 * connection outlives the config it was opened under). KEEPALIVE_MS is
 * the upstream's advertised Keep-Alive timeout (0 = none). Closes it
 * instead when it must retire. */
void pool_checkin(struct upconn *u, const struct conf_pool *pc, int64_t now,
    int64_t keepalive_ms);
/* Close and free (active or idle). */
void pool_discard(struct upconn *u);
/* Other workers hold idle connections to EP's address (EP has none). */
bool pool_idle_elsewhere(const struct endpoint *ep);
/* Drop idle connections past their time. */
void pool_sweep(struct svc_state *s, int64_t now);
/* Drop every idle connection of S (reload, shutdown). */
void pool_close_idle(struct svc_state *s);

#endif
