#include <string.h>
#include <strings.h>

#include "config.h"
#include "deadline.h"
#include "headers.h"

bool
headers_trailer_allowed(const char *name, size_t len)
{
	/* every name ferry knows is framing, hop-by-hop, routing or its own:
	 * none may arrive after the head was checked */
	bool own;

	return http_header_kind(name, len, &own) == HDR_OTHER;
}

void
headers_from_lines(const char *lines, size_t len, struct http_head *h)
{
	const char *p = lines, *end = lines + len, *eol, *colon, *v;
	struct http_header *hd;

	http_head_init(h);
	for (; p < end && h->n_headers < HTTP_MAX_FIELDS; p = eol + 2) {
		if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
			return;
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
			continue;
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		if ((hd = http_head_add(h)) == NULL)
			return;
		hd->name = (struct slice){ (uint32_t)(p - lines), (uint32_t)(colon - p) };
		hd->value = (struct slice){ (uint32_t)(v - lines), (uint32_t)(eol - v) };
		hd->kind = http_header_kind(p, (size_t)(colon - p), &hd->own);
	}
}

static bool
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Calls FN for each comma-separated token of a list value. */
static void
each_token(const char *v, size_t len, void (*fn)(void *, const char *, size_t), void *arg)
{
	size_t i = 0;

	while (i < len) {
		size_t b, e;

		while (i < len && (is_ows(v[i]) || v[i] == ','))
			i++;
		b = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		while (e > b && is_ows(v[e - 1]))
			e--;
		if (e > b)
			fn(arg, v + b, e - b);
	}
}

struct mark_ctx {
	const char *msg;
	struct http_head *h;
};

static void
mark_listed(void *arg, const char *tok, size_t len)
{
	struct mark_ctx *m = arg;

	for (uint32_t i = 0; i < m->h->n_headers; i++) {
		struct http_header *hd = &m->h->h[i];

		/* only unknown headers: Connection must not remove framing
		 * (smuggling), via (loop detection) or what ferry manages */
		if ((hd->kind == HDR_OTHER || hd->kind == HDR_KEEP_ALIVE ||
		    hd->kind == HDR_PROXY_CONNECTION ||
		    hd->kind == HDR_PROXY_AUTHORIZATION) && hd->name.len == len &&
		    strncasecmp(m->msg + hd->name.off, tok, len) == 0)
			hd->hop = true;
	}
}

int
headers_classify(const char *msg, struct http_head *h)
{
	struct mark_ctx m = { msg, h };
	int hosts = 0;

	/* the kinds were given as the fields were read (http_header_kind) */
	for (uint32_t i = 0; i < h->n_headers; i++) {
		struct http_header *hd = &h->h[i];

		hd->hop = false;
		if (hd->kind == HDR_HOST)
			hosts++;
	}
	for (uint32_t i = 0; i < h->n_headers; i++) {
		if (h->h[i].kind == HDR_CONNECTION)
			each_token(msg + h->h[i].value.off, h->h[i].value.len, mark_listed, &m);
	}
	return hosts > 1 ? -1 : 0;
}

const struct http_header *
headers_find(const struct http_head *h, enum hdr_kind kind)
{
	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].kind == kind)
			return &h->h[i];
	return NULL;
}

void
headers_wipe_values(char *msg, const struct http_head *h, enum hdr_kind kind)
{
	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].kind == kind)
			explicit_bzero(msg + h->h[i].value.off, h->h[i].value.len);
}

int
headers_count(const struct http_head *h, enum hdr_kind kind)
{
	int n = 0;

	for (uint32_t i = 0; i < h->n_headers; i++)
		n += h->h[i].kind == kind;
	return n;
}

struct te_count {
	int chunked, other;
};

static void
count_coding(void *arg, const char *tok, size_t len)
{
	struct te_count *n = arg;

	if (len == 7 && strncasecmp(tok, "chunked", 7) == 0)
		n->chunked++;
	else
		n->other++;
}

