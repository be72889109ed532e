/* SPDX-License-Identifier: MIT */
/* test_fairq.c: src/fair.c's fair_q (the keys of an environment in order: a monotone ring
 * beside a heap) against a reference: keys inserted, served, raised, lowered and removed
 * from the middle at random; the first key checked at every step against a scan of the
 * model, the whole order at intervals against a sort, the invariants after every step. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fair.h"
#include "support/chaos_util.h"

enum { NK = 300, STEPS = 60000, Q = 1000 };

static struct cu_rng rng;
static struct fair_key keys[NK];
static bool present[NK];
static uint64_t incs[NK];
static uint64_t seq, vtime;

static uint32_t
rnd(uint32_t n)
{
    return cu_below(&rng, n);
}

static size_t
count_present(void)
{
    size_t n = 0;
    for (size_t i = 0; i < NK; i++)
        n += present[i];
    return n;
}

/* ref_first is the model's first key: a scan with the comparison the backend orders by. */
static struct fair_key *
ref_first(void)
{
    struct fair_key *best = NULL;
    for (size_t i = 0; i < NK; i++)
        if (present[i] && (best == NULL || fair_rec_less(&keys[i], best)))
            best = &keys[i];
    return best;
}

static int
ref_cmp(const void *a, const void *b)
{
    const struct fair_key *x = *(struct fair_key *const *)a, *y = *(struct fair_key *const *)b;
    return fair_rec_less(x, y) ? -1 : fair_rec_less(y, x) ? 1 : 0;
}

static void
check(struct fair_q *q)
{
    size_t n = 0;
    assert_int_equal(fair_q_check(q, &n), 0);
    assert_int_equal(n, count_present());
    assert_ptr_equal(fair_q_first(q), ref_first());
    assert_int_equal(fair_q_empty(q), n == 0);
}

static void
insert(struct fair_q *q, size_t i, uint64_t vt)
{
    struct fair_key *k = &keys[i];
    k->qvt = vt;
    k->qseq = ++seq;
    assert_int_equal(fair_q_reserve(q), 0);
    fair_q_lowered(q, k);
    present[i] = true;
}

/* drain_and_refill takes every key out in q's order, compares it with the sort of the
 * model, then puts them back (in a random order) with their sort keys. */
static void
drain_and_refill(struct fair_q *q)
{
    struct fair_key *want[NK];
    size_t n = 0;
    for (size_t i = 0; i < NK; i++)
        if (present[i])
            want[n++] = &keys[i];
    qsort(want, n, sizeof(want[0]), ref_cmp);
    for (size_t x = 0; x < n; x++) {
        struct fair_key *k = fair_q_first(q);
        assert_ptr_equal(k, want[x]);
        fair_q_remove(q, k);
        assert_int_equal(k->hidx, 0);
        present[k - keys] = false;
    }
    assert_true(fair_q_empty(q));
    for (size_t x = n; x > 1; x--) { /* shuffle */
        size_t y = rnd((uint32_t)x);
        struct fair_key *t = want[x - 1];
        want[x - 1] = want[y];
        want[y] = t;
    }
    for (size_t x = 0; x < n; x++) {
        assert_int_equal(fair_q_reserve(q), 0);
        fair_q_lowered(q, want[x]);
        present[want[x] - keys] = true;
    }
    check(q);
}

static void
setup_keys(unsigned nprio)
{
    memset(keys, 0, sizeof(keys));
    memset(present, 0, sizeof(present));
    for (size_t i = 0; i < NK; i++) {
        keys[i].prio = (int64_t)rnd(nprio);
        incs[i] = Q / (1 + rnd(4)); /* weights 1..4 */
    }
    seq = vtime = 0;
}

/* walk: nprio priorities, a step at random (serve the first key, its next job later or
 * none; a new key at about the virtual time; a key's sort key lowered (a job requeued
 * before its first) or raised (its first job killed); a key removed from the middle). */
