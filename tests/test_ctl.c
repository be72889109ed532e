/* SPDX-License-Identifier: MIT */
/* test_ctl.c: inginious-ctl end to end. The command runs as a child process with pipes; the
 * backend is a child too; the agent is a scripted agent of the agent library in this
 * process, spun while the command runs (libtest.h). */
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

#include "inginious/client.h"
#include "inginious/json.h"
#include "inginious/mp.h"
#include "support/libtest.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)
#define MAX_ARGS 40

/* ctl_at runs inginious-ctl --backend <the backend> ARGS... (NULL-ended; with_backend false:
 * no --backend) and returns its exit code; its output stays in w->proc. */
static int
ctl_v(struct lt_world *w, bool with_backend, const char *const *env, va_list ap)
{
    char bin[LT_STR];
    char *argv[MAX_ARGS];
    size_t n = 0;
    const char *a;

    snprintf(bin, sizeof(bin), "%s/inginious-ctl", lt_build());
    argv[n++] = bin;
    if (with_backend) {
        argv[n++] = "--backend";
        argv[n++] = w->client_addr;
    }
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS - 1)
        argv[n++] = (char *)a;
    argv[n] = NULL;
    lt_run(w, argv, env);
    return lt_proc_wait(w);
}

static int ctl(struct lt_world *w, ...) __attribute__((sentinel));

static int
ctl(struct lt_world *w, ...)
{
    va_list ap;
    int rc;

    va_start(ap, w);
    rc = ctl_v(w, true, NULL, ap);
    va_end(ap);
    return rc;
}

static int ctl_env(struct lt_world *w, const char *const *env, ...) __attribute__((sentinel));

static int
ctl_env(struct lt_world *w, const char *const *env, ...)
{
    va_list ap;
    int rc;

    va_start(ap, env);
    rc = ctl_v(w, false, env, ap);
    va_end(ap);
    return rc;
}

/* expect_rc checks the exit code, printing the child's output when it differs. */
static void
expect_rc(struct lt_world *w, int got, int want)
{
    if (got != want)
        fail_msg("inginious-ctl exited %d, want %d\nstdout:\n%s\nstderr:\n%s", got, want,
                 w->proc->out, w->proc->err);
}

static void
out_has(struct lt_world *w, const char *needle)
{
    if (strstr(w->proc->out, needle) == NULL)
        fail_msg("stdout lacks \"%s\":\n%s\nstderr:\n%s", needle, w->proc->out, w->proc->err);
}

static void
err_has(struct lt_world *w, const char *needle)
{
    if (strstr(w->proc->err, needle) == NULL)
        fail_msg("stderr lacks \"%s\":\n%s", needle, w->proc->err);
}

/* A parsed JSON document. */
struct doc {
    struct ing_mp_writer mp;
};

static void
doc_parse(struct doc *d, const char *text, size_t len)
{
    struct ing_json_error err;

    ing_mp_writer_init_dyn(&d->mp);
    if (ing_json_to_mp(text, len, &d->mp, &err) != 0)
        fail_msg("not JSON (line %u, column %u: %s):\n%.*s", err.line, err.column, err.msg,
                 (int)len, text);
}

/* doc_is checks that the value at the key path (NULL-ended) is the JSON value want. */
static void doc_is(struct doc *d, const char *want, ...) __attribute__((sentinel));

static void
doc_is(struct doc *d, const char *want, ...)
{
    const char *keys[8];
    size_t n = 0;
    const uint8_t *val;
    size_t vlen;
    va_list ap;
    struct ing_mp_writer j;

    va_start(ap, want);
    while (n < 8 && (keys[n] = va_arg(ap, const char *)) != NULL)
        n++;
    va_end(ap);
    if (ing_mp_path(d->mp.buf, d->mp.len, keys, n, &val, &vlen) != 0)
        fail_msg("no value at %s%s%s", keys[0], n > 1 ? "." : "", n > 1 ? keys[1] : "");
    if (!lt_mp_eq_json(val, vlen, want)) {
        ing_mp_writer_init_dyn(&j);
        ing_mp_to_json(val, vlen, &j, 0);
        fail_msg("%s: %.*s, want %s", keys[n - 1], (int)j.len, (const char *)j.buf, want);
    }
}

