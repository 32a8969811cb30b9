/*
 * One request and its life. proxy.c owns it: from the head a downstream
 * codec parsed, through admission, deadlines and upstream attempts, to
 * the one teardown, proxy_end(), with the cause that the access log and
 * the metrics both use.
 *
 * The codecs sit on either side: downstream, the app's or a peer's
 * connection (h1_down.c); upstream, a pooled connection to an endpoint
 * (h1_up.c). Each reports to proxy.c through the proxy_* calls below and
 * is driven by it through its ops table; neither touches the other's
 * state. A codec reads the exchange's request facts; it writes only the
 * fields marked as its own.
 */
#ifndef FERRY_EXCHANGE_H
#define FERRY_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "breaker.h"
#include "clock.h"
#include "errors.h"
#include "fate.h"
#include "headers.h"
#include "http1.h"
#include "ids.h"
#include "inbound.h"
#include "retry.h"
#include "sbuf.h"
#include "worker.h"

/* lis_service of a port a reload removed: routes nowhere (404) */
#define LIS_SERVICE_GONE (SIZE_MAX - 1)

/* The service a connection's port routes to, as of now (a reload may move
 * its index or remove it): SIZE_MAX for a port that routes by target or
 * Host, LIS_SERVICE_GONE for one a reload removed. Read per request. */
static inline size_t
listener_service_now(const struct listener *l)
{
	if (l->kind != LK_SERVICE)
		return SIZE_MAX;
	return l->service == SIZE_MAX ? LIS_SERVICE_GONE : l->service;
}

struct exchange;
struct zflow;
struct upconn;
struct h2up_stream;

/* What proxy.c asks of the downstream codec. Every send returns false
 * when the client is gone: the codec has then ended the exchange
 * (proxy_end), and the caller returns at once, touching nothing of it. */
struct down_ops {
	/* "100 Continue" before the body */
	bool (*send_continue)(struct exchange *x);
	/* a 1xx other than 100 and 101 */
	bool (*send_interim)(struct exchange *x, const char *msg, const struct http_head *h);
	/* The response head; it leaves with the first body bytes. */
	bool (*send_head)(struct exchange *x, const char *msg, const struct http_head *h);
	/* Body bytes in the framing the head announced. */
	bool (*send_data)(struct exchange *x, const void *p, size_t n);
	/* The last bytes: the exchange is accounted before they leave, so
	 * a scrape after the response includes it. */
	bool (*send_last)(struct exchange *x, const void *p, size_t n);
	/* One of ferry's own errors (SPEC §7), as the last bytes. */
	void (*send_error)(struct exchange *x, enum ferry_error e, const char *msg,
	    unsigned retry_after, bool close);
	/* The client's output is over the high mark: stop reading upstream. */
	bool (*congested)(const struct exchange *x);
	/* The upstream takes request body again. */
	void (*resume_body)(struct exchange *x);
	/* Response trailers (an HTTP/2 upstream's), before send_last;
	 * a codec that frames bodies itself sends them at the end. */
	void (*send_trailers)(struct exchange *x, const char *msg, const struct http_head *h);
	/* After a 101: bytes both ways. False when the client is gone. */
	bool (*tunnel_start)(struct exchange *x);
	/* The upstream half-closed the tunnel: the client's write side ends
	 * once what is queued for it has left (conn_close_write); reading
	 * it goes on. False when the client is gone. NULL: the codec
	 * carries no tunnels. */
	bool (*tunnel_close_write)(struct exchange *x);
	/* proxy_end is done with X: next request, or close for CAUSE. */
	void (*finish)(struct exchange *x, enum end_cause cause);
	/* When the client last took bytes of X (clock_now_ms() time, 0:
	 * unknown), for stream_idle; may sample the socket (a syscall). */
	int64_t (*progress)(struct exchange *x);
};

