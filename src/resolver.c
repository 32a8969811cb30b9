#include <sys/queue.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <arpa/nameser.h>

#include "dns_ttl.h"
#include "log.h"
#include "resolver_priv.h"

#define ROUNDS		2	/* passes over the nameserver list */
#define MAX_TARGETS	64	/* SRV targets used */
#define EDNS_PAYLOAD	1232	/* advertised with EDNS(0) */

_Static_assert(DNS_TTL_NONE == RESOLVER_TTL_NONE, "one meaning of no TTL");

/* One ares_query() in flight. c-ares owns it until its callback: a query
 * that is cancelled or freed only lets go of it (q = NULL). */
struct tx {
	LIST_ENTRY(tx) link;
	struct resolver *r;
	struct resolver_query *q;	/* NULL: orphaned, freed by its callback */
	struct target *t;		/* NULL: the SRV question itself */
	int type;			/* ns_t_a, ns_t_aaaa, ns_t_srv */
	int round;
};

/* A name whose A and AAAA records are wanted, with the port to use. */
struct target {
	char *name;
	uint16_t port, weight;
	struct addrset set[2];		/* A, AAAA */
	int err[2];
	const char *errtext[2];
};

struct resolver_query {
	TAILQ_ENTRY(resolver_query) link;
	struct resolver *r;
	bool srv;			/* resolver_lookup_srv() */
	char *name;			/* the SRV name */
	resolver_cb cb;
	void *arg;
	struct event *done;		/* fires the callback from the loop */
	LIST_HEAD(, tx) txs;		/* in flight */
	size_t pending;			/* txs in flight */
	struct target *targets;
	size_t ntargets;
	/* the SRV question's: the smallest TTL of its records (and CNAMEs),
	 * or how long its NXDOMAIN or NODATA holds */
	uint32_t ttl;
	int err;
	const char *errtext;
	char errbuf[300];
};

/* A socket of c-ares and its event. */
struct sockev {
	LIST_ENTRY(sockev) link;
	ares_socket_t fd;
	struct event *ev;
};

struct resolver {
	struct event_base *base;
	ares_channel ch;		/* NULL when it could not be rebuilt */
	struct ares_addr_port_node ns[RESOLVER_MAX_NS];
	size_t n_ns;
	int timeout_ms;
	size_t inflight;		/* txs c-ares holds, orphans included */
	struct event *timer;		/* ares_timeout() */
	LIST_HEAD(, sockev) socks;
	TAILQ_HEAD(, resolver_query) queries;
};

static void tx_start(struct resolver_query *q, struct target *t, int type, int round);

static uint32_t
min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* A TTL with the top bit set reads as 0 (RFC 2181). */
static uint32_t
ttl_of(int ttl)
{
	return ttl < 0 ? 0 : (uint32_t)ttl;
}

/* ------------------------------------------------- c-ares on libevent ---- */

static void
rearm(struct resolver *r)
{
	struct timeval tv, *tvp;

	if (r->ch == NULL || (tvp = ares_timeout(r->ch, NULL, &tv)) == NULL) {
		evtimer_del(r->timer);
		return;
	}
	/* ares_timeout() rounds down to the millisecond: one more, so the
	 * timer does not fire just before the deadline and spin */
	tvp->tv_usec += 1000;
	if (tvp->tv_usec >= 1000000) {
		tvp->tv_sec++;
		tvp->tv_usec -= 1000000;
	}
	evtimer_add(r->timer, tvp);
}

static void
on_sock(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	ares_process_fd(r->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	rearm(r);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	(void)fd;
	(void)what;
	ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	rearm(r);
}

/* c-ares opens, watches and closes its sockets (it calls this before
 * close()); each one is an event on the base. */
static void
sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolver *r = data;
	struct sockev *s;
	short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));

	LIST_FOREACH(s, &r->socks, link)
		if (s->fd == fd)
			break;
	if (s != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	if (what == 0) {
		if (s != NULL) {
			LIST_REMOVE(s, link);
			free(s);
		}
		return;
	}
	if (s == NULL) {
		if ((s = calloc(1, sizeof(*s))) == NULL)
			goto fail;
		s->fd = fd;
		LIST_INSERT_HEAD(&r->socks, s, link);
	}
	if ((s->ev = event_new(r->base, fd, what | EV_PERSIST, on_sock, r)) != NULL &&
	    event_add(s->ev, NULL) == 0)
		return;
fail:
	/* the socket goes unwatched: its questions end at their timeout */
	log_error("resolver: cannot watch a DNS socket");
}

