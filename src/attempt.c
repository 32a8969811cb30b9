/*
 * Upstream attempts. See attempt.h.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "attempt.h"
#include "clock.h"
#include "deadline.h"
#include "hedge.h"
#include "log.h"
#include "pool.h"
#include "retry.h"
#include "tracing.h"

void
attempt_release(struct exchange *x, bool reusable)
{
	if (exchange_attached(x))
		x->upops->release(x, reusable);
}

/* WON: its response head is the answer (a hedge's counts as won). */
static void
attempt_close(struct exchange *x, bool won)
{
	if (x->hedge_attempt) {
		metrics_hedge(x->w->ms, exchange_metrics_id(x), won ? HEDGE_WON : HEDGE_LOST);
		x->won_by_hedge = won;
		x->hedge_attempt = false;
	}
	x->attempt_open = false;
	x->ep->in_flight--;
	if (x->ep->share)
		atomic_fetch_sub_explicit(&x->ep->share->in_flight, 1, memory_order_relaxed);
}

void
attempt_drop(struct exchange *x)
{
	if (x->attempt_open)
		attempt_close(x, false);
}

/* The attempt in the list of X's attempts (SPEC §16): its endpoint,
 * RESULT and time. A hedge's goes to the exchange it races for: the
 * request's one log line lists every attempt it made. */
static void
attempt_note(struct exchange *x, uint8_t result, int64_t now)
{
	struct attempt_note n = { .result = result };
	const struct sockaddr_storage *sa = &x->ep->sa;
	int64_t ms = now - x->attempt_start_ms;

	n.ms = ms < 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		n.family = AF_INET;
		memcpy(n.addr, &in->sin_addr, 4);
		n.port = ntohs(in->sin_port);
	} else if (sa->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		n.family = AF_INET6;
		memcpy(n.addr, &in6->sin6_addr, 16);
		n.port = ntohs(in6->sin6_port);
	}
	fate_note_add(x->hedge_of ? &x->hedge_of->notes : &x->notes, &n);
}

void
attempt_cancel(struct exchange *x)
{
	if (!x->attempt_open)
		return;
	attempt_note(x, NOTE_CANCELLED, clock_now_ms());
	attempt_close(x, false);
}

/* X's attempt lost a race (another attempt's response head came first):
 * cancelled, as attempt_cancel, and no failure; but its endpoint was at
 * least this slow, which its EWMA learns (only upwards), or an endpoint
 * whose attempts always lose would keep the EWMA of its last answer, or
 * none: p2c_ewma would send first attempts to it ever after. */
void
attempt_lost(struct exchange *x)
{
	struct endpoint *ep = x->ep;
	int64_t now = clock_now_ms();
	double ms = (double)(now - x->attempt_start_ms);

	if (!x->attempt_open)
		return;
	if (ms > ewma_current(ep->ewma_ms, ep->ewma_last_ms, now)) {
		ewma_update(&ep->ewma_ms, ms, &ep->ewma_last_ms, now);
		if (ep->share)
			atomic_store_explicit(&ep->share->ewma_us, (uint64_t)(ep->ewma_ms * 1000),
			    memory_order_relaxed);
	}
	attempt_cancel(x);
}

/* The attempt's outcome, once: what the breaker, outlier detection and the
 * balancer learn from it (SPEC §6 Failures). */
void
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
	attempt_close(x, !failure);
	attempt_note(x, (uint8_t)r, now);
	x->last_result = (uint8_t)r;
	metrics_attempt(x->w->ms, exchange_metrics_id(x), ur[r]);
	if (r == AR_OK)		/* for hedging: {after: p95} */
		latency_add(&s->lat, (now - x->attempt_start_ms) * 1000, now);
	/* a failure costs a penalty, or a dead endpoint, quick to fail and
	 * never busy, would look the best (balancer.h) */
	if (failure)
		ewma_failure(&ep->ewma_ms, (double)(now - x->attempt_start_ms), &ep->ewma_last_ms, now);
	else
		ewma_update(&ep->ewma_ms, (double)(now - x->attempt_start_ms), &ep->ewma_last_ms, now);
	if (ep->share)
		atomic_store_explicit(&ep->share->ewma_us, (uint64_t)(ep->ewma_ms * 1000),
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
		outlier_record(ep->outliers, ep->outlier, &s->conf->outlier, failure, now);
}

