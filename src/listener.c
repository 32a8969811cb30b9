#include <errno.h>
#include <pthread.h>
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
#define CAP_LOOK_AGAIN_S 5

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

/*
 * max_connections is per listener (SPEC §11): per bound address, shared by
 * the workers' twin sockets for it, so a connection counts the same
 * wherever the kernel hashed it or a hand-over took it. A connection
 * holds a place from just before its accept4 (cap_take) until it ends,
 * also while it is handed over. A twin paused at the cap, or one that
 * found it full when a pause for descriptors ended, is woken by whichever
 * worker frees a place: every worker that finds the cap full counts
 * itself in n_waiting before it looks at held once more, and every
 * release lowers held before it looks at n_waiting, so one of the two
 * sees the other.
 */
struct conn_cap {
	_Atomic uint32_t held;
	_Atomic uint32_t n_waiting;	/* twins paused at the cap */
	/* the registry's, under caps_lock */
	enum listener_kind kind;
	struct sockaddr_storage local;
	uint32_t refs;			/* listeners */
	struct conn_cap *next;
};

static pthread_mutex_t caps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn_cap *caps;

static uint32_t
worker_load(struct worker *w)
{
	return atomic_load_explicit(&w->n_clients, memory_order_relaxed) +
	    atomic_load_explicit(&w->n_incoming, memory_order_relaxed);
}

bool
listener_in_use(struct listener *l)
{
	return l->n_clients + atomic_load_explicit(&l->n_away, memory_order_acquire) > 0;
}

static bool
listener_full(struct listener *l)
{
	return atomic_load(&l->cap->held) >= l->conf->max_connections;
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

/* The count for KIND at LOCAL, shared with the twins; one of its own for
 * a listener with no address (the admin's has no twins either). */
static struct conn_cap *
cap_get(enum listener_kind kind, const struct sockaddr_storage *local, bool shared)
{
	struct conn_cap *c;

	pthread_mutex_lock(&caps_lock);
	for (c = shared ? caps : NULL; c; c = c->next)
		if (c->kind == kind && same_local(&c->local, local))
			break;
	if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
		c->kind = kind;
		c->local = *local;
		if (shared) {
			c->next = caps;
			caps = c;
		}
	}
	if (c != NULL)
		c->refs++;
	pthread_mutex_unlock(&caps_lock);
	return c;
}

static void
cap_put(struct conn_cap *c)
{
	struct conn_cap **pp;

	pthread_mutex_lock(&caps_lock);
	if (--c->refs == 0) {
		for (pp = &caps; *pp && *pp != c; pp = &(*pp)->next)
			;
		if (*pp)
			*pp = c->next;
		free(c);
	}
	pthread_mutex_unlock(&caps_lock);
}

static void cap_release(struct listener *l, struct worker *cur);

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

/* The place taken for the connection before accept4 goes: the accept
 * counted the connection in a place of its own, or refused it. */
static void
serve(struct listener *l, int fd, const struct sockaddr *peer, socklen_t len)
{
	l->accept(l, fd, peer, len);
	cap_release(l, l->w);
}

static void
handoff_serve(struct listener *l, struct handoff *h)
{
	serve(l, h->fd, (const struct sockaddr *)&h->peer, h->peer_len);
	handoff_settle(h);
	free(h);
}

