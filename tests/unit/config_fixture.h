/*
 * Shared by the configuration unit tests: one mkdtemp() directory with test
 * certificates (made with the openssl command), key files, and a loader
 * that collects every error line with that directory shown as "D".
 */
#ifndef FERRY_TEST_CONFIG_FIXTURE_H
#define FERRY_TEST_CONFIG_FIXTURE_H

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "config.h"
#include "tls_ctx.h"

#define F "D/ferry.yaml"
#define SECRET "s3cr3t-Value-Never-Printed"
#define FILE_SECRET "file-Secret-Never-Printed"

static char dir[256];
static char cfgpath[320];
static char errs[65536];
static int nerrs;

/* Appends LINE with the temp directory shown as "D". */
static __attribute__((unused)) void
collect(void *arg, const char *line)
{
	size_t dl = strlen(dir), o = strlen(errs);

	(void)arg;
	nerrs++;
	while (*line != '\0' && o + 2 < sizeof(errs)) {
		if (strncmp(line, dir, dl) == 0) {
			errs[o++] = 'D';
			line += dl;
		} else {
			errs[o++] = *line++;
		}
	}
	errs[o++] = '\n';
	errs[o] = '\0';
}

static __attribute__((unused)) void
write_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	/* also used before the tests run, so no ck_assert here */
	if ((f = fopen(path, "w")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		abort();
	}
	fputs(text, f);
	fclose(f);
}

static __attribute__((unused)) struct config *
load(const char *yaml)
{
	write_file("ferry.yaml", yaml);
	errs[0] = '\0';
	nerrs = 0;
	return config_load(cfgpath, collect, NULL);
}

/* A config that must load; fails the test with its errors otherwise. */
static __attribute__((unused)) struct config *
load_ok(const char *yaml)
{
	struct config *c = load(yaml);

	ck_assert_msg(c != NULL, "expected to load, got:\n%s", errs);
	ck_assert_str_eq(errs, "");
	return c;
}

static __attribute__((unused)) const struct conf_service *
svc(const struct config *c, const char *name)
{
	const struct conf_service *s = config_service_by_name(c, name, strlen(name));

	ck_assert_msg(s != NULL, "no service %s", name);
	return s;
}


/* Test certificates: a CA, a leaf it signed, and an unrelated key. */
static void
make_pki(void)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd),
	    "cd '%s' && ( "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=test-ca && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	    "-keyout key.pem -out req.csr -subj /CN=svc && "
	    "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -out cert.pem -days 30 && "
	    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-out other.key ) >/dev/null 2>&1", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make test certificates with openssl\n");
		exit(1);
	}
	write_file("garbage.pem", "this is not PEM\n");
	write_file("empty.txt", "");
	write_file("comments.keys", "# no key yet\n\n   \n");
	write_file("service.key", FILE_SECRET "\n");
	write_file("bad.keys", "ok-key\nbad-key-line\x01\n");
	write_file("inbound.keys", "# rotation: new key first\n\n  first-key  \n"
	    "second key\r\n");
}


/* Runs SUITE inside a fresh directory with the test files and variables. */
static int
run_suite(Suite *suite)
{
	SRunner *sr;
	char cmd[512];
	int failed;

	snprintf(dir, sizeof(dir), "%s/ferry-test-config-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(cfgpath, sizeof(cfgpath), "%s/ferry.yaml", dir);
	make_pki();
	setenv("FERRY_TEST_KEY", SECRET, 1);
	/* as a key read from a file with its newline */
	setenv("FERRY_TEST_NL_KEY", SECRET "\n", 1);
	setenv("FERRY_TEST_EMPTY", "", 1);
	setenv("FERRY_TEST_PORT", "15099", 1);
	setenv("FERRY_TEST_VARNAME", "NO_SUCH_VARIABLE_FOR_FERRY", 1);
	unsetenv("FERRY_TEST_UNSET");
	unsetenv("FERRY_TEST_HOST");

	sr = srunner_create(suite);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return failed == 0 ? 0 : 1;
}

#endif
