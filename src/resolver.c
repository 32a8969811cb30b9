#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "ids.h"
#include "log.h"
#include "resolver_priv.h"

#define ROUNDS		2	/* passes over the nameserver list */
#define MAX_TARGETS	64	/* SRV targets used */
#define TCP_MAXMSG	(2 + 65535)

/* One question (NAME, TYPE) on its way through the nameservers. */
struct tx {
	struct resolver_query *q;
	struct target *t;		/* NULL: the SRV question itself */
	struct dns_name qname;
	uint16_t qtype, id;
	unsigned attempt;		/* nameserver attempt % n_ns */
	bool edns, tcp, reading;
	int fd;
	struct event *ev, *timer;
	uint8_t *tbuf;			/* TCP: the query out, then the answer in */
	size_t tlen, toff;
	int err;
	const char *errtext;
	struct addrset set;		/* A/AAAA: the addresses found */
};

/* A name whose A and AAAA records are wanted, with the port to use. */
struct target {
	struct resolver_query *q;
	struct dns_name name;
	uint16_t port, weight;
	int pending;			/* questions still running */
	struct tx tx[2];		/* A, AAAA */
};

struct resolver_query {
	TAILQ_ENTRY(resolver_query) link;
	struct resolver *r;
	bool srv;			/* resolver_lookup_srv() */
	resolver_cb cb;
	void *arg;
	struct event *done;		/* fires the callback from the loop */
	struct tx stx;			/* SRV question */
	struct target *targets;
	size_t ntargets;
	size_t pending;			/* targets still running */
	uint32_t ttl;			/* SRV and CNAME records */
	int err;
	const char *errtext;
	char errbuf[DNS_TEXTMAX + 64];
};

struct resolver {
	struct event_base *base;
	struct sockaddr_storage ns[RESOLVER_MAX_NS];
	socklen_t nslen[RESOLVER_MAX_NS];
	size_t n_ns;
	int64_t timeout_ms;
	TAILQ_HEAD(, resolver_query) queries;
	uint8_t rbuf[65536];		/* UDP receive buffer */
};

static void tx_send(struct tx *tx);
static void tx_fail(struct tx *tx, int err, const char *errtext);
static void target_init(struct resolver_query *q, struct target *t,
    const struct dns_name *name, uint16_t port, uint16_t weight);
static void target_start(struct target *t);
static void target_tx_done(struct target *t);
static void query_target_done(struct resolver_query *q);

static uint32_t
min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------------ answers ---- */

/* The SRV answer: targets of the lowest priority, addresses from the
 * additional section where it has them; the rest are looked up. */
static int
srv_answer(struct resolver_query *q, const struct dns_msg *m)
{
	struct dns_name owner, target;
	struct dns_iter it;
	struct dns_rr rr;
	uint16_t prio, weight, port, best = UINT16_MAX;
	size_t n = 0;

	dns_chase(m, &q->stx.qname, &owner, &q->ttl);
	dns_iter_init(&it, m, DNS_S_AN);
	while (dns_iter_next(&it, &rr))
		if (rr.type == DNS_T_SRV && rr.class == DNS_C_IN &&
		    dns_name_eq(&rr.name, &owner) &&
		    dns_rr_srv(m, &rr, &prio, &weight, &port, &target) == 0) {
			q->ttl = min32(q->ttl, rr.ttl);
			if (prio < best)
				best = prio;
			n++;
		}
	if (n == 0) {
		q->ttl = min32(q->ttl, dns_negative_ttl(m));
		return 0;
	}
	if (n > MAX_TARGETS)
		n = MAX_TARGETS;
	if ((q->targets = calloc(n, sizeof(*q->targets))) == NULL)
		return -1;
	dns_iter_init(&it, m, DNS_S_AN);
	while (q->ntargets < n && dns_iter_next(&it, &rr)) {
		struct target *t = &q->targets[q->ntargets];

		if (rr.type != DNS_T_SRV || rr.class != DNS_C_IN ||
		    !dns_name_eq(&rr.name, &owner) ||
		    dns_rr_srv(m, &rr, &prio, &weight, &port, &target) == -1 ||
		    prio != best || target.len == 1)	/* "." = no service */
			continue;
		target_init(q, t, &target, port, weight);
		q->ntargets++;
		for (int i = 0; i < 2; i++)
			if (addrset_collect(&t->tx[i].set, m, &target,
			    i ? DNS_T_AAAA : DNS_T_A, port, weight) == -1)
				return -1;
	}
	/* the SRV question still holds its count: no target can finish the
	 * query before the loop is over */
	for (size_t i = 0; i < q->ntargets; i++) {
		struct target *t = &q->targets[i];

		if (t->tx[0].set.n + t->tx[1].set.n > 0)
			continue;
		q->pending++;
		target_start(t);
	}
	return 0;
}

