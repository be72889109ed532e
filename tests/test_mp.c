/* SPDX-License-Identifier: MIT */
/* test_mp.c: msgpack reader, validator, lookups, py_int and writer (src/mp.c), and
 * ing_strerror (src/err.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "inginious/err.h"
#include "inginious/mp.h"
#include "mp_int.h"

/* BYTES(...) expands to "pointer, length" of a byte array literal. */
#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* A copy of some bytes placed so that the byte after them is in a PROT_NONE page: any
 * read past the end faults. */
struct guard {
    uint8_t *map;
    size_t maplen;
};

static const uint8_t *
guard_put(struct guard *g, const uint8_t *data, size_t n)
{
    size_t psz = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = n == 0 ? psz : (n + psz - 1) / psz * psz;
    uint8_t *dst;

    g->maplen = body + psz;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + body, psz, PROT_NONE), 0);
    dst = g->map + body - n;
    if (n > 0)
        memcpy(dst, data, n);
    return dst;
}

static void
guard_free(struct guard *g)
{
    munmap(g->map, g->maplen);
}

/* read_one decodes one header of p[0..n) and checks that it used all n bytes. */
static struct ing_mp_obj
read_one(const uint8_t *p, size_t n)
{
    struct ing_mp_obj o;
    const uint8_t *q = p;

    memset(&o, 0, sizeof(o));
    assert_int_equal(ing_mp_read(&q, p + n, &o), 0);
    assert_ptr_equal(q, p + n);
    return o;
}

static void
test_int_boundaries(void **state)
{
    static const struct {
        int64_t v;
        size_t len;
        uint8_t tag;
    } cases[] = {
        {0, 1, 0x00},
        {1, 1, 0x01},
        {127, 1, 0x7f},
        {128, 2, 0xcc},
        {255, 2, 0xcc},
        {256, 3, 0xcd},
        {65535, 3, 0xcd},
        {65536, 5, 0xce},
        {4294967295LL, 5, 0xce},
        {4294967296LL, 9, 0xcf},
        {INT64_MAX, 9, 0xcf},
        {-1, 1, 0xff},
        {-32, 1, 0xe0},
        {-33, 2, 0xd0},
        {-128, 2, 0xd0},
        {-129, 3, 0xd1},
        {-32768, 3, 0xd1},
        {-32769, 5, 0xd2},
        {INT32_MIN, 5, 0xd2},
        {(int64_t)INT32_MIN - 1, 9, 0xd3},
        {INT64_MIN, 9, 0xd3},
    };
    uint8_t buf[16];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ing_mp_writer w;
        struct ing_mp_obj o;

        ing_mp_writer_init(&w, buf, sizeof(buf));
        assert_int_equal(ing_mp_put_int(&w, cases[i].v), 0);
        assert_int_equal(w.len, cases[i].len);
        assert_int_equal(buf[0], cases[i].tag);
        assert_int_equal(ing_mp_validate(buf, w.len, 1), 0);
        o = read_one(buf, w.len);
        assert_int_equal(o.type, ING_MP_INT);
        assert_true(o.v.i == cases[i].v);
        if (cases[i].v >= 0) {
            /* put_uint gives the same bytes for the same non-negative value */
            uint8_t buf2[16];
            struct ing_mp_writer w2;

            ing_mp_writer_init(&w2, buf2, sizeof(buf2));
            assert_int_equal(ing_mp_put_uint(&w2, (uint64_t)cases[i].v), 0);
            assert_int_equal(w2.len, w.len);
            assert_memory_equal(buf2, buf, w.len);
        }
    }
}

static void
test_int_exact_bytes(void **state)
{
    uint8_t buf[16];
    struct ing_mp_writer w;

    (void)state;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_int(&w, 256);
    assert_memory_equal(buf, ((const uint8_t[]){0xcd, 0x01, 0x00}), 3);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_int(&w, -129);
    assert_memory_equal(buf, ((const uint8_t[]){0xd1, 0xff, 0x7f}), 3);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_int(&w, INT64_MIN);
    assert_memory_equal(buf, ((const uint8_t[]){0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}), 9);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_uint(&w, 4294967296ULL);
    assert_memory_equal(buf, ((const uint8_t[]){0xcf, 0, 0, 0, 1, 0, 0, 0, 0}), 9);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_int(&w, -32769);
    assert_memory_equal(buf, ((const uint8_t[]){0xd2, 0xff, 0xff, 0x7f, 0xff}), 5);
}

static void
test_uint_above_int64(void **state)
{
    uint8_t buf[16];
    struct ing_mp_writer w;
    struct ing_mp_obj o;

    (void)state;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_uint(&w, UINT64_MAX), 0);
    assert_int_equal(w.len, 9);
    assert_memory_equal(buf, ((const uint8_t[]){0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                0xff}), 9);
    o = read_one(buf, w.len);
    assert_int_equal(o.type, ING_MP_UINT);
    assert_true(o.v.u == UINT64_MAX);

    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_uint(&w, (uint64_t)INT64_MAX + 1);
    o = read_one(buf, w.len);
    assert_int_equal(o.type, ING_MP_UINT);
    assert_true(o.v.u == (uint64_t)INT64_MAX + 1);
}

