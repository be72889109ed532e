/* SPDX-License-Identifier: MIT */
/* test_agent_process.c: the real $ING_BUILD/inginious-agent-process against the real
 * backend (started by tests/support/tpeer), driven by a test client. Each test writes its
 * environments (DIR/<type>/<name>/run) and tasks into a private temporary directory, starts
 * the agent on the backend's agent endpoint and checks what the client hears. Every wait is
 * bounded; the agent is stopped with SIGTERM in teardown and must exit 0. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inginious/proto.h"
#include "support/tpeer.h"

#define AGENT_EXIT_MS 5000 /* SIGTERM to exit */

/* The agent under test (one per test; tests run one after the other). */
struct apt {
    char dir[128];   /* mkdtemp: envs/, tasks/, shared/ and agent.log */
    char envs[192];
    char tasks[192];
    char shared[192]; /* writable by every user: jobs and tests meet there */
    char log[192];
    bool sandbox;     /* start the agent with its sandbox (default: --no-sandbox) */
    pid_t pid;        /* 0 when not running */
    int status;       /* its wait status once reaped */
};

static struct apt apt;

static void
put_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        tp_fail("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void
make_dir(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
make_dir(const char *fmt, ...)
{
    char path[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        tp_fail("mkdir %s: %s", path, strerror(errno));
    chmod(path, 0755);
}

/* add_env writes DIR/type/name/run with the /bin/sh body. */
static void
add_env(const char *type, const char *name, const char *body, bool hidden)
{
    char path[512], text[4096];

    make_dir("%s/%s", apt.envs, type);
    make_dir("%s/%s/%s", apt.envs, type, name);
    snprintf(path, sizeof(path), "%s/%s/%s/run", apt.envs, type, name);
    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    put_file(path, text, 0755);
    if (hidden) {
        snprintf(path, sizeof(path), "%s/%s/%s/hidden", apt.envs, type, name);
        put_file(path, "", 0644);
    }
}

static void
add_task(const char *course, const char *task)
{
    char path[512];

    make_dir("%s/%s", apt.tasks, course);
    make_dir("%s/%s/%s", apt.tasks, course, task);
    snprintf(path, sizeof(path), "%s/%s/%s/expected.txt", apt.tasks, course, task);
    put_file(path, "right\n", 0644);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int
setup(void **state)
{
    memset(&apt, 0, sizeof(apt));
    snprintf(apt.dir, sizeof(apt.dir), "/tmp/test_agent_process-XXXXXX");
    if (mkdtemp(apt.dir) == NULL || chmod(apt.dir, 0755) < 0)
        return -1;
    snprintf(apt.envs, sizeof(apt.envs), "%s/envs", apt.dir);
    snprintf(apt.tasks, sizeof(apt.tasks), "%s/tasks", apt.dir);
    snprintf(apt.shared, sizeof(apt.shared), "%s/shared", apt.dir);
    snprintf(apt.log, sizeof(apt.log), "%s/agent.log", apt.dir);
    if (mkdir(apt.envs, 0755) < 0 || mkdir(apt.tasks, 0755) < 0 ||
        mkdir(apt.shared, 0777) < 0 || chmod(apt.shared, 0777) < 0)
        return -1;
    return tp_setup(state);
}

static const char *
agent_bin(void)
{
    static char path[256];
    const char *b = getenv("ING_BUILD");

    snprintf(path, sizeof(path), "%s/inginious-agent-process", b != NULL ? b : "build");
    return path;
}

/* agent_start runs the agent on the backend address addr with the options given
 * (NULL-terminated), its output going to apt.log. */
static void agent_start(const char *addr, ...) __attribute__((sentinel));

static void
agent_start(const char *addr, ...)
{
    const char *argv[32];
    size_t n = 0;
    va_list ap;
    const char *a;

    argv[n++] = agent_bin();
    argv[n++] = "-v";
    argv[n++] = "--name";
    argv[n++] = "test-agent";
    argv[n++] = "--environments";
    argv[n++] = apt.envs;
    argv[n++] = "--tasks";
    argv[n++] = apt.tasks;
    /* Most tests share folders with their jobs: the sandbox has its own suite. */
    if (!apt.sandbox)
        argv[n++] = "--no-sandbox";
    va_start(ap, addr);
    while ((a = va_arg(ap, const char *)) != NULL && n < 30)
        argv[n++] = a;
    va_end(ap);
    argv[n++] = addr;
    argv[n] = NULL;
    apt.pid = fork();
    if (apt.pid < 0)
        tp_fail("fork: %s", strerror(errno));
    if (apt.pid == 0) {
        int fd = open(apt.log, O_WRONLY | O_CREAT | O_APPEND, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
}

/* agent_wait waits up to ms for the agent to exit. Returns true when it has. */
static bool
agent_wait(int ms)
{
    uint64_t end = tp_now_ms() + (uint64_t)ms;
    int fd = -1;

    if (apt.pid <= 0)
        return true;
#ifdef SYS_pidfd_open
    fd = (int)syscall(SYS_pidfd_open, apt.pid, 0);
#endif
    for (;;) {
        pid_t p = waitpid(apt.pid, &apt.status, WNOHANG);
        uint64_t now = tp_now_ms();

        if (p == apt.pid) {
            apt.pid = 0;
            break;
        }
        if (now >= end)
            break;
        if (fd >= 0) {
            struct pollfd pfd = {fd, POLLIN, 0};

            poll(&pfd, 1, (int)(end - now));
        } else {
            usleep(10000);
        }
    }
    if (fd >= 0)
        close(fd);
    return apt.pid == 0;
}

static void
dump_agent_log(void)
{
    char buf[8192];
    FILE *f = fopen(apt.log, "r");
    size_t n;

    if (f == NULL)
        return;
    fprintf(stderr, "---- agent log (%s)\n", apt.log);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
    fprintf(stderr, "---- end of agent log\n");
}

static bool
agent_log_contains(const char *needle)
{
    static char buf[1 << 16];
    FILE *f = fopen(apt.log, "r");
    size_t n;

    if (f == NULL)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static int
teardown(void **state)
{
    struct tp_ctx *c = *state;
    int rc = 0;

    if (apt.pid > 0) {
        kill(apt.pid, SIGTERM);
        if (!agent_wait(AGENT_EXIT_MS)) {
            fprintf(stderr, "teardown: the agent did not exit after SIGTERM\n");
            kill(apt.pid, SIGKILL);
            agent_wait(AGENT_EXIT_MS);
            rc = -1;
        } else if (c->ok && !(WIFEXITED(apt.status) && WEXITSTATUS(apt.status) == 0)) {
            fprintf(stderr, "teardown: the agent ended with wait status %d\n", apt.status);
            rc = -1;
        }
    }
    if (!c->ok || rc != 0 || getenv("TP_LOG") != NULL)
        dump_agent_log();
    nftw(apt.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (tp_teardown(state) != 0)
        rc = -1;
    return rc;
}

/* connect_client connects a client that sees no environment yet. */
static struct tp_peer *
connect_client(struct tp_ctx *c)
{
    return tp_client(c, "tester", "");
}

static uint64_t
fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- tests -------------------------------------------------------------------------- */

TP_TEST(test_agent_process_hello)
{
    struct tp_peer *cl;
    char want[128];

    add_env("process", "default", "exit 0", false);
    add_env("process", "secret", "exit 0", true);
    add_env("other", "x", "exit 1", false);
    make_dir("%s/process/norun", apt.envs); /* no run file: not an environment */
    tp_start(c, NULL);
    cl = connect_client(c);
    agent_start(c->be.agent_addr, "--concurrency", "3", NULL);
    tp_expect_envs(cl, "other:[x];process:[default]");
    /* The id is the FNV-1a hash of the run file. */
    snprintf(want, sizeof(want), "Environment process/default: id %016" PRIx64,
             fnv1a("#!/bin/sh\nexit 0\n"));
    if (!agent_log_contains(want))
        tp_fail("the agent log lacks \"%s\"", want);
    if (!agent_log_contains("Environment process/secret: id") ||
        !agent_log_contains("(hidden)"))
        tp_fail("the hidden environment is not in the agent log");
    if (!tp_log_contains(c, "test-agent"))
        tp_fail("the backend did not log the agent's name");
    /* --no-sandbox says so in the log and in the name the backend sees. */
    if (!tp_log_contains(c, "test-agent (no sandbox)"))
        tp_fail("the agent's name does not say \"(no sandbox)\"");
    if (!agent_log_contains("--no-sandbox: jobs run with rlimits and --user only"))
        tp_fail("the agent log does not say that jobs are not sandboxed");
}

/* The sandbox's network policy against the real backend: a job cannot reach the backend's
 * port on 127.0.0.1 unless its task enables networking (network_grading). */
TP_TEST(test_agent_process_sandbox_network)
{
    struct tp_peer *cl;
    struct tp_job j = {0};
    const struct ing_msg *m;
    const char *port;
    char body[512], s[64];

    tp_start(c, NULL);
    port = strrchr(c->be.agent_addr, ':');
    assert_non_null(port);
    snprintf(body, sizeof(body),
             "if bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s' 2>/dev/null; then echo connected;"
             " else echo refused; fi",
             port + 1);
    add_env("process", "default", body, false);
    cl = connect_client(c);
    apt.sandbox = true;
    agent_start(c->be.agent_addr, NULL);
    tp_expect_envs(cl, "process:[default]");
    j.id = "job-net-off";
    j.env_type = "process";
    j.env = "default";
    tp_send_job(cl, &j);
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
    m = tp_expect_done(cl, "job-net-off", "success", NULL, "");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.stdout_), "refused\n");
    j.id = "job-net-on";
    j.params_raw = TP_RAW("\x81\xafnetwork_grading\xc3");
    tp_send_job(cl, &j);
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
    m = tp_expect_done(cl, "job-net-on", "success", NULL, "");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.stdout_), "connected\n");
}

/* Secure by default: where the sandbox is refused (here: not root, so no job cgroups), the
 * agent does not start and says why, unless --no-sandbox is given. */
TP_TEST(test_agent_process_refuses_without_sandbox)
{
    int out[2];
    char buf[2048];
    size_t len = 0;
    pid_t pid;
    int st;
    uint64_t end = tp_now_ms() + TP_DEADLINE_MS;

    (void)c;
    add_env("process", "default", "exit 0", false);
    if (pipe2(out, O_CLOEXEC) < 0)
        tp_fail("pipe: %s", strerror(errno));
    pid = fork();
    if (pid == 0) {
        dup2(out[1], 2);
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(126);
        execl(agent_bin(), agent_bin(), "--environments", apt.envs, "tcp://127.0.0.1:9",
              (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    for (;;) {
        struct pollfd p = {out[0], POLLIN, 0};
        ssize_t n;
        uint64_t now = tp_now_ms();

        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            break;
        n = read(out[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(out[0]);
    if (tp_now_ms() >= end)
        kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
        tp_fail("the agent without a sandbox ended with status %d: %s", st, buf);
    if (strstr(buf, "cannot sandbox jobs here: not running as root") == NULL ||
        strstr(buf, "--no-sandbox") == NULL)
        tp_fail("the agent did not say why it refused: %s", buf);
}

TP_TEST(test_agent_process_job)
{
    struct tp_peer *cl;
    const struct ing_msg *m;
    struct tp_job j = {0};
    char s[256];

    add_env("process", "default",
            "if grep -q '\"v\":\"right\"' input.json && [ \"$(cat expected.txt)\" = right ]\n"
            "then echo '{\"result\": \"success\", \"grade\": 90, \"text\": \"good\"}' "
            "> feedback.json\n"
            "else echo '{\"result\": \"failed\", \"text\": \"bad\"}' > feedback.json; fi\n"
            "echo \"out $INGINIOUS_COURSE/$INGINIOUS_TASK\"",
            false);
    add_task("c1", "t1");
    tp_start(c, NULL);
    cl = connect_client(c);
    apt.sandbox = true; /* a normal job gives the same result in the sandbox */
    agent_start(c->be.agent_addr, NULL);
    tp_expect_envs(cl, "process:[default]");

    j.id = "job-ok";
    j.course = "c1";
    j.task = "t1";
    j.env_type = "process";
    j.env = "default";
    j.state = "S1";
    j.input = "right";
    tp_send_job(cl, &j);
    m = tp_expect(cl, ING_BACKEND_JOB_STARTED);
    assert_true(tp_view_is(m->u.ref.job_id, "job-ok"));
    m = tp_expect_done(cl, "job-ok", "success", "good", "S1");
    assert_true(m->u.result.grade == 90.0);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.stdout_), "out c1/t1\n");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.stderr_), "");

    j.id = "job-bad";
    j.input = "wrong";
    tp_send_job(cl, &j);
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
    m = tp_expect_done(cl, "job-bad", "failed", "bad", "S1");
    assert_true(m->u.result.grade == 0.0);

    /* A task the agent does not have: crash, the state kept, and no AgentJobStarted (the
     * job never started). */
    j.id = "job-notask";
    j.task = "nope";
    tp_send_job(cl, &j);
    tp_expect_done(cl, "job-notask", "crash", "Task folder c1/nope not found", "S1");
}

/* start_job starts the backend, a client and the agent, whose default environment runs
 * body, then submits the job id (with state, NULL: none) and waits for its
 * BackendJobStarted. Returns the client. */
static struct tp_peer *
start_job(struct tp_ctx *c, const char *body, const char *id, const char *state)
{
    struct tp_peer *cl;
    struct tp_job j = {0};

    add_env("process", "default", body, false);
    tp_start(c, NULL);
    cl = connect_client(c);
    agent_start(c->be.agent_addr, NULL);
    tp_expect_envs(cl, "process:[default]");
    j.id = id;
    j.env_type = "process";
    j.env = "default";
    j.state = state;
    tp_send_job(cl, &j);
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
    return cl;
}

TP_TEST(test_agent_process_kill)
{
    struct tp_peer *cl = start_job(c, "echo started; sleep 60", "job-long", "keep-me");
    uint64_t t0;

    t0 = tp_now_ms();
    tp_kill(cl, "job-long");
    tp_expect_done(cl, "job-long", "killed", NULL, "keep-me");
    assert_true(tp_now_ms() - t0 < 3000);
    if (!agent_log_contains("Kill of job job-long"))
        tp_fail("the agent did not log the kill");
}

TP_TEST(test_agent_process_concurrency)
{
    struct tp_peer *cl;
    struct tp_job j = {0};
    struct tp_queue q;
    char body[1024], go[256], ids[256];
    const char *names[3] = {"job-a", "job-b", "job-c"};
    int started = 0, done = 0;

    /* Each job waits for the file shared/go, then records how many jobs run with it. */
    snprintf(go, sizeof(go), "%s/go", apt.shared);
    snprintf(body, sizeof(body),
             "touch %s/run.$INGINIOUS_JOB_ID\n"
             "while [ ! -e %s ]; do sleep 0.02; done\n"
             "ls %s | grep -c '^run\\.'",
             apt.shared, go, apt.shared);
    add_env("process", "default", body, false);
    tp_start(c, NULL);
    cl = connect_client(c);
    agent_start(c->be.agent_addr, "--concurrency", "2", NULL);
    tp_expect_envs(cl, "process:[default]");
    j.env_type = "process";
    j.env = "default";
    for (int i = 0; i < 3; i++) {
        j.id = names[i];
        tp_send_job(cl, &j);
    }
    /* Two start (in either order: each is started when its `run` runs), the third waits
     * for a free slot. */
    {
        bool seen[2] = {false, false};

        for (int i = 0; i < 2; i++) {
            const struct ing_msg *m = tp_expect(cl, ING_BACKEND_JOB_STARTED);
            int k = tp_view_is(m->u.ref.job_id, names[0]) ? 0 : 1;

            assert_true(tp_view_is(m->u.ref.job_id, names[k]));
            assert_false(seen[k]);
            seen[k] = true;
            started++;
        }
    }
    tp_expect_nothing(cl, 300);
    tp_get_queue(cl, &q);
    tp_queue_ids(&q, true, ids, sizeof(ids));
    assert_string_equal(ids, "job-a,job-b");
    tp_queue_ids(&q, false, ids, sizeof(ids));
    assert_string_equal(ids, "job-c");
    tp_queue_free(&q);

    put_file(go, "", 0644);
    while (done < 3) {
        const struct ing_msg *m;
        int t = tp_recv(cl, TP_DEADLINE_MS, &m);

        if (t == ING_BACKEND_JOB_STARTED) {
            started++;
        } else if (t == ING_BACKEND_JOB_DONE) {
            char out[64];

            if (!tp_view_is(m->u.result.result_kind, "success"))
                tp_fail("a job ended %s", tp_cpy(out, sizeof(out), m->u.result.result_kind));
            done++;
        } else {
            tp_fail("unexpected message %d", t);
        }
    }
    assert_int_equal(started, 3);
}

TP_TEST(test_agent_process_sigterm)
{
    struct tp_peer *cl = start_job(c, "sleep 60", "job-term", "st");

    /* SIGTERM: the running job is killed and reported before the agent exits 0. */
    kill(apt.pid, SIGTERM);
    tp_expect_done(cl, "job-term", "killed", NULL, "st");
    if (!agent_wait(AGENT_EXIT_MS))
        tp_fail("the agent did not exit after SIGTERM");
    assert_true(WIFEXITED(apt.status) && WEXITSTATUS(apt.status) == 0);
    /* Its environment goes with it. */
    tp_expect_envs(cl, "");
}

TP_TEST(test_agent_process_orphans)
{
    /* A process that leaves the job's process group outlives the job; when it ends it is
     * the agent's (a subreaper) to reap. */
    struct tp_peer *cl = start_job(c, "setsid sleep 0.2 >/dev/null 2>&1 < /dev/null &\nexit 0",
                                   "job-orphan", NULL);
    uint64_t end;

    tp_expect_done(cl, "job-orphan", "success", NULL, "");
    end = tp_now_ms() + TP_DEADLINE_MS;
    while (!agent_log_contains("reaped orphan")) {
        if (tp_now_ms() >= end)
            tp_fail("the agent did not reap the orphan");
        usleep(20000);
    }
}

/* ---- a fake backend: the test plays the backend's side of an agent connection -------- */

/* The Welcome flags the fake backend sends (ING_WELCOME_RESUME: it can resume). */
static uint16_t fake_welcome_flags;

struct fake {
    int lfd;             /* listening socket, 127.0.0.1:0 */
    int fd;              /* the agent's connection, -1 before accept */
    char addr[64];       /* tcp://127.0.0.1:PORT */
    uint8_t in[1 << 16]; /* input */
    size_t len;          /* bytes in it */
    size_t last;         /* size of the frame handed out last */
    struct ing_msg msg;  /* that frame, decoded */
};

static void
fake_listen(struct fake *f)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(f->lfd, 4) < 0 || getsockname(f->lfd, (struct sockaddr *)&sa, &sl) < 0)
        tp_fail("fake backend: %s", strerror(errno));
    snprintf(f->addr, sizeof(f->addr), "tcp://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
}

static void
fake_close(struct fake *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->len = f->last = 0;
}

/* fake_read reads more input within the deadline. */
static void
fake_read(struct fake *f, uint64_t end)
{
    struct pollfd p = {f->fd, POLLIN, 0};
    uint64_t now = tp_now_ms();
    ssize_t n;

    if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
        tp_fail("fake backend: nothing from the agent in time");
    if (f->len == sizeof(f->in))
        tp_fail("fake backend: input full");
    n = read(f->fd, f->in + f->len, sizeof(f->in) - f->len);
    if (n <= 0)
        tp_fail("fake backend: the agent closed the connection");
    f->len += (size_t)n;
}

static void
fake_send(struct fake *f, const struct ing_msg *m)
{
    uint8_t buf[4096];
    ssize_t n = ing_msg_encode(m, buf, sizeof(buf));

    if (n <= 0 || write(f->fd, buf, (size_t)n) != n)
        tp_fail("fake backend: cannot send %s", ing_msg_type_name(m->type));
}

/* fake_accept accepts the agent, reads its preamble and answers Welcome (no heartbeat). */
static void
fake_accept(struct fake *f)
{
    struct pollfd p = {f->lfd, POLLIN, 0};
    uint64_t end = tp_now_ms() + TP_DEADLINE_MS;
    struct ing_msg w;
    uint8_t version, role;

    fake_close(f);
    if (poll(&p, 1, TP_DEADLINE_MS) <= 0)
        tp_fail("fake backend: the agent did not connect");
    f->fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (f->fd < 0)
        tp_fail("fake backend: accept: %s", strerror(errno));
    while (f->len < ING_PREAMBLE_LEN)
        fake_read(f, end);
    if (ing_preamble_decode(f->in, f->len, &version, &role) != ING_PREAMBLE_LEN ||
        role != ING_ROLE_AGENT)
        tp_fail("fake backend: bad preamble");
    memmove(f->in, f->in + ING_PREAMBLE_LEN, f->len - ING_PREAMBLE_LEN);
    f->len -= ING_PREAMBLE_LEN;
    memset(&w, 0, sizeof(w));
    w.type = ING_WELCOME;
    w.u.welcome.version = 1;
    w.u.welcome.role = ING_ROLE_AGENT;
    w.u.welcome.max_frame = ING_MAX_FRAME_DEFAULT;
    w.u.welcome.server.p = "fake";
    w.u.welcome.server.len = 4;
    w.u.welcome.flags = fake_welcome_flags;
    fake_send(f, &w);
}

/* fake_expect returns the next frame from the agent, which must be of type. */
static const struct ing_msg *
fake_expect(struct fake *f, uint8_t type)
{
    uint64_t end = tp_now_ms() + TP_DEADLINE_MS;

    memmove(f->in, f->in + f->last, f->len - f->last);
    f->len -= f->last;
    f->last = 0;
    for (;;) {
        ssize_t n = ing_msg_decode(f->in, f->len, ING_MAX_FRAME_DEFAULT, &f->msg);

        if (n < 0)
            tp_fail("fake backend: undecodable frame from the agent");
        if (n > 0 && f->msg.type == ING_PING && type != ING_PING) {
            /* The agent's Ping confirming its results (proto.md 7.10): not answered. */
            memmove(f->in, f->in + n, f->len - (size_t)n);
            f->len -= (size_t)n;
            continue;
        }
        if (n > 0) {
            f->last = (size_t)n;
            if (f->msg.type != type)
                tp_fail("fake backend: got %s, expected %s", ing_msg_type_name(f->msg.type),
                        ing_msg_type_name(type));
            return &f->msg;
        }
        fake_read(f, end);
    }
}

/* fake_quiet checks that the agent sends nothing within ms. */
static void
fake_quiet(struct fake *f, int ms)
{
    struct pollfd p = {f->fd, POLLIN, 0};

    if (f->len > f->last || poll(&p, 1, ms) != 0)
        tp_fail("fake backend: the agent sent something unexpected");
}

/* fake_next returns the next frame from the agent, or NULL when none comes within ms. */
static const struct ing_msg *
fake_next(struct fake *f, int ms)
{
    memmove(f->in, f->in + f->last, f->len - f->last);
    f->len -= f->last;
    f->last = 0;
    for (;;) {
        struct pollfd p = {f->fd, POLLIN, 0};
        ssize_t n = ing_msg_decode(f->in, f->len, ING_MAX_FRAME_DEFAULT, &f->msg);

        if (n < 0)
            tp_fail("fake backend: undecodable frame from the agent");
        if (n > 0 && f->msg.type == ING_PING) { /* as in fake_expect */
            memmove(f->in, f->in + n, f->len - (size_t)n);
            f->len -= (size_t)n;
            continue;
        }
        if (n > 0) {
            f->last = (size_t)n;
            return &f->msg;
        }
        if (poll(&p, 1, ms) <= 0)
            return NULL;
        if (f->len == sizeof(f->in))
            tp_fail("fake backend: input full");
        n = read(f->fd, f->in + f->len, sizeof(f->in) - f->len);
        if (n <= 0)
            tp_fail("fake backend: the agent closed the connection");
        f->len += (size_t)n;
    }
}

static struct ing_view
view(const char *s)
{
    struct ing_view v = {s, (uint32_t)strlen(s)};

    return v;
}

/* fake_job fills a BackendNewJob for process/default (course and task NULL: taskless). */
static void
fake_job(struct ing_msg *j, const char *id, const char *course, const char *task)
{
    memset(j, 0, sizeof(*j));
    j->type = ING_BACKEND_NEW_JOB;
    j->u.job.job_id = view(id);
    if (course != NULL)
        j->u.job.course_id = view(course);
    if (task != NULL)
        j->u.job.task_id = view(task);
    j->u.job.environment_type = view("process");
    j->u.job.environment = view("default");
    j->u.job.task_problems = view("\x80");
    j->u.job.inputdata = view("\x80");
    j->u.job.environment_parameters = view("\x80");
}

TP_TEST(test_agent_process_kill_unknown)
{
    struct fake f;
    struct ing_msg k;
    const struct ing_msg *m;
    char s[64];

    (void)c;
    add_env("process", "default", "exit 0", false);
    fake_listen(&f);
    agent_start(f.addr, NULL);
    fake_accept(&f);
    fake_expect(&f, ING_AGENT_HELLO);
    /* A kill for a job the agent does not run: killed, "", with the kill's state. */
    memset(&k, 0, sizeof(k));
    k.type = ING_BACKEND_KILL_JOB;
    k.u.kill.job_id = view("ghost");
    k.u.kill.state = view("ghost-state");
    fake_send(&f, &k);
    m = fake_expect(&f, ING_AGENT_JOB_DONE);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.job_id), "ghost");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.result_kind), "killed");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.result_text), "");
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.state), "ghost-state");
    assert_true(m->u.result.grade == 0.0);
    assert_true(tp_view_bytes(m->u.result.problems, TP_RAW("\x80")));
    assert_null(m->u.result.archive.p);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.stdout_), "");
    fake_close(&f);
    close(f.lfd);
}

