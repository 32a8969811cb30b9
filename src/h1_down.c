/*
 * The HTTP/1.x downstream codec: the app's connection (outbound, a
 * service's own port) or a peer's TLS connection (inbound). It parses
 * requests, one exchange at a time, pipelined ones in turn, and writes
 * what proxy.c sends back through its ops (exchange.h). It knows the
 * client, never the upstream connection.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "conn.h"
#include "errors.h"
#include "exchange.h"
#include "h2_down.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "slab.h"
#include "tls_ctx.h"

#define CLIENT_BUF_MAX (HTTP_MAX_HEAD_ALL + 16384)
#define LINGER_MS 1000

/* every client connection's, for its whole life (slab.h says why) */
static struct slab clients = SLAB_INITIALIZER;

enum client_state {
	CL_IDLE,	/* waiting for (the rest of) a request head */
	CL_BODY,	/* forwarding the request body upstream */
	CL_WAIT,	/* request sent: waiting for or relaying the response */
	CL_TUNNEL,	/* after 101: bytes both ways until one side closes */
	CL_CLOSING,	/* final bytes queued: flush, then close */
	CL_LINGER,	/* flushed and shut down: drain input briefly, then close */
};

/* What a connection holds only while a request is on it, from the
 * request's first byte to its end: the parser, the head it fills, the
 * exchange (with its buffers), about 2.2 KiB before the buffers. An idle
 * keep-alive connection holds none of it, only what identifies it (there
 * may be thousands); the worker keeps a few spare ones, so the request
 * path allocates nothing. */
struct h1_req {
	struct client *cl;		/* whose it is now */
	struct sbuf *body_dst;		/* where the parser puts a chunked body */
	struct h1_req *next_spare;	/* the worker's spares */
	/* the connection's head, linger and handshake deadlines; an idle
	 * one's is its listener's idle list. The exchange has its own. */
	struct event *timer;
	struct deferred idle;		/* after its response: let go, at turn's end */
	int64_t head_start_ms;		/* first byte of the current head, 0 none */
	int64_t linger_until_ms;	/* closing: the end of the linger, 0 none yet */
	uint32_t parsed;		/* head bytes already fed to the parser */
	struct http_parser parser;
	struct http_head head;
	struct exchange x;
};

#define H1_SPARES_MAX 16		/* per worker: what a burst of requests reuses */
#define H1_SPARE_BUF_MAX (64 * 1024)	/* a spare keeps no more of a big request */

struct client {
	struct worker *w;
	struct listener *lis;
	struct conn *c;
	struct generation *gen;		/* the snapshot of the current request */
	struct h1_req *rq;		/* while a request is on it, else NULL */
	struct client *next, *prev;	/* the worker's list */
	/* without RQ (idle): on the listener's idle list, oldest first */
	struct client *idle_next, *idle_prev;
	char *peer_id;			/* inbound: verified identity (owned), or NULL */
	struct buf in;
	int64_t idle_since_ms;
	enum client_state state;
	bool closed;
	bool read_paused;		/* by back-pressure or a full buffer */
	bool read_eof;			/* its FIN came in a tunnel: never read
					   again (the EOF would report readable
					   forever); the other way runs on */
	bool in_process;		/* client_process is on the stack */
	bool head_pending;		/* w->scratch holds our response head */
	bool spoke;			/* a request began: too late for h2c */
	bool on_idle_list;
	char peer[INET6_ADDRSTRLEN];	/* address */
};

static void client_process(struct client *cl);
static void client_process_loop(struct client *cl);
static void client_arm_timer(struct client *cl);

static struct client *
client_of(const struct exchange *x)
{
	return ((const struct h1_req *)((const char *)x - offsetof(struct h1_req, x)))->cl;
}

/* ---------------------------------------------------- connection ---- */

static unsigned
keepalive_secs(const struct client *cl)
{
	int64_t t = cl->lis->conf->idle_timeout / 1000;

	return t > 0 ? (unsigned)t : 1;
}

static void
pause_client(struct client *cl)
{
	if (!cl->read_paused && !cl->closed) {
		conn_pause_read(cl->c);
		cl->read_paused = true;
	}
}

static void
resume_client(struct client *cl)
{
	if (cl->read_paused && !cl->closed && !cl->read_eof) {
		conn_resume_read(cl->c);
		cl->read_paused = false;
		conn_kick_read(cl->c);
	}
}

static void
client_unlink(struct client *cl)
{
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		cl->w->clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
}

static void body_out(void *arg, const char *p, size_t n);
static void req_timeout(evutil_socket_t fd, short what, void *arg);
static void client_timeout(struct client *cl);
static void client_teardown(struct client *cl, const char *reason);
static const struct down_ops h1_down_ops;

/* ------------------------------------------------------ idle list ---- */

/* Idle connections wait on their listener's list in the order they went
 * idle, which is the order of their deadlines (one idle_timeout for the
 * list): one timer per listener, at the oldest's deadline, instead of
 * one per connection. */
static void
idle_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	int64_t now = clock_now_ms();
	struct client *cl;

	(void)fd;
	(void)what;
	while ((cl = l->idle_first) != NULL && now >= cl->idle_since_ms + l->conf->idle_timeout)
		client_teardown(cl, "idle timeout");
	if (cl != NULL)
		timer_at(l->ev_idle, cl->idle_since_ms + l->conf->idle_timeout, now);
}

/* False only when out of memory for the listener's timer. */
static bool
idle_link(struct client *cl)
{
	struct listener *l = cl->lis;

	if (cl->on_idle_list)
		return true;
	if (l->ev_idle == NULL && (l->ev_idle = evtimer_new(cl->w->base, idle_sweep, l)) == NULL)
		return false;
	cl->idle_next = NULL;
	cl->idle_prev = l->idle_last;
	if (l->idle_last)
		l->idle_last->idle_next = cl;
	else
		l->idle_first = cl;
	l->idle_last = cl;
	cl->on_idle_list = true;
	/* a pending sweep is due no later than this one's deadline */
	if (!event_pending(l->ev_idle, EV_TIMEOUT, NULL))
		timer_at(l->ev_idle, cl->idle_since_ms + l->conf->idle_timeout, clock_now_ms());
	return true;
}