/* Non-minimal integer encodings are valid input and decode to the same value. */
static void
test_int_read_all_forms(void **state)
{
    static const struct {
        uint8_t b[9];
        size_t n;
        int64_t v;
    } cases[] = {
        {{0xcc, 0x05}, 2, 5},
        {{0xcc, 0xff}, 2, 255},
        {{0xcd, 0xff, 0xff}, 3, 65535},
        {{0xce, 0xff, 0xff, 0xff, 0xff}, 5, 4294967295LL},
        {{0xcf, 0, 0, 0, 0, 0, 0, 0, 1}, 9, 1},
        {{0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, INT64_MAX},
        {{0xd0, 0x05}, 2, 5},
        {{0xd0, 0x80}, 2, -128},
        {{0xd1, 0x80, 0x00}, 3, -32768},
        {{0xd1, 0x7f, 0xff}, 3, 32767},
        {{0xd2, 0x80, 0, 0, 0}, 5, INT32_MIN},
        {{0xd2, 0x7f, 0xff, 0xff, 0xff}, 5, INT32_MAX},
        {{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, -1},
        {{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9, INT64_MIN},
        {{0xe0}, 1, -32},
        {{0xff}, 1, -1},
        {{0x7f}, 1, 127},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ing_mp_obj o = read_one(cases[i].b, cases[i].n);

        assert_int_equal(o.type, ING_MP_INT);
        assert_true(o.v.i == cases[i].v);
        assert_int_equal(ing_mp_validate(cases[i].b, cases[i].n, 0), 0);
    }
}

static void
test_float(void **state)
{
    uint8_t buf[16];
    struct ing_mp_writer w;
    struct ing_mp_obj o;

    (void)state;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_double(&w, 1.5), 0);
    assert_memory_equal(buf, ((const uint8_t[]){0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}), 9);
    o = read_one(buf, w.len);
    assert_int_equal(o.type, ING_MP_FLOAT);
    assert_true(o.v.f == 1.5);

    /* doubles are always float64, even when a float32 would hold them */
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_double(&w, 0.0);
    assert_int_equal(w.len, 9);
    assert_int_equal(buf[0], 0xcb);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_double(&w, -0.0);
    o = read_one(buf, w.len);
    assert_true(o.v.f == 0.0 && signbit(o.v.f));

    /* float32 widening */
    o = read_one(BYTES(0xca, 0x3f, 0xc0, 0x00, 0x00));
    assert_int_equal(o.type, ING_MP_FLOAT);
    assert_true(o.v.f == 1.5);
    o = read_one(BYTES(0xca, 0x3d, 0xcc, 0xcc, 0xcd));
    assert_true(o.v.f == (double)0.1f);
    assert_true(o.v.f != 0.1);
    o = read_one(BYTES(0xca, 0xff, 0x80, 0x00, 0x00));
    assert_true(isinf(o.v.f) && o.v.f < 0);
    o = read_one(BYTES(0xca, 0x7f, 0xc0, 0x00, 0x00));
    assert_true(isnan(o.v.f));
    o = read_one(BYTES(0xca, 0x00, 0x00, 0x00, 0x01)); /* smallest float32 denormal */
    assert_true(o.v.f == (double)1.40129846e-45f && o.v.f > 0);
    assert_int_equal(ing_mp_validate(BYTES(0xca, 0, 0, 0, 0), 0), 0);
    assert_int_equal(ing_mp_validate(BYTES(0xcb, 0, 0, 0, 0, 0, 0, 0, 0), 0), 0);
}

static void
test_nil_bool(void **state)
{
    uint8_t buf[4];
    struct ing_mp_writer w;
    struct ing_mp_obj o;

    (void)state;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_nil(&w), 0);
    assert_int_equal(ing_mp_put_bool(&w, false), 0);
    assert_int_equal(ing_mp_put_bool(&w, true), 0);
    assert_int_equal(w.len, 3);
    assert_memory_equal(buf, ((const uint8_t[]){0xc0, 0xc2, 0xc3}), 3);
    o = read_one(buf, 1);
    assert_int_equal(o.type, ING_MP_NIL);
    o = read_one(buf + 1, 1);
    assert_int_equal(o.type, ING_MP_BOOL);
    assert_false(o.v.b);
    o = read_one(buf + 2, 1);
    assert_int_equal(o.type, ING_MP_BOOL);
    assert_true(o.v.b);
}

/* str and bin at each length switch: header bytes, read-back view, validation. */
static void
test_str_bin_lengths(void **state)
{
    static const struct {
        size_t len;
        uint8_t str_tag;
        size_t str_hdr;
        uint8_t bin_tag;
        size_t bin_hdr;
    } cases[] = {
        {0, 0xa0, 1, 0xc4, 2},
        {1, 0xa1, 1, 0xc4, 2},
        {31, 0xbf, 1, 0xc4, 2},
        {32, 0xd9, 2, 0xc4, 2},
        {255, 0xd9, 2, 0xc4, 2},
        {256, 0xda, 3, 0xc5, 3},
        {65535, 0xda, 3, 0xc5, 3},
        {65536, 0xdb, 5, 0xc6, 5},
        {70000, 0xdb, 5, 0xc6, 5},
    };
    char *payload = malloc(70000);
    size_t i;

    (void)state;
    assert_non_null(payload);
    for (i = 0; i < 70000; i++)
        payload[i] = (char)('a' + i % 26);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ing_mp_writer w;
        struct ing_mp_obj o;
        size_t len = cases[i].len;

        ing_mp_writer_init_dyn(&w);
        assert_int_equal(ing_mp_put_str(&w, payload, len), 0);
        assert_int_equal(w.len, cases[i].str_hdr + len);
        assert_int_equal(w.buf[0], cases[i].str_tag);
        o = read_one(w.buf, w.len);
        assert_int_equal(o.type, ING_MP_STR);
        assert_int_equal(o.v.s.len, len);
        assert_ptr_equal(o.v.s.p, w.buf + cases[i].str_hdr);
        assert_int_equal(ing_mp_validate(w.buf, w.len, 0), 0);

        /* the header-only form gives the same header */
        w.len = 0;
        assert_int_equal(ing_mp_put_str_header(&w, (uint32_t)len), 0);
        assert_int_equal(w.len, cases[i].str_hdr);
        assert_int_equal(w.buf[0], cases[i].str_tag);

        w.len = 0;
        assert_int_equal(ing_mp_put_bin(&w, payload, len), 0);
        assert_int_equal(w.len, cases[i].bin_hdr + len);
        assert_int_equal(w.buf[0], cases[i].bin_tag);
        o = read_one(w.buf, w.len);
        assert_int_equal(o.type, ING_MP_BIN);
        assert_int_equal(o.v.s.len, len);
        assert_memory_equal(o.v.s.p, payload, len);
        assert_int_equal(ing_mp_validate(w.buf, w.len, 0), 0);
        ing_mp_writer_fini(&w);
    }
    free(payload);
}

static void
test_str_exact_headers(void **state)
{
    uint8_t buf[8];
    struct ing_mp_writer w;

    (void)state;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_cstr(&w, "hi"), 0);
    assert_memory_equal(buf, ((const uint8_t[]){0xa2, 'h', 'i'}), 3);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_str_header(&w, 256), 0);
    assert_memory_equal(buf, ((const uint8_t[]){0xda, 0x01, 0x00}), 3);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_str_header(&w, 65536), 0);
    assert_memory_equal(buf, ((const uint8_t[]){0xdb, 0, 1, 0, 0}), 5);
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_str(&w, NULL, 0), 0);
    assert_int_equal(ing_mp_put_bin(&w, NULL, 0), 0);
    assert_memory_equal(buf, ((const uint8_t[]){0xa0, 0xc4, 0x00}), 3);
    /* non-minimal str forms read fine */
    assert_int_equal(ing_mp_validate(BYTES(0xd9, 0x01, 'x'), 0), 0);
    assert_int_equal(ing_mp_validate(BYTES(0xda, 0x00, 0x01, 'x'), 0), 0);
    assert_int_equal(ing_mp_validate(BYTES(0xdb, 0x00, 0x00, 0x00, 0x01, 'x'), 0), 0);
}

