/* SPDX-License-Identifier: MIT */
/* test_durable.c: inginious-backend --journal against the real binary (issue 16, step 2):
 * waiting jobs survive kill -9 in their order and priority, ended jobs do not come back, a
 * second backend on the same journal refuses to start, corruption before the tail stops the
 * start until --journal-repair. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
submit(struct lt_world *w, struct lt_client *cl, const char *id, int64_t prio)
{
    struct ing_client_job j = {.job_id = id,
                               .environment_type = "docker",
                               .environment = "default",
                               .launcher = "tester",
                               .priority = prio};
    j.inputdata = lt_mp(w, "{\"do\": \"success\"}");
    int rc = ing_client_submit(cl->c, &j);
    if (rc != 0)
        fail_msg("submit %s: %s", id, ing_strerror(rc));
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_durable_waiting_jobs_survive_kill9),
        CASE(test_durable_second_backend_refused),
        CASE(test_durable_corruption_and_repair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
