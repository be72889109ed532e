/* SPDX-License-Identifier: MIT */
/* ev.c: see ev.h. */
#include "ev.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EV_BATCH 256

struct ev_loop {
    int epfd;
    bool stop;
    uint64_t now_ms;
    uint64_t timer_seq;
    struct ev_timer **heap;
    uint32_t nheap, capheap;
    ev_hook_fn *before_sleep;
    void *before_sleep_arg;
    struct epoll_event evs[EV_BATCH];
    int nevs, cur; /* the batch being dispatched */
    uint64_t max_iter_us;
    uint64_t last_iter_us; /* the last batch's dispatch time */
    uint64_t iter_start_us; /* when the current batch began (after epoll_wait) */
};

uint64_t
ev_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
ev_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

struct ev_loop *
ev_new(void)
{
    struct ev_loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        int e = errno;
        free(loop);
        errno = e;
        return NULL;
    }
    /* Room for 64 timers from the start: arming one of them never fails. */
    loop->heap = malloc(64 * sizeof(*loop->heap));
    if (loop->heap == NULL) {
        close(loop->epfd);
        free(loop);
        errno = ENOMEM;
        return NULL;
    }
    loop->capheap = 64;
    loop->now_ms = ev_clock_ms();
    return loop;
}

void
ev_free(struct ev_loop *loop)
{
    if (loop == NULL)
        return;
    close(loop->epfd);
    free(loop->heap);
    free(loop);
}

void
ev_io_init(struct ev_io *io, int fd, ev_io_fn *fn, void *arg)
{
    io->fd = fd;
    io->events = 0;
    io->fn = fn;
    io->arg = arg;
}

int
ev_io_set(struct ev_loop *loop, struct ev_io *io, unsigned events)
{
    if (events == io->events)
        return 0;
    struct epoll_event ee = {0};
    /* EPOLLERR and EPOLLHUP are always reported: EV_HUP alone registers for them only. */
    ee.events = ((events & EV_READ) ? EPOLLIN : 0) | ((events & EV_WRITE) ? EPOLLOUT : 0);
    ee.data.ptr = io;
    int op = io->events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(loop->epfd, op, io->fd, &ee) != 0)
        return -errno;
    io->events = events;
    if (events == 0) {
        /* Cancel what is still pending for io in this batch (libuv's fd invalidation). */
        for (int i = loop->cur; i < loop->nevs; i++)
            if (loop->evs[i].data.ptr == io)
                loop->evs[i].data.ptr = NULL;
    }
    return 0;
}