/* Back on the worker that accepted it: the sibling had no listener for it
 * (a reload got there first). The listener that accepted it serves it (a
 * closed one as its connections are). */
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

	if (l != NULL) {
		handoff_serve(l, h);
	} else {
		atomic_fetch_add_explicit(&from->n_incoming, 1, memory_order_relaxed);
		if (!worker_post_owning(from, handoff_home, handoff_drop, h)) {
			atomic_fetch_sub_explicit(&from->n_incoming, 1, memory_order_relaxed);
			close(h->fd);
			cap_release(h->origin, w);
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

/* True when L's count has room. Else L is one of the waiters a release
 * wakes, whatever paused it: one that paused for want of descriptors may
 * find the count full when it looks again, and may hold none of its
 * places itself, so no end of a connection of its own would resume it. */
static bool
cap_room(struct listener *l)
{
	if (!listener_full(l))
		return true;
	if (!l->at_cap) {
		l->at_cap = true;
		atomic_fetch_add(&l->cap->n_waiting, 1);
	}
	/* a place freed before the count above was seen */
	return !listener_full(l);
}

/* L is no longer among its count's waiters: it accepts again, or its
 * socket is closed */
static void
cap_leave(struct listener *l)
{
	if (l->at_cap) {
		l->at_cap = false;
		atomic_fetch_sub(&l->cap->n_waiting, 1);
	}
}

static void
cap_wait(struct listener *l)
{
	listener_pause(l);
	listener_resume(-1, 0, l);
}

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	if (!l->paused || l->fd < 0)
		return;
	if (!cap_room(l)) {
		/* the wake of a release may be lost (no memory for its mail):
		 * a waiter also looks again now and then */
		struct timeval tv = { CAP_LOOK_AGAIN_S, 0 };

		evtimer_add(l->ev_resume, &tv);
		return;
	}
	cap_leave(l);
	evtimer_del(l->ev_resume);
	event_add(l->ev, NULL);
	l->paused = false;
}

void
listener_recheck(struct listener *l)
{
	if (l->at_cap)
		listener_resume(-1, 0, l);
}

static void
cap_recheck(struct worker *w, void *arg)
{
	(void)arg;
	atomic_store(&w->cap_recheck_due, false);
	for (struct listener *l = w->listeners; l; l = l->next)
		listener_recheck(l);
}

/* A place of L's count is free again; CUR is the worker (NULL: the main
 * thread) that runs this. Its twins paused at the cap look again: on
 * CUR at once, on the siblings at their next turn (one mail each,
 * however many places free meanwhile). */
static void
cap_release(struct listener *l, struct worker *cur)
{
	/* The waiters look again whatever L's own limit says: a closed
	 * listener reads the outbound's (swap_listeners), which an inbound
	 * one reopened at its address need not share, and a twin on a worker
	 * that has reloaded may have another. A waiter that still finds the
	 * count full stays paused. */
	atomic_fetch_sub(&l->cap->held, 1);
	if (atomic_load(&l->cap->n_waiting) == 0)
		return;
	if (cur == NULL) {
		listener_recheck(l);
		return;
	}
	/* closing its connections at exit: a sibling may be freed already */
	if (cur->ended)
		return;
	for (uint32_t i = 0; i < cur->n_siblings; i++) {
		struct worker *s = &cur->siblings[i];

		if (s == cur)
			cap_recheck(s, NULL);
		else if (!atomic_exchange(&s->cap_recheck_due, true) &&
		    !worker_post(s, cap_recheck, NULL))
			atomic_store(&s->cap_recheck_due, false);
	}
}

/* Takes a place for the connection accept4 is about to take, if there is
 * one. Looking at the count and raising it after accept4 let twins woken by
 * one release both see the same place free and both take it (2 served at
 * once for a cap of 1). */
static bool
cap_take(struct listener *l)
{
	uint32_t n = atomic_load(&l->cap->held);

	do {
		if (n >= l->conf->max_connections)
			return false;
	} while (!atomic_compare_exchange_weak(&l->cap->held, &n, n + 1));
	return true;
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

		if (!cap_take(l)) {
			cap_wait(l);
			return;
		}
		cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			cap_release(l, l->w);		/* the place taken for it */
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
			serve(l, cfd, (struct sockaddr *)&ss, len);
	}
}

static struct listener *
listener_make(struct event_base *base, const struct conf_listener *conf, int fd,
    listener_accept_fn fn, enum listener_kind kind, bool shared)
{
	struct listener *l = calloc(1, sizeof(*l));
	socklen_t len = sizeof(l->local);

	if (l == NULL)
		return NULL;
	l->conf = conf;
	l->fd = fd;
	l->accept = fn;
	l->kind = kind;
	if (getsockname(fd, (struct sockaddr *)&l->local, &len) != 0)
		l->local.ss_family = AF_UNSPEC;		/* has no twin */
	l->cap = cap_get(kind, &l->local, shared && l->local.ss_family != AF_UNSPEC);
	l->ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_accept, l);
	l->ev_resume = evtimer_new(base, listener_resume, l);
	if (l->cap == NULL || l->ev == NULL || l->ev_resume == NULL) {
		if (l->cap)
			cap_put(l->cap);
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
listener_start(struct event_base *base, const struct conf_listener *conf, int fd,
    listener_accept_fn fn, void *arg)
{
	struct listener *l = listener_make(base, conf, fd, fn, LK_OUTBOUND, false);

	if (l != NULL)
		l->arg = arg;
	return l;
}

struct listener *
listener_new(struct worker *w, enum listener_kind kind, const struct conf_listener *conf,
    size_t service, int fd)
{
	struct listener *l = listener_make(w->base, conf, fd, proxy_accept, kind, true);

	if (l == NULL)
		return NULL;
	l->w = w;
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
		atomic_fetch_add(&l->cap->held, 1);
		serve(l, cfd, (struct sockaddr *)&ss, len);
	}
	event_del(l->ev);
	evtimer_del(l->ev_resume);
	cap_leave(l);
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
	cap_leave(l);
	cap_put(l->cap);
	event_free(l->ev);
	event_free(l->ev_resume);
	if (l->ev_idle)
		event_free(l->ev_idle);
	free(l);
}

void
listener_client_add(struct listener *l)
{
	l->n_clients++;
	atomic_fetch_add(&l->cap->held, 1);
}

void
listener_client_gone(struct listener *l)
{
	l->n_clients--;
	cap_release(l, l->w);
	/* a connection's end frees a descriptor too */
	listener_resume(-1, 0, l);
}
