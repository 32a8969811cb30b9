/*
 * The generic half of the loader: error collection, key paths, and the
 * table-driven walk with one handler per value type. Every handler reports
 * its own errors at the value node and leaves the default in place, so
 * loading goes on and finds the next error too.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_priv.h"
#include "ratelimit.h"

void
lerr_at(struct loader *l, int line, int col, const char *msg)
{
	struct conf_err *e;
	char *m;

	if (l->n_errs == l->cap_errs) {
		size_t cap = l->cap_errs ? l->cap_errs * 2 : 16;

		if ((e = realloc(l->errs, cap * sizeof(*e))) == NULL) {
			l->oom = true;
			return;
		}
		l->errs = e;
		l->cap_errs = cap;
	}
	if ((m = strdup(msg)) == NULL) {
		l->oom = true;
		return;
	}
	e = &l->errs[l->n_errs];
	e->line = line;
	e->col = col;
	e->seq = l->n_errs++;
	e->msg = m;
}

static void
vlerr(struct loader *l, const struct ynode *at, const char *path,
    const char *fmt, va_list ap)
{
	char msg[1024];
	int n = 0;

	if (path != NULL && *path != '\0')
		n = snprintf(msg, sizeof(msg), "%s: ", path);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	lerr_at(l, at ? at->line : 0, at ? at->col : 0, msg);
}

void
lerr(struct loader *l, const struct ynode *at, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlerr(l, at, l->path, fmt, ap);
	va_end(ap);
}

void
lerr_path(struct loader *l, const struct ynode *at, const char *path,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlerr(l, at, path, fmt, ap);
	va_end(ap);
}

size_t
path_push(struct loader *l, const char *seg)
{
	size_t mark = l->pathlen;

	if (mark)
		ypath_append(l->path, sizeof(l->path), &l->pathlen, ".");
	ypath_append(l->path, sizeof(l->path), &l->pathlen, seg);
	if (l->pathlen >= sizeof(l->path))
		l->pathlen = sizeof(l->path) - 1;
	return mark;
}

size_t
path_push_idx(struct loader *l, size_t i)
{
	size_t mark = l->pathlen;
	int n;

	n = snprintf(l->path + mark, sizeof(l->path) - mark, "[%zu]", i);
	if (n > 0)
		l->pathlen += (size_t)n;
	if (l->pathlen >= sizeof(l->path))
		l->pathlen = sizeof(l->path) - 1;
	return mark;
}

void
path_pop(struct loader *l, size_t mark)
{
	l->pathlen = mark;
	l->path[mark] = '\0';
}

/*
 * The output never passes LEN: a control byte takes four bytes escaped, so
 * a value of them fills the buffer long before 80 input bytes, and the
 * room for "...", the closing quote and the NUL is kept at every step.
 */
