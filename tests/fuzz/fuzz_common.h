/*
 * Shared by the libFuzzer harnesses of tests/fuzz: feeding bytes to the
 * HTTP/1 parser the way the daemon does (in pieces, offsets relative to the
 * message start), invariants every parsed head must meet, and simple
 * reference checks written from the RFCs rather than from ferry's code.
 * A violated property calls abort(), which libFuzzer reports as a crash.
 */
#ifndef FERRY_FUZZ_COMMON_H
#define FERRY_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "headers.h"
#include "http1.h"

#define PROP(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: property violated: %s\n",	\
			    __FILE__, __LINE__, #cond);			\
			abort();					\
		}							\
	} while (0)

/*
 * Inputs that reach known, still open bugs are skipped (tests/fuzz/README.md
 * lists them), so the campaign keeps looking for new ones;
 * FERRY_FUZZ_KNOWN_BUGS=1 in the environment turns the skips off (to
 * reproduce, or once fixed: then delete the skip).
 */
static inline bool
fuzz_skip_known(void)
{
	static int skip = -1;

	if (skip < 0) {
		const char *e = getenv("FERRY_FUZZ_KNOWN_BUGS");

		skip = !(e != NULL && *e == '1');
	}
	return skip != 0;
}

/* Piece sizes of bytes "arriving from the socket", drawn from a seed byte:
 * 0 means everything at once, otherwise 1..seed-dependent bytes at a time. */
struct pieces {
	uint32_t state;
	uint32_t max;
};

static inline void
pieces_init(struct pieces *p, uint8_t seed)
{
	p->state = seed * 2654435761u + 1;
	p->max = seed == 0 ? 0 : 1u + (seed & 0x3f);
}

static inline size_t
pieces_next(struct pieces *p, size_t left)
{
	size_t n;

	if (p->max == 0)
		return left;
	p->state = p->state * 1103515245u + 12345u;
	n = 1 + (p->state >> 16) % p->max;
	return n < left ? n : left;
}

/*
 * Parses the head at DATA as client_process() / upstream_relay() do: the
 * bytes come in pieces, each call sees what it has not consumed yet with
 * its offset from the message start. *FED gets how many bytes had arrived.
 */
static inline enum http_status
feed_head(struct http_parser *hp, const char *data, size_t len, struct pieces *pc,
    size_t *fed)
{
	size_t parsed = 0, avail = 0;

	*fed = 0;
	while (avail < len) {
		size_t used = 0;
		enum http_status st;

		avail += pieces_next(pc, len - avail);
		*fed = avail;
		st = http_parse(hp, data + parsed, avail - parsed, (uint32_t)parsed, &used);
		PROP(used <= avail - parsed);
		parsed += used;
		if (st != HTTP_NEED_MORE)
			return st;
		PROP(parsed == avail);
	}
	return HTTP_NEED_MORE;
}

/* What the body parse did: raw bytes it took, and the body bytes it
 * counted (hp->body_bytes, what max_request_body is checked against): the
 * decoded data plus the bytes of chunk extension names and values, which
 * rechunk drops but a peer must not send for free. */
struct body_result {
	enum http_status st;
	size_t raw;
	uint64_t counted;
};

struct sink {
	uint64_t n;
	char *copy;		/* optional: keeps the decoded bytes */
	size_t cap;
};

static inline void
sink_data(void *arg, const char *at, size_t len)
{
	struct sink *s = arg;

	PROP(len > 0);
	if (s->copy != NULL && s->n + len <= s->cap)
		memcpy(s->copy + s->n, at, len);
	s->n += len;
}

/*
 * Parses a body at DATA (the head already consumed), as the relay loops do:
 * each call starts at offset 0 of what is left. Stops at the message end.
 */
static inline struct body_result
feed_body(struct http_parser *hp, const char *data, size_t len, struct pieces *pc)
{
	struct body_result r = { HTTP_NEED_MORE, 0, 0 };
	uint64_t before = hp->body_bytes;
	size_t avail = 0;

	while (avail < len) {
		size_t used = 0;

		avail += pieces_next(pc, len - avail);
		r.st = http_parse(hp, data + r.raw, avail - r.raw, 0, &used);
		PROP(used <= avail - r.raw);
		if (r.st == HTTP_ERROR)
			break;
		r.raw += used;
		PROP(r.st != HTTP_HEAD_DONE);
		if (r.st == HTTP_MSG_DONE)
			break;
		PROP(r.raw == avail);
	}
	r.counted = hp->body_bytes - before;
	return r;
}

