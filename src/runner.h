/* SPDX-License-Identifier: MIT */
/* runner.h: the grading engine of inginious-agent-process. It runs one job as a local
 * process and turns what it did into a job result (proto.md §5.4), without any network.
 *
 * A job runs the `run` executable of its environment:
 *   - in a fresh temporary copy of its task folder TASKS/<course>/<task>/ (copied
 *     recursively by the job's child process, before exec; a taskless job, with a nil or
 *     empty course or task, gets an empty folder), which is its working directory and $HOME;
 *   - when opts.sandbox is set, in the sandbox of sandbox.h: the folder is /work inside,
 *     the environment's directory /env (INGINIOUS_TASK_DIR and INGINIOUS_ENV_DIR say so);
 *     the job's cgroup holds its memory limit (no RLIMIT_AS) and its process limit
 *     (opts.nproc, else SANDBOX_PIDS_DEFAULT; no RLIMIT_NPROC);
 *   - in a new session and process group (setsid), so that a kill reaches every process
 *     it started;
 *   - with the job's inputdata as JSON on stdin and in `input.json` in the folder;
 *   - with a clean environment: PATH, HOME, LANG=C.UTF-8 and INGINIOUS_JOB_ID,
 *     INGINIOUS_COURSE, INGINIOUS_TASK, INGINIOUS_ENV_TYPE, INGINIOUS_ENV, INGINIOUS_DEBUG
 *     (0, 1 or ssh), INGINIOUS_TIME_LIMIT (s), INGINIOUS_MEMORY_LIMIT (MiB, 0 = none),
 *     INGINIOUS_TASK_DIR (the folder), INGINIOUS_ENV_DIR (the directory of `run`),
 *     INGINIOUS_INPUT and INGINIOUS_FEEDBACK (paths of input.json and feedback.json);
 *   - under limits from environment_parameters["limits"]: `time` (seconds, default 30,
 *     read as a number or as Python's int() reads it) sets RLIMIT_CPU to ceil(time) (hard
 *     limit one second more) and a wall-clock deadline of `hard_time` seconds when given,
 *     else 3 x time; `memory` (MiB) sets RLIMIT_AS; opts.nproc sets RLIMIT_NPROC;
 *   - as opts.user (default "nobody") when the agent runs as root: the folder is chowned to
 *     that user and the child drops its groups, gid and uid before exec. Every job runs as
 *     the same user, so jobs are not isolated from one another, and RLIMIT_NPROC counts
 *     every process of that user. Environment directories must be readable by that user.
 *
 * stdout and stderr are captured, each up to opts.output_limit bytes (default 64 KiB); the
 * rest is read and dropped, and a line "[... N bytes of output dropped]" is appended.
 * Invalid UTF-8 is replaced with U+FFFD so that both are valid protocol strings.
 *
 * The result. The first rule that applies decides:
 *   1. the job was killed with runner_kill                  -> killed
 *   2. it passed its wall-clock deadline (killed by us)     -> timeout (crash when `run`
 *      had not started yet: the copy of the task folder took longer than the deadline)
 *   3. `run` died of SIGXCPU, or of SIGKILL after using its CPU time  -> timeout
 *   3b. sandboxed, and the kernel's OOM killer killed a process of the job's cgroup
 *                                                           -> overflow
 *   4. the folder holds a feedback.json: a JSON object with the optional keys
 *        result   "success", "failed", "error", ... or ["kind", "text"]
 *        text     str      grade  number (clamped to 0..100)
 *        problems object   tests  object   custom  object   state  str
 *      -> that result; a missing result comes from the exit status (rule 6), a missing
 *      grade is 100 for success and 0 otherwise, a missing text is "". A feedback.json
 *      that is not valid JSON, not an object, has a field of the wrong type, is not a
 *      regular file or is larger than 16 MiB -> crash naming the problem;
 *   4b. sandboxed, the job's process limit refused a fork, and `run` did not exit 0
 *                                                           -> overflow
 *   5. a memory limit is set and `run` died of SIGSEGV, SIGBUS, SIGABRT or SIGKILL (not sent
 *      by us): with RLIMIT_AS an allocation failure shows as such a crash (dash dies of
 *      SIGSEGV, C++ aborts, the kernel OOM killer sends SIGKILL)            -> overflow
 *      (a grader that wants another verdict, or that detects a student program's overflow,
 *      writes feedback.json, which rule 4 prefers);
 *   6. exit status 0 -> success, grade 100; anything else -> failed, grade 0.
 * Whatever the agent itself cannot do (unknown environment, `run` missing or not
 * executable, task folder missing, a bad course or task id, fork or exec failure, no such
 * user) ends the job at once as crash with the reason. The state is feedback.json's
 * "state" when rule 4 gives one, else inputdata["@state"] (a str, or "") is kept. problems,
 * tests and custom are {} unless feedback.json gives them; archive is nil.
 *
 * Non-blocking use from an event loop: runner_start forks (it never waits for the child:
 * the copy of the task folder happens there, and runner_started() tells when `run` has
 * been exec'd), then watch the fds of runner_fds() for reading, call runner_process() when
 * one is readable or runner_timeout_ms() has passed, until it returns 1. The job folder is
 * removed without blocking either (a background process, or a tmpfs detached). The child is watched through a pidfd where the kernel has them,
 * else runner_timeout_ms() asks to be called every 50 ms. The caller supplies the time
 * (CLOCK_MONOTONIC in ms). The process-group leader is never reaped before its group has
 * been sent SIGKILL, so its pid cannot be reused while the group is signalled. */
