/*
 * libyaml events → struct ynode tree with positions. The event API is used
 * instead of yaml_parser_load() so nesting depth is bounded here (libyaml's
 * loader recurses without a limit) and anchors can only refer to complete
 * nodes (no cycles).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config_yaml.h"

#define YAML_MAX_DEPTH 64
/* nodes that aliases may add to the tree: the walk visits an aliased node
 * at every use, so N uses of an anchor of K nodes cost N*K (a "billion
 * laughs" file of a few KB would take GBs and minutes) */
#define YAML_MAX_ALIASED 100000

struct anchor {
	char *name;
	struct ynode *node;
};

struct frame {
	struct ynode *node;
	struct ynode *key;		/* mapping: key waiting for its value */
	char *anchor;			/* registered when the node ends */
};

struct builder {
	struct ydoc *doc;
	struct frame stack[YAML_MAX_DEPTH];
	size_t depth;
	struct anchor *anchors;
	size_t n_anchors, cap_anchors;
	size_t aliased;			/* nodes added by aliases so far */
	yerr_fn err;
	void *arg;
	const char *buf;
	size_t buflen;
	bool failed;			/* an error was reported */
};

static int
grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t ncap;
	void *np;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 8;
	while (ncap < need)
		ncap *= 2;
	if ((np = realloc(*p, ncap * size)) == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

static struct ynode *
node_new(struct builder *b, enum ykind kind, const yaml_mark_t *m)
{
	struct ydoc *d = b->doc;
	struct ynode *n;

	if (grow((void **)&d->all, &d->cap_all, d->n_all + 1, sizeof(*d->all)) != 0)
		return NULL;
	if ((n = calloc(1, sizeof(*n))) == NULL)
		return NULL;
	n->kind = kind;
	n->weight = 1;
	n->line = (int)m->line + 1;
	n->col = (int)m->column + 1;
	d->all[d->n_all++] = n;
	return n;
}

static void
node_free(struct ynode *n)
{
	free(n->str);
	free(n->items);
	free(n->pairs);
	free(n);
}

void
ydoc_free(struct ydoc *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n_all; i++)
		node_free(d->all[i]);
	free(d->all);
	free(d);
}

static void
report(struct builder *b, int line, int col, const char *problem)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "YAML syntax error: %s", problem);
	b->err(b->arg, line, col, msg);
	b->failed = true;
}

/* Hangs N under the collection being built (or makes it the root). */
static int
attach(struct builder *b, struct ynode *n)
{
	struct frame *f;
	struct ynode *p;

	if (b->depth == 0) {
		b->doc->root = n;
		return 0;
	}
	f = &b->stack[b->depth - 1];
	p = f->node;
	if (p->kind == YSEQ) {
		if (grow((void **)&p->items, &p->cap, p->n + 1, sizeof(*p->items)) != 0)
			return -1;
		if (n->parent == NULL) {	/* not an alias: written here */
			n->parent = p;
			n->pidx = p->n;
		}
		p->items[p->n++] = n;
		return 0;
	}
	if (f->key == NULL) {
		f->key = n;
		if (n->parent == NULL) {
			n->parent = p;
			n->is_key = true;
		}
		return 0;
	}
	if (grow((void **)&p->pairs, &p->cap, p->n + 1, sizeof(*p->pairs)) != 0)
		return -1;
	if (n->parent == NULL) {
		n->parent = p;
		n->pkey = f->key;
	}
	p->pairs[p->n].key = f->key;
	p->pairs[p->n].val = n;
	p->n++;
	f->key = NULL;
	return 0;
}

static int
anchor_add(struct builder *b, char *name, struct ynode *n)
{
	if (name == NULL)
		return 0;
	if (grow((void **)&b->anchors, &b->cap_anchors, b->n_anchors + 1,
	    sizeof(*b->anchors)) != 0) {
		free(name);
		return -1;
	}
	b->anchors[b->n_anchors].name = name;
	b->anchors[b->n_anchors].node = n;
	b->n_anchors++;
	return 0;
}

static char *
dup_anchor(const yaml_char_t *a)
{
	return a ? strdup((const char *)a) : NULL;
}

