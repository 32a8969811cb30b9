/*
 * libFuzzer harness: hostile bytes from an HTTP/2 client, through the real
 * h2_down.c (its nghttp2 server session and callbacks: header collection
 * and limits, stream admission, pseudo-headers, trailers, request bodies,
 * resets, GOAWAY, the flood limits) and on to upstreams that answer
 * (fuzz_ferry.h: an in-process worker, an HTTP/1.1 and an h2c stub on its
 * loop, and a port that refuses).
 *
 * Input: byte 0 seeds the piece sizes (fuzz_common.h; at most 64 pieces),
 * byte 1 holds options (bit 0: no empty SETTINGS frame after the preface;
 * bit 1: the connection comes to the echo service's own port instead of
 * the outbound listener). The client sends the h2c preface, then that SETTINGS frame,
 * then the rest of the input, piece by piece, the loop settling between
 * pieces. The worker lives across inputs; each input is a new connection
 * (accepted through proxy_accept, so h1_down.c sees the preface and hands
 * it over as it does any h2c connection).
 *
 * Services (routed by :authority): "echo" (HTTP/1.1 stub, also on its own
 * port), "h2" (h2c stub), "down" (a port that refuses), "retry" (the
 * refusing port and the HTTP/1.1 stub, retried), "guard" (HTTP/1.1 stub
 * with header rules, an auth key and a short request timeout). Paths pick
 * what a stub does (fuzz_ferry.h, stub_kind()).
 *
 * Properties, beyond the sanitizers and leak detection:
 *  - what ferry wrote is valid HTTP/2 for the client that sent the input:
 *    an nghttp2 client session reads it with no protocol error (the
 *    reader below, which mirrors the client's streams, methods, SETTINGS
 *    and WINDOW_UPDATEs, so flow control and frame sizes are checked too);
 *  - every response head has a :status;
 *  - every complete request on a stream ferry took (not reset by the
 *    client, at most the last stream id of a GOAWAY, no error GOAWAY from
 *    ferry, the connection still open) got a final response or a
 *    RST_STREAM;
 *  - a complete echo answer carries exactly the DATA the client sent on
 *    that stream;
 *  - ferry's requests to the stubs are valid (fuzz_ferry.h);
 *  - once the client closes, the worker is idle again (fuzz_ferry.h:
 *    ff_idle_check: no stream, exchange, attempt or connection left,
 *    counters at zero, no descriptor leaked).
 */
#include "fuzz_ferry.h"
#include "h2_down.h"

#define OUT_MAX (32u << 20)
#define BODY_MAX (1u << 20)
#define MAX_TRACKED 4096

static const char yaml_fmt[] =
	"workers: 1\n"
	"log: { level: error, access: \"off\" }\n"
	"listeners:\n"
	"  outbound: { address: \"127.0.0.1:%u\", max_request_body: 512KiB }\n"
	"  admin: { address: \"127.0.0.1:%u\" }\n"
	"defaults:\n"
	"  retries: { max: 0 }\n"
	"  circuit_breaker: { consecutive_failures: 0 }\n"
	"  outlier_detection: { consecutive_failures: 0 }\n"
	"  load_balancer: round_robin\n"
	"services:\n"
	"  echo:\n"
	"    endpoints: [\"127.0.0.1:%u\"]\n"
	"  h2:\n"
	"    endpoints: [\"127.0.0.1:%u\"]\n"
	"    protocol: h2\n"
	"  down:\n"
	"    endpoints: [\"127.0.0.1:%u\"]\n"
	"  retry:\n"
	"    endpoints: [\"127.0.0.1:%5$u\", \"127.0.0.1:%3$u\"]\n"
	"    retries: { max: 2, backoff: { base: 0ms, max: 0ms },\n"
	"      budget: { ratio: 100, min_per_second: 1000000 } }\n"
	"  guard:\n"
	"    endpoints: [\"127.0.0.1:%3$u\"]\n"
	"    hosts: [guard.example]\n"
	"    auth: { key_env: FERRY_FUZZ_SERVICE_KEY }\n"
	"    headers:\n"
	"      request: { set: { x-tenant: fuzz }, add: { x-env: test }, remove: [x-debug] }\n"
	"      response: { set: { x-frame-options: DENY }, remove: [x-stub] }\n"
	"    rate_limit: { rps: 1000000, burst: 1000000 }\n"
	"  listened:\n"
	"    endpoints: [\"127.0.0.1:%3$u\"]\n"
	"    listen: \"127.0.0.1:%6$u\"\n";

