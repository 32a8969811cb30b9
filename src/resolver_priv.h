/*
 * Inside the resolver: address sets and the helpers around them
 * (src/resolver_addr.c), shared by src/resolver.c and its tests.
 */
#ifndef FERRY_RESOLVER_PRIV_H
#define FERRY_RESOLVER_PRIV_H

#include <stdbool.h>

#include "resolver.h"

/* Addresses without duplicates, at most RESOLVER_MAX_ADDRS. */
struct addrset {
	struct resolved_addr *a;
	size_t n, cap;
	uint32_t ttl;		/* the smallest TTL of the records added */
};

/* -1 only when out of memory; a duplicate or one too many is dropped. */
int addrset_add(struct addrset *s, const struct sockaddr_storage *ss, socklen_t len,
    uint16_t weight);

/* An IP literal (IPv6 with or without brackets, with an optional %scope)
 * with PORT; -1 when HOST is not one. */
int resolver_parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss,
    socklen_t *len);
/* "localhost" or a name under .localhost (RFC 6761), with or without the
 * trailing dot, in any case. */
bool resolver_is_localhost(const char *name);

#endif