/* ------------------------------------------------------ questions ---- */

static void
tx_close(struct tx *tx)
{
	if (tx->ev != NULL)
		event_free(tx->ev);
	if (tx->timer != NULL)
		event_free(tx->timer);
	if (tx->fd != -1)
		close(tx->fd);
	free(tx->tbuf);
	tx->ev = tx->timer = NULL;
	tx->tbuf = NULL;
	tx->fd = -1;
}

static void
tx_done(struct tx *tx, int err, const char *errtext)
{
	struct resolver_query *q = tx->q;

	tx_close(tx);
	tx->err = err;
	tx->errtext = errtext;
	if (tx->t != NULL) {
		target_tx_done(tx->t);
		return;
	}
	q->err = err;
	q->errtext = errtext;
	query_target_done(q);
}

static void
tx_answer(struct tx *tx, const uint8_t *pkt, size_t len, bool *ignored)
{
	struct resolver_query *q = tx->q;
	struct target *t = tx->t;
	struct dns_msg m;
	int rc;

	*ignored = false;
	rc = dns_parse(&m, pkt, len, tx->id, &tx->qname, tx->qtype);
	if (rc == DNS_EMISMATCH && !tx->tcp) {
		*ignored = true;	/* stray or spoofed: keep waiting */
		return;
	}
	if (rc != DNS_OK || (m.tc && tx->tcp)) {
		tx_fail(tx, RESOLVER_EMALFORMED, "malformed answer");
		return;
	}
	if (m.tc) {			/* the same server again, over TCP */
		tx->tcp = true;
		tx_send(tx);
		return;
	}
	switch (m.rcode) {
	case DNS_R_NOERROR:
		if (t == NULL) {
			if (srv_answer(q, &m) == -1)
				tx_done(tx, RESOLVER_ESYSTEM, "out of memory");
			else
				tx_done(tx, 0, NULL);
			return;
		}
		if (addrset_collect(&tx->set, &m, &tx->qname, tx->qtype, t->port,
		    t->weight) == -1) {
			tx_done(tx, RESOLVER_ESYSTEM, "out of memory");
			return;
		}
		if (tx->set.n == 0)
			tx->set.ttl = dns_negative_ttl(&m);
		tx_done(tx, 0, NULL);
		return;
	case DNS_R_NXDOMAIN:
		tx_done(tx, RESOLVER_ENXDOMAIN, "NXDOMAIN");
		return;
	case DNS_R_FORMERR:
		if (tx->edns) {		/* an old server: ask it again, plainly */
			tx->edns = false;
			tx_send(tx);
			return;
		}
		tx_fail(tx, RESOLVER_ESERVFAIL, "FORMERR");
		return;
	case DNS_R_SERVFAIL:
		tx_fail(tx, RESOLVER_ESERVFAIL, "SERVFAIL");
		return;
	case DNS_R_REFUSED:
		tx_fail(tx, RESOLVER_ESERVFAIL, "REFUSED");
		return;
	default:
		tx_fail(tx, RESOLVER_ESERVFAIL, "server error");
		return;
	}
}

static void
udp_read(evutil_socket_t fd, short what, void *arg)
{
	struct tx *tx = arg;
	uint8_t *buf = tx->q->r->rbuf;
	bool ignored;
	ssize_t n;

	(void)what;
	for (;;) {
		n = recv(fd, buf, sizeof(tx->q->r->rbuf), 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			/* ECONNREFUSED: ICMP port unreachable from the server */
			tx_fail(tx, RESOLVER_ETIMEOUT, errno == ECONNREFUSED ?
			    "connection refused" : "receive failed");
			return;
		}
		tx_answer(tx, buf, (size_t)n, &ignored);
		if (!ignored)
			return;
	}
}