/* Arrays and maps at each count switch, with all their elements. */
static void
test_array_map_counts(void **state)
{
    static const struct {
        uint32_t n;
        uint8_t arr_tag, map_tag;
        size_t hdr;
    } cases[] = {
        {0, 0x90, 0x80, 1},
        {15, 0x9f, 0x8f, 1},
        {16, 0xdc, 0xde, 3},
        {65535, 0xdc, 0xde, 3},
        {65536, 0xdd, 0xdf, 5},
    };
    size_t i;
    uint32_t j;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ing_mp_writer w;
        struct ing_mp_obj o;
        const uint8_t *q;

        ing_mp_writer_init_dyn(&w);
        assert_int_equal(ing_mp_put_array(&w, cases[i].n), 0);
        assert_int_equal(w.len, cases[i].hdr);
        assert_int_equal(w.buf[0], cases[i].arr_tag);
        for (j = 0; j < cases[i].n; j++)
            ing_mp_put_int(&w, j % 200);
        q = w.buf;
        assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
        assert_int_equal(o.type, ING_MP_ARRAY);
        assert_int_equal(o.v.n, cases[i].n);
        assert_ptr_equal(q, w.buf + cases[i].hdr);
        assert_int_equal(ing_mp_validate(w.buf, w.len, 1), 0);
        /* one element missing */
        if (cases[i].n > 0)
            assert_int_equal(ing_mp_validate(w.buf, w.len - 1, 1), -EPROTO);
        q = w.buf;
        assert_int_equal(ing_mp_skip(&q, w.buf + w.len, 1), 0);
        assert_ptr_equal(q, w.buf + w.len);

        w.len = 0;
        assert_int_equal(ing_mp_put_map(&w, cases[i].n), 0);
        assert_int_equal(w.len, cases[i].hdr);
        assert_int_equal(w.buf[0], cases[i].map_tag);
        for (j = 0; j < cases[i].n; j++) {
            ing_mp_put_str(&w, "k", 1);
            ing_mp_put_nil(&w);
        }
        q = w.buf;
        assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
        assert_int_equal(o.type, ING_MP_MAP);
        assert_int_equal(o.v.n, cases[i].n);
        assert_int_equal(ing_mp_validate(w.buf, w.len, 1), 0);
        if (cases[i].n > 0)
            assert_int_equal(ing_mp_validate(w.buf, w.len - 1, 1), -EPROTO);
        assert_int_equal(w.err, 0);
        ing_mp_writer_fini(&w);
    }
    /* exact bytes of the 16-bit and 32-bit headers */
    {
        uint8_t buf[8];
        struct ing_mp_writer w;

        ing_mp_writer_init(&w, buf, sizeof(buf));
        ing_mp_put_array(&w, 16);
        assert_memory_equal(buf, ((const uint8_t[]){0xdc, 0x00, 0x10}), 3);
        ing_mp_writer_init(&w, buf, sizeof(buf));
        ing_mp_put_map(&w, 65536);
        assert_memory_equal(buf, ((const uint8_t[]){0xdf, 0x00, 0x01, 0x00, 0x00}), 5);
    }
}

