/*
 * libFuzzer harness: chunked bodies (sizes, chunk extensions, trailers) of
 * requests and responses, decoded through the parser's on_data as for an
 * HTTP/1.0 client. Properties:
 *  - how the bytes arrive does not matter: parsed in fuzz-chosen pieces and
 *    in one piece, the result, the raw bytes taken and the decoded bytes
 *    are the same;
 *  - a complete body ends in CRLF CRLF, as a strict peer reads it;
 *  - a body a small reference decoder (written from RFC 9112 §7.1, strict
 *    and conservative) accepts is accepted with the same decoded bytes and
 *    the same end.
 *
 * Input: byte 0 (bit 0) response instead of request, byte 1 seeds the piece
 * sizes; the rest is the body after a fixed chunked head.
 */
#include "fuzz_common.h"

static const char req_head[] =
    "POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char resp_head[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

static bool
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool
is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool
crlf(const char *b, size_t len, size_t *i)
{
	if (*i + 2 > len || b[*i] != '\r' || b[*i + 1] != '\n')
		return false;
	*i += 2;
	return true;
}

/*
 * A deliberately narrow grammar: size 1-8 hex digits, extensions
 * ";name" or ";name=value" of [a-z0-9]+, trailers "x-[a-z0-9]+: [a-z0-9]*".
 * Returns the bytes the body spans (0: not accepted); DEC gets the data.
 */
static size_t
ref_dechunk(const char *b, size_t len, char *dec, size_t *dec_len)
{
	size_t i = 0;

	*dec_len = 0;
	for (;;) {
		uint64_t size = 0;
		size_t digits = 0;
		bool valued = false;

		while (i < len && is_hex(b[i]) && digits < 9) {
			char c = b[i++];

			size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
			digits++;
		}
		if (digits == 0 || digits > 8)
			return 0;
		/* llhttp 8.1 refuses a ';' after an unquoted value ("1;a=b;c"),
		 * so a value only on the last extension */
		while (i < len && b[i] == ';' && !valued) {
			size_t n = 0;

			for (i++; i < len && is_lower_alnum(b[i]); i++)
				n++;
			if (n == 0)
				return 0;
			if (i < len && b[i] == '=') {
				n = 0;
				for (i++; i < len && is_lower_alnum(b[i]); i++)
					n++;
				if (n == 0)
					return 0;
				valued = true;
			}
		}
		if (!crlf(b, len, &i))
			return 0;
		if (size == 0)
			break;
		if (size > len - i)
			return 0;
		memcpy(dec + *dec_len, b + i, size);
		*dec_len += size;
		i += size;
		if (!crlf(b, len, &i))
			return 0;
	}
	/* trailers, then the empty line */
	while (i + 2 <= len && !(b[i] == '\r' && b[i + 1] == '\n')) {
		size_t n = 0;

		if (i + 2 > len || b[i] != 'x' || b[i + 1] != '-')
			return 0;
		for (i += 2; i < len && is_lower_alnum(b[i]); i++)
			n++;
		if (n == 0 || i + 2 > len || b[i] != ':' || b[i + 1] != ' ')
			return 0;
		for (i += 2; i < len && is_lower_alnum(b[i]); i++)
			;
		if (!crlf(b, len, &i))
			return 0;
	}
	if (!crlf(b, len, &i))
		return 0;
	return i;
}

struct run {
	struct body_result r;
	size_t dec_len;
};

static struct run
parse_body(bool response, const char *body, size_t len, struct pieces *pc, char *dec,
    size_t cap)
{
	static struct http_parser hp;
	static struct http_head head;
	const char *hd = response ? resp_head : req_head;
	size_t hlen = response ? sizeof(resp_head) - 1 : sizeof(req_head) - 1;
	struct sink sink = { 0, dec, cap };
	struct run out;
	size_t used = 0;

	/* the static head may have outgrown its inline table last run */
	http_head_release(&head);
	http_parser_init(&hp, response, &head);
	PROP(http_parse(&hp, hd, hlen, 0, &used) == HTTP_HEAD_DONE && used == hlen);
	PROP(headers_classify(hd, &head) == 0 && head.chunked);
	hp.dechunk = true;
	hp.on_data = sink_data;
	hp.arg = &sink;
	out.r = feed_body(&hp, body, len, pc);
	check_counted(sink.n, &out.r, body, len);
	out.dec_len = sink.n;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pieces split, whole;
	struct run a, b;
	bool response;
	const char *body;
	char *dec_a, *dec_b, *dec_ref;
	size_t len, ref_end, ref_len;

	if (size < 2)
		return 0;
	response = data[0] & 1;
	pieces_init(&split, data[1]);
	pieces_init(&whole, 0);
	body = (const char *)data + 2;
	len = size - 2;
	/* decoded data is never longer than the body */
	dec_a = malloc(len + 1);
	dec_b = malloc(len + 1);
	dec_ref = malloc(len + 1);
	if (dec_a == NULL || dec_b == NULL || dec_ref == NULL)
		abort();

	a = parse_body(response, body, len, &split, dec_a, len);
	b = parse_body(response, body, len, &whole, dec_b, len);
	PROP(a.r.st == b.r.st);
	if (a.r.st != HTTP_ERROR) {
		PROP(a.r.raw == b.r.raw && a.dec_len == b.dec_len);
		PROP(a.dec_len <= len && memcmp(dec_a, dec_b, a.dec_len) == 0);
	}
	if (a.r.st == HTTP_MSG_DONE) {
		/* forwarded raw: a strict peer must see the same end */
		PROP(a.r.raw > a.dec_len && a.r.raw >= 5);
		PROP(memcmp(body + a.r.raw - 4, "\r\n\r\n", 4) == 0);
	}

	ref_end = ref_dechunk(body, len, dec_ref, &ref_len);
	if (ref_end > 0) {
		PROP(b.r.st == HTTP_MSG_DONE);
		PROP(b.r.raw == ref_end);
		PROP(b.dec_len == ref_len && memcmp(dec_b, dec_ref, ref_len) == 0);
	}
	free(dec_a);
	free(dec_b);
	free(dec_ref);
	return 0;
}
