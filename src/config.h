/*
 * The configuration snapshot: YAML (SPEC §3) loaded into plain, immutable
 * structs. A snapshot is built and fully validated (certificates loaded,
 * keys read) before anyone sees it; workers take a reference for as long
 * as a request uses it, and the last config_unref() frees it, so a reload
 * can swap snapshots under running requests.
 *
 * Durations are milliseconds (int64_t), sizes bytes (uint64_t).
 * Relative file paths in the file (tls cert/key/ca/client_ca, auth key_file
 * and keys_file, log.access) are resolved against the directory of the
 * config file, not the working directory; the stored paths are resolved.
 * Absent listeners: outbound 127.0.0.1:15001, admin 127.0.0.1:15000; an
 * inbound block without address listens on 0.0.0.0:15443.
 * ${VAR} values are configuration, not secrets, and may appear in error
 * messages; keys come only through key_env/key_file/keys_env/keys_file.
 * Every string is owned by the snapshot. Secrets (service and inbound
 * keys) live only here and are wiped on free; nothing may print them.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

/* Where a value came from, for FILE:LINE:COL messages after loading. */
struct conf_pos {
	int line, col;		/* 1-based; 0 when not from the file */
};

/* "host:port" as written; addr filled when host is an IP literal. */
struct conf_addr {
	char *text;		/* as written, after ${VAR} expansion */
	char *host;		/* without brackets */
	uint16_t port;
	bool is_ip;
	bool is_loopback;	/* IP literal in 127/8 or ::1, or "localhost" */
	struct sockaddr_storage sa;	/* valid when is_ip */
	socklen_t salen;
	struct conf_pos pos;
};

struct conf_listener {
	struct conf_addr address;
	bool allow_remote;
	uint32_t max_connections;	/* 10000 */
	uint64_t max_request_body;	/* 0 = unlimited */
	int64_t idle_timeout;		/* 60s */
	int64_t header_read_timeout;	/* 10s */
	int64_t handshake_timeout;	/* inbound only: 5s; 0 elsewhere */
};

struct conf_timeouts {
	int64_t connect;	/* 1s */
	int64_t request;	/* 15s */
	int64_t per_try;	/* 0 = rest of request */
	int64_t stream_idle;	/* 5m */
};

/* retries.on as a bit mask */
enum retry_on {
	RETRY_ON_CONNECT_FAILURE = 1u << 0,
	RETRY_ON_REFUSED = 1u << 1,
	RETRY_ON_RESET = 1u << 2,
	RETRY_ON_PER_TRY_TIMEOUT = 1u << 3,
	RETRY_ON_502 = 1u << 4,
	RETRY_ON_503 = 1u << 5,
	RETRY_ON_504 = 1u << 6,
};

struct conf_retries {
	uint32_t max;			/* 2 */
	uint32_t on;			/* enum retry_on mask; default all */
	int64_t backoff_base;		/* 25ms */
	int64_t backoff_max;		/* 250ms */
	double budget_ratio;		/* 0.2 */
	uint32_t budget_min_per_second;	/* 10 */
	uint64_t buffer;		/* 64KiB */
};

/* hedging (SPEC §16): off unless the key is given with max > 0 */
struct conf_hedging {
	bool enabled;			/* the key was given and max > 0 */
	bool after_p95;			/* after: p95 (the service's own, >= 5ms) */
	int64_t after;			/* ms, unless after_p95 */
	uint32_t max;			/* hedges per request: 1 */
};

struct conf_breaker {
	uint32_t consecutive_failures;	/* 5; 0 = no circuit breaking */
	int64_t open_for;		/* 10s */
	uint32_t half_open_requests;	/* 1 */
	uint32_t max_concurrent;	/* 1024 */
};

struct conf_outlier {
	uint32_t consecutive_failures;	/* 5; 0 = no ejection */
	int64_t base_ejection;		/* 30s */
	uint32_t max_ejection_percent;	/* 50 */
};

struct conf_pool {
	uint32_t max_idle_per_endpoint;		/* 64 */
	int64_t idle_timeout;			/* 30s */
	uint32_t max_per_endpoint;		/* 1024 */
	uint32_t max_requests_per_connection;	/* 0 = unlimited */
	int64_t max_connection_age;		/* 0 = unlimited */
};

enum lb_kind { LB_P2C_EWMA = 0, LB_ROUND_ROBIN, LB_RANDOM };
enum protocol_kind { PROTO_HTTP1 = 0, PROTO_H2, PROTO_AUTO };
enum local_app_protocol { LOCAL_HTTP1 = 0, LOCAL_H2C };

struct conf_rate_limit {
	bool enabled;		/* the key was given */
	double rps;		/* required, > 0 */
	uint32_t burst;		/* default: rps rounded up (one second's worth) */
};

