/*
 * Unit tests for src/batch_bio.c: the BIO of a TLS connection's socket,
 * whose batched reads serve OpenSSL's record reads from one socket read.
 * A socketpair stands in for the connection; the peer end writes, the
 * BIO reads in the sizes OpenSSL asks for (a 5-byte header, then a
 * record), and writes for the peer to read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#include "batch_bio.h"
#include "blocks.h"

static int sv[2];	/* sv[0] the BIO's (non-blocking), sv[1] the peer's */
static BIO *b;

static void
setup(void)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	b = batch_bio_new(sv[0]);
	ck_assert_ptr_nonnull(b);
	batch_bio_batch(b);
}

static void
teardown(void)
{
	BIO_free(b);
	if (sv[0] >= 0)
		close(sv[0]);
	close(sv[1]);
}

static void
peer_writes(const void *p, size_t n)
{
	ck_assert_int_eq(write(sv[1], p, n), (ssize_t)n);
}

/* BIO_read_ex of up to N: what it returned and read */
static int
take(void *out, size_t n, size_t *got)
{
	return BIO_read_ex(b, out, n, got);
}

START_TEST(test_one_read_serves_many_asks)
{
	char in[3000], out[3000];
	size_t got, at = 0;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)(i * 7 + 1);
	peer_writes(in, sizeof(in));
	/* header, record, header, record... as OpenSSL asks */
	while (at < sizeof(in)) {
		size_t ask = (at / 5) % 2 ? 5 : 300;

		if (ask > sizeof(in) - at)
			ask = sizeof(in) - at;
		ck_assert_int_eq(take(out + at, ask, &got), 1);
		ck_assert_uint_eq(got, ask);
		at += got;
		/* what the socket gave and was not asked for yet */
		ck_assert_uint_eq(batch_bio_pending(b), sizeof(in) - at);
		ck_assert_int_eq(BIO_pending(b), (int)(sizeof(in) - at));
	}
	ck_assert_mem_eq(out, in, sizeof(in));
	/* nothing more: a retry, not an error and not the end */
	ck_assert_int_eq(take(out, 5, &got), 0);
	ck_assert_uint_eq(got, 0);
	ck_assert(BIO_should_retry(b));
	ck_assert(BIO_should_read(b));
	ck_assert_int_eq(BIO_eof(b), 0);
}
END_TEST

START_TEST(test_large_ask_goes_straight_to_the_socket)
{
	static char in[40000], out[40000];
	size_t got;

	memset(in, 'r', sizeof(in));
	peer_writes(in, sizeof(in));
	ck_assert_int_eq(take(out, sizeof(out), &got), 1);
	ck_assert_uint_ge(got, BATCH_BIO_BUF);
	ck_assert_uint_eq(batch_bio_pending(b), 0);	/* nothing buffered */
	ck_assert_mem_eq(out, in, got);
}
END_TEST

START_TEST(test_buffer_held_only_while_it_has_bytes)
{
	char out[64];
	size_t got;

	/* with no spare, the BIO's block comes from malloc and, once
	 * emptied, goes back as the thread's one spare (a build that keeps
	 * none, MSan, gives it to free) */
	bool keeps;

	blocks_thread_end();
	blocks_put(blocks_get(BATCH_BIO_BUF));
	keeps = blocks_kept() == 1;
	blocks_thread_end();
	peer_writes("0123456789", 10);
	ck_assert_int_eq(take(out, 5, &got), 1);
	ck_assert_uint_eq(blocks_kept(), 0);
	ck_assert_int_eq(take(out, 5, &got), 1);
	ck_assert_mem_eq(out, "56789", 5);
	ck_assert_uint_eq(batch_bio_pending(b), 0);
	ck_assert_uint_eq(blocks_kept(), keeps ? 1 : 0);
	blocks_thread_end();
}
END_TEST

START_TEST(test_end_of_stream)
{
	char out[16];
	size_t got;

	peer_writes("abc", 3);
	shutdown(sv[1], SHUT_WR);
	ck_assert_int_eq(take(out, 5, &got), 1);
	ck_assert_uint_eq(got, 3);
	ck_assert_int_eq(BIO_eof(b), 0);	/* not seen yet */
	ck_assert_int_eq(take(out, 5, &got), 0);
	ck_assert(!BIO_should_retry(b));
	ck_assert_int_eq(BIO_eof(b), 1);	/* OpenSSL's "unexpected EOF" */
}
END_TEST

