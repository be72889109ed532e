/* SPDX-License-Identifier: MIT */
/* test_zbridge.c: the ZeroMQ bridge (src/zbridge.c) against the real backend, driven by a
 * hand-written ZMTP DEALER (tests/support/ztpeer.h) speaking INGInious' msgpack messages in
 * the shapes of each release (main, v0.9, v0.8.x, v0.7.x): issue 14. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/tpeer.h"
#include "support/ztpeer.h"

/* ---- agents of each release ---- */

enum shape {
    MAIN, /* v0.8.6 ... main: created an integer, no ssh_allowed */
    V08,  /* v0.8.0 ... v0.8.5: ssh_allowed */
    V07,  /* v0.7.x: the Docker agent's created is a float */
    V080, /* v0.8.0 ... v0.8.4's Docker agent: ssh_allowed and a float created (v0.8.0's
             hello is byte-identical to v0.8.1's, though its BackendKillJob has no state) */
};

/* agent_hello sends an AgentHello of shape sh announcing docker/default. */
static void
agent_hello(struct zt_peer *a, const char *name, uint32_t slots, enum shape sh, bool ssh)
{
    struct ing_mp_writer w;
    bool has_ssh = sh == V08 || sh == V080;
    zt_map_begin(&w, has_ssh ? 5 : 4);
    zt_kv_str(&w, "friendly_name", name);
    ing_mp_put_cstr(&w, "available_job_slots");
    ing_mp_put_uint(&w, slots);
    ing_mp_put_cstr(&w, "available_environments");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "default");
    ing_mp_put_map(&w, 4);
    zt_kv_str(&w, "id", "sha256:1");
    ing_mp_put_cstr(&w, "created");
    if (sh == V07 || sh == V080)
        ing_mp_put_double(&w, 1700000000.25);
    else
        ing_mp_put_int(&w, 1700000000);
    zt_kv_lit(&w, "ports", "\x90");
    zt_kv_str(&w, "runtime", "runc");
    if (has_ssh) {
        ing_mp_put_cstr(&w, "ssh_allowed");
        ing_mp_put_bool(&w, ssh);
    }
    zt_kv_str(&w, "@type", "AgentHello");
    zt_send_w(a, &w);
}

static struct zt_peer *
agent(struct tp_ctx *c, const char *name, uint32_t slots, enum shape sh, bool ssh)
{
    struct zt_peer *a = zt_open(c, true, false, NULL);
    agent_hello(a, name, slots, sh, ssh);
    return a;
}

/* send_done sends AgentJobDone for id with the stock values, the value of key replaced by
 * raw[0..len) (key NULL: none), and the key skip left out (NULL: none). */
static void
send_done(struct zt_peer *a, const char *id, const char *key, const char *raw, size_t len,
          const char *skip)
{
    static const struct {
        const char *k;
        const char *v;
        size_t n;
    } f[] = {
#define F(k, v) {k, v, sizeof(v) - 1}
        F("result", "\x92\xa7success\xa2ok"),
        F("grade", "\xcb\x40\x59\x00\x00\x00\x00\x00\x00"), /* 100.0 */
        F("problems", "\x80"),
        F("tests", "\x80"),
        F("custom", "\x80"),
        F("state", "\xa2S2"),
        F("archive", "\xc0"),
        F("stdout", "\xa3out"),
        F("stderr", "\xa0"),
#undef F
    };
    struct ing_mp_writer w;
    uint32_t n = 11 - (skip != NULL);
    zt_map_begin(&w, n);
    zt_kv_str(&w, "job_id", id);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        if (skip != NULL && strcmp(skip, f[i].k) == 0)
            continue;
        if (key != NULL && strcmp(key, f[i].k) == 0)
            zt_kv_raw(&w, f[i].k, raw, len);
        else
            zt_kv_raw(&w, f[i].k, f[i].v, f[i].n);
    }
    zt_kv_str(&w, "@type", "AgentJobDone");
    zt_send_w(a, &w);
}

static void
send_ref(struct zt_peer *p, const char *type, const char *id)
{
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "job_id", id);
    zt_kv_str(&w, "@type", type);
    zt_send_w(p, &w);
}

static const char STATE_S1[] = "\x81\xa6@state\xa2S1";
#define SUBMIT(cl, id) zt_new_job((cl), (id), STATE_S1, sizeof(STATE_S1) - 1, NULL, 0)

