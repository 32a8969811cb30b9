#include <sys/queue.h>
#include <arpa/inet.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conn.h"
#include "health.h"
#include "health_h2.h"
#include "http1.h"
#include "ids.h"
#include "log.h"

/* more than a head may take, so an endless head fails in the parser */
#define HC_READ_MAX (HTTP_MAX_HEAD_ALL + 16384)
/* all a check reads: interim heads or HTTP/2 frames without end would
 * hold the main thread in the read loop (admin, DNS, every other check) */
#define HC_READ_TOTAL_MAX (4 * HC_READ_MAX)

/* One watched endpoint. The timer starts the next check while idle and is
 * the deadline of the check while one is in flight (c != NULL). */
struct hc {
	LIST_ENTRY(hc) entry;
	struct health *h;
	const struct conf_service *svc;
	struct ep_runtime *ep;		/* held */
	struct sockaddr_storage sa;
	socklen_t salen;
	char *addr;		/* for the logs */
	char *host;		/* endpoint host: SNI and verification */
	bool host_is_ip;
	struct event *timer;
	int64_t started;	/* when the last check started (ms) */
	int64_t next;		/* when the next one is due, while idle */
	struct conn *c;		/* the check in flight */
	struct hc_h2 *h2;	/* its HTTP/2 session, when it speaks that */
	struct buf in, out;
	uint32_t parsed;
	size_t read_total;	/* by the check in flight */
	struct http_parser parser;
	struct http_head head;
};

struct health {
	struct event_base *base;
	LIST_HEAD(, hc) list;
};

struct health *
health_new(struct event_base *base)
{
	struct health *h = calloc(1, sizeof(*h));

	if (h != NULL) {
		h->base = base;
		LIST_INIT(&h->list);
	}
	return h;
}

static void
schedule(struct hc *hc, int64_t delay)
{
	struct timeval tv;

	if (delay < 0)
		delay = 0;
	tv.tv_sec = (time_t)(delay / 1000);
	tv.tv_usec = (suseconds_t)(delay % 1000) * 1000;
	hc->next = clock_now_ms() + delay;
	evtimer_add(hc->timer, &tv);
}

static int64_t
stagger(const struct hc *hc)
{
	int64_t iv = hc->svc->health_check.interval;

	return iv > 0 ? (int64_t)(ids_random() % (uint64_t)iv) : 0;
}

/* Drops the connection of the check in flight, if any. */
static void
check_end(struct hc *hc)
{
	conn_free(hc->c);
	hc->c = NULL;
	hc_h2_free(hc->h2);
	hc->h2 = NULL;
	buf_free(&hc->in);
	buf_free(&hc->out);
	http_parser_free(&hc->parser);
	hc->parsed = 0;
	hc->read_total = 0;
}


static void
hc_free(struct hc *hc)
{
	LIST_REMOVE(hc, entry);
	check_end(hc);
	ep_runtime_unref(hc->ep);
	event_free(hc->timer);
	free(hc->addr);
	free(hc->host);
	free(hc);
}

void
health_free(struct health *h)
{
	struct hc *hc;

	if (h == NULL)
		return;
	while ((hc = LIST_FIRST(&h->list)) != NULL)
		hc_free(hc);
	free(h);
}

/* Counts one result against the endpoint's state; flips it at the
 * threshold. hc_streak holds the results against the current state. */
static void
record(struct hc *hc, bool ok, const char *cause)
{
	const struct conf_health_check *cf = &hc->svc->health_check;
	struct ep_runtime *ep = hc->ep;
	bool healthy = atomic_load(&ep->healthy);
	uint32_t streak = ok == healthy ? 0 : atomic_load(&ep->hc_streak) + 1;

	if (!ok)
		log_debug("health check failed service=%s endpoint=%s cause=\"%s\"",
		    hc->svc->name, hc->addr, cause);
	if (streak > 0 && streak >= (healthy ? cf->unhealthy : cf->healthy)) {
		streak = 0;
		atomic_store(&ep->healthy, ok);
		if (ok)
			log_info("endpoint healthy service=%s endpoint=%s",
			    hc->svc->name, hc->addr);
		else
			log_warn("endpoint unhealthy service=%s endpoint=%s cause=\"%s\"",
			    hc->svc->name, hc->addr, cause);
	}
	atomic_store(&ep->hc_streak, streak);
}

