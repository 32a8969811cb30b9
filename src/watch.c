#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "watch.h"

#define DEBOUNCE_MS 250
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | \
	IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)

struct wdir {
	int wd;
	char *path;
};

struct watch {
	int fd;
	struct event *ev, *debounce;
	struct wdir *dirs;
	size_t n_dirs;
	char **names;			/* base names of the files that matter */
	size_t n_names;
	void (*changed)(void *arg);
	void *arg;
};

static void
clear(struct watch *w)
{
	for (size_t i = 0; i < w->n_dirs; i++) {
		inotify_rm_watch(w->fd, w->dirs[i].wd);
		free(w->dirs[i].path);
	}
	free(w->dirs);
	w->dirs = NULL;
	w->n_dirs = 0;
	for (size_t i = 0; i < w->n_names; i++)
		free(w->names[i]);
	free(w->names);
	w->names = NULL;
	w->n_names = 0;
}

static int
add_file(struct watch *w, const char *file)
{
	char dbuf[PATH_MAX], bbuf[PATH_MAX], *dir, *base, **names;
	struct wdir *dirs;
	int wd;

	if (file == NULL || strlen(file) >= PATH_MAX)
		return 0;
	strcpy(dbuf, file);
	strcpy(bbuf, file);
	dir = dirname(dbuf);
	base = basename(bbuf);
	if ((names = realloc(w->names, (w->n_names + 1) * sizeof(*names))) == NULL)
		return -1;
	w->names = names;
	if ((w->names[w->n_names] = strdup(base)) == NULL)
		return -1;
	w->n_names++;
	for (size_t i = 0; i < w->n_dirs; i++)
		if (strcmp(w->dirs[i].path, dir) == 0)
			return 0;
	if ((wd = inotify_add_watch(w->fd, dir, WATCH_MASK)) < 0) {
		log_warn("watch %s: %s", dir, strerror(errno));
		return 0;
	}
	if ((dirs = realloc(w->dirs, (w->n_dirs + 1) * sizeof(*dirs))) == NULL)
		return -1;
	w->dirs = dirs;
	w->dirs[w->n_dirs].wd = wd;
	if ((w->dirs[w->n_dirs].path = strdup(dir)) == NULL)
		return -1;
	w->n_dirs++;
	return 0;
}

int
watch_set(struct watch *w, const struct config *c)
{
	int bad = 0;

	clear(w);
	bad |= add_file(w, c->path);
	if (c->inbound.enabled) {
		bad |= add_file(w, c->inbound.cert);
		bad |= add_file(w, c->inbound.key);
		bad |= add_file(w, c->inbound.client_ca);
		bad |= add_file(w, c->inbound.auth_keys_file);
	}
	for (size_t i = 0; i < c->n_services; i++) {
		const struct conf_service *s = &c->services[i];

		bad |= add_file(w, s->tls.ca);
		bad |= add_file(w, s->tls.cert);
		bad |= add_file(w, s->tls.key);
		bad |= add_file(w, s->auth_key_file);
	}
	return bad ? -1 : 0;
}

static bool
interesting(const struct watch *w, const char *name)
{
	/* Kubernetes swaps a "..data" symlink (and "..2026_..." dirs) */
	if (name[0] == '.' && name[1] == '.')
		return true;
	for (size_t i = 0; i < w->n_names; i++)
		if (strcmp(w->names[i], name) == 0)
			return true;
	return false;
}

static void
fire(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;

	(void)fd;
	(void)what;
	log_info("watched files changed; reloading");
	w->changed(w->arg);
}

static void
readable(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool hit = false;
	ssize_t n;

	(void)what;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *e = (const struct inotify_event *)p;

			/* IN_IGNORED: a watch we removed ourselves (re-arming
			 * after a reload), not a change */
			if (!(e->mask & IN_IGNORED) && (e->len == 0 ||
			    interesting(w, e->name) ||
			    (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF))))
				hit = true;
			p += sizeof(*e) + e->len;
		}
	}
	if (hit) {
		const struct timeval tv = { 0, DEBOUNCE_MS * 1000 };

		event_add(w->debounce, &tv);	/* (re)starts the quiet period */
	}
}

struct watch *
watch_new(struct event_base *base, void (*changed)(void *arg), void *arg)
{
	struct watch *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->changed = changed;
	w->arg = arg;
	if ((w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
		log_error("inotify: %s", strerror(errno));
		free(w);
		return NULL;
	}
	w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, readable, w);
	w->debounce = evtimer_new(base, fire, w);
	if (w->ev == NULL || w->debounce == NULL) {
		watch_free(w);
		return NULL;
	}
	event_add(w->ev, NULL);
	return w;
}

void
watch_free(struct watch *w)
{
	if (w == NULL)
		return;
	clear(w);
	if (w->ev)
		event_free(w->ev);
	if (w->debounce)
		event_free(w->debounce);
	close(w->fd);
	free(w);
}
