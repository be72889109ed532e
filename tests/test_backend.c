/* SPDX-License-Identifier: MIT */
/* test_backend.c: the backend state machine with mock peers and an injected clock: the
 * scheduling rules (reference §3.4.2, §6 scenarios at unit level), kills, timeouts, agent
 * loss, client loss, and a seeded random walk that checks every invariant after each step
 * and that every accepted job gets exactly one result. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bytes.h"
#include "inginious/mp.h"
#include "inginious/proto.h"
#include "log.h"

/* A mock peer records what the backend sends it. */
struct rec {
    uint8_t type;
    char job[64];
    char kind[32];
    char text[128];
    char state[32];
};

struct mpeer {
    struct rec log[4096];
    size_t n, seen;
};

static struct mpeer peers[64];
static bool quiet_peers; /* bulk tests: the mocks only count what they are sent */
static size_t quiet_count;

/* slow is ING_SLOW (at least 1): valgrind stretches times and shrinks bulk counts. */
static unsigned
slow(void)
{
    const char *v = getenv("ING_SLOW");
    int n = v != NULL ? atoi(v) : 1;
    return n > 1 ? (unsigned)n : 1;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
view_copy(char *dst, size_t cap, struct ing_view v)
{
    size_t n = v.p == NULL ? 0 : (v.len < cap - 1 ? v.len : cap - 1);
    memcpy(dst, v.p == NULL ? "" : v.p, n);
    dst[n] = '\0';
}

static void
mock_send(void *peer, const struct ing_msg *m)
{
    struct mpeer *p = peer;
    if (quiet_peers) {
        quiet_count++;
        return;
    }
    assert_true(p->n < 4096);
    struct rec *r = &p->log[p->n++];
    memset(r, 0, sizeof(*r));
    r->type = m->type;
    if (m->type == ING_BACKEND_JOB_DONE) {
        view_copy(r->job, sizeof(r->job), m->u.result.job_id);
        view_copy(r->kind, sizeof(r->kind), m->u.result.result_kind);
        view_copy(r->text, sizeof(r->text), m->u.result.result_text);
        view_copy(r->state, sizeof(r->state), m->u.result.state);
    } else if (m->type == ING_BACKEND_KILL_JOB) {
        view_copy(r->job, sizeof(r->job), m->u.kill.job_id);
        view_copy(r->state, sizeof(r->state), m->u.kill.state);
    } else if (m->type == ING_BACKEND_JOB_STARTED) {
        view_copy(r->job, sizeof(r->job), m->u.ref.job_id);
    } else if (m->type == ING_BACKEND_GET_QUEUE) {
        snprintf(r->text, sizeof(r->text), "%u/%u", m->u.queue.n_running, m->u.queue.n_waiting);
        /* the waiting ids in order, comma separated, into kind/state is not needed */
    }
}

static void
mock_relay(void *peer, uint8_t type, const uint8_t *body, size_t len)
{
    struct mpeer *p = peer;
    if (quiet_peers) {
        quiet_count++;
        return;
    }
    assert_true(p->n < 4096);
    struct rec *r = &p->log[p->n++];
    memset(r, 0, sizeof(*r));
    r->type = type;
    assert_true(len >= 4);
    uint32_t l = get_u32be(body);
    assert_true(4 + (size_t)l <= len);
    memcpy(r->job, body + 4, l < 63 ? l : 63);
    if (type == ING_BACKEND_JOB_DONE) {
        const uint8_t *k = body + 4 + l;
        uint32_t kl = get_u32be(k);
        memcpy(r->kind, k + 4, kl < 31 ? kl : 31);
    }
}

static void
mock_drop(void *peer, uint16_t code, const char *why)
{
    (void)peer;
    (void)code;
    (void)why;
}

static struct backend be;
static uint8_t scratch[1 << 16];
static bool no_check; /* submit_full skips be_check (bulk submits) */
static bool ahead;    /* hash ids first (be_id_hash, be_prefetch_id), as server.c's look-ahead
                       * does, and call the _h handlers */

/* ahead_hash is the hash an _h handler gets for id (server.c: computed while scanning). */
static uint64_t
ahead_hash(struct ing_view id)
{
    uint64_t h = be_id_hash(id);
    be_prefetch_id(&be, h);
    return h;
}

static int
setup(void **state)
{
    (void)state;
    log_level_max = -1; /* silent */
    memset(peers, 0, sizeof(peers));
    no_check = false;
    ahead = false;
    quiet_peers = false;
    quiet_count = 0;
    struct be_config cfg;
    be_config_default(&cfg);
    struct be_ops ops = {mock_send, mock_relay, mock_drop};
    assert_int_equal(be_init(&be, &cfg, &ops), 0);
    be.now_ms = 1000;
    be.wall_s = 1700000000;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    be_fini(&be);
    return 0;
}

/* next returns the next record of peer i not yet looked at, or NULL. */
static struct rec *
next(int i)
{
    struct mpeer *p = &peers[i];
    return p->seen < p->n ? &p->log[p->seen++] : NULL;
}

/* next_job skips environment broadcasts (checked explicitly where they matter). */
static struct rec *
next_job(int i)
{
    struct rec *r;
    while ((r = next(i)) != NULL && r->type == ING_BACKEND_UPDATE_ENVIRONMENTS)
        ;
    return r;
}

static void
expect_none(int i)
{
    struct rec *r = next_job(i);
    if (r != NULL)
        fail_msg("peer %d: unexpected message type 0x%02x job %s", i, r->type, r->job);
}

static struct rec *
expect(int i, uint8_t type, const char *job)
{
    struct rec *r = type == ING_BACKEND_UPDATE_ENVIRONMENTS ? next(i) : next_job(i);
    if (r == NULL)
        fail_msg("peer %d: expected type 0x%02x job %s, got nothing", i, type, job);
    if (r->type != type || (job != NULL && strcmp(r->job, job) != 0))
        fail_msg("peer %d: expected type 0x%02x job %s, got 0x%02x job %s", i, type,
                 job ? job : "", r->type, r->job);
    return r;
}

static struct be_client *
client(int i)
{
    struct be_client *c = be_client_new(&be, &peers[i]);
    assert_non_null(c);
    be_client_hello(&be, c);
    expect(i, ING_BACKEND_UPDATE_ENVIRONMENTS, NULL);
    return c;
}

/* submit encodes a ClientNewJob and hands its body to the backend. */
static void
submit_full(struct be_client *c, const char *id, int64_t prio, const char *type,
            const char *name, const char *state, const char *marker)
{
    uint8_t inp[256], par[64];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, inp, sizeof(inp));
    ing_mp_put_map(&w, state != NULL ? 2 : 1);
    ing_mp_put_cstr(&w, "v");
    ing_mp_put_cstr(&w, marker != NULL ? marker : "x");
    if (state != NULL) {
        ing_mp_put_cstr(&w, "@state");
        ing_mp_put_cstr(&w, state);
    }
    assert_int_equal(w.err, 0);
    size_t inlen = w.len;
    ing_mp_writer_init(&w, par, sizeof(par));
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "limits");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "time");
    ing_mp_put_int(&w, 30);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.priority = prio;
    m.u.new_job.launcher = (struct ing_view){"L", 1};
    struct ing_job_spec *s = &m.u.new_job.job;
    s->job_id = (struct ing_view){id, (uint32_t)strlen(id)};
    s->course_id = (struct ing_view){"c", 1};
    s->task_id = (struct ing_view){"t", 1};
    s->environment_type = (struct ing_view){type, (uint32_t)strlen(type)};
    s->environment = (struct ing_view){name, (uint32_t)strlen(name)};
    s->task_problems = (struct ing_view){"\x80", 1};
    s->inputdata = (struct ing_view){(const char *)inp, (uint32_t)inlen};
    s->environment_parameters = (struct ing_view){(const char *)par, (uint32_t)w.len};
    ssize_t n = ing_msg_encode(&m, scratch, sizeof(scratch));
    assert_true(n > 0);
    struct ing_msg d;
    assert_int_equal(ing_msg_decode(scratch, (size_t)n, 1 << 20, &d), n);
    if (ahead)
        be_client_new_job_h(&be, c, scratch + ING_HDR_LEN, (size_t)n - ING_HDR_LEN, &d.u.new_job,
                            ahead_hash(d.u.new_job.job.job_id));
    else
        be_client_new_job(&be, c, scratch + ING_HDR_LEN, (size_t)n - ING_HDR_LEN, &d.u.new_job);
    memset(scratch, 0xAA, (size_t)n); /* the backend must have copied what it keeps */
    if (!no_check)
        assert_int_equal(be_check(&be), 0);
}

