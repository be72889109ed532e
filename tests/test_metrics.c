/* SPDX-License-Identifier: MIT */
/* test_metrics.c: the Prometheus exposition (src/metrics.c): every family and value of a
 * known snapshot, the bounded environment labels ("other"), label escaping, histograms,
 * the process metrics, parsing by the real parsers (python3-prometheus-client's
 * text_string_to_metric_families and promtool check metrics), and the time to build an
 * answer with 100 environments and 1,000 agents. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

static struct metrics_core core;
static struct metrics_server srv;
static struct metrics_env envs[200];
static char names[200][32];
static struct metrics_type types[2];

/* snap_fill: a snapshot with known values and nenv environments of depth 1..nenv. */
static void
snap_fill(struct metrics_snap *s, size_t nenv, size_t max_envs)
{
    memset(&core, 0, sizeof(core));
    memset(&srv, 0, sizeof(srv));
    memset(types, 0, sizeof(types));
    core.submitted = 10;
    core.dispatched = 9;
    core.started = 8;
    core.refused[METRICS_REFUSE_QUEUE_FULL] = 3;
    core.done[METRICS_RES_SUCCESS] = 5;
    core.done[METRICS_RES_KILLED] = 1;
    core.kills[METRICS_KILL_AGENT] = 1;
    core.lost = 2;
    core.requeued = 1;
    for (size_t i = 0; i < nenv; i++) {
        snprintf(names[i], sizeof(names[i]), "env%03zu", i);
        envs[i] = (struct metrics_env){i % 2 ? "docker" : "mcq", names[i], i + 1, i % 3};
    }
    types[0].type = "docker";
    types[1].type = "we\"ird\\\n";
    metrics_hist_observe(&types[0].wait, 5);       /* <= 10 us */
    metrics_hist_observe(&types[0].wait, 1500000); /* <= 2.5 s */
    metrics_hist_observe(&types[0].run, 7200000000ull); /* over every bound */
    metrics_hist_observe(&srv.loop, 42);
    srv.conns[METRICS_ROLE_AGENT][METRICS_DIALECT_ZMQ] = 2;
    srv.conns[METRICS_ROLE_CLIENT][METRICS_DIALECT_NATIVE] = 3;
    srv.frames_in = 100;
    srv.proto_errors[5] = 4;
    srv.auth_failures = 1;
    memset(s, 0, sizeof(*s));
    s->core = &core;
    s->srv = &srv;
    s->envs = envs;
    s->nenvs = nenv;
    s->types = types;
    s->ntypes = 2;
    s->jobs_killed = 1;
    s->jobs_claimed = 6;
    s->claims_refused = 1;
    s->sessions_resumed = 4;
    s->kept_shed = 3;
    s->sessions = 2;
    s->kept_results = 5;
    s->waiting = 7;
    s->running = 2;
    s->agents = 1000;
    s->slots = 4000;
    s->slots_busy = 2;
    s->max_envs = max_envs;
    metrics_proc_read(&s->proc, 1700000000.5);
}

