#include <string.h>

#include "deadline.h"

/* V (N bytes, whitespace around it allowed) as milliseconds, saturated at
 * DEADLINE_MAX_MS; -1 when not all digits. */
static int64_t
parse_ms(const char *v, uint32_t n)
{
	int64_t t = 0;

	while (n > 0 && (v[0] == ' ' || v[0] == '\t'))
		v++, n--;
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 0)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		/* saturating: checked before it can overflow */
		if (t <= DEADLINE_MAX_MS)
			t = t * 10 + (v[i] - '0');
	}
	return t > DEADLINE_MAX_MS ? DEADLINE_MAX_MS : t;
}

int64_t
deadline_from_head(const char *msg, const struct http_head *h, bool *malformed)
{
	int64_t best = -1;

	*malformed = false;
	for (uint32_t i = 0; i < h->n_headers; i++) {
		const struct http_header *hd = &h->h[i];
		int64_t t;

		if (hd->kind != HDR_FERRY_DEADLINE)
			continue;
		if ((t = parse_ms(msg + hd->value.off, hd->value.len)) < 0)
			*malformed = true;
		else if (best < 0 || t < best)
			best = t;
	}
	return best;
}

void
deadline_write(char *p, int64_t left)
{
	if (left < 0)
		left = 0;
	if (left > DEADLINE_MAX_MS)
		left = DEADLINE_MAX_MS;
	memset(p, ' ', DEADLINE_DIGITS);
	for (int i = DEADLINE_DIGITS - 1; i == DEADLINE_DIGITS - 1 || left > 0; i--) {
		p[i] = (char)('0' + left % 10);
		left /= 10;
	}
}
