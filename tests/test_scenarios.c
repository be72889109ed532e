/* SPDX-License-Identifier: MIT */
/* test_scenarios.c: the acceptance scenarios of the INGInious backend's behaviour (the Backend
 * class of INGInious v0.5-v0.6.2, numbered s1, s2, ... as in our specification of it) that
 * apply to the native protocol, one test per scenario, run against
 * $ING_BUILD/inginious-backend. Where INGInious' behaviour loses or mishandles jobs, the
 * hardened behaviour is tested (proto.md decides the details).
 *
 * Notation of the quotes: C1 and C2 are registered clients, A and B agents, `env` is
 * docker/default, j(p) a job of priority p.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/tpeer.h"

#define ENV_DEFAULT "docker:[default]"

/* ---- helpers ---- */

/* expect_frame_equals checks that the last frame received on p is exactly want[0..len)
 * (header included). */
static void
expect_frame_equals(const struct tp_peer *p, const uint8_t *want, size_t len, const char *what)
{
    size_t got_len;
    const uint8_t *got = tp_frame(p, &got_len);

    if (got_len != len || memcmp(got, want, len) != 0) {
        size_t i = 0;

        while (i < len && i < got_len && got[i] == want[i])
            i++;
        tp_fail("%s: %s differs from what was expected (%zu bytes received, %zu expected, "
                "first difference at byte %zu)",
                p->label, what, got_len, len, i);
    }
}

/* expect_body_relayed checks that the last frame on p has type `type` and the body of the
 * frame sent[0..len) (a relay that only changes the type byte). */
static void
expect_body_relayed(const struct tp_peer *p, const uint8_t *sent, size_t len, uint8_t type,
                    const char *what)
{
    size_t got_len;
    const uint8_t *got = tp_frame(p, &got_len);

    if (got_len != len || got[4] != type || memcmp(got, sent, 4) != 0 ||
        memcmp(got + 5, sent + 5, len - 5) != 0)
        tp_fail("%s: %s is not the agent's frame with type 0x%02x (%zu bytes, %zu sent)",
                p->label, what, type, got_len, len);
}

/* queue_expect checks the ids of the running and waiting lists of a GetQueue answer. */
static void
queue_expect(struct tp_peer *p, const char *running, const char *waiting)
{
    struct tp_queue q;
    char r[4096], w[4096];

    tp_get_queue(p, &q);
    tp_queue_ids(&q, true, r, sizeof(r));
    tp_queue_ids(&q, false, w, sizeof(w));
    tp_queue_free(&q);
    if (strcmp(r, running) != 0 || strcmp(w, waiting) != 0)
        tp_fail("%s: queue running [%s] waiting [%s], expected running [%s] waiting [%s]",
                p->label, r, w, running, waiting);
}

/* one_env returns a single advertised environment type/name. */
static struct tp_env
env_of(const char *type, const char *name)
{
    return (struct tp_env){.type = type, .name = name, .id = "i1", .created = 1};
}

/* ======================================================================================== */
/* Registration and the gate */

/* 1. [core] Given a fresh backend, when an unregistered client sends `Ping`, then it receives
 * `Unknown` and nothing else changes. */
TP_TEST(test_s01_ping_before_hello_is_unknown)
{
    struct tp_peer *cl;

    tp_start(c, NULL);
    cl = tp_connect(c, ING_ROLE_CLIENT);
    tp_send_type(cl, ING_PING);
    tp_expect(cl, ING_UNKNOWN);
    tp_expect_nothing(cl, TP_QUIET_MS);
    /* Nothing changed: it can register and sees the empty map; Ping now gets Pong. */
    tp_client_hello(cl, "c1");
    tp_expect_envs(cl, "");
    tp_barrier(cl);
}

/* 2. [core] When an unregistered client sends `ClientNewJob(j)`, `ClientKillJob` or
 * `ClientGetQueue`, then it receives `Unknown`. `j` is **not** queued (a later
 * `ClientGetQueue` from a registered client does not list it). */
TP_TEST(test_s02_unregistered_requests_are_unknown)
{
    struct tp_peer *u, *c2, *a;

    tp_start(c, NULL);
    u = tp_connect(c, ING_ROLE_CLIENT);
    tp_submit(u, "j", 0);
    tp_expect(u, ING_UNKNOWN);
    tp_kill(u, "j");
    tp_expect(u, ING_UNKNOWN);
    tp_send_type(u, ING_CLIENT_GET_QUEUE);
    tp_expect(u, ING_UNKNOWN);
    tp_expect_nothing(u, TP_QUIET_MS);

    c2 = tp_client(c, "c2", "");
    queue_expect(c2, "", "");
    /* An agent for the job's environment gets nothing. */
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_expect_nothing(a, TP_QUIET_MS);
    /* The same connection, once registered, does not see it either. */
    tp_client_hello(u, "u");
    tp_expect_envs(u, ENV_DEFAULT);
    queue_expect(u, "", "");
}

/* 3. [core] When a client sends `ClientHello{name:any}`, then it receives exactly one
 * `BackendUpdateEnvironments` holding the current map (`{}` with no agents), and later
 * `Ping` gets `Pong`. */
TP_TEST(test_s03_hello_gets_environments_then_pong)
{
    struct tp_peer *cl;

    tp_start(c, NULL);
    cl = tp_client(c, "any", "");
    tp_expect_nothing(cl, TP_QUIET_MS);
    tp_barrier(cl);
    tp_barrier(cl);
}

/* 4. [core] Given `ClientHello` and `ClientNewJob` sent back to back in one TCP write, then
 * the job is accepted (no `Unknown`). (Native: preamble, ClientHello and ClientNewJob in one
 * write, proto.md §2.3.) */
TP_TEST(test_s04_hello_and_job_in_one_write)
{
    struct tp_job j = {.id = "j1", .state = "S1"};
    struct ing_msg hello = {.type = ING_CLIENT_HELLO};
    uint8_t *hf, *jf, *all;
    size_t hl, jl;
    struct tp_peer *cl;
    struct tp_queue q;

    tp_start(c, NULL);
    hello.u.client_hello.name = (struct ing_view){"c1", 2};
    hf = tp_msg_frame(&hello, &hl);
    jf = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &jl);
    all = malloc(ING_PREAMBLE_LEN + hl + jl);
    assert_non_null(all);
    ing_preamble_encode(all, ING_ROLE_CLIENT);
    memcpy(all + ING_PREAMBLE_LEN, hf, hl);
    memcpy(all + ING_PREAMBLE_LEN + hl, jf, jl);

    cl = tp_open(c, c->be.client_addr);
    assert_non_null(cl);
    cl->role = ING_ROLE_CLIENT;
    tp_send_raw(cl, all, ING_PREAMBLE_LEN + hl + jl);
    free(all);
    free(hf);
    free(jf);

    tp_expect(cl, ING_WELCOME);
    tp_expect_envs(cl, "");
    tp_expect_nothing(cl, TP_QUIET_MS);
    tp_get_queue(cl, &q);
    assert_int_equal(q.n_running, 0);
    assert_int_equal(q.n_waiting, 1);
    assert_string_equal(q.waiting[0].id, "j1");
    assert_true(q.waiting[0].mine);
    tp_queue_free(&q);
}

/* 5. [core] A repeated `ClientHello` from a registered client gets another
 * `BackendUpdateEnvironments`; its jobs are unaffected. */
TP_TEST(test_s05_repeated_hello)
{
    struct tp_peer *cl, *a;

    tp_start(c, NULL);
    cl = tp_client(c, "c1", "");
    tp_submit(cl, "j1", 0);
    tp_client_hello(cl, "c1");
    tp_expect_envs(cl, "");
    tp_expect_nothing(cl, TP_QUIET_MS);
    queue_expect(cl, "", "j1");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(cl, ENV_DEFAULT);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "S-j1");
    tp_expect_done(cl, "j1", "success", "", "S-j1");
}

/* ======================================================================================== */
/* Agent hello and environments */

/* 6. [core] Given C1 is registered, when A sends `AgentHello{friendly_name:"A",
 * available_job_slots:2, available_environments:{docker:{default:info}}}`, then C1 receives
 * `BackendUpdateEnvironments{docker:[default]}`, and a client registering later receives
 * the same map. */
