/*
 * Unit tests for the configuration loader's errors: a table of broken
 * files with every message expected, exactly, with its line and column;
 * unreadable files; and keys that must never show up in a message.
 */
#include "config_fixture.h"

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
	{ "yaml: not UTF-8",
	  "log: {level: info}\nworkers: \xff\n",
	  F ":2:10: YAML syntax error: invalid leading UTF-8 octet\n" },
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
	{ "keys are not expanded",
	  "${FERRY_TEST_PORT}: 1\n",
	  F ":1:1: unknown key \"${FERRY_TEST_PORT}\"\n" },
	{ "yaml: nesting too deep",
	  "a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	  "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
	  F ":1:67: YAML syntax error: nesting too deep\n" },
	{ "listen without address",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    listen: {allow_remote: true}\n",
	  F ":4:5: services.a.listen: missing required key \"address\"\n" },
	{ "unknown nested key",
	  "listeners:\n  outbound:\n    adress: 127.0.0.1:1\n",
	  F ":3:5: listeners.outbound: unknown key \"adress\"\n" },
	{ "handshake_timeout is the inbound listener's only",
	  "listeners:\n  outbound:\n    handshake_timeout: 1s\n",
	  F ":3:5: listeners.outbound: unknown key \"handshake_timeout\"\n" },
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
	{ "service name that is a host of another",
	  "services:\n  a: {endpoints: [\"127.0.0.1:1\"], hosts: [B]}\n"
	  "  b: {endpoints: [\"127.0.0.1:2\"]}\n",
	  F ":3:3: services: service \"b\" is already a host of service a\n" },
	{ "service not a mapping",
	  "services:\n  a: [x]\n",
	  F ":2:6: services.a: expected a mapping, got a list\n" },
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
	{ "unknown scheduling policy",
	  "scheduling: fifo\n",
	  F ":1:13: scheduling: unknown value \"fifo\" (expected batch or normal)\n" },
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
	  F ":6:45: services.a.protocol: unknown value \"h3\" (expected http1, h2 or auto)\n" },
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
	{ "control bytes in a key and a variable reference stay escaped",
	  "log: {level: \"${A\\nB}\"}\nservices:\n  \"a\\nb\": {}\n",
	  F ":1:14: log.level: bad variable reference \"${A\\x0aB}\" (use ${NAME} or "
	  "${NAME:-default})\n"
	  F ":3:3: services: bad service name \"a\\x0ab\" (letters, digits, '-', '_' and "
	  "'.' only)\n"
	  F ":3:3: services.a\\x0ab: missing required key \"endpoints\" (or \"srv\")\n" },
	{ "header rules: bad names, managed headers, CR/LF in a value (SPEC §15)",
	  "defaults:\n  headers:\n    response: {add: {\"bad name\": x}}\n"
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    headers: {request: {set: {X-Request-Id: x, x-ok: \"a\\nb\"}, "
	  "remove: [via, X-Ferry-Peer]}, reply: {}}\n",
	  F ":3:22: defaults.headers.response.add.bad name: bad header name \"bad name\" "
	  "(a token: letters, digits and !#$%&'*+-.^_`|~)\n"
	  F ":7:31: services.a.headers.request.set.X-Request-Id: \"x-request-id\" is managed "
	  "by ferry (SPEC §5); a header rule cannot change it\n"
	  F ":7:54: services.a.headers.request.set.x-ok: header value \"a\\x0ab\" holds CR, "
	  "LF, NUL or another control character (only tab is allowed)\n"
	  F ":7:72: services.a.headers.request.remove[0]: \"via\" is managed by ferry "
	  "(SPEC §5); a header rule cannot change it\n"
	  F ":7:77: services.a.headers.request.remove[1]: \"x-ferry-peer\" is managed by "
	  "ferry (SPEC §5); a header rule cannot change it\n"
	  F ":7:93: services.a.headers: unknown key \"reply\"\n" },
	{ "header rules: control characters in values (the next hop would refuse them)",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    headers: {request: {set: {x-a: \"a\\x01b\", x-b: \"a\\x7fb\", x-c: \"a\\tb\"}}}\n",
	  F ":4:36: services.a.headers.request.set.x-a: header value \"a\\x01b\" holds CR, "
	  "LF, NUL or another control character (only tab is allowed)\n"
	  F ":4:51: services.a.headers.request.set.x-b: header value \"a\\x7fb\" holds CR, "
	  "LF, NUL or another control character (only tab is allowed)\n" },
	{ "header rules: grpc-timeout and '_' look-alikes of managed names",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    headers:\n"
	  "      request: {add: {grpc-timeout: 1H}}\n"
	  "      response: {set: {x_service_auth: k}, remove: [X_Ferry_Peer, x_debug]}\n",
	  F ":5:23: services.a.headers.request.add.grpc-timeout: \"grpc-timeout\" is managed "
	  "by ferry (SPEC §5); a header rule cannot change it\n"
	  F ":6:24: services.a.headers.response.set.x_service_auth: \"x_service_auth\" is "
	  "managed by ferry (SPEC §5); a header rule cannot change it\n"
	  F ":6:53: services.a.headers.response.remove[0]: \"x_ferry_peer\" is managed by "
	  "ferry (SPEC §5); a header rule cannot change it\n" },
	{ "header rules: content-encoding is ferry's; accept-encoding and vary where "
	  "compression is on",
	  "defaults:\n  headers: {request: {remove: [accept-encoding]}, response: {add: {vary: x}}}\n"
	  "listeners:\n  inbound:\n    address: 127.0.0.1:15443\n"
	  "    local_app: 127.0.0.1:8080\n"
	  "    compression: {encodings: [gzip]}\n"
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    headers: {response: {set: {Content-Encoding: gzip}}}\n"
	  "  b:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    compression: {encodings: [zstd]}\n"
	  "  c:\n    endpoints: [\"127.0.0.1:1\"]\n",
	  F ":4:3: listeners.inbound: missing required key \"tls\"\n"
	  F ":4:3: listeners.inbound: \"vary\" is managed by compression here (SPEC §14); a "
	  "header rule cannot change it\n"
	  F ":11:32: services.a.headers.response.set.Content-Encoding: \"content-encoding\" "
	  "is managed by ferry (SPEC §5); a header rule cannot change it\n"
	  F ":12:3: services.b: \"accept-encoding\" is managed by compression here (SPEC §14); "
	  "a header rule cannot change it\n" },
	{ "header rules: at most 16 lines and 8 KiB a section",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    headers:\n"
	  "      request:\n"
	  "        set: {x-1: a, x-2: a, x-3: a, x-4: a, x-5: a, x-6: a, x-7: a, x-8: a, x-9: a}\n"
	  "        add: {x-10: a, x-11: a, x-12: a, x-13: a, x-14: a, x-15: a, x-16: a, x-17: a}\n"
	  "      response: {set: {x-big: \"${BIG}\"}, add: {x-more: a}}\n",
	  F ":7:14: services.a.headers.request.add: header rules of one section set and add at "
	  "most 16 lines and 8192 bytes (name: value and CRLF), here 17 and 144: "
	  "a head holds at most 100 fields and 64 KiB (SPEC §11)\n"
	  F ":8:23: services.a.headers.response.set: header rules of one section set and add at "
	  "most 16 lines and 8192 bytes (name: value and CRLF), here 1 and 8198: "
	  "a head holds at most 100 fields and 64 KiB (SPEC §11)\n" },
	{ "compression: unknown and repeated encodings, bad types and levels (SPEC §14)",
	  "defaults:\n  compression: {encodings: [zstd, brotli, zstd], min_size: 2GiB}\n"
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    compression: {types: [json, \"text/*\", \"a b/c\"], level: {zstd: 22, gzip: 0}, "
	  "mode: x}\n",
	  F ":2:35: defaults.compression.encodings[1]: unknown encoding \"brotli\" (expected "
	  "zstd or gzip)\n"
	  F ":2:43: defaults.compression.encodings[2]: zstd is listed twice\n"
	  F ":2:60: defaults.compression.min_size: 2GiB is out of range (0..1073741824 bytes)\n"
	  F ":6:27: services.a.compression.types[0]: bad media type \"json\" (type/subtype or "
	  "type/*, at most 63 characters)\n"
	  F ":6:43: services.a.compression.types[2]: bad media type \"a b/c\" (type/subtype or "
	  "type/*, at most 63 characters)\n"
	  F ":6:67: services.a.compression.level.zstd: 22 is out of range (1..19)\n"
	  F ":6:77: services.a.compression.level.gzip: 0 is out of range (1..9)\n"
	  F ":6:81: services.a.compression: unknown key \"mode\"\n" },
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
	{ "inbound keys_file without keys",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    auth: {keys_file: comments.keys}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":4:5: listeners.inbound.auth: no keys: keys_env and keys_file gave none\n" },
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
	/* the bucket's interval is at most 1e6 s: a slower rps would be
	 * served at 0.000001 a second, more than it asks for */
	{ "rate limit rps too small",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    rate_limit: {rps: 0.0000001}\n"
	  "  b:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    rate_limit: {rps: 0}\n",
	  F ":4:23: services.a.rate_limit: rps must be at least 0.000001 "
	  "(one token in 11.6 days)\n"
	  F ":7:23: services.b.rate_limit: rps must be at least 0.000001 "
	  "(one token in 11.6 days)\n" },
	/* the bucket holds a burst tolerance of at most ~73 years: a larger
	 * burst at a slow rps would let fewer through at once than asked */
	{ "rate limit burst too long to refill",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    rate_limit: {rps: 0.000001, burst: 2400}\n"
	  "  b:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    rate_limit: {rps: 0.000001, burst: 2306}\n",
	  F ":4:40: services.a.rate_limit: burst 2400 at rps 1e-06 takes over 73 years "
	  "to refill (at most rps x 2305843009 + 1)\n" },
	{ "hedging",
	  "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    hedging: {max: 2}\n"
	  "  b:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    hedging: {after: p99, max: 4}\n"
	  "  c:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    hedging: {after: 0ms, befor: 1s}\n"
	  "  d:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    hedging: 50ms\n",
	  F ":4:5: services.a.hedging: missing required key \"after\" (a duration or p95)\n"
	  F ":7:22: services.b.hedging.after: bad duration \"p99\" (not a number; or p95)\n"
	  F ":7:32: services.b.hedging.max: 4 is out of range (0..3)\n"
	  F ":10:22: services.c.hedging.after: 0ms is out of range (1ms..100000h, or p95)\n"
	  F ":10:27: services.c.hedging: unknown key \"befor\"\n"
	  F ":13:14: services.d.hedging: expected a mapping, got a scalar\n" },
	{ "allowed_peers empty or null (only an absent key means any identity)",
	  "listeners:\n  inbound:\n"
	  "    tls:\n      cert: cert.pem\n      key: key.pem\n      client_ca: ca.pem\n"
	  "      allowed_peers: []\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":7:22: listeners.inbound.tls.allowed_peers: must list at least one identity "
	  "(without the key, any identity is allowed)\n" },
	{ "allowed_peers null",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem, allowed_peers: ~}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":3:75: listeners.inbound.tls.allowed_peers: must list at least one identity "
	  "(without the key, any identity is allowed)\n" },
	{ "allowed_peers without a value",
	  "listeners:\n  inbound:\n"
	  "    tls:\n      cert: cert.pem\n      key: key.pem\n      client_ca: ca.pem\n"
	  "      allowed_peers:\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":7:21: listeners.inbound.tls.allowed_peers: must list at least one identity "
	  "(without the key, any identity is allowed)\n" },
	{ "allowed_peers with an empty name",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem, allowed_peers: [\"\"]}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":3:76: listeners.inbound.tls.allowed_peers[0]: must not be empty\n" },
	{ "local_app_protocol unknown",
	  "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    local_app: 127.0.0.1:8080\n"
	  "    local_app_protocol: h2\n",
	  F ":5:25: listeners.inbound.local_app_protocol: unknown value \"h2\" (expected "
	  "http1 or h2c)\n" },
	{ "admin hosts",
	  "listeners:\n  admin:\n    hosts: [\"a b\", \"x:0\", \"y:\", \"[::1]\", \"\", ok.example]\n",
	  F ":3:13: listeners.admin.hosts[0]: bad host name \"a b\" (a name, or name:port)\n"
	  F ":3:20: listeners.admin.hosts[1]: bad host name \"x:0\" (a name, or name:port)\n"
	  F ":3:27: listeners.admin.hosts[2]: bad host name \"y:\" (a name, or name:port)\n"
	  F ":3:33: listeners.admin.hosts[3]: bad host name \"[::1]\" (a name, or name:port)\n"
	  F ":3:42: listeners.admin.hosts[4]: must not be empty\n" },
	{ "admin hosts not a list",
	  "listeners:\n  admin:\n    hosts: ok.example\n",
	  F ":3:12: listeners.admin.hosts: expected a list, got a scalar\n" },
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
	static char big[8190];
	struct config *c;

	memset(big, 'b', sizeof(big) - 1);	/* "x-big: " + 8189 + CRLF: 8198 */
	setenv("BIG", big, 1);
	c = load(bc->yaml);

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
START_TEST(test_secret_never_printed)
{
	struct config *c = load(
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
	    "    auth: {key_env: FERRY_TEST_KEY, key_file: service.key}\n"
	    "  e:\n"
	    "    endpoints: [\"127.0.0.1:80\"]\n"
	    "    headers: {request: {set: {x-token: \"${FERRY_TEST_NL_KEY}\"}}}\n");

	ck_assert_ptr_null(c);
	ck_assert_int_ge(nerrs, 7);
	ck_assert_msg(strstr(errs, SECRET) == NULL, "%s", errs);
	/* a header value from ${VAR} is shown redacted in /config, and an
	 * error about it does not show it either */
	ck_assert_msg(strstr(errs, "services.e.headers.request.set.x-token: header value "
	    "(from ${...}) holds CR") != NULL, "%s", errs);
	ck_assert_msg(strstr(errs, FILE_SECRET) == NULL, "%s", errs);
	ck_assert_msg(strstr(errs, "bad-key-line") == NULL, "%s", errs);
	/* the variable named by ${...} is not shown either: it could be a key */
	ck_assert_msg(strstr(errs, "services.c.auth.key_env: environment variable "
	    "(named by ${...}) is not set") != NULL, "%s", errs);
}
END_TEST

/*
 * Values of control bytes are shown escaped, four bytes each: the quoted
 * form is cut to fit the message buffer (it used to run past it), whether
 * the value was written in the file or came from ${VAR}.
 */
START_TEST(test_long_control_values)
{
	/* the value goes between the two halves */
	static const char *const at[][2] = {
		{ "workers: ", "" }, { "drain_delay: ", "" }, { "watch: ", "" },
		{ "log: {level: ", "}" },
		{ "resolver: {nameservers: [", "]}" },
		{ "listeners: {admin: {address: ", "}}" },
		{ "listeners: {admin: {hosts: [", "]}}" },
		{ "defaults: {load_balancer: ", "}" },
		{ "defaults: {retries: {buffer: ", "}}" },
		{ "defaults: {retries: {on: [", "]}}" },
		{ "services: {a: {endpoints: [", "]}}" },
		{ "services: {a: {endpoints: [\"127.0.0.1:1\"], tls: {ca: ca.pem, min_version: ", "}}}" },
	};
	char ctl[201], yaml[2048], want[512];
	struct config *c;

	memset(ctl, 1, 200);
	ctl[200] = '\0';
	setenv("FERRY_TEST_CTRL", ctl, 1);
	for (int via_env = 0; via_env < 2; via_env++) {
		for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
			size_t o = 0;

			o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%s\"", at[k][0]);
			if (via_env)
				o += (size_t)snprintf(yaml + o, sizeof(yaml) - o,
				    "${FERRY_TEST_CTRL}");
			else
				for (int i = 0; i < 60; i++)
					o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "\\x01");
			snprintf(yaml + o, sizeof(yaml) - o, "\"%s\n", at[k][1]);
			c = load(yaml);
			ck_assert_msg(c == NULL, "%s", yaml);
			ck_assert_msg(nerrs == 1, "%s\n%s", yaml, errs);
			/* escaped bytes, then the cut */
			ck_assert_msg(strstr(errs, "\\x01...\"") != NULL, "%s\n%s", yaml, errs);
			ck_assert_msg(strlen(errs) < 300, "%s", errs);
		}
	}
	/* exactly: thirty escapes fit, and the cut says so */
	c = load("workers: ${FERRY_TEST_CTRL}\n");
	ck_assert_ptr_null(c);
	strcpy(want, F ":1:10: workers: expected an integer, got \"");
	for (int i = 0; i < 30; i++)
		strcat(want, "\\x01");
	strcat(want, "...\"\n");
	ck_assert_str_eq(errs, want);
	/* a cut never splits a UTF-8 character: the room ends inside the
	 * second 3-byte euro sign */
	memset(ctl, 1, 29);
	strcpy(ctl + 29, "a\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac");
	setenv("FERRY_TEST_CTRL", ctl, 1);
	c = load("workers: ${FERRY_TEST_CTRL}\n");
	ck_assert_ptr_null(c);
	strcpy(want, F ":1:10: workers: expected an integer, got \"");
	for (int i = 0; i < 29; i++)
		strcat(want, "\\x01");
	strcat(want, "a\xe2\x82\xac...\"\n");
	ck_assert_str_eq(errs, want);
	unsetenv("FERRY_TEST_CTRL");
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("errors");

	tcase_add_loop_test(tc, test_bad_config, 0,
	    (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
	tcase_add_test(tc, test_unreadable_file);
	tcase_add_test(tc, test_secret_never_printed);
	tcase_add_test(tc, test_long_control_values);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return run_suite(config_suite());
}
