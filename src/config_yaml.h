/*
 * A YAML document as a small tree with the 1-based line and column of
 * every node, so configuration errors can point at the offending node.
 * Aliases share the anchored node (no copies, so no "billion laughs").
 */
#ifndef FERRY_CONFIG_YAML_H
#define FERRY_CONFIG_YAML_H

#include <stdbool.h>
#include <stddef.h>

enum ykind { YSCALAR, YMAP, YSEQ };

struct ypair {
	struct ynode *key, *val;
};

struct ynode {
	enum ykind kind;
	int line, col;			/* 1-based */
	bool plain;			/* a plain (unquoted) scalar */
	bool is_key;			/* used as a mapping key */
	bool bad;			/* already reported as wrong: skip it */
	bool expanded;			/* str came from ${VAR} expansion */
	char *str;			/* scalar text, NUL-terminated */
	size_t len;			/* its length; may hold NUL bytes */
	struct ynode **items;		/* YSEQ: n items */
	struct ypair *pairs;		/* YMAP: n pairs, in file order */
	size_t n, cap;
	/* where the node was written, for key paths in messages */
	const struct ynode *parent;
	const struct ynode *pkey;	/* its key when parent is a mapping */
	size_t pidx;			/* its index when parent is a sequence */
	size_t weight;			/* nodes in it, itself and aliases included */
};

struct ydoc {
	struct ynode *root;		/* a null scalar for an empty file */
	struct ynode **all;		/* every node in file order; owned */
	size_t n_all, cap_all;
};

/* Receives parse errors; line and col are 1-based (0 when unknown). */
typedef void (*yerr_fn)(void *arg, int line, int col, const char *msg);

/* Parses one document. NULL after a YAML syntax error (reported through
 * ERR as "YAML syntax error: ...") or when out of memory. */
struct ydoc *ydoc_parse(const char *buf, size_t len, yerr_fn err, void *arg);
void ydoc_free(struct ydoc *d);

/* The value under KEY in MAP (first one), with its key node in *keynode. */
const struct ynode *ymap_get(const struct ynode *map, const char *key,
    const struct ynode **keynode);

/* An empty plain scalar, "~" or "null". */
bool ynode_is_null(const struct ynode *n);

/* "a mapping", "a list", "a scalar" or "null", for type errors. */
const char *ynode_kind_name(const struct ynode *n);

/* Dotted key path where N was written ("services.a.endpoints[1]"); "" for
 * the root. Returns the length it needed. */
/* Appends KEY to the path in BUF (LEN bytes; *OUT bytes used, or wanted
 * when it did not fit), any control byte as \xNN: a path in an error
 * message stays on one line whatever the file's keys hold. */
void ypath_append(char *buf, size_t len, size_t *out, const char *key);
size_t ynode_path(const struct ynode *n, char *buf, size_t len);

#endif