#ifndef ING_RUNNER_H
#define ING_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inginious/proto.h"
#include "sandbox.h"

#define RUNNER_OUTPUT_LIMIT_DEFAULT (64u * 1024) /* bytes kept of stdout, and of stderr */
#define RUNNER_TIME_DEFAULT 30.0                 /* seconds, when limits.time is absent */
#define RUNNER_FEEDBACK_MAX (16u * 1024 * 1024)  /* largest feedback.json read */
#define RUNNER_MAX_FDS 4                         /* runner_fds() returns at most this */

struct runner_opts {
    const char *tasks_dir; /* TASKS: jobs run in a copy of TASKS/<course>/<task>/; NULL: every
                              job with a course and a task crashes */
    const char *work_dir;  /* where job folders are made; NULL: $TMPDIR, else /tmp */
    const char *user;      /* when running as root: run jobs as this user; NULL: "nobody" */
    size_t output_limit;   /* bytes kept of stdout and of stderr; 0: the default */
    unsigned long nproc;   /* RLIMIT_NPROC of the job; 0: not set (sandboxed: the job's
                              pids.max; 0: SANDBOX_PIDS_DEFAULT) */
    struct sandbox_host *sandbox; /* sandbox_probe's result: sandbox every job; NULL: none */
    uint64_t disk_limit;   /* sandboxed: bytes of the job's tmpfs (limits.disk, in MiB,
                              lowers it); 0: SANDBOX_DISK_DEFAULT */
};

struct runner_job;

/* runner_start starts job with the executable run_path (the environment's `run`; NULL
 * when the agent does not have the job's environment). Borrows opts, run_path and job
 * (everything needed is copied). now_ms is the current CLOCK_MONOTONIC time in ms. On
 * return 0, *out is a new job: running, or already finished with a crash result when the
 * job could not be started. Returns -ENOMEM (nothing allocated) otherwise. */
int runner_start(const struct runner_opts *opts, const char *run_path,
                 const struct ing_job_spec *job, uint64_t now_ms, struct runner_job **out);

/* runner_fds writes the fds to watch for reading (at most RUNNER_MAX_FDS) to fds and
 * returns their number (0 once finished). They change as pipes reach end of file. */
int runner_fds(const struct runner_job *r, int *fds);

/* runner_timeout_ms returns how long the caller may wait (ms) before calling
 * runner_process although no fd is readable: until the deadline, or 50 ms without a pidfd;
 * -1 once finished. */
int runner_timeout_ms(const struct runner_job *r, uint64_t now_ms);

/* runner_process reads the output that is there, enforces the deadline and, once the
 * process has ended, builds the result and removes the folder. Never blocks. Returns 1
 * when the job is finished (the result is ready), 0 while it runs. */
int runner_process(struct runner_job *r, uint64_t now_ms);

/* runner_kill sends SIGKILL to the job's process group; the job ends as killed at the
 * next runner_process that sees the process gone. Does nothing once finished. */
void runner_kill(struct runner_job *r);

/* runner_done tells whether the result is ready. */
bool runner_done(const struct runner_job *r);

/* runner_result fills res with the result (job_id included). Every view points into r and
 * stays valid until runner_free(r). Only valid once runner_done(r). */
void runner_result(const struct runner_job *r, struct ing_job_result *res);

/* runner_started tells whether `run` was exec'd: the folder is copied and the job really
 * runs (the agent then sends AgentJobStarted). */
bool runner_started(const struct runner_job *r);

/* runner_cpu_ms returns the CPU time the job used (every process of its cgroup when
 * sandboxed, else `run` and the children it waited for). Only valid once runner_done(r). */
uint64_t runner_cpu_ms(const struct runner_job *r);

/* runner_pid returns the pid (= process group id) of the running job, or 0. */
pid_t runner_pid(const struct runner_job *r);

/* runner_job_id returns the job's id (a NUL-terminated copy, valid until runner_free) and
 * its length in *len when len is not NULL. */
const char *runner_job_id(const struct runner_job *r, size_t *len);

/* runner_free releases r. A job still running is sent SIGKILL and reaped (waiting for it,
 * which SIGKILL makes short) and its folder removed. NULL does nothing. */
void runner_free(struct runner_job *r);

#endif
