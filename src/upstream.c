#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"
#include "retry.h"
#include "session.h"

static void upstream_event(struct conn *c, enum conn_event ev, void *arg);

/* 1xx responses to one request before its final one: Early Hints come
 * once or twice; an upstream streaming them is broken or hostile. */
#define MAX_INTERIM_RESPONSES 16

/* --------------------------------------------------- exchange end ---- */

void
exchange_release_upstream(struct exchange *x, bool reusable)
{
	struct upconn *u = x->up;

	if (u == NULL)
		return;
	x->up = NULL;
	if (reusable)
		pool_checkin(u, &x->svc->conf->pool, clock_now_ms(), x->up_keepalive_ms);
	else
		pool_discard(u);
}

static bool
may_resend(const struct exchange *x, enum attempt_result r)
{
	if (r != AR_RESET || x->resent || x->up == NULL || !x->up->reused || x->resp_head)
		return false;
	if (conn_bytes_written(x->up->c) == 0)
		return true;
	return x->idempotent && x->replayable && buf_len(&x->up->in) == 0;
}

static enum attempt_result
status_result(int status)
{
	switch (status) {
	case 502: return AR_STATUS_502;
	case 503: return AR_STATUS_503;
	case 504: return AR_STATUS_504;
	default: return AR_OK;
	}
}

void
attempt_drop(struct exchange *x)
{
	if (!x->attempt_open)
		return;
	x->attempt_open = false;
	x->ep->in_flight--;
	if (x->ep->rt)
		atomic_fetch_sub_explicit(&x->ep->rt->in_flight, 1, memory_order_relaxed);
}

/* The attempt's outcome, once: what the breaker, outlier detection and the
 * balancer learn from it (SPEC §6 Failures). */
static void
attempt_record(struct exchange *x, enum attempt_result r)
{
	struct svc_state *s = x->svc;
	struct endpoint *ep = x->ep;
	int64_t now = clock_now_ms();
	bool failure = attempt_is_failure(r);

	static const enum upstream_result ur[] = {
		[AR_OK] = UR_OK, [AR_CONNECT_FAILURE] = UR_CONNECT_FAILURE,
		[AR_REFUSED] = UR_CONNECT_FAILURE, [AR_RESET] = UR_RESET,
		[AR_PER_TRY_TIMEOUT] = UR_TIMEOUT, [AR_STATUS_502] = UR_5XX,
		[AR_STATUS_503] = UR_5XX, [AR_STATUS_504] = UR_5XX,
	};

	if (!x->attempt_open)
		return;
	x->attempt_open = false;
	ep->in_flight--;
	if (ep->rt)
		atomic_fetch_sub_explicit(&ep->rt->in_flight, 1, memory_order_relaxed);
	metrics_attempt(x->cl->w->ms, exchange_metrics_id(x), ur[r]);
	/* a failure costs a penalty, or a dead endpoint, quick to fail and
	 * never busy, would look the best (balancer.h) */
	if (failure)
		ewma_failure(&ep->ewma_ms, (double)(now - x->attempt_start_ms), &ep->ewma_last_ms, now);
	else
		ewma_update(&ep->ewma_ms, (double)(now - x->attempt_start_ms), &ep->ewma_last_ms, now);
	if (ep->rt)
		atomic_store_explicit(&ep->rt->ewma_us, (uint64_t)(ep->ewma_ms * 1000),
		    memory_order_relaxed);
	if (r == AR_CONNECT_FAILURE || r == AR_REFUSED)
		backoff_failed(&ep->backoff, now);
	else if (r != AR_RESET && r != AR_PER_TRY_TIMEOUT)
		backoff_reset(&ep->backoff);	/* it answered */
	if (s->rt == NULL)
		return;		/* the local app: no breaker, no ejection */
	breaker_record(s->rt->breaker, &s->conf->breaker, x->verdict, failure, now);
	x->verdict = BREAKER_PASS;	/* a probe's outcome is in */
	if (ep->outlier)
		outlier_record(s->outliers, ep->outlier, &s->conf->outlier, failure, now);
}

