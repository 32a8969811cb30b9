/*
 * The HTTP/2 upstream codec (nghttp2, client side): many attempts share
 * one connection to an endpoint, each a stream. A worker opens another
 * connection to the endpoint only when its sessions are at the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS. The request proxy.c built as HTTP/1.1
 * text (exchange.h: x->req) goes out as HEADERS and DATA; the response
 * comes back as an HTTP/1.1-shaped head, and its body chunk-framed for an
 * HTTP/1.1 client unless the downstream codec frames bodies itself.
 * The trailers of a chunked request go out as a trailing HEADERS frame.
 *
 * Flow control of the responses: a stream's window (H2UP_WINDOW_START,
 * growing to H2UP_WINDOW as its client reads, within the worker's
 * H2UP_GROWN_MAX for all its streams) is granted again only as
 * its client takes the bytes (h2_resume), so a paused client holds at
 * most that much. The connection's window goes back as the bytes
 * arrive: the streams belong to many clients, and those that stop
 * reading must not shut it on the others (the streams' windows bound
 * what is held). A session holding over H2UP_HELD_ADMIT for paused
 * streams takes no new stream: a request goes on another connection to
 * the endpoint.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>

#include "attempt.h"
#include "clock.h"
#include "exchange.h"
#include "h2_frames.h"
#include "h2_mem.h"
#include "headers.h"
#include "log.h"
#include "pool.h"

#define H2UP_WINDOW	(1024 * 1024)	/* per stream, ours, at most */
/* a stream's window starts here and doubles each time its client took a
 * whole window's worth: a client that does not read holds this much of a
 * response (what an HTTP/2 service may send whatever the client's own
 * windows say), one that reads gets the whole H2UP_WINDOW soon */
#define H2UP_WINDOW_START (64 * 1024)
/* what a worker's streams may have grown their windows by, in all: what
 * clients that read and then stop can make it hold, beyond a first window
 * a stream */
#define H2UP_GROWN_MAX	(64 * 1024 * 1024)
#define H2UP_CONN_WINDOW (16 * 1024 * 1024)
#define H2UP_HELD_ADMIT	(8 * 1024 * 1024)	/* held for paused streams:
					   over it, no new stream */
#define H2UP_OUT_MAX	(4 * 1024 * 1024)
#define H2UP_OUT_HIGH	(256 * 1024)

/* One HTTP/2 connection to an endpoint. */
struct h2up {
	struct upconn *u;		/* the transport, counted in the pool */
	nghttp2_session *ng;
	struct endpoint *ep;
	struct worker *w;
	struct h2up *next, *prev;	/* the worker's */
	struct h2up_stream *list;	/* its streams, attached or not */
	uint32_t streams;		/* open ones */
	uint32_t heads;			/* sent: h2_seed_due() */
	bool connected;
	bool closed;
	bool doomed;
	int depth;			/* inside nghttp2 */
	/* the stream whose header block nghttp2 is decoding, for its fields
	 * without a lookup each; NULL once nghttp2 lets go of it
	 * (stream_forget) or it is freed */
	int32_t block_id;
	struct h2up_stream *block_st;
	uint32_t drains;		/* times its backlog drained */
	uint32_t changes;		/* to the list: a stream added or freed */
	size_t held;			/* its streams' unconsumed bytes, summed */
	struct deferred flush;		/* session_flush(): at the end of the turn */
	struct event *timer;		/* idle close, or a close from a callback */
	int64_t idle_timeout_ms;
};

/* One attempt's stream. */
struct h2up_stream {
	struct h2up *s;
	struct h2up_stream *next, *prev;	/* the session's */
	struct exchange *x;		/* NULL once the attempt let go */
	int32_t id;			/* 0 until submitted */
	size_t unconsumed;		/* response bytes not yet granted back */
	int32_t window;			/* ours for it (0: H2UP_WINDOW_START) */
	size_t taken;			/* granted back since the window last grew */
	bool complete;			/* the whole response arrived */
	bool refused;			/* REFUSED_STREAM: never processed */
	struct buf out;			/* request body for the peer's window */
	bool out_eof;
	uint32_t drains;		/* the session's, when last woken */
	struct dechunk {		/* x->req's chunk framing, undone */
		uint64_t left;		/* data bytes left in this chunk */
		int state;		/* 0 size, 1 ext, 2 data, 3 data CRLF, 4 trailers, 5 done */
		size_t line;		/* where the trailer line being read began */
	} dc;
	struct sbuf trailers;		/* the request's, "name: value\r\n" lines */
	bool chunked_req;
	bool sized_req;			/* a content-length says where it ends */
	uint64_t req_left;		/* body bytes still to come, when sized */
	struct sbuf raw;		/* response head (and trailers) as HTTP/1 text */
	bool head_done;
	bool chunk_resp;		/* frame the body as chunks for HTTP/1.1 */
	/* chunk_resp: data that came while the client was slow, sent as one
	 * chunk once it reads (stage_flush), not a chunk's framing per DATA
	 * frame waiting with it (1-byte frames: six bytes each) */
	struct buf stage;
	bool closed;
	/* RST_STREAM submitted: nghttp2 cancelled its HEADERS if they had not
	 * gone, and another would be a frame on a stream the peer never saw */
	bool reset;
	bool sent_any;
	bool got_any;			/* any response frame arrived */
	bool got_trailers;		/* a HEADERS frame after the head */
	/* the head (or trailers) being read, counted as http1.c counts an
	 * HTTP/1.1 one (http1.h); the table has the fields and their kinds */
	uint32_t head_bytes;
	/* trailers join the head at the client, as http1.c counts them:
	 * the head the client got (or the upstream's, for an HTTP/2 one) */
	struct http_measure base;
	struct http_head head;		/* last: h2_stream_alloc() */
};
_Static_assert(offsetof(struct h2up_stream, head) + sizeof(struct http_head) ==
    sizeof(struct h2up_stream), "the head table is last");