const char *
quote(const char *s, char *buf, size_t len)
{
	size_t o = 0, lead = 1, i;

	if (len < 8)
		return "\"\"";
	buf[o++] = '"';
	for (i = 0; s[i] != '\0' && i < 80; i++) {
		unsigned char ch = (unsigned char)s[i];
		char esc[8];
		size_t n;

		if ((ch & 0xc0) != 0x80)
			lead = o;
		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			n = 2;
		} else if (ch < 0x20 || ch == 0x7f) {
			n = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", ch);
		} else {
			esc[0] = (char)ch;
			n = 1;
		}
		if (o + n + sizeof("...\"") > len)
			break;
		memcpy(buf + o, esc, n);
		o += n;
	}
	if (s[i] != '\0') {
		/* cut before a character, not inside its UTF-8 bytes */
		if (((unsigned char)s[i] & 0xc0) == 0x80)
			o = lead;
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

bool
want_map(struct loader *l, const struct ynode *val)
{
	if (val->kind == YMAP || ynode_is_null(val))
		return true;
	if (!val->bad) {
		lerr(l, val, "expected a mapping, got %s", ynode_kind_name(val));
		l->n_shape++;
	}
	return false;
}

bool
want_seq(struct loader *l, const struct ynode *val)
{
	if (val->kind == YSEQ || ynode_is_null(val))
		return true;
	if (!val->bad) {
		lerr(l, val, "expected a list, got %s", ynode_kind_name(val));
		l->n_shape++;
	}
	return false;
}

void
walk_map(struct loader *l, const struct ynode *val, void *obj,
    const struct field *fields)
{
	if (!want_map(l, val) || val->kind != YMAP)
		return;
	for (size_t i = 0; i < val->n; i++) {
		const struct ynode *k = val->pairs[i].key;
		const struct field *f;
		char q[128];
		size_t mark;

		if (k->kind != YSCALAR || k->bad)
			continue;	/* reported when the tree was checked */
		for (f = fields; f->key != NULL; f++)
			if (strcmp(f->key, k->str) == 0)
				break;
		if (f->key == NULL) {
			lerr(l, k, "unknown key %s", quote(k->str, q, sizeof(q)));
			l->n_shape++;
			continue;
		}
		mark = path_push(l, f->key);
		f->fn(l, f, k, val->pairs[i].val, obj);
		path_pop(l, mark);
	}
}

const char *
get_scalar(struct loader *l, const struct ynode *val, const char *what)
{
	if (val->bad)
		return NULL;
	if (val->kind != YSCALAR) {
		lerr(l, val, "expected %s, got %s", what, ynode_kind_name(val));
		l->n_shape++;
		return NULL;
	}
	if (ynode_is_null(val)) {
		lerr(l, val, "missing value (expected %s)", what);
		return NULL;
	}
	return val->str;
}

char *
get_string(struct loader *l, const struct ynode *val)
{
	const char *s = get_scalar(l, val, "a string");
	char *d;

	if (s == NULL)
		return NULL;
	if (*s == '\0') {
		lerr(l, val, "must not be empty");
		return NULL;
	}
	if ((d = strdup(s)) == NULL)
		l->oom = true;
	return d;
}

/* Relative paths are taken from the config file's directory, so a config
 * and its certificates can move together, whatever the working directory. */
char *
get_path(struct loader *l, const struct ynode *val)
{
	char *s = get_string(l, val), *p;

	if (s == NULL || s[0] == '/' || l->dir[0] == '\0')
		return s;
	if (asprintf(&p, "%s%s", l->dir, s) < 0) {
		l->oom = true;
		p = NULL;
	}
	free(s);
	return p;
}

int
get_addr(struct loader *l, const struct ynode *val, struct conf_addr *a, bool listen)
{
	const char *s = get_scalar(l, val, "an address"), *why;
	char q[128];

	if (s == NULL)
		return -1;
	if (parse_addr(s, a, &why) != 0) {
		lerr(l, val, "bad address %s (%s)", quote(s, q, sizeof(q)), why);
		return -1;
	}
	if (listen && !a->is_ip && !a->is_loopback) {
		lerr(l, val, "bad address %s (needs an IP address or localhost)",
		    quote(s, q, sizeof(q)));
		conf_addr_clear(a);
		return -1;
	}
	a->pos.line = val->line;
	a->pos.col = val->col;
	return 0;
}

void
free_strings(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

char **
get_strings(struct loader *l, const struct ynode *val, size_t *n,
    bool (*check)(struct loader *, const struct ynode *, const char *))
{
	char **v;

	*n = 0;
	if (!want_seq(l, val) || val->kind != YSEQ || val->n == 0)
		return NULL;
	if ((v = calloc(val->n, sizeof(*v))) == NULL) {
		l->oom = true;
		return NULL;
	}
	for (size_t i = 0; i < val->n; i++) {
		size_t mark = path_push_idx(l, i);
		char *s = get_string(l, val->items[i]);

		if (s != NULL && check != NULL && !check(l, val->items[i], s)) {
			free(s);
			s = NULL;
		}
		if (s != NULL)
			v[(*n)++] = s;
		path_pop(l, mark);
	}
	return v;
}

void
fld_duration(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "a duration"), *why;
	char q[128], lo[32], hi[32];
	int64_t ms;

	(void)key;
	if (s == NULL)
		return;
	if (parse_duration(s, &ms, &why) != 0) {
		lerr(l, val, "bad duration %s (%s)", quote(s, q, sizeof(q)), why);
		return;
	}
	if (ms < f->min || ms > (f->max ? f->max : DURATION_MAX_MS)) {
		lerr(l, val, "%s is out of range (%s..%s)", s,
		    format_duration(f->min, lo, sizeof(lo)),
		    format_duration(f->max ? f->max : DURATION_MAX_MS, hi, sizeof(hi)));
		return;
	}
	*(int64_t *)(void *)((char *)obj + f->off) = ms;
}

void
fld_size(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "a size"), *why;
	uint64_t v;
	char q[128];

	(void)key;
	if (s == NULL)
		return;
	if (parse_size(s, &v, &why) != 0) {
		lerr(l, val, "bad size %s (%s)", quote(s, q, sizeof(q)), why);
		return;
	}
	if (v < (uint64_t)f->min || (f->max && v > (uint64_t)f->max)) {
		lerr(l, val, "%s is out of range (%lld..%lld bytes)", s,
		    (long long)f->min, (long long)f->max);
		return;
	}
	*(uint64_t *)(void *)((char *)obj + f->off) = v;
}

/* An optional '-' and decimal digits; false on anything else. */
static bool
parse_int(const char *s, long long *out)
{
	bool neg = *s == '-';
	long long v = 0;

	if (neg)
		s++;
	if (*s == '\0')
		return false;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return false;
		if (v > (1LL << 40))
			v = 1LL << 41;	/* far out of any range; stop growing */
		else
			v = v * 10 + (*s - '0');
	}
	*out = neg ? -v : v;
	return true;
}

