/* SPDX-License-Identifier: MIT */
/* mp.c: msgpack reader, validator, path lookup and writer (API in inginious/mp.h).
 *
 * Every length read from the input is compared with the bytes left (end - p) before the
 * payload is touched, so a length near UINT32_MAX can neither over-read nor overflow a
 * pointer. Skip and validate walk nested values iteratively with an explicit stack of
 * "values left" counters, so a depth bomb costs no C recursion.
 */
#include "inginious/mp.h"
#include "mp_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What the first byte of a value announces; one entry per byte value in mp_kind[]. */
enum mp_kind {
    MK_FIX0,   /* complete in one byte: fixint, negative fixint, nil, bool */
    MK_FIX1,   /* one payload byte follows: uint8, int8 */
    MK_FIX2,   /* uint16, int16 */
    MK_FIX4,   /* uint32, int32, float32 */
    MK_FIX8,   /* uint64, int64, float64 */
    MK_FIXSTR, /* fixstr: length in the low 5 bits */
    MK_STR8,   /* str8 */
    MK_STR16,  /* str16 */
    MK_STR32,  /* str32 */
    MK_BIN8,   /* bin8 */
    MK_BIN16,  /* bin16 */
    MK_BIN32,  /* bin32 */
    MK_FIXARR, /* fixarray: count in the low 4 bits */
    MK_ARR16,  /* array16 */
    MK_ARR32,  /* array32 */
    MK_FIXMAP, /* fixmap: pair count in the low 4 bits */
    MK_MAP16,  /* map16 */
    MK_MAP32,  /* map32 */
    MK_FIXEXT, /* fixext 1/2/4/8/16: type byte + fixed data */
    MK_EXT8,   /* ext8 */
    MK_EXT16,  /* ext16 */
    MK_EXT32,  /* ext32 */
    MK_BAD,    /* 0xc1, never used */
};

#define R4(k) k, k, k, k
#define R16(k) R4(k), R4(k), R4(k), R4(k)

static const uint8_t mp_kind[256] = {
    /* 0x00-0x7f positive fixint */
    R16(MK_FIX0), R16(MK_FIX0), R16(MK_FIX0), R16(MK_FIX0),
    R16(MK_FIX0), R16(MK_FIX0), R16(MK_FIX0), R16(MK_FIX0),
    R16(MK_FIXMAP),            /* 0x80-0x8f */
    R16(MK_FIXARR),            /* 0x90-0x9f */
    R16(MK_FIXSTR), R16(MK_FIXSTR), /* 0xa0-0xbf */
    MK_FIX0, MK_BAD, MK_FIX0, MK_FIX0,       /* 0xc0 nil, 0xc1, 0xc2 false, 0xc3 true */
    MK_BIN8, MK_BIN16, MK_BIN32,             /* 0xc4-0xc6 */
    MK_EXT8, MK_EXT16, MK_EXT32,             /* 0xc7-0xc9 */
    MK_FIX4, MK_FIX8,                        /* 0xca float32, 0xcb float64 */
    MK_FIX1, MK_FIX2, MK_FIX4, MK_FIX8,      /* 0xcc-0xcf uint8-64 */
    MK_FIX1, MK_FIX2, MK_FIX4, MK_FIX8,      /* 0xd0-0xd3 int8-64 */
    MK_FIXEXT, MK_FIXEXT, MK_FIXEXT, MK_FIXEXT, MK_FIXEXT, /* 0xd4-0xd8 */
    MK_STR8, MK_STR16, MK_STR32,             /* 0xd9-0xdb */
    MK_ARR16, MK_ARR32,                      /* 0xdc-0xdd */
    MK_MAP16, MK_MAP32,                      /* 0xde-0xdf */
    R16(MK_FIX0), R16(MK_FIX0),              /* 0xe0-0xff negative fixint */
};

static inline uint16_t
load16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t
load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t
load64(const uint8_t *p)
{
    return (uint64_t)load32(p) << 32 | load32(p + 4);
}

static inline size_t
left_of(const uint8_t *p, const uint8_t *end)
{
    return (size_t)(end - p);
}

/* The top bit of each byte of a 64-bit word: any set means a non-ASCII byte. */
#define HIGH_BITS UINT64_C(0x8080808080808080)

/* Data bytes of fixext 0xd4..0xd8. */
static const uint8_t fixext_len[5] = {1, 2, 4, 8, 16};

