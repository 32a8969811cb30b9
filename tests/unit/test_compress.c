/*
 * Unit tests for compress.c: streaming round trips with a flush per chunk
 * (each chunk decodable on its own arrival), tiny output buffers, bombs,
 * corrupt and truncated input, and the accept-encoding and type choices.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "config.h"
#include "sbuf.h"

/* Runs IN through Z with output steps of CAP bytes, appending to OUT. */
static enum cz_status
run_all(struct cz *z, const void *in, size_t n, enum cz_flush f, size_t cap, struct sbuf *out)
{
	const char *p = in;
	char *buf = malloc(cap);
	enum cz_status st;

	ck_assert_ptr_nonnull(buf);
	do {
		size_t used, made;

		st = cz_run(z, p, n, &used, buf, cap, &made, f);
		p += used;
		n -= used;
		sbuf_add(out, buf, made);
	} while (st == CZ_MORE);
	free(buf);
	return st;
}

static char *
json_like(size_t n)
{
	char *s = malloc(n);

	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < n; i++)
		s[i] = "{\"id\":12,\"name\":\"item\",\"price\":3.5},"[i % 36] + (char)(i / 4096 % 3);
	return s;
}

static void
round_trip(enum cz_coding k, size_t cap)
{
	size_t n = 300 * 1024, part = 10000;
	char *src = json_like(n);
	struct cz *enc = cz_new(k, true, k == CZ_ZSTD ? 3 : 1), *dec = cz_new(k, false, 0);
	struct sbuf coded = { 0 }, plain = { 0 };
	size_t tail;

	ck_assert_ptr_nonnull(enc);
	ck_assert_ptr_nonnull(dec);
	for (size_t off = 0; off < n; off += part) {
		size_t len = n - off < part ? n - off : part, before = coded.len;

		ck_assert_int_eq(run_all(enc, src + off, len, CZ_FLUSH, cap, &coded), CZ_DONE);
		/* flushed: what left so far decodes to everything given so far */
		ck_assert_int_eq(run_all(dec, coded.p + before, coded.len - before, CZ_FLUSH, cap,
		    &plain), CZ_DONE);
		ck_assert_uint_eq(plain.len, off + len);
	}
	tail = coded.len;
	ck_assert_int_eq(run_all(enc, NULL, 0, CZ_END, cap, &coded), CZ_DONE);
	ck_assert_int_eq(run_all(dec, coded.p + tail, coded.len - tail, CZ_END, cap, &plain),
	    CZ_DONE);
	ck_assert_uint_eq(plain.len, n);
	ck_assert(memcmp(plain.p, src, n) == 0);
	ck_assert_uint_eq(cz_in(enc), n);
	ck_assert_uint_eq(cz_out(dec), n);
	ck_assert_uint_lt(coded.len, n / 4);
	cz_free(enc);
	cz_free(dec);
	sbuf_free(&coded);
	sbuf_free(&plain);
	free(src);
}

START_TEST(test_round_trip_zstd)
{
	round_trip(CZ_ZSTD, 64 * 1024);
}
END_TEST

START_TEST(test_round_trip_gzip)
{
	round_trip(CZ_GZIP, 64 * 1024);
}
END_TEST

/* output steps far smaller than a block: coders pick up where they stopped */
START_TEST(test_tiny_output_steps)
{
	round_trip(CZ_ZSTD, 7);
	round_trip(CZ_GZIP, 7);
}
END_TEST

/* Coded ZEROS bytes of zeros. */
static void
coded_zeros(enum cz_coding k, size_t zeros, struct sbuf *coded)
{
	char *z = calloc(1, zeros);
	struct cz *enc = cz_new(k, true, 9);

	ck_assert_ptr_nonnull(z);
	ck_assert_ptr_nonnull(enc);
	ck_assert_int_eq(run_all(enc, z, zeros, CZ_END, 1 << 20, coded), CZ_DONE);
	cz_free(enc);
	free(z);
}