static int
on_scalar(struct builder *b, const yaml_event_t *ev)
{
	struct ynode *n = node_new(b, YSCALAR, &ev->start_mark);
	size_t len = ev->data.scalar.length;

	if (n == NULL || (n->str = malloc(len + 1)) == NULL)
		return -1;
	memcpy(n->str, ev->data.scalar.value, len);
	n->str[len] = '\0';
	n->len = len;
	n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (attach(b, n) != 0)
		return -1;
	return anchor_add(b, dup_anchor(ev->data.scalar.anchor), n);
}

static int
on_start(struct builder *b, const yaml_event_t *ev, enum ykind kind)
{
	const yaml_char_t *anchor = kind == YMAP ?
	    ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
	struct ynode *n;

	if (b->depth == YAML_MAX_DEPTH) {
		report(b, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
		    "nesting too deep");
		return 1;
	}
	if ((n = node_new(b, kind, &ev->start_mark)) == NULL || attach(b, n) != 0)
		return -1;
	b->stack[b->depth].node = n;
	b->stack[b->depth].key = NULL;
	b->stack[b->depth].anchor = dup_anchor(anchor);
	b->depth++;
	return 0;
}

static int
on_end(struct builder *b)
{
	struct frame *f = &b->stack[--b->depth];
	struct ynode *n = f->node;

	/* complete now: what it holds, aliased nodes counted at full size */
	for (size_t i = 0; i < n->n; i++)
		n->weight += n->kind == YSEQ ? n->items[i]->weight :
		    n->pairs[i].key->weight + n->pairs[i].val->weight;
	/* registered only now, so a node cannot contain an alias of itself */
	return anchor_add(b, f->anchor, f->node);
}

static int
on_alias(struct builder *b, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;

	/* the latest definition wins, as YAML says */
	for (size_t i = b->n_anchors; i-- > 0;) {
		if (strcmp(b->anchors[i].name, name) != 0)
			continue;
		b->aliased += b->anchors[i].node->weight;
		if (b->aliased > YAML_MAX_ALIASED) {
			report(b, (int)ev->start_mark.line + 1,
			    (int)ev->start_mark.column + 1,
			    "aliases expand to too many nodes");
			return 1;
		}
		return attach(b, b->anchors[i].node);
	}
	report(b, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
	    "unknown alias (anchors must be defined before use, outside the node)");
	return 1;
}

/* Line and column of byte OFF, for reader errors that only give an offset. */
static void
offset_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
			(*col)++;
		}
	}
}

static void
report_parser(struct builder *b, const yaml_parser_t *p)
{
	const char *problem = p->problem ? p->problem : "cannot parse";
	int line, col;

	if (p->error == YAML_MEMORY_ERROR) {
		b->err(b->arg, 0, 0, "out of memory");
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		offset_pos(b->buf, b->buflen, p->problem_offset, &line, &col);
	} else {
		line = (int)p->problem_mark.line + 1;
		col = (int)p->problem_mark.column + 1;
	}
	report(b, line, col, problem);
}

/* One event. 0 to go on, 1 at the end or after a reported error, -1 OOM. */
static int
on_event(struct builder *b, const yaml_event_t *ev, int *docs)
{
	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		if (++*docs > 1) {
			report(b, (int)ev->start_mark.line + 1,
			    (int)ev->start_mark.column + 1,
			    "more than one document in the file");
			return 1;
		}
		return 0;
	case YAML_SCALAR_EVENT:
		return on_scalar(b, ev);
	case YAML_SEQUENCE_START_EVENT:
		return on_start(b, ev, YSEQ);
	case YAML_MAPPING_START_EVENT:
		return on_start(b, ev, YMAP);
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		return on_end(b);
	case YAML_ALIAS_EVENT:
		return on_alias(b, ev);
	case YAML_STREAM_END_EVENT:
		return 1;
	default:
		return 0;
	}
}

