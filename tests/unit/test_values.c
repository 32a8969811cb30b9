/*
 * Unit tests for the configuration's value parsers (durations, sizes,
 * addresses) and the OpenSSL contexts of src/tls_ctx.c.
 */
#include "config_fixture.h"

START_TEST(test_parse_duration)
{
	static const struct {
		const char *in;
		int64_t ms;
		const char *why;
	} cases[] = {
		{ "250ms", 250, NULL }, { "5s", 5000, NULL }, { "2m", 120000, NULL },
		{ "1h", 3600000, NULL }, { "0", 0, NULL }, { "0s", 0, NULL },
		{ "0ms", 0, NULL }, { "100000h", 360000000000LL, NULL },
		{ "100001h", 0, "too large; at most 100000h" },
		{ "99999999999999999999ms", 0, "too large; at most 100000h" },
		{ "5", 0, "missing unit: ms, s, m or h" },
		{ "00", 0, NULL },
		{ "5x", 0, "unit must be ms, s, m or h" },
		{ "5 s", 0, "unit must be ms, s, m or h" },
		{ "5S", 0, "unit must be ms, s, m or h" },
		{ "1.5s", 0, "fractions are not supported; use a smaller unit" },
		{ "-1s", 0, "negative" }, { "", 0, "empty" },
		{ "s", 0, "not a number" }, { "+5s", 0, "not a number" },
		{ " 5s", 0, "not a number" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;
		int64_t ms = -1;
		int rc = parse_duration(cases[i].in, &ms, &why);

		if (cases[i].why == NULL) {
			ck_assert_msg(rc == 0, "%s: %s", cases[i].in, why);
			ck_assert_int_eq(ms, cases[i].ms);
		} else {
			ck_assert_msg(rc == -1, "%s accepted", cases[i].in);
			ck_assert_str_eq(why, cases[i].why);
		}
	}
}
END_TEST

START_TEST(test_parse_size)
{
	static const struct {
		const char *in;
		uint64_t bytes;
		const char *why;
	} cases[] = {
		{ "512", 512, NULL }, { "0", 0, NULL }, { "64KiB", 65536, NULL },
		{ "1MiB", 1048576, NULL }, { "1GiB", 1073741824, NULL },
		{ "2TiB", 2199023255552ULL, NULL }, { "64KB", 64000, NULL },
		{ "1MB", 1000000, NULL }, { "7B", 7, NULL },
		{ "9223372036854775807", 9223372036854775807ULL, NULL },
		{ "9223372036854775808", 0, "too large" },
		{ "99999999999999999999", 0, "too large" },
		{ "9000000TiB", 0, "too large" },
		{ "64kib", 0, "unit must be B, KiB, MiB, GiB, TiB, KB, MB, GB or TB" },
		{ "64 KiB", 0, "unit must be B, KiB, MiB, GiB, TiB, KB, MB, GB or TB" },
		{ "1.5MiB", 0, "fractions are not supported; use a smaller unit" },
		{ "-1", 0, "negative" }, { "", 0, "empty" }, { "KiB", 0, "not a number" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;
		uint64_t v = 1;
		int rc = parse_size(cases[i].in, &v, &why);

		if (cases[i].why == NULL) {
			ck_assert_msg(rc == 0, "%s: %s", cases[i].in, why);
			ck_assert_uint_eq(v, cases[i].bytes);
		} else {
			ck_assert_msg(rc == -1, "%s accepted", cases[i].in);
			ck_assert_str_eq(why, cases[i].why);
		}
	}
}
END_TEST

START_TEST(test_parse_addr)
{
	static const struct {
		const char *in;
		const char *host;	/* NULL: must fail with WHY */
		int port;
		bool ip, loopback;
		const char *why;
	} cases[] = {
		{ "127.0.0.1:80", "127.0.0.1", 80, true, true, NULL },
		{ "127.9.8.7:1", "127.9.8.7", 1, true, true, NULL },
		{ "1.2.3.4:65535", "1.2.3.4", 65535, true, false, NULL },
		{ "0.0.0.0:15443", "0.0.0.0", 15443, true, false, NULL },
		{ "[::1]:80", "::1", 80, true, true, NULL },
		{ "[::]:80", "::", 80, true, false, NULL },
		{ "[2001:db8::1]:443", "2001:db8::1", 443, true, false, NULL },
		{ "[::ffff:127.0.0.1]:80", "::ffff:127.0.0.1", 80, true, true, NULL },
		{ "localhost:80", "localhost", 80, false, true, NULL },
		{ "LocalHost:80", "LocalHost", 80, false, true, NULL },
		{ "svc.ns.svc.cluster.local:5000", "svc.ns.svc.cluster.local", 5000,
		  false, false, NULL },
		{ "localhost.example:80", "localhost.example", 80, false, false, NULL },
		{ "[::1]", NULL, 0, false, false, "missing port" },
		{ "[::1]80", NULL, 0, false, false, "expected ':' after ']'" },
		{ "[::1:80", NULL, 0, false, false, "missing ']'" },
		{ "[nope]:80", NULL, 0, false, false, "not an IPv6 address" },
		{ "[1.2.3.4]:80", NULL, 0, false, false, "not an IPv6 address" },
		{ "::1:80", NULL, 0, false, false,
		  "an IPv6 address needs brackets, e.g. [::1]:80" },
		{ "host", NULL, 0, false, false, "missing port" },
		{ "host:", NULL, 0, false, false, "missing port" },
		{ ":80", NULL, 0, false, false, "missing host" },
		{ "host:0", NULL, 0, false, false, "port must be 1..65535" },
		{ "host:65536", NULL, 0, false, false, "port must be 1..65535" },
		{ "host:99999999999999999999", NULL, 0, false, false, "port must be 1..65535" },
		{ "host:-1", NULL, 0, false, false, "port is not a number" },
		{ "host:8o", NULL, 0, false, false, "port is not a number" },
		{ "1.2.3:80", NULL, 0, false, false, "not an IPv4 address" },
		{ "-bad-.com:80", NULL, 0, false, false, "not an IP address or host name" },
		{ "a..b:80", NULL, 0, false, false, "not an IP address or host name" },
		{ "", NULL, 0, false, false, "empty" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct conf_addr a;
		const char *why = NULL;
		int rc = parse_addr(cases[i].in, &a, &why);

		if (cases[i].host == NULL) {
			ck_assert_msg(rc == -1, "%s accepted", cases[i].in);
			ck_assert_msg(strcmp(why, cases[i].why) == 0, "%s: %s", cases[i].in, why);
			ck_assert_ptr_null(a.text);
			continue;
		}
		ck_assert_msg(rc == 0, "%s: %s", cases[i].in, why);
		ck_assert_str_eq(a.text, cases[i].in);
		ck_assert_str_eq(a.host, cases[i].host);
		ck_assert_int_eq(a.port, cases[i].port);
		ck_assert_msg(a.is_ip == cases[i].ip, "%s: is_ip", cases[i].in);
		ck_assert_msg(a.is_loopback == cases[i].loopback, "%s: loopback", cases[i].in);
		if (a.is_ip) {
			ck_assert_int_eq(a.sa.ss_family, strchr(a.host, ':') ? AF_INET6 : AF_INET);
			ck_assert_int_eq(a.salen, a.sa.ss_family == AF_INET6 ?
			    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
		}
		conf_addr_clear(&a);
	}
}
END_TEST

START_TEST(test_tls_ctx)
{
	struct conf_tls_client t = { .enabled = true, .min_version = TLS1_2_VERSION };
	char ca[512], cert[512], key[512], other[512], err[512];
	long long secs;
	SSL_CTX *ctx;

	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(other, sizeof(other), "%s/other.key", dir);
	t.ca = ca;
	t.cert = cert;
	t.key = key;
	ctx = tls_client_ctx_new(&t, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "%s", err);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
	ck_assert(SSL_CTX_get_session_cache_mode(ctx) ==
	    (SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE));
	ck_assert(SSL_CTX_get_mode(ctx) & SSL_MODE_ENABLE_PARTIAL_WRITE);
	ck_assert(SSL_CTX_get_read_ahead(ctx));
	SSL_CTX_free(ctx);

	ctx = tls_server_ctx_new(cert, key, ca, err, sizeof(err));
	ck_assert_msg(ctx != NULL, "%s", err);
	ck_assert_int_eq(SSL_CTX_get_verify_mode(ctx),
	    SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
	ck_assert_int_eq(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(ctx)), 1);
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	SSL_CTX_free(ctx);

	ctx = tls_server_ctx_new(cert, other, NULL, err, sizeof(err));
	ck_assert_ptr_null(ctx);
	ck_assert(strstr(err, "does not match") != NULL);

	ck_assert_int_eq(tls_cert_expiry(cert, &secs, err, sizeof(err)), 0);
	/* made with -days 30 a moment ago */
	ck_assert_int_gt(secs, 29LL * 86400);
	ck_assert_int_le(secs, 30LL * 86400);
	ck_assert_int_eq(tls_cert_expiry(key, &secs, err, sizeof(err)), -1);
	ck_assert(strstr(err, key) != NULL);
}
END_TEST

/* Test certificates: a CA, a leaf it signed, and an unrelated key. */
static Suite *
values_suite(void)
{
	Suite *s = suite_create("values");
	TCase *tc;

	tc = tcase_create("parsers");
	tcase_add_test(tc, test_parse_duration);
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_parse_addr);
	suite_add_tcase(s, tc);
	tc = tcase_create("tls");
	tcase_add_test(tc, test_tls_ctx);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return run_suite(values_suite());
}