/* over 1000x once past 64 KiB: cut, long before all of it came out */
START_TEST(test_bomb)
{
	enum cz_coding ks[] = { CZ_ZSTD, CZ_GZIP };

	for (int i = 0; i < 2; i++) {
		struct sbuf coded = { 0 }, plain = { 0 };
		struct cz *dec = cz_new(ks[i], false, 0);

		/* zstd: some 30000x; deflate's best is 1032x */
		coded_zeros(ks[i], 64 << 20, &coded);
		ck_assert_int_eq(run_all(dec, coded.p, coded.len, CZ_END, 64 * 1024, &plain),
		    CZ_BOMB);
		ck_assert_uint_lt(plain.len, 16 << 20);
		ck_assert_uint_gt(cz_out(dec), CZ_RATIO_FLOOR);
		cz_free(dec);
		sbuf_free(&coded);
		sbuf_free(&plain);
	}
}
END_TEST

/* a little zero padding is no bomb: under the floor the ratio is not judged */
START_TEST(test_small_ratio_floor)
{
	struct sbuf coded = { 0 }, plain = { 0 };
	struct cz *dec = cz_new(CZ_ZSTD, false, 0);

	coded_zeros(CZ_ZSTD, 32 * 1024, &coded);
	ck_assert_uint_lt(coded.len * 1000, 32 * 1024);
	ck_assert_int_eq(run_all(dec, coded.p, coded.len, CZ_END, 4096, &plain), CZ_DONE);
	ck_assert_uint_eq(plain.len, 32 * 1024);
	cz_free(dec);
	sbuf_free(&coded);
	sbuf_free(&plain);
}
END_TEST

START_TEST(test_corrupt_and_truncated)
{
	enum cz_coding ks[] = { CZ_ZSTD, CZ_GZIP };
	static const char junk[] = "this is not a coded body at all, not even close";

	for (int i = 0; i < 2; i++) {
		struct sbuf coded = { 0 }, plain = { 0 };
		struct cz *dec = cz_new(ks[i], false, 0);
		char *src = json_like(50000);
		struct cz *enc = cz_new(ks[i], true, 3);

		ck_assert_int_eq(run_all(dec, junk, sizeof(junk) - 1, CZ_FLUSH, 4096, &plain),
		    CZ_ERROR);
		cz_free(dec);
		/* cut short: the end says so */
		ck_assert_int_eq(run_all(enc, src, 50000, CZ_END, 4096, &coded), CZ_DONE);
		dec = cz_new(ks[i], false, 0);
		sbuf_clear(&plain);
		ck_assert_int_eq(run_all(dec, coded.p, coded.len - 5, CZ_END, 4096, &plain),
		    CZ_ERROR);
		cz_free(dec);
		/* an empty body is empty, coded or not */
		dec = cz_new(ks[i], false, 0);
		ck_assert_int_eq(run_all(dec, NULL, 0, CZ_END, 4096, &plain), CZ_DONE);
		cz_free(dec);
		cz_free(enc);
		free(src);
		sbuf_free(&coded);
		sbuf_free(&plain);
	}
}
END_TEST

/* gzip members may follow one another; so may zstd frames */
START_TEST(test_concatenated)
{
	enum cz_coding ks[] = { CZ_ZSTD, CZ_GZIP };

	for (int i = 0; i < 2; i++) {
		struct sbuf coded = { 0 }, plain = { 0 };
		struct cz *dec = cz_new(ks[i], false, 0);

		for (int j = 0; j < 2; j++) {
			struct cz *enc = cz_new(ks[i], true, 1);

			ck_assert_int_eq(run_all(enc, "hello ", 6, CZ_END, 4096, &coded), CZ_DONE);
			cz_free(enc);
		}
		ck_assert_int_eq(run_all(dec, coded.p, coded.len, CZ_END, 4096, &plain), CZ_DONE);
		ck_assert_uint_eq(plain.len, 12);
		ck_assert(memcmp(plain.p, "hello hello ", 12) == 0);
		cz_free(dec);
		sbuf_free(&coded);
		sbuf_free(&plain);
	}
}
END_TEST

static struct conf_compression
conf(int n, const char *const *types)
{
	struct conf_compression c;

	memset(&c, 0, sizeof(c));
	c.encodings[0] = CZ_ZSTD;
	c.encodings[1] = CZ_GZIP;
	c.n_encodings = (uint8_t)n;
	for (c.n_types = 0; types && types[c.n_types]; c.n_types++)
		strcpy(c.types[c.n_types], types[c.n_types]);
	return c;
}

static enum cz_coding
pick(const struct conf_compression *c, const char *v)
{
	return cz_pick(c, v, strlen(v));
}

