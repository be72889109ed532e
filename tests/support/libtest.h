/* SPDX-License-Identifier: MIT */
/* libtest.h: helpers for the tests of the client and agent libraries and of inginious-ctl
 * (tests/test_client.c, tests/test_agent.c, tests/test_ctl.c).
 *
 * A struct lt_world is one test: the backend it started ($ING_BUILD/inginious-backend as a
 * child, addresses read back from --port-file in a private mkdtemp directory), the clients
 * and agents it opened through the libraries (each with a log of the events it received),
 * agents forked into child processes, and a child program (inginious-ctl) with its output.
 *
 * Every wait spins the world (poll on every fd with a deadline, then process each client
 * and agent, read the child's pipes) until a condition holds, and fails the running cmocka
 * test with the caller's file:line when LT_DEADLINE_MS passes first. Nothing sleeps.
 *
 * Under memcheck (make valgrind): the backend runs prefixed by the words of $ING_WRAPPER when
 * it is set and not empty, every deadline is stretched by $ING_SLOW (lt_slow), and a test
 * that reached lt_pass fails in teardown unless the backend exits 0 after SIGTERM (so the
 * wrapper's --error-exitcode is seen); lt_kill_backend fails the test when the status is
 * that error exit code.
 *
 * Scripted agents answer each job by its inputdata["do"] (see lt_agent_script):
 *   absent or "success"  started, done success, every field set (LT_OK_* below)
 *   "fail"               started, done failed, archive and stdout nil
 *   "nil"                started, done success with archive, stdout and stderr nil
 *   "echo"               started, done success; text "course|task|type|env|debug" (nil as
 *                        "<nil>"), problems = task_problems, tests = inputdata,
 *                        custom = environment_parameters, state = inputdata["@state"] or ""
 *   "ssh"                started, ssh debug (LT_SSH_*), done success
 *   "hang"               started, then nothing until killed
 *   "nostart"            nothing until killed
 * A kill is answered with done killed, text "", state = the kill's state.
 *
 * Ownership: the world owns everything it lists; lt_teardown frees clients and agents,
 * kills forked agents and the child program, stops the backend, dumps its log when the
 * test did not call lt_pass, and removes the directory. */
#ifndef LIBTEST_H
#define LIBTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inginious/agent.h"
#include "inginious/client.h"

#define LT_DEADLINE_MS (10000 * lt_slow()) /* every wait of a test (lt_slow: valgrind runs) */
#define LT_MAX 8                           /* clients, agents, forks per world */
#define LT_STR 256

/* What a scripted agent reports for "success". */
#define LT_OK_TEXT "Well done"
#define LT_OK_GRADE 100.0
#define LT_OK_STATE "S2"
#define LT_OK_ARCHIVE "\x1f\x8b\x08\x00"
#define LT_OK_STDOUT "out\n"
#define LT_SSH_HOST "127.0.0.1"
#define LT_SSH_PORT 2222
#define LT_SSH_USER "worker"
#define LT_SSH_PASSWORD "s3cr3t"

/* A child program (inginious-ctl) with its output. */
struct lt_proc {
    pid_t pid;
    int out_fd; /* -1 once closed */
    int err_fd;
    char *out; /* everything read so far, NUL-terminated */
    size_t out_len;
    char *err;
    size_t err_len;
    bool exited;
    int status; /* waitpid status */
};

/* One event received by a client, copied. */
struct lt_cev {
    enum ing_client_event_type type;
    bool used; /* consumed by an lt_expect_* */
    char job_id[LT_STR];
    bool pending;
    bool lost;
    struct ing_client_result res;  /* DONE */
    struct ing_client_queue queue; /* QUEUE */
    char host[LT_STR];             /* SSH_DEBUG */
    uint32_t port;
    char user[LT_STR];
    char password[LT_STR];
    char envs[1024]; /* ENVS, rendered "type:[a,b];type2:[]" */
    double rtt_ms;   /* PONG */
    uint16_t code;   /* ERROR */
    char text[LT_STR];
    int err; /* DISCONNECTED */
};

struct lt_client {
    struct ing_client *c;
    struct lt_cev *ev;
    size_t nev;
    size_t cap;
};

/* One job received by an agent, copied. */
struct lt_job {
    char job_id[LT_STR];
    bool course_nil;
    char course[LT_STR];
    bool task_nil;
    char task[LT_STR];
    char env_type[LT_STR];
    char env[LT_STR];
    uint8_t debug;
    uint8_t *problems; /* malloc'd copies of the msgpack fields */
    size_t problems_len;
    uint8_t *input;
    size_t input_len;
    uint8_t *params;
    size_t params_len;
};

/* One event received by an agent, copied. */
struct lt_aev {
    enum ing_agent_event_type type;
    bool used;
    char job_id[LT_STR];
    struct lt_job job;  /* JOB */
    char state[LT_STR]; /* KILL */
    uint16_t code;      /* ERROR */
    char text[LT_STR];
    int err; /* DISCONNECTED */
};