/* One valid encoding of every family, for the truncation test. */
static const struct {
    const char *name;
    uint8_t b[24];
    size_t n;
} valid_encodings[] = {
    {"fixint", {0x05}, 1},
    {"negfixint", {0xf0}, 1},
    {"nil", {0xc0}, 1},
    {"uint8", {0xcc, 0x80}, 2},
    {"uint16", {0xcd, 0x01, 0x00}, 3},
    {"uint32", {0xce, 0, 1, 0, 0}, 5},
    {"uint64", {0xcf, 0, 0, 0, 1, 0, 0, 0, 0}, 9},
    {"int8", {0xd0, 0x80}, 2},
    {"int16", {0xd1, 0x80, 0}, 3},
    {"int32", {0xd2, 0x80, 0, 0, 0}, 5},
    {"int64", {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
    {"float32", {0xca, 0x3f, 0xc0, 0, 0}, 5},
    {"float64", {0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, 9},
    {"fixstr", {0xa3, 'a', 'b', 'c'}, 4},
    {"str8", {0xd9, 3, 'a', 'b', 'c'}, 5},
    {"str16", {0xda, 0, 3, 'a', 'b', 'c'}, 6},
    {"str32", {0xdb, 0, 0, 0, 3, 'a', 'b', 'c'}, 8},
    {"str-utf8", {0xa4, 0xf0, 0x9f, 0x98, 0x80}, 5},
    {"bin8", {0xc4, 2, 0xff, 0x00}, 4},
    {"bin16", {0xc5, 0, 2, 0xff, 0x00}, 5},
    {"bin32", {0xc6, 0, 0, 0, 2, 0xff, 0x00}, 7},
    {"fixarray", {0x92, 0x01, 0xa1, 'x'}, 4},
    {"array16", {0xdc, 0, 2, 0x01, 0xc0}, 5},
    {"array32", {0xdd, 0, 0, 0, 2, 0x01, 0xc0}, 7},
    {"fixmap", {0x81, 0xa1, 'k', 0x91, 0x07}, 5},
    {"map16", {0xde, 0, 1, 0xa1, 'k', 0xcd, 1, 0}, 8},
    {"map32", {0xdf, 0, 0, 0, 1, 0xa1, 'k', 0xc3}, 8},
    {"nested", {0x82, 0xa1, 'a', 0x91, 0x90, 0xa1, 'b', 0x81, 0xa0, 0x80}, 10},
};

/* Every proper prefix of a valid value is refused by validate and skip, without reading
 * past its end (guard page); the whole value passes at the very end of the page too. */
static void
test_truncations_guarded(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(valid_encodings) / sizeof(valid_encodings[0]); i++) {
        const uint8_t *b = valid_encodings[i].b;
        size_t n = valid_encodings[i].n;
        struct guard g;
        const uint8_t *p, *q;
        struct ing_mp_obj o;

        p = guard_put(&g, b, n);
        if (ing_mp_validate(p, n, ING_MP_MAX_DEPTH) != 0)
            fail_msg("%s: valid encoding refused", valid_encodings[i].name);
        q = p;
        assert_int_equal(ing_mp_skip(&q, p + n, ING_MP_MAX_DEPTH), 0);
        assert_ptr_equal(q, p + n);
        q = p;
        assert_int_equal(ing_mp_read(&q, p + n, &o), 0);
        guard_free(&g);

        for (k = 0; k < n; k++) {
            p = guard_put(&g, b, k);
            if (ing_mp_validate(p, k, ING_MP_MAX_DEPTH) != -EPROTO)
                fail_msg("%s: prefix of %zu bytes accepted", valid_encodings[i].name, k);
            q = p;
            assert_int_equal(ing_mp_skip(&q, p + k, ING_MP_MAX_DEPTH), -EPROTO);
            assert_ptr_equal(q, p);
            q = p;
            (void)ing_mp_read(&q, p + k, &o); /* may succeed on a container header */
            assert_true(q <= p + k);
            guard_free(&g);
        }
    }
}

/* Lengths and counts claiming more than the buffer holds, up to 0xFFFFFFFF. */
static void
test_huge_lengths(void **state)
{
    static const struct {
        uint8_t b[8];
        size_t n;
        int read_rc; /* a container header on its own is complete */
    } cases[] = {
        {{0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b'}, 7, -EPROTO},
        {{0xdb, 0xff, 0xff, 0xff, 0xfe}, 5, -EPROTO},
        {{0xdb, 0x00, 0x00, 0x00, 0x03, 'a', 'b'}, 7, -EPROTO},
        {{0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, 6, -EPROTO},
        {{0xc5, 0xff, 0xff, 0x00}, 4, -EPROTO},
        {{0xc4, 0xff, 0x00}, 3, -EPROTO},
        {{0xd9, 0xff, 'a'}, 3, -EPROTO},
        {{0xda, 0xff, 0xff, 'a'}, 4, -EPROTO},
        {{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00}, 7, -EPROTO},
        {{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, 6, 0},
        {{0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0}, 7, 0},
        {{0xdc, 0xff, 0xff, 0xc0}, 4, 0},
        {{0xde, 0xff, 0xff, 0xc0, 0xc0}, 5, 0},
        {{0x9f, 0xc0}, 2, 0},
        {{0x8f, 0xc0, 0xc0}, 3, 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct guard g;
        const uint8_t *p = guard_put(&g, cases[i].b, cases[i].n), *q;
        struct ing_mp_obj o;

        q = p;
        assert_int_equal(ing_mp_read(&q, p + cases[i].n, &o), cases[i].read_rc);
        assert_int_equal(ing_mp_validate(p, cases[i].n, ING_MP_MAX_DEPTH), -EPROTO);
        q = p;
        assert_int_equal(ing_mp_skip(&q, p + cases[i].n, UINT_MAX), -EPROTO);
        guard_free(&g);
    }
    /* the container header itself reports the huge count */
    {
        struct ing_mp_obj o = read_one(BYTES(0xdd, 0xff, 0xff, 0xff, 0xff));

        assert_int_equal(o.type, ING_MP_ARRAY);
        assert_true(o.v.n == UINT32_MAX);
    }
}

static void
test_depth(void **state)
{
    size_t big = 100000, i;
    uint8_t *b = malloc(2 * big + 1);
    const uint8_t *q;

    (void)state;
    assert_non_null(b);
    /* depth bomb: 100000 nested one-element arrays, then nil */
    memset(b, 0x91, big);
    b[big] = 0xc0;
    assert_int_equal(ing_mp_validate(b, big + 1, ING_MP_MAX_DEPTH), -EPROTO);
    assert_int_equal(ing_mp_validate(b, big + 1, UINT_MAX), -EPROTO);
    q = b;
    assert_int_equal(ing_mp_skip(&q, b + big + 1, UINT_MAX), -EPROTO);
    /* and the same bomb under a guard page, truncated */
    {
        struct guard g;
        const uint8_t *p = guard_put(&g, b, big);

        assert_int_equal(ing_mp_validate(p, big, ING_MP_MAX_DEPTH), -EPROTO);
        q = p;
        assert_int_equal(ing_mp_skip(&q, p + big, ING_MP_DEPTH_LIMIT), -EPROTO);
        guard_free(&g);
    }
    /* nested maps: {"": {"": ...}} */
    for (i = 0; i < big; i++) {
        b[2 * i] = 0x81;
        b[2 * i + 1] = 0xa0;
    }
    b[2 * big] = 0xc0;
    assert_int_equal(ing_mp_validate(b, 2 * big + 1, ING_MP_MAX_DEPTH), -EPROTO);
    assert_int_equal(ing_mp_validate(b, 2 * big + 1, UINT_MAX), -EPROTO);

    /* exactly 64 levels pass, 65 do not */
    memset(b, 0x91, 63);
    b[63] = 0x90;
    assert_int_equal(ing_mp_validate(b, 64, ING_MP_MAX_DEPTH), 0);
    b[63] = 0x91;
    b[64] = 0x90;
    assert_int_equal(ing_mp_validate(b, 65, ING_MP_MAX_DEPTH), -EPROTO);
    assert_int_equal(ing_mp_validate(b, 65, ING_MP_MAX_DEPTH + 1), 0);
    /* the ceiling: ING_MP_DEPTH_LIMIT levels pass with any larger max_depth */
    memset(b, 0x91, ING_MP_DEPTH_LIMIT - 1);
    b[ING_MP_DEPTH_LIMIT - 1] = 0x90;
    assert_int_equal(ing_mp_validate(b, ING_MP_DEPTH_LIMIT, UINT_MAX), 0);
    b[ING_MP_DEPTH_LIMIT - 1] = 0x91;
    b[ING_MP_DEPTH_LIMIT] = 0x90;
    assert_int_equal(ing_mp_validate(b, ING_MP_DEPTH_LIMIT + 1, UINT_MAX), -EPROTO);

    /* max_depth 0: scalars only */
    assert_int_equal(ing_mp_validate(BYTES(0x01), 0), 0);
    assert_int_equal(ing_mp_validate(BYTES(0x90), 0), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0x80), 0), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0x90), 1), 0);
    /* siblings do not add depth */
    assert_int_equal(ing_mp_validate(BYTES(0x93, 0x91, 0x01, 0x91, 0x02, 0x90), 2), 0);
    assert_int_equal(ing_mp_validate(BYTES(0x93, 0x91, 0x01, 0x91, 0x91, 0x90), 2), -EPROTO);
    free(b);
}

static void
test_ext_and_c1(void **state)
{
    static const struct {
        uint8_t b[20];
        size_t n;
        int8_t type;
        uint32_t len;
    } exts[] = {
        {{0xd4, 0x01, 0xaa}, 3, 1, 1},
        {{0xd5, 0x02, 0xaa, 0xbb}, 4, 2, 2},
        {{0xd6, 0xff, 1, 2, 3, 4}, 6, -1, 4},
        {{0xd7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8}, 10, 5, 8},
        {{0xd8, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 18, 6, 16},
        {{0xc7, 0x02, 0x07, 0xaa, 0xbb}, 5, 7, 2},
        {{0xc7, 0x00, 0x07}, 3, 7, 0},
        {{0xc8, 0x00, 0x01, 0x08, 0xaa}, 5, 8, 1},
        {{0xc9, 0x00, 0x00, 0x00, 0x01, 0x09, 0xaa}, 7, 9, 1},
    };
    size_t i;
    const uint8_t *q;

    (void)state;
    for (i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        struct ing_mp_obj o = read_one(exts[i].b, exts[i].n);
        uint8_t wrapped[24];

        assert_int_equal(o.type, ING_MP_EXT);
        assert_int_equal(o.ext_type, exts[i].type);
        assert_int_equal(o.v.s.len, exts[i].len);
        assert_ptr_equal(o.v.s.p, exts[i].b + exts[i].n - exts[i].len);
        assert_int_equal(ing_mp_validate(exts[i].b, exts[i].n, 4), -EPROTO);
        /* skip steps over it */
        q = exts[i].b;
        assert_int_equal(ing_mp_skip(&q, exts[i].b + exts[i].n, 4), 0);
        assert_ptr_equal(q, exts[i].b + exts[i].n);
        /* inside an array too */
        wrapped[0] = 0x91;
        memcpy(wrapped + 1, exts[i].b, exts[i].n);
        assert_int_equal(ing_mp_validate(wrapped, exts[i].n + 1, 4), -EPROTO);
        q = wrapped;
        assert_int_equal(ing_mp_skip(&q, wrapped + exts[i].n + 1, 4), 0);
        /* truncated ext: skip refuses */
        q = exts[i].b;
        assert_int_equal(ing_mp_skip(&q, exts[i].b + exts[i].n - 1, 4), -EPROTO);
    }
    /* 0xc1 is never valid */
    q = (const uint8_t *)"\xc1";
    {
        struct ing_mp_obj o;

        assert_int_equal(ing_mp_read(&q, q + 1, &o), -EPROTO);
    }
    q = (const uint8_t *)"\xc1";
    assert_int_equal(ing_mp_skip(&q, q + 1, 4), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0xc1), 4), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0x92, 0x01, 0xc1), 4), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0x81, 0xc1, 0x01), 4), -EPROTO);
}

