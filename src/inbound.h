/*
 * The inbound side (SPEC §1, §5): who the peer is (its certificate's
 * identity) and whether it may call (allowed_peers, the service key).
 */
#ifndef FERRY_INBOUND_H
#define FERRY_INBOUND_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

#define PEER_ID_MAX 256
#define KEY_MAC_LEN 32

/* The peer's identity: its first URI SAN, else its first DNS SAN. False
 * when the certificate has neither (or there is none). */
bool inbound_peer_identity(SSL *ssl, char *out, size_t outlen);

bool inbound_peer_allowed(const struct conf_inbound *in, const char *identity);

/* Keys are compared as HMACs under a per-process random key, so every
 * comparison has the same length and runs in constant time. */
struct key_macs {
	unsigned char (*mac)[KEY_MAC_LEN];
	size_t n;
};

int inbound_keys_init(struct key_macs *k, const struct conf_inbound *in);
void inbound_keys_free(struct key_macs *k);
/* True when KEY matches one of the configured keys; compares all of them. */
bool inbound_key_ok(const struct key_macs *k, const char *key, size_t len);

#endif