static void session_flush(struct h2up *s);
static void session_arm(struct h2up *s);
static bool stage_flush(struct h2up_stream *st);

/* ST holds its unconsumed bytes no more (taken, or let go of); its own
 * window is the caller's. */
static void
held_drop(struct h2up_stream *st)
{
	struct h2up *s = st->s;

	if (st->unconsumed == 0)
		return;
	s->held -= st->unconsumed;
	st->unconsumed = 0;
}

/* nghttp2 no longer leads to ST */
static void
stream_forget(struct h2up *s, struct h2up_stream *st)
{
	if (st->id > 0)
		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
	if (s->block_st == st)
		s->block_st = NULL;
}

static void
stream_free(struct h2up_stream *st)
{
	struct h2up *s = st->s;

	if (s->block_st == st)
		s->block_st = NULL;
	held_drop(st);
	if (st->window)
		s->w->h2up_grown -= (size_t)(st->window - H2UP_WINDOW_START);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->list = st->next;
	if (st->next)
		st->next->prev = st->prev;
	s->changes++;
	sbuf_free(&st->raw);
	sbuf_free(&st->trailers);
	buf_free(&st->out);
	buf_free(&st->stage);
	http_head_release(&st->head);
	h2_stream_free(st, sizeof(*st));
}

/* --------------------------------------------------- request side ---- */

/* Copies the data bytes of (part of) a chunked body into ST->out. */
static void
dechunk_into(struct h2up_stream *st, const char *p, size_t n)
{
	struct dechunk *d = &st->dc;

	while (n > 0 && d->state != 5) {
		switch (d->state) {
		case 0:
			if (*p == '\r') {
				d->state = 1;
			} else if (*p == ';') {
				d->state = 1;
			} else {
				int v = *p >= '0' && *p <= '9' ? *p - '0' :
				    (*p | 0x20) >= 'a' && (*p | 0x20) <= 'f' ? (*p | 0x20) - 'a' + 10 : -1;

				if (v >= 0)
					d->left = d->left * 16 + (uint64_t)v;
			}
			break;
		case 1:		/* to the LF ending the size line */
			if (*p == '\n')
				d->state = d->left ? 2 : 4;
			break;
		case 2: {
			size_t k = n < d->left ? n : (size_t)d->left;

			buf_append(&st->out, p, k, H2UP_OUT_MAX);
			d->left -= k;
			p += k;
			n -= k;
			if (d->left == 0)
				d->state = 3;
			continue;
		}
		case 3:		/* CRLF after the data */
			if (*p == '\n')
				d->state = 0;
			break;
		case 4:		/* trailer lines to the empty one; the downstream
				 * codec wrote them, within the head limits */
			if (*p == '\n' && st->trailers.len == d->line) {
				d->state = 5;
				st->out_eof = true;
			} else if (*p == '\n') {
				sbuf_add(&st->trailers, "\r\n", 2);
				d->line = st->trailers.len;
			} else if (*p != '\r' && st->trailers.len < HTTP_MAX_HEAD_ALL) {
				sbuf_add(&st->trailers, p, 1);
			}
			break;
		}
		p++;
		n--;
	}
}

/* The end of the body is END_STREAM: known from the chunk framing or
 * the length, as the downstream codec may say req_done only after its
 * last send. */
static void
body_add(struct h2up_stream *st, const char *p, size_t n)
{
	if (st->chunked_req) {
		dechunk_into(st, p, n);
		return;
	}
	if (st->sized_req) {
		if (n > st->req_left)
			n = (size_t)st->req_left;
		st->req_left -= n;
		if (st->req_left == 0)
			st->out_eof = true;
	}
	buf_append(&st->out, p, n, H2UP_OUT_MAX);
}

static ssize_t
read_req_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct h2up_stream *st = src->ptr;
	size_t n = buf_len(&st->out);

	(void)arg;
	if (n > length)
		n = length;
	if (n > 0) {
		memcpy(buf, buf_head(&st->out), n);
		buf_consume(&st->out, n);
		st->sent_any = true;
		/* handed on: stream_idle's activity (h2_progress) */
		if (st->x != NULL)
			st->x->last_io_ms = clock_now_ms();
	}
	if (buf_len(&st->out) == 0) {
		buf_shrink_if_empty(&st->out);
		if (st->out_eof) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			if (st->trailers.len > 0 && !st->trailers.oom) {
				nghttp2_nv nv[HTTP_MAX_FIELDS];
				size_t k = h2_lines_to_nv(st->trailers.p, st->trailers.p +
				    st->trailers.len, nv, 0, HTTP_MAX_FIELDS, false);

				/* the trailers end the stream instead */
				if (k > 0 && nghttp2_submit_trailer(ng, id, nv, k) == 0)
					*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			}
		} else if (n == 0)
			return NGHTTP2_ERR_DEFERRED;
		/* the client may send more now */
		if (st->x && st->x->live && !st->x->req_done)
			st->x->down->resume_body(st->x);
	}
	return (ssize_t)n;
}

/* x->req's HTTP/1.1 head as HTTP/2 fields, in NV; the body after it goes
 * to ST->out. Returns the field count, 0 when the head is not ours. */
