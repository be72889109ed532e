/* SPDX-License-Identifier: MIT */
/* test_client.c: the client library (include/inginious/client.h) against the real backend,
 * with agents built on the agent library (in this process, or forked: see libtest.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "inginious/json.h"
#include "inginious/mp.h"
#include "support/libtest.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

/* job fills a job for docker/default whose scripted behaviour is what ("do"). */
static struct ing_client_job
job(struct lt_world *w, const char *id, const char *what)
{
    struct ing_client_job j = {
        .job_id = id, .environment_type = "docker", .environment = "default", .launcher = "tester"};
    char input[256];

    snprintf(input, sizeof(input), "{\"do\": \"%s\", \"@state\": \"S-%s\"}", what, id);
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

static bool
view_is(struct ing_view v, const char *s)
{
    return v.p != NULL && ing_view_eq(v, s);
}

/* check_lost checks a result made by the library for a job lost with the connection. */
static void
check_lost(const struct lt_cev *e)
{
    const struct ing_job_result *r = &e->res.r;

    assert_true(e->lost);
    assert_true(e->res.lost);
    assert_true(e->pending);
    assert_true(view_is(r->result_kind, "crash"));
    assert_true(view_is(r->result_text, ING_CLIENT_LOST_TEXT));
    assert_true(r->grade == 0.0);
    assert_true(lt_mp_eq_json(r->problems.p, r->problems.len, "{}"));
    assert_true(lt_mp_eq_json(r->tests.p, r->tests.len, "{}"));
    assert_true(lt_mp_eq_json(r->custom.p, r->custom.len, "{}"));
    assert_true(view_is(r->state, ""));
    assert_null(r->archive.p);
    assert_true(view_is(r->stdout_, ""));
    assert_true(view_is(r->stderr_, ""));
}

/* check_ok checks the result of a scripted "success" job. */
static void
check_ok(const struct ing_client_result *res, const char *id)
{
    const struct ing_job_result *r = &res->r;

    assert_false(res->lost);
    assert_true(view_is(r->job_id, id));
    assert_true(view_is(r->result_kind, "success"));
    assert_true(view_is(r->result_text, LT_OK_TEXT));
    assert_true(r->grade == LT_OK_GRADE);
    assert_true(lt_mp_eq_json(r->problems.p, r->problems.len, "{\"q1\": [\"success\", \"ok\"]}"));
    assert_true(lt_mp_eq_json(r->tests.p, r->tests.len, "{\"t\": 1}"));
    assert_true(lt_mp_eq_json(r->custom.p, r->custom.len, "{\"c\": \"x\"}"));
    assert_true(view_is(r->state, LT_OK_STATE));
    assert_int_equal(r->archive.len, sizeof(LT_OK_ARCHIVE) - 1);
    assert_memory_equal(r->archive.p, LT_OK_ARCHIVE, r->archive.len);
    assert_true(view_is(r->stdout_, LT_OK_STDOUT));
    assert_true(view_is(r->stderr_, ""));
    /* copies are NUL-terminated */
    assert_string_equal(r->result_text.p, LT_OK_TEXT);
}

/* ------------------------------------------------------------------------------------------ */

/* The environment list: the hello's answer, then every change as agents come and go. */
static void
test_client_envs(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *ag;
    struct lt_cev *e;
    char got[256];

    lt_start(w, NULL, NULL, NULL);
    cl = lt_client_new(w, NULL);
    lt_envs_render(ing_client_envs(cl->c), got, sizeof(got));
    assert_string_equal(got, ""); /* no agent: the empty map */
    assert_true(ing_client_is_connected(cl->c));
    assert_true(strncmp(ing_client_server(cl->c), "inginious-backend", 17) == 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    ag = lt_agent_new(w, "a1", 1, false, "docker/python3", "docker/default", "mcq/mcq", NULL);
    lt_wait_envs(w, cl, "docker:[default,python3];mcq:[mcq]");
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_ENVS, NULL);
    assert_string_equal(e->envs, "docker:[default,python3];mcq:[mcq]");
    lt_agent_drop(w, ag);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_ENVS, NULL);
    assert_string_equal(e->envs, "");
    lt_pass(w);
}

/* Every field of a job reaches the agent unchanged; started, ssh and done come back with
 * every field, nil ones included. */
