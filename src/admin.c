#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "conn.h"
#include "errors.h"
#include "headers.h"
#include "http1.h"
#include "listener.h"
#include "sbuf.h"
#include "server.h"

/* An admin request is a GET of a few hundred bytes (a browser's cookies
 * a few KiB more): held to 16 KiB, as each connection may keep its
 * unfinished head until header_read_timeout, 10,000 of them by default. */
#define ADMIN_BUF_MAX (16 * 1024)

struct admin {
	struct server *srv;
	struct event_base *base;
	struct listener *lis;		/* accepting, cap, pause on EMFILE */
	struct admin_conn *conns;
};

struct admin_conn {
	struct admin *a;
	struct conn *c;
	struct buf in;
	uint32_t parsed;
	struct http_parser parser;
	struct http_head head;
	bool closing;
	bool in_head;			/* a head has begun: its deadline runs */
	bool blocked;			/* an answer is still going out: the
					 * next request waits, reading paused */
	struct event *timer;		/* idle_timeout, then header_read_timeout */
	struct admin_conn *next, *prev;
};

static void
admin_conn_free(struct admin_conn *ac)
{
	if (ac->timer)
		event_free(ac->timer);
	listener_client_gone(ac->a->lis);
	if (ac->prev)
		ac->prev->next = ac->next;
	else
		ac->a->conns = ac->next;
	if (ac->next)
		ac->next->prev = ac->prev;
	conn_free(ac->c);
	buf_free(&ac->in);
	http_parser_free(&ac->parser);
	free(ac);
}

static void
respond(struct admin_conn *ac, int status, const char *reason, const char *ctype,
    const char *body, size_t blen, bool head_only, bool keep_alive)
{
	struct sbuf out = { 0 };

	sbuf_adds(&out, "HTTP/1.1 ");
	sbuf_addu(&out, (unsigned)status);
	sbuf_add(&out, " ", 1);
	sbuf_adds(&out, reason);
	sbuf_adds(&out, "\r\ncontent-type: ");
	sbuf_adds(&out, ctype);
	sbuf_adds(&out, "\r\ncache-control: no-store\r\ncontent-length: ");
	sbuf_addu(&out, blen);
	sbuf_adds(&out, keep_alive ? "\r\n\r\n" : "\r\nconnection: close\r\n\r\n");
	if (!head_only)
		sbuf_add(&out, body, blen);
	/* an answer with a piece missing is none: the connection goes */
	if (out.oom || conn_write(ac->c, out.p, out.len) != 0 || !keep_alive)
		ac->closing = true;
	sbuf_free(&out);
}

/*
 * Against DNS rebinding (a browser page whose name now points here): the
 * Host, and the authority of an absolute-form target, must be one the
 * endpoint answers for (config_admin_host_ok). A request without Host
 * (HTTP/1.0) came from no browser, so it passes.
 */
static bool
host_ok(struct admin_conn *ac, const char *msg, const char *auth, size_t alen)
{
	const struct config *c = server_config(ac->a->srv);
	const struct http_header *host = headers_find(&ac->head, HDR_HOST);

	if (alen > 0 && !config_admin_host_ok(c, auth, alen))
		return false;
	return host == NULL ||
	    config_admin_host_ok(c, msg + host->value.off, host->value.len);
}

