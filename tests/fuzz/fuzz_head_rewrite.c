/*
 * libFuzzer harness: the heads ferry writes (headers_build_request towards
 * a service, headers_build_response towards the app), with the arguments
 * the HTTP/1 codecs (h1_down.c, h1_up.c) would pass. Re-parse property: every head
 * ferry builds and would send is accepted by ferry's own parser with the
 * same limits (the next ferry on the path), parses whole, has the framing
 * ferry used for the body it forwards (chunked, Content-Length and its
 * value, or neither) and no CR, LF or NUL inside a line (SPEC §5, §11).
 * A head the builder says is over the limits is one that parser refuses
 * as too large, and ferry sends it nowhere (431 or 502). Without header
 * rules, the sender's part of a head never grows (the limits count it,
 * not ferry's own kinds), and a head that leaves ferry's own kinds room
 * for one hop's additions is never refused.
 *
 * Input: byte 0 flags: bit 0 response instead of request; request: bit 1
 * inbound, bit 2 service key, bit 3 no Host of our own; response: bit 1
 * HTTP/1.0 client (dechunk), bit 2 keep-alive, bit 3 request was HEAD;
 * bit 4 upgrade asked for; bit 5 header rules (SPEC §15) set one header
 * and add RULE_ADDS. The rest is the head (and anything after it).
 */
#include "config.h"
#include "fuzz_common.h"
#include "ids.h"

static const char uuid_a[] = "2f1d6c1e-7a57-4d43-9a3b-7f8e9d0c1b2a";
static const char uuid_b[] = "9c4b2e60-1f3d-4e8a-b5c7-0d1e2f3a4b5c";
static const char new_tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/* header rules: the service's set one header and add RULE_ADDS more */
#define RULE_ADDS 12
static struct conf_hrule rule_set[] = { { "x-tenant", "t-42", false } };
static struct conf_hrule rule_add[RULE_ADDS];
static const struct conf_hrules rules = {
	.set = rule_set, .n_set = 1, .add = rule_add, .n_add = RULE_ADDS,
};

static void
rules_init(void)
{
	static char names[RULE_ADDS][16];

	for (int i = 0; i < RULE_ADDS; i++) {
		snprintf(names[i], sizeof(names[i]), "x-rule-%02d", i);
		rule_add[i] = (struct conf_hrule){ names[i], "r", false };
	}
}

/* The bytes of ferry's own kinds in H, as ferry writes them. */
static uint32_t
own_bytes(const struct http_head *h)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].own)
			n += http_field_bytes(h->h[i].name.len, h->h[i].value.len);
	return n;
}

/* Without rules, what ferry sends never counts for more of the sender's
 * than what it was sent (EXTRA_FIELDS and EXTRA_BYTES aside: a missing
 * path's "/", the Host ferry gives a request that had none), and a head whose
 * own kinds leave room for what ferry adds on a hop (at most 16 fields,
 * about 1 KiB here) always goes (SPEC §11: a head within the limits
 * reaches the next hop). */
static void
check_no_growth(const struct http_head *in, const struct http_head *out, bool fits,
    size_t extra_fields, size_t extra_bytes)
{
	if (out != NULL) {
		PROP(out->n_headers - out->n_own <= in->n_headers - in->n_own + extra_fields);
		PROP(out->mine_bytes <= in->mine_bytes + extra_bytes);
	}
	if (in->n_own <= HTTP_MAX_FIELDS - HTTP_MAX_HEADERS - 16 &&
	    own_bytes(in) <= HTTP_MAX_HEAD_ALL - HTTP_MAX_HEAD - 2048 &&
	    in->mine_bytes + extra_bytes <= HTTP_MAX_HEAD &&
	    in->n_headers - in->n_own + extra_fields <= HTTP_MAX_HEADERS)
		PROP(fits);
}