static void
test_client_submit_fields(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *ag;
    struct lt_aev *a;
    struct lt_cev *e;
    struct ing_client_job j1 = {
        .job_id = "job-all",
        .priority = -5,
        .launcher = "the launcher",
        .course_id = "LINFO1101",
        .task_id = "hello",
        .environment_type = "docker",
        .environment = "default",
        .debug = ING_DEBUG_ON,
    };
    struct ing_client_job j2 = {
        .job_id = "job-nil-\xc3\xa9",
        .environment_type = "docker",
        .environment = "default",
        .debug = ING_DEBUG_SSH,
    };
    struct ing_ssh_debug ssh = {.job_id = {"job-all", 7},
                                .host = {"10.0.0.5", 8},
                                .port = 2222,
                                .user = {"worker", 6},
                                .password = {"", 0}};
    struct ing_job_result r = {
        .job_id = {"job-all", 7},
        .result_kind = {"failed", 6},
        .result_text = {"1 test failed", 13},
        .grade = 50.5,
        .state = {"s2", 2},
        .archive = {"\x1f\x8b\0\x01", 4},
        .stdout_ = {"out", 3},
        .stderr_ = {"trace\n", 6},
    };

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_new(w, "a1", 2, false, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j1.task_problems = lt_mp(w, "{\"q1\": {\"type\": \"code\"}}");
    j1.inputdata = lt_mp(w, "{\"q1\": \"print(1)\", \"@state\": \"s1\"}");
    j1.environment_parameters = lt_mp(w, "{\"limits\": {\"time\": 30}}");
    j2.inputdata = lt_mp(w, "{\"q1\": \"caf\\u00e9\"}");
    submit_ok(cl, &j1);
    submit_ok(cl, &j2);
    assert_int_equal(ing_client_pending(cl->c), 2);
    assert_true(ing_client_is_pending(cl->c, "job-all"));

    a = lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "job-all");
    assert_false(a->job.course_nil);
    assert_string_equal(a->job.course, "LINFO1101");
    assert_false(a->job.task_nil);
    assert_string_equal(a->job.task, "hello");
    assert_string_equal(a->job.env_type, "docker");
    assert_string_equal(a->job.env, "default");
    assert_int_equal(a->job.debug, ING_DEBUG_ON);
    assert_int_equal(a->job.problems_len, j1.task_problems.len);
    assert_memory_equal(a->job.problems, j1.task_problems.p, j1.task_problems.len);
    assert_int_equal(a->job.input_len, j1.inputdata.len);
    assert_memory_equal(a->job.input, j1.inputdata.p, j1.inputdata.len);
    assert_int_equal(a->job.params_len, j1.environment_parameters.len);
    assert_memory_equal(a->job.params, j1.environment_parameters.p, j1.environment_parameters.len);

    a = lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "job-nil-\xc3\xa9");
    assert_true(a->job.course_nil);
    assert_true(a->job.task_nil);
    assert_int_equal(a->job.debug, ING_DEBUG_SSH);
    assert_true(lt_mp_eq_json(a->job.problems, a->job.problems_len, "{}"));
    assert_true(lt_mp_eq_json(a->job.params, a->job.params_len, "{}"));
    assert_int_equal(a->job.input_len, j2.inputdata.len);
    assert_memory_equal(a->job.input, j2.inputdata.p, j2.inputdata.len);

    /* started, ssh debug, done with every field */
    assert_int_equal(ing_agent_started(ag->a, (struct ing_view){"job-all", 7}), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "job-all");
    assert_true(e->pending);
    assert_int_equal(ing_agent_ssh_debug(ag->a, &ssh), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_SSH_DEBUG, "job-all");
    assert_string_equal(e->host, "10.0.0.5");
    assert_int_equal(e->port, 2222);
    assert_string_equal(e->user, "worker");
    assert_string_equal(e->password, "");
    r.problems = lt_mp(w, "{\"q1\": [\"failed\", \"expected 2\"]}");
    r.tests = lt_mp(w, "{\"t1\": true}");
    r.custom = lt_mp(w, "{\"n\": 1.5}");
    assert_int_equal(ing_agent_done(ag->a, &r), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "job-all");
    assert_true(e->pending);
    assert_false(e->lost);
    assert_true(view_is(e->res.r.result_kind, "failed"));
    assert_true(view_is(e->res.r.result_text, "1 test failed"));
    assert_true(e->res.r.grade == 50.5);
    assert_true(lt_mp_eq_json(e->res.r.problems.p, e->res.r.problems.len,
                              "{\"q1\": [\"failed\", \"expected 2\"]}"));
    assert_true(lt_mp_eq_json(e->res.r.tests.p, e->res.r.tests.len, "{\"t1\": true}"));
    assert_true(lt_mp_eq_json(e->res.r.custom.p, e->res.r.custom.len, "{\"n\": 1.5}"));
    assert_true(view_is(e->res.r.state, "s2"));
    assert_int_equal(e->res.r.archive.len, 4);
    assert_memory_equal(e->res.r.archive.p, "\x1f\x8b\0\x01", 4);
    assert_true(view_is(e->res.r.stdout_, "out"));
    assert_true(view_is(e->res.r.stderr_, "trace\n"));
    assert_false(ing_client_is_pending(cl->c, "job-all"));

    /* nil archive, stdout and stderr */
    memset(&r, 0, sizeof(r));
    r.job_id = (struct ing_view){"job-nil-\xc3\xa9", 10};
    r.result_kind = (struct ing_view){"success", 7};
    r.result_text = (struct ing_view){"", 0};
    r.problems = r.tests = r.custom = (struct ing_view){"\x80", 1};
    r.state = (struct ing_view){"", 0};
    assert_int_equal(ing_agent_done(ag->a, &r), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "job-nil-\xc3\xa9");
    assert_true(view_is(e->res.r.result_kind, "success"));
    assert_null(e->res.r.archive.p);
    assert_null(e->res.r.stdout_.p);
    assert_null(e->res.r.stderr_.p);
    assert_int_equal(ing_client_pending(cl->c), 0);
    lt_pass(w);
}

/* Kill a waiting job (the backend answers for it) and a running one (the agent does). */
static void
test_client_kill(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl, *other;
    struct lt_agent *ag;
    struct lt_cev *e;
    struct lt_aev *a;
    struct ing_client_job run, wait;

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_new(w, "a1", 1, true, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    other = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    run = job(w, "k-run", "hang");
    wait = job(w, "k-wait", "hang");
    submit_ok(cl, &run);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "k-run");
    submit_ok(cl, &wait); /* the only slot is busy: it waits */
    lt_barrier(w, cl);

    /* any client may kill: the owner gets the result */
    assert_int_equal(ing_client_kill(other->c, "k-wait"), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "k-wait");
    assert_false(e->lost);
    assert_true(view_is(e->res.r.result_kind, "killed"));
    assert_true(view_is(e->res.r.result_text, "You killed the job"));
    assert_true(view_is(e->res.r.state, "S-k-wait"));
    assert_null(lt_find_aev(ag, ING_AGENT_EV_JOB, "k-wait"));

    assert_int_equal(ing_client_kill(cl->c, "k-run"), 0);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_KILL, "k-run");
    assert_string_equal(a->state, "S-k-run");
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "k-run");
    assert_true(view_is(e->res.r.result_kind, "killed"));
    assert_true(view_is(e->res.r.state, "S-k-run"));
    assert_int_equal(ing_client_pending(cl->c), 0);

    /* an unknown id: no answer, no harm */
    assert_int_equal(ing_client_kill(cl->c, "nobody"), 0);
    lt_barrier(w, cl);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_DONE, NULL));
    assert_int_equal(ing_client_kill(cl->c, ""), -EINVAL);
    lt_pass(w);
}

