/*
 * The HTTP/2 downstream codec (h2_down.c, on nghttp2): a connection that
 * began with the h2c preface on the outbound listener or a service's port,
 * or chose "h2" by ALPN on the inbound one. Each stream is an exchange.
 */
#ifndef FERRY_H2_DOWN_H
#define FERRY_H2_DOWN_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conn.h"
#include "worker.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

/* Takes over C, accepted on LIS and counted there and in the worker, with
 * the bytes already read in IN (moved out). PEER is the address text,
 * PEER_ID the verified inbound identity or NULL. False: C was closed. */
bool h2_down_adopt(struct listener *lis, struct conn *c, const char *peer,
    const char *peer_id, struct buf *in);
/* Drain: every connection gets a GOAWAY; those without streams close. */
void h2_down_close_idle(struct worker *w);
/* A reload changed the inbound client_ca: LIS's connections verified
 * under the old one get the final GOAWAY now (h1_down.c says why). */
void h2_down_trust_reconf(struct listener *lis);
/* Shutdown: every connection closes now, its streams cut. */
void h2_down_close_all(struct worker *w);

#endif
