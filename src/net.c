/* SPDX-License-Identifier: MIT */
/* net.c: see net.h. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int
fail(char *err, size_t errlen, const char *why, const char *text)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", why, text);
    return -EINVAL;
}

int
net_parse(const char *text, struct net_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    if (strncmp(text, "ipc://", 6) == 0) {
        const char *path = text + 6;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
        if (*path == '\0' || strlen(path) >= sizeof(un->sun_path))
            return fail(err, errlen, "bad unix socket path", text);
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        a->len = (socklen_t)sizeof(*un);
        a->family = AF_UNIX;
        return 0;
    }
    if (strncmp(text, "tcp://", 6) != 0)
        return fail(err, errlen, "address must start with tcp:// or ipc://", text);
    const char *h = text + 6, *colon;
    char host[256];
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (close == NULL || close[1] != ':')
            return fail(err, errlen, "bad IPv6 address", text);
        if ((size_t)(close - h - 1) >= sizeof(host))
            return fail(err, errlen, "host too long", text);
        memcpy(host, h + 1, (size_t)(close - h - 1));
        host[close - h - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL)
            return fail(err, errlen, "missing :PORT", text);
        if ((size_t)(colon - h) >= sizeof(host))
            return fail(err, errlen, "host too long", text);
        memcpy(host, h, (size_t)(colon - h));
        host[colon - h] = '\0';
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        return fail(err, errlen, "bad port", text);
    if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        in->sin_port = htons((uint16_t)port);
        a->len = sizeof(*in);
        a->family = AF_INET;
        return 0;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return fail(err, errlen, "cannot resolve host", text);
    memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    a->family = res->ai_family;
    freeaddrinfo(res);
    if (a->family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else if (a->family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
    else
        return fail(err, errlen, "unsupported address family", text);
    return 0;
}

void
net_format(const struct net_addr *a, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (a->family == AF_UNIX) {
        snprintf(out, len, "ipc://%s", ((const struct sockaddr_un *)&a->ss)->sun_path);
    } else if (a->family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, len, "tcp://%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (a->family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, len, "tcp://[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(out, len, "?");
    }
}

static void
set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly on unix */
}

/* unix_in_use probes the unix socket file at a's path: true when a process accepts (or
 * queues) connections there. A stale file (connection refused) is unlinked. */
static bool
unix_in_use(const struct net_addr *a)
{
    const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return false; /* nothing there, or not a socket: bind says why */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return true; /* answered, or its backlog is full: someone listens */
    if (e == ECONNREFUSED)
        unlink(path);
    return false;
}

int
net_listen(const struct net_addr *a, int backlog, unsigned flags)
{
    if (a->family == AF_UNIX && unix_in_use(a))
        return -EADDRINUSE;
    int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (a->family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->family == AF_INET6) {
        int only = (flags & NET_V6ONLY) != 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only)) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int
net_bound(int fd, struct net_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->len = sizeof(a->ss);
    if (getsockname(fd, (struct sockaddr *)&a->ss, &a->len) != 0)
        return -errno;
    a->family = a->ss.ss_family;
    return 0;
}

int
net_peer(int fd, struct net_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->len = sizeof(a->ss);
    if (getpeername(fd, (struct sockaddr *)&a->ss, &a->len) != 0)
        return -errno;
    a->family = a->ss.ss_family;
    return 0;
}

int
net_connect(const struct net_addr *a, bool nonblock)
{
    int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int
net_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            set_nodelay(fd);
            return fd;
        }
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;
    }
}

void
net_unix_stamp(const struct net_addr *a, struct net_stamp *st)
{
    struct stat sb;
    st->set = false;
    if (a->family == AF_UNIX && lstat(((const struct sockaddr_un *)&a->ss)->sun_path, &sb) == 0) {
        st->dev = (unsigned long long)sb.st_dev;
        st->ino = (unsigned long long)sb.st_ino;
        st->set = true;
    }
}

void
net_unix_release(const struct net_addr *a, const struct net_stamp *st)
{
    struct stat sb;
    if (a->family != AF_UNIX || !st->set)
        return;
    const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
    if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode) && (unsigned long long)sb.st_dev == st->dev &&
        (unsigned long long)sb.st_ino == st->ino)
        unlink(path);
}

int
net_check_listener(int fd)
{
    struct stat sb;
    int v;
    socklen_t len = sizeof(v);
    if (fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode))
        return -ENOTSOCK;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 || v != SOCK_STREAM)
        return -ESOCKTNOSUPPORT;
    len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v == 0)
        return -EINVAL;
    return 0;
}
