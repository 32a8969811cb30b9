/*
 * The fate of a request and the list of its attempts. See fate.h.
 */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "fate.h"

const char *
fate_name(enum fate f)
{
	static const char *const names[FATE_COUNT] = {
		[FATE_OK] = "ok",
		[FATE_OK_AFTER_RETRY] = "ok_after_retry",
		[FATE_OK_BY_HEDGE] = "ok_by_hedge",
		[FATE_UPSTREAM_ERROR] = "upstream_error",
		[FATE_TIMEOUT] = "timeout",
		[FATE_CONNECT_FAILED] = "connect_failed",
		[FATE_RESET] = "reset",
		[FATE_BREAKER_OPEN] = "breaker_open",
		[FATE_RATE_LIMITED] = "rate_limited",
		[FATE_OVER_CONCURRENCY] = "over_concurrency",
		[FATE_NO_ENDPOINT] = "no_endpoint",
		[FATE_BUDGET_EXHAUSTED] = "budget_exhausted",
		[FATE_REJECTED] = "rejected",
		[FATE_CLIENT_GONE] = "client_gone",
		[FATE_SHUTDOWN] = "shutdown",
	};

	return (unsigned)f < FATE_COUNT ? names[f] : "unknown";
}

const char *
fate_result_name(uint8_t result)
{
	switch (result) {
	case AR_OK:			return "ok";
	case AR_CONNECT_FAILURE:	return "connect_failure";
	case AR_REFUSED:		return "refused";
	case AR_RESET:			return "reset";
	case AR_PER_TRY_TIMEOUT:	return "timeout";
	case AR_STATUS_502:		return "502";
	case AR_STATUS_503:		return "503";
	case AR_STATUS_504:		return "504";
	case NOTE_CANCELLED:		return "cancelled";
	default:			return "unknown";
	}
}

void
fate_note_add(struct attempt_notes *ns, const struct attempt_note *note)
{
	/* once full, the last slot follows the latest attempt: the one that
	 * decided the outcome is always listed, and a hedge cancelled after
	 * it (noted later) does not take its place */
	if (ns->count < FATE_MAX_NOTES)
		ns->n[ns->count++] = *note;
	else if (note->result != NOTE_CANCELLED ||
	    ns->n[FATE_MAX_NOTES - 1].result == NOTE_CANCELLED)
		ns->n[FATE_MAX_NOTES - 1] = *note;
}

static char *
note_endpoint(char *p, const struct attempt_note *n)
{
	char text[INET6_ADDRSTRLEN];

	if (n->family == AF_INET) {
		/* every access log line has one: glibc's inet_ntop formats
		 * IPv4 through sprintf, a quarter of the line's cost */
		*p++ = '"';
		for (int i = 0; i < 4; i++) {
			if (i > 0)
				*p++ = '.';
			p = put_u64(p, n->addr[i]);
		}
		*p++ = ':';
		p = put_u64(p, n->port);
		*p++ = '"';
		return p;
	}
	if (n->family != AF_INET6)
		return PUT_LIT(p, "null");
	if (inet_ntop(AF_INET6, n->addr, text, sizeof(text)) == NULL)
		text[0] = '\0';
	p = PUT_LIT(p, "\"[");
	p = put_mem(p, text, strlen(text));
	p = PUT_LIT(p, "]:");
	p = put_u64(p, n->port);
	*p++ = '"';
	return p;
}

char *
fate_notes_json_put(char *p, const struct attempt_notes *ns, const char *endpoint_as)
{
	*p++ = '[';
	for (unsigned i = 0; i < ns->count && i < FATE_MAX_NOTES; i++) {
		const struct attempt_note *n = &ns->n[i];
		const char *result = fate_result_name(n->result);

		p = i ? PUT_LIT(p, ",{\"endpoint\":") : PUT_LIT(p, "{\"endpoint\":");
		if (endpoint_as) {
			*p++ = '"';
			p = put_mem(p, endpoint_as, strlen(endpoint_as));
			*p++ = '"';
		} else {
			p = note_endpoint(p, n);
		}
		p = PUT_LIT(p, ",\"result\":\"");
		p = put_mem(p, result, strlen(result));
		p = PUT_LIT(p, "\",\"ms\":");
		p = put_u64(p, n->ms);
		*p++ = '}';
	}
	*p++ = ']';
	return p;
}