/* The check is over: count it, and the next starts one interval after
 * this one did (at once when this one took longer). */
static void
finish(struct hc *hc, bool ok, const char *cause)
{
	char why[192];

	/* CAUSE may live in the conn */
	snprintf(why, sizeof(why), "%s", cause ? cause : "");
	check_end(hc);
	record(hc, ok, why);
	schedule(hc, hc->started + hc->svc->health_check.interval - clock_now_ms());
}

/* The status of the final response head decides. */
static void
judge(struct hc *hc, int status)
{
	char why[64];

	snprintf(why, sizeof(why), "status %d", status);
	finish(hc, status >= 200 && status <= 299, why);
}

#define REQ_FMT "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ferry-health-check\r\n" \
	"%s%s%sConnection: close\r\n\r\n"
#define REQ_ARGS(svc, key) (svc)->health_check.path, (svc)->upstream_host, \
	(key) ? "x-service-auth: " : "", (key) ? (key) : "", (key) ? "\r\n" : ""

static void
send_request(struct hc *hc)
{
	const char *key = hc->svc->auth_key;
	int n = snprintf(NULL, 0, REQ_FMT, REQ_ARGS(hc->svc, key));
	char *req;

	if (n < 0 || (req = malloc((size_t)n + 1)) == NULL) {
		finish(hc, false, "out of memory");
		return;
	}
	snprintf(req, (size_t)n + 1, REQ_FMT, REQ_ARGS(hc->svc, key));
	n = conn_write(hc->c, req, (size_t)n);
	explicit_bzero(req, strlen(req));	/* it holds the key */
	free(req);
	if (n != 0)
		finish(hc, false, conn_error_text(hc->c));
}

/* Reads what came for the check in flight; CONN_AGAIN past its total
 * after ending the check. */
static ssize_t
check_read(struct hc *hc)
{
	ssize_t n;

	if (hc->read_total >= HC_READ_TOTAL_MAX) {
		finish(hc, false, "answer too long");
		return CONN_AGAIN;
	}
	if ((n = conn_read(hc->c, &hc->in, HC_READ_MAX)) > 0)
		hc->read_total += (size_t)n;
	return n;
}

/* Reads until the status of the final response is known. */
static void
read_head(struct hc *hc)
{
	char why[64];
	ssize_t n;

	while ((n = check_read(hc)) > 0) {
		while (buf_len(&hc->in) > hc->parsed) {
			size_t used;
			enum http_status st = http_parse(&hc->parser,
			    buf_head(&hc->in) + hc->parsed, buf_len(&hc->in) - hc->parsed,
			    hc->parsed, &used);
			int status = hc->head.status;

			hc->parsed += (uint32_t)used;
			if (st == HTTP_NEED_MORE)
				break;
			if (st != HTTP_HEAD_DONE) {
				snprintf(why, sizeof(why), "malformed response: %s",
				    hc->parser.err_text ? hc->parser.err_text : "bad head");
				finish(hc, false, why);
			} else if (status >= 100 && status < 200 && status != 101) {
				/* interim: the final head follows */
				buf_consume(&hc->in, hc->head.head_len);
				hc->parsed = 0;
				http_parser_reset(&hc->parser);
				continue;
			} else {
				judge(hc, status);
			}
			return;
		}
	}
	if (n != CONN_AGAIN)
		finish(hc, false, n < 0 ? conn_error_text(hc->c) :
		    "connection closed before the response head");
}

/* ---------------------------------------------------------- HTTP/2 ---- */

/* Acts on what the session said; true while the check goes on. */
static bool
h2_result(struct hc *hc, enum hc_h2_result r)
{
	if (r == HC_H2_DONE)
		judge(hc, hc_h2_status(hc->h2));
	else if (r == HC_H2_FAILED)
		finish(hc, false, hc_h2_error(hc->h2));
	return r == HC_H2_MORE;
}

