/* SPDX-License-Identifier: MIT */
/* bench_register.c: the longest event-loop iteration while agents announce many environments
 * (issue 13: a hello is registered in steps across iterations).
 *
 * As bench_loop: the server runs in this process (srv_run_once(s, 0) in a loop, pinned to
 * CPU 0) and every call is timed, in wall and thread CPU time; the load runs in a forked
 * child (CPU 1) over loopback. Meanwhile 4 clients keep 16 jobs each in flight on 2 agents
 * (8 slots each, docker/default), so that other peers are served during the registrations.
 * Phases (the child writes one byte on a pipe at the end of each):
 *   1 hello_100k      an agent announces 100,000 environments; ends when every client got
 *                     the list
 *   2 rehello_100k_x8 the same agent says hello 8 more times, each once the last list came
 *   3 agents_32x10k   32 agents announce 10,000 environments each (distinct), then all of
 *                     them say hello again; ends 3 s after the re-hellos
 *   4 agents_32x10k_close  the 32 agents close their connections at once (the clients'
 *                     round trips go on); ends when every client got the list without
 *                     their environments, and 1 s more
 * (the other connections stay open until the end of the measurement)
 * Prints per phase:  reg_<phase> iterations longest_us longest_cpu_us over_2ms jobs_done
 * agents_registered (longest_us is wall time: another process may preempt the server on a
 * shared machine; longest_cpu_us is the thread's CPU time in its longest iteration).
 * Bounded to 120 s. */
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "backend.h"
#include "inproc.h"
#include "log.h"

#define BIG 100000u
#define NSMALL 32
#define SMALL 10000u
#define NPHASES 4

static const char *const phase_names[NPHASES + 1] = {
    "", "hello_100k", "rehello_100k_x8", "agents_32x10k", "agents_32x10k_close",
};

/* ---------------------------------------------------------------------------------------- */
/* The load (child)                                                                          */

/* send_hello sends AgentHello on c: n docker environments named prefix%06u. */
static int
send_hello(struct load *L, struct bc_conn *c, const char *prefix, uint32_t n)
{
    struct ing_mp_writer w;
    char name[32];
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, n);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "%s%06u", prefix, i);
        ing_mp_put_cstr(&w, name);
        ing_mp_put_map(&w, 2);
        ing_mp_put_cstr(&w, "id");
        ing_mp_put_cstr(&w, "sha256:bench");
        ing_mp_put_cstr(&w, "created");
        ing_mp_put_int(&w, 1700000000);
    }
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = (struct ing_view){prefix, (uint32_t)strlen(prefix)};
    m.u.agent_hello.slots = 4;
    m.u.agent_hello.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
    int rc = w.err != 0 ? -1 : bc_send(L, c, &m);
    ing_mp_writer_fini(&w);
    return rc;
}

/* min_updates is the fewest environment lists a client received. */
static uint64_t
min_updates(const struct load *L)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < L->nconns; i++)
        if (L->conns[i]->role == ING_ROLE_CLIENT && L->conns[i]->updates < m)
            m = L->conns[i]->updates;
    return m;
}

#define POLL_UNTIL(L, cond, deadline, what) BC_WAIT_FOR("bench_register", L, cond, deadline, what, 20)

