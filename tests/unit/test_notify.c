/*
 * Unit tests for src/notify.c: each message arrives as one datagram, byte
 * for byte, on a real AF_UNIX socket named by NOTIFY_SOCKET (a path in a
 * temporary directory, or an abstract name); WATCHDOG_USEC/WATCHDOG_PID;
 * no NOTIFY_SOCKET means silent success.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "clock.h"
#include "notify.h"

static char dir[256];
static char sockpath[300];
static int rx = -1;

/* A datagram socket to receive on, bound to addr. */
static int
bind_rx(const struct sockaddr_un *addr, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_msg(bind(fd, (const struct sockaddr *)addr, len) == 0,
	    "bind: %s", strerror(errno));
	return fd;
}

static void
setup_path(void)
{
	const char *tmp = getenv("TMPDIR");
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(dir, sizeof(dir), "%s/ferry-notify-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sockpath, sizeof(sockpath), "%s/notify.sock", dir);
	ck_assert_uint_lt(strlen(sockpath), sizeof(a.sun_path));
	memcpy(a.sun_path, sockpath, strlen(sockpath) + 1);
	rx = bind_rx(&a, (socklen_t)sizeof(a));
	setenv("NOTIFY_SOCKET", sockpath, 1);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	ck_assert_int_eq(notify_init(), 0);
	ck_assert(notify_enabled());
}

static void
teardown_path(void)
{
	notify_close();
	if (rx != -1)
		close(rx);
	rx = -1;
	unlink(sockpath);
	rmdir(dir);
}

/* The next datagram, NUL-terminated; its length in *len. Fails after 2 s. */
static const char *
recv_msg(size_t *len)
{
	static char buf[NOTIFY_MAX + 64];
	struct pollfd p = { .fd = rx, .events = POLLIN };
	ssize_t n;

	ck_assert_msg(poll(&p, 1, 2000) == 1, "no datagram within 2 s");
	n = recv(rx, buf, sizeof(buf) - 1, 0);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* The next datagram is exactly want: same bytes, no terminator. */
static void
expect(const char *want)
{
	size_t len;
	const char *got = recv_msg(&len);

	ck_assert_str_eq(got, want);
	ck_assert_uint_eq(len, strlen(want));
}

static void
expect_nothing(void)
{
	struct pollfd p = { .fd = rx, .events = POLLIN };

	ck_assert_int_eq(poll(&p, 1, 50), 0);
}

START_TEST(test_messages)
{
	ck_assert_int_eq(notify_ready(), 0);
	expect("READY=1");
	ck_assert_int_eq(notify_stopping(), 0);
	expect("STOPPING=1");
	ck_assert_int_eq(notify_watchdog(), 0);
	expect("WATCHDOG=1");
	ck_assert_int_eq(notify_status("listening on %s, %d services", "127.0.0.1:15001", 3), 0);
	expect("STATUS=listening on 127.0.0.1:15001, 3 services");
	ck_assert_int_eq(notify_send("EXTEND_TIMEOUT_USEC=%d", 5000000), 0);
	expect("EXTEND_TIMEOUT_USEC=5000000");
	ck_assert_int_eq(notify_send("STATUS=a\nREADY=1"), 0);
	expect("STATUS=a\nREADY=1");
	expect_nothing();
}
END_TEST

START_TEST(test_reloading)
{
	int64_t before, after;
	long long mono;
	const char *got;
	size_t len;
	char *end;

	before = clock_now_us();
	ck_assert_int_eq(notify_reloading(), 0);
	after = clock_now_us();
	got = recv_msg(&len);
	ck_assert_uint_eq(len, strlen(got));
	ck_assert_msg(strncmp(got, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0, "got %s", got);
	mono = strtoll(got + 27, &end, 10);
	ck_assert_msg(*end == '\0' && end > got + 27, "got %s", got);
	/* CLOCK_MONOTONIC in microseconds, as systemd compares it */
	ck_assert_int_ge(mono, before);
	ck_assert_int_le(mono, after);
	/* then READY=1 closes the reload */
	ck_assert_int_eq(notify_ready(), 0);
	expect("READY=1");
}
END_TEST

START_TEST(test_status_one_assignment)
{
	/* a newline in quoted text must not smuggle in another assignment */
	ck_assert_int_eq(notify_status("bad config: %s", "x\nREADY=1\r\n"), 0);
	expect("STATUS=bad config: x READY=1  ");
	ck_assert_int_eq(notify_status("%s", ""), 0);
	expect("STATUS=");
}
END_TEST

START_TEST(test_status_cut)
{
	char big[NOTIFY_MAX * 2];
	const char *got;
	size_t len;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(notify_status("%s", big), 0);
	got = recv_msg(&len);
	ck_assert_uint_eq(len, NOTIFY_MAX);
	ck_assert(strncmp(got, "STATUS=xxx", 10) == 0);
	ck_assert_int_eq(got[len - 1], 'x');
}
END_TEST

START_TEST(test_send_too_long)
{
	char big[NOTIFY_MAX + 2];

	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	errno = 0;
	ck_assert_int_eq(notify_send("%s", big), -1);
	ck_assert_int_eq(errno, EMSGSIZE);
	expect_nothing();
	/* exactly NOTIFY_MAX bytes still go */
	big[NOTIFY_MAX] = '\0';
	ck_assert_int_eq(notify_send("%s", big), 0);
	expect(big);
}
END_TEST

START_TEST(test_receiver_gone)
{
	close(rx);
	rx = -1;
	unlink(sockpath);
	errno = 0;
	ck_assert_int_eq(notify_ready(), -1);
	ck_assert(errno == ENOENT || errno == ECONNREFUSED);
	ck_assert_int_eq(notify_status("x"), -1);
}
END_TEST

START_TEST(test_socket_cloexec)
{
	int found = 0;

	/* the one datagram socket notify opened is close-on-exec */
	for (int fd = 3; fd < 256; fd++) {
		int type, flags;
		socklen_t tl = sizeof(type);
		struct sockaddr_un a;
		socklen_t al = sizeof(a);

		if (fd == rx || (flags = fcntl(fd, F_GETFD)) == -1)
			continue;
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == -1 ||
		    type != SOCK_DGRAM)
			continue;
		if (getsockname(fd, (struct sockaddr *)&a, &al) == -1 ||
		    a.sun_family != AF_UNIX)
			continue;
		ck_assert_msg(flags & FD_CLOEXEC, "fd %d lacks FD_CLOEXEC", fd);
		found++;
	}
	ck_assert_int_eq(found, 1);
	/* re-initialising does not leak the old socket */
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_init(), 0);
	found = 0;
	for (int fd = 3; fd < 256; fd++) {
		int type;
		socklen_t tl = sizeof(type);

		if (fd != rx && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
		    type == SOCK_DGRAM)
			found++;
	}
	ck_assert_int_eq(found, 1);
	ck_assert_int_eq(notify_ready(), 0);
	expect("READY=1");
}
END_TEST

#define N_THREADS 4
#define N_PER_THREAD 200

static void *
sender(void *arg)
{
	int id = (int)(intptr_t)arg;

	for (int i = 0; i < N_PER_THREAD; i++)
		if (notify_status("t%d n%d", id, i) != 0)
			return (void *)1;
	return NULL;
}

START_TEST(test_threads)
{
	pthread_t t[N_THREADS];
	int next[N_THREADS] = { 0 };
	int bufsz = 1 << 20;

	setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
	for (int i = 0; i < N_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, sender, (void *)(intptr_t)i), 0);
	/* every message arrives whole, each thread's in its order */
	for (int k = 0; k < N_THREADS * N_PER_THREAD; k++) {
		size_t len;
		const char *got = recv_msg(&len);
		int id, n;

		ck_assert_msg(sscanf(got, "STATUS=t%d n%d", &id, &n) == 2, "got %s", got);
		ck_assert(id >= 0 && id < N_THREADS);
		ck_assert_int_eq(n, next[id]);
		next[id]++;
	}
	for (int i = 0; i < N_THREADS; i++) {
		void *rc;

		ck_assert_int_eq(pthread_join(t[i], &rc), 0);
		ck_assert_ptr_null(rc);
	}
}
END_TEST

