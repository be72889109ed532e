/* SPDX-License-Identifier: MIT */
/* tpeer.c: the test peer library (API and conventions in tpeer.h). */
#include "tpeer.h"

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
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "inginious/mp.h"

#define MAX_OPTS 64
#define LOG_TAIL (64 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Failures, time */

void
tp_fail_at(const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    print_error("%s:%d: %s\n", file, line, msg);
    _fail(file, line);
    abort(); /* not reached: _fail jumps back into cmocka */
}

void
tp_exec(const char *const *argv)
{
    const char *wrap = getenv("ING_WRAPPER");
    if (wrap != NULL && *wrap != '\0') {
        static char words[1024];
        const char *full[96];
        size_t n = 0;
        snprintf(words, sizeof(words), "%s", wrap);
        for (char *save = NULL, *w = strtok_r(words, " ", &save); w != NULL && n < 64;
             w = strtok_r(NULL, " ", &save))
            full[n++] = w;
        for (size_t i = 0; argv[i] != NULL && n < 95; i++)
            full[n++] = argv[i];
        full[n] = NULL;
        execvp(full[0], (char *const *)full);
        return;
    }
    execv(argv[0], (char *const *)argv);
}

int
tp_slow(void)
{
    static int slow;
    if (slow == 0) {
        const char *e = getenv("ING_SLOW");
        slow = e != NULL && atoi(e) > 0 ? atoi(e) : 1;
    }
    return slow;
}

uint64_t
tp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* fmt is snprintf for texts that may be truncated on purpose. */
static void fmt(char *out, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));

static void
fmt(char *out, size_t cap, const char *f, ...)
{
    va_list ap;

    va_start(ap, f);
    vsnprintf(out, cap, f, ap);
    va_end(ap);
}

/* remaining returns the milliseconds left until deadline (0 when passed). */
static int
remaining(uint64_t deadline)
{
    uint64_t now = tp_now_ms();

    return now >= deadline ? 0 : (int)(deadline - now);
}

/* ------------------------------------------------------------------------------------------ */
/* Context */

int
tp_setup(void **state)
{
    struct tp_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    c->be.pidfd = -1;
    signal(SIGPIPE, SIG_IGN);
    *state = c;
    return 0;
}

static void
remove_dir(struct tp_backend *b)
{
    DIR *d;
    struct dirent *e;
    char path[TP_PATH_MAX * 2];

    if (b->dir[0] == '\0')
        return;
    d = opendir(b->dir);
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", b->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(b->dir);
    b->dir[0] = '\0';
}

static void
free_peer(struct tp_peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    free(p->in);
    free(p);
}

static void
forget_peer(struct tp_ctx *c, struct tp_peer *p)
{
    size_t i;

    for (i = 0; i < c->n_peers; i++) {
        if (c->peers[i] == p) {
            c->peers[i] = c->peers[--c->n_peers];
            break;
        }
    }
}

int
tp_teardown(void **state)
{
    struct tp_ctx *c = *state;
    int rc = 0;
    size_t i;

    /* Agents first (their jobs end), then the others: the backend has nothing left to drain
     * when SIGTERM arrives. */
    for (i = c->n_peers; i-- > 0;) {
        if (c->peers[i]->role == ING_ROLE_AGENT) {
            free_peer(c->peers[i]);
            c->peers[i] = c->peers[--c->n_peers];
        }
    }
    while (c->n_peers > 0)
        free_peer(c->peers[--c->n_peers]);

    if (c->be.pid > 0) {
        int st = tp_stop(c);

        if (c->ok && !(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            if (st != -1 && WIFSIGNALED(st))
                print_error("teardown: the backend died of signal %d\n", WTERMSIG(st));
            else if (st != -1 && WIFEXITED(st))
                print_error("teardown: the backend exited with status %d after SIGTERM\n",
                            WEXITSTATUS(st));
            else
                print_error("teardown: the backend did not exit after SIGTERM\n");
            rc = -1;
        }
    }
    if (!c->ok || rc != 0 || getenv("TP_LOG") != NULL)
        tp_dump_log(c);
    remove_dir(&c->be);
    free(c);
    *state = NULL;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The backend process */

const char *
tp_backend_bin(void)
{
    static char path[TP_PATH_MAX];
    const char *b = getenv("ING_BUILD");

    if (b == NULL || *b == '\0')
        b = "build";
    snprintf(path, sizeof(path), "%s/inginious-backend", b);
    return path;
}

static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/* reap waits for the child until deadline. Returns true once it has been reaped. */
static bool
reap(struct tp_backend *b, uint64_t deadline)
{
    for (;;) {
        int st;
        pid_t r = waitpid(b->pid, &st, WNOHANG);

        if (r == b->pid) {
            b->status = st;
            b->reaped = true;
            if (b->pidfd >= 0)
                close(b->pidfd);
            b->pidfd = -1;
            return true;
        }
        if (r < 0 && errno != EINTR) {
            /* Not our child any more (should not happen): treat as gone. */
            b->status = -1;
            b->reaped = true;
            return true;
        }
        int left = remaining(deadline);

        if (left == 0)
            return false;
        if (b->pidfd >= 0) {
            struct pollfd pf = {.fd = b->pidfd, .events = POLLIN};

            poll(&pf, 1, left);
        } else {
            /* No pidfd: poll with a short timeout while the deadline runs. */
            poll(NULL, 0, left < 5 ? left : 5);
        }
    }
}

/* parse_port_file reads the port file. Returns true when both addresses are in it. */
static bool
parse_port_file(struct tp_backend *b)
{
    char buf[2 * TP_PATH_MAX + 64];
    char *line, *save = NULL;
    bool a = false, cl = false;
    int fd = open(b->port_path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "agent ", 6) == 0) {
            snprintf(b->agent_addr, sizeof(b->agent_addr), "%s", line + 6);
            a = true;
        } else if (strncmp(line, "client ", 7) == 0) {
            snprintf(b->client_addr, sizeof(b->client_addr), "%s", line + 7);
            cl = true;
        }
    }
    return a && cl;
}

const char *
tp_dir_at(const char *file, int line, struct tp_ctx *c)
{
    struct tp_backend *b = &c->be;

    if (b->dir[0] == '\0') {
        snprintf(b->dir, sizeof(b->dir), "/tmp/ingtest.XXXXXX");
        if (mkdtemp(b->dir) == NULL) {
            b->dir[0] = '\0';
            tp_fail_at(file, line, "mkdtemp: %s", strerror(errno));
        }
    }
    return b->dir;
}

