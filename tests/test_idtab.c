/* SPDX-License-Identifier: MIT */
/* test_idtab.c: the job id table (src/idtab.h): lookups, removal without tombstones along
 * overflowing probes, incremental growth with lookups and removals in both tables, and
 * iteration. Every step is checked against a plain array of what must be present. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idtab.h"

struct obj {
    char key[24];
    size_t len;
    bool in; /* expected in the table */
};

static void
obj_key(const void *o, const void **key, size_t *len)
{
    const struct obj *x = o;
    *key = x->key;
    *len = x->len;
}

static uint64_t
hash_of(const struct obj *o)
{
    return idtab_hash(idtab_hash_seed(), o->key, o->len);
}

static struct obj *
objs_new(size_t n)
{
    struct obj *v = calloc(n, sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i].len = (size_t)snprintf(v[i].key, sizeof(v[i].key), "job-%zu", i);
    return v;
}

/* check_all looks every object up, by a copy of its key, and checks the count. */
static void
check_all(const struct idtab *t, struct obj *v, size_t n)
{
    size_t in = 0;
    for (size_t i = 0; i < n; i++) {
        char k[24];
        memcpy(k, v[i].key, v[i].len);
        void *f = idtab_find(t, hash_of(&v[i]), k, v[i].len);
        if (v[i].in) {
            assert_ptr_equal(f, &v[i]);
            in++;
        } else {
            assert_null(f);
        }
    }
    assert_int_equal(t->n, in);
}

static void
test_idtab_insert_find_remove(void **state)
{
    (void)state;
    idtab_seed();
    struct idtab t;
    assert_int_equal(idtab_init(&t, obj_key), 0);
    struct obj *v = objs_new(1000);
    for (size_t i = 0; i < 1000; i += 2) {
        assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
        v[i].in = true;
    }
    check_all(&t, v, 1000);
    /* Same length, different key: not found. */
    assert_null(idtab_find(&t, idtab_hash(idtab_hash_seed(), "job-1", 5), "job-1", 5));
    assert_null(idtab_find(&t, idtab_hash(idtab_hash_seed(), "job-", 4), "job-", 4));
    for (size_t i = 0; i < 1000; i += 4) {
        idtab_remove(&t, hash_of(&v[i]), &v[i]);
        v[i].in = false;
    }
    check_all(&t, v, 1000);
    /* Removed keys can come back. */
    for (size_t i = 0; i < 1000; i += 4) {
        assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
        v[i].in = true;
    }
    check_all(&t, v, 1000);
    idtab_fini(&t);
    free(v);
}

/* Crafted hashes put 40 objects in one home bucket (six entries): the probe overflows
 * into the next buckets, also across the end of the table, and removals anywhere along it
 * keep every other object reachable. */
static void
test_idtab_overflow_chains(void **state)
{
    (void)state;
    for (int wrap = 0; wrap < 2; wrap++) {
        struct idtab t;
        assert_int_equal(idtab_init(&t, obj_key), 0);
        size_t home = wrap ? t.mask : 17;
        struct obj *v = objs_new(40);
        uint64_t h[40];
        for (size_t i = 0; i < 40; i++) {
            /* Same home; tags repeat every 3 objects, so equal tags must be told apart by
             * key; tag 0 (reserved) is used too. */
            h[i] = ((uint64_t)(i % 3) << 48) | ((uint64_t)i << 32) | home;
            assert_int_equal(idtab_insert(&t, h[i], &v[i]), 0);
            v[i].in = true;
        }
        for (size_t i = 0; i < 40; i++)
            assert_ptr_equal(idtab_find(&t, h[i], v[i].key, v[i].len), &v[i]);
        assert_true(t.b[home].overflow > 0);
        /* Remove from the front, the middle and the end of the probe, in turn. */
        size_t order[40], k = 0;
        for (size_t i = 0; i < 40; i += 3)
            order[k++] = i;
        for (size_t i = 40; i-- > 0;)
            if (i % 3 == 1)
                order[k++] = i;
        for (size_t i = 2; i < 40; i += 3)
            order[k++] = i;
        assert_int_equal(k, 40);
        for (size_t x = 0; x < 40; x++) {
            size_t r = order[x];
            idtab_remove(&t, h[r], &v[r]);
            v[r].in = false;
            for (size_t i = 0; i < 40; i++)
                if (v[i].in)
                    assert_ptr_equal(idtab_find(&t, h[i], v[i].key, v[i].len), &v[i]);
                else
                    assert_null(idtab_find(&t, h[i], v[i].key, v[i].len));
        }
        assert_int_equal(t.n, 0);
        /* Every overflow count is back to zero: nothing is left over from the probes. */
        for (size_t b = 0; b <= t.mask; b++)
            assert_int_equal(t.b[b].overflow, 0);
        idtab_fini(&t);
        free(v);
    }
}

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* 200,000 random inserts and removals: the table doubles several times; while it moves the
 * old buckets over, lookups and removals hit objects in both tables. */
