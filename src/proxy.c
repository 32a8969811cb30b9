/*
 * The life of an exchange: admission, rewriting, deadlines, relaying
 * between the codecs, accounting, and the one teardown. See exchange.h;
 * the attempts themselves are attempt.c's.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "attempt.h"
#include "deadline.h"
#include "hedge.h"
#include "log.h"
#include "proxy_coding.h"
#include "route.h"
#include "tls_ctx.h"
#include "tracing.h"

#define RESET_FROM	offsetof(struct exchange, upops)
#define RESET_TO	offsetof(struct exchange, corr)

static void exchange_timeout(evutil_socket_t fd, short what, void *arg);

int
proxy_exchange_init(struct exchange *x, struct worker *w, const struct down_ops *down)
{
	x->down = down;
	x->w = w;
	x->ferr = -1;
	x->lis_service = SIZE_MAX;
	return evtimer_assign(&x->timer, w->base, exchange_timeout, x);
}

void
proxy_exchange_free(struct exchange *x)
{
	/* X's memory is zeroed until its init */
	if (event_initialized(&x->timer))
		event_del(&x->timer);
	coding_free(x);
	sbuf_free(&x->req);
	sbuf_free(&x->logline);
	sbuf_free(&x->trailers);
	sbuf_free(&x->span_events);
}

