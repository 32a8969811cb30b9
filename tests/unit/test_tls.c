/*
 * Inbound session resumption (tls_ctx.c): handshakes in memory between a
 * real server context and a client, with the clock of the resumption
 * checks moved by the test.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "tls_ctx.h"

static char dir[256], ca[300], ca2[300], srv[300], srv_key[300], cli[300], cli_key[300];
static time_t fake_now;

static time_t
fake_clock(void)
{
	return fake_now;
}

static void
make_certs(void)
{
	const char *tmp = getenv("TMPDIR");
	char cmd[4096], ext[300];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/ferry-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(ca2, sizeof(ca2), "%s/ca2.pem", dir);
	snprintf(srv, sizeof(srv), "%s/srv.pem", dir);
	snprintf(srv_key, sizeof(srv_key), "%s/srv.key", dir);
	snprintf(cli, sizeof(cli), "%s/cli.pem", dir);
	snprintf(cli_key, sizeof(cli_key), "%s/cli.key", dir);
	snprintf(ext, sizeof(ext), "%s/ext.cnf", dir);
	ck_assert_ptr_nonnull(f = fopen(ext, "w"));
	fprintf(f, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
	    "extendedKeyUsage=serverAuth,clientAuth\n"
	    "subjectAltName=DNS:localhost,URI:spiffe://test/peer\n");
	fclose(f);
	snprintf(cmd, sizeof(cmd), "cd '%s' && ("
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca "
	    "-addext basicConstraints=critical,CA:TRUE "
	    "-addext keyUsage=critical,keyCertSign,cRLSign && "
	    "for n in srv cli; do "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout $n.key -out $n.csr -subj /CN=$n && "
	    "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	    "-out $n.pem -days 2 -extfile ext.cnf || exit 1; done && "
	    /* the same CA, other bytes: a file change is a trust change */
	    "(cat ca.pem; echo '# rotated') > ca2.pem) >/dev/null 2>&1", dir);
	ck_assert_msg(system(cmd) == 0, "openssl failed: %s", cmd);
}

static void
remove_certs(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)system(cmd);
}

static SSL_CTX *
server_ctx(const char *client_ca, const char *peer)
{
	char *peers[] = { (char *)peer };
	enum tls_what what;
	char err[512];
	SSL_CTX *ctx;

	ctx = tls_server_ctx_build(srv, srv_key, client_ca, peer ? peers : NULL, peer ? 1 : 0,
	    &what, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "%s", err);
	return ctx;
}

static SSL_CTX *
client_ctx(int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(SSL_CTX_load_verify_file(ctx, ca), 1);
	ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(ctx, cli), 1);
	ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, cli_key, SSL_FILETYPE_PEM), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (max_version)
		SSL_CTX_set_max_proto_version(ctx, max_version);
	return ctx;
}

/* One handshake in memory, resuming SESSION when given. Returns the
 * client's newest session (after reading the TLS 1.3 tickets); *REUSED
 * says whether the server resumed. *SERVER_SESS (optional) gets the
 * server's session. NULL when the handshake failed. */
static SSL_SESSION *
handshake(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *session, int *reused,
    SSL_SESSION **server_sess)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *bs, *bc;
	SSL_SESSION *out = NULL;
	unsigned char buf[64];
	int sd = 0, cd = 0;

	ck_assert(s != NULL && c != NULL);
	ck_assert_int_eq(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	if (session)
		ck_assert_int_eq(SSL_set_session(c, session), 1);
	for (int i = 0; i < 50 && !(sd == 1 && cd == 1); i++) {
		if (cd != 1)
			cd = SSL_do_handshake(c);
		if (sd != 1)
			sd = SSL_do_handshake(s);
		if ((cd <= 0 && SSL_get_error(c, cd) != SSL_ERROR_WANT_READ &&
		    SSL_get_error(c, cd) != SSL_ERROR_WANT_WRITE) ||
		    (sd <= 0 && SSL_get_error(s, sd) != SSL_ERROR_WANT_READ &&
		    SSL_get_error(s, sd) != SSL_ERROR_WANT_WRITE))
			break;
	}
	if (sd == 1 && cd == 1) {
		/* the server's TLS 1.3 tickets follow its handshake */
		(void)SSL_read(c, buf, sizeof(buf));
		*reused = SSL_session_reused(s);
		out = SSL_get1_session(c);
		if (server_sess)
			*server_sess = SSL_get1_session(s);
	}
	ERR_clear_error();
	/* freed without a shutdown, a session is marked not resumable */
	SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(s);
	SSL_free(c);
	return out;
}

static void
set_born(SSL_SESSION *ss, time_t t)
{
	unsigned char b[8];
	uint64_t v = (uint64_t)t;

	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (unsigned char)v;
	ck_assert_int_eq(SSL_SESSION_set1_ticket_appdata(ss, b, sizeof(b)), 1);
}