TP_TEST(test_agent_process_reconnect)
{
    struct fake f;
    struct ing_msg j;
    const struct ing_msg *m;
    char s[64];

    (void)c;
    add_env("process", "default", "sleep 60", false);
    fake_listen(&f);
    agent_start(f.addr, NULL);
    fake_accept(&f);
    fake_expect(&f, ING_AGENT_HELLO);
    /* AgentJobStarted comes at once. */
    fake_job(&j, "j1", NULL, NULL);
    fake_send(&f, &j);
    m = fake_expect(&f, ING_AGENT_JOB_STARTED);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.ref.job_id), "j1");
    /* The backend goes away: the agent keeps its job and reconnects; this backend cannot
     * resume (no RESUME flag): the agent kills the job and says hello again, without a
     * result for the lost job. */
    fake_close(&f);
    fake_accept(&f);
    fake_expect(&f, ING_AGENT_HELLO);
    fake_quiet(&f, 300);
    if (!agent_log_contains("running jobs kept") ||
        !agent_log_contains("did not take back the 1 running jobs: killed"))
        tp_fail("the agent did not log the loss of its job");
    fake_close(&f);
    close(f.lfd);
}

/* wait_log waits (bounded) until the agent's log holds needle. */
static void
wait_log(const char *needle)
{
    uint64_t end = tp_now_ms() + TP_DEADLINE_MS;

    while (!agent_log_contains(needle)) {
        if (tp_now_ms() > end)
            tp_fail("the agent never logged \"%s\"", needle);
        (void)poll(NULL, 0, 10);
    }
}