static void
idle_unlink(struct client *cl)
{
	struct listener *l = cl->lis;

	if (!cl->on_idle_list)
		return;
	if (cl->idle_prev)
		cl->idle_prev->idle_next = cl->idle_next;
	else
		l->idle_first = cl->idle_next;
	if (cl->idle_next)
		cl->idle_next->idle_prev = cl->idle_prev;
	else
		l->idle_last = cl->idle_prev;
	cl->on_idle_list = false;
}

/* An open tunnel whose peer the reloaded config no longer trusts ends
 * now (WHY): no byte of the peer's reaches the app after the reload is in
 * force here. */
static void
tunnel_distrusted(struct client *cl, const char *why)
{
	static struct log_limit limit;
	struct sbuf id = { 0 };

	/* a certificate's identity may hold spaces and quotes: escaped, it
	 * cannot forge a key=value of the line */
	if (cl->peer_id != NULL)
		json_escape(&id, cl->peer_id, strlen(cl->peer_id));
	else
		sbuf_add(&id, "-", 1);
	log_limited(&limit, LOG_INFO, "inbound tunnel ended peer=%s identity=\"%.*s\" "
	    "cause=\"%s\"", cl->peer, (int)id.len, id.p ? id.p : "", why);
	sbuf_free(&id);
	proxy_end(&cl->rq->x, END_PEER_UNTRUSTED);
}

/* Why the tunnel of CL no longer stands under IN, the reloaded config
 * (SAME_CA: its client_ca bytes did not change), or NULL. */
static const char *
tunnel_distrust_reason(struct client *cl, const struct conf_inbound *in, bool same_ca)
{
	if (cl->peer_id == NULL || !inbound_peer_allowed(in, cl->peer_id))
		return "its identity is no longer in allowed_peers";
	if (!proxy_tunnel_key_stands(&cl->rq->x))
		return "its x-service-auth is no longer among the accepted keys";
	if (!same_ca && !tls_peer_trusted(conn_ssl(cl->c), in->ctx))
		return "the reloaded client_ca does not trust its certificate";
	return NULL;
}

/* A reload changed the inbound client_ca: connections verified under the
 * old one carry no more requests (admit_inbound refuses them). Those
 * between requests close now, those with one in flight once it is done,
 * so that a peer still trusted connects again instead of being refused.
 * A tunnel cannot move to a new connection: it runs on while the new
 * client_ca still trusts its peer (a CA added beside the old one), and
 * ends now if not; so does one whose peer allowed_peers no longer names,
 * or whose key the inbound keys no longer hold (a request would be
 * refused per request, a tunnel makes none). */
static void
inbound_trust_reconf(struct listener *l)
{
	const struct conf_inbound *in = &l->w->gen->conf->inbound;
	struct client *cl, *next;
	const char *why;
	bool same_ca;

	if (l->kind != LK_INBOUND || !in->enabled)
		return;
	for (cl = l->w->clients; cl != NULL; cl = next) {
		next = cl->next;
		if (cl->lis != l || cl->closed)
			continue;
		same_ca = tls_same_client_ca(SSL_get_SSL_CTX(conn_ssl(cl->c)), in->ctx);
		if (cl->state == CL_TUNNEL && cl->rq->x.live &&
		    (why = tunnel_distrust_reason(cl, in, same_ca)) != NULL) {
			tunnel_distrusted(cl, why);
			continue;
		}
		if (same_ca)
			continue;
		if (cl->rq != NULL && cl->rq->x.live)
			cl->rq->x.close_after = true;
		else if (cl->state == CL_IDLE)
			client_teardown(cl, "client_ca changed");
	}
	h2_down_trust_reconf(l);
}

void
proxy_listener_reconf(struct listener *l)
{
	inbound_trust_reconf(l);
	/* an idle connection's next request runs on the new config anyway:
	 * it lets go of the old one now, which else lived (with every
	 * endpoint its sets name) until that request or idle_timeout */
	for (struct client *cl = l->idle_first; cl != NULL; cl = cl->idle_next)
		if (cl->gen != l->w->gen) {
			gen_unref(l->w, cl->gen);
			cl->gen = gen_ref(l->w->gen);
		}
	/* idle_timeout may have changed: the oldest's deadline moved */
	if (l->ev_idle != NULL && l->idle_first != NULL)
		timer_at(l->ev_idle, l->idle_first->idle_since_ms + l->conf->idle_timeout,
		    clock_now_ms());
}

static void
req_free(struct h1_req *rq)
{
	if (rq->timer)
		event_free(rq->timer);
	http_parser_free(&rq->parser);
	proxy_exchange_free(&rq->x);
	free(rq);
}

/* The hand-back h1_finish() put off to the end of the turn, unless the
 * connection moved on meanwhile (its next request came in this turn:
 * that one's state, or its close, rules now). */
static void
req_idle_deferred(struct deferred *d)
{
	struct h1_req *rq = (struct h1_req *)((char *)d - offsetof(struct h1_req, idle));
	struct client *cl = rq->cl;

	if (cl->state == CL_IDLE && rq->head_start_ms == 0 && buf_len(&cl->in) == 0)
		client_timeout(cl);
}

/* Neither the connection's timer nor the idle hand-back runs any more. */
static void
req_timers_stop(struct worker *w, struct h1_req *rq)
{
	event_del(rq->timer);
	worker_defer_cancel(w, &rq->idle);
}

/* A request's first byte arrived: the connection takes its request state,
 * a spare one of the worker's when there is one. False when out of memory. */
