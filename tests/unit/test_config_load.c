/*
 * Unit tests for loading good configuration files: built-in defaults,
 * inheritance from defaults key by key, the whole schema, ${VAR}
 * expansion, aliases, service look-up, the admin Host check and the
 * snapshot's reference count; and that a file of the wrong shape stops
 * before anything is loaded from it.
 */
#include "config_fixture.h"
#include "inbound.h"

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
	/* SPEC §3: protocol auto is the default with tls */
	ck_assert_int_eq(c->services[0].protocol, PROTO_AUTO);
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
	ck_assert_int_eq(c->scheduling, CONF_SCHED_BATCH);
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

/* SPEC §16: off by default; from defaults key by key; max 0 turns off */
START_TEST(test_hedging)
{
	struct config *c = load_ok(
	    "defaults:\n"
	    "  hedging: {after: 50ms}\n"
	    "services:\n"
	    "  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	    "  b:\n    endpoints: [\"127.0.0.1:1\"]\n    hedging: {after: p95, max: 2}\n"
	    "  c:\n    endpoints: [\"127.0.0.1:1\"]\n    hedging: {max: 0}\n");
	const struct conf_service *a = svc(c, "a"), *b = svc(c, "b"), *d = svc(c, "c");
	struct config *off;

	ck_assert(a->hedging.enabled);
	ck_assert(!a->hedging.after_p95);
	ck_assert_int_eq(a->hedging.after, 50);
	ck_assert_uint_eq(a->hedging.max, 1);
	ck_assert(b->hedging.enabled);
	ck_assert(b->hedging.after_p95);
	ck_assert_uint_eq(b->hedging.max, 2);
	ck_assert(!d->hedging.enabled);
	config_unref(c);
	off = load_ok("services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n");
	ck_assert(!svc(off, "a")->hedging.enabled);
	config_unref(off);
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
	ck_assert_int_eq(c->inbound.local_app_protocol, LOCAL_HTTP1);
	config_unref(c);
}
END_TEST

/* The whole schema of SPEC §3, with every key given (and scheduling,
 * which is ferry's own). */
START_TEST(test_full_schema)
{
	struct config *c = load_ok(
	    "workers: 2\n"
	    "scheduling: normal\n"
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
	    "    local_app_protocol: h2c\n"
	    "    timeouts: { request: 30s }\n"
	    "    rate_limit: { rps: 1000, burst: 200 }\n"
	    "    max_concurrent: 64\n"
	    "    handshake_timeout: 1500ms\n"
	    "  admin:\n"
	    "    address: 0.0.0.0:15000\n"
	    "    allow_remote: true\n"
	    "    hosts: [ferry.internal, \"admin.example.:8443\"]\n"
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
	ck_assert_int_eq(c->scheduling, CONF_SCHED_NORMAL);
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
	ck_assert_int_eq(in->listener.handshake_timeout, 1500);
	ck_assert_int_eq(c->outbound.handshake_timeout, 0);
	ck_assert(c->admin.allow_remote);
	ck_assert_uint_eq(c->n_admin_hosts, 2);
	ck_assert_str_eq(c->admin_hosts[1], "admin.example.:8443");

	ck_assert(in->enabled && in->listener.allow_remote);
	ck_assert_ptr_nonnull(in->ctx);
	ck_assert_uint_eq(in->n_allowed_peers, 2);
	ck_assert_str_eq(in->allowed_peers[1], "order-service");
	ck_assert(in->auth_enabled);
	ck_assert_uint_eq(in->n_auth_keys_env, 1);
	ck_assert_uint_eq(in->n_auth_keys, 3);	/* one from env, two from the file */
	/* kept only as HMACs: each key is accepted, nothing else */
	{
		struct key_macs k;

		ck_assert_int_eq(inbound_keys_init(&k, in), 0);
		unsigned char mac[KEY_MAC_LEN], other[KEY_MAC_LEN];

		ck_assert(inbound_key_ok(&k, SECRET, strlen(SECRET), NULL));
		ck_assert(inbound_key_ok(&k, "first-key", 9, NULL));
		ck_assert(inbound_key_ok(&k, "second key", 10, mac));
		ck_assert(!inbound_key_ok(&k, "second", 6, other));
		/* the MACs handed out ask another set of keys (a tunnel's at
		 * a reload) without the key itself */
		ck_assert(inbound_mac_known(&k, mac));
		ck_assert(!inbound_mac_known(&k, other));
		inbound_keys_free(&k);
	}
	ck_assert_str_eq(in->local_app.host, "localhost");
	ck_assert(in->local_app.is_loopback && !in->local_app.is_ip);
	ck_assert_int_eq(in->local_app_protocol, LOCAL_H2C);
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

/* Anchors and aliases share one node: both services get the TLS block. */
START_TEST(test_aliases)
{
	struct config *c = load_ok(
	    "services:\n"
	    "  a:\n"
	    "    endpoints: [\"10.0.0.1:443\"]\n"
	    "    tls: &tls {ca: ca.pem, cert: cert.pem, key: key.pem}\n"
	    "    timeouts: &t {request: 3s}\n"
	    "  b:\n"
	    "    endpoints: [\"10.0.0.2:443\"]\n"
	    "    tls: *tls\n"
	    "    timeouts: *t\n");

	ck_assert_ptr_nonnull(svc(c, "a")->tls.ctx);
	ck_assert_ptr_nonnull(svc(c, "b")->tls.ctx);
	ck_assert_ptr_ne(svc(c, "a")->tls.ctx, svc(c, "b")->tls.ctx);
	ck_assert_int_eq(svc(c, "b")->timeouts.request, 3000);
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
	ck_assert_str_eq(svc(c, " b\t")->name, "b");
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

START_TEST(test_admin_host)
{
	struct config *c = load_ok("listeners:\n  admin:\n"
	    "    hosts: [ferry.internal, \"admin.example:8443\"]\n");
	static const char *const ok[] = {
		"127.0.0.1:15000", "127.0.0.1", "10.1.2.3:15000", "0.0.0.0",
		"[::1]:15000", "[::1]", "[fe80::1]:80", "localhost", "LocalHost:15000",
		"localhost.", "localhost:", "ferry.internal", "FERRY.internal.:1",
		"admin.example:8443", " ferry.internal ",
	};
	static const char *const refused[] = {
		"evil.example", "evil.example:15000", "127.0.0.1.evil.example",
		"localhost.evil.example", "admin.example", "admin.example:443",
		"ferry.internal:x", "ferry.internal:123456", "127.0.0.1:80:80",
		"[::1", "[::1]x", "[not-ip]:80", "[::1]:8x", "::1", "2130706433",
		"", " ", ":80", "ferry.internal.x",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		ck_assert_msg(config_admin_host_ok(c, ok[i], strlen(ok[i])), "%s", ok[i]);
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		ck_assert_msg(!config_admin_host_ok(c, refused[i], strlen(refused[i])),
		    "%s", refused[i]);
	/* LEN bounds the value */
	ck_assert(config_admin_host_ok(c, "localhost.evil", 9));
	config_unref(c);

	c = load_ok("# no admin.hosts\n");
	ck_assert_uint_eq(c->n_admin_hosts, 0);
	ck_assert(!config_admin_host_ok(c, "ferry.internal", 14));
	ck_assert(config_admin_host_ok(c, "127.0.0.1:15000", 15));
	config_unref(c);
}
END_TEST

/*
 * A file of the wrong shape (a key twice, a list for a mapping, an unknown
 * key) is reported, and nothing is loaded from it: no key read, no
 * certificate loaded, no check across keys that would look the nodes up
 * again. A duplicate inbound auth used to crash here (NULL node).
 */
static const struct {
	const char *yaml, *want;
} shape_cases[] = {
	{ "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    auth: {keys_file: inbound.keys}\n"
	  "    auth: {keys_env: [FERRY_TEST_KEY]}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":5:5: listeners.inbound: duplicate key \"auth\"\n" },
	{ "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    auth: {keys_env: [FERRY_TEST_KEY], keys_env: [FERRY_TEST_UNSET, X]}\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":4:40: listeners.inbound.auth: duplicate key \"keys_env\"\n" },
	{ "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: key.pem, client_ca: ca.pem}\n"
	  "    tls: {cert: missing.pem}\n"
	  "    local_app: 127.0.0.1:8080\n"
	  "    local_app: 127.0.0.1:8081\n",
	  F ":4:5: listeners.inbound: duplicate key \"tls\"\n"
	  F ":6:5: listeners.inbound: duplicate key \"local_app\"\n" },
	{ "services:\n  a:\n    endpoints: [\"127.0.0.1:1\"]\n"
	  "    auth: {key_file: service.key}\n"
	  "    auth: {key_env: FERRY_TEST_KEY}\n"
	  "    tls: {ca: ca.pem}\n"
	  "    tls: {cert: cert.pem}\n"
	  "    timeouts: {request: 1s}\n"
	  "    timeouts: {per_try: 2s}\n"
	  "    retries: {backoff: {base: 1s}}\n"
	  "    retries: ~\n"
	  "  a:\n    endpoints: [\"127.0.0.1:2\"]\n    auth: {key_env: FERRY_TEST_UNSET}\n",
	  F ":5:5: services.a: duplicate key \"auth\"\n"
	  F ":7:5: services.a: duplicate key \"tls\"\n"
	  F ":9:5: services.a: duplicate key \"timeouts\"\n"
	  F ":11:5: services.a: duplicate key \"retries\"\n"
	  F ":12:3: services: duplicate service \"a\"\n" },
	{ "defaults:\n  timeouts: {per_try: 5s}\n  timeouts: {request: 1s}\n"
	  "services:\n  a: {endpoints: [\"127.0.0.1:1\"], tls: {ca: missing.pem}}\n",
	  F ":3:3: defaults: duplicate key \"timeouts\"\n" },
	{ "listeners:\n  inbound:\n"
	  "    tls: {cert: cert.pem, key: other.key, client_ca: ca.pem}\n"
	  "    auth: [FERRY_TEST_KEY]\n"
	  "    local_app: 127.0.0.1:8080\n",
	  F ":4:11: listeners.inbound.auth: expected a mapping, got a list\n" },
	{ "bogus: 1\n"
	  "services:\n  a:\n    endpoints: [\"10.0.0.1:443\"]\n"
	  "    tls: {ca: ca.pem, cert: missing.pem, key: key.pem}\n"
	  "    auth: {key_env: FERRY_TEST_UNSET}\n",
	  F ":1:1: unknown key \"bogus\"\n" },
	{ "{[a]: 1, listeners: {inbound: {auth: {keys_env: [FERRY_TEST_UNSET]}}}}\n",
	  F ":1:2: a mapping key must be a scalar\n" },
	/* a complex key has no text: the nodes under it are named by "?"
	 * (the path of the duplicate read the key's NULL text; found by the
	 * fuzz smoke, regressions/config/complex-key-path.yaml) */
	{ "{? {a: 1}: {x: 1, x: 2}}\n",
	  F ":1:4: a mapping key must be a scalar\n"
	  F ":1:19: ?: duplicate key \"x\"\n" },
};

START_TEST(test_shape_errors_stop_loading)
{
	struct config *c = load(shape_cases[_i].yaml);

	ck_assert_ptr_null(c);
	ck_assert_msg(strcmp(errs, shape_cases[_i].want) == 0, "want:\n%sgot:\n%s",
	    shape_cases[_i].want, errs);
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
static Suite *
config_load_suite(void)
{
	Suite *s = suite_create("config_load");
	TCase *tc = tcase_create("load");

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_empty_file);
	tcase_add_test(tc, test_hedging);
	tcase_add_test(tc, test_inheritance);
	tcase_add_test(tc, test_full_schema);
	tcase_add_test(tc, test_variables);
	tcase_add_test(tc, test_upstream_host);
	tcase_add_test(tc, test_aliases);
	tcase_add_test(tc, test_service_by_name);
	tcase_add_test(tc, test_refcount);
	tcase_add_test(tc, test_relative_config_path);
	tcase_add_test(tc, test_admin_host);
	tcase_add_loop_test(tc, test_shape_errors_stop_loading, 0,
	    (int)(sizeof(shape_cases) / sizeof(shape_cases[0])));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return run_suite(config_load_suite());
}
