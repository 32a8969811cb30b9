#include <stdio.h>

#include "server.h"

int
server_run(struct config *conf, bool log_level_from_cli)
{
	(void)log_level_from_cli;
	fprintf(stderr, "ferry: %s loaded, but serving is not implemented yet\n", conf->path);
	config_unref(conf);
	return 1;
}
