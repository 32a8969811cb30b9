/*
 * Unit tests for src/health.c against real sockets on loopback: a small
 * HTTP server in a thread (plain or TLS, certificates made with the openssl
 * CLI in a temporary directory) answers with a status the test flips and
 * records what it was sent; the checks run on a real event base.
 */
#include <sys/socket.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "clock.h"
#include "health.h"
#include "log.h"
#include "tls_ctx.h"

#define ST_HANG 0		/* read the request, never answer */
#define ST_GARBAGE (-1)		/* answer with something not HTTP */
#define ST_INTERIM (-2)		/* 100 Continue, then 204 */

struct srv {
	int lfd, port;
	int stop[2];
	pthread_t th;
	SSL_CTX *tls;
	_Atomic int status;
	_Atomic int requests;		/* complete request heads read */
	_Atomic int n_ok, n_fail;	/* answers sent: 2xx / other */
	_Atomic int tls_failed;		/* handshakes that failed */
	bool gated;			/* hold each answer until answer() */
	_Atomic int credits;		/* answers let through */
	_Atomic bool stopping;
	pthread_mutex_t mu;
	char last[4096];		/* the last request head */
	char sni[256];			/* SNI of the last handshake, "" if none */
	int hung[64];
	SSL *hung_ssl[64];
	int n_hung;
};

static char dir[256];
static char ca_pem[300], srv_pem[300], srv_key[300];
static struct event_base *base;

/* ------------------------------------------------------------ server --- */

static int
srv_read(SSL *ssl, int fd, char *b, size_t len)
{
	return ssl ? SSL_read(ssl, b, (int)len) : (int)read(fd, b, len);
}

static void
srv_write(SSL *ssl, int fd, const char *s)
{
	if (ssl)
		(void)SSL_write(ssl, s, (int)strlen(s));
	else
		(void)!write(fd, s, strlen(s));
}

static void
srv_handle(struct srv *s, int fd)
{
	struct timeval tv = { 1, 0 };
	char req[4096], resp[128];
	SSL *ssl = NULL;
	size_t got = 0;
	int st, n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (s->tls) {
		const char *sn;

		ssl = SSL_new(s->tls);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1) {
			atomic_fetch_add(&s->tls_failed, 1);
			ERR_clear_error();
			goto done;
		}
		sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
		pthread_mutex_lock(&s->mu);
		snprintf(s->sni, sizeof(s->sni), "%s", sn ? sn : "");
		pthread_mutex_unlock(&s->mu);
	}
	while (got < sizeof(req) - 1) {
		if ((n = srv_read(ssl, fd, req + got, sizeof(req) - 1 - got)) <= 0)
			goto done;
		got += (size_t)n;
		req[got] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	pthread_mutex_lock(&s->mu);
	memcpy(s->last, req, got + 1);
	pthread_mutex_unlock(&s->mu);
	atomic_fetch_add(&s->requests, 1);
	while (s->gated && atomic_load(&s->credits) == 0)
		if (atomic_load(&s->stopping) || usleep(1000) != 0)
			goto done;
	if (s->gated)
		atomic_fetch_sub(&s->credits, 1);
	st = atomic_load(&s->status);
	if (st == ST_HANG && s->n_hung < 64) {
		s->hung[s->n_hung] = fd;
		s->hung_ssl[s->n_hung++] = ssl;
		return;
	}
	if (st == ST_GARBAGE)
		srv_write(ssl, fd, "garbage\r\n\r\n");
	else if (st == ST_INTERIM)
		srv_write(ssl, fd, "HTTP/1.1 100 Continue\r\n\r\n"
		    "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
	else {
		snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: 2\r\n"
		    "Connection: close\r\n\r\nok", st);
		srv_write(ssl, fd, resp);
	}
	atomic_fetch_add(st == ST_INTERIM || (st >= 200 && st < 300) ? &s->n_ok :
	    &s->n_fail, 1);
done:
	if (ssl) {
		(void)SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
}

static void *
srv_main(void *arg)
{
	struct srv *s = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN },
		    { .fd = s->stop[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents && (fd = accept(s->lfd, NULL, NULL)) >= 0)
			srv_handle(s, fd);
	}
	return NULL;
}

