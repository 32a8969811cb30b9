/*
 * Unit tests for src/dns_ttl.c: the SRV and negative (SOA) TTLs of raw
 * DNS answers built here byte by byte, and hostile ones: every prefix of
 * a good answer, counts the message cannot hold, data lengths past the
 * end, compression loops and pointers out of the message, SOA data of
 * the wrong size, random bytes and bit flips. Each message is copied to a
 * buffer of exactly its size, so ASan sees any read past the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "dns_ttl.h"

#define T_A	1
#define T_NS	2
#define T_CNAME	5
#define T_SOA	6
#define T_AAAA	28
#define T_SRV	33
#define C_IN	1
#define C_CH	3

/* ---------------------------------------------------- packet builder ---- */

struct pb {
	unsigned char b[4096];
	int n;
};

static void
pb8(struct pb *p, unsigned v)
{
	p->b[p->n++] = (unsigned char)v;
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

/* "." is the root; NULL a pointer to the question name (offset 12) */
static void
pbname(struct pb *p, const char *name)
{
	const char *s = name;

	if (name == NULL) {
		pb16(p, 0xc00c);
		return;
	}
	while (*s != '\0' && strcmp(s, ".") != 0) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		pb8(p, (unsigned)l);
		memcpy(p->b + p->n, s, l);
		p->n += (int)l;
		s += l + (dot ? 1 : 0);
	}
	pb8(p, 0);
}

static void
hdr(struct pb *p, unsigned rcode, unsigned qd, unsigned an, unsigned ns, unsigned ar)
{
	p->n = 0;
	pb16(p, 0x1234);
	pb16(p, 0x8180 | rcode);
	pb16(p, qd);
	pb16(p, an);
	pb16(p, ns);
	pb16(p, ar);
}

static void
question(struct pb *p, const char *name, unsigned type)
{
	pbname(p, name);
	pb16(p, type);
	pb16(p, C_IN);
}

/* A record header; returns where rdlength is, for rdend(). */
static int
rrhdr(struct pb *p, const char *name, unsigned type, unsigned klass, uint32_t ttl)
{
	pbname(p, name);
	pb16(p, type);
	pb16(p, klass);
	pb32(p, ttl);
	pb16(p, 0);
	return p->n - 2;
}

static void
rdend(struct pb *p, int at)
{
	unsigned len = (unsigned)(p->n - at - 2);

	p->b[at] = (unsigned char)(len >> 8);
	p->b[at + 1] = (unsigned char)len;
}

static void
rr_srv(struct pb *p, const char *name, uint32_t ttl, const char *target)
{
	int at = rrhdr(p, name, T_SRV, C_IN, ttl);

	pb16(p, 10);
	pb16(p, 5);
	pb16(p, 443);
	pbname(p, target);
	rdend(p, at);
}

static void
rr_a(struct pb *p, const char *name, unsigned klass, uint32_t ttl)
{
	int at = rrhdr(p, name, T_A, klass, ttl);

	pb32(p, 0x0a000001);
	rdend(p, at);
}

static void
rr_cname(struct pb *p, const char *name, uint32_t ttl, const char *target)
{
	int at = rrhdr(p, name, T_CNAME, C_IN, ttl);

	pbname(p, target);
	rdend(p, at);
}

/* MNAME and RNAME as written (NULL: a pointer to the question name) */
static void
rr_soa(struct pb *p, const char *name, uint32_t ttl, const char *mname, const char *rname,
    uint32_t minimum)
{
	int at = rrhdr(p, name, T_SOA, C_IN, ttl);

	pbname(p, mname);
	pbname(p, rname);
	pb32(p, 2024010101);
	pb32(p, 3600);
	pb32(p, 600);
	pb32(p, 86400);
	pb32(p, minimum);
	rdend(p, at);
}

/* dns_ttls() on an exact-size copy of the first LEN bytes of P */
static int
walk(const struct pb *p, int len, int type, struct dns_ttls *out)
{
	unsigned char *copy = malloc(len > 0 ? (size_t)len : 1);
	int rc;

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, p->b, (size_t)len);
	rc = dns_ttls(copy, len, type, out);
	free(copy);
	return rc;
}

/* An SRV answer: three records, their target's A in the additional
 * section; returns where that section starts. */
