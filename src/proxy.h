/*
 * The proxy session: a downstream connection, the request it carries and
 * the upstream attempt serving it, torn down by one function with a
 * reason.
 */
#ifndef FERRY_PROXY_H
#define FERRY_PROXY_H

#include <sys/socket.h>

#include "worker.h"

/* Takes ownership of FD, accepted on LIS. */
void proxy_accept(struct listener *lis, int fd, const struct sockaddr *peer, socklen_t len);

/* L's config changed (a reload): its idle connections move to the new
 * one, and their deadlines with it. */
void proxy_listener_reconf(struct listener *l);
/* Closes the connections of W that wait between requests (drain). */
void proxy_close_idle(struct worker *w);
/* Closes every downstream connection of W (shutdown). */
void proxy_close_all(struct worker *w);

#endif