/* After a failed attempt: may another one follow? The policy, the breaker
 * and the budget (which this takes from) all have a say. */
static bool
retry_allowed(struct exchange *x, enum attempt_result r, bool bytes_sent, int64_t *delay)
{
	struct svc_state *s = x->svc;
	const struct conf_service *c = s->conf;
	int64_t now = clock_now_ms(), ra;
	struct retry_input in = {
		.result = r,
		.retries_done = x->retries,
		.idempotent = x->idempotent,
		/* body bytes consumed past the replay buffer are gone: as sent */
		.request_bytes_sent = bytes_sent || !x->replayable,
		.replayable = x->replayable,
		.now_ms = now,
		.deadline_ms = x->deadline_ms,
	};
	struct retry_decision d;
	enum breaker_verdict v;

	if (s->rt == NULL || x->resp_head)
		return false;
	d = retry_decide(&c->retries, &in, ids_random());
	if (!d.retry)
		return false;
	v = breaker_allow(s->rt->breaker, &c->breaker, now, &ra);
	if (v == BREAKER_REJECT)
		return false;
	if (!retry_budget_take(s->rt->budget, &c->retries, now)) {
		breaker_cancel(s->rt->breaker, v);
		metrics_budget_exhausted(x->cl->w->ms, s->rt->metrics_id);
		log_debug("retry budget of %s exhausted", c->name);
		return false;
	}
	x->verdict = v;		/* the retry may be a half-open probe */
	*delay = d.delay_ms;
	return true;
}

/* The next attempt, on another endpoint when there is one, after DELAY. */
static void
retry_schedule(struct exchange *x, int64_t delay)
{
	x->retries++;
	x->avoid = x->ep;
	metrics_retry(x->cl->w->ms, x->svc->rt->metrics_id);
	if (delay <= 0) {
		attempt_start(x);
		return;
	}
	x->retry_at_ms = clock_now_ms() + delay;
	client_arm_timer(x->cl);
}

/* What a remote peer is told of a failure of the local app: its address,
 * port and errno text stay in the WARN line, for the operator. */
static const char *
peer_message(const struct exchange *x, enum attempt_result r, enum ferry_error e,
    const char *msg)
{
	if (x->cl->lis->kind != LK_INBOUND)
		return msg;
	if (r == AR_REFUSED)
		return "local app unavailable: connection refused";
	if (r == AR_CONNECT_FAILURE)
		return e == FE_SERVICE_TIMEOUT ? "local app unavailable: connect timed out" :
		    e == FE_SERVICE_UNAVAILABLE ? "local app unavailable: connect failed" :
		    "local app unavailable";
	if (r == AR_PER_TRY_TIMEOUT)
		return "no response head from the local app in time";
	return "local app failed before a complete response";
}

/* An attempt failed before a response head reached the client: re-send,
 * retry, or answer with E and MSG. */
static void
attempt_failed(struct exchange *x, enum attempt_result r, enum ferry_error e, const char *msg)
{
	struct client *cl = x->cl;
	bool sent = x->up && conn_bytes_written(x->up->c) > 0;
	int64_t delay;
	char full[320];

	if (may_resend(x, r)) {
		/* the keep-alive race: the upstream closed a pooled connection
		 * as we reused it; not a failure, not a retry */
		log_debug("re-sending on a new connection to %s", x->ep->addr_text);
		/* counted apart, so the upstream's count of requests is ferry's
		 * attempts plus these */
		metrics_resend(x->cl->w->ms, exchange_metrics_id(x));
		exchange_release_upstream(x, false);
		attempt_drop(x);
		x->resent = true;
		x->attempts--;
		attempt_start(x);
		return;
	}
	attempt_record(x, r);
	exchange_release_upstream(x, false);
	if (retry_allowed(x, r, sent, &delay)) {
		retry_schedule(x, delay);
		return;
	}
	if (x->attempts > 1) {
		snprintf(full, sizeof(full), "%s (%u attempts)", msg, x->attempts);
		msg = full;
	}
	{
		static struct log_limit limit;

		log_limited(&limit, LOG_WARN, "upstream failed service=%s code=%s cause=\"%s\"",
		    x->svc->conf->name, ferror_code(e), msg);
	}
	send_error(cl, e, peer_message(x, r, e, msg), e == FE_SERVICE_UNAVAILABLE ? 1 : 0,
	    !x->req_done);
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
		attempt_failed(x, conn_error(c) == CONN_REFUSED ? AR_REFUSED : AR_CONNECT_FAILURE,
		    FE_SERVICE_UNAVAILABLE, msg);
		return;
	case CONN_TLS_FAILED:
		snprintf(msg, sizeof(msg), "TLS handshake with %s failed: %s",
		    x->ep->addr_text, conn_error_text(c));
		attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_ERROR, msg);
		return;
	default:
		snprintf(msg, sizeof(msg), reused ?
		    "upstream %s closed a reused connection" :
		    "upstream %s closed the connection before a response (%s)",
		    x->ep->addr_text, conn_error_text(c));
		attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, msg);
		return;
	}
}

