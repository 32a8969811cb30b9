/*
 * An in-process ferry for the libFuzzer harnesses that drive whole
 * connections (fuzz_h2_down.c, fuzz_h2_upstream.c): a config loaded from
 * YAML by the real loader, one worker built by worker_init() and its
 * event loop run by the harness (EVLOOP_NONBLOCK turns, no thread), and
 * two upstream stubs on that same loop: an HTTP/1.1 server and an h2c
 * server (nghttp2), each answering by the first letter of the path (see
 * stub_kind()). A service may also point at a port that refuses.
 *
 * The worker lives across inputs; each input gets fresh connections.
 * Client connections are socketpair(AF_UNIX) ends handed to the real
 * accept path (proxy_accept(), as listener.c calls it), so the codecs
 * (h1_down.c, h2_down.c) see them as any accepted connection. After an
 * input, ff_idle_check() asserts the worker returned to idle: no client,
 * stream, exchange, attempt, pooled or HTTP/2 upstream connection left,
 * every counter back at zero, no descriptor leaked.
 *
 * Stub properties (any violation aborts): ferry's requests to the
 * HTTP/1.1 stub parse with ferry's own request parser (what another ferry's
 * listener would accept), and its HTTP/2 frames to the h2c stub raise no
 * protocol error in nghttp2.
 */
#ifndef FERRY_FUZZ_FERRY_H
#define FERRY_FUZZ_FERRY_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "blocks.h"
#include "config.h"
#include "exchange.h"
#include "h2_mem.h"
#include "ids.h"
#include "log.h"
#include "metrics.h"
#include "outlier.h"
#include "pool.h"
#include "proxy.h"
#include "runtime.h"
#include "worker.h"

#include "fuzz_common.h"

/* ---------------------------------------------------------- bytes ---- */

struct bbuf {
	uint8_t *p;
	size_t len, cap;
};

static inline void
bb_add(struct bbuf *b, const void *d, size_t n)
{
	if (n == 0)
		return;
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap - b->len < n)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			abort();
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static inline void
bb_consume(struct bbuf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

static inline void
bb_free(struct bbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------ the world ---- */

struct ff {
	char dir[256];
	struct config *conf;
	struct metrics *metrics;
	struct runtime *rt;
	struct worker w;
	struct listener *outbound, *svc_listener;
	int h1_lfd, h2_lfd, dead_fd;		/* stub listeners; a bound, unlistened port */
	int raw_lfd;				/* a listener the harness serves itself */
	struct event *h1_ev, *h2_ev, *raw_ev;
	uint16_t h1_port, h2_port, dead_port, raw_port;
	event_callback_fn raw_accept;		/* set before ff_init(), or NULL */
	uint64_t stub_requests;			/* requests the stubs answered, ever */
};

static struct ff ff;

static uint16_t
ff_bound_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
		abort();
	return ntohs(sin.sin_port);
}

/* A TCP socket bound to 127.0.0.1 on a port the kernel picks. */
static int
ff_bind_loopback(bool listening)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    (listening && listen(fd, 128) != 0)) {
		perror("stub socket");
		abort();
	}
	return fd;
}

/* A free port for one of ferry's own listeners (it binds them itself). */
static uint16_t
ff_free_port(void)
{
	int fd = ff_bind_loopback(false);
	uint16_t port = ff_bound_port(fd);

	close(fd);
	return port;
}

static int
ff_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ------------------------------------------------ stub behaviours ---- */

/*
 * What a stub does, by the first letter after the '/' of the path:
 *   e  answer right after the head, before the request body
 *   c  close the connection after the head, no answer
 *   k  a chunked (HTTP/1.1) or DATA-and-trailers (h2) answer with trailers
 *   b  a 100000-byte body
 *   n  204, no body
 *   h  1xx first (100 and 103), then 200
 *   s  503 (retried by the services with retries)
 *   l  HTTP/1.1: a body until the connection closes; h2: RST_STREAM after
 *      the head and part of the body
 *   g  h2: GOAWAY (the request unprocessed) then close; HTTP/1.1: as c
 *   r  h2: RST_STREAM REFUSED_STREAM; HTTP/1.1: as c
 *   any other: after the whole request, 200 echoing its body ("x-stub: echo")
 */