struct conf_health_check {
	bool enabled;
	char *path;		/* required; starts with '/' */
	int64_t interval;	/* 5s */
	int64_t timeout;	/* 1s */
	uint32_t healthy;	/* 2 */
	uint32_t unhealthy;	/* 3 */
};

/* A service's client TLS settings; ctx is built at load time. */
struct conf_tls_client {
	bool enabled;
	char *ca, *cert, *key;		/* paths, resolved against the config dir */
	char *server_name;		/* NULL = the endpoint's host */
	char *verify_san;		/* NULL = check server_name */
	int min_version;		/* TLS1_2_VERSION or TLS1_3_VERSION */
	SSL_CTX *ctx;			/* owned; shared by all workers */
};

/* Header rules (SPEC §15) for one direction: applied after ferry's own
 * header handling, in the order remove, set, add. */
struct conf_hrule {
	char *name;
	char *value;
	bool secret;			/* from ${VAR}: /config does not show it */
};

struct conf_hrules {
	char **remove;
	size_t n_remove;
	struct conf_hrule *set;
	size_t n_set;
	struct conf_hrule *add;
	size_t n_add;
};

struct conf_headers {
	struct conf_hrules request;	/* to the service (or the local app) */
	struct conf_hrules response;	/* to the app (or the peer) */
};

/* compression (SPEC §14): plain values only, so a service's copy of
 * defaults' needs no deep copy. */
#define KEY_MAC_LEN		32	/* HMAC-SHA256 of an inbound key */
#define COMPRESS_MAX_TYPES	16
#define COMPRESS_TYPE_LEN	64	/* longest type + 1 */

struct conf_compression {
	uint8_t encodings[2];		/* enum cz_coding, preference order */
	uint8_t n_encodings;		/* 0: off (the default) */
	uint8_t n_types;
	uint64_t min_size;		/* 1KiB */
	uint32_t level_zstd;		/* 3 */
	uint32_t level_gzip;		/* 1 */
	char accept[16];		/* "zstd, gzip": sent upstream */
	char types[COMPRESS_MAX_TYPES][COMPRESS_TYPE_LEN];	/* lower case;
					   a subtype "*" covers every subtype */
};

struct conf_service {
	char *name;
	struct conf_pos pos;
	struct conf_addr *endpoints;	/* may be DNS names */
	size_t n_endpoints;
	char *srv;			/* NULL unless srv: given */
	char **hosts;
	size_t n_hosts;
	int64_t dns_refresh;		/* 30s */
	bool has_listen;
	struct conf_addr listen;	/* listen: ADDR, or {address, allow_remote} */
	bool listen_allow_remote;	/* listen may be a non-loopback address */
	struct conf_tls_client tls;
	/* auth: exactly one of key_env / key_file, or neither */
	char *auth_key_env;
	char *auth_key_file;
	char *auth_key;			/* SECRET: the loaded key, NULL without auth */
	struct conf_timeouts timeouts;
	struct conf_retries retries;
	struct conf_hedging hedging;
	struct conf_breaker breaker;
	struct conf_outlier outlier;
	struct conf_pool pool;
	enum lb_kind load_balancer;
	struct conf_rate_limit rate_limit;
	struct conf_health_check health_check;
	enum protocol_kind protocol;
	const char *upstream_host;	/* Host upstream: server_name, else hosts[0],
					   else name (points into this struct) */
	struct conf_headers headers;	/* its own rules, after defaults' */
	struct conf_compression compression;	/* defaults', key by key */
};

struct conf_inbound {
	bool enabled;
	struct conf_headers headers;	/* after defaults' */
	struct conf_compression compression;	/* defaults', key by key */
	enum local_app_protocol local_app_protocol;	/* SPEC §12: http1 (default), h2c */
	struct conf_listener listener;
	char *cert, *key, *client_ca;
	char **allowed_peers;		/* NULL/0 = any identity */
	size_t n_allowed_peers;
	char **auth_keys_env;		/* variable names */
	size_t n_auth_keys_env;
	char *auth_keys_file;
	/* every loaded key, as its HMAC (inbound.h): the keys themselves are
	 * wiped once read, so no peer's key is in memory between requests */
	unsigned char (*auth_key_macs)[KEY_MAC_LEN];
	size_t n_auth_keys;
	bool auth_enabled;
	struct conf_addr local_app;
	struct conf_timeouts timeouts;	/* defaults.timeouts, then overrides */
	struct conf_rate_limit rate_limit;
	uint32_t max_concurrent;	/* 1024 */
	SSL_CTX *ctx;			/* server context, owned */
};

