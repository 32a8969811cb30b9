#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"
#include "swar.h"

struct known {
	const char *name;
	size_t len;
	enum hdr_kind kind;
	bool own;
};

#define KNOWN(name, kind, own) { name, sizeof(name) - 1, kind, own }

/*
 * Headers with a kind, and the names ferry writes or replaces itself on
 * either direction (own): those do not count toward the limits of SPEC
 * §11 (http1.h), because ferry adds them to what it forwards.
 *   connection, keep-alive	the connection ferry keeps with each peer
 *   transfer-encoding		chunked framing ferry writes (from HTTP/2,
 *				a body it codes anew)
 *   x-service-auth, x-correlation-id, x-request-id, traceparent, via,
 *   x-ferry-peer, x-forwarded-for, x-forwarded-proto, x-ferry-deadline-ms
 *				ferry's own (SPEC §5, §13, §16)
 *   accept-encoding		outbound compression asks with it (§14)
 *   content-encoding, vary	a response ferry compresses (§14)
 *   grpc-timeout		the time left, written anew (§12)
 * Host counts (SPEC §11's 100 include it): ferry replaces it, one for
 * one, so a head that fitted still fits. Not own, as ferry only forwards
 * or drops them: proxy-connection,
 * proxy-authorization, upgrade, te, content-length, expect, tracestate,
 * idempotency-key, and the '_' look-alikes.
 */
static const struct known known_headers[] = {
	/* sorted by name length (http_header_kind searches by it) */
	KNOWN("te", HDR_TE, false),
	KNOWN("via", HDR_VIA, true),
	KNOWN("host", HDR_HOST, false),
	KNOWN("vary", HDR_OTHER, true),
	KNOWN("expect", HDR_EXPECT, false),
	KNOWN("upgrade", HDR_UPGRADE, false),
	KNOWN("connection", HDR_CONNECTION, true),
	KNOWN("keep-alive", HDR_KEEP_ALIVE, true),
	KNOWN("tracestate", HDR_TRACESTATE, false),
	KNOWN("traceparent", HDR_TRACEPARENT, true),
	KNOWN("x-request-id", HDR_REQUEST_ID, true),
	KNOWN("x-ferry-peer", HDR_FERRY_PEER, true),
	KNOWN("grpc-timeout", HDR_OTHER, true),
	KNOWN("content-length", HDR_CONTENT_LENGTH, false),
	KNOWN("x-service-auth", HDR_SERVICE_AUTH, true),
	KNOWN("x-forwarded-for", HDR_FORWARDED_FOR, true),
	KNOWN("idempotency-key", HDR_IDEMPOTENCY_KEY, false),
	KNOWN("accept-encoding", HDR_OTHER, true),
	KNOWN("proxy-connection", HDR_PROXY_CONNECTION, false),
	KNOWN("x-correlation-id", HDR_CORRELATION_ID, true),
	KNOWN("content-encoding", HDR_OTHER, true),
	KNOWN("transfer-encoding", HDR_TRANSFER_ENCODING, true),
	KNOWN("x-forwarded-proto", HDR_FORWARDED_PROTO, true),
	KNOWN("proxy-authorization", HDR_PROXY_AUTHORIZATION, false),
	KNOWN("x-ferry-deadline-ms", HDR_FERRY_DEADLINE, true),
};

#define N_KNOWN (sizeof(known_headers) / sizeof(known_headers[0]))
#define KNOWN_MAX_LEN 19

/* by_len[n]: the first name of known_headers at least n long (N_KNOWN
 * past the longest). A wrong entry loses the names of that length, which
 * test_header_kinds_all_names would see. */
static const uint8_t by_len[KNOWN_MAX_LEN + 2] = {
	0, 0, 0, 1, 2, 4, 4, 5, 6, 6, 6, 9, 10, 13, 13, 15, 18, 21, 23, 23, 25,
};
_Static_assert(N_KNOWN == 25, "by_len is out of date with known_headers");

/* NAME is K with any '-' written as '_' (and at least one so written). */
static bool
underscored(const char *k, const char *name, size_t len)
{
	bool any = false;

	for (size_t i = 0; i < len; i++) {
		if (k[i] == '-' && name[i] == '_')
			any = true;
		else if ((k[i] | 0x20) != (name[i] | 0x20) || name[i] == '_')
			return false;
	}
	return any;
}

const char *
http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 103: return "Early Hints";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 407: return "Proxy Authentication Required";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	case 511: return "Network Authentication Required";
	default: return "";
	}
}

