/* SPDX-License-Identifier: MIT */
/* test_agent.c: the agent library (include/inginious/agent.h) against the real backend; the
 * client side is the client library, both spun in this process (libtest.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/agent.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "support/libtest.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

static struct ing_client_job
job(struct lt_world *w, const char *id)
{
    struct ing_client_job j = {
        .job_id = id, .environment_type = "docker", .environment = "default"};
    char input[128];

    snprintf(input, sizeof(input), "{\"@state\": \"S-%s\"}", id);
    j.inputdata = lt_mp(w, input);
    return j;
}

static void
submit_ok(struct lt_client *cl, const struct ing_client_job *j)
{
    int rc = ing_client_submit(cl->c, j);

    if (rc != 0)
        fail_msg("submit %s: %s", j->job_id, ing_strerror(rc));
}

static struct ing_view
sv(const char *s)
{
    struct ing_view v = {s, (uint32_t)strlen(s)};

    return v;
}

/* done reports a plain result for id. */
static void
done(struct lt_agent *ag, const char *id, const char *kind, const char *state)
{
    struct ing_job_result r;

    memset(&r, 0, sizeof(r));
    r.job_id = sv(id);
    r.result_kind = sv(kind);
    r.result_text = sv("by the test agent");
    r.grade = 42.0;
    r.problems = r.tests = r.custom = sv("\x80");
    r.state = sv(state);
    r.stdout_ = r.stderr_ = sv("");
    assert_int_equal(ing_agent_done(ag->a, &r), 0);
}

static bool
view_is(struct ing_view v, const char *s)
{
    return v.p != NULL && ing_view_eq(v, s);
}

/* ------------------------------------------------------------------------------------------ */

/* Hello: the agent's environments reach the clients (hidden ones listed with no name); a job
 * comes as an event; started and done reach the client. */
static void
test_agent_hello_job_done(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env envs[] = {
        {"docker", "default", "sha256:1", 1700000000, true},
        {"docker", "python3", "sha256:2", 1700000001, true},
        {"mcq", "hidden", "x", 0, false},
    };
    struct ing_agent_opts o = {.name = "agent-1", .slots = 2, .envs = envs, .nenvs = 3};
    struct lt_client *cl;
    struct lt_agent *ag;
    struct lt_aev *a;
    struct lt_cev *e;
    struct ing_client_job j;

    lt_start(w, NULL, NULL, NULL);
    cl = lt_client_new(w, NULL);
    ag = lt_agent_add(w, &o, false);
    assert_int_equal(ing_agent_fd(ag->a), -1);
    assert_int_equal(ing_agent_connect(ag->a), 0);
    assert_true(ing_agent_fd(ag->a) >= 0);
    assert_int_equal(ing_agent_connect(ag->a), -EISCONN);
    assert_string_equal(ing_agent_last_error(ag->a), "");
    lt_wait_envs(w, cl, "docker:[default,python3];mcq:[]");
    lt_expect_aev(w, ag, ING_AGENT_EV_CONNECTED, NULL);

    j = job(w, "h-1");
    j.environment = "python3";
    submit_ok(cl, &j);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "h-1");
    assert_string_equal(a->job.env, "python3");
    assert_true(a->job.course_nil);
    assert_true(lt_mp_eq_json(a->job.input, a->job.input_len, "{\"@state\": \"S-h-1\"}"));
    assert_int_equal(ing_agent_started(ag->a, sv("h-1")), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "h-1");
    done(ag, "h-1", "success", "S-next");
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "h-1");
    assert_true(view_is(e->res.r.result_kind, "success"));
    assert_true(view_is(e->res.r.result_text, "by the test agent"));
    assert_true(e->res.r.grade == 42.0);
    assert_true(view_is(e->res.r.state, "S-next"));
    lt_pass(w);
}

/* A kill of a running job is an event carrying the job's @state; the agent's answer reaches
 * the owner. */
static void
test_agent_kill_event(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *ag;
    struct lt_aev *a;
    struct lt_cev *e;
    struct ing_client_job j;

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_new(w, "a1", 1, false, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j = job(w, "k-1");
    submit_ok(cl, &j);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "k-1");
    assert_int_equal(ing_agent_started(ag->a, sv("k-1")), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "k-1");
    assert_int_equal(ing_client_kill(cl->c, "k-1"), 0);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_KILL, "k-1");
    assert_string_equal(a->state, "S-k-1");
    done(ag, "k-1", "killed", a->state);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "k-1");
    assert_true(view_is(e->res.r.result_kind, "killed"));
    assert_true(view_is(e->res.r.state, "S-k-1"));
    /* the slot is free again: the next job comes */
    j = job(w, "k-2");
    submit_ok(cl, &j);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "k-2");
    lt_pass(w);
}

