/*
 * Field lines to HTTP/2 fields. See h2_fields.h.
 */
#include <string.h>

#include "h2_fields.h"

size_t
h2_lines_to_nv(char *p, char *end, nghttp2_nv *nv, size_t n, size_t max)
{
	char *eol;

	if (p == NULL)
		return n;	/* an empty sbuf has no memory yet */
	for (; p < end && n < max; p = eol + 2) {
		char *colon, *v;

		if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL || eol == p)
			break;
		if ((colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
			continue;
		for (char *q = p; q < colon; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q = (char)(*q + 32);
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
#define IS(lit) ((size_t)(colon - p) == sizeof(lit) - 1 && memcmp(p, lit, sizeof(lit) - 1) == 0)
		if (IS("connection") || IS("keep-alive") || IS("proxy-connection") ||
		    IS("transfer-encoding") || IS("upgrade"))
			continue;
#undef IS
		nv[n++] = (nghttp2_nv){ (uint8_t *)p, (uint8_t *)v, (size_t)(colon - p),
		    (size_t)(eol - v), NGHTTP2_NV_FLAG_NONE };
	}
	return n;
}
