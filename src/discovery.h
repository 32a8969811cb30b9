/*
 * Service discovery (SPEC §3 endpoints/srv/dns_refresh, §6 DNS), once per
 * process on the main thread: every name is resolved asynchronously and
 * re-resolved every dns_refresh or at its TTL, whichever is sooner (not
 * more often than once a second); SRV records give host, port and weight.
 * Each change of a service's address set is published to the workers;
 * a failed lookup keeps the last good set. Health checks follow the set.
 */
#ifndef FERRY_DISCOVERY_H
#define FERRY_DISCOVERY_H

#include <stdbool.h>

#include <event2/event.h>

#include "config.h"
#include "health.h"
#include "resolver.h"
#include "runtime.h"
#include "worker.h"

struct discovery;

/* Called with every new set; the set is only valid during the call. False:
 * the set reached no worker (out of memory), so the next answer publishes
 * it again even when it is the same. */
typedef bool (*discovery_publish_fn)(void *arg, const struct ep_set *set);

struct discovery *discovery_new(struct event_base *base, struct runtime *rt,
    struct resolver *res, struct health *health, discovery_publish_fn publish, void *arg);
/* Publishes the sets known at once (IP endpoints, and on a reload what
 * PREV knew of the same names) before returning, then starts the lookups.
 * CONF must outlive the discovery. */
int discovery_start(struct discovery *d, const struct config *conf,
    const struct discovery *prev);
/* Every name was looked up once (answered or failed). */
bool discovery_ready(const struct discovery *d);
/* Stops the lookups; health checks of endpoints SUCCESSOR (may be NULL)
 * does not watch stop too. */
void discovery_free(struct discovery *d, const struct discovery *successor);
/* Health checks follow D's sets and config again, after a successor that
 * had taken them over was freed unused (a failed reload). */
void discovery_rewatch(struct discovery *d);
/* The endpoint set last published for SERVICE (main thread). */
size_t discovery_current(const struct discovery *d, size_t service,
    const struct ep_spec **specs, struct outlier_group **outliers);

#endif
