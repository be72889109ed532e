/* SPDX-License-Identifier: MIT */
/* test_durable.c: inginious-backend --journal against the real binary (issue 16, step 2):
 * waiting jobs survive kill -9 in their order and priority, ended jobs do not come back, a
 * second backend on the same journal refuses to start, corruption before the tail stops the
 * start until --journal-repair; the library's sessions (proto.md 7.9) see each job end once
 * across kill -9, connection losses and restarts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inginious/agent.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "support/libtest.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

static char jdir[LT_STR + 16];

static const char *
journal_dir(struct lt_world *w)
{
    snprintf(jdir, sizeof(jdir), "%s/journal", lt_dir(w));
    return jdir;
}

static void
submit_in(struct lt_world *w, struct lt_client *cl, const char *id, int64_t prio,
          const char *input)
{
    struct ing_client_job j = {.job_id = id,
                               .environment_type = "docker",
                               .environment = "default",
                               .launcher = "tester",
                               .priority = prio};
    j.inputdata = lt_mp(w, input);
    int rc = ing_client_submit(cl->c, &j);
    if (rc != 0)
        fail_msg("submit %s: %s", id, ing_strerror(rc));
}

static void
submit(struct lt_world *w, struct lt_client *cl, const char *id, int64_t prio)
{
    submit_in(w, cl, id, prio, "{\"do\": \"success\"}");
}

/* job_index returns the position of job id among the jobs agent ag received, or -1. */
static int
job_index(struct lt_agent *ag, const char *id)
{
    int k = 0;
    for (size_t i = 0; i < ag->nev; i++)
        if (ag->ev[i].type == ING_AGENT_EV_JOB) {
            if (strcmp(ag->ev[i].job_id, id) == 0)
                return k;
            k++;
        }
    return -1;
}

/* populate starts the backend on a fresh journal with no agent and queues d1 (priority 1),
 * d2, d3 (priority 0) and dk, which it kills: the journal holds three waiting jobs. */
static void
populate(struct lt_world *w, struct lt_client **out)
{
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), "--orphan-timeout", "0", NULL);
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    submit(w, cl, "d1", 1);
    submit(w, cl, "d2", 0);
    submit(w, cl, "dk", 0);
    submit(w, cl, "d3", 0);
    assert_int_equal(ing_client_kill(cl->c, "dk"), 0);
    struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "dk");
    assert_true(ing_view_eq(e->res.r.result_kind, "killed"));
    /* the pong leaves after the records of every frame before the ping are written */
    lt_barrier(w, cl);
    *out = cl;
}

/* kill -9, then a restart on the same journal: d2, d3, d1 run in that order; dk does not. */
static void
test_durable_waiting_jobs_survive_kill9(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    populate(w, &cl);
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    if (!lt_log_contains(w, "3 waiting jobs restored"))
        fail_msg("the log does not say that 3 jobs were restored");
    struct lt_agent *ag = lt_agent_new(w, "A", 1, 1, "docker/default", NULL);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "d1"); /* the last of the three */
    assert_int_equal(job_index(ag, "d2"), 0);
    assert_int_equal(job_index(ag, "d3"), 1);
    assert_int_equal(job_index(ag, "d1"), 2);
    assert_int_equal(job_index(ag, "dk"), -1);
    /* ... and once done they are forgotten: a second restart restores nothing */
    struct lt_client *c2 = lt_client_new(w, NULL);
    lt_expect_cev(w, c2, ING_CLIENT_EV_CONNECTED, NULL);
    lt_barrier(w, c2);
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    if (!lt_log_contains(w, "0 waiting jobs restored"))
        fail_msg("the log does not say that no job was restored");
    (void)cl;
    lt_pass(w);
}

/* A second backend on a journal in use refuses to start, naming the directory. */
static void
test_durable_second_backend_refused(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), NULL);
    char bin[LT_STR + 32];
    snprintf(bin, sizeof(bin), "%s/inginious-backend", lt_build());
    char *argv[] = {bin, "--journal", jdir, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", NULL};
    lt_run(w, argv, NULL);
    int rc = lt_proc_wait(w);
    assert_int_not_equal(rc, 0);
    if (strstr(w->proc->err, "in use by another process") == NULL ||
        strstr(w->proc->err, jdir) == NULL)
        fail_msg("stderr: %s", w->proc->err);
    lt_pass(w);
}