/* ------------------------------------------------------------ ids ---- */

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
	    !ids_traceparent_valid(msg + t->value.off, t->value.len))
		t = NULL;
	if (x->gen->conf->tracing.enabled) {
		/* SPEC §13: this hop's span becomes the parent upstream */
		tracing_begin(x, t ? msg + t->value.off : NULL, t ? t->value.len : 0);
	} else if (t == NULL) {
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

/* A new request begins in X. */
static void
exchange_begin(struct exchange *x)
{
	coding_free(x);
	memset((char *)x + RESET_FROM, 0, RESET_TO - RESET_FROM);
	x->ferr = -1;
	x->grpc_status = -1;
	x->live = true;
	x->notes.count = 0;
	x->start_ms = clock_now_ms();
	x->start_us = clock_now_us();
	if (x->w->alog)
		x->start_wall_ms = clock_wall_ms();
	sbuf_clear(&x->logline);
	sbuf_clear(&x->span_events);
}

/* A request begins in X without a head to take IDs from: fresh ones. */
static void
exchange_begin_headless(struct exchange *x)
{
	exchange_begin(x);
	x->tp_len = 0;
	memset(&x->ids, 0, sizeof(x->ids));
	ids_uuid4(x->corr);
	ids_uuid4(x->rid);
	x->ids.correlation = x->corr;
	x->ids.correlation_len = UUID_LEN;
	x->ids.request = x->rid;
	x->ids.request_len = UUID_LEN;
}

void
proxy_error_early(struct exchange *x, enum ferry_error e, const char *msg)
{
	exchange_begin_headless(x);
	proxy_refuse(x, e, msg, 0, true);
}

void
proxy_error_unanswered(struct exchange *x, enum ferry_error e, const char *msg)
{
	if (x->accounted || (x->live && x->resp_head))
		return;
	if (!x->live)
		exchange_begin_headless(x);
	/* counted and logged as the answer HTTP/1 gets would be, so one
	 * query finds both; the codec tells the peer its own way */
	x->status = (uint32_t)ferror_status(e);
	x->ferr = (int)e;
	if (x->grpc)
		x->grpc_status = ferror_grpc_status(e, x->peer_denied);
	log_debug("%s %s (not answered)", ferror_code(e), msg);
	proxy_end(x, END_DONE);
}

/* ----------------------------------------------------- accounting ---- */

int
exchange_metrics_id(const struct exchange *x)
{
	/* inbound requests are the local app's, refused ones included */
	if (x->inbound)
		return runtime_inbound_metrics_id(x->w->rt);
	return x->svc && x->svc->rt ? x->svc->rt->metrics_id : -1;
}

/* The request gives back its max_concurrent slot (once). */
static void
concurrency_leave(struct exchange *x)
{
	if (x->entered) {
		breaker_leave(x->entered);
		x->entered = NULL;
	}
}

void
proxy_account(struct exchange *x, enum end_cause cause)
{
	enum metric_dir dir = x->inbound ? DIR_INBOUND : DIR_OUTBOUND;
	int id = exchange_metrics_id(x);
	const char *log = x->logline.p;
	size_t mlen = 0;
	enum fate fate;
	int last = -1;

	if (x->accounted || x->start_ms == 0)
		return;
	x->accounted = true;
	/* it leaves max_concurrent as it is counted, before its last bytes
	 * can reach the client: once the client has the answer, /services'
	 * in_flight says so, as /metrics does (exchange_leave would wait
	 * until after the write) */
	concurrency_leave(x);
	/* the last attempt that had an outcome: the hedges cancelled once it
	 * came (or once the deadline passed) are listed after it */
	for (unsigned i = x->notes.count; i > 0 && last < 0; i--)
		if (x->notes.n[i - 1].result != NOTE_CANCELLED)
			last = x->notes.n[i - 1].result;
	if (last < 0 && x->notes.count)
		last = NOTE_CANCELLED;
	fate = fate_derive(&(struct fate_input){
		.cause = cause,
		.ferr = x->ferr,
		.status = x->status,
		.retries = x->retries,
		.won_by_hedge = x->won_by_hedge,
		.budget_refused = x->budget_refused,
		.refused = x->refused,
		.last = last,
	});
	metrics_fate(x->w->ms, dir, id, fate);
	if (x->status || cause != END_DONE)
		metrics_request(x->w->ms, dir, id, (int)x->status, x->head_us ? x->head_us : -1);
	if (x->ferr >= 0)
		metrics_error(x->w->ms, dir, id, (enum ferry_error)x->ferr);
	if (x->ferr >= 0 || (x->status >= 500 && x->status <= 599))
		metrics_failed(x->w->ms, dir, id);
	metrics_cut(x->w->ms, dir, id, cause);
	/* a whole answer without grpc-status still ends the app's call, with
	 * the status its gRPC library makes of the HTTP one: counted so */
	if (x->grpc && x->grpc_status < 0 && cause == END_DONE && x->status >= 200)
		x->grpc_status = grpc_status_of_http((int)x->status);
	if (x->grpc)
		metrics_grpc(x->w->ms, dir, id, x->grpc_status);
	if (x->traced)
		tracing_end(x, cause);
	if (x->w->alog == NULL)
		return;
	while (mlen < x->logline.len && log[mlen] != ' ')
		mlen++;
	accesslog_write(x->w->alog, &(struct access_entry){
		.time_ms = x->start_wall_ms,
		.dir = dir,
		.service = x->svc ? x->svc->conf->name : x->inbound ? "local_app" : "",
		.method = log,
		.method_len = mlen,
		.path = mlen < x->logline.len ? log + mlen + 1 : "",
		.path_len = mlen < x->logline.len ? x->logline.len - mlen - 1 : 0,
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
		.error = cause != END_DONE ? end_cause_name(cause) :
		    x->ferr >= 0 ? ferror_code((enum ferry_error)x->ferr) : NULL,
		.peer = x->peer_id,
		.grpc = x->grpc,
		.grpc_status = x->grpc_status,
		.fate = fate_name(fate),
		.attempts_detail = &x->notes,
	});
}

/* The request stops counting toward max_concurrent (at its last byte). */
static void
exchange_leave(struct exchange *x)
{
	attempt_cancel(x);
	attempt_unhold(x);	/* freed no sooner than the next sweep */
	/* ended before its outcome: a probe slot must not stay taken */
	if (x->svc && x->svc->rt && x->verdict == BREAKER_PROBE) {
		breaker_cancel(x->svc->rt->breaker, x->verdict);
		x->verdict = BREAKER_PASS;
	}
	concurrency_leave(x);
}

void
proxy_end(struct exchange *x, enum end_cause cause)
{
	if (!x->live)
		return;
	x->live = false;
	/* the timer stays armed: exchange_timeout() passes over an exchange
	 * no longer live, and the next one on this memory (a keep-alive
	 * connection's) keeps it while its deadlines are later: no heap
	 * operation per request (proxy_arm_timer) */
	hedge_cancel_all(x);
	attempt_release(x, false);
	/* no attempt sends the head again: its service key goes now, not
	 * when the connection's next request reuses the buffer (sbuf.h) */
	sbuf_wipe_secret(&x->req);
	exchange_leave(x);
	proxy_account(x, cause);
	coding_free(x);
	x->down->finish(x, cause);
}

void
proxy_error_response(const struct exchange *x, struct sbuf *out, enum ferry_error e,
    const char *msg, unsigned retry_after, bool keep_alive, unsigned keep_alive_timeout)
{
	const struct error_args a = {
		.err = e,
		.message = msg,
		.correlation = x->ids.correlation,
		.correlation_len = x->ids.correlation_len,
		.request_id = x->ids.request,
		.request_id_len = x->ids.request_len,
		.retry_after = retry_after,
		.keep_alive = keep_alive,
		.keep_alive_timeout = keep_alive_timeout,
		.head_only = x->head_method,
		.attempts = &x->notes,
		/* a remote peer is not told the local app's address (attempt.c) */
		.attempts_endpoint = x->inbound ? "local_app" : NULL,
	};

	if (x->grpc)
		ferror_build_grpc(out, &a, ferror_grpc_status(e, x->peer_denied));
	else
		ferror_build(out, &a);
}

void
proxy_refuse(struct exchange *x, enum ferry_error e, const char *msg,
    unsigned retry_after, bool close)
{
	if (!x->live)
		return;
	if (x->hedge_of) {
		/* a hedge refused at its start: the race goes on without it */
		hedge_failed(x, AR_OK, false);
		return;
	}
	attempt_release(x, false);
	x->status = (uint32_t)ferror_status(e);
	x->ferr = (int)e;
	if (x->grpc)
		x->grpc_status = ferror_grpc_status(e, x->peer_denied);
	if (x->head_us == 0)
		exchange_head_sent(x);
	if (close || !x->keep_alive)
		x->close_after = true;
	log_debug("%s %s", ferror_code(e), msg);
	x->down->send_error(x, e, msg, retry_after, close);
	proxy_end(x, END_DONE);
}

/* ------------------------------------------------------ admission ---- */

static bool
via_gap(char c)
{
	return c == ' ' || c == '\t' || c == ',';
}

/* TOKEN as a whole received-by name in a Via: "ferry-...-outx" is
 * another one. */
static bool
via_has_token(const char *msg, const struct http_head *h, const char *token)
{
	size_t tl = strlen(token);

	for (uint32_t i = 0; i < h->n_headers; i++) {
		const char *v = msg + h->h[i].value.off, *end = v + h->h[i].value.len, *p;

		if (h->h[i].kind != HDR_VIA)
			continue;
		for (p = v; (p = memmem(p, (size_t)(end - p), token, tl)) != NULL; p++)
			if ((p == v || via_gap(p[-1])) && (p + tl == end || via_gap(p[tl])))
				return true;
	}
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
route_outbound(struct exchange *x, const char *msg, const struct http_head *h)
{
	const char *path, *auth;
	size_t path_len, auth_len;
	char errmsg[256];
	long si;

	if (x->lis_service != SIZE_MAX)
		/* a port a reload removed routes nowhere */
		si = x->lis_service < x->gen->n_svcs ? (long)x->lis_service : -1;
	else
		si = route_request(x->gen->conf, msg, h);
	if (si < 0) {
		const struct http_header *host = headers_find(h, HDR_HOST);

		target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
		if (!auth && host) {
			auth = msg + host->value.off;
			auth_len = host->value.len;
		}
		snprintf(errmsg, sizeof(errmsg), "no service for host \"%.*s\"",
		    auth ? (int)(auth_len > 100 ? 100 : auth_len) : 0, auth ? auth : "");
		proxy_refuse(x, FE_UNKNOWN_SERVICE, errmsg, 0, !x->req_done);
		return NULL;
	}
	if (via_has_token(msg, h, via_token_out())) {
		proxy_refuse(x, FE_LOOP_DETECTED, "request already passed through this ferry", 0,
		    !x->req_done);
		return NULL;
	}
	return &x->gen->svcs[si];
}

/* Whether an inbound peer still stands under IN, the config in force: a
 * reload may have replaced the client_ca that verified it (a new
 * connection, or a resumed session, must stand under the one in force,
 * and so must a kept one: closed, the peer connects again), or left it
 * out of allowed_peers. A denial is counted. */
enum peer_standing { PEER_STANDS, PEER_CA_REPLACED, PEER_NOT_ALLOWED };

#define CA_REPLACED_MSG "peer was verified under a client_ca that a reload replaced; connect again"
#define KEY_WITHDRAWN_MSG "x-service-auth is no longer among the accepted keys"

static enum peer_standing
peer_standing(struct exchange *x, const struct conf_inbound *in)
{
	enum peer_standing s = PEER_STANDS;

	if (x->peer_ctx != NULL && !tls_same_client_ca(x->peer_ctx, in->ctx))
		s = PEER_CA_REPLACED;
	else if (x->peer_id == NULL || !inbound_peer_allowed(in, x->peer_id))
		s = PEER_NOT_ALLOWED;
	if (s != PEER_STANDS) {
		metrics_auth_failure(x->w->ms, AUTH_PEER_NOT_ALLOWED);
		x->peer_denied = true;
	}
	return s;
}

/* What a request's x-service-auth said, for admit_inbound. */
enum key_verdict {
	KEY_MISSING,
	KEY_INVALID,
	KEY_VALID,
	KEY_UNCHECKED,		/* no memory to compute its HMAC */
};

/* Checks the key of an inbound request, then wipes every x-service-auth
 * value in MSG (the codec's buffer, which lives on past the request), in
 * both directions: no path after this, refusals included, leaves a key
 * there. The checked key decides only later, in admit_inbound's order. */
static enum key_verdict
key_take(struct exchange *x, char *msg, const struct http_head *h)
{
	const struct conf_inbound *in = &x->gen->conf->inbound;
	const struct http_header *key = headers_find(h, HDR_SERVICE_AUTH);
	enum key_verdict v = KEY_MISSING;

	if (key == NULL)
		return v;
	v = KEY_INVALID;
	if (x->inbound && in->enabled && in->auth_enabled) {
		switch (inbound_key_ok(&x->gen->inbound_keys, msg + key->value.off,
		    key->value.len, x->key_mac)) {
		case 1:
			v = KEY_VALID;
			x->key_kept = true;
			break;
		case -1:
			v = KEY_UNCHECKED;
			break;
		}
	}
	headers_wipe_values(msg, h, HDR_SERVICE_AUTH);
	return v;
}

/* The local app for an inbound request once the peer proved who it is and
 * that it holds a key (SPEC §5), or NULL once refused. */
static struct svc_state *
admit_inbound(struct exchange *x, const char *msg, const struct http_head *h,
    enum key_verdict key)
{
	const struct conf_inbound *in = &x->gen->conf->inbound;
	char errmsg[PEER_ID_MAX + 64];

	if (!in->enabled) {
		x->refused = FATE_NO_ENDPOINT;
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, "the inbound listener was removed by a reload",
		    1, true);
		return NULL;
	}
	switch (peer_standing(x, in)) {
	case PEER_STANDS:
		break;
	case PEER_CA_REPLACED:
		proxy_refuse(x, FE_INVALID_SERVICE_AUTH, CA_REPLACED_MSG, 0, true);
		return NULL;
	case PEER_NOT_ALLOWED:
		snprintf(errmsg, sizeof(errmsg), x->peer_id ?
		    "peer %s is not allowed" : "peer certificate has no usable URI or DNS name%s",
		    x->peer_id ? x->peer_id : "");
		proxy_refuse(x, FE_INVALID_SERVICE_AUTH, errmsg, 0, !x->req_done);
		return NULL;
	}
	if (in->auth_enabled && key == KEY_UNCHECKED) {
		/* not the peer's fault: a 503, as for want of any other memory */
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, "out of memory checking x-service-auth", 1,
		    !x->req_done);
		return NULL;
	}
	if (in->auth_enabled && key != KEY_VALID) {
		metrics_auth_failure(x->w->ms, key == KEY_MISSING ? AUTH_MISSING : AUTH_INVALID);
		proxy_refuse(x, FE_INVALID_SERVICE_AUTH, key == KEY_MISSING ?
		    "missing x-service-auth" : "invalid x-service-auth", 0, !x->req_done);
		return NULL;
	}
	/* after the peer proved itself: a stranger learns nothing of how
	 * requests route here */
	if (via_has_token(msg, h, via_token_in())) {
		proxy_refuse(x, FE_LOOP_DETECTED, "request already passed through this ferry", 0,
		    !x->req_done);
		return NULL;
	}
	return &x->gen->inbound;
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
admit(struct exchange *x)
{
	struct svc_state *s = x->svc;
	struct runtime *rt = x->w->rt;
	const struct conf_rate_limit *rl = x->inbound ? &x->gen->conf->inbound.rate_limit :
	    &s->conf->rate_limit;
	struct bucket *bucket = x->inbound ? runtime_inbound_bucket(rt) : s->rt->bucket;
	struct breaker *br = x->inbound ? runtime_inbound_breaker(rt) : s->rt->breaker;
	const struct conf_breaker *bc = &s->conf->breaker;
	int64_t now = clock_now_ms(), wait = 0;
	char msg[256];

	x->verdict = BREAKER_PASS;
	if (rl->enabled && !bucket_take(bucket, rl, clock_now_us(), &wait)) {
		metrics_rate_limited(x->w->ms, x->inbound ? DIR_INBOUND : DIR_OUTBOUND,
		    exchange_metrics_id(x));
		snprintf(msg, sizeof(msg), "%s is over its rate limit of %g requests/s",
		    s->conf->name, rl->rps);
		x->refused = FATE_RATE_LIMITED;
		proxy_refuse(x, FE_RATE_LIMITED, msg, retry_after_secs(wait), !x->req_done);
		return false;
	}
	if (!breaker_enter(br, bc)) {
		snprintf(msg, sizeof(msg), "%s has %u requests in flight (max_concurrent)",
		    s->conf->name, bc->max_concurrent);
		x->refused = FATE_OVER_CONCURRENCY;
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		return false;
	}
	x->entered = br;
	if (x->inbound)
		return true;
	x->verdict = breaker_allow(br, bc, now, &wait);
	if (x->verdict == BREAKER_REJECT) {
		snprintf(msg, sizeof(msg), "circuit open for %s", s->conf->name);
		x->refused = FATE_BREAKER_OPEN;
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, msg, retry_after_secs(wait), !x->req_done);
		return false;
	}
	retry_budget_request(s->rt->budget, (unsigned)x->w->id, now);
	return true;
}