static int
srv_answer(struct pb *p, uint32_t t1, uint32_t t2, uint32_t t3)
{
	int at, additional;

	hdr(p, 0, 1, 3, 0, 1);
	question(p, "_https._tcp.svc.test", T_SRV);
	rr_srv(p, NULL, t1, "a.svc.test");
	rr_srv(p, NULL, t2, "b.svc.test");
	rr_srv(p, NULL, t3, "c.svc.test");
	additional = p->n;
	at = rrhdr(p, "a.svc.test", T_A, C_IN, 1);
	pb32(p, 0x0a000001);
	rdend(p, at);
	return additional;
}

static void
label(struct pb *p, const char *s)
{
	pb8(p, (unsigned)strlen(s));
	memcpy(p->b + p->n, s, strlen(s));
	p->n += (int)strlen(s);
}

/* NXDOMAIN for nx.svc.test with the zone's SOA, every name after the
 * question compressed: svc.test is at offset 15, inside the question. */
static void
nxdomain(struct pb *p, uint32_t soa_ttl, uint32_t minimum)
{
	int at;

	hdr(p, 3, 1, 0, 1, 0);
	question(p, "nx.svc.test", T_A);
	pb16(p, 0xc000 | 15);
	pb16(p, T_SOA);
	pb16(p, C_IN);
	pb32(p, soa_ttl);
	pb16(p, 0);
	at = p->n - 2;
	label(p, "ns");
	pb16(p, 0xc000 | 15);
	label(p, "hostmaster");
	pb16(p, 0xc000 | 15);
	pb32(p, 1);
	pb32(p, 3600);
	pb32(p, 600);
	pb32(p, 86400);
	pb32(p, minimum);
	rdend(p, at);
}

/* -------------------------------------------------------------- answers ---- */

START_TEST(srv_smallest_ttl)
{
	struct pb p;
	struct dns_ttls t;

	srv_answer(&p, 300, 2, 60);
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 2);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	/* the same records asked as another type: none of them count */
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
}
END_TEST

START_TEST(cname_and_other_records)
{
	struct pb p;
	struct dns_ttls t;

	hdr(&p, 0, 1, 4, 0, 0);
	question(&p, "_x._tcp.alias.test", T_SRV);
	rr_cname(&p, NULL, 25, "_x._tcp.real.test");
	rr_a(&p, "other.test", C_IN, 1);		/* another type */
	rr_a(&p, "other.test", C_CH, 0);		/* another class */
	rr_srv(&p, "_x._tcp.real.test", 100, "t1.test");
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 25);		/* the CNAME's */
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.answer, 1);
}
END_TEST

START_TEST(negative_ttl)
{
	struct pb p;
	struct dns_ttls t;

	nxdomain(&p, 900, 30);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.negative, 30);		/* MINIMUM */
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	nxdomain(&p, 20, 3600);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.negative, 20);		/* the SOA's own TTL */
	nxdomain(&p, 0, 3600);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.negative, 0);
}
END_TEST

/* NODATA after a CNAME, the SOA behind an NS record; uncompressed names. */
START_TEST(nodata_with_cname_and_ns)
{
	struct pb p;
	struct dns_ttls t;
	int at;

	hdr(&p, 0, 1, 1, 3, 0);
	question(&p, "www.test", T_AAAA);
	rr_cname(&p, NULL, 40, "host.test");
	at = rrhdr(&p, "test", T_NS, C_IN, 5);
	pbname(&p, "ns.test");
	rdend(&p, at);
	rr_soa(&p, "test", 600, "ns.test", "admin.test", 300);
	rr_soa(&p, "test", 120, ".", ".", 3600);	/* two: the smaller */
	ck_assert_int_eq(walk(&p, p.n, T_AAAA, &t), 0);
	ck_assert_uint_eq(t.answer, 40);
	ck_assert_uint_eq(t.negative, 120);
}
END_TEST

/* RFC 2181 §8: the top bit set reads as 0, in a TTL and in MINIMUM. */
START_TEST(top_bit_is_zero)
{
	struct pb p;
	struct dns_ttls t;

	srv_answer(&p, 0x80000000u, 0xffffffffu, 7);
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 0);
	srv_answer(&p, 0x7fffffffu, 0x7fffffffu, 0x7fffffffu);
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 0x7fffffffu);
	nxdomain(&p, 900, 0x80000001u);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.negative, 0);
}
END_TEST

