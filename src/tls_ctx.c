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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/rand.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "regfile.h"
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
	int fd;

	if ((fd = regfile_open(path, &st)) < 0)
		return fail(what, w, err, errlen, "cannot load %s %s: %s", label, path,
		    regfile_error());
	close(fd);
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

/* Read with read(2) into a buffer wiped afterwards: stdio would leave
 * the key's PEM text in a freed FILE buffer. */
#define KEY_FILE_MAX (1 << 20)	/* a key, maybe with its chain beside it */

static EVP_PKEY *
read_key(const char *path)
{
	EVP_PKEY *pkey = NULL;
	unsigned char *buf;
	size_t cap, n = 0;
	struct stat st;
	ssize_t r;
	BIO *bio;
	int fd;

	if ((fd = regfile_open(path, &st)) < 0)
		return NULL;
	if (st.st_size >= KEY_FILE_MAX ||
	    (buf = malloc(cap = (size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return NULL;
	}
	while (n < cap && ((r = read(fd, buf + n, cap - n)) > 0 || (r < 0 && errno == EINTR)))
		if (r > 0)
			n += (size_t)r;
	close(fd);
	/* n == cap: the file grew while being read; take no half key */
	if (n < cap && (bio = BIO_new_mem_buf(buf, (int)n)) != NULL) {
		pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
		BIO_free(bio);
	}
	OPENSSL_cleanse(buf, cap);
	free(buf);
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

#define TLS12_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

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
	/* TLS 1.2: forward secrecy and AEAD only; CBC suites are what
	 * LUCKY13-style padding oracles feed on, and a mesh has no old
	 * clients to keep them for. TLS 1.3: OpenSSL's suites (all AEAD),
	 * AES-128-GCM first as in TLS 1.2 (and in Go and BoringSSL): 128-bit
	 * keys are ample, and its 10 rounds to AES-256's 14 decrypt a 16 KiB
	 * response about 0.6 us sooner. */
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1) {
		fail(what, TLS_ERR_OTHER, err, errlen, "TLS ciphers: %s", ssl_reason());
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
	/* an upstream connection holds its 16 KiB record buffers only while
	 * a record is being written or read, not for the whole of a request
	 * (64 requests in flight held 2 MiB); they come and go through the
	 * thread's spare blocks (blocks.h). Not for the inbound listener:
	 * its SSL_OP_CLEANSE_PLAINTEXT would zero the whole read buffer at
	 * each release (conn_release_buffers). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
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
 * Session tickets for peers (inbound). Resuming skips the peer's chain
 * verification, so a ticket must stay within the trust it was verified
 * under: each server context is bound to a digest of its client_ca file
 * and allowed_peers (the session-id context, and the key ring that seals
 * its tickets). Contexts of one trust share a ring, so a reload that
 * changes nothing else keeps resumption; one that changes the trust gets
 * fresh keys, and older tickets fall back to a full, verified handshake.
 * A ring's key is rotated every hour; a ticket under the previous key
 * still resumes, so a key lives two hours at most. Handshakes only: one
 * mutex is fine here.
 */
#define TICKET_ROTATE_SECS 3600

struct ticket_key {
	unsigned char name[16], aes[32], hmac[32];
	time_t born;
	bool set;
};

struct ticket_ring {
	unsigned char trust[SHA256_DIGEST_LENGTH];
	unsigned char ca[SHA256_DIGEST_LENGTH];	/* of the client_ca bytes alone */
	int refs;
	struct ticket_key cur, prev;
	struct ticket_ring *next;
};

static pthread_mutex_t ticket_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_ring *rings;	/* every ring a context still uses */
static pthread_once_t ring_index_once = PTHREAD_ONCE_INIT;
static int ring_index = -1;

static time_t
wall_now(void)
{
	return time(NULL);
}

time_t (*tls_now)(void) = wall_now;

static void
ring_put(struct ticket_ring *r)
{
	struct ticket_ring **pp;

	if (r == NULL)
		return;
	pthread_mutex_lock(&ticket_lock);
	if (--r->refs > 0) {
		pthread_mutex_unlock(&ticket_lock);
		return;
	}
	for (pp = &rings; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	pthread_mutex_unlock(&ticket_lock);
	OPENSSL_cleanse(r, sizeof(*r));
	free(r);
}

/* The ring of TRUST (shared with live contexts of the same trust), or a
 * new one. */
static struct ticket_ring *
ring_get(const unsigned char trust[SHA256_DIGEST_LENGTH],
    const unsigned char ca[SHA256_DIGEST_LENGTH])
{
	struct ticket_ring *r;

	pthread_mutex_lock(&ticket_lock);
	for (r = rings; r != NULL; r = r->next)
		if (memcmp(r->trust, trust, sizeof(r->trust)) == 0)
			break;
	if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL) {
		memcpy(r->trust, trust, sizeof(r->trust));
		memcpy(r->ca, ca, sizeof(r->ca));
		r->next = rings;
		rings = r;
	}
	if (r != NULL)
		r->refs++;
	pthread_mutex_unlock(&ticket_lock);
	return r;
}

static void
ring_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	ring_put(ptr);
}

static void
ring_index_init(void)
{
	ring_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ring_free_cb);
}

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
ticket_key_get(struct ticket_ring *r, bool enc, const unsigned char *name,
    struct ticket_key *out)
{
	int found = 0;

	pthread_mutex_lock(&ticket_lock);
	if (!r->cur.set || time(NULL) - r->cur.born >= TICKET_ROTATE_SECS) {
		struct ticket_key next;

		if (ticket_key_new(&next) == 0) {
			r->prev = r->cur;
			r->cur = next;
		}
		OPENSSL_cleanse(&next, sizeof(next));
	}
	if (enc && r->cur.set) {
		*out = r->cur;
		found = 1;
	} else if (!enc && r->cur.set && memcmp(name, r->cur.name, 16) == 0) {
		*out = r->cur;
		found = 1;
	} else if (!enc && r->prev.set && memcmp(name, r->prev.name, 16) == 0) {
		*out = r->prev;
		found = 1;
	}
	pthread_mutex_unlock(&ticket_lock);
	return found;
}

static int
ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
    EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_ring *r = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ring_index);
	struct ticket_key k;
	OSSL_PARAM params[3];
	int ret = 0;

	if (r == NULL || !ticket_key_get(r, enc != 0, key_name, &k))
		return 0;	/* unknown key: a full handshake, a fresh ticket */
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (enc) {
		memcpy(key_name, k.name, 16);
		if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) == 1 &&
		    EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
		    EVP_MAC_CTX_set_params(hctx, params) == 1)
			ret = 1;
	} else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1 &&
	    EVP_MAC_CTX_set_params(hctx, params) == 1) {
		/* 2: resume and issue a fresh ticket; TLS 1.3 tickets are
		 * single-use, so a peer without one pays a full handshake */
		ret = 2;
	}
	OPENSSL_cleanse(&k, sizeof(k));
	return ret;
}

