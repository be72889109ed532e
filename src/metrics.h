/* SPDX-License-Identifier: MIT */
/* metrics.h: the Prometheus text exposition (format 0.0.4) of a read-only snapshot of the
 * backend and the server, and the histograms the hot path counts into.
 *
 * The core and the server keep plain counters and struct metrics_hist (no allocation, a
 * few nanoseconds per observation); whoever answers a scrape fills a struct metrics_snap
 * from them and calls metrics_render. Rendering is pure: it reads the snapshot only
 * (it reorders snap->envs) and appends text to a buffer. */
#ifndef ING_METRICS_H
#define ING_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Histogram bucket upper bounds, in microseconds (the exposition prints seconds). The same
 * bounds serve the loop iteration (10 us ..) and job wait and run times (.. 1 h). */
#define METRICS_NBUCKETS 16
extern const uint64_t metrics_bucket_us[METRICS_NBUCKETS];

struct metrics_hist {
    uint64_t bucket[METRICS_NBUCKETS + 1]; /* per bucket (not cumulative); last: above all */
    uint64_t count;
    uint64_t sum_us;
};

/* metrics_bucket is the bucket of an observation of us microseconds: the number of bounds
 * below it (0 .. METRICS_NBUCKETS). Branch-free: a binary search of the 16 bounds by
 * comparisons turned into arithmetic, so that its cost does not depend on the value (a scan
 * whose exit depends on the value is mispredicted most of the time on the hot path). */
static inline unsigned
metrics_bucket(uint64_t us)
{
    _Static_assert(METRICS_NBUCKETS == 16, "metrics_bucket searches exactly 16 bounds");
    const uint64_t *b = metrics_bucket_us;
    unsigned i = (unsigned)(us > b[7]) << 3;
    i += (unsigned)(us > b[i + 3]) << 2;
    i += (unsigned)(us > b[i + 1]) << 1;
    i += (unsigned)(us > b[i]);
    return i + (unsigned)(us > b[METRICS_NBUCKETS - 1]);
}

/* metrics_hist_observe counts one observation of us microseconds. */
static inline void
metrics_hist_observe(struct metrics_hist *h, uint64_t us)
{
    h->bucket[metrics_bucket(us)]++;
    h->count++;
    h->sum_us += us;
}

/* metrics_avg_update feeds t into the moving average *avg of *has values (the run times of
 * an environment, for the ETA of ClientGetJobInfo, proto.md 7.4): the first value, then
 * avg += (t - avg) / 8, rounded towards the old average. Branch-free after the first (its
 * sign is data: a branch on it is mispredicted half of the time). t and *avg below 2^62. */
static inline void
metrics_avg_update(uint64_t *avg, bool *has, uint64_t t)
{
    if (!*has) {
        *avg = t;
        *has = true;
        return;
    }
    int64_t d = (int64_t)(t - *avg); /* C division truncates towards 0, as before */
    *avg = (uint64_t)((int64_t)*avg + d / 8);
}

/* Why a job was refused at submission (label reason). */
enum metrics_refuse {
    METRICS_REFUSE_INVALID = 0,  /* "invalid": a field refused */
    METRICS_REFUSE_DUPLICATE,    /* "duplicate_id" */
    METRICS_REFUSE_SHUTDOWN,     /* "shutting_down" */
    METRICS_REFUSE_QUEUE_FULL,   /* "queue_full": max waiting jobs (in total or per client) */
    METRICS_REFUSE_NOMEM,        /* "out_of_memory" */
    METRICS_REFUSE_JOURNAL,      /* "journal": it cannot write (or the job is too large) */
    METRICS_NREFUSE
};

/* How a job ended (label result): INGInious' result kinds. */
enum metrics_result {
    METRICS_RES_SUCCESS = 0,
    METRICS_RES_FAILED,
    METRICS_RES_TIMEOUT,
    METRICS_RES_OVERFLOW,
    METRICS_RES_KILLED,
    METRICS_RES_CRASH,
    METRICS_RES_ERROR,
    METRICS_NRESULT
};

/* How a client's kill ended (label outcome). */
enum metrics_kill {
    METRICS_KILL_WAITING = 0, /* "waiting": the job had not been dispatched; dropped */
    METRICS_KILL_AGENT,       /* "agent": the agent reported the job done after the kill */
    METRICS_KILL_TIMEOUT,     /* "timeout": the agent did not answer in time */
    METRICS_KILL_LOST,        /* "agent_lost": the agent was lost before it answered */
    METRICS_KILL_UNKNOWN,     /* "unknown_job": no such job (or not the client's) */
    METRICS_NKILL
};