/* ------------------------------------------------------------ answers ---- */

static bool
retryable(int status)
{
	switch (status) {
	case ARES_ETIMEOUT:
	case ARES_ECONNREFUSED:		/* every server refused or failed */
	case ARES_ESERVFAIL:
	case ARES_EREFUSED:
	case ARES_ENOTIMP:
	case ARES_EFORMERR:
	case ARES_EBADRESP:
		return true;
	default:
		return false;
	}
}

static int
map_status(int status, const char **errtext)
{
	switch (status) {
	case ARES_ETIMEOUT:
		*errtext = "timeout";
		return RESOLVER_ETIMEOUT;
	case ARES_ENOTFOUND:
		*errtext = "NXDOMAIN";
		return RESOLVER_ENXDOMAIN;
	case ARES_ECONNREFUSED:
		/* c-ares 1.18 ends a question so when every server answered
		 * SERVFAIL, REFUSED or NOTIMP, or refused the connection */
		*errtext = "no usable answer (SERVFAIL, REFUSED or unreachable)";
		return RESOLVER_ESERVFAIL;
	case ARES_ESERVFAIL:
		*errtext = "SERVFAIL";
		return RESOLVER_ESERVFAIL;
	case ARES_EREFUSED:
		*errtext = "REFUSED";
		return RESOLVER_ESERVFAIL;
	case ARES_ENOTIMP:
		*errtext = "NOTIMP";
		return RESOLVER_ESERVFAIL;
	case ARES_EFORMERR:
		*errtext = "FORMERR";
		return RESOLVER_ESERVFAIL;
	case ARES_EBADRESP:
		*errtext = "malformed answer";
		return RESOLVER_EMALFORMED;
	case ARES_EBADNAME:
		*errtext = "invalid name";
		return RESOLVER_ENAME;
	case ARES_ENOMEM:
		*errtext = "out of memory";
		return RESOLVER_ESYSTEM;
	default:
		*errtext = ares_strerror(status);
		return RESOLVER_ESYSTEM;
	}
}

/* The A or AAAA records of the answer (after CNAMEs, whose TTLs c-ares
 * folds in) into S; ARES_ENODATA when it holds none. */
static int
collect(struct addrset *s, int type, const unsigned char *abuf, int alen, uint16_t port,
    uint16_t weight)
{
	struct ares_addrttl a4[RESOLVER_MAX_ADDRS];
	struct ares_addr6ttl a6[RESOLVER_MAX_ADDRS];
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	int n = RESOLVER_MAX_ADDRS, rc;

	if (type == ns_t_a)
		rc = ares_parse_a_reply(abuf, alen, NULL, a4, &n);
	else
		rc = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
	if (rc != ARES_SUCCESS)
		return rc == ARES_ENOMEM || rc == ARES_ENODATA ? rc : ARES_EBADRESP;
	if (n == 0)			/* c-ares 1.18 after CNAMEs to nowhere */
		return ARES_ENODATA;
	for (int i = 0; i < n; i++) {
		memset(&ss, 0, sizeof(ss));
		if (type == ns_t_a) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons(port);
			s4->sin_addr = a4[i].ipaddr;
			s->ttl = min32(s->ttl, ttl_of(a4[i].ttl));
		} else {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(port);
			memcpy(&s6->sin6_addr, &a6[i].ip6addr, sizeof(s6->sin6_addr));
			s->ttl = min32(s->ttl, ttl_of(a6[i].ttl));
		}
		if (addrset_add(s, &ss, type == ns_t_a ? sizeof(*s4) : sizeof(*s6),
		    weight) == -1)
			return ARES_ENOMEM;
	}
	return ARES_SUCCESS;
}