static void
tcp_io(evutil_socket_t fd, short what, void *arg)
{
	struct tx *tx = arg;
	bool ignored;
	ssize_t n;

	(void)what;
	if (!tx->reading) {
		n = send(fd, tx->tbuf + tx->toff, tx->tlen - tx->toff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				tx_fail(tx, RESOLVER_ETIMEOUT, "TCP connection failed");
			return;
		}
		if ((tx->toff += (size_t)n) < tx->tlen)
			return;
		free(tx->tbuf);
		event_free(tx->ev);
		tx->ev = NULL;
		if ((tx->tbuf = malloc(TCP_MAXMSG)) == NULL ||
		    (tx->ev = event_new(tx->q->r->base, fd, EV_READ | EV_PERSIST, tcp_io,
		    tx)) == NULL || event_add(tx->ev, NULL) == -1) {
			tx_fail(tx, RESOLVER_ESYSTEM, "out of memory");
			return;
		}
		tx->reading = true;
		tx->toff = 0;
		tx->tlen = 2;
		return;
	}
	n = recv(fd, tx->tbuf + tx->toff, tx->tlen - tx->toff, 0);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		tx_fail(tx, RESOLVER_EMALFORMED, "TCP connection closed");
		return;
	}
	tx->toff += (size_t)n;
	if (tx->toff == 2 && tx->tlen == 2) {
		tx->tlen = 2 + ((size_t)tx->tbuf[0] << 8 | tx->tbuf[1]);
		if (tx->tlen == 2)
			tx_fail(tx, RESOLVER_EMALFORMED, "malformed answer");
		return;
	}
	if (tx->toff == tx->tlen)
		tx_answer(tx, tx->tbuf + 2, tx->tlen - 2, &ignored);
}

static void
tx_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tx_fail(arg, RESOLVER_ETIMEOUT, "timeout");
}

static uint16_t
random_id(void)
{
	uint16_t id;

	if (RAND_bytes((unsigned char *)&id, sizeof(id)) != 1)
		id = (uint16_t)ids_random();
	return id;
}