/* Corruption before the tail stops the start with the file and offset; --journal-repair
 * starts with what precedes it and keeps the rest in a .corrupt file. */
static void
test_durable_corruption_and_repair(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    populate(w, &cl);
    lt_kill_backend(w, SIGKILL);
    char seg[LT_STR + 64];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", jdir);
    int fd = open(seg, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, 32 + 12 + 20), 1); /* inside d1's record */
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, 32 + 12 + 20), 1);
    close(fd);
    char bin[LT_STR + 32];
    snprintf(bin, sizeof(bin), "%s/inginious-backend", lt_build());
    char *argv[] = {bin, "--journal", jdir, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", NULL};
    lt_run(w, argv, NULL);
    assert_int_not_equal(lt_proc_wait(w), 0);
    if (strstr(w->proc->err, "corrupt record in 0000000000000001.seg at offset 32") == NULL ||
        strstr(w->proc->err, "--journal-repair") == NULL)
        fail_msg("stderr: %s", w->proc->err);
    lt_start(w, NULL, NULL, "--journal", jdir, "--journal-repair", NULL);
    if (!lt_log_contains(w, "0 waiting jobs restored"))
        fail_msg("the repaired journal should hold nothing before the damaged record");
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg.corrupt", jdir);
    assert_int_equal(access(seg, F_OK), 0);
    (void)cl;
    lt_pass(w);
}

/* restart_expect kills the backend (SIGKILL), starts it again on its journal and checks
 * that it restored n waiting jobs. */
static void
restart_expect(struct lt_world *w, int n)
{
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    char want[64];
    snprintf(want, sizeof(want), "%d waiting jobs restored", n);
    if (!lt_log_contains(w, want))
        fail_msg("the log does not say '%s'", want);
}

/* start_fsize starts the backend on the test's journal (options opts, NULL-ended, after
 * --journal DIR --orphan-timeout 0) under a 64 KiB file-size limit (RLIMIT_FSIZE: some 30
 * jobs of 2 KiB; the log stays below), and puts the test's own limit back; *old gets it. */
static void
start_fsize(struct lt_world *w, struct rlimit *old, const char *o1, const char *o2,
            const char *o3, const char *o4)
{
    struct rlimit lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, old), 0);
    lim = *old;
    lim.rlim_cur = 64 * 1024;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), "--orphan-timeout", "0", o1, o2, o3, o4,
             NULL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, old), 0);
}

/* A disk that fails (here a file-size limit: EFBIG): new jobs end crash "Journal
 * unavailable: ...", the failure is logged once, nothing accepted is lost, and acceptance
 * resumes by itself once writes work again (the limit lifted with prlimit). */
