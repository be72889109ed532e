/* SPDX-License-Identifier: MIT */
/* bench_metrics.c: what counting for /metrics (issue 17) costs per job on the hot path, against
 * the bound of 30 ns per job (bench/README.md, "Scraping /metrics"). One line per case:
 *   name iterations ns/op
 *
 * A job's lifecycle (submit -> dispatch -> started -> done) runs through four event functions,
 * each out of line (noinline) as the handlers of backend.c and server.c are, doing exactly the
 * counting those handlers do for that event, with the same types and functions
 * (src/metrics.h):
 *   dispatch (run_job, run_append): the wait-time histogram (metrics_hist_observe of
 *     (now - arrival) us), the environment's running count +1;
 *   started (be_agent_started_h): the started counter;
 *   done (be_agent_done_h, run_remove): the kill-outcome counter, metrics_result_kind of the
 *     result's kind and its counter, the run-time histogram, the environment's moving average
 *     of run times (env_run_time: the ETA of ClientGetJobInfo), the running count -1;
 *   the server, per job: three frames in and three out (frames and bytes counters: one read
 *     and one write per frame, the worst case).
 * The loop-time histogram is counted per event-loop iteration, not per job: make bench's
 * lifecycle run makes 0.015 iterations per job (4,410 for 290,624 jobs, read from /metrics),
 * so metrics_count_per_job leaves it out; metrics_count_per_job_loop3 adds three per job (one
 * iteration per inbound frame: one job at a time, the latency mode's case).
 * The same four functions with empty bodies (a compiler barrier each) are timed in the same
 * process, interleaved: the difference is the counting's cost, call overhead excluded.
 *
 * Data: 4,096 jobs drawn once (fixed seed) and cycled: wait and run times log-uniform over
 * 1 us .. 2 h (every histogram bucket reached; the bucket scan is linear, so the longer the
 * time the dearer), results 70 % success, 20 % failed, 5 % timeout, 5 % crash, one job in 16
 * being killed. Case *_worst: every time above the last bound (before the bucket search
 * was made branch-free, the longest scan; now it should cost the same).
 *
 * Timing: CLOCK_THREAD_CPUTIME_ID (CPU time of this thread: time slices given to other
 * processes on a loaded machine are not counted), REPS rounds of counting and baseline
 * alternated, each JOBS jobs; the line gives the median round. Runs in about 2 s. */
#include "common.h"

#include <math.h>

#include "metrics.h"

#define NJOBS 4096 /* the cycled job table (a power of two) */
#define JOBS 1000000ull
#define REPS 7

struct bjob {
    uint64_t arrival_ms, dispatch_ms, done_ms;
    const char *kind;
    size_t kind_len;
    bool killing;
    uint32_t frame_len;
};

/* What backend.c and server.c keep, as they keep it. */
struct bstate {
    struct metrics_core mc;
    struct metrics_server ms;
    struct metrics_type etype;
    uint64_t env_running; /* struct env's running */
    uint64_t run_avg_ms;  /* struct env's moving average */
    bool has_avg;
};

static volatile uint64_t sink;

static void
line_out(const char *name, uint64_t iters, uint64_t ns)
{
    printf("%s %llu %.1f\n", name, (unsigned long long)iters, (double)ns / (double)iters);
    fflush(stdout);
}

/* The counting of each event, out of line as the real handlers are. */
__attribute__((noinline)) static void
ev_dispatch(struct bstate *s, const struct bjob *j)
{
    metrics_hist_observe(&s->etype.wait, (j->dispatch_ms - j->arrival_ms) * 1000);
    s->env_running++;
}

__attribute__((noinline)) static void
ev_started(struct bstate *s, const struct bjob *j)
{
    (void)j;
    s->mc.started++;
}

__attribute__((noinline)) static void
ev_done(struct bstate *s, const struct bjob *j)
{
    s->mc.kills[METRICS_KILL_AGENT] += j->killing;
    enum metrics_result kind = metrics_result_kind(j->kind, j->kind_len);
    s->mc.done[kind]++;
    uint64_t run_ms = (uint32_t)j->done_ms - (uint32_t)j->dispatch_ms;
    metrics_hist_observe(&s->etype.run, run_ms * 1000);
    metrics_avg_update(&s->run_avg_ms, &s->has_avg, run_ms);
    s->env_running--;
}

/* One frame read and one written: the server's frame and byte counters. */
__attribute__((noinline)) static void
ev_frame_in(struct bstate *s, uint32_t n)
{
    s->ms.bytes_in += n;
    s->ms.frames_in++;
}

__attribute__((noinline)) static void
ev_frame_out(struct bstate *s, uint32_t n)
{
    s->ms.frames_out++;
    s->ms.bytes_out += n;
}

__attribute__((noinline)) static void
ev_loop(struct bstate *s, uint64_t us)
{
    metrics_hist_observe(&s->ms.loop, us);
}

/* The baseline: the same calls, nothing counted. */
__attribute__((noinline)) static void
nil_job(struct bstate *s, const struct bjob *j)
{
    __asm__ volatile("" : : "r"(s), "r"(j) : "memory");
}

