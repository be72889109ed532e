/* SPDX-License-Identifier: MIT */
/* test_runner.c: the grading engine (src/runner.c) with real processes: each test writes a
 * `run` script and task folders into a private temporary directory, runs one job to its
 * end (every wait bounded) and checks the result. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inginious/json.h"
#include "inginious/mp.h"
#include "runner.h"
#include "support/runfx.h"

#define WAIT_MS 15000 /* longest a job may take in these tests */

struct fx {
    struct rf_dirs d; /* root, tasks/, env/ (run), work/ */
    struct runner_opts opts;
    struct ing_mp_writer w[3]; /* inputdata, environment_parameters, task_problems */
    struct ing_job_spec job;
    struct runner_job *r;
    struct ing_job_result res;
};

static void
mkdir_p2(const char *a, const char *b)
{
    char p[512];

    snprintf(p, sizeof(p), "%s/%s", a, b);
    assert_int_equal(mkdir(p, 0755), 0);
}

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    if (rf_dirs_make(&f->d, "test_runner") < 0)
        return -1;
    f->opts.tasks_dir = f->d.tasks;
    f->opts.work_dir = f->d.work;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    size_t i;

    runner_free(f->r);
    for (i = 0; i < 3; i++)
        ing_mp_writer_fini(&f->w[i]);
    rf_dirs_remove(&f->d);
    free(f);
    return 0;
}

/* set_run writes the environment's run script (a /bin/sh script body). */
static void
set_run(struct fx *f, const char *body)
{
    char text[8192];

    snprintf(text, sizeof(text), "#!/bin/sh\n%s\n", body);
    rf_write_file(f->d.run, text, 0755);
}

/* add_task creates tasks/<course>/<task>/ with a file data.txt and a subdirectory. */
static void
add_task(struct fx *f, const char *course, const char *task)
{
    char c[400], t[500], p[600];

    snprintf(c, sizeof(c), "%s/%s", f->d.tasks, course);
    (void)mkdir(c, 0755);
    mkdir_p2(c, task);
    snprintf(t, sizeof(t), "%s/%s", c, task);
    snprintf(p, sizeof(p), "%s/data.txt", t);
    rf_write_file(p, "task data\n", 0644);
    mkdir_p2(t, "sub");
    snprintf(p, sizeof(p), "%s/sub/deep.txt", t);
    rf_write_file(p, "deep\n", 0644);
}

/* set_job fills the job spec: course/task NULL = nil. */
static void
set_job(struct fx *f, const char *course, const char *task, const char *input,
        const char *params)
{
    rf_set_job(&f->job, f->w, course, task, input, params);
}

/* run_job starts the job with the fixture's run file and waits for its result. */
static const struct ing_job_result *
run_job(struct fx *f)
{
    assert_int_equal(runner_start(&f->opts, f->d.run, &f->job, rf_now_ms(), &f->r), 0);
    assert_non_null(f->r);
    rf_wait_done(f->r, WAIT_MS);
    runner_result(f->r, &f->res);
    return &f->res;
}

/* dir_is_empty tells whether the work directory holds nothing. */
static bool
dir_is_empty(const struct fx *f)
{
    DIR *d = opendir(f->d.work);
    struct dirent *e;
    bool empty = true;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = false;
    }
    closedir(d);
    return empty;
}

/* work_dir_empty waits (up to 10 s) for the job folder to be removed: the runner removes
 * it in a background process so that a large folder does not block its caller. */
static bool
work_dir_empty(const struct fx *f)
{
    uint64_t end = rf_now_ms() + 10000;

    while (!dir_is_empty(f)) {
        struct pollfd none;

        if (rf_now_ms() >= end)
            return false;
        (void)poll(&none, 0, 5); /* a bounded retry period, not a wait for timing */
    }
    return true;
}

static void
test_runner_success(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    add_task(f, "c1", "t1");
    set_run(f, "echo graded; exit 0");
    set_job(f, "c1", "t1", NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_true(res->grade == 100.0);
    assert_true(ing_view_eq(res->job_id, "job-1"));
    assert_true(ing_view_eq(res->state, "s0"));
    assert_true(ing_view_eq(res->stdout_, "graded\n"));
    assert_true(ing_view_eq(res->stderr_, ""));
    assert_true(ing_view_eq(res->problems, "\x80") && ing_view_eq(res->tests, "\x80") &&
                ing_view_eq(res->custom, "\x80"));
    assert_null(res->archive.p);
    assert_true(work_dir_empty(f));
}

static void
test_runner_failed(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    set_run(f, "echo oops >&2; exit 3");
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "failed");
    assert_true(res->grade == 0.0);
    assert_non_null(strstr(rf_str(res->result_text), "status 3"));
    assert_true(ing_view_eq(res->stderr_, "oops\n"));
    assert_true(ing_view_eq(res->state, "s0"));
}