/* Sends what the session has queued; true while the check goes on. */
static bool
h2_flush(struct hc *hc)
{
	if (!h2_result(hc, hc_h2_output(hc->h2, &hc->out)))
		return false;
	if (buf_len(&hc->out) > 0 &&
	    conn_write(hc->c, buf_head(&hc->out), buf_len(&hc->out)) != 0) {
		finish(hc, false, conn_error_text(hc->c));
		return false;
	}
	buf_consume(&hc->out, buf_len(&hc->out));
	return true;
}

static void
h2_read(struct hc *hc)
{
	ssize_t n;

	while ((n = check_read(hc)) > 0) {
		enum hc_h2_result r = hc_h2_input(hc->h2, buf_head(&hc->in),
		    buf_len(&hc->in));

		buf_consume(&hc->in, buf_len(&hc->in));
		if (!h2_result(hc, r) || !h2_flush(hc))
			return;
	}
	if (n == 0)
		h2_result(hc, hc_h2_eof(hc->h2));
	else if (n != CONN_AGAIN)
		finish(hc, false, conn_error_text(hc->c));
}

/*
 * SPEC §12, as the pool: h2 is h2c without TLS and needs ALPN h2 with it;
 * auto speaks what ALPN picked (HTTP/1.1 without TLS). False when the
 * check already ended.
 */
static bool
pick_protocol(struct hc *hc)
{
	enum protocol_kind p = hc->svc->protocol;
	const unsigned char *alpn = NULL;
	unsigned alen = 0;
	bool tls = conn_is_tls(hc->c), h2 = p == PROTO_H2;

	if (tls && p != PROTO_HTTP1) {
		SSL_get0_alpn_selected(conn_ssl(hc->c), &alpn, &alen);
		h2 = alen == 2 && memcmp(alpn, "h2", 2) == 0;
		if (!h2 && p == PROTO_H2) {
			finish(hc, false, "the server did not select h2 by ALPN");
			return false;
		}
	}
	if (!h2)
		return true;
	hc->h2 = hc_h2_new(hc->svc->health_check.path, hc->svc->upstream_host, tls,
	    hc->svc->auth_key);
	if (hc->h2 == NULL) {
		finish(hc, false, "out of memory");
		return false;
	}
	return true;
}

static void
on_conn(struct conn *c, enum conn_event ev, void *arg)
{
	struct hc *hc = arg;

	if (ev == CONN_CONNECTED) {
		if (!pick_protocol(hc))
			return;
		if (hc->h2)
			h2_flush(hc);
		else
			send_request(hc);
	} else if (ev == CONN_FAILED) {
		finish(hc, false, conn_error_text(c));
	} else if (ev == CONN_READABLE) {
		if (hc->h2)
			h2_read(hc);
		else
			read_head(hc);
	}
}

static void
check_start(struct hc *hc)
{
	const struct conf_tls_client *t = &hc->svc->tls;
	SSL_CTX *ctx = t->enabled ? t->ctx : NULL;
	const char *name = t->server_name ? t->server_name : hc->host;

	hc->started = clock_now_ms();
	http_parser_init(&hc->parser, true, &hc->head);
	hc->parsed = 0;
	if (ctx && name == NULL && t->verify_san == NULL) {
		finish(hc, false, "no name to verify the certificate against");
		return;
	}
	/* as the pool: SNI carries names only, never IP literals (RFC 6066) */
	hc->c = conn_connect(hc->h->base, (struct sockaddr *)&hc->sa, hc->salen, ctx,
	    (t->server_name || !hc->host_is_ip) ? name : NULL, name, t->verify_san,
	    NULL, on_conn, hc);
	if (hc->c == NULL) {
		finish(hc, false, "cannot open a connection");
		return;
	}
	if (hc->svc->auth_key)
		conn_wipe_output(hc->c);	/* the request carries the key */
	schedule(hc, hc->svc->health_check.timeout);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hc *hc = arg;
	char why[64];

	(void)fd;
	(void)what;
	if (hc->c == NULL) {
		check_start(hc);
		return;
	}
	snprintf(why, sizeof(why), "timed out after %lldms",
	    (long long)hc->svc->health_check.timeout);
	finish(hc, false, why);
}