/* DATA decoded bytes came out of BODY (LEN bytes fed): the count is the
 * data alone unless the body holds a ';' (chunk extensions), and never
 * more than the raw bytes taken. */
static inline void
check_counted(uint64_t data, const struct body_result *r, const char *body, size_t len)
{
	PROP(data <= r->counted);
	if (memchr(body, ';', len) == NULL)
		PROP(data == r->counted);
	if (r->st != HTTP_ERROR)
		PROP(r->counted <= r->raw);
}

static inline bool
is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static inline bool
slice_in(struct slice s, uint32_t limit)
{
	return (uint64_t)s.off + s.len <= limit;
}

/* The names ferry writes or replaces itself (SPEC §5, §12-§16): the
 * limits of §11 count the sender's headers without them (http1.h). */
static inline bool
ref_own(const char *msg, struct slice name)
{
	static const char *const own[] = {
		"connection", "keep-alive", "transfer-encoding", "x-service-auth",
		"x-correlation-id", "x-request-id", "traceparent", "via", "x-ferry-peer",
		"x-forwarded-for", "x-forwarded-proto", "x-ferry-deadline-ms",
		"accept-encoding", "content-encoding", "vary", "grpc-timeout",
	};

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (slice_eq_ci(msg, name, own[i]))
			return true;
	return false;
}

/* The limits of SPEC §11 as decided for ferry (http1.h): at most 100
 * fields and 64 KiB of the sender's own, written as ferry writes a head
 * (start line, "name: value\r\n" lines, the empty line); ferry's own
 * kinds do not count, but the whole head has a hard cap. */
static inline void
check_limits(const char *msg, const struct http_head *h, bool response)
{
	/* a response without a reason phrase gets RFC 9110's (http_reason) */
	uint32_t own = 0, mine = response ? 15 + (h->reason.len > 0 ? h->reason.len :
	    (uint32_t)strlen(http_reason(h->status))) + 2 :
	    h->method.len + h->target.len + 12 + 2;

	PROP(h->head_len <= HTTP_MAX_HEAD_ALL);
	PROP(h->n_headers <= HTTP_MAX_FIELDS);
	for (uint32_t i = 0; i < h->n_headers; i++) {
		bool o = ref_own(msg, h->h[i].name);

		PROP(h->h[i].own == o);
		if (o)
			own++;
		else
			mine += (uint32_t)(h->h[i].name.len + 2 + h->h[i].value.len + 2);
	}
	PROP(h->n_own == own);
	PROP(h->n_headers - own <= HTTP_MAX_HEADERS);
	PROP(h->mine_bytes == mine);
	PROP(mine <= HTTP_MAX_HEAD);
}

/* Invariants of every head http_parse() called done (SPEC §11). */
static inline void
check_head(const char *msg, const struct http_head *h, size_t fed, bool response)
{
	PROP(h->head_len <= fed);
	/* llhttp also takes a bare LF as the end of a head: ferry rebuilds
	 * heads, so only the bytes of the message are its concern */
	PROP(h->head_len >= 2 && msg[h->head_len - 1] == '\n');
	PROP(slice_in(h->method, h->head_len) && slice_in(h->target, h->head_len) &&
	    slice_in(h->reason, h->head_len));
	if (response)
		PROP(h->status >= 100 && h->status <= 999);
	else
		PROP(h->method.len > 0 && h->target.len > 0);
	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];
		const char *v = msg + hd->value.off;

		PROP(slice_in(hd->name, h->head_len) && slice_in(hd->value, h->head_len));
		PROP(hd->name.len > 0);
		for (uint32_t j = 0; j < hd->name.len; j++)
			PROP(is_tchar((unsigned char)msg[hd->name.off + j]));
		/* values are forwarded byte for byte: never CR, LF or NUL */
		for (uint32_t j = 0; j < hd->value.len; j++)
			PROP(v[j] != '\r' && v[j] != '\n' && v[j] != '\0');
		if (hd->value.len > 0)
			PROP(v[hd->value.len - 1] != ' ' && v[hd->value.len - 1] != '\t');
	}
	check_limits(msg, h, response);
}

/* Transfer-Encoding per RFC 9112 §6.3 and RFC 9110 §5.3, §5.6.1, from the
 * header text alone: the field lines joined with commas, empty elements
 * ignored, the last coding is "chunked". */
