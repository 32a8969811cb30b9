/*
 * Streaming zstd and gzip coders for response bodies (see compress.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>
#include <zstd.h>

#include "compress.h"
#include "config.h"

/* zstd encoder window: 2^17. Peers decode with far less memory than the
 * default 2^21+, and JSON gains little from a longer one. */
#define ZSTD_ENC_WINDOW_LOG	17
/* zstd decoder: the 8 MiB RFC 9659 allows for the content coding. */
#define ZSTD_DEC_WINDOW_LOG_MAX	23
/* gzip encoder: window 2^14, hash memLevel 7, about 128 KiB in all. */
#define GZIP_ENC_WINDOW_BITS	14
#define GZIP_ENC_MEM_LEVEL	7

/* What a coder holds before zstd's first call tells (upper estimates of
 * what a streaming encoder was measured to hold: level 1 0.95 MiB, 2 1.1,
 * 3 1.6, 4 2.9, 5-12 2.4, 13-15 2.9, 16-19 3.6), and zlib's documented
 * sizes: deflate (1 << (windowBits + 2)) + (1 << (memLevel + 9)),
 * inflate 1 << windowBits, each plus its state. */
#define HOLD_ZSTD_DEC		(640u << 10)
#define HOLD_GZIP_ENC		((1u << (GZIP_ENC_WINDOW_BITS + 2)) + \
				 (1u << (GZIP_ENC_MEM_LEVEL + 9)) + (8u << 10))
#define HOLD_GZIP_DEC		((1u << MAX_WBITS) + (8u << 10))

struct cz {
	enum cz_coding coding;
	bool encode;
	bool ended;		/* decoder: a coded stream ended (may restart) */
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	z_stream zs;
	bool zs_live;
	uint64_t in, out;
	size_t held;		/* counted in its thread's held_total */
};

/* What the thread's coders hold (compress.h: CZ_WORKER_MEMORY) */
static _Thread_local size_t held_total;

static size_t
hold_estimate(enum cz_coding coding, bool encode, int level)
{
	if (coding == CZ_GZIP)
		return encode ? HOLD_GZIP_ENC : HOLD_GZIP_DEC;
	if (!encode)
		return HOLD_ZSTD_DEC;
	return level <= 2 ? 5u << 18 : level == 3 ? 2u << 20 : 4u << 20;
}

bool
cz_encoder_fits(enum cz_coding coding, int level)
{
	return held_total + hold_estimate(coding, true, level) <= CZ_WORKER_MEMORY;
}

bool
cz_decoder_fits(void)
{
	return held_total + CZ_DECODER_MAX <= CZ_WORKER_MEMORY;
}

size_t
cz_held(void)
{
	return held_total;
}

/* Z holds at least N now: a coder only grows while it lives */
static void
hold(struct cz *z, size_t n)
{
	if (n > z->held) {
		held_total += n - z->held;
		z->held = n;
	}
}

struct cz *
cz_new(enum cz_coding coding, bool encode, int level)
{
	struct cz *z = calloc(1, sizeof(*z));
	int rc = 0;

	if (z == NULL)
		return NULL;
	z->coding = coding;
	z->encode = encode;
	if (coding == CZ_ZSTD && encode) {
		if ((z->zc = ZSTD_createCCtx()) == NULL ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->zc, ZSTD_c_compressionLevel, level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->zc, ZSTD_c_windowLog,
		    ZSTD_ENC_WINDOW_LOG)))
			rc = -1;
		/* the tables of levels 5 and up, sized for an input of
		 * unknown length, would dwarf the window: level 9 held 13.5 MiB
		 * streaming, 2.4 MiB with these, and coded JSON as small */
		if (rc == 0 && level > 4 &&
		    (ZSTD_isError(ZSTD_CCtx_setParameter(z->zc, ZSTD_c_hashLog, 18)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->zc, ZSTD_c_chainLog, 18))))
			rc = -1;
	} else if (coding == CZ_ZSTD) {
		if ((z->zd = ZSTD_createDCtx()) == NULL ||
		    ZSTD_isError(ZSTD_DCtx_setParameter(z->zd, ZSTD_d_windowLogMax,
		    ZSTD_DEC_WINDOW_LOG_MAX)))
			rc = -1;
	} else if (coding == CZ_GZIP && encode) {
		/* 16 +: a gzip wrapper, not zlib's */
		rc = deflateInit2(&z->zs, level, Z_DEFLATED, 16 + GZIP_ENC_WINDOW_BITS,
		    GZIP_ENC_MEM_LEVEL, Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -1;
		z->zs_live = rc == 0;
	} else if (coding == CZ_GZIP) {
		rc = inflateInit2(&z->zs, 16 + MAX_WBITS) == Z_OK ? 0 : -1;
		z->zs_live = rc == 0;
	} else {
		rc = -1;
	}
	if (rc != 0) {
		cz_free(z);
		return NULL;
	}
	hold(z, hold_estimate(coding, encode, level));
	return z;
}

