/* SPDX-License-Identifier: MIT */
/* test_zmq_msg.c: the INGInious msgpack dialect <-> struct ing_msg (src/zmq_msg.c).
 *
 * Every decode runs on a copy that ends at a PROT_NONE guard page, so an over-read crashes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zmq_msg.h"

/* ---- guard-page decode ---- */

struct guard {
    uint8_t *map;
    size_t map_len;
    uint8_t *p;
};

static void
guard_make(struct guard *g, const uint8_t *src, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (n + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    g->map_len = (data_pages + 1) * page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + data_pages * page, page, PROT_NONE), 0);
    g->p = g->map + data_pages * page - n;
    if (n > 0)
        memcpy(g->p, src, n);
}

static void
guard_free(struct guard *g)
{
    munmap(g->map, g->map_len);
}

/* Decodes a guarded copy of p[0..n); the views then point into g (free it after use). */
static int
decode_guarded(struct guard *g, const void *p, size_t n, struct ing_msg *m, const char **why)
{
    guard_make(g, p, n);
    return zmq_msg_decode(g->p, n, m, why);
}

/* Decodes and frees at once, for results that need no views. */
static int
decode_rc(const void *p, size_t n, const char **why)
{
    struct guard g;
    struct ing_msg m;
    int rc = decode_guarded(&g, p, n, &m, why);
    guard_free(&g);
    return rc;
}

static void
assert_view(struct ing_view v, const char *s)
{
    assert_non_null(v.p);
    assert_int_equal(v.len, strlen(s));
    assert_memory_equal(v.p, s, v.len);
}

static void
assert_view_bytes(struct ing_view v, const void *p, size_t n)
{
    assert_non_null(v.p);
    assert_int_equal(v.len, n);
    assert_memory_equal(v.p, p, n);
}

static struct ing_view
V(const char *s) {
    struct ing_view v = {s, (uint32_t)strlen(s)};
    return v;
}

static struct ing_view
VB(const void *p, size_t n) {
    struct ing_view v = {(const char *)p, (uint32_t)n};
    return v;
}

static const struct ing_view NIL = {NULL, 0};

/* A view of a string literal or array that may hold NUL bytes. */
#define VS(a) VB((a), sizeof(a) - 1)

/* ---- building msgpack maps with the writer ---- */

static void
w_str(struct ing_mp_writer *w, const char *s)
{
    ing_mp_put_cstr(w, s);
}

/* Encodes m with jf into a dynamic writer (the caller finalises it). */
static void
encode_ok(const struct ing_msg *m, enum zmq_job_field jf, struct ing_mp_writer *w)
{
    ing_mp_writer_init_dyn(w);
    assert_int_equal(zmq_msg_encode(m, w, jf), 0);
}

/* ---- §2.1 vectors ---- */

#define VEC(s) (const uint8_t *)(s), sizeof(s) - 1

static const char PING[] = "\x81\xa5@type\xa4Ping";
static const char UNKNOWN[] = "\x81\xa5@type\xa7Unknown";
static const char CLIENT_HELLO[] = "\x82\xa4name\xa2me\xa5@type\xab"
                                   "ClientHello";
static const char BACKEND_KILL_JOB[] = "\x83\xa6job_id\xa2j1\xa5state\xa1S\xa5@type\xae"
                                       "BackendKillJob";
static const char BACKEND_JOB_DONE[] = "\x8b\xa6job_id\xa1j\xa6result\x92\xa5"
                                       "crash\xa1x\xa5grade\xcb\x00\x00\x00\x00\x00\x00"
                                       "\x00\x00\xa8problems\x80\xa5tests\x80\xa6"
                                       "custom\x80\xa5state\xa0\xa7"
                                       "archive\xc0"
                                       "\xa6stdout\xc0\xa6stderr\xc0\xa5@type\xae"
                                       "BackendJobDone";
static const char BACKEND_GET_QUEUE[] = "\x83\xacjobs_running\x91\x97\xa1j\xc3\xa1"
                                        "A\xa3"
                                        "c/t\xa1L\x05\xff\xacjobs_waiting\x90"
                                        "\xa5@type\xaf"
                                        "BackendGetQueue";

