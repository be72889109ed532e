/* SPDX-License-Identifier: MIT */
/* test_ops.c: running like a Debian daemon (src/sd.c, the service units, signals, options).
 *
 *  - sd.c's parsers: NOTIFY_SOCKET (a path, an abstract @name), WATCHDOG_USEC/WATCHDOG_PID,
 *    and sd_listen_fds on real sockets placed at fds 3 and 4 in a child (by name, by order,
 *    a socket that does not listen refused, another process's LISTEN_PID ignored).
 *  - The real backend started with NOTIFY_SOCKET pointing at a datagram socket made here
 *    (a path, then an abstract name): READY=1 with STATUS=, STATUS= following the figures,
 *    WATCHDOG=1 at half of a small WATCHDOG_USEC, STOPPING=1 on SIGTERM, exit 0.
 *  - The real backend under systemd-socket-activate (Debian's systemd): both named sockets
 *    (given in the opposite order) serve a job end to end; skipped with a reason if the
 *    tool is missing. systemd-analyze verify on dist/systemd/ (the programs' paths pointed
 *    at the build); skipped with a reason if the tool is missing.
 *  - SIGHUP re-reads the secret and allow-list files: a new secret works and the old one is
 *    refused, a new allow-list applies, a bad file (unparsable, empty) is refused and every
 *    setting in use kept, the backend never stops; SIGINT then drains and exits 0.
 *  - inginious-agent-process --secret-file and inginious-ctl --secret-file against a
 *    backend requiring both secrets: a job runs end to end; a wrong agent secret is refused.
 *  - Options out of range are refused at start-up with the accepted range and status 2.
 *  - ipc:// paths: a second backend refuses to take over a live path (the first keeps
 *    serving), a stale socket file is replaced, and the files are removed at exit.
 *  - tcp://[::]:PORT is dual-stack (an IPv4 client reaches it), --ipv6-only is not; skipped
 *    with a reason when the machine has no IPv6.
 * Every wait is bounded (LT_DEADLINE_MS, scaled by ING_SLOW); nothing sleeps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inginious/err.h"
#include "sd.h"
#include "support/libtest.h"

/* ------------------------------------------------------------------------------------------ */
/* Helpers */