enum hdr_kind
http_header_kind(const char *name, size_t len, bool *own)
{
	bool under = false;

	*own = false;
	if (len > KNOWN_MAX_LEN)
		return HDR_OTHER;
	/* every field of every head comes here: the index by length leaves
	 * at most three names to compare */
	for (size_t lo = by_len[len]; lo < N_KNOWN && known_headers[lo].len == len; lo++) {
		const char *k = known_headers[lo].name;

		if ((k[0] | 0x20) != (name[0] | 0x20))
			continue;
		if (strncasecmp(k, name, len) == 0) {
			*own = known_headers[lo].own;
			return known_headers[lo].kind;
		}
		if (known_headers[lo].kind >= HDR_SERVICE_AUTH && underscored(k, name, len))
			under = true;
	}
	return under ? HDR_FERRY_LOOKALIKE : HDR_OTHER;
}

static struct http_parser *
hp_of(llhttp_t *p)
{
	return (struct http_parser *)p;
}

static uint32_t
off_of(struct http_parser *hp, const char *at)
{
	return hp->base_off + (uint32_t)(at - hp->base);
}

static int
too_large(struct http_parser *hp)
{
	hp->err = HTTP_ERR_TOO_LARGE;
	return -1;
}

/* A callback may be split across execute calls; the bytes stay adjacent
 * in the caller's buffer, so a continuation just extends the slice. */
static void
extend(struct http_parser *hp, struct slice *s, const char *at, size_t len, bool fresh)
{
	if (fresh) {
		s->off = off_of(hp, at);
		s->len = (uint32_t)len;
	} else {
		s->len += (uint32_t)len;
	}
}

static int
on_message_begin(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);

	hp->in_head = true;
	return 0;
}

static int
on_method(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);

	extend(hp, &hp->head->method, at, len, hp->head->method.len == 0);
	return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);

	extend(hp, &hp->head->target, at, len, hp->head->target.len == 0);
	return 0;
}

static int
on_status(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);

	extend(hp, &hp->head->reason, at, len, hp->head->reason.len == 0);
	return 0;
}

static void
emit(struct http_parser *hp, const char *p, size_t n)
{
	if (hp->on_data)
		hp->on_data(hp->arg, p, n);
}

/* Trailers share the head's limits (bytes and fields); with rechunk the
 * field is collected to be judged whole. */
static bool
trailers_fit(const struct http_parser *hp)
{
	const struct http_head *h = hp->head;
	struct http_measure m = hp->sent ? *hp->sent : (struct http_measure){
		h->n_headers, h->n_own, h->head_len, h->mine_bytes };

	/* ferry's own names are no trailers: all of theirs count */
	return http_within_limits(m.fields + hp->n_trailers, m.own,
	    m.bytes + hp->trailer_bytes, m.mine + hp->trailer_bytes);
}

static int
trailer_part(struct http_parser *hp, const char *at, size_t len, bool name)
{
	hp->trailer_bytes += (uint32_t)len;
	if (name && hp->cur != 1) {
		hp->n_trailers++;
		sbuf_clear(&hp->trailer);
	}
	if (!trailers_fit(hp))
		return too_large(hp);
	/* a value comes in one piece per input, continued only at the start
	 * of the next input; another piece is obsolete line folding */
	if (!name && hp->cur == 2 && !(hp->value_at_end && at == hp->base)) {
		hp->err_text = "obsolete line folding in a trailer";
		return -1;
	}
	if (!name)
		hp->value_at_end = at + len == hp->base + hp->base_len;
	if (hp->rechunk || hp->on_trailer) {
		if (!name && (hp->cur == 1 || hp->cur == 3))
			sbuf_add(&hp->trailer, ": ", 2);
		sbuf_add(&hp->trailer, at, len);
	}
	hp->cur = name ? 1 : 2;
	return 0;
}

