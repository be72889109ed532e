/* SPDX-License-Identifier: MIT */
/* test_chaos.c: the backend under random faults for a bounded time (issue "Robustness and
 * security", part 2), against $ING_BUILD/inginious-backend.
 *
 * One process, one poll loop drives 20 agents and 5 clients (tpeer native peers). At random,
 * from a fixed seed (ING_CHAOS_SEED overrides it; printed on failure): clients submit jobs,
 * kill jobs (theirs or others'), ask for the queue, ping, disconnect (FIN or reset) and come
 * back; agents run their jobs (started, then done after a random time), die mid-job (reset),
 * close, say hello again on the same connection, stop answering pings (--ping-interval 50ms
 * --ping-max 3: dropped fast), ignore kills (--kill-timeout 300ms), answer kills late or
 * never, and forge results for jobs of other agents. Each agent connection has its own
 * friendly name, "a<agent>.<connection>". Before the load, a warm-up runs a job of every
 * provided environment from every client, without faults, and the backend's idle RSS is
 * read. The load then lasts ING_CHAOS_SECONDS seconds (10 by default), paused for a
 * busy-slot checkpoint after 1 to 2 s and then every 1.5 to 3 s (never in its last second),
 * and goes on past its end (5 s at most) until some agent runs a job; then the faults stop,
 * a last checkpoint runs while the agents still hold jobs, and everything settles.
 *
 * Invariants, checked as the messages arrive and at the end:
 *  - every job a connected client submitted gets exactly one BackendJobDone, on that
 *    connection, with a kind and text the situation allows (the agent's result, killed,
 *    "Agent restarted" only for a started job, the orphan crash; never a forged result) and
 *    the job's @state kept in synthetic results; jobs pending when their client left are
 *    excluded; no job stays pending for ever;
 *  - a job is sent to an agent only for an environment the agent announced, and never while
 *    another live agent holds it: it may be dispatched again only after its first agent was
 *    removed (an agent the backend dropped must see its connection close soon after);
 *  - an agent never holds more jobs than its slots, except that each job whose kill the
 *    agent ignored may be replaced (the kill timeout frees its slot);
 *  - BackendGetQueue lists exactly the requester's pending jobs as its own, each job once;
 *  - at each checkpoint, the backend's count of busy slots equals the agents' own, exactly:
 *    with the load paused and no agent report in flight, the running jobs a BackendGetQueue
 *    lists on each live agent connection are the jobs that agent held when the backend built
 *    the snapshot, counted from what the agent holds once everything the backend sent it
 *    before the snapshot has arrived, less the jobs dispatched after the snapshot and the
 *    killed jobs the backend gave up (each told from the snapshot itself); and no agent runs
 *    more jobs than its slots then (see "The busy-slot checkpoint" below for why this is
 *    exact); the last checkpoint must compare at least one running job;
 *  - after everything settles the queue is empty, the backend still answers, exits 0 on
 *    SIGTERM, and its RSS is at most its idle RSS plus RSS_SLACK_KIB (what does not grow with the
 *    jobs: code first run under load, connections opened again, allocator fragmentation) plus
 *    RSS_JOB_BYTES for each job it may have held at once (max_jobs: the pool keeps its pages,
 *    tables and snapshot buffers keep their size). Not checked under ASan (its quarantine
 *    holds freed memory) nor under a wrapper (ING_WRAPPER: the RSS is the wrapper's).
 *
 * Every timing is stretched by ING_SLOW, and the load follows (fewer events per second).
 * Knobs: ING_CHAOS_SEED, ING_CHAOS_SECONDS (hours work: the run keeps no per-job history but
 * a bit per job), ING_CHAOS_STATS=1 prints what the run exercised, ING_CHAOS_KEEP_LOG=PATH
 * keeps the whole backend log of a failed run there.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inginious/proto.h"
#include "support/chaos_util.h"
#include "support/tpeer.h"

#define N_AGENTS 20
#define N_CLIENTS 5
#define N_ENVS 4         /* docker/e0 .. docker/e3, each announced by some agents */
#define ENV_GHOST N_ENVS /* docker/ghost: never announced; ends at the orphan timeout */
#define RING 16384       /* pending jobs are kept by job number modulo RING */
#define MAX_ACTIONS 8192 /* agents' scheduled reports */
#define MAX_SUSPECTS 512 /* dispatches waiting for the proof that an agent was dropped */
#define MAX_SILENT 3     /* agents not answering pings at once */
#define TRACE 256        /* last events, printed on failure */
#define DEFAULT_SEED 20240611ull

/* Backend timings (milliseconds, stretched by ING_SLOW). */
#define PING_MS 50
#define PING_MAX "3"
#define KILL_MS 300
#define ORPHAN_MS 1000

/* The backend's RSS after settling may exceed its idle value by RSS_SLACK_KIB (what does not
 * scale with jobs: code first run under load, connections opened again, allocator
 * fragmentation) plus RSS_JOB_BYTES for each job it may have held at once (max_jobs): its job
 * pool keeps its pages, its tables and snapshot buffers keep their size; a job takes about 400
 * bytes of them (its 104-byte record and ~100-byte body in the pool, hash and heap slots, a
 * snapshot entry). Measured (glibc, -O2): 100 to 400 KiB over idle after 10 s, 476 KiB after
 * 15 minutes, the heap's size unchanged and its resident part flat after about 10 minutes. */
#define RSS_SLACK_KIB 1024
#define RSS_JOB_BYTES 1024

/* A job a connected client is waiting for. */
struct jrec {
    uint32_t num; /* job number, id "j<num>"; 0: free */
    uint8_t owner;
    uint8_t env;
    uint8_t starts;     /* BackendJobStarted received */
    bool agent_started; /* an agent reported AgentJobStarted for it */
    uint32_t owner_gen;
    uint64_t t_submit;
};

/* A job an agent holds (as far as the agent knows). */
struct hold {
    uint32_t num;
    uint32_t tag; /* this dispatch (a job may come back to the same agent) */
    uint8_t env;
    bool killed;   /* the agent received BackendKillJob */
    bool released; /* the backend freed its slot (kill timeout observed or inferred) */
};

struct cagent {
    struct tp_peer *p; /* NULL while down */
    uint32_t gen;      /* connection number */
    char name[24];     /* friendly name of this connection: "a<index>.<gen>", unique */
    uint32_t slots;
    unsigned envs;       /* bit k: docker/eK */
    bool silent;         /* stopped answering pings: the backend must drop it */
    bool resync;         /* hello sent again; what arrives before the Pong is stale */
    uint64_t restart_at; /* while down */
    struct hold *holds;
    size_t nholds, cap;
    unsigned suspects;
    unsigned pings_out; /* Pings the test sent on this connection, not answered yet */
    uint32_t ck_gen;    /* the connection a checkpoint compares (gen), 0: none */
    uint32_t fence_tag; /* the last dispatch tag when the checkpoint's fence Pong arrived */
};

struct cclient {
    struct tp_peer *p;
    uint32_t gen;
    char name[16];
    uint64_t reconnect_at;
    bool queue_out;      /* a ClientGetQueue is unanswered */
    uint32_t queue_mark; /* last job number submitted when it was sent */
    unsigned pings_out;
    uint32_t last_running, last_waiting;
    bool queue_seen;
};

enum act_kind {
    ACT_START,  /* AgentJobStarted */
    ACT_DONE,   /* AgentJobDone with a result */
    ACT_KILLED, /* AgentJobDone killed, the answer to a kill */
};

struct action {
    uint64_t due;
    uint32_t tag; /* the hold it is about */
    uint32_t num;
    uint8_t agent;
    uint8_t kind;
};

/* A dispatch that is correct only if one of two agents is being dropped by the backend: a
 * job sent to agent[1] while agent[0] holds it (the dropped agent's last dispatch may be
 * read after the new one), or a job sent to agent[0] after its final result (agent[1] < 0).
 * It must be resolved by one of them closing before the deadline. */
struct suspect {
    uint64_t deadline;
    uint32_t gen[2];
    uint32_t num;
    int agent[2];
    char what[96];
};

struct stats {
    uint64_t submitted, done, kills, agent_resets, agent_closes, agent_drops, rehellos;
    uint64_t client_drops, queue_checks, forged, stray, zombies, unexpected_drops;
    uint64_t busy_checks, busy_agents, busy_running, busy_after, busy_timed_out;
    uint64_t final_running; /* running jobs the checkpoint after the fault phase compared */
};

/* The busy-slot checkpoint (see ck_advance): its phases. */
enum ck_phase {
    CK_OFF,      /* not running: the load goes on */
    CK_QUIET,    /* paused; waiting for no silent, resyncing or suspect agent */
    CK_BARRIER,  /* Ping sent on every agent and client: waiting for the Pongs */
    CK_SNAPSHOT, /* ClientGetQueue sent: waiting for the answer */
    CK_FENCE,    /* answer taken; Ping sent on every agent: waiting for the Pongs */
};

/* A job of the checkpoint's snapshot: running on agent connection (agent, gen), or waiting
 * (agent -1). */
struct ck_entry {
    uint32_t num;
    int32_t agent;
    uint32_t gen;
};