void
cz_free(struct cz *z)
{
	if (z == NULL)
		return;
	held_total -= z->held;
	ZSTD_freeCCtx(z->zc);
	ZSTD_freeDCtx(z->zd);
	if (z->zs_live) {
		if (z->encode)
			deflateEnd(&z->zs);
		else
			inflateEnd(&z->zs);
	}
	free(z);
}

void
cz_expect(struct cz *z, uint64_t size)
{
	if (z->zc != NULL && z->in == 0)
		(void)ZSTD_CCtx_setPledgedSrcSize(z->zc, size);
}

uint64_t
cz_in(const struct cz *z)
{
	return z->in;
}

uint64_t
cz_out(const struct cz *z)
{
	return z->out;
}

static enum cz_status
zstd_enc(struct cz *z, ZSTD_inBuffer *ib, ZSTD_outBuffer *ob, enum cz_flush f)
{
	ZSTD_EndDirective d = f == CZ_END ? ZSTD_e_end : f == CZ_FLUSH ? ZSTD_e_flush :
	    ZSTD_e_continue;
	size_t left = ZSTD_compressStream2(z->zc, ob, ib, d);

	if (ZSTD_isError(left))
		return CZ_ERROR;
	if (d == ZSTD_e_continue)
		return ib->pos == ib->size ? CZ_DONE : CZ_MORE;
	/* 0: flushed (or the frame ended), and all input was taken */
	return left == 0 ? CZ_DONE : CZ_MORE;
}

static enum cz_status
zstd_dec(struct cz *z, ZSTD_inBuffer *ib, ZSTD_outBuffer *ob, enum cz_flush f)
{
	size_t rc = ZSTD_decompressStream(z->zd, ob, ib);

	if (ZSTD_isError(rc))
		return CZ_ERROR;
	/* 0: a frame is complete; a call with nothing new says nothing */
	if (rc == 0)
		z->ended = true;
	else if (ib->pos > 0)
		z->ended = false;
	/* a full output may hide more: only a call with room tells */
	if (ob->pos == ob->size)
		return CZ_MORE;
	if (ib->pos < ib->size)
		return CZ_MORE;
	/* a body that stops inside a frame was cut short */
	if (f == CZ_END && !z->ended && z->in + ib->pos > 0)
		return CZ_ERROR;
	return CZ_DONE;
}

static enum cz_status
gzip_enc(struct cz *z, enum cz_flush f)
{
	int rc = deflate(&z->zs, f == CZ_END ? Z_FINISH : f == CZ_FLUSH ? Z_SYNC_FLUSH :
	    Z_NO_FLUSH);

	if (rc == Z_STREAM_ERROR)
		return CZ_ERROR;
	if (f == CZ_END)
		return rc == Z_STREAM_END ? CZ_DONE : CZ_MORE;
	/* room left over means deflate had nothing more to give */
	return z->zs.avail_in == 0 && z->zs.avail_out > 0 ? CZ_DONE : CZ_MORE;
}

static enum cz_status
gzip_dec(struct cz *z, enum cz_flush f, size_t n)
{
	int rc;

	if (z->ended && z->zs.avail_in > 0) {
		/* gzip members may follow one another (RFC 1952) */
		if (inflateReset(&z->zs) != Z_OK)
			return CZ_ERROR;
		z->ended = false;
	}
	rc = inflate(&z->zs, Z_NO_FLUSH);
	if (rc == Z_STREAM_END)
		z->ended = true;
	else if (rc != Z_OK && rc != Z_BUF_ERROR)
		return CZ_ERROR;
	if (z->zs.avail_out == 0 || z->zs.avail_in > 0)
		return CZ_MORE;
	if (f == CZ_END && !z->ended && z->in + (n - z->zs.avail_in) > 0)
		return CZ_ERROR;
	return CZ_DONE;
}

enum cz_status
cz_run(struct cz *z, const void *in, size_t n, size_t *used, void *out, size_t cap,
    size_t *made, enum cz_flush f)
{
	enum cz_status st;
	size_t held = z->held;

	*used = 0;
	*made = 0;
	if (z->coding == CZ_ZSTD) {
		ZSTD_inBuffer ib = { in, n, 0 };
		ZSTD_outBuffer ob = { out, cap, 0 };

		st = z->encode ? zstd_enc(z, &ib, &ob, f) : zstd_dec(z, &ib, &ob, f);
		*used = ib.pos;
		*made = ob.pos;
		hold(z, z->encode ? ZSTD_sizeof_CCtx(z->zc) : ZSTD_sizeof_DCtx(z->zd));
	} else {
		z->zs.next_in = (Bytef *)(uintptr_t)in;
		z->zs.avail_in = (uInt)n;
		z->zs.next_out = out;
		z->zs.avail_out = (uInt)cap;
		st = z->encode ? gzip_enc(z, f) : gzip_dec(z, f, n);
		*used = n - z->zs.avail_in;
		*made = cap - z->zs.avail_out;
	}
	z->in += *used;
	z->out += *made;
	if (st >= 0 && !z->encode && (z->out > CZ_MAX_OUTPUT ||
	    (z->out > CZ_RATIO_FLOOR && z->out > z->in * CZ_MAX_RATIO)))
		return CZ_BOMB;
	/* a decoder that grew past the budget (a window its input asked
	 * for); an encoder's own settings bound it */
	if (st >= 0 && !z->encode && z->held > held && held_total > CZ_WORKER_MEMORY)
		return CZ_OVER_BUDGET;
	return st;
}