static void
test_runner_timeout_cpu(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;
    uint64_t t0 = rf_now_ms();

    set_run(f, "while :; do :; done");
    set_job(f, NULL, NULL, NULL, "{\"limits\": {\"time\": 1}}");
    res = run_job(f);
    rf_check_kind(res, "timeout");
    assert_non_null(strstr(rf_str(res->result_text), "CPU"));
    assert_true(ing_view_eq(res->state, "s0"));
    assert_true(rf_now_ms() - t0 < 4000);
}

static void
test_runner_timeout_wall(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;
    uint64_t t0 = rf_now_ms();

    /* The grader prints, then waits: the output before the kill is kept. */
    set_run(f, "echo before; sleep 30; echo after");
    set_job(f, NULL, NULL, NULL, "{\"limits\": {\"time\": 10, \"hard_time\": 0.5}}");
    res = run_job(f);
    rf_check_kind(res, "timeout");
    assert_non_null(strstr(rf_str(res->result_text), "wall-clock"));
    assert_true(ing_view_eq(res->stdout_, "before\n"));
    assert_true(rf_now_ms() - t0 < 3000);
    assert_true(work_dir_empty(f));
}

static void
test_runner_overflow(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    /* dash keeps a command substitution's output in memory and dies of SIGSEGV when an
     * allocation fails under RLIMIT_AS. */
    set_run(f, "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}");
    set_job(f, NULL, NULL, NULL, "{\"limits\": {\"time\": 10, \"memory\": 64}}");
    res = run_job(f);
    rf_check_kind(res, "overflow");
    assert_non_null(strstr(rf_str(res->result_text), "64 MiB"));
    assert_true(ing_view_eq(res->state, "s0"));
}

static bool
process_gone(pid_t pid)
{
    char path[64], buf[256];
    FILE *fp;
    char *p;
    bool gone;

    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return true;
    p = fgets(buf, sizeof(buf), fp);
    fclose(fp);
    p = p != NULL ? strrchr(buf, ')') : NULL;
    gone = p != NULL && (p[2] == 'Z' || p[2] == 'X');
    return gone;
}

static void
test_runner_kill(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;
    uint64_t t0;
    char pidtext[32] = "";
    char pidfile[400];
    pid_t bg;
    FILE *fp;

    /* A background process of the job must die with it: it records its pid in a file. */
    snprintf(pidfile, sizeof(pidfile), "%s/bg.pid", f->d.root);
    assert_int_equal(chmod(f->d.root, 0777), 0);
    {
        char body[1024];

        snprintf(body, sizeof(body), "sleep 60 & echo $! > %s; echo started; sleep 60",
                 pidfile);
        set_run(f, body);
    }
    set_job(f, NULL, NULL, "{\"@state\": \"keep\"}", NULL);
    assert_int_equal(runner_start(&f->opts, f->d.run, &f->job, rf_now_ms(), &f->r), 0);
    t0 = rf_now_ms();
    while (access(pidfile, R_OK) != 0 || pidtext[0] == '\0') {
        fp = fopen(pidfile, "r");
        if (fp != NULL) {
            if (fgets(pidtext, sizeof(pidtext), fp) == NULL)
                pidtext[0] = '\0';
            fclose(fp);
        }
        runner_process(f->r, rf_now_ms());
        assert_false(runner_done(f->r));
        assert_true(rf_now_ms() - t0 < 5000);
        usleep(10000);
    }
    bg = (pid_t)atoi(pidtext);
    assert_true(bg > 0);
    assert_true(runner_pid(f->r) > 0);
    runner_kill(f->r);
    rf_wait_done(f->r, WAIT_MS);
    runner_result(f->r, &f->res);
    res = &f->res;
    rf_check_kind(res, "killed");
    assert_true(ing_view_eq(res->state, "keep"));
    assert_true(ing_view_eq(res->stdout_, "started\n"));
    t0 = rf_now_ms();
    while (!process_gone(bg)) {
        assert_true(rf_now_ms() - t0 < 5000);
        usleep(10000);
    }
    assert_true(runner_pid(f->r) == 0);
}

static void
test_runner_output_truncated(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;
    const char *out;

    f->opts.output_limit = 1000;
    /* 5000 bytes on stdout; invalid UTF-8 on stderr. */
    set_run(f, "i=0; while [ $i -lt 50 ]; do "
               "printf '%099d\\n' 0; i=$((i+1)); done; printf 'a\\377b\\303' >&2");
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    out = rf_str(res->stdout_);
    assert_true(res->stdout_.len > 1000 && res->stdout_.len < 1100);
    assert_non_null(strstr(out, "\n[... 4000 bytes of output dropped]\n"));
    assert_true(ing_view_eq(res->stderr_, "a\xef\xbf\xbd"
                                          "b\xef\xbf\xbd"));
    assert_true(ing_mp_utf8_valid((const uint8_t *)res->stdout_.p, res->stdout_.len));
}

