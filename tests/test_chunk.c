/* SPDX-License-Identifier: MIT */
/* test_chunk.c: objects of one owner allocated together in chunks (src/chunk.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "chunk.h"

#define OBJ 349u /* a job of bench/loadgen.c: 96-byte header, 253-byte body */
#define OBJ8 352u

static void
test_chunk_fits_small_objects_only(void **state)
{
    (void)state;
    assert_int_equal(chunk_fits(1), !CHUNK_PASSTHROUGH);
    assert_int_equal(chunk_fits(CHUNK_OBJ_MAX), !CHUNK_PASSTHROUGH);
    assert_false(chunk_fits(CHUNK_OBJ_MAX + 1));
    assert_false(chunk_fits(SIZE_MAX));
}

/* Two owners allocating in turn: each one's objects follow one another in its own chunk. */
static void
test_chunk_owner_objects_consecutive(void **state)
{
    (void)state;
    struct chunk_pool cp;
    chunk_init(&cp);
    struct chunk_cur a = {0}, b = {0};
    char *pa[40], *pb[40];
    for (int i = 0; i < 40; i++) {
        pa[i] = chunk_alloc(&cp, &a, OBJ);
        pb[i] = chunk_alloc(&cp, &b, OBJ);
        assert_non_null(pa[i]);
        assert_non_null(pb[i]);
        memset(pa[i], 0xaa, OBJ);
        memset(pb[i], 0xbb, OBJ);
        assert_ptr_equal(chunk_of(pa[i]), a.c);
        assert_ptr_equal(chunk_of(pb[i]), b.c);
        assert_int_equal((uintptr_t)pa[i] % 8, 0);
    }
    assert_ptr_not_equal(a.c, b.c);
    assert_int_equal((uintptr_t)a.c % CHUNK_SIZE, 0);
    assert_ptr_equal(pa[0], (char *)a.c + CHUNK_HDR);
    for (int i = 1; i < 40; i++) {
        assert_ptr_equal(pa[i], pa[i - 1] + OBJ8);
        assert_ptr_equal(pb[i], pb[i - 1] + OBJ8);
    }
    assert_ptr_equal(chunk_next(&a), pa[39] + OBJ8);
    assert_int_equal(a.c->live, 40);
    assert_ptr_equal(a.c->cur, &a);
    assert_int_equal(cp.nlive, 80);
    assert_int_equal(cp.live_bytes, 80 * OBJ8);
    assert_int_equal(cp.held, 2 * CHUNK_SIZE);
    assert_int_equal(chunk_slack(&cp), 2 * CHUNK_SIZE - 80 * OBJ8);
    for (int i = 0; i < 40; i++) {
        assert_true(pa[i][0] == (char)0xaa && pa[i][OBJ - 1] == (char)0xaa);
        chunk_free(&cp, pa[i], OBJ);
        chunk_free(&cp, pb[i], OBJ);
    }
    assert_int_equal(cp.nlive, 0);
    assert_int_equal(cp.live_bytes, 0);
    assert_int_equal(cp.held, 2 * CHUNK_SIZE); /* still current, empty */
    chunk_release(&cp, &a);
    chunk_release(&cp, &b);
    assert_null(a.c);
    assert_int_equal(cp.held, 0);
    assert_int_equal(cp.nfree, 2);
    chunk_release(&cp, &a); /* none: nothing happens */
    assert_int_equal(cp.nfree, 2);
    chunk_fini(&cp);
}

/* A full chunk is replaced; the old one goes back when its last object is freed, not before;
 * an empty current chunk starts again at its beginning; the last object freed gives its bytes
 * back at once. */
