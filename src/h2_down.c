/*
 * The HTTP/2 downstream codec. nghttp2 does the framing, HPACK and flow
 * control; this file turns each stream into an exchange (exchange.h) and
 * carries its bytes, with memory bounded per stream by the windows ferry
 * grants: request body is granted back only once the upstream took it,
 * and the response is read from the upstream only while the stream's
 * queue is short. A peer that floods control frames, resets streams as
 * fast as it opens them, or never opens its window gets GOAWAY
 * ENHANCE_YOUR_CALM; other connections never notice.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "clock.h"
#include "exchange.h"
#include "h2_down.h"
#include "h2_frames.h"
#include "h2_mem.h"
#include "tls_ctx.h"
#include "listener.h"
#include "log.h"

#define H2_MAX_STREAMS		128
#define H2_STREAM_WINDOW	(256 * 1024)
#define H2_CONN_WINDOW		(1024 * 1024)
/* A stream's queued response: the upstream is read while the queue is
 * within what the peer's windows let leave now, never above HIGH and
 * always up to FLOOR, so a stream the peer does not read holds little */
#define H2_OUT_HIGH		(256 * 1024)
#define H2_OUT_FLOOR		(16 * 1024)
#define H2_OUT_MAX		(4 * 1024 * 1024)	/* never more, whatever comes */
#define H2_IN_MAX		(H2_STREAM_WINDOW + 16384)
#define H2_MAX_CONTINUATIONS	6	/* per header block: a head at the hard cap
					   (http1.h) in 16 KiB frames needs 4,
					   and nghttp2 itself stops at 8 */
/* Twice what a header block's names and values can decode to without
 * the HPACK table (HEADERS and its CONTINUATIONs of 16 KiB, the default
 * frame size ferry keeps; Huffman's shortest code, 5 bits, makes 8 bytes
 * of 5): only fields taken from the table go past it */
#define H2_BLOCK_DECODED_MAX	(2 * (1 + H2_MAX_CONTINUATIONS) * 16384 * 8 / 5)
#define H2_CONTROL_PER_SEC	200	/* PING and SETTINGS frames */
#define H2_RESET_ALLOWANCE	200	/* resets beyond twice the completed streams */
#define H2_GOAWAY_DELAY_MS	500	/* between the notice and the real GOAWAY */
#define H2_READ_MAX		(64 * 1024)

struct h2conn;

struct h2stream {
	struct exchange x;
	struct h2conn *hc;
	int32_t id;
	struct h2stream *next, *prev;	/* the connection's streams */
	struct generation *gen;
	struct sbuf raw;		/* the request head: method, path, fields */
	struct slice method, path, authority;
	/* the head as the HTTP/1.1 head it becomes, counted as http1.c
	 * counts one (http1.h): its bytes and fields, ferry's own kinds' */
	uint32_t head_bytes, fields, own_bytes, own_fields;
	bool too_large;
	bool chunked;			/* the upstream gets it chunked */
	bool in_end;			/* END_STREAM from the client */
	struct buf in;			/* body not yet taken upstream */
	uint64_t body_bytes;		/* of the request, as it came */
	struct buf out;			/* response body for the peer's window */
	bool out_eof;
	bool has_body;			/* a data provider was submitted */
	bool held;			/* OUT went over stream_mark(): upstream paused */
	bool answered;			/* the whole response is with nghttp2 */
	bool pumping;			/* stream_pump is on the stack */
	bool pump_again;		/* it was asked for meanwhile */
	struct sbuf trailers;		/* "name: value\r\n" lines, sent after the body */
	struct sbuf req_trailers;	/* the client's, the same way, for the last chunk */
	uint32_t trailer_fields;	/* with the head's, within the head limits */
	bool trailers_too_large;
	struct sbuf cookies;		/* cookie crumbs, joined for HTTP/1.1 */
	bool closed;			/* nghttp2 is done with it */
	bool freed;
	struct deferred reap;		/* frees it after this turn's callbacks */
	struct http_head head;		/* last: h2_stream_alloc() */
};
_Static_assert(offsetof(struct h2stream, head) + sizeof(struct http_head) ==
    sizeof(struct h2stream), "the head table is last");

#define ENDED_IDS		128

struct h2conn {
	struct worker *w;
	struct listener *lis;
	struct conn *c;
	nghttp2_session *ng;
	struct buf in;
	struct sbuf hbuf;		/* heads being converted */
	struct sbuf frame;		/* a chunk framed for an HTTP/1 upstream */
	struct h2stream *streams;	/* until nghttp2 and the exchange are done */
	int depth;			/* inside nghttp2: no send, no close */
	struct deferred flush;		/* h2_flush(): at the end of the turn */
	bool closed;
	bool calm;			/* told ENHANCE_YOUR_CALM */
	bool draining;
	bool goaway_final;
	bool doomed;			/* close at the next timer */
	/* END_DONE, or why ferry itself ends the connection: the streams it
	 * still has end with this cause (h2_close), not with how the socket
	 * went after */
	enum end_cause cut_cause;
	struct event *timer;
	int64_t idle_since_ms;
	int64_t goaway_at_ms;
	/* a header block of BLOCK_STREAM's began then and is not complete
	 * (0: none). Until it is, nothing else can come on the connection
	 * (RFC 9113 6.10), and no exchange runs a timer for it. */
	int64_t block_since_ms;
	int32_t block_stream;
	/* BLOCK_STREAM's stream, for the block's fields without a lookup
	 * each; NULL once freed (stream_maybe_free) */
	struct h2stream *block_st;
	uint32_t continuations;
	size_t block_bytes;		/* its names and values decoded so far */
	bool told;			/* ferry failed a callback, its reason logged */
	uint32_t control;
	int64_t control_since_ms;
	uint32_t resets;
	uint32_t completed;
	uint32_t heads;			/* sent: h2_seed_due() */
	/* which of the last ENDED_IDS client streams ended with the client's
	 * side closed, by id / 2 modulo ENDED_IDS, up to ENDED_TOP: ended_is */
	uint32_t ended_top;
	uint64_t ended[ENDED_IDS / 64];
	struct h2conn *next, *prev;	/* the worker's */
	char peer[INET6_ADDRSTRLEN + 8];
	char peer_id[PEER_ID_MAX];
	bool has_identity;
};

static void h2_flush(struct h2conn *hc);
static void h2_arm(struct h2conn *hc);
static void stream_pump(struct h2stream *st);
static void stream_pump_once(struct h2stream *st);

static struct h2stream *
stream_of(const struct exchange *x)
{
	return (struct h2stream *)((char *)x - offsetof(struct h2stream, x));
}

/* -------------------------------------------------------- streams ---- */