static void
test_runner_missing_task(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    set_run(f, "exit 0");
    set_job(f, "c1", "nope", NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "c1/nope not found"));
    assert_true(ing_view_eq(res->state, "s0"));
    assert_true(ing_view_eq(res->stdout_, "") && ing_view_eq(res->stderr_, ""));

    /* An id that is not one directory level is refused. */
    runner_free(f->r);
    f->r = NULL;
    set_job(f, "..", "t1", NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "Invalid course or task id"));
    assert_true(work_dir_empty(f));
}

static void
test_runner_run_not_executable(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    set_run(f, "exit 0");
    assert_int_equal(chmod(f->d.run, 0644), 0);
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "not executable"));

    runner_free(f->r);
    f->r = NULL;
    assert_int_equal(unlink(f->d.run), 0);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "missing"));

    /* No environment at all. */
    runner_free(f->r);
    f->r = NULL;
    assert_int_equal(runner_start(&f->opts, NULL, &f->job, rf_now_ms(), &f->r), 0);
    assert_true(runner_done(f->r));
    runner_result(f->r, &f->res);
    rf_check_kind(&f->res, "crash");
    assert_non_null(strstr(rf_str(f->res.result_text), "process/default is not available"));
    assert_true(ing_view_eq(f->res.state, "s0"));
}

static void
test_runner_exec_failure(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    /* Under valgrind (make valgrind sets ING_WRAPPER) a child whose execve fails is killed
     * by valgrind itself ("I can't recover from execve() failing") before it can report. */
    const char *wrapper = getenv("ING_WRAPPER");
    if (wrapper != NULL && wrapper[0] != '\0')
        skip();
    /* An executable that the kernel cannot run. */
    rf_write_file(f->d.run, "#!/nonexistent/interpreter\n", 0755);
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "execve failed"));
    assert_true(work_dir_empty(f));
}

static void
test_runner_feedback_invalid(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    set_run(f, "printf '{\"result\": \"success\",' > feedback.json");
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "not valid JSON"));
    assert_true(ing_view_eq(res->state, "s0"));

    runner_free(f->r);
    f->r = NULL;
    set_run(f, "echo '[1, 2]' > feedback.json");
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "not a JSON object"));

    runner_free(f->r);
    f->r = NULL;
    set_run(f, "echo '{\"grade\": \"high\"}' > feedback.json");
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "\"grade\" must be a number"));

    /* A symbolic link is not followed. */
    runner_free(f->r);
    f->r = NULL;
    set_run(f, "ln -s /etc/passwd feedback.json");
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "feedback.json"));
}

static void
test_runner_feedback_full(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;
    struct ing_mp_writer w;

    set_run(f, "cat > feedback.json <<'EOF'\n"
               "{\"result\": \"failed\", \"text\": \"Almost\", \"grade\": 87.5,\n"
               " \"problems\": {\"p1\": [\"success\", \"ok\"]}, \"tests\": {\"t\": 1},\n"
               " \"custom\": {\"c\": [true, null]}, \"state\": \"s1\"}\n"
               "EOF\n"
               "exit 0");
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "failed");
    assert_true(ing_view_eq(res->result_text, "Almost"));
    assert_true(res->grade == 87.5);
    assert_true(ing_view_eq(res->state, "s1"));
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(ing_mp_to_json((const uint8_t *)res->problems.p, res->problems.len, &w, 0),
                     0);
    assert_int_equal(ing_mp_to_json((const uint8_t *)res->tests.p, res->tests.len, &w, 0), 0);
    assert_int_equal(ing_mp_to_json((const uint8_t *)res->custom.p, res->custom.len, &w, 0), 0);
    assert_int_equal(ing_mp_put_raw(&w, "", 1), 0);
    assert_string_equal((const char *)w.buf, "{\"p1\":[\"success\",\"ok\"]}{\"t\":1}"
                                             "{\"c\":[true,null]}");
    ing_mp_writer_fini(&w);

    /* The array form of result; a missing grade follows the kind. */
    runner_free(f->r);
    f->r = NULL;
    set_run(f, "echo '{\"result\": [\"success\", \"Well done\"]}' > feedback.json; exit 1");
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_true(ing_view_eq(res->result_text, "Well done"));
    assert_true(res->grade == 100.0);

    /* No result: the exit status decides; a grade above 100 is clamped. */
    runner_free(f->r);
    f->r = NULL;
    set_run(f, "echo '{\"grade\": 250, \"text\": \"x\"}' > feedback.json; exit 2");
    res = run_job(f);
    rf_check_kind(res, "failed");
    assert_true(res->grade == 100.0);
    assert_true(ing_view_eq(res->result_text, "x"));
}