__attribute__((noinline)) static void
nil_u(struct bstate *s, uint64_t v)
{
    __asm__ volatile("" : : "r"(s), "r"(v) : "memory");
}

/* One round: JOBS lifecycles, counted (count) or not. Returns its CPU ns. */
static uint64_t
round_ns(struct bstate *s, const struct bjob *jobs, bool count, bool loops)
{
    uint64_t t0 = bc_thread_cpu_ns();
    for (uint64_t i = 0; i < JOBS; i++) {
        const struct bjob *j = &jobs[i & (NJOBS - 1)];
        if (count) {
            ev_frame_in(s, j->frame_len); /* ClientNewJob */
            if (loops)
                ev_loop(s, j->dispatch_ms & 1023);
            ev_dispatch(s, j);
            ev_frame_out(s, j->frame_len); /* BackendNewJob */
            ev_frame_in(s, 32);            /* AgentJobStarted */
            if (loops)
                ev_loop(s, j->arrival_ms & 1023);
            ev_started(s, j);
            ev_frame_out(s, 32); /* BackendJobStarted */
            ev_frame_in(s, 96);  /* AgentJobDone */
            if (loops)
                ev_loop(s, j->done_ms & 1023);
            ev_done(s, j);
            ev_frame_out(s, 96); /* BackendJobDone */
        } else {
            nil_u(s, j->frame_len);
            if (loops)
                nil_u(s, j->dispatch_ms & 1023);
            nil_job(s, j);
            nil_u(s, j->frame_len);
            nil_u(s, 32);
            if (loops)
                nil_u(s, j->arrival_ms & 1023);
            nil_job(s, j);
            nil_u(s, 32);
            nil_u(s, 96);
            if (loops)
                nil_u(s, j->done_ms & 1023);
            nil_job(s, j);
            nil_u(s, 96);
        }
    }
    return bc_thread_cpu_ns() - t0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* log_uniform_ms: a time log-uniform over 1 us .. 2 h, in ms (0 below 1 ms). */
static uint64_t
log_uniform_ms(uint64_t *seed)
{
    double r = (double)(bc_rand(seed) >> 11) / 9007199254740992.0; /* [0, 1) */
    double us = pow(10.0, r * log10(7.2e9));
    return (uint64_t)(us / 1000.0);
}

static void
make_jobs(struct bjob *jobs, bool worst)
{
    static const char *const kinds[] = {"success", "failed", "timeout", "crash"};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < NJOBS; i++) {
        struct bjob *j = &jobs[i];
        uint64_t wait = worst ? 4000000 : log_uniform_ms(&seed);
        uint64_t run = worst ? 4000000 : log_uniform_ms(&seed);
        j->arrival_ms = 1000000 + (bc_rand(&seed) & 0xffff);
        j->dispatch_ms = j->arrival_ms + wait;
        j->done_ms = j->dispatch_ms + run;
        unsigned k = (unsigned)(bc_rand(&seed) % 100);
        j->kind = kinds[k < 70 ? 0 : k < 90 ? 1 : k < 95 ? 2 : 3];
        j->kind_len = strlen(j->kind);
        j->killing = (bc_rand(&seed) & 15) == 0;
        j->frame_len = 253;
    }
}

static void
run_case(const char *name, bool worst, bool loops)
{
    static struct bjob jobs[NJOBS];
    struct bstate s;
    memset(&s, 0, sizeof(s));
    make_jobs(jobs, worst);
    round_ns(&s, jobs, true, loops); /* warm-up */
    round_ns(&s, jobs, false, loops);
    uint64_t diff[REPS], with[REPS], base[REPS];
    for (int r = 0; r < REPS; r++) {
        with[r] = round_ns(&s, jobs, true, loops);
        base[r] = round_ns(&s, jobs, false, loops);
        diff[r] = with[r] > base[r] ? with[r] - base[r] : 0;
    }
    qsort(diff, REPS, sizeof(diff[0]), cmp_u64);
    qsort(with, REPS, sizeof(with[0]), cmp_u64);
    qsort(base, REPS, sizeof(base[0]), cmp_u64);
    char n2[96];
    line_out(name, JOBS, diff[REPS / 2]);
    snprintf(n2, sizeof(n2), "%s_calls_with", name);
    line_out(n2, JOBS, with[REPS / 2]);
    snprintf(n2, sizeof(n2), "%s_calls_without", name);
    line_out(n2, JOBS, base[REPS / 2]);
    /* The counters must have counted every job: a wrong count would be a bench bug. */
    if (s.mc.started != (uint64_t)(REPS + 1) * JOBS || s.ms.frames_in != 3 * s.mc.started ||
        s.etype.run.count != s.mc.started || s.env_running != 0) {
        fprintf(stderr, "bench_metrics: counters do not match the jobs run\n");
        exit(1);
    }
    sink += s.etype.wait.sum_us + s.ms.loop.count + s.run_avg_ms;
}

int
main(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: bench_metrics\n");
        return 2;
    }
    printf("# name iterations ns/op (metrics_count_per_job*: counting's CPU ns per job lifecycle)\n");
    run_case("metrics_count_per_job", false, false);
    run_case("metrics_count_per_job_worst", true, false);
    run_case("metrics_count_per_job_loop3", false, true);
    return 0;
}