static size_t
request_fields(struct h2up_stream *st, struct exchange *x, nghttp2_nv *nv, size_t max,
    bool tls)
{
	char *p = x->req.p, *end = x->req.p + x->req_head_len, *eol, *sp1, *sp2;
	struct h2_field f;
	size_t n = 0, host = 0;
	bool seed;

	if ((eol = h2_line_end(p, end)) == NULL ||
	    (sp1 = memchr(p, ' ', (size_t)(eol - p))) == NULL ||
	    (sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1))) == NULL)
		return 0;
	seed = h2_seed_due(&st->s->heads);	/* counted only for a head that goes */
	nv[n++] = (nghttp2_nv){ (uint8_t *)":method", (uint8_t *)p, 7, (size_t)(sp1 - p), 0 };
	nv[n++] = (nghttp2_nv){ (uint8_t *)":scheme", (uint8_t *)(tls ? "https" : "http"), 7,
	    tls ? 5 : 4, 0 };
	nv[n++] = (nghttp2_nv){ (uint8_t *)":path", (uint8_t *)sp1 + 1, 5,
	    (size_t)(sp2 - sp1 - 1), 0 };
	host = n++;
	nv[host] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)"", 10, 0, 0 };
	for (p = eol + 2; n < max && h2_next_field(&p, end, &f);) {
#define IS(lit) (f.nlen == sizeof(lit) - 1 && memcmp(f.name, lit, sizeof(lit) - 1) == 0)
		if (IS("host")) {
			nv[host].value = (uint8_t *)f.value;
			nv[host].valuelen = f.vlen;
			continue;
		}
		if (IS("content-length")) {
			/* digits only: the downstream parser checked it */
			st->sized_req = true;
			for (size_t i = 0; i < f.vlen && f.value[i] >= '0' && f.value[i] <= '9'; i++)
				st->req_left = st->req_left * 10 + (uint64_t)(f.value[i] - '0');
		}
		if (IS("transfer-encoding")) {
			st->chunked_req = true;	/* ferry framed it: undone here */
			continue;
		}
		if (IS("connection") || IS("keep-alive") || IS("proxy-connection") ||
		    IS("upgrade") ||
		    (IS("te") && !(f.vlen == 8 && strncasecmp(f.value, "trailers", 8) == 0)))
			continue;
#undef IS
		nv[n++] = (nghttp2_nv){ (uint8_t *)f.name, (uint8_t *)f.value, f.nlen, f.vlen,
		    h2_nv_flags(f.name, f.nlen, seed) };
	}
	return n;
}

/* ------------------------------------------------- response side ---- */

static struct slice
raw_add(struct sbuf *raw, const void *p, size_t n)
{
	struct slice s = { (uint32_t)raw->len, (uint32_t)n };

	sbuf_add(raw, p, n);
	return s;
}

/* The response head, as proxy.c takes it. */
static void
response_head(struct h2up_stream *st)
{
	struct exchange *x = st->x;
	struct http_head *h = &st->head;
	const struct http_header *cl;
	bool body;

	h->major = 1;
	h->minor = 1;
	h->keep_alive = true;
	h->reason = (struct slice){ 0, 0 };
	/* a head of :status alone has no text yet: the head's slices are
	 * offsets from it, never from NULL */
	if (st->raw.p == NULL)
		sbuf_grow(&st->raw, 64);
	headers_classify(st->raw.p, h);
	cl = headers_find(h, HDR_CONTENT_LENGTH);
	body = !(x->head_method || h->status == 204 || h->status == 304 ||
	    (h->status >= 100 && h->status < 200));
	if (cl && headers_number(st->raw.p, cl, &h->content_length)) {
		h->has_length = true;
	} else if (body && !x->unframed) {
		/* no length: chunked for an HTTP/1.1 client, trailers at its end
		 * (the table has a slot for it past the limits: HTTP_HEAD_SLOTS) */
		struct http_header *te = http_head_add(h);

		if (te == NULL) {
			proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "out of memory");
			return;
		}
		te->name = raw_add(&st->raw, "transfer-encoding", 17);
		te->value = raw_add(&st->raw, "chunked", 7);
		te->kind = HDR_TRANSFER_ENCODING;
		te->own = true;
		h->chunked = true;
		st->chunk_resp = true;
	}
	if (st->raw.oom) {
		proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, "out of memory");
		return;
	}
	if (h->status >= 100 && h->status < 200) {
		/* an interim head: the next one is the answer */
		if (proxy_response_head(x, st->raw.p, h, false)) {
			sbuf_clear(&st->raw);
			http_head_clear(h);
			st->head_bytes = 0;
		}
		return;
	}
	st->head_done = true;
	proxy_response_head(x, st->raw.p, h, false);
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct h2up *s = arg;
	struct h2up_stream *st = frame->hd.stream_id == s->block_id ? s->block_st :
	    nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	struct http_head *h;
	struct http_header *hd;
	enum hdr_kind kind;
	bool own;

	(void)flags;
	if (st == NULL || st->x == NULL)
		return 0;
	st->got_any = true;
	h = &st->head;
	if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
		/* nghttp2 checked three digits; "050" is no status code (RFC
		 * 9110 15) and no status line an HTTP/1.1 client (ferry's own
		 * parser among them) reads: the stream fails, as an HTTP/1.1
		 * upstream's bad status line does */
		if (vlen != 3 || value[0] < '1' || value[0] > '9')
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		h->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
		return 0;
	}
	if (nlen > 0 && name[0] == ':')
		return 0;
	kind = http_header_kind((const char *)name, nlen, &own);
	/* the status line and the empty line, then "name: value\r\n" each;
	 * :status came first (nghttp2 checks) */
	if (st->head_bytes == 0 && !st->got_trailers)
		st->head_bytes = h->mine_bytes = http_status_line_bytes(h);
	st->head_bytes += http_field_bytes(nlen, vlen);
	if (st->got_trailers) {
		/* all of the trailers' count: ferry's own names are no trailers */
		const struct http_measure *b = &st->base;

		if (!http_within_limits(b->fields + h->n_headers + 1, b->own,
		    b->bytes + st->head_bytes, b->mine + st->head_bytes))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	} else {
		if (own)
			h->n_own++;
		else
			h->mine_bytes += http_field_bytes(nlen, vlen);
		if (!http_within_limits(h->n_headers + 1, h->n_own, st->head_bytes,
		    h->mine_bytes))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* over ferry's limits */
	}
	if ((hd = http_head_add(h)) == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	hd->kind = kind;
	hd->own = own;
	hd->name = raw_add(&st->raw, name, nlen);
	hd->value = raw_add(&st->raw, value, vlen);
	return 0;
}

