/* SPDX-License-Identifier: MIT */
/* sha256.h: SHA-256 (FIPS 180-4), HMAC-SHA-256 (RFC 2104) and a constant-time comparison,
 * for the challenge-response authentication of proto.md §6.
 *
 * Streaming: *_init, any number of *_update calls (any split of the input gives the same
 * result), *_final. A context is plain memory: no allocation, nothing to release; *_final
 * wipes it, so it must be initialised again before reuse. */
#ifndef ING_SHA256_H
#define ING_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32   /* digest bytes */
#define SHA256_BLOCK 64 /* block bytes (also the HMAC key block) */

struct sha256 {
    uint32_t h[8];               /* chaining state */
    uint64_t len;                /* message bytes hashed so far */
    uint8_t block[SHA256_BLOCK]; /* partial block */
    size_t fill;                 /* bytes in block, always < SHA256_BLOCK between calls */
};

struct sha256_hmac {
    struct sha256 inner; /* H((K ^ ipad) || message) in progress */
    struct sha256 outer; /* H((K ^ opad) || ...) with the key block already absorbed */
};

/* sha256_init starts a hash. */
void sha256_init(struct sha256 *c);
/* sha256_update hashes n more bytes at p (p may be NULL when n is 0). */
void sha256_update(struct sha256 *c, const void *p, size_t n);
/* sha256_final writes the digest to out and wipes c. */
void sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* sha256_digest hashes p[0..n) in one call. */
void sha256_digest(const void *p, size_t n, uint8_t out[SHA256_LEN]);

/* sha256_hmac_init starts an HMAC with key[0..klen) (any length: a key longer than a block
 * is hashed first, as RFC 2104 says). The key is not kept. */
void sha256_hmac_init(struct sha256_hmac *h, const void *key, size_t klen);
/* sha256_hmac_update authenticates n more bytes at p. */
void sha256_hmac_update(struct sha256_hmac *h, const void *p, size_t n);
/* sha256_hmac_final writes the 32-byte MAC to out and wipes h. */
void sha256_hmac_final(struct sha256_hmac *h, uint8_t out[SHA256_LEN]);
/* sha256_hmac computes HMAC-SHA-256(key, msg) in one call. */
void sha256_hmac(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[SHA256_LEN]);

/* sha256_equal tells whether a[0..n) and b[0..n) are equal, in time that depends on n
 * only: every byte is read, with no early exit and no branch on the data. */
bool sha256_equal(const void *a, const void *b, size_t n);

#endif