/* What proxy.c asks of the upstream codec, for the attempt's connection. */
struct up_ops {
	/* Binds the attempt to X->up and sends X->req. False: the attempt
	 * failed and was handled. */
	bool (*start)(struct exchange *x);
	/* More request body (or tunnel bytes). False: handled as above. */
	bool (*send)(struct exchange *x, const void *p, size_t n);
	/* Its output is over the high mark: stop reading the client. */
	bool (*congested)(const struct exchange *x);
	/* The client took what was sent: read more of the response. */
	void (*resume)(struct exchange *x);
	/* The attempt lets go of its connection (HTTP/2: its stream is reset
	 * unless complete); REUSABLE: an HTTP/1.1 one may serve again. */
	void (*release)(struct exchange *x, bool reusable);
	/* Any byte of this attempt's request was written. */
	bool (*request_sent)(const struct exchange *x);
	/* The upstream surely did not process the request (it closed a
	 * reused connection before answering): it may be sent again. */
	bool (*unprocessed)(const struct exchange *x);
	/* Hedging (hedge.h): the attempt of FROM, with its connection or
	 * stream, is TO's from now on; HEAD: its final response head came,
	 * and TO takes it now. */
	void (*handover)(struct exchange *from, struct exchange *to, bool head);
	/* Tunnels (NULL where the codec carries none). The client
	 * half-closed: the connection's write side ends once what is queued
	 * for it has left. False: it broke, and the exchange ended. */
	bool (*close_write)(struct exchange *x);
	/* close_write's end has reached the socket. */
	bool (*write_closed)(const struct exchange *x);
	/* When the upstream last took bytes of X (as down_ops.progress). */
	int64_t (*progress)(struct exchange *x);
};

struct exchange {
	/* set by the downstream codec once, at its start */
	const struct down_ops *down;
	struct worker *w;
	/* the exchange's deadlines, proxy.c's: within it, not a malloc a
	 * request (a stream's exchange comes and goes 32 at a time) */
	struct event timer;
	int64_t timer_at_ms;		/* when it fires; 0: not armed */
	bool inbound;			/* from a peer, to the local app */
	const struct conf_listener *lis;
	size_t lis_service;		/* a service's own port: its index, else -1;
					   LIS_SERVICE_GONE: a reload removed it */
	const char *peer;		/* address text */
	const char *peer_id;		/* inbound: verified identity, or NULL */
	SSL_CTX *peer_ctx;		/* inbound: the context that verified it */
	bool unframed;			/* the codec frames bodies itself */
	struct generation *gen;		/* the codec holds it for the request */