static char *
render(struct metrics_snap *s)
{
    struct buf b;
    buf_init(&b);
    assert_int_equal(metrics_render(s, &b), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    return (char *)b.data;
}

static void
has(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("missing line: %s", line);
}

static void
test_metrics_values(void **state)
{
    (void)state;
    struct metrics_snap s;
    snap_fill(&s, 3, 100);
    char *t = render(&s);
    has(t, "# TYPE inginious_jobs_submitted_total counter");
    has(t, "inginious_jobs_submitted_total 10");
    has(t, "inginious_jobs_refused_total{reason=\"queue_full\"} 3");
    has(t, "inginious_jobs_refused_total{reason=\"invalid\"} 0");
    has(t, "inginious_jobs_done_total{result=\"success\"} 5");
    has(t, "inginious_kills_total{outcome=\"agent\"} 1");
    has(t, "inginious_jobs_lost_total 2");
    has(t, "# TYPE inginious_agent_jobs_claimed_total counter");
    has(t, "inginious_agent_jobs_claimed_total 6");
    has(t, "inginious_agent_claims_refused_total 1");
    has(t, "inginious_sessions_resumed_total 4");
    has(t, "inginious_session_results_shed_total 3");
    has(t, "# TYPE inginious_sessions gauge");
    has(t, "inginious_sessions 2");
    has(t, "inginious_session_kept_results 5");
    has(t, "inginious_waiting_jobs 7");
    has(t, "inginious_jobs_waiting{environment_type=\"mcq\",environment=\"env002\"} 3");
    has(t, "inginious_jobs_running{environment_type=\"docker\",environment=\"env001\"} 1");
    assert_null(strstr(t, "environment=\"other\""));
    has(t, "inginious_job_wait_seconds_bucket{environment_type=\"docker\",le=\"0.000010\"} 1");
    has(t, "inginious_job_wait_seconds_bucket{environment_type=\"docker\",le=\"2.500000\"} 2");
    has(t, "inginious_job_wait_seconds_bucket{environment_type=\"docker\",le=\"+Inf\"} 2");
    has(t, "inginious_job_wait_seconds_sum{environment_type=\"docker\"} 1.500005");
    has(t, "inginious_job_wait_seconds_count{environment_type=\"docker\"} 2");
    has(t, "inginious_job_run_seconds_bucket{environment_type=\"docker\",le=\"3600.000000\"} 0");
    has(t, "inginious_job_run_seconds_bucket{environment_type=\"docker\",le=\"+Inf\"} 1");
    has(t, "inginious_job_run_seconds_count{environment_type=\"we\\\"ird\\\\\\n\"} 0");
    has(t, "inginious_loop_iteration_seconds_bucket{le=\"0.000100\"} 1");
    has(t, "inginious_loop_iteration_seconds_sum 0.000042");
    has(t, "inginious_loop_iteration_seconds_count 1");
    has(t, "inginious_agents 1000");
    has(t, "inginious_slots_busy 2");
    has(t, "inginious_connections{role=\"agent\",dialect=\"zmq\"} 2");
    has(t, "inginious_connections{role=\"client\",dialect=\"native\"} 3");
    has(t, "inginious_protocol_errors_total{code=\"5\"} 4");
    has(t, "inginious_auth_failures_total 1");
    has(t, "process_start_time_seconds 1700000000.500");
    assert_non_null(strstr(t, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(t, "\nprocess_open_fds "));
    assert_non_null(strstr(t, "\nprocess_max_fds "));
    assert_non_null(strstr(t, "\nprocess_cpu_seconds_total "));
    assert_true(s.proc.ok && s.proc.rss_bytes > 0 && s.proc.open_fds >= 3);
    /* Every family has HELP and TYPE before its samples. */
    for (const char *p = t; (p = strstr(p, "# TYPE ")) != NULL; p++) {
        const char *name = p + 7, *sp = strchr(name, ' ');
        char help[128];
        snprintf(help, sizeof(help), "# HELP %.*s ", (int)(sp - name), name);
        assert_non_null(strstr(t, help));
    }
    free(t);
}

static void
test_metrics_bounded_envs(void **state)
{
    (void)state;
    struct metrics_snap s;
    snap_fill(&s, 150, 100);
    char *t = render(&s);
    size_t lines = 0;
    for (const char *p = t; (p = strstr(p, "\ninginious_jobs_waiting{")) != NULL; p++)
        lines++;
    assert_int_equal(lines, 101); /* 100 deepest + other */
    /* The deepest are env149 (150 waiting) .. env050 (51); the rest 1..50 sum to 1275. */
    has(t, "inginious_jobs_waiting{environment_type=\"docker\",environment=\"env149\"} 150");
    has(t, "inginious_jobs_waiting{environment_type=\"mcq\",environment=\"env050\"} 51");
    assert_null(strstr(t, "environment=\"env049\""));
    has(t, "inginious_jobs_waiting{environment_type=\"other\",environment=\"other\"} 1275");
    uint64_t run_other = 0;
    for (size_t i = 0; i < 50; i++)
        run_other += i % 3;
    char want[160];
    snprintf(want, sizeof(want),
             "inginious_jobs_running{environment_type=\"other\",environment=\"other\"} %llu",
             (unsigned long long)run_other);
    has(t, want);
    free(t);
    snap_fill(&s, 5, 0); /* --metrics-max-envs 0: everything is other */
    t = render(&s);
    has(t, "inginious_jobs_waiting{environment_type=\"other\",environment=\"other\"} 15");
    free(t);
}

/* Fair share: waiting jobs per key, merged over environments and priorities, the deepest
 * keys labelled, the rest summed as other; no family when fair share is off. */
static void
test_metrics_fair_keys(void **state)
{
    (void)state;
    struct metrics_snap s;
    snap_fill(&s, 3, 2);
    char *t = render(&s);
    assert_null(strstr(t, "inginious_fair_key_waiting_jobs"));
    free(t);
    struct metrics_key keys[] = {
        {"LINFO1101", 9, 5}, {"u\"1", 3, 1}, {"LINFO1101xyz", 9, 4}, {"LSINF", 5, 2},
        {"", 0, 3},
    };
    size_t n = metrics_merge_keys(keys, 5);
    assert_int_equal(n, 4); /* the two LINFO1101 records are one key */
    s.keys = keys;
    s.nkeys = n;
    t = render(&s);
    has(t, "# TYPE inginious_fair_key_waiting_jobs gauge");
    has(t, "inginious_fair_key_waiting_jobs{key=\"LINFO1101\"} 9");
    has(t, "inginious_fair_key_waiting_jobs{key=\"\"} 3");
    has(t, "inginious_fair_key_waiting_jobs{key=\"other\"} 3"); /* LSINF 2 + u"1 1 */
    assert_null(strstr(t, "key=\"LSINF\""));
    free(t);
}

static void
test_metrics_escape_and_kinds(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(metrics_label_escape(&b, "a\"b\\c\nd", 7), 0);
    assert_int_equal(buf_len(&b), 10);
    assert_memory_equal(buf_head(&b), "a\\\"b\\\\c\\nd", 10);
    buf_fini(&b);
    assert_int_equal(metrics_result_kind("success", 7), METRICS_RES_SUCCESS);
    assert_int_equal(metrics_result_kind("overflow", 8), METRICS_RES_OVERFLOW);
    assert_int_equal(metrics_result_kind("succes", 6), METRICS_RES_ERROR);
    assert_int_equal(metrics_result_kind("whatever", 8), METRICS_RES_ERROR);
}

/* ref_bucket: the bucket as the definition says: the number of bounds below us. */
static unsigned
ref_bucket(uint64_t us)
{
    unsigned i = 0;
    while (i < METRICS_NBUCKETS && us > metrics_bucket_us[i])
        i++;
    return i;
}

/* The branch-free bucket search agrees with the definition at every bound, next to it, at
 * the ends of the range and on values spread over it; an observation lands in it. */
static void
test_metrics_bucket_search(void **state)
{
    (void)state;
    uint64_t probe[3 * METRICS_NBUCKETS + 4];
    size_t n = 0;
    for (unsigned i = 0; i < METRICS_NBUCKETS; i++) {
        probe[n++] = metrics_bucket_us[i] - 1;
        probe[n++] = metrics_bucket_us[i];
        probe[n++] = metrics_bucket_us[i] + 1;
    }
    probe[n++] = 0;
    probe[n++] = 1;
    probe[n++] = UINT64_MAX - 1;
    probe[n++] = UINT64_MAX;
    for (size_t k = 0; k < n; k++)
        assert_int_equal(metrics_bucket(probe[k]), ref_bucket(probe[k]));
    uint64_t x = 88172645463325252ull;
    for (int k = 0; k < 100000; k++) { /* xorshift, shifted to reach every magnitude */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x >> (x % 64);
        assert_int_equal(metrics_bucket(v), ref_bucket(v));
    }
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 10);         /* on the first bound: bucket 0 */
    metrics_hist_observe(&h, 11);         /* just above: bucket 1 */
    metrics_hist_observe(&h, UINT64_MAX); /* above every bound */
    assert_int_equal(h.bucket[0], 1);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[METRICS_NBUCKETS], 1);
    assert_int_equal(h.count, 3);
}

