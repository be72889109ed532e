/* SPDX-License-Identifier: MIT */
/* inginious-agent-process: a grading agent that runs each job as a local process (runner.h)
 * and talks to the backend through the agent library (inginious/agent.h). The only place
 * that calls exit().
 *
 * Environments are directories DIR/<type>/<name>/ holding an executable `run`. Their id is
 * the FNV-1a 64-bit hash (hex) of the run file's contents, `created` its mtime; a file
 * DIR/<type>/<name>/hidden makes the environment unadvertised. They are read once, at
 * start.
 *
 * One poll() loop watches the backend connection, a signalfd (SIGTERM, SIGINT) and the
 * pipes, pidfds and start reports of the running jobs. On BackendNewJob the agent starts
 * the job: a child process copies the task folder (the loop never waits for a copy or a
 * removal) and execs `run`; AgentJobStarted is sent when `run` really starts, and a job
 * that cannot start is answered AgentJobDone(crash) alone. Each finished job is reported
 * with AgentJobDone. BackendKillJob kills a running job (reported `killed` when it
 * is gone) and answers an unknown one with AgentJobDone(killed, "", state = the kill's
 * state) (proto.md §7.2). When the connection is lost, the library reconnects and the
 * running jobs go on: it re-announces them (AgentHelloResume, proto.md §7.10) and sends the
 * results that ended meanwhile; only after --resume-timeout of backend absence (or with a
 * backend that cannot resume) are they killed and forgotten. --resume-timeout 0 restores
 * the old way: killed at once, the backend having ended or requeued them.
 * SIGTERM or SIGINT kills the running jobs, reports them and exits 0.
 *
 * The agent is a child subreaper (and may be a container's PID 1): processes that a job
 * leaves behind are reparented to it, and it reaps them on SIGCHLD, so that they do not
 * stay zombies counting against the job user's RLIMIT_NPROC.
 *
 * Jobs run in the sandbox of sandbox.h unless --no-sandbox is given; when the kernel or the
 * permissions do not allow it the agent refuses to start and says why. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "inginious/agent.h"
#include "inginious/err.h"
#include "inginious/mp.h"
#include "inginious/version.h"
#include "log.h"
#include "opt.h"
#include "runner.h"

#define DEFAULT_ADDR "tcp://127.0.0.1:2001"
#define MAX_SLOTS 4096
#define FLUSH_MS 2000    /* at exit: time given to send the last reports */
#define STOP_WAIT_MS 10000 /* at exit: time given to killed jobs to go */
#define CONNECT_WARN_MS 5000 /* warn when the backend cannot be reached for this long */

/* One environment found under --environments. */
struct env_entry {
    char *type;
    char *name;
    char *run;        /* absolute path of its run file */
    char id[17];      /* FNV-1a 64 of run, hex */
    int64_t created;  /* mtime of run */
    bool advertised;  /* no `hidden` file */
};

