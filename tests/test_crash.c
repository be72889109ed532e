/* SPDX-License-Identifier: MIT */
/* test_crash.c: the backend itself is kill -9-ed at random moments under load and started
 * again on its journal (issue 16: --fsync always and interval), with native agents of the
 * library that survive the restart (opts.resume, proto.md 7.10), one native client using
 * a resumable session (opts.session with reconnect, 7.9) and one using acknowledged
 * submissions only (7.8).
 *
 * Invariants, checked at the end (and a job running twice at once):
 * - every acknowledged job runs on an agent exactly once and its result is given exactly
 *   once: no agent is really lost, so none runs twice (an unacknowledged one runs at most
 *   once), except the jobs the backend logs as not claimed within the resume grace (an
 *   agent back too late on a loaded machine counts as lost, proto.md 7.10): those may run
 *   twice, be refused as claims and end crash "Agent restarted", are counted and printed,
 *   and every other job is held to the rules; the agents' results are sent again until the backend confirmed them (Ping/Pong),
 *   and a result reaches its client at most once. The plain client's jobs restored from
 *   the journal have no owner: their results are checked on the agents' side (reported
 *   once, accepted: the backend holds no job at the end);
 * - every job of the session, acknowledged or not, reaches it exactly once as a success
 *   result (kept while the session was away, or relayed), never as a lost one, and runs
 *   exactly once: the library resumes the session after each restart and submits again
 *   what the backend never got; a result is kept (journaled) until the library
 *   acknowledged it (ClientSessionAck, proto.md 7.9), so one that died in the backend's
 *   socket at the kill is sent again, not run again; one sent again after the library
 *   read it is dropped by the library;
 * - no claim is refused (no BackendKillJob) and the jobs are never void on the agents;
 * - at least one restart found running jobs in the journal and they were claimed back;
 * - the backend's RSS and the journal directory stay bounded.
 *
 * CI runs each mode for a short fixed time from a fixed seed (printed); ING_CRASH_SECONDS
 * runs it longer, ING_CRASH_SEED picks another seed. Waits are polls with deadlines
 * (ING_SLOW scales them for valgrind). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inginious/agent.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "support/libtest.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

#define DEFAULT_SEED 20261207ull
#define DEFAULT_SECONDS 1
#define NAGENTS 3
#define SLOTS 4
#define NCLIENTS 2
#define WINDOW 48            /* jobs submitted and not yet run, at most */
#define MAXJOBS (1u << 20)   /* per run (a longer run stops submitting there) */
#define RSS_MAX_KB (96 * 1024)
#define JOURNAL_MAX_BYTES (4u << 20)

struct jrec {
    uint16_t runs;    /* BackendNewJob received by an agent */
    uint16_t done;    /* results reported by an agent */
    uint16_t results; /* BackendJobDone (not lost) received by the client */
    uint16_t kills;   /* BackendKillJob received by an agent (a refused claim) */
    bool acked;
    bool submitted;
    bool sess;      /* submitted by the session's client (k->cl[0]) */
    bool not_ok;    /* its session got a result other than success */
    bool lost_rep;  /* reported lost to its session */
    bool excused;   /* the backend logged it not claimed within the resume grace */
};

struct run_job {
    uint32_t idx;
    uint64_t end_ms;
};

struct cagent {
    struct ing_agent *a;
    struct run_job run[SLOTS * 2];
    size_t nrun;
};

struct crash {
    struct lt_world *w;
    uint64_t rng;
    struct jrec *jobs;
    uint32_t njobs; /* submitted so far */
    struct cagent ag[NAGENTS];
    struct ing_client *cl[NCLIENTS];
    uint64_t kills_seen, voids, overlaps, queue_n;
    uint64_t acks;    /* acknowledgements received (all runs) */
    uint64_t resumes; /* ING_CLIENT_EV_RESUMED of the session's client */
    uint64_t kept;    /* session results read in a resumption (kept by the backend) */
    bool resuming;    /* the session's client is between CONNECTED and RESUMED */
    bool resumed_run; /* the session's client resumed on this run of the backend */
    bool queue_seen;
    char fail[256];
};

