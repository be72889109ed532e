/* SPDX-License-Identifier: MIT */
/* mp.h: a small msgpack reader, validator, path lookup and writer.
 *
 * Reading is zero-copy: strings, binaries and nested values are views into the caller's
 * buffer and stay valid as long as that buffer does. Nothing here allocates, except a
 * writer created with ing_mp_writer_init_dyn().
 *
 * Supported: every format family of the msgpack spec (positive/negative fixint,
 * uint/int 8-64, float32/64, nil, bool, fixstr/str8-32, bin8-32, fixarray/array16/32,
 * fixmap/map16/32). The ext family (fixext, ext8-32, including the timestamp type) is
 * REJECTED by the validator with -EPROTO: INGInious never sends it.
 *
 * Thread safety: reentrant. No function keeps global or static state; different threads
 * may use different writers and read the same buffer at once. One writer is used by one
 * thread at a time.
 */
#ifndef INGINIOUS_MP_H
#define INGINIOUS_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Nesting depth bound used by the protocol: arrays/maps nested deeper are refused. */
#define ING_MP_MAX_DEPTH 64

/* Hard ceiling on the max_depth argument of ing_mp_skip() and ing_mp_validate(): their
 * explicit stack lives on the C stack, so a larger max_depth acts as this one. */
#define ING_MP_DEPTH_LIMIT 1024

enum ing_mp_type {
    ING_MP_NIL,   /* nil */
    ING_MP_BOOL,  /* true / false: v.b */
    ING_MP_INT,   /* any integer that fits int64 (negative, or positive <= INT64_MAX): v.i */
    ING_MP_UINT,  /* a positive integer above INT64_MAX: v.u */
    ING_MP_FLOAT, /* float32 or float64, widened: v.f */
    ING_MP_STR,   /* v.s (not NUL-terminated; UTF-8 is checked by ing_mp_validate) */
    ING_MP_BIN,   /* v.s */
    ING_MP_ARRAY, /* v.n elements follow */
    ING_MP_MAP,   /* v.n key/value pairs follow */
    ING_MP_EXT,   /* ext family: v.s is the data, ext_type its type; never valid in a message */
};

struct ing_mp_obj {
    enum ing_mp_type type;
    int8_t ext_type;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        struct {
            const uint8_t *p;
            uint32_t len;
        } s;
        uint32_t n;
    } v;
};

/* ing_mp_read decodes ONE header at *p (for a container only its header: the elements
 * follow) and advances *p past it (past the payload for str/bin/ext). Returns 0, or
 * -EPROTO if the bytes up to end do not hold a complete header (and payload), or the
 * first byte is the never-used 0xc1. */
int ing_mp_read(const uint8_t **p, const uint8_t *end, struct ing_mp_obj *o);

/* ing_mp_skip advances *p past one complete value (containers included, recursively,
 * at most max_depth levels deep). Returns 0 or -EPROTO (truncated, too deep, 0xc1). */
int ing_mp_skip(const uint8_t **p, const uint8_t *end, unsigned max_depth);

/* ing_mp_validate checks that p[0..n) holds exactly ONE complete, well-formed value: no
 * trailing bytes, no ext, nesting at most max_depth, every str valid UTF-8 (map keys
 * included), every length within the buffer. Returns 0 or -EPROTO. */
int ing_mp_validate(const uint8_t *p, size_t n, unsigned max_depth);

/* ing_mp_utf8_valid tells whether p[0..n) is valid UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
bool ing_mp_utf8_valid(const uint8_t *p, size_t n);

/* ing_mp_map_get looks up the string key (klen bytes) in the map that starts at p (one
 * value within p[0..n), assumed validated). On success sets *val and *val_len to the
 * view of the value and returns 0. Returns -ENOENT if the key is absent, -EPROTO if the
 * value at p is not a map (or malformed). The first matching key wins. */
int ing_mp_map_get(const uint8_t *p, size_t n, const char *key, size_t klen,
                   const uint8_t **val, size_t *val_len);

/* ing_mp_path follows nkeys string keys through nested maps (keys[0] in the map at p,
 * keys[1] in the value found, ...). Same returns as ing_mp_map_get. */
int ing_mp_path(const uint8_t *p, size_t n, const char *const *keys, size_t nkeys,
                const uint8_t **val, size_t *val_len);

/* ing_mp_py_int converts the value p[0..n) as Python's int() would: an integer as is
 * (a uint above INT64_MAX fails), a float truncated toward zero (NaN/inf/out of int64
 * range fail), a bool as 0/1, a str holding optional ASCII whitespace, an optional sign,
 * decimal digits (underscores between digits allowed, as Python) and optional whitespace.
 * Anything else fails. Returns 0 and sets *out, or -EPROTO. */
int ing_mp_py_int(const uint8_t *p, size_t n, int64_t *out);
/* ing_mp_py_int_wide is ing_mp_py_int over [-2^63, 2^64), msgpack's range (Python's
 * msgpack packs any int there): *wide tells that the value is above INT64_MAX, and *out then
 * holds its bits ((uint64_t)*out is the value). */
int ing_mp_py_int_wide(const uint8_t *p, size_t n, int64_t *out, bool *wide);

/* Writer. A fixed writer writes into caller memory and fails (sticky err = -ENOMEM) when
 * full; a dynamic writer grows with realloc and must be released with
 * ing_mp_writer_fini(). Every put function returns 0 or the sticky error. */
struct ing_mp_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int err;
    bool dyn;
};

void ing_mp_writer_init(struct ing_mp_writer *w, uint8_t *buf, size_t cap);
void ing_mp_writer_init_dyn(struct ing_mp_writer *w);
void ing_mp_writer_fini(struct ing_mp_writer *w);

int ing_mp_put_nil(struct ing_mp_writer *w);
int ing_mp_put_bool(struct ing_mp_writer *w, bool b);
int ing_mp_put_int(struct ing_mp_writer *w, int64_t i);     /* smallest encoding */
int ing_mp_put_uint(struct ing_mp_writer *w, uint64_t u);   /* smallest encoding */
int ing_mp_put_double(struct ing_mp_writer *w, double f);   /* always float64 (0xcb) */
int ing_mp_put_str(struct ing_mp_writer *w, const char *s, size_t len);
int ing_mp_put_cstr(struct ing_mp_writer *w, const char *s);
/* Header only (fixstr/str8/16/32); the caller then appends exactly len payload bytes with
 * ing_mp_put_raw(). */
int ing_mp_put_str_header(struct ing_mp_writer *w, uint32_t len);
int ing_mp_put_bin(struct ing_mp_writer *w, const void *p, size_t len);
int ing_mp_put_array(struct ing_mp_writer *w, uint32_t n);
int ing_mp_put_map(struct ing_mp_writer *w, uint32_t n);
int ing_mp_put_raw(struct ing_mp_writer *w, const void *p, size_t len); /* pre-encoded */

#ifdef __cplusplus
}
#endif
#endif
