/* SPDX-License-Identifier: MIT */
/* rank.c: see rank.h. */
#include "rank.h"

#include <errno.h>
#include <string.h>

void
rank_init(struct rank *r, bool keys)
{
    memset(r, 0, sizeof(*r));
    r->keys = keys;
}

/* The arrays of a ring of cap positions are one pool object: the tree (cap / 64 + 1
 * counters, rounded up to 8 bytes), the bits, the arrivals, the tags (keys). */
static size_t
tree_bytes(uint32_t cap)
{
    return ((cap / 64 + 1) * sizeof(uint32_t) + 7) & ~(size_t)7;
}

static size_t
arrays_bytes(uint32_t cap, bool keys)
{
    return tree_bytes(cap) + cap / 64 * sizeof(uint64_t) + cap * sizeof(uint64_t) * (keys ? 2 : 1);
}

void
rank_fini(struct rank *r, struct pool *p)
{
    if (r->t != NULL)
        pool_free(p, r->t, arrays_bytes(r->cap, r->keys));
    rank_init(r, r->keys);
}

static inline uint32_t
pos(const struct rank *r, uint64_t ord)
{
    return (uint32_t)(ord & (r->cap - 1));
}

/* fw_add flips position p's live bit (d = +1: to live, -1: to dead) and its word's count. */
static void
fw_add(struct rank *r, uint32_t p, int32_t d)
{
    uint32_t nw = r->cap / 64;
    r->bits[p / 64] ^= 1ull << (p % 64);
    for (uint32_t i = p / 64 + 1; i <= nw; i += i & -i)
        r->t[i] = (uint32_t)((int32_t)r->t[i] + d);
}

/* popcount counts x's set bits (without -mpopcnt the builtin calls into libgcc). */
static inline uint32_t
popcount(uint64_t x)
{
    x -= (x >> 1) & 0x5555555555555555ull;
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (uint32_t)((x * 0x0101010101010101ull) >> 56);
}

/* fw_prefix: live positions below p (0 <= p <= cap). */
static uint32_t
fw_prefix(const struct rank *r, uint32_t p)
{
    uint32_t s = 0, w = p / 64;
    for (uint32_t i = w; i > 0; i -= i & -i)
        s += r->t[i];
    if (p % 64 != 0)
        s += popcount(r->bits[w] & ((1ull << (p % 64)) - 1));
    return s;
}

/* fw_kth: the position of the k-th live position (k >= 1, k <= live count). */
static uint32_t
fw_kth(const struct rank *r, uint32_t k)
{
    uint32_t nw = r->cap / 64, i = 0, top = 1;
    while (top * 2 <= nw)
        top *= 2;
    for (uint32_t step = top; step > 0; step >>= 1)
        if (i + step <= nw && r->t[i + step] < k) {
            i += step;
            k -= r->t[i];
        }
    uint64_t b = r->bits[i]; /* word i holds it: drop its first k - 1 live bits */
    while (--k > 0)
        b &= b - 1;
    return i * 64 + (uint32_t)__builtin_ctzll(b);
}

/* first_live: the smallest live ordinal (n > 0). */
static uint64_t
first_live(const struct rank *r)
{
    uint32_t b = pos(r, r->base), before = fw_prefix(r, b);
    if (r->n > before) /* one at or after b */
        return r->base + (fw_kth(r, before + 1) - b);
    return r->base + (r->cap - b) + fw_kth(r, 1); /* wrapped */
}

/* regrow moves the live ordinals of [base, next) into arrays of cap ncap for the window
 * [nbase, next). */
static int
regrow(struct rank *r, struct pool *p, uint32_t ncap, uint64_t nbase)
{
    uint32_t nw = ncap / 64;
    size_t size = arrays_bytes(ncap, r->keys);
    char *blk = pool_alloc(p, size);
    if (blk == NULL)
        return -ENOMEM;
    memset(blk, 0, size); /* unwritten keys are the smallest: keys stay non-decreasing */
    uint32_t *t = (uint32_t *)(void *)blk;
    uint64_t *bits = (uint64_t *)(void *)(blk + tree_bytes(ncap));
    uint64_t *sq = bits + nw, *vt = r->keys ? sq + ncap : NULL;
    if (r->cap > 0)
        for (uint64_t o = r->base; o < r->next; o++) {
            uint32_t op = pos(r, o), np = (uint32_t)(o & (ncap - 1));
            if (r->bits[op / 64] >> (op % 64) & 1)
                bits[np / 64] |= 1ull << (np % 64);
            sq[np] = r->sq[op];
            if (r->keys)
                vt[np] = r->vt[op];
        }
    for (uint32_t i = 1; i <= nw; i++) { /* linear build */
        t[i] += popcount(bits[i - 1]);
        uint32_t up = i + (i & -i);
        if (up <= nw)
            t[up] += t[i];
    }
    if (r->t != NULL)
        pool_free(p, r->t, arrays_bytes(r->cap, r->keys));
    r->t = t;
    r->bits = bits;
    r->vt = vt;
    r->sq = sq;
    r->cap = ncap;
    r->base = nbase;
    return 0;
}

