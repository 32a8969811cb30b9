/*
 * The coded response body of an exchange (see proxy_coding.h).
 *
 * Input the client cannot take yet (its output is over the high mark)
 * waits in zf->in, so a decoder that inflates never piles up more than
 * one step of output beyond the mark; the upstream is paused meanwhile
 * (the codecs see the client congested) and resumed once the coder is
 * through with what waits.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "attempt.h"
#include "compress.h"
#include "log.h"
#include "proxy_coding.h"

#define ZF_STEP		(64 * 1024)	/* output of one coder step */
#define ZF_HDR		12		/* room for a chunk-size line before it */

struct zflow {
	struct exchange *x;
	struct cz *cz;
	struct head_coding head;	/* what the response head says */
	bool chunked;			/* ferry frames the body in chunks */
	bool end;			/* the upstream's body is complete */
	bool waiting;			/* input or the end waits for the client */
	struct sbuf in;			/* input not coded yet, from in_off */
	size_t in_off;
	struct sbuf out;		/* one step, framed */
	struct sbuf trailers;		/* "name: value\r\n" for the last chunk */
	struct deferred d;
};

/* The first header named NAME (lower case), or NULL. */
static const struct http_header *
find_named(const char *msg, const struct http_head *h, const char *name)
{
	size_t n = strlen(name);

	for (uint32_t i = 0; i < h->n_headers; i++)
		if (h->h[i].kind == HDR_OTHER && h->h[i].name.len == n &&
		    strncasecmp(msg + h->h[i].name.off, name, n) == 0)
			return &h->h[i];
	return NULL;
}

const char *
coding_request(struct exchange *x, const char *msg, const struct http_head *h)
{
	const struct conf_compression *c = &x->svc->conf->compression;
	struct cz_value lines[HTTP_MAX_FIELDS];
	size_t n = 0;

	if (c->n_encodings == 0 || x->grpc || x->upgrade || x->head_method ||
	    find_named(msg, h, "range") != NULL)
		return NULL;
	if (!x->inbound) {
		/* the app's own accept-encoding: it decodes what it asked for */
		if (find_named(msg, h, "accept-encoding") != NULL)
			return NULL;
		/* near the worker's coder budget: the upstream answers
		 * plainly, rather than a response cut on the way */
		if (!cz_decoder_fits())
			return NULL;
		x->zoffered = true;
		return c->accept;
	}
	/* several lines are one list (RFC 9110 5.3): "gzip" and then
	 * "gzip;q=0" refuse gzip */
	for (uint32_t i = 0; i < h->n_headers && n < HTTP_MAX_FIELDS; i++) {
		const struct http_header *hd = &h->h[i];

		if (hd->kind != HDR_OTHER || hd->name.len != 15 ||
		    strncasecmp(msg + hd->name.off, "accept-encoding", 15) != 0)
			continue;
		lines[n].p = msg + hd->value.off;
		lines[n++].len = hd->value.len;
	}
	x->zcoding = (uint8_t)(n > 0 ? cz_pick_lines(c, lines, n) : CZ_IDENTITY);
	return NULL;
}

/* Would the inbound response be compressed (SPEC §14)? */
static bool
encode_wanted(const struct exchange *x, const char *msg, const struct http_head *h)
{
	const struct conf_compression *c = &x->svc->conf->compression;
	const struct http_header *ct = find_named(msg, h, "content-type");

	if (x->zcoding == CZ_IDENTITY || find_named(msg, h, "content-encoding") ||
	    find_named(msg, h, "content-range"))
		return false;
	if (h->has_length && h->content_length < (c->min_size ? c->min_size : 1))
		return false;
	if (ct == NULL || !cz_type_listed(c, msg + ct->value.off, ct->value.len))
		return false;
	/* every cache-control line: they are one list (RFC 9110 5.3) */
	for (uint32_t j = 0; j < h->n_headers; j++) {
		const struct http_header *cc = &h->h[j];

		if (cc->kind != HDR_OTHER || cc->name.len != 13 ||
		    strncasecmp(msg + cc->name.off, "cache-control", 13) != 0)
			continue;
		for (uint32_t i = 0; i + 12 <= cc->value.len; i++)
			if (strncasecmp(msg + cc->value.off + i, "no-transform", 12) == 0)
				return false;
	}
	return true;
}

static void zf_deferred(struct deferred *d);