int
tp_run_at(const char *file, int line, const char *const *args, char *out, size_t cap)
{
    const char *argv[MAX_OPTS + 2];
    struct tp_backend b = {.pidfd = -1};
    size_t n = 0, used = 0;
    uint64_t deadline = tp_now_ms() + TP_DEADLINE_MS;
    int fds[2];
    pid_t pid;

    argv[n++] = tp_backend_bin();
    for (size_t i = 0; args[i] != NULL; i++) {
        if (n > MAX_OPTS)
            tp_fail_at(file, line, "tp_run: too many arguments");
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    if (pipe2(fds, O_CLOEXEC) < 0)
        tp_fail_at(file, line, "pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        tp_fail_at(file, line, "fork: %s", strerror(errno));
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);

        dup2(nul, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        signal(SIGPIPE, SIG_DFL);
        tp_exec(argv);
        _exit(127);
    }
    close(fds[1]);
    b.pid = pid;
    b.pidfd = open_pidfd(pid);
    for (;;) {
        struct pollfd pf = {.fd = fds[0], .events = POLLIN};
        char buf[1024];
        ssize_t r;
        int left = remaining(deadline);

        if (left == 0)
            break;
        if (poll(&pf, 1, left) <= 0)
            continue;
        r = read(fds[0], buf, sizeof(buf));
        if (r <= 0)
            break;
        if (cap > 0 && used < cap - 1) {
            size_t k = (size_t)r < cap - 1 - used ? (size_t)r : cap - 1 - used;

            memcpy(out + used, buf, k);
            used += k;
        }
    }
    if (cap > 0)
        out[used] = '\0';
    close(fds[0]);
    if (!reap(&b, deadline)) {
        kill(pid, SIGKILL);
        reap(&b, tp_now_ms() + TP_DEADLINE_MS);
        tp_fail_at(file, line, "tp_run: the backend did not exit within %d ms", TP_DEADLINE_MS);
    }
    return b.status;
}

void
tp_expect_bad_options_at(const char *file, int line, const char *const (*bad)[2], size_t n)
{
    char out[4096];

    for (size_t i = 0; i < n; i++) {
        const char *argv[] = {bad[i][0], bad[i][1], NULL};
        int st = tp_run_at(file, line, argv, out, sizeof(out));
        char want[80];
        snprintf(want, sizeof(want), "bad value for %s", bad[i][0]);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 2 || strstr(out, want) == NULL)
            tp_fail_at(file, line, "%s %s: status 0x%x, output \"%.100s\"", bad[i][0],
                       bad[i][1], (unsigned)st, out);
    }
}