/* ------------------------------------------------- per input state ---- */

struct srec {
	int32_t id;
	/* the client's side, as the mirror read it */
	char method[16];
	bool head_method;
	bool req_end;			/* END_STREAM from the client */
	bool client_reset;
	bool body_capped;
	struct bbuf body;
	/* ferry's side, as the reader read it */
	bool block_status;		/* the header block being read has :status */
	bool block_echo;		/* and x-stub: echo */
	int block_code;
	bool final;			/* a final (>= 200) head */
	int status;
	bool ended;
	bool reset;
	bool echo;			/* x-stub: echo on the final head */
	bool resp_capped;
	struct bbuf resp;
};

static struct srec recs[MAX_TRACKED];
static size_t n_recs;
static int32_t last_opened;

/* the client's SETTINGS and WINDOW_UPDATEs, in order, for the reader */
struct ctl {
	bool settings;
	int32_t stream;
	int32_t increment;
	size_t niv;
	nghttp2_settings_entry iv[16];
};

static struct ctl *ctls;
static size_t n_ctls, cap_ctls;

static bool mirror_failed;		/* the client broke the connection */
static bool ferry_closed;		/* ferry closed it (bytes sent may be unread) */
static bool reader_goaway, reader_goaway_error;
static int32_t reader_goaway_last = INT32_MAX;

static struct srec *
rec(int32_t id)
{
	static size_t hint;

	if (hint < n_recs && recs[hint].id == id)
		return &recs[hint];
	for (size_t i = 0; i < n_recs; i++)
		if (recs[i].id == id)
			return &recs[hint = i];
	return NULL;
}

static void
recs_reset(void)
{
	for (size_t i = 0; i < n_recs; i++) {
		bb_free(&recs[i].body);
		bb_free(&recs[i].resp);
	}
	memset(recs, 0, n_recs * sizeof(recs[0]));
	n_recs = 0;
	last_opened = 0;
	n_ctls = 0;
	mirror_failed = false;
	reader_goaway = reader_goaway_error = false;
	reader_goaway_last = INT32_MAX;
}

static struct ctl *
ctl_new(void)
{
	if (n_ctls == cap_ctls) {
		cap_ctls = cap_ctls ? cap_ctls * 2 : 64;
		if ((ctls = realloc(ctls, cap_ctls * sizeof(*ctls))) == NULL)
			abort();
	}
	memset(&ctls[n_ctls], 0, sizeof(ctls[0]));
	return &ctls[n_ctls++];
}

/* -------------------------------------------------------- mirror ---- */

/*
 * A server session of the same nghttp2, fed the same bytes: it tells
 * which streams the client opened, with which method, and which SETTINGS
 * and WINDOW_UPDATEs it sent. Its windows never close (it consumes at
 * once), so it reads at least as far as ferry's session does.
 */

static int
m_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *arg)
{
	(void)ng;
	(void)arg;
	if (hd->type == NGHTTP2_HEADERS && (hd->stream_id & 1) && hd->stream_id > last_opened) {
		last_opened = hd->stream_id;
		if (n_recs < MAX_TRACKED)
			recs[n_recs++].id = hd->stream_id;
	}
	return 0;
}

static int
m_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct srec *r = rec(frame->hd.stream_id);

	(void)ng;
	(void)flags;
	(void)arg;
	if (r == NULL || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (nlen == 7 && memcmp(name, ":method", 7) == 0 && r->method[0] == '\0' &&
	    vlen > 0 && vlen < sizeof(r->method)) {
		memcpy(r->method, value, vlen);
		r->head_method = vlen == 4 && memcmp(value, "HEAD", 4) == 0;
	}
	return 0;
}

