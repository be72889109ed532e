/* SPDX-License-Identifier: MIT */
/* opt.c: the numbers of the command lines (see opt.h). */
#include "opt.h"

#include <ctype.h>
#include <errno.h>
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

/* opt_duration_ms reads "N" or "Ns" (seconds), "Nms" or "Nm" (minutes) into milliseconds.
 * Returns 0 or -EINVAL. */
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
