/*
 * The OTLP/HTTP exporter of one worker (SPEC §13). Each worker has its
 * own: spans are queued where their requests ended and sent from the
 * same event loop, so the request path takes no lock and wakes no other
 * thread; a collector that is down or slow costs dropped spans, never a
 * blocked loop (non-blocking connect, write and read through conn.c).
 *
 * The queue holds spans already encoded (ScopeSpans.spans fields); it is
 * bounded by tracing.max_queue shared out over the workers, and a span
 * that does not fit is dropped and counted. A batch (up to
 * batch.max_spans) leaves when the queue holds that many, or
 * batch.interval after its first span; one request is in flight at a
 * time, on a keep-alive connection.
 */
#ifndef FERRY_EXPORTER_H
#define FERRY_EXPORTER_H

#include <stdbool.h>

struct worker;
struct otlp_span;
struct exporter;

/* Worker thread (or before it starts). NULL when out of memory. */
struct exporter *exporter_new(struct worker *w);
/* Spans still queued are counted as dropped (shutdown). */
void exporter_free(struct exporter *e);

/* Queues a finished span, or drops it (queue_full). */
void exporter_push(struct exporter *e, const struct otlp_span *s);
/* From now on, send every queued span without waiting for the batch
 * interval (shutdown: the queue is flushed within drain_timeout). */
void exporter_flush(struct exporter *e);
/* Nothing queued, nothing in flight. Any thread. */
bool exporter_idle(const struct exporter *e);

#endif