static void
doc_fini(struct doc *d)
{
    ing_mp_writer_fini(&d->mp);
}

/* world starts a backend and a scripted agent offering docker/default, docker/python3. */
static struct lt_agent *
world(struct lt_world *w)
{
    struct lt_agent *ag;

    lt_start(w, NULL, NULL, NULL);
    ag = lt_agent_new(w, "ctl-agent", 2, true, "docker/default", "docker/python3", NULL);
    return ag;
}

/* ------------------------------------------------------------------------------------------ */

static void
test_ctl_envs(void **state)
{
    struct lt_world *w = *state;
    struct doc d;

    lt_start(w, NULL, NULL, NULL);
    expect_rc(w, ctl(w, "envs", NULL), 0);
    out_has(w, "no environments");
    lt_agent_new(w, "ctl-agent", 2, true, "docker/default", "docker/python3", "mcq/mcq", NULL);
    expect_rc(w, ctl(w, "envs", NULL), 0);
    out_has(w, "TYPE");
    out_has(w, "docker");
    out_has(w, " default python3\n");
    out_has(w, " mcq\n");
    expect_rc(w, ctl(w, "--json", "envs", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "[\"default\", \"python3\"]", "docker", NULL);
    doc_is(&d, "[\"mcq\"]", "mcq", NULL);
    doc_fini(&d);
    expect_rc(w, ctl(w, "envs", "--json", NULL), 0); /* --json after the command too */
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_fini(&d);
    lt_pass(w);
}

static void
test_ctl_submit_wait(void **state)
{
    struct lt_world *w = *state;

    world(w);
    expect_rc(w, ctl(w, "submit", "--wait", "--job-id", "s-ok", NULL), 0);
    out_has(w, "job: s-ok\n");
    out_has(w, "result: success\n");
    out_has(w, "grade: 100\n");
    out_has(w, "text: " LT_OK_TEXT "\n");
    out_has(w, "  q1: success: ok\n");
    out_has(w, "tests: {\"t\":1}\n");
    out_has(w, "custom: {\"c\":\"x\"}\n");
    out_has(w, "state: " LT_OK_STATE "\n");
    out_has(w, "archive: 4 bytes\n");
    out_has(w, "stdout:\nout\n");
    out_has(w, "stderr: (empty)\n");

    /* a failed job: exit 1, still printed */
    expect_rc(w, ctl(w, "submit", "--wait", "--input", "{\"do\": \"fail\"}", NULL), 1);
    out_has(w, "result: failed\n");
    out_has(w, "grade: 25\n");
    out_has(w, "  q1: failed: expected 2\n");
    out_has(w, "archive: (nil)\n");
    out_has(w, "stdout: (nil)\n");
    out_has(w, "stderr:\ntrace\n");
    lt_pass(w);
}

static void
test_ctl_submit_json(void **state)
{
    struct lt_world *w = *state;
    struct doc d;

    world(w);
    expect_rc(w, ctl(w, "--json", "submit", "--wait", "--job-id", "s-json", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"s-json\"", "job_id", NULL);
    doc_is(&d, "\"success\"", "kind", NULL);
    doc_is(&d, "\"" LT_OK_TEXT "\"", "text", NULL);
    doc_is(&d, "100.0", "grade", NULL);
    doc_is(&d, "{\"q1\": [\"success\", \"ok\"]}", "problems", NULL);
    doc_is(&d, "{\"t\": 1}", "tests", NULL);
    doc_is(&d, "{\"c\": \"x\"}", "custom", NULL);
    doc_is(&d, "\"" LT_OK_STATE "\"", "state", NULL);
    doc_is(&d, "\"H4sIAA==\"", "archive", NULL); /* base64 of 1f 8b 08 00 */
    doc_is(&d, "\"out\\n\"", "stdout", NULL);
    doc_is(&d, "\"\"", "stderr", NULL);
    doc_is(&d, "false", "lost", NULL);
    doc_fini(&d);

    expect_rc(w, ctl(w, "submit", "--json", "--wait", "--input", "{\"do\": \"nil\"}", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "null", "archive", NULL);
    doc_is(&d, "null", "stdout", NULL);
    doc_is(&d, "null", "stderr", NULL);
    doc_fini(&d);
    lt_pass(w);
}

/* submit --ack (proto.md 7.8): the id is printed once the backend acknowledged the job
 * (its journal record synced under --fsync always: it survives kill -9); a refused job is
 * reported, exit 1; --ack --wait prints the result as --wait does. */
static void
test_ctl_submit_ack(void **state)
{
    struct lt_world *w = *state;
    char jdir[LT_STR + 16];

    snprintf(jdir, sizeof(jdir), "%s/journal", lt_dir(w));
    lt_start(w, NULL, NULL, "--journal", jdir, "--fsync", "always", "--orphan-timeout", "0",
             NULL);
    expect_rc(w, ctl(w, "submit", "--ack", "--job-id", "k1", NULL), 0);
    out_has(w, "k1\n");
    expect_rc(w, ctl(w, "submit", "--ack", "--job-id", "k1", NULL), 1);
    err_has(w, "job k1 refused: crash: Duplicate job id");
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    struct lt_agent *ag = lt_agent_new(w, "A", 1, true, "docker/default", NULL);
    lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "k1");
    expect_rc(w, ctl(w, "--json", "submit", "--ack", "--wait", "--job-id", "k2", NULL), 0);
    struct doc d;
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"k2\"", "job_id", NULL);
    doc_is(&d, "\"success\"", "kind", NULL);
    doc_fini(&d);
    lt_pass(w);
}

/* submit --session (a connection that only submits: HOLD, proto.md 7.9) of a job the backend
 * refuses (its id is another session's job): the refusal reaches it at once, reported, exit
 * 1 (it was kept for the session instead: submit waited for an answer until --timeout,
 * and the session's next wait printed a crash for a job it never held). */
static void
test_ctl_session_submit_refused(void **state)
{
    struct lt_world *w = *state;
    char sa[LT_STR + 16], sb[LT_STR + 16];

    snprintf(sa, sizeof(sa), "%s/session-a", lt_dir(w));
    snprintf(sb, sizeof(sb), "%s/session-b", lt_dir(w));
    lt_start(w, NULL, NULL, "--orphan-timeout", "0", NULL);
    expect_rc(w, ctl(w, "--session", sa, "submit", "--job-id", "dupe", NULL), 0);
    expect_rc(w, ctl(w, "--session", sb, "submit", "--job-id", "dupe", NULL), 1);
    err_has(w, "job dupe refused: crash: Duplicate job id");
    struct lt_agent *ag = lt_agent_new(w, "A", 1, true, "docker/default", NULL);
    expect_rc(w, ctl(w, "--session", sb, "wait", NULL), 0); /* nothing kept for b */
    assert_string_equal(w->proc->out, "");
    expect_rc(w, ctl(w, "--session", sa, "wait", NULL), 0);
    out_has(w, "job: dupe\nresult: success\n");
    (void)ag;
    lt_pass(w);
}

/* The example, smaller: submit jobs with --session and no agent, kill -9 the
 * backend, restart it on its journal, start an agent: wait prints each result once (one
 * JSON object a line) and exits 0; again, it has nothing to wait for; a failed job makes
 * it exit 1. */
static void
test_ctl_session_wait(void **state)
{
    struct lt_world *w = *state;
    char jdir[LT_STR + 16], sfile[LT_STR + 16], id[32], want[40];
    int n = lt_slow() > 1 ? 10 : 50;

    snprintf(jdir, sizeof(jdir), "%s/journal", lt_dir(w));
    snprintf(sfile, sizeof(sfile), "%s/session", lt_dir(w));
    lt_start(w, NULL, NULL, "--journal", jdir, "--orphan-timeout", "0", NULL);
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "w%d", i);
        expect_rc(w, ctl(w, "--session", sfile, "submit", "--job-id", id, NULL), 0);
        snprintf(want, sizeof(want), "%s\n", id);
        assert_string_equal(w->proc->out, want);
    }
    FILE *f = fopen(sfile, "r");
    char text[64] = "";
    assert_non_null(f);
    assert_non_null(fgets(text, sizeof(text), f));
    fclose(f);
    assert_int_equal(strlen(text), 33);
    assert_int_equal(strspn(text, "0123456789abcdef"), 32);
    lt_kill_backend(w, SIGKILL);
    lt_restart(w);
    struct lt_agent *ag = lt_agent_new(w, "A", 4, true, "docker/default", NULL);
    expect_rc(w, ctl(w, "--session", sfile, "--json", "wait", NULL), 0);
    int lines = 0;
    for (const char *p = w->proc->out; *p != '\0'; p++)
        lines += *p == '\n';
    assert_int_equal(lines, n);
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "\"job_id\":\"w%d\"", i);
        const char *at = strstr(w->proc->out, id);
        if (at == NULL || strstr(at + 1, id) != NULL)
            fail_msg("w%d is not printed exactly once:\n%s", i, w->proc->out);
    }
    if (strstr(w->proc->out, "\"kind\":\"success\"") == NULL)
        fail_msg("no success printed:\n%s", w->proc->out);
    expect_rc(w, ctl(w, "--session", sfile, "wait", NULL), 0); /* nothing pending */
    assert_string_equal(w->proc->out, "");
    expect_rc(w, ctl(w, "--session", sfile, "submit", "--job-id", "wf", "--input",
                     "{\"do\": \"fail\"}", NULL),
              0);
    expect_rc(w, ctl(w, "--session", sfile, "wait", NULL), 1);
    out_has(w, "job: wf\nresult: failed\n");
    expect_rc(w, ctl(w, "wait", NULL), 2); /* no --session */
    (void)ag;
    lt_pass(w);
}