/* Resume (proto.md 7.10): the job survives the backend's absence; its result, ended
 * meanwhile, goes after the AgentHelloResume that claims it back, under the same id. */
TP_TEST(test_agent_process_resume)
{
    struct fake f;
    struct ing_msg j;
    const struct ing_msg *m;
    struct ing_resume_job rj;
    uint8_t id[ING_AGENT_ID_LEN];
    char s[64], body[600], flag[520];

    (void)c;
    snprintf(flag, sizeof(flag), "%s/go", apt.tasks);
    snprintf(body, sizeof(body), "while [ ! -f '%s' ]; do sleep 0.02; done", flag);
    add_env("process", "default", body, false);
    fake_welcome_flags = ING_WELCOME_RESUME;
    fake_listen(&f);
    agent_start(f.addr, NULL);
    fake_accept(&f);
    m = fake_expect(&f, ING_AGENT_HELLO_RESUME);
    assert_int_equal(m->u.agent_resume.n_jobs, 0);
    memcpy(id, m->u.agent_resume.agent_id, sizeof(id));
    fake_job(&j, "j1", NULL, NULL);
    fake_send(&f, &j);
    m = fake_expect(&f, ING_AGENT_JOB_STARTED);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.ref.job_id), "j1");
    /* The backend goes away; the job ends meanwhile. */
    fake_close(&f);
    wait_log("running jobs kept");
    close(open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    wait_log("Job j1 ended: success");
    fake_accept(&f);
    m = fake_expect(&f, ING_AGENT_HELLO_RESUME);
    assert_memory_equal(m->u.agent_resume.agent_id, id, sizeof(id));
    assert_int_equal(m->u.agent_resume.n_jobs, 1);
    ing_resume_next(m->u.agent_resume.wire_jobs, &rj);
    assert_string_equal(tp_cpy(s, sizeof(s), rj.job_id), "j1");
    assert_true(rj.started);
    m = fake_expect(&f, ING_AGENT_JOB_DONE);
    assert_string_equal(tp_cpy(s, sizeof(s), m->u.result.job_id), "j1");
    assert_true(tp_view_is(m->u.result.result_kind, "success"));
    /* The result is kept until a Pong confirms it: the next connection claims it again. */
    fake_expect(&f, ING_PING);
    fake_close(&f);
    fake_accept(&f);
    m = fake_expect(&f, ING_AGENT_HELLO_RESUME);
    assert_int_equal(m->u.agent_resume.n_jobs, 1);
    fake_expect(&f, ING_AGENT_JOB_DONE);
    m = fake_expect(&f, ING_PING);
    memset(&j, 0, sizeof(j));
    j.type = ING_PONG;
    fake_send(&f, &j);
    /* Confirmed: forgotten. */
    fake_close(&f);
    fake_accept(&f);
    m = fake_expect(&f, ING_AGENT_HELLO_RESUME);
    assert_int_equal(m->u.agent_resume.n_jobs, 0);
    fake_welcome_flags = 0;
    fake_close(&f);
    close(f.lfd);
}