/* -------------------------------------------------------- request ---- */

static void
logline_set(struct exchange *x, const char *msg, const struct http_head *h)
{
	const char *lp, *la;
	size_t lplen, lalen;

	/* the path, also of an absolute-form target (HTTP_PROXY clients) */
	target_split(msg + h->target.off, h->target.len, &lp, &lplen, &la, &lalen);
	sbuf_add(&x->logline, msg + h->method.off, h->method.len);
	sbuf_add(&x->logline, " ", 1);
	if (lplen == 0 || lp[0] == '?')
		sbuf_add(&x->logline, "/", 1);
	sbuf_add(&x->logline, lp, lplen);
}

static const struct conf_hrules *
rules_or_null(const struct conf_hrules *r)
{
	return r->n_remove || r->n_set || r->n_add ? r : NULL;
}

void
proxy_response_rules(const struct exchange *x, const struct conf_hrules *rules[2])
{
	rules[0] = rules_or_null(&x->gen->conf->default_headers.response);
	rules[1] = x->svc ? rules_or_null(&x->svc->conf->headers.response) : NULL;
}

static bool
upgrade_to_h2c(const char *msg, const struct http_head *h)
{
	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (hd->kind != HDR_UPGRADE)
			continue;
		for (uint32_t j = 0; j + 3 <= hd->value.len; j++)
			if (strncasecmp(msg + hd->value.off + j, "h2c", 3) == 0)
				return true;
	}
	return false;
}