/* Queue snapshots, non-blocking (event) and blocking, seen by the owner and by another. */
static void
test_client_queue(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl, *other;
    struct ing_client_job run, wait;
    struct ing_client_queue q;
    struct lt_cev *e;
    time_t now = time(NULL);

    lt_start(w, NULL, NULL, NULL);
    lt_agent_new(w, "agent-q", 1, true, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    other = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");

    assert_int_equal(ing_client_get_queue_wait(cl->c, LT_DEADLINE_MS, &q, NULL, NULL), 0);
    assert_int_equal(q.n_running, 0);
    assert_int_equal(q.n_waiting, 0);
    ing_client_queue_free(&q);

    run = job(w, "q-run", "hang");
    run.course_id = "LINFO1101";
    run.task_id = "hello";
    run.launcher = "L-run";
    run.environment_parameters = lt_mp(w, "{\"limits\": {\"time\": 30}}");
    wait = job(w, "q-wait", "hang");
    wait.priority = 3;
    submit_ok(cl, &run);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "q-run");
    submit_ok(cl, &wait);

    assert_int_equal(ing_client_get_queue(cl->c), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_QUEUE, NULL);
    assert_int_equal(e->queue.n_running, 1);
    assert_int_equal(e->queue.n_waiting, 1);
    assert_string_equal(e->queue.running[0].job_id.p, "q-run");
    assert_true(e->queue.running[0].is_current);
    assert_true(e->queue.running[0].running);
    assert_string_equal(e->queue.running[0].agent.p, "agent-q");
    assert_string_equal(e->queue.running[0].info.p, "LINFO1101/hello");
    assert_string_equal(e->queue.running[0].launcher.p, "L-run");
    assert_true(e->queue.running[0].started_at >= now - 1 &&
                e->queue.running[0].started_at <= time(NULL) + 1);
    assert_int_equal(e->queue.running[0].max_time, 30);
    assert_string_equal(e->queue.waiting[0].job_id.p, "q-wait");
    assert_true(e->queue.waiting[0].is_current);
    assert_false(e->queue.waiting[0].running);
    assert_string_equal(e->queue.waiting[0].info.p, "default");
    assert_string_equal(e->queue.waiting[0].launcher.p, "tester");
    assert_int_equal(e->queue.waiting[0].max_time, -1);

    /* the blocking form, from a client that did not submit them; other events go to fn */
    assert_int_equal(
        ing_client_get_queue_wait(other->c, LT_DEADLINE_MS, &q, lt_client_record, other), 0);
    assert_int_equal(q.n_running, 1);
    assert_int_equal(q.n_waiting, 1);
    assert_false(q.running[0].is_current);
    assert_false(q.waiting[0].is_current);
    assert_string_equal(q.waiting[0].job_id.p, "q-wait");
    assert_null(lt_find_cev(other, ING_CLIENT_EV_QUEUE, NULL)); /* the answer is not an event */
    ing_client_queue_free(&q);

    /* two requests in flight: two answers, in order */
    assert_int_equal(ing_client_get_queue(cl->c), 0);
    assert_int_equal(ing_client_get_queue(cl->c), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_QUEUE, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_QUEUE, NULL);
    lt_pass(w);
}

/* Ping: blocking with its round trip, and several in flight. */
static void
test_client_ping(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    double rtt = -1;

    lt_start(w, NULL, NULL, NULL);
    cl = lt_client_new(w, NULL);
    assert_int_equal(ing_client_ping_wait(cl->c, LT_DEADLINE_MS, &rtt, NULL, NULL), 0);
    assert_true(rtt >= 0 && rtt < LT_DEADLINE_MS);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ing_client_ping(cl->c), 0);
    for (int i = 0; i < 3; i++) {
        struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_PONG, NULL);
        assert_true(e->rtt_ms >= 0 && e->rtt_ms < LT_DEADLINE_MS);
    }
    lt_pass(w);
}

/* The same job id from two clients: the second is refused by the backend, the first goes
 * on; the same id twice from one client is refused locally. */
static void
test_client_duplicate_id(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *c1, *c2;
    struct ing_client_job j;
    struct lt_cev *e;

    lt_start(w, NULL, NULL, NULL);
    lt_agent_new(w, "a1", 1, true, "docker/default", NULL);
    c1 = lt_client_new(w, NULL);
    c2 = lt_client_new(w, NULL);
    lt_wait_envs(w, c1, "docker:[default]");
    j = job(w, "dup", "hang");
    submit_ok(c1, &j);
    lt_expect_cev(w, c1, ING_CLIENT_EV_STARTED, "dup");
    assert_int_equal(ing_client_submit(c1->c, &j), -EEXIST);
    submit_ok(c2, &j);
    e = lt_expect_cev(w, c2, ING_CLIENT_EV_DONE, "dup");
    assert_true(e->pending);
    assert_false(e->lost);
    assert_true(view_is(e->res.r.result_kind, "crash"));
    assert_true(view_is(e->res.r.result_text, "Duplicate job id"));
    assert_int_equal(ing_client_pending(c2->c), 0);
    lt_barrier(w, c1);
    assert_true(ing_client_is_pending(c1->c, "dup"));
    assert_null(lt_find_cev(c1, ING_CLIENT_EV_DONE, "dup"));
    assert_int_equal(ing_client_kill(c1->c, "dup"), 0);
    e = lt_expect_cev(w, c1, ING_CLIENT_EV_DONE, "dup");
    assert_true(view_is(e->res.r.result_kind, "killed"));
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Unknown: a proxy between the client and the backend swaps its upstream connection for a
 * fresh one, so the backend no longer knows the client (as after an INGInious backend
 * restart behind a ZeroMQ socket that reconnects by itself). */

struct proxy {
    pid_t pid;
    int ctl; /* write 'S' to swap the upstream */
    int ack; /* reads 'K' once swapped */
    char addr[LT_STR + 64];
};

static int
unix_connect(const char *path)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof(un)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool
write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k <= 0)
            return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

