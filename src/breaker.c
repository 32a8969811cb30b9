/*
 * Circuit breaker. See breaker.h.
 *
 * The whole state is one 64-bit word so every transition is a single CAS:
 *	bits 62-63	stored state (closed, open, half-open)
 *	bits 40-61	count: consecutive failures when closed, probes
 *			handed out when half-open
 *	bits 0-39	time in ms (low 40 bits, ~34 years): when it opened,
 *			or when the current batch of probes started
 * Open turns half-open by time alone (no write is needed for that); the
 * word becomes HALF_OPEN when the first probe is handed out. Times are
 * compared by their 40-bit difference, sign-extended, so any clock origin
 * works and a thread whose clock read a moment earlier sees no time
 * passed rather than 34 years.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "breaker.h"
#include "cacheline.h"

#define W_STATE_SHIFT	62
#define W_COUNT_SHIFT	40
#define W_COUNT_MAX	((UINT64_C(1) << 22) - 1)
#define W_TIME_MASK	((UINT64_C(1) << 40) - 1)

#define W_STATE(w)	((enum breaker_state)((w) >> W_STATE_SHIFT))
#define W_COUNT(w)	((uint32_t)(((w) >> W_COUNT_SHIFT) & W_COUNT_MAX))
#define W_TIME(w)	((w) & W_TIME_MASK)

/* Every request reads the word and writes in_flight twice, from every
 * worker: apart, the word stays in each CPU's cache while closed. */
struct breaker {
	alignas(CACHE_LINE) _Atomic uint64_t word;
	_Atomic uint64_t opened_total;
	alignas(CACHE_LINE) _Atomic uint32_t in_flight;
};

static uint64_t
word(enum breaker_state s, uint64_t count, int64_t now_ms)
{
	if (count > W_COUNT_MAX)
		count = W_COUNT_MAX;
	return ((uint64_t)s << W_STATE_SHIFT) | (count << W_COUNT_SHIFT) |
	    ((uint64_t)now_ms & W_TIME_MASK);
}

/* ms from the word's time to NOW; 0 when NOW reads earlier. */
static int64_t
elapsed(uint64_t w, int64_t now_ms)
{
	uint64_t d = ((uint64_t)now_ms - W_TIME(w)) & W_TIME_MASK;
	int64_t e = (int64_t)(d << 24) >> 24;	/* sign-extend 40 bits */

	return e > 0 ? e : 0;
}

static bool
disabled(const struct conf_breaker *c)
{
	return c->consecutive_failures == 0;
}

static uint32_t
probes_allowed(const struct conf_breaker *c)
{
	/* the loader requires >= 1; 0 would keep it half-open for ever */
	if (c->half_open_requests == 0)
		return 1;
	return c->half_open_requests < W_COUNT_MAX ?
	    c->half_open_requests : (uint32_t)W_COUNT_MAX;
}

struct breaker *
breaker_new(void)
{
	struct breaker *b;

	if ((b = cacheline_calloc(sizeof(*b))) == NULL)
		return NULL;
	atomic_init(&b->word, word(BREAKER_CLOSED, 0, 0));
	atomic_init(&b->opened_total, 0);
	atomic_init(&b->in_flight, 0);
	return b;
}

void
breaker_free(struct breaker *b)
{
	free(b);
}

enum breaker_verdict
breaker_allow(struct breaker *b, const struct conf_breaker *c, int64_t now_ms,
    int64_t *retry_after_ms)
{
	uint64_t w, nw;
	int64_t e;

	if (disabled(c))
		return BREAKER_PASS;
	w = atomic_load(&b->word);
	for (;;) {
		switch (W_STATE(w)) {
		case BREAKER_OPEN:
			e = elapsed(w, now_ms);
			if (e < c->open_for) {
				*retry_after_ms = c->open_for - e;
				return BREAKER_REJECT;
			}
			/* open_for is over: this request is the first probe */
			nw = word(BREAKER_HALF_OPEN, 1, now_ms);
			break;
		case BREAKER_HALF_OPEN:
			if (W_COUNT(w) < probes_allowed(c)) {
				nw = w + (UINT64_C(1) << W_COUNT_SHIFT);
				break;
			}
			/* all probes out; after open_for unanswered, a new batch */
			if (elapsed(w, now_ms) >= c->open_for) {
				nw = word(BREAKER_HALF_OPEN, 1, now_ms);
				break;
			}
			*retry_after_ms = 1000;
			return BREAKER_REJECT;
		default:
			return BREAKER_PASS;
		}
		if (atomic_compare_exchange_weak(&b->word, &w, nw))
			return BREAKER_PROBE;
	}
}

