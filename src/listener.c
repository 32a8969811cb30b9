#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"

#define ACCEPT_BATCH 64
#define EMFILE_PAUSE_MS 100
#define HANDOFF_SETTLE_MS 5

static struct log_limit emfile_limit;

/*
 * Connections go to the worker that holds fewest. SO_REUSEPORT picks a
 * worker by hashing a connection's addresses, and a sidecar's app often
 * keeps only a few connections: all of them may hash to one worker while
 * the others idle (with 64, one worker served 62% of a benchmark's load).
 * A worker that accepts while a sibling holds fewer hands the connection
 * over before reading a byte of it, as HAProxy's accept does; keep-alive
 * connections pay for that once.
 */
struct handoff {
	/* accepted it; n_away keeps it (and its worker, kind and address,
	 * set at its start) until the hand-off settles */
	struct listener *origin;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int fd;				/* owned */
};

static uint32_t
worker_load(struct worker *w)
{
	return atomic_load_explicit(&w->n_clients, memory_order_relaxed) +
	    atomic_load_explicit(&w->n_incoming, memory_order_relaxed);
}

/* What L holds against max_connections: the connections it serves and
 * those it handed over that no sibling has settled yet, so that what comes
 * back home still fits under the cap. */
static uint32_t
listener_held(struct listener *l)
{
	return l->n_clients + atomic_load_explicit(&l->n_away, memory_order_acquire);
}

bool
listener_in_use(struct listener *l)
{
	return listener_held(l) > 0;
}

static bool
listener_full(struct listener *l)
{
	return listener_held(l) >= l->conf->max_connections;
}

static bool
same_local(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

/* W's open listener for the address of ORIGIN, a sibling's, if it has one. */
static struct listener *
listener_twin(struct worker *w, const struct listener *origin)
{
	struct listener *l;

	for (l = w->listeners; l; l = l->next)
		if (l->kind == origin->kind && l->fd >= 0 && same_local(&l->local, &origin->local))
			return l;
	return NULL;
}

/* The origin's hold on H ends. The origin's worker may free a closed
 * listener once it reads n_away 0: nothing touches it after this. */
static void
handoff_settle(struct handoff *h)
{
	atomic_fetch_sub_explicit(&h->origin->n_away, 1, memory_order_release);
}

/* Only when a worker ends with the mail undelivered: its siblings have
 * stopped too and the origin listener may be freed already, so the hold is
 * left as it is. */
static void
handoff_drop(void *arg)
{
	struct handoff *h = arg;

	close(h->fd);
	free(h);
}

static void
handoff_serve(struct listener *l, struct handoff *h)
{
	l->accept(l, h->fd, (const struct sockaddr *)&h->peer, h->peer_len);
	handoff_settle(h);
	free(h);
}

/* Back on the worker that accepted it: the sibling had no listener for it
 * (a reload got there first) or its listener was full. The listener that
 * accepted it serves it (a closed one as its connections are), under the
 * cap its hold kept a place in. */
static void
handoff_home(struct worker *w, void *arg)
{
	struct handoff *h = arg;

	handoff_serve(h->origin, h);
	atomic_fetch_sub_explicit(&w->n_incoming, 1, memory_order_relaxed);
}

/* The connection counts in some worker's n_clients or n_incoming all the
 * way (the drain waits for those): the count here goes last. */
static void
handoff_take(struct worker *w, void *arg)
{
	struct handoff *h = arg;
	struct listener *l = listener_twin(w, h->origin);
	struct worker *from = h->origin->w;

	if (l != NULL && !listener_full(l)) {
		handoff_serve(l, h);
	} else {
		atomic_fetch_add_explicit(&from->n_incoming, 1, memory_order_relaxed);
		if (!worker_post_owning(from, handoff_home, handoff_drop, h)) {
			atomic_fetch_sub_explicit(&from->n_incoming, 1, memory_order_relaxed);
			close(h->fd);
			handoff_settle(h);
			free(h);
		}
	}
	atomic_fetch_sub_explicit(&w->n_incoming, 1, memory_order_relaxed);
}

/* True when a sibling of L's worker holding fewer connections took FD. */
static bool
hand_off(struct listener *l, int fd, const struct sockaddr_storage *peer, socklen_t len)
{
	struct worker *w = l->w, *to = NULL;
	uint32_t mine = worker_load(w), least = mine;
	struct handoff *h;

	for (uint32_t i = 0; i < w->n_siblings; i++) {
		struct worker *s = &w->siblings[i];
		uint32_t n = s == w ? UINT32_MAX : worker_load(s);

		if (n < least) {
			least = n;
			to = s;
		}
	}
	/* A few connections are spread exactly: one more than the sibling's
	 * is handed over and becomes one fewer. Many may differ by an eighth,
	 * so that short-lived connections, whose counts move all the time,
	 * are not handed back and forth at the cost of a wake-up each. */
	if (to == NULL || mine - least <= least / 8 || (h = malloc(sizeof(*h))) == NULL)
		return false;
	h->origin = l;
	memcpy(&h->peer, peer, len);
	h->peer_len = len;
	h->fd = fd;
	atomic_fetch_add_explicit(&l->n_away, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&to->n_incoming, 1, memory_order_relaxed);
	if (!worker_post_owning(to, handoff_take, handoff_drop, h)) {
		atomic_fetch_sub_explicit(&to->n_incoming, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&l->n_away, 1, memory_order_relaxed);
		free(h);
		return false;
	}
	return true;
}

int
listener_socket(const struct conf_addr *a, bool reuseport, char *err, size_t errlen)
{
	int fd, one = 1;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket for %s: %s", a->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0) {
		snprintf(err, errlen, "bind %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, 1024) != 0) {
		snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int
listener_probe(const struct conf_addr *a, char *err, size_t errlen)
{
	int fd = listener_socket(a, false, err, errlen);

	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static void
listener_pause(struct listener *l)
{
	if (!l->paused) {
		event_del(l->ev);
		l->paused = true;
	}
}

static void listener_resume(evutil_socket_t fd, short what, void *arg);

/* Paused at the cap. A sibling settling a hand-off ends no connection of
 * this listener's that would resume it, so while any are away it looks
 * again shortly. */
static void
listener_pause_full(struct listener *l)
{
	struct timeval tv = { 0, HANDOFF_SETTLE_MS * 1000 };

	listener_pause(l);
	if (atomic_load_explicit(&l->n_away, memory_order_relaxed) > 0)
		evtimer_add(l->ev_resume, &tv);
}

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	if (!l->paused || l->fd < 0)
		return;
	/* also called when a connection ends: that frees a descriptor too */
	if (listener_full(l)) {
		listener_pause_full(l);
		return;
	}
	evtimer_del(l->ev_resume);
	event_add(l->ev, NULL);
	l->paused = false;
}

static void
listener_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)what;
	if (l->w != NULL && l->w->ended) {
		/* the turns that close its connections poll this too: a
		 * connection taken now would outlive them (or be handed to a
		 * sibling already freed), so the queue is left to the kernel */
		listener_pause(l);
		return;
	}
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd, one = 1;

		if (listener_full(l)) {
			listener_pause_full(l);
			return;
		}
		cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			/* the connection stays queued and the socket readable:
			 * accepting again at once would spin until a descriptor
			 * is freed, so wait a moment */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				struct timeval tv = { 0, EMFILE_PAUSE_MS * 1000 };
				uint32_t skipped;

				if (log_ratelimit(&emfile_limit, clock_now_ms(), 10000, &skipped))
					log_warn("accept %s: %s; pausing accepts suppressed=%u",
					    l->conf->address.text, strerror(errno), skipped);
				listener_pause(l);
				evtimer_add(l->ev_resume, &tv);
			}
			return;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (l->w == NULL || !hand_off(l, cfd, &ss, len))
			l->accept(l, cfd, (struct sockaddr *)&ss, len);
	}
}