/*
 * Labels of 1..63 bytes, 253 in all (255 on the wire), printable ASCII
 * but '\', which c-ares reads as an escape: so a hostile SRV target cannot
 * make ferry ask for a name other than the one it spells.
 */
static bool
valid_name(const char *s)
{
	size_t len = strlen(s), label = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (ch < 0x21 || ch > 0x7e || ch == '\\' || ++label > 63) {
			return false;
		}
	}
	return true;
}

static void
target_init(struct target *t, uint16_t port, uint16_t weight)
{
	t->port = port;
	t->weight = weight;
	for (int i = 0; i < 2; i++)
		t->set[i].ttl = RESOLVER_TTL_NONE;
}

/* Targets of the lowest priority present, then their A/AAAA lookups. */
static int
srv_answer(struct resolver_query *q, const struct ares_srv_reply *reply)
{
	const struct ares_srv_reply *p;
	unsigned best = UINT16_MAX + 1u;
	size_t n = 0;

	for (p = reply; p != NULL; p = p->next)
		if (p->priority < best)
			best = p->priority;
	for (p = reply; p != NULL && n < MAX_TARGETS; p = p->next)
		if (p->priority == best)
			n++;
	if (n == 0)
		return 0;
	if ((q->targets = calloc(n, sizeof(*q->targets))) == NULL)
		return -1;
	for (p = reply; p != NULL && q->ntargets < n; p = p->next) {
		struct target *t = &q->targets[q->ntargets];

		/* "" is the root, ".": no service there */
		if (p->priority != best || strcmp(p->host, "") == 0 ||
		    strcmp(p->host, ".") == 0)
			continue;
		if (!valid_name(p->host)) {
			log_debug("resolver: %s: SRV target skipped (not a usable name)", q->name);
			continue;
		}
		if ((t->name = strdup(p->host)) == NULL)
			return -1;
		target_init(t, p->port, p->weight);
		q->ntargets++;
	}
	/* the SRV question is still pending: no target can finish the query
	 * before the loop is over */
	for (size_t i = 0; i < q->ntargets; i++) {
		tx_start(q, &q->targets[i], ns_t_a, 0);
		tx_start(q, &q->targets[i], ns_t_aaaa, 0);
	}
	return 0;
}

static const char *
type_name(int type)
{
	return type == ns_t_a ? "A" : type == ns_t_aaaa ? "AAAA" : "SRV";
}

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct tx *tx = arg;
	struct resolver_query *q = tx->q;
	struct target *t = tx->t;
	struct ares_srv_reply *reply = NULL;
	struct dns_ttls ttls;
	const char *errtext = NULL;
	int err = 0;

	(void)timeouts;
	tx->r->inflight--;
	if (q == NULL) {			/* cancelled, or the resolver is going */
		free(tx);
		return;
	}
	if (status == ARES_SUCCESS && t != NULL) {
		status = collect(&t->set[tx->type == ns_t_aaaa], tx->type, abuf, alen,
		    t->port, t->weight);
	} else if (status == ARES_SUCCESS) {
		status = ares_parse_srv_reply(abuf, alen, &reply);
		/* c-ares 1.18 drops the records' TTLs: read from the answer */
		if (status == ARES_SUCCESS) {
			dns_ttls(abuf, alen, ns_t_srv, &ttls);
			q->ttl = min32(q->ttl, ttls.answer);
		}
		if (status == ARES_SUCCESS && srv_answer(q, reply) == -1)
			status = ARES_ENOMEM;
		else if (status != ARES_SUCCESS && status != ARES_ENODATA &&
		    status != ARES_ENOMEM)
			status = ARES_EBADRESP;
		ares_free_data(reply);
	}
	if (status == ARES_ENODATA || status == ARES_ENOTFOUND) {
		/* no such records: that holds for the negative TTL of the SOA
		 * (which c-ares 1.18 does not show), and no longer than the
		 * CNAMEs that led there */
		uint32_t *ttl = t ? &t->set[tx->type == ns_t_aaaa].ttl : &q->ttl;

		dns_ttls(abuf, alen, tx->type, &ttls);
		*ttl = min32(*ttl, min32(ttls.answer, ttls.negative));
	}
	if (status == ARES_ENODATA)		/* the name exists, no such records */
		status = ARES_SUCCESS;
	if (status != ARES_SUCCESS) {
		err = map_status(status, &errtext);
		log_debug("resolver: %s %s: %s (round %d)", t ? t->name : q->name,
		    type_name(tx->type), errtext, tx->round + 1);
		if (retryable(status) && tx->round + 1 < ROUNDS) {
			/* from the first server again, with the same timeout */
			LIST_REMOVE(tx, link);
			q->pending--;
			tx_start(q, t, tx->type, tx->round + 1);
			free(tx);
			return;
		}
	}
	if (t != NULL) {
		t->err[tx->type == ns_t_aaaa] = err;
		t->errtext[tx->type == ns_t_aaaa] = errtext;
	} else {
		q->err = err;
		q->errtext = errtext;
	}
	LIST_REMOVE(tx, link);
	free(tx);
	if (--q->pending == 0)
		event_active(q->done, EV_TIMEOUT, 1);
}