/* One grpc-timeout value (up to 8 digits and a unit) in ms, or -1 when
 * malformed. */
static int64_t
grpc_timeout_value(const char *v, uint32_t n)
{
	int64_t t = 0;

	if (n < 2 || n > 9)
		return -1;
	for (uint32_t j = 0; j + 1 < n; j++) {
		if (v[j] < '0' || v[j] > '9')
			return -1;
		t = t * 10 + (v[j] - '0');
	}
	switch (v[n - 1]) {
	case 'H': return t * 3600000;
	case 'M': return t * 60000;
	case 'S': return t * 1000;
	case 'm': return t;
	case 'u': return (t + 999) / 1000;
	case 'n': return (t + 999999) / 1000000;
	default: return -1;
	}
}

/* The request's grpc-timeout (gRPC over HTTP/2) in ms, or -1 when absent
 * or malformed. Of several lines the shortest well-formed one counts: a
 * caller may only shorten its deadline, and ferry sends one line (its
 * own) whatever came. */
static int64_t
grpc_timeout_ms(const char *msg, const struct http_head *h)
{
	int64_t best = -1, t;

	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (hd->name.len != 12 || strncasecmp(msg + hd->name.off, "grpc-timeout", 12) != 0)
			continue;
		t = grpc_timeout_value(msg + hd->value.off, hd->value.len);
		if (t >= 0 && (best < 0 || t < best))
			best = t;
	}
	return best;
}

/* The request deadline: the service's request timeout, cut short by the
 * request's own grpc-timeout (SPEC §12) and x-ferry-deadline-ms (§16), the
 * smallest winning, so a caller can shorten it and never extend it. False
 * when no time was left and the request got its 504. */
static bool
deadline_decide(struct exchange *x, const char *msg, const struct http_head *h)
{
	int64_t gt = x->grpc ? grpc_timeout_ms(msg, h) : -1, dl, cap;
	bool malformed;
	char why[128];

	x->deadline_ms = x->start_ms + x->svc->conf->timeouts.request;
	dl = deadline_from_head(msg, h, &malformed);
	if (malformed) {
		static struct log_limit limit;

		/* the service's own timeout still holds: a broken caller
		 * loses nothing by it, and gets no say either */
		log_limited(&limit, LOG_WARN, "ignored malformed x-ferry-deadline-ms "
		    "(not a whole number of milliseconds) service=%s", x->svc->conf->name);
	}
	cap = gt < 0 ? dl : dl < 0 || gt < dl ? gt : dl;
	if (gt >= 0)
		/* unlike the request timeout it bounds the whole call, past
		 * the response head; both headers sent on then agree */
		x->grpc_deadline_ms = x->start_ms + cap;
	if (cap < 0)
		return true;
	if (x->start_ms + cap < x->deadline_ms) {
		x->deadline_ms = x->start_ms + cap;
		x->deadline_capped = true;
	}
	if (cap > 0)
		return true;
	snprintf(why, sizeof(why), "no time left of the request deadline (%s 0 on arrival)",
	    dl == 0 ? "x-ferry-deadline-ms" : "grpc-timeout");
	proxy_refuse(x, FE_SERVICE_TIMEOUT, why, 0, !x->req_done);
	return false;
}