static struct srv *
srv_start(int status, bool tls)
{
	struct srv *s = calloc(1, sizeof(*s));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	char err[256];

	ck_assert_ptr_nonnull(s);
	pthread_mutex_init(&s->mu, NULL);
	atomic_init(&s->status, status);
	if (tls) {
		s->tls = tls_server_ctx_new(srv_pem, srv_key, NULL, err, sizeof(err));
		ck_assert_msg(s->tls != NULL, "server ctx: %s", err);
	}
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(s->lfd, 0);
	ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(s->lfd, 64), 0);
	ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&sin, &len), 0);
	s->port = ntohs(sin.sin_port);
	ck_assert_int_eq(pipe(s->stop), 0);
	ck_assert_int_eq(pthread_create(&s->th, NULL, srv_main, s), 0);
	return s;
}

static void
srv_stop(struct srv *s)
{
	atomic_store(&s->stopping, true);
	(void)!write(s->stop[1], "x", 1);
	pthread_join(s->th, NULL);
	for (int i = 0; i < s->n_hung; i++) {
		SSL_free(s->hung_ssl[i]);
		close(s->hung[i]);
	}
	close(s->lfd);
	close(s->stop[0]);
	close(s->stop[1]);
	SSL_CTX_free(s->tls);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* A gated server answers one held request with STATUS. */
static void
answer(struct srv *s, int status)
{
	atomic_store(&s->status, status);
	atomic_fetch_add(&s->credits, 1);
}

static void
srv_last(struct srv *s, char *out, size_t len)
{
	pthread_mutex_lock(&s->mu);
	snprintf(out, len, "%s", s->last);
	pthread_mutex_unlock(&s->mu);
}

static void
srv_sni(struct srv *s, char *out, size_t len)
{
	pthread_mutex_lock(&s->mu);
	snprintf(out, len, "%s", s->sni);
	pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------- loop ---- */

struct waiter {
	bool (*pred)(void *);
	void *arg;
	int64_t deadline;
	bool met;
};

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	struct waiter *w = arg;

	(void)fd;
	(void)what;
	if (w->pred && w->pred(w->arg)) {
		w->met = true;
		event_base_loopbreak(base);
	} else if (clock_now_ms() >= w->deadline) {
		event_base_loopbreak(base);
	}
}

/* Runs the loop until PRED holds (true) or MS pass (false). */
static bool
run_until(bool (*pred)(void *), void *arg, int ms)
{
	struct waiter w = { pred, arg, clock_now_ms() + ms, false };
	struct event *t = event_new(base, -1, EV_PERSIST, tick, &w);
	struct timeval tv = { 0, 2000 };

	if (pred && pred(arg))
		w.met = true;
	else {
		event_add(t, &tv);
		event_base_dispatch(base);
	}
	event_free(t);
	return w.met;
}

static bool
is_down(void *arg)
{
	return !atomic_load(&((struct ep_runtime *)arg)->healthy);
}

static bool
is_up(void *arg)
{
	return atomic_load(&((struct ep_runtime *)arg)->healthy);
}

static struct srv *want_srv;
static int want_n;

static bool
requests_reach(void *arg)
{
	(void)arg;
	return atomic_load(&want_srv->requests) >= want_n;
}

static bool
streak_is(void *arg)
{
	return atomic_load(&((struct ep_runtime *)arg)->hc_streak) == (uint32_t)want_n;
}

/* ---------------------------------------------------------- fixtures --- */

static void
make_certs(void)
{
	const char *tmp = getenv("TMPDIR");
	char cmd[4096], ext[300];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/ferry-health-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/srv.pem", dir);
	snprintf(srv_key, sizeof(srv_key), "%s/srv.key", dir);
	snprintf(ext, sizeof(ext), "%s/ext.cnf", dir);
	ck_assert_ptr_nonnull(f = fopen(ext, "w"));
	fprintf(f, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
	    "extendedKeyUsage=serverAuth\n"
	    "subjectAltName=DNS:localhost,IP:127.0.0.1,URI:spiffe://test/upstream\n");
	fclose(f);
	snprintf(cmd, sizeof(cmd), "cd '%s' && ("
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca "
	    "-addext basicConstraints=critical,CA:TRUE "
	    "-addext keyUsage=critical,keyCertSign,cRLSign && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout srv.key -out srv.csr -subj /CN=localhost && "
	    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	    "-out srv.pem -days 2 -extfile ext.cnf) >/dev/null 2>&1", dir);
	ck_assert_msg(system(cmd) == 0, "openssl failed: %s", cmd);
}

static void
remove_certs(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
}

static void
setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	log_set_level(LOG_ERROR);
}