static void
test_durable_disk_full(void **state)
{
    struct lt_world *w = *state;
    struct rlimit old;
    start_fsize(w, &old, NULL, NULL, NULL, NULL);
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    static char input[2200];
    snprintf(input, sizeof(input), "{\"pad\": \"%02000d\"}", 0);
    int accepted = 0, refused = 0;
    char id[32];
    for (int i = 0; i < 200 && refused == 0; i++) { /* one by one: each in its iteration */
        snprintf(id, sizeof(id), "f%d", i);
        submit_in(w, cl, id, 0, input);
        lt_barrier(w, cl);
        struct lt_cev *e = lt_find_cev(cl, ING_CLIENT_EV_DONE, id);
        if (e == NULL) {
            accepted++;
            continue;
        }
        e->used = true;
        char text[LT_STR];
        lt_view_str(text, sizeof(text), e->res.r.result_text);
        if (strncmp(text, "Journal unavailable: ", 21) != 0 || strstr(text, "too large") == NULL)
            fail_msg("job %s: %s", id, text);
        refused++;
    }
    assert_int_equal(refused, 1);
    assert_true(accepted > 5 && accepted < 60);
    /* more refusals, one log line */
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        submit_in(w, cl, id, 0, input);
        lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, id);
    }
    struct rlimit big = old;
    assert_int_equal(prlimit(w->be_pid, RLIMIT_FSIZE, &big, NULL), 0);
    /* the backend tries again within JOURNAL_RETRY_MS: submit until one is taken */
    int after = 0;
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    while (after == 0 && lt_now_ms() < end) {
        static int k;
        snprintf(id, sizeof(id), "h%d", k++);
        submit_in(w, cl, id, 0, input);
        lt_barrier(w, cl);
        struct lt_cev *e = lt_find_cev(cl, ING_CLIENT_EV_DONE, id);
        if (e == NULL)
            after = 1;
        else
            e->used = true;
        lt_spin(w, 20);
    }
    assert_int_equal(after, 1);
    lt_barrier(w, cl);
    restart_expect(w, accepted + after);
    if (!lt_log_contains(w, "journal: write failed: File too large") ||
        !lt_log_contains(w, "journal: writes work again"))
        fail_msg("the journal's state changes are not logged");
    lt_pass(w);
}

/* A job larger than a journal record may be (here a 4K segment) is refused with a text
 * that says so; smaller ones are taken. */
static void
test_durable_job_too_large(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), "--journal-segment-size", "4K",
             "--orphan-timeout", "0", NULL);
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    static char input[5200];
    snprintf(input, sizeof(input), "{\"pad\": \"%05000d\"}", 0);
    submit_in(w, cl, "big", 0, input);
    submit(w, cl, "small", 0);
    struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "big");
    char text[LT_STR];
    lt_view_str(text, sizeof(text), e->res.r.result_text);
    assert_string_equal(text, "Journal unavailable: job too large for a journal record");
    lt_barrier(w, cl);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_DONE, "small"));
    lt_pass(w);
}

/* A journal holding more jobs than --max-waiting: the first ones come back, the rest are
 * counted in one warning (not one line per job). */
static void
test_durable_restore_over_limit(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    populate(w, &cl);
    lt_kill_backend(w, SIGKILL);
    lt_start(w, NULL, NULL, "--journal", jdir, "--max-waiting", "2", NULL);
    if (!lt_log_contains(w, "2 waiting jobs restored") ||
        !lt_log_contains(w, "not restored: Queue full (later ones counted)") ||
        !lt_log_contains(w, "jobs could not be restored")) /* d3, and dk, killed later */
        fail_msg("the restore over the limit is not logged as expected");
    (void)cl;
    lt_pass(w);
}

/* cev_index returns the position of cl's first event of type about job id, or -1. */
static long
cev_index(struct lt_client *cl, enum ing_client_event_type type, const char *id)
{
    for (size_t i = 0; i < cl->nev; i++)
        if (cl->ev[i].type == type && strcmp(cl->ev[i].job_id, id) == 0)
            return (long)i;
    return -1;
}

/* Acknowledged submissions (proto.md 7.8) under --fsync always: a client with opts.acks
 * hears BackendJobAccepted for a job it owns, never for a refused one (Duplicate job id); a
 * client without it hears none; an acknowledged job survives kill -9. */