static void
submit(struct be_client *c, const char *id, int64_t prio, const char *env)
{
    submit_full(c, id, prio, "docker", env, NULL, NULL);
}

/* agent_hello sends AgentHello on a with slots and envs ("e1,e2"). */
static void
agent_hello(struct be_agent *a, uint32_t slots, const char *envs)
{
    uint8_t buf[4096];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    char list[256];
    snprintf(list, sizeof(list), "%s", envs);
    uint32_t n = 0;
    for (char *p = list; *p; p++)
        n += *p == ',';
    n += list[0] != '\0';
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, n);
    for (char *tok = strtok(list, ","); tok != NULL; tok = strtok(NULL, ",")) {
        ing_mp_put_cstr(&w, tok);
        ing_mp_put_map(&w, 2);
        ing_mp_put_cstr(&w, "id");
        ing_mp_put_cstr(&w, "i1");
        ing_mp_put_cstr(&w, "created");
        ing_mp_put_int(&w, 1);
    }
    assert_int_equal(w.err, 0);
    struct ing_agent_hello h = {{"A", 1}, slots, {(const char *)buf, (uint32_t)w.len}};
    char why[200];
    assert_int_equal(be_agent_hello(&be, a, &h, why, sizeof(why)), 0);
    assert_int_equal(be_check(&be), 0);
    be_flush(&be); /* as server.c does before it sleeps */
}

