/* SPDX-License-Identifier: MIT */
/* fuzz_json.c: libFuzzer target for JSON -> msgpack (src/json.c), on arbitrary text.
 *
 * Checked, as documented in include/inginious/json.h:
 *   - a refused text gives -EPROTO, appends nothing to the writer, and reports a position
 *     inside the text with a line and column that match it and a message;
 *   - an accepted text gives one msgpack value that ing_mp_validate accepts (nesting within
 *     ING_MP_MAX_DEPTH), that ing_mp_to_json converts back (compact and pretty), and that
 *     JSON converts to the very same bytes again (mp -> json -> mp is stable);
 *   - a fixed writer of exactly the right size gets the same bytes, one byte smaller gets
 *     -ENOMEM. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/json.h"
#include "inginious/mp.h"

#include "fuzz.h"


static void
check_error(const char *text, size_t n, const struct ing_json_error *err)
{
    CHECK(err->offset <= n);
    unsigned line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < err->offset; i++)
        if (text[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    CHECK(err->line == line);
    CHECK(err->column == err->offset - line_start + 1);
    CHECK(memchr(err->msg, '\0', sizeof(err->msg)) != NULL && err->msg[0] != '\0');
}

/* roundtrip converts the msgpack value mp[0..n) to JSON (indent spaces) and back, and
 * checks that the bytes come back unchanged. */
static void
roundtrip(const uint8_t *mp, size_t n, int indent)
{
    struct ing_mp_writer j, m2;
    struct ing_json_error err;
    ing_mp_writer_init_dyn(&j);
    ing_mp_writer_init_dyn(&m2);
    CHECK(ing_mp_to_json(mp, n, &j, indent) == 0);
    int rc = ing_json_to_mp((const char *)j.buf, j.len, &m2, &err);
    if (rc != 0)
        fprintf(stderr, "re-parse of %.*s failed: %s at %zu\n", (int)j.len, (const char *)j.buf,
                err.msg, err.offset);
    CHECK(rc == 0);
    CHECK(m2.len == n && memcmp(m2.buf, mp, n) == 0);
    ing_mp_writer_fini(&j);
    ing_mp_writer_fini(&m2);
}

/* LLVMFuzzerTestOneInput is the libFuzzer entry point: data is JSON text (or not). */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so ASan sees any read past the end. */
    char *text = malloc(size ? size : 1);
    CHECK(text != NULL);
    if (size > 0)
        memcpy(text, data, size);

    struct ing_mp_writer w;
    struct ing_json_error err;
    ing_mp_writer_init_dyn(&w);
    CHECK(ing_mp_put_nil(&w) == 0); /* a value already there must stay alone on failure */
    int rc = ing_json_to_mp(text, size, &w, &err);
    if (rc != 0) {
        CHECK(rc == -EPROTO);
        CHECK(w.len == 1 && w.err == 0);
        check_error(text, size, &err);
        ing_mp_writer_fini(&w);
        /* The same without an error record. */
        ing_mp_writer_init_dyn(&w);
        CHECK(ing_json_to_mp(text, size, &w, NULL) == -EPROTO && w.len == 0);
        ing_mp_writer_fini(&w);
        free(text);
        return 0;
    }
    const uint8_t *mp = w.buf + 1;
    size_t n = w.len - 1;
    CHECK(n >= 1);
    CHECK(ing_mp_validate(mp, n, ING_MP_MAX_DEPTH) == 0);
    roundtrip(mp, n, 0);
    roundtrip(mp, n, 3);

    /* Fixed writers. */
    uint8_t *fb = malloc(n);
    CHECK(fb != NULL);
    struct ing_mp_writer fw;
    ing_mp_writer_init(&fw, fb, n);
    CHECK(ing_json_to_mp(text, size, &fw, NULL) == 0);
    CHECK(fw.len == n && memcmp(fb, mp, n) == 0);
    ing_mp_writer_init(&fw, fb, n - 1);
    CHECK(ing_json_to_mp(text, size, &fw, NULL) == -ENOMEM);
    /* A writer already in error is left alone. */
    CHECK(ing_json_to_mp(text, size, &fw, NULL) == -ENOMEM);
    free(fb);
    ing_mp_writer_fini(&w);
    free(text);
    return 0;
}