TP_TEST(test_s06_agent_hello_broadcasts_environments)
{
    struct tp_peer *c1;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_agent(c, "A", 2, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_client(c, "c2", ENV_DEFAULT);
    tp_expect_nothing(c1, TP_QUIET_MS);
}

/* 7. [core] (main) An environment announced with `advertised:false` is left out of the name
 * list (its type key may appear with `[]`), yet jobs for it are dispatched to A.
 * (proto.md §5.7: a type whose environments are all hidden appears with an empty array.) */
TP_TEST(test_s07_hidden_environment_dispatched)
{
    struct tp_env envs[] = {
        env_of("docker", "hidden"),
        env_of("docker", "default"),
        env_of("mcq", "secret"),
    };
    struct tp_peer *c1, *a;
    struct tp_job j1 = {.id = "j1", .env = "hidden"};
    struct tp_job j2 = {.id = "j2", .env_type = "mcq", .env = "secret"};

    envs[0].advertised = TP_ADV_FALSE;
    envs[2].advertised = TP_ADV_FALSE;
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(a, "A", 2, envs, 3);
    tp_expect_envs(c1, "docker:[default];mcq:[]");
    tp_send_job(c1, &j1);
    tp_expect_job(a, "j1");
    tp_send_job(c1, &j2);
    tp_expect_job(a, "j2");
}

/* 8. [hard] An env-info without `advertised`: treat it as `advertised:true`. */
TP_TEST(test_s08_missing_advertised_is_true)
{
    struct tp_env envs[] = {env_of("docker", "default")};
    struct tp_peer *c1, *a;

    envs[0].advertised = TP_ADV_ABSENT;
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(a, "A", 1, envs, 1);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_client(c, "c2", ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
}

/* 9. [core] Versions: given A announced `default` with id i1/created 5, when B announces
 * `default` with id i2/created 3, then the stored version stays i1 and both A and B receive
 * `default` jobs. When agent C then announces i3/created 9, the stored version becomes i3 and
 * all three receive jobs. (Only logs differ.) */
TP_TEST(test_s09_versions_do_not_affect_dispatch)
{
    struct tp_env ea = {.type = "docker", .name = "default", .id = "i1", .created = 5};
    struct tp_env eb = {.type = "docker", .name = "default", .id = "i2", .created = 3};
    struct tp_env ec = {.type = "docker", .name = "default", .id = "i3", .created = 9};
    struct tp_peer *c1, *a, *b, *cc;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(a, "A", 1, &ea, 1);
    tp_expect_envs(c1, ENV_DEFAULT);
    b = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(b, "B", 1, &eb, 1);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_expect_job(a, "j1");
    tp_expect_job(b, "j2");
    cc = tp_connect(c, ING_ROLE_AGENT);
    tp_hello(cc, "C", 1, &ec, 1);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j3", 0);
    tp_expect_job(cc, "j3");
    tp_expect_quiet(c, TP_QUIET_MS);
}

/* 10. [core] Re-hello: given `j` running on A, when A (same address) sends `AgentHello`
 * again, then `j`'s owner receives `BackendJobDone(j, ["crash","Agent restarted"], 0.0, {},
 * {}, {}, state, ...)` ([hard] state = `j`'s `@state`). A's slots become the newly
 * announced number. Waiting jobs are dispatched to A. All clients receive a new
 * `BackendUpdateEnvironments`.
 * (proto.md §7.5: only a job the agent reported started is crashed; a dispatched job that
 * was not started goes back to the queue at its original position.) */
TP_TEST(test_s10_rehello_crashes_started_jobs)
{
    struct tp_peer *c1, *c2, *a;
    bool got_done = false, got_envs = false;
    char r[1024];

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 2, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_expect_job(a, "j1");
    tp_expect_job(a, "j2");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);

    /* Hello again, with 3 slots. */
    {
        struct tp_env e = env_of("docker", "default");

        tp_hello(a, "A", 3, &e, 1);
    }
    /* C1: the crash of j1, and eventually the map (intermediate maps are allowed). */
    while (!got_done || !got_envs) {
        const struct ing_msg *m = NULL;
        int t = tp_recv(c1, TP_DEADLINE_MS, &m);

        if (t == ING_BACKEND_JOB_DONE && !got_done) {
            assert_true(tp_view_is(m->u.result.job_id, "j1"));
            assert_true(tp_view_is(m->u.result.result_kind, "crash"));
            assert_true(tp_view_is(m->u.result.result_text, "Agent restarted"));
            assert_true(tp_view_is(m->u.result.state, "S-j1"));
            tp_check_synthetic(m);
            got_done = true;
        } else if (t == ING_BACKEND_UPDATE_ENVIRONMENTS) {
            tp_envs_render(m->u.envs.environments, r, sizeof(r));
            got_envs = strcmp(r, ENV_DEFAULT) == 0;
        } else {
            tp_fail("c1: expected the crash of j1 and the environments, got %s (%d)",
                    t > 0 ? ing_msg_type_name((uint8_t)t) : "error", t);
        }
    }
    /* C2 too gets the map. */
    for (;;) {
        const struct ing_msg *m = tp_expect(c2, ING_BACKEND_UPDATE_ENVIRONMENTS);

        tp_envs_render(m->u.envs.environments, r, sizeof(r));
        if (strcmp(r, ENV_DEFAULT) == 0)
            break;
    }
    /* j2 was not started: requeued at its position (before j3), then dispatched with j3. */
    tp_expect_job(a, "j2");
    tp_expect_job(a, "j3");
    /* 3 slots now: one more job fits, the next one waits. */
    tp_submit(c1, "j4", 0);
    tp_expect_job(a, "j4");
    tp_submit(c1, "j5", 0);
    tp_expect_nothing(a, TP_QUIET_MS);
    queue_expect(c1, "j2,j3,j4", "j5");
}

/* 11. [core] An agent announcing 0 slots is registered and pinged but never receives a
 * job. */
TP_TEST(test_s11_zero_slot_agent)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 0, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_nothing(a, 300);
    if (a->pings < 2)
        tp_fail("the 0-slot agent received %u pings in 300 ms at a 50 ms interval", a->pings);
    queue_expect(c1, "", "j1");
}

/* ======================================================================================== */
/* Dispatch */

/* 12. [core] Given A (1 slot) and C1, when C1 sends `ClientNewJob(j, …)`, then A receives
 * `BackendNewJob` with `job_id == j` and `course_id, task_id, task_problems, inputdata,
 * environment_type, environment, environment_parameters, debug` carrying the submitted values
 * unchanged (no `priority` and no `launcher`). C1 receives nothing yet.
 * (proto.md §5.3: the spec is forwarded byte for byte.) */
TP_TEST(test_s12_job_spec_relayed_unchanged)
{
    struct tp_job j = {
        .id = "6f1c2a4e-uuid",
        .priority = -3,
        .launcher = "frontend",
        .course = "LSINF1101",
        .task = "hello",
        .debug = ING_DEBUG_ON,
        .problems_raw = TP_RAW("\x81\xa2q1\x81\xa4type\xa4" "code"),
        /* {"@state": "st", "v": "x", "f": float32 1.5} */
        .inputdata_raw = TP_RAW("\x83\xa6@state\xa2st\xa1v\xa1x\xa1" "f\xca\x3f\xc0\x00\x00"),
        .has_time = true,
        .time = 30,
    };
    uint8_t *want;
    size_t len;
    struct tp_peer *c1, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_send_job(c1, &j);
    tp_expect_job(a, j.id);
    want = tp_job_frame(&j, ING_BACKEND_NEW_JOB, &len);
    expect_frame_equals(a, want, len, "BackendNewJob");
    free(want);
    tp_expect_nothing(c1, TP_QUIET_MS);
}

/* 13. [core] Duplicate: given `j` is waiting or running (from any client), when any client
 * submits `j` again, then that **sender** receives `BackendJobDone(j, ["crash","Duplicate job
 * id"], 0.0, {}, {}, {}, "", nil, "", "")` and the original job is unchanged. */
TP_TEST(test_s13_duplicate_job_id)
{
    struct tp_peer *c1, *c2, *a;
    struct tp_job orig = {.id = "j", .state = "S-j", .input = "original"};
    struct tp_job dup = {.id = "j", .state = "other", .input = "duplicate"};
    uint8_t *want;
    size_t len;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    tp_send_job(c1, &orig);
    tp_barrier(c1);
    /* Waiting. */
    tp_send_job(c2, &dup);
    tp_expect_synthetic(c2, "j", "crash", "Duplicate job id", "");
    tp_expect_nothing(c1, TP_QUIET_MS);
    queue_expect(c2, "", "j");
    /* The original is dispatched with its own input. */
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_job(a, "j");
    want = tp_job_frame(&orig, ING_BACKEND_NEW_JOB, &len);
    expect_frame_equals(a, want, len, "BackendNewJob");
    free(want);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    /* Running: the owner itself submits it again. */
    tp_send_job(c1, &dup);
    tp_expect_synthetic(c1, "j", "crash", "Duplicate job id", "");
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_done(a, "j", "success", "S-done");
    tp_expect_done(c1, "j", "success", "", "S-done");
    tp_expect_nothing(c2, TP_QUIET_MS);
}

/* 14. [core] Priority and FIFO: given no agent, then `j1(1)`, `j2(0)`, `j3(0)` are submitted
 * in that order for `env`. When A (1 slot) says hello, A receives `j2`. After A's
 * `AgentJobDone(j2)` it receives `j3`, then `j1`. */
TP_TEST(test_s14_priority_then_fifo)
{
    struct tp_peer *c1, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j1", 1);
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_barrier(c1);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_job(a, "j2");
    tp_done(a, "j2", "success", "");
    tp_expect_job(a, "j3");
    tp_done(a, "j3", "success", "");
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_done(c1, "j2", "success", NULL, NULL);
    tp_expect_done(c1, "j3", "success", NULL, NULL);
    tp_expect_done(c1, "j1", "success", NULL, NULL);
}

