/*
 * Listening sockets: bind (with a probe that fails when any process holds
 * the address), accept with the connection cap, and a pause instead of a
 * spin when file descriptors run out.
 */
#ifndef FERRY_LISTENER_H
#define FERRY_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "worker.h"

/* Binds ADDR without SO_REUSEPORT and closes it again: fails when any
 * process holds the address. */
int listener_probe(const struct conf_addr *addr, char *err, size_t errlen);
/* A listening socket; REUSEPORT lets every worker have its own. */
int listener_socket(const struct conf_addr *addr, bool reuseport, char *err, size_t errlen);

typedef void (*listener_accept_fn)(struct listener *l, int fd,
    const struct sockaddr *peer, socklen_t len);

/* Accepts on FD into FN (with ARG in l->arg) within CONF's
 * max_connections; CONF may be repointed on a reload. */
struct listener *listener_start(struct event_base *base,
    const struct conf_listener *conf, int fd, listener_accept_fn fn, void *arg);
/* A proxy listener of worker W: connections go to proxy_accept(). */
struct listener *listener_new(struct worker *w, enum listener_kind kind,
    const struct conf_listener *conf, size_t service, int fd);
/* Closes FD without taking what waits in the accept queue, and frees. */
void listener_free(struct listener *l);
/* Stop accepting (drain); what waits in the accept queue is served first. */
void listener_close(struct listener *l);
/* L serves connections, or has some handed to a sibling: a closed one
 * stays until neither is left. */
bool listener_in_use(struct listener *l);
/* L's accept counted a connection it serves. */
void listener_client_add(struct listener *l);
/* A connection of L ended: accept again if the cap had paused it. */
void listener_client_gone(struct listener *l);
/* After a reload: max_connections may have grown. */
void listener_recheck(struct listener *l);

#endif
