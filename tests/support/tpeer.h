/* SPDX-License-Identifier: MIT */
/* tpeer.h: a test peer library for the backend integration tests (tests/test_scenarios.c,
 * tests/test_failures.c).
 *
 * It starts $ING_BUILD/inginious-backend as a child process (stderr and stdout to a log file
 * in a private mkdtemp directory, addresses read back from --port-file), connects native
 * clients and agents to it (proto.md), sends messages built with the codec of
 * include/inginious/proto.h, and receives them with a deadline.
 *
 * Every wait is a poll() with a deadline (TP_DEADLINE_MS unless told otherwise); nothing
 * sleeps. Every helper that checks something fails the running cmocka test with a message
 * naming the caller's file and line (the lowercase macros below pass __FILE__ and __LINE__).
 *
 * Ownership: a struct tp_ctx owns the backend process and every peer opened through it;
 * tp_teardown() closes the peers, stops the backend by its PID (SIGTERM, then SIGKILL after
 * the deadline), dumps its log when the test did not reach its end (always with TP_LOG=1 in
 * the environment), and removes the temporary directory. A message returned by
 * tp_recv()/tp_expect() is a view into the peer's input buffer: valid until the next receive
 * on that peer.
 */
#ifndef TPEER_H
#define TPEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inginious/proto.h"

struct ing_mp_writer;

#define TP_DEADLINE_MS (5000 * tp_slow()) /* every blocking wait of a test */
#define TP_QUIET_MS 150     /* the window of tp_expect_nothing (x tp_slow()): absence checks */
#define TP_MAX_PEERS 128    /* peers per test context */
#define TP_PATH_MAX 256

/* Raw bytes (usually one pre-encoded msgpack value). p == NULL means "not given" or nil,
 * as the field using it says. */
struct tp_bytes {
    const void *p;
    size_t len;
};
#define TP_RAW(lit) ((struct tp_bytes){(lit), sizeof(lit) - 1})
#define TP_NONE ((struct tp_bytes){NULL, 0})

/* The backend under test. */
struct tp_backend {
    pid_t pid;                     /* 0 when not running */
    int pidfd;                     /* pidfd of the child, -1 if unavailable */
    int status;                    /* waitpid status once reaped */
    bool reaped;                   /* the child was waited for */
    char dir[TP_PATH_MAX];         /* mkdtemp directory (log, port file, ipc sockets) */
    char log_path[TP_PATH_MAX];    /* its stderr and stdout */
    char port_path[TP_PATH_MAX];   /* --port-file */
    int err_fd;                    /* > 0 before tp_start: the backend's stderr goes to this
                                    * descriptor (a pipe nobody reads), not to the log */
    char agent_addr[TP_PATH_MAX];  /* bound agent endpoint, from the port file */
    char client_addr[TP_PATH_MAX]; /* bound client endpoint */
};

/* Copy of the Welcome a peer received. */
struct tp_welcome {
    uint8_t version;
    uint8_t role;
    uint16_t flags;
    uint32_t max_frame;
    uint32_t heartbeat_ms;
    uint8_t nonce[ING_NONCE_LEN];
    char server[128];
};

/* One connection to the backend. */
struct tp_peer {
    int fd;             /* non-blocking, close-on-exec */
    char label[48];     /* for failure messages */
    uint8_t role;       /* ING_ROLE_*, 0 for a raw connection */
    bool auto_pong;     /* answer every Ping with a Pong (agents: default true) */
    bool see_pings;     /* return Pings from tp_recv instead of skipping them */
    bool lenient;       /* sending helpers ignore write errors (peer may be closed) */
    bool eof;           /* the backend closed the connection */
    unsigned pings;     /* Pings received so far */
    uint8_t *in;        /* input buffer */
    size_t in_len;      /* bytes in it */
    size_t in_cap;      /* its size */
    size_t last;        /* size of the frame handed out by the last receive */
    struct ing_msg msg; /* that frame, decoded (views into in) */
    struct tp_welcome welcome;
};