	/* per request, from here on: proxy_request clears them */
	const struct up_ops *upops;
	struct upconn *up;		/* HTTP/1.1: the attempt's connection */
	struct h2up_stream *up2;	/* HTTP/2: the attempt's stream */
	struct svc_state *svc;
	struct endpoint *ep;
	bool live;			/* between proxy_request and proxy_end */
	bool sent;			/* the first attempt began */
	bool accounted;			/* metrics and access log written */
	int64_t start_ms;
	int64_t start_us;
	int64_t start_wall_ms;		/* realtime, for the access log */
	int64_t head_us;		/* to the response head (0: none yet) */
	int ferr;			/* ferry's own error answered, or -1 */
	int64_t deadline_ms;		/* request timeout, until the head */
	int64_t grpc_deadline_ms;	/* grpc-timeout: the whole call; 0 none */
	int64_t try_deadline_ms;	/* this attempt, until the head */
	int64_t connect_deadline_ms;	/* 0 once connected */
	int64_t last_io_ms;		/* body/tunnel activity, after the head:
					   bytes received, or handed on (the
					   codecs' progress() adds what the
					   sockets took, when stream_idle is due) */
	uint32_t attempts;
	uint32_t retries;
	bool attempt_open;		/* its outcome is not recorded yet */
	int64_t attempt_start_ms;
	int64_t retry_at_ms;		/* backoff: the next attempt starts then */
	int64_t pool_wait_until_ms;	/* waiting for a pooled connection */
	int64_t pool_asked_ms;		/* other workers asked to free one */
	const struct endpoint *avoid;	/* endpoint of the failed attempt */
	bool ep_held;			/* counted in ep->held (attempt.c) */
	enum breaker_verdict verdict;	/* admission by the circuit breaker */
	struct breaker *entered;	/* counted in its max_concurrent */
	bool http10;
	bool head_method;
	bool idempotent;
	bool keep_alive;		/* the client's side allows reuse */
	bool upgrade;
	bool tunnel;			/* after 101 */
	bool client_fin;		/* the tunnel's client half-closed */
	bool upstream_fin;		/* the tunnel's upstream half-closed */
	bool grpc;			/* content-type application/grpc: errors in its form */
	size_t grpc_timeout_at;		/* its digits in req, 0: no grpc-timeout */
	size_t deadline_at;		/* x-ferry-deadline-ms's digits in req */
	bool deadline_capped;		/* the request's own deadline (grpc-timeout,
					 * x-ferry-deadline-ms) beat the service's */
	int grpc_status;		/* seen in the response or answered; -1 none */
	bool peer_denied;		/* refused: the peer's identity is not allowed */
	/* inbound: the HMAC of the request's valid x-service-auth, which a
	 * tunnel must still hold after a reload (proxy_tunnel_key_stands) */
	bool key_kept;
	unsigned char key_mac[KEY_MAC_LEN];
	bool req_done;			/* the whole request went upstream */
	bool resp_head;			/* response head sent to the client */
	bool replayable;		/* req holds the whole request so far */
	bool body_dropped;		/* body bytes went on that req does not
					   keep: a retry could not send them */
	bool resent;			/* already re-sent once after a stale reuse */
	bool resend_fresh;		/* that re-send: on a new connection, not a pooled one */
	uint8_t interims;		/* 1xx responses seen (bounded) */
	bool dechunk;			/* the client gets the body unframed */
	bool resp_chunked;		/* the client gets the body chunked */
	/* the head an HTTP/1.1 client got chunked, counted as it counts it:
	 * the trailers join it there (http1.h, sent) */
	bool resp_measured;
	struct http_measure resp_sent;
	bool head_ends;			/* the response head is all of it (trailers-only) */
	bool close_after;		/* close the client after this response */
	bool zoffered;			/* outbound: ferry sent accept-encoding */
	uint8_t zcoding;		/* inbound: the peer accepts it (cz_coding) */
	struct zflow *zf;		/* the body is coded anew (proxy_coding.c) */
	int64_t up_keepalive_ms;	/* upstream's Keep-Alive: timeout */
	uint32_t status;
	/* hedging (hedge.c) */
	struct exchange *hedge_of;	/* a hedge: the exchange it races for */
	struct exchange *hedges;	/* hedges racing this exchange's attempt */
	struct exchange *hedge_next;	/* in hedge_of's list */
	int64_t hedge_at_ms;		/* the next hedge starts then; 0: none */
	uint32_t hedges_sent;
	bool hedge_attempt;		/* the attempt in this slot began as a hedge */
	bool hedge_after_body;		/* one fell due while the body came in */
	bool won_by_hedge;		/* the response came from a hedge (fate ok_by_hedge) */
	/* for the fate (SPEC §16, fate.h) */
	bool budget_refused;		/* the retry budget refused the next retry */
	enum fate refused;		/* the refusal answered; FATE_OK: none */
	/* SPEC §13 (tracing.c): this request's span, when it is recorded */
	bool traced;			/* sampled, with tracing on: a span at the end */
	bool trace_parent;		/* parent_id came in a traceparent */
	uint8_t trace_flags;		/* W3C trace flags sent upstream */
	uint8_t last_result;		/* enum attempt_result of the last attempt */
	uint16_t trace_events;		/* retry events kept in span_events */
	uint16_t trace_events_dropped;
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t parent_id[8];
	uint64_t bytes_in;		/* the downstream codec's */
	uint64_t bytes_out;		/* the downstream codec's */
	char corr[129];
	char rid[129];
	char tp[TRACEPARENT_LEN + 1];	/* sent upstream (the app's or new) */
	size_t tp_len;
	struct request_ids ids;
	struct attempt_notes notes;	/* exchange_begin clears its count */
	/* kept from request to request (their memory) */
	struct sbuf req;		/* for upstream: head and replayable body */
	size_t req_head_len;		/* bytes of req that are the head */
	struct sbuf logline;		/* method and path, for the access log */
	struct sbuf trailers;		/* an upstream codec's response trailers,
					   "name: value\r\n" lines */
	struct sbuf span_events;	/* the span's retry events, encoded */
};