/* Every result kind maps to itself; near misses (a prefix, a longer string, another case,
 * the right first byte with another length) and "error" map to error. */
static void
test_metrics_result_kinds_all(void **state)
{
    (void)state;
    for (int k = 0; k < METRICS_NRESULT; k++) {
        const char *name = metrics_result_name[k];
        size_t len = strlen(name);
        assert_int_equal(metrics_result_kind(name, len), k);
        assert_int_equal(metrics_result_kind(name, len - 1), METRICS_RES_ERROR);
        char longer[16];
        snprintf(longer, sizeof(longer), "%sx", name);
        assert_int_equal(metrics_result_kind(longer, len + 1), METRICS_RES_ERROR);
    }
    assert_int_equal(metrics_result_kind("", 0), METRICS_RES_ERROR);
    assert_int_equal(metrics_result_kind("Success", 7), METRICS_RES_ERROR);
    assert_int_equal(metrics_result_kind("sucXess", 7), METRICS_RES_ERROR);
    assert_int_equal(metrics_result_kind("crashed", 7), METRICS_RES_ERROR);
    assert_int_equal(metrics_result_kind("k", 1), METRICS_RES_ERROR);
}

/* The branch-free moving average equals avg += (t - avg) / 8 rounded towards the old
 * average, computed on each side as before, over rising and falling values. */
