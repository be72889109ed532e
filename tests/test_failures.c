/* SPDX-License-Identifier: MIT */
/* test_failures.c: the failure paths of proto.md §2, §3 and §7, run against
 * $ING_BUILD/inginious-backend: timeouts (kill, orphan, handshake), agent and client loss,
 * refused jobs, limits, bad openings and frames, other transports (unix socket, IPv6), the
 * SIGTERM drain, the command line and the log format.
 *
 * Timings are set in milliseconds through the backend's options; every wait is a poll with a
 * deadline (tests/support/tpeer.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/chaos_util.h"
#include "support/tpeer.h"

#define ENV_DEFAULT "docker:[default]"

static struct tp_env
env_of(const char *type, const char *name)
{
    return (struct tp_env){.type = type, .name = name, .id = "i1", .created = 1};
}

/* queue_expect checks the ids of the running and waiting lists of a GetQueue answer. */
static void
queue_expect(struct tp_peer *p, const char *running, const char *waiting)
{
    struct tp_queue q;
    char r[8192], w[8192];

    tp_get_queue(p, &q);
    tp_queue_ids(&q, true, r, sizeof(r));
    tp_queue_ids(&q, false, w, sizeof(w));
    tp_queue_free(&q);
    if (strcmp(r, running) != 0 || strcmp(w, waiting) != 0)
        tp_fail("%s: queue running [%s] waiting [%s], expected running [%s] waiting [%s]",
                p->label, r, w, running, waiting);
}

/* exited_zero tells whether a waitpid status is a normal exit with status 0. */
static bool
exited_zero(int st)
{
    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* An expected BackendJobDone. */
struct want_done {
    const char *id;
    const char *kind;
    const char *text;  /* NULL: not checked */
    const char *state; /* NULL: not checked */
    bool seen;
};

/* expect_dones reads p until it has received every result of w[0..n) (in that order when
 * ordered, else in any order) and, when envs is not NULL, one BackendUpdateEnvironments
 * rendered as envs, in any position. Every result is checked as synthetic. */
static void
expect_dones_at(const char *file, int line, struct tp_peer *p, struct want_done *w, size_t n,
                bool ordered, const char *envs)
{
    size_t got = 0, i;
    bool envs_seen = envs == NULL;

    while (got < n || !envs_seen) {
        const struct ing_msg *m = NULL;
        int t = tp_recv(p, TP_DEADLINE_MS, &m);
        char r[1024], id[300];

        if (t == ING_BACKEND_UPDATE_ENVIRONMENTS && !envs_seen) {
            tp_envs_render(m->u.envs.environments, r, sizeof(r));
            if (strcmp(r, envs) != 0)
                tp_fail_at(file, line, "%s: environments {%s}, expected {%s}", p->label, r,
                           envs);
            envs_seen = true;
            continue;
        }
        if (t != ING_BACKEND_JOB_DONE)
            tp_fail_at(file, line, "%s: %zu of %zu results received, then %s (%d)", p->label,
                       got, n, t > 0 ? ing_msg_type_name((uint8_t)t) : "an error", t);
        tp_cpy(id, sizeof(id), m->u.result.job_id);
        for (i = 0; i < n; i++) {
            if (!w[i].seen && strcmp(w[i].id, id) == 0)
                break;
        }
        if (i == n || (ordered && i != got))
            tp_fail_at(file, line, "%s: unexpected result for %s (%s)", p->label, id,
                       ordered ? "out of order" : "not expected");
        if (!tp_view_is(m->u.result.result_kind, w[i].kind) ||
            (w[i].text != NULL && !tp_view_is(m->u.result.result_text, w[i].text)) ||
            (w[i].state != NULL && !tp_view_is(m->u.result.state, w[i].state))) {
            char k[64], tx[300], st[300];

            tp_fail_at(file, line, "%s: result %s is (%s, \"%s\", state \"%s\"), expected "
                       "(%s, \"%s\", state \"%s\")", p->label, id,
                       tp_cpy(k, sizeof(k), m->u.result.result_kind),
                       tp_cpy(tx, sizeof(tx), m->u.result.result_text),
                       tp_cpy(st, sizeof(st), m->u.result.state), w[i].kind,
                       w[i].text ? w[i].text : "*", w[i].state ? w[i].state : "*");
        }
        tp_check_synthetic_at(file, line, m);
        w[i].seen = true;
        got++;
    }
}
#define expect_dones(...) expect_dones_at(__FILE__, __LINE__, __VA_ARGS__)

/* ======================================================================================== */
/* Kill timeout and orphan timeout (proto.md §7.1, §7.4) */

/* A running job whose agent ignores BackendKillJob: after --kill-timeout the owner gets
 * `killed` with the @state and the slot is freed; the agent's late AgentJobDone is dropped. */
TP_TEST(test_kill_timeout_frees_slot)
{
    struct tp_peer *c1, *c2, *a;
    const struct ing_msg *m;
    uint64_t t0, elapsed;

    tp_start(c, "--kill-timeout", "100ms", NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    t0 = tp_now_ms();
    tp_kill(c2, "j1");
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.state, "S-j1"));
    /* The agent ignores it. */
    tp_expect_synthetic(c1, "j1", "killed", NULL, "S-j1");
    elapsed = tp_now_ms() - t0;
    if (elapsed < 80)
        tp_fail("killed after %llu ms, before the 100 ms kill timeout",
                (unsigned long long)elapsed);
    tp_expect_nothing(c2, 0);
    /* The slot is free again. */
    tp_submit(c2, "j2", 0);
    tp_expect_job(a, "j2");
    /* The late result of j1 goes nowhere, and frees nothing. */
    tp_done(a, "j1", "killed", "S-j1");
    tp_submit(c2, "j3", 0);
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_done(a, "j2", "success", "");
    tp_expect_done(c2, "j2", "success", NULL, NULL);
    tp_expect_job(a, "j3");
}

/* A kill answered in time is relayed, not replaced by the timeout's result. */
TP_TEST(test_kill_answered_before_timeout)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--kill-timeout", "300ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_kill(c1, "j1");
    tp_expect(a, ING_BACKEND_KILL_JOB);
    {
        struct tp_result r = {.id = "j1", .kind = "killed", .text = "from the agent",
                              .state = "S-agent", .out = "", .err = ""};

        tp_done_full(a, &r);
    }
    tp_expect_done(c1, "j1", "killed", "from the agent", "S-agent");
    tp_expect_nothing(c1, 400);
}

/* A job whose environment no agent provides ends `crash` `No agent provides environment T/N`
 * after --orphan-timeout; a job waiting for a busy but existing agent does not. */
TP_TEST(test_orphan_timeout)
{
    struct tp_peer *c1, *a;
    struct tp_job orphan = {.id = "o1", .env_type = "docker", .env = "none", .state = "S-o1"};
    uint64_t t0, elapsed;

    tp_start(c, "--orphan-timeout", "100ms", NULL);
    c1 = tp_client(c, "c1", "");
    t0 = tp_now_ms();
    tp_send_job(c1, &orphan);
    tp_expect_synthetic(c1, "o1", "crash", "No agent provides environment docker/none", "S-o1");
    elapsed = tp_now_ms() - t0;
    if (elapsed < 80)
        tp_fail("orphan crash after %llu ms, before the 100 ms timeout",
                (unsigned long long)elapsed);
    queue_expect(c1, "", "");

    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_submit(c1, "j2", 0);
    tp_expect_nothing(c1, 400);
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    tp_expect_job(a, "j2");
}

/* The orphan clock also runs for a job whose environment was withdrawn with its last agent. */
TP_TEST(test_orphan_timeout_after_withdrawal)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--orphan-timeout", "100ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_submit(c1, "j2", 0);
    tp_barrier(c1);
    /* A leaves: j1 (not started) and j2 wait for an environment nobody provides. */
    tp_close(c, a);
    {
        struct want_done w[] = {
            {"j1", "crash", "No agent provides environment docker/default", "S-j1"},
            {"j2", "crash", "No agent provides environment docker/default", "S-j2"},
        };

        expect_dones(c1, w, 2, false, "");
    }
}

/* ======================================================================================== */
/* Agent loss (proto.md §7.5) */

/* A dispatched job the agent had not reported started goes back to the queue at its
 * original position: it is dispatched before the jobs that arrived after it. */
TP_TEST(test_agent_loss_requeues_unstarted_at_position)
{
    struct tp_peer *c1, *a, *b;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j0", 0);
    tp_expect_job(a, "j0");
    tp_started(a, "j0");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_submit(c1, "j1", 0);
    tp_expect_job(b, "j1");
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_barrier(c1);
    tp_close(c, b);
    /* No result for j1: it waits again, ahead of j2 and j3 (it runs first), listed last: it
     * re-entered the queue (proto.md 5.5). */
    tp_expect_nothing(c1, 200);
    queue_expect(c1, "j0", "j2,j3,j1");
    tp_done(a, "j0", "success", "");
    tp_expect_done(c1, "j0", "success", NULL, NULL);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    tp_expect_job(a, "j2");
}

/* Started jobs of a lost agent end `crash` `Agent restarted` with their @state, in reverse
 * dispatch order; stdout and stderr are "" (proto.md §5.4). */