/* The response ends: the last chunk (with trailers) for an HTTP/1.1
 * client, or trailers handed to an HTTP/2 one. */
static void
response_end(struct h2up_stream *st)
{
	struct exchange *x = st->x;
	struct sbuf *t = &x->w->scratch_up;

	st->complete = true;
	if (!stage_flush(st))
		return;
	sbuf_clear(t);
	/* a client that gets the body unframed (HTTP/1.0, or a body coded
	 * anew: proxy.c frames it) has no last chunk */
	if (st->chunk_resp && !x->dechunk) {
		sbuf_add(t, "0\r\n", 3);
		if (st->got_trailers && st->raw.len > 0 && !x->unframed) {
			/* trailers collected after the head: name: value lines */
			for (uint32_t i = 0; i < st->head.n_headers; i++) {
				const struct http_header *hd = &st->head.h[i];

				if (!headers_trailer_allowed(st->raw.p + hd->name.off, hd->name.len))
					continue;
				sbuf_add(t, st->raw.p + hd->name.off, hd->name.len);
				sbuf_add(t, ": ", 2);
				sbuf_add(t, st->raw.p + hd->value.off, hd->value.len);
				sbuf_add(t, "\r\n", 2);
			}
		}
		sbuf_add(t, "\r\n", 2);
	}
	proxy_response_end(x, t->p, t->len, true);
}

/* The session's open streams, and this worker's share of the endpoint's
 * count for /services. */
static void
streams_add(struct h2up *s, int d)
{
	s->streams += d;
	if (s->ep->share)
		atomic_fetch_add_explicit(&s->ep->share->streams, d, memory_order_relaxed);
}

/*
 * The streams whose HEADERS nghttp2 still holds, where they would wait
 * for good; their attempts go again now, on another connection: never
 * processed (RFC 9113 6.8, h2_unprocessed). WHY says what the peer did.
 * - After a GOAWAY nghttp2 sends no more HEADERS, but drops the ones it
 *   holds (opening their streams to close them as REFUSED_STREAM) only
 *   as it would send them: on a connection the peer stopped reading,
 *   that is when it ends (nghttp2_session_check_request_allowed is false
 *   here on).
 * - A SETTINGS_MAX_CONCURRENT_STREAMS of 0 holds them until the peer
 *   raises it, if ever (session_with_room passes S by meanwhile).
 * Their HEADERS are cancelled (nghttp2 marks them, no frame goes): the
 * peer may raise the limit later, and a request sent again elsewhere
 * must not reach it twice. A stream already let go of (its HEADERS
 * cancelled then) is freed here too, not left counted until then.
 */
static void session_doom(struct h2up *s);

static void
streams_unsent_fail(struct h2up *s, const char *why)
{
	struct h2up_stream *st;
	char msg[200];

	do {
		/* a failed attempt may free other streams of S: start over */
		for (st = s->list; st; st = st->next)
			if (!st->closed && st->id > 0 &&
			    nghttp2_session_find_stream(s->ng, st->id) == NULL)
				break;
		if (st == NULL)
			break;
		/* unopened, so in nghttp2's queue of HEADERS: it cancels them
		 * (once: a second RST_STREAM would go as a frame) */
		if (!st->reset && nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
		    NGHTTP2_REFUSED_STREAM) != 0)
			session_doom(s);	/* else a raised limit would send them yet */
		st->reset = true;
		/* when nghttp2 drops those HEADERS, ST is gone */
		stream_forget(s, st);
		st->closed = true;
		st->refused = true;
		streams_add(s, -1);
		if (st->x == NULL) {
			stream_free(st);
			continue;
		}
		snprintf(msg, sizeof(msg), "upstream %s %s before the request went",
		    st->x->ep->addr_text, why);
		proxy_attempt_failed(st->x, AR_RESET, FE_SERVICE_ERROR, msg);	/* frees st */
	} while (!s->closed);
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2up *s = arg;
	struct h2up_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (st == NULL || st->x == NULL)
			break;
		if (!st->head_done) {
			/* trailers-only (gRPC errors): the head must end the stream */
			st->x->head_ends = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
			response_head(st);
			if (st->x && st->head_done && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
				response_end(st);
		} else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
			if (st->head.n_headers > 0)
				proxy_response_trailers(st->x, st->raw.p, &st->head);
			if (st->x)
				response_end(st);
		}
		break;
	case NGHTTP2_DATA:
		if (st && st->x && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			response_end(st);
		break;
	case NGHTTP2_SETTINGS:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			break;
		s->connected = true;
		if (nghttp2_session_get_remote_settings(ng,
		    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) == 0)
			streams_unsent_fail(s, "allowed no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)");
		break;
	case NGHTTP2_GOAWAY:
		/* nghttp2 closes the opened streams above its last stream id
		 * as REFUSED_STREAM (on_stream_close) */
		streams_unsent_fail(s, "said GOAWAY");
		break;
	default:
		break;
	}
	return 0;
}