bool
headers_framing_ok(const char *msg, const struct http_head *h)
{
	struct te_count n = { 0, 0 };
	bool te = false;

	for (uint32_t i = 0; i < h->n_headers; i++) {
		if (h->h[i].kind != HDR_TRANSFER_ENCODING)
			continue;
		te = true;
		each_token(msg + h->h[i].value.off, h->h[i].value.len, count_coding, &n);
	}
	/*
	 * The parser's "chunked" is the last coding; re-emitted without the
	 * whitespace around a value, no earlier one may read as chunked
	 * ("chunked<TAB>" then "chunked": chunked twice, RFC 9112 7). And
	 * none but chunked: where ferry takes the chunks apart (HTTP/2, an
	 * HTTP/1.0 client, a body it re-codes) the header goes, and bytes
	 * still gzip-coded would pass for the body. ferry offers no other
	 * coding upstream (TE is hop-by-hop), and takes none from the app.
	 */
	return !te || (h->chunked && n.chunked == 1 && n.other == 0);
}

/* "name: value\r\n" in one reservation */
static inline void
add_field(struct sbuf *out, const char *name, size_t nlen, const char *value, size_t vlen)
{
	char *p;

	if (!sbuf_grow(out, nlen + vlen + 4))
		return;
	p = out->p + out->len;
	memcpy(p, name, nlen);
	memcpy(p + nlen, ": ", 2);
	if (vlen > 0)
		memcpy(p + nlen + 2, value, vlen);
	memcpy(p + nlen + 2 + vlen, "\r\n", 2);
	out->len += nlen + vlen + 4;
}

/* NAME is a string literal ("" NAME "" accepts nothing else) */
#define add_header(out, name, value, vlen) \
	add_field(out, "" name "", sizeof(name) - 1, value, vlen)

static void
copy_header(struct sbuf *out, const char *msg, const struct http_header *hd)
{
	add_field(out, msg + hd->name.off, hd->name.len, msg + hd->value.off, hd->value.len);
}

/*
 * Fields forwarded as they came are copied as runs of whole lines: a line
 * that reads exactly "name: value\r\n" in the message (one space, no
 * trailing space, CRLF) is the bytes copy_header would write, and lines
 * that follow each other make one copy. Anything else written in between
 * ends the run first (run_flush), so the order stays. Only a parsed head
 * says where it ends (head_len): the heads ferry builds from HTTP/2 fields
 * take copy_header.
 */
struct run {
	size_t from, to;	/* pending bytes of msg; equal: none */
};

static void
run_flush(struct sbuf *out, const char *msg, struct run *r)
{
	if (r->to > r->from)
		sbuf_add(out, msg + r->from, r->to - r->from);
	r->from = r->to = 0;
}

static void
run_copy(struct sbuf *out, const char *msg, const struct http_head *h, struct run *r,
    const struct http_header *hd)
{
	size_t line = hd->name.off, colon = line + hd->name.len;
	size_t vend = (size_t)hd->value.off + hd->value.len;

	if (hd->value.len == 0 || hd->value.off != colon + 2 || vend + 2 > h->head_len ||
	    msg[colon] != ':' || msg[colon + 1] != ' ' || msg[vend] != '\r' ||
	    msg[vend + 1] != '\n') {
		run_flush(out, msg, r);
		copy_header(out, msg, hd);
		return;
	}
	if (r->to != line || r->to == r->from) {
		run_flush(out, msg, r);
		r->from = line;
	}
	r->to = vend + 2;
}

/* The header as it came, with ITEM appended to its list value. */
static void
append_to_list(struct sbuf *out, const char *msg, const struct http_header *hd,
    const char *item)
{
	sbuf_add(out, msg + hd->name.off, hd->name.len);
	sbuf_add(out, ": ", 2);
	sbuf_add(out, msg + hd->value.off, hd->value.len);
	sbuf_add(out, ", ", 2);
	sbuf_adds(out, item);
	sbuf_add(out, "\r\n", 2);
}

/* Hop-by-hop in either direction (SPEC §5). */
static bool
is_hop(const char *msg, const struct http_header *hd, bool upgrade)
{
	if (hd->kind == HDR_UPGRADE)
		return !upgrade;
	if (hd->hop)
		return true;
	switch (hd->kind) {
	case HDR_CONNECTION:
	case HDR_KEEP_ALIVE:
	case HDR_PROXY_CONNECTION:
	case HDR_PROXY_AUTHORIZATION:
		return true;
	case HDR_TE:
		return !slice_eq_ci(msg, hd->value, "trailers");
	default:
		return false;
	}
}

