/* SPDX-License-Identifier: MIT */
/* sd.c: see sd.h. */
#include "sd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

/* decimal reads a whole decimal number (digits only, at least one, no overflow). */
static int
decimal(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return -EINVAL;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

int
sd_parse_socket(const char *v, struct sockaddr_un *addr, socklen_t *len)
{
    size_t n = v != NULL ? strlen(v) : 0;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (n < 2 || n >= sizeof(addr->sun_path) || (v[0] != '/' && v[0] != '@'))
        return -EINVAL;
    memcpy(addr->sun_path, v, n);
    if (v[0] == '@') { /* abstract: a leading NUL, and the length says where it ends */
        addr->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

int
sd_parse_watchdog(const char *usec, const char *pid, pid_t self, uint64_t *out)
{
    uint64_t us, p;
    if (decimal(usec, &us) != 0 || us == 0)
        return -EINVAL;
    if (pid != NULL) {
        if (decimal(pid, &p) != 0 || p == 0)
            return -EINVAL;
        if (p != (uint64_t)self) {
            *out = 0;
            return 0;
        }
    }
    *out = us;
    return 0;
}

int
sd_notify_open(struct sd_notify *n, char *err, size_t errlen)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    int rc = 0;

    memset(n, 0, sizeof(*n));
    n->fd = -1;
    if (usec != NULL && sd_parse_watchdog(usec, pid, getpid(), &n->watchdog_us) != 0) {
        snprintf(err, errlen, "bad WATCHDOG_USEC '%.32s' or WATCHDOG_PID '%.32s'", usec,
                 pid != NULL ? pid : "");
        rc = -EINVAL;
    } else if (sock != NULL && sd_parse_socket(sock, &n->addr, &n->addr_len) != 0) {
        snprintf(err, errlen, "bad NOTIFY_SOCKET '%.120s' (an absolute path or @name)", sock);
        rc = -EINVAL;
    } else if (sock != NULL) {
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (n->fd < 0) {
            rc = -errno;
            snprintf(err, errlen, "notify socket: %s", strerror(errno));
        } else {
            rc = 1;
        }
    }
    if (rc <= 0)
        n->watchdog_us = 0;
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    return rc;
}

int
sd_notify_send(const struct sd_notify *n, const char *text)
{
    if (n->fd < 0)
        return 0;
    for (;;) {
        ssize_t w = sendto(n->fd, text, strlen(text), MSG_NOSIGNAL,
                           (const struct sockaddr *)&n->addr, n->addr_len);
        if (w >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

void
sd_notify_close(struct sd_notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
    n->watchdog_us = 0;
}

/* name_slot maps a descriptor name to its endpoint: 0 agents, 1 clients, -1 another. */
static int
name_slot(const char *name, size_t len)
{
    if (len == 6 && memcmp(name, "agents", 6) == 0)
        return 0;
    if (len == 7 && memcmp(name, "clients", 7) == 0)
        return 1;
    return -1;
}

int
sd_listen_fds(int fds[SD_LISTEN_MAX], char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *count = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    uint64_t p, nfds;
    int rc = 0;

    fds[0] = fds[1] = 0;
    if (pid == NULL || decimal(pid, &p) != 0 || p != (uint64_t)getpid())
        return 0; /* not for us (a parent's, left in the environment) */
    if (count == NULL || decimal(count, &nfds) != 0 || nfds == 0 || nfds > SD_LISTEN_MAX) {
        snprintf(err, errlen, "LISTEN_FDS '%.32s': expected 1 or 2 sockets (agents, clients)",
                 count != NULL ? count : "");
        rc = -EINVAL;
        goto out;
    }
    for (int i = 0; i < (int)nfds; i++) {
        int fd = SD_LISTEN_FDS_START + i, slot = i;
        if (names != NULL && *names != '\0') {
            const char *colon = strchr(names, ':');
            size_t len = colon != NULL ? (size_t)(colon - names) : strlen(names);
            int named = name_slot(names, len);
            if (named >= 0)
                slot = named;
            names = colon != NULL ? colon + 1 : names + len;
        }
        if (fds[slot] != 0) {
            snprintf(err, errlen, "socket activation: two sockets for the %s",
                     slot == 0 ? "agents" : "clients");
            rc = -EINVAL;
            goto out;
        }
        int chk = net_check_listener(fd);
        if (chk != 0) {
            snprintf(err, errlen,
                     "socket activation: fd %d (%s) is not a listening stream "
                     "socket: %s",
                     fd, slot == 0 ? "agents" : "clients", strerror(-chk));
            rc = -EINVAL;
            goto out;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            snprintf(err, errlen, "socket activation: fd %d: %s", fd, strerror(errno));
            rc = -EINVAL;
            goto out;
        }
        fds[slot] = fd;
        rc++;
    }
out:
    if (rc < 0)
        fds[0] = fds[1] = 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return rc;
}