static void
test_runner_state_preserved(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    /* A feedback.json without state keeps @state. */
    set_run(f, "echo '{\"result\": \"error\"}' > feedback.json");
    set_job(f, NULL, NULL, "{\"@state\": \"st\\u00e9\"}", NULL);
    res = run_job(f);
    rf_check_kind(res, "error");
    assert_true(ing_view_eq(res->state, "st\xc3\xa9"));
    assert_true(res->grade == 0.0);

    /* No @state (or not a str): "". */
    runner_free(f->r);
    f->r = NULL;
    set_job(f, NULL, NULL, "{\"@state\": 3}", NULL);
    res = run_job(f);
    assert_true(ing_view_eq(res->state, ""));
}

static void
test_runner_input_json(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    add_task(f, "c1", "t1");
    set_run(f, "cat input.json; echo; cat; echo; cat data.txt sub/deep.txt;"
               "echo \"$INGINIOUS_JOB_ID $INGINIOUS_COURSE $INGINIOUS_TASK"
               " $INGINIOUS_ENV_TYPE $INGINIOUS_ENV $INGINIOUS_TIME_LIMIT"
               " $INGINIOUS_MEMORY_LIMIT\"; [ \"$PWD\" = \"$INGINIOUS_TASK_DIR\" ] && echo cwd;"
               "[ \"$HOME\" = \"$PWD\" ] && echo home; [ -f \"$INGINIOUS_INPUT\" ] && echo input");
    set_job(f, "c1", "t1", "{\"q1\": \"hello\", \"@state\": \"s\"}",
            "{\"limits\": {\"time\": 7, \"memory\": 200}}");
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_string_equal(rf_str(res->stdout_), "{\"q1\":\"hello\",\"@state\":\"s\"}\n"
                                           "{\"q1\":\"hello\",\"@state\":\"s\"}\n"
                                           "task data\ndeep\n"
                                           "job-1 c1 t1 process default 7 200\n"
                                           "cwd\nhome\ninput\n");
    /* The copy was private: the task folder is untouched. */
    {
        char p[600];

        snprintf(p, sizeof(p), "%s/c1/t1/input.json", f->d.tasks);
        assert_int_equal(access(p, F_OK), -1);
    }
}

static void
test_runner_taskless(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    set_run(f, "ls -A; echo \"[$INGINIOUS_COURSE][$INGINIOUS_TASK]\"");
    set_job(f, NULL, "t1", NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_string_equal(rf_str(res->stdout_), "input.json\n[][]\n");
}

static void
test_runner_user(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    if (geteuid() != 0)
        skip();
    /* As root, jobs run as nobody, in a folder nobody owns. */
    add_task(f, "c1", "t1");
    set_run(f, "id -u; stat -c %u . data.txt; touch new && echo writable");
    set_job(f, "c1", "t1", NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "success");
    assert_string_equal(rf_str(res->stdout_), "65534\n65534\n65534\nwritable\n");

    runner_free(f->r);
    f->r = NULL;
    f->opts.user = "no-such-user-here";
    res = run_job(f);
    rf_check_kind(res, "crash");
    assert_non_null(strstr(rf_str(res->result_text), "Unknown user"));
}

/* count_uid counts the processes (zombies included) of uid. */
static int
count_uid(uid_t uid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[300];
        struct stat st;

        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s", e->d_name);
        if (stat(path, &st) == 0 && st.st_uid == uid)
            n++;
    }
    closedir(d);
    return n;
}

static void
test_runner_nproc(void **state)
{
    struct fx *f = *state;
    const struct ing_job_result *res;

    if (geteuid() != 0 || count_uid(65534) != 0)
        skip();
    /* RLIMIT_NPROC counts the processes of the job's user: one is run itself. */
    f->opts.nproc = 1;
    set_run(f, "(true); echo forked");
    set_job(f, NULL, NULL, NULL, NULL);
    res = run_job(f);
    rf_check_kind(res, "failed");
    assert_true(ing_view_eq(res->stdout_, ""));
    assert_non_null(strstr(rf_str(res->stderr_), "fork"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: processes that earlier tests orphan would count against the limit. */
        cmocka_unit_test_setup_teardown(test_runner_nproc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_timeout_cpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_timeout_wall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_output_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_missing_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_run_not_executable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_exec_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_feedback_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_feedback_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_state_preserved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_input_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_taskless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_user, setup, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests_name("runner", tests, NULL, NULL);
}