enum stub_kind {
	SK_ECHO, SK_EARLY, SK_CLOSE, SK_CHUNKED, SK_BIG, SK_204, SK_INFO, SK_503,
	SK_EOF, SK_GOAWAY, SK_REFUSE,
};

static enum stub_kind
stub_kind(const char *path, size_t len)
{
	const char *p = memchr(path, '/', len);

	/* absolute form: the path after the authority */
	if (p != NULL && p + 1 < path + len && p[1] == '/')
		p = memchr(p + 2, '/', (size_t)(path + len - (p + 2)));
	if (p == NULL || p + 1 >= path + len)
		return SK_ECHO;
	switch (p[1]) {
	case 'e': return SK_EARLY;
	case 'c': return SK_CLOSE;
	case 'k': return SK_CHUNKED;
	case 'b': return SK_BIG;
	case 'n': return SK_204;
	case 'h': return SK_INFO;
	case 's': return SK_503;
	case 'l': return SK_EOF;
	case 'g': return SK_GOAWAY;
	case 'r': return SK_REFUSE;
	default: return SK_ECHO;
	}
}

#define STUB_BIG 100000
#define STUB_ECHO_MAX (1u << 20)

static char stub_big_body[STUB_BIG];

/* ------------------------------------------------ HTTP/1.1 stub ---- */

struct h1s {
	int fd;
	struct event *ev;
	struct bbuf in;			/* from the current message's start */
	size_t parsed;			/* of in: head bytes parsed, or body taken */
	bool in_body;
	struct http_parser hp;
	struct http_head head;
	struct bbuf body;		/* decoded request body */
	enum stub_kind kind;
	bool head_method;
	bool answered;			/* this message's answer went out */
	bool draining;			/* answered with close: read until EOF */
	struct bbuf out;
	bool want_write;		/* the event has EV_WRITE */
	struct h1s *next, *prev;
};

static struct h1s *h1s_list;
static int h1s_open;

static void
h1s_free(struct h1s *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		h1s_list = s->next;
	if (s->next)
		s->next->prev = s->prev;
	event_free(s->ev);
	close(s->fd);
	bb_free(&s->in);
	bb_free(&s->body);
	bb_free(&s->out);
	http_parser_free(&s->hp);
	free(s);
	h1s_open--;
}

static void
h1s_body(void *arg, const char *at, size_t len)
{
	struct h1s *s = arg;

	if (s->body.len + len <= STUB_ECHO_MAX)
		bb_add(&s->body, at, len);
}

/* Writes what it can; the rest waits for EV_WRITE. False: S is gone. */
static bool
h1s_flush(struct h1s *s)
{
	while (s->out.len > 0) {
		ssize_t n = send(s->fd, s->out.p, s->out.len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			h1s_free(s);
			return false;
		}
		bb_consume(&s->out, (size_t)n);
	}
	if (s->out.len == 0 && s->draining)
		shutdown(s->fd, SHUT_WR);
	return true;
}

static void
h1s_say(struct h1s *s, const char *text)
{
	bb_add(&s->out, text, strlen(text));
}

/* The answer to the current message; false when S closed. */
static bool
h1s_answer(struct h1s *s, bool complete)
{
	char head[256];

	ff.stub_requests++;
	s->answered = true;
	switch (s->kind) {
	case SK_CLOSE:
	case SK_GOAWAY:
	case SK_REFUSE:
		h1s_free(s);
		return false;
	case SK_EARLY:
		h1s_say(s, "HTTP/1.1 200 OK\r\nx-stub: early\r\ncontent-length: 5\r\n\r\n");
		if (!s->head_method)
			h1s_say(s, "early");
		if (!complete) {
			/* the rest of the request would come unframed */
			s->draining = true;
		}
		break;
	case SK_CHUNKED:
		h1s_say(s, "HTTP/1.1 200 OK\r\nx-stub: chunked\r\ntransfer-encoding: chunked\r\n"
		    "trailer: x-trailer\r\n\r\n");
		if (!s->head_method)
			h1s_say(s, "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: t\r\n"
			    "grpc-status: 0\r\n\r\n");
		break;
	case SK_BIG:
		h1s_say(s, "HTTP/1.1 200 OK\r\nx-stub: big\r\ncontent-length: 100000\r\n\r\n");
		if (!s->head_method)
			bb_add(&s->out, stub_big_body, STUB_BIG);
		break;
	case SK_204:
		h1s_say(s, "HTTP/1.1 204 No Content\r\nx-stub: none\r\n\r\n");
		break;
	case SK_INFO:
		h1s_say(s, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
		    "link: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nx-stub: info\r\n"
		    "content-length: 2\r\n\r\n");
		if (!s->head_method)
			h1s_say(s, "ok");
		break;
	case SK_503:
		h1s_say(s, "HTTP/1.1 503 Service Unavailable\r\nx-stub: busy\r\n"
		    "content-length: 4\r\n\r\n");
		if (!s->head_method)
			h1s_say(s, "busy");
		break;
	case SK_EOF:
		h1s_say(s, "HTTP/1.1 200 OK\r\nx-stub: eof\r\nconnection: close\r\n\r\n");
		if (!s->head_method)
			h1s_say(s, "until the end");
		s->draining = true;
		break;
	case SK_ECHO:
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nx-stub: echo\r\n"
		    "content-length: %zu\r\n\r\n", s->body.len);
		h1s_say(s, head);
		if (!s->head_method)
			bb_add(&s->out, s->body.p, s->body.len);
		break;
	}
	return h1s_flush(s);
}

