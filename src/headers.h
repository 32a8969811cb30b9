/*
 * Header rules of SPEC §5: which headers are hop-by-hop, and the rewritten
 * heads sent upstream and back to the app. Pure: no I/O.
 */
#ifndef FERRY_HEADERS_H
#define FERRY_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"
#include "sbuf.h"

struct conf_hrules;

/* Marks the headers Connection lists (their kinds were given as they
 * were read: http_header_kind()). MSG is the first byte of the message.
 * Returns -1 when the head is ambiguous (two Host headers, ...). */
int headers_classify(const char *msg, struct http_head *h);

/* Overwrites the value of every header of KIND in MSG (a key, once
 * checked) with zeros. */
void headers_wipe_values(char *msg, const struct http_head *h, enum hdr_kind kind);

/* The first header of KIND, or NULL. */
const struct http_header *headers_find(const struct http_head *h, enum hdr_kind kind);
int headers_count(const struct http_head *h, enum hdr_kind kind);
/* False when a Transfer-Encoding header is present but the parser did not
 * take the message MSG as chunked ("chunked<TAB>", "gzip", "chunked, gzip"),
 * when more than one coding reads as chunked once the whitespace around
 * each is gone ("chunked<TAB>" then "chunked"), or when another coding
 * comes before it ("gzip, chunked"): ferry would frame the body one way
 * and the next hop, reading the re-emitted header, another, or refuse it
 * (RFC 9112 6.3, 7), or pass coded bytes as the body where it drops the
 * header. */
bool headers_framing_ok(const char *msg, const struct http_head *h);
/* A request trailer may pass: not one of the names ferry knows (framing,
 * hop-by-hop, routing, its own, their '_' look-alikes). */
bool headers_trailer_allowed(const char *name, size_t len);
/* "name: value\r\n" lines, as ferry writes trailer fields, as the fields
 * of H (slices into LINES); any past HTTP_MAX_FIELDS, or past what memory
 * allows, are left out. H is made anew: the caller releases it
 * (http_head_release). */
void headers_from_lines(const char *lines, size_t len, struct http_head *h);

/* IDs decided for one request; the texts are owned by the caller. */
struct request_ids {
	const char *correlation;
	size_t correlation_len;
	const char *request;
	size_t request_len;
	bool correlation_from_app;	/* the app's header is kept in place */
	bool request_from_app;
	const char *traceparent;	/* NULL: pass the app's (valid) one */
	size_t traceparent_len;
	/* traceparent is the app's with ferry's span as parent-id (SPEC
	 * §13): the trace goes on, and so does its tracestate */
	bool tracestate_kept;
};

struct upstream_head_args {
	const char *host;		/* Host upstream; NULL keeps the request's */
	const char *target;		/* origin-form target */
	size_t target_len;
	bool target_slash;		/* put "/" before it (no path: "?q") */
	const char *auth_key;		/* x-service-auth, or NULL to remove */
	const struct request_ids *ids;
	const char *via;		/* "1.1 ferry-XXXXXXXX-out" */
	bool upgrade;			/* forward Upgrade + Connection: upgrade */
	/* inbound only */
	const char *peer;		/* x-ferry-peer, or NULL */
	const char *forwarded_for;	/* appended to x-forwarded-for, or NULL */
	/* header rules (SPEC §15): defaults', then the service's; NULL none */
	const struct conf_hrules *rules[2];
	/* gRPC with a deadline: the app's grpc-timeout is replaced by a
	 * fixed-width one whose digits start at *grpc_timeout_at in OUT, for
	 * each attempt to fill with the time left (SPEC §12) */
	size_t *grpc_timeout_at;
	/* compression (SPEC §14): accept-encoding to add, or NULL */
	const char *accept_encoding;
	/* x-ferry-deadline-ms: the request's is replaced by one of
	 * DEADLINE_DIGITS (deadline.h) starting at *deadline_at in OUT, for
	 * each attempt to fill with the time left (SPEC §16); NULL: none */
	size_t *deadline_at;
};

#define GRPC_TIMEOUT_DIGITS 8

/* The decimal value of header HD (a slice: not NUL-terminated); false
 * when it is not all digits or does not fit. */
bool headers_number(const char *msg, const struct http_header *hd, uint64_t *out);

/* Writes the request head for the upstream into OUT. False when that head
 * is over the limits (http1.h) that the next hop holds it to: only header
 * rules adding many fields, or a head full of ferry's own kinds already,
 * get it there (SPEC §11: 431). */
bool headers_build_request(struct sbuf *out, const char *msg, const struct http_head *h,
    const struct upstream_head_args *a);

/* A response body ferry codes anew (SPEC §14): its length changes, so
 * content-length goes, and so does any transfer-encoding of the
 * upstream's (the framing is ferry's). */
struct head_coding {
	const char *encoded;		/* ferry compresses: this content-encoding
					   is added, with vary, and a strong etag
					   made weak */
	bool decoded;			/* ferry decodes: content-encoding goes */
	bool chunked;			/* add transfer-encoding: chunked */
};

struct downstream_head_args {
	const struct request_ids *ids;
	bool keep_alive;		/* else "connection: close" */
	unsigned keep_alive_timeout;	/* seconds, for "keep-alive: timeout=N" */
	bool dechunk;			/* HTTP/1.0 client: drop transfer-encoding */
	bool upgrade;			/* a 101 being tunnelled */
	bool interim;			/* a 1xx: no connection headers of ours */
	const struct conf_hrules *rules[2];	/* as in upstream_head_args */
	const struct head_coding *coding;	/* NULL: the body passes as it is */
};

/* Writes the response head for the app into OUT; false when over the
 * limits, as for a request (a 502). */
bool headers_build_response(struct sbuf *out, const char *msg, const struct http_head *h,
    const struct downstream_head_args *a);

/* The head TEXT of LEN bytes, as ferry writes heads ("name: value\r\n"
 * lines after the start line, an empty line last), is within the limits
 * as http1.c counts them: the sender's fields and bytes less ferry's own
 * kinds, and the whole head under the hard cap. */
bool headers_fit(const char *text, size_t len);
/* The same head counted into M, as a receiver's http1.c counts it. */
void headers_measure(const char *text, size_t len, struct http_measure *m);

/* "keep-alive: timeout=N" for a kept connection, else "connection: close"
 * (SPEC §5: responses to the app carry the idle timeout). */
void headers_add_connection(struct sbuf *out, bool keep_alive, unsigned timeout);

/* The origin-form of TARGET (absolute-form loses scheme and authority).
 * AUTH and AUTH_LEN get the authority of an absolute-form target, else NULL. */
void target_split(const char *target, size_t len, const char **path, size_t *path_len,
    const char **auth, size_t *auth_len);

/* A host name without port (and without IPv6 brackets). */
void host_strip_port(const char *host, size_t len, const char **name, size_t *name_len);

#endif
