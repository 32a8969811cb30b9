/*
 * Unit tests for the configuration loader (src/config*.c, src/tls_ctx.c):
 * a table of broken files with the exact messages and positions expected,
 * good files checked for defaults and inheritance, and the value parsers.
 *
 * Every file is written into one mkdtemp() directory, beside test
 * certificates made with the openssl command; messages are compared with
 * that directory replaced by "D".
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "config.h"
#include "tls_ctx.h"

#define F "D/ferry.yaml"
#define SECRET "s3cr3t-Value-Never-Printed"
#define FILE_SECRET "file-Secret-Never-Printed"

static char dir[256];
static char cfgpath[320];
static char errs[65536];
static int nerrs;

/* Appends LINE with the temp directory shown as "D". */
static void
collect(void *arg, const char *line)
{
	size_t dl = strlen(dir), o = strlen(errs);

	(void)arg;
	nerrs++;
	while (*line != '\0' && o + 2 < sizeof(errs)) {
		if (strncmp(line, dir, dl) == 0) {
			errs[o++] = 'D';
			line += dl;
		} else {
			errs[o++] = *line++;
		}
	}
	errs[o++] = '\n';
	errs[o] = '\0';
}

static void
write_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	/* also used before the tests run, so no ck_assert here */
	if ((f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		abort();
	}
	fputs(text, f);
	fclose(f);
}

static struct config *
load(const char *yaml)
{
	write_file("ferry.yaml", yaml);
	errs[0] = '\0';
	nerrs = 0;
	return config_load(cfgpath, collect, NULL);
}

/* A config that must load; fails the test with its errors otherwise. */
static struct config *
load_ok(const char *yaml)
{
	struct config *c = load(yaml);

	ck_assert_msg(c != NULL, "expected to load, got:\n%s", errs);
	ck_assert_str_eq(errs, "");
	return c;
}

static const struct conf_service *
svc(const struct config *c, const char *name)
{
	const struct conf_service *s = config_service_by_name(c, name, strlen(name));

	ck_assert_msg(s != NULL, "no service %s", name);
	return s;
}

/*
 * Broken files: every error, exactly as reported, in file order.
 */
struct bad_case {
	const char *name;
	const char *yaml;
	const char *want;
};