/* 15. [core] Across topics: given `x(1)` for e1 then `y(0)` for e2 (waiting), an agent
 * announcing e1 and e2 with one slot receives `y` first. */
TP_TEST(test_s15_priority_across_topics)
{
    struct tp_peer *c1, *a;
    struct tp_job x = {.id = "x", .priority = 1, .env = "e1"};
    struct tp_job y = {.id = "y", .priority = 0, .env = "e2"};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_send_job(c1, &x);
    tp_send_job(c1, &y);
    tp_barrier(c1);
    a = tp_agent(c, "A", 1, "docker/e1", "docker/e2", NULL);
    tp_expect_job(a, "y");
    tp_done(a, "y", "success", "");
    tp_expect_job(a, "x");
}

/* 16. [core] Topic mismatch: a job for e2 with only e1 agents waits (listed by
 * `ClientGetQueue`). When an agent announcing e2 says hello, the job is dispatched to it. */
TP_TEST(test_s16_topic_mismatch_waits)
{
    struct tp_peer *c1, *a, *b;
    struct tp_job j = {.id = "j", .env = "e2"};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/e1", NULL);
    tp_expect_envs(c1, "docker:[e1]");
    tp_send_job(c1, &j);
    tp_expect_nothing(a, TP_QUIET_MS);
    queue_expect(c1, "", "j");
    b = tp_agent(c, "B", 1, "docker/e2", NULL);
    tp_expect_job(b, "j");
    tp_expect_nothing(a, TP_QUIET_MS);
}

/* 17. [core] Several slots: given 3 waiting jobs, when A says hello with 2 slots, A receives
 * 2 jobs at once and the third after its first `AgentJobDone`. */
TP_TEST(test_s17_several_slots)
{
    struct tp_peer *c1, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_barrier(c1);
    a = tp_agent(c, "A", 2, "docker/default", NULL);
    tp_expect_job(a, "j1");
    tp_expect_job(a, "j2");
    tp_expect_nothing(a, TP_QUIET_MS);
    tp_done(a, "j1", "success", "");
    tp_expect_job(a, "j3");
}

/* 18. [core] Slot order: A then B say hello with 1 slot each. `j1` goes to A. After A's
 * `AgentJobDone(j1)`, the next job `j2` goes to **B** (freed slots join the end of the
 * list). */
TP_TEST(test_s18_freed_slot_joins_the_end)
{
    struct tp_peer *c1, *a, *b;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    tp_submit(c1, "j2", 0);
    tp_expect_job(b, "j2");
    tp_submit(c1, "j3", 0);
    tp_expect_job(a, "j3");
}

/* 19. [core] A job for an environment that was never announced is accepted and waits with
 * no reply. */
TP_TEST(test_s19_unknown_environment_waits)
{
    struct tp_peer *c1;
    struct tp_job j = {.id = "j", .env_type = "docker", .env = "never"};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_send_job(c1, &j);
    tp_expect_quiet(c, 200);
    queue_expect(c1, "", "j");
}

/* ======================================================================================== */
/* Kill */

/* 20. [core] Kill waiting: given `j` from C1 is waiting, when **C2** sends `ClientKillJob(j)`,
 * then **C1** receives `BackendJobDone(j, ["killed","You killed the job"], 0.0, {}, {}, {},
 * state=j.inputdata["@state"] or "", nil, "", "")`, C2 receives nothing, and `j` is never
 * dispatched later. */
TP_TEST(test_s20_kill_waiting_answers_owner)
{
    struct tp_peer *c1, *c2, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    tp_submit(c1, "j", 0);
    tp_barrier(c1);
    tp_kill(c2, "j");
    tp_expect_synthetic(c1, "j", "killed", "You killed the job", "S-j");
    tp_expect_nothing(c2, TP_QUIET_MS);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_expect_nothing(a, TP_QUIET_MS);
    queue_expect(c2, "", "");
    /* Without @state the state is "". */
    {
        struct tp_job j2 = {.id = "j2", .env = "other"};

        tp_send_job(c1, &j2);
        tp_kill(c1, "j2");
        tp_expect_synthetic(c1, "j2", "killed", "You killed the job", "");
    }
}

/* 21. [core] Kill running: given `j` runs on A, when a client sends `ClientKillJob(j)`, then
 * A receives `BackendKillJob(j, state=@state or "")` and no client receives anything. `j`
 * stays in the running list and holds its slot until A's `AgentJobDone(j)`, which is
 * forwarded to the owner. */
TP_TEST(test_s21_kill_running_goes_to_agent)
{
    struct tp_peer *c1, *c2, *a;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j", 0);
    tp_expect_job(a, "j");
    tp_kill(c2, "j");
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.job_id, "j"));
    assert_true(tp_view_is(m->u.kill.state, "S-j"));
    tp_expect_quiet(c, TP_QUIET_MS);
    queue_expect(c2, "j", "");
    /* The slot is still held. */
    tp_submit(c2, "j2", 0);
    tp_expect_nothing(a, TP_QUIET_MS);
    tp_done(a, "j", "killed", "S-j");
    tp_expect_done(c1, "j", "killed", NULL, "S-j");
    tp_expect_job(a, "j2");
    tp_expect_nothing(c2, TP_QUIET_MS);
}

/* 22. [core] Kill unknown: `ClientKillJob("nope")` causes no message at all. */
TP_TEST(test_s22_kill_unknown_is_silent)
{
    struct tp_peer *c1, *c2;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_kill(c1, "nope");
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_barrier(c1);
}

/* 23. [hard] Kill waiting `j`, then submit `j` again with new input: when an agent becomes
 * free it receives the new input. */
TP_TEST(test_s23_resubmitted_id_gets_new_input)
{
    struct tp_peer *c1, *a;
    struct tp_job old = {.id = "j", .input = "OLD", .state = "s-old"};
    struct tp_job neu = {.id = "j", .input = "NEW", .state = "s-new"};
    uint8_t *want;
    size_t len;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_send_job(c1, &old);
    tp_kill(c1, "j");
    tp_expect_synthetic(c1, "j", "killed", "You killed the job", "s-old");
    tp_send_job(c1, &neu);
    tp_barrier(c1);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_job(a, "j");
    want = tp_job_frame(&neu, ING_BACKEND_NEW_JOB, &len);
    expect_frame_equals(a, want, len, "BackendNewJob (the new input)");
    free(want);
    tp_expect_nothing(a, TP_QUIET_MS);
}

/* ======================================================================================== */
/* Queue snapshot */

/* 24. [core] Given `j1` from C1 running on A (friendly name "A", started at T,
 * `limits.time:30`, course c, task t, launcher L) and `j2` from C2 waiting, when C1 sends
 * `ClientGetQueue`, then it receives `jobs_running = [[j1, true, "A", "c/t", "L", floor(T),
 * 30]]` and `jobs_waiting = [[j2, false, "c/t", "L", 30]]`. */
TP_TEST(test_s24_queue_snapshot)
{
    struct tp_peer *c1, *c2, *a;
    struct tp_job j1 = {.id = "j1", .course = "c", .task = "t", .launcher = "L",
                        .has_time = true, .time = 30};
    struct tp_job j2 = j1;
    struct tp_queue q;
    time_t t0, t1;

    j2.id = "j2";
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    t0 = time(NULL);
    tp_send_job(c1, &j1);
    tp_expect_job(a, "j1");
    t1 = time(NULL);
    tp_send_job(c2, &j2);
    tp_barrier(c2);
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_running, 1);
    assert_string_equal(q.running[0].id, "j1");
    assert_true(q.running[0].mine);
    assert_string_equal(q.running[0].agent, "A");
    assert_string_equal(q.running[0].info, "c/t");
    assert_string_equal(q.running[0].launcher, "L");
    if (q.running[0].started_at < (int64_t)t0 || q.running[0].started_at > (int64_t)t1)
        tp_fail("started_at %lld not within [%lld, %lld]", (long long)q.running[0].started_at,
                (long long)t0, (long long)t1);
    assert_int_equal(q.running[0].max_time, 30);
    assert_int_equal(q.n_waiting, 1);
    assert_string_equal(q.waiting[0].id, "j2");
    assert_false(q.waiting[0].mine);
    assert_string_equal(q.waiting[0].info, "c/t");
    assert_string_equal(q.waiting[0].launcher, "L");
    assert_int_equal(q.waiting[0].max_time, 30);
    tp_queue_free(&q);
    /* From C2's point of view, the flags swap. */
    tp_get_queue(c2, &q);
    assert_int_equal(q.n_running, 1);
    assert_false(q.running[0].mine);
    assert_int_equal(q.n_waiting, 1);
    assert_true(q.waiting[0].mine);
    tp_queue_free(&q);
}

/* 25. [core] Estimate: `limits.time` of `30`→30, `"30"`→30, `12.9`→12, `true`→1, `"abc"`→-1,
 * missing→-1, `environment_parameters` not a map → -1.
 * (proto.md §7.3 refuses a job whose environment_parameters is not a map; the test uses a
 * `limits` that is not a map instead.) */
