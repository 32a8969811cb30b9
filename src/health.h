/*
 * Active health checks (SPEC §6), run on one event loop (the main
 * thread's): every `interval` a fresh connection to each watched endpoint,
 * with the service's TLS settings, sends
 *	GET <path> HTTP/1.1, Host <upstream_host>, x-service-auth when auth
 *	is set, Connection: close
 * and a 2xx status line within `timeout` (connect, TLS and head) is a
 * success; anything else is a failure. A service that speaks HTTP/2
 * (SPEC §12: protocol h2, h2c without TLS; auto when ALPN picks h2) gets
 * the same GET as one HTTP/2 stream (health_h2.c) with the same rules.
 * Each check has its own connection, never a pooled one: a pooled
 * session's state would hide an endpoint that no longer takes new ones. The result moves the process-wide
 * ep->healthy flag the workers read: `unhealthy` failures in a row mark a
 * healthy endpoint down, `healthy` successes in a row bring it back;
 * ep->hc_streak counts the results against the current state.
 * First checks are spread at random over the interval; a check never
 * overlaps the next one of the same endpoint.
 */
#ifndef FERRY_HEALTH_H
#define FERRY_HEALTH_H

#include <sys/socket.h>

#include <event2/event.h>

#include "config.h"
#include "runtime.h"

struct health;

struct health *health_new(struct event_base *base);
/* Stops every check (in flight ones too) and frees all; endpoints are not
 * touched, so the runtime may already be gone. */
void health_free(struct health *h);

/*
 * Checks endpoint EP (address SA, ADDR as text for the logs) of service
 * SVC. HOST is the endpoint's configured host (a name or an IP literal,
 * as ep_spec.host): when SVC has no server_name, TLS sends it as SNI (names
 * only) and verifies it, as the pool does; NULL takes the host of ADDR.
 * SVC stays valid until health_unwatch()/health_free() or the next watch
 * of EP, which replaces this one (the state in EP is kept; a check in
 * flight is dropped uncounted unless nothing changed). Watching with
 * health_check disabled is an unwatch. Out of memory: logged, not watched.
 */
void health_watch(struct health *h, const struct conf_service *svc,
    struct ep_runtime *ep, const struct sockaddr *sa, socklen_t salen,
    const char *addr, const char *host);
/* Stops checking EP and marks it healthy again (with no checks there is
 * nothing to hold against it). Call it while EP is still allocated. */
void health_unwatch(struct health *h, struct ep_runtime *ep);

#endif