static const struct bad_case bad_cases[] = {
	{ "yaml syntax error",
	  "listeners:\n  outbound: [1, 2\n",
	  F ":3:1: YAML syntax error: did not find expected ',' or ']'\n" },
	{ "yaml: tab indentation",
	  "log:\n\tlevel: info\n",
	  F ":2:1: YAML syntax error: found character that cannot start any token\n" },
	{ "yaml: two documents",
	  "workers: 1\n---\nworkers: 2\n",
	  F ":2:1: YAML syntax error: more than one document in the file\n" },
	{ "yaml: unknown alias",
	  "workers: *nope\n",
	  F ":1:10: YAML syntax error: unknown alias (anchors must be defined before "
	  "use, outside the node)\n" },
	{ "unknown top-level key",
	  "listners:\n  outbound: {}\n",
	  F ":1:1: unknown key \"listners\"\n" },
	{ "unknown nested key",
	  "listeners:\n  outbound:\n    adress: 127.0.0.1:1\n",
	  F ":3:5: listeners.outbound: unknown key \"adress\"\n" },
	{ "unknown key in a service",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n    timeoutz: {request: 2s}\n",
	  F ":4:5: services.a: unknown key \"timeoutz\"\n" },
	{ "duplicate key",
	  "defaults:\n  timeouts:\n    request: 1s\n    request: 2s\n",
	  F ":4:5: defaults.timeouts: duplicate key \"request\"\n" },
	{ "duplicate top-level key",
	  "workers: 1\nworkers: 2\n",
	  F ":2:1: duplicate key \"workers\"\n" },
	{ "duplicate service",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "  a:\n    endpoints: [\"127.0.0.1:2\"]\n",
	  F ":4:3: services: duplicate service \"a\"\n" },
	{ "duplicate service, other case",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "  A:\n    endpoints: [\"127.0.0.1:2\"]\n",
	  F ":4:3: services: duplicate service \"A\" (names are case-insensitive)\n" },
	{ "host of another service",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "  b:\n    endpoints: [\"127.0.0.1:2\"]\n    hosts: [x, A]\n",
	  F ":6:16: services.b.hosts: \"A\" already routes to service a\n" },
	{ "mapping key not a scalar",
	  "{[a]: 1}\n",
	  F ":1:2: a mapping key must be a scalar\n" },
	{ "wrong type: list for mapping",
	  "listeners: [a]\n",
	  F ":1:12: listeners: expected a mapping, got a list\n" },
	{ "wrong type: mapping for list",
	  "services:\n  a:\n    endpoints: {x: 1}\n",
	  F ":3:16: services.a.endpoints: expected a list, got a mapping\n" },
	{ "wrong type: list for scalar",
	  "defaults:\n  timeouts:\n    request: [1s]\n",
	  F ":3:14: defaults.timeouts.request: expected a duration, got a list\n" },
	{ "wrong type: top level",
	  "- a\n- b\n",
	  F ":1:1: expected a mapping at the top level, got a list\n" },
	{ "missing value",
	  "drain_delay:\n",
	  F ":1:13: drain_delay: missing value (expected a duration)\n" },
	{ "bad duration",
	  "services:\n  user-service:\n    endpoints: [\"127.0.0.1:5000\"]\n"
	  "    timeouts: {request: 5x}\n",
	  F ":4:25: services.user-service.timeouts.request: bad duration \"5x\" "
	  "(unit must be ms, s, m or h)\n" },
	{ "duration without unit",
	  "drain_delay: 5\n",
	  F ":1:14: drain_delay: bad duration \"5\" (missing unit: ms, s, m or h)\n" },
	{ "negative duration",
	  "drain_timeout: -5s\n",
	  F ":1:16: drain_timeout: bad duration \"-5s\" (negative)\n" },
	{ "duration overflow",
	  "drain_timeout: 99999999999999999999h\n",
	  F ":1:16: drain_timeout: bad duration \"99999999999999999999h\" "
	  "(too large; at most 100000h)\n" },
	{ "zero duration where not allowed",
	  "defaults:\n  timeouts: {connect: 0s}\n",
	  F ":2:23: defaults.timeouts.connect: 0s is out of range (1ms..100000h)\n" },
	{ "bad size",
	  "defaults:\n  retries:\n    buffer: 12XB\n",
	  F ":3:13: defaults.retries.buffer: bad size \"12XB\" (unit must be B, KiB, "
	  "MiB, GiB, TiB, KB, MB, GB or TB)\n" },
	{ "bad addresses",
	  "services:\n  a:\n    endpoints:\n"
	  "      - 10.0.0.1\n"
	  "      - \"[::1]\"\n"
	  "      - h:0\n"
	  "      - h:65536\n"
	  "      - ::1:80\n"
	  "      - \"\"\n"
	  "      - 300.1.1.1:80\n"
	  "      - \"a b:80\"\n",
	  F ":4:9: services.a.endpoints[0]: bad address \"10.0.0.1\" (missing port)\n"
	  F ":5:9: services.a.endpoints[1]: bad address \"[::1]\" (missing port)\n"
	  F ":6:9: services.a.endpoints[2]: bad address \"h:0\" (port must be 1..65535)\n"
	  F ":7:9: services.a.endpoints[3]: bad address \"h:65536\" (port must be 1..65535)\n"
	  F ":8:9: services.a.endpoints[4]: bad address \"::1:80\" (an IPv6 address "
	  "needs brackets, e.g. [::1]:80)\n"
	  F ":9:9: services.a.endpoints[5]: bad address \"\" (empty)\n"
	  F ":10:9: services.a.endpoints[6]: bad address \"300.1.1.1:80\" (not an IPv4 address)\n"
	  F ":11:9: services.a.endpoints[7]: bad address \"a b:80\" (not an IP address "
	  "or host name)\n" },
	{ "listener address must be an IP",
	  "listeners:\n  admin: {address: \"example.com:80\"}\n",
	  F ":2:20: listeners.admin.address: bad address \"example.com:80\" "
	  "(needs an IP address or localhost)\n" },
	{ "out of range numbers",
	  "workers: 0\n"
	  "defaults:\n"
	  "  outlier_detection: {max_ejection_percent: 101}\n"
	  "  circuit_breaker: {half_open_requests: -1}\n"
	  "  retries: {budget: {ratio: -0.5}}\n",
	  F ":1:10: workers: 0 is out of range (1..1024)\n"
	  F ":3:45: defaults.outlier_detection.max_ejection_percent: 101 is out of "
	  "range (0..100)\n"
	  F ":4:41: defaults.circuit_breaker.half_open_requests: -1 is out of range "
	  "(1..1000000)\n"
	  F ":5:29: defaults.retries.budget.ratio: -0.5 is out of range (0..100)\n" },
	{ "too many workers",
	  "workers: 1025\n",
	  F ":1:10: workers: 1025 is out of range (1..1024)\n" },
	{ "not a number",
	  "workers: two\nwatch: maybe\n",
	  F ":1:10: workers: expected an integer, got \"two\"\n"
	  F ":2:8: watch: expected true or false, got \"maybe\"\n" },
	{ "unset variable",
	  "workers: ${FERRY_TEST_UNSET}\n",
	  F ":1:10: workers: environment variable FERRY_TEST_UNSET is not set\n" },
	{ "unterminated variable",
	  "workers: ${FERRY_TEST_PORT\n",
	  F ":1:10: workers: unterminated \"${\"\n" },
	{ "unknown enum values",
	  "log: {level: verbose}\n"
	  "defaults:\n"
	  "  load_balancer: least_conn\n"
	  "  retries: {on: [reset, 5xx]}\n"
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], protocol: h3}\n",
	  F ":1:14: log.level: unknown value \"verbose\" (expected error, warn, info or debug)\n"
	  F ":3:18: defaults.load_balancer: unknown value \"least_conn\" (expected "
	  "p2c_ewma, round_robin or random)\n"
	  F ":4:25: defaults.retries.on[1]: unknown retry condition \"5xx\" (expected "
	  "connect-failure, refused, reset, per-try-timeout, 502, 503 or 504)\n"
	  F ":6:45: services.a.protocol: unknown value \"h3\" (expected http1 or h2)\n" },
	{ "min_version",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    tls: {ca: ca.pem, min_version: \"1.1\"}\n",
	  F ":4:36: services.a.tls.min_version: unknown value \"1.1\" (expected \"1.2\" "
	  "or \"1.3\")\n" },
	{ "missing certificate file",
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n    tls:\n"
	  "      ca: ca.pem\n      cert: missing.pem\n      key: key.pem\n",
	  F ":6:13: services.a.tls.cert: cannot load certificate D/missing.pem: "
	  "No such file or directory\n" },
	{ "certificate and key do not match",
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n    tls:\n"
	  "      ca: ca.pem\n      cert: cert.pem\n      key: other.key\n",
	  F ":7:12: services.a.tls.key: private key D/other.key does not match "
	  "certificate D/cert.pem\n" },
	{ "CA file not PEM",
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n    tls:\n"
	  "      ca: garbage.pem\n",
	  F ":5:11: services.a.tls.ca: cannot load CA D/garbage.pem: no certificate "
	  "or crl found\n" },
	{ "key file not PEM",
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n    tls:\n"
	  "      ca: ca.pem\n      cert: cert.pem\n      key: garbage.pem\n",
	  F ":7:12: services.a.tls.key: cannot load private key D/garbage.pem: "
	  "not a PEM private key (unsupported)\n" },
	{ "tls without ca, cert without key",
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n    tls: {cert: cert.pem}\n",
	  F ":4:5: services.a.tls: missing required key \"ca\"\n"
	  F ":4:5: services.a.tls: cert and key must be given together\n" },
	{ "two listeners on one address",
	  "listeners:\n"
	  "  outbound: {address: \"127.0.0.1:15001\"}\n"
	  "  admin: {address: \"127.0.0.1:15001\"}\n",
	  F ":3:20: listeners.admin.address: 127.0.0.1:15001 is already used by "
	  "listeners.outbound.address\n" },
	{ "service listen on the admin port, via the wildcard",
	  "listeners:\n"
	  "  inbound:\n"
	  "    address: 0.0.0.0:9000\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    local_app: 127.0.0.1:8080\n"
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], listen: \"127.0.0.1:9000\"}\n",
	  F ":7:43: services.a.listen: 127.0.0.1:9000 is already used by "
	  "listeners.inbound.address\n" },
	{ "listener not on loopback",
	  "listeners:\n"
	  "  outbound: {address: \"0.0.0.0:15001\"}\n"
	  "  admin: {address: \"[::]:15000\"}\n"
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], listen: \"10.1.1.1:9001\"}\n",
	  F ":2:23: listeners.outbound.address: 0.0.0.0:15001 is not a loopback address "
	  "(set allow_remote: true to accept remote connections)\n"
	  F ":3:20: listeners.admin.address: [::]:15000 is not a loopback address "
	  "(set allow_remote: true to accept remote connections)\n"
	  F ":5:43: services.a.listen: 10.1.1.1:9001 is not a loopback address "
	  "(set allow_remote: true to accept remote connections)\n" },
	{ "auth without tls to a remote endpoint",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\", \"10.0.0.1:80\"]\n"
	  "    auth: {key_env: FERRY_TEST_KEY}\n",
	  F ":4:5: services.a.auth: a service key must not cross the network in clear "
	  "text: add tls, or use only loopback endpoints\n" },
	{ "auth without tls to srv",
	  "services:\n  a:\n    srv: _http._tcp.a.example\n"
	  "    auth: {key_env: FERRY_TEST_KEY}\n",
	  F ":4:5: services.a.auth: a service key must not cross the network in clear "
	  "text: add tls, or use only loopback endpoints\n" },
	{ "key_env and key_file",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    auth: {key_env: FERRY_TEST_KEY, key_file: key.txt}\n",
	  F ":4:37: services.a.auth: key_env and key_file are mutually exclusive\n" },
	{ "auth without a key",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n    auth: {}\n",
	  F ":4:5: services.a.auth: missing required key \"key_env\" or \"key_file\"\n" },
	{ "key_env unset, empty, not a name",
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], auth: {key_env: FERRY_TEST_UNSET}}\n"
	  "  b: {endpoints: [\"127.0.0.1:1\"], auth: {key_env: FERRY_TEST_EMPTY}}\n"
	  "  c: {endpoints: [\"127.0.0.1:1\"], auth: {key_env: \"a-b\"}}\n",
	  F ":2:51: services.a.auth.key_env: environment variable FERRY_TEST_UNSET is "
	  "not set\n"
	  F ":3:51: services.b.auth.key_env: environment variable FERRY_TEST_EMPTY is "
	  "empty\n"
	  F ":4:51: services.c.auth.key_env: not an environment variable name "
	  "(letters, digits and '_')\n" },
	{ "key_file missing and empty",
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], auth: {key_file: nokey.txt}}\n"
	  "  b: {endpoints: [\"127.0.0.1:1\"], auth: {key_file: empty.txt}}\n",
	  F ":2:52: services.a.auth.key_file: cannot read D/nokey.txt: No such file "
	  "or directory\n"
	  F ":3:52: services.b.auth.key_file: D/empty.txt is empty\n" },
	{ "per_try more than request",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    timeouts: {request: 2s, per_try: 3s}\n",
	  F ":4:38: services.a.timeouts.per_try: 3s is more than timeouts.request (2s)\n" },
	{ "per_try from defaults more than a service's request",
	  "defaults: {timeouts: {per_try: 5s}}\n"
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    timeouts: {request: 2s}\n",
	  F ":5:25: services.a.timeouts.request: 2s is less than timeouts.per_try (5s)\n" },
	{ "backoff base more than max",
	  "defaults: {retries: {backoff: {base: 1s}}}\n",
	  F ":1:38: defaults.retries.backoff.base: 1s is more than backoff.max (250ms)\n" },
	{ "endpoints and srv",
	  "services:\n"
	  "  a: {endpoints: [\"127.0.0.1:1\"], srv: _http._tcp.a.example}\n"
	  "  b: {hosts: [b.example]}\n",
	  F ":2:35: services.a: endpoints and srv are mutually exclusive\n"
	  F ":3:3: services.b: missing required key \"endpoints\" (or \"srv\")\n" },
	{ "empty endpoints, bad service name",
	  "services:\n  \"a b\": {endpoints: []}\n",
	  F ":2:3: services: bad service name \"a b\" (letters, digits, '-', '_' and "
	  "'.' only)\n"
	  F ":2:22: services.a b.endpoints: must not be empty\n" },
	{ "inbound without tls and local_app",
	  "listeners:\n  inbound:\n    address: 0.0.0.0:15443\n",
	  F ":2:3: listeners.inbound: missing required key \"tls\"\n"
	  F ":2:3: listeners.inbound: missing required key \"local_app\"\n" },
	{ "inbound tls without key and client_ca",
	  "listeners:\n  inbound:\n    tls: {cert: cert.pem}\n    local_app: 127.0.0.1:8080\n",
	  F ":3:5: listeners.inbound.tls: missing required key \"key\"\n"
	  F ":3:5: listeners.inbound.tls: missing required key \"client_ca\"\n" },
	{ "inbound keys_env unset",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    auth: {keys_env: [FERRY_TEST_KEY, FERRY_TEST_UNSET]}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":4:39: listeners.inbound.auth.keys_env[1]: environment variable "
	  "FERRY_TEST_UNSET is not set\n" },
	{ "inbound server key does not match",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: other.key, client_ca: ca.pem}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":3:32: listeners.inbound.tls.key: private key D/other.key does not match "
	  "certificate D/cert.pem\n" },
	{ "rate limit and health check",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    rate_limit: {burst: 5}\n"
	  "    health_check: {path: health}\n",
	  F ":4:5: services.a.rate_limit: missing required key \"rps\"\n"
	  F ":5:26: services.a.health_check.path: \"health\" must start with '/'\n" },
	{ "several errors in one file, all reported in order",
	  "workers: 0\n"
	  "listners: {}\n"
	  "defaults:\n"
	  "  timeouts: {request: 5x}\n"
	  "services:\n"
	  "  a:\n"
	  "    endpoints: [\"127.0.0.1\"]\n"
	  "    pool: {max_per_endpoint: 0}\n",
	  F ":1:10: workers: 0 is out of range (1..1024)\n"
	  F ":2:1: unknown key \"listners\"\n"
	  F ":4:23: defaults.timeouts.request: bad duration \"5x\" (unit must be ms, s, "
	  "m or h)\n"
	  F ":7:17: services.a.endpoints[0]: bad address \"127.0.0.1\" (missing port)\n"
	  F ":8:30: services.a.pool.max_per_endpoint: 0 is out of range (1..1000000)\n" },
};

