/*
 * The HTTP/1.1 upstream codec: an attempt's request on a pooled
 * connection, and the response parsed and handed to proxy.c piece by
 * piece (exchange.h). It knows the connection, never the client.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "exchange.h"
#include "log.h"
#include "pool.h"

static void upstream_event(struct conn *c, enum conn_event ev, void *arg);
static void upstream_relay(struct exchange *x);

#define UPSTREAM_BUF_MAX (HTTP_MAX_HEAD_ALL + 16384)

/* The connection failed or closed before a response head. */
static void
failed_conn(struct exchange *x)
{
	struct conn *c = x->up->c;
	char msg[256];

	switch (conn_error(c)) {
	case CONN_REFUSED:
	case CONN_CONNECT_FAILED:
		snprintf(msg, sizeof(msg), "connect %s: %s", x->ep->addr_text,
		    conn_error_text(c));
		proxy_attempt_failed(x, conn_error(c) == CONN_REFUSED ? AR_REFUSED :
		    AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, msg);
		return;
	case CONN_TLS_FAILED:
		snprintf(msg, sizeof(msg), "TLS handshake with %s failed: %s",
		    x->ep->addr_text, conn_error_text(c));
		proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_ERROR, msg);
		return;
	default:
		snprintf(msg, sizeof(msg), x->up->reused ?
		    "upstream %s closed a reused connection" :
		    "upstream %s closed the connection before a response (%s)",
		    x->ep->addr_text, conn_error_text(c));
		proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, msg);
		return;
	}
}

/* SPEC §12: gRPC to an endpoint that speaks only HTTP/1.1 is a 502. */
static void
grpc_refused(struct exchange *x)
{
	char msg[256];

	/* the endpoint is not at fault: no outcome is recorded */
	snprintf(msg, sizeof(msg), "gRPC needs HTTP/2, and %s speaks HTTP/1.1",
	    x->ep->addr_text);
	proxy_refuse(x, FE_SERVICE_ERROR, msg, 0, !x->req_done);
}

/* protocol auto over TLS: the request waits for ALPN to say which */
static bool
alpn_pending(const struct exchange *x)
{
	return x->svc->conf->protocol == PROTO_AUTO && x->svc->conf->tls.enabled &&
	    x->connect_deadline_ms != 0;
}

static bool
h1_start(struct exchange *x)
{
	int64_t now = clock_now_ms();
	char msg[256];
	bool fresh = x->resend_fresh;

	x->resend_fresh = false;
	x->up = pool_checkout(x->ep, now);
	if (x->up != NULL && fresh) {
		/* SPEC §6: the re-send after a stale reuse goes on a new
		 * connection; the pooled ones were opened as long ago as the
		 * one that just failed (an upstream restart closes them all).
		 * One is let go, so the new one stays within max_per_endpoint
		 * (attempt_pool_room counted it as room) */
		pool_discard(x->up);
		x->up = NULL;
	}
	if (x->up != NULL) {
		if (x->grpc) {
			grpc_refused(x);	/* a pooled HTTP/1.1 connection */
			return false;
		}
		conn_set_cb(x->up->c, upstream_event, x);
		x->connect_deadline_ms = 0;	/* attempt_start arms the timer */
	} else {
		x->up = pool_connect(x->w, x->svc, x->ep, upstream_event, x, now);
		if (x->up == NULL) {
			snprintf(msg, sizeof(msg), "connect %s: %s", x->ep->addr_text,
			    strerror(errno));
			proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, msg);
			return false;
		}
		metrics_conn_opened(x->w->ms, exchange_metrics_id(x));
	}
	x->up->requests++;
	x->up->sent_before = conn_bytes_written(x->up->c);
	x->up->parsed = 0;
	http_parser_reset(&x->up->parser);
	if (alpn_pending(x))
		return true;	/* written once connected (h1_connected) */
	if (x->grpc) {
		grpc_refused(x);
		return false;
	}
	if (conn_write(x->up->c, x->req.p, x->req.len) != 0) {
		failed_conn(x);
		return false;
	}
	return true;
}

/* Connected (and the TLS handshake done): an auto service learns here
 * which protocol the endpoint chose. */
static void
h1_connected(struct exchange *x)
{
	const unsigned char *alpn = NULL;
	unsigned alen = 0;
	bool held = alpn_pending(x);

	if (conn_is_tls(x->up->c)) {
		metrics_tls_handshake(x->w->ms, DIR_OUTBOUND, conn_session_reused(x->up->c));
		SSL_get0_alpn_selected(conn_ssl(x->up->c), &alpn, &alen);
	}
	if (alen == 2 && memcmp(alpn, "h2", 2) == 0) {
		h2_up_adopt(x);
		return;
	}
	if (held && x->grpc) {
		grpc_refused(x);
		return;
	}
	/* the head first: a downstream codec may hand over body at once */
	if (held && conn_write(x->up->c, x->req.p, x->req.len) != 0) {
		failed_conn(x);
		return;
	}
	proxy_attempt_connected(x);
}

