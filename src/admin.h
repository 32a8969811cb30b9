/*
 * The admin listener (SPEC §8), served on the main thread's loop:
 * /, /healthz, /ready, /metrics, /services, /history, /config; GET and
 * HEAD only, and only for a Host it answers for (config_admin_host_ok:
 * 421 else).
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include <stdint.h>

#include <event2/event.h>

struct server;
struct admin;
struct conf_listener;

struct admin *admin_start(struct server *srv, struct event_base *base, int fd);
/* A reload: the listener's cap comes from CONF from now on. */
void admin_reconf(struct admin *a, const struct conf_listener *conf);
void admin_free(struct admin *a);
uint32_t admin_connections(const struct admin *a);

#endif