/* ---- proxy.c: for the downstream codec ---- */

/* Once per downstream connection (HTTP/1) or stream, and its end. */
int proxy_exchange_init(struct exchange *x, struct worker *w, const struct down_ops *down);
void proxy_exchange_free(struct exchange *x);

/* A request head in MSG: route, admit and rewrite it. False when it was
 * refused (answered, and the exchange ended). Then the codec hands over
 * the body that came with the head (proxy_request_body) and starts the
 * first attempt (proxy_request_send). MSG is the codec's buffer: the
 * values of x-service-auth in it are wiped (the key is checked first). */
bool proxy_request(struct exchange *x, char *msg, const struct http_head *h,
    bool ambiguous);
/* Body bytes: before the first attempt they join the request's first
 * write; after it, they go upstream (a replay copy kept while small). */
void proxy_request_body(struct exchange *x, const void *p, size_t n);
void proxy_request_send(struct exchange *x);
/* The codec has handed over the request's last body byte. */
void proxy_request_done(struct exchange *x);
/* An attempt can take body now (one runs and is not full). */
bool proxy_request_writable(const struct exchange *x);
/* The client's output drained: the upstream may be read again. */
void proxy_client_drained(struct exchange *x);
/* Tunnel bytes from the client. False when the exchange ended. */
bool proxy_tunnel_up(struct exchange *x, const void *p, size_t n);
/* The client half-closed the tunnel (FIN, or TLS close_notify), after
 * its last bytes went through proxy_tunnel_up; it reads on. */
void proxy_tunnel_client_fin(struct exchange *x);
/* An inbound tunnel's x-service-auth is still accepted by the config in
 * force (or none is asked for): false after a reload that removed it. */
bool proxy_tunnel_key_stands(const struct exchange *x);

/* An error answered without a request head (400, 408, 431): fresh IDs. */
void proxy_error_early(struct exchange *x, enum ferry_error e, const char *msg);
/* The same error where no answer can go (an HTTP/2 header block never
 * finished: the connection is ended instead). X is accounted as if E had
 * been answered: its status, errors_total and the access log line; then
 * ended (proxy_end) with nothing sent. A request that never began gets
 * fresh IDs and no method or path; a live one (its trailers' block) keeps
 * its own. Nothing is done once X's response head left (a cut, then) or
 * X was accounted. */
void proxy_error_unanswered(struct exchange *x, enum ferry_error e, const char *msg);
/* One of ferry's errors for the request in X, then the end. */
void proxy_refuse(struct exchange *x, enum ferry_error e, const char *msg,
    unsigned retry_after, bool close);

/* The one teardown: the attempt's connection goes back or away, the
 * breaker is left, the request accounted with CAUSE; then the codec's
 * finish. Safe to call once per request; later calls do nothing. */
void proxy_end(struct exchange *x, enum end_cause cause);
/* Metrics and the access log line, once (send_last calls it early). */
void proxy_account(struct exchange *x, enum end_cause cause);

/* ---- proxy.c: for the upstream codec ---- */

/* The attempt failed before a response head reached the client. */
void proxy_attempt_failed(struct exchange *x, enum attempt_result r, enum ferry_error e,
    const char *msg);
