#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "errors.h"
#include "headers.h"
#include "ids.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "proxy.h"
#include "route.h"

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
	int64_t deadline_ms;		/* request timeout, until the head */
	int64_t try_deadline_ms;	/* this attempt, until the head */
	int64_t connect_deadline_ms;	/* 0 once connected */
	int64_t last_io_ms;		/* body/tunnel activity, after the head */
	uint32_t attempts;
	bool http10;
	bool head_method;
	bool idempotent;
	bool keep_alive;		/* the client's side allows reuse */
	bool upgrade;
	bool req_done;			/* the whole request went upstream */
	bool resp_head;			/* response head sent to the client */
	bool replayable;		/* reqhead holds the whole request so far */
	bool resent;			/* already re-sent once after a stale reuse */
	bool dechunk;
	bool close_after;		/* close the client after this response */
	int64_t up_keepalive_ms;	/* upstream's Keep-Alive: timeout */
	uint32_t status;
	uint64_t bytes_in, bytes_out;
	char corr[129];
	char rid[129];
	char tp[TRACEPARENT_LEN + 1];
	struct request_ids ids;
};

struct client {
	struct worker *w;
	struct listener *lis;
	struct conn *c;
	struct config *conf;		/* snapshot this connection started with */
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
	size_t reqhead_len;		/* bytes of reqhead that are the head */
	struct event *timer;
	struct exchange x;
	struct client *next, *prev;	/* the worker's list */
	char peer[INET6_ADDRSTRLEN + 8];
};

static void client_process(struct client *cl);
static void client_close(struct client *cl, const char *reason);
static void client_arm_timer(struct client *cl);
static void upstream_event(struct conn *c, enum conn_event ev, void *arg);
static void attempt_start(struct exchange *x);
static void ids_fresh(struct exchange *x);

/* ---------------------------------------------------------- helpers ---- */

static unsigned
keepalive_secs(const struct client *cl)
{
	int64_t t = cl->lis->conf->idle_timeout / 1000;

	return t > 0 ? (unsigned)t : 1;
}

static void
client_write(struct client *cl, const void *p, size_t n)
{
	if (cl->closed)
		return;
	cl->x.bytes_out += n;
	if (conn_write(cl->c, p, n) != 0)
		client_close(cl, "downstream write failed");
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
	if (cl->read_paused && !cl->closed) {
		conn_resume_read(cl->c);
		cl->read_paused = false;
		conn_kick_read(cl->c);
	}
}

static void
ids_decide(struct exchange *x, const char *msg, const struct http_head *h)
{
	const struct http_header *c = headers_find(h, HDR_CORRELATION_ID);
	const struct http_header *r = headers_find(h, HDR_REQUEST_ID);
	const struct http_header *t = headers_find(h, HDR_TRACEPARENT);
	struct request_ids *ids = &x->ids;

	memset(ids, 0, sizeof(*ids));
	if (c && ids_valid(msg + c->value.off, c->value.len)) {
		memcpy(x->corr, msg + c->value.off, c->value.len);
		ids->correlation_len = c->value.len;
		ids->correlation_from_app = true;
	} else {
		ids_uuid4(x->corr);
		ids->correlation_len = UUID_LEN;
	}
	if (r && ids_valid(msg + r->value.off, r->value.len)) {
		memcpy(x->rid, msg + r->value.off, r->value.len);
		ids->request_len = r->value.len;
		ids->request_from_app = true;
	} else {
		ids_uuid4(x->rid);
		ids->request_len = UUID_LEN;
	}
	ids->correlation = x->corr;
	ids->request = x->rid;
	if (t == NULL || headers_count(h, HDR_TRACEPARENT) > 1 ||
	    !ids_traceparent_valid(msg + t->value.off, t->value.len)) {
		ids_traceparent(x->tp);
		ids->traceparent = x->tp;
		ids->traceparent_len = TRACEPARENT_LEN;
	}
}

/* Sends one of ferry's own error responses (SPEC §7). */
static void
send_error(struct client *cl, enum ferry_error e, const char *message,
    unsigned retry_after, bool close)
{
	struct exchange *x = &cl->x;
	struct sbuf *out = &cl->w->scratch;
	struct error_args a = {
		.err = e,
		.message = message,
		.correlation = x->ids.correlation,
		.correlation_len = x->ids.correlation_len,
		.request_id = x->ids.request,
		.request_id_len = x->ids.request_len,
		.retry_after = retry_after,
		.keep_alive = !close && x->keep_alive,
		.keep_alive_timeout = keepalive_secs(cl),
		.head_only = x->head_method,
	};

	if (cl->closed)
		return;
	x->status = (uint32_t)ferror_status(e);
	log_debug("%s %s", ferror_code(e), message);
	sbuf_clear(out);
	ferror_build(out, &a);
	client_write(cl, out->p, out->len);
	if (!a.keep_alive)
		x->close_after = true;
}