struct listener *
listener_start(struct event_base *base, const struct conf_listener *conf, int fd,
    listener_accept_fn fn, void *arg)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->conf = conf;
	l->fd = fd;
	l->accept = fn;
	l->arg = arg;
	l->ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_accept, l);
	l->ev_resume = evtimer_new(base, listener_resume, l);
	if (l->ev == NULL || l->ev_resume == NULL) {
		if (l->ev)
			event_free(l->ev);
		if (l->ev_resume)
			event_free(l->ev_resume);
		free(l);
		return NULL;
	}
	event_add(l->ev, NULL);
	return l;
}

struct listener *
listener_new(struct worker *w, enum listener_kind kind, const struct conf_listener *conf,
    size_t service, int fd)
{
	struct listener *l = listener_start(w->base, conf, fd, proxy_accept, NULL);
	socklen_t len = sizeof(l->local);

	if (l == NULL)
		return NULL;
	if (getsockname(fd, (struct sockaddr *)&l->local, &len) != 0)
		l->local.ss_family = AF_UNSPEC;		/* has no twin */
	l->w = w;
	l->kind = kind;
	l->service = service;
	return l;
}

void
listener_close(struct listener *l)
{
	if (l->fd < 0)
		return;
	/* what already waits in the accept queue is served, not reset */
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;

		if (cfd < 0)
			break;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		l->accept(l, cfd, (struct sockaddr *)&ss, len);
	}
	event_del(l->ev);
	evtimer_del(l->ev_resume);
	l->paused = true;
	close(l->fd);
	l->fd = -1;
}

/* At exit: a connection taken now would only be dropped (or leak, its
 * owner's connections already freed), so the queue is left to the kernel. */
void
listener_free(struct listener *l)
{
	if (l->fd >= 0) {
		event_del(l->ev);
		close(l->fd);
		l->fd = -1;
	}
	event_free(l->ev);
	event_free(l->ev_resume);
	if (l->ev_idle)
		event_free(l->ev_idle);
	free(l);
}

void
listener_client_gone(struct listener *l)
{
	l->n_clients--;
	listener_resume(-1, 0, l);
}