static void
check_vector(const struct ing_msg *m, const uint8_t *want, size_t n)
{
    struct ing_mp_writer w;
    encode_ok(m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    assert_int_equal(w.len, n);
    assert_memory_equal(w.buf, want, n);
    /* A fixed writer of every smaller size fails with -ENOMEM. */
    uint8_t small[256];
    for (size_t cap = 0; cap < n && cap <= sizeof(small); cap++) {
        struct ing_mp_writer f;
        ing_mp_writer_init(&f, small, cap);
        assert_int_equal(zmq_msg_encode(m, &f, ZMQ_JOB_FIELD_COURSE_ID), -ENOMEM);
    }
    ing_mp_writer_fini(&w);
}

/* decode(want) then encode must give want back. */
static void
check_reencode(const uint8_t *want, size_t n)
{
    struct guard g;
    struct ing_msg m;
    struct ing_mp_writer w;
    assert_int_equal(decode_guarded(&g, want, n, &m, NULL), 0);
    encode_ok(&m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    assert_int_equal(w.len, n);
    assert_memory_equal(w.buf, want, n);
    ing_mp_writer_fini(&w);
    guard_free(&g);
}

static void
test_zmq_msg_vector_ping_unknown(void **state)
{
    (void)state;
    struct ing_msg m = {.type = ING_PING};
    check_vector(&m, VEC(PING));
    m.type = ING_UNKNOWN;
    check_vector(&m, VEC(UNKNOWN));
    m.type = ING_PONG;
    struct ing_mp_writer w;
    encode_ok(&m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    assert_int_equal(w.len, 12);
    assert_memory_equal(w.buf, "\x81\xa5@type\xa4Pong", 12);
    ing_mp_writer_fini(&w);

    struct guard g;
    assert_int_equal(decode_guarded(&g, VEC(PING), &m, NULL), 0);
    assert_int_equal(m.type, ING_PING);
    guard_free(&g);
    assert_int_equal(decode_guarded(&g, VEC(UNKNOWN), &m, NULL), 0);
    assert_int_equal(m.type, ING_UNKNOWN);
    guard_free(&g);
    check_reencode(VEC(PING));
    check_reencode(VEC(UNKNOWN));
}

static void
test_zmq_msg_vector_client_hello(void **state)
{
    (void)state;
    struct ing_msg m = {.type = ING_CLIENT_HELLO};
    m.u.client_hello.name = V("me");
    check_vector(&m, VEC(CLIENT_HELLO));
    struct guard g;
    assert_int_equal(decode_guarded(&g, VEC(CLIENT_HELLO), &m, NULL), 0);
    assert_int_equal(m.type, ING_CLIENT_HELLO);
    assert_view(m.u.client_hello.name, "me");
    /* Zero-copy: the view points into the input. */
    assert_ptr_equal(m.u.client_hello.name.p, g.p + 7);
    guard_free(&g);
    check_reencode(VEC(CLIENT_HELLO));
}

static void
test_zmq_msg_vector_backend_kill_job(void **state)
{
    (void)state;
    struct ing_msg m = {.type = ING_BACKEND_KILL_JOB};
    m.u.kill.job_id = V("j1");
    m.u.kill.state = V("S");
    check_vector(&m, VEC(BACKEND_KILL_JOB));
    struct guard g;
    assert_int_equal(decode_guarded(&g, VEC(BACKEND_KILL_JOB), &m, NULL), 0);
    assert_int_equal(m.type, ING_BACKEND_KILL_JOB);
    assert_view(m.u.kill.job_id, "j1");
    assert_view(m.u.kill.state, "S");
    guard_free(&g);
    check_reencode(VEC(BACKEND_KILL_JOB));
}

static void
test_zmq_msg_vector_backend_job_done(void **state)
{
    (void)state;
    struct ing_msg m = {.type = ING_BACKEND_JOB_DONE};
    m.u.result.job_id = V("j");
    m.u.result.result_kind = V("crash");
    m.u.result.result_text = V("x");
    m.u.result.grade = 0.0;
    m.u.result.problems = V("\x80");
    m.u.result.tests = V("\x80");
    m.u.result.custom = V("\x80");
    m.u.result.state = V("");
    m.u.result.archive = NIL;
    m.u.result.stdout_ = NIL;
    m.u.result.stderr_ = NIL;
    check_vector(&m, VEC(BACKEND_JOB_DONE));

    struct guard g;
    assert_int_equal(decode_guarded(&g, VEC(BACKEND_JOB_DONE), &m, NULL), 0);
    assert_int_equal(m.type, ING_BACKEND_JOB_DONE);
    assert_view(m.u.result.job_id, "j");
    assert_view(m.u.result.result_kind, "crash");
    assert_view(m.u.result.result_text, "x");
    assert_true(m.u.result.grade == 0.0);
    assert_view(m.u.result.problems, "\x80");
    assert_view(m.u.result.tests, "\x80");
    assert_view(m.u.result.custom, "\x80");
    assert_non_null(m.u.result.state.p); /* empty, not nil */
    assert_int_equal(m.u.result.state.len, 0);
    assert_null(m.u.result.archive.p);
    assert_null(m.u.result.stdout_.p);
    assert_null(m.u.result.stderr_.p);
    guard_free(&g);
    check_reencode(VEC(BACKEND_JOB_DONE));
}

static void
test_zmq_msg_vector_backend_get_queue(void **state)
{
    (void)state;
    struct ing_queue_running run = {V("j"), true, V("A"), V("c/t"), V("L"), 5, -1};
    struct ing_msg m = {.type = ING_BACKEND_GET_QUEUE};
    m.u.queue.n_running = 1;
    m.u.queue.running = &run;
    m.u.queue.n_waiting = 0;
    check_vector(&m, VEC(BACKEND_GET_QUEUE));

    struct guard g;
    assert_int_equal(decode_guarded(&g, VEC(BACKEND_GET_QUEUE), &m, NULL), 0);
    assert_int_equal(m.type, ING_BACKEND_GET_QUEUE);
    assert_int_equal(m.u.queue.n_running, 1);
    assert_int_equal(m.u.queue.n_waiting, 0);
    assert_null(m.u.queue.running);
    assert_null(m.u.queue.waiting);
    struct ing_queue_running e;
    const uint8_t *end = g.p + sizeof(BACKEND_GET_QUEUE) - 1;
    const uint8_t *next = zmq_msg_queue_next_running(m.u.queue.wire_running, end, &e);
    assert_non_null(next);
    assert_view(e.job_id, "j");
    assert_true(e.is_current);
    assert_view(e.agent_name, "A");
    assert_view(e.info, "c/t");
    assert_view(e.launcher, "L");
    assert_int_equal(e.started_at, 5);
    assert_int_equal(e.max_time, -1);
    assert_int_equal(*next, 0xac); /* the next key, "jobs_waiting" */
    guard_free(&g);
}

/* ---- round trips ---- */

static const char TASK_PROBLEMS[] = "\x81\xa2q1\x81\xa4type\xa3mcq";
static const char INPUTDATA[] = "\x82\xa2q1\xa1"
                                "a\xa6@state\xa5old-s";
static const char ENV_PARAMS[] = "\x81\xa6limits\x82\xa4time\x1e\xa6memory\xcd\x04\x00";
static const char PROBLEMS[] = "\x81\xa2q1\x92\xa7success\xa2ok";
static const char ENVS[] = "\x81\xa6"
                           "docker\x91\xa7"
                           "default";
static const char AGENT_ENVS[] = "\x81\xa6"
                                 "docker\x81\xa7"
                                 "default\x84\xa2id\xa2i1\xa7"
                                 "created\x01\xa5ports\x90\xaa"
                                 "advertised\xc3";

/* Encodes m, decodes the bytes, re-encodes: same bytes. Returns the decoded message in *out
 * (views into the guard g, which the caller frees). */
static void
round_trip(const struct ing_msg *m, enum zmq_job_field jf, struct ing_msg *out, struct guard *g)
{
    struct ing_mp_writer w1, w2;
    const char *why = NULL;
    encode_ok(m, jf, &w1);
    int rc = decode_guarded(g, w1.buf, w1.len, out, &why);
    if (rc != 0)
        print_error("type %d: %s\n", m->type, why);
    assert_int_equal(rc, 0);
    assert_int_equal(out->type, m->type);
    encode_ok(out, jf, &w2);
    assert_int_equal(w1.len, w2.len);
    assert_memory_equal(w1.buf, w2.buf, w1.len);
    ing_mp_writer_fini(&w1);
    ing_mp_writer_fini(&w2);
}

static void
fill_spec(struct ing_job_spec *s)
{
    s->job_id = V("5b2c6a3e-uuid");
    s->course_id = V("LSINF1252");
    s->task_id = V("fork");
    s->environment_type = V("docker");
    s->environment = V("default");
    s->debug = ING_DEBUG_SSH;
    s->task_problems = VS(TASK_PROBLEMS);
    s->inputdata = VS(INPUTDATA);
    s->environment_parameters = VS(ENV_PARAMS);
}

static void
check_spec(const struct ing_job_spec *a, const struct ing_job_spec *b)
{
    assert_view_bytes(a->job_id, b->job_id.p, b->job_id.len);
    if (b->course_id.p == NULL)
        assert_null(a->course_id.p);
    else
        assert_view_bytes(a->course_id, b->course_id.p, b->course_id.len);
    if (b->task_id.p == NULL)
        assert_null(a->task_id.p);
    else
        assert_view_bytes(a->task_id, b->task_id.p, b->task_id.len);
    assert_view_bytes(a->environment_type, b->environment_type.p, b->environment_type.len);
    assert_view_bytes(a->environment, b->environment.p, b->environment.len);
    assert_int_equal(a->debug, b->debug);
    if (b->task_problems.p == NULL)
        assert_view(a->task_problems, "\xc0");
    else
        assert_view_bytes(a->task_problems, b->task_problems.p, b->task_problems.len);
    assert_view_bytes(a->inputdata, b->inputdata.p, b->inputdata.len);
    assert_view_bytes(a->environment_parameters, b->environment_parameters.p,
                      b->environment_parameters.len);
}

static void
test_zmq_msg_round_trip_client(void **state)
{
    (void)state;
    struct ing_msg m = {0}, d;
    struct guard g;

    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name = V("frontend-1");
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.client_hello.name, "frontend-1");
    guard_free(&g);

    static const enum ing_debug debugs[] = {ING_DEBUG_OFF, ING_DEBUG_ON, ING_DEBUG_SSH};
    for (int jf = 0; jf < 2; jf++) {
        for (int i = 0; i < 3; i++) {
            memset(&m, 0, sizeof(m));
            m.type = ING_CLIENT_NEW_JOB;
            m.u.new_job.priority = i == 0 ? -3 : (i == 1 ? 0 : INT64_MAX);
            m.u.new_job.launcher = V("Frontend - alice");
            fill_spec(&m.u.new_job.job);
            m.u.new_job.job.debug = (uint8_t)debugs[i];
            if (i == 1) { /* a taskless job (main): nil ids and nil task_problems */
                m.u.new_job.job.course_id = NIL;
                m.u.new_job.job.task_id = NIL;
                m.u.new_job.job.task_problems = NIL;
            }
            round_trip(&m, (enum zmq_job_field)jf, &d, &g);
            assert_int_equal(d.u.new_job.priority, m.u.new_job.priority);
            assert_view(d.u.new_job.launcher, "Frontend - alice");
            check_spec(&d.u.new_job.job, &m.u.new_job.job);
            guard_free(&g);
        }
    }

    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_KILL_JOB;
    m.u.ref.job_id = V("jk");
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.ref.job_id, "jk");
    guard_free(&g);

    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_GET_QUEUE;
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    guard_free(&g);
}

static void
test_zmq_msg_round_trip_backend(void **state)
{
    (void)state;
    struct ing_msg m = {0}, d;
    struct guard g;

    m.type = ING_BACKEND_UPDATE_ENVIRONMENTS;
    m.u.envs.environments = VS(ENVS);
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view_bytes(d.u.envs.environments, ENVS, sizeof(ENVS) - 1);
    guard_free(&g);

    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_JOB_STARTED;
    m.u.ref.job_id = V("js");
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.ref.job_id, "js");
    guard_free(&g);

    static const uint8_t archive[] = {0x1f, 0x8b, 0x00, 0xff, 0x00};
    static const uint8_t types[] = {ING_BACKEND_JOB_DONE, ING_AGENT_JOB_DONE};
    for (int i = 0; i < 2; i++) {
        memset(&m, 0, sizeof(m));
        m.type = types[i];
        m.u.result.job_id = V("jd");
        m.u.result.result_kind = V("success");
        m.u.result.result_text = V("Well done \xc3\xa9");
        m.u.result.grade = 87.25;
        m.u.result.problems = VS(PROBLEMS);
        m.u.result.tests = V("\x80");
        m.u.result.custom = V("\x81\xa1k\x01");
        m.u.result.state = V("new-state");
        m.u.result.archive = VB(archive, sizeof(archive));
        m.u.result.stdout_ = V("out");
        m.u.result.stderr_ = i == 0 ? NIL : V("");
        round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
        assert_view(d.u.result.job_id, "jd");
        assert_view(d.u.result.result_kind, "success");
        assert_view(d.u.result.result_text, "Well done \xc3\xa9");
        assert_true(d.u.result.grade == 87.25);
        assert_view_bytes(d.u.result.problems, PROBLEMS, sizeof(PROBLEMS) - 1);
        assert_view(d.u.result.custom, "\x81\xa1k\x01");
        assert_view(d.u.result.state, "new-state");
        assert_view_bytes(d.u.result.archive, archive, sizeof(archive));
        assert_view(d.u.result.stdout_, "out");
        if (i == 0)
            assert_null(d.u.result.stderr_.p);
        else
            assert_view(d.u.result.stderr_, "");
        guard_free(&g);
    }
    /* An empty (not nil) archive stays an empty bin. */
    m.u.result.archive = VB(archive, 0);
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_non_null(d.u.result.archive.p);
    assert_int_equal(d.u.result.archive.len, 0);
    guard_free(&g);

    static const uint8_t ssh_types[] = {ING_BACKEND_JOB_SSH_DEBUG, ING_AGENT_JOB_SSH_DEBUG};
    for (int i = 0; i < 2; i++) {
        memset(&m, 0, sizeof(m));
        m.type = ssh_types[i];
        m.u.ssh.job_id = V("jssh");
        m.u.ssh.host = V("h");
        m.u.ssh.port = i == 0 ? 64120 : UINT32_MAX;
        m.u.ssh.user = V("worker");
        m.u.ssh.password = V("pw");
        round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
        assert_view(d.u.ssh.job_id, "jssh");
        assert_view(d.u.ssh.host, "h");
        assert_int_equal(d.u.ssh.port, m.u.ssh.port);
        assert_view(d.u.ssh.user, "worker");
        assert_view(d.u.ssh.password, "pw");
        guard_free(&g);
    }

    /* Times as Python's msgpack packs them, up to 2^64 - 1 (issue 14 item 6). */
    struct ing_queue_running run[3] = {
        {V("r1"), true, V("agent A"), V("c/t"), V("L1"), 1700000000, 30, false},
        {V("r2"), false, V(""), NIL, V("L2"), 0, -1, false},
        {V("r3"), false, V("B"), NIL, V("L5"), 1, (int64_t)UINT64_C(0x8000000000000005), true},
    };
    struct ing_queue_waiting wait[4] = {
        {V("w1"), false, V("default"), V("L3"), -1, false},
        {V("w2"), true, NIL, V("L4"), 20, false},
        {V("w3"), true, V("x/y"), V(""), INT64_MIN, false},
        {V("w4"), true, V("x/y"), V(""), -1 /* 2^64 - 1 */, true},
    };
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_GET_QUEUE;
    m.u.queue.n_running = 3;
    m.u.queue.running = run;
    m.u.queue.n_waiting = 4;
    m.u.queue.waiting = wait;
    struct ing_mp_writer w;
    encode_ok(&m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    assert_non_null(memmem(w.buf, w.len, "\xa2L5\x01\xcf\x80\0\0\0\0\0\0\x05", 13));
    assert_non_null(memmem(w.buf, w.len, "\xa0\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 10));
    assert_int_equal(decode_guarded(&g, w.buf, w.len, &d, NULL), 0);
    const uint8_t *end = g.p + w.len, *pos = d.u.queue.wire_running;
    assert_int_equal(d.u.queue.n_running, 3);
    for (int i = 0; i < 3; i++) {
        struct ing_queue_running e;
        pos = zmq_msg_queue_next_running(pos, end, &e);
        assert_non_null(pos);
        assert_view_bytes(e.job_id, run[i].job_id.p, run[i].job_id.len);
        assert_true(e.is_current == run[i].is_current);
        assert_view_bytes(e.agent_name, run[i].agent_name.p, run[i].agent_name.len);
        if (run[i].info.p == NULL)
            assert_null(e.info.p);
        else
            assert_view_bytes(e.info, run[i].info.p, run[i].info.len);
        assert_view_bytes(e.launcher, run[i].launcher.p, run[i].launcher.len);
        assert_int_equal(e.started_at, run[i].started_at);
        assert_int_equal(e.max_time, run[i].max_time);
        assert_true(e.max_time_u64 == run[i].max_time_u64);
    }
    pos = d.u.queue.wire_waiting;
    assert_int_equal(d.u.queue.n_waiting, 4);
    for (int i = 0; i < 4; i++) {
        struct ing_queue_waiting e;
        pos = zmq_msg_queue_next_waiting(pos, end, &e);
        assert_non_null(pos);
        assert_view_bytes(e.job_id, wait[i].job_id.p, wait[i].job_id.len);
        assert_true(e.is_current == wait[i].is_current);
        if (wait[i].info.p == NULL)
            assert_null(e.info.p);
        else
            assert_view_bytes(e.info, wait[i].info.p, wait[i].info.len);
        assert_view_bytes(e.launcher, wait[i].launcher.p, wait[i].launcher.len);
        assert_int_equal(e.max_time, wait[i].max_time);
        assert_true(e.max_time_u64 == wait[i].max_time_u64);
    }
    /* Reading a running tuple where a waiting one is refuses. */
    struct ing_queue_running bad;
    assert_null(zmq_msg_queue_next_running(d.u.queue.wire_waiting, end, &bad));
    guard_free(&g);
    ing_mp_writer_fini(&w);

    for (int jf = 0; jf < 2; jf++) {
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_NEW_JOB;
        fill_spec(&m.u.job);
        round_trip(&m, (enum zmq_job_field)jf, &d, &g);
        check_spec(&d.u.job, &m.u.job);
        guard_free(&g);
    }

    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_KILL_JOB;
    m.u.kill.job_id = V("jk");
    m.u.kill.state = V("");
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.kill.state, "");
    guard_free(&g);

    static const uint8_t bare[] = {ING_PING, ING_PONG, ING_UNKNOWN};
    for (int i = 0; i < 3; i++) {
        memset(&m, 0, sizeof(m));
        m.type = bare[i];
        round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
        guard_free(&g);
    }
}

static void
test_zmq_msg_round_trip_agent(void **state)
{
    (void)state;
    struct ing_msg m = {0}, d;
    struct guard g;

    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = V("");
    m.u.agent_hello.slots = 4;
    m.u.agent_hello.environments = VS(AGENT_ENVS);
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.agent_hello.friendly_name, "");
    assert_int_equal(d.u.agent_hello.slots, 4);
    assert_view_bytes(d.u.agent_hello.environments, AGENT_ENVS, sizeof(AGENT_ENVS) - 1);
    guard_free(&g);

    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_STARTED;
    m.u.ref.job_id = V("ja");
    round_trip(&m, ZMQ_JOB_FIELD_COURSE_ID, &d, &g);
    assert_view(d.u.ref.job_id, "ja");
    guard_free(&g);
}

/* The exact bytes of BackendNewJob with each course field name, and both names accepted on
 * input by ClientNewJob. */
static void
test_zmq_msg_taskset_alias(void **state)
{
    (void)state;
    struct ing_msg m = {.type = ING_BACKEND_NEW_JOB}, d;
    fill_spec(&m.u.job);
    m.u.job.debug = ING_DEBUG_OFF;
    struct ing_mp_writer w;
    static const char head_course[] = "\x8a\xa6job_id\xad"
                                      "5b2c6a3e-uuid\xa9"
                                      "course_id";
    static const char head_taskset[] = "\x8a\xa6job_id\xad"
                                       "5b2c6a3e-uuid\xaa"
                                       "taskset_id";
    encode_ok(&m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    assert_memory_equal(w.buf, head_course, sizeof(head_course) - 1);
    ing_mp_writer_fini(&w);
    encode_ok(&m, ZMQ_JOB_FIELD_TASKSET_ID, &w);
    assert_memory_equal(w.buf, head_taskset, sizeof(head_taskset) - 1);
    ing_mp_writer_fini(&w);
    assert_int_equal(zmq_msg_encode(&m, &w, (enum zmq_job_field)2), -EINVAL);

    /* A UCL-master ClientNewJob, keys in another order than Python's. */
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, 12);
    w_str(&w, "@type");
    w_str(&w, "ClientNewJob");
    w_str(&w, "launcher");
    w_str(&w, "L");
    w_str(&w, "taskset_id");
    w_str(&w, "ts");
    w_str(&w, "debug");
    ing_mp_put_bool(&w, true);
    w_str(&w, "inputdata");
    ing_mp_put_map(&w, 0);
    w_str(&w, "task_id");
    ing_mp_put_nil(&w);
    w_str(&w, "environment");
    w_str(&w, "e");
    w_str(&w, "environment_type");
    w_str(&w, "t");
    w_str(&w, "priority");
    ing_mp_put_int(&w, 1);
    w_str(&w, "task_problems");
    ing_mp_put_map(&w, 0);
    w_str(&w, "environment_parameters");
    ing_mp_put_map(&w, 0);
    w_str(&w, "job_id");
    w_str(&w, "J");
    struct guard g;
    assert_int_equal(decode_guarded(&g, w.buf, w.len, &d, NULL), 0);
    assert_int_equal(d.type, ING_CLIENT_NEW_JOB);
    assert_view(d.u.new_job.job.course_id, "ts");
    assert_null(d.u.new_job.job.task_id.p);
    assert_int_equal(d.u.new_job.job.debug, ING_DEBUG_ON);
    assert_int_equal(d.u.new_job.priority, 1);
    assert_view(d.u.new_job.job.job_id, "J");
    guard_free(&g);
    ing_mp_writer_fini(&w);
}

/* ---- messages described as (key, raw msgpack value) lists ---- */

struct kv {
    const char *key;
    const char *raw;
    size_t len;
};

#define RAW(s) (s), sizeof(s) - 1

static const struct kv NEW_JOB[] = {
    {"job_id", RAW("\xa3J42")},
    {"priority", RAW("\x00")},
    {"course_id", RAW("\xa1"
                      "c")},
    {"task_id", RAW("\xa1t")},
    {"task_problems", RAW("\x80")},
    {"inputdata", RAW("\x81\xa6@state\xa1s")},
    {"environment_type", RAW("\xa6"
                             "docker")},
    {"environment", RAW("\xa7"
                        "default")},
    {"environment_parameters", RAW("\x80")},
    {"debug", RAW("\xc2")},
    {"launcher", RAW("\xa1L")},
    {"@type", RAW("\xac"
                  "ClientNewJob")},
};

static const struct kv JOB_DONE[] = {
    {"job_id", RAW("\xa2jd")},
    {"result", RAW("\x92\xa7success\xa0")},
    {"grade", RAW("\xcb\x40\x59\x00\x00\x00\x00\x00\x00")}, /* 100.0 */
    {"problems", RAW("\x80")},
    {"tests", RAW("\x80")},
    {"custom", RAW("\x80")},
    {"state", RAW("\xa0")},
    {"archive", RAW("\xc4\x01z")},
    {"stdout", RAW("\xc0")},
    {"stderr", RAW("\xa0")},
    {"@type", RAW("\xac"
                  "AgentJobDone")},
};

static const struct kv SSH_DEBUG[] = {
    {"job_id", RAW("\xa2js")},
    {"host", RAW("\xa1h")},
    {"port", RAW("\xcd\xfa\x78")}, /* 64120 */
    {"user", RAW("\xa1u")},
    {"password", RAW("\xa1p")},
    {"@type", RAW("\xb0"
                  "AgentJobSSHDebug")},
};

static const struct kv AGENT_HELLO[] = {
    {"friendly_name", RAW("\xa1"
                          "A")},
    {"available_job_slots", RAW("\x02")},
    {"available_environments", RAW("\x80")},
    {"@type", RAW("\xaa"
                  "AgentHello")},
};

static const struct kv KILL_JOB[] = {
    {"job_id", RAW("\xa2jk")},
    {"state", RAW("\xa0")},
    {"@type", RAW("\xae"
                  "BackendKillJob")},
};

#define NKV(a) (sizeof(a) / sizeof((a)[0]))

/* Builds a map from kv[0..n): without the key `skip`, with `sub` replacing the value of its
 * key, plus `extra` at the end. */
static size_t
build(uint8_t *out, size_t cap, const struct kv *kv, size_t n, const char *skip,
      const struct kv *sub, const struct kv *extra)
{
    struct ing_mp_writer w;
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += skip == NULL || strcmp(kv[i].key, skip) != 0;
    count += extra != NULL;
    ing_mp_writer_init(&w, out, cap);
    ing_mp_put_map(&w, count);
    for (size_t i = 0; i < n; i++) {
        if (skip != NULL && strcmp(kv[i].key, skip) == 0)
            continue;
        w_str(&w, kv[i].key);
        if (sub != NULL && strcmp(kv[i].key, sub->key) == 0)
            ing_mp_put_raw(&w, sub->raw, sub->len);
        else
            ing_mp_put_raw(&w, kv[i].raw, kv[i].len);
    }
    if (extra != NULL) {
        w_str(&w, extra->key);
        ing_mp_put_raw(&w, extra->raw, extra->len);
    }
    assert_int_equal(w.err, 0);
    return w.len;
}

static int
decode_kv(const struct kv *kv, size_t n, const char *skip, const struct kv *sub,
          const struct kv *extra, const char **why)
{
    uint8_t buf[1024];
    size_t len = build(buf, sizeof(buf), kv, n, skip, sub, extra);
    return decode_rc(buf, len, why);
}

static void
test_zmq_msg_bases_decode(void **state)
{
    (void)state;
    uint8_t buf[1024];
    struct guard g;
    struct ing_msg m;
    size_t n = build(buf, sizeof(buf), NEW_JOB, NKV(NEW_JOB), NULL, NULL, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_int_equal(m.type, ING_CLIENT_NEW_JOB);
    assert_view(m.u.new_job.job.job_id, "J42");
    assert_int_equal(m.u.new_job.priority, 0);
    assert_view(m.u.new_job.job.course_id, "c");
    assert_view(m.u.new_job.job.task_id, "t");
    assert_view(m.u.new_job.job.task_problems, "\x80");
    assert_view(m.u.new_job.job.inputdata, "\x81\xa6@state\xa1s");
    assert_view(m.u.new_job.job.environment_type, "docker");
    assert_view(m.u.new_job.job.environment, "default");
    assert_view(m.u.new_job.job.environment_parameters, "\x80");
    assert_int_equal(m.u.new_job.job.debug, ING_DEBUG_OFF);
    assert_view(m.u.new_job.launcher, "L");
    guard_free(&g);

    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, NULL, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_int_equal(m.type, ING_AGENT_JOB_DONE);
    assert_true(m.u.result.grade == 100.0);
    assert_view(m.u.result.archive, "z");
    assert_null(m.u.result.stdout_.p);
    assert_view(m.u.result.stderr_, "");
    assert_view(m.u.result.result_text, "");
    guard_free(&g);

    n = build(buf, sizeof(buf), SSH_DEBUG, NKV(SSH_DEBUG), NULL, NULL, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_int_equal(m.type, ING_AGENT_JOB_SSH_DEBUG);
    assert_int_equal(m.u.ssh.port, 64120);
    guard_free(&g);

    n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_int_equal(m.type, ING_AGENT_HELLO);
    assert_int_equal(m.u.agent_hello.slots, 2);
    assert_view(m.u.agent_hello.friendly_name, "A");
    guard_free(&g);
}

/* A message with a key missing is -EPROTO; an agent's result (agent_result) whose job_id
 * is there is -EINVAL instead, so that its job can be ended. */
static void
check_missing(const struct kv *kv, size_t n, bool agent_result)
{
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        bool einval =
            agent_result && strcmp(kv[i].key, "job_id") != 0 && strcmp(kv[i].key, "@type") != 0;
        assert_int_equal(decode_kv(kv, n, kv[i].key, NULL, NULL, &why), einval ? -EINVAL : -EPROTO);
        assert_non_null(why);
        if (strcmp(kv[i].key, "@type") == 0)
            assert_string_equal(why, "no @type");
        else
            assert_string_equal(why, "missing key for this @type");
    }
}

static void
test_zmq_msg_missing_key(void **state)
{
    (void)state;
    check_missing(NEW_JOB, NKV(NEW_JOB), false);
    check_missing(JOB_DONE, NKV(JOB_DONE), true);
    check_missing(SSH_DEBUG, NKV(SSH_DEBUG), false);
    check_missing(AGENT_HELLO, NKV(AGENT_HELLO), false);
    check_missing(KILL_JOB, NKV(KILL_JOB), false);
    const char *why;
    assert_int_equal(decode_rc(VEC("\x81\xa5@type\xab"
                                   "ClientHello"),
                               &why),
                     -EPROTO);
    assert_string_equal(why, "missing key for this @type");
}

static void
test_zmq_msg_extra_key(void **state)
{
    (void)state;
    const char *why;
    struct kv extra = {"extra", RAW("\x01")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &extra, &why), -EPROTO);
    assert_string_equal(why, "unexpected key for this @type");
    assert_int_equal(decode_kv(JOB_DONE, NKV(JOB_DONE), NULL, NULL, &extra, &why), -EINVAL);
    assert_string_equal(why, "unexpected key for this @type");
    assert_int_equal(decode_kv(AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &extra, &why), -EPROTO);
    /* Fields of other versions: v0.5 "type", v0.6 "run_cmd", v0.8 ssh_allowed outside
     * AgentHello. */
    struct kv type5 = {"type", RAW("\xa4ping")};
    struct kv run_cmd = {"run_cmd", RAW("\xc0")};
    struct kv ssh = {"ssh_allowed", RAW("\xc3")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &type5, &why), -EPROTO);
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &run_cmd, &why), -EPROTO);
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &ssh, &why), -EPROTO);
    assert_int_equal(decode_rc(VEC("\x82\xa5@type\xa4Ping\xa1x\x01"), &why), -EPROTO);
    assert_int_equal(decode_rc(VEC("\x82\xa1x\x01\xa5@type\xa4Ping"), &why), -EPROTO);

    /* Repeated keys (Python would keep the last; we refuse the ambiguity). */
    struct kv again = {"job_id", RAW("\xa3J43")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &again, &why), -EPROTO);
    assert_string_equal(why, "repeated key (or both course_id and taskset_id)");
    struct kv type_again = {"@type", RAW("\xac"
                                         "ClientNewJob")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &type_again, &why), -EPROTO);
    assert_string_equal(why, "repeated key @type");

    /* course_id and taskset_id: exactly one. */
    struct kv taskset = {"taskset_id", RAW("\xa2ts")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, NULL, &taskset, &why), -EPROTO);
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), "course_id", NULL, &taskset, &why), 0);
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), "course_id", NULL, NULL, &why), -EPROTO);
}

