/*
 * failmalloc: an LD_PRELOAD shim that makes allocations fail, for
 * test_oom.py. A test tool, never installed, never part of ferry.
 *
 * malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign are
 * passed to glibc's own __libc_* entry points (dlsym would allocate).
 * While injection is on, a call of N > 0 bytes from a thread whose name
 * matches fails (NULL, errno ENOMEM) with probability 1/RATE, from a
 * sequence of its own for each thread, seeded by FAILMALLOC_SEED and the
 * thread's name: the same calls of the same thread fail in every run.
 * realloc(p, 0) and free are never refused. Every allocation and free
 * is counted, by malloc_usable_size, in the bytes live: a leak shows
 * there long before in RSS.
 *
 * Environment:
 *   FAILMALLOC_CONTROL  a path: injection is on while this file exists.
 *                       Whichever thread allocates looks at it, at most
 *                       every 10 ms. It may hold "RATE [PATTERN]".
 *   FAILMALLOC_RATE     1 call in RATE fails (default 100), unless the
 *                       control file names one
 *   FAILMALLOC_THREADS  the threads that see failures (default
 *                       ferry-worker): those whose name starts with it, or
 *                       is it when it ends in '$' ("ferry$": the main
 *                       thread alone), unless the control file names one
 *   FAILMALLOC_SEED     seeds the sequences (default 1)
 *   FAILMALLOC_STATS    a path, rewritten with "ELIGIBLE FAILED LIVE\n"
 *                       (calls that could have failed, calls failed, bytes
 *                       allocated and not freed) whenever the control file
 *                       is looked at (every 10 ms of a process that
 *                       allocates) and a count moved
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void __libc_free(void *);

#define CHECK_EVERY_NS	(10 * 1000 * 1000)
#define NAME_EVERY	64		/* calls between two reads of a thread's name */

struct setting {
	unsigned	rate;
	char		pattern[32];
};

static char control[512], stats[512];
static struct setting fallback = { 100, "ferry-worker" };
static uint64_t seed = 1;

/* settings[gen & 1] is in force; only the thread holding `checking`
 * writes the other one, then moves gen */
static struct setting settings[2];
static _Atomic unsigned gen;
static _Atomic bool on;
static _Atomic int64_t next_check;
static atomic_flag checking = ATOMIC_FLAG_INIT;
static _Atomic uint64_t eligible, failed;
static _Atomic int64_t live;
static uint64_t failed_written = UINT64_MAX, eligible_written;
static int64_t live_written;

static __thread struct {
	uint64_t	rng;
	unsigned	gen;		/* of the setting MATCH was found for */
	unsigned	calls;		/* since the name was read */
	bool		match;
	bool		known;
} self;

static unsigned
parse_uint(const char **s)
{
	unsigned v = 0;

	while (**s == ' ' || **s == '\t' || **s == '\n')
		(*s)++;
	while (**s >= '0' && **s <= '9')
		v = v * 10 + (unsigned)(*(*s)++ - '0');
	return v;
}

static void
copy_word(char *dst, size_t len, const char *s)
{
	size_t i = 0;

	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	while (*s != '\0' && *s != ' ' && *s != '\t' && *s != '\n' && i + 1 < len)
		dst[i++] = *s++;
	dst[i] = '\0';
}

__attribute__((constructor)) static void
init(void)
{
	const char *v;

	if ((v = getenv("FAILMALLOC_RATE")) != NULL)
		fallback.rate = parse_uint(&v);
	if ((v = getenv("FAILMALLOC_THREADS")) != NULL)
		copy_word(fallback.pattern, sizeof(fallback.pattern), v);
	if ((v = getenv("FAILMALLOC_SEED")) != NULL)
		seed = parse_uint(&v);
	if ((v = getenv("FAILMALLOC_STATS")) != NULL && strlen(v) < sizeof(stats))
		memcpy(stats, v, strlen(v) + 1);
	settings[0] = fallback;
	/* last: a thread that sees a control path sees the rest set */
	if ((v = getenv("FAILMALLOC_CONTROL")) != NULL && strlen(v) < sizeof(control))
		memcpy(control, v, strlen(v) + 1);
}

/* N in decimal before P (printf may allocate) */
static char *
decimal(char *p, int64_t v, char before)
{
	uint64_t n = v < 0 ? -(uint64_t)v : (uint64_t)v;

	do
		*--p = (char)('0' + n % 10);
	while ((n /= 10) != 0);
	if (v < 0)
		*--p = '-';
	if (before != '\0')
		*--p = before;
	return p;
}

