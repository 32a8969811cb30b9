/*
 * The fate of each request (SPEC §16): the one outcome it ended with,
 * from a closed list, for the access log's `fate` and
 * ferry_request_fate_total; and the list of its attempts that the access
 * log (`attempts_detail`) and ferry's JSON errors (`error.attempts`) show,
 * so one line says why a request failed.
 *
 * Pure: fate_derive() reads only what the exchange recorded; the caller
 * gathers it into struct fate_input.
 */
#ifndef FERRY_FATE_H
#define FERRY_FATE_H

#include <stdbool.h>
#include <stdint.h>

#include "errors.h"
#include "retry.h"
#include "sbuf.h"

enum fate {
	FATE_OK,		/* the upstream's answer, first attempt */
	FATE_OK_AFTER_RETRY,	/* the upstream's answer, after a retry */
	FATE_OK_BY_HEDGE,	/* the upstream's answer, a hedge's */
	FATE_UPSTREAM_ERROR,	/* the upstream's own 5xx reached the app */
	FATE_TIMEOUT,		/* ferry's 504, or cut idle or at the deadline */
	FATE_CONNECT_FAILED,	/* ferry's error after the last connect failed */
	FATE_RESET,		/* ferry's error after a reset, or cut by the upstream */
	FATE_BREAKER_OPEN,	/* refused: circuit open */
	FATE_RATE_LIMITED,	/* refused: rate limit (429) */
	FATE_OVER_CONCURRENCY,	/* refused: max_concurrent, or the pool full */
	FATE_NO_ENDPOINT,	/* refused: no endpoint to try */
	FATE_BUDGET_EXHAUSTED,	/* ferry's error: the retry budget refused the retry */
	FATE_REJECTED,		/* ferry's 4xx (and 508): the request itself */
	FATE_CLIENT_GONE,	/* the client went away before the end */
	FATE_SHUTDOWN,		/* drain_timeout ended it */
	FATE_COUNT
};

/* "ok", "ok_after_retry", ... */
const char *fate_name(enum fate f);

/* The attempts kept per request: the first FATE_MAX_NOTES - 1 and the
 * last (the last slot is overwritten), which is retries.max + 1 for the
 * default max of 2 and more than most configs allow. */
#define FATE_MAX_NOTES 8

/* An attempt that ended without an outcome (the client went away, the
 * exchange was shut down, it lost a hedged race): beyond enum
 * attempt_result. */
#define NOTE_CANCELLED 255

/* One attempt. The address is copied, not pointed to: endpoints can be
 * retired by discovery while the request still runs. */
struct attempt_note {
	uint8_t addr[16];	/* IPv4 in the first 4 bytes */
	uint16_t port;		/* host order */
	uint8_t family;		/* AF_INET, AF_INET6; 0: unknown */
	uint8_t result;		/* enum attempt_result or NOTE_CANCELLED */
	uint32_t ms;		/* from its start to its outcome */
};

struct attempt_notes {
	struct attempt_note n[FATE_MAX_NOTES];
	uint8_t count;		/* <= FATE_MAX_NOTES */
};

/* Appends a note (once full, the last slot is overwritten, but not by a
 * cancelled attempt's when it holds an outcome). */
void fate_note_add(struct attempt_notes *ns, const struct attempt_note *note);
/* "connect_failure", "refused", "reset", "timeout", "502", ..., "cancelled" */
const char *fate_result_name(uint8_t result);
/* [{"endpoint":"127.0.0.1:5000","result":"refused","ms":3},...];
 * ENDPOINT_AS, when not NULL, stands in for every address (what a remote
 * peer is told of the local app). */
void fate_notes_json(struct sbuf *out, const struct attempt_notes *ns,
    const char *endpoint_as);
/* The same written at P, which has fate_notes_json_max() bytes of room;
 * returns the new end. */
char *fate_notes_json_put(char *p, const struct attempt_notes *ns,
    const char *endpoint_as);
size_t fate_notes_json_max(const struct attempt_notes *ns, const char *endpoint_as);
/* One note but ENDPOINT_AS: ',{"endpoint":' an address in brackets with
 * its port, ',"result":"' the longest result name, '","ms":' a uint32, '}' */
#define FATE_NOTE_JSON_MAX	128

/* What an exchange recorded, as fate_derive() reads it. */
struct fate_input {
	enum end_cause cause;	/* proxy_end's */
	int ferr;		/* ferry's own error answered (enum ferry_error), or -1 */
	uint32_t status;	/* sent to the client; 0: none */
	uint32_t retries;	/* retries made */
	bool won_by_hedge;	/* the answer came from a hedged attempt */
	bool budget_refused;	/* the retry budget refused the retry that would
				   have followed the last attempt */
	enum fate refused;	/* the refusal that answered (breaker, rate
				   limit, max_concurrent, no endpoint); FATE_OK: none */
	int last;		/* the last attempt's enum attempt_result, or -1 */
};

/* The one fate of a request; see the rules in fate.c and ferry(8). */
enum fate fate_derive(const struct fate_input *in);

#endif