static void
test_zmq_msg_ssh_allowed(void **state)
{
    (void)state;
    const char *why;
    struct kv t = {"ssh_allowed", RAW("\xc3")};
    struct kv f = {"ssh_allowed", RAW("\xc2")};
    struct kv bad = {"ssh_allowed", RAW("\xa3yes")};
    assert_int_equal(decode_kv(AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &t, &why), 0);
    assert_int_equal(decode_kv(AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &f, &why), 0);
    assert_int_equal(decode_kv(AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &bad, &why), -EPROTO);
    assert_string_equal(why, "ssh_allowed is not a bool");

    /* The v0.8.0 AgentHello round-trips to a main one (ssh_allowed is dropped). */
    uint8_t buf[256];
    size_t n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &t);
    struct guard g;
    struct ing_msg m;
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    struct ing_mp_writer w;
    encode_ok(&m, ZMQ_JOB_FIELD_COURSE_ID, &w);
    size_t n2 = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, NULL);
    assert_int_equal(w.len, n2);
    assert_memory_equal(w.buf, buf, n2);
    ing_mp_writer_fini(&w);
    guard_free(&g);
}

/* A bad value in a message with a str job_id: -EINVAL, the job id is exposed. */
static void
expect_einval(const struct kv *kv, size_t n, const char *key, const char *raw, size_t len,
              uint8_t type, size_t job_off, const char *job_id)
{
    uint8_t buf[1024];
    struct kv sub = {key, raw, len};
    size_t blen = build(buf, sizeof(buf), kv, n, NULL, &sub, NULL);
    struct guard g;
    struct ing_msg m;
    const char *why = NULL;
    assert_int_equal(decode_guarded(&g, buf, blen, &m, &why), -EINVAL);
    assert_int_equal(m.type, type);
    struct ing_view id;
    memcpy(&id, (const char *)&m + job_off, sizeof(id));
    assert_view(id, job_id);
    assert_non_null(why);
    assert_non_null(strstr(why, key));
    guard_free(&g);
}

