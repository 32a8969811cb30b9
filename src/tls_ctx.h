/*
 * OpenSSL contexts built at config load time. They are immutable once built
 * and shared by every worker (SSL_CTX is reference counted and safe to use
 * from several threads for SSL_new). Errors name the file and the cause.
 */
#ifndef FERRY_TLS_CTX_H
#define FERRY_TLS_CTX_H

#include <stddef.h>
#include <time.h>
#include <openssl/ssl.h>

#include "config.h"

/* Client context for a service: CA verification, client certificate and key
 * (checked to match), min_version, session cache in client mode. NULL with
 * err filled ("cert /path: no such file", "key /path does not match cert"). */
SSL_CTX *tls_client_ctx_new(const struct conf_tls_client *t, char *err, size_t errlen);

/* Server context for the inbound listener: cert/key (checked to match) and,
 * when client_ca is given, required and verified client certificates;
 * TLS 1.2 and 1.3, ECDHE and AEAD suites only (also for clients). */
SSL_CTX *tls_server_ctx_new(const char *cert, const char *key,
    const char *client_ca, char *err, size_t errlen);

/* Which file a build error is about, so the loader can point at its key. */
enum tls_what {
	TLS_ERR_OTHER = 0,
	TLS_ERR_CA,		/* ca, or client_ca of a server context */
	TLS_ERR_CERT,
	TLS_ERR_KEY,		/* unreadable key, or one that does not match */
};

/* The same as the two above, also saying which file failed. */
SSL_CTX *tls_client_ctx_build(const struct conf_tls_client *t,
    enum tls_what *what, char *err, size_t errlen);
SSL_CTX *tls_server_ctx_build(const char *cert, const char *key,
    const char *client_ca, char *const *allowed_peers, size_t n_allowed_peers,
    enum tls_what *what, char *err, size_t errlen);

/*
 * Inbound session resumption. A server context's sessions are bound to its
 * trust (a digest of the client_ca file's bytes and allowed_peers): a
 * session or ticket made under other trust is not resumed (OpenSSL
 * compares the session-id context) and cannot even be decrypted (its
 * ticket keys are those of its trust). Only tickets resume (no server-side
 * session cache), and a ticket resumes only while tls_session_refusal()
 * says nothing against it; otherwise the peer gets a full handshake, with
 * chain verification.
 */
#define TLS_SESSION_MAX_AGE 3600	/* seconds since the verifying handshake */

/* Why SS must not be resumed at NOW (too old, peer certificate expired,
 * no start time or no peer certificate), or NULL. */
const char *tls_session_refusal(const SSL_SESSION *ss, time_t now);

/* Whether two server contexts verify peers against the same client_ca
 * bytes (so that a peer verified under A stands under B). A reload that
 * changes them leaves connections verified under the old bytes, which
 * carry no more requests (proxy.c, admit_inbound). */
bool tls_same_client_ca(SSL_CTX *a, SSL_CTX *b);

/* Whether the peer certificate of the server connection SSL (and the
 * chain it sent, when the handshake was a full one) verifies against
 * CTX's client_ca now, as a handshake with CTX would. For what cannot
 * move to a new connection (an inbound tunnel): it ends only when a
 * reload's client_ca no longer trusts its peer. A resumed session kept
 * no intermediates: a peer that needs them is not trusted here. */
bool tls_peer_trusted(SSL *ssl, SSL_CTX *ctx);

/* The clock of the checks above; tests move it. */
extern time_t (*tls_now)(void);

/* Seconds until the certificate in PATH expires (negative when expired);
 * -1 with err on failure to read. Used for certificate_expiry_seconds. */
int tls_cert_expiry(const char *path, long long *seconds, char *err, size_t errlen);

#endif