TP_TEST(test_s25_time_estimate)
{
    static const struct {
        struct tp_bytes raw; /* limits.time, or TP_NONE */
        struct tp_bytes params;
        int64_t want;
    } cases[] = {
        {TP_RAW("\x1e"), TP_NONE, 30},
        {TP_RAW("\xa2" "30"), TP_NONE, 30},
        {TP_RAW("\xcb\x40\x29\xcc\xcc\xcc\xcc\xcc\xcd"), TP_NONE, 12}, /* 12.9 */
        {TP_RAW("\xc3"), TP_NONE, 1},
        {TP_RAW("\xa3" "abc"), TP_NONE, -1},
        {TP_NONE, TP_NONE, -1},                                       /* missing */
        {TP_NONE, TP_RAW("\x81\xa6limits\x05"), -1},                  /* limits: 5 */
        {TP_RAW("\xa4 30 "), TP_NONE, 30},
        {TP_RAW("\xa4" "30.5"), TP_NONE, -1},
        {TP_RAW("\xc2"), TP_NONE, 0},
        {TP_RAW("\xf9"), TP_NONE, -7},
        {TP_RAW("\xcb\xc0\x1e\x00\x00\x00\x00\x00\x00"), TP_NONE, -7}, /* -7.5 */
        {TP_RAW("\xc0"), TP_NONE, -1},                                 /* nil */
        {TP_RAW("\xce\x80\0\0\0"), TP_NONE, INT64_C(2147483648)},        /* 2^31 */
        {TP_RAW("\xa3" "1e3"), TP_NONE, -1},
        {TP_RAW("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff"), TP_NONE, INT64_MAX},
        /* msgpack's uint64 range above INT64_MAX: the ZeroMQ dialect lists it as such
         * (test_zbridge), the native i64 cannot: -1 */
        {TP_RAW("\xcf\x80\0\0\0\0\0\0\0"), TP_NONE, -1},
        {TP_RAW("\xd3\x80\0\0\0\0\0\0\0"), TP_NONE, INT64_MIN},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]), i;
    struct tp_peer *c1;
    struct tp_queue q;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    for (i = 0; i < n; i++) {
        char id[16];
        struct tp_job j = {.id = id, .time_raw = cases[i].raw, .params_raw = cases[i].params};

        snprintf(id, sizeof(id), "t%zu", i);
        tp_send_job(c1, &j);
    }
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_waiting, n);
    for (i = 0; i < n; i++) {
        if (q.waiting[i].max_time != cases[i].want)
            tp_fail("case %zu (%s): max_time %lld, expected %lld", i, q.waiting[i].id,
                    (long long)q.waiting[i].max_time, (long long)cases[i].want);
    }
    tp_queue_free(&q);
}

/* 26. [core] Waiting jobs are listed in arrival order, whatever their priorities. */
TP_TEST(test_s26_waiting_listed_in_arrival_order)
{
    struct tp_peer *c1;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j1", 5);
    tp_submit(c1, "j2", -3);
    tp_submit(c1, "j3", 0);
    tp_submit(c1, "j4", -3);
    queue_expect(c1, "", "j1,j2,j3,j4");
}

/* 27. [core] (main) A job with nil course or task ids shows the environment **name** as
 * `info`. (proto.md §5.5: also when either is empty.) */
TP_TEST(test_s27_taskless_info_is_environment_name)
{
    struct tp_job js[] = {
        {.id = "a", .course = NULL, .task = NULL, .env = "pyenv"},
        {.id = "b", .course = "c", .task = NULL, .env = "pyenv"},
        {.id = "c", .course = NULL, .task = "t", .env = "pyenv"},
        {.id = "d", .course = "", .task = "t", .env = "pyenv"},
        {.id = "e", .course = "c", .task = "t", .env = "pyenv"},
    };
    static const char *const want[] = {"pyenv", "pyenv", "pyenv", "pyenv", "c/t"};
    struct tp_peer *c1;
    struct tp_queue q;
    size_t i;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    for (i = 0; i < 5; i++)
        tp_send_job(c1, &js[i]);
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_waiting, 5);
    for (i = 0; i < 5; i++) {
        if (strcmp(q.waiting[i].info, want[i]) != 0)
            tp_fail("job %s: info \"%s\", expected \"%s\"", q.waiting[i].id, q.waiting[i].info,
                    want[i]);
    }
    tp_queue_free(&q);
}

/* ======================================================================================== */
/* Agent -> backend */

/* 28. [core] `AgentJobStarted(j)` for a running `j` → the owner receives
 * `BackendJobStarted(j)`. For an unknown `j` nothing is sent and the backend keeps serving. */
TP_TEST(test_s28_job_started_relayed)
{
    struct tp_peer *c1, *a;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j", 0);
    tp_expect_job(a, "j");
    tp_started(a, "j");
    m = tp_expect(c1, ING_BACKEND_JOB_STARTED);
    assert_true(tp_view_is(m->u.ref.job_id, "j"));
    tp_started(a, "ghost");
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_barrier(c1);
    tp_done(a, "j", "success", "");
    tp_expect_done(c1, "j", "success", NULL, NULL);
}

/* 29. [core] `AgentJobSSHDebug(j, "h", 64120, "worker", "pw")` for a running `j` → the owner
 * receives `BackendJobSSHDebug(j, "h", 64120, "worker", "pw")`. Unknown `j` → nothing. */
TP_TEST(test_s29_ssh_debug_relayed)
{
    struct tp_peer *c1, *a;
    const struct ing_msg *m;
    struct tp_job j = {.id = "j", .debug = ING_DEBUG_SSH};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_send_job(c1, &j);
    tp_expect_job(a, "j");
    tp_started(a, "j");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_ssh(a, "j", "h", 64120, "worker", "pw");
    m = tp_expect(c1, ING_BACKEND_JOB_SSH_DEBUG);
    assert_true(tp_view_is(m->u.ssh.job_id, "j"));
    assert_true(tp_view_is(m->u.ssh.host, "h"));
    assert_int_equal(m->u.ssh.port, 64120);
    assert_true(tp_view_is(m->u.ssh.user, "worker"));
    assert_true(tp_view_is(m->u.ssh.password, "pw"));
    tp_ssh(a, "ghost", "h", 1, "u", "p");
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_barrier(c1);
}

/* 30. [core] `AgentJobDone(j, …)` from the agent running `j` → the owner receives
 * `BackendJobDone` with all ten values unchanged, including a bin `archive` and nil
 * stdout/stderr. The slot is freed and the best matching waiting job is sent to that agent
 * at once. */
TP_TEST(test_s30_job_done_relayed_unchanged)
{
    struct tp_peer *c1, *a;
    struct tp_result r = {
        .id = "j1",
        .kind = "success",
        .text = "Well done",
        .grade = 87.5,
        .problems = TP_RAW("\x81\xa2q1\x92\xa7success\xa2ok"),
        .tests = TP_RAW("\x81\xa1t\x01"),
        .custom = TP_RAW("\x81\xa1" "c\xcb\x40\x04\x00\x00\x00\x00\x00\x00"),
        .state = "S2",
        .archive = TP_RAW("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\xff"),
        .out = NULL,
        .err = NULL,
    };
    uint8_t *sent;
    size_t len;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 1);
    tp_submit(c1, "j3", 0);
    tp_expect_job(a, "j1");
    tp_done_full(a, &r);
    tp_expect_done(c1, "j1", "success", "Well done", "S2");
    sent = tp_result_frame(&r, ING_AGENT_JOB_DONE, &len);
    expect_body_relayed(c1, sent, len, ING_BACKEND_JOB_DONE, "BackendJobDone");
    free(sent);
    tp_expect_job(a, "j3");
}

/* 31. [core] A non-standard result kind (`"crashed"`) is forwarded unchanged. */
TP_TEST(test_s31_nonstandard_kind_forwarded)
{
    struct tp_peer *c1, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "mcq/default", NULL);
    tp_expect_envs(c1, "mcq:[default]");
    {
        struct tp_job j = {.id = "j", .env_type = "mcq"};

        tp_send_job(c1, &j);
    }
    tp_expect_job(a, "j");
    tp_done(a, "j", "crashed", "st");
    tp_expect_done(c1, "j", "crashed", "", "st");
}

/* 32. [core] `AgentJobDone` for a job that is not running, from a registered agent: dropped,
 * **no slot added**. */
TP_TEST(test_s32_done_for_unknown_job_adds_no_slot)
{
    struct tp_peer *c1, *a;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done(a, "ghost", "success", "");
    tp_submit(c1, "j2", 0);
    tp_expect_quiet(c, 200);
    tp_done(a, "j1", "success", "");
    tp_expect_done(c1, "j1", "success", NULL, NULL);
    tp_expect_job(a, "j2");
    tp_submit(c1, "j3", 0);
    tp_expect_nothing(a, TP_QUIET_MS);
}