/* ids_decide(): the app's first ID when valid, else a fresh one. */
static void
decide_ids(const char *msg, const struct http_head *h, struct request_ids *ids)
{
	const struct http_header *c = headers_find(h, HDR_CORRELATION_ID);
	const struct http_header *r = headers_find(h, HDR_REQUEST_ID);
	const struct http_header *t = headers_find(h, HDR_TRACEPARENT);

	memset(ids, 0, sizeof(*ids));
	ids->correlation_from_app = c && ids_valid(msg + c->value.off, c->value.len);
	ids->correlation = ids->correlation_from_app ? msg + c->value.off : uuid_a;
	ids->correlation_len = ids->correlation_from_app ? c->value.len : UUID_LEN;
	ids->request_from_app = r && ids_valid(msg + r->value.off, r->value.len);
	ids->request = ids->request_from_app ? msg + r->value.off : uuid_b;
	ids->request_len = ids->request_from_app ? r->value.len : UUID_LEN;
	if (t == NULL || headers_count(h, HDR_TRACEPARENT) > 1 ||
	    !ids_traceparent_valid(msg + t->value.off, t->value.len)) {
		ids->traceparent = new_tp;
		ids->traceparent_len = TRACEPARENT_LEN;
	}
}

/* No CR, LF or NUL inside a line; lines end in CRLF; one empty line last. */
static void
check_lines(const char *p, size_t len)
{
	size_t i = 0, start = 0;

	PROP(len >= 4 && memcmp(p + len - 4, "\r\n\r\n", 4) == 0);
	for (i = 0; i < len; i++) {
		if (p[i] == '\r') {
			PROP(i + 1 < len && p[i + 1] == '\n');
			/* the empty line only at the end */
			PROP(i > start || i + 2 == len);
			start = i + 2;
			i++;
		} else {
			PROP(p[i] != '\n' && p[i] != '\0');
		}
	}
}

/* Parses the head ferry built; the bytes are the whole message head.
 * FITS: the builder's verdict on the limits. NULL when ferry would not
 * send it (a 431 or a 502 instead). */
static const struct http_head *
reparse(const struct sbuf *out, bool response, bool fits)
{
	static struct http_parser hp;
	static struct http_head h;
	size_t used = 0;
	enum http_status st;

	PROP(!out->oom);
	check_lines(out->p, out->len);
	PROP(fits == headers_fit(out->p, out->len));
	/* the static head may have outgrown its inline table last run */
	http_head_release(&h);
	http_parser_init(&hp, response, &h);
	st = http_parse(&hp, out->p, out->len, 0, &used);
	/* the builder's verdict is the next hop's (regressions/head_rewrite/
	 * over-limit-after-rewrite*: ferry's own headers pushed a head at
	 * the limits past them, and the next ferry refused it) */
	if (!fits) {
		PROP(st == HTTP_ERROR && hp.err == HTTP_ERR_TOO_LARGE);
		return NULL;
	}
	if (st != HTTP_HEAD_DONE)
		fprintf(stderr, "re-parse: %s\n[%.*s]\n", hp.err_text ? hp.err_text : "incomplete", (int)out->len, out->p);
	PROP(st == HTTP_HEAD_DONE);
	PROP(used == out->len && h.head_len == out->len);
	check_head(out->p, &h, out->len, response);
	PROP(headers_classify(out->p, &h) == 0);
	check_framing(out->p, &h);
	return &h;
}

static void
same_framing(const struct http_head *a, const struct http_head *b)
{
	PROP(a->chunked == b->chunked);
	PROP(a->has_length == b->has_length);
	PROP(a->content_length == b->content_length);
}

static void
rewrite_request(const char *msg, struct http_head *h, uint8_t flags, struct sbuf *out)
{
	const char *t = msg + h->target.off, *path, *auth;
	size_t path_len, auth_len;
	bool inbound = flags & 2;
	struct request_ids ids;
	struct sbuf target = { 0 };
	const struct http_head *r;
	struct upstream_head_args a = {
		.host = inbound || (flags & 8) ? NULL : "svc.example:8443",
		.auth_key = flags & 4 ? "k3y-for-svc" : NULL,
		.ids = &ids,
		.via = inbound ? "1.1 ferry-0a1b2c3d-in" : "1.1 ferry-0a1b2c3d-out",
		.upgrade = h->upgrade,
		.peer = inbound ? "spiffe://cluster.local/ns/a/sa/b" : NULL,
		.forwarded_for = inbound ? "10.1.2.3" : NULL,
		.rules = { NULL, flags & 32 ? &rules : NULL },
	};
	const struct http_header *hh;
	bool fits, host_added;
	size_t extra = 0, was;

	if (request_refusal(msg, h, headers_classify(msg, h) != 0) != NULL)
		return;
	/* Host counts toward the limits: outbound, the service's replaces
	 * the app's, or comes where an HTTP/1.0 request had none */
	hh = headers_find(h, HDR_HOST);
	host_added = a.host != NULL && hh == NULL;
	if (a.host != NULL) {
		was = hh ? http_field_bytes(4, hh->value.len) : 0;
		if (http_field_bytes(4, strlen(a.host)) > was)
			extra = http_field_bytes(4, strlen(a.host)) - was;
	}
	decide_ids(msg, h, &ids);
	/* request_begin(): origin-form, "/" first when the path is missing */
	target_split(t, h->target.len, &path, &path_len, &auth, &auth_len);
	if (path_len == 0 || path[0] == '?')
		sbuf_add(&target, "/", 1);
	sbuf_add(&target, path, path_len);
	a.target = target.p;
	a.target_len = target.len;
	fits = headers_build_request(out, msg, h, &a);
	extra += target.len - path_len;
	if ((r = reparse(out, false, fits)) == NULL) {
		if (!(flags & 32))
			check_no_growth(h, NULL, false, host_added, extra);
		sbuf_free(&target);
		return;
	}
	if (!(flags & 32))
		check_no_growth(h, r, true, host_added, extra);
	same_framing(h, r);
	PROP(r->method_id == h->method_id);
	PROP(r->major == 1 && r->minor == 1);
	PROP(r->upgrade == h->upgrade);
	sbuf_free(&target);
}