static uint64_t
rnd(struct crash *k)
{
    uint64_t x = k->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    k->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t
rnd_in(struct crash *k, uint64_t lo, uint64_t hi)
{
    return lo + rnd(k) % (hi - lo + 1);
}

/* job_idx reads the index of job id "j<N>", or UINT32_MAX. */
static uint32_t
job_idx(struct ing_view id)
{
    char buf[32];
    if (id.len < 2 || id.len >= sizeof(buf) || id.p[0] != 'j')
        return UINT32_MAX;
    memcpy(buf, id.p + 1, id.len - 1);
    buf[id.len - 1] = '\0';
    char *end;
    unsigned long v = strtoul(buf, &end, 10);
    return *end == '\0' && v < MAXJOBS ? (uint32_t)v : UINT32_MAX;
}

/* note_fail keeps the first violation seen in a callback (reported after the loop). */
static void
note_fail(struct crash *k, const char *what, uint32_t idx)
{
    if (k->fail[0] == '\0')
        snprintf(k->fail, sizeof(k->fail), "job j%u: %s", idx, what);
}

static void
on_agent(struct ing_agent *a, const struct ing_agent_event *ev, void *arg)
{
    struct crash *k = arg;
    struct cagent *g = NULL;
    for (size_t i = 0; i < NAGENTS; i++)
        if (k->ag[i].a == a)
            g = &k->ag[i];
    uint32_t idx = job_idx(ev->job_id);
    switch (ev->type) {
    case ING_AGENT_EV_JOB:
        if (idx == UINT32_MAX || g->nrun == sizeof(g->run) / sizeof(g->run[0])) {
            note_fail(k, "sent to an agent with no room, or a bad id", idx);
            return;
        }
        k->jobs[idx].runs++; /* twice: checked at the end (excused if its agent was lost) */
        if (g->nrun >= SLOTS)
            k->overlaps++; /* more jobs than slots at once */
        g->run[g->nrun].idx = idx;
        g->run[g->nrun++].end_ms = lt_now_ms() + rnd_in(k, 2, 40);
        (void)ing_agent_started(a, ev->job_id);
        break;
    case ING_AGENT_EV_KILL:
        k->kills_seen++; /* a refused claim (no kill is asked): checked at the end */
        if (idx != UINT32_MAX) {
            k->jobs[idx].kills++;
            for (size_t r = 0; r < g->nrun; r++) /* it stops the job, reports nothing */
                if (g->run[r].idx == idx) {
                    g->run[r] = g->run[--g->nrun];
                    k->jobs[idx].done++; /* (ended: counted as its report) */
                    break;
                }
        }
        break;
    case ING_AGENT_EV_JOBS_VOID:
        k->voids++;
        g->nrun = 0;
        break;
    default:
        break;
    }
}

static void
on_client(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct crash *k = arg;
    bool sc = c == k->cl[0];
    uint32_t idx = job_idx(ev->job_id);
    if (idx != UINT32_MAX && k->jobs[idx].sess != sc && ev->type != ING_CLIENT_EV_QUEUE)
        note_fail(k, "an event on the other client", idx);
    switch (ev->type) {
    case ING_CLIENT_EV_CONNECTED:
        k->resuming = k->resuming || sc;
        break;
    case ING_CLIENT_EV_RESUMED:
        k->resumes++;
        k->resuming = false;
        k->resumed_run = true;
        break;
    case ING_CLIENT_EV_DISCONNECTED:
        k->resumed_run = k->resumed_run && !sc;
        break;
    case ING_CLIENT_EV_ACCEPTED:
        if (idx != UINT32_MAX)
            k->jobs[idx].acked = true;
        k->acks++;
        break;
    case ING_CLIENT_EV_DONE:
        if (idx != UINT32_MAX && !ev->lost && ++k->jobs[idx].results > 1)
            note_fail(k, "two results reached its client", idx);
        if (idx != UINT32_MAX && sc && ev->lost)
            k->jobs[idx].lost_rep = true;
        else if (idx != UINT32_MAX && sc && (ev->result == NULL ||
                                             ev->result->result_kind.len != 7 ||
                                             memcmp(ev->result->result_kind.p, "success", 7) != 0))
            k->jobs[idx].not_ok = true; /* checked at the end (crash "Agent restarted") */
        k->kept += sc && k->resuming;
        break;
    case ING_CLIENT_EV_QUEUE:
        k->queue_seen = true;
        k->queue_n = ev->queue->n_running + ev->queue->n_waiting;
        break;
    default:
        break;
    }
}

/* finish_jobs reports the jobs whose time has come. */
static void
finish_jobs(struct crash *k)
{
    uint64_t now = lt_now_ms();
    for (size_t i = 0; i < NAGENTS; i++) {
        struct cagent *g = &k->ag[i];
        for (size_t r = 0; r < g->nrun;) {
            if (g->run[r].end_ms > now) {
                r++;
                continue;
            }
            char id[32];
            snprintf(id, sizeof(id), "j%u", g->run[r].idx);
            struct ing_job_result res = {0};
            res.job_id = (struct ing_view){id, (uint32_t)strlen(id)};
            res.result_kind = (struct ing_view){"success", 7};
            res.result_text = (struct ing_view){"ok", 2};
            res.grade = 100.0;
            res.problems = res.tests = res.custom = (struct ing_view){"\x80", 1};
            res.state = (struct ing_view){"", 0};
            res.stdout_ = res.stderr_ = (struct ing_view){"", 0};
            int rc = ing_agent_done(g->a, &res);
            if (rc != 0)
                lt_fail("ing_agent_done %s: %s", id, ing_strerror(rc));
            k->jobs[g->run[r].idx].done++;
            g->run[r] = g->run[--g->nrun];
        }
    }
}

/* submit_some keeps up to WINDOW jobs submitted and not yet run. */
static void
submit_some(struct crash *k)
{
    static const uint8_t empty[1] = {0x80};
    uint64_t ran = 0;
    for (uint32_t i = 0; i < k->njobs; i++)
        ran += k->jobs[i].done > 0;
    for (uint64_t inflight = k->njobs - ran; inflight < WINDOW && k->njobs < MAXJOBS;
         inflight++) {
        size_t ci = rnd(k) % NCLIENTS;
        struct ing_client *c = k->cl[ci];
        if (!ing_client_is_connected(c))
            return;
        char id[32];
        snprintf(id, sizeof(id), "j%u", k->njobs);
        struct ing_client_job j = {.job_id = id,
                                   .environment_type = "docker",
                                   .environment = "default",
                                   .launcher = "crash"};
        j.inputdata = j.task_problems = j.environment_parameters =
            (struct ing_view){(const char *)empty, 1};
        if (ing_client_submit(c, &j) != 0)
            return;
        k->jobs[k->njobs].sess = ci == 0;
        k->jobs[k->njobs++].submitted = true;
    }
}

/* spin polls every peer once, up to ms, and handles what came. */
static void
spin(struct crash *k, int ms)
{
    struct pollfd p[NAGENTS + NCLIENTS];
    int timeout = ms;
    for (size_t i = 0; i < NAGENTS; i++) {
        int t = ing_agent_timeout_ms(k->ag[i].a);
        timeout = t >= 0 && t < timeout ? t : timeout;
        p[i].fd = ing_agent_fd(k->ag[i].a);
        p[i].events = POLLIN | (ing_agent_want_write(k->ag[i].a) ? POLLOUT : 0);
        for (size_t r = 0; r < k->ag[i].nrun; r++) {
            int64_t left = (int64_t)k->ag[i].run[r].end_ms - (int64_t)lt_now_ms();
            timeout = left < timeout ? (left > 0 ? (int)left : 0) : timeout;
        }
    }
    for (size_t i = 0; i < NCLIENTS; i++) {
        int t = ing_client_timeout_ms(k->cl[i]);
        timeout = t >= 0 && t < timeout ? t : timeout;
        p[NAGENTS + i].fd = ing_client_fd(k->cl[i]);
        p[NAGENTS + i].events = POLLIN | (ing_client_want_write(k->cl[i]) ? POLLOUT : 0);
    }
    (void)poll(p, NAGENTS + NCLIENTS, timeout); /* fd -1 entries are ignored */
    for (size_t i = 0; i < NAGENTS; i++)
        (void)ing_agent_process(k->ag[i].a, on_agent, k);
    for (size_t i = 0; i < NCLIENTS; i++)
        (void)ing_client_process(k->cl[i], on_client, k);
    finish_jobs(k);
}

static bool
any_acked(const struct crash *k)
{
    for (uint32_t i = 0; i < k->njobs; i++)
        if (k->jobs[i].acked)
            return true;
    return false;
}

static long
rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static uint64_t
dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t n = 0;
    char path[LT_STR * 4];
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(path, &st) == 0)
            n += (uint64_t)st.st_size;
    }
    closedir(d);
    return n;
}

