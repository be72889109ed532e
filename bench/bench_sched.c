/* SPDX-License-Identifier: MIT */
/* bench_sched.c: the backend's scheduler driven directly (struct backend, src/backend.h) with
 * be_ops callbacks that do nothing but note which job went to which agent. One line per case:
 *   name iterations ns/op
 *
 * sched_submit_1M_wait: 1,000,000 ClientNewJob into one environment with no agent (heap
 *   push; priorities 0/1 at random), from an empty backend.
 * sched_kill_1M_wait_random: ClientKillJob of those waiting jobs in a random order (heap
 *   remove).
 * sched_drain_1M_wait: an agent with 64 slots works off 1,000,000 waiting jobs: one
 *   AgentJobStarted + AgentJobDone + the dispatch it triggers (heap pop).
 * sched_cycle_eE_aG_wW: one submit -> dispatch -> started -> done cycle, with E environments
 *   (1, 100, 10,000), G agents (1, 100, 1,000) of 64 slots each announcing min(4, E)
 *   environments, and W jobs waiting: 0 (32 jobs running) or 1M (every slot busy).
 * sched_cycle_eE_aG_w0_p1M: the 0-waiting cycle beside 1,000,000 jobs parked in an
 *   environment no agent provides (as many jobs in the id table as with 1M waiting, no deep
 *   queue), at 1 x 1 and 10,000 x 1,000.
 * sched_cycle_eE_aG_wW_fairK: the cycle with --fair-share launcher and K launchers (1, 100,
 *   10,000), each job's launcher drawn at random (every key seen in the warm-up: no record
 *   is made in the timed part but by chance).
 * sched_pair_eE_aG_wW_{off,fairK}: two of those cycles in one process, on two backends, timed
 *   in alternating slices of 1,024 cycles (off against 100 keys at 1 x 1 and 100 x 1,000;
 *   1 key against 10,000; off against 1 key, 1 key against 100), and a "# ... = ratio"
 *   line: the ratio holds on a loaded machine.
 * sched_job_info_1M[_fairK]: be_job_info (ClientGetJobInfo's position and ETA) of random
 *   waiting jobs among 1,000,000 in one environment (priorities 0/1 at random), without fair
 *   share or with K launcher keys.
 * sched_job_info_1M_shared2[_fair100]: the same with the million jobs in two environments
 *   that the same 10 agents provide (all 640 slots busy): the position counts both.
 * mem_bytes_per_queued_job_1M[_fairK]: the growth of the resident set per job while those
 *   1,000,000 jobs are queued (body of 253 bytes included), printed before the case.
 * sched_get_queue_N_eE_lL: be_client_get_queue with N jobs waiting in E environments, the
 *   BackendGetQueue encoded as the server does, listing at most L waiting jobs (the default
 *   --queue-list-max 10000, or "all": --queue-list-max 0).
 *
 * Jobs are those of bench/loadgen.c (128-byte inputdata, a 253-byte ClientNewJob body).
 * Fixed seeds; each case warms up, then CLOCK_MONOTONIC is read around the timed loop only.
 * The whole program runs in about 20 s (mostly filling the 1M queues) and needs about 1 GB.
 * Optional argument: a case-name prefix to run only those cases (e.g. "sched_cycle"), or a
 * name and '$' for that case alone (e.g. 'sched_cycle_e1_a1_w1M_fair1$').
 * ING_BENCH_CPU=1 times on the process's CPU clock instead of the monotonic one (a shared,
 * loaded machine: the time other processes ran does not count). ING_BENCH_TIMED_MS=N times
 * each cycle case for N ms instead of 150 (a profile of the cycle alone, not the filling). */
#include "backend.h"
#include "common.h"
#include "log.h"

static uint64_t timed_ns = 150000000ull; /* timed part of a cycle case (ING_BENCH_TIMED_MS) */
#define WARM_CYCLES 10000
#define INFLIGHT 32 /* running jobs in the 0-waiting cycle cases, whatever the agents */
#define MILLION 1000000u
#define SLOTS 64

struct bench;

/* The peer handle the backend gets for an agent. */
struct bagent {
    struct bench *b;
    struct be_agent *a;
};

/* A job dispatched and not yet answered. */
struct running {
    struct bagent *ag;
    uint8_t id[BC_TOKLEN];
};

