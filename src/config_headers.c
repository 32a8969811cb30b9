/*
 * Header rules (SPEC §15): `headers: {request: {...}, response: {...}}`
 * with `remove` (names), `set` and `add` (name: value), in defaults, a
 * service and the inbound listener. Names and values are checked here, at
 * load time, so the request path only copies them.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_priv.h"
#include "http1.h"

/* What ferry itself manages (SPEC §5): a rule may not touch these. */
static bool
managed(const char *name)
{
	static const char *const names[] = {
		"x-service-auth", "x-correlation-id", "x-request-id", "traceparent",
		"tracestate", "via", "host", "connection", "keep-alive",
		"proxy-connection", "proxy-authorization", "te", "trailer",
		"transfer-encoding", "upgrade", "content-length", "x-forwarded-for",
		"x-forwarded-proto",
		/* each attempt writes the time left into it (SPEC §12) */
		"grpc-timeout",
		/* how the body's bytes read: ferry decodes and encodes them
		 * (SPEC §14), and a label that does not match its body makes
		 * the body unreadable */
		"content-encoding",
	};
	char dashed[64];
	size_t n = strlen(name);

	if (strncmp(name, "x-ferry-", 8) == 0)
		return true;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	/* a '_' look-alike (x_ferry_peer) is one to CGI, WSGI and Rack,
	 * which is why ferry drops them from requests */
	if (strchr(name, '_') == NULL || n >= sizeof(dashed))
		return false;
	for (size_t i = 0; i <= n; i++)
		dashed[i] = name[i] == '_' ? '-' : name[i];
	return managed(dashed);
}

/* The lower-case copy of a header name a rule may change, or NULL after
 * reporting at AT. */
static char *
rule_name(struct loader *l, const struct ynode *at, const char *s, size_t len)
{
	char q[128], *d;

	if (len == 0 || strlen(s) != len) {
		lerr(l, at, "bad header name %s", quote(s, q, sizeof(q)));
		return NULL;
	}
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("!#$%&'*+-.^_`|~", s[i]) == NULL) {
			lerr(l, at, "bad header name %s (a token: letters, digits and "
			    "!#$%%&'*+-.^_`|~)", quote(s, q, sizeof(q)));
			return NULL;
		}
	if ((d = strdup(s)) == NULL) {
		l->oom = true;
		return NULL;
	}
	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (managed(d)) {
		lerr(l, at, "%s is managed by ferry (SPEC §5); a header rule cannot change it",
		    quote(d, q, sizeof(q)));
		free(d);
		return NULL;
	}
	return d;
}

static void
fld_remove(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_hrules *r = obj;

	(void)f;
	(void)key;
	if (!want_seq(l, val) || val->kind != YSEQ)
		return;
	free_strings(r->remove, r->n_remove);
	r->n_remove = 0;
	if ((r->remove = calloc(val->n ? val->n : 1, sizeof(*r->remove))) == NULL) {
		l->oom = true;
		return;
	}
	for (size_t i = 0; i < val->n; i++) {
		const struct ynode *v = val->items[i];
		const char *s;
		size_t mark = path_push_idx(l, i);

		if ((s = get_scalar(l, v, "a header name")) != NULL &&
		    (r->remove[r->n_remove] = rule_name(l, v, s, v->len)) != NULL)
			r->n_remove++;
		path_pop(l, mark);
	}
}

/* No control character but tab: the next hop refuses the rest (400 from
 * an HTTP/1.1 parser, a stream reset on HTTP/2). */
static bool
value_ok(const char *s)
{
	for (; *s; s++)
		if (!http_text_byte_ok((unsigned char)*s))
			return false;
	return true;
}

/* S without the blanks around it: they are no part of a field value, and
 * an HTTP/2 peer resets a stream whose value has them (RFC 9113 8.2.1). */
static char *
value_dup(const char *s)
{
	size_t n;

	while (*s == ' ' || *s == '\t')
		s++;
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return strndup(s, n);
}

/* The lines one request: or response: section may set and add, and
 * their bytes as written ("name: value\r\n"): they count in the head's
 * limits (SPEC §11: 100 fields, 64 KiB) as the app's own do, so rules
 * past them would fail every request; defaults' and a service's (or the
 * listener's) together take at most a third of the fields and a quarter
 * of the bytes (a content-security-policy may be a few KiB long). */
#define RULES_MAX_LINES	16
#define RULES_MAX_BYTES	(8 * 1024)

static size_t
rules_bytes(const struct conf_hrule *r, size_t n)
{
	size_t b = 0;

	for (size_t i = 0; i < n; i++)
		b += http_field_bytes(strlen(r[i].name), strlen(r[i].value));
	return b;
}

/* After the set: or add: at AT (THESE, N of them) of section R: within
 * RULES_MAX_*? Said once, at the first mapping past them. */
static void
rules_check_size(struct loader *l, const struct ynode *at, const struct conf_hrules *r,
    const struct conf_hrule *these, size_t n)
{
	size_t lines = r->n_set + r->n_add, own = rules_bytes(these, n);
	size_t bytes = rules_bytes(r->set, r->n_set) + rules_bytes(r->add, r->n_add);

	if (lines - n > RULES_MAX_LINES || bytes - own > RULES_MAX_BYTES)
		return;		/* the other mapping was past them: said */
	if (lines > RULES_MAX_LINES || bytes > RULES_MAX_BYTES)
		lerr(l, at, "header rules of one section set and add at most %d lines "
		    "and %d bytes (name: value and CRLF), here %zu and %zu: "
		    "a head holds at most 100 fields and 64 KiB (SPEC §11)",
		    RULES_MAX_LINES, RULES_MAX_BYTES, lines, bytes);
}

