/*
 * The TTLs of a raw DNS answer that c-ares 1.18's parsers do not show:
 * those of SRV records (ares_parse_srv_reply() drops them) and the
 * negative TTL of an NXDOMAIN or NODATA answer (RFC 2308 §5: the smaller
 * of the authority SOA's own TTL and its MINIMUM field). Pure: no DNS
 * codec of its own, names are skipped with ares_expand_name() (which
 * follows compression pointers within bounds and stops loops), and only
 * the fixed fields of each record are read, every length checked against
 * the message. Safe on hostile input.
 */
#ifndef FERRY_DNS_TTL_H
#define FERRY_DNS_TTL_H

#include <stdint.h>

#define DNS_TTL_NONE	UINT32_MAX	/* no record gave one */

struct dns_ttls {
	/* The smallest TTL of the answer section's class IN records of the
	 * type asked for and of its CNAMEs (an alias bounds what it leads
	 * to, as c-ares does for A/AAAA). */
	uint32_t answer;
	/* min(SOA TTL, SOA MINIMUM) over the authority section's class IN
	 * SOA records. */
	uint32_t negative;
};

/*
 * Walks the header, question, answer and authority sections of the
 * message ABUF (ALEN bytes; the additional section is not read) for
 * records of TYPE. A field stays DNS_TTL_NONE when no record gave it or
 * when its section, or one before it, is broken; a TTL with the top bit
 * set counts as 0 (RFC 2181 §8). Returns 0 when every section walked was
 * well formed, -1 when one was not (the fields found before stay set).
 */
int dns_ttls(const unsigned char *abuf, int alen, int type, struct dns_ttls *out);

#endif
