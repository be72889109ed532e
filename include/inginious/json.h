/* SPDX-License-Identifier: MIT */
/* json.h: strict JSON <-> msgpack conversion, hand-written, for the command-line tools.
 *
 * JSON -> msgpack (RFC 8259, strict): objects -> maps (keys str, order kept, duplicate keys
 * kept as they come), arrays -> arrays, strings -> str (all escapes, \uXXXX with surrogate
 * pairs; a lone surrogate is an error), true/false/null, numbers: an integer literal that
 * fits int64 (or uint64 when positive) -> int/uint in the smallest form, anything with a
 * fraction or exponent, or an integer beyond uint64/int64 -> float64. Leading/trailing
 * whitespace allowed; anything after the value is an error. Nesting at most
 * ING_MP_MAX_DEPTH.
 *
 * msgpack -> JSON: map keys must be str (else error); bin is written as a JSON string of
 * its bytes when they are valid UTF-8, else as base64 in {"$bin":"..."}; floats with
 * enough digits to round-trip (%.17g, and "NaN"/"Infinity" refused with -EPROTO);
 * strings escaped (control characters as \u00XX, '"' and '\\'), non-ASCII UTF-8 kept.
 *
 * Thread safety: reentrant. Numbers are converted under a "C" locale private to each call
 * (uselocale, per thread), so neither the process locale nor another thread matters.
 */
#ifndef INGINIOUS_JSON_H
#define INGINIOUS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "inginious/mp.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ing_json_error {
    size_t offset;   /* byte offset in the input where the error was found */
    unsigned line;   /* 1-based line */
    unsigned column; /* 1-based column (in bytes) */
    char msg[96];    /* what was wrong, e.g. "expected ',' or '}'" */
};

/* ing_json_to_mp parses text[0..n) and appends ONE msgpack value to w. Returns 0, or
 * -EPROTO with *err filled (err may be NULL), or w's error. */
int ing_json_to_mp(const char *text, size_t n, struct ing_mp_writer *w,
                   struct ing_json_error *err);

/* ing_mp_to_json writes the msgpack value p[0..n) as JSON text into w (raw bytes, not
 * msgpack: the writer is used as a byte buffer through ing_mp_put_raw), with no trailing
 * NUL. indent = 0 gives compact output; > 0 pretty-prints with that many spaces. Returns
 * 0, -EPROTO (malformed msgpack, non-str key, NaN/inf) or w's error. */
int ing_mp_to_json(const uint8_t *p, size_t n, struct ing_mp_writer *w, int indent);

#ifdef __cplusplus
}
#endif
#endif
