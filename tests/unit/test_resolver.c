/*
 * Unit tests for src/resolver.c (c-ares on libevent) and
 * src/resolver_addr.c: lookups against a fake DNS server (a thread with a
 * UDP and a TCP socket on 127.0.0.1 and a random port) that answers from
 * a table of names, hostile answers included; IP literals and localhost
 * without a query; resolv.conf parsing; and when src/discovery.c asks
 * again, as the server sees it. The wire format itself is c-ares's (and
 * src/dns_ttl.c's, tests/unit/test_dns_ttl.c) business: what is tested
 * here is what ferry makes of it.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>

#include "clock.h"
#include "discovery.h"
#include "resolver.h"
#include "runtime.h"

#define DNS_T_A		1
#define DNS_T_CNAME	5
#define DNS_T_SOA	6
#define DNS_T_AAAA	28
#define DNS_T_SRV	33
#define DNS_C_IN	1
#define DNS_R_FORMERR	1
#define DNS_R_SERVFAIL	2
#define DNS_R_NXDOMAIN	3
#define DNS_R_REFUSED	5

/* ---------------------------------------------------- packet builder ---- */

struct pb {
	uint8_t b[16384];
	size_t n;
};

static void
pb8(struct pb *p, unsigned v)
{
	p->b[p->n++] = (uint8_t)v;
}

static void
pb16(struct pb *p, unsigned v)
{
	pb8(p, v >> 8);
	pb8(p, v & 0xff);
}

static void
pb32(struct pb *p, uint32_t v)
{
	pb16(p, v >> 16);
	pb16(p, v & 0xffff);
}

/* NULL: a pointer to the question name (offset 12) */
static void
pbname(struct pb *p, const char *name)
{
	const char *s = name, *dot;
	size_t l;

	if (name == NULL) {
		pb16(p, 0xc00c);
		return;
	}
	if (strcmp(name, ".") == 0) {
		pb8(p, 0);
		return;
	}
	while (*s) {
		dot = strchr(s, '.');
		l = dot ? (size_t)(dot - s) : strlen(s);

		pb8(p, (unsigned)l);
		memcpy(p->b + p->n, s, l);
		p->n += l;
		s += l + (dot ? 1 : 0);
	}
	pb8(p, 0);
}

static void
hdr(struct pb *p, unsigned id, unsigned flags, unsigned qd, unsigned an, unsigned ns,
    unsigned ar)
{
	p->n = 0;
	pb16(p, id);
	pb16(p, flags);
	pb16(p, qd);
	pb16(p, an);
	pb16(p, ns);
	pb16(p, ar);
}

static void
rrhdr(struct pb *p, const char *name, unsigned type, uint32_t ttl, unsigned rdlen)
{
	pbname(p, name);
	pb16(p, type);
	pb16(p, DNS_C_IN);
	pb32(p, ttl);
	pb16(p, rdlen);
}

static void
rr_a(struct pb *p, const char *name, uint32_t ttl, const char *ip)
{
	rrhdr(p, name, DNS_T_A, ttl, 4);
	ck_assert_int_eq(inet_pton(AF_INET, ip, p->b + p->n), 1);
	p->n += 4;
}

static void
rr_aaaa(struct pb *p, const char *name, uint32_t ttl, const char *ip)
{
	rrhdr(p, name, DNS_T_AAAA, ttl, 16);
	ck_assert_int_eq(inet_pton(AF_INET6, ip, p->b + p->n), 1);
	p->n += 16;
}

/* rdata length patched after the name */
static void
rr_cname(struct pb *p, const char *name, uint32_t ttl, const char *target)
{
	size_t at;

	rrhdr(p, name, DNS_T_CNAME, ttl, 0);
	at = p->n;
	pbname(p, target);
	p->b[at - 2] = (uint8_t)((p->n - at) >> 8);
	p->b[at - 1] = (uint8_t)(p->n - at);
}

static void
rr_srv(struct pb *p, const char *name, uint32_t ttl, unsigned prio, unsigned weight,
    unsigned port, const char *target)
{
	size_t at;

	rrhdr(p, name, DNS_T_SRV, ttl, 0);
	at = p->n;
	pb16(p, prio);
	pb16(p, weight);
	pb16(p, port);
	pbname(p, target);
	p->b[at - 2] = (uint8_t)((p->n - at) >> 8);
	p->b[at - 1] = (uint8_t)(p->n - at);
}

static void
rr_soa(struct pb *p, const char *name, uint32_t ttl, uint32_t minimum)
{
	size_t at;

	rrhdr(p, name, DNS_T_SOA, ttl, 0);
	at = p->n;
	pbname(p, "ns.test");
	pbname(p, "admin.test");
	pb32(p, 1);
	pb32(p, 3600);
	pb32(p, 600);
	pb32(p, 86400);
	pb32(p, minimum);
	p->b[at - 2] = (uint8_t)((p->n - at) >> 8);
	p->b[at - 1] = (uint8_t)(p->n - at);
}

/* ------------------------------------------------------- fake server ---- */

#define F_RESP	0x8180		/* QR RD RA */

static int srv_udp = -1, srv_tcp = -1, dead_udp = -1;
static uint16_t srv_port, dead_port;
static int stop_pipe[2] = { -1, -1 };
static pthread_t srv_thread;
static _Atomic int n_queries, n_queries_a, n_queries_aaaa, n_queries_tcp;
/* when the server saw the questions for one name and type */
#define MAX_WATCHED 16
static const char *_Atomic watch_name;
static _Atomic unsigned watch_type;
static _Atomic int n_watched;
static _Atomic int64_t watched_at[MAX_WATCHED];

struct question {
	unsigned id, type, ar;
	char name[300];
	size_t end;		/* offset after the question */
};

static int
parse_question(const uint8_t *q, size_t len, struct question *qs)
{
	size_t off = 12, o = 0;

	if (len < 12)
		return -1;
	qs->id = (unsigned)(q[0] << 8 | q[1]);
	qs->ar = (unsigned)(q[10] << 8 | q[11]);
	while (off < len && q[off] != 0) {
		size_t l = q[off];

		if (off + 1 + l > len || o + l + 2 > sizeof(qs->name))
			return -1;
		if (o > 0)
			qs->name[o++] = '.';
		memcpy(qs->name + o, q + off + 1, l);
		o += l;
		off += 1 + l;
	}
	qs->name[o] = '\0';
	if (off + 5 > len)
		return -1;
	qs->type = (unsigned)(q[off + 1] << 8 | q[off + 2]);
	qs->end = off + 5;
	return 0;
}

/* The question echoed (the query's bytes, without its EDNS record). */
static void
echo(struct pb *p, const uint8_t *q, const struct question *qs, unsigned flags,
    unsigned an, unsigned ns, unsigned ar)
{
	hdr(p, qs->id, flags, 1, an, ns, ar);
	memcpy(p->b + 12, q + 12, qs->end - 12);
	p->n = qs->end;
}

