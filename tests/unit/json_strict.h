/*
 * Test helper: a strict JSON parser for the access log's lines (one flat
 * object each), and a reader of JSON-lines files. Header-only: static
 * functions for one test file.
 */
#ifndef FERRY_TEST_JSON_STRICT_H
#define FERRY_TEST_JSON_STRICT_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "sbuf.h"

/*
 * The parser for one flat object per line: string keys (no
 * duplicates); string, number, true/false/null values, and arrays of
 * such flat objects; strings must be
 * valid UTF-8 without raw control bytes; escapes are decoded.
 */
struct jfield {
	char key[32];
	char type;			/* 's' string, 'n' number, 'z' null, 'b',
					   'a' array of flat objects */
	struct sbuf val;		/* decoded string, the number's or array's text */
};

struct jobj {
	struct jfield f[24];
	int n;
};

static void
jobj_free(struct jobj *o)
{
	for (int i = 0; i < o->n; i++)
		sbuf_free(&o->f[i].val);
	o->n = 0;
}

static void
put_utf8(struct sbuf *o, unsigned cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	sbuf_add(o, b, n);
}

static bool
hex4(const char **p, const char *end, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++, (*p)++) {
		char c = **p;

		if (*p >= end)
			return false;
		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned)(c - 'A' + 10);
		else
			return false;
	}
	return true;
}

/* Length of a valid UTF-8 sequence at P (first byte >= 0x80), or 0. */
static size_t
utf8_ok(const unsigned char *p, const unsigned char *end)
{
	unsigned cp, min;
	size_t n;

	if ((*p & 0xe0) == 0xc0) {
		n = 2; cp = *p & 0x1f; min = 0x80;
	} else if ((*p & 0xf0) == 0xe0) {
		n = 3; cp = *p & 0x0f; min = 0x800;
	} else if ((*p & 0xf8) == 0xf0) {
		n = 4; cp = *p & 0x07; min = 0x10000;
	} else
		return 0;
	if (end - p < (ptrdiff_t)n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static bool
jstring(const char **pp, const char *end, struct sbuf *o)
{
	const char *p = *pp;
	unsigned cp, lo;
	size_t n;

	if (p >= end || *p++ != '"')
		return false;
	while (p < end && *p != '"') {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20)
			return false;
		if (c >= 0x80) {
			if ((n = utf8_ok((const unsigned char *)p,
			    (const unsigned char *)end)) == 0)
				return false;
			sbuf_add(o, p, n);
			p += n;
			continue;
		}
		if (c != '\\') {
			sbuf_add(o, p++, 1);
			continue;
		}
		if (++p >= end)
			return false;
		switch (*p++) {
		case '"': sbuf_add(o, "\"", 1); break;
		case '\\': sbuf_add(o, "\\", 1); break;
		case '/': sbuf_add(o, "/", 1); break;
		case 'b': sbuf_add(o, "\b", 1); break;
		case 'f': sbuf_add(o, "\f", 1); break;
		case 'n': sbuf_add(o, "\n", 1); break;
		case 'r': sbuf_add(o, "\r", 1); break;
		case 't': sbuf_add(o, "\t", 1); break;
		case 'u':
			if (!hex4(&p, end, &cp))
				return false;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return false;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
					return false;
				p += 2;
				if (!hex4(&p, end, &lo) || lo < 0xdc00 ||
				    lo > 0xdfff)
					return false;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				    (lo - 0xdc00);
			}
			put_utf8(o, cp);
			break;
		default:
			return false;
		}
	}
	if (p >= end)
		return false;
	*pp = p + 1;
	return true;
}