static bool
req_take(struct client *cl)
{
	struct worker *w = cl->w;
	struct h1_req *rq = w->h1_spares;
	struct exchange *x;

	if (rq != NULL) {
		w->h1_spares = rq->next_spare;
		w->n_h1_spares--;
	} else {
		if ((rq = calloc(1, sizeof(*rq))) == NULL)
			return false;
		if ((rq->timer = evtimer_new(w->base, req_timeout, rq)) == NULL ||
		    proxy_exchange_init(&rq->x, w, &h1_down_ops) != 0) {
			req_free(rq);
			return false;
		}
		rq->idle.run = req_idle_deferred;
		http_parser_init(&rq->parser, false, &rq->head);
		rq->parser.on_data = body_out;
		rq->parser.arg = rq;
		rq->parser.keep_trailer = headers_trailer_allowed;
	}
	rq->cl = cl;
	x = &rq->x;
	x->gen = cl->gen;
	x->inbound = cl->lis->kind == LK_INBOUND;
	x->lis = cl->lis->conf;
	x->lis_service = listener_service_now(cl->lis);
	x->peer = cl->peer;
	x->peer_id = cl->peer_id;
	x->peer_ctx = x->inbound ? SSL_get_SSL_CTX(conn_ssl(cl->c)) : NULL;
	rq->head_start_ms = 0;
	rq->linger_until_ms = 0;
	rq->parsed = 0;
	cl->rq = rq;
	idle_unlink(cl);
	return true;
}

/* The connection lets go of its request state, parser reset and no
 * exchange live: a spare for the worker, or freed beyond a few (so a
 * burst that ended leaves no memory behind). */
static void
req_give_back(struct client *cl)
{
	struct worker *w = cl->w;
	struct h1_req *rq = cl->rq;

	cl->rq = NULL;
	req_timers_stop(w, rq);
	if (w->n_h1_spares >= H1_SPARES_MAX) {
		req_free(rq);
		return;
	}
	/* one huge request must not pin its buffers in a spare */
	if (rq->x.req.cap > H1_SPARE_BUF_MAX)
		sbuf_free(&rq->x.req);
	rq->cl = NULL;
	rq->next_spare = w->h1_spares;
	w->h1_spares = rq;
	w->n_h1_spares++;
}

static void
req_spares_free(struct worker *w)
{
	struct h1_req *rq;

	while ((rq = w->h1_spares) != NULL) {
		w->h1_spares = rq->next_spare;
		req_free(rq);
	}
	w->n_h1_spares = 0;
}

static void
client_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;

	(void)fd;
	(void)what;
	buf_drop_wiped(&cl->in);
	buf_free(&cl->in);
	if (cl->rq) {
		http_parser_reset(&cl->rq->parser);
		req_give_back(cl);
	}
	gen_unref(cl->w, cl->gen);
	free(cl->peer_id);
	slab_free(&clients, cl);
}

/* The connection goes; no exchange is live on it any more. */
static void
client_teardown(struct client *cl, const char *reason)
{
	if (cl->closed)
		return;
	log_debug("closing client %s: %s", cl->peer, reason);
	cl->closed = true;
	if (cl->rq) {
		event_del(&cl->rq->x.timer);
		cl->rq->x.timer_at_ms = 0;	/* for the next exchange on it */
		req_timers_stop(cl->w, cl->rq);
	}
	idle_unlink(cl);
	conn_free(cl->c);
	cl->c = NULL;
	cl->w->n_clients--;
	if (cl->lis->kind == LK_INBOUND)
		cl->w->conns_inbound--;
	else
		cl->w->conns_outbound--;
	listener_client_gone(cl->lis);	/* last: a sibling may take the place at once */
	client_unlink(cl);
	/* callers up the stack may still look at cl: free it next turn */
	worker_free_later(cl->w, client_free_deferred, cl);
}

/* The connection turned out to speak HTTP/2: h2_down.c takes it, with
 * what was read, its counts and its place under max_connections. */
static void
client_hand_over(struct client *cl)
{
	struct conn *c = cl->c;

	cl->closed = true;
	cl->c = NULL;
	if (cl->rq)
		req_timers_stop(cl->w, cl->rq);
	idle_unlink(cl);
	client_unlink(cl);
	h2_down_adopt(cl->lis, c, cl->peer, cl->peer_id, &cl->in);
	worker_free_later(cl->w, client_free_deferred, cl);
}

/* h2c with prior knowledge (SPEC §12): the first bytes of a connection
 * to the outbound listener or a service's port are the HTTP/2 preface.
 * True when the connection went to HTTP/2, or when the bytes so far are
 * only the start of the preface (wait for more). */
static bool
h2c_preface(struct client *cl)
{
	size_t n = buf_len(&cl->in);

	if (cl->spoke || cl->state != CL_IDLE || cl->lis->kind == LK_INBOUND)
		return false;
	if (memcmp(buf_head(&cl->in), H2_PREFACE, n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN) != 0) {
		cl->spoke = true;	/* HTTP/1.x: never asked again */
		return false;
	}
	if (n >= H2_PREFACE_LEN)
		client_hand_over(cl);
	return true;
}

/* Closes the connection; a live exchange ends first, cut for CAUSE (its
 * finish comes back here through h1_finish). */
static void
client_close(struct client *cl, enum end_cause cause, const char *reason)
{
	if (cl->closed)
		return;
	if (cl->rq && cl->rq->x.live) {
		proxy_end(&cl->rq->x, cause);
		return;
	}
	client_teardown(cl, reason);
}

/* False when the write failed: the client is closed and its exchange is
 * over. On false, return at once and touch nothing of the exchange. */
