/*
 * Scalar values of the configuration file: durations, sizes, addresses and
 * ${VAR} expansion. Pure functions, no I/O besides getenv(), so the unit
 * tests can drive every edge case.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "config_priv.h"

/*
 * Reads the leading decimal digits of S into *v. Returns the number of
 * digits read (0 when S does not start with one); *big is set when the
 * value does not fit in 63 bits.
 */
static size_t
read_digits(const char *s, uint64_t *v, bool *big)
{
	size_t i;

	*v = 0;
	*big = false;
	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		uint64_t d = (uint64_t)(s[i] - '0');

		if (*big || *v > ((UINT64_MAX >> 1) - d) / 10)
			*big = true;
		else
			*v = *v * 10 + d;
	}
	return i;
}

int
parse_duration(const char *s, int64_t *ms, const char **why)
{
	static const struct {
		const char *name;
		uint64_t mult;
	} units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	uint64_t v;
	size_t n;
	bool big;

	if (*s == '\0')
		return *why = "empty", -1;
	if (*s == '-')
		return *why = "negative", -1;
	if ((n = read_digits(s, &v, &big)) == 0)
		return *why = "not a number", -1;
	s += n;
	if (*s == '\0') {
		/* a bare 0 needs no unit: it means the same in every unit */
		if (v == 0 && !big)
			return *ms = 0, 0;
		return *why = "missing unit: ms, s, m or h", -1;
	}
	if (*s == '.')
		return *why = "fractions are not supported; use a smaller unit", -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s, units[i].name) != 0)
			continue;
		if (big || v > DURATION_MAX_MS / units[i].mult)
			return *why = "too large; at most 100000h", -1;
		*ms = (int64_t)(v * units[i].mult);
		return 0;
	}
	return *why = "unit must be ms, s, m or h", -1;
}

/*
 * Sizes: a plain number is bytes. Binary units KiB, MiB, GiB, TiB are
 * powers of 1024; KB, MB, GB, TB are powers of 1000 (SI, as Kubernetes
 * reads "k" and "M"), so "64KB" is 64000 bytes. "B" is accepted for bytes.
 */
int
parse_size(const char *s, uint64_t *bytes, const char **why)
{
	static const struct {
		const char *name;
		uint64_t mult;
	} units[] = {
		{ "B", 1 },
		{ "KiB", 1ull << 10 }, { "MiB", 1ull << 20 },
		{ "GiB", 1ull << 30 }, { "TiB", 1ull << 40 },
		{ "KB", 1000ull }, { "MB", 1000000ull },
		{ "GB", 1000000000ull }, { "TB", 1000000000000ull },
	};
	uint64_t v;
	size_t n;
	bool big;

	if (*s == '\0')
		return *why = "empty", -1;
	if (*s == '-')
		return *why = "negative", -1;
	if ((n = read_digits(s, &v, &big)) == 0)
		return *why = "not a number", -1;
	if (big)
		return *why = "too large", -1;
	s += n;
	if (*s == '\0')
		return *bytes = v, 0;
	if (*s == '.')
		return *why = "fractions are not supported; use a smaller unit", -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s, units[i].name) != 0)
			continue;
		if (v > (UINT64_MAX >> 1) / units[i].mult)
			return *why = "too large", -1;
		*bytes = v * units[i].mult;
		return 0;
	}
	return *why = "unit must be B, KiB, MiB, GiB, TiB, KB, MB, GB or TB", -1;
}

void
conf_addr_clear(struct conf_addr *a)
{
	free(a->text);
	free(a->host);
	memset(a, 0, sizeof(*a));
}

/* A DNS name as routing and resolvers take it: labels of letters, digits,
 * '-' and '_' (SRV-style names), 1..63 bytes each, at most 253 in all. */
bool
valid_dns_name(const char *s, size_t len)
{
	size_t label = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;			/* absolute name */
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!isalnum(ch) && ch != '-' && ch != '_')
			return false;
		if ((label == 0 && ch == '-') || ++label > 63)
			return false;
	}
	return s[len - 1] != '-';
}

static bool
is_localhost(const char *h)
{
	return strcasecmp(h, "localhost") == 0 || strcasecmp(h, "localhost.") == 0;
}

static bool
all_digits_and_dots(const char *s)
{
	for (; *s; s++)
		if (!isdigit((unsigned char)*s) && *s != '.')
			return false;
	return true;
}

/* Splits S into host and port text; the host loses its brackets. */
static int
split_host_port(const char *s, char *host, size_t hostlen, const char **port,
    bool *v6, const char **why)
{
	const char *end, *colon;
	size_t n;

	*v6 = false;
	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL)
			return *why = "missing ']'", -1;
		if (end[1] == '\0')
			return *why = "missing port", -1;
		if (end[1] != ':')
			return *why = "expected ':' after ']'", -1;
		n = (size_t)(end - s - 1);
		s++;
		*port = end + 2;
		*v6 = true;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return *why = "missing port", -1;
		n = (size_t)(colon - s);
		if (memchr(s, ':', n) != NULL)
			return *why = "an IPv6 address needs brackets, e.g. [::1]:80", -1;
		*port = colon + 1;
	}
	if (n == 0)
		return *why = "missing host", -1;
	if (n >= hostlen)
		return *why = "host name too long", -1;
	memcpy(host, s, n);
	host[n] = '\0';
	return 0;
}