static void
test_durable_acks_survive_kill9(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), "--fsync", "always", "--orphan-timeout",
             "0", NULL);
    struct ing_client_opts o = {.size = sizeof(o), .name = "acker", .acks = true};
    struct lt_client *ca = lt_client_new(w, &o);
    struct lt_client *cp = lt_client_new(w, NULL);
    lt_expect_cev(w, ca, ING_CLIENT_EV_CONNECTED, NULL);
    lt_expect_cev(w, cp, ING_CLIENT_EV_CONNECTED, NULL);
    submit(w, cp, "b1", 0);
    lt_barrier(w, cp);
    submit(w, ca, "a1", 0);
    submit(w, ca, "b1", 0); /* b1 is cp's: refused */
    struct lt_cev *e = lt_expect_cev(w, ca, ING_CLIENT_EV_ACCEPTED, "a1");
    assert_true(e->pending);
    e = lt_expect_cev(w, ca, ING_CLIENT_EV_DONE, "b1");
    assert_true(ing_view_eq(e->res.r.result_kind, "crash"));
    assert_true(ing_view_eq(e->res.r.result_text, "Duplicate job id"));
    lt_barrier(w, ca);
    lt_barrier(w, cp);
    assert_int_equal(cev_index(ca, ING_CLIENT_EV_ACCEPTED, "b1"), -1);
    assert_null(lt_find_cev(cp, ING_CLIENT_EV_ACCEPTED, NULL));
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    if (!lt_log_contains(w, "2 waiting jobs restored"))
        fail_msg("the log does not say that 2 jobs were restored");
    struct lt_agent *ag = lt_agent_new(w, "A", 2, 1, "docker/default", NULL);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "a1");
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "b1");
    lt_pass(w);
}

/* Without a journal too: the acknowledgement comes before the job's other messages; the
 * library reports the job accepted once, then started and done as before. */
static void
test_durable_acks_order_no_journal(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, NULL);
    struct lt_agent *ag = lt_agent_new(w, "A", 1, 1, "docker/default", NULL);
    (void)ag;
    struct ing_client_opts o = {.size = sizeof(o), .name = "acker", .acks = true};
    struct lt_client *ca = lt_client_new(w, &o);
    lt_expect_cev(w, ca, ING_CLIENT_EV_CONNECTED, NULL);
    submit(w, ca, "c1", 0);
    submit(w, ca, "c2", 0);
    lt_expect_cev(w, ca, ING_CLIENT_EV_DONE, "c2");
    lt_expect_cev(w, ca, ING_CLIENT_EV_DONE, "c1");
    const char *ids[] = {"c1", "c2"};
    for (int i = 0; i < 2; i++) {
        long acc = cev_index(ca, ING_CLIENT_EV_ACCEPTED, ids[i]);
        assert_true(acc >= 0);
        assert_true(acc < cev_index(ca, ING_CLIENT_EV_STARTED, ids[i]));
        assert_true(acc < cev_index(ca, ING_CLIENT_EV_DONE, ids[i]));
        assert_true(ca->ev[acc].pending);
        ca->ev[acc].used = true;
        assert_null(lt_find_cev(ca, ING_CLIENT_EV_ACCEPTED, ids[i])); /* once */
    }
    lt_pass(w);
}

/* count_cev counts cl's events of type for job id (NULL: any), used or not. */
static int
count_cev(const struct lt_client *cl, enum ing_client_event_type type, const char *id)
{
    int n = 0;
    for (size_t i = 0; i < cl->nev; i++)
        n += cl->ev[i].type == type && (id == NULL || strcmp(cl->ev[i].job_id, id) == 0);
    return n;
}

static bool
none_pending(struct lt_world *w, void *arg)
{
    (void)w;
    return ing_client_pending(((struct lt_client *)arg)->c) == 0;
}

/* session_client connects a client with a session that reconnects by itself, and waits for
 * its first session list. */
static struct lt_client *
session_client(struct lt_world *w)
{
    struct ing_client_opts o = {.size = sizeof(o),
                                .name = "sess",
                                .reconnect = true,
                                .backoff_min_ms = 10,
                                .backoff_max_ms = 100,
                                .session = true};
    struct lt_client *cl = lt_client_new(w, &o);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    uint8_t id[ING_SESSION_ID_LEN], zero[ING_SESSION_ID_LEN] = {0};
    assert_int_equal(ing_client_session_id(cl->c, id), 0);
    assert_memory_not_equal(id, zero, sizeof(id)); /* random */
    assert_true(ing_client_resumed(cl->c));
    return cl;
}

/* check_each_once: jobs <prefix>0 .. <prefix>n-1 ended exactly once each, none lost, and the
 * agent received each exactly once. */