static struct hc *
find(struct health *h, const struct ep_runtime *ep)
{
	struct hc *hc;

	LIST_FOREACH(hc, &h->list, entry)
		if (hc->ep == ep)
			return hc;
	return NULL;
}

/* A path goes on the request line as it is: no controls, no spaces. */
static bool
path_ok(const char *p)
{
	for (const char *q = p; q && *q; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f)
			return false;
	return p != NULL && *p == '/';
}

/* Where to connect, what to log, and the name TLS checks (HOST, else the
 * host of ADDR); false when out of memory. */
static bool
set_target(struct hc *hc, const struct sockaddr *sa, socklen_t salen,
    const char *addr, const char *host)
{
	struct conf_addr ca = { 0 };
	struct in6_addr ip;
	const char *why;
	char *a, *n;

	if (host == NULL && parse_addr(addr, &ca, &why) == 0)
		host = ca.host;
	a = strdup(addr);
	n = host ? strdup(host) : NULL;
	conf_addr_clear(&ca);
	if (a == NULL || (host && n == NULL)) {
		free(a);
		return false;
	}
	free(hc->addr);
	free(hc->host);
	hc->addr = a;
	hc->host = n;
	hc->host_is_ip = n && (inet_pton(AF_INET, n, &ip) == 1 ||
	    inet_pton(AF_INET6, n, &ip) == 1);
	memcpy(&hc->sa, sa, salen);
	hc->salen = salen;
	return true;
}

static bool
same_target(const struct hc *hc, const struct sockaddr *sa, socklen_t salen,
    const char *addr, const char *host)
{
	return hc->salen == salen && memcmp(&hc->sa, sa, salen) == 0 &&
	    strcmp(hc->addr, addr) == 0 && (host == NULL ||
	    (hc->host != NULL && strcmp(hc->host, host) == 0));
}

void
health_watch(struct health *h, const struct conf_service *svc, struct ep_runtime *ep,
    const struct sockaddr *sa, socklen_t salen, const char *addr, const char *host)
{
	struct hc *hc = find(h, ep);
	bool fresh = hc == NULL, aborted = false;
	int64_t now = clock_now_ms();

	if (!svc->health_check.enabled) {
		health_unwatch(h, ep);
		return;
	}
	if (!path_ok(svc->health_check.path) || salen > sizeof(hc->sa)) {
		log_error("health check not started service=%s endpoint=%s cause=\"%s\"",
		    svc->name, addr, salen > sizeof(hc->sa) ? "bad address" : "bad path");
		health_unwatch(h, ep);
		return;
	}
	if (!fresh && hc->svc == svc && same_target(hc, sa, salen, addr, host))
		return;		/* nothing changed: keep the rhythm */
	if (fresh) {
		if ((hc = calloc(1, sizeof(*hc))) == NULL ||
		    (hc->timer = evtimer_new(h->base, on_timer, hc)) == NULL) {
			free(hc);
			goto nomem;
		}
		hc->h = h;
		hc->ep = ep;
		ep_runtime_ref(ep);
		LIST_INSERT_HEAD(&h->list, hc, entry);
	} else if (hc->c != NULL) {
		/* a check of the old settings: drop it uncounted */
		check_end(hc);
		aborted = true;
	}
	hc->svc = svc;
	if (!set_target(hc, sa, salen, addr, host)) {
		hc_free(hc);
		goto nomem;
	}
	if (fresh)
		schedule(hc, stagger(hc));	/* spread a fleet over the interval */
	else if (aborted)
		schedule(hc, hc->started + svc->health_check.interval - now);
	else if (hc->next - now > svc->health_check.interval)
		schedule(hc, stagger(hc));	/* the interval got shorter */
	return;
nomem:
	log_error("health check not started service=%s endpoint=%s "
	    "cause=\"out of memory\"", svc->name, addr);
}

void
health_unwatch(struct health *h, struct ep_runtime *ep)
{
	struct hc *hc = find(h, ep);

	if (hc == NULL)
		return;
	atomic_store(&ep->hc_streak, 0);
	if (!atomic_exchange(&ep->healthy, true))
		log_info("endpoint healthy service=%s endpoint=%s cause=\"checks stopped\"",
		    hc->svc->name, hc->addr);
	hc_free(hc);
}
