/*
 * libFuzzer harness: src/compress.c. Its decoders get what a hostile
 * upstream may send as a zstd or gzip body, in pieces of any size and
 * into output room of any size, as proxy_coding.c feeds them; its
 * encoders get any body, which must decode back to itself.
 *
 * Byte 0: bit 0 the coding (zstd, gzip), bit 1 the mode (decode the rest;
 * encode it and decode that), bit 2 (encoding) announce the size first
 * (cz_expect), bits 3-7 seed the piece and room sizes. Properties, from
 * the contract in compress.h: a call that returns CZ_MORE took or made
 * something (a caller loops on it); a decoder that did not say CZ_BOMB
 * made at most CZ_RATIO_FLOOR bytes or at most CZ_MAX_RATIO times what it
 * took; what an encoder made decodes to exactly its input, ending clean.
 */
#include "fuzz_common.h"
#include "compress.h"

#define ROOM_MAX	(64 * 1024)

static unsigned char room[ROOM_MAX];

/* Piece and room sizes: a small generator, seeded by the input. */
static uint32_t
next_size(uint32_t *s, uint32_t max)
{
	*s = *s * 1103515245u + 12345u;
	return 1 + (*s >> 8) % max;
}

/* Runs Z over IN in pieces, the last with CZ_END; what it makes is
 * appended to *OUT (when OUT is not NULL). Returns the last status. */
static enum cz_status
run_all(struct cz *z, const uint8_t *in, size_t n, uint32_t seed, bool flushes,
    unsigned char **out, size_t *out_len)
{
	size_t off = 0;
	enum cz_status st = CZ_DONE;

	do {
		size_t piece = next_size(&seed, 4096), at = 0;
		enum cz_flush f;

		if (piece > n - off)
			piece = n - off;
		f = off + piece == n ? CZ_END : flushes && (seed & 16) ? CZ_FLUSH : CZ_NO_FLUSH;
		for (;;) {
			size_t used, made, cap = next_size(&seed, ROOM_MAX);

			st = cz_run(z, in + off + at, piece - at, &used, room, cap, &made, f);
			PROP(used <= piece - at && made <= cap);
			PROP(st != CZ_MORE || used > 0 || made > 0);
			at += used;
			if (out != NULL && made > 0) {
				unsigned char *grown = realloc(*out, *out_len + made);

				PROP(grown != NULL);
				memcpy(grown + *out_len, room, made);
				*out = grown;
				*out_len += made;
			}
			if (st < 0)
				return st;
			PROP(cz_out(z) <= CZ_RATIO_FLOOR || cz_out(z) <= cz_in(z) * CZ_MAX_RATIO);
			if (st == CZ_DONE)
				break;
		}
		PROP(at == piece);
		off += piece;
	} while (off < n);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum cz_coding coding;
	uint32_t seed;
	struct cz *enc, *dec;
	unsigned char *coded = NULL;
	size_t coded_len = 0;
	enum cz_status st;

	if (size < 1)
		return 0;
	coding = data[0] & 1 ? CZ_GZIP : CZ_ZSTD;
	seed = data[0] >> 3;
	data++;
	size--;
	if (!(data[-1] & 2)) {
		/* a hostile body: anything but a crash, a stall or a bomb let by */
		dec = cz_new(coding, false, 0);
		PROP(dec != NULL);
		(void)run_all(dec, data, size, seed, false, NULL, NULL);
		cz_free(dec);
		return 0;
	}
	enc = cz_new(coding, true, coding == CZ_ZSTD ? 3 : 1);
	PROP(enc != NULL);
	if (data[-1] & 4)
		cz_expect(enc, size);
	st = run_all(enc, data, size, seed, true, &coded, &coded_len);
	PROP(st == CZ_DONE);
	PROP(cz_in(enc) == size && cz_out(enc) == coded_len);
	cz_free(enc);

	dec = cz_new(coding, false, 0);
	PROP(dec != NULL);
	{
		unsigned char *plain = NULL;
		size_t plain_len = 0;

		st = run_all(dec, coded, coded_len, seed + 1, false, &plain, &plain_len);
		/* a round trip inflates past the ratio only for bodies of one
		 * repeated byte or so: the cut is what ferry does then */
		PROP(st == CZ_DONE || st == CZ_BOMB);
		if (st == CZ_DONE)
			PROP(plain_len == size && (size == 0 || memcmp(plain, data, size) == 0));
		free(plain);
	}
	cz_free(dec);
	free(coded);
	return 0;
}
