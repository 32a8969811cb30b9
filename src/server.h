/*
 * The running daemon: admin listener, workers, signals, reload and drain.
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stdbool.h>

#include "config.h"

/* Runs until shutdown; takes the caller's reference to CONF. Returns the
 * process exit code (0 after a clean drain, 1 on a startup failure). */
int server_run(struct config *conf, bool log_level_from_cli);

#endif