static int
load_main(const char *aaddr, const char *caddr, int pfd)
{
    struct load L;
    struct bc_tmpl job;
    size_t body_len;
    uint64_t deadline = bc_now_ns() + 110ull * 1000000000u;
    memset(&job, 0, sizeof(job));
    if (bc_load_init(&L, 20u * 1000000u) != 0 || bc_job_tmpl(&job, 128, 0, "default", &body_len)) {
        fprintf(stderr, "bench_register: setup failed\n");
        return -1;
    }
    for (int i = 0; i < 4; i++)
        if (bc_add_client(&L, caddr, &job, 16) == NULL)
            goto fail;
    for (int i = 0; i < 2; i++)
        if (bc_add_agent(&L, aaddr, 8, "default") == NULL)
            goto fail;
    POLL_UNTIL(&L, bc_all_pongs(&L, ING_ROLE_CLIENT, 1) && bc_all_pongs(&L, ING_ROLE_AGENT, 1),
               deadline, "registration");
    uint64_t t = bc_now_ns() + 200000000u; /* the lists of the two hellos */
    POLL_UNTIL(&L, bc_now_ns() > t, deadline, "settling");
    L.limit = L.cap;
    L.submitting = true;
    uint64_t done0 = L.done, t0 = bc_now_ns();
    /* 1. One agent, 100,000 environments. */
    struct bc_conn *big = bc_add_conn(&L, aaddr, ING_ROLE_AGENT, L.nagents++);
    uint64_t u = min_updates(&L);
    if (big == NULL || send_hello(&L, big, "env", BIG) != 0)
        goto fail;
    POLL_UNTIL(&L, min_updates(&L) > u, deadline, "hello_100k");
    printf("# hello_100k: %.0f ms, %llu jobs done meanwhile\n", (double)(bc_now_ns() - t0) / 1e6,
           (unsigned long long)(L.done - done0));
    fflush(stdout);
    bc_mark(pfd, 1);
    /* 2. Its re-hellos. */
    done0 = L.done;
    t0 = bc_now_ns();
    for (int i = 0; i < 8; i++) {
        u = min_updates(&L);
        if (send_hello(&L, big, "env", BIG) != 0)
            goto fail;
        POLL_UNTIL(&L, min_updates(&L) > u, deadline, "rehello_100k");
    }
    printf("# rehello_100k_x8: %.0f ms, %llu jobs done meanwhile\n",
           (double)(bc_now_ns() - t0) / 1e6, (unsigned long long)(L.done - done0));
    fflush(stdout);
    bc_mark(pfd, 2);
    /* 3. 32 agents with 10,000 each, then their re-hellos. */
    done0 = L.done;
    t0 = bc_now_ns();
    struct bc_conn *ag[NSMALL];
    char prefix[NSMALL][16];
    for (int i = 0; i < NSMALL; i++) {
        snprintf(prefix[i], sizeof(prefix[i]), "a%02d-", i);
        if ((ag[i] = bc_add_conn(&L, aaddr, ING_ROLE_AGENT, L.nagents++)) == NULL ||
            send_hello(&L, ag[i], prefix[i], SMALL) != 0)
            goto fail;
    }
    t = bc_now_ns() + 3000000000ull;
    POLL_UNTIL(&L, bc_now_ns() > t, deadline, "agents_32x10k");
    for (int i = 0; i < NSMALL; i++)
        if (send_hello(&L, ag[i], prefix[i], SMALL) != 0)
            goto fail;
    t = bc_now_ns() + 3000000000ull;
    POLL_UNTIL(&L, bc_now_ns() > t, deadline, "agents_32x10k re-hellos");
    printf("# agents_32x10k: %.0f ms, %llu jobs done meanwhile\n",
           (double)(bc_now_ns() - t0) / 1e6, (unsigned long long)(L.done - done0));
    fflush(stdout);
    bc_mark(pfd, 3);
    /* 4. The 32 agents leave at once. */
    done0 = L.done;
    t0 = bc_now_ns();
    u = min_updates(&L);
    for (int i = 0; i < NSMALL; i++) {
        close(ag[i]->fd);
        ag[i]->fd = -1;
    }
    POLL_UNTIL(&L, min_updates(&L) > u, deadline, "agents_32x10k_close");
    printf("# agents_32x10k_close: %.0f ms until the clients had the list, ",
           (double)(bc_now_ns() - t0) / 1e6);
    t = bc_now_ns() + 1000000000ull;
    POLL_UNTIL(&L, bc_now_ns() > t, deadline, "agents_32x10k_close");
    printf("%llu jobs done meanwhile\n", (unsigned long long)(L.done - done0));
    fflush(stdout);
    bc_mark(pfd, 4);
    /* The other connections stay open until the parent, done measuring, kills this process
     * (at most 10 s): the 3 agents closing at the end would fall into the last phase's
     * iterations at random. */
    poll(NULL, 0, 10000);
    bc_load_fini(&L);
    free(job.frame);
    return 0;
fail:
    fprintf(stderr, "bench_register: %s\n", L.err);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* The server (parent)                                                                       */

struct phase {
    uint64_t iters, max_ns, max_cpu_ns, over_2ms;
    uint32_t agents;
};

int
main(void)
{
    struct srv_config cfg;
    char err[256];
    log_level_max = LOG_WARN;
    srv_config_default(&cfg);
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    cfg.be.envs_grace_ms = 0;
    cfg.be.hello_burst = 0;
    struct server *s = srv_new(&cfg, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "bench_register: %s\n", err);
        return 1;
    }
    pid_t pid;
    int rfd = bc_inproc_fork(s, "bench_register",
                             "# name iterations longest_us longest_cpu_us over_2ms "
                             "agents_registered",
                             load_main, &pid);
    if (rfd < 0)
        return 1;
    struct phase ph[NPHASES + 1];
    memset(ph, 0, sizeof(ph));
    int cur = 1;
    uint64_t deadline = bc_now_ns() + 120ull * 1000000000u;
    struct backend *be = srv_backend(s);
    while (cur <= NPHASES) {
        uint64_t c0 = bc_thread_cpu_ns(), t0 = bc_now_ns();
        int rc = srv_run_once(s, 0);
        uint64_t dt = bc_now_ns() - t0, dcpu = bc_thread_cpu_ns() - c0;
        if (rc != 0) {
            fprintf(stderr, "bench_register: srv_run_once: %d\n", rc);
            break;
        }
        struct phase *p = &ph[cur];
        p->iters++;
        p->max_ns = dt > p->max_ns ? dt : p->max_ns;
        p->max_cpu_ns = dcpu > p->max_cpu_ns ? dcpu : p->max_cpu_ns;
        p->over_2ms += dt > 2000000;
        uint8_t b;
        ssize_t n = read(rfd, &b, 1);
        if (n == 1 && b == cur) {
            p->agents = be->n_agents;
            cur++;
        } else if (n == 0) {
            break;
        }
        if (bc_now_ns() > deadline) {
            fprintf(stderr, "bench_register: 120 s bound reached: stopping the load\n");
            break;
        }
    }
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    for (int i = 1; i <= NPHASES && i < cur; i++)
        printf("reg_%s %llu %.0f %.0f %llu %u\n", phase_names[i], (unsigned long long)ph[i].iters,
               (double)ph[i].max_ns / 1000.0, (double)ph[i].max_cpu_ns / 1000.0,
               (unsigned long long)ph[i].over_2ms, ph[i].agents);
    bool ok = cur == NPHASES + 1;
    if (!ok)
        fprintf(stderr, "bench_register: the load did not finish (%d phases of %d)\n", cur - 1,
                NPHASES);
    srv_free(s);
    return ok ? 0 : 1;
}