/* --------------------------------------------------- exchange end ---- */

static void
exchange_release_upstream(struct exchange *x, bool reusable)
{
	struct upconn *u = x->up;

	if (u == NULL)
		return;
	x->up = NULL;
	if (reusable)
		pool_checkin(u, clock_now_ms(), x->up_keepalive_ms);
	else
		pool_discard(u);
}

/* The exchange is over (response sent or error answered): next request,
 * or close. */
static void
exchange_done(struct client *cl)
{
	struct exchange *x = &cl->x;

	exchange_release_upstream(x, false);
	if (cl->closed)
		return;
	if (x->close_after || !x->keep_alive || !x->req_done || cl->w->draining) {
		cl->state = CL_CLOSING;
		if (conn_pending(cl->c) == 0) {
			conn_shutdown(cl->c);
			cl->state = CL_LINGER;
			cl->linger_until_ms = clock_now_ms() + LINGER_MS;
			resume_client(cl);
		}
		client_arm_timer(cl);
		return;
	}
	cl->state = CL_IDLE;
	cl->parsed = 0;
	cl->head_start_ms = 0;
	cl->idle_since_ms = clock_now_ms();
	http_parser_reset(&cl->parser);
	client_arm_timer(cl);
	if (buf_len(&cl->in) > 0)
		client_process(cl);	/* a pipelined request is waiting */
	else
		buf_shrink_if_empty(&cl->in);
	if (!cl->closed)
		resume_client(cl);
}

static bool
may_resend(const struct exchange *x)
{
	if (x->resent || x->up == NULL || !x->up->reused || x->resp_head)
		return false;
	if (conn_bytes_written(x->up->c) == 0)
		return true;
	return x->idempotent && x->replayable && buf_len(&x->up->in) == 0;
}

/* An attempt failed before a response head reached the client. */
static void
attempt_failed(struct exchange *x, enum ferry_error e, const char *msg)
{
	struct client *cl = x->cl;

	if (may_resend(x)) {
		/* the keep-alive race: the upstream closed a pooled connection
		 * as we reused it; not a failure, not a retry */
		log_debug("re-sending on a new connection to %s", x->ep->addr_text);
		exchange_release_upstream(x, false);
		x->resent = true;
		attempt_start(x);
		return;
	}
	exchange_release_upstream(x, false);
	send_error(cl, e, msg, 0, !x->req_done);
	exchange_done(cl);
}

static void
attempt_failed_conn(struct exchange *x)
{
	struct conn *c = x->up->c;
	bool reused = x->up->reused;
	char msg[256];

	switch (conn_error(c)) {
	case CONN_REFUSED:
	case CONN_CONNECT_FAILED:
		snprintf(msg, sizeof(msg), "connect %s: %s", x->ep->addr_text,
		    conn_error_text(c));
		attempt_failed(x, FE_SERVICE_UNAVAILABLE, msg);
		return;
	case CONN_TLS_FAILED:
		snprintf(msg, sizeof(msg), "TLS handshake with %s failed: %s",
		    x->ep->addr_text, conn_error_text(c));
		attempt_failed(x, FE_SERVICE_ERROR, msg);
		return;
	default:
		snprintf(msg, sizeof(msg), reused ?
		    "upstream %s closed a reused connection" :
		    "upstream %s closed the connection before a response (%s)",
		    x->ep->addr_text, conn_error_text(c));
		attempt_failed(x, FE_SERVICE_ERROR, msg);
		return;
	}
}

/* ------------------------------------------------------- upstream ---- */

static struct endpoint *
pick_endpoint(struct svc_state *s)
{
	for (size_t i = 0; i < s->n_eps; i++) {
		struct endpoint *ep = &s->eps[s->rr++ % s->n_eps];

		if (ep->resolved)
			return ep;
	}
	return NULL;
}