static void
stream_free_deferred(struct deferred *d)
{
	struct h2stream *st = (struct h2stream *)((char *)d - offsetof(struct h2stream, reap));

	sbuf_free(&st->raw);
	sbuf_free(&st->cookies);
	sbuf_free(&st->trailers);
	sbuf_free(&st->req_trailers);
	buf_free(&st->in);
	buf_free(&st->out);
	http_head_release(&st->head);
	proxy_exchange_free(&st->x);
	gen_unref(st->x.w, st->gen);
	h2_stream_free(st, sizeof(*st));
}

/* Frees ST once nghttp2 and the exchange are both done with it. */
static void
stream_maybe_free(struct h2stream *st)
{
	struct h2conn *hc = st->hc;

	if (st->freed || !st->closed || st->x.live)
		return;
	st->freed = true;
	if (st->prev)
		st->prev->next = st->next;
	else
		hc->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	if (hc->streams == NULL)
		hc->idle_since_ms = clock_now_ms();
	if (hc->block_st == st)
		hc->block_st = NULL;
	if (!hc->closed) {
		nghttp2_session_set_stream_user_data(hc->ng, st->id, NULL);
		h2_arm(hc);
	}
	/* callers up the stack may still look at it; a deferred run, not an
	 * event_base_once, as a connection frees streams by the dozen */
	st->reap.run = stream_free_deferred;
	worker_defer(st->x.w, &st->reap);
}

/* ----------------------------------------------------------- heads ---- */

static uint8_t
method_id(const char *m, size_t n)
{
	static const struct { const char *name; uint8_t id; } methods[] = {
		{ "GET", HTTP_GET }, { "HEAD", HTTP_HEAD }, { "POST", HTTP_POST },
		{ "PUT", HTTP_PUT }, { "DELETE", HTTP_DELETE }, { "OPTIONS", HTTP_OPTIONS },
		{ "TRACE", HTTP_TRACE }, { "CONNECT", HTTP_CONNECT }, { "PATCH", HTTP_PATCH },
	};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strlen(methods[i].name) == n && memcmp(methods[i].name, m, n) == 0)
			return methods[i].id;
	return UINT8_MAX;	/* another method: neither idempotent nor special */
}

static struct slice
raw_add(struct sbuf *raw, const void *p, size_t n)
{
	struct slice s = { (uint32_t)raw->len, (uint32_t)n };

	sbuf_add(raw, p, n);
	return s;
}

/* A field of the head, of KIND (OWN: one ferry writes itself); the
 * limits were counted as it came (on_header), and the table has room for
 * them and for the transfer-encoding of stream_request. */
static struct http_header *
head_add(struct h2stream *st, const char *name, size_t nlen, const char *value, size_t vlen,
    enum hdr_kind kind, bool own)
{
	struct http_head *h = &st->head;
	struct http_header *hd;

	if (h->n_headers >= HTTP_HEAD_SLOTS) {
		st->too_large = true;	/* not reached: the limits come first */
		return NULL;
	}
	if ((hd = http_head_add(h)) == NULL) {
		st->raw.oom = true;	/* failed as the head's text would */
		return NULL;
	}
	hd->name = raw_add(&st->raw, name, nlen);
	hd->value = raw_add(&st->raw, value, vlen);
	hd->kind = kind;
	hd->own = own;
	return hd;
}

/* A field of the request head or its trailers, counted: BYTES toward the
 * head, a field when FIELD, ferry's own kind when OWN. False once over
 * the limits. */
static bool
head_count(struct h2stream *st, uint32_t bytes, bool field, bool own)
{
	st->head_bytes += bytes;
	st->fields += field;
	if (own) {
		st->own_bytes += bytes;
		st->own_fields += field;
	}
	return http_within_limits(st->fields + st->trailer_fields, st->own_fields,
	    st->head_bytes, st->head_bytes - st->own_bytes);
}

/* The HTTP/1 head text ferry built (headers_build_response, ferror_build)
 * as HTTP/2 fields, ":status" from the status line. */
static size_t
head_to_nv(char *text, size_t len, nghttp2_nv *nv, size_t max, bool seed)
{
	char *eol = h2_line_end(text, text + len);

	if (eol == NULL || eol - text < 12)
		return 0;
	nv[0] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)text + 9, 7, 3,
	    NGHTTP2_NV_FLAG_NONE };
	return h2_lines_to_nv(eol + 2, text + len, nv, 1, max, seed);
}

/* ---------------------------------------------------------- bodies ---- */

/* How much of the response the stream may queue, SENDING bytes of it
 * about to leave: what the stream's and the connection's windows let go
 * now, within FLOOR and HIGH. Held to the window, a peer that opens
 * many streams and never reads them ties up a FLOOR each, not a HIGH. */
static size_t
stream_mark(const struct h2stream *st, size_t sending)
{
	nghttp2_session *ng = st->hc->ng;
	int32_t sw = nghttp2_session_get_stream_remote_window_size(ng, st->id);
	int32_t cw = nghttp2_session_get_remote_window_size(ng);
	int64_t room = (sw < cw ? sw : cw) - (int64_t)sending;

	if (st->hc->closed || room <= H2_OUT_FLOOR)
		return H2_OUT_FLOOR;
	return room >= H2_OUT_HIGH ? H2_OUT_HIGH : (size_t)room;
}

static ssize_t
read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2stream *st = src->ptr;
	size_t n = buf_len(&st->out);

	(void)arg;
	if (n > length)
		n = length;
	if (n > 0) {
		memcpy(buf, buf_head(&st->out), n);
		buf_consume(&st->out, n);
		/* handed on, as the connection had room: stream_idle's
		 * activity (what it holds leaving counts too: h2_progress) */
		st->x.last_io_ms = clock_now_ms();
	}
	if (buf_len(&st->out) == 0) {
		buf_shrink_if_empty(&st->out);
		if (st->out_eof) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			if (st->trailers.len > 0) {
				nghttp2_nv nv[HTTP_MAX_FIELDS];
				size_t k = h2_lines_to_nv(st->trailers.p, st->trailers.p + st->trailers.len,
				    nv, 0, HTTP_MAX_FIELDS, false);

				/* the trailers end the stream instead */
				if (k > 0 && nghttp2_submit_trailer(ng, id, nv, k) == 0)
					*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			}
		} else if (n == 0) {
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	/* the queue fell under the mark (the window opened, or it left):
	 * read more of the response */
	if (st->held && buf_len(&st->out) <= stream_mark(st, n)) {
		st->held = false;
		if (st->x.live)
			proxy_client_drained(&st->x);
	}
	return (ssize_t)n;
}

static bool
stream_queue(struct h2stream *st, const void *p, size_t n)
{
	if (!buf_append(&st->out, p, n, H2_OUT_MAX)) {
		proxy_end(&st->x, END_OUT_OF_MEMORY);
		return false;
	}
	st->x.bytes_out += n;
	/* the upstream sees h2_congested() and pauses; read_body resumes */
	if (buf_len(&st->out) > H2_OUT_FLOOR && buf_len(&st->out) > stream_mark(st, 0))
		st->held = true;
	if (st->has_body)
		nghttp2_session_resume_data(st->hc->ng, st->id);
	return true;
}