static bool
read_all(int fd, void *p, size_t n)
{
    char *c = p;

    while (n > 0) {
        ssize_t k = read(fd, c, n);
        if (k <= 0)
            return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* proxy_upstream opens a new upstream connection (preamble sent, Welcome swallowed). */
static int
proxy_upstream(const char *path, bool swallow)
{
    uint8_t pre[ING_PREAMBLE_LEN], hdr[ING_HDR_LEN], body[256];
    int fd = unix_connect(path);

    if (fd < 0)
        _exit(10);
    if (!swallow)
        return fd;
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    if (!write_all(fd, pre, sizeof(pre)) || !read_all(fd, hdr, sizeof(hdr)) ||
        hdr[4] != ING_WELCOME || hdr[0] | hdr[1] | hdr[2] || !read_all(fd, body, hdr[3]))
        _exit(11);
    return fd;
}

static void
proxy_run(const char *listen_path, const char *up_path, int ctl, int ack)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), cfd, ufd;
    char buf[65536];

    snprintf(un.sun_path, sizeof(un.sun_path), "%s", listen_path);
    if (bind(lfd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(lfd, 4) != 0)
        _exit(12);
    if (!write_all(ack, "L", 1))
        _exit(13);
    cfd = accept(lfd, NULL, NULL);
    if (cfd < 0)
        _exit(14);
    ufd = proxy_upstream(up_path, false);
    for (;;) {
        struct pollfd pf[3] = {{.fd = cfd, .events = POLLIN},
                               {.fd = ufd, .events = POLLIN},
                               {.fd = ctl, .events = POLLIN}};
        ssize_t n;
        poll(pf, 3, -1);
        if (pf[2].revents) {
            char cmd;
            if (read(ctl, &cmd, 1) != 1)
                _exit(0);
            close(ufd);
            ufd = proxy_upstream(up_path, true);
            if (!write_all(ack, "K", 1))
                _exit(15);
            continue;
        }
        if (pf[0].revents) {
            n = read(cfd, buf, sizeof(buf));
            if (n <= 0 || !write_all(ufd, buf, (size_t)n))
                _exit(0);
        }
        if (pf[1].revents) {
            n = read(ufd, buf, sizeof(buf));
            if (n <= 0 || !write_all(cfd, buf, (size_t)n))
                _exit(0);
        }
    }
}

static char
proxy_ack(struct proxy *p)
{
    struct pollfd pf = {.fd = p->ack, .events = POLLIN};
    char c = 0;

    if (poll(&pf, 1, LT_DEADLINE_MS) != 1 || read(p->ack, &c, 1) != 1)
        fail_msg("the proxy did not answer");
    return c;
}

static void
proxy_start(struct lt_world *w, struct proxy *p)
{
    int ctl[2], ack[2];
    char path[LT_STR + 32];

    assert_int_equal(pipe2(ctl, O_CLOEXEC), 0);
    assert_int_equal(pipe2(ack, O_CLOEXEC), 0);
    snprintf(path, sizeof(path), "%s/proxy.sock", w->dir);
    snprintf(p->addr, sizeof(p->addr), "ipc://%s", path);
    assert_true(strncmp(w->client_addr, "ipc://", 6) == 0);
    fflush(NULL);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        close(ctl[1]);
        close(ack[0]);
        proxy_run(path, w->client_addr + 6, ctl[0], ack[1]);
        _exit(0);
    }
    close(ctl[0]);
    close(ack[1]);
    p->ctl = ctl[1];
    p->ack = ack[0];
    w->forks[w->nforks++] = p->pid; /* killed by the teardown */
    assert_int_equal(proxy_ack(p), 'L');
}

/* old_server_run plays a backend that does not offer acknowledgements: it accepts one
 * client, welcomes it without the ACK flag, writes the type of the hello it gets to report,
 * answers the environments and then reads until the client leaves. */
static void
old_server_run(const char *path, int report)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), cfd;
    uint8_t pre[ING_PREAMBLE_LEN], hdr[ING_HDR_LEN], body[512], out[256];
    struct ing_msg m = {.type = ING_WELCOME};
    ssize_t n;

    size_t plen = strlen(path);
    if (plen >= sizeof(un.sun_path))
        _exit(11);
    memcpy(un.sun_path, path, plen + 1);
    if (bind(lfd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(lfd, 1) != 0 ||
        !write_all(report, "L", 1))
        _exit(12);
    cfd = accept(lfd, NULL, NULL);
    if (cfd < 0 || !read_all(cfd, pre, sizeof(pre)))
        _exit(14);
    m.u.welcome = (struct ing_welcome){.version = 1, .role = ING_ROLE_CLIENT,
                                       .max_frame = ING_MAX_FRAME_MIN, .heartbeat_ms = 1000,
                                       .server = {"old 0.9", 7}};
    n = ing_msg_encode(&m, out, sizeof(out));
    if (n <= 0 || !write_all(cfd, out, (size_t)n) || !read_all(cfd, hdr, sizeof(hdr)) ||
        get_u32be(hdr) > sizeof(body) || !read_all(cfd, body, get_u32be(hdr)) ||
        !write_all(report, &hdr[4], 1))
        _exit(15);
    m = (struct ing_msg){.type = ING_BACKEND_UPDATE_ENVIRONMENTS, .u.envs = {{"\x80", 1}}};
    n = ing_msg_encode(&m, out, sizeof(out));
    if (n <= 0 || !write_all(cfd, out, (size_t)n))
        _exit(16);
    while (read(cfd, body, sizeof(body)) > 0)
        ;
    _exit(0);
}

/* opts.acks against a backend without the Welcome's ACK flag: a plain ClientHello (type 15
 * would be an unknown type there), no acknowledgements. */
static void
test_client_acks_old_server(void **state)
{
    struct lt_world *w = *state;
    int rep[2];
    char path[LT_STR + 32], addr[LT_STR + 64], c = 0;

    assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
    snprintf(path, sizeof(path), "%s/old.sock", lt_dir(w));
    snprintf(addr, sizeof(addr), "ipc://%s", path);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(rep[0]);
        old_server_run(path, rep[1]);
    }
    close(rep[1]);
    w->forks[w->nforks++] = pid; /* killed by the teardown */
    struct pollfd pf = {.fd = rep[0], .events = POLLIN};
    assert_int_equal(poll(&pf, 1, LT_DEADLINE_MS), 1);
    assert_int_equal(read(rep[0], &c, 1), 1);
    assert_int_equal(c, 'L');
    struct ing_client_opts o = {.size = sizeof(o), .addr = addr, .acks = true};
    struct lt_client *cl = lt_client_new(w, &o);
    assert_int_equal(poll(&pf, 1, LT_DEADLINE_MS), 1);
    assert_int_equal(read(rep[0], &c, 1), 1);
    assert_int_equal((uint8_t)c, ING_CLIENT_HELLO);
    assert_false(ing_client_acks(cl->c));
    assert_string_equal(ing_client_server(cl->c), "old 0.9");
    close(rep[0]);
    lt_pass(w);
}