/* ing_mp_read decodes one header at *pp and advances past it (and past a str/bin/ext
 * payload). Returns 0 or -EPROTO. */
int
ing_mp_read(const uint8_t **pp, const uint8_t *end, struct ing_mp_obj *o)
{
    const uint8_t *p = *pp;
    uint32_t len = 0;
    uint8_t c;
    enum ing_mp_type strtype = ING_MP_STR;

    if (p == NULL || p >= end)
        return -EPROTO;
    c = *p++;
    o->ext_type = 0;
    switch ((enum mp_kind)mp_kind[c]) {
    case MK_FIX0:
        if (c <= 0x7f || c >= 0xe0) {
            o->type = ING_MP_INT;
            o->v.i = (int8_t)c;
        } else if (c == 0xc0) {
            o->type = ING_MP_NIL;
            o->v.u = 0;
        } else {
            o->type = ING_MP_BOOL;
            o->v.b = c == 0xc3;
        }
        break;
    case MK_FIX1:
        if (left_of(p, end) < 1)
            return -EPROTO;
        o->type = ING_MP_INT;
        o->v.i = c == 0xcc ? (int64_t)p[0] : (int64_t)(int8_t)p[0];
        p += 1;
        break;
    case MK_FIX2:
        if (left_of(p, end) < 2)
            return -EPROTO;
        o->type = ING_MP_INT;
        o->v.i = c == 0xcd ? (int64_t)load16(p) : (int64_t)(int16_t)load16(p);
        p += 2;
        break;
    case MK_FIX4:
        if (left_of(p, end) < 4)
            return -EPROTO;
        if (c == 0xca) {
            uint32_t bits = load32(p);
            float f;

            memcpy(&f, &bits, sizeof(f));
            o->type = ING_MP_FLOAT;
            o->v.f = (double)f;
        } else {
            o->type = ING_MP_INT;
            o->v.i = c == 0xce ? (int64_t)load32(p) : (int64_t)(int32_t)load32(p);
        }
        p += 4;
        break;
    case MK_FIX8:
        if (left_of(p, end) < 8)
            return -EPROTO;
        if (c == 0xcb) {
            uint64_t bits = load64(p);

            memcpy(&o->v.f, &bits, sizeof(o->v.f));
            o->type = ING_MP_FLOAT;
        } else if (c == 0xcf) {
            o->v.u = load64(p);
            o->type = o->v.u > INT64_MAX ? ING_MP_UINT : ING_MP_INT;
        } else {
            o->type = ING_MP_INT;
            o->v.i = (int64_t)load64(p);
        }
        p += 8;
        break;
    case MK_FIXSTR:
        len = c & 0x1f;
        goto payload;
    case MK_BIN8:
        strtype = ING_MP_BIN;
        /* fall through */
    case MK_STR8:
        if (left_of(p, end) < 1)
            return -EPROTO;
        len = p[0];
        p += 1;
        goto payload;
    case MK_BIN16:
        strtype = ING_MP_BIN;
        /* fall through */
    case MK_STR16:
        if (left_of(p, end) < 2)
            return -EPROTO;
        len = load16(p);
        p += 2;
        goto payload;
    case MK_BIN32:
        strtype = ING_MP_BIN;
        /* fall through */
    case MK_STR32:
        if (left_of(p, end) < 4)
            return -EPROTO;
        len = load32(p);
        p += 4;
        goto payload;
    case MK_FIXARR:
        o->type = ING_MP_ARRAY;
        o->v.n = c & 0x0f;
        break;
    case MK_ARR16:
    case MK_MAP16:
        if (left_of(p, end) < 2)
            return -EPROTO;
        o->type = c == 0xdc ? ING_MP_ARRAY : ING_MP_MAP;
        o->v.n = load16(p);
        p += 2;
        break;
    case MK_ARR32:
    case MK_MAP32:
        if (left_of(p, end) < 4)
            return -EPROTO;
        o->type = c == 0xdd ? ING_MP_ARRAY : ING_MP_MAP;
        o->v.n = load32(p);
        p += 4;
        break;
    case MK_FIXMAP:
        o->type = ING_MP_MAP;
        o->v.n = c & 0x0f;
        break;
    case MK_FIXEXT:
        strtype = ING_MP_EXT;
        len = fixext_len[c - 0xd4];
        goto ext_type;
    case MK_EXT8:
        strtype = ING_MP_EXT;
        if (left_of(p, end) < 1)
            return -EPROTO;
        len = p[0];
        p += 1;
        goto ext_type;
    case MK_EXT16:
        strtype = ING_MP_EXT;
        if (left_of(p, end) < 2)
            return -EPROTO;
        len = load16(p);
        p += 2;
        goto ext_type;
    case MK_EXT32:
        strtype = ING_MP_EXT;
        if (left_of(p, end) < 4)
            return -EPROTO;
        len = load32(p);
        p += 4;
        goto ext_type;
    case MK_BAD:
    default:
        return -EPROTO;
    }
    *pp = p;
    return 0;

ext_type:
    if (left_of(p, end) < 1)
        return -EPROTO;
    o->ext_type = (int8_t)p[0];
    p += 1;
payload:
    if (left_of(p, end) < len)
        return -EPROTO;
    o->type = strtype;
    o->v.s.p = p;
    o->v.s.len = len;
    *pp = p + len;
    return 0;
}

