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

static struct log_limit emfile_limit;

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

static void
listener_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	/* also called when a connection ends: that frees a descriptor too */
	if (l->paused && l->fd >= 0 && l->n_clients < l->conf->max_connections) {
		evtimer_del(l->ev_resume);
		event_add(l->ev, NULL);
		l->paused = false;
	}
}

static void
listener_accept(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)what;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd, one = 1;

		if (l->n_clients >= l->conf->max_connections) {
			listener_pause(l);
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

	if (l == NULL)
		return NULL;
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
	if (l->paused && l->fd >= 0 && l->n_clients < l->conf->max_connections)
		listener_resume(-1, 0, l);
}
