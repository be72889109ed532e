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
/* acl_parse_list appends the entries of text to list[*n..max). With file false, text is a
 * command-line value: entries separated by single commas ("10.0.0.0/8,::1"). With file true,
 * it is the content of an allow-list file: entries separated by commas, blanks or new lines,
 * "#" starting a comment to the end of the line. Every entry must parse and there must be
 * at least one: an empty value or file is refused, never taken as "allow everyone". All or
 * nothing: on failure *n is as it was. Returns 0, -EINVAL or -E2BIG (more than max), with
 * a reason in err. */
int acl_parse_list(const char *text, bool file, struct acl_entry *list, size_t max, size_t *n,
                   char *err, size_t errlen);
/* acl_load_file reads the allow-list file at path (at most ACL_FILE_MAX bytes) with
 * acl_parse_list. Returns 0 or -errno, with a reason in err. */
#define ACL_FILE_MAX 65536
int acl_load_file(const char *path, struct acl_entry *list, size_t max, size_t *n, char *err,
                  size_t errlen);
/* acl_match tells whether the address sa matches one of the n entries. An empty list
 * allows everything; unix-socket peers always match. */
bool acl_match(const struct acl_entry *list, size_t n, const struct sockaddr *sa);

#endif
