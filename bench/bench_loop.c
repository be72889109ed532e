/* SPDX-License-Identifier: MIT */
/* bench_loop.c: the longest event-loop iteration of the server under load with 1,000,000
 * waiting jobs.
 *
 * The server runs in this process (srv_new, then srv_run_once in a loop, pinned to CPU 0) so
 * its iterations can be timed; the load runs in a forked child (pinned to CPU 1) with the
 * clients and agents of common.h, over loopback as with the real binary. The parent times
 * every srv_run_once(s, 0) call (flush of pending output + epoll_wait without sleeping +
 * handlers + timers: a superset of what srv_max_iter_us measures) and keeps the maximum per
 * phase; the child writes one byte on a pipe at the end of each phase:
 *   1 enqueue_1M      one client sends 1,000,000 jobs for docker/backlog, which no agent
 *                     provides (they wait: --orphan-timeout 0), then a Ping
 *   2 lifecycle_1M    4 clients x 64 in flight, 8 agents x 64 slots on docker/default:
 *                     300,000 jobs while the million wait
 *   3 get_queue_1M    one ClientGetQueue (the snapshot lists the 10,000 oldest of the
 *                     million: the default --queue-list-max)
 *   4 drain_1M        8 agents for docker/backlog join and work the million off (each slot
 *                     freed takes the next job from a 1M-job heap)
 *   5 enqueue_1M_again  another million for docker/backlog2 (no agent)
 *   6 close_1M        the client closes with the million waiting (they are dropped)
 * Prints per phase:  loop_<phase> iterations longest_us longest_cpu_us over_2ms srv_max_iter_us
 * longest_us is wall time, longest_cpu_us the thread's CPU time in its longest iteration (the
 * two differ when another process preempted the server), over_2ms counts iterations over 2 ms
 * of wall time, srv_max_iter_us is the server's own cumulative maximum at the end of the phase.
 * Runs about 5 s on an idle machine; bounded to 120 s. */
#include <signal.h>
#include <sys/wait.h>

#include "inproc.h"
#include "log.h"

#define MILLION 1000000u
#define LIFECYCLE_JOBS 300000u
#define NPHASES 6

static const char *const phase_names[NPHASES + 1] = {
    "", "enqueue_1M", "lifecycle_1M", "get_queue_1M", "drain_1M", "enqueue_1M_again", "close_1M",
};

/* ---------------------------------------------------------------------------------------- */
/* The load (child)                                                                          */

struct conn_pongs {
    const struct bc_conn *c;
    uint64_t n;
};

static bool
pongs_reached(const struct load *L, const struct conn_pongs *w)
{
    (void)L;
    return w->c->pongs >= w->n;
}

#define WAIT_FOR(L, cond, deadline, what) BC_WAIT_FOR("bench_loop", L, cond, deadline, what, 50)

