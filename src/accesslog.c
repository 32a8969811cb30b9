#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "accesslog.h"
#include "clock.h"
#include "errors.h"
#include "fate.h"
#include "ids.h"
#include "log.h"
#include "sbuf.h"

#define HANDOFF_BYTES	(64 * 1024)	/* a worker's buffer holds at most */
#define MAX_BEHIND	(8u << 20)	/* default bound of bytes queued */
#define WARN_EVERY_MS	10000

/* A buffer on its way to the writer, or a reopen marker. */
struct chunk {
	struct chunk *next;
	char *p;
	size_t len, cap;
	uint32_t lines;
	bool reopen;			/* marker: switch to FD */
	int fd;
};

struct accesslog_buf {
	alignas(64) struct accesslog *a;
	struct sbuf cur;		/* complete lines only */
	uint32_t lines;			/* in cur */
	int64_t sec;			/* second of stamp */
	char stamp[64];			/* "YYYY-MM-DDTHH:MM:SS" of sec */
	size_t stamp_len;
	struct event *timer;
};

struct accesslog {
	bool enabled;
	char *path;			/* NULL: stdout or off */
	int fd;				/* the writer's, once it runs */
	unsigned n_workers;
	struct accesslog_buf *bufs;
	pthread_t thread;
	bool started;

	pthread_mutex_t lock;		/* everything below */
	pthread_cond_t cond;
	struct chunk *head, **tailp;	/* queue, oldest first */
	struct chunk *free;		/* chunks whose buffers can be reused */
	unsigned n_free;
	size_t queued;			/* bytes in the queue */
	size_t max_queued;		/* over it, buffers are dropped */
	bool stop;

	_Atomic uint64_t dropped;
	struct log_limit warn;
};

static void
warn_dropped(struct accesslog *a, const char *why)
{
	uint32_t suppressed;

	if (log_ratelimit(&a->warn, clock_now_ms(), WARN_EVERY_MS, &suppressed))
		log_warn("access log: %s: lines dropped total=%llu", why,
		    (unsigned long long)atomic_load(&a->dropped));
}

/* Worker thread (or close): queues the buffer's lines for the writer.
 * Unless FORCE, drops them when the writer is too far behind. */
