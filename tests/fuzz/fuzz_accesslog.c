/*
 * libFuzzer harness: the access log's line writer, accesslog_write()
 * (src/accesslog.c), which reserves a bound of the line once and writes it
 * unchecked (sbuf_room, put_*), json_escape_put() escaping the strings and
 * fate_notes_json_put() the attempts. An input is an access_entry (numbers
 * at their edges, optional strings NULL, 0..8 attempt notes, strings
 * split from the rest and maybe repeated) written K times (up to 200:
 * lines cross the 64 KiB hand-over to the writer thread) to a file, read
 * back once the log is closed. Every line must be one
 * strict JSON object whose fields are, decoded, what a reference written
 * from the escaping rules (errors.h, json_escape_put) and accesslog.h
 * expects. A bound too small is ASan's (or accesslog_write's assert).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "../unit/json_strict.h"
#include "accesslog.h"
#include "fate.h"
#include "sbuf.h"

/*
 * References, from accesslog.h and the escaping rules (errors.h):
 * ASCII passes (decoded: escapes give the byte back), a well-formed UTF-8
 * sequence passes, every other byte becomes U+FFFD, one per byte.
 */
static void
ref_decoded(struct sbuf *o, const unsigned char *s, size_t n)
{
	size_t i = 0, k;

	sbuf_clear(o);
	while (i < n) {
		if (s[i] < 0x80) {
			sbuf_add(o, s + i, 1);
			i++;
		} else if ((k = utf8_wf(s + i, n - i)) > 0) {
			sbuf_add(o, s + i, k);
			i += k;
		} else {
			sbuf_add(o, "\xef\xbf\xbd", 3);
			i++;
		}
	}
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of MS >= 0, years up to 9999: days to a
 * civil date (H. Hinnant's days_from_civil, inverted). */
static void
ref_stamp(char *out, size_t outlen, int64_t ms)
{
	int64_t days = ms / 86400000, rest = ms % 86400000;
	int64_t z = days + 719468, era = z / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);

	snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (int)y,
	    (int)m, (int)d, (int)(rest / 3600000), (int)(rest / 60000 % 60),
	    (int)(rest / 1000 % 60), (int)(rest % 1000));
}

/* The result names of SPEC §16, written out here rather than taken from
 * fate_result_name(): a reference is not the code under test. */
static const char *
ref_result(uint8_t r)
{
	switch (r) {
	case AR_OK: return "ok";
	case AR_CONNECT_FAILURE: return "connect_failure";
	case AR_REFUSED: return "refused";
	case AR_RESET: return "reset";
	case AR_PER_TRY_TIMEOUT: return "timeout";
	case AR_STATUS_502: return "502";
	case AR_STATUS_503: return "503";
	case AR_STATUS_504: return "504";
	case NOTE_CANCELLED: return "cancelled";
	default: return "?";		/* not fed */
	}
}

/*
 * Reading the input.
 */
struct rd {
	const uint8_t *p;
	size_t n;
};

static uint8_t
u8(struct rd *r)
{
	if (r->n == 0)
		return 0;
	r->n--;
	return *r->p++;
}

static uint64_t
uN(struct rd *r, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v = v << 8 | u8(r);
	return v;
}

/* 9999-12-31T23:59:59.999Z */
#define TIME_MAX	INT64_C(253402300799999)

static uint32_t
pick_u32(uint8_t sel, uint32_t raw)
{
	switch (sel % 4) {
	case 0: return raw;
	case 1: return 0;
	case 2: return UINT32_MAX;
	default: return raw % 10;
	}
}

static uint64_t
pick_u64(uint8_t sel, uint64_t raw)
{
	switch (sel % 4) {
	case 0: return raw;
	case 1: return 0;
	case 2: return UINT64_MAX;
	default: return raw % 100000;
	}
}

static int
pick_int(uint8_t sel, uint32_t raw)
{
	switch (sel % 8) {
	case 0: return (int)(int32_t)raw;
	case 1: return 200;
	case 2: return 0;
	case 3: return -1;
	case 4: return INT_MAX;
	case 5: return INT_MIN;
	case 6: return 504;
	default: return (int)(raw % 1000);
	}
}

static double
pick_ms(uint8_t sel, uint64_t raw)
{
	double d;

	switch (sel % 8) {
	case 0: return 0;
	case 1: return (double)(uint32_t)raw / 1000.0;
	case 2: return 1e300;
	case 3: return -(double)(uint32_t)raw / 1000.0;
	case 4: return NAN;
	case 5: return raw & 1 ? -INFINITY : INFINITY;
	case 6:
		memcpy(&d, &raw, sizeof(d));	/* any double */
		return d;
	default: return 1e12 + ((double)(uint32_t)raw - 2147483648.0) / 1000.0;
	}
}

