/*
 * The error responses ferry itself produces (SPEC §7): JSON in the seed's
 * shape, with content-type, x-ferry-error and x-correlation-id.
 */
#ifndef FERRY_ERRORS_H
#define FERRY_ERRORS_H

#include <stdbool.h>
#include <stddef.h>

#include "sbuf.h"

enum ferry_error {
	FE_BAD_REQUEST,			/* 400 */
	FE_INVALID_SERVICE_AUTH,	/* 403 */
	FE_UNKNOWN_SERVICE,		/* 404 */
	FE_METHOD_NOT_ALLOWED,		/* 405 */
	FE_REQUEST_TIMEOUT,		/* 408 */
	FE_PAYLOAD_TOO_LARGE,		/* 413 */
	FE_RATE_LIMITED,		/* 429 */
	FE_HEADERS_TOO_LARGE,		/* 431 */
	FE_SERVICE_ERROR,		/* 502 */
	FE_SERVICE_UNAVAILABLE,		/* 503 */
	FE_SERVICE_TIMEOUT,		/* 504 */
	FE_LOOP_DETECTED,		/* 508 */
	FE_COUNT
};

/* How an exchange ended (proxy_end): complete, or why it was cut after
 * its response head left or with nobody left to answer. The access log's
 * `error` and ferry_requests_cut_total{cause} use the same names. */
enum end_cause {
	END_DONE,			/* complete, or one of ferry's errors answered */
	END_CLIENT_CLOSED,
	END_CLIENT_READ_ERROR,
	END_CLIENT_WRITE_FAILED,
	END_UPSTREAM_CLOSED,		/* mid-response */
	END_MALFORMED_UPSTREAM_BODY,
	END_MALFORMED_REQUEST_BODY,
	END_REQUEST_BODY_TOO_LARGE,
	END_REQUEST_TRAILERS_TOO_LARGE,
	END_OUT_OF_MEMORY,
	END_STREAM_IDLE,
	END_SHUTDOWN,
	END_DEADLINE,			/* grpc-timeout, after the head */
	END_DECOMPRESSION_BOMB,		/* a decoded body over 1000x or 1 GiB */
	END_PEER_UNTRUSTED,		/* inbound tunnel: a reload's client_ca no
					   longer trusts the peer's certificate,
					   allowed_peers no longer names it, or
					   the keys no longer hold its key */
	END_CLIENT_TIMEOUT,		/* ferry closed the client's connection:
					   an HTTP/2 header block on it (any
					   stream's) was not complete within
					   header_read_timeout */
	END_CLIENT_PROTOCOL_ERROR,	/* ferry closed the client's connection
					   with a GOAWAY error (an HTTP/2
					   protocol error, a flood) */
	END_COUNT
};

/* "client_closed", ...; NULL for END_DONE */
const char *end_cause_name(enum end_cause c);

int ferror_status(enum ferry_error e);
const char *ferror_code(enum ferry_error e);

struct attempt_notes;

struct error_args {
	enum ferry_error err;
	const char *message;
	const char *correlation;	/* may be NULL */
	size_t correlation_len;
	const char *request_id;		/* may be NULL */
	size_t request_id_len;
	unsigned retry_after;		/* seconds; 0 = no header */
	bool keep_alive;
	unsigned keep_alive_timeout;
	bool head_only;			/* answer to HEAD: no body */
	/* the request's attempts, as error.attempts (SPEC §16); NULL: none
	 * listed. The JSON form only: grpc-message stays a sentence. */
	const struct attempt_notes *attempts;
	const char *attempts_endpoint;	/* stands in for their addresses, or NULL */
};

/* Writes the whole response (head and body) into OUT. */
void ferror_build(struct sbuf *out, const struct error_args *a);

/* The gRPC status for E (SPEC §7); PEER_DENIED: an inbound peer whose
 * identity is not allowed (PERMISSION_DENIED, not UNAUTHENTICATED). */
int ferror_grpc_status(enum ferry_error e, bool peer_denied);
/* The status a gRPC client makes of an answer without grpc-status, from
 * its HTTP status (gRPC's HTTP-to-gRPC status mapping; 200 included). */
int grpc_status_of_http(int http_status);
/* The gRPC form of an error (SPEC §7): 200, trailers-only (grpc-status,
 * grpc-message, x-ferry-error and the IDs in the head), no body. */
void ferror_build_grpc(struct sbuf *out, const struct error_args *a, int grpc_status);

/* Appends S as the inside of a JSON string (quotes not included):
 * escapes quotes, backslashes, control bytes and invalid UTF-8. */
void json_escape(struct sbuf *out, const char *s, size_t len);
/* The same, written at P, which has room for JSON_ESCAPE_MAX(LEN) bytes
 * (every byte may become "\u00XX" or "\ufffd"); returns the new end. */
#define JSON_ESCAPE_MAX(len)	((len) * 6)
char *json_escape_put(char *p, const char *s, size_t len);

#endif
