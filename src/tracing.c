/*
 * Spans from exchanges (see tracing.h). What a span says is what the
 * access log line of the same request says (proxy_account), in the
 * OpenTelemetry HTTP semantic conventions' names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exchange.h"
#include "exporter.h"
#include "otlp.h"
#include "tracing.h"

/* retry events kept per span; more are counted as dropped */
#define MAX_EVENTS 32
#define PATH_MAX_LEN 2048

static const char hexdig[] = "0123456789abcdef";

static void
random_id(uint8_t *out, size_t n)
{
	uint64_t r = 0, any = 0;

	do {
		for (size_t i = 0; i < n; i++) {
			if ((i & 7) == 0)
				r = ids_random();
			out[i] = (uint8_t)r;
			any |= out[i];
			r >>= 8;
		}
	} while (any == 0);	/* all zero is invalid in W3C and OTLP */
}

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
}

static void
unhex(uint8_t *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1]));
}

static void
tohex(char *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hexdig[p[i] >> 4];
		out[2 * i + 1] = hexdig[p[i] & 15];
	}
}

static bool
sample(double ratio)
{
	if (ratio >= 1.0)
		return true;
	if (ratio <= 0.0)
		return false;
	return (double)ids_random() < ratio * 18446744073709551616.0;
}

void
tracing_begin(struct exchange *x, const char *in, size_t in_len)
{
	const struct conf_tracing *t = &x->gen->conf->tracing;
	char *tp = x->tp;

	(void)in_len;	/* valid: version-00 fields are at their offsets */
	random_id(x->span_id, sizeof(x->span_id));
	if (in != NULL) {
		unhex(x->trace_id, in + 3, 16);
		unhex(x->parent_id, in + 36, 8);
		x->trace_parent = true;
		x->trace_flags = (uint8_t)(hexval(in[53]) << 4 | hexval(in[54]));
		x->ids.tracestate_kept = true;
	} else {
		random_id(x->trace_id, sizeof(x->trace_id));
		x->trace_parent = false;
		x->trace_flags = sample(t->sample_ratio) ? 1 : 0;
	}
	x->traced = (x->trace_flags & 1) != 0;
	memcpy(tp, "00-", 3);
	tohex(tp + 3, x->trace_id, 16);
	tp[35] = '-';
	tohex(tp + 36, x->span_id, 8);
	tp[52] = '-';
	tohex(tp + 53, &x->trace_flags, 1);
	x->tp_len = TRACEPARENT_LEN;
	x->ids.traceparent = x->tp;
	x->ids.traceparent_len = TRACEPARENT_LEN;
}

size_t
tracing_clean(char *out, size_t cap, const char *text, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c >= '!' && c <= '~') {
			if (o + 1 >= cap)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= cap)
				break;
			out[o++] = '%';
			out[o++] = "0123456789ABCDEF"[c >> 4];
			out[o++] = "0123456789ABCDEF"[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

static uint64_t
wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "10.0.0.5:5000" or "[::1]:5000" into its address and port (0: none) */
static size_t
split_addr(const char *text, char *host, size_t cap, int64_t *port)
{
	const char *colon = strrchr(text, ':');
	size_t n = colon ? (size_t)(colon - text) : strlen(text);

	*port = 0;
	if (colon && strchr(text, ']') == NULL && memchr(text, ':', n) != NULL) {
		n = strlen(text);	/* a bare IPv6 address */
		colon = NULL;
	}
	if (colon)
		*port = strtoll(colon + 1, NULL, 10);
	if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
		text++;
		n -= 2;
	}
	return tracing_clean(host, cap, text, n);
}

static struct otlp_attr
str_attr(const char *key, const char *s, size_t len)
{
	return (struct otlp_attr){ .key = key, .str = s, .len = len };
}

/* retries.on's names: what went wrong with the attempt before the retry */
static const char *const result_names[] = {
	[AR_OK] = "ok", [AR_CONNECT_FAILURE] = "connect-failure",
	[AR_REFUSED] = "refused", [AR_RESET] = "reset",
	[AR_PER_TRY_TIMEOUT] = "per-try-timeout", [AR_STATUS_502] = "502",
	[AR_STATUS_503] = "503", [AR_STATUS_504] = "504",
};

void
tracing_retry(struct exchange *x, int64_t backoff_ms)
{
	struct otlp_attr a[5];
	char host[96];
	size_t n = 0;
	int64_t port;

	if (!x->traced)
		return;
	if (x->trace_events >= MAX_EVENTS) {
		x->trace_events_dropped++;
		return;
	}
	a[n++] = (struct otlp_attr){ .key = "ferry.retry", .is_int = true, .i = x->retries };
	a[n++] = (struct otlp_attr){ .key = "ferry.retry.reason",
	    .str = result_names[x->last_result < 8 ? x->last_result : 0],
	    .len = strlen(result_names[x->last_result < 8 ? x->last_result : 0]) };
	a[n++] = (struct otlp_attr){ .key = "ferry.retry.backoff_ms", .is_int = true,
	    .i = backoff_ms > 0 ? backoff_ms : 0 };
	if (x->ep) {
		size_t hl = split_addr(x->ep->addr_text, host, sizeof(host), &port);

		a[n++] = str_attr("network.peer.address", host, hl);
		if (port)
			a[n++] = (struct otlp_attr){ .key = "network.peer.port", .is_int = true,
			    .i = port };
	}
	otlp_event(&x->span_events, wall_ns(), "retry", a, n);
	x->trace_events++;
}