/* --resume-timeout: after that long without the backend the kept jobs are killed. */
TP_TEST(test_agent_process_resume_timeout)
{
    struct fake f;
    struct ing_msg j;
    const struct ing_msg *m;

    (void)c;
    add_env("process", "default", "sleep 60", false);
    fake_welcome_flags = ING_WELCOME_RESUME;
    fake_listen(&f);
    agent_start(f.addr, "--resume-timeout", "200ms", NULL);
    fake_accept(&f);
    fake_expect(&f, ING_AGENT_HELLO_RESUME);
    fake_job(&j, "j1", NULL, NULL);
    fake_send(&f, &j);
    fake_expect(&f, ING_AGENT_JOB_STARTED);
    fake_close(&f);
    wait_log("did not take back the 1 running jobs: killed");
    fake_accept(&f);
    m = fake_expect(&f, ING_AGENT_HELLO_RESUME);
    assert_int_equal(m->u.agent_resume.n_jobs, 0);
    fake_welcome_flags = 0;
    fake_close(&f);
    close(f.lfd);
}

/* A large task folder (issue 13 item 16): four jobs copy 128 MiB each while the test,
 * playing the backend, pings the agent every 5 ms and measures each Pong's delay. The
 * copies run in the jobs' children, so the loop keeps answering; AgentJobStarted comes
 * once each copy is done and `run` runs. */
