/*
 * OpenSSL contexts, built once per config snapshot on the main thread.
 * Files are opened by hand before OpenSSL sees them: OpenSSL 3 gives no
 * reason string for system errors, and "No such file or directory" is what
 * an operator needs to read.
 */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/rand.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls_ctx.h"

/* Encrypted keys are refused instead of prompting on the terminal. */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* The reason of the oldest OpenSSL error, the root cause ("no start
 * line" rather than the "PEM lib" stacked on it); the queue is emptied. */
static const char *
ssl_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	ERR_clear_error();
	return r ? r : "unknown OpenSSL error";
}

static int fail(enum tls_what *, enum tls_what, char *, size_t, const char *, ...)
    __attribute__((format(printf, 5, 6)));

static int
fail(enum tls_what *what, enum tls_what w, char *err, size_t errlen,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	*what = w;
	return -1;
}

/* A readable regular file, or an error naming LABEL and PATH. */
static int
check_file(const char *label, const char *path, enum tls_what w,
    enum tls_what *what, char *err, size_t errlen)
{
	struct stat st;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return fail(what, w, err, errlen, "cannot load %s %s: %s", label, path,
		    strerror(errno));
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f);
		return fail(what, w, err, errlen, "cannot load %s %s: Is a directory",
		    label, path);
	}
	fclose(f);
	return 0;
}

static int
load_ca(SSL_CTX *ctx, const char *label, const char *ca, enum tls_what *what,
    char *err, size_t errlen)
{
	if (check_file(label, ca, TLS_ERR_CA, what, err, errlen) != 0)
		return -1;
	if (SSL_CTX_load_verify_file(ctx, ca) != 1)
		return fail(what, TLS_ERR_CA, err, errlen, "cannot load %s %s: %s",
		    label, ca, ssl_reason());
	return 0;
}

static EVP_PKEY *
read_key(const char *path)
{
	EVP_PKEY *pkey;
	BIO *bio;

	if ((bio = BIO_new_file(path, "r")) == NULL)
		return NULL;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
	BIO_free(bio);
	return pkey;
}

/* Certificate chain and private key, checked to belong together. */
static int
load_pair(SSL_CTX *ctx, const char *cert, const char *key, enum tls_what *what,
    char *err, size_t errlen)
{
	EVP_PKEY *pkey;
	int ok;

	if (check_file("certificate", cert, TLS_ERR_CERT, what, err, errlen) != 0)
		return -1;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return fail(what, TLS_ERR_CERT, err, errlen,
		    "cannot load certificate %s: %s", cert, ssl_reason());
	if (check_file("private key", key, TLS_ERR_KEY, what, err, errlen) != 0)
		return -1;
	if ((pkey = read_key(key)) == NULL)
		/* OpenSSL 3's decoders only say "unsupported" */
		return fail(what, TLS_ERR_KEY, err, errlen,
		    "cannot load private key %s: not a PEM private key (%s)", key,
		    ssl_reason());
	ok = SSL_CTX_use_PrivateKey(ctx, pkey) == 1 &&
	    SSL_CTX_check_private_key(ctx) == 1;
	EVP_PKEY_free(pkey);
	if (!ok) {
		ERR_clear_error();
		return fail(what, TLS_ERR_KEY, err, errlen,
		    "private key %s does not match certificate %s", key, cert);
	}
	return 0;
}

