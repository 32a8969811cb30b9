/*
 * compression: (SPEC §14) in defaults, a service or the inbound listener:
 * encodings, min_size, types, level. Inherited key by key from defaults,
 * like the other policies.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "compress.h"
#include "config_priv.h"

void
compression_init(struct conf_compression *c)
{
	static const char *const types[] = {
		"application/json", "text/*", "application/graphql-response+json",
	};

	memset(c, 0, sizeof(*c));
	c->min_size = 1024;
	c->level_zstd = 3;
	c->level_gzip = 1;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		snprintf(c->types[c->n_types++], COMPRESS_TYPE_LEN, "%s", types[i]);
}

static void
fld_encodings(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_compression *c = obj;
	char q[128];

	(void)f;
	(void)key;
	if (!want_seq(l, val))
		return;
	c->n_encodings = 0;
	c->accept[0] = '\0';
	for (size_t i = 0; val->kind == YSEQ && i < val->n; i++) {
		size_t mark = path_push_idx(l, i);
		const char *s = get_scalar(l, val->items[i], "an encoding");
		enum cz_coding k = CZ_IDENTITY;

		if (s != NULL && strcmp(s, "zstd") == 0)
			k = CZ_ZSTD;
		else if (s != NULL && strcmp(s, "gzip") == 0)
			k = CZ_GZIP;
		else if (s != NULL)
			lerr(l, val->items[i], "unknown encoding %s (expected zstd or gzip)",
			    quote(s, q, sizeof(q)));
		for (unsigned j = 0; k != CZ_IDENTITY && j < c->n_encodings; j++)
			if (c->encodings[j] == k) {
				lerr(l, val->items[i], "%s is listed twice", cz_name(k));
				k = CZ_IDENTITY;
			}
		if (k != CZ_IDENTITY) {
			size_t at = strlen(c->accept);

			snprintf(c->accept + at, sizeof(c->accept) - at, "%s%s",
			    at ? ", " : "", cz_name(k));
			c->encodings[c->n_encodings++] = (uint8_t)k;
		}
		path_pop(l, mark);
	}
}

static bool
is_token(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("!#$%&'+-.^_`|~", s[i]) == NULL)
			return false;
	return n > 0;
}

/* "type/subtype", or a type with the subtype "*"; RFC 9110 tokens */
static bool
media_type_ok(const char *s)
{
	const char *slash = strchr(s, '/');

	return slash != NULL && is_token(s, (size_t)(slash - s)) &&
	    (strcmp(slash + 1, "*") == 0 || is_token(slash + 1, strlen(slash + 1)));
}

static void
fld_types(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct conf_compression *c = obj;
	char q[128];

	(void)f;
	(void)key;
	if (!want_seq(l, val))
		return;
	c->n_types = 0;
	for (size_t i = 0; val->kind == YSEQ && i < val->n; i++) {
		size_t mark = path_push_idx(l, i);
		const char *s = get_scalar(l, val->items[i], "a media type");

		if (s == NULL) {
			path_pop(l, mark);
			continue;
		}
		if (c->n_types == COMPRESS_MAX_TYPES)
			lerr(l, val->items[i], "more than %d types", COMPRESS_MAX_TYPES);
		else if (strlen(s) >= COMPRESS_TYPE_LEN || strlen(s) != val->items[i]->len ||
		    !media_type_ok(s))
			lerr(l, val->items[i], "bad media type %s (type/subtype or type/*, "
			    "at most %d characters)", quote(s, q, sizeof(q)),
			    COMPRESS_TYPE_LEN - 1);
		else {
			char *t = c->types[c->n_types++];

			for (size_t j = 0; s[j]; j++)
				t[j] = (char)tolower((unsigned char)s[j]);
			t[strlen(s)] = '\0';
		}
		path_pop(l, mark);
	}
}

static const struct field level_fields[] = {
	{ "zstd", fld_u32, offsetof(struct conf_compression, level_zstd), 1, 19, NULL },
	{ "gzip", fld_u32, offsetof(struct conf_compression, level_gzip), 1, 9, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

const struct field compression_fields[] = {
	{ "encodings", fld_encodings, 0, 0, 0, NULL },
	{ "min_size", fld_size, offsetof(struct conf_compression, min_size), 0, 1 << 30, NULL },
	{ "types", fld_types, 0, 0, 0, NULL },
	{ "level", fld_section, 0, 0, 0, level_fields },
	{ NULL, NULL, 0, 0, 0, NULL },
};