static void
handoff(struct accesslog_buf *b, bool force)
{
	struct accesslog *a = b->a;
	struct chunk *c;
	bool behind;
	size_t cap;
	char *p;

	if (b->cur.len == 0)
		return;
	pthread_mutex_lock(&a->lock);
	behind = !force && a->queued + b->cur.len > a->max_queued;
	if (behind)
		c = NULL;
	else if ((c = a->free) != NULL) {
		a->free = c->next;
		a->n_free--;
	} else
		c = calloc(1, sizeof(*c));
	if (c == NULL) {
		pthread_mutex_unlock(&a->lock);
		atomic_fetch_add(&a->dropped, b->lines);
		sbuf_clear(&b->cur);
		b->lines = 0;
		warn_dropped(a, behind ? "writer behind" : "out of memory");
		return;
	}
	/* swap: the chunk takes the lines, the worker its old buffer */
	p = c->p;
	cap = c->cap;
	c->p = b->cur.p;
	c->len = b->cur.len;
	c->cap = b->cur.cap;
	c->lines = b->lines;
	c->next = NULL;
	b->cur.p = p;
	b->cur.cap = p ? cap : 0;
	b->cur.len = 0;
	b->cur.oom = false;
	b->lines = 0;
	*a->tailp = c;
	a->tailp = &c->next;
	a->queued += c->len;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

/* Writer thread: the whole chunk, or counts its lines as dropped. */
static void
write_chunk(struct accesslog *a, struct chunk *c)
{
	uint32_t suppressed;
	size_t off = 0;
	ssize_t n;

	while (off < c->len) {
		n = write(a->fd, c->p + off, c->len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* a non-blocking stdout: this thread may wait */
			struct pollfd pfd = { .fd = a->fd, .events = POLLOUT };

			(void)poll(&pfd, 1, 1000);
			continue;
		}
		atomic_fetch_add(&a->dropped, c->lines);
		if (log_ratelimit(&a->warn, clock_now_ms(), WARN_EVERY_MS,
		    &suppressed))
			log_warn("access log write: %s",
			    n == 0 ? "no progress" : strerror(errno));
		return;
	}
}

static void *
writer_main(void *arg)
{
	struct accesslog *a = arg;
	struct chunk *list, *c, *next;
	size_t done;

	for (;;) {
		pthread_mutex_lock(&a->lock);
		while (a->head == NULL && !a->stop)
			pthread_cond_wait(&a->cond, &a->lock);
		if (a->head == NULL) {
			pthread_mutex_unlock(&a->lock);
			return NULL;
		}
		list = a->head;
		a->head = NULL;
		a->tailp = &a->head;
		pthread_mutex_unlock(&a->lock);

		done = 0;
		for (c = list; c != NULL; c = c->next) {
			if (c->reopen) {
				close(a->fd);
				a->fd = c->fd;
			} else
				write_chunk(a, c);
			done += c->len;
		}

		pthread_mutex_lock(&a->lock);
		a->queued -= done;
		for (c = list; c != NULL; c = next) {
			next = c->next;
			if (c->reopen || a->n_free > a->n_workers + 1) {
				free(c->p);
				free(c);
				continue;
			}
			c->len = 0;
			c->next = a->free;
			a->free = c;
			a->n_free++;
		}
		pthread_mutex_unlock(&a->lock);
	}
}

static int
open_path(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

struct accesslog *
accesslog_open(const char *target, unsigned n_workers, char *err,
    size_t errlen)
{
	struct accesslog *a;
	sigset_t all, old;
	int rc;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "access log: out of memory");
		return NULL;
	}
	a->fd = -1;
	if (strcmp(target, "off") == 0)
		return a;
	a->enabled = true;
	a->n_workers = n_workers;
	a->tailp = &a->head;
	a->max_queued = MAX_BEHIND;
	if (strcmp(target, "stdout") == 0)
		a->fd = STDOUT_FILENO;
	else if ((a->path = strdup(target)) == NULL ||
	    (a->fd = open_path(target)) == -1) {
		snprintf(err, errlen, "access log %s: %s", target,
		    strerror(errno));
		free(a->path);
		free(a);
		return NULL;
	}
	if (n_workers > 0 && (a->bufs = aligned_alloc(alignof(struct
	    accesslog_buf), n_workers * sizeof(*a->bufs))) == NULL) {
		snprintf(err, errlen, "access log: out of memory");
		goto fail;
	}
	if (n_workers > 0)
		memset(a->bufs, 0, n_workers * sizeof(*a->bufs));
	for (unsigned i = 0; i < n_workers; i++) {
		a->bufs[i].a = a;
		a->bufs[i].sec = -1;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	/* the writer takes no signal: they are the main loop's */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&a->thread, NULL, writer_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "access log: pthread_create: %s",
		    strerror(rc));
		pthread_cond_destroy(&a->cond);
		pthread_mutex_destroy(&a->lock);
		goto fail;
	}
	pthread_setname_np(a->thread, "ferry-log");
	a->started = true;
	return a;
fail:
	if (a->path)
		close(a->fd);
	free(a->bufs);
	free(a->path);
	free(a);
	return NULL;
}

bool
accesslog_enabled(const struct accesslog *a)
{
	return a != NULL && a->enabled;
}

struct accesslog_buf *
accesslog_worker(struct accesslog *a, unsigned worker)
{
	if (!accesslog_enabled(a) || worker >= a->n_workers)
		return NULL;
	return &a->bufs[worker];
}

/* A JSON string or null: at most JSTR_MAX(len) bytes. */
#define JSTR_MAX(len)	(JSON_ESCAPE_MAX(len) + 4)

static char *
put_jstr(char *p, const char *s, size_t len)
{
	if (s == NULL)
		return PUT_LIT(p, "null");
	*p++ = '"';
	p = json_escape_put(p, s, len);
	*p++ = '"';
	return p;
}

