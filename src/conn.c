#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/sockios.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "batch_bio.h"
#include "clock.h"
#include "conn.h"
#include "slab.h"

enum conn_state {
	CS_CONNECTING,		/* TCP connect in progress */
	CS_HANDSHAKE,		/* TLS handshake in progress */
	CS_OPEN,		/* data may flow */
	CS_BROKEN,		/* an error was seen; only conn_free() is left */
};

struct conn {
	int fd;
	enum conn_state state;
	enum conn_fail fail;
	bool write_armed;	/* ev_write is added */
	bool read_paused;
	bool read_wants_write;	/* SSL_read said WANT_WRITE */
	bool write_wants_read;	/* SSL_write said WANT_READ */
	bool server;		/* TLS server side */
	bool write_failed;	/* a write (direct or queued) broke it */
	bool wipe_out;		/* queued output is wiped as it leaves */
	bool shut_wanted;	/* conn_close_write: end the write side once
				   the queue has left */
	bool shut_done;		/* close_notify (TLS) and FIN sent */
	SSL *ssl;
	BIO *bio;		/* the SSL's, for both ways (batch_bio.h) */
	uint8_t release_skip;	/* conn_release_buffers calls left to skip */
	uint8_t ph_run;		/* post-handshake messages since the last data */
	bool batched;		/* its reads are (conn_batch_reads) */
	bool emptied;		/* plain: the last recv(2) took less than asked */
	/* Only ev_read lives as long as the connection: the others are made
	 * when first needed, so an idle keep-alive connection that never
	 * waited to write holds none of them (conn_release_buffers drops an
	 * empty output buffer again). */
	struct event *ev_read, *ev_write, *ev_kick;
	struct evbuffer *out;	/* what the socket did not take, or NULL */
	conn_cb cb;
	void *arg;
	char *fail_text;	/* why it failed (owned), or NULL */
	char *verify_san;	/* required URI or DNS SAN, or NULL */
	uint64_t written;
	/* Progress toward the peer (conn_progress_ms): when the kernel (or
	 * TLS) last took bytes, or a sample found the peer took some of
	 * what the kernel held; and that sample's unsent bytes and WRITTEN */
	int64_t took_ms;
	uint64_t outq_seen, written_seen;
	/* ev_read's memory, in the same allocation (its size is libevent's
	 * to say: event_get_struct_event_size) */
	void *ev_read_mem[];
};

#define FAIL_TEXT_MAX 160
/* Reads of TLS 1.3 post-handshake messages (session tickets, key
 * updates) in a row with no data between: a server sends one or two
 * tickets after a handshake, and a read takes every message OpenSSL has
 * read ahead. More is a flood, work for the thread and none for the
 * exchange (conn_read). */
#define PH_RUN_MAX 32
#define RELEASE_EVERY 64	/* conn_release_buffers: SSL_free_buffers one call in */

/* every connection's, for its whole life (slab.h says why not malloc) */
static struct slab conns = SLAB_INITIALIZER;

static void wipe_queue(struct conn *c);

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static void conn_on_kick(evutil_socket_t fd, short what, void *arg);