/* The connection is up (and its TLS handshake done). */
void proxy_attempt_connected(struct exchange *x);
/* The upstream took the request: more body may come. */
void proxy_upstream_drained(struct exchange *x);
/* A response head; UNTIL_CLOSE: its body ends with the connection. False
 * when the exchange ended or moved on (a retry). */
bool proxy_response_head(struct exchange *x, const char *msg, const struct http_head *h,
    bool until_close);
/* Response body bytes (or tunnel bytes). False when the exchange ended. */
bool proxy_response_data(struct exchange *x, const void *p, size_t n);
/* Trailers of the response, for a downstream codec that frames bodies
 * itself (x->unframed); others get them in the body's framing. */
void proxy_response_trailers(struct exchange *x, const char *msg, const struct http_head *h);
/* The response is complete; REUSABLE: its connection may serve again. */
void proxy_response_end(struct exchange *x, const void *p, size_t n, bool reusable);
/* The upstream closed a response or tunnel before its end. */
void proxy_response_cut(struct exchange *x, enum end_cause cause, const char *why);
/* The upstream half-closed the tunnel (FIN, or TLS close_notify), after
 * its last bytes went through proxy_response_data; it reads on. */
void proxy_tunnel_upstream_fin(struct exchange *x);

/* For the downstream codecs: ferry's error E as an HTTP/1.1 response in
 * OUT, in the JSON form or, for a gRPC request, the gRPC one (SPEC §7). */
void proxy_error_response(const struct exchange *x, struct sbuf *out, enum ferry_error e,
    const char *msg, unsigned retry_after, bool keep_alive, unsigned keep_alive_timeout);

/* The header rules (SPEC §15) for the response to X: defaults', then the
 * service's or the inbound listener's; NULL where there are none. */
void proxy_response_rules(const struct exchange *x, const struct conf_hrules *rules[2]);

/* What a head within the limits became with the headers ferry adds, its
 * header rules' above all, when the next hop would refuse it
 * (headers_build_request/response). */
#define HEAD_OVER_WITH_RULES(what) what " head over the limit (64 KiB, 100 headers) " \
	"once ferry's headers and header rules are added"

/* The response head a downstream codec built for X is over the limits
 * (headers_build_response): a 502 instead, before anything of it left. */
void proxy_response_over_limit(struct exchange *x);

/* SPEC §14: how the response head changes for a coded body, or NULL. */
const struct head_coding *proxy_response_coding(const struct exchange *x);

/* metrics.c ids: the service's, the local app's inbound, or none */
int exchange_metrics_id(const struct exchange *x);

/* The response head leaves now: head_us, at least 1 (0 means none, and
 * one of ferry's own errors can be built within a microsecond). */
static inline void
exchange_head_sent(struct exchange *x)
{
	int64_t us = clock_now_us() - x->start_us;

	x->head_us = us > 0 ? us : 1;
}

/* An attempt holds a connection (or an HTTP/2 stream). */
static inline bool
exchange_attached(const struct exchange *x)
{
	return x->up != NULL || x->up2 != NULL;
}

/* h1_up.c, h2_up.c */
extern const struct up_ops h1_up_ops;
extern const struct up_ops h2_up_ops;
/* Closes every HTTP/2 upstream connection of W (shutdown). */
void h2_up_close_all(struct worker *w);
/* EP was retired: W's HTTP/2 connections to it close once they carry no
 * stream (at once when idle). */
void h2_up_retire_endpoint(struct worker *w, const struct endpoint *ep);
/* Closes W's HTTP/2 connections to EP, which is about to be freed. */
void h2_up_close_endpoint(struct worker *w, const struct endpoint *ep);
/* Whether one of W's HTTP/2 connections to EP (open or opening) takes
 * one more stream: an attempt there needs no connection of the pool. */
bool h2_up_has_room(struct worker *w, const struct endpoint *ep);
/* An HTTP/1.1 attempt's new connection chose h2 by ALPN: carry on as a
 * stream on it. False when the attempt failed (and was handled). */
bool h2_up_adopt(struct exchange *x);

#endif