/* tracing: (SPEC §13); absent = propagation only (§5) */
/* The collector's address: an IP literal's from the load; a name's from
 * discovery, on the main thread, once the config is in force (a lookup
 * must not hold the main thread: discovery.h), and again as its TTL says.
 * Read and written through collector_addr_get/_set only. */
struct conf_collector {
	_Atomic bool ready;
	pthread_mutex_t mu;		/* over SA, SALEN, MOVES */
	struct sockaddr_storage sa;
	socklen_t salen;
	uint32_t moves;			/* times SA changed once READY */
};

/* The collector's address into SA/SALEN, and how often it moved (a move
 * closes a worker's connection to it); false while it is not known. */
bool collector_addr_get(struct conf_collector *a, struct sockaddr_storage *sa,
    socklen_t *salen, uint32_t *moves);

/* SA is the collector's address now; true when that is news. */
bool collector_addr_set(struct conf_collector *a, const struct sockaddr *sa, socklen_t salen);

struct conf_tracing {
	bool enabled;
	char *otlp;			/* the collector's URL, as written */
	bool https;
	char *host;			/* without brackets: SNI and verification */
	uint16_t port;			/* default 80 / 443 */
	char *authority;		/* host[:port] as written: the Host header */
	char *path;			/* "/v1/traces" when the URL has none */
	struct conf_collector *addr;	/* with the config; never NULL once loaded */
	struct conf_tls_client tls;	/* https only; ca required */
	char *service_name;		/* resource service.name; "ferry" */
	double sample_ratio;		/* 1.0; for traces that start here */
	uint32_t max_queue;		/* 8192 spans, the whole process */
	uint32_t batch_max_spans;	/* 512 */
	int64_t batch_interval;		/* 1s */
};

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* The workers' CPU scheduling policy (README: "scheduling"). */
enum conf_scheduling { CONF_SCHED_BATCH = 0, CONF_SCHED_NORMAL };
extern const char *const conf_scheduling_names[];	/* as written in YAML */
/* Whether each worker is bound to a CPU of its own (README: "cpu_affinity"). */
enum conf_affinity { CONF_AFFINITY_AUTO = 0, CONF_AFFINITY_OFF };
extern const char *const conf_affinity_names[];	/* as written in YAML */

struct config {
	_Atomic int refs;
	char *path;			/* as given with -c */
	uint32_t workers;		/* resolved: never 0 */
	enum conf_scheduling scheduling;	/* batch */
	enum conf_affinity cpu_affinity;	/* auto */
	enum log_level log_level;
	char *log_access;		/* "stdout", "off" or a path */
	int64_t drain_delay;		/* 5s */
	int64_t drain_timeout;		/* 30s */
	bool watch;
	struct conf_addr *nameservers;	/* resolver.nameservers; 0 = resolv.conf */
	size_t n_nameservers;
	struct conf_listener outbound;
	struct conf_inbound inbound;
	struct conf_listener admin;
	char **admin_hosts;		/* listeners.admin.hosts: "name" or "name:port" */
	size_t n_admin_hosts;
	struct conf_service *services;
	size_t n_services;
	struct conf_headers default_headers;	/* defaults.headers: before every other */
	struct conf_tracing tracing;
};

/*
 * Error sink: every problem found while loading is reported through it,
 * already formatted as "FILE:LINE:COL: message" (or "FILE: message" when
 * no position applies). The loader reports all errors it can find.
 */
typedef void (*config_error_fn)(void *arg, const char *line);

/* Load and validate PATH. NULL on any error (all of them reported). */
struct config *config_load(const char *path, config_error_fn err, void *arg);

struct config *config_ref(struct config *c);
void config_unref(struct config *c);

/* Look-ups used by routing; name compare is case-insensitive, without port. */
const struct conf_service *config_service_by_name(const struct config *c,
    const char *name, size_t len);

/* May the admin endpoint answer a request for HOST (a Host header value or
 * the authority of an absolute-form target)? Any IP literal, localhost,
 * or a name of listeners.admin.hosts; with or without a port. */
bool config_admin_host_ok(const struct config *c, const char *host, size_t len);

/* Value parsers (also used by tests). 0 on success, -1 with *why set. */
int parse_duration(const char *s, int64_t *ms, const char **why);
/* MS in the largest unit that divides it, as a config file would say it. */
const char *format_duration(int64_t ms, char *buf, size_t len);
int parse_size(const char *s, uint64_t *bytes, const char **why);
int parse_addr(const char *s, struct conf_addr *out, const char **why);
void conf_addr_clear(struct conf_addr *a);

/* The default of `workers`: CPUs this process may use (affinity mask,
 * cgroup v2 cpu.max quota), at least 1, at most 4. */
uint32_t config_default_workers(void);

#endif