static int
trailer_done(struct http_parser *hp)
{
	struct sbuf *t = &hp->trailer;
	const char *colon;
	size_t nlen;

	if (!hp->rechunk && !hp->on_trailer)
		return 0;
	if (hp->cur == 1 || hp->cur == 3)
		sbuf_add(t, ": ", 2);		/* an empty value */
	if (t->oom) {
		hp->err_text = "out of memory";
		return -1;
	}
	colon = memchr(t->p, ':', t->len);
	nlen = (size_t)(colon - t->p);
	for (size_t j = nlen + 2; j < t->len; j++)
		if (t->p[j] == '\r' || t->p[j] == '\n' || t->p[j] == '\0') {
			hp->err_text = "invalid trailer value";
			return -1;
		}
	while (t->len > nlen + 2 && (t->p[t->len - 1] == ' ' || t->p[t->len - 1] == '\t'))
		t->len--;
	if (hp->keep_trailer != NULL && !hp->keep_trailer(t->p, nlen))
		return 0;
	if (!hp->rechunk) {
		hp->on_trailer(hp->arg, t->p, t->len);
		return 0;
	}
	sbuf_add(t, "\r\n", 2);
	emit(hp, t->p, t->len);
	return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);
	struct http_head *h = hp->head;
	struct http_header *hd;

	if (hp->in_body)
		return trailer_part(hp, at, len, true);
	if (hp->cur != 1) {
		if (h->n_headers >= HTTP_MAX_FIELDS)
			return too_large(hp);
		if ((hd = http_head_add(h)) == NULL) {
			hp->err_text = "out of memory";
			return -1;
		}
		extend(hp, &hd->name, at, len, true);
		hp->cur = 1;
	} else {
		extend(hp, &h->h[h->n_headers - 1].name, at, len, false);
	}
	return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);
	struct http_head *h = hp->head;

	if (hp->in_body)
		return trailer_part(hp, at, len, false);
	extend(hp, &h->h[h->n_headers - 1].value, at, len, hp->cur != 2);
	hp->cur = 2;
	return 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);
	int r = hp->in_body ? trailer_done(hp) : 0;

	hp->cur = 0;
	return r;
}

/* The name is whole: its kind, and whether the sender's own fields are
 * past the limit already. */
static int
on_header_field_complete(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);
	struct http_head *h = hp->head;
	struct http_header *hd;

	/* an empty value never calls on_header_value: leave it empty */
	hp->cur = 3;
	if (hp->in_body)
		return 0;
	hd = &h->h[h->n_headers - 1];
	/* the message starts at base - base_off, in one buffer */
	hd->kind = http_header_kind(hp->base - hp->base_off + hd->name.off, hd->name.len,
	    &hd->own);
	if (hd->own)
		h->n_own++;
	else if (h->n_headers - h->n_own > HTTP_MAX_HEADERS)
		return too_large(hp);
	return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);
	struct http_head *h = hp->head;

	h->major = p->http_major;
	h->minor = p->http_minor;
	h->method_id = p->method;
	h->status = p->status_code;
	h->keep_alive = llhttp_should_keep_alive(p);
	h->chunked = (p->flags & F_CHUNKED) != 0;
	h->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
	h->content_length = h->has_length ? p->content_length : 0;
	h->upgrade = (p->flags & F_UPGRADE) && (p->flags & F_CONNECTION_UPGRADE);
	h->conn_close = (p->flags & F_CONNECTION_CLOSE) != 0;
	/* llhttp also takes a request line without a version (read as 0.9,
	 * headers and all) and "HTTP/2.0"; ferry speaks HTTP/1.x only */
	if (h->major != 1) {
		hp->err_text = "unsupported HTTP version";
		return -1;
	}
	if (p->type == HTTP_RESPONSE && (h->status < 100 || h->status > 999)) {
		hp->err_text = "bad status code";
		return -1;
	}
	hp->in_head = false;
	hp->in_body = true;
	hp->head_done = true;
	return HPE_PAUSED;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
	struct http_parser *hp = hp_of(p);

	hp->body_bytes += len;
	if (hp->dechunk || hp->rechunk)
		emit(hp, at, len);
	return 0;
}

static int
on_chunk_header(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);
	char line[24];
	int n;

	if (p->content_length == 0)
		hp->in_trailers = true;
	if (hp->rechunk) {
		n = snprintf(line, sizeof(line), "%llx\r\n", (unsigned long long)p->content_length);
		emit(hp, line, (size_t)n);
	}
	return 0;
}

static int
on_chunk_complete(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);

	if (hp->rechunk && !hp->in_trailers)
		emit(hp, "\r\n", 2);
	return 0;
}

/* Extensions are dropped by rechunk, but a peer must not send unbounded
 * bytes for free: they count as body. */
static int
on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
	(void)at;
	hp_of(p)->body_bytes += len;
	return 0;
}