void
attempt_timed_out(struct exchange *x, int64_t now)
{
	char msg[256];

	if (x->connect_deadline_ms && now >= x->connect_deadline_ms) {
		snprintf(msg, sizeof(msg), "connect %s: timed out after %lldms",
		    x->ep->addr_text, (long long)x->svc->conf->timeouts.connect);
		attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_TIMEOUT, msg);
		return;
	}
	snprintf(msg, sizeof(msg), "no response head from %s within %.3gs",
	    x->ep->addr_text, (double)(x->try_deadline_ms - x->attempt_start_ms) / 1000);
	attempt_failed(x, AR_PER_TRY_TIMEOUT, FE_SERVICE_TIMEOUT, msg);
}

/* ------------------------------------------------------- upstream ---- */

static bool
endpoint_available(const struct svc_state *s, struct endpoint *ep, bool any_healthy,
    int64_t now)
{
	if (ep->rt && any_healthy &&
	    !atomic_load_explicit(&ep->rt->healthy, memory_order_relaxed))
		return false;
	return ep->outlier == NULL || !outlier_ejected(s->outliers, ep->outlier, now);
}

/* Health is a hint, not a wall: when no endpoint is healthy, all are used. */
static bool
any_healthy(const struct svc_state *s)
{
	for (size_t i = 0; i < s->n_eps; i++)
		if (s->eps[i]->rt == NULL ||
		    atomic_load_explicit(&s->eps[i]->rt->healthy, memory_order_relaxed))
			return true;
	return false;
}

static struct endpoint *
pick_endpoint(struct exchange *x, int64_t now)
{
	struct svc_state *s = x->svc;
	struct lb_candidate *cands = x->cl->w->cands;
	bool healthy = any_healthy(s);
	long i, avoid = -1;

	if (s->n_eps == 0)
		return NULL;
	if (s->n_eps == 1)
		return endpoint_available(s, s->eps[0], healthy, now) ? s->eps[0] : NULL;
	for (size_t j = 0; j < s->n_eps; j++) {
		struct endpoint *ep = s->eps[j];

		cands[j].available = endpoint_available(s, ep, healthy, now);
		cands[j].in_flight = ep->in_flight;
		cands[j].ewma_ms = ewma_current(ep->ewma_ms, ep->ewma_last_ms, now);
		cands[j].weight = ep->weight;
		cands[j].backoff = backoff_active(&ep->backoff, now);
		if (x->retries && ep == x->avoid)
			avoid = (long)j;
	}
	i = balancer_pick(s->conf->load_balancer, cands, s->n_eps, avoid, &s->rr, ids_random());
	return i < 0 ? NULL : s->eps[i];
}

/* pool.max_per_endpoint bounds the whole process (SPEC §6 Pool): with no
 * idle connection and the bound reached, the request waits up to the
 * connect timeout, then 503. Not an upstream failure: nothing is counted.
 * True when the exchange is waiting or was answered. */
