#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"
#include "session.h"

static void upstream_event(struct conn *c, enum conn_event ev, void *arg);

/* --------------------------------------------------- exchange end ---- */

void
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

void
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

void
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

