#include <stdint.h>
#include <string.h>

#include "errors.h"
#include "fate.h"
#include "headers.h"
#include "swar.h"

static const struct {
	int status;
	const char *code;
	const char *reason;
} errors[FE_COUNT] = {
	[FE_BAD_REQUEST] = { 400, "BAD_REQUEST", "Bad Request" },
	[FE_INVALID_SERVICE_AUTH] = { 403, "INVALID_SERVICE_AUTH", "Forbidden" },
	[FE_UNKNOWN_SERVICE] = { 404, "UNKNOWN_SERVICE", "Not Found" },
	[FE_METHOD_NOT_ALLOWED] = { 405, "METHOD_NOT_ALLOWED", "Method Not Allowed" },
	[FE_REQUEST_TIMEOUT] = { 408, "REQUEST_TIMEOUT", "Request Timeout" },
	[FE_PAYLOAD_TOO_LARGE] = { 413, "PAYLOAD_TOO_LARGE", "Payload Too Large" },
	[FE_RATE_LIMITED] = { 429, "RATE_LIMITED", "Too Many Requests" },
	[FE_HEADERS_TOO_LARGE] = { 431, "HEADERS_TOO_LARGE", "Request Header Fields Too Large" },
	[FE_SERVICE_ERROR] = { 502, "SERVICE_ERROR", "Bad Gateway" },
	[FE_SERVICE_UNAVAILABLE] = { 503, "SERVICE_UNAVAILABLE", "Service Unavailable" },
	[FE_SERVICE_TIMEOUT] = { 504, "SERVICE_TIMEOUT", "Gateway Timeout" },
	[FE_LOOP_DETECTED] = { 508, "LOOP_DETECTED", "Loop Detected" },
};

const char *
end_cause_name(enum end_cause c)
{
	static const char *const names[END_COUNT] = {
		[END_DONE] = NULL,
		[END_CLIENT_CLOSED] = "client_closed",
		[END_CLIENT_READ_ERROR] = "client_read_error",
		[END_CLIENT_WRITE_FAILED] = "client_write_failed",
		[END_UPSTREAM_CLOSED] = "upstream_closed",
		[END_MALFORMED_UPSTREAM_BODY] = "malformed_upstream_body",
		[END_MALFORMED_REQUEST_BODY] = "malformed_request_body",
		[END_REQUEST_BODY_TOO_LARGE] = "request_body_too_large",
		[END_REQUEST_TRAILERS_TOO_LARGE] = "request_trailers_too_large",
		[END_OUT_OF_MEMORY] = "out_of_memory",
		[END_STREAM_IDLE] = "stream_idle_timeout",
		[END_SHUTDOWN] = "shutdown",
		[END_DEADLINE] = "deadline_exceeded",
		[END_DECOMPRESSION_BOMB] = "decompression_bomb",
		[END_PEER_UNTRUSTED] = "peer_untrusted",
		[END_CLIENT_TIMEOUT] = "client_timeout",
		[END_CLIENT_PROTOCOL_ERROR] = "client_protocol_error",
	};

	return (unsigned)c < END_COUNT ? names[c] : NULL;
}

int
ferror_status(enum ferry_error e)
{
	return errors[e].status;
}

const char *
ferror_code(enum ferry_error e)
{
	return errors[e].code;
}

/* x-ferry-error and the request's IDs, on every error of ferry's */
static void
id_headers(struct sbuf *out, const struct error_args *a)
{
	sbuf_adds(out, "x-ferry-error: ");
	sbuf_adds(out, errors[a->err].code);
	sbuf_add(out, "\r\n", 2);
	if (a->correlation) {
		sbuf_adds(out, "x-correlation-id: ");
		sbuf_add(out, a->correlation, a->correlation_len);
		sbuf_add(out, "\r\n", 2);
	}
	if (a->request_id) {
		sbuf_adds(out, "x-request-id: ");
		sbuf_add(out, a->request_id, a->request_id_len);
		sbuf_add(out, "\r\n", 2);
	}
}

int
ferror_grpc_status(enum ferry_error e, bool peer_denied)
{
	switch (e) {
	case FE_SERVICE_UNAVAILABLE:	return 14;	/* UNAVAILABLE */
	case FE_SERVICE_TIMEOUT:
	case FE_REQUEST_TIMEOUT:	return 4;	/* DEADLINE_EXCEEDED */
	case FE_INVALID_SERVICE_AUTH:	return peer_denied ? 7 : 16;
	case FE_RATE_LIMITED:
	case FE_PAYLOAD_TOO_LARGE:
	case FE_HEADERS_TOO_LARGE:	return 8;	/* RESOURCE_EXHAUSTED */
	case FE_UNKNOWN_SERVICE:
	case FE_METHOD_NOT_ALLOWED:	return 12;	/* UNIMPLEMENTED */
	default:			return 13;	/* INTERNAL */
	}
}

int
grpc_status_of_http(int http_status)
{
	switch (http_status) {
	case 400:	return 13;	/* INTERNAL */
	case 401:	return 16;	/* UNAUTHENTICATED */
	case 403:	return 7;	/* PERMISSION_DENIED */
	case 404:	return 12;	/* UNIMPLEMENTED */
	case 429:
	case 502:
	case 503:
	case 504:	return 14;	/* UNAVAILABLE */
	default:	return 2;	/* UNKNOWN */
	}
}