/* One test: its backend and its peers. Installed by tp_setup as cmocka's state. */
struct tp_ctx {
    struct tp_backend be;
    struct tp_peer *peers[TP_MAX_PEERS];
    size_t n_peers;
    unsigned serial; /* peer labels */
    bool ok;         /* the test body reached its end (see TP_TEST) */
};

/* TP_TEST(name) defines the cmocka test function name(void **state) whose body sees the
 * context as `c`; reaching the end of the body marks the test as passed for tp_teardown
 * (which otherwise dumps the backend's log). */
#define TP_TEST(name)                                                                              \
    static void name##_body(struct tp_ctx *c);                                                     \
    static void name(void **state)                                                                 \
    {                                                                                              \
        struct tp_ctx *ctx_ = *state;                                                              \
        name##_body(ctx_);                                                                         \
        ctx_->ok = true;                                                                           \
    }                                                                                              \
    static void name##_body(struct tp_ctx *c)

#define TP_CASE(name) cmocka_unit_test_setup_teardown(name, tp_setup, tp_teardown)

/* tp_setup allocates a context into *state (cmocka setup). Returns 0 or -1. */
/* tp_slow: the factor $ING_SLOW (default 1) stretching every deadline (valgrind runs). */
int tp_slow(void);
/* tp_exec runs argv, prefixed by the words of $ING_WRAPPER when set (e.g. valgrind), in the
 * child process (after fork). Returns only on failure. Used by libtest.c too. */
void tp_exec(const char *const *argv);
int tp_setup(void **state);

/* tp_teardown closes every peer, stops the backend (checking that it exits with status 0
 * when the test passed), dumps the backend log when the test failed, removes the temporary
 * directory and frees the context. Returns 0, or -1 if the backend misbehaved on exit. */
int tp_teardown(void **state);

/* tp_fail_at fails the running test with a printf-style message located at file:line. */
_Noreturn void tp_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define tp_fail(...) tp_fail_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_now_ms returns CLOCK_MONOTONIC in milliseconds. */
uint64_t tp_now_ms(void);

/* ---- the backend process ---- */

/* tp_backend_bin returns the path of the backend binary: $ING_BUILD/inginious-backend
 * ($ING_BUILD defaults to "build"). The string is static. */
const char *tp_backend_bin(void);

/* tp_start_argv starts the backend with agent and client addresses (NULL: tcp://127.0.0.1:0),
 * the options opts (NULL-terminated, may be NULL) and "-v", "--port-file" plus a default
 * "--drain-timeout 300ms" unless opts set one. Waits for the port file and fails the test if
 * the backend does not come up within the deadline. */
void tp_start_argv_at(const char *file, int line, struct tp_ctx *c, const char *agent_addr,
                      const char *client_addr, const char *const *opts);
/* tp_start(c, options..., NULL): tp_start_argv with default addresses. */
void tp_start_at(const char *file, int line, struct tp_ctx *c, ...) __attribute__((sentinel));
/* tp_start_addrs(c, agent, client, options..., NULL). */
void tp_start_addrs_at(const char *file, int line, struct tp_ctx *c, const char *agent_addr,
                       const char *client_addr, ...) __attribute__((sentinel));
#define tp_start(...) tp_start_at(__FILE__, __LINE__, __VA_ARGS__)
#define tp_start_addrs(...) tp_start_addrs_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_dir returns the test's temporary directory (created on first use; the backend's log
 * and port file go there; removed by tp_teardown). */
const char *tp_dir_at(const char *file, int line, struct tp_ctx *c);
#define tp_dir(...) tp_dir_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_run runs the backend with args (NULL-terminated) and no port file, collects its stdout
 * and stderr into out (NUL-terminated, truncated to cap) and returns its waitpid status; the
 * test fails if it does not exit within the deadline. */