/*
 * The age of a session counts from the full handshake that verified the
 * peer, carried in each ticket: OpenSSL restarts a TLS 1.3 session's clock
 * with every ticket it issues on resumption, so its own timeout alone
 * would let a peer that keeps resuming go on forever.
 */
#define BORN_LEN 8

static int
ticket_gen_cb(SSL *ssl, void *arg)
{
	SSL_SESSION *ss = SSL_get_session(ssl);
	unsigned char born[BORN_LEN];
	void *data;
	size_t len;
	uint64_t t;

	(void)arg;
	if (ss == NULL)
		return 0;
	SSL_SESSION_get0_ticket_appdata(ss, &data, &len);
	if (len == BORN_LEN)
		return 1;	/* resumed: keeps the first handshake's time */
	t = (uint64_t)tls_now();
	for (int i = BORN_LEN - 1; i >= 0; i--, t >>= 8)
		born[i] = (unsigned char)t;
	return SSL_SESSION_set1_ticket_appdata(ss, born, sizeof(born));
}

const char *
tls_session_refusal(const SSL_SESSION *ss, time_t now)
{
	void *data;
	size_t len;
	uint64_t born = 0;
	X509 *peer;

	SSL_SESSION_get0_ticket_appdata((SSL_SESSION *)ss, &data, &len);
	if (len != BORN_LEN)
		return "session without a start time";
	for (size_t i = 0; i < BORN_LEN; i++)
		born = born << 8 | ((const unsigned char *)data)[i];
	if ((int64_t)born > (int64_t)now || (int64_t)now - (int64_t)born >= TLS_SESSION_MAX_AGE)
		return "session too old";
	/* a full handshake would refuse it: so must a resumption */
	if ((peer = SSL_SESSION_get0_peer((SSL_SESSION *)ss)) == NULL)
		return "session without a peer certificate";
	if (X509_cmp_time(X509_get0_notAfter(peer), &now) <= 0)
		return "peer certificate expired";
	return NULL;
}