static int
last_index(const struct http_head *h, enum hdr_kind kind)
{
	int last = -1;

	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].kind == kind)
			last = (int)i;
	return last;
}

bool
headers_number(const char *msg, const struct http_header *hd, uint64_t *out)
{
	const char *v = msg + hd->value.off;
	uint64_t n = 0;

	if (hd->value.len == 0)
		return false;
	for (uint32_t i = 0; i < hd->value.len; i++) {
		if (v[i] < '0' || v[i] > '9' || n > (UINT64_MAX - 9) / 10)
			return false;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	*out = n;
	return true;
}

/* A rule of RS[FROM..1] removes or replaces the header NAME. */
static bool
rules_drop(const struct conf_hrules *const *rs, int from, const char *name, size_t len)
{
	for (int i = from; i < 2; i++) {
		const struct conf_hrules *r = rs[i];

		if (r == NULL)
			continue;
		for (size_t j = 0; j < r->n_remove; j++)
			if (strlen(r->remove[j]) == len && strncasecmp(r->remove[j], name, len) == 0)
				return true;
		for (size_t j = 0; j < r->n_set; j++)
			if (strlen(r->set[j].name) == len && strncasecmp(r->set[j].name, name, len) == 0)
				return true;
	}
	return false;
}

/* The lines rules set and add, in order: defaults' (unless the service's
 * remove or set them again), then the service's. */
static void
rules_emit(struct sbuf *out, const struct conf_hrules *const *rs)
{
	for (int i = 0; i < 2; i++) {
		const struct conf_hrules *r = rs[i];

		if (r == NULL)
			continue;
		for (size_t j = 0; j < r->n_set; j++)
			if (!rules_drop(rs, i + 1, r->set[j].name, strlen(r->set[j].name)))
				add_field(out, r->set[j].name, strlen(r->set[j].name),
				    r->set[j].value, strlen(r->set[j].value));
		for (size_t j = 0; j < r->n_add; j++)
			if (!rules_drop(rs, i + 1, r->add[j].name, strlen(r->add[j].name)))
				add_field(out, r->add[j].name, strlen(r->add[j].name),
				    r->add[j].value, strlen(r->add[j].value));
	}
}

/* Fields ferry itself may add to a head on one hop, at most: a request
 * gets host, connection, x-service-auth, x-correlation-id, x-request-id,
 * traceparent, via, x-ferry-peer, x-forwarded-proto, x-forwarded-for,
 * accept-encoding, x-ferry-deadline-ms and grpc-timeout; a response
 * x-correlation-id, x-request-id, content-encoding, vary,
 * transfer-encoding and keep-alive or connection. */
#define OWN_ADDED_MAX 16

static size_t
rules_lines(const struct conf_hrules *const *rs)
{
	size_t n = 0;

	for (int i = 0; i < 2; i++)
		if (rs[i] != NULL)
			n += rs[i]->n_set + rs[i]->n_add;
	return n;
}

void
headers_measure(const char *text, size_t len, struct http_measure *m)
{
	const char *p = memchr(text, '\n', len), *end = text + len, *eol, *colon, *v, *ve;
	bool own;

	*m = (struct http_measure){ .bytes = (uint32_t)len };
	if (p == NULL)
		return;
	/* lines as ferry writes them: "name: value\r\n", no CR inside; the
	 * start line and the empty line are the sender's */
	m->mine = (uint32_t)(p + 1 - text) + 2;
	for (p++; p < end && (eol = memchr(p, '\r', (size_t)(end - p))) != NULL && eol > p;
	    p = eol + 2) {
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
			continue;
		m->fields++;
		http_header_kind(p, (size_t)(colon - p), &own);
		if (own) {
			m->own++;
			continue;
		}
		/* as http1.c counts it: the value without blanks around */
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
			;
		m->mine += http_field_bytes((size_t)(colon - p), (size_t)(ve - v));
	}
}

bool
headers_fit(const char *text, size_t len)
{
	struct http_measure m;

	if (len > HTTP_MAX_HEAD_ALL || memchr(text, '\n', len) == NULL)
		return len <= HTTP_MAX_HEAD_ALL;
	headers_measure(text, len, &m);
	return http_within_limits(m.fields, m.own, m.bytes, m.mine);
}

/* The head just written from START in OUT, from a head of N fields with
 * at most ADDED more: within the limits? Counted only when it may not
 * be (a head of that many fields, or over 64 KiB), so not on the hot
 * path. An incomplete head (no memory) is the caller's to see. */
static bool
built_fits(const struct sbuf *out, size_t start, uint32_t n, size_t added)
{
	size_t len = out->len - start;

	if (out->oom || (len <= HTTP_MAX_HEAD && n + added <= HTTP_MAX_HEADERS))
		return true;
	return headers_fit(out->p + start, len);
}

bool
headers_build_request(struct sbuf *out, const char *msg, const struct http_head *h,
    const struct upstream_head_args *a)
{
	size_t start = out->len;
	int last_via = last_index(h, HDR_VIA);
	int last_xff = last_index(h, HDR_FORWARDED_FOR);
	bool tp_replaced = a->ids->traceparent != NULL;
	bool corr_kept = false, rid_kept = false;
	struct run run = { 0, 0 };

	sbuf_add(out, msg + h->method.off, h->method.len);
	sbuf_add(out, " ", 1);
	if (a->target_slash)
		sbuf_add(out, "/", 1);
	sbuf_add(out, a->target, a->target_len);
	sbuf_add(out, " HTTP/1.1\r\n", 11);
	if (a->host) {
		sbuf_add(out, "host: ", 6);
		sbuf_adds(out, a->host);
		sbuf_add(out, "\r\n", 2);
	}

	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (is_hop(msg, hd, a->upgrade))
			continue;
		if ((a->rules[0] || a->rules[1]) &&
		    rules_drop(a->rules, 0, msg + hd->name.off, hd->name.len))
			continue;
		if (a->grpc_timeout_at && hd->name.len == 12 &&
		    strncasecmp(msg + hd->name.off, "grpc-timeout", 12) == 0)
			continue;
		switch (hd->kind) {
		case HDR_HOST:
			if (a->host == NULL)
				break;		/* inbound: the app sees the peer's Host */
			continue;
		case HDR_EXPECT:
		case HDR_SERVICE_AUTH:
		case HDR_FERRY_PEER:
		case HDR_FERRY_DEADLINE:
		case HDR_FORWARDED_PROTO:
		case HDR_FERRY_LOOKALIKE:
			continue;
		case HDR_CORRELATION_ID:
			/* the first one was the app's valid ID; others go */
			if (!a->ids->correlation_from_app || corr_kept)
				continue;
			corr_kept = true;
			break;
		case HDR_REQUEST_ID:
			if (!a->ids->request_from_app || rid_kept)
				continue;
			rid_kept = true;
			break;
		case HDR_TRACEPARENT:
			if (tp_replaced)
				continue;
			break;
		case HDR_TRACESTATE:
			if (tp_replaced && !a->ids->tracestate_kept)
				continue;
			break;
		case HDR_VIA:
			if ((int)i == last_via) {
				run_flush(out, msg, &run);
				append_to_list(out, msg, hd, a->via);
				continue;
			}
			break;
		case HDR_FORWARDED_FOR:
			if ((int)i == last_xff && a->forwarded_for) {
				run_flush(out, msg, &run);
				append_to_list(out, msg, hd, a->forwarded_for);
				continue;
			}
			break;
		default:
			break;
		}
		run_copy(out, msg, h, &run, hd);
	}
	run_flush(out, msg, &run);
	if (a->upgrade)
		sbuf_adds(out, "connection: upgrade\r\n");
	if (a->auth_key) {
		size_t klen = strlen(a->auth_key);

		add_header(out, "x-service-auth", a->auth_key, klen);
		/* wiped once the request is done with (sbuf.h) */
		if (!out->oom)
			sbuf_mark_secret(out, out->len - 2 - klen, klen);
	}
	if (!a->ids->correlation_from_app)
		add_header(out, "x-correlation-id", a->ids->correlation, a->ids->correlation_len);
	if (!a->ids->request_from_app)
		add_header(out, "x-request-id", a->ids->request, a->ids->request_len);
	if (tp_replaced)
		add_header(out, "traceparent", a->ids->traceparent, a->ids->traceparent_len);
	if (last_via < 0)
		add_header(out, "via", a->via, strlen(a->via));
	if (a->peer) {
		add_header(out, "x-ferry-peer", a->peer, strlen(a->peer));
		add_header(out, "x-forwarded-proto", "https", 5);
		if (last_xff < 0 && a->forwarded_for)
			add_header(out, "x-forwarded-for", a->forwarded_for, strlen(a->forwarded_for));
	}
	rules_emit(out, a->rules);
	if (a->accept_encoding)
		add_header(out, "accept-encoding", a->accept_encoding,
		    strlen(a->accept_encoding));
	if (a->deadline_at) {
		char v[DEADLINE_DIGITS];

		deadline_write(v, 0);
		sbuf_adds(out, "x-ferry-deadline-ms: ");
		*a->deadline_at = out->len;
		sbuf_add(out, v, sizeof(v));
		sbuf_add(out, "\r\n", 2);
	}
	if (a->grpc_timeout_at) {
		sbuf_adds(out, "grpc-timeout: ");
		*a->grpc_timeout_at = out->len;
		sbuf_adds(out, "00000000m\r\n");
	}
	sbuf_add(out, "\r\n", 2);
	return built_fits(out, start, h->n_headers, OWN_ADDED_MAX + rules_lines(a->rules));
}