static void
set_fail(struct conn *c, enum conn_fail f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_fail(struct conn *c, enum conn_fail f, const char *fmt, ...)
{
	va_list ap;

	c->state = CS_BROKEN;
	if (c->fail != CONN_OK)
		return;
	c->fail = f;
	/* without memory for it, conn_error_text says less */
	if ((c->fail_text = malloc(FAIL_TEXT_MAX)) == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(c->fail_text, FAIL_TEXT_MAX, fmt, ap);
	va_end(ap);
}

static struct conn *
conn_alloc(struct event_base *base, int fd, conn_cb cb, void *arg)
{
	struct conn *c = slab_alloc(&conns, sizeof(*c) + event_get_struct_event_size());

	if (c == NULL)
		return NULL;
	c->fd = fd;
	c->cb = cb;
	c->arg = arg;
	c->ev_read = (struct event *)c->ev_read_mem;
	if (event_assign(c->ev_read, base, fd, EV_READ | EV_PERSIST, conn_on_read, c) != 0) {
		c->ev_read = NULL;
		c->fd = -1;	/* the caller's still */
		conn_free(c);
		return NULL;
	}
	return c;
}

struct conn *
conn_new_fd(struct event_base *base, int fd, conn_cb cb, void *arg)
{
	struct conn *c = conn_alloc(base, fd, cb, arg);

	if (c == NULL)
		return NULL;
	c->state = CS_OPEN;
	event_add(c->ev_read, NULL);
	return c;
}

void
conn_set_cb(struct conn *c, conn_cb cb, void *arg)
{
	c->cb = cb;
	c->arg = arg;
}

void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->ev_read)
		event_del(c->ev_read);	/* its memory is c's */
	if (c->ev_write)
		event_free(c->ev_write);
	if (c->ev_kick)
		event_free(c->ev_kick);
	if (c->out) {
		if (c->wipe_out)
			wipe_queue(c);
		evbuffer_free(c->out);
	}
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c->fail_text);
	free(c->verify_san);
	slab_free(&conns, c);
}

/* Write interest; -1 (the connection broken) when there is no memory
 * for its event. */
static int
arm_write(struct conn *c)
{
	if (c->write_armed)
		return 0;
	if (c->ev_write == NULL &&
	    (c->ev_write = event_new(event_get_base(c->ev_read), c->fd,
	    EV_WRITE | EV_PERSIST, conn_on_write, c)) == NULL) {
		set_fail(c, CONN_RESET, "out of memory");
		return -1;
	}
	event_add(c->ev_write, NULL);
	c->write_armed = true;
	return 0;
}

/* A CONN_READABLE (or the FAILED of an early connect error) on the next
 * loop turn. Without memory for the kick event, the read event itself
 * is made active: the owner reads and finds what there is. */
static void
kick(struct conn *c)
{
	if (c->ev_kick == NULL &&
	    (c->ev_kick = event_new(event_get_base(c->ev_read), -1, 0, conn_on_kick, c)) == NULL) {
		event_active(c->ev_read, EV_READ, 0);
		return;
	}
	event_active(c->ev_kick, 0, 0);
}

static size_t
out_len(const struct conn *c)
{
	return c->out ? evbuffer_get_length(c->out) : 0;
}

/* Decrypted bytes inside OpenSSL, or (batched reads) bytes of records
 * not yet taken from the batching BIO: either way the socket will not
 * say so. */
bool
conn_has_pending(struct conn *c)
{
	return c->ssl != NULL && (SSL_has_pending(c->ssl) ||
	    (c->batched && batch_bio_pending(c->bio) > 0));
}

/* Zeros and drops what is still queued (the conn is going). */
static void
wipe_queue(struct conn *c)
{
	struct evbuffer_iovec v;

	while (evbuffer_get_length(c->out) > 0 &&
	    evbuffer_peek(c->out, -1, NULL, &v, 1) > 0 && v.iov_len > 0) {
		explicit_bzero(v.iov_base, v.iov_len);
		evbuffer_drain(c->out, v.iov_len);
	}
}

static void
disarm_write(struct conn *c)
{
	if (c->write_armed) {
		event_del(c->ev_write);
		c->write_armed = false;
	}
}

/* ------------------------------------------------------------ TLS ----- */

static const char *
tls_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : "handshake failed";
}

static bool
san_matches(X509 *cert, const char *want)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	bool ok = false;

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !ok; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const ASN1_STRING *s = NULL;

		if (gn->type == GEN_URI)
			s = gn->d.uniformResourceIdentifier;
		else if (gn->type == GEN_DNS)
			s = gn->d.dNSName;
		if (s && (size_t)ASN1_STRING_length(s) == strlen(want) &&
		    memcmp(ASN1_STRING_get0_data(s), want, strlen(want)) == 0)
			ok = true;
	}
	GENERAL_NAMES_free(names);
	return ok;
}

static int flush_out(struct conn *c);
static bool flush_notify(struct conn *c);
static int shut_write(struct conn *c);

