/* SPDX-License-Identifier: MIT */
/* test_sha256.c: SHA-256 (FIPS 180-4 examples), HMAC-SHA-256 (RFC 4231 test cases 1-7),
 * streaming against one-shot over random split points, and the constant-time comparison. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "sha256.h"

/* unhex decodes the hex string s (no spaces) into out; returns the byte count. */
static size_t
unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s) / 2;
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void
check_digest(const uint8_t got[SHA256_LEN], const char *want_hex)
{
    uint8_t want[SHA256_LEN];
    assert_int_equal(unhex(want_hex, want, sizeof(want)), SHA256_LEN);
    assert_memory_equal(got, want, SHA256_LEN);
}

static void
check_sha(const void *msg, size_t n, const char *want_hex)
{
    uint8_t d[SHA256_LEN];
    sha256_digest(msg, n, d);
    check_digest(d, want_hex);
    /* The same one byte at a time. */
    struct sha256 c;
    sha256_init(&c);
    for (size_t i = 0; i < n; i++)
        sha256_update(&c, (const uint8_t *)msg + i, 1);
    sha256_final(&c, d);
    check_digest(d, want_hex);
}

/* A small deterministic generator (xorshift64*), so every run tests the same splits. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void
test_sha256_fips_abc(void **state)
{
    (void)state;
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void
test_sha256_empty(void **state)
{
    (void)state;
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    uint8_t d[SHA256_LEN];
    struct sha256 c;
    sha256_init(&c);
    sha256_update(&c, NULL, 0);
    sha256_final(&c, d);
    check_digest(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_sha256_fips_two_blocks(void **state)
{
    (void)state;
    /* 448 bits: the padding needs a second block. */
    static const char m448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(strlen(m448), 56);
    check_sha(m448, 56, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* 896 bits (the FIPS 180 SHA-512 example message, hashed with SHA-256). */
    static const char m896[] = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                               "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    assert_int_equal(strlen(m896), 112);
    check_sha(m896, 112, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void
test_sha256_million_a(void **state)
{
    (void)state;
    static const char want[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    uint8_t d[SHA256_LEN];
    sha256_digest(a, 1000000, d);
    check_digest(d, want);
    /* Odd chunk sizes, cycling, so block boundaries fall everywhere. */
    static const size_t chunks[] = {1, 3, 7, 13, 63, 65, 127, 641, 4099, 17};
    struct sha256 c;
    sha256_init(&c);
    size_t done = 0;
    for (size_t i = 0; done < 1000000; i++) {
        size_t k = chunks[i % (sizeof(chunks) / sizeof(chunks[0]))];
        if (k > 1000000 - done)
            k = 1000000 - done;
        sha256_update(&c, a + done, k);
        done += k;
    }
    sha256_final(&c, d);
    check_digest(d, want);
    free(a);
}

/* Every padding case: messages of 0..259 bytes; the digest of their digests was computed
 * with Python's hashlib. */
static void
test_sha256_every_length(void **state)
{
    (void)state;
    uint8_t m[260], d[SHA256_LEN];
    struct sha256 acc;
    sha256_init(&acc);
    for (size_t n = 0; n < 260; n++) {
        for (size_t i = 0; i < n; i++)
            m[i] = (uint8_t)(i * 7 + n);
        sha256_digest(m, n, d);
        sha256_update(&acc, d, sizeof(d));
    }
    sha256_final(&acc, d);
    check_digest(d, "05276a25574d3f5608fda82219045118e93a9ca197ecafd98f2b51fea6680a3e");
}

struct rfc4231_case {
    int no;
    const char *key_hex; /* NULL: key_byte repeated key_len times */
    uint8_t key_byte;
    size_t key_len;
    const char *data; /* text, or NULL: data_byte repeated data_len times */
    uint8_t data_byte;
    size_t data_len;
    const char *mac_hex; /* 64 hex digits, or 32 for the truncated case 5 */
};

static const struct rfc4231_case rfc4231[] = {
    {1, NULL, 0x0b, 20, "Hi There", 0, 0,
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {2, "4a656665", 0, 0, "what do ya want for nothing?", 0, 0,
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {3, NULL, 0xaa, 20, NULL, 0xdd, 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {4, "0102030405060708090a0b0c0d0e0f10111213141516171819", 0, 0, NULL, 0xcd, 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    {5, NULL, 0x0c, 20, "Test With Truncation", 0, 0, "a3b6167473100ee06e0c796c2955552b"},
    {6, NULL, 0xaa, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 0, 0,
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {7, NULL, 0xaa, 131,
     "This is a test using a larger than block-size key and a larger than block-size data. "
     "The key needs to be hashed before being used by the HMAC algorithm.",
     0, 0, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

static void
test_hmac_rfc4231(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc4231) / sizeof(rfc4231[0]); i++) {
        const struct rfc4231_case *tc = &rfc4231[i];
        uint8_t key[200], data[200], want[SHA256_LEN], mac[SHA256_LEN];
        size_t klen, dlen;
        if (tc->key_hex != NULL) {
            klen = unhex(tc->key_hex, key, sizeof(key));
        } else {
            klen = tc->key_len;
            memset(key, tc->key_byte, klen);
        }
        if (tc->data != NULL) {
            dlen = strlen(tc->data);
            memcpy(data, tc->data, dlen);
        } else {
            dlen = tc->data_len;
            memset(data, tc->data_byte, dlen);
        }
        size_t wlen = unhex(tc->mac_hex, want, sizeof(want));
        assert_int_equal(wlen, tc->no == 5 ? 16 : SHA256_LEN);
        sha256_hmac(key, klen, data, dlen, mac);
        if (memcmp(mac, want, wlen) != 0)
            fail_msg("RFC 4231 test case %d: wrong MAC", tc->no);
        /* Streamed, in two uneven parts. */
        struct sha256_hmac h;
        uint8_t mac2[SHA256_LEN];
        sha256_hmac_init(&h, key, klen);
        sha256_hmac_update(&h, data, dlen / 3);
        sha256_hmac_update(&h, data + dlen / 3, dlen - dlen / 3);
        sha256_hmac_final(&h, mac2);
        assert_memory_equal(mac, mac2, SHA256_LEN);
    }
}

/* Keys of every length around the block size (0..138), computed with Python's hmac. */
static void
test_hmac_key_lengths(void **state)
{
    (void)state;
    uint8_t key[140], msg[280], mac[SHA256_LEN], d[SHA256_LEN];
    struct sha256 acc;
    sha256_init(&acc);
    for (size_t kl = 0; kl < 140; kl += 3) {
        for (size_t i = 0; i < kl; i++)
            key[i] = (uint8_t)(i * 13 + kl);
        for (size_t i = 0; i < 2 * kl; i++)
            msg[i] = (uint8_t)(i * 5 + 1);
        sha256_hmac(key, kl, msg, 2 * kl, mac);
        sha256_update(&acc, mac, sizeof(mac));
    }
    sha256_final(&acc, d);
    check_digest(d, "7b47db971e85606e9836f67342cadb4e8845761bd731ad56c4f86f8197824b68");
}

static void
test_streaming_random_splits(void **state)
{
    (void)state;
    enum { MAXLEN = 1100 };
    uint8_t *msg = malloc(MAXLEN);
    assert_non_null(msg);
    for (int round = 0; round < 400; round++) {
        size_t n = (size_t)(rng() % MAXLEN);
        for (size_t i = 0; i < n; i++)
            msg[i] = (uint8_t)rng();
        uint8_t key[100];
        size_t klen = (size_t)(rng() % sizeof(key));
        for (size_t i = 0; i < klen; i++)
            key[i] = (uint8_t)rng();

        uint8_t one[SHA256_LEN], str[SHA256_LEN], mone[SHA256_LEN], mstr[SHA256_LEN];
        sha256_digest(msg, n, one);
        sha256_hmac(key, klen, msg, n, mone);

        struct sha256 c;
        struct sha256_hmac h;
        sha256_init(&c);
        sha256_hmac_init(&h, key, klen);
        size_t pos = 0;
        while (pos < n) {
            /* Split points anywhere, empty updates included. */
            size_t k = (size_t)(rng() % (rng() % 4 == 0 ? 200 : 70));
            if (k > n - pos)
                k = n - pos;
            sha256_update(&c, msg + pos, k);
            sha256_hmac_update(&h, msg + pos, k);
            pos += k;
        }
        sha256_final(&c, str);
        sha256_hmac_final(&h, mstr);
        assert_memory_equal(one, str, SHA256_LEN);
        assert_memory_equal(mone, mstr, SHA256_LEN);
    }
    free(msg);
}

static void
test_equal_constant_time(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = b[i] = (uint8_t)(i * 37 + 11);
    assert_true(sha256_equal(a, b, sizeof(a)));
    assert_true(sha256_equal(a, b, 0));
    assert_true(sha256_equal(a, a, sizeof(a)));
    assert_true(sha256_equal(NULL, NULL, 0));
    /* Every single-bit difference, at every position, is seen. */
    for (size_t i = 0; i < sizeof(a); i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            assert_false(sha256_equal(a, b, sizeof(a)));
            assert_false(sha256_equal(b, a, sizeof(a)));
            assert_true(sha256_equal(a, b, i)); /* the prefix before it is still equal */
            b[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Differences that cancel in a sum or a xor of bytes are still differences. */
    b[0] ^= 0xff;
    b[1] ^= 0xff;
    assert_false(sha256_equal(a, b, sizeof(a)));
    memcpy(b, a, sizeof(a));
    b[3] = (uint8_t)(a[3] + 1);
    b[4] = (uint8_t)(a[4] - 1);
    assert_false(sha256_equal(a, b, sizeof(a)));
    /* Every byte value against every other. */
    for (unsigned x = 0; x < 256; x++)
        for (unsigned y = 0; y < 256; y++) {
            uint8_t p = (uint8_t)x, q = (uint8_t)y;
            assert_int_equal(sha256_equal(&p, &q, 1), x == y);
        }
    /* The result is exactly true or false (a bool, not a difference mask). */
    uint8_t z1[32] = {0}, z2[32] = {0};
    z2[31] = 0x80;
    bool r = sha256_equal(z1, z2, 32);
    assert_int_equal((int)r, 0);
    r = sha256_equal(z1, z1, 32);
    assert_int_equal((int)r, 1);
}

/* A MAC computed as proto.md §6 does, checked through the constant-time compare. */
static void
test_hmac_then_compare(void **state)
{
    (void)state;
    static const char secret[] = "s3cret";
    uint8_t ns[32], nc[32], mac[SHA256_LEN], again[SHA256_LEN];
    for (int i = 0; i < 32; i++) {
        ns[i] = (uint8_t)i;
        nc[i] = (uint8_t)(0xa0 + i);
    }
    struct sha256_hmac h;
    uint8_t role = 2;
    sha256_hmac_init(&h, secret, strlen(secret));
    sha256_hmac_update(&h, "INGv1-peer", 10);
    sha256_hmac_update(&h, &role, 1);
    sha256_hmac_update(&h, ns, sizeof(ns));
    sha256_hmac_update(&h, nc, sizeof(nc));
    sha256_hmac_final(&h, mac);
    uint8_t msg[10 + 1 + 32 + 32];
    memcpy(msg, "INGv1-peer", 10);
    msg[10] = role;
    memcpy(msg + 11, ns, 32);
    memcpy(msg + 43, nc, 32);
    sha256_hmac(secret, strlen(secret), msg, sizeof(msg), again);
    assert_true(sha256_equal(mac, again, SHA256_LEN));
    again[17] ^= 4;
    assert_false(sha256_equal(mac, again, SHA256_LEN));
    sha256_hmac("s3creT", 6, msg, sizeof(msg), again);
    assert_false(sha256_equal(mac, again, SHA256_LEN));
}

/* The worked example of proto.md §10 (Auth and AuthOk vectors). */
static void
test_auth_macs_match_proto_md(void **state)
{
    (void)state;
    static const uint8_t peer[32] = {
        0xa0, 0x8e, 0x36, 0xde, 0x0c, 0x6a, 0xcc, 0xc9, 0x4d, 0xbb, 0x73, 0x77, 0x47, 0x97, 0xcf, 0x1f,
        0xdd, 0xf2, 0x6d, 0xac, 0x1c, 0x69, 0x2e, 0x97, 0xb0, 0x1f, 0xfc, 0xb3, 0xb2, 0xbb, 0x9e, 0x15};
    static const uint8_t server[32] = {
        0x18, 0xfe, 0x1d, 0x4a, 0x9c, 0xe5, 0xa1, 0x90, 0x4f, 0x01, 0xd3, 0xd2, 0x3a, 0x4c, 0x5b, 0x92,
        0x62, 0x38, 0x06, 0x84, 0xc1, 0xb8, 0x5e, 0x4e, 0x8c, 0x89, 0x34, 0x3e, 0xba, 0x4d, 0xee, 0xb9};
    uint8_t ns[ING_NONCE_LEN], nc[ING_NONCE_LEN], mac[ING_MAC_LEN];
    for (int i = 0; i < ING_NONCE_LEN; i++) {
        ns[i] = (uint8_t)i;
        nc[i] = (uint8_t)(0xa0 + i);
    }
    auth_peer_mac((const uint8_t *)"secret", 6, ING_ROLE_CLIENT, ns, nc, mac);
    assert_memory_equal(mac, peer, sizeof(peer));
    auth_server_mac((const uint8_t *)"secret", 6, ING_ROLE_CLIENT, ns, nc, mac);
    assert_memory_equal(mac, server, sizeof(server));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips_abc),
        cmocka_unit_test(test_sha256_empty),
        cmocka_unit_test(test_sha256_fips_two_blocks),
        cmocka_unit_test(test_sha256_million_a),
        cmocka_unit_test(test_sha256_every_length),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_auth_macs_match_proto_md),
        cmocka_unit_test(test_hmac_key_lengths),
        cmocka_unit_test(test_streaming_random_splits),
        cmocka_unit_test(test_equal_constant_time),
        cmocka_unit_test(test_hmac_then_compare),
    };
    return cmocka_run_group_tests_name("sha256", tests, NULL, NULL);
}
