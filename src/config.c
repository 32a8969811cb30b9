/*
 * config_load(): file → YAML tree (config_yaml.c) → checks on the whole
 * tree (${VAR}, duplicate keys) → the walk into struct config (config_walk.c,
 * config_service.c, config_listen.c) → when the tree had the right shape,
 * certificates, keys and checks across keys and sections. Errors are
 * collected all the way through and reported in file order at the end, so
 * one run shows every problem it could find.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config_priv.h"

#define CONFIG_FILE_MAX (16 << 20)
#define WORKERS_DEFAULT_MAX 4

static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };
const char *const conf_scheduling_names[] = { "batch", "normal", NULL };
const char *const conf_affinity_names[] = { "auto", "off", NULL };

/* log.access: "stdout", "off", or a file (relative to the config's dir). */
static void
fld_access(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	char **p = (char **)(void *)((char *)obj + f->off), *s;

	(void)key;
	if (val->kind == YSCALAR && (strcmp(val->str, "stdout") == 0 ||
	    strcmp(val->str, "off") == 0))
		s = get_string(l, val);
	else
		s = get_path(l, val);
	if (s != NULL) {
		free(*p);
		*p = s;
	}
}

static void
fld_nameservers(struct loader *l, const struct field *f, const struct ynode *key,
    const struct ynode *val, void *obj)
{
	struct config *c = obj;
	char q[128];

	(void)f;
	(void)key;
	for (size_t i = 0; i < c->n_nameservers; i++)
		conf_addr_clear(&c->nameservers[i]);
	free(c->nameservers);
	c->nameservers = NULL;
	c->n_nameservers = 0;
	if (!want_seq(l, val) || val->kind != YSEQ || val->n == 0)
		return;
	if ((c->nameservers = calloc(val->n, sizeof(*c->nameservers))) == NULL) {
		l->oom = true;
		return;
	}
	for (size_t i = 0; i < val->n; i++) {
		struct conf_addr *a = &c->nameservers[c->n_nameservers];
		size_t mark = path_push_idx(l, i);

		if (get_addr(l, val->items[i], a, false) == 0) {
			if (a->is_ip) {
				c->n_nameservers++;
			} else {
				lerr(l, val->items[i], "bad address %s (a nameserver needs "
				    "an IP address)", quote(a->text, q, sizeof(q)));
				conf_addr_clear(a);
			}
		}
		path_pop(l, mark);
	}
}