static void
test_metrics_avg_update(void **state)
{
    (void)state;
    uint64_t avg = 0, ref = 0;
    bool has = false;
    metrics_avg_update(&avg, &has, 1000);
    assert_true(has);
    assert_int_equal(avg, 1000);
    ref = 1000;
    static const uint64_t t[] = {1000, 1007, 1008, 993, 0, 5, 3600000, 3599999, 1, 1, 1, 1,
                                 1ull << 40, 7, 8, 9};
    for (int r = 0; r < 50; r++)
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            ref = t[i] >= ref ? ref + (t[i] - ref) / 8 : ref - (ref - t[i]) / 8;
            metrics_avg_update(&avg, &has, t[i]);
            assert_int_equal(avg, ref);
        }
}

/* run_tool writes text to a file and runs "pre FILE post"; returns its exit status and
 * its output in out. */
static int
run_tool(const char *text, const char *pre, const char *post, char *out, size_t outlen)
{
    char path[] = "/tmp/ing-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    char line[1024];
    snprintf(line, sizeof(line), "%s %s %s", pre, path, post);
    FILE *p = popen(line, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, outlen - 1, p);
    out[got] = 0;
    int st = pclose(p);
    unlink(path);
    return st;
}

static void
test_metrics_real_parsers(void **state)
{
    (void)state;
    struct metrics_snap s;
    snap_fill(&s, 150, 100);
    char *t = render(&s);
    static char out[1 << 16];
    /* python3-prometheus-client: every family, the samples we check. */
    int st = run_tool(t,
                      "/usr/bin/python3 -c '"
                      "import sys\n"
                      "from prometheus_client.parser import text_string_to_metric_families as p\n"
                      "fams = list(p(open(sys.argv[1]).read()))\n"
                      "d = {(s.name, tuple(sorted(s.labels.items()))): s.value "
                      "for f in fams for s in f.samples}\n"
                      "print(len(fams))\n"
                      "print(d[(\"inginious_jobs_submitted_total\", ())])\n"
                      "print(d[(\"inginious_jobs_waiting\", ((\"environment\", \"other\"), "
                      "(\"environment_type\", \"other\")))])\n"
                      "print(d[(\"inginious_job_run_seconds_count\", "
                      "((\"environment_type\", \"we\\\"ird\\\\\\n\"),))])\n"
                      "print(d[(\"inginious_job_wait_seconds_sum\", "
                      "((\"environment_type\", \"docker\"),))])\n"
                      "'", "2>&1", out, sizeof(out));
    if (st != 0)
        fail_msg("prometheus_client refused the exposition:\n%s", out);
    int nfam = 0;
    double sub = 0, other = 0, weird = -1, wsum = 0;
    assert_int_equal(sscanf(out, "%d %lf %lf %lf %lf", &nfam, &sub, &other, &weird, &wsum), 5);
    assert_true(nfam >= 30);
    assert_true(sub == 10.0 && other == 1275.0 && weird == 0.0);
    assert_true(wsum > 1.500004 && wsum < 1.500006);
    /* promtool check metrics: the format and Prometheus' naming conventions. */
    st = run_tool(t, "promtool check metrics <", "2>&1", out, sizeof(out));
    if (st != 0)
        fail_msg("promtool check metrics:\n%s", out);
    free(t);
}


/* The journal's family (--journal): present only with a journal, HELP and TYPE for each,
 * the fsync histogram's buckets cumulative; accepted by both real parsers. */