/* Every job option reaches the agent: the "echo" script sends them back. */
static void
test_ctl_submit_options(void **state)
{
    struct lt_world *w = *state;
    struct lt_agent *ag;
    struct lt_aev *a;
    struct doc d;
    char path[LT_STR + 32];
    FILE *f;

    ag = world(w);
    snprintf(path, sizeof(path), "%s/problems.json", w->dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\n  \"q1\": {\"type\": \"code\"}\n}\n", f);
    fclose(f);
    char at_path[LT_STR + 40];
    snprintf(at_path, sizeof(at_path), "@%s", path);
    expect_rc(w,
              ctl(w, "--json", "submit", "--wait", "--job-id", "s-opt", "--env-type", "docker",
                  "--env", "python3", "--priority", "-3", "--course", "LINFO1101", "--task",
                  "hello", "--input", "{\"do\": \"echo\", \"@state\": \"s1\", \"q1\": \"x\"}",
                  "--params", "{\"limits\": {\"time\": 30}}", "--problems", at_path, "--debug",
                  "ssh", "--launcher", "the-launcher", NULL),
              0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"LINFO1101|hello|docker|python3|2\"", "text", NULL);
    doc_is(&d, "{\"q1\": {\"type\": \"code\"}}", "problems", NULL);
    doc_is(&d, "{\"do\": \"echo\", \"@state\": \"s1\", \"q1\": \"x\"}", "tests", NULL);
    doc_is(&d, "{\"limits\": {\"time\": 30}}", "custom", NULL);
    doc_is(&d, "\"s1\"", "state", NULL);
    doc_fini(&d);
    a = lt_expect_aev(w, ag, ING_AGENT_EV_JOB, "s-opt");
    assert_int_equal(a->job.debug, ING_DEBUG_SSH);

    /* defaults: docker/default, nil course and task, debug off, empty maps */
    expect_rc(w,
              ctl(w, "--json", "submit", "--wait", "--job-id", "s-def", "--input",
                  "{\"do\": \"echo\"}", "--debug", NULL),
              0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"<nil>|<nil>|docker|default|1\"", "text", NULL);
    doc_is(&d, "{}", "problems", NULL);
    doc_is(&d, "{}", "custom", NULL);
    doc_fini(&d);
    expect_rc(
        w,
        ctl(w, "--json", "submit", "--wait", "--input", "{\"do\": \"echo\"}", "--debug=ssh", NULL),
        0);
    out_has(w, "|2\"");
    lt_pass(w);
}