static void
test_client_unknown(void **state)
{
    struct lt_world *w = *state;
    struct ing_client_opts o = {0};
    struct lt_client *cl;
    struct ing_client_job hang, after;
    struct proxy px;
    struct lt_cev *e;
    size_t i_unknown, i_lost, i_envs;

    lt_start(w, "ipc", "ipc", NULL);
    lt_fork_agent(w, "forked", 2, "docker/default", NULL);
    proxy_start(w, &px);
    o.addr = px.addr;
    cl = lt_client_new(w, &o);
    lt_wait_envs(w, cl, "docker:[default]");
    hang = job(w, "u-hang", "hang");
    submit_ok(cl, &hang);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "u-hang");
    for (size_t i = 0; i < cl->nev; i++)
        cl->ev[i].used = true; /* only what follows counts */

    /* the backend forgets the client: the next frame it sends is answered Unknown */
    assert_true(write_all(px.ctl, "S", 1));
    assert_int_equal(proxy_ack(&px), 'K');
    assert_int_equal(ing_client_ping(cl->c), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_UNKNOWN, NULL);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "u-hang");
    check_lost(e);
    assert_int_equal(ing_client_pending(cl->c), 0);
    /* the hello was sent again: its answer is the environment list */
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_ENVS, NULL);
    assert_string_equal(e->envs, "docker:[default]");
    /* order: UNKNOWN, then the lost job, then the hello's answer */
    i_unknown = i_lost = i_envs = 0;
    for (size_t i = 0; i < cl->nev; i++) {
        if (cl->ev[i].type == ING_CLIENT_EV_UNKNOWN && i_unknown == 0)
            i_unknown = i;
        if (cl->ev[i].type == ING_CLIENT_EV_DONE)
            i_lost = i;
        if (cl->ev[i].type == ING_CLIENT_EV_ENVS)
            i_envs = i;
    }
    assert_true(i_unknown < i_lost && i_lost < i_envs);
    /* the ping answered by Unknown has no pong: a fresh one works */
    lt_barrier(w, cl);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_PONG, NULL));
    after = job(w, "u-after", "success");
    submit_ok(cl, &after);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "u-after");
    check_ok(&e->res, "u-after");
    lt_pass(w);
}

/* ------------------------------------------------------------------------------------------ */

struct seen {
    int started;
    int ssh;
    int done;
    char host[64];
    uint32_t port;
};

static void
count_events(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct seen *s = arg;

    (void)c;
    if (ev->type == ING_CLIENT_EV_STARTED) {
        s->started++;
    } else if (ev->type == ING_CLIENT_EV_SSH_DEBUG) {
        s->ssh++;
        lt_view_str(s->host, sizeof(s->host), ev->ssh->host);
        s->port = ev->ssh->port;
    } else if (ev->type == ING_CLIENT_EV_DONE) {
        s->done++;
    }
}

/* The blocking submit: results with every field, other events to the callback, timeout. */
static void
test_client_submit_wait(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct ing_client_result res;
    struct ing_client_job j;
    struct seen seen = {0};

    lt_start(w, NULL, NULL, NULL);
    lt_fork_agent(w, "forked", 2, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");

    j = job(w, "w-ok", "success");
    assert_int_equal(ing_client_submit_wait(cl->c, &j, LT_DEADLINE_MS, &res, count_events, &seen),
                     0);
    check_ok(&res, "w-ok");
    ing_client_result_free(&res);
    assert_int_equal(seen.started, 1);
    assert_int_equal(seen.done, 0); /* its DONE is the result, not an event */

    j = job(w, "w-fail", "fail");
    assert_int_equal(ing_client_submit_wait(cl->c, &j, LT_DEADLINE_MS, &res, NULL, NULL), 0);
    assert_true(view_is(res.r.result_kind, "failed"));
    assert_true(res.r.grade == 25.0);
    assert_null(res.r.archive.p);
    assert_null(res.r.stdout_.p);
    assert_true(view_is(res.r.stderr_, "trace\n"));
    ing_client_result_free(&res);

    j = job(w, "w-ssh", "ssh");
    j.debug = ING_DEBUG_SSH;
    assert_int_equal(ing_client_submit_wait(cl->c, &j, LT_DEADLINE_MS, &res, count_events, &seen),
                     0);
    assert_true(view_is(res.r.result_kind, "success"));
    assert_int_equal(seen.ssh, 1);
    assert_string_equal(seen.host, LT_SSH_HOST);
    assert_int_equal(seen.port, LT_SSH_PORT);
    ing_client_result_free(&res);

    /* a job that never ends: the wait times out, the job stays pending */
    j = job(w, "w-slow", "nostart");
    assert_int_equal(ing_client_submit_wait(cl->c, &j, 200, &res, NULL, NULL), -ETIMEDOUT);
    assert_null(res.mem);
    assert_true(ing_client_is_pending(cl->c, "w-slow"));
    assert_int_equal(ing_client_kill(cl->c, "w-slow"), 0);
    assert_int_equal(ing_client_wait_done(cl->c, "w-slow", LT_DEADLINE_MS, &res, NULL, NULL), 0);
    assert_true(view_is(res.r.result_kind, "killed"));
    assert_true(view_is(res.r.state, "S-w-slow"));
    ing_client_result_free(&res);
    assert_int_equal(ing_client_wait_done(cl->c, "w-slow", 0, &res, NULL, NULL), -ENOENT);
    lt_pass(w);
}

/* The backend killed mid-job: the connection loss is reported, then each pending job is
 * reported lost, in submission order; the blocking wait returns the lost result too. */
static void
test_client_lost_on_backend_kill(void **state)
{
    struct lt_world *w = *state;
    struct ing_client_opts o = {0};
    struct lt_client *cl;
    struct ing_client *c2; /* not spun by the world: used with the blocking wait */
    struct ing_client_job a, b, c;
    struct ing_client_result res;
    struct lt_cev *e;
    size_t first_done;
    double rtt;

    lt_start(w, NULL, NULL, NULL);
    lt_fork_agent(w, "forked", 1, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    o.addr = w->client_addr;
    c2 = ing_client_new(&o);
    assert_non_null(c2);
    assert_int_equal(ing_client_connect(c2), 0);
    lt_wait_envs(w, cl, "docker:[default]");
    a = job(w, "l-a", "hang");
    b = job(w, "l-b", "hang");
    c = job(w, "l-c", "hang");
    submit_ok(cl, &a);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "l-a");
    submit_ok(cl, &b); /* waiting */
    assert_int_equal(ing_client_submit(c2, &c), 0);
    lt_barrier(w, cl);
    assert_int_equal(ing_client_ping_wait(c2, LT_DEADLINE_MS, &rtt, NULL, NULL), 0);

    lt_kill_backend(w, SIGKILL);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    assert_int_not_equal(e->err, 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "l-a");
    check_lost(e);
    first_done = (size_t)(e - cl->ev);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "l-b");
    check_lost(e);
    assert_true((size_t)(e - cl->ev) == first_done + 1);
    assert_true(first_done > 0 && cl->ev[first_done - 1].type == ING_CLIENT_EV_DISCONNECTED);
    assert_int_equal(ing_client_pending(cl->c), 0);
    assert_false(ing_client_is_connected(cl->c));
    assert_int_equal(ing_client_fd(cl->c), -1);
    assert_int_equal(ing_client_submit(cl->c, &a), -ENOTCONN);
    assert_int_equal(ing_client_ping(cl->c), -ENOTCONN);
    assert_int_not_equal(ing_client_process(cl->c, NULL, NULL), 0);

    /* a blocking wait returns the lost result */
    assert_int_equal(ing_client_wait_done(c2, "l-c", LT_DEADLINE_MS, &res, NULL, NULL), 0);
    assert_true(res.lost);
    assert_true(view_is(res.r.result_kind, "crash"));
    assert_true(view_is(res.r.result_text, ING_CLIENT_LOST_TEXT));
    ing_client_result_free(&res);
    assert_int_not_equal(ing_client_ping_wait(c2, 100, &rtt, NULL, NULL), 0);
    ing_client_free(c2);
    lt_pass(w);
}