/* Timer heap ordered by (due_ms, seq). */
static bool
timer_less(const struct ev_timer *a, const struct ev_timer *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void
heap_place(struct ev_loop *loop, uint32_t i, struct ev_timer *t)
{
    loop->heap[i] = t;
    t->idx = i + 1;
}

static void
heap_up(struct ev_loop *loop, uint32_t i)
{
    struct ev_timer *t = loop->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!timer_less(t, loop->heap[parent]))
            break;
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void
heap_down(struct ev_loop *loop, uint32_t i)
{
    struct ev_timer *t = loop->heap[i];
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        const struct ev_timer *best = t;
        if (l < loop->nheap && timer_less(loop->heap[l], best)) {
            m = l;
            best = loop->heap[l];
        }
        if (l + 1 < loop->nheap && timer_less(loop->heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        heap_place(loop, i, loop->heap[m]);
        i = m;
    }
    heap_place(loop, i, t);
}

void
ev_timer_init(struct ev_timer *t, ev_timer_fn *fn, void *arg)
{
    t->due_ms = 0;
    t->seq = 0;
    t->idx = 0;
    t->fn = fn;
    t->arg = arg;
}

void
ev_timer_stop(struct ev_loop *loop, struct ev_timer *t)
{
    if (t->idx == 0)
        return;
    uint32_t i = t->idx - 1;
    t->idx = 0;
    loop->nheap--;
    if (i == loop->nheap)
        return;
    struct ev_timer *m = loop->heap[loop->nheap];
    heap_place(loop, i, m);
    heap_up(loop, i);
    if (m->idx - 1 == i)
        heap_down(loop, i);
}

int
ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t due_ms)
{
    ev_timer_stop(loop, t);
    if (loop->nheap == loop->capheap) {
        uint32_t cap = loop->capheap ? loop->capheap * 2 : 64;
        struct ev_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        loop->heap = h;
        loop->capheap = cap;
    }
    t->due_ms = due_ms;
    t->seq = loop->timer_seq++;
    heap_place(loop, loop->nheap, t);
    loop->nheap++;
    heap_up(loop, loop->nheap - 1);
    return 0;
}

void
ev_set_before_sleep(struct ev_loop *loop, ev_hook_fn *fn, void *arg)
{
    loop->before_sleep = fn;
    loop->before_sleep_arg = arg;
}

uint64_t
ev_now_ms(const struct ev_loop *loop)
{
    return loop->now_ms;
}

uint64_t
ev_update_now(struct ev_loop *loop)
{
    loop->now_ms = ev_clock_ms();
    return loop->now_ms;
}

bool
ev_iter_longer_than(const struct ev_loop *loop, uint64_t us)
{
    return ev_clock_us() - loop->iter_start_us > us;
}

uint64_t
ev_last_iter_us(const struct ev_loop *loop)
{
    return loop->last_iter_us;
}

uint64_t
ev_max_iter_us(const struct ev_loop *loop)
{
    return loop->max_iter_us;
}

static void
run_timers(struct ev_loop *loop)
{
    /* Bounded: only timers armed before this run; those a callback arms (even for "now")
     * run in the next iteration, after the next epoll_wait. */
    uint64_t first_new = loop->timer_seq;
    while (loop->nheap > 0 && loop->heap[0]->due_ms <= loop->now_ms &&
           loop->heap[0]->seq < first_new) {
        struct ev_timer *t = loop->heap[0];
        ev_timer_stop(loop, t);
        t->fn(t->arg);
    }
}

int
ev_run_once(struct ev_loop *loop, int max_wait_ms)
{
    if (loop->before_sleep != NULL)
        loop->before_sleep(loop->before_sleep_arg);
    int timeout = max_wait_ms;
    if (loop->nheap > 0) {
        uint64_t due = loop->heap[0]->due_ms, now = ev_clock_ms();
        int t = due <= now ? 0 : (due - now > 60000 ? 60000 : (int)(due - now));
        if (timeout < 0 || t < timeout)
            timeout = t;
    }
    if (loop->stop)
        timeout = 0;
    int n = epoll_wait(loop->epfd, loop->evs, EV_BATCH, timeout);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return -errno;
    }
    uint64_t t0 = ev_clock_us();
    loop->iter_start_us = t0;
    loop->now_ms = t0 / 1000;
    loop->nevs = n;
    for (loop->cur = 0; loop->cur < loop->nevs;) {
        struct epoll_event *e = &loop->evs[loop->cur++];
        struct ev_io *io = e->data.ptr;
        if (io == NULL)
            continue;
        unsigned ev = 0;
        if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            ev |= EV_READ;
        if (e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            ev |= EV_WRITE;
        io->fn(io->arg, ev & (io->events | EV_READ));
    }
    loop->nevs = loop->cur = 0;
    run_timers(loop);
    uint64_t dt = ev_clock_us() - t0;
    loop->last_iter_us = dt;
    if (dt > loop->max_iter_us)
        loop->max_iter_us = dt;
    return n;
}

int
ev_run(struct ev_loop *loop)
{
    loop->stop = false;
    while (!loop->stop) {
        int rc = ev_run_once(loop, -1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void
ev_stop(struct ev_loop *loop)
{
    loop->stop = true;
}
