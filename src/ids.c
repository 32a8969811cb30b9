#include <assert.h>
#include <string.h>

#include <openssl/rand.h>

#include "ids.h"
#include "swar.h"

static _Thread_local uint64_t rng_state[4];
static _Thread_local bool rng_seeded;

static inline uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void
ids_thread_init(void)
{
	if (RAND_bytes((unsigned char *)rng_state, sizeof(rng_state)) != 1) {
		/* never all zero: xoshiro would be stuck */
		rng_state[0] = (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15ull;
		rng_state[1] = 0xbf58476d1ce4e5b9ull;
	}
	rng_seeded = true;
}

uint64_t
ids_random(void)
{
	uint64_t *s = rng_state;
	uint64_t result, t;

	if (!rng_seeded)
		ids_thread_init();
	result = rotl(s[1] * 5, 7) * 9;
	t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

static const char hexdig[] = "0123456789abcdef";

/* Eight random nibbles, one per byte, as eight lowercase hex digits at
 * once: '0' + n, plus 39 more where n >= 10 (no byte carries into the
 * next). Which digit lands where does not matter: all are random. */
static inline uint64_t
hex8(uint64_t nibbles)
{
	uint64_t ten_up = ((nibbles + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;

	return nibbles + 0x3030303030303030ull + ten_up * 39;
}

/* N random hex digits, N a multiple of 16 (a UUID's 32, a trace id's 32,
 * a span id's 16): whole words, no copy of a variable length. */
static void
hex_random(char *out, size_t n)
{
	assert(n % 16 == 0);
	for (; n >= 16; n -= 16, out += 16) {
		uint64_t r = ids_random();
		uint64_t lo = hex8(r & 0x0f0f0f0f0f0f0f0full);
		uint64_t hi = hex8(r >> 4 & 0x0f0f0f0f0f0f0f0full);

		memcpy(out, &lo, 8);
		memcpy(out + 8, &hi, 8);
	}
}

void
ids_uuid4(char *out)
{
	char hex[32];

	hex_random(hex, sizeof(hex));
	hex[12] = '4';				/* version */
	hex[16] = hexdig[8 | (hex[16] & 3)];	/* variant 10xx */
	memcpy(out, hex, 8);
	out[8] = '-';
	memcpy(out + 9, hex + 8, 4);
	out[13] = '-';
	memcpy(out + 14, hex + 12, 4);
	out[18] = '-';
	memcpy(out + 19, hex + 16, 4);
	out[23] = '-';
	memcpy(out + 24, hex + 20, 12);
}

void
ids_traceparent(char *out)
{
	memcpy(out, "00-", 3);
	do
		hex_random(out + 3, 32);
	while (memcmp(out + 3, "00000000000000000000000000000000", 32) == 0);
	out[35] = '-';
	do
		hex_random(out + 36, 16);
	while (memcmp(out + 36, "0000000000000000", 16) == 0);
	memcpy(out + 52, "-01", 3);
}

bool
ids_valid(const char *s, size_t len)
{
	if (len < 1 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
		    c == '-'))
			return false;
	}
	return true;
}

/* Eight lowercase hex digits. */
static inline bool
lowerhex8(uint64_t x)
{
	return (x & SWAR_HIGHS) == 0 &&
	    (swar_in_range(x, '0', '9') | swar_in_range(x, 'a', 'f')) == SWAR_HIGHS;
}

static bool
lowerhex(const char *s, size_t n, bool *all_zero)
{
	size_t i = 0;

	*all_zero = true;
	/* a traceparent is validated as it comes in and as it is logged */
	for (; i + 8 <= n; i += 8) {
		uint64_t x = swar_load(s + i);

		if (!lowerhex8(x))
			return false;
		if (x != swar_bytes('0'))
			*all_zero = false;
	}
	for (; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		if (s[i] != '0')
			*all_zero = false;
	}
	return true;
}

bool
ids_traceparent_valid(const char *s, size_t len)
{
	bool zero;

	if (len < TRACEPARENT_LEN)
		return false;
	/* version: two hex digits, "ff" is forbidden */
	if (!lowerhex(s, 2, &zero) || memcmp(s, "ff", 2) == 0)
		return false;
	/* version 00 has exactly this length; later versions may append
	 * "-..." fields, which a version-00 parser must accept */
	if (memcmp(s, "00", 2) == 0 ? len != TRACEPARENT_LEN :
	    (len > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-'))
		return false;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	if (!lowerhex(s + 3, 32, &zero) || zero)
		return false;
	if (!lowerhex(s + 36, 16, &zero) || zero)
		return false;
	return lowerhex(s + 53, 2, &zero);
}