/* Open at last: send what was queued while connecting, then tell the owner. */
static void
connected(struct conn *c)
{
	if (flush_out(c) < 0) {
		c->cb(c, CONN_FAILED, c->arg);
		return;
	}
	/* the peer's first bytes may have come with its last handshake
	 * flight: already decrypted, the socket will not say so */
	if (conn_has_pending(c))
		kick(c);
	c->cb(c, CONN_CONNECTED, c->arg);
}

/* Drives the handshake one step. */
static void
handshake_step(struct conn *c)
{
	int r = c->server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);

	if (r == 1) {
		if (c->verify_san) {
			X509 *peer = SSL_get1_peer_certificate(c->ssl);
			bool ok = peer && san_matches(peer, c->verify_san);

			X509_free(peer);
			if (!ok) {
				set_fail(c, CONN_TLS_FAILED,
				    "TLS: server certificate has no SAN %s", c->verify_san);
				disarm_write(c);
				c->cb(c, CONN_FAILED, c->arg);
				return;
			}
		}
		c->state = CS_OPEN;
		connected(c);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		disarm_write(c);
		return;
	case SSL_ERROR_WANT_WRITE:
		if (arm_write(c) != 0)
			c->cb(c, CONN_FAILED, c->arg);
		return;
	default: {
		long vr = SSL_get_verify_result(c->ssl);

		if (vr != X509_V_OK)
			set_fail(c, CONN_TLS_FAILED, "TLS: %s",
			    X509_verify_cert_error_string(vr));
		else if (ERR_peek_last_error())
			set_fail(c, CONN_TLS_FAILED, "TLS: %s", tls_reason());
		else
			set_fail(c, CONN_TLS_FAILED, "TLS: connection closed during handshake");
		ERR_clear_error();
		disarm_write(c);
		c->cb(c, CONN_FAILED, c->arg);
	}
	}
}

/* The SSL reads and writes the socket through one BIO, which it owns. */
static int
set_bio(struct conn *c)
{
	if ((c->bio = batch_bio_new(c->fd)) == NULL)
		return -1;
	SSL_set_bio(c->ssl, c->bio, c->bio);
	/* SSL_read returns after each post-handshake message, which
	 * conn_read counts: with AUTO_RETRY it takes them one after
	 * another for as long as a peer sends them, the thread with it */
	SSL_clear_mode(c->ssl, SSL_MODE_AUTO_RETRY);
	return 0;
}

static int
setup_client_tls(struct conn *c, SSL_CTX *ctx, const char *sni,
    const char *verify_name, const char *verify_san, SSL_SESSION *session)
{
	X509_VERIFY_PARAM *vp;

	if ((c->ssl = SSL_new(ctx)) == NULL || set_bio(c) != 0)
		return -1;
	if (sni && SSL_set_tlsext_host_name(c->ssl, sni) != 1)
		return -1;
	vp = SSL_get0_param(c->ssl);
	if (verify_san) {
		/* the chain is verified by the CA; the name check is ours */
		if ((c->verify_san = strdup(verify_san)) == NULL)
			return -1;
	} else if (verify_name) {
		if (X509_VERIFY_PARAM_set1_ip_asc(vp, verify_name) != 1 &&
		    X509_VERIFY_PARAM_set1_host(vp, verify_name, 0) != 1)
			return -1;
	}
	if (session)
		SSL_set_session(c->ssl, session);
	SSL_set_connect_state(c->ssl);
	return 0;
}

/* ------------------------------------------------------ connecting ----- */