static void
write_stats(void)
{
	char buf[96], *p = buf + sizeof(buf);
	uint64_t e = atomic_load(&eligible), f = atomic_load(&failed);
	int64_t l = atomic_load(&live);
	int fd;

	if (stats[0] == '\0' ||
	    (f == failed_written && e == eligible_written && l == live_written))
		return;
	*--p = '\n';
	p = decimal(p, l, ' ');
	p = decimal(p, (int64_t)f, ' ');
	p = decimal(p, (int64_t)e, '\0');
	if ((fd = open(stats, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return;
	if (write(fd, p, (size_t)(buf + sizeof(buf) - p)) >= 0) {
		failed_written = f;
		eligible_written = e;
		live_written = l;
	}
	close(fd);
}

/* Whether injection is on, the control file looked at when due. */
static bool
injecting(void)
{
	struct timespec ts;
	struct setting s;
	char buf[64];
	const char *p;
	int64_t now;
	ssize_t n;
	unsigned g;
	int fd;

	if (control[0] == '\0')
		return false;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	if (now < atomic_load_explicit(&next_check, memory_order_relaxed) ||
	    atomic_flag_test_and_set(&checking))
		return atomic_load_explicit(&on, memory_order_relaxed);
	atomic_store(&next_check, now + CHECK_EVERY_NS);
	if ((fd = open(control, O_RDONLY | O_CLOEXEC)) < 0) {
		atomic_store(&on, false);
	} else {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		s = fallback;
		p = buf;
		if (parse_uint(&p) > 0) {
			p = buf;
			s.rate = parse_uint(&p);
			if (*p != '\0' && *p != '\n')
				copy_word(s.pattern, sizeof(s.pattern), p);
		}
		g = atomic_load(&gen);
		if (s.rate != settings[g & 1].rate ||
		    strcmp(s.pattern, settings[g & 1].pattern) != 0) {
			settings[(g + 1) & 1] = s;
			atomic_store(&gen, g + 1);
		}
		atomic_store(&on, true);
	}
	write_stats();
	atomic_flag_clear(&checking);
	return atomic_load(&on);
}

static bool
name_matches(const char *pattern)
{
	char name[17] = { 0 };
	size_t len = strlen(pattern);

	if (prctl(PR_GET_NAME, name, 0, 0, 0) != 0)
		return false;
	if (len > 0 && pattern[len - 1] == '$')
		return len - 1 == strlen(name) && memcmp(name, pattern, len - 1) == 0;
	return strncmp(name, pattern, len) == 0;
}

static uint64_t
next_random(void)
{
	/* xorshift64* */
	self.rng ^= self.rng >> 12;
	self.rng ^= self.rng << 25;
	self.rng ^= self.rng >> 27;
	return self.rng * 0x2545F4914F6CDD1DULL;
}

static void
seed_thread(void)
{
	char name[17] = { 0 };
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;

	prctl(PR_GET_NAME, name, 0, 0, 0);
	for (const char *c = name; *c != '\0'; c++)
		h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
	self.rng = h != 0 ? h : 1;
}

/* Whether this call is to fail. The name is read again now and then: a
 * thread is named after it started (and allocated) under its parent's. */
static bool
fail_now(size_t n)
{
	const struct setting *s;
	unsigned g;

	if (n == 0 || !injecting())
		return false;
	g = atomic_load(&gen);
	s = &settings[g & 1];
	if (!self.known || self.gen != g || ++self.calls >= NAME_EVERY) {
		self.match = name_matches(s->pattern);
		self.gen = g;
		self.calls = 0;
		if (self.match && self.rng == 0)
			seed_thread();
		self.known = true;
	}
	if (!self.match || s->rate == 0)
		return false;
	atomic_fetch_add_explicit(&eligible, 1, memory_order_relaxed);
	if (next_random() % s->rate != 0)
		return false;
	atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
	errno = ENOMEM;
	return true;
}

static void *
counted(void *p)
{
	if (p != NULL)
		atomic_fetch_add_explicit(&live, (int64_t)malloc_usable_size(p),
		    memory_order_relaxed);
	return p;
}

void *
malloc(size_t n)
{
	return fail_now(n) ? NULL : counted(__libc_malloc(n));
}

void *
calloc(size_t nmemb, size_t size)
{
	return fail_now(nmemb * size) ? NULL : counted(__libc_calloc(nmemb, size));
}

void
free(void *p)
{
	if (p != NULL)
		atomic_fetch_sub_explicit(&live, (int64_t)malloc_usable_size(p),
		    memory_order_relaxed);
	__libc_free(p);
}

void *
realloc(void *p, size_t n)
{
	size_t was;

	if (p == NULL)
		return malloc(n);
	/* realloc(p, 0) frees p: never refused */
	if (n != 0 && fail_now(n))
		return NULL;
	was = malloc_usable_size(p);
	if ((p = __libc_realloc(p, n)) == NULL && n != 0)
		return NULL;	/* the old block stays */
	atomic_fetch_sub_explicit(&live, (int64_t)was, memory_order_relaxed);
	return counted(p);
}

void *
memalign(size_t alignment, size_t n)
{
	return fail_now(n) ? NULL : counted(__libc_memalign(alignment, n));
}

void *
aligned_alloc(size_t alignment, size_t n)
{
	return fail_now(n) ? NULL : counted(__libc_memalign(alignment, n));
}

int
posix_memalign(void **out, size_t alignment, size_t n)
{
	void *p;
	int saved = errno;

	if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0)
		return EINVAL;
	if (fail_now(n) || (p = __libc_memalign(alignment, n)) == NULL) {
		errno = saved;
		return ENOMEM;
	}
	*out = counted(p);
	return 0;
}