START_TEST(empty_answer)
{
	struct pb p;
	struct dns_ttls t;

	hdr(&p, 0, 1, 0, 0, 0);
	question(&p, "a.test", T_A);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	/* just a header */
	hdr(&p, 0, 0, 0, 0, 0);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
}
END_TEST

/* Answers of dnsmasq 2.90 (authoritative for svc.test, TTL 30), as in
 * tests/fuzz/corpus/dns_ttl: an NS record in the authority section of
 * positive answers, an EDNS OPT record in the additional one. */
static const char *const real_srv =
    "62c285000001000200010001055f68747470045f746370037765620373766304746573740000"
    "210001c00c002100010000001e0014000a00051f900377656203737663047465737400c00c00"
    "2100010000001e0013000a000a1f910264620373766304746573740003737663047465737400"
    "000200010000001e000d026e730373766304746573740000002904d0000000000000";
static const char *const real_nxdomain =
    "c9ac85030001000000010001026e78037376630474657374000001000103737663047465737400"
    "000600010000001e0036026e73037376630474657374000a686f73746d61737465720373766304"
    "746573740078a3f175000004b0000000b4001275000000001e00002904d0000000000000";
static const char *const real_cname_nodata =
    "cfe9850000010001000100010377777703737663047465737400001c0001c00c00050001000000"
    "1e000e037765620373766304746573740003737663047465737400000200010000001e000d026e"
    "730373766304746573740000002904d0000000000000";

static void
unhex(struct pb *p, const char *hex)
{
	p->n = 0;
	for (; hex[0] != '\0' && hex[1] != '\0'; hex += 2) {
		unsigned v;

		ck_assert_int_eq(sscanf(hex, "%2x", &v), 1);
		pb8(p, v);
	}
}

START_TEST(real_answers)
{
	struct pb p;
	struct dns_ttls t;

	unhex(&p, real_srv);
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 30);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	unhex(&p, real_nxdomain);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	ck_assert_uint_eq(t.negative, 30);
	/* NODATA after a CNAME, with no SOA: the CNAME's TTL alone */
	unhex(&p, real_cname_nodata);
	ck_assert_int_eq(walk(&p, p.n, T_AAAA, &t), 0);
	ck_assert_uint_eq(t.answer, 30);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
}
END_TEST

/* --------------------------------------------------------------- hostile ---- */

/* Every message cut short: never a read past the end, never a TTL from
 * a section that did not end. */
START_TEST(every_prefix)
{
	struct pb p[2];
	struct dns_ttls t;
	int end_of_answer, additional;

	additional = srv_answer(&p[0], 300, 2, 60);
	nxdomain(&p[1], 900, 30);
	for (int k = 0; k < 2; k++) {
		int full = k == 0 ? additional : p[1].n;

		for (int len = 0; len < full; len++) {
			ck_assert_int_eq(walk(&p[k], len, T_SRV, &t), -1);
			ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
			ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
		}
	}
	/* the additional section is not read: cut there, all is known */
	ck_assert_int_eq(walk(&p[0], additional, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 2);
	/* an answer section that ended keeps its TTL when the authority
	 * section is cut */
	hdr(&p[0], 0, 1, 1, 1, 0);
	question(&p[0], "_x._tcp.svc.test", T_SRV);
	rr_srv(&p[0], NULL, 9, "a.test");
	end_of_answer = p[0].n;
	rr_soa(&p[0], "test", 900, "ns.test", "admin.test", 30);
	for (int len = end_of_answer; len < p[0].n; len++) {
		ck_assert_int_eq(walk(&p[0], len, T_SRV, &t), -1);
		ck_assert_uint_eq(t.answer, 9);
		ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	}
}
END_TEST

START_TEST(impossible_counts)
{
	struct pb p;
	struct dns_ttls t;

	ck_assert_int_eq(dns_ttls(NULL, 100, T_A, &t), -1);
	srv_answer(&p, 300, 2, 60);
	p.b[6] = 0xff;			/* 65283 answers in 150 bytes */
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	srv_answer(&p, 300, 2, 60);
	p.b[4] = p.b[5] = 0xff;		/* questions */
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
	srv_answer(&p, 300, 2, 60);
	p.b[8] = p.b[9] = 0xff;		/* authority records */
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
	ck_assert_int_eq(walk(&p, 11, T_SRV, &t), -1);
	ck_assert_int_eq(dns_ttls(p.b, -5, T_SRV, &t), -1);
	/* one answer more than there is: the last read runs into nothing */
	p.n = srv_answer(&p, 300, 2, 60);	/* without the additional record */
	p.b[7] = 4;
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
}
END_TEST

START_TEST(rdlength_past_the_end)
{
	struct pb p;
	struct dns_ttls t;
	int rdlength;

	hdr(&p, 0, 1, 1, 0, 0);
	question(&p, "_x._tcp.svc.test", T_SRV);
	rdlength = p.n + 2 + 2 + 2 + 4;	/* after the owner pointer, type, class, TTL */
	rr_srv(&p, NULL, 9, "a.test");
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), 0);
	ck_assert_uint_eq(t.answer, 9);
	/* 14 bytes: priority, weight, port and "a.test"; claim one more */
	ck_assert_uint_eq(p.b[rdlength + 1], 14);
	p.b[rdlength + 1] = 15;
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	p.b[rdlength] = 0xff;
	ck_assert_int_eq(walk(&p, p.n, T_SRV, &t), -1);
}
END_TEST