static void
check_each_once(struct lt_client *cl, struct lt_agent *ag, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%d", prefix, i);
        if (count_cev(cl, ING_CLIENT_EV_DONE, id) != 1)
            fail_msg("job %s ended %d times", id, count_cev(cl, ING_CLIENT_EV_DONE, id));
        struct lt_cev *e = lt_find_cev(cl, ING_CLIENT_EV_DONE, id);
        if (e != NULL && (e->lost || !ing_view_eq(e->res.r.result_kind, "success")))
            fail_msg("job %s: lost %d, kind %.*s", id, e->lost, (int)e->res.r.result_kind.len,
                     e->res.r.result_kind.p);
        int runs = 0;
        for (size_t k = 0; k < ag->nev; k++)
            runs += ag->ev[k].type == ING_AGENT_EV_JOB && strcmp(ag->ev[k].job_id, id) == 0;
        if (runs != 1)
            fail_msg("job %s ran %d times", id, runs);
    }
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, NULL), n);
}

/* submit_n submits <prefix>0 .. <prefix>n-1 on cl. */
static void
submit_n(struct lt_world *w, struct lt_client *cl, const char *prefix, int n)
{
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "%s%d", prefix, i);
        submit(w, cl, id, 0);
    }
}

/* run_all starts an agent with slots and spins until cl has no pending job, then checks
 * that each of <prefix>0 .. n-1 ran and ended exactly once. */
static void
run_all(struct lt_world *w, struct lt_client *cl, uint32_t slots, const char *prefix, int n)
{
    struct lt_agent *ag = lt_agent_new(w, "A", slots, 1, "docker/default", NULL);
    lt_until(w, none_pending, cl, "every job of the session ended");
    lt_barrier(w, cl);
    check_each_once(cl, ag, prefix, n);
}

/* A session client (library, reconnecting) submits 20 jobs with no agent and the backend is
 * killed (-9) before it acknowledged them all; restarted on its journal, the library resumes
 * the session and submits again what the backend does not hold: each job runs once and ends
 * once, none is reported lost. */
static void
test_durable_session_kill9_exactly_once(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--journal", journal_dir(w), "--orphan-timeout", "0", NULL);
    struct lt_client *cl = session_client(w);
    submit_n(w, cl, "s", 20);
    lt_expect_cev(w, cl, ING_CLIENT_EV_ACCEPTED, "s0"); /* the others may be in flight */
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, NULL), 0);
    assert_int_equal(ing_client_pending(cl->c), 20);
    run_all(w, cl, 4, "s", 20);
    lt_pass(w);
}

/* A plain connection loss (no restart, no journal): the session is detached, the library
 * reconnects and resumes it; nothing is reported lost and every job ends once. A result
 * that arrives while the session is detached is kept for it. */
static void
test_durable_session_connection_drop(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--orphan-timeout", "0", NULL);
    struct lt_client *cl = session_client(w);
    submit_n(w, cl, "d", 5);
    lt_expect_cev(w, cl, ING_CLIENT_EV_ACCEPTED, "d4");
    assert_int_equal(shutdown(ing_client_fd(cl->c), SHUT_RDWR), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, NULL), 0);
    assert_int_equal(ing_client_pending(cl->c), 5);
    run_all(w, cl, 2, "d", 5);
    lt_pass(w);
}

/* agent_done_out reports job id a success whose stdout is out[0..nout) on ag and writes it
 * out, spinning the agent only: no client reads meanwhile. */
static void
agent_done_out(struct lt_agent *ag, const char *id, const char *out, size_t nout)
{
    struct ing_job_result r;
    memset(&r, 0, sizeof(r));
    r.job_id = (struct ing_view){id, (uint32_t)strlen(id)};
    r.result_kind = (struct ing_view){"success", 7};
    r.result_text = (struct ing_view){"ok", 2};
    r.problems = r.tests = r.custom = (struct ing_view){"\x80", 1};
    r.state = r.stderr_ = (struct ing_view){"", 0};
    r.stdout_ = (struct ing_view){out, (uint32_t)nout};
    assert_int_equal(ing_agent_done(ag->a, &r), 0);
    uint64_t end = lt_now_ms() + 10000u * (unsigned)lt_slow();
    while (ing_agent_want_write(ag->a)) {
        struct pollfd p = {ing_agent_fd(ag->a), POLLOUT, 0};
        if (lt_now_ms() > end)
            fail_msg("the agent could not write its result");
        (void)poll(&p, 1, 100);
        (void)ing_agent_process(ag->a, lt_agent_record, ag);
    }
}