extern const char *const metrics_refuse_name[METRICS_NREFUSE];
extern const char *const metrics_result_name[METRICS_NRESULT];
extern const char *const metrics_kill_name[METRICS_NKILL];

/* metrics_result_kind maps a result string to its kind (unknown strings: ERROR). */
enum metrics_result metrics_result_kind(const char *s, size_t n);

/* The counters the core keeps (struct backend holds one). */
struct metrics_core {
    uint64_t submitted, dispatched, started, lost, requeued, orphan_timeouts;
    uint64_t refused[METRICS_NREFUSE];
    uint64_t done[METRICS_NRESULT];
    uint64_t kills[METRICS_NKILL];
};

struct metrics_env {
    const char *type, *name;
    uint64_t waiting, running;
};

/* A fair-share key (--fair-share) and its waiting jobs, all environments and priorities. */
struct metrics_key {
    const char *key; /* key[0..len), not NUL-terminated */
    size_t len;
    uint64_t waiting;
};

/* Per environment type: wait (submit -> dispatch) and run (dispatch -> done) times. */
struct metrics_type {
    const char *type;
    struct metrics_hist wait, run;
};

#define METRICS_NERR 16 /* protocol error codes 0..15 */
enum { METRICS_ROLE_AGENT = 0, METRICS_ROLE_CLIENT = 1 };
enum { METRICS_DIALECT_NATIVE = 0, METRICS_DIALECT_ZMQ = 1 };

/* The counters the server keeps. */
struct metrics_server {
    uint64_t conns[2][2]; /* [role][dialect], open now */
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t proto_errors[METRICS_NERR];
    uint64_t auth_failures;
    struct metrics_hist loop; /* event-loop iteration time */
    uint64_t http_requests, http_errors;
};

struct metrics_proc {
    uint64_t rss_bytes;
    uint64_t open_fds, max_fds;
    uint64_t cpu_us;       /* user + system */
    double start_time_s;   /* Unix time */
    bool ok;               /* read from /proc */
};

/* The journal (--journal): its files and its syncs. */
struct metrics_journal {
    uint64_t bytes, live_bytes; /* of its segment files; of the records still needed */
    uint64_t segments;
    uint64_t compactions; /* segments compacted away */
    uint64_t fsyncs;
    bool ok; /* its last write succeeded */
    const struct metrics_hist *fsync; /* each fdatasync's latency */
};

struct metrics_snap {
    const struct metrics_core *core;
    const struct metrics_server *srv;
    struct metrics_env *envs; /* reordered by metrics_render */
    size_t nenvs;
    const struct metrics_type *types;
    size_t ntypes;
    uint64_t jobs_killed, reports_dropped, agents_lost, jobs_crashed;
    /* Durability (proto.md 7.9, 7.10): claims granted and refused, sessions resumed, kept
     * results replaced at the memory budget; sessions and kept results now. */
    uint64_t jobs_claimed, claims_refused, sessions_resumed, kept_shed;
    uint64_t sessions, kept_results;
    uint64_t waiting, running;
    uint64_t agents, slots, slots_busy;
    struct metrics_proc proc;
    size_t max_envs; /* environments with their own label; the rest are summed as "other" */
    /* Fair share on: the keys with jobs (merged by key; reordered by metrics_render), the
     * max_envs deepest get their own label. keys == NULL: off, no family. */
    struct metrics_key *keys;
    size_t nkeys;
    const struct metrics_journal *journal; /* NULL without --journal: no journal family */
};

/* metrics_merge_keys sorts keys[0..n) by key and merges equal keys (summing their waiting
 * jobs). Returns the number left. */
size_t metrics_merge_keys(struct metrics_key *keys, size_t n);

/* metrics_proc_read fills p from /proc/self (p->ok false where that fails); start_s is
 * the process start time to report. */
void metrics_proc_read(struct metrics_proc *p, double start_s);

/* metrics_sort_envs orders envs deepest first (waiting + running), then by type and name:
 * the order in which environments get their own label. */
void metrics_sort_envs(struct metrics_env *envs, size_t n);

/* metrics_render appends the exposition of s to out. Returns 0 or -ENOMEM. */
int metrics_render(struct metrics_snap *s, struct buf *out);

/* metrics_label_escape appends v[0..n) escaped as a label value (\\, \", \n). */
int metrics_label_escape(struct buf *out, const char *v, size_t n);

#endif