/* The request line starts with a token and a space: an extension method. */
static bool
h1s_token_method(const struct h1s *s)
{
	size_t i = 0;

	while (i < s->in.len && is_tchar(s->in.p[i]))
		i++;
	return i > 0 && i < s->in.len && s->in.p[i] == ' ' && s->hp.err_text != NULL &&
	    strstr(s->hp.err_text, "method") != NULL;
}

/* Parses what came; answers each complete message. False: S is gone. */
static bool
h1s_process(struct h1s *s)
{
	while (s->in.len > s->parsed && !s->draining) {
		size_t used = 0;
		enum http_status st;

		if (!s->in_body) {
			st = http_parse(&s->hp, (const char *)s->in.p + s->parsed,
			    s->in.len - s->parsed, (uint32_t)s->parsed, &used);
			s->parsed += used;
		} else {
			st = http_parse(&s->hp, (const char *)s->in.p + s->parsed,
			    s->in.len - s->parsed, 0, &used);
			s->parsed += used;
		}
		if (st == HTTP_ERROR) {
			/* llhttp knows a fixed list of methods; any other token is
			 * valid HTTP (RFC 9110 9.1) and an HTTP/2 client may send it */
			if (!s->in_body && h1s_token_method(s)) {
				h1s_free(s);
				return false;
			}
			fprintf(stderr, "ferry sent an HTTP/1.1 request its own parser refuses "
			    "(%s):\n%.*s\n", s->hp.err_text ? s->hp.err_text : "?",
			    (int)(s->in.len < 2000 ? s->in.len : 2000), (const char *)s->in.p);
			PROP(st != HTTP_ERROR);
		}
		if (st == HTTP_NEED_MORE)
			return true;
		if (st == HTTP_HEAD_DONE) {
			s->kind = stub_kind((const char *)s->in.p + s->head.target.off,
			    s->head.target.len);
			s->head_method = s->head.method_id == HTTP_HEAD;
			s->in_body = true;
			bb_consume(&s->in, s->parsed);
			s->parsed = 0;
			if (!s->head.chunked && !(s->head.has_length && s->head.content_length > 0))
				st = HTTP_MSG_DONE;
			else if (s->kind != SK_ECHO && s->kind != SK_503 && s->kind != SK_INFO &&
			    s->kind != SK_CHUNKED && s->kind != SK_BIG)
				/* answered now; the body is read and dropped */
				if (!h1s_answer(s, false))
					return false;
		}
		if (st == HTTP_MSG_DONE) {
			if (!s->answered && !h1s_answer(s, true))
				return false;
			if (s->draining)
				return true;
			bb_consume(&s->in, s->parsed);
			s->parsed = 0;
			s->in_body = false;
			s->answered = false;
			s->body.len = 0;
			http_parser_reset(&s->hp);
			s->hp.dechunk = true;	/* a mode of each message */
		}
	}
	return true;
}

