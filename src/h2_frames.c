#include <string.h>

#include "conn.h"
#include "h2_frames.h"

/* one TLS record's worth of plaintext */
#define H2_WRITE_CHUNK 16384

int
h2_send_frames(nghttp2_session *ng, struct conn *c)
{
	uint8_t pack[H2_WRITE_CHUNK];
	size_t used = 0;

	while (conn_pending(c) <= CONN_HIGH_MARK) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(ng, &p);

		if (n < 0)
			return -1;
		if (n == 0)
			break;
		/* P is good until the next call: write or copy it now */
		if (used + (size_t)n > sizeof(pack)) {
			if (conn_write(c, pack, used) != 0)
				return -1;
			used = 0;
		}
		if ((size_t)n >= sizeof(pack)) {
			if (conn_write(c, p, (size_t)n) != 0)
				return -1;
			continue;
		}
		memcpy(pack + used, p, (size_t)n);
		used += (size_t)n;
	}
	return used > 0 ? conn_write(c, pack, used) : 0;
}