/* short_is_ascii tells whether the len <= 32 bytes at p are all ASCII, with a few
 * (possibly overlapping) word loads instead of a byte loop. */
static inline bool
short_is_ascii(const uint8_t *p, uint32_t len)
{
    uint64_t acc = 0, w;
    uint32_t a, b, i;

    if (len >= 8) {
        for (i = 0; i + 8 <= len; i += 8) {
            memcpy(&w, p + i, 8);
            acc |= w;
        }
        memcpy(&w, p + len - 8, 8);
        acc |= w;
    } else if (len >= 4) {
        memcpy(&a, p, 4);
        memcpy(&b, p + len - 4, 4);
        acc = a | b;
    } else {
        for (i = 0; i < len; i++)
            acc |= p[i];
    }
    return (acc & HIGH_BITS) == 0;
}

/* utf8_tail checks p[0..end) as ing_mp_utf8_valid does. */
static bool
utf8_tail(const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        uint8_t c = *p;

        if (c < 0x80) {
            /* ASCII fast path: 16 bytes per step while none has its top bit set. */
            while (left_of(p, end) >= 16) {
                uint64_t a, b;

                memcpy(&a, p, 8);
                memcpy(&b, p + 8, 8);
                if ((a | b) & HIGH_BITS) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                    /* jump straight to the first high byte (lowest set bit) */
                    if (a & HIGH_BITS)
                        p += (unsigned)__builtin_ctzll(a & HIGH_BITS) >> 3;
                    else
                        p += 8 + ((unsigned)__builtin_ctzll(b & HIGH_BITS) >> 3);
#endif
                    break;
                }
                p += 16;
            }
            while (p < end && *p < 0x80)
                p++;
            continue;
        }
        if (c < 0xc2) {
            /* stray continuation byte, or 0xc0/0xc1 (always overlong) */
            return false;
        } else if (c < 0xe0) {
            if (left_of(p, end) < 2 || (p[1] & 0xc0) != 0x80)
                return false;
            p += 2;
        } else if (c < 0xf0) {
            /* e0: a0..bf (no overlong); ed: 80..9f (no surrogates) */
            uint8_t lo = c == 0xe0 ? 0xa0 : 0x80;
            uint8_t hi = c == 0xed ? 0x9f : 0xbf;

            if (left_of(p, end) < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
                return false;
            p += 3;
        } else if (c < 0xf5) {
            /* f0: 90..bf (no overlong); f4: 80..8f (nothing above U+10FFFF) */
            uint8_t lo = c == 0xf0 ? 0x90 : 0x80;
            uint8_t hi = c == 0xf4 ? 0x8f : 0xbf;

            if (left_of(p, end) < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
                (p[3] & 0xc0) != 0x80)
                return false;
            p += 4;
        } else {
            return false;
        }
    }
    return true;
}

/* ing_mp_utf8_valid checks strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing
 * above U+10FFFF, no truncated sequence. */
bool
ing_mp_utf8_valid(const uint8_t *p, size_t n)
{
    if (n <= 32) /* a short str (most keys and values): a few word loads when ASCII */
        return short_is_ascii(p, (uint32_t)n) || utf8_tail(p, p + n);
    return utf8_tail(p, p + n);
}

