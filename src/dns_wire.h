/*
 * The DNS message codec behind the resolver (RFC 1035): queries out,
 * answers in. Answers are hostile input: dns_parse() walks the whole
 * message once, checking every read against the buffer and every
 * compression pointer (it must point strictly backwards, so no loop can
 * form; hops are capped too), and only then may records be iterated.
 *
 * Names are kept in wire form (length-prefixed labels ending with the
 * root label), uncompressed and ASCII-lowercased, so two names compare
 * equal case-insensitively with memcmp.
 */
#ifndef FERRY_DNS_WIRE_H
#define FERRY_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_MAXNAME	255	/* wire form, root label included */
#define DNS_HDRLEN	12
#define DNS_UDP_PAYLOAD	1232	/* advertised with EDNS(0) */

#define DNS_T_A		1
#define DNS_T_CNAME	5
#define DNS_T_SOA	6
#define DNS_T_AAAA	28
#define DNS_T_SRV	33
#define DNS_T_OPT	41
#define DNS_C_IN	1

#define DNS_R_NOERROR	0
#define DNS_R_FORMERR	1
#define DNS_R_SERVFAIL	2
#define DNS_R_NXDOMAIN	3
#define DNS_R_NOTIMP	4
#define DNS_R_REFUSED	5

struct dns_name {
	uint8_t len;			/* bytes used in b, root label included */
	uint8_t b[DNS_MAXNAME];
};

/* "svc.ns.svc.cluster.local" (a trailing dot is allowed) to wire form;
 * -1 for an empty label, a label over 63 bytes, a name over 255 bytes, or
 * a byte outside 0x21..0x7e. */
int dns_name_from_text(struct dns_name *n, const char *text);
/* Dotted text, without the trailing dot ("." for the root); bytes other
 * than letters, digits, '-' and '_' as \DDD. Truncated to fit cap. */
#define DNS_TEXTMAX	(4 * DNS_MAXNAME + 1)
void dns_name_to_text(const struct dns_name *n, char *out, size_t cap);
bool dns_name_eq(const struct dns_name *a, const struct dns_name *b);

/* A recursive query (RD set) for QNAME/QTYPE/IN, with an EDNS(0) OPT
 * record when edns. Returns the length, or 0 when cap is too small. */
size_t dns_build_query(uint8_t *buf, size_t cap, uint16_t id,
    const struct dns_name *qname, uint16_t qtype, bool edns);

enum dns_section { DNS_S_AN = 0, DNS_S_NS, DNS_S_AR };

struct dns_msg {
	const uint8_t *pkt;
	size_t len;
	uint8_t rcode;
	bool tc;			/* truncated: ask again over TCP */
	uint16_t count[3];		/* records per section */
	size_t off[3];			/* where each section starts */
};

/* dns_parse() results */
#define DNS_OK		0
#define DNS_EMISMATCH	1	/* not an answer to our question: ignore it */
#define DNS_EMALFORMED	2	/* an answer to our question, but broken */

/* Checks that PKT answers ID/QNAME/QTYPE (QR set, opcode 0, the question
 * echoed; a response without a question is accepted only with an error
 * RCODE) and that every record in it is well formed: names decode, A is
 * 4 bytes, AAAA 16, CNAME and SRV rdata hold a name. On DNS_OK, m
 * describes PKT, which must outlive it. A truncated (TC) message is only
 * checked up to its question. */
int dns_parse(struct dns_msg *m, const uint8_t *pkt, size_t len, uint16_t id,
    const struct dns_name *qname, uint16_t qtype);

struct dns_rr {
	struct dns_name name;
	uint16_t type, class;
	uint32_t ttl;			/* a TTL with the top bit set reads as 0 */
	uint16_t rdlen;
	size_t rdoff;			/* rdata at m->pkt + rdoff */
};

struct dns_iter {
	const struct dns_msg *m;
	size_t off;
	unsigned left;
};

void dns_iter_init(struct dns_iter *it, const struct dns_msg *m, enum dns_section s);
bool dns_iter_next(struct dns_iter *it, struct dns_rr *rr);

/* The name in a CNAME's rdata. */
int dns_rr_cname(const struct dns_msg *m, const struct dns_rr *rr, struct dns_name *out);
/* An SRV's fields. */
int dns_rr_srv(const struct dns_msg *m, const struct dns_rr *rr, uint16_t *prio,
    uint16_t *weight, uint16_t *port, struct dns_name *target);

/* Follows the CNAME chain from NAME (at most 8 links) through the answer
 * and additional sections: *out gets where it ends; *ttl is lowered to
 * the smallest CNAME TTL on the way. */
void dns_chase(const struct dns_msg *m, const struct dns_name *name,
    struct dns_name *out, uint32_t *ttl);
/* An empty answer's TTL (RFC 2308): min(TTL, MINIMUM) of the SOA in the
 * authority section; UINT32_MAX without one. */
uint32_t dns_negative_ttl(const struct dns_msg *m);

#endif