/* agent registers a mock agent on peer i with slots and envs ("e1,e2"). */
static struct be_agent *
agent(int i, uint32_t slots, const char *envs)
{
    struct be_agent *a = be_agent_new(&be, &peers[i]);
    assert_non_null(a);
    agent_hello(a, slots, envs);
    return a;
}

static void
done(struct be_agent *a, const char *id, const char *kind)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    struct ing_job_result *r = &m.u.result;
    r->job_id = (struct ing_view){id, (uint32_t)strlen(id)};
    r->result_kind = (struct ing_view){kind, (uint32_t)strlen(kind)};
    r->result_text = (struct ing_view){"", 0};
    r->problems = r->tests = r->custom = (struct ing_view){"\x80", 1};
    r->state = (struct ing_view){"", 0};
    ssize_t n = ing_msg_encode(&m, scratch, sizeof(scratch));
    assert_true(n > 0);
    struct ing_msg d;
    assert_int_equal(ing_msg_decode(scratch, (size_t)n, 1 << 20, &d), n);
    if (ahead)
        be_agent_done_h(&be, a, scratch + ING_HDR_LEN, (size_t)n - ING_HDR_LEN, &d.u.result,
                        ahead_hash(d.u.result.job_id));
    else
        be_agent_done(&be, a, scratch + ING_HDR_LEN, (size_t)n - ING_HDR_LEN, &d.u.result);
    assert_int_equal(be_check(&be), 0);
}

static void
started(struct be_agent *a, const char *id)
{
    struct ing_view v = {id, (uint32_t)strlen(id)};
    if (ahead)
        be_agent_started_h(&be, a, v, ahead_hash(v));
    else
        be_agent_started(&be, a, v);
}

static void
kill_job(struct be_client *c, const char *id)
{
    struct ing_view v = {id, (uint32_t)strlen(id)};
    if (ahead)
        be_client_kill_h(&be, c, v, ahead_hash(v));
    else
        be_client_kill(&be, c, v);
    assert_int_equal(be_check(&be), 0);
}

