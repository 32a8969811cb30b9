/*
 * Hedged requests. See hedge.h.
 */
#include <stddef.h>
#include <stdlib.h>

#include "attempt.h"
#include "clock.h"
#include "hedge.h"
#include "log.h"

/* A hedge and what frees it once no callback of its codec is running. */
struct hedge {
	struct exchange x;
	struct deferred gone;
};

/* A hedge has no client: nothing of its own ever reaches one (proxy.c
 * stops its head, and its body flows only once it moved to the exchange
 * it raced for). These answer anything that asks anyway. */
static bool no_send(struct exchange *x) { (void)x; return false; }
static bool no_head(struct exchange *x, const char *m, const struct http_head *h)
{ (void)x; (void)m; (void)h; return false; }
static bool no_data(struct exchange *x, const void *p, size_t n)
{ (void)x; (void)p; (void)n; return false; }
static void no_error(struct exchange *x, enum ferry_error e, const char *m, unsigned r, bool c)
{ (void)x; (void)e; (void)m; (void)r; (void)c; }
static bool not_congested(const struct exchange *x) { (void)x; return false; }
static void no_resume(struct exchange *x) { (void)x; }
static void no_trailers(struct exchange *x, const char *m, const struct http_head *h)
{ (void)x; (void)m; (void)h; }
static void no_finish(struct exchange *x, enum end_cause c) { (void)x; (void)c; }

static const struct down_ops hedge_down = {
	.send_continue = no_send,
	.send_interim = no_head,
	.send_head = no_head,
	.send_data = no_data,
	.send_last = no_data,
	.send_error = no_error,
	.congested = not_congested,
	.resume_body = no_resume,
	.send_trailers = no_trailers,
	.tunnel_start = no_send,
	.finish = no_finish,
};

static void
hedge_free(struct deferred *d)
{
	struct hedge *hg = (struct hedge *)(void *)((char *)d - offsetof(struct hedge, gone));

	proxy_exchange_free(&hg->x);
	free(hg);
}

/* H is done; it is freed at the end of this turn of the loop, as the
 * codec's callback that ended it may still be on the stack. */
static void
hedge_bury(struct exchange *h)
{
	struct hedge *hg = (struct hedge *)(void *)((char *)h - offsetof(struct hedge, x));
	struct exchange **pp;

	for (pp = &h->hedge_of->hedges; *pp; pp = &(*pp)->hedge_next)
		if (*pp == h) {
			*pp = h->hedge_next;
			break;
		}
	h->live = false;
	event_del(&h->timer);
	hg->gone.run = hedge_free;
	worker_defer(h->w, &hg->gone);
}

/* The delay before a hedge of X's service, or -1 for none yet (p95 with
 * too few responses measured). */
static int64_t
hedge_delay(struct svc_state *s, int64_t now)
{
	const struct conf_hedging *c = &s->conf->hedging;
	int64_t us;

	if (!c->after_p95)
		return c->after;
	if ((us = latency_quantile(&s->lat, 0.95, now)) < 0)
		return -1;
	us = (us + 999) / 1000;
	return us < 5 ? 5 : us;
}

/* What may be hedged at all (SPEC §16, §6): idempotent requests of an
 * outbound service with another endpoint to go to, within max. */
static bool
hedge_may(const struct exchange *x)
{
	const struct svc_state *s = x->svc;

	return s->conf->hedging.enabled && x->hedges_sent < s->conf->hedging.max &&
	    x->hedge_of == NULL && !x->inbound && s->rt != NULL && s->n_eps > 1 &&
	    x->idempotent && !x->upgrade;
}

void
hedge_plan(struct exchange *x, int64_t now)
{
	int64_t d;

	x->hedge_at_ms = 0;
	if (hedge_may(x) && (d = hedge_delay(x->svc, now)) >= 0)
		x->hedge_at_ms = now + d;
}