/*
 * Between attempts (a retry's backoff, a wait for room in a full pool) X
 * names x->ep while no attempt or connection of it counts there, and DNS
 * may drop that endpoint meanwhile: the worker frees a retired endpoint
 * once nothing counts on it, and X's end still reads it (the access log's
 * upstream, the trace). So the wait counts in ep->held, until the next
 * attempt_start() or the end of X (exchange_leave). So does a coded
 * response's end that waits in its coder for a slow client after the
 * upstream connection went (proxy_response_end).
 */
void
attempt_hold(struct exchange *x)
{
	if (x->ep_held)
		return;
	x->ep->held++;
	x->ep_held = true;
}

void
attempt_unhold(struct exchange *x)
{
	if (!x->ep_held)
		return;
	x->ep->held--;
	x->ep_held = false;
}

static bool endpoint_available(struct endpoint *ep, bool any_healthy, int64_t now);
static bool any_healthy(const struct svc_state *s);

/* Some endpoint of X's service could take an attempt now (the one that
 * just failed may have been ejected for it, and the last with it). */
static bool
endpoint_left(const struct exchange *x, int64_t now)
{
	const struct svc_state *s = x->svc;
	bool healthy = any_healthy(s);

	for (size_t i = 0; i < s->n_eps; i++)
		if (endpoint_available(s->eps[i], healthy, now))
			return true;
	return false;
}

/* After a failed attempt: may another one follow? The policy, the breaker
 * and the budget (which this takes from) all have a say. */
