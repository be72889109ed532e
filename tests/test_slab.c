/* SPDX-License-Identifier: MIT */
/* test_slab.c: fixed-size slabs and the size-class pool. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "slab.h"

static void
test_slab_reuses_freed_objects(void **state)
{
    (void)state;
    struct slab s;
    slab_init(&s, 40);
    assert_int_equal(s.size, 40);
    void *p[1000];
    for (int i = 0; i < 1000; i++) {
        p[i] = slab_alloc(&s);
        assert_non_null(p[i]);
        memset(p[i], i & 0xff, 40);
    }
    assert_int_equal(s.live, 1000);
    for (int i = 0; i < 1000; i++)
        for (int k = i + 1; k < i + 4 && k < 1000; k++)
            assert_ptr_not_equal(p[i], p[k]);
    size_t pages = s.npages;
    for (int i = 0; i < 1000; i++)
        slab_free(&s, p[i]);
    assert_int_equal(s.live, 0);
    for (int i = 0; i < 1000; i++)
        p[i] = slab_alloc(&s);
    assert_int_equal(s.npages, pages); /* warm: no new page */
    for (int i = 0; i < 1000; i++)
        slab_free(&s, p[i]);
    slab_free(&s, NULL);
    slab_fini(&s);
}

static void
test_slab_pool_classes(void **state)
{
    (void)state;
    assert_int_equal(pool_class_size(1), 8);
    assert_int_equal(pool_class_size(16), 16);
    assert_int_equal(pool_class_size(17), 24);
    assert_int_equal(pool_class_size(1024), 1024);
    assert_int_equal(pool_class_size(1025), 1280);
    assert_int_equal(pool_class_size(2048), 2048);
    assert_int_equal(pool_class_size(2049), 2560);
    assert_int_equal(pool_class_size(65536), 65536);
    assert_int_equal(pool_class_size(65537), 65537);
    for (size_t n = 1; n < 70000; n += 7)
        assert_true(pool_class_size(n) >= n);
    struct pool p;
    pool_init(&p);
    void *a = pool_alloc(&p, 100), *b = pool_alloc(&p, 5000), *c = pool_alloc(&p, 1 << 20);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    memset(a, 1, 100);
    memset(b, 2, 5000);
    memset(c, 3, 1 << 20);
    assert_int_equal(p.big_live, 1);
    pool_free(&p, a, 100);
    pool_free(&p, b, 5000);
    pool_free(&p, c, 1 << 20);
    assert_int_equal(p.big_live, 0);
    void *a2 = pool_alloc(&p, 98); /* same class as 100: reused */
#if !(defined(ING_SAN) && ING_SAN)
    assert_ptr_equal(a, a2);
#endif
    pool_free(&p, a2, 98);
    pool_fini(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slab_reuses_freed_objects),
        cmocka_unit_test(test_slab_pool_classes),
    };
    return cmocka_run_group_tests_name("slab", tests, NULL, NULL);
}
