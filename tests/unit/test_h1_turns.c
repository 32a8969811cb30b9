/*
 * HTTP/1.1 downstream connections driven turn by turn of the worker's
 * loop, in the in-process world of the fuzz harnesses (tests/fuzz/
 * fuzz_ferry.h: a real worker, real accept path, socketpair clients): for
 * orders of events a test over loopback cannot force, such as two events
 * landing in the same turn.
 */
#include <poll.h>

#include <check.h>

#include "fuzz_ferry.h"

static const char yaml_fmt[] =
	"workers: 1\n"
	"log: { level: error, access: \"off\" }\n"
	"listeners:\n"
	"  outbound: { address: \"127.0.0.1:%u\" }\n"
	"  admin: { address: \"127.0.0.1:%u\" }\n"
	"defaults:\n"
	"  retries: { max: 0 }\n"
	"services:\n"
	"  echo: { endpoints: [\"127.0.0.1:%u\"] }\n"
	"  h2: { endpoints: [\"127.0.0.1:%u\"], protocol: h2 }\n"
	"  down: { endpoints: [\"127.0.0.1:%u\"] }\n"
	"  listened: { endpoints: [\"127.0.0.1:%3$u\"], listen: \"127.0.0.1:%6$u\" }\n"
	"  up: { endpoints: [\"127.0.0.1:%7$u\"] }\n";

static int up_fd = -1;		/* ferry's connection to the raw upstream */

static void
up_accept(evutil_socket_t lfd, short what, void *arg)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	(void)what;
	(void)arg;
	if (fd >= 0)
		up_fd = fd;
}

static void
turn(void)
{
	worker_turn(&ff.w, EVLOOP_NONBLOCK);
}

static void
send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			turn();
			continue;
		}
		ck_assert_int_gt(w, 0);
		c += w;
		n -= (size_t)w;
	}
}

/*
 * A keep-alive response ends while ferry still queues its tail for a slow
 * client, and in the same turn the client's next request arrives, which
 * ferry answers itself and closes after (unknown service, "Connection:
 * close"). The hand-back of the idle connection's state, put off to the
 * end of that turn when the first response ended, must not run on a
 * connection no longer idle: it closed it at once, and the client lost
 * the first response's tail and the whole second response.
 */
START_TEST(test_idle_hand_back_after_the_next_request_began)
{
	static char body[200000], buf[65536];
	static const char r1[] = "GET /a HTTP/1.1\r\nHost: up\r\n\r\n";
	static const char r2[] = "GET /z HTTP/1.1\r\nHost: nosuch\r\nConnection: close\r\n\r\n";
	char head[128];
	struct bbuf all = { 0 };
	const uint8_t *end;
	bool eof = false;
	int cfd, fds_before;
	size_t at;

	ff.raw_accept = up_accept;
	ff_init(yaml_fmt);
	fds_before = ff_count_fds();
	cfd = ff_connect(ff.outbound, 8192);	/* a slow reader */
	send_all(cfd, r1, sizeof(r1) - 1);
	for (int i = 0; i < 50 && up_fd < 0; i++)
		turn();
	ck_assert_int_ge(up_fd, 0);
	for (int i = 0; i < 20; i++) {
		turn();
		while (read(up_fd, buf, sizeof(buf)) > 0)
			;
	}
	memset(body, 'x', sizeof(body));
	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", sizeof(body));
	send_all(up_fd, head, strlen(head));
	send_all(up_fd, body, sizeof(body) - 1);
	for (int i = 0; i < 50; i++)
		turn();
	/* the response's last byte and the next request: one turn */
	send_all(up_fd, "x", 1);
	send_all(cfd, r2, sizeof(r2) - 1);
	turn();
	/* ferry writes all and closes on its own: no timer in the way, but a
	 * loaded machine gets 10 s */
	for (int i = 0; i < 10000 && !eof; i++) {
		ssize_t n = read(cfd, buf, sizeof(buf));

		if (n > 0)
			bb_add(&all, buf, (size_t)n);
		else if (n == 0)
			eof = true;
		else {
			turn();
			poll(&(struct pollfd){ .fd = cfd, .events = POLLIN }, 1, 1);
		}
	}
	ck_assert(eof);
	/* the first response whole (ferry's head, then every body byte) */
	ck_assert_uint_gt(all.len, 12);
	ck_assert_int_eq(memcmp(all.p, "HTTP/1.1 200", 12), 0);
	end = memmem(all.p, all.len, "\r\n\r\n", 4);
	ck_assert_ptr_nonnull(end);
	at = (size_t)(end - all.p) + 4;
	ck_assert_uint_ge(all.len - at, sizeof(body));
	for (size_t i = 0; i < sizeof(body); i++)
		if (all.p[at + i] != 'x')
			ck_abort_msg("body byte %zu is %d", i, all.p[at + i]);
	/* then the second one, ferry's own */
	at += sizeof(body);
	ck_assert_msg(all.len - at > 12 && memcmp(all.p + at, "HTTP/1.1 404", 12) == 0,
	    "the second request's response is missing");
	free(all.p);
	/* and nothing of it is left in ferry */
	close(cfd);
	close(up_fd);
	ff_idle_check(fds_before);
}
END_TEST

static Suite *
h1_turns_suite(void)
{
	Suite *s = suite_create("h1_turns");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_idle_hand_back_after_the_next_request_began);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(h1_turns_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