/* excuse marks the jobs the backend's log (every run's, appended) names as not claimed
 * within the resume grace: their agent counts as lost (proto.md 7.10, 7.5), so they may run
 * twice (requeued while the agent still had them), be refused as claims and end crash
 * "Agent restarted". Returns how many. */
static uint64_t
excuse(struct crash *k, const char *log_path)
{
    static const char tag[] = " not claimed within the resume grace";
    FILE *f = fopen(log_path, "r");
    char line[512];
    uint64_t n = 0;
    if (f == NULL)
        lt_fail("%s: cannot read the backend's log", log_path);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *t = strstr(line, tag), *j = strstr(line, " - job j");
        if (t == NULL || j == NULL || j > t)
            continue;
        uint32_t idx = job_idx((struct ing_view){j + 7, (uint32_t)(t - (j + 7))});
        if (idx != UINT32_MAX && idx < k->njobs && !k->jobs[idx].excused) {
            k->jobs[idx].excused = true;
            n++;
        }
    }
    fclose(f);
    return n;
}

static void
crash_run(struct lt_world *w, const char *fsync_mode)
{
    static struct crash k;
    char jdir[LT_STR + 16], grace[32];
    const char *env_seed = getenv("ING_CRASH_SEED"), *env_secs = getenv("ING_CRASH_SECONDS");
    uint64_t seed = env_seed != NULL && *env_seed ? strtoull(env_seed, NULL, 10) : DEFAULT_SEED;
    uint64_t secs = env_secs != NULL && *env_secs ? strtoull(env_secs, NULL, 10) : DEFAULT_SECONDS;

    memset(&k, 0, sizeof(k));
    k.w = w;
    k.rng = seed * 2 + 1;
    k.jobs = calloc(MAXJOBS, sizeof(*k.jobs));
    assert_non_null(k.jobs);
    print_message("crash test: --fsync %s, seed %llu (ING_CRASH_SEED), %llu s "
                  "(ING_CRASH_SECONDS)\n",
                  fsync_mode, (unsigned long long)seed, (unsigned long long)secs);
    snprintf(jdir, sizeof(jdir), "%s/journal", lt_dir(w));
    /* The agents come back within milliseconds; on a loaded machine (ASan, valgrind) a
     * backend may not accept them for seconds: a grace that ends first loses jobs (7.5),
     * which the checks excuse (excuse()). The grace costs no wait: the held jobs an agent
     * back does not claim are lost at once (7.10). */
    snprintf(grace, sizeof(grace), "%dms", 2000 * lt_slow());
    lt_start(w, NULL, NULL, "--journal", jdir, "--fsync", fsync_mode, "--journal-segment-size",
             "64K", "--resume-grace", grace, NULL);
    for (size_t i = 0; i < NAGENTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "crash-%zu", i);
        struct ing_agent_env env = {"docker", "default", "i1", 1, true};
        struct ing_agent_opts o = {.size = sizeof(o),
                                   .addr = w->agent_addr,
                                   .name = name,
                                   .slots = SLOTS,
                                   .envs = &env,
                                   .nenvs = 1,
                                   .reconnect = true,
                                   .backoff_min_ms = 5,
                                   .backoff_max_ms = 100,
                                   .resume = true,
                                   .resume_timeout_ms = 60000};
        k.ag[i].a = ing_agent_new(&o);
        assert_non_null(k.ag[i].a);
        (void)ing_agent_connect(k.ag[i].a);
    }
    for (size_t i = 0; i < NCLIENTS; i++) {
        struct ing_client_opts o = {.size = sizeof(o),
                                    .addr = w->client_addr,
                                    .name = "crash",
                                    .reconnect = true,
                                    .backoff_min_ms = 5,
                                    .backoff_max_ms = 100,
                                    .acks = true,
                                    .session = i == 0};
        k.cl[i] = ing_client_new(&o);
        assert_non_null(k.cl[i]);
        (void)ing_client_connect(k.cl[i]);
    }

    /* Load, with a kill -9 and a restart at random moments. */
    /* Under valgrind a restart takes long: the run goes on (up to 3 x ING_SLOW as long)
     * until it has seen 3 restarts and acknowledgements. */
    uint64_t t0 = lt_now_ms(), end = t0 + secs * 1000, restarts = 0;
    uint64_t hard_end = t0 + secs * 1000 + 3 * (uint64_t)LT_DEADLINE_MS;
    long rss_max = 0;
    while ((lt_now_ms() < end || restarts < 3 || !any_acked(&k)) && lt_now_ms() < hard_end &&
           k.fail[0] == '\0') {
        /* Load for a random while, and at least until this run of the backend has
         * acknowledged a job and resumed the session (a slow one, under valgrind, takes long
         * to serve anyone). */
        uint64_t until = lt_now_ms() + rnd_in(&k, 50, 400), acks0 = k.acks;
        uint64_t give_up = lt_now_ms() + LT_DEADLINE_MS;
        while ((lt_now_ms() < until || k.acks == acks0 || !k.resumed_run) &&
               lt_now_ms() < give_up && k.fail[0] == '\0') {
            submit_some(&k);
            spin(&k, 20);
        }
        long kb = rss_kb(w->be_pid);
        rss_max = kb > rss_max ? kb : rss_max;
        lt_kill_backend(w, SIGKILL);
        restarts++;
        k.resumed_run = false;
        /* Sometimes the backend stays away a while: results end meanwhile, kept. */
        uint64_t away = lt_now_ms() + (rnd(&k) % 3 == 0 ? rnd_in(&k, 10, 150) : 0);
        while (lt_now_ms() < away)
            spin(&k, 10);
        lt_restart(w);
    }
    if (k.fail[0] != '\0')
        lt_fail("seed %llu: %s", (unsigned long long)seed, k.fail);

    /* Drain: every job journaled runs; then the backend holds none. */
    uint64_t deadline = lt_now_ms() + (uint64_t)LT_DEADLINE_MS + 2000u * (uint64_t)lt_slow();
    uint64_t next_q = 0;
    for (;;) {
        if (lt_now_ms() > deadline)
            lt_fail("seed %llu: the backend still holds %llu jobs after the drain",
                    (unsigned long long)seed, (unsigned long long)k.queue_n);
        spin(&k, 20);
        bool idle = ing_client_pending(k.cl[0]) == 0; /* every session job has its result */
        for (size_t i = 0; i < NAGENTS; i++)
            idle &= k.ag[i].nrun == 0;
        if (idle && k.queue_seen && k.queue_n == 0)
            break;
        if (lt_now_ms() >= next_q && ing_client_is_connected(k.cl[0])) {
            k.queue_seen = false;
            (void)ing_client_get_queue(k.cl[0]);
            next_q = lt_now_ms() + 50;
        }
    }
    for (int i = 0; i < 10; i++) /* the last confirmations (Pong) */
        spin(&k, 10);

    if (k.fail[0] != '\0')
        lt_fail("seed %llu: %s", (unsigned long long)seed, k.fail);
    uint64_t acked = 0, ran = 0, sess_jobs = 0, excused = excuse(&k, w->log_path);
    uint64_t kills_excused = 0;
    for (uint32_t i = 0; i < k.njobs; i++) {
        const struct jrec *j = &k.jobs[i];
        unsigned runs = j->runs;
        if (j->excused) { /* its agent was lost: twice at most, one result, never lost */
            if (runs > 2 || j->results > 1 || j->lost_rep || (j->sess && j->results != 1))
                lt_fail("seed %llu: job j%u (its agent lost) ran %u times, %u results to its "
                        "client%s",
                        (unsigned long long)seed, i, runs, j->results,
                        j->lost_rep ? ", reported lost" : "");
            kills_excused += j->kills;
            acked += j->acked;
            ran += runs;
            sess_jobs += j->sess;
            continue;
        }
        if (j->lost_rep || j->not_ok || j->kills != 0)
            lt_fail("seed %llu: job j%u: %s", (unsigned long long)seed, i,
                    j->lost_rep ? "reported lost to its session"
                    : j->not_ok ? "its session got a result other than success"
                                : "its claim was refused (BackendKillJob)");
        if (runs > 1 || j->done != j->runs || j->results > 1)
            lt_fail("seed %llu: job j%u ran %u times, %u results, %u to its client",
                    (unsigned long long)seed, i, j->runs, j->done, j->results);
        if (j->acked && runs != 1)
            lt_fail("seed %llu: acknowledged job j%u ran %u times (%u results)",
                    (unsigned long long)seed, i, j->runs, j->done);
        if (j->sess && (j->results != 1 || j->runs == 0))
            lt_fail("seed %llu: session job j%u (%s): %u results reached the session, ran %u "
                    "times",
                    (unsigned long long)seed, i, j->acked ? "acknowledged" : "not acknowledged",
                    j->results, j->runs);
        acked += j->acked;
        ran += j->runs;
        sess_jobs += j->sess;
    }
    long kb = rss_kb(w->be_pid);
    rss_max = kb > rss_max ? kb : rss_max;
    uint64_t jbytes = dir_bytes(jdir);
    print_message("crash test: %llu restarts, %u jobs submitted, %llu acknowledged, %llu run, "
                  "%llu not claimed within the grace (excused); "
                  "session: %llu jobs, %llu resumptions, %llu results kept, %llu read twice (dropped); "
                  "backend RSS at most %ld KiB, journal %llu bytes at the end\n",
                  (unsigned long long)restarts, k.njobs, (unsigned long long)acked,
                  (unsigned long long)ran, (unsigned long long)excused,
                  (unsigned long long)sess_jobs,
                  (unsigned long long)k.resumes, (unsigned long long)k.kept,
                  (unsigned long long)ing_client_duplicates(k.cl[0]),
                  rss_max, (unsigned long long)jbytes);
    if (k.kills_seen != kills_excused || k.voids != 0 || k.overlaps != 0)
        lt_fail("seed %llu: %llu kills (refused claims; %llu of jobs excused), %llu voids, "
                "%llu slot overruns",
                (unsigned long long)seed, (unsigned long long)k.kills_seen,
                (unsigned long long)kills_excused,
                (unsigned long long)k.voids, (unsigned long long)k.overlaps);
    if (restarts < 2 || acked == 0 || sess_jobs == 0 || k.resumes < restarts)
        lt_fail("seed %llu: too little happened: %llu restarts, %llu acknowledged, %llu session "
                "jobs, %llu resumptions",
                (unsigned long long)seed, (unsigned long long)restarts,
                (unsigned long long)acked, (unsigned long long)sess_jobs,
                (unsigned long long)k.resumes);
    if (!lt_log_contains(w, "running jobs wait") || !lt_log_contains(w, "claimed"))
        lt_fail("no restart found running jobs to hold, or none was claimed back");
    /* (A job whose dispatched record was written but whose BackendNewJob died with the
     * backend is not claimed: its agent never had it. It is lost when the agent is back
     * (7.10), requeued, and runs once: the counts above see it; a claim refused would show
     * as a kill.) */
    if (rss_max > RSS_MAX_KB * lt_slow() || jbytes > JOURNAL_MAX_BYTES)
        lt_fail("unbounded: RSS %ld KiB, journal %llu bytes", rss_max,
                (unsigned long long)jbytes);
    for (size_t i = 0; i < NAGENTS; i++)
        ing_agent_free(k.ag[i].a);
    for (size_t i = 0; i < NCLIENTS; i++)
        ing_client_free(k.cl[i]);
    free(k.jobs);
    lt_pass(w);
}