static void
test_metrics_journal(void **state)
{
    (void)state;
    struct metrics_snap s;
    snap_fill(&s, 3, 100);
    char *t = render(&s);
    assert_null(strstr(t, "inginious_journal_"));
    free(t);
    static struct metrics_hist fs;
    memset(&fs, 0, sizeof(fs));
    metrics_hist_observe(&fs, 80);   /* <= 100 us */
    metrics_hist_observe(&fs, 900);  /* <= 1 ms */
    metrics_hist_observe(&fs, 4000); /* <= 10 ms */
    struct metrics_journal jm = {.bytes = 279225440,
                                 .live_bytes = 1000,
                                 .segments = 5,
                                 .compactions = 7,
                                 .fsyncs = 3,
                                 .ok = true,
                                 .fsync = &fs};
    s.journal = &jm;
    t = render(&s);
    has(t, "# TYPE inginious_journal_bytes gauge");
    has(t, "inginious_journal_bytes 279225440");
    has(t, "inginious_journal_live_bytes 1000");
    has(t, "inginious_journal_segments 5");
    has(t, "# TYPE inginious_journal_compactions_total counter");
    has(t, "inginious_journal_compactions_total 7");
    has(t, "inginious_journal_fsyncs_total 3");
    has(t, "inginious_journal_available 1");
    has(t, "# HELP inginious_journal_fsync_seconds Latency of each fdatasync of the journal.");
    has(t, "# TYPE inginious_journal_fsync_seconds histogram");
    has(t, "inginious_journal_fsync_seconds_bucket{le=\"0.000010\"} 0");
    has(t, "inginious_journal_fsync_seconds_bucket{le=\"0.000100\"} 1");
    has(t, "inginious_journal_fsync_seconds_bucket{le=\"0.001000\"} 2");
    has(t, "inginious_journal_fsync_seconds_bucket{le=\"0.010000\"} 3");
    has(t, "inginious_journal_fsync_seconds_bucket{le=\"+Inf\"} 3");
    has(t, "inginious_journal_fsync_seconds_sum 0.004980");
    has(t, "inginious_journal_fsync_seconds_count 3");
    static char out[1 << 16];
    int st = run_tool(t,
                      "/usr/bin/python3 -c '"
                      "import sys\n"
                      "from prometheus_client.parser import text_string_to_metric_families as p\n"
                      "f = {f.name: f for f in p(open(sys.argv[1]).read())}\n"
                      "print(f[\"inginious_journal_fsync_seconds\"].type,"
                      " f[\"inginious_journal_compactions\"].type,"
                      " f[\"inginious_journal_bytes\"].samples[0].value)\n"
                      "'", "2>&1", out, sizeof(out));
    if (st != 0)
        fail_msg("prometheus_client refused the exposition:\n%s", out);
    assert_string_equal(out, "histogram counter 279225440.0\n");
    st = run_tool(t, "promtool check metrics <", "2>&1", out, sizeof(out));
    if (st != 0)
        fail_msg("promtool check metrics:\n%s", out);
    free(t);
}

static void
test_metrics_render_time(void **state)
{
    (void)state;
    /* 100 environments (of 200: the rest summed), 1,000 agents and 4,000 slots. */
    struct metrics_snap s;
    snap_fill(&s, 200, 100);
    struct buf b;
    buf_init(&b);
    double best = 1e9;
    for (int i = 0; i < 50; i++) {
        struct timespec a, z;
        b.rpos = b.wpos = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(metrics_render(&s, &b), 0);
        metrics_proc_read(&s.proc, 0);
        clock_gettime(CLOCK_MONOTONIC, &z);
        double us = (double)(z.tv_sec - a.tv_sec) * 1e6 + (double)(z.tv_nsec - a.tv_nsec) / 1e3;
        if (us < best)
            best = us;
    }
    print_message("metrics: %zu bytes built in %.1f us (best of 50)\n", buf_len(&b), best);
    const char *slow = getenv("ING_SLOW");
    double limit = 1000.0 * (slow != NULL && atoi(slow) > 0 ? atoi(slow) * 5 : 1);
#if defined(ING_SAN)
    limit *= 5;
#endif
    assert_true(best < limit);
    buf_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_values),
        cmocka_unit_test(test_metrics_bounded_envs),
        cmocka_unit_test(test_metrics_fair_keys),
        cmocka_unit_test(test_metrics_escape_and_kinds),
        cmocka_unit_test(test_metrics_bucket_search),
        cmocka_unit_test(test_metrics_result_kinds_all),
        cmocka_unit_test(test_metrics_avg_update),
        cmocka_unit_test(test_metrics_real_parsers),
        cmocka_unit_test(test_metrics_journal),
        cmocka_unit_test(test_metrics_render_time),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