/* Before the trailers: the head's fields make room for theirs. */
static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct h2up *s = arg;
	struct h2up_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);

	s->block_id = frame->hd.stream_id;
	s->block_st = st;
	if (st && st->head_done && st->x && !st->got_trailers) {
		/* trailers: they join the head at the client, as http1.c
		 * counts them (the table takes them in the head's place) */
		st->got_trailers = true;
		st->base = st->x->resp_measured ? st->x->resp_sent : (struct http_measure){
			st->head.n_headers, st->head.n_own, st->head_bytes, st->head.mine_bytes };
		sbuf_clear(&st->raw);
		st->head.n_headers = 0;
		st->head.n_own = 0;
		st->head.mine_bytes = 0;
		st->head_bytes = 0;
	}
	return 0;
}

/* N bytes of ST's response granted back, as its client took them: a
 * client that took a whole window gets the next one twice as large,
 * within the worker's H2UP_GROWN_MAX. */
static void
stream_taken(struct h2up_stream *st, size_t n)
{
	struct worker *w = st->s->w;
	int32_t now = st->window ? st->window : H2UP_WINDOW_START, next;

	st->taken += n;
	if (now >= H2UP_WINDOW || st->taken < (size_t)now || st->id <= 0)
		return;
	next = now * 2 > H2UP_WINDOW ? H2UP_WINDOW : now * 2;
	if (w->h2up_grown + (size_t)(next - now) > H2UP_GROWN_MAX)
		return;
	if (nghttp2_session_set_local_window_size(st->s->ng, NGHTTP2_FLAG_NONE, st->id,
	    next) == 0) {
		w->h2up_grown += (size_t)(next - now);
		st->window = next;
		st->taken = 0;
	}
}

/* The body bytes ST staged, to its client as one chunk. False when its
 * attempt let go of ST meanwhile (the client went). */
static bool
stage_flush(struct h2up_stream *st)
{
	struct exchange *x = st->x;
	size_t n = buf_len(&st->stage);
	char size[24];

	if (n == 0)
		return true;
	snprintf(size, sizeof(size), "%zx\r\n", n);
	if (proxy_response_data(x, size, strlen(size)) && x->up2 == st &&
	    proxy_response_data(x, buf_head(&st->stage), n) && x->up2 == st)
		proxy_response_data(x, "\r\n", 2);
	if (x->up2 != st)
		return false;
	buf_free(&st->stage);
	return x->live && x->up2 == st;
}

static int
on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct h2up_stream *st = nghttp2_session_get_stream_user_data(ng, id);
	struct exchange *x;
	bool congested;

	(void)flags;
	(void)arg;
	if (st == NULL || (x = st->x) == NULL || !st->head_done || len == 0) {
		if (nghttp2_session_consume(ng, id, len) != 0)
			nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	/* the stream's window granted back once the client takes it
	 * (h2_resume); the connection's at once */
	if ((congested = x->down->congested(x))) {
		st->unconsumed += len;
		st->s->held += len;
		nghttp2_session_consume_connection(ng, len);
	} else {
		nghttp2_session_consume(ng, id, len);
		stream_taken(st, len);
	}
	st->got_any = true;
	if (st->chunk_resp && !x->dechunk) {
		struct sbuf *t = &x->w->scratch_up;

		/* the window bounds the stage; short of memory, as it came */
		if (congested && buf_append(&st->stage, data, len, H2UP_WINDOW))
			return 0;
		if (!stage_flush(st))
			return 0;
		sbuf_clear(t);
		sbuf_addx(t, len);
		sbuf_add(t, "\r\n", 2);
		sbuf_add(t, data, len);
		sbuf_add(t, "\r\n", 2);
		proxy_response_data(x, t->p, t->len);
	} else {
		proxy_response_data(x, data, len);
	}
	return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *arg)
{
	struct h2up *s = arg;
	struct h2up_stream *st = nghttp2_session_get_stream_user_data(ng, id);
	struct exchange *x;
	char msg[160];

	if (st == NULL)
		return 0;
	st->closed = true;
	st->refused = error_code == NGHTTP2_REFUSED_STREAM;
	streams_add(s, -1);
	stream_forget(s, st);
	if ((x = st->x) != NULL) {
		/* closed before its end: a reset, or the session went; the
		 * attempt lets go of the stream, which frees it (closed) */
		snprintf(msg, sizeof(msg), "upstream %s reset the stream (%s)",
		    x->ep->addr_text, nghttp2_http2_strerror(error_code));
		proxy_attempt_failed(x, AR_RESET, FE_SERVICE_ERROR, msg);
	} else {
		stream_free(st);
	}
	session_arm(s);
	return 0;
}

/* ------------------------------------------------------ sessions ---- */

static void
session_free_deferred(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	free(arg);
}

/* Every stream still on it fails with R and E (an attempt may retry
 * elsewhere). */
static void
session_fail(struct h2up *s, enum attempt_result r, enum ferry_error e, const char *why)
{
	struct worker *w = s->w;

	if (s->closed)
		return;
	log_debug("closing HTTP/2 upstream %s: %s", s->ep->addr_text, why);
	s->closed = true;
	worker_defer_cancel(w, &s->flush);
	/* nghttp2_session_del tells no stream: their attempts fail here (and
	 * may retry elsewhere: this session takes no more) */
	while (s->list) {
		struct h2up_stream *st = s->list;
		struct exchange *x = st->x;
		char msg[200];

		if (!st->closed) {
			/* never processed (RFC 9113 6.8): its HEADERS never left
			 * (nghttp2 opens a stream as it sends them; a GOAWAY's
			 * were failed as it came): it may go again
			 * (h2_unprocessed), as a refused one does */
			if (st->id > 0 && nghttp2_session_find_stream(s->ng, st->id) == NULL)
				st->refused = true;
			st->closed = true;
			streams_add(s, -1);
		}
		if (x != NULL) {
			snprintf(msg, sizeof(msg), r == AR_RESET ?
			    "HTTP/2 connection to %s closed (%s)" : "connect %s: %s",
			    x->ep->addr_text, why);
			proxy_attempt_failed(x, r, e, msg);	/* lets go of st */
		}
		if (s->list == st)
			stream_free(st);
	}
	nghttp2_session_del(s->ng);
	s->ng = NULL;
	pool_discard(s->u);
	event_free(s->timer);
	if (s->prev)
		s->prev->next = s->next;
	else
		w->h2ups = s->next;
	if (s->next)
		s->next->prev = s->prev;
	worker_free_later(w, session_free_deferred, s);
}