#define JOB_OFF(member) offsetof(struct ing_msg, member)

static void
test_zmq_msg_bad_values_new_job(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        const char *raw;
        size_t len;
    } bad[] = {
        {"priority", RAW("\xa4high")},
        {"priority", RAW("\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00")}, /* 1.5 */
        {"priority", RAW("\xcf\xff\xff\xff\xff\xff\xff\xff\xff")}, /* > INT64_MAX */
        {"priority", RAW("\xc0")},
        {"priority", RAW("\xc3")},
        {"course_id", RAW("\x05")},
        {"course_id", RAW("\xc4\x01"
                          "c")}, /* bin, not str */
        {"task_id", RAW("\xc3")},
        {"task_problems", RAW("\x90")},
        {"task_problems", RAW("\xa1x")},
        {"inputdata", RAW("\x03")},
        {"inputdata", RAW("\xc0")},
        {"inputdata", RAW("\x90")},
        {"environment_type", RAW("\xc0")},
        {"environment", RAW("\x01")},
        {"environment_parameters", RAW("\x90")},
        {"environment_parameters", RAW("\xc0")},
        {"debug", RAW("\xa3yes")},
        {"debug", RAW("\xa3SSH")},
        {"debug", RAW("\x01")},
        {"debug", RAW("\xc0")},
        {"launcher", RAW("\xc0")},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_einval(NEW_JOB, NKV(NEW_JOB), bad[i].key, bad[i].raw, bad[i].len, ING_CLIENT_NEW_JOB,
                      JOB_OFF(u.new_job.job.job_id), "J42");

    /* A job_id that is not a str cannot be answered: -EPROTO, even with another bad value. */
    const char *why;
    struct kv id_int = {"job_id", RAW("\x2a")};
    assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, &id_int, NULL, &why), -EPROTO);
    assert_string_equal(why, "job_id is not a str");
    uint8_t buf[1024];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_map(&w, 12);
    for (size_t i = 0; i < NKV(NEW_JOB); i++) {
        w_str(&w, NEW_JOB[i].key);
        if (strcmp(NEW_JOB[i].key, "job_id") == 0)
            ing_mp_put_nil(&w);
        else if (strcmp(NEW_JOB[i].key, "priority") == 0)
            w_str(&w, "high");
        else
            ing_mp_put_raw(&w, NEW_JOB[i].raw, NEW_JOB[i].len);
    }
    assert_int_equal(decode_rc(buf, w.len, &why), -EPROTO);

    /* Accepted shapes: nil ids and task_problems (main), debug true / "ssh", negative and
     * large priorities. */
    static const struct {
        const char *key;
        const char *raw;
        size_t len;
    } good[] = {
        {"course_id", RAW("\xc0")},
        {"task_id", RAW("\xc0")},
        {"task_problems", RAW("\xc0")},
        {"debug", RAW("\xc3")},
        {"debug", RAW("\xa3ssh")},
        {"priority", RAW("\xff")},
        {"priority", RAW("\xd3\x80\x00\x00\x00\x00\x00\x00\x00")},
        {"course_id", RAW("\xa0")},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct kv sub = {good[i].key, good[i].raw, good[i].len};
        assert_int_equal(decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, &sub, NULL, &why), 0);
    }
}

/* An agent's result is read as the Python backend relays it: loosely typed values are
 * coerced to the documented type (issue 14, bug 1). */