int
rank_reserve(struct rank *r, struct pool *p, uint64_t lo)
{
    uint64_t base = r->base;
    if (lo < base) /* an ordinal that died below the window lives again */
        base = lo;
    else if (r->next + 1 - base > r->cap) /* slide past the dead ones */
        base = r->n > 0 ? first_live(r) : r->next;
    if (lo < base)
        base = lo;
    uint64_t span = r->next + 1 - base;
    if (span <= r->cap) {
        /* Positions entering the window at the bottom were dead (zero) and keep their
         * old keys, which nothing reads until an ordinal is written there. */
        r->base = base;
        return 0;
    }
    uint32_t ncap = r->cap ? r->cap : RANK_MIN_CAP;
    while (ncap < span) {
        if (ncap > UINT32_MAX / 4)
            return -ENOMEM;
        ncap *= 2;
    }
    return regrow(r, p, ncap, base); /* copies the old window [r->base, next) */
}

/* key_below: position q's key is below (vt, sq) (vt counts with keys only). */
static inline bool
key_below(const struct rank *r, uint32_t q, uint64_t vt, uint64_t sq)
{
    uint64_t v = r->keys ? r->vt[q] : 0;
    return v < vt || (v == vt && r->sq[q] < sq);
}

uint64_t
rank_push(struct rank *r, uint64_t vt, uint64_t sq)
{
    uint64_t o = r->next++;
    uint32_t q = pos(r, o);
    r->sq[q] = sq;
    r->top_sq = sq;
    if (r->keys)
        r->vt[q] = vt;
    fw_add(r, q, 1);
    r->n++;
    return o;
}

void
rank_revive(struct rank *r, uint64_t ord, uint64_t vt, uint64_t sq)
{
    if (!r->keys)
        vt = 0;
    /* The dead ordinals above it that the window just took in hold older (smaller) keys:
     * raise them to its key, so that the keys stay non-decreasing. */
    for (uint64_t o = ord; o < r->next; o++) {
        uint32_t q = pos(r, o);
        if (o > ord && !key_below(r, q, vt, sq))
            break;
        r->sq[q] = sq;
        if (r->keys)
            r->vt[q] = vt;
        if (o == r->next - 1)
            r->top_sq = sq;
    }
    fw_add(r, pos(r, ord), 1);
    r->n++;
}

void
rank_kill(struct rank *r, uint64_t ord)
{
    fw_add(r, pos(r, ord), -1);
    r->n--;
    if (r->n == 0)
        r->base = r->next; /* an empty window */
}

uint32_t
rank_before(const struct rank *r, uint64_t ord)
{
    if (r->n == 0 || ord <= r->base)
        return 0;
    uint32_t b = pos(r, r->base), q = pos(r, ord);
    if (ord - r->base >= r->cap) /* ord == base + cap: the whole window */
        return r->n;
    if (b <= q)
        return fw_prefix(r, q) - fw_prefix(r, b);
    return r->n - (fw_prefix(r, b) - fw_prefix(r, q));
}

/* below: ordinal o's key is below (vt, sq); seq: compare the arrival alone. */
static inline bool
below(const struct rank *r, uint64_t o, bool seq, uint64_t vt, uint64_t sq)
{
    return seq ? r->sq[pos(r, o)] < sq : key_below(r, pos(r, o), vt, sq);
}

/* interpolate: the ordinal of [lo, hi] at which key x would fall between lo's key a and
 * hi's key z (a < x <= z), by proportion; in (lo, hi] (lo + 1 when out of that range). */
static uint64_t
interpolate(uint64_t lo, uint64_t hi, uint64_t a, uint64_t z, uint64_t x)
{
    if (x <= a || z <= a || hi <= lo)
        return lo + 1;
    if (x > z)
        return hi;
    uint64_t g = lo + (uint64_t)((double)(x - a) / (double)(z - a) * (double)(hi - lo));
    return g <= lo ? lo + 1 : g > hi ? hi : g;
}

#define GALLOP_STEP 8 /* a gallop's first step: the arrivals of a line */