START_TEST(compression_loops)
{
	struct pb p;
	struct dns_ttls t;
	int owner;

	/* an owner name pointing at itself */
	hdr(&p, 0, 1, 1, 0, 0);
	question(&p, "a.test", T_A);
	owner = p.n;
	pb16(&p, 0xc000 | (unsigned)owner);
	pb16(&p, T_A);
	pb16(&p, C_IN);
	pb32(&p, 10);
	pb16(&p, 4);
	pb32(&p, 0x0a060606);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	ck_assert_uint_eq(t.answer, DNS_TTL_NONE);
	/* two pointers at each other, in the SOA's MNAME */
	hdr(&p, 3, 1, 0, 1, 0);
	question(&p, "nx.test", T_A);
	{
		int at = rrhdr(&p, "test", T_SOA, C_IN, 900);
		int here = p.n;

		pb16(&p, 0xc000 | (unsigned)(here + 2));
		pb16(&p, 0xc000 | (unsigned)here);
		for (int i = 0; i < 5; i++)
			pb32(&p, 30);
		rdend(&p, at);
	}
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	/* a label after a pointer chain that goes round through labels */
	hdr(&p, 0, 1, 1, 0, 0);
	question(&p, "a.test", T_A);
	owner = p.n;
	pb8(&p, 1);
	pb8(&p, 'x');
	pb16(&p, 0xc000 | (unsigned)owner);
	pb16(&p, T_A);
	pb16(&p, C_IN);
	pb32(&p, 10);
	pb16(&p, 4);
	pb32(&p, 0x0a060606);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
}
END_TEST

START_TEST(bad_names)
{
	struct pb p;
	struct dns_ttls t;

	/* a pointer out of the message */
	hdr(&p, 0, 1, 1, 0, 0);
	question(&p, "a.test", T_A);
	pb16(&p, 0xc000 | 0x3fff);
	pb16(&p, T_A);
	pb16(&p, C_IN);
	pb32(&p, 10);
	pb16(&p, 4);
	pb32(&p, 0x0a060606);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	/* the reserved label types 01 and 10 */
	for (unsigned top = 0x40; top <= 0x80; top += 0x40) {
		hdr(&p, 0, 1, 0, 0, 0);
		pb8(&p, top | 1);
		pb8(&p, 'a');
		pb8(&p, 0);
		pb16(&p, T_A);
		pb16(&p, C_IN);
		ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	}
	/* a label running past the end */
	hdr(&p, 0, 1, 0, 0, 0);
	pb8(&p, 63);
	pb8(&p, 'a');
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
}
END_TEST