static void
test_utf8(void **state)
{
    static const struct {
        uint8_t b[5];
        size_t n;
        bool ok;
    } seqs[] = {
        {{0x41}, 1, true},
        {{0xc2, 0x80}, 2, true},                /* U+0080 */
        {{0xdf, 0xbf}, 2, true},                /* U+07FF */
        {{0xe0, 0xa0, 0x80}, 3, true},          /* U+0800 */
        {{0xe2, 0x82, 0xac}, 3, true},          /* euro sign */
        {{0xed, 0x9f, 0xbf}, 3, true},          /* U+D7FF */
        {{0xee, 0x80, 0x80}, 3, true},          /* U+E000 */
        {{0xef, 0xbf, 0xbf}, 3, true},          /* U+FFFF */
        {{0xf0, 0x90, 0x80, 0x80}, 4, true},    /* U+10000 */
        {{0xf0, 0x9f, 0x98, 0x80}, 4, true},    /* U+1F600 */
        {{0xf4, 0x8f, 0xbf, 0xbf}, 4, true},    /* U+10FFFF */
        {{0x00}, 1, true},                      /* NUL is a valid scalar */
        {{0xc0, 0x80}, 2, false},               /* overlong NUL */
        {{0xc1, 0xbf}, 2, false},               /* overlong */
        {{0xe0, 0x80, 0x80}, 3, false},         /* overlong 3-byte */
        {{0xe0, 0x9f, 0xbf}, 3, false},         /* overlong U+07FF */
        {{0xf0, 0x80, 0x80, 0x80}, 4, false},   /* overlong 4-byte */
        {{0xf0, 0x8f, 0xbf, 0xbf}, 4, false},   /* overlong U+FFFF */
        {{0xed, 0xa0, 0x80}, 3, false},         /* U+D800 */
        {{0xed, 0xbf, 0xbf}, 3, false},         /* U+DFFF */
        {{0xed, 0xa0, 0x80, 0xed}, 4, false},   /* surrogate then junk */
        {{0xf4, 0x90, 0x80, 0x80}, 4, false},   /* U+110000 */
        {{0xf5, 0x80, 0x80, 0x80}, 4, false},
        {{0xf8, 0x88, 0x80, 0x80, 0x80}, 5, false},
        {{0xff}, 1, false},
        {{0xfe}, 1, false},
        {{0x80}, 1, false},                     /* lone continuation */
        {{0xbf}, 1, false},
        {{0xc2}, 1, false},                     /* truncated */
        {{0xe2, 0x82}, 2, false},
        {{0xf0, 0x9f, 0x98}, 3, false},
        {{0xc2, 0x41}, 2, false},               /* bad continuation */
        {{0xe2, 0x28, 0xa1}, 3, false},
        {{0xe2, 0x82, 0x28}, 3, false},
        {{0xf0, 0x9f, 0x28, 0x80}, 4, false},
        {{0xf0, 0x9f, 0x98, 0x28}, 4, false},
    };
    size_t i, pos;

    (void)state;
    for (i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        uint8_t buf[64];
        size_t n = seqs[i].n;
        int want = seqs[i].ok ? 0 : -EPROTO;
        struct guard g;
        const uint8_t *p;

        if (ing_mp_utf8_valid(seqs[i].b, n) != seqs[i].ok)
            fail_msg("utf8_valid wrong for case %zu", i);
        /* as a str value, at the very end of a page */
        buf[0] = (uint8_t)(0xa0 | n);
        memcpy(buf + 1, seqs[i].b, n);
        p = guard_put(&g, buf, n + 1);
        assert_int_equal(ing_mp_validate(p, n + 1, 1), want);
        guard_free(&g);
        /* as a map key: {<str>: 1} */
        buf[0] = 0x81;
        buf[1] = (uint8_t)(0xa0 | n);
        memcpy(buf + 2, seqs[i].b, n);
        buf[2 + n] = 0x01;
        assert_int_equal(ing_mp_validate(buf, n + 3, 1), want);
        /* inside a longer ASCII string, at every offset around the 16-byte steps */
        for (pos = 0; pos < 40; pos++) {
            uint8_t s[64];

            memset(s, 'x', sizeof(s));
            memcpy(s + pos, seqs[i].b, n);
            if (ing_mp_utf8_valid(s, pos + n + 7) != seqs[i].ok)
                fail_msg("utf8_valid wrong for case %zu at offset %zu", i, pos);
            p = guard_put(&g, s, pos + n);
            if (ing_mp_utf8_valid(p, pos + n) != seqs[i].ok)
                fail_msg("utf8_valid wrong for case %zu at end, offset %zu", i, pos);
            guard_free(&g);
        }
        /* bin is not text: never checked */
        buf[0] = 0xc4;
        buf[1] = (uint8_t)n;
        memcpy(buf + 2, seqs[i].b, n);
        assert_int_equal(ing_mp_validate(buf, n + 2, 1), 0);
    }
    assert_true(ing_mp_utf8_valid(NULL, 0));
    /* skip does not look at UTF-8 */
    {
        const uint8_t *q = (const uint8_t *)"\xa1\xff";

        assert_int_equal(ing_mp_skip(&q, q + 2, 1), 0);
    }
}

static void
test_trailing_and_empty(void **state)
{
    const uint8_t two[2] = {0xc0, 0xc0};
    const uint8_t *r = two;
    struct ing_mp_obj o;

    (void)state;
    assert_int_equal(ing_mp_validate(two, 2, 1), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0x91, 0x01, 0x02), 1), -EPROTO);
    assert_int_equal(ing_mp_validate(BYTES(0xa1, 'a', 0x00), 1), -EPROTO);
    assert_int_equal(ing_mp_validate(two, 0, 1), -EPROTO);
    assert_int_equal(ing_mp_validate(NULL, 0, 1), -EPROTO);
    /* skip takes one value and leaves the rest */
    assert_int_equal(ing_mp_skip(&r, two + 2, 1), 0);
    assert_ptr_equal(r, two + 1);
    r = two;
    assert_int_equal(ing_mp_read(&r, two, &o), -EPROTO);
    assert_int_equal(ing_mp_skip(&r, two, 1), -EPROTO);
    assert_ptr_equal(r, two);
}

/* {"abc": [1, 2], "ab": {"c": "x", "d": {"e": 5}}, 7: "int key", [1]: "array key",
 *  "a": 1, "ab": "second", "": true} */