/* A zstd frame that asks for an 8 MiB window (its most, RFC 9659) and
 * holds one raw byte: the decoder allocates the window at its header. */
static const unsigned char big_window_frame[] = {
	0x28, 0xb5, 0x2f, 0xfd,		/* magic */
	0x00,				/* no content size, no checksum */
	(23 - 10) << 3,			/* window 2^23 */
	0x09, 0x00, 0x00, 'x',		/* the last block: raw, 1 byte */
};

START_TEST(test_budget)
{
	struct cz *dec[16], *enc;
	unsigned n = 0;
	enum cz_status st = CZ_DONE;
	char out[64];

	ck_assert_uint_eq(cz_held(), 0);
	ck_assert(cz_decoder_fits());
	/* decoders of big windows until one grows past the budget */
	while (n < 16) {
		size_t used, made;

		ck_assert_ptr_nonnull(dec[n] = cz_new(CZ_ZSTD, false, 0));
		st = cz_run(dec[n++], big_window_frame, sizeof(big_window_frame), &used,
		    out, sizeof(out), &made, CZ_END);
		if (st != CZ_DONE)
			break;
		ck_assert_uint_eq(made, 1);
		ck_assert_uint_le(cz_held(), CZ_WORKER_MEMORY);
	}
	ck_assert_int_eq(st, CZ_OVER_BUDGET);
	/* 8 MiB windows: seven fit in 64 MiB, the eighth does not */
	ck_assert_uint_eq(n, CZ_WORKER_MEMORY / CZ_DECODER_MAX + 1);
	ck_assert(!cz_decoder_fits());
	ck_assert(!cz_encoder_fits(CZ_GZIP, 1));
	/* the one cut gives its share back */
	cz_free(dec[--n]);
	ck_assert(!cz_decoder_fits());
	ck_assert(cz_encoder_fits(CZ_GZIP, 1));
	cz_free(dec[--n]);
	ck_assert(cz_decoder_fits());
	while (n > 0)
		cz_free(dec[--n]);
	ck_assert_uint_eq(cz_held(), 0);

	/* an encoder counts its estimate from the start, then what zstd holds */
	ck_assert_ptr_nonnull(enc = cz_new(CZ_ZSTD, true, 19));
	ck_assert_uint_ge(cz_held(), 4u << 20);
	cz_free(enc);
	ck_assert_uint_eq(cz_held(), 0);
}
END_TEST

/* Streaming (no size known), every level's encoder stays within its
 * estimate: level 9's tables, sized for a long input, held 13.5 MiB */
START_TEST(test_encoder_sizes)
{
	size_t n = 256 * 1024;
	char *src = json_like(n);

	for (int level = 1; level <= 19; level++) {
		struct cz *enc = cz_new(CZ_ZSTD, true, level);
		struct sbuf out = { 0 };
		size_t estimate = cz_held();

		ck_assert_ptr_nonnull(enc);
		ck_assert_int_eq(run_all(enc, src, n, CZ_FLUSH, 64 * 1024, &out), CZ_DONE);
		ck_assert_msg(cz_held() == estimate, "level %d: %zu bytes held, %zu estimated",
		    level, cz_held(), estimate);
		ck_assert_uint_le(cz_held(), 4u << 20);
		cz_free(enc);
		sbuf_free(&out);
	}
	free(src);
}
END_TEST

START_TEST(test_pick)
{
	struct conf_compression c = conf(2, NULL), z = conf(1, NULL);

	ck_assert_int_eq(pick(&c, "zstd, gzip"), CZ_ZSTD);
	ck_assert_int_eq(pick(&c, "gzip, zstd"), CZ_ZSTD);	/* ferry's order */
	ck_assert_int_eq(pick(&c, "gzip, deflate, br"), CZ_GZIP);
	ck_assert_int_eq(pick(&c, "GZIP;q=0.5"), CZ_GZIP);
	ck_assert_int_eq(pick(&c, "x-gzip"), CZ_GZIP);
	ck_assert_int_eq(pick(&c, "zstd;q=0, gzip"), CZ_GZIP);
	ck_assert_int_eq(pick(&c, "zstd; q=0.0, gzip;q=0.000"), CZ_IDENTITY);
	ck_assert_int_eq(pick(&c, "zstd;q=0.001"), CZ_ZSTD);
	ck_assert_int_eq(pick(&c, "*"), CZ_ZSTD);
	ck_assert_int_eq(pick(&c, "zstd;q=0, *;q=0.1"), CZ_GZIP);
	ck_assert_int_eq(pick(&c, "*;q=0"), CZ_IDENTITY);
	ck_assert_int_eq(pick(&c, "identity"), CZ_IDENTITY);
	ck_assert_int_eq(pick(&c, ""), CZ_IDENTITY);
	ck_assert_int_eq(pick(&c, "br, zstdx, gzipped"), CZ_IDENTITY);
	ck_assert_int_eq(pick(&z, "gzip"), CZ_IDENTITY);	/* only zstd offered */
}
END_TEST