/* SOA data must be two names and 20 bytes exactly. */
START_TEST(soa_sizes)
{
	struct pb p;
	struct dns_ttls t;
	int at;

	for (int extra = -1; extra <= 1; extra += 2) {
		hdr(&p, 3, 1, 0, 1, 0);
		question(&p, "nx.test", T_A);
		at = rrhdr(&p, "test", T_SOA, C_IN, 900);
		pbname(&p, "ns.test");
		pbname(&p, "admin.test");
		for (int i = 0; i < 5; i++)
			pb32(&p, 30);
		if (extra > 0)
			pb8(&p, 0);
		else
			p.n--;
		rdend(&p, at);
		ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
		ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
	}
	/* an RNAME running out of the data into the next record */
	hdr(&p, 3, 1, 0, 2, 0);
	question(&p, "nx.test", T_A);
	at = rrhdr(&p, "test", T_SOA, C_IN, 900);
	pbname(&p, "ns.test");
	pb8(&p, 5);
	rdend(&p, at);
	pb8(&p, 'a');
	pb8(&p, 'd');
	pb8(&p, 'm');
	pb8(&p, 'i');
	pb8(&p, 'n');
	pb8(&p, 0);
	for (int i = 0; i < 5; i++)
		pb32(&p, 30);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	/* no data at all */
	hdr(&p, 3, 1, 0, 1, 0);
	question(&p, "nx.test", T_A);
	at = rrhdr(&p, "test", T_SOA, C_IN, 900);
	rdend(&p, at);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), -1);
	/* an SOA in another class is not looked into */
	hdr(&p, 3, 1, 0, 1, 0);
	question(&p, "nx.test", T_A);
	at = rrhdr(&p, "test", T_SOA, C_CH, 900);
	pb8(&p, 0);
	rdend(&p, at);
	ck_assert_int_eq(walk(&p, p.n, T_A, &t), 0);
	ck_assert_uint_eq(t.negative, DNS_TTL_NONE);
}
END_TEST

static uint32_t rng = 12345;

static unsigned
rnd(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 16;
}

static void
check_sane(const struct dns_ttls *t)
{
	ck_assert(t->answer == DNS_TTL_NONE || t->answer <= 0x7fffffffu);
	ck_assert(t->negative == DNS_TTL_NONE || t->negative <= 0x7fffffffu);
}

/* Bit flips and byte changes of good answers, and random bytes behind a
 * plausible header: only sane results. (tests/fuzz/fuzz_dns_ttl.c goes
 * further.) */
START_TEST(mutations)
{
	struct pb good[2], p;
	struct dns_ttls t;

	srv_answer(&good[0], 300, 2, 60);
	nxdomain(&good[1], 900, 30);
	for (int i = 0; i < 20000; i++) {
		p = good[i & 1];
		for (unsigned k = 0, n = 1 + rnd() % 4; k < n; k++) {
			int at = (int)(rnd() % (unsigned)p.n);

			if (rnd() & 1)
				p.b[at] ^= (unsigned char)(1u << (rnd() % 8));
			else
				p.b[at] = (unsigned char)rnd();
		}
		walk(&p, p.n - (int)(rnd() % 3), (i & 1) ? T_A : T_SRV, &t);
		check_sane(&t);
	}
	for (int i = 0; i < 20000; i++) {
		hdr(&p, 0, rnd() % 3, rnd() % 6, rnd() % 6, 0);
		for (int k = 0, n = (int)(rnd() % 200); k < n; k++)
			pb8(&p, (rnd() & 3) == 0 ? 0xc0 | (rnd() & 1) : rnd());
		walk(&p, p.n, T_SRV, &t);
		check_sane(&t);
	}
}
END_TEST

static Suite *
dns_ttl_suite(void)
{
	Suite *s = suite_create("dns_ttl");
	TCase *tc = tcase_create("answers");
	TCase *th = tcase_create("hostile");

	tcase_add_test(tc, srv_smallest_ttl);
	tcase_add_test(tc, cname_and_other_records);
	tcase_add_test(tc, negative_ttl);
	tcase_add_test(tc, nodata_with_cname_and_ns);
	tcase_add_test(tc, top_bit_is_zero);
	tcase_add_test(tc, empty_answer);
	tcase_add_test(tc, real_answers);
	suite_add_tcase(s, tc);
	tcase_add_test(th, every_prefix);
	tcase_add_test(th, impossible_counts);
	tcase_add_test(th, rdlength_past_the_end);
	tcase_add_test(th, compression_loops);
	tcase_add_test(th, bad_names);
	tcase_add_test(th, soa_sizes);
	tcase_add_test(th, mutations);
	suite_add_tcase(s, th);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(dns_ttl_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