struct until_ms {
    uint64_t at;
};

static bool
time_passed(struct lt_world *w, void *arg)
{
    struct until_ms *u = arg;

    (void)w;
    return lt_now_ms() >= u->at;
}

/* Pings are answered by the library: with a 50 ms heartbeat and 2 missed pings allowed, the
 * agent stays registered for over a second (it would be dropped after ~150 ms otherwise). */
static void
test_agent_pings_answered(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env env = {"mcq", "quiet", "i1", 1, true};
    struct ing_agent_opts o = {.name = "deaf", .slots = 1, .envs = &env, .nenvs = 1};
    struct ing_agent *deaf;
    struct lt_client *cl;
    struct lt_agent *ag;
    struct until_ms u;
    struct ing_client_job j;

    lt_start(w, NULL, NULL, "--ping-interval", "50ms", "--ping-max", "2", NULL);
    ag = lt_agent_new(w, "pinged", 1, true, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    /* the control: an agent nobody processes does not answer, and is removed */
    o.addr = w->agent_addr;
    deaf = ing_agent_new(&o);
    assert_non_null(deaf);
    assert_int_equal(ing_agent_connect(deaf), 0);
    lt_wait_envs(w, cl, "docker:[default];mcq:[quiet]");
    u.at = lt_now_ms() + 1200;
    lt_until(w, time_passed, &u, "1.2 s of pings");
    lt_wait_envs(w, cl, "docker:[default]");
    assert_true(lt_log_contains(w, "agent deaf missed"));
    assert_false(lt_log_contains(w, "agent pinged missed"));
    assert_null(lt_find_aev(ag, ING_AGENT_EV_DISCONNECTED, NULL));
    j = job(w, "p-1");
    submit_ok(cl, &j);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "p-1");
    ing_agent_free(deaf);
    lt_pass(w);
}

/* The backend restarts on the same TCP port: the agent reports the loss, retries with a delay
 * doubling from backoff_min to backoff_max, and says hello again once the backend is back. */
static void
test_agent_reconnect_backoff(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_opts o = {.name = "phoenix",
                               .slots = 1,
                               .envs = &env,
                               .nenvs = 1,
                               .reconnect = true,
                               .backoff_min_ms = 40,
                               .backoff_max_ms = 320};
    struct lt_client *cl;
    struct lt_agent *ag;
    struct lt_aev *a;
    struct ing_client_job j;
    int delays[16], n = 0, prev = -1;
    uint64_t end;

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_add(w, &o, false);
    assert_int_equal(ing_agent_connect(ag->a), 0);
    lt_expect_aev(w, ag, ING_AGENT_EV_CONNECTED, NULL);
    lt_kill_backend(w, SIGKILL);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_DISCONNECTED, NULL);
    assert_true(a->err < 0);
    assert_int_equal(ing_agent_fd(ag->a), -1);
    assert_int_equal(ing_agent_started(ag->a, sv("x")), -ENOTCONN);

    /* watch the retry delays while the backend is away: each failed attempt schedules the
     * next one; the delay the agent announces jumps up right after an attempt */
    end = lt_now_ms() + 1500;
    while (lt_now_ms() < end && n < 16) {
        int t = ing_agent_timeout_ms(ag->a);
        if (t > prev)
            delays[n++] = t;
        prev = t;
        lt_spin(w, 50);
    }
    assert_true(n >= 4);
    /* first announced: at most the min; then doubling, capped at the max */
    assert_true(delays[0] <= 40);
    assert_true(delays[1] > 40 && delays[1] <= 80);
    assert_true(delays[2] > 80 && delays[2] <= 160);
    assert_true(delays[3] > 160 && delays[3] <= 320);
    for (int i = 4; i < n; i++)
        assert_true(delays[i] > 160 && delays[i] <= 320);

    lt_restart(w);
    lt_expect_aev(w, ag, ING_AGENT_EV_CONNECTED, NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j = job(w, "re-1");
    submit_ok(cl, &j);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "re-1");
    lt_pass(w);
}