void
ferror_build_grpc(struct sbuf *out, const struct error_args *a, int grpc_status)
{
	static const char hex[] = "0123456789ABCDEF";

	sbuf_adds(out, "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
	    "content-length: 0\r\ngrpc-status: ");
	sbuf_addu(out, (unsigned)grpc_status);
	/* percent-encoded, as the gRPC protocol says of grpc-message */
	sbuf_adds(out, "\r\ngrpc-message: ");
	for (const unsigned char *m = (const unsigned char *)a->message; *m; m++) {
		if (*m >= 0x20 && *m <= 0x7e && *m != '%') {
			sbuf_add(out, m, 1);
		} else {
			char e[3] = { '%', hex[*m >> 4], hex[*m & 15] };

			sbuf_add(out, e, 3);
		}
	}
	sbuf_add(out, "\r\n", 2);
	id_headers(out, a);
	headers_add_connection(out, a->keep_alive, a->keep_alive_timeout);
	sbuf_add(out, "\r\n", 2);
}

/* Length of a valid UTF-8 sequence at S, or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
	if (n < len)
		return 0;
	cp = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* Eight bytes that all pass as they are: 0x20-0x7e but '"' and '\\'. */
static inline bool
plain_word(uint64_t x)
{
	return (x & SWAR_HIGHS) == 0 && !swar_in_range(x, 0, 0x1f) &&
	    !swar_zero_byte(x ^ swar_bytes(0x7f)) && !swar_zero_byte(x ^ swar_bytes('"')) &&
	    !swar_zero_byte(x ^ swar_bytes('\\'));
}

static inline bool
plain8(const unsigned char *p)
{
	return plain_word(swar_load(p));
}

/* All N bytes pass as they are; N < 8 is padded with some that do, from
 * 8 the last word overlaps the one before. */
static bool
plain_all(const unsigned char *s, size_t n)
{
	uint64_t x = swar_bytes('a');
	size_t i;

	if (n < 8) {
		memcpy(&x, s, n);
		return plain_word(x);
	}
	for (i = 0; i + 8 <= n; i += 8)
		if (!plain8(s + i))
			return false;
	return i == n || plain8(s + n - 8);
}

char *
json_escape_put(char *p, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;

	/* ids, names, addresses: almost every string of a log line */
	if (plain_all(s, n))
		return put_mem(p, s, n);
	while (i < n) {
		unsigned char c;
		size_t ul;

		/* an access log line is mostly plain ASCII */
		while (i + 8 <= n && plain8(s + i)) {
			i += 8;
			run += 8;
		}
		if (i == n)
			break;
		c = s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			i++;
			run++;
			continue;
		}
		if (c >= 0x80 && (ul = utf8_len(s + i, n - i)) > 0) {
			i += ul;
			run += ul;
			continue;
		}
		p = put_mem(p, s + i - run, run);
		run = 0;
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c >= 0x80) {
			p = PUT_LIT(p, "\\ufffd");	/* invalid UTF-8 byte */
		} else {
			p = PUT_LIT(p, "\\u00");
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
		i++;
	}
	return put_mem(p, s + i - run, run);
}

/* Input escaped per room taken: JSON_ESCAPE_MAX of it stays small. */
#define ESCAPE_SLICE	4096

void
json_escape(struct sbuf *out, const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;

	while (n > 0) {
		size_t k = n;
		char *p;

		if (k > ESCAPE_SLICE) {
			/* not inside a UTF-8 sequence: each half would
			 * read as invalid bytes */
			k = ESCAPE_SLICE;
			while (k > ESCAPE_SLICE - 3 && (s[k] & 0xc0) == 0x80)
				k--;
		}
		if ((p = sbuf_room(out, JSON_ESCAPE_MAX(k))) == NULL)
			return;
		sbuf_commit(out, json_escape_put(p, (const char *)s, k));
		s += k;
		n -= k;
	}
}

void
ferror_build(struct sbuf *out, const struct error_args *a)
{
	struct sbuf b = { 0 };
	size_t blen;

	/* the body first, for its length (messages carry names of any length) */
	sbuf_adds(&b, "{\"success\":false,\"error\":{\"code\":\"");
	sbuf_adds(&b, errors[a->err].code);
	sbuf_adds(&b, "\",\"message\":\"");
	json_escape(&b, a->message, strlen(a->message));
	sbuf_add(&b, "\"", 1);
	if (a->attempts) {
		sbuf_adds(&b, ",\"attempts\":");
		fate_notes_json(&b, a->attempts, a->attempts_endpoint);
	}
	sbuf_adds(&b, "}}");
	blen = b.len;

	sbuf_adds(out, "HTTP/1.1 ");
	sbuf_addu(out, (unsigned)errors[a->err].status);
	sbuf_add(out, " ", 1);
	sbuf_adds(out, errors[a->err].reason);
	sbuf_adds(out, "\r\ncontent-type: application/json\r\ncontent-length: ");
	sbuf_addu(out, blen);
	sbuf_add(out, "\r\n", 2);
	id_headers(out, a);
	if (a->retry_after) {
		sbuf_adds(out, "retry-after: ");
		sbuf_addu(out, a->retry_after);
		sbuf_add(out, "\r\n", 2);
	}
	headers_add_connection(out, a->keep_alive, a->keep_alive_timeout);
	sbuf_add(out, "\r\n", 2);
	if (!a->head_only)
		sbuf_add(out, b.p, b.len);
	/* a body with a piece missing is no answer either */
	if (b.oom)
		out->oom = true;
	sbuf_free(&b);
}
