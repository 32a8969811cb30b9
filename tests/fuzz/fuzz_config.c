/*
 * libFuzzer harness: the configuration loader (src/config*.c) on YAML
 * bytes, written to a file in a temporary directory that also holds test
 * certificates and key files, so relative paths, TLS contexts and key files
 * can load. The environment is reset to a fixed set of variables first:
 * ${VAR} expansion then does the same on every machine, and key_env /
 * keys_env find keys. A loaded config is rendered as /config JSON.
 * Properties: no crash or leak (everything freed), errors are lines of
 * text, the JSON is UTF-8 without control characters, and no key is ever
 * printed (unless the YAML itself holds the same bytes).
 */
#include <ftw.h>
#include <unistd.h>

#include "config.h"
#include "config_json.h"
#include "fuzz_common.h"

#define ENV_KEY "fuzzEnvKey-7Qx9-never-printed"
#define FILE_KEY "fuzzFileKey-3Kp2-never-printed"

static char dir[256];
static char path[320];

static void
write_file(const char *name, const void *data, size_t len)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	if ((f = fopen(p, "w")) == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(p);
		abort();
	}
}

static int
rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void
cleanup(void)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Keeps the variables the fuzzer and sanitizers need, drops the rest. */
static void
reset_environment(void)
{
	static const char *const keep[] = { "PATH", "TMPDIR", "ASAN_OPTIONS",
	    "UBSAN_OPTIONS", "LSAN_OPTIONS", "FERRY_FUZZ_KNOWN_BUGS" };
	char *saved[sizeof(keep) / sizeof(keep[0])];

	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		saved[i] = getenv(keep[i]) ? strdup(getenv(keep[i])) : NULL;
	clearenv();
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		if (saved[i] != NULL)
			setenv(keep[i], saved[i], 1);
		free(saved[i]);
	}
	setenv("FERRY_FUZZ_KEY", ENV_KEY, 1);
	setenv("FERRY_FUZZ_KEY2", ENV_KEY "-2", 1);
	setenv("FERRY_FUZZ_EMPTY", "", 1);
	setenv("FERRY_FUZZ_PORT", "15099", 1);
	setenv("FERRY_FUZZ_HOST", "127.0.0.1", 1);
	setenv("FERRY_FUZZ_VARNAME", "FERRY_FUZZ_KEY", 1);
	setenv("FERRY_FUZZ_CTRL", "a\x01" "b", 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char cmd[2048];

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "%s/ferry-fuzz-config-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/ferry.yaml", dir);
	/* the same files as tests/unit/config_fixture.h */
	snprintf(cmd, sizeof(cmd),
	    "cd '%s' && ( "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	    "-nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=test-ca && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	    "-keyout key.pem -out req.csr -subj /CN=svc && "
	    "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -out cert.pem -days 30 ) >/dev/null 2>&1", dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "cannot make test certificates with openssl\n");
		abort();
	}
	write_file("service.key", FILE_KEY "\n", strlen(FILE_KEY) + 1);
	write_file("inbound.keys", "# new key first\n" FILE_KEY "-a\n\n" FILE_KEY "-b\n",
	    strlen("# new key first\n" FILE_KEY "-a\n\n" FILE_KEY "-b\n"));
	write_file("empty.txt", "", 0);
	reset_environment();
	return 0;
}

static bool
holds(const char *hay, size_t len, const char *needle)
{
	return memmem(hay, len, needle, strlen(needle)) != NULL;
}

/* A key in OUT is a leak, unless the fuzzer wrote it into the YAML, or
 * wrote ${FERRY_FUZZ_KEY...}: a ${VAR} value is configuration, not a
 * secret, and may be shown (config.h). */
static void
no_secret(const char *out, size_t len, const uint8_t *yaml, size_t ylen)
{
	const char *y = (const char *)yaml;

	if (!holds(y, ylen, ENV_KEY) && !holds(y, ylen, "${FERRY_FUZZ_KEY"))
		PROP(!holds(out, len, ENV_KEY));
	if (!holds(y, ylen, FILE_KEY))
		PROP(!holds(out, len, FILE_KEY));
}

static const uint8_t *cur_yaml;
static size_t cur_len;

static void
on_error(void *arg, const char *line)
{
	size_t n = strlen(line);

	(void)arg;
	PROP(n > 0 && memchr(line, '\n', n) == NULL);
	no_secret(line, n, cur_yaml, cur_len);
}

static void
check_json(const struct sbuf *j, const uint8_t *yaml, size_t ylen)
{
	const unsigned char *p = (const unsigned char *)j->p;

	PROP(!j->oom && j->len >= 2 && p[0] == '{' && p[j->len - 1] == '}');
	for (size_t i = 0; i < j->len;) {
		size_t n = p[i] < 0x80 ? 1 : (p[i] & 0xe0) == 0xc0 ? 2 :
		    (p[i] & 0xf0) == 0xe0 ? 3 : (p[i] & 0xf8) == 0xf0 ? 4 : 0;

		PROP(p[i] >= 0x20 && n > 0 && i + n <= j->len);
		for (size_t k = 1; k < n; k++)
			PROP((p[i + k] & 0xc0) == 0x80);
		i += n;
	}
	no_secret(j->p, j->len, yaml, ylen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sbuf json;
	struct config *c;

	/* past the loader's own 16 MiB cap nothing new happens, only slowly */
	if (size > 64 * 1024)
		return 0;
	write_file("ferry.yaml", data, size);
	cur_yaml = data;
	cur_len = size;
	c = config_load(path, on_error, NULL);
	if (c == NULL)
		return 0;
	PROP(c->workers >= 1 && c->path != NULL);
	for (size_t i = 0; i < c->n_services; i++) {
		const struct conf_service *s = &c->services[i];

		PROP(config_service_by_name(c, s->name, strlen(s->name)) != NULL);
		PROP(s->upstream_host != NULL && *s->upstream_host != '\0');
	}
	sbuf_clear(&json);
	config_to_json(c, &json);
	check_json(&json, data, size);
	config_ref(c);
	config_unref(c);
	config_unref(c);
	return 0;
}
