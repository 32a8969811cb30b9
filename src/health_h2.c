#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "h2_mem.h"
#include "health_h2.h"
#include "http1.h"

/* a check sends a few small frames; more queued than this is a peer
 * making us answer a flood */
#define HC_H2_OUT_MAX (256 * 1024)

struct hc_h2 {
	nghttp2_session *ng;
	int32_t sid;
	int status;		/* of the head being read; 0 before :status */
	enum hc_h2_result result;
	char err[128];
};

static void
fail(struct hc_h2 *h, const char *fmt, const char *arg)
{
	if (h->result != HC_H2_MORE)
		return;
	h->result = HC_H2_FAILED;
	snprintf(h->err, sizeof(h->err), fmt, arg);
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct hc_h2 *h = arg;

	(void)ng;
	(void)flags;
	if (frame->hd.stream_id != h->sid || nlen != 7 || memcmp(name, ":status", 7) != 0)
		return 0;
	/* nghttp2 has checked the form: three digits */
	h->status = vlen == 3 ? (value[0] - '0') * 100 + (value[1] - '0') * 10 +
	    (value[2] - '0') : 0;
	return 0;
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct hc_h2 *h = arg;

	(void)ng;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != h->sid ||
	    h->result != HC_H2_MORE)
		return 0;
	if (h->status >= 100 && h->status < 200) {
		h->status = 0;		/* interim: the final head follows */
		return 0;
	}
	if (h->status == 0) {
		fail(h, "malformed response: %s", "no :status");
		return 0;
	}
	h->result = HC_H2_DONE;
	return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t code, void *arg)
{
	struct hc_h2 *h = arg;

	(void)ng;
	if (sid != h->sid)
		return 0;
	if (code == NGHTTP2_NO_ERROR)
		fail(h, "%s", "stream closed before the response head");
	else
		fail(h, "the server reset the stream (%s)", nghttp2_http2_strerror(code));
	return 0;
}

static int
on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int code, void *arg)
{
	struct hc_h2 *h = arg;

	(void)ng;
	if (frame->hd.type == NGHTTP2_HEADERS)
		fail(h, "request not sent: %s", nghttp2_strerror(code));
	return 0;
}

/* nghttp2 ends a session that broke the protocol with a GOAWAY of its own */
static int
on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *arg)
{
	struct hc_h2 *h = arg;

	(void)ng;
	if (frame->hd.type == NGHTTP2_GOAWAY)
		fail(h, "bad HTTP/2 from the server: %s",
		    nghttp2_http2_strerror(frame->goaway.error_code));
	return 0;
}

struct hc_h2 *
hc_h2_new(const char *path, const char *authority, bool tls, const char *key)
{
	struct hc_h2 *h = calloc(1, sizeof(*h));
	nghttp2_session_callbacks *cb = NULL;
	const nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, HTTP_MAX_HEAD },
	};
#define NV(n, v, f) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), \
	NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE | (f) }
	/* the key never enters either side's HPACK table */
	const nghttp2_nv nv[] = {
		NV(":method", "GET", 0),
		NV(":scheme", tls ? "https" : "http", 0),
		NV(":authority", authority, 0),
		NV(":path", path, 0),
		NV("user-agent", "ferry-health-check", 0),
		NV("x-service-auth", key ? key : "", NGHTTP2_NV_FLAG_NO_INDEX),
	};
#undef NV

	if (h == NULL || nghttp2_session_callbacks_new(&cb) != 0)
		goto bad;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	/* its frames carry the service key: wiped when freed */
	if (nghttp2_session_client_new3(&h->ng, cb, h, NULL, h2_mem()) != 0)
		goto bad;
	nghttp2_session_callbacks_del(cb);
	cb = NULL;
	if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv,
	    sizeof(iv) / sizeof(iv[0])) != 0)
		goto bad;
	h->sid = nghttp2_submit_request(h->ng, NULL, nv,
	    sizeof(nv) / sizeof(nv[0]) - (key ? 0 : 1), NULL, NULL);
	if (h->sid < 0)
		goto bad;
	return h;
bad:
	nghttp2_session_callbacks_del(cb);
	hc_h2_free(h);
	return NULL;
}

void
hc_h2_free(struct hc_h2 *h)
{
	if (h == NULL)
		return;
	nghttp2_session_del(h->ng);
	free(h);
}

enum hc_h2_result
hc_h2_output(struct hc_h2 *h, struct buf *out)
{
	const uint8_t *p;
	ssize_t n;

	while (h->result == HC_H2_MORE && (n = nghttp2_session_mem_send(h->ng, &p)) != 0) {
		if (n < 0)
			fail(h, "%s", nghttp2_strerror((int)n));
		else if (!buf_append(out, p, (size_t)n, HC_H2_OUT_MAX))
			fail(h, "%s", "too much to send: the server floods");
	}
	return h->result;
}

enum hc_h2_result
hc_h2_input(struct hc_h2 *h, const void *p, size_t n)
{
	ssize_t rv;

	if (h->result != HC_H2_MORE)
		return h->result;
	rv = nghttp2_session_mem_recv(h->ng, p, n);
	if (rv < 0)
		fail(h, "bad HTTP/2 from the server: %s", nghttp2_strerror((int)rv));
	else if (h->result == HC_H2_MORE && !nghttp2_session_want_read(h->ng))
		fail(h, "%s", "the server ended the session before the response head");
	return h->result;
}

enum hc_h2_result
hc_h2_eof(struct hc_h2 *h)
{
	fail(h, "%s", "connection closed before the response head");
	return h->result;
}

int
hc_h2_status(const struct hc_h2 *h)
{
	return h->result == HC_H2_DONE ? h->status : 0;
}

const char *
hc_h2_error(const struct hc_h2 *h)
{
	return h->result == HC_H2_FAILED ? h->err : NULL;
}