static void
build_lookup_doc(struct ing_mp_writer *w)
{
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, 7);
    ing_mp_put_cstr(w, "abc");
    ing_mp_put_array(w, 2);
    ing_mp_put_int(w, 1);
    ing_mp_put_int(w, 2);
    ing_mp_put_cstr(w, "ab");
    ing_mp_put_map(w, 2);
    ing_mp_put_cstr(w, "c");
    ing_mp_put_cstr(w, "x");
    ing_mp_put_cstr(w, "d");
    ing_mp_put_map(w, 1);
    ing_mp_put_cstr(w, "e");
    ing_mp_put_int(w, 5);
    ing_mp_put_int(w, 7);
    ing_mp_put_cstr(w, "int key");
    ing_mp_put_array(w, 1);
    ing_mp_put_int(w, 1);
    ing_mp_put_cstr(w, "array key");
    ing_mp_put_cstr(w, "a");
    ing_mp_put_int(w, 1);
    ing_mp_put_cstr(w, "ab");
    ing_mp_put_cstr(w, "second");
    ing_mp_put_cstr(w, "");
    ing_mp_put_bool(w, true);
    assert_int_equal(w->err, 0);
    assert_int_equal(ing_mp_validate(w->buf, w->len, ING_MP_MAX_DEPTH), 0);
}

static void
test_map_get(void **state)
{
    struct ing_mp_writer w;
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;

    (void)state;
    build_lookup_doc(&w);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "a", 1, &v, &vl), 0);
    assert_int_equal(vl, 1);
    assert_int_equal(v[0], 0x01);
    /* "ab" is a prefix of "abc" (which comes first) and "a" a prefix of both */
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "ab", 2, &v, &vl), 0);
    o = read_one(v, 1);
    assert_int_equal(o.type, ING_MP_MAP);
    assert_int_equal(o.v.n, 2);
    assert_int_equal(ing_mp_validate(v, vl, 4), 0);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "abc", 3, &v, &vl), 0);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, ((const uint8_t[]){0x92, 0x01, 0x02}), 3);
    /* a key given with an explicit length, not NUL-terminated */
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "abcdef", 3, &v, &vl), 0);
    assert_int_equal(vl, 3);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "", 0, &v, &vl), 0);
    assert_int_equal(v[0], 0xc3);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "abcd", 4, &v, &vl), -ENOENT);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "b", 1, &v, &vl), -ENOENT);
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "c", 1, &v, &vl), -ENOENT); /* nested only */
    /* non-str keys are skipped, never matched */
    assert_int_equal(ing_mp_map_get(w.buf, w.len, "\x07", 1, &v, &vl), -ENOENT);
    /* not a map */
    assert_int_equal(ing_mp_map_get(BYTES(0x92, 0x01, 0x02), "a", 1, &v, &vl), -EPROTO);
    assert_int_equal(ing_mp_map_get(BYTES(0xa1, 'a'), "a", 1, &v, &vl), -EPROTO);
    assert_int_equal(ing_mp_map_get(BYTES(0xc0), "a", 1, &v, &vl), -EPROTO);
    /* empty map */
    assert_int_equal(ing_mp_map_get(BYTES(0x80), "a", 1, &v, &vl), -ENOENT);
    /* malformed: a map claiming more pairs than present */
    assert_int_equal(ing_mp_map_get(BYTES(0x82, 0xa1, 'x', 0x01), "a", 1, &v, &vl), -EPROTO);
    /* the map may be followed by other bytes in the buffer */
    assert_int_equal(ing_mp_map_get(BYTES(0x81, 0xa1, 'a', 0x05, 0xc0, 0xc0), "a", 1, &v, &vl),
                     0);
    assert_int_equal(vl, 1);
    assert_int_equal(v[0], 0x05);
    ing_mp_writer_fini(&w);
}

static void
test_path(void **state)
{
    static const char *const p_ab_c[] = {"ab", "c"};
    static const char *const p_ab_d_e[] = {"ab", "d", "e"};
    static const char *const p_ab_zz[] = {"ab", "zz"};
    static const char *const p_a_c[] = {"a", "c"};
    static const char *const p_abc_x[] = {"abc", "x"};
    static const char *const p_ab_c_x[] = {"ab", "c", "x"};
    static const char *const p_nope_c[] = {"nope", "c"};
    struct ing_mp_writer w;
    const uint8_t *v;
    size_t vl;

    (void)state;
    build_lookup_doc(&w);
    assert_int_equal(ing_mp_path(w.buf, w.len, p_ab_c, 2, &v, &vl), 0);
    assert_int_equal(vl, 2);
    assert_memory_equal(v, "\xa1x", 2);
    assert_int_equal(ing_mp_path(w.buf, w.len, p_ab_d_e, 3, &v, &vl), 0);
    assert_int_equal(vl, 1);
    assert_int_equal(v[0], 5);
    assert_int_equal(ing_mp_path(w.buf, w.len, p_ab_zz, 2, &v, &vl), -ENOENT);
    assert_int_equal(ing_mp_path(w.buf, w.len, p_nope_c, 2, &v, &vl), -ENOENT);
    assert_int_equal(ing_mp_path(w.buf, w.len, p_a_c, 2, &v, &vl), -EPROTO);   /* 1 */
    assert_int_equal(ing_mp_path(w.buf, w.len, p_abc_x, 2, &v, &vl), -EPROTO); /* array */
    assert_int_equal(ing_mp_path(w.buf, w.len, p_ab_c_x, 3, &v, &vl), -EPROTO); /* str */
    assert_int_equal(ing_mp_path(w.buf, w.len, p_ab_c, 1, &v, &vl), 0);
    assert_int_equal(v[0], 0x82);
    /* no keys: the whole value */
    assert_int_equal(ing_mp_path(w.buf, w.len, NULL, 0, &v, &vl), 0);
    assert_ptr_equal(v, w.buf);
    assert_int_equal(vl, w.len);
    ing_mp_writer_fini(&w);
}

/* py_int on a str value */
static int
py_str(const char *s, int64_t *out)
{
    uint8_t buf[128];
    struct ing_mp_writer w;

    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_cstr(&w, s), 0);
    return ing_mp_py_int(buf, w.len, out);
}