struct bench {
    struct backend be;
    struct be_client *client;
    struct bagent *agents;
    uint32_t nagents;
    struct bagent reg;    /* 0 slots, announces every environment */
    struct running *ring; /* dispatched jobs, oldest first */
    size_t rcap, rhead, rlen;
    struct bc_tmpl job; /* ClientNewJob with its decoded views */
    struct ing_msg jm;
    size_t id_off, env_off;
    struct bc_tmpl res; /* AgentJobDone */
    struct ing_msg rm;
    size_t res_id_off;
    uint32_t *covered; /* environments some agent with slots provides */
    uint32_t ncovered;
    uint64_t next_id, seed;
    bool encode; /* encode BackendGetQueue into scratch, as conn_send does */
    uint8_t *scratch;
    size_t scap;
    uint64_t sent;
    uint32_t keys;     /* fair_keys at setup */
    struct bench *self; /* the client's peer handle: points here */
};

static const char *only; /* run only cases starting with this */
static uint32_t fair_keys; /* > 0: setup turns fair share on; job_next draws a launcher */
static char (*fair_names)[8];
static volatile uint64_t sink;

static bool cpu_clock; /* ING_BENCH_CPU=1: time on the process's CPU clock */

/* now_ns reads CLOCK_MONOTONIC, or with ING_BENCH_CPU=1 the process's CPU time: on a loaded
 * machine the time the benchmark was not running then does not count (caches shared with
 * the other processes still do). */
static uint64_t
now_ns(void)
{
    if (!cpu_clock)
        return bc_now_ns();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool
wanted(const char *name)
{
    size_t n = only != NULL ? strlen(only) : 0;
    if (n > 0 && only[n - 1] == '$') /* "NAME$": that case alone */
        return strlen(name) == n - 1 && strncmp(name, only, n - 1) == 0;
    return only == NULL || strncmp(name, only, n) == 0;
}

static void
line(const char *name, uint64_t iters, uint64_t ns)
{
    printf("%s %llu %.1f\n", name, (unsigned long long)iters, (double)ns / (double)iters);
    fflush(stdout);
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_sched: %s\n", what);
    exit(1);
}

/* ---------------------------------------------------------------------------------------- */
/* Callbacks                                                                                 */

static void
cb_send(void *peer, const struct ing_msg *m)
{
    struct bench *b = *(struct bench **)peer;
    b->sent++;
    if (!b->encode || m->type != ING_BACKEND_GET_QUEUE)
        return;
    size_t n = ing_msg_size(m);
    if (n > b->scap) {
        free(b->scratch);
        b->scratch = malloc(n);
        b->scap = b->scratch != NULL ? n : 0;
    }
    if (b->scratch == NULL || ing_msg_encode(m, b->scratch, n) != (ssize_t)n)
        die("cannot encode BackendGetQueue");
    sink += b->scratch[n - 1];
}

static void
cb_relay(void *peer, uint8_t type, const uint8_t *body, size_t len)
{
    struct bench *b = *(struct bench **)peer;
    b->sent++;
    if (type != ING_BACKEND_NEW_JOB)
        return;
    if (len < 4 + BC_TOKLEN || get_u32be(body) != BC_TOKLEN)
        die("unexpected job id");
    if (b->rlen == b->rcap) {
        size_t ncap = b->rcap ? b->rcap * 2 : 1024;
        struct running *nr = malloc(ncap * sizeof(*nr));
        if (nr == NULL)
            die("out of memory");
        for (size_t i = 0; i < b->rlen; i++)
            nr[i] = b->ring[(b->rhead + i) % b->rcap];
        free(b->ring);
        b->ring = nr;
        b->rcap = ncap;
        b->rhead = 0;
    }
    struct running *r = &b->ring[(b->rhead + b->rlen++) % b->rcap];
    r->ag = peer;
    memcpy(r->id, body + 4, BC_TOKLEN);
}

/* ---------------------------------------------------------------------------------------- */
/* Setup                                                                                     */

static void
env_name(char out[8], uint32_t e)
{
    out[0] = 'e';
    for (int i = 6; i >= 1; i--, e /= 10)
        out[i] = (char)('0' + e % 10);
    out[7] = '\0';
}

/* announce registers ag with slots slots and the environments first, first + 1, ... (mod
 * nenv), count of them. */
static void
announce(struct bench *b, struct bagent *ag, uint32_t slots, uint32_t first, uint32_t count,
         uint32_t nenv)
{
    struct ing_mp_writer w;
    char name[8], why[200];
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, count);
    for (uint32_t k = 0; k < count; k++) {
        env_name(name, (first + k) % nenv);
        ing_mp_put_cstr(&w, name);
        ing_mp_put_map(&w, 2);
        ing_mp_put_cstr(&w, "id");
        ing_mp_put_cstr(&w, "sha256:bench");
        ing_mp_put_cstr(&w, "created");
        ing_mp_put_int(&w, 1700000000);
    }
    struct ing_agent_hello h;
    h.friendly_name = (struct ing_view){"bench", 5};
    h.slots = slots;
    h.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
    ag->b = b;
    ag->a = be_agent_new(&b->be, ag);
    if (w.err != 0 || ag->a == NULL || be_agent_hello(&b->be, ag->a, &h, why, sizeof(why)) != 0)
        die("agent hello refused");
    ing_mp_writer_fini(&w);
}