static void
attempt_start(struct exchange *x)
{
	struct client *cl = x->cl;
	const struct conf_service *svc = x->svc->conf;
	int64_t now = clock_now_ms();
	char msg[256];

	x->attempts++;
	if ((x->ep = pick_endpoint(x->svc)) == NULL) {
		snprintf(msg, sizeof(msg), "no resolved endpoint for %s", svc->name);
		send_error(cl, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		exchange_done(cl);
		return;
	}
	x->try_deadline_ms = svc->timeouts.per_try ? now + svc->timeouts.per_try : x->deadline_ms;
	if (x->try_deadline_ms > x->deadline_ms)
		x->try_deadline_ms = x->deadline_ms;
	if ((x->up = pool_checkout(x->ep, now)) != NULL) {
		conn_set_cb(x->up->c, upstream_event, x);
		x->connect_deadline_ms = 0;
	} else {
		x->up = pool_connect(cl->w, x->svc, x->ep, upstream_event, x, now);
		if (x->up == NULL) {
			snprintf(msg, sizeof(msg), "connect %s: %s", x->ep->addr_text,
			    strerror(errno));
			send_error(cl, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
			exchange_done(cl);
			return;
		}
		x->connect_deadline_ms = now + svc->timeouts.connect;
	}
	x->up->requests++;
	x->up->parsed = 0;
	http_parser_reset(&x->up->parser);
	if (conn_write(x->up->c, cl->reqhead.p, cl->reqhead.len) != 0) {
		attempt_failed_conn(x);
		return;
	}
	client_arm_timer(cl);
}

static int64_t
parse_keepalive_timeout(const char *msg, const struct http_head *h)
{
	const struct http_header *ka = headers_find(h, HDR_KEEP_ALIVE);
	const char *v, *p;

	if (ka == NULL)
		return 0;
	v = msg + ka->value.off;
	for (p = v; p + 8 <= v + ka->value.len; p++) {
		if (strncasecmp(p, "timeout=", 8) == 0) {
			long long s = 0;

			for (p += 8; p < v + ka->value.len && *p >= '0' && *p <= '9'; p++)
				s = s * 10 + (*p - '0');
			return s > 0 && s < 86400 ? s * 1000 : 0;
		}
	}
	return 0;
}

static void
dechunk_data(void *arg, const char *at, size_t len)
{
	struct exchange *x = arg;

	sbuf_add(&x->cl->w->scratch, at, len);
}

/* The response is complete: give the upstream connection back. */
static void
response_done(struct exchange *x)
{
	struct upconn *u = x->up;
	bool reusable = x->req_done && u->head.keep_alive && !x->upgrade &&
	    buf_len(&u->in) == 0;

	exchange_release_upstream(x, reusable);
	exchange_done(x->cl);
}

static void
tunnel_start(struct exchange *x)
{
	struct client *cl = x->cl;

	cl->state = CL_TUNNEL;
	x->req_done = true;
	x->last_io_ms = clock_now_ms();
	/* bytes the client sent after its upgrade request belong to the tunnel */
	if (buf_len(&cl->in) > 0) {
		x->bytes_in += buf_len(&cl->in);
		conn_write(x->up->c, buf_head(&cl->in), buf_len(&cl->in));
		buf_consume(&cl->in, buf_len(&cl->in));
	}
	resume_client(cl);
}

/* Handles a parsed response head; returns false when the exchange ended. */
static bool
response_head(struct exchange *x)
{
	struct client *cl = x->cl;
	struct upconn *u = x->up;
	struct http_head *h = &u->head;
	const char *msg = buf_head(&u->in);
	struct sbuf *out = &cl->w->scratch;
	struct downstream_head_args a = { 0 };

	if (headers_classify(msg, h) != 0) {
		attempt_failed(x, FE_SERVICE_ERROR, "malformed response head");
		return false;
	}
	if (h->status >= 100 && h->status < 200 && !(h->status == 101 && x->upgrade)) {
		/* interim: ferry answered 100-continue itself; others pass on
		 * to HTTP/1.1 clients */
		if (h->status != 100 && h->status != 101 && !x->http10) {
			sbuf_clear(out);
			headers_build_response(out, msg, h, &(struct downstream_head_args){
			    .ids = NULL, .keep_alive = true,
			    .keep_alive_timeout = keepalive_secs(cl) });
			/* interim heads carry no keep-alive parameter */
			client_write(cl, out->p, out->len);
		}
		buf_consume(&u->in, h->head_len);
		http_parser_reset(&u->parser);
		return !cl->closed;
	}
	if (x->head_method || h->status == 204 || h->status == 304)
		http_parser_skip_body(&u->parser);
	x->up_keepalive_ms = parse_keepalive_timeout(msg, h);
	x->status = (uint32_t)h->status;
	x->upgrade = x->upgrade && h->status == 101;
	x->dechunk = x->http10 && h->chunked && !x->head_method;
	if (!x->upgrade && (http_parser_body_until_eof(&u->parser) && !x->head_method &&
	    h->status != 204 && h->status != 304))
		x->close_after = true;
	if (!x->req_done)
		x->close_after = true;	/* the rest of the request has nowhere to go */

	a.ids = &x->ids;
	a.keep_alive = x->keep_alive && !x->close_after && !cl->w->draining;
	a.keep_alive_timeout = keepalive_secs(cl);
	a.dechunk = x->dechunk;
	a.upgrade = x->upgrade;
	if (!a.keep_alive && !a.upgrade)
		x->close_after = true;
	sbuf_clear(out);
	headers_build_response(out, msg, h, &a);
	if (out->oom) {
		attempt_failed(x, FE_SERVICE_ERROR, "out of memory");
		return false;
	}
	x->resp_head = true;
	x->last_io_ms = clock_now_ms();
	buf_consume(&u->in, h->head_len);
	u->parser.dechunk = x->dechunk;
	u->parser.on_data = dechunk_data;
	u->parser.arg = x;
	client_arm_timer(cl);
	return true;
}

/* Parses and relays what the upstream sent; the response head and the
 * body bytes that came with it leave in one write. */
static void
upstream_relay(struct exchange *x)
{
	struct client *cl = x->cl;
	struct upconn *u = x->up;
	struct sbuf *out = &cl->w->scratch;
	bool head_now = false;

	while (!x->resp_head) {
		enum http_status st;
		size_t used;

		if (buf_len(&u->in) <= u->parsed)
			return;
		st = http_parse(&u->parser, buf_head(&u->in) + u->parsed,
		    buf_len(&u->in) - u->parsed, u->parsed, &used);
		u->parsed += (uint32_t)used;
		if (st == HTTP_NEED_MORE)
			return;
		if (st != HTTP_HEAD_DONE) {
			attempt_failed(x, FE_SERVICE_ERROR, "malformed response from upstream");
			return;
		}
		u->parsed = 0;
		if (!response_head(x))
			return;
	}
	head_now = true;
	if (x->upgrade) {
		client_write(cl, out->p, out->len);
		tunnel_start(x);
		if (!cl->closed && buf_len(&u->in) > 0) {
			client_write(cl, buf_head(&u->in), buf_len(&u->in));
			buf_consume(&u->in, buf_len(&u->in));
		}
		return;
	}
	/* body: runs once even with no bytes, so a bodiless message ends */
	do {
		enum http_status st;
		size_t used;

		if (!head_now)
			sbuf_clear(out);
		st = http_parse(&u->parser, buf_head(&u->in), buf_len(&u->in), 0, &used);
		if (st == HTTP_ERROR) {
			/* the head already left: the client sees a cut response */
			if (head_now)
				client_write(cl, out->p, out->len);
			log_info("upstream %s sent a malformed body; cutting the response",
			    x->ep->addr_text);
			client_close(cl, "malformed upstream body");
			return;
		}
		if (!x->dechunk)
			sbuf_add(out, buf_head(&u->in), used);
		buf_consume(&u->in, used);
		client_write(cl, out->p, out->len);
		sbuf_clear(out);
		head_now = false;
		if (cl->closed)
			return;
		x->last_io_ms = clock_now_ms();
		if (st == HTTP_MSG_DONE) {
			response_done(x);
			return;
		}
	} while (buf_len(&u->in) > 0);
	if (x->up && conn_pending(cl->c) > CONN_HIGH_MARK)
		conn_pause_read(x->up->c);
}

static void
upstream_eof(struct exchange *x, ssize_t n)
{
	struct client *cl = x->cl;
	struct upconn *u = x->up;

	if (cl->state == CL_TUNNEL) {
		exchange_release_upstream(x, false);
		x->close_after = true;
		exchange_done(cl);
		return;
	}
	if (!x->resp_head) {
		attempt_failed_conn(x);
		return;
	}
	if (n == 0 && http_parse_eof(&u->parser) == HTTP_MSG_DONE) {
		x->close_after = true;
		exchange_release_upstream(x, false);
		exchange_done(cl);
		return;
	}
	log_info("upstream %s closed the connection mid-response: %s",
	    x->ep->addr_text, conn_error_text(u->c));
	client_close(cl, "upstream closed mid-response");
}

static void
upstream_readable(struct exchange *x)
{
	struct client *cl = x->cl;
	struct upconn *u = x->up;
	ssize_t n;

	if (cl->state == CL_TUNNEL) {
		struct buf *b = &u->in;

		n = conn_read(u->c, b, 65536);
		if (n > 0) {
			x->last_io_ms = clock_now_ms();
			client_write(cl, buf_head(b), buf_len(b));
			buf_consume(b, buf_len(b));
			if (!cl->closed && conn_pending(cl->c) > CONN_HIGH_MARK)
				conn_pause_read(u->c);
		} else if (n != CONN_AGAIN) {
			upstream_eof(x, n);
		}
		return;
	}
	n = conn_read(u->c, &u->in, UPSTREAM_BUF_MAX);
	if (n == CONN_AGAIN) {
		if (buf_len(&u->in) > u->parsed || (x->resp_head && buf_len(&u->in) > 0))
			upstream_relay(x);	/* kicked after back-pressure */
		return;
	}
	if (n <= 0) {
		upstream_eof(x, n);
		return;
	}
	upstream_relay(x);
}

static void
upstream_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct exchange *x = arg;
	struct client *cl = x->cl;

	(void)c;
	switch (ev) {
	case CONN_CONNECTED:
		x->connect_deadline_ms = 0;
		client_arm_timer(cl);
		/* what was queued while connecting has gone: take more body */
		if (cl->state == CL_BODY)
			resume_client(cl);
		return;
	case CONN_FAILED:
		attempt_failed_conn(x);
		return;
	case CONN_DRAINED:
		/* the upstream took the request body: read more of it */
		if (cl->state == CL_BODY || cl->state == CL_TUNNEL)
			resume_client(cl);
		return;
	case CONN_READABLE:
		upstream_readable(x);
		return;
	}
}

/* ------------------------------------------------------ downstream ---- */

static void
client_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;

	(void)fd;
	(void)what;
	buf_free(&cl->in);
	sbuf_free(&cl->reqhead);
	config_unref(cl->conf);
	free(cl);
}