static void
session_close(struct h2up *s, const char *why)
{
	session_fail(s, AR_RESET, FE_SERVICE_ERROR, why);
}

static void
session_doom(struct h2up *s)
{
	if (s->doomed || s->closed)
		return;
	s->doomed = true;
	event_active(s->timer, EV_TIMEOUT, 0);
}

static void
session_flush_now(struct h2up *s)
{
	int rv;

	if (s->closed || s->depth > 0)
		return;
	worker_defer_cancel(s->w, &s->flush);
	s->depth++;
	rv = h2_send_frames(s->ng, s->u->c);
	s->depth--;
	if (rv != 0 || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng)))
		session_doom(s);
}

static void
session_flush_deferred(struct deferred *d)
{
	session_flush_now((struct h2up *)((char *)d - offsetof(struct h2up, flush)));
}

/* Sends at the end of this turn of the loop, with the frames of every
 * other stream submitted meanwhile. */
static void
session_flush(struct h2up *s)
{
	if (!s->closed)
		worker_defer(s->w, &s->flush);
}

static void
session_arm(struct h2up *s)
{
	if (s->closed || s->doomed)
		return;
	if (s->streams == 0)
		/* one to an endpoint DNS dropped closes at once, as the pool
		 * closes idle HTTP/1.1 connections of a retired endpoint */
		timer_at(s->timer, clock_now_ms() + (s->ep->retired ? 0 : s->idle_timeout_ms),
		    clock_now_ms());
	else
		event_del(s->timer);
}

static void
session_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct h2up *s = arg;

	(void)fd;
	(void)what;
	if (s->doomed || s->streams == 0)
		session_close(s, s->doomed ? "session over" : "idle");
}

static void
session_read(struct h2up *s)
{
	struct upconn *u = s->u;
	ssize_t n, rv;

	for (;;) {
		n = conn_read(u->c, &u->in, 65536);
		if (n == 0 || (n < 0 && n != CONN_AGAIN)) {
			session_close(s, n == 0 ? "upstream closed" : "read error");
			return;
		}
		if (buf_len(&u->in) == 0)
			break;
		s->depth++;
		rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)buf_head(&u->in),
		    buf_len(&u->in));
		s->depth--;
		if (s->closed)
			return;
		buf_consume(&u->in, buf_len(&u->in));
		if (rv < 0) {
			session_close(s, nghttp2_strerror((int)rv));
			return;
		}
		/* a read that emptied the socket ends the turn's reading:
		 * the rest wakes the worker again, after its other sockets.
		 * Reading on chased a server that writes each response as it
		 * makes it (nginx): a read got one or two. */
		if (n == CONN_AGAIN || conn_read_emptied(u->c))
			break;
	}
	session_flush(s);
}

/* The connection's backlog drained: a client paused on it (h2_congested)
 * reads again. Its stream's body may all have gone before the pause, and
 * then nothing in nghttp2 (which asks a stream with no body for no more:
 * NGHTTP2_ERR_DEFERRED) would wake it. */
static void
streams_resume_bodies(struct h2up *s)
{
	struct h2up_stream *st = s->list;
	uint32_t round = ++s->drains, changes;

	while (st != NULL && !s->closed) {
		if (!st->x || st->out_eof || st->drains == round ||
		    buf_len(&st->out) > H2UP_OUT_HIGH) {
			st = st->next;
			continue;
		}
		st->drains = round;
		changes = s->changes;
		proxy_upstream_drained(st->x);
		/* a client's body may end exchanges, and free streams: then
		 * from the top again, past the ones woken */
		st = s->changes == changes ? st->next : s->list;
	}
}

static void
session_event(struct conn *c, enum conn_event ev, void *arg)
{
	struct h2up *s = arg;
	const unsigned char *alpn = NULL;
	unsigned alen = 0;

	switch (ev) {
	case CONN_CONNECTED:
		if (conn_is_tls(c)) {
			metrics_tls_handshake(s->w->ms, DIR_OUTBOUND, conn_session_reused(c));
			SSL_get0_alpn_selected(conn_ssl(c), &alpn, &alen);
			if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
				session_fail(s, AR_CONNECT_FAILURE, FE_SERVICE_ERROR,
				    "the server did not select h2 by ALPN");
				return;
			}
		}
		s->connected = true;
		for (struct h2up_stream *st = s->list; st; st = st->next)
			if (st->x)
				proxy_attempt_connected(st->x);
		session_flush(s);
		return;
	case CONN_FAILED:
		session_fail(s, conn_error(c) == CONN_REFUSED ? AR_REFUSED : AR_CONNECT_FAILURE,
		    conn_error(c) == CONN_TLS_FAILED ? FE_SERVICE_ERROR : FE_SERVICE_UNAVAILABLE,
		    conn_error_text(c));
		return;
	case CONN_DRAINED:
		session_flush(s);
		streams_resume_bodies(s);
		return;
	case CONN_READABLE:
		session_read(s);
		return;
	}
}