/* setup makes a backend with nenv environments (all announced by a 0-slot agent), nagents
 * agents of SLOTS slots announcing min(4, nenv) environments each, and one client. */
static void
setup(struct bench *b, uint32_t nenv, uint32_t nagents)
{
    struct be_config cfg;
    struct be_ops ops = {cb_send, cb_relay, NULL};
    memset(b, 0, sizeof(*b));
    b->self = b;
    be_config_default(&cfg);
    cfg.orphan_timeout_ms = 0;
    cfg.fair_mode = fair_keys > 0 ? FAIR_LAUNCHER : FAIR_NONE;
    b->keys = fair_keys;
    cfg.max_waiting = cfg.max_waiting_per_client = 100u * MILLION;
    if (be_init(&b->be, &cfg, &ops) != 0)
        die("be_init");
    b->be.now_ms = 1000;
    b->be.wall_s = 1700000000;
    b->seed = 0x243f6a8885a308d3ull;
    size_t body_len;
    if (bc_job_tmpl(&b->job, 128, 0, "e000000", &body_len) != 0 ||
        ing_msg_decode(b->job.frame, b->job.len, ING_MAX_FRAME_DEFAULT, &b->jm) <= 0)
        die("job template");
    b->id_off = (size_t)((const uint8_t *)b->jm.u.new_job.job.job_id.p - b->job.frame);
    b->env_off = (size_t)((const uint8_t *)b->jm.u.new_job.job.environment.p - b->job.frame);
    uint8_t id[BC_TOKLEN];
    bc_put_token(id, 0, 0);
    struct ing_msg d;
    memset(&d, 0, sizeof(d));
    d.type = ING_AGENT_JOB_DONE;
    bc_result_fill(&d.u.result, (struct ing_view){(const char *)id, BC_TOKLEN}, "success");
    b->res.frame = bc_encode(&d, &b->res.len);
    if (b->res.frame == NULL ||
        ing_msg_decode(b->res.frame, b->res.len, ING_MAX_FRAME_DEFAULT, &b->rm) <= 0)
        die("result template");
    b->res_id_off = (size_t)((const uint8_t *)b->rm.u.result.job_id.p - b->res.frame);
    /* Every environment exists (announced), served or not. */
    if (nenv > 1)
        announce(b, &b->reg, 0, 0, nenv, nenv);
    uint32_t per = nenv < 4 ? nenv : 4;
    b->agents = calloc(nagents ? nagents : 1, sizeof(*b->agents));
    bool *cov = calloc(nenv, sizeof(*cov));
    b->covered = malloc(nenv * sizeof(*b->covered));
    if (b->agents == NULL || cov == NULL || b->covered == NULL)
        die("out of memory");
    for (uint32_t i = 0; i < nagents; i++) {
        announce(b, &b->agents[i], SLOTS, i * per % nenv, per, nenv);
        for (uint32_t k = 0; k < per; k++)
            cov[(i * per + k) % nenv] = true;
    }
    b->nagents = nagents;
    for (uint32_t e = 0; e < nenv; e++)
        if (cov[e] || nagents == 0)
            b->covered[b->ncovered++] = e;
    free(cov);
    b->client = be_client_new(&b->be, &b->self);
    if (b->client == NULL)
        die("client");
    be_client_hello(&b->be, b->client);
}

