/*
 * One worker's OTLP/HTTP exporter (see exporter.h): a queue of encoded
 * spans, a timer, and one HTTP/1.1 connection to the collector.
 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "conn.h"
#include "exporter.h"
#include "http1.h"
#include "log.h"
#include "otlp.h"
#include "worker.h"

/* a batch that gets no answer within this is dropped (OTLP's default) */
#define EXPORT_TIMEOUT_MS 10000
/* an answer is a small protobuf or a status message: more than this,
 * heads and body together, is a collector wasting the worker's time */
#define RESPONSE_MAX (1 << 20)
/* of the answer's body, what is read for partial_success: an
 * ExportTraceServiceResponse is a count and a message */
#define RESPONSE_BODY_KEEP (64 << 10)

struct exporter {
	struct worker *w;
	struct event *timer;		/* the batch interval, or the export's timeout */
	struct sbuf q;			/* spans waiting, encoded */
	size_t q_off;			/* bytes of q already sent */
	uint32_t q_n;			/* spans in q past q_off */
	int64_t due_ms;			/* the oldest queued span's batch leaves */
	bool flushing;

	/* the export in flight */
	bool busy;
	uint32_t busy_n;		/* its spans */
	int64_t busy_until_ms;
	struct sbuf body, req;

	/* the connection, and the config it was opened for (a reload may
	 * move the collector) */
	struct conn *c;
	struct config *cconf;
	uint32_t moves;			/* the collector's, when C was opened */
	bool connected;
	struct buf in;
	uint32_t parsed;		/* head bytes given to the parser */
	uint32_t msg_off;		/* bytes of the response consumed */
	size_t got;			/* bytes read for the export in flight */
	bool head_done;
	int status;
	bool keep_alive;
	bool pb_body;			/* the answer is a protobuf message */
	struct sbuf body_in;		/* its body (up to RESPONSE_BODY_KEEP) */
	struct http_parser parser;
	struct http_head head;

	_Atomic bool idle;
};

static void exporter_arm(struct exporter *e);

static const struct conf_tracing *
tconf(const struct exporter *e)
{
	return &e->w->gen->conf->tracing;
}

static void
update_idle(struct exporter *e)
{
	atomic_store_explicit(&e->idle, e->q_n == 0 && !e->busy, memory_order_release);
}

static void
conn_close(struct exporter *e)
{
	conn_free(e->c);
	e->c = NULL;
	config_unref(e->cconf);
	e->cconf = NULL;
	e->connected = false;
	buf_free(&e->in);
	http_parser_reset(&e->parser);
	e->parsed = 0;
	e->msg_off = 0;
	e->head_done = false;
	e->got = 0;
	sbuf_clear(&e->body_in);
}

/* The export in flight is over: OK when the collector took it, all but
 * REJECTED of its spans. */
static void
export_done(struct exporter *e, bool ok, uint64_t rejected, const char *why)
{
	static struct log_limit limit, limit_rejected;

	if (ok) {
		if (rejected > e->busy_n)
			rejected = e->busy_n;
		metrics_spans_exported(e->w->ms, e->busy_n - rejected);
		if (rejected > 0) {
			metrics_spans_dropped(e->w->ms, SPAN_DROP_EXPORT_FAILED, rejected);
			log_limited(&limit_rejected, LOG_WARN, "tracing export: the collector "
			    "rejected spans=%llu of %u (partial_success)",
			    (unsigned long long)rejected, e->busy_n);
		}
	} else {
		metrics_spans_dropped(e->w->ms, SPAN_DROP_EXPORT_FAILED, e->busy_n);
		log_limited(&limit, LOG_WARN, "tracing export failed spans=%u cause=\"%s\"",
		    e->busy_n, why);
	}
	e->busy = false;
	e->busy_n = 0;
	sbuf_clear(&e->req);
	update_idle(e);
	exporter_arm(e);
}

static void
export_failed(struct exporter *e, const char *why)
{
	char buf[160];

	/* WHY may live in the conn */
	snprintf(buf, sizeof(buf), "%s", why);
	conn_close(e);
	export_done(e, false, 0, buf);
}