/* CAS W to NW; on success an opening is counted. */
static bool
move(struct breaker *b, uint64_t *w, uint64_t nw)
{
	if (!atomic_compare_exchange_weak(&b->word, w, nw))
		return false;
	if (W_STATE(nw) == BREAKER_OPEN)
		atomic_fetch_add(&b->opened_total, 1);
	return true;
}

void
breaker_record(struct breaker *b, const struct conf_breaker *c,
    enum breaker_verdict v, bool failure, int64_t now_ms)
{
	uint64_t w, nw;

	if (disabled(c) || v == BREAKER_REJECT)
		return;
	w = atomic_load(&b->word);
	for (;;) {
		switch (W_STATE(w)) {
		case BREAKER_CLOSED:
			/* a probe recorded after another probe closed it counts
			 * like any request */
			if (!failure) {
				if (W_COUNT(w) == 0)	/* no write on the hot path */
					return;
				nw = word(BREAKER_CLOSED, 0, 0);
			} else if (W_COUNT(w) + 1 >= c->consecutive_failures)
				nw = word(BREAKER_OPEN, 0, now_ms);
			else	/* word() saturates the count */
				nw = word(BREAKER_CLOSED, W_COUNT(w) + 1, 0);
			break;
		case BREAKER_HALF_OPEN:
			/* only probes decide; late outcomes of requests let
			 * through before it opened say nothing about now */
			if (v != BREAKER_PROBE)
				return;
			nw = failure ? word(BREAKER_OPEN, 0, now_ms) :
			    word(BREAKER_CLOSED, 0, 0);
			break;
		default:
			/* open: a probe of an earlier half-open spell that
			 * another probe already settled, or a late outcome */
			return;
		}
		if (move(b, &w, nw))
			return;
	}
}

void
breaker_cancel(struct breaker *b, enum breaker_verdict v)
{
	uint64_t w;

	if (v != BREAKER_PROBE)
		return;
	w = atomic_load(&b->word);
	/* only while still half-open: after a re-open or a close the probe's
	 * place is gone anyway */
	while (W_STATE(w) == BREAKER_HALF_OPEN && W_COUNT(w) > 0 &&
	    !atomic_compare_exchange_weak(&b->word, &w,
	    w - (UINT64_C(1) << W_COUNT_SHIFT)))
		;
}

enum breaker_state
breaker_state(struct breaker *b, const struct conf_breaker *c, int64_t now_ms)
{
	uint64_t w;

	if (disabled(c))
		return BREAKER_CLOSED;
	w = atomic_load(&b->word);
	if (W_STATE(w) == BREAKER_OPEN && elapsed(w, now_ms) >= c->open_for)
		return BREAKER_HALF_OPEN;
	return W_STATE(w);
}

uint64_t
breaker_opened_total(struct breaker *b)
{
	return atomic_load(&b->opened_total);
}

uint32_t
breaker_failures(struct breaker *b)
{
	uint64_t w = atomic_load(&b->word);

	return W_STATE(w) == BREAKER_CLOSED ? W_COUNT(w) : 0;
}

bool
breaker_enter(struct breaker *b, const struct conf_breaker *c)
{
	uint32_t n = atomic_load(&b->in_flight);

	do {
		if (n >= c->max_concurrent)
			return false;
	} while (!atomic_compare_exchange_weak(&b->in_flight, &n, n + 1));
	return true;
}

void
breaker_leave(struct breaker *b)
{
	uint32_t n = atomic_load(&b->in_flight);

	/* never below zero, even on an unbalanced leave */
	while (n > 0 && !atomic_compare_exchange_weak(&b->in_flight, &n, n - 1))
		;
}

uint32_t
breaker_in_flight(struct breaker *b)
{
	return atomic_load(&b->in_flight);
}