struct lt_agent {
    struct ing_agent *a;
    bool script; /* answer jobs as the header says */
    struct lt_aev *ev;
    size_t nev;
    size_t cap;
};

struct lt_world {
    /* the backend */
    pid_t be_pid;
    int be_pidfd;
    int be_status;
    char dir[LT_STR];
    char log_path[LT_STR + 16];
    char port_path[LT_STR + 16];
    char agent_addr[LT_STR + 16]; /* bound addresses, from the port file */
    char client_addr[LT_STR + 16];
    const char *opts[24]; /* the options of the last start (restarts reuse them) */
    size_t nopts;

    struct lt_client *clients[LT_MAX];
    size_t nclients;
    struct lt_agent *agents[LT_MAX];
    size_t nagents;
    pid_t forks[LT_MAX];
    size_t nforks;
    struct lt_proc *proc; /* spun with the rest while set */
    void *allocs[64];     /* freed by teardown (lt_mp) */
    size_t nallocs;
    bool ok;
};

/* lt_setup / lt_teardown are cmocka fixtures installing a world as the state. */
int lt_setup(void **state);
int lt_teardown(void **state);
/* lt_pass marks the test as having reached its end (no log dump in teardown). */
void lt_pass(struct lt_world *w);

_Noreturn void lt_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define lt_fail(...) lt_fail_at(__FILE__, __LINE__, __VA_ARGS__)

uint64_t lt_now_ms(void);

/* lt_rm_dir removes the files of dir (not its subfolders), then dir itself. */
void lt_rm_dir(const char *dir);

/* lt_slow: the factor $ING_SLOW (default 1) stretching every deadline (valgrind runs). */
int lt_slow(void);

/* lt_build returns $ING_BUILD (default "build"). */
const char *lt_build(void);

/* ---- the backend ---- */

/* lt_dir returns the world's private directory, created on first use. */
const char *lt_dir_at(const char *file, int line, struct lt_world *w);
#define lt_dir(w) lt_dir_at(__FILE__, __LINE__, w)
/* lt_write_file writes text to DIR/name and returns the path (static buffer of the world). */
const char *lt_write_file_at(const char *file, int line, struct lt_world *w, const char *name,
                             const char *text);
#define lt_write_file(...) lt_write_file_at(__FILE__, __LINE__, __VA_ARGS__)

/* lt_start starts the backend on agent_addr and client_addr (NULL: tcp://127.0.0.1:0;
 * "ipc": ipc://DIR/agent.sock or client.sock) with the NULL-terminated options, plus -v and
 * --port-file. Waits for the port file. */
void lt_start_at(const char *file, int line, struct lt_world *w, const char *agent_addr,
                 const char *client_addr, ...) __attribute__((sentinel));
#define lt_start(...) lt_start_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_restart starts the backend again on the addresses it was bound to, same options. */
void lt_restart_at(const char *file, int line, struct lt_world *w);
#define lt_restart(w) lt_restart_at(__FILE__, __LINE__, w)
/* lt_kill_backend sends sig and waits for the backend to exit; returns its status (fails the
 * test when it is the error exit code of $ING_WRAPPER, memcheck having found errors). */
int lt_kill_backend_at(const char *file, int line, struct lt_world *w, int sig);
#define lt_kill_backend(...) lt_kill_backend_at(__FILE__, __LINE__, __VA_ARGS__)
void lt_dump_log(const struct lt_world *w);
/* lt_log_contains tells whether the backend's log holds needle. */
bool lt_log_contains(const struct lt_world *w, const char *needle);

/* ---- clients and agents in this process ---- */

/* lt_client_new creates and connects a client (opts.addr defaults to the backend's client
 * address, name to "tester"); fails the test if it cannot connect. */
struct lt_client *lt_client_new_at(const char *file, int line, struct lt_world *w,
                                   const struct ing_client_opts *opts);
#define lt_client_new(...) lt_client_new_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_client_add creates a client without connecting it. */
struct lt_client *lt_client_add_at(const char *file, int line, struct lt_world *w,
                                   const struct ing_client_opts *opts);
#define lt_client_add(...) lt_client_add_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_client_record is the event callback recording into the lt_client given as arg. */
void lt_client_record(struct ing_client *c, const struct ing_client_event *ev, void *arg);

/* lt_agent_new creates and connects an agent with environments "type/name" (NULL-ended),
 * id "i1", created 1, advertised; addr defaults to the backend's agent address. */
struct lt_agent *lt_agent_new_at(const char *file, int line, struct lt_world *w, const char *name,
                                 uint32_t slots, int script, ...) __attribute__((sentinel));
#define lt_agent_new(...) lt_agent_new_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_agent_add creates an agent from opts (addr NULL: the backend's) without connecting. */
struct lt_agent *lt_agent_add_at(const char *file, int line, struct lt_world *w,
                                 const struct ing_agent_opts *opts, bool script);