static bool
name_is(const char *msg, const struct http_header *hd, const char *lit, size_t n)
{
	return hd->name.len == n && strncasecmp(msg + hd->name.off, lit, n) == 0;
}

static void
vary_member(void *arg, const char *tok, size_t len)
{
	if ((len == 1 && tok[0] == '*') ||
	    (len == 15 && strncasecmp(tok, "accept-encoding", 15) == 0))
		*(bool *)arg = true;
}

/* A header of a recoded body (SPEC §14): true when it was written (or
 * dropped) here; *VARY notes a vary that already names accept-encoding. */
static bool
coding_header(struct sbuf *out, const char *msg, const struct http_header *hd,
    const struct head_coding *c, bool *vary)
{
	const char *v = msg + hd->value.off;

	if (hd->kind == HDR_CONTENT_LENGTH || hd->kind == HDR_TRANSFER_ENCODING)
		return true;
	if (hd->kind != HDR_OTHER)
		return false;
	if (name_is(msg, hd, "content-encoding", 16))
		return c->decoded;
	if (c->encoded && name_is(msg, hd, "vary", 4)) {
		/* a member of the list, not a part of one
		 * ("x-accept-encoding-hint" names another field) */
		each_token(v, hd->value.len, vary_member, vary);
		return false;
	}
	if (c->encoded && name_is(msg, hd, "etag", 4) && hd->value.len > 0 && v[0] == '"') {
		/* another representation: equal in meaning, not in bytes */
		sbuf_add(out, msg + hd->name.off, hd->name.len);
		sbuf_add(out, ": W/", 4);
		sbuf_add(out, v, hd->value.len);
		sbuf_add(out, "\r\n", 2);
		return true;
	}
	return false;
}