int tp_run_at(const char *file, int line, const char *const *args, char *out, size_t cap);
#define tp_run(...) tp_run_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_bad_options runs the backend with each (option, value) of bad[0..n) and fails
 * unless it exits with status 2 and says "bad value for OPTION". */
void tp_expect_bad_options_at(const char *file, int line, const char *const (*bad)[2], size_t n);
#define tp_expect_bad_options(...) tp_expect_bad_options_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_signal sends sig to the running backend. */
void tp_signal(struct tp_ctx *c, int sig);

/* tp_wait_exit waits up to timeout_ms for the backend to exit and returns its waitpid
 * status, or -1 if it is still running at the deadline. */
int tp_wait_exit(struct tp_ctx *c, int timeout_ms);

/* tp_stop sends SIGTERM, waits up to the deadline (then SIGKILL and waits again) and returns
 * the waitpid status. The context can start a new backend afterwards. */
int tp_stop(struct tp_ctx *c);

/* tp_dump_log copies the backend's log (its last 64 KiB) to stderr. */
void tp_dump_log(const struct tp_ctx *c);

/* tp_log_contains tells whether the backend's log holds needle. */
bool tp_log_contains(const struct tp_ctx *c, const char *needle);

/* ---- connections ---- */

/* tp_open connects to addr (tcp://H:P, tcp://[H]:P, ipc:///path) and sends nothing. Returns
 * the peer, or NULL with errno set (the test is not failed). */
struct tp_peer *tp_open(struct tp_ctx *c, const char *addr);

/* tp_connect opens a connection to the endpoint of role, sends the preamble and expects the
 * Welcome (checking version 1 and the echoed role). Agents get auto_pong. */
struct tp_peer *tp_connect_at(const char *file, int line, struct tp_ctx *c, uint8_t role);
#define tp_connect(...) tp_connect_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_client connects a client, sends ClientHello{name} and expects BackendUpdateEnvironments
 * rendered as want (see tp_envs_render; NULL: not checked). */
struct tp_peer *tp_client_at(const char *file, int line, struct tp_ctx *c, const char *name,
                             const char *want);
#define tp_client(...) tp_client_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_agent connects an agent and sends AgentHello{name, slots, envs} where the variadic
 * list holds "type/name" strings (id "i1", created 1, advertised) ended by NULL. */
struct tp_peer *tp_agent_at(const char *file, int line, struct tp_ctx *c, const char *name,
                            uint32_t slots, ...) __attribute__((sentinel));
#define tp_agent(...) tp_agent_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_close closes a peer (orderly FIN) and forgets it. */
void tp_close(struct tp_ctx *c, struct tp_peer *p);

/* tp_abort closes a peer with a TCP reset (SO_LINGER 0) and forgets it. */
void tp_abort(struct tp_ctx *c, struct tp_peer *p);

/* ---- sending ---- */

/* tp_send encodes m and writes it. */
void tp_send_at(const char *file, int line, struct tp_peer *p, const struct ing_msg *m);
#define tp_send(...) tp_send_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_client_hello sends ClientHello{name}. */
void tp_client_hello_at(const char *file, int line, struct tp_peer *p, const char *name);
#define tp_client_hello(...) tp_client_hello_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_msg_frame encodes m into a malloc'd frame (size in *len); fails the test if it cannot. */
uint8_t *tp_msg_frame_at(const char *file, int line, const struct ing_msg *m, size_t *len);
#define tp_msg_frame(...) tp_msg_frame_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_send_type sends a message with an empty body (Ping, Pong, ClientGetQueue, ...). */
void tp_send_type_at(const char *file, int line, struct tp_peer *p, uint8_t type);
#define tp_send_type(...) tp_send_type_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_send_fd writes len bytes to a non-blocking fd within timeout_ms. Returns 0 or -errno
 * (-ETIMEDOUT; does not fail the test). */
int tp_send_fd(int fd, const void *buf, size_t len, int timeout_ms);
/* tp_write writes raw bytes to p within TP_DEADLINE_MS. Returns 0 or -errno (does not fail
 * the test). */