/* content-type application/grpc, +proto or any other suffix */
static bool
is_grpc(const char *msg, const struct http_head *h)
{
	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (hd->name.len == 12 && strncasecmp(msg + hd->name.off, "content-type", 12) == 0)
			return hd->value.len >= 16 &&
			    strncasecmp(msg + hd->value.off, "application/grpc", 16) == 0;
	}
	return false;
}

/* Refusals of the head itself, before routing; true when refused. */
static bool
head_refused(struct exchange *x, const char *msg, const struct http_head *h, bool ambiguous)
{
	char errmsg[256];

	if (ambiguous) {
		proxy_refuse(x, FE_BAD_REQUEST, "more than one Host header", 0, true);
		return true;
	}
	if (h->method_id == HTTP_CONNECT) {
		proxy_refuse(x, FE_METHOD_NOT_ALLOWED, "CONNECT is not supported", 0, !x->req_done);
		return true;
	}
	if (!x->http10 && headers_find(h, HDR_HOST) == NULL) {
		proxy_refuse(x, FE_BAD_REQUEST, "HTTP/1.1 request without Host", 0, true);
		return true;
	}
	if (!headers_framing_ok(msg, h)) {
		/* RFC 9112 6.3: the length cannot be known */
		proxy_refuse(x, FE_BAD_REQUEST, "Transfer-Encoding must be chunked alone, named once", 0, true);
		return true;
	}
	if (x->lis->max_request_body && h->has_length &&
	    h->content_length > x->lis->max_request_body) {
		snprintf(errmsg, sizeof(errmsg), "request body of %llu bytes is over the limit of %llu",
		    (unsigned long long)h->content_length,
		    (unsigned long long)x->lis->max_request_body);
		proxy_refuse(x, FE_PAYLOAD_TOO_LARGE, errmsg, 0, true);
		return true;
	}
	return false;
}

bool
proxy_request(struct exchange *x, char *msg, const struct http_head *h, bool ambiguous)
{
	const char *path, *auth;
	size_t path_len, auth_len;
	bool inbound = x->inbound, fits;
	enum key_verdict key;

	exchange_begin(x);
	if (x->unframed)
		x->w->work.h2_streams++;
	else
		x->w->work.h1_requests++;
	key = key_take(x, msg, h);
	if (x->w->alog || x->gen->conf->tracing.enabled)
		logline_set(x, msg, h);
	ids_decide(x, msg, h);
	x->http10 = h->major == 1 && h->minor == 0;
	x->keep_alive = h->keep_alive && !x->w->draining;
	x->head_method = h->method_id == HTTP_HEAD;
	switch (h->method_id) {
	case HTTP_GET: case HTTP_HEAD: case HTTP_OPTIONS: case HTTP_PUT:
	case HTTP_DELETE: case HTTP_TRACE:
		x->idempotent = true;
		break;
	default:
		x->idempotent = headers_find(h, HDR_IDEMPOTENCY_KEY) != NULL;
	}
	/* "Upgrade: h2c" would turn the connection into HTTP/2 past every
	 * check of ferry's (h2c smuggling): never forwarded, the request goes
	 * on as a plain one */
	x->upgrade = h->upgrade && !upgrade_to_h2c(msg, h);
	x->grpc = is_grpc(msg, h);
	x->req_done = !(h->chunked || (h->has_length && h->content_length > 0));
	/* a refused request's body has nowhere to go */
	x->close_after = !x->req_done;

	if (head_refused(x, msg, h, ambiguous))
		return false;
	x->svc = inbound ? admit_inbound(x, msg, h, key) : route_outbound(x, msg, h);
	if (x->svc == NULL || !admit(x))
		return false;
	if (x->grpc && x->svc->conf->protocol == PROTO_HTTP1) {
		/* SPEC §12: gRPC needs HTTP/2 to the endpoint */
		proxy_refuse(x, FE_SERVICE_ERROR, "gRPC needs HTTP/2, and the service's "
		    "protocol is http1", 0, !x->req_done);
		return false;
	}
	x->close_after = false;
	if (!deadline_decide(x, msg, h))
		return false;

	target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
	sbuf_clear(&x->req);
	fits = headers_build_request(&x->req, msg, h, &(struct upstream_head_args){
		/* inbound, the app gets the peer's Host; one that came
		 * without (HTTP/1.0) the app's own address, as HTTP/1.1 wants */
		.host = x->svc->conf->upstream_host ? x->svc->conf->upstream_host :
		    headers_find(h, HDR_HOST) ? NULL : x->gen->conf->inbound.local_app.text,
		.target = path,
		.target_len = path_len,
		/* "http://svc?q" has no path: origin-form needs the "/" */
		.target_slash = path_len == 0 || path[0] == '?',
		.auth_key = x->svc->conf->auth_key,
		.ids = &x->ids,
		.via = inbound ? via_token_in() : via_token_out(),
		.upgrade = x->upgrade,
		.peer = inbound ? x->peer_id : NULL,
		.forwarded_for = inbound ? x->peer : NULL,
		.rules = { rules_or_null(&x->gen->conf->default_headers.request),
		    rules_or_null(&x->svc->conf->headers.request) },
		.grpc_timeout_at = x->grpc ? &x->grpc_timeout_at : NULL,
		.deadline_at = &x->deadline_at,
		.accept_encoding = coding_request(x, msg, h),
	});
	if (x->req.oom) {
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, "out of memory", 1, true);
		return false;
	}
	if (!fits) {
		/* the head the app sent was within them (http1.h) */
		proxy_refuse(x, FE_HEADERS_TOO_LARGE, HEAD_OVER_WITH_RULES("request"), 0, true);
		return false;
	}
	x->req_head_len = x->req.len;
	x->replayable = true;
	if (!x->http10 && expects_continue(msg, h) && !x->req_done &&
	    !x->down->send_continue(x))
		return false;
	return true;
}