static inline bool
ref_chunked(const char *msg, const struct http_head *h)
{
	bool chunked = false;

	for (uint32_t i = 0; i < h->n_headers; i++) {
		const char *v = msg + h->h[i].value.off, *e = v + h->h[i].value.len;

		if (!slice_eq_ci(msg, h->h[i].name, "transfer-encoding"))
			continue;
		while (v < e) {
			const char *b = v, *t;

			while (v < e && *v != ',')
				v++;
			t = v;
			while (b < t && (*b == ' ' || *b == '\t'))
				b++;
			while (t > b && (t[-1] == ' ' || t[-1] == '\t'))
				t--;
			if (t > b)
				chunked = t - b == 7 && strncasecmp(b, "chunked", 7) == 0;
			if (v < e)
				v++;
		}
	}
	return chunked;
}

static inline int
count_named(const char *msg, const struct http_head *h, const char *name)
{
	int n = 0;

	for (uint32_t i = 0; i < h->n_headers; i++)
		n += slice_eq_ci(msg, h->h[i].name, name);
	return n;
}

/* Framing the head declares, checked against the header text: chunked
 * only with a Transfer-Encoding ending in chunked, a length only with one
 * Content-Length of that decimal value, never both (SPEC §11). */
static inline void
check_framing(const char *msg, const struct http_head *h)
{
	int n_te = count_named(msg, h, "transfer-encoding");
	int n_cl = count_named(msg, h, "content-length");

	if (h->chunked)
		PROP(n_te > 0 && ref_chunked(msg, h));
	PROP(!(h->chunked && h->has_length));
	if (h->has_length) {
		PROP(n_cl >= 1);
		for (uint32_t i = 0; i < h->n_headers; i++) {
			const struct http_header *hd = &h->h[i];
			uint64_t v = 0;

			if (!slice_eq_ci(msg, hd->name, "content-length"))
				continue;
			/* any number of leading zeros, no overflow */
			PROP(hd->value.len > 0);
			for (uint32_t j = 0; j < hd->value.len; j++) {
				char c = msg[hd->value.off + j];

				PROP(c >= '0' && c <= '9');
				PROP(v <= (UINT64_MAX - (uint64_t)(c - '0')) / 10);
				v = v * 10 + (uint64_t)(c - '0');
			}
			PROP(v == h->content_length);
		}
	} else {
		PROP(n_cl == 0);
	}
}

/*
 * The refusals of downstream.c request_begin() that depend on the head
 * alone, in its order (call after headers_classify(), which gives AMBIGUOUS).
 * NULL when ferry would go on to route and forward the request.
 */
static inline const char *
request_refusal(const char *msg, const struct http_head *h, bool ambiguous)
{
	bool http10 = h->major == 1 && h->minor == 0;

	if (ambiguous)
		return "more than one Host header";
	if (h->method_id == HTTP_CONNECT)
		return "CONNECT is not supported";
	if (!http10 && headers_find(h, HDR_HOST) == NULL)
		return "HTTP/1.1 request without Host";
	if (!headers_framing_ok(msg, h))
		return "Transfer-Encoding must be chunked alone, named once";
	return NULL;
}

/* W3C Trace Context (fuzz_ids.c, fuzz_accesslog.c): hex of N bytes, not
 * all zero if NONZERO; a whole traceparent header. */
static inline bool
hex_field(const unsigned char *s, size_t n, bool nonzero)
{
	bool zero = true;

	for (size_t i = 0; i < n; i++) {
		if (!isdigit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
		zero = zero && s[i] == '0';
	}
	return !(nonzero && zero);
}

/* version "-" trace-id "-" parent-id "-" flags; version ff is invalid,
 * 00 has nothing after the flags, later versions may add "-..." */
static inline bool
ref_traceparent(const unsigned char *s, size_t len)
{
	if (len < 55 || !hex_field(s, 2, false) || (s[0] == 'f' && s[1] == 'f'))
		return false;
	if (s[0] == '0' && s[1] == '0' ? len != 55 : (len > 55 && s[55] != '-'))
		return false;
	return s[2] == '-' && hex_field(s + 3, 32, true) && s[35] == '-' &&
	    hex_field(s + 36, 16, true) && s[52] == '-' && hex_field(s + 53, 2, false);
}

#endif
