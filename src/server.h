/*
 * The running daemon: admin listener, workers, DNS, signals, drain.
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "sbuf.h"

struct server;

/* Runs until shutdown; takes the caller's reference to CONF. Returns the
 * process exit code (0 after a clean drain, 1 on a startup failure). */
int server_run(struct config *conf, bool log_level_from_cli);

/* The configuration in force, and its admin listener (main thread). */
const struct config *server_config(struct server *srv);
const struct conf_listener *server_admin_conf(struct server *srv);


struct server_page {
	int status;
	const char *reason;
	const char *content_type;
};

/* Renders the admin page PATH into BODY; -1 when there is none. */
int server_admin_page(struct server *srv, const char *path, size_t len,
    struct sbuf *body, struct server_page *page);

#endif
