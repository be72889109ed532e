/* SPDX-License-Identifier: MIT */
/* fuzz_mp.c: libFuzzer target for the msgpack reader (src/mp.c) and msgpack -> JSON
 * (src/json.c), on arbitrary bytes.
 *
 * Checked, as documented in include/inginious/mp.h and json.h:
 *   - ing_mp_read / ing_mp_skip / ing_mp_validate never go past the end; validate accepts
 *     exactly one value, is monotonic in max_depth and clamps it at ING_MP_DEPTH_LIMIT, and
 *     a value it accepts is skipped to its end (at the same depth) while no proper prefix
 *     of it is accepted;
 *   - ing_mp_utf8_valid agrees with a separate, decode-the-code-point implementation;
 *   - ing_mp_map_get / ing_mp_path stay inside the buffer on any input, and on a validated
 *     map find the first matching str key (checked against a plain walk);
 *   - ing_mp_py_int agrees with a separate implementation of the documented rules;
 *   - ing_mp_to_json refuses exactly what it documents (invalid msgpack, a non-str key,
 *     NaN/inf) and leaves nothing in the writer then; otherwise its output parses back with
 *     ing_json_to_mp into a value equal to the input (ints by value, float32 widened, bin as
 *     a str when it is UTF-8 else as {"$bin": base64}), compact and pretty give the same
 *     value, and converting that value to JSON again gives the same text (a fixed point);
 *     a fixed writer one byte too small gets -ENOMEM. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/json.h"
#include "inginious/mp.h"

#include "fuzz.h"


/* ---- reference UTF-8 check: decode each code point, then judge it ---------------------- */

static bool
ref_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 2;
            cp = c & 0x1fu;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 3;
            cp = c & 0x0fu;
            min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 4;
            cp = c & 0x07u;
            min = 0x10000;
        } else {
            return false;
        }
        if (n - i < k)
            return false;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + j] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

/* ---- reference Python int() of a str (ASCII whitespace, sign, digits with '_') --------- */

static bool
py_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool
ref_py_int_str(const uint8_t *s, size_t n, int64_t *out)
{
    size_t a = 0, b = n;
    while (a < b && py_space(s[a]))
        a++;
    while (b > a && py_space(s[b - 1]))
        b--;
    bool neg = false;
    if (a < b && (s[a] == '+' || s[a] == '-')) {
        neg = s[a] == '-';
        a++;
    }
    /* digits, single underscores only between two digits */
    char digits[64];
    size_t nd = 0;
    bool leading = true;
    if (a == b)
        return false;
    for (size_t i = a; i < b; i++) {
        if (s[i] == '_') {
            if (i == a || i + 1 == b || s[i - 1] == '_' || s[i + 1] == '_')
                return false;
            continue;
        }
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (leading && s[i] == '0')
            continue;
        leading = false;
        if (nd == sizeof(digits))
            return false; /* far too big */
        digits[nd++] = (char)s[i];
    }
    if (nd > 19)
        return false;
    uint64_t mag = 0;
    for (size_t i = 0; i < nd; i++)
        mag = mag * 10 + (uint64_t)(digits[i] - '0');
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return false;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)mag;
    }
    return true;
}

static void
check_py_int(const uint8_t *p, size_t n)
{
    int64_t got = 0x5a5a, want = 0;
    int rc = ing_mp_py_int(p, n, &got);
    CHECK(rc == 0 || rc == -EPROTO);
    struct ing_mp_obj o;
    const uint8_t *q = p;
    bool ok = false;
    if (ing_mp_read(&q, p + n, &o) == 0) {
        switch (o.type) {
        case ING_MP_INT:
            ok = true;
            want = o.v.i;
            break;
        case ING_MP_BOOL:
            ok = true;
            want = o.v.b;
            break;
        case ING_MP_FLOAT:
            if (o.v.f >= -0x1p63 && o.v.f < 0x1p63) {
                ok = true;
                want = (int64_t)trunc(o.v.f);
            }
            break;
        case ING_MP_STR:
            ok = ref_py_int_str(o.v.s.p, o.v.s.len, &want);
            break;
        default:
            break;
        }
    }
    CHECK(ok == (rc == 0));
    if (ok)
        CHECK(got == want);
}