/* Sends the question to nameserver attempt % n_ns, over UDP or TCP. */
static int
tx_try(struct tx *tx)
{
	struct resolver *r = tx->q->r;
	size_t ns = tx->attempt % r->n_ns, len;
	struct timeval tv = { r->timeout_ms / 1000, r->timeout_ms % 1000 * 1000 };
	uint8_t pkt[DNS_HDRLEN + DNS_MAXNAME + 4 + 11];

	tx_close(tx);
	tx->id = random_id();
	tx->reading = false;
	if ((len = dns_build_query(pkt, sizeof(pkt), tx->id, &tx->qname, tx->qtype,
	    tx->edns)) == 0)
		return -1;
	tx->fd = socket(r->ns[ns].ss_family, (tx->tcp ? SOCK_STREAM : SOCK_DGRAM) |
	    SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (tx->fd == -1)
		return -1;
	if (connect(tx->fd, (struct sockaddr *)&r->ns[ns], r->nslen[ns]) == -1 &&
	    (!tx->tcp || errno != EINPROGRESS))
		return -1;
	if (tx->tcp) {
		if ((tx->tbuf = malloc(len + 2)) == NULL)
			return -1;
		tx->tbuf[0] = (uint8_t)(len >> 8);
		tx->tbuf[1] = (uint8_t)len;
		memcpy(tx->tbuf + 2, pkt, len);
		tx->tlen = len + 2;
		tx->toff = 0;
		tx->ev = event_new(r->base, tx->fd, EV_WRITE | EV_PERSIST, tcp_io, tx);
	} else {
		if (send(tx->fd, pkt, len, 0) != (ssize_t)len)
			return -1;
		tx->ev = event_new(r->base, tx->fd, EV_READ | EV_PERSIST, udp_read, tx);
	}
	tx->timer = evtimer_new(r->base, tx_timeout, tx);
	if (tx->ev == NULL || tx->timer == NULL || event_add(tx->ev, NULL) == -1 ||
	    evtimer_add(tx->timer, &tv) == -1)
		return -1;
	return 0;
}

/* Asks the current nameserver; when that fails at once, the next ones. */
static void
tx_send(struct tx *tx)
{
	struct resolver *r = tx->q->r;

	while (tx->attempt < ROUNDS * r->n_ns) {
		if (tx_try(tx) == 0)
			return;
		tx->err = RESOLVER_ESYSTEM;
		tx->errtext = "cannot send the query";
		tx->attempt++;
	}
	tx_done(tx, tx->err, tx->errtext);
}

static void
tx_fail(struct tx *tx, int err, const char *errtext)
{
	char name[DNS_TEXTMAX];

	if (log_enabled(LOG_DEBUG)) {
		dns_name_to_text(&tx->qname, name, sizeof(name));
		log_debug("resolver: %s type %u: %s (attempt %u)", name, tx->qtype,
		    errtext, tx->attempt + 1);
	}
	tx_close(tx);
	tx->err = err;
	tx->errtext = errtext;
	tx->attempt++;
	tx_send(tx);
}

static void
tx_start(struct tx *tx, struct resolver_query *q, struct target *t,
    const struct dns_name *name, uint16_t qtype)
{
	tx->q = q;
	tx->t = t;
	tx->qname = *name;
	tx->qtype = qtype;
	tx->edns = true;
	tx->fd = -1;
	tx->err = RESOLVER_ETIMEOUT;
	tx->errtext = "timeout";
	tx_send(tx);
}

/* -------------------------------------------------------- queries ---- */

static void
target_init(struct resolver_query *q, struct target *t, const struct dns_name *name,
    uint16_t port, uint16_t weight)
{
	t->q = q;
	if (name != NULL)
		t->name = *name;
	t->port = port;
	t->weight = weight;
	for (int i = 0; i < 2; i++) {
		t->tx[i].q = q;
		t->tx[i].t = t;
		t->tx[i].fd = -1;
		t->tx[i].set.ttl = RESOLVER_TTL_NONE;
	}
}

static void
target_start(struct target *t)
{
	t->pending = 3;			/* A, AAAA and a guard */
	for (int i = 0; i < 2; i++)
		tx_start(&t->tx[i], t->q, t, &t->name, i ? DNS_T_AAAA : DNS_T_A);
	target_tx_done(t);
}

static void
target_tx_done(struct target *t)
{
	if (--t->pending == 0)
		query_target_done(t->q);
}

static void
query_target_done(struct resolver_query *q)
{
	if (--q->pending == 0)
		event_active(q->done, EV_TIMEOUT, 1);
}

static void
query_free(struct resolver_query *q)
{
	tx_close(&q->stx);
	for (size_t i = 0; i < q->ntargets; i++)
		for (int j = 0; j < 2; j++) {
			tx_close(&q->targets[i].tx[j]);
			free(q->targets[i].tx[j].set.a);
		}
	free(q->targets);
	if (q->done != NULL)
		event_free(q->done);
	free(q);
}

/* The usable addresses of a target into OUT: both families when both
 * questions were answered, else the one that gave addresses. */
static int
target_result(const struct target *t, struct addrset *out, uint32_t *ttl,
    const struct tx **failed)
{
	const struct tx *a = &t->tx[0], *b = &t->tx[1];
	bool use[2];

	use[0] = a->err == 0 && (b->err == 0 || a->set.n > 0);
	use[1] = b->err == 0 && (a->err == 0 || b->set.n > 0);
	if (!use[0] && !use[1]) {
		*failed = a->err != 0 ? a : b;
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		const struct addrset *s = &t->tx[i].set;

		if (!use[i])
			continue;
		*ttl = min32(*ttl, s->ttl);
		for (size_t k = 0; k < s->n; k++)
			if (addrset_add(out, &s->a[k].sa, s->a[k].salen, s->a[k].weight) == -1)
				return -2;
	}
	return 0;
}

static void
deliver(evutil_socket_t fd, short what, void *arg)
{
	struct resolver_query *q = arg;
	struct addrset out = { 0 };
	const struct tx *failed;
	char name[DNS_TEXTMAX];
	uint32_t ttl = q->ttl;
	int err = q->err, rc;
	const char *errtext = q->errtext;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&q->r->queries, q, link);
	for (size_t i = 0; err == 0 && i < q->ntargets; i++) {
		const struct target *t = &q->targets[i];

		if ((rc = target_result(t, &out, &ttl, &failed)) == -2) {
			err = RESOLVER_ESYSTEM;
			errtext = "out of memory";
		} else if (rc == -1 && !(q->srv && failed->err == RESOLVER_ENXDOMAIN)) {
			err = failed->err;
			errtext = failed->errtext;
			if (q->srv) {
				dns_name_to_text(&t->name, name, sizeof(name));
				snprintf(q->errbuf, sizeof(q->errbuf), "SRV target %s: %s",
				    name, errtext);
				errtext = q->errbuf;
			}
		}
	}
	if (err != 0)
		q->cb(q->arg, err, errtext, NULL, 0, 0);
	else
		q->cb(q->arg, 0, NULL, out.a, out.n, ttl);
	free(out.a);
	query_free(q);		/* the resolver may be gone: do not touch it */
}