/* Without --wait: the job id at once (a UUID4 by default) and exit 0 at once; the job goes on. */
static void
test_ctl_submit_no_wait(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_cev *e;

    world(w);
    expect_rc(w, ctl(w, "submit", NULL), 0);
    assert_int_equal(w->proc->out_len, 37);
    assert_int_equal(w->proc->out[14], '4');
    assert_int_equal(w->proc->out[36], '\n');
    /* a job refused by the backend still "ends": the id is printed, the kind is not judged */
    cl = lt_client_new(w, NULL);
    struct ing_client_job j = {.job_id = "taken",
                               .environment_type = "docker",
                               .environment = "default",
                               .inputdata = lt_mp(w, "{\"do\":\"hang\"}")};
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "taken");
    expect_rc(w, ctl(w, "submit", "--job-id", "taken", "--json", NULL), 0);
    out_has(w, "{\"job_id\":\"taken\"}\n");
    assert_int_equal(ing_client_kill(cl->c, "taken"), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "taken");
    assert_false(e->lost);
    /* Fire and forget: ctl exits at once, the job keeps running (a detached process holds
     * the connection) until it is killed. */
    expect_rc(w, ctl(w, "submit", "--job-id", "ff", "--input", "{\"do\":\"hang\"}", NULL), 0);
    out_has(w, "ff\n");
    expect_rc(w, ctl(w, "--json", "queue", NULL), 0);
    out_has(w, "\"ff\"");
    expect_rc(w, ctl(w, "kill", "ff", NULL), 0);
    lt_pass(w);
}

