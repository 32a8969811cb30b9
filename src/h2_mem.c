#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.h"
#include "h2_mem.h"
#include "poison.h"

/* ASan builds keep blocks and streams too, poisoned while kept (poison.h) */
#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#define H2_MEM_KEEP 0
#endif
#endif
#ifndef H2_MEM_KEEP
#define H2_MEM_KEEP 1
#endif

#define CLASS_BYTES	16
#define SMALL_MAX	1024
#define N_CLASSES	(SMALL_MAX / CLASS_BYTES)

/* In front of every block: what free wipes and which list it joins
 * (CAP), and what its taker asked for (LEN: the rest is poisoned). */
union block {
	struct {
		size_t cap, len;
	};
	max_align_t align;
};

/* A kept block's first bytes link it to the next of its class; the rest
 * of it was zeroed when it was freed. */
struct lists {
	union block *head[N_CLASSES + 1];
	uint32_t n[N_CLASSES + 1];
	uint32_t low[N_CLASSES + 1];	/* the fewest kept since h2_mem_decay */
	size_t bytes;
};

static _Thread_local struct lists kept;

/* B's block given for a request of SIZE: only those bytes are the
 * taker's (poison.h); a class rounds up, and a sanitizer still sees an
 * overrun past SIZE. */
static void *
handed_out(union block *b, size_t size)
{
	b->len = size;
	kept_unpoison(b + 1, size);
	kept_poison((char *)(b + 1) + size, b->cap - size);
	return b + 1;
}

static void *
block_get(size_t size, bool zero)
{
	size_t cls = size == 0 ? 1 : (size + CLASS_BYTES - 1) / CLASS_BYTES;
	size_t cap;
	union block *b;

	if (size > SIZE_MAX - sizeof(union block) - CLASS_BYTES)
		return NULL;
	if (H2_MEM_KEEP && cls <= N_CLASSES && (b = kept.head[cls]) != NULL) {
		void **link = (void **)(b + 1);

		kept_unpoison(link, sizeof(*link));
		kept.head[cls] = *link;
		/* the next take of this class reads that block's head and link:
		 * a block freed turns ago is out of the cache by then */
		if (kept.head[cls] != NULL) {
			__builtin_prefetch(kept.head[cls]);
			__builtin_prefetch(kept.head[cls] + 1);
		}
		kept.bytes -= b->cap;
		if (--kept.n[cls] < kept.low[cls])
			kept.low[cls] = kept.n[cls];
		*link = NULL;
		/* zeroed when it was freed: calloc's promise holds */
		return handed_out(b, size);
	}
	cap = H2_MEM_KEEP && cls <= N_CLASSES ? cls * CLASS_BYTES : size;
	b = zero ? calloc(1, sizeof(*b) + cap) : malloc(sizeof(*b) + cap);
	if (b == NULL)
		return NULL;
	b->cap = cap;
	return handed_out(b, size);
}

static void
block_put(void *p)
{
	union block *b = (union block *)p - 1;

	kept_unpoison(p, b->cap);
	explicit_bzero(p, b->cap);
	if (H2_MEM_KEEP && b->cap <= SMALL_MAX && kept.bytes + b->cap <= H2_MEM_CACHE_MAX) {
		size_t cls = b->cap / CLASS_BYTES;

		*(void **)p = kept.head[cls];
		kept.head[cls] = b;
		kept.n[cls]++;
		kept.bytes += b->cap;
		kept_poison(p, b->cap);
		return;
	}
	free(b);
}

static void *
m_malloc(size_t size, void *arg)
{
	(void)arg;
	return block_get(size, false);
}

static void
m_free(void *p, void *arg)
{
	(void)arg;
	if (p != NULL)
		block_put(p);
}

static void *
m_calloc(size_t n, size_t size, void *arg)
{
	(void)arg;
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	return block_get(n * size, true);
}

/* Never realloc itself: it could move the block and free the old copy
 * unwiped. */