/* set: and add: a mapping of name to value. */
static void
fld_pairs(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_hrule **rules = (struct conf_hrule **)(void *)((char *)obj + f->off);
	size_t *n = (size_t *)(void *)((char *)obj + f->min);
	char q[128];

	(void)key;
	if (!want_map(l, val) || val->kind != YMAP)
		return;
	for (size_t i = 0; i < *n; i++) {
		free((*rules)[i].name);
		free((*rules)[i].value);
	}
	free(*rules);
	*n = 0;
	if ((*rules = calloc(val->n ? val->n : 1, sizeof(**rules))) == NULL) {
		l->oom = true;
		return;
	}
	for (size_t i = 0; i < val->n; i++) {
		const struct ynode *k = val->pairs[i].key, *v = val->pairs[i].val;
		struct conf_hrule *r = &(*rules)[*n];
		size_t mark = path_push(l, k->str);
		const char *s;

		if ((r->name = rule_name(l, k, k->str, k->len)) == NULL) {
			path_pop(l, mark);
			continue;
		}
		/* an empty value is a header like any other */
		s = v->kind == YSCALAR && ynode_is_null(v) ? "" : get_scalar(l, v, "a header value");
		if (s != NULL && (strlen(s) != (v->kind == YSCALAR ? v->len : 0) ||
		    !value_ok(s))) {
			/* a ${VAR} may be a token: never shown */
			lerr(l, v, "header value %s holds CR, LF, NUL or another control "
			    "character (only tab is allowed)",
			    v->expanded ? "(from ${...})" : quote(s, q, sizeof(q)));
			s = NULL;
		}
		if (s == NULL || (r->value = value_dup(s)) == NULL) {
			if (s != NULL)
				l->oom = true;
			free(r->name);
			r->name = NULL;
			path_pop(l, mark);
			continue;
		}
		r->secret = v->expanded;
		(*n)++;
		path_pop(l, mark);
	}
	rules_check_size(l, val, obj, *rules, *n);
}

static bool
rules_name(const struct conf_hrules *r, const char *name)
{
	for (size_t i = 0; i < r->n_remove; i++)
		if (strcmp(r->remove[i], name) == 0)
			return true;
	for (size_t i = 0; i < r->n_set; i++)
		if (strcmp(r->set[i].name, name) == 0)
			return true;
	for (size_t i = 0; i < r->n_add; i++)
		if (strcmp(r->add[i].name, name) == 0)
			return true;
	return false;
}

/* Where compression is on (SPEC §14) ferry writes a header of its own: a
 * service's accept-encoding (its offer, which says what it can decode)
 * and the inbound listener's vary (accept-encoding, on what it
 * compressed); a rule there, of the scope or of defaults, would offer
 * codings ferry cannot decode or let a cache serve a compressed body to
 * a client that cannot read it. OWN: the scope's rules, CZ its
 * compression, AT its key. */
void
check_rules_coding(struct loader *l, const struct ynode *at, const struct conf_headers *own,
    const struct conf_compression *cz, bool inbound)
{
	const struct conf_headers *d = &l->c->default_headers;
	const char *name = inbound ? "vary" : "accept-encoding";
	bool named = inbound ?
	    rules_name(&d->response, name) || rules_name(&own->response, name) :
	    rules_name(&d->request, name) || rules_name(&own->request, name);

	if (cz->n_encodings > 0 && named)
		lerr(l, at, "\"%s\" is managed by compression here (SPEC §14); a header "
		    "rule cannot change it", name);
}

static const struct field hrules_fields[] = {
	{ "remove", fld_remove, 0, 0, 0, NULL },
	{ "set", fld_pairs, offsetof(struct conf_hrules, set),
	  offsetof(struct conf_hrules, n_set), 0, NULL },
	{ "add", fld_pairs, offsetof(struct conf_hrules, add),
	  offsetof(struct conf_hrules, n_add), 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

const struct field headers_fields[] = {
	{ "request", fld_section, offsetof(struct conf_headers, request), 0, 0, hrules_fields },
	{ "response", fld_section, offsetof(struct conf_headers, response), 0, 0, hrules_fields },
	{ NULL, NULL, 0, 0, 0, NULL },
};

void
fld_default_headers(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	(void)f;
	(void)key;
	(void)obj;
	if (want_map(l, val))
		walk_map(l, val, &l->c->default_headers, headers_fields);
}

static void
hrules_free(struct conf_hrules *r)
{
	free_strings(r->remove, r->n_remove);
	for (size_t i = 0; i < r->n_set; i++) {
		free(r->set[i].name);
		free(r->set[i].value);
	}
	free(r->set);
	for (size_t i = 0; i < r->n_add; i++) {
		free(r->add[i].name);
		free(r->add[i].value);
	}
	free(r->add);
	memset(r, 0, sizeof(*r));
}

void
headers_conf_free(struct conf_headers *h)
{
	hrules_free(&h->request);
	hrules_free(&h->response);
}