static void
client_close(struct client *cl, const char *reason)
{
	if (cl->closed)
		return;
	log_debug("closing client %s: %s", cl->peer, reason);
	cl->closed = true;
	exchange_release_upstream(&cl->x, false);
	conn_free(cl->c);
	cl->c = NULL;
	event_free(cl->timer);
	cl->timer = NULL;
	listener_client_gone(cl->lis);
	cl->w->n_clients--;
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		cl->w->clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	/* callers up the stack may still look at cl: free it next turn */
	event_base_once(cl->w->base, -1, EV_TIMEOUT, client_free_deferred, cl, NULL);
}

/* Sets the one timer to the earliest deadline of the current state. */
static void
client_arm_timer(struct client *cl)
{
	struct exchange *x = &cl->x;
	int64_t now = clock_now_ms(), at = 0;
	struct timeval tv;

	if (cl->closed)
		return;
	switch (cl->state) {
	case CL_IDLE:
		at = cl->head_start_ms ? cl->head_start_ms + cl->lis->conf->header_read_timeout
		    : cl->idle_since_ms + cl->lis->conf->idle_timeout;
		break;
	case CL_BODY:
	case CL_WAIT:
		if (!x->resp_head) {
			at = x->try_deadline_ms;
			if (x->connect_deadline_ms && x->connect_deadline_ms < at)
				at = x->connect_deadline_ms;
		} else {
			at = x->last_io_ms + x->svc->conf->timeouts.stream_idle;
		}
		break;
	case CL_TUNNEL:
		at = x->last_io_ms + x->svc->conf->timeouts.stream_idle;
		break;
	case CL_CLOSING:
	case CL_LINGER:
		at = cl->linger_until_ms ? cl->linger_until_ms : now + 5000;
		break;
	}
	if (at < now)
		at = now;
	tv.tv_sec = (at - now) / 1000;
	tv.tv_usec = ((at - now) % 1000) * 1000;
	event_add(cl->timer, &tv);
}