struct agentp {
    struct ing_agent *agent;
    const char *addr;
    const char *name;
    struct runner_opts ropts;
    struct env_entry *envs;
    size_t nenvs;
    struct runner_job **jobs; /* running jobs, at most slots */
    bool *started;            /* AgentJobStarted sent for jobs[i] */
    size_t njobs;
    uint32_t slots;
    bool stopping;
    bool connected;      /* the backend has welcomed us */
    uint64_t down_since; /* when the connection was lost (or the agent started) */
    bool warned;         /* "cannot connect" was logged for this outage */
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: inginious-agent-process [options] [BACKEND_ADDR]\n"
            "\n"
            "An INGInious grading agent that runs every job as a local process: the `run`\n"
            "executable of its environment, in a temporary copy of its task folder, with its\n"
            "input as JSON on stdin and in input.json, under the job's time and memory limits,\n"
            "in a sandbox: its own namespaces, root, cgroup and seccomp filter (README). Run\n"
            "as root; where the sandbox is refused the agent says why and does not start.\n"
            "BACKEND_ADDR is the backend's agent endpoint (default " DEFAULT_ADDR ").\n"
            "Sizes: N, NK, NM, NG (bytes).\n"
            "\n"
            "  -n, --name NAME          name shown to the backend (default: the host name)\n"
            "  -c, --concurrency N      jobs run at once (default: the number of CPUs)\n"
            "  -e, --environments DIR   environments: DIR/<type>/<name>/run (executable);\n"
            "                           a file DIR/<type>/<name>/hidden hides one from clients\n"
            "  -t, --tasks DIR          task folders: DIR/<course>/<task>/\n"
            "  -u, --user USER          when run as root, run jobs as USER (default nobody)\n"
            "      --work-dir DIR       where job folders are made (default $TMPDIR or /tmp)\n"
            "      --output-limit SIZE  stdout and stderr kept per job, each (default 64K;\n"
            "                           at most 1G)\n"
            "      --nproc N            sandboxed: the processes of a job, all together\n"
            "                           (default 256); --no-sandbox: RLIMIT_NPROC (default:\n"
            "                           none)\n"
            "      --secret-file F      the backend's agent secret (its --agent-secret-file):\n"
            "                           answer its challenge (proto.md 6)\n"
            "      --disk-limit SIZE    sandboxed: the job's writable space, its folder and\n"
            "                           /tmp together, a tmpfs (default 1G; limits.disk\n"
            "                           lowers it)\n"
            "      --no-sandbox         run jobs without namespaces, cgroups and seccomp (only\n"
            "                           rlimits and --user): for trusted graders only\n"
            "      --resume-timeout DUR keep running jobs while the backend is away, up to\n"
            "                           DUR, and give them back to it when it returns\n"
            "                           (default 60s; 0 = kill them at once; proto.md 7.10)\n"
            "  -v, --verbose            log debug messages\n"
            "  -q, --quiet              log warnings and errors only\n"
            "      --help               this text\n"
            "      --version            the version\n");
}

static uint64_t
clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* parse_count reads an unsigned integer (opt_u64) up to max. Returns 0 or -1. */
static int
parse_count(const char *s, unsigned long max, unsigned long *out)
{
    uint64_t v;

    if (opt_u64(s, &v) != 0 || v > max)
        return -1;
    *out = (unsigned long)v;
    return 0;
}

/* parse_size reads a size (opt_size) up to 1 GiB. Returns 0 or -1. */
static int
parse_size(const char *s, size_t *out)
{
    uint64_t v;

    if (opt_size(s, &v) != 0 || v > (1u << 30))
        return -1;
    *out = (size_t)v;
    return 0;
}

/* ---- environments ------------------------------------------------------------------- */

/* fnv1a_file hashes the contents of path (FNV-1a, 64 bits). Returns 0 or -errno. */
static int
fnv1a_file(const char *path, uint64_t *out)
{
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[16384];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    while ((n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            close(fd);
            return -e;
        }
        for (ssize_t i = 0; i < n; i++) {
            h ^= buf[i];
            h *= 0x100000001b3ull;
        }
    }
    close(fd);
    *out = h;
    return 0;
}

