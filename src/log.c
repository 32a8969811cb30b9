#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static _Atomic int current_level = LOG_INFO;

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };

void
log_set_level(enum log_level lvl)
{
	atomic_store(&current_level, (int)lvl);
}

enum log_level
log_get_level(void)
{
	return (enum log_level)atomic_load(&current_level);
}

bool
log_enabled(enum log_level lvl)
{
	return (int)lvl <= atomic_load(&current_level);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	if (!log_enabled(lvl))
		return;
	n = snprintf(line, sizeof(line), "%s ", level_names[lvl]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* one write per line, so lines of different threads never interleave */
	(void)!write(STDERR_FILENO, line, (size_t)n);
}

bool
log_ratelimit(struct log_limit *l, int64_t now_ms, int64_t interval_ms,
    uint32_t *suppressed)
{
	int64_t next = atomic_load(&l->next_ms);

	if (now_ms < next ||
	    !atomic_compare_exchange_strong(&l->next_ms, &next, now_ms + interval_ms)) {
		atomic_fetch_add(&l->suppressed, 1);
		return false;
	}
	*suppressed = atomic_exchange(&l->suppressed, 0);
	return true;
}

void
log_limited(struct log_limit *l, enum log_level lvl, const char *fmt, ...)
{
	struct timespec ts;
	char line[1800];
	uint32_t skipped;
	va_list ap;

	if (!log_enabled(lvl))
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (!log_ratelimit(l, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, 10000, &skipped))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(lvl, "%s suppressed=%u", line, skipped);
}

int
parse_log_level(const char *s, enum log_level *out)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}
