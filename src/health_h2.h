/*
 * The HTTP/2 side of an active health check (SPEC §6, §12): one GET on
 * stream 1 of a fresh client session (nghttp2), as bytes in and bytes
 * out. The caller owns the transport: it sends what hc_h2_output() gives,
 * feeds what arrives to hc_h2_input(), and stops at the first answer
 * other than HC_H2_MORE. The status of the final response head (interim
 * 1xx heads are skipped) is the result; the body is never read.
 */
#ifndef FERRY_HEALTH_H2_H
#define FERRY_HEALTH_H2_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct hc_h2;

enum hc_h2_result {
	HC_H2_MORE,		/* waiting for the peer */
	HC_H2_DONE,		/* hc_h2_status() holds the final status */
	HC_H2_FAILED,		/* hc_h2_error() says why */
};

/*
 * A session with the request queued: GET PATH, :authority AUTHORITY,
 * :scheme https when TLS, x-service-auth KEY when KEY is not NULL. The
 * strings are not copied: they must outlive the hc_h2. NULL when out of
 * memory.
 */
struct hc_h2 *hc_h2_new(const char *path, const char *authority, bool tls,
    const char *key);
void hc_h2_free(struct hc_h2 *h);

/* Appends what the session has to send (the preface first) to OUT. */
enum hc_h2_result hc_h2_output(struct hc_h2 *h, struct buf *out);
/* Takes N bytes from the peer. */
enum hc_h2_result hc_h2_input(struct hc_h2 *h, const void *p, size_t n);
/* The peer closed the connection: FAILED unless already DONE. */
enum hc_h2_result hc_h2_eof(struct hc_h2 *h);

int hc_h2_status(const struct hc_h2 *h);
/* Why the check failed; valid until hc_h2_free(). */
const char *hc_h2_error(const struct hc_h2 *h);

#endif
