/*
 * floor: the least a proxy can spend on ferry's outbound job, measured with
 * ../shared/bench/run beside HAProxy (tests/perf/README.md, "The floor").
 * Plain HTTP/1.1 in, mutual TLS 1.3 out, one upstream connection per client
 * connection, bytes relayed as they come: no parsing (the service key and a
 * request id are spliced in before a request's blank line), no policies, no
 * pool, no ids, no metrics, no timers. Not a proxy: it assumes what the
 * bench sends (one whole GET per read, no bodies).
 *
 *	floor -c ferry.yaml	(the bench's generated config, read by grep;
 *				 the key from BENCH_SERVICE_KEY)
 *
 * Two processes share the listening port (SO_REUSEPORT), as ferry's two
 * workers do. A client connection's upstream connection and handshake are
 * made, blocking, when it is accepted: the bench's warm-up pays for them.
 * What ferry does to spend less is done here too, or the floor would not
 * bound it: AES-128-GCM first, TLS read-ahead (a response's records in one
 * read), no read that only learns EAGAIN, SCHED_BATCH.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define WORKERS 2

struct settings {
	char listen[64], upstream[64], ca[256], cert[256], key[256], sni[128];
	char splice[256];	/* the key and id lines */
	size_t splice_len;
};

struct pair {
	int cfd, ufd;
	SSL *ssl;
	struct event *cev, *uev;
};

static struct settings set;
static SSL_CTX *ctx;
static struct event_base *base;

/* The value after NAME on LINE ("name: value", quotes and brackets off). */
static void
grab(const char *line, const char *name, char *out, size_t n)
{
	const char *p = strstr(line, name), *q;

	if (p == NULL)
		return;
	for (p += strlen(name); *p == ' ' || *p == '"' || *p == '['; p++)
		;
	for (q = p; *q && *q != '"' && *q != ']' && *q != '\n'; q++)
		;
	snprintf(out, n, "%.*s", (int)(q - p), p);
}

static int
read_settings(const char *path)
{
	char line[512];
	FILE *f = fopen(path, "r");
	const char *key = getenv("BENCH_SERVICE_KEY");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "outbound:") && fgets(line, sizeof(line), f) != NULL)
			grab(line, "address:", set.listen, sizeof(set.listen));
		grab(line, "endpoints:", set.upstream, sizeof(set.upstream));
		grab(line, "ca:", set.ca, sizeof(set.ca));
		grab(line, "cert:", set.cert, sizeof(set.cert));
		grab(line, "key:", set.key, sizeof(set.key));
		grab(line, "server_name:", set.sni, sizeof(set.sni));
	}
	fclose(f);
	set.splice_len = (size_t)snprintf(set.splice, sizeof(set.splice),
	    "x-service-auth: %s\r\nx-request-id: floor\r\n", key ? key : "");
	return set.listen[0] && set.upstream[0] ? 0 : -1;
}

static int
parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (colon == NULL)
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void
pair_free(struct pair *p)
{
	event_free(p->cev);
	event_free(p->uev);
	SSL_free(p->ssl);
	close(p->cfd);
	close(p->ufd);
	free(p);
}

/* Loopback takes what the bench answers; a full socket waits in poll. */
static int
write_all(int fd, const char *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			poll(&pfd, 1, 1000);
			continue;
		}
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static void
on_client(evutil_socket_t fd, short what, void *arg)
{
	static char buf[16384 + 512];
	struct pair *p = arg;
	ssize_t n = read(fd, buf, 16384);

	(void)what;
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0) {
		pair_free(p);
		return;
	}
	if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) {
		memcpy(buf + n - 2, set.splice, set.splice_len);
		n += (ssize_t)set.splice_len;
		memcpy(buf + n - 2, "\r\n", 2);
	}
	if (SSL_write(p->ssl, buf, (int)n) != n)
		pair_free(p);
}

/* What the socket had (read-ahead takes every record it holds at once),
 * then one write to the client. */
static void
on_upstream(evutil_socket_t fd, short what, void *arg)
{
	static char buf[65536];
	struct pair *p = arg;
	size_t len = 0;

	(void)fd;
	(void)what;
	do {
		int r;

		if (len == sizeof(buf)) {
			if (write_all(p->cfd, buf, len) != 0) {
				pair_free(p);
				return;
			}
			len = 0;
		}
		r = SSL_read(p->ssl, buf + len, (int)(sizeof(buf) - len));
		if (r > 0) {
			len += (size_t)r;
			continue;
		}
		if (SSL_get_error(p->ssl, r) == SSL_ERROR_WANT_READ)
			break;
		pair_free(p);
		return;
	} while (SSL_has_pending(p->ssl));
	if (len > 0 && write_all(p->cfd, buf, len) != 0)
		pair_free(p);
}

static struct pair *
pair_new(int cfd)
{
	struct sockaddr_in up;
	struct pair *p;
	int one = 1, ufd;

	if (parse_addr(set.upstream, &up) != 0 || (ufd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return NULL;
	setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(ufd, (struct sockaddr *)&up, sizeof(up)) != 0 ||
	    (p = calloc(1, sizeof(*p))) == NULL) {
		close(ufd);
		return NULL;
	}
	p->cfd = cfd;
	p->ufd = ufd;
	if ((p->ssl = SSL_new(ctx)) == NULL || !SSL_set_fd(p->ssl, ufd) ||
	    !SSL_set_tlsext_host_name(p->ssl, set.sni) || !SSL_set1_host(p->ssl, set.sni) ||
	    SSL_connect(p->ssl) != 1) {
		ERR_print_errors_fp(stderr);
		SSL_free(p->ssl);
		close(ufd);
		free(p);
		return NULL;
	}
	fcntl(ufd, F_SETFL, O_NONBLOCK);
	p->cev = event_new(base, cfd, EV_READ | EV_PERSIST, on_client, p);
	p->uev = event_new(base, ufd, EV_READ | EV_PERSIST, on_upstream, p);
	event_add(p->cev, NULL);
	event_add(p->uev, NULL);
	return p;
}

static void
on_accept(evutil_socket_t lfd, short what, void *arg)
{
	int cfd, one = 1;

	(void)what;
	(void)arg;
	while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (pair_new(cfd) == NULL)
			close(cfd);
	}
}

static int
serve(const struct sockaddr_in *la)
{
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct event *ev;

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(lfd, (const struct sockaddr *)la, sizeof(*la)) != 0 || listen(lfd, 1024) != 0) {
		perror("floor: listen");
		return 1;
	}
	base = event_base_new();
	ev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
	event_add(ev, NULL);
	event_base_dispatch(base);
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in la;

	if (argc != 3 || strcmp(argv[1], "-c") != 0 || read_settings(argv[2]) != 0 ||
	    parse_addr(set.listen, &la) != 0) {
		fprintf(stderr, "usage: floor -c BENCH-FERRY-YAML\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_load_verify_locations(ctx, set.ca, NULL) ||
	    !SSL_CTX_use_certificate_chain_file(ctx, set.cert) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, set.key, SSL_FILETYPE_PEM) ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, 2 * 16896);
	sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){ 0 });
	for (int w = 1; w < WORKERS; w++)
		if (fork() == 0)
			break;
	return serve(&la);
}
