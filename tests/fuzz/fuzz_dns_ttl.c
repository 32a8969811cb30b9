/*
 * libFuzzer harness: src/dns_ttl.c on raw DNS answers (what a hostile
 * name server can send back), on an exact-size copy of the input so ASan
 * sees any read past the end. The first byte picks the type asked for
 * (A, AAAA or SRV); the rest is the message. Properties, from the format
 * rather than from the code: every TTL found is DNS_TTL_NONE, 0, or a
 * 32-bit value of the message below 2^31 (RFC 2181 §8); a clean walk does
 * not depend on the bytes after the authority section (appending some
 * changes nothing); and a walk is deterministic.
 */
#include "fuzz_common.h"
#include "dns_ttl.h"

/* V, big-endian, somewhere in the message. */
static bool
in_message(const unsigned char *m, size_t len, uint32_t v)
{
	for (size_t i = 0; i + 4 <= len; i++)
		if (((uint32_t)m[i] << 24 | (uint32_t)m[i + 1] << 16 | (uint32_t)m[i + 2] << 8 |
		    m[i + 3]) == v)
			return true;
	return false;
}

static void
check_ttl(uint32_t ttl, const unsigned char *m, size_t len)
{
	if (ttl == DNS_TTL_NONE || ttl == 0)
		return;
	PROP(ttl <= 0x7fffffffu);
	PROP(in_message(m, len, ttl));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int types[] = { 1, 28, 33 };
	struct dns_ttls t, again;
	unsigned char *m, *longer;
	size_t len;
	int type, rc;

	if (size < 1 || size > 65536)
		return 0;
	type = types[data[0] % 3];
	len = size - 1;
	if ((m = malloc(len ? len : 1)) == NULL || (longer = malloc(len + 64)) == NULL)
		abort();
	memcpy(m, data + 1, len);
	rc = dns_ttls(m, (int)len, type, &t);
	PROP(rc == 0 || rc == -1);
	check_ttl(t.answer, m, len);
	check_ttl(t.negative, m, len);

	PROP(dns_ttls(m, (int)len, type, &again) == rc);
	PROP(again.answer == t.answer && again.negative == t.negative);

	/* what lies after the sections walked does not count */
	memcpy(longer, m, len);
	for (size_t i = 0; i < 64; i++)
		longer[len + i] = (unsigned char)(0xc0 | i);
	if (rc == 0) {
		PROP(dns_ttls(longer, (int)len + 64, type, &again) == 0);
		PROP(again.answer == t.answer && again.negative == t.negative);
	}
	free(longer);
	free(m);
	return 0;
}
