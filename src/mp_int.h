/* SPDX-License-Identifier: MIT */
/* mp_int.h: msgpack helpers of src/mp.c for the project's own modules (not exported by
 * libinginious). */
#ifndef INGINIOUS_MP_INT_H
#define INGINIOUS_MP_INT_H

#include <stdint.h>

/* mp_validate_next advances *p past one complete value ending at or before end, checked as
 * ing_mp_validate checks one (no ext, UTF-8 of every str, at most max_depth levels): one
 * walk where ing_mp_skip then ing_mp_validate take two. Returns 0, or -EPROTO (*p is then
 * unspecified). */
int mp_validate_next(const uint8_t **p, const uint8_t *end, unsigned max_depth);

#endif