/* walk advances *pp past one complete value. strict: refuse ext and check UTF-8 of every
 * str (validate); otherwise only the structure and the lengths are checked (skip).
 * Iterative: stack[] keeps, for each open container, the number of values its parent
 * still expects; `left` is the count of the innermost one. */
static int
walk(const uint8_t **pp, const uint8_t *end, unsigned max_depth, bool strict)
{
    uint64_t stack[ING_MP_DEPTH_LIMIT];
    const uint8_t *p = *pp;
    uint64_t left = 1;
    uint64_t n;
    unsigned depth = 0;
    uint32_t len;
    uint8_t c;

    if (p == NULL)
        return -EPROTO;
    if (max_depth > ING_MP_DEPTH_LIMIT)
        max_depth = ING_MP_DEPTH_LIMIT;
    for (;;) {
        while (left == 0) {
            if (depth == 0) {
                *pp = p;
                return 0;
            }
            left = stack[--depth];
        }
        left--;
        if (p >= end)
            return -EPROTO;
        c = *p++;
        /* the common one-byte headers first, with plain branches */
        if ((uint8_t)(c - 0xa0) < 0x20) {
            len = c & 0x1f;
            goto str;
        }
        if (c < 0x80 || c >= 0xe0)
            continue;
        switch ((enum mp_kind)mp_kind[c]) {
        case MK_FIX0:
            continue;
        case MK_FIX1:
            len = 1;
            goto fixed;
        case MK_FIX2:
            len = 2;
            goto fixed;
        case MK_FIX4:
            len = 4;
            goto fixed;
        case MK_FIX8:
            len = 8;
            goto fixed;
        case MK_FIXSTR:
            len = c & 0x1f;
            goto str;
        case MK_STR8:
            if (left_of(p, end) < 1)
                return -EPROTO;
            len = p[0];
            p += 1;
            goto str;
        case MK_STR16:
            if (left_of(p, end) < 2)
                return -EPROTO;
            len = load16(p);
            p += 2;
            goto str;
        case MK_STR32:
            if (left_of(p, end) < 4)
                return -EPROTO;
            len = load32(p);
            p += 4;
            goto str;
        case MK_BIN8:
            if (left_of(p, end) < 1)
                return -EPROTO;
            len = p[0];
            p += 1;
            goto fixed;
        case MK_BIN16:
            if (left_of(p, end) < 2)
                return -EPROTO;
            len = load16(p);
            p += 2;
            goto fixed;
        case MK_BIN32:
            if (left_of(p, end) < 4)
                return -EPROTO;
            len = load32(p);
            p += 4;
            goto fixed;
        case MK_FIXARR:
            n = c & 0x0f;
            goto container;
        case MK_ARR16:
            if (left_of(p, end) < 2)
                return -EPROTO;
            n = load16(p);
            p += 2;
            goto container;
        case MK_ARR32:
            if (left_of(p, end) < 4)
                return -EPROTO;
            n = load32(p);
            p += 4;
            goto container;
        case MK_FIXMAP:
            n = (uint64_t)(c & 0x0f) * 2;
            goto container;
        case MK_MAP16:
            if (left_of(p, end) < 2)
                return -EPROTO;
            n = (uint64_t)load16(p) * 2;
            p += 2;
            goto container;
        case MK_MAP32:
            if (left_of(p, end) < 4)
                return -EPROTO;
            n = (uint64_t)load32(p) * 2;
            p += 4;
            goto container;
        case MK_FIXEXT:
            if (strict)
                return -EPROTO;
            len = 1 + (uint32_t)fixext_len[c - 0xd4];
            goto fixed;
        case MK_EXT8:
            if (strict || left_of(p, end) < 1)
                return -EPROTO;
            len = p[0];
            p += 1;
            goto ext;
        case MK_EXT16:
            if (strict || left_of(p, end) < 2)
                return -EPROTO;
            len = load16(p);
            p += 2;
            goto ext;
        case MK_EXT32:
            if (strict || left_of(p, end) < 4)
                return -EPROTO;
            len = load32(p);
            p += 4;
            goto ext;
        case MK_BAD:
        default:
            return -EPROTO;
        }

    ext:
        /* the type byte, then len data bytes: done as two steps to stay overflow-free */
        if (left_of(p, end) < 1)
            return -EPROTO;
        p += 1;
    fixed:
        if (left_of(p, end) < len)
            return -EPROTO;
        p += len;
        continue;
    str:
        if (left_of(p, end) < len)
            return -EPROTO;
        if (strict) {
            /* short strings (most keys): OR the bytes, full check only if one is high */
            if (len <= 32) {
                if (!short_is_ascii(p, len) && !ing_mp_utf8_valid(p, len))
                    return -EPROTO;
            } else if (!ing_mp_utf8_valid(p, len)) {
                return -EPROTO;
            }
        }
        p += len;
        continue;
    container:
        if (depth >= max_depth)
            return -EPROTO;
        /* every element takes at least one byte: refuse impossible counts at once */
        if (n > left_of(p, end))
            return -EPROTO;
        stack[depth++] = left;
        left = n;
    }
}