static bool
h1_send(struct exchange *x, const void *p, size_t n)
{
	if (conn_write(x->up->c, p, n) != 0) {
		failed_conn(x);
		return false;
	}
	return true;
}

static bool
h1_congested(const struct exchange *x)
{
	/* the head is not out before ALPN spoke: no body before it */
	return conn_pending(x->up->c) > CONN_HIGH_MARK || alpn_pending(x);
}

static void
h1_resume(struct exchange *x)
{
	struct upconn *u = x->up;

	if (u->read_eof)
		return;
	conn_resume_read(u->c);
	if (buf_len(&u->in) > 0 || conn_has_pending(u->c))
		conn_kick_read(u->c);
}

static void
h1_release(struct exchange *x, bool reusable)
{
	struct upconn *u = x->up;

	x->up = NULL;
	if (reusable)
		pool_checkin(u, &x->svc->conf->pool, clock_now_ms(), x->up_keepalive_ms);
	else
		pool_discard(u);
}

static bool
h1_request_sent(const struct exchange *x)
{
	return conn_bytes_written(x->up->c) > x->up->sent_before;
}

/* The keep-alive race: a reused connection closed before any of the
 * response came, and nothing of this request was written (the bytes of
 * the requests before it count for nothing), or only an idempotent
 * request that is whole in the replay copy. */
static bool
h1_unprocessed(const struct exchange *x)
{
	const struct upconn *u = x->up;

	if (!u->reused)
		return false;
	if (conn_bytes_written(u->c) == u->sent_before)
		return true;
	return x->idempotent && x->replayable && buf_len(&u->in) == 0;
}

static void
h1_handover(struct exchange *from, struct exchange *to, bool head)
{
	struct upconn *u = from->up;

	from->up = NULL;
	to->up = u;
	conn_set_cb(u->c, upstream_event, to);
	if (!head)
		return;
	/* the head was parsed for FROM, and is still in the buffer: parsed
	 * again, for TO, it sets the body's framing up as for any exchange */
	u->parsed = 0;
	http_parser_reset(&u->parser);
	upstream_relay(to);
}

static bool
h1_close_write(struct exchange *x)
{
	if (conn_close_write(x->up->c) != 0) {
		proxy_response_cut(x, END_UPSTREAM_CLOSED, "upstream write failed");
		return false;
	}
	return true;
}

static bool
h1_write_closed(const struct exchange *x)
{
	return conn_write_closed(x->up->c);
}

static int64_t
h1_progress(struct exchange *x)
{
	return conn_progress_ms(x->up->c);
}

const struct up_ops h1_up_ops = {
	.start = h1_start,
	.send = h1_send,
	.congested = h1_congested,
	.resume = h1_resume,
	.release = h1_release,
	.request_sent = h1_request_sent,
	.unprocessed = h1_unprocessed,
	.handover = h1_handover,
	.close_write = h1_close_write,
	.write_closed = h1_write_closed,
	.progress = h1_progress,
};

/* ------------------------------------------------------- response ---- */

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
			int64_t s = 0;

			/* saturating: any number of digits from a hostile upstream */
			for (p += 8; p < v + ka->value.len && *p >= '0' && *p <= '9'; p++)
				if ((s = s * 10 + (*p - '0')) >= 86400)
					return 0;
			return s * 1000;
		}
	}
	return 0;
}

static void
dechunk_data(void *arg, const char *at, size_t len)
{
	struct exchange *x = arg;

	sbuf_add(&x->w->scratch_up, at, len);
}

/* A trailer field the parser kept, for a client that takes trailers apart
 * from the body (HTTP/2): they go with the end of the response. */
static void
trailer_in(void *arg, const char *field, size_t len)
{
	struct exchange *x = arg;

	sbuf_add(&x->trailers, field, len);
	sbuf_add(&x->trailers, "\r\n", 2);
}

/* A parsed response head; false when the exchange ended or moved on. */
static bool
response_head(struct exchange *x)
{
	struct upconn *u = x->up;
	struct http_head *h = &u->head;
	const char *msg = buf_head(&u->in);
	bool final, until_close;

	if (headers_classify(msg, h) != 0) {
		proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "malformed response head");
		return false;
	}
	if (!headers_framing_ok(msg, h)) {
		/* re-emitted, the header would frame the body differently for
		 * the client than it was read here */
		proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR,
		    "response Transfer-Encoding must be chunked alone, named once");
		return false;
	}
	final = h->status >= 200 || (h->status == 101 && x->upgrade);
	if (final) {
		if (x->head_method || h->status == 204 || h->status == 304)
			http_parser_skip_body(&u->parser);
		x->up_keepalive_ms = parse_keepalive_timeout(msg, h);
	}
	until_close = final && http_parser_body_until_eof(&u->parser) && !x->head_method &&
	    h->status != 204 && h->status != 304;
	if (!proxy_response_head(x, msg, h, until_close))
		return false;
	buf_consume(&u->in, h->head_len);
	if (!final) {
		http_parser_reset(&u->parser);
		return true;
	}
	u->parser.dechunk = x->dechunk;
	/* a chunked body for an HTTP/1.1 client is framed anew, so that its
	 * trailers are judged as a request's are (http1.h, rechunk) */
	u->parser.rechunk = x->resp_chunked;
	u->parser.keep_trailer = headers_trailer_allowed;
	u->parser.sent = x->resp_measured ? &x->resp_sent : NULL;
	/* a body ferry codes anew is framed by proxy.c: trailers go apart */
	u->parser.on_trailer = x->unframed || x->zf ? trailer_in : NULL;
	u->parser.on_data = dechunk_data;
	u->parser.arg = x;
	sbuf_clear(&x->trailers);
	return true;
}