static int
build(struct builder *b, yaml_parser_t *p)
{
	yaml_event_t ev;
	int docs = 0, rc;

	for (;;) {
		if (!yaml_parser_parse(p, &ev)) {
			report_parser(b, p);
			return -1;
		}
		rc = on_event(b, &ev, &docs);
		yaml_event_delete(&ev);
		if (rc < 0) {
			b->err(b->arg, 0, 0, "out of memory");
			return -1;
		}
		if (rc > 0)
			return b->failed || b->depth != 0 ? -1 : 0;
	}
}

struct ydoc *
ydoc_parse(const char *buf, size_t len, yerr_fn err, void *arg)
{
	struct builder b = { .err = err, .arg = arg, .buf = buf, .buflen = len };
	yaml_parser_t parser;
	yaml_mark_t start = { 0, 0, 0 };
	int rc;

	if ((b.doc = calloc(1, sizeof(*b.doc))) == NULL ||
	    !yaml_parser_initialize(&parser)) {
		free(b.doc);
		err(arg, 0, 0, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	rc = build(&b, &parser);
	yaml_parser_delete(&parser);
	for (size_t i = 0; i < b.n_anchors; i++)
		free(b.anchors[i].name);
	free(b.anchors);
	while (b.depth > 0)
		free(b.stack[--b.depth].anchor);
	if (rc == 0 && b.doc->root == NULL) {
		/* an empty file (or only comments) is an empty document */
		if ((b.doc->root = node_new(&b, YSCALAR, &start)) == NULL ||
		    (b.doc->root->str = strdup("")) == NULL) {
			err(arg, 0, 0, "out of memory");
			rc = -1;
		} else {
			b.doc->root->plain = true;
		}
	}
	if (rc != 0) {
		ydoc_free(b.doc);
		return NULL;
	}
	return b.doc;
}

const struct ynode *
ymap_get(const struct ynode *map, const char *key, const struct ynode **keynode)
{
	if (keynode)
		*keynode = NULL;
	if (map == NULL || map->kind != YMAP)
		return NULL;
	for (size_t i = 0; i < map->n; i++) {
		const struct ynode *k = map->pairs[i].key;

		if (k->kind == YSCALAR && strcmp(k->str, key) == 0) {
			if (keynode)
				*keynode = k;
			return map->pairs[i].val;
		}
	}
	return NULL;
}

bool
ynode_is_null(const struct ynode *n)
{
	return n->kind == YSCALAR && n->plain &&
	    (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
	     strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

const char *
ynode_kind_name(const struct ynode *n)
{
	if (n->kind == YMAP)
		return "a mapping";
	if (n->kind == YSEQ)
		return "a list";
	return ynode_is_null(n) ? "null" : "a scalar";
}

void
ypath_append(char *buf, size_t len, size_t *out, const char *key)
{
	for (const unsigned char *k = (const unsigned char *)key; *k; k++) {
		char esc[5];
		size_t n = 1;

		esc[0] = (char)*k;
		if (*k < 0x20 || *k == 0x7f)
			n = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", *k);
		for (size_t i = 0; i < n; i++, (*out)++)
			if (*out + 1 < len)
				buf[*out] = esc[i];
	}
	if (len > 0)
		buf[*out < len ? *out : len - 1] = '\0';
}

size_t
ynode_path(const struct ynode *n, char *buf, size_t len)
{
	const struct ynode *chain[YAML_MAX_DEPTH + 2];
	size_t depth = 0, out = 0;

	if (n->is_key)
		n = n->parent;
	for (; n != NULL && n->parent != NULL && depth < sizeof(chain) / sizeof(chain[0]);
	    n = n->parent)
		chain[depth++] = n;
	if (len > 0)
		buf[0] = '\0';
	while (depth-- > 0) {
		const struct ynode *c = chain[depth];
		int w;

		if (c->pkey != NULL) {
			if (out)
				ypath_append(buf, len, &out, ".");
			/* a complex key ("? {a: b}") has no text: check_keys
			 * refuses it, and the nodes under it are still named */
			ypath_append(buf, len, &out,
			    c->pkey->kind == YSCALAR ? c->pkey->str : "?");
			continue;
		}
		w = snprintf(buf + (out < len ? out : len),
		    out < len ? len - out : 0, "[%zu]", c->pidx);
		out += (size_t)w;
	}
	return out;
}