static int
on_message_complete(llhttp_t *p)
{
	struct http_parser *hp = hp_of(p);

	if (hp->rechunk && hp->in_trailers)
		emit(hp, "\r\n", 2);
	hp->msg_done = true;
	return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
	.on_message_begin = on_message_begin,
	.on_method = on_method,
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_chunk_header = on_chunk_header,
	.on_chunk_complete = on_chunk_complete,
	.on_chunk_extension_name = on_chunk_extension,
	.on_chunk_extension_value = on_chunk_extension,
	.on_message_complete = on_message_complete,
};

void
http_head_init(struct http_head *h)
{
	http_head_clear(h);
	h->h = h->inline_h;
}

void
http_head_release(struct http_head *h)
{
	if (h->h != h->inline_h)
		free(h->h);
	http_head_init(h);
}

struct http_header *
http_head_add(struct http_head *h)
{
	struct http_header *t;

	if (h->n_headers == HTTP_HEAD_INLINE && h->h == h->inline_h) {
		/* one step to the most a head may hold: heads this big are
		 * rare, and growing again would cost more than it saves */
		if ((t = malloc(HTTP_HEAD_SLOTS * sizeof(*t))) == NULL)
			return NULL;
		memcpy(t, h->inline_h, sizeof(h->inline_h));
		h->h = t;
	}
	if (h->n_headers >= HTTP_HEAD_SLOTS)
		return NULL;
	t = &h->h[h->n_headers++];
	*t = (struct http_header){ 0 };
	return t;
}

static void
parser_start(struct http_parser *hp, bool response, struct http_head *head)
{
	memset(hp, 0, sizeof(*hp));
	llhttp_init(&hp->p, response ? HTTP_RESPONSE : HTTP_REQUEST, &settings);
	hp->head = head;
}

void
http_parser_init(struct http_parser *hp, bool response, struct http_head *head)
{
	parser_start(hp, response, head);
	http_head_init(head);
}

void
http_parser_reset(struct http_parser *hp)
{
	struct http_parser keep = *hp;

	parser_start(hp, keep.p.type == HTTP_RESPONSE, keep.head);
	http_head_clear(keep.head);	/* a table it grew into is kept */
	hp->on_data = keep.on_data;
	hp->arg = keep.arg;
	hp->rechunk = keep.rechunk;
	hp->keep_trailer = keep.keep_trailer;
	hp->on_trailer = keep.on_trailer;
	hp->trailer = keep.trailer;	/* its memory, emptied */
	sbuf_clear(&hp->trailer);
}

void
http_parser_free(struct http_parser *hp)
{
	sbuf_free(&hp->trailer);
	if (hp->head != NULL)
		http_head_release(hp->head);
}

/* CR, LF or NUL in V: eight bytes at a time, as every value of every
 * head passes here. */
static bool
has_cr_lf_nul(const char *v, size_t n)
{
	size_t j = 0;

	for (; j + 8 <= n; j += 8) {
		uint64_t x = swar_load(v + j);

		if (swar_zero_byte(x) | swar_zero_byte(x ^ swar_bytes('\r')) |
		    swar_zero_byte(x ^ swar_bytes('\n')))
			return true;
	}
	for (; j < n; j++)
		if (v[j] == '\r' || v[j] == '\n' || v[j] == '\0')
			return true;
	return false;
}

/* llhttp accepts bytes RFC 9110 forbids in a value only in lenient mode,
 * but obsolete line folding must be refused explicitly: a folded value
 * contains CR or LF once llhttp has joined it. Counts the sender's part
 * of the head (http1.h) on the way. */
static bool
values_clean(const char *msg, struct http_head *h, bool response)
{
	/* the start line and the empty line, as ferry writes them */
	uint32_t mine = response ? http_status_line_bytes(h) :
	    h->method.len + h->target.len + 12 + 2;

	for (uint32_t i = 0; i < h->n_headers; i++) {
		struct slice *vs = &h->h[i].value;
		const char *v = msg + vs->off;

		if (h->h[i].name.len == 0 || has_cr_lf_nul(v, vs->len))
			return false;
		/* trailing whitespace is not part of a field value (RFC 9110) */
		while (vs->len > 0 && (v[vs->len - 1] == ' ' || v[vs->len - 1] == '\t'))
			vs->len--;
		if (!h->h[i].own)
			mine += http_field_bytes(h->h[i].name.len, vs->len);
	}
	h->mine_bytes = mine;
	return true;
}

/* llhttp takes any byte but CR and LF in a reason phrase, and ferry
 * forwards it: only HTAB, SP, VCHAR and obs-text are allowed (RFC 9112 4),
 * so no NUL or other control character reaches the app. */
