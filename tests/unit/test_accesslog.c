/*
 * Unit tests for src/accesslog.c (SPEC §9): exact JSON lines checked by a
 * strict JSON parser, hostile input, the writer thread (4 threads x 10k
 * lines, none lost), reopen, the 1 s flush timer, and bounded memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <event2/event.h>

#include "accesslog.h"
#include "fate.h"
#include "json_lines.h"
#include "sbuf.h"

/*
 * Files.
 */
static char dir[64];

static void
setup(void)
{
	strcpy(dir, "/tmp/ferry-accesslog-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
}

static char *
tpath(const char *name)
{
	static char p[4][128];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static int64_t
epoch_ms(int y, int mo, int d, int h, int mi, int s, int ms)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
	    .tm_hour = h, .tm_min = mi, .tm_sec = s };

	return (int64_t)timegm(&tm) * 1000 + ms;
}

#define S(x) x, sizeof(x) - 1
#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static struct access_entry
sample(void)
{
	return (struct access_entry){
		.time_ms = epoch_ms(2026, 11, 26, 10, 39, 2, 123),
		.dir = DIR_OUTBOUND, .service = "user-service",
		.method = S("GET"), .path = S("/users/1?token=secret"),
		.status = 200, .duration_ms = 12.345,
		.upstream = "127.0.0.1:5000", .attempts = 2, .resends = 1,
		.correlation_id = S("corr-1"), .request_id = S("req-1"),
		.traceparent = S(TP), .bytes_in = 10, .bytes_out = 20,
	};
}