/* agent_done_only: agent_done_out with an empty stdout. */
static void
agent_done_only(struct lt_agent *ag, const char *id)
{
    agent_done_out(ag, id, "", 0);
}

/* wait_readable waits (bounded) until fd has input, without reading it. */
static void
wait_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 10000 * lt_slow()) != 1)
        fail_msg("nothing arrived on fd %d", fd);
}

/* agent_runs counts the times ag received job id. */
static int
agent_runs(const struct lt_agent *ag, const char *id)
{
    int runs = 0;
    for (size_t k = 0; k < ag->nev; k++)
        runs += ag->ev[k].type == ING_AGENT_EV_JOB && strcmp(ag->ev[k].job_id, id) == 0;
    return runs;
}

/* result_in_socket starts a backend, a session client and an agent; job id runs and its
 * result is written to the client's socket, not read yet. */
static void
result_in_socket(struct lt_world *w, struct lt_client **cl, struct lt_agent **ag,
                 const char *id)
{
    lt_start(w, NULL, NULL, "--orphan-timeout", "0", NULL);
    *cl = session_client(w);
    *ag = lt_agent_new(w, "A", 1, 0, "docker/default", NULL);
    submit(w, *cl, id, 0);
    lt_expect_cev(w, *cl, ING_CLIENT_EV_ACCEPTED, id);
    lt_expect_aev(w, *ag, ING_AGENT_EV_JOB, id);
    agent_done_only(*ag, id);
    wait_readable(ing_client_fd((*cl)->c));
}

/* A result the backend wrote to the session's connection, which then dies before the
 * client read it (its socket closed with the result unread): the backend kept it until
 * acknowledged (proto.md 7.9), so the resumed session gets it; the program sees it once
 * and the job ran once (it is not submitted again). */
static void
test_durable_session_unread_result_resent(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *ag;
    result_in_socket(w, &cl, &ag, "u0");
    int fd = ing_client_fd(cl->c);
    /* The connection dies with the result unread: its socket is replaced by one end of a
     * closed pair (the kernel drops the TCP socket with its input; the library reads EOF). */
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    assert_int_equal(dup3(sp[0], fd, O_CLOEXEC), fd);
    close(sp[0]);
    close(sp[1]);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    lt_barrier(w, cl);
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, "u0"), 1);
    struct lt_cev *e = lt_find_cev(cl, ING_CLIENT_EV_DONE, "u0");
    assert_false(e->lost);
    assert_true(e->pending);
    assert_int_equal(agent_runs(ag, "u0"), 1);
    assert_int_equal(ing_client_pending(cl->c), 0);
    assert_int_equal(ing_client_duplicates(cl->c), 0);
    lt_pass(w);
}

/* The client read a result but its acknowledgement never reached the backend (its sending
 * side was shut first): the resumed session is sent the result again, and the library
 * drops it: the program sees it once, the job ran once. A third connection is sent
 * nothing again (the second acknowledged it). */
static void
test_durable_session_duplicate_dropped(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_agent *ag;
    result_in_socket(w, &cl, &ag, "v0");
    assert_int_equal(shutdown(ing_client_fd(cl->c), SHUT_WR), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "v0"); /* read, given to the program */
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    lt_barrier(w, cl);
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, "v0"), 1);
    assert_int_equal(ing_client_duplicates(cl->c), 1);
    assert_int_equal(agent_runs(ag, "v0"), 1);
    assert_int_equal(shutdown(ing_client_fd(cl->c), SHUT_RDWR), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DISCONNECTED, NULL);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    lt_barrier(w, cl);
    assert_int_equal(ing_client_duplicates(cl->c), 1); /* not sent again */
    assert_int_equal(count_cev(cl, ING_CLIENT_EV_DONE, "v0"), 1);
    lt_pass(w);
}