int tp_write(struct tp_peer *p, const void *buf, size_t len);

/* tp_send_raw writes raw bytes and fails the test on error. */
void tp_send_raw_at(const char *file, int line, struct tp_peer *p, const void *buf, size_t len);
#define tp_send_raw(...) tp_send_raw_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_send_frame writes one frame: header(type, body length, flags) and body. */
void tp_send_frame_at(const char *file, int line, struct tp_peer *p, uint8_t type, uint8_t flags,
                      const void *body, size_t len);
#define tp_send_frame(...) tp_send_frame_at(__FILE__, __LINE__, __VA_ARGS__)

/* A job as a client submits it. Zero-initialise and set what matters: the defaults are
 * priority 0, launcher "tester", course and task nil, environment docker/default, debug 0,
 * task_problems {}, inputdata {} (plus "@state" and "v" when set), environment_parameters
 * {} (or {"limits": {"time": ...}} when has_time or time_raw is set). */
struct tp_job {
    const char *id;
    int64_t priority;
    const char *launcher;
    const char *course;   /* NULL = nil */
    const char *task;     /* NULL = nil */
    const char *env_type; /* NULL = "docker" */
    const char *env;      /* NULL = "default" */
    uint8_t debug;
    const char *state; /* inputdata["@state"] (str), NULL = absent */
    const char *input; /* inputdata["v"] (str), NULL = absent */
    bool has_time;
    int64_t time;                  /* environment_parameters.limits.time */
    struct tp_bytes time_raw;      /* ... as a raw msgpack value instead */
    struct tp_bytes problems_raw;  /* task_problems override (raw msgpack) */
    struct tp_bytes inputdata_raw; /* inputdata override */
    struct tp_bytes params_raw;    /* environment_parameters override */
    size_t pad;                    /* adds inputdata["pad"] = pad bytes of 'x' */
};

/* tp_job_frame encodes the job as a frame of type ING_CLIENT_NEW_JOB or ING_BACKEND_NEW_JOB
 * (what the agent must receive). Returns a malloc'd buffer (free it) and its size in *len. */
uint8_t *tp_job_frame(const struct tp_job *j, uint8_t type, size_t *len);

/* tp_send_job sends ClientNewJob. */
void tp_send_job_at(const char *file, int line, struct tp_peer *p, const struct tp_job *j);
#define tp_send_job(...) tp_send_job_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_submit sends ClientNewJob(id, priority) for docker/default with @state "S-<id>". */
void tp_submit_at(const char *file, int line, struct tp_peer *p, const char *id, int64_t priority);
#define tp_submit(...) tp_submit_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_kill sends ClientKillJob(id). */
void tp_kill_at(const char *file, int line, struct tp_peer *p, const char *id);
#define tp_kill(...) tp_kill_at(__FILE__, __LINE__, __VA_ARGS__)

/* An environment of an AgentHello. */
enum tp_adv {
    TP_ADV_TRUE,   /* advertised: true */
    TP_ADV_FALSE,  /* advertised: false */
    TP_ADV_ABSENT, /* no advertised key */
};
struct tp_env {
    const char *type;
    const char *name;
    const char *id; /* NULL = "i1" */
    int64_t created;
    enum tp_adv advertised;
};

/* tp_envs_mp writes AgentHello's available_environments for envs[0..n) into w, made a
 * dynamic writer here: the caller releases it with ing_mp_writer_fini. */
void tp_envs_mp_at(const char *file, int line, const struct tp_env *envs, size_t n,
                   struct ing_mp_writer *w);
#define tp_envs_mp(...) tp_envs_mp_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_hello sends AgentHello{name, slots, envs[0..n)}. */
void tp_hello_at(const char *file, int line, struct tp_peer *p, const char *name, uint32_t slots,
                 const struct tp_env *envs, size_t n);
#define tp_hello(...) tp_hello_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_hello_raw sends AgentHello with a raw available_environments value. */
void tp_hello_raw_at(const char *file, int line, struct tp_peer *p, const char *name,
                     uint32_t slots, struct tp_bytes envs);
