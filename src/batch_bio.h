/*
 * The BIO of a TLS connection's socket: it reads and writes the socket as
 * OpenSSL's socket BIO does, and answers OpenSSL's questions in a few
 * instructions (OpenSSL 3.0 asks whether kTLS is on a dozen times a
 * request: through the socket BIO's ctrl that was 1.5% of a proxied
 * request's instructions).
 *
 * Batched reads, once batch_bio_batch() is called (for OpenSSL without
 * read-ahead): OpenSSL asks its BIO for a record header, then for
 * exactly that record; this BIO serves both from one recv(2) of up to
 * BATCH_BIO_BUF bytes, so a read that brings dozens of records costs one
 * syscall, and each record is copied once (conn_batch_reads in conn.c says
 * why not read-ahead). A record that does not fit goes from the socket
 * straight to OpenSSL. The buffer is a spare block (blocks.h), held only
 * while it has bytes in it: an idle connection holds none. Before that,
 * each read goes to the socket as asked (read-ahead asks for a buffer's
 * worth).
 *
 * The BIO does not own the descriptor (its owner closes it).
 */
#ifndef FERRY_BATCH_BIO_H
#define FERRY_BATCH_BIO_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/bio.h>

#define BATCH_BIO_BUF	16384

/* A new BIO on FD, reads not batched, or NULL without memory. */
BIO *batch_bio_new(int fd);
/* Batches B's reads from now on. */
void batch_bio_batch(BIO *b);
/* Bytes read from the socket that OpenSSL has not taken yet; the socket
 * will not announce them again. */
size_t batch_bio_pending(BIO *b);
/* B's last recv(2) found the socket empty: an SSL_read that says
 * WANT_READ otherwise stopped after a post-handshake message, with more
 * perhaps on the socket (conn_read). */
bool batch_bio_drained(BIO *b);
/* B's last recv(2) took less than it asked, or found the socket empty:
 * the socket was empty then (conn_read_emptied). */
bool batch_bio_emptied(BIO *b);

#endif