START_TEST(test_error_is_no_retry)
{
	char out[16];
	size_t got;

	/* a read error (here EBADF): neither a retry nor the end */
	close(sv[0]);
	sv[0] = -1;
	ck_assert_int_eq(take(out, 5, &got), 0);
	ck_assert_int_eq(errno, EBADF);
	ck_assert(!BIO_should_retry(b));
	ck_assert_int_eq(BIO_eof(b), 0);
}
END_TEST

START_TEST(test_descriptor)
{
	int fd = -1;

	ck_assert_int_eq(BIO_get_fd(b, &fd), sv[0]);
	ck_assert_int_eq(fd, sv[0]);
}
END_TEST

START_TEST(test_unbatched_reads_take_what_is_asked)
{
	char out[16];
	size_t got;
	BIO *u = batch_bio_new(sv[0]);

	ck_assert_ptr_nonnull(u);
	peer_writes("0123456789", 10);
	ck_assert_int_eq(BIO_read_ex(u, out, 4, &got), 1);
	ck_assert_uint_eq(got, 4);
	ck_assert_uint_eq(batch_bio_pending(u), 0);	/* the rest is still the socket's */
	ck_assert_int_eq(BIO_read_ex(u, out + 4, sizeof(out) - 4, &got), 1);
	ck_assert_uint_eq(got, 6);
	ck_assert_mem_eq(out, "0123456789", 10);
	ck_assert_int_eq(BIO_read_ex(u, out, sizeof(out), &got), 0);
	ck_assert(BIO_should_retry(u));
	ck_assert(BIO_should_read(u));
	BIO_free(u);
}
END_TEST

START_TEST(test_write)
{
	char in[64];
	size_t put;

	ck_assert_int_eq(BIO_write_ex(b, "hello, peer", 11, &put), 1);
	ck_assert_uint_eq(put, 11);
	ck_assert_int_eq(read(sv[1], in, sizeof(in)), 11);
	ck_assert_mem_eq(in, "hello, peer", 11);
	ck_assert_int_eq(BIO_flush(b), 1);
}
END_TEST

START_TEST(test_write_to_a_full_socket_is_a_retry)
{
	static char chunk[65536];
	size_t put = 0, total = 0;

	/* the peer reads nothing: the socket fills, then a retry */
	while (BIO_write_ex(b, chunk, sizeof(chunk), &put) == 1) {
		ck_assert_uint_gt(put, 0);
		total += put;
		ck_assert_uint_lt(total, 64u << 20);
	}
	ck_assert_uint_eq(put, 0);
	ck_assert(BIO_should_retry(b));
	ck_assert(BIO_should_write(b));
	ck_assert_uint_gt(total, 0);
}
END_TEST

START_TEST(test_write_error_is_no_retry)
{
	size_t put = 1;

	close(sv[0]);
	sv[0] = -1;
	ck_assert_int_eq(BIO_write_ex(b, "x", 1, &put), 0);
	ck_assert_int_eq(errno, EBADF);
	ck_assert_uint_eq(put, 0);
	ck_assert(!BIO_should_retry(b));
}
END_TEST

START_TEST(test_no_ktls)
{
	/* OpenSSL asks before each record: the answer is no, both ways */
	ck_assert_int_eq(BIO_ctrl(b, BIO_CTRL_GET_KTLS_SEND, 0, NULL), 0);
	ck_assert_int_eq(BIO_ctrl(b, BIO_CTRL_GET_KTLS_RECV, 0, NULL), 0);
}
END_TEST

static Suite *
batch_bio_suite(void)
{
	Suite *s = suite_create("batch_bio");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_one_read_serves_many_asks);
	tcase_add_test(tc, test_large_ask_goes_straight_to_the_socket);
	tcase_add_test(tc, test_buffer_held_only_while_it_has_bytes);
	tcase_add_test(tc, test_end_of_stream);
	tcase_add_test(tc, test_error_is_no_retry);
	tcase_add_test(tc, test_descriptor);
	tcase_add_test(tc, test_unbatched_reads_take_what_is_asked);
	tcase_add_test(tc, test_write);
	tcase_add_test(tc, test_write_to_a_full_socket_is_a_retry);
	tcase_add_test(tc, test_write_error_is_no_retry);
	tcase_add_test(tc, test_no_ktls);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(batch_bio_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
