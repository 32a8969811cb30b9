/*
 * Retry decisions and the retry budget. See retry.h.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cacheline.h"
#include "retry.h"

const char retry_why_ok[] = "attempt succeeded";
const char retry_why_not_on[] = "result not in retries.on";
const char retry_why_max[] = "retries exhausted";
const char retry_why_not_idempotent[] = "request not idempotent";
const char retry_why_streamed[] = "streamed body already sent";
const char retry_why_deadline[] = "request deadline";

bool
attempt_is_failure(enum attempt_result r)
{
	return r != AR_OK;
}

uint32_t
attempt_retry_on(enum attempt_result r)
{
	switch (r) {
	case AR_CONNECT_FAILURE:
		return RETRY_ON_CONNECT_FAILURE;
	case AR_REFUSED:
		return RETRY_ON_REFUSED;
	case AR_RESET:
		return RETRY_ON_RESET;
	case AR_PER_TRY_TIMEOUT:
		return RETRY_ON_PER_TRY_TIMEOUT;
	case AR_STATUS_502:
		return RETRY_ON_502;
	case AR_STATUS_503:
		return RETRY_ON_503;
	case AR_STATUS_504:
		return RETRY_ON_504;
	case AR_OK:
		break;
	}
	return 0;
}

/* The high 64 bits of a * b: maps a uniform 64-bit A onto [0, b) without
 * the bias of a modulo, and a == UINT64_MAX onto b - 1. */
static uint64_t
mulhi64(uint64_t a, uint64_t b)
{
	uint64_t a_lo = a & 0xffffffffu, a_hi = a >> 32;
	uint64_t b_lo = b & 0xffffffffu, b_hi = b >> 32;
	uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo;
	uint64_t lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
	uint64_t mid = (lo_lo >> 32) + (hi_lo & 0xffffffffu) + lo_hi;

	return hi_hi + (hi_lo >> 32) + (mid >> 32);
}

/* min(max, base * 2^n), without overflow. */
static int64_t
backoff_cap(const struct conf_retries *c, uint32_t n)
{
	int64_t cap = c->backoff_base;

	if (cap <= 0 || c->backoff_max <= 0)
		return 0;
	for (uint32_t i = 0; i < n && cap < c->backoff_max; i++)
		cap *= 2;	/* cap < max <= INT64_MAX / 2 in practice */
	return cap < c->backoff_max ? cap : c->backoff_max;
}

static struct retry_decision
no_retry(const char *why)
{
	struct retry_decision d = { false, 0, why };

	return d;
}

struct retry_decision
retry_decide(const struct conf_retries *c, const struct retry_input *in,
    uint64_t rand)
{
	struct retry_decision d;
	uint32_t bit = attempt_retry_on(in->result);
	bool nothing_sent_result;
	int64_t cap;

	if (bit == 0)
		return no_retry(retry_why_ok);
	if ((c->on & bit) == 0)
		return no_retry(retry_why_not_on);
	if (in->retries_done >= c->max)
		return no_retry(retry_why_max);
	/*
	 * A non-idempotent request may have had effects upstream unless the
	 * connection never came up; a caller claiming bytes went out on a
	 * failed connect is believed, the safe way.
	 */
	nothing_sent_result = in->result == AR_CONNECT_FAILURE ||
	    in->result == AR_REFUSED;
	if (!in->idempotent && (!nothing_sent_result || in->request_bytes_sent))
		return no_retry(retry_why_not_idempotent);
	/* a streamed body is gone once its first byte left */
	if (!in->replayable && in->request_bytes_sent)
		return no_retry(retry_why_streamed);

	cap = backoff_cap(c, in->retries_done);
	d.retry = true;
	d.delay_ms = (int64_t)mulhi64(rand, (uint64_t)cap + 1);
	d.why_not = NULL;
	/* the retry must have some time left to run after the backoff */
	if (in->deadline_ms != INT64_MAX && (in->now_ms >= in->deadline_ms ||
	    d.delay_ms >= in->deadline_ms - in->now_ms))
		return no_retry(retry_why_deadline);
	return d;
}

/*
 * The budget: a ring of one-second slots, each an atomic word packing the
 * second it counts (low 32 bits of the second number) and the count, so a
 * slot is recycled for a new second and counted in one CAS, with no lock
 * and no torn reset. A slot belongs to the window when its second is
 * within 10 of now; seconds a little ahead (another thread's clock read a
 * moment later) are counted too.
 *
 * Every request adds to the requests ring, from every worker: each worker
 * has a ring of its own, on lines of its own (cacheline.h), and the rare
 * retry adds the rings up. Retries share one ring, whose CAS keeps the
 * limit exact.
 */
#define BUDGET_SLOTS 10

struct request_ring {
	alignas(CACHE_LINE) _Atomic uint64_t slot[BUDGET_SLOTS];
};

struct retry_budget {
	alignas(CACHE_LINE) _Atomic uint64_t retries[BUDGET_SLOTS];
	unsigned n_rings;
	struct request_ring requests[];
};

#define SLOT_SEC(v)	((uint32_t)((v) >> 32))
#define SLOT_COUNT(v)	((uint32_t)(v))
#define SLOT(sec, n)	(((uint64_t)(sec) << 32) | (uint32_t)(n))