START_TEST(test_bad_config)
{
	const struct bad_case *bc = &bad_cases[_i];
	struct config *c = load(bc->yaml);

	ck_assert_msg(c == NULL, "%s: loaded", bc->name);
	ck_assert_msg(strcmp(errs, bc->want) == 0, "%s:\nwant:\n%sgot:\n%s",
	    bc->name, bc->want, errs);
}
END_TEST

START_TEST(test_unreadable_file)
{
	struct config *c;

	errs[0] = '\0';
	c = config_load("/nonexistent/ferry.yaml", collect, NULL);
	ck_assert_ptr_null(c);
	ck_assert_str_eq(errs, "/nonexistent/ferry.yaml: cannot read: No such file "
	    "or directory\n");
	errs[0] = '\0';
	c = config_load(dir, collect, NULL);
	ck_assert_ptr_null(c);
	ck_assert_str_eq(errs, "D: cannot read: Is a directory\n");
}
END_TEST

/* A relative config path: relative files resolve against its directory. */
START_TEST(test_relative_config_path)
{
	struct config *c;
	char cwd[512], want[512];

	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir("/"), 0);
	write_file("ferry.yaml", "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n"
	    "    tls: {ca: ca.pem}\n");
	errs[0] = '\0';
	c = config_load(cfgpath + 1, collect, NULL);
	ck_assert_msg(c != NULL, "%s", errs);
	ck_assert_str_eq(c->path, cfgpath + 1);
	/* the config's directory, relative as its path was */
	snprintf(want, sizeof(want), "%s/ca.pem", dir + 1);
	ck_assert_str_eq(c->services[0].tls.ca, want);
	config_unref(c);
	ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