enum { S_SERVICE, S_METHOD, S_PATH, S_UPSTREAM, S_CORR, S_REQ, S_TP,
	S_ERROR, S_PEER, S_FATE, S_COUNT };

/* the counted strings; the others are C strings */
static const bool counted[S_COUNT] = {
	[S_METHOD] = true, [S_PATH] = true, [S_CORR] = true, [S_REQ] = true,
	[S_TP] = true,
};

static const char *const keys[] = {
	"time", "direction", "service", "method", "path", "status",
	"duration_ms", "upstream", "attempts", "resends", "correlation_id",
	"request_id", "trace_id", "bytes_in", "bytes_out", "error", "peer",
	"grpc_status", "fate", "attempts_detail",
};
#define N_KEYS	(sizeof(keys) / sizeof(keys[0]))

struct want {
	const char *s[S_COUNT];		/* the copies handed to the writer */
	size_t len[S_COUNT];
};

static char logpath[64];
static struct jobj top;
static struct jelems elems;
static struct sbuf ref;

static void
cleanup(void)
{
	unlink(logpath);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(logpath, sizeof(logpath), "/tmp/ferry-fuzz-accesslog.%d.log",
	    (int)getpid());
	atexit(cleanup);
	return 0;
}

static const struct jfield *
field(const struct jobj *o, int i, const char *key)
{
	PROP(i < o->n && strcmp(o->f[i].key, key) == 0);
	return &o->f[i];
}

/* A string field: null for S NULL, else the decoded form of S. */
static void
check_str(const struct jfield *f, const char *s, size_t n)
{
	if (s == NULL) {
		PROP(f->type == 'z');
		return;
	}
	PROP(f->type == 's');
	ref_decoded(&ref, (const unsigned char *)s, n);
	PROP(f->val.len == ref.len &&
	    (ref.len == 0 || memcmp(f->val.p, ref.p, ref.len) == 0));
}

static void
check_num(const struct jfield *f, unsigned long long v)
{
	char t[32];
	size_t n = (size_t)snprintf(t, sizeof(t), "%llu", v);

	PROP(f->type == 'n' && f->val.len == n && memcmp(f->val.p, t, n) == 0);
}

/* "I.FFF" within half a microsecond of MS clamped to [0, 1e12] (NaN 0) */
static void
check_ms(const struct jfield *f, double ms)
{
	unsigned long long ip = 0, fp = 0;
	long double x, got;
	size_t i = 0;

	if (!(ms > 0))
		ms = 0;
	if (ms > 1e12)
		ms = 1e12;
	PROP(f->type == 'n');
	while (i < f->val.len && isdigit((unsigned char)f->val.p[i]))
		ip = ip * 10 + (unsigned)(f->val.p[i++] - '0');
	PROP(i > 0 && i <= 13 && i + 4 == f->val.len && f->val.p[i] == '.');
	for (size_t k = i + 1; k < f->val.len; k++) {
		PROP(isdigit((unsigned char)f->val.p[k]));
		fp = fp * 10 + (unsigned)(f->val.p[k] - '0');
	}
	x = (long double)ms * 1000.0L;
	got = (long double)ip * 1000.0L + (long double)fp;
	PROP(fabsl(got - x) <= 0.5L + x * 1e-15L + 1e-9L);
}

static void
check_notes(const struct attempt_notes *ns)
{
	char t[96], addr[INET6_ADDRSTRLEN];

	PROP(elems.n == (ns ? ns->count : 0));
	for (int i = 0; i < elems.n; i++) {
		const struct attempt_note *n = &ns->n[i];
		const struct jobj *o = &elems.el[i];
		const struct jfield *f;

		PROP(o->n == 3);
		f = field(o, 0, "endpoint");
		if (n->family == AF_INET) {
			snprintf(t, sizeof(t), "%u.%u.%u.%u:%u", n->addr[0],
			    n->addr[1], n->addr[2], n->addr[3], n->port);
			check_str(f, t, strlen(t));
		} else if (n->family == AF_INET6) {
			PROP(inet_ntop(AF_INET6, n->addr, addr, sizeof(addr)) != NULL);
			snprintf(t, sizeof(t), "[%s]:%u", addr, n->port);
			check_str(f, t, strlen(t));
		} else
			PROP(f->type == 'z');
		f = field(o, 1, "result");
		check_str(f, ref_result(n->result), strlen(ref_result(n->result)));
		check_num(field(o, 2, "ms"), n->ms);
	}
}