/* 33. [core] `AgentJobDone` from an unregistered address: dropped. */
TP_TEST(test_s33_done_from_unregistered_dropped)
{
    struct tp_peer *c1, *a, *u;
    struct tp_result forged = {.id = "j1", .kind = "success", .text = "forged", .grade = 100};
    struct tp_result real = {.id = "j1", .kind = "failed", .text = "real", .grade = 10};

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    u = tp_connect(c, ING_ROLE_AGENT);
    tp_done_full(u, &forged);
    tp_expect_quiet(c, 200);
    queue_expect(c1, "j1", "");
    tp_done_full(a, &real);
    tp_expect_done(c1, "j1", "failed", "real", NULL);
}

/* 34. [hard] `AgentJobDone(j)` from registered agent B while `j` runs on A: dropped with a
 * warning; `j` still runs on A. */
TP_TEST(test_s34_done_from_other_agent_dropped)
{
    struct tp_peer *c1, *a, *b;
    struct tp_result forged = {.id = "j1", .kind = "success", .text = "forged", .grade = 100};
    struct tp_result real = {.id = "j1", .kind = "failed", .text = "real", .grade = 10};
    struct tp_queue q;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_done_full(b, &forged);
    tp_expect_quiet(c, 200);
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_running, 1);
    assert_string_equal(q.running[0].id, "j1");
    assert_string_equal(q.running[0].agent, "A");
    tp_queue_free(&q);
    /* B gained no slot: it takes one job, not two. */
    tp_submit(c1, "j2", 0);
    tp_expect_job(b, "j2");
    tp_submit(c1, "j3", 0);
    tp_expect_quiet(c, TP_QUIET_MS);
    tp_done_full(a, &real);
    tp_expect_done(c1, "j1", "failed", "real", NULL);
    tp_expect_job(a, "j3");
}

/* ======================================================================================== */
/* Heartbeat and agent failure (intervals of 50 ms) */

/* 35. [core] A registered agent receives `Ping` about once per second (here: per
 * --ping-interval). An agent that answers each one with `Pong` is never removed. */
TP_TEST(test_s35_pinged_agent_that_answers_stays)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    assert_int_equal(a->welcome.heartbeat_ms, 50);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_nothing(a, 700); /* 14 periods (x ING_SLOW): twice the removal delay */
    if (a->pings < 5 || a->pings > 20u * (unsigned)tp_slow())
        tp_fail("%u pings in %d ms at a 50 ms interval", a->pings, 700 * tp_slow());
    tp_expect_nothing(c1, 0);
    tp_submit(c1, "j", 0);
    tp_expect_job(a, "j");
}

/* collect_loss reads c1 until it has the crashes of ids (in that order) and the map want
 * (in any position). */
static void
collect_loss(struct tp_peer *c1, const char *const *ids, size_t n, const char *want)
{
    size_t next = 0;
    bool envs = want == NULL;
    char r[1024];

    while (next < n || !envs) {
        const struct ing_msg *m = NULL;
        int t = tp_recv(c1, TP_DEADLINE_MS, &m);
        char st[320];

        if (t == ING_BACKEND_JOB_DONE && next < n) {
            char id[300];

            tp_cpy(id, sizeof(id), m->u.result.job_id);
            if (strcmp(id, ids[next]) != 0)
                tp_fail("crash of %s received, expected %s next (reverse dispatch order)", id,
                        ids[next]);
            if (!tp_view_is(m->u.result.result_kind, "crash") ||
                !tp_view_is(m->u.result.result_text, "Agent restarted"))
                tp_fail("%s: result is not crash \"Agent restarted\"", id);
            snprintf(st, sizeof(st), "S-%s", id);
            if (!tp_view_is(m->u.result.state, st))
                tp_fail("%s: crash state is not its @state %s", id, st);
            tp_check_synthetic(m);
            next++;
        } else if (t == ING_BACKEND_UPDATE_ENVIRONMENTS && !envs) {
            tp_envs_render(m->u.envs.environments, r, sizeof(r));
            if (strcmp(r, want) != 0)
                tp_fail("environments {%s}, expected {%s}", r, want);
            envs = true;
        } else {
            tp_fail("%s: expected crashes and environments {%s}, received %s (%d)", c1->label,
                    want ? want : "", t > 0 ? ing_msg_type_name((uint8_t)t) : "error", t);
        }
    }
}

/* drain_pings reads a removed agent's connection until it closes or stays quiet for
 * 300 ms, counting pings (an Error before the close is allowed). */
static void
drain_pings(struct tp_peer *a)
{
    for (;;) {
        const struct ing_msg *m = NULL;
        int t = tp_recv(a, 300, &m);

        if (t == -EPIPE || t == -ETIMEDOUT)
            return;
        if (t < 0)
            tp_fail("%s: error %d", a->label, t);
        if (t != ING_PING && t != ING_ERROR) /* an Error may announce the close */
            tp_fail("%s: unexpected %s after removal", a->label, ing_msg_type_name((uint8_t)t));
    }
}

/* 36. [core] A silent agent receives exactly 6 `Ping`s and is removed 6–7 periods after it
 * went silent. Every job running on it yields, for its owner, `BackendJobDone(j,
 * ["crash","Agent restarted"], 0.0, {}, {}, {}, state, ...)` ([hard] `@state`), sent in
 * reverse dispatch order. Its slots vanish. Waiting jobs stay queued. */
TP_TEST(test_s36_silent_agent_removed)
{
    static const char *const order[] = {"j2", "j1"};
    struct tp_peer *c1, *a, *b;
    struct tp_env e = env_of("docker", "default");
    uint64_t t0, elapsed;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j1", 0);
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_barrier(c1);
    a = tp_connect(c, ING_ROLE_AGENT);
    a->auto_pong = false;
    t0 = tp_now_ms();
    tp_hello(a, "A", 2, &e, 1);
    tp_expect_job(a, "j1");
    tp_expect_job(a, "j2");
    tp_started(a, "j1");
    tp_started(a, "j2");
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    collect_loss(c1, order, 2, "");
    elapsed = tp_now_ms() - t0;
    if (elapsed < 250)
        tp_fail("agent removed %llu ms after its hello, before 6 ping periods",
                (unsigned long long)elapsed);
    drain_pings(a);
    if (a->pings != 6)
        tp_fail("the silent agent received %u pings, expected exactly 6", a->pings);
    queue_expect(c1, "", "j3");
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_job(b, "j3");
}

/* 37. [core] Traffic other than `Pong` (job results, started, SSH, even a bad frame) keeps an
 * agent alive, as a Pong does (INGInious counts only Pongs; issue 13 #15: an agent busy
 * reading or sending is alive): it is removed 6 unanswered pings after its last frame. */
TP_TEST(test_s37_other_traffic_keeps_alive)
{
    unsigned last = 0; /* pings received when the agent sent its last frame */
    static const char *const order[] = {"j1"};
    struct tp_peer *c1, *a;
    struct tp_env e = env_of("docker", "default");
    struct tp_job j1 = {.id = "j1", .state = "S-j1", .debug = ING_DEBUG_SSH};
    const struct ing_msg *m;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    tp_send_job(c1, &j1);
    tp_submit(c1, "j2", 0);
    tp_barrier(c1);
    a = tp_connect(c, ING_ROLE_AGENT);
    a->auto_pong = false;
    a->see_pings = true;
    a->lenient = true;
    tp_hello(a, "A", 2, &e, 1);
    /* Jobs and pings interleave: read both. */
    for (unsigned jobs = 0; jobs < 2;) {
        int t = tp_recv(a, TP_DEADLINE_MS, &m);

        if (t == ING_BACKEND_NEW_JOB)
            jobs++;
        else if (t != ING_PING)
            tp_fail("agent: unexpected %d", t);
    }
    tp_started(a, "j1");
    tp_ssh(a, "j1", "h", 2222, "worker", "pw");
    /* Answer each later ping with something that is not a Pong. */
    for (unsigned action = 0;; action++) {
        int t;

        switch (action) {
        case 0:
            break;
        case 1:
            tp_done(a, "j2", "success", "S-j2");
            break;
        case 2:
            tp_started(a, "ghost");
            break;
        case 3: {
            static const uint8_t err[] = {0, 5, 0, 0, 0, 1, 'x'};

            tp_send_frame(a, ING_ERROR, 0, err, sizeof(err));
            break;
        }
        case 4:
            tp_done(a, "ghost", "success", "");
            last = a->pings;
            break;
        default:
            break;
        }
        t = tp_recv(a, a->pings >= 6 ? 300 : TP_DEADLINE_MS, &m);
        if (t == -EPIPE || t == -ETIMEDOUT)
            break;
        if (t != ING_PING && t != ING_ERROR) /* an Error may announce the close */
            tp_fail("agent: unexpected %d", t);
    }
    /* 6 after the last frame, or 7 when a tick came between its sending and its reading. */
    if (last < 4 || a->pings < last + 6 || a->pings > last + 7)
        tp_fail("the agent received %u pings, %u of them before its last frame: expected 6 "
                "or 7 after it",
                a->pings, last);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_expect(c1, ING_BACKEND_JOB_SSH_DEBUG);
    tp_expect_done(c1, "j2", "success", NULL, "S-j2");
    collect_loss(c1, order, 1, "");
}

