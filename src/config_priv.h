/*
 * Inside the configuration loader: the loading context, error collection
 * and the table-driven walk over the YAML tree shared by config*.c.
 */
#ifndef FERRY_CONFIG_PRIV_H
#define FERRY_CONFIG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "config_yaml.h"

/* Longest duration accepted anywhere: keeps now + timeout far from overflow. */
#define DURATION_MAX_MS (100000LL * 3600000LL)	/* 100000h */

/* config_value.c */
bool valid_dns_name(const char *s, size_t len);
int expand_vars(const char *in, char **out, char *err, size_t errlen);

struct conf_err {
	int line, col;		/* 0 when no position applies */
	size_t seq;		/* report order, to keep the sort stable */
	char *msg;
};

struct loader {
	const char *file;		/* config path as given */
	char *dir;			/* its directory with a trailing '/', or "" */
	struct config *c;
	struct conf_err *errs;
	size_t n_errs, cap_errs;
	bool oom;
	/* errors in the file's structure: a duplicate or non-scalar key, an
	 * unknown key, a node of the wrong kind. After one, nothing is loaded
	 * from files or checked across keys (see load_root). */
	size_t n_shape;
	size_t inbound_errs;		/* found by the walk in listeners.inbound */
	char path[1024];		/* key path of the node being walked */
	size_t pathlen;
	struct conf_service defaults;	/* policies every service starts from */
};

/* Errors: "PATH: message" at node AT (path omitted when empty). */
void lerr(struct loader *l, const struct ynode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lerr_path(struct loader *l, const struct ynode *at, const char *path,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* A message at a position, used verbatim. */
void lerr_at(struct loader *l, int line, int col, const char *msg);

/* The key path: push returns a mark for pop. */
size_t path_push(struct loader *l, const char *seg);
size_t path_push_idx(struct loader *l, size_t i);
void path_pop(struct loader *l, size_t mark);

/* Quotes S for a message: escapes control bytes, cuts long values. */
const char *quote(const char *s, char *buf, size_t len);

/*
 * Table-driven walk: each known key of a mapping has a handler that stores
 * into OBJ + off. Unknown keys are errors at the key.
 */
struct field;
typedef void (*field_fn)(struct loader *l, const struct field *f,
    const struct ynode *key, const struct ynode *val, void *obj);

struct field {
	const char *key;
	field_fn fn;
	size_t off;
	int64_t min, max;	/* ranges for numbers and durations */
	const void *aux;	/* sub-table of fld_section, names of fld_enum */
};

/* true for a mapping; null counts as an empty one; else reports. */
bool want_map(struct loader *l, const struct ynode *val);
/* true for a list; null counts as an empty one; else reports. */
bool want_seq(struct loader *l, const struct ynode *val);
void walk_map(struct loader *l, const struct ynode *val, void *obj,
    const struct field *fields);
/* The text of a scalar, or NULL after reporting (WHAT: "a duration"). */
const char *get_scalar(struct loader *l, const struct ynode *val, const char *what);
/* A non-empty string copy, or NULL after reporting. */
char *get_string(struct loader *l, const struct ynode *val);
/* A file path, resolved against the config file's directory. */
char *get_path(struct loader *l, const struct ynode *val);
/* An address; LISTEN requires an IP literal or localhost. 0 or -1. */
int get_addr(struct loader *l, const struct ynode *val, struct conf_addr *a,
    bool listen);
/* A list of non-empty strings; CHECK (may be NULL) vets each one. */
char **get_strings(struct loader *l, const struct ynode *val, size_t *n,
    bool (*check)(struct loader *, const struct ynode *, const char *));
void free_strings(char **v, size_t n);

/* Handlers for struct field. Stored types: fld_duration int64_t (ms),
 * fld_size uint64_t, fld_u32 uint32_t, fld_double double (min/max are
 * whole numbers), fld_bool bool, fld_string/fld_path char *, fld_enum int
 * (aux: NULL-terminated names, the index is stored). */
void fld_duration(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_size(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_u32(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_double(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_bool(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_string(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_path(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_section(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_enum(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void fld_skip(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);

/* Header rules (config_headers.c): the headers: section of a service or
 * the inbound listener; defaults.headers into the config's own. */
extern const struct field headers_fields[];
void fld_default_headers(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void headers_conf_free(struct conf_headers *h);
void check_rules_coding(struct loader *l, const struct ynode *at,
    const struct conf_headers *own, const struct conf_compression *cz, bool inbound);

/* compression: (config_compress.c), and its defaults */
extern const struct field compression_fields[];
void compression_init(struct conf_compression *c);

/* Sections shared by defaults, services and the inbound listener. */
extern const struct field timeouts_fields[];
extern const struct field rate_limit_fields[];
void fld_rate_limit(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);

/*
 * Loading runs in two phases. load_*: the walk, which only parses values
 * into the struct; check_*: what reads certificates and keys and checks
 * keys against each other, going back to the tree by name, run only on a
 * tree of the right shape (no n_shape error).
 */

/* config_service.c */
void defaults_init(struct conf_service *d);
void load_defaults(struct loader *l, const struct ynode *val);
void check_defaults(struct loader *l, const struct ynode *val);
void load_services(struct loader *l, const struct ynode *val);
void check_services(struct loader *l, const struct ynode *val);
void check_timeouts(struct loader *l, const struct conf_timeouts *t,
    const struct ynode *node);
void service_free(struct conf_service *s);

/* config_secret.c: keys and files; nothing here ever prints a key. */
char *secret_from_env(struct loader *l, const struct ynode *at, const char *name);
char *secret_from_file(struct loader *l, const struct ynode *at, const char *file);
int secrets_from_keys_file(struct loader *l, const struct ynode *at,
    const char *file, char ***keys, size_t *n);
void secret_free(char *s);

/* config_service.c: a client tls: section (ca, cert, key, server_name,
 * verify_san, min_version) into the struct conf_tls_client at OFF */
void fld_tls(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);

/* config_tracing.c: tracing: (SPEC §13) */
void fld_tracing(struct loader *, const struct field *, const struct ynode *,
    const struct ynode *, void *);
void check_tracing(struct loader *l, const struct ynode *node);
void tracing_conf_free(struct conf_tracing *t);

/* config_listen.c */
void listeners_init(struct loader *l);
void load_listeners(struct loader *l, const struct ynode *val);
void check_inbound(struct loader *l, const struct ynode *listeners);
void check_listeners(struct loader *l);
void inbound_free(struct conf_inbound *in);

#endif
