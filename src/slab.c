#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "poison.h"
#include "slab.h"

/* A page starts with this header; its objects follow. Pages are aligned
 * to their size, so an object finds its page by masking its address. */
struct slab_page {
	struct slab_page *next, *prev;	/* on its slab's partial list, if it has room */
	void *free;			/* objects given back, linked through them */
	char *fresh;			/* the first object never handed out */
	unsigned used, cap;
};

#define OBJ_ALIGN	16
/* in a free object's second word: a second free of it aborts */
#define FREED_MARK	((uint64_t)0x5f7ee5ab5f7ee5abULL)
#define FIRST_OBJ	((sizeof(struct slab_page) + OBJ_ALIGN - 1) & ~(size_t)(OBJ_ALIGN - 1))

static size_t
stride(const struct slab *s)
{
	return (s->size + OBJ_ALIGN - 1) & ~(size_t)(OBJ_ALIGN - 1);
}

static struct slab_page *
page_of(const void *p)
{
	return (struct slab_page *)((uintptr_t)p & ~(uintptr_t)(SLAB_PAGE - 1));
}

/* ASan builds take pages from malloc: LeakSanitizer scans what is live
 * in them (it does not scan anonymous mappings). */
#ifdef FERRY_ASAN
static void *
page_map(void)
{
	return aligned_alloc(SLAB_PAGE, SLAB_PAGE);
}

static void
page_unmap(void *p)
{
	free(p);
}

static void
page_zap(void *p)
{
	(void)p;
}
#else
/* Untouched pages cost nothing: only what objects were handed out is
 * ever written. An aligned page is cut out of a mapping twice its size. */
static void *
page_map(void)
{
	char *m = mmap(NULL, 2 * SLAB_PAGE, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), *p;
	size_t head;

	if (m == MAP_FAILED)
		return NULL;
	p = (char *)(((uintptr_t)m + SLAB_PAGE - 1) & ~(uintptr_t)(SLAB_PAGE - 1));
	head = (size_t)(p - m);
	if (head > 0)
		munmap(m, head);
	munmap(p + SLAB_PAGE, SLAB_PAGE - head);
	return p;
}

static void
page_unmap(void *p)
{
	munmap(p, SLAB_PAGE);
}

/* The kept empty page costs no RSS until it is used again. */
static void
page_zap(void *p)
{
	(void)madvise(p, SLAB_PAGE, MADV_DONTNEED);
}
#endif

static void
unlink_page(struct slab_page **list, struct slab_page *pg)
{
	if (pg->prev)
		pg->prev->next = pg->next;
	else
		*list = pg->next;
	if (pg->next)
		pg->next->prev = pg->prev;
	pg->next = pg->prev = NULL;
}

static void
push_page(struct slab_page **list, struct slab_page *pg)
{
	pg->prev = NULL;
	pg->next = *list;
	if (*list)
		(*list)->prev = pg;
	*list = pg;
}

/* A page with every object fresh (its memory may be zeroed under it). */
static void
page_init(struct slab *s, struct slab_page *pg)
{
	*pg = (struct slab_page){
		.fresh = (char *)pg + FIRST_OBJ,
		.cap = (unsigned)((SLAB_PAGE - FIRST_OBJ) / stride(s)),
	};
	kept_poison((char *)pg + FIRST_OBJ, SLAB_PAGE - FIRST_OBJ);
}

static struct slab_page *
page_new(struct slab *s)
{
	struct slab_page *pg = page_map();

	if (pg == NULL)
		return NULL;
	page_init(s, pg);
	s->pages++;
	return pg;
}

void *
slab_alloc(struct slab *s, size_t size)
{
	struct slab_page *pg;
	void *p;

	pthread_mutex_lock(&s->mu);
	if (s->size == 0)
		s->size = size;
	if (size != s->size || size > SLAB_PAGE / 4 || size < 2 * sizeof(uint64_t)) {
		pthread_mutex_unlock(&s->mu);
		abort();	/* a caller's bug, not a condition */
	}
	if (s->direct) {
		if ((p = calloc(1, size)) != NULL)
			s->live++;
		pthread_mutex_unlock(&s->mu);
		return p;
	}
	if ((pg = s->partial) == NULL) {
		if ((pg = s->empty) != NULL) {
			s->empty = NULL;
			page_init(s, pg);
		} else if ((pg = page_new(s)) == NULL) {
			pthread_mutex_unlock(&s->mu);
			return NULL;
		}
		push_page(&s->partial, pg);
	}
	if (pg->free != NULL) {
		p = pg->free;
		kept_unpoison(p, sizeof(void *));
		pg->free = *(void **)p;
	} else {
		p = pg->fresh;
		pg->fresh += stride(s);
	}
	if (++pg->used == pg->cap)
		unlink_page(&s->partial, pg);	/* a full page is on no list */
	s->live++;
	pthread_mutex_unlock(&s->mu);
	kept_unpoison(p, size);
	return memset(p, 0, size);
}

/* P is an object S handed out from PG and not given back since. */
static bool
live_object(const struct slab *s, const struct slab_page *pg, const char *p)
{
	const char *first = (const char *)pg + FIRST_OBJ;

	return pg->used > 0 && p >= first && p < pg->fresh &&
	    (size_t)(p - first) % stride(s) == 0 &&
	    ((const uint64_t *)p)[1] != FREED_MARK;
}

void
slab_free(struct slab *s, void *p)
{
	struct slab_page *pg, *gone = NULL;

	if (p == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	if (s->direct) {
		s->live--;
		pthread_mutex_unlock(&s->mu);
		free(p);
		return;
	}
	pg = page_of(p);
	if (!live_object(s, pg, p)) {
		pthread_mutex_unlock(&s->mu);
		abort();	/* a double free: never two owners of one object */
	}
	*(void **)p = pg->free;
	((uint64_t *)p)[1] = FREED_MARK;
	pg->free = p;
	kept_poison(p, s->size);
	if (pg->used < pg->cap)
		unlink_page(&s->partial, pg);
	s->live--;
	if (--pg->used > 0)
		push_page(&s->partial, pg);
	else if (s->empty == NULL) {
		page_zap(pg);	/* under the lock: no one may take it meanwhile */
		s->empty = pg;
	} else {
		gone = pg;
		s->pages--;
	}
	pthread_mutex_unlock(&s->mu);
	if (gone)
		page_unmap(gone);
}

void
slab_count(struct slab *s, size_t *pages, size_t *live)
{
	pthread_mutex_lock(&s->mu);
	*pages = s->pages;
	*live = s->live;
	pthread_mutex_unlock(&s->mu);
}

void
slab_trim(struct slab *s)
{
	struct slab_page *pg;

	pthread_mutex_lock(&s->mu);
	if ((pg = s->empty) != NULL) {
		s->empty = NULL;
		s->pages--;
	}
	pthread_mutex_unlock(&s->mu);
	if (pg)
		page_unmap(pg);
}
