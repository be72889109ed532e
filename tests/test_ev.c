/* SPDX-License-Identifier: MIT */
/* test_ev.c: the event loop: fd readiness, timer order and cancellation, cancellation of
 * events of an fd removed in the middle of a batch. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <unistd.h>

#include "ev.h"

static int order[16], norder;

static void
on_timer(void *arg)
{
    order[norder++] = (int)(intptr_t)arg;
}

static void
test_ev_timers_fire_in_order(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_new();
    assert_non_null(loop);
    struct ev_timer t[5];
    uint64_t now = ev_update_now(loop);
    norder = 0;
    for (int i = 0; i < 5; i++)
        ev_timer_init(&t[i], on_timer, (void *)(intptr_t)i);
    ev_timer_start(loop, &t[0], now + 30);
    ev_timer_start(loop, &t[1], now + 10);
    ev_timer_start(loop, &t[2], now + 20);
    ev_timer_start(loop, &t[3], now + 10); /* same due: after t[1] */
    ev_timer_start(loop, &t[4], now + 15);
    ev_timer_stop(loop, &t[4]);
    assert_false(ev_timer_active(&t[4]));
    uint64_t deadline = ev_clock_ms() + 2000;
    while (norder < 4 && ev_clock_ms() < deadline)
        assert_true(ev_run_once(loop, 100) >= 0);
    assert_int_equal(norder, 4);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 2);
    assert_int_equal(order[3], 0);
    ev_free(loop);
}

struct two {
    struct ev_loop *loop;
    struct ev_io io[2];
    int calls[2];
};

static struct two g;

static void
on_io0(void *arg, unsigned events)
{
    (void)arg;
    (void)events;
    g.calls[0]++;
    ev_io_set(g.loop, &g.io[1], 0); /* removes the other: its pending event must not fire */
    ev_io_set(g.loop, &g.io[0], 0);
}

static void
on_io1(void *arg, unsigned events)
{
    (void)arg;
    (void)events;
    g.calls[1]++;
    ev_io_set(g.loop, &g.io[0], 0);
    ev_io_set(g.loop, &g.io[1], 0);
}

/* A timer that re-arms itself for "now" from its callback runs once per iteration, not in a
 * loop within one (the server's backlog and reap timers rely on this to bound an iteration);
 * an iteration runs every timer that was due when it began. */
struct rearm {
    struct ev_loop *loop;
    struct ev_timer t;
    int runs;
};

static void
on_rearm(void *arg)
{
    struct rearm *r = arg;
    r->runs++;
    assert_int_equal(ev_timer_start(r->loop, &r->t, ev_now_ms(r->loop)), 0);
}

static void
test_ev_rearmed_timer_runs_next_iteration(void **state)
{
    (void)state;
    struct rearm r = {.loop = ev_new()};
    struct ev_timer other;
    assert_non_null(r.loop);
    norder = 0;
    ev_timer_init(&r.t, on_rearm, &r);
    ev_timer_init(&other, on_timer, (void *)(intptr_t)7);
    uint64_t now = ev_update_now(r.loop);
    assert_int_equal(ev_timer_start(r.loop, &r.t, now), 0);
    assert_int_equal(ev_timer_start(r.loop, &other, now), 0);
    struct ev_timer later[4]; /* not due: they only make the heap bigger */
    for (int i = 0; i < 4; i++) {
        ev_timer_init(&later[i], on_timer, (void *)(intptr_t)(10 + i));
        assert_int_equal(ev_timer_start(r.loop, &later[i], now + 60000), 0);
    }
    assert_true(ev_run_once(r.loop, 0) >= 0);
    assert_int_equal(r.runs, 1);
    assert_int_equal(norder, 1); /* the other due timer ran too */
    assert_int_equal(order[0], 7);
    assert_true(ev_run_once(r.loop, 0) >= 0);
    assert_int_equal(r.runs, 2);
    assert_true(ev_run_once(r.loop, 0) >= 0);
    assert_int_equal(r.runs, 3);
    ev_timer_stop(r.loop, &r.t);
    for (int i = 0; i < 4; i++)
        ev_timer_stop(r.loop, &later[i]);
    ev_free(r.loop);
}

static void
test_ev_removed_fd_events_are_cancelled(void **state)
{
    (void)state;
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    g.loop = ev_new();
    g.calls[0] = g.calls[1] = 0;
    ev_io_init(&g.io[0], a[0], on_io0, &g.io[0]);
    ev_io_init(&g.io[1], b[0], on_io1, &g.io[1]);
    assert_int_equal(ev_io_set(g.loop, &g.io[0], EV_READ), 0);
    assert_int_equal(ev_io_set(g.loop, &g.io[1], EV_READ), 0);
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "y", 1), 1);
    assert_int_equal(ev_run_once(g.loop, 1000), 2); /* both ready in one batch */
    assert_int_equal(g.calls[0] + g.calls[1], 1);   /* only the first ran */
    ev_free(g.loop);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ev_timers_fire_in_order),
        cmocka_unit_test(test_ev_removed_fd_events_are_cancelled),
        cmocka_unit_test(test_ev_rearmed_timer_runs_next_iteration),
    };
    return cmocka_run_group_tests_name("ev", tests, NULL, NULL);
}
