/*
 * Test helper: the access log's files read back with json_strict.h, each
 * line asserted (Check). Header-only: static functions for one test file.
 */
#ifndef FERRY_TEST_JSON_LINES_H
#define FERRY_TEST_JSON_LINES_H

#include <fcntl.h>
#include <unistd.h>

#include <check.h>

#include "json_strict.h"

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