void
fld_u32(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "an integer");
	long long v;
	char q[128];

	(void)key;
	if (s == NULL)
		return;
	if (!parse_int(s, &v)) {
		lerr(l, val, "expected an integer, got %s", quote(s, q, sizeof(q)));
		return;
	}
	if (v < f->min || v > f->max) {
		lerr(l, val, "%s is out of range (%lld..%lld)", s,
		    (long long)f->min, (long long)f->max);
		return;
	}
	*(uint32_t *)(void *)((char *)obj + f->off) = (uint32_t)v;
}

void
fld_double(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "a number");
	char q[128], *end;
	double v;

	(void)key;
	if (s == NULL)
		return;
	/* plain decimal only: strtod would also take "nan", "inf" and hex */
	if (strspn(s, "0123456789.eE+-") != strlen(s) ||
	    (v = strtod(s, &end), *end != '\0') || !isfinite(v)) {
		lerr(l, val, "expected a number, got %s", quote(s, q, sizeof(q)));
		return;
	}
	if (v < (double)f->min || v > (double)f->max) {
		lerr(l, val, "%s is out of range (%lld..%lld)", s,
		    (long long)f->min, (long long)f->max);
		return;
	}
	*(double *)(void *)((char *)obj + f->off) = v;
}

void
fld_bool(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *s = get_scalar(l, val, "true or false");
	bool *b = (bool *)((char *)obj + f->off);
	char q[128];

	(void)key;
	if (s == NULL)
		return;
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		*b = true;
	else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 ||
	    strcmp(s, "FALSE") == 0)
		*b = false;
	else
		lerr(l, val, "expected true or false, got %s", quote(s, q, sizeof(q)));
}

void
fld_string(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	char **p = (char **)(void *)((char *)obj + f->off);
	char *s;

	(void)key;
	if ((s = get_string(l, val)) != NULL) {
		free(*p);
		*p = s;
	}
}

void
fld_path(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	char **p = (char **)(void *)((char *)obj + f->off);
	char *s;

	(void)key;
	if ((s = get_path(l, val)) != NULL) {
		free(*p);
		*p = s;
	}
}

/* A known key handled outside the walk (it must be loaded later). */
void
fld_skip(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	(void)l;
	(void)f;
	(void)key;
	(void)val;
	(void)obj;
}

void
fld_section(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	(void)key;
	walk_map(l, val, (char *)obj + f->off, f->aux);
}

void
fld_enum(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	const char *const *names = f->aux;
	const char *s = get_scalar(l, val, "a name");
	char q[128], list[256];
	size_t n = 0, o = 0;

	(void)key;
	if (s == NULL)
		return;
	for (n = 0; names[n] != NULL; n++) {
		if (strcmp(s, names[n]) == 0) {
			*(int *)(void *)((char *)obj + f->off) = (int)n;
			return;
		}
	}
	for (size_t i = 0; i < n && o < sizeof(list); i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
		    i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
	lerr(l, val, "unknown value %s (expected %s)", quote(s, q, sizeof(q)), list);
}

const struct field timeouts_fields[] = {
	{ "connect", fld_duration, offsetof(struct conf_timeouts, connect), 1, 0, NULL },
	{ "request", fld_duration, offsetof(struct conf_timeouts, request), 1, 0, NULL },
	{ "per_try", fld_duration, offsetof(struct conf_timeouts, per_try), 0, 0, NULL },
	{ "stream_idle", fld_duration, offsetof(struct conf_timeouts, stream_idle), 1, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

const struct field rate_limit_fields[] = {
	{ "rps", fld_double, offsetof(struct conf_rate_limit, rps), 0, 1000000000, NULL },
	{ "burst", fld_u32, offsetof(struct conf_rate_limit, burst), 1, 1000000000, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* rate_limit: rps is required; burst defaults to one second of rps. */
void
fld_rate_limit(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_rate_limit *rl = (void *)((char *)obj + f->off);
	size_t before = l->n_errs;
	const struct ynode *rps, *burst;

	rl->enabled = true;
	rl->rps = 0;
	rl->burst = 0;
	if (!want_map(l, val))
		return;
	walk_map(l, val, rl, rate_limit_fields);
	if ((rps = ymap_get(val, "rps", NULL)) == NULL)
		lerr(l, key, "missing required key \"rps\"");
	else if (rl->rps < RATELIMIT_MIN_RPS && l->n_errs == before)
		/* slower, the bucket would refill faster than asked (ratelimit.h) */
		lerr(l, rps, "rps must be at least 0.000001 (one token in 11.6 days)");
	if (rl->burst == 0) {
		/* ceil() by hand: libm is not linked */
		rl->burst = (uint32_t)rl->rps;
		if ((double)rl->burst < rl->rps || rl->burst == 0)
			rl->burst++;
	}
	if (l->n_errs == before && (double)(rl->burst - 1) / rl->rps > RATELIMIT_MAX_BURST_S)
		lerr(l, (burst = ymap_get(val, "burst", NULL)) ? burst : val,
		    "burst %u at rps %g takes over 73 years to refill (at most rps x 2305843009 + 1)",
		    rl->burst, rl->rps);
}