static bool
visible_dir(const char *parent, const struct dirent *e)
{
    char path[PATH_MAX];
    struct stat st;

    if (e->d_name[0] == '.')
        return false;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", parent, e->d_name) >= sizeof(path))
        return false;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* add_env records DIR/type/name when it holds an executable run. Returns 0 or -ENOMEM. */
static int
add_env(struct agentp *ap, size_t *cap, const char *dir, const char *type, const char *name)
{
    char run[PATH_MAX], hidden[PATH_MAX];
    struct env_entry *e;
    struct stat st;
    uint64_t h = 0;
    int rc;

    if ((size_t)snprintf(run, sizeof(run), "%s/%s/%s/run", dir, type, name) >= sizeof(run) ||
        (size_t)snprintf(hidden, sizeof(hidden), "%s/%s/%s/hidden", dir, type, name) >=
            sizeof(hidden))
        return 0;
    if (stat(run, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
        log_msg(LOG_DEBUG, "%s/%s: no executable run file, skipped", type, name);
        return 0;
    }
    if (strlen(type) > 255 || strlen(name) > 255 ||
        !ing_mp_utf8_valid((const uint8_t *)type, strlen(type)) ||
        !ing_mp_utf8_valid((const uint8_t *)name, strlen(name))) {
        log_msg(LOG_WARN, "environment %s/%s: name not usable, skipped", type, name);
        return 0;
    }
    rc = fnv1a_file(run, &h);
    if (rc < 0) {
        log_msg(LOG_WARN, "environment %s/%s: cannot read %s: %s", type, name, run,
                ing_strerror(rc));
        return 0;
    }
    if (ap->nenvs == *cap) {
        size_t ncap = *cap != 0 ? *cap * 2 : 8;
        struct env_entry *n = realloc(ap->envs, ncap * sizeof(*n));

        if (n == NULL)
            return -ENOMEM;
        ap->envs = n;
        *cap = ncap;
    }
    e = &ap->envs[ap->nenvs];
    memset(e, 0, sizeof(*e));
    e->type = strdup(type);
    e->name = strdup(name);
    e->run = strdup(run);
    if (e->type == NULL || e->name == NULL || e->run == NULL) {
        free(e->type);
        free(e->name);
        free(e->run);
        return -ENOMEM;
    }
    snprintf(e->id, sizeof(e->id), "%016" PRIx64, h);
    e->created = (int64_t)st.st_mtime;
    e->advertised = access(hidden, F_OK) != 0;
    ap->nenvs++;
    log_msg(LOG_INFO, "Environment %s/%s: id %s%s", type, name, e->id,
            e->advertised ? "" : " (hidden)");
    return 0;
}

/* scan_envs reads DIR/<type>/<name>/run. Returns 0 or -errno. */
static int
scan_envs(struct agentp *ap, const char *dir_arg)
{
    char *dir = realpath(dir_arg, NULL);
    size_t cap = 0;
    DIR *d;
    struct dirent *t;
    int rc = 0;

    if (dir == NULL)
        return -errno;
    d = opendir(dir);
    if (d == NULL) {
        rc = -errno;
        free(dir);
        return rc;
    }
    while (rc == 0 && (t = readdir(d)) != NULL) {
        char tdir[PATH_MAX];
        DIR *d2;
        struct dirent *n;

        if (!visible_dir(dir, t))
            continue;
        snprintf(tdir, sizeof(tdir), "%s/%s", dir, t->d_name);
        d2 = opendir(tdir);
        if (d2 == NULL)
            continue;
        while (rc == 0 && (n = readdir(d2)) != NULL) {
            if (visible_dir(tdir, n))
                rc = add_env(ap, &cap, dir, t->d_name, n->d_name);
        }
        closedir(d2);
    }
    closedir(d);
    free(dir);
    return rc;
}

static const char *
find_env(const struct agentp *ap, const struct ing_job_spec *job)
{
    for (size_t i = 0; i < ap->nenvs; i++) {
        if (ing_view_eq(job->environment_type, ap->envs[i].type) &&
            ing_view_eq(job->environment, ap->envs[i].name))
            return ap->envs[i].run;
    }
    return NULL;
}

/* ---- reports ------------------------------------------------------------------------ */

static void
report(struct agentp *ap, const struct ing_job_result *res)
{
    int rc;

    log_msg(LOG_INFO, "Job %.*s ended: %.*s, grade %.2f%s%.*s", (int)res->job_id.len,
            res->job_id.p, (int)res->result_kind.len, res->result_kind.p, res->grade,
            res->result_text.len > 0 ? ": " : "",
            (int)(res->result_text.len > 200 ? 200 : res->result_text.len), res->result_text.p);
    rc = ing_agent_done(ap->agent, res);
    if (rc < 0)
        log_msg(LOG_WARN, "Job %.*s: result not sent: %s", (int)res->job_id.len,
                res->job_id.p, ing_strerror(rc));
}

/* report_simple reports a result the agent makes itself: no output, empty maps. */
static void
report_simple(struct agentp *ap, struct ing_view job_id, const char *kind, const char *text,
              struct ing_view state)
{
    struct ing_job_result res;

    memset(&res, 0, sizeof(res));
    res.job_id = job_id;
    res.result_kind.p = kind;
    res.result_kind.len = (uint32_t)strlen(kind);
    res.result_text.p = text;
    res.result_text.len = (uint32_t)strlen(text);
    res.problems.p = res.tests.p = res.custom.p = "\x80";
    res.problems.len = res.tests.len = res.custom.len = 1;
    res.state = state.p != NULL ? state : (struct ing_view){"", 0};
    res.stdout_.p = res.stderr_.p = "";
    report(ap, &res);
}

/* job_state returns inputdata["@state"] when it is a str, else "". */
static struct ing_view
job_state(const struct ing_job_spec *job)
{
    struct ing_view s = {"", 0};
    const uint8_t *v, *q;
    size_t vl;
    struct ing_mp_obj o;

    if (job->inputdata.p == NULL ||
        ing_mp_map_get((const uint8_t *)job->inputdata.p, job->inputdata.len, "@state", 6, &v,
                       &vl) != 0)
        return s;
    q = v;
    if (ing_mp_read(&q, v + vl, &o) == 0 && o.type == ING_MP_STR) {
        s.p = (const char *)o.v.s.p;
        s.len = o.v.s.len;
    }
    return s;
}

static void
report_runner(struct agentp *ap, struct runner_job *r)
{
    struct ing_job_result res;

    runner_result(r, &res);
    report(ap, &res);
}

/* ---- events ------------------------------------------------------------------------- */

static void
on_job(struct agentp *ap, const struct ing_job_spec *job)
{
    struct runner_job *r;
    int rc;

    if (job->course_id.p != NULL && job->task_id.p != NULL)
        log_msg(LOG_INFO, "Job %.*s: task %.*s/%.*s on %.*s/%.*s", (int)job->job_id.len,
                job->job_id.p, (int)job->course_id.len, job->course_id.p,
                (int)job->task_id.len, job->task_id.p, (int)job->environment_type.len,
                job->environment_type.p, (int)job->environment.len, job->environment.p);
    else
        log_msg(LOG_INFO, "Job %.*s: taskless, on %.*s/%.*s", (int)job->job_id.len,
                job->job_id.p, (int)job->environment_type.len, job->environment_type.p,
                (int)job->environment.len, job->environment.p);
    if (ap->stopping) {
        report_simple(ap, job->job_id, "crash", "The agent is shutting down", job_state(job));
        return;
    }
    if (ap->njobs >= ap->slots) {
        report_simple(ap, job->job_id, "crash", "No free job slot on this agent",
                      job_state(job));
        return;
    }
    rc = runner_start(&ap->ropts, find_env(ap, job), job, clock_ms(), &r);
    if (rc < 0) {
        report_simple(ap, job->job_id, "crash", "An unknown error occurred in the agent",
                      job_state(job));
        return;
    }
    if (runner_done(r)) {
        report_runner(ap, r);
        runner_free(r);
        return;
    }
    log_msg(LOG_DEBUG, "Job %.*s: pid %d", (int)job->job_id.len, job->job_id.p,
            (int)runner_pid(r));
    ap->started[ap->njobs] = false;
    ap->jobs[ap->njobs++] = r;
}

static struct runner_job *
find_job(const struct agentp *ap, struct ing_view job_id)
{
    for (size_t i = 0; i < ap->njobs; i++) {
        size_t len;
        const char *id = runner_job_id(ap->jobs[i], &len);

        if (len == job_id.len && memcmp(id, job_id.p, len) == 0)
            return ap->jobs[i];
    }
    return NULL;
}

/* send_started sends AgentJobStarted for job i once its `run` has started. */
static void
send_started(struct agentp *ap, size_t i)
{
    size_t len;
    const char *id;
    int rc;

    if (ap->started[i] || !runner_started(ap->jobs[i]))
        return;
    ap->started[i] = true;
    id = runner_job_id(ap->jobs[i], &len);
    rc = ing_agent_started(ap->agent, (struct ing_view){id, (uint32_t)len});
    if (rc < 0)
        log_msg(LOG_WARN, "Job %.*s: AgentJobStarted not sent: %s", (int)len, id,
                ing_strerror(rc));
}

static void
drop_jobs(struct agentp *ap)
{
    for (size_t i = 0; i < ap->njobs; i++)
        runner_free(ap->jobs[i]);
    ap->njobs = 0;
}

static void
on_event(struct ing_agent *a, const struct ing_agent_event *ev, void *arg)
{
    struct agentp *ap = arg;
    struct runner_job *r;

    (void)a;
    switch (ev->type) {
    case ING_AGENT_EV_CONNECTED:
        ap->connected = true;
        log_msg(LOG_INFO, "Connected to %s as \"%s\" with %u slots and %zu environments",
                ap->addr, ap->name, ap->slots, ap->nenvs);
        break;
    case ING_AGENT_EV_DISCONNECTED:
        log_msg(LOG_WARN, "Connection to %s lost (%s)%s; reconnecting", ap->addr,
                ing_strerror(ev->err),
                ap->njobs == 0 ? "" : ev->kept ? ", running jobs kept" : ", running jobs killed");
        if (!ev->kept)
            drop_jobs(ap);
        ap->connected = false;
        ap->down_since = clock_ms();
        ap->warned = false;
        break;
    case ING_AGENT_EV_JOB:
        on_job(ap, ev->job);
        break;
    case ING_AGENT_EV_KILL:
        r = find_job(ap, ev->job_id);
        log_msg(LOG_INFO, "Kill of job %.*s%s", (int)ev->job_id.len, ev->job_id.p,
                r != NULL ? "" : " (not running here)");
        if (r != NULL)
            runner_kill(r);
        else
            report_simple(ap, ev->job_id, "killed", "", ev->state);
        break;
    case ING_AGENT_EV_ERROR:
        log_msg(LOG_WARN, "The backend sent an error: %s", ing_agent_last_error(ap->agent));
        break;
    case ING_AGENT_EV_JOBS_VOID:
        if (ap->njobs > 0)
            log_msg(LOG_WARN, "The backend did not take back the %zu running jobs: killed",
                    ap->njobs);
        drop_jobs(ap);
        break;
    }
}

/* ---- the loop ----------------------------------------------------------------------- */

/* process_jobs advances every running job and reports those that are over. */
static void
process_jobs(struct agentp *ap)
{
    uint64_t now = clock_ms();
    size_t i = 0;

    while (i < ap->njobs) {
        struct runner_job *r = ap->jobs[i];

        int done = runner_process(r, now);

        send_started(ap, i);
        if (done == 1) {
            log_msg(LOG_DEBUG, "Job %s: %llu ms of CPU", runner_job_id(r, NULL),
                    (unsigned long long)runner_cpu_ms(r));
            report_runner(ap, r);
            runner_free(r);
            ap->njobs--;
            ap->jobs[i] = ap->jobs[ap->njobs];
            ap->started[i] = ap->started[ap->njobs];
        } else {
            i++;
        }
    }
}

/* reap_orphans reaps the exited children that are not a running job's leader (those are
 * reaped by their runner): processes left behind by jobs, reparented to this subreaper. */
static void
reap_orphans(const struct agentp *ap)
{
    for (;;) {
        siginfo_t si;
        bool leader = false;

        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
            return;
        for (size_t i = 0; i < ap->njobs && !leader; i++)
            leader = runner_pid(ap->jobs[i]) == si.si_pid;
        if (leader)
            return; /* the next process_jobs reaps it; the rest waits for the next round */
        log_msg(LOG_DEBUG, "reaped orphan %d", (int)si.si_pid);
        while (waitpid(si.si_pid, NULL, WNOHANG) < 0 && errno == EINTR)
            ;
    }
}

static int
min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* run_loop serves until SIGTERM/SIGINT and the last reports. Returns 0 or -errno. */
static int
run_loop(struct agentp *ap, int sigfd)
{
    size_t maxfds = 2 + (size_t)ap->slots * RUNNER_MAX_FDS;
    struct pollfd *pfd = calloc(maxfds, sizeof(*pfd));
    uint64_t stop_deadline = 0;
    int rc = 0;

    if (pfd == NULL)
        return -ENOMEM;
    for (;;) {
        nfds_t n = 0;
        int timeout = ing_agent_timeout_ms(ap->agent);
        int afd = ing_agent_fd(ap->agent);
        uint64_t now = clock_ms();

        if (ap->stopping && ap->njobs == 0)
            break;
        if (ap->stopping && now >= stop_deadline) {
            log_msg(LOG_WARN, "%zu jobs did not end in time; leaving them", ap->njobs);
            break;
        }
        pfd[n].fd = sigfd;
        pfd[n++].events = POLLIN;
        if (afd >= 0) {
            pfd[n].fd = afd;
            pfd[n++].events = POLLIN | (ing_agent_want_write(ap->agent) ? POLLOUT : 0);
        }
        for (size_t i = 0; i < ap->njobs; i++) {
            int fds[RUNNER_MAX_FDS];
            int k = runner_fds(ap->jobs[i], fds);

            for (int j = 0; j < k; j++) {
                pfd[n].fd = fds[j];
                pfd[n++].events = POLLIN;
            }
            timeout = min_timeout(timeout, runner_timeout_ms(ap->jobs[i], now));
        }
        if (ap->stopping)
            timeout = min_timeout(timeout, 100);
        if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;

            while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGCHLD || ap->stopping)
                    continue;
                log_msg(LOG_INFO, "Signal %u: stopping; killing %zu running jobs", si.ssi_signo,
                        ap->njobs);
                ap->stopping = true;
                stop_deadline = clock_ms() + STOP_WAIT_MS;
                for (size_t i = 0; i < ap->njobs; i++)
                    runner_kill(ap->jobs[i]);
            }
        }
        process_jobs(ap);
        reap_orphans(ap);
        ing_agent_process(ap->agent, on_event, ap);
        if (!ap->connected && !ap->warned && clock_ms() - ap->down_since >= CONNECT_WARN_MS) {
            log_msg(LOG_WARN, "cannot connect to %s yet; still trying", ap->addr);
            ap->warned = true;
        }
    }
    free(pfd);
    drop_jobs(ap);
    /* Send the last reports. */
    {
        uint64_t end = clock_ms() + FLUSH_MS;

        while (ing_agent_want_write(ap->agent) && ing_agent_fd(ap->agent) >= 0 &&
               clock_ms() < end) {
            struct pollfd p = {.fd = ing_agent_fd(ap->agent), .events = POLLIN | POLLOUT};

            poll(&p, 1, 100);
            ing_agent_process(ap->agent, on_event, ap);
        }
    }
    return rc;
}