/* agent_done_big is agent_done_only with a success result whose stdout is kib KiB. */
static void
agent_done_big(struct lt_agent *ag, const char *id, size_t kib)
{
    static char out[768 << 10];
    assert_true(kib << 10 <= sizeof(out));
    memset(out, 'o', kib << 10);
    agent_done_out(ag, id, out, kib << 10);
}

/* A session's connection (the library, acknowledging results) that does not read while six
 * results of 768 KiB arrive (--max-output 1M: 4 MiB unacknowledged at most, proto.md 7.9)
 * is cut off (Error OVERLOAD, or its output over --max-output when the kernel takes less);
 * the library comes back, is sent again what it had not acknowledged, and the program sees
 * each result once, whole (the ones read before the cut-off dropped as duplicates); each
 * job ran once. */
static void
test_durable_session_cutoff_each_once(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--max-output", "1M", "--orphan-timeout", "0", NULL);
    struct lt_client *cl = session_client(w);
    struct lt_agent *ag = lt_agent_new(w, "A", 6, 0, "docker/default", NULL);
    char id[16];
    submit_n(w, cl, "o", 6);
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "o%d", i);
        lt_expect_aev(w, ag, ING_AGENT_EV_JOB, id);
    }
    for (int i = 0; i < 6; i++) { /* the client reads nothing meanwhile */
        snprintf(id, sizeof(id), "o%d", i);
        agent_done_big(ag, id, 768);
    }
    uint64_t end = lt_now_ms() + 10000u * (unsigned)lt_slow();
    while (!lt_log_contains(w, "results not acknowledged") &&
           !lt_log_contains(w, "over the limit: dropped")) {
        if (lt_now_ms() > end)
            fail_msg("the connection that does not read was not cut off");
        (void)poll(NULL, 0, 2);
    }
    lt_until(w, none_pending, cl, "every job of the session ended");
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL); /* after the cut-off */
    lt_barrier(w, cl);
    check_each_once(cl, ag, "o", 6);
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "o%d", i);
        struct lt_cev *e = lt_find_cev(cl, ING_CLIENT_EV_DONE, id);
        assert_non_null(e);
        assert_int_equal(e->res.r.stdout_.len, 768u << 10);
    }
    print_message("cut-off: %s, %llu results dropped as duplicates\n",
                  lt_log_contains(w, "results not acknowledged") ? "Error OVERLOAD"
                                                                 : "--max-output",
                  (unsigned long long)ing_client_duplicates(cl->c));
    lt_pass(w);
}

/* A backend restarted without a journal has forgotten the session: the library submits
 * every pending job again on the new connection; each runs and ends once. */
static void
test_durable_session_restart_without_journal(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--orphan-timeout", "0", NULL);
    struct lt_client *cl = session_client(w);
    char id[32];
    submit_n(w, cl, "r", 5);
    lt_expect_cev(w, cl, ING_CLIENT_EV_ACCEPTED, "r4");
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    lt_expect_cev(w, cl, ING_CLIENT_EV_RESUMED, NULL);
    for (int i = 0; i < 5; i++) { /* acknowledged again: they were submitted again */
        snprintf(id, sizeof(id), "r%d", i);
        lt_expect_cev(w, cl, ING_CLIENT_EV_ACCEPTED, id);
    }
    run_all(w, cl, 2, "r", 5);
    lt_pass(w);
}

/* Acknowledgements only after success (proto.md 7.8), under --fsync always with a file-size
 * limit (EFBIG): every acknowledged job survives kill -9; the job whose record could not be
 * written is never acknowledged but refused after all, with Error JOURNAL then crash
 * "Journal unavailable: ...", and killed on the agent it had just been sent to; the ones
 * after it are refused the same way; the refusals make one log line, not one per job. */
