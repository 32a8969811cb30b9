/*
 * libFuzzer harness: upstream response heads as h1_up.c reads them.
 * src/http1.c in response mode (bytes arriving in pieces), headers_classify,
 * interim 1xx heads skipped, bodiless responses (HEAD, 204, 304), then the
 * body: by length, chunked (dechunked for an HTTP/1.0 client) or up to
 * the close (http_parse_eof), and the next response on the connection.
 *
 * Input: byte 0 flags (bit 0 the request was HEAD, bit 1 the client is
 * HTTP/1.0 so chunked bodies are decoded, bit 2 an upgrade was asked for),
 * byte 1 seeds the piece sizes; the rest is what the upstream sent.
 */
#include "fuzz_common.h"

#define MAX_MESSAGES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_parser hp;
	static struct http_head head;
	struct pieces pc;
	struct sink sink = { 0 };
	bool head_method, http10, upgrade;
	const char *in;
	size_t len;

	if (size < 2)
		return 0;
	head_method = data[0] & 1;
	http10 = data[0] & 2;
	upgrade = data[0] & 4;
	pieces_init(&pc, data[1]);
	in = (const char *)data + 2;
	len = size - 2;
	/* the static head may have outgrown its inline table last run */
	http_head_release(&head);
	http_parser_init(&hp, true, &head);
	hp.on_data = sink_data;
	hp.arg = &sink;
	for (int m = 0; m < MAX_MESSAGES && len > 0; m++) {
		struct body_result b;
		size_t fed;
		enum http_status st = feed_head(&hp, in, len, &pc, &fed);
		bool eof_body, bodiless;

		if (st == HTTP_ERROR) {
			PROP(hp.err != HTTP_ERR_NONE);
			return 0;
		}
		if (st == HTTP_NEED_MORE)
			return 0;
		PROP(st == HTTP_HEAD_DONE);
		check_head(in, &head, fed, true);
		if (headers_classify(in, &head) != 0)
			return 0;	/* 502 */
		PROP(headers_count(&head, HDR_HOST) <= 1);
		check_framing(in, &head);
		if (head.status < 200 && !(head.status == 101 && upgrade)) {
			/* interim: dropped or relayed, the final head follows */
			in += head.head_len;
			len -= head.head_len;
			http_parser_reset(&hp);
			continue;
		}
		if (head.status == 101)
			return 0;	/* a tunnel from here on */
		bodiless = head_method || head.status == 204 || head.status == 304;
		if (bodiless)
			http_parser_skip_body(&hp);
		eof_body = http_parser_body_until_eof(&hp);
		if (eof_body)
			PROP(!bodiless && !head.chunked && !head.has_length);
		hp.dechunk = http10 && head.chunked && !head_method;
		sink.n = 0;
		in += head.head_len;
		len -= head.head_len;
		/* upstream_relay() parses once even with no bytes left */
		if (len == 0) {
			size_t used = 0;

			st = http_parse(&hp, in, 0, 0, &used);
			PROP(used == 0);
			b = (struct body_result){ st, 0, 0 };
		} else {
			b = feed_body(&hp, in, len, &pc);
		}
		PROP(b.raw <= len);
		if (hp.dechunk)
			check_counted(sink.n, &b, in, len);
		if (bodiless && b.st != HTTP_ERROR)
			PROP(b.st == HTTP_MSG_DONE && b.raw == 0 && b.counted == 0);
		if (b.st == HTTP_NEED_MORE && eof_body) {
			/* the upstream closed: the body ends here */
			PROP(http_parse_eof(&hp) == HTTP_MSG_DONE);
			PROP(b.raw == len && b.counted == len);
			return 0;
		}
		if (b.st != HTTP_MSG_DONE)
			return 0;
		if (head.has_length && !bodiless)
			PROP(b.counted == head.content_length && b.raw == b.counted);
		if (head.chunked && !bodiless)
			PROP(b.raw > b.counted);
		in += b.raw;
		len -= b.raw;
		http_parser_reset(&hp);
	}
	return 0;
}