enum {
    OPT_WORK_DIR = 256,
    OPT_OUTPUT_LIMIT,
    OPT_NPROC,
    OPT_SECRET_FILE,
    OPT_DISK_LIMIT,
    OPT_NO_SANDBOX,
    OPT_RESUME_TIMEOUT,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option options[] = {
    {"name", required_argument, NULL, 'n'},
    {"concurrency", required_argument, NULL, 'c'},
    {"environments", required_argument, NULL, 'e'},
    {"tasks", required_argument, NULL, 't'},
    {"user", required_argument, NULL, 'u'},
    {"work-dir", required_argument, NULL, OPT_WORK_DIR},
    {"output-limit", required_argument, NULL, OPT_OUTPUT_LIMIT},
    {"nproc", required_argument, NULL, OPT_NPROC},
    {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
    {"disk-limit", required_argument, NULL, OPT_DISK_LIMIT},
    {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
    {"resume-timeout", required_argument, NULL, OPT_RESUME_TIMEOUT},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static _Noreturn void
bad(const char *opt, const char *val)
{
    fprintf(stderr, "inginious-agent-process: bad value for %s: '%s'\n", opt, val);
    usage(stderr);
    exit(2);
}

int
main(int argc, char **argv)
{
    struct agentp ap;
    struct ing_agent_opts ao;
    struct ing_agent_env *aenv = NULL;
    const char *envdir = NULL;
    char host[256], *tasks = NULL, *tasks_abs = NULL;
    const char *secret_file = NULL;
    uint8_t *secret = NULL;
    size_t secret_len = 0;
    unsigned long v;
    long ncpu;
    bool no_sandbox = false;
    uint64_t resume_ms = 60000;
    static struct sandbox_host sbx;
    char name_buf[300], why[512];
    sigset_t set;
    int o, sigfd, rc;

    memset(&ap, 0, sizeof(ap));
    log_set_name("inginious.agent");
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ap.slots = ncpu > 0 ? (uint32_t)(ncpu < MAX_SLOTS ? ncpu : MAX_SLOTS) : 1;
    while ((o = getopt_long(argc, argv, "n:c:e:t:u:vq", options, NULL)) != -1) {
        switch (o) {
        case 'n':
            ap.name = optarg;
            break;
        case 'c':
            if (parse_count(optarg, MAX_SLOTS, &v) != 0 || v == 0)
                bad("--concurrency", optarg);
            ap.slots = (uint32_t)v;
            break;
        case 'e':
            envdir = optarg;
            break;
        case 't':
            tasks = optarg;
            break;
        case 'u':
            ap.ropts.user = optarg;
            break;
        case OPT_WORK_DIR:
            ap.ropts.work_dir = optarg;
            break;
        case OPT_OUTPUT_LIMIT:
            if (parse_size(optarg, &ap.ropts.output_limit) != 0 || ap.ropts.output_limit == 0)
                bad("--output-limit", optarg);
            break;
        case OPT_NPROC:
            if (parse_count(optarg, 1000000, &v) != 0)
                bad("--nproc", optarg);
            ap.ropts.nproc = v;
            break;
        case OPT_SECRET_FILE:
            secret_file = optarg;
            break;
        case OPT_DISK_LIMIT:
            if (opt_parse(OPT_KIND_SIZE, optarg, 65536, (uint64_t)1 << 40,
                          &ap.ropts.disk_limit) != 0)
                bad("--disk-limit", optarg);
            break;
        case OPT_NO_SANDBOX:
            no_sandbox = true;
            break;
        case OPT_RESUME_TIMEOUT:
            if (opt_parse(OPT_KIND_DURATION, optarg, 0, OPT_DURATION_MAX_MS, &resume_ms) != 0)
                bad("--resume-timeout", optarg);
            break;
        case 'v':
            log_level_max = LOG_DEBUG;
            break;
        case 'q':
            log_level_max = LOG_WARN;
            break;
        case OPT_HELP:
            usage(stdout);
            exit(0);
        case OPT_VERSION:
            printf("inginious-agent-process %s\n", ING_VERSION);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (argc - optind > 1) {
        usage(stderr);
        exit(2);
    }
    ap.addr = optind < argc ? argv[optind] : DEFAULT_ADDR;
    if (ap.name == NULL) {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "agent");
        host[sizeof(host) - 1] = '\0';
        ap.name = host;
    }
    if (tasks != NULL) {
        tasks_abs = realpath(tasks, NULL);
        ap.ropts.tasks_dir = tasks_abs;
        if (tasks_abs == NULL) {
            fprintf(stderr, "inginious-agent-process: --tasks %s: %s\n", tasks, strerror(errno));
            exit(1);
        }
    }
    if (secret_file != NULL) {
        rc = auth_load_secret(secret_file, &secret, &secret_len);
        if (rc != 0) {
            fprintf(stderr, "inginious-agent-process: --secret-file: cannot read %s: %s\n",
                    secret_file, rc == -EINVAL ? "empty" : strerror(-rc));
            exit(2);
        }
    }
    if (no_sandbox) {
        log_msg(LOG_WARN, "--no-sandbox: jobs run with rlimits and --user only, without "
                          "namespaces, cgroups or seccomp; do not grade hostile code");
        snprintf(name_buf, sizeof(name_buf), "%s (no sandbox)", ap.name);
        ap.name = name_buf;
    } else {
        rc = sandbox_probe(&sbx, why, sizeof(why));
        if (rc < 0) {
            fprintf(stderr,
                    "inginious-agent-process: cannot sandbox jobs here: %s\n"
                    "(--no-sandbox runs them without a sandbox, for trusted graders only)\n",
                    why);
            exit(1);
        }
        sandbox_describe(&sbx, why, sizeof(why));
        log_msg(LOG_INFO, "Sandbox: namespaces, pivot_root, seccomp, %s", why);
        ap.ropts.sandbox = &sbx;
        /* The jobs' tmpfs mounts live in a mount namespace of the agent's own (the host's
         * mounts still reach it): the host never sees them, and they go with the agent. */
        if (unshare(CLONE_NEWNS) < 0 ||
            mount("none", "/", "none", MS_REC | MS_SLAVE, NULL) < 0)
            log_msg(LOG_WARN, "no private mount namespace for the jobs' folders (%s): their "
                              "tmpfs mounts are visible on the host while jobs run",
                    strerror(errno));
    }
    if (ap.ropts.user != NULL && geteuid() != 0)
        log_msg(LOG_WARN, "not running as root: --user %s is ignored", ap.ropts.user);
    if (envdir != NULL) {
        rc = scan_envs(&ap, envdir);
        if (rc < 0) {
            fprintf(stderr, "inginious-agent-process: --environments %s: %s\n", envdir,
                    ing_strerror(rc));
            exit(1);
        }
    }
    if (ap.nenvs == 0)
        log_msg(LOG_WARN, "no environment found: this agent will get no job");

    memset(&ao, 0, sizeof(ao));
    if (ap.nenvs > 0) {
        aenv = calloc(ap.nenvs, sizeof(*aenv));
        if (aenv == NULL) {
            fprintf(stderr, "inginious-agent-process: out of memory\n");
            exit(1);
        }
    }
    for (size_t i = 0; i < ap.nenvs; i++) {
        aenv[i].type = ap.envs[i].type;
        aenv[i].name = ap.envs[i].name;
        aenv[i].id = ap.envs[i].id;
        aenv[i].created = ap.envs[i].created;
        aenv[i].advertised = ap.envs[i].advertised;
    }
    ao.addr = ap.addr;
    ao.name = ap.name;
    ao.slots = ap.slots;
    ao.envs = aenv;
    ao.nenvs = ap.nenvs;
    ao.reconnect = true;
    ao.size = sizeof(ao);
    ao.resume = resume_ms > 0;
    ao.resume_timeout_ms = (int)resume_ms;
    ao.secret = secret;
    ao.secret_len = secret_len;
    ap.agent = ing_agent_new(&ao);
    free(aenv);
    if (secret != NULL) { /* ing_agent_new keeps its own copy */
        explicit_bzero(secret, secret_len);
        free(secret);
    }
    if (ap.agent == NULL) {
        fprintf(stderr, "inginious-agent-process: cannot set up the agent for %s: %s\n",
                ap.addr, strerror(errno));
        exit(1);
    }
    ap.jobs = calloc(ap.slots, sizeof(*ap.jobs));
    ap.started = calloc(ap.slots, sizeof(*ap.started));
    if (ap.jobs == NULL || ap.started == NULL) {
        fprintf(stderr, "inginious-agent-process: out of memory\n");
        exit(1);
    }

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0) {
        fprintf(stderr, "inginious-agent-process: signalfd: %s\n", strerror(errno));
        exit(1);
    }
    log_msg(LOG_INFO, "inginious-agent-process %s: \"%s\", %u slots, backend %s", ING_VERSION,
            ap.name, ap.slots, ap.addr);

    ap.down_since = clock_ms();
    rc = run_loop(&ap, sigfd);

    close(sigfd);
    ing_agent_free(ap.agent);
    free(ap.jobs);
    free(ap.started);
    for (size_t i = 0; i < ap.nenvs; i++) {
        free(ap.envs[i].type);
        free(ap.envs[i].name);
        free(ap.envs[i].run);
    }
    free(ap.envs);
    free(tasks_abs);
    if (rc < 0) {
        log_msg(LOG_ERR, "stopped: %s", ing_strerror(rc));
        return 1;
    }
    log_msg(LOG_INFO, "stopped");
    return 0;
}
