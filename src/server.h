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
struct worker;
struct ep_runtime;

/* Runs until shutdown; takes the caller's reference to CONF. Returns the
 * process exit code (0 after a clean drain, 1 on a startup failure). */
int server_run(struct config *conf, bool log_level_from_cli);

/* The process-wide runtime state (breakers, buckets, budgets, health). */
struct runtime *server_runtime(struct server *srv);
struct metrics *server_metrics(struct server *srv);
/* The configuration in force, and its admin listener (main thread). */
const struct config *server_config(struct server *srv);
const struct conf_listener *server_admin_conf(struct server *srv);
/* NULL when the access log is off. */
struct accesslog *server_accesslog(struct server *srv);

/* Asks every worker but FROM to close one idle connection to EP (a
 * request in FROM waits at pool.max_per_endpoint). Any thread. */
void server_release_idle(struct server *srv, struct worker *from, struct ep_runtime *ep);

struct server_page {
	int status;
	const char *reason;
	const char *content_type;
};

/* Renders the admin page PATH into BODY; -1 when there is none. */
int server_admin_page(struct server *srv, const char *path, size_t len,
    struct sbuf *body, struct server_page *page);

#endif