static bool
submit(struct h2stream *st, char *text, size_t len, bool body, bool lend)
{
	nghttp2_nv nv[H2_MAX_NV];
	nghttp2_data_provider dp = { .source.ptr = st, .read_callback = read_body };
	size_t n = head_to_nv(text, len, nv, sizeof(nv) / sizeof(nv[0]),
	    h2_seed_due(&st->hc->heads));

	if (lend)
		h2_lend_fields(nv, n);
	st->has_body = body;
	st->answered = !body;
	if (n == 0 || nghttp2_submit_response(st->hc->ng, st->id, nv, n, body ? &dp : NULL) != 0) {
		proxy_end(&st->x, END_OUT_OF_MEMORY);
		return false;
	}
	return true;
}

/* ------------------------------------------------------------- ops ---- */

static bool
h2_send_continue(struct exchange *x)
{
	struct h2stream *st = stream_of(x);
	const nghttp2_nv nv = { (uint8_t *)":status", (uint8_t *)"100", 7, 3,
	    NGHTTP2_NV_FLAG_NONE };

	nghttp2_submit_headers(st->hc->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
	h2_flush(st->hc);
	return true;
}

static bool
h2_send_interim(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct h2stream *st = stream_of(x);
	struct sbuf *t = &st->hc->hbuf;
	nghttp2_nv nv[H2_MAX_NV];
	size_t n;

	sbuf_clear(t);
	headers_build_response(t, msg, h, &(struct downstream_head_args){ .interim = true });
	if (!t->oom && (n = head_to_nv(t->p, t->len, nv, sizeof(nv) / sizeof(nv[0]), false)) > 0)
		nghttp2_submit_headers(st->hc->ng, NGHTTP2_FLAG_NONE, st->id, NULL, nv, n, NULL);
	h2_flush(st->hc);
	return true;
}

static bool
h2_send_head(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct h2stream *st = stream_of(x);
	/* after the request's fields, which are all in (only a request's
	 * header block adds to RAW): the head's text stays there, unmoved,
	 * until the stream is freed, after nghttp2 closed it. So nghttp2
	 * packs the fields from it (h2_lend_fields), and a HEADERS still
	 * queued when the stream closed is dropped unread. */
	struct sbuf *t = &st->raw;
	size_t at = t->len;
	bool body = !(x->head_method || h->status == 204 || h->status == 304 || x->head_ends);
	struct downstream_head_args a = {
		.ids = &x->ids, .keep_alive = true, .keep_alive_timeout = 1,
		.dechunk = x->dechunk,
	};
	bool fits;

	proxy_response_rules(x, a.rules);
	a.coding = proxy_response_coding(x);
	fits = headers_build_response(t, msg, h, &a);
	if (t->oom) {
		proxy_end(x, END_OUT_OF_MEMORY);
		return false;
	}
	if (!fits) {
		t->len = at;
		proxy_response_over_limit(x);
		return false;
	}
	if (!submit(st, t->p + at, t->len - at, body, true))
		return false;
	h2_flush(st->hc);
	return true;
}

static bool
h2_send_data(struct exchange *x, const void *p, size_t n)
{
	struct h2stream *st = stream_of(x);

	if (n && !stream_queue(st, p, n))
		return false;
	h2_flush(st->hc);
	return true;
}

static bool
h2_send_last(struct exchange *x, const void *p, size_t n)
{
	struct h2stream *st = stream_of(x);

	/* counted with its last bytes, before they can reach the client */
	x->bytes_out += n;
	proxy_account(x, END_DONE);
	x->bytes_out -= n;
	if (!stream_queue(st, p, n))
		return false;
	st->out_eof = true;
	st->answered = true;
	if (st->has_body)
		nghttp2_session_resume_data(st->hc->ng, st->id);
	h2_flush(st->hc);
	return true;
}

static void
h2_send_error(struct exchange *x, enum ferry_error e, const char *msg,
    unsigned retry_after, bool close)
{
	struct h2stream *st = stream_of(x);
	struct sbuf *t = &st->hc->hbuf;
	char *body;
	size_t head_len;

	(void)close;	/* a stream ends alone */
	sbuf_clear(t);
	proxy_error_response(x, t, e, msg, retry_after, true, 1);
	if (t->oom || (body = memmem(t->p, t->len, "\r\n\r\n", 4)) == NULL) {
		proxy_end(x, END_OUT_OF_MEMORY);
		return;
	}
	head_len = (size_t)(body - t->p) + 2;
	body += 4;
	/* the gRPC form is trailers-only: its head ends the stream */
	if (!submit(st, t->p, head_len, !x->head_method && !x->grpc, false))
		return;
	h2_send_last(x, body, (size_t)(t->p + t->len - body));
}

static bool
h2_congested(const struct exchange *x)
{
	const struct h2stream *st = stream_of(x);

	return st->hc->closed || st->held || conn_pending(st->hc->c) > CONN_HIGH_MARK;
}

static void
h2_resume_body(struct exchange *x)
{
	struct h2stream *st = stream_of(x);

	stream_pump(st);
	h2_flush(st->hc);
}

static void
h2_send_trailers(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct h2stream *st = stream_of(x);

	sbuf_clear(&st->trailers);
	for (uint32_t i = 0; i < h->n_headers; i++) {
		/* what names framing, a hop or ferry's own has no place here */
		if (!headers_trailer_allowed(msg + h->h[i].name.off, h->h[i].name.len))
			continue;
		sbuf_add(&st->trailers, msg + h->h[i].name.off, h->h[i].name.len);
		sbuf_add(&st->trailers, ": ", 2);
		sbuf_add(&st->trailers, msg + h->h[i].value.off, h->h[i].value.len);
		sbuf_add(&st->trailers, "\r\n", 2);
	}
}

static bool
h2_tunnel_start(struct exchange *x)
{
	/* HTTP/2 requests never ask for an upgrade (h->upgrade stays false) */
	proxy_end(x, END_CLIENT_CLOSED);
	return false;
}

/* Why ferry ends the connection, for the streams it still has (h2_close):
 * the first reason stands, not one that came of it. */
static void
h2_cut_for(struct h2conn *hc, enum end_cause cause)
{
	if (hc->cut_cause == END_DONE)
		hc->cut_cause = cause;
}

/* Tells the peer to calm down: GOAWAY ENHANCE_YOUR_CALM, then close. */
static void
h2_calm(struct h2conn *hc, const char *why)
{
	static struct log_limit limit;

	if (hc->calm || hc->closed)
		return;
	hc->calm = true;
	log_limited(&limit, LOG_WARN, "HTTP/2 peer %s: %s; GOAWAY ENHANCE_YOUR_CALM",
	    hc->peer, why);
	/* now, not when the GOAWAY leaves: a client that does not read may
	 * keep it queued until the connection goes */
	h2_cut_for(hc, END_CLIENT_PROTOCOL_ERROR);
	nghttp2_session_terminate_session(hc->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

static void h2_doom(struct h2conn *hc);

static void
h2_finish(struct exchange *x, enum end_cause cause)
{
	struct h2stream *st = stream_of(x);
	struct h2conn *hc = st->hc;

	if (cause == END_DONE)
		hc->completed++;
	if (!hc->closed && !st->closed && cause != END_DONE) {
		/* a peer that never opened its window held the stream */
		if (cause == END_STREAM_IDLE && buf_len(&st->out) > 0 &&
		    (nghttp2_session_get_stream_remote_window_size(hc->ng, st->id) <= 0 ||
		    nghttp2_session_get_remote_window_size(hc->ng) <= 0))
			h2_calm(hc, "flow-control window never opened");
		/* without memory for the RST_STREAM the client would wait on
		 * the stream for good: the connection goes instead */
		if (nghttp2_submit_rst_stream(hc->ng, NGHTTP2_FLAG_NONE, st->id,
		    cause == END_STREAM_IDLE || cause == END_SHUTDOWN ? NGHTTP2_CANCEL :
		    NGHTTP2_INTERNAL_ERROR) != 0)
			h2_doom(hc);
	}
	stream_maybe_free(st);
	h2_flush(hc);
}

/* The client took bytes of the connection: this stream's too when its
 * response waits for the connection, not for its own window, as its
 * bytes are queued and the windows are open. */
static int64_t
h2_progress(struct exchange *x)
{
	struct h2stream *st = stream_of(x);
	struct h2conn *hc = st->hc;

	if (hc->closed || st->closed || buf_len(&st->out) == 0 ||
	    nghttp2_session_get_stream_remote_window_size(hc->ng, st->id) <= 0 ||
	    nghttp2_session_get_remote_window_size(hc->ng) <= 0)
		return 0;
	return conn_progress_ms(hc->c);
}

static const struct down_ops h2_down_ops = {
	.send_continue = h2_send_continue,
	.send_interim = h2_send_interim,
	.send_head = h2_send_head,
	.send_data = h2_send_data,
	.send_last = h2_send_last,
	.send_error = h2_send_error,
	.congested = h2_congested,
	.resume_body = h2_resume_body,
	.send_trailers = h2_send_trailers,
	.tunnel_start = h2_tunnel_start,
	.finish = h2_finish,
	.progress = h2_progress,
};

/* --------------------------------------------------------- request ---- */

/* Request body to the exchange while the attempt takes it; what it took
 * is granted back to the peer (WINDOW_UPDATE), nothing else. */
static void
stream_pump(struct h2stream *st)
{
	/* handing body over can come back here (an HTTP/2 upstream asks for
	 * more from inside its send): the running call loops instead, or the
	 * same bytes would go twice */
	if (st->pumping) {
		st->pump_again = true;
		return;
	}
	st->pumping = true;
	do {
		st->pump_again = false;
		stream_pump_once(st);
	} while (st->pump_again);
	st->pumping = false;
}

static void
stream_pump_once(struct h2stream *st)
{
	struct exchange *x = &st->x;
	struct h2conn *hc = st->hc;

	while (x->live && !x->req_done && !hc->closed) {
		size_t n = buf_len(&st->in);

		if (n == 0 && !st->in_end)
			return;
		if (!proxy_request_writable(x))
			return;
		if (n > 0) {
			x->bytes_in += n;
			if (st->chunked) {
				struct sbuf *f = &hc->frame;

				sbuf_clear(f);
				sbuf_addx(f, n);
				sbuf_add(f, "\r\n", 2);
				sbuf_add(f, buf_head(&st->in), n);
				sbuf_add(f, "\r\n", 2);
				if (f->oom) {
					proxy_end(x, END_OUT_OF_MEMORY);
					return;
				}
				proxy_request_body(x, f->p, f->len);
			} else {
				proxy_request_body(x, buf_head(&st->in), n);
			}
			buf_consume(&st->in, n);
			if (!st->closed)
				nghttp2_session_consume(hc->ng, st->id, n);
			continue;
		}
		buf_shrink_if_empty(&st->in);
		if (st->chunked) {
			/* the last chunk, with the client's trailers */
			struct sbuf *f = &hc->frame;

			sbuf_clear(f);
			sbuf_add(f, "0\r\n", 3);
			sbuf_add(f, st->req_trailers.p, st->req_trailers.len);
			sbuf_add(f, "\r\n", 2);
			if (f->oom || st->req_trailers.oom) {
				proxy_end(x, END_OUT_OF_MEMORY);
				return;
			}
			proxy_request_body(x, f->p, f->len);
		}
		if (x->live)
			proxy_request_done(x);
		return;
	}
}

/* A :path an HTTP/1.1 request line can carry: visible ASCII only (RFC
 * 9112 3.2, RFC 3986 2). nghttp2 also passes bytes over 0x7f, which an
 * HTTP/1.1 server (ferry's own listeners among them) refuses or reads its
 * own way; a client on HTTP/1.1 could not send them either. */
static bool
path_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			return false;
	return true;
}

/* The request head is complete: as an HTTP/1.1 head, to the proxy. */
static void
stream_request(struct h2stream *st, bool end_stream)
{
	struct exchange *x = &st->x;
	struct http_head *h = &st->head;
	const struct http_header *cl;
	bool ambiguous;

	if (st->too_large) {
		proxy_error_early(x, FE_HEADERS_TOO_LARGE,
		    "request head over 64 KiB or over 100 headers");
		return;
	}
	if (!path_ok(st->raw.p + st->path.off, st->path.len)) {
		proxy_error_early(x, FE_BAD_REQUEST,
		    ":path holds a byte an HTTP/1.1 request target cannot (not visible ASCII)");
		return;
	}
	/* the table has room for both: the cookie crumbs were counted as
	 * fields, and one slot is spare (HTTP_HEAD_SLOTS) */
	h->method = st->method;
	h->target = st->path;
	h->major = 1;
	h->minor = 1;
	h->keep_alive = true;
	h->method_id = method_id(st->raw.p + st->method.off, st->method.len);
	st->in_end = end_stream;
	if (st->cookies.len)
		head_add(st, "cookie", 6, st->cookies.p, st->cookies.len, HDR_OTHER, false);
	ambiguous = headers_classify(st->raw.p, h) != 0;
	if ((cl = headers_find(h, HDR_CONTENT_LENGTH)) != NULL) {
		/* nghttp2 checked it is a number that the DATA will match */
		h->has_length = headers_number(st->raw.p, cl, &h->content_length);
	} else if (!end_stream) {
		/* a body of unknown length: chunked for an HTTP/1.1 upstream */
		head_add(st, "transfer-encoding", 17, "chunked", 7, HDR_TRANSFER_ENCODING, true);
		h->chunked = true;
		st->chunked = true;
	}
	if (st->raw.oom) {
		proxy_error_early(x, FE_SERVICE_UNAVAILABLE, "out of memory");
		return;
	}
	if (!proxy_request(x, st->raw.p, h, ambiguous))
		return;
	proxy_request_send(x);
	stream_pump(st);
}

/* ------------------------------------------------ nghttp2 callbacks ---- */

/* RFC 9113 5.1: a HEADERS on a stream whose client had ended its side
 * (END_STREAM, or its own RST_STREAM) is a connection error. nghttp2
 * sees it only while it keeps the closed stream, which it no longer does
 * (SETTINGS_NO_RFC7540_PRIORITIES), and else takes it for late trailers
 * and ignores it; those are allowed only on a stream ferry reset before
 * the client's side ended. So the connection remembers which of the
 * ENDED_IDS ids up to the highest that ended were ended so: 20 bytes,
 * where nghttp2 kept whole streams for as many. (A DATA frame on one is
 * dropped unseen: nghttp2 calls ferry for no part of it.) */
static void
ended_set(struct h2conn *hc, int32_t id)
{
	uint32_t i = (uint32_t)id >> 1;

	if (i > hc->ended_top) {
		/* ids between have not ended: their slots forget older ones */
		if (i - hc->ended_top >= ENDED_IDS)
			memset(hc->ended, 0, sizeof(hc->ended));
		else
			for (uint32_t k = hc->ended_top + 1; k <= i; k++)
				hc->ended[k % ENDED_IDS / 64] &= ~(1ULL << k % 64);
		hc->ended_top = i;
	} else if (hc->ended_top - i >= ENDED_IDS) {
		return;		/* older than what is remembered */
	}
	hc->ended[i % ENDED_IDS / 64] |= 1ULL << i % 64;
}

static bool
ended_is(const struct h2conn *hc, int32_t id)
{
	uint32_t i = (uint32_t)id >> 1;

	return i <= hc->ended_top && hc->ended_top - i < ENDED_IDS &&
	    (hc->ended[i % ENDED_IDS / 64] >> i % 64 & 1);
}

static int
on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
	struct h2conn *hc = arg;

	if (hd->type == NGHTTP2_HEADERS) {
		hc->continuations = 0;
		hc->block_bytes = 0;
		if ((hd->stream_id & 1) && ended_is(hc, hd->stream_id) &&
		    nghttp2_session_find_stream(ng, hd->stream_id) == NULL) {
			static struct log_limit limit;

			log_limited(&limit, LOG_INFO, "HTTP/2 client %s: HEADERS on stream %d, "
			    "which it had ended; GOAWAY STREAM_CLOSED", hc->peer,
			    (int)hd->stream_id);
			hc->told = true;
			h2_cut_for(hc, END_CLIENT_PROTOCOL_ERROR);
			nghttp2_session_terminate_session(ng, NGHTTP2_STREAM_CLOSED);
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
	} else if (hd->type == NGHTTP2_CONTINUATION &&
	    ++hc->continuations > H2_MAX_CONTINUATIONS)
		h2_calm(hc, "CONTINUATION flood");
	return 0;
}

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	static const nghttp2_extpri turns = { NGHTTP2_EXTPRI_DEFAULT_URGENCY, 1 };
	struct h2conn *hc = arg;
	struct h2stream *st;
	struct exchange *x;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* a request head, or trailers: header_read_timeout from now */
	hc->block_since_ms = clock_now_ms();
	hc->block_stream = frame->hd.stream_id;
	hc->block_st = NULL;
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
		hc->block_st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
		return 0;
	}
	if ((st = h2_stream_alloc(sizeof(*st), offsetof(struct h2stream, head.h))) == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	http_head_init(&st->head);
	x = &st->x;
	if (proxy_exchange_init(x, hc->w, &h2_down_ops) != 0) {
		proxy_exchange_free(x);
		h2_stream_free(st, sizeof(*st));
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	st->hc = hc;
	st->id = frame->hd.stream_id;
	st->gen = gen_ref(hc->w->gen);
	x->gen = st->gen;
	x->inbound = hc->lis->kind == LK_INBOUND;
	x->lis = hc->lis->conf;
	x->lis_service = listener_service_now(hc->lis);
	x->peer = hc->peer;
	x->peer_id = hc->has_identity ? hc->peer_id : NULL;
	x->peer_ctx = x->inbound ? SSL_get_SSL_CTX(conn_ssl(hc->c)) : NULL;
	x->unframed = true;
	st->next = hc->streams;
	if (hc->streams)
		hc->streams->prev = st;
	hc->streams = st;
	event_del(hc->timer);	/* not idle */
	nghttp2_session_set_stream_user_data(ng, st->id, st);
	/* RFC 9218's default is non-incremental: the first stream with data
	 * queued would send all of it before the next got a frame. Streams
	 * take turns, as they did under RFC 7540's tree; a client's own
	 * priority header still counts. Fails only for a stream nghttp2
	 * does not know, which this one is not. */
	(void)nghttp2_session_change_extpri_stream_priority(ng, st->id, &turns, 0);
	hc->block_st = st;
	return 0;
}

/* A field of the request's trailers: kept for the last chunk when the body
 * goes chunked (with a content-length, HTTP/1.1 has no place for them).
 * They share the head's limits, as HTTP/1.1 trailers do (http1.c). */
static void
request_trailer(struct h2stream *st, const uint8_t *name, size_t nlen, const uint8_t *value,
    size_t vlen)
{
	/* ferry's own names are no trailers: all of theirs count */
	st->trailer_fields++;
	if (!head_count(st, http_field_bytes(nlen, vlen), false, false)) {
		st->trailers_too_large = true;
		return;
	}
	if (!st->chunked || st->trailers_too_large || (nlen > 0 && name[0] == ':') ||
	    !headers_trailer_allowed((const char *)name, nlen))
		return;
	sbuf_add(&st->req_trailers, name, nlen);
	sbuf_add(&st->req_trailers, ": ", 2);
	sbuf_add(&st->req_trailers, value, vlen);
	sbuf_add(&st->req_trailers, "\r\n", 2);
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct h2conn *hc = arg;
	struct h2stream *st = frame->hd.stream_id == hc->block_stream ? hc->block_st :
	    nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	enum hdr_kind kind;
	bool own;

	(void)flags;
	/* A field indexed in the HPACK table is a byte on the wire and up to
	 * 4 KiB here, which nghttp2 checks (and parses, for a priority
	 * field) even once the head is over its limits: a block of indices
	 * took a worker 0.15 s (1.1 s of priority fields). A head over the
	 * limits gets its 431; a block that could only come from the table
	 * so far past them ends the connection. */
	if ((hc->block_bytes += nlen + vlen) > H2_BLOCK_DECODED_MAX) {
		hc->told = true;
		h2_calm(hc, "header block far over its limits");
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	if (st == NULL || st->too_large)
		return 0;
	if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
		request_trailer(st, name, nlen, value, vlen);
		return 0;
	}
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (nlen > 0 && name[0] == ':') {
		struct slice s;
		bool fits;

		/* counted as the HTTP/1.1 head: "M P HTTP/1.1\r\n", "host: A\r\n",
		 * the empty line last; :scheme has no place there */
		if (nlen == 7 && memcmp(name, ":method", 7) == 0)
			fits = head_count(st, (uint32_t)vlen + 3, false, false);
		else if (nlen == 5 && memcmp(name, ":path", 5) == 0)
			fits = head_count(st, (uint32_t)vlen + 11, false, false);
		else if (nlen == 10 && memcmp(name, ":authority", 10) == 0)
			fits = head_count(st, http_field_bytes(4, vlen), true, false);
		else if (nlen == 7 && memcmp(name, ":scheme", 7) == 0)
			fits = true;
		else
			fits = head_count(st, http_field_bytes(nlen, vlen), false, true);
		if (!fits) {
			st->too_large = true;
			return 0;
		}
		s = raw_add(&st->raw, value, vlen);
		if (nlen == 7 && memcmp(name, ":method", 7) == 0)
			st->method = s;
		else if (nlen == 5 && memcmp(name, ":path", 5) == 0)
			st->path = s;
		else if (nlen == 10 && memcmp(name, ":authority", 10) == 0) {
			st->authority = s;
			/* routes like Host (§4): the head carries it as one */
			head_add(st, "host", 4, (const char *)value, vlen, HDR_HOST, false);
		}
		return 0;
	}
	kind = http_header_kind((const char *)name, nlen, &own);
	/* a cookie crumb counts as the field it is here */
	if (!head_count(st, http_field_bytes(nlen, vlen), true, own)) {
		st->too_large = true;
		return 0;
	}
	if (nlen == 4 && memcmp(name, "host", 4) == 0 && st->authority.len)
		return 0;	/* :authority says it */
	if (nlen == 6 && memcmp(name, "cookie", 6) == 0) {
		/* RFC 9113 8.2.3: crumbs are one "; "-joined field for HTTP/1.1 */
		if (st->cookies.len)
			sbuf_add(&st->cookies, "; ", 2);
		sbuf_add(&st->cookies, value, vlen);
		return 0;
	}
	head_add(st, (const char *)name, nlen, (const char *)value, vlen, kind, own);
	if (nlen == 14 && memcmp(name, "x-service-auth", 14) == 0 && !st->too_large &&
	    !st->raw.oom)
		/* the head may grow past it: no old copy is freed unwiped */
		sbuf_mark_secret(&st->raw, st->raw.len - vlen, vlen);
	return 0;
}

/* The rest of a request ferry will not take: E answered while no
 * response head went out, else the stream is reset (h2_finish) as CAUSE;
 * nothing more of it goes upstream. */
static void
request_refused(struct h2stream *st, enum ferry_error e, enum end_cause cause,
    const char *why)
{
	if (st->x.resp_head)
		proxy_end(&st->x, cause);
	else
		proxy_refuse(&st->x, e, why, 0, true);
}

/* A body over max_request_body (the limit its request began under, SPEC
 * §10). A content-length over it was refused with the head (proxy.c);
 * this is the body that named no length. */
static bool
body_refused(struct h2stream *st, size_t len)
{
	uint64_t max = st->x.lis->max_request_body;

	st->body_bytes += len;
	if (max == 0 || st->body_bytes <= max)
		return false;
	request_refused(st, FE_PAYLOAD_TOO_LARGE, END_REQUEST_BODY_TOO_LARGE,
	    "request body over the limit");
	return true;
}

static int
on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct h2stream *st = nghttp2_session_get_stream_user_data(ng, id);

	(void)flags;
	(void)arg;
	if (st == NULL || !st->x.live || st->x.req_done || body_refused(st, len)) {
		/* nobody takes it: grant it back at once */
		if (nghttp2_session_consume(ng, id, len) != 0)
			nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	if (!buf_append(&st->in, data, len, H2_IN_MAX))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* over its window */
	stream_pump(st);
	return 0;
}

static void
count_control(struct h2conn *hc)
{
	int64_t now = clock_now_ms();

	if (now - hc->control_since_ms >= 1000) {
		hc->control_since_ms = now;
		hc->control = 0;
	}
	if (++hc->control > H2_CONTROL_PER_SEC)
		h2_calm(hc, "PING or SETTINGS flood");
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2conn *hc = arg;
	struct h2stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (frame->hd.stream_id == hc->block_stream)
			hc->block_since_ms = 0;		/* the block is whole */
		if (st == NULL)
			break;
		if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			stream_request(st, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
		} else if (st->x.live && st->trailers_too_large) {
			request_refused(st, FE_HEADERS_TOO_LARGE, END_REQUEST_TRAILERS_TOO_LARGE,
			    "request head and trailers over 64 KiB or over 100 fields");
		} else if (st->x.live && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			st->in_end = true;	/* trailers end the body */
			stream_pump(st);
		}
		break;
	case NGHTTP2_DATA:
		if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
			st->in_end = true;
			stream_pump(st);
		}
		break;
	case NGHTTP2_RST_STREAM:
		/* rapid reset: streams cancelled far faster than completed */
		if (++hc->resets > H2_RESET_ALLOWANCE + 2 * hc->completed)
			h2_calm(hc, "streams reset faster than they complete");
		break;
	case NGHTTP2_PING:
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			count_control(hc);
		break;
	default:
		break;
	}
	return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *arg)
{
	struct h2conn *hc = arg;
	struct h2stream *st = nghttp2_session_get_stream_user_data(ng, id);

	(void)error_code;
	/* nghttp2 decodes the rest of its block unseen: not ferry's to time */
	if (id == hc->block_stream)
		hc->block_since_ms = 0;
	if (nghttp2_session_get_stream_remote_close(ng, id) == 1)
		ended_set(hc, id);
	if (st == NULL)
		return 0;
	st->closed = true;
	/* the peer reset it while it ran; a stream whose whole response went
	 * out (a head ending it) closes first and ends its exchange as usual */
	if (!st->answered)
		proxy_end(&st->x, END_CLIENT_CLOSED);
	stream_maybe_free(st);
	return 0;
}