static void
test_ctl_unreachable(void **state)
{
    struct lt_world *w = *state;
    char addr[LT_STR + 32];

    lt_start(w, NULL, NULL, NULL); /* only for its directory */
    snprintf(addr, sizeof(addr), "ipc://%s/nobody.sock", w->dir);
    expect_rc(w, ctl(w, "--backend", addr, "ping", NULL), 1);
    err_has(w, "cannot connect to the backend at ipc://");
    err_has(w, "No such file or directory");
    expect_rc(w, ctl(w, "--backend", w->agent_addr, "envs", NULL), 1); /* wrong endpoint */
    err_has(w, "ROLE");
    expect_rc(w, ctl(w, "--backend", "tcp://127.0.0.1:1", "submit", "--wait", NULL), 1);
    err_has(w, "Connection refused");
    expect_rc(w, ctl(w, "--backend", "nonsense", "queue", NULL), 2);
    lt_pass(w);
}

static void
test_ctl_usage_errors(void **state)
{
    struct lt_world *w = *state;

    lt_start(w, NULL, NULL, NULL);
    expect_rc(w, ctl(w, NULL), 2);
    err_has(w, "missing COMMAND");
    expect_rc(w, ctl(w, "frobnicate", NULL), 2);
    err_has(w, "unknown command 'frobnicate'");
    expect_rc(w, ctl(w, "--bogus", "ping", NULL), 2);
    expect_rc(w, ctl(w, "ping", "--bogus", NULL), 2);
    expect_rc(w, ctl(w, "ping", "--count", "0", NULL), 2);
    expect_rc(w, ctl(w, "--timeout", "soon", "ping", NULL), 2);
    expect_rc(w, ctl(w, "kill", NULL), 2);
    expect_rc(w, ctl(w, "kill", "a", "b", NULL), 2);
    expect_rc(w, ctl(w, "queue", "extra", NULL), 2);
    expect_rc(w, ctl(w, "submit", "--priority", "high", NULL), 2);
    expect_rc(w, ctl(w, "submit", "--debug", "gdb", NULL), 2);
    expect_rc(w, ctl(w, "submit", "--count", "2", NULL), 2); /* watch only */
    expect_rc(w, ctl(w, "watch", "--wait", NULL), 2);        /* submit only */
    expect_rc(w, ctl(w, "submit", "--env", "", NULL), 2);
    /* bad JSON: the line and the column */
    expect_rc(w, ctl(w, "submit", "--input", "{\"a\": tru}", NULL), 2);
    err_has(w, "--input: bad JSON at line 1, column 10");
    expect_rc(w, ctl(w, "submit", "--params", "{\n  \"limits\": {\"time\" 30}\n}", NULL), 2);
    err_has(w, "--params: bad JSON at line 2, column 21: expected");
    expect_rc(w, ctl(w, "submit", "--problems", "@/nonexistent/file.json", NULL), 2);
    err_has(w, "cannot read /nonexistent/file.json");
    lt_pass(w);
}

