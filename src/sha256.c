/* SPDX-License-Identifier: MIT */
/* sha256.c: see sha256.h. Written from FIPS 180-4 §4.1.2, §4.2.2, §5.1.1, §5.3.3, §6.2
 * and RFC 2104 §2. */
#include "sha256.h"

#include <string.h>

#include "bytes.h"

/* FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the
 * first 64 primes. */
static const uint32_t round_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 §5.3.3: the first 32 bits of the fractional parts of the square roots of the
 * first 8 primes. */
static const uint32_t initial_h[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static inline uint32_t
rotr(uint32_t x, unsigned n)
{
    return x >> n | x << (32 - n);
}

/* compress absorbs one 64-byte block into the chaining state (FIPS 180-4 §6.2.2). */
static void
compress(uint32_t st[8], const uint8_t *blk)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = get_u32be(blk + 4 * t);
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    uint32_t e = st[4], f = st[5], g = st[6], h = st[7];
    for (int t = 0; t < 64; t++) {
        uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + big_s1 + ch + round_k[t] + w[t];
        uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = big_s0 + maj;
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += h;
}

void
sha256_init(struct sha256 *c)
{
    memcpy(c->h, initial_h, sizeof(c->h));
    c->len = 0;
    c->fill = 0;
}

void
sha256_update(struct sha256 *c, const void *p, size_t n)
{
    const uint8_t *in = p;
    if (n == 0)
        return;
    c->len += n;
    if (c->fill > 0) {
        size_t take = SHA256_BLOCK - c->fill;
        if (take > n)
            take = n;
        memcpy(c->block + c->fill, in, take);
        c->fill += take;
        in += take;
        n -= take;
        if (c->fill < SHA256_BLOCK)
            return;
        compress(c->h, c->block);
        c->fill = 0;
    }
    while (n >= SHA256_BLOCK) {
        compress(c->h, in);
        in += SHA256_BLOCK;
        n -= SHA256_BLOCK;
    }
    if (n > 0) {
        memcpy(c->block, in, n);
        c->fill = n;
    }
}

void
sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN])
{
    /* Padding (FIPS 180-4 §5.1.1): a 1 bit, zeros up to 56 mod 64, the bit length. */
    uint64_t bits = c->len << 3;
    c->block[c->fill++] = 0x80;
    if (c->fill > SHA256_BLOCK - 8) {
        memset(c->block + c->fill, 0, SHA256_BLOCK - c->fill);
        compress(c->h, c->block);
        c->fill = 0;
    }
    memset(c->block + c->fill, 0, SHA256_BLOCK - 8 - c->fill);
    put_u64be(c->block + SHA256_BLOCK - 8, bits);
    compress(c->h, c->block);
    for (int i = 0; i < 8; i++)
        put_u32be(out + 4 * i, c->h[i]);
    explicit_bzero(c, sizeof(*c));
}

void
sha256_digest(const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256 c;
    sha256_init(&c);
    sha256_update(&c, p, n);
    sha256_final(&c, out);
}

void
sha256_hmac_init(struct sha256_hmac *h, const void *key, size_t klen)
{
    uint8_t k0[SHA256_BLOCK], pad[SHA256_BLOCK];
    memset(k0, 0, sizeof(k0));
    if (klen > SHA256_BLOCK)
        sha256_digest(key, klen, k0);
    else if (klen > 0)
        memcpy(k0, key, klen);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = (uint8_t)(k0[i] ^ 0x36);
    sha256_init(&h->inner);
    sha256_update(&h->inner, pad, sizeof(pad));
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = (uint8_t)(k0[i] ^ 0x5c);
    sha256_init(&h->outer);
    sha256_update(&h->outer, pad, sizeof(pad));
    explicit_bzero(k0, sizeof(k0));
    explicit_bzero(pad, sizeof(pad));
}

void
sha256_hmac_update(struct sha256_hmac *h, const void *p, size_t n)
{
    sha256_update(&h->inner, p, n);
}

void
sha256_hmac_final(struct sha256_hmac *h, uint8_t out[SHA256_LEN])
{
    uint8_t ihash[SHA256_LEN];
    sha256_final(&h->inner, ihash);
    sha256_update(&h->outer, ihash, sizeof(ihash));
    sha256_final(&h->outer, out);
    explicit_bzero(ihash, sizeof(ihash));
}

void
sha256_hmac(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256_hmac h;
    sha256_hmac_init(&h, key, klen);
    sha256_hmac_update(&h, msg, n);
    sha256_hmac_final(&h, out);
}

bool
sha256_equal(const void *a, const void *b, size_t n)
{
    const volatile uint8_t *x = a, *y = b;
    uint32_t diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (uint32_t)(x[i] ^ y[i]);
    /* diff is 0..255: diff - 1 wraps to all ones only when diff is 0; no comparison. */
    return (bool)(((diff - 1) >> 8) & 1);
}