/* The response's last frame left while the peer's side of the stream is
 * still open: the exchange is over (answered, or refused) and wants no
 * more of the request, so RST_STREAM NO_ERROR asks the peer to stop
 * sending (RFC 9113 8.1) and closes the stream. Left half-open, it would
 * hold the connection as long as the peer liked: a connection with a
 * stream on it has no idle timer (h2_arm). */
static int
on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2conn *hc = arg;

	/* ferry's GOAWAY with an error, nghttp2's for a protocol error or
	 * ferry's ENHANCE_YOUR_CALM: the streams still open end for it */
	if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
		h2_cut_for(hc, END_CLIENT_PROTOCOL_ERROR);
	if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    nghttp2_session_get_stream_remote_close(ng, frame->hd.stream_id) == 0 &&
	    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
	    NGHTTP2_NO_ERROR) != 0)
		/* no memory for it: the connection goes (h2_flush), rather
		 * than be held by the half-open stream */
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/* ----------------------------------------------------- connection ---- */

static void
h2_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct h2conn *hc = arg;

	(void)fd;
	(void)what;
	buf_drop_wiped(&hc->in);
	buf_free(&hc->in);
	sbuf_free(&hc->hbuf);
	sbuf_free(&hc->frame);
	free(hc);
}

/* Never from inside nghttp2: h2_doom() schedules it from there. */
static void
h2_close(struct h2conn *hc, enum end_cause cause, const char *reason)
{
	struct worker *w = hc->w;

	if (hc->closed)
		return;
	log_debug("closing HTTP/2 client %s: %s", hc->peer, reason);
	hc->closed = true;
	if (hc->cut_cause != END_DONE)
		cause = hc->cut_cause;
	worker_defer_cancel(w, &hc->flush);
	while (hc->streams) {
		struct h2stream *st = hc->streams;

		st->closed = true;
		proxy_end(&st->x, cause);
		stream_maybe_free(st);
	}
	nghttp2_session_del(hc->ng);
	hc->ng = NULL;
	conn_free(hc->c);
	hc->c = NULL;
	event_free(hc->timer);
	hc->timer = NULL;
	w->n_clients--;
	if (hc->lis->kind == LK_INBOUND)
		w->conns_inbound--;
	else
		w->conns_outbound--;
	listener_client_gone(hc->lis);	/* last: a sibling may take the place at once */
	if (hc->prev)
		hc->prev->next = hc->next;
	else
		w->h2conns = hc->next;
	if (hc->next)
		hc->next->prev = hc->prev;
	worker_free_later(w, h2_free_deferred, hc);
}