bool
coding_response(struct exchange *x, const char *msg, const struct http_head *h)
{
	const struct conf_compression *c = &x->svc->conf->compression;
	const struct http_header *ce;
	enum cz_coding k;
	struct zflow *zf;
	bool other, encode = x->inbound;

	if (c->n_encodings == 0 || x->head_method || x->grpc ||
	    h->status < 200 || h->status == 204 || h->status == 304 || h->status == 206)
		return true;
	if (encode) {
		/* a head-only answer (HTTP/2) has nothing to compress; one
		 * ferry decodes is an empty body, whose coding must not reach
		 * an app that never asked for it */
		if (x->head_ends)
			return true;
		k = (enum cz_coding)x->zcoding;
		/* over the worker's coder budget the body goes as it is */
		if (!encode_wanted(x, msg, h) ||
		    !cz_encoder_fits(k, (int)(k == CZ_ZSTD ? c->level_zstd : c->level_gzip)))
			return true;
	} else {
		/* only what ferry offered is ferry's to decode; two codings
		 * stacked pass as they are */
		ce = find_named(msg, h, "content-encoding");
		if (!x->zoffered || ce == NULL)
			return true;
		for (uint32_t i = (uint32_t)(ce - h->h) + 1; i < h->n_headers; i++)
			if (h->h[i].name.len == 16 &&
			    strncasecmp(msg + h->h[i].name.off, "content-encoding", 16) == 0)
				return true;
		if ((k = cz_parse_coding(msg + ce->value.off, ce->value.len, &other)) ==
		    CZ_IDENTITY)
			return true;
	}
	if ((zf = calloc(1, sizeof(*zf))) == NULL ||
	    (zf->cz = cz_new(k, encode, (int)(k == CZ_ZSTD ? c->level_zstd : c->level_gzip))) ==
	    NULL) {
		static struct log_limit limit;

		/* an encoder's body passes as it is (identity is always
		 * allowed); a decoder's cannot: the app never asked for the
		 * coding ferry offered in its name (SPEC §14) */
		free(zf);
		log_limited(&limit, LOG_WARN, "compression: out of memory for a %s %s",
		    cz_name(k), encode ? "encoder" : "decoder");
		return encode;
	}
	if (encode && h->has_length)
		cz_expect(zf->cz, h->content_length);
	zf->x = x;
	zf->d.run = zf_deferred;
	zf->head.encoded = encode ? cz_name(k) : NULL;
	zf->head.decoded = !encode;
	x->zf = zf;
	/* the upstream codec hands over the body without framing ... */
	x->dechunk = true;
	x->resp_chunked = false;
	/* ... and the client gets ferry's: HTTP/2 frames it, HTTP/1.1 chunks,
	 * HTTP/1.0 reads to the close */
	if (x->unframed)
		return true;
	if (x->http10)
		x->close_after = true;
	else
		zf->head.chunked = zf->chunked = true;
	return true;
}

const struct head_coding *
proxy_response_coding(const struct exchange *x)
{
	return x->zf ? &x->zf->head : NULL;
}

void
coding_trailers(struct exchange *x, const char *msg, const struct http_head *h)
{
	struct zflow *zf = x->zf;

	sbuf_clear(&zf->trailers);
	for (uint32_t i = 0; i < h->n_headers; i++) {
		if (!headers_trailer_allowed(msg + h->h[i].name.off, h->h[i].name.len))
			continue;
		sbuf_add(&zf->trailers, msg + h->h[i].name.off, h->h[i].name.len);
		sbuf_add(&zf->trailers, ": ", 2);
		sbuf_add(&zf->trailers, msg + h->h[i].value.off, h->h[i].value.len);
		sbuf_add(&zf->trailers, "\r\n", 2);
	}
}

/* MADE bytes of output at zf->out.p + ZF_HDR leave, framed. */
static bool
zf_send(struct exchange *x, size_t made)
{
	struct zflow *zf = x->zf;
	char *d = zf->out.p + ZF_HDR, line[ZF_HDR];
	size_t len = made;
	int k;

	/* bytes flow: what the coder holds can feed a slow client for
	 * long after the upstream's last byte (a decoder's input inflates
	 * up to 1000 times), and stream_idle counts silence, not that */
	x->last_io_ms = clock_now_ms();
	if (zf->chunked) {
		k = snprintf(line, sizeof(line), "%zx\r\n", made);
		d -= k;
		memcpy(d, line, (size_t)k);
		memcpy(d + k + made, "\r\n", 2);
		len = (size_t)k + made + 2;
	}
	return x->down->send_data(x, d, len);
}

/* The body is through the coder: the last chunk, and the end. */
static bool
zf_finish(struct exchange *x)
{
	struct zflow *zf = x->zf;
	struct sbuf *o = &zf->out;

	zf->waiting = false;
	sbuf_clear(o);
	if (zf->chunked) {
		sbuf_add(o, "0\r\n", 3);
		sbuf_add(o, zf->trailers.p, zf->trailers.len);
		sbuf_add(o, "\r\n", 2);
		if (o->oom || zf->trailers.oom) {
			proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
			return false;
		}
	}
	if (x->down->send_last(x, o->p, o->len))
		proxy_end(x, END_DONE);
	return false;
}

