/*
 * ferry: command line (SPEC §2), then hand over to the server.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "blocks.h"
#include "clean_maps.h"
#include "config.h"
#include "h2_mem.h"
#include "log.h"
#include "server.h"

#define DEFAULT_CONFIG "/etc/ferry/ferry.yaml"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: ferry [-c FILE] [-t] [-l LEVEL] [-V] [-h]\n"
	    "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
	    "  -t, --check         validate FILE, print \"FILE: ok\" and exit\n"
	    "  -l, --log-level L   error|warn|info|debug (overrides log.level)\n"
	    "  -V, --version       print the version and exit\n"
	    "  -h, --help          this help\n");
}

/*
 * ferry's memory holds private keys, ticket keys and service keys: no core
 * file, and no ptrace or /proc/PID/mem access by other processes of the
 * same user. FERRY_DUMPABLE=1 keeps the default, for debugging a crash.
 */
static void
no_core_dumps(void)
{
	const char *v = getenv("FERRY_DUMPABLE");

	if (v != NULL && strcmp(v, "1") == 0)
		return;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		fprintf(stderr, "ferry: prctl PR_SET_DUMPABLE: %s\n", strerror(errno));
}

static void
print_config_error(void *arg, const char *line)
{
	(void)arg;
	fprintf(stderr, "%s\n", line);
}

/* The main thread's spares (admin, health checks) go back to malloc at
 * exit, after OpenSSL's own cleanup has freed into them: a leak checker
 * sees no block kept. */
static void
main_caches_end(void)
{
	h2_mem_thread_end();
	blocks_thread_end();
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 't' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = DEFAULT_CONFIG;
	const char *level_arg = NULL;
	bool check_only = false;
	enum log_level level;
	struct config *conf;
	int ch;

	/* before OpenSSL's first use: its cleanup at exit runs first */
	atexit(main_caches_end);
	/* before OpenSSL's first allocation, or it keeps its own */
	(void)blocks_hook_openssl();
	clean_maps_init();	/* while /proc/self is still ours */
	no_core_dumps();	/* before any key is read */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:tl:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'l':
			level_arg = optarg;
			break;
		case 'V':
			printf("ferry %s\n", FERRY_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			fprintf(stderr, "ferry: option %s needs an argument\n", argv[optind - 1]);
			return 2;
		default:
			if (optopt)
				fprintf(stderr, "ferry: unknown option -%c (see ferry -h)\n", optopt);
			else
				fprintf(stderr, "ferry: unknown option %s (see ferry -h)\n", argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ferry: unexpected argument %s (see ferry -h)\n", argv[optind]);
		return 2;
	}
	if (level_arg && parse_log_level(level_arg, &level) != 0) {
		fprintf(stderr, "ferry: bad log level %s (error|warn|info|debug)\n", level_arg);
		return 2;
	}
	if (access(path, F_OK) != 0) {
		fprintf(stderr, "ferry: config file %s: %s\n", path, strerror(errno));
		return 2;
	}

	conf = config_load(path, print_config_error, NULL);
	if (conf == NULL)
		return 1;
	if (check_only) {
		printf("%s: ok\n", path);
		config_unref(conf);
		return 0;
	}
	log_set_level(level_arg ? level : conf->log_level);
	return server_run(conf, level_arg != NULL);
}