static void
tx_start(struct resolver_query *q, struct target *t, int type, int round)
{
	struct resolver *r = q->r;
	struct tx *tx;
	const char *errtext = r->ch ? "out of memory" : "no DNS channel";

	if (r->ch == NULL || (tx = calloc(1, sizeof(*tx))) == NULL) {
		/* as if c-ares had failed it: keeps the counts right */
		if (t != NULL) {
			t->err[type == ns_t_aaaa] = RESOLVER_ESYSTEM;
			t->errtext[type == ns_t_aaaa] = errtext;
		} else {
			q->err = RESOLVER_ESYSTEM;
			q->errtext = errtext;
		}
		if (q->pending == 0)
			event_active(q->done, EV_TIMEOUT, 1);
		return;
	}
	tx->r = r;
	tx->q = q;
	tx->t = t;
	tx->type = type;
	tx->round = round;
	LIST_INSERT_HEAD(&q->txs, tx, link);
	q->pending++;
	r->inflight++;
	/* may call on_answer() at once (a bad name, no memory) */
	ares_query(r->ch, t ? t->name : q->name, ns_c_in, type, on_answer, tx);
}

/* ------------------------------------------------------------ queries ---- */

static void
query_free(struct resolver_query *q)
{
	struct tx *tx;

	while ((tx = LIST_FIRST(&q->txs)) != NULL) {
		LIST_REMOVE(tx, link);
		tx->q = NULL;
	}
	for (size_t i = 0; i < q->ntargets; i++) {
		free(q->targets[i].name);
		for (int j = 0; j < 2; j++)
			free(q->targets[i].set[j].a);
	}
	free(q->targets);
	free(q->name);
	if (q->done != NULL)
		event_free(q->done);
	free(q);
}

/* The usable addresses of a target into OUT: both families when both
 * questions were answered, else the one that gave addresses. TTL takes
 * those of the families used, and the negative TTL of one that does not
 * exist (what it says holds no longer either). */