static bool
jnumber(const char **pp, const char *end, struct sbuf *o)
{
	const char *p = *pp, *s = p;

#define DIGIT(x) ((x) >= '0' && (x) <= '9')
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (p < end && DIGIT(*p))
		while (p < end && DIGIT(*p))
			p++;
	else
		return false;
	if (p < end && *p == '.') {
		if (++p >= end || !DIGIT(*p))
			return false;
		while (p < end && DIGIT(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || !DIGIT(*p))
			return false;
		while (p < end && DIGIT(*p))
			p++;
	}
#undef DIGIT
	sbuf_add(o, s, (size_t)(p - s));
	*pp = p;
	return true;
}

static bool jobject(const char **pp, const char *end, struct jobj *o, bool nested);

/* An array of flat objects at *PP (the access log's attempts_detail):
 * each must parse; the array's text is kept in O. */
static bool
jarray(const char **pp, const char *end, struct sbuf *o)
{
	const char *p = *pp, *s = p;
	struct jobj elem;
	bool ok;

	if (p >= end || *p++ != '[')
		return false;
	if (p < end && *p == ']') {
		p++;
		goto done;
	}
	for (;;) {
		ok = jobject(&p, end, &elem, true);
		jobj_free(&elem);
		if (!ok)
			return false;
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p >= end || *p++ != ']')
			return false;
		break;
	}
done:
	sbuf_add(o, s, (size_t)(p - s));
	*pp = p;
	return true;
}

/* One object at *PP: scalar values, and (unless NESTED) arrays of flat
 * objects. */
static bool
jobject(const char **pp, const char *end, struct jobj *o, bool nested)
{
	const char *p = *pp;
	struct sbuf key = { 0 };
	bool ok = false;

	o->n = 0;
	if (p >= end || *p++ != '{')
		return false;
	for (;;) {
		struct jfield *f;

		sbuf_clear(&key);
		if (o->n == 24 || !jstring(&p, end, &key) || key.len >= 32 ||
		    memchr(key.p, 0, key.len) || p >= end || *p++ != ':')
			goto out;
		f = &o->f[o->n];
		memset(f, 0, sizeof(*f));
		memcpy(f->key, key.p, key.len);
		for (int i = 0; i < o->n; i++)
			if (strcmp(o->f[i].key, f->key) == 0)
				goto out;
		o->n++;
		if (p < end && *p == '"') {
			f->type = 's';
			if (!jstring(&p, end, &f->val))
				goto out;
		} else if (!nested && p < end && *p == '[') {
			f->type = 'a';
			if (!jarray(&p, end, &f->val))
				goto out;
		} else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
			f->type = 'z';
			p += 4;
		} else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
			f->type = 'b';
			p += 4;
		} else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
			f->type = 'b';
			p += 5;
		} else {
			f->type = 'n';
			if (!jnumber(&p, end, &f->val))
				goto out;
		}
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		ok = p < end && *p == '}';
		*pp = p + 1;
		goto out;
	}
out:
	sbuf_free(&key);
	return ok;
}

/* The object in [P, P+LEN); false unless all of it is one strict object
 * (flat, but for arrays of flat objects). */
static bool
jparse(const char *p, size_t len, struct jobj *o)
{
	const char *end = p + len;

	return jobject(&p, end, o, false) && p == end;
}

static const struct jfield *
jget(const struct jobj *o, const char *key)
{
	for (int i = 0; i < o->n; i++)
		if (strcmp(o->f[i].key, key) == 0)
			return &o->f[i];
	ck_abort_msg("no field %s", key);
	return NULL;
}

/* The whole file; *LEN its size. */
static char *
slurp(const char *path, size_t *len)
{
	struct sbuf b = { 0 };
	char tmp[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ne(fd, -1);
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		sbuf_add(&b, tmp, (size_t)n);
	close(fd);
	sbuf_add(&b, "", 1);
	*len = b.len - 1;
	return b.p;
}

/* Lines of a file, each parsed (must parse); returns the count. Calls FN
 * on each parsed object. */
static size_t
each_line(const char *path, void (*fn)(const struct jobj *, void *),
    void *arg)
{
	struct jobj o;
	size_t len, n = 0;
	char *text = slurp(path, &len), *p = text, *nl;

	while (p < text + len) {
		ck_assert_ptr_nonnull(nl = memchr(p, '\n', len - (size_t)(p - text)));
		ck_assert_msg(jparse(p, (size_t)(nl - p), &o),
		    "not strict JSON: %.*s", (int)(nl - p), p);
		if (fn)
			fn(&o, arg);
		jobj_free(&o);
		n++;
		p = nl + 1;
	}
	free(text);
	return n;
}

#endif