struct checkpoint {
    enum ck_phase phase;
    bool final;         /* the one right after the fault phase */
    int client;         /* who asked for the snapshot */
    uint64_t deadline;  /* of the whole checkpoint */
    uint64_t next;      /* when the next one starts (during the fault phase) */
    struct ck_entry *e; /* the snapshot, sorted by job number */
    size_t n, cap;
};

struct chaos {
    struct tp_ctx *c;
    struct cu_rng rng;
    uint64_t seed;
    uint64_t t0, now;
    struct cagent ag[N_AGENTS];
    struct cclient cl[N_CLIENTS];
    struct jrec *ring;
    uint32_t next_num, npending, nghost, cap;
    uint32_t next_tag; /* dispatches seen */
    uint8_t *finished; /* bit per job number: its final result arrived */
    size_t bits;       /* bits allocated */
    struct action *act;
    size_t nact;
    struct suspect sus[MAX_SUSPECTS];
    size_t nsus;
    uint32_t *qnums; /* job numbers of a queue snapshot */
    size_t qcap;
    bool settling;
    bool warming; /* the warm-up before the idle RSS: no faults */
    struct checkpoint ck;
    char trace[TRACE][128];
    unsigned ntrace;
    struct stats st;
};

static struct chaos *the_chaos; /* freed by the teardown, also after a failure */

/* ------------------------------------------------------------------------------------------ */
/* Failures and trace */

static void ch_trace(struct chaos *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
ch_trace(struct chaos *h, const char *fmt, ...)
{
    char *line = h->trace[h->ntrace++ % TRACE];
    int n = snprintf(line, sizeof(h->trace[0]), "%6llu ", (unsigned long long)(h->now - h->t0));
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(h->trace[0]) - (size_t)n, fmt, ap);
    va_end(ap);
}

/* keep_log copies the whole backend log to $ING_CHAOS_KEEP_LOG, when set (tpeer prints only
 * its last 64 KiB and removes it). */