struct conn *
conn_connect(struct event_base *base, const struct sockaddr *sa, socklen_t salen,
    SSL_CTX *ctx, const char *sni, const char *verify_name,
    const char *verify_san, SSL_SESSION *session, conn_cb cb, void *arg)
{
	int fd, one = 1;
	struct conn *c;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((c = conn_alloc(base, fd, cb, arg)) == NULL) {
		close(fd);
		return NULL;
	}
	if (ctx && setup_client_tls(c, ctx, sni, verify_name, verify_san, session) != 0) {
		conn_free(c);
		return NULL;
	}
	c->state = CS_CONNECTING;
	event_add(c->ev_read, NULL);
	if (connect(fd, sa, salen) != 0 && errno != EINPROGRESS) {
		/* report asynchronously: the caller is not ready for a callback */
		set_fail(c, errno == ECONNREFUSED ? CONN_REFUSED : CONN_CONNECT_FAILED,
		    "%s", strerror(errno));
		kick(c);
		return c;
	}
	if (arm_write(c) != 0) {
		conn_free(c);
		return NULL;
	}
	return c;
}

struct conn *
conn_accept_tls(struct event_base *base, int fd, SSL_CTX *ctx, conn_cb cb, void *arg)
{
	struct conn *c = conn_alloc(base, fd, cb, arg);

	if (c == NULL)
		return NULL;
	if ((c->ssl = SSL_new(ctx)) == NULL || set_bio(c) != 0) {
		c->fd = -1;	/* the caller's still, as for conn_alloc */
		conn_free(c);
		return NULL;
	}
	SSL_set_accept_state(c->ssl);
	c->server = true;
	c->state = CS_HANDSHAKE;
	event_add(c->ev_read, NULL);
	return c;
}

static void
connect_done(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err != 0) {
		set_fail(c, err == ECONNREFUSED ? CONN_REFUSED : CONN_CONNECT_FAILED,
		    "%s", strerror(err));
		disarm_write(c);
		c->cb(c, CONN_FAILED, c->arg);
		return;
	}
	if (c->ssl) {
		c->state = CS_HANDSHAKE;
		handshake_step(c);
		return;
	}
	c->state = CS_OPEN;
	connected(c);
}

/* ------------------------------------------------------------- I/O ----- */

static void
conn_on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (c->state == CS_BROKEN && c->fail != CONN_OK && c->fail != CONN_EOF &&
	    c->fail != CONN_RESET) {
		c->cb(c, CONN_FAILED, c->arg);
		return;
	}
	c->cb(c, CONN_READABLE, c->arg);
}

/* Either readiness moves a connect or a handshake along. */
static bool
setting_up(struct conn *c)
{
	switch (c->state) {
	case CS_CONNECTING:
		connect_done(c);
		return true;
	case CS_HANDSHAKE:
		handshake_step(c);
		return true;
	default:
		return false;
	}
}

static void
conn_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (setting_up(c))
		return;
	switch (c->state) {
	case CS_CONNECTING:
	case CS_HANDSHAKE:
		return;
	case CS_OPEN:
		if (c->write_wants_read) {
			c->write_wants_read = false;
			/* the owner hears of the flush; reading resumes next turn */
			if (flush_notify(c))
				conn_kick_read(c);
			return;
		}
		c->cb(c, CONN_READABLE, c->arg);
		return;
	case CS_BROKEN:
		c->cb(c, CONN_READABLE, c->arg);
		return;
	}
}

static void
conn_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (setting_up(c))
		return;
	switch (c->state) {
	case CS_CONNECTING:
	case CS_HANDSHAKE:
		return;
	case CS_BROKEN:
		disarm_write(c);
		c->cb(c, CONN_READABLE, c->arg);	/* let the owner see the error */
		return;
	case CS_OPEN:
		break;
	}
	if (c->read_wants_write) {
		c->read_wants_write = false;
		c->cb(c, CONN_READABLE, c->arg);
		return;
	}
	flush_notify(c);
}

/* Flushes and tells the owner when the output drained below the low mark
 * (or broke, as a READABLE that finds the error). The callback is the last
 * thing done: it may free the conn. Returns true when it was not called. */
static bool
flush_notify(struct conn *c)
{
	size_t before = out_len(c), after;
	bool shut_before = c->shut_done;

	if (flush_out(c) < 0) {
		c->cb(c, CONN_READABLE, c->arg);
		return false;
	}
	after = out_len(c);
	/* the FIN that waited for a full socket is out: that is news too */
	if ((before > 0 && (after == 0 ||
	    (before >= CONN_HIGH_MARK / 2 && after < CONN_HIGH_MARK / 2))) ||
	    c->shut_done != shut_before) {
		c->cb(c, CONN_DRAINED, c->arg);
		return false;
	}
	return true;
}