static void
test_py_int(void **state)
{
    static const struct {
        const char *s;
        int ok;
        int64_t v;
    } strs[] = {
        {"30", 1, 30},
        {" 30 ", 1, 30},
        {"\t\n\v\f\r 30\r\n", 1, 30},
        {"+5", 1, 5},
        {"-5", 1, -5},
        {"-0", 1, 0},
        {"+0", 1, 0},
        {"007", 1, 7},
        {"0_7", 1, 7},
        {"1_000", 1, 1000},
        {"1_000_000", 1, 1000000},
        {"9223372036854775807", 1, INT64_MAX},
        {"-9223372036854775808", 1, INT64_MIN},
        {"9223372036854775808", 0, 0},
        {"-9223372036854775809", 0, 0},
        {"99999999999999999999", 0, 0},
        {"abc", 0, 0},
        {"30.5", 0, 0},
        {"30.0", 0, 0},
        {"1e3", 0, 0},
        {"_1", 0, 0},
        {"1_", 0, 0},
        {"1__0", 0, 0},
        {"+_1", 0, 0},
        {"", 0, 0},
        {"   ", 0, 0},
        {"+", 0, 0},
        {"-", 0, 0},
        {"+-5", 0, 0},
        {"- 5", 0, 0},
        {"3 0", 0, 0},
        {"0x10", 0, 0},
        {"\x1c" "30", 0, 0}, /* Python's int() does not strip \x1c..\x1f */
        {"\xd9\xa3", 0, 0}, /* ARABIC-INDIC DIGIT THREE: ASCII digits only here */
    };
    int64_t v;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        v = 12345;
        if (strs[i].ok) {
            if (py_str(strs[i].s, &v) != 0)
                fail_msg("py_int(\"%s\") failed", strs[i].s);
            if (v != strs[i].v)
                fail_msg("py_int(\"%s\") = %lld", strs[i].s, (long long)v);
        } else if (py_str(strs[i].s, &v) != -EPROTO) {
            fail_msg("py_int(\"%s\") accepted", strs[i].s);
        }
    }
    /* a str holding an embedded NUL (put_cstr cannot make it) */
    assert_int_equal(ing_mp_py_int(BYTES(0xa3, '3', 0x00, '0'), &v), -EPROTO);

    assert_int_equal(ing_mp_py_int(BYTES(0x1e), &v), 0);
    assert_int_equal(v, 30);
    assert_int_equal(ing_mp_py_int(BYTES(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0), &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(ing_mp_py_int(BYTES(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
                                   &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(ing_mp_py_int(BYTES(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0), &v), -EPROTO);
    /* wide: up to 2^64 - 1, as int, float or str; not past it */
    bool wide = true;
    assert_int_equal(ing_mp_py_int_wide(BYTES(0x1e), &v, &wide), 0);
    assert_true(v == 30 && !wide);
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 5), &v, &wide), 0);
    assert_true((uint64_t)v == UINT64_C(0x8000000000000005) && wide);
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xcb, 0x43, 0xe0, 0, 0, 0, 0, 0, 0), &v, &wide), 0);
    assert_true((uint64_t)v == UINT64_C(0x8000000000000000) && wide); /* 2^63 as a float */
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xcb, 0x43, 0xf0, 0, 0, 0, 0, 0, 0), &v, &wide),
                     -EPROTO); /* 2^64 */
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xb4, '1', '8', '4', '4', '6', '7', '4', '4', '0', '7',
                                              '3', '7', '0', '9', '5', '5', '1', '6', '1', '5'),
                                        &v, &wide), 0);
    assert_true((uint64_t)v == UINT64_MAX && wide);
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xb4, '1', '8', '4', '4', '6', '7', '4', '4', '0', '7',
                                              '3', '7', '0', '9', '5', '5', '1', '6', '1', '6'),
                                        &v, &wide), -EPROTO);
    assert_int_equal(ing_mp_py_int_wide(BYTES(0xa2, '-', '5'), &v, &wide), 0);
    assert_true(v == -5 && !wide);
    assert_int_equal(ing_mp_py_int(BYTES(0xc3), &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(ing_mp_py_int(BYTES(0xc2), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ing_mp_py_int(BYTES(0xc0), &v), -EPROTO);
    assert_int_equal(ing_mp_py_int(BYTES(0x80), &v), -EPROTO);
    assert_int_equal(ing_mp_py_int(BYTES(0x90), &v), -EPROTO);
    assert_int_equal(ing_mp_py_int(BYTES(0xc4, 0x01, '1'), &v), -EPROTO);
    assert_int_equal(ing_mp_py_int(BYTES(0xd4, 0x01, 0x01), &v), -EPROTO);
    assert_int_equal(ing_mp_py_int(BYTES(0xa1), &v), -EPROTO); /* truncated */
    assert_int_equal(ing_mp_py_int((const uint8_t *)"", 0, &v), -EPROTO);

    /* floats truncate toward zero */
    {
        static const struct {
            double f;
            int ok;
            int64_t v;
        } fl[] = {
            {12.9, 1, 12},
            {-12.9, 1, -12},
            {0.5, 1, 0},
            {-0.5, 1, 0},
            {-0.0, 1, 0},
            {1e18, 1, 1000000000000000000LL},
            {-9223372036854775808.0, 1, INT64_MIN},
            {9223372036854774784.0, 1, 9223372036854774784LL}, /* largest double < 2^63 */
            {9223372036854775808.0, 0, 0},
            {-9223372036854777856.0, 0, 0},
            {1e300, 0, 0},
            {-1e300, 0, 0},
            {HUGE_VAL, 0, 0},
            {-HUGE_VAL, 0, 0},
            {NAN, 0, 0},
        };

        for (i = 0; i < sizeof(fl) / sizeof(fl[0]); i++) {
            uint8_t buf[9];
            struct ing_mp_writer w;
            int rc;

            ing_mp_writer_init(&w, buf, sizeof(buf));
            ing_mp_put_double(&w, fl[i].f);
            v = 777;
            rc = ing_mp_py_int(buf, w.len, &v);
            if (fl[i].ok) {
                if (rc != 0 || v != fl[i].v)
                    fail_msg("py_int(%g): rc %d v %lld", fl[i].f, rc, (long long)v);
            } else if (rc != -EPROTO) {
                fail_msg("py_int(%g) accepted", fl[i].f);
            }
        }
        /* float32 too */
        assert_int_equal(ing_mp_py_int(BYTES(0xca, 0xc1, 0x4e, 0x66, 0x66), &v), 0); /* -12.9f */
        assert_int_equal(v, -12);
        assert_int_equal(ing_mp_py_int(BYTES(0xca, 0x7f, 0xc0, 0, 0), &v), -EPROTO); /* NaN */
    }
}

static void
test_writer_fixed_overflow(void **state)
{
    uint8_t buf[8];
    struct ing_mp_writer w;

    (void)state;
    memset(buf, 0xee, sizeof(buf));
    ing_mp_writer_init(&w, buf, 4);
    assert_int_equal(ing_mp_put_int(&w, 300), 0); /* 3 bytes */
    assert_int_equal(w.len, 3);
    assert_int_equal(ing_mp_put_cstr(&w, "abc"), -ENOMEM); /* 4 bytes: does not fit */
    assert_int_equal(w.err, -ENOMEM);
    assert_int_equal(w.len, 3);
    assert_int_equal(buf[3], 0xee); /* nothing partial */
    /* sticky: even what would fit now fails */
    assert_int_equal(ing_mp_put_nil(&w), -ENOMEM);
    assert_int_equal(ing_mp_put_raw(&w, "", 0), -ENOMEM);
    assert_int_equal(ing_mp_put_array(&w, 0), -ENOMEM);
    assert_int_equal(w.len, 3);
    assert_int_equal(buf[3], 0xee);

    /* exactly full is fine */
    ing_mp_writer_init(&w, buf, 4);
    assert_int_equal(ing_mp_put_cstr(&w, "abc"), 0);
    assert_int_equal(w.len, 4);
    assert_int_equal(ing_mp_put_raw(&w, "", 0), 0);
    assert_int_equal(ing_mp_put_nil(&w), -ENOMEM);

    /* every put function fails cleanly on a zero-capacity writer */
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_uint(&w, 1), -ENOMEM);
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_double(&w, 1.0), -ENOMEM);
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_bin(&w, "x", 1), -ENOMEM);
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_map(&w, 1), -ENOMEM);
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_bool(&w, true), -ENOMEM);
    ing_mp_writer_init(&w, NULL, 0);
    assert_int_equal(ing_mp_put_str_header(&w, 3), -ENOMEM);
    assert_int_equal(ing_mp_put_raw(&w, "abc", 3), -ENOMEM);

    /* bad arguments set a sticky error too */
    ing_mp_writer_init(&w, buf, sizeof(buf));
    assert_int_equal(ing_mp_put_cstr(&w, NULL), -EINVAL);
    assert_int_equal(ing_mp_put_nil(&w), -EINVAL);
    ing_mp_writer_fini(&w); /* harmless on a fixed writer */
    ing_mp_writer_fini(NULL);
}

