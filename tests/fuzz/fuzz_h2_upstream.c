/*
 * libFuzzer harness: a hostile HTTP/2 upstream, through the real h2_up.c
 * (its nghttp2 client session and callbacks: response heads and their
 * limits, 1xx, DATA and flow control, trailers, RST_STREAM, GOAWAY and
 * refused streams, the session's end) and back to the clients, in the
 * in-process worker of fuzz_ferry.h.
 *
 * Input: byte 0 seeds the piece sizes (fuzz_common.h; at most 32 pieces),
 * byte 1 picks the clients (bit 0: GET /a, bit 1: POST /b with a length,
 * bit 2: POST /c chunked with trailers, all HTTP/1.1, one connection each
 * and in that order, so their streams are 1, 3 and 5 when all three are
 * on; none set: the GET alone; bit 3: also an HTTP/2 client, GET /d, after
 * them). The rest is what the upstream says, written piece by piece, once
 * ferry's request frames arrived, on each connection ferry has open to it
 * (service "up", protocol h2; one opened later gets what is left). Then
 * the upstream closes, and the harness waits until ferry has seen it
 * (await_upstream_gone()).
 *
 * Properties, beyond the sanitizers and leak detection: each HTTP/1.1
 * client gets a response that ferry's own response parser reads without
 * error, complete, or ferry closes its connection (never a hang once the
 * upstream is gone); after the clients close, the worker is idle again
 * (fuzz_ferry.h, ff_idle_check()). What ferry sends the upstream is not
 * checked here (the h2c stub of fuzz_h2_down does that).
 */
#include "fuzz_ferry.h"
#include "h2_down.h"

#define MAX_UP 8

static const char yaml_fmt[] =
	"workers: 1\n"
	"log: { level: error, access: \"off\" }\n"
	"listeners:\n"
	"  outbound: { address: \"127.0.0.1:%u\" }\n"
	"  admin: { address: \"127.0.0.1:%u\" }\n"
	"defaults:\n"
	"  retries: { max: 0 }\n"
	"  circuit_breaker: { consecutive_failures: 0 }\n"
	"  outlier_detection: { consecutive_failures: 0 }\n"
	"services:\n"
	"  echo: { endpoints: [\"127.0.0.1:%u\"] }\n"
	"  h2: { endpoints: [\"127.0.0.1:%u\"], protocol: h2 }\n"
	"  down: { endpoints: [\"127.0.0.1:%u\"] }\n"
	"  listened: { endpoints: [\"127.0.0.1:%3$u\"], listen: \"127.0.0.1:%6$u\" }\n"
	"  up:\n"
	"    endpoints: [\"127.0.0.1:%7$u\"]\n"
	"    protocol: h2\n";

static const char *const requests[] = {
	"GET /a HTTP/1.1\r\nHost: up\r\n\r\n",
	"POST /b HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\n\r\nhello",
	("POST /c HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
	    "5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"),
};

/* the upstream's connections, served by the harness */
static int up_fds[MAX_UP];
static size_t n_up;

static void
up_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (n_up == MAX_UP) {
			close(fd);
			continue;
		}
		up_fds[n_up++] = fd;
	}
}

/* Reads and drops what ferry sent the upstream: bytes read, -1 at EOF. */
static ssize_t
up_drain(int fd)
{
	uint8_t buf[65536];
	ssize_t total = 0;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? total : -1;
		if (n == 0)
			return total > 0 ? total : -1;
		total += n;
	}
}

struct client {
	int fd;
	bool h2;
	bool eof;
	bool trunc;
	struct bbuf out;
};

/* Runs the loop until two turns in a row move no byte to a client or
 * from ferry to the upstream. */
static void
settle_all(struct client *cl, size_t n)
{
	for (int quiet = 0, turns = 0; quiet < 2 && turns < 100000; turns++) {
		bool moved = false;

		worker_turn(&ff.w, EVLOOP_NONBLOCK);
		for (size_t i = 0; i < n; i++) {
			ssize_t r;

			if (cl[i].eof)
				continue;
			r = ff_read_all(cl[i].fd, &cl[i].out, 1u << 22, &cl[i].trunc);
			cl[i].eof = r < 0;
			moved = moved || r != 0;
		}
		for (size_t i = 0; i < n_up; i++) {
			ssize_t r = up_fds[i] >= 0 ? up_drain(up_fds[i]) : 0;

			moved = moved || r > 0;
		}
		quiet = moved ? 0 : quiet + 1;
	}
}

/* Closes the upstream's connections (those ferry opened meanwhile too:
 * it retried elsewhere). */