static const struct field log_fields[] = {
	{ "level", fld_enum, offsetof(struct config, log_level), 0, 0, level_names },
	{ "access", fld_access, offsetof(struct config, log_access), 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

static const struct field resolver_fields[] = {
	{ "nameservers", fld_nameservers, 0, 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* defaults, listeners and services are loaded after the walk, in that
 * order, because services and inbound start from the parsed defaults. */
static const struct field root_fields[] = {
	{ "workers", fld_u32, offsetof(struct config, workers), 1, 1024, NULL },
	{ "scheduling", fld_enum, offsetof(struct config, scheduling), 0, 0,
	  conf_scheduling_names },
	{ "cpu_affinity", fld_enum, offsetof(struct config, cpu_affinity), 0, 0,
	  conf_affinity_names },
	{ "log", fld_section, 0, 0, 0, log_fields },
	{ "drain_delay", fld_duration, offsetof(struct config, drain_delay), 0, 0, NULL },
	{ "drain_timeout", fld_duration, offsetof(struct config, drain_timeout), 0, 0, NULL },
	{ "watch", fld_bool, offsetof(struct config, watch), 0, 0, NULL },
	{ "resolver", fld_section, 0, 0, 0, resolver_fields },
	{ "listeners", fld_skip, 0, 0, 0, NULL },
	{ "defaults", fld_skip, 0, 0, 0, NULL },
	{ "services", fld_skip, 0, 0, 0, NULL },
	{ "tracing", fld_tracing, 0, 0, 0, NULL },
	{ NULL, NULL, 0, 0, 0, NULL },
};

/* CPUs allowed by the cgroup v2 cpu.max quotas of our cgroup and its
 * parents (rounded up); 0 when there is no limit or it cannot be read. */
static long
cgroup_cpus(void)
{
	char line[512], dir[700], file[800], *p;
	long best = 0, quota, period;
	FILE *f;

	if ((f = fopen("/proc/self/cgroup", "re")) == NULL)
		return 0;
	dir[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", line + 3);
			break;
		}
	}
	fclose(f);
	while (dir[0] != '\0') {
		snprintf(file, sizeof(file), "%s/cpu.max", dir);
		if ((f = fopen(file, "re")) != NULL) {
			if (fscanf(f, "%ld %ld", &quota, &period) == 2 && quota > 0 &&
			    period > 0 && (best == 0 || (quota + period - 1) / period < best))
				best = (quota + period - 1) / period;
			fclose(f);
		}
		if (strcmp(dir, "/sys/fs/cgroup") == 0 || (p = strrchr(dir, '/')) == NULL)
			break;
		*p = '\0';
	}
	return best;
}

uint32_t
config_default_workers(void)
{
	cpu_set_t set;
	long n = 0, q;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if ((q = cgroup_cpus()) > 0 && q < n)
		n = q;
	if (n > WORKERS_DEFAULT_MAX)
		n = WORKERS_DEFAULT_MAX;
	return n < 1 ? 1 : (uint32_t)n;
}

/* "dir/" of PATH, or "" when it has no directory part. */
static char *
dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup("");
	return strndup(path, (size_t)(slash - path) + 1);
}

static char *
read_file(const char *path, size_t *len)
{
	size_t cap = 8192, n = 0;
	char *buf = NULL, *nb;
	ssize_t r;
	int fd, saved;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return NULL;
	for (;;) {
		if (buf == NULL || n == cap) {
			if (buf != NULL && (cap *= 2) > CONFIG_FILE_MAX) {
				errno = EFBIG;
				goto fail;
			}
			if ((nb = realloc(buf, cap)) == NULL)
				goto fail;
			buf = nb;
		}
		if ((r = read(fd, buf + n, cap - n)) < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
fail:
	saved = errno;
	free(buf);
	close(fd);
	errno = saved;
	return NULL;
}

static void
yaml_error(void *arg, int line, int col, const char *msg)
{
	lerr_at(arg, line, col, msg);
}

/* ${VAR} in every scalar, then NUL bytes; failures are marked bad so the
 * walk does not report them a second time. */
static void
check_scalar(struct loader *l, struct ynode *n)
{
	char path[1024], err[512], *out;

	if (strlen(n->str) != n->len) {
		ynode_path(n, path, sizeof(path));
		lerr_path(l, n, path, "NUL byte in value");
		n->bad = true;
		return;
	}
	if (expand_vars(n->str, &out, err, sizeof(err)) != 0) {
		ynode_path(n, path, sizeof(path));
		lerr_path(l, n, path, "%s", err);
		n->bad = true;
		return;
	}
	if (out != NULL) {
		free(n->str);
		n->str = out;
		n->len = strlen(out);
		n->plain = false;	/* an expanded value is text, never null */
		n->expanded = true;
	}
}

static void
check_keys(struct loader *l, const struct ynode *map)
{
	char path[1024], q[128];

	ynode_path(map, path, sizeof(path));
	for (size_t i = 0; i < map->n; i++) {
		const struct ynode *k = map->pairs[i].key;

		if (k->kind != YSCALAR) {
			lerr_path(l, k, path, "a mapping key must be a scalar");
			l->n_shape++;
			continue;
		}
		for (size_t j = 0; j < i; j++) {
			const struct ynode *o = map->pairs[j].key;

			if (o->kind != YSCALAR || strcmp(o->str, k->str) != 0)
				continue;
			lerr_path(l, k, path, "duplicate %s %s",
			    strcmp(path, "services") == 0 ? "service" : "key",
			    quote(k->str, q, sizeof(q)));
			l->n_shape++;
			break;
		}
	}
}

/* Checks on every node, including the ones the walk would not visit. */
static void
check_tree(struct loader *l, struct ydoc *doc)
{
	/* keys are names, never expanded */
	for (size_t i = 0; i < doc->n_all; i++)
		if (doc->all[i]->kind == YSCALAR && !doc->all[i]->is_key)
			check_scalar(l, doc->all[i]);
	for (size_t i = 0; i < doc->n_all; i++)
		if (doc->all[i]->kind == YMAP)
			check_keys(l, doc->all[i]);
}

static void
load_root(struct loader *l, const struct ynode *root)
{
	const struct ynode *defaults, *listeners, *services, *tracing;

	if (root->kind != YMAP && !ynode_is_null(root)) {
		lerr(l, root, "expected a mapping at the top level, got %s",
		    ynode_kind_name(root));
		return;
	}
	walk_map(l, root, l->c, root_fields);
	defaults = ymap_get(root, "defaults", NULL);
	listeners = ymap_get(root, "listeners", NULL);
	services = ymap_get(root, "services", NULL);
	tracing = ymap_get(root, "tracing", NULL);
	if (defaults != NULL)
		load_defaults(l, defaults);
	if (listeners != NULL)
		load_listeners(l, listeners);
	if (services != NULL)
		load_services(l, services);
	/*
	 * The checks look nodes up again by name and trust that the struct
	 * holds what those nodes said: with a key twice, or a list where a
	 * mapping belongs, the two part ways (a NULL where a value was
	 * reported). A file of the wrong shape is not what its author meant
	 * either, so its keys and certificates are not read at all.
	 */
	if (l->n_shape > 0 || l->oom)
		return;
	if (defaults != NULL)
		check_defaults(l, defaults);
	if (listeners != NULL)
		check_inbound(l, listeners);
	if (services != NULL)
		check_services(l, services);
	if (tracing != NULL)
		check_tracing(l, tracing);
	check_listeners(l);
}

static int
err_cmp(const void *a, const void *b)
{
	const struct conf_err *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reports in file order; the same line twice (a shared alias) once. */
static void
emit_errors(struct loader *l, config_error_fn fn, void *arg)
{
	char *line, *prev = NULL;

	if (l->n_errs > 0)
		qsort(l->errs, l->n_errs, sizeof(*l->errs), err_cmp);
	for (size_t i = 0; i < l->n_errs; i++) {
		struct conf_err *e = &l->errs[i];
		int n;

		if (e->line > 0)
			n = asprintf(&line, "%s:%d:%d: %s", l->file, e->line, e->col, e->msg);
		else
			n = asprintf(&line, "%s: %s", l->file, e->msg);
		if (n < 0)
			break;
		if (prev == NULL || strcmp(prev, line) != 0)
			fn(arg, line);
		free(prev);
		prev = line;
	}
	free(prev);
	if (l->oom)
		fn(arg, "out of memory while loading the configuration");
}

static void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	free(c->path);
	free(c->log_access);
	for (size_t i = 0; i < c->n_nameservers; i++)
		conf_addr_clear(&c->nameservers[i]);
	free(c->nameservers);
	conf_addr_clear(&c->outbound.address);
	conf_addr_clear(&c->admin.address);
	free_strings(c->admin_hosts, c->n_admin_hosts);
	inbound_free(&c->inbound);
	headers_conf_free(&c->default_headers);
	tracing_conf_free(&c->tracing);
	for (size_t i = 0; i < c->n_services; i++)
		service_free(&c->services[i]);
	free(c->services);
	free(c);
}

static struct config *
config_new(struct loader *l, const char *path)
{
	struct config *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	atomic_init(&c->refs, 1);
	l->c = c;
	c->path = strdup(path);
	c->log_access = strdup("stdout");
	c->log_level = LOG_INFO;
	c->drain_delay = 5000;
	c->drain_timeout = 30000;
	c->workers = 0;		/* resolved after loading */
	c->scheduling = CONF_SCHED_BATCH;
	c->cpu_affinity = CONF_AFFINITY_AUTO;
	listeners_init(l);
	if (c->path == NULL || c->log_access == NULL || l->oom) {
		config_free(c);
		return NULL;
	}
	return c;
}

struct config *
config_load(const char *path, config_error_fn err, void *arg)
{
	struct loader l;
	struct ydoc *doc = NULL;
	char *buf = NULL;
	size_t len = 0;
	bool failed;

	memset(&l, 0, sizeof(l));
	l.file = path;
	defaults_init(&l.defaults);
	if ((l.dir = dir_of(path)) == NULL || config_new(&l, path) == NULL) {
		err(arg, "out of memory while loading the configuration");
		free(l.dir);
		return NULL;
	}
	if ((buf = read_file(path, &len)) == NULL) {
		char msg[256];

		snprintf(msg, sizeof(msg), "cannot read: %s", strerror(errno));
		lerr_at(&l, 0, 0, msg);
	} else if ((doc = ydoc_parse(buf, len, yaml_error, &l)) != NULL) {
		check_tree(&l, doc);
		load_root(&l, doc->root);
	}
	if (l.c->workers == 0)
		l.c->workers = config_default_workers();
	failed = l.n_errs > 0 || l.oom || doc == NULL;
	emit_errors(&l, err, arg);
	for (size_t i = 0; i < l.n_errs; i++)
		free(l.errs[i].msg);
	free(l.errs);
	ydoc_free(doc);
	free(buf);
	free(l.dir);
	if (failed) {
		config_free(l.c);
		return NULL;
	}
	return l.c;
}

struct config *
config_ref(struct config *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

void
config_unref(struct config *c)
{
	if (c == NULL)
		return;
	/* acq_rel: the freeing thread must see every other user's writes done */
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		config_free(c);
}

/* Routing names: blanks around a header value, the port ("[::1]:80" →
 * "::1", "a:80" → "a") and a final dot of an absolute name are ignored. */
static void
strip_host(const char **name, size_t *len)
{
	const char *s = *name, *end;
	size_t n = *len;

	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	*name = s;
	*len = n;
	if (n > 0 && s[0] == '[') {
		if ((end = memchr(s, ']', n)) != NULL) {
			*name = s + 1;
			*len = (size_t)(end - s - 1);
		}
		return;
	}
	if ((end = memchr(s, ':', n)) != NULL &&
	    memchr(end + 1, ':', n - (size_t)(end - s) - 1) == NULL)
		n = (size_t)(end - s);
	if (n > 0 && s[n - 1] == '.')
		n--;
	*len = n;
}

static bool
name_eq(const char *a, const char *b, size_t len)
{
	size_t alen = strlen(a);

	if (alen > 0 && a[alen - 1] == '.')
		alen--;
	return alen == len && strncasecmp(a, b, len) == 0;
}

const struct conf_service *
config_service_by_name(const struct config *c, const char *name, size_t len)
{
	strip_host(&name, &len);
	if (len == 0)
		return NULL;
	for (size_t i = 0; i < c->n_services; i++) {
		const struct conf_service *s = &c->services[i];

		if (name_eq(s->name, name, len))
			return s;
		for (size_t h = 0; h < s->n_hosts; h++)
			if (name_eq(s->hosts[h], name, len))
				return s;
	}
	return NULL;
}

/* The port of a Host: digits, possibly none ("host:" is valid). */
static bool
port_digits(const char *p, size_t n)
{
	if (n > 5)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

/*
 * DNS rebinding: a page of evil.example whose name is then pointed at
 * 127.0.0.1 may read the admin pages as its own origin, but the browser
 * still sends Host: evil.example. Rebinding needs a name to re-point, so an
 * IP literal Host is never one: any is accepted (Kubernetes probes send
 * the pod IP), as is localhost, which resolves on this host. Other names
 * must be listed in listeners.admin.hosts.
 */
bool
config_admin_host_ok(const struct config *c, const char *host, size_t len)
{
	char name[256], ip6[INET6_ADDRSTRLEN + 1];
	const char *port = NULL, *end;
	unsigned char sa[sizeof(struct in6_addr)];
	size_t n, plen = 0;

	while (len > 0 && (*host == ' ' || *host == '\t')) {
		host++;
		len--;
	}
	while (len > 0 && (host[len - 1] == ' ' || host[len - 1] == '\t'))
		len--;
	if (len > 0 && host[0] == '[') {
		if ((end = memchr(host, ']', len)) == NULL ||
		    (n = (size_t)(end - host - 1)) >= sizeof(ip6))
			return false;
		memcpy(ip6, host + 1, n);
		ip6[n] = '\0';
		if (end + 1 != host + len && (end[1] != ':' ||
		    !port_digits(end + 2, (size_t)(host + len - end - 2))))
			return false;
		return inet_pton(AF_INET6, ip6, sa) == 1;
	}
	if ((end = memchr(host, ':', len)) != NULL) {
		port = end + 1;
		plen = len - (size_t)(port - host);
		len = (size_t)(end - host);
		if (!port_digits(port, plen))
			return false;
	}
	if (len == 0 || len >= sizeof(name))
		return false;
	memcpy(name, host, len);
	name[len] = '\0';
	if (inet_pton(AF_INET, name, sa) == 1)
		return true;
	if (name[len - 1] == '.')
		name[--len] = '\0';
	if (strcasecmp(name, "localhost") == 0)
		return true;
	for (size_t i = 0; i < c->n_admin_hosts; i++) {
		const char *h = c->admin_hosts[i], *hp = strchr(h, ':');
		size_t hn = hp ? (size_t)(hp - h) : strlen(h);

		if (hn > 0 && h[hn - 1] == '.')
			hn--;
		if (hn != len || strncasecmp(h, name, len) != 0)
			continue;
		/* an entry with a port takes only that port */
		if (hp == NULL || (port != NULL && plen == strlen(hp + 1) &&
		    memcmp(port, hp + 1, plen) == 0))
			return true;
	}
	return false;
}