void
tracing_end(struct exchange *x, enum end_cause cause)
{
	const struct conf_tracing *t = &x->gen->conf->tracing;
	const char *log = x->logline.p ? x->logline.p : "";
	const char *err = cause != END_DONE ? end_cause_name(cause) :
	    x->ferr >= 0 ? ferror_code((enum ferry_error)x->ferr) : NULL;
	const char *service = x->svc ? x->svc->conf->name : x->inbound ? "local_app" : "";
	char method[64], path[PATH_MAX_LEN], peer[96], peer_id[PEER_ID_MAX * 3 + 1];
	size_t raw_mlen = 0, mlen, plen, n = 0, pl;
	struct otlp_attr a[12];
	uint64_t end = wall_ns(), dur;
	int64_t port = 0;
	bool error;

	if (!x->traced || !x->gen->conf->tracing.enabled)
		return;
	x->traced = false;
	/* a fresh reading, not the turn's: start_us may be the turn's, so
	 * behind the true start, and this way the span (end, a fresh wall
	 * time, back to end - dur) holds every event stamped inside it; the
	 * turn's reading lags end and could put the start after a retry */
	dur = (uint64_t)(clock_read_us() - x->start_us) * 1000u;
	while (raw_mlen < x->logline.len && log[raw_mlen] != ' ')
		raw_mlen++;
	/* the path follows the method as it came, not as cleaned and cut
	 * (an HTTP/2 :method is any token, of any length) */
	mlen = tracing_clean(method, sizeof(method), log, raw_mlen);
	pl = raw_mlen < x->logline.len ? x->logline.len - raw_mlen - 1 : 0;
	if (pl > 0) {
		const char *p = log + x->logline.len - pl, *q = memchr(p, '?', pl);

		plen = tracing_clean(path, sizeof(path), p, q ? (size_t)(q - p) : pl);
	} else {
		plen = 0;
		path[0] = '\0';
	}
	a[n++] = str_attr("http.request.method", method, mlen);
	a[n++] = str_attr("url.path", path, plen);
	if (x->status > 0)
		a[n++] = (struct otlp_attr){ .key = "http.response.status_code", .is_int = true,
		    .i = x->status };
	if (x->inbound)
		a[n++] = str_attr("server.address", t->service_name, strlen(t->service_name));
	else if (x->svc)
		a[n++] = str_attr("server.address", service, strlen(service));
	if (x->inbound ? x->peer != NULL : x->ep != NULL) {
		size_t pl2 = split_addr(x->inbound ? x->peer : x->ep->addr_text, peer,
		    sizeof(peer), &port);

		a[n++] = str_attr("network.peer.address", peer, pl2);
		if (port)
			a[n++] = (struct otlp_attr){ .key = "network.peer.port", .is_int = true,
			    .i = port };
	}
	if (err)
		a[n++] = str_attr("error.type", err, strlen(err));
	a[n++] = (struct otlp_attr){ .key = "ferry.attempts", .is_int = true, .i = x->attempts };
	a[n++] = str_attr("ferry.service", service, strlen(service));
	if (x->inbound && x->peer_id)
		a[n++] = str_attr("ferry.peer", peer_id, tracing_clean(peer_id, sizeof(peer_id),
		    x->peer_id, strlen(x->peer_id)));
	/* semantic conventions: a server's 4xx is the client's fault */
	error = err != NULL || x->status >= (x->inbound ? 500u : 400u) || x->status == 0;
	exporter_push(x->w->exporter, &(struct otlp_span){
		.trace_id = x->trace_id,
		.span_id = x->span_id,
		.parent_id = x->trace_parent ? x->parent_id : NULL,
		/* SpanFlags: the W3C flags; HAS_IS_REMOTE, and IS_REMOTE when
		 * the parent came from another process */
		.flags = x->trace_flags | 0x100u | (x->trace_parent ? 0x200u : 0),
		.name = mlen ? method : "HTTP",
		.name_len = mlen ? mlen : 4,
		.kind = x->inbound ? OTLP_KIND_SERVER : OTLP_KIND_CLIENT,
		.start_ns = end - dur,
		.end_ns = end,
		.attrs = a,
		.n_attrs = n,
		.events = x->span_events.p,
		.events_len = x->span_events.len,
		.dropped_events = x->trace_events_dropped,
		.status = error ? OTLP_STATUS_ERROR : OTLP_STATUS_UNSET,
		.status_msg = err,
	});
}