#define IS(n) (strcasecmp(qs->name, (n)) == 0)
#define A (qs->type == DNS_T_A)
#define AAAA (qs->type == DNS_T_AAAA)
#define SRV (qs->type == DNS_T_SRV)

/* The answer to query Q in P; false: no answer. */
static bool
answer(const uint8_t *q, size_t len, struct pb *p, bool tcp)
{
	struct question qsb, *qs = &qsb;

	if (parse_question(q, len, qs) == -1)
		return false;
	if (IS("a.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 300, "10.0.0.5");
	} else if (IS("a.test") && AAAA) {	/* no AAAA: NODATA with SOA */
		echo(p, q, qs, F_RESP, 0, 1, 0);
		rr_soa(p, "test", 900, 30);
	} else if (IS("v6.test") && AAAA) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_aaaa(p, NULL, 120, "fd00::1");
	} else if (IS("v6.test") && A) {	/* NODATA without SOA */
		echo(p, q, qs, F_RESP, 0, 0, 0);
	} else if (IS("multi.test") && A) {
		echo(p, q, qs, F_RESP, 4, 0, 0);
		rr_a(p, NULL, 300, "10.0.0.1");
		rr_a(p, NULL, 50, "10.0.0.2");
		rr_a(p, NULL, 200, "10.0.0.3");
		rr_a(p, NULL, 200, "10.0.0.2");	/* a duplicate */
	} else if (IS("multi.test") && AAAA) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_aaaa(p, NULL, 100, "fd00::2");
	} else if (IS("alias.test") && (A || AAAA)) {
		/* alias.test -> mid.test -> real.test, unrelated records around */
		echo(p, q, qs, F_RESP, A ? 5 : 2, 0, 0);
		rr_cname(p, NULL, 40, "mid.test");
		if (A)
			rr_a(p, "other.test", 5, "10.6.6.6");
		rr_cname(p, "mid.test", 500, "real.test");
		if (A) {
			rr_a(p, "real.test", 600, "10.1.1.1");
			rr_a(p, "REAL.Test", 600, "10.1.1.2");
		}
	} else if (IS("case.test") && A) {
		/* the question echoed in another case */
		hdr(p, qs->id, F_RESP, 1, 1, 0, 0);
		pbname(p, "CaSe.TEST");
		pb16(p, DNS_T_A);
		pb16(p, DNS_C_IN);
		rr_a(p, NULL, 10, "10.7.0.1");
	} else if (IS("empty.test") && (A || AAAA)) {
		echo(p, q, qs, F_RESP, 0, 1, 0);
		rr_soa(p, "test", 20, 3600);
	} else if (IS("_http._tcp.srv.test") && SRV) {
		echo(p, q, qs, F_RESP, 3, 0, 3);
		rr_srv(p, NULL, 100, 20, 1, 7000, "t3.srv.test");
		rr_srv(p, NULL, 90, 10, 5, 8080, "t1.srv.test");
		rr_srv(p, NULL, 80, 10, 10, 8081, "t2.srv.test");
		rr_a(p, "t1.srv.test", 70, "10.2.0.1");
		rr_a(p, "t2.srv.test", 300, "10.2.0.2");
		rr_aaaa(p, "t2.srv.test", 300, "fd00::22");
	} else if (IS("t1.srv.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 70, "10.2.0.1");
	} else if (IS("t2.srv.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 300, "10.2.0.2");
	} else if (IS("t2.srv.test") && AAAA) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_aaaa(p, NULL, 300, "fd00::22");
	} else if ((IS("t1.srv.test") || IS("t3.srv.test")) && AAAA) {
		echo(p, q, qs, F_RESP, 0, 0, 0);
	} else if (IS("many.test") && A && tcp) {	/* more than RESOLVER_MAX_ADDRS */
		echo(p, q, qs, F_RESP, 300, 0, 0);
		for (unsigned i = 0; i < 300; i++) {
			char ip[32];

			snprintf(ip, sizeof(ip), "10.5.%u.%u", i / 100, i % 100);
			rr_a(p, NULL, 60, ip);
		}
	} else if (IS("_x._tcp.manysrv.test") && SRV && tcp) {	/* > 64 targets */
		echo(p, q, qs, F_RESP, 100, 0, 0);
		for (unsigned i = 0; i < 100; i++)
			rr_srv(p, NULL, 60, 0, 1, 9000 + i, "h1.test");
	} else if ((IS("many.test") || IS("_x._tcp.manysrv.test")) && !tcp) {
		echo(p, q, qs, F_RESP | 0x0200, 0, 0, 0);	/* TC: over TCP */
	} else if (IS("many.test") && AAAA) {
		echo(p, q, qs, F_RESP, 0, 0, 0);
	} else if (IS("_x._tcp.oddtarget.test") && SRV) {
		/* a target c-ares would have to escape: not asked for */
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 80, "a b.test");
		rr_srv(p, NULL, 100, 0, 1, 81, "a.test");
	} else if (IS("cnameonly.test") && (A || AAAA)) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_cname(p, NULL, 40, "nowhere.test");
	} else if (IS("_http._tcp.noadd.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 9000, "h1.test");
		rr_srv(p, NULL, 100, 0, 2, 9001, "multi.test");
	} else if (IS("h1.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 15, "10.3.0.1");
	} else if (IS("h1.test") && AAAA) {
		echo(p, q, qs, F_RESP, 0, 0, 0);
	} else if (IS("_x._tcp.srvbad.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 80, "a.test");
		rr_srv(p, NULL, 100, 0, 1, 81, "silent.test");
	} else if (IS("_x._tcp.srvnx.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 80, "nx.test");
		rr_srv(p, NULL, 100, 0, 1, 81, "a.test");
	} else if (IS("_x._tcp.dot.test") && SRV) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_srv(p, NULL, 100, 0, 0, 0, ".");
	} else if (IS("_x._tcp.alias.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 1);
		rr_cname(p, NULL, 25, "_x._tcp.real.test");
		rr_srv(p, "_x._tcp.real.test", 100, 0, 3, 443, "t1.srv.test");
		rr_a(p, "t1.srv.test", 70, "10.2.0.1");
	} else if (IS("nx.test") || IS("_x._tcp.nx.test")) {
		echo(p, q, qs, F_RESP | DNS_R_NXDOMAIN, 0, 1, 0);
		rr_soa(p, "test", 900, 30);
	} else if (IS("_x._tcp.srvallnx.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 80, "nx.test");
		rr_srv(p, NULL, 100, 0, 1, 81, "nx.test");
	} else if (IS("_x._tcp.srvnx2.test") && SRV) {
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 100, 0, 1, 80, "nx.test");
		rr_srv(p, NULL, 100, 0, 1, 81, "v6.test");
	} else if (IS("_x._tcp.short.test") && SRV) {
		/* records that change often, targets that do not */
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_srv(p, NULL, 5, 0, 1, 80, "long.test");
		rr_srv(p, NULL, 2, 0, 1, 81, "long.test");
	} else if (IS("long.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 300, "10.0.3.1");
	} else if (IS("long.test") && AAAA) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_aaaa(p, NULL, 300, "fd00::31");
	} else if (IS("_x._tcp.srvempty.test") && SRV) {	/* NODATA */
		echo(p, q, qs, F_RESP, 0, 1, 0);
		rr_soa(p, "test", 900, 45);
	} else if (IS("neg3.test") || IS("neg0.test")) {
		echo(p, q, qs, F_RESP | DNS_R_NXDOMAIN, 0, 1, 0);
		rr_soa(p, "test", 900, IS("neg3.test") ? 3 : 0);
	} else if (IS("fail.test")) {
		echo(p, q, qs, F_RESP | DNS_R_SERVFAIL, 0, 0, 0);
	} else if (IS("refused.test")) {
		echo(p, q, qs, F_RESP | DNS_R_REFUSED, 0, 0, 0);
	} else if (IS("refusednoq.test")) {
		hdr(p, qs->id, F_RESP | DNS_R_REFUSED, 0, 0, 0, 0);	/* no question */
	} else if (IS("badid.test")) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		p->b[0] ^= 0x5a;
		rr_a(p, NULL, 10, "10.6.6.6");
	} else if (IS("badq.test")) {
		hdr(p, qs->id, F_RESP, 1, 1, 0, 0);
		pbname(p, "other.test");
		pb16(p, qs->type);
		pb16(p, DNS_C_IN);
		rr_a(p, NULL, 10, "10.6.6.6");
	} else if (IS("notresp.test")) {	/* QR clear */
		echo(p, q, qs, 0x0100, 1, 0, 0);
		rr_a(p, NULL, 10, "10.6.6.6");
	} else if (IS("trunc.test")) {	/* a record cut in the middle */
		echo(p, q, qs, F_RESP, 2, 0, 0);
		rr_a(p, NULL, 10, "10.6.6.6");
		rr_a(p, NULL, 10, "10.6.6.7");
		p->n -= 3;
	} else if (IS("loop.test")) {	/* a name that points at itself */
		echo(p, q, qs, F_RESP, 1, 0, 0);
		pb16(p, 0xc000 | (unsigned)p->n);
		pb16(p, DNS_T_A);
		pb16(p, DNS_C_IN);
		pb32(p, 10);
		pb16(p, 4);
		pb32(p, 0x0a060606);
	} else if (IS("loop2.test")) {
		/* a CNAME target pointing forwards, at a pointer back to it */
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rrhdr(p, NULL, DNS_T_CNAME, 10, 4);
		pb16(p, 0xc000 | (unsigned)(p->n + 2));
		pb16(p, 0xc000 | (unsigned)(p->n - 2));
	} else if (IS("badrdlen.test")) {	/* an A of 5 bytes */
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rrhdr(p, NULL, DNS_T_A, 10, 5);
		pb32(p, 0x0a060606);
		pb8(p, 0);
	} else if (IS("tc.test")) {
		if (!tcp) {
			echo(p, q, qs, F_RESP | 0x0200, 0, 0, 0);
		} else {
			echo(p, q, qs, F_RESP, A ? 1 : 0, 0, 0);
			if (A)
				rr_a(p, NULL, 77, "10.9.9.9");
		}
	} else if (IS("formerr.test")) {	/* an old server: no EDNS */
		if (qs->ar > 0) {
			echo(p, q, qs, F_RESP | DNS_R_FORMERR, 0, 0, 0);
		} else {
			echo(p, q, qs, F_RESP, A ? 1 : 0, 0, 0);
			if (A)
				rr_a(p, NULL, 60, "10.8.0.1");
		}
	} else if (IS("spoof.test") && A) {
		echo(p, q, qs, F_RESP, 1, 0, 0);
		rr_a(p, NULL, 60, "10.4.0.1");
	} else if (IS("spoof.test") && AAAA) {
		echo(p, q, qs, F_RESP, 0, 0, 0);
	} else if (IS("silent.test")) {
		return false;
	} else {
		echo(p, q, qs, F_RESP | DNS_R_NXDOMAIN, 0, 0, 0);
	}
	return true;
}

/* One question from a connection; -1 when it is over. c-ares keeps a
 * connection to a server open, for every question, while any is pending:
 * the server loop watches it next to the UDP socket. */
static int
serve_tcp(int fd)
{
	static struct pb p;
	uint8_t q[600], lenb[2];
	size_t want, got;
	ssize_t n;

	if (recv(fd, lenb, 2, MSG_WAITALL) != 2)
		return -1;
	want = (size_t)(lenb[0] << 8 | lenb[1]);
	if (want > sizeof(q))
		return -1;
	for (got = 0; got < want && (n = recv(fd, q + got, want - got, 0)) > 0; )
		got += (size_t)n;
	if (got != want)
		return -1;
	atomic_fetch_add(&n_queries_tcp, 1);
	if (answer(q, want, &p, true)) {
		lenb[0] = (uint8_t)(p.n >> 8);
		lenb[1] = (uint8_t)p.n;
		(void)!send(fd, lenb, 2, MSG_NOSIGNAL);
		(void)!send(fd, p.b, p.n, MSG_NOSIGNAL);
	}
	return 0;
}

static void
note_watched(const struct question *qs)
{
	const char *watch = watch_name;

	if (watch == NULL || strcasecmp(qs->name, watch) != 0 || qs->type != watch_type ||
	    n_watched >= MAX_WATCHED)
		return;
	/* the time first: the count says it is there */
	watched_at[n_watched] = clock_now_ms();
	n_watched++;
}

static void *
server_main(void *arg)
{
	struct pollfd pfd[4] = {
		{ .fd = srv_udp, .events = POLLIN },
		{ .fd = srv_tcp, .events = POLLIN },
		{ .fd = stop_pipe[0], .events = POLLIN },
		{ .fd = -1, .events = POLLIN },		/* the TCP connection */
	};

	(void)arg;
	for (;;) {
		if (poll(pfd, 4, -1) < 0 && errno != EINTR)
			break;
		if (pfd[2].revents)
			break;
		if (pfd[0].revents & POLLIN) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			uint8_t q[1500];
			struct question qs;
			static struct pb p;
			ssize_t n = recvfrom(srv_udp, q, sizeof(q), 0,
			    (struct sockaddr *)&from, &fl);

			if (n > 0 && parse_question(q, (size_t)n, &qs) == 0) {
				atomic_fetch_add(&n_queries, 1);
				if (qs.type == DNS_T_A)
					atomic_fetch_add(&n_queries_a, 1);
				if (qs.type == DNS_T_AAAA)
					atomic_fetch_add(&n_queries_aaaa, 1);
				note_watched(&qs);
			}
			if (n > 0 && answer(q, (size_t)n, &p, false)) {
				if (strcasecmp(qs.name, "spoof.test") == 0) {
					/* wrong ID first, then the real answer */
					p.b[1] ^= 1;
					sendto(srv_udp, p.b, p.n, 0, (struct sockaddr *)&from, fl);
					p.b[1] ^= 1;
				}
				sendto(srv_udp, p.b, p.n, 0, (struct sockaddr *)&from, fl);
			}
		}
		if (pfd[1].revents & POLLIN) {
			int c = accept(srv_tcp, NULL, NULL);

			if (c >= 0) {
				struct timeval tv = { 1, 0 };

				setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
				if (pfd[3].fd != -1)
					close(pfd[3].fd);
				pfd[3].fd = c;
				pfd[3].revents = 0;
			}
		}
		if ((pfd[3].revents & (POLLIN | POLLHUP | POLLERR)) && serve_tcp(pfd[3].fd) == -1) {
			close(pfd[3].fd);
			pfd[3].fd = -1;
		}
	}
	if (pfd[3].fd != -1)
		close(pfd[3].fd);
	return NULL;
}

static uint16_t
bind_lo(int fd, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	socklen_t sl = sizeof(sin);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_msg(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind: %s",
	    strerror(errno));
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	return ntohs(sin.sin_port);
}

static bool
bind_udp_same(int fd, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
}

/* ------------------------------------------------------------ harness ---- */

static struct event_base *base;
static struct resolver *res;

struct result {
	bool called;
	int calls;
	int err;
	char errtext[512];
	struct resolved_addr addrs[16];
	size_t n;
	uint32_t ttl;
};

static void
on_result(void *arg, int err, const char *errtext, const struct resolved_addr *addrs,
    size_t n, uint32_t ttl)
{
	struct result *r = arg;

	r->called = true;
	r->calls++;
	r->err = err;
	snprintf(r->errtext, sizeof(r->errtext), "%s", errtext ? errtext : "");
	r->n = n;
	if (n > 16)
		n = 16;
	if (n > 0)
		memcpy(r->addrs, addrs, n * sizeof(*addrs));
	r->ttl = ttl;
	if (err != 0)
		ck_assert_ptr_null(addrs);
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop until R is called or MS pass; how long it took. */
static int64_t
run_until(struct result *r, int64_t ms)
{
	int64_t start = clock_now_ms();
	struct timeval tv = { 0, 20000 };
	struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);

	event_add(t, &tv);
	while (!r->called && clock_now_ms() - start < ms)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return clock_now_ms() - start;
}

/* Runs the loop for MS, whatever happens. */
static void
run_for(int64_t ms)
{
	struct result never = { 0 };

	run_until(&never, ms);
}

static struct conf_addr
ns_addr(uint16_t port)
{
	struct conf_addr a = { .is_ip = true, .port = port };
	struct sockaddr_in *sin = (struct sockaddr_in *)&a.sa;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.salen = sizeof(*sin);
	a.text = "127.0.0.1";
	a.host = "127.0.0.1";
	return a;
}

static void
setup(void)
{
	struct conf_addr ns;

	n_queries = n_queries_a = n_queries_aaaa = n_queries_tcp = 0;
	watch_name = NULL;
	n_watched = 0;
	srv_udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	srv_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	dead_udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert(srv_udp >= 0 && srv_tcp >= 0 && dead_udp >= 0);
	srv_port = bind_lo(srv_tcp, 0);
	for (int i = 0; !bind_udp_same(srv_udp, srv_port); i++) {
		/* that UDP port is taken: another pair */
		ck_assert_int_lt(i, 50);
		close(srv_tcp);
		srv_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		srv_port = bind_lo(srv_tcp, 0);
	}
	ck_assert_int_eq(listen(srv_tcp, 16), 0);
	dead_port = bind_lo(dead_udp, 0);	/* bound, never read */
	ck_assert_int_eq(pipe(stop_pipe), 0);
	ck_assert_int_eq(pthread_create(&srv_thread, NULL, server_main, NULL), 0);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	ns = ns_addr(srv_port);
	res = resolver_new(base, &ns, 1);
	ck_assert_ptr_nonnull(res);
	resolver_set_timeout(res, 250);
}

static void
teardown(void)
{
	resolver_free(res);
	res = NULL;
	event_base_free(base);
	(void)!write(stop_pipe[1], "x", 1);
	pthread_join(srv_thread, NULL);
	close(srv_udp);
	close(srv_tcp);
	close(dead_udp);
	close(stop_pipe[0]);
	close(stop_pipe[1]);
}

static void
lookup(const char *name, uint16_t port, struct result *r)
{
	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(resolver_lookup(res, name, port, on_result, r));
	ck_assert(!r->called);		/* never from inside the call */
	run_until(r, 5000);
	ck_assert_msg(r->called, "%s: no callback", name);
}

static void
lookup_srv(const char *name, struct result *r)
{
	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(resolver_lookup_srv(res, name, on_result, r));
	ck_assert(!r->called);
	run_until(r, 5000);
	ck_assert_msg(r->called, "%s: no callback", name);
}

#define ck_ok(r) ck_assert_msg((r)->err == 0, "err %d: %s", (r)->err, (r)->errtext)

/* -------------------------------------------------------------- lookups ---- */

START_TEST(lookup_a)
{
	struct result r;

	lookup("a.test", 5000, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.0.0.5:5000");
	ck_assert_uint_eq(r.addrs[0].weight, 1);
	ck_assert_int_eq(r.addrs[0].sa.ss_family, AF_INET);
	ck_assert_uint_eq(r.addrs[0].salen, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&r.addrs[0].sa)->sin_port), 5000);
	/* the empty AAAA answer's negative TTL, min(SOA TTL 900, MINIMUM
	 * 30), is below the A record's 300 */
	ck_assert_uint_eq(r.ttl, 30);
	ck_assert_int_eq(n_queries_a, 1);
	ck_assert_int_eq(n_queries_aaaa, 1);
}
END_TEST