/* What h1_up.c and proxy.c pass for a final or interim head. */
static void
rewrite_response(const char *msg, struct http_head *h, uint8_t flags, struct sbuf *out)
{
	bool http10 = flags & 2, head_method = flags & 8, upgrade = flags & 16;
	struct request_ids ids = {
		.correlation = uuid_a, .correlation_len = UUID_LEN,
		.request = uuid_b, .request_len = UUID_LEN,
	};
	struct downstream_head_args a = { .rules = { NULL, flags & 32 ? &rules : NULL } };
	const struct http_head *r;
	bool fits;

	if (headers_classify(msg, h) != 0)
		return;		/* 502 */
	/* a Transfer-Encoding the parser did not take as chunked
	 * ("chunked<TAB>", "gzip"): 502 (regressions/head_rewrite/
	 * te-chunked-tab) */
	if (!headers_framing_ok(msg, h))
		return;
	if (h->status < 200 && !(h->status == 101 && upgrade)) {
		if (h->status == 100 || h->status == 101 || http10)
			return;		/* dropped */
		a.interim = true;
	} else {
		a.ids = &ids;
		a.keep_alive = flags & 4;
		a.keep_alive_timeout = 60;
		/* h1_down.c: an HTTP/1.0 client never gets Transfer-Encoding,
		 * in a HEAD's answer either */
		a.dechunk = http10 && (h->chunked || head_method);
		a.upgrade = upgrade && h->status == 101;
	}
	fits = headers_build_response(out, msg, h, &a);
	if ((r = reparse(out, true, fits)) == NULL) {
		if (!(flags & 32) || a.interim)
			check_no_growth(h, NULL, false, 0, 0);
		return;
	}
	if (!(flags & 32) || a.interim)
		check_no_growth(h, r, true, 0, 0);
	PROP(r->status == h->status);
	if (a.interim || h->status == 204) {
		/* a 1xx or 204 has no content: its framing is not forwarded
		 * (regressions/head_rewrite/no-content-length) */
		PROP(!r->chunked && !r->has_length);
	} else if (a.dechunk && head_method) {
		PROP(!r->chunked);			/* no body: the length stays */
		PROP(r->has_length == h->has_length && r->content_length == h->content_length);
	} else if (a.dechunk) {
		PROP(!r->chunked && !r->has_length);	/* decoded, ends at the close */
	} else {
		same_framing(h, r);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_parser hp;
	static struct http_head head;
	static struct sbuf out;
	bool response;
	size_t used = 0;

	if (size < 1)
		return 0;
	if (rule_add[0].name == NULL)
		rules_init();
	response = data[0] & 1;
	http_head_release(&head);	/* as reparse() */
	http_parser_init(&hp, response, &head);
	if (http_parse(&hp, (const char *)data + 1, size - 1, 0, &used) != HTTP_HEAD_DONE)
		return 0;
	sbuf_clear(&out);
	if (response)
		rewrite_response((const char *)data + 1, &head, data[0], &out);
	else
		rewrite_request((const char *)data + 1, &head, data[0], &out);
	return 0;
}