static void
test_zmq_msg_agent_result_loose(void **state)
{
    (void)state;
    uint8_t buf[1024];
    struct guard g;
    struct ing_msg m;
    const char *why;
    size_t n;
#define LOOSE(key_, raw_)                                                                          \
    do {                                                                                           \
        struct kv sub_ = {key_, RAW(raw_)};                                                        \
        n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, &sub_, NULL);                   \
        why = NULL;                                                                                \
        assert_int_equal(decode_guarded(&g, buf, n, &m, &why), 0);                                 \
        assert_int_equal(m.type, ING_AGENT_JOB_DONE);                                              \
        assert_view(m.u.result.job_id, "jd");                                                      \
    } while (0)
    LOOSE("state", "\xc0");
    assert_view(m.u.result.state, "");
    assert_non_null(why);
    guard_free(&g);
    LOOSE("state", "\xc4\x02st");
    assert_view(m.u.result.state, "st");
    guard_free(&g);
    LOOSE("stdout", "\xc4\x03"
                    "out");
    assert_view(m.u.result.stdout_, "out");
    assert_non_null(why);
    guard_free(&g);
    LOOSE("stderr", "\xc4\x02\xff\xfe"); /* not UTF-8: nil */
    assert_null(m.u.result.stderr_.p);
    guard_free(&g);
    LOOSE("stdout", "\x01");
    assert_null(m.u.result.stdout_.p);
    guard_free(&g);
    LOOSE("tests", "\xc0");
    assert_view(m.u.result.tests, "\x80");
    guard_free(&g);
    LOOSE("problems", "\xc0");
    assert_view(m.u.result.problems, "\x80");
    guard_free(&g);
    LOOSE("custom", "\xc0");
    assert_view(m.u.result.custom, "\x80");
    guard_free(&g);
    LOOSE("archive", "\xa3tgz");
    assert_view(m.u.result.archive, "tgz");
    guard_free(&g);
    LOOSE("grade", "\xc3");
    assert_true(m.u.result.grade == 1.0);
    guard_free(&g);
    LOOSE("grade", "\xc2");
    assert_true(m.u.result.grade == 0.0);
    guard_free(&g);
    LOOSE("grade", "\xa5 85.5");
    assert_true(m.u.result.grade == 85.5);
    guard_free(&g);
    LOOSE("result", "\x92\xa7success\xc0");
    assert_view(m.u.result.result_kind, "success");
    assert_view(m.u.result.result_text, "");
    guard_free(&g);
    LOOSE("result", "\x91\xa6"
                    "failed");
    assert_view(m.u.result.result_kind, "failed");
    assert_view(m.u.result.result_text, "");
    guard_free(&g);
    LOOSE("result", "\x93\xa1"
                    "a\xa1"
                    "b\xa1"
                    "c");
    assert_view(m.u.result.result_kind, "a");
    assert_view(m.u.result.result_text, "b");
    assert_non_null(why);
    guard_free(&g);
    /* The exact dialect still decodes with no note. */
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, NULL, NULL);
    why = "x";
    assert_int_equal(decode_guarded(&g, buf, n, &m, &why), 0);
    assert_null(why);
    guard_free(&g);
#undef LOOSE
    /* A BackendJobDone (what a client receives) stays strict: state nil is refused. */
    static const char bjd_nil_state[] = "\x8b\xa6job_id\xa1j\xa6result\x92\xa5"
                                        "crash\xa1x\xa5grade\xcb\x00\x00\x00\x00\x00\x00"
                                        "\x00\x00\xa8problems\x80\xa5tests\x80\xa6"
                                        "custom\x80\xa5state\xc0\xa7"
                                        "archive\xc0"
                                        "\xa6stdout\xc0\xa6stderr\xc0\xa5@type\xae"
                                        "BackendJobDone";
    assert_int_equal(decode_rc(bjd_nil_state, sizeof(bjd_nil_state) - 1, &why), -EINVAL);
    assert_string_equal(why, "state is not a str");
}

/* The release of an agent told from its hello (issue 14, bug 2), and the shapes encoded
 * for each (BackendKillJob without state for v0.7.x; integer grades). */
static void
test_zmq_msg_release_shapes(void **state)
{
    (void)state;
    uint8_t buf[512];
    struct zmq_agent_shape sh;
    /* main / v0.8.6+: created an integer (the Docker agent from v0.8.5), no ssh_allowed. */
    struct kv env_int = {"available_environments", RAW("\x81\xa6"
                                                       "docker\x81\xa7"
                                                       "default\x82\xa2id\xa1i\xa7"
                                                       "created\xce\x65\x53\xf1\x00")};
    size_t n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, &env_int, NULL);
    zmq_msg_agent_shape(buf, n, &sh);
    assert_int_equal(sh.release, ZMQ_AGENT_MAIN);
    /* v0.7.x: created a float (datetime.timestamp()). */
    struct kv env_float = {"available_environments",
                           RAW("\x81\xa6"
                               "docker\x82\xa1x\x81\xa7"
                               "created\x01\xa7"
                               "default\x82\xa2id\xa1i\xa7"
                               "created\xcb\x41\xd9\x54\xfc\x40\x10\x00\x00")};
    n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, &env_float, NULL);
    zmq_msg_agent_shape(buf, n, &sh);
    assert_int_equal(sh.release, ZMQ_AGENT_V07);
    /* v0.8.0 - v0.8.5: ssh_allowed, whatever created is. */
    struct kv ssh_t = {"ssh_allowed", RAW("\xc3")};
    n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, &env_float, &ssh_t);
    zmq_msg_agent_shape(buf, n, &sh);
    assert_int_equal(sh.release, ZMQ_AGENT_V08);
    assert_true(sh.ssh_allowed);
    struct kv ssh_f = {"ssh_allowed", RAW("\xc2")};
    n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, NULL, &ssh_f);
    zmq_msg_agent_shape(buf, n, &sh);
    assert_int_equal(sh.release, ZMQ_AGENT_V08);
    assert_false(sh.ssh_allowed);
    /* Not a map of maps: main. */
    struct kv env_odd = {"available_environments", RAW("\x81\xa6"
                                                       "docker\x91\x01")};
    n = build(buf, sizeof(buf), AGENT_HELLO, NKV(AGENT_HELLO), NULL, &env_odd, NULL);
    zmq_msg_agent_shape(buf, n, &sh);
    assert_int_equal(sh.release, ZMQ_AGENT_MAIN);

    /* BackendKillJob: with state, or (v0.7.x, v0.8.0) without. */
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_KILL_JOB;
    m.u.kill.job_id = (struct ing_view){"j1", 2};
    m.u.kill.state = (struct ing_view){"S", 1};
    struct ing_mp_writer w;
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(zmq_msg_encode_opt(&m, &w, ZMQ_JOB_FIELD_COURSE_ID, 0), 0);
    assert_int_equal(w.len, sizeof(BACKEND_KILL_JOB) - 1);
    assert_memory_equal(w.buf, BACKEND_KILL_JOB, w.len);
    w.len = 0;
    static const char bare[] = "\x82\xa6job_id\xa2j1\xa5@type\xae"
                               "BackendKillJob";
    assert_int_equal(zmq_msg_encode_opt(&m, &w, ZMQ_JOB_FIELD_COURSE_ID, ZMQ_ENC_KILL_NO_STATE), 0);
    assert_int_equal(w.len, sizeof(bare) - 1);
    assert_memory_equal(w.buf, bare, w.len);

    /* Integer grades: as an int when integral, else the float64. */
    struct guard g;
    struct ing_msg r;
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, NULL, NULL);
    assert_false(zmq_msg_grade_is_int(buf, n));
    struct kv g80 = {"grade", RAW("\x50")};
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, &g80, NULL);
    assert_true(zmq_msg_grade_is_int(buf, n));
    assert_int_equal(decode_guarded(&g, buf, n, &r, NULL), 0);
    r.type = ING_BACKEND_JOB_DONE;
    w.len = 0;
    assert_int_equal(zmq_msg_encode_opt(&r, &w, ZMQ_JOB_FIELD_COURSE_ID, ZMQ_ENC_GRADE_INT), 0);
    assert_non_null(memmem(w.buf, w.len, "\xa5grade\x50", 7));
    r.u.result.grade = 80.5;
    w.len = 0;
    assert_int_equal(zmq_msg_encode_opt(&r, &w, ZMQ_JOB_FIELD_COURSE_ID, ZMQ_ENC_GRADE_INT), 0);
    assert_non_null(memmem(w.buf, w.len, "\xa5grade\xcb", 7));
    guard_free(&g);
    ing_mp_writer_fini(&w);
}

/* The v0.5 - v0.6.2 dialect: read as main's messages, written in v0.6.2's shapes. */
static void
test_zmq_msg_legacy(void **state)
{
    (void)state;
    struct ing_mp_writer w;
    struct ing_msg m;
    const char *why;
    ing_mp_writer_init_dyn(&w);
    /* Not legacy: main's messages, and maps with both keys. */
    assert_int_equal(zmq_msg_legacy_to_main(VEC(PING), &w, &why), -ENOENT);
    static const char both[] = "\x82\xa5@type\xa4Ping\xa4type\xa4ping";
    assert_int_equal(zmq_msg_legacy_to_main(VEC(both), &w, &why), -ENOENT);
    static const char odd[] = "\x81\xa4type\xa3odd";
    assert_int_equal(zmq_msg_legacy_to_main(VEC(odd), &w, &why), -EPROTO);
    assert_string_equal(why, "unknown type");
    /* v0.5 client_new_job (no priority, no run_cmd) for the MCQ container. */
    static const char nj[] = "\x8c\xa6job_id\xa1j\xa9"
                             "course_id\xa1"
                             "c\xa7task_id\xa1t\xa9inputdata\x80\xab"
                             "environment\xa3mcq\xae"
                             "enable_network\xc3\xaatime_limit\x0a\xafhard_time_limit\xc0\xa9"
                             "mem_limit\x64\xa5"
                             "debug\xc2\xa8launcher\xa1L\xa4type\xae"
                             "client_new_job";
    assert_int_equal(zmq_msg_legacy_to_main(VEC(nj), &w, &why), 0);
    assert_int_equal(zmq_msg_decode(w.buf, w.len, &m, &why), 0);
    assert_int_equal(m.type, ING_CLIENT_NEW_JOB);
    assert_int_equal(m.u.new_job.priority, 0);
    assert_view(m.u.new_job.job.environment_type, "mcq");
    assert_view(m.u.new_job.job.environment, "mcq");
    assert_view(m.u.new_job.job.task_problems, "\x80");
    assert_view(m.u.new_job.job.environment_parameters,
                "\x82\xa6limits\x82\xa4time\x0a\xa6memory\x64\xaf"
                "network_grading\xc3");
    /* An agent's pair job id. */
    static const char st[] = "\x82\xa6job_id\x92\xc4\x01\x07\xa2j9\xa4type\xb1"
                             "agent_job_started";
    assert_int_equal(zmq_msg_legacy_to_main(VEC(st), &w, &why), 0);
    assert_int_equal(zmq_msg_decode(w.buf, w.len, &m, &why), 0);
    assert_int_equal(m.type, ING_AGENT_JOB_STARTED);
    assert_view(m.u.ref.job_id, "j9");
    /* Written: the kill vector of proto.md 11.2.1, ping. */
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_KILL_JOB;
    m.u.kill.job_id = (struct ing_view){"j2", 2};
    m.u.kill.state = (struct ing_view){"S", 1};
    w.len = 0;
    assert_int_equal(zmq_msg_legacy_encode(&m, &w), 0);
    static const char kill[] = "\x82\xa6job_id\x92\xc4\x00\xa2j2\xa4type\xb0"
                               "backend_kill_job";
    assert_int_equal(w.len, sizeof(kill) - 1);
    assert_memory_equal(w.buf, kill, w.len);
    m.type = ING_PING;
    w.len = 0;
    assert_int_equal(zmq_msg_legacy_encode(&m, &w), 0);
    assert_int_equal(w.len, 11);
    assert_memory_equal(w.buf, "\x81\xa4type\xa4ping", 11);
    m.type = ING_CLIENT_HELLO; /* no such message to send */
    w.len = 0;
    assert_int_equal(zmq_msg_legacy_encode(&m, &w), -EINVAL);
    /* v0.5's running end (start + limit) as a Python int packed by msgpack: uint64 past
     * 2^63, -1 past 2^64; a negative limit counts 0. */
    struct ing_queue_running run[3] = {
        {V("a"), false, V("A"), V("c/t"), V("L"), 10, INT64_MAX, false},
        {V("b"), false, V("A"), V("c/t"), V("L"), 10, -2 /* 2^64 - 2 */, true},
        {V("c"), false, V("A"), V("c/t"), V("L"), 10, -5, false},
    };
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_GET_QUEUE;
    m.u.queue.n_running = 3;
    m.u.queue.running = run;
    w.len = 0;
    assert_int_equal(zmq_msg_legacy_encode(&m, &w), 0);
    assert_non_null(memmem(w.buf, w.len, "\xa1L\x0a\xcf\x80\0\0\0\0\0\0\x09", 12));
    assert_non_null(memmem(w.buf, w.len, "\xa1L\x0a\xff", 4));
    assert_non_null(memmem(w.buf, w.len, "\xa1L\x0a\x0a", 4));
    ing_mp_writer_fini(&w);
}