static const char *
prog(const char *name)
{
    static char path[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(path[i], sizeof(path[i]), "%s/%s", lt_build(), name);
    return path[i];
}

/* tool finds a program in /usr/bin or /bin; NULL when absent. */
static const char *
tool(const char *name)
{
    static char path[256];
    static const char *const dirs[] = {"/usr/bin", "/bin", "/usr/sbin", "/sbin"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dirs[i], name);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

/* log_count counts the lines of the backend's log holding needle. */
static int
log_count(const struct lt_world *w, const char *needle)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(w->log_path, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* wait_log waits for the want-th line of the backend's log holding needle. The log is a
 * file: it is polled every few milliseconds (spinning the world), up to the deadline. */
static void
wait_log(struct lt_world *w, const char *needle, int want)
{
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    while (log_count(w, needle) < want) {
        if (lt_now_ms() > end) {
            lt_dump_log(w);
            fail_msg("no %d log lines with \"%s\" in time", want, needle);
        }
        poll(NULL, 0, 5);
        lt_spin(w, 0);
    }
}

static bool
proc_err_has(struct lt_world *w, void *arg)
{
    return w->proc != NULL && strstr(w->proc->err, arg) != NULL;
}

/* hup sends SIGHUP and waits for the want-th log line holding needle. */
static void
hup(struct lt_world *w, const char *needle, int want)
{
    assert_int_equal(kill(w->be_pid, SIGHUP), 0);
    wait_log(w, needle, want);
}

/* client_try connects a client with the secret (NULL: none) to the backend's client
 * endpoint (addr NULL) and returns ing_client_connect's result; the client is dropped. */
static int
client_try(struct lt_world *w, const char *addr, const char *secret)
{
    struct ing_client_opts o = {.addr = addr != NULL ? addr : w->client_addr,
                                .name = "ops",
                                .connect_timeout_ms = LT_DEADLINE_MS};
    if (secret != NULL) {
        o.secret = (const uint8_t *)secret;
        o.secret_len = strlen(secret);
    }
    struct ing_client *c = ing_client_new(&o);
    assert_non_null(c);
    int rc = ing_client_connect(c);
    ing_client_free(c);
    return rc;
}

/* port_of returns the port of a "tcp://HOST:PORT" address. */
static unsigned
port_of(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    assert_non_null(colon);
    return (unsigned)atoi(colon + 1);
}

/* wrapped returns argv with the words of $ING_WRAPPER (memcheck, under make valgrind) put
 * before the word at index at, so that the backends this file starts itself run under the
 * wrapper as lt_start's do. A first word without a '/' is looked up in the usual places.
 * Static storage: valid until the next call. */
static char *const *
wrapped(char *const argv[], size_t at)
{
    static char words[1024], first[256];
    static char *out[64];
    const char *wrap = getenv("ING_WRAPPER");
    size_t n = 0, i;

    for (i = 0; i < at && argv[i] != NULL; i++)
        out[n++] = argv[i];
    if (wrap != NULL && *wrap != '\0') {
        snprintf(words, sizeof(words), "%s", wrap);
        for (char *t = strtok(words, " "); t != NULL && n < 40; t = strtok(NULL, " "))
            out[n++] = t;
        if (at == 0 && strchr(out[0], '/') == NULL) {
            const char *path = tool(out[0]);
            if (path == NULL)
                fail_msg("$ING_WRAPPER: %s not found", out[0]);
            snprintf(first, sizeof(first), "%s", path);
            out[0] = first;
        }
    }
    for (; argv[i] != NULL && n < 63; i++)
        out[n++] = argv[i];
    out[n] = NULL;
    return out;
}

static bool
file_has(const char *path, const char *needle)
{
    char buf[16384];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* sd.c */

static void
test_sd_parse(void **state)
{
    struct sockaddr_un a;
    socklen_t len;
    uint64_t us = 7;
    (void)state;

    assert_int_equal(sd_parse_socket("/run/systemd/notify", &a, &len), 0);
    assert_string_equal(a.sun_path, "/run/systemd/notify");
    assert_int_equal(len,
                     offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
    assert_int_equal(sd_parse_socket("@ing/notify", &a, &len), 0);
    assert_int_equal(a.sun_path[0], '\0'); /* abstract: no NUL terminator counted */
    assert_memory_equal(a.sun_path + 1, "ing/notify", 10);
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 11);
    char longp[200];
    memset(longp, 'x', sizeof(longp));
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(sd_parse_socket(longp, &a, &len), -EINVAL);
    assert_int_equal(sd_parse_socket("relative", &a, &len), -EINVAL);
    assert_int_equal(sd_parse_socket("", &a, &len), -EINVAL);
    assert_int_equal(sd_parse_socket("@", &a, &len), -EINVAL);

    assert_int_equal(sd_parse_watchdog("30000000", NULL, 42, &us), 0);
    assert_int_equal(us, 30000000);
    assert_int_equal(sd_parse_watchdog("1000", "42", 42, &us), 0);
    assert_int_equal(us, 1000);
    assert_int_equal(sd_parse_watchdog("1000", "43", 42, &us), 0); /* another process's */
    assert_int_equal(us, 0);
    us = 7;
    assert_int_equal(sd_parse_watchdog("0", NULL, 42, &us), -EINVAL);
    assert_int_equal(sd_parse_watchdog("-5", NULL, 42, &us), -EINVAL);
    assert_int_equal(sd_parse_watchdog("5s", NULL, 42, &us), -EINVAL);
    assert_int_equal(sd_parse_watchdog("99999999999999999999999", NULL, 42, &us), -EINVAL);
    assert_int_equal(sd_parse_watchdog("1000", "x", 42, &us), -EINVAL);
    assert_int_equal(us, 7);
}

/* listener makes a listening (or, with listen_too false, only bound) TCP socket on
 * 127.0.0.1 port 0. */
static int
listener(bool listen_too)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&in, sizeof(in)) != 0 ||
        (listen_too && listen(fd, 8) != 0))
        return -1;
    return fd;
}

/* listen_case runs sd_listen_fds in a child with fds 3 and 4 set as given (kinds: 'l'
 * listening, 'b' bound only, 'd' a datagram socket) and the environment given (pidv NULL:
 * the child's pid). out gets "RC AGENTS CLIENTS unset|set nb=N [reason]": the result, the
 * two fds, whether the variables were unset and whether the agents' fd is non-blocking. */
static void
listen_case(const char *kinds, const char *pidv, const char *count, const char *names, char *out,
            size_t outlen)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char res[400], err[256] = "";
        int fds[2] = {-7, -7};
        int wfd = fcntl(pfd[1], F_DUPFD_CLOEXEC, 100); /* out of the way of fds 3 and 4 */
        close(pfd[0]);
        close(pfd[1]);
        if (wfd < 0)
            _exit(5);
        for (int i = 0; kinds[i] != '\0'; i++) {
            int fd = kinds[i] == 'd' ? socket(AF_INET, SOCK_DGRAM, 0) : listener(kinds[i] == 'l');
            if (fd < 0 || dup2(fd, 3 + i) < 0)
                _exit(3);
            if (fd != 3 + i)
                close(fd);
        }
        char pidbuf[32];
        snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
        setenv("LISTEN_PID", pidv != NULL ? pidv : pidbuf, 1);
        setenv("LISTEN_FDS", count, 1);
        if (names != NULL)
            setenv("LISTEN_FDNAMES", names, 1);
        int rc = sd_listen_fds(fds, err, sizeof(err));
        int nb = fds[0] > 0 ? (fcntl(fds[0], F_GETFL) & O_NONBLOCK) != 0 : -1;
        snprintf(res, sizeof(res), "%d %d %d %s nb=%d [%s]", rc, fds[0], fds[1],
                 getenv("LISTEN_FDS") == NULL && getenv("LISTEN_PID") == NULL ? "unset" : "set", nb,
                 err);
        if (write(wfd, res, strlen(res)) < 0)
            _exit(4);
        _exit(0);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], out, outlen - 1);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    out[n > 0 ? n : 0] = '\0';
}

