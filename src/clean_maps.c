/*
 * Startup runs code once that the data path never runs again: OpenSSL's
 * provider and certificate loading, the YAML parser, the dynamic linker's
 * relocation of every library. The kernel maps file pages 64 KiB around
 * each fault, so after startup nearly all of libcrypto's and libc's code
 * stays mapped and counted in RSS, though only a few hundred KiB of it is
 * hot. Dropping the mappings of the read-only segments of the program and
 * its libraries gives those pages back: they stay in the page cache
 * (shared, as before), and a page still needed is mapped again on its next
 * use by a minor fault, as after the kernel's own reclaim.
 *
 * The segments come from dl_iterate_phdr, which holds the loader's lock:
 * no library is unloaded, and its range given to another mapping, while
 * it is dropped. A read-only segment is never written, but for text
 * relocations (then the object is left whole) and for a debugger's or a
 * uprobe's breakpoint, which puts an anonymous page in it: a chunk of a
 * segment with an anonymous page (/proc/self/pagemap) is left whole too,
 * else the breakpoint would be lost. The check and the madvise are not
 * one step: a breakpoint placed between them (a root debugger, ferry is
 * not dumpable) is lost.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "clean_maps.h"

#if defined(__linux__) && defined(__GLIBC__)
#include <link.h>
#include <sys/auxv.h>
#include <sys/mman.h>

#define PM_PRESENT (1ULL << 63)
#define PM_SWAP (1ULL << 62)
#define PM_FILE (1ULL << 61)	/* file page or shared anonymous */

/* Opened before ferry makes itself non-dumpable (main.c): then
 * /proc/self is root's, and a process without CAP_SYS_PTRACE (the systemd
 * unit's) could not open its own pagemap; an open one stays readable. */
static int pagemap = -1;

#define CHUNK_PAGES 512

struct release {
	uintptr_t page;
	size_t bytes;
};

/* Drops [start, end), at most CHUNK_PAGES pages, unless a page of it is
 * anonymous: in memory, swapped out or being migrated (a file page is
 * never swapped, it is dropped and read again). Checked a chunk at a time
 * just before its madvise, so a breakpoint keeps only its chunk whole and
 * the window for one placed in between stays short. */
static void
release_chunk(struct release *r, uintptr_t start, uintptr_t end)
{
	uint64_t entries[CHUNK_PAGES];
	size_t n = (end - start) / r->page, want = n * sizeof(entries[0]), resident = 0;

	if (pread(pagemap, entries, want, (off_t)(start / r->page * sizeof(entries[0]))) !=
	    (ssize_t)want)
		return;		/* unknown: keep it */
	for (size_t i = 0; i < n; i++) {
		if ((entries[i] & PM_SWAP) ||
		    ((entries[i] & PM_PRESENT) && !(entries[i] & PM_FILE)))
			return;
		if (entries[i] & PM_PRESENT)
			resident++;
	}
	if (resident > 0 && madvise((void *)start, end - start, MADV_DONTNEED) == 0)
		r->bytes += resident * r->page;
}

static bool
has_text_relocations(const struct dl_phdr_info *info)
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		const ElfW(Dyn) *d;

		if (ph->p_type != PT_DYNAMIC)
			continue;
		d = (const void *)(info->dlpi_addr + ph->p_vaddr);
		for (size_t k = 0; k < ph->p_memsz / sizeof(*d) && d[k].d_tag != DT_NULL; k++)
			if (d[k].d_tag == DT_TEXTREL ||
			    (d[k].d_tag == DT_FLAGS && (d[k].d_un.d_val & DF_TEXTREL)))
				return true;
	}
	return false;
}

static int
release_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct release *r = arg;
	uintptr_t vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);

	(void)size;
	if (has_text_relocations(info))
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		/* whole pages only: a page shared with a writable segment stays */
		uintptr_t start = (lo + r->page - 1) & ~(r->page - 1);
		uintptr_t end = hi & ~(r->page - 1);

		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) || end <= start)
			continue;
		if (vdso != 0 && vdso >= (lo & ~(r->page - 1)) && vdso < hi)
			return 0;	/* the kernel's own page */
		for (uintptr_t a = start; a < end; a += CHUNK_PAGES * r->page)
			release_chunk(r, a, end - a > CHUNK_PAGES * r->page ?
			    a + CHUNK_PAGES * r->page : end);
	}
	return 0;
}

void
clean_maps_init(void)
{
	if (pagemap < 0)
		pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
}

size_t
clean_maps_release(void)
{
	struct release r = { .page = (uintptr_t)sysconf(_SC_PAGESIZE) };

	clean_maps_init();
	if (pagemap < 0)
		return 0;
	/* the loader's lock is held throughout: no object is unmapped, its
	 * range given to another mapping, between a check and its madvise */
	dl_iterate_phdr(release_object, &r);
	return r.bytes;
}
#else
void
clean_maps_init(void)
{
}

size_t
clean_maps_release(void)
{
	return 0;
}
#endif
