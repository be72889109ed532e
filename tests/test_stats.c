/* SPDX-License-Identifier: MIT */
/* test_stats.c: statistics over the native protocol (ClientGetStats -> BackendStats,
 * proto.md §5.8) against the real backend: the library's event, inginious-ctl stats (table
 * and --json) after a workload, inginious-ctl top (alternate screen, cursor, refreshes) and
 * its terminal restored after N refreshes and after Ctrl-C (SIGINT). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inginious/client.h"
#include "support/libtest.h"

#define RESTORE "\033[?25h\033[?1049l" /* cursor shown, main screen back */
#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

static int
run_ctl(struct lt_world *w, const char *const *args, bool wait)
{
    static char bin[LT_STR + 32], be[LT_STR + 32];
    char *argv[16];
    size_t n = 0;
    snprintf(bin, sizeof(bin), "%s/inginious-ctl", lt_build());
    snprintf(be, sizeof(be), "%s", w->client_addr);
    argv[n++] = bin;
    argv[n++] = "--backend";
    argv[n++] = be;
    for (; *args != NULL && n < 15; args++)
        argv[n++] = (char *)*args;
    argv[n] = NULL;
    lt_run(w, argv, NULL);
    if (!wait)
        return 0;
    int rc = lt_proc_wait(w);
    if (rc != 0)
        print_message("inginious-ctl exited %d:\n%s\n%s\n", rc, w->proc->out, w->proc->err);
    return rc;
}

static struct ing_client_job
job(const char *id, const char *env, const char *what)
{
    static uint8_t mp[40];
    size_t n = strlen(what);
    struct ing_client_job j = {
        .job_id = id, .environment_type = "docker", .environment = env, .launcher = "t"};
    memcpy(mp, "\x81\xa2" "do", 4);
    mp[4] = (uint8_t)(0xa0 | n);
    memcpy(mp + 5, what, n);
    j.inputdata.p = (const char *)mp;
    j.inputdata.len = (uint32_t)(5 + n);
    return j;
}

/* workload: 2 done, 1 running (hang), 1 waiting elsewhere; returns the client. */
static struct lt_client *
workload(struct lt_world *w)
{
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_agent_new(w, "a1", 2, true, "docker/default", NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    struct ing_client_job j;
    j = job("s1", "default", "success");
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    j = job("s2", "default", "fail");
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    j = job("h1", "default", "hang");
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    j = job("w1", "elsewhere", "success");
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "s1");
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "s2");
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "h1");
    lt_barrier(w, cl);
    return cl;
}

static void
test_stats_library_and_ctl(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, NULL);
    struct lt_client *cl = workload(w);
    /* The library: one ING_CLIENT_EV_STATS with the map. */
    assert_int_equal(ing_client_get_stats(cl->c), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STATS, NULL);
    /* inginious-ctl stats --json: the map, exactly these counters. */
    const char *a1[] = {"stats", "--json", NULL};
    assert_int_equal(run_ctl(w, a1, true), 0);
    const char *out = w->proc->out;
    static const char *const facts[] = {
        "\"submitted\":4,", "\"refused\":0,", "\"dispatched\":3,", "\"started\":3,",
        "\"done\":2,", "\"waiting\":1,", "\"running\":1,", "\"agents\":1,", "\"slots\":2,",
        "\"slots_busy\":1,", "\"clients\":2,",
        "\"environments\":[[\"docker\",\"default\",0,1],[\"docker\",\"elsewhere\",1,0]]}",
    };
    for (size_t i = 0; i < sizeof(facts) / sizeof(facts[0]); i++)
        if (strstr(out, facts[i]) == NULL)
            fail_msg("stats --json lacks %s:\n%s", facts[i], out);
    assert_null(strstr(out, "journal_")); /* no --journal */
    /* The table. */
    const char *a2[] = {"stats", NULL};
    assert_int_equal(run_ctl(w, a2, true), 0);
    out = w->proc->out;
    assert_non_null(strstr(out, "submitted    4 "));
    assert_non_null(strstr(out, "docker           elsewhere                                 1"
                                "          0\n"));
    lt_pass(w);
}

/* With --journal the map has the journal's figures (proto.md 5.8): one segment of the
 * size on disk, fdatasyncs under --fsync always, available. */
static void
test_stats_journal(void **state)
{
    struct lt_world *w = *state;
    char dir[LT_STR + 16];
    snprintf(dir, sizeof(dir), "%s/journal", lt_dir(w));
    lt_start(w, NULL, NULL, "--journal", dir, "--fsync", "always", NULL);
    struct lt_client *cl = workload(w);
    (void)cl;
    const char *a1[] = {"stats", "--json", NULL};
    assert_int_equal(run_ctl(w, a1, true), 0);
    const char *out = w->proc->out;
    char seg[LT_STR + 48], want[96];
    snprintf(seg, sizeof(seg), "%s/0000000000000001.seg", dir);
    struct stat sb;
    assert_int_equal(stat(seg, &sb), 0);
    snprintf(want, sizeof(want), "\"journal_available\":1,\"journal_bytes\":%lld,",
             (long long)sb.st_size);
    if (strstr(out, want) == NULL || strstr(out, "\"journal_segments\":1,") == NULL)
        fail_msg("stats --json lacks %s or one segment:\n%s", want, out);
    const char *f = strstr(out, "\"journal_fsyncs\":");
    assert_non_null(f);
    if (atoi(f + 17) < 3) /* the segment's creation, the submissions, a result at least */
        fail_msg("too few fdatasyncs: %s", out);
    lt_pass(w);
}

static void
test_stats_top_restores_terminal(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, NULL);
    workload(w);
    /* Two refreshes, then the terminal as it was. */
    const char *a1[] = {"top", "--count", "2", NULL};
    assert_int_equal(run_ctl(w, a1, true), 0);
    const char *out = w->proc->out;
    assert_int_equal(strncmp(out, "\033[?1049h\033[?25l", 14), 0);
    size_t n = strlen(out);
    assert_true(n > strlen(RESTORE) && strcmp(out + n - strlen(RESTORE), RESTORE) == 0);
    const char *first = strstr(out, "\033[H\033[2J");
    assert_non_null(first);
    assert_non_null(strstr(first + 1, "\033[H\033[2J")); /* the second refresh */
    assert_non_null(strstr(out, "running      1 "));
    /* Until Ctrl-C: SIGINT once the first screen is out; exit 0, terminal restored. */
    const char *a2[] = {"top", NULL};
    run_ctl(w, a2, false);
    uint64_t t0 = lt_now_ms();
    while (w->proc->out == NULL || strstr(w->proc->out, "ENVIRONMENT") == NULL) {
        if (lt_now_ms() - t0 > (uint64_t)LT_DEADLINE_MS)
            fail_msg("top printed nothing");
        lt_spin(w, 20);
    }
    kill(w->proc->pid, SIGINT);
    assert_int_equal(lt_proc_wait(w), 0);
    out = w->proc->out;
    n = strlen(out);
    assert_true(n > strlen(RESTORE) && strcmp(out + n - strlen(RESTORE), RESTORE) == 0);
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_stats_library_and_ctl),
        CASE(test_stats_journal),
        CASE(test_stats_top_restores_terminal),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