/* Close at the next turn of the loop (from places that cannot now). */
static void
h2_doom(struct h2conn *hc)
{
	if (hc->doomed || hc->closed)
		return;
	hc->doomed = true;
	event_active(hc->timer, EV_TIMEOUT, 0);
}

/* Sends what nghttp2 has queued, as far as the socket takes it. */
static void
h2_flush_now(struct h2conn *hc)
{
	int rv;

	if (hc->closed || hc->depth > 0)
		return;
	worker_defer_cancel(hc->w, &hc->flush);
	hc->depth++;
	rv = h2_send_frames(hc->ng, hc->c);
	hc->depth--;
	if (rv != 0 || hc->closed) {
		h2_doom(hc);
		return;
	}
	/* GOAWAY sent and nothing left to do: close once it is out */
	if (!nghttp2_session_want_read(hc->ng) && !nghttp2_session_want_write(hc->ng) &&
	    conn_pending(hc->c) == 0)
		h2_doom(hc);
}

static void
h2_flush_deferred(struct deferred *d)
{
	h2_flush_now((struct h2conn *)((char *)d - offsetof(struct h2conn, flush)));
}

/* Sends at the end of this turn of the loop, with whatever else the
 * connection's streams queue meanwhile. */
static void
h2_flush(struct h2conn *hc)
{
	if (!hc->closed)
		worker_defer(hc->w, &hc->flush);
}