static void
serve(struct admin_conn *ac)
{
	const char *msg = buf_head(&ac->in);
	struct http_head *h = &ac->head;
	bool head_only = h->method_id == HTTP_HEAD;
	bool ka = h->keep_alive;
	const char *path, *auth;
	size_t plen, alen;
	struct sbuf body = { 0 };
	struct server_page page;

	if (!ka)
		ac->closing = true;
	target_split(msg + h->target.off, h->target.len, &path, &plen, &auth, &alen);
	for (size_t i = 0; i < plen; i++)
		if (path[i] == '?') {
			plen = i;
			break;
		}
	if (headers_count(h, HDR_HOST) > 1) {
		static const char b[] = "{\"success\":false,\"error\":{\"code\":\"BAD_REQUEST\","
		    "\"message\":\"more than one Host header\"}}";

		respond(ac, 400, "Bad Request", "application/json", b, sizeof(b) - 1,
		    head_only, false);
		return;
	}
	if (!host_ok(ac, msg, auth, alen)) {
		static const char b[] = "{\"success\":false,\"error\":{\"code\":"
		    "\"MISDIRECTED_REQUEST\",\"message\":\"the admin endpoint does not answer "
		    "for this Host; see listeners.admin.hosts\"}}";

		respond(ac, 421, "Misdirected Request", "application/json", b, sizeof(b) - 1,
		    head_only, ka);
		return;
	}
	if (h->method_id != HTTP_GET && h->method_id != HTTP_HEAD) {
		static const char b[] = "{\"success\":false,\"error\":{\"code\":\"METHOD_NOT_ALLOWED\","
		    "\"message\":\"the admin endpoint answers GET only\"}}";

		respond(ac, 405, "Method Not Allowed", "application/json", b, sizeof(b) - 1,
		    head_only, ka);
		return;
	}
	if (server_admin_page(ac->a->srv, path, plen, &body, &page) != 0) {
		static const char b[] = "{\"success\":false,\"error\":{\"code\":\"NOT_FOUND\","
		    "\"message\":\"no such admin page\"}}";

		respond(ac, 404, "Not Found", "application/json", b, sizeof(b) - 1,
		    head_only, ka);
	} else if (body.oom) {
		static const char b[] = "{\"success\":false,\"error\":{\"code\":"
		    "\"SERVICE_UNAVAILABLE\",\"message\":\"out of memory\"}}";

		respond(ac, 503, "Service Unavailable", "application/json", b, sizeof(b) - 1,
		    head_only, false);
	} else {
		respond(ac, page.status, page.reason, page.content_type, body.p, body.len,
		    head_only, ka);
	}
	sbuf_free(&body);
}

/* The listener's own limits (SPEC §3): an idle connection goes after
 * idle_timeout; a head must complete within header_read_timeout of its
 * first byte, however slowly the rest trickles in. */
static void
arm(struct admin_conn *ac, bool in_head)
{
	const struct conf_listener *l = server_admin_conf(ac->a->srv);
	int64_t ms = in_head ? l->header_read_timeout : l->idle_timeout;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_add(ac->timer, &tv);
}

static void
admin_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *ac = arg;
	static const char b[] = "{\"success\":false,\"error\":{\"code\":\"REQUEST_TIMEOUT\","
	    "\"message\":\"request head not complete in time\"}}";

	(void)fd;
	(void)what;
	/* a peer that does not read its answer in idle_timeout goes */
	if (buf_len(&ac->in) == 0 || ac->closing || ac->blocked) {
		admin_conn_free(ac);
		return;
	}
	respond(ac, 408, "Request Timeout", "application/json", b, sizeof(b) - 1, false, false);
	ac->closing = true;
	if (conn_pending(ac->c) == 0)
		admin_conn_free(ac);
	else {
		conn_pause_read(ac->c);	/* as in admin_serve_heads */
		arm(ac, false);		/* bounds the write */
	}
}

/*
 * Serves the complete heads in ac->in, one at a time: the next waits
 * until the answer before it has left (CONN_DRAINED), with reading
 * paused. Pipelined requests from a peer that never reads its answers
 * would otherwise pile them up in the output without bound (each
 * /metrics tens of KiB for a 40-byte request).
 */
