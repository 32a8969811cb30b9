/*
 * Unit tests for GET /config's JSON (config_json.c): configurations loaded
 * with config_load, the output checked as strict JSON (nested; no
 * duplicate keys, valid UTF-8), values looked up by path, defaults filled
 * in, and no loaded key anywhere in the output.
 */
#include <stdarg.h>

#include "config_fixture.h"
#include "config_json.h"

/* jstring() and jnumber() of the access log's strict parser */
#include "json_strict.h"

#define SECRET_B "bee-Secret-Never-Printed"

static const char *const secrets[] = {
	SECRET, SECRET_B, FILE_SECRET, "first-key", "second key",
};

/* ------------------------------------------------ strict JSON walk ---- */

static void
ws(const char **p, const char *end)
{
	while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
		(*p)++;
}

/* Skips one value at *P, checking it strictly; false if it is not JSON. */
static bool
jskip(const char **p, const char *end, int depth)
{
	struct sbuf tmp = { 0 };
	bool ok = false;

	if (depth > 32)
		return false;
	ws(p, end);
	if (*p >= end)
		return false;
	if (**p == '{' || **p == '[') {
		char close = **p == '{' ? '}' : ']';
		bool obj = close == '}';
		struct sbuf keys[128];
		size_t n = 0;

		(*p)++;
		ws(p, end);
		if (*p < end && **p == close) {
			(*p)++;
			return true;
		}
		for (;;) {
			if (obj) {
				ws(p, end);
				if (n == 128)
					break;
				memset(&keys[n], 0, sizeof(keys[n]));
				if (!jstring(p, end, &keys[n++]))
					break;
				for (size_t i = 0; i + 1 < n; i++)
					if (keys[i].len == keys[n - 1].len &&
					    memcmp(keys[i].p, keys[n - 1].p, keys[i].len) == 0)
						goto out;	/* duplicate key */
				ws(p, end);
				if (*p >= end || *(*p)++ != ':')
					break;
			}
			if (!jskip(p, end, depth + 1))
				break;
			ws(p, end);
			if (*p < end && **p == ',') {
				(*p)++;
				continue;
			}
			ok = *p < end && *(*p)++ == close;
			break;
		}
out:
		for (size_t i = 0; i < n; i++)
			sbuf_free(&keys[i]);
		return ok;
	}
	if (**p == '"')
		ok = jstring(p, end, &tmp);
	else if (end - *p >= 4 && memcmp(*p, "null", 4) == 0)
		ok = (*p += 4, true);
	else if (end - *p >= 4 && memcmp(*p, "true", 4) == 0)
		ok = (*p += 4, true);
	else if (end - *p >= 5 && memcmp(*p, "false", 5) == 0)
		ok = (*p += 5, true);
	else
		ok = jnumber(p, end, &tmp);
	sbuf_free(&tmp);
	return ok;
}

/* The whole text is one JSON value. */
static bool
jvalid(const char *s, size_t len)
{
	const char *p = s, *end = s + len;

	if (!jskip(&p, end, 0))
		return false;
	ws(&p, end);
	return p == end;
}

/*
 * The text of the value at PATH ("/listeners/outbound/address",
 * "/services/0/name"; "" is the whole) inside valid JSON, as a new
 * string; NULL when there is no such member.
 */
static char *
jat(const char *json, const char *path)
{
	const char *p = json, *end = json + strlen(json), *v;
	char seg[128];

	while (*path == '/') {
		size_t sl = strcspn(path + 1, "/");

		ck_assert_uint_lt(sl, sizeof(seg));
		memcpy(seg, path + 1, sl);
		seg[sl] = '\0';
		path += 1 + sl;
		ws(&p, end);
		if (*p == '{') {
			struct sbuf k = { 0 };
			bool found = false;

			p++;
			while (!found) {
				ws(&p, end);
				if (*p == '}') {
					sbuf_free(&k);
					return NULL;
				}
				sbuf_clear(&k);
				ck_assert(jstring(&p, end, &k));
				ws(&p, end);
				ck_assert(*p++ == ':');
				found = k.len == strlen(seg) && memcmp(k.p, seg, k.len) == 0;
				if (!found) {
					ck_assert(jskip(&p, end, 0));
					ws(&p, end);
					if (*p == ',')
						p++;
				}
			}
			sbuf_free(&k);
		} else if (*p == '[') {
			long idx = strtol(seg, NULL, 10);

			p++;
			for (long i = 0; i < idx; i++) {
				ws(&p, end);
				if (*p == ']')
					return NULL;
				ck_assert(jskip(&p, end, 0));
				ws(&p, end);
				if (*p == ',')
					p++;
			}
			ws(&p, end);
			if (*p == ']')
				return NULL;
		} else
			return NULL;
	}
	ws(&p, end);
	v = p;
	ck_assert(jskip(&p, end, 0));
	return strndup(v, (size_t)(p - v));
}