static void
h1s_event(evutil_socket_t fd, short what, void *arg)
{
	struct h1s *s = arg;
	char buf[16384];

	if ((what & EV_WRITE) && !h1s_flush(s))
		return;
	if (!(what & EV_READ))
		goto rearm;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			h1s_free(s);
			return;
		}
		if (!s->draining)
			bb_add(&s->in, buf, (size_t)n);
	}
	if (!h1s_process(s))
		return;
rearm:
	if (s->want_write != (s->out.len > 0)) {
		s->want_write = s->out.len > 0;
		event_del(s->ev);
		event_assign(s->ev, ff.w.base, s->fd, EV_READ | EV_PERSIST |
		    (s->want_write ? EV_WRITE : 0), h1s_event, s);
		event_add(s->ev, NULL);
	}
}

static void
h1s_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct h1s *s;

		if (fd < 0)
			return;
		if ((s = calloc(1, sizeof(*s))) == NULL)
			abort();
		s->fd = fd;
		http_parser_init(&s->hp, false, &s->head);
		s->hp.dechunk = true;
		s->hp.on_data = h1s_body;
		s->hp.arg = s;
		s->ev = event_new(ff.w.base, fd, EV_READ | EV_PERSIST, h1s_event, s);
		event_add(s->ev, NULL);
		s->next = h1s_list;
		if (h1s_list)
			h1s_list->prev = s;
		h1s_list = s;
		h1s_open++;
	}
}

/* ----------------------------------------------------- h2c stub ---- */

struct h2s_stream {
	int32_t id;
	enum stub_kind kind;
	bool head_method;
	bool answered;
	struct bbuf body;		/* the request's, to echo */
	const uint8_t *src;		/* the answer's body */
	size_t src_len, src_off;
	bool trailers;
	struct h2s_stream *next;
};

struct h2s {
	int fd;
	struct event *ev;
	nghttp2_session *ng;
	struct bbuf out;
	bool closing;
	bool want_write;
	struct h2s_stream *streams;
	struct h2s *next, *prev;
};

static struct h2s *h2s_list;
static int h2s_open;

static struct h2s_stream *
h2s_stream(struct h2s *s, int32_t id, bool create)
{
	struct h2s_stream *st;

	for (st = s->streams; st; st = st->next)
		if (st->id == id)
			return st;
	if (!create)
		return NULL;
	if ((st = calloc(1, sizeof(*st))) == NULL)
		abort();
	st->id = id;
	st->next = s->streams;
	s->streams = st;
	return st;
}

static void
h2s_stream_drop(struct h2s *s, int32_t id)
{
	for (struct h2s_stream **pp = &s->streams; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			struct h2s_stream *st = *pp;

			*pp = st->next;
			bb_free(&st->body);
			free(st);
			return;
		}
}

static void
h2s_free(struct h2s *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		h2s_list = s->next;
	if (s->next)
		s->next->prev = s->prev;
	event_free(s->ev);
	close(s->fd);
	nghttp2_session_del(s->ng);
	while (s->streams)
		h2s_stream_drop(s, s->streams->id);
	bb_free(&s->out);
	free(s);
	h2s_open--;
}

static ssize_t
h2s_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2s_stream *st = src->ptr;
	size_t n = st->src_len - st->src_off;

	(void)arg;
	if (n > length)
		n = length;
	memcpy(buf, st->src + st->src_off, n);
	st->src_off += n;
	if (st->src_off == st->src_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->trailers) {
			static const nghttp2_nv t[] = {
				{ (uint8_t *)"x-trailer", (uint8_t *)"t", 9, 1, 0 },
				{ (uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0 },
			};

			if (nghttp2_submit_trailer(ng, id, t, 2) == 0)
				*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
	}
	return (ssize_t)n;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0 }

static void
h2s_respond(struct h2s *s, struct h2s_stream *st, const char *status, const char *tag,
    const void *body, size_t len)
{
	char cl[32];
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = h2s_read_body };
	size_t n = 3;

	snprintf(cl, sizeof(cl), "%zu", len);
	nghttp2_nv nv[] = { NV(":status", status), NV("x-stub", tag), NV("content-length", cl) };
	if (st->trailers || strcmp(status, "204") == 0)
		n = 2;	/* no length: a body with trailers, or none */
	st->src = body;
	st->src_len = st->head_method ? 0 : len;
	st->src_off = 0;
	st->answered = true;
	ff.stub_requests++;
	nghttp2_submit_response(s->ng, st->id, nv, n,
	    st->src_len > 0 || st->trailers ? &dp : NULL);
}