TP_TEST(test_agent_loss_crashes_started_jobs)
{
    struct tp_peer *c1, *a;
    struct tp_job j2 = {.id = "j2"}; /* no @state */

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 3, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_send_job(c1, &j2);
    tp_submit(c1, "j3", 0);
    tp_expect_job(a, "j1");
    tp_expect_job(a, "j2");
    tp_expect_job(a, "j3");
    tp_started(a, "j1");
    tp_started(a, "j2");
    tp_started(a, "j3");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_close(c, a);
    {
        struct want_done w[] = {
            {"j3", "crash", "Agent restarted", "S-j3"},
            {"j2", "crash", "Agent restarted", ""},
            {"j1", "crash", "Agent restarted", "S-j1"},
        };

        expect_dones(c1, w, 3, true, "");
    }
    queue_expect(c1, "", "");
}

/* Everything a peer's departure causes is sent at once, not at the next timer tick. A
 * healthy backend answers in a few ms; each consequence must arrive within LATE_MS, and
 * there are three departures, so output that waits for the next (phase-random, ~1 s) tick
 * is caught with high probability. */
#define LATE_MS 200

static void
expect_soon(struct tp_peer *p, uint8_t type, const char *what)
{
    const struct ing_msg *m = NULL;
    int t = tp_recv(p, LATE_MS, &m);

    if (t != type)
        tp_fail("%s: %s got %s instead of %s within %d ms", what, p->label,
                t > 0 ? ing_msg_type_name((uint8_t)t) : t == -ETIMEDOUT ? "nothing" : "an error",
                ing_msg_type_name(type), LATE_MS);
}

TP_TEST(test_disconnect_consequences_sent_at_once)
{
    struct tp_peer *c1, *c2, *a, *b;
    const struct ing_msg *m = NULL;
    int t;

    tp_start(c, "--ping-interval", "5s", "--env-grace", "0", NULL); /* withdrawn at once */
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    b = tp_agent(c, "B", 1, "mcq/quiz", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c1, "docker:[default];mcq:[quiz]");
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_expect_envs(c2, "docker:[default];mcq:[quiz]");
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    /* 1. Agent loss: the crash and the withdrawal, in either order. */
    tp_close(c, a);
    t = tp_recv(c1, LATE_MS, &m);
    if (t != ING_BACKEND_JOB_DONE && t != ING_BACKEND_UPDATE_ENVIRONMENTS)
        tp_fail("agent closed: c1 got %s instead of the crash of j1 or the new environments "
                "within %d ms",
                t > 0 ? ing_msg_type_name((uint8_t)t) : t == -ETIMEDOUT ? "nothing" : "an error",
                LATE_MS);
    expect_soon(c1, t == ING_BACKEND_JOB_DONE ? ING_BACKEND_UPDATE_ENVIRONMENTS
                                              : ING_BACKEND_JOB_DONE,
                "agent closed");
    /* 2. Client loss: the kill on the agent. */
    {
        struct tp_job q = {.id = "q1", .env_type = "mcq", .env = "quiz"};

        tp_send_job(c2, &q);
    }
    tp_expect_job(b, "q1");
    tp_close(c, c2);
    expect_soon(b, ING_BACKEND_KILL_JOB, "client closed");
    /* 3. The last agent goes: the empty map. */
    tp_close(c, b);
    expect_soon(c1, ING_BACKEND_UPDATE_ENVIRONMENTS, "last agent closed");
}

/* --queue-list-max N: a snapshot lists the N oldest waiting jobs (across environments,
 * by arrival) and all running ones; 0 lists everything. */
TP_TEST(test_queue_list_max)
{
    struct tp_peer *c1, *a;
    const char *ids[] = {"w1", "w2", "w3", "w4", "w5"};
    const char *envs[] = {"x", "y", "x", "y", "x"};

    tp_start(c, "--queue-list-max", "3", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "r1", 0);
    tp_expect_job(a, "r1");
    for (int i = 0; i < 5; i++) {
        struct tp_job j = {.id = ids[i], .env = envs[i], .priority = i == 4 ? -5 : 0};

        tp_send_job(c1, &j);
    }
    queue_expect(c1, "r1", "w1,w2,w3"); /* arrival order, whatever the priority */
    tp_stop(c);
    tp_start(c, "--queue-list-max", "0", NULL);
    c1 = tp_client(c, "c1", "");
    for (int i = 0; i < 5; i++) {
        struct tp_job j = {.id = ids[i], .env = envs[i]};

        tp_send_job(c1, &j);
    }
    queue_expect(c1, "", "w1,w2,w3,w4,w5");
}

/* A client that leaves with more jobs than one batch (BE_REAP_BATCH, 2,048): they are
 * dropped over several loop iterations while the backend keeps serving; none of them is
 * listed or dispatched any more, and their ids are free again (proto.md §7.1). */
TP_TEST(test_client_gone_with_many_jobs)
{
    enum { N = 5000 };
    struct tp_peer *c1, *c2, *a;
    struct tp_queue q;
    char id[32], want[96];

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        struct tp_job j = {.id = id, .env = "many"};

        tp_send_job(c1, &j);
    }
    tp_barrier(c1);
    tp_close(c, c1);
    /* Once the backend has seen the close, the snapshot omits c1's jobs at once. */
    uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    for (;;) {
        tp_get_queue(c2, &q);
        uint32_t n = q.n_waiting;

        tp_queue_free(&q);
        if (n == 0)
            break;
        if (n != N)
            tp_fail("the snapshot lists %u of c1's %d jobs", n, N);
        if (tp_now_ms() > deadline)
            tp_fail("c1's jobs still listed after its close");
    }
    /* m0, the oldest, is dropped last: c2 may reuse its id at once. */
    {
        struct tp_job j = {.id = "m0", .env = "many", .state = "mine"};

        tp_send_job(c2, &j);
    }
    tp_barrier(c2); /* no "Duplicate job id" before the Pong */
    tp_get_queue(c2, &q);
    assert_int_equal(q.n_running, 0);
    assert_int_equal(q.n_waiting, 1);
    assert_string_equal(q.waiting[0].id, "m0");
    assert_true(q.waiting[0].mine);
    tp_queue_free(&q);
    a = tp_agent(c, "A", 4, "docker/many", NULL);
    tp_expect_envs(c2, "docker:[many]");
    tp_expect_job(a, "m0");
    tp_expect_nothing(a, TP_QUIET_MS);
    snprintf(want, sizeof(want), "client gone: %d waiting jobs dropped, 0 running jobs killed", N);
    deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    while (!tp_log_contains(c, want)) {
        if (tp_now_ms() > deadline)
            tp_fail("no log line \"%s\"", want);
        tp_barrier(c2);
    }
}

