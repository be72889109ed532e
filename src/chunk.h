/* SPDX-License-Identifier: MIT */
/* chunk.h: objects of one owner allocated together, in chunks.
 *
 * A chunk is CHUNK_SIZE bytes aligned to its size, so an object finds its chunk by masking
 * its address. An owner (the backend's fair-share record: environment, priority, key) has a
 * current chunk; its new objects are bump-allocated there, one after the other, so that
 * reading an owner's objects in their allocation order walks memory sequentially (hardware
 * prefetch, one TLB entry for dozens of objects) whatever other owners allocate meanwhile.
 * A chunk counts its live objects: when its last object is freed and it is no longer its
 * owner's current chunk, it returns to the pool's free list; when it is still current, its
 * bump pointer goes back to its start (the next object reuses memory just touched). An
 * object freed last-in first-out from the current chunk gives its bytes back at once.
 *
 * Chunks are carved from blocks (64 KiB, doubling up to 2 MiB aligned to 2 MiB) and kept on
 * the free list once used: a warm pool never calls malloc. Blocks are returned to the
 * system only by chunk_fini.
 *
 * Memory: a chunk in use (current, or holding a live object) is counted whole (`held`); the
 * bytes of its live objects in `live_bytes`; chunk_slack() is the difference, the bytes the
 * owners' chunks hold beyond their objects (unused tails, and space pinned by a chunk's
 * remaining object). The worst case is one small object pinning a whole chunk: at most
 * CHUNK_SIZE per live object, plus one current chunk per owner.
 *
 * Objects larger than CHUNK_OBJ_MAX are not for chunks (chunk_fits), nor is any object in
 * the sanitizer build (ING_SAN=1): the caller then uses its usual allocator, which there
 * passes each object to malloc so that AddressSanitizer sees it. */
#ifndef ING_CHUNK_H
#define ING_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK_SIZE (16u * 1024)
#define CHUNK_HDR 64u                  /* struct chunk, one cache line, then the objects */
#define CHUNK_OBJ_MAX (CHUNK_SIZE / 4) /* larger objects are not put in chunks */
#define CHUNK_BLOCK_MIN (64u * 1024)   /* the first block; each next one doubles ... */
#define CHUNK_BLOCK_MAX (2u << 20)     /* ... up to this, aligned to its size */

#if defined(ING_SAN) && ING_SAN
#define CHUNK_PASSTHROUGH 1
#else
#define CHUNK_PASSTHROUGH 0
#endif

/* An owner's current chunk and the bytes bumped there (header included), kept with the
 * owner: the next object's address is known without reading the chunk (chunk_next). */
struct chunk_cur {
    struct chunk *c; /* NULL: none */
    uint32_t used;
};

/* The head of a chunk. */
struct chunk {
    struct chunk *next;     /* the free list */
    struct chunk_cur *cur;  /* the owner's, while it is its current chunk; else NULL */
    uint32_t live;          /* objects allocated and not freed */
};

struct chunk_pool {
    struct chunk *free;
    size_t nfree;
    void **blocks;
    size_t nblocks, cap_blocks;
    char *carve;       /* unused tail of the newest block */
    size_t carve_left; /* bytes left there */
    size_t held;       /* bytes of the chunks in use (current, or holding an object) */
    size_t live_bytes; /* bytes of the objects in them (each rounded up to 8) */
    size_t nlive;      /* objects in them */
};

/* chunk_init prepares cp (no allocation yet). */
void chunk_init(struct chunk_pool *cp);
/* chunk_fini releases every block; objects still live become invalid. */
void chunk_fini(struct chunk_pool *cp);

/* chunk_fits tells whether an object of size bytes goes in a chunk. */
static inline bool
chunk_fits(size_t size)
{
    return !CHUNK_PASSTHROUGH && size <= CHUNK_OBJ_MAX;
}

/* chunk_alloc returns size bytes (uninitialised; chunk_fits(size) must hold) after the
 * previous object of the owner whose current chunk is cur (cur->c NULL: none yet), taking
 * a new current chunk when that one is full; or NULL when out of memory (nothing changed).
 * cur must stay at its address while it has a chunk. */
void *chunk_alloc(struct chunk_pool *cp, struct chunk_cur *cur, size_t size);
/* chunk_free releases p, which chunk_alloc returned for the same size. */
void chunk_free(struct chunk_pool *cp, void *p, size_t size);
/* chunk_release: the owner of cur has no more objects to allocate (for now): its chunk is
 * no longer current (freed if empty); cur->c becomes NULL. */
void chunk_release(struct chunk_pool *cp, struct chunk_cur *cur);

/* chunk_next returns where cur's next object would go if it fits, or NULL (for a
 * prefetch: nothing is read but cur). */
static inline void *
chunk_next(const struct chunk_cur *cur)
{
    return cur->c != NULL ? (char *)cur->c + cur->used : NULL;
}

/* chunk_of returns the chunk of object p. */
static inline struct chunk *
chunk_of(const void *p)
{
    return (struct chunk *)((uintptr_t)p & ~(uintptr_t)(CHUNK_SIZE - 1));
}

/* chunk_slack returns the bytes of the chunks in use beyond their objects. */
static inline size_t
chunk_slack(const struct chunk_pool *cp)
{
    return cp->held - cp->live_bytes;
}

#endif
