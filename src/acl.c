/* SPDX-License-Identifier: MIT */
/* acl.c: see acl.h. */
#include "acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int
acl_parse(const char *text, struct acl_entry *e)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t hl = slash != NULL ? (size_t)(slash - text) : strlen(text);
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(e, 0, sizeof(*e));
    unsigned max;
    if (inet_pton(AF_INET, host, e->addr) == 1) {
        e->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, e->addr) == 1) {
        e->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    e->prefix = max;
    if (slash != NULL) {
        /* Decimal digits only: no sign, no space (strtoul would take "/ 8" or "/-0"). */
        const char *d = slash + 1;
        unsigned p = 0;
        size_t nd = 0;
        for (; *d >= '0' && *d <= '9'; d++, nd++) {
            p = p * 10 + (unsigned)(*d - '0');
            if (p > max)
                return -EINVAL;
        }
        if (nd == 0 || *d != '\0')
            return -EINVAL;
        e->prefix = p;
    }
    /* An entry in the IPv4-mapped block ::ffff:0:0/96 (prefix >= 96) is the IPv4 block it
     * names: mapped peers are matched as IPv4 addresses (acl_match). */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (e->family == AF_INET6 && e->prefix >= 96 && memcmp(e->addr, mapped, 12) == 0) {
        e->family = AF_INET;
        memmove(e->addr, e->addr + 12, 4);
        memset(e->addr + 4, 0, 12);
        e->prefix -= 96;
    }
    return 0;
}

static bool
prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool
acl_match(const struct acl_entry *list, size_t n, const struct sockaddr *sa)
{
    if (n == 0 || sa->sa_family == AF_UNIX)
        return true;
    uint8_t a4[16];
    const uint8_t *a;
    int family = sa->sa_family;
    if (family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) { /* ::ffff:a.b.c.d is checked as IPv4 */
            memcpy(a4, a + 12, 4);
            a = a4;
            family = AF_INET;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].family == family && prefix_eq(list[i].addr, a, list[i].prefix))
            return true;
    return false;
}