static void
teardown(struct bench *b)
{
    be_fini(&b->be);
    free(b->agents);
    free(b->covered);
    free(b->ring);
    free(b->job.frame);
    free(b->res.frame);
    free(b->scratch);
}

/* ---------------------------------------------------------------------------------------- */
/* Operations                                                                                */

/* job_next makes the job template the next ClientNewJob: the next id, priority prio, a
 * random covered environment (env < 0) or env. */
static inline void
job_next(struct bench *b, int64_t prio, int64_t env)
{
    uint8_t *f = b->job.frame;
    uint32_t e = env >= 0 ? (uint32_t)env : b->covered[bc_rand(&b->seed) % b->ncovered];
    bc_put_token(f + b->id_off, 0, b->next_id++);
    char name[8];
    env_name(name, e);
    memcpy(f + b->env_off, name, 7);
    put_u64be(f + ING_HDR_LEN, (uint64_t)prio);
    b->jm.u.new_job.priority = prio;
    if (b->keys > 0) /* the key is read from the decoded view (the body keeps "bench") */
        b->jm.u.new_job.launcher =
            (struct ing_view){fair_names[bc_rand(&b->seed) % b->keys], 7};
}

/* submit sends one ClientNewJob (see job_next). */
static inline void
submit(struct bench *b, int64_t prio, int64_t env)
{
    job_next(b, prio, env);
    be_client_new_job(&b->be, b->client, b->job.frame + ING_HDR_LEN, b->job.len - ING_HDR_LEN,
                      &b->jm.u.new_job);
}

/* complete answers the oldest dispatched job: AgentJobStarted then AgentJobDone (which may
 * dispatch another job to the freed slot). */
static inline void
complete(struct bench *b)
{
    if (b->rlen == 0)
        die("nothing to complete");
    struct running r = b->ring[b->rhead];
    b->rhead = (b->rhead + 1) % b->rcap;
    b->rlen--;
    be_agent_started(&b->be, r.ag->a, (struct ing_view){(const char *)r.id, BC_TOKLEN});
    memcpy(b->res.frame + b->res_id_off, r.id, BC_TOKLEN);
    be_agent_done(&b->be, r.ag->a, b->res.frame + ING_HDR_LEN, b->res.len - ING_HDR_LEN,
                  &b->rm.u.result);
}

/* The server's look-ahead (server.c hints_scan, hint_take), modelled: the frames of a read
 * that carry job ids are scanned AHEAD at a time, each id hashed and its id-table line
 * prefetched, before the first of them is handled with its hash; without look-ahead each
 * frame's id is hashed as it is handled. Either way the _h handlers get the hash. */
#define AHEAD 16
enum bkind { BK_SUBMIT, BK_STARTED, BK_DONE };
struct bframe {
    enum bkind kind;
    uint8_t id[BC_TOKLEN];
    struct bagent *ag; /* started, done */
};

static void
frames_ahead(struct bench *b, const struct bframe *f, int n)
{
    for (int w = 0; w < n; w += AHEAD) {
        int m = n - w < AHEAD ? n - w : AHEAD;
        uint64_t h[AHEAD];
        bool ahead = be_lookahead(&b->be); /* as server.c: only with a large table */
        for (int k = 0; k < m && ahead; k++) {
            h[k] = be_id_hash((struct ing_view){(const char *)f[w + k].id, BC_TOKLEN});
            be_prefetch_id(&b->be, h[k]);
        }
        for (int k = 0; k < m; k++) {
            const struct bframe *x = &f[w + k];
            struct ing_view id = {(const char *)x->id, BC_TOKLEN};
            uint64_t idh = ahead ? h[k] : be_id_hash(id);
            switch (x->kind) {
            case BK_SUBMIT:
                job_next(b, 0, -1);
                be_client_new_job_h(&b->be, b->client, b->job.frame + ING_HDR_LEN,
                                    b->job.len - ING_HDR_LEN, &b->jm.u.new_job, idh);
                break;
            case BK_STARTED:
                be_agent_started_h(&b->be, x->ag->a, id, idh);
                break;
            case BK_DONE:
                memcpy(b->res.frame + b->res_id_off, x->id, BC_TOKLEN);
                be_agent_done_h(&b->be, x->ag->a, b->res.frame + ING_HDR_LEN,
                                b->res.len - ING_HDR_LEN, &b->rm.u.result, idh);
                break;
            }
        }
    }
}