static int
m_frame(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct srec *r = rec(frame->hd.stream_id);
	struct ctl *c;

	(void)ng;
	(void)arg;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		if (r && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			r->req_end = true;
		break;
	case NGHTTP2_RST_STREAM:
		if (r)
			r->client_reset = true;
		break;
	case NGHTTP2_SETTINGS:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK)
			break;
		c = ctl_new();
		c->settings = true;
		c->niv = frame->settings.niv < 16 ? frame->settings.niv : 16;
		if (c->niv > 0)
			memcpy(c->iv, frame->settings.iv, c->niv * sizeof(c->iv[0]));
		break;
	case NGHTTP2_WINDOW_UPDATE:
		c = ctl_new();
		c->stream = frame->hd.stream_id;
		c->increment = frame->window_update.window_size_increment;
		break;
	default:
		break;
	}
	return 0;
}

static int
m_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct srec *r = rec(id);

	(void)flags;
	(void)arg;
	nghttp2_session_consume(ng, id, len);
	if (r == NULL)
		return 0;
	if (r->body.len + len <= BODY_MAX)
		bb_add(&r->body, data, len);
	else
		r->body_capped = true;
	return 0;
}

static void
mirror_read(const uint8_t *p, size_t len)
{
	static nghttp2_session_callbacks *cb;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 256 * 1024 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HTTP_MAX_HEAD },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	nghttp2_session *ng;
	size_t off = 0;

	if (cb == NULL) {
		PROP(nghttp2_session_callbacks_new(&cb) == 0);
		nghttp2_session_callbacks_set_on_begin_frame_callback(cb, m_begin_frame);
		nghttp2_session_callbacks_set_on_header_callback(cb, m_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cb, m_frame);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, m_data);
	}
	PROP(nghttp2_session_server_new(&ng, cb, NULL) == 0);
	nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
	nghttp2_session_set_local_window_size(ng, NGHTTP2_FLAG_NONE, 0, 1024 * 1024);
	/* frame by frame size pieces, sending (to nowhere) in between, so
	 * that its window updates go out as they are due */
	while (off < len) {
		const uint8_t *o;
		size_t n = len - off < 4096 ? len - off : 4096;
		ssize_t rv = nghttp2_session_mem_recv(ng, p + off, n);

		if (rv < 0) {
			mirror_failed = true;
			break;
		}
		off += (size_t)rv;
		while (nghttp2_session_mem_send(ng, &o) > 0)
			;
		if (!nghttp2_session_want_read(ng)) {
			mirror_failed = true;
			break;
		}
	}
	nghttp2_session_del(ng);
}

/* -------------------------------------------------------- reader ---- */

/*
 * A client session reading what ferry wrote, set up as the fuzz client
 * was: the same streams opened (same ids and methods, each half-closed as
 * if its request were complete, which any response frame is valid for),
 * the same SETTINGS (applied as ferry acknowledges them) and the same
 * window increments. Any protocol error it finds is ferry's.
 */

static const char *reader_err;

static int
r_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct srec *r = rec(frame->hd.stream_id);

	(void)ng;
	(void)flags;
	(void)arg;
	/* after a 1xx, nghttp2 files the next head under HCAT_HEADERS,
	 * like trailers: a block with :status is a head */
	if (r == NULL || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
		r->block_status = true;
		r->block_code = 0;
		for (size_t i = 0; i < vlen && i < 4; i++)
			r->block_code = r->block_code * 10 + (value[i] - '0');
	} else if (nlen == 6 && memcmp(name, "x-stub", 6) == 0) {
		r->block_echo = vlen == 4 && memcmp(value, "echo", 4) == 0;
	}
	return 0;
}

static int
r_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct srec *r = rec(frame->hd.stream_id);

	(void)ng;
	(void)arg;
	if (r != NULL) {
		r->block_status = false;
		r->block_echo = false;
	}
	return 0;
}

