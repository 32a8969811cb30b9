/*
 * Diagnostics on stderr: "LEVEL message key=value ...", one line each.
 * Thread-safe (one write(2) per line). Repeated causes are rate-limited by
 * the caller with log_ratelimit().
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
bool log_enabled(enum log_level lvl);

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* A per-cause limiter: at most one line per interval; counts the rest. */
struct log_limit {
	_Atomic int64_t next_ms;
	_Atomic uint32_t suppressed;
};
/* true when a line may be written now; *suppressed gets the count skipped. */
bool log_ratelimit(struct log_limit *l, int64_t now_ms, int64_t interval_ms,
    uint32_t *suppressed);

/* A line at most every 10 s for one cause (a call site): a dead upstream
 * must not write a line per request. Adds "suppressed=N". */
void log_limited(struct log_limit *l, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int parse_log_level(const char *s, enum log_level *out);

#endif
