/* SPDX-License-Identifier: MIT */
/* opt.h: the numbers of the command lines (inginious-backend, inginious-agent-process,
 * inginious-ctl): unsigned integers, durations and sizes.
 *
 * Syntax (all three): optional leading white space and an optional '+' (as strtoull), one
 * or more decimal digits, then the suffix of the kind, nothing after it. A '-' sign,
 * an empty string, a missing number, a value that does not fit in 64 bits and any other
 * suffix are refused. On failure *out is left as it was. */
#ifndef ING_OPT_H
#define ING_OPT_H

#include <stdint.h>

/* opt_u64 reads an unsigned integer "N". Returns 0 or -EINVAL. */
int opt_u64(const char *s, uint64_t *out);
/* opt_duration_ms reads a duration into milliseconds: "N" or "Ns" (seconds), "Nms", "Nm"
 * (minutes). Returns 0 or -EINVAL. */
int opt_duration_ms(const char *s, uint64_t *out);
/* opt_size reads a size in bytes: "N", "NK", "NM", "NG" (binary multiples; the suffix in
 * either case). Returns 0 or -EINVAL. */
int opt_size(const char *s, uint64_t *out);

#endif