/* cycles_ahead runs AHEAD cycles as the server handles them with its look-ahead: the
 * client's AHEAD ClientNewJob in one read, then the agents' AHEAD AgentJobStarted +
 * AgentJobDone pairs (answering the oldest dispatched jobs) in reads of AHEAD frames. */
static void
cycles_ahead(struct bench *b)
{
    struct bframe f[2 * AHEAD];
    for (int i = 0; i < AHEAD; i++) {
        f[i].kind = BK_SUBMIT;
        bc_put_token(f[i].id, 0, b->next_id + (uint64_t)i);
    }
    frames_ahead(b, f, AHEAD);
    if (b->rlen < AHEAD)
        die("nothing to complete");
    for (int i = 0; i < AHEAD; i++) {
        struct running r = b->ring[b->rhead];
        b->rhead = (b->rhead + 1) % b->rcap;
        b->rlen--;
        f[2 * i].kind = BK_STARTED;
        f[2 * i + 1].kind = BK_DONE;
        f[2 * i].ag = f[2 * i + 1].ag = r.ag;
        memcpy(f[2 * i].id, r.id, BC_TOKLEN);
        memcpy(f[2 * i + 1].id, r.id, BC_TOKLEN);
    }
    frames_ahead(b, f, 2 * AHEAD);
}

/* ---------------------------------------------------------------------------------------- */
/* Cases                                                                                     */

static void
case_heap(void)
{
    struct bench b;
    if (!wanted("sched_submit_1M_wait") && !wanted("sched_kill_1M_wait_random") &&
        !wanted("sched_drain_1M_wait"))
        return;
    setup(&b, 1, 0);
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < MILLION; i++)
        submit(&b, (int64_t)(bc_rand(&b.seed) & 1), 0);
    uint64_t t1 = now_ns();
    if (b.be.n_waiting != MILLION)
        die("not all jobs wait");
    line("sched_submit_1M_wait", MILLION, t1 - t0);
    /* Kill them in a random order. */
    uint64_t *ids = malloc(MILLION * sizeof(*ids));
    if (ids == NULL)
        die("out of memory");
    for (uint32_t i = 0; i < MILLION; i++)
        ids[i] = i;
    for (uint32_t i = MILLION - 1; i > 0; i--) {
        uint32_t k = (uint32_t)(bc_rand(&b.seed) % (i + 1));
        uint64_t x = ids[i];
        ids[i] = ids[k];
        ids[k] = x;
    }
    uint8_t id[BC_TOKLEN];
    struct ing_view v = {(const char *)id, BC_TOKLEN};
    t0 = now_ns();
    for (uint32_t i = 0; i < MILLION; i++) {
        bc_put_token(id, 0, ids[i]);
        be_client_kill(&b.be, b.client, v);
    }
    t1 = now_ns();
    if (b.be.n_waiting != 0)
        die("kills missed");
    line("sched_kill_1M_wait_random", MILLION, t1 - t0);
    free(ids);
    /* Fill again, then one agent works the queue off. */
    for (uint32_t i = 0; i < MILLION; i++)
        submit(&b, (int64_t)(bc_rand(&b.seed) & 1), 0);
    struct bagent ag;
    announce(&b, &ag, SLOTS, 0, 1, 1);
    t0 = now_ns();
    uint64_t n = 0;
    while (b.rlen > 0) {
        complete(&b);
        n++;
    }
    t1 = now_ns();
    if (n != MILLION || b.be.n_waiting != 0)
        die("drain missed jobs");
    line("sched_drain_1M_wait", n, t1 - t0);
    teardown(&b);
}

/* timed_ahead times cycles_ahead (after a warm-up) for timed_ns; *iters = cycles run. */
static uint64_t
timed_ahead(struct bench *b, uint64_t *iters)
{
    for (int i = 0; i < WARM_CYCLES / AHEAD; i++)
        cycles_ahead(b);
    uint64_t n = 0, t0 = now_ns(), t;
    do {
        for (int i = 0; i < 1024 / AHEAD; i++)
            cycles_ahead(b);
        n += 1024;
        t = now_ns() - t0;
    } while (t < timed_ns);
    *iters = n;
    return t;
}