/* What every ferry context shares: big reads, writes that may move. */
static SSL_CTX *
ctx_new(const SSL_METHOD *method, int min_version, enum tls_what *what,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(method)) == NULL) {
		fail(what, TLS_ERR_OTHER, err, errlen, "SSL_CTX_new: %s", ssl_reason());
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) {
		fail(what, TLS_ERR_OTHER, err, errlen, "TLS minimum version: %s",
		    ssl_reason());
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_default_passwd_cb(ctx, no_password);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* renegotiation only costs CPU a peer can make us spend */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

SSL_CTX *
tls_client_ctx_build(const struct conf_tls_client *t, enum tls_what *what,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;

	*what = TLS_ERR_OTHER;
	ctx = ctx_new(TLS_client_method(),
	    t->min_version ? t->min_version : TLS1_2_VERSION, what, err, errlen);
	if (ctx == NULL)
		return NULL;
	if (t->ca == NULL) {
		fail(what, TLS_ERR_CA, err, errlen, "no CA file given");
		goto bad;
	}
	if (load_ca(ctx, "CA", t->ca, what, err, errlen) != 0)
		goto bad;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (t->cert != NULL && load_pair(ctx, t->cert, t->key, what, err, errlen) != 0)
		goto bad;
	/* the pool keeps sessions per endpoint itself */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	return ctx;
bad:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

SSL_CTX *
tls_client_ctx_new(const struct conf_tls_client *t, char *err, size_t errlen)
{
	enum tls_what what;

	return tls_client_ctx_build(t, &what, err, errlen);
}

static int
load_client_ca(SSL_CTX *ctx, const char *ca, enum tls_what *what, char *err,
    size_t errlen)
{
	STACK_OF(X509_NAME) *names;

	if (load_ca(ctx, "client CA", ca, what, err, errlen) != 0)
		return -1;
	if ((names = SSL_load_client_CA_file(ca)) == NULL)
		return fail(what, TLS_ERR_CA, err, errlen, "cannot load client CA %s: %s",
		    ca, ssl_reason());
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

/*
 * Session tickets for peers (inbound): one process-wide key ring, rotated
 * every hour; a ticket under the previous key still resumes (and is
 * renewed), so a key lives two hours at most. Handshakes only: a mutex is
 * fine here.
 */
#define TICKET_ROTATE_SECS 3600

struct ticket_key {
	unsigned char name[16], aes[32], hmac[32];
	time_t born;
	bool set;
};

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key ticket_cur, ticket_prev;

static int
ticket_key_new(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 ||
	    RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return -1;
	k->born = time(NULL);
	k->set = true;
	return 0;
}

/* Copies the key to use (ENC) or the one named NAME into OUT. 0: none. */
static int
ticket_key_get(bool enc, const unsigned char *name, struct ticket_key *out, bool *current)
{
	int found = 0;

	pthread_mutex_lock(&ticket_lock);
	if (!ticket_cur.set || time(NULL) - ticket_cur.born >= TICKET_ROTATE_SECS) {
		struct ticket_key next;

		if (ticket_key_new(&next) == 0) {
			ticket_prev = ticket_cur;
			ticket_cur = next;
		}
	}
	if (enc && ticket_cur.set) {
		*out = ticket_cur;
		*current = true;
		found = 1;
	} else if (!enc && ticket_cur.set && memcmp(name, ticket_cur.name, 16) == 0) {
		*out = ticket_cur;
		*current = true;
		found = 1;
	} else if (!enc && ticket_prev.set && memcmp(name, ticket_prev.name, 16) == 0) {
		*out = ticket_prev;
		*current = false;
		found = 1;
	}
	pthread_mutex_unlock(&ticket_lock);
	return found;
}

static int
ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
    EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_key k;
	bool current = false;
	OSSL_PARAM params[3];
	int r = 0;

	(void)ssl;
	if (!ticket_key_get(enc != 0, key_name, &k, &current))
		return 0;	/* unknown key: a full handshake, a fresh ticket */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (enc) {
		memcpy(key_name, k.name, 16);
		if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) == 1 &&
		    EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
		    EVP_MAC_CTX_set_params(hctx, params) == 1)
			r = 1;
	} else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
	    EVP_MAC_CTX_set_params(hctx, params) == 1) {
		/* 2: resume and issue a fresh ticket; TLS 1.3 tickets are
		 * single-use, so a peer without one pays a full handshake */
		r = 2;
		(void)current;
	}
	OPENSSL_cleanse(&k, sizeof(k));
	return r;
}

/* Peers speak HTTP/1.1 here (h2 joins when HTTP/2 lands). A client that
 * offers only other protocols gets no ALPN answer rather than a failure. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1";

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1,
	    in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_server_ctx_build(const char *cert, const char *key, const char *client_ca,
    enum tls_what *what, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "ferry";
	SSL_CTX *ctx;

	*what = TLS_ERR_OTHER;
	if ((ctx = ctx_new(TLS_server_method(), TLS1_2_VERSION, what, err, errlen)) == NULL)
		return NULL;
	if (load_pair(ctx, cert, key, what, err, errlen) != 0)
		goto bad;
	if (client_ca != NULL && load_client_ca(ctx, client_ca, what, err, errlen) != 0)
		goto bad;
	/* without it, resuming a session that had a client cert fails */
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
	return ctx;
bad:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

SSL_CTX *
tls_server_ctx_new(const char *cert, const char *key, const char *client_ca,
    char *err, size_t errlen)
{
	enum tls_what what;

	return tls_server_ctx_build(cert, key, client_ca, &what, err, errlen);
}

int
tls_cert_expiry(const char *path, long long *seconds, char *err, size_t errlen)
{
	enum tls_what what;
	int day, sec, ok;
	X509 *x;
	BIO *bio;

	ERR_clear_error();
	if (check_file("certificate", path, TLS_ERR_CERT, &what, err, errlen) != 0)
		return -1;
	if ((bio = BIO_new_file(path, "r")) == NULL)
		return fail(&what, TLS_ERR_CERT, err, errlen,
		    "cannot load certificate %s: %s", path, ssl_reason());
	x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
	BIO_free(bio);
	if (x == NULL)
		return fail(&what, TLS_ERR_CERT, err, errlen,
		    "cannot load certificate %s: %s", path, ssl_reason());
	/* a NULL "from" is now */
	ok = ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(x));
	X509_free(x);
	if (!ok)
		return fail(&what, TLS_ERR_CERT, err, errlen,
		    "certificate %s: bad expiry time", path);
	*seconds = (long long)day * 86400 + sec;
	return 0;
}