static int
target_result(const struct target *t, struct addrset *out, uint32_t *ttl, int *failed)
{
	bool use[2];

	use[0] = t->err[0] == 0 && (t->err[1] == 0 || t->set[0].n > 0);
	use[1] = t->err[1] == 0 && (t->err[0] == 0 || t->set[1].n > 0);
	for (int i = 0; i < 2; i++)
		if (use[i] || t->err[i] == RESOLVER_ENXDOMAIN)
			*ttl = min32(*ttl, t->set[i].ttl);
	if (!use[0] && !use[1]) {
		*failed = t->err[0] != 0 ? 0 : 1;
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		const struct addrset *s = &t->set[i];

		if (!use[i])
			continue;
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
	uint32_t ttl = q->ttl;
	int err = q->err, rc, failed;
	const char *errtext = q->errtext;
	size_t gone = 0;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&q->r->queries, q, link);
	for (size_t i = 0; err == 0 && i < q->ntargets; i++) {
		const struct target *t = &q->targets[i];

		if ((rc = target_result(t, &out, &ttl, &failed)) == -2) {
			err = RESOLVER_ESYSTEM;
			errtext = "out of memory";
		} else if (rc == -1 && q->srv && t->err[failed] == RESOLVER_ENXDOMAIN) {
			gone++;		/* left out: the others serve */
		} else if (rc == -1) {
			err = t->err[failed];
			errtext = t->errtext[failed];
			if (q->srv) {
				snprintf(q->errbuf, sizeof(q->errbuf), "SRV target %s: %s",
				    t->name, errtext);
				errtext = q->errbuf;
			}
		}
	}
	/* an SRV answer whose targets all do not exist (records moved before
	 * the names did) fails as an NXDOMAIN of its name does: the last
	 * good set stays, asked again at the negative TTL */
	if (err == 0 && gone > 0 && gone == q->ntargets) {
		err = RESOLVER_ENXDOMAIN;
		errtext = "NXDOMAIN for every SRV target";
	}
	if (err != 0)
		q->cb(q->arg, err, errtext, NULL, 0,
		    err == RESOLVER_ENXDOMAIN ? ttl : RESOLVER_TTL_NONE);
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
	LIST_INIT(&q->txs);
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
	target_init(t, port, 1);
	if (resolver_parse_ip(name, port, &ss, &len) == 0 ||
	    (resolver_is_localhost(name) && resolver_parse_ip("127.0.0.1", port, &ss, &len) == 0)) {
		if (addrset_add(&t->set[0], &ss, len, 1) == -1) {
			resolver_cancel(q);
			return NULL;
		}
		return query_now(q, 0, NULL);
	}
	if (!valid_name(name))
		return query_now(q, RESOLVER_ENAME, "invalid name");
	if ((t->name = strdup(name)) == NULL) {
		resolver_cancel(q);
		return NULL;
	}
	q->pending = 1;		/* a guard: no early answer ends the query */
	tx_start(q, t, ns_t_a, 0);
	tx_start(q, t, ns_t_aaaa, 0);
	if (--q->pending == 0)
		event_active(q->done, EV_TIMEOUT, 1);
	rearm(r);
	return q;
}

struct resolver_query *
resolver_lookup_srv(struct resolver *r, const char *name, resolver_cb cb, void *arg)
{
	struct resolver_query *q;

	if ((q = query_new(r, true, cb, arg)) == NULL)
		return NULL;
	if ((q->name = strdup(name)) == NULL) {
		resolver_cancel(q);
		return NULL;
	}
	if (!valid_name(name))
		return query_now(q, RESOLVER_ENAME, "invalid name");
	tx_start(q, NULL, ns_t_srv, 0);
	rearm(r);
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

/* ----------------------------------------------------------- resolver ---- */

int
resolver_global_init(void)
{
	return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -1;
}

void
resolver_global_cleanup(void)
{
	ares_library_cleanup();
}

static int
channel_open(struct resolver *r)
{
	struct ares_options o;
	char lookups[] = "b";		/* DNS only: never /etc/hosts */
	/* resolver_new() read the nameserver lines; nothing else of
	 * resolv.conf applies, and an unreadable one must not stop c-ares */
	char resolvconf[] = "/dev/null";
	int rc;

	memset(&o, 0, sizeof(o));
	/* NOSEARCH and no domains: names as written, whatever resolv.conf,
	 * LOCALDOMAIN or RES_OPTIONS say; EDNS(0) as the old client did */
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS;
	o.timeout = r->timeout_ms;
	/* one round per ares_query(); the second is ours (see on_answer) */
	o.tries = 1;
	o.ndots = 1;
	o.ndomains = 0;
	o.lookups = lookups;
	o.ednspsz = EDNS_PAYLOAD;
	o.sock_state_cb = sock_state;
	o.sock_state_cb_data = r;
	o.resolvconf_path = resolvconf;
	rc = ares_init_options(&r->ch, &o, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS |
	    ARES_OPT_TRIES | ARES_OPT_NDOTS | ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS |
	    ARES_OPT_EDNSPSZ | ARES_OPT_NOROTATE | ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_RESOLVCONF);
	if (rc != ARES_SUCCESS) {
		log_error("resolver: c-ares: %s", ares_strerror(rc));
		r->ch = NULL;
		return -1;
	}
	if ((rc = ares_set_servers_ports(r->ch, r->ns)) != ARES_SUCCESS) {
		log_error("resolver: c-ares nameservers: %s", ares_strerror(rc));
		ares_destroy(r->ch);
		r->ch = NULL;
		return -1;
	}
	return 0;
}

/* SS into the nameserver list; false when c-ares cannot use it. */
static bool
ns_add(struct resolver *r, const struct sockaddr_storage *ss)
{
	struct ares_addr_port_node *n = &r->ns[r->n_ns];

	memset(n, 0, sizeof(*n));
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		n->family = AF_INET;
		n->addr.addr4 = s4->sin_addr;
		n->udp_port = n->tcp_port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		if (s6->sin6_scope_id != 0)	/* c-ares 1.18 has no scope */
			return false;
		n->family = AF_INET6;
		memcpy(&n->addr.addr6, &s6->sin6_addr, sizeof(s6->sin6_addr));
		n->udp_port = n->tcp_port = ntohs(s6->sin6_port);
	} else {
		return false;
	}
	if (r->n_ns > 0)
		r->ns[r->n_ns - 1].next = n;
	r->n_ns++;
	return true;
}

