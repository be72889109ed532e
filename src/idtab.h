/* SPDX-License-Identifier: MIT */
/* idtab.h: a hash set of objects keyed by a byte string they hold (the job id table).
 *
 * Open addressing over 64-byte buckets of six entries: six 16-bit tags (bits of the key's
 * hash), a count of the entries that probed past the bucket, and six object pointers. A
 * lookup reads the home bucket's line and compares tags; it touches an object only when a
 * tag matches, so a lookup that misses, or a hit, costs one cache line of table plus the
 * object itself. Probing goes to the next bucket only while the bucket's overflow count is
 * non-zero; removal decrements the counts along the path, so there are no tombstones and
 * entries never move.
 *
 * The table doubles when three quarters full, incrementally (as Redis' dict does): every
 * insert then moves a few buckets of the old table, and lookups look in both meanwhile, so
 * no single insert rehashes a million objects.
 *
 * The caller computes hashes with idtab_hash (seeded per process with idtab_seed, so ids
 * chosen by a peer cannot all land in one bucket) and gives a key function that returns the
 * key an object holds. Not thread-safe. */
#ifndef ING_IDTAB_H
#define ING_IDTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define IDTAB_WAYS 6

struct idtab_bucket {
    uint16_t tag[IDTAB_WAYS]; /* 0 = free entry */
    uint32_t overflow;        /* entries whose probe passed this bucket */
    void *obj[IDTAB_WAYS];
};

/* idtab_key_fn returns the key of obj in *key and *len. */
typedef void (*idtab_key_fn)(const void *obj, const void **key, size_t *len);

struct idtab {
    struct idtab_bucket *b; /* mask + 1 buckets */
    size_t mask, n;         /* n: objects in both tables */
    struct idtab_bucket *old; /* while growing: the previous table, emptied from bucket 0 up */
    size_t old_mask, mig;
    void *b_mem, *old_mem; /* the allocations b and old are aligned in */
    idtab_key_fn key;
};

/* idtab_seed picks a random hash seed for the process (once; later calls do nothing). */
void idtab_seed(void);
/* idtab_hash hashes key[0..len) (8 bytes per step, then a full avalanche) from h (the seed
 * from idtab_hash_seed(), or a previous hash to chain fields). */
uint64_t idtab_hash(uint64_t h, const void *key, size_t len);
uint64_t idtab_hash_seed(void);

/* idtab_init makes an empty table; 0 or -ENOMEM. */
int idtab_init(struct idtab *t, idtab_key_fn key);
void idtab_fini(struct idtab *t);

/* idtab_find returns the object whose key is key[0..len) (its hash is h), or NULL. */
void *idtab_find(const struct idtab *t, uint64_t h, const void *key, size_t len);
/* idtab_tag is an entry's tag for hash h: the hash's top 16 bits (the bucket index uses the
 * low ones); 0 marks a free entry, so a zero tag becomes 1. */
static inline uint16_t
idtab_tag(uint64_t h)
{
    uint16_t t = (uint16_t)(h >> 48);
    return t != 0 ? t : 1;
}

/* idtab_find_in is idtab_find's probe of one table, inline so that a caller passing its own
 * static key function (t->key) gets it inlined on the hot path. */
static inline void *
idtab_find_in(const struct idtab_bucket *b, size_t mask, uint64_t h, const void *key,
              size_t len, idtab_key_fn kf)
{
    uint16_t tag = idtab_tag(h);
    size_t i = h & mask;
    for (size_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
        const struct idtab_bucket *bk = &b[i];
        for (int k = 0; k < IDTAB_WAYS; k++) {
            if (bk->tag[k] != tag)
                continue;
            const void *okey;
            size_t olen;
            kf(bk->obj[k], &okey, &olen);
            if (olen == len && memcmp(okey, key, len) == 0)
                return bk->obj[k];
        }
        if (bk->overflow == 0)
            break;
    }
    return NULL;
}

static inline void *
idtab_find_with(const struct idtab *t, uint64_t h, const void *key, size_t len,
                idtab_key_fn kf)
{
    void *o = idtab_find_in(t->b, t->mask, h, key, len, kf);
    if (o == NULL && t->old != NULL)
        o = idtab_find_in(t->old, t->old_mask, h, key, len, kf);
    return o;
}
/* IDTAB_PREFETCH(t, h) starts loading the home bucket of hash h in table t (struct idtab *),
 * and in the old table too while growing, for a lookup coming soon. A macro, not a static
 * inline function: GCC 12 takes a function whose only effect is __builtin_prefetch for a
 * pure one and deletes the calls to it before inlining, prefetches and all. */
#define IDTAB_PREFETCH(t, h)                                                                       \
    do {                                                                                           \
        const struct idtab *pf_t_ = (t);                                                           \
        uint64_t pf_h_ = (h);                                                                      \
        __builtin_prefetch(&pf_t_->b[pf_h_ & pf_t_->mask]);                                        \
        if (pf_t_->old != NULL)                                                                    \
            __builtin_prefetch(&pf_t_->old[pf_h_ & pf_t_->old_mask]);                              \
    } while (0)

/* idtab_insert adds obj (hash h; its key must not be in t yet). 0, or -ENOMEM when the
 * table is full and cannot grow (t is unchanged). */
int idtab_insert(struct idtab *t, uint64_t h, void *obj);
/* idtab_remove removes obj (hash h), which must be in t. */
void idtab_remove(struct idtab *t, uint64_t h, const void *obj);
/* idtab_reserve sizes t for n objects at once (a replay that knows about how many come):
 * no doubling, no migration until there are more. Returns 0 or -ENOMEM (t unchanged). */
int idtab_reserve(struct idtab *t, size_t n);

/* Iteration over every object: idtab_settle finishes any growth, then slots 0 ..
 * idtab_slots(t) - 1 are read with idtab_at (NULL = empty). Removing the object at the
 * current slot while iterating is allowed; inserting is not. */
void idtab_settle(struct idtab *t);
size_t idtab_slots(const struct idtab *t);
void *idtab_at(const struct idtab *t, size_t slot);

/* idtab_bytes is the memory the table holds (for statistics). */
size_t idtab_bytes(const struct idtab *t);

#endif