#define lt_agent_add(...) lt_agent_add_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_agent_drop frees an agent (closing its connection) and removes it from the world. */
void lt_agent_drop(struct lt_world *w, struct lt_agent *a);
/* lt_agent_record is the event callback (records; with a->script also answers). */
void lt_agent_record(struct ing_agent *a, const struct ing_agent_event *ev, void *arg);

/* lt_fork_agent runs a scripted agent (reconnecting) in a child process until teardown.
 * Environments as lt_agent_new. */
pid_t lt_fork_agent_at(const char *file, int line, struct lt_world *w, const char *name,
                       uint32_t slots, ...) __attribute__((sentinel));
#define lt_fork_agent(...) lt_fork_agent_at(__FILE__, __LINE__, __VA_ARGS__)

/* ---- spinning ---- */

typedef bool lt_cond_fn(struct lt_world *w, void *arg);

/* lt_spin polls every fd of the world once (at most ms) and processes what is ready. */
void lt_spin(struct lt_world *w, int ms);
/* lt_until spins until cond is true; fails the test at the deadline with what. */
void lt_until_at(const char *file, int line, struct lt_world *w, lt_cond_fn *cond, void *arg,
                 const char *what);
#define lt_until(...) lt_until_at(__FILE__, __LINE__, __VA_ARGS__)

/* lt_expect_cev spins until client cl has an unused event of type (for job_id unless NULL),
 * marks it used and returns it. */
struct lt_cev *lt_expect_cev_at(const char *file, int line, struct lt_world *w,
                                struct lt_client *cl, enum ing_client_event_type type,
                                const char *job_id);
#define lt_expect_cev(...) lt_expect_cev_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_find_cev returns the first unused matching event without waiting, or NULL. */
struct lt_cev *lt_find_cev(struct lt_client *cl, enum ing_client_event_type type,
                           const char *job_id);
/* lt_expect_aev: the same for an agent. */
struct lt_aev *lt_expect_aev_at(const char *file, int line, struct lt_world *w, struct lt_agent *ag,
                                enum ing_agent_event_type type, const char *job_id);
#define lt_expect_aev(...) lt_expect_aev_at(__FILE__, __LINE__, __VA_ARGS__)
struct lt_aev *lt_find_aev(struct lt_agent *ag, enum ing_agent_event_type type, const char *job_id);

/* lt_barrier pings on cl and spins until the pong: the backend has handled every frame this
 * client sent before. */
void lt_barrier_at(const char *file, int line, struct lt_world *w, struct lt_client *cl);
#define lt_barrier(...) lt_barrier_at(__FILE__, __LINE__, __VA_ARGS__)

/* lt_wait_envs spins until the last environments of cl render as want. */
void lt_wait_envs_at(const char *file, int line, struct lt_world *w, struct lt_client *cl,
                     const char *want);
#define lt_wait_envs(...) lt_wait_envs_at(__FILE__, __LINE__, __VA_ARGS__)

/* lt_envs_render renders an environments map as "type:[n1,n2];type2:[]" ("<bad>" when it is
 * not a map of str to arrays of str). */
void lt_envs_render(struct ing_view v, char *out, size_t cap);

/* ---- a child program ---- */

/* lt_run starts argv[0] (a path) with argv, stdout and stderr on pipes, the environment
 * plus the NULL-ended "NAME=VALUE" strings of env; the world spins it. */
struct lt_proc *lt_run_at(const char *file, int line, struct lt_world *w, char *const argv[],
                          const char *const *env);
#define lt_run(...) lt_run_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_proc_wait spins until the child has exited and its pipes are closed; returns its exit
 * code (128 + signal for a signal). The proc stays readable until the next lt_run. */
int lt_proc_wait_at(const char *file, int line, struct lt_world *w);
#define lt_proc_wait(w) lt_proc_wait_at(__FILE__, __LINE__, w)
/* lt_spawn starts argv (a path) with stdin /dev/null, stdout and stderr into the file log
 * (truncated); returns its pid. lt_stop_pid sends it SIGTERM and reaps it within the
 * deadline, spinning w (SIGKILL and a failure after); returns the wait status. */
pid_t lt_spawn(char *const argv[], const char *log);
/* lt_process_env makes DIR/envs/process/default/run (for inginious-agent-process) with the
 * text script, the world's directory readable by the job user (nobody), and returns
 * DIR/envs (a buffer of the world, valid until the next call). */
const char *lt_process_env(struct lt_world *w, const char *script);
int lt_stop_pid(struct lt_world *w, pid_t pid);

/* ---- values ---- */

/* lt_mp converts JSON text into a msgpack value owned by the world (fails the test on bad
 * JSON). */
struct ing_view lt_mp_at(const char *file, int line, struct lt_world *w, const char *json);
#define lt_mp(...) lt_mp_at(__FILE__, __LINE__, __VA_ARGS__)
/* lt_mp_eq_json tells whether the msgpack value p[0..n) is the value of the JSON text. */
bool lt_mp_eq_json(const void *p, size_t n, const char *json);
/* lt_view_str copies a view as a C string ("<nil>" for nil, truncating). */
char *lt_view_str(char *dst, size_t cap, struct ing_view v);

#endif