/* gallop: the first ordinal of (lo, hi] whose key is not below (vt, sq), given that lo's is
 * below and hi's is not and that the keys in between do not decrease. The search starts at
 * guess g, gallops away from it by doubling steps and ends by bisection between the last
 * two probes: O(log d) probes for an answer d ordinals from the guess (at most about twice
 * a plain bisection's), a few in one or two cache lines when the guess is good. */
static uint64_t
gallop(const struct rank *r, uint64_t lo, uint64_t hi, uint64_t g, bool seq, uint64_t vt,
       uint64_t sq)
{
    if (hi <= lo) /* (not called so) */
        return hi;
    if (g <= lo || g > hi)
        g = lo + (hi - lo) / 2 + 1;
    if (below(r, g, seq, vt, sq)) {
        lo = g;
        for (uint64_t step = GALLOP_STEP; step < hi - lo; step *= 2) {
            if (!below(r, lo + step, seq, vt, sq)) {
                hi = lo + step;
                break;
            }
            lo += step;
        }
    } else {
        hi = g;
        for (uint64_t step = GALLOP_STEP; step < hi - lo; step *= 2) {
            if (below(r, hi - step, seq, vt, sq)) {
                lo = hi - step;
                break;
            }
            hi -= step;
        }
    }
    /* below(lo), !below(hi): bisect, without a branch on the keys (a conditional move). */
    uint64_t len = hi - lo;
    while (len > 1) {
        uint64_t half = len / 2;
        lo = below(r, lo + half, seq, vt, sq) ? lo + half : lo;
        len -= half;
    }
    return lo + 1;
}

/* first_not_below: the first ordinal of [base, next) whose key is not below (vt, sq) (or
 * next), the keys of [base, next) being non-decreasing: gallop from the ordinal that
 * interpolation between the window's first and last keys gives (on the tag, or on the
 * arrival with seq or when the tags are equal). n > 0. */
static uint64_t
first_not_below(const struct rank *r, bool seq, uint64_t vt, uint64_t sq)
{
    uint64_t lo = r->base, hi = r->next - 1;
    if (!below(r, lo, seq, vt, sq))
        return lo;
    if (below(r, hi, seq, vt, sq))
        return hi + 1;
    bool by_sq = seq || !r->keys;
    uint64_t a = by_sq ? r->sq[pos(r, lo)] : r->vt[pos(r, lo)];
    uint64_t z = by_sq ? r->sq[pos(r, hi)] : r->vt[pos(r, hi)];
    uint64_t x = by_sq ? sq : vt;
    if (!by_sq && a == z) {
        a = r->sq[pos(r, lo)];
        z = r->sq[pos(r, hi)];
        x = sq;
    }
    return gallop(r, lo, hi, interpolate(lo, hi, a, z, x), seq, vt, sq);
}

uint64_t
rank_seq_guess(const struct rank *r, uint64_t lo, uint64_t lo_sq, uint64_t sq)
{
    return interpolate(lo, r->next - 1, lo_sq, r->top_sq, sq);
}

void
rank_prefetch_before(const struct rank *r, uint64_t ord)
{
    uint32_t q = pos(r, ord), b = pos(r, r->base);
    __builtin_prefetch(&r->sq[q]);
    __builtin_prefetch(&r->bits[q / 64]);
    for (uint32_t i = q / 64; i > 0; i -= i & -i)
        __builtin_prefetch(&r->t[i]);
    for (uint32_t i = b / 64; i > 0; i -= i & -i)
        __builtin_prefetch(&r->t[i]);
}

uint32_t
rank_before_seq_from(const struct rank *r, uint64_t lo, uint64_t lo_sq, uint64_t g, uint64_t sq)
{
    if (r->n == 0 || sq <= lo_sq)
        return 0;
    if (sq > r->top_sq)
        return r->n;
    return rank_before(r, gallop(r, lo, r->next - 1, g, true, 0, sq));
}

uint32_t
rank_before_key(const struct rank *r, uint64_t vt, uint64_t sq)
{
    /* Ordinals of [base, next) have non-decreasing keys (a group's arrivals grow with its
     * ordinals, and so do a key's tags, ties broken by arrival). */
    if (r->n == 0)
        return 0;
    return rank_before(r, first_not_below(r, false, vt, sq));
}

uint32_t
rank_before_seq(const struct rank *r, uint64_t sq)
{
    /* Arrivals grow with the ordinals too (a key's tags grow with its arrivals). */
    if (r->n == 0)
        return 0;
    return rank_before(r, first_not_below(r, true, 0, sq));
}
