/* SPDX-License-Identifier: MIT */
/* idtab.c: see idtab.h. */
#include "idtab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define IDTAB_MIN_BUCKETS 256 /* 1,536 entries, 16 KiB on 64-bit */
#define IDTAB_MIGRATE 8       /* old buckets moved per insert while growing */

_Static_assert(sizeof(void *) != 8 || sizeof(struct idtab_bucket) == 64,
               "a bucket is one cache line");

static uint64_t seed = 0xcbf29ce484222325ull;
static bool seeded;

void
idtab_seed(void)
{
    uint64_t s;
    if (seeded)
        return;
    seeded = true;
    if (getrandom(&s, sizeof(s), GRND_NONBLOCK) == (ssize_t)sizeof(s))
        seed = s | 1;
}

uint64_t
idtab_hash_seed(void)
{
    return seed;
}

uint64_t
idtab_hash(uint64_t h, const void *key, size_t len)
{
    const uint8_t *s = key;
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    uint64_t w;
    h ^= (uint64_t)len * k;
    while (len >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * k;
        h ^= h >> 31;
        s += 8;
        len -= 8;
    }
    /* The last 1-7 bytes as one word, by loads (overlapping ones: every byte is in it, and
     * the length is in h): copying them into a word on the stack, a byte at a time, then
     * reading the word stalled on store forwarding (about 15 cycles per hash of an
     * environment name or a 36-byte job id). */
    if (len >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + len - 4, 4);
        w = a | (uint64_t)b << 32;
    } else {
        w = len > 0 ? (uint64_t)s[0] | (uint64_t)s[len / 2] << 8 | (uint64_t)s[len - 1] << 16 : 0;
    }
    h = (h ^ w) * k;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* buckets_new returns n zeroed buckets aligned on 64 bytes, and in *mem what to free. It
 * uses calloc, not posix_memalign + memset: a large calloc gets fresh zero pages from the
 * kernel, so doubling a 16 MiB table does not write 32 MiB in one loop iteration; the pages
 * are zeroed on first touch, spread over the inserts. */
static struct idtab_bucket *
buckets_new(size_t n, void **mem)
{
    const size_t sz = sizeof(struct idtab_bucket);
    if (n > SIZE_MAX / sz - 1)
        return NULL;
    char *p = calloc(n + 1, sz);
    *mem = p;
    if (p == NULL)
        return NULL;
    uintptr_t a = ((uintptr_t)p + 63) & ~(uintptr_t)63;
    return (struct idtab_bucket *)(void *)(p + (a - (uintptr_t)p));
}

/* grow_at is the number of objects at which a table of mask + 1 buckets doubles. */
static inline size_t
grow_at(size_t mask)
{
    return (mask + 1) * IDTAB_WAYS / 4 * 3;
}

int
idtab_init(struct idtab *t, idtab_key_fn key)
{
    memset(t, 0, sizeof(*t));
    t->key = key;
    t->b = buckets_new(IDTAB_MIN_BUCKETS, &t->b_mem);
    if (t->b == NULL)
        return -ENOMEM;
    t->mask = IDTAB_MIN_BUCKETS - 1;
    return 0;
}

void
idtab_fini(struct idtab *t)
{
    free(t->b_mem);
    free(t->old_mem);
    memset(t, 0, sizeof(*t));
}

/* place puts obj in the first free entry from its home bucket on (there is one). */
static void
place(struct idtab_bucket *b, size_t mask, uint64_t h, void *obj)
{
    uint16_t tag = idtab_tag(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct idtab_bucket *bk = &b[i];
        for (int k = 0; k < IDTAB_WAYS; k++)
            if (bk->tag[k] == 0) {
                bk->tag[k] = tag;
                bk->obj[k] = obj;
                return;
            }
        bk->overflow++;
    }
}

/* remove_in removes obj from table b if it is there, undoing its probe's overflow counts. */
static bool
remove_in(struct idtab_bucket *b, size_t mask, uint64_t h, const void *obj)
{
    size_t home = h & mask, i = home;
    for (size_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
        struct idtab_bucket *bk = &b[i];
        for (int k = 0; k < IDTAB_WAYS; k++)
            if (bk->tag[k] != 0 && bk->obj[k] == obj) {
                bk->tag[k] = 0;
                bk->obj[k] = NULL;
                for (size_t x = home; x != i; x = (x + 1) & mask)
                    b[x].overflow--;
                return true;
            }
        if (bk->overflow == 0)
            break;
    }
    return false;
}