/* With opts.reconnect, a client comes back after a backend restart on the same unix socket
 * and says hello again; the jobs of the old connection were reported lost. */
static void
test_client_reconnect(void **state)
{
    struct lt_world *w = *state;
    struct ing_client_opts o = {.reconnect = true, .backoff_min_ms = 20, .backoff_max_ms = 200};
    struct lt_client *cl;
    struct ing_client_job a, b;
    struct lt_cev *e;
    int fd_before;

    lt_start(w, "ipc", "ipc", NULL);
    lt_fork_agent(w, "forked", 1, "docker/default", NULL);
    cl = lt_client_new(w, &o);
    lt_wait_envs(w, cl, "docker:[default]");
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    fd_before = ing_client_fd(cl->c);
    a = job(w, "r-a", "hang");
    submit_ok(cl, &a);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "r-a");

    lt_kill_backend(w, SIGKILL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    check_lost(lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "r-a"));
    assert_int_equal(ing_client_submit(cl->c, &a), -ENOTCONN);
    lt_spin(w, 100); /* a few failed attempts while the backend is away */
    assert_int_equal(ing_client_timeout_ms(cl->c) <= 200, 1);

    lt_restart(w);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    assert_true(ing_client_fd(cl->c) >= 0);
    (void)fd_before;
    lt_wait_envs(w, cl, "docker:[default]"); /* the forked agent is back too */
    b = job(w, "r-b", "success");
    submit_ok(cl, &b);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "r-b");
    check_ok(&e->res, "r-b");
    lt_pass(w);
}

/* The non-blocking API from a caller's own poll loop (no libtest spinning): one client and
 * one agent in the same loop, several jobs in flight. */
struct loop_state {
    int done;
    int started;
    int jobs;
};

static void
loop_client_cb(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct loop_state *s = arg;

    (void)c;
    if (ev->type == ING_CLIENT_EV_DONE && ev->pending && !ev->lost &&
        ing_view_eq(ev->result->result_kind, "success"))
        s->done++;
    if (ev->type == ING_CLIENT_EV_STARTED)
        s->started++;
}

static void
loop_agent_cb(struct ing_agent *a, const struct ing_agent_event *ev, void *arg)
{
    struct loop_state *s = arg;
    struct ing_job_result r;

    if (ev->type != ING_AGENT_EV_JOB)
        return;
    s->jobs++;
    ing_agent_started(a, ev->job_id);
    memset(&r, 0, sizeof(r));
    r.job_id = ev->job_id;
    r.result_kind = (struct ing_view){"success", 7};
    r.result_text = (struct ing_view){"", 0};
    r.problems = r.tests = r.custom = (struct ing_view){"\x80", 1};
    r.state = (struct ing_view){"", 0};
    ing_agent_done(a, &r);
}

static void
test_client_nonblocking_loop(void **state)
{
    struct lt_world *w = *state;
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_opts ao = {.name = "loop", .slots = 2, .envs = &env, .nenvs = 1};
    struct ing_client_opts co = {.name = "loop"};
    struct ing_agent *a;
    struct ing_client *c;
    struct loop_state cs = {0}, as = {0};
    uint64_t deadline;
    char id[ING_CLIENT_UUID_SIZE];
    int submitted = 0;

    lt_start(w, NULL, NULL, NULL);
    ao.addr = w->agent_addr;
    co.addr = w->client_addr;
    a = ing_agent_new(&ao);
    c = ing_client_new(&co);
    assert_non_null(a);
    assert_non_null(c);
    assert_int_equal(ing_agent_connect(a), 0);
    assert_int_equal(ing_client_connect(c), 0);
    deadline = lt_now_ms() + LT_DEADLINE_MS;
    while (cs.done < 5) {
        struct pollfd pf[2] = {
            {.fd = ing_client_fd(c),
             .events = (short)(POLLIN | (ing_client_want_write(c) ? POLLOUT : 0))},
            {.fd = ing_agent_fd(a),
             .events = (short)(POLLIN | (ing_agent_want_write(a) ? POLLOUT : 0))},
        };
        int t = ing_client_timeout_ms(c), at = ing_agent_timeout_ms(a);
        if (t < 0 || (at >= 0 && at < t))
            t = at;
        if (t < 0 || t > 100)
            t = 100;
        if (lt_now_ms() > deadline)
            fail_msg("the loop did not finish: %d done", cs.done);
        /* submit once the environment is known, all five at once */
        if (submitted == 0 && ing_client_envs(c).len > 1) {
            for (; submitted < 5; submitted++) {
                struct ing_client_job j = {
                    .job_id = id, .environment_type = "docker", .environment = "default"};
                assert_int_equal(ing_client_uuid4(id), 0);
                assert_int_equal(ing_client_submit(c, &j), 0);
            }
        }
        poll(pf, 2, t);
        assert_int_equal(ing_client_process(c, loop_client_cb, &cs), 0);
        assert_int_equal(ing_agent_process(a, loop_agent_cb, &as), 0);
    }
    assert_int_equal(cs.started, 5);
    assert_int_equal(as.jobs, 5);
    assert_int_equal(ing_client_pending(c), 0);
    ing_client_free(c);
    ing_agent_free(a);
    lt_pass(w);
}