static void
expect_prefix(const char *got, const char *want)
{
    if (strncmp(got, want, strlen(want)) != 0)
        fail_msg("sd_listen_fds gave \"%s\", expected \"%s...\"", got, want);
}

static void
test_sd_listen_fds(void **state)
{
    char out[512];
    (void)state;

    listen_case("ll", NULL, "2", "clients:agents", out, sizeof(out));
    expect_prefix(out, "2 4 3 unset nb=1");
    listen_case("ll", NULL, "2", NULL, out, sizeof(out)); /* unnamed: by order */
    expect_prefix(out, "2 3 4 unset");
    listen_case("ll", NULL, "2", "inginious-backend.socket:inginious-backend.socket", out,
                sizeof(out));
    expect_prefix(out, "2 3 4 unset");
    listen_case("l", NULL, "1", "clients", out, sizeof(out)); /* agents bound from the address */
    expect_prefix(out, "1 0 3 unset");
    listen_case("ll", "1", "2", NULL, out, sizeof(out)); /* another process's: ignored */
    expect_prefix(out, "0 0 0");
    listen_case("lb", NULL, "2", NULL, out, sizeof(out)); /* not listening */
    expect_prefix(out, "-22 0 0 unset");
    assert_non_null(strstr(out, "fd 4 (clients) is not a listening stream socket"));
    listen_case("ld", NULL, "2", NULL, out, sizeof(out)); /* a datagram socket */
    expect_prefix(out, "-22 0 0 unset");
    listen_case("ll", NULL, "2", "agents:agents", out, sizeof(out));
    expect_prefix(out, "-22 0 0 unset");
    assert_non_null(strstr(out, "two sockets for the agents"));
    listen_case("ll", NULL, "3", NULL, out, sizeof(out));
    expect_prefix(out, "-22 0 0 unset");
    listen_case("ll", NULL, "x", NULL, out, sizeof(out));
    expect_prefix(out, "-22 0 0 unset");
}

/* ------------------------------------------------------------------------------------------ */
/* Notifications from the real backend */

#define MAX_DGRAMS 4096

struct dgrams {
    int fd;
    char *msg[MAX_DGRAMS];
    size_t n;
};

/* dgram_read takes what arrived on the notify socket. */
static void
dgram_read(struct dgrams *d)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(d->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (r < 0)
            return;
        buf[r] = '\0';
        if (d->n < MAX_DGRAMS)
            d->msg[d->n++] = strdup(buf);
    }
}

/* dgram_count counts the datagrams since index from holding needle. */
static size_t
dgram_count(const struct dgrams *d, size_t from, const char *needle)
{
    size_t n = 0;
    for (size_t i = from; i < d->n; i++)
        n += strstr(d->msg[i], needle) != NULL;
    return n;
}

/* dgram_wait spins until want datagrams from index from hold needle; returns the index of
 * the last one. */