/* ---- walking values --------------------------------------------------------------------- */

/* json_expect walks the validated value at *pp (at container depth `depth`) and reports
 * whether ing_mp_to_json accepts it (every key a str, every float finite), and the deepest
 * nesting its JSON form needs (a non-UTF-8 bin becomes a one-key object). */
static bool
json_expect(const uint8_t **pp, const uint8_t *end, unsigned depth, unsigned *need)
{
    struct ing_mp_obj o;
    CHECK(ing_mp_read(pp, end, &o) == 0);
    switch (o.type) {
    case ING_MP_FLOAT:
        return isfinite(o.v.f);
    case ING_MP_BIN:
        if (!ing_mp_utf8_valid(o.v.s.p, o.v.s.len) && depth + 1 > *need)
            *need = depth + 1;
        return true;
    case ING_MP_ARRAY:
    case ING_MP_MAP: {
        bool ok = true;
        if (depth + 1 > *need)
            *need = depth + 1;
        for (uint32_t i = 0; i < o.v.n; i++) {
            if (o.type == ING_MP_MAP) {
                struct ing_mp_obj k;
                const uint8_t *kp = *pp;
                CHECK(ing_mp_read(&kp, end, &k) == 0);
                if (k.type != ING_MP_STR)
                    ok = false;
                if (!json_expect(pp, end, depth + 1, need))
                    ok = false;
            }
            if (!json_expect(pp, end, depth + 1, need))
                ok = false;
        }
        return ok;
    }
    default:
        return true;
    }
}

static size_t
base64(const uint8_t *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[k++] = a[v >> 18];
        out[k++] = a[v >> 12 & 63];
        out[k++] = i + 1 < n ? a[v >> 6 & 63] : '=';
        out[k++] = i + 2 < n ? a[v & 63] : '=';
    }
    return k;
}

/* same_value tells whether the value b (produced by JSON -> msgpack) is what the JSON form
 * of value a (the original) must read back as. */
static bool
same_value(const uint8_t **pa, const uint8_t *ea, const uint8_t **pb, const uint8_t *eb)
{
    struct ing_mp_obj a, b;
    CHECK(ing_mp_read(pa, ea, &a) == 0);
    CHECK(ing_mp_read(pb, eb, &b) == 0);
    switch (a.type) {
    case ING_MP_NIL:
        return b.type == ING_MP_NIL;
    case ING_MP_BOOL:
        return b.type == ING_MP_BOOL && a.v.b == b.v.b;
    case ING_MP_INT:
        return b.type == ING_MP_INT && a.v.i == b.v.i;
    case ING_MP_UINT:
        return b.type == ING_MP_UINT && a.v.u == b.v.u;
    case ING_MP_FLOAT:
        return b.type == ING_MP_FLOAT && memcmp(&a.v.f, &b.v.f, sizeof(double)) == 0;
    case ING_MP_STR:
        return b.type == ING_MP_STR && a.v.s.len == b.v.s.len &&
               (a.v.s.len == 0 || memcmp(a.v.s.p, b.v.s.p, a.v.s.len) == 0);
    case ING_MP_BIN: {
        if (ing_mp_utf8_valid(a.v.s.p, a.v.s.len))
            return b.type == ING_MP_STR && a.v.s.len == b.v.s.len &&
                   (a.v.s.len == 0 || memcmp(a.v.s.p, b.v.s.p, a.v.s.len) == 0);
        struct ing_mp_obj k, v;
        if (b.type != ING_MP_MAP || b.v.n != 1)
            return false;
        CHECK(ing_mp_read(pb, eb, &k) == 0);
        CHECK(ing_mp_read(pb, eb, &v) == 0);
        if (k.type != ING_MP_STR || k.v.s.len != 4 || memcmp(k.v.s.p, "$bin", 4) != 0 ||
            v.type != ING_MP_STR)
            return false;
        char *enc = malloc(4 * (a.v.s.len / 3 + 1));
        CHECK(enc != NULL);
        size_t elen = base64(a.v.s.p, a.v.s.len, enc);
        bool same = elen == v.v.s.len && memcmp(enc, v.v.s.p, elen) == 0;
        free(enc);
        return same;
    }
    case ING_MP_ARRAY:
    case ING_MP_MAP:
        if (b.type != a.type || b.v.n != a.v.n)
            return false;
        for (uint32_t i = 0; i < a.v.n * (a.type == ING_MP_MAP ? 2u : 1u); i++)
            if (!same_value(pa, ea, pb, eb))
                return false;
        return true;
    default:
        return false;
    }
}

