/* SPDX-License-Identifier: MIT */
/* metrics.c: see metrics.h. */
#include "metrics.h"

#include "inginious/proto.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const uint64_t metrics_bucket_us[METRICS_NBUCKETS] = {
    10,      100,      1000,     10000,    50000,     100000,    250000,     500000,
    1000000, 2500000,  5000000,  10000000, 30000000,  60000000,  300000000,  3600000000,
};

const char *const metrics_refuse_name[METRICS_NREFUSE] = {
    "invalid", "duplicate_id", "shutting_down", "queue_full", "out_of_memory", "journal",
};
const char *const metrics_result_name[METRICS_NRESULT] = {
    "success", "failed", "timeout", "overflow", "killed", "crash", "error",
};
const char *const metrics_kill_name[METRICS_NKILL] = {
    "waiting", "agent", "timeout", "agent_lost", "unknown_job",
};

/* On the hot path (every job's end): the first byte names the one candidate, compared with
 * a constant length (inlined by the compiler), instead of a scan of the names whose exit
 * depends on the kind. */
#define KIND_IS(lit) (n == sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)
enum metrics_result
metrics_result_kind(const char *s, size_t n)
{
    switch (n == 0 ? 0 : s[0]) {
    case 's':
        return KIND_IS("success") ? METRICS_RES_SUCCESS : METRICS_RES_ERROR;
    case 'f':
        return KIND_IS("failed") ? METRICS_RES_FAILED : METRICS_RES_ERROR;
    case 't':
        return KIND_IS("timeout") ? METRICS_RES_TIMEOUT : METRICS_RES_ERROR;
    case 'o':
        return KIND_IS("overflow") ? METRICS_RES_OVERFLOW : METRICS_RES_ERROR;
    case 'k':
        return KIND_IS("killed") ? METRICS_RES_KILLED : METRICS_RES_ERROR;
    case 'c':
        return KIND_IS("crash") ? METRICS_RES_CRASH : METRICS_RES_ERROR;
    default: /* "error" and every unknown kind */
        return METRICS_RES_ERROR;
    }
}
#undef KIND_IS

__attribute__((format(printf, 2, 3))) static int
put(struct buf *out, const char *fmt, ...)
{
    va_list ap;
    size_t room = buf_room(out);
    va_start(ap, fmt);
    int n = vsnprintf((char *)buf_tail(out), room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= room) {
        if (buf_reserve(out, (size_t)n + 1) < 0)
            return -ENOMEM;
        va_start(ap, fmt);
        vsnprintf((char *)buf_tail(out), buf_room(out), fmt, ap);
        va_end(ap);
    }
    buf_produce(out, (size_t)n);
    return 0;
}

int
metrics_label_escape(struct buf *out, const char *v, size_t n)
{
    if (buf_reserve(out, 2 * n) < 0)
        return -ENOMEM;
    uint8_t *t = buf_tail(out), *t0 = t;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') {
            *t++ = '\\';
            *t++ = (uint8_t)c;
        } else if (c == '\n') {
            *t++ = '\\';
            *t++ = 'n';
        } else {
            *t++ = (uint8_t)c;
        }
    }
    buf_produce(out, (size_t)(t - t0));
    return 0;
}