TP_TEST(test_agent_process_large_task)
{
    static const char *const ids[4] = {"big-0", "big-1", "big-2", "big-3"};
    struct fake f;
    struct ing_msg j, ping;
    const struct ing_msg *m;
    uint64_t t0, ping_at = 0, next_ping = 0, max_delay = 0, pongs = 0;
    int started = 0, done = 0, fd;
    char path[512];

    (void)c;
    add_env("process", "default", "[ -f blob ] && [ $(wc -c < blob) -eq 134217728 ]", false);
    make_dir("%s/big", apt.tasks);
    make_dir("%s/big/t", apt.tasks);
    snprintf(path, sizeof(path), "%s/big/t/blob", apt.tasks);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 128 << 20) < 0) /* sparse: no disk used here */
        tp_fail("cannot make %s: %s", path, strerror(errno));
    close(fd);
    apt.sandbox = true; /* the copies go to the jobs' tmpfs */
    fake_listen(&f);
    agent_start(f.addr, "--concurrency", "4", NULL);
    fake_accept(&f);
    fake_expect(&f, ING_AGENT_HELLO);
    for (int i = 0; i < 4; i++) {
        fake_job(&j, ids[i], "big", "t");
        fake_send(&f, &j);
    }
    memset(&ping, 0, sizeof(ping));
    ping.type = ING_PING;
    t0 = tp_now_ms();
    while (done < 4) {
        uint64_t now = tp_now_ms();

        if (now - t0 > 12u * (uint64_t)TP_DEADLINE_MS)
            tp_fail("the jobs did not end in time (%d done)", done);
        if (ping_at == 0 && now >= next_ping) {
            fake_send(&f, &ping);
            ping_at = now;
        }
        m = fake_next(&f, 5);
        if (m == NULL)
            continue;
        if (m->type == ING_PONG) {
            uint64_t d = tp_now_ms() - ping_at;

            max_delay = d > max_delay ? d : max_delay;
            pongs++;
            ping_at = 0;
            next_ping = tp_now_ms() + 5; /* about 200 pings a second */
        } else if (m->type == ING_AGENT_JOB_STARTED) {
            started++;
        } else if (m->type == ING_AGENT_JOB_DONE) {
            char k[32], t[200];

            if (!tp_view_is(m->u.result.result_kind, "success"))
                tp_fail("a job ended %s: %s", tp_cpy(k, sizeof(k), m->u.result.result_kind),
                        tp_cpy(t, sizeof(t), m->u.result.result_text));
            done++;
        } else {
            tp_fail("unexpected %s", ing_msg_type_name(m->type));
        }
    }
    print_message("4 jobs x 128 MiB copied in %llu ms; %llu pings, the slowest Pong "
                  "after %llu ms\n",
                  (unsigned long long)(tp_now_ms() - t0), (unsigned long long)pongs,
                  (unsigned long long)max_delay);
    assert_int_equal(started, 4);
    assert_true(pongs >= 5);
    /* Before, the loop copied: one Pong, after 1.5 s. A busy 2-CPU machine may delay a
     * Pong by some scheduling latency, never by a copy. */
    assert_true(max_delay < 500u * (uint64_t)tp_slow());
    fake_close(&f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_agent_process_hello, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_sigterm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_orphans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_kill_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_resume_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_large_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_refuses_without_sandbox, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_agent_process_sandbox_network, setup, teardown),
    };

    return cmocka_run_group_tests_name("agent_process", tests, NULL, NULL);
}