static size_t
dgram_wait(struct lt_world *w, struct dgrams *d, size_t from, const char *needle, size_t want)
{
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    for (;;) {
        dgram_read(d);
        if (dgram_count(d, from, needle) >= want)
            break;
        if (lt_now_ms() > end) {
            fprintf(stderr, "datagrams received:\n");
            for (size_t i = 0; i < d->n; i++)
                fprintf(stderr, "  [%zu] %s\n", i, d->msg[i]);
            if (w->proc != NULL)
                fprintf(stderr, "backend stderr:\n%s\n", w->proc->err);
            fail_msg("no %zu datagrams with \"%s\" in time", want, needle);
        }
        struct pollfd p = {.fd = d->fd, .events = POLLIN};
        poll(&p, 1, 5);
        lt_spin(w, 5);
    }
    size_t last = from;
    for (size_t i = from; i < d->n; i++)
        if (strstr(d->msg[i], needle) != NULL)
            last = i;
    return last;
}

static void
dgrams_free(struct dgrams *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->msg[i]);
    if (d->fd >= 0)
        close(d->fd);
}

/* notify_run starts the backend with NOTIFY_SOCKET=where (a path, or @name bound here as an
 * abstract name) and checks the notifications of its whole life. */
static void
notify_run(struct lt_world *w, const char *where)
{
    struct dgrams d = {.fd = -1};
    struct sockaddr_un a;
    socklen_t alen;
    char env_sock[200], port_file[300], line[300], caddr[300] = "";

    assert_int_equal(sd_parse_socket(where, &a, &alen), 0);
    d.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(d.fd >= 0);
    if (bind(d.fd, (struct sockaddr *)&a, alen) != 0)
        fail_msg("bind %s: %s", where, strerror(errno));
    snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", where);
    snprintf(port_file, sizeof(port_file), "%s/notify.ports", lt_dir(w));
    const char *env[] = {env_sock, "WATCHDOG_USEC=200000", NULL};
    char *argv[] = {(char *)prog("inginious-backend"),
                    "--port-file",
                    port_file,
                    "tcp://127.0.0.1:0",
                    "tcp://127.0.0.1:0",
                    NULL};
    lt_run(w, argv, env);

    size_t ready = dgram_wait(w, &d, 0, "READY=1", 1);
    assert_non_null(strstr(d.msg[ready], "STATUS=0 agents, 0 clients, 0 jobs waiting, 0 running"));
    /* The port file is written before READY=1: the addresses are there. */
    FILE *f = fopen(port_file, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "client ", 7) == 0)
            snprintf(caddr, sizeof(caddr), "%.*s", (int)strcspn(line + 7, "\n"), line + 7);
    fclose(f);
    assert_true(caddr[0] != '\0');

    /* WATCHDOG=1 at half of 200 ms, from the loop. */
    dgram_wait(w, &d, ready, "WATCHDOG=1", 3);
    /* STATUS= follows the figures: a client connected (kept while we wait). */
    struct ing_client_opts o = {.addr = caddr, .name = "ops"};
    struct ing_client *c = ing_client_new(&o);
    assert_non_null(c);
    assert_int_equal(ing_client_connect(c), 0);
    dgram_wait(w, &d, ready, "STATUS=0 agents, 1 clients, 0 jobs waiting, 0 running", 1);
    ing_client_free(c);

    size_t before = d.n;
    assert_int_equal(kill(w->proc->pid, SIGTERM), 0);
    dgram_wait(w, &d, before, "STOPPING=1", 1);
    assert_int_equal(lt_proc_wait(w), 0);
    /* Nothing was sent before READY=1, and READY=1 only once. */
    assert_int_equal(dgram_count(&d, 0, "READY=1"), 1);
    assert_int_equal(dgram_count(&d, 0, "WATCHDOG=1") >= 3, 1);
    dgrams_free(&d);
}

static void
test_notify_path(void **state)
{
    struct lt_world *w = *state;
    char where[300];

    snprintf(where, sizeof(where), "%s/notify", lt_dir(w));
    notify_run(w, where);
    lt_pass(w);
}