/* The agent restarts mid-job (a new connection): its started job ends crash "Agent
 * restarted" with the job's @state; the one it had not started goes back to the queue and
 * reaches the new agent (proto.md §7.5). */
static void
test_agent_restarted_mid_job(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *a1, *a2;
    struct lt_cev *e;
    struct ing_client_job j1, j2;

    lt_start(w, NULL, NULL, NULL);
    a1 = lt_agent_new(w, "a", 2, false, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j1 = job(w, "m-started");
    j2 = job(w, "m-unstarted");
    submit_ok(cl, &j1);
    submit_ok(cl, &j2);
    lt_expect_aev(w, a1, ING_AGENT_EV_JOB, "m-started");
    lt_expect_aev(w, a1, ING_AGENT_EV_JOB, "m-unstarted");
    assert_int_equal(ing_agent_started(a1->a, sv("m-started")), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "m-started");

    lt_agent_drop(w, a1);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "m-started");
    assert_false(e->lost);
    assert_true(view_is(e->res.r.result_kind, "crash"));
    assert_true(view_is(e->res.r.result_text, "Agent restarted"));
    assert_true(view_is(e->res.r.state, "S-m-started"));
    assert_true(e->res.r.grade == 0.0);
    assert_null(e->res.r.archive.p);
    lt_wait_envs(w, cl, "");

    a2 = lt_agent_new(w, "a", 2, false, "docker/default", NULL);
    lt_expect_aev(w, a2, ING_AGENT_EV_JOB, "m-unstarted");
    assert_true(ing_client_is_pending(cl->c, "m-unstarted"));
    assert_null(lt_find_aev(a2, ING_AGENT_EV_JOB, "m-started"));
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_DONE, "m-unstarted"));
    /* a report from the old job is ignored: the client hears nothing */
    done(a2, "m-started", "success", "");
    lt_barrier(w, cl);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_DONE, "m-started"));
    lt_pass(w);
}

/* With --retry-lost-jobs 1 the started job is requeued instead, and runs on the new agent. */
static void
test_agent_restarted_retry(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *a1, *a2;
    struct lt_cev *e;
    struct ing_client_job j1;

    lt_start(w, NULL, NULL, "--retry-lost-jobs", "1", NULL);
    a1 = lt_agent_new(w, "a", 1, false, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j1 = job(w, "rt-1");
    submit_ok(cl, &j1);
    lt_expect_aev(w, a1, ING_AGENT_EV_JOB, "rt-1");
    assert_int_equal(ing_agent_started(a1->a, sv("rt-1")), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "rt-1");
    lt_agent_drop(w, a1);
    a2 = lt_agent_new(w, "a", 1, true, "docker/default", NULL);
    lt_expect_aev(w, a2, ING_AGENT_EV_JOB, "rt-1");
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "rt-1");
    assert_true(view_is(e->res.r.result_kind, "success")); /* the scripted agent's result */
    lt_pass(w);
}

/* A hello the backend refuses (too many slots) is an Error event. */
static void
test_agent_error_event(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_opts o = {.name = "greedy", .slots = 65537, .envs = &env, .nenvs = 1};
    struct lt_agent *ag;
    struct lt_aev *a;

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_add(w, &o, false);
    assert_int_equal(ing_agent_connect(ag->a), 0); /* the Welcome comes before the refusal */
    a = lt_expect_aev(w, ag, ING_AGENT_EV_ERROR, NULL);
    assert_true(a->code == ING_ERR_INVALID || a->code == ING_ERR_LIMIT);
    assert_non_null(strstr(a->text, "slots"));
    assert_non_null(strstr(ing_agent_last_error(ag->a), "slots"));
    lt_pass(w);
}

/* The backend stops answering (SIGSTOP): after ten heartbeats of silence (at least 2 s) the
 * agent declares the connection dead, as the INGInious agent does. */
static void
test_agent_silence(void **state)
{
    struct lt_world *w = *state;
    struct lt_agent *ag;
    struct lt_aev *a;

    lt_start(w, NULL, NULL, "--ping-interval", "50ms", NULL);
    ag = lt_agent_new(w, "a", 1, false, "docker/default", NULL);
    lt_expect_aev(w, ag, ING_AGENT_EV_CONNECTED, NULL);
    kill(w->be_pid, SIGSTOP);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_DISCONNECTED, NULL);
    kill(w->be_pid, SIGCONT);
    assert_int_equal(a->err, -ETIMEDOUT);
    assert_int_equal(ing_agent_process(ag->a, NULL, NULL), -ETIMEDOUT);
    lt_pass(w);
}