struct resolver *
resolver_new(struct event_base *base, const struct conf_addr *nameservers, size_t n)
{
	struct sockaddr_storage ss[RESOLVER_MAX_NS];
	socklen_t lens[RESOLVER_MAX_NS];
	struct resolver *r;
	int k;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->base = base;
	r->timeout_ms = 1000;
	TAILQ_INIT(&r->queries);
	LIST_INIT(&r->socks);
	for (size_t i = 0; i < n; i++) {
		const char *why = !nameservers[i].is_ip ? "not an IP address" :
		    r->n_ns == RESOLVER_MAX_NS ? "too many" :
		    !ns_add(r, &nameservers[i].sa) ? "an IPv6 scope is not supported" : NULL;

		if (why != NULL)
			log_warn("resolver: nameserver %s skipped (%s)", nameservers[i].text, why);
	}
	if (n > 0 && r->n_ns == 0) {
		log_error("resolver: no usable nameserver");
		free(r);
		return NULL;
	}
	if (n == 0) {
		k = resolver_read_resolv_conf("/etc/resolv.conf", ss, lens, RESOLVER_MAX_NS);
		for (int i = 0; i < k; i++)
			if (!ns_add(r, &ss[i]))
				log_warn("resolver: /etc/resolv.conf nameserver %d skipped (an "
				    "IPv6 scope is not supported)", i + 1);
		if (r->n_ns == 0 && resolver_parse_ip("127.0.0.1", 53, &ss[0], &lens[0]) == 0)
			ns_add(r, &ss[0]);
	}
	if ((r->timer = evtimer_new(base, on_timer, r)) == NULL || channel_open(r) == -1) {
		if (r->timer != NULL)
			event_free(r->timer);
		free(r);
		return NULL;
	}
	return r;
}

void
resolver_set_timeout(struct resolver *r, int64_t ms)
{
	int timeout = ms < 1 ? 1 : ms > 60000 ? 60000 : (int)ms;

	if (timeout == r->timeout_ms && r->ch != NULL)
		return;
	if (r->inflight > 0) {
		log_warn("resolver: timeout not changed: questions in flight");
		return;
	}
	r->timeout_ms = timeout;
	/* c-ares 1.18 sets its timeout only when a channel is made */
	if (r->ch != NULL)
		ares_destroy(r->ch);
	r->ch = NULL;
	channel_open(r);
}

void
resolver_free(struct resolver *r)
{
	struct sockev *s;

	if (r == NULL)
		return;
	while (!TAILQ_EMPTY(&r->queries))
		resolver_cancel(TAILQ_FIRST(&r->queries));
	/* ends the orphans (ARES_EDESTRUCTION) and closes the sockets */
	if (r->ch != NULL)
		ares_destroy(r->ch);
	while ((s = LIST_FIRST(&r->socks)) != NULL) {
		LIST_REMOVE(s, link);
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
	}
	event_free(r->timer);
	free(r);
}