void
hedge_start(struct exchange *x, int64_t now)
{
	struct svc_state *s = x->svc;
	const struct conf_service *c = s->conf;
	struct endpoint *ep;
	enum breaker_verdict v;
	struct hedge *hg;
	struct exchange *h;
	int64_t ra, d;

	x->hedge_at_ms = 0;
	/* a body still streaming in cannot be sent twice yet: the upstream
	 * gets `after` with all of it before a hedge follows */
	if (!x->req_done) {
		x->hedge_after_body = hedge_may(x) && x->replayable && !x->resp_head;
		return;
	}
	/* nor one too big to keep, nor past the deadline */
	if (!hedge_may(x) || !x->replayable || x->resp_head ||
	    !x->attempt_open || !exchange_attached(x) || now >= x->deadline_ms)
		return;
	if ((ep = attempt_pick(x, now, true)) == NULL || !attempt_pool_room(x, ep))
		return;
	/* a half-open breaker lets probes through, not hedges */
	v = breaker_allow(s->rt->breaker, &c->breaker, now, &ra);
	if (v != BREAKER_PASS) {
		breaker_cancel(s->rt->breaker, v);
		return;
	}
	if (!retry_budget_take(s->rt->budget, &c->retries, now)) {
		metrics_hedge(x->w->ms, s->rt->metrics_id, HEDGE_BUDGET);
		log_debug("retry budget of %s spent: no hedge", c->name);
		return;
	}
	if ((hg = calloc(1, sizeof(*hg))) == NULL)
		return;
	h = &hg->x;
	if (proxy_exchange_init(h, x->w, &hedge_down) != 0) {
		proxy_exchange_free(h);
		free(hg);
		return;
	}
	sbuf_add(&h->req, x->req.p, x->req.len);	/* its own copy: attempts
							   rewrite grpc-timeout */
	if (h->req.oom) {
		proxy_exchange_free(h);
		free(hg);
		return;
	}
	sbuf_mark_secret(&h->req, x->req.secret_from, x->req.secret_to - x->req.secret_from);
	h->hedge_of = x;
	h->hedge_attempt = true;
	h->lis = x->lis;
	h->lis_service = x->lis_service;
	h->peer = x->peer;
	h->unframed = x->unframed;
	h->gen = x->gen;		/* x holds it for longer than H lives */
	h->svc = s;
	h->live = true;
	h->sent = true;
	h->start_ms = x->start_ms;
	h->start_us = x->start_us;
	h->grpc_status = -1;
	h->deadline_ms = x->deadline_ms;
	h->grpc_deadline_ms = x->grpc_deadline_ms;
	h->verdict = BREAKER_PASS;
	h->http10 = x->http10;
	h->head_method = x->head_method;
	h->idempotent = true;
	h->keep_alive = x->keep_alive;
	h->grpc = x->grpc;
	h->grpc_timeout_at = x->grpc_timeout_at;
	h->deadline_at = x->deadline_at;
	h->deadline_capped = x->deadline_capped;
	h->req_done = true;
	h->replayable = true;
	h->req_head_len = x->req_head_len;
	h->hedge_next = x->hedges;
	x->hedges = h;
	x->hedges_sent++;
	x->attempts++;
	log_debug("hedging %s: %s after %lldms", c->name, ep->addr_text,
	    (long long)(now - x->attempt_start_ms));
	if (x->hedges_sent < c->hedging.max && (d = hedge_delay(s, now)) >= 0)
		x->hedge_at_ms = now + d;
	attempt_begin(h, ep, now);	/* a failure here ends only H */
}

void
hedge_body_done(struct exchange *x, int64_t now)
{
	x->hedge_after_body = false;
	if (!x->replayable || x->resp_head || !x->attempt_open || x->hedge_at_ms)
		return;
	hedge_plan(x, now);
	if (x->hedge_at_ms)
		proxy_arm_timer(x);
}

/* The attempt of FROM becomes TO's (its codec's handover follows). */
static void
attempt_move(struct exchange *from, struct exchange *to)
{
	attempt_unhold(to);	/* its count is on the endpoint it names */
	to->ep = from->ep;
	to->upops = from->upops;
	to->attempt_open = from->attempt_open;
	to->hedge_attempt = from->hedge_attempt;
	to->attempt_start_ms = from->attempt_start_ms;
	to->try_deadline_ms = from->try_deadline_ms;
	to->connect_deadline_ms = from->connect_deadline_ms;
	to->head_ends = from->head_ends;
	to->interims = from->interims;
	/* TO may have been waiting for room in a full pool (a re-send after
	 * a stale connection, attempt_start): that wait is over, or its timer
	 * would start another attempt under this one's response */
	to->retry_at_ms = 0;
	to->pool_wait_until_ms = 0;
	from->attempt_open = false;
	from->hedge_attempt = false;
}

/* A hedge is given up: its connection is closed (HTTP/2: the stream
 * reset with CANCEL); the request's list of attempts says "cancelled".
 * LOST: another attempt's head came first, and its endpoint learns that
 * it was at least this slow (attempt_lost); else (the client went, the
 * request ended) it learns nothing. */
static void
hedge_cancel(struct exchange *h, bool lost)
{
	attempt_release(h, false);
	if (lost)
		attempt_lost(h);
	else
		attempt_cancel(h);
	hedge_bury(h);
}

void
hedge_cancel_all(struct exchange *x)
{
	while (x->hedges)
		hedge_cancel(x->hedges, false);
}

void
hedge_lost_all(struct exchange *x)
{
	while (x->hedges)
		hedge_cancel(x->hedges, true);
}

void
hedge_won(struct exchange *h)
{
	struct exchange *x = h->hedge_of;
	int64_t now = clock_now_ms();

	/* the first attempt was at least this slow: what it tells of p95 */
	if (x->attempt_open)
		latency_add(&x->svc->lat, (now - x->attempt_start_ms) * 1000, now);
	attempt_release(x, false);
	attempt_lost(x);	/* listed as cancelled, as a losing hedge is */
	hedge_bury(h);
	hedge_lost_all(x);
	attempt_move(h, x);
	x->hedge_at_ms = 0;
	x->upops->handover(h, x, true);
}

void
hedge_failed(struct exchange *h, enum attempt_result r, bool record)
{
	if (!h->live)
		return;
	/* a pooled connection the upstream had closed says nothing of it */
	if (record && !(r == AR_RESET && exchange_attached(h) && h->upops->unprocessed(h)))
		attempt_record(h, r);
	attempt_release(h, false);
	attempt_cancel(h);	/* not recorded: listed as cancelled */
	hedge_bury(h);
}

bool
hedge_takeover(struct exchange *x)
{
	struct exchange *h = x->hedges;

	if (h == NULL)
		return false;
	if (clock_now_ms() >= x->deadline_ms) {
		hedge_cancel_all(x);
		return false;
	}
	attempt_release(x, false);
	attempt_drop(x);
	hedge_bury(h);
	attempt_move(h, x);
	x->upops->handover(h, x, false);
	proxy_arm_timer(x);
	return true;
}
