/*
 * HTTP/1.x message parsing with llhttp, no I/O. The head is recorded as
 * slices (offsets into the caller's input buffer, relative to the first
 * byte of the message), so nothing is copied; the body is reported as the
 * count of raw bytes it spans, so it can be forwarded as it came.
 */
#ifndef FERRY_HTTP1_H
#define FERRY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <llhttp.h>

#include "sbuf.h"

/*
 * SPEC §11: a head of at most 64 KiB and 100 headers, of what its sender
 * wrote. Fields of the kinds ferry writes or replaces itself (own, in the
 * table of http1.c) do not count, so a head at the limits, with the
 * headers a ferry added on the way, still passes the next ferry. The
 * whole head, ferry's fields included, has a hard cap all the same: room
 * for what ferry adds on a hop (about 14 fields and 1 KiB), no more.
 */
#define HTTP_MAX_HEADERS 100			/* the sender's own fields */
#define HTTP_MAX_HEAD (64 * 1024)		/* the sender's own bytes */
#define HTTP_MAX_FIELDS (HTTP_MAX_HEADERS + 28)	/* all fields */
#define HTTP_MAX_HEAD_ALL (HTTP_MAX_HEAD + 8 * 1024)	/* all bytes */
/* a head's table: a codec may add a transfer-encoding of its own to a
 * full head (h2_down.c, h2_up.c) */
#define HTTP_HEAD_SLOTS (HTTP_MAX_FIELDS + 1)
#define HTTP_HEAD_INLINE 24		/* entries a head holds without a table of its own */

struct slice {
	uint32_t off, len;
};

/* Headers the proxy treats specially, classified once while parsing. */
enum hdr_kind {
	HDR_OTHER = 0,
	HDR_HOST,
	HDR_CONNECTION,
	HDR_KEEP_ALIVE,
	HDR_PROXY_CONNECTION,
	HDR_PROXY_AUTHORIZATION,
	HDR_UPGRADE,
	HDR_TE,
	HDR_TRANSFER_ENCODING,
	HDR_CONTENT_LENGTH,
	HDR_EXPECT,
	HDR_SERVICE_AUTH,
	HDR_CORRELATION_ID,
	HDR_REQUEST_ID,
	HDR_TRACEPARENT,
	HDR_TRACESTATE,
	HDR_VIA,
	HDR_FERRY_PEER,
	HDR_FORWARDED_FOR,
	HDR_FORWARDED_PROTO,
	HDR_IDEMPOTENCY_KEY,
	HDR_FERRY_DEADLINE,		/* x-ferry-deadline-ms (SPEC §16) */
	/* a header ferry owns spelled with '_' for '-' (x_ferry_peer):
	 * CGI, WSGI and Rack read it as the real one */
	HDR_FERRY_LOOKALIKE,
};

struct http_header {
	struct slice name, value;
	enum hdr_kind kind;
	bool hop;		/* named in Connection: not forwarded */
	bool own;		/* a kind ferry writes itself: not counted */
};

/* The kind of the header NAME, and in *OWN whether ferry writes or
 * replaces headers of that name itself (they do not count toward the
 * limits). Every maker of a head classifies its fields with it. */
enum hdr_kind http_header_kind(const char *name, size_t len, bool *own);

/* The reason phrase RFC 9110 gives STATUS ("" for a code it names none
 * for): written when a response has none of its own (one that came over
 * HTTP/2 never has), as some HTTP/1.1 clients do not take a status line
 * without one. */
const char *http_reason(int status);

/* The bytes a field counts for, as ferry writes it: "name: value\r\n".
 * The sender's part of a head is counted so (with its start line as ferry
 * writes it, and the empty line), however it was spaced: what ferry
 * forwards never counts for more than what it was sent. */
static inline uint32_t
http_field_bytes(size_t nlen, size_t vlen)
{
	return (uint32_t)(nlen + vlen + 4);
}

/* Within the limits: FIELDS of which OWN_FIELDS are ferry's own kinds,
 * BYTES in all, MINE_BYTES of them the sender's own part. */
static inline bool
http_within_limits(uint32_t fields, uint32_t own_fields, uint32_t bytes, uint32_t mine_bytes)
{
	return fields <= HTTP_MAX_FIELDS && bytes <= HTTP_MAX_HEAD_ALL &&
	    fields - own_fields <= HTTP_MAX_HEADERS && mine_bytes <= HTTP_MAX_HEAD;
}

/* A byte a field value or a reason phrase may hold: HTAB, SP, VCHAR and
 * obs-text, no other control character (RFC 9110 5.5, RFC 9112 4). */
static inline bool
http_text_byte_ok(unsigned char c)
{
	return c >= 0x20 ? c != 0x7f : c == '\t';
}

/* A head as a receiver counts it (http_within_limits' four figures). */
struct http_measure {
	uint32_t fields, own, bytes, mine;
};

struct http_head {
	struct slice method, target, reason;
	int status;			/* responses */
	uint8_t major, minor;
	uint8_t method_id;		/* llhttp_method_t */
	uint32_t n_headers;
	uint32_t head_len;		/* bytes of the head, CRLFCRLF included */
	uint32_t n_own;			/* fields of ferry's own kinds */
	uint32_t mine_bytes;		/* the sender's part, as ferry writes it:
					   start line, other fields, empty line */
	bool keep_alive;		/* after Connection and the version */
	bool chunked;
	bool has_length;
	bool upgrade;			/* Upgrade + Connection: upgrade */
	bool conn_close;		/* Connection: close */
	uint64_t content_length;
	/* last, so a holder can leave the table unzeroed (only the first
	 * n_headers are ever read): H is INLINE_H until a head outgrows it,
	 * then a table of HTTP_HEAD_SLOTS the head owns (http_head_add).
	 * Most heads have a dozen fields; a full table would be 3 KiB in
	 * every request, pooled connection and HTTP/2 stream. Never copy a
	 * head by value: H points into it. */
	struct http_header *h;
	struct http_header inline_h[HTTP_HEAD_INLINE];
};

