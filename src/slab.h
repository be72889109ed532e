/* SPDX-License-Identifier: MIT */
/* slab.h: single-threaded object pools.
 *
 * struct slab hands out fixed-size objects carved from 64 KiB pages and keeps freed objects
 * on a free list, so a warm pool never calls malloc. Past 2 MiB of pages a slab grows by
 * 2 MiB blocks aligned to 2 MiB, which a kernel with transparent huge pages "always" backs
 * with one huge page each (a million queued jobs in about 200 TLB entries, not 100,000).
 * They are not advised MADV_HUGEPAGE: with the common defrag setting "madvise" the first
 * touch of such a block compacts memory synchronously, which stalled the loop for up to
 * 8 ms (bench_register). struct pool is a set of slabs by size
 * class (8-byte steps up to 1 KiB, then four classes per power of two up to 64 KiB; larger
 * requests go straight to malloc). Pages are returned to the system only by *_fini.
 *
 * Built with ING_SAN=1 (the sanitizer build) every request goes straight to malloc/free so
 * AddressSanitizer sees each object. */
#ifndef ING_SLAB_H
#define ING_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define SLAB_PAGE (64u * 1024)
#define SLAB_HUGE (2u << 20) /* a slab past SLAB_HUGE_AFTER pages grows by this, aligned */
#define SLAB_HUGE_AFTER 32u
#define POOL_MAX (64u * 1024)
#define POOL_NCLASS (128 + 24)

struct slab {
    size_t size;       /* object size, rounded up to 8 */
    void *free;        /* free list, linked through the first word of each object */
    void **pages;      /* every page allocated */
    size_t npages, cap_pages;
    char *carve;       /* unused tail of the newest page */
    size_t carve_left; /* bytes left there */
    size_t live;       /* objects handed out and not freed */
};

struct pool {
    struct slab cls[POOL_NCLASS];
    size_t big_live; /* objects above POOL_MAX, served by malloc */
};

/* slab_init prepares s for objects of size bytes (no allocation yet). */
void slab_init(struct slab *s, size_t size);
/* slab_fini releases every page; objects still live become invalid. */
void slab_fini(struct slab *s);
/* slab_alloc returns an uninitialised object, or NULL when memory is exhausted. */
void *slab_alloc(struct slab *s);
/* slab_free returns p (from slab_alloc on s) to s. slab_free(s, NULL) does nothing. */
void slab_free(struct slab *s, void *p);

void pool_init(struct pool *p);
void pool_fini(struct pool *p);
/* pool_alloc returns size bytes (uninitialised), or NULL. */
void *pool_alloc(struct pool *p, size_t size);
/* pool_free releases ptr, which pool_alloc returned for the same size. */
void pool_free(struct pool *p, void *ptr, size_t size);
/* pool_class_size returns the bytes really reserved for a request of size bytes. */
size_t pool_class_size(size_t size);

#endif
