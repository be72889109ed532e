/* SPDX-License-Identifier: MIT */
/* libtest.c: helpers for the client, agent and inginious-ctl tests (API in libtest.h). */
#include "libtest.h"
#include "tpeer.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "inginious/err.h"
#include "inginious/json.h"
#include "inginious/mp.h"

/* ------------------------------------------------------------------------------------------ */
/* Failures, time, strings */

void
lt_fail_at(const char *file, int line, const char *fmt, ...)
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

uint64_t
lt_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
lt_slow(void)
{
    return tp_slow();
}

/* wrapper_error tells whether a wait status is the --error-exitcode=N of $ING_WRAPPER (the
 * wrapper found errors: memcheck's report is in the backend's log). */
static bool
wrapper_error(int status)
{
    const char *wrap = getenv("ING_WRAPPER");
    const char *e;

    if (wrap == NULL || *wrap == '\0' || (e = strstr(wrap, "--error-exitcode=")) == NULL)
        return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == atoi(e + strlen("--error-exitcode="));
}

static int
left_ms(uint64_t deadline)
{
    uint64_t now = lt_now_ms();

    return now >= deadline ? 0 : (int)(deadline - now);
}

const char *
lt_build(void)
{
    const char *b = getenv("ING_BUILD");

    return b != NULL && *b != '\0' ? b : "build";
}

char *
lt_view_str(char *dst, size_t cap, struct ing_view v)
{
    if (v.p == NULL)
        snprintf(dst, cap, "<nil>");
    else
        snprintf(dst, cap, "%.*s", (int)v.len, v.p);
    return dst;
}

/* open_pidfd returns a pidfd for pid, or -1 (the waits then look again every 10 ms). After
 * ENOSYS (valgrind 3.19 does not know the call and warns each time) it does not try again. */
static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    static bool nosys;
    int fd;

    if (nosys)
        return -1;
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno == ENOSYS)
        nosys = true;
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* World */

int
lt_setup(void **state)
{
    struct lt_world *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return -1;
    w->be_pidfd = -1;
    signal(SIGPIPE, SIG_IGN);
    *state = w;
    return 0;
}

void
lt_pass(struct lt_world *w)
{
    w->ok = true;
}

static void
client_free(struct lt_client *cl)
{
    ing_client_free(cl->c);
    for (size_t i = 0; i < cl->nev; i++) {
        ing_client_result_free(&cl->ev[i].res);
        ing_client_queue_free(&cl->ev[i].queue);
    }
    free(cl->ev);
    free(cl);
}

static void
job_free(struct lt_job *j)
{
    free(j->problems);
    free(j->input);
    free(j->params);
}

static void
agent_free(struct lt_agent *ag)
{
    ing_agent_free(ag->a);
    for (size_t i = 0; i < ag->nev; i++)
        job_free(&ag->ev[i].job);
    free(ag->ev);
    free(ag);
}