#define tp_hello_raw(...) tp_hello_raw_at(__FILE__, __LINE__, __VA_ARGS__)

/* A job result as an agent reports it. Zero-initialise: kind "success", text "", grade 0,
 * problems/tests/custom {}, state "", archive nil, stdout and stderr nil. */
struct tp_result {
    const char *id;
    const char *kind;
    const char *text;
    double grade;
    struct tp_bytes problems;
    struct tp_bytes tests;
    struct tp_bytes custom;
    const char *state;
    struct tp_bytes archive; /* p == NULL: nil */
    const char *out;         /* NULL: nil */
    const char *err;         /* NULL: nil */
};

/* tp_result_frame encodes the result as a frame of type ING_AGENT_JOB_DONE or
 * ING_BACKEND_JOB_DONE. Returns a malloc'd buffer and its size in *len. */
uint8_t *tp_result_frame(const struct tp_result *r, uint8_t type, size_t *len);

void tp_done_full_at(const char *file, int line, struct tp_peer *p, const struct tp_result *r);
#define tp_done_full(...) tp_done_full_at(__FILE__, __LINE__, __VA_ARGS__)
/* tp_done sends AgentJobDone(id, kind, "", 100.0 for success else 0.0, {}, {}, {}, state,
 * nil, "", ""). */
void tp_done_at(const char *file, int line, struct tp_peer *p, const char *id, const char *kind,
                const char *state);
#define tp_done(...) tp_done_at(__FILE__, __LINE__, __VA_ARGS__)
/* tp_started sends AgentJobStarted(id). */
void tp_started_at(const char *file, int line, struct tp_peer *p, const char *id);
#define tp_started(...) tp_started_at(__FILE__, __LINE__, __VA_ARGS__)
/* tp_ssh sends AgentJobSSHDebug. */
void tp_ssh_at(const char *file, int line, struct tp_peer *p, const char *id, const char *host,
               uint32_t port, const char *user, const char *password);
#define tp_ssh(...) tp_ssh_at(__FILE__, __LINE__, __VA_ARGS__)

/* ---- receiving ---- */

/* tp_recv returns the next message within timeout_ms: its type (> 0) with *m set, or
 * -ETIMEDOUT, -EPIPE (connection closed by the backend), or a decode error (< 0). Pings are
 * counted, answered when auto_pong is set and skipped unless see_pings is set. */
int tp_recv(struct tp_peer *p, int timeout_ms, const struct ing_msg **m);

/* tp_expect receives the next message (deadline TP_DEADLINE_MS) and checks its type. */
const struct ing_msg *tp_expect_at(const char *file, int line, struct tp_peer *p, uint8_t type);
#define tp_expect(...) tp_expect_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_nothing checks that no message arrives within ms x tp_slow() (and that the connection stays
 * open). */
void tp_expect_nothing_at(const char *file, int line, struct tp_peer *p, int ms);
#define tp_expect_nothing(...) tp_expect_nothing_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_quiet checks that no peer of the context receives anything within ms x tp_slow(). */
void tp_expect_quiet_at(const char *file, int line, struct tp_ctx *c, int ms);
#define tp_expect_quiet(...) tp_expect_quiet_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_closed checks that the backend closes the connection within the deadline
 * (frames before the close are skipped only if they are Errors or Pings). */
void tp_expect_closed_at(const char *file, int line, struct tp_peer *p);
#define tp_expect_closed(...) tp_expect_closed_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_error expects an Error frame with the given code. */
const struct ing_msg *tp_expect_error_at(const char *file, int line, struct tp_peer *p,
                                         uint16_t code);
#define tp_expect_error(...) tp_expect_error_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_done expects BackendJobDone for id with the given kind; text and state are
 * checked unless NULL. */
const struct ing_msg *tp_expect_done_at(const char *file, int line, struct tp_peer *p,
                                        const char *id, const char *kind, const char *text,
                                        const char *state);