/* ---- map lookups ---------------------------------------------------------------------- */

/* ref_map_get: the first pair whose key is the str key[0..klen), by a plain walk. */
static int
ref_map_get(const uint8_t *p, size_t n, const uint8_t *key, size_t klen, const uint8_t **val,
            size_t *vlen)
{
    const uint8_t *q = p, *end = p + n;
    struct ing_mp_obj o;
    CHECK(ing_mp_read(&q, end, &o) == 0);
    if (o.type != ING_MP_MAP)
        return -EPROTO;
    for (uint32_t i = 0; i < o.v.n; i++) {
        const uint8_t *k = q, *kq = q;
        struct ing_mp_obj ko;
        CHECK(ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT) == 0);
        CHECK(ing_mp_read(&kq, end, &ko) == 0);
        const uint8_t *v = q;
        CHECK(ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT) == 0);
        (void)k;
        if (ko.type == ING_MP_STR && ko.v.s.len == klen &&
            (klen == 0 || memcmp(ko.v.s.p, key, klen) == 0)) {
            *val = v;
            *vlen = (size_t)(q - v);
            return 0;
        }
    }
    return -ENOENT;
}

static void
check_map_get_any(const uint8_t *p, size_t n, const char *key, size_t klen)
{
    const uint8_t *v = NULL;
    size_t vl = 0;
    int rc = ing_mp_map_get(p, n, key, klen, &v, &vl);
    CHECK(rc == 0 || rc == -ENOENT || rc == -EPROTO);
    if (rc == 0)
        CHECK(v >= p && vl >= 1 && vl <= (size_t)(p + n - v));
}

static void
check_map_get_valid(const uint8_t *p, size_t n, const uint8_t *key, size_t klen)
{
    const uint8_t *v = NULL, *rv = NULL;
    size_t vl = 0, rvl = 0;
    int rc = ing_mp_map_get(p, n, (const char *)key, klen, &v, &vl);
    int want = ref_map_get(p, n, key, klen, &rv, &rvl);
    CHECK(rc == want);
    if (rc == 0) {
        CHECK(v == rv && vl == rvl);
        /* A part of a valid value is a valid value. */
        CHECK(ing_mp_validate(v, vl, ING_MP_MAX_DEPTH) == 0);
    }
}

/* check_map_keys looks up (at most 8 of) the keys the map at p holds, and one it lacks. */
static void
check_map_keys(const uint8_t *p, size_t n)
{
    const uint8_t *q = p, *end = p + n;
    struct ing_mp_obj o;
    CHECK(ing_mp_read(&q, end, &o) == 0);
    if (o.type != ING_MP_MAP) {
        check_map_get_valid(p, n, (const uint8_t *)"x", 1);
        return;
    }
    for (uint32_t i = 0; i < o.v.n && i < 8; i++) {
        const uint8_t *kq = q;
        struct ing_mp_obj ko;
        CHECK(ing_mp_read(&kq, end, &ko) == 0);
        if (ko.type == ING_MP_STR)
            check_map_get_valid(p, n, ko.v.s.p, ko.v.s.len);
        CHECK(ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT) == 0);
        CHECK(ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT) == 0);
    }
    check_map_get_valid(p, n, (const uint8_t *)"\xff-absent", 8);
}