static void
response_done(struct exporter *e)
{
	char why[64];
	int status = e->status;
	uint64_t rejected = 0;

	/* OTLP/HTTP: a collector that took part of a batch answers 200 and
	 * says in partial_success how many spans it rejected; those are not
	 * exported (SPEC §13: exported is what the collector accepted) */
	if (status >= 200 && status <= 299 && e->pb_body && e->body_in.len > 0 &&
	    e->body_in.len <= RESPONSE_BODY_KEEP && !e->body_in.oom &&
	    !otlp_response_rejected(e->body_in.p, e->body_in.len, &rejected))
		rejected = 0;
	sbuf_clear(&e->body_in);

	if (!e->keep_alive)
		conn_close(e);
	else {
		buf_consume(&e->in, buf_len(&e->in));
		http_parser_reset(&e->parser);
		e->parsed = 0;
		e->msg_off = 0;
		e->head_done = false;
		e->got = 0;
	}
	snprintf(why, sizeof(why), "collector answered %d", status);
	export_done(e, status >= 200 && status <= 299, rejected, why);
}

/* Whether the head says content-type: application/x-protobuf (what an
 * OTLP/HTTP collector answers a protobuf request with). */
static bool
content_type_pb(const char *msg, const struct http_head *h)
{
	static const char want[] = "application/x-protobuf";

	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (slice_eq_ci(msg, hd->name, "content-type"))
			return hd->value.len >= sizeof(want) - 1 &&
			    strncasecmp(msg + hd->value.off, want, sizeof(want) - 1) == 0 &&
			    (hd->value.len == sizeof(want) - 1 ||
			    msg[hd->value.off + sizeof(want) - 1] == ';' ||
			    msg[hd->value.off + sizeof(want) - 1] == ' ');
	}
	return false;
}

/* The answer's body, dechunked, for partial_success: kept up to one
 * byte past RESPONSE_BODY_KEEP (a body that long is not read). */
static void
body_data(void *arg, const char *p, size_t n)
{
	struct exporter *e = arg;
	size_t room;

	if (e->body_in.len > RESPONSE_BODY_KEEP)
		return;
	room = RESPONSE_BODY_KEEP + 1 - e->body_in.len;
	sbuf_add(&e->body_in, p, n < room ? n : room);
}

/* Parses what arrived; false once the exchange ended (conn may be gone). */
static bool
parse_response(struct exporter *e)
{
	while (buf_len(&e->in) > e->parsed) {
		size_t used;
		enum http_status st;

		if (!e->head_done) {
			/* the head's slices point into the buffer: keep it */
			st = http_parse(&e->parser, buf_head(&e->in) + e->parsed,
			    buf_len(&e->in) - e->parsed, e->parsed, &used);
			e->parsed += (uint32_t)used;
			if (st == HTTP_NEED_MORE)
				return true;
			if (st == HTTP_ERROR) {
				export_failed(e, "malformed response");
				return false;
			}
			e->status = e->head.status;
			e->keep_alive = e->head.keep_alive;
			/* the message starts at the buffer's head */
			e->pb_body = content_type_pb(buf_head(&e->in), &e->head);
			buf_consume(&e->in, e->parsed);
			e->msg_off = e->parsed;
			e->parsed = 0;
			if (e->status >= 100 && e->status < 200) {
				http_parser_reset(&e->parser);	/* the final head follows */
				e->msg_off = 0;
				continue;
			}
			e->head_done = true;
			/* the body, dechunked, goes to body_in (body_data) */
			e->parser.dechunk = true;
			sbuf_clear(&e->body_in);
			/* nothing follows such a head: done without more input */
			if (st == HTTP_MSG_DONE || e->status == 204 || e->status == 304 ||
			    (e->head.has_length && e->head.content_length == 0)) {
				response_done(e);
				return false;
			}
			continue;
		}
		/* past the head: body_data keeps the start of the body */
		st = http_parse(&e->parser, buf_head(&e->in), buf_len(&e->in), e->msg_off, &used);
		if (st == HTTP_ERROR) {
			export_failed(e, "malformed response");
			return false;
		}
		buf_consume(&e->in, used);
		e->msg_off += (uint32_t)used;
		if (st == HTTP_MSG_DONE) {
			response_done(e);
			return false;
		}
		if (st == HTTP_NEED_MORE)
			return true;
	}
	return true;
}

static void
on_readable(struct exporter *e)
{
	ssize_t n;

	while ((n = conn_read(e->c, &e->in, RESPONSE_MAX)) > 0) {
		if (!e->busy) {
			/* nothing asked: a collector talking out of turn */
			conn_close(e);
			return;
		}
		/* without this, an endless body or endless 1xx heads would
		 * hold the worker in this loop until the export timeout */
		if ((e->got += (size_t)n) > RESPONSE_MAX) {
			export_failed(e, "answer over 1 MiB");
			return;
		}
		if (!parse_response(e))
			return;
	}
	if (n == CONN_AGAIN)
		return;
	if (!e->busy) {
		conn_close(e);		/* the idle connection went */
		return;
	}
	if (n == 0 && e->head_done && http_parser_body_until_eof(&e->parser) &&
	    http_parse_eof(&e->parser) == HTTP_MSG_DONE) {
		e->keep_alive = false;
		response_done(e);
		return;
	}
	export_failed(e, n < 0 ? conn_error_text(e->c) :
	    "connection closed before the response");
}