static bool
client_write2(struct client *cl, const void *a, size_t an, const void *b, size_t bn)
{
	if (cl->closed)
		return false;
	cl->rq->x.bytes_out += an + bn;
	if (conn_write2(cl->c, a, an, b, bn) != 0) {
		client_close(cl, END_CLIENT_WRITE_FAILED, "downstream write failed");
		return false;
	}
	return true;
}

static bool
client_write(struct client *cl, const void *p, size_t n)
{
	return client_write2(cl, p, n, NULL, 0);
}

/* ----------------------------------------------- the held head ---- */

/* A response head waits in the worker's scratch for the first body bytes,
 * to leave with them in one write. The scratch is every client's: the
 * head goes out alone before another client writes there, or at the end
 * of the turn when no body came with it (an HTTP/2 upstream's DATA may
 * arrive in a later read), never overwritten. */
static void
head_release(struct client *cl)
{
	struct worker *w = cl->w;

	cl->head_pending = false;
	if (w->scratch_holder == cl) {
		w->scratch_holder = NULL;
		worker_defer_cancel(w, &w->head_flush);
	}
}

static void
head_write_alone(struct client *cl)
{
	struct sbuf *out = &cl->w->scratch;

	head_release(cl);
	(void)client_write(cl, out->p, out->len);
}

static void
head_flush_deferred(struct deferred *d)
{
	struct worker *w = (struct worker *)((char *)d - offsetof(struct worker, head_flush));

	if (w->scratch_holder)
		head_write_alone(w->scratch_holder);
}

/* The scratch, for CL to write in. */
static struct sbuf *
scratch_take(struct client *cl)
{
	struct client *holder = cl->w->scratch_holder;

	if (holder != NULL && holder != cl)
		head_write_alone(holder);
	return &cl->w->scratch;
}

/* ------------------------------------------------------------ ops ---- */

