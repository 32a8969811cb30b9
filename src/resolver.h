/*
 * Asynchronous DNS for endpoint names and srv: (SPEC §3, §6): a small
 * stub resolver over UDP (TCP when an answer is truncated), driven by
 * events on one event_base; it never blocks the loop. Not thread-safe:
 * use a resolver from the thread that runs its base.
 *
 * Names are used as written: no search domains, no ndots, no /etc/hosts
 * (only "localhost" and names under .localhost, which are 127.0.0.1).
 * Configs should therefore use fully qualified names
 * (svc.ns.svc.cluster.local, not svc). IP literals are answered without
 * a query. Every callback runs from the event loop, never from inside
 * resolver_lookup*().
 *
 * Each question goes to the first nameserver; after a timeout (1s), a
 * SERVFAIL/REFUSED or a broken answer it goes to the next one, for two
 * rounds over the list. NXDOMAIN is final. Answers that do not match the
 * question (ID, question section) are ignored, as spoofing attempts;
 * query IDs come from the OpenSSL CSPRNG and every query uses a fresh
 * socket, so a fresh random source port.
 */
#ifndef FERRY_RESOLVER_H
#define FERRY_RESOLVER_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"

/* err values (0 = success) */
#define RESOLVER_ETIMEOUT	1	/* no answer from any nameserver */
#define RESOLVER_ENXDOMAIN	2	/* the name does not exist */
#define RESOLVER_ESERVFAIL	3	/* SERVFAIL, REFUSED, NOTIMP, other RCODEs */
#define RESOLVER_EMALFORMED	4	/* answers were broken */
#define RESOLVER_ENAME		5	/* not a valid DNS name */
#define RESOLVER_ESYSTEM	6	/* socket errors, out of memory */

/* ttl when no record gave one (IP literals, localhost, an empty answer
 * without SOA): refresh on the configured schedule. */
#define RESOLVER_TTL_NONE	UINT32_MAX

#define RESOLVER_MAX_ADDRS	256	/* per lookup; the rest are dropped */
#define RESOLVER_MAX_NS		8

struct resolved_addr {
	struct sockaddr_storage sa;	/* with the port set */
	socklen_t salen;
	uint16_t weight;		/* SRV weight; 1 for A/AAAA */
	char text[80];			/* "10.0.0.5:5000" or "[fd00::1]:5000" */
};

/*
 * err == 0: N addresses (N may be 0: the name exists without addresses;
 * a caller keeping the last good set decides what 0 means to it), ttl =
 * the smallest TTL of the records used, including CNAMEs on the way and
 * the SOA of an empty answer (RESOLVER_TTL_NONE when none). err != 0: the
 * lookup failed; errtext says why ("timeout", "NXDOMAIN"...); addrs is
 * NULL, n and ttl 0. The addresses are only valid during the call. The
 * query is gone when the callback runs: do not cancel it. The callback
 * may start lookups, cancel other ones, and free the resolver.
 */
typedef void (*resolver_cb)(void *arg, int err, const char *errtext,
    const struct resolved_addr *addrs, size_t n, uint32_t ttl);

struct resolver;
struct resolver_query;

/* NAMESERVERS (IP:port literals; others are skipped with a warning) from
 * the config, or with n == 0 the nameserver lines of /etc/resolv.conf
 * (read once, here), falling back to 127.0.0.1:53. NULL on failure. */
struct resolver *resolver_new(struct event_base *base, const struct conf_addr *nameservers,
    size_t n);
/* Cancels pending lookups without calling their callbacks. */
void resolver_free(struct resolver *r);
/* Per-attempt timeout, milliseconds (default 1000). */
void resolver_set_timeout(struct resolver *r, int64_t ms);

/*
 * A and AAAA of NAME, both asked at once; results merged, A first, each
 * address with PORT, weight 1. When one of the two fails and the other
 * gives addresses, those are the answer; when one fails and the other
 * gives none, the lookup fails. NULL only when out of memory.
 */
struct resolver_query *resolver_lookup(struct resolver *r, const char *name, uint16_t port,
    resolver_cb cb, void *arg);
/*
 * SRV records of NAME (_https._tcp.svc.ns.svc.cluster.local): only the
 * lowest priority present is used; each target's addresses come from the
 * additional section when it has any for it, else from A/AAAA lookups;
 * each address gets the record's port and weight. A target "." (service
 * decidedly not available) or one that does not exist adds nothing; a
 * target whose lookup fails otherwise (timeout, SERVFAIL) fails the whole
 * lookup, so that the caller keeps its last good set.
 */
struct resolver_query *resolver_lookup_srv(struct resolver *r, const char *name,
    resolver_cb cb, void *arg);
/* The callback will not be called. */
void resolver_cancel(struct resolver_query *q);

/* Internal, for tests: the nameserver lines of a resolv.conf (port 53;
 * IPv6 with %scope accepted); returns how many were stored (at most max),
 * -1 when the file cannot be read. */
int resolver_read_resolv_conf(const char *path, struct sockaddr_storage *out,
    socklen_t *lens, size_t max);
/* Internal, for tests: "10.0.0.5:5000" / "[fd00::1]:5000". */
void resolver_format_addr(const struct sockaddr *sa, char *out, size_t cap);

#endif