static void
client_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;
	struct exchange *x = &cl->x;
	int64_t now = clock_now_ms();
	char msg[256];

	(void)fd;
	(void)what;
	switch (cl->state) {
	case CL_IDLE:
		if (cl->head_start_ms && now >= cl->head_start_ms + cl->lis->conf->header_read_timeout) {
			ids_fresh(x);
			x->keep_alive = false;
			x->head_method = false;
			send_error(cl, FE_REQUEST_TIMEOUT, "request head not complete in time", 0, true);
			exchange_done(cl);
			return;
		}
		if (!cl->head_start_ms && now >= cl->idle_since_ms + cl->lis->conf->idle_timeout) {
			client_close(cl, "idle timeout");
			return;
		}
		break;
	case CL_BODY:
	case CL_WAIT:
	case CL_TUNNEL:
		if (!x->resp_head && cl->state != CL_TUNNEL) {
			if (x->connect_deadline_ms && now >= x->connect_deadline_ms) {
				snprintf(msg, sizeof(msg), "connect %s: timed out after %lldms",
				    x->ep->addr_text, (long long)x->svc->conf->timeouts.connect);
				exchange_release_upstream(x, false);
				send_error(cl, FE_SERVICE_TIMEOUT, msg, 0, !x->req_done);
				exchange_done(cl);
				return;
			}
			if (now >= x->try_deadline_ms) {
				snprintf(msg, sizeof(msg), "no response head from %s within %.3gs",
				    x->ep->addr_text, (double)(x->try_deadline_ms - x->start_ms) / 1000);
				exchange_release_upstream(x, false);
				send_error(cl, FE_SERVICE_TIMEOUT, msg, 0, !x->req_done);
				exchange_done(cl);
				return;
			}
		} else if (now >= x->last_io_ms + x->svc->conf->timeouts.stream_idle) {
			log_info("stream idle for %lldms on %s; closing",
			    (long long)x->svc->conf->timeouts.stream_idle, x->ep->addr_text);
			client_close(cl, "stream idle timeout");
			return;
		}
		break;
	case CL_CLOSING:
	case CL_LINGER:
		if (now >= cl->linger_until_ms || cl->linger_until_ms == 0) {
			client_close(cl, "closing");
			return;
		}
		break;
	}
	client_arm_timer(cl);
}

/* Forwards request body bytes upstream, keeping a replay copy while the
 * request is small enough to be re-sent. */