static void
send_request(struct exporter *e)
{
	if (conn_write(e->c, e->req.p, e->req.len) != 0)
		export_failed(e, conn_error_text(e->c));
}

static void
on_conn(struct conn *c, enum conn_event ev, void *arg)
{
	struct exporter *e = arg;

	(void)c;
	switch (ev) {
	case CONN_CONNECTED:
		e->connected = true;
		if (e->busy)
			send_request(e);
		break;
	case CONN_FAILED:
		if (e->busy)
			export_failed(e, conn_error_text(e->c));
		else
			conn_close(e);
		break;
	case CONN_READABLE:
		on_readable(e);
		break;
	case CONN_DRAINED:
		break;
	}
}

/* The byte length of the first N encoded spans at P (each a tag, a
 * varint length and the Span). */
static size_t
spans_bytes(const char *p, size_t len, uint32_t n)
{
	size_t off = 0;

	while (n-- > 0 && off < len) {
		uint64_t v = 0;
		int shift = 0;

		off++;					/* the tag */
		while (off < len) {
			uint8_t b = (uint8_t)p[off++];

			v |= (uint64_t)(b & 0x7f) << shift;
			shift += 7;
			if (!(b & 0x80))
				break;
		}
		off += v;
	}
	return off > len ? len : off;
}

/* The queue lets go of the spans now sent. A queue that never empties
 * (spans arriving as fast as they leave) would otherwise keep every span
 * it ever held; moving the rest down once the sent part is at least as
 * long keeps it under twice what waits, and each byte moves about once. */
static void
queue_compact(struct exporter *e)
{
	size_t rest = e->q.len - e->q_off;

	if (e->q_off < rest)
		return;
	memmove(e->q.p, e->q.p + e->q_off, rest);
	e->q.len = rest;
	e->q_off = 0;
}

