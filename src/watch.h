/*
 * watch: true (SPEC §3, §10): the directories of the config file and of
 * every certificate, key and keys file it names are watched with inotify,
 * so an editor's rename, a Kubernetes ConfigMap or Secret symlink swap
 * ("..data") or cert-manager's renewal triggers a reload. Changes are
 * debounced: a burst of events makes one reload.
 */
#ifndef FERRY_WATCH_H
#define FERRY_WATCH_H

#include <event2/event.h>

#include "config.h"

struct watch;

struct watch *watch_new(struct event_base *base, void (*changed)(void *arg), void *arg);
/* Watches what CONF names (again, after a reload). -1 when inotify fails. */
int watch_set(struct watch *w, const struct config *conf);
void watch_free(struct watch *w);

#endif
