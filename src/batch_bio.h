/*
 * A read BIO for a TLS connection's socket, for OpenSSL without read-ahead.
 *
 * Without read-ahead OpenSSL asks its BIO for a record header, then for
 * exactly that record; this BIO serves both from one read(2) of up to
 * BATCH_BIO_BUF bytes, so a read that brings dozens of records costs one
 * syscall, and each record is copied once (conn_batch_reads in conn.c says
 * why not read-ahead). A record that does not fit goes from the socket
 * straight to OpenSSL. The buffer is a spare block (blocks.h), held only
 * while it has bytes in it: an idle connection holds none.
 *
 * The BIO does not own the descriptor (its owner closes it). Writes stay on
 * the SSL's socket BIO.
 */
#ifndef FERRY_BATCH_BIO_H
#define FERRY_BATCH_BIO_H

#include <stddef.h>

#include <openssl/bio.h>

#define BATCH_BIO_BUF	16384

/* A new BIO reading FD, or NULL without memory. */
BIO *batch_bio_new(int fd);
/* Bytes read from the socket that OpenSSL has not taken yet; the socket
 * will not announce them again. */
size_t batch_bio_pending(BIO *b);

#endif