/* timed_cycles times submit + complete cycles (after a warm-up) for timed_ns, then the
 * same as the server handles reads (timed_ahead), and prints both lines. Before, after and
 * in between, waiting jobs wait and running ones run. */
static void
timed_cycles(struct bench *b, const char *name, const char *name_ahead, uint64_t waiting,
             size_t running)
{
    for (int i = 0; i < WARM_CYCLES; i++) {
        submit(b, 0, -1);
        complete(b);
    }
    uint64_t iters = 0, t0 = now_ns(), t;
    do {
        for (int i = 0; i < 1024; i++) {
            submit(b, 0, -1);
            complete(b);
        }
        iters += 1024;
        t = now_ns() - t0;
    } while (t < timed_ns);
    if (b->be.n_waiting != waiting || b->rlen != running)
        die("a cycle case changed its numbers of waiting or running jobs");
    line(name, iters, t);
    t = timed_ahead(b, &iters);
    if (b->be.n_waiting != waiting || b->rlen != running)
        die("a cycle case changed its numbers of waiting or running jobs");
    line(name_ahead, iters, t);
}

static void
case_cycle(uint32_t nenv, uint32_t nagents)
{
    char name0[80], name1[80], name0a[96], name1a[96], sfx[16] = "";
    struct bench b;
    if (fair_keys > 0)
        snprintf(sfx, sizeof(sfx), "_fair%u", fair_keys);
    snprintf(name0, sizeof(name0), "sched_cycle_e%u_a%u_w0%s", nenv, nagents, sfx);
    snprintf(name1, sizeof(name1), "sched_cycle_e%u_a%u_w1M%s", nenv, nagents, sfx);
    snprintf(name0a, sizeof(name0a), "%s_ahead%d", name0, AHEAD);
    snprintf(name1a, sizeof(name1a), "%s_ahead%d", name1, AHEAD);
    if (!wanted(name0) && !wanted(name1))
        return;
    setup(&b, nenv, nagents);
    /* 0 waiting: INFLIGHT jobs run; a cycle submits one (dispatched at once) and answers the
     * oldest. */
    while (b.rlen < INFLIGHT)
        submit(&b, 0, -1);
    if (wanted(name0))
        timed_cycles(&b, name0, name0a, 0, INFLIGHT);
    /* 1M waiting: every slot busy and a million jobs queued; a cycle submits one (queued)
     * and answers the oldest running one, whose slot takes the best waiting job. */
    if (!wanted(name1)) {
        teardown(&b);
        return;
    }
    uint32_t slots = nagents * SLOTS;
    while (b.rlen < slots)
        submit(&b, 0, -1);
    while (b.be.n_waiting < MILLION)
        submit(&b, 0, -1);
    timed_cycles(&b, name1, name1a, MILLION, slots);
    teardown(&b);
}

/* case_parked: the 0-waiting cycle of case_cycle with a million jobs parked beside it, in an
 * environment no agent provides. The id table then holds as many jobs as in the 1M-waiting
 * case while no queue that dispatch reads is deep: w0 -> w0_p1M is what a large table costs,
 * w0_p1M -> w1M what a deep queue costs. */
#define PARKED_ENV 999999
static void
case_parked(uint32_t nenv, uint32_t nagents)
{
    char name[80], namea[96];
    struct bench b;
    snprintf(name, sizeof(name), "sched_cycle_e%u_a%u_w0_p1M", nenv, nagents);
    snprintf(namea, sizeof(namea), "%s_ahead%d", name, AHEAD);
    if (!wanted(name))
        return;
    setup(&b, nenv, nagents);
    for (uint32_t i = 0; i < MILLION; i++)
        submit(&b, 0, PARKED_ENV);
    if (b.be.n_waiting != MILLION || b.rlen != 0)
        die("the parked jobs did not wait");
    while (b.rlen < INFLIGHT)
        submit(&b, 0, -1);
    timed_cycles(&b, name, namea, MILLION, INFLIGHT);
    teardown(&b);
}