/* --retry-lost-jobs 1: a started job of a lost agent is requeued once, then crashes. */
TP_TEST(test_retry_lost_jobs)
{
    struct tp_peer *c1, *a, *b, *d;
    struct tp_job j = {.id = "j1", .state = "S-j1", .input = "v1"};
    uint8_t *want;
    size_t len;

    tp_start(c, "--retry-lost-jobs", "1", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_send_job(c1, &j);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_close(c, a);
    tp_expect_envs(c1, "");
    tp_expect_nothing(c1, TP_QUIET_MS);
    queue_expect(c1, "", "j1");
    /* Retried on B, unchanged. */
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_job(b, "j1");
    want = tp_job_frame(&j, ING_BACKEND_NEW_JOB, &len);
    {
        size_t got_len;
        const uint8_t *got = tp_frame(b, &got_len);

        if (got_len != len || memcmp(got, want, len) != 0)
            tp_fail("the retried BackendNewJob differs from the original spec");
    }
    free(want);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_started(b, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    /* Lost again: no retry left. */
    tp_close(c, b);
    {
        struct want_done w[] = {{"j1", "crash", "Agent restarted", "S-j1"}};

        expect_dones(c1, w, 1, false, "");
    }
    d = tp_agent(c, "D", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_nothing(d, TP_QUIET_MS);
}

/* ======================================================================================== */
/* Client loss (proto.md §7.1, §8) */

/* A departed client's waiting jobs are never dispatched; its running job is killed on the
 * agent; with an agent that ignores the kill, the slot comes back after --kill-timeout. */
TP_TEST(test_client_disconnect_drops_and_kills)
{
    struct tp_peer *c1, *c2, *a, *b;
    const struct ing_msg *m;
    struct tp_job w = {.id = "w1", .env = "later"};

    tp_start(c, "--kill-timeout", "100ms", NULL);
    c2 = tp_client(c, "c2", "");
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_submit(c1, "j2", 0);
    tp_send_job(c1, &w);
    tp_barrier(c1);
    tp_close(c, c1);
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.job_id, "j1"));
    assert_true(tp_view_is(m->u.kill.state, "S-j1"));
    /* A ignores the kill: after the kill timeout its slot is free, and j2 is gone. */
    queue_expect(c2, "j1", "");
    tp_expect_nothing(a, 300);
    queue_expect(c2, "", "");
    tp_submit(c2, "k1", 0);
    tp_expect_job(a, "k1");
    /* w1's environment appears: nothing to dispatch. */
    b = tp_agent(c, "B", 1, "docker/later", NULL);
    tp_expect_envs(c2, "docker:[default,later]");
    tp_expect_nothing(b, TP_QUIET_MS);
}

/* ======================================================================================== */
/* Validation (proto.md §7.3) */

/* A duplicate id is refused to its sender only, the original is untouched, and once the
 * original is finished its id can be used again. */
TP_TEST(test_duplicate_id_and_reuse)
{
    struct tp_peer *c1, *c2, *a;
    struct tp_job dup = {.id = "j1", .state = "mine", .input = "dup"};
    struct tp_job again = {.id = "j1", .state = "S-again", .input = "again"};
    uint8_t *f1, *f2, *both;
    size_t l1, l2;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_send_job(c2, &dup);
    tp_expect_synthetic(c2, "j1", "crash", "Duplicate job id", "");
    tp_expect_quiet(c, TP_QUIET_MS);
    /* Two submissions of one id in one write: the second is refused. */
    {
        struct tp_job x = {.id = "x", .input = "first"};
        struct tp_job y = {.id = "x", .input = "second"};

        f1 = tp_job_frame(&x, ING_CLIENT_NEW_JOB, &l1);
        f2 = tp_job_frame(&y, ING_CLIENT_NEW_JOB, &l2);
        both = malloc(l1 + l2);
        assert_non_null(both);
        memcpy(both, f1, l1);
        memcpy(both + l1, f2, l2);
        tp_send_raw(c2, both, l1 + l2);
        free(both);
        free(f1);
        free(f2);
        tp_expect_synthetic(c2, "x", "crash", "Duplicate job id", "");
        queue_expect(c2, "j1", "x");
    }
    tp_kill(c2, "x");
    tp_expect_synthetic(c2, "x", "killed", "You killed the job", "");
    /* The original ends; its id is free again. */
    tp_done(a, "j1", "success", "S-end");
    tp_expect_done(c1, "j1", "success", NULL, "S-end");
    tp_send_job(c2, &again);
    tp_expect_job(a, "j1");
    f1 = tp_job_frame(&again, ING_BACKEND_NEW_JOB, &l1);
    {
        size_t got_len;
        const uint8_t *got = tp_frame(a, &got_len);

        if (got_len != l1 || memcmp(got, f1, l1) != 0)
            tp_fail("the reused id was dispatched with other contents");
    }
    free(f1);
    tp_done(a, "j1", "success", "");
    tp_expect_done(c2, "j1", "success", NULL, NULL);
    tp_expect_nothing(c1, 0);
}

/* put_frame appends frame f[0..n) to w (a dynamic writer: the bytes of one write) and frees
 * f. */
static void
put_frame(struct ing_mp_writer *w, uint8_t *f, size_t n)
{
    ing_mp_put_raw(w, f, n);
    free(f);
}

/* send_frames writes what w holds on p in one write, then empties w. */
static void
send_frames(struct tp_peer *p, struct ing_mp_writer *w)
{
    assert_int_equal(w->err, 0);
    tp_send_raw(p, w->buf, w->len);
    w->len = 0;
}

/* Many frames in one write, more than the server hashes and prefetches ahead (16), with a
 * duplicate id, a malformed frame and a kill among them: every frame gets the answer it
 * gets alone, so the ids hashed ahead are matched to the right frames. Then the agent's
 * AgentJobStarted + AgentJobDone for every job in one write, with reports about an unknown
 * job among them. With parked > 0, that many jobs wait first in docker/parked (no agent),
 * from another client: from 40,000 on, the id table is large enough for the server to look
 * ahead (be_lookahead; test_backend checks the threshold). */
static void
pipelined_frames(struct tp_ctx *c, unsigned parked)
{
    static const uint8_t bad_kill[] = {0, 0, 0, 9, 'x'}; /* str of 9 bytes, 1 present */
    struct tp_peer *c0 = NULL, *c1, *a;
    struct ing_mp_writer w;
    uint8_t *f, hdr[ING_HDR_LEN];
    size_t n;
    char ids[40][8], states[40][8], waiting[400] = "";
    struct tp_job j = {0};
    struct ing_msg m;

    ing_mp_writer_init_dyn(&w);
    tp_start(c, NULL);
    if (parked > 0) {
        char pid[16];
        struct tp_job pj = {.id = pid, .env = "parked"};

        c0 = tp_client(c, "c0", "");
        for (unsigned i = 0; i < parked; i++) {
            snprintf(pid, sizeof(pid), "park%u", i);
            f = tp_job_frame(&pj, ING_CLIENT_NEW_JOB, &n);
            put_frame(&w, f, n);
        }
        send_frames(c0, &w);
        tp_barrier(c0);
    }
    c1 = tp_client(c, "c1", "");
    for (int i = 0; i < 40; i++) {
        snprintf(ids[i], sizeof(ids[i]), "p%02d", i);
        snprintf(states[i], sizeof(states[i]), "S-p%02d", i);
        j.id = ids[i];
        j.state = states[i];
        f = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &n);
        put_frame(&w, f, n);
        if (i == 10) { /* p05 again */
            j.id = ids[5];
            j.state = "dup";
            f = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &n);
            put_frame(&w, f, n);
        }
        if (i == 20) {
            ing_frame_header(hdr, ING_CLIENT_KILL_JOB, sizeof(bad_kill));
            ing_mp_put_raw(&w, hdr, sizeof(hdr));
            ing_mp_put_raw(&w, bad_kill, sizeof(bad_kill));
        }
        if (i == 30) {
            memset(&m, 0, sizeof(m));
            m.type = ING_CLIENT_KILL_JOB;
            m.u.ref.job_id = (struct ing_view){ids[3], 3};
            f = tp_msg_frame(&m, &n);
            put_frame(&w, f, n);
        }
    }
    send_frames(c1, &w);
    tp_expect_synthetic(c1, "p05", "crash", "Duplicate job id", "");
    tp_expect_error(c1, ING_ERR_MALFORMED);
    tp_expect_synthetic(c1, "p03", "killed", "You killed the job", "S-p03");
    for (int i = 0; i < 40; i++) {
        if (i == 3)
            continue;
        if (waiting[0] != '\0')
            strcat(waiting, ",");
        strcat(waiting, ids[i]);
    }
    if (parked == 0) /* else the snapshot lists the 10,000 oldest: parked ones */
        queue_expect(c1, "", waiting);

    a = tp_agent(c, "A", 64, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    if (c0 != NULL)
        tp_expect_envs(c0, ENV_DEFAULT);
    for (int i = 0; i < 40; i++) {
        if (i == 3)
            continue;
        tp_expect_job(a, ids[i]);
        memset(&m, 0, sizeof(m));
        m.type = ING_AGENT_JOB_STARTED;
        m.u.ref.job_id = (struct ing_view){ids[i], 3};
        f = tp_msg_frame(&m, &n);
        put_frame(&w, f, n);
        if (i == 20) { /* reports about a job nobody knows are dropped */
            struct tp_result r = {.id = "zz", .kind = "success", .text = "", .state = ""};

            m.u.ref.job_id = (struct ing_view){"zz", 2};
            f = tp_msg_frame(&m, &n);
            put_frame(&w, f, n);
            f = tp_result_frame(&r, ING_AGENT_JOB_DONE, &n);
            put_frame(&w, f, n);
        }
        struct tp_result r = {.id = ids[i], .kind = "success", .text = "ok", .state = ids[i]};
        f = tp_result_frame(&r, ING_AGENT_JOB_DONE, &n);
        put_frame(&w, f, n);
    }
    send_frames(a, &w);
    ing_mp_writer_fini(&w);
    for (int i = 0; i < 40; i++) {
        if (i == 3)
            continue;
        const struct ing_msg *got = tp_expect(c1, ING_BACKEND_JOB_STARTED);
        if (!tp_view_is(got->u.ref.job_id, ids[i]))
            tp_fail("BackendJobStarted for another job than %s", ids[i]);
        tp_expect_done(c1, ids[i], "success", "ok", ids[i]);
    }
    if (parked == 0)
        queue_expect(c1, "", "");
    tp_expect_quiet(c, TP_QUIET_MS);
}

TP_TEST(test_pipelined_frames)
{
    pipelined_frames(c, 0);
}

TP_TEST(test_pipelined_frames_large_table)
{
    pipelined_frames(c, 40000);
}

/* --max-waiting 3 --max-waiting-per-client 2: `crash` `Queue full`, nothing stored; running
 * jobs do not count. */
TP_TEST(test_queue_full)
{
    struct tp_peer *c1, *c2, *a;

    tp_start(c, "--max-waiting", "3", "--max-waiting-per-client", "2", NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0); /* per client */
    tp_expect_synthetic(c1, "j3", "crash", "Queue full", "");
    tp_submit(c2, "k1", 0);
    tp_barrier(c2);
    tp_submit(c2, "k2", 0); /* total */
    tp_expect_synthetic(c2, "k2", "crash", "Queue full", "");
    queue_expect(c1, "", "j1,j2,k1");
    /* A kill makes room. */
    tp_kill(c1, "j1");
    tp_expect_synthetic(c1, "j1", "killed", "You killed the job", "S-j1");
    tp_submit(c2, "k2", 0);
    tp_barrier(c2);
    queue_expect(c1, "", "j2,k1,k2");
    tp_submit(c2, "k3", 0); /* c2 has 2 waiting */
    tp_expect_synthetic(c2, "k3", "crash", "Queue full", "");
    /* A dispatch makes room: running jobs do not count. */
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_job(a, "j2");
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j4", 0);
    tp_barrier(c1);
    queue_expect(c1, "j2", "k1,k2,j4");
    tp_submit(c1, "j5", 0);
    tp_expect_synthetic(c1, "j5", "crash", "Queue full", "");
    tp_expect_quiet(c, TP_QUIET_MS);
}

/* ======================================================================================== */
/* Agents (proto.md §7.2, §5.6) */