static void
test_ctl_help(void **state)
{
    struct lt_world *w = *state;
    const char *cmds[] = {"envs", "submit", "kill", "queue", "watch", "ping", "wait"};

    lt_start(w, NULL, NULL, NULL);
    expect_rc(w, ctl(w, "--help", NULL), 0);
    out_has(w, "usage: inginious-ctl");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        expect_rc(w, ctl(w, cmds[i], "--help", NULL), 0);
        out_has(w, "usage: inginious-ctl [GLOBAL] ");
        out_has(w, cmds[i]);
    }
    expect_rc(w, ctl(w, "submit", "--help", NULL), 0);
    out_has(w, "--env-type TYPE     environment type (default docker)");
    expect_rc(w, ctl(w, "--version", NULL), 0);
    out_has(w, "inginious-ctl ");
    lt_pass(w);
}

static void
test_ctl_kill(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_cev *e;
    struct ing_client_job j = {
        .job_id = "to-kill", .environment_type = "docker", .environment = "default"};

    world(w);
    cl = lt_client_new(w, NULL);
    j.inputdata = lt_mp(w, "{\"do\": \"hang\", \"@state\": \"st\"}");
    assert_int_equal(ing_client_submit(cl->c, &j), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "to-kill");
    expect_rc(w, ctl(w, "kill", "to-kill", NULL), 0);
    out_has(w, "kill sent for to-kill");
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "to-kill");
    assert_string_equal(e->res.r.result_kind.p, "killed");
    assert_string_equal(e->res.r.state.p, "st");
    expect_rc(w, ctl(w, "kill", "--json", "nobody", NULL), 0);
    out_has(w, "{\"job_id\":\"nobody\",\"kill_sent\":true}");
    lt_pass(w);
}

static void
test_ctl_queue(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct ing_client_job j = {
        .environment_type = "docker", .environment = "default", .launcher = "frontend"};
    struct doc d;

    world(w);
    expect_rc(w, ctl(w, "queue", NULL), 0);
    out_has(w, "running: 0\n");
    out_has(w, "waiting: 0\n");
    cl = lt_client_new(w, NULL);
    j.inputdata = lt_mp(w, "{\"do\": \"hang\"}");
    j.course_id = "C";
    j.task_id = "T";
    j.environment_parameters = lt_mp(w, "{\"limits\": {\"time\": 60}}");
    const char *ids[] = {"q-1", "q-2", "q-3"};
    for (int i = 0; i < 3; i++) { /* two slots: q-3 waits */
        j.job_id = ids[i];
        assert_int_equal(ing_client_submit(cl->c, &j), 0);
        if (i < 2)
            lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, ids[i]);
    }
    lt_barrier(w, cl);
    expect_rc(w, ctl(w, "queue", NULL), 0);
    out_has(w, "running: 2\n");
    out_has(w, "waiting: 1\n");
    out_has(w, "q-1 ");
    out_has(w, "ctl-agent");
    out_has(w, "C/T");
    out_has(w, "frontend");
    out_has(w, "60s");
    expect_rc(w, ctl(w, "queue", "--json", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d,
           "[{\"job_id\": \"q-3\", \"is_current_client_job\": false, \"info\": \"C/T\", "
           "\"launcher\": \"frontend\", \"max_time\": 60}]",
           "waiting", NULL);
    doc_fini(&d);
    assert_non_null(strstr(w->proc->out, "\"running\":[{\"job_id\":\"q-1\""));
    assert_non_null(strstr(w->proc->out, "\"agent_friendly_name\":\"ctl-agent\""));
    lt_pass(w);
}