/* ing_mp_skip advances *p past one complete value (ext allowed, UTF-8 not checked). */
int
ing_mp_skip(const uint8_t **p, const uint8_t *end, unsigned max_depth)
{
    return walk(p, end, max_depth, false);
}

/* ing_mp_validate checks that p[0..n) is exactly one well-formed value without ext and
 * with valid UTF-8 in every str. Returns 0 or -EPROTO. */
int
ing_mp_validate(const uint8_t *p, size_t n, unsigned max_depth)
{
    const uint8_t *q = p;
    int rc;

    if (p == NULL)
        return -EPROTO;
    rc = walk(&q, p + n, max_depth, true);
    if (rc < 0)
        return rc;
    return q == p + n ? 0 : -EPROTO;
}

int
mp_validate_next(const uint8_t **p, const uint8_t *end, unsigned max_depth)
{
    return walk(p, end, max_depth, true);
}

/* ing_mp_map_get finds the first str key equal to key[0..klen) in the map at p and returns
 * a view of its value. Returns 0, -ENOENT or -EPROTO. */
int
ing_mp_map_get(const uint8_t *p, size_t n, const char *key, size_t klen,
               const uint8_t **val, size_t *val_len)
{
    const uint8_t *end, *q, *kstart, *vstart;
    struct ing_mp_obj o, k;
    uint32_t i;
    int rc;

    if (p == NULL)
        return -EPROTO;
    end = p + n;
    q = p;
    rc = ing_mp_read(&q, end, &o);
    if (rc < 0)
        return rc;
    if (o.type != ING_MP_MAP)
        return -EPROTO;
    for (i = 0; i < o.v.n; i++) {
        kstart = q;
        rc = ing_mp_read(&q, end, &k);
        if (rc < 0)
            return rc;
        if (k.type == ING_MP_ARRAY || k.type == ING_MP_MAP) {
            q = kstart;
            rc = ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT);
            if (rc < 0)
                return rc;
        }
        vstart = q;
        rc = ing_mp_skip(&q, end, ING_MP_DEPTH_LIMIT);
        if (rc < 0)
            return rc;
        if (k.type == ING_MP_STR && k.v.s.len == klen &&
            (klen == 0 || memcmp(k.v.s.p, key, klen) == 0)) {
            *val = vstart;
            *val_len = (size_t)(q - vstart);
            return 0;
        }
    }
    return -ENOENT;
}

/* ing_mp_path applies ing_mp_map_get once per key (NUL-terminated); with nkeys == 0 the
 * view is the whole value at p. Returns 0, -ENOENT, -EPROTO or -EINVAL (NULL key). */
int
ing_mp_path(const uint8_t *p, size_t n, const char *const *keys, size_t nkeys,
            const uint8_t **val, size_t *val_len)
{
    const uint8_t *cur = p, *q;
    size_t curlen = n;
    size_t i;
    int rc;

    if (p == NULL)
        return -EPROTO;
    if (nkeys == 0) {
        q = p;
        rc = ing_mp_skip(&q, p + n, ING_MP_DEPTH_LIMIT);
        if (rc < 0)
            return rc;
        *val = p;
        *val_len = (size_t)(q - p);
        return 0;
    }
    for (i = 0; i < nkeys; i++) {
        if (keys[i] == NULL)
            return -EINVAL;
        rc = ing_mp_map_get(cur, curlen, keys[i], strlen(keys[i]), &cur, &curlen);
        if (rc < 0)
            return rc;
    }
    *val = cur;
    *val_len = curlen;
    return 0;
}