static int
r_frame(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct srec *r = rec(frame->hd.stream_id);

	(void)ng;
	(void)arg;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (r == NULL)
			break;
		/* every response head ferry sends has a :status */
		if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
			PROP(r->block_status);
		if (r->block_status && !r->final) {
			r->status = r->block_code;
			r->final = r->status >= 200;
			r->echo = r->block_echo;
		}
		if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
			r->ended = true;
		break;
	case NGHTTP2_DATA:
		if (r && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			r->ended = true;
		break;
	case NGHTTP2_RST_STREAM:
		if (r)
			r->reset = true;
		break;
	case NGHTTP2_GOAWAY:
		reader_goaway = true;
		if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
			reader_goaway_error = true;
		if (frame->goaway.last_stream_id < reader_goaway_last)
			reader_goaway_last = frame->goaway.last_stream_id;
		break;
	default:
		break;
	}
	return 0;
}

static int
r_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct srec *r = rec(id);

	(void)ng;
	(void)flags;
	(void)arg;
	if (r == NULL)
		return 0;
	if (r->resp.len + len <= BODY_MAX)
		bb_add(&r->resp, data, len);
	else
		r->resp_capped = true;
	return 0;
}

static int
r_invalid(nghttp2_session *ng, const nghttp2_frame *frame, int err, void *arg)
{
	(void)ng;
	(void)arg;
	fprintf(stderr, "reader: invalid frame from ferry: type %u stream %d flags %#x: %s\n",
	    frame->hd.type, frame->hd.stream_id, frame->hd.flags, nghttp2_strerror(err));
	reader_err = "invalid frame";
	return 0;
}

static int
r_error(nghttp2_session *ng, int code, const char *msg, size_t len, void *arg)
{
	(void)ng;
	(void)arg;
	fprintf(stderr, "reader: nghttp2 error %d: %.*s\n", code, (int)len, msg);
	reader_err = "protocol error";
	return 0;
}

static int
id_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	return (x > y) - (x < y);
}

/* The mirror stopped where its own session broke: ferry's session, whose
 * streams' states differ (it resets streams the mirror has no reason to),
 * may have read on, answered streams the client opened later and
 * acknowledged its later SETTINGS. The reader opens those streams too
 * (the client's HEADERS frames in its bytes P, LEN past the last stream
 * the mirror saw) and sends those SETTINGS (the client's past the ones
 * the mirror recorded), so that each acknowledgement has its SETTINGS. */
static void
reader_open_unseen(nghttp2_session *ng, const uint8_t *p, size_t len)
{
	static int32_t ids[MAX_TRACKED];
	size_t n = 0, settings = 0, seen = 0;
	const nghttp2_nv nv[] = {
		NV(":method", "GET"), NV(":scheme", "http"), NV(":path", "/"),
		NV(":authority", "fuzz"),
	};

	for (size_t i = 0; i < n_ctls; i++)
		seen += ctls[i].settings;

	if (len >= H2_PREFACE_LEN && memcmp(p, H2_PREFACE, H2_PREFACE_LEN) == 0) {
		p += H2_PREFACE_LEN;
		len -= H2_PREFACE_LEN;
	}
	while (len >= 9 && n < MAX_TRACKED) {
		size_t flen = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		int32_t sid = (int32_t)(((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 |
		    (uint32_t)p[7] << 8 | p[8]) & 0x7fffffff);

		if (p[3] == NGHTTP2_HEADERS && (sid & 1) && sid > last_opened)
			ids[n++] = sid;
		if (flen > len - 9)
			break;
		if (p[3] == NGHTTP2_SETTINGS && sid == 0 && !(p[4] & NGHTTP2_FLAG_ACK) &&
		    flen % 6 == 0 && settings++ >= seen) {
			nghttp2_settings_entry iv[16];
			size_t niv = 0;

			for (size_t k = 0; k < flen / 6 && niv < 16; k++) {
				const uint8_t *e = p + 9 + 6 * k;

				iv[niv].settings_id = e[0] << 8 | e[1];
				iv[niv++].value = (uint32_t)e[2] << 24 | (uint32_t)e[3] << 16 |
				    (uint32_t)e[4] << 8 | e[5];
			}
			/* out of range: ferry's session refused it and will not
			 * acknowledge it; an empty one stands in, unanswered */
			if (nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, iv, niv) != 0)
				PROP(nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0) == 0);
		}
		p += 9 + flen;
		len -= 9 + flen;
	}
	qsort(ids, n, sizeof(ids[0]), id_cmp);
	for (size_t i = 0; i < n; i++)
		if ((i == 0 || ids[i] != ids[i - 1]) &&
		    nghttp2_session_set_next_stream_id(ng, ids[i]) == 0)
			PROP(nghttp2_submit_request(ng, NULL, nv, 4, NULL, NULL) == ids[i]);
}