static SSL_TICKET_RETURN
ticket_dec_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname, size_t keyname_len,
    SSL_TICKET_STATUS status, void *arg)
{
	(void)ssl;
	(void)keyname;
	(void)keyname_len;
	(void)arg;
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		/* refused: a full handshake verifies the peer again */
		if (tls_session_refusal(ss, tls_now()) != NULL)
			return SSL_TICKET_RETURN_IGNORE_RENEW;
		return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE :
		    SSL_TICKET_RETURN_USE_RENEW;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
	case SSL_TICKET_NONE:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	default:
		return SSL_TICKET_RETURN_ABORT;
	}
}

/* SHA-256 over the client_ca file's bytes and allowed_peers: what a
 * verified session was verified against; CA, over the bytes alone. */
static int
trust_digest(const char *client_ca, char *const *peers, size_t n_peers,
    unsigned char out[SHA256_DIGEST_LENGTH], unsigned char ca[SHA256_DIGEST_LENGTH],
    enum tls_what *what, char *err, size_t errlen)
{
	unsigned char buf[4096];
	EVP_MD_CTX *md = EVP_MD_CTX_new(), *camd = EVP_MD_CTX_new();
	unsigned int outlen = 0, calen = 0;
	size_t n;
	FILE *f = NULL;
	int ok;

	ok = md != NULL && camd != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, "ferry trust v1", 15) == 1 &&
	    EVP_DigestInit_ex(camd, EVP_sha256(), NULL) == 1;
	if (ok && client_ca != NULL) {
		if ((f = fopen(client_ca, "r")) == NULL) {
			EVP_MD_CTX_free(md);
			EVP_MD_CTX_free(camd);
			return fail(what, TLS_ERR_CA, err, errlen, "cannot load client CA %s: %s",
			    client_ca, strerror(errno));
		}
		while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
			ok = EVP_DigestUpdate(md, buf, n) == 1 &&
			    EVP_DigestUpdate(camd, buf, n) == 1;
		ok = ok && !ferror(f);
		fclose(f);
	}
	for (size_t i = 0; ok && i < n_peers; i++)
		/* NUL-separated: ["ab"] and ["a","b"] differ */
		ok = EVP_DigestUpdate(md, "\0", 1) == 1 &&
		    EVP_DigestUpdate(md, peers[i], strlen(peers[i])) == 1;
	ok = ok && EVP_DigestFinal_ex(md, out, &outlen) == 1 && outlen == SHA256_DIGEST_LENGTH &&
	    EVP_DigestFinal_ex(camd, ca, &calen) == 1 && calen == SHA256_DIGEST_LENGTH;
	EVP_MD_CTX_free(md);
	EVP_MD_CTX_free(camd);
	if (!ok)
		return fail(what, TLS_ERR_CA, err, errlen, "cannot read client CA %s",
		    client_ca ? client_ca : "(none)");
	return 0;
}

/* Binds CTX's sessions and tickets to its trust (see above). */
static int
bind_trust(SSL_CTX *ctx, const char *client_ca, char *const *peers, size_t n_peers,
    enum tls_what *what, char *err, size_t errlen)
{
	unsigned char trust[SHA256_DIGEST_LENGTH], ca[SHA256_DIGEST_LENGTH];
	struct ticket_ring *r;