/* The answer; at the head (COMPLETE false) only for the early kinds. */
static void
h2s_answer(struct h2s *s, struct h2s_stream *st, bool complete)
{
	static const nghttp2_nv info[] = { NV(":status", "100") };
	static const nghttp2_nv hints[] = { NV(":status", "103"), NV("link", "</a.css>") };

	switch (st->kind) {
	case SK_EARLY:
		h2s_respond(s, st, "200", "early", "early", 5);
		break;
	case SK_CLOSE:
		s->closing = true;
		st->answered = true;
		break;
	case SK_GOAWAY:
		st->answered = true;
		nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, st->id - 2 > 0 ? st->id - 2 : 0,
		    NGHTTP2_NO_ERROR, NULL, 0);
		break;
	case SK_REFUSE:
		st->answered = true;
		nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_REFUSED_STREAM);
		break;
	case SK_EOF:
		/* a head and a part, then a reset */
		st->answered = true;
		{
			const nghttp2_nv nv[] = { NV(":status", "200"), NV("x-stub", "cut") };

			nghttp2_submit_headers(s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, nv, 2, NULL);
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
			    NGHTTP2_INTERNAL_ERROR);
		}
		break;
	case SK_CHUNKED:
		st->trailers = true;
		h2s_respond(s, st, "200", "chunked", "helloabc", 8);
		break;
	case SK_BIG:
		h2s_respond(s, st, "200", "big", stub_big_body, STUB_BIG);
		break;
	case SK_204:
		h2s_respond(s, st, "204", "none", "", 0);
		break;
	case SK_INFO:
		nghttp2_submit_headers(s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, info, 1, NULL);
		nghttp2_submit_headers(s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, hints, 2, NULL);
		h2s_respond(s, st, "200", "info", "ok", 2);
		break;
	case SK_503:
		h2s_respond(s, st, "503", "busy", "busy", 4);
		break;
	case SK_ECHO:
		h2s_respond(s, st, "200", "echo", st->body.p ? (const char *)st->body.p : "",
		    st->body.len);
		break;
	}
	(void)complete;
}

static bool
h2s_early(enum stub_kind k)
{
	return k == SK_EARLY || k == SK_CLOSE || k == SK_GOAWAY || k == SK_REFUSE || k == SK_EOF;
}

static int
h2s_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct h2s *s = arg;
	struct h2s_stream *st;

	(void)ng;
	(void)flags;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = h2s_stream(s, frame->hd.stream_id, true);
	if (nlen == 5 && memcmp(name, ":path", 5) == 0)
		st->kind = stub_kind((const char *)value, vlen);
	else if (nlen == 7 && memcmp(name, ":method", 7) == 0)
		st->head_method = vlen == 4 && memcmp(value, "HEAD", 4) == 0;
	return 0;
}

static int
h2s_on_frame(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2s *s = arg;
	struct h2s_stream *st;

	(void)ng;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	if ((st = h2s_stream(s, frame->hd.stream_id, false)) == NULL || st->answered)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
	    h2s_early(st->kind))
		h2s_answer(s, st, false);
	else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		h2s_answer(s, st, true);
	return 0;
}

static int
h2s_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct h2s *s = arg;
	struct h2s_stream *st = h2s_stream(s, id, false);

	(void)ng;
	(void)flags;
	if (st != NULL && st->body.len + len <= STUB_ECHO_MAX)
		bb_add(&st->body, data, len);
	return 0;
}

static int
h2s_on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
	(void)ng;
	(void)code;
	h2s_stream_drop(arg, id);
	return 0;
}

/* ferry's frames to an h2c server must be valid HTTP/2 */
static int
h2s_on_invalid(nghttp2_session *ng, const nghttp2_frame *frame, int err, void *arg)
{
	(void)ng;
	(void)arg;
	fprintf(stderr, "h2c stub: invalid frame from ferry: type %u stream %d: %s\n",
	    frame->hd.type, frame->hd.stream_id, nghttp2_strerror(err));
	PROP(!"ferry sent an invalid HTTP/2 frame upstream");
	return 0;
}