/* ------------------------------------------------------- helpers ---- */

static char *json;

/* Loads YAML, renders it, checks it is strict JSON holding no key. */
static void
render(const char *yaml)
{
	struct config *c = load_ok(yaml);
	struct sbuf out = { 0 };

	config_to_json(c, &out);
	ck_assert(!out.oom);
	config_unref(c);
	sbuf_add(&out, "", 1);
	free(json);
	json = out.p;
	ck_assert_msg(jvalid(json, out.len - 1), "not strict JSON:\n%.3000s", json);
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		ck_assert_msg(strstr(json, secrets[i]) == NULL, "key %s in:\n%.3000s",
		    secrets[i], json);
}

/* The value at PATH equals WANT (printf-style), as JSON text. */
static void __attribute__((format(printf, 2, 3)))
expect(const char *path, const char *fmt, ...)
{
	char want[4096], *got = jat(json, path);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	ck_assert_msg(got != NULL, "no %s in:\n%.3000s", path, json);
	ck_assert_msg(strcmp(got, want) == 0, "%s:\n got  %.1500s\n want %.1500s", path, got,
	    want);
	free(got);
}

/* -------------------------------------------------------- tests ---- */

/* SPEC §15: rules in defaults, a service and the inbound listener; a
 * value from the environment is not shown */
START_TEST(test_header_rules)
{
	setenv("FERRY_TEST_TENANT", "tenant-secret-42", 1);
	render("defaults:\n  headers:\n    request: {add: {x-env: prod}}\n"
	    "services:\n  a:\n    endpoints: [\"127.0.0.1:80\"]\n"
	    "    headers:\n      request: {set: {X-Tenant: \"${FERRY_TEST_TENANT}\"}, "
	    "remove: [X-Debug]}\n      response: {remove: [server]}\n");
	expect("/defaults/headers/request", "{\"set\":{},\"add\":{\"x-env\":\"prod\"},"
	    "\"remove\":[]}");
	expect("/services/0/headers", "{\"request\":{\"set\":{\"x-tenant\":\"<redacted>\"},"
	    "\"add\":{},\"remove\":[\"x-debug\"]},\"response\":{\"set\":{},\"add\":{},"
	    "\"remove\":[\"server\"]}}");
	ck_assert_ptr_null(strstr(json, "tenant-secret-42"));
	unsetenv("FERRY_TEST_TENANT");
}
END_TEST

/* SPEC §14: defaults' compression, key by key under a service's own; the
 * inbound listener inherits it too */
START_TEST(test_compression)
{
	render("defaults:\n  compression: {encodings: [zstd, gzip], min_size: 2KiB}\n"
	    "listeners:\n  inbound:\n    address: 127.0.0.1:15443\n"
	    "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	    "    local_app: 127.0.0.1:8080\n"
	    "    compression: {types: [TEXT/*]}\n"
	    "services:\n  a:\n    endpoints: [\"127.0.0.1:80\"]\n"
	    "    compression: {encodings: [gzip], level: {gzip: 6}}\n"
	    "  b:\n    endpoints: [\"127.0.0.1:81\"]\n");
	expect("/services/0/compression", "{\"encodings\":[\"gzip\"],\"min_size\":2048,"
	    "\"types\":[\"application/json\",\"text/*\",\"application/graphql-response+json\"],"
	    "\"level\":{\"zstd\":3,\"gzip\":6}}");
	expect("/services/1/compression/encodings", "[\"zstd\",\"gzip\"]");
	expect("/listeners/inbound/compression", "{\"encodings\":[\"zstd\",\"gzip\"],"
	    "\"min_size\":2048,\"types\":[\"text/*\"],\"level\":{\"zstd\":3,\"gzip\":1}}");
}
END_TEST

