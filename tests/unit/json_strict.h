/*
 * Test helper: a strict JSON parser for the access log's lines (one flat
 * object each, but for one array of flat objects). Header-only, static
 * inline functions, no Check: the unit tests (json_lines.h adds reading files)
 * and the fuzz harness tests/fuzz/fuzz_accesslog.c share it.
 */
#ifndef FERRY_TEST_JSON_STRICT_H
#define FERRY_TEST_JSON_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"

#define JSON_MAX_FIELDS	24
#define JSON_MAX_ELEMS	16

/*
 * One flat object: string keys (no duplicates); string, number,
 * true/false/null values, and (at the top) arrays of flat objects;
 * strings valid UTF-8 without raw control bytes; escapes decoded. No
 * white space anywhere.
 */
struct jfield {
	char key[32];
	char type;			/* 's' string, 'n' number, 'z' null, 'b',
					   'a' array of flat objects */
	struct sbuf val;		/* decoded string, the number's or array's text */
};

struct jobj {
	struct jfield f[JSON_MAX_FIELDS];
	int n;
};

/* The objects of a line's arrays, for who asks for them. */
struct jelems {
	struct jobj el[JSON_MAX_ELEMS];
	int n;
};

static inline void
jobj_free(struct jobj *o)
{
	for (int i = 0; i < o->n; i++)
		sbuf_free(&o->f[i].val);
	o->n = 0;
}

static inline void
jelems_free(struct jelems *e)
{
	for (int i = 0; i < e->n; i++)
		jobj_free(&e->el[i]);
	e->n = 0;
}

static inline void
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

static inline bool
hex4(const char **p, const char *end, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++, (*p)++) {
		char c;

		if (*p >= end)
			return false;
		c = **p;
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

/*
 * Length of a well-formed UTF-8 sequence at P (first byte >= 0x80, LEFT
 * bytes from P on), or 0: the table of well-formed byte sequences
 * (Unicode 15, table 3-7).
 */
static inline size_t
utf8_wf(const unsigned char *p, size_t left)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

static inline bool
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
			if ((n = utf8_wf((const unsigned char *)p,
			    (size_t)(end - p))) == 0)
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

static inline bool
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

static inline bool jobject(const char **pp, const char *end, struct jobj *o,
    bool nested, struct jelems *els);

/* An array of flat objects at *PP (the access log's attempts_detail):
 * each must parse, and goes to ELS when it is not NULL; the array's text
 * is kept in O. */
static inline bool
jarray(const char **pp, const char *end, struct sbuf *o, struct jelems *els)
{
	const char *p = *pp, *s = p;
	struct jobj scratch;
	bool ok;

	if (p >= end || *p++ != '[')
		return false;
	if (p < end && *p == ']') {
		p++;
		goto done;
	}
	for (;;) {
		struct jobj *elem = &scratch;

		if (els != NULL) {
			if (els->n == JSON_MAX_ELEMS)
				return false;
			elem = &els->el[els->n++];
		}
		ok = jobject(&p, end, elem, true, NULL);
		if (els == NULL)
			jobj_free(elem);
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
 * objects, whose objects go to ELS unless it is NULL. */
static inline bool
jobject(const char **pp, const char *end, struct jobj *o, bool nested,
    struct jelems *els)
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
		if (o->n == JSON_MAX_FIELDS || !jstring(&p, end, &key) ||
		    key.len >= sizeof(f->key) || memchr(key.p, 0, key.len) ||
		    p >= end || *p++ != ':')
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
			if (!jarray(&p, end, &f->val, els))
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

/* The object in [P, P+LEN), its arrays' objects to ELS (NULL: not kept);
 * false unless all of it is one strict object. Free O (and ELS) either
 * way. */
static inline bool
jparse_elems(const char *p, size_t len, struct jobj *o, struct jelems *els)
{
	const char *end = p + len;

	if (els != NULL)
		els->n = 0;
	return jobject(&p, end, o, false, els) && p == end;
}

static inline bool
jparse(const char *p, size_t len, struct jobj *o)
{
	return jparse_elems(p, len, o, NULL);
}

#endif