START_TEST(test_defaults)
{
	struct config *c = load_ok("services:\n  a:\n    endpoints: [\"127.0.0.1:80\"]\n");
	const struct conf_service *s = svc(c, "a");

	ck_assert_str_eq(c->path, cfgpath);
	ck_assert_uint_ge(c->workers, 1);
	ck_assert_uint_le(c->workers, 4);
	ck_assert_uint_eq(c->workers, config_default_workers());
	ck_assert_int_eq(c->log_level, LOG_INFO);
	ck_assert_str_eq(c->log_access, "stdout");
	ck_assert_int_eq(c->drain_delay, 5000);
	ck_assert_int_eq(c->drain_timeout, 30000);
	ck_assert(!c->watch);
	ck_assert_uint_eq(c->n_nameservers, 0);
	ck_assert_str_eq(c->outbound.address.text, "127.0.0.1:15001");
	ck_assert_str_eq(c->admin.address.text, "127.0.0.1:15000");
	ck_assert_uint_eq(c->outbound.max_connections, 10000);
	ck_assert_uint_eq(c->outbound.max_request_body, 0);
	ck_assert_int_eq(c->outbound.idle_timeout, 60000);
	ck_assert_int_eq(c->outbound.header_read_timeout, 10000);
	ck_assert(!c->outbound.allow_remote);
	ck_assert(!c->inbound.enabled);

	ck_assert_int_eq(s->timeouts.connect, 1000);
	ck_assert_int_eq(s->timeouts.request, 15000);
	ck_assert_int_eq(s->timeouts.per_try, 0);
	ck_assert_int_eq(s->timeouts.stream_idle, 300000);
	ck_assert_uint_eq(s->retries.max, 2);
	ck_assert_uint_eq(s->retries.on, RETRY_ON_CONNECT_FAILURE | RETRY_ON_REFUSED |
	    RETRY_ON_RESET | RETRY_ON_PER_TRY_TIMEOUT | RETRY_ON_502 | RETRY_ON_503 |
	    RETRY_ON_504);
	ck_assert_int_eq(s->retries.backoff_base, 25);
	ck_assert_int_eq(s->retries.backoff_max, 250);
	ck_assert_double_eq(s->retries.budget_ratio, 0.2);
	ck_assert_uint_eq(s->retries.budget_min_per_second, 10);
	ck_assert_uint_eq(s->retries.buffer, 65536);
	ck_assert_uint_eq(s->breaker.consecutive_failures, 5);
	ck_assert_int_eq(s->breaker.open_for, 10000);
	ck_assert_uint_eq(s->breaker.half_open_requests, 1);
	ck_assert_uint_eq(s->breaker.max_concurrent, 1024);
	ck_assert_uint_eq(s->outlier.consecutive_failures, 5);
	ck_assert_int_eq(s->outlier.base_ejection, 30000);
	ck_assert_uint_eq(s->outlier.max_ejection_percent, 50);
	ck_assert_uint_eq(s->pool.max_idle_per_endpoint, 64);
	ck_assert_int_eq(s->pool.idle_timeout, 30000);
	ck_assert_uint_eq(s->pool.max_per_endpoint, 1024);
	ck_assert_uint_eq(s->pool.max_requests_per_connection, 0);
	ck_assert_int_eq(s->pool.max_connection_age, 0);
	ck_assert_int_eq(s->load_balancer, LB_P2C_EWMA);
	ck_assert_int_eq(s->protocol, PROTO_HTTP1);
	ck_assert_int_eq(s->dns_refresh, 30000);
	ck_assert(!s->rate_limit.enabled);
	ck_assert(!s->health_check.enabled);
	ck_assert(!s->tls.enabled);
	ck_assert_ptr_null(s->tls.ctx);
	ck_assert_ptr_null(s->auth_key);
	ck_assert(!s->has_listen);
	ck_assert_str_eq(s->upstream_host, "a");
	ck_assert_int_eq(s->pos.line, 2);
	ck_assert_int_eq(s->pos.col, 3);
	ck_assert_uint_eq(s->n_endpoints, 1);
	ck_assert(s->endpoints[0].is_ip && s->endpoints[0].is_loopback);
	ck_assert_int_eq(s->endpoints[0].pos.line, 3);
	ck_assert_int_eq(s->endpoints[0].pos.col, 17);
	config_unref(c);
}
END_TEST