static bool
h1_send_continue(struct exchange *x)
{
	return client_write(client_of(x), "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static bool
h1_send_interim(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct client *cl = client_of(x);
	struct sbuf *out = scratch_take(cl);

	if (x->http10)
		return true;	/* HTTP/1.0 has no interim responses */
	sbuf_clear(out);
	headers_build_response(out, msg, h, &(struct downstream_head_args){ .interim = true });
	if (out->oom) {
		client_close(cl, END_OUT_OF_MEMORY, "out of memory");
		return false;
	}
	return client_write(cl, out->p, out->len);
}

static bool
h1_send_head(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct client *cl = client_of(x);
	struct sbuf *out = scratch_take(cl);
	struct downstream_head_args a = {
		.ids = &x->ids,
		.keep_alive = x->keep_alive && !x->close_after && !cl->w->draining,
		.keep_alive_timeout = keepalive_secs(cl),
		/* an HTTP/1.0 client never sees Transfer-Encoding (RFC 9112
		 * 6.1), in the answer to a HEAD too, which has no body to undo */
		.dechunk = x->dechunk || (x->http10 && x->head_method),
		.upgrade = x->upgrade,
	};
	bool fits;

	if (cl->closed)
		return false;
	if (!a.keep_alive && !a.upgrade)
		x->close_after = true;
	proxy_response_rules(x, a.rules);
	a.coding = proxy_response_coding(x);
	sbuf_clear(out);
	fits = headers_build_response(out, msg, h, &a);
	if (out->oom) {
		client_close(cl, END_OUT_OF_MEMORY, "out of memory");
		return false;
	}
	if (!fits) {
		proxy_response_over_limit(x);
		return false;
	}
	/* trailers may follow: they must fit beside this head at the client
	 * (not on the hot path: chunked responses only) */
	x->resp_measured = h->chunked && !a.dechunk && !a.upgrade;
	if (x->resp_measured)
		headers_measure(out->p, out->len, &x->resp_sent);
	/* held back: it leaves with the first body bytes, in one write */
	cl->head_pending = true;
	cl->w->scratch_holder = cl;
	cl->w->head_flush.run = head_flush_deferred;
	worker_defer(cl->w, &cl->w->head_flush);
	return true;
}

/* P, after the pending head if one waits: both in one writev, or on TLS
 * joined in the scratch for one record. */
static bool
write_after_head(struct client *cl, const void *p, size_t n)
{
	struct sbuf *head = &cl->w->scratch;

	if (!cl->head_pending)
		return n == 0 ? !cl->closed : client_write(cl, p, n);
	head_release(cl);
	if (cl->closed)
		return false;
	if (!conn_is_tls(cl->c))
		return client_write2(cl, head->p, head->len, p, n);
	sbuf_add(head, p, n);
	if (head->oom)	/* in two records, then */
		return client_write2(cl, head->p, head->len, p, n);
	return client_write(cl, head->p, head->len);
}

static bool
h1_send_data(struct exchange *x, const void *p, size_t n)
{
	return write_after_head(client_of(x), p, n);
}

static bool
h1_send_last(struct exchange *x, const void *p, size_t n)
{
	struct client *cl = client_of(x);
	size_t last = n + (cl->head_pending ? cl->w->scratch.len : 0);

	if (cl->closed)
		return false;
	/* counted with its last bytes, before they can reach the client */
	x->bytes_out += last;
	proxy_account(x, END_DONE);
	x->bytes_out -= last;
	return last == 0 || write_after_head(cl, p, n);
}

static void
h1_send_error(struct exchange *x, enum ferry_error e, const char *msg,
    unsigned retry_after, bool close)
{
	struct client *cl = client_of(x);
	struct sbuf *out = scratch_take(cl);

	(void)close;	/* proxy_refuse put it in close_after */
	if (cl->closed)
		return;
	head_release(cl);
	sbuf_clear(out);
	proxy_error_response(x, out, e, msg, retry_after, !x->close_after, keepalive_secs(cl));
	if (out->oom) {
		client_close(cl, END_OUT_OF_MEMORY, "out of memory");
		return;
	}
	h1_send_last(x, out->p, out->len);
}

static bool
h1_congested(const struct exchange *x)
{
	const struct client *cl = client_of(x);

	return cl->closed || conn_pending(cl->c) > CONN_HIGH_MARK;
}

static void
h1_resume_body(struct exchange *x)
{
	struct client *cl = client_of(x);

	if (cl->state == CL_BODY || cl->state == CL_TUNNEL)
		resume_client(cl);
}

static void
h1_send_trailers(struct exchange *x, const char *msg, const struct http_head *h)
{
	/* HTTP/1.1 gets trailers in its chunked body, from the upstream codec */
	(void)x;
	(void)msg;
	(void)h;
}

static int64_t
h1_progress(struct exchange *x)
{
	return conn_progress_ms(client_of(x)->c);
}

static bool
h1_tunnel_start(struct exchange *x)
{
	struct client *cl = client_of(x);
	size_t n;

	if (!h1_send_data(x, NULL, 0))
		return false;
	cl->state = CL_TUNNEL;
	/* bytes the client sent after its upgrade request belong to the tunnel */
	if ((n = buf_len(&cl->in)) > 0) {
		x->bytes_in += n;
		if (!proxy_tunnel_up(x, buf_head(&cl->in), n))
			return false;
		buf_consume(&cl->in, n);
	}
	resume_client(cl);
	return true;
}

/* The last bytes are out: shut our side, drain theirs briefly (so a
 * reset does not destroy what they have not read yet), then close. */
static void
client_linger(struct client *cl)
{
	conn_shutdown(cl->c);
	if (cl->read_eof) {
		/* it half-closed: nothing is left to drain */
		client_teardown(cl, "closed");
		return;
	}
	cl->state = CL_LINGER;
	cl->rq->linger_until_ms = clock_now_ms() + LINGER_MS;
	resume_client(cl);
}

/* The exchange is over: the next request, or close. */
static void
h1_finish(struct exchange *x, enum end_cause cause)
{
	struct client *cl = client_of(x);

	head_release(cl);
	/* a cut closes at once; a tunnel ended for its peer's trust is
	 * ferry's decision, not a failure: closed as after a last response
	 * (what the app sent goes out, then close_notify and a FIN) */
	if (cause != END_DONE && cause != END_PEER_UNTRUSTED) {
		client_teardown(cl, end_cause_name(cause));
		return;
	}
	if (cl->closed)
		return;
	if (cause != END_DONE || x->close_after || !x->keep_alive || !x->req_done ||
	    cl->w->draining) {
		cl->state = CL_CLOSING;
		if (conn_pending(cl->c) == 0)
			client_linger(cl);
		client_arm_timer(cl);
		return;
	}
	cl->state = CL_IDLE;
	cl->rq->parsed = 0;
	cl->rq->head_start_ms = 0;
	cl->idle_since_ms = clock_now_ms();
	http_parser_reset(&cl->rq->parser);
	if (buf_len(&cl->in) == 0) {
		/* idle: at the end of this loop turn, off this stack (callers
		 * may still look at X), the connection lets go of the request
		 * state and the buffers, then arms the idle timeout */
		worker_defer(cl->w, &cl->rq->idle);
	} else {
		client_arm_timer(cl);
		/* a pipelined request is waiting: parse it here, unless the loop
		 * of client_process is below us and will (no recursion per
		 * request) */
		if (!cl->in_process)
			client_process(cl);
	}
	if (!cl->closed)
		resume_client(cl);
}

static bool
h1_tunnel_close_write(struct exchange *x)
{
	struct client *cl = client_of(x);

	if (cl->closed)
		return false;
	if (conn_close_write(cl->c) != 0) {
		client_close(cl, END_CLIENT_WRITE_FAILED, "downstream write failed");
		return false;
	}
	return true;
}

static const struct down_ops h1_down_ops = {
	.send_continue = h1_send_continue,
	.send_interim = h1_send_interim,
	.send_head = h1_send_head,
	.send_data = h1_send_data,
	.send_last = h1_send_last,
	.send_error = h1_send_error,
	.congested = h1_congested,
	.resume_body = h1_resume_body,
	.send_trailers = h1_send_trailers,
	.tunnel_start = h1_tunnel_start,
	.tunnel_close_write = h1_tunnel_close_write,
	.finish = h1_finish,
	.progress = h1_progress,
};

/* --------------------------------------------------------- timers ---- */

/* An inbound peer gets handshake_timeout from its accept to finish the TLS
 * handshake (idle_since_ms is the accept time until then): one that sends
 * nothing or half a hello must not hold a connection until idle_timeout.
 * Lowers *AT to that deadline while the handshake runs. */
static bool
handshake_overdue(const struct client *cl, int64_t *at, int64_t now)
{
	int64_t t = cl->lis->conf->handshake_timeout;

	if (cl->lis->kind != LK_INBOUND || t <= 0 || !conn_handshaking(cl->c))
		return false;
	if (at != NULL && cl->idle_since_ms + t < *at)
		*at = cl->idle_since_ms + t;
	return now >= cl->idle_since_ms + t;
}

/* Between requests with nothing buffered: the connection keeps only what
 * identifies it. */
static void
client_idle(struct client *cl)
{
	if (conn_handshaking(cl->c))
		return;		/* its deadline needs the request state's timer */
	if (cl->rq != NULL && !cl->rq->x.live)
		req_give_back(cl);
	buf_shrink_if_empty(&cl->in);
	conn_release_buffers(cl->c);
}

/* After a read's bytes were processed: when they all went on, the empty
 * read buffer goes back to the thread's spares (blocks.h) now, not when
 * the response has been sent, so a client waiting on its upstream holds
 * no 16 KiB block; its next read takes one back. A head still arriving
 * keeps its buffer. */
static void
client_read_done(struct client *cl)
{
	if (!cl->closed)
		buf_shrink_if_empty(&cl->in);
}

/* Sets the connection's timer to the earliest deadline of its state; an
 * exchange keeps its own deadlines meanwhile. */
static void
client_arm_timer(struct client *cl)
{
	int64_t now = clock_now_ms(), at;

	if (cl->closed)
		return;
	if (cl->rq == NULL) {
		/* idle, holding no request state */
		if (!idle_link(cl))
			client_teardown(cl, "out of memory");
		return;
	}
	switch (cl->state) {
	case CL_IDLE:
		at = cl->rq->head_start_ms ? cl->rq->head_start_ms + cl->lis->conf->header_read_timeout
		    : cl->idle_since_ms + cl->lis->conf->idle_timeout;
		(void)handshake_overdue(cl, &at, now);
		break;
	case CL_CLOSING:
	case CL_LINGER:
		at = cl->rq->linger_until_ms ? cl->rq->linger_until_ms : now + 5000;
		break;
	default:
		event_del(cl->rq->timer);
		return;
	}
	timer_at(cl->rq->timer, at, now);
}

static void
req_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct h1_req *rq = arg;

	(void)fd;
	(void)what;
	client_timeout(rq->cl);
}

static void
client_timeout(struct client *cl)
{
	int64_t now = clock_now_ms();

	switch (cl->state) {
	case CL_IDLE:
		if (cl->rq->head_start_ms == 0 && buf_len(&cl->in) == 0) {
			client_idle(cl);
			if (cl->rq == NULL)
				break;	/* idle: the listener's list times it out */
		}
		if (handshake_overdue(cl, NULL, now)) {
			static struct log_limit limit;

			log_limited(&limit, LOG_WARN, "inbound TLS handshake failed peer=%s "
			    "cause=\"not done within %lldms\"", cl->peer,
			    (long long)cl->lis->conf->handshake_timeout);
			client_teardown(cl, "TLS handshake timeout");
			return;
		}
		if (cl->rq->head_start_ms && now >= cl->rq->head_start_ms + cl->lis->conf->header_read_timeout) {
			cl->state = CL_WAIT;
			proxy_error_early(&cl->rq->x, FE_REQUEST_TIMEOUT, "request head not complete in time");
			return;
		}
		if (!cl->rq->head_start_ms && now >= cl->idle_since_ms + cl->lis->conf->idle_timeout) {
			client_teardown(cl, "idle timeout");
			return;
		}
		break;
	case CL_CLOSING:
	case CL_LINGER:
		if (now >= cl->rq->linger_until_ms || cl->rq->linger_until_ms == 0) {
			client_teardown(cl, "closing");
			return;
		}
		break;
	default:
		return;		/* the exchange's timer rules */
	}
	client_arm_timer(cl);
}

/* --------------------------------------------------------- request ---- */

static void
body_out(void *arg, const char *p, size_t n)
{
	struct h1_req *rq = arg;

	sbuf_add(rq->body_dst, p, n);
}

/* Parses the body bytes at the head of cl->in. A chunked body is framed
 * anew into DST (http1.h, rechunk); any other goes as it came, the first
 * *USED bytes of cl->in, and is not copied here. */
static enum http_status
body_parse(struct client *cl, struct sbuf *dst, size_t *used)
{
	enum http_status st;

	sbuf_clear(dst);
	cl->rq->body_dst = dst;
	st = http_parse(&cl->rq->parser, buf_head(&cl->in), buf_len(&cl->in), 0, used);
	cl->rq->x.bytes_in += *used;
	return st;
}

/* A body that cannot go on is answered (before a response head) or cut:
 * malformed 400, trailers over the head limits 431, over
 * max_request_body 413, no memory 503. True when it ended the exchange. */
static bool
body_refused(struct client *cl, enum http_status st, const struct sbuf *dst)
{
	const struct http_parser *hp = &cl->rq->parser;
	/* the limit the request began under: a reload since applies to the
	 * next one (SPEC §10) */
	uint64_t max = cl->rq->x.lis->max_request_body;
	enum ferry_error e;
	enum end_cause cause;
	const char *why;

	if (st == HTTP_ERROR && hp->err == HTTP_ERR_TOO_LARGE) {
		e = FE_HEADERS_TOO_LARGE;
		cause = END_REQUEST_TRAILERS_TOO_LARGE;
		why = "request head and trailers over 64 KiB or over 100 fields";
	} else if (st == HTTP_ERROR) {
		e = FE_BAD_REQUEST;
		cause = END_MALFORMED_REQUEST_BODY;
		why = hp->err_text ? hp->err_text : "malformed request body";
	} else if (max && hp->body_bytes > max) {
		e = FE_PAYLOAD_TOO_LARGE;
		cause = END_REQUEST_BODY_TOO_LARGE;
		why = "request body over the limit";
	} else if (dst->oom) {
		e = FE_SERVICE_UNAVAILABLE;
		cause = END_OUT_OF_MEMORY;
		why = "out of memory";
	} else {
		return false;
	}
	if (cl->rq->x.resp_head)
		client_close(cl, cause, why);
	else
		proxy_refuse(&cl->rq->x, e, why, e == FE_SERVICE_UNAVAILABLE ? 1 : 0, true);
	return true;
}

/* The body bytes just parsed go to the exchange; true when it ended. */
static bool
body_hand_over(struct client *cl, enum http_status st, size_t used)
{
	struct sbuf *s = &cl->w->scratch;

	if (body_refused(cl, st, s))
		return true;
	if (cl->rq->parser.rechunk)
		proxy_request_body(&cl->rq->x, s->p, s->len);
	else
		proxy_request_body(&cl->rq->x, buf_head(&cl->in), used);
	buf_consume(&cl->in, used);
	return false;
}

/* A request head is complete: hand it to the proxy, with the body bytes
 * that came along, and let the first attempt start. */
static void
request_begin(struct client *cl)
{
	struct exchange *x = &cl->rq->x;
	struct http_head *h = &cl->rq->head;
	char *msg = buf_head(&cl->in);
	bool ambiguous;

	/* a new request runs on the config in force now */
	if (cl->gen != cl->w->gen) {
		gen_unref(cl->w, cl->gen);
		cl->gen = gen_ref(cl->w->gen);
	}
	x->gen = cl->gen;
	x->lis = cl->lis->conf;
	x->lis_service = listener_service_now(cl->lis);
	cl->spoke = true;
	ambiguous = headers_classify(msg, h) != 0;
	cl->rq->parser.rechunk = h->chunked;	/* its body is framed anew */
	cl->state = CL_WAIT;
	client_arm_timer(cl);
	/* MSG stays readable: nothing reads into cl->in until we return,
	 * and nothing here touches MSG once the exchange has ended */
	buf_consume(&cl->in, h->head_len);
	cl->rq->parsed = 0;
	if (!proxy_request(x, msg, h, ambiguous))
		return;
	if (!x->req_done) {
		size_t used = 0;
		enum http_status st = body_parse(cl, scratch_take(cl), &used);

		if (body_hand_over(cl, st, used))
			return;
		if (st == HTTP_MSG_DONE)
			x->req_done = true;
		cl->state = x->req_done ? CL_WAIT : CL_BODY;
	}
	proxy_request_send(x);
}

static void
request_error(struct client *cl)
{
	const struct http_parser *hp = &cl->rq->parser;
	bool too_large = hp->err == HTTP_ERR_TOO_LARGE;

	cl->spoke = true;
	cl->state = CL_WAIT;
	buf_drop_wiped(&cl->in);
	proxy_error_early(&cl->rq->x, too_large ? FE_HEADERS_TOO_LARGE : FE_BAD_REQUEST,
	    too_large ? "request head over 64 KiB or over 100 headers" :
	    (hp->err_text ? hp->err_text : "malformed request"));
}

static void
client_process(struct client *cl)
{
	cl->in_process = true;
	client_process_loop(cl);
	cl->in_process = false;
}

/* Every request it starts or ends runs from this loop: an exchange that
 * ends at once (an error, a refusal) does not nest another call here. */
static void
client_process_loop(struct client *cl)
{
	while (!cl->closed) {
		struct exchange *x = cl->rq ? &cl->rq->x : NULL;
		enum http_status st;
		size_t used, n;

		switch (cl->state) {
		case CL_IDLE:
			if (buf_len(&cl->in) == 0 ||
			    (cl->rq != NULL && buf_len(&cl->in) <= cl->rq->parsed))
				return;
			if (cl->rq == NULL && !req_take(cl)) {
				client_teardown(cl, "out of memory");
				return;
			}
			if (cl->rq->head_start_ms == 0)
				cl->rq->head_start_ms = clock_now_ms();
			st = http_parse(&cl->rq->parser, buf_head(&cl->in) + cl->rq->parsed,
			    buf_len(&cl->in) - cl->rq->parsed, cl->rq->parsed, &used);
			cl->rq->parsed += (uint32_t)used;
			if (st == HTTP_NEED_MORE) {
				/* header_read_timeout runs only while a head waits
				 * for bytes: most come whole in one read, and
				 * arming a timer to disarm it is two heap moves */
				client_arm_timer(cl);
				return;
			}
			if (st != HTTP_HEAD_DONE) {
				request_error(cl);
				return;
			}
			request_begin(cl);
			break;
		case CL_BODY:
			if (buf_len(&cl->in) == 0) {
				resume_client(cl);	/* paused by a full buffer */
				return;
			}
			if (!proxy_request_writable(x)) {
				/* no attempt running (backoff) or it is full */
				pause_client(cl);
				return;
			}
			st = body_parse(cl, scratch_take(cl), &used);
			if (body_hand_over(cl, st, used) || cl->state != CL_BODY)
				break;	/* ended, or the write failed and it ended */
			if (st == HTTP_MSG_DONE) {
				proxy_request_done(x);
				cl->state = CL_WAIT;
			}
			break;
		case CL_TUNNEL:
			if ((n = buf_len(&cl->in)) == 0)
				return;
			x->bytes_in += n;
			if (!proxy_tunnel_up(x, buf_head(&cl->in), n))
				return;
			buf_consume(&cl->in, n);
			if (!proxy_request_writable(x))
				pause_client(cl);
			return;
		case CL_WAIT:
			/* a pipelined request waits until this response is done;
			 * stop reading once the buffer is full */
			if (buf_len(&cl->in) >= CLIENT_BUF_MAX)
				pause_client(cl);
			return;
		case CL_CLOSING:
		case CL_LINGER:
			buf_drop_wiped(&cl->in);
			return;
		}
	}
}

/* ------------------------------------------------------- events ---- */

static void
log_handshake_failure(struct client *cl)
{
	static struct log_limit limit;
	uint32_t skipped;

	if (strstr(conn_error_text(cl->c), "did not return a certificate"))
		metrics_auth_failure(cl->w->ms, AUTH_NO_CLIENT_CERT);
	/* a scanner or a misconfigured peer must not flood the log */
	if (log_ratelimit(&limit, clock_now_ms(), 10000, &skipped))
		log_warn("inbound TLS handshake failed peer=%s cause=\"%s\" suppressed=%u",
		    cl->peer, conn_error_text(cl->c), skipped);
}

static void
client_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct client *cl = arg;
	ssize_t n;

	(void)c;
	switch (ev) {
	case CONN_DRAINED:
		if (cl->state == CL_CLOSING && conn_pending(cl->c) == 0) {
			client_linger(cl);
			client_arm_timer(cl);
			return;
		}
		/* the client took the response: read more of it upstream;
		 * also while its request body still comes (a response may
		 * stream before the request ends, and its upstream waits
		 * paused for this drain) */
		if (cl->state == CL_WAIT || cl->state == CL_TUNNEL || cl->state == CL_BODY)
			proxy_client_drained(&cl->rq->x);
		return;
	case CONN_CONNECTED:
		metrics_tls_handshake(cl->w->ms, DIR_INBOUND, conn_session_reused(cl->c));
		/* idle from now on: the idle list is in this order */
		cl->idle_since_ms = clock_now_ms();
		/* inbound TLS handshake done: who is calling? */
		{
			char id[PEER_ID_MAX];
			int found = inbound_peer_identity(conn_ssl(cl->c), id, sizeof(id));

			/* kept at its length: most connections are idle most of the time */
			if (found < 0 || (found > 0 && (cl->peer_id = strdup(id)) == NULL)) {
				client_teardown(cl, "out of memory");
				return;
			}
		}
		{
			const unsigned char *alpn;
			unsigned alen;

			SSL_get0_alpn_selected(conn_ssl(cl->c), &alpn, &alen);
			if (alen == 2 && memcmp(alpn, "h2", 2) == 0) {
				client_hand_over(cl);
				return;
			}
		}
		if (cl->rq != NULL)
			cl->rq->x.peer_id = cl->peer_id;
		if (cl->state == CL_IDLE && (cl->rq == NULL || cl->rq->head_start_ms == 0) &&
		    buf_len(&cl->in) == 0) {
			client_idle(cl);
			client_arm_timer(cl);
		}
		return;
	case CONN_FAILED:
		log_handshake_failure(cl);
		client_teardown(cl, "TLS handshake failed");
		return;
	case CONN_READABLE:
		break;
	}
	if (conn_write_failed(cl->c)) {
		/* queued bytes failed to leave: the exchange ends now, also
		 * while reading is paused, not at a next write that
		 * back-pressure may never bring */
		client_close(cl, END_CLIENT_WRITE_FAILED, "downstream write failed");
		return;
	}
	if (cl->read_paused)
		return;		/* a kick raced with a pause */
	n = conn_read(cl->c, &cl->in, CLIENT_BUF_MAX);
	if (n == CONN_AGAIN) {
		client_process(cl);
		if (!cl->closed && buf_len(&cl->in) >= CLIENT_BUF_MAX && cl->state != CL_IDLE)
			pause_client(cl);
		client_read_done(cl);
		return;
	}
	if (n <= 0) {
		if (cl->state == CL_LINGER || cl->state == CL_CLOSING) {
			if (cl->state == CL_LINGER || conn_pending(cl->c) == 0)
				client_teardown(cl, "closed");
			else
				pause_client(cl);
			return;
		}
		if (cl->state == CL_TUNNEL && n == 0) {
			/* a half-close: the upstream's way runs on */
			pause_client(cl);
			cl->read_eof = true;
			proxy_tunnel_client_fin(&cl->rq->x);
			return;
		}
		if (cl->state == CL_WAIT && cl->rq->x.req_done && n == 0) {
			/* half-close after a complete request: still answer,
			 * and the requests pipelined behind it too: reading
			 * resumes after each answer and finds the end again,
			 * after the last whole request (or in a partial one) */
			pause_client(cl);
			if (buf_len(&cl->in) == 0)
				cl->rq->x.close_after = true;
			return;
		}
		if (n == 0)
			client_close(cl, END_CLIENT_CLOSED, "client closed");
		else
			client_close(cl, END_CLIENT_READ_ERROR, "client read error");
		return;
	}
	if (cl->state == CL_LINGER) {
		buf_drop_wiped(&cl->in);
		return;
	}
	if (h2c_preface(cl))
		return;
	client_process(cl);
	client_read_done(cl);
}