START_TEST(test_abstract)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char name[64], env[80];
	int n;

	/* a name of our own in the abstract namespace: no file, no cleanup */
	n = snprintf(name, sizeof(name), "ferry-test-notify-%ld-%lld", (long)getpid(),
	    (long long)clock_now_us());
	memcpy(a.sun_path + 1, name, (size_t)n);
	rx = bind_rx(&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n));
	snprintf(env, sizeof(env), "@%s", name);
	setenv("NOTIFY_SOCKET", env, 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert(notify_enabled());
	ck_assert_int_eq(notify_ready(), 0);
	expect("READY=1");
	ck_assert_int_eq(notify_reloading(), 0);
	{
		size_t len;
		const char *got = recv_msg(&len);

		ck_assert(strncmp(got, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	}
	ck_assert_int_eq(notify_status("draining"), 0);
	expect("STATUS=draining");
	ck_assert_int_eq(notify_stopping(), 0);
	expect("STOPPING=1");
	ck_assert_int_eq(notify_watchdog(), 0);
	expect("WATCHDOG=1");
	notify_close();
	close(rx);
	rx = -1;
}
END_TEST

START_TEST(test_unset)
{
	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "30000000", 1);
	errno = 0;
	ck_assert_int_eq(notify_init(), 0);
	ck_assert(!notify_enabled());
	ck_assert_int_eq(notify_ready(), 0);
	ck_assert_int_eq(notify_reloading(), 0);
	ck_assert_int_eq(notify_stopping(), 0);
	ck_assert_int_eq(notify_watchdog(), 0);
	ck_assert_int_eq(notify_status("x %d", 1), 0);
	ck_assert_int_eq(notify_send("READY=1"), 0);
	/* no socket: nobody to ping, so no watchdog timer either */
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
}
END_TEST

START_TEST(test_bad_address)
{
	char longpath[200];

	setenv("NOTIFY_SOCKET", "relative/notify.sock", 1);
	ck_assert_int_eq(notify_init(), -1);
	ck_assert(!notify_enabled());
	ck_assert_int_eq(notify_ready(), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	ck_assert_int_eq(notify_init(), -1);
	setenv("NOTIFY_SOCKET", "@", 1);
	ck_assert_int_eq(notify_init(), -1);
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	ck_assert_int_eq(notify_init(), -1);
	ck_assert_int_eq(errno, EAFNOSUPPORT);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longpath, 1);
	ck_assert_int_eq(notify_init(), -1);
	ck_assert_int_eq(errno, ENAMETOOLONG);
	longpath[0] = '@';
	setenv("NOTIFY_SOCKET", longpath, 1);
	ck_assert_int_eq(notify_init(), -1);
	ck_assert_int_eq(errno, ENAMETOOLONG);
	ck_assert(!notify_enabled());
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
}
END_TEST

START_TEST(test_watchdog_interval)
{
	char pid[32];

	/* setup_path ran with no WATCHDOG_USEC */
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);

	setenv("WATCHDOG_USEC", "30000000", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 15000000);

	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 15000000);

	/* meant for another process (a parent that exec'd us, say) */
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	setenv("WATCHDOG_PID", pid, 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_PID", "junk", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	unsetenv("WATCHDOG_PID");

	setenv("WATCHDOG_USEC", "abc", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_USEC", "-5", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_USEC", "0", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_USEC", "99999999999999999999999", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_USEC", "1", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	setenv("WATCHDOG_USEC", "3", 1);
	ck_assert_int_eq(notify_init(), 0);
	ck_assert_int_eq(notify_watchdog_interval_us(), 1);

	/* the socket still works after all that */
	ck_assert_int_eq(notify_watchdog(), 0);
	expect("WATCHDOG=1");
	notify_close();
	ck_assert(!notify_enabled());
	ck_assert_int_eq(notify_watchdog_interval_us(), 0);
	ck_assert_int_eq(notify_watchdog(), 0);
	expect_nothing();
}
END_TEST

static Suite *
notify_suite(void)
{
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("path");
	TCase *other = tcase_create("other");

	tcase_add_checked_fixture(tc, setup_path, teardown_path);
	tcase_add_test(tc, test_messages);
	tcase_add_test(tc, test_reloading);
	tcase_add_test(tc, test_status_one_assignment);
	tcase_add_test(tc, test_status_cut);
	tcase_add_test(tc, test_send_too_long);
	tcase_add_test(tc, test_receiver_gone);
	tcase_add_test(tc, test_socket_cloexec);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_watchdog_interval);
	suite_add_tcase(s, tc);

	tcase_add_test(other, test_abstract);
	tcase_add_test(other, test_unset);
	tcase_add_test(other, test_bad_address);
	suite_add_tcase(s, other);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(notify_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