void
tp_start_argv_at(const char *file, int line, struct tp_ctx *c, const char *agent_addr,
                 const char *client_addr, const char *const *opts)
{
    struct tp_backend *b = &c->be;
    const char *argv[MAX_OPTS + 16];
    size_t n = 0, i;
    bool has_drain = false;
    uint64_t deadline;
    int ino;
    pid_t pid;

    if (b->pid > 0)
        tp_fail_at(file, line, "tp_start: a backend is already running");
    if (access(tp_backend_bin(), X_OK) != 0)
        tp_fail_at(file, line, "tp_start: %s: %s (build the backend; set ING_BUILD)",
                   tp_backend_bin(), strerror(errno));
    tp_dir_at(file, line, c);
    fmt(b->log_path, sizeof(b->log_path), "%s/backend.log", b->dir);
    fmt(b->port_path, sizeof(b->port_path), "%s/ports", b->dir);
    unlink(b->port_path);
    b->agent_addr[0] = b->client_addr[0] = '\0';
    b->reaped = false;
    b->status = 0;

    argv[n++] = tp_backend_bin();
    argv[n++] = "-v";
    for (i = 0; opts != NULL && opts[i] != NULL; i++) {
        if (i >= MAX_OPTS)
            tp_fail_at(file, line, "tp_start: too many options");
        if (strcmp(opts[i], "--drain-timeout") == 0)
            has_drain = true;
        argv[n++] = opts[i];
    }
    if (!has_drain) {
        argv[n++] = "--drain-timeout";
        argv[n++] = "300ms";
    }
    argv[n++] = "--port-file";
    argv[n++] = b->port_path;
    argv[n++] = agent_addr != NULL ? agent_addr : "tcp://127.0.0.1:0";
    argv[n++] = client_addr != NULL ? client_addr : "tcp://127.0.0.1:0";
    argv[n] = NULL;

    ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino < 0 || inotify_add_watch(ino, b->dir, IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0)
        tp_fail_at(file, line, "inotify: %s", strerror(errno));

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        tp_fail_at(file, line, "fork: %s", strerror(errno));
    if (pid == 0) {
        sigset_t none;
        int fd = open(b->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);

        if (fd < 0 || nul < 0)
            _exit(126);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(b->err_fd > 0 ? b->err_fd : fd, 2);
        signal(SIGPIPE, SIG_DFL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        tp_exec(argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    b->pid = pid;
    b->pidfd = open_pidfd(pid);

    deadline = tp_now_ms() + TP_DEADLINE_MS;
    for (;;) {
        char evbuf[4096];
        struct pollfd pf[2] = {{.fd = ino, .events = POLLIN}, {.fd = b->pidfd, .events = POLLIN}};
        int left;

        if (parse_port_file(b))
            break;
        if (reap(b, 0)) {
            close(ino);
            b->pid = 0;
            tp_dump_log(c);
            tp_fail_at(file, line, "the backend exited during start-up (status 0x%x)", b->status);
        }
        left = remaining(deadline);
        if (left == 0) {
            close(ino);
            tp_fail_at(file, line, "the backend did not write its port file within %d ms",
                       TP_DEADLINE_MS);
        }
        /* Without a pidfd, wake up now and then to notice an early exit. */
        poll(pf, b->pidfd >= 0 ? 2 : 1, b->pidfd >= 0 ? left : (left < 20 ? left : 20));
        while (read(ino, evbuf, sizeof(evbuf)) > 0)
            ;
    }
    close(ino);
}

static void
start_va(const char *file, int line, struct tp_ctx *c, const char *agent, const char *client,
         va_list ap)
{
    const char *opts[MAX_OPTS + 1];
    size_t n = 0;
    const char *o;

    while ((o = va_arg(ap, const char *)) != NULL) {
        if (n >= MAX_OPTS)
            tp_fail_at(file, line, "tp_start: too many options");
        opts[n++] = o;
    }
    opts[n] = NULL;
    tp_start_argv_at(file, line, c, agent, client, opts);
}

void
tp_start_at(const char *file, int line, struct tp_ctx *c, ...)
{
    va_list ap;

    va_start(ap, c);
    start_va(file, line, c, NULL, NULL, ap);
    va_end(ap);
}

void
tp_start_addrs_at(const char *file, int line, struct tp_ctx *c, const char *agent_addr,
                  const char *client_addr, ...)
{
    va_list ap;

    va_start(ap, client_addr);
    start_va(file, line, c, agent_addr, client_addr, ap);
    va_end(ap);
}

void
tp_signal(struct tp_ctx *c, int sig)
{
    if (c->be.pid > 0 && !c->be.reaped)
        kill(c->be.pid, sig);
}

int
tp_wait_exit(struct tp_ctx *c, int timeout_ms)
{
    struct tp_backend *b = &c->be;

    if (b->pid <= 0)
        return b->reaped ? b->status : -1;
    if (!b->reaped && !reap(b, tp_now_ms() + (uint64_t)timeout_ms))
        return -1;
    b->pid = 0;
    return b->status;
}

int
tp_stop(struct tp_ctx *c)
{
    struct tp_backend *b = &c->be;

    if (b->pid <= 0)
        return b->reaped ? b->status : -1;
    if (!b->reaped) {
        kill(b->pid, SIGTERM);
        if (!reap(b, tp_now_ms() + TP_DEADLINE_MS)) {
            print_error("the backend (pid %d) did not exit within %d ms of SIGTERM: SIGKILL\n",
                        (int)b->pid, TP_DEADLINE_MS);
            kill(b->pid, SIGKILL);
            reap(b, tp_now_ms() + TP_DEADLINE_MS);
            b->pid = 0;
            return -1;
        }
    }
    b->pid = 0;
    return b->status;
}

void
tp_dump_log(const struct tp_ctx *c)
{
    char buf[4096];
    int fd;
    off_t size;
    ssize_t n;

    if (c->be.log_path[0] == '\0')
        return;
    fd = open(c->be.log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size = lseek(fd, 0, SEEK_END);
    lseek(fd, size > LOG_TAIL ? size - LOG_TAIL : 0, SEEK_SET);
    fprintf(stderr, "---- backend log %s%s ----\n", c->be.log_path,
            size > LOG_TAIL ? " (last 64 KiB)" : "");
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        fwrite(buf, 1, (size_t)n, stderr);
    fprintf(stderr, "---- end of backend log ----\n");
    close(fd);
}

bool
tp_log_contains(const struct tp_ctx *c, const char *needle)
{
    FILE *f = fopen(c->be.log_path, "re");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && getline(&line, &cap, f) >= 0)
        found = strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return found;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections */

static struct tp_peer *
new_peer(struct tp_ctx *c, int fd, uint8_t role)
{
    struct tp_peer *p;

    if (c->n_peers >= TP_MAX_PEERS) {
        close(fd);
        errno = EMFILE;
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        close(fd);
        return NULL;
    }
    p->fd = fd;
    p->role = role;
    snprintf(p->label, sizeof(p->label), "%s#%u",
             role == ING_ROLE_AGENT    ? "agent"
             : role == ING_ROLE_CLIENT ? "client"
                                       : "conn",
             ++c->serial);
    c->peers[c->n_peers++] = p;
    return p;
}

/* connect_addr connects a socket to addr. Returns the fd (non-blocking) or -1 with errno. */
static int
connect_addr(const char *addr)
{
    int fd, one = 1;

    if (strncmp(addr, "ipc://", 6) == 0) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};

        if (strlen(addr + 6) >= sizeof(sun.sun_path)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        strcpy(sun.sun_path, addr + 6);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            int e = errno;

            close(fd);
            errno = e;
            return -1;
        }
    } else if (strncmp(addr, "tcp://", 6) == 0) {
        char host[128];
        const char *h = addr + 6, *colon;
        size_t hl;
        long port;
        struct sockaddr_storage ss;
        socklen_t sl;

        if (*h == '[') {
            const char *end = strchr(h, ']');

            if (end == NULL || end[1] != ':') {
                errno = EINVAL;
                return -1;
            }
            hl = (size_t)(end - h - 1);
            if (hl >= sizeof(host)) {
                errno = EINVAL;
                return -1;
            }
            memcpy(host, h + 1, hl);
            colon = end + 1;
        } else {
            colon = strrchr(h, ':');
            if (colon == NULL || (size_t)(colon - h) >= sizeof(host)) {
                errno = EINVAL;
                return -1;
            }
            hl = (size_t)(colon - h);
            memcpy(host, h, hl);
        }
        host[hl] = '\0';
        port = strtol(colon + 1, NULL, 10);
        memset(&ss, 0, sizeof(ss));
        if (strchr(host, ':') != NULL) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)port);
            if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
                errno = EINVAL;
                return -1;
            }
            sl = sizeof(*s6);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
                errno = EINVAL;
                return -1;
            }
            sl = sizeof(*s4);
        }
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
            int e = errno;

            close(fd);
            errno = e;
            return -1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    } else {
        errno = EINVAL;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

struct tp_peer *
tp_open(struct tp_ctx *c, const char *addr)
{
    int fd = connect_addr(addr);

    if (fd < 0)
        return NULL;
    return new_peer(c, fd, 0);
}

struct tp_peer *
tp_connect_at(const char *file, int line, struct tp_ctx *c, uint8_t role)
{
    const char *addr = role == ING_ROLE_AGENT ? c->be.agent_addr : c->be.client_addr;
    struct tp_peer *p = tp_open(c, addr);
    uint8_t pre[ING_PREAMBLE_LEN];
    const struct ing_msg *m;
    const struct ing_welcome *w;

    if (p == NULL)
        tp_fail_at(file, line, "connect %s: %s", addr, strerror(errno));
    p->role = role;
    snprintf(p->label, sizeof(p->label), "%s#%u", role == ING_ROLE_AGENT ? "agent" : "client",
             c->serial);
    p->auto_pong = role == ING_ROLE_AGENT;
    ing_preamble_encode(pre, role);
    tp_send_raw_at(file, line, p, pre, sizeof(pre));
    m = tp_expect_at(file, line, p, ING_WELCOME);
    w = &m->u.welcome;
    p->welcome.version = w->version;
    p->welcome.role = w->role;
    p->welcome.flags = w->flags;
    p->welcome.max_frame = w->max_frame;
    p->welcome.heartbeat_ms = w->heartbeat_ms;
    memcpy(p->welcome.nonce, w->nonce, sizeof(w->nonce));
    tp_cpy(p->welcome.server, sizeof(p->welcome.server), w->server);
    if (w->version != ING_PROTO_VERSION || w->role != role)
        tp_fail_at(file, line, "%s: Welcome version %u role %u, expected version 1 role %u",
                   p->label, w->version, w->role, role);
    return p;
}

void
tp_client_hello_at(const char *file, int line, struct tp_peer *p, const char *name)
{
    struct ing_msg m = {.type = ING_CLIENT_HELLO};

    m.u.client_hello.name = (struct ing_view){name, (uint32_t)strlen(name)};
    tp_send_at(file, line, p, &m);
}

struct tp_peer *
tp_client_at(const char *file, int line, struct tp_ctx *c, const char *name, const char *want)
{
    struct tp_peer *p = tp_connect_at(file, line, c, ING_ROLE_CLIENT);

    snprintf(p->label, sizeof(p->label), "client %s", name);
    tp_client_hello_at(file, line, p, name);
    if (want != NULL)
        tp_expect_envs_at(file, line, p, want);
    else
        tp_expect_at(file, line, p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    return p;
}

struct tp_peer *
tp_agent_at(const char *file, int line, struct tp_ctx *c, const char *name, uint32_t slots, ...)
{
    struct tp_env envs[32];
    char names[32][128];
    size_t n = 0;
    const char *s;
    va_list ap;
    struct tp_peer *p = tp_connect_at(file, line, c, ING_ROLE_AGENT);

    va_start(ap, slots);
    while ((s = va_arg(ap, const char *)) != NULL) {
        char *slash;

        if (n >= 32) {
            va_end(ap);
            tp_fail_at(file, line, "tp_agent: too many environments");
        }
        snprintf(names[n], sizeof(names[n]), "%s", s);
        slash = strchr(names[n], '/');
        if (slash == NULL) {
            va_end(ap);
            tp_fail_at(file, line, "tp_agent: environment \"%s\" is not type/name", s);
        }
        *slash = '\0';
        envs[n] = (struct tp_env){.type = names[n], .name = slash + 1, .id = "i1", .created = 1};
        n++;
    }
    va_end(ap);
    snprintf(p->label, sizeof(p->label), "agent %s", name);
    tp_hello_at(file, line, p, name, slots, envs, n);
    return p;
}

void
tp_close(struct tp_ctx *c, struct tp_peer *p)
{
    forget_peer(c, p);
    free_peer(p);
}

void
tp_abort(struct tp_ctx *c, struct tp_peer *p)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    tp_close(c, p);
}

/* ------------------------------------------------------------------------------------------ */
/* Sending */

int
tp_send_fd(int fd, const void *buf, size_t len, int timeout_ms)
{
    const uint8_t *b = buf;
    uint64_t deadline = tp_now_ms() + (uint64_t)timeout_ms;

    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);

        if (n > 0) {
            b += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int left = remaining(deadline);

            if (left == 0)
                return -ETIMEDOUT;
            poll(&pf, 1, left);
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

int
tp_write(struct tp_peer *p, const void *buf, size_t len)
{
    return tp_send_fd(p->fd, buf, len, TP_DEADLINE_MS);
}

void
tp_send_raw_at(const char *file, int line, struct tp_peer *p, const void *buf, size_t len)
{
    int r = tp_write(p, buf, len);

    if (r < 0 && !p->lenient)
        tp_fail_at(file, line, "%s: write of %zu bytes: %s", p->label, len, strerror(-r));
}

void
tp_send_frame_at(const char *file, int line, struct tp_peer *p, uint8_t type, uint8_t flags,
                 const void *body, size_t len)
{
    uint8_t hdr[ING_HDR_LEN];

    ing_frame_header(hdr, type, (uint32_t)len);
    hdr[5] = flags;
    tp_send_raw_at(file, line, p, hdr, sizeof(hdr));
    if (len > 0)
        tp_send_raw_at(file, line, p, body, len);
}

uint8_t *
tp_msg_frame_at(const char *file, int line, const struct ing_msg *m, size_t *len)
{
    size_t size = ing_msg_size(m);
    uint8_t *buf;
    ssize_t r;

    if (size == 0)
        tp_fail_at(file, line, "cannot encode a %s", ing_msg_type_name(m->type));
    buf = malloc(size);
    if (buf == NULL)
        tp_fail_at(file, line, "out of memory");
    r = ing_msg_encode(m, buf, size);
    if (r < 0 || (size_t)r != size) {
        free(buf);
        tp_fail_at(file, line, "ing_msg_encode(%s) = %zd, size %zu", ing_msg_type_name(m->type), r,
                   size);
    }
    *len = size;
    return buf;
}

void
tp_send_at(const char *file, int line, struct tp_peer *p, const struct ing_msg *m)
{
    size_t len;
    uint8_t *buf = tp_msg_frame_at(file, line, m, &len);
    int r = tp_write(p, buf, len);

    free(buf);
    if (r < 0 && !p->lenient)
        tp_fail_at(file, line, "%s: sending %s: %s", p->label, ing_msg_type_name(m->type),
                   strerror(-r));
}

void
tp_send_type_at(const char *file, int line, struct tp_peer *p, uint8_t type)
{
    struct ing_msg m = {.type = type};

    tp_send_at(file, line, p, &m);
}

static struct ing_view
cview(const char *s)
{
    return (struct ing_view){s, s != NULL ? (uint32_t)strlen(s) : 0};
}

static struct ing_view
wview(const struct ing_mp_writer *w)
{
    return (struct ing_view){(const char *)w->buf, (uint32_t)w->len};
}

static struct ing_view
bview(struct tp_bytes b)
{
    return (struct ing_view){b.p, (uint32_t)b.len};
}

/* The three msgpack maps of a job, built into dynamic writers. */
struct job_maps {
    struct ing_mp_writer problems;
    struct ing_mp_writer input;
    struct ing_mp_writer params;
};

static void
job_maps_build(const struct tp_job *j, struct job_maps *jm, struct ing_job_spec *spec)
{
    uint32_t n = 0;

    ing_mp_writer_init_dyn(&jm->problems);
    ing_mp_writer_init_dyn(&jm->input);
    ing_mp_writer_init_dyn(&jm->params);

    ing_mp_put_map(&jm->problems, 0);

    n = (j->state != NULL) + (j->input != NULL) + (j->pad > 0);
    ing_mp_put_map(&jm->input, n);
    if (j->state != NULL) {
        ing_mp_put_cstr(&jm->input, "@state");
        ing_mp_put_cstr(&jm->input, j->state);
    }
    if (j->input != NULL) {
        ing_mp_put_cstr(&jm->input, "v");
        ing_mp_put_cstr(&jm->input, j->input);
    }
    if (j->pad > 0) {
        ing_mp_put_cstr(&jm->input, "pad");
        ing_mp_put_str_header(&jm->input, (uint32_t)j->pad);
        for (size_t i = 0; i < j->pad; i++)
            ing_mp_put_raw(&jm->input, "x", 1);
    }

    if (j->has_time || j->time_raw.p != NULL) {
        ing_mp_put_map(&jm->params, 1);
        ing_mp_put_cstr(&jm->params, "limits");
        ing_mp_put_map(&jm->params, 2);
        ing_mp_put_cstr(&jm->params, "memory");
        ing_mp_put_int(&jm->params, 100);
        ing_mp_put_cstr(&jm->params, "time");
        if (j->time_raw.p != NULL)
            ing_mp_put_raw(&jm->params, j->time_raw.p, j->time_raw.len);
        else
            ing_mp_put_int(&jm->params, j->time);
    } else {
        ing_mp_put_map(&jm->params, 0);
    }

    memset(spec, 0, sizeof(*spec));
    spec->job_id = cview(j->id);
    spec->course_id = cview(j->course);
    spec->task_id = cview(j->task);
    spec->environment_type = cview(j->env_type != NULL ? j->env_type : "docker");
    spec->environment = cview(j->env != NULL ? j->env : "default");
    spec->debug = j->debug;
    spec->task_problems = j->problems_raw.p != NULL ? bview(j->problems_raw) : wview(&jm->problems);
    spec->inputdata = j->inputdata_raw.p != NULL ? bview(j->inputdata_raw) : wview(&jm->input);
    spec->environment_parameters =
        j->params_raw.p != NULL ? bview(j->params_raw) : wview(&jm->params);
}

static void
job_maps_free(struct job_maps *jm)
{
    ing_mp_writer_fini(&jm->problems);
    ing_mp_writer_fini(&jm->input);
    ing_mp_writer_fini(&jm->params);
}

uint8_t *
tp_job_frame(const struct tp_job *j, uint8_t type, size_t *len)
{
    struct job_maps jm;
    struct ing_job_spec spec;
    struct ing_msg m = {.type = type};
    uint8_t *frame;

    job_maps_build(j, &jm, &spec);
    if (type == ING_CLIENT_NEW_JOB) {
        m.u.new_job.priority = j->priority;
        m.u.new_job.launcher = cview(j->launcher != NULL ? j->launcher : "tester");
        m.u.new_job.job = spec;
    } else {
        m.u.job = spec;
    }
    frame = tp_msg_frame_at(__FILE__, __LINE__, &m, len);
    job_maps_free(&jm);
    return frame;
}

void
tp_send_job_at(const char *file, int line, struct tp_peer *p, const struct tp_job *j)
{
    size_t len;
    uint8_t *buf = tp_job_frame(j, ING_CLIENT_NEW_JOB, &len);
    int r = tp_write(p, buf, len);

    free(buf);
    if (r < 0 && !p->lenient)
        tp_fail_at(file, line, "%s: sending ClientNewJob %s: %s", p->label, j->id, strerror(-r));
}

void
tp_submit_at(const char *file, int line, struct tp_peer *p, const char *id, int64_t priority)
{
    char state[300];
    struct tp_job j = {.id = id, .priority = priority, .state = state};

    snprintf(state, sizeof(state), "S-%s", id);
    tp_send_job_at(file, line, p, &j);
}

void
tp_kill_at(const char *file, int line, struct tp_peer *p, const char *id)
{
    struct ing_msg m = {.type = ING_CLIENT_KILL_JOB};

    m.u.ref.job_id = cview(id);
    tp_send_at(file, line, p, &m);
}

void
tp_hello_raw_at(const char *file, int line, struct tp_peer *p, const char *name, uint32_t slots,
                struct tp_bytes envs)
{
    struct ing_msg m = {.type = ING_AGENT_HELLO};

    m.u.agent_hello.friendly_name = cview(name);
    m.u.agent_hello.slots = slots;
    m.u.agent_hello.environments = bview(envs);
    tp_send_at(file, line, p, &m);
}

void
tp_envs_mp_at(const char *file, int line, const struct tp_env *envs, size_t n,
              struct ing_mp_writer *w)
{
    const char *types[64];
    size_t nt = 0, i, k;

    /* Group by type, in order of first appearance. */
    for (i = 0; i < n; i++) {
        for (k = 0; k < nt && strcmp(types[k], envs[i].type) != 0; k++)
            ;
        if (k == nt) {
            if (nt >= 64)
                tp_fail_at(file, line, "tp_envs_mp: too many types");
            types[nt++] = envs[i].type;
        }
    }
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, (uint32_t)nt);
    for (k = 0; k < nt; k++) {
        uint32_t count = 0;

        for (i = 0; i < n; i++)
            count += strcmp(envs[i].type, types[k]) == 0;
        ing_mp_put_cstr(w, types[k]);
        ing_mp_put_map(w, count);
        for (i = 0; i < n; i++) {
            const struct tp_env *e = &envs[i];

            if (strcmp(e->type, types[k]) != 0)
                continue;
            ing_mp_put_cstr(w, e->name);
            ing_mp_put_map(w, e->advertised == TP_ADV_ABSENT ? 3 : 4);
            ing_mp_put_cstr(w, "id");
            ing_mp_put_cstr(w, e->id != NULL ? e->id : "i1");
            ing_mp_put_cstr(w, "created");
            ing_mp_put_int(w, e->created);
            ing_mp_put_cstr(w, "ports");
            ing_mp_put_array(w, 0);
            if (e->advertised != TP_ADV_ABSENT) {
                ing_mp_put_cstr(w, "advertised");
                ing_mp_put_bool(w, e->advertised == TP_ADV_TRUE);
            }
        }
    }
    if (w->err != 0) {
        ing_mp_writer_fini(w);
        tp_fail_at(file, line, "tp_envs_mp: msgpack writer error %d", w->err);
    }
}

void
tp_hello_at(const char *file, int line, struct tp_peer *p, const char *name, uint32_t slots,
            const struct tp_env *envs, size_t n)
{
    struct ing_mp_writer w;
    tp_envs_mp_at(file, line, envs, n, &w);
    struct tp_bytes b = {w.buf, w.len};

    tp_hello_raw_at(file, line, p, name, slots, b);
    ing_mp_writer_fini(&w);
}

uint8_t *
tp_result_frame(const struct tp_result *r, uint8_t type, size_t *len)
{
    struct ing_msg m = {.type = type};
    struct ing_job_result *res = &m.u.result;

    res->job_id = cview(r->id);
    res->result_kind = cview(r->kind != NULL ? r->kind : "success");
    res->result_text = cview(r->text != NULL ? r->text : "");
    res->grade = r->grade;
    res->problems = r->problems.p != NULL ? bview(r->problems) : cview("\x80");
    res->tests = r->tests.p != NULL ? bview(r->tests) : cview("\x80");
    res->custom = r->custom.p != NULL ? bview(r->custom) : cview("\x80");
    res->state = cview(r->state != NULL ? r->state : "");
    res->archive = bview(r->archive);
    res->stdout_ = cview(r->out);
    res->stderr_ = cview(r->err);
    return tp_msg_frame_at(__FILE__, __LINE__, &m, len);
}

void
tp_done_full_at(const char *file, int line, struct tp_peer *p, const struct tp_result *r)
{
    size_t len;
    uint8_t *buf = tp_result_frame(r, ING_AGENT_JOB_DONE, &len);
    int rc = tp_write(p, buf, len);

    free(buf);
    if (rc < 0 && !p->lenient)
        tp_fail_at(file, line, "%s: sending AgentJobDone %s: %s", p->label, r->id, strerror(-rc));
}

void
tp_done_at(const char *file, int line, struct tp_peer *p, const char *id, const char *kind,
           const char *state)
{
    struct tp_result r = {
        .id = id,
        .kind = kind,
        .text = "",
        .grade = strcmp(kind, "success") == 0 ? 100.0 : 0.0,
        .state = state,
        .out = "",
        .err = "",
    };

    tp_done_full_at(file, line, p, &r);
}

void
tp_started_at(const char *file, int line, struct tp_peer *p, const char *id)
{
    struct ing_msg m = {.type = ING_AGENT_JOB_STARTED};

    m.u.ref.job_id = cview(id);
    tp_send_at(file, line, p, &m);
}

void
tp_ssh_at(const char *file, int line, struct tp_peer *p, const char *id, const char *host,
          uint32_t port, const char *user, const char *password)
{
    struct ing_msg m = {.type = ING_AGENT_JOB_SSH_DEBUG};

    m.u.ssh.job_id = cview(id);
    m.u.ssh.host = cview(host);
    m.u.ssh.port = port;
    m.u.ssh.user = cview(user);
    m.u.ssh.password = cview(password);
    tp_send_at(file, line, p, &m);
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving */

static void
drop(struct tp_peer *p, size_t n)
{
    if (n == 0)
        return;
    memmove(p->in, p->in + n, p->in_len - n);
    p->in_len -= n;
}

/* fill reads what is there (one read). Returns bytes read, 0 at EOF (sets eof), -EAGAIN,
 * or -errno. */
static ssize_t
fill(struct tp_peer *p)
{
    ssize_t n;

    if (p->in_cap - p->in_len < 65536) {
        size_t cap = p->in_cap < 65536 ? 131072 : p->in_cap * 2;
        uint8_t *in = realloc(p->in, cap);

        if (in == NULL)
            return -ENOMEM;
        p->in = in;
        p->in_cap = cap;
    }
    for (;;) {
        n = read(p->fd, p->in + p->in_len, p->in_cap - p->in_len);
        if (n > 0) {
            p->in_len += (size_t)n;
            return n;
        }
        if (n == 0) {
            p->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        if (errno == ECONNRESET || errno == EPIPE) {
            p->eof = true;
            return 0;
        }
        return -errno;
    }
}

/* next_buffered decodes the next frame already in the buffer, skipping (and answering)
 * pings as configured. Returns the type, 0 if no complete frame, or a decode error. */
static int
next_buffered(struct tp_peer *p)
{
    for (;;) {
        ssize_t r;

        if (p->in_len == 0)
            return 0;
        r = ing_msg_decode(p->in, p->in_len, UINT32_MAX, &p->msg);
        if (r == 0)
            return 0;
        if (r < 0)
            return (int)r;
        if (p->msg.type == ING_PING) {
            p->pings++;
            if (p->auto_pong) {
                uint8_t pong[ING_HDR_LEN];

                ing_frame_header(pong, ING_PONG, 0);
                tp_write(p, pong, sizeof(pong));
            }
            if (!p->see_pings) {
                drop(p, (size_t)r);
                continue;
            }
        }
        p->last = (size_t)r;
        return p->msg.type;
    }
}

int
tp_recv(struct tp_peer *p, int timeout_ms, const struct ing_msg **m)
{
    uint64_t deadline = tp_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);

    drop(p, p->last);
    p->last = 0;
    for (;;) {
        int t = next_buffered(p);
        ssize_t n;

        if (t != 0) {
            if (t > 0)
                *m = &p->msg;
            return t;
        }
        if (p->eof)
            return -EPIPE;
        n = fill(p);
        if (n > 0 || (n == 0 && p->eof))
            continue;
        if (n != -EAGAIN)
            return (int)n;
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        int left = remaining(deadline);

        if (left == 0)
            return -ETIMEDOUT;
        poll(&pf, 1, left);
    }
}

/* describe writes a one-line description of a message for failure texts. */
static void
describe(const struct ing_msg *m, char *out, size_t cap)
{
    char a[300], b[300];

    switch (m->type) {
    case ING_ERROR:
        fmt(out, cap, "Error code %u \"%s\"", m->u.error.code,
            tp_cpy(a, sizeof(a), m->u.error.text));
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE: {
        char id[300], st[300];

        fmt(out, cap, "%s(%s, %s, \"%s\", state \"%s\")", ing_msg_type_name(m->type),
            tp_cpy(id, sizeof(id), m->u.result.job_id),
            tp_cpy(b, sizeof(b), m->u.result.result_kind),
            tp_cpy(a, sizeof(a), m->u.result.result_text),
            tp_cpy(st, sizeof(st), m->u.result.state));
        break;
    }
    case ING_BACKEND_NEW_JOB:
        fmt(out, cap, "BackendNewJob(%s)", tp_cpy(a, sizeof(a), m->u.job.job_id));
        break;
    case ING_BACKEND_KILL_JOB:
        fmt(out, cap, "BackendKillJob(%s, \"%s\")", tp_cpy(a, sizeof(a), m->u.kill.job_id),
            tp_cpy(b, sizeof(b), m->u.kill.state));
        break;
    case ING_BACKEND_JOB_STARTED:
        fmt(out, cap, "BackendJobStarted(%s)", tp_cpy(a, sizeof(a), m->u.ref.job_id));
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
        fmt(out, cap, "BackendJobSSHDebug(%s)", tp_cpy(a, sizeof(a), m->u.ssh.job_id));
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        tp_envs_render(m->u.envs.environments, a, sizeof(a));
        fmt(out, cap, "BackendUpdateEnvironments{%s}", a);
        break;
    case ING_BACKEND_GET_QUEUE:
        fmt(out, cap, "BackendGetQueue(%u running, %u waiting)", m->u.queue.n_running,
            m->u.queue.n_waiting);
        break;
    default:
        fmt(out, cap, "%s", ing_msg_type_name(m->type));
        break;
    }
}

static const char *
recv_error(int r)
{
    switch (r) {
    case -ETIMEDOUT:
        return "nothing received before the deadline";
    case -EPIPE:
        return "the backend closed the connection";
    case -EMSGSIZE:
        return "undecodable frame (length)";
    case -ENOMSG:
        return "frame of an unknown type";
    case -EPROTO:
        return "malformed frame";
    default:
        return strerror(-r);
    }
}

const struct ing_msg *
tp_expect_at(const char *file, int line, struct tp_peer *p, uint8_t type)
{
    const struct ing_msg *m = NULL;
    int r = tp_recv(p, TP_DEADLINE_MS, &m);
    char d[700];

    if (r < 0)
        tp_fail_at(file, line, "%s: expected %s: %s", p->label, ing_msg_type_name(type),
                   recv_error(r));
    if (m->type != type) {
        describe(m, d, sizeof(d));
        tp_fail_at(file, line, "%s: expected %s, received %s", p->label, ing_msg_type_name(type),
                   d);
    }
    return m;
}

void
tp_expect_nothing_at(const char *file, int line, struct tp_peer *p, int ms)
{
    const struct ing_msg *m = NULL;

    ms *= tp_slow(); /* a window that means something under valgrind too */
    int r = tp_recv(p, ms, &m);
    char d[700];

    if (r == -ETIMEDOUT)
        return;
    if (r < 0)
        tp_fail_at(file, line, "%s: expected nothing for %d ms: %s", p->label, ms, recv_error(r));
    describe(m, d, sizeof(d));
    tp_fail_at(file, line, "%s: expected nothing for %d ms, received %s", p->label, ms, d);
}

void
tp_expect_quiet_at(const char *file, int line, struct tp_ctx *c, int ms)
{
    uint64_t deadline = tp_now_ms() + (uint64_t)ms * (uint64_t)tp_slow();
    struct pollfd pf[TP_MAX_PEERS];
    size_t i;
    char d[700];

    for (;;) {
        int left;

        for (i = 0; i < c->n_peers; i++) {
            struct tp_peer *p = c->peers[i];
            int t;

            drop(p, p->last);
            p->last = 0;
            while (fill(p) > 0)
                ;
            t = next_buffered(p);
            if (t > 0) {
                describe(&p->msg, d, sizeof(d));
                tp_fail_at(file, line, "%s: expected nothing for %d ms, received %s", p->label, ms,
                           d);
            }
            if (t < 0)
                tp_fail_at(file, line, "%s: %s", p->label, recv_error(t));
            if (p->eof && p->role != 0)
                tp_fail_at(file, line, "%s: expected nothing for %d ms: %s", p->label, ms,
                           recv_error(-EPIPE));
            pf[i] = (struct pollfd){.fd = p->eof ? -1 : p->fd, .events = POLLIN};
        }
        left = remaining(deadline);
        if (left == 0)
            return;
        poll(pf, (nfds_t)c->n_peers, left);
    }
}

void
tp_expect_closed_at(const char *file, int line, struct tp_peer *p)
{
    for (;;) {
        const struct ing_msg *m = NULL;
        int r = tp_recv(p, TP_DEADLINE_MS, &m);
        char d[700];

        if (r == -EPIPE)
            return;
        if (r < 0)
            tp_fail_at(file, line, "%s: expected the connection to close: %s", p->label,
                       recv_error(r));
        if (m->type == ING_ERROR || m->type == ING_PING)
            continue;
        describe(m, d, sizeof(d));
        tp_fail_at(file, line, "%s: expected the connection to close, received %s", p->label, d);
    }
}

const struct ing_msg *
tp_expect_error_at(const char *file, int line, struct tp_peer *p, uint16_t code)
{
    const struct ing_msg *m = tp_expect_at(file, line, p, ING_ERROR);
    char t[300];

    if (m->u.error.code != code)
        tp_fail_at(file, line, "%s: expected Error code %u, received code %u \"%s\"", p->label,
                   code, m->u.error.code, tp_cpy(t, sizeof(t), m->u.error.text));
    return m;
}

static void
check_str(const char *file, int line, const struct tp_peer *p, const char *what, struct ing_view v,
          const char *want)
{
    char got[600];

    if (want != NULL && !tp_view_is(v, want))
        tp_fail_at(file, line, "%s: %s is \"%s\", expected \"%s\"", p->label, what,
                   tp_cpy(got, sizeof(got), v), want);
}

const struct ing_msg *
tp_expect_done_at(const char *file, int line, struct tp_peer *p, const char *id, const char *kind,
                  const char *text, const char *state)
{
    const struct ing_msg *m = NULL;
    int r = tp_recv(p, TP_DEADLINE_MS, &m);
    const char *kind_text = kind;
    char d[700];

    if (kind == NULL)
        kind_text = "*";
    if (r < 0)
        tp_fail_at(file, line, "%s: expected BackendJobDone(%s, %s): %s", p->label, id, kind_text,
                   recv_error(r));
    if (m->type != ING_BACKEND_JOB_DONE || !tp_view_is(m->u.result.job_id, id)) {
        describe(m, d, sizeof(d));
        tp_fail_at(file, line, "%s: expected BackendJobDone(%s, %s), received %s", p->label, id,
                   kind_text, d);
    }
    check_str(file, line, p, "result_kind", m->u.result.result_kind, kind);
    check_str(file, line, p, "result_text", m->u.result.result_text, text);
    check_str(file, line, p, "state", m->u.result.state, state);
    return m;
}

void
tp_check_synthetic_at(const char *file, int line, const struct ing_msg *m)
{
    const struct ing_job_result *r = &m->u.result;
    char id[300];

    tp_cpy(id, sizeof(id), r->job_id);
    if (r->grade != 0.0)
        tp_fail_at(file, line, "synthetic result %s: grade %g, expected 0.0", id, r->grade);
    if (!tp_view_bytes(r->problems, TP_RAW("\x80")) || !tp_view_bytes(r->tests, TP_RAW("\x80")) ||
        !tp_view_bytes(r->custom, TP_RAW("\x80")))
        tp_fail_at(file, line, "synthetic result %s: problems/tests/custom are not {}", id);
    if (r->archive.p != NULL)
        tp_fail_at(file, line, "synthetic result %s: archive is not nil", id);
    if (!tp_view_is(r->stdout_, "") || !tp_view_is(r->stderr_, ""))
        tp_fail_at(file, line, "synthetic result %s: stdout/stderr are %s/%s, expected \"\"", id,
                   r->stdout_.p == NULL ? "nil" : "non-empty",
                   r->stderr_.p == NULL ? "nil" : "non-empty");
}

const struct ing_msg *
tp_expect_synthetic_at(const char *file, int line, struct tp_peer *p, const char *id,
                       const char *kind, const char *text, const char *state)
{
    const struct ing_msg *m = tp_expect_done_at(file, line, p, id, kind, text, state);

    tp_check_synthetic_at(file, line, m);
    return m;
}

const struct ing_msg *
tp_expect_job_at(const char *file, int line, struct tp_peer *p, const char *id)
{
    const struct ing_msg *m = tp_expect_at(file, line, p, ING_BACKEND_NEW_JOB);
    char got[300];

    if (!tp_view_is(m->u.job.job_id, id))
        tp_fail_at(file, line, "%s: expected BackendNewJob(%s), received BackendNewJob(%s)",
                   p->label, id, tp_cpy(got, sizeof(got), m->u.job.job_id));
    return m;
}

void
tp_expect_envs_at(const char *file, int line, struct tp_peer *p, const char *want)
{
    const struct ing_msg *m = tp_expect_at(file, line, p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    char got[1024];

    tp_envs_render(m->u.envs.environments, got, sizeof(got));
    if (strcmp(got, want) != 0)
        tp_fail_at(file, line, "%s: BackendUpdateEnvironments {%s}, expected {%s}", p->label, got,
                   want);
}

void
tp_barrier_at(const char *file, int line, struct tp_peer *p)
{
    tp_send_type_at(file, line, p, ING_PING);
    tp_expect_at(file, line, p, ING_PONG);
}

const uint8_t *
tp_frame(const struct tp_peer *p, size_t *len)
{
    *len = p->last;
    return p->in;
}

/* ------------------------------------------------------------------------------------------ */
/* Values */

char *
tp_cpy(char *dst, size_t cap, struct ing_view v)
{
    size_t n;

    if (v.p == NULL) {
        snprintf(dst, cap, "<nil>");
        return dst;
    }
    n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.p, n);
    dst[n] = '\0';
    return dst;
}

bool
tp_view_is(struct ing_view v, const char *s)
{
    size_t n = strlen(s);

    return v.p != NULL && v.len == n && memcmp(v.p, s, n) == 0;
}

bool
tp_view_bytes(struct ing_view v, struct tp_bytes b)
{
    if (v.p == NULL || b.p == NULL)
        return v.p == NULL && b.p == NULL;
    return v.len == b.len && memcmp(v.p, b.p, b.len) == 0;
}

struct env_type {
    char text[512];
};

static int
cmp_env_type(const void *a, const void *b)
{
    return strcmp(((const struct env_type *)a)->text, ((const struct env_type *)b)->text);
}

void
tp_envs_render(struct ing_view v, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)v.p, *end = p + v.len;
    struct ing_mp_obj o;
    struct env_type *types = NULL;
    uint32_t nt, i, k;
    size_t used = 0;

    snprintf(out, cap, "<bad>");
    if (p == NULL || ing_mp_read(&p, end, &o) < 0 || o.type != ING_MP_MAP)
        return;
    nt = o.v.n;
    if (nt > 4096)
        return;
    types = calloc(nt ? nt : 1, sizeof(*types));
    if (types == NULL)
        return;
    for (i = 0; i < nt; i++) {
        size_t len;
        uint32_t nn;

        if (ing_mp_read(&p, end, &o) < 0 || o.type != ING_MP_STR)
            goto bad;
        len = (size_t)snprintf(types[i].text, sizeof(types[i].text), "%.*s:[", (int)o.v.s.len,
                               (const char *)o.v.s.p);
        if (ing_mp_read(&p, end, &o) < 0 || o.type != ING_MP_ARRAY)
            goto bad;
        nn = o.v.n;
        for (k = 0; k < nn; k++) {
            if (ing_mp_read(&p, end, &o) < 0 || o.type != ING_MP_STR)
                goto bad;
            if (len < sizeof(types[i].text))
                len += (size_t)snprintf(types[i].text + len, sizeof(types[i].text) - len, "%s%.*s",
                                        k > 0 ? "," : "", (int)o.v.s.len, (const char *)o.v.s.p);
        }
        if (len < sizeof(types[i].text))
            snprintf(types[i].text + len, sizeof(types[i].text) - len, "]");
    }
    if (p != end)
        goto bad;
    qsort(types, nt, sizeof(*types), cmp_env_type);
    out[0] = '\0';
    for (i = 0; i < nt && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i > 0 ? ";" : "", types[i].text);
bad:
    free(types);
}

void
tp_get_queue_at(const char *file, int line, struct tp_peer *p, struct tp_queue *q)
{
    const struct ing_msg *m;
    const uint8_t *pos;
    uint32_t i;

    tp_send_type_at(file, line, p, ING_CLIENT_GET_QUEUE);
    m = tp_expect_at(file, line, p, ING_BACKEND_GET_QUEUE);
    memset(q, 0, sizeof(*q));
    q->n_running = m->u.queue.n_running;
    q->n_waiting = m->u.queue.n_waiting;
    q->running = calloc(q->n_running ? q->n_running : 1, sizeof(*q->running));
    q->waiting = calloc(q->n_waiting ? q->n_waiting : 1, sizeof(*q->waiting));
    if (q->running == NULL || q->waiting == NULL)
        tp_fail_at(file, line, "out of memory");
    pos = m->u.queue.wire_running;
    for (i = 0; i < q->n_running; i++) {
        struct ing_queue_running e;
        struct tp_qentry *t = &q->running[i];

        pos = ing_queue_next_running(pos, &e);
        tp_cpy(t->id, sizeof(t->id), e.job_id);
        t->mine = e.is_current;
        tp_cpy(t->agent, sizeof(t->agent), e.agent_name);
        tp_cpy(t->info, sizeof(t->info), e.info);
        tp_cpy(t->launcher, sizeof(t->launcher), e.launcher);
        t->started_at = e.started_at;
        t->max_time = e.max_time;
    }
    pos = m->u.queue.wire_waiting;
    for (i = 0; i < q->n_waiting; i++) {
        struct ing_queue_waiting e;
        struct tp_qentry *t = &q->waiting[i];

        pos = ing_queue_next_waiting(pos, &e);
        tp_cpy(t->id, sizeof(t->id), e.job_id);
        t->mine = e.is_current;
        tp_cpy(t->info, sizeof(t->info), e.info);
        tp_cpy(t->launcher, sizeof(t->launcher), e.launcher);
        t->max_time = e.max_time;
    }
}

void
tp_queue_free(struct tp_queue *q)
{
    free(q->running);
    free(q->waiting);
    memset(q, 0, sizeof(*q));
}

void
tp_queue_ids(const struct tp_queue *q, bool running, char *out, size_t cap)
{
    uint32_t n = running ? q->n_running : q->n_waiting;
    const struct tp_qentry *e = running ? q->running : q->waiting;
    size_t used = 0;
    uint32_t i;

    out[0] = '\0';
    for (i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i > 0 ? "," : "", e[i].id);
}

bool
tp_ipv6_loopback(void)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0;

    sa.sin6_addr = in6addr_loopback;
    if (ok)
        ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

void
tp_fill_queue_at(const char *file, int line, struct tp_peer *p, int n, const char *launcher)
{
    for (int k = 0; k < n; k++) {
        char id[16];
        struct tp_job j = {.id = id, .launcher = launcher};

        snprintf(id, sizeof(id), "w%03d", k);
        tp_send_job_at(file, line, p, &j);
    }
    tp_barrier_at(file, line, p);
}
