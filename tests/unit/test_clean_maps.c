/*
 * Unit tests for src/clean_maps.c, on this test's own program and
 * libraries: the read-only segments' page mappings go and come back with
 * their contents, written data stays, and a read-only segment with a
 * written page (a debugger's breakpoint, simulated) is left whole. The
 * kernel's accounting is read from /proc/self/smaps.
 */
#include <ctype.h>
#include <fcntl.h>
#include <elf.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <check.h>
#include <openssl/ssl.h>

#include "clean_maps.h"

/* "Rss" of every mapping of a file whose path ends in SUFFIX with PERMS
 * (and at file offset OFFSET, unless negative), KiB; -1 when none. */
static long
smaps_rss(const char *suffix, const char *perms, long long offset)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool ours = false;
	long kib = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		/* headers start with an address in lower-case hex, fields
		 * with a capital */
		if (isdigit((unsigned char)line[0]) || (line[0] >= 'a' && line[0] <= 'f')) {
			char *nl = strchr(line, '\n'), p[8] = "";
			unsigned long long off = 0;

			if (nl != NULL)
				*nl = '\0';
			sscanf(line, "%*s %7s %llx", p, &off);
			ours = strcmp(p, perms) == 0 && strlen(line) > strlen(suffix) &&
			    strcmp(line + strlen(line) - strlen(suffix), suffix) == 0 &&
			    (offset < 0 || (unsigned long long)offset == off);
			continue;
		}
		if (ours && strncmp(line, "Rss:", 4) == 0)
			kib = (kib < 0 ? 0 : kib) + strtol(line + 4, NULL, 10);
	}
	fclose(f);
	return kib;
}

START_TEST(test_code_released_and_mapped_again)
{
	long before, after;

	/* OpenSSL's loading runs over most of libcrypto, as in ferry */
	ck_assert_int_eq(OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL), 1);
	SSL_CTX_free(SSL_CTX_new(TLS_client_method()));
	before = smaps_rss("/libcrypto.so.3", "r-xp", -1);
	ck_assert_int_ge(before, 512);
	ck_assert_uint_ge(clean_maps_release(), (size_t)before * 1024);
	after = smaps_rss("/libcrypto.so.3", "r-xp", -1);
	ck_assert_msg(after < before / 4, "libcrypto code resident %ld KiB, %ld before", after,
	    before);
	/* what is used is mapped again, and runs */
	SSL_CTX_free(SSL_CTX_new(TLS_client_method()));
	ck_assert_int_gt(smaps_rss("/libcrypto.so.3", "r-xp", -1), after);
}
END_TEST

static int written_data = 1;	/* .data: a writable segment, from the file */

START_TEST(test_written_data_stays)
{
	written_data = 2;
	clean_maps_release();
	ck_assert_int_eq(written_data, 2);
}
END_TEST

/* A breakpoint in a read-only segment is an anonymous page in it: here a
 * byte of the padding of libcrypto's ELF header, at the start of its first
 * segment. The segment keeps its pages, the byte its value. */
START_TEST(test_segment_with_written_page_left_whole)
{
	long page = sysconf(_SC_PAGESIZE), before;
	unsigned char *ehdr = NULL, orig;
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];

	ck_assert_ptr_nonnull(f);
	while (ehdr == NULL && fgets(line, sizeof(line), f) != NULL) {
		uintptr_t lo;
		unsigned long long off;

		if (strstr(line, "/libcrypto.so.3") &&
		    sscanf(line, "%" SCNxPTR "-%*s %*s %llx", &lo, &off) == 2 && off == 0)
			ehdr = (unsigned char *)lo;
	}
	fclose(f);
	ck_assert_ptr_nonnull(ehdr);
	ck_assert_int_eq(memcmp(ehdr, ELFMAG, SELFMAG), 0);
	ck_assert_int_eq(mprotect(ehdr, (size_t)page, PROT_READ | PROT_WRITE), 0);
	orig = ehdr[EI_PAD + 1];
	ehdr[EI_PAD + 1] ^= 0x5a;
	ck_assert_int_eq(mprotect(ehdr, (size_t)page, PROT_READ), 0);
	/* the written page is a mapping of its own now; the rest of the
	 * segment, from the next page on, is resident */
	for (long i = 1; i < 16; i++)
		(void)*(volatile unsigned char *)(ehdr + i * page);
	before = smaps_rss("/libcrypto.so.3", "r--p", page);
	ck_assert_int_ge(before, 15 * page / 1024);
	clean_maps_release();
	ck_assert_uint_eq(ehdr[EI_PAD + 1], (unsigned char)(orig ^ 0x5a));
	ck_assert_int_ge(smaps_rss("/libcrypto.so.3", "r--p", page), before);
}
END_TEST

/* As the systemd unit runs ferry: not dumpable (main.c), no CAP_SYS_PTRACE
 * (a user of its own). /proc/self is then root's, and pagemap cannot be
 * opened any more; the one opened before still reads. */
START_TEST(test_works_once_not_dumpable)
{
	clean_maps_init();
	ck_assert_int_eq(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), 0);
	if (geteuid() == 0)
		ck_assert_int_eq(setuid(65534), 0);
	ck_assert_int_lt(open("/proc/self/pagemap", O_RDONLY), 0);
	ck_assert_int_eq(OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL), 1);
	SSL_CTX_free(SSL_CTX_new(TLS_client_method()));
	ck_assert_uint_ge(clean_maps_release(), 256 * 1024);
}
END_TEST

static Suite *
clean_maps_suite(void)
{
	Suite *s = suite_create("clean_maps");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_code_released_and_mapped_again);
	tcase_add_test(tc, test_written_data_stays);
	tcase_add_test(tc, test_segment_with_written_page_left_whole);
	/* each test runs in a child of its own (Check's default): this one
	 * gives up its privileges for good */
	tcase_add_test(tc, test_works_once_not_dumpable);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(clean_maps_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