/* Argument checks, local refusals, connection errors, helpers. */
static void
test_client_api_errors(void **state)
{
    struct lt_world *w = *state;
    struct ing_client_opts o = {.addr = "http://nowhere"};
    struct ing_client *c;
    struct lt_client *cl;
    struct ing_client_job j = {
        .job_id = "x", .environment_type = "docker", .environment = "default"};
    struct ing_client_result res;
    char id[ING_CLIENT_UUID_SIZE], id2[ING_CLIENT_UUID_SIZE], path[LT_STR + 32];
    char longid[300];

    assert_null(ing_client_new(&o));
    assert_int_equal(errno, EINVAL);
    o.addr = NULL;
    o.backoff_min_ms = -1;
    assert_null(ing_client_new(&o));
    ing_client_free(NULL);

    lt_start(w, NULL, NULL, NULL);
    /* nothing listens on that unix path */
    snprintf(path, sizeof(path), "ipc://%s/nobody.sock", w->dir);
    o = (struct ing_client_opts){.addr = path};
    cl = lt_client_add(w, &o);
    assert_int_equal(ing_client_connect(cl->c), -ENOENT);
    assert_int_equal(ing_client_submit(cl->c, &j), -ENOTCONN);
    assert_int_equal(ing_client_process(cl->c, NULL, NULL), -ENOENT);
    /* the agent endpoint refuses a client: Error ROLE */
    o = (struct ing_client_opts){.addr = w->agent_addr};
    cl = lt_client_add(w, &o);
    assert_int_equal(ing_client_connect(cl->c), -EPROTO);
    assert_non_null(strstr(ing_client_last_error(cl->c), "ROLE"));

    cl = lt_client_new(w, NULL);
    assert_int_equal(ing_client_connect(cl->c), -EISCONN);
    j.job_id = NULL;
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.job_id = "";
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    memset(longid, 'a', 256);
    longid[256] = '\0';
    j.job_id = longid;
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.job_id = "bad-utf8-\xff";
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.job_id = "x";
    j.environment = "";
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.environment = "default";
    j.debug = 3;
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.debug = ING_DEBUG_OFF;
    j.inputdata = (struct ing_view){"\x82\xa1"
                                    "a",
                                    3}; /* truncated map */
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.inputdata = (struct ing_view){"\x80\x80", 2}; /* two values */
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    j.inputdata = (struct ing_view){"", 0};
    assert_int_equal(ing_client_submit(cl->c, &j), -EINVAL);
    assert_int_equal(ing_client_pending(cl->c), 0);
    assert_int_equal(ing_client_wait_done(cl->c, "x", 0, &res, NULL, NULL), -ENOENT);

    /* a job the backend refuses by value comes back as a crash result */
    j.inputdata = lt_mp(w, "[1, 2]");
    submit_ok(cl, &j);
    assert_int_equal(ing_client_wait_done(cl->c, "x", LT_DEADLINE_MS, &res, NULL, NULL), 0);
    assert_true(view_is(res.r.result_kind, "crash"));
    assert_true(view_is(res.r.result_text, "Invalid inputdata: not a map"));
    ing_client_result_free(&res);
    ing_client_result_free(&res); /* twice is harmless */

    /* uuid4 */
    assert_int_equal(ing_client_uuid4(id), 0);
    assert_int_equal(ing_client_uuid4(id2), 0);
    assert_int_equal(strlen(id), 36);
    assert_string_not_equal(id, id2);
    assert_true(id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
    for (int i = 0; i < 36; i++)
        assert_non_null(strchr("0123456789abcdef-", id[i]));

    c = ing_client_new(&(struct ing_client_opts){.addr = w->client_addr});
    assert_int_equal(ing_client_fd(c), -1);
    assert_int_equal(ing_client_timeout_ms(c), -1);
    assert_null(ing_client_envs(c).p);
    assert_string_equal(ing_client_last_error(c), "");
    ing_client_free(c);
    lt_pass(w);
}

/* The msgpack (JSON) renderings used by inginious-ctl. */
static void
test_client_to_mp(void **state)
{
    struct lt_world *w = *state;
    struct ing_job_result r = {
        .job_id = {"j", 1},
        .result_kind = {"success", 7},
        .result_text = {"ok", 2},
        .grade = 99.5,
        .problems = {"\x80", 1},
        .tests = {"\x80", 1},
        .custom = {"\x81\xa1n\x01", 4},
        .state = {"s", 1},
        .archive = {"\x1f\x8b\x08\x00", 4},
        .stdout_ = {NULL, 0},
        .stderr_ = {"e", 1},
    };
    struct ing_mp_writer mw, jw;
    struct ing_client_queue_entry run = {.job_id = {"r", 1},
                                         .is_current = true,
                                         .running = true,
                                         .agent = {"a", 1},
                                         .info = {"c/t", 3},
                                         .launcher = {"l", 1},
                                         .started_at = 5,
                                         .max_time = 30};
    struct ing_client_queue q = {.n_running = 1, .running = &run};
    const char *want = "{\"job_id\":\"j\",\"kind\":\"success\",\"text\":\"ok\",\"grade\":99.5,"
                       "\"problems\":{},\"tests\":{},\"custom\":{\"n\":1},\"state\":\"s\","
                       "\"archive\":\"H4sIAA==\",\"stdout\":null,\"stderr\":\"e\",\"lost\":false}";

    (void)w;
    ing_mp_writer_init_dyn(&mw);
    ing_mp_writer_init_dyn(&jw);
    assert_int_equal(ing_client_result_to_mp(&r, false, true, &mw), 0);
    assert_int_equal(ing_mp_to_json(mw.buf, mw.len, &jw, 0), 0);
    assert_int_equal(jw.len, strlen(want));
    assert_memory_equal(jw.buf, want, jw.len);
    mw.len = jw.len = 0;
    assert_int_equal(ing_client_queue_to_mp(&q, &mw), 0);
    assert_int_equal(ing_mp_to_json(mw.buf, mw.len, &jw, 0), 0);
    want = "{\"running\":[{\"job_id\":\"r\",\"is_current_client_job\":true,"
           "\"agent_friendly_name\":\"a\",\"info\":\"c/t\",\"launcher\":\"l\",\"started_at\":5,"
           "\"max_time\":30}],\"waiting\":[]}";
    assert_int_equal(jw.len, strlen(want));
    assert_memory_equal(jw.buf, want, jw.len);
    ing_mp_writer_fini(&mw);
    ing_mp_writer_fini(&jw);
    lt_pass(w);
}

/* Authentication (proto.md §6): with the right secret the client and the agent open as
 * usual (blocking connect, and the non-blocking opening of a reconnecting client); a wrong
 * or missing secret is refused. */
static void
test_client_auth(void **state)
{
    struct lt_world *w = *state;
    const char *cpath = lt_write_file(w, "client.secret", "client-s3cret\n");
    const char *apath = lt_write_file(w, "agent.secret", "agent-s3cret\n");
    struct ing_agent_env env = {"docker", "default", "i1", 1, true};
    struct ing_agent_opts ao = {.name = "auth-agent", .slots = 1, .envs = &env, .nenvs = 1,
                                .secret = (const uint8_t *)"agent-s3cret", .secret_len = 12};
    struct ing_client_opts o = {.secret = (const uint8_t *)"client-s3cret", .secret_len = 13};
    struct lt_client *cl, *bad, *nb;
    struct lt_agent *ag;
    struct ing_client_job j;
    struct lt_cev *e;

    lt_start(w, NULL, NULL, "--client-secret-file", cpath, "--agent-secret-file", apath, NULL);
    cl = lt_client_new(w, &o);
    ag = lt_agent_add(w, &ao, true);
    assert_int_equal(ing_agent_connect(ag->a), 0);
    lt_wait_envs(w, cl, "docker:[default]");
    j = job(w, "a-1", "success");
    submit_ok(cl, &j);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "a-1");
    check_ok(&e->res, "a-1");

    /* the non-blocking opening: requests are refused until the authentication is over */
    o.reconnect = true;
    nb = lt_client_add(w, &o);
    assert_false(ing_client_is_connected(nb->c));
    assert_int_equal(ing_client_process(nb->c, lt_client_record, nb), 0);
    assert_int_equal(ing_client_ping(nb->c), -ENOTCONN);
    lt_expect_cev(w, nb, ING_CLIENT_EV_CONNECTED, NULL);
    assert_true(ing_client_is_connected(nb->c));
    e = lt_expect_cev(w, nb, ING_CLIENT_EV_ENVS, NULL);
    assert_string_equal(e->envs, "docker:[default]");

    /* a wrong secret, no secret */
    o = (struct ing_client_opts){.secret = (const uint8_t *)"guess", .secret_len = 5};
    bad = lt_client_add(w, &o);
    assert_int_equal(ing_client_connect(bad->c), -EPROTO);
    assert_non_null(strstr(ing_client_last_error(bad->c), "AUTH"));
    bad = lt_client_add(w, NULL);
    assert_int_equal(ing_client_connect(bad->c), -EPROTO);
    assert_non_null(strstr(ing_client_last_error(bad->c), "requires authentication"));
    ao.secret = (const uint8_t *)"client-s3cret"; /* the other endpoint's */
    ao.secret_len = 13;
    ag = lt_agent_add(w, &ao, false);
    assert_int_equal(ing_agent_connect(ag->a), -EPROTO);
    assert_non_null(strstr(ing_agent_last_error(ag->a), "AUTH"));
    ao.secret = NULL;
    ag = lt_agent_add(w, &ao, false);
    assert_int_equal(ing_agent_connect(ag->a), -EPROTO);
    assert_non_null(strstr(ing_agent_last_error(ag->a), "requires authentication"));

    /* a secret the backend does not ask for is harmless */
    lt_kill_backend(w, SIGTERM);
    lt_start(w, NULL, NULL, NULL);
    o = (struct ing_client_opts){.secret = (const uint8_t *)"unused", .secret_len = 6};
    cl = lt_client_new(w, &o);
    assert_int_equal(ing_client_ping_wait(cl->c, LT_DEADLINE_MS, NULL, NULL, NULL), 0);
    lt_pass(w);
}