/* 38. [core] A `Pong` from an unknown address is harmless. */
TP_TEST(test_s38_pong_from_unknown_is_harmless)
{
    struct tp_peer *c1, *u, *a;

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    u = tp_connect(c, ING_ROLE_AGENT);
    tp_send_type(u, ING_PONG);
    tp_send_type(u, ING_PONG);
    /* Not registered: not pinged. */
    tp_expect_nothing(u, 200);
    assert_int_equal(u->pings, 0);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j", 0);
    tp_expect_job(a, "j");
    /* The unknown connection can still register. */
    {
        struct tp_env e = env_of("docker", "other");

        tp_hello(u, "U", 1, &e, 1);
    }
    tp_expect_envs(c1, "docker:[default,other]");
}

/* 39. [core] After an agent's removal, its late `AgentJobDone` is dropped. */
TP_TEST(test_s39_late_done_after_removal_dropped)
{
    static const char *const order[] = {"j1"};
    struct tp_peer *c1, *a;
    struct tp_env e = env_of("docker", "default");

    tp_start(c, "--ping-interval", "50ms", NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_connect(c, ING_ROLE_AGENT);
    a->auto_pong = false;
    a->lenient = true;
    tp_hello(a, "A", 1, &e, 1);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    collect_loss(c1, order, 1, "");
    tp_done(a, "j1", "success", "late");
    tp_expect_nothing(c1, 200);
    tp_barrier(c1);
    queue_expect(c1, "", "");
}

/* 40. [hard, optional] After the last agent offering `env` is removed, the environment is
 * withdrawn and rebroadcast (new jobs for it wait). */
TP_TEST(test_s40_environment_withdrawn_with_last_agent)
{
    struct tp_peer *c1, *c2, *a, *b, *a2;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    a2 = tp_agent(c, "A2", 1, "docker/default", "docker/other", NULL);
    tp_expect_envs(c1, "docker:[default,other]");
    b = tp_agent(c, "B", 1, "mcq/quiz", NULL);
    tp_expect_envs(c1, "docker:[default,other];mcq:[quiz]");
    /* A goes: A2 still provides docker/default, so nothing is withdrawn. */
    tp_close(c, a);
    tp_expect_nothing(c1, 200);
    c2 = tp_client(c, "c2", "docker:[default,other];mcq:[quiz]");
    /* A2 goes: every docker environment disappears. */
    tp_close(c, a2);
    tp_expect_envs(c1, "mcq:[quiz]");
    tp_expect_envs(c2, "mcq:[quiz]");
    tp_client(c, "c3", "mcq:[quiz]");
    tp_submit(c1, "j", 0);
    tp_expect_nothing(b, TP_QUIET_MS);
    queue_expect(c1, "", "j");
    /* B goes: the map is empty. */
    tp_close(c, b);
    tp_expect_envs(c1, "");
}

/* ======================================================================================== */
/* Robustness */

/* send_patched_job sends job j as ClientNewJob with the byte at offset off (from the frame
 * start) replaced by val. */
static void
send_patched_job(struct tp_peer *p, const struct tp_job *j, size_t off, uint8_t val)
{
    size_t len;
    uint8_t *f = tp_job_frame(j, ING_CLIENT_NEW_JOB, &len);

    assert_true(off < len);
    f[off] = val;
    tp_send_raw(p, f, len);
    free(f);
}

/* 41. [hard] Each of these inputs, on either port, is logged and dropped, and the backend
 * goes on serving other peers: a non-msgpack payload; a msgpack non-map; ...; a client type
 * on the agent port or an agent type from a registered client.
 * (Native: proto.md §3 — a malformed body, an unknown type, a known type in the wrong
 * direction or role get an Error, the frame is dropped and the connection stays usable.) */
TP_TEST(test_s41_bad_frames_dropped_connection_usable)
{
    struct tp_peer *c1, *c2, *a, *u;
    const struct ing_msg *m;
    char text[300];
    /* ClientNewJob of id "jb": hdr 6 + priority 8 + launcher 4+6 + id 4+2 + nil course 4 +
     * nil task 4 + "docker" 4+6 + "default" 4+7 = debug at offset 59. */
    struct tp_job jb = {.id = "jb"};
    const size_t debug_off = 6 + 8 + 10 + 6 + 4 + 4 + 10 + 11;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");

    /* ClientHello with a trailing byte. */
    tp_send_frame(c1, ING_CLIENT_HELLO, 0, "\x00\x00\x00\x02" "c1!", 7);
    m = tp_expect_error(c1, ING_ERR_MALFORMED);
    tp_cpy(text, sizeof(text), m->u.error.text);
    if (strstr(text, "ClientHello") == NULL)
        tp_fail("the MALFORMED text \"%s\" does not name the type ClientHello", text);
    tp_barrier(c1);
    /* ClientHello with an empty body (truncated). */
    tp_send_frame(c1, ING_CLIENT_HELLO, 0, "", 0);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    /* ClientKillJob with a truncated string. */
    tp_send_frame(c1, ING_CLIENT_KILL_JOB, 0, "\x00\x00\x00\x05" "ab", 6);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    /* ClientKillJob with invalid UTF-8. */
    tp_send_frame(c1, ING_CLIENT_KILL_JOB, 0, "\x00\x00\x00\x02\xc3\x28", 6);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    /* Non-zero frame flags. */
    tp_send_frame(c1, ING_PING, 1, "", 0);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    /* Ping with a body. */
    tp_send_frame(c1, ING_PING, 0, "x", 1);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    tp_barrier(c1);
    /* ClientNewJob whose inputdata is not msgpack (0xc1), or an ext value. */
    {
        struct tp_job bad = {.id = "jx", .inputdata_raw = TP_RAW("\xc1")};
        struct tp_job ext = {.id = "jy", .inputdata_raw = TP_RAW("\xd4\x01\x00")};
        struct tp_job trailing = {.id = "jz", .inputdata_raw = TP_RAW("\x80\x80")};

        tp_send_job(c1, &bad);
        tp_expect_error(c1, ING_ERR_MALFORMED);
        tp_send_job(c1, &ext);
        tp_expect_error(c1, ING_ERR_MALFORMED);
        tp_send_job(c1, &trailing);
        tp_expect_error(c1, ING_ERR_MALFORMED);
    }
    /* A debug value of 3. */
    send_patched_job(c1, &jb, debug_off, 3);
    tp_expect_error(c1, ING_ERR_MALFORMED);
    /* An unknown type. */
    tp_send_frame(c1, 0x7f, 0, "abc", 3);
    tp_expect_error(c1, ING_ERR_UNKNOWN_TYPE);
    /* Agent and backend types from a registered client. */
    {
        struct tp_env e = env_of("docker", "default");

        tp_hello(c1, "evil", 1, &e, 1);
        tp_expect_error(c1, ING_ERR_UNEXPECTED);
        tp_done(c1, "jb", "success", "");
        tp_expect_error(c1, ING_ERR_UNEXPECTED);
        tp_send_frame(c1, ING_BACKEND_JOB_STARTED, 0, "\x00\x00\x00\x02jb", 6);
        tp_expect_error(c1, ING_ERR_UNEXPECTED);
    }
    tp_barrier(c1);
    /* Nothing of it was stored. */
    queue_expect(c1, "", "");

    /* The agent port. */
    a = tp_connect(c, ING_ROLE_AGENT);
    tp_client_hello(a, "not a client");
    tp_expect_error(a, ING_ERR_UNEXPECTED);
    tp_send_job(a, &jb);
    tp_expect_error(a, ING_ERR_UNEXPECTED);
    tp_send_frame(a, 0x7e, 0, "", 0);
    tp_expect_error(a, ING_ERR_UNKNOWN_TYPE);
    tp_hello_raw(a, "A", 1, TP_RAW("\xc1"));
    tp_expect_error(a, ING_ERR_MALFORMED);
    tp_send_frame(a, ING_AGENT_HELLO, 0, "\x00\x00\x00\x01" "A", 5);
    tp_expect_error(a, ING_ERR_MALFORMED);
    /* Still usable: a proper hello registers it. */
    {
        struct tp_env e = env_of("docker", "default");

        tp_hello(a, "A", 1, &e, 1);
    }
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_send_job(c1, &jb);
    tp_expect_job(a, "jb");
    /* An Error frame from a peer is only logged. */
    tp_send_frame(c2, ING_ERROR, 0, "\x00\x07\x00\x00\x00\x01?", 7);
    tp_expect_nothing(c2, TP_QUIET_MS);
    /* Other peers were served all along. */
    tp_barrier(c2);
    u = tp_client(c, "c3", ENV_DEFAULT);
    tp_barrier(u);
}

/* 42. [hard] `ClientNewJob` with ... non-string ids, or a non-map `inputdata` or
 * `environment_parameters` is refused: the sender receives `BackendJobDone(j, ["crash",
 * <reason>], …)`. Other jobs of that topic keep being dispatched. (Reasons: proto.md §7.3.) */
TP_TEST(test_s42_invalid_jobs_refused)
{
    char long_id[257], long_env[257];
    struct {
        struct tp_job j;
        const char *reason;
    } cases[] = {
        {{.id = ""}, "Invalid job id"},
        {{.id = long_id}, "Invalid job id"},
        {{.id = "e1", .env = ""}, "Invalid environment"},
        {{.id = "e2", .env_type = ""}, "Invalid environment"},
        {{.id = "e3", .env = long_env}, "Invalid environment"},
        {{.id = "i1", .inputdata_raw = TP_RAW("\x90")}, "Invalid inputdata: not a map"},
        {{.id = "i2", .inputdata_raw = TP_RAW("\xa3" "abc")}, "Invalid inputdata: not a map"},
        {{.id = "p1", .problems_raw = TP_RAW("\xa1x")}, "Invalid task_problems: not a map"},
        {{.id = "x1", .params_raw = TP_RAW("\x05")},
         "Invalid environment_parameters: not a map"},
        {{.id = "s1", .inputdata_raw = TP_RAW("\x81\xa6@state\x05")},
         "Invalid @state: not a string"},
        {{.id = "s2", .inputdata_raw = TP_RAW("\x81\xa6@state\xc0")},
         "Invalid @state: not a string"},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]), i;
    struct tp_peer *c1, *c2, *a;

    memset(long_id, 'j', 256);
    long_id[256] = '\0';
    memset(long_env, 'e', 256);
    long_env[256] = '\0';
    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    for (i = 0; i < n; i++) {
        tp_send_job(c1, &cases[i].j);
        tp_expect_synthetic(c1, cases[i].j.id, "crash", cases[i].reason, "");
    }
    tp_expect_quiet(c, TP_QUIET_MS);
    queue_expect(c1, "", "");
    /* The 255-byte limits are inclusive. */
    long_id[255] = '\0';
    long_env[255] = '\0';
    {
        struct tp_job ok = {.id = long_id, .env = "default"};
        struct tp_job ok2 = {.id = "ok2", .env = long_env};

        tp_send_job(c1, &ok);
        tp_expect_job(a, long_id);
        tp_send_job(c1, &ok2);
        tp_expect_nothing(c1, TP_QUIET_MS);
        queue_expect(c2, long_id, "ok2");
    }
}