/* migrate moves up to n buckets of the old table into the new one. The old table's
 * overflow counts are left as they are: too high only makes its lookups probe further. */
static void
migrate(struct idtab *t, size_t n)
{
    while (t->old != NULL && n-- > 0) {
        struct idtab_bucket *bk = &t->old[t->mig];
        for (int k = 0; k < IDTAB_WAYS; k++) {
            if (bk->tag[k] == 0)
                continue;
            const void *key;
            size_t len;
            t->key(bk->obj[k], &key, &len);
            place(t->b, t->mask, idtab_hash(seed, key, len), bk->obj[k]);
            bk->tag[k] = 0;
            bk->obj[k] = NULL;
        }
        if (++t->mig > t->old_mask) {
            free(t->old_mem);
            t->old = t->old_mem = NULL;
        }
    }
}

void *
idtab_find(const struct idtab *t, uint64_t h, const void *key, size_t len)
{
    return idtab_find_with(t, h, key, len, t->key);
}

int
idtab_insert(struct idtab *t, uint64_t h, void *obj)
{
    if (t->old != NULL) {
        migrate(t, IDTAB_MIGRATE);
    } else if (t->n >= grow_at(t->mask) && t->mask < SIZE_MAX / 2) {
        void *mem;
        struct idtab_bucket *nb = buckets_new((t->mask + 1) * 2, &mem);
        if (nb != NULL) {
            t->old = t->b;
            t->old_mem = t->b_mem;
            t->b_mem = mem;
            t->old_mask = t->mask;
            t->mig = 0;
            t->b = nb;
            t->mask = t->mask * 2 + 1;
        } else if (t->n >= (t->mask + 1) * IDTAB_WAYS) {
            return -ENOMEM; /* full and cannot grow */
        }
    }
    place(t->b, t->mask, h, obj);
    t->n++;
    return 0;
}

void
idtab_remove(struct idtab *t, uint64_t h, const void *obj)
{
    if (!remove_in(t->b, t->mask, h, obj) && t->old != NULL)
        remove_in(t->old, t->old_mask, h, obj);
    t->n--;
}

int
idtab_reserve(struct idtab *t, size_t n)
{
    size_t mask = t->mask;
    while (grow_at(mask) <= n && mask < SIZE_MAX / 4 / sizeof(struct idtab_bucket))
        mask = mask * 2 + 1;
    if (mask == t->mask)
        return 0;
    void *mem;
    struct idtab_bucket *nb = buckets_new(mask + 1, &mem);
    if (nb == NULL)
        return -ENOMEM;
    migrate(t, SIZE_MAX);
    for (size_t i = 0; i <= t->mask; i++)
        for (int k = 0; k < IDTAB_WAYS; k++)
            if (t->b[i].tag[k] != 0) {
                const void *key;
                size_t len;
                t->key(t->b[i].obj[k], &key, &len);
                place(nb, mask, idtab_hash(seed, key, len), t->b[i].obj[k]);
            }
    free(t->b_mem);
    t->b = nb;
    t->b_mem = mem;
    t->mask = mask;
    return 0;
}

void
idtab_settle(struct idtab *t)
{
    migrate(t, SIZE_MAX);
}

size_t
idtab_slots(const struct idtab *t)
{
    return t->b != NULL ? (t->mask + 1) * IDTAB_WAYS : 0;
}

void *
idtab_at(const struct idtab *t, size_t slot)
{
    const struct idtab_bucket *bk = &t->b[slot / IDTAB_WAYS];
    return bk->tag[slot % IDTAB_WAYS] != 0 ? bk->obj[slot % IDTAB_WAYS] : NULL;
}

size_t
idtab_bytes(const struct idtab *t)
{
    size_t n = t->b != NULL ? t->mask + 1 : 0;
    if (t->old != NULL)
        n += t->old_mask + 1;
    return n * sizeof(struct idtab_bucket);
}
