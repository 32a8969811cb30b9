#include <string.h>

#include "dns_wire.h"

#define DNS_MAXHOPS	64	/* compression pointers followed in one name */
#define DNS_MAXCHAIN	8	/* CNAMEs followed */

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint8_t
lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

int
dns_name_from_text(struct dns_name *n, const char *text)
{
	size_t tl = strlen(text), i = 0, len = 0;

	if (tl > 0 && text[tl - 1] == '.')
		tl--;
	if (tl == 0)
		return -1;
	while (i <= tl) {
		size_t j = i, ll;

		while (j < tl && text[j] != '.')
			j++;
		ll = j - i;
		if (ll == 0 || ll > 63 || len + 1 + ll + 1 > DNS_MAXNAME)
			return -1;
		n->b[len++] = (uint8_t)ll;
		for (size_t k = 0; k < ll; k++) {
			uint8_t ch = (uint8_t)text[i + k];

			if (ch < 0x21 || ch > 0x7e)
				return -1;
			n->b[len++] = lower(ch);
		}
		i = j + 1;
	}
	n->b[len++] = 0;
	n->len = (uint8_t)len;
	return 0;
}

void
dns_name_to_text(const struct dns_name *n, char *out, size_t cap)
{
	size_t o = 0, i = 0;

	if (cap == 0)
		return;
	while (i < n->len && n->b[i] != 0) {
		size_t ll = n->b[i++];

		if (o > 0) {
			if (o + 1 >= cap)
				break;
			out[o++] = '.';
		}
		for (size_t k = 0; k < ll && i < n->len; k++, i++) {
			uint8_t c = n->b[i];

			if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '_') {
				if (o + 1 >= cap)
					goto done;
				out[o++] = (char)c;
			} else {
				if (o + 4 >= cap)
					goto done;
				out[o++] = '\\';
				out[o++] = (char)('0' + c / 100);
				out[o++] = (char)('0' + c / 10 % 10);
				out[o++] = (char)('0' + c % 10);
			}
		}
	}
	if (o == 0 && cap > 1)
		out[o++] = '.';
done:
	out[o] = '\0';
}

