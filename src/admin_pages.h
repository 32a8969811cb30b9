/*
 * What the admin endpoint shows (SPEC §8): /services, /metrics and
 * /history, read on
 * the main thread from the process-wide runtime state and counters.
 */
#ifndef FERRY_ADMIN_PAGES_H
#define FERRY_ADMIN_PAGES_H

#include <stdint.h>

#include "config.h"
#include "discovery.h"
#include "history.h"
#include "metrics.h"
#include "runtime.h"
#include "sbuf.h"
#include "worker.h"

struct admin_view {
	const struct config *conf;
	struct runtime *rt;
	struct discovery *disc;
	struct metrics *metrics;
	struct worker *workers;
	uint32_t n_workers;
	uint32_t admin_conns;
};

void admin_page_services(const struct admin_view *v, struct sbuf *out);
void admin_page_metrics(const struct admin_view *v, struct sbuf *out);
/* /history: the charts' buckets ending at NOW_MS (wall clock). */
void admin_page_history(struct history *h, int64_t now_ms, struct sbuf *out);

#endif
