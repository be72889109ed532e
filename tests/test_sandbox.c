/* SPDX-License-Identifier: MIT */
/* test_sandbox.c: the escape suite of the sandbox (src/sandbox.c, src/seccomp.c) through
 * the grading engine (src/runner.c) with real processes. Each test writes a `run` script
 * that tries one attack, runs it as a sandboxed job to its end (every wait bounded) and
 * checks the job's result and what the attack printed.
 *
 * The attacks that need system calls use this very binary as a helper: it is copied into
 * the environment's directory (/env/helper inside the job; /env/suid is a setuid-root copy)
 * and run with --helper MODE; it prints one line "name=result" per attempt.
 *
 * The suite needs what the agent needs (root, user namespaces, a writable cgroup); when
 * sandbox_probe refuses, every test is skipped with the probe's reason printed. */
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
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "inginious/json.h"
#include "inginious/mp.h"
#include "runner.h"
#include "support/runfx.h"
#include "sandbox.h"

#define WAIT_MS (30000u * (uint64_t)slow()) /* longest a job may take in these tests */

static struct sandbox_host host;
static int probe_rc = -1;
static char probe_why[512];

struct fx {
    struct rf_dirs d; /* root, tasks/, env/ (run), work/ */
    char secret[300]; /* root/secret: a file no job may see */
    struct runner_opts opts;
    struct ing_mp_writer w[3];
    struct ing_job_spec job;
    struct runner_job *r;
    struct ing_job_result res;
};

/* ---- the helper (runs inside jobs) -------------------------------------------------- */

static const char *
errname(int e)
{
    static char buf[32];

    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case ENOSYS: return "ENOSYS";
    case EROFS: return "EROFS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EINVAL: return "EINVAL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    default:
        snprintf(buf, sizeof(buf), "errno%d", e);
        return buf;
    }
}

/* try prints name=ok or name=ERRNAME for a system call's result. */
static void
try(const char *name, long rc)
{
    printf("%s=%s\n", name, errname(rc < 0 ? errno : 0));
}