static bool
pool_full(struct exchange *x, int64_t now)
{
	const struct conf_service *svc = x->svc->conf;
	struct endpoint *ep = x->ep;
	char msg[256];

	if (ep->idle != NULL || ep->rt == NULL || svc->pool.max_per_endpoint == 0 ||
	    atomic_load_explicit(&ep->rt->conns, memory_order_relaxed) <
	    svc->pool.max_per_endpoint) {
		x->pool_wait_until_ms = 0;
		return false;
	}
	if (x->pool_wait_until_ms == 0)
		x->pool_wait_until_ms = now + svc->timeouts.connect;
	/* the bound may be held by idle connections of other workers: ask
	 * them to let one go (again after a while, if still so) */
	if (atomic_load_explicit(&ep->rt->idle, memory_order_relaxed) > 0 &&
	    now >= x->pool_asked_ms + 50) {
		x->pool_asked_ms = now;
		worker_release_idle_elsewhere(x->cl->w, ep->rt);
	}
	if (now >= x->pool_wait_until_ms) {
		snprintf(msg, sizeof(msg), "connection pool for %s is full (%u connections)",
		    x->cl->lis->kind == LK_INBOUND ? "the local app" : ep->addr_text,
		    svc->pool.max_per_endpoint);
		send_error(x->cl, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		exchange_done(x->cl);
		return true;
	}
	/* other workers release connections too: look again shortly */
	x->retry_at_ms = now + 10;
	client_arm_timer(x->cl);
	return true;
}

void
attempt_start(struct exchange *x)
{
	struct client *cl = x->cl;
	const struct conf_service *svc = x->svc->conf;
	int64_t now = clock_now_ms();
	char msg[256];

	x->retry_at_ms = 0;
	if ((x->ep = pick_endpoint(x, now)) == NULL) {
		snprintf(msg, sizeof(msg), "no available endpoint for %s", svc->name);
		send_error(cl, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		exchange_done(cl);
		return;
	}
	if (pool_full(x, now))
		return;
	x->attempts++;
	x->attempt_open = true;
	x->attempt_start_ms = now;
	x->ep->in_flight++;
	if (x->ep->rt)
		atomic_fetch_add_explicit(&x->ep->rt->in_flight, 1, memory_order_relaxed);
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
			attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, msg);
			return;
		}
		x->connect_deadline_ms = now + svc->timeouts.connect;
		metrics_conn_opened(cl->w->ms, exchange_metrics_id(x));
	}
	x->up->requests++;
	x->up->parsed = 0;
	http_parser_reset(&x->up->parser);
	if (conn_write(x->up->c, cl->reqhead.p, cl->reqhead.len) != 0) {
		attempt_failed_conn(x);
		return;
	}
	if (cl->state == CL_BODY)
		resume_client(cl);	/* body reading waited for this attempt */
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

	sbuf_add(&x->cl->w->scratch, at, len);
}

/* The response is complete: give the upstream connection back (before
 * the last byte goes to the client, so the pool gauges are settled too). */
static void
response_release(struct exchange *x)
{
	struct upconn *u = x->up;
	bool reusable = x->req_done && u->head.keep_alive && !x->upgrade &&
	    buf_len(&u->in) == 0;

	exchange_release_upstream(x, reusable);
}