static void *
m_realloc(void *p, size_t size, void *arg)
{
	union block *b;
	void *n;

	(void)arg;
	if (p == NULL)
		return block_get(size, false);
	if (size == 0) {
		block_put(p);
		return NULL;
	}
	b = (union block *)p - 1;
	if (size <= b->cap)
		return handed_out(b, size);	/* in place: the taker's part is SIZE now */
	if ((n = block_get(size, false)) == NULL)
		return NULL;
	memcpy(n, p, b->len);
	block_put(p);
	return n;
}

nghttp2_mem *
h2_mem(void)
{
	/* nghttp2 wants it writable, and reads it only */
	static nghttp2_mem mem = {
		.malloc = m_malloc,
		.free = m_free,
		.calloc = m_calloc,
		.realloc = m_realloc,
	};

	return &mem;
}

struct stream_spares {
	size_t size;		/* 0: unclaimed */
	size_t n, low;		/* LOW: the fewest kept since h2_mem_decay */
	void *p[H2_STREAMS_KEEP];
};

static _Thread_local struct stream_spares streams[2];

static struct stream_spares *
spares_of(size_t size, bool claim)
{
	for (size_t i = 0; i < 2; i++)
		if (streams[i].size == size || (claim && streams[i].size == 0)) {
			streams[i].size = size;
			return &streams[i];
		}
	return NULL;
}

void *
h2_stream_alloc(size_t size, size_t zero_end)
{
	struct stream_spares *sp = H2_MEM_KEEP ? spares_of(size, false) : NULL;
	void *p;

	if (sp != NULL && sp->n > 0) {
		p = sp->p[--sp->n];
		if (sp->n < sp->low)
			sp->low = sp->n;
	} else {
		p = malloc(size);
	}

	if (p != NULL) {
		kept_unpoison(p, size);
		memset(p, 0, zero_end);
	}
	return p;
}

void
h2_stream_free(void *p, size_t size)
{
	struct stream_spares *sp = H2_MEM_KEEP && p != NULL ? spares_of(size, true) : NULL;

	if (sp != NULL && sp->n < H2_STREAMS_KEEP) {
		kept_poison(p, size);
		sp->p[sp->n++] = p;
	} else {
		free(p);
	}
}

size_t
h2_streams_kept(size_t size)
{
	struct stream_spares *sp = spares_of(size, false);

	return sp != NULL ? sp->n : 0;
}

size_t
h2_mem_cached(void)
{
	return kept.bytes;
}

void
h2_mem_thread_end(void)
{
	for (size_t cls = 1; cls <= N_CLASSES; cls++) {
		union block *b, *next;

		for (b = kept.head[cls]; b != NULL; b = next) {
			kept_unpoison(b + 1, sizeof(void *));
			next = *(void **)(b + 1);
			free(b);
		}
		kept.head[cls] = NULL;
		kept.n[cls] = kept.low[cls] = 0;
	}
	kept.bytes = 0;
	for (size_t i = 0; i < 2; i++) {
		while (streams[i].n > 0)
			free(streams[i].p[--streams[i].n]);
		streams[i].size = streams[i].low = 0;
	}
}

/* LOW blocks of a class go from the head of its list (singly linked):
 * which ones does not matter, how many stay does. */
void
h2_mem_decay(void)
{
	for (size_t cls = 1; cls <= N_CLASSES; cls++) {
		for (; kept.low[cls] > 0 && kept.head[cls] != NULL; kept.low[cls]--) {
			union block *b = kept.head[cls];

			kept_unpoison(b + 1, sizeof(void *));
			kept.head[cls] = *(void **)(b + 1);
			kept.n[cls]--;
			kept.bytes -= b->cap;
			free(b);
		}
		kept.low[cls] = kept.n[cls];
	}
	for (size_t i = 0; i < 2; i++)
		blocks_stack_decay(streams[i].p, &streams[i].n, &streams[i].low);
}
