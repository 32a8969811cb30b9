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

/* The peer's identity: its first URI SAN, else its first DNS SAN. 1 when
 * found, 0 when the certificate has neither (or there is none), -1 when
 * there was no memory to decode its names. */
int inbound_peer_identity(SSL *ssl, char *out, size_t outlen);

bool inbound_peer_allowed(const struct conf_inbound *in, const char *identity);

/* Keys are compared as HMACs under a per-process random key, so every
 * comparison has the same length and runs in constant time, and the
 * configured keys need not be kept at all. */
struct key_macs {
	unsigned char (*mac)[KEY_MAC_LEN];
	size_t n;
};

/* The HMAC of KEY, as the loader keeps it. The first call draws the
 * process's HMAC key: it comes from the main thread, loading the config,
 * before any worker compares. -1 when no random bytes could be drawn. */
int inbound_key_mac(const char *key, size_t len, unsigned char out[KEY_MAC_LEN]);

/* A worker's copy of the config's MACs. */
int inbound_keys_init(struct key_macs *k, const struct conf_inbound *in);
void inbound_keys_free(struct key_macs *k);
/* 1 when KEY matches one of the configured keys (compares all of them),
 * 0 when not, -1 when there was no memory to compute its HMAC. MAC, when
 * not NULL, gets KEY's HMAC (to ask inbound_mac_known of another
 * generation's keys later). */
int inbound_key_ok(const struct key_macs *k, const char *key, size_t len,
    unsigned char mac[KEY_MAC_LEN]);
bool inbound_mac_known(const struct key_macs *k, const unsigned char mac[KEY_MAC_LEN]);

#endif
