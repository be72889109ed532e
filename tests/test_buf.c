/* SPDX-License-Identifier: MIT */
/* test_buf.c: the byte buffer. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "buf.h"

static void
test_buf_append_consume_rewind(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_len(&b), 5);
    buf_consume(&b, 2);
    assert_memory_equal(buf_head(&b), "llo", 3);
    buf_consume(&b, 3);
    assert_int_equal(b.rpos, 0); /* emptied: rewound */
    assert_int_equal(b.wpos, 0);
    buf_fini(&b);
}

/* buf_cut removes bytes in the middle of the pending ones (a superseded message). */
static void
test_buf_cut_middle_and_all(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "xxabcdef", 8), 0);
    buf_consume(&b, 2);
    buf_cut(&b, 1, 3); /* "bcd" */
    assert_int_equal(buf_len(&b), 3);
    assert_memory_equal(buf_head(&b), "aef", 3);
    buf_cut(&b, 0, 3);
    assert_int_equal(buf_len(&b), 0);
    assert_int_equal(b.rpos, 0); /* emptied: rewound */
    buf_fini(&b);
}

static void
test_buf_compacts_only_when_enough(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(buf_reserve(&b, 100), 0);
    size_t cap = b.cap;
    memset(buf_tail(&b), 'x', cap);
    buf_produce(&b, cap);
    buf_consume(&b, cap - 10);          /* 10 pending at the end */
    assert_int_equal(buf_reserve(&b, 100), 0); /* compaction is enough */
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.rpos, 0);
    assert_int_equal(buf_len(&b), 10);
    assert_int_equal(buf_reserve(&b, cap), 0); /* must grow */
    assert_true(b.cap >= cap + 10);
    assert_int_equal(buf_len(&b), 10);
    assert_memory_equal(buf_head(&b), "xxxxxxxxxx", 10);
    buf_consume(&b, 10);
    buf_shrink(&b, 16);
    assert_null(b.data);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), -ENOMEM);
    buf_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_consume_rewind),
        cmocka_unit_test(test_buf_cut_middle_and_all),
        cmocka_unit_test(test_buf_compacts_only_when_enough),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