/* The first line, in full. */
static void
check_line(const char *p, size_t len, const struct access_entry *e,
    const struct want *w, int64_t t0)
{
	const struct jobj *o = &top;
	const struct jfield *f;
	char stamp[64];
	size_t plen;
	int i = 0;

	/* no raw control byte nor DEL: a log pipeline reads them as text */
	for (size_t k = 0; k < len; k++)
		PROP((unsigned char)p[k] >= 0x20 && p[k] != 0x7f);
	PROP(jparse_elems(p, len, &top, &elems));
	PROP((size_t)o->n == N_KEYS);
	for (size_t k = 0; k < N_KEYS; k++)
		field(o, (int)k, keys[k]);

	ref_stamp(stamp, sizeof(stamp), t0 < 0 ? 0 : t0);
	check_str(field(o, i++, "time"), stamp, strlen(stamp));
	f = field(o, i++, "direction");
	check_str(f, e->dir == DIR_INBOUND ? "inbound" : "outbound",
	    e->dir == DIR_INBOUND ? 7 : 8);
	/* service and method: NULL writes "" */
	f = field(o, i++, "service");
	check_str(f, w->s[S_SERVICE] ? w->s[S_SERVICE] : "", w->len[S_SERVICE]);
	f = field(o, i++, "method");
	check_str(f, w->s[S_METHOD] ? w->s[S_METHOD] : "", w->len[S_METHOD]);
	/* the target without its query */
	plen = w->len[S_PATH];
	if (w->s[S_PATH] != NULL && memchr(w->s[S_PATH], '?', plen) != NULL)
		plen = (size_t)((const char *)memchr(w->s[S_PATH], '?', plen) -
		    w->s[S_PATH]);
	check_str(field(o, i++, "path"), w->s[S_PATH], plen);
	check_num(field(o, i++, "status"), e->status > 0 ? (unsigned)e->status : 0);
	check_ms(field(o, i++, "duration_ms"), e->duration_ms);
	check_str(field(o, i++, "upstream"), w->s[S_UPSTREAM], w->len[S_UPSTREAM]);
	check_num(field(o, i++, "attempts"), e->attempts);
	check_num(field(o, i++, "resends"), e->resends);
	check_str(field(o, i++, "correlation_id"), w->s[S_CORR], w->len[S_CORR]);
	check_str(field(o, i++, "request_id"), w->s[S_REQ], w->len[S_REQ]);
	/* the trace-id of a well-formed traceparent, else null */
	f = field(o, i++, "trace_id");
	if (w->s[S_TP] != NULL &&
	    ref_traceparent((const unsigned char *)w->s[S_TP], w->len[S_TP]))
		check_str(f, w->s[S_TP] + 3, 32);
	else
		PROP(f->type == 'z');
	check_num(field(o, i++, "bytes_in"), e->bytes_in);
	check_num(field(o, i++, "bytes_out"), e->bytes_out);
	check_str(field(o, i++, "error"), w->s[S_ERROR], w->len[S_ERROR]);
	check_str(field(o, i++, "peer"), w->s[S_PEER], w->len[S_PEER]);
	f = field(o, i++, "grpc_status");
	if (e->grpc && e->grpc_status >= 0)
		check_num(f, (unsigned)e->grpc_status);
	else
		PROP(f->type == 'z');
	check_str(field(o, i++, "fate"), w->s[S_FATE], w->len[S_FATE]);
	PROP(field(o, i++, "attempts_detail")->type == 'a');
	check_notes(e->attempts_detail);
	jobj_free(&top);
	jelems_free(&elems);
}

/* Pieces of the rest of the input, split at "\xff\x00". */
static size_t
split(const uint8_t *p, size_t n, const uint8_t **piece, size_t *plen,
    size_t max)
{
	size_t k = 0, start = 0;

	for (size_t i = 0; i + 1 < n && k + 1 < max; i++)
		if (p[i] == 0xff && p[i + 1] == 0x00) {
			piece[k] = p + start;
			plen[k++] = i - start;
			start = i + 2;
			i++;
		}
	piece[k] = p + start;
	plen[k++] = n - start;
	return k;
}

/* Strings longer than this are not repeated. */
#define REPEAT_MAX	4096
/* String bytes of all K lines, K lowered to stay below: the time goes to
 * escaping them and checking the text */