static time_t
cert_not_after(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	struct tm tm;

	ck_assert_ptr_nonnull(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
	X509_free(x);
	return timegm(&tm);
}

/* The cap counts from the verifying handshake, however often a peer
 * resumes in between (OpenSSL alone would restart it with each TLS 1.3
 * ticket). */
static void
age_cap(int max_version)
{
	SSL_CTX *sctx = server_ctx(ca, NULL), *cctx = client_ctx(max_version);
	SSL_SESSION *s1, *s2, *s3, *s4, *s5;
	int reused = -1;

	tls_now = fake_clock;
	fake_now = time(NULL);
	s1 = handshake(sctx, cctx, NULL, &reused, NULL);
	ck_assert_ptr_nonnull(s1);
	ck_assert_int_eq(reused, 0);
	fake_now += 1800;
	s2 = handshake(sctx, cctx, s1, &reused, NULL);
	ck_assert_ptr_nonnull(s2);
	ck_assert_int_eq(reused, 1);
	fake_now += TLS_SESSION_MAX_AGE - 1800 - 2;
	s3 = handshake(sctx, cctx, s2, &reused, NULL);
	ck_assert_ptr_nonnull(s3);
	ck_assert_int_eq(reused, 1);
	fake_now += 3;		/* one second past the cap */
	s4 = handshake(sctx, cctx, s3, &reused, NULL);
	ck_assert_ptr_nonnull(s4);
	ck_assert_msg(reused == 0, "resumed %d s after the verifying handshake",
	    TLS_SESSION_MAX_AGE + 1);
	/* the full handshake starts a new session that resumes */
	s5 = handshake(sctx, cctx, s4, &reused, NULL);
	ck_assert_ptr_nonnull(s5);
	ck_assert_int_eq(reused, 1);
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_SESSION_free(s3);
	SSL_SESSION_free(s4);
	SSL_SESSION_free(s5);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

static time_t
real_clock(void)
{
	return time(NULL);
}

START_TEST(test_age_cap_tls13)
{
	age_cap(0);
	tls_now = real_clock;
}
END_TEST

START_TEST(test_age_cap_tls12)
{
	age_cap(TLS1_2_VERSION);
	tls_now = real_clock;
}
END_TEST

/* Sessions resume on a context of the same trust (a reload that changed
 * nothing of it), never on one whose client_ca bytes or allowed_peers
 * differ. */
START_TEST(test_trust_binding)
{
	SSL_CTX *a = server_ctx(ca, "spiffe://test/peer"), *a2 = server_ctx(ca, "spiffe://test/peer");
	SSL_CTX *b = server_ctx(ca, "spiffe://test/other"), *c = server_ctx(ca2, "spiffe://test/peer");
	SSL_CTX *cctx = client_ctx(_i ? TLS1_2_VERSION : 0);
	SSL_SESSION *s, *t;
	int reused = -1;

	tls_now = real_clock;
	s = handshake(a, cctx, NULL, &reused, NULL);
	ck_assert_ptr_nonnull(s);
	t = handshake(a2, cctx, s, &reused, NULL);
	ck_assert_int_eq(reused, 1);
	SSL_SESSION_free(t);
	t = handshake(b, cctx, s, &reused, NULL);
	ck_assert_ptr_nonnull(t);
	ck_assert_msg(reused == 0, "resumed after allowed_peers changed");
	SSL_SESSION_free(t);
	t = handshake(c, cctx, s, &reused, NULL);
	ck_assert_ptr_nonnull(t);
	ck_assert_msg(reused == 0, "resumed after the client_ca file changed");
	SSL_SESSION_free(t);
	SSL_SESSION_free(s);
	SSL_CTX_free(a);
	SSL_CTX_free(a2);
	SSL_CTX_free(b);
	SSL_CTX_free(c);
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(test_refusal)
{
	SSL_CTX *sctx = server_ctx(ca, NULL), *cctx = client_ctx(0);
	SSL_SESSION *cs, *ss = NULL;
	time_t end = cert_not_after(cli), now;
	int reused = -1;

	tls_now = real_clock;
	cs = handshake(sctx, cctx, NULL, &reused, &ss);
	ck_assert_ptr_nonnull(cs);
	ck_assert_ptr_nonnull(ss);
	/* the handshake stamped it (a second may have passed since) */
	now = time(NULL);
	ck_assert_ptr_null(tls_session_refusal(ss, now));
	set_born(ss, now);
	ck_assert_str_eq(tls_session_refusal(ss, now + TLS_SESSION_MAX_AGE), "session too old");
	ck_assert_ptr_null(tls_session_refusal(ss, now + TLS_SESSION_MAX_AGE - 1));
	/* a session stamped in the future is not trusted either */
	ck_assert_str_eq(tls_session_refusal(ss, now - 5), "session too old");
	set_born(ss, end - 10);
	ck_assert_ptr_null(tls_session_refusal(ss, end - 1));
	ck_assert_str_eq(tls_session_refusal(ss, end + 1), "peer certificate expired");
	SSL_SESSION_free(ss);
	ss = SSL_SESSION_new();
	ck_assert_str_eq(tls_session_refusal(ss, now), "session without a start time");
	set_born(ss, now);
	ck_assert_str_eq(tls_session_refusal(ss, now), "session without a peer certificate");
	SSL_SESSION_free(ss);
	SSL_SESSION_free(cs);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

/* TLS 1.2 with CBC suites only: no handshake, on either side. */
START_TEST(test_no_cbc)
{
	SSL_CTX *sctx = server_ctx(ca, NULL), *cctx = client_ctx(TLS1_2_VERSION);
	SSL_SESSION *s;
	int reused = -1;

	ck_assert_int_eq(SSL_CTX_set_cipher_list(cctx, "ECDHE-ECDSA-AES128-SHA:AES128-SHA"), 1);
	s = handshake(sctx, cctx, NULL, &reused, NULL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(SSL_CTX_set_cipher_list(cctx, "ECDHE-ECDSA-AES128-GCM-SHA256"), 1);
	s = handshake(sctx, cctx, NULL, &reused, NULL);
	ck_assert_ptr_nonnull(s);
	SSL_SESSION_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

static Suite *
tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("resumption");

	tcase_add_unchecked_fixture(tc, make_certs, remove_certs);
	tcase_add_test(tc, test_age_cap_tls13);
	tcase_add_test(tc, test_age_cap_tls12);
	tcase_add_loop_test(tc, test_trust_binding, 0, 2);
	tcase_add_test(tc, test_refusal);
	tcase_add_test(tc, test_no_cbc);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(tls_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