/* The connection's one timer: idle close, the drain's second GOAWAY, a
 * header block's header_read_timeout, or a close decided where it could
 * not be done. */
static void
h2_arm(struct h2conn *hc)
{
	int64_t now = clock_now_ms(), at = -1;

	if (hc->closed || hc->doomed)
		return;
	if (hc->draining && !hc->goaway_final)
		at = hc->goaway_at_ms;
	else if (hc->streams == NULL)
		at = hc->idle_since_ms + hc->lis->conf->idle_timeout;
	if (hc->block_since_ms != 0 &&
	    (at < 0 || hc->block_since_ms + hc->lis->conf->header_read_timeout < at))
		at = hc->block_since_ms + hc->lis->conf->header_read_timeout;
	if (at >= 0)
		timer_at(hc->timer, at, now);
	else
		event_del(hc->timer);
}

static void
h2_goaway_final(struct h2conn *hc)
{
	hc->goaway_final = true;
	nghttp2_submit_goaway(hc->ng, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(hc->ng), NGHTTP2_NO_ERROR, NULL, 0);
}

static void
h2_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct h2conn *hc = arg;
	int64_t now = clock_now_ms();

	(void)fd;
	(void)what;
	if (hc->doomed) {
		h2_close(hc, conn_write_failed(hc->c) ? END_CLIENT_WRITE_FAILED : END_CLIENT_CLOSED,
		    hc->calm ? "calm" : "session over");
		return;
	}
	if (hc->block_since_ms != 0 &&
	    now >= hc->block_since_ms + hc->lis->conf->header_read_timeout) {
		static struct log_limit limit;
		struct h2stream *st = nghttp2_session_get_stream_user_data(hc->ng,
		    hc->block_stream);

		/* as an HTTP/1.x head that does not complete (408), but
		 * nothing can be answered on a connection stuck in a header
		 * block: GOAWAY, and the connection goes once the peer has it */
		log_limited(&limit, LOG_INFO, "HTTP/2 client %s: header block not complete "
		    "within %lldms; closing", hc->peer,
		    (long long)hc->lis->conf->header_read_timeout);
		/* the block's stream, while no response head of its left:
		 * the operator sees the 408 HTTP/1 would have got (access
		 * log, errors_total), for a request head as for trailers;
		 * not once ferry ended the connection for another cause
		 * (a GOAWAY with an error that the client does not read) */
		if (st != NULL && !st->x.resp_head && hc->cut_cause == END_DONE)
			proxy_error_unanswered(&st->x, FE_REQUEST_TIMEOUT, st->x.live ?
			    "request trailers not complete in time" :
			    "request head not complete in time");
		/* every other stream still in flight (and this one, if its
		 * response was under way) is cut because ferry ends the
		 * connection the client stalled, not because the client
		 * closed it */
		h2_cut_for(hc, END_CLIENT_TIMEOUT);
		if (!hc->goaway_final)
			h2_goaway_final(hc);
		h2_flush_now(hc);
		h2_doom(hc);
		return;
	}
	if (hc->draining && !hc->goaway_final) {
		if (now < hc->goaway_at_ms) {
			h2_arm(hc);
			return;
		}
		h2_goaway_final(hc);
	} else if (hc->streams == NULL &&
	    now >= hc->idle_since_ms + hc->lis->conf->idle_timeout) {
		/* idle: GOAWAY, and it goes once the peer has it */
		if (!hc->goaway_final)
			h2_goaway_final(hc);
		h2_flush_now(hc);	/* before the doom's close */
		h2_doom(hc);
		return;
	}
	h2_flush_now(hc);
	if (hc->goaway_final && hc->streams == NULL)
		h2_doom(hc);
	h2_arm(hc);
}

