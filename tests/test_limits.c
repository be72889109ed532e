/* SPDX-License-Identifier: MIT */
/* test_limits.c: the scheduler core's bounds against $ING_BUILD/inginious-backend (issue 13
 * items 1, 3, 4, 10, 15, 17 and issue 14 items 4, 5): every orphaned environment ends in one
 * tick, the environment list (announcement order, empty types, one update per re-hello or
 * reconnect, hellos rate-limited), the bounds on hellos (slots, environments, the list's
 * size), the backend's deadline per running job, and the cap on requeues.
 *
 * Every wait is a poll with a deadline (tests/support/tpeer.h); timings are stretched by
 * ING_SLOW.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/chaos_util.h"
#include "support/tpeer.h"

/* ms stretched by ING_SLOW, as an option value "<n>ms" in buf. */
static const char *
opt_ms(char *buf, size_t cap, int ms)
{
    snprintf(buf, cap, "%dms", cu_ms(ms));
    return buf;
}

/* put_info writes an env-info map. */
static void
put_info(struct ing_mp_writer *w)
{
    ing_mp_put_map(w, 2);
    ing_mp_put_cstr(w, "id");
    ing_mp_put_cstr(w, "i1");
    ing_mp_put_cstr(w, "created");
    ing_mp_put_int(w, 1);
}

/* envs_raw encodes available_environments from spec ("docker:b,a;kata:") into w. */
static void
envs_raw(struct ing_mp_writer *w, const char *spec)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", spec);
    uint32_t nt = buf[0] != '\0';
    for (const char *p = buf; *p; p++)
        nt += *p == ';';
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, nt);
    char *s1 = NULL;
    for (char *t = strtok_r(buf, ";", &s1); t != NULL; t = strtok_r(NULL, ";", &s1)) {
        char *names = strchr(t, ':');
        assert_non_null(names);
        *names++ = '\0';
        uint32_t n = names[0] != '\0';
        for (const char *p = names; *p; p++)
            n += *p == ',';
        ing_mp_put_cstr(w, t);
        ing_mp_put_map(w, n);
        char *s2 = NULL;
        for (char *e = strtok_r(names, ",", &s2); e != NULL; e = strtok_r(NULL, ",", &s2)) {
            ing_mp_put_cstr(w, e);
            put_info(w);
        }
    }
    assert_int_equal(w->err, 0);
}

/* hello_spec sends AgentHello{name, slots, spec} on a. */
static void
hello_spec(struct tp_peer *a, const char *name, uint32_t slots, const char *spec)
{
    struct ing_mp_writer w;
    envs_raw(&w, spec);
    tp_hello_raw(a, name, slots, (struct tp_bytes){w.buf, w.len});
    ing_mp_writer_fini(&w);
}

/* agent_spec connects an agent and says hello with spec. */
static struct tp_peer *
agent_spec(struct tp_ctx *c, const char *name, uint32_t slots, const char *spec)
{
    struct tp_peer *a = tp_connect(c, ING_ROLE_AGENT);
    hello_spec(a, name, slots, spec);
    return a;
}

/* expect_refused expects Error INVALID whose text holds want (and the close when closes). */
static void
expect_refused(struct tp_peer *a, const char *want, bool closes)
{
    char text[300];
    const struct ing_msg *m = tp_expect_error(a, ING_ERR_INVALID);
    tp_cpy(text, sizeof(text), m->u.error.text);
    if (strstr(text, want) == NULL)
        tp_fail("%s: Error INVALID \"%s\", expected it to hold \"%s\"", a->label, text, want);
    if (closes)
        tp_expect_closed(a);
}

/* refused_first: a new agent's hello (slots, spec) is refused with want, and closed. */
static void
refused_first(struct tp_ctx *c, uint32_t slots, const char *spec, const char *want)
{
    struct tp_peer *a = agent_spec(c, "A", slots, spec);
    expect_refused(a, want, true);
    tp_close(c, a);
}

/* Issue 13 bug 1: 20 orphaned environments end in the same tick (it was one per tick: the
 * last result came 19 ticks after the first). */
TP_TEST(test_limits_orphans_end_together)
{
    char t[32];
    struct tp_peer *c1;
    const int timeout = 400; /* ticks every 100 ms (x ING_SLOW) */

    tp_start(c, "--orphan-timeout", opt_ms(t, sizeof(t), timeout), NULL);
    c1 = tp_client(c, "c1", "");
    for (int i = 0; i < 20; i++) {
        char id[32], env[32];
        snprintf(id, sizeof(id), "j%02d", i);
        snprintf(env, sizeof(env), "nobody%02d", i);
        tp_send_job(c1, &(struct tp_job){.id = id, .env = env});
    }
    tp_barrier(c1);
    uint64_t first = 0, last = 0;
    for (int i = 0; i < 20; i++) {
        const struct ing_msg *m = tp_expect(c1, ING_BACKEND_JOB_DONE);
        char kind[32];
        tp_cpy(kind, sizeof(kind), m->u.result.result_kind);
        assert_string_equal(kind, "crash");
        last = tp_now_ms();
        if (i == 0)
            first = last;
    }
    if (last - first > (uint64_t)cu_ms(timeout))
        tp_fail("the 20 orphan crashes came over %llu ms (one tick is %d ms)",
                (unsigned long long)(last - first), cu_ms(timeout / 4));
}

