#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "route.h"
#include "session.h"

static void client_process(struct client *cl);
static void client_process_loop(struct client *cl);
static void exchange_account(struct client *cl, const char *cut);

static struct client *
container_of_exchange(struct exchange *x)
{
	return (struct client *)((char *)x - offsetof(struct client, x));
}
static void ids_fresh(struct exchange *x);

/* ---------------------------------------------------------- helpers ---- */

unsigned
keepalive_secs(const struct client *cl)
{
	int64_t t = cl->lis->conf->idle_timeout / 1000;

	return t > 0 ? (unsigned)t : 1;
}

bool
client_write(struct client *cl, const void *p, size_t n)
{
	if (cl->closed)
		return false;
	cl->x.bytes_out += n;
	if (conn_write(cl->c, p, n) != 0) {
		client_close(cl, "downstream write failed");
		return false;
	}
	return true;
}

/* The last write of a response: the request is counted (metrics, access
 * log) before its last byte can reach the client, so a scrape that
 * follows the response always includes it (ferry(8), METRICS). */
bool
client_write_last(struct client *cl, const void *p, size_t n)
{
	if (cl->closed)
		return false;
	cl->x.bytes_out += n;
	exchange_account(cl, NULL);
	cl->x.bytes_out -= n;
	return client_write(cl, p, n);
}

void
pause_client(struct client *cl)
{
	if (!cl->read_paused && !cl->closed) {
		conn_pause_read(cl->c);
		cl->read_paused = true;
	}
}

void
resume_client(struct client *cl)
{
	if (cl->read_paused && !cl->closed) {
		conn_resume_read(cl->c);
		cl->read_paused = false;
		conn_kick_read(cl->c);
	}
}

/* The app's ID when valid (true), else a new UUIDv4, copied into OUT. */
static bool
take_id(char *out, const char *msg, const struct http_header *hd, size_t *len)
{
	if (hd && ids_valid(msg + hd->value.off, hd->value.len)) {
		memcpy(out, msg + hd->value.off, hd->value.len);
		*len = hd->value.len;
		return true;
	}
	ids_uuid4(out);
	*len = UUID_LEN;
	return false;
}

static void
ids_decide(struct exchange *x, const char *msg, const struct http_head *h)
{
	const struct http_header *c = headers_find(h, HDR_CORRELATION_ID);
	const struct http_header *r = headers_find(h, HDR_REQUEST_ID);
	const struct http_header *t = headers_find(h, HDR_TRACEPARENT);
	struct request_ids *ids = &x->ids;

	memset(ids, 0, sizeof(*ids));
	ids->correlation_from_app = take_id(x->corr, msg, c, &ids->correlation_len);
	ids->request_from_app = take_id(x->rid, msg, r, &ids->request_len);
	ids->correlation = x->corr;
	ids->request = x->rid;
	if (t == NULL || headers_count(h, HDR_TRACEPARENT) > 1 ||
	    !ids_traceparent_valid(msg + t->value.off, t->value.len)) {
		ids_traceparent(x->tp);
		x->tp_len = TRACEPARENT_LEN;
		ids->traceparent = x->tp;
		ids->traceparent_len = TRACEPARENT_LEN;
	} else {
		/* passes unchanged; kept for the access log's trace_id */
		x->tp_len = t->value.len < TRACEPARENT_LEN ? t->value.len : TRACEPARENT_LEN;
		memcpy(x->tp, msg + t->value.off, x->tp_len);
	}
}

/* Sends one of ferry's own error responses (SPEC §7). */
void
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
	x->ferr = (int)e;
	if (x->head_us == 0)
		exchange_head_sent(x);
	log_debug("%s %s", ferror_code(e), message);
	sbuf_clear(out);
	ferror_build(out, &a);
	if (!a.keep_alive)
		x->close_after = true;
	client_write_last(cl, out->p, out->len);
}

int
exchange_metrics_id(const struct exchange *x)
{
	/* inbound requests are the local app's, refused ones included */
	if (x->cl->lis->kind == LK_INBOUND)
		return runtime_inbound_metrics_id(x->cl->w->rt);
	return x->svc && x->svc->rt ? x->svc->rt->metrics_id : -1;
}