static struct resolver_query *
query_new(struct resolver *r, bool srv, resolver_cb cb, void *arg)
{
	struct resolver_query *q;

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->r = r;
	q->srv = srv;
	q->cb = cb;
	q->arg = arg;
	q->ttl = RESOLVER_TTL_NONE;
	q->stx.fd = -1;
	if ((q->done = event_new(r->base, -1, 0, deliver, q)) == NULL) {
		free(q);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&r->queries, q, link);
	return q;
}

/* Answers the query from the loop, without asking anyone. */
static struct resolver_query *
query_now(struct resolver_query *q, int err, const char *errtext)
{
	q->err = err;
	q->errtext = errtext;
	event_active(q->done, EV_TIMEOUT, 1);
	return q;
}

struct resolver_query *
resolver_lookup(struct resolver *r, const char *name, uint16_t port, resolver_cb cb,
    void *arg)
{
	struct resolver_query *q;
	struct sockaddr_storage ss;
	struct target *t;
	socklen_t len;

	if ((q = query_new(r, false, cb, arg)) == NULL)
		return NULL;
	if ((q->targets = calloc(1, sizeof(*q->targets))) == NULL) {
		resolver_cancel(q);
		return NULL;
	}
	t = &q->targets[0];
	q->ntargets = 1;
	target_init(q, t, NULL, port, 1);
	if (resolver_parse_ip(name, port, &ss, &len) == 0 ||
	    (resolver_is_localhost(name) && resolver_parse_ip("127.0.0.1", port, &ss, &len) == 0)) {
		if (addrset_add(&t->tx[0].set, &ss, len, 1) == -1) {
			resolver_cancel(q);
			return NULL;
		}
		return query_now(q, 0, NULL);
	}
	if (dns_name_from_text(&t->name, name) == -1)
		return query_now(q, RESOLVER_ENAME, "invalid name");
	q->pending = 1;
	target_start(t);
	return q;
}

struct resolver_query *
resolver_lookup_srv(struct resolver *r, const char *name, resolver_cb cb, void *arg)
{
	struct resolver_query *q;
	struct dns_name qname;

	if ((q = query_new(r, true, cb, arg)) == NULL)
		return NULL;
	if (dns_name_from_text(&qname, name) == -1)
		return query_now(q, RESOLVER_ENAME, "invalid name");
	q->pending = 1;
	tx_start(&q->stx, q, NULL, &qname, DNS_T_SRV);
	return q;
}

void
resolver_cancel(struct resolver_query *q)
{
	if (q == NULL)
		return;
	TAILQ_REMOVE(&q->r->queries, q, link);
	query_free(q);
}

/* ------------------------------------------------------- resolver ---- */

struct resolver *
resolver_new(struct event_base *base, const struct conf_addr *nameservers, size_t n)
{
	struct resolver *r;
	int k;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->base = base;
	r->timeout_ms = 1000;
	TAILQ_INIT(&r->queries);
	for (size_t i = 0; i < n; i++) {
		if (!nameservers[i].is_ip || r->n_ns == RESOLVER_MAX_NS) {
			log_warn("resolver: nameserver %s skipped (%s)", nameservers[i].text,
			    nameservers[i].is_ip ? "too many" : "not an IP address");
			continue;
		}
		memcpy(&r->ns[r->n_ns], &nameservers[i].sa, nameservers[i].salen);
		r->nslen[r->n_ns++] = nameservers[i].salen;
	}
	if (n > 0 && r->n_ns == 0) {
		log_error("resolver: no usable nameserver");
		free(r);
		return NULL;
	}
	if (n == 0) {
		k = resolver_read_resolv_conf("/etc/resolv.conf", r->ns, r->nslen,
		    RESOLVER_MAX_NS);
		if (k > 0)
			r->n_ns = (size_t)k;
		else if (resolver_parse_ip("127.0.0.1", 53, &r->ns[0], &r->nslen[0]) == 0)
			r->n_ns = 1;
	}
	return r;
}

void
resolver_set_timeout(struct resolver *r, int64_t ms)
{
	r->timeout_ms = ms < 1 ? 1 : ms;
}

void
resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	while (!TAILQ_EMPTY(&r->queries))
		resolver_cancel(TAILQ_FIRST(&r->queries));
	free(r);
}