START_TEST(test_empty_file)
{
	struct config *c = load_ok("# nothing but a comment\n");

	ck_assert_uint_eq(c->n_services, 0);
	ck_assert_str_eq(c->outbound.address.text, "127.0.0.1:15001");
	config_unref(c);
}
END_TEST

START_TEST(test_inheritance)
{
	struct config *c = load_ok(
	    "defaults:\n"
	    "  timeouts: {connect: 3s, stream_idle: 1m}\n"
	    "  retries: {max: 1, backoff: {base: 50ms, max: 1s}, on: [reset]}\n"
	    "  circuit_breaker: {open_for: 20s}\n"
	    "  load_balancer: round_robin\n"
	    "listeners:\n"
	    "  inbound:\n"
	    "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	    "    local_app: 127.0.0.1:8080\n"
	    "    timeouts: {request: 30s}\n"
	    "services:\n"
	    "  a:\n"
	    "    endpoints: [\"127.0.0.1:1\"]\n"
	    "    timeouts: {request: 2s}\n"
	    "    retries: {max: 3, backoff: {max: 2s}}\n"
	    "  b:\n"
	    "    endpoints: [\"127.0.0.1:2\"]\n"
	    "    load_balancer: random\n"
	    "    circuit_breaker: {consecutive_failures: 0}\n");
	const struct conf_service *a = svc(c, "a"), *b = svc(c, "b");

	/* a: request overridden, the rest from defaults, then built-ins */
	ck_assert_int_eq(a->timeouts.connect, 3000);
	ck_assert_int_eq(a->timeouts.request, 2000);
	ck_assert_int_eq(a->timeouts.per_try, 0);
	ck_assert_int_eq(a->timeouts.stream_idle, 60000);
	ck_assert_uint_eq(a->retries.max, 3);
	ck_assert_int_eq(a->retries.backoff_base, 50);
	ck_assert_int_eq(a->retries.backoff_max, 2000);
	ck_assert_uint_eq(a->retries.on, RETRY_ON_RESET);
	ck_assert_uint_eq(a->retries.buffer, 65536);
	ck_assert_int_eq(a->breaker.open_for, 20000);
	ck_assert_uint_eq(a->breaker.consecutive_failures, 5);
	ck_assert_int_eq(a->load_balancer, LB_ROUND_ROBIN);
	/* b: only defaults */
	ck_assert_int_eq(b->timeouts.connect, 3000);
	ck_assert_int_eq(b->timeouts.request, 15000);
	ck_assert_uint_eq(b->retries.max, 1);
	ck_assert_int_eq(b->retries.backoff_max, 1000);
	ck_assert_int_eq(b->load_balancer, LB_RANDOM);
	ck_assert_uint_eq(b->breaker.consecutive_failures, 0);
	/* inbound: defaults.timeouts, then its own */
	ck_assert(c->inbound.enabled);
	ck_assert_int_eq(c->inbound.timeouts.connect, 3000);
	ck_assert_int_eq(c->inbound.timeouts.request, 30000);
	ck_assert_int_eq(c->inbound.timeouts.stream_idle, 60000);
	ck_assert_str_eq(c->inbound.listener.address.text, "0.0.0.0:15443");
	ck_assert_uint_eq(c->inbound.max_concurrent, 1024);
	ck_assert_ptr_nonnull(c->inbound.ctx);
	ck_assert(!c->inbound.auth_enabled);
	config_unref(c);
}
END_TEST