bool
dns_name_eq(const struct dns_name *a, const struct dns_name *b)
{
	return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

size_t
dns_build_query(uint8_t *buf, size_t cap, uint16_t id, const struct dns_name *qname,
    uint16_t qtype, bool edns)
{
	size_t len = DNS_HDRLEN + qname->len + 4 + (edns ? 11 : 0);

	if (cap < len || qname->len == 0)
		return 0;
	memset(buf, 0, len);
	put16(buf, id);
	buf[2] = 0x01;			/* RD */
	put16(buf + 4, 1);		/* QDCOUNT */
	put16(buf + 10, edns ? 1 : 0);	/* ARCOUNT */
	memcpy(buf + DNS_HDRLEN, qname->b, qname->len);
	put16(buf + DNS_HDRLEN + qname->len, qtype);
	put16(buf + DNS_HDRLEN + qname->len + 2, DNS_C_IN);
	if (edns) {
		uint8_t *o = buf + DNS_HDRLEN + qname->len + 4;

		/* root owner, TYPE OPT, CLASS = payload size, TTL 0, RDLEN 0 */
		put16(o + 1, DNS_T_OPT);
		put16(o + 3, DNS_UDP_PAYLOAD);
	}
	return len;
}

/*
 * Reads the name at OFF. Labels read before the first compression pointer
 * must end before LIMIT; *next gets the offset after the name as written
 * there. Each pointer must point before the start of the run of labels
 * it ends, so positions strictly decrease from jump to jump: no loops.
 */
static int
read_name(const uint8_t *p, size_t len, size_t off, size_t limit, size_t *next,
    struct dns_name *out)
{
	size_t pos = off, seg = off, end = 0, n = 0, bound = limit;
	int hops = 0;

	if (limit > len)
		return -1;
	for (;;) {
		uint8_t c;

		if (pos >= bound)
			return -1;
		c = p[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t ptr;

			if (pos + 1 >= bound)
				return -1;
			ptr = (size_t)(c & 0x3f) << 8 | p[pos + 1];
			if (hops == 0)
				end = pos + 2;
			if (ptr >= seg || ++hops > DNS_MAXHOPS)
				return -1;
			pos = seg = ptr;
			bound = len;
			continue;
		}
		if (c & 0xc0)			/* 0x40, 0x80: obsolete/unknown */
			return -1;
		if (n + 1 + c > DNS_MAXNAME || pos + 1 + c > bound)
			return -1;
		out->b[n++] = c;
		for (size_t i = 0; i < c; i++)
			out->b[n++] = lower(p[pos + 1 + i]);
		pos += 1 + (size_t)c;
		if (c == 0)
			break;
	}
	if (hops == 0)
		end = pos;
	out->len = (uint8_t)n;
	if (next)
		*next = end;
	return 0;
}

/* One record at *off: header fields, rdata bounds, type-specific shape. */
static int
read_rr(const uint8_t *p, size_t len, size_t *off, struct dns_rr *rr, bool check)
{
	struct dns_name tmp;
	size_t o, end;

	if (read_name(p, len, *off, len, &o, &rr->name) == -1 || len - o < 10)
		return -1;
	rr->type = get16(p + o);
	rr->class = get16(p + o + 2);
	rr->ttl = get32(p + o + 4);
	if (rr->ttl & 0x80000000u)	/* RFC 2181 §8 */
		rr->ttl = 0;
	rr->rdlen = get16(p + o + 8);
	rr->rdoff = o + 10;
	if (len - rr->rdoff < rr->rdlen)
		return -1;
	end = rr->rdoff + rr->rdlen;
	*off = end;
	if (!check || rr->class != DNS_C_IN)
		return 0;
	switch (rr->type) {
	case DNS_T_A:
		return rr->rdlen == 4 ? 0 : -1;
	case DNS_T_AAAA:
		return rr->rdlen == 16 ? 0 : -1;
	case DNS_T_CNAME:
		if (read_name(p, len, rr->rdoff, end, &o, &tmp) == -1)
			return -1;
		return o == end ? 0 : -1;
	case DNS_T_SRV:
		if (rr->rdlen < 7 || read_name(p, len, rr->rdoff + 6, end, &o, &tmp) == -1)
			return -1;
		return o == end ? 0 : -1;
	}
	return 0;
}

int
dns_parse(struct dns_msg *m, const uint8_t *pkt, size_t len, uint16_t id,
    const struct dns_name *qname, uint16_t qtype)
{
	struct dns_name q;
	struct dns_rr rr;
	uint16_t flags;
	size_t off;

	memset(m, 0, sizeof(*m));
	if (len < DNS_HDRLEN || get16(pkt) != id)
		return DNS_EMISMATCH;
	flags = get16(pkt + 2);
	if (!(flags & 0x8000) || ((flags >> 11) & 0xf) != 0)
		return DNS_EMISMATCH;		/* not a response, or not QUERY */
	m->pkt = pkt;
	m->len = len;
	m->rcode = flags & 0xf;
	m->tc = (flags & 0x0200) != 0;
	off = DNS_HDRLEN;
	switch (get16(pkt + 4)) {
	case 0:
		/* some servers drop the question from error responses */
		if (m->rcode == DNS_R_NOERROR || m->rcode == DNS_R_NXDOMAIN)
			return DNS_EMISMATCH;
		return DNS_OK;
	case 1:
		if (read_name(pkt, len, off, len, &off, &q) == -1 || len - off < 4)
			return DNS_EMISMATCH;
		if (!dns_name_eq(&q, qname) || get16(pkt + off) != qtype ||
		    get16(pkt + off + 2) != DNS_C_IN)
			return DNS_EMISMATCH;
		off += 4;
		break;
	default:
		return DNS_EMISMATCH;
	}
	if (m->tc)
		return DNS_OK;
	for (int s = DNS_S_AN; s <= DNS_S_AR; s++) {
		m->count[s] = get16(pkt + 6 + 2 * s);
		m->off[s] = off;
		for (unsigned i = 0; i < m->count[s]; i++)
			if (read_rr(pkt, len, &off, &rr, true) == -1) {
				memset(m->count, 0, sizeof(m->count));
				return DNS_EMALFORMED;
			}
	}
	return DNS_OK;
}

void
dns_iter_init(struct dns_iter *it, const struct dns_msg *m, enum dns_section s)
{
	it->m = m;
	it->off = m->off[s];
	it->left = m->count[s];
}

bool
dns_iter_next(struct dns_iter *it, struct dns_rr *rr)
{
	if (it->left == 0)
		return false;
	if (read_rr(it->m->pkt, it->m->len, &it->off, rr, false) == -1) {
		it->left = 0;			/* dns_parse() checked it; never here */
		return false;
	}
	it->left--;
	return true;
}

int
dns_rr_cname(const struct dns_msg *m, const struct dns_rr *rr, struct dns_name *out)
{
	return read_name(m->pkt, m->len, rr->rdoff, rr->rdoff + rr->rdlen, NULL, out);
}

int
dns_rr_srv(const struct dns_msg *m, const struct dns_rr *rr, uint16_t *prio,
    uint16_t *weight, uint16_t *port, struct dns_name *target)
{
	const uint8_t *d = m->pkt + rr->rdoff;

	if (rr->rdlen < 7)
		return -1;
	*prio = get16(d);
	*weight = get16(d + 2);
	*port = get16(d + 4);
	return read_name(m->pkt, m->len, rr->rdoff + 6, rr->rdoff + rr->rdlen, NULL, target);
}

static uint32_t
min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* where CNAMEs and addresses are looked for */
static const enum dns_section addr_sections[2] = { DNS_S_AN, DNS_S_AR };

void
dns_chase(const struct dns_msg *m, const struct dns_name *name, struct dns_name *out,
    uint32_t *ttl)
{
	struct dns_iter it;
	struct dns_rr rr;

	*out = *name;
	for (int hop = 0; hop < DNS_MAXCHAIN; hop++) {
		bool found = false;

		for (int s = 0; s < 2 && !found; s++) {
			dns_iter_init(&it, m, addr_sections[s]);
			while (!found && dns_iter_next(&it, &rr)) {
				if (rr.type != DNS_T_CNAME || rr.class != DNS_C_IN ||
				    !dns_name_eq(&rr.name, out) || dns_rr_cname(m, &rr, out) == -1)
					continue;
				*ttl = min32(*ttl, rr.ttl);
				found = true;
			}
		}
		if (!found)
			return;
	}
}

uint32_t
dns_negative_ttl(const struct dns_msg *m)
{
	struct dns_iter it;
	struct dns_rr rr;
	uint32_t min;

	dns_iter_init(&it, m, DNS_S_NS);
	while (dns_iter_next(&it, &rr)) {
		/* MNAME, RNAME (the root at least), then five 32-bit fields:
		 * MINIMUM is the last four bytes */
		if (rr.type != DNS_T_SOA || rr.class != DNS_C_IN || rr.rdlen < 22)
			continue;
		min = get32(m->pkt + rr.rdoff + rr.rdlen - 4);
		if (min & 0x80000000u)
			min = 0;
		return min32(min, rr.ttl);
	}
	return UINT32_MAX;
}
