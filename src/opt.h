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

#include <stddef.h>
#include <stdint.h>

/* opt_u64 reads an unsigned integer "N". Returns 0 or -EINVAL. */
int opt_u64(const char *s, uint64_t *out);
/* opt_duration_ms reads a duration into milliseconds: "N" or "Ns" (seconds), "Nms", "Nm"
 * (minutes), "Nh" (hours), "Nd" (days). Returns 0 or -EINVAL. */
int opt_duration_ms(const char *s, uint64_t *out);
/* opt_size reads a size in bytes: "N", "NK", "NM", "NG" (binary multiples; the suffix in
 * either case). Returns 0 or -EINVAL. */
int opt_size(const char *s, uint64_t *out);

/* Every number option of the three programs is read with opt_parse and a range of its own,
 * so that no value wraps or overflows what uses it. The widest bounds: */
#define OPT_MS_PER_DAY (24ull * 3600 * 1000)
#define OPT_DURATION_MAX_MS (7 * OPT_MS_PER_DAY) /* a week: far below 2^31 ms (24.8 days) */
#define OPT_FRAME_MAX (1ull << 30)               /* --max-frame: 1 GiB, so lengths fit in int */

enum opt_kind {
    OPT_KIND_COUNT,    /* opt_u64 */
    OPT_KIND_DURATION, /* opt_duration_ms */
    OPT_KIND_SIZE,     /* opt_size */
};

/* opt_parse reads s as kind and checks min <= value <= max. Returns 0, -EINVAL for a value
 * that does not read as kind, or -ERANGE for one outside the range (*out untouched). */
int opt_parse(enum opt_kind kind, const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* opt_describe writes what opt_parse accepts as a phrase for an error message, e.g.
 * "a duration from 1ms to 7d" or "a size from 4K to 1G". */
void opt_describe(enum opt_kind kind, uint64_t min, uint64_t max, char *out, size_t len);

#endif
