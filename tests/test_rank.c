/* SPDX-License-Identifier: MIT */
/* test_rank.c: src/rank.c against a brute-force model: ordinals pushed, killed and revived
 * at random (the window slides, the ring grows, positions wrap), every count checked. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "rank.h"
#include "support/chaos_util.h"

enum { N = 2500 };
static struct cu_rng rng;

static uint32_t
rnd(uint32_t n)
{
    return cu_below(&rng, n);
}

/* walk: steps of push / kill (mostly the oldest, as dispatch does, sometimes any, as kills
 * do) / revive (a dead ordinal near the live ones, as a requeue); keys mode keeps (10 o, o). */
static void
walk(bool keys, uint64_t seed)
{
    static char live[N];
    struct pool p;
    struct rank r;
    pool_init(&p);
    rank_init(&r, keys);
    memset(live, 0, sizeof(live));
    cu_rng_seed(&rng, seed);
    uint64_t nlive = 0;
    for (int step = 0; step < 40000 && r.next < N; step++) {
        uint32_t op = rnd(100);
        if (op < 45 || nlive == 0) {
            assert_int_equal(rank_reserve(&r, &p, r.next), 0);
            uint64_t o = r.next;
            assert_int_equal(rank_push(&r, 10 * o, o), o);
            live[o] = 1;
            nlive++;
        } else if (op < 85) {
            uint64_t o = 0;
            if (op < 70) { /* the oldest */
                while (!live[o])
                    o++;
            } else {
                do
                    o = rnd((uint32_t)r.next);
                while (!live[o]);
            }
            rank_kill(&r, o);
            live[o] = 0;
            nlive--;
        } else if (r.next > 0) {
            uint64_t o = r.next - 1 - rnd(r.next < 300 ? (uint32_t)r.next : 300);
            if (!live[o]) {
                assert_int_equal(rank_reserve(&r, &p, o), 0);
                rank_revive(&r, o, 10 * o, o);
                live[o] = 1;
                nlive++;
            }
        }
        assert_int_equal(r.n, nlive);
        /* A few queries per step, checked against the model. */
        for (int q = 0; q < 2; q++) {
            uint64_t o = r.base + rnd((uint32_t)(r.next - r.base + 1));
            uint32_t want = 0;
            for (uint64_t x = 0; x < o; x++)
                want += (uint32_t)live[x];
            assert_int_equal(rank_before(&r, o), want);
            /* By arrival (kept in both modes): ordinal x arrived at x. */
            uint64_t s = rnd((uint32_t)r.next + 2);
            want = 0;
            for (uint64_t x = 0; x < r.next && x < s; x++)
                want += (uint32_t)live[x];
            assert_int_equal(rank_before_seq(&r, s), want);
            if (keys) {
                uint64_t vt = rnd((uint32_t)(10 * r.next + 20)), sq = rnd((uint32_t)r.next + 2);
                want = 0;
                for (uint64_t x = 0; x < r.next; x++)
                    want += (uint32_t)(live[x] && (10 * x < vt || (10 * x == vt && x < sq)));
                assert_int_equal(rank_before_key(&r, vt, sq), want);
            }
        }
    }
    assert_true(r.cap >= RANK_MIN_CAP);
    rank_fini(&r, &p);
    pool_fini(&p);
}

static void
test_rank_model(void **state)
{
    (void)state;
    for (uint64_t s = 1; s <= 4; s++)
        walk(false, s * 0x9e3779b97f4a7c15ull);
}

static void
test_rank_model_keys(void **state)
{
    (void)state;
    for (uint64_t s = 1; s <= 4; s++)
        walk(true, s * 0xbf58476d1ce4e5b9ull);
}

/* A long queue whose head keeps leaving: the window slides and the ring stays small. */
static void
test_rank_sliding_window(void **state)
{
    (void)state;
    struct pool p;
    struct rank r;
    pool_init(&p);
    rank_init(&r, false);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(rank_reserve(&r, &p, r.next), 0);
        rank_push(&r, 0, 0);
    }
    uint32_t cap = r.cap;
    for (uint64_t o = 0; o < 100000; o++) {
        rank_kill(&r, o);
        assert_int_equal(rank_reserve(&r, &p, r.next), 0);
        uint64_t x = rank_push(&r, 0, 0);
        assert_int_equal(rank_before(&r, x), 99);
        assert_int_equal(rank_before(&r, o + 50), 49);
    }
    assert_int_equal(r.cap, cap);
    rank_fini(&r, &p);
    pool_fini(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_model),
        cmocka_unit_test(test_rank_model_keys),
        cmocka_unit_test(test_rank_sliding_window),
    };
    return cmocka_run_group_tests_name("rank", tests, NULL, NULL);
}