static void
test_zmq_msg_bad_values_other(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        const char *raw;
        size_t len;
    } bad_done[] = {
        {"result", RAW("\x92\x01\x02")},
        {"result", RAW("\x90")},
        {"result", RAW("\xa7success")},
        {"result", RAW("\x92\xa1"
                       "a\x05")},
        {"grade", RAW("\xa2"
                      "1x")},
        {"grade", RAW("\xc0")},
        {"grade", RAW("\x90")},
        {"problems", RAW("\x90")},
        {"tests", RAW("\xa1x")},
        {"custom", RAW("\x01")},
        {"state", RAW("\x05")},
        {"archive", RAW("\x05")},
    };
    for (size_t i = 0; i < sizeof(bad_done) / sizeof(bad_done[0]); i++)
        expect_einval(JOB_DONE, NKV(JOB_DONE), bad_done[i].key, bad_done[i].raw, bad_done[i].len,
                      ING_AGENT_JOB_DONE, JOB_OFF(u.result.job_id), "jd");

    static const struct {
        const char *key;
        const char *raw;
        size_t len;
    } bad_ssh[] = {
        {"port", RAW("\xff")},                                 /* -1 */
        {"port", RAW("\xcf\x00\x00\x00\x01\x00\x00\x00\x00")}, /* 2^32 */
        {"port", RAW("\xa2"
                     "22")},
        {"port", RAW("\xcb\x40\x36\x00\x00\x00\x00\x00\x00")}, /* 22.0 */
        {"host", RAW("\x01")},
        {"user", RAW("\xc0")},
        {"password", RAW("\x90")},
    };
    for (size_t i = 0; i < sizeof(bad_ssh) / sizeof(bad_ssh[0]); i++)
        expect_einval(SSH_DEBUG, NKV(SSH_DEBUG), bad_ssh[i].key, bad_ssh[i].raw, bad_ssh[i].len,
                      ING_AGENT_JOB_SSH_DEBUG, JOB_OFF(u.ssh.job_id), "js");

    expect_einval(KILL_JOB, NKV(KILL_JOB), "state", RAW("\x01"), ING_BACKEND_KILL_JOB,
                  JOB_OFF(u.kill.job_id), "jk");

    /* Grades as ints and float32 are numbers. */
    const char *why;
    struct guard g;
    struct ing_msg m;
    uint8_t buf[1024];
    struct kv g_int = {"grade", RAW("\x64")};
    size_t n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, &g_int, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_true(m.u.result.grade == 100.0);
    guard_free(&g);
    struct kv g_f32 = {"grade", RAW("\xca\x3f\xc0\x00\x00")};
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, &g_f32, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_true(m.u.result.grade == 1.5);
    guard_free(&g);
    struct kv g_neg = {"grade", RAW("\xd0\x80")};
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, &g_neg, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_true(m.u.result.grade == -128.0);
    guard_free(&g);
    struct kv port_max = {"port", RAW("\xce\xff\xff\xff\xff")};
    n = build(buf, sizeof(buf), SSH_DEBUG, NKV(SSH_DEBUG), NULL, &port_max, NULL);
    assert_int_equal(decode_guarded(&g, buf, n, &m, NULL), 0);
    assert_int_equal(m.u.ssh.port, UINT32_MAX);
    guard_free(&g);

    /* Messages without a job id: a bad value is -EPROTO. */
    static const struct {
        const char *key;
        const char *raw;
        size_t len;
    } bad_hello[] = {
        {"available_job_slots", RAW("\xa1"
                                    "2")},
        {"available_job_slots", RAW("\xff")},
        {"available_job_slots", RAW("\xcf\x00\x00\x00\x01\x00\x00\x00\x00")},
        {"available_environments", RAW("\x90")},
        {"friendly_name", RAW("\xc0")},
    };
    for (size_t i = 0; i < sizeof(bad_hello) / sizeof(bad_hello[0]); i++) {
        struct kv sub = {bad_hello[i].key, bad_hello[i].raw, bad_hello[i].len};
        assert_int_equal(decode_kv(AGENT_HELLO, NKV(AGENT_HELLO), NULL, &sub, NULL, &why), -EPROTO);
        assert_non_null(strstr(why, bad_hello[i].key));
    }
    assert_int_equal(decode_rc(VEC("\x82\xa4name\x05\xa5@type\xab"
                                   "ClientHello"),
                               &why),
                     -EPROTO);
    assert_string_equal(why, "name is not a str");
    assert_int_equal(decode_rc(VEC("\x83\xacjobs_running\x91\x96\xa1j\xc3\xa1"
                                   "A\xa3"
                                   "c/t\xa1L"
                                   "\x05\xacjobs_waiting\x90\xa5@type\xaf"
                                   "BackendGetQueue"),
                               &why),
                     -EPROTO);
    assert_int_equal(decode_rc(VEC("\x83\xacjobs_running\x90\xacjobs_waiting\x91\x95\xa1j\x01"
                                   "\xa0\xa0\x05\xa5@type\xaf"
                                   "BackendGetQueue"),
                               &why),
                     -EPROTO);
    assert_int_equal(decode_rc(VEC("\x83\xacjobs_running\x80\xacjobs_waiting\x90"
                                   "\xa5@type\xaf"
                                   "BackendGetQueue"),
                               &why),
                     -EPROTO);
    assert_int_equal(decode_rc(VEC("\x82\xb6"
                                   "available_environments\x90\xa5@type\xb9"
                                   "BackendUpdateEnvironments"),
                               &why),
                     -EPROTO);
}