/* A client C and an agent A (slots, shape) with docker/default, and the client told. */
static void
world(struct tp_ctx *c, struct zt_peer **cl, struct zt_peer **ag, uint32_t slots, enum shape sh)
{
    tp_start(c, NULL);
    *cl = zt_client(c, "C");
    *ag = agent(c, "A", slots, sh, false);
    zt_expect(*cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
}

static void
expect_view(struct ing_view v, const char *s, const char *what)
{
    if (!tp_view_is(v, s)) {
        char got[300];
        tp_fail("%s: got \"%s\", expected \"%s\"", what, tp_cpy(got, sizeof(got), v), s);
    }
}

/* expect_done expects BackendJobDone(id, kind) on cl (after environment updates); text_has (if not
 * NULL) must be in the text, state (if not NULL) is the state. */
static const struct ing_msg *
expect_done(struct zt_peer *cl, const char *id, const char *kind, const char *text_has,
            const char *state)
{
    const struct ing_msg *m = NULL;
    int r;
    while ((r = zt_recv(cl, TP_DEADLINE_MS, &m)) == ING_BACKEND_UPDATE_ENVIRONMENTS)
        continue;
    if (r != ING_BACKEND_JOB_DONE)
        tp_fail("%s: expected BackendJobDone (%s): %d", cl->tp->label, id, r);
    char text[300];
    expect_view(m->u.result.job_id, id, "job_id");
    expect_view(m->u.result.result_kind, kind, "result kind");
    tp_cpy(text, sizeof(text), m->u.result.result_text);
    if (text_has != NULL && strstr(text, text_has) == NULL)
        tp_fail("result text \"%s\" does not name \"%s\"", text, text_has);
    if (state != NULL)
        expect_view(m->u.result.state, state, "state");
    return m;
}

/* ---- the whole path ---- */

/* Submit, dispatch, started, done; an agent's integer grade reaches the client as an
 * integer, a float grade as a float64 (item 6). */
TP_TEST(test_zb_dispatch_and_grades)
{
    struct zt_peer *cl, *ag;
    world(c, &cl, &ag, 1, MAIN);
    SUBMIT(cl, "j1");
    const struct ing_msg *m = zt_expect(ag, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "j1", "BackendNewJob job_id");
    send_ref(ag, "AgentJobStarted", "j1");
    m = zt_expect(cl, ING_BACKEND_JOB_STARTED);
    expect_view(m->u.ref.job_id, "j1", "BackendJobStarted job_id");
    send_done(ag, "j1", "grade", "\x50", 1, NULL); /* 80 */
    m = expect_done(cl, "j1", "success", "ok", "S2");
    assert_true(m->u.result.grade == 80.0);
    assert_true(zt_has_lit(cl, "\xa5grade\x50"));
    SUBMIT(cl, "j2");
    zt_expect(ag, ING_BACKEND_NEW_JOB);
    send_done(ag, "j2", NULL, NULL, 0, NULL);
    expect_done(cl, "j2", "success", "ok", "S2");
    assert_true(zt_has_lit(cl, "\xa5grade\xcb\x40\x59\x00\x00\x00\x00\x00\x00"));
    zt_close(c, cl);
    zt_close(c, ag);
}

/* ---- bug 1: loosely typed results ---- */

/* One AgentJobDone variant: the value of key replaced by raw[0..len), the key skip left
 * out; names: what the crash text must name when the report is unusable. */
struct variant {
    const char *key;
    const char *raw;
    size_t len;
    const char *skip;
    const char *names;
};
#define VAR(k, v, s, n)                                                                            \
    {                                                                                              \
        k, v, sizeof(v) - 1, s, n                                                                  \
    }

/* run_variant runs job id (prefix + i) from submission to the agent's report v (reported
 * started first when started) and returns the client's BackendJobDone of kind kind. */
static const struct ing_msg *
run_variant(struct zt_peer *cl, struct zt_peer *ag, const char *prefix, size_t i,
            const struct variant *v, bool started, const char *kind, const char *state)
{
    char id[16];
    snprintf(id, sizeof(id), "%s%zu", prefix, i);
    SUBMIT(cl, id);
    zt_expect(ag, ING_BACKEND_NEW_JOB);
    if (started) {
        send_ref(ag, "AgentJobStarted", id);
        zt_expect(cl, ING_BACKEND_JOB_STARTED);
    }
    send_done(ag, id, v->key, v->raw, v->len, v->skip);
    return expect_done(cl, id, kind, v->names, state);
}

/* Relayed, coerced to the documented types (state nil, stdout bytes, tests nil, archive a
 * str, grade a bool or a str, the text nil, a result array of another length). */
TP_TEST(test_zb_loose_result_relayed)
{
    struct zt_peer *cl, *ag;
    world(c, &cl, &ag, 1, MAIN);
    static const struct variant loose[] = {
        VAR("state", "\xc0", NULL, NULL),
        VAR("stdout", "\xc4\x03out", NULL, NULL),
        VAR("tests", "\xc0", NULL, NULL),
        VAR("problems", "\xc0", NULL, NULL),
        VAR("archive", "\xa3tgz", NULL, NULL),
        VAR("grade", "\xc3", NULL, NULL),
        VAR("grade",
            "\xa2"
            "55",
            NULL, NULL),
        VAR("result", "\x92\xa7success\xc0", NULL, NULL),
        VAR("result", "\x91\xa7success", NULL, NULL),
        VAR("result", "\x93\xa7success\xa2ok\x01", NULL, NULL),
    };
    for (size_t i = 0; i < sizeof(loose) / sizeof(loose[0]); i++) {
        const struct ing_msg *m = run_variant(cl, ag, "j", i, &loose[i], false, "success", NULL);
        const struct ing_job_result *r = &m->u.result;
        switch (i) {
        case 0:
            expect_view(r->state, "", "state nil");
            break;
        case 1:
            expect_view(r->stdout_, "out", "stdout bytes");
            break;
        case 2:
            expect_view(r->tests, "\x80", "tests nil");
            break;
        case 3:
            expect_view(r->problems, "\x80", "problems nil");
            break;
        case 4:
            expect_view(r->archive, "tgz", "archive str");
            assert_true(zt_has_lit(cl, "\xa7"
                                       "archive\xc4\x03tgz"));
            break;
        case 5:
            assert_true(r->grade == 1.0);
            break;
        case 6:
            assert_true(r->grade == 55.0);
            break;
        case 7:
        case 8:
            expect_view(r->result_text, "", "result text");
            break;
        default:
            expect_view(r->result_text, "ok", "result text");
            break;
        }
    }
    zt_close(c, cl);
    zt_close(c, ag);
}

/* A result that cannot be used ends its job: crash naming the field, @state kept, the slot
 * freed (the next job is dispatched to the same 1-slot agent). */
TP_TEST(test_zb_unusable_result_ends_job)
{
    struct zt_peer *cl, *ag;
    world(c, &cl, &ag, 1, MAIN);
    static const struct variant bad[] = {
        VAR("problems", "\x91\x01", NULL, "problems"),
        VAR("tests", "\xa1x", NULL, "tests"),
        VAR("grade",
            "\xa3"
            "abc",
            NULL, "grade"),
        VAR("grade", "\xc0", NULL, "grade"),
        VAR("result", "\x90", NULL, "result"),
        VAR("result", "\xa7success", NULL, "result"),
        VAR("state", "\x05", NULL, "state"),
        VAR("archive", "\x05", NULL, "archive"),
        VAR(NULL, "", "state", "missing key"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct ing_msg *m = run_variant(cl, ag, "b", i, &bad[i], true, "crash", "S1");
        /* As Python sends its own crash results: stdout and stderr nil. */
        assert_null(m->u.result.stdout_.p);
        assert_null(m->u.result.stderr_.p);
    }
    /* The agent still has its one slot. */
    SUBMIT(cl, "last");
    const struct ing_msg *m = zt_expect(ag, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "last", "job_id");
    assert_true(tp_log_contains(c, "unusable"));
    zt_close(c, cl);
    zt_close(c, ag);
}

/* ---- bug 2: BackendKillJob in each release's shape ---- */

static const char KILL_STATE[] = "\x83\xa6job_id\xa2j1\xa5state\xa2S1\xa5@type\xae"
                                 "BackendKillJob";
static const char KILL_BARE[] = "\x82\xa6job_id\xa2j1\xa5@type\xae"
                                "BackendKillJob";

/* kill_shape: a job of cl on a fresh agent of release sh is killed; the agent receives
 * exactly want[0..want_len), answers killed, the client gets it. */
static void
kill_shape(struct tp_ctx *c, struct zt_peer *cl, const char *id, enum shape sh, const char *want,
           size_t want_len)
{
    struct zt_peer *ag = agent(c, "A", 1, sh, false);
    SUBMIT(cl, id);
    zt_expect(ag, ING_BACKEND_NEW_JOB);
    send_ref(cl, "ClientKillJob", id);
    zt_expect_raw(ag, want, want_len);
    static const char killed[] = "\x92\xa6killed\xa0";
    send_done(ag, id, "result", killed, sizeof(killed) - 1, NULL);
    expect_done(cl, id, "killed", NULL, NULL);
    zt_close(c, ag);
}

/* Each agent gets its release's BackendKillJob: with state (main, v0.8.x), without it
 * (v0.7.x). A v0.8.0 hello looks like v0.8.1's: by default it gets the state. */
TP_TEST(test_zb_kill_shapes)
{
    tp_start(c, NULL);
    struct zt_peer *cl = zt_client(c, "C");
    kill_shape(c, cl, "j1", MAIN, KILL_STATE, sizeof(KILL_STATE) - 1);
    kill_shape(c, cl, "j1", V08, KILL_STATE, sizeof(KILL_STATE) - 1);
    kill_shape(c, cl, "j1", V080, KILL_STATE, sizeof(KILL_STATE) - 1);
    kill_shape(c, cl, "j1", V07, KILL_BARE, sizeof(KILL_BARE) - 1);
    zt_close(c, cl);
}

/* kill_fleet: a backend with --zmq-kill-state mode; a job on an agent of each shape sh[0..n)
 * is killed, and every one of them gets the kill with state (with_state) or without. */
static void
kill_fleet(struct tp_ctx *c, const char *mode, const enum shape *sh, size_t n, bool with_state)
{
    tp_start(c, "--zmq-kill-state", mode, NULL);
    struct zt_peer *cl = zt_client(c, "C");
    for (size_t i = 0; i < n; i++) {
        if (with_state)
            kill_shape(c, cl, "j1", sh[i], KILL_STATE, sizeof(KILL_STATE) - 1);
        else
            kill_shape(c, cl, "j1", sh[i], KILL_BARE, sizeof(KILL_BARE) - 1);
    }
    zt_close(c, cl);
}

/* --zmq-kill-state never, for a fleet of v0.8.0 agents (or v0.7.x MCQ agents, whose hello
 * has main's shape): every ZeroMQ agent gets BackendKillJob without state, whatever its
 * hello. */
TP_TEST(test_zb_kill_state_never)
{
    static const enum shape sh[] = {V080, MAIN, V07};
    kill_fleet(c, "never", sh, 3, false);
}

/* --zmq-kill-state always, for a fleet of v0.8.1 or later whose hellos may look like
 * v0.7.x's (a custom agent with a float created): every agent gets the state. */
TP_TEST(test_zb_kill_state_always)
{
    static const enum shape sh[] = {V07, V080};
    kill_fleet(c, "always", sh, 2, true);
}

/* ---- item 6: synthetic results ---- */

/* Python's "Agent restarted" crash has stdout and stderr nil; its kill of a waiting job has
 * "" (and so do ours, to ZeroMQ clients). */
TP_TEST(test_zb_synthetic_results)
{
    struct zt_peer *cl, *ag;
    world(c, &cl, &ag, 1, MAIN);
    SUBMIT(cl, "run");
    zt_expect(ag, ING_BACKEND_NEW_JOB);
    send_ref(ag, "AgentJobStarted", "run");
    zt_expect(cl, ING_BACKEND_JOB_STARTED);
    SUBMIT(cl, "wait");
    send_ref(cl, "ClientKillJob", "wait");
    const struct ing_msg *m = expect_done(cl, "wait", "killed", NULL, "S1");
    expect_view(m->u.result.stdout_, "", "stdout of a kill");
    expect_view(m->u.result.stderr_, "", "stderr of a kill");
    zt_close(c, ag);
    m = expect_done(cl, "run", "crash", "Agent restarted", "S1");
    assert_null(m->u.result.stdout_.p);
    assert_null(m->u.result.stderr_.p);
    zt_close(c, cl);
}

/* ---- item 7: routing identities ---- */

static struct zt_peer *
client_with_id(struct tp_ctx *c, const char *identity, const char *name)
{
    struct zt_peer *p = zt_open(c, false, false, identity);
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", name);
    zt_kv_str(&w, "@type", "ClientHello");
    zt_send_w(p, &w);
    zt_expect(p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    return p;
}

/* A second connection with a routing identity in use on the same endpoint takes it over
 * (libzmq's ROUTER_HANDOVER): the old one is closed, the new one served; the other
 * endpoint's identities are apart. */
TP_TEST(test_zb_identity_takeover)
{
    tp_start(c, NULL);
    struct zt_peer *c1 = client_with_id(c, "webapp-1", "first");
    struct zt_peer *a1 = zt_open(c, true, false, "webapp-1");
    agent_hello(a1, "A1", 1, MAIN, false);
    zt_expect(c1, ING_BACKEND_UPDATE_ENVIRONMENTS);
    struct zt_peer *c2 = client_with_id(c, "webapp-1", "second");
    zt_expect_closed(c1);
    SUBMIT(c2, "h1");
    const struct ing_msg *m = zt_expect(a1, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "h1", "job_id");
    /* The agent reconnects before its old connection is seen closed. */
    struct zt_peer *a2 = zt_open(c, true, false, "webapp-1");
    agent_hello(a2, "A2", 1, MAIN, false);
    zt_expect_closed(a1);
    m = zt_expect(a2, ING_BACKEND_NEW_JOB); /* h1 was not started: requeued */
    expect_view(m->u.job.job_id, "h1", "job_id");
    send_done(a2, "h1", NULL, NULL, 0, NULL);
    expect_done(c2, "h1", "success", "ok", "S2");
    assert_true(tp_log_contains(c, "taken over"));
    zt_close(c, c1);
    zt_close(c, c2);
    zt_close(c, a1);
    zt_close(c, a2);
}

/* The registration gate comes first, whatever the values: an unregistered client's
 * ClientNewJob with a job_id that is not a str gets Unknown. */
TP_TEST(test_zb_registration_gate)
{
    tp_start(c, NULL);
    struct zt_peer *p = zt_open(c, false, false, NULL);
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_lit(&w, "job_id", "\x2a");
    zt_kv_str(&w, "@type", "ClientKillJob");
    zt_send_w(p, &w);
    zt_expect(p, ING_UNKNOWN);
    zt_close(c, p);
}

/* ---- bug 3: SSH routing of v0.8.0 - v0.8.5 ---- */

/* A job whose environment_parameters ask for SSH goes only to an agent whose hello allowed
 * SSH; other jobs go to any agent; clients never see the hidden twin environment. */
TP_TEST(test_zb_ssh_routing)
{
    static const char ssh_params[] = "\x81\xabssh_allowed\xc3";
    static const char envs_msg[] = "\x82\xb6"
                                   "available_environments\x81\xa6"
                                   "docker\x91\xa7"
                                   "default\xa5@type\xb9"
                                   "BackendUpdateEnvironments";
    tp_start(c, NULL);
    struct zt_peer *cl = zt_client(c, "C");
    struct zt_peer *no = agent(c, "NoSSH", 1, V08, false);
    zt_expect_raw(cl, envs_msg, sizeof(envs_msg) - 1);
    zt_new_job(cl, "ssh1", STATE_S1, sizeof(STATE_S1) - 1, ssh_params, sizeof(ssh_params) - 1);
    zt_expect_nothing(no, TP_QUIET_MS);
    struct zt_peer *yes = agent(c, "SSH", 1, V08, true);
    const struct ing_msg *m = zt_expect(yes, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "ssh1", "job_id");
    expect_view(m->u.job.environment, "default", "environment");
    assert_true(zt_has(yes, ssh_params, sizeof(ssh_params) - 1));
    SUBMIT(cl, "plain");
    m = zt_expect(no, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "plain", "job_id");
    /* An SSH-allowed agent takes plain jobs too. */
    send_done(yes, "ssh1", NULL, NULL, 0, NULL);
    expect_done(cl, "ssh1", "success", "ok", "S2");
    SUBMIT(cl, "plain2");
    m = zt_expect(yes, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.job_id, "plain2", "job_id");
    /* The twin environment is never listed. */
    struct zt_peer *late = zt_open(c, false, false, NULL);
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", "late");
    zt_kv_str(&w, "@type", "ClientHello");
    zt_send_w(late, &w);
    zt_expect_raw(late, envs_msg, sizeof(envs_msg) - 1);
    zt_close(c, late);
    zt_close(c, cl);
    zt_close(c, no);
    zt_close(c, yes);
}

/* ---- item 7: the greeting at accept ---- */

/* read_until_eof reads p's connection until the backend closes it; returns the bytes read
 * (at most cap) in buf. */
static size_t
read_until_eof(struct tp_peer *p, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    for (;;) {
        uint64_t now = tp_now_ms();
        if (now >= deadline)
            tp_fail("%s: not closed within the deadline", p->label);
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        uint8_t tmp[256];
        ssize_t r = read(p->fd, tmp, sizeof(tmp));
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return n;
        for (ssize_t i = 0; i < r && n < cap; i++)
            buf[n++] = tmp[i];
    }
}

/* With --zmq-greet-first the greeting goes out at accept, before the peer's first byte (a
 * ZMTP peer that waits for it is served); such endpoints serve ZeroMQ peers only. Without
 * it, the backend waits for the peer's first byte (native peers read no greeting). */
TP_TEST(test_zb_greet_first)
{
    tp_start(c, "--zmq-greet-first", NULL);
    struct zt_peer *cl = zt_open(c, false, true, NULL);
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", "waiter");
    zt_kv_str(&w, "@type", "ClientHello");
    zt_send_w(cl, &w);
    zt_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
    struct zt_peer *ag = zt_open(c, true, true, NULL);
    agent_hello(ag, "A", 1, MAIN, false);
    zt_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
    struct tp_peer *native = tp_open(c, c->be.client_addr);
    assert_non_null(native);
    uint8_t pre[ING_PREAMBLE_LEN];
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    tp_send_raw(native, pre, sizeof(pre));
    uint8_t got[128];
    size_t n = read_until_eof(native, got, sizeof(got));
    assert_true(n >= 10);
    assert_int_equal(got[0], 0xFF);
    assert_int_equal(got[9], 0x7F);
    zt_close(c, cl);
    zt_close(c, ag);
    int st = tp_stop(c);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* By default: nothing before the peer's first byte; native peers as ever. */
    tp_start(c, NULL);
    struct tp_peer *silent = tp_open(c, c->be.client_addr);
    assert_non_null(silent);
    tp_expect_nothing(silent, TP_QUIET_MS);
    struct tp_peer *nat = tp_client(c, "native", "");
    tp_barrier(nat);
}

/* ---- stretch: the v0.5 - v0.6.2 dialect ("type" key), detected per peer ---- */

/* legacy_expect receives the next message of p and checks it equals the map built in w
 * (then freed). */
#define legacy_expect(p, w)                                                                        \
    do {                                                                                           \
        zt_expect_raw((p), (w)->buf, (w)->len);                                                    \
        ing_mp_writer_fini(w);                                                                     \
    } while (0)

static void
legacy_hello_agent(struct zt_peer *a, const char *name, const char *container)
{
    struct ing_mp_writer w;
    zt_map_begin(&w, 4);
    zt_kv_str(&w, "friendly_name", name);
    zt_kv_lit(&w, "available_job_slots", "\x01");
    ing_mp_put_cstr(&w, "available_containers");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, container);
    ing_mp_put_map(&w, 2);
    zt_kv_str(&w, "id", "sha256:1");
    zt_kv_lit(&w, "created", "\x01");
    zt_kv_str(&w, "type", "agent_hello");
    zt_send_w(a, &w);
}

static void
legacy_containers(struct ing_mp_writer *w, const char *name)
{
    zt_map_begin(w, 2);
    ing_mp_put_cstr(w, "available_containers");
    ing_mp_put_array(w, name != NULL);
    if (name != NULL)
        ing_mp_put_cstr(w, name);
    zt_kv_str(w, "type", "backend_update_containers");
}

/* Issue 14 item 6: a time limit is listed in the queue as Python's msgpack packs int() of
 * it, up to 2^64 - 1 (it was -1 above 2^31); past 2^64, -1. */
TP_TEST(test_zb_queue_wide_time_limits)
{
    static const char t63[] = "\x81\xa6limits\x81\xa4time\xcf\x80\0\0\0\0\0\0\x05";
    static const char t32[] = "\x81\xa6limits\x81\xa4time\xa5" "3e+09"; /* int("3e+09") fails */
    static const char tstr[] = "\x81\xa6limits\x81\xa4time\xb4"
                               "18446744073709551615";
    static const char tbig[] = "\x81\xa6limits\x81\xa4time\xb4"
                               "18446744073709551616";
    static const char t31[] = "\x81\xa6limits\x81\xa4time\xce\x80\0\0\x01";
    struct zt_peer *cl;
    struct ing_msg m;

    tp_start(c, NULL);
    cl = zt_client(c, "c");
    zt_new_job(cl, "a", STATE_S1, sizeof(STATE_S1) - 1, t63, sizeof(t63) - 1);
    zt_new_job(cl, "b", STATE_S1, sizeof(STATE_S1) - 1, t32, sizeof(t32) - 1);
    zt_new_job(cl, "d", STATE_S1, sizeof(STATE_S1) - 1, tstr, sizeof(tstr) - 1);
    zt_new_job(cl, "e", STATE_S1, sizeof(STATE_S1) - 1, tbig, sizeof(tbig) - 1);
    zt_new_job(cl, "f", STATE_S1, sizeof(STATE_S1) - 1, t31, sizeof(t31) - 1);
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_GET_QUEUE;
    zt_send(cl, &m);
    zt_expect(cl, ING_BACKEND_GET_QUEUE);
    assert_true(zt_has_lit(cl, "\xa1" "a\xc3\xa3" "c/t\xa1L\xcf\x80\0\0\0\0\0\0\x05"));
    assert_true(zt_has_lit(cl, "\xa1" "b\xc3\xa3" "c/t\xa1L\xff"));
    assert_true(zt_has_lit(cl, "\xa1" "d\xc3\xa3" "c/t\xa1L\xcf\xff\xff\xff\xff\xff\xff\xff\xff"));
    assert_true(zt_has_lit(cl, "\xa1" "e\xc3\xa3" "c/t\xa1L\xff"));
    assert_true(zt_has_lit(cl, "\xa1" "f\xc3\xa3" "c/t\xa1L\xce\x80\0\0\x01"));
    zt_close(c, cl);
}

/* Issue 13/14: a ZeroMQ peer's opening ends at its hello, as a native peer's (it ended at its
 * ZMTP READY: a peer could hold a connection without ever saying hello); its frames are
 * not reserved whole on their header (a frame announcing 30 MiB took 30 MiB of the budget
 * and new work was refused): the input grows as bytes arrive and the frame times out. */
TP_TEST(test_zb_opening_and_frames_bounded)
{
    char hs[32], ft[32];
    static uint8_t frame[9 + 100] = {0x02, 0, 0, 0, 0, 0x01, 0xe0, 0, 0}; /* long, 30 MiB */
    snprintf(hs, sizeof(hs), "%dms", 400 * tp_slow());
    snprintf(ft, sizeof(ft), "%dms", 800 * tp_slow());
    tp_start(c, "--handshake-timeout", hs, "--frame-timeout", ft, "--max-memory", "32M",
             "--max-job-bytes-per-client", "32M", NULL);
    struct zt_peer *idle = zt_open(c, false, false, NULL);
    struct zt_peer *cl = zt_client(c, "hello");
    zt_expect_closed(idle); /* ZMTP handshake, no hello */
    zt_close(c, idle);
    zt_expect_nothing(cl, 100); /* said hello: kept */
    memset(frame + 9, 'x', 100);
    tp_send_raw(cl->tp, frame, sizeof(frame));
    struct tp_peer *n1 = tp_client(c, "n1", "");
    tp_send_job(n1, &(struct tp_job){.id = "big", .env = "nobody", .pad = 1u << 20});
    tp_barrier(n1); /* accepted: no "Backend memory full" */
    zt_expect_closed(cl); /* the frame did not complete in time */
    zt_close(c, cl);
    assert_true(tp_log_contains(c, "frame not completed in time") ||
                tp_log_contains(c, "(frame not completed in time)"));
}

/* A v0.6.2 ClientNewJob (time 30, hard 90, memory 512). */
/* legacy_pair writes a v0.6 [client address, job id] pair (the backend sends b""). */
static void
legacy_pair(struct ing_mp_writer *w, const char *id)
{
    ing_mp_put_cstr(w, "job_id");
    ing_mp_put_array(w, 2);
    ing_mp_put_bin(w, "", 0);
    ing_mp_put_cstr(w, id);
}

/* legacy_result writes a v0.6 result for id: the agent's (agent_job_done, a pair) or what
 * the client receives (backend_job_done). */
static void
legacy_result(struct ing_mp_writer *w, const char *id, bool agent_side)
{
    zt_map_begin(w, 11);
    if (agent_side)
        legacy_pair(w, id);
    else
        zt_kv_str(w, "job_id", id);
    zt_kv_lit(w, "result", "\x92\xa7success\xa2ok");
    zt_kv_lit(w, "grade", "\xcb\x40\x59\x00\x00\x00\x00\x00\x00");
    zt_kv_lit(w, "problems", "\x80");
    zt_kv_lit(w, "tests", "\x80");
    zt_kv_lit(w, "custom", "\x80");
    zt_kv_str(w, "state", "S2");
    zt_kv_lit(w, "archive", "\xc0");
    zt_kv_str(w, "stdout", "out");
    zt_kv_str(w, "stderr", "");
    zt_kv_str(w, "type", agent_side ? "agent_job_done" : "backend_job_done");
}

/* legacy_wait_no_containers skips p's messages until an empty container list. */
static void
legacy_wait_no_containers(struct zt_peer *p)
{
    struct ing_mp_writer w;
    const struct ing_msg *m;
    legacy_containers(&w, NULL);
    uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    while (!(zt_recv(p, TP_DEADLINE_MS, &m) != -ETIMEDOUT && p->body_len == w.len &&
             memcmp(p->body, w.buf, w.len) == 0))
        if (tp_now_ms() > deadline)
            tp_fail("%s: the container list never became empty", p->tp->label);
    ing_mp_writer_fini(&w);
}

static void
legacy_submit(struct zt_peer *cl, const char *id)
{
    struct ing_mp_writer w;
    zt_map_begin(&w, 14);
    zt_kv_str(&w, "job_id", id);
    zt_kv_lit(&w, "priority", "\x00");
    zt_kv_str(&w, "course_id", "c");
    zt_kv_str(&w, "task_id", "t");
    zt_kv_raw(&w, "inputdata", STATE_S1, sizeof(STATE_S1) - 1);
    zt_kv_lit(&w, "debug", "\xc2");
    zt_kv_str(&w, "environment", "default");
    zt_kv_lit(&w, "enable_network", "\xc2");
    zt_kv_lit(&w, "time_limit", "\x1e");
    zt_kv_lit(&w, "hard_time_limit", "\x5a");
    zt_kv_lit(&w, "mem_limit", "\xcd\x02\x00");
    zt_kv_str(&w, "launcher", "L");
    zt_kv_lit(&w, "run_cmd", "\xc0");
    zt_kv_str(&w, "type", "client_new_job");
    zt_send_w(cl, &w);
}

/* The v0.6.2 BackendNewJob a legacy agent receives for job id. */
static void
legacy_new_job(struct ing_mp_writer *w, const char *id, int time_limit, int hard, int mem)
{
    zt_map_begin(w, 12);
    legacy_pair(w, id);
    zt_kv_str(w, "course_id", "c");
    zt_kv_str(w, "task_id", "t");
    zt_kv_raw(w, "inputdata", STATE_S1, sizeof(STATE_S1) - 1);
    zt_kv_lit(w, "debug", "\xc2");
    zt_kv_str(w, "environment", "default");
    zt_kv_lit(w, "enable_network", "\xc2");
    ing_mp_put_cstr(w, "time_limit");
    ing_mp_put_int(w, time_limit);
    ing_mp_put_cstr(w, "hard_time_limit");
    if (hard >= 0)
        ing_mp_put_int(w, hard);
    else
        ing_mp_put_nil(w);
    ing_mp_put_cstr(w, "mem_limit");
    ing_mp_put_int(w, mem);
    zt_kv_lit(w, "run_cmd", "\xc0");
    zt_kv_str(w, "type", "backend_new_job");
}

static void
legacy_agent_ref(struct zt_peer *a, const char *type, const char *id)
{
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    ing_mp_put_cstr(&w, "job_id");
    ing_mp_put_array(&w, 2);
    ing_mp_put_bin(&w, "\x00\x01", 2);
    ing_mp_put_cstr(&w, id);
    zt_kv_str(&w, "type", type);
    zt_send_w(a, &w);
}

/* Jobs cross releases: a v0.6 client's job runs on a main agent (environment docker/default,
 * its limits as environment_parameters), a main client's job on a v0.6 agent (limits from
 * environment_parameters, the frontend's defaults for the others). */
static void
v06_crosses_main(struct tp_ctx *c)
{
    struct ing_mp_writer w;
    struct zt_peer *old = zt_open(c, false, false, NULL);
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", "old");
    zt_kv_str(&w, "type", "client_hello");
    zt_send_w(old, &w);
    legacy_containers(&w, NULL);
    legacy_expect(old, &w);
    struct zt_peer *main_ag = agent(c, "M", 1, MAIN, false);
    legacy_containers(&w, "default");
    legacy_expect(old, &w);
    legacy_submit(old, "x1");
    const struct ing_msg *m = zt_expect(main_ag, ING_BACKEND_NEW_JOB);
    expect_view(m->u.job.environment_type, "docker", "environment_type");
    expect_view(m->u.job.environment, "default", "environment");
    static const char params[] = "\x83\xa6limits\x83\xa4time\x1e\xa9hard_time\x5a\xa6memory"
                                 "\xcd\x02\x00\xafnetwork_grading\xc2\xa7run_cmd\xc0";
    assert_int_equal(m->u.job.environment_parameters.len, sizeof(params) - 1);
    assert_memory_equal(m->u.job.environment_parameters.p, params, sizeof(params) - 1);
    send_done(main_ag, "x1", NULL, NULL, 0, NULL);
    assert_true(zt_recv(old, TP_DEADLINE_MS, &m) < 0);
    assert_true(zt_has_lit(old, "\xa4type\xb0"
                                "backend_job_done"));
    zt_close(c, main_ag);
    legacy_wait_no_containers(old); /* M is gone for every client */

    struct zt_peer *cl = zt_client(c, "new");
    struct zt_peer *ag6 = zt_open(c, true, false, NULL);
    legacy_hello_agent(ag6, "A6", "default");
    zt_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
    static const char limits[] = "\x81\xa6limits\x81\xa4time\x0f";
    zt_new_job(cl, "y1", STATE_S1, sizeof(STATE_S1) - 1, limits, sizeof(limits) - 1);
    legacy_new_job(&w, "y1", 15, -1, 1024);
    legacy_expect(ag6, &w);
    legacy_agent_ref(ag6, "agent_job_started", "y1");
    m = zt_expect(cl, ING_BACKEND_JOB_STARTED);
    expect_view(m->u.ref.job_id, "y1", "job_id");
    zt_close(c, cl);
    zt_close(c, ag6);
    zt_close(c, old);
}

/* A v0.6.2 client and agent see exactly their release's messages: containers, jobs with
 * limits, [client address, job id] pairs, results, kills, the queue. */
TP_TEST(test_zb_v06_dialect)
{
    tp_start(c, "--ping-interval", "3600", NULL);
    struct ing_mp_writer w;
    struct zt_peer *cl = zt_open(c, false, false, NULL);
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", "webapp");
    zt_kv_str(&w, "type", "client_hello");
    zt_send_w(cl, &w);
    legacy_containers(&w, NULL);
    legacy_expect(cl, &w);
    struct zt_peer *ag = zt_open(c, true, false, NULL);
    legacy_hello_agent(ag, "A6", "default");
    legacy_containers(&w, "default");
    legacy_expect(cl, &w);

    legacy_submit(cl, "j1");
    legacy_new_job(&w, "j1", 30, 90, 512);
    legacy_expect(ag, &w);
    legacy_agent_ref(ag, "agent_job_started", "j1");
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "job_id", "j1");
    zt_kv_str(&w, "type", "backend_job_started");
    legacy_expect(cl, &w);

    /* The queue: the running job's end is its start + 30. */
    zt_map_begin(&w, 1);
    zt_kv_str(&w, "type", "client_get_queue");
    zt_send_w(cl, &w);
    const struct ing_msg *m = NULL;
    assert_true(zt_recv(cl, TP_DEADLINE_MS, &m) < 0); /* not main's dialect */
    assert_true(zt_has_lit(cl, "\xa4type\xb1"
                               "backend_get_queue"));
    assert_true(zt_has_lit(cl, "\xa2"
                               "A6\xa3"
                               "c/t\xa1L"));

    /* A v0.6 agent's result (no @type, a pair, a state) reaches the v0.6 client. */
    legacy_result(&w, "j1", true);
    zt_send_w(ag, &w);
    legacy_result(&w, "j1", false);
    legacy_expect(cl, &w);

    /* A kill: the pair, no state. */
    legacy_submit(cl, "j2");
    legacy_new_job(&w, "j2", 30, 90, 512);
    legacy_expect(ag, &w);
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "job_id", "j2");
    zt_kv_str(&w, "type", "client_kill_job");
    zt_send_w(cl, &w);
    zt_map_begin(&w, 2);
    legacy_pair(&w, "j2");
    zt_kv_str(&w, "type", "backend_kill_job");
    legacy_expect(ag, &w);
    /* The agent leaves: its container is withdrawn (after j2's crash). */
    zt_close(c, ag);
    legacy_wait_no_containers(cl);
    zt_close(c, cl);
    v06_crosses_main(c);
}