static void
forward_body(struct client *cl, const char *p, size_t n)
{
	struct exchange *x = &cl->x;

	x->bytes_in += n;
	if (x->replayable) {
		if (cl->reqhead.len + n <= x->svc->conf->retries.buffer + cl->reqhead_len)
			sbuf_add(&cl->reqhead, p, n);
		else
			x->replayable = false;
	}
	if (x->up && conn_write(x->up->c, p, n) != 0)
		attempt_failed_conn(x);
}

static bool
via_has_token(const char *msg, const struct http_head *h, const char *token)
{
	size_t tl = strlen(token);

	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].kind == HDR_VIA &&
		    memmem(msg + h->h[i].value.off, h->h[i].value.len, token, tl))
			return true;
	return false;
}

static bool
expects_continue(const char *msg, const struct http_head *h)
{
	const struct http_header *e = headers_find(h, HDR_EXPECT);

	return e && slice_eq_ci(msg, e->value, "100-continue");
}

static bool
body_over_limit(const struct client *cl)
{
	uint64_t max = cl->lis->conf->max_request_body;

	return max && cl->parser.body_bytes > max;
}

/* A request head is complete: route it, rewrite it, send it. */
static void
request_begin(struct client *cl)
{
	struct exchange *x = &cl->x;
	struct http_head *h = &cl->head;
	const char *msg = buf_head(&cl->in);
	const struct config *conf = cl->conf;
	const char *path, *auth;
	size_t path_len, auth_len;
	long si;
	bool ambiguous;
	char errmsg[256];

	memset(x, 0, offsetof(struct exchange, corr));
	x->cl = cl;
	x->start_ms = clock_now_ms();
	ambiguous = headers_classify(msg, h) != 0;
	ids_decide(x, msg, h);
	x->http10 = h->major == 1 && h->minor == 0;
	x->keep_alive = h->keep_alive && !cl->w->draining;
	x->head_method = h->method_id == HTTP_HEAD;
	switch (h->method_id) {
	case HTTP_GET: case HTTP_HEAD: case HTTP_OPTIONS: case HTTP_PUT:
	case HTTP_DELETE: case HTTP_TRACE:
		x->idempotent = true;
		break;
	default:
		x->idempotent = headers_find(h, HDR_IDEMPOTENCY_KEY) != NULL;
	}
	x->upgrade = h->upgrade;
	cl->state = CL_WAIT;
	x->req_done = !(h->chunked || (h->has_length && h->content_length > 0));

	if (ambiguous) {
		send_error(cl, FE_BAD_REQUEST, "more than one Host header", 0, true);
		goto refused;
	}
	if (h->method_id == HTTP_CONNECT) {
		send_error(cl, FE_METHOD_NOT_ALLOWED, "CONNECT is not supported", 0, !x->req_done);
		goto refused;
	}
	if (!x->http10 && headers_find(h, HDR_HOST) == NULL) {
		send_error(cl, FE_BAD_REQUEST, "HTTP/1.1 request without Host", 0, true);
		goto refused;
	}
	if (headers_find(h, HDR_TRANSFER_ENCODING) && !h->chunked) {
		/* RFC 9112 6.3: the length cannot be known */
		send_error(cl, FE_BAD_REQUEST, "Transfer-Encoding does not end in chunked", 0, true);
		goto refused;
	}
	if (cl->lis->conf->max_request_body && h->has_length &&
	    h->content_length > cl->lis->conf->max_request_body) {
		snprintf(errmsg, sizeof(errmsg), "request body of %llu bytes is over the limit of %llu",
		    (unsigned long long)h->content_length,
		    (unsigned long long)cl->lis->conf->max_request_body);
		send_error(cl, FE_PAYLOAD_TOO_LARGE, errmsg, 0, true);
		goto refused;
	}
	si = cl->lis->kind == LK_SERVICE ? (long)cl->lis->service : route_request(conf, msg, h);
	if (si < 0) {
		const struct http_header *host = headers_find(h, HDR_HOST);

		target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
		if (!auth && host) {
			auth = msg + host->value.off;
			auth_len = host->value.len;
		}
		snprintf(errmsg, sizeof(errmsg), "no service for host \"%.*s\"",
		    auth ? (int)(auth_len > 100 ? 100 : auth_len) : 0, auth ? auth : "");
		send_error(cl, FE_UNKNOWN_SERVICE, errmsg, 0, !x->req_done);
		goto refused;
	}
	if (via_has_token(msg, h, via_token_out())) {
		send_error(cl, FE_LOOP_DETECTED, "request already passed through this ferry", 0,
		    !x->req_done);
		goto refused;
	}
	x->svc = &cl->w->svcs[si];
	x->deadline_ms = x->start_ms + x->svc->conf->timeouts.request;

	target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
	sbuf_clear(&cl->reqhead);
	{
		struct sbuf *t = &cl->w->scratch;
		struct upstream_head_args a = {
			.host = x->svc->conf->upstream_host,
			.auth_key = x->svc->conf->auth_key,
			.ids = &x->ids,
			.via = via_token_out(),
			.upgrade = x->upgrade,
		};

		/* "http://svc?q" has no path: origin-form needs the "/" */
		sbuf_clear(t);
		if (path_len == 0 || path[0] == '?')
			sbuf_add(t, "/", 1);
		sbuf_add(t, path, path_len);
		a.target = t->p;
		a.target_len = t->len;
		headers_build_request(&cl->reqhead, msg, h, &a);
	}
	if (cl->reqhead.oom) {
		send_error(cl, FE_SERVICE_UNAVAILABLE, "out of memory", 1, true);
		goto refused;
	}
	cl->reqhead_len = cl->reqhead.len;
	x->replayable = true;
	if (!x->http10 && expects_continue(msg, h) && !x->req_done)
		client_write(cl, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	buf_consume(&cl->in, h->head_len);
	cl->parsed = 0;
	if (!x->req_done) {
		/* body bytes that came with the head leave with it, in one write */
		size_t used = 0;
		enum http_status st = http_parse(&cl->parser, buf_head(&cl->in),
		    buf_len(&cl->in), 0, &used);

		if (st == HTTP_ERROR || body_over_limit(cl)) {
			if (st == HTTP_ERROR)
				send_error(cl, FE_BAD_REQUEST, "malformed request body", 0, true);
			else
				send_error(cl, FE_PAYLOAD_TOO_LARGE, "request body over the limit", 0, true);
			exchange_done(cl);
			return;
		}
		if (used > 0 && used <= x->svc->conf->retries.buffer)
			sbuf_add(&cl->reqhead, buf_head(&cl->in), used);
		else if (used > 0)
			x->replayable = false;
		x->bytes_in += used;
		if (st == HTTP_MSG_DONE)
			x->req_done = true;
		if (x->replayable || used == 0) {
			buf_consume(&cl->in, used);
			used = 0;
		}
		cl->state = x->req_done ? CL_WAIT : CL_BODY;
		attempt_start(x);
		if (cl->closed || used == 0)
			return;
		/* too big to keep: send it as it is */
		if (x->up && conn_write(x->up->c, buf_head(&cl->in), used) != 0) {
			buf_consume(&cl->in, used);
			attempt_failed_conn(x);
			return;
		}
		buf_consume(&cl->in, used);
		return;
	}
	attempt_start(x);
	return;

refused:
	x->close_after = true;
	if (h->head_len <= buf_len(&cl->in))
		buf_consume(&cl->in, h->head_len);
	exchange_done(cl);
}

/* IDs for an error answered before a request head could be read. */
static void
ids_fresh(struct exchange *x)
{
	memset(&x->ids, 0, sizeof(x->ids));
	ids_uuid4(x->corr);
	ids_uuid4(x->rid);
	x->ids.correlation = x->corr;
	x->ids.correlation_len = UUID_LEN;
	x->ids.request = x->rid;
	x->ids.request_len = UUID_LEN;
}

static void
request_error(struct client *cl)
{
	struct exchange *x = &cl->x;
	bool too_large = cl->parser.err == HTTP_ERR_TOO_LARGE;

	ids_fresh(x);
	x->keep_alive = false;
	x->head_method = false;
	x->req_done = false;
	cl->state = CL_WAIT;
	send_error(cl, too_large ? FE_HEADERS_TOO_LARGE : FE_BAD_REQUEST,
	    too_large ? "request head over 64 KiB or over 100 headers" :
	    (cl->parser.err_text ? cl->parser.err_text : "malformed request"), 0, true);
	buf_consume(&cl->in, buf_len(&cl->in));
	exchange_done(cl);
}

static void
client_process(struct client *cl)
{
	while (!cl->closed) {
		enum http_status st;
		size_t used;

		switch (cl->state) {
		case CL_IDLE:
			if (buf_len(&cl->in) <= cl->parsed)
				return;
			if (cl->head_start_ms == 0) {
				cl->head_start_ms = clock_now_ms();
				client_arm_timer(cl);
			}
			st = http_parse(&cl->parser, buf_head(&cl->in) + cl->parsed,
			    buf_len(&cl->in) - cl->parsed, cl->parsed, &used);
			cl->parsed += (uint32_t)used;
			if (st == HTTP_NEED_MORE)
				return;
			if (st != HTTP_HEAD_DONE) {
				request_error(cl);
				return;
			}
			request_begin(cl);
			break;
		case CL_BODY: {
			struct exchange *x = &cl->x;

			if (buf_len(&cl->in) == 0) {
				resume_client(cl);	/* paused by a full buffer */
				return;
			}
			if (x->up && conn_pending(x->up->c) > CONN_HIGH_MARK) {
				pause_client(cl);
				return;
			}
			st = http_parse(&cl->parser, buf_head(&cl->in), buf_len(&cl->in), 0, &used);
			if (st == HTTP_ERROR) {
				if (!x->resp_head) {
					exchange_release_upstream(x, false);
					send_error(cl, FE_BAD_REQUEST, "malformed request body", 0, true);
					exchange_done(cl);
				} else {
					client_close(cl, "malformed request body");
				}
				return;
			}
			if (body_over_limit(cl)) {
				if (!x->resp_head) {
					exchange_release_upstream(x, false);
					send_error(cl, FE_PAYLOAD_TOO_LARGE,
					    "request body over the limit", 0, true);
					exchange_done(cl);
				} else {
					client_close(cl, "request body over the limit");
				}
				return;
			}
			forward_body(cl, buf_head(&cl->in), used);
			buf_consume(&cl->in, used);
			if (st == HTTP_MSG_DONE) {
				x->req_done = true;
				cl->state = CL_WAIT;
			}
			break;
		}
		case CL_TUNNEL:
			if (buf_len(&cl->in) == 0 || cl->x.up == NULL)
				return;
			cl->x.bytes_in += buf_len(&cl->in);
			cl->x.last_io_ms = clock_now_ms();
			if (conn_write(cl->x.up->c, buf_head(&cl->in), buf_len(&cl->in)) != 0) {
				client_close(cl, "tunnel upstream write failed");
				return;
			}
			buf_consume(&cl->in, buf_len(&cl->in));
			if (conn_pending(cl->x.up->c) > CONN_HIGH_MARK)
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
			buf_consume(&cl->in, buf_len(&cl->in));
			return;
		}
	}
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
			conn_shutdown(cl->c);
			cl->state = CL_LINGER;
			cl->linger_until_ms = clock_now_ms() + LINGER_MS;
			resume_client(cl);
			client_arm_timer(cl);
			return;
		}
		/* the client took the response: read more of it upstream */
		if (cl->x.up && (cl->state == CL_WAIT || cl->state == CL_TUNNEL)) {
			conn_resume_read(cl->x.up->c);
			if (buf_len(&cl->x.up->in) > 0 || conn_has_pending(cl->x.up->c))
				conn_kick_read(cl->x.up->c);
		}
		return;
	case CONN_CONNECTED:
	case CONN_FAILED:
		client_close(cl, "TLS handshake failed");
		return;
	case CONN_READABLE:
		break;
	}
	if (cl->read_paused)
		return;		/* a kick raced with a pause */
	n = conn_read(cl->c, &cl->in, CLIENT_BUF_MAX);
	if (n == CONN_AGAIN) {
		client_process(cl);
		if (!cl->closed && buf_len(&cl->in) >= CLIENT_BUF_MAX && cl->state != CL_IDLE)
			pause_client(cl);
		return;
	}
	if (n <= 0) {
		if (cl->state == CL_LINGER || cl->state == CL_CLOSING) {
			if (cl->state == CL_LINGER || conn_pending(cl->c) == 0)
				client_close(cl, "closed");
			else
				pause_client(cl);
			return;
		}
		if (cl->state == CL_WAIT && cl->x.req_done && n == 0) {
			/* half-close after a complete request: still answer */
			pause_client(cl);
			cl->x.close_after = true;
			return;
		}
		client_close(cl, n == 0 ? "client closed" : "client read error");
		return;
	}
	if (cl->state == CL_LINGER) {
		buf_consume(&cl->in, buf_len(&cl->in));
		return;
	}
	client_process(cl);
}