/* --------------------------------------------------------- public ---- */

void
proxy_accept(struct listener *lis, int fd, const struct sockaddr *peer, socklen_t len)
{
	struct worker *w = lis->w;
	struct client *cl = slab_alloc(&clients, sizeof(*cl));

	(void)len;
	if (cl == NULL) {
		close(fd);
		return;
	}
	cl->w = w;
	cl->lis = lis;
	cl->gen = gen_ref(w->gen);
	cl->c = lis->kind == LK_INBOUND ?
	    conn_accept_tls(w->base, fd, cl->gen->conf->inbound.ctx, client_event, cl) :
	    conn_new_fd(w->base, fd, client_event, cl);
	/* a handshake's deadline needs the request state's timer */
	if (cl->c == NULL || (lis->kind == LK_INBOUND && !req_take(cl))) {
		if (cl->c)
			conn_free(cl->c);
		else
			close(fd);
		gen_unref(w, cl->gen);
		slab_free(&clients, cl);
		return;
	}
	if (peer->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr,
		    cl->peer, sizeof(cl->peer));
	else if (peer->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr,
		    cl->peer, sizeof(cl->peer));
	cl->state = CL_IDLE;
	cl->idle_since_ms = clock_now_ms();
	listener_client_add(lis);
	w->n_clients++;
	if (lis->kind == LK_INBOUND)
		w->conns_inbound++;
	else
		w->conns_outbound++;
	cl->next = w->clients;
	if (w->clients)
		w->clients->prev = cl;
	w->clients = cl;
	client_arm_timer(cl);
}

void
proxy_close_all(struct worker *w)
{
	while (w->clients)
		client_close(w->clients, END_SHUTDOWN, "shutdown");
	h2_down_close_all(w);
	h2_up_close_all(w);
	/* run the deferred frees */
	worker_turn(w, EVLOOP_NONBLOCK);
	req_spares_free(w);
}

void
proxy_close_idle(struct worker *w)
{
	struct client *cl, *next;

	/* between requests with nothing buffered: no request is lost */
	for (cl = w->clients; cl; cl = next) {
		next = cl->next;
		if (cl->state == CL_IDLE && buf_len(&cl->in) == 0)
			client_teardown(cl, "draining");
	}
	h2_down_close_idle(w);
}
