/* SPDX-License-Identifier: MIT */
/* test_opt.c: the numbers of the command lines (src/opt.h): unsigned integers, durations
 * and sizes; each form, the limits of 64 bits, signs, empty strings and junk; ranges
 * (opt_parse) and how they are described in error messages (opt_describe). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>

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
    ok(opt_duration_ms, "10h", 36000000);
    ok(opt_duration_ms, "7d", 604800000);
    ok(opt_duration_ms, "213503982334d", 213503982334ull * 86400000);
    ok(opt_duration_ms, "5124095576030h", 5124095576030ull * 3600000);
    bad(opt_duration_ms, "18446744073709552s"); /* times 1000 overflows */
    bad(opt_duration_ms, "18446744073709552");  /* the same, seconds by default */
    bad(opt_duration_ms, "307445734561826m");
    bad(opt_duration_ms, "18446744073709551616ms"); /* the number itself overflows */
    bad(opt_duration_ms, "10xs");                   /* junk suffixes */
    bad(opt_duration_ms, "10S");
    bad(opt_duration_ms, "10MS");
    bad(opt_duration_ms, "10M");
    bad(opt_duration_ms, "10H");
    bad(opt_duration_ms, "10D");
    bad(opt_duration_ms, "1dd");
    bad(opt_duration_ms, "1hm");
    bad(opt_duration_ms, "213503982335d"); /* times 86,400,000 overflows */
    bad(opt_duration_ms, "5124095576031h");
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

/* parse_ok / parse_bad: opt_parse with a range. */
static void
parse_ok(enum opt_kind k, const char *s, uint64_t min, uint64_t max, uint64_t want)
{
    uint64_t v = UNTOUCHED;
    int rc = opt_parse(k, s, min, max, &v);
    if (rc != 0 || v != want)
        fail_msg("\"%s\" in [%llu, %llu]: %d, %llu; expected %llu", s, (unsigned long long)min,
                 (unsigned long long)max, rc, (unsigned long long)v, (unsigned long long)want);
}

static void
parse_bad(enum opt_kind k, const char *s, uint64_t min, uint64_t max, int want)
{
    uint64_t v = UNTOUCHED;
    int rc = opt_parse(k, s, min, max, &v);
    if (rc != want || v != UNTOUCHED)
        fail_msg("\"%s\" in [%llu, %llu]: %d, expected %d and the output untouched", s,
                 (unsigned long long)min, (unsigned long long)max, rc, want);
}

/* Ranges: the bounds themselves are in, one past them out (-ERANGE, not -EINVAL), and the
 * huge values of issue 13 (which wrapped) are refused. */
static void
test_opt_parse(void **state)
{
    (void)state;
    parse_ok(OPT_KIND_DURATION, "0", 0, OPT_DURATION_MAX_MS, 0);
    parse_ok(OPT_KIND_DURATION, "7d", 0, OPT_DURATION_MAX_MS, OPT_DURATION_MAX_MS);
    parse_ok(OPT_KIND_DURATION, "604800000ms", 0, OPT_DURATION_MAX_MS, OPT_DURATION_MAX_MS);
    parse_bad(OPT_KIND_DURATION, "604800001ms", 0, OPT_DURATION_MAX_MS, -ERANGE);
    parse_bad(OPT_KIND_DURATION, "18446744073709551s", 0, OPT_DURATION_MAX_MS, -ERANGE);
    parse_bad(OPT_KIND_DURATION, "18446744073709552s", 0, OPT_DURATION_MAX_MS, -EINVAL);
    parse_bad(OPT_KIND_DURATION, "0", 1, 3600000, -ERANGE);
    parse_ok(OPT_KIND_DURATION, "1ms", 1, 3600000, 1);
    parse_ok(OPT_KIND_DURATION, "1h", 1, 3600000, 3600000);
    parse_bad(OPT_KIND_DURATION, "61m", 1, 3600000, -ERANGE);
    parse_bad(OPT_KIND_DURATION, "5x", 1, 3600000, -EINVAL);
    parse_ok(OPT_KIND_SIZE, "1G", 4096, OPT_FRAME_MAX, OPT_FRAME_MAX);
    parse_ok(OPT_KIND_SIZE, "4K", 4096, OPT_FRAME_MAX, 4096);
    parse_bad(OPT_KIND_SIZE, "4095", 4096, OPT_FRAME_MAX, -ERANGE);
    parse_bad(OPT_KIND_SIZE, "1073741825", 4096, OPT_FRAME_MAX, -ERANGE);
    parse_bad(OPT_KIND_SIZE, "4294967232", 4096, OPT_FRAME_MAX, -ERANGE);
    parse_bad(OPT_KIND_SIZE, "2G", 4096, OPT_FRAME_MAX, -ERANGE);
    parse_ok(OPT_KIND_COUNT, "255", 0, 255, 255);
    parse_bad(OPT_KIND_COUNT, "256", 0, 255, -ERANGE);
    parse_bad(OPT_KIND_COUNT, "1s", 0, 255, -EINVAL);
    /* A length of at most OPT_FRAME_MAX fits in an int (printf's "%.*s"). */
    assert_true(OPT_FRAME_MAX <= (uint64_t)INT_MAX);
    assert_true(OPT_DURATION_MAX_MS < (1ull << 31));
}

static void
describe(enum opt_kind k, uint64_t min, uint64_t max, const char *want)
{
    char out[96];
    opt_describe(k, min, max, out, sizeof(out));
    assert_string_equal(out, want);
}

static void
test_opt_describe(void **state)
{
    (void)state;
    describe(OPT_KIND_DURATION, 0, OPT_DURATION_MAX_MS, "a duration from 0 to 7d");
    describe(OPT_KIND_DURATION, 1, 3600000, "a duration from 1ms to 1h");
    describe(OPT_KIND_DURATION, 1500, 90000, "a duration from 1500ms to 90s");
    describe(OPT_KIND_DURATION, 120000, 36 * 3600000ull, "a duration from 2m to 36h");
    describe(OPT_KIND_SIZE, 4096, OPT_FRAME_MAX, "a size from 4K to 1G");
    describe(OPT_KIND_SIZE, 1000, 3ull << 20, "a size from 1000 to 3M");
    describe(OPT_KIND_COUNT, 0, 255, "a whole number from 0 to 255");
    char small[12];
    opt_describe(OPT_KIND_SIZE, 4096, OPT_FRAME_MAX, small, sizeof(small)); /* truncated */
    assert_string_equal(small, "a size from");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_u64),      cmocka_unit_test(test_opt_duration),
        cmocka_unit_test(test_opt_size),     cmocka_unit_test(test_opt_parse),
        cmocka_unit_test(test_opt_describe),
    };
    return cmocka_run_group_tests_name("opt", tests, NULL, NULL);
}