/* position: where a job is (ClientGetJobInfo), from the library and from inginious-ctl. */
static void
test_ctl_position(void **state)
{
    struct lt_world *w = *state;
    struct lt_client *cl;
    struct lt_cev *e;
    struct ing_client_job j = {.environment_type = "docker", .environment = "default"};
    struct doc d;

    world(w);
    cl = lt_client_new(w, NULL);
    j.inputdata = lt_mp(w, "{\"do\": \"hang\"}");
    const char *ids[] = {"p-1", "p-2", "p-3", "p-4", "p-5"};
    for (int i = 0; i < 5; i++) { /* two slots: p-3, p-4 and p-5 wait */
        j.job_id = ids[i];
        assert_int_equal(ing_client_submit(cl->c, &j), 0);
        if (i < 2)
            lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, ids[i]);
    }
    lt_barrier(w, cl);
    /* The library: the event carries the job id and the map. */
    assert_int_equal(ing_client_get_job_info(cl->c, "p-4"), 0);
    e = lt_expect_cev(w, cl, ING_CLIENT_EV_JOB_INFO, "p-4");
    (void)e;
    assert_int_equal(ing_client_get_job_info(cl->c, ""), -EINVAL);
    expect_rc(w, ctl(w, "position", "--json", "p-5", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"waiting\"", "state", NULL);
    doc_is(&d, "2", "position", NULL);
    doc_is(&d, "2", "slots", NULL);
    doc_is(&d, "\"default\"", "environment", NULL);
    doc_fini(&d);
    expect_rc(w, ctl(w, "position", "p-3", NULL), 0);
    out_has(w, "position     0 ");
    out_has(w, "state        waiting");
    expect_rc(w, ctl(w, "position", "--json", "p-1", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    doc_is(&d, "\"running\"", "state", NULL);
    doc_fini(&d);
    expect_rc(w, ctl(w, "position", "nobody", NULL), 1); /* unknown: exit status 1 */
    out_has(w, "state        unknown");
    expect_rc(w, ctl(w, "position", NULL), 2);
    lt_pass(w);
}

static void
test_ctl_ping(void **state)
{
    struct lt_world *w = *state;
    struct doc d;
    const uint8_t *val;
    size_t vlen;
    const char *key = "rtt_ms";
    struct ing_mp_obj o;

    lt_start(w, NULL, NULL, NULL);
    expect_rc(w, ctl(w, "ping", "--count", "3", NULL), 0);
    char *p = w->proc->out;
    int lines = 0;
    while ((p = strstr(p, "pong from ")) != NULL) {
        lines++;
        p++;
    }
    assert_int_equal(lines, 3);
    out_has(w, " ms\n");
    expect_rc(w, ctl(w, "--json", "ping", "--count", "2", NULL), 0);
    doc_parse(&d, w->proc->out, w->proc->out_len);
    assert_int_equal(ing_mp_path(d.mp.buf, d.mp.len, &key, 1, &val, &vlen), 0);
    assert_int_equal(ing_mp_read(&val, val + vlen, &o), 0);
    assert_int_equal(o.type, ING_MP_ARRAY);
    assert_int_equal(o.v.n, 2);
    doc_fini(&d);
    out_has(w, "\"server\":\"inginious-backend ");
    lt_pass(w);
}

static void
test_ctl_watch(void **state)
{
    struct lt_world *w = *state;
    char *line, *save = NULL;
    int done = 0, started = 0, ssh = 0, submitted = 0;

    world(w);
    expect_rc(w,
              ctl(w, "watch", "--count", "2", "--job-id", "wj", "--debug", "ssh", "--input",
                  "{\"do\": \"ssh\"}", NULL),
              0);
    out_has(w, "submitted wj-1");
    out_has(w, "submitted wj-2");
    out_has(w, "started   wj-1");
    out_has(w, "ssh       wj-2 ssh -p 2222 worker@127.0.0.1 password s3cr3t");
    out_has(w, "done      wj-1 success grade 100: " LT_OK_TEXT);

    /* JSON: one object per line */
    expect_rc(w, ctl(w, "--json", "watch", "--count", "3", "--input", "{\"do\": \"ssh\"}", NULL),
              0);
    for (line = strtok_r(w->proc->out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        struct doc d;
        doc_parse(&d, line, strlen(line));
        if (strstr(line, "\"event\":\"done\"") != NULL) {
            done++;
            doc_is(&d, "\"success\"", "result", "kind", NULL);
            doc_is(&d, "\"H4sIAA==\"", "result", "archive", NULL);
        } else if (strstr(line, "\"event\":\"ssh\"") != NULL) {
            ssh++;
            doc_is(&d, "2222", "port", NULL);
            doc_is(&d, "\"worker\"", "user", NULL);
        } else if (strstr(line, "\"event\":\"started\"") != NULL) {
            started++;
        } else if (strstr(line, "\"event\":\"submitted\"") != NULL) {
            submitted++;
        } else {
            fail_msg("unexpected line %s", line);
        }
        doc_fini(&d);
    }
    assert_int_equal(submitted, 3);
    assert_int_equal(started, 3);
    assert_int_equal(ssh, 3);
    assert_int_equal(done, 3);

    /* one job fails: exit 1 */
    expect_rc(w, ctl(w, "watch", "--input", "{\"do\": \"fail\"}", NULL), 1);
    out_has(w, "failed grade 25: Wrong answer");
    lt_pass(w);
}

/* $INGINIOUS_BACKEND is the default address; --timeout bounds a wait for a result. */
static void
test_ctl_env_and_timeout(void **state)
{
    struct lt_world *w = *state;
    char env[LT_STR + 64];
    const char *envs[] = {env, NULL};

    world(w);
    snprintf(env, sizeof(env), "INGINIOUS_BACKEND=%s", w->client_addr);
    expect_rc(w, ctl_env(w, envs, "ping", NULL), 0);
    out_has(w, "pong from ");
    out_has(w, w->client_addr);
    expect_rc(
        w,
        ctl(w, "--timeout", "300ms", "submit", "--wait", "--input", "{\"do\": \"nostart\"}", NULL),
        1);
    err_has(w, "timed out waiting for the job's result");
    lt_pass(w);
}

/* --secret-file for a backend that requires authentication. */
static void
test_ctl_secret(void **state)
{
    struct lt_world *w = *state;
    const char *good = lt_write_file(w, "good.secret", "pa55\n");
    const char *wrong = lt_write_file(w, "wrong.secret", "guess\n");

    lt_start(w, NULL, NULL, "--client-secret-file", good, NULL);
    expect_rc(w, ctl(w, "--secret-file", good, "ping", NULL), 0);
    out_has(w, "pong from ");
    expect_rc(w, ctl(w, "--secret-file", wrong, "ping", NULL), 1);
    err_has(w, "AUTH");
    expect_rc(w, ctl(w, "ping", NULL), 1);
    err_has(w, "requires authentication");
    expect_rc(w, ctl(w, "--secret-file", "/nonexistent/secret", "ping", NULL), 2);
    err_has(w, "cannot read /nonexistent/secret");
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_ctl_envs),
        CASE(test_ctl_submit_wait),
        CASE(test_ctl_session_wait),
        CASE(test_ctl_session_submit_refused),
        CASE(test_ctl_submit_json),
        CASE(test_ctl_submit_ack),
        CASE(test_ctl_submit_options),
        CASE(test_ctl_submit_no_wait),
        CASE(test_ctl_unreachable),
        CASE(test_ctl_usage_errors),
        CASE(test_ctl_help),
        CASE(test_ctl_kill),
        CASE(test_ctl_queue),
        CASE(test_ctl_position),
        CASE(test_ctl_ping),
        CASE(test_ctl_watch),
        CASE(test_ctl_env_and_timeout),
        CASE(test_ctl_secret),
    };

    return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