static void
test_crash_fsync_always(void **state)
{
    crash_run(*state, "always");
}

static void
test_crash_fsync_interval(void **state)
{
    crash_run(*state, "interval 10ms");
}


/* count_in counts needle in the file at path (0 when it cannot be read). */
static int
count_in(const char *path, const char *needle)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    int k = 0;
    for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        k++;
    return k;
}

/* wait_for spins w until the file at path (the backend's log when NULL) holds needle. */
static void
wait_for(struct lt_world *w, const char *path, const char *needle)
{
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    while (path != NULL ? count_in(path, needle) == 0 : !lt_log_contains(w, needle)) {
        if (lt_now_ms() > end)
            lt_fail("never seen in %s: \"%s\"", path != NULL ? path : "the backend's log",
                    needle);
        lt_spin(w, 10);
    }
}

/* inginious-agent-process keeps a running job across a kill -9 of the backend and gives it
 * back to the restarted one: the job runs once and its result is accepted. */
static void
test_crash_agent_process_keeps_job(void **state)
{
    struct lt_world *w = *state;
    char jdir[LT_STR + 16], envs[LT_STR + 16], flag[LT_STR + 16];
    char alog[LT_STR + 16], script[LT_STR * 2 + 64], grace[32];

    snprintf(jdir, sizeof(jdir), "%s/journal", lt_dir(w));
    snprintf(flag, sizeof(flag), "%s/go", lt_dir(w));
    snprintf(alog, sizeof(alog), "%s/agent.log", lt_dir(w));
    snprintf(script, sizeof(script),
             "#!/bin/sh\nwhile [ ! -f '%s' ]; do sleep 0.02; done\n"
             "echo '{\"result\": \"success\", \"text\": \"kept\"}' > feedback.json\n",
             flag);
    snprintf(envs, sizeof(envs), "%s", lt_process_env(w, script));
    snprintf(grace, sizeof(grace), "%dms", 5000 * lt_slow());
    lt_start(w, NULL, NULL, "--journal", jdir, "--fsync", "always", "--resume-grace", grace,
             NULL);

    char prog[LT_STR + 64];
    snprintf(prog, sizeof(prog), "%s/inginious-agent-process", lt_build());
    char *argv[] = {prog, "--no-sandbox", "--environments", envs, "--name", "ap",
                    w->agent_addr, NULL};
    pid_t ap = lt_spawn(argv, alog);
    wait_for(w, NULL, "agent ap (no sandbox) registered");
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    struct ing_client_job j = {.job_id = "p1",
                               .environment_type = "process",
                               .environment = "default",
                               .launcher = "crash"};
    j.inputdata = j.task_problems = j.environment_parameters = (struct ing_view){"\x80", 1};
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "p1");

    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    wait_for(w, NULL, "journal: 1 running jobs wait");
    wait_for(w, NULL, "agent ap (no sandbox) claimed 1 jobs back (0 refused)");
    close(open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    wait_for(w, NULL, "job p1 done on agent ap (no sandbox)");
    wait_for(w, alog, "Job p1 ended: success");

    int st = lt_stop_pid(w, ap);
    if (count_in(alog, "Job p1: taskless") != 1 || count_in(alog, "running jobs kept") != 1 ||
        count_in(alog, "Job p1 ended") != 1)
        lt_fail("the job ran %d times, was kept %d times, ended %d times",
                count_in(alog, "Job p1: taskless"), count_in(alog, "running jobs kept"),
                count_in(alog, "Job p1 ended"));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_crash_fsync_always),
        CASE(test_crash_fsync_interval),
        CASE(test_crash_agent_process_keeps_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