/* Feeds what was read to nghttp2. */
static void
h2_process(struct h2conn *hc)
{
	ssize_t rv;

	if (buf_len(&hc->in) == 0)
		return;
	hc->depth++;
	rv = nghttp2_session_mem_recv(hc->ng, (const uint8_t *)buf_head(&hc->in),
	    buf_len(&hc->in));
	hc->depth--;
	if (hc->closed)
		return;
	if (rv < 0) {
		static struct log_limit limit;

		if (!hc->told)
			log_limited(&limit, LOG_INFO, "HTTP/2 client %s: %s", hc->peer,
			    nghttp2_strerror((int)rv));
		buf_consume(&hc->in, buf_len(&hc->in));
		if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_FLOODED) {
			/* closed without a GOAWAY: a flood is the client's
			 * doing all the same */
			h2_cut_for(hc, END_CLIENT_PROTOCOL_ERROR);
			h2_doom(hc);
			return;
		}
		nghttp2_session_terminate_session(hc->ng, NGHTTP2_PROTOCOL_ERROR);
	} else {
		buf_consume(&hc->in, (size_t)rv);
	}
	buf_shrink_if_empty(&hc->in);
	h2_flush(hc);
	h2_arm(hc);
}

static void
h2_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct h2conn *hc = arg;
	ssize_t n;

	switch (ev) {
	case CONN_DRAINED:
		h2_flush(hc);
		/* the socket took the queue: streams may read upstream again,
		 * those paused on interim heads too (h1_up.c) */
		for (struct h2stream *st = hc->streams; st && !hc->closed; st = st->next)
			if (st->x.live && !st->held && (st->x.resp_head || st->x.interims > 0))
				proxy_client_drained(&st->x);
		return;
	case CONN_CONNECTED:
		return;
	case CONN_FAILED:
		h2_close(hc, END_CLIENT_READ_ERROR, "connection failed");
		return;
	case CONN_READABLE:
		break;
	}
	n = conn_read(c, &hc->in, H2_READ_MAX);
	if (n == CONN_AGAIN) {
		h2_process(hc);
		return;
	}
	if (n <= 0 && conn_write_failed(c)) {
		/* a queued write failed: it is reported as a read that fails */
		h2_close(hc, END_CLIENT_WRITE_FAILED, "client write failed");
		return;
	}
	if (n <= 0) {
		h2_close(hc, n == 0 ? END_CLIENT_CLOSED : END_CLIENT_READ_ERROR,
		    n == 0 ? "client closed" : "client read error");
		return;
	}
	h2_process(hc);
}

