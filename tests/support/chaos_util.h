/* SPDX-License-Identifier: MIT */
/* chaos_util.h: helpers of the robustness tests (tests/test_chaos.c, tests/test_abuse.c,
 * tests/test_security.c) that tpeer.h does not have: the CI slow-down factor, process
 * statistics read from /proc, a seeded pseudo-random generator, raw non-blocking connections
 * in bulk (thousands of sockets, more than a struct tp_ctx holds), and "is the backend still
 * serving promptly" checks.
 *
 * Environment:
 *   ING_SLOW     a factor (>= 1) by which every timing a test sets or waits for is stretched
 *                (CI runs the suite under valgrind with ING_SLOW=10);
 *   ING_WRAPPER  set when spawned backends run under a wrapper (valgrind): their memory
 *                figures are the wrapper's and are not checked.
 *
 * Like tpeer, nothing here sleeps: every wait is a poll() with a deadline, and the checking
 * helpers fail the running cmocka test with the caller's file and line. */
#ifndef CHAOS_UTIL_H
#define CHAOS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "inginious/proto.h"
#include "tpeer.h"

/* cu_slow returns ING_SLOW as an integer factor (tp_slow(), at least 1). */
unsigned cu_slow(void);

/* cu_ms returns ms stretched by ING_SLOW. */
int cu_ms(int ms);

/* cu_ms_arg writes ms stretched by ING_SLOW as a backend duration ("300ms") into out and
 * returns out. */
char *cu_ms_arg(char *out, size_t cap, int ms);

/* cu_wrapped tells whether ING_WRAPPER is set (backends run under valgrind or similar). */
bool cu_wrapped(void);

/* cu_rss_kib returns the VmRSS of process pid in KiB, or -1 if it cannot be read. */
long cu_rss_kib(pid_t pid);

/* cu_vmsize_kib returns the VmSize of process pid in KiB, or -1. */
long cu_vmsize_kib(pid_t pid);

/* cu_fd_count returns how many file descriptors process pid has open, or -1. */
int cu_fd_count(pid_t pid);

/* cu_wait_fd_count waits until process pid has at most at_most descriptors open. Returns
 * the last count seen (> at_most when the deadline passed first), or -1. */
int cu_wait_fd_count(pid_t pid, int at_most, int timeout_ms);

/* cu_raise_nofile raises this process's soft RLIMIT_NOFILE to min(want, hard limit); the
 * backends started afterwards inherit it. Returns the new soft limit and sets *hard. */
rlim_t cu_raise_nofile(rlim_t want, rlim_t *hard);

/* A small deterministic generator (xorshift64*): the chaos test prints its seed. */
struct cu_rng {
    uint64_t s;
};

void cu_rng_seed(struct cu_rng *r, uint64_t seed);
uint64_t cu_rand(struct cu_rng *r);
/* cu_below returns a value in [0, n) (0 when n is 0). */
uint32_t cu_below(struct cu_rng *r, uint32_t n);
/* cu_between returns a value in [lo, hi]. */
uint32_t cu_between(struct cu_rng *r, uint32_t lo, uint32_t hi);
/* cu_chance is true with probability percent / 100. */
bool cu_chance(struct cu_rng *r, unsigned percent);

/* cu_addr parses tcp://H:P, tcp://[H]:P or ipc:///path into *ss. Returns 0 or -EINVAL. */
int cu_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len);

/* cu_connect_start creates a non-blocking, close-on-exec socket and starts connecting it
 * to ss. Returns the descriptor (connected or in progress) or -errno. */
int cu_connect_start(const struct sockaddr_storage *ss, socklen_t len);

/* cu_connect_small is cu_connect_start with a receive buffer of rcvbuf bytes set before the
 * connect (so the window the peer sees is small from the start): a client that does not
 * read fills up after a few KiB instead of megabytes. */
int cu_connect_small(const struct sockaddr_storage *ss, socklen_t len, int rcvbuf);

/* cu_connect_wait waits until the connect started on fd is done. Returns 0 or -errno. */
int cu_connect_wait(int fd, int timeout_ms);

/* cu_close_rst closes fd with a TCP reset (SO_LINGER 0): no TIME_WAIT is left behind. */
void cu_close_rst(int fd);


/* cu_wait_eof reads and discards whatever fd receives until the peer closes it. Returns 0
 * on EOF or reset, -ETIMEDOUT at the deadline, another -errno on error. Sets *bytes (may be
 * NULL) to the number of bytes received before the close. */
int cu_wait_eof(int fd, int timeout_ms, size_t *bytes);

/* cu_roundtrip sends Ping on a registered client and waits for the Pong within limit_ms,
 * skipping BackendUpdateEnvironments; fails the test otherwise. Returns the milliseconds it
 * took. */
int cu_roundtrip_at(const char *file, int line, struct tp_peer *p, int limit_ms);
#define cu_roundtrip(...) cu_roundtrip_at(__FILE__, __LINE__, __VA_ARGS__)

/* cu_prompt checks that the backend serves a new client promptly: a fresh connection opens,
 * registers and gets a Ping answered, all within limit_ms; the connection is then closed. */
void cu_prompt_at(const char *file, int line, struct tp_ctx *c, int limit_ms);
#define cu_prompt(...) cu_prompt_at(__FILE__, __LINE__, __VA_ARGS__)

/* cu_env_names counts the environment names of a BackendUpdateEnvironments map (type ->
 * array of str) and tells whether every array is sorted by byte value. Returns -1 when the
 * value does not have that shape. */
long cu_env_names(struct ing_view v, bool *sorted);

/* cu_backend_alive tells whether the backend of c still runs (not exited, not reaped). */
bool cu_backend_alive(struct tp_ctx *c);

#endif