static void
admin_serve_heads(struct admin_conn *ac)
{
	while (!ac->closing && buf_len(&ac->in) > ac->parsed) {
		size_t used;
		enum http_status st;

		if (conn_pending(ac->c) > 0) {
			ac->blocked = true;
			break;
		}
		st = http_parse(&ac->parser, buf_head(&ac->in) + ac->parsed,
		    buf_len(&ac->in) - ac->parsed, ac->parsed, &used);
		ac->parsed += (uint32_t)used;
		if (st == HTTP_NEED_MORE && buf_len(&ac->in) >= ADMIN_BUF_MAX) {
			static const char b[] = "{\"success\":false,\"error\":{\"code\":"
			    "\"HEADERS_TOO_LARGE\",\"message\":\"request head over 16 KiB\"}}";

			respond(ac, 431, "Request Header Fields Too Large", "application/json",
			    b, sizeof(b) - 1, false, false);
			break;
		}
		if (st == HTTP_NEED_MORE)
			break;
		if (st != HTTP_HEAD_DONE || ac->head.chunked || ac->head.content_length > 0) {
			static const char b[] = "{\"success\":false,\"error\":{\"code\":\"BAD_REQUEST\","
			    "\"message\":\"malformed request\"}}";

			respond(ac, 400, "Bad Request", "application/json", b, sizeof(b) - 1,
			    false, false);
			break;
		}
		headers_classify(buf_head(&ac->in), &ac->head);
		serve(ac);
		buf_consume(&ac->in, ac->head.head_len);
		ac->parsed = 0;
		ac->in_head = false;
		http_parser_reset(&ac->parser);
	}
	if (ac->closing && conn_pending(ac->c) == 0) {
		admin_conn_free(ac);
		return;
	}
	if (ac->closing || ac->blocked) {
		/* nothing more is read until the answer has left (or at
		 * all, closing): bytes the peer sends on would fill ac->in,
		 * and a full buffer with the socket still readable would
		 * wake the loop for nothing until the timer */
		conn_pause_read(ac->c);
		arm(ac, false);		/* bounds the write */
		return;
	}
	/* re-armed only when a head begins, not for each byte of it */
	if (buf_len(&ac->in) == 0) {
		arm(ac, false);
	} else if (!ac->in_head) {
		ac->in_head = true;
		arm(ac, true);
	}
}

static void
admin_conn_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct admin_conn *ac = arg;
	ssize_t n;

	(void)c;
	if (ev == CONN_DRAINED) {
		if (ac->closing && conn_pending(ac->c) == 0)
			admin_conn_free(ac);
		else if (ac->blocked && conn_pending(ac->c) == 0) {
			ac->blocked = false;
			conn_resume_read(ac->c);
			admin_serve_heads(ac);
		}
		return;
	}
	if (ev != CONN_READABLE) {
		admin_conn_free(ac);
		return;
	}
	n = conn_read(ac->c, &ac->in, ADMIN_BUF_MAX);
	if (n == CONN_AGAIN)
		return;
	if (n <= 0) {
		admin_conn_free(ac);
		return;
	}
	admin_serve_heads(ac);
}

static void
admin_accept(struct listener *lis, int cfd, const struct sockaddr *peer, socklen_t len)
{
	struct admin *a = lis->arg;
	struct admin_conn *ac = calloc(1, sizeof(*ac));

	(void)peer;
	(void)len;
	if (ac == NULL || (ac->c = conn_new_fd(a->base, cfd, admin_conn_event, ac)) == NULL) {
		free(ac);
		close(cfd);
		return;
	}
	ac->a = a;
	if ((ac->timer = evtimer_new(a->base, admin_timeout, ac)) == NULL) {
		conn_free(ac->c);
		free(ac);
		return;
	}
	http_parser_init(&ac->parser, false, &ac->head);
	ac->next = a->conns;
	if (a->conns)
		a->conns->prev = ac;
	a->conns = ac;
	listener_client_add(lis);
	arm(ac, false);
}

struct admin *
admin_start(struct server *srv, struct event_base *base, int fd)
{
	struct admin *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->srv = srv;
	a->base = base;
	a->lis = listener_start(base, server_admin_conf(srv), fd, admin_accept, a);
	if (a->lis == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

void
admin_reconf(struct admin *a, const struct conf_listener *conf)
{
	a->lis->conf = conf;
	listener_recheck(a->lis);
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	while (a->conns)
		admin_conn_free(a->conns);
	listener_free(a->lis);
	free(a);
}

uint32_t
admin_connections(const struct admin *a)
{
	return a->lis->n_clients;
}