static int
family(struct buf *out, const char *name, const char *type, const char *help)
{
    return put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int
scalar(struct buf *out, const char *name, const char *type, const char *help, uint64_t v)
{
    int rc = family(out, name, type, help);
    return rc < 0 ? rc : put(out, "%s %llu\n", name, (unsigned long long)v);
}

/* labelled: one family with one label over n named values. */
static int
labelled(struct buf *out, const char *name, const char *type, const char *help,
         const char *label, const char *const *names, const uint64_t *v, size_t n)
{
    int rc = family(out, name, type, help);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = put(out, "%s{%s=\"%s\"} %llu\n", name, label, names[i], (unsigned long long)v[i]);
    return rc;
}

/* seconds prints us as seconds, exactly. */
static int
put_seconds(struct buf *out, uint64_t us)
{
    return put(out, "%llu.%06llu", (unsigned long long)(us / 1000000),
               (unsigned long long)(us % 1000000));
}

/* hist_series prints the series of one histogram; lab is "" or 'name="value",'. */
static int
hist_series(struct buf *out, const char *name, const char *lab, const struct metrics_hist *h)
{
    uint64_t cum = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < METRICS_NBUCKETS; i++) {
        cum += h->bucket[i];
        rc = put(out, "%s_bucket{%sle=\"", name, lab);
        if (rc == 0)
            rc = put_seconds(out, metrics_bucket_us[i]);
        if (rc == 0)
            rc = put(out, "\"} %llu\n", (unsigned long long)cum);
    }
    cum += h->bucket[METRICS_NBUCKETS];
    if (rc == 0)
        rc = put(out, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, lab, (unsigned long long)cum);
    size_t ll = strlen(lab);
    if (rc == 0)
        rc = put(out, "%s_sum%s%.*s%s ", name, ll ? "{" : "", ll ? (int)ll - 1 : 0, lab,
                 ll ? "}" : "");
    if (rc == 0)
        rc = put_seconds(out, h->sum_us);
    if (rc == 0)
        rc = put(out, "\n%s_count%s%.*s%s %llu\n", name, ll ? "{" : "", ll ? (int)ll - 1 : 0, lab,
                 ll ? "}" : "", (unsigned long long)cum);
    return rc;
}

static int
type_hists(struct buf *out, const struct metrics_snap *s, bool run)
{
    const char *name = run ? "inginious_job_run_seconds" : "inginious_job_wait_seconds";
    int rc = family(out, name, "histogram",
                    run ? "Time from dispatch to the agent's result, by environment type."
                        : "Time from submission (or requeue) to dispatch, by environment type.");
    for (size_t i = 0; rc == 0 && i < s->ntypes; i++) {
        struct buf lab;
        buf_init(&lab);
        rc = put(&lab, "environment_type=\"");
        if (rc == 0)
            rc = metrics_label_escape(&lab, s->types[i].type, strlen(s->types[i].type));
        if (rc == 0)
            rc = put(&lab, "\",");
        if (rc == 0 && buf_append(&lab, "", 1) < 0)
            rc = -ENOMEM;
        if (rc == 0)
            rc = hist_series(out, name, (const char *)buf_head(&lab),
                             run ? &s->types[i].run : &s->types[i].wait);
        buf_fini(&lab);
    }
    return rc;
}

static int
env_cmp(const void *a, const void *b)
{
    const struct metrics_env *x = a, *y = b;
    uint64_t dx = x->waiting + x->running, dy = y->waiting + y->running;
    if (dx != dy)
        return dx > dy ? -1 : 1;
    int c = strcmp(x->type, y->type);
    return c != 0 ? c : strcmp(x->name, y->name);
}

void
metrics_sort_envs(struct metrics_env *envs, size_t n)
{
    if (n > 1)
        qsort(envs, n, sizeof(*envs), env_cmp);
}

static int
env_gauges(struct buf *out, struct metrics_snap *s, bool running)
{
    const char *name = running ? "inginious_jobs_running" : "inginious_jobs_waiting";
    int rc = family(out, name, "gauge",
                    running ? "Jobs dispatched to an agent and not done, by environment (the "
                              "deepest environments; the others summed as other)."
                            : "Jobs waiting for a slot, by environment (the deepest "
                              "environments; the others summed as other).");
    size_t own = s->nenvs < s->max_envs ? s->nenvs : s->max_envs;
    for (size_t i = 0; rc == 0 && i < own; i++) {
        const struct metrics_env *e = &s->envs[i];
        rc = put(out, "%s{environment_type=\"", name);
        if (rc == 0)
            rc = metrics_label_escape(out, e->type, strlen(e->type));
        if (rc == 0)
            rc = put(out, "\",environment=\"");
        if (rc == 0)
            rc = metrics_label_escape(out, e->name, strlen(e->name));
        if (rc == 0)
            rc = put(out, "\"} %llu\n", (unsigned long long)(running ? e->running : e->waiting));
    }
    if (rc == 0 && own < s->nenvs) {
        uint64_t sum = 0;
        for (size_t i = own; i < s->nenvs; i++)
            sum += running ? s->envs[i].running : s->envs[i].waiting;
        rc = put(out, "%s{environment_type=\"other\",environment=\"other\"} %llu\n", name,
                 (unsigned long long)sum);
    }
    return rc;
}

