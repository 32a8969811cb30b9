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

#define HANDOFF_BYTES	(64 * 1024)	/* a worker hands its buffer over */
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

static void
add_jstr(struct sbuf *o, const char *s, size_t len)
{
	if (s == NULL) {
		sbuf_add(o, "null", 4);
		return;
	}
	sbuf_add(o, "\"", 1);
	json_escape(o, s, len);
	sbuf_add(o, "\"", 1);
}

static void
add_cstr(struct sbuf *o, const char *s)
{
	add_jstr(o, s, s ? strlen(s) : 0);
}

/* "time":"2026-11-26T10:39:02.123Z" */
static void
add_time(struct accesslog_buf *b, int64_t ms)
{
	char frac[6];
	int64_t sec;

	if (ms < 0)
		ms = 0;
	sec = ms / 1000;
	if (sec != b->sec) {
		struct tm tm;
		time_t t = (time_t)sec;

		gmtime_r(&t, &tm);
		snprintf(b->stamp, sizeof(b->stamp),
		    "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		b->sec = sec;
	}
	ms %= 1000;
	frac[0] = '.';
	frac[1] = (char)('0' + ms / 100);
	frac[2] = (char)('0' + ms / 10 % 10);
	frac[3] = (char)('0' + ms % 10);
	frac[4] = 'Z';
	frac[5] = '"';
	sbuf_adds(&b->cur, "{\"time\":\"");
	sbuf_adds(&b->cur, b->stamp);
	sbuf_add(&b->cur, frac, sizeof(frac));
}

/* Milliseconds with three decimals: 12.345 */
static void
add_ms(struct sbuf *o, double ms)
{
	uint64_t us;
	char f[4];

	if (!(ms > 0))
		ms = 0;			/* negative or NaN */
	if (ms > 1e12)
		ms = 1e12;
	us = (uint64_t)(ms * 1000 + 0.5);
	sbuf_addu(o, us / 1000);
	f[0] = '.';
	f[1] = (char)('0' + us / 100 % 10);
	f[2] = (char)('0' + us / 10 % 10);
	f[3] = (char)('0' + us % 10);
	sbuf_add(o, f, sizeof(f));
}

void
accesslog_write(struct accesslog_buf *b, const struct access_entry *e)
{
	struct sbuf *o;
	size_t start, plen = e->path_len;
	const char *q;

	if (b == NULL)
		return;
	o = &b->cur;
	start = o->len;
	add_time(b, e->time_ms);
	sbuf_adds(o, e->dir == DIR_INBOUND ? ",\"direction\":\"inbound\"" :
	    ",\"direction\":\"outbound\"");
	sbuf_adds(o, ",\"service\":");
	add_cstr(o, e->service ? e->service : "");
	sbuf_adds(o, ",\"method\":");
	add_jstr(o, e->method ? e->method : "", e->method ? e->method_len : 0);
	sbuf_adds(o, ",\"path\":");
	if (e->path != NULL && (q = memchr(e->path, '?', plen)) != NULL)
		plen = (size_t)(q - e->path);
	add_jstr(o, e->path, plen);
	sbuf_adds(o, ",\"status\":");
	sbuf_addu(o, e->status > 0 ? (unsigned)e->status : 0);
	sbuf_adds(o, ",\"duration_ms\":");
	add_ms(o, e->duration_ms);
	sbuf_adds(o, ",\"upstream\":");
	add_cstr(o, e->upstream);
	sbuf_adds(o, ",\"attempts\":");
	sbuf_addu(o, e->attempts);
	sbuf_adds(o, ",\"resends\":");
	sbuf_addu(o, e->resends);
	sbuf_adds(o, ",\"correlation_id\":");
	add_jstr(o, e->correlation_id, e->correlation_len);
	sbuf_adds(o, ",\"request_id\":");
	add_jstr(o, e->request_id, e->request_len);
	sbuf_adds(o, ",\"trace_id\":");
	if (e->traceparent != NULL &&
	    ids_traceparent_valid(e->traceparent, e->traceparent_len)) {
		sbuf_add(o, "\"", 1);
		sbuf_add(o, e->traceparent + 3, 32);
		sbuf_add(o, "\"", 1);
	} else
		sbuf_add(o, "null", 4);
	sbuf_adds(o, ",\"bytes_in\":");
	sbuf_addu(o, e->bytes_in);
	sbuf_adds(o, ",\"bytes_out\":");
	sbuf_addu(o, e->bytes_out);
	sbuf_adds(o, ",\"error\":");
	add_cstr(o, e->error);
	sbuf_adds(o, ",\"peer\":");
	add_cstr(o, e->peer);
	sbuf_adds(o, ",\"grpc_status\":");
	if (e->grpc && e->grpc_status >= 0)
		sbuf_addu(o, (unsigned)e->grpc_status);
	else
		sbuf_adds(o, "null");
	/* SPEC §16's fields come after those of §9 and §12 */
	sbuf_adds(o, ",\"fate\":");
	add_cstr(o, e->fate);
	sbuf_adds(o, ",\"attempts_detail\":");
	if (e->attempts_detail)
		fate_notes_json(o, e->attempts_detail, NULL);
	else
		sbuf_adds(o, "[]");
	sbuf_add(o, "}\n", 2);
	if (o->oom) {
		/* never a partial line: drop this one */
		o->len = start;
		o->oom = false;
		atomic_fetch_add(&b->a->dropped, 1);
		warn_dropped(b->a, "out of memory");
		return;
	}
	b->lines++;
	if (o->len >= HANDOFF_BYTES)
		handoff(b, false);
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
