/* SPDX-License-Identifier: MIT */
/* bench_sandbox.c: what the sandbox of inginious-agent-process costs per job. Runs jobs
 * whose grader is a copy of `true` through the grading engine (src/runner.c), one at a
 * time, alternating sandbox on and off in the same run, and prints per mode the median,
 * the 90th percentile and jobs/s, then the median difference (setup + teardown of the
 * sandbox: namespaces, mounts, pivot_root, cgroups, seccomp, the tmpfs).
 *   bench_sandbox [JOBS]   (default 400 per mode; needs root, as the agent)
 * Each job is timed from runner_start to runner_done + runner_free (the folder removed). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"
#include "sandbox.h"

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* one_job runs one job to its end. Returns its duration in ms, or -1. */
static double
one_job(const struct runner_opts *o, const char *run, const struct ing_job_spec *job)
{
    struct runner_job *r;
    struct ing_job_result res;
    double t0 = now_ms();

    if (runner_start(o, run, job, (uint64_t)t0, &r) < 0)
        return -1;
    while (!runner_done(r)) {
        int fds[RUNNER_MAX_FDS], n = runner_fds(r, fds), t;
        struct pollfd p[RUNNER_MAX_FDS];

        for (int i = 0; i < n; i++) {
            p[i].fd = fds[i];
            p[i].events = POLLIN;
        }
        t = runner_timeout_ms(r, (uint64_t)now_ms());
        poll(p, (nfds_t)n, t < 0 || t > 100 ? 100 : t);
        runner_process(r, (uint64_t)now_ms());
        if (now_ms() - t0 > 10000) {
            runner_free(r);
            return -1;
        }
    }
    runner_result(r, &res);
    if (!ing_view_eq(res.result_kind, "success")) {
        fprintf(stderr, "bench_sandbox: a job ended %.*s: %.*s\n", (int)res.result_kind.len,
                res.result_kind.p, (int)res.result_text.len, res.result_text.p);
        runner_free(r);
        return -1;
    }
    runner_free(r);
    return now_ms() - t0;
}

static void
report(const char *name, double *v, int n, double total_ms)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    printf("%-12s jobs %d  median %.2f ms  p90 %.2f ms  %.0f jobs/s\n", name, n, v[n / 2],
           v[n * 9 / 10], n * 1000.0 / total_ms);
}

int
main(int argc, char **argv)
{
    static struct sandbox_host host;
    char dir[] = "/tmp/bench_sandbox-XXXXXX", run[64], why[512], buf[65536];
    struct runner_opts on, off;
    struct ing_job_spec job;
    int n = argc > 1 ? atoi(argv[1]) : 400, in, out;
    double *t_on, *t_off, tot_on = 0, tot_off = 0;
    ssize_t k;

    if (n < 10)
        n = 10;
    if (sandbox_probe(&host, why, sizeof(why)) < 0) {
        printf("bench_sandbox: skipped: the sandbox is refused here: %s\n", why);
        return 0;
    }
    if (mkdtemp(dir) == NULL || chmod(dir, 0755) < 0)
        return 1;
    snprintf(run, sizeof(run), "%s/true", dir);
    in = open("/bin/true", O_RDONLY | O_CLOEXEC);
    out = open(run, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (in < 0 || out < 0)
        return 1;
    while ((k = read(in, buf, sizeof(buf))) > 0) {
        if (write(out, buf, (size_t)k) != k)
            return 1;
    }
    close(in);
    close(out);
    memset(&off, 0, sizeof(off));
    on = off;
    on.sandbox = &host;
    memset(&job, 0, sizeof(job));
    job.job_id = (struct ing_view){"bench", 5};
    job.environment_type = (struct ing_view){"process", 7};
    job.environment = (struct ing_view){"true", 4};
    job.inputdata = (struct ing_view){"\x80", 1};
    job.environment_parameters = (struct ing_view){"\x80", 1};
    job.task_problems = (struct ing_view){"\x80", 1};
    t_on = calloc((size_t)n, sizeof(double));
    t_off = calloc((size_t)n, sizeof(double));
    if (t_on == NULL || t_off == NULL)
        return 1;
    for (int i = 0; i < n; i++) {
        t_off[i] = one_job(&off, run, &job);
        t_on[i] = one_job(&on, run, &job);
        if (t_on[i] < 0 || t_off[i] < 0)
            return 1;
        tot_on += t_on[i];
        tot_off += t_off[i];
    }
    report("sandbox off", t_off, n, tot_off);
    report("sandbox on", t_on, n, tot_on);
    printf("sandbox setup + teardown: %.2f ms per job (median difference)\n",
           t_on[n / 2] - t_off[n / 2]);
    unlink(run);
    rmdir(dir);
    free(t_on);
    free(t_off);
    return 0;
}
