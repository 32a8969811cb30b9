/*
 * Compression between sidecars (SPEC §14) for one exchange: what the
 * request offers or accepts, whether the response body is coded anew, and
 * that body's way through compress.c to the downstream codec. proxy.c
 * calls these where the request head and the response pass; the coder and
 * its buffers belong to the exchange (x->zf) and go at proxy_end.
 */
#ifndef FERRY_PROXY_CODING_H
#define FERRY_PROXY_CODING_H

#include "exchange.h"

/* At the request head: inbound, the encoding the peer accepts is noted;
 * outbound, the accept-encoding ferry adds is returned (NULL: none). */
const char *coding_request(struct exchange *x, const char *msg, const struct http_head *h);
/* At the final response head, before it leaves: sets up x->zf when the
 * body is to be encoded or decoded, and the framing that follows. False
 * when a body ferry must decode has no decoder (out of memory): the
 * response cannot go to the app as it is. */
bool coding_response(struct exchange *x, const char *msg, const struct http_head *h);
/* Body bytes of a coded response; END: the last ones. False when the
 * exchange ended (cut, or complete). */
bool coding_data(struct exchange *x, const void *p, size_t n, bool end);
/* Response trailers, kept for the last chunk of an HTTP/1.1 client. */
void coding_trailers(struct exchange *x, const char *msg, const struct http_head *h);
/* The client drained: true when coded input waits (the coder resumes the
 * upstream once it is through); false: resume it as usual. */
bool coding_drained(struct exchange *x);
void coding_free(struct exchange *x);

#endif