/* The whole schema of SPEC §3, with every key given. */
START_TEST(test_full_schema)
{
	struct config *c = load_ok(
	    "workers: 2\n"
	    "log:\n  level: debug\n  access: access.log\n"
	    "drain_delay: 1s\n"
	    "drain_timeout: 0\n"
	    "watch: true\n"
	    "resolver:\n  nameservers: [\"127.0.0.1:53\", \"[::1]:5353\"]\n"
	    "listeners:\n"
	    "  outbound:\n"
	    "    address: 127.0.0.1:${FERRY_TEST_PORT}\n"
	    "    max_connections: 100\n"
	    "    max_request_body: 1MiB\n"
	    "    idle_timeout: 2m\n"
	    "    header_read_timeout: 500ms\n"
	    "  inbound:\n"
	    "    address: \"[::]:15443\"\n"
	    "    allow_remote: true\n"
	    "    tls:\n"
	    "      cert: cert.pem\n"
	    "      key: key.pem\n"
	    "      client_ca: ca.pem\n"
	    "      allowed_peers: [\"spiffe://goodgo/order-service\", \"order-service\"]\n"
	    "    auth:\n"
	    "      keys_env: [FERRY_TEST_KEY]\n"
	    "      keys_file: inbound.keys\n"
	    "    local_app: localhost:8080\n"
	    "    timeouts: { request: 30s }\n"
	    "    rate_limit: { rps: 1000, burst: 200 }\n"
	    "    max_concurrent: 64\n"
	    "  admin:\n"
	    "    address: 0.0.0.0:15000\n"
	    "    allow_remote: true\n"
	    "defaults:\n"
	    "  timeouts: {connect: 1s, request: 15s, per_try: 0s, stream_idle: 5m}\n"
	    "  retries:\n"
	    "    max: 2\n"
	    "    on: [connect-failure, refused, 503]\n"
	    "    backoff: { base: 25ms, max: 250ms }\n"
	    "    budget: { ratio: 0.5, min_per_second: 3 }\n"
	    "    buffer: 64KB\n"
	    "  circuit_breaker: {consecutive_failures: 7, open_for: 1h, "
	    "half_open_requests: 2, max_concurrent: 10}\n"
	    "  outlier_detection: {consecutive_failures: 4, base_ejection: 10s, "
	    "max_ejection_percent: 100}\n"
	    "  pool: {max_idle_per_endpoint: 0, idle_timeout: 5s, max_per_endpoint: 9, "
	    "max_requests_per_connection: 100, max_connection_age: 10m}\n"
	    "  load_balancer: p2c_ewma\n"
	    "services:\n"
	    "  user-service:\n"
	    "    endpoints: [\"10.0.0.5:5000\", \"user-service.prod.svc.cluster.local:5000\"]\n"
	    "    hosts: [\"user-service.prod.svc.cluster.local\", \"users\"]\n"
	    "    dns_refresh: 10s\n"
	    "    listen: 127.0.0.1:9001\n"
	    "    tls:\n"
	    "      ca: ca.pem\n"
	    "      cert: cert.pem\n"
	    "      key: key.pem\n"
	    "      server_name: user-service\n"
	    "      verify_san: \"spiffe://goodgo/user-service\"\n"
	    "      min_version: \"1.3\"\n"
	    "    auth:\n"
	    "      key_env: FERRY_TEST_KEY\n"
	    "    timeouts: { request: 2s, per_try: 500ms }\n"
	    "    retries: { max: 3 }\n"
	    "    rate_limit: { rps: 2.5 }\n"
	    "    health_check: { path: /health, interval: 5s, timeout: 1s, healthy: 2, "
	    "unhealthy: 3 }\n"
	    "    protocol: h2\n"
	    "  order-service:\n"
	    "    srv: _https._tcp.order-service.prod.svc.cluster.local\n"
	    "    listen: {address: \"0.0.0.0:9002\", allow_remote: true}\n"
	    "    hosts: [orders]\n"
	    "    tls: {ca: ca.pem}\n"
	    "    auth: {key_file: service.key}\n");
	const struct conf_service *u = svc(c, "user-service"), *o = svc(c, "ORDERS:80");
	const struct conf_inbound *in = &c->inbound;

	ck_assert_uint_eq(c->workers, 2);
	ck_assert_int_eq(c->log_level, LOG_DEBUG);
	ck_assert(strncmp(c->log_access, dir, strlen(dir)) == 0);
	ck_assert_int_eq(c->drain_delay, 1000);
	ck_assert_int_eq(c->drain_timeout, 0);
	ck_assert(c->watch);
	ck_assert_uint_eq(c->n_nameservers, 2);
	ck_assert_str_eq(c->nameservers[1].host, "::1");
	ck_assert_uint_eq(c->nameservers[1].port, 5353);
	ck_assert_str_eq(c->outbound.address.text, "127.0.0.1:15099");
	ck_assert_uint_eq(c->outbound.address.port, 15099);
	ck_assert_uint_eq(c->outbound.max_connections, 100);
	ck_assert_uint_eq(c->outbound.max_request_body, 1 << 20);
	ck_assert_int_eq(c->outbound.idle_timeout, 120000);
	ck_assert_int_eq(c->outbound.header_read_timeout, 500);
	ck_assert(c->admin.allow_remote);

	ck_assert(in->enabled && in->listener.allow_remote);
	ck_assert_ptr_nonnull(in->ctx);
	ck_assert_uint_eq(in->n_allowed_peers, 2);
	ck_assert_str_eq(in->allowed_peers[1], "order-service");
	ck_assert(in->auth_enabled);
	ck_assert_uint_eq(in->n_auth_keys_env, 1);
	ck_assert_uint_eq(in->n_auth_keys, 3);	/* one from env, two from the file */
	ck_assert_str_eq(in->auth_keys[0], SECRET);
	ck_assert_str_eq(in->auth_keys[1], "first-key");
	ck_assert_str_eq(in->auth_keys[2], "second key");
	ck_assert_str_eq(in->local_app.host, "localhost");
	ck_assert(in->local_app.is_loopback && !in->local_app.is_ip);
	ck_assert_int_eq(in->timeouts.request, 30000);
	ck_assert(in->rate_limit.enabled);
	ck_assert_double_eq(in->rate_limit.rps, 1000);
	ck_assert_uint_eq(in->rate_limit.burst, 200);
	ck_assert_uint_eq(in->max_concurrent, 64);

	ck_assert_uint_eq(u->n_endpoints, 2);
	ck_assert(!u->endpoints[1].is_ip);
	ck_assert_str_eq(u->endpoints[1].host, "user-service.prod.svc.cluster.local");
	ck_assert_uint_eq(u->n_hosts, 2);
	ck_assert_int_eq(u->dns_refresh, 10000);
	ck_assert(u->has_listen);
	ck_assert_uint_eq(u->listen.port, 9001);
	ck_assert(u->tls.enabled);
	ck_assert_ptr_nonnull(u->tls.ctx);
	ck_assert_int_eq(u->tls.min_version, TLS1_3_VERSION);
	ck_assert_int_eq(SSL_CTX_get_min_proto_version(u->tls.ctx), TLS1_3_VERSION);
	ck_assert_str_eq(u->tls.verify_san, "spiffe://goodgo/user-service");
	ck_assert_str_eq(u->upstream_host, "user-service");
	ck_assert_str_eq(u->auth_key_env, "FERRY_TEST_KEY");
	ck_assert_str_eq(u->auth_key, SECRET);
	ck_assert_int_eq(u->timeouts.per_try, 500);
	ck_assert_uint_eq(u->retries.max, 3);
	ck_assert_uint_eq(u->retries.on, RETRY_ON_CONNECT_FAILURE | RETRY_ON_REFUSED |
	    RETRY_ON_503);
	ck_assert_double_eq(u->retries.budget_ratio, 0.5);
	ck_assert_uint_eq(u->retries.buffer, 64000);
	ck_assert_uint_eq(u->breaker.consecutive_failures, 7);
	ck_assert_int_eq(u->breaker.open_for, 3600000);
	ck_assert_uint_eq(u->outlier.max_ejection_percent, 100);
	ck_assert_uint_eq(u->pool.max_idle_per_endpoint, 0);
	ck_assert_int_eq(u->pool.max_connection_age, 600000);
	ck_assert(u->rate_limit.enabled);
	ck_assert_uint_eq(u->rate_limit.burst, 3);	/* rps rounded up */
	ck_assert(u->health_check.enabled);
	ck_assert_str_eq(u->health_check.path, "/health");
	ck_assert_int_eq(u->protocol, PROTO_H2);

	ck_assert_str_eq(o->name, "order-service");
	ck_assert_str_eq(o->srv, "_https._tcp.order-service.prod.svc.cluster.local");
	ck_assert_uint_eq(o->n_endpoints, 0);
	ck_assert(o->listen_allow_remote);
	ck_assert_str_eq(o->upstream_host, "orders");
	ck_assert_str_eq(o->auth_key, FILE_SECRET);	/* newline stripped */
	ck_assert(strncmp(o->auth_key_file, dir, strlen(dir)) == 0);
	ck_assert_ptr_nonnull(o->tls.ctx);
	ck_assert_int_eq(o->tls.min_version, TLS1_2_VERSION);
	config_unref(c);
}
END_TEST

