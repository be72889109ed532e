/* SPDX-License-Identifier: MIT */
/* opt.c: the numbers of the command lines (see opt.h). */
#include "opt.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* number reads the leading unsigned decimal number of s into *v and points *end after it.
 * Returns 0, or -EINVAL for no digits, a '-' sign or a value over UINT64_MAX. */
static int
number(const char *s, uint64_t *v, const char **end)
{
    const char *p = s;
    char *e;
    unsigned long long n;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '-') /* strtoull would negate it */
        return -EINVAL;
    errno = 0;
    n = strtoull(s, &e, 10);
    if (e == s || errno != 0)
        return -EINVAL;
    *v = n;
    *end = e;
    return 0;
}

/* opt_u64 reads an unsigned integer "N". Returns 0 or -EINVAL. */
int
opt_u64(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t v;

    if (number(s, &v, &end) != 0 || *end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

/* opt_duration_ms reads "N" or "Ns" (seconds), "Nms", "Nm" (minutes), "Nh" or "Nd" into
 * milliseconds. Returns 0 or -EINVAL. */
int
opt_duration_ms(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t v, mult;

    if (number(s, &v, &end) != 0)
        return -EINVAL;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = OPT_MS_PER_DAY;
    else
        return -EINVAL;
    if (v > UINT64_MAX / mult)
        return -EINVAL;
    *out = v * mult;
    return 0;
}

/* opt_size reads "N", "NK", "NM" or "NG" (either case) into bytes. Returns 0 or -EINVAL. */
int
opt_size(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t v;
    unsigned shift;

    if (number(s, &v, &end) != 0)
        return -EINVAL;
    switch (*end) {
    case '\0':
        shift = 0;
        break;
    case 'K':
    case 'k':
        shift = 10;
        break;
    case 'M':
    case 'm':
        shift = 20;
        break;
    case 'G':
    case 'g':
        shift = 30;
        break;
    default:
        return -EINVAL;
    }
    if (shift != 0 && end[1] != '\0')
        return -EINVAL;
    if (v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

int
opt_parse(enum opt_kind kind, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v;
    int rc;

    switch (kind) {
    case OPT_KIND_DURATION:
        rc = opt_duration_ms(s, &v);
        break;
    case OPT_KIND_SIZE:
        rc = opt_size(s, &v);
        break;
    default:
        rc = opt_u64(s, &v);
        break;
    }
    if (rc != 0)
        return rc;
    if (v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

/* human writes v in the largest unit of kind that divides it exactly. */
static void
human(enum opt_kind kind, uint64_t v, char *out, size_t len)
{
    static const struct {
        uint64_t mult;
        const char *suffix;
    } dur[] = {{OPT_MS_PER_DAY, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}},
      size[] = {{1ull << 30, "G"}, {1ull << 20, "M"}, {1ull << 10, "K"}, {1, ""}};
    size_t i;

    if (kind == OPT_KIND_DURATION && v != 0) {
        for (i = 0; v % dur[i].mult != 0; i++)
            ;
        snprintf(out, len, "%llu%s", (unsigned long long)(v / dur[i].mult), dur[i].suffix);
    } else if (kind == OPT_KIND_SIZE && v != 0) {
        for (i = 0; v % size[i].mult != 0; i++)
            ;
        snprintf(out, len, "%llu%s", (unsigned long long)(v / size[i].mult), size[i].suffix);
    } else {
        snprintf(out, len, "%llu", (unsigned long long)v);
    }
}

void
opt_describe(enum opt_kind kind, uint64_t min, uint64_t max, char *out, size_t len)
{
    static const char *const what[] = {"a whole number", "a duration", "a size"};
    char lo[32], hi[32];

    human(kind, min, lo, sizeof(lo));
    human(kind, max, hi, sizeof(hi));
    snprintf(out, len, "%s from %s to %s", what[kind <= OPT_KIND_SIZE ? kind : 0], lo, hi);
}