void
proxy_request_body(struct exchange *x, const void *p, size_t n)
{
	size_t buffer = x->svc->conf->retries.buffer;

	if (!x->sent) {
		/* it leaves with the head, in one write; kept for a replay
		 * while small */
		sbuf_add(&x->req, p, n);
		if (x->req.len - x->req_head_len > buffer)
			x->replayable = false;
		return;
	}
	if (x->replayable && x->req.len + n <= buffer + x->req_head_len)
		sbuf_add(&x->req, p, n);
	else if (n > 0) {
		x->replayable = false;
		x->body_dropped = true;
	}
	/* after the head, body still coming is activity (a stream both
	 * ways: its response may be quiet meanwhile) */
	x->last_io_ms = clock_now_ms();
	if (exchange_attached(x))
		x->upops->send(x, p, n);
}

void
proxy_request_send(struct exchange *x)
{
	x->sent = true;
	attempt_start(x);
}

void
proxy_request_done(struct exchange *x)
{
	x->req_done = true;
	if (x->hedge_after_body)
		hedge_body_done(x, clock_now_ms());
}

bool
proxy_request_writable(const struct exchange *x)
{
	return exchange_attached(x) && !x->upops->congested(x);
}

bool
proxy_tunnel_up(struct exchange *x, const void *p, size_t n)
{
	x->last_io_ms = clock_now_ms();
	return !exchange_attached(x) || x->upops->send(x, p, n);
}

/*
 * Half-closed tunnels, as HAProxy and nginx pass them on: a side's FIN
 * (TLS: close_notify) goes on to the other side after every byte it sent
 * before it, and the other way runs on until its side closes too (a
 * WebSocket's closing frames, the answer to a last message). Nothing
 * else changes: a side that half-closed is no longer read, so the bytes
 * held for it stay under the high mark, and stream_idle, counted from
 * the last byte or FIN that came or was taken (last_taken), ends a tunnel
 * whose other side never closes. The tunnel is done when both sides
 * closed and the upstream took what was queued for it; the client's queue
 * is flushed by its codec's close (finish).
 */
static void
tunnel_maybe_done(struct exchange *x)
{
	if (x->client_fin && x->upstream_fin && x->upops->write_closed(x))
		proxy_response_end(x, NULL, 0, false);
}

void
proxy_tunnel_client_fin(struct exchange *x)
{
	if (!x->live || x->client_fin)
		return;
	x->client_fin = true;
	x->last_io_ms = clock_now_ms();
	if (!exchange_attached(x) || x->upops->close_write == NULL) {
		proxy_end(x, END_CLIENT_CLOSED);
		return;
	}
	if (x->upops->close_write(x))
		tunnel_maybe_done(x);
}

void
proxy_tunnel_upstream_fin(struct exchange *x)
{
	if (!x->live || x->upstream_fin)
		return;
	x->upstream_fin = true;
	x->last_io_ms = clock_now_ms();
	if (x->down->tunnel_close_write == NULL) {
		proxy_response_end(x, NULL, 0, false);
		return;
	}
	if (x->down->tunnel_close_write(x))
		tunnel_maybe_done(x);
}

void
proxy_client_drained(struct exchange *x)
{
	if (x->live && coding_drained(x))
		return;
	if (x->live && exchange_attached(x))
		x->upops->resume(x);
}

/* ------------------------------------------------------- response ---- */

void
proxy_attempt_connected(struct exchange *x)
{
	x->connect_deadline_ms = 0;
	proxy_arm_timer(x);
	/* what was queued while connecting has gone: take more body */
	if (!x->req_done)
		x->down->resume_body(x);
}

void
proxy_upstream_drained(struct exchange *x)
{
	/* the client half-closed: this may be the last of its bytes leaving */
	if (x->live && x->client_fin) {
		tunnel_maybe_done(x);
		return;
	}
	/* the upstream took the request body: read more of it */
	if (x->live && (!x->req_done || x->tunnel))
		x->down->resume_body(x);
}

/* The value of the first grpc-status field of H, when it is a status: a
 * second one is not read, so the retry check, the metrics and the access
 * log all go by the same field. */
static bool
grpc_status_field(const char *msg, const struct http_head *h, uint64_t *v)
{
	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].name.len == 11 &&
		    strncasecmp(msg + h->h[i].name.off, "grpc-status", 11) == 0)
			return headers_number(msg, &h->h[i], v) && *v < GRPC_STATUSES;
	return false;
}

/* grpc-status in a response head or its trailers */
static void
grpc_status_seen(struct exchange *x, const char *msg, const struct http_head *h)
{
	uint64_t v;

	if (grpc_status_field(msg, h, &v))
		x->grpc_status = (int)v;
}

/* A gRPC answer that is only a head saying UNAVAILABLE: gRPC's 503 (the
 * status ferry's own 503 becomes, SPEC §7), and so counted and retried
 * as one (SPEC §12). */
