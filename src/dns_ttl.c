#include <stddef.h>

#include <ares.h>

#include "dns_ttl.h"

#define HEADER_LEN	12
#define QFIXED_LEN	4	/* type, class */
#define RRFIXED_LEN	10	/* type, class, TTL, rdlength */
#define SOA_TAIL_LEN	20	/* serial, refresh, retry, expire, minimum */
#define CLASS_IN	1
#define TYPE_CNAME	5
#define TYPE_SOA	6

/* The fixed fields of one resource record and where its data lies. */
struct rr {
	unsigned type, klass;
	uint32_t ttl;
	int rdata, rdend;	/* offsets: [rdata, rdend) */
};

static unsigned
be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t
min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* RFC 2181 §8: a TTL with the top bit set is read as 0. */
static uint32_t
ttl_value(uint32_t v)
{
	return v > INT32_MAX ? 0 : v;
}

/* Moves *OFF past the name there, which must end (its pointer included)
 * before END; c-ares checks where pointers lead. -1 when broken. */
static int
skip_name(const unsigned char *abuf, int alen, int *off, int end)
{
	char *name;
	long len;

	if (*off >= end)
		return -1;
	if (ares_expand_name(abuf + *off, abuf, alen, &name, &len) != ARES_SUCCESS)
		return -1;
	ares_free_string(name);
	if (len <= 0 || len > end - *off)
		return -1;
	*off += (int)len;
	return 0;
}

static int
read_rr(const unsigned char *abuf, int alen, int *off, struct rr *rr)
{
	const unsigned char *p;
	unsigned rdlen;

	if (skip_name(abuf, alen, off, alen) == -1 || alen - *off < RRFIXED_LEN)
		return -1;
	p = abuf + *off;
	rr->type = be16(p);
	rr->klass = be16(p + 2);
	rr->ttl = ttl_value(be32(p + 4));
	rdlen = be16(p + 8);
	*off += RRFIXED_LEN;
	if (rdlen > (unsigned)(alen - *off))
		return -1;
	rr->rdata = *off;
	rr->rdend = *off + (int)rdlen;
	*off = rr->rdend;
	return 0;
}

/* MNAME and RNAME, then the five numbers, filling the data exactly. */
static int
soa_minimum(const unsigned char *abuf, int alen, const struct rr *rr, uint32_t *minimum)
{
	int off = rr->rdata;

	if (skip_name(abuf, alen, &off, rr->rdend) == -1 ||
	    skip_name(abuf, alen, &off, rr->rdend) == -1 ||
	    rr->rdend - off != SOA_TAIL_LEN)
		return -1;
	*minimum = ttl_value(be32(abuf + off + 16));
	return 0;
}

int
dns_ttls(const unsigned char *abuf, int alen, int type, struct dns_ttls *out)
{
	unsigned qd, an, ns;
	uint32_t answer = DNS_TTL_NONE, negative = DNS_TTL_NONE, minimum;
	int off = HEADER_LEN;
	struct rr rr;

	out->answer = out->negative = DNS_TTL_NONE;
	if (abuf == NULL || alen < HEADER_LEN)
		return -1;
	qd = be16(abuf + 4);
	an = be16(abuf + 6);
	ns = be16(abuf + 8);
	/* a question takes 5 bytes at least, a record 11: counts the message
	 * cannot hold are refused before any walking */
	if ((unsigned long)qd * (1 + QFIXED_LEN) + (unsigned long)(an + ns) * (1 + RRFIXED_LEN) >
	    (unsigned long)(alen - HEADER_LEN))
		return -1;
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(abuf, alen, &off, alen) == -1 || alen - off < QFIXED_LEN)
			return -1;
		off += QFIXED_LEN;
	}
	for (unsigned i = 0; i < an; i++) {
		if (read_rr(abuf, alen, &off, &rr) == -1)
			return -1;
		if (rr.klass == CLASS_IN && (rr.type == (unsigned)type || rr.type == TYPE_CNAME))
			answer = min32(answer, rr.ttl);
	}
	out->answer = answer;
	for (unsigned i = 0; i < ns; i++) {
		if (read_rr(abuf, alen, &off, &rr) == -1)
			return -1;
		if (rr.klass != CLASS_IN || rr.type != TYPE_SOA)
			continue;
		if (soa_minimum(abuf, alen, &rr, &minimum) == -1)
			return -1;
		negative = min32(negative, min32(rr.ttl, minimum));
	}
	out->negative = negative;
	return 0;
}
