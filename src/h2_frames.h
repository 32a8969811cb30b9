/*
 * What both HTTP/2 codecs (h2_down.c, h2_up.c) do alike with a session's
 * output.
 */
#ifndef FERRY_H2_FRAMES_H
#define FERRY_H2_FRAMES_H

#include <nghttp2/nghttp2.h>

struct conn;

/* Moves the frames NG has ready to C, packed into as few writes as they
 * fit (a TLS record holds 16 KiB): the frames of every stream that became
 * ready this turn share a record and a syscall. Stops while C holds more
 * than CONN_HIGH_MARK; the rest waits in NG for CONN_DRAINED. 0, or -1
 * when NG failed or C broke. */
int h2_send_frames(nghttp2_session *ng, struct conn *c);

#endif