START_TEST(test_defaults)
{
	render("services:\n"
	    "  b-svc:\n    endpoints: [\"127.0.0.1:80\"]\n"
	    "  a-svc:\n    endpoints: [\"127.0.0.2:81\", \"a.example:81\"]\n");
	expect("/workers", "%u", config_default_workers());
	expect("/log", "{\"level\":\"info\",\"access\":\"stdout\"}");
	expect("/drain_delay", "\"5s\"");
	expect("/drain_timeout", "\"30s\"");
	expect("/watch", "false");
	expect("/resolver", "{\"nameservers\":[]}");
	expect("/listeners/outbound", "{\"address\":\"127.0.0.1:15001\",\"allow_remote\":false,"
	    "\"max_connections\":10000,\"max_request_body\":0,\"idle_timeout\":\"1m\","
	    "\"header_read_timeout\":\"10s\"}");
	expect("/listeners/inbound", "null");
	expect("/listeners/admin", "{\"address\":\"127.0.0.1:15000\",\"allow_remote\":false,"
	    "\"max_connections\":10000,\"max_request_body\":0,\"idle_timeout\":\"1m\","
	    "\"header_read_timeout\":\"10s\",\"hosts\":[]}");
	/* every field of a service, defaults filled in, name first */
	expect("/services/0", "{\"name\":\"b-svc\",\"endpoints\":[\"127.0.0.1:80\"],"
	    "\"srv\":null,\"hosts\":[],\"dns_refresh\":\"30s\",\"listen\":null,"
	    "\"tls\":null,\"auth\":null,"
	    "\"timeouts\":{\"connect\":\"1s\",\"request\":\"15s\",\"per_try\":\"0s\","
	    "\"stream_idle\":\"5m\"},"
	    "\"retries\":{\"max\":2,\"on\":[\"connect-failure\",\"refused\",\"reset\","
	    "\"per-try-timeout\",\"502\",\"503\",\"504\"],"
	    "\"backoff\":{\"base\":\"25ms\",\"max\":\"250ms\"},"
	    "\"budget\":{\"ratio\":0.2,\"min_per_second\":10},\"buffer\":65536},"
	    "\"hedging\":null,"
	    "\"circuit_breaker\":{\"consecutive_failures\":5,\"open_for\":\"10s\","
	    "\"half_open_requests\":1,\"max_concurrent\":1024},"
	    "\"outlier_detection\":{\"consecutive_failures\":5,\"base_ejection\":\"30s\","
	    "\"max_ejection_percent\":50},"
	    "\"pool\":{\"max_idle_per_endpoint\":64,\"idle_timeout\":\"30s\","
	    "\"max_per_endpoint\":1024,\"max_requests_per_connection\":0,"
	    "\"max_connection_age\":\"0s\"},"
	    "\"load_balancer\":\"p2c_ewma\","
	    "\"headers\":{\"request\":{\"set\":{},\"add\":{},\"remove\":[]},"
	    "\"response\":{\"set\":{},\"add\":{},\"remove\":[]}},"
	    "\"compression\":{\"encodings\":[],\"min_size\":1024,"
	    "\"types\":[\"application/json\",\"text/*\",\"application/graphql-response+json\"],"
	    "\"level\":{\"zstd\":3,\"gzip\":1}},"
	    "\"rate_limit\":null,\"health_check\":null,"
	    "\"protocol\":\"http1\"}");
	/* the file's order, not sorted */
	expect("/services/1/name", "\"a-svc\"");
	expect("/services/1/endpoints", "[\"127.0.0.2:81\",\"a.example:81\"]");
	ck_assert_ptr_null(jat(json, "/services/2"));
}
END_TEST

START_TEST(test_empty)
{
	render("# nothing but a comment\n");
	expect("/services", "[]");
	expect("/listeners/inbound", "null");
}
END_TEST