/* nghttp2 copies them into each session */
static nghttp2_session_callbacks *
callbacks_new(void)
{
	nghttp2_session_callbacks *cb;

	if (nghttp2_session_callbacks_new(&cb) != 0)
		return NULL;
	nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	return cb;
}

/* Peers' heads carry their keys (the inbound listener): nghttp2's copies
 * of them are wiped (h2_mem.h). */
static int
session_new(struct h2conn *hc)
{
	nghttp2_option *opt;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		/* without RFC 7540's priority tree, nghttp2 frees a stream as
		 * it closes; with it, a server keeps up to 128 closed ones a
		 * connection for the tree (27 KiB after a burst of 100). With
		 * it off, 1.52 has two bugs (fixed in 1.61) ferry must keep
		 * out of reach: PRIORITY_UPDATE stays unenabled (an idle
		 * stream it made, then opened, stays on the idle list), and
		 * no data is submitted from on_stream_close. */
		{ NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
	};
	nghttp2_session_callbacks *cb;
	int rv;

	if ((cb = callbacks_new()) == NULL)
		return -1;
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cb);
		return -1;
	}
	/* windows open as the upstream takes the body (stream_pump) */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	/* a response head at the hard cap, not nghttp2's 64 KiB */
	nghttp2_option_set_max_send_header_block_length(opt, H2_MAX_HEADER_LIST);
	rv = nghttp2_session_server_new3(&hc->ng, cb, hc, opt, h2_mem());
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rv != 0)
		return -1;
	if (nghttp2_submit_settings(hc->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(hc->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0) {
		nghttp2_session_del(hc->ng);
		hc->ng = NULL;
		return -1;
	}
	return 0;
}

bool
h2_down_adopt(struct listener *lis, struct conn *c, const char *peer, const char *peer_id,
    struct buf *in)
{
	struct worker *w = lis->w;
	struct h2conn *hc = calloc(1, sizeof(*hc));

	if (hc == NULL || (hc->timer = evtimer_new(w->base, h2_timeout, hc)) == NULL ||
	    session_new(hc) != 0) {
		if (hc && hc->timer)
			event_free(hc->timer);
		free(hc);
		conn_free(c);
		w->n_clients--;
		if (lis->kind == LK_INBOUND)
			w->conns_inbound--;
		else
			w->conns_outbound--;
		listener_client_gone(lis);	/* last: a sibling may take the place at once */
		return false;
	}
	hc->w = w;
	hc->flush.run = h2_flush_deferred;
	hc->lis = lis;
	hc->c = c;
	/* over TLS (inbound): records come by the dozen per read */
	conn_batch_reads(c);
	hc->in = *in;
	memset(in, 0, sizeof(*in));
	hc->idle_since_ms = clock_now_ms();
	snprintf(hc->peer, sizeof(hc->peer), "%s", peer);
	if (peer_id) {
		hc->has_identity = true;
		snprintf(hc->peer_id, sizeof(hc->peer_id), "%s", peer_id);
	}
	hc->next = w->h2conns;
	if (w->h2conns)
		w->h2conns->prev = hc;
	w->h2conns = hc;
	conn_set_cb(c, h2_event, hc);
	if (w->draining)
		h2_down_close_idle(w);
	h2_process(hc);
	h2_flush(hc);
	h2_arm(hc);
	return true;
}

void
h2_down_close_idle(struct worker *w)
{
	for (struct h2conn *hc = w->h2conns; hc; hc = hc->next) {
		if (hc->draining || hc->closed)
			continue;
		/* first a GOAWAY that refuses nothing yet, then the real one */
		hc->draining = true;
		hc->goaway_at_ms = clock_now_ms() + H2_GOAWAY_DELAY_MS;
		nghttp2_submit_shutdown_notice(hc->ng);
		h2_flush(hc);
		h2_arm(hc);
	}
}

void
h2_down_trust_reconf(struct listener *l)
{
	SSL_CTX *now = l->w->gen->conf->inbound.ctx;

	for (struct h2conn *hc = l->w->h2conns; hc; hc = hc->next) {
		if (hc->lis != l || hc->closed || hc->goaway_final ||
		    tls_same_client_ca(SSL_get_SSL_CTX(conn_ssl(hc->c)), now))
			continue;
		/* the final GOAWAY at once: a stream the peer opens past it
		 * was not processed and goes on a new connection; those in
		 * flight finish, then the connection closes */
		h2_goaway_final(hc);
		h2_flush(hc);
		h2_arm(hc);
	}
}

void
h2_down_close_all(struct worker *w)
{
	while (w->h2conns)
		h2_close(w->h2conns, END_SHUTDOWN, "shutdown");
}