/* ---- msgpack -> JSON -> msgpack ------------------------------------------------------- */

static void
check_to_json(const uint8_t *p, size_t n, bool valid)
{
    struct ing_mp_writer j1;
    ing_mp_writer_init_dyn(&j1);
    CHECK(ing_mp_put_raw(&j1, "#", 1) == 0); /* a prefix that must stay alone on failure */
    int rc = ing_mp_to_json(p, n, &j1, 0);
    if (!valid) {
        CHECK(rc == -EPROTO && j1.len == 1);
        ing_mp_writer_fini(&j1);
        return;
    }
    const uint8_t *q = p;
    unsigned need = 0;
    bool ok = json_expect(&q, p + n, 0, &need);
    CHECK(q == p + n);
    CHECK(rc == (ok ? 0 : -EPROTO));
    if (!ok) {
        CHECK(j1.len == 1);
        ing_mp_writer_fini(&j1);
        return;
    }
    const char *text = (const char *)j1.buf + 1;
    size_t tlen = j1.len - 1;

    struct ing_mp_writer m2;
    struct ing_json_error err;
    ing_mp_writer_init_dyn(&m2);
    rc = ing_json_to_mp(text, tlen, &m2, &err);
    if (need > ING_MP_MAX_DEPTH) {
        /* A non-UTF-8 bin at the deepest level becomes an object one level too deep for
         * the JSON parser: documented nowhere, tolerated here (see the report). */
        CHECK(rc == -EPROTO);
        ing_mp_writer_fini(&m2);
        ing_mp_writer_fini(&j1);
        return;
    }
    if (rc != 0)
        fprintf(stderr, "json_to_mp refused %.*s: %s at %zu\n", (int)tlen, text, err.msg,
                err.offset);
    CHECK(rc == 0);
    CHECK(ing_mp_validate(m2.buf, m2.len, ING_MP_MAX_DEPTH) == 0);
    const uint8_t *pa = p, *pb = m2.buf;
    CHECK(same_value(&pa, p + n, &pb, m2.buf + m2.len));
    CHECK(pa == p + n && pb == m2.buf + m2.len);

    /* A fixed point: the value read back gives the same text. */
    struct ing_mp_writer j2;
    ing_mp_writer_init_dyn(&j2);
    CHECK(ing_mp_to_json(m2.buf, m2.len, &j2, 0) == 0);
    CHECK(j2.len == tlen && memcmp(j2.buf, text, tlen) == 0);
    ing_mp_writer_fini(&j2);

    /* Pretty-printed: the same value. */
    struct ing_mp_writer jp, m3;
    ing_mp_writer_init_dyn(&jp);
    ing_mp_writer_init_dyn(&m3);
    CHECK(ing_mp_to_json(p, n, &jp, 2) == 0);
    CHECK(ing_json_to_mp((const char *)jp.buf, jp.len, &m3, NULL) == 0);
    CHECK(m3.len == m2.len && memcmp(m3.buf, m2.buf, m2.len) == 0);
    ing_mp_writer_fini(&jp);
    ing_mp_writer_fini(&m3);

    /* A fixed writer: exactly big enough, then one byte short. */
    uint8_t *fb = malloc(tlen + 1);
    CHECK(fb != NULL);
    struct ing_mp_writer fw;
    ing_mp_writer_init(&fw, fb, tlen);
    CHECK(ing_mp_to_json(p, n, &fw, 0) == 0);
    CHECK(fw.len == tlen && memcmp(fb, text, tlen) == 0);
    if (tlen > 0) {
        ing_mp_writer_init(&fw, fb, tlen - 1);
        CHECK(ing_mp_to_json(p, n, &fw, 0) == -ENOMEM);
    }
    free(fb);
    CHECK(ing_mp_to_json(p, n, &j1, -1) == -EINVAL);
    ing_mp_writer_fini(&m2);
    ing_mp_writer_fini(&j1);
}