static int
helper_main(int argc, char **argv)
{
    const char *mode = argc > 2 ? argv[2] : "";

    if (strcmp(mode, "ids") == 0) {
        printf("uid=%d euid=%d gid=%d egid=%d\n", (int)getuid(), (int)geteuid(), (int)getgid(),
               (int)getegid());
    } else if (strcmp(mode, "connect") == 0 && argc > 3) {
        struct sockaddr_in sa;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)atoi(argv[3]));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        try("connect", connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
        inet_pton(AF_INET, "192.0.2.1", &sa.sin_addr); /* TEST-NET-1: any other address */
        sa.sin_port = htons(80);
        {
            int fd2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            long rc = connect(fd2, (struct sockaddr *)&sa, sizeof(sa));

            if (rc < 0 && errno == EINPROGRESS)
                printf("connect_any=inprogress\n");
            else
                try("connect_any", rc);
        }
    } else if (strcmp(mode, "outside") == 0 && argc > 3) {
        pid_t pid = (pid_t)atoi(argv[3]);
        char path[64];

        try("kill", kill(pid, 0));
        try("ptrace", ptrace(PTRACE_ATTACH, pid, NULL, NULL));
        snprintf(path, sizeof(path), "/proc/%d", (int)pid);
        try("see", access(path, F_OK));
        try("kill_init", kill(1, SIGKILL) == 0 && kill(1, 0) < 0 ? -1 : 0);
    } else if (strcmp(mode, "syscalls") == 0) {
        int st;
        pid_t c;

        try("unshare", unshare(CLONE_NEWUSER));
        try("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
        try("chroot", chroot("/tmp"));
        try("setns", syscall(SYS_setns, 0, 0));
        try("clone_newnet", c = (pid_t)syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0));
        if (c == 0)
            _exit(0);
        if (c > 0)
            waitpid(c, &st, 0);
        try("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
        try("packet_socket", socket(AF_PACKET, SOCK_RAW, 0));
        try("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
        try("raw6_socket", socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6));
        try("bpf", syscall(SYS_bpf, 0, NULL, 0));
        try("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
        try("userfaultfd", syscall(SYS_userfaultfd, 0));
        try("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
        try("add_key", syscall(SYS_add_key, "user", "k", "v", 1, 0));
        try("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
        try("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
        try("init_module", syscall(SYS_init_module, NULL, 0, ""));
        try("tcp_socket", socket(AF_INET, SOCK_STREAM, 0));
        try("fork", c = fork());
        if (c == 0)
            _exit(0);
        if (c > 0)
            waitpid(c, &st, 0);
#if defined(__x86_64__)
        c = fork();
        if (c == 0) {
            long ret;

            /* getpid through the 32-bit ABI: the filter kills the process. */
            __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
            _exit(ret > 0 ? 0 : 1);
        }
        if (c > 0 && waitpid(c, &st, 0) == c)
            printf("int80=%s%d\n", WIFSIGNALED(st) ? "signal" : "exit",
                   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
#endif
    } else {
        printf("unknown mode %s\n", mode);
    }
    fflush(stdout);
    _exit(0); /* no leak check: it would need ptrace, which the filter denies */
}

/* ---- fixture ------------------------------------------------------------------------ */

static int
slow(void)
{
    const char *s = getenv("ING_SLOW");
    int k = s != NULL ? atoi(s) : 1;

    return k >= 1 ? k : 1;
}

static void
copy_self(const char *dst, mode_t mode)
{
    char buf[65536];
    int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ssize_t n;

    assert_true(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
    assert_int_equal(chown(dst, 0, 0), 0);
    assert_int_equal(chmod(dst, mode), 0);
}

static int
setup(void **state)
{
    struct fx *f;
    char p[400];

    *state = NULL;
    if (probe_rc < 0)
        return 0; /* each test skips, saying why */
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    if (rf_dirs_make(&f->d, "test_sandbox") < 0)
        return -1;
    snprintf(f->secret, sizeof(f->secret), "%s/secret", f->d.root);
    rf_write_file(f->secret, "top secret\n", 0644);
    snprintf(p, sizeof(p), "%s/helper", f->d.envs);
    copy_self(p, 0755);
    snprintf(p, sizeof(p), "%s/suid", f->d.envs);
    copy_self(p, 04755);
    f->opts.tasks_dir = f->d.tasks;
    f->opts.work_dir = f->d.work;
    f->opts.sandbox = &host;
    *state = f;
    return 0;
}

/* leftovers counts the job cgroups of this process still there, and the job tmpfs mounts. */
static int
leftovers(void)
{
    char prefix[32], line[1024];
    int n = 0;
    FILE *m;

    snprintf(prefix, sizeof(prefix), "job-%s-", host.tag);
    for (int i = 0; i < host.ncg; i++) {
        DIR *d = opendir(host.cg_dir[i]);
        struct dirent *e;

        while (d != NULL && (e = readdir(d)) != NULL)
            n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
        if (d != NULL)
            closedir(d);
    }
    m = fopen("/proc/self/mounts", "re");
    while (m != NULL && fgets(line, sizeof(line), m) != NULL)
        n += strstr(line, "/test_sandbox-") != NULL;
    if (m != NULL)
        fclose(m);
    return n;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    if (f == NULL)
        return 0;
    runner_free(f->r);
    if (leftovers() != 0) {
        print_error("a job cgroup or tmpfs was left behind\n");
        return -1;
    }
    for (size_t i = 0; i < 3; i++)
        ing_mp_writer_fini(&f->w[i]);
    rf_dirs_remove(&f->d);
    free(f);
    return 0;
}

/* need_sandbox returns the fixture, or skips the test saying why the sandbox is refused. */
static struct fx *
need_sandbox(void **state)
{
    if (*state == NULL) {
        print_message("skipped: the sandbox is refused here: %s\n", probe_why);
        skip();
    }
    return *state;
}

static void
set_run(struct fx *f, const char *body)
{
    char text[8192];

    snprintf(text, sizeof(text), "#!/bin/sh\nH=\"/env/helper --helper\"\n%s\n", body);
    rf_write_file(f->d.run, text, 0755);
}

static void
set_job(struct fx *f, const char *course, const char *task, const char *params)
{
    rf_set_job(&f->job, f->w, course, task, "{\"answer\": \"42\", \"@state\": \"s0\"}",
               params);
}

static void
add_task(struct fx *f, const char *course, const char *task)
{
    char p[600];

    snprintf(p, sizeof(p), "%s/%s", f->d.tasks, course);
    (void)mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/%s/%s", f->d.tasks, course, task);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/%s/%s/data.txt", f->d.tasks, course, task);
    rf_write_file(p, "task data\n", 0644);
}

static const struct ing_job_result *
run_job(struct fx *f)
{
    assert_int_equal(runner_start(&f->opts, f->d.run, &f->job, rf_now_ms(), &f->r), 0);
    rf_wait_done(f->r, WAIT_MS);
    runner_result(f->r, &f->res);
    return &f->res;
}

/* out_has checks that stdout holds the line. */
static void
out_has(const struct ing_job_result *res, const char *line)
{
    char want[256];
    const char *out = rf_str(res->stdout_);

    snprintf(want, sizeof(want), "%s\n", line);
    if (strncmp(out, want, strlen(want)) != 0 && strstr(out, want) == NULL)
        fail_msg("stdout lacks \"%s\": \"%s\" (stderr \"%s\")", line, out,
                 rf_str(res->stderr_));
}

/* count_sleeps counts the host's processes running `sleep ARG`. */
static int
count_sleeps(const char *arg)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[256];
        ssize_t len;
        int fd;

        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        {
            const char *a0 = strrchr(buf, '/') != NULL ? strrchr(buf, '/') + 1 : buf;
            size_t l0 = strlen(buf);

            if (strcmp(a0, "sleep") == 0 && (size_t)len > l0 + 1 &&
                strcmp(buf + l0 + 1, arg) == 0)
                n++;
        }
    }
    closedir(d);
    return n;
}

/* ---- the suite ---------------------------------------------------------------------- */

/* A normal job: the same result as without the sandbox, in the root described in
 * sandbox.c. */
static void
test_sandbox_normal_job(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    add_task(f, "c1", "t1");
    set_run(f, "grep -q '\"answer\":\"42\"' input.json || exit 1\n"
               "echo \"pwd=$PWD home=$HOME task=$INGINIOUS_TASK_DIR env=$INGINIOUS_ENV_DIR\"\n"
               "echo \"data=$(cat data.txt) ro=$(cat /task/data.txt)\"\n"
               "echo \"host=$(cat /proc/sys/kernel/hostname)\"\n"
               "echo \"procs=$(ls /proc | grep -c '^[0-9]')\"\n"
               "echo \"dev=$(ls /dev | tr '\\n' ' ')\"\n"
               "echo \"root=$(ls / | tr '\\n' ' ')\"\n"
               "$H ids\n"
               "echo '{\"result\": \"success\", \"grade\": 75, \"text\": \"fine\"}' > feedback.json");
    set_job(f, "c1", "t1", "{\"limits\": {\"time\": 5, \"memory\": 100}}");
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_true(res->grade == 75.0);
    assert_string_equal(rf_str(res->result_text), "fine");
    assert_string_equal(rf_str(res->state), "s0");
    out_has(res, "pwd=/work home=/work task=/work env=/env");
    out_has(res, "data=task data ro=task data");
    out_has(res, "host=" SANDBOX_HOSTNAME);
    /* sh, its command substitution, ls and grep at most: nothing of the host's */
    {
        const char *p = strstr(rf_str(res->stdout_), "procs=");

        assert_non_null(p);
        assert_true(atoi(p + 6) >= 1 && atoi(p + 6) <= 6);
    }
    out_has(res, "dev=fd full null random stderr stdin stdout tty urandom zero ");
    out_has(res, "root=bin dev env etc lib lib32 lib64 proc sbin task tmp usr work ");
    out_has(res, "uid=4242 euid=4242 gid=4242 egid=4242");
}

/* Reading the host's secrets: /etc/shadow, the agent's files, another job's folder. */
static void
test_sandbox_read_secrets(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;
    struct runner_job *other;
    struct runner_opts o2;
    char body[2048];

    /* Another job, running, with a file in its folder. */
    set_run(f, "echo private > mine.txt; echo ready; exec sleep 4250");
    set_job(f, NULL, NULL, "{\"limits\": {\"time\": 20}}");
    o2 = f->opts;
    assert_int_equal(runner_start(&o2, f->d.run, &f->job, rf_now_ms(), &other), 0);
    {
        uint64_t end = rf_now_ms() + 10000u * (uint64_t)slow();
        struct ing_job_result r2;

        while (!runner_started(other) && !runner_done(other) && rf_now_ms() < end)
            rf_drive(other, 50);
        runner_result(other, &r2);
        assert_true(runner_started(other));
    }
    snprintf(body, sizeof(body),
             "for p in /etc/shadow %s %s /root /home /etc/passwd; do\n"
             "  if [ -e $p ]; then echo \"$p=visible\"; else echo \"$p=absent\"; fi\n"
             "done\n"
             "grep -c ':' /etc/passwd | sed 's/^/passwd_lines=/'\n"
             "found=$(find / -name mine.txt 2>/dev/null | wc -l); echo \"other=$found\"\n",
             f->secret, f->d.work);
    set_run(f, body);
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "/etc/shadow=absent");
    {
        char line[400];

        snprintf(line, sizeof(line), "%s=absent", f->secret);
        out_has(res, line);
        snprintf(line, sizeof(line), "%s=absent", f->d.work);
        out_has(res, line);
    }
    out_has(res, "/root=absent");
    out_has(res, "/home=absent");
    out_has(res, "/etc/passwd=visible"); /* the job's own three lines */
    out_has(res, "passwd_lines=3");
    out_has(res, "other=0");
    runner_kill(other);
    rf_wait_done(other, WAIT_MS);
    runner_free(other);
}

/* Writing outside the work folder and /tmp; filling the disk. */
static void
test_sandbox_write_and_fill(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    add_task(f, "c1", "t1");
    f->opts.disk_limit = 4u * 1024 * 1024;
    set_run(f, "for p in /x /usr/x /etc/x /bin/x /task/x /env/x /dev/x /proc/x; do\n"
               "  if (echo x > $p) 2>/dev/null; then echo \"$p=written\"; else echo \"$p=refused\"; fi\n"
               "done\n"
               "echo ok > /work/w && echo ok > /tmp/t && echo work_tmp=ok\n"
               "head -c 16000000 /dev/zero > /work/big 2>/dev/null; echo \"fill=$?\"\n"
               "echo \"size=$(wc -c < /work/big)\"\n"
               "rm -f /work/big; echo after > /tmp/t2 && echo after=ok\n");
    set_job(f, "c1", "t1", NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "/x=refused");
    out_has(res, "/usr/x=refused");
    out_has(res, "/etc/x=refused");
    out_has(res, "/bin/x=refused");
    out_has(res, "/task/x=refused");
    out_has(res, "/env/x=refused");
    out_has(res, "/dev/x=refused");
    out_has(res, "/proc/x=refused");
    out_has(res, "work_tmp=ok");
    out_has(res, "fill=1");
    {
        const char *p = strstr(rf_str(res->stdout_), "size=");

        assert_non_null(p);
        assert_true(atol(p + 5) <= 4l * 1024 * 1024);
    }
    out_has(res, "after=ok");
}

/* The network: refused unless the task enables it (network_grading). */
static void
test_sandbox_network(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char body[256];

    /* A port on the host's 127.0.0.1, like the backend's. */
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    snprintf(body, sizeof(body), "$H connect %d", (int)ntohs(sa.sin_port));
    set_run(f, body);
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "connect=ECONNREFUSED"); /* the job's own loopback: nothing listens */
    out_has(res, "connect_any=ENETUNREACH");
    runner_free(f->r);
    f->r = NULL;

    set_job(f, NULL, NULL, "{\"network_grading\": true}");
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "connect=ok");
    close(lfd);
}