static struct h2up *
session_new(struct exchange *x, struct upconn *u)
{
	struct h2up *s = calloc(1, sizeof(*s));
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_option *opt = NULL;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2UP_WINDOW_START },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST },
	};

	if (s == NULL || (s->timer = evtimer_new(x->w->base, session_timeout, s)) == NULL ||
	    nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
		goto bad;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
	/* a request head at the hard cap, not nghttp2's 64 KiB */
	nghttp2_option_set_max_send_header_block_length(opt, H2_MAX_HEADER_LIST);
	/* a service key in its requests: nghttp2's copies of them are wiped
	 * (h2_mem.h) */
	if (nghttp2_session_client_new3(&s->ng, cb, s, opt, h2_mem()) != 0)
		goto bad;
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	cb = NULL;
	opt = NULL;
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
	    H2UP_CONN_WINDOW) != 0)
		goto bad;
	s->u = u;
	s->ep = x->ep;
	s->w = x->w;
	/* records come by the dozen per read */
	conn_batch_reads(u->c);
	s->flush.run = session_flush_deferred;
	if (s->ep->rt)
		atomic_store(&s->ep->rt->h2, true);
	s->idle_timeout_ms = x->svc->conf->pool.idle_timeout;
	s->next = s->w->h2ups;
	if (s->w->h2ups)
		s->w->h2ups->prev = s;
	s->w->h2ups = s;
	conn_set_cb(u->c, session_event, s);
	return s;
bad:
	if (cb)
		nghttp2_session_callbacks_del(cb);
	if (opt)
		nghttp2_option_del(opt);
	if (s && s->ng)
		nghttp2_session_del(s->ng);
	if (s && s->timer)
		event_free(s->timer);
	free(s);
	return NULL;
}

/* A session of W's to EP with room for one more stream, whose paused
 * streams hold little (or, ANY_HELD, however much: with
 * pool.max_per_endpoint reached no other connection may open, and its
 * window is open whatever its paused streams hold). */
static struct h2up *
session_with_room(struct worker *w, const struct endpoint *ep, bool any_held)
{
	for (struct h2up *s = w->h2ups; s; s = s->next)
		if (s->ep == ep && !s->closed && !s->doomed &&
		    (any_held || s->held <= H2UP_HELD_ADMIT) &&
		    nghttp2_session_check_request_allowed(s->ng) &&
		    s->streams < nghttp2_session_get_remote_settings(s->ng,
		    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
			return s;
	return NULL;
}

bool
h2_up_has_room(struct worker *w, const struct endpoint *ep)
{
	return session_with_room(w, ep, true) != NULL;
}

/* ------------------------------------------------------------ ops ---- */

static bool
stream_submit(struct exchange *x, struct h2up *s)
{
	struct h2up_stream *st = h2_stream_alloc(sizeof(*st),
	    offsetof(struct h2up_stream, head.h));
	nghttp2_nv nv[H2_MAX_NV];
	nghttp2_data_provider dp = { .read_callback = read_req_body };
	size_t n;
	int32_t id;

	if (st == NULL) {
		proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, "out of memory");
		return false;
	}
	http_head_init(&st->head);
	st->s = s;
	st->x = x;
	x->up2 = st;
	st->next = s->list;
	if (s->list)
		s->list->prev = st;
	s->list = st;
	s->changes++;
	n = request_fields(st, x, nv, sizeof(nv) / sizeof(nv[0]), x->svc->conf->tls.enabled);
	/* lent (h2_lend_fields) only where nothing moves or rewrites x->req
	 * before the HEADERS are packed or dropped: a request whose body is
	 * all in (proxy_request_body adds to x->req no more), not a hedge's
	 * (its copy of the request goes with the hedge while a takeover
	 * hands its stream on). x->req changes again only after the attempt
	 * let go of the stream (attempt_begin's digits, the key wiped, the
	 * connection's next request), and letting go of one unsent resets
	 * it, which cancels its HEADERS in nghttp2's queue. */
	if (x->req_done && x->hedge_of == NULL)
		h2_lend_fields(nv, n);
	body_add(st, x->req.p + x->req_head_len, x->req.len - x->req_head_len);
	if (x->req_done && !st->chunked_req)
		st->out_eof = true;
	dp.source.ptr = st;
	id = n == 0 ? -1 : nghttp2_submit_request(s->ng, NULL, nv, n,
	    x->req_done && buf_len(&st->out) == 0 && !st->chunked_req ? NULL : &dp, st);
	if (id < 0) {
		proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_ERROR,
		    "HTTP/2 request could not be submitted");
		return false;
	}
	st->id = id;
	streams_add(s, 1);
	event_del(s->timer);
	session_flush(s);
	return x->live && x->up2 == st;
}

static bool
h2_start(struct exchange *x)
{
	struct h2up *s = session_with_room(x->w, x->ep, false);
	struct upconn *u;
	char msg[256];

	/* a connection holding much for paused streams takes no new one
	 * while another may open; at the bound it does (attempt_pool_room) */
	if (s == NULL && !attempt_pool_below_bound(x, x->ep))
		s = session_with_room(x->w, x->ep, true);

	/* a session GOAWAY closed has no room: a re-send is never put on it */
	x->resend_fresh = false;
	if (s == NULL) {
		u = pool_connect(x->w, x->svc, x->ep, NULL, NULL, clock_now_ms());
		if (u == NULL) {
			snprintf(msg, sizeof(msg), "connect %s: %s", x->ep->addr_text, strerror(errno));
			proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, msg);
			return false;
		}
		metrics_conn_opened(x->w->ms, exchange_metrics_id(x));
		if ((s = session_new(x, u)) == NULL) {
			pool_discard(u);
			proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE,
			    "out of memory");
			return false;
		}
		s->connected = !conn_handshaking(u->c);
	} else if (s->connected) {
		x->connect_deadline_ms = 0;
	}	/* else the connect (or handshake) under way is this attempt's too */
	return stream_submit(x, s);
}