const char *
cz_name(enum cz_coding c)
{
	return c == CZ_ZSTD ? "zstd" : c == CZ_GZIP ? "gzip" : "identity";
}

static bool
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool
token_is(const char *t, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(t, lit, len) == 0;
}

enum cz_coding
cz_parse_coding(const char *v, size_t len, bool *other)
{
	while (len > 0 && is_ows(v[0])) {
		v++;
		len--;
	}
	while (len > 0 && is_ows(v[len - 1]))
		len--;
	*other = false;
	if (token_is(v, len, "zstd"))
		return CZ_ZSTD;
	if (token_is(v, len, "gzip") || token_is(v, len, "x-gzip"))
		return CZ_GZIP;
	*other = len > 0 && !token_is(v, len, "identity");
	return CZ_IDENTITY;
}

/* The q of one accept-encoding element's parameters: 0 only for q=0,
 * q=0.0..., else positive (RFC 9110 12.4.2). */
static bool
q_positive(const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		while (i < len && (is_ows(p[i]) || p[i] == ';'))
			i++;
		if (i + 1 < len && (p[i] == 'q' || p[i] == 'Q') && p[i + 1] == '=') {
			i += 2;
			if (i >= len || p[i] != '0')
				return true;
			for (i++; i < len && !is_ows(p[i]) && p[i] != ';'; i++)
				if (p[i] != '.' && p[i] != '0')
					return true;
			return false;
		}
		while (i < len && p[i] != ';')
			i++;
	}
	return true;
}

/* Whether V allows NAME: 1 by name, 0 refused by name (q=0), -1 not named;
 * *STAR gets what "*" says (1, 0, -1 absent). */
static int
accepts(const char *v, size_t len, const char *name, int *star)
{
	size_t i = 0;
	int r = -1;

	*star = -1;
	while (i < len) {
		size_t b, e, t;

		while (i < len && (is_ows(v[i]) || v[i] == ','))
			i++;
		b = i;
		while (i < len && v[i] != ',')
			i++;
		e = i;
		for (t = b; t < e && v[t] != ';' && !is_ows(v[t]); t++)
			;
		if (t == b)
			continue;
		if (token_is(v + b, t - b, name) ||
		    (strcmp(name, "gzip") == 0 && token_is(v + b, t - b, "x-gzip")))
			r = q_positive(v + t, e - t);
		else if (t - b == 1 && v[b] == '*')
			*star = q_positive(v + t, e - t);
	}
	return r;
}

enum cz_coding
cz_pick_lines(const struct conf_compression *c, const struct cz_value *v, size_t n)
{
	for (unsigned i = 0; i < c->n_encodings; i++) {
		enum cz_coding k = (enum cz_coding)c->encodings[i];
		int r = -1, star = -1;

		for (size_t j = 0; j < n; j++) {
			int s, rj = accepts(v[j].p, v[j].len, cz_name(k), &s);

			if (rj != -1)
				r = rj;
			if (s != -1)
				star = s;
		}
		if (r == 1 || (r == -1 && star == 1))
			return k;
	}
	return CZ_IDENTITY;
}

enum cz_coding
cz_pick(const struct conf_compression *c, const char *v, size_t len)
{
	struct cz_value one = { v, len };

	return cz_pick_lines(c, &one, 1);
}

bool
cz_type_listed(const struct conf_compression *c, const char *v, size_t len)
{
	size_t n = 0;

	while (len > 0 && is_ows(v[0])) {
		v++;
		len--;
	}
	while (n < len && v[n] != ';' && !is_ows(v[n]))
		n++;
	for (unsigned i = 0; i < c->n_types; i++) {
		const char *t = c->types[i];
		size_t tl = strlen(t);

		if (tl >= 2 && t[tl - 1] == '*' && t[tl - 2] == '/') {
			/* a wildcard subtype: the type and its slash, then anything */
			if (n > tl - 1 && strncasecmp(v, t, tl - 1) == 0)
				return true;
		} else if (tl == n && strncasecmp(v, t, n) == 0) {
			return true;
		}
	}
	return false;
}