/* Processes outside the job: invisible, unkillable, not traceable. */
static void
test_sandbox_outside_processes(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;
    char body[256];

    snprintf(body, sizeof(body), "$H outside %d", (int)getpid());
    set_run(f, body);
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "kill=ESRCH");
    out_has(res, "ptrace=EPERM");
    out_has(res, "see=ENOENT");
    out_has(res, "kill_init=ok"); /* PID 1 of the job ignores the job's signals */
}

/* The seccomp filter and the 32-bit ABI. */
static void
test_sandbox_seccomp(void **state)
{
    static const char *const denied[] = {
        "unshare=EPERM",         "mount=EPERM",          "chroot=EPERM",
        "setns=EPERM",           "clone_newnet=EPERM",   "ptrace_traceme=EPERM",
        "packet_socket=EPERM",   "raw_socket=EPERM",     "raw6_socket=EPERM",
        "bpf=EPERM",             "perf_event_open=EPERM", "userfaultfd=EPERM",
        "keyctl=EPERM",          "add_key=EPERM",        "io_uring_setup=EPERM",
        "kexec_load=EPERM",      "init_module=EPERM",    "tcp_socket=ok",
        "fork=ok",
    };
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    set_run(f, "$H syscalls; grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd|CapPrm):' /proc/self/status");
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        out_has(res, denied[i]);
#if defined(__x86_64__)
    out_has(res, "int80=signal31");
#endif
    out_has(res, "NoNewPrivs:\t1");
    out_has(res, "Seccomp:\t2");
    out_has(res, "CapPrm:\t0000000000000000");
    out_has(res, "CapEff:\t0000000000000000");
    out_has(res, "CapBnd:\t0000000000000000");
}