static bool
is_py_space(uint8_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Python int(str) for base 10, ASCII only: [ws] [+-] digit (['_'] digit)* [ws]. */
static int
py_int_str(const uint8_t *s, size_t len, int64_t *out, bool *wide)
{
    const uint8_t *end = s + len;
    uint64_t mag = 0, lim;
    bool neg = false;

    while (s < end && is_py_space(*s))
        s++;
    while (end > s && is_py_space(end[-1]))
        end--;
    if (s < end && (*s == '+' || *s == '-')) {
        neg = *s == '-';
        s++;
    }
    if (s == end || *s < '0' || *s > '9')
        return -EPROTO;
    lim = neg ? (uint64_t)INT64_MAX + 1 : wide != NULL ? UINT64_MAX : (uint64_t)INT64_MAX;
    while (s < end) {
        unsigned d;

        if (*s == '_') {
            /* one underscore, only between two digits */
            s++;
            if (s == end || *s < '0' || *s > '9')
                return -EPROTO;
        }
        if (*s < '0' || *s > '9')
            return -EPROTO;
        d = (unsigned)(*s - '0');
        if (mag > (lim - d) / 10)
            return -EPROTO;
        mag = mag * 10 + d;
        s++;
    }
    if (neg)
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        *out = (int64_t)mag;
    if (wide != NULL)
        *wide = !neg && mag > (uint64_t)INT64_MAX;
    return 0;
}

/* py_int converts the value at p as Python int() does, within [-2^63, 2^63), or with wide
 * within [-2^63, 2^64) (then *wide tells a value above INT64_MAX, in *out as its bits). */
static int
py_int(const uint8_t *p, size_t n, int64_t *out, bool *wide)
{
    struct ing_mp_obj o;
    const uint8_t *q = p;
    int rc;

    if (p == NULL)
        return -EPROTO;
    rc = ing_mp_read(&q, p + n, &o);
    if (rc < 0)
        return rc;
    if (wide != NULL)
        *wide = false;
    switch (o.type) {
    case ING_MP_INT:
        *out = o.v.i;
        return 0;
    case ING_MP_UINT:
        if (wide == NULL)
            return -EPROTO;
        *out = (int64_t)o.v.u;
        *wide = true;
        return 0;
    case ING_MP_BOOL:
        *out = o.v.b ? 1 : 0;
        return 0;
    case ING_MP_FLOAT:
        /* [-2^63, 2^63): the cast then truncates toward zero; NaN fails both tests */
        if (o.v.f >= 9223372036854775808.0 && o.v.f < 18446744073709551616.0 && wide != NULL) {
            *out = (int64_t)(uint64_t)o.v.f;
            *wide = true;
            return 0;
        }
        if (!(o.v.f >= -9223372036854775808.0 && o.v.f < 9223372036854775808.0))
            return -EPROTO;
        *out = (int64_t)o.v.f;
        return 0;
    case ING_MP_STR:
        return py_int_str(o.v.s.p, o.v.s.len, out, wide);
    default:
        return -EPROTO;
    }
}

/* ing_mp_py_int converts the value at p as Python int() does. Returns 0 or -EPROTO. */
int
ing_mp_py_int(const uint8_t *p, size_t n, int64_t *out)
{
    return py_int(p, n, out, NULL);
}

/* ing_mp_py_int_wide is ing_mp_py_int up to 2^64 - 1. */
int
ing_mp_py_int_wide(const uint8_t *p, size_t n, int64_t *out, bool *wide)
{
    return py_int(p, n, out, wide);
}

/* ing_mp_writer_init sets w up over caller memory buf[0..cap) (borrowed, never freed). */
void
ing_mp_writer_init(struct ing_mp_writer *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
    w->len = 0;
    w->err = 0;
    w->dyn = false;
}

/* ing_mp_writer_init_dyn sets up a writer that grows with realloc; w owns the buffer. */
void
ing_mp_writer_init_dyn(struct ing_mp_writer *w)
{
    w->buf = NULL;
    w->cap = 0;
    w->len = 0;
    w->err = 0;
    w->dyn = true;
}

/* ing_mp_writer_fini frees a dynamic writer's buffer and resets w; NULL does nothing. */
void
ing_mp_writer_fini(struct ing_mp_writer *w)
{
    if (w == NULL)
        return;
    if (w->dyn)
        free(w->buf);
    w->buf = NULL;
    w->cap = 0;
    w->len = 0;
    w->err = 0;
}

/* reserve makes room for need more bytes, or sets the sticky error. */
static int
reserve(struct ing_mp_writer *w, size_t need)
{
    size_t ncap;
    uint8_t *nbuf;

    if (w->err)
        return w->err;
    if (w->cap - w->len >= need)
        return 0;
    if (!w->dyn || need > SIZE_MAX - w->len) {
        w->err = -ENOMEM;
        return w->err;
    }
    ncap = w->cap != 0 ? w->cap : 64;
    while (ncap - w->len < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = w->len + need;
            break;
        }
        ncap *= 2;
    }
    nbuf = realloc(w->buf, ncap);
    if (nbuf == NULL) {
        w->err = -ENOMEM;
        return w->err;
    }
    w->buf = nbuf;
    w->cap = ncap;
    return 0;
}