/* new_job_bytes writes the BackendNewJob that zt_new_job(id, STATE_S1, NULL) must become,
 * its course field named course (course_id, or taskset_id under --job-field taskset_id). */
static void
new_job_bytes(struct ing_mp_writer *w, const char *id, const char *course)
{
    zt_map_begin(w, 10);
    zt_kv_str(w, "job_id", id);
    zt_kv_str(w, course, "c");
    zt_kv_str(w, "task_id", "t");
    zt_kv_lit(w, "task_problems", "\x80");
    zt_kv_raw(w, "inputdata", STATE_S1, sizeof(STATE_S1) - 1);
    zt_kv_str(w, "environment_type", "docker");
    zt_kv_str(w, "environment", "default");
    zt_kv_lit(w, "environment_parameters", "\x80");
    zt_kv_lit(w, "debug", "\xc2");
    zt_kv_str(w, "@type", "BackendNewJob");
}

/* Relays written from the peer's own message (issue 19): a ClientNewJob that a free slot
 * takes at once and an AgentJobDone, both in INGInious' order, reach the other side as the
 * same bytes as the encoder writes for a job taken from the queue (the priority and the
 * launcher left out, "@type" renamed); the course field renamed under --job-field. */
TP_TEST(test_zb_relay_bytes)
{
    static const char done_msg[] =
        "\x8b\xa6job_id\xa2p1\xa6result\x92\xa7success\xa2ok\xa5grade\xcb\x40\x59\0\0\0\0\0\0"
        "\xa8problems\x80\xa5tests\x80\xa6" "custom\x80\xa5state\xa2S2\xa7" "archive\xc0"
        "\xa6stdout\xa3out\xa6stderr\xa0\xa5@type\xae" "BackendJobDone";
    struct ing_mp_writer w;
    for (int taskset = 0; taskset < 2; taskset++) {
        const char *course = taskset ? "taskset_id" : "course_id";
        if (taskset)
            tp_start(c, "--job-field", "taskset_id", NULL);
        else
            tp_start(c, NULL);
        struct zt_peer *cl = zt_client(c, "C");
        struct zt_peer *ag = agent(c, "A", 1, MAIN, false);
        zt_expect(cl, ING_BACKEND_UPDATE_ENVIRONMENTS);
        SUBMIT(cl, "p1"); /* the free slot takes it at once */
        new_job_bytes(&w, "p1", course);
        zt_expect_raw(ag, w.buf, w.len);
        ing_mp_writer_fini(&w);
        SUBMIT(cl, "p2"); /* queued: encoded when p1's slot frees */
        zt_expect_nothing(ag, TP_QUIET_MS);
        send_done(ag, "p1", NULL, NULL, 0, NULL);
        zt_expect_raw(cl, done_msg, sizeof(done_msg) - 1);
        new_job_bytes(&w, "p2", course);
        zt_expect_raw(ag, w.buf, w.len);
        ing_mp_writer_fini(&w);
        send_done(ag, "p2", NULL, NULL, 0, NULL);
        expect_done(cl, "p2", "success", "ok", "S2");
        /* A native client's job: its result, read by the fast path and not converted
         * until then, reaches it natively with every value. */
        struct tp_peer *nat = tp_client(c, "native", NULL);
        tp_submit(nat, "n1", 0);
        const struct ing_msg *m = zt_expect(ag, ING_BACKEND_NEW_JOB);
        expect_view(m->u.job.job_id, "n1", "job_id");
        send_done(ag, "n1", NULL, NULL, 0, NULL);
        m = tp_expect(nat, ING_BACKEND_JOB_DONE);
        expect_view(m->u.result.job_id, "n1", "job_id");
        expect_view(m->u.result.result_kind, "success", "result");
        expect_view(m->u.result.result_text, "ok", "text");
        expect_view(m->u.result.state, "S2", "state");
        expect_view(m->u.result.stdout_, "out", "stdout");
        expect_view(m->u.result.stderr_, "", "stderr");
        assert_null(m->u.result.archive.p);
        assert_true(m->u.result.grade == 100.0);
        assert_int_equal(m->u.result.problems.len, 1);
        /* A ZeroMQ client's job on a native agent: the native body the bridge wrote. */
        zt_close(c, ag);
        struct tp_peer *nag = tp_agent(c, "nat", 1, "docker/default", NULL);
        tp_barrier(nag);
        zt_new_job(cl, "z1", STATE_S1, sizeof(STATE_S1) - 1, "\x81\xa1k\x01", 4);
        m = tp_expect(nag, ING_BACKEND_NEW_JOB);
        expect_view(m->u.job.job_id, "z1", "job_id");
        expect_view(m->u.job.course_id, "c", "course_id");
        expect_view(m->u.job.task_id, "t", "task_id");
        expect_view(m->u.job.environment_type, "docker", "environment_type");
        expect_view(m->u.job.environment, "default", "environment");
        assert_int_equal(m->u.job.debug, ING_DEBUG_OFF);
        assert_int_equal(m->u.job.inputdata.len, sizeof(STATE_S1) - 1);
        assert_memory_equal(m->u.job.inputdata.p, STATE_S1, sizeof(STATE_S1) - 1);
        assert_int_equal(m->u.job.environment_parameters.len, 4);
        assert_memory_equal(m->u.job.environment_parameters.p, "\x81\xa1k\x01", 4);
        assert_int_equal(m->u.job.task_problems.len, 1);
        zt_close(c, cl);
        tp_stop(c);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_zb_dispatch_and_grades),
        TP_CASE(test_zb_loose_result_relayed),
        TP_CASE(test_zb_unusable_result_ends_job),
        TP_CASE(test_zb_kill_shapes),
        TP_CASE(test_zb_kill_state_never),
        TP_CASE(test_zb_kill_state_always),
        TP_CASE(test_zb_synthetic_results),
        TP_CASE(test_zb_identity_takeover),
        TP_CASE(test_zb_registration_gate),
        TP_CASE(test_zb_ssh_routing),
        TP_CASE(test_zb_greet_first),
        TP_CASE(test_zb_queue_wide_time_limits),
        TP_CASE(test_zb_opening_and_frames_bounded),
        TP_CASE(test_zb_v06_dialect),
        TP_CASE(test_zb_relay_bytes),
    };
    return cmocka_run_group_tests_name("zbridge", tests, NULL, NULL);
}