static void
teardown(void)
{
	event_base_free(base);
	base = NULL;
}

/* stderr into a file while a test looks at the log lines */
static int saved_stderr = -1;
static char logpath[300];

static void
capture_start(void)
{
	int fd;

	snprintf(logpath, sizeof(logpath), "%s/log-XXXXXX", dir);
	ck_assert_int_ge(fd = mkstemp(logpath), 0);
	log_set_level(LOG_DEBUG);
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static char *
capture_end(void)
{
	static char text[65536];
	int fd;
	ssize_t n;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	ck_assert_int_ge(fd = open(logpath, O_RDONLY), 0);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	unlink(logpath);
	text[n > 0 ? n : 0] = '\0';
	return text;
}

/* A service checked every INTERVAL ms with thresholds 2 up / 3 down. */
static void
svc_init(struct conf_service *svc, int64_t interval, int64_t timeout)
{
	memset(svc, 0, sizeof(*svc));
	svc->name = (char *)"users";
	svc->upstream_host = "user-service";
	svc->health_check.enabled = true;
	svc->health_check.path = (char *)"/health";
	svc->health_check.interval = interval;
	svc->health_check.timeout = timeout;
	svc->health_check.healthy = 2;
	svc->health_check.unhealthy = 3;
}

static void
svc_tls(struct conf_service *svc, const char *server_name, const char *san)
{
	char err[256];

	svc->tls.enabled = true;
	svc->tls.ca = ca_pem;
	svc->tls.server_name = (char *)server_name;
	svc->tls.verify_san = (char *)san;
	svc->tls.min_version = TLS1_2_VERSION;
	svc->tls.ctx = tls_client_ctx_new(&svc->tls, err, sizeof(err));
	ck_assert_msg(svc->tls.ctx != NULL, "client ctx: %s", err);
}

/* An endpoint: HOST as configured, 127.0.0.1:PORT as resolved. */
struct ep {
	char host[64], addr[80];
	struct sockaddr_in sin;
	struct ep_runtime rt;	/* last: it ends in the (here empty) shares */
};

static void
ep_init(struct ep *e, const char *host, int port)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->host, sizeof(e->host), "%s", host);
	snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", port);
	atomic_init(&e->rt.healthy, true);
	atomic_init(&e->rt.hc_streak, 0);
	e->sin.sin_family = AF_INET;
	e->sin.sin_port = htons((uint16_t)port);
	e->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void
watch(struct health *h, struct conf_service *svc, struct ep *e)
{
	health_watch(h, svc, &e->rt, (struct sockaddr *)&e->sin, sizeof(e->sin),
	    e->addr, e->host);
}

/* ------------------------------------------------------------- tests --- */

/* The server holds every answer until the test lets one through, so each
 * result is seen on its own. */
