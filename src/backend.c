/* SPDX-License-Identifier: MIT */
/* backend.c: see backend.h. */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "idtab.h"
#include "inginious/mp.h"
#include "journal.h"
#include "log.h"
#include "sblk.h"

enum job_status {
    JOB_WAITING = 0,    /* in its environment's heap and FIFO */
    JOB_DISPATCHED = 1, /* sent to an agent, not reported started yet */
    JOB_STARTED = 2,    /* the agent said AgentJobStarted */
};

#define JOB_F_KILLING 1u   /* a kill was sent to the agent (t.run.dl: its answer's deadline) */
#define JOB_BOUNCE_SHIFT 1 /* flags >> 1: requeues after agent losses (BE_MAX_REQUEUES < 128) */

#define MAX_ID_LEN BE_MAX_ID_LEN
#define MAX_ENV_LEN 255

/* A job and its ClientNewJob body, in one pool object. Fields used only while waiting or
 * only while running share memory: 96 bytes before the body on 64-bit, fair share on or
 * off. The environment and the priority are its record's (fk: one per environment and
 * priority, and per key with fair share), which every waiting job needs anyway for its
 * position; with fair share its start tag is kept in the record's order statistics, at its
 * ordinal (job_vt), and its place among its key's waiting jobs uses prev/next (no FIFO of
 * the environment then). */
struct job {
    struct fair_key *fk;       /* its record (environment, priority[, key]); holds a reference */
    struct be_client *owner;   /* NULL once the client is gone */
    struct be_agent *agent;    /* when dispatched */
    struct job *prev, *next;   /* waiting: env FIFO (fair share: its key's list, in order);
                                * running: the agent's running list */
    struct job *oprev, *onext; /* the owner's jobs */
    uint64_t seq; /* arrival order */
    union {
        uint64_t entered; /* waiting: its entry stamp (job_enqueue): when it (re)entered */
        struct {
            uint32_t dseq; /* running: dispatch order (wraps; compared by difference) */
            uint32_t dl;   /* the job's deadline (proto.md 7.4), or while killing with a
                            * kill timeout the kill's: low 32 bits of the monotonic ms clock */
        } run;
    } t;
    union {
        uint32_t heap_idx;  /* waiting: position in env->heap */
        uint32_t started_ms; /* running: dispatch time, low 32 bits of the ms clock */
    } u;
    uint32_t body_len;    /* bytes of body[] (the ClientNewJob body) */
    uint32_t deadline_ms; /* from dispatch to the backend's hard deadline (< 2^31) */
    uint8_t id_len;
    uint8_t status;
    uint8_t flags;
    uint8_t retries;
    uint64_t ord; /* its ordinal in fk->rk (its position, be_job_info); kept while it runs,
                   * for a requeue */
    uint8_t body[];
};

_Static_assert(sizeof(void *) != 8 || sizeof(struct job) <= 96,
               "struct job: 96 bytes per queued job at most, fair share on or off");

/* A waiting job's entry stamp (t.entered): the monotonic ms clock shifted by ENTRY_BITS,
 * plus one per job entered in the same millisecond: unique, in the order the jobs (re-)
 * entered the queue across environments (the queue snapshot lists them so, proto.md 5.5).
 * The clock alone with the arrival order to break ties was no such order: a job requeued
 * in the millisecond a newer one entered sorted before it in another environment's list
 * and after it in its own, and the snapshot merged the lists out of order. More than 2^20
 * entries in one millisecond (a journal's replay) run the stamp a millisecond ahead of the
 * clock per 2^20. */
#define ENTRY_BITS 20

/* job_entered_ms returns when waiting job j entered the queue (monotonic ms). */
static inline uint64_t
job_entered_ms(const struct job *j)
{
    return j->t.entered >> ENTRY_BITS;
}

/* job_waited_ms returns how long waiting job j has waited since it entered the queue (its
 * stamp may run ahead of the clock: then 0). */
static inline uint64_t
job_waited_ms(const struct backend *be, const struct job *j)
{
    uint64_t at = job_entered_ms(j);
    return be->now_ms > at ? be->now_ms - at : 0;
}

static inline struct env *
job_env(const struct job *j)
{
    return j->fk->scope;
}

static inline int64_t
job_prio(const struct job *j)
{
    return j->fk->prio;
}

/* job_vt is waiting job j's start tag (fair share; 0 without). */
static inline uint64_t
job_vt(const struct job *j)
{
    const struct rank *r = &j->fk->rk;
    return r->keys ? r->vt[j->ord & (r->cap - 1)] : 0;
}

/* run_job prefetches this much of the job that will run next in the same environment. */
#define JOB_PREFETCH_BYTES 384

/* The job spec (BackendNewJob body) follows priority (8 bytes) and the launcher str. */
static inline uint32_t
spec_off(const struct job *j)
{
    return 12 + get_u32be(j->body + 8);
}

struct aref {
    struct be_agent *a;
    uint32_t ref; /* index in a->envs */
};

/* An entry of an environment's heap of keys (fair share): the key's first waiting job's
 * (priority, tag, arrival), kept in the entry, so that sifting reads no record. */
struct kent {
    int64_t prio;
    uint64_t vt, seq;
    struct fair_key *k;
};

struct env {
    struct env *hnext;
    char *type, *name; /* one allocation: type NUL name NUL */
    uint32_t type_len, name_len;
    uint64_t hash;
    struct job **heap;  /* when heaped: the waiting jobs, min-heap on (prio, seq) */
    uint32_t n, cap;    /* n: waiting jobs (and heap entries when heaped) */
    int64_t hprio;      /* when n > 0: (priority, arrival) of env_best, kept here so that */
    uint64_t hseq;      /* comparing environments (best_job) reads no cold job */
    uint64_t vtime;     /* fair share: the start tag of the last job dispatched */
    struct kent *kheap; /* fair share: the keys with waiting jobs, min-heap on their
                              * first job's (priority, tag, arrival); no job heap then */
    uint32_t kn, kcap;
    struct fair_key *keys; /* its records (fair.c): per priority (and key, fair share) */
    uint64_t n_slots;      /* slots of the agents that provide it */
    uint64_t run_avg_ms;   /* moving average of its jobs' run times (has_avg) */
    bool has_avg;
    int64_t p0;         /* the priority of the first job queued in an empty env */
    uint32_t n_other;   /* waiting jobs whose priority is not p0 */
    bool heaped;        /* set when a second priority arrives, until the env empties: the
                         * heap orders the jobs; otherwise the FIFO is the order */
    struct aref *aheap; /* agents serving it with a free slot, min-heap on oldest free slot */
    uint32_t an, acap;
    struct job *fifo_head, *fifo_tail; /* waiting jobs in arrival order */
    uint32_t n_providers;
    uint64_t running;          /* jobs of this environment on agents */
    struct metrics_type *etype; /* its type's histograms (shared) */
    uint64_t refs; /* providers + jobs */
    char *vid;     /* version: image id of the newest announced version */
    int64_t created;
    bool advertised;
    bool in_orphans;
    uint64_t orphan_since;
    struct env *oprev, *onext;
    uint64_t mark;
    /* The environment list (BackendUpdateEnvironments), in announcement order. A type is a
     * record of its own in the table: (type, "") (names are never empty). A type record is
     * listed while an agent announces the type (nann > 0) or it lists environments; an
     * environment is listed from its first provider on, and taken off (lazily, when the list
     * is next built, so that a re-hello or a quick reconnect keeps its place) once it has
     * none. Being listed holds a reference. */
    struct env *lprev, *lnext; /* env: in its type's list; type record: in be's type list */
    struct env *lhead, *ltail; /* type record: its listed environments */
    struct env *tr;            /* env, while listed: its type record */
    uint32_t nann;             /* type record: agents announcing the type */
    bool listed;
};

struct eref {
    struct env *env;
    uint32_t aidx; /* position + 1 in env->aheap, 0 = absent */
};

struct be_agent {
    void *peer;
    struct be_agent *prev, *next;
    bool registered;
    char *name;
    uint32_t slots;
    /* The free slots' FIFO (nfree of them): first the nfresh slots given at the hello, with
     * the consecutive sequence numbers from fresh_seq, then the slots freed since, in ring
     * (rcap entries from fhead, grown as more slots are in use at once: a hello announcing
     * many slots costs nothing until they are used). */
    uint32_t nfree, fhead, nfresh, rcap;
    uint64_t fresh_seq;
    uint64_t *ring;
    struct eref *envs;
    uint32_t nenvs;
    struct env **types; /* the type records of the types it announced */
    uint32_t ntypes;
    uint64_t hello_tat; /* hello rate limit: theoretical arrival time of the next hello */
    struct job *run_head, *run_tail; /* dispatch order */
    uint32_t nrun;
    uint32_t missed;
    uint32_t nkilling;
    uint64_t dl_ms; /* no running job's deadline is before (be_timeouts scans it then); a
                     * ghost's: when its grace ends */
    struct be_reg *reg; /* its hello being registered (be_register), or NULL */
    uint8_t block;      /* BLOCK_*: no job while its registration changes its heaps */
    bool ghost;     /* a lost agent's jobs waiting for its return (be->ghosts, proto.md 7.10) */
    bool has_rid;   /* said AgentHelloResume: rid is its id */
    uint8_t rid[ING_AGENT_ID_LEN];
};

/* A dispatch state read back before its job's accepted record (be_journal_replay). */
struct jr_pend {
    uint64_t seq;
    uint8_t rid[ING_AGENT_ID_LEN]; /* all zero: back to the queue */
    bool started;
    bool has_at;      /* a record 8: the dispatch's wall time and the job's counts */
    uint8_t bounces, retries;
    int64_t wall_s;
};

/* A dispatch record's fields (records 2 and 8, proto.md 12.3). */
struct jr_disp {
    const uint8_t *rid;
    bool has_at;
    int64_t wall_s;
    uint8_t bounces, retries;
    size_t id_off; /* the job id from here to the end */
};


/* While a registration spreads over loop iterations, the agent's entries in its
 * environments' agent heaps must not give it a job: */
enum {
    BLOCK_LEAVE = 1, /* its previous registration goes: an entry found at a heap's top is
                      * removed there (the rest go in steps) */
    BLOCK_ENTER = 2, /* its slots join the heaps in steps, keyed after every other free slot
                      * (fresh_seq UINT64_MAX): at a heap's top it is alone, and skipped */
};

struct be_session;

struct be_client {
    void *peer; /* NULL while a session is detached */
    struct be_client *prev, *next; /* registered list; once gone: be->reaping (next only) */
    bool registered;
    bool gone; /* connection closed: its jobs are being dropped (be_reap), nothing is sent */
    bool native, acks; /* be_client_native */
    struct job *jobs;
    uint64_t n_waiting;
    uint64_t job_bytes;       /* bodies of its jobs still held (be_client_job_bytes) */
    uint64_t dropped, killed; /* while gone: counts for the log line */
    uint64_t envs_seen;       /* be->envs_serial of the list it was sent last */
    struct be_session *sess;  /* NULL: not a session (proto.md 7.9) */
};

/* A result kept for a detached session: its BackendJobDone frame (header then body). */
struct kept {
    struct kept *next;
    struct be_session *s;
    uint64_t seq; /* its job's arrival order */
    uint64_t dno; /* acknowledged sessions: its number among the BackendJobDone frames sent
                   * on the session's connection (valid while sent: before s->next_send) */
    uint32_t len; /* body bytes, after the ING_HDR_LEN header */
    bool indexed; /* in be->ktab (not: kept for an acknowledging connection, no journal) */
    bool shed;    /* a short crash "Backend memory full" put in its place (be_sessions_shed) */
    uint8_t frame[];
};

/* A session (proto.md 7.9): a client whose jobs outlive its connection. Detached sessions
 * (peer NULL) are listed in be->detached through their client's prev/next. */
struct be_session {
    uint8_t id[ING_SESSION_ID_LEN];
    struct be_client *c;
    struct kept *kept, **kept_tail; /* results to deliver, in arrival order */
    uint64_t n_kept;
    uint64_t detached_ms; /* when the connection went (monotonic) */
    bool detached;
    bool hold; /* attached by a connection that submits only: results stay kept */
    bool resuming; /* kept results are being delivered (results arriving now are kept) */
    bool listing;  /* then the list of its jobs is being sent, from cursor on */
    struct job *cursor; /* the next job to list (owner_unlink moves it past a job it frees) */
    /* Acknowledged results (ClientSessionAck, proto.md 7.9): every result is kept until the
     * connection acknowledges it; the kept list is [sent, unacknowledged][not sent yet]. */
    bool acking;            /* the attached connection opened with ING_SESSION_ACK */
    uint64_t sent, acked;   /* BackendJobDone frames sent on it since its hello; acked */
    struct kept *next_send; /* the first kept result not sent on it (NULL: all were) */
    uint64_t unacked_bytes; /* of the results sent on it and not acknowledged */
    bool overrun;           /* it was dropped for SESSION_UNACKED_MAX (closing) */
    bool shed_all;          /* every kept result is a shed one (be_sessions_shed skips it) */
};

/* client_keeps tells whether a result for c is kept rather than sent: c is a detached
 * session, or one attached with ING_SESSION_HOLD. */
static inline bool
client_keeps(const struct be_client *c)
{
    return c->peer == NULL || (c->sess != NULL && (c->sess->hold || c->sess->resuming));
}

/* client_acks tells whether c is a session attached to a connection that acknowledges its
 * results: each is kept (and journaled) until acknowledged, sent or not. */
static inline bool
client_acks(const struct be_client *c)
{
    return c->peer != NULL && c->sess != NULL && c->sess->acking;
}

static const uint8_t empty_map[1] = {0x80};

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */

static inline const char *
job_id(const struct job *j)
{
    return (const char *)j->body + spec_off(j) + 4;
}

static inline struct ing_view
job_id_view(const struct job *j)
{
    struct ing_view v = {job_id(j), j->id_len};
    return v;
}

/* job_state returns inputdata["@state"] (validated as a str at submission), or "". */
static struct ing_view
job_state(const struct job *j)
{
    struct ing_view v = {"", 0};
    const uint8_t *p = j->body + spec_off(j), *end = j->body + j->body_len;
    /* job_id str, course_id nstr, task_id nstr, environment_type str, environment str,
     * debug u8, task_problems mp, then inputdata mp. */
    for (int i = 0; i < 5; i++) {
        uint32_t n = get_u32be(p);
        p += 4 + (n == UINT32_MAX ? 0 : n);
    }
    p += 1;
    p += 4 + get_u32be(p);
    uint32_t in_len = get_u32be(p);
    const uint8_t *val;
    size_t vlen;
    struct ing_mp_obj o;
    if (p + 4 + in_len <= end && ing_mp_map_get(p + 4, in_len, "@state", 6, &val, &vlen) == 0 &&
        ing_mp_read(&val, val + vlen, &o) == 0 && o.type == ING_MP_STR) {
        v.p = (const char *)o.v.s.p;
        v.len = o.v.s.len;
    }
    return v;
}

static bool
mp_is_map(struct ing_view v)
{
    if (v.p == NULL || v.len == 0)
        return false;
    uint8_t b = (uint8_t)v.p[0];
    return (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
}

/* limits_map finds environment_parameters["limits"]; false if absent. */
static bool
limits_map(struct ing_view params, const uint8_t **lim, size_t *len)
{
    return ing_mp_map_get((const uint8_t *)params.p, params.len, "limits", 6, lim, len) == 0;
}

/* limit_s reads limits[key] (key of klen bytes) as Python's int() does, or -1. */
static int64_t
limit_s(const uint8_t *lim, size_t len, const char *key, size_t klen)
{
    const uint8_t *v;
    size_t vlen;
    int64_t t;
    if (ing_mp_map_get(lim, len, key, klen, &v, &vlen) == 0 && ing_mp_py_int(v, vlen, &t) == 0)
        return t;
    return -1;
}

/* job_deadline_ms is how long a job with these environment parameters may run before the
 * backend ends it (proto.md 7.4): its hard_time, else 3 x its time (the Docker agent's own
 * hard limit), else an hour, in seconds, plus cfg.deadline_margin_ms; at most
 * BE_MAX_DEADLINE_MS. */
static uint32_t
job_deadline_ms(const struct backend *be, struct ing_view params)
{
    uint64_t cap_s = BE_MAX_DEADLINE_MS / 1000;
    const uint8_t *lim;
    size_t len;
    int64_t hard = -1, t = -1;
    if (limits_map(params, &lim, &len)) {
        hard = limit_s(lim, len, "hard_time", 9);
        t = limit_s(lim, len, "time", 4);
    }
    uint64_t base_s = 3600;
    if (hard > 0)
        base_s = (uint64_t)hard;
    else if (t > 0)
        base_s = 3 * (t < (int64_t)cap_s ? (uint64_t)t : cap_s);
    uint64_t ms = (base_s < cap_s ? base_s : cap_s) * 1000 + be->cfg.deadline_margin_ms;
    return (uint32_t)(ms < BE_MAX_DEADLINE_MS ? ms : BE_MAX_DEADLINE_MS);
}

/* job_params is the job's environment_parameters (the spec's last field). */
static struct ing_view
job_params(const struct job *j)
{
    const uint8_t *p = j->body + spec_off(j);
    for (int i = 0; i < 5; i++) { /* job_id, course_id, task_id, environment_type, environment */
        uint32_t n = get_u32be(p);
        p += 4 + (n == UINT32_MAX ? 0 : n);
    }
    p += 1;                /* debug */
    p += 4 + get_u32be(p); /* task_problems */
    p += 4 + get_u32be(p); /* inputdata */
    struct ing_view v = {(const char *)p + 4, get_u32be(p)};
    return v;
}

/* job_max_time is the queue's estimate (proto.md 7.4): limits.time as Python's int() gives
 * it, within msgpack's range [-2^63, 2^64) (*wide: above INT64_MAX, the value's bits), else
 * -1. Read from the job's body at each snapshot: nothing stored. */
static int64_t
job_max_time(const struct job *j, bool *wide)
{
    const uint8_t *lim, *v;
    size_t len, vlen;
    int64_t t;
    *wide = false;
    if (limits_map(job_params(j), &lim, &len) &&
        ing_mp_map_get(lim, len, "time", 4, &v, &vlen) == 0 &&
        ing_mp_py_int_wide(v, vlen, &t, wide) == 0)
        return t;
    *wide = false;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Job id table                                                                              */

/* The job id table is an idtab (src/idtab.h): one cache line per lookup, and a job's memory
 * is read only when its tag matches. */

static inline void
job_key(const void *obj, const void **key, size_t *len)
{
    const struct job *j = obj;
    *key = job_id(j);
    *len = j->id_len;
}

static inline uint64_t
id_hash(const char *id, size_t len)
{
    return idtab_hash(idtab_hash_seed(), id, len);
}

static inline struct job *
jtab_find_h(const struct backend *be, uint64_t h, const char *id, size_t len)
{
    return idtab_find_with(&be->jtab, h, id, len, job_key);
}

/* ---------------------------------------------------------------------------------------- */
/* Environments                                                                              */

static uint64_t
env_hash(const char *type, size_t tl, const char *name, size_t nl)
{
    /* Each step mixes in its length first, so (type, name) splits cannot collide. */
    return idtab_hash(idtab_hash(idtab_hash_seed(), type, tl), name, nl);
}

/* The environment table grows by doubling, its records moved ETAB_MOVE old chains at a
 * time (at each insertion) rather than all at once: a hello of 100,000 environments would
 * otherwise move 65,536 records in one go. While it moves, a record whose old chain
 * (hash & eomask) is at or after emove is still in the old table. */
#define ETAB_MOVE 16

/* etab_head is the chain that holds (or would hold) a record of hash h. */
static inline struct env **
etab_head(const struct backend *be, uint64_t h)
{
    if (be->etab_old != NULL && (h & be->eomask) >= be->emove)
        return &be->etab_old[h & be->eomask];
    return &be->etab[h & be->emask];
}

/* etab_nchains / etab_chain: every chain of the table, both halves while it grows. */
static inline size_t
etab_nchains(const struct backend *be)
{
    return be->emask + 1 + (be->etab_old != NULL ? be->eomask + 1 : 0);
}

static inline struct env *
etab_chain(const struct backend *be, size_t k)
{
    if (k <= be->emask)
        return be->etab[k];
    k -= be->emask + 1;
    return k >= be->emove ? be->etab_old[k] : NULL;
}

static struct env *
env_find(const struct backend *be, const char *type, size_t tl, const char *name, size_t nl)
{
    uint64_t h = env_hash(type, tl, name, nl);
    for (struct env *e = *etab_head(be, h); e != NULL; e = e->hnext)
        if (e->hash == h && e->type_len == tl && e->name_len == nl &&
            memcmp(e->type, type, tl) == 0 && memcmp(e->name, name, nl) == 0)
            return e;
    return NULL;
}

/* etab_move moves up to n chains of the old table into the new one. */
static void
etab_move(struct backend *be, size_t n)
{
    for (; n > 0 && be->etab_old != NULL; n--) {
        struct env *e = be->etab_old[be->emove];
        be->etab_old[be->emove++] = NULL;
        while (e != NULL) {
            struct env *next = e->hnext;
            e->hnext = be->etab[e->hash & be->emask];
            be->etab[e->hash & be->emask] = e;
            e = next;
        }
        if (be->emove > be->eomask) {
            free(be->etab_old);
            be->etab_old = NULL;
        }
    }
}

static int
etab_grow(struct backend *be)
{
    etab_move(be, SIZE_MAX); /* the last growth's moves are long done: cannot happen */
    size_t ncap = (be->emask + 1) * 2;
    struct env **nt = calloc(ncap, sizeof(*nt));
    if (nt == NULL)
        return -ENOMEM;
    be->etab_old = be->etab;
    be->eomask = be->emask;
    be->emove = 0;
    be->etab = nt;
    be->emask = ncap - 1;
    return 0;
}

/* etype_get returns the histograms of environment type type[0..tl), created if needed
 * (past BE_MAX_ETYPES types, those of "other"), or NULL (no memory). They live as long as
 * the backend: a type's counts never go back. */
static struct metrics_type *
etype_get(struct backend *be, const char *type, size_t tl)
{
    for (size_t i = 0; i < be->n_etypes; i++) {
        const char *t = be->etypes[i]->type;
        if (strlen(t) == tl && memcmp(t, type, tl) == 0)
            return be->etypes[i];
    }
    if (be->n_etypes >= BE_MAX_ETYPES) {
        type = "other";
        tl = 5;
        for (size_t i = BE_MAX_ETYPES; i < be->n_etypes; i++)
            return be->etypes[i];
    }
    if (be->etypes == NULL && (be->etypes = calloc(BE_MAX_ETYPES + 1, sizeof(*be->etypes))) == NULL)
        return NULL;
    struct metrics_type *m = calloc(1, sizeof(*m) + tl + 1);
    if (m == NULL)
        return NULL;
    char *name = (char *)(m + 1);
    memcpy(name, type, tl);
    m->type = name;
    be->etypes[be->n_etypes++] = m;
    return m;
}

/* env_get returns the environment (type, name), created if needed, or NULL (no memory). */
static struct env *
env_get(struct backend *be, const char *type, size_t tl, const char *name, size_t nl)
{
    struct env *e = env_find(be, type, tl, name, nl);
    if (e != NULL)
        return e;
    struct metrics_type *et = etype_get(be, type, tl);
    if (et == NULL)
        return NULL;
    e = slab_alloc(&be->env_slab);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->etype = et;
    e->type = malloc(tl + nl + 2);
    if (e->type == NULL) {
        slab_free(&be->env_slab, e);
        return NULL;
    }
    memcpy(e->type, type, tl);
    e->type[tl] = '\0';
    e->name = e->type + tl + 1;
    memcpy(e->name, name, nl);
    e->name[nl] = '\0';
    e->type_len = (uint32_t)tl;
    e->name_len = (uint32_t)nl;
    e->hash = env_hash(type, tl, name, nl);
    if (be->nenvs >= be->emask + 1)
        etab_grow(be);
    else
        etab_move(be, ETAB_MOVE); /* done before the next growth: ETAB_MOVE >= 2 */
    struct env **head = etab_head(be, e->hash);
    e->hnext = *head;
    *head = e;
    be->nenvs++;
    return e;
}

static void
orphan_remove(struct backend *be, struct env *e)
{
    if (!e->in_orphans)
        return;
    if (e->oprev != NULL)
        e->oprev->onext = e->onext;
    else
        be->orphans = e->onext;
    if (e->onext != NULL)
        e->onext->oprev = e->oprev;
    e->oprev = e->onext = NULL;
    e->in_orphans = false;
}

static void
orphan_add(struct backend *be, struct env *e)
{
    if (e->in_orphans)
        return;
    e->in_orphans = true;
    e->orphan_since = be->now_ms;
    e->oprev = NULL;
    e->onext = be->orphans;
    if (be->orphans != NULL)
        be->orphans->oprev = e;
    be->orphans = e;
}

static void
env_unref(struct backend *be, struct env *e)
{
    if (--e->refs > 0)
        return;
    orphan_remove(be, e);
    struct env **s = etab_head(be, e->hash);
    while (*s != e)
        s = &(*s)->hnext;
    *s = e->hnext;
    be->nenvs--;
    fair_drop_scope(&be->fair, &e->keys); /* idle records: no job holds e */
    free(e->heap);
    free(e->kheap);
    free(e->aheap);
    free(e->vid);
    free(e->type);
    slab_free(&be->env_slab, e);
}

/* ---------------------------------------------------------------------------------------- */
/* Waiting jobs: per-environment heap on (priority, arrival) and arrival FIFO               */

static inline bool
job_less(const struct job *a, const struct job *b)
{
    /* (priority, arrival), INGInious' order: the heap without fair share (one record per
     * priority: the same record, the same priority). */
    if (a->fk == b->fk)
        return a->seq < b->seq;
    int64_t pa = job_prio(a), pb = job_prio(b);
    return pa < pb || (pa == pb && a->seq < b->seq);
}

static inline void
jheap_place(struct env *e, uint32_t i, struct job *j)
{
    e->heap[i] = j;
    j->u.heap_idx = i;
}

static void
jheap_up(struct env *e, uint32_t i)
{
    struct job *j = e->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!job_less(j, e->heap[p]))
            break;
        jheap_place(e, i, e->heap[p]);
        i = p;
    }
    jheap_place(e, i, j);
}