static void
test_notify_abstract(void **state)
{
    struct lt_world *w = *state;
    char where[100];

    snprintf(where, sizeof(where), "@inginious-test-notify-%d", (int)getpid());
    notify_run(w, where);
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* systemd: socket activation and the units */

/* need_tool returns the path of a tool of Debian's systemd package (a copy, static), or
 * skips the running test saying why. */
static char *
need_tool(const char *name)
{
    static char path[256];
    const char *t = tool(name);
    if (t == NULL) {
        printf("SKIPPED: %s is not installed (Debian package systemd)\n", name);
        skip();
    }
    snprintf(path, sizeof(path), "%s", t);
    return path;
}

static void
test_socket_activation(void **state)
{
    struct lt_world *w = *state;
    char *sa_path = need_tool("systemd-socket-activate");
    char la[300], lc[300];

    snprintf(la, sizeof(la), "%s/agents.sock", lt_dir(w));
    snprintf(lc, sizeof(lc), "%s/clients.sock", lt_dir(w));
    /* The clients' socket first, named: the backend takes each by its name. The command
     * line's addresses are not bound. */
    char *argv[] = {sa_path,
                    "-l",
                    lc,
                    "-l",
                    la,
                    "--fdname=clients:agents",
                    (char *)prog("inginious-backend"),
                    "-v",
                    "tcp://127.0.0.1:1",
                    "tcp://127.0.0.1:1",
                    NULL};
    lt_run(w, wrapped(argv, 6), NULL); /* the wrapper, if any, before the backend */
    lt_until(w, proc_err_has, " as 4.", "systemd-socket-activate listening on both sockets");
    snprintf(w->agent_addr, sizeof(w->agent_addr), "ipc://%.200s", la);
    snprintf(w->client_addr, sizeof(w->client_addr), "ipc://%.200s", lc);
    lt_fork_agent(w, "activated", 1, "docker/default", NULL); /* its connection starts it */
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    struct ing_client_job j = {.job_id = "sa-1",
                               .environment_type = "docker",
                               .environment = "default",
                               .launcher = "ops"};
    struct ing_client_result res;
    j.inputdata = lt_mp(w, "{\"do\": \"success\"}");
    assert_int_equal(ing_client_submit_wait(cl->c, &j, LT_DEADLINE_MS, &res, NULL, NULL), 0);
    assert_true(ing_view_eq(res.r.result_kind, "success"));
    ing_client_result_free(&res);
    lt_until(w, proc_err_has, "socket activation: 2 listeners from the service manager",
             "the backend's log of socket activation");
    assert_int_equal(kill(w->proc->pid, SIGTERM), 0);
    assert_int_equal(lt_proc_wait(w), 0);
    lt_pass(w);
}

static void
test_units_verify(void **state)
{
    struct lt_world *w = *state;
    char *sa_path = need_tool("systemd-analyze");
    static const char *const units[] = {"inginious-backend.service", "inginious-backend.socket",
                                        "inginious-agent-process.service"};
    char build[512], path[700];

    if (realpath(lt_build(), build) == NULL)
        fail_msg("realpath %s: %s", lt_build(), strerror(errno));
    /* Copies of the units whose ExecStart= names the programs just built (verify wants
     * them to exist); nothing else changes. */
    char *argv[8] = {sa_path, "verify", "--man=no"};
    static char copies[3][700];
    for (size_t i = 0; i < 3; i++) {
        char text[8192], out[12288];
        snprintf(path, sizeof(path), "dist/systemd/%s", units[i]);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            fail_msg("%s: %s (run from the top of the tree)", path, strerror(errno));
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        assert_true(strncmp(text, "# SPDX-License-Identifier: MIT\n", 31) == 0);
        size_t o = 0;
        for (const char *p = text; *p != '\0';) {
            if (strncmp(p, "/usr/bin/inginious-", 19) == 0) {
                o += (size_t)snprintf(out + o, sizeof(out) - o, "%s/inginious-", build);
                p += 19;
            } else if (o + 1 < sizeof(out)) {
                out[o++] = *p++;
            } else {
                fail_msg("%s too long", path);
            }
        }
        out[o] = '\0';
        snprintf(copies[i], sizeof(copies[i]), "%s", lt_write_file(w, units[i], out));
        argv[3 + i] = copies[i];
    }
    argv[6] = NULL;
    lt_run(w, argv, NULL);
    int rc = lt_proc_wait(w);
    if (rc != 0 || w->proc->err[0] != '\0' || w->proc->out[0] != '\0')
        fail_msg("systemd-analyze verify: status %d\n%s%s", rc, w->proc->out, w->proc->err);
    /* What the service promises. */
    assert_true(file_has("dist/systemd/inginious-backend.service", "\nType=notify\n"));
    assert_true(file_has("dist/systemd/inginious-backend.service", "\nWatchdogSec="));
    assert_true(file_has("dist/systemd/inginious-backend.service", "\nDynamicUser=yes\n"));
    assert_true(file_has("dist/systemd/inginious-backend.service", "\nProtectSystem=strict\n"));
    assert_true(
        file_has("dist/systemd/inginious-backend.service", "\nSystemCallFilter=@system-service\n"));
    assert_true(file_has("dist/systemd/inginious-backend.socket", "\nListenStream=127.0.0.1:2001\n"
                                                                  "ListenStream=127.0.0.1:2000\n"));
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* SIGHUP, SIGINT */

static void
test_sighup_reload(void **state)
{
    struct lt_world *w = *state;
    const char *secret = lt_write_file(w, "client.secret", "old\n");
    char sp[300], ap[300];
    snprintf(sp, sizeof(sp), "%s", secret);
    snprintf(ap, sizeof(ap), "%s",
             lt_write_file(w, "client.allow", "# loopback only\n127.0.0.1/32, ::1\n"));

    lt_start(w, NULL, NULL, "--client-secret-file", sp, "--client-allow-file", ap, NULL);
    assert_int_equal(client_try(w, NULL, "old"), 0);
    assert_int_not_equal(client_try(w, NULL, NULL), 0);

    /* A new secret: it works, the old one is refused. */
    lt_write_file(w, "client.secret", "new\n");
    hup(w, "reloaded:", 1);
    assert_int_equal(client_try(w, NULL, "new"), 0);
    assert_int_not_equal(client_try(w, NULL, "old"), 0);

    /* A new allow-list: loopback is no longer in it. */
    lt_write_file(w, "client.allow", "10.0.0.0/8\n");
    hup(w, "reloaded:", 2);
    assert_int_not_equal(client_try(w, NULL, "new"), 0);
    wait_log(w, "refused (not in the allow-list)", 1);

    /* Bad files are refused whole: an address that does not parse, then an empty secret
     * (with a good allow-list beside it). The settings in use stay. */
    lt_write_file(w, "client.allow", "127.0.0.1\nnot-an-address\n");
    hup(w, "reload refused", 1);
    assert_true(lt_log_contains(w, "'not-an-address' is not an address or CIDR block"));
    lt_write_file(w, "client.allow", "127.0.0.1\n");
    lt_write_file(w, "client.secret", "");
    hup(w, "reload refused", 2);
    assert_int_not_equal(client_try(w, NULL, "new"), 0); /* 10.0.0.0/8 still applies */
    lt_write_file(w, "client.allow", "");
    lt_write_file(w, "client.secret", "new2\n");
    hup(w, "reload refused", 3); /* an empty allow-list never means "everyone" */
    assert_true(lt_log_contains(w, "no entry"));

    /* Good files again. */
    lt_write_file(w, "client.allow", "127.0.0.0/8\n");
    hup(w, "reloaded:", 3);
    assert_int_equal(client_try(w, NULL, "new2"), 0);
    assert_int_not_equal(client_try(w, NULL, "new"), 0);
    assert_int_equal(log_count(w, "shutting down"), 0); /* SIGHUP never stopped it */

    /* SIGINT drains as SIGTERM does, and the exit is clean. */
    int st = lt_kill_backend(w, SIGINT);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(lt_log_contains(w, "shutting down"));
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Secrets for the bundled agent and inginious-ctl */

/* start_agent starts inginious-agent-process with a secret file on the backend's agent
 * endpoint, its output into log. */
static pid_t
start_agent(struct lt_world *w, const char *secret, const char *envs, const char *name,
            const char *log)
{
    char *argv[] = {(char *)prog("inginious-agent-process"),
                    "--secret-file",
                    (char *)secret,
                    "--environments",
                    (char *)envs,
                    "--name",
                    (char *)name,
                    w->agent_addr,
                    NULL};
    return lt_spawn(argv, log);
}

static void
test_agent_process_secret(void **state)
{
    struct lt_world *w = *state;
    char as[300], cs[300], wrong[300], envs[300], alog[300];

    snprintf(as, sizeof(as), "%s", lt_write_file(w, "agent.secret", "agent-pa55\n"));
    snprintf(cs, sizeof(cs), "%s", lt_write_file(w, "client.secret", "client-pa55\n"));
    snprintf(wrong, sizeof(wrong), "%s", lt_write_file(w, "wrong.secret", "guess\n"));
    snprintf(alog, sizeof(alog), "%s/agent.log", lt_dir(w));
    snprintf(envs, sizeof(envs), "%s",
             lt_process_env(w, "#!/bin/sh\necho '{\"result\": \"success\", \"grade\": 77, "
                               "\"text\": \"secret ok\"}' > feedback.json\n"));

    lt_start(w, NULL, NULL, "--agent-secret-file", as, "--client-secret-file", cs, NULL);

    /* A wrong agent secret is refused by the backend. */
    pid_t bad = start_agent(w, wrong, envs, "wrong", alog);
    wait_log(w, "authentication failed", 1);
    lt_stop_pid(w, bad);

    pid_t agent = start_agent(w, as, envs, "good", alog);
    wait_log(w, "authenticated", 1);

    char *ctl[] = {(char *)prog("inginious-ctl"),
                   "--backend",
                   w->client_addr,
                   "--secret-file",
                   cs,
                   "--timeout",
                   "60s",
                   "submit",
                   "--env-type",
                   "process",
                   "--env",
                   "default",
                   "--wait",
                   NULL};
    lt_run(w, ctl, NULL);
    int rc = lt_proc_wait(w);
    if (rc != 0 || strstr(w->proc->out, "result: success") == NULL ||
        strstr(w->proc->out, "grade: 77") == NULL)
        fail_msg("inginious-ctl submit: status %d\n%s%s", rc, w->proc->out, w->proc->err);
    int st = lt_stop_pid(w, agent);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* A secret file that cannot be read: status 2 and the reason. */
    char *none[] = {(char *)prog("inginious-agent-process"), "--secret-file", "/nonexistent/s",
                    w->agent_addr, NULL};
    lt_run(w, none, NULL);
    assert_int_equal(lt_proc_wait(w), 2);
    assert_non_null(strstr(w->proc->err, "cannot read /nonexistent/s"));
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Options out of range */

static void
refused(struct lt_world *w, const char *program, const char *opt, const char *val, const char *want)
{
    static bool checked; /* the refusal path under the wrapper once (memcheck is slow) */
    char *argv[] = {(char *)prog(program), (char *)opt, (char *)val, NULL};
    lt_run(w, checked ? argv : wrapped(argv, 0), NULL);
    checked = true;
    int rc = lt_proc_wait(w);
    if (rc != 2 || strstr(w->proc->err, want) == NULL)
        fail_msg("%s %s %s: status %d, stderr \"%s\", expected 2 and \"%s\"", program, opt, val, rc,
                 w->proc->err, want);
}

static void
test_option_bounds(void **state)
{
    struct lt_world *w = *state;
    static const char *const huge = "18446744073709551s";

    refused(w, "inginious-backend", "--orphan-timeout", huge,
            "bad value for --orphan-timeout: '18446744073709551s' (expected a duration from 0 "
            "to 7d)");
    refused(w, "inginious-backend", "--handshake-timeout", huge,
            "(expected a duration from 1ms to 1h)");
    refused(w, "inginious-backend", "--ping-interval", huge,
            "(expected a duration from 1ms to 1h)");
    refused(w, "inginious-backend", "--kill-timeout", "8d", "(expected a duration from 0 to 7d)");
    refused(w, "inginious-backend", "--drain-timeout", "169h",
            "(expected a duration from 0 to 7d)");
    refused(w, "inginious-backend", "--max-frame", "2G", "(expected a size from 4K to 1G)");
    refused(w, "inginious-backend", "--max-frame", "4294967232", "(expected a size from 4K to 1G)");
    refused(w, "inginious-backend", "--max-output", "65G", "(expected a size from 4K to 64G)");
    refused(w, "inginious-backend", "--max-waiting", "1000000001",
            "(expected a whole number from 0 to 1000000000)");
    refused(w, "inginious-backend", "--retry-lost-jobs", "256",
            "(expected a whole number from 0 to 255)");
    refused(w, "inginious-agent-process", "--output-limit", "2G", "--output-limit");
    refused(w, "inginious-ctl", "--timeout", "30d", "--timeout");
    /* The largest values are taken. */
    lt_start(w, NULL, NULL, "--max-frame", "1G", "--orphan-timeout", "7d", "--kill-timeout", "168h",
             "--drain-timeout", "7d", "--handshake-timeout", "1h", NULL);
    assert_int_equal(client_try(w, NULL, NULL), 0);
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* ipc:// paths */

static bool
gone(const char *path)
{
    struct stat st;
    return lstat(path, &st) != 0 && errno == ENOENT;
}

static void
test_ipc_takeover(void **state)
{
    struct lt_world *w = *state;
    char stale[300], stale2[300], a[320], c[320];

    lt_start(w, "ipc", "ipc", NULL);
    const char *apath = w->agent_addr + 6, *cpath = w->client_addr + 6;

    /* A second backend on the same paths refuses to start; the first keeps its paths. */
    char *argv[] = {(char *)prog("inginious-backend"), w->agent_addr, w->client_addr, NULL};
    lt_run(w, wrapped(argv, 0), NULL);
    assert_int_equal(lt_proc_wait(w), 1);
    if (strstr(w->proc->err, "another process is listening there") == NULL)
        fail_msg("second backend: %s", w->proc->err);
    assert_int_equal(client_try(w, NULL, NULL), 0);

    /* A stale socket file (nobody listening) is replaced; both files go at exit. */
    snprintf(stale, sizeof(stale), "%s/stale.sock", lt_dir(w));
    snprintf(stale2, sizeof(stale2), "%s/stale2.sock", lt_dir(w));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_true(strlen(stale) < sizeof(un.sun_path));
    memcpy(un.sun_path, stale, strlen(stale) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    close(fd);
    assert_false(gone(stale));
    snprintf(a, sizeof(a), "ipc://%s", stale);
    snprintf(c, sizeof(c), "ipc://%s", stale2);
    char *argv2[] = {(char *)prog("inginious-backend"), a, c, NULL};
    lt_run(w, wrapped(argv2, 0), NULL);
    lt_until(w, proc_err_has, "clients on", "the backend on the stale path");
    assert_int_equal(client_try(w, c, NULL), 0);
    assert_int_equal(kill(w->proc->pid, SIGTERM), 0);
    assert_int_equal(lt_proc_wait(w), 0);
    assert_true(gone(stale));
    assert_true(gone(stale2));

    /* The first backend removes its files at exit too. */
    int st = lt_kill_backend(w, SIGTERM);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(gone(apath));
    assert_true(gone(cpath));
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Dual stack */

static bool
have_ipv6(void)
{
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&in6, sizeof(in6)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* raw_connect4 connects to 127.0.0.1:port; returns 0 or -errno. */
static int
raw_connect4(unsigned port)
{
    struct sockaddr_in in = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(fd, (struct sockaddr *)&in, sizeof(in)) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* listen_any starts the backend on tcp://[::]:0 (with --ipv6-only when v6only) and checks
 * which families reach its client endpoint. */
static void
listen_any(struct lt_world *w, bool v6only)
{
    char addr[100];

    if (!have_ipv6()) {
        printf("SKIPPED: no IPv6 on this machine (cannot bind ::1)\n");
        skip();
    }
    lt_start(w, "tcp://[::]:0", "tcp://[::]:0", v6only ? "--ipv6-only" : NULL, NULL);
    unsigned port = port_of(w->client_addr);
    snprintf(addr, sizeof(addr), "tcp://[::1]:%u", port);
    assert_int_equal(client_try(w, addr, NULL), 0);
    if (v6only) {
        assert_int_equal(raw_connect4(port), -ECONNREFUSED);
    } else { /* dual-stack: an IPv4 client is served, seen as ::ffff:127.0.0.1 */
        snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
        assert_int_equal(client_try(w, addr, NULL), 0);
        wait_log(w, "(tcp://[::ffff:127.0.0.1]:", 1);
    }
    lt_pass(w);
}

static void
test_dual_stack(void **state)
{
    listen_any(*state, false);
}

static void
test_ipv6_only(void **state)
{
    listen_any(*state, true);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, lt_setup, lt_teardown)

int
main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd_parse),
        cmocka_unit_test(test_sd_listen_fds),
        CASE(test_notify_path),
        CASE(test_notify_abstract),
        CASE(test_socket_activation),
        CASE(test_units_verify),
        CASE(test_sighup_reload),
        CASE(test_agent_process_secret),
        CASE(test_option_bounds),
        CASE(test_ipc_takeover),
        CASE(test_dual_stack),
        CASE(test_ipv6_only),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
