/* SPDX-License-Identifier: MIT */
/* ev.h: the event loop. epoll (level-triggered) for file descriptors, a binary heap of
 * one-shot timers, and a before-sleep hook where pending output is flushed and deferred
 * closes are reaped. Only ev.c includes <sys/epoll.h>. */
#ifndef ING_EV_H
#define ING_EV_H

#include <stdbool.h>
#include <stdint.h>

#define EV_READ 1u
#define EV_WRITE 2u
#define EV_HUP 4u /* registered for hang-ups and errors only: they come as EV_READ */

struct ev_loop;

typedef void ev_io_fn(void *arg, unsigned events);
typedef void ev_timer_fn(void *arg);
typedef void ev_hook_fn(void *arg);

/* An fd watcher, embedded in its owner. */
struct ev_io {
    int fd;
    unsigned events; /* EV_READ | EV_WRITE currently watched; 0 = not registered */
    ev_io_fn *fn;
    void *arg;
};

/* A one-shot timer, embedded in its owner. */
struct ev_timer {
    uint64_t due_ms;
    uint64_t seq;
    uint32_t idx; /* position in the heap + 1; 0 = not armed */
    ev_timer_fn *fn;
    void *arg;
};

/* ev_new creates a loop. Returns NULL with errno set on failure. */
struct ev_loop *ev_new(void);
void ev_free(struct ev_loop *loop);

/* ev_io_init fills io; ev_io_set (re)registers it for events (0 removes it). Returns 0 or
 * -errno. Removing also cancels events of io still pending in the current batch. */
void ev_io_init(struct ev_io *io, int fd, ev_io_fn *fn, void *arg);
int ev_io_set(struct ev_loop *loop, struct ev_io *io, unsigned events);

void ev_timer_init(struct ev_timer *t, ev_timer_fn *fn, void *arg);
/* ev_timer_start arms t to fire at due_ms (monotonic ms; re-arming moves it). */
int ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t due_ms);
void ev_timer_stop(struct ev_loop *loop, struct ev_timer *t);
static inline bool
ev_timer_active(const struct ev_timer *t)
{
    return t->idx != 0;
}

/* ev_set_before_sleep installs fn, called before every wait for events. */
void ev_set_before_sleep(struct ev_loop *loop, ev_hook_fn *fn, void *arg);

/* ev_run_once waits at most max_wait_ms (-1 = until the next timer or event) and dispatches
 * one batch of events and the due timers. Returns the number of events, or -errno. */
int ev_run_once(struct ev_loop *loop, int max_wait_ms);
/* ev_run loops until ev_stop. Returns 0 or -errno. */
int ev_run(struct ev_loop *loop);
void ev_stop(struct ev_loop *loop);

/* ev_now_ms returns the monotonic time in ms cached at the last wake-up;
 * ev_update_now refreshes it. */
uint64_t ev_now_ms(const struct ev_loop *loop);
uint64_t ev_update_now(struct ev_loop *loop);
/* ev_clock_ms reads CLOCK_MONOTONIC in ms; ev_clock_us in microseconds. */
uint64_t ev_clock_ms(void);
uint64_t ev_clock_us(void);
/* ev_iter_longer_than tells whether the current batch (events + timers, since epoll_wait
 * returned) has run for more than us microseconds: handlers use it to bound their work. */
bool ev_iter_longer_than(const struct ev_loop *loop, uint64_t us);
/* ev_max_iter_us is the longest batch dispatch (events + timers) seen, in microseconds. */
uint64_t ev_max_iter_us(const struct ev_loop *loop);
/* ev_last_iter_us is the last batch's dispatch time (events + timers), in microseconds. */
uint64_t ev_last_iter_us(const struct ev_loop *loop);

#endif