/* Several accept-encoding lines are one list (RFC 9110 5.3). */
static enum cz_coding
pick2(const struct conf_compression *c, const char *a, const char *b)
{
	struct cz_value v[2] = { { a, strlen(a) }, { b, strlen(b) } };

	return cz_pick_lines(c, v, 2);
}

START_TEST(test_pick_lines)
{
	struct conf_compression c = conf(2, NULL);

	ck_assert_int_eq(pick2(&c, "gzip", "zstd"), CZ_ZSTD);
	/* a later line refuses what an earlier one named: each line alone
	 * would have picked zstd from the first */
	ck_assert_int_eq(pick2(&c, "zstd, gzip", "zstd;q=0"), CZ_GZIP);
	ck_assert_int_eq(pick2(&c, "zstd", "*;q=0, gzip"), CZ_ZSTD);
	ck_assert_int_eq(pick2(&c, "*", "zstd;q=0"), CZ_GZIP);
	ck_assert_int_eq(pick2(&c, "*;q=0", "br"), CZ_IDENTITY);
	ck_assert_int_eq(pick2(&c, "", "gzip"), CZ_GZIP);
}
END_TEST

static bool
listed(const struct conf_compression *c, const char *v)
{
	return cz_type_listed(c, v, strlen(v));
}

START_TEST(test_types)
{
	static const char *const types[] = { "application/json", "text/*", NULL };
	struct conf_compression c = conf(2, types);

	ck_assert(listed(&c, "application/json"));
	ck_assert(listed(&c, "Application/JSON; charset=utf-8"));
	ck_assert(listed(&c, " application/json;charset=utf-8"));
	ck_assert(listed(&c, "text/html"));
	ck_assert(listed(&c, "text/plain; charset=us-ascii"));
	ck_assert(!listed(&c, "text/"));
	ck_assert(!listed(&c, "text"));
	ck_assert(!listed(&c, "textual/plain"));
	ck_assert(!listed(&c, "application/jsonx"));
	ck_assert(!listed(&c, "application/grpc"));
	ck_assert(!listed(&c, ""));
}
END_TEST

START_TEST(test_parse_coding)
{
	bool other;

	ck_assert_int_eq(cz_parse_coding(" zstd ", 6, &other), CZ_ZSTD);
	ck_assert(!other);
	ck_assert_int_eq(cz_parse_coding("GZip", 4, &other), CZ_GZIP);
	ck_assert_int_eq(cz_parse_coding("x-gzip", 6, &other), CZ_GZIP);
	ck_assert_int_eq(cz_parse_coding("identity", 8, &other), CZ_IDENTITY);
	ck_assert(!other);
	ck_assert_int_eq(cz_parse_coding("gzip, zstd", 10, &other), CZ_IDENTITY);
	ck_assert(other);
	ck_assert_int_eq(cz_parse_coding("br", 2, &other), CZ_IDENTITY);
	ck_assert(other);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("compress");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_round_trip_zstd);
	tcase_add_test(tc, test_round_trip_gzip);
	tcase_add_test(tc, test_tiny_output_steps);
	tcase_add_test(tc, test_bomb);
	tcase_add_test(tc, test_small_ratio_floor);
	tcase_add_test(tc, test_corrupt_and_truncated);
	tcase_add_test(tc, test_concatenated);
	tcase_add_test(tc, test_budget);
	tcase_add_test(tc, test_encoder_sizes);
	tcase_add_test(tc, test_pick);
	tcase_add_test(tc, test_pick_lines);
	tcase_add_test(tc, test_types);
	tcase_add_test(tc, test_parse_coding);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
