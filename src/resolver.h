/*
 * Asynchronous DNS for endpoint names and srv: (SPEC §3, §6): c-ares
 * (libc-ares) driven by events on one event_base (its sockets and its
 * timeout become libevent events); it never blocks the loop. Not
 * thread-safe: use a resolver from the thread that runs its base. Call
 * resolver_global_init() once before the first resolver_new().
 *
 * Names are used as written: ares_query(), never ares_search() or
 * ares_gethostbyname(), so no search domains, no ndots, no /etc/hosts
 * (only "localhost" and names under .localhost, which are 127.0.0.1).
 * Configs should therefore use fully qualified names
 * (svc.ns.svc.cluster.local, not svc). IP literals are answered without
 * a query. Every callback runs from the event loop, never from inside
 * resolver_lookup*() nor from inside c-ares.
 *
 * Each question goes to the first nameserver; after a timeout, a
 * SERVFAIL/REFUSED/NOTIMP or a refused connection c-ares asks the next
 * one. That is one round; a question that failed a round (or got a
 * broken answer) is asked once more, from the first nameserver again, so
 * every try waits the same timeout (c-ares 1.18 would double it on its
 * own second round). NXDOMAIN is final. Truncated answers are asked
 * again over TCP. c-ares checks answers against the question (ID, name,
 * type, class, server address) and ignores the others.
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
#define RESOLVER_ESERVFAIL	3	/* SERVFAIL, REFUSED, NOTIMP, FORMERR,
					 * port unreachable: no usable answer */
#define RESOLVER_EMALFORMED	4	/* answers were broken */
#define RESOLVER_ENAME		5	/* not a valid DNS name */
#define RESOLVER_ESYSTEM	6	/* socket errors, out of memory */

/* ttl when no record gave one (IP literals, localhost, an answer
 * without addresses or SOA, a failure other than NXDOMAIN): refresh on
 * the configured schedule. */
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
 * the smallest TTL of what the answer was made of: the A/AAAA records
 * used, the SRV records, CNAMEs on the way, and the negative TTL (RFC
 * 2308: min(SOA TTL, SOA MINIMUM)) of each question answered with no such
 * records or name (src/dns_ttl.c reads what c-ares 1.18's parsers drop);
 * RESOLVER_TTL_NONE when none. err != 0: the lookup failed; errtext says
 * why ("timeout", "NXDOMAIN"...); addrs is NULL, n 0, and ttl the
 * negative TTL of an NXDOMAIN whose SOA gave one, else
 * RESOLVER_TTL_NONE. The addresses are only valid during the call. The
 * query is gone when the callback runs: do not cancel it. The callback
 * may start lookups, cancel other ones, and free the resolver.
 */
typedef void (*resolver_cb)(void *arg, int err, const char *errtext,
    const struct resolved_addr *addrs, size_t n, uint32_t ttl);

struct resolver;
struct resolver_query;

/* ares_library_init(), once per process, before any resolver_new(). */
int resolver_global_init(void);
void resolver_global_cleanup(void);

/* NAMESERVERS (IP:port literals; others, and IPv6 ones with a %scope,
 * which c-ares 1.18 cannot use, are skipped with a warning) from the
 * config, or with n == 0 the nameserver lines of /etc/resolv.conf (read
 * once, here), falling back to 127.0.0.1:53. NULL on failure. */
struct resolver *resolver_new(struct event_base *base, const struct conf_addr *nameservers,
    size_t n);
/* Cancels pending lookups without calling their callbacks. */
void resolver_free(struct resolver *r);
/* Per-try timeout, milliseconds (default 1000). Before the first lookup:
 * it rebuilds the c-ares channel (ignored, with a warning, while
 * questions are in flight). */
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
 * lowest priority present is used (at most 64 targets); each target's
 * addresses come from A/AAAA lookups (c-ares 1.18 does not expose the
 * additional section), each address with the record's port and weight.
 * A target "." (service decidedly not available), one that does not
 * exist, or one that is not a usable name adds nothing; a target whose
 * lookup fails otherwise (timeout, SERVFAIL) fails the whole lookup, so
 * that the caller keeps its last good set.
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