ssize_t
conn_read(struct conn *c, struct buf *b, size_t max)
{
	size_t room;
	ssize_t total = 0;

	if (c->state == CS_BROKEN)
		return -1;
	if (c->state != CS_OPEN)
		return CONN_AGAIN;
	for (;;) {
		/* a whole record's room for the first read; the records
		 * behind it take what is left before B grows (a response's
		 * last record is often a few hundred bytes) */
		room = buf_prepare(b, total > 0 ? 1 : 16384, max);
		if (room == 0) {
			/* B is full, and records read from the socket may
			 * wait in OpenSSL or the batch BIO: the socket will
			 * not say so again, so the owner hears READABLE once
			 * more after it has taken what it got (not when it got
			 * nothing: an owner that cannot take would spin) */
			if (total > 0 && conn_has_pending(c))
				kick(c);
			return total > 0 ? total : CONN_AGAIN;
		}
		if (c->ssl == NULL) {
			ssize_t n = recv(c->fd, b->data + b->end, room, 0);

			c->emptied = n < (ssize_t)room;
			if (n > 0) {
				b->end += (size_t)n;
				return n;
			}
			if (n == 0) {
				c->fail = CONN_EOF;
				return 0;
			}
			if (errno == EAGAIN || errno == EINTR)
				return CONN_AGAIN;
			set_fail(c, CONN_RESET, "%s", strerror(errno));
			return -1;
		} else {
			size_t got = 0;
			bool eof = false;
			int r;

			/* SSL_ERROR_SYSCALL below tells an end from a failure
			 * by errno, which a recv(2) that returned 0 leaves */
			errno = 0;
			r = SSL_read_ex(c->ssl, b->data + b->end, room, &got);

			if (r == 1) {
				c->ph_run = 0;
				b->end += got;
				total += (ssize_t)got;
				/* with read-ahead or batched reads a whole
				 * record may be here while the socket stays
				 * quiet */
				if (conn_has_pending(c))
					continue;
				return total;
			}
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_WANT_READ:
				/* not the socket found empty: SSL_read stopped
				 * after a post-handshake message (without
				 * AUTO_RETRY), and more may wait, in the batch
				 * or on the socket. (Not SSL_has_pending: a
				 * partial record read ahead is pending too.) */
				if ((c->batched && batch_bio_pending(c->bio) > 0) ||
				    !batch_bio_drained(c->bio)) {
					if (++c->ph_run <= PH_RUN_MAX)
						continue;
					set_fail(c, CONN_RESET, "TLS: more than %d "
					    "post-handshake messages in a row", PH_RUN_MAX);
					break;
				}
				return total > 0 ? total : CONN_AGAIN;
			case SSL_ERROR_WANT_WRITE:
				c->read_wants_write = true;
				if (arm_write(c) != 0)
					return -1;
				return total > 0 ? total : CONN_AGAIN;
			case SSL_ERROR_ZERO_RETURN:
				eof = true;
				break;
			case SSL_ERROR_SYSCALL:
				/* OpenSSL 1.1's EOF without close_notify: no errno,
				 * nothing queued (3.0 reports it as SSL_ERROR_SSL,
				 * unexpected eof). A reset (ECONNRESET) comes with
				 * an empty queue too, and is no end: taken for one,
				 * a tunnel's upstream or peer that reset was passed
				 * on as a half-close and the tunnel ended as done */
				if (errno == 0 && ERR_peek_error() == 0) {
					eof = true;
					break;
				}
				if (ERR_peek_error() == 0) {
					set_fail(c, CONN_RESET, "%s", strerror(errno));
					break;
				}
				/* fall through */
			default:
				/* the error leaves the thread's queue now: left
				 * there, the next SSL_get_error of any of this
				 * worker's connections would take it for its
				 * own */
				set_fail(c, CONN_RESET, "TLS: %s", tls_reason());
				ERR_clear_error();
				break;
			}
			/* bytes before the end or the bad record go first; the
			 * end or the failure comes with the next read, which
			 * the kick brings (the peer may keep its socket open
			 * and quiet) */
			if (total > 0) {
				kick(c);
				return total;
			}
			if (eof) {
				c->fail = CONN_EOF;
				return 0;
			}
			return -1;
		}
	}
}