static void
reader_read(const uint8_t *p, size_t len, const uint8_t *client, size_t client_len)
{
	static nghttp2_session_callbacks *cb;
	static nghttp2_option *opt;
	nghttp2_session *ng;
	const uint8_t *o;
	size_t off = 0;

	if (cb == NULL) {
		PROP(nghttp2_session_callbacks_new(&cb) == 0);
		nghttp2_session_callbacks_set_on_begin_headers_callback(cb, r_begin_headers);
		nghttp2_session_callbacks_set_on_header_callback(cb, r_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cb, r_frame);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, r_data);
		nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, r_invalid);
		nghttp2_session_callbacks_set_error_callback2(cb, r_error);
		PROP(nghttp2_option_new(&opt) == 0);
		nghttp2_option_set_no_auto_window_update(opt, 1);
		nghttp2_option_set_peer_max_concurrent_streams(opt, 0x7fffffff);
	}
	reader_err = NULL;
	PROP(nghttp2_session_client_new2(&ng, cb, NULL, opt) == 0);
	for (size_t i = 0; i < n_ctls; i++) {
		/* one SETTINGS for each of the client's, so the ACKs match */
		if (ctls[i].settings &&
		    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, ctls[i].iv, ctls[i].niv) != 0)
			PROP(nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0) == 0);
	}
	for (size_t i = 0; i < n_recs; i++) {
		const nghttp2_nv nv[] = {
			NV(":method", recs[i].method[0] ? recs[i].method : "GET"),
			NV(":scheme", "http"), NV(":path", "/"), NV(":authority", "fuzz"),
		};

		if (nghttp2_session_set_next_stream_id(ng, recs[i].id) != 0)
			continue;
		PROP(nghttp2_submit_request(ng, NULL, nv, 4, NULL, NULL) == recs[i].id);
	}
	if (mirror_failed)
		reader_open_unseen(ng, client, client_len);
	while (nghttp2_session_mem_send(ng, &o) > 0)
		;
	for (size_t i = 0; i < n_ctls; i++)
		if (!ctls[i].settings)
			nghttp2_submit_window_update(ng, NGHTTP2_FLAG_NONE, ctls[i].stream,
			    ctls[i].increment);
	while (nghttp2_session_mem_send(ng, &o) > 0)
		;
	while (off < len) {
		ssize_t rv = nghttp2_session_mem_recv(ng, p + off, len - off);

		if (rv < 0) {
			fprintf(stderr, "reader: %s\n", nghttp2_strerror((int)rv));
			reader_err = "fatal";
			break;
		}
		if (rv == 0)
			break;
		off += (size_t)rv;
	}
	nghttp2_session_del(ng);
	PROP(reader_err == NULL);
}

/* ------------------------------------------------------ checks ---- */