static void
case_queue(uint32_t nwait, uint32_t nenv, uint32_t list_max, int reps)
{
    char name[80];
    struct bench b;
    snprintf(name, sizeof(name), "sched_get_queue_%s_e%u_l%s",
             nwait == MILLION  ? "1M"
             : nwait == 100000 ? "100k"
                               : "n",
             nenv, list_max == 0 ? "all" : list_max == 10000 ? "10k" : "n");
    if (!wanted(name))
        return;
    setup(&b, nenv, 0);
    b.be.cfg.queue_list_max = list_max;
    for (uint32_t i = 0; i < nwait; i++)
        submit(&b, (int64_t)(bc_rand(&b.seed) & 1), (int64_t)(i % nenv));
    b.encode = true;
    be_client_get_queue(&b.be, b.client); /* warm-up: scratch buffers grow once */
    uint64_t t0 = now_ns();
    for (int i = 0; i < reps; i++)
        be_client_get_queue(&b.be, b.client);
    uint64_t t1 = now_ns();
    line(name, (uint64_t)reps, t1 - t0);
    teardown(&b);
}

/* time_info times be_job_info of random waiting jobs among the million of ids first,
 * first + 1, ... and prints the line. */
static void
time_info(struct bench *b, const char *name, uint64_t first)
{
    enum { QUERIES = 200000 };
    uint8_t id[BC_TOKLEN];
    struct be_job_info in;
    uint64_t sum = 0, t0 = now_ns();
    for (int i = 0; i < QUERIES; i++) {
        bc_put_token(id, 0, first + bc_rand(&b->seed) % MILLION);
        if (be_job_info(&b->be, (struct ing_view){(const char *)id, BC_TOKLEN}, &in) != 0 ||
            in.state != BE_JOB_WAITING)
            die("a waiting job unknown");
        sum += in.position;
    }
    uint64_t t = now_ns() - t0;
    sink += sum;
    line(name, QUERIES, t);
}