/* Issue 14 items 4 and 5: announcement order, `kata: {}` listed as `kata: []`, one update
 * with the final list on a second hello and on a reconnect within --env-grace. */
TP_TEST(test_limits_env_list_order_and_updates)
{
    char g[32];
    struct tp_peer *c1, *a, *b;

    tp_start(c, "--env-grace", opt_ms(g, sizeof(g), 3000), NULL);
    c1 = tp_client(c, "c1", "");
    a = agent_spec(c, "A", 1, "docker:zeta,alpha;kata:");
    tp_expect_envs(c1, "docker:[zeta,alpha];kata:[]");
    b = agent_spec(c, "B", 1, "docker:mid,alpha");
    tp_expect_envs(c1, "docker:[zeta,alpha,mid];kata:[]");
    /* A's second hello, without zeta: one update, the final list. */
    hello_spec(a, "A", 1, "docker:alpha;kata:");
    tp_expect_envs(c1, "docker:[alpha,mid];kata:[]");
    tp_barrier(c1);
    tp_expect_nothing(c1, TP_QUIET_MS);
    /* B reconnects: its environments stay listed meanwhile; one update, mid in place. */
    tp_close(c, b);
    b = agent_spec(c, "B", 1, "docker:mid,alpha");
    tp_expect_envs(c1, "docker:[alpha,mid];kata:[]");
    tp_barrier(c1);
    tp_expect_nothing(c1, TP_QUIET_MS);
    /* The client submits for mid in between: served by the new B. */
    tp_send_job(c1, &(struct tp_job){.id = "m", .env = "mid"});
    tp_expect_job(b, "m");
}

/* Issue 13 items 3, 4 and 10: the bounds on a hello, each refused with its reason (a first
 * hello refused closes the connection; a later one leaves the registration as it was); 32
 * re-hellos in one write give a few updates, not 64 lists. */
TP_TEST(test_limits_hello_bounds)
{
    struct tp_peer *c1, *b;

    tp_start(c, "--max-slots-per-agent", "4", "--max-envs-per-agent", "3", "--max-envs", "4",
             "--max-env-bytes", "40", NULL);
    c1 = tp_client(c, "c1", "");
    refused_first(c, 5, "docker:a", "too many slots: 5 (at most 4, --max-slots-per-agent)");
    refused_first(c, 4, "docker:a,b,c,d", "too many environments: more than 3");
    agent_spec(c, "A", 4, "docker:a,b,c"); /* stays connected */
    tp_expect_envs(c1, "docker:[a,b,c]");
    refused_first(c, 1, "docker:d,e", "too many environments in total: 5 (at most 4, --max-envs)");
    /* 5 + (7 + 5) + 3 x 2 = 23 bytes now; + "dddddddddddddddd" (17) = 40 fits, + 1 not. */
    refused_first(c, 1, "docker:a,ddddddddddddddddd",
                  "environment list too large: 41 bytes (at most 40");
    b = agent_spec(c, "B", 1, "docker:a,dddddddddddddddd");
    tp_expect_envs(c1, "docker:[a,b,c,dddddddddddddddd]");
    /* 32 hellos in one write, then a Ping: 15 are accepted (b's first counted; 16 if a
     * millisecond passed since), the others are refused with an Error, b stays registered,
     * and clients get at most one update per accepted hello, each with the final list. */
    {
        struct ing_mp_writer w, all;
        envs_raw(&w, "docker:a,dddddddddddddddd");
        ing_mp_writer_init_dyn(&all);
        for (int i = 0; i < 32; i++) {
            struct ing_msg m;
            memset(&m, 0, sizeof(m));
            m.type = ING_AGENT_HELLO;
            m.u.agent_hello.friendly_name = (struct ing_view){"B", 1};
            m.u.agent_hello.slots = 1;
            m.u.agent_hello.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
            size_t len;
            uint8_t *f = tp_msg_frame(&m, &len);
            ing_mp_put_raw(&all, f, len);
            free(f);
        }
        static const uint8_t ping[ING_HDR_LEN] = {0, 0, 0, 0, ING_PING, 0};
        ing_mp_put_raw(&all, ping, sizeof(ping));
        assert_int_equal(all.err, 0);
        tp_send_raw(b, all.buf, all.len);
        ing_mp_writer_fini(&all);
        ing_mp_writer_fini(&w);
    }
    int refused = 0;
    for (;;) {
        const struct ing_msg *m;
        int t = tp_recv(b, TP_DEADLINE_MS, &m);
        if (t == ING_PONG)
            break;
        char text[300];
        if (t != ING_ERROR ||
            !strstr(tp_cpy(text, sizeof(text), m->u.error.text), "too many hellos"))
            tp_fail("b: %d instead of Error \"too many hellos\" or Pong", t);
        refused++;
    }
    if (refused != 17 && refused != 16)
        tp_fail("b: %d of 32 hellos refused, expected 17 (or 16)", refused);
    /* All 32 were handled (b got its Errors): their updates precede the Pong. */
    tp_send_type(c1, ING_PING);
    int updates = 0;
    for (;;) {
        const struct ing_msg *m;
        int t = tp_recv(c1, TP_DEADLINE_MS, &m);
        if (t == ING_PONG)
            break;
        if (t != ING_BACKEND_UPDATE_ENVIRONMENTS)
            tp_fail("c1: unexpected message %d", t);
        char r[200];
        tp_envs_render(m->u.envs.environments, r, sizeof(r));
        assert_string_equal(r, "docker:[a,b,c,dddddddddddddddd]");
        updates++;
    }
    if (updates < 1 || updates > 32 - refused)
        tp_fail("c1: %d environment lists for %d accepted hellos", updates, 32 - refused);
    tp_send_job(c1, &(struct tp_job){.id = "d", .env = "dddddddddddddddd"});
    tp_expect_job(b, "d");
}