static int
h2s_on_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *arg)
{
	(void)ng;
	(void)arg;
	fprintf(stderr, "h2c stub: nghttp2 error %d from ferry's frames: %.*s\n", code,
	    (int)len, msg);
	PROP(!"ferry's HTTP/2 to the upstream raised a protocol error");
	return 0;
}

static bool
h2s_send(struct h2s *s)
{
	for (;;) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(s->ng, &p);

		PROP(n >= 0);
		if (n == 0)
			break;
		bb_add(&s->out, p, (size_t)n);
	}
	while (s->out.len > 0) {
		ssize_t n = send(s->fd, s->out.p, s->out.len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			h2s_free(s);
			return false;
		}
		bb_consume(&s->out, (size_t)n);
	}
	if (s->out.len == 0 && (s->closing || (!nghttp2_session_want_read(s->ng) &&
	    !nghttp2_session_want_write(s->ng)))) {
		h2s_free(s);
		return false;
	}
	return true;
}

static void
h2s_event(evutil_socket_t fd, short what, void *arg)
{
	struct h2s *s = arg;
	uint8_t buf[16384];

	if (what & EV_READ) {
		for (;;) {
			ssize_t n = recv(fd, buf, sizeof(buf), 0), rv;

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n <= 0) {
				h2s_free(s);
				return;
			}
			rv = nghttp2_session_mem_recv(s->ng, buf, (size_t)n);
			if (rv < 0) {
				fprintf(stderr, "h2c stub: %s\n", nghttp2_strerror((int)rv));
				PROP(!"ferry's HTTP/2 to the upstream failed to parse");
			}
		}
	}
	if (!h2s_send(s))
		return;
	if (s->want_write != (s->out.len > 0)) {
		s->want_write = s->out.len > 0;
		event_del(s->ev);
		event_assign(s->ev, ff.w.base, s->fd, EV_READ | EV_PERSIST |
		    (s->want_write ? EV_WRITE : 0), h2s_event, s);
		event_add(s->ev, NULL);
	}
}

static void
h2s_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		nghttp2_session_callbacks *cb;
		struct h2s *s;

		if (fd < 0)
			return;
		if ((s = calloc(1, sizeof(*s))) == NULL || nghttp2_session_callbacks_new(&cb) != 0)
			abort();
		s->fd = fd;
		nghttp2_session_callbacks_set_on_header_callback(cb, h2s_on_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h2s_on_frame);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2s_on_data);
		nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2s_on_close);
		nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, h2s_on_invalid);
		nghttp2_session_callbacks_set_error_callback2(cb, h2s_on_error);
		if (nghttp2_session_server_new(&s->ng, cb, s) != 0)
			abort();
		nghttp2_session_callbacks_del(cb);
		nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, NULL, 0);
		s->ev = event_new(ff.w.base, fd, EV_READ | EV_PERSIST, h2s_event, s);
		event_add(s->ev, NULL);
		s->next = h2s_list;
		if (h2s_list)
			h2s_list->prev = s;
		h2s_list = s;
		h2s_open++;
	}
}

/* --------------------------------------------------------- set-up ---- */

static void
ff_config_error(void *arg, const char *line)
{
	(void)arg;
	fprintf(stderr, "fuzz config: %s\n", line);
}

/* The endpoints of every service, as discovery would publish them (all
 * are IP literals, so no resolver runs). */
static void
ff_publish_endpoints(void)
{
	for (size_t i = 0; i < ff.conf->n_services; i++) {
		const struct conf_service *sc = &ff.conf->services[i];
		struct svc_runtime *srt = runtime_service(ff.rt, sc);
		struct ep_set *set = calloc(1, sizeof(*set) + sc->n_endpoints * sizeof(set->items[0]));

		PROP(srt != NULL && set != NULL);
		for (size_t j = 0; j < sc->n_endpoints; j++) {
			struct ep_spec *sp = &set->items[j];
			const struct conf_addr *a = &sc->endpoints[j];

			PROP(a->is_ip);
			memcpy(&sp->sa, &a->sa, a->salen);
			sp->salen = a->salen;
			snprintf(sp->text, sizeof(sp->text), "%s", a->text);
			snprintf(sp->host, sizeof(sp->host), "%s", a->host);
			sp->host_is_ip = true;
			sp->weight = 1;
			PROP((sp->rt = runtime_endpoint(srt, sp->text)) != NULL);
		}
		set->n = sc->n_endpoints;
		set->service = i;
		set->conf = ff.conf;
		PROP((set->outliers = runtime_outlier_group(ff.rt, set->n)) != NULL);
		for (size_t j = 0; j < set->n; j++)
			set->items[j].outlier = outlier_get(set->outliers, j);
		worker_set_endpoints(&ff.w, set);
		free(set);
	}
}