static void
up_close_all(void)
{
	for (size_t i = 0; i < n_up; i++)
		if (up_fds[i] >= 0) {
			up_drain(up_fds[i]);
			close(up_fds[i]);
			up_fds[i] = -1;
		}
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/*
 * Closes the upstream's connections, those accepted meanwhile too, until
 * ferry holds no HTTP/2 upstream session. The close reaches ferry over
 * loopback TCP, which the kernel may deliver after the loop has gone
 * quiet (on a busy machine its softirq waits for ksoftirqd), and so may
 * a connect of ferry's: two quiet turns of settle_all() can end before
 * ferry saw the end, and a client still waits through no fault of
 * ferry's. So this waits in real time, at most 2000 turns of about a
 * millisecond: an upstream that closed leaves ferry no session, and a
 * client still unanswered after that is ferry's doing.
 */
static void
await_upstream_gone(struct client *cl, size_t n)
{
	const struct timeval ms = { 0, 1000 };
	struct event *t = NULL;

	for (int i = 0;; i++) {
		up_close_all();
		settle_all(cl, n);
		if (ff.w.h2ups == NULL || i == 2000)
			break;
		if (t == NULL)
			PROP((t = evtimer_new(ff.w.base, tick, NULL)) != NULL);
		evtimer_add(t, &ms);
		worker_turn(&ff.w, EVLOOP_ONCE);
	}
	if (t != NULL)
		event_free(t);
}

/* An HTTP/1.1 client's bytes: whole responses, the last one complete
 * unless ferry closed the connection. */
static void
check_h1_response(const struct client *c)
{
	static struct http_parser hp;
	static struct http_head head;
	const char *p = (const char *)c->out.p;
	size_t len = c->out.len, off = 0;
	bool done = false;

	if (c->trunc)
		return;
	http_parser_init(&hp, true, &head);
	while (off < len && !done) {
		size_t used = 0;
		enum http_status st = http_parse(&hp, p + off, len - off, 0, &used);

		if (st == HTTP_ERROR) {
			fprintf(stderr, "client: ferry's response does not parse (%s):\n%.*s\n",
			    hp.err_text ? hp.err_text : "?", (int)(len < 2000 ? len : 2000), p);
			PROP(st != HTTP_ERROR);
		}
		if (st == HTTP_NEED_MORE)
			break;
		if (st == HTTP_HEAD_DONE) {
			check_head(p + off, &head, len - off, true);
			off += used;
			if (head.status >= 100 && head.status < 200) {
				http_parser_reset(&hp);
				continue;
			}
			if (!head.chunked && !(head.has_length && head.content_length > 0) &&
			    (head.has_length || head.status == 204 || head.status == 304))
				done = true;
			continue;
		}
		off += used;
		if (st == HTTP_MSG_DONE)
			done = true;
	}
	/* the upstream is gone: an answer, or the connection closed */
	if (!done && !c->eof)
		fprintf(stderr, "client: %zu bytes, no complete response, connection open:\n%.*s\n",
		    len, (int)(len < 2000 ? len : 2000), p);
	PROP(done || c->eof);
	http_parser_free(&hp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	ff.raw_accept = up_accept;
	ff_init(yaml_fmt);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t h2_request[] = {
		/* SETTINGS, then HEADERS stream 1 END_STREAM|END_HEADERS:
		 * GET http /d, :authority up (literals, no Huffman) */
		0, 0, 0, 4, 0, 0, 0, 0, 0,
		0, 0, 10, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x44, 2, '/', 'd', 0x41, 2, 'u', 'p',
	};
	struct client cl[4];
	size_t n_cl = 0;
	struct pieces pc;
	int fds_before;
	uint8_t pick;

	if (size < 2 || size > (1u << 20))
		return 0;
	fds_before = ff_count_fds();
	pieces_init(&pc, data[0]);
	pick = data[1] & 7 ? data[1] & 7 : 1;
	memset(cl, 0, sizeof(cl));
	n_up = 0;

	/* the clients, one after the other: ferry's streams 1, 3, 5 */
	for (size_t i = 0; i < 3; i++) {
		if (!(pick & (1u << i)))
			continue;
		cl[n_cl].fd = ff_connect(ff.outbound, 0);
		PROP(send(cl[n_cl].fd, requests[i], strlen(requests[i]), MSG_NOSIGNAL) ==
		    (ssize_t)strlen(requests[i]));
		n_cl++;
		settle_all(cl, n_cl);
	}
	if (data[1] & 8) {
		cl[n_cl].fd = ff_connect(ff.outbound, 0);
		cl[n_cl].h2 = true;
		PROP(send(cl[n_cl].fd, H2_PREFACE, H2_PREFACE_LEN, MSG_NOSIGNAL) == H2_PREFACE_LEN);
		PROP(send(cl[n_cl].fd, h2_request, sizeof(h2_request), MSG_NOSIGNAL) ==
		    (ssize_t)sizeof(h2_request));
		n_cl++;
		settle_all(cl, n_cl);
	}

	/* the upstream's answer, on every connection ferry opened */
	for (size_t off = 0; off < size - 2;) {
		/* at most about 32 pieces: each costs a settle */
		size_t n = pieces_next(&pc, size - 2 - off), least = (size - 2) / 32 + 1;

		if (n < least)
			n = least < size - 2 - off ? least : size - 2 - off;

		for (size_t i = 0; i < n_up; i++)
			if (up_fds[i] >= 0 &&
			    send(up_fds[i], data + 2 + off, n, MSG_NOSIGNAL) != (ssize_t)n) {
				close(up_fds[i]);	/* ferry closed, or stopped reading */
				up_fds[i] = -1;
			}
		off += n;
		settle_all(cl, n_cl);
	}
	/* the upstream goes, with the connections ferry opened meanwhile (it
	 * retried elsewhere): every client is answered or cut */
	await_upstream_gone(cl, n_cl);
	for (size_t i = 0; i < n_cl; i++) {
		if (getenv("FERRY_FUZZ_LOG"))
			fprintf(stderr, "client %zu (%s, %s): %.*s\n", i, cl[i].h2 ? "h2" : "HTTP/1.1",
			    cl[i].eof ? "closed" : "open", (int)(cl[i].out.len < 600 ? cl[i].out.len : 600),
			    cl[i].h2 ? "" : (const char *)cl[i].out.p);
		if (!cl[i].h2)
			check_h1_response(&cl[i]);
	}

	for (size_t i = 0; i < n_cl; i++) {
		close(cl[i].fd);
		bb_free(&cl[i].out);
	}
	for (int i = 0; i < 100 && (ff.w.h2conns != NULL || ff.w.clients != NULL); i++)
		ff_settle(-1, NULL, 0, NULL);
	ff_idle_check(fds_before);
	return 0;
}