bool
conn_read_emptied(const struct conn *c)
{
	if (c->ssl == NULL)
		return c->emptied;
	return c->batched && batch_bio_pending(c->bio) == 0 && batch_bio_emptied(c->bio);
}

/* OpenSSL's read-ahead fills its buffer from the socket and, before each
 * record it takes out, moves everything still unread to the front: on an
 * HTTP/2 connection, where one read brings dozens of small records, that
 * memmove was 6.6% of all instructions per request. Without read-ahead,
 * over a BIO that reads the socket in batches, each record is copied once
 * and the socket is still read 16 KiB at a time. */
void
conn_batch_reads(struct conn *c)
{
	if (c->ssl == NULL || c->batched)
		return;
	batch_bio_batch(c->bio);
	SSL_set_read_ahead(c->ssl, 0);
	c->batched = true;
}

/* evbuffer_write of the first piece, zeroed before it is drained. */
static int
write_wiped(struct conn *c)
{
	struct evbuffer_iovec v;
	ssize_t n;

	if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
		return 0;
	n = send(c->fd, v.iov_base, v.iov_len, MSG_NOSIGNAL);
	if (n > 0) {
		explicit_bzero(v.iov_base, (size_t)n);
		evbuffer_drain(c->out, (size_t)n);
	}
	return (int)n;
}

/* N bytes went to the kernel (through TLS or not): counted, and the
 * time noted with the loop turn's clock, no reading of its own. */
static inline void
took(struct conn *c, uint64_t n)
{
	c->written += n;
	c->took_ms = clock_now_ms();
}

/* Sends what is queued. 0 when all or some went (rest armed), -1 broken. */
static int
flush_out(struct conn *c)
{
	while (out_len(c) > 0) {
		if (c->ssl == NULL) {
			int n = c->wipe_out ? write_wiped(c) : evbuffer_write(c->out, c->fd);

			if (n > 0) {
				took(c, (uint64_t)n);
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			c->write_failed = true;
			set_fail(c, CONN_RESET, "%s", n < 0 ? strerror(errno) : "write failed");
			disarm_write(c);
			return -1;
		} else {
			struct evbuffer_iovec v;
			size_t done = 0;
			int r;

			if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
				break;
			r = SSL_write_ex(c->ssl, v.iov_base, v.iov_len, &done);
			if (r == 1) {
				if (c->wipe_out)
					explicit_bzero(v.iov_base, done);
				evbuffer_drain(c->out, done);
				took(c, done);
				continue;
			}
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_WANT_WRITE:
				goto blocked;
			case SSL_ERROR_WANT_READ:
				c->write_wants_read = true;
				disarm_write(c);
				return 0;
			default:
				c->write_failed = true;
				set_fail(c, CONN_RESET, "TLS write: %s", tls_reason());
				ERR_clear_error();
				disarm_write(c);
				return -1;
			}
		}
	}
blocked:
	if (out_len(c) > 0)
		return arm_write(c);
	if (c->shut_wanted && !c->shut_done)
		return shut_write(c);
	disarm_write(c);
	return 0;
}

/* What send(2) or sendmsg(2) on plain C returned, N: the bytes taken (0:
 * none now, try when writable), or -1 when C is broken. */
static ssize_t
plain_wrote(struct conn *c, ssize_t n)
{
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			c->write_failed = true;
			set_fail(c, CONN_RESET, "%s", strerror(errno));
			return -1;
		}
		n = 0;
	}
	if (n > 0)
		took(c, (uint64_t)n);
	return n;
}