static const char full[] =
    "workers: 3\n"
    "log: {level: debug, access: \"off\"}\n"
    "drain_delay: 250ms\n"
    "drain_timeout: 2m\n"
    "watch: true\n"
    "resolver: {nameservers: [\"127.0.0.1:53\", \"[::1]:5353\"]}\n"
    "defaults:\n"
    "  timeouts: {connect: 3s, per_try: 1500ms}\n"
    "  pool: {max_connection_age: 1h}\n"
    "listeners:\n"
    "  outbound: {address: \"127.0.0.1:15101\", max_request_body: 1MiB,\n"
    "             idle_timeout: 90s}\n"
    "  inbound:\n"
    "    address: 127.0.0.1:15443\n"
    "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem,\n"
    "          allowed_peers: [\"spiffe://t/a\", \"b\"]}\n"
    "    auth:\n"
    "      keys_env: [FERRY_TEST_KEY, FERRY_TEST_KEY_B]\n"
    "      keys_file: inbound.keys\n"
    "    local_app: 127.0.0.1:8080\n"
    "    local_app_protocol: h2c\n"
    "    timeouts: {request: 30s}\n"
    "    rate_limit: {rps: 1000, burst: 200}\n"
    "    max_concurrent: 64\n"
    "  admin: {address: \"127.0.0.1:15100\", hosts: [ferry.internal, \"a.example:8443\"]}\n"
    "services:\n"
    "  env-svc:\n"
    "    endpoints: [\"127.0.0.1:5000\"]\n"
    "    auth: {key_env: FERRY_TEST_KEY}\n"
    "  file-svc:\n"
    "    endpoints: [\"10.0.0.5:443\", \"backend.example:443\"]\n"
    "    hosts: [file.example]\n"
    "    tls: {ca: ca.pem, cert: cert.pem, key: key.pem, server_name: backend,\n"
    "          verify_san: \"spiffe://t/b\", min_version: \"1.3\"}\n"
    "    auth: {key_file: service.key}\n"
    "    listen: 127.0.0.1:9001\n"
    "    retries: {max: 3, on: [reset, \"503\"], budget: {ratio: 0.25}, buffer: 1KiB}\n"
    "    hedging: {after: 40ms, max: 2}\n"
    "    circuit_breaker: {consecutive_failures: 2, open_for: 30s}\n"
    "    rate_limit: {rps: 2.5, burst: 5}\n"
    "    health_check: {path: /health, interval: 1500ms}\n"
    "    load_balancer: round_robin\n"
    "  only-env:\n"
    "    endpoints: [\"127.0.0.1:5001\"]\n"
    "    auth: {key_env: FERRY_TEST_KEY_B}\n";

START_TEST(test_secrets_redacted)
{
	render(full);
	expect("/services/0/auth", "{\"key_env\":\"FERRY_TEST_KEY\",\"key\":\"<redacted>\"}");
	expect("/services/1/auth", "{\"key_file\":\"%s/service.key\",\"key\":\"<redacted>\"}",
	    dir);
	expect("/services/2/auth", "{\"key_env\":\"FERRY_TEST_KEY_B\",\"key\":\"<redacted>\"}");
	/* one "<redacted>" per loaded key: 2 variables and 2 lines of the file */
	expect("/listeners/inbound/auth", "{\"keys_env\":[\"FERRY_TEST_KEY\",\"FERRY_TEST_KEY_B\"],"
	    "\"keys_file\":\"%s/inbound.keys\",\"keys\":[\"<redacted>\",\"<redacted>\","
	    "\"<redacted>\",\"<redacted>\"]}", dir);
}
END_TEST