static void
keep_log(struct chaos *h)
{
    const char *dst = getenv("ING_CHAOS_KEEP_LOG");
    FILE *in, *out;
    char buf[8192];
    size_t n;

    if (dst == NULL || *dst == '\0' || h->c->be.log_path[0] == '\0')
        return;
    in = fopen(h->c->be.log_path, "re");
    out = fopen(dst, "we");
    while (in != NULL && out != NULL && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (in != NULL)
        fclose(in);
    if (out != NULL)
        fclose(out);
}

static _Noreturn void ch_fail_at(struct chaos *h, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
ch_fail_at(struct chaos *h, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    unsigned i, first = h->ntrace > TRACE ? h->ntrace - TRACE : 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    keep_log(h);
    print_error("chaos: last events (ms since start):\n");
    for (i = first; i < h->ntrace; i++)
        print_error("  %s\n", h->trace[i % TRACE]);
    tp_fail_at(file, line, "chaos seed %llu, at %llu ms: %s (rerun with ING_CHAOS_SEED=%llu)",
               (unsigned long long)h->seed, (unsigned long long)(h->now - h->t0), msg,
               (unsigned long long)h->seed);
}

#define ch_fail(h, ...) ch_fail_at(h, __FILE__, __LINE__, __VA_ARGS__)

/* ------------------------------------------------------------------------------------------ */
/* Jobs */

static void
job_id(uint32_t num, char *out, size_t cap)
{
    snprintf(out, cap, "j%u", num);
}

/* job_num parses "j<num>"; 0 if v is not such an id. */
static uint32_t
job_num(struct ing_view v)
{
    uint64_t n = 0;
    uint32_t i;

    if (v.p == NULL || v.len < 2 || v.len > 11 || v.p[0] != 'j')
        return 0;
    for (i = 1; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return 0;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    return n > UINT32_MAX ? 0 : (uint32_t)n;
}

/* env_index: "e0".."e3" -> 0..3, "ghost" -> ENV_GHOST, else -1. */
static int
env_index(struct ing_view v)
{
    if (tp_view_is(v, "ghost"))
        return ENV_GHOST;
    if (v.p != NULL && v.len == 2 && v.p[0] == 'e' && v.p[1] >= '0' && v.p[1] < '0' + N_ENVS)
        return v.p[1] - '0';
    return -1;
}

static bool
is_finished(const struct chaos *h, uint32_t num)
{
    return (size_t)num < h->bits && (h->finished[num / 8] & (1u << (num % 8))) != 0;
}

static void
set_finished(struct chaos *h, uint32_t num)
{
    if ((size_t)num >= h->bits) {
        size_t bits = h->bits ? h->bits : 65536;
        uint8_t *f;

        while (bits <= num)
            bits *= 2;
        f = realloc(h->finished, bits / 8);
        if (f == NULL)
            ch_fail(h, "out of memory");
        memset(f + h->bits / 8, 0, (bits - h->bits) / 8);
        h->finished = f;
        h->bits = bits;
    }
    h->finished[num / 8] |= (uint8_t)(1u << (num % 8));
}

/* rec_of returns the pending record of num, or NULL. */
static struct jrec *
rec_of(struct chaos *h, uint32_t num)
{
    struct jrec *r = &h->ring[num % RING];

    return num != 0 && r->num == num ? r : NULL;
}

static void
rec_free(struct chaos *h, struct jrec *r)
{
    if (r->env == ENV_GHOST)
        h->nghost--;
    r->num = 0;
    h->npending--;
}

/* ------------------------------------------------------------------------------------------ */
/* Agents' holds and actions */

static struct hold *
hold_find(struct cagent *a, uint32_t num)
{
    size_t i;

    for (i = 0; i < a->nholds; i++)
        if (a->holds[i].num == num)
            return &a->holds[i];
    return NULL;
}

static void
hold_remove(struct cagent *a, struct hold *x)
{
    *x = a->holds[--a->nholds];
}

/* schedule makes agent report kind about the job it holds as hd, after delay_ms; the report
 * is forgotten if the agent no longer holds the job by then (dispatch tags tell a job that
 * came back to the same agent from its first stay). */
static void
schedule(struct chaos *h, int agent, uint8_t kind, const struct hold *hd, uint32_t delay_ms)
{
    struct action *x;

    if (h->nact >= MAX_ACTIONS)
        ch_fail(h, "test model: more than %d scheduled agent actions", MAX_ACTIONS);
    x = &h->act[h->nact++];
    x->due = h->now + (uint64_t)cu_ms((int)delay_ms);
    x->tag = hd->tag;
    x->num = hd->num;
    x->agent = (uint8_t)agent;
    x->kind = kind;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections */

static void
client_up(struct chaos *h, int i)
{
    struct cclient *k = &h->cl[i];

    k->p = tp_client(h->c, k->name, NULL);
    k->p->lenient = true;
    k->gen++;
    k->queue_out = false;
    k->pings_out = 0;
    k->reconnect_at = 0;
    ch_trace(h, "%s connected (#%u)", k->name, k->gen);
}

/* client_down closes a client (reset or FIN): its pending jobs are excluded. */
static void
client_down(struct chaos *h, int i, bool reset)
{
    struct cclient *k = &h->cl[i];
    uint32_t n;
    unsigned excluded = 0;

    for (n = 0; n < RING; n++) {
        struct jrec *r = &h->ring[n];

        if (r->num != 0 && r->owner == i && r->owner_gen == k->gen) {
            rec_free(h, r);
            excluded++;
        }
    }
    if (reset)
        tp_abort(h->c, k->p);
    else
        tp_close(h->c, k->p);
    k->p = NULL;
    k->reconnect_at = h->now + (uint64_t)cu_ms((int)cu_between(&h->rng, 20, 200));
    h->st.client_drops++;
    ch_trace(h, "%s %s with %u pending jobs", k->name, reset ? "reset" : "closed", excluded);
}

static void
agent_hello(struct chaos *h, int i)
{
    struct cagent *a = &h->ag[i];
    struct tp_env envs[N_ENVS];
    static const char *const names[N_ENVS] = {"e0", "e1", "e2", "e3"};
    size_t n = 0;
    int k;

    a->slots = cu_between(&h->rng, 1, 4);
    if (i == N_AGENTS - 1 && cu_chance(&h->rng, 50))
        a->slots = 0; /* registered and pinged, never sent a job */
    a->envs = h->settling ? (1u << N_ENVS) - 1 : cu_between(&h->rng, 1, (1u << N_ENVS) - 1);
    for (k = 0; k < N_ENVS; k++)
        if (a->envs & (1u << k))
            envs[n++] =
                (struct tp_env){.type = "docker", .name = names[k], .id = "i1", .created = 1};
    tp_hello(a->p, a->name, a->slots, envs, n);
}

static void
agent_up(struct chaos *h, int i)
{
    struct cagent *a = &h->ag[i];

    a->p = tp_connect(h->c, ING_ROLE_AGENT);
    a->p->lenient = true;
    a->gen++;
    /* One name per connection: the backend may still list the jobs of this agent's previous
     * connection (its close not processed yet), which must not count as this one's. */
    snprintf(a->name, sizeof(a->name), "a%d.%u", i, a->gen);
    snprintf(a->p->label, sizeof(a->p->label), "agent %s", a->name);
    a->nholds = 0;
    a->pings_out = 0;
    a->ck_gen = 0;
    a->silent = false;
    a->resync = false;
    a->restart_at = 0;
    a->suspects = 0;
    agent_hello(h, i);
    ch_trace(h, "%s up (#%u): %u slots, envs %x", a->name, a->gen, a->slots, a->envs);
}

/* agent_down forgets an agent's connection: how 0 reset by the test, 1 closed by the test,
 * 2 closed by the backend (which resolves the suspicions on it). */
static void
agent_down(struct chaos *h, int i, int how)
{
    struct cagent *a = &h->ag[i];
    size_t s;

    for (s = 0; s < h->nsus;) {
        struct suspect *x = &h->sus[s];
        int k;

        if ((x->agent[0] == i && x->gen[0] == a->gen) ||
            (x->agent[1] == i && x->gen[1] == a->gen)) {
            for (k = 0; k < 2; k++) /* the other agent is no longer under suspicion */
                if (x->agent[k] >= 0 && x->agent[k] != i && h->ag[x->agent[k]].p != NULL &&
                    h->ag[x->agent[k]].gen == x->gen[k])
                    h->ag[x->agent[k]].suspects--;
            *x = h->sus[--h->nsus];
        } else {
            s++;
        }
    }
    ch_trace(h, "%s down (%s) holding %zu jobs", a->name,
             how == 0   ? "reset"
             : how == 1 ? "closed"
                        : "dropped by the backend",
             a->nholds);
    if (how == 0)
        tp_abort(h->c, a->p);
    else
        tp_close(h->c, a->p);
    a->p = NULL;
    a->nholds = 0;
    a->suspects = 0;
    a->pings_out = 0;
    a->silent = false;
    a->resync = false;
    a->restart_at = h->now + (uint64_t)cu_ms((int)cu_between(&h->rng, 20, 300));
}

/* ------------------------------------------------------------------------------------------ */
/* What agents receive */

static void
add_suspect(struct chaos *h, int a0, int a1, uint32_t num, const char *what)
{
    struct suspect *s;

    if (h->nsus >= MAX_SUSPECTS)
        ch_fail(h, "too many unresolved dispatches (last: j%u, %s)", num, what);
    s = &h->sus[h->nsus++];
    s->agent[0] = a0;
    s->agent[1] = a1;
    s->gen[0] = h->ag[a0].gen;
    s->gen[1] = a1 >= 0 ? h->ag[a1].gen : 0;
    s->num = num;
    s->deadline = h->now + (uint64_t)cu_ms(2000);
    snprintf(s->what, sizeof(s->what), "%s", what);
    h->ag[a0].suspects++;
    if (a1 >= 0)
        h->ag[a1].suspects++;
    ch_trace(h, "suspect: %s", what);
}

static void
on_dispatch(struct chaos *h, int i, const struct ing_msg *m)
{
    struct cagent *a = &h->ag[i];
    uint32_t num = job_num(m->u.job.job_id);
    int env = env_index(m->u.job.environment);
    size_t active = 0, k;
    struct hold *x;
    char what[96];
    int b;

    if (num == 0 || num >= h->next_num)
        ch_fail(h, "%s received BackendNewJob for an id no client submitted", a->name);
    if (env < 0 || env == ENV_GHOST || !(a->envs & (1u << env)))
        ch_fail(h, "%s received j%u for an environment it did not announce", a->name, num);
    if (hold_find(a, num) != NULL)
        ch_fail(h, "%s received j%u twice", a->name, num);
    if (is_finished(h, num)) {
        /* Only possible if the dispatch left before the job ended elsewhere, i.e. the agent
         * is being dropped. */
        snprintf(what, sizeof(what), "j%u sent to %s after its final result", num, a->name);
        add_suspect(h, i, -1, num, what);
    }
    for (b = 0; b < N_AGENTS; b++) {
        struct cagent *o = &h->ag[b];

        if (b == i || o->p == NULL || hold_find(o, num) == NULL)
            continue;
        snprintf(what, sizeof(what), "j%u sent to %s while %s holds it", num, a->name, o->name);
        add_suspect(h, b, i, num, what);
    }
    for (k = 0; k < a->nholds; k++)
        active += !a->holds[k].released;
    if (active >= a->slots) {
        /* Only a job whose kill the agent ignored can have been given up by the backend. */
        for (k = 0; k < a->nholds; k++)
            if (a->holds[k].killed && !a->holds[k].released)
                break;
        if (k == a->nholds)
            ch_fail(h, "%s (%u slots) received j%u while holding %zu running jobs", a->name,
                    a->slots, num, active);
        a->holds[k].released = true;
    }
    if (a->nholds == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct hold *n = realloc(a->holds, cap * sizeof(*n));

        if (n == NULL)
            ch_fail(h, "out of memory");
        a->holds = n;
        a->cap = cap;
    }
    x = &a->holds[a->nholds++];
    *x = (struct hold){.num = num, .tag = ++h->next_tag, .env = (uint8_t)env};
    ch_trace(h, "%s <- j%u", a->name, num);
    if (h->settling) {
        schedule(h, i, ACT_DONE, x, cu_between(&h->rng, 0, 10));
        return;
    }
    if (cu_chance(&h->rng, 90))
        schedule(h, i, ACT_START, x, cu_between(&h->rng, 1, 20));
    schedule(h, i, ACT_DONE, x, cu_between(&h->rng, 25, 150));
}

static void
send_killed(struct chaos *h, int i, uint32_t num, const char *text)
{
    char id[16], state[24];
    struct tp_result r = {
        .id = id, .kind = "killed", .text = text, .state = state, .out = "", .err = ""};

    job_id(num, id, sizeof(id));
    snprintf(state, sizeof(state), "S-j%u", num);
    tp_done_full(h->ag[i].p, &r);
}

static void
on_kill(struct chaos *h, int i, const struct ing_msg *m)
{
    struct cagent *a = &h->ag[i];
    uint32_t num = job_num(m->u.kill.job_id);
    struct hold *x = hold_find(a, num);
    char want[24];

    snprintf(want, sizeof(want), "S-j%u", num);
    if (num == 0 || !tp_view_is(m->u.kill.state, want))
        ch_fail(h, "%s: BackendKillJob with a bad id or state", a->name);
    if (x == NULL) {
        /* Its result crossed the kill (or it is a job the agent never had): answer as
         * proto.md §7.2 says, sometimes (not while a checkpoint holds every report back).
         * The backend must drop it. */
        if (h->ck.phase == CK_OFF && cu_chance(&h->rng, 50)) {
            send_killed(h, i, num, "stray");
            h->st.stray++;
        }
        return;
    }
    x->killed = true;
    ch_trace(h, "%s kill j%u", a->name, num);
    if (h->settling || cu_chance(&h->rng, 70)) {
        schedule(h, i, ACT_KILLED, x, cu_between(&h->rng, 0, 15));
        return;
    }
    /* Ignore the kill: answer after the kill timeout, or around it, or never. */
    h->st.zombies++;
    if (cu_chance(&h->rng, 50))
        schedule(h, i, ACT_KILLED, x, cu_between(&h->rng, 100, 900));
}

static void
agent_input(struct chaos *h, int i)
{
    struct cagent *a = &h->ag[i];
    uint32_t gen = a->gen;

    while (a->p != NULL && a->gen == gen) {
        const struct ing_msg *m = NULL;
        int r = tp_recv(a->p, 0, &m);

        if (r == -ETIMEDOUT)
            return;
        if (r == -EPIPE) {
            if (!a->silent)
                h->st.unexpected_drops++;
            h->st.agent_drops++;
            agent_down(h, i, 2);
            return;
        }
        if (r < 0)
            ch_fail(h, "%s: undecodable input from the backend (%d)", a->name, r);
        switch (m->type) {
        case ING_BACKEND_NEW_JOB:
            if (a->resync)
                ch_trace(h, "%s stale j%u (resync)", a->name, job_num(m->u.job.job_id));
            else
                on_dispatch(h, i, m);
            break;
        case ING_BACKEND_KILL_JOB:
            if (!a->resync)
                on_kill(h, i, m);
            break;
        case ING_PONG:
            /* Pings are answered in order: the first Pong after a hello again answers the
             * Ping sent just before it (a checkpoint sends none while one is unanswered). */
            if (a->pings_out == 0)
                ch_fail(h, "%s: Pong without a Ping", a->name);
            a->resync = false;
            if (--a->pings_out == 0 && h->ck.phase == CK_FENCE && a->ck_gen == a->gen)
                a->fence_tag = h->next_tag;
            break;
        case ING_ERROR:
            if (m->u.error.code != ING_ERR_TIMEOUT)
                ch_fail(h, "%s received Error %u", a->name, m->u.error.code);
            break;
        default:
            ch_fail(h, "%s received %s", a->name, ing_msg_type_name(m->type));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* What clients receive */

static void
on_done(struct chaos *h, int i, const struct ing_msg *m)
{
    struct cclient *k = &h->cl[i];
    const struct ing_job_result *res = &m->u.result;
    uint32_t num = job_num(res->job_id);
    struct jrec *r = rec_of(h, num);
    char kind[64], text[128], state[64], want[24];
    bool ok, synthetic_state;
    int b;

    tp_cpy(kind, sizeof(kind), res->result_kind);
    tp_cpy(text, sizeof(text), res->result_text);
    tp_cpy(state, sizeof(state), res->state);
    if (num == 0)
        ch_fail(h, "%s: BackendJobDone for an id no client submitted", k->name);
    if (is_finished(h, num))
        ch_fail(h, "%s: second BackendJobDone for j%u (%s, \"%s\")", k->name, num, kind, text);
    if (r == NULL || r->owner != i || r->owner_gen != k->gen)
        ch_fail(h,
                "%s: BackendJobDone(j%u, %s, \"%s\") for a job this connection is not "
                "waiting for",
                k->name, num, kind, text);
    synthetic_state = true;
    if (r->env == ENV_GHOST) {
        ok = (strcmp(kind, "killed") == 0 && strcmp(text, "You killed the job") == 0) ||
             (strcmp(kind, "crash") == 0 &&
              strcmp(text, "No agent provides environment docker/ghost") == 0);
    } else if (strcmp(kind, "crash") == 0) {
        char orphan[64];

        snprintf(orphan, sizeof(orphan), "No agent provides environment docker/e%u", r->env);
        ok =
            (strcmp(text, "Agent restarted") == 0 && r->agent_started) || strcmp(text, orphan) == 0;
    } else if (strcmp(kind, "killed") == 0) {
        ok = strcmp(text, "You killed the job") == 0 || strcmp(text, "agent-killed") == 0;
    } else {
        ok = (strcmp(kind, "success") == 0 || strcmp(kind, "failed") == 0 ||
              strcmp(kind, "error") == 0) &&
             strcmp(text, "agent-done") == 0;
        synthetic_state = false;
    }
    if (!ok)
        ch_fail(h, "%s: j%u (%s) ended %s \"%s\"%s", k->name, num,
                r->env == ENV_GHOST ? "docker/ghost" : "provided environment", kind, text,
                strcmp(text, "Agent restarted") == 0 ? " but no agent had started it" : "");
    snprintf(want, sizeof(want), synthetic_state ? "S-j%u" : "S2-j%u", num);
    if (strcmp(state, want) != 0)
        ch_fail(h, "%s: j%u ended %s \"%s\" with state \"%s\", expected \"%s\"", k->name, num, kind,
                text, state, want);
    if (strcmp(text, "You killed the job") == 0) {
        /* The backend gave up the job: the slot of an agent still running it is free. */
        for (b = 0; b < N_AGENTS; b++) {
            struct hold *x = h->ag[b].p != NULL ? hold_find(&h->ag[b], num) : NULL;

            if (x != NULL)
                x->released = true;
        }
    }
    ch_trace(h, "%s done j%u %s \"%s\"", k->name, num, kind, text);
    set_finished(h, num);
    rec_free(h, r);
    h->st.done++;
}

static void
on_started(struct chaos *h, int i, const struct ing_msg *m)
{
    struct cclient *k = &h->cl[i];
    uint32_t num = job_num(m->u.ref.job_id);
    struct jrec *r = rec_of(h, num);

    if (r == NULL || r->owner != i || r->owner_gen != k->gen)
        ch_fail(h, "%s: BackendJobStarted(j%u) for a job this connection is not waiting for%s",
                k->name, num, is_finished(h, num) ? " (after its final result)" : "");
    if (!r->agent_started)
        ch_fail(h, "%s: BackendJobStarted(j%u) but no agent reported it started", k->name, num);
    ch_trace(h, "%s started j%u", k->name, num);
    if (++r->starts > 2) /* --retry-lost-jobs 1: at most one restart */
        ch_fail(h, "%s: BackendJobStarted(j%u) %u times", k->name, num, r->starts);
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* agent_of parses the name of an agent connection, "a<index>.<gen>", into *idx and *gen;
 * false if v is not a name the test gave (to this or an earlier connection). */
static bool
agent_of(const struct chaos *h, struct ing_view v, int *idx, uint32_t *gen)
{
    uint64_t n[2] = {0, 0};
    uint32_t i = 1, k = 0, digits = 0;

    if (v.p == NULL || v.len < 4 || v.len > 16 || v.p[0] != 'a')
        return false;
    for (; i < v.len; i++) {
        if (v.p[i] == '.' && k == 0 && digits > 0) {
            k = 1;
            digits = 0;
        } else if (v.p[i] >= '0' && v.p[i] <= '9') {
            n[k] = n[k] * 10 + (uint64_t)(v.p[i] - '0');
            digits++;
        } else {
            return false;
        }
    }
    if (k != 1 || digits == 0 || n[0] >= N_AGENTS || n[1] == 0 || n[1] > h->ag[n[0]].gen)
        return false;
    *idx = (int)n[0];
    *gen = (uint32_t)n[1];
    return true;
}

static int
cmp_entry(const void *a, const void *b)
{
    return cmp_u32(&((const struct ck_entry *)a)->num, &((const struct ck_entry *)b)->num);
}

static void ck_snapshot_taken(struct chaos *h);

/* queue_entry checks one entry of a snapshot received by client i; returns whether the
 * entry is the requester's. */
static bool
queue_entry(struct chaos *h, int i, struct ing_view id, bool mine, struct ing_view info,
            bool running, uint32_t *nums, size_t *n)
{
    struct cclient *k = &h->cl[i];
    uint32_t num = job_num(id);
    struct jrec *r = rec_of(h, num);
    bool owned = r != NULL && r->owner == i && r->owner_gen == k->gen;
    int env = env_index(info);

    if (num == 0 || num >= h->next_num)
        ch_fail(h, "%s: the queue lists an id no client submitted", k->name);
    if (env < 0 || (running && env == ENV_GHOST))
        ch_fail(h, "%s: the queue lists j%u %s with info \"%.*s\"", k->name, num,
                running ? "running" : "waiting", (int)info.len, info.p);
    if (r != NULL && env != r->env)
        ch_fail(h, "%s: the queue lists j%u with info \"%.*s\", not its environment", k->name, num,
                (int)info.len, info.p);
    if (mine && !owned)
        ch_fail(h, "%s: the queue lists j%u as the requester's, but %s", k->name, num,
                is_finished(h, num) ? "it already received its result" : "it is not");
    if (!mine && owned)
        ch_fail(h, "%s: the queue lists the requester's j%u as not its own", k->name, num);
    if (mine && num > k->queue_mark)
        ch_fail(h, "%s: the queue lists j%u, submitted after the request", k->name, num);
    nums[(*n)++] = num;
    return mine;
}

static void
on_queue(struct chaos *h, int i, const struct ing_msg *m)
{
    struct cclient *k = &h->cl[i];
    const struct ing_get_queue *q = &m->u.queue;
    const uint8_t *pos;
    uint32_t *nums, expected = 0, mine = 0, x;
    size_t n = 0;

    bool record = h->ck.phase == CK_SNAPSHOT && h->ck.client == i;

    if (!k->queue_out)
        ch_fail(h, "%s: BackendGetQueue without a request", k->name);
    k->queue_out = false;
    if (record && (size_t)q->n_running + q->n_waiting > h->ck.cap) {
        size_t cap = (size_t)q->n_running + q->n_waiting + 64;
        struct ck_entry *e = realloc(h->ck.e, cap * sizeof(*e));

        if (e == NULL)
            ch_fail(h, "out of memory");
        h->ck.e = e;
        h->ck.cap = cap;
    }
    if (record)
        h->ck.n = 0;
    if ((size_t)q->n_running + q->n_waiting + 1 > h->qcap) {
        size_t cap = (size_t)q->n_running + q->n_waiting + 64;

        nums = realloc(h->qnums, cap * sizeof(*nums));
        if (nums == NULL)
            ch_fail(h, "out of memory");
        h->qnums = nums;
        h->qcap = cap;
    }
    nums = h->qnums;
    pos = q->wire_running;
    for (x = 0; x < q->n_running; x++) {
        struct ing_queue_running e;
        uint32_t gen;
        int ag;

        pos = ing_queue_next_running(pos, &e);
        if (!agent_of(h, e.agent_name, &ag, &gen))
            ch_fail(h, "%s: running entry with agent \"%.*s\"", k->name, (int)e.agent_name.len,
                    e.agent_name.p);
        mine += queue_entry(h, i, e.job_id, e.is_current, e.info, true, nums, &n);
        if (record)
            h->ck.e[h->ck.n++] = (struct ck_entry){.num = nums[n - 1], .agent = ag, .gen = gen};
    }
    pos = q->wire_waiting;
    for (x = 0; x < q->n_waiting; x++) {
        struct ing_queue_waiting e;

        pos = ing_queue_next_waiting(pos, &e);
        mine += queue_entry(h, i, e.job_id, e.is_current, e.info, false, nums, &n);
        if (record)
            h->ck.e[h->ck.n++] = (struct ck_entry){.num = nums[n - 1], .agent = -1};
    }
    qsort(nums, n, sizeof(*nums), cmp_u32);
    for (x = 1; x < n; x++) {
        if (nums[x] == nums[x - 1])
            ch_fail(h, "%s: the queue lists j%u twice", k->name, nums[x]);
    }
    for (x = 0; x < RING; x++) {
        const struct jrec *r = &h->ring[x];

        expected +=
            r->num != 0 && r->owner == i && r->owner_gen == k->gen && r->num <= k->queue_mark;
    }
    if (mine != expected)
        ch_fail(h, "%s: the queue lists %u of its jobs, %u are pending", k->name, mine, expected);
    k->last_running = q->n_running;
    k->last_waiting = q->n_waiting;
    k->queue_seen = true;
    h->st.queue_checks++;
    if (record)
        ck_snapshot_taken(h);
}

static void
on_envs(struct chaos *h, int i, const struct ing_msg *m)
{
    char got[256];
    const char *p;

    tp_envs_render(m->u.envs.environments, got, sizeof(got));
    if (got[0] == '\0')
        return;
    if (strncmp(got, "docker:[", 8) != 0 || strchr(got, ';') != NULL)
        ch_fail(h, "%s: environments {%s}", h->cl[i].name, got);
    for (p = got + 8; *p != ']'; p += 2) {
        if (p[0] != 'e' || p[1] < '0' || p[1] >= '0' + N_ENVS)
            ch_fail(h, "%s: environments {%s}", h->cl[i].name, got);
        if (p[2] == ',')
            p++;
    }
}

static void
client_input(struct chaos *h, int i)
{
    struct cclient *k = &h->cl[i];

    while (k->p != NULL) {
        const struct ing_msg *m = NULL;
        int r = tp_recv(k->p, 0, &m);

        if (r == -ETIMEDOUT)
            return;
        if (r == -EPIPE)
            ch_fail(h, "%s: the backend closed the connection", k->name);
        if (r < 0)
            ch_fail(h, "%s: undecodable input from the backend (%d)", k->name, r);
        switch (m->type) {
        case ING_BACKEND_JOB_DONE:
            on_done(h, i, m);
            break;
        case ING_BACKEND_JOB_STARTED:
            on_started(h, i, m);
            break;
        case ING_BACKEND_GET_QUEUE:
            on_queue(h, i, m);
            break;
        case ING_BACKEND_UPDATE_ENVIRONMENTS:
            on_envs(h, i, m);
            break;
        case ING_PONG:
            if (k->pings_out == 0)
                ch_fail(h, "%s: Pong without a Ping", k->name);
            k->pings_out--;
            break;
        case ING_ERROR: {
            char t[200];

            ch_fail(h, "%s: Error %u \"%s\"", k->name, m->u.error.code,
                    tp_cpy(t, sizeof(t), m->u.error.text));
        }
        default:
            ch_fail(h, "%s received %s", k->name, ing_msg_type_name(m->type));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Actions and faults */

static void
run_action(struct chaos *h, const struct action *x)
{
    struct cagent *a = &h->ag[x->agent];
    struct hold *hd;
    char id[16], state[24];
    static const char *const kinds[] = {"success", "failed", "error"};

    if (a->p == NULL || a->resync || (hd = hold_find(a, x->num)) == NULL || hd->tag != x->tag)
        return;
    job_id(x->num, id, sizeof(id));
    if (x->kind == ACT_START) {
        struct jrec *r = rec_of(h, x->num);

        if (r != NULL)
            r->agent_started = true;
        tp_started(a->p, id);
        ch_trace(h, "%s -> started j%u", a->name, x->num);
        return;
    }
    if (x->kind == ACT_KILLED) {
        send_killed(h, x->agent, x->num, "agent-killed");
    } else {
        struct tp_result res = {.id = id,
                                .kind = kinds[cu_below(&h->rng, 3)],
                                .text = "agent-done",
                                .grade = 50.0,
                                .state = state,
                                .out = "out",
                                .err = NULL};

        snprintf(state, sizeof(state), "S2-j%u", x->num);
        tp_done_full(a->p, &res);
    }
    ch_trace(h, "%s -> %s j%u", a->name, x->kind == ACT_KILLED ? "killed" : "done", x->num);
    hold_remove(a, hd);
}

static void
run_due_actions(struct chaos *h)
{
    size_t i = 0;

    while (i < h->nact) {
        if (h->act[i].due <= h->now) {
            struct action x = h->act[i];

            h->act[i] = h->act[--h->nact];
            run_action(h, &x);
        } else {
            i++;
        }
    }
}

/* submit_env submits a job of environment e (ENV_GHOST: docker/ghost) from client i. */
static void
submit_env(struct chaos *h, int i, int e)
{
    struct cclient *k = &h->cl[i];
    uint32_t num = h->next_num;
    struct jrec *r = &h->ring[num % RING];
    char id[16], state[24], env[8];
    struct tp_job j = {.id = id, .state = state, .env = env, .input = "print(1)"};

    if (r->num != 0)
        ch_fail(h, "j%u is still pending after %u newer jobs", r->num, RING);
    h->next_num++;
    job_id(num, id, sizeof(id));
    snprintf(state, sizeof(state), "S-j%u", num);
    snprintf(env, sizeof(env), e == ENV_GHOST ? "ghost" : "e%d", e);
    j.priority = (int64_t)cu_below(&h->rng, 3) - 1;
    *r = (struct jrec){.num = num,
                       .owner = (uint8_t)i,
                       .env = (uint8_t)e,
                       .owner_gen = k->gen,
                       .t_submit = h->now};
    h->npending++;
    h->nghost += e == ENV_GHOST;
    tp_send_job(k->p, &j);
    h->st.submitted++;
}

static void
submit(struct chaos *h, int i)
{
    int e = cu_chance(&h->rng, 5) && h->nghost < 10 ? ENV_GHOST : (int)cu_below(&h->rng, N_ENVS);

    submit_env(h, i, e);
}

/* pick_client returns a random connected client, or -1. */
static int
pick_client(struct chaos *h)
{
    int i, start = (int)cu_below(&h->rng, N_CLIENTS);

    for (i = 0; i < N_CLIENTS; i++) {
        int k = (start + i) % N_CLIENTS;

        if (h->cl[k].p != NULL)
            return k;
    }
    return -1;
}

/* pick_agent returns a random connected agent that is not silent, not resyncing and under
 * no suspicion (an agent that must be proved dropped is left alone), preferring agents
 * that hold jobs when busy is set; -1 if none. */
static int
pick_agent(struct chaos *h, bool busy)
{
    int i, start = (int)cu_below(&h->rng, N_AGENTS), fallback = -1;

    for (i = 0; i < N_AGENTS; i++) {
        int k = (start + i) % N_AGENTS;
        struct cagent *a = &h->ag[k];

        if (a->p == NULL || a->silent || a->resync || a->suspects > 0)
            continue;
        if (!busy || a->nholds > 0)
            return k;
        fallback = k;
    }
    return fallback;
}

/* pick_pending returns a random pending job number (0 if none). */
static uint32_t
pick_pending(struct chaos *h)
{
    uint32_t tries;

    if (h->npending == 0)
        return 0;
    for (tries = 0; tries < 64; tries++) {
        uint32_t span = h->next_num - 1 < 512 ? h->next_num - 1 : 512;
        uint32_t num = h->next_num - 1 - cu_below(&h->rng, span);

        if (rec_of(h, num) != NULL)
            return num;
    }
    return 0;
}

static void
forge(struct chaos *h)
{
    int f = pick_agent(h, false), b;
    char id[16];
    struct tp_result r = {.id = id,
                          .kind = "success",
                          .text = "forged",
                          .grade = 100.0,
                          .state = "forged",
                          .out = "",
                          .err = ""};

    if (f < 0)
        return;
    for (b = 0; b < N_AGENTS; b++) {
        struct cagent *o = &h->ag[b];
        size_t k;

        if (b == f || o->p == NULL)
            continue;
        for (k = 0; k < o->nholds; k++) {
            /* A job of an environment the forger does not announce can never be its own. */
            if (!(h->ag[f].envs & (1u << o->holds[k].env))) {
                job_id(o->holds[k].num, id, sizeof(id));
                tp_done_full(h->ag[f].p, &r);
                h->st.forged++;
                ch_trace(h, "%s forges j%u", h->ag[f].name, o->holds[k].num);
                return;
            }
        }
    }
}

static void
fault(struct chaos *h)
{
    uint32_t roll = cu_below(&h->rng, 100);
    int i, silent = 0;
    uint32_t num;
    char id[16];

    for (i = 0; i < N_AGENTS; i++)
        silent += h->ag[i].p != NULL && h->ag[i].silent;
    if (roll < 45) { /* submit a few */
        uint32_t n = cu_between(&h->rng, 1, 4);

        i = pick_client(h);
        while (i >= 0 && n-- > 0 && h->npending < h->cap)
            submit(h, i);
    } else if (roll < 55) { /* kill a pending job, maybe another client's */
        i = pick_client(h);
        num = pick_pending(h);
        if (i >= 0 && num != 0) {
            job_id(num, id, sizeof(id));
            tp_kill(h->cl[i].p, id);
            h->st.kills++;
            ch_trace(h, "%s kills j%u", h->cl[i].name, num);
        }
    } else if (roll < 57) { /* kill an id nobody has */
        i = pick_client(h);
        if (i >= 0)
            tp_kill(h->cl[i].p, "nope");
    } else if (roll < 60) { /* a client leaves */
        i = pick_client(h);
        if (i >= 0)
            client_down(h, i, cu_chance(&h->rng, 50));
    } else if (roll < 68) { /* queue snapshot */
        i = pick_client(h);
        if (i >= 0 && !h->cl[i].queue_out) {
            h->cl[i].queue_out = true;
            h->cl[i].queue_mark = h->next_num - 1;
            tp_send_type(h->cl[i].p, ING_CLIENT_GET_QUEUE);
        }
    } else if (roll < 72) { /* ping */
        i = pick_client(h);
        if (i >= 0) {
            h->cl[i].pings_out++;
            tp_send_type(h->cl[i].p, ING_PING);
        }
    } else if (roll < 76) { /* an agent dies mid-job */
        i = pick_agent(h, true);
        if (i >= 0) {
            h->st.agent_resets++;
            agent_down(h, i, 0);
        }
    } else if (roll < 78) { /* an agent closes */
        i = pick_agent(h, false);
        if (i >= 0) {
            h->st.agent_closes++;
            agent_down(h, i, 1);
        }
    } else if (roll < 80) { /* an agent stops answering pings */
        i = pick_agent(h, false);
        if (i >= 0 && silent < MAX_SILENT) {
            h->ag[i].silent = true;
            h->ag[i].p->auto_pong = false;
            ch_trace(h, "%s goes silent", h->ag[i].name);
        }
    } else if (roll < 83) { /* an agent restarts on the same connection */
        i = pick_agent(h, false);
        if (i >= 0) {
            struct cagent *a = &h->ag[i];

            /* Ping first: what arrives before the Pong was sent before the new hello. */
            tp_send_type(a->p, ING_PING);
            a->pings_out++;
            agent_hello(h, i);
            a->nholds = 0;
            a->resync = true;
            h->st.rehellos++;
            ch_trace(h, "%s hello again: %u slots, envs %x", a->name, a->slots, a->envs);
        }
    } else if (roll < 86) {
        forge(h);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The loop */

static void
check_suspects(struct chaos *h)
{
    size_t s;

    for (s = 0; s < h->nsus; s++)
        if (h->sus[s].deadline <= h->now)
            ch_fail(h, "%s, and the backend dropped neither agent", h->sus[s].what);
}

static void
check_stuck(struct chaos *h)
{
    uint32_t x;
    uint64_t limit = (uint64_t)cu_ms(30000);

    for (x = 0; x < RING; x++) {
        const struct jrec *r = &h->ring[x];

        if (r->num != 0 && h->now - r->t_submit > limit)
            ch_fail(h, "j%u of %s has been pending for %llu ms", r->num, h->cl[r->owner].name,
                    (unsigned long long)(h->now - r->t_submit));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The busy-slot checkpoint: the backend's running jobs per agent against the agents' own
 *
 * A checkpoint pauses the load (no fault, no agent report, no agent reconnecting; clients may
 * reconnect, they only say hello) and goes through these phases, each step waiting for the
 * previous one to be done:
 *
 *  1. quiet: no agent is silent (the backend drops it soon: until then it may be unregistered
 *     at any time), resyncing after a hello again, or under suspicion (one of two agents is
 *     being dropped). Every live agent is then one the backend keeps registered.
 *  2. barrier: Ping on every agent and every client, and every Pong (and every pending queue
 *     answer) received. The backend handles a connection's frames in order, so it has handled
 *     every report of every agent and every submission and kill of every client: from now on
 *     no report is in flight and nothing the test sends changes which jobs run where.
 *  3. snapshot: ClientGetQueue. Call T the moment the backend builds the answer; its running
 *     entries are every job in the backend's running lists at T, with the agent's name (all
 *     of them: the frame limit is far, --queue-list-max only cuts waiting jobs, and this
 *     test never has more than a few hundred).
 *  4. fence: when the answer arrives, every agent socket is drained (non-blocking), then Ping
 *     on every agent and the Pongs awaited. The drain alone is not enough: the backend
 *     queues output per connection and writes it at the end of its loop iteration in no
 *     particular order across connections (server.c, before_sleep), so a BackendNewJob
 *     queued before T may reach its agent after the answer reaches the client. A Pong on an
 *     agent's connection, asked for after the answer arrived, is written after everything the
 *     backend queued there up to T: when it arrives, the agent has received every dispatch
 *     and kill made before T. a->fence_tag marks which holds had arrived by then.
 *
 * Then, for every agent connection live through the whole checkpoint (its name is unique per
 * connection, so the old connection of the same agent, whose close the backend may not have
 * read at T, is another agent), the number of jobs the snapshot lists running on it must equal
 * the number of jobs it held at T. What it holds now (holds that arrived before its fence Pong)
 * is that, give or take two kinds of job, each identified from the snapshot itself:
 *  - dispatched after T: received after T, so absent from its running list at T; the snapshot
 *    must then list it waiting, or running on an agent connection that is gone now (the
 *    backend removed that agent after T and requeued its jobs), never on a live agent;
 *  - killed and timed out: the agent ignored (or had not answered yet) a kill, and the backend
 *    gave the job up (--kill-timeout) before T: it is listed nowhere. Only a job whose kill
 *    the agent received may be missing, and the test then knows its slot is free.
 * No other difference is possible: no report was in flight at T, and none was sent after. So
 *   listed == held - dispatched after T - killed and timed out,
 * every job listed on the agent is one it holds, and (a slot check at T) listed <= slots and
 * the jobs dispatched after T fit in the slots free at T plus those of listed killed jobs. */

static const char *const ck_phase_name[] = {"off", "quiet", "barrier", "snapshot", "fence"};

static void
ck_begin(struct chaos *h, bool final)
{
    h->ck.phase = CK_QUIET;
    h->ck.final = final;
    h->ck.deadline = h->now + (uint64_t)cu_ms(5000);
    ch_trace(h, "checkpoint%s: pause", final ? " after the fault phase" : "");
}

static const struct ck_entry *
ck_find(const struct chaos *h, uint32_t num)
{
    struct ck_entry key = {.num = num};

    return h->ck.n == 0 ? NULL : bsearch(&key, h->ck.e, h->ck.n, sizeof(key), cmp_entry);
}

/* ck_snapshot_taken: the checkpoint's answer was checked and recorded (on_queue). */
static void
ck_snapshot_taken(struct chaos *h)
{
    int i;

    qsort(h->ck.e, h->ck.n, sizeof(*h->ck.e), cmp_entry);
    for (i = 0; i < N_AGENTS; i++)
        if (h->ag[i].p != NULL)
            agent_input(h, i);
    for (i = 0; i < N_AGENTS; i++) {
        struct cagent *a = &h->ag[i];

        if (a->p != NULL && a->ck_gen == a->gen) {
            tp_send_type(a->p, ING_PING);
            a->pings_out++;
        }
    }
    h->ck.phase = CK_FENCE;
    ch_trace(h, "checkpoint: snapshot of %zu jobs", h->ck.n);
}

static void
ck_compare(struct chaos *h)
{
    uint64_t running = 0;
    size_t x;
    int i;

    for (i = 0; i < N_AGENTS; i++) {
        struct cagent *a = &h->ag[i];
        uint32_t listed = 0, held = 0, after = 0, timed_out = 0, killed_listed = 0;

        if (a->p == NULL || a->ck_gen != a->gen)
            continue;
        for (x = 0; x < h->ck.n; x++) {
            const struct ck_entry *e = &h->ck.e[x];
            const struct hold *hd;

            if (e->agent != i || e->gen != a->gen)
                continue;
            hd = hold_find(a, e->num);
            if (hd == NULL || hd->tag > a->fence_tag)
                ch_fail(h,
                        "checkpoint: the backend lists j%u running on %s, which does not hold it",
                        e->num, a->name);
            listed++;
            killed_listed += hd->killed;
        }
        for (x = 0; x < a->nholds; x++) {
            struct hold *hd = &a->holds[x];
            const struct ck_entry *e;

            if (hd->tag > a->fence_tag)
                continue; /* arrived after the fence: dispatched after T */
            held++;
            e = ck_find(h, hd->num);
            if (e != NULL && e->agent == i && e->gen == a->gen)
                continue;
            if (e != NULL &&
                (e->agent < 0 || h->ag[e->agent].p == NULL || h->ag[e->agent].gen != e->gen)) {
                after++;
                continue;
            }
            if (e != NULL)
                ch_fail(h, "checkpoint: %s holds j%u, the backend lists it running on %s", a->name,
                        hd->num, h->ag[e->agent].name);
            if (!hd->killed)
                ch_fail(h,
                        "checkpoint: %s holds j%u (never killed, no report sent), the backend "
                        "does not list it",
                        a->name, hd->num);
            hd->released = true; /* the backend gave it up: its slot is free */
            timed_out++;
        }
        if (listed != held - after - timed_out)
            ch_fail(h,
                    "checkpoint: the backend lists %u running jobs on %s, which runs %u (%u held, "
                    "%u dispatched after the snapshot, %u killed and given up)",
                    listed, a->name, held - after - timed_out, held, after, timed_out);
        if (listed > a->slots || after > a->slots - listed + killed_listed)
            ch_fail(h,
                    "checkpoint: %s (%u slots): %u running jobs listed (%u of them killed), %u "
                    "more dispatched right after",
                    a->name, a->slots, listed, killed_listed, after);
        running += listed;
        h->st.busy_agents++;
        h->st.busy_after += after;
        h->st.busy_timed_out += timed_out;
    }
    h->st.busy_checks++;
    h->st.busy_running += running;
    if (h->ck.final)
        h->st.final_running = running;
    ch_trace(h, "checkpoint: %llu running jobs agree", (unsigned long long)running);
}

/* ck_advance moves the checkpoint on when its phase is done. */
static void
ck_advance(struct chaos *h)
{
    struct checkpoint *ck = &h->ck;
    int i, k;

    if (ck->phase == CK_OFF)
        return;
    if (h->now > ck->deadline)
        ch_fail(h, "checkpoint: still in phase %s after %d ms (%zu suspects)",
                ck_phase_name[ck->phase], cu_ms(5000), h->nsus);
    switch (ck->phase) {
    case CK_QUIET:
        if (h->nsus != 0)
            return;
        for (i = 0; i < N_AGENTS; i++)
            if (h->ag[i].p != NULL && (h->ag[i].silent || h->ag[i].resync))
                return;
        for (i = 0; i < N_AGENTS; i++) {
            struct cagent *a = &h->ag[i];

            a->ck_gen = a->p != NULL ? a->gen : 0;
            if (a->p != NULL) {
                tp_send_type(a->p, ING_PING);
                a->pings_out++;
            }
        }
        for (i = 0; i < N_CLIENTS; i++) {
            if (h->cl[i].p != NULL) {
                tp_send_type(h->cl[i].p, ING_PING);
                h->cl[i].pings_out++;
            }
        }
        ck->phase = CK_BARRIER;
        return;
    case CK_BARRIER:
        for (i = 0; i < N_AGENTS; i++)
            if (h->ag[i].p != NULL && h->ag[i].pings_out != 0)
                return;
        for (i = 0; i < N_CLIENTS; i++)
            if (h->cl[i].p != NULL && (h->cl[i].pings_out != 0 || h->cl[i].queue_out))
                return;
        k = (int)cu_below(&h->rng, N_CLIENTS);
        for (i = 0; i < N_CLIENTS && h->cl[(k + i) % N_CLIENTS].p == NULL; i++)
            ;
        if (i == N_CLIENTS)
            return; /* wait for one to reconnect */
        ck->client = (k + i) % N_CLIENTS;
        h->cl[ck->client].queue_out = true;
        h->cl[ck->client].queue_mark = h->next_num - 1;
        tp_send_type(h->cl[ck->client].p, ING_CLIENT_GET_QUEUE);
        ck->phase = CK_SNAPSHOT;
        return;
    case CK_SNAPSHOT: /* on_queue moves on */
        return;
    case CK_FENCE:
        if (h->nsus != 0) /* a dispatch while another agent holds the job: wait for its drop */
            return;
        for (i = 0; i < N_AGENTS; i++)
            if (h->ag[i].p != NULL && h->ag[i].ck_gen == h->ag[i].gen && h->ag[i].pings_out != 0)
                return;
        ck_compare(h);
        ck->phase = CK_OFF;
        ck->next = h->now + (uint64_t)cu_ms((int)cu_between(&h->rng, 1500, 3000));
        return;
    case CK_OFF:
        return;
    }
}

/* step runs one iteration: due work, then one poll over every peer. */
static void
step(struct chaos *h, uint64_t *next_fault)
{
    struct pollfd pf[N_AGENTS + N_CLIENTS];
    int who[N_AGENTS + N_CLIENTS];
    uint32_t gens[N_AGENTS + N_CLIENTS];
    nfds_t n = 0, k;
    uint64_t wake = h->now + 20;
    bool paused, faults;
    int i;

    h->now = tp_now_ms();
    ck_advance(h);
    paused = h->ck.phase != CK_OFF;
    faults = !paused && !h->settling && !h->warming;
    if (!paused)
        run_due_actions(h);
    for (i = 0; i < N_AGENTS; i++)
        if (!paused && h->ag[i].p == NULL && h->ag[i].restart_at <= h->now)
            agent_up(h, i);
    for (i = 0; i < N_CLIENTS; i++)
        if (h->cl[i].p == NULL && h->cl[i].reconnect_at <= h->now)
            client_up(h, i);
    if (faults && h->now >= *next_fault) {
        fault(h);
        *next_fault = h->now + (uint64_t)cu_ms((int)cu_between(&h->rng, 1, 8));
    }
    check_suspects(h);

    for (i = 0; i < N_AGENTS; i++) {
        if (h->ag[i].p != NULL) {
            pf[n] = (struct pollfd){.fd = h->ag[i].p->fd, .events = POLLIN};
            who[n] = i;
            gens[n++] = h->ag[i].gen;
        }
    }
    for (i = 0; i < N_CLIENTS; i++) {
        if (h->cl[i].p != NULL) {
            pf[n] = (struct pollfd){.fd = h->cl[i].p->fd, .events = POLLIN};
            who[n] = N_AGENTS + i;
            gens[n++] = h->cl[i].gen;
        }
    }
    for (k = 0; k < h->nact && !paused; k++)
        if (h->act[k].due < wake)
            wake = h->act[k].due;
    if (faults && *next_fault < wake)
        wake = *next_fault;
    h->now = tp_now_ms();
    if (poll(pf, n, wake > h->now ? (int)(wake - h->now) : 0) <= 0)
        return;
    h->now = tp_now_ms();
    for (k = 0; k < n; k++) {
        if (pf[k].revents == 0)
            continue;
        if (who[k] < N_AGENTS) {
            if (h->ag[who[k]].p != NULL && h->ag[who[k]].gen == gens[k])
                agent_input(h, who[k]);
        } else if (h->cl[who[k] - N_AGENTS].p != NULL && h->cl[who[k] - N_AGENTS].gen == gens[k]) {
            client_input(h, who[k] - N_AGENTS);
        }
    }
}

/* settled tells whether nothing is left in flight. */
static bool
settled(const struct chaos *h)
{
    int i;

    if (h->npending != 0 || h->nsus != 0 || h->nact != 0)
        return false;
    for (i = 0; i < N_AGENTS; i++)
        if (h->ag[i].p == NULL || h->ag[i].silent || h->ag[i].resync || h->ag[i].nholds != 0)
            return false;
    for (i = 0; i < N_CLIENTS; i++)
        if (h->cl[i].p == NULL || h->cl[i].queue_out || h->cl[i].pings_out != 0)
            return false;
    return true;
}

static void
settle(struct chaos *h, uint64_t *next_fault)
{
    uint64_t deadline;
    int i;
    size_t k;

    h->settling = true;
    ch_trace(h, "settling: %u pending jobs", h->npending);
    for (i = 0; i < N_AGENTS; i++) {
        struct cagent *a = &h->ag[i];

        if (a->p == NULL) {
            a->restart_at = h->now;
            continue;
        }
        for (k = 0; k < a->nholds; k++)
            schedule(h, i, a->holds[k].killed ? ACT_KILLED : ACT_DONE, &a->holds[k],
                     cu_between(&h->rng, 0, 10));
    }
    for (i = 0; i < N_CLIENTS; i++)
        if (h->cl[i].p == NULL)
            h->cl[i].reconnect_at = h->now;
    deadline = h->now + (uint64_t)cu_ms(15000);
    while (!settled(h)) {
        if (h->now > deadline) {
            char left[512] = "";
            size_t used = 0;
            uint32_t x;

            for (x = 0; x < RING && used < sizeof(left) - 16; x++)
                if (h->ring[x].num != 0)
                    used +=
                        (size_t)snprintf(left + used, sizeof(left) - used, " j%u", h->ring[x].num);
            ch_fail(h, "not settled after %d ms: %u jobs pending:%s; %zu suspects, %zu actions",
                    cu_ms(15000), h->npending, left, h->nsus, h->nact);
        }
        step(h, next_fault);
    }
    /* Jobs of clients that left may still be ending on agents: wait for an empty queue. */
    for (;;) {
        struct cclient *k0 = &h->cl[0];

        k0->queue_seen = false;
        k0->queue_out = true;
        k0->queue_mark = h->next_num - 1;
        tp_send_type(k0->p, ING_CLIENT_GET_QUEUE);
        while (!k0->queue_seen) {
            if (h->now > deadline)
                ch_fail(h, "no BackendGetQueue answer");
            step(h, next_fault);
        }
        if (k0->last_running == 0 && k0->last_waiting == 0)
            break;
        if (h->now > deadline)
            ch_fail(h,
                    "the queue is not empty after everything settled: %u running, %u "
                    "waiting",
                    k0->last_running, k0->last_waiting);
        /* Let the agents' last answers and the kill timeouts happen. */
        {
            uint64_t until = h->now + 50;

            while (h->now < until)
                step(h, next_fault);
        }
    }
}

/* warm_up runs, with no fault, a job of every provided environment from every client and a
 * queue snapshot, and waits until everything settled: what the backend allocates once (pool
 * pages of the jobs' size class, job and environment tables, snapshot buffers, connection
 * buffers) is then part of its idle RSS. */
static void
warm_up(struct chaos *h, uint64_t *next_fault)
{
    uint64_t deadline = h->now + (uint64_t)cu_ms(5000);
    int e, i;

    h->warming = true;
    for (e = 0; e < N_ENVS; e++) {
        bool provided = false;

        for (i = 0; i < N_AGENTS; i++)
            provided |= h->ag[i].slots > 0 && (h->ag[i].envs & (1u << e)) != 0;
        for (i = 0; i < N_CLIENTS && provided; i++)
            submit_env(h, i, e);
    }
    h->cl[0].queue_out = true;
    h->cl[0].queue_mark = h->next_num - 1;
    tp_send_type(h->cl[0].p, ING_CLIENT_GET_QUEUE);
    while (!settled(h)) {
        if (h->now > deadline)
            ch_fail(h, "the warm-up did not settle in %d ms: %u jobs pending", cu_ms(5000),
                    h->npending);
        step(h, next_fault);
    }
    h->warming = false;
    ch_trace(h, "warmed up: %llu jobs", (unsigned long long)h->st.done);
}

/* running_jobs tells whether an agent that the backend keeps registered (not silent, not
 * resyncing, under no suspicion) holds a job it was not asked to kill. */
static bool
running_jobs(const struct chaos *h)
{
    size_t k;
    int i;

    for (i = 0; i < N_AGENTS; i++) {
        const struct cagent *a = &h->ag[i];

        if (a->p == NULL || a->silent || a->resync || a->suspects > 0)
            continue;
        for (k = 0; k < a->nholds; k++)
            if (!a->holds[k].killed)
                return true;
    }
    return false;
}

/* max_jobs bounds the jobs the backend holds at once: at most h->cap of connected clients
 * (the test submits no more), plus the running jobs of clients that left, in slots (at most
 * 4 per agent connection, and an agent's old connection may still be registered next to its
 * new one), plus the waiting jobs of a client that left (at most h->cap), which the backend
 * drops when it reads the close. */
static uint32_t
max_jobs(const struct chaos *h)
{
    return 2 * h->cap + 2 * N_AGENTS * 4;
}

static int
teardown(void **state)
{
    struct chaos *h = the_chaos;
    int i;

    if (h != NULL) {
        for (i = 0; i < N_AGENTS; i++)
            free(h->ag[i].holds);
        free(h->ring);
        free(h->finished);
        free(h->act);
        free(h->qnums);
        free(h->ck.e);
        free(h);
        the_chaos = NULL;
    }
    return tp_teardown(state);
}

TP_TEST(test_chaos_invariants_hold)
{
    struct chaos *h = calloc(1, sizeof(*h));
    const char *env_seed = getenv("ING_CHAOS_SEED"), *env_secs = getenv("ING_CHAOS_SECONDS");
    uint64_t seconds = 10, end, next_fault, next_stuck;
    long rss_idle = -1, rss_end, rss_allowed;
    char ping[32], kill[32], orphan[32];
    int i;
    bool check_rss = !cu_wrapped();

#if defined(ING_SAN) && ING_SAN
    check_rss = false; /* ASan's quarantine holds freed memory: RSS grows by design */
#endif
    assert_non_null(h);
    the_chaos = h;
    h->c = c;
    h->ring = calloc(RING, sizeof(*h->ring));
    h->act = calloc(MAX_ACTIONS, sizeof(*h->act));
    assert_non_null(h->ring);
    assert_non_null(h->act);
    h->seed = env_seed != NULL && *env_seed != '\0' ? strtoull(env_seed, NULL, 10) : DEFAULT_SEED;
    if (env_secs != NULL && *env_secs != '\0')
        seconds = strtoull(env_secs, NULL, 10);
    cu_rng_seed(&h->rng, h->seed);
    h->next_num = 1;

    tp_start(c, "--ping-interval", cu_ms_arg(ping, sizeof(ping), PING_MS), "--ping-max", PING_MAX,
             "--kill-timeout", cu_ms_arg(kill, sizeof(kill), KILL_MS), "--orphan-timeout",
             cu_ms_arg(orphan, sizeof(orphan), ORPHAN_MS), "--retry-lost-jobs", "1",
             seconds > 60 ? "-q" : "-v", NULL);
    h->t0 = h->now = tp_now_ms();
    for (i = 0; i < N_AGENTS; i++)
        agent_up(h, i);
    for (i = 0; i < N_CLIENTS; i++) {
        snprintf(h->cl[i].name, sizeof(h->cl[i].name), "c%d", i);
        client_up(h, i);
    }
    h->cap = 100; /* pending jobs at once: about twice the slots */

    next_fault = h->now;
    warm_up(h, &next_fault);
    rss_idle = cu_rss_kib(c->be.pid);

    end = h->now + seconds * 1000;
    next_stuck = h->now + 1000;
    h->ck.next = h->now + (uint64_t)cu_ms((int)cu_between(&h->rng, 1000, 2000));
    /* Past the end, the load goes on (for a while) until a live agent runs a job it was not
     * asked to kill, which the last checkpoint must then find running. */
    while (h->now < end || h->ck.phase != CK_OFF ||
           (!running_jobs(h) && h->now < end + (uint64_t)cu_ms(5000))) {
        /* None in the last second: the one after the fault phase must find jobs running. */
        if (h->ck.phase == CK_OFF && h->now >= h->ck.next && h->now + 1000 < end)
            ck_begin(h, false);
        step(h, &next_fault);
        if (h->now >= next_stuck) {
            check_stuck(h);
            next_stuck = h->now + 1000;
        }
    }
    /* The faults stop; the jobs on the agents are still running. */
    ck_begin(h, true);
    while (h->ck.phase != CK_OFF)
        step(h, &next_fault);
    settle(h, &next_fault);

    rss_end = cu_rss_kib(c->be.pid);
    rss_allowed = rss_idle + RSS_SLACK_KIB + (long)(max_jobs(h) * RSS_JOB_BYTES / 1024);
    if (check_rss && rss_idle > 0 && rss_end > rss_allowed)
        ch_fail(h,
                "backend RSS %ld KiB after settling, %ld KiB idle: over idle + %d KiB + %d bytes "
                "for each of the %u jobs it may have held at once (%ld KiB)",
                rss_end, rss_idle, RSS_SLACK_KIB, RSS_JOB_BYTES, max_jobs(h), rss_allowed);
    for (i = 0; i < N_CLIENTS; i++)
        cu_roundtrip(h->cl[i].p, cu_ms(1000));
    if (!cu_backend_alive(c))
        ch_fail(h, "the backend is not running any more");
    if (h->st.done == 0 || h->st.agent_drops == 0 || h->st.queue_checks == 0 ||
        h->st.final_running == 0)
        ch_fail(h,
                "the run exercised too little: %llu results, %llu agents dropped, %llu "
                "queue checks, %llu running jobs compared after the fault phase",
                (unsigned long long)h->st.done, (unsigned long long)h->st.agent_drops,
                (unsigned long long)h->st.queue_checks, (unsigned long long)h->st.final_running);
    if (getenv("ING_CHAOS_STATS") != NULL)
        print_message("chaos seed %llu, %llu s: %llu jobs, %llu results, %llu kills, %llu "
                      "zombies, %llu agent resets, %llu closes, %llu dropped (%llu not silent), "
                      "%llu hellos again, %llu client drops, %llu queue checks, %llu forged, "
                      "%llu stray; %llu busy-slot checkpoints: %llu agents, %llu running jobs "
                      "(%llu after the fault phase), %llu dispatched after a snapshot, %llu "
                      "given up after a kill; RSS %ld KiB idle, %ld KiB at the end (%s %ld)\n",
                      (unsigned long long)h->seed, (unsigned long long)seconds,
                      (unsigned long long)h->st.submitted, (unsigned long long)h->st.done,
                      (unsigned long long)h->st.kills, (unsigned long long)h->st.zombies,
                      (unsigned long long)h->st.agent_resets,
                      (unsigned long long)h->st.agent_closes, (unsigned long long)h->st.agent_drops,
                      (unsigned long long)h->st.unexpected_drops,
                      (unsigned long long)h->st.rehellos, (unsigned long long)h->st.client_drops,
                      (unsigned long long)h->st.queue_checks, (unsigned long long)h->st.forged,
                      (unsigned long long)h->st.stray, (unsigned long long)h->st.busy_checks,
                      (unsigned long long)h->st.busy_agents, (unsigned long long)h->st.busy_running,
                      (unsigned long long)h->st.final_running, (unsigned long long)h->st.busy_after,
                      (unsigned long long)h->st.busy_timed_out, rss_idle, rss_end,
                      check_rss ? "at most" : "not checked; would be at most", rss_allowed);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chaos_invariants_hold, tp_setup, teardown),
    };

    return cmocka_run_group_tests_name("chaos", tests, NULL, NULL);
}
