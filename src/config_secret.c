/*
 * Service keys from the environment and from files. The keys themselves
 * never reach a message: errors name the variable or the file only.
 * Buffers that held a key are wiped before they are freed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config_priv.h"
#include "regfile.h"

#define SECRET_FILE_MAX (1 << 20)

void
secret_free(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/* A key goes into a header value, so CR, LF and other controls would
 * split or corrupt the request. */
static bool
key_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch == 0x7f)
			return false;
	}
	return true;
}

static bool
env_name_ok(const char *s)
{
	if (!(*s == '_' || isalpha((unsigned char)*s)))
		return false;
	for (; *s; s++)
		if (!(*s == '_' || isalnum((unsigned char)*s)))
			return false;
	return true;
}

/*
 * NAME is echoed in messages unless it came from ${VAR}: writing
 * "key_env: ${API_KEY}" by mistake would make the key itself the name.
 */
char *
secret_from_env(struct loader *l, const struct ynode *at, const char *name)
{
	const char *shown = name, *v;
	char *s;

	if (!env_name_ok(name)) {
		lerr(l, at, "not an environment variable name (letters, digits and '_')");
		return NULL;
	}
	if (at->kind == YSCALAR && at->expanded)
		shown = "(named by ${...})";
	if ((v = getenv(name)) == NULL) {
		lerr(l, at, "environment variable %s is not set", shown);
		return NULL;
	}
	if (*v == '\0') {
		lerr(l, at, "environment variable %s is empty", shown);
		return NULL;
	}
	if (!key_ok(v, strlen(v))) {
		lerr(l, at, "environment variable %s holds control characters", shown);
		return NULL;
	}
	if ((s = strdup(v)) == NULL)
		l->oom = true;
	return s;
}

/* The whole file, NUL-terminated; NULL with errno set. */
static char *
read_all(const char *file, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf, *nb;
	struct stat st;
	ssize_t r;
	int fd, saved;

	if ((fd = regfile_open(file, &st)) < 0)
		return NULL;
	if ((buf = malloc(cap)) == NULL)
		goto fail;
	for (;;) {
		if (n + 1 == cap) {
			if (cap >= SECRET_FILE_MAX) {
				errno = EFBIG;
				goto fail;
			}
			/* grow by copying, so no stale copy of a key is left behind */
			if ((nb = malloc(cap * 2)) == NULL)
				goto fail;
			memcpy(nb, buf, n);
			OPENSSL_cleanse(buf, n);
			free(buf);
			buf = nb;
			cap *= 2;
		}
		if ((r = read(fd, buf + n, cap - n - 1)) < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
fail:
	saved = errno;
	if (buf != NULL) {
		OPENSSL_cleanse(buf, n);
		free(buf);
	}
	close(fd);
	errno = saved;
	return NULL;
}

static void
wipe(char *buf, size_t n)
{
	OPENSSL_cleanse(buf, n);
	free(buf);
}

char *
secret_from_file(struct loader *l, const struct ynode *at, const char *file)
{
	size_t n;
	char *buf, *s;

	if ((buf = read_all(file, &n)) == NULL) {
		lerr(l, at, "cannot read %s: %s", file, regfile_error());
		return NULL;
	}
	/* editors add a final newline; trailing blanks are no part of a key
	 * either (a header value loses them on the way) */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
	    buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
	if (n == 0) {
		lerr(l, at, "%s is empty", file);
		wipe(buf, n);
		return NULL;
	}
	if (!key_ok(buf, n)) {
		lerr(l, at, "%s: the key holds control characters", file);
		wipe(buf, n);
		return NULL;
	}
	if ((s = strdup(buf)) == NULL)
		l->oom = true;
	wipe(buf, n);
	return s;
}

static bool
is_blank(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

/* One key a line; blank lines and "#" comments are skipped, and the
 * blanks around a key are not part of it. Appends to *keys. */
int
secrets_from_keys_file(struct loader *l, const struct ynode *at,
    const char *file, char ***keys, size_t *n)
{
	char *buf, *line, *next, **v;
	size_t len;
	int lineno = 0, rc = 0;

	if ((buf = read_all(file, &len)) == NULL) {
		lerr(l, at, "cannot read %s: %s", file, regfile_error());
		return -1;
	}
	for (line = buf; line != NULL && line < buf + len; line = next) {
		char *end;

		lineno++;
		/* by length, not strchr/strlen: a NUL byte must not end the
		 * line (a prefix taken as the key) or the file (keys dropped) */
		if ((next = memchr(line, '\n', (size_t)(buf + len - line))) != NULL) {
			end = next;
			*next++ = '\0';
		} else {
			end = buf + len;
		}
		while (line < end && is_blank(*line))
			line++;
		while (end > line && is_blank(end[-1]))
			*--end = '\0';
		if (line == end || *line == '#')
			continue;
		if (!key_ok(line, (size_t)(end - line))) {
			lerr(l, at, "%s line %d: the key holds control characters",
			    file, lineno);
			rc = -1;
			continue;
		}
		if ((v = realloc(*keys, (*n + 1) * sizeof(*v))) == NULL ||
		    (v[*n] = strdup(line)) == NULL) {
			if (v != NULL)
				*keys = v;
			l->oom = true;
			rc = -1;
			break;
		}
		*keys = v;
		(*n)++;
	}
	wipe(buf, len);
	return rc;
}