/*
 * Loads YAML (a printf format taking, in order: the outbound listener's
 * port, the admin port, the HTTP/1.1 stub's, the h2c stub's, the refusing
 * port, a free port for a service's own listener and the port of the
 * harness's own listener, ff.raw_accept) and starts the worker and the
 * stubs.
 */
static void
ff_init(const char *yaml_fmt)
{
	char path[320], yaml[8192];
	const struct worker_deps deps = { 0 };
	struct worker_deps d;
	FILE *f;
	int n;

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < STUB_BIG; i++)
		stub_big_body[i] = (char)('a' + i % 26);
	ff.h1_lfd = ff_bind_loopback(true);
	ff.h2_lfd = ff_bind_loopback(true);
	ff.dead_fd = ff_bind_loopback(false);	/* bound, never listening: refuses */
	ff.h1_port = ff_bound_port(ff.h1_lfd);
	ff.h2_port = ff_bound_port(ff.h2_lfd);
	ff.dead_port = ff_bound_port(ff.dead_fd);
	ff.raw_lfd = ff_bind_loopback(true);
	ff.raw_port = ff_bound_port(ff.raw_lfd);
	n = snprintf(yaml, sizeof(yaml), yaml_fmt, ff_free_port(), ff_free_port(), ff.h1_port,
	    ff.h2_port, ff.dead_port, ff_free_port(), ff.raw_port);
	PROP(n > 0 && (size_t)n < sizeof(yaml));
	snprintf(ff.dir, sizeof(ff.dir), "%s/ferry-fuzz-h2-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	PROP(mkdtemp(ff.dir) != NULL);
	snprintf(path, sizeof(path), "%s/ferry.yaml", ff.dir);
	PROP((f = fopen(path, "w")) != NULL);
	fputs(yaml, f);
	fclose(f);
	setenv("FERRY_FUZZ_SERVICE_KEY", "fuzz-service-key-0123456789", 1);
	ff.conf = config_load(path, ff_config_error, NULL);
	unlink(path);
	rmdir(ff.dir);
	PROP(ff.conf != NULL);
	log_set_level(getenv("FERRY_FUZZ_LOG") ? LOG_DEBUG : LOG_ERROR);
	ids_thread_init();
	worker_via_init();
	PROP((ff.metrics = metrics_new(1)) != NULL);
	PROP((ff.rt = runtime_new(ff.metrics, 1)) != NULL);
	d = deps;
	d.rt = ff.rt;
	d.metrics = ff.metrics;
	d.workers = &ff.w;
	d.n_workers = 1;
	PROP(worker_init(&ff.w, &d, 0, ff.conf) == 0);
	for (struct listener *l = ff.w.listeners; l; l = l->next) {
		if (l->kind == LK_OUTBOUND)
			ff.outbound = l;
		else if (l->kind == LK_SERVICE)
			ff.svc_listener = l;
	}
	PROP(ff.outbound != NULL);
	ff_publish_endpoints();
	ff.h1_ev = event_new(ff.w.base, ff.h1_lfd, EV_READ | EV_PERSIST, h1s_accept, NULL);
	ff.h2_ev = event_new(ff.w.base, ff.h2_lfd, EV_READ | EV_PERSIST, h2s_accept, NULL);
	event_add(ff.h1_ev, NULL);
	event_add(ff.h2_ev, NULL);
	if (ff.raw_accept != NULL) {
		ff.raw_ev = event_new(ff.w.base, ff.raw_lfd, EV_READ | EV_PERSIST, ff.raw_accept,
		    NULL);
		event_add(ff.raw_ev, NULL);
	}
	worker_turn(&ff.w, EVLOOP_NONBLOCK);
}

/* ----------------------------------------------------- connections ---- */

/* A client connection accepted on L: returns the client's end. BUF, when
 * not 0, is the socket buffer of both ends (a small one keeps ferry's
 * output queued while the client does not read). */