START_TEST(lookup_trailing_dot_and_case)
{
	struct result r;

	lookup("A.Test.", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.0.0.5:80");
	lookup("case.test", 80, &r);	/* question echoed as CaSe.TEST */
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.7.0.1:80");
}
END_TEST

START_TEST(lookup_aaaa)
{
	struct result r;

	lookup("v6.test", 443, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "[fd00::1]:443");
	ck_assert_int_eq(r.addrs[0].sa.ss_family, AF_INET6);
	ck_assert_uint_eq(r.addrs[0].salen, sizeof(struct sockaddr_in6));
	ck_assert_uint_eq(r.ttl, 120);
}
END_TEST

START_TEST(lookup_multi)
{
	struct result r;

	lookup("multi.test", 8000, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 4);		/* the duplicate dropped */
	ck_assert_str_eq(r.addrs[0].text, "10.0.0.1:8000");
	ck_assert_str_eq(r.addrs[1].text, "10.0.0.2:8000");
	ck_assert_str_eq(r.addrs[2].text, "10.0.0.3:8000");
	ck_assert_str_eq(r.addrs[3].text, "[fd00::2]:8000");	/* A first */
	ck_assert_uint_eq(r.ttl, 50);
}
END_TEST

START_TEST(lookup_cname)
{
	struct result r;

	lookup("alias.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 2);
	ck_assert_str_eq(r.addrs[0].text, "10.1.1.1:80");
	ck_assert_str_eq(r.addrs[1].text, "10.1.1.2:80");
	ck_assert_uint_eq(r.ttl, 40);		/* the first CNAME's */
}
END_TEST

START_TEST(lookup_empty)
{
	struct result r;

	lookup("empty.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 0);
	/* the SOA's own TTL (20) is below its MINIMUM (3600) */
	ck_assert_uint_eq(r.ttl, 20);
	/* an empty A answer without SOA: the AAAA record's TTL alone */
	lookup("v6.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.ttl, 120);
	/* CNAMEs without an address at the end: none, but not an error;
	 * the CNAME's TTL bounds it */
	lookup("cnameonly.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 0);
	ck_assert_uint_eq(r.ttl, 40);
}
END_TEST

START_TEST(lookup_nxdomain)
{
	struct result r;

	lookup("nx.test", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENXDOMAIN);
	ck_assert_str_eq(r.errtext, "NXDOMAIN");
	ck_assert_uint_eq(r.n, 0);
	ck_assert_uint_eq(r.ttl, 30);		/* min(SOA TTL 900, MINIMUM 30) */
	ck_assert_int_eq(n_queries, 2);		/* final: not asked again */
	/* without an SOA: no word on how long it holds */
	lookup("nosoa.test", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENXDOMAIN);
	ck_assert_uint_eq(r.ttl, RESOLVER_TTL_NONE);
}
END_TEST

/* c-ares 1.18 ends a question that every server refused with the same
 * status as a refused connection: the text says both. */
#define NO_USABLE "no usable answer (SERVFAIL, REFUSED or unreachable)"

START_TEST(lookup_servfail)
{
	struct result r;

	lookup("fail.test", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ESERVFAIL);
	ck_assert_str_eq(r.errtext, NO_USABLE);
	ck_assert_uint_eq(r.ttl, RESOLVER_TTL_NONE);
	ck_assert_int_eq(n_queries, 4);		/* A and AAAA, two rounds */
	lookup("refused.test", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ESERVFAIL);
	ck_assert_str_eq(r.errtext, NO_USABLE);
	ck_assert_int_eq(n_queries, 8);
}
END_TEST

START_TEST(lookup_timeout)
{
	struct result r;
	int64_t took;

	memset(&r, 0, sizeof(r));
	resolver_lookup(res, "silent.test", 80, on_result, &r);
	took = run_until(&r, 5000);
	ck_assert(r.called);
	ck_assert_int_eq(r.err, RESOLVER_ETIMEOUT);
	ck_assert_str_eq(r.errtext, "timeout");
	ck_assert_uint_eq(r.ttl, RESOLVER_TTL_NONE);
	ck_assert_int_ge(took, 450);		/* 2 x 250 ms */
	ck_assert_int_lt(took, 2000);
	ck_assert_int_eq(n_queries, 4);
}
END_TEST

/* Two silent servers, two rounds: four tries of 250 ms. c-ares on its own
 * (ARES_OPT_TRIES 2) would wait 250, 250, 500, 500. */
START_TEST(lookup_timeout_per_try)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct conf_addr ns[2];
	struct result r;
	int64_t took;

	ck_assert_int_ge(fd, 0);
	ns[0] = ns_addr(dead_port);
	ns[1] = ns_addr(bind_lo(fd, 0));	/* bound, never read */
	resolver_free(res);
	res = resolver_new(base, ns, 2);
	ck_assert_ptr_nonnull(res);
	resolver_set_timeout(res, 250);
	memset(&r, 0, sizeof(r));
	resolver_lookup(res, "a.test", 80, on_result, &r);
	took = run_until(&r, 5000);
	close(fd);
	ck_assert(r.called);
	ck_assert_int_eq(r.err, RESOLVER_ETIMEOUT);
	ck_assert_int_ge(took, 950);
	ck_assert_int_lt(took, 1400);
}
END_TEST

/* Answers that are not ours are ignored: the lookup times out. (c-ares
 * 1.18 does not check the QR bit: an answer with it clear but the right
 * ID, question and source is taken.) */
START_TEST(lookup_ignores_mismatch)
{
	static const char *const names[] = {
		"badid.test", "badq.test", "refusednoq.test",
	};
	struct result r;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		lookup(names[i], 80, &r);
		ck_assert_msg(r.err == RESOLVER_ETIMEOUT, "%s: err %d %s", names[i],
		    r.err, r.errtext);
	}
	/* a wrong packet first, then the right one */
	lookup("spoof.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.4.0.1:80");
}
END_TEST

START_TEST(lookup_malformed)
{
	static const char *const names[] = { "trunc.test", "loop.test", "loop2.test" };
	struct result r;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		n_queries = 0;
		lookup(names[i], 80, &r);
		ck_assert_msg(r.err == RESOLVER_EMALFORMED, "%s: err %d %s", names[i],
		    r.err, r.errtext);
		ck_assert_str_eq(r.errtext, "malformed answer");
		ck_assert_int_eq(n_queries, 4);	/* asked again in round two */
	}
	/* c-ares skips an A record of 5 bytes: the answer holds nothing */
	lookup("badrdlen.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 0);
}
END_TEST

/* Huge answers: at most RESOLVER_MAX_ADDRS addresses, 64 SRV targets. */
START_TEST(lookup_caps)
{
	struct result r;

	/* 129 questions to a one-thread server: no timeouts on a busy box */
	resolver_set_timeout(res, 2000);
	lookup("many.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, RESOLVER_MAX_ADDRS);
	ck_assert_str_eq(r.addrs[0].text, "10.5.0.0:80");
	ck_assert_uint_eq(r.ttl, 60);
	n_queries = 0;
	lookup_srv("_x._tcp.manysrv.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 64);		/* the first 64 records */
	ck_assert_str_eq(r.addrs[0].text, "10.3.0.1:9000");
	ck_assert_str_eq(r.addrs[15].text, "10.3.0.1:9015");
	ck_assert_int_eq(n_queries, 1 + 2 * 64);
}
END_TEST

START_TEST(lookup_tcp_fallback)
{
	struct result r;

	lookup("tc.test", 53, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.9.9.9:53");
	ck_assert_uint_eq(r.ttl, 77);
	ck_assert_int_eq(n_queries_tcp, 2);
}
END_TEST

START_TEST(lookup_edns_fallback)
{
	struct result r;

	lookup("formerr.test", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.8.0.1:80");
}
END_TEST

/* The first nameserver never answers; the second does. */
START_TEST(lookup_second_nameserver)
{
	struct conf_addr ns[2] = { ns_addr(dead_port), ns_addr(srv_port) };
	struct result r;
	int64_t took;

	resolver_free(res);
	res = resolver_new(base, ns, 2);
	ck_assert_ptr_nonnull(res);
	resolver_set_timeout(res, 200);
	memset(&r, 0, sizeof(r));
	resolver_lookup(res, "a.test", 80, on_result, &r);
	took = run_until(&r, 5000);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_int_ge(took, 150);
	ck_assert_int_lt(took, 1000);
}
END_TEST

/* Nothing listens on the port: ICMP port unreachable ends each try at
 * once, without waiting for the timeout. */
START_TEST(lookup_port_unreachable)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct conf_addr ns;
	struct result r;
	uint16_t port;
	int64_t took;

	port = bind_lo(fd, 0);
	close(fd);
	ns = ns_addr(port);
	resolver_free(res);
	res = resolver_new(base, &ns, 1);
	resolver_set_timeout(res, 2000);
	memset(&r, 0, sizeof(r));
	resolver_lookup(res, "a.test", 80, on_result, &r);
	took = run_until(&r, 5000);
	ck_assert(r.called);
	ck_assert_int_eq(r.err, RESOLVER_ESERVFAIL);
	ck_assert_str_eq(r.errtext, NO_USABLE);
	ck_assert_int_lt(took, 1000);
}
END_TEST

/* ------------------------------------------------------------------ SRV ---- */

/* The additional section (which c-ares 1.18 does not show) is not used:
 * the targets are looked up. */
START_TEST(srv_additional)
{
	struct result r;

	lookup_srv("_http._tcp.srv.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 3);		/* priority 20 left out */
	ck_assert_str_eq(r.addrs[0].text, "10.2.0.1:8080");
	ck_assert_uint_eq(r.addrs[0].weight, 5);
	ck_assert_str_eq(r.addrs[1].text, "10.2.0.2:8081");
	ck_assert_uint_eq(r.addrs[1].weight, 10);
	ck_assert_str_eq(r.addrs[2].text, "[fd00::22]:8081");
	ck_assert_uint_eq(r.addrs[2].weight, 10);
	ck_assert_uint_eq(r.ttl, 70);		/* t1's A */
	ck_assert_int_eq(n_queries, 5);		/* SRV, A and AAAA of t1 and t2 */
}
END_TEST

START_TEST(srv_lookups)
{
	struct result r;

	lookup_srv("_http._tcp.noadd.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 5);
	ck_assert_str_eq(r.addrs[0].text, "10.3.0.1:9000");
	ck_assert_uint_eq(r.addrs[0].weight, 1);
	ck_assert_str_eq(r.addrs[1].text, "10.0.0.1:9001");
	ck_assert_uint_eq(r.addrs[1].weight, 2);
	ck_assert_str_eq(r.addrs[4].text, "[fd00::2]:9001");
	ck_assert_uint_eq(r.ttl, 15);
	ck_assert_int_eq(n_queries, 5);
}
END_TEST

START_TEST(srv_cname)
{
	struct result r;

	lookup_srv("_x._tcp.alias.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.2.0.1:443");
	ck_assert_uint_eq(r.addrs[0].weight, 3);
	ck_assert_uint_eq(r.ttl, 25);		/* the CNAME's, below SRV and A */
}
END_TEST

START_TEST(srv_target_failures)
{
	struct result r;

	/* a target that does not exist adds nothing */
	lookup_srv("_x._tcp.srvnx.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.0.0.5:81");
	/* ... but its negative TTL bounds the answer's */
	lookup_srv("_x._tcp.srvnx2.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "[fd00::1]:81");
	ck_assert_uint_eq(r.ttl, 30);		/* nx.test's, not v6.test's 120 */
	/* none that exists fails the lookup as an NXDOMAIN of the name does
	 * (the caller keeps its last good set), at the targets' negative TTL */
	lookup_srv("_x._tcp.srvallnx.test", &r);
	ck_assert_int_eq(r.err, RESOLVER_ENXDOMAIN);
	ck_assert_str_eq(r.errtext, "NXDOMAIN for every SRV target");
	ck_assert_uint_eq(r.ttl, 30);
	/* one that times out fails the lookup */
	lookup_srv("_x._tcp.srvbad.test", &r);
	ck_assert_int_eq(r.err, RESOLVER_ETIMEOUT);
	ck_assert_str_eq(r.errtext, "SRV target silent.test: timeout");
	/* "." = no service: success without addresses */
	lookup_srv("_x._tcp.dot.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 0);
	ck_assert_uint_eq(r.ttl, 100);		/* the SRV record's */
	/* a target that is no usable name adds nothing */
	lookup_srv("_x._tcp.oddtarget.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.0.0.5:81");
	lookup_srv("_x._tcp.nx.test", &r);
	ck_assert_int_eq(r.err, RESOLVER_ENXDOMAIN);
	ck_assert_uint_eq(r.ttl, 30);
	lookup_srv("fail.test", &r);
	ck_assert_int_eq(r.err, RESOLVER_ESERVFAIL);
	ck_assert_uint_eq(r.ttl, RESOLVER_TTL_NONE);
}
END_TEST

/* The SRV records' own TTL counts, not only their targets'. */
START_TEST(srv_record_ttl)
{
	struct result r;

	lookup_srv("_x._tcp.short.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 4);
	ck_assert_str_eq(r.addrs[0].text, "10.0.3.1:80");
	ck_assert_uint_eq(r.ttl, 2);		/* not the targets' 300 */
	/* NODATA: no records, for as long as its SOA says */
	lookup_srv("_x._tcp.srvempty.test", &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 0);
	ck_assert_uint_eq(r.ttl, 45);
}
END_TEST

/* ----------------------------------------------------- without a query ---- */

START_TEST(literals)
{
	struct result r;

	lookup("10.1.2.3", 80, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "10.1.2.3:80");
	ck_assert_uint_eq(r.addrs[0].weight, 1);
	ck_assert_uint_eq(r.ttl, RESOLVER_TTL_NONE);
	lookup("fd00::1", 8443, &r);
	ck_ok(&r);
	ck_assert_str_eq(r.addrs[0].text, "[fd00::1]:8443");
	lookup("[::1]", 1, &r);
	ck_ok(&r);
	ck_assert_str_eq(r.addrs[0].text, "[::1]:1");
	lookup("localhost", 9000, &r);
	ck_ok(&r);
	ck_assert_uint_eq(r.n, 1);
	ck_assert_str_eq(r.addrs[0].text, "127.0.0.1:9000");
	lookup("LocalHost.", 9000, &r);
	ck_ok(&r);
	lookup("app.localhost", 9000, &r);
	ck_ok(&r);
	ck_assert_str_eq(r.addrs[0].text, "127.0.0.1:9000");
	ck_assert_int_eq(n_queries, 0);
}
END_TEST

START_TEST(invalid_names)
{
	char long_label[80], long_name[300];
	struct result r;

	memset(long_label, 'a', 64);
	strcpy(long_label + 64, ".test");
	for (size_t i = 0; i < 256; i += 2)
		memcpy(long_name + i, "a.", 2);
	strcpy(long_name + 256, "test");
	lookup("a..test", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENAME);
	lookup("", 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENAME);
	lookup(long_label, 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENAME);
	lookup(long_name, 80, &r);
	ck_assert_int_eq(r.err, RESOLVER_ENAME);
	lookup_srv("a b.test", &r);
	ck_assert_int_eq(r.err, RESOLVER_ENAME);
	ck_assert_int_eq(n_queries, 0);
}
END_TEST

/* ------------------------------------------------------ cancel and free ---- */

START_TEST(cancel)
{
	struct result r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct resolver_query *q1, *q2, *q3;

	q1 = resolver_lookup(res, "silent.test", 80, on_result, &r1);
	q2 = resolver_lookup(res, "10.0.0.1", 80, on_result, &r2);
	/* its SRV answer comes at once, one target never answers */
	q3 = resolver_lookup_srv(res, "_x._tcp.srvbad.test", on_result, &r3);
	ck_assert(q1 && q2 && q3);
	resolver_cancel(q1);
	resolver_cancel(q2);
	run_for(100);
	/* q1's A and AAAA (sent before the cancel), the SRV, and A and AAAA
	 * of both targets */
	ck_assert_int_eq(n_queries, 7);
	resolver_cancel(q3);		/* in the middle of its target lookups */
	resolver_cancel(NULL);
	run_for(700);
	ck_assert(!r1.called && !r2.called && !r3.called);
}
END_TEST

START_TEST(free_pending)
{
	struct result r[4] = { 0 };
	int calls[4];

	resolver_lookup(res, "silent.test", 80, on_result, &r[0]);
	resolver_lookup_srv(res, "_x._tcp.srvbad.test", on_result, &r[1]);
	resolver_lookup(res, "tc.test", 80, on_result, &r[2]);
	resolver_lookup(res, "::1", 80, on_result, &r[3]);
	run_until(&r[3], 1000);
	for (int i = 0; i < 4; i++)
		calls[i] = r[i].calls;
	resolver_free(res);		/* whatever is still running */
	res = NULL;
	run_for(700);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(r[i].calls, calls[i]);
	ck_assert(!r[0].called && !r[1].called);
}
END_TEST

static struct result chained;

static void
free_in_callback(void *arg, int err, const char *errtext,
    const struct resolved_addr *addrs, size_t n, uint32_t ttl)
{
	on_result(arg, err, errtext, addrs, n, ttl);
	resolver_free(res);		/* with a lookup still running */
	res = NULL;
}

static void
lookup_in_callback(void *arg, int err, const char *errtext,
    const struct resolved_addr *addrs, size_t n, uint32_t ttl)
{
	on_result(arg, err, errtext, addrs, n, ttl);
	ck_assert_ptr_nonnull(resolver_lookup(res, "a.test", 80, on_result, &chained));
}

START_TEST(callback_reentry)
{
	struct result r1 = { 0 }, r2 = { 0 };

	resolver_lookup(res, "10.0.0.1", 80, lookup_in_callback, &r1);
	run_until(&chained, 3000);
	ck_assert(r1.called);
	ck_assert(chained.called);
	ck_ok(&chained);
	memset(&chained, 0, sizeof(chained));
	resolver_lookup(res, "silent.test", 80, on_result, &r2);
	resolver_lookup(res, "a.test", 80, free_in_callback, &r1);
	memset(&r1, 0, sizeof(r1));
	run_until(&r1, 3000);
	ck_assert(r1.called);
	ck_assert_ptr_null(res);
	run_for(600);
	ck_assert(!r2.called);
}
END_TEST

/* ---------------------------------------------- refresh (discovery.c) ---- */

/* What discovery published: how many sets, and the size of the last. The
 * first FAIL calls answer that the set reached no worker. */
struct publishes {
	int calls, fail;
	size_t last_n;
};

static bool
on_publish(void *arg, const struct ep_set *set)
{
	struct publishes *p = arg;

	p->last_n = set->n;
	return ++p->calls > p->fail;
}

/*
 * Discovery of service "svc" (SRV name SRV, or the one endpoint HOST:80)
 * with DNS_REFRESH_MS, on the fake server, for at most MS or until it has
 * seen the question for WATCH (of TYPE) twice: milliseconds between the
 * first two, -1 when there was no second.
 */
static int64_t
refresh_gap(const char *srv, const char *host, int64_t dns_refresh_ms, const char *watch,
    unsigned type, int64_t ms)
{
	char text[300];
	struct conf_addr ep = { .text = text, .host = (char *)host, .port = 80 };
	struct conf_service svc = {
		.name = "svc", .srv = (char *)srv, .dns_refresh = dns_refresh_ms,
		.endpoints = &ep, .n_endpoints = srv ? 0 : 1,
	};
	struct config conf = { .services = &svc, .n_services = 1 };
	struct runtime *rt = runtime_new(NULL, 1);
	struct discovery *d;
	int64_t start = clock_now_ms();
	struct publishes published = { 0 };

	snprintf(text, sizeof(text), "%s:80", host ? host : "");
	n_watched = 0;
	watch_type = type;
	watch_name = watch;
	ck_assert_ptr_nonnull(rt);
	d = discovery_new(base, rt, res, NULL, on_publish, &published);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(discovery_start(d, &conf, NULL), 0);
	while (n_watched < 2 && clock_now_ms() - start < ms)
		run_for(50);
	ck_assert(discovery_ready(d));
	/* one set: the SRV targets' addresses, or the name's first (empty)
	 * one, once it answered; the same set again is not published */
	ck_assert_int_eq(published.calls, 1);
	discovery_free(d, NULL);
	runtime_free(rt);
	watch_name = NULL;
	ck_assert_int_ge(n_watched, 1);
	return n_watched < 2 ? -1 : watched_at[1] - watched_at[0];
}

/* SRV records with a TTL of 2 s, targets of 300 s, dns_refresh 30 s: the
 * SRV name is asked again after 2 s. */
START_TEST(refresh_at_srv_ttl)
{
	int64_t gap = refresh_gap("_x._tcp.short.test", NULL, 30000, "_x._tcp.short.test",
	    DNS_T_SRV, 6000);

	ck_assert_msg(gap >= 1900 && gap < 4500, "SRV asked again after %lld ms",
	    (long long)gap);
}
END_TEST

/* An NXDOMAIN whose SOA says 3 s: asked again after 3 s (not every second
 * as while nothing was known), no later than dns_refresh, not sooner than
 * a second. */
START_TEST(refresh_at_negative_ttl)
{
	int64_t gap = refresh_gap(NULL, "neg3.test", 30000, "neg3.test", DNS_T_A, 7000);

	ck_assert_msg(gap >= 2900 && gap < 5500, "NXDOMAIN asked again after %lld ms",
	    (long long)gap);
	gap = refresh_gap(NULL, "neg3.test", 2000, "neg3.test", DNS_T_A, 6000);
	ck_assert_msg(gap >= 1900 && gap < 4500, "at dns_refresh 2s: after %lld ms",
	    (long long)gap);
	gap = refresh_gap(NULL, "neg0.test", 30000, "neg0.test", DNS_T_A, 5000);
	ck_assert_msg(gap >= 900 && gap < 3500, "SOA MINIMUM 0: after %lld ms",
	    (long long)gap);
}
END_TEST

/* A set that reached no worker (out of memory) goes again with the next
 * answer, though that answer is the same: nothing else would ask again. */
START_TEST(republish_after_failure)
{
	struct conf_service svc = {
		.name = "svc", .srv = "_x._tcp.short.test", .dns_refresh = 30000,
	};
	struct config conf = { .services = &svc, .n_services = 1 };
	struct runtime *rt = runtime_new(NULL, 1);
	struct publishes published = { .fail = 1 };
	struct discovery *d;
	int64_t start = clock_now_ms();

	ck_assert_ptr_nonnull(rt);
	d = discovery_new(base, rt, res, NULL, on_publish, &published);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(discovery_start(d, &conf, NULL), 0);
	/* the SRV records live 2 s: the second answer comes after that */
	while (published.calls < 2 && clock_now_ms() - start < 6000)
		run_for(50);
	ck_assert_int_eq(published.calls, 2);
	/* the answer after that is the same, and this time the set went out */
	run_for(2500);
	ck_assert_int_eq(published.calls, 2);
	ck_assert_uint_gt(published.last_n, 0);
	discovery_free(d, NULL);
	runtime_free(rt);
}
END_TEST

/* ----------------------------------------------------------- resolv.conf ---- */

START_TEST(resolv_conf)
{
	char path[] = "/tmp/ferry-resolv-XXXXXX";
	struct sockaddr_storage ss[4];
	socklen_t lens[4];
	char text[80];
	FILE *f;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	fputs("# generated\n"
	    "search ns.svc.cluster.local svc.cluster.local\n"
	    "options ndots:5 timeout:2\n"
	    "nameserver 10.96.0.10\n"
	    "; nameserver 9.9.9.9\n"
	    "nameserver\tfd00::53   # comment\n"
	    "nameserver bogus.example\n"
	    "nameserver\n"
	    "domain example\n"
	    "nameserver 1.1.1.1;x\n"
	    "nameserver 8.8.8.8\n"
	    "nameserver 8.8.4.4\n", f);
	fclose(f);
	ck_assert_int_eq(resolver_read_resolv_conf(path, ss, lens, 4), 4);
	resolver_format_addr((struct sockaddr *)&ss[0], text, sizeof(text));
	ck_assert_str_eq(text, "10.96.0.10:53");
	ck_assert_uint_eq(lens[0], sizeof(struct sockaddr_in));
	resolver_format_addr((struct sockaddr *)&ss[1], text, sizeof(text));
	ck_assert_str_eq(text, "[fd00::53]:53");
	ck_assert_uint_eq(lens[1], sizeof(struct sockaddr_in6));
	resolver_format_addr((struct sockaddr *)&ss[2], text, sizeof(text));
	ck_assert_str_eq(text, "1.1.1.1:53");
	resolver_format_addr((struct sockaddr *)&ss[3], text, sizeof(text));
	ck_assert_str_eq(text, "8.8.8.8:53");	/* 8.8.4.4: over max */
	unlink(path);
	ck_assert_int_eq(resolver_read_resolv_conf(path, ss, lens, 4), -1);

	/* an empty file: no nameservers */
	strcpy(path, "/tmp/ferry-resolv-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(resolver_read_resolv_conf(path, ss, lens, 4), 0);
	unlink(path);
}
END_TEST

START_TEST(resolver_system_conf)
{
	struct conf_addr bad = { .text = "dns.example:53", .host = "dns.example" };
	struct conf_addr scoped = { .is_ip = true, .text = "[fe80::1%1]:53" };
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&scoped.sa;
	struct resolver *r = resolver_new(base, NULL, 0);

	ck_assert_ptr_nonnull(r);	/* /etc/resolv.conf, or 127.0.0.1:53 */
	resolver_free(r);
	ck_assert_ptr_null(resolver_new(base, &bad, 1));
	/* c-ares 1.18 cannot use a link-local server's scope */
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(53);
	s6->sin6_scope_id = 1;
	ck_assert_int_eq(inet_pton(AF_INET6, "fe80::1", &s6->sin6_addr), 1);
	scoped.salen = sizeof(*s6);
	ck_assert_ptr_null(resolver_new(base, &scoped, 1));
}
END_TEST

static Suite *
resolver_suite(void)
{
	Suite *s = suite_create("resolver");
	TCase *tc = tcase_create("lookups");
	TCase *tr = tcase_create("refresh");
	TCase *tw = tcase_create("resolv.conf");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, lookup_a);
	tcase_add_test(tc, lookup_trailing_dot_and_case);
	tcase_add_test(tc, lookup_aaaa);
	tcase_add_test(tc, lookup_multi);
	tcase_add_test(tc, lookup_cname);
	tcase_add_test(tc, lookup_empty);
	tcase_add_test(tc, lookup_nxdomain);
	tcase_add_test(tc, lookup_servfail);
	tcase_add_test(tc, lookup_timeout);
	tcase_add_test(tc, lookup_timeout_per_try);
	tcase_add_test(tc, lookup_ignores_mismatch);
	tcase_add_test(tc, lookup_malformed);
	tcase_add_test(tc, lookup_caps);
	tcase_add_test(tc, lookup_tcp_fallback);
	tcase_add_test(tc, lookup_edns_fallback);
	tcase_add_test(tc, lookup_second_nameserver);
	tcase_add_test(tc, lookup_port_unreachable);
	tcase_add_test(tc, srv_additional);
	tcase_add_test(tc, srv_lookups);
	tcase_add_test(tc, srv_cname);
	tcase_add_test(tc, srv_target_failures);
	tcase_add_test(tc, srv_record_ttl);
	tcase_add_test(tc, literals);
	tcase_add_test(tc, invalid_names);
	tcase_add_test(tc, cancel);
	tcase_add_test(tc, free_pending);
	tcase_add_test(tc, callback_reentry);
	tcase_add_test(tc, resolver_system_conf);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tr, setup, teardown);
	tcase_set_timeout(tr, 40);
	tcase_add_test(tr, refresh_at_srv_ttl);
	tcase_add_test(tr, refresh_at_negative_ttl);
	tcase_add_test(tr, republish_after_failure);
	suite_add_tcase(s, tr);
	tcase_set_timeout(tw, 60);
	tcase_add_test(tw, resolv_conf);
	suite_add_tcase(s, tw);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	if (resolver_global_init() != 0)
		return EXIT_FAILURE;
	sr = srunner_create(resolver_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	resolver_global_cleanup();
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
