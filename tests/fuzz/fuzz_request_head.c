/*
 * libFuzzer harness: request heads as ferry's listeners read them.
 * src/http1.c in request mode (bytes arriving in pieces), headers_classify,
 * the refusals of request_begin, the ID checks of ids_decide, target and
 * Host splitting; then the body (dechunked, as counted for limits) and the
 * pipelined requests after it.
 *
 * Input: byte 0 seeds the piece sizes; the rest is what the client sent.
 */
#include "fuzz_common.h"
#include "ids.h"

#define MAX_MESSAGES 8

static bool
within(const char *p, size_t n, const char *base, size_t len)
{
	return p >= base && p + n <= base + len;
}

static void
check_target(const char *msg, const struct http_head *h)
{
	const char *t = msg + h->target.off, *path, *auth;
	size_t path_len, auth_len;

	target_split(t, h->target.len, &path, &path_len, &auth, &auth_len);
	/* "http://svc" has no path: target_split answers a static "/" */
	PROP(within(path, path_len, t, h->target.len) ||
	    (path_len == 1 && path[0] == '/'));
	if (auth != NULL)
		PROP(within(auth, auth_len, t, h->target.len));
	else
		PROP(auth_len == 0);
}

static void
check_host(const char *msg, const struct http_head *h)
{
	const struct http_header *host = headers_find(h, HDR_HOST);
	const char *v, *name;
	size_t name_len;

	if (host == NULL)
		return;
	v = msg + host->value.off;
	host_strip_port(v, host->value.len, &name, &name_len);
	PROP(within(name, name_len, v, host->value.len));
}

/* ids_decide(): an app's ID is copied into a 129-byte buffer when valid. */
static void
check_ids(const char *msg, const struct http_head *h)
{
	const struct http_header *c = headers_find(h, HDR_CORRELATION_ID);
	const struct http_header *r = headers_find(h, HDR_REQUEST_ID);
	const struct http_header *t = headers_find(h, HDR_TRACEPARENT);

	if (c != NULL && ids_valid(msg + c->value.off, c->value.len))
		PROP(c->value.len >= 1 && c->value.len <= 128);
	if (r != NULL && ids_valid(msg + r->value.off, r->value.len))
		PROP(r->value.len >= 1 && r->value.len <= 128);
	if (t != NULL && ids_traceparent_valid(msg + t->value.off, t->value.len))
		PROP(t->value.len >= TRACEPARENT_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_parser hp;
	static struct http_head head;
	struct pieces pc;
	struct sink sink = { 0 };
	const char *in;
	size_t len;

	if (size < 1)
		return 0;
	pieces_init(&pc, data[0]);
	in = (const char *)data + 1;
	len = size - 1;
	/* the static head may have outgrown its inline table last run */
	http_head_release(&head);
	http_parser_init(&hp, false, &head);
	hp.on_data = sink_data;
	hp.arg = &sink;
	for (int m = 0; m < MAX_MESSAGES && len > 0; m++) {
		const char *refusal;
		struct body_result b;
		size_t fed;
		enum http_status st = feed_head(&hp, in, len, &pc, &fed);
		bool ambiguous;

		if (st == HTTP_ERROR) {
			PROP(hp.err != HTTP_ERR_NONE);
			return 0;
		}
		if (st == HTTP_NEED_MORE)
			return 0;
		PROP(st == HTTP_HEAD_DONE);
		check_head(in, &head, fed, false);
		ambiguous = headers_classify(in, &head) != 0;
		PROP(ambiguous == (headers_count(&head, HDR_HOST) > 1));
		check_ids(in, &head);
		check_target(in, &head);
		check_host(in, &head);
		refusal = request_refusal(in, &head, ambiguous);
		if (refusal == NULL)
			check_framing(in, &head);
		if (refusal != NULL || head.upgrade)
			return 0;	/* closed, or the rest is a tunnel */

		in += head.head_len;
		len -= head.head_len;
		if (head.chunked || (head.has_length && head.content_length > 0)) {
			/* request_begin checks max_request_body against the
			 * counted bytes: decoded data and chunk extensions */
			hp.dechunk = true;
			sink.n = 0;
			b = feed_body(&hp, in, len, &pc);
			PROP(b.raw <= len);
			check_counted(sink.n, &b, in, len);
			if (b.st != HTTP_MSG_DONE)
				return 0;
			if (head.has_length)
				PROP(b.counted == head.content_length && b.raw == b.counted &&
				    sink.n == b.counted);
			else
				PROP(b.raw > b.counted);
			in += b.raw;
			len -= b.raw;
		}
		/* exchange_done(): the next request on the connection */
		http_parser_reset(&hp);
	}
	return 0;
}
