/*
 * A transport: a non-blocking socket, plain or TLS, driven by plain
 * libevent events. Read interest stays on for the connection's life;
 * write interest is added only after a write would block, so a request
 * costs no epoll_ctl. The owner reads with conn_read() when told the
 * socket is readable; writes go straight to the socket and only what the
 * kernel does not take is kept in the conn's output buffer.
 *
 * The socket calls are recv(2), send(2) and sendmsg(2), here and in the
 * batch BIO: read(2) and write(2) on a socket pass through the VFS first
 * (vfs_read, vfs_write, sock_read_iter, sock_write_iter): about 3 % of
 * ferry's CPU in a perf profile of the 64 B bench.
 */
#ifndef FERRY_CONN_H
#define FERRY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <openssl/ssl.h>

#include "buf.h"

struct conn;

enum conn_event {
	CONN_READABLE,		/* call conn_read() */
	CONN_DRAINED,		/* pending output fell below the low mark */
	CONN_CONNECTED,		/* connect (and TLS handshake) done */
	CONN_FAILED,		/* connect or handshake failed; see conn_error() */
};

typedef void (*conn_cb)(struct conn *c, enum conn_event ev, void *arg);

/* Why a connection failed, for messages and retry decisions. */
enum conn_fail {
	CONN_OK = 0,
	CONN_REFUSED,		/* ECONNREFUSED */
	CONN_CONNECT_FAILED,	/* other connect errors */
	CONN_TLS_FAILED,	/* handshake or certificate failure */
	CONN_RESET,		/* ECONNRESET / EPIPE / TLS error after connect */
	CONN_EOF,		/* peer closed */
};

#define CONN_AGAIN (-2)
#define CONN_HIGH_MARK (256 * 1024)	/* stop reading the other side above this */

struct conn *conn_new_fd(struct event_base *base, int fd, conn_cb cb, void *arg);
/* Starts a non-blocking connect to SA, then a TLS handshake when CTX is
 * given (SNI and verification per the arguments). Reports CONNECTED or
 * FAILED through the callback. NULL only when out of memory or sockets. */
struct conn *conn_connect(struct event_base *base, const struct sockaddr *sa,
    socklen_t salen, SSL_CTX *ctx, const char *sni, const char *verify_name,
    const char *verify_san, SSL_SESSION *session, conn_cb cb, void *arg);
/* Accepted TLS server side: handshake first, then CONNECTED or FAILED. */
struct conn *conn_accept_tls(struct event_base *base, int fd, SSL_CTX *ctx,
    conn_cb cb, void *arg);

void conn_set_cb(struct conn *c, conn_cb cb, void *arg);
void conn_free(struct conn *c);

/* Reads into B (growing it up to MAX). Returns bytes read, 0 on EOF,
 * CONN_AGAIN when nothing is there, -1 on error (conn_error() says why). */
ssize_t conn_read(struct conn *c, struct buf *b, size_t max);
/* The last conn_read took less from the socket than it asked: the socket
 * was empty then, and what comes after wakes the owner again (the socket
 * is level-triggered). False where it cannot tell (TLS with read-ahead). */
bool conn_read_emptied(const struct conn *c);
/* More bytes are waiting inside TLS (decrypted, or records the batching
 * BIO read) even if the socket is quiet. conn_read itself kicks the owner
 * when it stops at a full buffer with such bytes left. */
bool conn_has_pending(struct conn *c);
/* Many TLS records arrive per read on C (HTTP/2): read them through a
 * buffer rather than OpenSSL's read-ahead. Before or after the handshake. */
void conn_batch_reads(struct conn *c);

/* Queue and try to send. -1 when the connection is broken. */
int conn_write(struct conn *c, const void *data, size_t len);
/* A then B, in one sendmsg(2) on a plain connection. On TLS each is a
 * conn_write and so a record of its own: a caller that wants one record
 * joins them first. -1 when the connection is broken. */
int conn_write2(struct conn *c, const void *a, size_t an, const void *b, size_t bn);
size_t conn_pending(const struct conn *c);
/* What C carries holds a key: bytes the socket did not take at once are
 * zeroed as they leave the queue, and at conn_free. (The first write
 * goes straight from the caller's buffer, which is the caller's to wipe.) */
void conn_wipe_output(struct conn *c);

/* Back-pressure: stop or resume read interest (only under pressure). */
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
/* Schedule a CONN_READABLE callback on the next loop turn (buffered bytes
 * to process, or TLS bytes already decrypted). */
void conn_kick_read(struct conn *c);

/* Idle connections: release OpenSSL's buffers (~10 KiB saved). */
void conn_release_buffers(struct conn *c);
/* Send a TLS close_notify and shut the write side (best effort). */
void conn_shutdown(struct conn *c);
/* A half-close: once everything queued has left, a TLS close_notify and
 * a FIN end the write side; reading goes on (TLS 1.2 and 1.3 both let
 * the peer send after our close_notify). A FIN the socket cannot take at
 * once is sent when it can, and CONN_DRAINED says so. Nothing may be
 * written after it. -1 when the connection is broken. */
int conn_close_write(struct conn *c);
/* conn_close_write's close_notify and FIN have gone. */
bool conn_write_closed(const struct conn *c);

enum conn_fail conn_error(const struct conn *c);
/* A write broke the connection, perhaps one queued and flushed later: its
 * CONN_READABLE comes even while reading is paused, and must be heeded. */
bool conn_write_failed(const struct conn *c);
const char *conn_error_text(const struct conn *c);
uint64_t conn_bytes_written(const struct conn *c);
/* When the peer last took bytes (clock_now_ms() time; 0: never): the
 * kernel or TLS took some of ours, or, sampled at this call (an ioctl:
 * for timers, not for every write), the kernel's unsent queue shrank
 * since the last call, so the peer read. */
int64_t conn_progress_ms(struct conn *c);
bool conn_is_tls(const struct conn *c);
bool conn_session_reused(const struct conn *c);
/* Still connecting or in the TLS handshake. */
bool conn_handshaking(const struct conn *c);
SSL *conn_ssl(struct conn *c);

#endif