	/* before the CA is loaded: a file replaced in between changes the
	 * digest at the next reload, so the error is a needless rotation,
	 * never a kept ticket */
	if (client_ca != NULL &&
	    check_file("client CA", client_ca, TLS_ERR_CA, what, err, errlen) != 0)
		return -1;
	if (trust_digest(client_ca, peers, n_peers, trust, ca, what, err, errlen) != 0)
		return -1;
	pthread_once(&ring_index_once, ring_index_init);
	if (ring_index < 0 || (r = ring_get(trust, ca)) == NULL)
		return fail(what, TLS_ERR_OTHER, err, errlen, "session tickets: out of memory");
	if (SSL_CTX_set_ex_data(ctx, ring_index, r) != 1) {
		ring_put(r);
		return fail(what, TLS_ERR_OTHER, err, errlen, "session tickets: out of memory");
	}
	/* the session-id context is what OpenSSL compares on resumption */
	SSL_CTX_set_session_id_context(ctx, trust, sizeof(trust));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
	SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, NULL);
	/* tickets only: a server-side cache would resume TLS 1.2 session IDs
	 * without the checks of ticket_dec_cb */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, TLS_SESSION_MAX_AGE);
	return 0;
}

bool
tls_same_client_ca(SSL_CTX *a, SSL_CTX *b)
{
	const struct ticket_ring *ra, *rb;

	if (a == b)
		return true;
	if (a == NULL || b == NULL || ring_index < 0)
		return false;
	/* a ring lives as long as a context that uses it, and is immutable */
	ra = SSL_CTX_get_ex_data(a, ring_index);
	rb = SSL_CTX_get_ex_data(b, ring_index);
	return ra != NULL && rb != NULL && memcmp(ra->ca, rb->ca, sizeof(ra->ca)) == 0;
}

bool
tls_peer_trusted(SSL *ssl, SSL_CTX *ctx)
{
	X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
	X509_STORE_CTX *sc;
	bool ok;

	if (peer == NULL || ctx == NULL || (sc = X509_STORE_CTX_new()) == NULL)
		return false;
	/* the server's check of a client: purpose sslclient, CTX's depth
	 * and flags, at the clock of the session checks */
	ok = X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(ctx), peer,
	    SSL_get_peer_cert_chain(ssl)) == 1 &&
	    X509_STORE_CTX_set_default(sc, "ssl_client") == 1 &&
	    X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(sc), SSL_CTX_get0_param(ctx)) == 1;
	if (ok) {
		X509_STORE_CTX_set_time(sc, 0, tls_now());
		ok = X509_verify_cert(sc) == 1;
	}
	X509_STORE_CTX_free(sc);
	ERR_clear_error();
	return ok;
}

/* Peers speak HTTP/2 or HTTP/1.1 here, h2 first (SPEC §12). A client that
 * offers only other protocols gets no ALPN answer rather than a failure. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x02h2\x08http/1.1";

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1,
	    in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *
tls_server_ctx_build(const char *cert, const char *key, const char *client_ca,
    char *const *allowed_peers, size_t n_allowed_peers, enum tls_what *what,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;

	*what = TLS_ERR_OTHER;
	if ((ctx = ctx_new(TLS_server_method(), TLS1_2_VERSION, what, err, errlen)) == NULL)
		return NULL;
	/* the mesh chooses; a peer's order would let it pick the weaker */
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* peers' requests carry their keys: OpenSSL decrypts records in
	 * place and would keep the plaintext in its read buffer until the
	 * next record overwrites it. Client contexts need no such thing:
	 * what they read is responses, and what they write (the key) is
	 * encrypted in place in the write buffer. */
	SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
	if (load_pair(ctx, cert, key, what, err, errlen) != 0)
		goto bad;
	if (bind_trust(ctx, client_ca, allowed_peers, n_allowed_peers, what, err, errlen) != 0)
		goto bad;
	if (client_ca != NULL && load_client_ca(ctx, client_ca, what, err, errlen) != 0)
		goto bad;
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
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

	return tls_server_ctx_build(cert, key, client_ca, NULL, 0, &what, err, errlen);
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
