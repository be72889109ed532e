/* SPDX-License-Identifier: MIT */
/* fuzz.h: what every libFuzzer target here shares. */
#ifndef ING_FUZZ_H
#define ING_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* CHECK: a property the target asserts besides the sanitizers; a failure aborts, which
 * libFuzzer reports as a crash with the input as its reproducer. */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