static void
jheap_down(struct env *e, uint32_t i)
{
    struct job *j = e->heap[i];
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        const struct job *best = j;
        if (l < e->n && job_less(e->heap[l], best)) {
            m = l;
            best = e->heap[l];
        }
        if (l + 1 < e->n && job_less(e->heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        jheap_place(e, i, e->heap[m]);
        i = m;
    }
    jheap_place(e, i, j);
}

/* fifo_late tells whether a job of arrival seq would join e's FIFO behind a newer job (a
 * job requeued after its agent was lost): the FIFO then no longer gives the order. */
static inline bool
fifo_late(const struct env *e, uint64_t seq)
{
    return e->fifo_tail != NULL && e->fifo_tail->seq > seq;
}

/* jheap_reserve makes room for one more job (priority prio, arrival seq; UINT64_MAX for a
 * new job) in e's heap, if queueing it will use the heap (an environment whose jobs share
 * one priority and joined in arrival order has none; with fair share the heap is one of
 * keys). */
static int
jheap_reserve(const struct backend *be, struct env *e, int64_t prio, uint64_t seq)
{
    if (be->fair.mode != FAIR_NONE) { /* room for one more key in the heap of keys */
        if (e->kn < e->kcap)
            return 0;
        uint32_t cap = e->kcap ? e->kcap * 2 : 8;
        struct kent *h = realloc(e->kheap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        e->kheap = h;
        e->kcap = cap;
        return 0;
    }
    if (e->n < e->cap || (!e->heaped && (e->n == 0 || (prio == e->p0 && !fifo_late(e, seq)))))
        return 0;
    uint32_t cap = e->cap ? e->cap : 8;
    while (cap <= e->n)
        cap *= 2;
    struct job **h = realloc(e->heap, cap * sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    e->heap = h;
    e->cap = cap;
    return 0;
}

static void
jheap_remove(struct env *e, struct job *j)
{
    uint32_t i = j->u.heap_idx;
    e->n--;
    if (i == e->n)
        return;
    struct job *m = e->heap[e->n];
    jheap_place(e, i, m);
    jheap_up(e, i);
    if (m->u.heap_idx == i)
        jheap_down(e, i);
}

/* env_best returns the next job of a non-empty environment: the lowest (priority,
 * arrival). With one priority among its jobs that is the FIFO's head, in O(1) and without
 * touching the heap. */
static inline struct job *
env_best(const struct env *e)
{
    if (e->kn > 0)
        return e->kheap[0].k->qhead;
    return e->heaped ? e->heap[0] : e->fifo_head;
}

/* Fair share: each key's waiting jobs in a list in their order, the keys in a heap on their
 * first job. key_less evaluates every comparison and combines them bitwise, without a
 * branch: which child of a sift is smaller is unpredictable, a conditional move is not. */
static inline bool
key_less(const struct kent *a, const struct kent *b)
{
    return (a->prio < b->prio) |
           ((a->prio == b->prio) & ((a->vt < b->vt) | ((a->vt == b->vt) & (a->seq < b->seq))));
}

static inline void
kheap_place(struct env *e, uint32_t i, const struct kent *x)
{
    e->kheap[i] = *x;
    x->k->hidx = i + 1;
}

/* kheap_rise places x, whose hole is at i, on its way up the heap, no higher than top. */
static void
kheap_rise(struct env *e, uint32_t i, uint32_t top, const struct kent *x)
{
    while (i > top && key_less(x, &e->kheap[(i - 1) / 2])) {
        kheap_place(e, i, &e->kheap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    kheap_place(e, i, x);
}

static void
kheap_up(struct env *e, uint32_t i)
{
    struct kent x = e->kheap[i];
    kheap_rise(e, i, 0, &x);
}

/* kheap_down restores the heap below i, whose entry's key grew. Bottom-up: the hole at i
 * goes down along the smaller children to the bottom (one comparison per level, no branch
 * on the keys), then the entry rises from there. With fair share the key just served
 * usually has the largest tag of all and rises not at all; a plain sift-down would compare
 * it with both children at each level, a mispredicted branch each. */
static void
kheap_down(struct env *e, uint32_t i)
{
    struct kent x = e->kheap[i];
    uint32_t n = e->kn, top = i;
    for (uint32_t l = 2 * i + 1; l < n; l = 2 * i + 1) {
        uint32_t m = l + (uint32_t)(l + 1 < n && key_less(&e->kheap[l + 1], &e->kheap[l]));
        kheap_place(e, i, &e->kheap[m]);
        i = m;
    }
    kheap_rise(e, i, top, &x);
}

/* rank_prefetch starts loading what an update of r at ordinal o touches (its bit, its
 * arrival and tag); with many keys these are cold, and the caller has other work to do
 * before the update. */
static inline void
rank_prefetch(const struct rank *r, uint64_t o)
{
    if (r->cap == 0)
        return;
    uint32_t q = (uint32_t)(o & (r->cap - 1));
    __builtin_prefetch(&r->bits[q / 64]);
    __builtin_prefetch(&r->t[q / 64 + 1]); /* the Fenwick path's first counter */
    __builtin_prefetch(&r->sq[q]);
    if (r->keys)
        __builtin_prefetch(&r->vt[q]);
}

/* key_prefetch_rec starts loading record k (fair share: a key that will soon be the first of
 * its environment's heap), so that key_prefetch_head reads it without waiting. */
static inline void
key_prefetch_rec(const struct fair_key *k)
{
    for (size_t off = 0; off < sizeof(*k); off += 64)
        __builtin_prefetch((const char *)k + off);
}

/* job_prefetch_head starts loading waiting job j's header (its 96 bytes may span two lines:
 * prev/next at the start, the ordinal at the end). */
static inline void
job_prefetch_head(const struct job *j)
{
    __builtin_prefetch(j);
    __builtin_prefetch(&j->ord);
}

/* key_prefetch_tail: a new job of k is coming (its ordinal and its key's last job). */
static inline void
key_prefetch_tail(const struct fair_key *k)
{
    rank_prefetch(&k->rk, k->rk.next);
    if (k->qtail != NULL)
        job_prefetch_head(k->qtail);
}

/* key_prefetch_head: k's first job is the next to leave e (its ordinal, the job after it). */
static inline void
key_prefetch_head(const struct fair_key *k)
{
    rank_prefetch(&k->rk, k->qord);
    rank_prefetch(&k->rk, k->qord + 1);
    if (k->qhead != NULL && k->qhead->next != NULL)
        job_prefetch_head(k->qhead->next);
}

/* key_head notes k's first waiting job h: its ordinal, (tag, arrival), and starts loading
 * the one after it (the key's next job after this one leaves). */
static inline void
key_head(struct fair_key *k, const struct job *h)
{
    k->qord = h->ord;
    k->qvt = job_vt(h);
    k->qseq = h->seq;
    if (h->next != NULL)
        job_prefetch_head(h->next);
}

/* key_insert puts waiting job j (its ordinal given) in its key's list, at its place (the
 * list is in ordinal order: a new job at the tail, a requeued one back at its ordinal), and
 * the key in the heap. Needs jheap_reserve done. */
static void
key_insert(struct env *e, struct job *j)
{
    struct fair_key *k = j->fk;
    struct job *after = k->qtail;
    if (after != NULL && j->ord < after->ord) {
        after = NULL;
        for (struct job *x = k->qhead; x != NULL && x->ord < j->ord; x = x->next)
            after = x;
    }
    j->prev = after;
    j->next = after != NULL ? after->next : k->qhead;
    if (j->next != NULL)
        j->next->prev = j;
    else
        k->qtail = j;
    if (after != NULL) {
        after->next = j;
        return;
    }
    k->qhead = j;
    key_head(k, j);
    struct kent x = {k->prio, k->qvt, k->qseq, k};
    if (k->hidx == 0) {
        kheap_place(e, e->kn++, &x);
        kheap_up(e, e->kn - 1);
    } else {
        kheap_place(e, k->hidx - 1, &x);
        kheap_up(e, k->hidx - 1);
    }
}

static void
key_remove(struct env *e, struct job *j)
{
    struct fair_key *k = j->fk;
    bool head = k->qhead == j;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        k->qhead = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    else
        k->qtail = j->prev;
    j->prev = j->next = NULL;
    if (!head)
        return;
    uint32_t i = k->hidx - 1;
    if (k->qhead != NULL) { /* its next job is later: the key goes down */
        key_head(k, k->qhead);
        e->kheap[i].vt = k->qvt;
        e->kheap[i].seq = k->qseq;
        kheap_down(e, i);
        return;
    }
    k->hidx = 0;
    if (i == --e->kn)
        return;
    struct fair_key *m = e->kheap[e->kn].k;
    kheap_place(e, i, &e->kheap[e->kn]);
    kheap_up(e, i);
    if (m->hidx == i + 1)
        kheap_down(e, i);
}

/* fifo_append puts j at the tail of e's FIFO, the order in which jobs (re-)entered the queue
 * (so the entry stamps increase along it). A new job's arrival seq is the largest, so the
 * FIFO stays in seq order until a job requeued after its agent was lost joins behind newer
 * ones: job_enqueue then lets the heap give the order, in O(log n) per job, where inserting
 * it at its place would walk the queue (8,192 requeues behind 200,000 jobs took 8.9 s). */
static void
fifo_append(struct env *e, struct job *j)
{
    j->next = NULL;
    j->prev = e->fifo_tail;
    if (e->fifo_tail != NULL)
        e->fifo_tail->next = j;
    else
        e->fifo_head = j;
    e->fifo_tail = j;
}

static void
fifo_remove(struct env *e, struct job *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        e->fifo_head = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    else
        e->fifo_tail = j->prev;
    j->prev = j->next = NULL;
}

/* head_set notes the key of e's best job, which the caller has just touched. */
static inline void
head_set(struct env *e, const struct job *b)
{
    e->hprio = job_prio(b);
    e->hseq = b->seq;
}

/* job_enqueue makes j waiting in its environment: a new job (ord UINT64_MAX) takes the next
 * ordinal of its record (with fair share, at a start tag of its key), a requeued one its
 * own again. Needs jheap_reserve and rank_reserve done. */
static void
job_enqueue(struct backend *be, struct job *j)
{
    struct env *e = job_env(j);
    struct rank *r = &j->fk->rk;
    int64_t prio = job_prio(j);
    j->status = JOB_WAITING;
    j->agent = NULL;
    uint64_t stamp = be->now_ms << ENTRY_BITS;
    j->t.entered = be->entry_stamp = stamp > be->entry_stamp ? stamp : be->entry_stamp + 1;
    if (e->n == 0) {
        e->p0 = prio;
        e->n_other = 0;
        e->heaped = false;
    }
    if (prio != e->p0)
        e->n_other++;
    if (be->fair.mode != FAIR_NONE) {
        struct fair_key *k = j->fk;
        if (j->ord == UINT64_MAX) {
            uint64_t f = k->ftag, vt = fair_tag(k, e->vtime);
            j->ord = rank_push(r, vt, j->seq);
            if (!k->brk_ok || vt != f) { /* a new run of tags */
                k->brk = j->ord;
                k->brk_vt = vt;
                k->brk_sq = j->seq;
                k->brk_ok = true;
            }
        } else { /* its tag, still at its ordinal (or, if the window lost it, the one the
                  * window holds there, which keeps the order: rank.h) */
            uint64_t vt = r->vt[j->ord & (r->cap - 1)];
            rank_revive(r, j->ord, vt, j->seq);
            if (k->brk_ok && j->ord >= k->brk && vt != k->brk_vt + (j->ord - k->brk) * k->inc)
                k->brk_ok = false; /* until the next push starts a run */
        }
        key_insert(e, j);
        e->n++;
        if (env_best(e) == j)
            head_set(e, j);
        goto counted;
    }
    if (j->ord == UINT64_MAX)
        j->ord = rank_push(r, 0, j->seq);
    else
        rank_revive(r, j->ord, 0, j->seq);
    bool late = fifo_late(e, j->seq);
    fifo_append(e, j);
    if (e->heaped) {
        e->heap[e->n++] = j;
        jheap_up(e, e->n - 1);
        if (e->heap[0] == j)
            head_set(e, j);
    } else if (e->n_other > 0 || late) {
        /* A second priority, or a requeued job behind newer ones: from now on the heap
         * orders them (heapify the FIFO: O(n) once, then the environment stays heaped until
         * it empties, which costs n removals, so O(1) amortised per job). */
        uint32_t i = 0;
        for (struct job *x = e->fifo_head; x != NULL; x = x->next)
            jheap_place(e, i++, x);
        e->n = i;
        for (uint32_t k = e->n / 2; k-- > 0;)
            jheap_down(e, k);
        e->heaped = true;
        head_set(e, e->heap[0]);
    } else {
        e->n++; /* one priority: arrival order (the FIFO) is the order */
        if (e->fifo_head == j)
            head_set(e, j);
    }
counted:
    be->n_waiting++;
    j->fk->nwait++;
    if (j->owner != NULL)
        j->owner->n_waiting++;
    if (e->n_providers == 0 && be->cfg.orphan_timeout_ms > 0)
        orphan_add(be, e);
}

static void
job_unqueue(struct backend *be, struct job *j)
{
    struct env *e = job_env(j);
    bool was_best = env_best(e) == j;
    rank_kill(&j->fk->rk, j->ord);
    if (be->fair.mode != FAIR_NONE) {
        key_remove(e, j);
        e->n--;
    } else {
        if (e->heaped)
            jheap_remove(e, j);
        else
            e->n--;
        fifo_remove(e, j);
    }
    if (was_best && e->n > 0) /* the new best was just touched by the removal */
        head_set(e, env_best(e));
    if (job_prio(j) != e->p0)
        e->n_other--;
    if (e->n == 0 && e->heaped) {
        /* Back to FIFO order only once empty: switching per job could heapify the whole
         * queue again and again. */
        e->heaped = false;
        free(e->heap);
        e->heap = NULL;
        e->cap = 0;
    }
    be->n_waiting--;
    j->fk->nwait--;
    if (j->owner != NULL)
        j->owner->n_waiting--;
    if (e->n == 0)
        orphan_remove(be, e);
}

static void
owner_unlink(struct job *j)
{
    struct be_client *c = j->owner;
    if (c == NULL)
        return;
    if (c->sess != NULL && c->sess->cursor == j)
        c->sess->cursor = j->onext; /* listing a resumed session's jobs: j is not listed */
    c->job_bytes -= j->body_len;
    if (j->oprev != NULL)
        j->oprev->onext = j->onext;
    else
        c->jobs = j->onext;
    if (j->onext != NULL)
        j->onext->oprev = j->oprev;
    j->oprev = j->onext = NULL;
    j->owner = NULL;
}

static void jr_ended(struct backend *be, const struct job *j);
static void jr_fresh_ack(struct backend *be, struct job *j);

static void
job_free_h(struct backend *be, struct job *j, uint64_t idh)
{
    if (be->jr != NULL)
        jr_ended(be, j);
    idtab_remove(&be->jtab, idh, j);
    owner_unlink(j);
    struct env *e = job_env(j);
    fair_put(&be->fair, j->fk, &e->keys);
    be->job_bytes -= j->body_len;
    pool_free(&be->jobs_pool, j, sizeof(*j) + j->body_len);
    env_unref(be, e);
}

/* job_free frees j; job_free_h is for callers that already hashed its id. */
static void
job_free(struct backend *be, struct job *j)
{
    job_free_h(be, j, id_hash(job_id(j), j->id_len));
}

/* A gone client's jobs are dropped in batches (be_reap); until then they stay in the tables
 * but must not run, be listed or be answered. live_owner is the client to tell about j, if
 * any; owner_gone tells whether j is such a job; drop_gone drops it (a waiting one) now. */
static inline struct be_client *
live_owner(const struct job *j)
{
    return j->owner != NULL && !j->owner->gone ? j->owner : NULL;
}

static inline bool
owner_gone(const struct job *j)
{
    return j->owner != NULL && j->owner->gone;
}

/* send_started tells j's owner that j started (BackendJobStarted), if it is connected: a
 * detached session learns it from its job list when it resumes (proto.md 7.9). */
static void
send_started(struct backend *be, const struct job *j)
{
    struct be_client *c = live_owner(j);
    if (c == NULL || c->peer == NULL)
        return;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_STARTED;
    m.u.ref.job_id = job_id_view(j);
    be->ops.send(c->peer, &m);
}

static void
drop_gone(struct backend *be, struct job *j)
{
    j->owner->dropped++;
    job_unqueue(be, j);
    job_free(be, j);
}

/* ---------------------------------------------------------------------------------------- */
/* Free slots and the per-environment agent heaps                                           */

static inline uint64_t
agent_key(const struct be_agent *a)
{
    return a->nfresh > 0 ? a->fresh_seq : a->ring[a->fhead];
}

static inline void
aheap_place(struct env *e, uint32_t i, struct aref r)
{
    e->aheap[i] = r;
    r.a->envs[r.ref].aidx = i + 1;
}

static void
aheap_up(struct env *e, uint32_t i)
{
    struct aref r = e->aheap[i];
    uint64_t k = agent_key(r.a);
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (k >= agent_key(e->aheap[p].a))
            break;
        aheap_place(e, i, e->aheap[p]);
        i = p;
    }
    aheap_place(e, i, r);
}

static void
aheap_down(struct env *e, uint32_t i)
{
    struct aref r = e->aheap[i];
    uint64_t k = agent_key(r.a);
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        uint64_t best = k;
        if (l < e->an && agent_key(e->aheap[l].a) < best) {
            m = l;
            best = agent_key(e->aheap[l].a);
        }
        if (l + 1 < e->an && agent_key(e->aheap[l + 1].a) < best)
            m = l + 1;
        if (m == i)
            break;
        aheap_place(e, i, e->aheap[m]);
        i = m;
    }
    aheap_place(e, i, r);
}

static void
aheap_remove(struct env *e, uint32_t i)
{
    struct aref gone = e->aheap[i];
    gone.a->envs[gone.ref].aidx = 0;
    e->an--;
    if (i == e->an)
        return;
    struct aref m = e->aheap[e->an];
    aheap_place(e, i, m);
    aheap_up(e, i);
    if (m.a->envs[m.ref].aidx == i + 1)
        aheap_down(e, i);
}

/* agent_enter_heaps puts a (which just got its first free slot) into its envs' heaps. The
 * heaps were sized at hello (one entry per provider), so this cannot fail. */
static inline void
aheap_push(struct be_agent *a, uint32_t i)
{
    struct env *e = a->envs[i].env;
    struct aref r = {a, i};
    e->aheap[e->an++] = r;
    aheap_up(e, e->an - 1);
}

static void
agent_enter_heaps(struct be_agent *a)
{
    for (uint32_t i = 0; i < a->nenvs; i++)
        aheap_push(a, i);
}

static void
agent_leave_heaps(struct be_agent *a)
{
    for (uint32_t i = 0; i < a->nenvs; i++)
        if (a->envs[i].aidx != 0)
            aheap_remove(a->envs[i].env, a->envs[i].aidx - 1);
}

/* slot_take removes a's oldest free slot. */
static void
slot_take(struct be_agent *a)
{
    a->nfree--;
    if (a->nfresh > 0) {
        a->nfresh--;
        a->fresh_seq++;
    } else {
        a->fhead = a->fhead + 1 == a->rcap ? 0 : a->fhead + 1;
    }
    if (a->nfree == 0) {
        agent_leave_heaps(a);
        return;
    }
    for (uint32_t i = 0; i < a->nenvs; i++) { /* its key grew */
        struct env *e = a->envs[i].env;
        if (e->an > 1) /* alone in the heap, it stays where it is */
            aheap_down(e, a->envs[i].aidx - 1);
    }
}

/* RING_MIN is the free-slot ring's size at a hello (at most the slots announced). */
#define RING_MIN 16

/* ring_grow doubles a's free-slot ring (up to its slots), in FIFO order from index 0.
 * Returns 0 or -ENOMEM. */
static int
ring_grow(struct be_agent *a)
{
    uint32_t cap = a->rcap * 2 > a->slots ? a->slots : a->rcap * 2;
    uint32_t n = a->nfree - a->nfresh;
    uint64_t *r = malloc((size_t)cap * sizeof(*r));
    if (r == NULL || cap <= a->rcap) {
        free(r);
        return -ENOMEM;
    }
    for (uint32_t i = 0, k = a->fhead; i < n; i++, k = k + 1 == a->rcap ? 0 : k + 1)
        r[i] = a->ring[k];
    free(a->ring);
    a->ring = r;
    a->rcap = cap;
    a->fhead = 0;
    return 0;
}

/* slot_add appends a free slot of a at the end of the FIFO. */
static void
slot_add(struct backend *be, struct be_agent *a)
{
    uint32_t n = a->nfree - a->nfresh;
    if (n == a->rcap && ring_grow(a) != 0) {
        a->slots--; /* no job is lost: the agent runs with one slot less */
        log_msg(LOG_ERR, "agent %s: out of memory for its free slots: %u slots now", a->name,
                a->slots);
        return;
    }
    uint32_t pos = a->fhead + n;
    if (pos >= a->rcap)
        pos -= a->rcap;
    a->ring[pos] = ++be->slot_seq;
    if (a->nfree++ == 0)
        agent_enter_heaps(a);
}

/* ---------------------------------------------------------------------------------------- */
/* Dispatch                                                                                  */

/* best_job is the waiting job a free slot of a takes, or NULL (at once when none waits). */
static struct job *
best_job(const struct backend *be, const struct be_agent *a)
{
    const struct env *best = NULL;
    if (be->n_waiting == 0)
        return NULL;
    for (uint32_t i = 0; i < a->nenvs; i++) {
        const struct env *e = a->envs[i].env;
        if (e->n > 0 && (best == NULL || e->hprio < best->hprio ||
                         (e->hprio == best->hprio && e->hseq < best->hseq)))
            best = e;
    }
    return best != NULL ? env_best(best) : NULL;
}

static inline uint32_t
job_bounces(const struct job *j)
{
    return j->flags >> JOB_BOUNCE_SHIFT;
}

static void
run_append(struct be_agent *a, struct job *j)
{
    j->next = NULL;
    j->prev = a->run_tail;
    if (a->run_tail != NULL)
        a->run_tail->next = j;
    else
        a->run_head = j;
    a->run_tail = j;
    a->nrun++;
    job_env(j)->running++;
}

static void
run_remove(struct backend *be, struct job *j)
{
    struct be_agent *a = j->agent;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        a->run_head = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    else
        a->run_tail = j->prev;
    j->prev = j->next = NULL;
    a->nrun--;
    job_env(j)->running--;
    be->n_running--;
    if (j->flags & JOB_F_KILLING) {
        j->flags &= (uint8_t)~JOB_F_KILLING;
        a->nkilling--;
    }
    j->agent = NULL;
}

static void jr_dispatched(struct backend *be, const struct job *j, const uint8_t *rid);

/* run_job sends waiting job j to agent a, whose slot for it is already taken. */
static void
run_job(struct backend *be, struct be_agent *a, struct job *j)
{
    struct env *e = job_env(j);
    metrics_hist_observe(&e->etype->wait, job_waited_ms(be, j) * 1000);
    uint64_t vt = job_vt(j);
    job_unqueue(be, j);
    if (vt > e->vtime) /* fair share: the environment's virtual time */
        e->vtime = vt;
    if (!e->heaped && e->n > 0) {
        /* In a long queue the jobs are cold. Start loading the next one to run here (its
         * first lines: the record and the spec's start; its header line is already warm,
         * loaded here at the previous dispatch, or with fair share when it became its key's
         * first) and the header of the one after it, whose (priority, arrival) becomes the
         * environment's key when the next one leaves (with fair share: its key's). */
        const struct job *h = env_best(e);
        if (e->kn > 0) {
            /* The next key's record was loaded one dispatch ago (below): its ordinals and
             * next job now; the keys that may come after it (the first's children) start
             * loading their records. */
            key_prefetch_head(e->kheap[0].k);
            if (e->kn > 1)
                key_prefetch_rec(e->kheap[1].k);
            if (e->kn > 2)
                key_prefetch_rec(e->kheap[2].k);
        }
        size_t n = sizeof(*h) + h->body_len;
        n = n < JOB_PREFETCH_BYTES ? n : JOB_PREFETCH_BYTES;
        for (size_t off = 64; off < n; off += 64)
            __builtin_prefetch((const char *)h + off);
        if (h->next != NULL) {
            __builtin_prefetch(h->next);
            __builtin_prefetch(&h->next->seq);
        }
    }
    j->status = JOB_DISPATCHED;
    j->agent = a;
    j->t.run.dseq = (uint32_t)++be->dispatch_seq;
    j->u.started_ms = (uint32_t)be->now_ms;
    j->t.run.dl = (uint32_t)be->now_ms + j->deadline_ms;
    if (a->dl_ms > be->now_ms + j->deadline_ms)
        a->dl_ms = be->now_ms + j->deadline_ms;
    run_append(a, j);
    be->n_running++;
    be->stats.jobs_dispatched++;
    if (be->jr != NULL && a->has_rid) /* an agent that may claim it after a restart */
        jr_dispatched(be, j, a->rid);
    log_msg(LOG_DEBUG, "job %.*s dispatched to agent %s", (int)j->id_len, job_id(j), a->name);
    uint32_t off = spec_off(j);
    be->ops.relay(a->peer, ING_BACKEND_NEW_JOB, j->body + off, j->body_len - off);
}

/* ghost_find returns the ghost holding the jobs of agent id rid, or NULL. */
static struct be_agent *
ghost_find(const struct backend *be, const uint8_t *rid)
{
    for (struct be_agent *g = be->ghosts; g != NULL; g = g->next)
        if (memcmp(g->rid, rid, ING_AGENT_ID_LEN) == 0)
            return g;
    return NULL;
}

/* ghost_get returns the ghost of agent id rid (name: for the logs), created with a grace
 * ending cfg.resume_grace_ms from now if needed, or NULL (no memory). */
static struct be_agent *
ghost_get(struct backend *be, const uint8_t *rid, const char *name)
{
    struct be_agent *g = ghost_find(be, rid);
    if (g != NULL)
        return g;
    g = slab_alloc(&be->agent_slab);
    if (g == NULL)
        return NULL;
    memset(g, 0, sizeof(*g));
    g->ghost = true;
    g->has_rid = true;
    memcpy(g->rid, rid, ING_AGENT_ID_LEN);
    g->name = strdup(name != NULL ? name : "");
    if (g->name == NULL) {
        slab_free(&be->agent_slab, g);
        return NULL;
    }
    g->dl_ms = be->now_ms + be->cfg.resume_grace_ms;
    g->next = be->ghosts;
    if (be->ghosts != NULL)
        be->ghosts->prev = g;
    be->ghosts = g;
    return g;
}

/* ghost_free frees ghost g, which holds no job any more. */
static void
ghost_free(struct backend *be, struct be_agent *g)
{
    if (g->prev != NULL)
        g->prev->next = g->next;
    else
        be->ghosts = g->next;
    if (g->next != NULL)
        g->next->prev = g->prev;
    free(g->name);
    slab_free(&be->agent_slab, g);
}

/* run_move moves running job j to agent (or ghost) to, keeping its state and kill. */
static void
run_move(struct backend *be, struct job *j, struct be_agent *to)
{
    bool killing = (j->flags & JOB_F_KILLING) != 0;
    bool was_held = j->agent->ghost;
    run_remove(be, j);
    j->agent = to;
    run_append(to, j);
    be->n_running++;
    if (killing) {
        j->flags |= JOB_F_KILLING;
        to->nkilling++;
    }
    be->n_held += (uint64_t)to->ghost - (uint64_t)was_held;
}

/* dispatch gives waiting job j a's oldest free slot. */
static void
dispatch(struct backend *be, struct be_agent *a, struct job *j)
{
    if (owner_gone(j)) { /* not reaped yet: drop it, not run it */
        drop_gone(be, j);
        return;
    }
    slot_take(a);
    run_job(be, a, j);
}

/* sched_agent lets a's free slots take the best jobs of its environments. */
static void
sched_agent(struct backend *be, struct be_agent *a)
{
    struct job *j;
    if (be->draining || a->block != 0)
        return;
    while (a->nfree > 0 && (j = best_job(be, a)) != NULL)
        dispatch(be, a, j);
}

/* sched_envs gives the waiting jobs of envs to the free slots in FIFO order (each slot
 * taking the best job of its agent's environments), until none can take one. */
static void
sched_envs(struct backend *be, struct env *const *envs, size_t n)
{
    if (be->draining)
        return;
    for (;;) {
        struct be_agent *first = NULL;
        for (size_t i = 0; i < n; i++) {
            struct env *e = envs[i];
            if (e->n == 0)
                continue;
            while (e->an > 0 && e->aheap[0].a->block == BLOCK_LEAVE)
                aheap_remove(e, 0); /* a registration removes it: see BLOCK_LEAVE */
            if (e->an > 0 && e->aheap[0].a->block == 0 &&
                (first == NULL || agent_key(e->aheap[0].a) < agent_key(first)))
                first = e->aheap[0].a;
        }
        if (first == NULL)
            return;
        /* When one environment holds every waiting job (a submission to an idle backend),
         * it holds first's best: no need to compare first's other environments. */
        struct job *j =
            n == 1 && envs[0]->n == be->n_waiting ? env_best(envs[0]) : best_job(be, first);
        dispatch(be, first, j);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Messages to clients                                                                       */

static void session_keep_msg(struct backend *be, struct be_client *c, uint64_t seq,
                             const struct ing_msg *m);
static void session_keep(struct backend *be, struct be_client *c, uint64_t seq,
                         const uint8_t *body, size_t len);

/* send_result_seq sends c a synthetic result (kept if c is a detached session: seq is the
 * job's arrival order). */
static void
send_result_seq(struct backend *be, struct be_client *c, struct ing_view id, const char *kind,
                const char *text, struct ing_view state, uint64_t seq)
{
    if (c == NULL)
        return;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_DONE;
    struct ing_job_result *r = &m.u.result;
    r->job_id = id;
    r->result_kind.p = kind;
    r->result_kind.len = (uint32_t)strlen(kind);
    r->result_text.p = text;
    r->result_text.len = (uint32_t)strlen(text);
    r->grade = 0.0;
    r->problems.p = r->tests.p = r->custom.p = (const char *)empty_map;
    r->problems.len = r->tests.len = r->custom.len = 1;
    r->state = state;
    r->archive.p = NULL;
    r->stdout_.p = r->stderr_.p = "";
    if (seq == 0 && c->peer != NULL) {
        /* A refusal answers the submission on the connection that sent it: no job to keep it
         * for, so never kept, not even for a HOLD connection (which only submits, and must
         * learn that its job was refused: kept, it was never told, and the next connection
         * got a crash for a job the session never held); counted when acknowledging. */
        be->ops.send(c->peer, &m);
        if (client_acks(c))
            c->sess->sent++;
    } else if (client_keeps(c) || client_acks(c)) {
        session_keep_msg(be, c, seq, &m);
    } else {
        be->ops.send(c->peer, &m);
    }
}

static void
send_result(struct backend *be, struct be_client *c, struct ing_view id, const char *kind,
            const char *text, struct ing_view state)
{
    send_result_seq(be, c, id, kind, text, state, 0);
}

/* failure_add records a failure of job j for the status page. */
static void
failure_add(struct backend *be, const struct job *j, const char *kind, size_t kl,
            const char *text, size_t tl)
{
    struct be_failure *f = &be->fail[be->nfail++ % BE_FAILURES];
    f->time_s = be->wall_s;
    snprintf(f->job_id, sizeof(f->job_id), "%.*s", (int)j->id_len, job_id(j));
    snprintf(f->env, sizeof(f->env), "%s/%s", job_env(j)->type, job_env(j)->name);
    snprintf(f->result, sizeof(f->result), "%.*s", (int)(kl < 15 ? kl : 15), kind);
    snprintf(f->reason, sizeof(f->reason), "%.*s", (int)(tl < 127 ? tl : 127), text);
}

static void
send_job_result(struct backend *be, struct job *j, const char *kind, const char *text)
{
    if (strcmp(kind, "crash") == 0)
        failure_add(be, j, kind, strlen(kind), text, strlen(text));
    if (be->jr != NULL && j->seq > be->jr_settled)
        jr_fresh_ack(be, j);
    send_result_seq(be, live_owner(j), job_id_view(j), kind, text, job_state(j), j->seq);
}

static void
send_kill(struct backend *be, struct job *j)
{
    if (j->agent->ghost) { /* sent if its agent claims it; else it ends killed (7.10) */
        if (!(j->flags & JOB_F_KILLING)) {
            j->flags |= JOB_F_KILLING;
            j->agent->nkilling++;
        }
        return;
    }
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_KILL_JOB;
    m.u.kill.job_id = job_id_view(j);
    m.u.kill.state = job_state(j);
    be->ops.send(j->agent->peer, &m);
    if (!(j->flags & JOB_F_KILLING)) {
        j->flags |= JOB_F_KILLING;
        j->agent->nkilling++;
    }
    if (be->cfg.kill_timeout_ms > 0) { /* else the job's own deadline still holds */
        j->t.run.dl = (uint32_t)(be->now_ms + be->cfg.kill_timeout_ms);
        if (j->agent->dl_ms > be->now_ms + be->cfg.kill_timeout_ms)
            j->agent->dl_ms = be->now_ms + be->cfg.kill_timeout_ms;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The environment list                                                                      */

/* mp_str_size is the encoded size of a msgpack str of len bytes. */
static inline uint64_t
mp_str_size(uint64_t len)
{
    return len + (len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5);
}

#define LIST_TYPE_COST(t) (mp_str_size((t)->type_len) + 5) /* its name and array header */
#define LIST_BASE 5                                        /* the map header */

/* list_bytes_max is the largest environment list we may send: it must fit the frame limit
 * announced in the Welcome, envelope included. */
static uint64_t
list_bytes_max(const struct backend *be)
{
    uint64_t frame = be->cfg.max_frame > BE_FRAME_SLACK ? be->cfg.max_frame - BE_FRAME_SLACK : 0;
    return be->cfg.max_env_bytes < frame ? be->cfg.max_env_bytes : frame;
}

static void
envs_touch(struct backend *be, bool grace)
{
    uint64_t due = be->now_ms + (grace ? be->cfg.envs_grace_ms : 0);
    be->envs_changed = true;
    be->envs_gen++; /* a list being built (be_flush) starts again */
    if (!be->envs_dirty || due < be->envs_due_ms)
        be->envs_due_ms = due;
    be->envs_dirty = true;
}

/* list_append puts e (listed from now on, which holds a reference) at the tail of the list
 * *head..*tail. */
static void
list_append(struct env **head, struct env **tail, struct env *e)
{
    e->listed = true;
    e->refs++;
    e->lnext = NULL;
    e->lprev = *tail;
    if (*tail != NULL)
        (*tail)->lnext = e;
    else
        *head = e;
    *tail = e;
}

/* type_announced: one more agent announces type record t. */
static void
type_announced(struct backend *be, struct env *t)
{
    if (t->nann++ > 0)
        return;
    be->n_types_ann++;
    be->list_bytes += LIST_TYPE_COST(t);
    if (!t->listed)
        list_append(&be->types_head, &be->types_tail, t);
}

/* type_withdrawn: one agent less announces t (it stays listed until the next build). */
static void
type_withdrawn(struct backend *be, struct env *t)
{
    if (--t->nann > 0)
        return;
    be->n_types_ann--;
    be->list_bytes -= LIST_TYPE_COST(t);
}

/* env_provided: e got its first provider, an agent that announced e's type record t. */
static void
env_provided(struct backend *be, struct env *e, struct env *t)
{
    be->n_provided++;
    be->list_bytes += mp_str_size(e->name_len);
    if (e->listed)
        return; /* withdrawn since the last build, back in its place */
    e->tr = t;
    t->refs++;
    list_append(&t->lhead, &t->ltail, e);
}

/* env_withdrawn: e lost its last provider (it stays listed until the next build). */
static void
env_withdrawn(struct backend *be, struct env *e)
{
    be->n_provided--;
    be->list_bytes -= mp_str_size(e->name_len);
}

/* list_unlink takes e (an environment or a type record) off the list it is on. */
static void
list_unlink(struct backend *be, struct env *e)
{
    struct env **head, **tail;
    struct env *t = e->name_len == 0 ? NULL : e->tr;
    if (t != NULL) {
        head = &t->lhead;
        tail = &t->ltail;
    } else {
        head = &be->types_head;
        tail = &be->types_tail;
    }
    if (e->lprev != NULL)
        e->lprev->lnext = e->lnext;
    else
        *head = e->lnext;
    if (e->lnext != NULL)
        e->lnext->lprev = e->lprev;
    else
        *tail = e->lprev;
    e->lprev = e->lnext = NULL;
    e->listed = false;
    e->tr = NULL;
    env_unref(be, e);
    if (t != NULL)
        env_unref(be, t);
}

/* envs_prune takes the withdrawn environments and types off the list. */
static void
envs_prune(struct backend *be)
{
    struct env *t = be->types_head, *tnext;
    for (; t != NULL; t = tnext) {
        tnext = t->lnext;
        struct env *e = t->lhead, *enext;
        for (; e != NULL; e = enext) {
            enext = e->lnext;
            if (e->n_providers == 0)
                list_unlink(be, e);
        }
        if (t->nann == 0 && t->lhead == NULL)
            list_unlink(be, t);
    }
}

/* envs_set makes the encoded list data[0..len) (malloc()ed, taken over) the current one, in
 * a block the clients' outputs may share (counted once in held_bytes). Returns 0, or
 * -ENOMEM (data freed, the previous list kept). */
static int
envs_set(struct backend *be, uint8_t *data, size_t len)
{
    struct sblk *b = sblk_new(data, len, &be->held_bytes);
    if (b == NULL) {
        free(data);
        return -ENOMEM;
    }
    sblk_unref(be->envs_blk); /* outputs still writing the previous list keep it */
    be->envs_blk = b;
    be->envs_msg = b->data;
    be->envs_msg_len = len;
    be->envs_changed = false;
    be->envs_serial++;
    return 0;
}

/* envs_build encodes the BackendUpdateEnvironments map into be->envs_msg: the announced
 * types in the order they were first announced, each with its advertised environments in
 * the order they were first provided (INGInious keeps both in dict insertion order; a type
 * whose environments are all hidden, or that has none, as the Docker agent's `kata: {}`,
 * is listed with an empty array). Linear in the list: no sort. */
static int
envs_build(struct backend *be)
{
    struct ing_mp_writer w;
    ing_mp_writer_init_dyn(&w);
    /* Its size is known (list_bytes): one allocation, no copy as it grows. */
    size_t want = LIST_BASE + be->list_bytes;
    if ((w.buf = malloc(want)) != NULL)
        w.cap = want;
    ing_mp_put_map(&w, be->n_types_ann);
    uint32_t ntypes = 0;
    for (const struct env *t = be->types_head; t != NULL; t = t->lnext) {
        if (t->nann == 0)
            continue;
        uint32_t adv = 0;
        for (const struct env *e = t->lhead; e != NULL; e = e->lnext)
            adv += e->n_providers > 0 && e->advertised;
        ing_mp_put_str(&w, t->type, t->type_len);
        ing_mp_put_array(&w, adv);
        for (const struct env *e = t->lhead; e != NULL; e = e->lnext)
            if (e->n_providers > 0 && e->advertised)
                ing_mp_put_str(&w, e->name, e->name_len);
        ntypes++;
    }
    if (ntypes != be->n_types_ann)
        w.err = -EPROTO; /* cannot happen: the counter follows nann */
    if (w.err != 0) {
        ing_mp_writer_fini(&w);
        return w.err;
    }
    return envs_set(be, w.buf, w.len); /* the writer's buffer taken over */
}

static void
send_envs(struct backend *be, struct be_client *c)
{
    /* The list clients last got, if any (a pending change reaches this client with the
     * others at the next be_flush); else the current one. */
    if (be->envs_msg == NULL && envs_build(be) != 0) {
        log_msg(LOG_ERR, "out of memory building the environment list");
        return;
    }
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_UPDATE_ENVIRONMENTS;
    m.u.envs.environments.p = (const char *)be->envs_msg;
    m.u.envs.environments.len = (uint32_t)be->envs_msg_len;
    if (be->ops.send_shared != NULL)
        be->ops.send_shared(c->peer, &m, be->envs_blk);
    else
        be->ops.send(c->peer, &m);
    c->envs_seen = be->envs_serial;
}

/* envs_send_some sends the current list to the clients that have not got it yet, about
 * BE_FLUSH_BYTES of it per call (copying a large list to many clients is work too; a list the
 * peers share costs BE_SHARED_COST per client). Returns true once every client has it. */
static bool
envs_send_some(struct backend *be)
{
    size_t sent = 0;
    for (struct be_client *c = be->clients; c != NULL; c = c->next) {
        if (c->envs_seen == be->envs_serial)
            continue;
        if (sent >= BE_FLUSH_BYTES)
            return false;
        send_envs(be, c);
        sent += be->ops.send_shared != NULL ? BE_SHARED_COST : be->envs_msg_len;
    }
    return true;
}

/* A list built in steps (be_flush): prune and count a type's environments, then write
 * them, one environment per unit; started again if the list changes meanwhile. */
struct be_lbuild {
    struct ing_mp_writer w;
    bool active;
    bool writing;   /* the second pass over t's environments */
    uint64_t gen;   /* be->envs_gen when it started */
    struct env *t;  /* the type being done (NULL: all done) */
    struct env *e;  /* its next environment */
    uint32_t adv, ntypes;
};

static int
lbuild_start(struct backend *be)
{
    struct be_lbuild *lb = be->lbuild;
    if (lb == NULL && (lb = be->lbuild = calloc(1, sizeof(*lb))) == NULL)
        return -ENOMEM;
    if (lb->active)
        ing_mp_writer_fini(&lb->w);
    ing_mp_writer_init_dyn(&lb->w);
    size_t want = LIST_BASE + be->list_bytes; /* its size is known: one allocation */
    if ((lb->w.buf = malloc(want)) != NULL)
        lb->w.cap = want;
    ing_mp_put_map(&lb->w, be->n_types_ann);
    lb->active = true;
    lb->writing = false;
    lb->gen = be->envs_gen;
    lb->t = be->types_head;
    lb->e = lb->t != NULL ? lb->t->lhead : NULL;
    lb->adv = lb->ntypes = 0;
    return 0;
}

/* lbuild_next_type moves lb on to the type after t. */
static void
lbuild_next_type(struct be_lbuild *lb, struct env *next)
{
    lb->t = next;
    lb->e = next != NULL ? next->lhead : NULL;
    lb->writing = false;
    lb->adv = 0;
}

/* LBUILD_PRUNED: lbuild_unit took a withdrawn environment off the list (and mostly freed
 * it), which costs about LBUILD_PRUNE_UNITS other units (0.5 us against 20-100 ns): an agent
 * of 10,000s of environments gone, its environments are freed a few hundred per call. */
#define LBUILD_PRUNED 2
#define LBUILD_PRUNE_UNITS 8

/* lbuild_unit does one unit of the build. Returns 0 or LBUILD_PRUNED (more), 1 (done:
 * be->envs_msg is the list) or a negative errno (lb let go). */
static int
lbuild_unit(struct backend *be, struct be_lbuild *lb)
{
    struct env *t = lb->t, *e = lb->e;
    if (t == NULL) {
        int err = lb->w.err;
        if (err == 0 && lb->ntypes != be->n_types_ann)
            err = -EPROTO; /* cannot happen: the counter follows nann */
        lb->active = false;
        if (err != 0) {
            ing_mp_writer_fini(&lb->w);
            return err;
        }
        int rc = envs_set(be, lb->w.buf, lb->w.len); /* the writer's buffer taken over */
        return rc == 0 ? 1 : rc;
    }
    if (e != NULL) {
        lb->e = e->lnext;
        if (!lb->writing && e->n_providers == 0) {
            list_unlink(be, e); /* withdrawn since the last build */
            return LBUILD_PRUNED;
        }
        if (!lb->writing)
            lb->adv += e->advertised;
        else if (e->advertised)
            ing_mp_put_str(&lb->w, e->name, e->name_len);
        return 0;
    }
    if (lb->writing) {
        lb->ntypes++;
        lbuild_next_type(lb, t->lnext);
    } else if (t->nann == 0) {
        struct env *next = t->lnext;
        if (t->lhead == NULL)
            list_unlink(be, t);
        lbuild_next_type(lb, next);
    } else {
        ing_mp_put_str(&lb->w, t->type, t->type_len);
        ing_mp_put_array(&lb->w, lb->adv);
        lb->writing = true;
        lb->e = t->lhead;
    }
    return 0;
}

static void
lbuild_free(struct backend *be)
{
    if (be->lbuild != NULL && be->lbuild->active)
        ing_mp_writer_fini(&be->lbuild->w);
    free(be->lbuild);
    be->lbuild = NULL;
}

bool
be_flush_building(const struct backend *be)
{
    return be->envs_sending || (be->lbuild != NULL && be->lbuild->active && !be->envs_held &&
                                be->lbuild->gen == be->envs_gen);
}

bool
be_flush_due(const struct backend *be, uint64_t *due_ms)
{
    if (be->envs_held || be_flush_building(be))
        return false; /* the registration's end touches the list; a build goes on */
    if (be->envs_dirty)
        *due_ms = be->envs_due_ms;
    return be->envs_dirty;
}

void
be_flush(struct backend *be)
{
    if (be->envs_sending) {
        be->envs_sending = !envs_send_some(be);
        if (be->envs_sending)
            return; /* (a change since is sent at a next call) */
    }
    if (!be->envs_dirty || be->now_ms < be->envs_due_ms || be->envs_held)
        return;
    if (be->envs_changed || be_flush_building(be)) {
        /* Built in steps of BE_FLUSH_UNITS environments: the rest at the next call. */
        int rc = 0;
        if (!be_flush_building(be))
            rc = lbuild_start(be);
        for (size_t k = 0; k < BE_FLUSH_UNITS; k++) {
            rc = lbuild_unit(be, be->lbuild);
            if (rc == LBUILD_PRUNED) { /* costlier: the environment is freed */
                k += LBUILD_PRUNE_UNITS - 1;
                rc = 0;
            }
            if (rc != 0)
                break;
        }
        if (rc == 0)
            return;
        if (rc < 0) {
            log_msg(LOG_ERR, "out of memory building the environment list: clients not updated");
            be->envs_due_ms = be->now_ms + 1000; /* try again */
            return;
        }
    }
    be->envs_dirty = false;
    be->envs_sending = !envs_send_some(be);
}

/* ---------------------------------------------------------------------------------------- */
/* Lifecycle                                                                                 */

void
be_config_default(struct be_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ping_max = 5;
    cfg->kill_timeout_ms = 30000;
    cfg->orphan_timeout_ms = 60000;
    cfg->retry_lost_jobs = 0;
    cfg->max_waiting = 10000000;
    cfg->max_waiting_per_client = 10000000;
    cfg->max_frame = ING_MAX_FRAME_DEFAULT;
    cfg->kill_any = true;
    cfg->queue_list_max = 10000;
    cfg->reap_batch = BE_REAP_BATCH;
    cfg->max_slots_per_agent = 1024;
    cfg->max_envs_per_agent = 100000;
    cfg->max_envs = 1000000;
    cfg->max_env_bytes = 16u << 20;
    cfg->envs_grace_ms = 1000;
    cfg->hello_burst = 16;
    cfg->max_requeues = 5;
    cfg->deadline_margin_ms = 30000;
    cfg->session_ttl_ms = 600000;
    cfg->session_unacked_max = 64ull << 20;
    cfg->resume_grace_ms = 10000;
}

static void
kept_key(const void *obj, const void **key, size_t *len)
{
    const struct kept *k = obj;
    *key = &k->seq;
    *len = sizeof(k->seq);
}

static void
session_key(const void *obj, const void **key, size_t *len)
{
    const struct be_session *s = obj;
    *key = s->id;
    *len = ING_SESSION_ID_LEN;
}

int
be_init(struct backend *be, const struct be_config *cfg, const struct be_ops *ops)
{
    memset(be, 0, sizeof(*be));
    idtab_seed();
    be->cfg = *cfg;
    be->ops = *ops;
    pool_init(&be->jobs_pool);
    slab_init(&be->client_slab, sizeof(struct be_client));
    slab_init(&be->agent_slab, sizeof(struct be_agent));
    slab_init(&be->env_slab, sizeof(struct env));
    be->emask = 63;
    be->etab = calloc(be->emask + 1, sizeof(*be->etab));
    int fr = fair_init(&be->fair, cfg->fair_mode, cfg->fair_weights, cfg->n_fair_weights);
    if (idtab_init(&be->jtab, job_key) != 0 || idtab_init(&be->stab, session_key) != 0 ||
        idtab_init(&be->ktab, kept_key) != 0 || be->etab == NULL || fr != 0) {
        be_fini(be);
        return -ENOMEM;
    }
    return 0;
}

static void agent_unregister(struct backend *be, struct be_agent *a, bool silent);
static void sessions_fini(struct backend *be);
static bool reg_abandon(struct backend *be, struct be_agent *a);
static void regs_fini(struct backend *be);

void
be_fini(struct backend *be)
{
    regs_fini(be); /* they hold environments, and agents that are on no list */
    while (be->agents != NULL) {
        struct be_agent *a = be->agents;
        agent_unregister(be, a, true);
        free(a->name);
        slab_free(&be->agent_slab, a);
    }
    idtab_settle(&be->jtab);
    for (size_t i = 0; i < idtab_slots(&be->jtab); i++) {
        struct job *j = idtab_at(&be->jtab, i);
        if (j == NULL)
            continue;
        if (j->status == JOB_WAITING)
            job_unqueue(be, j);
        else
            run_remove(be, j);
        job_free(be, j);
    }
    while (be->ghosts != NULL) /* their jobs were freed above */
        ghost_free(be, be->ghosts);
    free(be->jr_pend);
    free(be->jr_pbits);
    sessions_fini(be);
    while (be->clients != NULL) {
        struct be_client *c = be->clients;
        be->clients = c->next;
        slab_free(&be->client_slab, c);
    }
    while (be->reaping != NULL) { /* their jobs were freed above */
        struct be_client *c = be->reaping;
        be->reaping = c->next;
        slab_free(&be->client_slab, c);
    }
    lbuild_free(be);
    envs_prune(be); /* no provider left: the whole list goes */
    idtab_fini(&be->jtab);
    free(be->etab);
    free(be->etab_old);
    for (size_t i = 0; i < be->n_etypes; i++)
        free(be->etypes[i]);
    free(be->etypes);
    sblk_unref(be->envs_blk);
    be->envs_blk = NULL;
    be->envs_msg = NULL;
    free(be->q_run);
    free(be->q_wait);
    free(be->q_text);
    free(be->q_sel);
    buf_fini(&be->jr_fresh);
    pool_fini(&be->jobs_pool);
    fair_fini(&be->fair);
    slab_fini(&be->client_slab);
    slab_fini(&be->agent_slab);
    slab_fini(&be->env_slab);
    memset(be, 0, sizeof(*be));
}

/* ---------------------------------------------------------------------------------------- */
/* Clients                                                                                   */

struct be_client *
be_client_new(struct backend *be, void *peer)
{
    struct be_client *c = slab_alloc(&be->client_slab);
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->peer = peer;
    return c;
}

uint64_t
be_client_job_bytes(const struct be_client *c)
{
    return c->job_bytes;
}

bool
be_client_registered(const struct be_client *c)
{
    return c->registered;
}

void
be_client_hello(struct backend *be, struct be_client *c)
{
    if (!c->registered) {
        c->registered = true;
        c->prev = NULL;
        c->next = be->clients;
        if (be->clients != NULL)
            be->clients->prev = c;
        be->clients = c;
        be->n_clients++;
    }
    send_envs(be, c);
}

/* client_reap drops or kills up to *budget jobs of the gone client c; true once it has
 * none left (c is then freed). */
static bool
client_reap(struct backend *be, struct be_client *c, size_t *budget)
{
    while (c->jobs != NULL && *budget > 0) {
        struct job *j = c->jobs;
        (*budget)--;
        if (j->status == JOB_WAITING) {
            drop_gone(be, j);
        } else {
            owner_unlink(j);
            if (!(j->flags & JOB_F_KILLING))
                send_kill(be, j);
            c->killed++;
        }
    }
    if (c->jobs != NULL)
        return false;
    if (c->dropped + c->killed > 0)
        log_msg(LOG_INFO, "client gone: %llu waiting jobs dropped, %llu running jobs killed",
                (unsigned long long)c->dropped, (unsigned long long)c->killed);
    slab_free(&be->client_slab, c);
    return true;
}

/* client_unregister takes c out of the registered clients (nothing is broadcast to it). */
static void
client_unregister(struct backend *be, struct be_client *c)
{
    if (!c->registered)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        be->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->registered = false;
    be->n_clients--;
}

static void session_detach(struct backend *be, struct be_client *c);

bool
be_client_gone(struct backend *be, struct be_client *c)
{
    if (c == NULL)
        return be->reaping != NULL;
    if (c->sess != NULL) { /* its jobs wait for it to come back (proto.md 7.9) */
        if (!c->sess->detached)
            session_detach(be, c);
        return be->reaping != NULL;
    }
    client_unregister(be, c);
    c->gone = true;
    c->peer = NULL;
    size_t budget = be->cfg.reap_batch;
    if (!client_reap(be, c, &budget)) {
        c->prev = NULL;
        c->next = be->reaping;
        be->reaping = c;
    }
    return be->reaping != NULL;
}

bool
be_reap(struct backend *be, size_t budget)
{
    while (be->reaping != NULL && budget > 0) {
        struct be_client *c = be->reaping;
        struct be_client *next = c->next;
        if (client_reap(be, c, &budget))
            be->reaping = next;
    }
    return be->reaping != NULL;
}

void
be_client_native(struct be_client *c, bool acks)
{
    c->native = true;
    c->acks = acks;
}

#define JR_UNAVAILABLE "Journal unavailable: "

void
be_client_refuse(struct backend *be, struct be_client *c, struct ing_view id, const char *why)
{
    struct ing_view empty = {"", 0};
    be->stats.jobs_refused++;
    static const char *const why_text[METRICS_NREFUSE] = {
        [METRICS_REFUSE_DUPLICATE] = "Duplicate job id",
        [METRICS_REFUSE_SHUTDOWN] = "Backend shutting down",
        [METRICS_REFUSE_QUEUE_FULL] = "Queue full",
        [METRICS_REFUSE_NOMEM] = "Backend out of memory",
    };
    int reason = METRICS_REFUSE_INVALID;
    for (int i = 1; i < METRICS_REFUSE_JOURNAL; i++)
        if (strcmp(why, why_text[i]) == 0)
            reason = i;
    if (strncmp(why, JR_UNAVAILABLE, sizeof(JR_UNAVAILABLE) - 1) == 0)
        reason = METRICS_REFUSE_JOURNAL;
    be->mc.refused[reason]++;
    /* While the journal cannot write, its state changes are logged (journal.c), and the
     * refusals counted in one line once it works again; not one line per job. */
    bool quiet = reason == METRICS_REFUSE_JOURNAL && be->jr != NULL && !journal_ok(be->jr);
    if (quiet && be->jr_refused++ == 0)
        log_msg(LOG_WARN, "journal unavailable: new jobs are refused (first: %.*s): %s",
                (int)(id.len > 255 ? 255 : id.len), id.p, why);
    else if (!quiet)
        log_msg(LOG_WARN, "job %.*s refused: %s", (int)(id.len > 255 ? 255 : id.len), id.p,
                why);
    if (reason == METRICS_REFUSE_JOURNAL && c != NULL && c->native && !c->gone &&
        c->peer != NULL) {
        struct ing_msg m;
        memset(&m, 0, sizeof(m));
        m.type = ING_ERROR;
        m.u.error.code = ING_ERR_JOURNAL;
        m.u.error.text.p = why;
        m.u.error.text.len = (uint32_t)strlen(why);
        be->ops.send(c->peer, &m);
    }
    send_result(be, c, id, "crash", why, empty);
}

uint64_t
be_id_hash(struct ing_view id)
{
    return id_hash(id.p, id.len);
}

void
be_prefetch_id(const struct backend *be, uint64_t h)
{
    IDTAB_PREFETCH(&be->jtab, h);
}

void
be_client_new_job(struct backend *be, struct be_client *c, const uint8_t *body, size_t len,
                  const struct ing_client_new_job *m)
{
    be_client_new_job_h(be, c, body, len, m, id_hash(m->job.job_id.p, m->job.job_id.len));
}

/* key_get returns the record a new job (priority prio, message m) of e belongs to, made if
 * needed, or NULL (no memory). Without fair share the records are one per priority: a
 * walk of e's few records finds it without hashing. */
static struct fair_key *
key_get(struct backend *be, struct env *e, int64_t prio, const struct ing_client_new_job *m)
{
    if (be->fair.mode == FAIR_NONE) {
        for (struct fair_key *k = e->keys; k != NULL; k = k->snext)
            if (k->prio == prio)
                return fair_use(&be->fair, k);
        return fair_get(&be->fair, e, prio, "", 0, &e->keys);
    }
    struct ing_view key;
    fair_key_of(be->fair.mode, m, &key);
    return fair_get(&be->fair, e, prio, key.p, key.len, &e->keys);
}

/* aged_priority is the level a new job of priority p waits at (proto.md 7.4). With
 * --priority-aging DUR every waiting job improves by one level at each multiple of DUR on
 * the monotonic clock: the same as a new job entering one level worse per DUR elapsed, which
 * keeps every job's key fixed while it waits (no re-sorting). Saturates at INT64_MAX. */
static inline int64_t
aged_priority(const struct backend *be, int64_t p)
{
    if (be->cfg.priority_aging_ms == 0)
        return p;
    uint64_t epoch = be->now_ms / be->cfg.priority_aging_ms;
    int64_t e = epoch > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)epoch;
    return p > INT64_MAX - e ? INT64_MAX : p + e;
}

static int jr_session_accepted(struct backend *be, const struct job *j, const uint8_t *sid);

/* jr_accepted journals the acceptance of j, a job of client c (proto.md 12.3): its arrival
 * order and its ClientNewJob frame (and c's session id if it has one). Returns 0 or -errno. */
static int
jr_accepted(struct backend *be, const struct job *j, const struct be_client *c)
{
    if (c != NULL && c->sess != NULL)
        return jr_session_accepted(be, j, c->sess->id);
    uint8_t pre[8 + ING_HDR_LEN];
    put_u64be(pre, j->seq);
    ing_frame_header(pre + 8, ING_CLIENT_NEW_JOB, j->body_len);
    struct journal_iov v[2] = {{pre, sizeof(pre)}, {j->body, j->body_len}};
    int err;
    journal_appendv(be->jr, JREC_ACCEPTED, v, 2, &err);
    return err;
}


/* jr_job journals a record of type about j: its arrival order, then rid (when given: the
 * agent's id, ING_AGENT_ID_LEN bytes), then its id (proto.md 12.3). what names the event
 * for the log line of a failure. */
static void
jr_job(struct backend *be, uint8_t type, const struct job *j, const uint8_t *rid,
       const char *what)
{
    uint8_t pre[8 + ING_AGENT_ID_LEN];
    put_u64be(pre, j->seq);
    if (rid != NULL)
        memcpy(pre + 8, rid, ING_AGENT_ID_LEN);
    struct journal_iov v[2] = {{pre, rid != NULL ? sizeof(pre) : 8}, {job_id(j), j->id_len}};
    int err;
    journal_appendv(be->jr, type, v, 2, &err);
    if (err == -ENOMEM)
        log_msg(LOG_ERR, "journal: out of memory: the %s of job %.*s is not recorded", what,
                (int)j->id_len, job_id(j));
}

static const uint8_t zero_rid[ING_AGENT_ID_LEN];

/* JR_AT_LEN: the fixed part of record 8: arrival order, agent id, wall time, two counts. */
#define JR_AT_LEN (8 + ING_AGENT_ID_LEN + 8 + 2)

/* jr_dispatched journals that j was sent to the agent of id rid (NULL: that it is back in
 * the queue), so that after a restart that agent may claim it (proto.md 12.3, 7.10): with
 * the dispatch's wall time and j's requeue counts (record 8), so that its deadline and
 * counts go on after the restart. */
static void
jr_dispatched(struct backend *be, const struct job *j, const uint8_t *rid)
{
    if (rid == NULL) {
        jr_job(be, JREC_DISPATCHED, j, zero_rid, "dispatch");
        return;
    }
    uint8_t pre[JR_AT_LEN];
    put_u64be(pre, j->seq);
    memcpy(pre + 8, rid, ING_AGENT_ID_LEN);
    put_u64be(pre + 8 + ING_AGENT_ID_LEN, (uint64_t)be->wall_s);
    pre[8 + ING_AGENT_ID_LEN + 8] = (uint8_t)job_bounces(j);
    pre[8 + ING_AGENT_ID_LEN + 9] = j->retries;
    struct journal_iov v[2] = {{pre, sizeof(pre)}, {job_id(j), j->id_len}};
    int err;
    journal_appendv(be->jr, JREC_DISPATCHED_AT, v, 2, &err);
    if (err == -ENOMEM)
        log_msg(LOG_ERR, "journal: out of memory: the dispatch of job %.*s is not recorded",
                (int)j->id_len, job_id(j));
}

/* jr_disp_read reads a record 2, 3 or 8 of len bytes at p (len >= 8) into d. Returns false
 * when it is too short or its id too long. */
static bool
jr_disp_read(uint8_t type, const uint8_t *p, uint32_t len, struct jr_disp *d)
{
    memset(d, 0, sizeof(*d));
    d->id_off = type == JREC_DISPATCHED_AT ? JR_AT_LEN
                : type == JREC_DISPATCHED  ? 8 + ING_AGENT_ID_LEN
                                           : 8;
    if (len < d->id_off || len - d->id_off > MAX_ID_LEN)
        return false;
    if (type != JREC_STARTED)
        d->rid = p + 8;
    if (type == JREC_DISPATCHED_AT) {
        d->has_at = true;
        d->wall_s = (int64_t)get_u64be(p + 8 + ING_AGENT_ID_LEN);
        d->bounces = p[8 + ING_AGENT_ID_LEN + 8];
        d->retries = p[8 + ING_AGENT_ID_LEN + 9];
    }
    return true;
}

/* jr_started journals that j's agent (one that may claim it back) reported it started. */
static void
jr_started(struct backend *be, const struct job *j)
{
    jr_job(be, JREC_STARTED, j, NULL, "start");
}

/* jr_ended journals that j is forgotten (its result given, or killed, or dropped). */
static void
jr_ended(struct backend *be, const struct job *j)
{
    jr_job(be, JREC_ENDED, j, NULL, "end");
}

/* held_already is job_new's answer to a session resubmitting a job it owns: nothing is
 * done, and the job counts as accepted (proto.md 7.9). */
static const char held_already[] = "";

static void
send_ack(struct backend *be, struct be_client *c, struct ing_view id)
{
    if (c->peer == NULL)
        return; /* a detached session: it learns what is held when it resumes */
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_ACCEPTED;
    m.u.ref.job_id = id;
    be->ops.send(c->peer, &m);
}

/* jr_fresh_add notes the new job j of client c (proto.md 7.8). Without a journal, c hears
 * BackendJobAccepted now if it asked; with one, j waits in be->jr_fresh for the flush that
 * writes its record (be_journal_settle). Returns 0 or -ENOMEM. */
static int
jr_fresh_add(struct backend *be, struct be_client *c, const struct job *j)
{
    if (be->jr == NULL) {
        if (c->acks)
            send_ack(be, c, job_id_view(j));
        return 0;
    }
    if (buf_reserve(&be->jr_fresh, 10 + (size_t)j->id_len) != 0)
        return -ENOMEM;
    uint8_t *p = buf_tail(&be->jr_fresh);
    put_u64be(p, j->seq);
    p[8] = c->acks;
    p[9] = j->id_len;
    memcpy(p + 10, job_id(j), j->id_len);
    buf_produce(&be->jr_fresh, 10 + (size_t)j->id_len);
    return 0;
}

/* jr_fresh_ack: a result of j is about to be sent before its record was settled (killed in
 * the iteration that accepted it): its acknowledgement goes first, as proto.md 7.8 orders,
 * and not again at the settling. */
static void
jr_fresh_ack(struct backend *be, struct job *j)
{
    uint8_t *p = buf_head(&be->jr_fresh), *end = p + buf_len(&be->jr_fresh);
    for (; p < end; p += 10 + p[9])
        if (get_u64be(p) == j->seq) {
            if (p[8] && live_owner(j) != NULL)
                send_ack(be, j->owner, job_id_view(j));
            p[8] = 0;
            return;
        }
}

/* job_new validates then stores a new job of client c (NULL: a job replayed from the
 * journal, of arrival order seq) and queues it. Returns NULL, or why it was refused
 * (nothing changed). */
static const char *
job_new(struct backend *be, struct be_client *c, const uint8_t *body, size_t len,
        const struct ing_client_new_job *m, uint64_t idh, uint64_t seq)
{
    const struct ing_job_spec *s = &m->job;
    struct ing_view id = s->job_id;
    if (id.len == 0 || id.len > MAX_ID_LEN)
        return "Invalid job id";
    if (s->environment_type.len == 0 || s->environment_type.len > MAX_ENV_LEN ||
        s->environment.len == 0 || s->environment.len > MAX_ENV_LEN)
        return "Invalid environment";
    if (!mp_is_map(s->inputdata))
        return "Invalid inputdata: not a map";
    if (!mp_is_map(s->task_problems))
        return "Invalid task_problems: not a map";
    if (!mp_is_map(s->environment_parameters))
        return "Invalid environment_parameters: not a map";
    const uint8_t *sv = NULL;
    size_t svlen = 0;
    struct ing_mp_obj so = {0};
    if (ing_mp_map_get((const uint8_t *)s->inputdata.p, s->inputdata.len, "@state", 6, &sv,
                       &svlen) == 0) {
        const uint8_t *q = sv;
        if (ing_mp_read(&q, sv + svlen, &so) != 0 || so.type != ING_MP_STR)
            return "Invalid @state: not a string";
    }
    struct job *dup = jtab_find_h(be, idh, id.p, id.len);
    if (dup != NULL && dup->status == JOB_WAITING && owner_gone(dup)) {
        drop_gone(be, dup); /* not reaped yet: it is dropped anyway */
        dup = NULL;
    }
    if (dup != NULL)
        return c != NULL && c->sess != NULL && dup->owner == c ? held_already
                                                                : "Duplicate job id";
    if (be->draining)
        return "Backend shutting down";
    if (be->n_waiting >= be->cfg.max_waiting ||
        (c != NULL && c->n_waiting >= be->cfg.max_waiting_per_client))
        return "Queue full";
    if (be->jr != NULL && !journal_ok(be->jr)) {
        snprintf(be->jr_why, sizeof(be->jr_why), "Journal unavailable: %s",
                 strerror(-be->jr->err));
        return be->jr_why;
    }

    struct env *e = env_get(be, s->environment_type.p, s->environment_type.len, s->environment.p,
                            s->environment.len);
    if (e == NULL)
        return "Backend out of memory";
    e->refs++;
    struct job *j = NULL;
    int64_t prio = aged_priority(be, m->priority);
    struct fair_key *fk = key_get(be, e, prio, m);
    if (fk != NULL && be->fair.mode != FAIR_NONE)
        key_prefetch_tail(fk); /* cold with many keys: loads while the job is copied */
    if (fk == NULL || rank_reserve(&fk->rk, &be->fair.pool, fk->rk.next) != 0 ||
        jheap_reserve(be, e, prio, seq != 0 ? seq : UINT64_MAX) != 0 ||
        len > UINT32_MAX - sizeof(*j) ||
        (j = pool_alloc(&be->jobs_pool, sizeof(*j) + len)) == NULL) {
        if (fk != NULL && fk->njobs == 0) {
            fk->njobs = 1;
            fair_put(&be->fair, fk, &e->keys);
        }
        env_unref(be, e);
        return "Backend out of memory";
    }
    memset(j, 0, sizeof(*j));
    memcpy(j->body, body, len);
    j->fk = fk; /* its environment and priority */
    j->body_len = (uint32_t)len;
    j->id_len = (uint8_t)id.len;
    if (idtab_insert(&be->jtab, idh, j) != 0) {
        pool_free(&be->jobs_pool, j, sizeof(*j) + len);
        if (fk->njobs == 0) {
            fk->njobs = 1;
            fair_put(&be->fair, fk, &e->keys);
        }
        env_unref(be, e);
        return "Backend out of memory";
    }
    j->seq = seq != 0 ? seq : ++be->arrival_seq;
    if (be->arrival_seq < j->seq)
        be->arrival_seq = j->seq;
    else if (seq != 0)
        be->jr_late = true; /* its ordinal comes after later arrivals' (replay_reorder) */
    int jerr = be->jr != NULL ? jr_accepted(be, j, c) : 0;
    if (jerr != 0) { /* -ENOMEM, or -EMSGSIZE: larger than a journal record may be */
        idtab_remove(&be->jtab, idh, j);
        pool_free(&be->jobs_pool, j, sizeof(*j) + len);
        if (fk->njobs == 0) {
            fk->njobs = 1;
            fair_put(&be->fair, fk, &e->keys);
        }
        env_unref(be, e);
        snprintf(be->jr_why, sizeof(be->jr_why), "Journal unavailable: %s",
                 jerr == -EMSGSIZE ? "job too large for a journal record" : strerror(-jerr));
        return be->jr_why;
    }
    fk->njobs++;
    j->ord = UINT64_MAX; /* a new ordinal (and with fair share a start tag), queued */
    j->deadline_ms = job_deadline_ms(be, s->environment_parameters);
    if (c != NULL) {
        j->owner = c;
        j->onext = c->jobs;
        if (c->jobs != NULL)
            c->jobs->oprev = j;
        c->jobs = j;
        c->job_bytes += len;
    }
    be->job_bytes += len;
    if (c != NULL && jr_fresh_add(be, c, j) != 0) {
        job_free_h(be, j, idh);
        return "Backend out of memory";
    }
    job_enqueue(be, j);
    be->stats.jobs_submitted++;
    log_msg(LOG_DEBUG, "job %.*s queued for %s/%s", (int)j->id_len, job_id(j), e->type, e->name);
    sched_envs(be, &e, 1);
    return NULL;
}

bool
be_client_new_job_h(struct backend *be, struct be_client *c, const uint8_t *body, size_t len,
                    const struct ing_client_new_job *m, uint64_t idh)
{
    const char *why = job_new(be, c, body, len, m, idh, 0);
    if (why == held_already) { /* acknowledged again, once its record is written */
        const struct job *j = jtab_find_h(be, idh, m->job.job_id.p, m->job.job_id.len);
        if (c->acks && (be->jr == NULL || j->seq <= be->jr_settled))
            send_ack(be, c, m->job.job_id);
        return true;
    }
    if (why != NULL)
        be_client_refuse(be, c, m->job.job_id, why);
    return why == NULL;
}

static int session_replay(struct backend *be, uint8_t type, const uint8_t *p, uint32_t len);
static bool session_live(const struct backend *be, uint8_t type, const uint8_t *p, uint32_t len);
static void replay_pend_apply(struct backend *be, uint64_t seq, uint64_t idh, struct ing_view id);

/* replay_requeue puts held job j back in the queue (a replayed requeue). */
static void
replay_requeue(struct backend *be, struct job *j)
{
    struct be_agent *g = j->agent;
    if (jheap_reserve(be, job_env(j), job_prio(j), j->seq) != 0 ||
        rank_reserve(&j->fk->rk, &be->fair.pool, j->ord) != 0) {
        log_msg(LOG_ERR, "journal: out of memory: job %.*s stays held", (int)j->id_len,
                job_id(j));
        return;
    }
    be->n_held--;
    run_remove(be, j);
    job_enqueue(be, j);
    if (g->nrun == 0)
        ghost_free(be, g);
}

/* replay_dispatch applies a dispatch state to job j: held for the agent of id rid (zero:
 * back in the queue), started or not. A dispatch to the agent that already holds it is a
 * compaction's copy (a new dispatch to the same agent has a requeue before it): it keeps
 * the job's state. */
static void
replay_dispatch(struct backend *be, struct job *j, const uint8_t *rid, bool started)
{
    bool back = memcmp(rid, zero_rid, ING_AGENT_ID_LEN) == 0;
    if (j->status == JOB_WAITING) {
        if (back)
            return;
        struct be_agent *g = ghost_get(be, rid, "");
        if (g == NULL) {
            log_msg(LOG_ERR, "journal: out of memory: job %.*s restored waiting",
                    (int)j->id_len, job_id(j));
            return;
        }
        job_unqueue(be, j);
        j->status = JOB_DISPATCHED;
        j->agent = g;
        j->u.started_ms = (uint32_t)be->now_ms;
        j->t.run.dl = (uint32_t)(be->now_ms + j->deadline_ms); /* record 8 tells better */
        run_append(g, j);
        be->n_running++;
        be->n_held++;
    } else if (back) {
        replay_requeue(be, j);
        return;
    } else if (memcmp(j->agent->rid, rid, ING_AGENT_ID_LEN) != 0) {
        struct be_agent *from = j->agent, *g = ghost_get(be, rid, "");
        if (g == NULL)
            return;
        j->status = JOB_DISPATCHED;
        run_move(be, j, g);
        if (from->nrun == 0)
            ghost_free(be, from);
    }
    if (started)
        j->status = JOB_STARTED;
}

/* replay_at gives job j, held for its agent after a restart, what its record 8 says: its
 * deadline counts from the dispatch's wall time (to the second), not from the restart, and
 * its requeue counts go on (proto.md 7.10). */
static void
replay_at(struct backend *be, struct job *j, const struct jr_disp *d)
{
    if (j->status == JOB_WAITING)
        return;
    /* In unsigned arithmetic, and at most the longest deadline: a record's wall time can be
     * anything (INT64_MIN overflowed the difference; found by fuzz_journal). */
    uint64_t ds = be->wall_s > d->wall_s ? (uint64_t)be->wall_s - (uint64_t)d->wall_s : 0;
    uint64_t elapsed = ds < BE_MAX_DEADLINE_MS / 1000 ? ds * 1000 : BE_MAX_DEADLINE_MS;
    uint64_t left = elapsed < j->deadline_ms ? j->deadline_ms - elapsed : 0;
    j->t.run.dl = (uint32_t)(be->now_ms + left);
    j->u.started_ms = (uint32_t)(be->now_ms - elapsed); /* its run time counts from there */
    uint8_t bounces = d->bounces < BE_MAX_REQUEUES ? d->bounces : BE_MAX_REQUEUES;
    j->flags = (uint8_t)((j->flags & ((1u << JOB_BOUNCE_SHIFT) - 1)) |
                         (unsigned)bounces << JOB_BOUNCE_SHIFT);
    j->retries = d->retries;
}

/* pend_bit is arrival seq's bit in be->jr_pbits (jr_pend_cap words, a power of two). */
static inline size_t
pend_bit(const struct backend *be, uint64_t seq)
{
    return (size_t)((seq * 0x9E3779B97F4A7C15ull) >> 32) & (be->jr_pend_cap * 64 - 1);
}

static inline bool
pend_maybe(const struct backend *be, uint64_t seq)
{
    if (be->jr_npend == 0)
        return false;
    size_t b = pend_bit(be, seq);
    return (be->jr_pbits[b / 64] >> (b % 64)) & 1;
}

static inline void
pend_mark(struct backend *be, uint64_t seq)
{
    size_t b = pend_bit(be, seq);
    be->jr_pbits[b / 64] |= 1ull << (b % 64);
}

/* replay_pend keeps the dispatch state d of job seq, whose accepted record comes later. A
 * compacted journal may hold many such records (the running jobs') before millions of
 * accepted ones: the bits spare each lookup the scan of the pending list (a scan per
 * restored job made a replay quadratic, found by fuzz_journal). */
static void
replay_pend(struct backend *be, uint64_t seq, const struct jr_disp *d)
{
    const uint8_t *rid = d->rid;
    struct jr_pend *x = NULL;
    if (pend_maybe(be, seq))
        for (size_t i = 0; i < be->jr_npend && x == NULL; i++)
            if (be->jr_pend[i].seq == seq)
                x = &be->jr_pend[i];
    if (x == NULL) {
        if (be->jr_npend == be->jr_pend_cap) {
            size_t cap = be->jr_pend_cap ? be->jr_pend_cap * 2 : 16;
            struct jr_pend *np = realloc(be->jr_pend, cap * sizeof(*np));
            if (np == NULL)
                return;
            be->jr_pend = np;
            uint64_t *bits = calloc(cap, sizeof(*bits));
            if (bits == NULL)
                return; /* jr_pend_cap unchanged: the old bits still hold */
            free(be->jr_pbits);
            be->jr_pbits = bits;
            be->jr_pend_cap = cap;
            for (size_t i = 0; i < be->jr_npend; i++) /* rehashed for the new size */
                pend_mark(be, be->jr_pend[i].seq);
        }
        x = &be->jr_pend[be->jr_npend++];
        memset(x, 0, sizeof(*x));
        x->seq = seq;
        pend_mark(be, seq);
    }
    if (rid != NULL) { /* a dispatch: a new run (not started yet), unless a compaction's
                        * copy of the current one (the same agent: no requeue between) */
        if (memcmp(x->rid, rid, ING_AGENT_ID_LEN) == 0)
            return;
        memcpy(x->rid, rid, ING_AGENT_ID_LEN);
        x->started = false;
        x->has_at = d->has_at;
        x->wall_s = d->wall_s;
        x->bounces = d->bounces;
        x->retries = d->retries;
    } else {
        x->started = true;
    }
}

/* replay_pend_apply applies to the job just restored (arrival seq, id id of hash idh) the
 * dispatch state read before its accepted record (1 or 7), if any. */
static void
replay_pend_apply(struct backend *be, uint64_t seq, uint64_t idh, struct ing_view id)
{
    if (!pend_maybe(be, seq))
        return;
    for (size_t i = 0; i < be->jr_npend; i++)
        if (be->jr_pend[i].seq == seq) {
            struct job *j = jtab_find_h(be, idh, id.p, id.len);
            const struct jr_pend *x = &be->jr_pend[i];
            if (j != NULL && j->seq == seq) {
                replay_dispatch(be, j, x->rid, x->started);
                struct jr_disp d = {.has_at = x->has_at,
                                    .wall_s = x->wall_s,
                                    .bounces = x->bounces,
                                    .retries = x->retries};
                if (x->has_at)
                    replay_at(be, j, &d);
            }
            be->jr_pend[i] = be->jr_pend[--be->jr_npend];
            return;
        }
}

#define JR_SEQ_MAX (1ull << 62)

/* replay_forget forgets restored job j (of id hash idh), waiting or held for its agent. */
static void
replay_forget(struct backend *be, struct job *j, uint64_t idh)
{
    if (j->status == JOB_WAITING) {
        job_unqueue(be, j);
        job_free_h(be, j, idh);
        return;
    }
    struct be_agent *g = j->agent;
    be->n_held--;
    run_remove(be, j);
    job_free_h(be, j, idh);
    if (g->nrun == 0)
        ghost_free(be, g);
}

int
be_journal_replay(struct backend *be, uint8_t type, const uint8_t *p, uint32_t len)
{
    if (len < 8)
        return 0; /* not ours to judge: the journal checked the CRC; skip */
    uint64_t seq = get_u64be(p);
    if (seq > JR_SEQ_MAX) { /* 2^62 arrivals: never written; and ++arrival_seq must not wrap */
        if (be->jr_skipped++ == 0)
            log_msg(LOG_WARN, "journal: a record (type %u) of arrival order %llu: skipped (later "
                              "ones counted)", type, (unsigned long long)seq);
        return 0;
    }
    /* A new job never takes an arrival order the journal still names: a kept result's, say,
     * whose job's own records a compaction dropped (kept results are found by it). */
    if (be->arrival_seq < seq)
        be->arrival_seq = seq;
    if (type == JREC_SESSION_ACCEPTED || type == JREC_DONE || type == JREC_DELIVERED)
        return session_replay(be, type, p, len);
    if (type == JREC_ACCEPTED) {
        struct ing_msg m;
        ssize_t n = ing_msg_decode(p + 8, len - 8, UINT32_MAX, &m);
        if (n != (ssize_t)(len - 8) || m.type != ING_CLIENT_NEW_JOB || seq == 0) {
            log_msg(LOG_WARN, "journal: an accepted-job record that does not decode: skipped");
            return 0;
        }
        struct ing_view id = m.u.new_job.job.job_id;
        uint64_t idh = id_hash(id.p, id.len);
        const char *why = job_new(be, NULL, p + 8 + ING_HDR_LEN, len - 8 - ING_HDR_LEN,
                                  &m.u.new_job, idh, seq);
        if (why != NULL && strcmp(why, "Duplicate job id") == 0) {
            const struct job *j = jtab_find_h(be, idh, id.p, id.len);
            if (j != NULL && j->seq == seq)
                return 0; /* the copy a compaction cut short left */
        }
        if (why != NULL && be->jr_skipped++ == 0) /* one line, not one per job */
            log_msg(LOG_WARN, "journal: job %.*s not restored: %s (later ones counted)",
                    (int)(id.len > 255 ? 255 : id.len), id.p, why);
        if (why == NULL)
            replay_pend_apply(be, seq, idh, id);
    } else if (type == JREC_DISPATCHED || type == JREC_STARTED || type == JREC_DISPATCHED_AT) {
        struct jr_disp d;
        if (!jr_disp_read(type, p, len, &d))
            return 0;
        const char *id = (const char *)p + d.id_off;
        struct job *j = jtab_find_h(be, id_hash(id, len - d.id_off), id, len - d.id_off);
        if (j == NULL || j->seq != seq) {
            replay_pend(be, seq, &d);
        } else if (d.rid != NULL) {
            replay_dispatch(be, j, d.rid, false);
            if (d.has_at)
                replay_at(be, j, &d);
        } else if (j->status != JOB_WAITING) {
            j->status = JOB_STARTED;
        }
    } else if (type == JREC_ENDED) {
        const char *id = (const char *)p + 8;
        uint64_t idh = id_hash(id, len - 8);
        struct job *j = len - 8 <= MAX_ID_LEN ? jtab_find_h(be, idh, id, len - 8) : NULL;
        if (j != NULL && j->seq == seq)
            replay_forget(be, j, idh);
    }
    return 0;
}

static void ghosts_expire(struct backend *be);

/* cmp_job_seq orders jobs by arrival, then (for a damaged journal's duplicates) by id. */
static int
cmp_job_seq(const void *pa, const void *pb)
{
    const struct job *a = *(const struct job *const *)pa, *b = *(const struct job *const *)pb;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    int c = memcmp(job_id(a), job_id(b), a->id_len < b->id_len ? a->id_len : b->id_len);
    return c != 0 ? c : (a->id_len > b->id_len) - (a->id_len < b->id_len);
}

/* replay_reorder gives every restored job (waiting or held) a new ordinal in its group, in
 * arrival order; first it forgets, logged, every job whose arrival order another restored
 * job has too (a damaged journal: the writer gives each job its own, and the queue's order,
 * the kept results and the records about a job count on it). Ordinals are handed out as
 * jobs are queued, and rank.h counts a waiting job's position by them: without fair share
 * the queue's order is (priority, arrival), so the ordinals must grow with the arrivals. A
 * compaction copies the accepted records of old waiting jobs after newer ones (proto.md
 * 12.4): their replay would give them ordinals after later arrivals, and every position
 * reported would be off (found by fuzz_journal).
 * With fair share a job's order is its tag, given in the replay's order: the ordinals agree
 * with it already. O(n log n), once per start, only after such a replay. */
static void
replay_reorder(struct backend *be)
{
    if (!be->jr_late)
        return;
    be->jr_late = false;
    size_t n = 0, cap = (size_t)(be->n_waiting + be->n_running);
    struct job **v = cap > 0 ? malloc(cap * sizeof(*v)) : NULL;
    if (v == NULL) {
        if (cap > 0)
            log_msg(LOG_ERR, "journal: out of memory: restored jobs' positions may be off");
        return;
    }
    idtab_settle(&be->jtab);
    for (size_t i = 0; i < idtab_slots(&be->jtab) && n < cap; i++) {
        struct job *j = idtab_at(&be->jtab, i);
        if (j != NULL)
            v[n++] = j;
    }
    qsort(v, n, sizeof(*v), cmp_job_seq);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct job *j = v[i];
        if (k == 0 || j->seq != v[k - 1]->seq) {
            v[k++] = j;
            continue;
        }
        if (be->jr_skipped++ == 0)
            log_msg(LOG_WARN, "journal: job %.*s not restored: its arrival order %llu is job "
                              "%.*s's (later ones counted)", (int)j->id_len, job_id(j),
                    (unsigned long long)j->seq, (int)v[k - 1]->id_len, job_id(v[k - 1]));
        replay_forget(be, j, id_hash(job_id(j), j->id_len));
    }
    n = k;
    if (be->fair.mode != FAIR_NONE) {
        free(v);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->status == JOB_WAITING)
            rank_kill(&v[i]->fk->rk, v[i]->ord);
    for (size_t i = 0; i < n; i++) {
        struct job *j = v[i];
        struct rank *r = &j->fk->rk;
        if (rank_reserve(r, &be->fair.pool, r->next) != 0) { /* keeps its old one */
            if (j->status == JOB_WAITING && rank_reserve(r, &be->fair.pool, j->ord) == 0)
                rank_revive(r, j->ord, 0, j->seq);
            continue;
        }
        j->ord = rank_push(r, 0, j->seq);
        if (j->status != JOB_WAITING) /* held: its ordinal lives again if it is requeued */
            rank_kill(r, j->ord);
    }
    free(v);
}

void
be_journal_replayed(struct backend *be)
{
    replay_reorder(be);
    free(be->jr_pend); /* the dispatches of jobs that ended */
    free(be->jr_pbits);
    be->jr_pend = NULL;
    be->jr_pbits = NULL;
    be->jr_npend = be->jr_pend_cap = 0;
    for (struct be_agent *g = be->ghosts; g != NULL; g = g->next)
        g->dl_ms = be->now_ms + be->cfg.resume_grace_ms;
    if (be->n_held > 0)
        log_msg(LOG_INFO, "journal: %llu running jobs wait %llu ms for their agents to claim them",
                (unsigned long long)be->n_held, (unsigned long long)be->cfg.resume_grace_ms);
    if (be->cfg.resume_grace_ms == 0) /* no grace: lost at once (7.5) */
        ghosts_expire(be);
}

/* dispatch_live tells whether a dispatched or started record of job seq (id at p[off..len))
 * still describes it: it runs on (or is held for) an agent of that id, and for a started
 * record, has started. A record for the queue (zero id) holds while the job waits. */
static bool
dispatch_live(const struct backend *be, uint8_t type, const uint8_t *p, uint32_t len)
{
    struct jr_disp d;
    if (!jr_disp_read(type, p, len, &d))
        return false;
    const char *id = (const char *)p + d.id_off;
    const struct job *j = jtab_find_h(be, id_hash(id, len - d.id_off), id, len - d.id_off);
    if (j == NULL || j->seq != get_u64be(p))
        return false;
    if (type == JREC_STARTED)
        return j->status == JOB_STARTED && j->agent->has_rid;
    if (memcmp(p + 8, zero_rid, ING_AGENT_ID_LEN) == 0)
        return j->status == JOB_WAITING;
    return j->status != JOB_WAITING && j->agent->has_rid &&
           memcmp(j->agent->rid, p + 8, ING_AGENT_ID_LEN) == 0;
}

bool
be_journal_live(const struct backend *be, uint8_t type, const uint8_t *p, uint32_t len)
{
    if (type == JREC_SESSION_ACCEPTED || type == JREC_DONE)
        return session_live(be, type, p, len);
    if (type == JREC_DISPATCHED || type == JREC_STARTED || type == JREC_DISPATCHED_AT)
        return len >= 8 && dispatch_live(be, type, p, len);
    if (type != JREC_ACCEPTED || len < 8 + ING_HDR_LEN)
        return false; /* an end record only matters while its acceptance is before it */
    struct ing_view id;
    uint8_t ft;
    if (ing_frame_job_id(p + 8, len - 8, &ft, &id) == 0 || id.p == NULL)
        return false;
    const struct job *j = jtab_find_h((struct backend *)be, id_hash(id.p, id.len), id.p, id.len);
    return j != NULL && j->seq == get_u64be(p);
}

bool
be_journal_relocate(void *arg, uint8_t type, const uint8_t *p, uint32_t len, uint64_t ref,
                    uint64_t newref)
{
    (void)ref;
    return newref != 0 || be_journal_live(arg, type, p, len);
}

/* jr_refuse_late refuses j, accepted in this iteration, whose record could not be written:
 * its client hears crash be->jr_why (and Error JOURNAL if native), and j is forgotten, or
 * killed on the agent it was just sent to (its answer then finds no owner). */
static void
jr_refuse_late(struct backend *be, struct job *j, uint64_t idh)
{
    struct be_client *c = live_owner(j);
    be->stats.jobs_submitted--;
    if (c != NULL) {
        be_client_refuse(be, c, job_id_view(j), be->jr_why);
    } else {
        be->stats.jobs_refused++;
        be->mc.refused[METRICS_REFUSE_JOURNAL]++;
    }
    if (j->status == JOB_WAITING) {
        job_unqueue(be, j);
        job_free_h(be, j, idh);
    } else {
        jr_ended(be, j); /* not restored at the next start, whenever the agent answers */
        owner_unlink(j);
        send_kill(be, j);
    }
}

void
be_journal_settle(struct backend *be, int err)
{
    if (err != 0)
        snprintf(be->jr_why, sizeof(be->jr_why), JR_UNAVAILABLE "%s", strerror(-err));
    else if (be->jr_refused > 0) {
        log_msg(LOG_WARN, "journal: accepting jobs again (%llu refused while unavailable)",
                (unsigned long long)be->jr_refused);
        be->jr_refused = 0;
    }
    const uint8_t *p = buf_head(&be->jr_fresh), *end = p + buf_len(&be->jr_fresh);
    for (; p < end; p += 10 + p[9]) {
        if (err == 0 && !p[8])
            continue; /* written: only the acknowledgements are left to send */
        const char *id = (const char *)p + 10;
        uint64_t idh = id_hash(id, p[9]);
        struct job *j = jtab_find_h(be, idh, id, p[9]);
        if (j == NULL || j->seq != get_u64be(p))
            continue; /* ended already (killed, its client gone) */
        if (err != 0)
            jr_refuse_late(be, j, idh);
        else if (live_owner(j) != NULL)
            send_ack(be, j->owner, job_id_view(j));
    }
    be->jr_fresh.rpos = be->jr_fresh.wpos = 0;
    be->jr_settled = be->arrival_seq;
}

int
be_journal_reserve(struct backend *be, uint64_t n)
{
    return n > SIZE_MAX / 2 ? -ENOMEM : idtab_reserve(&be->jtab, (size_t)n);
}

uint64_t
be_journal_live_bytes(const struct backend *be)
{
    return be->job_bytes + (be->n_waiting + be->n_running) * (JOURNAL_REC_HDR + 8 + ING_HDR_LEN) +
           be->kept_bytes + be->n_kept * (JOURNAL_REC_HDR + 8 + ING_SESSION_ID_LEN + ING_HDR_LEN) +
           be->n_running * (2 * JOURNAL_REC_HDR + 16 + ING_AGENT_ID_LEN + 2 * MAX_ID_LEN);
}

void
be_client_kill(struct backend *be, struct be_client *c, struct ing_view id)
{
    be_client_kill_h(be, c, id, id_hash(id.p, id.len));
}

void
be_client_kill_h(struct backend *be, struct be_client *c, struct ing_view id, uint64_t idh)
{
    struct job *j = jtab_find_h(be, idh, id.p, id.len);
    if (j == NULL) {
        be->mc.kills[METRICS_KILL_UNKNOWN]++;
        log_msg(LOG_WARN, "kill of unknown job %.*s", (int)(id.len > 255 ? 255 : id.len), id.p);
        return;
    }
    if (!be->cfg.kill_any && j->owner != c) {
        be->mc.kills[METRICS_KILL_UNKNOWN]++;
        log_msg(LOG_WARN, "kill of job %.*s refused: not the client's job", (int)j->id_len,
                job_id(j));
        return;
    }
    if (j->status == JOB_WAITING) {
        job_unqueue(be, j);
        send_job_result(be, j, "killed", "You killed the job");
        be->stats.jobs_killed++;
        be->mc.kills[METRICS_KILL_WAITING]++;
        job_free(be, j);
        return;
    }
    log_msg(LOG_DEBUG, "kill of running job %.*s sent to agent %s", (int)j->id_len, job_id(j),
            j->agent->name);
    send_kill(be, j);
}

/* job_info writes the queue's info text of j ("course/task" or the environment name) into
 * out (which has room) and returns its length. */
static uint32_t
job_info(const struct job *j, char *out)
{
    /* The spec is: job_id str, course_id nstr, task_id nstr, ... */
    const uint8_t *p = j->body + spec_off(j) + 4 + j->id_len;
    uint32_t cl = get_u32be(p);
    const uint8_t *cp = p + 4;
    const uint8_t *tp = cl == UINT32_MAX ? cp : cp + cl;
    uint32_t tl = get_u32be(tp);
    if (cl == UINT32_MAX || tl == UINT32_MAX || cl == 0 || tl == 0) {
        memcpy(out, job_env(j)->name, job_env(j)->name_len);
        return job_env(j)->name_len;
    }
    memcpy(out, cp, cl);
    out[cl] = '/';
    memcpy(out + cl + 1, tp + 4, tl);
    return cl + 1 + tl;
}

static uint32_t
job_info_max(const struct job *j)
{
    const uint8_t *p = j->body + spec_off(j) + 4 + j->id_len;
    uint32_t cl = get_u32be(p);
    const uint8_t *tp = cl == UINT32_MAX ? p + 4 : p + 4 + cl;
    uint32_t tl = get_u32be(tp);
    uint32_t n = (cl == UINT32_MAX ? 0 : cl) + (tl == UINT32_MAX ? 0 : tl) + 1;
    return n > job_env(j)->name_len ? n : job_env(j)->name_len;
}

static struct ing_view
job_launcher(const struct job *j)
{
    struct ing_view v = {(const char *)j->body + 12, get_u32be(j->body + 8)};
    return v;
}

static int
run_cmp(const void *pa, const void *pb)
{
    const struct job *a = *(const struct job *const *)pa, *b = *(const struct job *const *)pb;
    int32_t d = (int32_t)(a->t.run.dseq - b->t.run.dseq); /* wrap-safe */
    return d < 0 ? -1 : d > 0;
}

static int
grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (*cap >= need)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *np = realloc(*p, n * elem);
    if (np == NULL)
        return -ENOMEM;
    *p = np;
    *cap = n;
    return 0;
}

/* entered_before: waiting job a entered the queue before b (each FIFO is in that order). */
static inline bool
entered_before(const struct job *a, const struct job *b)
{
    return a->t.entered < b->t.entered; /* (unique) */
}

/* sift_down restores the min-heap on less of h[0..n) below x (the snapshots' merges). */
static void
sift_down(struct job **h, size_t n, size_t x, bool (*less)(const struct job *, const struct job *))
{
    for (;;) {
        size_t l = 2 * x + 1, m = x;
        if (l < n && less(h[l], h[m]))
            m = l;
        if (l + 1 < n && less(h[l + 1], h[m]))
            m = l + 1;
        if (m == x)
            return;
        struct job *t = h[x];
        h[x] = h[m];
        h[m] = t;
        x = m;
    }
}

/* heads_down restores the min-heap on entry order of heads[0..n) below x. */
static inline void
heads_down(struct job **heads, size_t n, size_t x)
{
    sift_down(heads, n, x, entered_before);
}

/* fair_less orders waiting jobs on (priority, tag, arrival) (fair share). */
static bool
fair_less(const struct job *a, const struct job *b)
{
    int64_t pa = job_prio(a), pb = job_prio(b);
    if (pa != pb)
        return pa < pb;
    uint64_t va = job_vt(a), vb = job_vt(b);
    return va < vb || (va == vb && a->seq < b->seq);
}

/* cand_down restores the min-heap on fair_less of c[0..n) below x. */
static inline void
cand_down(struct job **c, size_t n, size_t x)
{
    sift_down(c, n, x, fair_less);
}

static void
cand_push(struct job **c, size_t *n, struct job *j)
{
    size_t i = (*n)++;
    while (i > 0 && fair_less(j, c[(i - 1) / 2])) {
        c[i] = c[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c[i] = j;
}

/* fair_select fills be->q_sel with the first want waiting jobs in the order fair share
 * dispatches them: a candidate heap holds the first job of every key with waiting jobs;
 * each job taken is replaced by the next of its key (O((keys + want) log keys), not a sort
 * of the queue); environments merged on (priority, tag, arrival). Returns the count, or
 * -1 (no memory). */
static long
fair_select(struct backend *be, size_t want, size_t *text)
{
    size_t ncand = 0, cap = be->fair.n + 1;
    struct job **cand = malloc(cap * sizeof(*cand));
    if (cand == NULL)
        return -1;
    for (size_t i = 0; i < etab_nchains(be); i++)
        for (struct env *e = etab_chain(be, i); e != NULL; e = e->hnext)
            for (uint32_t k = 0; k < e->kn && ncand < cap; k++)
                cand_push(cand, &ncand, e->kheap[k].k->qhead);
    size_t nsel = 0;
    while (ncand > 0 && nsel < want) {
        struct job *j = cand[0];
        cand[0] = cand[--ncand];
        cand_down(cand, ncand, 0);
        if (!owner_gone(j)) {
            be->q_sel[nsel++] = j;
            *text += job_info_max(j);
        }
        if (j->next != NULL) /* the next of its key */
            cand_push(cand, &ncand, j->next);
    }
    free(cand);
    return (long)nsel;
}

/* be_client_get_queue answers a snapshot: the running jobs in dispatch order, then the
 * first cfg.queue_list_max waiting jobs in the order they entered the queue (a requeued job
 * re-enters it, as in INGInious' waiting list; all when 0; with fair share, the first in
 * the order they will be dispatched, fair_select), within the frame limit. Its cost is linear in what it lists (plus the environments), not in the queue. */
void
be_client_get_queue(struct backend *be, struct be_client *c)
{
    size_t nrun = be->n_running, nwait = be->n_waiting;
    size_t cap = be->cfg.queue_list_max ? be->cfg.queue_list_max : SIZE_MAX;
    size_t want = nwait < cap ? nwait : cap;
    struct job **runs = NULL, **heads = NULL;
    /* 1. Collect the running jobs, in dispatch order. */
    if (nrun > 0 && (runs = malloc(nrun * sizeof(*runs))) == NULL)
        goto oom;
    size_t k = 0, text = 0;
    for (int pass = 0; pass < 2; pass++) /* the agents', then those held for their agents */
        for (struct be_agent *a = pass == 0 ? be->agents : be->ghosts; a != NULL; a = a->next)
            for (struct job *j = a->run_head; j != NULL && k < nrun; j = j->next) {
                runs[k++] = j;
                text += job_info_max(j);
            }
    assert(k == be->n_running); /* the counter and the lists agree (be_check) */
    nrun = k;
    if (nrun > 1)
        qsort(runs, nrun, sizeof(*runs), run_cmp);
    /* 2. Select the waiting jobs: merge the environments' FIFOs by arrival sequence (a
     * gone client's jobs, being dropped, are left out). */
    size_t nsel = 0, nheads = 0;
    if (want > 0 && be->fair.mode != FAIR_NONE) {
        long got;
        if (grow((void **)&be->q_sel, &be->q_sel_cap, want, sizeof(*be->q_sel)) != 0 ||
            (got = fair_select(be, want, &text)) < 0)
            goto oom;
        nsel = (size_t)got;
    } else if (want > 0) {
        if (grow((void **)&be->q_sel, &be->q_sel_cap, want, sizeof(*be->q_sel)) != 0 ||
            (heads = malloc(be->nenvs * sizeof(*heads))) == NULL)
            goto oom;
        for (size_t i = 0; i < etab_nchains(be); i++)
            for (struct env *e = etab_chain(be, i); e != NULL && nheads < be->nenvs; e = e->hnext)
                if (e->fifo_head != NULL)
                    heads[nheads++] = e->fifo_head;
        assert(nheads <= be->nenvs);
        for (size_t i = nheads; i-- > 0;)
            heads_down(heads, nheads, i);
        while (nheads > 0 && nsel < want) {
            struct job *j = heads[0];
            if (!owner_gone(j)) {
                be->q_sel[nsel++] = j;
                text += job_info_max(j);
            }
            heads[0] = j->next;
            if (heads[0] == NULL)
                heads[0] = heads[--nheads];
            heads_down(heads, nheads, 0);
        }
    }
    /* 3. Fill the message, within the frame limit. */
    if (grow((void **)&be->q_text, &be->q_text_cap, text + 1, 1) != 0 ||
        grow(&be->q_run, &be->q_run_cap, nrun + 1, sizeof(struct ing_queue_running)) != 0 ||
        grow(&be->q_wait, &be->q_wait_cap, nsel + 1, sizeof(struct ing_queue_waiting)) != 0)
        goto oom;
    struct ing_queue_running *qr = be->q_run;
    struct ing_queue_waiting *qw = be->q_wait;
    char *tp = be->q_text;
    size_t budget = be->cfg.max_frame > 64 ? be->cfg.max_frame - 64 : 0;
    size_t used = 8;
    size_t nr = 0;
    for (; nr < nrun; nr++) {
        struct job *j = runs[nr];
        struct ing_queue_running *r = &qr[nr];
        r->job_id = job_id_view(j);
        r->is_current = j->owner == c;
        r->agent_name.p = j->agent->name;
        r->agent_name.len = (uint32_t)strlen(j->agent->name);
        r->info.p = tp;
        r->info.len = job_info(j, tp);
        r->launcher = job_launcher(j);
        r->started_at = (uint32_t)(be->wall_s - (int64_t)(((uint32_t)be->now_ms - j->u.started_ms) / 1000));
        r->max_time = job_max_time(j, &r->max_time_u64);
        size_t sz = 4 + r->job_id.len + 1 + 4 + r->agent_name.len + 4 + r->info.len + 4 +
                    r->launcher.len + 16;
        if (used + sz > budget) {
            log_msg(LOG_WARN, "queue snapshot truncated to %zu of %zu running jobs (max frame)", nr,
                    nrun);
            nsel = 0;
            break;
        }
        used += sz;
        tp += r->info.len;
    }
    size_t nw = 0;
    for (; nw < nsel; nw++) {
        struct job *j = be->q_sel[nw];
        struct ing_queue_waiting *w = &qw[nw];
        w->job_id = job_id_view(j);
        w->is_current = j->owner == c;
        w->info.p = tp;
        w->info.len = job_info(j, tp);
        w->launcher = job_launcher(j);
        w->max_time = job_max_time(j, &w->max_time_u64);
        size_t sz = 4 + w->job_id.len + 1 + 4 + w->info.len + 4 + w->launcher.len + 8;
        if (used + sz > budget) {
            log_msg(LOG_WARN, "queue snapshot truncated to %zu of %zu waiting jobs (max frame)", nw,
                    nwait);
            break;
        }
        used += sz;
        tp += w->info.len;
    }
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_GET_QUEUE;
    m.u.queue.n_running = (uint32_t)nr;
    m.u.queue.n_waiting = (uint32_t)nw;
    m.u.queue.running = qr;
    m.u.queue.waiting = qw;
    be->ops.send(c->peer, &m);
    free(heads);
    free(runs);
    return;
oom:
    free(heads);
    free(runs);
    log_msg(LOG_ERR, "out of memory building the queue snapshot");
}

/* ---------------------------------------------------------------------------------------- */
/* Agents                                                                                    */

struct be_agent *
be_agent_new(struct backend *be, void *peer)
{
    struct be_agent *a = slab_alloc(&be->agent_slab);
    if (a == NULL)
        return NULL;
    memset(a, 0, sizeof(*a));
    a->peer = peer;
    a->name = NULL;
    return a;
}

bool
be_agent_registered(const struct be_agent *a)
{
    return a->registered;
}

const char *
be_agent_name(const struct be_agent *a)
{
    return a->name != NULL ? a->name : "";
}

void
be_agent_hold(struct be_agent *a)
{
    /* O(1) whatever its environments: its entries leave the heaps when found at a heap's
     * top (sched_envs) or with its removal (be_agent_gone); its slots stay counted. */
    if (a != NULL && a->registered)
        a->block = BLOCK_LEAVE;
}

/* agent_hold_free_slots: a (missed too many pings) gets no job until be_ping_tick removes it
 * at its next tick; it may answer meanwhile and stay, with the slots it holds busy. */
static void
agent_hold_free_slots(struct be_agent *a)
{
    if (!a->registered || a->nfree == 0)
        return;
    agent_leave_heaps(a);
    a->slots -= a->nfree; /* its free slots are gone: slots = free + running holds */
    a->nfree = a->nfresh = 0;
}

uint32_t
be_agent_busy(const struct be_agent *a)
{
    return a->nrun;
}

uint32_t
be_agent_slots(const struct be_agent *a)
{
    return a->slots;
}

/* lose_jobs handles the jobs of lost agent (or ghost) a, in reverse dispatch order
 * (proto.md 7.5): requeued if not started (or retried), else ended. silent: freed without a
 * word (be_fini). Returns the environments that got jobs back, each holding a reference
 * (*nreq of them; the caller schedules them, then lose_jobs_end), or NULL. */
static struct env **
lose_jobs(struct backend *be, struct be_agent *a, bool silent, size_t *nreq_out)
{
    struct env **requeued = NULL;
    size_t nreq = 0;
    if (!silent && a->nrun > 0)
        requeued = malloc(a->nrun * sizeof(*requeued));
    while (a->run_tail != NULL) {
        struct job *j = a->run_tail;
        bool killing = (j->flags & JOB_F_KILLING) != 0;
        bool started = j->status == JOB_STARTED;
        run_remove(be, j);
        if (!silent) {
            be->mc.lost++;
            be->mc.kills[METRICS_KILL_LOST] += killing;
        }
        if (silent || (j->owner == NULL && killing)) { /* its client left */
            job_free(be, j);
        } else if (killing) {
            send_job_result(be, j, "killed", "You killed the job");
            be->stats.jobs_killed++;
            job_free(be, j);
        } else if (job_bounces(j) >= be->cfg.max_requeues) {
            log_msg(LOG_WARN, "job %.*s lost with its agent %u times: ended", (int)j->id_len,
                    job_id(j), job_bounces(j) + 1);
            send_job_result(be, j, "crash", "Agent lost too many times while holding the job");
            be->stats.jobs_crashed++;
            job_free(be, j);
        } else if ((!started || j->retries < be->cfg.retry_lost_jobs) && requeued != NULL &&
                   jheap_reserve(be, job_env(j), job_prio(j), j->seq) == 0 &&
                   rank_reserve(&j->fk->rk, &be->fair.pool, j->ord) == 0) {
            if (started)
                j->retries++;
            j->flags = (uint8_t)(j->flags + (1u << JOB_BOUNCE_SHIFT));
            job_enqueue(be, j);
            if (be->jr != NULL && a->has_rid) /* its dispatched record no longer holds */
                jr_dispatched(be, j, NULL);
            be->stats.jobs_requeued++;
            bool seen = false;
            for (size_t x = 0; x < nreq; x++)
                seen |= requeued[x] == job_env(j);
            if (!seen)
                requeued[nreq++] = job_env(j);
            log_msg(LOG_INFO, "job %.*s requeued (agent %s lost)", (int)j->id_len, job_id(j),
                    a->name);
        } else {
            send_job_result(be, j, "crash", "Agent restarted");
            be->stats.jobs_crashed++;
            job_free(be, j);
        }
    }
    for (size_t x = 0; x < nreq; x++)
        requeued[x]->refs++;
    *nreq_out = nreq;
    return requeued;
}

/* lose_jobs_end gives the requeued jobs of lose_jobs to the free slots (sched), then
 * drops the references it held. */
static void
lose_jobs_end(struct backend *be, struct env **requeued, size_t nreq, bool sched)
{
    if (sched)
        sched_envs(be, requeued, nreq);
    for (size_t x = 0; x < nreq; x++)
        env_unref(be, requeued[x]);
    free(requeued);
}

static void ghost_adopt(struct backend *be, struct be_agent *a);

/* Removing a registered agent (INGInious deletes it and crashes all its jobs; hardened):
 * requeue the jobs it had not started, end the started ones, withdraw the environments it
 * was the last to provide. In three parts so that a re-hello can spread it over loop
 * iterations (be_register): unreg_begin (the agent and its jobs, O(its jobs)), then
 * unreg_env and unreg_type for each of its environments and types, then unreg_end.
 * silent: no message at all (be_fini). */
static void
unreg_begin(struct backend *be, struct be_agent *a, bool silent)
{
    a->registered = false;
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        be->agents = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    a->prev = a->next = NULL;
    be->n_agents--;
    /* Its entries leave the heaps with its environments (unreg_env), or at a heap's top
     * meanwhile: no job goes to it from now on. */
    a->block = BLOCK_LEAVE;
    /* Its jobs: kept for its return (7.10), else lost (7.5). */
    if (!silent && a->has_rid && a->nrun > 0 && be->cfg.resume_grace_ms > 0)
        ghost_adopt(be, a);
    size_t nreq = 0;
    struct env **requeued = lose_jobs(be, a, silent, &nreq);
    a->nkilling = 0;
    lose_jobs_end(be, requeued, nreq, !silent);
}

/* unreg_env lets a's i-th environment go, whose n_slots and n_providers count a. Returns
 * true if that withdraws it from the list. */
static bool
unreg_env(struct backend *be, struct be_agent *a, uint32_t i)
{
    struct env *e = a->envs[i].env;
    bool withdrawn = false;
    if (a->envs[i].aidx != 0)
        aheap_remove(e, a->envs[i].aidx - 1);
    e->n_slots -= a->slots;
    if (--e->n_providers == 0) {
        withdrawn = true;
        env_withdrawn(be, e);
        if (e->n > 0 && be->cfg.orphan_timeout_ms > 0)
            orphan_add(be, e);
    }
    env_unref(be, e);
    return withdrawn;
}

/* unreg_type lets a's i-th type record go (announced by a). Returns true if that withdraws
 * it from the list. */
static bool
unreg_type(struct backend *be, struct be_agent *a, uint32_t i)
{
    bool withdrawn = a->types[i]->nann == 1;
    type_withdrawn(be, a->types[i]);
    env_unref(be, a->types[i]);
    return withdrawn;
}

/* unreg_end frees what a's registration held once its environments and types are let go;
 * withdrawn: some left the list (clients are sent it after --env-grace). */
static void
unreg_end(struct backend *be, struct be_agent *a, bool silent, bool withdrawn)
{
    free(a->envs);
    free(a->types);
    free(a->ring);
    a->envs = NULL;
    a->types = NULL;
    a->ring = NULL;
    a->nenvs = a->ntypes = a->slots = a->nfree = a->nfresh = a->fhead = a->rcap = 0;
    a->block = 0;
    if (!silent && withdrawn)
        envs_touch(be, true); /* held a while: the agent may come back */
}

static void
agent_unregister(struct backend *be, struct be_agent *a, bool silent)
{
    if (!a->registered)
        return;
    unreg_begin(be, a, silent);
    bool withdrawn = false;
    for (uint32_t i = 0; i < a->nenvs; i++)
        withdrawn |= unreg_env(be, a, i);
    for (uint32_t i = 0; i < a->ntypes; i++)
        withdrawn |= unreg_type(be, a, i);
    unreg_end(be, a, silent, withdrawn);
}

/* ---------------------------------------------------------------------------------------- */
/* Agents that come back (proto.md 7.10)                                                     */

/* ghost_adopt hands the running jobs of a (being removed) to the ghost of its id: they
 * wait cfg.resume_grace_ms for a to come back and claim them. Without memory for the
 * ghost they stay, and are lost as today (7.5). */
static void
ghost_adopt(struct backend *be, struct be_agent *a)
{
    struct be_agent *g = ghost_get(be, a->rid, a->name);
    if (g == NULL) {
        log_msg(LOG_ERR, "agent %s: out of memory to keep its jobs for its return", a->name);
        return;
    }
    if (g->dl_ms < be->now_ms + be->cfg.resume_grace_ms)
        g->dl_ms = be->now_ms + be->cfg.resume_grace_ms;
    uint32_t n = a->nrun;
    while (a->run_head != NULL)
        run_move(be, a->run_head, g);
    log_msg(LOG_INFO, "agent %s lost: its %u jobs wait %llu ms for it to come back", a->name, n,
            (unsigned long long)be->cfg.resume_grace_ms);
}

/* ghost_release: ghost g's jobs are lost as with a lost agent (7.5), then g is freed. */
static void
ghost_release(struct backend *be, struct be_agent *g)
{
    be->n_held -= g->nrun;
    size_t nreq = 0;
    struct env **req = lose_jobs(be, g, false, &nreq);
    lose_jobs_end(be, req, nreq, true);
    ghost_free(be, g);
}

/* ghost_expire ends ghost g's grace: its jobs are lost (ghost_release), each named in the
 * log (a job that may now run twice, if its agent still has it). */
static void
ghost_expire(struct backend *be, struct be_agent *g)
{
    log_msg(LOG_WARN, "agent %s did not come back within the resume grace: %u jobs lost",
            be_agent_name(g), g->nrun);
    for (const struct job *j = g->run_head; j != NULL; j = j->next)
        log_msg(LOG_INFO, "job %.*s not claimed within the resume grace", (int)j->id_len,
                job_id(j));
    ghost_release(be, g);
}

/* ghosts_expire ends the graces that are over. */
static void
ghosts_expire(struct backend *be)
{
    struct be_agent *g = be->ghosts, *next;
    for (; g != NULL; g = next) {
        next = g->next;
        if (g->dl_ms <= be->now_ms)
            ghost_expire(be, g);
    }
}

/* claim_refuse tells agent a to kill job id, which it may not keep (7.10). */
static void
claim_refuse(struct backend *be, struct be_agent *a, struct ing_view id, const char *why)
{
    log_msg(LOG_WARN, "agent %s: claim of job %.*s refused (%s): told to kill it", a->name,
            (int)(id.len > 255 ? 255 : id.len), id.p, why);
    be->stats.claims_refused++;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_KILL_JOB;
    m.u.kill.job_id = id;
    m.u.kill.state.p = "";
    be->ops.send(a->peer, &m);
}

static void jr_started(struct backend *be, const struct job *j);

/* claim takes job id back for registered agent a (just said AgentHelloResume with its
 * free slots all fresh): granted (true) when a has a free slot and the ghost of a's id holds
 * the job, or the job waits in the queue after a loss (its grace ended; requeued, not
 * dispatched since: the agent that claims it runs it still, and it is not run twice). */
static bool
claim(struct backend *be, struct be_agent *a, const struct ing_resume_job *rj)
{
    struct ing_view id = rj->job_id;
    struct job *j = id.len > 0 && id.len <= MAX_ID_LEN ? jtab_find_h(be, id_hash(id.p, id.len),
                                                                     id.p, id.len)
                                                       : NULL;
    bool waits = j != NULL && j->status == JOB_WAITING;
    if (j == NULL || (waits && (job_bounces(j) == 0 || owner_gone(j)))) {
        claim_refuse(be, a, id, j == NULL ? "unknown job" : "never dispatched");
        return false;
    }
    if (!waits && (!j->agent->ghost || memcmp(j->agent->rid, a->rid, ING_AGENT_ID_LEN) != 0)) {
        claim_refuse(be, a, id, "another agent holds it");
        return false;
    }
    if (a->nfree == 0) {
        claim_refuse(be, a, id, "more jobs than slots");
        return false;
    }
    slot_take(a);
    if (waits) { /* out of the queue, to a, which has it */
        job_unqueue(be, j);
        j->status = JOB_DISPATCHED;
        j->agent = a;
        j->t.run.dseq = (uint32_t)++be->dispatch_seq;
        run_append(a, j);
        be->n_running++;
        if (be->jr != NULL)
            jr_dispatched(be, j, a->rid);
        j->u.started_ms = (uint32_t)be->now_ms; /* a new run: the deadline from now */
        j->t.run.dl = (uint32_t)be->now_ms + j->deadline_ms;
    } else {
        run_move(be, j, a); /* held: its deadline (and run time) go on from its dispatch */
    }
    int32_t left = (int32_t)(j->t.run.dl - (uint32_t)be->now_ms);
    uint64_t dl = be->now_ms + (left > 0 ? (uint64_t)left : 0);
    if (a->dl_ms > dl)
        a->dl_ms = dl;
    be->stats.jobs_claimed++;
    if (rj->started && j->status != JOB_STARTED) { /* its AgentJobStarted was lost */
        j->status = JOB_STARTED;
        if (be->jr != NULL)
            jr_started(be, j);
        send_started(be, j);
    }
    if (j->flags & JOB_F_KILLING) { /* killed while held: the kill goes out now */
        j->flags &= (uint8_t)~JOB_F_KILLING;
        a->nkilling--;
        send_kill(be, j);
    }
    log_msg(LOG_DEBUG, "job %.*s claimed back by agent %s", (int)j->id_len, job_id(j), a->name);
    return true;
}

/* claims_apply grants or refuses the n claims, then frees the ghost if it is empty. */
static void
claims_apply(struct backend *be, struct be_agent *a, const struct ing_resume_job *claims,
             uint32_t n)
{
    uint32_t granted = 0;
    for (uint32_t i = 0; i < n; i++)
        granted += claim(be, a, &claims[i]);
    if (n > 0)
        log_msg(LOG_INFO, "agent %s claimed %u jobs back (%u refused)", a->name, granted,
                n - granted);
    struct be_agent *g = ghost_find(be, a->rid);
    if (g != NULL && g->nrun > 0) /* it listed every job it has: not these */
        log_msg(LOG_INFO, "agent %s is back without %u of the jobs held for it: lost now",
                a->name, g->nrun);
    if (g != NULL)
        ghost_release(be, g);
}


static int hello_fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
hello_fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (why != NULL && whylen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* One announced environment, as read from AgentHello. */
struct env_ann {
    struct ing_mp_obj type, name;
    const uint8_t *id;
    uint32_t id_len;
    int64_t created;
    bool advertised;
};

/* hello_next reads the next (type, name, info) of the hello's environment map. The cursor
 * state is (p, end, types left, names left in the current type). */
struct hello_iter {
    const uint8_t *p, *end;
    uint32_t types_left, names_left;
    struct ing_mp_obj type;
    struct ing_mp_obj *types; /* if not NULL: every type read is appended (ntypes) */
    uint32_t ntypes;
};

/* hello_bad: the environments map breaks proto.md 4.1 (a large one is not checked by the
 * codec: ING_HELLO_CHECK_MAX); refused as the codec refuses a malformed frame. */
static int
hello_bad(char *why, size_t whylen)
{
    (void)hello_fail(why, whylen, "malformed message");
    return -EBADMSG;
}

/* str_ok tells whether the str read from p0 up to p is valid UTF-8 (proto.md 4.1). */
static bool
str_ok(const uint8_t *p0, const uint8_t *p)
{
    return ing_mp_validate(p0, (size_t)(p - p0), 1) == 0;
}

/* hello_next reads the next environment; 1, 0 at the end, -EINVAL (a value of the wrong
 * type, why says which) or -EBADMSG (malformed msgpack). */
static int
hello_next(struct hello_iter *it, struct env_ann *ann, char *why, size_t whylen)
{
    struct ing_mp_obj o;
    const uint8_t *p0;
    while (it->names_left == 0) {
        if (it->types_left == 0)
            return 0;
        it->types_left--;
        p0 = it->p;
        if (ing_mp_read(&it->p, it->end, &it->type) != 0)
            return hello_bad(why, whylen);
        if (it->type.type != ING_MP_STR)
            return hello_fail(why, whylen, "environment type is not a string");
        if (!str_ok(p0, it->p))
            return hello_bad(why, whylen);
        if (it->types != NULL)
            it->types[it->ntypes++] = it->type; /* at most the map's count: types_left */
        if (ing_mp_read(&it->p, it->end, &o) != 0)
            return hello_bad(why, whylen);
        if (o.type != ING_MP_MAP)
            return hello_fail(why, whylen, "environments of type %.*s: not a map",
                              (int)it->type.v.s.len, (const char *)it->type.v.s.p);
        it->names_left = o.v.n;
    }
    it->names_left--;
    ann->type = it->type;
    const char *tp = (const char *)it->type.v.s.p;
    uint32_t tl = it->type.v.s.len;
    p0 = it->p;
    if (ing_mp_read(&it->p, it->end, &ann->name) != 0)
        return hello_bad(why, whylen);
    if (ann->name.type != ING_MP_STR)
        return hello_fail(why, whylen, "an environment name of type %.*s is not a string", (int)tl,
                          tp);
    if (!str_ok(p0, it->p))
        return hello_bad(why, whylen);
    const char *np = (const char *)ann->name.v.s.p;
    uint32_t nl = ann->name.v.s.len;
    if (tl == 0 || tl > MAX_ENV_LEN || nl == 0 || nl > MAX_ENV_LEN)
        return hello_fail(why, whylen, "environment %.*s/%.*s: bad name length", (int)tl, tp,
                          (int)nl, np);
    const uint8_t *info = it->p;
    /* The info map is at level 3 of the environments map (proto.md 4.1: 64 at most). */
    if (ing_mp_skip(&it->p, it->end, ING_MP_MAX_DEPTH - 2) != 0 ||
        ing_mp_validate(info, (size_t)(it->p - info), ING_MP_MAX_DEPTH - 2) != 0)
        return hello_bad(why, whylen);
    size_t ilen = (size_t)(it->p - info);
    if (!mp_is_map((struct ing_view){(const char *)info, (uint32_t)ilen}))
        return hello_fail(why, whylen, "environment %.*s/%.*s: info is not a map", (int)tl, tp,
                          (int)nl, np);
    const uint8_t *v, *q;
    size_t vl;
    if (ing_mp_map_get(info, ilen, "id", 2, &v, &vl) != 0 ||
        (q = v, ing_mp_read(&q, v + vl, &o)) != 0 || o.type != ING_MP_STR)
        return hello_fail(why, whylen, "environment %.*s/%.*s: missing or bad id", (int)tl, tp,
                          (int)nl, np);
    ann->id = o.v.s.p;
    ann->id_len = o.v.s.len;
    if (ing_mp_map_get(info, ilen, "created", 7, &v, &vl) != 0 ||
        (q = v, ing_mp_read(&q, v + vl, &o)) != 0 ||
        (o.type != ING_MP_INT && o.type != ING_MP_UINT && o.type != ING_MP_FLOAT))
        return hello_fail(why, whylen, "environment %.*s/%.*s: missing or bad created", (int)tl, tp,
                          (int)nl, np);
    if (o.type == ING_MP_INT)
        ann->created = o.v.i;
    else if (o.type == ING_MP_UINT)
        ann->created = INT64_MAX;
    else if (!(o.v.f == o.v.f)) /* NaN */
        ann->created = 0;
    else if (o.v.f >= 9.2e18)
        ann->created = INT64_MAX;
    else if (o.v.f <= -9.2e18)
        ann->created = INT64_MIN;
    else
        ann->created = (int64_t)o.v.f;
    ann->advertised = true;
    if (ing_mp_map_get(info, ilen, "advertised", 10, &v, &vl) == 0) {
        q = v;
        if (ing_mp_read(&q, v + vl, &o) != 0 || o.type != ING_MP_BOOL)
            return hello_fail(why, whylen, "environment %.*s/%.*s: advertised is not a bool",
                              (int)tl, tp, (int)nl, np);
        ann->advertised = o.v.b;
    }
    return 1;
}

static int
hello_begin(struct hello_iter *it, const struct ing_agent_hello *m, char *why, size_t whylen)
{
    struct ing_mp_obj o;
    it->p = (const uint8_t *)m->environments.p;
    it->end = it->p + m->environments.len;
    it->names_left = 0;
    it->types = NULL;
    it->ntypes = 0;
    if (ing_mp_read(&it->p, it->end, &o) != 0 || o.type != ING_MP_MAP)
        return hello_fail(why, whylen, "available_environments is not a map");
    it->types_left = o.v.n;
    return 0;
}

/* vid_set sets e's version id (for the logs only: NULL when out of memory). */
static void
vid_set(struct env *e, const struct env_ann *ann)
{
    free(e->vid);
    e->vid = strndup((const char *)ann->id, ann->id_len);
    e->created = ann->created;
    e->advertised = ann->advertised;
}

/* env_announce: the agent named agent provides e (announced as ann, of type record t). */
static void
env_announce(struct backend *be, struct env *e, struct env *t, const struct env_ann *ann,
             const char *agent)
{
    if (e->n_providers == 0) {
        vid_set(e, ann);
        env_provided(be, e, t);
    } else if (e->vid != NULL && strlen(e->vid) == ann->id_len &&
               memcmp(e->vid, ann->id, ann->id_len) == 0) {
        /* same version */
    } else if (e->created > ann->created) {
        log_msg(LOG_WARN,
                "agent %s provides an older version of environment %s/%s (%.*s); keeping %s", agent,
                e->type, e->name, (int)ann->id_len, (const char *)ann->id,
                e->vid != NULL ? e->vid : "?");
    } else {
        log_msg(LOG_WARN, "agent %s provides a newer version of environment %s/%s: %.*s", agent,
                e->type, e->name, (int)ann->id_len, (const char *)ann->id);
        vid_set(e, ann);
    }
    e->n_providers++;
    orphan_remove(be, e);
}

/* hello_rate tells whether agent a may say hello now (a burst of cfg.hello_burst, then one
 * per second), and counts this one. */
static bool
hello_rate(struct backend *be, struct be_agent *a)
{
    if (be->cfg.hello_burst == 0)
        return true;
    uint64_t tat = a->hello_tat > be->now_ms ? a->hello_tat : be->now_ms;
    if (tat - be->now_ms >= (uint64_t)be->cfg.hello_burst * 1000)
        return false;
    a->hello_tat = tat + 1000;
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Registration, in steps                                                                    */

/* What applying a hello needs, taken before anything changes (so that it cannot fail half
 * way): the agent's new environments and type records, each with a reference held. */
struct hello_plan {
    struct eref *envs;
    struct env **types;
    uint32_t n, nt;
    int64_t dbytes, denvs; /* change of be->list_bytes and be->n_provided */
};

/* A hello registers in phases; each does its work in units (an environment or a type) so
 * that be_register can stop after any unit and go on at the next loop iteration. */
enum reg_phase {
    REG_PARSE,   /* validate the environments, keeping their views (anns, tanns) */
    REG_MARK,    /* a re-hello: mark the agent's current environments and types */
    REG_PREPARE, /* find or create every type and environment (the plan), count the list */
    REG_COUNT,   /* a re-hello: what its previous registration alone provides goes */
    REG_CHECK,   /* the bounds over the whole table (one unit) */
    REG_UNREG,   /* a re-hello: the previous registration goes (unreg_env, unreg_type) */
    REG_APPLY,   /* announce the plan's types and environments */
    REG_ENTER,   /* the free slots join the environments' heaps (BLOCK_ENTER) */
    REG_DROP,    /* refused, or the agent left before REG_UNREG: the plan's references go */
    REG_CANCEL,  /* the agent left during REG_UNREG to REG_ENTER: what was applied goes */
};

struct be_reg {
    struct be_reg *next; /* be->regs: only the first one makes progress */
    struct be_agent *a;  /* NULL once the agent left before REG_UNREG (a freed by then) */
    bool gone;           /* the agent left: no callback; from REG_UNREG on a is ours to free */
    bool remove;         /* a lost agent's removal (unreg_stepped): REG_UNREG, then the end */
    bool stepped;        /* queued (ops.registered tells the end), not run inline */
    enum reg_phase phase;
    struct sblk *own;    /* the copy of the environments map a queued hello reads, or the
                          * memory holding them (ops.take): counted in held_bytes */
    struct ing_agent_hello m;
    bool resume;                   /* an AgentHelloResume (7.10): its agent id and claims */
    uint8_t rid[ING_AGENT_ID_LEN];
    struct ing_resume_job *claims; /* copied (ids after the array, one allocation) */
    uint32_t nclaims;
    char *name;
    uint64_t *ring;
    uint32_t rcap, slots;
    struct hello_iter it;
    struct env_ann **anns; /* the announced environments, in order (views into m), in
                            * chunks of ANN_CHUNK (no large copy as they grow) */
    size_t count, acap;    /* acap: chunks allocated (anns has room for nchunks) */
    size_t nchunks;
    struct ing_mp_obj *tanns; /* the announced types, in order (it.types) */
    struct hello_plan plan;
    size_t i;             /* the phase's cursor */
    uint32_t prev;        /* REG_PREPARE: cursor in the agent's current environments */
    uint64_t old, mark;   /* REG_MARK / REG_PREPARE: the marks of the current and new sets */
    uint32_t ke, kt;      /* REG_APPLY: environments and types announced so far */
    const uint8_t *last_type;
    struct env *t;        /* REG_APPLY: the type record of last_type */
    bool withdrawn;       /* REG_UNREG / REG_CANCEL: some left the list */
    int rc;
    char why[300];
};

static void agent_replaced(struct backend *be, struct be_agent *a, const uint8_t *rid);

/* claims_copy copies the claims of m into r (one allocation). Returns 0 or -ENOMEM. */
static int
claims_copy(struct be_reg *r, const struct ing_agent_hello_resume *m)
{
    const uint8_t *pos = m->wire_jobs;
    struct ing_resume_job rj;
    size_t bytes = 0;
    r->resume = true;
    memcpy(r->rid, m->agent_id, ING_AGENT_ID_LEN);
    for (uint32_t i = 0; i < m->n_jobs; i++) {
        if (m->jobs != NULL)
            rj = m->jobs[i];
        else
            pos = ing_resume_next(pos, &rj);
        bytes += rj.job_id.len;
    }
    r->claims = malloc((size_t)m->n_jobs * sizeof(*r->claims) + bytes + 1);
    if (r->claims == NULL)
        return -ENOMEM;
    char *ids = (char *)(r->claims + m->n_jobs);
    pos = m->wire_jobs;
    for (uint32_t i = 0; i < m->n_jobs; i++) {
        if (m->jobs != NULL)
            rj = m->jobs[i];
        else
            pos = ing_resume_next(pos, &rj);
        memcpy(ids, rj.job_id.p, rj.job_id.len);
        r->claims[i].job_id.p = ids;
        r->claims[i].job_id.len = rj.job_id.len;
        r->claims[i].started = rj.started;
        ids += rj.job_id.len;
    }
    r->nclaims = m->n_jobs;
    return 0;
}

#define ANN_CHUNK 1024

static inline struct env_ann *
ann_at(const struct be_reg *r, size_t i)
{
    return &r->anns[i / ANN_CHUNK][i % ANN_CHUNK];
}

/* reg_prepare_type takes the i-th announced type into the plan. Returns 0 or -ENOMEM. */
static int
reg_prepare_type(struct backend *be, struct be_reg *r, size_t i)
{
    const struct ing_mp_obj *o = &r->tanns[i];
    struct hello_plan *p = &r->plan;
    struct env *t = env_get(be, (const char *)o->v.s.p, o->v.s.len, "", 0);
    if (t == NULL)
        return -ENOMEM;
    if (t->mark == r->mark)
        return 0; /* the same type twice */
    if (t->mark != r->old && t->nann == 0)
        p->dbytes += (int64_t)LIST_TYPE_COST(t);
    t->mark = r->mark;
    t->refs++;
    p->types[p->nt++] = t;
    return 0;
}

/* reg_prepare_env takes the i-th announced environment into the plan, and room for the
 * agent in its heap. A re-hello mostly repeats the agent's list in the same order: the
 * cursor r->prev follows its current environments and spares the hash table's lookup while
 * they match. Returns 0 or -ENOMEM. */
static int
reg_prepare_env(struct backend *be, struct be_reg *r, size_t i)
{
    const struct env_ann *ann = ann_at(r, i);
    struct hello_plan *p = &r->plan;
    struct be_agent *a = r->a;
    struct env *e = NULL;
    if (a->registered && r->prev < a->nenvs) {
        struct env *c = a->envs[r->prev].env;
        if (c->type_len == ann->type.v.s.len && c->name_len == ann->name.v.s.len &&
            memcmp(c->name, ann->name.v.s.p, c->name_len) == 0 &&
            memcmp(c->type, ann->type.v.s.p, c->type_len) == 0) {
            e = c;
            r->prev++;
        }
    }
    if (e == NULL)
        e = env_get(be, (const char *)ann->type.v.s.p, ann->type.v.s.len,
                    (const char *)ann->name.v.s.p, ann->name.v.s.len);
    if (e == NULL)
        return -ENOMEM;
    if (e->mark == r->mark)
        return 0; /* the same environment twice */
    bool mine = e->mark == r->old;
    e->mark = r->mark;
    e->refs++;
    p->envs[p->n].env = e;
    p->envs[p->n].aidx = 0;
    p->n++;
    if (!mine && e->n_providers == 0) {
        p->dbytes += (int64_t)mp_str_size(e->name_len);
        p->denvs++;
    }
    if (e->n_providers + 1 > e->acap) {
        uint32_t cap = e->acap ? e->acap * 2 : 4;
        struct aref *h = realloc(e->aheap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        e->aheap = h;
        e->acap = cap;
    }
    return 0;
}

/* reg_count_old: once the plan is complete, the agent's i-th current environment or type
 * (counting the environments first), if the plan does not have it and the agent alone
 * provides it, goes from the count. */
static void
reg_count_old(struct be_reg *r, size_t i)
{
    struct hello_plan *p = &r->plan;
    const struct be_agent *a = r->a;
    if (i < a->nenvs) {
        const struct env *e = a->envs[i].env;
        if (e->mark == r->old && e->n_providers == 1) {
            p->dbytes -= (int64_t)mp_str_size(e->name_len);
            p->denvs--;
        }
    } else if (i - a->nenvs < a->ntypes) {
        const struct env *t = a->types[i - a->nenvs];
        if (t->mark == r->old && t->nann == 1)
            p->dbytes -= (int64_t)LIST_TYPE_COST(t);
    }
}

/* reg_check checks the list's bounds with the plan. Returns 0 or -EINVAL (r->why). Other
 * registrations wait for this one, and an agent that leaves meanwhile only makes the list
 * smaller: the count stays an upper bound until the plan is applied. */
static int
reg_check(struct backend *be, struct be_reg *r)
{
    const struct hello_plan *p = &r->plan;
    uint64_t nprov = (uint64_t)((int64_t)be->n_provided + p->denvs);
    uint64_t bytes = LIST_BASE + (uint64_t)((int64_t)be->list_bytes + p->dbytes);
    if (nprov > be->cfg.max_envs)
        return hello_fail(r->why, sizeof(r->why),
                          "too many environments in total: %llu (at most %llu, --max-envs)",
                          (unsigned long long)nprov, (unsigned long long)be->cfg.max_envs);
    if (bytes > list_bytes_max(be))
        return hello_fail(r->why, sizeof(r->why),
                          "environment list too large: %llu bytes (at most %llu, "
                          "--max-env-bytes and --max-frame)",
                          (unsigned long long)bytes, (unsigned long long)list_bytes_max(be));
    return 0;
}

/* reg_apply_begin gives the plan to the agent (not registered: its previous registration,
 * if any, is gone), with no free slot yet. */
static void
reg_apply_begin(struct backend *be, struct be_reg *r)
{
    struct be_agent *a = r->a;
    be->envs_held = true;
    free(a->name);
    a->name = r->name;
    r->name = NULL;
    a->ring = r->ring;
    r->ring = NULL;
    a->rcap = r->rcap;
    a->envs = r->plan.envs;
    a->nenvs = r->plan.n;
    a->types = r->plan.types;
    a->ntypes = r->plan.nt;
    r->plan.envs = NULL;
    r->plan.types = NULL;
    r->plan.n = r->plan.nt = 0;
    a->slots = r->slots;
    a->nfree = a->nfresh = 0;
    a->fhead = 0;
    a->missed = 0;
    a->block = BLOCK_ENTER;
    a->has_rid = r->resume; /* its previous registration (and id) went before */
    if (r->resume)
        memcpy(a->rid, r->rid, ING_AGENT_ID_LEN);
    r->ke = r->kt = 0;
    r->i = 0;
    r->last_type = NULL;
    r->phase = REG_APPLY;
}

/* reg_apply_env announces the next environment of the plan: the hello's i-th if it is not
 * a duplicate (the plan left those out: its k-th is the k-th distinct one). */
static void
reg_apply_env(struct backend *be, struct be_reg *r)
{
    struct be_agent *a = r->a;
    const struct env_ann *an = ann_at(r, r->i++);
    struct env *e = a->envs[r->ke].env;
    if (e->name_len != an->name.v.s.len || e->type_len != an->type.v.s.len ||
        memcmp(e->name, an->name.v.s.p, e->name_len) != 0 ||
        memcmp(e->type, an->type.v.s.p, e->type_len) != 0)
        return; /* a duplicate */
    if (an->type.v.s.p != r->last_type) {
        r->last_type = an->type.v.s.p;
        r->t = env_find(be, e->type, e->type_len, "", 0);
    }
    env_announce(be, e, r->t, an, a->name);
    e->n_slots += a->slots;
    r->ke++;
}

/* reg_done: the agent is registered; its slots join the free-slot FIFO after every other
 * (the heaps hold it there already). */
static void
reg_done(struct backend *be, struct be_reg *r)
{
    struct be_agent *a = r->a;
    a->fresh_seq = be->slot_seq + 1;
    be->slot_seq += a->slots;
    a->block = 0;
    a->registered = true;
    a->prev = NULL;
    a->next = be->agents;
    if (be->agents != NULL)
        be->agents->prev = a;
    be->agents = a;
    be->n_agents++;
    be->envs_held = false;
    log_msg(LOG_INFO, "agent %s registered: %u slots, %u environments", a->name, a->slots,
            a->nenvs);
    if (r->resume) { /* its jobs first: they hold its slots */
        agent_replaced(be, a, a->rid);
        claims_apply(be, a, r->claims, r->nclaims);
    }
    sched_agent(be, a);
    envs_touch(be, false); /* INGInious sends the list after every hello */
    r->rc = 0;
}

/* reg_unit does one unit of r's work. Returns true when r has ended (r->rc says how). */
static bool
reg_unit(struct backend *be, struct be_reg *r)
{
    struct be_agent *a = r->a;
    struct env_ann ann;
    int rc;
    switch (r->phase) {
    case REG_PARSE:
        rc = hello_next(&r->it, &ann, r->why, sizeof(r->why));
        if (rc == 0 && r->it.p != r->it.end)
            rc = hello_bad(r->why, sizeof(r->why)); /* bytes after the map */
        if (rc < 0) {
            r->rc = rc;
            goto refuse;
        }
        if (rc == 0) {
            r->phase = a->registered ? REG_MARK : REG_PREPARE;
            r->old = ++be->mark_seq; /* a's current environments (none has it yet) */
            r->mark = ++be->mark_seq;
            r->i = 0;
            r->plan.envs = calloc(r->count ? r->count : 1, sizeof(*r->plan.envs));
            r->plan.types = calloc(r->it.ntypes ? r->it.ntypes : 1, sizeof(*r->plan.types));
            if (r->plan.envs == NULL || r->plan.types == NULL)
                goto oom;
            return false;
        }
        if (r->count >= be->cfg.max_envs_per_agent) {
            hello_fail(r->why, sizeof(r->why),
                       "too many environments: more than %u (--max-envs-per-agent)",
                       be->cfg.max_envs_per_agent);
            goto refuse;
        }
        if (r->count == r->acap * ANN_CHUNK) {
            if (r->acap == r->nchunks) {
                size_t ncap = r->nchunks ? r->nchunks * 2 : 4;
                struct env_ann **na = realloc(r->anns, ncap * sizeof(*na));
                if (na == NULL)
                    goto oom;
                r->anns = na;
                r->nchunks = ncap;
            }
            if ((r->anns[r->acap] = malloc(ANN_CHUNK * sizeof(**r->anns))) == NULL)
                goto oom;
            r->acap++;
        }
        *ann_at(r, r->count++) = ann;
        return false;
    case REG_MARK:
        if (r->i < a->nenvs)
            a->envs[r->i].env->mark = r->old;
        else if (r->i - a->nenvs < a->ntypes)
            a->types[r->i - a->nenvs]->mark = r->old;
        if (++r->i >= (size_t)a->nenvs + a->ntypes) {
            r->phase = REG_PREPARE;
            r->i = 0;
        }
        return false;
    case REG_PREPARE:
        rc = r->i < r->it.ntypes ? reg_prepare_type(be, r, r->i)
             : r->i - r->it.ntypes < r->count ? reg_prepare_env(be, r, r->i - r->it.ntypes)
                                              : 0;
        if (rc != 0)
            goto oom;
        if (++r->i >= r->it.ntypes + r->count) {
            r->phase = a->registered ? REG_COUNT : REG_CHECK;
            r->i = 0;
        }
        return false;
    case REG_COUNT:
        reg_count_old(r, r->i);
        if (++r->i >= (size_t)a->nenvs + a->ntypes)
            r->phase = REG_CHECK;
        return false;
    case REG_CHECK:
        if (reg_check(be, r) != 0)
            goto refuse;
        r->i = 0;
        if (a->registered) {
            log_msg(LOG_INFO, "agent %s said hello again: restarting it", a->name);
            be->envs_held = true;
            unreg_begin(be, a, false); /* INGInious removes it first, too */
            r->withdrawn = false;
            r->phase = REG_UNREG;
        } else {
            reg_apply_begin(be, r);
        }
        return false;
    case REG_UNREG:
    case REG_CANCEL:
        /* Let a's environments and types go: in REG_CANCEL only the first ke and kt were
         * announced (the others hold a reference only). No list until the end (a lost
         * agent's removal, unreg_stepped, sets it here: the registrations before it ended). */
        be->envs_held = true;
        if (r->i < a->nenvs) {
            if (r->phase == REG_UNREG || r->i < r->ke)
                r->withdrawn |= unreg_env(be, a, (uint32_t)r->i);
            else
                env_unref(be, a->envs[r->i].env);
        } else if (r->i - a->nenvs < a->ntypes) {
            uint32_t k = (uint32_t)(r->i - a->nenvs);
            if (r->phase == REG_UNREG || k < r->kt)
                r->withdrawn |= unreg_type(be, a, k);
            else
                env_unref(be, a->types[k]);
        }
        if (++r->i < (size_t)a->nenvs + a->ntypes)
            return false;
        unreg_end(be, a, false, false);
        be->envs_held = false;
        if (r->withdrawn && (r->gone || r->remove))
            envs_touch(be, true); /* else the new list follows at once (reg_done) */
        if (r->phase == REG_CANCEL) {
            r->rc = -ECANCELED;
            return true;
        }
        if (r->gone || r->remove) {
            r->phase = REG_DROP;
            r->rc = -ECANCELED;
            r->i = 0;
        } else {
            reg_apply_begin(be, r);
        }
        return false;
    case REG_APPLY:
        if (r->kt < a->ntypes)
            type_announced(be, a->types[r->kt++]);
        else if (r->ke < a->nenvs && r->i < r->count)
            reg_apply_env(be, r);
        if (r->kt == a->ntypes && (r->ke == a->nenvs || r->i == r->count)) {
            assert(r->ke == a->nenvs);
            r->i = 0;
            r->phase = REG_ENTER;
            a->fresh_seq = UINT64_MAX; /* after every free slot: see BLOCK_ENTER */
            a->nfresh = a->nfree = a->slots;
        }
        if (r->phase == REG_ENTER && a->slots == 0) {
            reg_done(be, r);
            return true;
        }
        return false;
    case REG_ENTER:
        if (r->i < a->nenvs)
            aheap_push(a, (uint32_t)r->i);
        if (++r->i < a->nenvs)
            return false;
        reg_done(be, r);
        return true;
    case REG_DROP:
        if (r->i < r->plan.n)
            env_unref(be, r->plan.envs[r->i].env);
        else if (r->i - r->plan.n < r->plan.nt)
            env_unref(be, r->plan.types[r->i - r->plan.n]);
        return ++r->i >= (size_t)r->plan.n + r->plan.nt;
    }
    return true; /* cannot happen */
oom:
    hello_fail(r->why, sizeof(r->why), "out of memory");
refuse:
    if (r->rc == 0)
        r->rc = -EINVAL;
    r->phase = REG_DROP;
    r->i = 0;
    return r->plan.n + r->plan.nt == 0;
}

/* reg_free releases what r holds once it has ended (and a, if r owns it). */
static void
reg_free(struct backend *be, struct be_reg *r)
{
    if (r->a != NULL) {
        r->a->reg = NULL;
        if (r->gone) {
            free(r->a->name);
            slab_free(&be->agent_slab, r->a);
        }
    }
    free(r->plan.envs);
    free(r->plan.types);
    free(r->name);
    free(r->ring);
    for (size_t k = 0; k < r->acap; k++)
        free(r->anns[k]);
    free(r->anns);
    free(r->tanns);
    sblk_unref(r->own);
    r->own = NULL;
    free(r->claims);
}

/* hello_copy copies the environments v of a hello registered in steps (a ZeroMQ agent's,
 * whose frames the ZMTP layer reassembled, or when ops.take declines) into a block counted
 * in held_bytes. Returns NULL when out of memory. */
static struct sblk *
hello_copy(struct backend *be, struct ing_view v)
{
    uint8_t *p = malloc(v.len ? v.len : 1);
    if (p == NULL)
        return NULL;
    memcpy(p, v.p, v.len);
    struct sblk *b = sblk_new(p, v.len, &be->held_bytes);
    if (b == NULL)
        free(p);
    return b;
}

/* reg_enqueue queues r (owned by the queue from now on) for r->a, after the others. */
static void
reg_enqueue(struct backend *be, struct be_reg *r)
{
    r->stepped = true;
    r->a->reg = r;
    if (be->regs_tail != NULL)
        be->regs_tail->next = r;
    else
        be->regs = r;
    be->regs_tail = r;
}

/* reg_run does up to *budget units of r. Returns true when r has ended. */
static bool
reg_run(struct backend *be, struct be_reg *r, size_t *budget)
{
    while (*budget > 0) {
        --*budget;
        if (reg_unit(be, r))
            return true;
    }
    return false;
}

bool
be_register(struct backend *be, size_t budget)
{
    while (be->regs != NULL && budget > 0) {
        struct be_reg *r = be->regs;
        if (!reg_run(be, r, &budget))
            break;
        be->regs = r->next;
        if (be->regs == NULL)
            be->regs_tail = NULL;
        if (!r->gone && !r->remove && r->a != NULL && be->ops.registered != NULL)
            be->ops.registered(r->a->peer, r->rc, r->why);
        reg_free(be, r);
        free(r);
    }
    return be->regs != NULL;
}

bool
be_registering(const struct backend *be)
{
    return be->regs != NULL;
}

/* reg_abandon: a's connection closed while its hello is being registered. Before its
 * previous registration goes, the registration only lets its plan go (a is freed by the
 * caller, the previous registration removed as any agent's); from then on it undoes what it
 * applied, and frees a at its end. Returns true if the registration keeps a. */
static bool
reg_abandon(struct backend *be, struct be_agent *a)
{
    struct be_reg *r = a->reg;
    r->gone = true;
    switch (r->phase) {
    case REG_UNREG:
    case REG_CANCEL:
        return true; /* then REG_DROP */
    case REG_APPLY:
    case REG_ENTER:
        if (r->phase == REG_ENTER)
            r->ke = a->nenvs;
        r->phase = REG_CANCEL;
        r->i = 0;
        return true;
    default:
        a->reg = NULL;
        r->a = NULL;
        if (r->phase != REG_DROP) {
            r->phase = REG_DROP;
            r->i = 0;
        }
        (void)be;
        return false;
    }
}

/* regs_fini ends every registration at once, without callbacks (be_fini). */
static void
regs_fini(struct backend *be)
{
    while (be->regs != NULL) {
        struct be_reg *r = be->regs;
        if (!r->gone && r->a != NULL)
            (void)reg_abandon(be, r->a);
        (void)be_register(be, SIZE_MAX);
    }
}

/* unreg_stepped removes lost agent a, registered with more than BE_UNREG_INLINE environments
 * and types, in steps (be_register) as a re-hello's previous registration goes: its jobs and
 * its place among the agents at once (unreg_begin: no job for it from now on), then its
 * environments and types in the queue's order, the list held until the end (clients see
 * one change). gone: its connection closed (a freed at the end), else it missed its pings
 * (be_agent_gone frees it, or lets the removal do it if still under way). Returns false if
 * a is to be removed at once (a small registration, a hello of its queued, or no memory for
 * the removal's record). */
static bool
unreg_stepped(struct backend *be, struct be_agent *a, bool gone)
{
    if ((size_t)a->nenvs + a->ntypes <= BE_UNREG_INLINE || a->reg != NULL)
        return false;
    struct be_reg *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    r->a = a;
    r->gone = gone; /* no callback; a is the removal's to free */
    r->remove = true;
    r->phase = REG_UNREG;
    log_msg(LOG_INFO, "agent %s: its %u environments are withdrawn in steps", a->name, a->nenvs);
    unreg_begin(be, a, false);
    reg_enqueue(be, r);
    return true;
}

void
be_agent_gone(struct backend *be, struct be_agent *a)
{
    if (a == NULL)
        return;
    if (a->reg != NULL) {
        if (!a->reg->remove) /* (else it missed its pings: being removed) */
            log_msg(LOG_INFO, "agent %s left while its hello was being registered",
                    a->name != NULL ? a->name : "(new)");
        if (reg_abandon(be, a))
            return; /* the registration undoes what it applied, then frees a */
    }
    if (a->registered) {
        log_msg(LOG_INFO, "agent %s disconnected", a->name);
        be->stats.agents_lost++;
        if (unreg_stepped(be, a, true))
            return; /* the removal frees a at its end */
        agent_unregister(be, a, false);
    }
    free(a->name);
    slab_free(&be->agent_slab, a);
}

/* agent_replaced removes the registered agents other than a that have agent id rid: an
 * agent that says AgentHelloResume again on a new connection while its old one still looks
 * alive here (it gave up on it first) is the same agent; its jobs are held for the claims
 * that follow (7.10), and the old connection is closed. */
static void
agent_replaced(struct backend *be, struct be_agent *a, const uint8_t *rid)
{
    struct be_agent *o = be->agents, *next;
    for (; o != NULL; o = next) {
        next = o->next;
        if (o == a || !o->has_rid || memcmp(o->rid, rid, ING_AGENT_ID_LEN) != 0)
            continue;
        log_msg(LOG_INFO, "agent %s is back on a new connection: the old one is closed",
                o->name);
        be->stats.agents_lost++;
        agent_unregister(be, o, false);
        if (be->ops.drop != NULL)
            be->ops.drop(o->peer, ING_ERR_LIMIT, "replaced by a new connection of this agent");
    }
}

/* agent_hello validates then applies hello m (or queues it, BE_HELLO_PENDING); res: the
 * AgentHelloResume it came in, or NULL (its claims are copied: res may go). */
static int
agent_hello(struct backend *be, struct be_agent *a, const struct ing_agent_hello *m, char *why,
            size_t whylen, const struct ing_agent_hello_resume *res)
{
    struct be_reg inl, *r = &inl;
    if (a->reg != NULL)
        return hello_fail(why, whylen, "a hello is being registered already");
    if (!hello_rate(be, a))
        return hello_fail(why, whylen, "too many hellos (at most %u in a row, then one a second)",
                          be->cfg.hello_burst);
    if (m->slots > be->cfg.max_slots_per_agent)
        return hello_fail(why, whylen, "too many slots: %u (at most %u, --max-slots-per-agent)",
                          m->slots, be->cfg.max_slots_per_agent);
    if (m->friendly_name.len > 255)
        return hello_fail(why, whylen, "friendly_name too long");
    bool inline_ok = be->regs == NULL && m->environments.len <= BE_REG_INLINE_BYTES &&
                     (!a->registered || a->nenvs <= BE_REG_INLINE_ENVS);
    if (!inline_ok && (r = malloc(sizeof(*r))) == NULL)
        return hello_fail(why, whylen, "out of memory");
    memset(r, 0, sizeof(*r));
    r->a = a;
    r->m = *m;
    r->slots = m->slots;
    int rc = hello_begin(&r->it, m, r->why, sizeof(r->why));
    uint32_t ntypes = r->it.types_left;
    if (rc == 0 && ntypes > be->cfg.max_envs_per_agent) /* a type costs as an environment */
        rc = hello_fail(r->why, sizeof(r->why),
                        "too many environment types: %u (at most %u, --max-envs-per-agent)",
                        ntypes, be->cfg.max_envs_per_agent);
    r->rcap = m->slots < RING_MIN ? (m->slots ? m->slots : 1) : RING_MIN;
    if (rc == 0) {
        r->name = strndup(m->friendly_name.p, m->friendly_name.len);
        r->ring = malloc(r->rcap * sizeof(*r->ring));
        r->tanns = calloc(ntypes ? ntypes : 1, sizeof(*r->tanns));
        if (r->name == NULL || r->ring == NULL || r->tanns == NULL ||
            (res != NULL && claims_copy(r, res) != 0))
            rc = hello_fail(r->why, sizeof(r->why), "out of memory");
    }
    bool taken = false; /* the peer's input handed over (ops.take): nothing copied */
    if (rc == 0 && !inline_ok) {
        if (be->ops.take != NULL &&
            (r->own = be->ops.take(a->peer, m->environments.p, m->environments.len)) != NULL)
            taken = true;
        else if ((r->own = hello_copy(be, m->environments)) == NULL)
            rc = hello_fail(r->why, sizeof(r->why), "out of memory");
    }
    if (rc != 0) {
        snprintf(why, whylen, "%s", r->why);
        reg_free(be, r);
        if (r != &inl)
            free(r);
        return rc;
    }
    r->it.types = r->tanns;
    if (!inline_ok) { /* read the copy (or the taken input) from now on: m may go */
        if (!taken) {
            uint8_t *own = r->own->data;
            r->it.p = own + (r->it.p - (const uint8_t *)m->environments.p);
            r->it.end = own + m->environments.len;
            r->m.environments.p = (const char *)own;
        }
        r->m.friendly_name.p = r->name;
        reg_enqueue(be, r);
        return BE_HELLO_PENDING;
    }
    a->reg = r;
    size_t budget = SIZE_MAX;
    bool ended = reg_run(be, r, &budget);
    assert(ended);
    (void)ended;
    rc = r->rc;
    if (rc != 0)
        snprintf(why, whylen, "%s", r->why);
    reg_free(be, r);
    return rc;
}

int
be_agent_hello(struct backend *be, struct be_agent *a, const struct ing_agent_hello *m, char *why,
               size_t whylen)
{
    return agent_hello(be, a, m, why, whylen, NULL);
}

int
be_agent_hello_resume(struct backend *be, struct be_agent *a,
                      const struct ing_agent_hello_resume *m, char *why, size_t whylen)
{
    if (m->n_jobs > be->cfg.max_slots_per_agent)
        return hello_fail(why, whylen, "too many jobs claimed: %u (at most %u)", m->n_jobs,
                          be->cfg.max_slots_per_agent);
    return agent_hello(be, a, &m->hello, why, whylen, m);
}

/* agent_job finds the job a report is about (idh: its id's hash), if a runs it. */
static struct job *
agent_job(struct backend *be, struct be_agent *a, struct ing_view id, const char *what,
          uint64_t idh)
{
    struct job *j = jtab_find_h(be, idh, id.p, id.len);
    if (j == NULL || j->status == JOB_WAITING || j->agent != a) {
        be->stats.reports_dropped++;
        log_msg(LOG_WARN, "%s for job %.*s from agent %s dropped: %s", what,
                (int)(id.len > 255 ? 255 : id.len), id.p, be_agent_name(a),
                j == NULL ? "unknown job" : "not running on this agent");
        return NULL;
    }
    return j;
}

void
be_agent_started(struct backend *be, struct be_agent *a, struct ing_view id)
{
    be_agent_started_h(be, a, id, id_hash(id.p, id.len));
}

void
be_agent_started_h(struct backend *be, struct be_agent *a, struct ing_view id, uint64_t idh)
{
    struct job *j = agent_job(be, a, id, "AgentJobStarted", idh);
    if (j == NULL)
        return;
    if (be->jr != NULL && a->has_rid && j->status != JOB_STARTED)
        jr_started(be, j);
    j->status = JOB_STARTED;
    be->mc.started++;
    send_started(be, j);
}

void
be_agent_ssh(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
             const struct ing_ssh_debug *m)
{
    struct job *j =
        agent_job(be, a, m->job_id, "AgentJobSSHDebug", id_hash(m->job_id.p, m->job_id.len));
    struct be_client *c = j != NULL ? live_owner(j) : NULL;
    if (c == NULL || c->peer == NULL)
        return;
    be->ops.relay(c->peer, ING_BACKEND_JOB_SSH_DEBUG, body, len);
}

void
be_agent_done(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
              const struct ing_job_result *m)
{
    be_agent_done_h(be, a, body, len, m, id_hash(m->job_id.p, m->job_id.len));
}

/* env_run_time feeds the moving average of e's run times (proto.md 7.4): the first run
 * time, then avg += (t - avg) / 8. */
static void
env_run_time(struct env *e, uint64_t t)
{
    metrics_avg_update(&e->run_avg_ms, &e->has_avg, t);
}

void
be_agent_done_h(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
                const struct ing_job_result *m, uint64_t idh)
{
    struct job *j = agent_job(be, a, m->job_id, "AgentJobDone", idh);
    if (j == NULL)
        return;
    be->mc.kills[METRICS_KILL_AGENT] += (j->flags & JOB_F_KILLING) != 0;
    enum metrics_result kind = metrics_result_kind(m->result_kind.p, m->result_kind.len);
    be->mc.done[kind]++;
    uint64_t run_ms = (uint32_t)be->now_ms - j->u.started_ms;
    metrics_hist_observe(&job_env(j)->etype->run, run_ms * 1000);
    env_run_time(job_env(j), run_ms);
    if (kind != METRICS_RES_SUCCESS && kind != METRICS_RES_FAILED)
        failure_add(be, j, m->result_kind.p, m->result_kind.len, m->result_text.p,
                    m->result_text.len);
    run_remove(be, j);
    struct be_client *c = live_owner(j);
    if (c != NULL && !client_keeps(c) && !client_acks(c))
        be->ops.relay(c->peer, ING_BACKEND_JOB_DONE, body, len);
    else if (c != NULL)
        session_keep(be, c, j->seq, body, len);
    be->stats.jobs_done++;
    log_msg(LOG_DEBUG, "job %.*s done on agent %s", (int)j->id_len, job_id(j), a->name);
    job_free_h(be, j, idh);
    if (a->nfree == 0 && !be->draining && a->block == 0) {
        /* The freed slot is a's only free one: if one of its environments has a job, that
         * job takes it at once. Same result as slot_add then sched_agent, without putting
         * a into its environments' agent heaps and taking it out again. */
        struct job *next;
        while ((next = best_job(be, a)) != NULL && owner_gone(next))
            drop_gone(be, next);
        if (next != NULL) {
            be->slot_seq++; /* the slot's place in the free-slot FIFO, used at once */
            run_job(be, a, next);
            return;
        }
    }
    slot_add(be, a);
    sched_agent(be, a);
}

void
be_agent_pong(struct backend *be, struct be_agent *a)
{
    (void)be;
    a->missed = 0;
}

void
be_agent_alive(struct be_agent *a)
{
    if (a != NULL)
        a->missed = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Read-only views                                                                           */

void
be_foreach_env(const struct backend *be, be_env_fn *fn, void *arg)
{
    for (size_t b = 0; b < etab_nchains(be); b++)
        for (const struct env *e = etab_chain(be, b); e != NULL; e = e->hnext)
            if (e->name_len > 0) /* not a type record (the list's announced types) */
                fn(arg, e->type, e->name, e->n, e->running, e->n_providers);
}

uint32_t
be_agent_nenvs(const struct be_agent *a)
{
    return a->nenvs;
}

void
be_agent_env(const struct be_agent *a, uint32_t i, const char **type, const char **name)
{
    *type = a->envs[i].env->type;
    *name = a->envs[i].env->name;
}

const struct be_agent *
be_agent_next(const struct be_agent *a)
{
    return a->next;
}

/* ---------------------------------------------------------------------------------------- */
/* Timers                                                                                    */

void
be_ping_tick(struct backend *be)
{
    struct be_agent *a = be->agents, *next;
    struct ing_msg ping;
    memset(&ping, 0, sizeof(ping));
    ping.type = ING_PING;
    for (; a != NULL; a = next) {
        next = a->next;
        if (a->missed > be->cfg.ping_max) {
            if (be->cfg.lost_batch > 0 && be->lost_jobs > 0 &&
                be->lost_jobs + a->nrun > be->cfg.lost_batch) {
                agent_hold_free_slots(a); /* removed at the next tick; no job meanwhile */
                log_msg(LOG_INFO, "agent %s missed %u pings: removed at the next tick (%llu lost "
                        "agents' jobs handled in this iteration)", a->name, a->missed,
                        (unsigned long long)be->lost_jobs);
                continue;
            }
            be->lost_jobs += a->nrun;
            log_msg(LOG_WARN, "agent %s missed %u pings: removed", a->name, a->missed);
            be->stats.agents_lost++;
            if (!unreg_stepped(be, a, false))
                agent_unregister(be, a, false);
            if (be->ops.drop != NULL)
                be->ops.drop(a->peer, ING_ERR_TIMEOUT, "too many unanswered pings");
            continue;
        }
        a->missed++;
        be->ops.send(a->peer, &ping);
    }
}

/* job_expire ends running job j of agent a whose deadline has passed: a kill the agent did
 * not answer in time ends `killed`; a job the agent did not report in time ends `crash`, and
 * the agent is sent a kill (its late report will be dropped). The slot is freed. */
static void
job_expire(struct backend *be, struct be_agent *a, struct job *j)
{
    if ((j->flags & JOB_F_KILLING) && be->cfg.kill_timeout_ms > 0) {
        log_msg(LOG_WARN, "agent %s did not answer the kill of job %.*s in time", a->name,
                (int)j->id_len, job_id(j));
        run_remove(be, j);
        send_job_result(be, j, "killed", "You killed the job");
        be->stats.jobs_killed++;
        be->mc.kills[METRICS_KILL_TIMEOUT]++;
    } else {
        log_msg(LOG_WARN, "agent %s did not report job %.*s in time: ended", a->name,
                (int)j->id_len, job_id(j));
        struct ing_msg m;
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_KILL_JOB;
        m.u.kill.job_id = job_id_view(j);
        m.u.kill.state = job_state(j);
        be->ops.send(a->peer, &m);
        run_remove(be, j);
        send_job_result(be, j, "crash", "Agent did not answer in time");
        be->stats.jobs_crashed++;
        be->stats.jobs_expired++;
    }
    job_free(be, j);
    slot_add(be, a);
}

/* orphan_expired tells whether waiting job j of e, which no agent provides, has waited
 * --orphan-timeout since it entered the queue or since e lost its providers. */
static bool
orphan_expired(const struct backend *be, const struct env *e, const struct job *j)
{
    uint64_t at = job_entered_ms(j);
    uint64_t since = at > e->orphan_since ? at : e->orphan_since;
    return since + be->cfg.orphan_timeout_ms <= be->now_ms;
}

/* orphan_crash ends waiting job j of e: no agent provides e. */
static void
orphan_crash(struct backend *be, const struct env *e, struct job *j)
{
    char text[600];
    snprintf(text, sizeof(text), "No agent provides environment %s/%s", e->type, e->name);
    job_unqueue(be, j);
    send_job_result(be, j, "crash", text);
    be->stats.jobs_crashed++;
    be->mc.orphan_timeouts++;
    job_free(be, j);
}

void
be_timeouts(struct backend *be)
{
    if (be->ghosts != NULL)
        ghosts_expire(be);
    /* Running jobs past their deadline, and kills not answered in time. An agent's jobs are
     * scanned only once the earliest deadline among them may have passed. */
    for (struct be_agent *a = be->agents; a != NULL; a = a->next) {
        if (a->dl_ms > be->now_ms)
            continue;
        bool freed = false;
        uint64_t next_dl = UINT64_MAX;
        struct job *j = a->run_head, *next;
        for (; j != NULL; j = next) {
            next = j->next;
            int32_t left = (int32_t)(j->t.run.dl - (uint32_t)be->now_ms);
            if (left > 0) {
                if (be->now_ms + (uint64_t)left < next_dl)
                    next_dl = be->now_ms + (uint64_t)left;
                continue;
            }
            job_expire(be, a, j);
            freed = true;
        }
        a->dl_ms = next_dl;
        if (freed)
            sched_agent(be, a); /* may dispatch: lowers a->dl_ms */
    }
    /* Jobs whose environment nobody provides. */
    if (be->cfg.orphan_timeout_ms == 0)
        return;
    struct env *e = be->orphans, *enext;
    for (; e != NULL; e = enext) {
        /* Read the next one first: emptying e takes it off the list (orphan_remove clears
         * e->onext). Crashing e's jobs frees no other environment. */
        enext = e->onext;
        e->refs++; /* keep e while its jobs go */
        struct job *j;
        if (be->fair.mode == FAIR_NONE) {
            while ((j = e->fifo_head) != NULL && orphan_expired(be, e, j))
                orphan_crash(be, e, j);
        } else {
            /* With fair share each key's list is in the order its jobs entered (there is no
             * FIFO of the environment): the expired ones lead each. A record goes (or idles)
             * with its last job: stop at it. */
            for (struct fair_key *k = e->keys, *kn; k != NULL; k = kn) {
                kn = k->snext;
                while ((j = k->qhead) != NULL && orphan_expired(be, e, j)) {
                    bool last = k->njobs == 1;
                    orphan_crash(be, e, j);
                    if (last)
                        break;
                }
            }
        }
        env_unref(be, e);
    }
}

void
be_drain(struct backend *be)
{
    be->draining = true;
}

void
be_fail_all(struct backend *be, const char *text)
{
    idtab_settle(&be->jtab);
    for (size_t i = 0; i < idtab_slots(&be->jtab); i++) {
        struct job *j = idtab_at(&be->jtab, i);
        if (j == NULL)
            continue;
        if (be->jr != NULL && j->owner != NULL && j->owner->sess != NULL)
            continue; /* kept in the journal: its session resumes it (proto.md 7.6) */
        if (j->status == JOB_WAITING) {
            job_unqueue(be, j);
        } else {
            struct be_agent *a = j->agent;
            be->n_held -= a->ghost;
            run_remove(be, j);
            if (!a->ghost)
                slot_add(be, a);
        }
        send_job_result(be, j, "crash", text);
        be->stats.jobs_crashed++;
        job_free(be, j);
    }
    /* Emptied above, but for those holding sessions' jobs (kept in the journal: their
     * agents claim them after the restart). */
    for (struct be_agent *g = be->ghosts, *gn; g != NULL; g = gn) {
        gn = g->next;
        if (g->nrun == 0)
            ghost_free(be, g);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Sessions (proto.md 7.9)                                                                   */

static inline uint64_t
session_hash(const uint8_t *id)
{
    return idtab_hash(idtab_hash_seed(), id, ING_SESSION_ID_LEN);
}

static struct be_session *
session_get(const struct backend *be, const uint8_t *id)
{
    return idtab_find(&be->stab, session_hash(id), id, ING_SESSION_ID_LEN);
}

struct be_client *
be_session_find(const struct backend *be, const uint8_t id[ING_SESSION_ID_LEN])
{
    struct be_session *s = session_get(be, id);
    return s != NULL ? s->c : NULL;
}

void *
be_client_peer(const struct be_client *c)
{
    return c->peer;
}

const uint8_t *
be_client_session(const struct be_client *c)
{
    return c->sess != NULL ? c->sess->id : NULL;
}

/* session_make makes client c the session id. Returns 0 or -ENOMEM. */
static int
session_make(struct backend *be, struct be_client *c, const uint8_t *id)
{
    struct be_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    memcpy(s->id, id, ING_SESSION_ID_LEN);
    s->c = c;
    s->kept_tail = &s->kept;
    if (idtab_insert(&be->stab, session_hash(id), s) != 0) {
        free(s);
        return -ENOMEM;
    }
    c->sess = s;
    be->n_sessions++;
    return 0;
}

/* session_detach: c's connection is gone; its jobs stay for cfg.session_ttl_ms. */
static void
session_detach(struct backend *be, struct be_client *c)
{
    c->sess->resuming = c->sess->listing = c->sess->acking = false;
    c->sess->cursor = NULL;
    c->sess->next_send = NULL; /* on the next connection, all are sent again */
    c->sess->unacked_bytes = 0;
    c->sess->overrun = false;
    client_unregister(be, c);
    c->peer = NULL;
    c->sess->detached = true;
    c->sess->detached_ms = be->now_ms;
    log_msg(LOG_DEBUG, "session detached: its jobs wait for it (--session-ttl %llu ms)",
            (unsigned long long)be->cfg.session_ttl_ms);
    c->prev = NULL;
    c->next = be->detached;
    if (be->detached != NULL)
        be->detached->prev = c;
    be->detached = c;
}

static void
detached_unlink(struct backend *be, struct be_client *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        be->detached = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->sess->detached = false;
}

void
be_session_detach(struct backend *be, struct be_client *c)
{
    if (c->sess != NULL && !c->sess->detached)
        session_detach(be, c);
}

/* jr_session_accepted journals j, a session's job: its arrival order, its session id, its
 * ClientNewJob frame (record 7). Returns 0 or -errno. */
static int
jr_session_accepted(struct backend *be, const struct job *j, const uint8_t *sid)
{
    uint8_t pre[8 + ING_SESSION_ID_LEN + ING_HDR_LEN];
    put_u64be(pre, j->seq);
    memcpy(pre + 8, sid, ING_SESSION_ID_LEN);
    ing_frame_header(pre + 8 + ING_SESSION_ID_LEN, ING_CLIENT_NEW_JOB, j->body_len);
    struct journal_iov v[2] = {{pre, sizeof(pre)}, {j->body, j->body_len}};
    int err;
    journal_appendv(be->jr, JREC_SESSION_ACCEPTED, v, 2, &err);
    return err;
}

/* jr_kept journals a kept result (type JREC_DONE: seq, session id, frame) or its delivery
 * (JREC_DELIVERED: seq, session id). */
static void
jr_kept(struct backend *be, uint8_t type, const struct be_session *s, const struct kept *k)
{
    uint8_t pre[8 + ING_SESSION_ID_LEN];
    put_u64be(pre, k->seq);
    memcpy(pre + 8, s->id, ING_SESSION_ID_LEN);
    struct journal_iov v[2] = {{pre, sizeof(pre)}, {k->frame, ING_HDR_LEN + k->len}};
    int err;
    journal_appendv(be->jr, type, v, type == JREC_DONE ? 2 : 1, &err);
    if (err != 0)
        log_msg(LOG_ERR, "journal: a kept result of a session is not recorded: %s",
                strerror(-err));
}

/* kept_hash: the kept results are also found by their job's arrival order (unique), in
 * be->ktab: the replay and the compaction ask about one in O(1), whatever their number. */
static inline uint64_t
kept_hash(uint64_t seq)
{
    return idtab_hash(idtab_hash_seed(), &seq, sizeof(seq));
}

/* kept_add appends a result of len body bytes (frame header included in frame) to s.
 * Returns it, or NULL (no memory: logged, the result is lost). */
static struct kept *
kept_new(struct backend *be, struct be_session *s, uint64_t seq, size_t len)
{
    /* From the jobs' pool: a session acknowledging its results keeps each one a round trip,
     * and a warm pool allocates nothing for that. */
    struct kept *k = len <= UINT32_MAX - ING_HDR_LEN
                         ? pool_alloc(&be->jobs_pool, sizeof(*k) + ING_HDR_LEN + len)
                         : NULL;
    if (k == NULL) {
        log_msg(LOG_ERR, "out of memory: a result for a detached session is lost");
        return NULL;
    }
    k->next = NULL;
    k->s = s;
    k->seq = seq;
    k->len = (uint32_t)len;
    /* Only the journal's replay and compaction look kept results up by arrival order: a
     * result an acknowledging connection holds a round trip skips the table without one. */
    k->indexed = be->jr != NULL || !client_acks(s->c);
    k->shed = false;
    if (k->indexed && idtab_insert(&be->ktab, kept_hash(seq), k) != 0) {
        pool_free(&be->jobs_pool, k, sizeof(*k) + ING_HDR_LEN + len);
        log_msg(LOG_ERR, "out of memory: a result for a detached session is lost");
        return NULL;
    }
    *s->kept_tail = k;
    s->kept_tail = &k->next;
    s->shed_all = false;
    s->n_kept++;
    be->n_kept++;
    be->kept_bytes += len;
    return k;
}

static void
kept_free(struct backend *be, struct be_session *s, struct kept *k)
{
    if (k->indexed)
        idtab_remove(&be->ktab, kept_hash(k->seq), k);
    s->n_kept--;
    be->n_kept--;
    be->kept_bytes -= k->len;
    pool_free(&be->jobs_pool, k, sizeof(*k) + ING_HDR_LEN + k->len);
}

/* kept_send sends s's kept result k on s's (acknowledging) connection, numbered. Past
 * cfg.session_unacked_max bytes unacknowledged, the connection is closed (Error OVERLOAD)
 * and its session detached (proto.md 7.9). */
static void
kept_send(struct backend *be, struct be_session *s, struct kept *k)
{
    be->ops.relay(s->c->peer, ING_BACKEND_JOB_DONE, k->frame + ING_HDR_LEN, k->len);
    k->dno = ++s->sent;
    s->unacked_bytes += k->len;
    if (s->unacked_bytes > be->cfg.session_unacked_max && s->unacked_bytes > k->len &&
        !s->overrun && be->ops.drop != NULL) { /* (one result alone is never too much) */
        s->overrun = true;
        log_msg(LOG_WARN, "session: over %llu bytes of results not acknowledged: its connection "
                "is closed, the results kept", (unsigned long long)be->cfg.session_unacked_max);
        be->ops.drop(s->c->peer, ING_ERR_OVERLOAD, "results not acknowledged");
    }
}

/* session_push: k was just kept for s (appended last). On an acknowledging connection that
 * is sent results now (not resuming, not HOLD) it goes out at once, unless results kept
 * before it wait to be sent; else it is the first to wait, when none did. */
static void
session_push(struct backend *be, struct be_session *s, struct kept *k)
{
    if (!client_acks(s->c) || s->next_send != NULL)
        return;
    if (s->hold || s->resuming)
        s->next_send = k;
    else
        kept_send(be, s, k);
}

/* session_send_kept sends s's kept results not yet sent on its acknowledging connection, at
 * least one and then while budget bytes are not exceeded, but none that would leave more
 * than cfg.session_unacked_max unacknowledged (the client's acknowledgements let the next
 * ones go: be_session_ack); returns true if some remain. */
static bool
session_send_kept(struct backend *be, struct be_session *s, size_t budget)
{
    size_t sent = 0;
    while (s->next_send != NULL && (sent == 0 || sent + s->next_send->len <= budget)) {
        struct kept *k = s->next_send;
        if (s->unacked_bytes > 0 && s->unacked_bytes + k->len > be->cfg.session_unacked_max)
            break;
        s->next_send = k->next;
        kept_send(be, s, k);
        sent += k->len;
    }
    return s->next_send != NULL;
}

/* session_keep keeps the result body[0..len) of job seq for the detached session c (or
 * one that acknowledges its results). */
static void
session_keep(struct backend *be, struct be_client *c, uint64_t seq, const uint8_t *body,
             size_t len)
{
    struct kept *k = kept_new(be, c->sess, seq, len);
    if (k == NULL) {
        if (client_acks(c) && !client_keeps(c)) { /* at least sent, as without ACK */
            be->ops.relay(c->peer, ING_BACKEND_JOB_DONE, body, len);
            c->sess->sent++;
        }
        return;
    }
    ing_frame_header(k->frame, ING_BACKEND_JOB_DONE, (uint32_t)len);
    memcpy(k->frame + ING_HDR_LEN, body, len);
    if (be->jr != NULL)
        jr_kept(be, JREC_DONE, c->sess, k);
    session_push(be, c->sess, k);
}

static void
session_keep_msg(struct backend *be, struct be_client *c, uint64_t seq, const struct ing_msg *m)
{
    size_t n = ing_msg_size(m);
    if (n < ING_HDR_LEN || c->sess == NULL)
        return;
    struct kept *k = kept_new(be, c->sess, seq, n - ING_HDR_LEN);
    if (k == NULL) {
        if (client_acks(c) && !client_keeps(c)) { /* at least sent, as without ACK */
            be->ops.send(c->peer, m);
            c->sess->sent++;
        }
        return;
    }
    (void)ing_msg_encode(m, k->frame, n);
    if (be->jr != NULL)
        jr_kept(be, JREC_DONE, c->sess, k);
    session_push(be, c->sess, k);
}

/* session_unkeep forgets s's kept results (delivered, or dropped with s), journaling each
 * as delivered (record 5) so that none comes back. With deliver, they are sent to s's peer,
 * at least one and then while budget bytes are not exceeded; returns true if some remain. */
static bool
session_unkeep(struct backend *be, struct be_session *s, bool deliver, size_t budget)
{
    size_t sent = 0;
    while (s->kept != NULL && (!deliver || sent == 0 || sent + s->kept->len <= budget)) {
        struct kept *k = s->kept;
        s->kept = k->next;
        if (deliver) {
            be->ops.relay(s->c->peer, ING_BACKEND_JOB_DONE, k->frame + ING_HDR_LEN, k->len);
            sent += k->len;
        }
        if (be->jr != NULL)
            jr_kept(be, JREC_DELIVERED, s, k);
        kept_free(be, s, k);
    }
    if (s->kept == NULL)
        s->kept_tail = &s->kept;
    return s->kept != NULL;
}

/* SESSION_LIST_MAX bounds one BackendSessionJobs frame (bytes of its msgpack array). */
#define SHED_TEXT "Backend memory full"
#define SESSION_LIST_MAX (64u << 10)

/* session_list sends c (attached) the next BackendSessionJobs frames of the list of its jobs
 * (from s->cursor on: the jobs held when it resumed, less those that ended since), about
 * budget bytes of them, the last with last = true. Returns true while some remain. */
static bool
session_list(struct backend *be, struct be_client *c, size_t budget)
{
    struct be_session *s = c->sess;
    uint8_t buf[SESSION_LIST_MAX];
    size_t cap = be->cfg.max_frame > BE_FRAME_SLACK + 16 ? be->cfg.max_frame - BE_FRAME_SLACK : 0;
    if (cap > sizeof(buf))
        cap = sizeof(buf);
    if (cap > budget) /* the peer's output must not outgrow --max-output */
        cap = budget;
    if (cap < 5 + 2 + MAX_ID_LEN)
        cap = 5 + 2 + MAX_ID_LEN; /* max_frame is at least 4096 */
    size_t sent = 0;
    do {
        size_t used = 5, n = 0; /* room for the largest array header */
        const struct job *j = s->cursor;
        for (; j != NULL; j = j->onext) {
            size_t hl = j->id_len < 32 ? 1 : 2;
            if (used + hl + j->id_len > cap)
                break;
            if (hl == 1) {
                buf[used++] = (uint8_t)(0xa0 | j->id_len);
            } else {
                buf[used++] = 0xd9;
                buf[used++] = j->id_len;
            }
            memcpy(buf + used, job_id(j), j->id_len);
            used += j->id_len;
            n++;
        }
        s->cursor = (struct job *)j;
        size_t hs = n < 16 ? 1 : n < 65536 ? 3 : 5;
        uint8_t *a = buf + 5 - hs;
        if (hs == 1) {
            a[0] = (uint8_t)(0x90 | n);
        } else if (hs == 3) {
            a[0] = 0xdc;
            put_u16be(a + 1, (uint16_t)n);
        } else {
            a[0] = 0xdd;
            put_u32be(a + 1, (uint32_t)n);
        }
        struct ing_msg m;
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_SESSION_JOBS;
        m.u.session_jobs.last = j == NULL;
        m.u.session_jobs.jobs.p = (const char *)a;
        m.u.session_jobs.jobs.len = (uint32_t)(used - 5 + hs);
        be->ops.send(c->peer, &m);
        sent += used;
    } while (s->cursor != NULL && sent < budget);
    s->listing = s->cursor != NULL;
    return s->listing;
}

struct be_client *
be_session_attach(struct backend *be, struct be_client *c, const uint8_t id[ING_SESSION_ID_LEN])
{
    struct be_session *s = session_get(be, id);
    if (s == NULL)
        return session_make(be, c, id) == 0 ? c : NULL;
    struct be_client *sc = s->c;
    if (sc == c)
        return c;
    if (!s->detached) /* the caller detaches the other connection first */
        return NULL;
    void *peer = c->peer;
    be_client_gone(be, c); /* a fresh connection: no job (the caller checks) */
    detached_unlink(be, sc);
    sc->peer = peer;
    be->stats.sessions_resumed++;
    return sc;
}

bool
be_session_deliver(struct backend *be, struct be_client *c, size_t budget)
{
    struct be_session *s = c->sess;
    if (s == NULL || c->peer == NULL)
        return false;
    if (s->resuming) {
        if (s->acking ? session_send_kept(be, s, budget) : session_unkeep(be, s, true, budget))
            return true;
        s->resuming = false; /* the list follows */
        s->listing = true;
        s->cursor = c->jobs;
    }
    return s->listing && session_list(be, c, budget);
}

bool
be_session_resuming(const struct be_client *c)
{
    return c->sess != NULL && (c->sess->resuming || c->sess->listing);
}

bool
be_session_resume(struct backend *be, struct be_client *c, bool hold, size_t budget)
{
    struct be_session *s = c->sess;
    if (s == NULL || c->peer == NULL)
        return false;
    s->hold = hold;
    s->sent = s->acked = s->unacked_bytes = 0;
    s->next_send = s->acking ? s->kept : NULL; /* each kept one is sent (again) on it */
    s->resuming = !hold && s->kept != NULL; /* with hold, results stay kept: only the list */
    s->listing = !s->resuming;
    s->cursor = c->jobs;
    return s->resuming ? be_session_deliver(be, c, budget) : session_list(be, c, budget);
}

void
be_session_acks(struct be_client *c, bool on)
{
    if (c->sess != NULL)
        c->sess->acking = on;
}

int
be_session_ack(struct backend *be, struct be_client *c, uint64_t count)
{
    struct be_session *s = c->sess;
    if (s == NULL || !s->acking || c->peer == NULL)
        return -EPERM;
    if (count > s->sent)
        return -ERANGE;
    if (count <= s->acked)
        return 0;
    s->acked = count;
    while (s->kept != NULL && s->kept != s->next_send && s->kept->dno <= count) {
        struct kept *k = s->kept;
        s->kept = k->next;
        s->unacked_bytes -= k->len;
        if (be->jr != NULL)
            jr_kept(be, JREC_DELIVERED, s, k);
        kept_free(be, s, k);
    }
    if (s->kept == NULL)
        s->kept_tail = &s->kept;
    return 0;
}

/* kept_shed puts a short crash "Backend memory full" result for the same job (its id and
 * state kept) in the place of *pp, k, a result kept for detached session s, journaled as
 * delivered then the new one as kept (record 5, then 4). Returns the bytes freed (0: no
 * gain, or no memory; k stays). */
static uint64_t
kept_shed(struct backend *be, struct be_session *s, struct kept **pp, struct kept *k)
{
    struct ing_msg old;
    if (ing_msg_decode(k->frame, ING_HDR_LEN + (size_t)k->len, UINT32_MAX, &old) <= 0)
        return 0;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_DONE;
    struct ing_job_result *r = &m.u.result;
    r->job_id = old.u.result.job_id;
    r->result_kind = (struct ing_view){"crash", 5};
    r->result_text = (struct ing_view){SHED_TEXT, sizeof(SHED_TEXT) - 1};
    r->problems.p = r->tests.p = r->custom.p = (const char *)empty_map;
    r->problems.len = r->tests.len = r->custom.len = 1;
    r->state = old.u.result.state;
    r->stdout_.p = r->stderr_.p = "";
    size_t n = ing_msg_size(&m);
    if (n == 0 || n - ING_HDR_LEN >= k->len) {
        k->shed = true; /* as short as it gets */
        return 0;
    }
    struct kept *nk = pool_alloc(&be->jobs_pool, sizeof(*nk) + n);
    if (nk == NULL)
        return 0;
    *nk = *k;
    nk->len = (uint32_t)(n - ING_HDR_LEN);
    nk->shed = true;
    (void)ing_msg_encode(&m, nk->frame, n); /* views into k: before k goes */
    if (k->indexed) {
        idtab_remove(&be->ktab, kept_hash(k->seq), k);
        if (idtab_insert(&be->ktab, kept_hash(k->seq), nk) != 0) {
            (void)idtab_insert(&be->ktab, kept_hash(k->seq), k); /* its slot is free again */
            pool_free(&be->jobs_pool, nk, sizeof(*nk) + n);
            return 0;
        }
    }
    *pp = nk;
    if (s->kept_tail == &k->next)
        s->kept_tail = &nk->next;
    if (s->next_send == k)
        s->next_send = nk;
    if (be->jr != NULL) {
        jr_kept(be, JREC_DELIVERED, s, k);
        jr_kept(be, JREC_DONE, s, nk);
    }
    uint64_t freed = k->len - nk->len;
    be->kept_bytes -= freed;
    pool_free(&be->jobs_pool, k, sizeof(*k) + ING_HDR_LEN + k->len);
    return freed;
}

uint64_t
be_sessions_shed(struct backend *be, uint64_t need, size_t max)
{
    struct be_client *c = be->detached; /* the newest detached first: find the oldest */
    while (c != NULL && c->next != NULL)
        c = c->next;
    uint64_t freed = 0, n = 0;
    for (; c != NULL && freed < need && n < max; c = c->prev) {
        struct be_session *s = c->sess;
        if (s->shed_all)
            continue;
        struct kept **pp = &s->kept;
        for (; *pp != NULL && freed < need && n < max; pp = &(*pp)->next) {
            struct kept *k = *pp;
            n++;
            uint64_t f = k->shed ? 0 : kept_shed(be, s, pp, k);
            freed += f;
            be->stats.kept_shed += f > 0;
        }
        s->shed_all = *pp == NULL; /* (a result with no gain counts as shed) */
    }
    if (freed > 0)
        log_msg(LOG_WARN, "backend memory full: kept results of the oldest detached sessions "
                "replaced by crash \"" SHED_TEXT "\" (%llu bytes freed, %llu replaced in all)",
                (unsigned long long)freed, (unsigned long long)be->stats.kept_shed);
    return freed;
}

/* session_free forgets session s (its client stays, without session). */
static void
session_free(struct backend *be, struct be_session *s)
{
    session_unkeep(be, s, false, 0);
    idtab_remove(&be->stab, session_hash(s->id), s);
    s->c->sess = NULL;
    be->n_sessions--;
    free(s);
}

void
be_session_tick(struct backend *be)
{
    struct be_client *c = be->detached;
    while (c != NULL) {
        struct be_client *next = c->next;
        if (be->now_ms - c->sess->detached_ms >= be->cfg.session_ttl_ms) {
            log_msg(LOG_INFO, "session detached for %llu ms: %llu kept results dropped, its "
                    "jobs handled as a client's that left",
                    (unsigned long long)(be->now_ms - c->sess->detached_ms),
                    (unsigned long long)c->sess->n_kept);
            detached_unlink(be, c);
            session_free(be, c->sess);
            be_client_gone(be, c);
        }
        c = next;
    }
}

/* session_restore returns the session id of the journal, made detached if new, or NULL. */
static struct be_client *
session_restore(struct backend *be, const uint8_t *id)
{
    struct be_session *s = session_get(be, id);
    if (s != NULL)
        return s->c;
    struct be_client *c = be_client_new(be, NULL);
    if (c == NULL)
        return NULL;
    if (session_make(be, c, id) != 0) {
        slab_free(&be->client_slab, c);
        return NULL;
    }
    session_detach(be, c);
    return c;
}

/* kept_find returns s's kept result of job seq, or NULL; with where, the link that points
 * to it (results are delivered from the head: the head first, then a walk). */
static struct kept *
kept_find(const struct backend *be, const struct be_session *s, uint64_t seq,
          struct kept ***where)
{
    struct kept *k = idtab_find(&be->ktab, kept_hash(seq), &seq, sizeof(seq));
    if (k == NULL || k->s != s)
        return NULL;
    if (where != NULL) {
        struct kept **pp = (struct kept **)&s->kept;
        while (*pp != k)
            pp = &(*pp)->next;
        *where = pp;
    }
    return k;
}

static int
session_replay(struct backend *be, uint8_t type, const uint8_t *p, uint32_t len)
{
    if (len < 8 + ING_SESSION_ID_LEN)
        return 0;
    uint64_t seq = get_u64be(p);
    const uint8_t *id = p + 8;
    const uint8_t *f = p + 8 + ING_SESSION_ID_LEN;
    uint32_t flen = len - 8 - ING_SESSION_ID_LEN;
    if (type == JREC_DELIVERED) {
        struct be_session *s = session_get(be, id);
        struct kept **pp;
        struct kept *k = s != NULL ? kept_find(be, s, seq, &pp) : NULL;
        if (k != NULL) {
            *pp = k->next;
            if (s->kept_tail == &k->next)
                s->kept_tail = pp;
            kept_free(be, s, k);
        }
        return 0;
    }
    struct ing_msg m;
    ssize_t n = ing_msg_decode(f, flen, UINT32_MAX, &m);
    uint8_t want = type == JREC_DONE ? ING_BACKEND_JOB_DONE : ING_CLIENT_NEW_JOB;
    if (n != (ssize_t)flen || m.type != want || seq == 0) {
        log_msg(LOG_WARN, "journal: a session record (type %u) that does not decode: skipped",
                type);
        return 0;
    }
    if (type == JREC_DONE) { /* one kept result per arrival order (kept_find) */
        const struct kept *o = idtab_find(&be->ktab, kept_hash(seq), &seq, sizeof(seq));
        if (o != NULL && memcmp(o->s->id, id, ING_SESSION_ID_LEN) == 0)
            return 0; /* a compaction's copy */
        if (o != NULL) { /* a damaged journal: another session's result has it */
            log_msg(LOG_WARN, "journal: a kept result of arrival order %llu for two sessions: "
                              "the second skipped", (unsigned long long)seq);
            return 0;
        }
    }
    struct be_client *c = session_restore(be, id);
    if (c == NULL) {
        be->jr_skipped++;
        return 0;
    }
    if (type == JREC_DONE) {
        /* Its job is over: if it is restored, the end record written with this one was lost
         * (a torn write); it would run again and give a second result. */
        struct ing_view rid = m.u.result.job_id;
        uint64_t ridh = id_hash(rid.p, rid.len);
        struct job *j = rid.len <= MAX_ID_LEN ? jtab_find_h(be, ridh, rid.p, rid.len) : NULL;
        if (j != NULL && j->seq == seq)
            replay_forget(be, j, ridh);
        struct kept *k = kept_new(be, c->sess, seq, flen - ING_HDR_LEN);
        if (k != NULL)
            memcpy(k->frame, f, flen);
        return 0;
    }
    struct ing_view jid = m.u.new_job.job.job_id;
    uint64_t idh = id_hash(jid.p, jid.len);
    struct job *j = jtab_find_h(be, idh, jid.p, jid.len);
    if (j != NULL && j->seq == seq)
        return 0; /* the copy a compaction cut short left */
    const char *why = job_new(be, c, f + ING_HDR_LEN, flen - ING_HDR_LEN, &m.u.new_job, idh, seq);
    if (why != NULL && why != held_already && be->jr_skipped++ == 0)
        log_msg(LOG_WARN, "journal: job %.*s not restored: %s (later ones counted)",
                (int)(jid.len > 255 ? 255 : jid.len), jid.p, why);
    if (why == NULL)
        replay_pend_apply(be, seq, idh, jid);
    return 0;
}

static bool
session_live(const struct backend *be, uint8_t type, const uint8_t *p, uint32_t len)
{
    if (len < 8 + ING_SESSION_ID_LEN + ING_HDR_LEN)
        return false;
    uint64_t seq = get_u64be(p);
    const uint8_t *f = p + 8 + ING_SESSION_ID_LEN;
    if (type == JREC_DONE) { /* not the one a shed result replaced (another length) */
        const struct be_session *s = session_get(be, p + 8);
        const struct kept *k = s != NULL ? kept_find(be, s, seq, NULL) : NULL;
        return k != NULL && (uint64_t)k->len + ING_HDR_LEN == len - 8 - ING_SESSION_ID_LEN;
    }
    struct ing_view id;
    uint8_t ft;
    if (ing_frame_job_id(f, len - 8 - ING_SESSION_ID_LEN, &ft, &id) == 0 || id.p == NULL)
        return false;
    const struct job *j = jtab_find_h((struct backend *)be, id_hash(id.p, id.len), id.p, id.len);
    return j != NULL && j->seq == seq;
}

/* sessions_fini frees every session and the clients of the detached ones. */
static void
sessions_fini(struct backend *be)
{
    while (be->detached != NULL) {
        struct be_client *c = be->detached;
        detached_unlink(be, c);
        session_free(be, c->sess);
        slab_free(&be->client_slab, c);
    }
    idtab_settle(&be->stab);
    for (size_t i = 0; i < idtab_slots(&be->stab); i++) {
        struct be_session *s = idtab_at(&be->stab, i);
        if (s != NULL) {
            session_unkeep(be, s, false, 0);
            s->c->sess = NULL;
            free(s);
        }
    }
    idtab_fini(&be->stab);
    idtab_fini(&be->ktab);
}

/* ---------------------------------------------------------------------------------------- */
/* Invariants                                                                                */

/* sessions_check verifies the sessions' bookkeeping: every detached session is listed and
 * has no peer, the kept results add up. Returns 0 or -EPROTO. */
static int
sessions_check(const struct backend *be)
{
    uint64_t detached = 0, n_kept = 0, kept_bytes = 0;
    for (const struct be_client *c = be->detached; c != NULL; c = c->next) {
        if (c->sess == NULL || !c->sess->detached || c->peer != NULL || c->registered)
            return -EPROTO;
        detached++;
    }
    if (be->stab.old != NULL || be->n_kept < be->ktab.n)
        return be->n_kept < be->ktab.n ? -EPROTO : 0; /* growing: walked once it is done */
    uint64_t indexed = 0;
    uint64_t sessions = 0, listed_detached = 0;
    for (size_t i = 0; i < idtab_slots(&be->stab); i++) {
        const struct be_session *s = idtab_at(&be->stab, i);
        if (s == NULL)
            continue;
        sessions++;
        listed_detached += s->detached;
        uint64_t n = 0, dno = 0;
        bool sent = s->acking && s->c->peer != NULL;
        for (const struct kept *k = s->kept; k != NULL; k = k->next) {
            sent &= k != s->next_send;
            if (k->s != s || (sent && (k->dno <= dno || k->dno > s->sent)))
                return -EPROTO;
            dno = sent ? k->dno : dno;
            indexed += k->indexed;
            n++;
            kept_bytes += k->len;
        }
        if (s->c->sess != s || n != s->n_kept)
            return -EPROTO;
        n_kept += n;
    }
    if (sessions != be->n_sessions || listed_detached != detached || n_kept != be->n_kept ||
        kept_bytes != be->kept_bytes || indexed != be->ktab.n)
        return -EPROTO;
    return 0;
}

/* envs_check verifies the environment list's bookkeeping. Returns 0 or -EPROTO. */
static int
envs_check(const struct backend *be)
{
    uint64_t provided = 0, bytes = 0;
    uint32_t types = 0;
    for (size_t i = 0; i < etab_nchains(be); i++)
        for (const struct env *e = etab_chain(be, i); e != NULL; e = e->hnext) {
            if (e->name_len == 0 && e->nann > 0) {
                types++;
                bytes += LIST_TYPE_COST(e);
                if (!e->listed || e->n_providers > 0 || e->n > 0)
                    return -EPROTO;
            } else if (e->name_len > 0 && e->n_providers > 0) {
                provided++;
                bytes += mp_str_size(e->name_len);
                if (!e->listed || e->tr == NULL || e->tr->nann == 0)
                    return -EPROTO;
            }
        }
    if (provided != be->n_provided || types != be->n_types_ann || bytes != be->list_bytes)
        return -EPROTO;
    for (const struct env *t = be->types_head; t != NULL; t = t->lnext) {
        if (!t->listed || t->name_len != 0 || (t->lnext == NULL && be->types_tail != t))
            return -EPROTO;
        for (const struct env *e = t->lhead; e != NULL; e = e->lnext)
            if (!e->listed || e->tr != t || (e->lnext == NULL && t->ltail != e))
                return -EPROTO;
    }
    if (be->envs_msg != NULL && !be->envs_changed && !be->envs_held &&
        be->envs_msg_len > LIST_BASE + be->list_bytes) /* (a registration touches it at its end) */
        return -EPROTO;
    return 0;
}

static uint64_t job_position(struct backend *be, const struct job *j);

/* job_before tells whether waiting job a goes before waiting job b of the same environment:
 * (priority, arrival), or with fair share (priority, tag, arrival). */
static bool
job_before(const struct backend *be, const struct job *a, const struct job *b)
{
    return be->fair.mode == FAIR_NONE ? job_less(a, b) : fair_less(a, b);
}

/* env_next is the waiting job of e after x in the lists be_check walks (the FIFO; with fair
 * share the keys' lists one after the other); x NULL: the first. */
static const struct job *
env_next(const struct backend *be, const struct env *e, const struct job *x)
{
    if (be->fair.mode == FAIR_NONE)
        return x == NULL ? e->fifo_head : x->next;
    if (x != NULL && x->next != NULL)
        return x->next;
    for (const struct fair_key *k = x != NULL ? x->fk->snext : e->keys; k != NULL; k = k->snext)
        if (k->qhead != NULL)
            return k->qhead;
    return NULL;
}

/* env_check_jobs checks e's waiting jobs: their records, lists, heap of keys and positions.
 * Returns 0 or -EPROTO. */
static int
env_check_jobs(const struct backend *be, const struct env *e)
{
    bool fair = be->fair.mode != FAIR_NONE;
    uint32_t count = 0, other = 0;
    for (const struct job *x = env_next(be, e, NULL); x != NULL; x = env_next(be, e, x)) {
        count++;
        if (x->fk == NULL || x->fk->scope != e || x->fk->nwait == 0 ||
            x->fk->rk.n != x->fk->nwait || x->ord < x->fk->rk.base || x->ord >= x->fk->rk.next ||
            x->status != JOB_WAITING)
            return -EPROTO;
        other += job_prio(x) != e->p0;
        if (!fair && x->next != NULL &&
            ((!e->heaped && x->next->seq <= x->seq) || x->next->t.entered <= x->t.entered))
            return -EPROTO;
        if (fair && x->next != NULL && (x->next->ord <= x->ord || !job_before(be, x, x->next)))
            return -EPROTO;
    }
    if (count != e->n || other != e->n_other || (other > 0 && !e->heaped && !fair) ||
        (e->heaped && (e->n == 0 || fair)) || (!fair && e->kn > 0))
        return -EPROTO;
    /* Fair share: every key in the heap has its jobs in order, all counted. */
    uint64_t listed = 0;
    for (uint32_t x = 0; x < e->kn; x++) {
        const struct kent *h = &e->kheap[x];
        const struct fair_key *k = h->k;
        if (k->hidx != x + 1 || k->qhead == NULL || k->qvt != job_vt(k->qhead) ||
            k->qseq != k->qhead->seq || k->qord != k->qhead->ord || h->prio != k->prio ||
            h->vt != k->qvt || h->seq != k->qseq ||
            (x > 0 && key_less(h, &e->kheap[(x - 1) / 2])))
            return -EPROTO;
        uint32_t nk = 0;
        for (const struct job *y = k->qhead; y != NULL; y = y->next, nk++)
            if (y->fk != k || (y->next == NULL && k->qtail != y) ||
                (y->next != NULL && y->next->prev != y))
                return -EPROTO;
        if (nk != k->nwait)
            return -EPROTO;
        listed += nk;
    }
    if (fair && listed != e->n)
        return -EPROTO;
    return 0;
}

static bool agent_provides(const struct be_agent *a, const struct env *e);

/* share_agent tells whether some agent provides both e and o. */
static bool
share_agent(const struct backend *be, const struct env *e, const struct env *o)
{
    for (const struct be_agent *a = be->agents; a != NULL; a = a->next)
        if (agent_provides(a, e) && agent_provides(a, o))
            return true;
    return false;
}

/* positions_check compares the position of every waiting job of e (be_job_info) with the
 * order itself, counted job by job (be_check, small queues): the jobs of e before it, and
 * those of the environments sharing an agent with e of a better (priority, arrival). */
static int
positions_check(const struct backend *be, const struct env *e)
{
    for (const struct job *x = env_next(be, e, NULL); x != NULL; x = env_next(be, e, x)) {
        uint64_t before = 0;
        for (size_t i = 0; i <= be->emask; i++)
            for (const struct env *o = be->etab[i]; o != NULL; o = o->hnext) {
                bool own = o == e;
                if (o->n == 0 || (!own && !share_agent(be, e, o)))
                    continue;
                for (const struct job *y = env_next(be, o, NULL); y != NULL;
                     y = env_next(be, o, y))
                    before += own ? job_before(be, y, x)
                                  : (job_prio(y) < job_prio(x) ||
                                     (job_prio(y) == job_prio(x) && y->seq < x->seq));
            }
        /* job_position only marks environments: be_check stays read-only otherwise. */
        if (job_position((struct backend *)(uintptr_t)be, x) != before)
            return -EPROTO;
    }
    return 0;
}

int
be_check(const struct backend *be)
{
    uint64_t waiting = 0, running = 0;
    if (envs_check(be) != 0 || sessions_check(be) != 0)
        return -EPROTO;
    for (size_t i = 0; i < etab_nchains(be); i++)
        for (const struct env *e = etab_chain(be, i); e != NULL; e = e->hnext) {
            waiting += e->n;
            if (env_check_jobs(be, e) != 0 || (be->n_waiting <= 64 && positions_check(be, e) != 0))
                return -EPROTO;
            if (e->n > 0 && (job_prio(env_best(e)) != e->hprio || env_best(e)->seq != e->hseq))
                return -EPROTO;
            if (e->heaped)
                for (uint32_t x = 1; x < e->n; x++)
                    if (job_less(e->heap[x], e->heap[(x - 1) / 2]) || e->heap[x]->u.heap_idx != x)
                        return -EPROTO;
            for (uint32_t x = 1; x < e->an; x++)
                if (agent_key(e->aheap[x].a) < agent_key(e->aheap[(x - 1) / 2].a))
                    return -EPROTO;
            if (e->refs < e->n_providers + e->n)
                return -EPROTO;
        }
    for (const struct be_agent *a = be->agents; a != NULL; a = a->next) {
        if (a->nfree + a->nrun != a->slots)
            return -EPROTO;
        running += a->nrun;
        /* a->dl_ms is no later than any of its jobs' deadlines. */
        for (const struct job *j = a->run_head; j != NULL; j = j->next) {
            int32_t left = (int32_t)(j->t.run.dl - (uint32_t)be->now_ms);
            if (a->dl_ms > be->now_ms + (uint64_t)(left > 0 ? left : 0))
                return -EPROTO;
        }
        /* After every handler no free slot has a job it could take (a held agent, whose
         * connection closed, takes none). */
        if (!be->draining && a->block == 0 && a->nfree > 0 && best_job(be, a) != NULL)
            return -EPROTO;
    }
    uint64_t held = 0;
    for (const struct be_agent *g = be->ghosts; g != NULL; g = g->next) {
        if (!g->ghost || g->registered || g->nrun == 0)
            return -EPROTO;
        held += g->nrun;
    }
    running += held;
    if (waiting != be->n_waiting || running != be->n_running || held != be->n_held)
        return -EPROTO;
    if (be->jtab.n != waiting + running)
        return -EPROTO;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Where is my job (proto.md 7.4)                                                             */

/* key_before counts the waiting jobs of key record k below (tag vt, arrival sq): from the run
 * of tags at k->brk on, the first ordinal not below is computed (one read, for a tie);
 * otherwise by binary search. */
static uint32_t
key_before(const struct fair_key *k, uint64_t vt, uint64_t sq)
{
    const struct rank *r = &k->rk;
    if (r->n == 0 || !k->brk_ok || vt < k->brk_vt || (vt == k->brk_vt && sq <= k->brk_sq))
        return rank_before_key(r, vt, sq);
    /* Every live ordinal below brk is below (vt, sq) too. */
    uint64_t d = vt - k->brk_vt, m = d / k->inc + (d % k->inc != 0);
    if (m >= r->next - k->brk)
        return r->n;
    uint64_t o = k->brk + m; /* the first tag not below vt */
    if (d % k->inc == 0 && r->sq[o & (r->cap - 1)] < sq)
        o++; /* a tie, arrived before (a dead ordinal's arrival does not matter) */
    return rank_before(r, o);
}

/* Counting a position visits every record of an environment, each with its own arrays: the
 * records are taken INFO_BATCH at a time, their arrays' lines requested first and read next,
 * so that the cache misses of a batch overlap instead of following one another. */
#define INFO_BATCH 16

/* own_before counts the waiting jobs of j's environment that its order puts before waiting
 * job j: those of better priorities, then those of its priority before it (by ordinal; with
 * fair share, by (tag, arrival) in each key's record). O(records x log n). */
static uint64_t
own_before(const struct backend *be, const struct job *j)
{
    uint64_t n = 0;
    int64_t prio = job_prio(j);
    if (be->fair.mode == FAIR_NONE) {
        for (const struct fair_key *k = job_env(j)->keys; k != NULL; k = k->snext)
            if (k->prio < prio)
                n += k->nwait;
            else if (k->prio == prio)
                n += rank_before(&k->rk, j->ord); /* the one record of its priority */
        return n;
    }
    uint64_t vt = job_vt(j);
    const struct fair_key *batch[INFO_BATCH];
    const struct fair_key *k = job_env(j)->keys;
    while (k != NULL) {
        uint32_t nb = 0;
        for (; k != NULL && nb < INFO_BATCH; k = k->snext)
            if (k->prio < prio) {
                n += k->nwait;
            } else if (k->prio == prio && k->nwait > 0) {
                /* The ordinal key_before most likely reads: its run's, else the middle. */
                uint64_t o = k->rk.base + (k->rk.next - k->rk.base) / 2;
                if (k->brk_ok && vt > k->brk_vt) {
                    uint64_t m = (vt - k->brk_vt) / k->inc;
                    o = m < k->rk.next - k->brk ? k->brk + m : k->rk.next - 1;
                }
                rank_prefetch_before(&k->rk, o);
                batch[nb++] = k;
            }
        for (uint32_t i = 0; i < nb; i++)
            n += key_before(batch[i], vt, j->seq);
    }
    return n;
}

/* other_before counts the waiting jobs of environment e that go before a job of priority
 * prio and arrival seq of another environment: the scheduler compares environments' first
 * jobs on (priority, arrival). With fair share a record's first job (qord, qseq) and last
 * arrival bound the search, which starts where interpolation puts it (jobs of many keys
 * come in mixed: a key's arrivals spread evenly), all the batch's first reads requested
 * together. O(records x log n). */
static uint64_t
other_before(const struct backend *be, const struct env *e, int64_t prio, uint64_t seq)
{
    uint64_t n = 0;
    if (e->n == 0)
        return 0;
    if (be->fair.mode == FAIR_NONE) {
        for (const struct fair_key *k = e->keys; k != NULL; k = k->snext)
            if (k->prio < prio)
                n += k->nwait;
            else if (k->prio == prio && k->nwait > 0)
                n += rank_before_seq(&k->rk, seq);
        return n;
    }
    const struct fair_key *batch[INFO_BATCH];
    uint64_t guess[INFO_BATCH];
    const struct fair_key *k = e->keys;
    while (k != NULL) {
        uint32_t nb = 0;
        for (; k != NULL && nb < INFO_BATCH; k = k->snext) {
            if (k->prio < prio) {
                n += k->nwait;
            } else if (k->prio == prio && k->nwait > 0 && seq > k->qseq) {
                if (seq > k->rk.top_sq) {
                    n += k->nwait; /* all arrived before */
                    continue;
                }
                guess[nb] = rank_seq_guess(&k->rk, k->qord, k->qseq, seq);
                rank_prefetch_before(&k->rk, guess[nb]);
                batch[nb++] = k;
            }
        }
        for (uint32_t i = 0; i < nb; i++)
            n += rank_before_seq_from(&batch[i]->rk, batch[i]->qord, batch[i]->qseq, guess[i],
                                      seq);
    }
    return n;
}

static bool
agent_provides(const struct be_agent *a, const struct env *e)
{
    for (uint32_t i = 0; i < a->nenvs; i++)
        if (a->envs[i].env == e)
            return true;
    return false;
}

/* job_position is waiting job j's position (proto.md 7.4): the waiting jobs the scheduler
 * ranks before it among those its agents could take, i.e. in its environment (own_before)
 * and in every other environment that some agent providing its environment provides too
 * (other_before, each counted once: the environments are marked). Cost: O(pairs (agent,
 * environment) announced + (environments sharing an agent) x records x log n). */
static uint64_t
job_position(struct backend *be, const struct job *j)
{
    uint64_t n = own_before(be, j);
    struct env *e = job_env(j);
    if (e->n_providers == 0)
        return n;
    uint64_t mark = ++be->mark_seq;
    e->mark = mark;
    int64_t prio = job_prio(j);
    for (const struct be_agent *a = be->agents; a != NULL; a = a->next) {
        if (a->nenvs < 2 || !agent_provides(a, e))
            continue;
        for (uint32_t i = 0; i < a->nenvs; i++) {
            struct env *o = a->envs[i].env;
            if (o->mark == mark)
                continue;
            o->mark = mark;
            n += other_before(be, o, prio, j->seq);
        }
    }
    return n;
}

int
be_job_info(struct backend *be, struct ing_view id, struct be_job_info *out)
{
    memset(out, 0, sizeof(*out));
    out->eta_ms = UINT64_MAX;
    out->run_avg_ms = UINT64_MAX;
    if (id.len == 0 || id.len > MAX_ID_LEN)
        return -ENOENT;
    struct job *j = jtab_find_h(be, id_hash(id.p, id.len), id.p, id.len);
    if (j == NULL || owner_gone(j))
        return -ENOENT;
    const struct env *e = job_env(j);
    out->env_type = e->type;
    out->env_name = e->name;
    out->slots = e->n_slots;
    if (e->has_avg)
        out->run_avg_ms = e->run_avg_ms;
    if (j->status != JOB_WAITING) {
        out->state = j->status == JOB_STARTED ? BE_JOB_RUNNING : BE_JOB_DISPATCHED;
        out->age_ms = (uint32_t)((uint32_t)be->now_ms - j->u.started_ms);
        return 0;
    }
    out->state = BE_JOB_WAITING;
    out->age_ms = job_waited_ms(be, j);
    out->position = job_position(be, j);
    /* ETA: the jobs before it and itself go out one slot turn at a time: with S slots and a
     * mean run time R, it is dispatched after floor(position / S) + 1 turns: R each. */
    if (e->has_avg && e->n_slots > 0) {
        uint64_t turns = out->position / e->n_slots + 1;
        out->eta_ms = turns > UINT64_MAX / (e->run_avg_ms + 1) ? UINT64_MAX - 1
                                                               : turns * e->run_avg_ms;
    }
    return 0;
}

/* be_job_info_mp writes the BackendJobInfo map for job id (proto.md 5.9) into w. */
void
be_job_info_mp(struct backend *be, struct ing_view id, struct ing_mp_writer *w)
{
    static const char *const states[] = {"unknown", "waiting", "dispatched", "running"};
    struct be_job_info in;
    if (be_job_info(be, id, &in) != 0) {
        ing_mp_put_map(w, 1);
        ing_mp_put_cstr(w, "state");
        ing_mp_put_cstr(w, states[0]);
        return;
    }
    bool waiting = in.state == BE_JOB_WAITING;
    ing_mp_put_map(w, 5 + waiting + (waiting && in.eta_ms != UINT64_MAX) +
                          (in.run_avg_ms != UINT64_MAX));
    ing_mp_put_cstr(w, "state");
    ing_mp_put_cstr(w, states[in.state]);
    ing_mp_put_cstr(w, "environment_type");
    ing_mp_put_cstr(w, in.env_type);
    ing_mp_put_cstr(w, "environment");
    ing_mp_put_cstr(w, in.env_name);
    ing_mp_put_cstr(w, "slots");
    ing_mp_put_uint(w, in.slots);
    if (waiting) {
        ing_mp_put_cstr(w, "position");
        ing_mp_put_uint(w, in.position);
        ing_mp_put_cstr(w, "waited_ms");
        ing_mp_put_uint(w, in.age_ms);
        if (in.eta_ms != UINT64_MAX) {
            ing_mp_put_cstr(w, "eta_ms");
            ing_mp_put_uint(w, in.eta_ms);
        }
    } else {
        ing_mp_put_cstr(w, "running_ms");
        ing_mp_put_uint(w, in.age_ms);
    }
    if (in.run_avg_ms != UINT64_MAX) {
        ing_mp_put_cstr(w, "run_avg_ms");
        ing_mp_put_uint(w, in.run_avg_ms);
    }
}

void
be_client_get_job_info(struct backend *be, struct be_client *c, struct ing_view id)
{
    uint8_t buf[1024]; /* the map: two names of at most 255 bytes, a few numbers */
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    be_job_info_mp(be, id, &w);
    if (w.err != 0) { /* cannot happen: the map is bounded */
        log_msg(LOG_ERR, "BackendJobInfo does not fit its buffer");
        return;
    }
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_INFO;
    if (id.len > MAX_ID_LEN) /* no such job: not echoed back whole */
        id.len = 0;
    m.u.job_info.job_id = id;
    m.u.job_info.info = (struct ing_view){(const char *)buf, (uint32_t)w.len};
    be->ops.send(c->peer, &m);
}

/* ---------------------------------------------------------------------------------------- */
/* Unusable reports                                                                          */

void
be_agent_job_unusable(struct backend *be, struct be_agent *a, struct ing_view id, const char *why)
{
    struct job *j = agent_job(be, a, id, "AgentJobDone", id_hash(id.p, id.len));
    if (j == NULL)
        return;
    char text[300];
    snprintf(text, sizeof(text), "The grading agent sent an unusable result (%s)", why);
    log_msg(LOG_WARN, "job %.*s on agent %s ended: %s", (int)j->id_len, job_id(j), a->name, text);
    run_remove(be, j);
    send_job_result(be, j, "crash", text);
    be->stats.jobs_crashed++;
    job_free(be, j);
    slot_add(be, a);
    sched_agent(be, a);
}