void
proxy_accept(struct listener *lis, int fd, const struct sockaddr *peer, socklen_t len)
{
	struct worker *w = lis->w;
	struct client *cl = calloc(1, sizeof(*cl));

	(void)len;
	if (cl == NULL) {
		close(fd);
		return;
	}
	cl->w = w;
	cl->lis = lis;
	cl->conf = config_ref(w->conf);
	cl->c = conn_new_fd(w->base, fd, client_event, cl);
	cl->timer = evtimer_new(w->base, client_timeout, cl);
	if (cl->c == NULL || cl->timer == NULL) {
		if (cl->c)
			conn_free(cl->c);
		else
			close(fd);
		if (cl->timer)
			event_free(cl->timer);
		config_unref(cl->conf);
		free(cl);
		return;
	}
	if (peer->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr,
		    cl->peer, sizeof(cl->peer));
	else if (peer->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr,
		    cl->peer, sizeof(cl->peer));
	http_parser_init(&cl->parser, false, &cl->head);
	cl->state = CL_IDLE;
	cl->idle_since_ms = clock_now_ms();
	lis->n_clients++;
	w->n_clients++;
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
		client_close(w->clients, "shutdown");
	/* run the deferred frees */
	event_base_loop(w->base, EVLOOP_NONBLOCK);
}