/* Issue 13 item 17: a job its agent never reports ends at its hard_time plus the margin with
 * crash "Agent did not answer in time" (@state kept); the agent gets a kill, the slot the
 * next job; the late result is dropped. */
TP_TEST(test_limits_job_deadline)
{
    static const uint8_t params[] = "\x81\xa6limits\x81\xa9hard_time\x01"; /* hard_time 1 */
    char t[32];
    struct tp_peer *c1, *a;

    tp_start(c, "--job-deadline-margin", opt_ms(t, sizeof(t), 200), NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, "docker:[default]");
    uint64_t t0 = tp_now_ms();
    tp_send_job(c1, &(struct tp_job){.id = "slow", .state = "S", .params_raw = TP_RAW(params)});
    tp_submit(c1, "next", 0);
    tp_expect_job(a, "slow");
    tp_started(a, "slow");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_expect_synthetic(c1, "slow", "crash", "Agent did not answer in time", "S");
    if (tp_now_ms() - t0 < 1000)
        tp_fail("the deadline came after %llu ms, before hard_time",
                (unsigned long long)(tp_now_ms() - t0));
    tp_expect(a, ING_BACKEND_KILL_JOB);
    tp_expect_job(a, "next");
    tp_done(a, "slow", "success", "");
    tp_done(a, "next", "success", "");
    tp_expect_done(c1, "next", "success", NULL, NULL);
    tp_expect_nothing(c1, TP_QUIET_MS);
}

/* Issue 13 item 15: a job lost with its agent more than --max-requeues times ends crash. */
TP_TEST(test_limits_requeue_cap)
{
    struct tp_peer *c1, *a;

    tp_start(c, "--max-requeues", "1", NULL);
    c1 = tp_client(c, "c1", "");
    tp_submit(c1, "j", 0);
    tp_barrier(c1);
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, "docker:[default]");
    tp_expect_job(a, "j");
    tp_close(c, a); /* requeued once */
    a = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, "docker:[default]");
    tp_expect_job(a, "j");
    tp_close(c, a);
    tp_expect_synthetic(c1, "j", "crash", "Agent lost too many times while holding the job", "S-j");
}

/* The new options' values: out of range refused at start-up with a clear message. */
TP_TEST(test_limits_bad_option_values)
{
    static const char *const bad[][2] = {
        {"--max-slots-per-agent", "0"},
        {"--max-slots-per-agent", "65537"},
        {"--max-envs-per-agent", "10000001"},
        {"--max-envs", "x"},
        {"--max-env-bytes", "5G"},
        {"--max-requeues", "101"},
        {"--job-deadline-margin", "28801m"},
        {"--env-grace", "61m"},
    };

    (void)c; /* no backend running: each command exits at once */
    tp_expect_bad_options(bad, sizeof(bad) / sizeof(bad[0]));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_limits_orphans_end_together), TP_CASE(test_limits_env_list_order_and_updates),
        TP_CASE(test_limits_hello_bounds),         TP_CASE(test_limits_job_deadline),
        TP_CASE(test_limits_requeue_cap),          TP_CASE(test_limits_bad_option_values),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
