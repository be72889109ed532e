/* SPDX-License-Identifier: MIT */
/* inproc.h: the harness of the benchmarks that time a server's loop in their own process
 * (bench_loop, bench_register): the load runs in a forked child over loopback, pinned to
 * CPU 1 (the server to CPU 0) when both are usable, and tells the end of each phase by one
 * byte on a pipe. */
#ifndef ING_BENCH_INPROC_H
#define ING_BENCH_INPROC_H

#include "common.h"
#include "server.h"

/* bc_load_fn is the child's work: the server's addresses, and the pipe to mark phases on.
 * Returns 0 (the child exits 0) or -1. */
typedef int bc_load_fn(const char *aaddr, const char *caddr, int pfd);

/* bc_inproc_fork forks the child running load against s, after printing header. Returns
 * the pipe's reading end (non-blocking), the child in *pid; or -1 (printed, as name). */
static inline int
bc_inproc_fork(struct server *s, const char *name, const char *header, bc_load_fn *load,
               pid_t *pid)
{
    bool pin = bc_cpu_usable(0) && bc_cpu_usable(1);
    int pfd[2];
    if (pipe(pfd) != 0) {
        fprintf(stderr, "%s: pipe: %s\n", name, strerror(errno));
        return -1;
    }
    printf("%s\n", header);
    fflush(stdout);
    *pid = fork();
    if (*pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", name, strerror(errno));
        return -1;
    }
    if (*pid == 0) {
        close(pfd[0]);
        if (pin)
            bc_pin(0, 1);
        char aaddr[160], caddr[160];
        snprintf(aaddr, sizeof(aaddr), "%s", srv_bound_addr(s, true));
        snprintf(caddr, sizeof(caddr), "%s", srv_bound_addr(s, false));
        _exit(load(aaddr, caddr, pfd[1]) == 0 ? 0 : 1);
    }
    close(pfd[1]);
    if (pin)
        bc_pin(0, 0);
    fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);
    return pfd[0];
}

/* BC_WAIT_FOR polls the load L (poll_ms at a time) until cond or the deadline (ns); on a
 * timeout or an error it prints "name: ..." and returns -1 from the enclosing function. */
#define BC_WAIT_FOR(name, L, cond, deadline, what, poll_ms)                                        \
    do {                                                                                           \
        while (!(cond)) {                                                                          \
            if (bc_now_ns() > (deadline)) {                                                        \
                fprintf(stderr, "%s: timeout during %s\n", (name), (what));                        \
                return -1;                                                                         \
            }                                                                                      \
            if (bc_poll((L), (poll_ms)) != 0) {                                                    \
                fprintf(stderr, "%s: %s: %s\n", (name), (what), (L)->err);                         \
                return -1;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* bc_mark tells the parent that phase has ended (one byte on the pipe fd). */
static inline void
bc_mark(int fd, int phase)
{
    uint8_t b = (uint8_t)phase;
    if (write(fd, &b, 1) != 1)
        _exit(1);
}

#endif