/* Metrics and the access log line of one request, once, at its end. */
static void
exchange_account(struct client *cl, const char *cut)
{
	struct exchange *x = &cl->x;
	enum metric_dir dir = cl->lis->kind == LK_INBOUND ? DIR_INBOUND : DIR_OUTBOUND;
	int id = exchange_metrics_id(x);
	const char *log = cl->logline.p;
	size_t mlen = 0;

	if (x->accounted || x->start_ms == 0)
		return;
	x->accounted = true;
	if (x->status || cut)
		metrics_request(cl->w->ms, dir, id, (int)x->status, x->head_us ? x->head_us : -1);
	if (x->ferr >= 0)
		metrics_error(cl->w->ms, dir, id, (enum ferry_error)x->ferr);
	if (cl->w->alog == NULL)
		return;
	while (mlen < cl->logline.len && log[mlen] != ' ')
		mlen++;
	accesslog_write(cl->w->alog, &(struct access_entry){
		.time_ms = x->start_wall_ms,
		.dir = dir,
		.service = x->svc ? x->svc->conf->name : dir == DIR_INBOUND ? "local_app" : "",
		.method = log,
		.method_len = mlen,
		.path = mlen < cl->logline.len ? log + mlen + 1 : "",
		.path_len = mlen < cl->logline.len ? cl->logline.len - mlen - 1 : 0,
		.status = (int)x->status,
		.duration_ms = (double)(clock_now_us() - x->start_us) / 1000.0,
		.upstream = x->ep ? x->ep->addr_text : NULL,
		.attempts = x->attempts,
		.resends = x->resent,
		.correlation_id = x->ids.correlation,
		.correlation_len = x->ids.correlation_len,
		.request_id = x->ids.request,
		.request_len = x->ids.request_len,
		.traceparent = x->tp_len ? x->tp : NULL,
		.traceparent_len = x->tp_len,
		.bytes_in = x->bytes_in,
		.bytes_out = x->bytes_out,
		.error = cut ? cut : x->ferr >= 0 ? ferror_code((enum ferry_error)x->ferr) : NULL,
		.peer = cl->has_identity ? cl->peer_id : NULL,
	});
}

/* The request stops counting toward max_concurrent (at its last byte). */
static void
exchange_leave(struct exchange *x)
{
	attempt_drop(x);
	/* ended before its outcome: a probe slot must not stay taken */
	if (x->svc && x->svc->rt && x->verdict == BREAKER_PROBE) {
		breaker_cancel(x->svc->rt->breaker, x->verdict);
		x->verdict = BREAKER_PASS;
	}
	if (x->entered) {
		breaker_leave(x->entered);
		x->entered = NULL;
	}
}

/* The exchange is over (response sent or error answered): next request,
 * or close. */
void
exchange_done(struct client *cl)
{
	struct exchange *x = &cl->x;

	exchange_release_upstream(x, false);
	exchange_leave(x);
	exchange_account(cl, NULL);
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
	/* a pipelined request is waiting: parse it here, unless the loop of
	 * client_process is below us and will (no recursion per request) */
	if (buf_len(&cl->in) > 0 && !cl->in_process)
		client_process(cl);
	else if (buf_len(&cl->in) == 0)
		buf_shrink_if_empty(&cl->in);
	if (!cl->closed)
		resume_client(cl);
}

/* ------------------------------------------------------ downstream ---- */

static void
client_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct client *cl = arg;

	(void)fd;
	(void)what;
	buf_free(&cl->in);
	http_parser_free(&cl->parser);
	sbuf_free(&cl->reqhead);
	sbuf_free(&cl->logline);
	gen_unref(cl->w, cl->gen);
	free(cl);
}