/* §6.14: priority then FIFO. */
static void
test_backend_priority_then_fifo(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    submit(c, "j1", 1, "e");
    submit(c, "j2", 0, "e");
    submit(c, "j3", 0, "e");
    struct be_agent *a = agent(1, 1, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j2");
    expect_none(1);
    done(a, "j2", "success");
    expect(0, ING_BACKEND_UPDATE_ENVIRONMENTS, NULL);
    expect(0, ING_BACKEND_JOB_DONE, "j2");
    expect(1, ING_BACKEND_NEW_JOB, "j3");
    done(a, "j3", "success");
    expect(1, ING_BACKEND_NEW_JOB, "j1");
    done(a, "j1", "success");
    expect_none(1);
}

/* §6.15: across topics, priority wins over arrival. */
static void
test_backend_across_topics(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    submit(c, "x", 1, "e1");
    submit(c, "y", 0, "e2");
    agent(1, 1, "e1,e2");
    expect(1, ING_BACKEND_NEW_JOB, "y");
    expect_none(1);
}

/* §6.17 and §6.18: several slots; freed slots join the end of the FIFO. */
static void
test_backend_slot_order(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    struct be_agent *a = agent(1, 1, "e");
    agent(2, 1, "e");
    submit(c, "j1", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j1");
    done(a, "j1", "success");
    submit(c, "j2", 0, "e");
    expect(2, ING_BACKEND_NEW_JOB, "j2"); /* B's slot is older than A's freed one */
    expect_none(1);
    submit(c, "j3", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j3");
}

static void
test_backend_several_slots(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    submit(c, "j1", 0, "e");
    submit(c, "j2", 0, "e");
    submit(c, "j3", 0, "e");
    struct be_agent *a = agent(1, 2, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j1");
    expect(1, ING_BACKEND_NEW_JOB, "j2");
    expect_none(1);
    done(a, "j1", "success");
    expect(1, ING_BACKEND_NEW_JOB, "j3");
}

/* §6.20, §6.23 [hard]: kill a waiting job, then the id is reusable with new input. */
static void
test_backend_kill_waiting_then_reuse(void **state)
{
    (void)state;
    struct be_client *c1 = client(0), *c2 = client(1);
    submit_full(c1, "j", 0, "docker", "e", "S1", "OLD");
    kill_job(c2, "j");
    struct rec *r = expect(0, ING_BACKEND_JOB_DONE, "j");
    assert_string_equal(r->kind, "killed");
    assert_string_equal(r->text, "You killed the job");
    assert_string_equal(r->state, "S1");
    expect_none(1);
    submit_full(c1, "j", 0, "docker", "e", NULL, "NEW");
    agent(2, 1, "e");
    expect(2, ING_BACKEND_NEW_JOB, "j");
    expect_none(2);
}

/* §6.21 and the kill timeout: a running job's kill goes to the agent; with no answer in
 * time the owner gets killed and the slot is freed; a late result is dropped. */
static void
test_backend_kill_running_timeout(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    struct be_agent *a = agent(1, 1, "e");
    submit_full(c, "j", 0, "docker", "e", "S", NULL);
    submit(c, "k", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j");
    kill_job(c, "j");
    struct rec *r = expect(1, ING_BACKEND_KILL_JOB, "j");
    assert_string_equal(r->state, "S");
    expect_none(0);
    be.now_ms += be.cfg.kill_timeout_ms - 1;
    be_timeouts(&be);
    expect_none(0);
    be.now_ms += 1;
    be_timeouts(&be);
    assert_int_equal(be_check(&be), 0);
    r = expect(0, ING_BACKEND_JOB_DONE, "j");
    assert_string_equal(r->kind, "killed");
    assert_string_equal(r->state, "S");
    expect(1, ING_BACKEND_NEW_JOB, "k"); /* the slot was freed */
    done(a, "j", "killed");               /* late: dropped */
    expect_none(0);
    assert_int_equal(be_agent_busy(a), 1);
}

/* B6 [hard]: a result from another agent is dropped and gives it no slot. */
static void
test_backend_result_from_wrong_agent(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    agent(1, 1, "e");
    struct be_agent *b = agent(2, 0, "e");
    submit(c, "j", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "j");
    done(b, "j", "success");
    expect_none(0);
    assert_int_equal(be_agent_slots(b), 0);
    assert_int_equal(be_agent_busy(b), 0);
}

/* §7.5: agent loss requeues the jobs it had not started at their original position and
 * ends the started ones with crash "Agent restarted" keeping @state. */
static void
test_backend_agent_loss(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    struct be_agent *a = agent(1, 2, "e");
    submit_full(c, "s", 0, "docker", "e", "ST", NULL);
    submit(c, "n", 0, "e");
    submit(c, "w", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "s");
    expect(1, ING_BACKEND_NEW_JOB, "n");
    started(a, "s");
    expect(0, ING_BACKEND_UPDATE_ENVIRONMENTS, NULL);
    expect(0, ING_BACKEND_JOB_STARTED, "s");
    be_agent_gone(&be, a);
    assert_int_equal(be_check(&be), 0);
    struct rec *r = expect(0, ING_BACKEND_JOB_DONE, "s");
    assert_string_equal(r->kind, "crash");
    assert_string_equal(r->text, "Agent restarted");
    assert_string_equal(r->state, "ST");
    /* e is withdrawn, once the agent has had envs_grace_ms to come back. */
    be_flush(&be);
    be.now_ms += be.cfg.envs_grace_ms - 1;
    be_flush(&be);
    assert_int_equal(peers[0].seen, peers[0].n);
    be.now_ms += 1;
    be_flush(&be);
    expect(0, ING_BACKEND_UPDATE_ENVIRONMENTS, NULL);
    expect_none(0);
    agent(2, 1, "e");
    expect(2, ING_BACKEND_NEW_JOB, "n"); /* requeued ahead of w */
}

/* Orphan timeout: a job whose environment nobody provides ends crash. */
static void
test_backend_orphan_timeout(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    submit(c, "j", 0, "nobody");
    be.now_ms += be.cfg.orphan_timeout_ms - 1;
    be_timeouts(&be);
    expect_none(0);
    be.now_ms += 1;
    be_timeouts(&be);
    struct rec *r = expect(0, ING_BACKEND_JOB_DONE, "j");
    assert_string_equal(r->kind, "crash");
    assert_string_equal(r->text, "No agent provides environment docker/nobody");
    assert_int_equal(be_check(&be), 0);
}

/* Issue 13 bug 1: one be_timeouts call ends the jobs of every orphaned environment whose
 * time is up (emptying one took it off the list before the loop read its successor, so
 * each tick ended one environment: 20 environments took 20 ticks). */
static void
test_backend_orphan_timeout_many(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    char id[16], env[16];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "j%d", i);
        snprintf(env, sizeof(env), "nobody%d", i);
        submit(c, id, 0, env);
    }
    be.now_ms += be.cfg.orphan_timeout_ms;
    be_timeouts(&be);
    assert_int_equal(be_check(&be), 0);
    for (int i = 0; i < 20; i++) {
        struct rec *r = next_job(0);
        assert_non_null(r);
        assert_string_equal(r->kind, "crash");
    }
    expect_none(0);
    assert_int_equal(be.n_waiting, 0);
    assert_null(be.orphans);
}

/* Issue 13 item 5: an agent holding 8,192 jobs leaves while 200,000 older jobs of a lower
 * priority wait in the same environment. Requeueing walked the queue from its head for
 * each job (8.9 s); now each requeue is O(log n): the loss must take well under a second,
 * and the requeued jobs keep their place (priority, then arrival). */
static void
test_backend_requeue_behind_many(void **state)
{
    (void)state;
    const unsigned nold = 200000 / slow(), nrun = 8192;
    be.cfg.max_slots_per_agent = nrun;
    struct be_client *c = client(0);
    char id[32];
    no_check = true;
    for (unsigned i = 0; i < nold; i++) {
        snprintf(id, sizeof(id), "w%u", i);
        submit(c, id, 1, "e");
    }
    for (unsigned i = 0; i < nrun; i++) {
        snprintf(id, sizeof(id), "r%u", i);
        submit(c, id, 0, "e");
    }
    no_check = false;
    quiet_peers = true;
    struct be_agent *a = agent(1, nrun, "e");
    assert_int_equal(be.n_running, nrun);
    assert_int_equal(be.n_waiting, nold);
    double t0 = now_s();
    be_agent_gone(&be, a);
    double dt = now_s() - t0;
    quiet_peers = false;
    assert_int_equal(be_check(&be), 0);
    assert_int_equal(be.n_waiting, nold + nrun);
    assert_int_equal(be.stats.jobs_requeued, nrun);
    if (dt > 0.5 * slow())
        fail_msg("requeueing %u jobs behind %u took %.3f s", nrun, nold, dt);
    /* The first requeued (the oldest of priority 0) runs first, then the next. */
    struct be_agent *b = agent(2, 1, "e");
    expect(2, ING_BACKEND_NEW_JOB, "r0");
    done(b, "r0", "success");
    expect(2, ING_BACKEND_NEW_JOB, "r1");
    /* The snapshot lists the waiting jobs in the order they entered the queue: the old
     * ones, then the requeued ones. */
    be_client_get_queue(&be, c);
    assert_int_equal(be_check(&be), 0);
}

/* A client that goes: its waiting jobs are dropped, its running jobs killed. */
static void
test_backend_client_gone(void **state)
{
    (void)state;
    struct be_client *c = client(0);
    struct be_agent *a = agent(1, 1, "e");
    submit(c, "r", 0, "e");
    submit(c, "w", 0, "e");
    expect(1, ING_BACKEND_NEW_JOB, "r");
    be_client_gone(&be, c);
    assert_int_equal(be_check(&be), 0);
    expect(1, ING_BACKEND_KILL_JOB, "r");
    done(a, "r", "killed");
    expect_none(1); /* w was dropped */
}

/* A client that goes with more jobs than one batch: they are dropped over several
 * be_reap calls; meanwhile nothing is sent to it, dispatch skips them, the queue snapshot
 * omits them, and their ids can be reused. */
static void
test_backend_client_gone_many(void **state)
{
    (void)state;
    struct be_client *c1 = client(0), *c2 = client(1);
    struct be_agent *a = agent(2, 1, "x");
    submit(c1, "r", 0, "x");
    expect(2, ING_BACKEND_NEW_JOB, "r");
    const unsigned n = 2 * BE_REAP_BATCH + 10;
    char id[32];
    no_check = true;
    for (unsigned i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "g%u", i);
        submit(c1, id, 0, "e");
    }
    no_check = false;
    submit(c2, "keep", 0, "e");
    assert_int_equal(be.n_waiting, n + 1);
    assert_true(be_client_gone(&be, c1)); /* more than a batch: work left */
    assert_int_equal(be_check(&be), 0);
    assert_true(be.n_waiting > 1);
    /* The oldest (g0) is dropped last: its id is free for c2 already. */
    submit(c2, "g0", 0, "e");
    expect_none(1);
    be_client_get_queue(&be, c2);
    struct rec *r = expect(1, ING_BACKEND_GET_QUEUE, NULL);
    assert_string_equal(r->text, "1/2"); /* r running; keep and c2's g0 waiting */
    /* An agent for e: the gone client's older jobs are skipped, keep runs. */
    struct be_agent *b = agent(3, 1, "e");
    expect(3, ING_BACKEND_NEW_JOB, "keep");
    expect_none(3);
    int calls = 0;
    while (be_reap(&be, BE_REAP_BATCH)) {
        assert_int_equal(be_check(&be), 0);
        assert_true(++calls < 4);
    }
    assert_int_equal(be_check(&be), 0);
    assert_int_equal(be.n_waiting, 1); /* c2's g0 */
    expect(2, ING_BACKEND_KILL_JOB, "r");
    expect_none(0); /* nothing went to the gone client */
    done(a, "r", "killed");
    expect_none(0);
    done(b, "keep", "success");
    expect(1, ING_BACKEND_JOB_DONE, "keep");
    expect(3, ING_BACKEND_NEW_JOB, "g0");
    assert_false(be_reap(&be, 1));
}

/* The job-id table while it grows (lookups, removals and duplicates across the old and the
 * new table during the incremental rehash) and the per-environment queues with mixed
 * priorities (FIFO, then heap): 3,000 jobs in 7 environments with priorities -1..1, every
 * third followed by the kill of a random live job; then duplicates of live ids are refused,
 * killed ids are free again, and one slot drains everything in (priority, arrival) order. */
static void
test_backend_tables_under_growth(void **state)
{
    (void)state;
    enum { N = 3000, NENV = 7 };
    static int8_t prio[N];
    static unsigned arrival[N];
    static bool alive[N];
    char id[32], env[8];
    struct be_client *c = client(0);
    uint64_t x = 12345;
    unsigned nalive = 0;
    no_check = true;
    for (unsigned i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        prio[i] = (int8_t)((x >> 33) % 3) - 1;
        arrival[i] = i;
        snprintf(id, sizeof(id), "t%u", i);
        snprintf(env, sizeof(env), "e%u", i % NENV);
        submit_full(c, id, prio[i], "docker", env, NULL, NULL);
        alive[i] = true;
        nalive++;
        if (i % 3 == 2) {
            unsigned k = (unsigned)((x >> 17) % (i + 1));
            while (!alive[k])
                k = (k + 1) % (i + 1);
            snprintf(id, sizeof(id), "t%u", k);
            kill_job(c, id); /* runs be_check */
            struct rec *r = expect(0, ING_BACKEND_JOB_DONE, id);
            assert_string_equal(r->kind, "killed");
            alive[k] = false;
            nalive--;
        }
        if (i % 250 == 0)
            assert_int_equal(be_check(&be), 0);
    }
    no_check = false;
    assert_int_equal(be.n_waiting, nalive);
    assert_int_equal(be_check(&be), 0);
    /* Duplicates of live ids are refused; killed ids are accepted again (priority 1,
     * arriving after every other job). */
    unsigned dups = 0, reused = 0;
    for (unsigned i = 0; i < N && (dups < 100 || reused < 100); i++) {
        snprintf(id, sizeof(id), "t%u", i);
        if (alive[i] && dups < 100) {
            submit(c, id, 0, "e0");
            struct rec *r = expect(0, ING_BACKEND_JOB_DONE, id);
            assert_string_equal(r->text, "Duplicate job id");
            dups++;
        } else if (!alive[i] && reused < 100) {
            submit_full(c, id, 1, "docker", "e0", NULL, NULL);
            expect_none(0);
            prio[i] = 1;
            arrival[i] = N + reused++;
            alive[i] = true;
            nalive++;
        }
    }
    assert_int_equal(reused, 100);
    assert_int_equal(be.n_waiting, nalive);
    /* One slot over every environment drains in (priority, arrival) order. */
    struct be_agent *a = agent(1, 1, "e0,e1,e2,e3,e4,e5,e6");
    int last_prio = -2;
    unsigned last_arrival = 0, seen = 0;
    struct rec *r;
    while ((r = next_job(1)) != NULL) {
        assert_int_equal(r->type, ING_BACKEND_NEW_JOB);
        unsigned num = (unsigned)strtoul(r->job + 1, NULL, 10);
        assert_true(num < N && alive[num]);
        alive[num] = false;
        if (prio[num] != last_prio) {
            assert_true(prio[num] > last_prio);
            last_prio = prio[num];
            last_arrival = 0;
        }
        assert_true(arrival[num] >= last_arrival);
        last_arrival = arrival[num];
        seen++;
        char jid[64];
        snprintf(jid, sizeof(jid), "%s", r->job);
        done(a, jid, "success");
        expect(0, ING_BACKEND_JOB_DONE, jid);
    }
    assert_int_equal(seen, nalive);
    assert_int_equal(be.n_waiting, 0);
}

/* be_lookahead (server.c's switch for its look-ahead) stays off while the job-id table fits
 * the caches and turns on once it has outgrown them: off empty and at 30,000 waiting jobs,
 * on at 40,000. Then the _h handlers, given hashes computed ahead as server.c computes them,
 * behave as the plain ones: submission, duplicate, dispatch, started, done, kill. */
static void
test_backend_lookahead(void **state)
{
    (void)state;
    char id[32];
    struct be_client *c = client(0);
    assert_false(be_lookahead(&be));
    no_check = true;
    for (unsigned i = 0; i < 40000; i++) {
        if (i == 30000)
            assert_false(be_lookahead(&be));
        snprintf(id, sizeof(id), "w%u", i);
        submit(c, id, 0, "parked");
    }
    no_check = false;
    assert_true(be_lookahead(&be));
    assert_int_equal(be_check(&be), 0);
    expect_none(0);

    ahead = true;
    struct be_agent *a = agent(1, 1, "e1");
    submit(c, "a1", 0, "e1");
    submit(c, "a2", 0, "e1");
    expect(1, ING_BACKEND_NEW_JOB, "a1");
    expect_none(1);
    submit(c, "w17", 0, "e1"); /* waiting in docker/parked */
    assert_string_equal(expect(0, ING_BACKEND_JOB_DONE, "w17")->text, "Duplicate job id");
    started(a, "a1");
    expect(0, ING_BACKEND_JOB_STARTED, "a1");
    done(a, "a1", "success");
    expect(0, ING_BACKEND_JOB_DONE, "a1");
    expect(1, ING_BACKEND_NEW_JOB, "a2"); /* the freed slot takes the next job */
    kill_job(c, "w123");
    assert_string_equal(expect(0, ING_BACKEND_JOB_DONE, "w123")->kind, "killed");
    kill_job(c, "a2");
    expect(1, ING_BACKEND_KILL_JOB, "a2");
    done(a, "a2", "killed");
    assert_string_equal(expect(0, ING_BACKEND_JOB_DONE, "a2")->kind, "killed");
    expect_none(0);
    expect_none(1);
    assert_int_equal(be.n_waiting, 39999);
    assert_int_equal(be_check(&be), 0);
}

/* An agent whose only slot frees while every waiting job it could take belongs to a gone
 * client not reaped yet: they are all dropped, none runs, and the slot stays free. */
static void
test_backend_freed_slot_only_gone_jobs(void **state)
{
    (void)state;
    struct be_client *c1 = client(0);
    struct be_agent *a = agent(1, 1, "x");
    char id[32];
    submit(c1, "r", 0, "x");
    expect(1, ING_BACKEND_NEW_JOB, "r");
    const unsigned n = BE_REAP_BATCH + 10;
    no_check = true;
    for (unsigned i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "g%u", i);
        submit(c1, id, 0, "x");
    }
    no_check = false;
    assert_true(be_client_gone(&be, c1)); /* the oldest jobs, r among them, are left */
    assert_true(be.n_waiting > 0);
    done(a, "r", "success"); /* runs be_check */
    assert_int_equal(be.n_waiting, 0);
    assert_int_equal(be_agent_busy(a), 0);
    expect_none(1);
    expect_none(0);
    while (be_reap(&be, BE_REAP_BATCH))
        ;
    assert_int_equal(be_check(&be), 0);
}

/* Duplicate ids, refused values, queue limits. */
static void
test_backend_refusals(void **state)
{
    (void)state;
    struct be_client *c1 = client(0), *c2 = client(1);
    submit(c1, "j", 0, "e");
    submit(c2, "j", 0, "e");
    struct rec *r = expect(1, ING_BACKEND_JOB_DONE, "j");
    assert_string_equal(r->kind, "crash");
    assert_string_equal(r->text, "Duplicate job id");
    expect_none(0);
    submit(c1, "", 0, "e");
    r = expect(0, ING_BACKEND_JOB_DONE, "");
    assert_string_equal(r->text, "Invalid job id");
    submit(c1, "k", 0, "");
    r = expect(0, ING_BACKEND_JOB_DONE, "k");
    assert_string_equal(r->text, "Invalid environment");
    be.cfg.max_waiting_per_client = 2;
    submit(c1, "k2", 0, "e");
    expect_none(0);
    submit(c1, "k3", 0, "e");
    r = expect(0, ING_BACKEND_JOB_DONE, "k3");
    assert_string_equal(r->text, "Queue full");
}

/* Random walk: many clients, agents, environments; invariants after every step, and
 * every accepted job ends with exactly one result at its owner. Clients also leave (and a
 * new one takes the connection's place) with their jobs reaped a few at a time over later
 * steps, so slots free up while gone clients' jobs still wait (the case of
 * test_backend_freed_slot_only_gone_jobs); a job whose owner left must get no result. */
static uint64_t rng = 42;
static uint32_t
rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

enum { WALK_NC = 4, WALK_NA = 6, WALK_NJ = 3000 };

/* walk_results counts the results peer c (client c) got: each at most once, none for a job
 * whose owner left. */
static void
walk_results(int c, char *results, const char *lost)
{
    struct mpeer *p = &peers[c];
    while (p->seen < p->n) {
        struct rec *r = &p->log[p->seen++];
        if (r->type != ING_BACKEND_JOB_DONE)
            continue;
        int j = atoi(r->job + 1);
        assert_true(j >= 0 && j < WALK_NJ);
        if (results[j])
            fail_msg("job %d got two results", j);
        if (lost[j])
            fail_msg("job %d got a result after its client left", j);
        results[j] = 1;
    }
    p->n = p->seen = 0;
}

/* random_walk: nc clients (at most WALK_NC), ne environments. */
static void
random_walk(uint64_t seed, int nc, uint32_t ne)
{
    static char results[WALK_NJ]; /* per job: 0 none, 1 got one */
    static char accepted[WALK_NJ], lost[WALK_NJ];
    static int owner[WALK_NJ];
    memset(results, 0, sizeof(results));
    memset(accepted, 0, sizeof(accepted));
    memset(lost, 0, sizeof(lost));
    rng = seed;
    be.cfg.hello_burst = 0; /* hellos come faster than the clock moves */
    if (nc < WALK_NC)
        be.cfg.reap_batch = rnd(3); /* most of a leaving client's jobs wait to be reaped */
    be.cfg.retry_lost_jobs = rnd(3);
    be.cfg.kill_any = rnd(2) == 0;
    if (rnd(2) == 0)
        be.cfg.max_waiting_per_client = 20; /* some submissions get "Queue full" */
    struct be_client *cs[WALK_NC];
    struct be_agent *as[WALK_NA] = {0};
    for (int i = 0; i < nc; i++)
        cs[i] = client(i);
    int nextjob = 0, left = 0;
    bool reaping = false;
    char id[32];
    for (int step = 0; step < 20000 && nextjob < WALK_NJ; step++) {
        uint32_t op = rnd(100);
        if (op < 40) {
            int c = (int)rnd((uint32_t)nc);
            snprintf(id, sizeof(id), "j%d", nextjob);
            char env[8];
            snprintf(env, sizeof(env), "e%u", rnd(ne));
            submit(cs[c], id, (int64_t)rnd(3), env);
            accepted[nextjob] = 1;
            owner[nextjob] = c;
            nextjob++;
        } else if (op < 50) {
            int i = (int)rnd(WALK_NA);
            if (as[i] != NULL)
                be_agent_gone(&be, as[i]);
            char envs[32];
            snprintf(envs, sizeof(envs), "e%u,e%u", rnd(ne), rnd(ne));
            as[i] = agent(10 + i, rnd(4), envs);
        } else if (op < 53) {
            int i = (int)rnd(WALK_NA);
            if (as[i] != NULL) {
                be_agent_gone(&be, as[i]);
                as[i] = NULL;
                assert_int_equal(be_check(&be), 0);
            }
        } else if (op < 60 && nextjob > 0) {
            snprintf(id, sizeof(id), "j%u", rnd((uint32_t)nextjob));
            kill_job(cs[rnd((uint32_t)nc)], id);
        } else if (op < 65) {
            be.now_ms += rnd(40000);
            be_timeouts(&be);
            assert_int_equal(be_check(&be), 0);
        } else if (op < 67) {
            /* Client c leaves; a new one opens on the same peer. */
            int c = (int)rnd((uint32_t)nc);
            walk_results(c, results, lost);
            reaping |= be_client_gone(&be, cs[c]);
            assert_int_equal(be_check(&be), 0);
            for (int j = 0; j < nextjob; j++)
                if (owner[j] == c && !results[j])
                    lost[j] = 1;
            cs[c] = client(c);
            left++;
        } else if (op < 80 && reaping) {
            reaping = be_reap(&be, rnd(3)); /* a few at a time: they linger */
            assert_int_equal(be_check(&be), 0);
        } else if (op < 83) {
            /* A registered agent says hello again: restarted, maybe with other slots and
             * environments; what it was sent before is stale. */
            int i = (int)rnd(WALK_NA);
            if (as[i] != NULL) {
                char envs[32];
                snprintf(envs, sizeof(envs), "e%u,e%u", rnd(ne), rnd(ne));
                peers[10 + i].n = peers[10 + i].seen = 0;
                agent_hello(as[i], rnd(4), envs);
            }
        } else if (op < 86) {
            be_client_get_queue(&be, cs[rnd((uint32_t)nc)]); /* queues may hold gone jobs */
            assert_int_equal(be_check(&be), 0);
        }
        /* Agents answer what they were sent. */
        for (int i = 0; i < WALK_NA; i++) {
            struct mpeer *p = &peers[10 + i];
            while (p->seen < p->n) {
                struct rec *r = &p->log[p->seen++];
                if (as[i] == NULL || rnd(4) == 0)
                    continue; /* this one is left running for now */
                if (r->type == ING_BACKEND_NEW_JOB) {
                    started(as[i], r->job);
                    done(as[i], r->job, "success");
                } else if (r->type == ING_BACKEND_KILL_JOB) {
                    done(as[i], r->job, "killed");
                }
            }
            p->n = p->seen = 0;
        }
        /* Clients count their results. */
        for (int c = 0; c < nc; c++)
            walk_results(c, results, lost);
    }
    assert_true(left > 0);
    /* Finish: the gone clients' jobs go, the rest fail, and every job of a client still
     * there must have its result. */
    while (reaping)
        reaping = be_reap(&be, BE_REAP_BATCH);
    be.now_ms += 3600 * 1000;
    be_timeouts(&be);
    be_fail_all(&be, "Backend shutting down");
    for (int c = 0; c < nc; c++)
        walk_results(c, results, lost);
    for (int j = 0; j < nextjob; j++)
        if (accepted[j] && !lost[j] && !results[j])
            fail_msg("job %d got no result", j);
    assert_int_equal(be.n_waiting + be.n_running, 0);
}

static void
test_backend_random_walk(void **state)
{
    /* Four clients over five environments, then one or two over one or two (where a gone
     * client's jobs are often all that waits). */
    for (uint64_t seed = 1; seed <= 32; seed++) {
        random_walk(seed * 0x9e3779b97f4a7c15ull, seed <= 16 ? WALK_NC : 1 + (int)(seed & 1),
                    seed <= 16 ? 5 : 1 + (uint32_t)(seed >> 1 & 1));
        teardown(state); /* a fresh backend for the next walk */
        setup(state);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_backend_priority_then_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_lookahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_freed_slot_only_gone_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_across_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_slot_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_several_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_kill_waiting_then_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_kill_running_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_result_from_wrong_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_agent_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_orphan_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_orphan_timeout_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_requeue_behind_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_client_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_client_gone_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_tables_under_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_random_walk, setup, teardown),
    };
    return cmocka_run_group_tests_name("backend", tests, NULL, NULL);
}