struct retry_budget *
retry_budget_new(unsigned n_workers)
{
	struct retry_budget *b;

	if (n_workers == 0)
		n_workers = 1;
	if ((b = cacheline_calloc(sizeof(*b) + n_workers * sizeof(b->requests[0]))) == NULL)
		return NULL;
	b->n_rings = n_workers;
	for (int i = 0; i < BUDGET_SLOTS; i++) {
		atomic_init(&b->retries[i], 0);
		for (unsigned r = 0; r < n_workers; r++)
			atomic_init(&b->requests[r].slot[i], 0);
	}
	return b;
}

void
retry_budget_free(struct retry_budget *b)
{
	free(b);
}

/* Floor division, so negative (test) clocks get distinct seconds too. */
static int64_t
second_of(int64_t now_ms)
{
	int64_t s = now_ms / 1000;

	return now_ms % 1000 < 0 ? s - 1 : s;
}

static size_t
slot_index(int64_t sec)
{
	return (size_t)(((sec % BUDGET_SLOTS) + BUDGET_SLOTS) % BUDGET_SLOTS);
}

/* Seconds from SEC back to the slot's second; negative when it is ahead. */
static int32_t
slot_age(uint64_t v, uint32_t sec)
{
	return (int32_t)(sec - SLOT_SEC(v));
}

static bool
in_window(uint64_t v, uint32_t sec)
{
	int32_t age = slot_age(v, sec);

	return age > -BUDGET_SLOTS && age < BUDGET_SLOTS;
}

/* The slot's count as seen from second SEC: 0 when it holds an old second. */
static uint32_t
count_at(uint64_t v, uint32_t sec)
{
	return slot_age(v, sec) <= 0 ? SLOT_COUNT(v) : 0;
}

/* Sum of the ring for second SEC, leaving out slot SKIP (-1: none). */
static uint64_t
ring_sum(_Atomic uint64_t *ring, uint32_t sec, long skip)
{
	uint64_t sum = 0, v;

	for (long i = 0; i < BUDGET_SLOTS; i++) {
		if (i == skip)
			continue;
		v = atomic_load(&ring[i]);
		if (in_window(v, sec))
			sum += SLOT_COUNT(v);
	}
	return sum;
}

/* The value of slot V after one more event in second SEC. */
static uint64_t
slot_next(uint64_t v, uint32_t sec)
{
	uint32_t n = count_at(v, sec);

	if (n == UINT32_MAX)	/* saturate rather than wrap to 0 */
		return v;
	/* an old second is replaced; the same (or a later) one is added to */
	return slot_age(v, sec) <= 0 ? v + 1 : SLOT(sec, 1);
}

/* Original requests in the window, all workers. */
static uint64_t
requests_sum(struct retry_budget *b, uint32_t sec)
{
	uint64_t sum = 0;

	for (unsigned r = 0; r < b->n_rings; r++)
		sum += ring_sum(b->requests[r].slot, sec, -1);
	return sum;
}

void
retry_budget_request(struct retry_budget *b, unsigned worker, int64_t now_ms)
{
	int64_t s = second_of(now_ms);
	unsigned r = worker < b->n_rings ? worker : worker % b->n_rings;	/* no divide */
	_Atomic uint64_t *slot = &b->requests[r].slot[slot_index(s)];
	uint64_t v = atomic_load(slot);

	while (!atomic_compare_exchange_weak(slot, &v, slot_next(v, (uint32_t)s)))
		;
}

bool
retry_budget_take(struct retry_budget *b, const struct conf_retries *c,
    int64_t now_ms)
{
	int64_t s = second_of(now_ms);
	uint32_t sec = (uint32_t)s;
	size_t idx = slot_index(s);
	_Atomic uint64_t *slot = &b->retries[idx];
	uint64_t v, others, own;
	double limit;

	limit = c->budget_ratio * (double)requests_sum(b, sec) +
	    (double)c->budget_min_per_second * BUDGET_SLOTS;
	v = atomic_load(slot);
	do {
		own = count_at(v, sec);
		others = ring_sum(b->retries, sec, (long)idx);
		if ((double)(others + own + 1) > limit)
			return false;
	} while (!atomic_compare_exchange_weak(slot, &v, slot_next(v, sec)));

	/*
	 * Threads whose clocks read different seconds count in different
	 * slots, which the CAS above does not serialise. Look again: of two
	 * such takes at least one sees the other (both are seq_cst) and backs
	 * out, so the limit is never passed, at worst a retry is refused.
	 */
	others = ring_sum(b->retries, sec, (long)idx);
	if ((double)(others + own + 1) <= limit)
		return true;
	v = atomic_load(slot);
	while (slot_age(v, sec) <= 0 && SLOT_COUNT(v) > 0 &&
	    !atomic_compare_exchange_weak(slot, &v, v - 1))
		;
	return false;
}

void
retry_budget_counts(struct retry_budget *b, int64_t now_ms,
    uint64_t *requests, uint64_t *retries)
{
	uint32_t sec = (uint32_t)second_of(now_ms);

	*requests = requests_sum(b, sec);
	*retries = ring_sum(b->retries, sec, -1);
}
