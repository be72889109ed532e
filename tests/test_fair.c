/* SPDX-License-Identifier: MIT */
/* test_fair.c: fair share (issue 18) against $ING_BUILD/inginious-backend: with one agent
 * slot, a key's single job is dispatched at the next free slot behind another key's flood
 * of 10,000, and with weights 3:1 and both keys flooding, every window of 400 dispatches
 * holds 300:100 within 5 %.
 *
 * Every wait is a poll with a deadline (tests/support/tpeer.h); nothing sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "inginious/proto.h"
#include "support/tpeer.h"

/* submit_as sends ClientNewJob id with launcher key. */
static void
submit_as(struct tp_peer *cl, const char *key, const char *id)
{
    tp_send_job(cl, &(struct tp_job){.id = id, .launcher = key, .state = "S"});
}

/* next_job receives the next BackendNewJob on agent a and copies its id into id. */
static void
next_job(struct tp_peer *a, char *id, size_t cap)
{
    const struct ing_msg *m = tp_expect(a, ING_BACKEND_NEW_JOB);
    struct ing_view v = m->u.job.job_id;
    if (v.len >= cap)
        tp_fail("job id too long");
    memcpy(id, v.p, v.len);
    id[v.len] = '\0';
}

/* One slot; A floods 10,000 jobs, then B submits one: B's job takes the next free slot
 * (without fair share it would wait for all of A's). */
TP_TEST(test_fair_flood_does_not_starve)
{
    enum { FLOOD = 10000 };
    char id[32];
    struct tp_peer *cl, *a;

    tp_start(c, "--fair-share", "launcher", NULL);
    cl = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(cl, "docker:[default]");
    for (int i = 0; i < FLOOD; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        submit_as(cl, "A", id);
    }
    submit_as(cl, "B", "b0");
    tp_barrier(cl); /* every job is queued */
    tp_expect_job(a, "a0");
    tp_done(a, "a0", "success", "S");
    tp_expect_job(a, "b0");
    tp_done(a, "b0", "success", "S");
    tp_expect_job(a, "a1");
}

/* Weights 3:1, both keys flooding: over any window of 400 dispatches A gets 300 +- 5 %. */
TP_TEST(test_fair_weights_three_to_one)
{
    enum { EACH = 1000, RUN = 1200, WIN = 400 };
    static char key[RUN];
    char id[32];
    struct tp_peer *cl, *a;

    tp_start(c, "--fair-share", "launcher", "--fair-weight", "A=3", NULL);
    cl = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(cl, "docker:[default]");
    for (int i = 0; i < EACH; i++) {
        snprintf(id, sizeof(id), "A%d", i);
        submit_as(cl, "A", id);
    }
    for (int i = 0; i < EACH; i++) {
        snprintf(id, sizeof(id), "B%d", i);
        submit_as(cl, "B", id);
    }
    tp_barrier(cl);
    /* The first job was dispatched when it arrived, alone: the count starts after it. */
    next_job(a, id, sizeof(id));
    assert_string_equal(id, "A0");
    tp_done(a, id, "success", "S");
    for (int k = 0; k < RUN; k++) {
        next_job(a, id, sizeof(id));
        key[k] = id[0];
        tp_done(a, id, "success", "S");
    }
    int na = 0;
    for (int k = 0; k < RUN; k++) {
        na += key[k] == 'A';
        if (k >= WIN)
            na -= key[k - WIN] == 'A';
        if (k >= WIN - 1 && (na < 285 || na > 315))
            tp_fail("window ending at %d: %d of A's jobs in %d", k, na, WIN);
    }
}

/* Bad values of the fair-share options stop the start with exit status 2. */
TP_TEST(test_fair_bad_option_values)
{
    static const char *const bad[][2] = {
        {"--fair-share", "course2"},  {"--fair-weight", "A"},     {"--fair-weight", "A=0"},
        {"--fair-weight", "A=1001"}, {"--fair-weight", "A=3x"},  {"--priority-aging", "8d"},
        {"--priority-aging", "-1"},
    };

    (void)c; /* no backend running: each command exits at once */
    tp_expect_bad_options(bad, sizeof(bad) / sizeof(bad[0]));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_fair_flood_does_not_starve),
        TP_CASE(test_fair_weights_three_to_one),
        TP_CASE(test_fair_bad_option_values),
    };
    return cmocka_run_group_tests_name("fair", tests, NULL, NULL);
}