#define tp_expect_done(...) tp_expect_done_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_synthetic is tp_expect_done plus the checks of a result the backend made
 * itself (proto.md §5.4): grade 0.0, problems/tests/custom {}, archive nil, stdout and
 * stderr "". */
const struct ing_msg *tp_expect_synthetic_at(const char *file, int line, struct tp_peer *p,
                                             const char *id, const char *kind, const char *text,
                                             const char *state);
#define tp_expect_synthetic(...) tp_expect_synthetic_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_check_synthetic checks the synthetic-result fields of a decoded BackendJobDone. */
void tp_check_synthetic_at(const char *file, int line, const struct ing_msg *m);
#define tp_check_synthetic(...) tp_check_synthetic_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_job expects BackendNewJob for id (an agent). */
const struct ing_msg *tp_expect_job_at(const char *file, int line, struct tp_peer *p,
                                       const char *id);
#define tp_expect_job(...) tp_expect_job_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_expect_envs expects BackendUpdateEnvironments whose rendering (tp_envs_render) is
 * want, e.g. "docker:[default,hidden];mcq:[]" ("" for the empty map). */
void tp_expect_envs_at(const char *file, int line, struct tp_peer *p, const char *want);
#define tp_expect_envs(...) tp_expect_envs_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_barrier sends Ping on a registered client and expects Pong: every frame sent before on
 * that connection has been processed. */
void tp_barrier_at(const char *file, int line, struct tp_peer *p);
#define tp_barrier(...) tp_barrier_at(__FILE__, __LINE__, __VA_ARGS__)

/* tp_frame returns the raw bytes of the last message received on p (header included). */
const uint8_t *tp_frame(const struct tp_peer *p, size_t *len);

/* ---- reading values ---- */

/* tp_envs_render renders a BackendUpdateEnvironments map as "type:[n1,n2];type2:[]": types
 * sorted, names in the order received. Writes "<bad>" if the value is not a map of str to
 * arrays of str. */
void tp_envs_render(struct ing_view v, char *out, size_t cap);

/* tp_cpy copies a view into a NUL-terminated string (truncating); "<nil>" for nil. */
char *tp_cpy(char *dst, size_t cap, struct ing_view v);

/* tp_view_is tells whether a non-nil view equals s. */
bool tp_view_is(struct ing_view v, const char *s);

/* tp_view_bytes tells whether a view holds exactly the bytes b (nil matches b.p == NULL). */
bool tp_view_bytes(struct ing_view v, struct tp_bytes b);

/* A copied BackendGetQueue. */
struct tp_qentry {
    char id[256];
    bool mine;
    char agent[256];
    char info[512];
    char launcher[1024];
    int64_t started_at;
    int64_t max_time;
};
struct tp_queue {
    uint32_t n_running;
    uint32_t n_waiting;
    struct tp_qentry *running;
    struct tp_qentry *waiting;
};

/* tp_get_queue sends ClientGetQueue and copies the BackendGetQueue answer into q (free it
 * with tp_queue_free). */
void tp_get_queue_at(const char *file, int line, struct tp_peer *p, struct tp_queue *q);
#define tp_get_queue(...) tp_get_queue_at(__FILE__, __LINE__, __VA_ARGS__)
void tp_queue_free(struct tp_queue *q);

/* tp_queue_ids renders the running or waiting ids of q as "a,b,c". */
void tp_queue_ids(const struct tp_queue *q, bool running, char *out, size_t cap);

/* tp_ipv6_loopback tells whether ::1 can be bound (IPv6 tests skip otherwise). */
bool tp_ipv6_loopback(void);

/* tp_fill_queue sends n ClientNewJob w000, w001, ... (docker/default, the given launcher)
 * on p, then a barrier: they are all queued. */
void tp_fill_queue_at(const char *file, int line, struct tp_peer *p, int n, const char *launcher);
#define tp_fill_queue(...) tp_fill_queue_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