#define LINES_BUDGET	(64u << 10)

/* An exact-size copy (no NUL) of a counted string; a C string's copy ends
 * at its first NUL. Both repeated REPS times (fewer past REPEAT_MAX):
 * long strings from short inputs. */
static char *
copy(const uint8_t *p, size_t n, bool cstr, unsigned reps, size_t *len)
{
	char *s;

	if (cstr) {
		const uint8_t *z = memchr(p, 0, n);

		if (z != NULL)
			n = (size_t)(z - p);
	}
	if (n == 0 || n * reps > REPEAT_MAX)
		reps = n == 0 || n > REPEAT_MAX ? 1 : REPEAT_MAX / n;
	*len = n * reps;
	if ((s = malloc(*len + cstr)) == NULL)
		abort();
	for (unsigned i = 0; i < reps && n > 0; i++)
		memcpy(s + i * n, p, n);
	if (cstr)
		s[*len] = '\0';
	return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char hexd[] = "0123456789abcdef";
	struct rd r = { data, size };
	struct access_entry e = { 0 };
	struct attempt_notes notes = { 0 };
	struct want w = { 0 };
	const uint8_t *piece[S_COUNT];
	size_t plen[S_COUNT] = { 0 }, np, len, nl, at;
	char err[256], *text = NULL, *s[S_COUNT] = { 0 };
	uint8_t flags, sel;
	uint16_t nullmask;
	uint32_t k, step;
	unsigned reps;
	int64_t t0;
	struct accesslog *a;
	ssize_t got;
	int fd;

	if (size > 65536)
		return 0;
	flags = u8(&r);
	nullmask = (uint16_t)uN(&r, 2);
	/* from 0x80: every string its piece 1..128 times */
	sel = u8(&r);
	reps = sel & 0x80 ? 1 + (sel & 0x7fu) : 1;
	sel = u8(&r);
	k = sel & 0x80 ? 1 + (sel & 0x7fu) * 199 / 127 : 1 + (sel & 3u);
	/* time: 0, negative (written as 0), the last ms of year 9999, any in
	 * between; STEP ms more on each line */
	sel = u8(&r);
	{
		uint64_t raw = uN(&r, 8);

		switch (sel % 4) {
		case 0: t0 = 0; break;
		case 1: t0 = -(int64_t)(raw >> 1) - 1; break;
		case 2: t0 = TIME_MAX; break;
		default: t0 = (int64_t)(raw % (uint64_t)(TIME_MAX + 1)); break;
		}
	}
	step = (uint32_t)uN(&r, 2);
	if (t0 >= 0 && t0 > TIME_MAX - (int64_t)(k - 1) * step)
		t0 = TIME_MAX - (int64_t)(k - 1) * step;
	e.dir = flags & 1 ? DIR_INBOUND : DIR_OUTBOUND;
	e.grpc = flags & 2;
	sel = u8(&r);
	e.status = pick_int(sel, (uint32_t)uN(&r, 4));
	sel = u8(&r);
	e.duration_ms = pick_ms(sel, uN(&r, 8));
	sel = u8(&r);
	e.attempts = pick_u32(sel, (uint32_t)uN(&r, 4));
	sel = u8(&r);
	e.resends = pick_u32(sel, (uint32_t)uN(&r, 4));
	sel = u8(&r);
	e.bytes_in = pick_u64(sel, uN(&r, 8));
	sel = u8(&r);
	e.bytes_out = pick_u64(sel, uN(&r, 8));
	sel = u8(&r);
	e.grpc_status = pick_int(sel >> 1, (uint32_t)uN(&r, 4));
	if (sel & 1)
		e.grpc_status = e.grpc_status < 0 ? -1 : e.grpc_status % 17;
	notes.count = u8(&r) % (FATE_MAX_NOTES + 1);
	for (int i = 0; i < notes.count; i++) {
		struct attempt_note *n = &notes.n[i];

		sel = u8(&r);
		n->family = sel % 3 == 0 ? AF_INET : sel % 3 == 1 ? AF_INET6 : 0;
		for (int j = 0; j < 16; j++)
			n->addr[j] = u8(&r);
		n->port = (uint16_t)uN(&r, 2);
		sel = u8(&r) % 9;
		n->result = sel == 8 ? NOTE_CANCELLED : sel;
		n->ms = (uint32_t)uN(&r, 4);
	}
	if (flags & 4)
		e.attempts_detail = &notes;

	/* the strings */
	np = split(r.p, r.n, piece, plen, S_COUNT);
	for (size_t i = 0; i < S_COUNT; i++) {
		const uint8_t *p = i < np ? piece[i] : (const uint8_t *)"";
		size_t n = i < np ? plen[i] : 0;

		if (nullmask >> i & 1)
			continue;
		if (i == S_TP && flags & 8) {
			/* a traceparent around the piece's bytes as its
			 * trace-id (null when all zero) */
			char tp[55];

			memcpy(tp, "00-", 3);
			for (size_t j = 0; j < 16; j++) {
				uint8_t b = j < n ? p[j] : 0;

				tp[3 + 2 * j] = hexd[b >> 4];
				tp[4 + 2 * j] = hexd[b & 15];
			}
			memcpy(tp + 35, "-00f067aa0ba902b7-01", 20);
			s[i] = copy((const uint8_t *)tp, sizeof(tp), false, 1, &len);
		} else
			s[i] = copy(p, n, !counted[i], reps, &len);
		w.s[i] = s[i];
		w.len[i] = len;
	}
	e.service = s[S_SERVICE];
	e.method = s[S_METHOD];
	e.method_len = w.len[S_METHOD];
	e.path = s[S_PATH];
	e.path_len = w.len[S_PATH];
	e.upstream = s[S_UPSTREAM];
	e.correlation_id = s[S_CORR];
	e.correlation_len = w.len[S_CORR];
	e.request_id = s[S_REQ];
	e.request_len = w.len[S_REQ];
	e.traceparent = s[S_TP];
	e.traceparent_len = w.len[S_TP];
	e.error = s[S_ERROR];
	e.peer = s[S_PEER];
	e.fate = s[S_FATE];
	/* at most LINES_BUDGET string bytes in all the lines */
	len = 0;
	for (size_t i = 0; i < S_COUNT; i++)
		len += w.len[i];
	if (len > 0 && (uint64_t)len * k > LINES_BUDGET)
		k = len >= LINES_BUDGET ? 1 : (uint32_t)(LINES_BUDGET / len);

	/* K lines, the log closed (the writer joined, all written) */
	unlink(logpath);
	a = accesslog_open(logpath, 1, err, sizeof(err));
	if (a == NULL) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	accesslog_set_limit(a, (size_t)1 << 30);
	for (uint32_t i = 0; i < k; i++) {
		e.time_ms = t0 + (int64_t)i * step;
		accesslog_write(accesslog_worker(a, 0), &e);
	}
	PROP(accesslog_dropped(a) == 0);
	accesslog_close(a);

	if ((fd = open(logpath, O_RDONLY | O_CLOEXEC)) == -1)
		abort();
	len = 0;
	{
		size_t cap = 0;

		for (;;) {
			if (cap - len < 65536) {
				cap = cap ? cap * 2 : 65536;
				if ((text = realloc(text, cap)) == NULL)
					abort();
			}
			if ((got = read(fd, text + len, cap - len)) <= 0)
				break;
			len += (size_t)got;
		}
		PROP(got == 0);
	}
	close(fd);

	/* K lines, each ending in its LF, no other LF */
	nl = 0;
	for (const char *q = text; (q = memchr(q, '\n', len - (size_t)(q - text)));
	    q++)
		nl++;
	PROP(nl == k && len > 0 && text[len - 1] == '\n');

	/* the first in full; the others the same but for their time */
	{
		const char *first = text, *end1 = memchr(text, '\n', len);
		size_t l1 = (size_t)(end1 - first), pre = 9 + 24 + 1;
		char stamp[64], head[64];

		check_line(first, l1, &e, &w, t0);
		PROP(l1 > pre);
		at = l1 + 1;
		for (uint32_t i = 1; i < k; i++) {
			const char *p = text + at, *q = memchr(p, '\n', len - at);
			int64_t t = t0 + (int64_t)i * step;

			ref_stamp(stamp, sizeof(stamp), t < 0 ? 0 : t);
			snprintf(head, sizeof(head), "{\"time\":\"%s\"", stamp);
			PROP(strlen(head) == pre);
			PROP(q != NULL && (size_t)(q - p) == l1);
			PROP(memcmp(p, head, pre) == 0);
			PROP(memcmp(p + pre, first + pre, l1 - pre) == 0);
			at += l1 + 1;
		}
		PROP(at == len);
	}

	free(text);
	for (size_t i = 0; i < S_COUNT; i++)
		free(s[i]);
	sbuf_free(&ref);
	return 0;
}