static void
walk(uint64_t seed, unsigned nprio)
{
    cu_rng_seed(&rng, seed);
    setup_keys(nprio);
    struct fair_q q;
    memset(&q, 0, sizeof(q));
    size_t ring_used = 0, heap_used = 0;
    for (int step = 0; step < STEPS; step++) {
        uint32_t op = rnd(100);
        size_t i = rnd(NK);
        struct fair_key *k = &keys[i];
        if (op < 45) { /* serve the first key */
            struct fair_key *f = fair_q_first(&q);
            if (f == NULL)
                continue;
            assert_ptr_equal(f, ref_first());
            vtime = f->qvt;
            if (rnd(10) < 8) { /* its next job: the next tag */
                f->qvt += incs[f - keys];
                f->qseq = ++seq;
                fair_q_raised(&q, f);
            } else {
                fair_q_remove(&q, f);
                present[f - keys] = false;
            }
        } else if (op < 65) { /* a key with jobs again */
            if (!present[i])
                insert(&q, i, vtime + rnd(2) * (Q / 2));
        } else if (op < 75) { /* lowered: a job requeued before its first */
            if (present[i] && k->qvt > 0) {
                k->qvt = rnd((uint32_t)k->qvt);
                k->qseq = ++seq;
                fair_q_lowered(&q, k);
            }
        } else if (op < 85) { /* raised in the middle: its first job killed */
            if (present[i]) {
                k->qvt += rnd(3) * incs[i];
                k->qseq = ++seq;
                fair_q_raised(&q, k);
            }
        } else if (op < 97) { /* removed from the middle: its last job killed */
            if (present[i]) {
                fair_q_remove(&q, k);
                present[i] = false;
            }
        } else if (step % 7 == 0) {
            drain_and_refill(&q);
        }
        check(&q);
        ring_used += q.rn;
        heap_used += q.n;
    }
    drain_and_refill(&q);
    assert_true(ring_used > 0 && heap_used > 0); /* both parts were exercised */
    fair_q_fini(&q);
}

static void
test_fairq_random_one_priority(void **state)
{
    (void)state;
    walk(0x5eed1, 1);
    walk(0x5eed2, 1);
}

static void
test_fairq_random_three_priorities(void **state)
{
    (void)state;
    walk(0xfa1c3, 3);
}

/* Equal weights, every key backlogged: after the first round every served key goes to the
 * ring's tail (the heap stays empty) and the keys are served in rotation. */
static void
test_fairq_backlogged_keys_use_the_ring(void **state)
{
    (void)state;
    cu_rng_seed(&rng, 7);
    memset(keys, 0, sizeof(keys));
    memset(present, 0, sizeof(present));
    seq = 0;
    struct fair_q q;
    memset(&q, 0, sizeof(q));
    enum { K = 100 };
    for (size_t i = 0; i < K; i++)
        insert(&q, i, 0);
    assert_int_equal(q.rn, K);
    assert_int_equal(q.n, 0);
    for (int round = 0; round < 20; round++)
        for (size_t i = 0; i < K; i++) {
            struct fair_key *f = fair_q_first(&q);
            assert_ptr_equal(f, &keys[i]);
            f->qvt += Q;
            f->qseq = ++seq;
            fair_q_raised(&q, f);
            assert_int_equal(q.n, 0);
            check(&q);
        }
    /* Half a round on, a key whose next job is earlier than the ring's tail (a weight): it
     * goes to the heap, and comes after the keys still before it, then first. */
    for (size_t i = 0; i < K / 2; i++) {
        struct fair_key *f = fair_q_first(&q);
        f->qvt += Q;
        f->qseq = ++seq;
        fair_q_raised(&q, f);
    }
    struct fair_key *f = fair_q_first(&q);
    assert_ptr_equal(f, &keys[K / 2]);
    f->qvt += Q / 2;
    f->qseq = ++seq;
    fair_q_raised(&q, f);
    assert_int_equal(q.n, 1);
    assert_int_equal(f->hidx, 1);
    check(&q);
    for (size_t i = K / 2 + 1; i < K; i++) {
        assert_ptr_equal(fair_q_first(&q), &keys[i]);
        keys[i].qvt += Q;
        keys[i].qseq = ++seq;
        fair_q_raised(&q, &keys[i]);
    }
    assert_ptr_equal(fair_q_first(&q), f);
    f->qvt += Q;
    f->qseq = ++seq;
    fair_q_raised(&q, f); /* now at the ring's tail: the heap is empty again */
    assert_int_equal(q.n, 0);
    assert_int_equal(f->hidx, FAIR_IN_RING);
    check(&q);
    fair_q_fini(&q);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fairq_random_one_priority),
        cmocka_unit_test(test_fairq_random_three_priorities),
        cmocka_unit_test(test_fairq_backlogged_keys_use_the_ring),
    };
    return cmocka_run_group_tests_name("fairq", tests, NULL, NULL);
}