/* LLVMFuzzerTestOneInput is the libFuzzer entry point: data is any bytes. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so ASan sees any read past the end. */
    uint8_t *p = malloc(size ? size : 1);
    CHECK(p != NULL);
    if (size > 0)
        memcpy(p, data, size);
    const uint8_t *end = p + size;

    /* One header. */
    struct ing_mp_obj o;
    const uint8_t *q = p;
    if (ing_mp_read(&q, end, &o) == 0)
        CHECK(q > p && q <= end);
    else
        CHECK(q == p);

    /* Skip, at several depths: monotonic, and always the same end. */
    static const unsigned depths[] = {0, 1, 2, 8, ING_MP_MAX_DEPTH, ING_MP_DEPTH_LIMIT, 5000};
    enum { ND = sizeof(depths) / sizeof(depths[0]) };
    const uint8_t *skip_end[ND];
    int skip_rc[ND], val_rc[ND];
    for (int i = 0; i < ND; i++) {
        q = p;
        skip_rc[i] = ing_mp_skip(&q, end, depths[i]);
        CHECK(skip_rc[i] == 0 || skip_rc[i] == -EPROTO);
        skip_end[i] = q;
        if (skip_rc[i] == 0)
            CHECK(q > p && q <= end);
        if (i > 0 && skip_rc[i - 1] == 0)
            CHECK(skip_rc[i] == 0 && skip_end[i] == skip_end[i - 1]);
        val_rc[i] = ing_mp_validate(p, size, depths[i]);
        CHECK(val_rc[i] == 0 || val_rc[i] == -EPROTO);
        if (i > 0 && val_rc[i - 1] == 0)
            CHECK(val_rc[i] == 0);
        if (val_rc[i] == 0) {
            CHECK(skip_rc[i] == 0 && skip_end[i] == end);
            CHECK(ing_mp_validate(p, size - 1, depths[i]) != 0); /* no proper prefix */
        }
    }
    CHECK(val_rc[ND - 1] == val_rc[ND - 2]); /* 5000 acts as ING_MP_DEPTH_LIMIT */
    CHECK(skip_rc[ND - 1] == skip_rc[ND - 2]);
    CHECK(ing_mp_validate(NULL, size, ING_MP_MAX_DEPTH) == -EPROTO);

    /* UTF-8, against the reference. */
    CHECK(ing_mp_utf8_valid(p, size) == ref_utf8(p, size));

    /* Lookups on anything must stay inside the buffer. */
    check_map_get_any(p, size, "@state", 6);
    check_map_get_any(p, size, "", 0);
    check_map_get_any(p, size, "id", 2);
    static const char *const path[] = {"limits", "time"};
    const uint8_t *v = NULL;
    size_t vl = 0;
    int rc = ing_mp_path(p, size, path, 2, &v, &vl);
    CHECK(rc == 0 || rc == -ENOENT || rc == -EPROTO);
    if (rc == 0)
        CHECK(v >= p && vl >= 1 && vl <= (size_t)(end - v));
    rc = ing_mp_path(p, size, path, 0, &v, &vl);
    CHECK(rc == skip_rc[5]);
    if (rc == 0)
        CHECK(v == p && vl == (size_t)(skip_end[5] - p));

    check_py_int(p, size);

    bool valid = val_rc[4] == 0; /* ING_MP_MAX_DEPTH, as the protocol uses */
    if (valid)
        check_map_keys(p, size);
    check_to_json(p, size, valid);
    free(p);
    return 0;
}