/* Reports about a job from an agent it was not dispatched to are dropped (B6). */
TP_TEST(test_reports_from_wrong_agent_dropped)
{
    struct tp_peer *c1, *a, *b;
    struct tp_job j1 = {.id = "j1", .state = "S-j1", .debug = ING_DEBUG_SSH};
    struct tp_queue q;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_send_job(c1, &j1);
    tp_expect_job(a, "j1");
    tp_submit(c1, "j2", 0);
    tp_expect_job(b, "j2");
    tp_started(b, "j1");
    tp_ssh(b, "j1", "evil", 1, "u", "p");
    tp_done(b, "j1", "success", "forged");
    tp_expect_quiet(c, 200);
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_running, 2);
    assert_string_equal(q.running[0].id, "j1");
    assert_string_equal(q.running[0].agent, "A");
    tp_queue_free(&q);
    /* The real agent's reports go through. */
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_ssh(a, "j1", "good", 2222, "worker", "pw");
    m = tp_expect(c1, ING_BACKEND_JOB_SSH_DEBUG);
    assert_true(tp_view_is(m->u.ssh.host, "good"));
    tp_done(a, "j1", "failed", "real");
    tp_expect_done(c1, "j1", "failed", NULL, "real");
    tp_done(b, "j2", "success", "");
    tp_expect_done(c1, "j2", "success", NULL, NULL);
}

/* Two agents with overlapping environments: each job goes to an agent providing it; when
 * one agent leaves only its exclusive environment is withdrawn. */
TP_TEST(test_overlapping_environments)
{
    struct tp_peer *c1, *a, *b;
    struct tp_job x1 = {.id = "x1", .env = "e1"};
    struct tp_job x2 = {.id = "x2", .env = "e2"};
    struct tp_job x3 = {.id = "x3", .env = "e3"};
    struct tp_job y1 = {.id = "y1", .env = "e1"};
    struct tp_job y2 = {.id = "y2", .env = "e2"};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/e1", "docker/e2", NULL);
    tp_expect_envs(c1, "docker:[e1,e2]");
    b = tp_agent(c, "B", 1, "docker/e2", "docker/e3", NULL);
    tp_expect_envs(c1, "docker:[e1,e2,e3]");
    tp_send_job(c1, &x3);
    tp_expect_job(b, "x3");
    tp_send_job(c1, &x1);
    tp_expect_job(a, "x1");
    tp_send_job(c1, &x2);
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_done(b, "x3", "success", "");
    tp_expect_done(c1, "x3", "success", NULL, NULL);
    tp_expect_job(b, "x2");
    tp_done(a, "x1", "success", "");
    tp_expect_done(c1, "x1", "success", NULL, NULL);
    tp_send_job(c1, &y1);
    tp_expect_job(a, "y1");
    /* A leaves with y1 not started: y1 waits for e1, which is withdrawn; e2 stays. y2 is
     * submitted after, so that the snapshot's order does not hang on whether y1 re-entered
     * the queue in the same millisecond as y2 arrived (proto.md 5.5: by entry time). */
    tp_close(c, a);
    tp_expect_envs(c1, "docker:[e2,e3]");
    tp_send_job(c1, &y2);
    tp_barrier(c1);
    queue_expect(c1, "x2", "y1,y2");
    tp_done(b, "x2", "success", "");
    tp_expect_done(c1, "x2", "success", NULL, NULL);
    tp_expect_job(b, "y2");
}

/* A bad AgentHello is refused with Error INVALID (or LIMIT for a limit) and changes nothing;
 * a later good one works; a bad second hello leaves the registration as it was. */
TP_TEST(test_invalid_agent_hello_changes_nothing)
{
    static const struct {
        uint32_t slots;
        struct tp_bytes envs;
        const char *what;
    } bad[] = {
        {1, TP_RAW("\x91\xa6" "docker"), "environments not a map"},
        {1, TP_RAW("\x81\xa6" "docker\x90"), "type value not a map"},
        {1, TP_RAW("\x81\xa6" "docker\x81\xa7" "default\x81\xa7" "created\x01"), "no id"},
        {1, TP_RAW("\x81\xa6" "docker\x81\xa7" "default\x81\xa2id\xa2i1"), "no created"},
        {1, TP_RAW("\x81\xa6" "docker\x81\xa7" "default\x82\xa2id\x01\xa7" "created\x01"),
         "id not a string"},
        {1, TP_RAW("\x81\xa6" "docker\x81\xa7" "default\x82\xa2id\xa2i1\xa7" "created\xa1x"),
         "created not an int"},
        {1,
         TP_RAW("\x81\xa6" "docker\x81\xa7" "default\x83\xa2id\xa2i1\xa7" "created\x01"
                "\xaa" "advertised\x01"),
         "advertised not a bool"},
        {1, TP_RAW("\x81\xa0\x81\xa7" "default\x82\xa2id\xa2i1\xa7" "created\x01"),
         "empty type"},
        {1, TP_RAW("\x81\xa6" "docker\x81\xa0\x82\xa2id\xa2i1\xa7" "created\x01"),
         "empty name"},
        {65537, TP_RAW("\x80"), "65537 slots"},
    };
    size_t i;
    struct tp_peer *c1, *a, *b;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j1", 0);
    /* A refused first hello closes the connection (proto.md §5.6): one connection each. */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = tp_connect(c, ING_ROLE_AGENT);
        tp_hello_raw(a, "A", bad[i].slots, bad[i].envs);
        m = tp_expect(a, ING_ERROR);
        if (m->u.error.code != ING_ERR_INVALID && m->u.error.code != ING_ERR_LIMIT)
            tp_fail("hello with %s: Error code %u, expected INVALID or LIMIT", bad[i].what,
                    m->u.error.code);
        tp_expect_closed(a);
        tp_close(c, a);
    }
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_expect_quiet(c, TP_QUIET_MS);
    /* Good hello: registered now. */
    {
        struct tp_env e = env_of("docker", "default");

        tp_hello(a, "A", 1, &e, 1);
    }
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    /* A bad second hello is refused and A stays as it was (j1 running, env listed). */
    tp_hello_raw(a, "A", 2, bad[2].envs);
    m = tp_expect(a, ING_ERROR);
    assert_int_equal(m->u.error.code, ING_ERR_INVALID);
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_client(c, "c2", ENV_DEFAULT);
    queue_expect(c1, "j1", "");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    /* Other agents were never affected. */
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_submit(c1, "j2", 0);
    tp_expect_job(a, "j2");
    tp_submit(c1, "j3", 0);
    tp_expect_job(b, "j3");
}

/* Names are at most 255 bytes (proto.md §4.2): a longer client or agent name is refused
 * (the hello changes nothing); 255 bytes are accepted. An agent with more than 100 000
 * environments is refused too. */
TP_TEST(test_name_and_count_limits)
{
    char name[257];
    struct tp_peer *cl, *a, *c1;
    const struct ing_msg *m;
    struct ing_mp_writer w;
    struct tp_env e = env_of("docker", "default");

    memset(name, 'n', 256);
    name[256] = '\0';
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");

    /* Agent name of 256 bytes. */
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(a, name, 1, &e, 1);
    m = tp_expect(a, ING_ERROR);
    if (m->u.error.code != ING_ERR_INVALID && m->u.error.code != ING_ERR_LIMIT)
        tp_fail("256-byte agent name: Error code %u", m->u.error.code);
    tp_expect_closed(a); /* a refused first hello closes */
    tp_expect_nothing(c1, TP_QUIET_MS);
    a = tp_connect(c, ING_ROLE_AGENT);

    /* 100 001 environments of one type. */
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, 100001);
    for (int i = 0; i < 100001; i++) {
        char n[16];

        snprintf(n, sizeof(n), "e%d", i);
        ing_mp_put_cstr(&w, n);
        ing_mp_put_map(&w, 2);
        ing_mp_put_cstr(&w, "id");
        ing_mp_put_cstr(&w, "i1");
        ing_mp_put_cstr(&w, "created");
        ing_mp_put_int(&w, 1);
    }
    assert_int_equal(w.err, 0);
    tp_hello_raw(a, "A", 1, (struct tp_bytes){w.buf, w.len});
    ing_mp_writer_fini(&w);
    m = tp_expect(a, ING_ERROR);
    if (m->u.error.code != ING_ERR_INVALID && m->u.error.code != ING_ERR_LIMIT)
        tp_fail("100001 environments: Error code %u", m->u.error.code);
    tp_expect_closed(a);
    tp_expect_nothing(c1, TP_QUIET_MS);
    a = tp_connect(c, ING_ROLE_AGENT);

    /* 255 bytes are fine. */
    name[255] = '\0';
    tp_hello(a, name, 1, &e, 1);
    tp_expect_envs(c1, ENV_DEFAULT);

    /* Client name of 256 bytes: refused, the client stays unregistered. */
    name[255] = 'n';
    cl = tp_connect(c, ING_ROLE_CLIENT);
    tp_client_hello(cl, name);
    m = tp_expect(cl, ING_ERROR);
    if (m->u.error.code != ING_ERR_INVALID && m->u.error.code != ING_ERR_LIMIT)
        tp_fail("256-byte client name: Error code %u", m->u.error.code);
    tp_send_type(cl, ING_PING);
    tp_expect(cl, ING_UNKNOWN);
    name[255] = '\0';
    tp_client_hello(cl, name);
    tp_expect_envs(cl, ENV_DEFAULT);
    tp_barrier(cl);
}

/* ======================================================================================== */
/* Queue snapshot size (proto.md §5.5) */

/* With --max-frame 4096 a snapshot that does not fit lists every running job (they fit) and
 * as many waiting jobs as fit, oldest first. */
