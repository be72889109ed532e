/* SPDX-License-Identifier: MIT */
/* test_opt.c: the numbers of the command lines (src/opt.h): unsigned integers, durations
 * and sizes; each form, the limits of 64 bits, signs, empty strings and junk. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>

#include "opt.h"

#define UNTOUCHED 0x5a5a5a5a5a5a5a5aull

typedef int opt_fn(const char *s, uint64_t *out);

/* ok checks that fn reads s as want. */
static void
ok(opt_fn *fn, const char *s, uint64_t want)
{
    uint64_t v = UNTOUCHED;

    if (fn(s, &v) != 0)
        fail_msg("\"%s\" refused", s);
    if (v != want)
        fail_msg("\"%s\" read as %llu, expected %llu", s, (unsigned long long)v,
                 (unsigned long long)want);
}

/* bad checks that fn refuses s with -EINVAL and leaves the output alone. */
static void
bad(opt_fn *fn, const char *s)
{
    uint64_t v = UNTOUCHED;
    int rc = fn(s, &v);

    if (rc != -EINVAL)
        fail_msg("\"%s\": %d, expected -EINVAL", s, rc);
    if (v != UNTOUCHED)
        fail_msg("\"%s\": output written on failure", s);
}

/* What all three refuse: empty, no digits, signs, junk around the number, other bases. */
static void
bad_common(opt_fn *fn)
{
    static const char *const junk[] = {
        "",    " ",     "+",    "-",   "-1",  "-0",  " -5", "\t-5", "abc", "x1", "1x", "1 ",
        "1.5", "1,000", "0x10", "1e3", "1/2", "--1", "+-1", "1\n",  "s",   "ms", "K",  "1_000",
    };

    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        bad(fn, junk[i]);
}

static void
test_opt_u64(void **state)
{
    (void)state;
    ok(opt_u64, "0", 0);
    ok(opt_u64, "7", 7);
    ok(opt_u64, "000123", 123);
    ok(opt_u64, "1000000", 1000000);
    ok(opt_u64, "18446744073709551615", UINT64_MAX);
    ok(opt_u64, " 5", 5); /* strtoull's leading white space and '+' are accepted */
    ok(opt_u64, "+5", 5);
    bad(opt_u64, "18446744073709551616"); /* overflow */
    bad(opt_u64, "99999999999999999999999");
    bad(opt_u64, "5s");
    bad(opt_u64, "5K");
    bad(opt_u64, "-18446744073709551615");
    bad_common(opt_u64);
}

static void
test_opt_duration(void **state)
{
    (void)state;
    ok(opt_duration_ms, "0", 0);
    ok(opt_duration_ms, "5", 5000); /* N: seconds */
    ok(opt_duration_ms, "5s", 5000);
    ok(opt_duration_ms, "250ms", 250);
    ok(opt_duration_ms, "0ms", 0);
    ok(opt_duration_ms, "2m", 120000);
    ok(opt_duration_ms, "+1s", 1000);
    ok(opt_duration_ms, "18446744073709551615ms", UINT64_MAX);
    ok(opt_duration_ms, "18446744073709551s", 18446744073709551000ull);
    ok(opt_duration_ms, "307445734561825m", 307445734561825ull * 60000);
    bad(opt_duration_ms, "18446744073709552s"); /* times 1000 overflows */
    bad(opt_duration_ms, "18446744073709552");  /* the same, seconds by default */
    bad(opt_duration_ms, "307445734561826m");
    bad(opt_duration_ms, "18446744073709551616ms"); /* the number itself overflows */
    bad(opt_duration_ms, "10xs");                   /* junk suffixes */
    bad(opt_duration_ms, "10S");
    bad(opt_duration_ms, "10MS");
    bad(opt_duration_ms, "10M");
    bad(opt_duration_ms, "10h");
    bad(opt_duration_ms, "10sec");
    bad(opt_duration_ms, "10ss");
    bad(opt_duration_ms, "10mss");
    bad(opt_duration_ms, "10us");
    bad(opt_duration_ms, "10 s");
    bad(opt_duration_ms, "-5s");
    bad(opt_duration_ms, "-5ms");
    bad_common(opt_duration_ms);
}

static void
test_opt_size(void **state)
{
    (void)state;
    ok(opt_size, "0", 0);
    ok(opt_size, "4096", 4096);
    ok(opt_size, "64K", 64u << 10);
    ok(opt_size, "64k", 64u << 10);
    ok(opt_size, "1M", 1u << 20);
    ok(opt_size, "256m", 256u << 20);
    ok(opt_size, "1G", 1u << 30);
    ok(opt_size, "3g", 3ull << 30);
    ok(opt_size, "0K", 0);
    ok(opt_size, " 8K", 8192);
    ok(opt_size, "18446744073709551615", UINT64_MAX);
    ok(opt_size, "17179869183G", 17179869183ull << 30);
    ok(opt_size, "18014398509481983K", 18014398509481983ull << 10);
    bad(opt_size, "17179869184G"); /* the shift overflows */
    bad(opt_size, "17592186044416M");
    bad(opt_size, "18014398509481984K");
    bad(opt_size, "18446744073709551616"); /* the number itself overflows */
    bad(opt_size, "1KB");                  /* junk suffixes */
    bad(opt_size, "1KK");
    bad(opt_size, "1Ki");
    bad(opt_size, "1T");
    bad(opt_size, "1B");
    bad(opt_size, "1 K");
    bad(opt_size, "1K ");
    bad(opt_size, "-1K");
    bad(opt_size, "-1");
    bad_common(opt_size);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_u64),
        cmocka_unit_test(test_opt_duration),
        cmocka_unit_test(test_opt_size),
    };
    return cmocka_run_group_tests_name("opt", tests, NULL, NULL);
}