static int
key_cmp(const void *a, const void *b)
{
    const struct metrics_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n > 0 ? memcmp(x->key, y->key, n) : 0;
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int
key_depth_cmp(const void *a, const void *b)
{
    const struct metrics_key *x = a, *y = b;
    if (x->waiting != y->waiting)
        return x->waiting > y->waiting ? -1 : 1;
    return key_cmp(a, b);
}

size_t
metrics_merge_keys(struct metrics_key *keys, size_t n)
{
    if (n < 2)
        return n;
    qsort(keys, n, sizeof(*keys), key_cmp);
    size_t w = 0;
    for (size_t i = 1; i < n; i++) {
        if (key_cmp(&keys[w], &keys[i]) == 0)
            keys[w].waiting += keys[i].waiting;
        else
            keys[++w] = keys[i];
    }
    return w + 1;
}

/* key_gauges: waiting jobs per fair-share key, bounded as the environments are. */
static int
key_gauges(struct buf *out, struct metrics_snap *s)
{
    static const char name[] = "inginious_fair_key_waiting_jobs";
    if (s->keys == NULL)
        return 0;
    if (s->nkeys > 1)
        qsort(s->keys, s->nkeys, sizeof(*s->keys), key_depth_cmp);
    int rc = family(out, name, "gauge",
                    "Jobs waiting, by fair-share key (--fair-share; the deepest keys, the "
                    "others summed as other).");
    size_t own = s->nkeys < s->max_envs ? s->nkeys : s->max_envs;
    for (size_t i = 0; rc == 0 && i < own; i++) {
        rc = put(out, "%s{key=\"", name);
        if (rc == 0)
            rc = metrics_label_escape(out, s->keys[i].key, s->keys[i].len);
        if (rc == 0)
            rc = put(out, "\"} %llu\n", (unsigned long long)s->keys[i].waiting);
    }
    if (rc == 0 && own < s->nkeys) {
        uint64_t sum = 0;
        for (size_t i = own; i < s->nkeys; i++)
            sum += s->keys[i].waiting;
        rc = put(out, "%s{key=\"other\"} %llu\n", name, (unsigned long long)sum);
    }
    return rc;
}

/* journal_family: the journal's gauges, counters and fsync latency histogram. */
static int
journal_family(struct buf *out, const struct metrics_journal *jr)
{
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } v[] = {
        {"inginious_journal_bytes", "gauge", "Bytes of the journal's segment files.", jr->bytes},
        {"inginious_journal_live_bytes", "gauge",
         "Bytes of the journal records still needed (the jobs held).", jr->live_bytes},
        {"inginious_journal_segments", "gauge", "Segment files of the journal.", jr->segments},
        {"inginious_journal_compactions_total", "counter",
         "Journal segments compacted away (live records copied forward, file removed).",
         jr->compactions},
        {"inginious_journal_fsyncs_total", "counter", "fdatasync calls on journal segments.",
         jr->fsyncs},
        {"inginious_journal_available", "gauge",
         "1 while the journal writes, 0 while new jobs are refused (Journal unavailable).",
         jr->ok},
    };
    int rc;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        if ((rc = scalar(out, v[i].name, v[i].type, v[i].help, v[i].v)) < 0)
            return rc;
    if ((rc = family(out, "inginious_journal_fsync_seconds", "histogram",
                     "Latency of each fdatasync of the journal.")) < 0)
        return rc;
    return hist_series(out, "inginious_journal_fsync_seconds", "", jr->fsync);
}

