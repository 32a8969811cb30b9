/*
 * Outbound routing (SPEC §4): a service's own port, then the authority of
 * an absolute-form target, then Host. Pure.
 */
#ifndef FERRY_ROUTE_H
#define FERRY_ROUTE_H

#include <stddef.h>

#include "config.h"
#include "http1.h"

/* Index of the service named by NAME (port stripped, case-insensitive),
 * or -1. */
long route_by_host(const struct config *conf, const char *name, size_t len);

/* Index of the service for a request on the outbound listener, or -1.
 * MSG is the first byte of the message; H its classified head. */
long route_request(const struct config *conf, const char *msg, const struct http_head *h);

#endif
