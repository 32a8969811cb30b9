/*
 * Body compression between sidecars (SPEC §14): one streaming coder
 * (zstd or gzip, encoding or decoding) per response body, and the pure
 * choices around it (which encoding a request accepts, which content
 * types are listed). No I/O; proxy.c drives it.
 *
 * Memory is bounded per coder: encoders use a 128 KiB window (zstd) or
 * a 16 KiB window (gzip); decoders accept zstd windows up to 8 MiB
 * (RFC 9659's limit for the zstd content coding) and gzip's 32 KiB.
 * Decoders are cut as bombs when their output passes 1 GiB, or 1000
 * times their input once past 64 KiB.
 *
 * And a worker's coders together hold at most CZ_WORKER_MEMORY: an
 * upstream that answers many requests at once with 8 MiB windows, or
 * peers that ask for many compressed responses at once, would otherwise
 * hold 8 MiB (a decoder) or up to 4 MiB (a zstd encoder) each for as
 * long as they like. Near the budget ferry offers no accept-encoding and
 * starts no encoder (the body goes as it is: always allowed); a decoder
 * that grows past it (a response offered before) is cut. A coder counts
 * what zstd says it holds, or zlib's documented sizes, and at least an
 * estimate from its start (zstd allocates on its first call).
 */
#ifndef FERRY_COMPRESS_H
#define FERRY_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf_compression;

enum cz_coding { CZ_IDENTITY = 0, CZ_ZSTD, CZ_GZIP };

#define CZ_MAX_RATIO	1000
#define CZ_MAX_OUTPUT	(1ULL << 30)
#define CZ_RATIO_FLOOR	(64 * 1024)	/* below it the ratio is not judged */
#define CZ_WORKER_MEMORY (64u << 20)	/* a worker's coders together */
/* the most a decoder holds: an 8 MiB window, its blocks, its tables */
#define CZ_DECODER_MAX	((8u << 20) + (640u << 10))

enum cz_flush {
	CZ_NO_FLUSH,	/* more input follows; output may lag */
	CZ_FLUSH,	/* everything given so far leaves (a streamed chunk) */
	CZ_END,		/* the body ends with this input */
};

enum cz_status {
	CZ_DONE = 0,	/* all input taken, and the flush or end is complete */
	CZ_MORE = 1,	/* the output is full: call again with what is left */
	CZ_ERROR = -1,	/* corrupt or truncated coded data, or out of memory */
	CZ_BOMB = -2,	/* decoding: over the ratio or the size cap */
	CZ_OVER_BUDGET = -3, /* decoding: the worker's coders over CZ_WORKER_MEMORY */
};

struct cz;

/* A coder; LEVEL is for encoders. NULL when out of memory. Counted in
 * the calling thread's budget until cz_free (on the same thread). */
struct cz *cz_new(enum cz_coding coding, bool encode, int level);
/* Whether an encoder of LEVEL fits in the calling thread's budget. */
bool cz_encoder_fits(enum cz_coding coding, int level);
/* Whether a decoder of the largest window still fits: ferry may offer a
 * coding, which it then has to decode. */
bool cz_decoder_fits(void);
/* What the calling thread's coders hold, as counted for the budget. */
size_t cz_held(void);
void cz_free(struct cz *z);
/* An encoder's whole input will be SIZE bytes (a content-length): zstd
 * then sizes its tables to it, not to the window (a small body costs far
 * less to set up), and writes the size in the frame. More or less input
 * than that is an error. */
void cz_expect(struct cz *z, uint64_t size);

/* Codes IN (N bytes) into OUT (CAP bytes): *USED gets the input bytes
 * taken, *MADE the output bytes written. */
enum cz_status cz_run(struct cz *z, const void *in, size_t n, size_t *used,
    void *out, size_t cap, size_t *made, enum cz_flush flush);

/* Bytes into and out of the coder so far. */
uint64_t cz_in(const struct cz *z);
uint64_t cz_out(const struct cz *z);

/* "zstd", "gzip" */
const char *cz_name(enum cz_coding c);
/* The coding named by a content-encoding value (one token, any case,
 * spaces around it): zstd, gzip or x-gzip; else CZ_IDENTITY and *OTHER
 * true when the value names something else ("br", "gzip, zstd"). */
enum cz_coding cz_parse_coding(const char *v, size_t len, bool *other);
/* The first of C's encodings that an accept-encoding value allows
 * (q > 0, by name or "*"), or CZ_IDENTITY. */
enum cz_coding cz_pick(const struct conf_compression *c, const char *v, size_t len);
/* The same of N accept-encoding lines, read as one list (RFC 9110 5.3):
 * of the lines naming a coding, the last one's word counts, as it would
 * in one line. */
struct cz_value {
	const char *p;
	size_t len;
};
enum cz_coding cz_pick_lines(const struct conf_compression *c, const struct cz_value *v,
    size_t n);
/* A content-type value (parameters ignored) is one of C's types. */
bool cz_type_listed(const struct conf_compression *c, const char *v, size_t len);

#endif