static int
load_main(const char *aaddr, const char *caddr, int pfd)
{
    struct load L;
    struct bc_tmpl backlog, backlog2, job;
    size_t body_len;
    uint64_t deadline = bc_now_ns() + 110ull * 1000000000u;
    memset(&backlog, 0, sizeof(backlog));
    memset(&backlog2, 0, sizeof(backlog2));
    memset(&job, 0, sizeof(job));
    if (bc_load_init(&L, 2u * MILLION + LIFECYCLE_JOBS) != 0 ||
        bc_job_tmpl(&backlog, 128, 0, "backlog", &body_len) != 0 ||
        bc_job_tmpl(&backlog2, 128, 0, "backlog2", &body_len) != 0 ||
        bc_job_tmpl(&job, 128, 0, "default", &body_len) != 0) {
        fprintf(stderr, "bench_loop: setup failed\n");
        return -1;
    }
    /* 1. A million jobs nobody serves. */
    struct bc_conn *bl = bc_add_client(&L, caddr, &backlog, 0);
    if (bl == NULL) {
        fprintf(stderr, "bench_loop: %s\n", L.err);
        return -1;
    }
    bl->quota = MILLION;
    bl->ping_after = true;
    L.limit = MILLION;
    L.submitting = true;
    struct conn_pongs w = {bl, 2};
    WAIT_FOR(&L, pongs_reached(&L, &w), deadline, "enqueue");
    bc_mark(pfd, 1);
    /* 2. A lifecycle run beside them. */
    L.submitting = false;
    struct bc_conn *lc[4];
    for (int i = 0; i < 4; i++)
        if ((lc[i] = bc_add_client(&L, caddr, &job, 64)) == NULL)
            goto fail;
    for (int i = 0; i < 8; i++)
        if (bc_add_agent(&L, aaddr, 64, "default") == NULL)
            goto fail;
    WAIT_FOR(&L, bc_all_pongs(&L, ING_ROLE_CLIENT, 1) && bc_all_pongs(&L, ING_ROLE_AGENT, 1),
             deadline, "registration");
    L.limit = MILLION + LIFECYCLE_JOBS;
    L.t_first = 0;
    L.submitting = true;
    WAIT_FOR(&L, L.done >= LIFECYCLE_JOBS, deadline, "lifecycle");
    L.submitting = false;
    for (int i = 0; i < 4; i++)
        lc[i]->quota = 0; /* the jobs of phase 5 are the backlog client's */
    double secs = (double)(L.t_last - L.t_first) / 1e9;
    printf("# lifecycle beside 1M waiting: %u jobs in %.3f s = %.0f jobs/s\n", LIFECYCLE_JOBS, secs,
           (double)LIFECYCLE_JOBS / secs);
    fflush(stdout);
    bc_mark(pfd, 2);
    /* 3. The queue snapshot. */
    if (bc_send_empty(&L, bl, ING_CLIENT_GET_QUEUE) != 0)
        goto fail;
    WAIT_FOR(&L, L.queue_answers >= 1, deadline, "get queue");
    printf("# queue snapshot: %u running, %u waiting\n", L.queue_running, L.queue_waiting);
    fflush(stdout);
    bc_mark(pfd, 3);
    /* 4. Agents for the backlog work it off. */
    uint64_t t0 = bc_now_ns();
    uint32_t first = L.nagents;
    for (int i = 0; i < 8; i++)
        if (bc_add_agent(&L, aaddr, 64, "backlog") == NULL)
            goto fail;
    WAIT_FOR(&L, L.done >= LIFECYCLE_JOBS + MILLION, deadline, "drain");
    secs = (double)(bc_now_ns() - t0) / 1e9;
    printf("# drain: %u jobs in %.3f s = %.0f jobs/s (agents %u..%u)\n", MILLION, secs,
           (double)MILLION / secs, first, L.nagents - 1);
    fflush(stdout);
    bc_mark(pfd, 4);
    /* 5. Another million, then 6. the client leaves with them. */
    bl->tmpl = &backlog2;
    bl->quota = MILLION;
    bl->ping_after = true;
    L.limit = 2u * MILLION + LIFECYCLE_JOBS;
    L.submitting = true;
    w.n = bl->pongs + 1;
    WAIT_FOR(&L, pongs_reached(&L, &w), deadline, "second enqueue");
    bc_mark(pfd, 5);
    bc_load_fini(&L);
    free(backlog.frame);
    free(backlog2.frame);
    free(job.frame);
    return 0;
fail:
    fprintf(stderr, "bench_loop: %s\n", L.err);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* The server (parent)                                                                       */

struct phase {
    uint64_t iters, max_ns, max_cpu_ns, over_2ms, srv_max_us;
};

static void
account(struct phase *p, uint64_t dt, uint64_t dcpu)
{
    p->iters++;
    if (dt > p->max_ns)
        p->max_ns = dt;
    if (dcpu > p->max_cpu_ns)
        p->max_cpu_ns = dcpu;
    if (dt > 2000000)
        p->over_2ms++;
}

int
main(void)
{
    struct srv_config cfg;
    char err[256];
    log_level_max = LOG_WARN;
    srv_config_default(&cfg);
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    cfg.be.orphan_timeout_ms = 0;
    cfg.be.max_waiting = cfg.be.max_waiting_per_client = 10u * MILLION;
    struct server *s = srv_new(&cfg, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "bench_loop: %s\n", err);
        return 1;
    }
    pid_t pid;
    int rfd = bc_inproc_fork(s, "bench_loop",
                             "# name iterations longest_us longest_cpu_us over_2ms srv_max_iter_us",
                             load_main, &pid);
    if (rfd < 0)
        return 1;
    struct phase ph[NPHASES + 1];
    memset(ph, 0, sizeof(ph));
    int cur = 1;
    bool eof = false;
    uint64_t deadline = bc_now_ns() + 120ull * 1000000000u, eof_at = 0;
    struct backend *be = srv_backend(s);
    for (;;) {
        /* the thread's CPU time tells an iteration preempted by another process from one
         * that really worked that long */
        uint64_t c0 = bc_thread_cpu_ns(), t0 = bc_now_ns();
        int rc = srv_run_once(s, 0);
        uint64_t dt = bc_now_ns() - t0, dcpu = bc_thread_cpu_ns() - c0;
        if (rc != 0) {
            fprintf(stderr, "bench_loop: srv_run_once: %d\n", rc);
            break;
        }
        account(&ph[cur], dt, dcpu);
        uint8_t b;
        ssize_t n = eof ? -1 : read(rfd, &b, 1);
        if (n == 1 && b >= 1 && b <= NPHASES && b == cur) {
            ph[cur].srv_max_us = srv_max_iter_us(s);
            cur++;
        } else if (n == 0) {
            eof = true;
            eof_at = bc_now_ns();
        }
        /* After the child is gone: run until its connections are reaped and the jobs of
         * the closed client dropped (phase 6), at most 10 s. */
        if (eof &&
            ((be->n_waiting == 0 && be->n_clients == 0 && bc_now_ns() - eof_at > 50000000u) ||
             bc_now_ns() - eof_at > 10000000000ull))
            break;
        if (bc_now_ns() > deadline) {
            fprintf(stderr, "bench_loop: 120 s bound reached: stopping the load\n");
            kill(pid, SIGKILL);
            break;
        }
    }
    ph[cur <= NPHASES ? cur : NPHASES].srv_max_us = srv_max_iter_us(s);
    int st = 0;
    waitpid(pid, &st, 0);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && cur == NPHASES;
    for (int i = 1; i <= NPHASES && i <= cur; i++)
        printf("loop_%s %llu %.0f %.0f %llu %llu\n", phase_names[i],
               (unsigned long long)ph[i].iters, (double)ph[i].max_ns / 1000.0,
               (double)ph[i].max_cpu_ns / 1000.0, (unsigned long long)ph[i].over_2ms,
               (unsigned long long)ph[i].srv_max_us);
    if (!ok)
        fprintf(stderr, "bench_loop: the load did not finish (%d phases of %d)\n", cur - 1,
                NPHASES);
    srv_free(s);
    return ok ? 0 : 1;
}
