/* SPDX-License-Identifier: MIT */
/* chaos_util.c: helpers of the robustness tests (API in chaos_util.h). */
#include "chaos_util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "inginious/mp.h"

/* ------------------------------------------------------------------------------------------ */
/* Environment */

unsigned
cu_slow(void)
{
    int s = tp_slow();

    return s >= 1 ? (unsigned)s : 1;
}

int
cu_ms(int ms)
{
    return ms * (int)cu_slow();
}

char *
cu_ms_arg(char *out, size_t cap, int ms)
{
    snprintf(out, cap, "%dms", cu_ms(ms));
    return out;
}

bool
cu_wrapped(void)
{
    const char *w = getenv("ING_WRAPPER");

    return w != NULL && *w != '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* /proc */

/* status_kib reads the "key:  N kB" line of /proc/pid/status. */
static long
status_kib(pid_t pid, const char *key)
{
    char path[64], line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "re");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

long
cu_rss_kib(pid_t pid)
{
    return status_kib(pid, "VmRSS");
}

long
cu_vmsize_kib(pid_t pid)
{
    return status_kib(pid, "VmSize");
}

int
cu_fd_count(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int
cu_wait_fd_count(pid_t pid, int at_most, int timeout_ms)
{
    uint64_t deadline = tp_now_ms() + (uint64_t)timeout_ms;
    int n;

    for (;;) {
        n = cu_fd_count(pid);
        if (n < 0 || n <= at_most || tp_now_ms() >= deadline)
            return n;
        /* Nothing to wait on: the backend's table shrinks as it reaps. Poll briefly. */
        poll(NULL, 0, 5);
    }
}

rlim_t
cu_raise_nofile(rlim_t want, rlim_t *hard)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        *hard = 0;
        return 0;
    }
    *hard = rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* ------------------------------------------------------------------------------------------ */
/* Random */

void
cu_rng_seed(struct cu_rng *r, uint64_t seed)
{
    r->s = seed != 0 ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t
cu_rand(struct cu_rng *r)
{
    uint64_t x = r->s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint32_t
cu_below(struct cu_rng *r, uint32_t n)
{
    return n == 0 ? 0 : (uint32_t)((cu_rand(r) >> 32) % n);
}

uint32_t
cu_between(struct cu_rng *r, uint32_t lo, uint32_t hi)
{
    return hi <= lo ? lo : lo + cu_below(r, hi - lo + 1);
}

bool
cu_chance(struct cu_rng *r, unsigned percent)
{
    return cu_below(r, 100) < percent;
}

/* ------------------------------------------------------------------------------------------ */
/* Raw sockets */

int
cu_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *h, *colon;
    size_t hl;
    long port;

    memset(ss, 0, sizeof(*ss));
    if (strncmp(addr, "ipc://", 6) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;

        if (strlen(addr + 6) >= sizeof(sun->sun_path))
            return -EINVAL;
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, addr + 6);
        *len = sizeof(*sun);
        return 0;
    }
    if (strncmp(addr, "tcp://", 6) != 0)
        return -EINVAL;
    h = addr + 6;
    if (*h == '[') {
        const char *end = strchr(h, ']');

        if (end == NULL || end[1] != ':' || (size_t)(end - h - 1) >= sizeof(host))
            return -EINVAL;
        hl = (size_t)(end - h - 1);
        memcpy(host, h + 1, hl);
        colon = end + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL || (size_t)(colon - h) >= sizeof(host))
            return -EINVAL;
        hl = (size_t)(colon - h);
        memcpy(host, h, hl);
    }
    host[hl] = '\0';
    port = strtol(colon + 1, NULL, 10);
    if (port <= 0 || port > 65535)
        return -EINVAL;
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            return -EINVAL;
        *len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return -EINVAL;
        *len = sizeof(*s4);
    }
    return 0;
}

/* connect_nb starts a non-blocking connect, with a receive buffer of rcvbuf bytes if > 0. */
static int
connect_nb(const struct sockaddr_storage *ss, socklen_t len, int rcvbuf)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;

    if (fd < 0)
        return -errno;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (ss->ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)ss, len) != 0 && errno != EINPROGRESS) {
        int e = errno;

        close(fd);
        return -e;
    }
    return fd;
}

int
cu_connect_start(const struct sockaddr_storage *ss, socklen_t len)
{
    return connect_nb(ss, len, 0);
}

int
cu_connect_small(const struct sockaddr_storage *ss, socklen_t len, int rcvbuf)
{
    return connect_nb(ss, len, rcvbuf);
}