/* Bad options, connection errors, reports while disconnected. */
static void
test_agent_api_errors(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_env dup[] = {{"docker", "a", "i", 1, true}, {"docker", "a", "j", 2, true}};
    struct ing_agent_env bad = {"", "default", "i1", 1, true};
    struct ing_agent_opts o = {.name = "x", .slots = 1, .envs = &env, .nenvs = 1};
    struct ing_agent *a;
    struct lt_agent *ag;
    char path[LT_STR + 32];

    assert_null(ing_agent_new(NULL));
    assert_null(ing_agent_new(&o)); /* no address */
    assert_int_equal(errno, EINVAL);
    o.addr = "udp://x:1";
    assert_null(ing_agent_new(&o));
    o.addr = "tcp://127.0.0.1:1";
    o.envs = dup;
    o.nenvs = 2;
    assert_null(ing_agent_new(&o)); /* the same environment twice */
    o.envs = &bad;
    o.nenvs = 1;
    assert_null(ing_agent_new(&o));
    o.envs = &env;
    o.backoff_max_ms = -1;
    assert_null(ing_agent_new(&o));
    o.backoff_max_ms = 0;
    ing_agent_free(NULL);

    lt_start(w, NULL, NULL, NULL);
    snprintf(path, sizeof(path), "ipc://%s/none.sock", w->dir);
    o.addr = path;
    a = ing_agent_new(&o);
    assert_non_null(a);
    assert_int_equal(ing_agent_connect(a), -ENOENT);
    assert_int_equal(ing_agent_process(a, NULL, NULL), -ENOENT);
    assert_int_equal(ing_agent_wait(a, 10, NULL, NULL), -ENOENT);
    assert_int_equal(ing_agent_started(a, sv("j")), -ENOTCONN);
    assert_int_equal(ing_agent_timeout_ms(a), -1);
    assert_false(ing_agent_want_write(a));
    ing_agent_free(a);

    /* the client endpoint refuses an agent */
    o.addr = w->client_addr;
    ag = lt_agent_add(w, &o, false);
    assert_int_equal(ing_agent_connect(ag->a), -EPROTO);
    assert_non_null(strstr(ing_agent_last_error(ag->a), "ROLE"));
    lt_pass(w);
}

/* An agent that never calls ing_agent_connect: with opts.reconnect, process() opens the
 * connection by itself (as inginious-agent-process does), here with authentication. */
static void
test_agent_process_opens_with_secret(void **state)
{
    struct lt_world *w = *state;
    const char *apath = lt_write_file(w, "agent.secret", "s3cret\n");
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_opts o = {.name = "lazy", .slots = 1, .envs = &env, .nenvs = 1,
                               .reconnect = true, .secret = (const uint8_t *)"s3cret",
                               .secret_len = 6};
    struct lt_client *cl;
    struct lt_agent *ag;
    struct ing_client_job j;

    lt_start(w, NULL, NULL, "--agent-secret-file", apath, NULL);
    cl = lt_client_new(w, NULL);
    ag = lt_agent_add(w, &o, true);
    assert_int_equal(ing_agent_timeout_ms(ag->a), 0); /* the first attempt is due */
    assert_int_equal(ing_agent_process(ag->a, lt_agent_record, ag), 0);
    assert_int_equal(ing_agent_started(ag->a, sv("x")), -ENOTCONN); /* not authenticated yet */
    lt_expect_aev(w, ag, ING_AGENT_EV_CONNECTED, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j = job(w, "lazy-1");
    submit_ok(cl, &j);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "lazy-1");
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_agent_hello_job_done),    CASE(test_agent_kill_event),
        CASE(test_agent_pings_answered),    CASE(test_agent_reconnect_backoff),
        CASE(test_agent_restarted_mid_job), CASE(test_agent_restarted_retry),
        CASE(test_agent_error_event),       CASE(test_agent_silence),
        CASE(test_agent_api_errors),
        CASE(test_agent_process_opens_with_secret),
    };

    return cmocka_run_group_tests_name("agent", tests, NULL, NULL);
}