static bool
is_ip(const char *host)
{
	unsigned char tmp[16];

	return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

static void
export_start(struct exporter *e)
{
	const struct conf_tracing *t = tconf(e);
	uint32_t n = e->q_n < t->batch_max_spans ? e->q_n : t->batch_max_spans;
	size_t bytes = spans_bytes(e->q.p + e->q_off, e->q.len - e->q_off, n);
	const char *sni;
	struct sockaddr_storage sa;
	socklen_t salen;
	uint32_t moves;

	if (!t->enabled) {
		/* a reload turned tracing off: what waits has nowhere to go,
		 * all of it at once (batch_max_spans is 0 now: a batch of
		 * none would be due again at once, and the loop would spin) */
		log_info("tracing was turned off by a reload: %u queued spans dropped",
		    e->q_n);
		metrics_spans_dropped(e->w->ms, SPAN_DROP_EXPORT_FAILED, e->q_n);
		sbuf_clear(&e->q);
		e->q_off = 0;
		e->q_n = 0;
		if (e->c != NULL)
			conn_close(e);	/* it holds the old config */
		update_idle(e);
		exporter_arm(e);
		return;
	}
	sbuf_clear(&e->body);
	sbuf_clear(&e->req);
	otlp_request(&e->body, t->service_name, FERRY_VERSION, e->q.p + e->q_off, bytes);
	e->q_off += bytes;
	e->q_n -= n;
	if (e->q_n == 0 || e->q_off == e->q.len) {
		sbuf_clear(&e->q);
		e->q_off = 0;
		e->q_n = 0;
	} else {
		queue_compact(e);
		e->due_ms = clock_now_ms();	/* the rest is due too */
	}
	e->busy = true;
	e->busy_n = n;
	e->busy_until_ms = clock_now_ms() + EXPORT_TIMEOUT_MS;
	update_idle(e);
	if (t->addr == NULL || !collector_addr_get(t->addr, &sa, &salen, &moves)) {
		export_done(e, false, 0, "the collector's name is not resolved");
		return;
	}
	sbuf_adds(&e->req, "POST ");
	sbuf_adds(&e->req, t->path);
	sbuf_adds(&e->req, " HTTP/1.1\r\nhost: ");
	sbuf_adds(&e->req, t->authority);
	sbuf_adds(&e->req, "\r\nuser-agent: ferry/" FERRY_VERSION
	    "\r\ncontent-type: application/x-protobuf\r\ncontent-length: ");
	sbuf_addu(&e->req, e->body.len);
	sbuf_adds(&e->req, "\r\n\r\n");
	sbuf_add(&e->req, e->body.p, e->body.len);
	if (e->req.oom || e->body.oom) {
		export_done(e, false, 0, "out of memory");
		return;
	}
	/* a reload, or DNS, may have moved the collector */
	if (e->c != NULL && (e->cconf != e->w->gen->conf || e->moves != moves))
		conn_close(e);
	if (e->c == NULL) {
		sni = t->tls.server_name ? t->tls.server_name : t->host;
		e->c = conn_connect(e->w->base, (const struct sockaddr *)&sa, salen,
		    t->https ? t->tls.ctx : NULL, is_ip(sni) ? NULL : sni,
		    sni, t->tls.verify_san, NULL, on_conn, e);
		if (e->c == NULL) {
			export_done(e, false, 0, "cannot open a socket");
			return;
		}
		e->cconf = config_ref(e->w->gen->conf);
		e->moves = moves;
		e->connected = false;
		exporter_arm(e);
		return;
	}
	exporter_arm(e);
	if (e->connected)
		send_request(e);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct exporter *e = arg;
	int64_t now = clock_now_ms();

	(void)fd;
	(void)what;
	if (e->busy) {
		if (now >= e->busy_until_ms)
			export_failed(e, "no answer within 10s");
		else
			exporter_arm(e);
		return;
	}
	if (e->q_n > 0 && (e->flushing || now >= e->due_ms ||
	    e->q_n >= tconf(e)->batch_max_spans)) {
		export_start(e);
		return;
	}
	exporter_arm(e);
}

static void
exporter_arm(struct exporter *e)
{
	int64_t now = clock_now_ms();

	if (e->busy)
		timer_at(e->timer, e->busy_until_ms, now);
	else if (e->q_n > 0)
		timer_at(e->timer, e->flushing || e->q_n >= tconf(e)->batch_max_spans ?
		    now : e->due_ms, now);
	else
		event_del(e->timer);
}

struct exporter *
exporter_new(struct worker *w)
{
	struct exporter *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->w = w;
	if ((e->timer = evtimer_new(w->base, on_timer, e)) == NULL) {
		free(e);
		return NULL;
	}
	http_parser_init(&e->parser, true, &e->head);
	e->parser.on_data = body_data;
	e->parser.arg = e;
	atomic_init(&e->idle, true);
	return e;
}

void
exporter_free(struct exporter *e)
{
	if (e == NULL)
		return;
	if (e->q_n + e->busy_n > 0)
		metrics_spans_dropped(e->w->ms, SPAN_DROP_SHUTDOWN, e->q_n + e->busy_n);
	if (e->c)
		conn_close(e);
	event_free(e->timer);
	http_parser_free(&e->parser);
	sbuf_free(&e->q);
	sbuf_free(&e->body);
	sbuf_free(&e->req);
	sbuf_free(&e->body_in);
	free(e);
}

void
exporter_push(struct exporter *e, const struct otlp_span *s)
{
	const struct conf_tracing *t;
	uint32_t cap, n_workers;
	size_t len;

	if (e == NULL)
		return;
	t = tconf(e);
	if (!t->enabled) {
		/* a request traced before a reload turned tracing off: its
		 * span has nowhere to go, as those queued then (export_batch) */
		metrics_spans_dropped(e->w->ms, SPAN_DROP_EXPORT_FAILED, 1);
		return;
	}
	n_workers = e->w->n_siblings ? e->w->n_siblings : 1;
	/* max_queue is the process's: each worker holds its share */
	cap = (t->max_queue + n_workers - 1) / n_workers;
	if (e->q_n >= cap) {
		metrics_spans_dropped(e->w->ms, SPAN_DROP_QUEUE_FULL, 1);
		return;
	}
	len = e->q.len;
	otlp_span(&e->q, s);
	if (e->q.oom) {
		e->q.len = len;
		e->q.oom = false;
		metrics_spans_dropped(e->w->ms, SPAN_DROP_QUEUE_FULL, 1);
		return;
	}
	if (e->q_n++ == 0) {
		e->due_ms = clock_now_ms() + t->batch_interval;
		update_idle(e);
		if (!e->busy)
			exporter_arm(e);
	} else if (e->q_n == t->batch_max_spans && !e->busy) {
		exporter_arm(e);	/* a full batch leaves on the next turn */
	}
}

void
exporter_flush(struct exporter *e)
{
	if (e == NULL)
		return;
	e->flushing = true;
	if (!e->busy)
		exporter_arm(e);
}

bool
exporter_idle(const struct exporter *e)
{
	return e == NULL || atomic_load_explicit(&e->idle, memory_order_acquire);
}