static void
test_idtab_growth_interleaved(void **state)
{
    (void)state;
    const size_t n = 200000;
    struct idtab t;
    assert_int_equal(idtab_init(&t, obj_key), 0);
    struct obj *v = objs_new(n);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    size_t grown = 0, old_hits = 0;
    size_t mask0 = t.mask;
    for (size_t step = 0; step < 3 * n; step++) {
        size_t i = (size_t)(rnd(&seed) % (step / 2 + 1 < n ? step / 2 + 1 : n));
        bool had_old = t.old != NULL;
        if (v[i].in) {
            if (had_old && idtab_find(&t, hash_of(&v[i]), v[i].key, v[i].len) == &v[i])
                old_hits++;
            if (rnd(&seed) % 3 == 0) {
                idtab_remove(&t, hash_of(&v[i]), &v[i]);
                v[i].in = false;
            }
        } else {
            assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
            v[i].in = true;
        }
        if (t.mask != mask0) {
            grown++;
            mask0 = t.mask;
            check_all(&t, v, n); /* right after a doubling: almost all in the old table */
        }
    }
    assert_true(grown >= 5);
    assert_true(old_hits > 1000);
    check_all(&t, v, n);
    /* The load stays under three quarters (plus one insert) once growth is done. */
    idtab_settle(&t);
    assert_null(t.old);
    assert_true(t.n <= (t.mask + 1) * IDTAB_WAYS * 3 / 4 + 1);
    assert_true(idtab_bytes(&t) == (t.mask + 1) * sizeof(struct idtab_bucket));
    idtab_fini(&t);
    free(v);
}

/* Iteration sees every object once and allows removing the current one. */
static void
test_idtab_iterate_and_remove(void **state)
{
    (void)state;
    const size_t n = 4650; /* the 4,608th insert doubled the table: 42 inserts ago */
    struct idtab t;
    assert_int_equal(idtab_init(&t, obj_key), 0);
    struct obj *v = objs_new(n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
        v[i].in = true;
    }
    assert_non_null(t.old); /* the last doubling is still being moved over */
    idtab_settle(&t);
    assert_null(t.old);
    size_t seen = 0;
    for (size_t s = 0; s < idtab_slots(&t); s++) {
        struct obj *o = idtab_at(&t, s);
        if (o == NULL)
            continue;
        assert_true(o->in);
        o->in = false; /* seen once */
        seen++;
        idtab_remove(&t, hash_of(o), o);
    }
    assert_int_equal(seen, n);
    assert_int_equal(t.n, 0);
    check_all(&t, v, n);
    idtab_fini(&t);
    free(v);
}

/* The hash is seeded and spreads near keys: the 64 keys "job-0".."job-63" take many
 * different home buckets and tags. */
static void
test_idtab_hash_spreads(void **state)
{
    (void)state;
    uint64_t homes[64], tags[64];
    for (int i = 0; i < 64; i++) {
        char k[16];
        int len = snprintf(k, sizeof(k), "job-%d", i);
        uint64_t h = idtab_hash(idtab_hash_seed(), k, (size_t)len);
        homes[i] = h & 255;
        tags[i] = h >> 48;
    }
    int same_home = 0, same_tag = 0;
    for (int i = 0; i < 64; i++)
        for (int k = i + 1; k < 64; k++) {
            same_home += homes[i] == homes[k];
            same_tag += tags[i] == tags[k];
        }
    assert_true(same_home < 30); /* 2016 pairs, 7.9 expected for 256 buckets */
    assert_true(same_tag < 5);
    /* Length matters: "a" and "a\0" differ. */
    assert_true(idtab_hash(1, "a", 1) != idtab_hash(1, "a\0", 2));
}

/* idtab_reserve sizes the table once: what was in it stays, and inserting the reserved
 * number then neither grows nor migrates. */
static void
test_idtab_reserve(void **state)
{
    (void)state;
    idtab_seed();
    struct idtab t;
    assert_int_equal(idtab_init(&t, obj_key), 0);
    const size_t n = 20000;
    struct obj *v = objs_new(n);
    for (size_t i = 0; i < 100; i++) {
        assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
        v[i].in = true;
    }
    assert_int_equal(idtab_reserve(&t, n), 0);
    size_t mask = t.mask;
    assert_true(mask > 255);
    assert_null(t.old);
    check_all(&t, v, n);
    for (size_t i = 100; i < n; i++) {
        assert_int_equal(idtab_insert(&t, hash_of(&v[i]), &v[i]), 0);
        v[i].in = true;
    }
    assert_int_equal(t.mask, mask);
    assert_null(t.old);
    check_all(&t, v, n);
    assert_int_equal(idtab_reserve(&t, 10), 0); /* never shrinks */
    assert_int_equal(t.mask, mask);
    idtab_fini(&t);
    free(v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idtab_insert_find_remove),
        cmocka_unit_test(test_idtab_overflow_chains),
        cmocka_unit_test(test_idtab_growth_interleaved),
        cmocka_unit_test(test_idtab_iterate_and_remove),
        cmocka_unit_test(test_idtab_hash_spreads),
        cmocka_unit_test(test_idtab_reserve),
    };
    return cmocka_run_group_tests_name("idtab", tests, NULL, NULL);
}