static void
test_zmq_msg_not_a_message(void **state)
{
    (void)state;
    static const struct {
        const char *raw;
        size_t len;
        const char *why;
    } cases[] = {
        {RAW("\x91\xa1x"), "not a msgpack map"},
        {RAW("\x01"), "not a msgpack map"},
        {RAW("\xa4Ping"), "not a msgpack map"},
        {RAW("\xc0"), "not a msgpack map"},
        {RAW("\x80"), "no @type"},
        {RAW("\x81\xa4name\xa2me"), "no @type"},
        {RAW("\x81\xa5@type\x01"), "@type is not a str"},
        {RAW("\x81\xa5@type\xc4\x04Ping"), "@type is not a str"},
        {RAW("\x81\xa5@type\xaa"
             "ClientHell"),
         "unknown @type"},
        {RAW("\x81\xa5@type\xa4ping"), "unknown @type"},
        {RAW("\x81\xa5@type\xa0"), "unknown @type"},
        {RAW("\x81\xa4type\xa4ping"), "no @type"}, /* the v0.5 envelope */
        {RAW("\x82\x01\xa1x\xa5@type\xa4Ping"), "a key is not a str"},
        {RAW("\x81\xc4\x05@type\xa4Ping"), "a key is not a str"},
        {RAW("\x82\xa5@type\xa4Ping\xa5@type\xa4Ping"), "repeated key @type"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = NULL;
        assert_int_equal(decode_rc(cases[i].raw, cases[i].len, &why), -EPROTO);
        assert_string_equal(why, cases[i].why);
    }
    /* Invalid msgpack: empty, 0xc1, trailing bytes, bad UTF-8 (in a value and in a key),
     * ext, too deep. */
    static const struct {
        const char *raw;
        size_t len;
    } invalid[] = {
        {RAW("")},
        {RAW("\xc1")},
        {RAW("\x81\xa5@type\xa4Ping\x00")},
        {RAW("\x81\xa5@type\xa4Ping\x81")},
        {RAW("\x82\xa4name\xa2\xc3\x28\xa5@type\xab"
             "ClientHello")},
        {RAW("\x82\xa4n\xedme\xa2me\xa5@type\xab"
             "ClientHello")},
        {RAW("\x82\xa4name\xd4\x01\x00\xa5@type\xab"
             "ClientHello")},
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        const char *why = NULL;
        assert_int_equal(decode_rc(invalid[i].raw, invalid[i].len, &why), -EPROTO);
        assert_non_null(why);
    }
    /* Nesting: fine at 10 levels of inputdata, refused at 100. */
    for (int depth = 10; depth <= 100; depth += 90) {
        static uint8_t deep[200];
        memset(deep, 0x91, (size_t)depth);
        deep[0] = 0x81;
        deep[1] = 0xa1;
        deep[2] = 'k';
        memset(deep + 3, 0x91, (size_t)depth);
        deep[3 + depth] = 0x80;
        struct kv sub = {"inputdata", (const char *)deep, (size_t)depth + 4};
        const char *why;
        int rc = decode_kv(NEW_JOB, NKV(NEW_JOB), NULL, &sub, NULL, &why);
        if (depth == 10)
            assert_int_equal(rc, 0);
        else
            assert_int_equal(rc, -EPROTO);
    }
    /* NULL why is allowed; n over 4 GiB is refused before any byte is read. */
    assert_int_equal(decode_rc(VEC("\x80"), NULL), -EPROTO);
    struct ing_msg m;
    const char *why;
    assert_int_equal(zmq_msg_decode((const uint8_t *)"\x80", (size_t)UINT32_MAX + 1, &m, &why),
                     -EMSGSIZE);
}

/* Every strict prefix of a valid message is refused, and so is any trailing byte. */
static void
check_truncations(const uint8_t *p, size_t n)
{
    assert_int_equal(decode_rc(p, n, NULL), 0);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(decode_rc(p, k, NULL), -EPROTO);
    uint8_t *q = malloc(n + 1);
    memcpy(q, p, n);
    q[n] = 0xc0;
    assert_int_equal(decode_rc(q, n + 1, NULL), -EPROTO);
    free(q);
}

static void
test_zmq_msg_truncated(void **state)
{
    (void)state;
    check_truncations(VEC(PING));
    check_truncations(VEC(UNKNOWN));
    check_truncations(VEC(CLIENT_HELLO));
    check_truncations(VEC(BACKEND_KILL_JOB));
    check_truncations(VEC(BACKEND_JOB_DONE));
    check_truncations(VEC(BACKEND_GET_QUEUE));
    uint8_t buf[1024];
    size_t n = build(buf, sizeof(buf), NEW_JOB, NKV(NEW_JOB), NULL, NULL, NULL);
    check_truncations(buf, n);
    n = build(buf, sizeof(buf), JOB_DONE, NKV(JOB_DONE), NULL, NULL, NULL);
    check_truncations(buf, n);
    /* A str32 length far past the end. */
    assert_int_equal(decode_rc(VEC("\x82\xa4name\xdb\xff\xff\xff\xf0me\xa5@type\xab"
                                   "ClientHello"),
                               NULL),
                     -EPROTO);
}

static void
test_zmq_msg_encode_errors(void **state)
{
    (void)state;
    uint8_t buf[512];
    struct ing_mp_writer w;
    static const uint8_t native[] = {ING_ERROR, ING_WELCOME, ING_AUTH, ING_AUTH_OK, 0x00, 0x99};
    for (size_t i = 0; i < sizeof(native); i++) {
        struct ing_msg m = {.type = native[i]};
        ing_mp_writer_init(&w, buf, sizeof(buf));
        assert_int_equal(zmq_msg_encode(&m, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
        assert_int_equal(w.len, 0);
    }

    /* A failed encode leaves what the writer held before. */
    struct ing_msg m = {.type = ING_CLIENT_HELLO};
    ing_mp_writer_init(&w, buf, sizeof(buf));
    ing_mp_put_nil(&w);
    assert_int_equal(zmq_msg_encode(&m, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    assert_int_equal(w.len, 1);
    assert_int_equal(w.err, 0);

    struct ing_msg j = {.type = ING_BACKEND_NEW_JOB};
    fill_spec(&j.u.job);
    j.u.job.debug = 3;
    assert_int_equal(zmq_msg_encode(&j, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    fill_spec(&j.u.job);
    j.u.job.inputdata = NIL;
    assert_int_equal(zmq_msg_encode(&j, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    j.u.job.inputdata = VB("", 0);
    assert_int_equal(zmq_msg_encode(&j, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    fill_spec(&j.u.job);
    j.u.job.job_id = NIL;
    assert_int_equal(zmq_msg_encode(&j, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    fill_spec(&j.u.job);
    j.u.job.environment_type = NIL;
    assert_int_equal(zmq_msg_encode(&j, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);

    struct ing_msg r = {.type = ING_BACKEND_JOB_DONE};
    r.u.result.job_id = V("j");
    r.u.result.result_kind = V("crash");
    r.u.result.result_text = NIL;
    r.u.result.problems = r.u.result.tests = r.u.result.custom = V("\x80");
    r.u.result.state = V("");
    assert_int_equal(zmq_msg_encode(&r, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    r.u.result.result_text = V("x");
    r.u.result.state = NIL;
    assert_int_equal(zmq_msg_encode(&r, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);

    struct ing_msg q = {.type = ING_BACKEND_GET_QUEUE};
    q.u.queue.n_running = 1;
    assert_int_equal(zmq_msg_encode(&q, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    q.u.queue.n_running = 0;
    q.u.queue.n_waiting = 2;
    assert_int_equal(zmq_msg_encode(&q, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    struct ing_queue_waiting wt = {NIL, false, NIL, V("L"), 0};
    q.u.queue.n_waiting = 1;
    q.u.queue.waiting = &wt;
    assert_int_equal(zmq_msg_encode(&q, &w, ZMQ_JOB_FIELD_COURSE_ID), -EINVAL);
    assert_int_equal(w.len, 1);

    /* A writer already in error returns its error. */
    ing_mp_writer_init(&w, buf, 0);
    ing_mp_put_nil(&w);
    struct ing_msg p = {.type = ING_PING};
    assert_int_equal(zmq_msg_encode(&p, &w, ZMQ_JOB_FIELD_COURSE_ID), -ENOMEM);
}

/* ---- the fast paths (issue 19) ----
 * The encoder writes in place when the writer has room (a large fixed writer) and through
 * the put functions otherwise (a dynamic writer starting empty): both must give the same
 * bytes. The decoder reads a message in INGInious' order in one pass and any other through
 * the general path: both must give the same values, and the fast one must refuse what the
 * general one refuses. */

static void
enc_both(const struct ing_msg *m, enum zmq_job_field jf, unsigned opts)
{
    static uint8_t big[300000];
    struct ing_mp_writer fw, dw;
    ing_mp_writer_init(&fw, big, sizeof(big));
    ing_mp_writer_init_dyn(&dw);
    int frc = zmq_msg_encode_opt(m, &fw, jf, opts);
    int drc = zmq_msg_encode_opt(m, &dw, jf, opts);
    assert_int_equal(frc, drc);
    if (frc == 0) {
        assert_int_equal(fw.len, dw.len);
        assert_memory_equal(fw.buf, dw.buf, fw.len);
    }
    if (frc == 0 && !(opts & ZMQ_ENC_KILL_NO_STATE)) { /* main's shape: it decodes back */
        struct ing_msg back;
        const char *why = NULL;
        assert_int_equal(decode_rc(fw.buf, fw.len, &why), 0);
        assert_int_equal(zmq_msg_decode(fw.buf, fw.len, &back, &why), 0);
        assert_int_equal(back.type, m->type);
    }
    ing_mp_writer_fini(&dw);
}

static void
test_zmq_msg_fast_paths(void **state)
{
    (void)state;
    static char longs[70000];
    memset(longs, 'y', sizeof(longs));
    uint8_t inp[70010];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, inp, sizeof(inp));
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "q");
    ing_mp_put_str(&w, longs, 66000);
    assert_int_equal(w.err, 0);
    static const uint32_t lens[] = {0, 5, 31, 32, 255, 256, 65535, 65536};
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        uint32_t L = lens[li];
        struct ing_msg m;
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_NEW_JOB;
        m.u.job.job_id = (struct ing_view){longs, L};
        m.u.job.course_id = (struct ing_view){li & 1 ? NULL : "c", li & 1 ? 0 : 1};
        m.u.job.task_id = (struct ing_view){"t", 1};
        m.u.job.task_problems = (struct ing_view){li & 2 ? NULL : "\x80", li & 2 ? 0 : 1};
        m.u.job.inputdata = (struct ing_view){(const char *)inp, (uint32_t)w.len};
        m.u.job.environment_type = (struct ing_view){"docker", 6};
        m.u.job.environment = (struct ing_view){"default", 7};
        m.u.job.environment_parameters = (struct ing_view){"\x80", 1};
        m.u.job.debug = (uint8_t)(li % 3);
        enc_both(&m, li & 4 ? ZMQ_JOB_FIELD_TASKSET_ID : ZMQ_JOB_FIELD_COURSE_ID, 0);
        m.u.job.debug = 7; /* refused by both */
        enc_both(&m, ZMQ_JOB_FIELD_COURSE_ID, 0);
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_JOB_DONE;
        struct ing_job_result *r = &m.u.result;
        r->job_id = (struct ing_view){"j1", 2};
        r->result_kind = (struct ing_view){"success", 7};
        r->result_text = (struct ing_view){longs, L};
        r->grade = li & 1 ? 42.0 : 42.5;
        r->problems = r->tests = r->custom = (struct ing_view){"\x80", 1};
        r->state = (struct ing_view){"", 0};
        r->archive = (struct ing_view){li & 2 ? NULL : longs, li & 2 ? 0 : L};
        r->stdout_ = (struct ing_view){li & 4 ? NULL : longs, li & 4 ? 0 : L};
        enc_both(&m, ZMQ_JOB_FIELD_COURSE_ID, 0);
        enc_both(&m, ZMQ_JOB_FIELD_COURSE_ID, ZMQ_ENC_GRADE_INT);
        r->state.p = NULL; /* a required str missing: refused by both */
        enc_both(&m, ZMQ_JOB_FIELD_COURSE_ID, 0);
    }
    struct ing_msg k;
    memset(&k, 0, sizeof(k));
    k.type = ING_BACKEND_KILL_JOB;
    k.u.kill.job_id = (struct ing_view){"j2", 2};
    k.u.kill.state = (struct ing_view){"S1", 2};
    enc_both(&k, ZMQ_JOB_FIELD_COURSE_ID, 0);
    enc_both(&k, ZMQ_JOB_FIELD_COURSE_ID, ZMQ_ENC_KILL_NO_STATE);
    k.type = ING_PING;
    enc_both(&k, ZMQ_JOB_FIELD_COURSE_ID, 0);

    /* The decoder: INGInious' order (fast) and the same pairs reversed (general). */
    static const char fwd[] =
        "\x84\xa6job_id\xa2j1\xa6result\x92\xa7success\xa2ok\xa5grade\xcb\x40\x59\0\0\0\0\0\0"
        "\xa5@type\xac" "AgentJobDone";
    struct ing_msg a, b;
    const char *why = NULL;
    /* Not all of AgentJobDone's keys: both refuse it the same way. */
    assert_int_equal(zmq_msg_decode((const uint8_t *)fwd, sizeof(fwd) - 1, &a, &why), -EINVAL);
    struct ing_mp_writer x, y;
    ing_mp_writer_init_dyn(&x);
    ing_mp_writer_init_dyn(&y);
    static const char *const keys[] = {"job_id", "result", "grade", "problems", "tests",
                                       "custom", "state", "archive", "stdout", "stderr"};
    for (int rev = 0; rev < 2; rev++) {
        struct ing_mp_writer *o = rev ? &y : &x;
        ing_mp_put_map(o, 11);
        if (rev) {
            ing_mp_put_cstr(o, "@type");
            ing_mp_put_cstr(o, "AgentJobDone");
        }
        for (int i = 0; i < 10; i++) {
            int f = rev ? 9 - i : i;
            ing_mp_put_cstr(o, keys[f]);
            switch (f) {
            case 0: ing_mp_put_cstr(o, "j1"); break;
            case 1: ing_mp_put_array(o, 2); ing_mp_put_cstr(o, "success"); ing_mp_put_cstr(o, "\xc3\xa9t\xc3\xa9"); break;
            case 2: ing_mp_put_double(o, 99.5); break;
            case 6: ing_mp_put_cstr(o, "st"); break;
            case 7: ing_mp_put_bin(o, "\xff\x00", 2); break;
            case 8: ing_mp_put_cstr(o, "out"); break;
            case 9: ing_mp_put_nil(o); break;
            default: ing_mp_put_map(o, 1); ing_mp_put_cstr(o, "k"); ing_mp_put_array(o, 0); break;
            }
        }
        if (!rev) {
            ing_mp_put_cstr(o, "@type");
            ing_mp_put_cstr(o, "AgentJobDone");
        }
        assert_int_equal(o->err, 0);
    }
    assert_int_equal(zmq_msg_decode(x.buf, x.len, &a, &why), 0);
    assert_null(why);
    assert_int_equal(zmq_msg_decode(y.buf, y.len, &b, &why), 0);
    assert_int_equal(a.type, ING_AGENT_JOB_DONE);
    assert_int_equal(b.type, ING_AGENT_JOB_DONE);
    const struct ing_view *va[] = {&a.u.result.job_id, &a.u.result.result_kind,
                                   &a.u.result.result_text, &a.u.result.problems,
                                   &a.u.result.tests, &a.u.result.custom, &a.u.result.state,
                                   &a.u.result.archive, &a.u.result.stdout_, &a.u.result.stderr_};
    const struct ing_view *vb[] = {&b.u.result.job_id, &b.u.result.result_kind,
                                   &b.u.result.result_text, &b.u.result.problems,
                                   &b.u.result.tests, &b.u.result.custom, &b.u.result.state,
                                   &b.u.result.archive, &b.u.result.stdout_, &b.u.result.stderr_};
    for (size_t i = 0; i < sizeof(va) / sizeof(va[0]); i++) {
        assert_int_equal(va[i]->len, vb[i]->len);
        assert_int_equal(va[i]->p == NULL, vb[i]->p == NULL);
        if (va[i]->len > 0)
            assert_memory_equal(va[i]->p, vb[i]->p, va[i]->len);
    }
    assert_true(a.u.result.grade == 99.5 && b.u.result.grade == 99.5);
    /* Bad UTF-8 in a str, in INGInious' order: refused as the general path refuses it. */
    uint8_t *bad = malloc(x.len);
    assert_non_null(bad);
    memcpy(bad, x.buf, x.len);
    uint8_t *s = memmem(bad, x.len, "\xc3\xa9t", 3);
    assert_non_null(s);
    s[1] = 0x28; /* c3 28: not UTF-8 */
    assert_int_equal(decode_rc(bad, x.len, &why), -EPROTO);
    /* A truncated message at every length: never accepted. */
    for (size_t n = 0; n < x.len; n++)
        assert_int_not_equal(decode_rc(x.buf, n, &why), 0);
    free(bad);
    ing_mp_writer_fini(&x);
    ing_mp_writer_fini(&y);
}

/* Every byte of a ClientNewJob and an AgentJobDone in INGInious' order (the fast path's
 * input: keys of 2 to 22 bytes, compared by words) changed in two ways: the fast decoder
 * (zmq_msg_decode_ex) accepts or refuses each copy exactly as the general one
 * (zmq_msg_decode_general) does, and reads nothing past the message (a guard page after it). */
static void
test_zmq_msg_fast_path_mutations(void **state)
{
    (void)state;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    struct ing_job_spec *j = &m.u.new_job.job;
    j->job_id = (struct ing_view){"job-1", 5};
    j->course_id = (struct ing_view){"c", 1};
    j->task_id = (struct ing_view){"t", 1};
    j->task_problems = (struct ing_view){"\x81\xa2q1\x80", 5};
    j->inputdata = (struct ing_view){"\x81\xa2q1\xa3\xc3\xa9x", 8};
    j->environment_type = (struct ing_view){"docker", 6};
    j->environment = (struct ing_view){"default", 7};
    j->environment_parameters = (struct ing_view){"\x81\xa5limit\x05", 8};
    m.u.new_job.priority = 3;
    m.u.new_job.launcher = (struct ing_view){"lg", 2};
    struct ing_msg r;
    memset(&r, 0, sizeof(r));
    r.type = ING_AGENT_JOB_DONE;
    r.u.result.job_id = (struct ing_view){"job-1", 5};
    r.u.result.result_kind = (struct ing_view){"success", 7};
    r.u.result.result_text = (struct ing_view){"ok", 2};
    r.u.result.grade = 100.0;
    r.u.result.problems = r.u.result.tests = r.u.result.custom = (struct ing_view){"\x80", 1};
    r.u.result.state = (struct ing_view){"", 0};
    r.u.result.stdout_ = (struct ing_view){"o", 1};
    const struct ing_msg *msgs[] = {&m, &r};
    int accepted = 0;
    for (size_t k = 0; k < 2; k++) {
        struct ing_mp_writer w;
        ing_mp_writer_init_dyn(&w);
        assert_int_equal(zmq_msg_encode(msgs[k], &w, ZMQ_JOB_FIELD_COURSE_ID), 0);
        static const uint8_t masks[] = {0x01, 0x20};
        for (size_t i = 0; i < w.len; i++) {
            for (size_t x = 0; x < sizeof(masks); x++) {
                struct guard g1, g2;
                struct ing_msg a, b;
                const char *wa = NULL, *wb = NULL;
                unsigned how;
                w.buf[i] ^= masks[x];
                guard_make(&g1, w.buf, w.len);
                guard_make(&g2, w.buf, w.len);
                struct zmq_msg_layout lay;
                int ra = zmq_msg_decode_ex(g1.p, w.len, &a, &wa, &how, &lay);
                int rb = zmq_msg_decode_general(g2.p, w.len, &b, &wb);
                if (ra != rb)
                    fail_msg("message %zu byte %zu ^ 0x%02x: fast %d, general %d", k, i,
                             masks[x], ra, rb);
                if (ra == 0) {
                    accepted++;
                    assert_int_equal(a.type, b.type);
                }
                if (ra == 0 && (how & ZMQ_DEC_FAST)) { /* the layout: each key where said */
                    assert_int_equal(lay.nfields, k == 0 ? 11 : 10);
                    for (int f = 1; f <= lay.nfields; f++)
                        assert_true(lay.key[f] > lay.key[f - 1] && lay.key[f] < w.len);
                    assert_memory_equal(g1.p + lay.key[lay.nfields], "\xa5@type", 6);
                    assert_memory_equal(g1.p + lay.key[0], "\xa6job_id", 7);
                }
                guard_free(&g1);
                guard_free(&g2);
                w.buf[i] ^= masks[x];
            }
        }
        ing_mp_writer_fini(&w);
    }
    assert_true(accepted > 0); /* some changes keep a valid message (a value's letter) */
    /* The unchanged ClientNewJob: fast, priority's key after job_id's value. */
    struct ing_mp_writer w;
    struct zmq_msg_layout lay;
    struct ing_msg a;
    const char *why = NULL;
    unsigned how = 0;
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(zmq_msg_encode(&m, &w, ZMQ_JOB_FIELD_TASKSET_ID), 0);
    assert_int_equal(zmq_msg_decode_ex(w.buf, w.len, &a, &why, &how, &lay), 0);
    assert_true(how & ZMQ_DEC_FAST);
    assert_memory_equal(w.buf + lay.key[1], "\xa8priority", 9);
    assert_memory_equal(w.buf + lay.key[2], "\xaataskset_id", 11);
    assert_memory_equal(w.buf + lay.key[10], "\xa8launcher", 9);
    ing_mp_writer_fini(&w);
    /* A key written as str8 (not INGInious' fixstr): the general path reads it. */
    static const char str8_key[] = "\x82\xd9\x06job_id\xa2j1\xa5@type\xaf" "AgentJobStarted";
    assert_int_equal(zmq_msg_decode_ex((const uint8_t *)str8_key, sizeof(str8_key) - 1, &a, &why,
                                       &how, &lay),
                     0);
    assert_int_equal(a.type, ING_AGENT_JOB_STARTED);
    assert_false(how & ZMQ_DEC_FAST);
    assert_int_equal(a.u.ref.job_id.len, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zmq_msg_vector_ping_unknown),
        cmocka_unit_test(test_zmq_msg_vector_client_hello),
        cmocka_unit_test(test_zmq_msg_vector_backend_kill_job),
        cmocka_unit_test(test_zmq_msg_vector_backend_job_done),
        cmocka_unit_test(test_zmq_msg_vector_backend_get_queue),
        cmocka_unit_test(test_zmq_msg_round_trip_client),
        cmocka_unit_test(test_zmq_msg_round_trip_backend),
        cmocka_unit_test(test_zmq_msg_round_trip_agent),
        cmocka_unit_test(test_zmq_msg_taskset_alias),
        cmocka_unit_test(test_zmq_msg_bases_decode),
        cmocka_unit_test(test_zmq_msg_missing_key),
        cmocka_unit_test(test_zmq_msg_extra_key),
        cmocka_unit_test(test_zmq_msg_ssh_allowed),
        cmocka_unit_test(test_zmq_msg_bad_values_new_job),
        cmocka_unit_test(test_zmq_msg_bad_values_other),
        cmocka_unit_test(test_zmq_msg_agent_result_loose),
        cmocka_unit_test(test_zmq_msg_release_shapes),
        cmocka_unit_test(test_zmq_msg_legacy),
        cmocka_unit_test(test_zmq_msg_not_a_message),
        cmocka_unit_test(test_zmq_msg_truncated),
        cmocka_unit_test(test_zmq_msg_encode_errors),
        cmocka_unit_test(test_zmq_msg_fast_paths),
        cmocka_unit_test(test_zmq_msg_fast_path_mutations),
    };
    return cmocka_run_group_tests_name("zmq_msg", tests, NULL, NULL);
}