/* The backend stops (SIGTERM, drain 200 ms): the pending job gets the backend's own crash
 * result (not a lost one), then Error SHUTDOWN, then the connection closes. */
static void
test_client_backend_shutdown(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct ing_client_job j;
    struct lt_cev *e;

    lt_start(w, NULL, NULL, NULL);
    lt_fork_agent(w, "forked", 1, "docker/default", NULL);
    cl = lt_client_new(w, NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    j = job(w, "sd-1", "hang");
    submit_ok(cl, &j);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "sd-1");
    kill(w->be_pid, SIGTERM);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "sd-1");
    assert_false(e->lost);
    assert_true(view_is(e->res.r.result_kind, "crash"));
    assert_true(view_is(e->res.r.result_text, "Backend shutting down"));
    assert_true(view_is(e->res.r.state, "S-sd-1"));
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_ERROR, NULL);
    assert_int_equal(e->code, ING_ERR_SHUTDOWN);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    assert_int_equal(ing_client_pending(cl->c), 0);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_DONE, NULL));
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_client_envs),
        CASE(test_client_submit_fields),
        CASE(test_client_kill),
        CASE(test_client_queue),
        CASE(test_client_ping),
        CASE(test_client_duplicate_id),
        CASE(test_client_unknown),
        CASE(test_client_acks_old_server),
        CASE(test_client_submit_wait),
        CASE(test_client_lost_on_backend_kill),
        CASE(test_client_reconnect),
        CASE(test_client_nonblocking_loop),
        CASE(test_client_api_errors),
        CASE(test_client_to_mp),
        CASE(test_client_auth),
        CASE(test_client_backend_shutdown),
    };

    return cmocka_run_group_tests_name("client", tests, NULL, NULL);
}