/* 43. [core] A client disconnects with jobs waiting ... The backend continues.
 * (Native, proto.md §7.1: the disconnected client's waiting jobs are dropped and its running
 * jobs are killed on their agents.) */
TP_TEST(test_s43_client_disconnect_drops_and_kills)
{
    struct tp_peer *c1, *c2, *a;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c2 = tp_client(c, "c2", "");
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_started(a, "j1");
    tp_submit(c1, "j2", 0);
    tp_submit(c1, "j3", 0);
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_barrier(c1);
    tp_close(c, c1);
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.job_id, "j1"));
    assert_true(tp_view_is(m->u.kill.state, "S-j1"));
    tp_done(a, "j1", "killed", "S-j1");
    /* j2 and j3 were dropped: the freed slot stays free. */
    tp_expect_quiet(c, 200);
    queue_expect(c2, "", "");
    tp_submit(c2, "j4", 0);
    tp_expect_job(a, "j4");
}

/* 44. [core] A message for a departed peer (client or agent) never blocks and never
 * errors. */
TP_TEST(test_s44_messages_for_departed_peers)
{
    struct tp_peer *c1, *c2, *a, *b;
    const struct ing_msg *m;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    c2 = tp_client(c, "c2", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    /* The client vanishes with a reset: its running job is killed on the agent (§7.1);
     * the agent goes on reporting about it, to nobody. */
    tp_abort(c, c1);
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.job_id, "j1"));
    tp_started(a, "j1");
    tp_ssh(a, "j1", "h", 22, "u", "p");
    tp_done(a, "j1", "killed", "");
    tp_barrier(c2);
    tp_submit(c2, "j2", 0);
    tp_expect_job(a, "j2");
    /* An agent vanishes while a client kills its job: whichever the backend sees first,
     * the owner gets exactly one result. */
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c2, ENV_DEFAULT);
    tp_submit(c2, "j3", 0);
    tp_expect_job(b, "j3");
    tp_started(b, "j3");
    tp_expect(c2, ING_BACKEND_JOB_STARTED);
    tp_abort(c, b);
    tp_kill(c2, "j3");
    /* Loss first: crash "Agent restarted" (§7.5), the kill then finds nothing. Kill first:
     * BackendKillJob goes to a dead agent, then the loss ends the job (crash, or killed as
     * asked). Either way exactly one result, with the @state. */
    m = tp_expect_done(c2, "j3", NULL, NULL, "S-j3");
    if (!tp_view_is(m->u.result.result_kind, "crash") &&
        !tp_view_is(m->u.result.result_kind, "killed"))
        tp_fail("j3 ended neither crash nor killed");
    tp_check_synthetic(m);
    tp_barrier(c2);
    tp_done(a, "j2", "success", "");
    tp_expect_done(c2, "j2", "success", NULL, NULL);
    tp_expect_quiet(c, TP_QUIET_MS);
}

/* 45. [core] After a backend restart, a stock client's next `Ping` is answered with
 * `Unknown`. The client re-registers (from a new address) and receives `{}`. Stock agents say
 * hello again, and then every registered client receives the populated map. */
TP_TEST(test_s45_restart_forgets_everything)
{
    struct tp_peer *c1, *a;
    int st;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_submit(c1, "j", 0);
    tp_expect_job(a, "j");
    tp_close(c, a);
    tp_close(c, c1);
    st = tp_stop(c);
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
        tp_fail("the backend did not exit 0 on SIGTERM (status 0x%x)", (unsigned)st);

    tp_start(c, NULL);
    c1 = tp_connect(c, ING_ROLE_CLIENT);
    tp_send_type(c1, ING_PING);
    tp_expect(c1, ING_UNKNOWN);
    tp_client_hello(c1, "c1");
    tp_expect_envs(c1, "");
    queue_expect(c1, "", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, ENV_DEFAULT);
    tp_expect_nothing(a, TP_QUIET_MS);
}

/* ---- 46 ---- */

#define S46_JOBS 1000
#define S46_ENVS 10
#define S46_AGENTS 50
#define S46_SLOTS 4

struct s46_job {
    char id[8];
    int env;
    int64_t prio;
    int state; /* 0 waiting, 1 running, 2 done */
    int agent;
    unsigned dispatched;
};

struct s46_agent {
    struct tp_peer *p;
    char name[8];
    unsigned mask;
    int running[S46_SLOTS];
    int n_running;
};

static uint64_t s46_rng = 0x2545F4914F6CDD1DULL;

static uint32_t
s46_rand(void)
{
    s46_rng ^= s46_rng << 13;
    s46_rng ^= s46_rng >> 7;
    s46_rng ^= s46_rng << 17;
    return (uint32_t)(s46_rng >> 16);
}

/* s46_best returns the waiting job of least (priority, arrival) among mask, or -1. */
static int
s46_best(const struct s46_job *jobs, unsigned mask)
{
    int best = -1;

    for (int i = 0; i < S46_JOBS; i++) {
        if (jobs[i].state != 0 || !(mask & (1u << jobs[i].env)))
            continue;
        if (best < 0 || jobs[i].prio < jobs[best].prio)
            best = i;
    }
    return best;
}

/* s46_dispatch expects the predicted job on agent k, and records it. */
static bool
s46_dispatch(struct s46_job *jobs, struct s46_agent *ag, int k)
{
    int b = s46_best(jobs, ag[k].mask);

    if (b < 0)
        return false;
    if (ag[k].n_running >= S46_SLOTS)
        tp_fail("bookkeeping: agent %s full", ag[k].name);
    tp_expect_job(ag[k].p, jobs[b].id);
    jobs[b].state = 1;
    jobs[b].agent = k;
    jobs[b].dispatched++;
    ag[k].running[ag[k].n_running++] = b;
    return true;
}

/* s46_check_queue compares the backend's queue with the bookkeeping. */
static void
s46_check_queue(struct tp_peer *cl, const struct s46_job *jobs, const struct s46_agent *ag)
{
    struct tp_queue q;
    uint32_t nr = 0, nw = 0, i;
    int k;

    for (k = 0; k < S46_JOBS; k++) {
        nr += jobs[k].state == 1;
        nw += jobs[k].state == 0;
    }
    tp_get_queue(cl, &q);
    if (q.n_running != nr || q.n_waiting != nw)
        tp_fail("queue: %u running %u waiting, bookkeeping %u and %u", q.n_running, q.n_waiting,
                nr, nw);
    for (i = 0; i < q.n_running; i++) {
        int j = atoi(q.running[i].id + 1);

        if (j < 0 || j >= S46_JOBS || jobs[j].state != 1 ||
            strcmp(q.running[i].agent, ag[jobs[j].agent].name) != 0)
            tp_fail("queue: running %s on %s does not match the bookkeeping", q.running[i].id,
                    q.running[i].agent);
    }
    /* Waiting: every waiting job, in arrival order. */
    k = 0;
    for (i = 0; i < q.n_waiting; i++) {
        while (k < S46_JOBS && jobs[k].state != 0)
            k++;
        if (k >= S46_JOBS || strcmp(q.waiting[i].id, jobs[k].id) != 0)
            tp_fail("queue: waiting entry %u is %s, expected %s", i, q.waiting[i].id,
                    k < S46_JOBS ? jobs[k].id : "nothing");
        k++;
    }
    tp_queue_free(&q);
}

