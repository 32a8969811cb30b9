/*
 * The admin listener (SPEC §8), served on the main thread's loop:
 * /healthz, /ready (and, as they land, /metrics, /services, /config, /).
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include <stdint.h>

#include <event2/event.h>

struct server;
struct admin;

struct admin *admin_start(struct server *srv, struct event_base *base, int fd);
void admin_free(struct admin *a);
uint32_t admin_connections(const struct admin *a);

#endif