/* A setuid-root binary gives nothing. */
static void
test_sandbox_setuid(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    set_run(f, "ls -l /env/suid | cut -c1-10; /env/suid --helper ids");
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "-rwsr-xr-x");
    out_has(res, "uid=4242 euid=4242 gid=4242 egid=4242");
}

/* A fork bomb stops at the pids limit; its processes are gone when the job ends. */
static void
test_sandbox_fork_bomb(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;
    uint64_t t0 = rf_now_ms();

    f->opts.nproc = 24;
    set_run(f, "i=0; while [ $i -lt 1000 ]; do sleep 4245 & i=$((i+1)); done; echo survived");
    set_job(f, NULL, NULL, "{\"limits\": {\"time\": 2, \"hard_time\": 4}}");
    res = run_job(f);
    rf_check_kind(res, "overflow");
    assert_non_null(strstr(rf_str(res->result_text), "Process limit exceeded (24 processes)"));
    assert_non_null(strstr(rf_str(res->stderr_), "fork"));
    assert_null(strstr(rf_str(res->stdout_), "survived"));
    assert_int_equal(count_sleeps("4245"), 0);
    assert_true(rf_now_ms() - t0 < 4000u * (uint64_t)slow() + 2000);
}

/* A memory bomb ends overflow (the cgroup's OOM kill). */
static void
test_sandbox_memory_bomb(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    set_run(f, "x=$(head -c 400000000 /dev/zero | tr '\\000' a); echo survived");
    set_job(f, NULL, NULL, "{\"limits\": {\"time\": 10, \"memory\": 48}}");
    res = run_job(f);
    rf_check_kind(res, "overflow");
    assert_non_null(strstr(rf_str(res->result_text), "Memory limit exceeded (48 MiB)"));
    assert_null(strstr(rf_str(res->stdout_), "survived"));
}