int
metrics_render(struct metrics_snap *s, struct buf *out)
{
    const struct metrics_core *c = s->core;
    const struct metrics_server *v = s->srv;
    static const char *const rnames[2] = {"agent", "client"};
    static const char *const dnames[2] = {"native", "zmq"};
    int rc = 0;

    metrics_sort_envs(s->envs, s->nenvs);

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) < 0)                                                                        \
            return rc;                                                                             \
    } while (0)
    const uint64_t P = s->proc.ok; /* the process gauges are left out when /proc failed */
    const struct {
        const char *name, *type, *help;
        uint64_t v;
        bool show;
    } scalars[] = {
#define C(n, h, v) {n, "counter", h, v, true}
#define G(n, h, v) {n, "gauge", h, v, true}
        C("inginious_jobs_submitted_total", "Jobs accepted from clients.", c->submitted),
        C("inginious_jobs_dispatched_total",
          "Jobs sent to an agent (a requeued job counts again).", c->dispatched),
        C("inginious_jobs_started_total", "Jobs an agent reported started.", c->started),
        C("inginious_jobs_killed_total",
          "Jobs ended by a kill with the backend's own killed result.", s->jobs_killed),
        C("inginious_jobs_lost_total", "Running jobs whose agent was lost.", c->lost),
        C("inginious_jobs_requeued_total",
          "Jobs of a lost agent put back in the queue (retried).", c->requeued),
        C("inginious_jobs_crashed_total",
          "Jobs ended with crash by the backend (agent lost, no retry left, shutdown).",
          s->jobs_crashed),
        C("inginious_jobs_orphan_timeouts_total",
          "Waiting jobs ended because no agent served their environment in time.",
          c->orphan_timeouts),
        C("inginious_reports_dropped_total",
          "Agent reports dropped (unknown job, or a job of another agent).", s->reports_dropped),
        C("inginious_agents_lost_total",
          "Agents removed after missed pings or a closed connection with jobs.", s->agents_lost),
        C("inginious_agent_jobs_claimed_total",
          "Running jobs an agent took back after a lost connection or a restart.",
          s->jobs_claimed),
        C("inginious_agent_claims_refused_total",
          "Claims of an agent refused (it was told to kill the job).", s->claims_refused),
        C("inginious_sessions_resumed_total",
          "Client sessions resumed by a new connection (after a loss, a restart, a takeover).",
          s->sessions_resumed),
        C("inginious_session_results_shed_total",
          "Results kept for detached sessions replaced by crash \"Backend memory full\".",
          s->kept_shed),
        G("inginious_sessions", "Client sessions (attached or detached).", s->sessions),
        G("inginious_session_kept_results",
          "Results kept for sessions (detached, or not yet acknowledged).", s->kept_results),
        G("inginious_waiting_jobs", "Jobs waiting for a slot, all environments.", s->waiting),
        G("inginious_running_jobs", "Jobs dispatched and not done, all environments.",
          s->running),
        G("inginious_agents", "Registered agents.", s->agents),
        G("inginious_slots", "Job slots of the registered agents.", s->slots),
        G("inginious_slots_busy", "Slots running a job.", s->slots_busy),
        C("inginious_frames_received_total", "Messages received from peers.", v->frames_in),
        C("inginious_frames_sent_total", "Messages sent to peers.", v->frames_out),
        C("inginious_received_bytes_total", "Bytes read from peers.", v->bytes_in),
        C("inginious_sent_bytes_total", "Bytes written to peers.", v->bytes_out),
        C("inginious_auth_failures_total", "Peers refused for a failed authentication.",
          v->auth_failures),
        C("inginious_http_requests_total", "Requests answered on the metrics port.",
          v->http_requests),
        C("inginious_http_errors_total",
          "Requests on the metrics port answered with an error status.", v->http_errors),
        {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
         s->proc.rss_bytes, P},
        {"process_open_fds", "gauge", "Number of open file descriptors.", s->proc.open_fds, P},
        {"process_max_fds", "gauge", "Maximum number of open file descriptors.",
         s->proc.max_fds, P},
#undef C
#undef G
    };
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++)
        if (scalars[i].show)
            TRY(scalar(out, scalars[i].name, scalars[i].type, scalars[i].help, scalars[i].v));
    TRY(labelled(out, "inginious_jobs_refused_total", "counter",
                 "Jobs refused at submission, by reason.", "reason", metrics_refuse_name,
                 c->refused, METRICS_NREFUSE));
    TRY(labelled(out, "inginious_jobs_done_total", "counter",
                 "Jobs whose result an agent reported, by result.", "result",
                 metrics_result_name, c->done, METRICS_NRESULT));
    TRY(labelled(out, "inginious_kills_total", "counter",
                 "Kill requests from clients, by outcome.", "outcome", metrics_kill_name,
                 c->kills, METRICS_NKILL));
    TRY(env_gauges(out, s, false));
    TRY(env_gauges(out, s, true));
    TRY(key_gauges(out, s));
    TRY(type_hists(out, s, false));
    TRY(type_hists(out, s, true));
    TRY(family(out, "inginious_loop_iteration_seconds", "histogram",
               "Time the event loop spends handling one wake-up."));
    TRY(hist_series(out, "inginious_loop_iteration_seconds", "", &v->loop));
    TRY(family(out, "inginious_connections", "gauge", "Open connections, by role and dialect."));
    for (int r = 0; r < 2; r++)
        for (int d = 0; d < 2; d++)
            TRY(put(out, "inginious_connections{role=\"%s\",dialect=\"%s\"} %llu\n", rnames[r],
                    dnames[d], (unsigned long long)v->conns[r][d]));
    TRY(family(out, "inginious_protocol_errors_total", "counter",
               "Protocol errors sent to peers, by error code (proto.md)."));
    for (int i = 1; i < METRICS_NERR; i++)
        if (v->proto_errors[i] != 0 || i <= ING_ERR_JOURNAL)
            TRY(put(out, "inginious_protocol_errors_total{code=\"%d\"} %llu\n", i,
                    (unsigned long long)v->proto_errors[i]));
    if (s->journal != NULL)
        TRY(journal_family(out, s->journal));
    if (s->proc.ok) {
        TRY(family(out, "process_cpu_seconds_total", "counter",
                   "Total user and system CPU time spent in seconds."));
        TRY(put(out, "process_cpu_seconds_total "));
        TRY(put_seconds(out, s->proc.cpu_us));
        TRY(put(out, "\n"));
        TRY(family(out, "process_start_time_seconds", "gauge",
                   "Start time of the process since unix epoch in seconds."));
        TRY(put(out, "process_start_time_seconds %.3f\n", s->proc.start_time_s));
    }
#undef TRY
    return 0;
}

void
metrics_proc_read(struct metrics_proc *p, double start_s)
{
    memset(p, 0, sizeof(*p));
    p->start_time_s = start_s;
    long pg = sysconf(_SC_PAGESIZE), hz = sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long long size = 0, rss = 0;
    if (f == NULL)
        return;
    int got = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    if (got != 2 || pg <= 0 || hz <= 0)
        return;
    p->rss_bytes = rss * (unsigned long long)pg;
    char st[1024];
    f = fopen("/proc/self/stat", "re");
    if (f == NULL)
        return;
    size_t n = fread(st, 1, sizeof(st) - 1, f);
    fclose(f);
    st[n] = 0;
    const char *q = strrchr(st, ')'); /* the command name may hold spaces and parentheses */
    unsigned long long ut = 0, stime = 0;
    /* After ")": state(3) ... utime is field 14, stime 15. */
    if (q == NULL || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &stime) != 2)
        return;
    p->cpu_us = (ut + stime) * 1000000ull / (unsigned long long)hz;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            p->open_fds++;
    closedir(d);
    p->open_fds--; /* the directory's own descriptor */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur;
    p->ok = true;
}
