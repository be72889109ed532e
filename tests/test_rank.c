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

/* churn: a step other than a push (op in 0..99, at least one ordinal live): kill one (op
 * below 85; the oldest below 70, as dispatch does, else any, as kills do), or revive one of
 * the last 300 if dead (as a requeue) with its key (tags[o], arrs[o]), or (10 o, o) when
 * tags is NULL. Returns the change of the live count. */
static int
churn(struct rank *r, struct pool *p, char *live, uint32_t op, const uint64_t *tags,
      const uint64_t *arrs)
{
    uint64_t o = 0;
    if (op < 85) {
        if (op < 70) {
            while (!live[o])
                o++;
        } else {
            do
                o = rnd((uint32_t)r->next);
            while (!live[o]);
        }
        rank_kill(r, o);
        live[o] = 0;
        return -1;
    }
    o = r->next - 1 - rnd(r->next < 300 ? (uint32_t)r->next : 300);
    if (live[o])
        return 0;
    assert_int_equal(rank_reserve(r, p, o), 0);
    rank_revive(r, o, tags != NULL ? tags[o] : 10 * o, tags != NULL ? arrs[o] : o);
    live[o] = 1;
    return 1;
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
        } else {
            nlive = (uint64_t)((int64_t)nlive + churn(&r, &p, live, op, NULL, NULL));
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

/* skewed: uneven arrivals (bursts of consecutive ones, then long gaps: other groups' jobs)
 * and tags in runs of equal values, so that interpolation guesses wrong and the search
 * gallops far; every count, and rank_before_seq_from with good and bad guesses, against the
 * model. Also top_sq: the arrival of ordinal next - 1. */
static void
skewed(uint64_t seed)
{
    static char live[N];
    static uint64_t arr[N], tag[N];
    struct pool p;
    struct rank r;
    pool_init(&p);
    rank_init(&r, true);
    memset(live, 0, sizeof(live));
    cu_rng_seed(&rng, seed);
    uint64_t nlive = 0, a = 0, t = 0;
    for (int step = 0; step < 20000 && r.next < N; step++) {
        uint32_t op = rnd(100);
        if (op < 50 || nlive == 0) {
            assert_int_equal(rank_reserve(&r, &p, r.next), 0);
            uint64_t o = r.next;
            a += rnd(8) == 0 ? 1 + rnd(100000) : 1; /* bursts and gaps */
            t += rnd(3) == 0 ? 0 : rnd(1000);        /* runs of ties */
            arr[o] = a;
            tag[o] = t;
            assert_int_equal(rank_push(&r, t, a), o);
            live[o] = 1;
            nlive++;
        } else {
            nlive = (uint64_t)((int64_t)nlive + churn(&r, &p, live, op, tag, arr));
        }
        assert_int_equal(r.top_sq, arr[r.next - 1]);
        if (nlive == 0)
            continue;
        uint64_t first = 0;
        while (!live[first])
            first++;
        for (int q = 0; q < 3; q++) {
            /* An arrival: one of the group's (a tie), between two, or out of range. */
            uint64_t x = arr[rnd((uint32_t)r.next)] + rnd(3) - (q == 0 ? 1 : 0);
            if (q == 2)
                x = rnd((uint32_t)a + 3);
            uint32_t want = 0;
            for (uint64_t o = 0; o < r.next; o++)
                want += (uint32_t)(live[o] && arr[o] < x);
            assert_int_equal(rank_before_seq(&r, x), want);
            uint64_t guesses[4] = {0, first + 1, r.next - 1,
                                   first + rnd((uint32_t)(r.next - first))};
            if (x > arr[first] && x <= r.top_sq)
                guesses[0] = rank_seq_guess(&r, first, arr[first], x);
            for (int g = 0; g < 4; g++)
                assert_int_equal(rank_before_seq_from(&r, first, arr[first], guesses[g], x), want);
            uint64_t vt = tag[rnd((uint32_t)r.next)] + rnd(2), sq = rnd((uint32_t)a + 3);
            want = 0;
            for (uint64_t o = 0; o < r.next; o++)
                want += (uint32_t)(live[o] && (tag[o] < vt || (tag[o] == vt && arr[o] < sq)));
            assert_int_equal(rank_before_key(&r, vt, sq), want);
        }
    }
    rank_fini(&r, &p);
    pool_fini(&p);
}

static void
test_rank_skewed_keys(void **state)
{
    (void)state;
    for (uint64_t s = 1; s <= 3; s++)
        skewed(s * 0x94d049bb133111ebull);
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
        cmocka_unit_test(test_rank_skewed_keys),
    };
    return cmocka_run_group_tests_name("rank", tests, NULL, NULL);
}