TP_TEST(test_queue_truncated_to_max_frame)
{
    char launcher[201];
    struct tp_peer *c1, *a;
    const struct ing_msg *m;
    const uint8_t *pos;
    size_t frame_len, entry;
    uint32_t i;
    int n_jobs = 40;

    memset(launcher, 'L', 200);
    launcher[200] = '\0';
    tp_start(c, "--max-frame", "4096", NULL);
    c1 = tp_client(c, "c1", "");
    assert_int_equal(c1->welcome.max_frame, 4096);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    for (int k = 0; k < n_jobs; k++) {
        char id[16];
        struct tp_job j = {.id = id, .launcher = launcher};

        snprintf(id, sizeof(id), "w%02d", k);
        tp_send_job(c1, &j);
    }
    tp_expect_job(a, "w00");
    tp_send_type(c1, ING_CLIENT_GET_QUEUE);
    m = tp_expect(c1, ING_BACKEND_GET_QUEUE);
    tp_frame(c1, &frame_len);
    if (m->u.queue.n_running != 1)
        tp_fail("%u running jobs listed, expected 1", m->u.queue.n_running);
    /* Waiting entry: id str (4+3), bool, info str (4+7 "default"), launcher (4+200), i64. */
    entry = 7 + 1 + 11 + 204 + 8;
    if (frame_len - ING_HDR_LEN > 4096)
        tp_fail("the snapshot body is %zu bytes, over max_frame 4096", frame_len - ING_HDR_LEN);
    if (m->u.queue.n_waiting >= (uint32_t)(n_jobs - 1))
        tp_fail("all %u waiting jobs listed in 4096 bytes", m->u.queue.n_waiting);
    if (frame_len - ING_HDR_LEN + entry <= 4096)
        tp_fail("%u waiting jobs listed (body %zu bytes): one more would have fit",
                m->u.queue.n_waiting, frame_len - ING_HDR_LEN);
    pos = m->u.queue.wire_waiting;
    for (i = 0; i < m->u.queue.n_waiting; i++) {
        struct ing_queue_waiting e;
        char want[16];

        pos = ing_queue_next_waiting(pos, &e);
        snprintf(want, sizeof(want), "w%02u", i + 1);
        if (!tp_view_is(e.job_id, want))
            tp_fail("waiting entry %u is not %s (oldest first)", i, want);
    }
}

/* Running jobs are trimmed too: 40 running jobs with 200-byte launchers do not fit in 4096
 * bytes; the snapshot lists as many as fit, in dispatch order, and stays within max_frame. */
TP_TEST(test_queue_running_truncated_to_max_frame)
{
    char launcher[201];
    struct tp_peer *c1, *a;
    const struct ing_msg *m;
    const uint8_t *pos;
    size_t frame_len;
    int n_jobs = 40;

    memset(launcher, 'L', 200);
    launcher[200] = '\0';
    tp_start(c, "--max-frame", "4096", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", (uint32_t)n_jobs, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    for (int k = 0; k < n_jobs; k++) {
        char id[16];
        struct tp_job j = {.id = id, .launcher = launcher};

        snprintf(id, sizeof(id), "r%02d", k);
        tp_send_job(c1, &j);
        tp_expect_job(a, id);
    }
    tp_send_type(c1, ING_CLIENT_GET_QUEUE);
    m = tp_expect(c1, ING_BACKEND_GET_QUEUE);
    tp_frame(c1, &frame_len);
    if (frame_len - ING_HDR_LEN > 4096)
        tp_fail("the snapshot body is %zu bytes, over max_frame 4096", frame_len - ING_HDR_LEN);
    if (m->u.queue.n_running == 0 || m->u.queue.n_running >= (uint32_t)n_jobs)
        tp_fail("%u running jobs listed in 4096 bytes", m->u.queue.n_running);
    assert_int_equal(m->u.queue.n_waiting, 0);
    pos = m->u.queue.wire_running;
    for (uint32_t i = 0; i < m->u.queue.n_running; i++) {
        struct ing_queue_running e;
        char want[16];

        pos = ing_queue_next_running(pos, &e);
        snprintf(want, sizeof(want), "r%02u", i);
        if (!tp_view_is(e.job_id, want))
            tp_fail("running entry %u is not %s (dispatch order)", i, want);
    }
}

/* ======================================================================================== */
/* Opening and framing (proto.md §2, §3) */

/* The Welcome carries version 1, the role, flags (ACK to clients only), max_frame, the ping period, a zero
 * nonce and the server's name; the port file names both bound endpoints. */
TP_TEST(test_welcome_and_port_file)
{
    struct tp_peer *cl, *ag;
    static const uint8_t zero[ING_NONCE_LEN];

    tp_start(c, "--ping-interval", "250ms", "--max-frame", "8192", NULL);
    if (strncmp(c->be.agent_addr, "tcp://127.0.0.1:", 16) != 0 ||
        strncmp(c->be.client_addr, "tcp://127.0.0.1:", 16) != 0 ||
        atoi(c->be.agent_addr + 16) <= 0 || atoi(c->be.client_addr + 16) <= 0 ||
        strcmp(c->be.agent_addr, c->be.client_addr) == 0)
        tp_fail("port file: agent \"%s\" client \"%s\"", c->be.agent_addr, c->be.client_addr);
    cl = tp_connect(c, ING_ROLE_CLIENT);
    ag = tp_connect(c, ING_ROLE_AGENT);
    assert_int_equal(cl->welcome.version, 1);
    assert_int_equal(cl->welcome.role, ING_ROLE_CLIENT);
    assert_int_equal(ag->welcome.role, ING_ROLE_AGENT);
    assert_int_equal(cl->welcome.flags,
                     ING_WELCOME_ACK | ING_WELCOME_SESSION | ING_WELCOME_SESSION_ACK);
    assert_int_equal(ag->welcome.flags, ING_WELCOME_RESUME); /* proto.md 7.10 */
    assert_int_equal(cl->welcome.max_frame, 8192);
    assert_int_equal(ag->welcome.max_frame, 8192);
    assert_int_equal(cl->welcome.heartbeat_ms, 250);
    assert_int_equal(ag->welcome.heartbeat_ms, 250);
    assert_memory_equal(cl->welcome.nonce, zero, ING_NONCE_LEN);
    if (strncmp(cl->welcome.server, "inginious-backend", 17) != 0)
        tp_fail("Welcome server \"%s\"", cl->welcome.server);
}

/* ClientHelloAck (proto.md 7.8) on the wire: registered as by ClientHello (environments),
 * then BackendJobAccepted before the job's other messages, none for a refused job; a
 * ClientHello client on the same backend gets none; a later ClientHello turns them off. */
TP_TEST(test_hello_ack)
{
    struct ing_msg m = {.type = ING_CLIENT_HELLO_ACK};
    tp_start(c, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *plain = tp_client(c, "plain", NULL);
    struct tp_peer *cl = tp_connect(c, ING_ROLE_CLIENT);
    m.u.client_hello.name = (struct ing_view){"acker", 5};
    tp_send(cl, &m);
    tp_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
    tp_submit(cl, "h1", 0);
    const struct ing_msg *r = tp_expect(cl, ING_BACKEND_JOB_ACCEPTED);
    assert_true(ing_view_eq(r->u.ref.job_id, "h1"));
    tp_expect(ag, ING_BACKEND_NEW_JOB);
    tp_submit(cl, "h1", 0); /* a duplicate: refused, not acknowledged */
    tp_expect_done(cl, "h1", "crash", "Duplicate job id", NULL);
    tp_started(ag, "h1");
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
    tp_done(ag, "h1", "success", "");
    tp_expect_done(cl, "h1", "success", NULL, NULL);
    tp_submit(plain, "p1", 0);
    tp_expect(ag, ING_BACKEND_NEW_JOB);
    tp_started(ag, "p1");
    tp_expect(plain, ING_BACKEND_JOB_STARTED); /* not BackendJobAccepted first */
    tp_done(ag, "p1", "success", "");
    tp_expect_done(plain, "p1", "success", NULL, NULL);
    tp_client_hello(cl, "acker"); /* the last hello decides: no more acknowledgements */
    tp_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
    tp_submit(cl, "h2", 0);
    tp_expect(ag, ING_BACKEND_NEW_JOB);
    tp_started(ag, "h2");
    tp_expect(cl, ING_BACKEND_JOB_STARTED);
}

/* A connection that does not finish its opening (preamble, then hello) within
 * --handshake-timeout gets Error TIMEOUT and is closed, even once it has its Welcome;
 * connections that said hello are not affected. */
TP_TEST(test_handshake_timeout)
{
    struct tp_peer *ok, *idle, *partial, *opened, *late;
    uint8_t pre[ING_PREAMBLE_LEN];
    char hs[32];

    snprintf(hs, sizeof(hs), "%dms", 100 * tp_slow());
    tp_start(c, "--handshake-timeout", hs, NULL);
    ok = tp_client(c, "ok", "");
    opened = tp_connect(c, ING_ROLE_CLIENT); /* Welcome received, no hello */
    idle = tp_open(c, c->be.client_addr);
    partial = tp_open(c, c->be.agent_addr);
    assert_non_null(idle);
    assert_non_null(partial);
    ing_preamble_encode(pre, ING_ROLE_AGENT);
    tp_send_raw(partial, pre, 4);
    tp_expect_error(idle, ING_ERR_TIMEOUT);
    tp_expect_closed(idle);
    tp_expect_error(partial, ING_ERR_TIMEOUT);
    tp_expect_closed(partial);
    tp_expect_error(opened, ING_ERR_TIMEOUT);
    tp_expect_closed(opened);
    tp_expect_nothing(ok, 200);
    tp_send_type(ok, ING_PING);
    tp_expect(ok, ING_PONG);
    /* A fresh connection still opens. */
    late = tp_client(c, "c2", "");
    tp_barrier(late);
}

/* ---------------------------------------------------------------------------------------- */
/* Paths of the server that only slow or exhausted peers take (issue 13, smaller items) */

/* small_client opens a registered client with a receive buffer of a few KiB (it reads only
 * when told). Returns its descriptor, non-blocking. */
static int
small_client(struct tp_ctx *c)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    uint8_t open[ING_PREAMBLE_LEN + ING_HDR_LEN + 8];
    int fd;

    assert_int_equal(cu_addr(c->be.client_addr, &ss, &sl), 0);
    fd = cu_connect_small(&ss, sl, 4096);
    if (fd < 0 || cu_connect_wait(fd, TP_DEADLINE_MS) != 0)
        tp_fail("connect");
    ing_preamble_encode(open, ING_ROLE_CLIENT);
    ing_frame_header(open + ING_PREAMBLE_LEN, ING_CLIENT_HELLO, 8);
    memcpy(open + ING_PREAMBLE_LEN + ING_HDR_LEN, "\0\0\0\4slow", 8);
    if (tp_send_fd(fd, open, sizeof(open), TP_DEADLINE_MS) != 0)
        tp_fail("opening");
    return fd;
}