static void
reap(pid_t pid, int sig)
{
    int st;

    kill(pid, sig);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

static void
proc_free(struct lt_proc *p)
{
    if (p == NULL)
        return;
    if (!p->exited)
        reap(p->pid, SIGKILL);
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    free(p->out);
    free(p->err);
    free(p);
}

void
lt_rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[LT_STR * 2];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* wait_backend waits up to ms for the backend to exit. Returns true when reaped. */
static bool
wait_backend(struct lt_world *w, int ms)
{
    uint64_t deadline = lt_now_ms() + (uint64_t)ms;

    for (;;) {
        pid_t r = waitpid(w->be_pid, &w->be_status, WNOHANG);
        if (r == w->be_pid) {
            w->be_pid = 0;
            if (w->be_pidfd >= 0)
                close(w->be_pidfd);
            w->be_pidfd = -1;
            return true;
        }
        int left = left_ms(deadline);
        if (left == 0)
            return false;
        struct pollfd pf = {.fd = w->be_pidfd, .events = POLLIN};
        /* without a pidfd, look again now and then while the deadline runs */
        poll(&pf, w->be_pidfd >= 0 ? 1 : 0, w->be_pidfd >= 0 ? left : (left < 10 ? left : 10));
    }
}

int
lt_teardown(void **state)
{
    struct lt_world *w = *state;
    int rc = 0;

    for (size_t i = 0; i < w->nclients; i++)
        client_free(w->clients[i]);
    for (size_t i = 0; i < w->nagents; i++)
        agent_free(w->agents[i]);
    for (size_t i = 0; i < w->nforks; i++)
        reap(w->forks[i], SIGKILL);
    proc_free(w->proc);
    if (w->be_pid > 0) {
        kill(w->be_pid, SIGTERM);
        if (!wait_backend(w, LT_DEADLINE_MS)) {
            print_error("teardown: the backend did not exit within %d ms of SIGTERM\n",
                        LT_DEADLINE_MS);
            kill(w->be_pid, SIGKILL);
            wait_backend(w, LT_DEADLINE_MS);
            if (w->ok)
                rc = -1;
        } else if (w->ok && !(WIFEXITED(w->be_status) && WEXITSTATUS(w->be_status) == 0)) {
            /* under $ING_WRAPPER, memcheck's errors end here (its --error-exitcode) */
            if (WIFSIGNALED(w->be_status))
                print_error("teardown: the backend died of signal %d\n", WTERMSIG(w->be_status));
            else
                print_error("teardown: the backend exited with status %d after SIGTERM\n",
                            WEXITSTATUS(w->be_status));
            rc = -1;
        }
    }
    if ((!w->ok || rc != 0) && w->dir[0] != '\0')
        lt_dump_log(w);
    if (w->dir[0] != '\0')
        lt_rm_dir(w->dir);
    for (size_t i = 0; i < w->nallocs; i++)
        free(w->allocs[i]);
    free(w);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Backend */

void
lt_dump_log(const struct lt_world *w)
{
    FILE *f = fopen(w->log_path, "r");
    char line[1024];
    long size;

    if (f == NULL)
        return;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    if (size > 32768)
        fseek(f, size - 32768, SEEK_SET);
    else
        fseek(f, 0, SEEK_SET);
    fprintf(stderr, "---- backend log (%s) ----\n", w->log_path);
    while (fgets(line, sizeof(line), f) != NULL)
        fputs(line, stderr);
    fprintf(stderr, "---- end of backend log ----\n");
    fclose(f);
}

bool
lt_log_contains(const struct lt_world *w, const char *needle)
{
    FILE *f = fopen(w->log_path, "r");
    char line[2048];
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* read_port_file parses "agent ADDR\nclient ADDR\n". Returns true when complete. */
static bool
read_port_file(struct lt_world *w)
{
    FILE *f = fopen(w->port_path, "r");
    char a[LT_STR + 16], c[LT_STR + 16];
    bool ok;

    if (f == NULL)
        return false;
    ok = fscanf(f, "agent %271s client %271s", a, c) == 2;
    fclose(f);
    if (ok) {
        snprintf(w->agent_addr, sizeof(w->agent_addr), "%s", a);
        snprintf(w->client_addr, sizeof(w->client_addr), "%s", c);
    }
    return ok;
}

static void
spawn_backend(const char *file, int line, struct lt_world *w, const char *agent_addr,
              const char *client_addr)
{
    char bin[LT_STR];
    const char *argv[40];
    size_t n = 0;
    bool drain = false;
    int ino, logfd;
    uint64_t deadline;
    pid_t pid;

    snprintf(bin, sizeof(bin), "%s/inginious-backend", lt_build());
    argv[n++] = bin;
    for (size_t i = 0; i < w->nopts; i++) {
        argv[n++] = w->opts[i];
        if (strcmp(w->opts[i], "--drain-timeout") == 0)
            drain = true;
    }
    if (!drain) {
        argv[n++] = "--drain-timeout";
        argv[n++] = "200ms";
    }
    argv[n++] = "-v";
    argv[n++] = "--port-file";
    argv[n++] = w->port_path;
    argv[n++] = agent_addr;
    argv[n++] = client_addr;
    argv[n] = NULL;
    unlink(w->port_path);
    ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino < 0 || inotify_add_watch(ino, w->dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0)
        lt_fail_at(file, line, "inotify: %s", strerror(errno));
    logfd = open(w->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0)
        lt_fail_at(file, line, "%s: %s", w->log_path, strerror(errno));
    pid = fork();
    if (pid < 0)
        lt_fail_at(file, line, "fork: %s", strerror(errno));
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        tp_exec(argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(logfd);
    w->be_pid = pid;
    w->be_pidfd = open_pidfd(pid);
    deadline = lt_now_ms() + LT_DEADLINE_MS;
    while (!read_port_file(w)) {
        struct pollfd pf[2] = {{.fd = ino, .events = POLLIN},
                               {.fd = w->be_pidfd, .events = POLLIN}};
        char evbuf[4096];
        int left = left_ms(deadline);
        if (left == 0 || waitpid(pid, &w->be_status, WNOHANG) == pid) {
            if (left != 0) {
                w->be_pid = 0;
                close(w->be_pidfd);
                w->be_pidfd = -1;
            }
            close(ino);
            lt_dump_log(w);
            lt_fail_at(file, line, "the backend did not start");
        }
        poll(pf, w->be_pidfd >= 0 ? 2 : 1, w->be_pidfd >= 0 ? left : (left < 10 ? left : 10));
        while (read(ino, evbuf, sizeof(evbuf)) > 0)
            ;
    }
    close(ino);
}

const char *
lt_dir_at(const char *file, int line, struct lt_world *w)
{
    if (w->dir[0] == '\0') {
        snprintf(w->dir, sizeof(w->dir), "/tmp/ing-lt-XXXXXX");
        if (mkdtemp(w->dir) == NULL)
            lt_fail_at(file, line, "mkdtemp: %s", strerror(errno));
        snprintf(w->log_path, sizeof(w->log_path), "%s/backend.log", w->dir);
        snprintf(w->port_path, sizeof(w->port_path), "%s/ports", w->dir);
    }
    return w->dir;
}

const char *
lt_write_file_at(const char *file, int line, struct lt_world *w, const char *name,
                 const char *text)
{
    size_t n = strlen(lt_dir_at(file, line, w)) + strlen(name) + 2;
    char *path = malloc(n);
    FILE *f;

    if (path == NULL || w->nallocs == sizeof(w->allocs) / sizeof(w->allocs[0]))
        lt_fail_at(file, line, "lt_write_file: out of room");
    w->allocs[w->nallocs++] = path;
    snprintf(path, n, "%s/%s", w->dir, name);
    f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        lt_fail_at(file, line, "%s: %s", path, strerror(errno));
    return path;
}

static void
resolve_addr(const struct lt_world *w, const char *addr, const char *sock, char *out, size_t cap)
{
    if (addr == NULL)
        snprintf(out, cap, "tcp://127.0.0.1:0");
    else if (strcmp(addr, "ipc") == 0)
        snprintf(out, cap, "ipc://%s/%s", w->dir, sock);
    else
        snprintf(out, cap, "%s", addr);
}

void
lt_start_at(const char *file, int line, struct lt_world *w, const char *agent_addr,
            const char *client_addr, ...)
{
    char a[LT_STR + 32], c[LT_STR + 32];
    const char *o;
    va_list ap;

    lt_dir_at(file, line, w);
    w->nopts = 0;
    va_start(ap, client_addr);
    while ((o = va_arg(ap, const char *)) != NULL && w->nopts < 24)
        w->opts[w->nopts++] = o;
    va_end(ap);
    resolve_addr(w, agent_addr, "agent.sock", a, sizeof(a));
    resolve_addr(w, client_addr, "client.sock", c, sizeof(c));
    spawn_backend(file, line, w, a, c);
}

void
lt_restart_at(const char *file, int line, struct lt_world *w)
{
    char a[sizeof(w->agent_addr)], c[sizeof(w->client_addr)];

    if (w->be_pid > 0)
        lt_fail_at(file, line, "lt_restart: the backend is running");
    memcpy(a, w->agent_addr, sizeof(a));
    memcpy(c, w->client_addr, sizeof(c));
    spawn_backend(file, line, w, a, c);
    if (strcmp(a, w->agent_addr) != 0 || strcmp(c, w->client_addr) != 0)
        lt_fail_at(file, line, "restarted on other addresses: %s %s", w->agent_addr,
                   w->client_addr);
}

int
lt_kill_backend_at(const char *file, int line, struct lt_world *w, int sig)
{
    if (w->be_pid <= 0)
        lt_fail_at(file, line, "the backend is not running");
    kill(w->be_pid, sig);
    if (!wait_backend(w, LT_DEADLINE_MS))
        lt_fail_at(file, line, "the backend did not exit after signal %d", sig);
    if (wrapper_error(w->be_status))
        lt_fail_at(file, line, "the backend exited with $ING_WRAPPER's error code %d (see its log)",
                   WEXITSTATUS(w->be_status));
    return w->be_status;
}

/* ------------------------------------------------------------------------------------------ */
/* Values */

struct ing_view
lt_mp_at(const char *file, int line, struct lt_world *w, const char *json)
{
    struct ing_mp_writer mw;
    struct ing_json_error err;
    struct ing_view v;

    ing_mp_writer_init_dyn(&mw);
    if (ing_json_to_mp(json, strlen(json), &mw, &err) != 0)
        lt_fail_at(file, line, "bad JSON %s: %s", json, err.msg);
    if (w->nallocs == sizeof(w->allocs) / sizeof(w->allocs[0]))
        lt_fail_at(file, line, "lt_mp: too many values");
    w->allocs[w->nallocs++] = mw.buf;
    v.p = (const char *)mw.buf;
    v.len = (uint32_t)mw.len;
    return v;
}

bool
lt_mp_eq_json(const void *p, size_t n, const char *json)
{
    struct ing_mp_writer mw;
    bool eq;

    ing_mp_writer_init_dyn(&mw);
    eq = ing_json_to_mp(json, strlen(json), &mw, NULL) == 0 && mw.len == n &&
         memcmp(mw.buf, p, n) == 0;
    ing_mp_writer_fini(&mw);
    return eq;
}

void
lt_envs_render(struct ing_view v, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)v.p, *end = p + v.len;
    struct ing_mp_obj o;
    size_t len = 0;

    out[0] = '\0';
    if (v.p == NULL || ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_MAP)
        goto bad;
    for (uint32_t i = 0; i < o.v.n; i++) {
        struct ing_mp_obj k, a, s;
        if (ing_mp_read(&p, end, &k) != 0 || k.type != ING_MP_STR ||
            ing_mp_read(&p, end, &a) != 0 || a.type != ING_MP_ARRAY)
            goto bad;
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%.*s:[", i ? ";" : "",
                                (int)k.v.s.len, (const char *)k.v.s.p);
        for (uint32_t j = 0; j < a.v.n; j++) {
            if (ing_mp_read(&p, end, &s) != 0 || s.type != ING_MP_STR)
                goto bad;
            len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%.*s", j ? "," : "",
                                    (int)s.v.s.len, (const char *)s.v.s.p);
        }
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "]");
    }
    return;
bad:
    snprintf(out, cap, "<bad>");
}

/* ------------------------------------------------------------------------------------------ */
/* Clients */

void
lt_client_record(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct lt_client *cl = arg;
    struct lt_cev *e;

    (void)c;
    if (cl->nev == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 16;
        struct lt_cev *n = realloc(cl->ev, cap * sizeof(*n));
        if (n == NULL)
            abort();
        cl->ev = n;
        cl->cap = cap;
    }
    e = &cl->ev[cl->nev++];
    memset(e, 0, sizeof(*e));
    e->type = ev->type;
    e->pending = ev->pending;
    e->lost = ev->lost;
    e->err = ev->err;
    e->code = ev->code;
    e->rtt_ms = ev->rtt_ms;
    if (ev->job_id.p != NULL)
        lt_view_str(e->job_id, sizeof(e->job_id), ev->job_id);
    switch (ev->type) {
    case ING_CLIENT_EV_DONE:
        if (ing_client_result_copy(&e->res, ev->result, ev->lost) != 0)
            abort();
        break;
    case ING_CLIENT_EV_QUEUE:
        if (ing_client_queue_copy(&e->queue, ev->queue) != 0)
            abort();
        break;
    case ING_CLIENT_EV_SSH_DEBUG:
        lt_view_str(e->host, sizeof(e->host), ev->ssh->host);
        lt_view_str(e->user, sizeof(e->user), ev->ssh->user);
        lt_view_str(e->password, sizeof(e->password), ev->ssh->password);
        e->port = ev->ssh->port;
        break;
    case ING_CLIENT_EV_ENVS:
        lt_envs_render(ev->envs, e->envs, sizeof(e->envs));
        break;
    case ING_CLIENT_EV_ERROR:
        lt_view_str(e->text, sizeof(e->text), ev->text);
        break;
    default:
        break;
    }
}

struct lt_client *
lt_client_add_at(const char *file, int line, struct lt_world *w, const struct ing_client_opts *opts)
{
    struct ing_client_opts o = {0};
    struct lt_client *cl;

    if (opts != NULL)
        o = *opts;
    if (o.addr == NULL)
        o.addr = w->client_addr;
    if (o.name == NULL)
        o.name = "tester";
    if (w->nclients == LT_MAX)
        lt_fail_at(file, line, "too many clients");
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        lt_fail_at(file, line, "out of memory");
    cl->c = ing_client_new(&o);
    if (cl->c == NULL) {
        free(cl);
        lt_fail_at(file, line, "ing_client_new(%s): %s", o.addr, strerror(errno));
    }
    w->clients[w->nclients++] = cl;
    return cl;
}

struct lt_client *
lt_client_new_at(const char *file, int line, struct lt_world *w, const struct ing_client_opts *opts)
{
    struct lt_client *cl = lt_client_add_at(file, line, w, opts);
    int rc = ing_client_connect(cl->c);

    if (rc != 0)
        lt_fail_at(file, line, "ing_client_connect: %s (%s)", ing_strerror(rc),
                   ing_client_last_error(cl->c));
    return cl;
}

/* ------------------------------------------------------------------------------------------ */
/* Agents */

static void *
dup_bytes(struct ing_view v, size_t *len)
{
    void *p = malloc(v.len ? v.len : 1);

    if (p == NULL)
        abort();
    memcpy(p, v.p, v.len);
    *len = v.len;
    return p;
}

static void
copy_job(struct lt_job *j, const struct ing_job_spec *s)
{
    lt_view_str(j->job_id, sizeof(j->job_id), s->job_id);
    j->course_nil = s->course_id.p == NULL;
    lt_view_str(j->course, sizeof(j->course), s->course_id);
    j->task_nil = s->task_id.p == NULL;
    lt_view_str(j->task, sizeof(j->task), s->task_id);
    lt_view_str(j->env_type, sizeof(j->env_type), s->environment_type);
    lt_view_str(j->env, sizeof(j->env), s->environment);
    j->debug = s->debug;
    j->problems = dup_bytes(s->task_problems, &j->problems_len);
    j->input = dup_bytes(s->inputdata, &j->input_len);
    j->params = dup_bytes(s->environment_parameters, &j->params_len);
}

static struct ing_view
sv(const char *s)
{
    struct ing_view v = {s, s != NULL ? (uint32_t)strlen(s) : 0};

    return v;
}

/* input_str looks up inputdata[key] as a str view (p == NULL if absent or not a str). */
static struct ing_view
input_str(const struct ing_job_spec *s, const char *key)
{
    struct ing_view v = {NULL, 0};
    const uint8_t *val;
    size_t vlen;
    struct ing_mp_obj o;

    if (ing_mp_map_get((const uint8_t *)s->inputdata.p, s->inputdata.len, key, strlen(key), &val,
                       &vlen) == 0 &&
        ing_mp_read(&val, val + vlen, &o) == 0 && o.type == ING_MP_STR) {
        v.p = (const char *)o.v.s.p;
        v.len = o.v.s.len;
    }
    return v;
}

static void
script_job(struct ing_agent *a, const struct ing_job_spec *s)
{
    struct ing_view what = input_str(s, "do");
    struct ing_job_result r;
    char text[1200], c[LT_STR], t[LT_STR], ty[LT_STR], en[LT_STR];

    if (what.p == NULL)
        what = sv("success");
    if (ing_view_eq(what, "nostart"))
        return;
    ing_agent_started(a, s->job_id);
    memset(&r, 0, sizeof(r));
    r.job_id = s->job_id;
    r.result_kind = sv("success");
    r.result_text = sv(LT_OK_TEXT);
    r.grade = LT_OK_GRADE;
    r.problems = sv("\x81\xa2q1\x92\xa7success\xa2ok"); /* {"q1": ["success", "ok"]} */
    r.tests = sv("\x81\xa1t\x01");                      /* {"t": 1} */
    r.custom = sv("\x81\xa1"
                  "c\xa1x"); /* {"c": "x"} */
    r.state = sv(LT_OK_STATE);
    r.archive.p = LT_OK_ARCHIVE;
    r.archive.len = sizeof(LT_OK_ARCHIVE) - 1;
    r.stdout_ = sv(LT_OK_STDOUT);
    r.stderr_ = sv("");
    if (ing_view_eq(what, "hang")) {
        return;
    } else if (ing_view_eq(what, "fail")) {
        r.result_kind = sv("failed");
        r.result_text = sv("Wrong answer");
        r.grade = 25.0;
        r.problems = sv("\x81\xa2q1\x92\xa6"
                        "failed\xaa"
                        "expected 2");
        r.state = sv("S-f");
        r.archive.p = NULL;
        r.archive.len = 0;
        r.stdout_ = sv(NULL);
        r.stderr_ = sv("trace\n");
    } else if (ing_view_eq(what, "nil")) {
        r.archive.p = NULL;
        r.archive.len = 0;
        r.stdout_ = sv(NULL);
        r.stderr_ = sv(NULL);
    } else if (ing_view_eq(what, "echo")) {
        snprintf(text, sizeof(text), "%s|%s|%s|%s|%u", lt_view_str(c, sizeof(c), s->course_id),
                 lt_view_str(t, sizeof(t), s->task_id),
                 lt_view_str(ty, sizeof(ty), s->environment_type),
                 lt_view_str(en, sizeof(en), s->environment), s->debug);
        r.result_text = sv(text);
        r.problems = s->task_problems;
        r.tests = s->inputdata;
        r.custom = s->environment_parameters;
        r.state = input_str(s, "@state");
        if (r.state.p == NULL)
            r.state = sv("");
    } else if (ing_view_eq(what, "ssh")) {
        struct ing_ssh_debug ssh = {.job_id = s->job_id,
                                    .host = sv(LT_SSH_HOST),
                                    .port = LT_SSH_PORT,
                                    .user = sv(LT_SSH_USER),
                                    .password = sv(LT_SSH_PASSWORD)};
        ing_agent_ssh_debug(a, &ssh);
    }
    ing_agent_done(a, &r);
}

static void
script_kill(struct ing_agent *a, struct ing_view job_id, struct ing_view state)
{
    struct ing_job_result r;

    memset(&r, 0, sizeof(r));
    r.job_id = job_id;
    r.result_kind = sv("killed");
    r.result_text = sv("");
    r.problems = r.tests = r.custom = sv("\x80");
    r.state = state;
    r.stdout_ = r.stderr_ = sv("");
    ing_agent_done(a, &r);
}

void
lt_agent_record(struct ing_agent *a, const struct ing_agent_event *ev, void *arg)
{
    struct lt_agent *ag = arg;
    struct lt_aev *e;

    if (ag->nev == ag->cap) {
        size_t cap = ag->cap ? ag->cap * 2 : 16;
        struct lt_aev *n = realloc(ag->ev, cap * sizeof(*n));
        if (n == NULL)
            abort();
        ag->ev = n;
        ag->cap = cap;
    }
    e = &ag->ev[ag->nev++];
    memset(e, 0, sizeof(*e));
    e->type = ev->type;
    e->code = ev->code;
    e->err = ev->err;
    if (ev->job_id.p != NULL)
        lt_view_str(e->job_id, sizeof(e->job_id), ev->job_id);
    if (ev->type == ING_AGENT_EV_JOB)
        copy_job(&e->job, ev->job);
    if (ev->type == ING_AGENT_EV_KILL)
        lt_view_str(e->state, sizeof(e->state), ev->state);
    if (ev->type == ING_AGENT_EV_ERROR)
        lt_view_str(e->text, sizeof(e->text), ev->text);
    if (ag->script && ev->type == ING_AGENT_EV_JOB)
        script_job(a, ev->job);
    if (ag->script && ev->type == ING_AGENT_EV_KILL)
        script_kill(a, ev->job_id, ev->state);
}

static struct lt_agent *
agent_make(const char *file, int line, struct lt_world *w, const struct ing_agent_opts *opts,
           bool script)
{
    struct ing_agent_opts o = *opts;
    struct lt_agent *ag = calloc(1, sizeof(*ag));

    if (ag == NULL)
        lt_fail_at(file, line, "out of memory");
    if (o.addr == NULL)
        o.addr = w->agent_addr;
    ag->script = script;
    ag->a = ing_agent_new(&o);
    if (ag->a == NULL) {
        free(ag);
        lt_fail_at(file, line, "ing_agent_new(%s): %s", o.addr, strerror(errno));
    }
    return ag;
}

struct lt_agent *
lt_agent_add_at(const char *file, int line, struct lt_world *w, const struct ing_agent_opts *opts,
                bool script)
{
    struct lt_agent *ag;

    if (w->nagents == LT_MAX)
        lt_fail_at(file, line, "too many agents");
    ag = agent_make(file, line, w, opts, script);
    w->agents[w->nagents++] = ag;
    return ag;
}

/* envs_from_args fills envs from "type/name" strings (at most LT_MAX, in static storage of
 * the caller). */
static size_t
envs_from_args(va_list ap, struct ing_agent_env *envs, char (*buf)[2][LT_STR])
{
    const char *s;
    size_t n = 0;

    while ((s = va_arg(ap, const char *)) != NULL && n < LT_MAX) {
        const char *slash = strchr(s, '/');
        size_t tl = slash != NULL ? (size_t)(slash - s) : strlen(s);
        snprintf(buf[n][0], LT_STR, "%.*s", (int)tl, s);
        snprintf(buf[n][1], LT_STR, "%s", slash != NULL ? slash + 1 : "default");
        envs[n].type = buf[n][0];
        envs[n].name = buf[n][1];
        envs[n].id = "i1";
        envs[n].created = 1;
        envs[n].advertised = true;
        n++;
    }
    return n;
}

struct lt_agent *
lt_agent_new_at(const char *file, int line, struct lt_world *w, const char *name, uint32_t slots,
                int script, ...)
{
    struct ing_agent_env envs[LT_MAX];
    char buf[LT_MAX][2][LT_STR];
    struct ing_agent_opts o = {.name = name, .slots = slots, .envs = envs};
    struct lt_agent *ag;
    va_list ap;
    int rc;

    va_start(ap, script);
    o.nenvs = envs_from_args(ap, envs, buf);
    va_end(ap);
    ag = lt_agent_add_at(file, line, w, &o, script != 0);
    rc = ing_agent_connect(ag->a);
    if (rc != 0)
        lt_fail_at(file, line, "ing_agent_connect: %s (%s)", ing_strerror(rc),
                   ing_agent_last_error(ag->a));
    return ag;
}

void
lt_agent_drop(struct lt_world *w, struct lt_agent *a)
{
    for (size_t i = 0; i < w->nagents; i++) {
        if (w->agents[i] == a) {
            w->agents[i] = w->agents[--w->nagents];
            agent_free(a);
            return;
        }
    }
}

pid_t
lt_fork_agent_at(const char *file, int line, struct lt_world *w, const char *name, uint32_t slots,
                 ...)
{
    struct ing_agent_env envs[LT_MAX];
    char buf[LT_MAX][2][LT_STR];
    struct ing_agent_opts o = {.name = name,
                               .slots = slots,
                               .envs = envs,
                               .reconnect = true,
                               .backoff_min_ms = 20,
                               .backoff_max_ms = 200};
    va_list ap;
    pid_t pid;

    if (w->nforks == LT_MAX)
        lt_fail_at(file, line, "too many forked agents");
    va_start(ap, slots);
    o.nenvs = envs_from_args(ap, envs, buf);
    va_end(ap);
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        lt_fail_at(file, line, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* The parent's connections must not stay open in here: close them all. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        struct lt_agent ag = {.script = true};
        o.addr = w->agent_addr;
        ag.a = ing_agent_new(&o);
        if (ag.a == NULL)
            _exit(3);
        if (ing_agent_connect(ag.a) != 0 && ing_agent_process(ag.a, NULL, NULL) != 0)
            _exit(4);
        for (;;) {
            ing_agent_wait(ag.a, 1000, lt_agent_record, &ag);
            for (size_t i = 0; i < ag.nev; i++)
                job_free(&ag.ev[i].job);
            ag.nev = 0;
        }
    }
    w->forks[w->nforks++] = pid;
    return pid;
}

/* ------------------------------------------------------------------------------------------ */
/* Child program */

static void
set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

struct lt_proc *
lt_run_at(const char *file, int line, struct lt_world *w, char *const argv[],
          const char *const *env)
{
    int out[2], err[2];
    struct lt_proc *p;

    proc_free(w->proc);
    w->proc = NULL;
    p = calloc(1, sizeof(*p));
    if (p == NULL || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        lt_fail_at(file, line, "pipe: %s", strerror(errno));
    p->out = calloc(1, 1);
    p->err = calloc(1, 1);
    fflush(NULL);
    p->pid = fork();
    if (p->pid < 0)
        lt_fail_at(file, line, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    p->out_fd = out[0];
    p->err_fd = err[0];
    set_nonblock(p->out_fd);
    set_nonblock(p->err_fd);
    w->proc = p;
    return p;
}

/* drain reads what a pipe holds into *buf; closes it at EOF. */
static void
drain(int *fd, char **buf, size_t *len)
{
    char tmp[4096];

    while (*fd >= 0) {
        ssize_t n = read(*fd, tmp, sizeof(tmp));
        if (n > 0) {
            char *nb = realloc(*buf, *len + (size_t)n + 1);
            if (nb == NULL)
                abort();
            memcpy(nb + *len, tmp, (size_t)n);
            *len += (size_t)n;
            nb[*len] = '\0';
            *buf = nb;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else {
            close(*fd);
            *fd = -1;
        }
    }
}

static void
proc_step(struct lt_proc *p)
{
    drain(&p->out_fd, &p->out, &p->out_len);
    drain(&p->err_fd, &p->err, &p->err_len);
    if (!p->exited && p->out_fd < 0 && p->err_fd < 0) {
        /* both pipes closed: the child is exiting (or has) */
        while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR)
            ;
        p->exited = true;
    }
}

static bool
proc_finished(struct lt_world *w, void *arg)
{
    (void)arg;
    return w->proc->exited;
}

int
lt_proc_wait_at(const char *file, int line, struct lt_world *w)
{
    struct lt_proc *p = w->proc;

    if (p == NULL)
        lt_fail_at(file, line, "no child program");
    lt_until_at(file, line, w, proc_finished, NULL, "the child program to exit");
    if (WIFEXITED(p->status))
        return WEXITSTATUS(p->status);
    return 128 + WTERMSIG(p->status);
}

/* ------------------------------------------------------------------------------------------ */
/* Spinning */

void
lt_spin(struct lt_world *w, int ms)
{
    struct pollfd pf[2 * LT_MAX + 2];
    size_t n = 0;
    int t = ms;

    for (size_t i = 0; i < w->nclients; i++) {
        struct ing_client *c = w->clients[i]->c;
        int ct = ing_client_timeout_ms(c);
        if (ing_client_fd(c) >= 0) {
            pf[n].fd = ing_client_fd(c);
            pf[n].events = (short)(POLLIN | (ing_client_want_write(c) ? POLLOUT : 0));
            n++;
        }
        if (ct >= 0 && ct < t)
            t = ct;
    }
    for (size_t i = 0; i < w->nagents; i++) {
        struct ing_agent *a = w->agents[i]->a;
        int at = ing_agent_timeout_ms(a);
        if (ing_agent_fd(a) >= 0) {
            pf[n].fd = ing_agent_fd(a);
            pf[n].events = (short)(POLLIN | (ing_agent_want_write(a) ? POLLOUT : 0));
            n++;
        }
        if (at >= 0 && at < t)
            t = at;
    }
    if (w->proc != NULL && !w->proc->exited) {
        if (w->proc->out_fd >= 0)
            pf[n++] = (struct pollfd){.fd = w->proc->out_fd, .events = POLLIN};
        if (w->proc->err_fd >= 0)
            pf[n++] = (struct pollfd){.fd = w->proc->err_fd, .events = POLLIN};
    }
    poll(pf, n, t);
    for (size_t i = 0; i < w->nclients; i++)
        ing_client_process(w->clients[i]->c, lt_client_record, w->clients[i]);
    for (size_t i = 0; i < w->nagents; i++)
        ing_agent_process(w->agents[i]->a, lt_agent_record, w->agents[i]);
    if (w->proc != NULL && !w->proc->exited)
        proc_step(w->proc);
}

void
lt_until_at(const char *file, int line, struct lt_world *w, lt_cond_fn *cond, void *arg,
            const char *what)
{
    uint64_t deadline = lt_now_ms() + LT_DEADLINE_MS;

    while (!cond(w, arg)) {
        int left = left_ms(deadline);
        if (left == 0) {
            if (w->proc != NULL)
                fprintf(stderr, "child stdout:\n%s\nchild stderr:\n%s\n", w->proc->out,
                        w->proc->err);
            lt_fail_at(file, line, "timed out waiting for %s", what);
        }
        lt_spin(w, left);
    }
}

struct lt_cev *
lt_find_cev(struct lt_client *cl, enum ing_client_event_type type, const char *job_id)
{
    for (size_t i = 0; i < cl->nev; i++) {
        struct lt_cev *e = &cl->ev[i];
        if (!e->used && e->type == type && (job_id == NULL || strcmp(e->job_id, job_id) == 0))
            return e;
    }
    return NULL;
}

struct lt_aev *
lt_find_aev(struct lt_agent *ag, enum ing_agent_event_type type, const char *job_id)
{
    for (size_t i = 0; i < ag->nev; i++) {
        struct lt_aev *e = &ag->ev[i];
        if (!e->used && e->type == type && (job_id == NULL || strcmp(e->job_id, job_id) == 0))
            return e;
    }
    return NULL;
}

struct find_arg {
    void *who;
    int type;
    const char *job_id;
    bool agent;
};

static bool
found(struct lt_world *w, void *arg)
{
    struct find_arg *f = arg;

    (void)w;
    if (f->agent)
        return lt_find_aev(f->who, (enum ing_agent_event_type)f->type, f->job_id) != NULL;
    return lt_find_cev(f->who, (enum ing_client_event_type)f->type, f->job_id) != NULL;
}

struct lt_cev *
lt_expect_cev_at(const char *file, int line, struct lt_world *w, struct lt_client *cl,
                 enum ing_client_event_type type, const char *job_id)
{
    struct find_arg f = {cl, (int)type, job_id, false};
    char what[LT_STR + 64];
    struct lt_cev *e;

    snprintf(what, sizeof(what), "client event %d (job %s)", (int)type,
             job_id != NULL ? job_id : "any");
    lt_until_at(file, line, w, found, &f, what);
    e = lt_find_cev(cl, type, job_id);
    e->used = true;
    return e;
}

struct lt_aev *
lt_expect_aev_at(const char *file, int line, struct lt_world *w, struct lt_agent *ag,
                 enum ing_agent_event_type type, const char *job_id)
{
    struct find_arg f = {ag, (int)type, job_id, true};
    char what[LT_STR + 64];
    struct lt_aev *e;

    snprintf(what, sizeof(what), "agent event %d (job %s)", (int)type,
             job_id != NULL ? job_id : "any");
    lt_until_at(file, line, w, found, &f, what);
    e = lt_find_aev(ag, type, job_id);
    e->used = true;
    return e;
}

void
lt_barrier_at(const char *file, int line, struct lt_world *w, struct lt_client *cl)
{
    int rc = ing_client_ping(cl->c);
    struct lt_cev *e;

    if (rc != 0)
        lt_fail_at(file, line, "ing_client_ping: %s", ing_strerror(rc));
    e = lt_expect_cev_at(file, line, w, cl, ING_CLIENT_EV_PONG, NULL);
    if (e->rtt_ms < 0)
        lt_fail_at(file, line, "a pong without its ping");
}

struct envs_arg {
    struct lt_client *cl;
    const char *want;
};

static bool
envs_are(struct lt_world *w, void *arg)
{
    struct envs_arg *a = arg;
    char got[1024];

    (void)w;
    lt_envs_render(ing_client_envs(a->cl->c), got, sizeof(got));
    return strcmp(got, a->want) == 0;
}

void
lt_wait_envs_at(const char *file, int line, struct lt_world *w, struct lt_client *cl,
                const char *want)
{
    struct envs_arg a = {cl, want};
    char what[LT_STR];

    snprintf(what, sizeof(what), "environments %s", want);
    lt_until_at(file, line, w, envs_are, &a, what);
}

pid_t
lt_spawn(char *const argv[], const char *log)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (fd < 0 || null < 0)
            _exit(127);
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int
lt_stop_pid(struct lt_world *w, pid_t pid)
{
    int st = 0;
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    kill(pid, SIGTERM);
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (lt_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            lt_fail("pid %d did not exit after SIGTERM", (int)pid);
        }
        lt_spin(w, 10);
    }
    return st;
}

const char *
lt_process_env(struct lt_world *w, const char *script)
{
    static char envs[LT_STR + 16];
    char path[LT_STR + 64];
    snprintf(envs, sizeof(envs), "%s/envs", lt_dir(w));
    snprintf(path, sizeof(path), "%s/process/default/run", envs);
    /* root runs the agent, jobs run as nobody: the way to run must be open to them */
    if (chmod(lt_dir(w), 0755) != 0 || mkdir(envs, 0755) != 0)
        lt_fail("%s: %s", envs, strerror(errno));
    for (char *p = path + strlen(envs) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        if (mkdir(path, 0755) != 0)
            lt_fail("%s: %s", path, strerror(errno));
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(script, f) < 0 || fclose(f) != 0 || chmod(path, 0755) != 0)
        lt_fail("%s: %s", path, strerror(errno));
    return envs;
}