/* Parses and relays what the upstream sent. */
static void
upstream_relay(struct exchange *x)
{
	struct upconn *u = x->up;
	struct sbuf *out = &x->w->scratch_up;
	bool framed;

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
			proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR,
			    "malformed response from upstream");
			return;
		}
		u->parsed = 0;
		if (!response_head(x))
			return;
		if (!x->resp_head && x->down->congested(x)) {
			/* interim heads pile up at a client that does not read:
			 * the client's drain resumes this */
			conn_pause_read(u->c);
			return;
		}
	}
	if (x->tunnel) {
		size_t n = buf_len(&u->in);

		if (n > 0 && !proxy_response_data(x, buf_head(&u->in), n))
			return;
		buf_consume(&u->in, n);
		if (x->down->congested(x))
			conn_pause_read(u->c);
		return;
	}
	/* the body leaves as it came, or as the parser wrote it into OUT */
	framed = x->dechunk || u->parser.rechunk;
	/* body: runs once even with no bytes, so a bodiless message ends */
	do {
		enum http_status st;
		size_t used;
		const char *p;
		size_t n;

		sbuf_clear(out);
		st = http_parse(&u->parser, buf_head(&u->in), buf_len(&u->in), 0, &used);
		if (st == HTTP_ERROR) {
			proxy_response_cut(x, END_MALFORMED_UPSTREAM_BODY, "malformed body");
			return;
		}
		if (out->oom) {
			proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
			return;
		}
		p = framed ? out->p : buf_head(&u->in);
		n = framed ? out->len : used;
		if (st == HTTP_MSG_DONE) {
			bool reusable = u->head.keep_alive && buf_len(&u->in) == used;
			struct buf held = { 0 };

			/* the connection goes back before the last bytes leave,
			 * and a pooled one frees its buffer: the bytes leave
			 * from a buffer this call holds. The whole buffer when
			 * they are all it has (a response that came in one
			 * read: no copy), else a copy. */
			if (!framed && n > 0 && buf_len(&u->in) == used) {
				held = u->in;
				u->in = (struct buf){ 0 };
				p = buf_head(&held);
			} else if (!framed) {
				sbuf_add(out, p, n);
				p = out->p;
			}
			if (out->oom || x->trailers.oom) {
				buf_free(&held);
				proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
				return;
			}
			buf_consume(&u->in, held.data ? 0 : used);
			if (x->trailers.len > 0) {
				struct http_head t;

				headers_from_lines(x->trailers.p, x->trailers.len, &t);
				proxy_response_trailers(x, x->trailers.p, &t);
				http_head_release(&t);
			}
			proxy_response_end(x, p, n, reusable);
			buf_free(&held);
			return;
		}
		if (!proxy_response_data(x, p, n))
			return;
		buf_consume(&u->in, used);
	} while (buf_len(&u->in) > 0);
	if (x->up && x->down->congested(x))
		conn_pause_read(x->up->c);
}

static void
upstream_eof(struct exchange *x, ssize_t n)
{
	struct upconn *u = x->up;

	if (x->tunnel && n == 0) {
		/* a half-close: the client's way runs on */
		u->read_eof = true;
		conn_pause_read(u->c);
		proxy_tunnel_upstream_fin(x);
		return;
	}
	if (!x->resp_head) {
		failed_conn(x);
		return;
	}
	if (n == 0 && http_parse_eof(&u->parser) == HTTP_MSG_DONE) {
		x->close_after = true;
		proxy_response_end(x, NULL, 0, false);
		return;
	}
	{
		char why[160];

		snprintf(why, sizeof(why), "upstream closed: %s", conn_error_text(u->c));
		proxy_response_cut(x, END_UPSTREAM_CLOSED, why);
	}
}

static void
upstream_readable(struct exchange *x)
{
	struct upconn *u = x->up;
	ssize_t n;

	if (u->read_eof) {
		/* nothing more comes: only a failed write is news */
		if (conn_write_failed(u->c))
			proxy_response_cut(x, END_UPSTREAM_CLOSED, "upstream write failed");
		return;
	}
	n = conn_read(u->c, &u->in, x->tunnel ? 65536 : UPSTREAM_BUF_MAX);
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

	(void)c;
	switch (ev) {
	case CONN_CONNECTED:
		h1_connected(x);
		return;
	case CONN_FAILED:
		failed_conn(x);
		return;
	case CONN_DRAINED:
		proxy_upstream_drained(x);
		return;
	case CONN_READABLE:
		upstream_readable(x);
		return;
	}
}