/* rss_bytes is the process's resident set (/proc/self/statm), 0 if unknown. */
static uint64_t
rss_bytes(void)
{
    unsigned long size = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* case_info: be_job_info among a million waiting jobs (priorities 0/1 at random), with K
 * launcher keys (0: fair share off): in one environment no agent serves (and the memory they
 * take), or shared: in two environments that 10 agents (64 slots each, all busy) both
 * provide, so that the position counts both. */
static void
case_info(uint32_t keys, bool shared)
{
    char name[80];
    struct bench b;
    snprintf(name, sizeof(name), "sched_job_info_1M%s%s%.0u", shared ? "_shared2" : "",
             keys ? "_fair" : "", keys);
    if (!wanted(name))
        return;
    fair_keys = keys;
    setup(&b, shared ? 2 : 1, shared ? 10 : 0);
    while (b.rlen < b.nagents * SLOTS)
        submit(&b, 0, -1);
    uint64_t first = b.next_id, rss0 = rss_bytes();
    for (uint32_t i = 0; i < MILLION; i++)
        submit(&b, (int64_t)(bc_rand(&b.seed) & 1), shared ? -1 : 0);
    if (b.be.n_waiting != MILLION || b.rlen != b.nagents * SLOTS)
        die("the jobs did not wait");
    if (!shared) {
        /* Memory: the resident set's growth per queued job, body included (the job's header,
         * its body, its id-table entry, its order statistics). */
        char mname[80];
        snprintf(mname, sizeof(mname), "mem_bytes_per_queued_job_1M%s%.0u",
                 keys ? "_fair" : "", keys);
        printf("%s %u %.1f\n", mname, MILLION, (double)(rss_bytes() - rss0) / MILLION);
    }
    time_info(&b, name, first);
    teardown(&b);
    fair_keys = 0;
}

/* fill_cycle readies b for the cycle: INFLIGHT jobs running (waiting 0), or every slot busy
 * and a million jobs waiting. */
static void
fill_cycle(struct bench *b, bool million)
{
    if (!million) {
        while (b->rlen < INFLIGHT)
            submit(b, 0, -1);
        return;
    }
    while (b->rlen < b->nagents * SLOTS)
        submit(b, 0, -1);
    while (b->be.n_waiting < MILLION)
        submit(b, 0, -1);
}

/* case_pair: the cycle of case_cycle on two backends in one process, keys_a and keys_b fair
 * share keys (0: off), timed in alternating slices of 1,024 cycles: the machine's load
 * drifts alike for both, so their ratio holds on a shared machine where two runs differ by
 * more than the ratio. Prints each one's ns per cycle and the ratio b / a. */
static void
case_pair(uint32_t nenv, uint32_t nagents, bool million, uint32_t keys_a, uint32_t keys_b)
{
    char name[96], na[128], nb[128];
    snprintf(name, sizeof(name), "sched_pair_e%u_a%u_w%s", nenv, nagents, million ? "1M" : "0");
    if (!wanted(name))
        return;
    snprintf(na, sizeof(na), "%s_%s%.0u", name, keys_a ? "fair" : "off", keys_a);
    snprintf(nb, sizeof(nb), "%s_%s%.0u", name, keys_b ? "fair" : "off", keys_b);
    static struct bench b[2];
    uint32_t keys[2] = {keys_a, keys_b};
    for (int x = 0; x < 2; x++) {
        fair_keys = keys[x];
        setup(&b[x], nenv, nagents);
        fill_cycle(&b[x], million);
        for (int i = 0; i < WARM_CYCLES; i++) {
            submit(&b[x], 0, -1);
            complete(&b[x]);
        }
    }
    fair_keys = 0;
    uint64_t t[2] = {0, 0}, iters = 0;
    while (t[0] + t[1] < 4 * timed_ns) {
        for (int x = 0; x < 2; x++) {
            uint64_t t0 = now_ns();
            for (int i = 0; i < 1024; i++) {
                submit(&b[x], 0, -1);
                complete(&b[x]);
            }
            t[x] += now_ns() - t0;
        }
        iters += 1024;
    }
    line(na, iters, t[0]);
    line(nb, iters, t[1]);
    printf("# %s: %s / %s = %.3f\n", name, nb + strlen(name) + 1, na + strlen(name) + 1,
           (double)t[1] / (double)t[0]);
    teardown(&b[0]);
    teardown(&b[1]);
}

int
main(int argc, char **argv)
{
    static const uint32_t envs[] = {1, 100, 10000};
    static const uint32_t agents[] = {1, 100, 1000};
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: bench_sched [CASE_PREFIX]\n");
        return 2;
    }
    only = argc == 2 ? argv[1] : NULL;
    const char *cpu = getenv("ING_BENCH_CPU");
    cpu_clock = cpu != NULL && strcmp(cpu, "1") == 0;
    const char *tms = getenv("ING_BENCH_TIMED_MS");
    if (tms != NULL && atoi(tms) > 0)
        timed_ns = (uint64_t)atoi(tms) * 1000000u;
    log_level_max = LOG_ERR;
    printf("# name iterations ns/op\n");
    case_heap();
    for (size_t e = 0; e < 3; e++)
        for (size_t a = 0; a < 3; a++)
            case_cycle(envs[e], agents[a]);
    /* Fair share: 100 keys against off at 1 x 1 and 100 x 1,000; 1 against 10,000 keys. */
    static const uint32_t nkeys[] = {100, 1, 10000};
    fair_names = malloc(10000 * sizeof(*fair_names));
    if (fair_names == NULL)
        die("out of memory");
    for (uint32_t k = 0; k < 10000; k++)
        snprintf(fair_names[k], sizeof(fair_names[k]), "k%06u", k);
    for (size_t k = 0; k < 3; k++) {
        fair_keys = nkeys[k];
        case_cycle(1, 1);
        if (nkeys[k] == 100)
            case_cycle(100, 1000);
    }
    fair_keys = 0;
    /* The same ratios, each measured in one run (two backends, alternating slices). */
    for (int w = 0; w < 2; w++) {
        case_pair(1, 1, w, 0, 100);
        case_pair(100, 1000, w, 0, 100);
        case_pair(1, 1, w, 1, 10000);
        case_pair(1, 1, w, 0, 1); /* what fair share costs with one key, then with 100 */
        case_pair(1, 1, w, 1, 100);
    }
    for (int shared = 0; shared < 2; shared++) {
        case_info(0, shared);
        case_info(100, shared);
    }
    free(fair_names);
    case_parked(1, 1);
    case_parked(10000, 1000);
    case_queue(100000, 1, 10000, 50);
    case_queue(100000, 100, 10000, 50);
    case_queue(MILLION, 1, 10000, 50);
    case_queue(100000, 1, 0, 20);
    case_queue(100000, 100, 0, 20);
    case_queue(MILLION, 1, 0, 3);
    return 0;
}