int
cu_connect_wait(int fd, int timeout_ms)
{
    struct pollfd pf = {.fd = fd, .events = POLLOUT};
    uint64_t deadline = tp_now_ms() + (uint64_t)timeout_ms;
    int err = 0;
    socklen_t el = sizeof(err);

    for (;;) {
        uint64_t now = tp_now_ms();
        int r;

        if (now >= deadline)
            return -ETIMEDOUT;
        r = poll(&pf, 1, (int)(deadline - now));
        if (r > 0)
            break;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        return -errno;
    return -err;
}

void
cu_close_rst(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

int
cu_wait_eof(int fd, int timeout_ms, size_t *bytes)
{
    uint64_t deadline = tp_now_ms() + (uint64_t)timeout_ms;
    size_t got = 0;
    char buf[4096];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE))) {
            if (bytes != NULL)
                *bytes = got;
            return 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            uint64_t now = tp_now_ms();

            if (now >= deadline) {
                if (bytes != NULL)
                    *bytes = got;
                return -ETIMEDOUT;
            }
            poll(&pf, 1, (int)(deadline - now));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Prompt service */

int
cu_roundtrip_at(const char *file, int line, struct tp_peer *p, int limit_ms)
{
    uint64_t t0 = tp_now_ms(), deadline = t0 + (uint64_t)limit_ms;

    tp_send_type_at(file, line, p, ING_PING);
    for (;;) {
        const struct ing_msg *m = NULL;
        uint64_t now = tp_now_ms();
        int r = tp_recv(p, now >= deadline ? 0 : (int)(deadline - now), &m);

        if (r == ING_PONG)
            return (int)(tp_now_ms() - t0);
        if (r == ING_BACKEND_UPDATE_ENVIRONMENTS)
            continue;
        if (r == -ETIMEDOUT)
            tp_fail_at(file, line, "%s: no Pong within %d ms", p->label, limit_ms);
        if (r < 0)
            tp_fail_at(file, line, "%s: waiting for Pong: %s", p->label,
                       r == -EPIPE ? "connection closed by the backend" : strerror(-r));
        tp_fail_at(file, line, "%s: waiting for Pong, received %s", p->label,
                   ing_msg_type_name(m->type));
    }
}

void
cu_prompt_at(const char *file, int line, struct tp_ctx *c, int limit_ms)
{
    uint64_t t0 = tp_now_ms();
    struct tp_peer *p = tp_client_at(file, line, c, "prompt-check", NULL);
    uint64_t spent = tp_now_ms() - t0;

    if (spent > (uint64_t)limit_ms)
        tp_fail_at(file, line, "a new client needed %llu ms to register (limit %d ms)",
                   (unsigned long long)spent, limit_ms);
    cu_roundtrip_at(file, line, p, limit_ms - (int)spent);
    tp_close(c, p);
}

/* ------------------------------------------------------------------------------------------ */
/* Values */

long
cu_env_names(struct ing_view v, bool *sorted)
{
    const uint8_t *p = (const uint8_t *)v.p, *end = p + v.len;
    struct ing_mp_obj o;
    uint32_t nt, i, k;
    long total = 0;

    *sorted = true;
    if (p == NULL || ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_MAP)
        return -1;
    nt = o.v.n;
    for (i = 0; i < nt; i++) {
        const uint8_t *prev = NULL;
        uint32_t prev_len = 0;

        if (ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_STR)
            return -1;
        if (ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_ARRAY)
            return -1;
        total += o.v.n;
        for (k = 0; k < o.v.n; k++) {
            struct ing_mp_obj s;

            if (ing_mp_read(&p, end, &s) != 0 || s.type != ING_MP_STR)
                return -1;
            if (prev != NULL) {
                uint32_t m = prev_len < s.v.s.len ? prev_len : s.v.s.len;
                int cmp = memcmp(prev, s.v.s.p, m);

                if (cmp > 0 || (cmp == 0 && prev_len >= s.v.s.len))
                    *sorted = false;
            }
            prev = s.v.s.p;
            prev_len = s.v.s.len;
        }
    }
    return p == end ? total : -1;
}

bool
cu_backend_alive(struct tp_ctx *c)
{
    char path[64], buf[512];
    const char *close_paren;
    ssize_t n;
    int fd;

    if (c->be.pid <= 0 || c->be.reaped)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)c->be.pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    /* "pid (comm) S ...": a zombie (Z) or dead (X) process has exited. */
    close_paren = strrchr(buf, ')');
    return close_paren != NULL && close_paren[1] == ' ' && close_paren[2] != 'Z' &&
           close_paren[2] != 'X';
}