START_TEST(test_variables)
{
	struct config *c = load_ok(
	    "workers: ${FERRY_TEST_UNSET:-3}\n"
	    "drain_delay: ${FERRY_TEST_EMPTY:-2s}\n"
	    "log: {access: \"$${literal}\"}\n"
	    "services:\n"
	    "  a:\n"
	    "    endpoints: [\"${FERRY_TEST_HOST:-127.0.0.1}:${FERRY_TEST_PORT}\"]\n");

	ck_assert_uint_eq(c->workers, 3);
	ck_assert_int_eq(c->drain_delay, 2000);
	ck_assert(strstr(c->log_access, "/${literal}") != NULL);
	ck_assert_str_eq(c->services[0].endpoints[0].text, "127.0.0.1:15099");
	config_unref(c);
}
END_TEST

START_TEST(test_upstream_host)
{
	struct config *c = load_ok(
	    "services:\n"
	    "  a: {endpoints: [\"127.0.0.1:1\"]}\n"
	    "  b: {endpoints: [\"127.0.0.1:1\"], hosts: [b.example, b2]}\n"
	    "  c: {endpoints: [\"127.0.0.1:1\"], hosts: [c.example], "
	    "tls: {ca: ca.pem, server_name: c.internal}}\n");

	ck_assert_str_eq(svc(c, "a")->upstream_host, "a");
	ck_assert_str_eq(svc(c, "b")->upstream_host, "b.example");
	ck_assert_str_eq(svc(c, "c")->upstream_host, "c.internal");
	config_unref(c);
}
END_TEST