static bool
grpc_unavailable_only(const struct exchange *x, const char *msg, const struct http_head *h)
{
	uint64_t v;

	return x->grpc && x->head_ends && h->status == 200 &&
	    grpc_status_field(msg, h, &v) && v == 14;
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

/* 1xx responses to one request before its final one: Early Hints come
 * once or twice; an upstream streaming them is broken or hostile. */
#define MAX_INTERIM_RESPONSES 16

bool
proxy_tunnel_key_stands(const struct exchange *x)
{
	const struct generation *g = x->w->gen;

	return !g->conf->inbound.auth_enabled ||
	    (x->key_kept && inbound_mac_known(&g->inbound_keys, x->key_mac));
}

/* A 101 for an inbound peer that a reload has withdrawn trust from while
 * the upgrade waited for it (a client_ca that replaced the one it was
 * verified under, allowed_peers without it, or keys without the one it
 * sent): no tunnel begins, as no request would (admit_inbound); the
 * app's connection goes, and the peer's closes after the 403. */
static bool
tunnel_refused(struct exchange *x)
{
	enum peer_standing s;
	const char *why;

	/* the config in force now, not the request's: a removed listener
	 * has no client_ca, and no peer stands under none */
	if (x->peer_ctx == NULL)
		return false;
	s = peer_standing(x, &x->w->gen->conf->inbound);
	if (s == PEER_STANDS && proxy_tunnel_key_stands(x))
		return false;
	if (s == PEER_STANDS) {
		metrics_auth_failure(x->w->ms, AUTH_INVALID);
		why = KEY_WITHDRAWN_MSG;
	} else
		why = s == PEER_CA_REPLACED ? CA_REPLACED_MSG : "peer is no longer in allowed_peers";
	x->upgrade = false;
	proxy_refuse(x, FE_INVALID_SERVICE_AUTH, why, 0, true);
	return true;
}

bool
proxy_response_head(struct exchange *x, const char *msg, const struct http_head *h,
    bool until_close)
{
	bool switching = h->status == 101 && x->upgrade;

	if (h->status >= 100 && h->status < 200 && !switching) {
		if (++x->interims > MAX_INTERIM_RESPONSES) {
			proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR,
			    "too many interim (1xx) responses");
			return false;
		}
		/* ferry answered 100-continue itself; a 101 nobody asked for
		 * goes nowhere; a hedge's are dropped (only a winner speaks) */
		if (h->status == 100 || h->status == 101 || x->hedge_of)
			return true;
		return x->down->send_interim(x, msg, h);
	}
	if (!switching) {
		enum attempt_result r = grpc_unavailable_only(x, msg, h) ? AR_STATUS_503 :
		    status_result(h->status);
		int64_t delay;

		if (x->hedge_of) {
			/* a hedge: the first head that is not a failure wins */
			if (attempt_is_failure(r))
				hedge_failed(x, r, true);
			else
				hedge_won(x);
			return false;
		}
		attempt_record(x, r);
		if (r != AR_OK && x->hedges && hedge_takeover(x))
			return false;	/* a hedge races on: this 5xx is dropped */
		if (r != AR_OK && attempt_retry_allowed(x, r, true, &delay)) {
			/* this 5xx is not the last word: drop it with its connection */
			attempt_release(x, false);
			attempt_retry_schedule(x, delay);
			return false;
		}
	} else {
		attempt_record(x, AR_OK);
		if (tunnel_refused(x))
			return false;
	}
	hedge_lost_all(x);	/* this head is the answer */
	x->status = (uint32_t)h->status;
	if (x->grpc)
		grpc_status_seen(x, msg, h);	/* trailers-only */
	x->upgrade = switching;
	x->dechunk = (x->http10 || x->unframed) && h->chunked && !x->head_method;
	x->resp_chunked = h->chunked && !x->dechunk && !x->head_method;
	if (x->dechunk && x->http10)
		x->close_after = true;	/* the close is its only end marker */
	if (!switching && until_close)
		x->close_after = true;
	if (!x->req_done)
		x->close_after = true;	/* the rest of the request has nowhere to go */
	if (!switching && !coding_response(x, msg, h)) {
		/* the body stays unread: its connection goes */
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, "out of memory for the response's decoder",
		    0, !x->req_done);
		return false;
	}
	if (!x->down->send_head(x, msg, h))
		return false;
	/* an HTTP/1 head waits in the worker's scratch for the first body
	 * bytes, and a coder may take more than this turn to make any */
	if (x->zf && !x->down->send_data(x, NULL, 0))
		return false;
	x->resp_head = true;
	x->last_io_ms = clock_now_ms();
	exchange_head_sent(x);
	if (switching) {
		x->tunnel = true;
		x->req_done = true;
		if (!x->down->tunnel_start(x))
			return false;
	}
	proxy_arm_timer(x);
	return true;
}

void
proxy_response_over_limit(struct exchange *x)
{
	static struct log_limit limit;

	log_limited(&limit, LOG_WARN, "response head over the limits with the header rules' "
	    "additions service=%s", x->svc ? x->svc->conf->name : "-");
	/* no tunnel follows a 101 that is not sent; the body stays unread,
	 * so the upstream connection goes (attempt_release) */
	x->upgrade = false;
	proxy_refuse(x, FE_SERVICE_ERROR, HEAD_OVER_WITH_RULES("response"), 0, !x->req_done);
}

void
proxy_response_trailers(struct exchange *x, const char *msg, const struct http_head *h)
{
	if (x->grpc)
		grpc_status_seen(x, msg, h);
	if (x->live && x->zf && !x->unframed)
		coding_trailers(x, msg, h);
	if (x->live && x->resp_head && x->unframed)
		x->down->send_trailers(x, msg, h);
}

bool
proxy_response_data(struct exchange *x, const void *p, size_t n)
{
	if (x->zf)
		return coding_data(x, p, n, false);
	if (!x->down->send_data(x, p, n))
		return false;
	x->last_io_ms = clock_now_ms();
	return true;
}

