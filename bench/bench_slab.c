/* SPDX-License-Identifier: MIT */
/* bench_slab.c: the object pools of src/slab.h against malloc/free, one line per case:
 *   name iterations ns/op
 *
 *   slab_hot_pair        slab_alloc then slab_free of the same 64-byte object (free-list hit)
 *   slab_fill_1M         1,000,000 slab_alloc on an empty slab (carving 64 KiB pages)
 *   slab_free_1M         freeing them, in a shuffled order
 *   slab_churn_100k      100,000 live objects: free a random one, allocate one
 *   pool_pair_SIZE       pool_alloc then pool_free of SIZE bytes, for sizes across the classes
 *   pool_batch_SIZE      1,000 pool_alloc of SIZE bytes then their 1,000 pool_free
 *   malloc_pair_SIZE, malloc_batch_SIZE, malloc_churn_100k: the same with malloc/free
 *
 * Fixed seeds; every case warms up, then CLOCK_MONOTONIC is read around the timed loop only.
 * Each timed case runs about 0.1 s; the whole program about 3 s. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "slab.h"

#define BUDGET_NS 100000000ull /* per timed case */

static volatile uintptr_t sink;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void
line(const char *name, uint64_t iters, uint64_t ns)
{
    printf("%s %llu %.2f\n", name, (unsigned long long)iters, (double)ns / (double)iters);
    fflush(stdout);
}

/* One allocator under test: slab (fixed size), pool (by size) or malloc. */
enum alloc_kind {
    A_SLAB,
    A_POOL,
    A_MALLOC,
};

struct alloc {
    enum alloc_kind kind;
    struct slab slab;
    struct pool pool;
    size_t size;
};

static inline void *
a_get(struct alloc *a)
{
    switch (a->kind) {
    case A_SLAB:
        return slab_alloc(&a->slab);
    case A_POOL:
        return pool_alloc(&a->pool, a->size);
    default:
        return malloc(a->size);
    }
}

static inline void
a_put(struct alloc *a, void *p)
{
    switch (a->kind) {
    case A_SLAB:
        slab_free(&a->slab, p);
        break;
    case A_POOL:
        pool_free(&a->pool, p, a->size);
        break;
    default:
        free(p);
        break;
    }
}

static void
a_init(struct alloc *a, enum alloc_kind kind, size_t size)
{
    memset(a, 0, sizeof(*a));
    a->kind = kind;
    a->size = size;
    slab_init(&a->slab, size);
    pool_init(&a->pool);
}

static void
a_fini(struct alloc *a)
{
    slab_fini(&a->slab);
    pool_fini(&a->pool);
}

/* pair: allocate, touch, free, in batches of 1024 until the budget is spent. */
static void
bench_pair(const char *name, struct alloc *a)
{
    uint64_t iters = 0, t0, t;
    for (int i = 0; i < 100000; i++) { /* warm-up */
        void *p = a_get(a);
        *(volatile char *)p = 1;
        a_put(a, p);
    }
    t0 = now_ns();
    do {
        for (int i = 0; i < 1024; i++) {
            void *p = a_get(a);
            *(volatile char *)p = 1;
            a_put(a, p);
        }
        iters += 1024;
        t = now_ns() - t0;
    } while (t < BUDGET_NS);
    line(name, iters, t);
}

/* batch: 1000 allocations then 1000 frees (LIFO), repeated; ns per alloc+free. */
static void
bench_batch(const char *name, struct alloc *a)
{
    enum { N = 1000 };
    static void *ptrs[N];
    uint64_t iters = 0, t0, t;
    for (int r = 0; r < 20; r++) { /* warm-up: the free lists hold N objects */
        for (int i = 0; i < N; i++)
            ptrs[i] = a_get(a);
        for (int i = N; i-- > 0;)
            a_put(a, ptrs[i]);
    }
    t0 = now_ns();
    do {
        for (int i = 0; i < N; i++) {
            ptrs[i] = a_get(a);
            *(volatile char *)ptrs[i] = 1;
        }
        for (int i = N; i-- > 0;)
            a_put(a, ptrs[i]);
        iters += N;
        t = now_ns() - t0;
    } while (t < BUDGET_NS);
    line(name, iters, t);
}

