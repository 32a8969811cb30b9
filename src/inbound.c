#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "inbound.h"

static unsigned char mac_key[32];
static bool mac_key_ready;

static bool
copy_asn1(const ASN1_STRING *s, char *out, size_t outlen)
{
	int len = ASN1_STRING_length(s);

	if (len <= 0 || (size_t)len >= outlen)
		return false;
	memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
	out[len] = '\0';
	/* an identity with a NUL or control byte could smuggle a header */
	for (int i = 0; i < len; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			return false;
	return true;
}

int
inbound_peer_identity(SSL *ssl, char *out, size_t outlen)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	const ASN1_STRING *uri = NULL, *dns = NULL;
	GENERAL_NAMES *names;
	bool ok;

	if (cert == NULL)
		return 0;
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	/* the chain's verification decoded it once: present and not
	 * decoded now is memory that ran out */
	if (names == NULL && X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) >= 0)
		return -1;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && uri == NULL; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);

		if (gn->type == GEN_URI)
			uri = gn->d.uniformResourceIdentifier;
		else if (gn->type == GEN_DNS && dns == NULL)
			dns = gn->d.dNSName;
	}
	/* the first URI SAN is the identity even when unusable (empty, too
	 * long, a control byte): falling back to a DNS SAN would make the
	 * peer someone its certificate does not say it is first */
	ok = uri ? copy_asn1(uri, out, outlen) : dns ? copy_asn1(dns, out, outlen) : false;
	GENERAL_NAMES_free(names);
	return ok ? 1 : 0;
}

bool
inbound_peer_allowed(const struct conf_inbound *in, const char *identity)
{
	if (in->n_allowed_peers == 0)
		return true;
	for (size_t i = 0; i < in->n_allowed_peers; i++)
		if (strcmp(in->allowed_peers[i], identity) == 0)
			return true;
	return false;
}

int
inbound_key_mac(const char *key, size_t len, unsigned char out[KEY_MAC_LEN])
{
	unsigned int outlen = KEY_MAC_LEN;

	if (!mac_key_ready) {
		if (RAND_bytes(mac_key, sizeof(mac_key)) != 1)
			return -1;
		mac_key_ready = true;
	}
	if (HMAC(EVP_sha256(), mac_key, sizeof(mac_key), (const unsigned char *)key, len,
	    out, &outlen) == NULL)
		return -1;
	return 0;
}

int
inbound_keys_init(struct key_macs *k, const struct conf_inbound *in)
{
	memset(k, 0, sizeof(*k));
	if (in->n_auth_keys == 0)
		return 0;
	if ((k->mac = calloc(in->n_auth_keys, KEY_MAC_LEN)) == NULL)
		return -1;
	memcpy(k->mac, in->auth_key_macs, in->n_auth_keys * KEY_MAC_LEN);
	k->n = in->n_auth_keys;
	return 0;
}

void
inbound_keys_free(struct key_macs *k)
{
	if (k->mac)
		OPENSSL_cleanse(k->mac, k->n * KEY_MAC_LEN);
	free(k->mac);
	k->mac = NULL;
	k->n = 0;
}

bool
inbound_mac_known(const struct key_macs *k, const unsigned char mac[KEY_MAC_LEN])
{
	int match = 0;

	/* every key, every time: the time taken says nothing of which matched */
	for (size_t i = 0; i < k->n; i++)
		match |= CRYPTO_memcmp(mac, k->mac[i], KEY_MAC_LEN) == 0;
	return match != 0;
}

int
inbound_key_ok(const struct key_macs *k, const char *key, size_t len,
    unsigned char mac[KEY_MAC_LEN])
{
	unsigned char own[KEY_MAC_LEN];
	unsigned char *m = mac ? mac : own;
	int match;

	/* the HMAC key was drawn when the configured keys were MACed */
	if (k->n == 0)
		return 0;
	if (inbound_key_mac(key, len, m) != 0)
		return -1;
	match = inbound_mac_known(k, m) ? 1 : 0;
	OPENSSL_cleanse(own, sizeof(own));
	return match;
}
