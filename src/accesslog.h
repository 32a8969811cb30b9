/*
 * Access log (SPEC §9): one JSON object per line per request.
 *
 * No system call per request: each worker formats lines into its own
 * buffer (no lock) and hands the buffer to a writer thread when it passes
 * 64 KiB or when accesslog_flush() runs (the worker's 1 s timer), so
 * lines reach the target within a second. Only the writer thread calls
 * write(2); a slow disk never blocks an event loop. When the writer falls
 * more than 8 MiB behind, whole buffers are dropped, counted, and a
 * warning is logged (at most one every 10 s).
 *
 * Target "off" costs nothing: accesslog_enabled() is false and callers
 * skip building the entry.
 */
#ifndef FERRY_ACCESSLOG_H
#define FERRY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

struct event_base;

/* Strings with a _len are not NUL-terminated; the others are C strings.
 * NULL writes null (service and method: ""). */
struct access_entry {
	int64_t time_ms;		/* realtime, ms since the epoch */
	enum metric_dir dir;
	const char *service;
	const char *method;
	size_t method_len;
	const char *path;		/* the target: cut at '?' here */
	size_t path_len;
	int status;
	double duration_ms;
	const char *upstream;		/* address of the last attempt */
	uint32_t attempts;
	uint32_t resends;		/* re-sends after a stale pooled connection */
	const char *correlation_id;
	size_t correlation_len;
	const char *request_id;
	size_t request_len;
	const char *traceparent;	/* the header; trace_id is taken from it */
	size_t traceparent_len;
	uint64_t bytes_in, bytes_out;
	const char *error;		/* §7 code, why a stream was cut, or NULL */
	const char *peer;		/* inbound peer identity or NULL */
	bool grpc;			/* a gRPC call: grpc_status is shown */
	int grpc_status;		/* its status; -1 none seen (null) */
	const char *fate;		/* SPEC §16; NULL writes null */
	const struct attempt_notes *attempts_detail;	/* NULL: [] */
};

struct accesslog;
struct accesslog_buf;

/* TARGET: "stdout", "off" or a path (O_APPEND|O_CREAT, mode 0640). NULL
 * with a message in ERR when the file cannot be opened or the writer
 * thread cannot start. */
struct accesslog *accesslog_open(const char *target, unsigned n_workers,
    char *err, size_t errlen);
/* false for "off" (and for NULL) */
bool accesslog_enabled(const struct accesslog *a);

/* Worker WORKER's buffer, NULL when disabled or out of range. Each buffer
 * is used by one thread at a time. */
struct accesslog_buf *accesslog_worker(struct accesslog *a, unsigned worker);
/* Worker thread: formats one line into the buffer. B may be NULL. */
void accesslog_write(struct accesslog_buf *b, const struct access_entry *e);
/* Worker thread: hands what the buffer holds to the writer. */
void accesslog_flush(struct accesslog_buf *b);

/* Optional: a persistent 1 s timer on the worker's loop that calls
 * accesslog_flush(B). Call accesslog_detach() on the worker's thread (or
 * once the loop has stopped) before BASE is freed. */
int accesslog_attach(struct accesslog_buf *b, struct event_base *base);
void accesslog_detach(struct accesslog_buf *b);

/* Main thread (SIGUSR1): opens the path again; lines handed to the writer
 * before this call go to the old file, later ones to the new. On error the
 * old file stays, the error is logged and -1 returned. No-op for stdout
 * and off. */
int accesslog_reopen(struct accesslog *a);

/* How far (bytes) the writer may fall behind before lines are dropped;
 * 8 MiB unless set. */
void accesslog_set_limit(struct accesslog *a, size_t bytes);

/* Lines dropped so far (writer behind, write errors, out of memory). */
uint64_t accesslog_dropped(const struct accesslog *a);

/* After the workers stopped: hands over every buffer, waits until the
 * writer wrote everything, joins it, closes the file and frees A. */
void accesslog_close(struct accesslog *a);

#endif