START_TEST(test_whole_schema)
{
	render(full);
	expect("/workers", "3");
	expect("/log", "{\"level\":\"debug\",\"access\":\"off\"}");
	expect("/drain_delay", "\"250ms\"");
	expect("/drain_timeout", "\"2m\"");
	expect("/watch", "true");
	expect("/resolver/nameservers", "[\"127.0.0.1:53\",\"[::1]:5353\"]");
	expect("/listeners/outbound", "{\"address\":\"127.0.0.1:15101\",\"allow_remote\":false,"
	    "\"max_connections\":10000,\"max_request_body\":1048576,\"idle_timeout\":\"90s\","
	    "\"header_read_timeout\":\"10s\"}");
	expect("/listeners/admin/address", "\"127.0.0.1:15100\"");
	expect("/listeners/admin/hosts", "[\"ferry.internal\",\"a.example:8443\"]");
	expect("/listeners/inbound/address", "\"127.0.0.1:15443\"");
	expect("/listeners/inbound/max_connections", "10000");
	expect("/listeners/inbound/handshake_timeout", "\"5s\"");
	expect("/listeners/inbound/tls", "{\"cert\":\"%s/cert.pem\",\"key\":\"%s/key.pem\","
	    "\"client_ca\":\"%s/ca.pem\",\"allowed_peers\":[\"spiffe://t/a\",\"b\"]}",
	    dir, dir, dir);
	expect("/listeners/inbound/local_app", "\"127.0.0.1:8080\"");
	expect("/listeners/inbound/local_app_protocol", "\"h2c\"");
	/* defaults.timeouts, then the inbound's own */
	expect("/listeners/inbound/timeouts", "{\"connect\":\"3s\",\"request\":\"30s\","
	    "\"per_try\":\"1500ms\",\"stream_idle\":\"5m\"}");
	expect("/listeners/inbound/rate_limit", "{\"rps\":1000,\"burst\":200}");
	expect("/listeners/inbound/max_concurrent", "64");

	expect("/services/0/name", "\"env-svc\"");
	expect("/services/0/tls", "null");
	expect("/services/0/timeouts/connect", "\"3s\"");
	expect("/services/0/pool/max_connection_age", "\"1h\"");
	expect("/services/1/name", "\"file-svc\"");
	expect("/services/1/hosts", "[\"file.example\"]");
	expect("/services/1/listen", "{\"address\":\"127.0.0.1:9001\",\"allow_remote\":false}");
	expect("/services/1/tls", "{\"ca\":\"%s/ca.pem\",\"cert\":\"%s/cert.pem\","
	    "\"key\":\"%s/key.pem\",\"server_name\":\"backend\","
	    "\"verify_san\":\"spiffe://t/b\",\"min_version\":\"1.3\"}", dir, dir, dir);
	expect("/services/1/retries", "{\"max\":3,\"on\":[\"reset\",\"503\"],"
	    "\"backoff\":{\"base\":\"25ms\",\"max\":\"250ms\"},"
	    "\"budget\":{\"ratio\":0.25,\"min_per_second\":10},\"buffer\":1024}");
	expect("/services/1/circuit_breaker", "{\"consecutive_failures\":2,\"open_for\":\"30s\","
	    "\"half_open_requests\":1,\"max_concurrent\":1024}");
	expect("/services/1/hedging", "{\"after\":\"40ms\",\"max\":2}");
	expect("/services/1/rate_limit", "{\"rps\":2.5,\"burst\":5}");
	expect("/services/1/health_check", "{\"path\":\"/health\",\"interval\":\"1500ms\","
	    "\"timeout\":\"1s\",\"healthy\":2,\"unhealthy\":3}");
	expect("/services/1/load_balancer", "\"round_robin\"");
	expect("/services/1/tls/min_version", "\"1.3\"");
}
END_TEST

START_TEST(test_local_app_protocol_default)
{
	/* SPEC §12: http1 unless the inbound listener says h2c */
	render("listeners:\n  inbound:\n"
	    "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	    "    local_app: 127.0.0.1:8080\n");
	expect("/listeners/inbound/local_app_protocol", "\"http1\"");
}
END_TEST

START_TEST(test_escaping)
{
	/* a path with a quote, a backslash, a tab and UTF-8 stays one string */
	render("log: {access: \"/tmp/we\\\"ird\\\\p\\tx-\xc3\xa9\"}\n");
	expect("/log/access", "\"/tmp/we\\\"ird\\\\p\\u0009x-\xc3\xa9\"");
}
END_TEST

START_TEST(test_checker)
{
	/* the checker itself rejects what it must */
	static const char *const bad[] = {
		"", "{", "{\"a\":1,}", "[1,]", "{\"a\":1,\"a\":2}", "{a:1}", "\"\x01\"",
		"\"\xc3\"", "01", "1.", "{\"a\" 1}", "[1] x", "nul", "{\"a\":[}",
	};
	static const char *const good[] = {
		"{}", "[]", "{\"a\":[1,-2.5e3,true,false,null,\"\\u00e9\"]}", " 0 ",
		"{\"a\":{\"a\":1}}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!jvalid(bad[i], strlen(bad[i])), "accepted %s", bad[i]);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(jvalid(good[i], strlen(good[i])), "rejected %s", good[i]);
}
END_TEST

static Suite *
config_json_suite(void)
{
	Suite *s = suite_create("config_json");
	TCase *tc = tcase_create("config_json");

	tcase_add_test(tc, test_checker);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_compression);
	tcase_add_test(tc, test_header_rules);
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_secrets_redacted);
	tcase_add_test(tc, test_whole_schema);
	tcase_add_test(tc, test_escaping);
	tcase_add_test(tc, test_local_app_protocol_default);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	int rc;

	setenv("FERRY_TEST_KEY_B", SECRET_B, 1);
	rc = run_suite(config_json_suite());
	free(json);
	return rc;
}