/* Writes DATA directly when nothing is queued, so the common case is one
 * syscall and no copy; what the socket does not take is queued. */
int
conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->state == CS_BROKEN)
		return -1;
	if (len == 0)
		return 0;
	if (c->state == CS_OPEN && out_len(c) == 0 && !c->write_wants_read) {
		if (c->ssl == NULL) {
			ssize_t n = plain_wrote(c, send(c->fd, data, len, MSG_NOSIGNAL));

			if (n < 0)
				return -1;
			data = (const char *)data + n;
			len -= (size_t)n;
		} else {
			size_t done = 0;
			int r = SSL_write_ex(c->ssl, data, len, &done);

			if (r == 1) {
				took(c, done);
				data = (const char *)data + done;
				len -= done;
			} else {
				switch (SSL_get_error(c->ssl, r)) {
				case SSL_ERROR_WANT_WRITE:
					break;
				case SSL_ERROR_WANT_READ:
					c->write_wants_read = true;
					break;
				default:
					c->write_failed = true;
					set_fail(c, CONN_RESET, "TLS write: %s", tls_reason());
					ERR_clear_error();
					return -1;
				}
			}
		}
		if (len == 0)
			return 0;
	}
	if (c->out == NULL && (c->out = evbuffer_new()) == NULL) {
		set_fail(c, CONN_RESET, "out of memory");
		return -1;
	}
	if (evbuffer_add(c->out, data, len) != 0)
		return -1;
	if (c->state == CS_OPEN && !c->write_wants_read)
		return arm_write(c);
	return 0;
}

int
conn_write2(struct conn *c, const void *a, size_t an, const void *b, size_t bn)
{
	if (c->ssl == NULL && c->state == CS_OPEN && out_len(c) == 0 &&
	    an > 0 && bn > 0) {
		struct iovec v[2] = {
			{ .iov_base = (void *)a, .iov_len = an },
			{ .iov_base = (void *)b, .iov_len = bn },
		};
		struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
		ssize_t n = plain_wrote(c, sendmsg(c->fd, &m, MSG_NOSIGNAL));

		if (n < 0)
			return -1;
		if ((size_t)n < an) {
			a = (const char *)a + n;
			an -= (size_t)n;
		} else {
			b = (const char *)b + ((size_t)n - an);
			bn -= (size_t)n - an;
			an = 0;
		}
	}
	/* what is left, queued in order (or TLS: a record each; B may be
	 * empty) */
	if (conn_write(c, a, an) != 0)
		return -1;
	return conn_write(c, b, bn);
}

size_t
conn_pending(const struct conn *c)
{
	return out_len(c);
}

void
conn_wipe_output(struct conn *c)
{
	c->wipe_out = true;
}

void
conn_pause_read(struct conn *c)
{
	if (!c->read_paused) {
		event_del(c->ev_read);
		c->read_paused = true;
	}
}

void
conn_resume_read(struct conn *c)
{
	if (c->read_paused) {
		event_add(c->ev_read, NULL);
		c->read_paused = false;
	}
}

void
conn_kick_read(struct conn *c)
{
	kick(c);
}

void
conn_release_buffers(struct conn *c)
{
	/* With SSL_MODE_RELEASE_BUFFERS (upstream connections) OpenSSL gives
	 * its record buffers back after each record, but not the
	 * handshake's: the first release frees those, and one in
	 * RELEASE_EVERY after it whatever a post-handshake message may have
	 * left; the others would walk OpenSSL's 32 record slots to free
	 * nothing (~670 instructions a request; counted under load: only a
	 * connection's first release freed anything) */
	if (c->ssl && (SSL_get_mode(c->ssl) & SSL_MODE_RELEASE_BUFFERS) &&
	    c->release_skip > 0)
		c->release_skip--;
	else if (c->ssl) {
		/* SSL_OP_CLEANSE_PLAINTEXT (the inbound listener's) zeroed each
		 * byte as it was read, and SSL_free_buffers refuses while any
		 * is left unread: zeroing the whole read buffer again here, as
		 * OpenSSL would, cost ~10,000 instructions a request. SSL_free
		 * still does (a connection may end with bytes unread). */
		uint64_t cleanse = SSL_get_options(c->ssl) & SSL_OP_CLEANSE_PLAINTEXT;

		c->release_skip = RELEASE_EVERY - 1;
		SSL_clear_options(c->ssl, cleanse);
		SSL_free_buffers(c->ssl);
		SSL_set_options(c->ssl, cleanse);
	}
	if (c->out && evbuffer_get_length(c->out) == 0) {
		evbuffer_free(c->out);
		c->out = NULL;
	}
}