/* put_tagged writes tag followed by the low nbytes of v, big-endian. */
static int
put_tagged(struct ing_mp_writer *w, uint8_t tag, uint64_t v, unsigned nbytes)
{
    uint8_t *d;
    unsigned i;
    int rc;

    rc = reserve(w, 1 + (size_t)nbytes);
    if (rc < 0)
        return rc;
    d = w->buf + w->len;
    d[0] = tag;
    for (i = 0; i < nbytes; i++)
        d[1 + i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    w->len += 1 + (size_t)nbytes;
    return 0;
}

/* ing_mp_put_nil appends nil (0xc0). */
int
ing_mp_put_nil(struct ing_mp_writer *w)
{
    return put_tagged(w, 0xc0, 0, 0);
}

/* ing_mp_put_bool appends true (0xc3) or false (0xc2). */
int
ing_mp_put_bool(struct ing_mp_writer *w, bool b)
{
    return put_tagged(w, b ? 0xc3 : 0xc2, 0, 0);
}

/* ing_mp_put_uint appends u in its smallest form: fixint, uint8, 16, 32 or 64. */
int
ing_mp_put_uint(struct ing_mp_writer *w, uint64_t u)
{
    if (u <= 0x7f)
        return put_tagged(w, (uint8_t)u, 0, 0);
    if (u <= UINT8_MAX)
        return put_tagged(w, 0xcc, u, 1);
    if (u <= UINT16_MAX)
        return put_tagged(w, 0xcd, u, 2);
    if (u <= UINT32_MAX)
        return put_tagged(w, 0xce, u, 4);
    return put_tagged(w, 0xcf, u, 8);
}

/* ing_mp_put_int appends i in its smallest form (non-negative values as ing_mp_put_uint;
 * negative ones as negative fixint, int8, 16, 32 or 64). */
int
ing_mp_put_int(struct ing_mp_writer *w, int64_t i)
{
    if (i >= 0)
        return ing_mp_put_uint(w, (uint64_t)i);
    if (i >= -32)
        return put_tagged(w, (uint8_t)(int8_t)i, 0, 0);
    if (i >= INT8_MIN)
        return put_tagged(w, 0xd0, (uint64_t)i, 1);
    if (i >= INT16_MIN)
        return put_tagged(w, 0xd1, (uint64_t)i, 2);
    if (i >= INT32_MIN)
        return put_tagged(w, 0xd2, (uint64_t)i, 4);
    return put_tagged(w, 0xd3, (uint64_t)i, 8);
}

/* ing_mp_put_double appends f as float64 (0xcb, big-endian). */
int
ing_mp_put_double(struct ing_mp_writer *w, double f)
{
    uint64_t bits;

    memcpy(&bits, &f, sizeof(bits));
    return put_tagged(w, 0xcb, bits, 8);
}

/* put_sized writes a length-prefixed header (fix form when fixtag != 0 and len <= fixmax,
 * else tag8/16/32; tag8 == 0 means no 8-bit form) followed by len payload bytes. */
static int
put_sized(struct ing_mp_writer *w, uint8_t fixtag, uint32_t fixmax, uint8_t tag8,
          uint8_t tag16, uint8_t tag32, const void *data, size_t len)
{
    uint8_t hdr[5];
    size_t hlen;
    int rc;

    if (w->err)
        return w->err;
    if (len > UINT32_MAX) {
        w->err = -EMSGSIZE;
        return w->err;
    }
    if (fixtag != 0 && len <= fixmax) {
        hdr[0] = (uint8_t)(fixtag | len);
        hlen = 1;
    } else if (tag8 != 0 && len <= UINT8_MAX) {
        hdr[0] = tag8;
        hdr[1] = (uint8_t)len;
        hlen = 2;
    } else if (len <= UINT16_MAX) {
        hdr[0] = tag16;
        hdr[1] = (uint8_t)(len >> 8);
        hdr[2] = (uint8_t)len;
        hlen = 3;
    } else {
        hdr[0] = tag32;
        hdr[1] = (uint8_t)(len >> 24);
        hdr[2] = (uint8_t)(len >> 16);
        hdr[3] = (uint8_t)(len >> 8);
        hdr[4] = (uint8_t)len;
        hlen = 5;
    }
    if (data == NULL)
        len = 0; /* header only */
    if (len > SIZE_MAX - hlen) {
        w->err = -ENOMEM;
        return w->err;
    }
    rc = reserve(w, hlen + len);
    if (rc < 0)
        return rc;
    memcpy(w->buf + w->len, hdr, hlen);
    if (len > 0)
        memcpy(w->buf + w->len + hlen, data, len);
    w->len += hlen + len;
    return 0;
}

/* ing_mp_put_str appends s[0..len) as fixstr/str8/16/32 (-EMSGSIZE above 4 GiB - 1). */
int
ing_mp_put_str(struct ing_mp_writer *w, const char *s, size_t len)
{
    static const char empty[1] = "";

    if (s == NULL && len > 0) {
        if (w->err == 0)
            w->err = -EINVAL;
        return w->err;
    }
    return put_sized(w, 0xa0, 31, 0xd9, 0xda, 0xdb, s != NULL ? s : empty, len);
}

/* ing_mp_put_cstr appends the NUL-terminated s as a str (-EINVAL for NULL). */
int
ing_mp_put_cstr(struct ing_mp_writer *w, const char *s)
{
    if (s == NULL) {
        if (w->err == 0)
            w->err = -EINVAL;
        return w->err;
    }
    return ing_mp_put_str(w, s, strlen(s));
}

/* ing_mp_put_str_header appends only the str header for a len-byte payload. */
int
ing_mp_put_str_header(struct ing_mp_writer *w, uint32_t len)
{
    return put_sized(w, 0xa0, 31, 0xd9, 0xda, 0xdb, NULL, len);
}

/* ing_mp_put_bin appends p[0..len) as bin8/16/32. */
int
ing_mp_put_bin(struct ing_mp_writer *w, const void *p, size_t len)
{
    static const uint8_t empty[1];

    if (p == NULL && len > 0) {
        if (w->err == 0)
            w->err = -EINVAL;
        return w->err;
    }
    return put_sized(w, 0, 0, 0xc4, 0xc5, 0xc6, p != NULL ? p : empty, len);
}

/* ing_mp_put_array appends an array header for n elements (fixarray/array16/32). */
int
ing_mp_put_array(struct ing_mp_writer *w, uint32_t n)
{
    if (n <= 15)
        return put_tagged(w, (uint8_t)(0x90 | n), 0, 0);
    if (n <= UINT16_MAX)
        return put_tagged(w, 0xdc, n, 2);
    return put_tagged(w, 0xdd, n, 4);
}

/* ing_mp_put_map appends a map header for n pairs (fixmap/map16/32). */
int
ing_mp_put_map(struct ing_mp_writer *w, uint32_t n)
{
    if (n <= 15)
        return put_tagged(w, (uint8_t)(0x80 | n), 0, 0);
    if (n <= UINT16_MAX)
        return put_tagged(w, 0xde, n, 2);
    return put_tagged(w, 0xdf, n, 4);
}

/* ing_mp_put_raw appends p[0..len) as is (pre-encoded msgpack, or any bytes). */
int
ing_mp_put_raw(struct ing_mp_writer *w, const void *p, size_t len)
{
    int rc;

    if (p == NULL && len > 0) {
        if (w->err == 0)
            w->err = -EINVAL;
        return w->err;
    }
    rc = reserve(w, len);
    if (rc < 0)
        return rc;
    if (len > 0)
        memcpy(w->buf + w->len, p, len);
    w->len += len;
    return 0;
}