static void
test_chunk_full_then_freed(void **state)
{
    (void)state;
    struct chunk_pool cp;
    chunk_init(&cp);
    struct chunk_cur a = {0};
    unsigned per = (CHUNK_SIZE - CHUNK_HDR) / OBJ8;
    char *p[200];
    assert_true(per < 200);
    for (unsigned i = 0; i <= per; i++)
        assert_non_null(p[i] = chunk_alloc(&cp, &a, OBJ));
    struct chunk *first = chunk_of(p[0]);
    assert_ptr_equal(chunk_of(p[per - 1]), first);
    assert_ptr_not_equal(a.c, first); /* the object past the end took a new chunk */
    assert_ptr_equal(p[per], (char *)a.c + CHUNK_HDR);
    assert_null(first->cur);
    assert_int_equal(cp.held, 2 * CHUNK_SIZE);
    for (unsigned i = 0; i + 1 < per; i++)
        chunk_free(&cp, p[i], OBJ);
    assert_int_equal(cp.held, 2 * CHUNK_SIZE); /* pinned by its last object */
    assert_int_equal(chunk_slack(&cp), 2 * CHUNK_SIZE - 2 * OBJ8);
    chunk_free(&cp, p[per - 1], OBJ);
    assert_int_equal(cp.held, CHUNK_SIZE);
    assert_int_equal(cp.nfree, 1);
    /* LIFO: the newest object's bytes are the next one's. */
    char *q = chunk_alloc(&cp, &a, OBJ);
    assert_ptr_equal(q, p[per] + OBJ8);
    chunk_free(&cp, q, OBJ);
    assert_ptr_equal(chunk_alloc(&cp, &a, 16), q);
    chunk_free(&cp, q, 16);
    /* Empty and current: back to its start. */
    chunk_free(&cp, p[per], OBJ);
    assert_int_equal(a.c->live, 0);
    assert_ptr_equal(chunk_next(&a), (char *)a.c + CHUNK_HDR);
    assert_ptr_equal(chunk_alloc(&cp, &a, OBJ), p[per]);
    /* A freed object that is not the newest leaves a hole. */
    char *r = chunk_alloc(&cp, &a, OBJ);
    chunk_free(&cp, p[per], OBJ);
    assert_ptr_equal(chunk_alloc(&cp, &a, OBJ), r + OBJ8);
    chunk_free(&cp, r, OBJ);
    chunk_free(&cp, r + OBJ8, OBJ);
    assert_int_equal(cp.nlive, 0);
    chunk_fini(&cp);
}

/* Releasing an owner's chunk that still holds objects: it goes with the last of them. */
static void
test_chunk_release_with_live_objects(void **state)
{
    (void)state;
    struct chunk_pool cp;
    chunk_init(&cp);
    struct chunk_cur a = {0};
    char *x = chunk_alloc(&cp, &a, 100), *y = chunk_alloc(&cp, &a, 100);
    struct chunk *c = a.c;
    chunk_release(&cp, &a);
    assert_null(a.c);
    assert_null(c->cur);
    assert_int_equal(cp.held, CHUNK_SIZE);
    chunk_free(&cp, y, 100); /* the newest, but no longer current: nothing to give back */
    assert_int_equal(cp.held, CHUNK_SIZE);
    chunk_free(&cp, x, 100);
    assert_int_equal(cp.held, 0);
    assert_int_equal(cp.nfree, 1);
    /* The owner's next object takes a new current chunk: the one just freed. */
    assert_ptr_equal(chunk_alloc(&cp, &a, 100), (char *)c + CHUNK_HDR);
    chunk_free(&cp, (char *)c + CHUNK_HDR, 100);
    chunk_release(&cp, &a);
    chunk_fini(&cp);
}

/* Many owners: blocks grow (64 KiB doubling to 2 MiB); once warm, the same work takes no new
 * block (no allocation). */
static void
test_chunk_many_owners_warm(void **state)
{
    (void)state;
    enum { OWNERS = 300, EACH = 60 };
    struct chunk_pool cp;
    chunk_init(&cp);
    static struct chunk_cur cur[OWNERS];
    static char *p[OWNERS][EACH];
    memset(cur, 0, sizeof(cur));
    size_t blocks = 0;
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < EACH; k++)
            for (int o = 0; o < OWNERS; o++) {
                size_t sz = 8 + (size_t)((o * 7 + k * 13) % 600);
                p[o][k] = chunk_alloc(&cp, &cur[o], sz);
                assert_non_null(p[o][k]);
                assert_ptr_equal(chunk_of(p[o][k]), cur[o].c);
                assert_ptr_equal(cur[o].c->cur, &cur[o]);
                memset(p[o][k], o & 0xff, sz);
            }
        assert_int_equal(cp.nlive, OWNERS * EACH);
        assert_true(cp.live_bytes <= cp.held);
        if (round == 0)
            blocks = cp.nblocks;
        else
            assert_int_equal(cp.nblocks, blocks); /* warm */
        for (int o = 0; o < OWNERS; o++)
            for (int k = 0; k < EACH; k++) {
                size_t sz = 8 + (size_t)((o * 7 + k * 13) % 600);
                assert_int_equal((unsigned char)p[o][k][sz - 1], o & 0xff);
                chunk_free(&cp, p[o][k], sz);
            }
        for (int o = 0; o < OWNERS; o++)
            chunk_release(&cp, &cur[o]);
        assert_int_equal(cp.held, 0);
        assert_int_equal(cp.live_bytes, 0);
    }
    assert_true(blocks > 1);
    chunk_fini(&cp);
    assert_int_equal(cp.nblocks, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_fits_small_objects_only),
        cmocka_unit_test(test_chunk_owner_objects_consecutive),
        cmocka_unit_test(test_chunk_full_then_freed),
        cmocka_unit_test(test_chunk_release_with_live_objects),
        cmocka_unit_test(test_chunk_many_owners_warm),
    };
    return cmocka_run_group_tests_name("chunk", tests, NULL, NULL);
}