/* "{"time":"2026-11-26T10:39:02.123Z"" */
static char *
put_time(struct accesslog_buf *b, char *p, int64_t ms)
{
	int64_t sec;

	if (ms < 0)
		ms = 0;
	sec = ms / 1000;
	if (sec != b->sec) {
		struct tm tm;
		time_t t = (time_t)sec;
		int n;

		if (gmtime_r(&t, &tm) == NULL)
			memset(&tm, 0, sizeof(tm));
		n = snprintf(b->stamp, sizeof(b->stamp),
		    "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		b->stamp_len = n > 0 && (size_t)n < sizeof(b->stamp) ? (size_t)n : 0;
		b->sec = sec;
	}
	ms %= 1000;
	p = PUT_LIT(p, "{\"time\":\"");
	p = put_mem(p, b->stamp, b->stamp_len);
	*p++ = '.';
	*p++ = (char)('0' + ms / 100);
	*p++ = (char)('0' + ms / 10 % 10);
	*p++ = (char)('0' + ms % 10);
	*p++ = 'Z';
	*p++ = '"';
	return p;
}

/* Milliseconds with three decimals: 12.345 */
static char *
put_ms(char *p, double ms)
{
	uint64_t us;

	if (!(ms > 0))
		ms = 0;			/* negative or NaN */
	if (ms > 1e12)
		ms = 1e12;
	us = (uint64_t)(ms * 1000 + 0.5);
	p = put_u64(p, us / 1000);
	*p++ = '.';
	*p++ = (char)('0' + us / 100 % 10);
	*p++ = (char)('0' + us / 10 % 10);
	*p++ = (char)('0' + us % 10);
	return p;
}

/* The text of a line but its strings and attempts: the keys (~330
 * bytes), the stamp (sizeof stamp), nine numbers and the trace id. */
#define LINE_FIXED_MAX	640

void
accesslog_write(struct accesslog_buf *b, const struct access_entry *e)
{
	const char *service = e->service ? e->service : "";
	const char *method = e->method ? e->method : "";
	size_t mlen = e->method ? e->method_len : 0;
	size_t plen = e->path_len, slen = strlen(service);
	size_t ulen = e->upstream ? strlen(e->upstream) : 0;
	size_t elen = e->error ? strlen(e->error) : 0;
	size_t peerlen = e->peer ? strlen(e->peer) : 0;
	size_t flen = e->fate ? strlen(e->fate) : 0;
	size_t bound;
	struct sbuf *o;
	const char *q;
	char *p, *start;

	if (b == NULL)
		return;
	o = &b->cur;
	if (e->path != NULL && (q = memchr(e->path, '?', plen)) != NULL)
		plen = (size_t)(q - e->path);
	bound = LINE_FIXED_MAX + JSTR_MAX(slen) + JSTR_MAX(mlen) +
	    JSTR_MAX(plen) + JSTR_MAX(ulen) + JSTR_MAX(e->correlation_len) +
	    JSTR_MAX(e->request_len) + JSTR_MAX(elen) + JSTR_MAX(peerlen) +
	    JSTR_MAX(flen) + (e->attempts_detail ?
	    fate_notes_json_max(e->attempts_detail, NULL) : 2);
	/* hand over before the buffer would grow past what it holds */
	if (o->len > 0 && o->len + bound > HANDOFF_BYTES)
		handoff(b, false);
	if ((start = p = sbuf_room(o, bound)) == NULL) {
		o->oom = false;
		atomic_fetch_add(&b->a->dropped, 1);
		warn_dropped(b->a, "out of memory");
		return;
	}
	p = put_time(b, p, e->time_ms);
	p = e->dir == DIR_INBOUND ? PUT_LIT(p, ",\"direction\":\"inbound\"") :
	    PUT_LIT(p, ",\"direction\":\"outbound\"");
	p = PUT_LIT(p, ",\"service\":");
	p = put_jstr(p, service, slen);
	p = PUT_LIT(p, ",\"method\":");
	p = put_jstr(p, method, mlen);
	p = PUT_LIT(p, ",\"path\":");
	p = put_jstr(p, e->path, plen);
	p = PUT_LIT(p, ",\"status\":");
	p = put_u64(p, e->status > 0 ? (unsigned)e->status : 0);
	p = PUT_LIT(p, ",\"duration_ms\":");
	p = put_ms(p, e->duration_ms);
	p = PUT_LIT(p, ",\"upstream\":");
	p = put_jstr(p, e->upstream, ulen);
	p = PUT_LIT(p, ",\"attempts\":");
	p = put_u64(p, e->attempts);
	p = PUT_LIT(p, ",\"resends\":");
	p = put_u64(p, e->resends);
	p = PUT_LIT(p, ",\"correlation_id\":");
	p = put_jstr(p, e->correlation_id, e->correlation_len);
	p = PUT_LIT(p, ",\"request_id\":");
	p = put_jstr(p, e->request_id, e->request_len);
	p = PUT_LIT(p, ",\"trace_id\":");
	if (e->traceparent != NULL &&
	    ids_traceparent_valid(e->traceparent, e->traceparent_len)) {
		*p++ = '"';
		p = put_mem(p, e->traceparent + 3, 32);
		*p++ = '"';
	} else
		p = PUT_LIT(p, "null");
	p = PUT_LIT(p, ",\"bytes_in\":");
	p = put_u64(p, e->bytes_in);
	p = PUT_LIT(p, ",\"bytes_out\":");
	p = put_u64(p, e->bytes_out);
	p = PUT_LIT(p, ",\"error\":");
	p = put_jstr(p, e->error, elen);
	p = PUT_LIT(p, ",\"peer\":");
	p = put_jstr(p, e->peer, peerlen);
	p = PUT_LIT(p, ",\"grpc_status\":");
	if (e->grpc && e->grpc_status >= 0)
		p = put_u64(p, (unsigned)e->grpc_status);
	else
		p = PUT_LIT(p, "null");
	/* SPEC §16's fields come after those of §9 and §12 */
	p = PUT_LIT(p, ",\"fate\":");
	p = put_jstr(p, e->fate, flen);
	p = PUT_LIT(p, ",\"attempts_detail\":");
	if (e->attempts_detail)
		p = fate_notes_json_put(p, e->attempts_detail, NULL);
	else
		p = PUT_LIT(p, "[]");
	p = PUT_LIT(p, "}\n");
	assert((size_t)(p - start) <= bound);
	sbuf_commit(o, p);
	b->lines++;
}

void
accesslog_flush(struct accesslog_buf *b)
{
	if (b != NULL)
		handoff(b, false);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	accesslog_flush(arg);
}

int
accesslog_attach(struct accesslog_buf *b, struct event_base *base)
{
	struct timeval tv = { 1, 0 };

	if (b == NULL)
		return 0;
	if (b->timer == NULL &&
	    (b->timer = event_new(base, -1, EV_PERSIST, on_timer, b)) == NULL)
		return -1;
	return event_add(b->timer, &tv);
}

void
accesslog_detach(struct accesslog_buf *b)
{
	if (b == NULL)
		return;
	if (b->timer != NULL) {
		event_free(b->timer);
		b->timer = NULL;
	}
	accesslog_flush(b);
}

int
accesslog_reopen(struct accesslog *a)
{
	struct chunk *c;
	int fd;

	if (!accesslog_enabled(a) || a->path == NULL)
		return 0;
	if ((fd = open_path(a->path)) == -1) {
		log_error("access log reopen %s: %s", a->path, strerror(errno));
		return -1;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_error("access log reopen %s: out of memory", a->path);
		close(fd);
		return -1;
	}
	c->reopen = true;
	c->fd = fd;
	pthread_mutex_lock(&a->lock);
	*a->tailp = c;
	a->tailp = &c->next;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

void
accesslog_set_limit(struct accesslog *a, size_t bytes)
{
	if (!accesslog_enabled(a))
		return;
	pthread_mutex_lock(&a->lock);
	a->max_queued = bytes;
	pthread_mutex_unlock(&a->lock);
}

uint64_t
accesslog_dropped(const struct accesslog *a)
{
	return a ? atomic_load(&((struct accesslog *)a)->dropped) : 0;
}

void
accesslog_close(struct accesslog *a)
{
	struct chunk *c;

	if (a == NULL)
		return;
	if (a->started) {
		for (unsigned i = 0; i < a->n_workers; i++)
			handoff(&a->bufs[i], true);
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_signal(&a->cond);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
		while ((c = a->free) != NULL) {
			a->free = c->next;
			free(c->p);
			free(c);
		}
		pthread_cond_destroy(&a->cond);
		pthread_mutex_destroy(&a->lock);
	}
	for (unsigned i = 0; i < a->n_workers && a->bufs; i++)
		sbuf_free(&a->bufs[i].cur);
	if (a->path != NULL && a->fd != -1)
		close(a->fd);
	free(a->bufs);
	free(a->path);
	free(a);
}