/* The bytes of H's status line and the empty line, as ferry writes them
 * ("HTTP/1.1 200 OK\r\n" with http_reason's phrase when H has none, and
 * "\r\n"): what a response head's count starts from. */
static inline uint32_t
http_status_line_bytes(const struct http_head *h)
{
	return 15 + (h->reason.len > 0 ? h->reason.len :
	    (uint32_t)strlen(http_reason(h->status))) + 2;
}

/* An empty head on its inline table. A head that grew a table is
 * released first (http_head_release), or the table leaks. */
void http_head_init(struct http_head *h);
/* Frees a table the head outgrew into; the head is left empty on its
 * inline table. */
void http_head_release(struct http_head *h);
/* Empties the head for its next message, keeping its table. */
static inline void
http_head_clear(struct http_head *h)
{
	memset(h, 0, offsetof(struct http_head, h));
}
/* The next entry (zeroed, counted in n_headers), growing the table past
 * the inline one; NULL when out of memory, or past HTTP_HEAD_SLOTS (the
 * caller checks the limits first). */
struct http_header *http_head_add(struct http_head *h);

enum http_status {
	HTTP_NEED_MORE,		/* all input consumed, message not finished */
	HTTP_HEAD_DONE,		/* head parsed: see http_parser_head() */
	HTTP_MSG_DONE,		/* message complete (body included) */
	HTTP_ERROR,		/* malformed: see http_parser_error() */
};

/* Why a message was refused; maps to a 4xx/5xx. */
enum http_error {
	HTTP_ERR_NONE = 0,
	HTTP_ERR_BAD,		/* 400 / 502 */
	HTTP_ERR_TOO_LARGE,	/* 431: head over the limits (see HTTP_MAX_HEADERS) */
};

struct http_parser {
	llhttp_t p;
	struct http_head *head;
	const char *base;	/* first byte of the message in this execute */
	size_t base_len;	/* bytes given to this execute */
	bool value_at_end;	/* the last trailer value piece ended its input */
	uint32_t base_off;	/* offset of base from the message start */
	int cur;		/* 0 none, 1 in field, 2 in value */
	bool in_head;
	bool in_body;		/* the head is done: body bytes follow */
	bool msg_done;
	bool head_done;
	bool dechunk;		/* report body bytes through on_data */
	/* Report the body through on_data as chunked framing written here:
	 * sizes without extensions, and only the trailers keep_trailer
	 * allows, so what leaves never says more than was parsed. */
	bool rechunk;
	bool in_trailers;	/* after the last chunk */
	uint32_t trailer_bytes;	/* count toward the head limits */
	uint32_t n_trailers;
	/* With rechunk: the head the client got, which the trailers join
	 * at the client's end (it is bigger than the upstream's by what
	 * ferry added); NULL counts the parsed head. Cleared by reset. */
	const struct http_measure *sent;
	struct sbuf trailer;	/* the trailer field being read (rechunk) */
	bool (*keep_trailer)(const char *name, size_t nlen);
	/* Without rechunk: each kept trailer field, "name: value" (no CRLF),
	 * for a codec that carries trailers apart from the body (HTTP/2). */
	void (*on_trailer)(void *arg, const char *field, size_t len);
	uint64_t body_bytes;	/* decoded body bytes, chunk extensions too */
	uint64_t raw_body;	/* raw body bytes so far */
	uint32_t tail;		/* the last four raw body bytes */
	enum http_error err;
	const char *err_text;
	void (*on_data)(void *arg, const char *at, size_t len);
	void *arg;
};

/* HEAD is made anew (http_head_init): one a parser used before is freed
 * first (http_parser_free). */
void http_parser_init(struct http_parser *hp, bool response, struct http_head *head);
/* Starts a new message: keeps the type, the callbacks, rechunk and
 * keep_trailer; dechunk and sent are the message's, set anew. */
void http_parser_reset(struct http_parser *hp);
/* Frees what the parser holds, and the table its head grew into. */
void http_parser_free(struct http_parser *hp);

/*
 * Parses DATA (all unconsumed bytes of the message so far is not needed:
 * only the new ones; MSG_OFF is the offset of DATA from the message start).
 * *USED gets how many bytes of DATA belong to this message's part just
 * parsed. Stops after the head (HTTP_HEAD_DONE) and after the message.
 */
enum http_status http_parse(struct http_parser *hp, const char *data, size_t len,
    uint32_t msg_off, size_t *used);

/* The response to a HEAD request, or a 1xx/204/304: no body follows. */
void http_parser_skip_body(struct http_parser *hp);
/* The body runs until the connection closes (response without length). */
bool http_parser_body_until_eof(const struct http_parser *hp);
/* Tell the parser the peer closed: finishes a close-delimited body. */
enum http_status http_parse_eof(struct http_parser *hp);

static inline const char *
slice_ptr(const char *msg, struct slice s)
{
	return msg + s.off;
}

bool slice_eq_ci(const char *msg, struct slice s, const char *lit);

#endif