void
conn_shutdown(struct conn *c)
{
	/* a second SSL_shutdown would wait for the peer's close_notify */
	if (c->ssl && c->state == CS_OPEN && !c->shut_done) {
		(void)SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	c->shut_done = true;
	shutdown(c->fd, SHUT_WR);
}

/* The close_notify, then the FIN, once the queue is empty. SSL_shutdown
 * is called once more only when the socket did not take the alert (it
 * then sends what is left of it); a call after the alert went would read,
 * waiting for the peer's close_notify, and take its data for nothing.
 * 0, or -1 when the connection is broken. */
static int
shut_write(struct conn *c)
{
	if (c->ssl) {
		int r = SSL_shutdown(c->ssl);

		if (r < 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE)
			return arm_write(c);
		/* any other failure: the FIN still tells the end */
		ERR_clear_error();
	}
	c->shut_done = true;
	disarm_write(c);
	if (shutdown(c->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
		c->write_failed = true;
		set_fail(c, CONN_RESET, "shutdown: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int
conn_close_write(struct conn *c)
{
	if (c->state == CS_BROKEN)
		return -1;
	if (c->shut_wanted)
		return 0;
	c->shut_wanted = true;
	if (c->state != CS_OPEN || out_len(c) > 0 || c->write_wants_read)
		return 0;	/* flush_out does it when the queue has left */
	return shut_write(c);
}

bool
conn_write_closed(const struct conn *c)
{
	return c->shut_done;
}

bool
conn_write_failed(const struct conn *c)
{
	return c->write_failed;
}

enum conn_fail
conn_error(const struct conn *c)
{
	return c->fail;
}

const char *
conn_error_text(const struct conn *c)
{
	if (c->fail_text)
		return c->fail_text;
	return c->fail == CONN_EOF ? "connection closed" : "connection error";
}

int64_t
conn_progress_ms(struct conn *c)
{
	int outq;

	/* the bytes the socket holds unsent (or unacknowledged): fewer
	 * than at the last sample, with what was written since added, and
	 * the peer took some. TLS: WRITTEN counts plaintext, which is less
	 * than the records the socket got: a drain of a record's overhead
	 * or less may go unseen, and none is seen that did not happen.
	 * A queue empty now and at the last sample (or with none before)
	 * held nothing for the peer to be slow with: what was written since
	 * went as it was written, and TOOK_MS already says when; claimed
	 * as taken now, every silent stream would live twice stream_idle. */
	if (c->fd >= 0 && c->state == CS_OPEN && ioctl(c->fd, SIOCOUTQ, &outq) == 0 &&
	    outq >= 0) {
		if ((outq > 0 || c->outq_seen > 0) &&
		    (uint64_t)outq < c->outq_seen + (c->written - c->written_seen))
			c->took_ms = clock_now_ms();
		c->outq_seen = (uint64_t)outq;
		c->written_seen = c->written;
	}
	return c->took_ms;
}

uint64_t
conn_bytes_written(const struct conn *c)
{
	return c->written;
}

bool
conn_is_tls(const struct conn *c)
{
	return c->ssl != NULL;
}

bool
conn_session_reused(const struct conn *c)
{
	return c->ssl != NULL && SSL_session_reused(c->ssl);
}

bool
conn_handshaking(const struct conn *c)
{
	return c->state == CS_CONNECTING || c->state == CS_HANDSHAKE;
}

SSL *
conn_ssl(struct conn *c)
{
	return c->ssl;
}