START_TEST(test_exact_line)
{
	struct accesslog *a;
	struct access_entry e = sample(), e2 = sample();
	struct attempt_notes notes = { .count = 2, .n = {
		{ .addr = { 127, 0, 0, 1 }, .port = 5001, .family = AF_INET,
		  .result = AR_REFUSED, .ms = 0 },
		{ .addr = { [15] = 1 }, .port = 5000, .family = AF_INET6,
		  .result = AR_OK, .ms = 12 },
	} };
	char err[256], *text;
	size_t len;

	e.fate = "ok_after_retry";
	e.attempts_detail = &notes;

	a = accesslog_open(tpath("access.log"), 1, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert(accesslog_enabled(a));
	accesslog_write(accesslog_worker(a, 0), &e);
	e2.time_ms = epoch_ms(2027, 1, 2, 3, 4, 5, 6);
	e2.dir = DIR_INBOUND;
	e2.service = NULL;
	e2.method = NULL;
	e2.path = NULL;
	e2.status = 504;
	e2.duration_ms = 2000.0004;
	e2.upstream = NULL;
	e2.attempts = 0;
	e2.resends = 0;
	e2.correlation_id = NULL;
	e2.request_id = NULL;
	e2.traceparent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
	e2.traceparent_len = strlen(e2.traceparent);
	e2.error = "SERVICE_TIMEOUT";
	e2.peer = "spiffe://cluster/ns/default/sa/orders";
	accesslog_write(accesslog_worker(a, 0), &e2);
	accesslog_close(a);
	text = slurp(tpath("access.log"), &len);
	ck_assert_str_eq(text,
	    "{\"time\":\"2026-11-26T10:39:02.123Z\",\"direction\":\"outbound\","
	    "\"service\":\"user-service\",\"method\":\"GET\",\"path\":\"/users/1\","
	    "\"status\":200,\"duration_ms\":12.345,\"upstream\":\"127.0.0.1:5000\","
	    "\"attempts\":2,\"resends\":1,\"correlation_id\":\"corr-1\",\"request_id\":\"req-1\","
	    "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"bytes_in\":10,"
	    "\"bytes_out\":20,\"error\":null,\"peer\":null,\"grpc_status\":null,"
	    "\"fate\":\"ok_after_retry\",\"attempts_detail\":["
	    "{\"endpoint\":\"127.0.0.1:5001\",\"result\":\"refused\",\"ms\":0},"
	    "{\"endpoint\":\"[::1]:5000\",\"result\":\"ok\",\"ms\":12}]}\n"
	    "{\"time\":\"2027-01-02T03:04:05.006Z\",\"direction\":\"inbound\","
	    "\"service\":\"\",\"method\":\"\",\"path\":null,"
	    "\"status\":504,\"duration_ms\":2000.000,\"upstream\":null,"
	    "\"attempts\":0,\"resends\":0,\"correlation_id\":null,\"request_id\":null,"
	    "\"trace_id\":null,\"bytes_in\":10,"
	    "\"bytes_out\":20,\"error\":\"SERVICE_TIMEOUT\","
	    "\"peer\":\"spiffe://cluster/ns/default/sa/orders\",\"grpc_status\":null,"
	    "\"fate\":null,\"attempts_detail\":[]}\n");
	ck_assert_uint_eq(each_line(tpath("access.log"), NULL, NULL), 2);
	free(text);
}
END_TEST

/* Decoded string field KEY of the only line of the file. */
static void
grab(const struct jobj *o, void *arg)
{
	struct sbuf *want = arg;
	const struct jfield *f = jget(o, "path");

	ck_assert_int_eq(f->type, 's');
	sbuf_clear(&want[1]);
	sbuf_add(&want[1], f->val.p, f->val.len);
	f = jget(o, "request_id");
	sbuf_clear(&want[2]);
	sbuf_add(&want[2], f->val.p, f->val.len);
	ck_assert_int_eq(jget(o, "correlation_id")->type, 's');
	ck_assert_int_eq(jget(o, "method")->type, 's');
	ck_assert_int_eq(jget(o, "status")->type, 'n');
}

static void
hostile_case(const char *in, size_t inlen, const char *want, size_t wantlen)
{
	struct sbuf got[3] = { 0 };
	struct accesslog *a;
	struct access_entry e = sample();
	char err[256], *path = tpath("hostile.log");

	unlink(path);
	ck_assert_ptr_nonnull(a = accesslog_open(path, 1, err, sizeof(err)));
	e.path = in;
	e.path_len = inlen;
	e.request_id = in;
	e.request_len = inlen;
	e.correlation_id = in;
	e.correlation_len = inlen;
	e.method = in;
	e.method_len = inlen;
	accesslog_write(accesslog_worker(a, 0), &e);
	accesslog_close(a);
	ck_assert_uint_eq(each_line(path, grab, got), 1);
	ck_assert_uint_eq(got[1].len, wantlen);
	ck_assert(memcmp(got[1].p, want, wantlen) == 0);
	ck_assert_uint_eq(got[2].len, wantlen);
	ck_assert(memcmp(got[2].p, want, wantlen) == 0);
	sbuf_free(&got[1]);
	sbuf_free(&got[2]);
}

START_TEST(test_hostile)
{
	static const char valid[] = "/a\"b\\c\x01\x1f\x7f\t\r\n/\xc3\xa9/"
	    "\xe2\x82\xac/\xf0\x9f\x98\x80\"}{,:\\u0000";
	char big[4096 + 32];
	struct sbuf want = { 0 };

	/* valid UTF-8 with every kind of escape: round-trips exactly */
	hostile_case(S(valid), S(valid));
	/* invalid UTF-8: each bad byte becomes U+FFFD */
	hostile_case(S("/\xff\xfe"), S("/\xef\xbf\xbd\xef\xbf\xbd"));
	hostile_case(S("/\xc3\x28"), S("/\xef\xbf\xbd("));
	hostile_case(S("/\xe2\x82"), S("/\xef\xbf\xbd\xef\xbf\xbd"));
	hostile_case(S("/\xed\xa0\x80"),	/* a UTF-16 surrogate */
	    S("/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
	hostile_case(S("/\xc0\xaf"), S("/\xef\xbf\xbd\xef\xbf\xbd"));
	/* an embedded NUL */
	hostile_case("/a\0b", 4, "/a\0b", 4);
	/* 4 KiB of mixed hostile bytes */
	for (size_t i = 0; i < 4096; i++) {
		static const char mix[] = "a\"\\\x01\x7f\xc3\xa9";

		big[i] = mix[i % (sizeof(mix) - 1)];	/* 4096 % 7 == 1 */
	}
	sbuf_add(&want, big, 4096);
	hostile_case(big, 4096, want.p, want.len);
	sbuf_free(&want);
}
END_TEST

/* Every string all control bytes (each written as six), every number at
 * its widest, eight IPv6 attempts: the room a line takes is enough, and
 * lines that fill buffers past their size all arrive whole. */
START_TEST(test_widest_line)
{
	static char ctl[300];
	struct attempt_notes notes = { .count = FATE_MAX_NOTES };
	struct access_entry e = {
		.time_ms = epoch_ms(9999, 12, 31, 23, 59, 59, 999),
		.dir = DIR_INBOUND, .service = ctl, .method = ctl,
		.method_len = sizeof(ctl) - 1, .path = ctl,
		.path_len = sizeof(ctl) - 1, .status = INT_MAX,
		.duration_ms = 1e300, .upstream = ctl, .attempts = UINT32_MAX,
		.resends = UINT32_MAX, .correlation_id = ctl,
		.correlation_len = sizeof(ctl) - 1, .request_id = ctl,
		.request_len = sizeof(ctl) - 1, .traceparent = S(TP),
		.bytes_in = UINT64_MAX, .bytes_out = UINT64_MAX, .error = ctl,
		.peer = ctl, .grpc = true, .grpc_status = INT_MAX, .fate = ctl,
		.attempts_detail = &notes,
	};
	struct accesslog *a;
	char err[256], *path = tpath("widest.log");
	size_t len;
	char *text;

	memset(ctl, 0x01, sizeof(ctl) - 1);
	for (int i = 0; i < FATE_MAX_NOTES; i++)
		notes.n[i] = (struct attempt_note){ .family = AF_INET6,
		    .addr = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
		    .port = 65535, .result = AR_CONNECT_FAILURE, .ms = UINT32_MAX };
	ck_assert_ptr_nonnull(a = accesslog_open(path, 1, err, sizeof(err)));
	for (int i = 0; i < 100; i++)
		accesslog_write(accesslog_worker(a, 0), &e);
	accesslog_close(a);
	ck_assert_uint_eq(each_line(path, NULL, NULL), 100);
	text = slurp(path, &len);
	ck_assert_ptr_nonnull(strstr(text, "\"time\":\"9999-12-31T23:59:59.999Z\""));
	ck_assert_ptr_nonnull(strstr(text, "\"bytes_out\":18446744073709551615,"));
	ck_assert_ptr_nonnull(strstr(text, "\"duration_ms\":1000000000000.000,"));
	ck_assert_ptr_nonnull(strstr(text, "{\"endpoint\":\"[ffff:ffff:ffff:ffff:"
	    "ffff:ffff:ffff:ffff]:65535\",\"result\":\"connect_failure\","
	    "\"ms\":4294967295}]}\n"));
	free(text);
}
END_TEST

static void
path_of(const struct jobj *o, void *arg)
{
	struct sbuf *s = arg;
	const struct jfield *f = jget(o, "path");

	sbuf_add(s, f->val.p, f->val.len);
	sbuf_add(s, "|", 1);
}

START_TEST(test_query_cut)
{
	static const char *const paths[] = { "/a/b?x=1&y=\"", "?only", "/plain",
	    "/x?", "/?a?b" };
	struct accesslog *a;
	struct access_entry e = sample();
	struct sbuf got = { 0 };
	char err[256];

	ck_assert_ptr_nonnull(a = accesslog_open(tpath("q.log"), 1, err,
	    sizeof(err)));
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		e.path = paths[i];
		e.path_len = strlen(paths[i]);
		accesslog_write(accesslog_worker(a, 0), &e);
	}
	accesslog_close(a);
	each_line(tpath("q.log"), path_of, &got);
	sbuf_add(&got, "", 1);
	ck_assert_str_eq(got.p, "/a/b||/plain|/x|/|");
	sbuf_free(&got);
}
END_TEST

static void
trace_of(const struct jobj *o, void *arg)
{
	struct sbuf *s = arg;
	const struct jfield *f = jget(o, "trace_id");

	if (f->type == 'z')
		sbuf_adds(s, "null");
	else
		sbuf_add(s, f->val.p, f->val.len);
	sbuf_add(s, "|", 1);
}

START_TEST(test_trace_id)
{
	static const char *const tps[] = {
		TP,
		"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
		"00-4bf92f3577b34da6\"ce929d0e0e4736-00f067aa0ba902b7-01",
		"",
	};
	struct accesslog *a;
	struct access_entry e = sample();
	struct sbuf got = { 0 };
	char err[256];

	ck_assert_ptr_nonnull(a = accesslog_open(tpath("t.log"), 1, err,
	    sizeof(err)));
	for (size_t i = 0; i < sizeof(tps) / sizeof(tps[0]); i++) {
		e.traceparent = tps[i];
		e.traceparent_len = strlen(tps[i]);
		accesslog_write(accesslog_worker(a, 0), &e);
	}
	e.traceparent = NULL;
	accesslog_write(accesslog_worker(a, 0), &e);
	accesslog_close(a);
	each_line(tpath("t.log"), trace_of, &got);
	sbuf_add(&got, "", 1);
	ck_assert_str_eq(got.p, "4bf92f3577b34da6a3ce929d0e0e4736|"
	    "0af7651916cd43dd8448eb211c80319c|null|null|null|null|null|null|");
	sbuf_free(&got);
}
END_TEST

/* 4 workers x 10k lines: every line present exactly once after close. */
enum { THREADS = 4, PER_THREAD = 10000 };

struct tharg {
	struct accesslog_buf *b;
	int id;
};

static void *
writer_thread(void *p)
{
	struct tharg *t = p;
	struct access_entry e = sample();
	char rid[32];

	for (int i = 0; i < PER_THREAD; i++) {
		e.request_len = (size_t)snprintf(rid, sizeof(rid), "%d-%d",
		    t->id, i);
		e.request_id = rid;
		e.bytes_out = (uint64_t)i;
		accesslog_write(t->b, &e);
		if (i % 3001 == 0)
			accesslog_flush(t->b);	/* the timer, now and then */
	}
	return NULL;
}

static void
mark(const struct jobj *o, void *arg)
{
	unsigned char *seen = arg;
	const struct jfield *f = jget(o, "request_id");
	int t, i;
	char tmp[32];

	ck_assert_uint_lt(f->val.len, sizeof(tmp));
	memcpy(tmp, f->val.p, f->val.len);
	tmp[f->val.len] = 0;
	ck_assert_int_eq(sscanf(tmp, "%d-%d", &t, &i), 2);
	ck_assert(t >= 0 && t < THREADS && i >= 0 && i < PER_THREAD);
	ck_assert_int_eq(seen[t * PER_THREAD + i], 0);
	seen[t * PER_THREAD + i] = 1;
}

START_TEST(test_threads)
{
	static unsigned char seen[THREADS * PER_THREAD];
	struct tharg args[THREADS];
	pthread_t th[THREADS];
	struct accesslog *a;
	char err[256];

	ck_assert_ptr_nonnull(a = accesslog_open(tpath("th.log"), THREADS, err,
	    sizeof(err)));
	ck_assert_ptr_null(accesslog_worker(a, THREADS));
	/* 16 MB in a burst: a loaded machine may leave the writer behind by
	 * more than the default 8 MiB, and this test wants every line */
	accesslog_set_limit(a, 64u << 20);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct tharg){ accesslog_worker(a, (unsigned)i), i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, writer_thread,
		    &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	ck_assert_uint_eq(accesslog_dropped(a), 0);
	accesslog_close(a);
	ck_assert_uint_eq(each_line(tpath("th.log"), mark, seen),
	    THREADS * PER_THREAD);
	for (int i = 0; i < THREADS * PER_THREAD; i++)
		ck_assert_int_eq(seen[i], 1);
}
END_TEST

static void
collect_rid(const struct jobj *o, void *arg)
{
	struct sbuf *s = arg;
	const struct jfield *f = jget(o, "request_id");

	sbuf_add(s, f->val.p, f->val.len);
	sbuf_add(s, ",", 1);
}

static void
write_ids(struct accesslog_buf *b, int from, int to)
{
	struct access_entry e = sample();
	char rid[16];

	for (int i = from; i < to; i++) {
		e.request_len = (size_t)snprintf(rid, sizeof(rid), "%d", i);
		e.request_id = rid;
		accesslog_write(b, &e);
	}
}

START_TEST(test_reopen)
{
	struct accesslog *a;
	struct accesslog_buf *b;
	struct sbuf old = { 0 }, cur = { 0 };
	struct stat st;
	char err[256];

	ck_assert_ptr_nonnull(a = accesslog_open(tpath("r.log"), 1, err,
	    sizeof(err)));
	b = accesslog_worker(a, 0);
	write_ids(b, 0, 3);
	accesslog_flush(b);
	ck_assert_int_eq(rename(tpath("r.log"), tpath("r.log.1")), 0);
	ck_assert_int_eq(accesslog_reopen(a), 0);
	write_ids(b, 3, 5);
	accesslog_flush(b);
	write_ids(b, 5, 6);
	accesslog_close(a);
	each_line(tpath("r.log.1"), collect_rid, &old);
	each_line(tpath("r.log"), collect_rid, &cur);
	sbuf_add(&old, "", 1);
	sbuf_add(&cur, "", 1);
	ck_assert_str_eq(old.p, "0,1,2,");
	ck_assert_str_eq(cur.p, "3,4,5,");
	ck_assert_int_eq(stat(tpath("r.log"), &st), 0);
	{
		mode_t mask = umask(022);

		umask(mask);
		ck_assert_int_eq(st.st_mode & 0777, 0640 & ~mask);
	}
	sbuf_free(&old);
	sbuf_free(&cur);
}
END_TEST

START_TEST(test_reopen_fails)
{
	struct accesslog *a;
	char err[256], sub[128];

	snprintf(sub, sizeof(sub), "%s/sub", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	ck_assert_ptr_nonnull(a = accesslog_open(tpath("sub/x.log"), 1, err,
	    sizeof(err)));
	write_ids(accesslog_worker(a, 0), 0, 1);
	accesslog_flush(accesslog_worker(a, 0));
	ck_assert_int_eq(rename(tpath("sub/x.log"), tpath("x.log.1")), 0);
	ck_assert_int_eq(rmdir(sub), 0);
	ck_assert_int_eq(accesslog_reopen(a), -1);	/* old file stays */
	write_ids(accesslog_worker(a, 0), 1, 2);
	accesslog_close(a);
	ck_assert_uint_eq(each_line(tpath("x.log.1"), NULL, NULL), 2);
}
END_TEST

/* The 1 s timer on a worker's loop: the line is in the file, no close. */
START_TEST(test_timer_flush)
{
	struct event_base *base = event_base_new();
	struct timeval stop = { 1, 200000 };
	struct accesslog *a;
	struct accesslog_buf *b;
	char err[256], *text;
	size_t len;

	ck_assert_ptr_nonnull(a = accesslog_open(tpath("f.log"), 1, err,
	    sizeof(err)));
	b = accesslog_worker(a, 0);
	ck_assert_int_eq(accesslog_attach(b, base), 0);
	write_ids(b, 0, 1);
	event_base_loopexit(base, &stop);
	event_base_dispatch(base);
	text = slurp(tpath("f.log"), &len);
	ck_assert_ptr_nonnull(strstr(text, "\"request_id\":\"0\""));
	ck_assert_uint_eq(each_line(tpath("f.log"), NULL, NULL), 1);
	free(text);
	accesslog_detach(b);
	event_base_free(base);
	accesslog_close(a);
}
END_TEST

START_TEST(test_off_and_errors)
{
	struct accesslog *a;
	struct access_entry e = sample();
	char err[256] = "";

	ck_assert_ptr_nonnull(a = accesslog_open("off", 4, err, sizeof(err)));
	ck_assert(!accesslog_enabled(a));
	ck_assert(!accesslog_enabled(NULL));
	ck_assert_ptr_null(accesslog_worker(a, 0));
	accesslog_write(NULL, &e);
	accesslog_flush(NULL);
	ck_assert_int_eq(accesslog_attach(NULL, NULL), 0);
	accesslog_detach(NULL);
	ck_assert_int_eq(accesslog_reopen(a), 0);
	ck_assert_uint_eq(accesslog_dropped(a), 0);
	accesslog_close(a);
	accesslog_close(NULL);

	a = accesslog_open(tpath("no/such/dir/x.log"), 1, err, sizeof(err));
	ck_assert_ptr_null(a);
	ck_assert_ptr_nonnull(strstr(err, "no/such/dir/x.log"));
	ck_assert_ptr_nonnull(strstr(err, "No such file"));
}
END_TEST

/* "stdout", here a pipe nobody reads at first: the writer blocks, the
 * queue passes the limit, whole buffers are dropped and counted; then
 * every line is either read from the pipe or counted as dropped. */
struct drain {
	int fd;
	size_t lines;
};

static void *
drain_main(void *p)
{
	struct drain *d = p;
	char buf[65536];
	ssize_t n;

	while ((n = read(d->fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			d->lines += buf[i] == '\n';
	return NULL;
}

START_TEST(test_stdout_bounded)
{
	enum { LINES = 60000 };
	struct drain d = { 0 };
	struct accesslog *a;
	struct access_entry e = sample();
	char err[256], path[300];
	uint64_t dropped;
	pthread_t th;
	int p[2];

	/* Check runs each test in its own process: stdout is ours to take */
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
	close(p[1]);
	ck_assert_ptr_nonnull(a = accesslog_open("stdout", 1, err,
	    sizeof(err)));
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	e.path = path;
	e.path_len = sizeof(path) - 1;		/* ~600 B lines: ~36 MB */
	for (int i = 0; i < LINES; i++)
		accesslog_write(accesslog_worker(a, 0), &e);
	/* only buffers handed over before close may be dropped */
	ck_assert_uint_gt(dropped = accesslog_dropped(a), 0);
	d.fd = p[0];
	ck_assert_int_eq(pthread_create(&th, NULL, drain_main, &d), 0);
	accesslog_close(a);
	close(STDOUT_FILENO);
	pthread_join(th, NULL);
	close(p[0]);
	ck_assert_uint_gt(d.lines, 8 * 1024 * 1024 / 700);
	ck_assert_uint_eq(d.lines + dropped, LINES);
}
END_TEST

static Suite *
accesslog_suite(void)
{
	Suite *s = suite_create("accesslog");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_exact_line);
	tcase_add_test(tc, test_hostile);
	tcase_add_test(tc, test_widest_line);
	tcase_add_test(tc, test_query_cut);
	tcase_add_test(tc, test_trace_id);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_reopen);
	tcase_add_test(tc, test_reopen_fails);
	tcase_add_test(tc, test_timer_flush);
	tcase_add_test(tc, test_off_and_errors);
	tcase_add_test(tc, test_stdout_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(accesslog_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