static void
test_durable_ack_only_after_write(void **state)
{
    struct lt_world *w = *state;
    struct rlimit old;
    start_fsize(w, &old, "--fsync", "always", "--kill-timeout", "0");
    struct lt_agent *ag = lt_agent_new(w, "A", 200, 0, "docker/default", NULL); /* never ends */
    struct ing_client_opts o = {.size = sizeof(o), .name = "acker", .acks = true};
    struct lt_client *cl = lt_client_new(w, &o);
    lt_expect_cev(w, cl, ING_CLIENT_EV_CONNECTED, NULL);
    static char input[2200];
    snprintf(input, sizeof(input), "{\"pad\": \"%02000d\"}", 0);
    int acked = 0;
    char id[32], bad[32] = "";
    for (int i = 0; i < 100 && bad[0] == 0; i++) { /* one by one: each in its iteration */
        snprintf(id, sizeof(id), "f%d", i);
        submit_in(w, cl, id, 0, input);
        lt_barrier(w, cl);
        struct lt_cev *a = lt_find_cev(cl, ING_CLIENT_EV_ACCEPTED, id);
        if (a != NULL) {
            a->used = true;
            acked++;
        } else
            snprintf(bad, sizeof(bad), "%s", id);
    }
    assert_true(acked > 5 && acked < 60 && bad[0] != 0);
    /* the job that failed: Error JOURNAL, then its crash; sent to the agent, then killed */
    struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_ERROR, NULL);
    assert_int_equal(e->code, ING_ERR_JOURNAL);
    assert_true(strstr(e->text, "Journal unavailable: File too large") == e->text);
    long err_at = (long)(e - cl->ev);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, bad);
    assert_true(err_at < (long)(e - cl->ev));
    char text[LT_STR];
    lt_view_str(text, sizeof(text), e->res.r.result_text);
    assert_string_equal(text, "Journal unavailable: File too large");
    assert_true(ing_view_eq(e->res.r.result_kind, "crash"));
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, bad);
    lt_expect_aev(w, ag, ING_AGENT_EV_KILL, bad);
    /* later ones: refused at once, never acknowledged */
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        submit_in(w, cl, id, 0, input);
        lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, id);
        e = lt_expect_cev(w, cl, ING_CLIENT_EV_ERROR, NULL);
        assert_int_equal(e->code, ING_ERR_JOURNAL);
    }
    lt_barrier(w, cl);
    assert_null(lt_find_cev(cl, ING_CLIENT_EV_ACCEPTED, NULL));
    if (lt_log_contains(w, "job g1 refused"))
        fail_msg("a refusal for the journal's sake was logged per job");
    /* writes work again: acknowledged again */
    struct rlimit big = old;
    assert_int_equal(prlimit(w->be_pid, RLIMIT_FSIZE, &big, NULL), 0);
    int after = 0;
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    for (int k = 0; after == 0 && lt_now_ms() < end; k++) {
        snprintf(id, sizeof(id), "h%d", k);
        submit_in(w, cl, id, 0, input);
        lt_barrier(w, cl);
        after = lt_find_cev(cl, ING_CLIENT_EV_ACCEPTED, id) != NULL;
        lt_spin(w, 20);
    }
    assert_int_equal(after, 1);
    if (!lt_log_contains(w, "journal: accepting jobs again ("))
        fail_msg("the end of the refusals is not logged");
    restart_expect(w, acked + after);
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_durable_waiting_jobs_survive_kill9),
        CASE(test_durable_second_backend_refused),
        CASE(test_durable_corruption_and_repair),
        CASE(test_durable_disk_full),
        CASE(test_durable_job_too_large),
        CASE(test_durable_restore_over_limit),
        CASE(test_durable_acks_survive_kill9),
        CASE(test_durable_acks_order_no_journal),
        CASE(test_durable_ack_only_after_write),
        CASE(test_durable_session_kill9_exactly_once),
        CASE(test_durable_session_connection_drop),
        CASE(test_durable_session_restart_without_journal),
        CASE(test_durable_session_cutoff_each_once),
        CASE(test_durable_session_unread_result_resent),
        CASE(test_durable_session_duplicate_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