void
client_close(struct client *cl, const char *reason)
{
	if (cl->closed)
		return;
	log_debug("closing client %s: %s", cl->peer, reason);
	cl->closed = true;
	exchange_release_upstream(&cl->x, false);
	exchange_leave(&cl->x);
	if (cl->state == CL_BODY || cl->state == CL_WAIT || cl->state == CL_TUNNEL)
		exchange_account(cl, reason);
	conn_free(cl->c);
	cl->c = NULL;
	event_free(cl->timer);
	cl->timer = NULL;
	listener_client_gone(cl->lis);
	cl->w->n_clients--;
	if (cl->lis->kind == LK_INBOUND)
		cl->w->conns_inbound--;
	else
		cl->w->conns_outbound--;
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		cl->w->clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	/* callers up the stack may still look at cl: free it next turn */
	event_base_once(cl->w->base, -1, EV_TIMEOUT, client_free_deferred, cl, NULL);
}

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

/* Sets the one timer to the earliest deadline of the current state. */
void
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
		(void)handshake_overdue(cl, &at, now);
		break;
	case CL_BODY:
	case CL_WAIT:
		if (x->retry_at_ms) {
			at = x->retry_at_ms;
		} else if (!x->resp_head) {
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

	(void)fd;
	(void)what;
	switch (cl->state) {
	case CL_IDLE:
		if (handshake_overdue(cl, NULL, now)) {
			static struct log_limit limit;

			log_limited(&limit, LOG_WARN, "inbound TLS handshake failed peer=%s "
			    "cause=\"not done within %lldms\"", cl->peer,
			    (long long)cl->lis->conf->handshake_timeout);
			client_close(cl, "TLS handshake timeout");
			return;
		}
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
		if (x->retry_at_ms && cl->state != CL_TUNNEL) {
			if (now >= x->retry_at_ms) {
				x->retry_at_ms = 0;
				attempt_start(x);
				return;
			}
		} else if (!x->resp_head && cl->state != CL_TUNNEL) {
			if ((x->connect_deadline_ms && now >= x->connect_deadline_ms) ||
			    now >= x->try_deadline_ms) {
				attempt_timed_out(x, now);
				return;
			}
		} else if (now >= x->last_io_ms + x->svc->conf->timeouts.stream_idle) {
			static struct log_limit limit;

			log_limited(&limit, LOG_INFO, "cut stream cause=\"idle %lldms\" upstream=%s",
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

static void
body_out(void *arg, const char *p, size_t n)
{
	struct client *cl = arg;

	sbuf_add(cl->body_dst, p, n);
}

/* Parses the body bytes at the head of cl->in. A chunked body is framed
 * anew into DST (http1.h, rechunk); any other goes as it came, the first
 * *USED bytes of cl->in, and is not copied here. */
static enum http_status
body_parse(struct client *cl, struct sbuf *dst, size_t *used)
{
	enum http_status st;

	cl->body_dst = dst;
	st = http_parse(&cl->parser, buf_head(&cl->in), buf_len(&cl->in), 0, used);
	cl->x.bytes_in += *used;
	return st;
}

static bool
body_over_limit(const struct client *cl)
{
	uint64_t max = cl->lis->conf->max_request_body;

	return max && cl->parser.body_bytes > max;
}

/* A body that cannot go on is answered (before a response head) or cut:
 * malformed 400, trailers over the head limits 431, over
 * max_request_body 413, no memory 503. True when it ended the exchange. */
static bool
body_refused(struct client *cl, enum http_status st, const struct sbuf *dst)
{
	enum ferry_error e;
	const char *why;

	if (st == HTTP_ERROR && cl->parser.err == HTTP_ERR_TOO_LARGE) {
		e = FE_HEADERS_TOO_LARGE;
		why = "request head and trailers over 64 KiB or over 100 fields";
	} else if (st == HTTP_ERROR) {
		e = FE_BAD_REQUEST;
		why = cl->parser.err_text ? cl->parser.err_text : "malformed request body";
	} else if (body_over_limit(cl)) {
		e = FE_PAYLOAD_TOO_LARGE;
		why = "request body over the limit";
	} else if (dst->oom) {
		e = FE_SERVICE_UNAVAILABLE;
		why = "out of memory";
	} else {
		return false;
	}
	if (cl->x.resp_head) {
		client_close(cl, why);
		return true;
	}
	exchange_release_upstream(&cl->x, false);
	send_error(cl, e, why, e == FE_SERVICE_UNAVAILABLE ? 1 : 0, true);
	exchange_done(cl);
	return true;
}

/* Forwards request body bytes upstream, keeping a replay copy while the
 * request is small enough to be re-sent. */
static void
forward_body(struct client *cl, const char *p, size_t n)
{
	struct exchange *x = &cl->x;

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

/* The service for an outbound request (SPEC §4), or NULL once refused. */
static struct svc_state *
route_outbound(struct client *cl, const char *msg, const struct http_head *h)
{
	struct exchange *x = &cl->x;
	const char *path, *auth;
	size_t path_len, auth_len;
	char errmsg[256];
	long si;

	if (cl->lis->kind == LK_SERVICE)
		/* a port a reload removed routes nowhere */
		si = cl->lis->service < cl->gen->n_svcs ? (long)cl->lis->service : -1;
	else
		si = route_request(cl->gen->conf, msg, h);
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
		return NULL;
	}
	if (via_has_token(msg, h, via_token_out())) {
		send_error(cl, FE_LOOP_DETECTED, "request already passed through this ferry", 0,
		    !x->req_done);
		return NULL;
	}
	return &cl->gen->svcs[si];
}

/* The local app for an inbound request once the peer proved who it is and
 * that it holds a key (SPEC §5), or NULL once refused. */
static struct svc_state *
admit_inbound(struct client *cl, const char *msg, const struct http_head *h)
{
	const struct conf_inbound *in = &cl->gen->conf->inbound;
	struct exchange *x = &cl->x;
	const struct http_header *key;
	char errmsg[PEER_ID_MAX + 64];

	if (!in->enabled) {
		send_error(cl, FE_SERVICE_UNAVAILABLE, "the inbound listener was removed by a reload",
		    1, true);
		return NULL;
	}
	if (via_has_token(msg, h, via_token_in())) {
		send_error(cl, FE_LOOP_DETECTED, "request already passed through this ferry", 0,
		    !x->req_done);
		return NULL;
	}
	if (!cl->has_identity || !inbound_peer_allowed(in, cl->peer_id)) {
		metrics_auth_failure(cl->w->ms, AUTH_PEER_NOT_ALLOWED);
		snprintf(errmsg, sizeof(errmsg), cl->has_identity ?
		    "peer %s is not allowed" : "peer certificate has no usable URI or DNS name%s",
		    cl->has_identity ? cl->peer_id : "");
		send_error(cl, FE_INVALID_SERVICE_AUTH, errmsg, 0, !x->req_done);
		return NULL;
	}
	if (in->auth_enabled) {
		key = headers_find(h, HDR_SERVICE_AUTH);
		if (key == NULL || !inbound_key_ok(&cl->gen->inbound_keys, msg + key->value.off,
		    key->value.len)) {
			metrics_auth_failure(cl->w->ms, key == NULL ? AUTH_MISSING : AUTH_INVALID);
			send_error(cl, FE_INVALID_SERVICE_AUTH, key == NULL ?
			    "missing x-service-auth" : "invalid x-service-auth", 0, !x->req_done);
			return NULL;
		}
	}
	return &cl->gen->inbound;
}

static unsigned
retry_after_secs(int64_t ms)
{
	return ms <= 1000 ? 1 : (unsigned)((ms + 999) / 1000);
}

/* Admission (SPEC §5, §6): rate limit (429), max_concurrent (503), and
 * outbound the circuit breaker (503). None of these is an upstream
 * failure; each answers at once with retry-after. */
static bool
admit(struct client *cl)
{
	struct exchange *x = &cl->x;
	struct svc_state *s = x->svc;
	bool inbound = cl->lis->kind == LK_INBOUND;
	struct runtime *rt = cl->w->rt;
	const struct conf_rate_limit *rl = inbound ? &cl->gen->conf->inbound.rate_limit :
	    &s->conf->rate_limit;
	struct bucket *bucket = inbound ? runtime_inbound_bucket(rt) : s->rt->bucket;
	struct breaker *br = inbound ? runtime_inbound_breaker(rt) : s->rt->breaker;
	const struct conf_breaker *bc = &s->conf->breaker;
	int64_t now = clock_now_ms(), wait = 0;
	char msg[256];

	x->verdict = BREAKER_PASS;
	if (rl->enabled && !bucket_take(bucket, rl, clock_now_us(), &wait)) {
		metrics_rate_limited(cl->w->ms, inbound ? DIR_INBOUND : DIR_OUTBOUND,
		    exchange_metrics_id(x));
		snprintf(msg, sizeof(msg), "%s is over its rate limit of %g requests/s",
		    s->conf->name, rl->rps);
		send_error(cl, FE_RATE_LIMITED, msg, retry_after_secs(wait), !x->req_done);
		return false;
	}
	if (!breaker_enter(br, bc)) {
		snprintf(msg, sizeof(msg), "%s has %u requests in flight (max_concurrent)",
		    s->conf->name, bc->max_concurrent);
		send_error(cl, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		return false;
	}
	x->entered = br;
	if (inbound)
		return true;
	x->verdict = breaker_allow(br, bc, now, &wait);
	if (x->verdict == BREAKER_REJECT) {
		snprintf(msg, sizeof(msg), "circuit open for %s", s->conf->name);
		send_error(cl, FE_SERVICE_UNAVAILABLE, msg, retry_after_secs(wait), !x->req_done);
		return false;
	}
	retry_budget_request(s->rt->budget, now);
	return true;
}

/* A request head is complete: route it, rewrite it, send it. */
static void
request_begin(struct client *cl)
{
	struct exchange *x = &cl->x;
	struct http_head *h = &cl->head;
	const char *msg = buf_head(&cl->in);
	const char *path, *auth;
	size_t path_len, auth_len;
	bool ambiguous;
	char errmsg[256];

	/* a new request runs on the config in force now */
	if (cl->gen != cl->w->gen) {
		gen_unref(cl->w, cl->gen);
		cl->gen = gen_ref(cl->w->gen);
	}
	memset(x, 0, offsetof(struct exchange, corr));
	x->cl = cl;
	x->ferr = -1;
	x->start_ms = clock_now_ms();
	x->start_us = clock_now_us();
	if (cl->w->alog) {
		x->start_wall_ms = clock_wall_ms();
		sbuf_clear(&cl->logline);
		const char *lp, *la;
		size_t lplen, lalen;

		/* the path, also of an absolute-form target (HTTP_PROXY clients) */
		target_split(msg + h->target.off, h->target.len, &lp, &lplen, &la, &lalen);
		sbuf_add(&cl->logline, msg + h->method.off, h->method.len);
		sbuf_add(&cl->logline, " ", 1);
		if (lplen == 0 || lp[0] == '?')
			sbuf_add(&cl->logline, "/", 1);
		sbuf_add(&cl->logline, lp, lplen);
	}
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
	cl->parser.rechunk = h->chunked;	/* its body is framed anew */
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
	if (!headers_framing_ok(h)) {
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
	x->svc = cl->lis->kind == LK_INBOUND ? admit_inbound(cl, msg, h) :
	    route_outbound(cl, msg, h);
	if (x->svc == NULL || !admit(cl))
		goto refused;
	x->deadline_ms = x->start_ms + x->svc->conf->timeouts.request;

	target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
	sbuf_clear(&cl->reqhead);
	{
		struct sbuf *t = &cl->w->scratch;
		bool inbound = cl->lis->kind == LK_INBOUND;
		struct upstream_head_args a = {
			.host = x->svc->conf->upstream_host,
			.auth_key = x->svc->conf->auth_key,
			.ids = &x->ids,
			.via = inbound ? via_token_in() : via_token_out(),
			.upgrade = x->upgrade,
			.peer = inbound ? cl->peer_id : NULL,
			.forwarded_for = inbound ? cl->peer : NULL,
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
	if (!x->http10 && expects_continue(msg, h) && !x->req_done &&
	    !client_write(cl, "HTTP/1.1 100 Continue\r\n\r\n", 25))
		return;
	buf_consume(&cl->in, h->head_len);
	cl->parsed = 0;
	if (!x->req_done) {
		/* body bytes that came with the head leave with it, in one write */
		size_t used = 0;
		enum http_status st;

		st = body_parse(cl, &cl->reqhead, &used);
		if (st != HTTP_ERROR && !cl->parser.rechunk)
			sbuf_add(&cl->reqhead, buf_head(&cl->in), used);
		if (body_refused(cl, st, &cl->reqhead))
			return;
		/* at most a buffer's worth: sent once, kept for a replay if small */
		if (cl->reqhead.len - cl->reqhead_len > x->svc->conf->retries.buffer)
			x->replayable = false;
		buf_consume(&cl->in, used);
		if (st == HTTP_MSG_DONE)
			x->req_done = true;
		cl->state = x->req_done ? CL_WAIT : CL_BODY;
	}
	attempt_start(x);
	return;

refused:
	if (!x->req_done)
		x->close_after = true;	/* its body has nowhere to go */
	if (h->head_len <= buf_len(&cl->in))
		buf_consume(&cl->in, h->head_len);
	exchange_done(cl);
}

/* IDs for an error answered before a request head could be read. */
static void
ids_fresh(struct exchange *x)
{
	memset(x, 0, offsetof(struct exchange, corr));
	x->cl = container_of_exchange(x);
	x->ferr = -1;
	x->start_ms = clock_now_ms();
	x->start_us = clock_now_us();
	x->start_wall_ms = clock_wall_ms();
	sbuf_clear(&x->cl->logline);
	x->tp_len = 0;
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
			if (x->up == NULL || conn_pending(x->up->c) > CONN_HIGH_MARK) {
				/* no attempt running (backoff) or it is full */
				pause_client(cl);
				return;
			}
			sbuf_clear(&cl->w->scratch);
			st = body_parse(cl, &cl->w->scratch, &used);
			if (body_refused(cl, st, &cl->w->scratch))
				break;
			if (cl->parser.rechunk)
				forward_body(cl, cl->w->scratch.p, cl->w->scratch.len);
			else
				forward_body(cl, buf_head(&cl->in), used);
			buf_consume(&cl->in, used);
			if (cl->state != CL_BODY)
				break;	/* the write failed and the exchange ended */
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
		metrics_tls_handshake(cl->w->ms, DIR_INBOUND, conn_session_reused(cl->c));
		/* inbound TLS handshake done: who is calling? */
		cl->has_identity = inbound_peer_identity(conn_ssl(cl->c), cl->peer_id,
		    sizeof(cl->peer_id));
		return;
	case CONN_FAILED:
		log_handshake_failure(cl);
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
	cl->gen = gen_ref(w->gen);
	cl->c = lis->kind == LK_INBOUND ?
	    conn_accept_tls(w->base, fd, cl->gen->conf->inbound.ctx, client_event, cl) :
	    conn_new_fd(w->base, fd, client_event, cl);
	cl->timer = evtimer_new(w->base, client_timeout, cl);
	if (cl->c == NULL || cl->timer == NULL) {
		if (cl->c)
			conn_free(cl->c);
		else
			close(fd);
		if (cl->timer)
			event_free(cl->timer);
		gen_unref(w, cl->gen);
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
	cl->parser.on_data = body_out;
	cl->parser.arg = cl;
	cl->parser.keep_trailer = headers_trailer_allowed;
	cl->state = CL_IDLE;
	cl->idle_since_ms = clock_now_ms();
	lis->n_clients++;
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
		client_close(w->clients, "shutdown");
	/* run the deferred frees */
	event_base_loop(w->base, EVLOOP_NONBLOCK);
}


void
proxy_close_idle(struct worker *w)
{
	struct client *cl, *next;

	/* between requests with nothing buffered: no request is lost */
	for (cl = w->clients; cl; cl = next) {
		next = cl->next;
		if (cl->state == CL_IDLE && buf_len(&cl->in) == 0)
			client_close(cl, "draining");
	}
}