static int
parse_port(const char *p, uint16_t *port, const char **why)
{
	uint64_t v;
	size_t n;
	bool big;

	if (*p == '\0')
		return *why = "missing port", -1;
	n = read_digits(p, &v, &big);
	if (n == 0 || p[n] != '\0')
		return *why = "port is not a number", -1;
	if (big || v < 1 || v > 65535)
		return *why = "port must be 1..65535", -1;
	*port = (uint16_t)v;
	return 0;
}

/* Fills the socket address of an IP literal; false when HOST is none. */
static bool
fill_ip(struct conf_addr *a, const char *host, bool v6)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

	if (!v6 && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(a->port);
		a->salen = sizeof(*sin);
		a->is_loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
		return true;
	}
	if (v6 && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		const uint8_t *b = sin6->sin6_addr.s6_addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(a->port);
		a->salen = sizeof(*sin6);
		/* ::1, or 127/8 mapped into IPv6 */
		a->is_loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
		    (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && b[12] == 127);
		return true;
	}
	return false;
}

int
parse_addr(const char *s, struct conf_addr *out, const char **why)
{
	char host[256];
	const char *port;
	bool v6;

	memset(out, 0, sizeof(*out));
	if (*s == '\0')
		return *why = "empty", -1;
	if (split_host_port(s, host, sizeof(host), &port, &v6, why) != 0)
		return -1;
	if (parse_port(port, &out->port, why) != 0)
		return -1;
	if (fill_ip(out, host, v6)) {
		out->is_ip = true;
	} else if (v6) {
		return *why = "not an IPv6 address", -1;
	} else if (all_digits_and_dots(host)) {
		return *why = "not an IPv4 address", -1;
	} else if (!valid_dns_name(host, strlen(host))) {
		return *why = "not an IP address or host name", -1;
	} else {
		out->is_loopback = is_localhost(host);
		/* listeners and local_app bind or connect by address: the
		 * one name every host has is known without a lookup */
		if (out->is_loopback)
			fill_ip(out, "127.0.0.1", false);
	}
	out->text = strdup(s);
	out->host = strdup(host);
	if (out->text == NULL || out->host == NULL) {
		conf_addr_clear(out);
		return *why = "out of memory", -1;
	}
	return 0;
}

/* Formats MS with the largest unit that divides it, as the file would. */
const char *
format_duration(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % 3600000 == 0)
		snprintf(buf, len, "%lldh", (long long)(ms / 3600000));
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(buf, len, "%lldm", (long long)(ms / 60000));
	else if (ms != 0 && ms % 1000 == 0)
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, len, "%lldms", (long long)ms);
	return buf;
}

/* Growable output string for expand_vars. */
struct sbuf {
	char *p;
	size_t len, cap;
};

static int
sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *p = realloc(b->p, cap);

		if (p == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* Expands one "${...}" whose body is S[0..n); appends the result. */
static int
expand_one(struct sbuf *b, const char *s, size_t n, char *err, size_t errlen)
{
	size_t nlen = 0;
	const char *val;
	char name[256];

	while (nlen < n && (s[nlen] == '_' || isalnum((unsigned char)s[nlen])))
		nlen++;
	if (nlen == 0 || isdigit((unsigned char)s[0]) || nlen >= sizeof(name) ||
	    (nlen < n && (n - nlen < 2 || s[nlen] != ':' || s[nlen + 1] != '-'))) {
		char ref[72], q[128];

		/* the reference may hold any byte: shown escaped, on one line */
		snprintf(ref, sizeof(ref), "${%.*s}", (int)(n > 64 ? 64 : n), s);
		snprintf(err, errlen, "bad variable reference %s (use ${NAME} or ${NAME:-default})",
		    quote(ref, q, sizeof(q)));
		return -1;
	}
	memcpy(name, s, nlen);
	name[nlen] = '\0';
	val = getenv(name);
	if (nlen < n && (val == NULL || *val == '\0'))
		/* ${NAME:-default}: like the shell, also when set but empty */
		return sb_add(b, s + nlen + 2, n - nlen - 2);
	if (val == NULL) {
		snprintf(err, errlen, "environment variable %s is not set", name);
		return -1;
	}
	return sb_add(b, val, strlen(val));
}

/*
 * ${NAME} and ${NAME:-default} from the environment; "$${" stands for a
 * literal "${". The default runs to the first '}' (no nesting). *out is
 * NULL when IN holds no reference, so callers keep the original.
 */
int
expand_vars(const char *in, char **out, char *err, size_t errlen)
{
	struct sbuf b = { NULL, 0, 0 };
	const char *p = in, *ref, *close;

	*out = NULL;
	*err = '\0';
	if (strstr(in, "${") == NULL)
		return 0;
	while ((ref = strstr(p, "${")) != NULL) {
		if (ref > p && ref[-1] == '$') {
			if (sb_add(&b, p, (size_t)(ref - p)) != 0 ||
			    sb_add(&b, "{", 1) != 0)
				goto oom;
			p = ref + 2;
			continue;
		}
		if (sb_add(&b, p, (size_t)(ref - p)) != 0)
			goto oom;
		if ((close = strchr(ref + 2, '}')) == NULL) {
			snprintf(err, errlen, "unterminated \"${\"");
			goto fail;
		}
		if (expand_one(&b, ref + 2, (size_t)(close - ref - 2), err, errlen) != 0) {
			if (*err == '\0')
				goto oom;
			goto fail;
		}
		p = close + 1;
	}
	if (sb_add(&b, p, strlen(p)) != 0)
		goto oom;
	*out = b.p;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	free(b.p);
	return -1;
}
