/* SPDX-License-Identifier: MIT */
/* slab.c: see slab.h. */
#include "slab.h"

#include <stdbool.h>
#include <stdlib.h>

#if defined(ING_SAN) && ING_SAN
#define SLAB_PASSTHROUGH 1
#else
#define SLAB_PASSTHROUGH 0
#endif

void
slab_init(struct slab *s, size_t size)
{
    if (size < sizeof(void *))
        size = sizeof(void *);
    s->size = (size + 7) & ~(size_t)7;
    s->free = NULL;
    s->pages = NULL;
    s->npages = s->cap_pages = 0;
    s->carve = NULL;
    s->carve_left = 0;
    s->live = 0;
}

void
slab_fini(struct slab *s)
{
    for (size_t i = 0; i < s->npages; i++)
        free(s->pages[i]);
    free(s->pages);
    slab_init(s, s->size);
}

/* huge_page returns a SLAB_HUGE block aligned to its size (one huge page where the kernel
 * backs anonymous memory with them unasked: a big pool's objects are read in any order, a
 * queue's jobs long after they were written), or NULL. No MADV_HUGEPAGE: see slab.h. */
static void *
huge_page(void)
{
    return aligned_alloc(SLAB_HUGE, SLAB_HUGE);
}

static int
slab_grow(struct slab *s)
{
    size_t page = s->size > SLAB_PAGE / 4 ? s->size * 4 : SLAB_PAGE;
    bool huge = s->npages >= SLAB_HUGE_AFTER && page <= SLAB_HUGE / 4;
    if (s->npages == s->cap_pages) {
        size_t cap = s->cap_pages ? s->cap_pages * 2 : 16;
        void **np = realloc(s->pages, cap * sizeof(*np));
        if (np == NULL)
            return -1;
        s->pages = np;
        s->cap_pages = cap;
    }
    char *mem = huge ? huge_page() : NULL;
    if (mem != NULL)
        page = SLAB_HUGE;
    else if ((mem = malloc(page)) == NULL)
        return -1;
    s->pages[s->npages++] = mem;
    s->carve = mem;
    s->carve_left = page;
    return 0;
}

void *
slab_alloc(struct slab *s)
{
    void *p;
    if (SLAB_PASSTHROUGH) {
        p = malloc(s->size);
    } else if (s->free != NULL) {
        p = s->free;
        s->free = *(void **)p;
    } else {
        if (s->carve_left < s->size && slab_grow(s) != 0)
            return NULL;
        p = s->carve;
        s->carve += s->size;
        s->carve_left -= s->size;
    }
    if (p != NULL)
        s->live++;
    return p;
}

void
slab_free(struct slab *s, void *p)
{
    if (p == NULL)
        return;
    s->live--;
    if (SLAB_PASSTHROUGH) {
        free(p);
        return;
    }
    *(void **)p = s->free;
    s->free = p;
}

/* Size classes: 8-byte steps up to 1024 (classes 0..127), then four per power of two. */
static unsigned
pool_class(size_t size)
{
    if (size <= 1024)
        return size == 0 ? 0 : (unsigned)((size - 1) / 8);
    unsigned lg = 10; /* 2^lg < size <= 2^(lg+1) */
    while (((size_t)1 << (lg + 1)) < size)
        lg++;
    size_t step = ((size_t)1 << lg) / 4;
    unsigned sub = (unsigned)((size - ((size_t)1 << lg) - 1) / step); /* 0..3 */
    return 128 + (lg - 10) * 4 + sub;
}

static size_t
class_bytes(unsigned c)
{
    if (c < 128)
        return (size_t)(c + 1) * 8;
    unsigned lg = 10 + (c - 128) / 4, sub = (c - 128) % 4;
    return ((size_t)1 << lg) + ((size_t)1 << lg) / 4 * (sub + 1);
}

size_t
pool_class_size(size_t size)
{
    return size > POOL_MAX ? size : class_bytes(pool_class(size));
}

void
pool_init(struct pool *p)
{
    for (unsigned c = 0; c < POOL_NCLASS; c++)
        slab_init(&p->cls[c], class_bytes(c));
    p->big_live = 0;
}

void
pool_fini(struct pool *p)
{
    for (unsigned c = 0; c < POOL_NCLASS; c++)
        slab_fini(&p->cls[c]);
}

void *
pool_alloc(struct pool *p, size_t size)
{
    if (size > POOL_MAX) {
        void *m = malloc(size);
        if (m != NULL)
            p->big_live++;
        return m;
    }
    return slab_alloc(&p->cls[pool_class(size)]);
}

void
pool_free(struct pool *p, void *ptr, size_t size)
{
    if (ptr == NULL)
        return;
    if (size > POOL_MAX) {
        p->big_live--;
        free(ptr);
        return;
    }
    slab_free(&p->cls[pool_class(size)], ptr);
}