bool
attempt_retry_allowed(struct exchange *x, enum attempt_result r, bool bytes_sent,
    int64_t *delay)
{
	struct svc_state *s = x->svc;
	const struct conf_service *c = s->conf;
	int64_t now = clock_now_ms(), ra;
	struct retry_input in = {
		.result = r,
		.retries_done = x->retries,
		.idempotent = x->idempotent,
		/* body bytes consumed past the replay buffer are gone: as
		 * sent. A body over it that req still holds whole (it came
		 * with the head) is not: nothing of it left on a refused
		 * connect (SPEC §6) */
		.request_bytes_sent = bytes_sent || x->body_dropped,
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
	/* none to go to: the retries ran out here, and an upstream's 5xx
	 * goes to the app as it was (SPEC §6), not a 503 after the backoff */
	if (!endpoint_left(x, now))
		return false;
	v = breaker_allow(s->rt->breaker, &c->breaker, now, &ra);
	if (v == BREAKER_REJECT)
		return false;
	if (!retry_budget_take(s->rt->budget, &c->retries, now)) {
		breaker_cancel(s->rt->breaker, v);
		x->budget_refused = true;
		metrics_budget_exhausted(x->w->ms, s->rt->metrics_id);
		log_debug("retry budget of %s exhausted", c->name);
		return false;
	}
	x->verdict = v;		/* the retry may be a half-open probe */
	*delay = d.delay_ms;
	return true;
}

void
attempt_retry_schedule(struct exchange *x, int64_t delay)
{
	x->retries++;
	x->avoid = x->ep;
	metrics_retry(x->w->ms, x->svc->rt->metrics_id);
	if (x->traced)
		tracing_retry(x, delay);
	if (delay <= 0) {
		attempt_start(x);
		return;
	}
	attempt_hold(x);
	x->retry_at_ms = clock_now_ms() + delay;
	proxy_arm_timer(x);
}

/* What a remote peer is told of a failure of the local app: its address,
 * port and errno text stay in the WARN line, for the operator. */
static const char *
peer_message(const struct exchange *x, enum attempt_result r, enum ferry_error e,
    const char *msg)
{
	if (!x->inbound)
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

/* Before a response head reached the client: re-send, retry, or answer
 * with E and MSG. */
void
proxy_attempt_failed(struct exchange *x, enum attempt_result r, enum ferry_error e,
    const char *msg)
{
	bool sent = exchange_attached(x) && x->upops->request_sent(x);
	int64_t delay;
	char full[320];

	if (x->hedge_of) {
		hedge_failed(x, r, true);
		return;
	}
	if (x->resp_head) {
		/* the head went out: nothing to retry or answer */
		proxy_response_cut(x, END_UPSTREAM_CLOSED, msg);
		return;
	}
	if (r == AR_RESET && !x->resent && x->replayable && exchange_attached(x) &&
	    x->upops->unprocessed(x)) {
		/* the keep-alive race: the upstream closed a pooled connection
		 * as we reused it; not a failure, not a retry. Only what x->req
		 * holds whole goes again: body streamed past retries.buffer is
		 * gone (an HTTP/2 stream refused after taking it) */
		attempt_release(x, false);
		attempt_drop(x);
		x->attempts--;
		/* a racing hedge carries the request already: it takes the
		 * place. A re-send would be a third copy, and one that waits
		 * for room in a full pool would end the request at the connect
		 * timeout, cancelling the hedge */
		if (x->hedges && hedge_takeover(x))
			return;
		log_debug("re-sending on a new connection to %s", x->ep->addr_text);
		/* counted apart, so the upstream's count of requests is ferry's
		 * attempts plus these */
		metrics_resend(x->w->ms, exchange_metrics_id(x));
		x->resent = true;
		x->resend_fresh = true;
		attempt_start(x);
		return;
	}
	attempt_record(x, r);
	attempt_release(x, false);
	if (x->hedges && hedge_takeover(x))
		return;		/* a hedge races on: no retry needed */
	if (attempt_retry_allowed(x, r, sent, &delay)) {
		attempt_retry_schedule(x, delay);
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
	proxy_refuse(x, e, peer_message(x, r, e, msg), e == FE_SERVICE_UNAVAILABLE ? 1 : 0,
	    !x->req_done);
}

void
attempt_timed_out(struct exchange *x, int64_t now)
{
	char msg[256], budget[32];
	bool per_try = x->try_deadline_ms < x->deadline_ms;

	if (x->hedge_of != NULL && now >= x->deadline_ms) {
		/* the request's deadline ends the race: the hedge began later,
		 * its endpoint had less time, and it is cancelled as the first
		 * attempt's timeout ends the request (whichever timer fires
		 * first) */
		hedge_failed(x, AR_PER_TRY_TIMEOUT, false);
		return;
	}
	if (x->connect_deadline_ms && now >= x->connect_deadline_ms) {
		snprintf(msg, sizeof(msg), "connect %s: timed out after %s", x->ep->addr_text,
		    format_duration(x->svc->conf->timeouts.connect, budget, sizeof(budget)));
		proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_TIMEOUT, msg);
		return;
	}
	/* name the budget that ran out, as configured (SPEC §9: "within 2s"),
	 * not the time measured from the attempt's start */
	format_duration(per_try ? x->svc->conf->timeouts.per_try :
	    x->deadline_ms - x->start_ms, budget, sizeof(budget));
	/* a budget shorter than the config says came from the caller: say
	 * so, or the message contradicts the config */
	snprintf(msg, sizeof(msg), "no response head from %s within %s%s",
	    x->ep->addr_text, budget,
	    !per_try && x->deadline_capped ? " (the request's own deadline)" : "");
	proxy_attempt_failed(x, AR_PER_TRY_TIMEOUT, FE_SERVICE_TIMEOUT, msg);
}

/* ------------------------------------------------- endpoint choice ---- */

static bool
endpoint_available(struct endpoint *ep, bool any_healthy, int64_t now)
{
	if (ep->rt && any_healthy &&
	    !atomic_load_explicit(&ep->rt->healthy, memory_order_relaxed))
		return false;
	return ep->outlier == NULL || !outlier_ejected(ep->outliers, ep->outlier, now);
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

/* An attempt of X, or of one of its hedges, is on EP. */
static bool
racing_on(const struct exchange *x, const struct endpoint *ep)
{
	if (x->attempt_open && x->ep == ep)
		return true;
	for (const struct exchange *h = x->hedges; h; h = h->hedge_next)
		if (h->ep == ep)
			return true;
	return false;
}

/* An endpoint at pool.max_per_endpoint holds a request up to the connect
 * timeout (pool_full) while another one may have room: those with room
 * are the candidates while there are any, as HAProxy sends a request to a
 * server with a free maxconn slot. So a retry after an upstream's 5xx
 * goes back to the endpoint whose connection it just let go rather than
 * wait on a full pool and end in 503. */
static void
prefer_pool_room(const struct exchange *x, struct lb_candidate *cands, size_t n)
{
	const struct svc_state *s = x->svc;
	size_t j;

	for (j = 0; j < n; j++)
		if (cands[j].available && attempt_pool_room(x, s->eps[j]))
			break;
	if (j == n)
		return;		/* none has room: they all wait alike */
	for (j = 0; j < n; j++)
		if (cands[j].available && !attempt_pool_room(x, s->eps[j]))
			cands[j].available = false;
}

struct endpoint *
attempt_pick(struct exchange *x, int64_t now, bool hedge)
{
	struct svc_state *s = x->svc;
	struct lb_candidate *cands = x->w->cands;
	bool healthy = any_healthy(s);
	uint32_t rr = s->rr;
	long i, avoid = -1;

	if (s->n_eps == 0)
		return NULL;
	if (s->n_eps == 1 && !hedge)
		return endpoint_available(s->eps[0], healthy, now) ? s->eps[0] : NULL;
	for (size_t j = 0; j < s->n_eps; j++) {
		struct endpoint *ep = s->eps[j];

		cands[j].available = endpoint_available(ep, healthy, now) &&
		    !(hedge && racing_on(x, ep));
		cands[j].in_flight = ep->in_flight;
		cands[j].ewma_ms = ewma_current(ep->ewma_ms, ep->ewma_last_ms, now);
		cands[j].weight = ep->weight;
		cands[j].backoff = backoff_active(&ep->backoff, now);
		if (x->retries && ep == x->avoid)
			avoid = (long)j;
	}
	if (s->conf->pool.max_per_endpoint != 0)
		prefer_pool_room(x, cands, s->n_eps);
	/* a hedge leaves round robin's cursor alone: else, with every request
	 * hedged, the first attempts would all go to the same endpoint */
	i = balancer_pick(s->conf->load_balancer, cands, s->n_eps, avoid, hedge ? &rr : &s->rr,
	    ids_random());
	if (i >= 0 && hedge && !cands[i].available)
		return NULL;	/* only what races already was left */
	return i < 0 ? NULL : s->eps[i];
}

bool
attempt_pool_below_bound(const struct exchange *x, const struct endpoint *ep)
{
	const struct conf_service *svc = x->svc->conf;

	return ep->rt == NULL || svc->pool.max_per_endpoint == 0 ||
	    atomic_load_explicit(&ep->rt->conns, memory_order_relaxed) <
	    svc->pool.max_per_endpoint;
}

bool
attempt_pool_room(const struct exchange *x, const struct endpoint *ep)
{
	const struct conf_service *svc = x->svc->conf;

	if (ep->idle != NULL || attempt_pool_below_bound(x, ep))
		return true;
	/* the bound is on connections: on HTTP/2 a request is a stream */
	return (svc->protocol == PROTO_H2 || (svc->protocol == PROTO_AUTO && ep->speaks_h2)) &&
	    h2_up_has_room(x->w, ep);
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

	if (attempt_pool_room(x, ep)) {
		x->pool_wait_until_ms = 0;
		return false;
	}
	if (x->pool_wait_until_ms == 0)
		x->pool_wait_until_ms = now + svc->timeouts.connect;
	/* the bound may be held by idle connections of other workers: ask
	 * them to let one go (again after a while, if still so) */
	if (now >= x->pool_asked_ms + 50 && pool_idle_elsewhere(ep)) {
		x->pool_asked_ms = now;
		worker_release_idle_elsewhere(x->w, ep->rt);
	}
	if (now >= x->pool_wait_until_ms) {
		snprintf(msg, sizeof(msg), "connection pool for %s is full (%u connections)",
		    x->inbound ? "the local app" : ep->addr_text, svc->pool.max_per_endpoint);
		x->refused = FATE_OVER_CONCURRENCY;
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		return true;
	}
	/* other workers release connections too: look again shortly */
	attempt_hold(x);
	x->retry_at_ms = now + 10;
	proxy_arm_timer(x);
	return true;
}

void
attempt_start(struct exchange *x)
{
	const struct conf_service *svc = x->svc->conf;
	int64_t now = clock_now_ms();
	char msg[256];

	x->retry_at_ms = 0;
	attempt_unhold(x);	/* no free before the pick compares x->avoid */
	if ((x->ep = attempt_pick(x, now, false)) == NULL) {
		snprintf(msg, sizeof(msg), "no available endpoint for %s", svc->name);
		x->refused = FATE_NO_ENDPOINT;
		proxy_refuse(x, FE_SERVICE_UNAVAILABLE, msg, 1, !x->req_done);
		return;
	}
	if (pool_full(x, now))
		return;
	attempt_begin(x, x->ep, now);
}

void
attempt_begin(struct exchange *x, struct endpoint *ep, int64_t now)
{
	const struct conf_service *svc = x->svc->conf;

	x->ep = ep;
	x->retry_at_ms = 0;
	x->attempts++;
	x->attempt_open = true;
	x->attempt_start_ms = now;
	x->ep->in_flight++;
	if (x->ep->share)
		atomic_fetch_add_explicit(&x->ep->share->in_flight, 1, memory_order_relaxed);
	x->try_deadline_ms = svc->timeouts.per_try ? now + svc->timeouts.per_try : x->deadline_ms;
	if (x->try_deadline_ms > x->deadline_ms)
		x->try_deadline_ms = x->deadline_ms;
	x->connect_deadline_ms = now + svc->timeouts.connect;
	if (x->grpc_timeout_at) {
		/* the time left, as this attempt's grpc-timeout (SPEC §12) */
		int64_t left = x->deadline_ms - now;
		char digits[GRPC_TIMEOUT_DIGITS + 1];

		snprintf(digits, sizeof(digits), "%0*lld", GRPC_TIMEOUT_DIGITS,
		    (long long)(left < 1 ? 1 : left > 99999999 ? 99999999 : left));
		memcpy(x->req.p + x->grpc_timeout_at, digits, GRPC_TIMEOUT_DIGITS);
	}
	if (x->deadline_at)
		/* and as x-ferry-deadline-ms, for any protocol (SPEC §16) */
		deadline_write(x->req.p + x->deadline_at, x->deadline_ms - now);
	x->upops = svc->protocol == PROTO_H2 ||
	    (svc->protocol == PROTO_AUTO && x->ep->speaks_h2) ? &h2_up_ops : &h1_up_ops;
	if (x->hedge_of == NULL)
		hedge_plan(x, now);
	if (!x->upops->start(x))
		return;
	if (!x->req_done)
		x->down->resume_body(x);	/* body reading waited for an attempt */
	proxy_arm_timer(x);
}