/* A daemon that double-forks out of the job's session is killed when the job ends. */
static void
test_sandbox_daemon(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    set_run(f, "(setsid sleep 4246 > /dev/null 2>&1 < /dev/null &); echo forked");
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out_has(res, "forked");
    assert_int_equal(count_sleeps("4246"), 0);
}

/* Sleeping past the wall-clock limit: timeout, every process gone. */
static void
test_sandbox_timeout(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;

    set_run(f, "(setsid sleep 4247 &); sleep 4247 & sleep 4247");
    set_job(f, NULL, NULL, "{\"limits\": {\"time\": 1, \"hard_time\": 1}}");
    res = run_job(f);
    rf_check_kind(res, "timeout");
    assert_int_equal(count_sleeps("4247"), 0);
}

/* An environment with its own rootfs/: the job's root comes from it, not from the host. */
static void
test_sandbox_rootfs(void **state)
{
    struct fx *f = need_sandbox(state);
    const struct ing_job_result *res;
    char p[400], usr[400];

    snprintf(p, sizeof(p), "%s/rootfs", f->d.envs);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(usr, sizeof(usr), "%s/rootfs/usr", f->d.envs);
    assert_int_equal(mkdir(usr, 0755), 0);
    /* Its programs: the host's /usr, bound into it for the test's time. */
    assert_int_equal(mount("/usr", usr, "none", MS_BIND | MS_REC, NULL), 0);
    for (size_t i = 0; i < 4; i++) {
        static const char *const links[][2] = {
            {"usr/bin", "bin"}, {"usr/lib", "lib"}, {"usr/lib64", "lib64"}, {"usr/sbin", "sbin"}};

        snprintf(p, sizeof(p), "%s/rootfs/%s", f->d.envs, links[i][1]);
        assert_int_equal(symlink(links[i][0], p), 0);
    }
    snprintf(p, sizeof(p), "%s/rootfs/marker.txt", f->d.envs);
    rf_write_file(p, "from the rootfs\n", 0644);
    set_run(f, "cat /marker.txt; ls / | tr '\\n' ' '; echo; "
               "[ -e /etc/nsswitch.conf ] && echo host_etc || echo own_etc");
    set_job(f, NULL, NULL, NULL);
    res = run_job(f);
    umount2(usr, MNT_DETACH);
    rf_check_kind(res, "success");
    out_has(res, "from the rootfs");
    out_has(res, "bin dev env etc lib lib64 marker.txt proc sbin tmp usr work ");
    out_has(res, "own_etc");
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sandbox_normal_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_read_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_write_and_fill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_network, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_outside_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_seccomp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_setuid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_fork_bomb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_memory_bomb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_daemon, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_rootfs, setup, teardown),
    };

    if (argc > 1 && strcmp(argv[1], "--helper") == 0)
        return helper_main(argc, argv);
    probe_rc = sandbox_probe(&host, probe_why, sizeof(probe_why));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
