/* SPDX-License-Identifier: MIT */
/* acl.c: see acl.h. */
#include "acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* is_sep tells whether c separates the entries of a list (a comment is one too). */
static bool
is_sep(char c, bool file)
{
    return c == ',' || (file && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#'));
}

int
acl_parse_list(const char *text, bool file, struct acl_entry *list, size_t max, size_t *n,
               char *err, size_t errlen)
{
    size_t got = *n;
    const char *p = text;
    for (;;) {
        if (file) { /* blanks, new lines, commas and comments between entries */
            while (*p != '\0' && is_sep(*p, true)) {
                if (*p == '#')
                    while (*p != '\0' && *p != '\n')
                        p++;
                else
                    p++;
            }
            if (*p == '\0')
                break;
        }
        size_t len = 0;
        while (p[len] != '\0' && !is_sep(p[len], file))
            len++;
        char tok[128];
        if (len == 0 || len >= sizeof(tok)) {
            snprintf(err, errlen, "%s", len == 0 ? "an empty entry" : "an entry too long");
            return -EINVAL;
        }
        memcpy(tok, p, len);
        tok[len] = '\0';
        if (got >= max) {
            snprintf(err, errlen, "more than %zu entries", max);
            return -E2BIG;
        }
        if (acl_parse(tok, &list[got]) != 0) {
            snprintf(err, errlen, "'%s' is not an address or CIDR block", tok);
            return -EINVAL;
        }
        got++;
        p += len;
        if (!file) {
            if (*p == '\0')
                break;
            p++; /* the comma: an entry must follow */
        }
    }
    if (got == *n) {
        snprintf(err, errlen, "no entry");
        return -EINVAL;
    }
    *n = got;
    return 0;
}

int
acl_load_file(const char *path, struct acl_entry *list, size_t max, size_t *n, char *err,
              size_t errlen)
{
    char *text = malloc(ACL_FILE_MAX + 1);
    size_t len = 0;
    int rc = 0, fd = -1;

    if (text == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && len <= ACL_FILE_MAX) {
        ssize_t r = read(fd, text + len, ACL_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : 0;
            break;
        }
        len += (size_t)r;
    }
    if (fd < 0 || rc != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    } else if (len > ACL_FILE_MAX) {
        rc = -EFBIG;
        snprintf(err, errlen, "%s: larger than %d bytes", path, ACL_FILE_MAX);
    } else if (memchr(text, '\0', len) != NULL) {
        rc = -EINVAL;
        snprintf(err, errlen, "%s: not a text file", path);
    } else {
        char why[200];
        text[len] = '\0';
        rc = acl_parse_list(text, true, list, max, n, why, sizeof(why));
        if (rc != 0)
            snprintf(err, errlen, "%s: %s", path, why);
    }
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}