static void
test_writer_dynamic(void **state)
{
    struct ing_mp_writer w;
    const uint8_t *q, *end;
    struct ing_mp_obj o;
    char *big;
    uint32_t i, n = 100000;

    (void)state;
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(w.len, 0);
    assert_int_equal(ing_mp_put_array(&w, n), 0);
    for (i = 0; i < n; i++)
        assert_int_equal(ing_mp_put_int(&w, (int64_t)i * 1000 - 50000000), 0);
    assert_int_equal(w.err, 0);
    assert_true(w.cap >= w.len);
    assert_int_equal(ing_mp_validate(w.buf, w.len, 1), 0);
    q = w.buf;
    end = w.buf + w.len;
    assert_int_equal(ing_mp_read(&q, end, &o), 0);
    assert_int_equal(o.v.n, n);
    for (i = 0; i < n; i++) {
        assert_int_equal(ing_mp_read(&q, end, &o), 0);
        assert_true(o.v.i == (int64_t)i * 1000 - 50000000);
    }
    assert_ptr_equal(q, end);

    /* one large append that exceeds the doubling step */
    big = malloc(3u << 20);
    assert_non_null(big);
    memset(big, 'z', 3u << 20);
    w.len = 0;
    assert_int_equal(ing_mp_put_str(&w, big, 3u << 20), 0);
    assert_int_equal(w.len, 5 + (3u << 20));
    assert_int_equal(ing_mp_validate(w.buf, w.len, 0), 0);
    assert_int_equal(ing_mp_put_raw(&w, big, 10), 0);
    free(big);
    ing_mp_writer_fini(&w);
    assert_null(w.buf);
    assert_int_equal(w.len, 0);

    /* a fini'd dynamic writer can be re-initialised and reused */
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(ing_mp_put_cstr(&w, "again"), 0);
    assert_int_equal(w.len, 6);
    ing_mp_writer_fini(&w);
}

static void
test_strerror(void **state)
{
    (void)state;
    assert_string_equal(ing_strerror(0), "success");
    assert_string_equal(ing_strerror(-EPROTO), strerror(EPROTO));
    assert_string_equal(ing_strerror(-ENOMEM), strerror(ENOMEM));
    assert_string_equal(ing_strerror(-EMSGSIZE), strerror(EMSGSIZE));
    assert_string_equal(ing_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(ing_strerror(-EINVAL), strerror(EINVAL));
    assert_string_equal(ing_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
    assert_string_equal(ing_strerror(-EAGAIN), strerror(EAGAIN));
    assert_non_null(ing_strerror(-99999));
    assert_non_null(ing_strerror(INT_MIN));
}

/* mp_validate_next (src/mp_int.h): one walk that finds a value's end and validates it;
 * ing_mp_utf8_valid's short path (up to 32 bytes, word loads) at every length and place. */
static void
test_validate_next_and_short_utf8(void **state)
{
    (void)state;
    /* {"a": ["b", 1]} then a trailing 0x01: stops after the map. */
    static const uint8_t two[] = {0x81, 0xa1, 'a', 0x92, 0xa1, 'b', 0x01, 0x01};
    const uint8_t *p = two;
    assert_int_equal(mp_validate_next(&p, two + sizeof(two), ING_MP_MAX_DEPTH), 0);
    assert_ptr_equal(p, two + 7);
    /* Truncated at every length: refused. */
    for (size_t n = 0; n < 7; n++) {
        p = two;
        assert_int_equal(mp_validate_next(&p, two + n, ING_MP_MAX_DEPTH), -EPROTO);
    }
    static const uint8_t bad_utf8[] = {0x81, 0xa1, 'a', 0xa2, 0xc3, 0x28};
    p = bad_utf8;
    assert_int_equal(mp_validate_next(&p, bad_utf8 + sizeof(bad_utf8), 8), -EPROTO);
    static const uint8_t ext[] = {0x81, 0xa1, 'a', 0xd4, 0x01, 0x00};
    p = ext;
    assert_int_equal(mp_validate_next(&p, ext + sizeof(ext), 8), -EPROTO);
    p = ext; /* ing_mp_skip takes it: only the validation refuses ext */
    assert_int_equal(ing_mp_skip(&p, ext + sizeof(ext), 8), 0);
    static const uint8_t deep[] = {0x91, 0x91, 0x91, 0x90};
    p = deep;
    assert_int_equal(mp_validate_next(&p, deep + sizeof(deep), 3), -EPROTO);
    p = deep;
    assert_int_equal(mp_validate_next(&p, deep + sizeof(deep), 4), 0);

    uint8_t s[40];
    for (size_t n = 0; n <= 33; n++) {
        memset(s, 'a', sizeof(s));
        assert_true(ing_mp_utf8_valid(s, n));
        for (size_t i = 0; i < n; i++) {
            s[i] = 0x80; /* a stray continuation byte */
            assert_false(ing_mp_utf8_valid(s, n));
            s[i] = 'a';
        }
        if (n >= 2) { /* a 2-byte sequence at the end: valid; cut: not */
            s[n - 2] = 0xc3;
            s[n - 1] = 0xa9;
            assert_true(ing_mp_utf8_valid(s, n));
            assert_false(ing_mp_utf8_valid(s, n - 1));
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int_boundaries),
        cmocka_unit_test(test_int_exact_bytes),
        cmocka_unit_test(test_uint_above_int64),
        cmocka_unit_test(test_int_read_all_forms),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_nil_bool),
        cmocka_unit_test(test_str_bin_lengths),
        cmocka_unit_test(test_str_exact_headers),
        cmocka_unit_test(test_array_map_counts),
        cmocka_unit_test(test_truncations_guarded),
        cmocka_unit_test(test_huge_lengths),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_ext_and_c1),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_validate_next_and_short_utf8),
        cmocka_unit_test(test_trailing_and_empty),
        cmocka_unit_test(test_map_get),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_py_int),
        cmocka_unit_test(test_writer_fixed_overflow),
        cmocka_unit_test(test_writer_dynamic),
        cmocka_unit_test(test_strerror),
    };

    return cmocka_run_group_tests_name("mp", tests, NULL, NULL);
}