/* Output that does not fit the socket waits for EPOLLOUT and resumes: a slow reader of 20
 * queue snapshots of ~100 KiB gets every byte of them, in order. */
TP_TEST(test_output_resumes_on_epollout)
{
    struct tp_peer *c1;
    char launcher[1001];
    uint8_t get[20 * ING_HDR_LEN], *in;
    size_t cap = 8u << 20, len = 0, off = 0;
    unsigned snapshots = 0;
    uint64_t deadline;
    int fd;

    memset(launcher, 'L', 1000);
    launcher[1000] = '\0';
    tp_start(c, "--orphan-timeout", "0", NULL);
    c1 = tp_client(c, "c1", "");
    tp_fill_queue(c1, 100, launcher);
    fd = small_client(c);
    for (int k = 0; k < 20; k++)
        ing_frame_header(get + k * ING_HDR_LEN, ING_CLIENT_GET_QUEUE, 0);
    if (tp_send_fd(fd, get, sizeof(get), TP_DEADLINE_MS) != 0)
        tp_fail("sending the requests");
    tp_barrier(c1); /* the backend has handled them: most of the output waits */
    in = malloc(cap);
    assert_non_null(in);
    deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    while (snapshots < 20) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        struct ing_msg m;
        ssize_t n, r;

        if (tp_now_ms() > deadline || len == cap) {
            free(in);
            close(fd);
            tp_fail("%u of 20 snapshots received", snapshots);
        }
        poll(&pf, 1, 100);
        n = recv(fd, in + len, cap - len, MSG_DONTWAIT);
        if (n > 0)
            len += (size_t)n;
        while ((r = ing_msg_decode(in + off, len - off, 1u << 30, &m)) > 0) {
            if (m.type == ING_BACKEND_GET_QUEUE) {
                if (m.u.queue.n_waiting != 100) {
                    free(in);
                    close(fd);
                    tp_fail("a snapshot lists %u jobs", m.u.queue.n_waiting);
                }
                snapshots++;
            }
            off += (size_t)r;
        }
    }
    free(in);
    close(fd);
    tp_barrier(c1);
}

/* Out of descriptors, accept pauses (with a log line) and resumes when a connection closes:
 * the connection that waited in the listen queue is then served. */
TP_TEST(test_emfile_pause_resume)
{
    struct tp_peer *p1, *open[8], *waiting = NULL;
    struct rlimit rl;
    uint8_t pre[ING_PREAMBLE_LEN];
    const struct ing_msg *m = NULL;
    int fds, n = 0;

    tp_start(c, NULL);
    p1 = tp_client(c, "p1", "");
    fds = cu_fd_count(c->be.pid);
    /* valgrind keeps its own view of the descriptor limit: prlimit does not reach it */
    if (cu_wrapped() || fds <= 0 || prlimit(c->be.pid, RLIMIT_NOFILE, NULL, &rl) != 0) {
        print_message("test_emfile_pause_resume: skipped: no /proc or prlimit, or a wrapper\n");
        c->ok = true;
        skip();
    }
    rl.rlim_cur = (rlim_t)fds + 1; /* a few more at most (descriptor numbers may have gaps) */
    assert_int_equal(prlimit(c->be.pid, RLIMIT_NOFILE, &rl, NULL), 0);
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    while (waiting == NULL) {
        struct tp_peer *q = tp_open(c, c->be.client_addr);

        assert_non_null(q);
        tp_send_raw(q, pre, sizeof(pre));
        if (tp_recv(q, TP_QUIET_MS * tp_slow(), &m) == ING_WELCOME) {
            if (n == 8)
                tp_fail("8 connections accepted past the descriptor limit");
            open[n++] = q;
        } else {
            waiting = q;
        }
    }
    tp_barrier(p1);
    if (!tp_log_contains(c, "pausing until a connection closes"))
        tp_fail("no log line for the paused accept");
    if (n == 0)
        tp_close(c, p1);
    else
        tp_close(c, open[0]);
    tp_expect(waiting, ING_WELCOME);
    tp_client_hello(waiting, "w");
    tp_expect_envs(waiting, "");
}

/* A connection closed (reset) while it is on the backlog (frames left for the next
 * iteration) and on the pending-write list (output the socket did not take) is unlinked
 * from both: the others are served, nothing is used after it is freed (ASan, valgrind). */
TP_TEST(test_close_on_backlog_and_pending_lists)
{
    enum { PINGS = 20000 };
    struct tp_peer *c1;
    uint8_t *pings = malloc(PINGS * ING_HDR_LEN);
    int fd;

    assert_non_null(pings);
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    for (int k = 0; k < PINGS; k++)
        ing_frame_header(pings + k * ING_HDR_LEN, ING_PING, 0);
    for (int round = 0; round < 3; round++) {
        fd = small_client(c);
        (void)tp_send_fd(fd, pings, PINGS * ING_HDR_LEN, 200 * tp_slow());
        cu_close_rst(fd);
        tp_barrier(c1);
    }
    free(pings);
    tp_barrier(c1);
}

/* Bad preambles: Error PREAMBLE / VERSION and close; a newer version is answered with 1. */
TP_TEST(test_bad_preambles)
{
    static const struct {
        uint8_t bytes[ING_PREAMBLE_LEN];
        uint16_t code;
    } cases[] = {
        {{0x89, 'I', 'N', 'X', 1, 2, 0, 0}, ING_ERR_PREAMBLE},
        {{0x89, 'i', 'N', 'G', 1, 2, 0, 0}, ING_ERR_PREAMBLE},
        {{0x89, 'I', 'N', 'G', 1, 2, 0, 1}, ING_ERR_PREAMBLE},
        {{0x89, 'I', 'N', 'G', 1, 2, 0x80, 0}, ING_ERR_PREAMBLE},
        {{0x89, 'I', 'N', 'G', 0, 2, 0, 0}, ING_ERR_VERSION},
    };
    struct tp_peer *c1, *p;
    size_t i;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = tp_open(c, c->be.client_addr);
        assert_non_null(p);
        tp_send_raw(p, cases[i].bytes, ING_PREAMBLE_LEN);
        tp_expect_error(p, cases[i].code);
        tp_expect_closed(p);
        tp_close(c, p);
    }
    /* Version 7 (newer): answered with version 1. */
    {
        uint8_t pre[ING_PREAMBLE_LEN] = {0x89, 'I', 'N', 'G', 7, 2, 0, 0};
        const struct ing_msg *m;

        p = tp_open(c, c->be.client_addr);
        assert_non_null(p);
        tp_send_raw(p, pre, sizeof(pre));
        m = tp_expect(p, ING_WELCOME);
        assert_int_equal(m->u.welcome.version, 1);
        p->role = ING_ROLE_CLIENT;
        tp_client_hello(p, "v7");
        tp_expect_envs(p, "");
    }
    tp_barrier(c1);
}

/* A preamble with the other endpoint's role: Error ROLE and close. */
TP_TEST(test_wrong_role)
{
    struct tp_peer *p, *c1;
    uint8_t pre[ING_PREAMBLE_LEN];

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    p = tp_open(c, c->be.agent_addr);
    assert_non_null(p);
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    tp_send_raw(p, pre, sizeof(pre));
    tp_expect_error(p, ING_ERR_ROLE);
    tp_expect_closed(p);
    p = tp_open(c, c->be.client_addr);
    assert_non_null(p);
    ing_preamble_encode(pre, ING_ROLE_AGENT);
    tp_send_raw(p, pre, sizeof(pre));
    tp_expect_error(p, ING_ERR_ROLE);
    tp_expect_closed(p);
    tp_barrier(c1);
}

/* A frame over --max-frame: Error TOO_BIG and close, as soon as the header is there; a body
 * of exactly max_frame bytes is accepted. */