/* False when the tunnel could not start (the client is closed). */
static bool
tunnel_start(struct exchange *x)
{
	struct client *cl = x->cl;

	cl->state = CL_TUNNEL;
	x->req_done = true;
	x->last_io_ms = clock_now_ms();
	/* bytes the client sent after its upgrade request belong to the tunnel */
	if (buf_len(&cl->in) > 0) {
		x->bytes_in += buf_len(&cl->in);
		if (conn_write(x->up->c, buf_head(&cl->in), buf_len(&cl->in)) != 0) {
			client_close(cl, "tunnel upstream write failed");
			return false;
		}
		buf_consume(&cl->in, buf_len(&cl->in));
	}
	resume_client(cl);
	return true;
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
		attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "malformed response head");
		return false;
	}
	if (!headers_framing_ok(h)) {
		/* re-emitted, the header would frame the body differently for
		 * the client than it was read here */
		attempt_failed(x, AR_RESET, FE_SERVICE_ERROR,
		    "response Transfer-Encoding is not chunked");
		return false;
	}
	if (h->status >= 100 && h->status < 200 && !(h->status == 101 && x->upgrade)) {
		if (++x->interims > MAX_INTERIM_RESPONSES) {
			attempt_failed(x, AR_RESET, FE_SERVICE_ERROR,
			    "too many interim (1xx) responses");
			return false;
		}
		/* interim: ferry answered 100-continue itself; others pass on
		 * to HTTP/1.1 clients */
		if (h->status != 100 && h->status != 101 && !x->http10) {
			sbuf_clear(out);
			headers_build_response(out, msg, h, &(struct downstream_head_args){
			    .interim = true });
			if (!client_write(cl, out->p, out->len))
				return false;	/* u went with the client */
		}
		buf_consume(&u->in, h->head_len);
		http_parser_reset(&u->parser);
		return true;
	}
	if (!(h->status == 101 && x->upgrade)) {
		enum attempt_result r = status_result(h->status);
		int64_t delay;

		attempt_record(x, r);
		if (r != AR_OK && retry_allowed(x, r, true, &delay)) {
			/* this 5xx is not the last word: drop it with its connection */
			exchange_release_upstream(x, false);
			retry_schedule(x, delay);
			return false;
		}
	} else {
		attempt_record(x, AR_OK);
	}
	if (x->head_method || h->status == 204 || h->status == 304)
		http_parser_skip_body(&u->parser);
	x->up_keepalive_ms = parse_keepalive_timeout(msg, h);
	x->status = (uint32_t)h->status;
	x->upgrade = x->upgrade && h->status == 101;
	x->dechunk = x->http10 && h->chunked && !x->head_method;
	if (x->dechunk)
		x->close_after = true;	/* the close is its only end marker */
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
		attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "out of memory");
		return false;
	}
	x->resp_head = true;
	x->last_io_ms = clock_now_ms();
	exchange_head_sent(x);
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
			attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "malformed response from upstream");
			return;
		}
		u->parsed = 0;
		if (!response_head(x))
			return;
		/* only now does scratch hold this response's head; on later
		 * calls it holds whatever the worker built last */
		head_now = x->resp_head;
		if (!x->resp_head && conn_pending(cl->c) > CONN_HIGH_MARK) {
			/* interim heads pile up at a client that does not read:
			 * CONN_DRAINED of the client resumes this */
			conn_pause_read(u->c);
			return;
		}
	}
	if (head_now && x->upgrade) {
		if (!client_write(cl, out->p, out->len) || !tunnel_start(x))
			return;
		if (buf_len(&u->in) > 0) {
			size_t n = buf_len(&u->in);

			if (client_write(cl, buf_head(&u->in), n))
				buf_consume(&u->in, n);
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
			static struct log_limit limit;

			log_limited(&limit, LOG_INFO,
			    "cut response cause=\"malformed body\" upstream=%s", x->ep->addr_text);
			client_close(cl, "malformed upstream body");
			return;
		}
		if (!x->dechunk)
			sbuf_add(out, buf_head(&u->in), used);
		buf_consume(&u->in, used);
		if (st == HTTP_MSG_DONE) {
			response_release(x);
			if (client_write_last(cl, out->p, out->len))
				exchange_done(cl);
			return;
		}
		if (!client_write(cl, out->p, out->len))
			return;
		sbuf_clear(out);
		head_now = false;
		x->last_io_ms = clock_now_ms();
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
	{
		static struct log_limit limit;

		log_limited(&limit, LOG_INFO, "cut response cause=\"upstream closed: %s\" upstream=%s",
		    conn_error_text(u->c), x->ep->addr_text);
	}
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
			if (!client_write(cl, buf_head(b), buf_len(b)))
				return;		/* u went with the client */
			buf_consume(b, buf_len(b));
			if (conn_pending(cl->c) > CONN_HIGH_MARK)
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

	switch (ev) {
	case CONN_CONNECTED:
		x->connect_deadline_ms = 0;
		if (conn_is_tls(c))
			metrics_tls_handshake(cl->w->ms, DIR_OUTBOUND, conn_session_reused(c));
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