bool
headers_build_response(struct sbuf *out, const char *msg, const struct http_head *h,
    const struct downstream_head_args *a)
{
	size_t start = out->len;
	bool vary = false;
	struct run run = { 0, 0 };

	sbuf_add(out, "HTTP/1.1 ", 9);
	sbuf_addu(out, (unsigned)h->status);
	sbuf_add(out, " ", 1);
	if (h->reason.len > 0)
		sbuf_add(out, msg + h->reason.off, h->reason.len);
	else
		sbuf_adds(out, http_reason(h->status));
	sbuf_add(out, "\r\n", 2);
	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];

		if (is_hop(msg, hd, a->upgrade))
			continue;
		if (!a->interim && (a->rules[0] || a->rules[1]) &&
		    rules_drop(a->rules, 0, msg + hd->name.off, hd->name.len))
			continue;
		if (a->coding) {
			run_flush(out, msg, &run);
			if (coding_header(out, msg, hd, a->coding, &vary))
				continue;
		}
		switch (hd->kind) {
		case HDR_CORRELATION_ID:
		case HDR_REQUEST_ID:
			continue;
		case HDR_CONTENT_LENGTH:
			/* a 1xx or 204 has no content (RFC 9110 15.2, 15.3.5),
			 * and ferry read none: framing that says otherwise must
			 * not reach a client that would believe it (8.6) */
			if (a->interim || h->status == 204)
				continue;
			break;
		case HDR_TRANSFER_ENCODING:
			if (a->dechunk || a->interim || h->status == 204)
				continue;
			break;
		default:
			break;
		}
		run_copy(out, msg, h, &run, hd);
	}
	run_flush(out, msg, &run);
	if (a->ids) {
		add_header(out, "x-correlation-id", a->ids->correlation, a->ids->correlation_len);
		add_header(out, "x-request-id", a->ids->request, a->ids->request_len);
	}
	if (a->coding && a->coding->encoded) {
		add_header(out, "content-encoding", a->coding->encoded, strlen(a->coding->encoded));
		if (!vary)
			sbuf_adds(out, "vary: accept-encoding\r\n");
	}
	if (a->coding && a->coding->chunked)
		sbuf_adds(out, "transfer-encoding: chunked\r\n");
	if (!a->interim)
		rules_emit(out, a->rules);
	/* an interim head says nothing: the final one says how it goes */
	if (a->upgrade)
		sbuf_adds(out, "connection: upgrade\r\n");
	else if (!a->interim)
		headers_add_connection(out, a->keep_alive, a->keep_alive_timeout);
	sbuf_add(out, "\r\n", 2);
	return built_fits(out, start, h->n_headers,
	    OWN_ADDED_MAX + (a->interim ? 0 : rules_lines(a->rules)));
}