static int
ff_connect(struct listener *l, int buf)
{
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(40000),
	    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int sv[2];

	PROP(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	if (buf > 0) {
		PROP(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf)) == 0);
		PROP(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf)) == 0);
	}
	/* what listener_accept() does with an accepted descriptor */
	proxy_accept(l, sv[0], (struct sockaddr *)&peer, sizeof(peer));
	return sv[1];
}

/* Reads what ferry wrote to client end FD into OUT (up to MAX bytes kept;
 * *TRUNC set past it). -1 at EOF or error, else the bytes read. */
static ssize_t
ff_read_all(int fd, struct bbuf *out, size_t max, bool *trunc)
{
	uint8_t buf[65536];
	ssize_t total = 0;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return total;
		if (n <= 0)
			return total > 0 ? total : -1;
		if (out->len + (size_t)n <= max)
			bb_add(out, buf, (size_t)n);
		else
			*trunc = true;
		total += n;
	}
}

/* Runs the loop until a turn changes nothing the client could see: no
 * bytes for FD (the client's end, -1 for none) and nothing left for the
 * loop at once. Returns false when FD reached EOF. */
static bool
ff_settle(int fd, struct bbuf *out, size_t max, bool *trunc)
{
	bool open = true;

	for (int quiet = 0, turns = 0; quiet < 2 && turns < 100000; turns++) {
		ssize_t n = 0;

		worker_turn(&ff.w, EVLOOP_NONBLOCK);
		if (fd >= 0 && open) {
			n = ff_read_all(fd, out, max, trunc);
			if (n < 0)
				open = false;
		}
		quiet = n > 0 ? 0 : quiet + 1;
	}
	return open;
}

/* Drops what the worker keeps between requests (pooled and HTTP/2
 * upstream connections), so that each input starts alike. */
static void
ff_reset_pools(void)
{
	struct generation *g = ff.w.gen;

	for (size_t i = 0; i < g->n_svcs; i++)
		pool_close_idle(&g->svcs[i]);
	h2_up_close_all(&ff.w);
	ff_settle(-1, NULL, 0, NULL);
	/* and the thread's spare blocks: a leak check at the input's end
	 * sees none kept (poison.h: ASan builds keep them too) */
	h2_mem_thread_end();
	blocks_thread_end();
}

/* Everything of the input is gone: asserts the worker is idle again, with
 * FDS_BEFORE descriptors open as before the input (ff_count_fds()). */
static void
ff_idle_check(int fds_before)
{
	struct generation *g = ff.w.gen;
	int fds;

	ff_reset_pools();
	PROP(ff.w.clients == NULL);
	PROP(ff.w.h2conns == NULL);
	PROP(ff.w.h2ups == NULL);
	PROP(atomic_load(&ff.w.n_clients) == 0);
	PROP(atomic_load(&ff.w.conns_outbound) == 0 && atomic_load(&ff.w.conns_inbound) == 0);
	PROP(ff.outbound->n_clients == 0);
	PROP(ff.svc_listener == NULL || ff.svc_listener->n_clients == 0);
	PROP(g->refs == 1 && ff.w.old == NULL);
	PROP(ff.w.defer_head == NULL && ff.w.scratch_holder == NULL);
	for (size_t i = 0; i < g->n_svcs; i++) {
		const struct svc_state *s = &g->svcs[i];

		PROP(breaker_in_flight(s->rt->breaker) == 0);
		for (size_t j = 0; j < s->n_eps; j++) {
			const struct endpoint *ep = s->eps[j];
			struct ep_gauges gg;

			ep_runtime_gauges(ep->rt, &gg);
			PROP(ep->in_flight == 0 && ep->n_active == 0 && ep->n_idle == 0);
			PROP(atomic_load(&ep->rt->conns) == 0 && gg.streams == 0);
			PROP(gg.active == 0 && gg.idle == 0 && gg.in_flight == 0);
		}
	}
	/* ferry closed its upstream connections, so the stubs saw EOF */
	PROP(h1s_open == 0 && h2s_open == 0);
	fds = ff_count_fds();
	if (fds != fds_before)
		fprintf(stderr, "open descriptors: %d, before the input: %d\n", fds, fds_before);
	PROP(fds == fds_before);
}

#endif