START_TEST(test_service_by_name)
{
	struct config *c = load_ok(
	    "services:\n"
	    "  user-service: {endpoints: [\"127.0.0.1:1\"], "
	    "hosts: [user-service.prod.svc.cluster.local]}\n"
	    "  b: {endpoints: [\"127.0.0.1:2\"]}\n");
	const char *host = "User-Service.PROD.svc.cluster.local:5000";

	ck_assert_str_eq(svc(c, "user-service")->name, "user-service");
	ck_assert_str_eq(svc(c, "USER-SERVICE:80")->name, "user-service");
	ck_assert_str_eq(svc(c, "user-service.")->name, "user-service");
	ck_assert_str_eq(config_service_by_name(c, host, strlen(host))->name,
	    "user-service");
	ck_assert_str_eq(svc(c, "B")->name, "b");
	/* LEN bounds the name: "bx" cut to one byte is "b" */
	ck_assert_str_eq(config_service_by_name(c, "bx", 1)->name, "b");
	ck_assert_ptr_null(config_service_by_name(c, "user", 4));
	ck_assert_ptr_null(config_service_by_name(c, "user-service-x", 14));
	ck_assert_ptr_null(config_service_by_name(c, "", 0));
	ck_assert_ptr_null(config_service_by_name(c, "[::1]:80", 8));
	ck_assert_ptr_null(config_service_by_name(c, "b\0x", 3));
	config_unref(c);
}
END_TEST

START_TEST(test_refcount)
{
	struct config *c = load_ok("services:\n  a: {endpoints: [\"127.0.0.1:1\"]}\n");

	ck_assert_ptr_eq(config_ref(c), c);
	ck_assert_int_eq(atomic_load(&c->refs), 2);
	config_unref(c);
	ck_assert_int_eq(atomic_load(&c->refs), 1);
	config_unref(c);	/* frees; ASan reports a leak or a double free */
	config_unref(NULL);
}
END_TEST

/* Keys must never reach an error message, whatever else is wrong. */
START_TEST(test_secret_never_printed)
{
	struct config *c = load(
	    "bogus: 1\n"
	    "listeners:\n"
	    "  inbound:\n"
	    "    tls: {cert: cert.pem, key: other.key, client_ca: ca.pem}\n"
	    "    auth: {keys_env: [FERRY_TEST_KEY, FERRY_TEST_UNSET], keys_file: bad.keys}\n"
	    "    local_app: 127.0.0.1:8080\n"
	    "services:\n"
	    "  a:\n"
	    "    endpoints: [\"10.0.0.1:80\"]\n"
	    "    auth: {key_env: FERRY_TEST_KEY}\n"
	    "    timeouts: {request: 1s, per_try: 2s}\n"
	    "  b:\n"
	    "    endpoints: [\"10.0.0.1:80\"]\n"
	    "    auth: {key_file: service.key}\n"
	    "  c:\n"
	    "    endpoints: [\"10.0.0.1:80\"]\n"
	    "    auth: {key_env: \"${FERRY_TEST_VARNAME}\"}\n"
	    "  d:\n"
	    "    endpoints: [\"127.0.0.1:80\"]\n"
	    "    auth: {key_env: FERRY_TEST_KEY, key_file: service.key}\n");

	ck_assert_ptr_null(c);
	ck_assert_int_ge(nerrs, 6);
	ck_assert_msg(strstr(errs, SECRET) == NULL, "%s", errs);
	ck_assert_msg(strstr(errs, FILE_SECRET) == NULL, "%s", errs);
	ck_assert_msg(strstr(errs, "bad-key-line") == NULL, "%s", errs);
	/* the variable named by ${...} is not shown either: it could be a key */
	ck_assert_msg(strstr(errs, "services.c.auth.key_env: environment variable "
	    "(named by ${...}) is not set") != NULL, "%s", errs);
}
END_TEST

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
static void
make_pki(void)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
	    "cd '%s' && ( "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=test-ca && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	    "-keyout key.pem -out req.csr -subj /CN=svc && "
	    "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -out cert.pem -days 30 && "
	    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-out other.key ) >/dev/null 2>&1", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make test certificates with openssl\n");
		exit(1);
	}
	write_file("garbage.pem", "this is not PEM\n");
	write_file("empty.txt", "");
	write_file("service.key", FILE_SECRET "\n");
	write_file("bad.keys", "ok-key\nbad-key-line\x01\n");
	write_file("inbound.keys", "# rotation: new key first\n\n  first-key  \n"
	    "second key\r\n");
}

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_bad_config, 0,
	    (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, test_unreadable_file);
	tcase_add_test(tc, test_secret_never_printed);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_inheritance);
	tcase_add_test(tc, test_full_schema);
	tcase_add_test(tc, test_variables);
	tcase_add_test(tc, test_upstream_host);
	tcase_add_test(tc, test_service_by_name);
	tcase_add_test(tc, test_refcount);
	tcase_add_test(tc, test_relative_config_path);
	suite_add_tcase(s, tc);

	tc = tcase_create("values");
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
	SRunner *sr;
	char cmd[512];
	int failed;

	snprintf(dir, sizeof(dir), "%s/ferry-test-config-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(cfgpath, sizeof(cfgpath), "%s/ferry.yaml", dir);
	make_pki();
	setenv("FERRY_TEST_KEY", SECRET, 1);
	setenv("FERRY_TEST_EMPTY", "", 1);
	setenv("FERRY_TEST_PORT", "15099", 1);
	setenv("FERRY_TEST_VARNAME", "NO_SUCH_VARIABLE_FOR_FERRY", 1);
	unsetenv("FERRY_TEST_UNSET");
	unsetenv("FERRY_TEST_HOST");

	sr = srunner_create(config_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return failed == 0 ? 0 : 1;
}
