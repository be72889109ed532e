/* SPDX-License-Identifier: MIT */
/* runfx.h: helpers for the tests that drive the grading engine (src/runner.c) directly
 * with real processes (tests/test_runner.c, tests/test_sandbox.c): files, job specs built
 * from JSON, an event loop that runs one job to its end within a deadline, and result
 * checks that fail the running cmocka test with what the job printed. */
#ifndef RUNFX_H
#define RUNFX_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "runner.h"

struct FTW;

/* The folders of a runner test: root (mkdtemp /tmp/NAME-XXXXXX, mode 0755) with tasks/,
 * env/ (run is env/run) and work/ (job folders). */
struct rf_dirs {
    char root[256];
    char tasks[300];
    char envs[300];
    char run[320];
    char work[300];
};

/* rf_dirs_make makes them. Returns 0 or -1. */
int rf_dirs_make(struct rf_dirs *d, const char *name);

/* rf_dirs_remove removes root and everything below it. */
void rf_dirs_remove(const struct rf_dirs *d);

/* rf_now_ms: CLOCK_MONOTONIC in ms. */
uint64_t rf_now_ms(void);

/* rf_write_file writes text to path with mode (the test fails on error). */
void rf_write_file(const char *path, const char *text, mode_t mode);

/* rf_rm_entry: an nftw callback (FTW_DEPTH | FTW_PHYS) that removes what it is given. */
int rf_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw);

/* rf_cview views a C string (NULL: a nil view). */
struct ing_view rf_cview(const char *s);

/* rf_json_view converts json to msgpack into w (reset first) and views it. */
struct ing_view rf_json_view(struct ing_mp_writer *w, const char *json);

/* rf_set_job fills job "job-1" on process/default; course or task NULL = nil; input and
 * params are JSON (NULL: {"@state": "s0"} and {}). w holds three writers. */
void rf_set_job(struct ing_job_spec *job, struct ing_mp_writer w[3], const char *course,
                const char *task, const char *input, const char *params);

/* rf_drive polls the job's fds once (at most max_ms) and calls runner_process. */
void rf_drive(struct runner_job *r, int max_ms);

/* rf_wait_done drives the job until it is done; the test fails after max_ms. */
void rf_wait_done(struct runner_job *r, uint64_t max_ms);

/* rf_str copies a view into one of four rotating static buffers (NUL-terminated). */
char *rf_str(struct ing_view v);

/* rf_check_kind fails the test, with the text, stdout and stderr, unless the result's kind
 * is kind. */
void rf_check_kind(const struct ing_job_result *res, const char *kind);

#endif
