/* SPDX-License-Identifier: MIT */
/* runfx.c: see runfx.h. */
#include "runfx.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inginious/json.h"

uint64_t
rf_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
rf_write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

int
rf_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

int
rf_dirs_make(struct rf_dirs *d, const char *name)
{
    snprintf(d->root, sizeof(d->root), "/tmp/%s-XXXXXX", name);
    if (mkdtemp(d->root) == NULL || chmod(d->root, 0755) < 0)
        return -1;
    snprintf(d->tasks, sizeof(d->tasks), "%s/tasks", d->root);
    snprintf(d->envs, sizeof(d->envs), "%s/env", d->root);
    snprintf(d->run, sizeof(d->run), "%s/run", d->envs);
    snprintf(d->work, sizeof(d->work), "%s/work", d->root);
    if (mkdir(d->tasks, 0755) < 0 || mkdir(d->envs, 0755) < 0 || mkdir(d->work, 0755) < 0)
        return -1;
    return 0;
}

void
rf_dirs_remove(const struct rf_dirs *d)
{
    nftw(d->root, rf_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct ing_view
rf_cview(const char *s)
{
    struct ing_view v = {s, s != NULL ? (uint32_t)strlen(s) : 0};

    return v;
}

struct ing_view
rf_json_view(struct ing_mp_writer *w, const char *json)
{
    struct ing_view v;

    ing_mp_writer_fini(w);
    ing_mp_writer_init_dyn(w);
    assert_int_equal(ing_json_to_mp(json, strlen(json), w, NULL), 0);
    v.p = (const char *)w->buf;
    v.len = (uint32_t)w->len;
    return v;
}

void
rf_set_job(struct ing_job_spec *job, struct ing_mp_writer w[3], const char *course,
           const char *task, const char *input, const char *params)
{
    memset(job, 0, sizeof(*job));
    job->job_id = rf_cview("job-1");
    job->course_id = rf_cview(course);
    job->task_id = rf_cview(task);
    job->environment_type = rf_cview("process");
    job->environment = rf_cview("default");
    job->inputdata = rf_json_view(&w[0], input != NULL ? input : "{\"@state\": \"s0\"}");
    job->environment_parameters = rf_json_view(&w[1], params != NULL ? params : "{}");
    job->task_problems = rf_json_view(&w[2], "{}");
}

void
rf_drive(struct runner_job *r, int max_ms)
{
    int fds[RUNNER_MAX_FDS];
    struct pollfd pfd[RUNNER_MAX_FDS];
    int n = runner_fds(r, fds), i, t;

    for (i = 0; i < n; i++) {
        pfd[i].fd = fds[i];
        pfd[i].events = POLLIN;
    }
    t = runner_timeout_ms(r, rf_now_ms());
    if (t < 0 || t > max_ms)
        t = max_ms;
    poll(pfd, (nfds_t)n, t);
    runner_process(r, rf_now_ms());
}

void
rf_wait_done(struct runner_job *r, uint64_t max_ms)
{
    uint64_t end = rf_now_ms() + max_ms;

    while (!runner_done(r)) {
        rf_drive(r, 200);
        assert_true(rf_now_ms() < end);
    }
}

char *
rf_str(struct ing_view v)
{
    static char buf[4][70000];
    static int k;
    char *s = buf[k++ % 4];
    size_t n = v.len < sizeof(buf[0]) - 1 ? v.len : sizeof(buf[0]) - 1;

    if (v.p == NULL)
        return strcpy(s, "<nil>");
    memcpy(s, v.p, n);
    s[n] = '\0';
    return s;
}

void
rf_check_kind(const struct ing_job_result *res, const char *kind)
{
    if (!ing_view_eq(res->result_kind, kind))
        fail_msg("kind %s (text \"%s\", stdout \"%s\", stderr \"%s\"), expected %s",
                 rf_str(res->result_kind), rf_str(res->result_text), rf_str(res->stdout_),
                 rf_str(res->stderr_), kind);
}