START_TEST(test_transitions)
{
	struct srv *s = srv_start(200, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	char last[4096], want[256], *log;

	s->gated = true;
	svc_init(&svc, 20, 2000);
	svc.auth_key = (char *)"s3cr3t-key";
	ep_init(&e, "127.0.0.1", s->port);
	capture_start();
	watch(h, &svc, &e);
	want_srv = s;
	want_n = 1;
	ck_assert(run_until(requests_reach, NULL, 3000));
	srv_last(s, last, sizeof(last));
	ck_assert_str_eq(last, "GET /health HTTP/1.1\r\nHost: user-service\r\n"
	    "User-Agent: ferry-health-check\r\nx-service-auth: s3cr3t-key\r\n"
	    "Connection: close\r\n\r\n");
	answer(s, 200);
	want_n = 2;
	ck_assert(run_until(requests_reach, NULL, 3000));
	ck_assert(atomic_load(&e.rt.healthy));
	ck_assert_uint_eq(atomic_load(&e.rt.hc_streak), 0);

	/* healthy -> unhealthy after exactly 3 failures */
	for (int i = 1; i <= 2; i++) {
		answer(s, 503);
		want_n = i;
		ck_assert(run_until(streak_is, &e.rt, 3000));
		ck_assert(atomic_load(&e.rt.healthy));
	}
	answer(s, 503);
	ck_assert(run_until(is_down, &e.rt, 3000));
	ck_assert_uint_eq(atomic_load(&e.rt.hc_streak), 0);

	/* unhealthy -> healthy after exactly 2 successes */
	answer(s, 204);
	want_n = 1;
	ck_assert(run_until(streak_is, &e.rt, 3000));
	ck_assert(!atomic_load(&e.rt.healthy));
	answer(s, 200);
	ck_assert(run_until(is_up, &e.rt, 3000));
	ck_assert_uint_eq(atomic_load(&e.rt.hc_streak), 0);
	health_free(h);
	log = capture_end();
	snprintf(want, sizeof(want), "WARN endpoint unhealthy service=users "
	    "endpoint=127.0.0.1:%d cause=\"status 503\"\n", s->port);
	ck_assert_msg(strstr(log, want) != NULL, "log: %s", log);
	snprintf(want, sizeof(want), "INFO endpoint healthy service=users "
	    "endpoint=127.0.0.1:%d\n", s->port);
	ck_assert_msg(strstr(log, want) != NULL, "log: %s", log);
	ck_assert_msg(strstr(log, "s3cr3t") == NULL, "key logged: %s", log);
	srv_stop(s);
}
END_TEST

/* A success between failures resets the count: no flip on scattered ones. */
START_TEST(test_streak_resets)
{
	struct srv *s = srv_start(200, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;

	s->gated = true;
	svc_init(&svc, 20, 2000);
	svc.health_check.unhealthy = 2;
	ep_init(&e, "127.0.0.1", s->port);
	watch(h, &svc, &e);
	for (int i = 0; i < 3; i++) {
		answer(s, 500);
		want_n = 1;
		ck_assert(run_until(streak_is, &e.rt, 3000));
		answer(s, 200);
		want_n = 0;
		ck_assert(run_until(streak_is, &e.rt, 3000));
		ck_assert(atomic_load(&e.rt.healthy));
	}
	health_free(h);
	srv_stop(s);
}
END_TEST

START_TEST(test_timeout)
{
	struct srv *s = srv_start(ST_HANG, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	int64_t t0;
	char *log;

	svc_init(&svc, 150, 100);
	svc.health_check.unhealthy = 1;
	ep_init(&e, "127.0.0.1", s->port);
	capture_start();
	watch(h, &svc, &e);
	want_srv = s;
	want_n = 1;
	ck_assert(run_until(requests_reach, NULL, 3000));
	t0 = clock_now_ms();
	ck_assert(atomic_load(&e.rt.healthy));
	ck_assert(run_until(is_down, &e.rt, 3000));
	ck_assert_int_ge(clock_now_ms() - t0, 60);
	health_free(h);
	log = capture_end();
	ck_assert_msg(strstr(log, "cause=\"timed out after 100ms\"") != NULL, "log: %s", log);
	srv_stop(s);
}
END_TEST

START_TEST(test_refused)
{
	struct health *h = health_new(base);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct conf_service svc;
	struct ep e;
	int fd, port;
	char *log;

	/* a port nobody listens on */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	svc_init(&svc, 20, 1000);
	svc.health_check.unhealthy = 2;
	ep_init(&e, "127.0.0.1", port);
	capture_start();
	watch(h, &svc, &e);
	ck_assert(run_until(is_down, &e.rt, 3000));
	health_free(h);
	log = capture_end();
	ck_assert_msg(strstr(log, "cause=\"Connection refused\"") != NULL, "log: %s", log);
	close(fd);
}
END_TEST

START_TEST(test_malformed_and_interim)
{
	struct srv *s = srv_start(ST_GARBAGE, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	char *log;

	svc_init(&svc, 20, 1000);
	svc.health_check.unhealthy = 1;
	svc.health_check.healthy = 1;
	ep_init(&e, "127.0.0.1", s->port);
	capture_start();
	watch(h, &svc, &e);
	ck_assert(run_until(is_down, &e.rt, 3000));
	/* 100 Continue first, then the final 204 */
	atomic_store(&s->status, ST_INTERIM);
	ck_assert(run_until(is_up, &e.rt, 3000));
	health_free(h);
	log = capture_end();
	ck_assert_msg(strstr(log, "cause=\"malformed response") != NULL, "log: %s", log);
	srv_stop(s);
}
END_TEST

START_TEST(test_closed_early)
{
	struct srv *s = srv_start(200, true);	/* TLS server... */
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	char *log;

	/* ...spoken to in plain HTTP: the server drops the connection */
	svc_init(&svc, 20, 1000);
	svc.health_check.unhealthy = 1;
	ep_init(&e, "127.0.0.1", s->port);
	capture_start();
	watch(h, &svc, &e);
	ck_assert(run_until(is_down, &e.rt, 3000));
	health_free(h);
	log = capture_end();
	ck_assert_msg(strstr(log, "WARN endpoint unhealthy") != NULL, "log: %s", log);
	srv_stop(s);
}
END_TEST

START_TEST(test_unwatch)
{
	struct srv *s = srv_start(503, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	int n;

	svc_init(&svc, 20, 1000);
	svc.health_check.unhealthy = 1;
	ep_init(&e, "127.0.0.1", s->port);
	watch(h, &svc, &e);
	ck_assert(run_until(is_down, &e.rt, 3000));
	health_unwatch(h, &e.rt);
	/* no checks, nothing held against it */
	ck_assert(atomic_load(&e.rt.healthy));
	ck_assert_uint_eq(atomic_load(&e.rt.hc_streak), 0);
	(void)run_until(NULL, NULL, 50);
	n = atomic_load(&s->requests);
	(void)run_until(NULL, NULL, 200);
	ck_assert_int_eq(atomic_load(&s->requests), n);
	ck_assert(atomic_load(&e.rt.healthy));
	health_unwatch(h, &e.rt);	/* twice is harmless */
	health_free(h);
	srv_stop(s);
}
END_TEST

/* First checks are spread over the interval, not fired together. */
START_TEST(test_stagger)
{
	struct srv *s = srv_start(200, false);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e[16];

	svc_init(&svc, 600, 1000);
	for (int i = 0; i < 16; i++) {
		ep_init(&e[i], "127.0.0.1", s->port);
		watch(h, &svc, &e[i]);
	}
	(void)run_until(NULL, NULL, 150);
	/* about 4 expected; all 16 at once is what staggering prevents */
	ck_assert_int_lt(atomic_load(&s->requests), 16);
	want_srv = s;
	want_n = 16;
	ck_assert(run_until(requests_reach, NULL, 3000));
	health_free(h);
	srv_stop(s);
}
END_TEST

/* A second watch replaces the first: new service, one check stream. */
START_TEST(test_rewatch)
{
	struct srv *s = srv_start(200, false);
	struct health *h = health_new(base);
	struct conf_service a, b;
	struct ep e;
	char last[4096];
	int n;

	svc_init(&a, 20, 1000);
	svc_init(&b, 100, 1000);
	b.health_check.path = (char *)"/ready";
	ep_init(&e, "127.0.0.1", s->port);
	watch(h, &a, &e);
	want_srv = s;
	want_n = 2;
	ck_assert(run_until(requests_reach, NULL, 3000));
	watch(h, &b, &e);
	memset(&a, 0xa5, sizeof(a));		/* the old one must not be used */
	want_n = atomic_load(&s->requests) + 1;
	ck_assert(run_until(requests_reach, NULL, 3000));
	(void)run_until(NULL, NULL, 20);
	srv_last(s, last, sizeof(last));
	ck_assert_msg(strncmp(last, "GET /ready ", 11) == 0, "got %s", last);
	/* one stream at 100ms: about 5 in 500ms, not 25 */
	n = atomic_load(&s->requests);
	(void)run_until(NULL, NULL, 500);
	ck_assert_int_le(atomic_load(&s->requests) - n, 8);
	ck_assert_int_ge(atomic_load(&s->requests) - n, 1);
	/* disabled: an unwatch */
	b.health_check.enabled = false;
	watch(h, &b, &e);
	(void)run_until(NULL, NULL, 50);
	n = atomic_load(&s->requests);
	(void)run_until(NULL, NULL, 250);
	ck_assert_int_eq(atomic_load(&s->requests), n);
	health_free(h);
	srv_stop(s);
}
END_TEST

/* Checks in flight (plain and TLS, all hanging) are freed cleanly: ASan
 * and the leak checker see to it. */
START_TEST(test_free_in_flight)
{
	struct srv *s = srv_start(ST_HANG, false), *t = srv_start(ST_HANG, true);
	struct health *h = health_new(base);
	struct conf_service svc, tsvc;
	struct ep e[3], te;

	svc_init(&svc, 10, 5000);
	svc_init(&tsvc, 10, 5000);
	svc_tls(&tsvc, NULL, NULL);
	for (int i = 0; i < 3; i++) {
		ep_init(&e[i], "127.0.0.1", s->port);
		watch(h, &svc, &e[i]);
	}
	ep_init(&te, "localhost", t->port);
	watch(h, &tsvc, &te);
	want_srv = s;
	want_n = 3;
	ck_assert(run_until(requests_reach, NULL, 3000));
	want_srv = t;
	want_n = 1;
	ck_assert(run_until(requests_reach, NULL, 3000));
	health_free(h);
	SSL_CTX_free(tsvc.tls.ctx);
	srv_stop(s);
	srv_stop(t);
}
END_TEST

START_TEST(test_tls)
{
	struct srv *s = srv_start(200, true);
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	char last[4096], *log;

	/* a name endpoint: SNI and verification of that name */
	svc_init(&svc, 20, 2000);
	svc.auth_key = (char *)"tls-key";
	svc_tls(&svc, NULL, NULL);
	ep_init(&e, "localhost", s->port);
	capture_start();
	watch(h, &svc, &e);
	want_srv = s;
	want_n = 2;
	ck_assert(run_until(requests_reach, NULL, 3000));
	ck_assert(atomic_load(&e.rt.healthy));
	srv_sni(s, last, sizeof(last));
	ck_assert_str_eq(last, "localhost");
	srv_last(s, last, sizeof(last));
	ck_assert_msg(strstr(last, "\r\nHost: user-service\r\n") != NULL, "got %s", last);
	ck_assert_msg(strstr(last, "\r\nx-service-auth: tls-key\r\n") != NULL, "got %s", last);
	health_unwatch(h, &e.rt);

	/* an IP endpoint: no SNI, the IP SAN is verified */
	ep_init(&e, "127.0.0.1", s->port);
	watch(h, &svc, &e);
	want_n = atomic_load(&s->requests) + 2;
	ck_assert(run_until(requests_reach, NULL, 3000));
	srv_sni(s, last, sizeof(last));
	ck_assert_str_eq(last, "");
	ck_assert(atomic_load(&e.rt.healthy));
	health_free(h);
	/* every check passed (a failed one logs at DEBUG) */
	log = capture_end();
	ck_assert_msg(strstr(log, "health check failed") == NULL, "log: %s", log);
	SSL_CTX_free(svc.tls.ctx);
	srv_stop(s);
}
END_TEST

START_TEST(test_tls_names)
{
	struct srv *s = srv_start(200, true);
	struct health *h = health_new(base);
	struct conf_service bad, san, badsan;
	struct ep e1, e2, e3;
	char *log;

	svc_init(&bad, 20, 2000);
	bad.health_check.unhealthy = 1;
	svc_tls(&bad, "wrong.example", NULL);
	svc_init(&san, 20, 2000);
	san.health_check.unhealthy = 1;
	svc_tls(&san, "other.example", "spiffe://test/upstream");
	svc_init(&badsan, 20, 2000);
	badsan.health_check.unhealthy = 1;
	svc_tls(&badsan, NULL, "spiffe://test/other");
	ep_init(&e1, "localhost", s->port);
	ep_init(&e2, "localhost", s->port);
	ep_init(&e3, "localhost", s->port);
	capture_start();
	watch(h, &bad, &e1);
	watch(h, &san, &e2);
	watch(h, &badsan, &e3);
	ck_assert(run_until(is_down, &e1.rt, 3000));
	ck_assert(run_until(is_down, &e3.rt, 3000));
	want_srv = s;
	want_n = 3;
	ck_assert(run_until(requests_reach, NULL, 3000));
	ck_assert(atomic_load(&e2.rt.healthy));
	ck_assert_int_gt(atomic_load(&s->tls_failed), 0);
	health_free(h);
	log = capture_end();
	ck_assert_msg(strstr(log, "cause=\"TLS: ") != NULL, "log: %s", log);
	ck_assert_msg(strstr(log, "has no SAN spiffe://test/other") != NULL, "log: %s", log);
	SSL_CTX_free(bad.tls.ctx);
	SSL_CTX_free(san.tls.ctx);
	SSL_CTX_free(badsan.tls.ctx);
	srv_stop(s);
}
END_TEST

START_TEST(test_bad_path)
{
	struct health *h = health_new(base);
	struct conf_service svc;
	struct ep e;
	char *log;

	svc_init(&svc, 20, 1000);
	svc.health_check.path = (char *)"/x\r\nEvil: 1";
	ep_init(&e, "127.0.0.1", 9);
	capture_start();
	watch(h, &svc, &e);
	(void)run_until(NULL, NULL, 60);
	log = capture_end();
	ck_assert_msg(strstr(log, "health check not started") != NULL, "log: %s", log);
	ck_assert(atomic_load(&e.rt.healthy));
	health_free(h);
}
END_TEST

static Suite *
health_suite(void)
{
	Suite *s = suite_create("health");
	TCase *tc = tcase_create("checks");

	tcase_add_unchecked_fixture(tc, make_certs, remove_certs);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_transitions);
	tcase_add_test(tc, test_streak_resets);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_malformed_and_interim);
	tcase_add_test(tc, test_closed_early);
	tcase_add_test(tc, test_unwatch);
	tcase_add_test(tc, test_stagger);
	tcase_add_test(tc, test_rewatch);
	tcase_add_test(tc, test_free_in_flight);
	tcase_add_test(tc, test_tls);
	tcase_add_test(tc, test_tls_names);
	tcase_add_test(tc, test_bad_path);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(health_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
