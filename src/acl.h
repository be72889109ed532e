/* SPDX-License-Identifier: MIT */
/* acl.h: address allow-lists (CIDR blocks, IPv4 and IPv6). */
#ifndef ING_ACL_H
#define ING_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct acl_entry {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network address (4 or 16 bytes used) */
    unsigned prefix;  /* prefix length in bits */
};

/* acl_parse reads one entry: "1.2.3.0/24", "::1", "fd00::/8" (no prefix = a single address;
 * the prefix is decimal digits only). An IPv6 entry inside ::ffff:0:0/96 becomes the IPv4
 * entry it maps ("::ffff:10.0.0.0/104" = "10.0.0.0/8"). Returns 0 or -EINVAL. */
int acl_parse(const char *text, struct acl_entry *e);
/* acl_match tells whether the address sa matches one of the n entries. An empty list
 * allows everything; unix-socket peers always match. */
bool acl_match(const struct acl_entry *list, size_t n, const struct sockaddr *sa);

#endif