void
proxy_response_end(struct exchange *x, const void *p, size_t n, bool reusable)
{
	if (x->tunnel)
		x->close_after = true;
	/* a coder may hold the end back for a slow client long after the
	 * connection went, and nothing else then counts on x->ep, which
	 * DNS may retire and a sweep free; the end reads it (access log) */
	if (x->zf)
		attempt_hold(x);
	/* back before the last byte goes, so the pool gauges are settled */
	attempt_release(x, reusable && x->req_done && !x->upgrade);
	/* nothing sends the head again: its key is gone before the client
	 * has the answer (proxy_end wipes it for every other ending) */
	sbuf_wipe_secret(&x->req);
	if (x->zf) {
		coding_data(x, p, n, true);
		return;
	}
	if (x->down->send_last(x, p, n))
		proxy_end(x, END_DONE);
}

void
proxy_response_cut(struct exchange *x, enum end_cause cause, const char *why)
{
	static struct log_limit limit;

	log_limited(&limit, LOG_INFO, "cut %s cause=\"%s\" upstream=%s",
	    x->tunnel ? "tunnel" : "response", why, x->ep ? x->ep->addr_text : "-");
	/* a head still held back leaves: the client sees a cut response */
	if (x->resp_head && !x->down->send_data(x, NULL, 0))
		return;
	proxy_end(x, cause);
}

/* --------------------------------------------------------- timers ---- */

void
proxy_arm_timer(struct exchange *x)
{
	int64_t now = clock_now_ms(), at;

	if (!x->live)
		return;
	if (x->retry_at_ms && !x->tunnel) {
		at = x->retry_at_ms;
	} else if (!x->resp_head) {
		at = x->try_deadline_ms;
		if (x->connect_deadline_ms && x->connect_deadline_ms < at)
			at = x->connect_deadline_ms;
		if (x->hedge_at_ms && x->hedge_at_ms < at)
			at = x->hedge_at_ms;
	} else {
		at = x->last_io_ms + x->svc->conf->timeouts.stream_idle;
		if (x->grpc_deadline_ms && !x->tunnel && x->grpc_deadline_ms < at)
			at = x->grpc_deadline_ms;
	}
	/* armed to fire no later: let it, exchange_timeout() checks what is
	 * due and re-arms (most exchanges end before any deadline, and
	 * moving a timer is a heap operation per call) */
	if (x->timer_at_ms != 0 && x->timer_at_ms <= at)
		return;
	x->timer_at_ms = at;
	timer_at(&x->timer, at, now);
}

/* SPEC §12: the grpc-timeout ran out after the head went to the app. The
 * upstream's stream is cancelled (an HTTP/1.1 connection, with an answer
 * half read, is closed), and the call ends as gRPC says it does, with
 * DEADLINE_EXCEEDED in trailers; counted as ferry's 504. */
static void
grpc_deadline_passed(struct exchange *x)
{
	static const char lines[] = "grpc-status: 4\r\n"
	    "grpc-message: deadline exceeded (grpc-timeout) after the response head\r\n";
	static const char last[] = "0\r\ngrpc-status: 4\r\n"
	    "grpc-message: deadline exceeded (grpc-timeout) after the response head\r\n\r\n";
	static struct log_limit limit;
	struct http_head t;

	log_limited(&limit, LOG_INFO, "cut gRPC call cause=\"grpc-timeout\" upstream=%s",
	    x->ep ? x->ep->addr_text : "-");
	attempt_release(x, false);
	x->grpc_status = 4;
	x->ferr = FE_SERVICE_TIMEOUT;
	if (x->unframed) {
		headers_from_lines(lines, sizeof(lines) - 1, &t);
		x->down->send_trailers(x, lines, &t);
		http_head_release(&t);
		if (x->down->send_last(x, NULL, 0))
			proxy_end(x, END_DONE);
	} else if (x->resp_chunked) {
		if (x->down->send_last(x, last, sizeof(last) - 1))
			proxy_end(x, END_DONE);
	} else {
		/* the body's length was promised: only a cut tells the end */
		x->close_after = true;
		proxy_end(x, END_DEADLINE);
	}
}

/* stream_idle is due by what ferry received and handed on; either side
 * may have taken bytes since, out of the socket buffers (a slow reader
 * that ferry writes to only when the kernel's queue has room, while the
 * other side waits paused): then the silence is shorter. Asked only
 * when stream_idle is due, so the codecs may sample their sockets. */
static int64_t
last_taken(struct exchange *x)
{
	int64_t t = x->last_io_ms, p;

	if (x->down->progress != NULL && (p = x->down->progress(x)) > t)
		t = p;
	if (exchange_attached(x) && x->upops->progress != NULL &&
	    (p = x->upops->progress(x)) > t)
		t = p;
	return t;
}

static void
exchange_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct exchange *x = arg;
	int64_t now = clock_now_ms();

	(void)fd;
	(void)what;
	x->timer_at_ms = 0;
	if (!x->live)
		return;
	if (x->retry_at_ms && !x->tunnel) {
		if (now >= x->retry_at_ms) {
			x->retry_at_ms = 0;
			attempt_start(x);
			return;
		}
	} else if (!x->resp_head) {
		if ((x->connect_deadline_ms && now >= x->connect_deadline_ms) ||
		    now >= x->try_deadline_ms) {
			attempt_timed_out(x, now);
			return;
		}
		if (x->hedge_at_ms && now >= x->hedge_at_ms)
			hedge_start(x, now);
	} else if (x->grpc_deadline_ms && !x->tunnel && now >= x->grpc_deadline_ms) {
		grpc_deadline_passed(x);
		return;
	} else if (now >= x->last_io_ms + x->svc->conf->timeouts.stream_idle &&
	    now >= (x->last_io_ms = last_taken(x)) + x->svc->conf->timeouts.stream_idle) {
		static struct log_limit limit;

		log_limited(&limit, LOG_INFO, "cut stream cause=\"idle %lldms\" upstream=%s",
		    (long long)x->svc->conf->timeouts.stream_idle, x->ep->addr_text);
		proxy_end(x, END_STREAM_IDLE);
		return;
	}
	proxy_arm_timer(x);
}