static bool
reason_clean(const char *msg, const struct http_head *h)
{
	const unsigned char *r = (const unsigned char *)msg + h->reason.off;

	for (uint32_t i = 0; i < h->reason.len; i++)
		if (!http_text_byte_ok(r[i]))
			return false;
	return true;
}

/* The last raw body bytes: llhttp ends a chunked message at a bare LF
 * after the last chunk or trailer ("0\r\n\n"), but the raw bytes are
 * forwarded, and a strict peer would still be waiting for CRLF: it would
 * read the next request on the connection as a trailer. */
static void
tail_push(struct http_parser *hp, const char *p, size_t n)
{
	for (size_t i = n > 4 ? n - 4 : 0; i < n; i++)
		hp->tail = hp->tail << 8 | (unsigned char)p[i];
	hp->raw_body += n;
}

#define TAIL_CRLFCRLF 0x0d0a0d0au

enum http_status
http_parse(struct http_parser *hp, const char *data, size_t len, uint32_t msg_off,
    size_t *used)
{
	bool body = hp->in_body;
	llhttp_errno_t e;

	hp->base = data;
	hp->base_len = len;
	hp->base_off = msg_off;
	hp->head_done = false;
	e = llhttp_execute(&hp->p, data, len);
	if (e == HPE_OK) {
		*used = len;
		if (body)
			tail_push(hp, data, len);
		/* empty lines before a request line count toward the head */
		if (!hp->in_body && msg_off + len > HTTP_MAX_HEAD_ALL) {
			hp->err = HTTP_ERR_TOO_LARGE;
			return HTTP_ERROR;
		}
		return HTTP_NEED_MORE;
	}
	if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
		*used = (size_t)(llhttp_get_error_pos(&hp->p) - data);
		if (e == HPE_PAUSED)
			llhttp_resume(&hp->p);
		else
			llhttp_resume_after_upgrade(&hp->p);
		if (hp->head_done) {
			struct http_head *h = hp->head;

			h->head_len = msg_off + (uint32_t)*used;
			if (h->head_len > HTTP_MAX_HEAD_ALL) {
				hp->err = HTTP_ERR_TOO_LARGE;
				return HTTP_ERROR;
			}
			/* the message starts at data - msg_off */
			if (!reason_clean(data - msg_off, h)) {
				hp->err = HTTP_ERR_BAD;
				hp->err_text = "invalid status reason";
				return HTTP_ERROR;
			}
			if (!values_clean(data - msg_off, h, hp->p.type == HTTP_RESPONSE)) {
				hp->err = HTTP_ERR_BAD;
				hp->err_text = "invalid header value";
				return HTTP_ERROR;
			}
			if (!http_within_limits(h->n_headers, h->n_own, h->head_len, h->mine_bytes)) {
				hp->err = HTTP_ERR_TOO_LARGE;
				return HTTP_ERROR;
			}
			return HTTP_HEAD_DONE;
		}
		if (body)
			tail_push(hp, data, *used);
		if (hp->msg_done && body && hp->head->chunked && hp->raw_body > 0 &&
		    hp->tail != TAIL_CRLFCRLF) {
			hp->err = HTTP_ERR_BAD;
			hp->err_text = "chunked body not ended by CRLF";
			*used = 0;
			return HTTP_ERROR;
		}
		if (hp->msg_done)
			return HTTP_MSG_DONE;
		return HTTP_NEED_MORE;
	}
	*used = 0;
	if (hp->err == HTTP_ERR_NONE)
		hp->err = HTTP_ERR_BAD;
	/* a callback's own reason says more than "user callback error" */
	if (hp->err_text == NULL)
		hp->err_text = llhttp_get_error_reason(&hp->p);
	return HTTP_ERROR;
}

void
http_parser_skip_body(struct http_parser *hp)
{
	hp->p.flags |= F_SKIPBODY;
}

bool
http_parser_body_until_eof(const struct http_parser *hp)
{
	return llhttp_message_needs_eof(&hp->p) != 0;
}

enum http_status
http_parse_eof(struct http_parser *hp)
{
	llhttp_errno_t e = llhttp_finish(&hp->p);

	if (e == HPE_OK || e == HPE_PAUSED)
		return hp->msg_done ? HTTP_MSG_DONE : HTTP_NEED_MORE;
	hp->err = HTTP_ERR_BAD;
	hp->err_text = llhttp_get_error_reason(&hp->p);
	return HTTP_ERROR;
}

bool
slice_eq_ci(const char *msg, struct slice s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && strncasecmp(msg + s.off, lit, n) == 0;
}