bool
h2_up_adopt(struct exchange *x)
{
	struct upconn *u = x->up;
	struct h2up *s;

	x->up = NULL;
	x->upops = &h2_up_ops;
	x->ep->speaks_h2 = true;	/* its next attempts start as streams */
	if ((s = session_new(x, u)) == NULL) {
		pool_discard(u);
		proxy_attempt_failed(x, AR_CONNECT_FAILURE, FE_SERVICE_UNAVAILABLE, "out of memory");
		return false;
	}
	s->connected = true;
	proxy_attempt_connected(x);
	if (!x->live)
		return false;
	if (!stream_submit(x, s))
		return false;
	/* body the client sent while ALPN was pending waits for this */
	if (!x->req_done)
		x->down->resume_body(x);
	return true;
}

static bool
h2_send(struct exchange *x, const void *p, size_t n)
{
	struct h2up_stream *st = x->up2;

	body_add(st, p, n);
	if (x->req_done && !st->chunked_req)
		st->out_eof = true;
	nghttp2_session_resume_data(st->s->ng, st->id);
	session_flush(st->s);
	return true;
}

static bool
h2_congested(const struct exchange *x)
{
	const struct h2up_stream *st = x->up2;

	return buf_len(&st->out) > H2UP_OUT_HIGH || conn_pending(st->s->u->c) > CONN_HIGH_MARK;
}

/* The client took what was sent: grant the response back to the peer. */
static void
h2_resume(struct exchange *x)
{
	struct h2up_stream *st = x->up2;

	/* what was staged goes first; while it waits to leave, the window
	 * stays shut (its drain calls again) */
	if (buf_len(&st->stage) > 0 && (!stage_flush(st) || x->down->congested(x)))
		return;
	if (st->unconsumed == 0)
		return;
	if (!st->closed && !st->s->closed) {
		nghttp2_session_consume_stream(st->s->ng, st->id, st->unconsumed);
		stream_taken(st, st->unconsumed);
		session_flush(st->s);
	}
	held_drop(st);
}

/* Whether an attempt still waits on a stream of S. */
static bool
session_awaited(const struct h2up *s)
{
	for (const struct h2up_stream *st = s->list; st; st = st->next)
		if (st->x != NULL)
			return true;
	return false;
}

static void
h2_release(struct exchange *x, bool reusable)
{
	struct h2up_stream *st = x->up2;
	struct h2up *s = st->s;

	(void)reusable;
	x->up2 = NULL;
	st->x = NULL;
	if (!s->closed && !s->connected && s->depth == 0 && !session_awaited(s)) {
		/* the last attempt that waited for the connect gives it up (its
		 * connect timed out, or its client went), as an HTTP/1.1
		 * connect is closed; a retry connects anew */
		session_close(s, "no attempt waits for the connect");	/* frees st */
		return;
	}
	if (!st->closed && !s->closed && st->id > 0) {
		/* unless both sides are done, the stream would stay open (one
		 * never submitted, id 0, is nghttp2's no more) */
		if (!(st->complete && st->out_eof && buf_len(&st->out) == 0)) {
			/* without memory for it the stream would stay open, and
			 * ST with it, until the session ends: it ends now */
			if (nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
			    NGHTTP2_CANCEL) != 0)
				session_doom(s);
			st->reset = true;
		}
		held_drop(st);
		buf_free(&st->stage);	/* no one takes it now */
		session_flush(s);
		return;		/* freed when nghttp2 closes it */
	}
	stream_free(st);
}

static bool
h2_request_sent(const struct exchange *x)
{
	return x->up2->sent_any || x->up2->got_any;
}

/* A GOAWAY's unprocessed streams and REFUSED_STREAM may go again. */
static bool
h2_unprocessed(const struct exchange *x)
{
	const struct h2up_stream *st = x->up2;

	return st->refused && !st->got_any;
}

static void
h2_handover(struct exchange *from, struct exchange *to, bool head)
{
	struct h2up_stream *st = from->up2;

	from->up2 = NULL;
	to->up2 = st;
	st->x = to;
	if (head)
		proxy_response_head(to, st->raw.p, &st->head, false);
}

/* The upstream took bytes of the connection: this stream's too when its
 * request body waits for the connection, not for its own window. */
static int64_t
h2_progress(struct exchange *x)
{
	struct h2up_stream *st = x->up2;
	struct h2up *s;

	if (st == NULL)
		return 0;
	s = st->s;
	if (s->closed || st->closed || st->id <= 0 || buf_len(&st->out) == 0 ||
	    nghttp2_session_get_stream_remote_window_size(s->ng, st->id) <= 0 ||
	    nghttp2_session_get_remote_window_size(s->ng) <= 0)
		return 0;
	return conn_progress_ms(s->u->c);
}

const struct up_ops h2_up_ops = {
	.start = h2_start,
	.send = h2_send,
	.congested = h2_congested,
	.resume = h2_resume,
	.release = h2_release,
	.request_sent = h2_request_sent,
	.unprocessed = h2_unprocessed,
	.handover = h2_handover,
	.progress = h2_progress,
};

void
h2_up_close_all(struct worker *w)
{
	while (w->h2ups)
		session_close(w->h2ups, "shutdown");
}

void
h2_up_retire_endpoint(struct worker *w, const struct endpoint *ep)
{
	for (struct h2up *s = w->h2ups; s; s = s->next)
		if (s->ep == ep)
			session_arm(s);
}

void
h2_up_close_endpoint(struct worker *w, const struct endpoint *ep)
{
	struct h2up *s = w->h2ups, *next;

	for (; s; s = next) {
		next = s->next;	/* session_close unlinks S (freed later) */
		if (s->ep == ep)
			session_close(s, "its endpoint is gone");
	}
}