/* churn: live objects stay allocated; each op frees a random one and allocates another. */
static void
bench_churn(const char *name, struct alloc *a, size_t live)
{
    void **ptrs = malloc(live * sizeof(*ptrs));
    uint64_t seed = 0x9e3779b97f4a7c15ull, iters = 0, t0, t;
    if (ptrs == NULL)
        return;
    for (size_t i = 0; i < live; i++)
        ptrs[i] = a_get(a);
    for (size_t i = 0; i < live; i++) { /* warm-up: shuffle the free list */
        size_t k = rnd(&seed) % live;
        a_put(a, ptrs[k]);
        ptrs[k] = a_get(a);
    }
    t0 = now_ns();
    do {
        for (int i = 0; i < 1024; i++) {
            size_t k = rnd(&seed) % live;
            a_put(a, ptrs[k]);
            ptrs[k] = a_get(a);
            *(volatile char *)ptrs[k] = 1;
        }
        iters += 1024;
        t = now_ns() - t0;
    } while (t < BUDGET_NS);
    line(name, iters, t);
    for (size_t i = 0; i < live; i++)
        a_put(a, ptrs[i]);
    free(ptrs);
}

/* fill / free of one million objects on a fresh slab (the cold path: page carving). */
static void
bench_fill(void)
{
    enum { N = 1000000 };
    void **ptrs = malloc(N * sizeof(*ptrs));
    uint64_t seed = 12345;
    struct slab s;
    if (ptrs == NULL)
        return;
    slab_init(&s, 64); /* warm-up: fault the pages in once, then start from an empty slab */
    for (int i = 0; i < N; i++)
        ptrs[i] = slab_alloc(&s);
    slab_fini(&s);
    slab_init(&s, 64);
    uint64_t t0 = now_ns();
    for (int i = 0; i < N; i++)
        ptrs[i] = slab_alloc(&s);
    uint64_t t1 = now_ns();
    line("slab_fill_1M", N, t1 - t0);
    for (int i = N - 1; i > 0; i--) { /* shuffle: free in a random order */
        int k = (int)(rnd(&seed) % (uint64_t)(i + 1));
        void *x = ptrs[i];
        ptrs[i] = ptrs[k];
        ptrs[k] = x;
    }
    t0 = now_ns();
    for (int i = 0; i < N; i++)
        slab_free(&s, ptrs[i]);
    t1 = now_ns();
    line("slab_free_1M", N, t1 - t0);
    sink = (uintptr_t)s.free;
    slab_fini(&s);
    free(ptrs);
}

int
main(void)
{
    static const size_t sizes[] = {16, 64, 136, 400, 1024, 1500, 8600, 65536, 100000};
    struct alloc a;
    char name[64];

    printf("# name iterations ns/op (pool sizes: struct job + a 253-byte body = 400 B class)\n");
    a_init(&a, A_SLAB, 64);
    bench_pair("slab_hot_pair", &a);
    a_fini(&a);
    bench_fill();
    a_init(&a, A_SLAB, 64);
    bench_churn("slab_churn_100k", &a, 100000);
    a_fini(&a);
    a_init(&a, A_MALLOC, 64);
    bench_churn("malloc_churn_100k", &a, 100000);
    a_fini(&a);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        a_init(&a, A_POOL, sizes[i]);
        snprintf(name, sizeof(name), "pool_pair_%zu", sizes[i]);
        bench_pair(name, &a);
        snprintf(name, sizeof(name), "pool_batch_%zu", sizes[i]);
        bench_batch(name, &a);
        a_fini(&a);
        a_init(&a, A_MALLOC, sizes[i]);
        snprintf(name, sizeof(name), "malloc_pair_%zu", sizes[i]);
        bench_pair(name, &a);
        snprintf(name, sizeof(name), "malloc_batch_%zu", sizes[i]);
        bench_batch(name, &a);
        a_fini(&a);
    }
    return 0;
}