size_t
fate_notes_json_max(const struct attempt_notes *ns, const char *endpoint_as)
{
	size_t each = FATE_NOTE_JSON_MAX + (endpoint_as ? strlen(endpoint_as) : 0);

	return 2 + (size_t)(ns->count < FATE_MAX_NOTES ? ns->count : FATE_MAX_NOTES) * each;
}

void
fate_notes_json(struct sbuf *out, const struct attempt_notes *ns, const char *endpoint_as)
{
	char *p = sbuf_room(out, fate_notes_json_max(ns, endpoint_as));

	if (p != NULL)
		sbuf_commit(out, fate_notes_json_put(p, ns, endpoint_as));
}

/* A cut after the response head left (or with nobody to answer). */
static enum fate
fate_of_cause(enum end_cause c)
{
	switch (c) {
	case END_CLIENT_CLOSED:
	case END_CLIENT_READ_ERROR:
	case END_CLIENT_WRITE_FAILED:
		return FATE_CLIENT_GONE;
	case END_SHUTDOWN:
		return FATE_SHUTDOWN;
	case END_STREAM_IDLE:
	case END_DEADLINE:
		return FATE_TIMEOUT;
	case END_MALFORMED_REQUEST_BODY:
	case END_REQUEST_BODY_TOO_LARGE:
	case END_REQUEST_TRAILERS_TOO_LARGE:
		return FATE_REJECTED;	/* the request broke its own rules */
	case END_PEER_UNTRUSTED:
		return FATE_REJECTED;	/* as the 403 a new request of the peer's gets */
	case END_CLIENT_TIMEOUT:
		/* the client's connection broke header_read_timeout: as
		 * the 408 of the stream that held it (not client_gone: the
		 * client did not leave; not timeout: nothing upstream was
		 * slow) */
		return FATE_REJECTED;
	case END_CLIENT_PROTOCOL_ERROR:
		return FATE_REJECTED;	/* the client broke HTTP/2's rules */
	default:
		/* upstream_closed, malformed_upstream_body, out_of_memory,
		 * decompression_bomb: the response was cut on the way */
		return FATE_RESET;
	}
}

/* One of ferry's own 5xx after attempts ran out: what the last one met. */
static enum fate
fate_of_ferry_error(const struct fate_input *in)
{
	switch (in->last) {
	case AR_CONNECT_FAILURE:
	case AR_REFUSED:
		return FATE_CONNECT_FAILED;
	case AR_RESET:
		return FATE_RESET;
	case AR_PER_TRY_TIMEOUT:
		return FATE_TIMEOUT;
	default:
		break;
	}
	/* no attempt to blame: by the error itself */
	switch (in->ferr) {
	case FE_SERVICE_TIMEOUT:
		return FATE_TIMEOUT;	/* a deadline, also one that arrived spent */
	case FE_SERVICE_ERROR:
		return in->last >= 0 ? FATE_RESET : FATE_REJECTED;
	default:
		return FATE_NO_ENDPOINT;	/* ferry's 503 with nothing to try */
	}
}

enum fate
fate_derive(const struct fate_input *in)
{
	if (in->cause != END_DONE)
		return fate_of_cause(in->cause);
	if (in->refused != FATE_OK)
		return in->refused;
	if (in->ferr >= 0) {
		switch ((enum ferry_error)in->ferr) {
		case FE_RATE_LIMITED:
			return FATE_RATE_LIMITED;
		case FE_SERVICE_ERROR:
		case FE_SERVICE_UNAVAILABLE:
		case FE_SERVICE_TIMEOUT:
			/* the budget stopped the retry that would have followed */
			return in->budget_refused ? FATE_BUDGET_EXHAUSTED :
			    fate_of_ferry_error(in);
		default:
			return FATE_REJECTED;	/* the 4xx of §7, and 508 */
		}
	}
	/* the upstream's own answer reached the app, whatever stopped the
	 * retries (a trailers-only gRPC UNAVAILABLE is its 503) */
	if (in->status >= 500 || in->last == AR_STATUS_502 || in->last == AR_STATUS_503 ||
	    in->last == AR_STATUS_504)
		return FATE_UPSTREAM_ERROR;
	if (in->status == 0)
		return FATE_CLIENT_GONE;	/* ended with no answer at all */
	if (in->won_by_hedge)
		return FATE_OK_BY_HEDGE;
	return in->retries ? FATE_OK_AFTER_RETRY : FATE_OK;
}