/* FERRY_FUZZ_LOG=1: the frames each side sent, to see what an input does */
static void
dump_frames(const char *who, const uint8_t *p, size_t len)
{
	static const char *const names[] = { "DATA", "HEADERS", "PRIORITY", "RST_STREAM",
	    "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION" };

	if (getenv("FERRY_FUZZ_LOG") == NULL)
		return;
	if (len >= H2_PREFACE_LEN && memcmp(p, H2_PREFACE, H2_PREFACE_LEN) == 0) {
		p += H2_PREFACE_LEN;
		len -= H2_PREFACE_LEN;
	}
	while (len >= 9) {
		size_t n = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		uint32_t sid = ((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 |
		    p[8]) & 0x7fffffff;

		fprintf(stderr, "%s: %s flags %#x stream %u length %zu", who,
		    p[3] < 10 ? names[p[3]] : "?", p[4], sid, n);
		if (p[3] == 0 && n <= len - 9)
			fprintf(stderr, " \"%.*s\"", (int)(n < 60 ? n : 60), (const char *)p + 9);
		if ((p[3] == 3 || p[3] == 7) && n >= 4 && n <= len - 9)
			fprintf(stderr, " error %u", (unsigned)p[9 + (p[3] == 7 ? 4 : 0) + 3]);
		fputc('\n', stderr);
		if (n > len - 9)
			break;
		p += 9 + n;
		len -= 9 + n;
	}
}

static void
check_streams(void)
{
	for (size_t i = 0; i < n_recs; i++) {
		struct srec *r = &recs[i];

		/* a complete request on a stream ferry kept is answered */
		if (r->req_end && !r->client_reset && !reader_goaway_error && !mirror_failed &&
		    !ferry_closed && r->id <= reader_goaway_last && !(r->final || r->reset)) {
			fprintf(stderr, "stream %d: complete request (%s), no answer\n", r->id,
			    r->method);
			PROP(r->final || r->reset);
		}
		/* the echo stubs answer with the body ferry gave them */
		if (r->final && r->status == 200 && r->echo && r->ended && !r->reset &&
		    !r->head_method && r->req_end && !r->body_capped && !r->resp_capped) {
			if (r->resp.len != r->body.len ||
			    (r->body.len && memcmp(r->resp.p, r->body.p, r->body.len) != 0))
				fprintf(stderr, "stream %d: echo of %zu bytes for %zu sent\n", r->id,
				    r->resp.len, r->body.len);
			PROP(r->resp.len == r->body.len);
			PROP(r->body.len == 0 || memcmp(r->resp.p, r->body.p, r->body.len) == 0);
		}
	}
}

/* ----------------------------------------------------- libFuzzer ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	ff_init(yaml_fmt);
	PROP(ff.svc_listener != NULL);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct bbuf wire, out;
	static const uint8_t empty_settings[9] = { 0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0 };
	struct pieces pc;
	bool trunc = false, open = true, stuck_out = false;
	size_t sent = 0;
	int fd, fds_before;

	if (size < 2 || size > (1u << 20))
		return 0;
	fds_before = ff_count_fds();
	recs_reset();
	pieces_init(&pc, data[0]);
	wire.len = 0;
	out.len = 0;
	bb_add(&wire, H2_PREFACE, H2_PREFACE_LEN);
	if (!(data[1] & 1))
		bb_add(&wire, empty_settings, sizeof(empty_settings));
	bb_add(&wire, data + 2, size - 2);

	fd = ff_connect(data[1] & 2 ? ff.svc_listener : ff.outbound, 0);
	while (sent < wire.len && open) {
		/* at most about 64 pieces: each costs a settle */
		size_t n = pieces_next(&pc, wire.len - sent), done = 0, least = wire.len / 64 + 1;
		int stuck = 0;

		if (n < least)
			n = least < wire.len - sent ? least : wire.len - sent;

		while (done < n && open) {
			ssize_t w = send(fd, wire.p + sent + done, n - done, MSG_NOSIGNAL);

			if (w > 0) {
				done += (size_t)w;
				stuck = 0;
				continue;
			}
			if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				open = false;	/* ferry closed: the rest is never read */
				break;
			}
			/* ferry reads no more for now: let it work */
			open = ff_settle(fd, &out, OUT_MAX, &trunc);
			if (open && ++stuck > 50) {
				open = false;	/* ferry reads no more: give up */
				stuck_out = true;
			}
		}
		sent += done;
		if (open)
			open = ff_settle(fd, &out, OUT_MAX, &trunc);
	}
	if (open)
		open = ff_settle(fd, &out, OUT_MAX, &trunc);
	ferry_closed = !open && !stuck_out;

	/* what ferry said, read as the client that sent the input would */
	mirror_read(wire.p, sent);
	dump_frames("client", wire.p, sent);
	dump_frames("ferry", out.p, out.len);
	if (!trunc) {
		reader_read(out.p, out.len, wire.p, sent);
		check_streams();
	}

	/* the client goes: everything of the connection must go with it */
	close(fd);
	for (int i = 0; i < 100 && (ff.w.h2conns != NULL || ff.w.clients != NULL); i++)
		ff_settle(-1, NULL, 0, NULL);
	ff_idle_check(fds_before);
	recs_reset();	/* now: libFuzzer counts mallocs and frees per input */
	return 0;
}