/* Codes P..N (N may be 0 when only a flush or the end is left) and sends
 * the output. False when the exchange ended: touch nothing of it then. */
static bool
zf_code(struct exchange *x, const char *p, size_t n, bool from_in)
{
	struct zflow *zf = x->zf;
	enum cz_flush f = zf->end ? CZ_END : CZ_FLUSH;
	enum metric_dir dir = x->inbound ? DIR_INBOUND : DIR_OUTBOUND;
	int id = exchange_metrics_id(x);

	for (;;) {
		enum cz_status st;
		size_t used, made;

		if (x->down->congested(x)) {
			/* the rest waits for the client's drain */
			if (from_in) {
				zf->in_off = (size_t)(p - zf->in.p);
			} else {
				sbuf_clear(&zf->in);
				sbuf_add(&zf->in, p, n);
				zf->in_off = 0;
			}
			if (zf->in.oom) {
				proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
				return false;
			}
			zf->waiting = true;
			return true;
		}
		sbuf_clear(&zf->out);
		if (!sbuf_grow(&zf->out, ZF_HDR + ZF_STEP + 2)) {
			proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
			return false;
		}
		st = cz_run(zf->cz, p, n, &used, zf->out.p + ZF_HDR, ZF_STEP, &made, f);
		p += used;
		n -= used;
		metrics_compression(x->w->ms, dir, id, used, made);
		if (st == CZ_BOMB) {
			proxy_response_cut(x, END_DECOMPRESSION_BOMB,
			    "decompression bomb (over 1000x or 1 GiB)");
			return false;
		}
		if (st == CZ_OVER_BUDGET) {
			static struct log_limit limit;

			/* only zstd's windows grow */
			log_limited(&limit, LOG_WARN, "compression: a zstd decoder "
			    "cut: the worker's coders would hold over %u MiB",
			    CZ_WORKER_MEMORY >> 20);
			proxy_response_cut(x, END_OUT_OF_MEMORY,
			    "decoders over the worker's memory budget");
			return false;
		}
		if (st == CZ_ERROR) {
			/* an encoder fails on a body longer or shorter than its
			 * content-length said */
			proxy_response_cut(x, END_MALFORMED_UPSTREAM_BODY, zf->head.decoded ?
			    "corrupt or truncated coded body" : "compressor failed");
			return false;
		}
		if (made > 0 && !zf_send(x, made))
			return false;
		if (st == CZ_DONE)
			break;
	}
	sbuf_clear(&zf->in);
	zf->in_off = 0;
	zf->waiting = false;
	return zf->end ? zf_finish(x) : true;
}

bool
coding_data(struct exchange *x, const void *p, size_t n, bool end)
{
	struct zflow *zf = x->zf;

	x->last_io_ms = clock_now_ms();
	if (end)
		zf->end = true;
	if (zf->waiting) {
		/* behind what waits already */
		sbuf_add(&zf->in, p, n);
		if (zf->in.oom) {
			proxy_response_cut(x, END_OUT_OF_MEMORY, "out of memory");
			return false;
		}
		return zf_code(x, zf->in.p + zf->in_off, zf->in.len - zf->in_off, true);
	}
	return zf_code(x, p, n, false);
}

/* The client drained: out of its callback (an HTTP/2 data source may be
 * calling), the waiting input goes on, then the upstream is read again. */
static void
zf_deferred(struct deferred *d)
{
	struct zflow *zf = (struct zflow *)(void *)((char *)d - offsetof(struct zflow, d));
	struct exchange *x = zf->x;

	if (!x->live || !zf->waiting)
		return;
	if (!zf_code(x, zf->in.p + zf->in_off, zf->in.len - zf->in_off, true))
		return;
	if (!zf->waiting && exchange_attached(x))
		x->upops->resume(x);
}

bool
coding_drained(struct exchange *x)
{
	if (x->zf == NULL || !x->zf->waiting)
		return false;
	worker_defer(x->w, &x->zf->d);
	return true;
}

void
coding_free(struct exchange *x)
{
	struct zflow *zf = x->zf;

	if (zf == NULL)
		return;
	x->zf = NULL;
	worker_defer_cancel(x->w, &zf->d);
	cz_free(zf->cz);
	sbuf_free(&zf->in);
	sbuf_free(&zf->out);
	sbuf_free(&zf->trailers);
	free(zf);
}
