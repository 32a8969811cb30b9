/* The BIO of a TLS connection's socket, reads batched on request;
 * batch_bio.h. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "batch_bio.h"
#include "blocks.h"

struct batch {
	int fd;
	bool batched;		/* reads go through BUF (batch_bio_batch) */
	bool eof;		/* recv(2) returned 0 */
	bool drained;		/* the last recv(2) found the socket empty */
	bool emptied;		/* ... or took less than it asked: empty then */
	char *buf;		/* a block while it holds bytes, else NULL */
	size_t off, len;	/* the bytes not yet taken */
};

static BIO_METHOD *_Atomic method;
static pthread_mutex_t method_lock = PTHREAD_MUTEX_INITIALIZER;

static void
drop_buffer(struct batch *bt)
{
	blocks_put(bt->buf);
	bt->buf = NULL;
	bt->off = bt->len = 0;
}

/* recv(2)'s N <= 0 as a BIO read result, as OpenSSL's socket BIO does: a
 * retry flag for EAGAIN, BIO_eof for 0, errno left for the rest. */
static int
failed(BIO *b, struct batch *bt, ssize_t n)
{
	if (n == 0)
		bt->eof = true;
	else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		bt->drained = bt->emptied = errno != EINTR;
		BIO_set_retry_read(b);
	}
	return 0;
}

static int
batch_read(BIO *b, char *out, size_t want, size_t *got)
{
	struct batch *bt = BIO_get_data(b);
	size_t take;
	ssize_t n;

	*got = 0;
	BIO_clear_retry_flags(b);
	if (want == 0)
		return 0;
	if (bt->len == 0) {
		if (!bt->batched || want >= BATCH_BIO_BUF) {
			if ((n = recv(bt->fd, out, want, 0)) <= 0)
				return failed(b, bt, n);
			bt->drained = false;
			bt->emptied = (size_t)n < want;
			*got = (size_t)n;
			return 1;
		}
		if (bt->buf == NULL && (bt->buf = blocks_get(BATCH_BIO_BUF)) == NULL) {
			/* an error OpenSSL reports, not an end of stream */
			ERR_raise(ERR_LIB_SYS, ENOMEM);
			return 0;
		}
		if ((n = recv(bt->fd, bt->buf, BATCH_BIO_BUF, 0)) <= 0) {
			drop_buffer(bt);
			return failed(b, bt, n);
		}
		bt->drained = false;
		bt->emptied = (size_t)n < BATCH_BIO_BUF;
		bt->off = 0;
		bt->len = (size_t)n;
	}
	take = want < bt->len ? want : bt->len;
	memcpy(out, bt->buf + bt->off, take);
	bt->off += take;
	bt->len -= take;
	if (bt->len == 0)
		drop_buffer(bt);
	*got = take;
	return 1;
}

static int
batch_write(BIO *b, const char *in, size_t n, size_t *put)
{
	struct batch *bt = BIO_get_data(b);
	ssize_t w;

	*put = 0;
	BIO_clear_retry_flags(b);
	if ((w = send(bt->fd, in, n, MSG_NOSIGNAL)) >= 0) {
		*put = (size_t)w;
		return 1;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		BIO_set_retry_write(b);
	return 0;
}

/* OpenSSL 3.0 asks the write BIO whether kTLS is on eight times a record
 * and the read BIO several more: the default answers them (no) at once */
static long
batch_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct batch *bt = BIO_get_data(b);

	(void)num;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		return (long)bt->len;
	case BIO_CTRL_EOF:
		return bt->eof && bt->len == 0;
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_C_GET_FD:
		if (ptr != NULL)
			*(int *)ptr = bt->fd;
		return bt->fd;
	default:
		return 0;
	}
}

static int
batch_destroy(BIO *b)
{
	struct batch *bt = BIO_get_data(b);

	if (bt != NULL) {
		drop_buffer(bt);
		free(bt);
		BIO_set_data(b, NULL);
	}
	return 1;
}

static void
method_make(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK |
	    BIO_TYPE_DESCRIPTOR, "ferry socket");

	if (m == NULL)
		return;
	if (BIO_meth_set_read_ex(m, batch_read) != 1 ||
	    BIO_meth_set_write_ex(m, batch_write) != 1 ||
	    BIO_meth_set_ctrl(m, batch_ctrl) != 1 ||
	    BIO_meth_set_destroy(m, batch_destroy) != 1) {
		BIO_meth_free(m);
		return;
	}
	method = m;
}

/* Made by the first connection, or by a later one when memory ran out
 * for it: once (pthread_once) would leave every TLS connection without
 * its BIO for good. */
static BIO_METHOD *
method_get(void)
{
	BIO_METHOD *m = method;

	if (m == NULL) {
		pthread_mutex_lock(&method_lock);
		if (method == NULL)
			method_make();
		m = method;
		pthread_mutex_unlock(&method_lock);
	}
	return m;
}

BIO *
batch_bio_new(int fd)
{
	struct batch *bt;
	BIO_METHOD *m;
	BIO *b;

	if ((m = method_get()) == NULL)
		return NULL;
	if ((bt = calloc(1, sizeof(*bt))) == NULL)
		return NULL;
	if ((b = BIO_new(m)) == NULL) {
		free(bt);
		return NULL;
	}
	bt->fd = fd;
	BIO_set_data(b, bt);
	BIO_set_init(b, 1);
	return b;
}

void
batch_bio_batch(BIO *b)
{
	((struct batch *)BIO_get_data(b))->batched = true;
}

size_t
batch_bio_pending(BIO *b)
{
	return ((struct batch *)BIO_get_data(b))->len;
}

bool
batch_bio_drained(BIO *b)
{
	return ((struct batch *)BIO_get_data(b))->drained;
}

bool
batch_bio_emptied(BIO *b)
{
	return ((struct batch *)BIO_get_data(b))->emptied;
}