TP_TEST(test_too_big_frame)
{
    struct tp_peer *c1, *c2, *a;
    struct tp_job j = {.id = "big", .pad = 3900};
    uint8_t *f;
    size_t len;
    uint8_t hdr[ING_HDR_LEN];

    tp_start(c, "--max-frame", "4096", NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    /* Body of exactly 4096 bytes. */
    f = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &len);
    free(f);
    j.pad += 4096 - (len - ING_HDR_LEN);
    f = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &len);
    assert_int_equal(len - ING_HDR_LEN, 4096);
    tp_send_raw(c1, f, len);
    free(f);
    tp_barrier(c1);
    queue_expect(c1, "", "big");
    /* 4097: only the header is sent, the error must come without the body. */
    ing_frame_header(hdr, ING_CLIENT_NEW_JOB, 4097);
    tp_send_raw(c1, hdr, sizeof(hdr));
    tp_expect_error(c1, ING_ERR_TOO_BIG);
    tp_expect_closed(c1);
    /* On the agent port, 4 GiB - 1. */
    a = tp_connect(c, ING_ROLE_AGENT);
    ing_frame_header(hdr, ING_AGENT_HELLO, 0xffffffffu);
    tp_send_raw(a, hdr, sizeof(hdr));
    tp_expect_error(a, ING_ERR_TOO_BIG);
    tp_expect_closed(a);
    /* Others keep being served. */
    tp_barrier(c2);
    queue_expect(c2, "", "");
}

