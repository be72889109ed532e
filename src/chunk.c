/* SPDX-License-Identifier: MIT */
/* chunk.c: see chunk.h. */
#include "chunk.h"

#include <stdlib.h>

_Static_assert(sizeof(struct chunk) <= CHUNK_HDR, "struct chunk: one header line");
_Static_assert((CHUNK_SIZE & (CHUNK_SIZE - 1)) == 0 && CHUNK_BLOCK_MIN % CHUNK_SIZE == 0 &&
                   CHUNK_BLOCK_MAX % CHUNK_BLOCK_MIN == 0,
               "chunks: powers of two, blocks of whole chunks");

void
chunk_init(struct chunk_pool *cp)
{
    cp->free = NULL;
    cp->nfree = 0;
    cp->blocks = NULL;
    cp->nblocks = cp->cap_blocks = 0;
    cp->carve = NULL;
    cp->carve_left = 0;
    cp->held = cp->live_bytes = cp->nlive = 0;
}

void
chunk_fini(struct chunk_pool *cp)
{
    for (size_t i = 0; i < cp->nblocks; i++)
        free(cp->blocks[i]);
    free(cp->blocks);
    chunk_init(cp);
}

/* grow adds a block: CHUNK_BLOCK_MIN doubling with each block up to CHUNK_BLOCK_MAX, aligned
 * to its size (so to CHUNK_SIZE; the largest to a huge page). Returns 0 or -1. */
static int
grow(struct chunk_pool *cp)
{
    size_t bs = CHUNK_BLOCK_MIN;
    while (bs < CHUNK_BLOCK_MAX && (bs / CHUNK_BLOCK_MIN) <= cp->nblocks)
        bs *= 2;
    if (cp->nblocks == cp->cap_blocks) {
        size_t cap = cp->cap_blocks ? cp->cap_blocks * 2 : 8;
        void **nb = realloc(cp->blocks, cap * sizeof(*nb));
        if (nb == NULL)
            return -1;
        cp->blocks = nb;
        cp->cap_blocks = cap;
    }
    char *mem = aligned_alloc(bs, bs);
    if (mem == NULL)
        return -1;
    cp->blocks[cp->nblocks++] = mem;
    cp->carve = mem;
    cp->carve_left = bs;
    return 0;
}

/* get returns an empty chunk (counted in use), or NULL. */
static struct chunk *
get(struct chunk_pool *cp)
{
    struct chunk *c = cp->free;
    if (c != NULL) {
        cp->free = c->next;
        cp->nfree--;
    } else {
        if (cp->carve_left < CHUNK_SIZE && grow(cp) != 0)
            return NULL;
        c = (struct chunk *)(void *)cp->carve;
        cp->carve += CHUNK_SIZE;
        cp->carve_left -= CHUNK_SIZE;
    }
    c->next = NULL;
    c->cur = NULL;
    c->live = 0;
    cp->held += CHUNK_SIZE;
    return c;
}

/* put returns empty chunk c, in use no more, to the free list. */
static void
put(struct chunk_pool *cp, struct chunk *c)
{
    c->next = cp->free;
    cp->free = c;
    cp->nfree++;
    cp->held -= CHUNK_SIZE;
}

void *
chunk_alloc(struct chunk_pool *cp, struct chunk_cur *cur, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    struct chunk *c = cur->c;
    if (c == NULL || CHUNK_SIZE - cur->used < size) {
        struct chunk *n = get(cp);
        if (n == NULL)
            return NULL;
        if (c != NULL) {
            c->cur = NULL;
            if (c->live == 0)
                put(cp, c);
        }
        n->cur = cur;
        cur->c = c = n;
        cur->used = CHUNK_HDR;
    }
    void *p = (char *)c + cur->used;
    cur->used += (uint32_t)size;
    c->live++;
    cp->live_bytes += size;
    cp->nlive++;
    return p;
}

void
chunk_free(struct chunk_pool *cp, void *p, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    struct chunk *c = chunk_of(p);
    struct chunk_cur *cur = c->cur;
    cp->live_bytes -= size;
    cp->nlive--;
    if (--c->live == 0) {
        if (cur != NULL)
            cur->used = CHUNK_HDR; /* the next object reuses the memory just touched */
        else
            put(cp, c);
    } else if (cur != NULL && (char *)p + size == (char *)c + cur->used) {
        cur->used -= (uint32_t)size; /* the last one: its bytes are the next object's */
    }
}

void
chunk_release(struct chunk_pool *cp, struct chunk_cur *cur)
{
    struct chunk *c = cur->c;
    if (c == NULL)
        return;
    cur->c = NULL;
    c->cur = NULL;
    if (c->live == 0)
        put(cp, c);
}