/* 46. [core] 1,000 waiting jobs across 10 topics, with 50 agents of 4 slots each announcing
 * random subsets of topics: every dispatch respects (priority, arrival) within the union of
 * the agent's topics. No job is dispatched twice. Every job gets exactly one
 * `BackendJobDone`. The number of busy slots equals the number of running jobs at all times.
 *
 * The jobs are all queued first; then the agents say hello one at a time and finish one job
 * at a time (a random busy agent, a random job of it), so the waiting set at each dispatch
 * is known exactly and every dispatch (which job, to which agent, or none) is predicted. */
TP_TEST(test_s46_stress_dispatch_order)
{
    struct s46_job *jobs = calloc(S46_JOBS, sizeof(*jobs));
    struct s46_agent ag[S46_AGENTS];
    unsigned doneres[S46_JOBS];
    struct tp_peer *cl;
    struct ing_mp_writer w;
    int i, k, finished = 0, steps = 0;

    assert_non_null(jobs);
    memset(ag, 0, sizeof(ag));
    memset(doneres, 0, sizeof(doneres));
    tp_start(c, "--ping-max", "1000000", "--max-waiting", "100000", "--max-waiting-per-client",
             "100000", "--max-connections", "1000", NULL);
    cl = tp_client(c, "c1", "");

    /* 1,000 jobs in one write. */
    ing_mp_writer_init_dyn(&w);
    for (i = 0; i < S46_JOBS; i++) {
        char env[8];
        struct tp_job j = {.id = jobs[i].id};
        uint8_t *f;
        size_t len;

        snprintf(jobs[i].id, sizeof(jobs[i].id), "j%04d", i % 10000);
        jobs[i].env = (int)(s46_rand() % S46_ENVS);
        jobs[i].prio = (int64_t)(s46_rand() % 5) - 2;
        snprintf(env, sizeof(env), "e%d", jobs[i].env);
        j.env = env;
        j.priority = jobs[i].prio;
        f = tp_job_frame(&j, ING_CLIENT_NEW_JOB, &len);
        ing_mp_put_raw(&w, f, len);
        free(f);
    }
    assert_int_equal(w.err, 0);
    tp_send_raw(cl, w.buf, w.len);
    ing_mp_writer_fini(&w);
    tp_barrier(cl);
    s46_check_queue(cl, jobs, ag);

    /* Agents, one at a time; the client's BackendUpdateEnvironments follows each hello. */
    for (k = 0; k < S46_AGENTS; k++) {
        struct tp_env envs[S46_ENVS];
        char names[S46_ENVS][8];
        size_t n = 0;

        ag[k].mask = 1u << (k % S46_ENVS);
        for (i = 0; i < S46_ENVS; i++) {
            if (s46_rand() % 4 == 0)
                ag[k].mask |= 1u << i;
        }
        for (i = 0; i < S46_ENVS; i++) {
            if (ag[k].mask & (1u << i)) {
                snprintf(names[n], sizeof(names[n]), "e%d", i);
                envs[n] = env_of("docker", names[n]);
                n++;
            }
        }
        snprintf(ag[k].name, sizeof(ag[k].name), "A%02d", k % 100);
        ag[k].p = tp_connect(c, ING_ROLE_AGENT);
        tp_hello(ag[k].p, ag[k].name, S46_SLOTS, envs, n);
        tp_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
        for (i = 0; i < S46_SLOTS; i++) {
            if (!s46_dispatch(jobs, ag, k))
                break;
        }
    }
    s46_check_queue(cl, jobs, ag);

    /* Finish jobs one by one. */
    while (finished < S46_JOBS) {
        int busy[S46_AGENTS], nb = 0, slot, j;
        const struct ing_msg *m;

        for (k = 0; k < S46_AGENTS; k++) {
            if (ag[k].n_running > 0)
                busy[nb++] = k;
        }
        if (nb == 0)
            tp_fail("no busy agent with %d jobs unfinished", S46_JOBS - finished);
        k = busy[s46_rand() % (unsigned)nb];
        slot = (int)(s46_rand() % (unsigned)ag[k].n_running);
        j = ag[k].running[slot];
        ag[k].running[slot] = ag[k].running[--ag[k].n_running];
        tp_started(ag[k].p, jobs[j].id);
        tp_done(ag[k].p, jobs[j].id, "success", "");
        m = tp_expect(cl, ING_BACKEND_JOB_STARTED);
        if (!tp_view_is(m->u.ref.job_id, jobs[j].id))
            tp_fail("BackendJobStarted for another job than %s", jobs[j].id);
        tp_expect_done(cl, jobs[j].id, "success", NULL, NULL);
        jobs[j].state = 2;
        doneres[j]++;
        finished++;
        s46_dispatch(jobs, ag, k);
        if (++steps % 100 == 0)
            s46_check_queue(cl, jobs, ag);
    }
    for (i = 0; i < S46_JOBS; i++) {
        if (jobs[i].dispatched != 1 || doneres[i] != 1)
            tp_fail("%s dispatched %u times, %u results", jobs[i].id, jobs[i].dispatched,
                    doneres[i]);
    }
    s46_check_queue(cl, jobs, ag);
    tp_expect_quiet(c, 200);
    free(jobs);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_s01_ping_before_hello_is_unknown),
        TP_CASE(test_s02_unregistered_requests_are_unknown),
        TP_CASE(test_s03_hello_gets_environments_then_pong),
        TP_CASE(test_s04_hello_and_job_in_one_write),
        TP_CASE(test_s05_repeated_hello),
        TP_CASE(test_s06_agent_hello_broadcasts_environments),
        TP_CASE(test_s07_hidden_environment_dispatched),
        TP_CASE(test_s08_missing_advertised_is_true),
        TP_CASE(test_s09_versions_do_not_affect_dispatch),
        TP_CASE(test_s10_rehello_crashes_started_jobs),
        TP_CASE(test_s11_zero_slot_agent),
        TP_CASE(test_s12_job_spec_relayed_unchanged),
        TP_CASE(test_s13_duplicate_job_id),
        TP_CASE(test_s14_priority_then_fifo),
        TP_CASE(test_s15_priority_across_topics),
        TP_CASE(test_s16_topic_mismatch_waits),
        TP_CASE(test_s17_several_slots),
        TP_CASE(test_s18_freed_slot_joins_the_end),
        TP_CASE(test_s19_unknown_environment_waits),
        TP_CASE(test_s20_kill_waiting_answers_owner),
        TP_CASE(test_s21_kill_running_goes_to_agent),
        TP_CASE(test_s22_kill_unknown_is_silent),
        TP_CASE(test_s23_resubmitted_id_gets_new_input),
        TP_CASE(test_s24_queue_snapshot),
        TP_CASE(test_s25_time_estimate),
        TP_CASE(test_s26_waiting_listed_in_arrival_order),
        TP_CASE(test_s27_taskless_info_is_environment_name),
        TP_CASE(test_s28_job_started_relayed),
        TP_CASE(test_s29_ssh_debug_relayed),
        TP_CASE(test_s30_job_done_relayed_unchanged),
        TP_CASE(test_s31_nonstandard_kind_forwarded),
        TP_CASE(test_s32_done_for_unknown_job_adds_no_slot),
        TP_CASE(test_s33_done_from_unregistered_dropped),
        TP_CASE(test_s34_done_from_other_agent_dropped),
        TP_CASE(test_s35_pinged_agent_that_answers_stays),
        TP_CASE(test_s36_silent_agent_removed),
        TP_CASE(test_s37_other_traffic_keeps_alive),
        TP_CASE(test_s38_pong_from_unknown_is_harmless),
        TP_CASE(test_s39_late_done_after_removal_dropped),
        TP_CASE(test_s40_environment_withdrawn_with_last_agent),
        TP_CASE(test_s41_bad_frames_dropped_connection_usable),
        TP_CASE(test_s42_invalid_jobs_refused),
        TP_CASE(test_s43_client_disconnect_drops_and_kills),
        TP_CASE(test_s44_messages_for_departed_peers),
        TP_CASE(test_s45_restart_forgets_everything),
        TP_CASE(test_s46_stress_dispatch_order),
    };

    /* TP_FILTER=pattern runs only the matching tests (cmocka wildcards). */
    if (getenv("TP_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TP_FILTER"));
    return cmocka_run_group_tests_name("scenarios", tests, NULL, NULL);
}