/* A peer that causes --max-errors Error frames is closed. */
TP_TEST(test_max_errors)
{
    struct tp_peer *c1, *c2;

    tp_start(c, "--max-errors", "3", NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    tp_send_frame(c1, 0x7f, 0, "", 0);
    tp_expect_error(c1, ING_ERR_UNKNOWN_TYPE);
    tp_barrier(c1);
    tp_send_frame(c1, 0x7f, 0, "", 0);
    tp_expect_error(c1, ING_ERR_UNKNOWN_TYPE);
    tp_barrier(c1);
    tp_send_frame(c1, 0x7f, 0, "", 0);
    tp_expect_error(c1, ING_ERR_UNKNOWN_TYPE);
    tp_expect_closed(c1);
    tp_barrier(c2);
}

/* --max-connections: the connection over the limit gets Error LIMIT and is closed; a slot
 * freed by a close can be used again. */
TP_TEST(test_max_connections)
{
    struct tp_peer *c1, *c2, *a, *p;
    bool opened = false;
    uint64_t deadline;

    tp_start(c, "--max-connections", "3", NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_connect(c, ING_ROLE_AGENT);
    (void)a;
    p = tp_open(c, c->be.client_addr);
    assert_non_null(p);
    {
        uint8_t pre[ING_PREAMBLE_LEN];

        ing_preamble_encode(pre, ING_ROLE_CLIENT);
        tp_write(p, pre, sizeof(pre)); /* may fail if closed already */
    }
    tp_expect_error(p, ING_ERR_LIMIT);
    tp_expect_closed(p);
    tp_close(c, p);
    tp_barrier(c1);
    tp_close(c, c2);
    /* The backend notices the close at some point: retry until a Welcome comes. */
    deadline = tp_now_ms() + TP_DEADLINE_MS;
    while (!opened && tp_now_ms() < deadline) {
        const struct ing_msg *m = NULL;
        uint8_t pre[ING_PREAMBLE_LEN];

        p = tp_open(c, c->be.client_addr);
        assert_non_null(p);
        ing_preamble_encode(pre, ING_ROLE_CLIENT);
        tp_write(p, pre, sizeof(pre));
        if (tp_recv(p, TP_DEADLINE_MS, &m) == ING_WELCOME) {
            opened = true;
            p->role = ING_ROLE_CLIENT;
            tp_client_hello(p, "c3");
            tp_expect_envs(p, "");
        } else {
            tp_close(c, p);
        }
    }
    if (!opened)
        tp_fail("no connection accepted after one was closed");
}

/* A client that does not read its output is closed once --max-output is passed, without
 * blocking the others. */
TP_TEST(test_overload_closes_slow_reader)
{
    struct tp_peer *c1, *slow;
    char launcher[1001];
    uint8_t *burst;
    int k, frames = 0;
    const int n_req = 400;
    bool closed = false;

    memset(launcher, 'L', 1000);
    launcher[1000] = '\0';
    tp_start(c, "--max-output", "1M", NULL);
    c1 = tp_client(c, "c1", "");
    slow = tp_client(c, "slow", "");
    tp_fill_queue(c1, 100, launcher);
    /* 400 requests of ~100 KiB answers each, none read for now. */
    burst = malloc((size_t)n_req * ING_HDR_LEN);
    assert_non_null(burst);
    for (k = 0; k < n_req; k++)
        ing_frame_header(burst + (size_t)k * ING_HDR_LEN, ING_CLIENT_GET_QUEUE, 0);
    slow->lenient = true;
    tp_send_raw(slow, burst, (size_t)n_req * ING_HDR_LEN);
    free(burst);
    /* The backend keeps serving the others meanwhile, and drops slow once its output passes
     * 1M (a slow backend, under valgrind, handles one snapshot per iteration: wait for it). */
    {
        uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;

        do
            tp_barrier(c1);
        while (!tp_log_contains(c, "over the limit: dropped") && tp_now_ms() < deadline);
    }
    /* Now read: some answers, then (maybe an Error OVERLOAD and) the close. */
    while (!closed) {
        const struct ing_msg *m = NULL;
        int t = tp_recv(slow, TP_DEADLINE_MS, &m);

        if (t == -EPIPE)
            closed = true;
        else if (t == ING_BACKEND_GET_QUEUE)
            frames++;
        else if (t == ING_ERROR && m->u.error.code == ING_ERR_OVERLOAD)
            continue;
        else
            tp_fail("slow reader: received %d after %d answers", t, frames);
    }
    if (frames >= n_req)
        tp_fail("all %d answers delivered: --max-output 1M was not enforced", frames);
    tp_barrier(c1);
}

/* ======================================================================================== */
/* Other transports */

/* Both endpoints on unix sockets (ipc://). */
TP_TEST(test_ipc_endpoints)
{
    char aaddr[TP_PATH_MAX + 16], caddr[TP_PATH_MAX + 16];
    struct tp_peer *c1, *a;
    const char *dir = tp_dir(c);

    snprintf(aaddr, sizeof(aaddr), "ipc://%s/agent.sock", dir);
    snprintf(caddr, sizeof(caddr), "ipc://%s/client.sock", dir);
    tp_start_addrs(c, aaddr, caddr, NULL);
    if (strcmp(c->be.agent_addr, aaddr) != 0 || strcmp(c->be.client_addr, caddr) != 0)
        tp_fail("port file: agent \"%s\" client \"%s\", expected \"%s\" and \"%s\"",
                c->be.agent_addr, c->be.client_addr, aaddr, caddr);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
}

/* Both endpoints on tcp://[::1]:0 (skipped when ::1 is not available). */
TP_TEST(test_ipv6_endpoints)
{
    struct tp_peer *c1, *a;

    if (!tp_ipv6_loopback()) {
        c->ok = true; /* nothing to dump */
        skip();
    }
    tp_start_addrs(c, "tcp://[::1]:0", "tcp://[::1]:0", NULL);
    if (strncmp(c->be.agent_addr, "tcp://[::1]:", 12) != 0 ||
        strncmp(c->be.client_addr, "tcp://[::1]:", 12) != 0)
        tp_fail("port file: agent \"%s\" client \"%s\"", c->be.agent_addr, c->be.client_addr);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
}

/* ======================================================================================== */
/* SIGTERM (proto.md §7.6) */

/* A running job that finishes inside --drain-timeout is delivered; nothing is dispatched
 * during the drain; the waiting job ends `crash` `Backend shutting down` with its @state;
 * every peer gets Error SHUTDOWN; the exit status is 0. */
TP_TEST(test_sigterm_drain_delivers_running_job)
{
    struct tp_peer *c1, *a;
    int st;

    /* A drain timeout far above the quiet window below (100 ms x ING_SLOW): the drain ends
     * once j1 is done, not at the timeout. */
    tp_start(c, "--drain-timeout", "30s", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_submit(c1, "j2", 0);
    tp_barrier(c1);
    tp_signal(c, SIGTERM);
    tp_expect_nothing(a, 100);
    tp_done(a, "j1", "success", "S-end");
    tp_expect_done(c1, "j1", "success", NULL, "S-end");
    tp_expect_synthetic(c1, "j2", "crash", "Backend shutting down", "S-j2");
    tp_expect_error(c1, ING_ERR_SHUTDOWN);
    tp_expect_closed(c1);
    /* The agent never got j2. */
    tp_expect_error(a, ING_ERR_SHUTDOWN);
    tp_expect_closed(a);
    st = tp_wait_exit(c, TP_DEADLINE_MS);
    if (!exited_zero(st))
        tp_fail("exit status 0x%x after the drain, expected 0", (unsigned)st);
}

/* With --drain-timeout 100ms a running job that never finishes ends `crash` `Backend
 * shutting down` with its @state, and the backend exits 0. */
TP_TEST(test_sigterm_drain_timeout)
{
    struct tp_peer *c1, *a;
    uint64_t t0, elapsed;
    int st;

    tp_start(c, "--drain-timeout", "100ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 2, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_expect_job(a, "j1");
    tp_expect_job(a, "j2");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    t0 = tp_now_ms();
    tp_signal(c, SIGTERM);
    {
        struct want_done w[] = {
            {"j1", "crash", "Backend shutting down", "S-j1"},
            {"j2", "crash", "Backend shutting down", "S-j2"},
        };

        expect_dones(c1, w, 2, false, NULL);
    }
    elapsed = tp_now_ms() - t0;
    if (elapsed < 80)
        tp_fail("running jobs ended %llu ms after SIGTERM, before the 100 ms drain",
                (unsigned long long)elapsed);
    tp_expect_error(c1, ING_ERR_SHUTDOWN);
    tp_expect_closed(c1);
    tp_expect_error(a, ING_ERR_SHUTDOWN);
    tp_expect_closed(a);
    st = tp_wait_exit(c, TP_DEADLINE_MS);
    if (!exited_zero(st))
        tp_fail("exit status 0x%x after the drain, expected 0", (unsigned)st);
}

/* A second signal during the drain (SIGTERM or SIGINT) exits at once, status 0, without
 * waiting for the running job or the --drain-timeout. */
static void
second_signal_exits(struct tp_ctx *c, int second)
{
    struct tp_peer *c1, *a;
    uint64_t t0, deadline;
    int st;

    tp_start(c, "--drain-timeout", "60s", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_signal(c, SIGTERM);
    /* Signals that arrive together are merged: wait until the first one was handled. */
    deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    while (!tp_log_contains(c, "signal 15 received")) {
        if (tp_now_ms() > deadline)
            tp_fail("no \"signal 15 received\" in the log");
        tp_barrier(c1);
    }
    tp_expect_nothing(c1, TP_QUIET_MS); /* draining: j1 still runs */
    t0 = tp_now_ms();
    tp_signal(c, second);
    st = tp_wait_exit(c, TP_DEADLINE_MS);
    if (!exited_zero(st))
        tp_fail("exit status 0x%x after a second signal, expected 0", (unsigned)st);
    if (tp_now_ms() - t0 > (uint64_t)(2000 * tp_slow()))
        tp_fail("exit %llu ms after the second signal", (unsigned long long)(tp_now_ms() - t0));
    if (!tp_log_contains(c, "during shutdown: exiting now"))
        tp_fail("no log line for the second signal");
}

TP_TEST(test_second_sigterm_exits_at_once)
{
    second_signal_exits(c, SIGTERM);
}

TP_TEST(test_sigint_during_drain_exits_at_once)
{
    second_signal_exits(c, SIGINT);
}

/* ======================================================================================== */
/* Command line and logs */

/* --version and --help exit 0; bad options and addresses exit non-zero at once. */
TP_TEST(test_command_line)
{
    static const char *const version[] = {"--version", NULL};
    static const char *const help[] = {"--help", NULL};
    static const char *const bad[][4] = {
        {"--no-such-option", NULL},
        {"--ping-interval", "abc", NULL},
        {"--ping-interval", "10xs", NULL},
        {"--job-field", "nope", NULL},
        {"--zmq-kill-state", "sometimes", NULL},
        {"tcp://127.0.0.1", "tcp://127.0.0.1:0", NULL},
        {"udp://127.0.0.1:0", "tcp://127.0.0.1:0", NULL},
        {"tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "extra", NULL},
        {"--client-allow", "", NULL},
        {"--client-allow", ",", NULL},
        {"--agent-allow", "10.0.0.0/8,", NULL},
        {"--client-allow", "10.0.0.0/-0", NULL},
        {"--client-allow", "10.0.0.0/ 8", NULL},
    };
    char out[4096];
    size_t i;
    int st;

    c->ok = false;
    st = tp_run(version, out, sizeof(out));
    if (!exited_zero(st) || strstr(out, "inginious-backend") == NULL)
        tp_fail("--version: status 0x%x, output \"%s\"", (unsigned)st, out);
    st = tp_run(help, out, sizeof(out));
    if (!exited_zero(st) || strstr(out, "--ping-interval") == NULL)
        tp_fail("--help: status 0x%x, output \"%.200s\"", (unsigned)st, out);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        st = tp_run(bad[i], out, sizeof(out));
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
            tp_fail("%s %s: status 0x%x, expected a non-zero exit", bad[i][0],
                    bad[i][1] ? bad[i][1] : "", (unsigned)st);
    }
    /* A list too long to keep is refused whole, never cut into a shorter, broader one
     * (cutting "...,10.0.0.0/16" after "/1" would allow half of IPv4). */
    {
        static char list[8192];
        size_t n = 0;
        const char *longl[] = {"--client-allow", list, NULL};

        while (n + 16 < sizeof(list) - 32)
            n += (size_t)snprintf(list + n, sizeof(list) - n, "192.168.%u.0/24,", (unsigned)(n % 250));
        snprintf(list + n, sizeof(list) - n, "10.0.0.0/16");
        st = tp_run(longl, out, sizeof(out));
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
            tp_fail("a %zu-byte --client-allow list: status 0x%x, expected a refusal", strlen(list),
                    (unsigned)st);
    }
}

/* The Python backend's command line carries over: AGENT CLIENT -v --debugmode. */
TP_TEST(test_python_command_line)
{
    struct tp_peer *c1;

    tp_start(c, "-v", "--debugmode", NULL);
    c1 = tp_client(c, "c1", ""); /* hello answered with the (empty) environment list */
    tp_barrier(c1);
}

/* --job-field course_id|taskset_id is accepted (it names the course field of the ZeroMQ
 * dialect; the native protocol is positional and unchanged). */
TP_TEST(test_job_field_option)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--job-field", "taskset_id", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    {
        struct tp_job j = {.id = "j1", .course = "c", .task = "t"};
        uint8_t *want;
        size_t len, got_len;
        const uint8_t *got;

        tp_send_job(c1, &j);
        tp_expect_job(a, "j1");
        want = tp_job_frame(&j, ING_BACKEND_NEW_JOB, &len);
        got = tp_frame(a, &got_len);
        if (got_len != len || memcmp(got, want, len) != 0)
            tp_fail("BackendNewJob changed by --job-field");
        free(want);
    }
}

/* Every log line has the INGInious format
 * `2026-11-28 12:00:00,123 - inginious.backend - INFO - message`. */
TP_TEST(test_log_format)
{
    struct tp_peer *c1, *a;
    regex_t re;
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    tp_send_frame(c1, 0x7f, 0, "", 0);
    tp_expect_error(c1, ING_ERR_UNKNOWN_TYPE);
    tp_close(c, a);
    tp_close(c, c1);
    if (!exited_zero(tp_stop(c)))
        tp_fail("the backend did not exit 0 on SIGTERM");
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} - "
                             "inginious\\.backend - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - .+$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    f = fopen(c->be.log_path, "re");
    assert_non_null(f);
    while (getline(&line, &cap, f) >= 0) {
        size_t len = strlen(line);

        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = '\0';
        if (regexec(&re, line, 0, NULL, 0) != 0) {
            fclose(f);
            regfree(&re);
            tp_fail("log line %d does not match the format: \"%.300s\"", n + 1, line);
        }
        n++;
    }
    free(line);
    fclose(f);
    regfree(&re);
    if (n < 3)
        tp_fail("only %d log lines with -v", n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_kill_timeout_frees_slot),
        TP_CASE(test_client_gone_with_many_jobs),
        TP_CASE(test_queue_list_max),
        TP_CASE(test_kill_answered_before_timeout),
        TP_CASE(test_orphan_timeout),
        TP_CASE(test_orphan_timeout_after_withdrawal),
        TP_CASE(test_agent_loss_requeues_unstarted_at_position),
        TP_CASE(test_agent_loss_crashes_started_jobs),
        TP_CASE(test_disconnect_consequences_sent_at_once),
        TP_CASE(test_retry_lost_jobs),
        TP_CASE(test_client_disconnect_drops_and_kills),
        TP_CASE(test_duplicate_id_and_reuse),
        TP_CASE(test_pipelined_frames),
        TP_CASE(test_pipelined_frames_large_table),
        TP_CASE(test_queue_full),
        TP_CASE(test_reports_from_wrong_agent_dropped),
        TP_CASE(test_overlapping_environments),
        TP_CASE(test_invalid_agent_hello_changes_nothing),
        TP_CASE(test_name_and_count_limits),
        TP_CASE(test_queue_truncated_to_max_frame),
        TP_CASE(test_queue_running_truncated_to_max_frame),
        TP_CASE(test_welcome_and_port_file),
        TP_CASE(test_hello_ack),
        TP_CASE(test_output_resumes_on_epollout),
        TP_CASE(test_emfile_pause_resume),
        TP_CASE(test_close_on_backlog_and_pending_lists),
        TP_CASE(test_handshake_timeout),
        TP_CASE(test_bad_preambles),
        TP_CASE(test_wrong_role),
        TP_CASE(test_too_big_frame),
        TP_CASE(test_max_errors),
        TP_CASE(test_max_connections),
        TP_CASE(test_overload_closes_slow_reader),
        TP_CASE(test_ipc_endpoints),
        TP_CASE(test_ipv6_endpoints),
        TP_CASE(test_sigterm_drain_delivers_running_job),
        TP_CASE(test_sigterm_drain_timeout),
        TP_CASE(test_second_sigterm_exits_at_once),
        TP_CASE(test_sigint_during_drain_exits_at_once),
        TP_CASE(test_command_line),
        TP_CASE(test_python_command_line),
        TP_CASE(test_job_field_option),
        TP_CASE(test_log_format),
    };

    /* TP_FILTER=pattern runs only the matching tests (cmocka wildcards). */
    if (getenv("TP_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TP_FILTER"));
    return cmocka_run_group_tests_name("failures", tests, NULL, NULL);
}