void
headers_add_connection(struct sbuf *out, bool keep_alive, unsigned timeout)
{
	if (keep_alive) {
		sbuf_adds(out, "keep-alive: timeout=");
		sbuf_addu(out, timeout);
		sbuf_add(out, "\r\n", 2);
	} else {
		sbuf_adds(out, "connection: close\r\n");
	}
}

void
target_split(const char *t, size_t len, const char **path, size_t *path_len,
    const char **auth, size_t *auth_len)
{
	const char *sep;
	size_t i, b;

	*auth = NULL;
	*auth_len = 0;
	/* origin-form (almost every request) has no scheme to look for */
	if (len == 0 || t[0] == '/' || t[0] == '*' ||
	    (sep = memmem(t, len, "://", 3)) == NULL) {
		*path = t;
		*path_len = len;
		return;
	}
	/* scheme must be letters, digits, + - . before "://" */
	for (const char *p = t; p < sep; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.')) {
			*path = t;
			*path_len = len;
			return;
		}
	b = (size_t)(sep - t) + 3;
	for (i = b; i < len && t[i] != '/' && t[i] != '?' && t[i] != '#'; i++)
		;
	*auth = t + b;
	*auth_len = i - b;
	/* drop userinfo: up to the last '@', as neither a host nor a port
	 * holds one (RFC 3986 3.2) */
	for (size_t j = *auth_len; j > 0; j--)
		if ((*auth)[j - 1] == '@') {
			*auth += j;
			*auth_len -= j;
			break;
		}
	if (i == len || t[i] != '/') {
		/* "http://svc" or "http://svc?x": origin-form needs a "/" */
		*path = "/";
		*path_len = 1;
		if (i < len && t[i] == '?') {
			/* keep the query: the caller copies path then rest */
			*path = t + i;
			*path_len = len - i;
		}
		return;
	}
	*path = t + i;
	*path_len = len - i;
}

void
host_strip_port(const char *host, size_t len, const char **name, size_t *name_len)
{
	if (len > 0 && host[0] == '[') {
		const char *end = memchr(host, ']', len);

		*name = host + 1;
		*name_len = end ? (size_t)(end - host) - 1 : len - 1;
		return;
	}
	*name = host;
	*name_len = len;
	for (size_t i = 0; i < len; i++)
		if (host[i] == ':') {
			*name_len = i;
			break;
		}
}
