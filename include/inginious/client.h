/* SPDX-License-Identifier: MIT */
/* client.h: the client side of libinginious (native protocol, proto.md).
 *
 * A client connects to the backend's client endpoint, says hello, and then submits jobs,
 * kills jobs, asks for the queue and pings. The backend answers with events: the
 * environments it offers, the start, SSH debug access and result of each job this
 * connection submitted, queue snapshots, pongs, and protocol errors.
 *
 * Pending jobs. The client tracks every job it submitted that has no BackendJobDone yet.
 * When the connection is lost (or the backend answers Unknown: it no longer knows this
 * client), each pending job is reported done with kind "crash", text "Backend unavailable,
 * retry later", grade 0, empty maps, state "", archive nil and stdout/stderr "", with
 * ev->lost set: the result was made here, because the backend will never send one (proto.md
 * §8; the INGInious client does the same). Jobs are never resubmitted, unless the client
 * uses a session.
 *
 * Sessions (opts.session, proto.md §7.9). The client opens a session with a 128-bit id
 * (opts.session_id, or a random one: ing_client_session_id tells it). Its jobs then outlive
 * the connection: when it is lost and opts.reconnect is set, the pending jobs stay pending
 * (no lost results); each new connection resumes the session, receives the results the
 * backend kept meanwhile (ING_CLIENT_EV_DONE), then the list of the jobs the backend still
 * holds: a listed job not pending here (submitted by an earlier ing_client on the same id)
 * becomes pending; a pending job that is not listed and was sent on an earlier connection is
 * submitted again (the backend never got it, or lost it in a restart without its journal);
 * a pending job neither listed nor resubmittable is reported lost. ING_CLIENT_EV_RESUMED
 * follows. A program thus sees each job end once across connection losses and backend
 * restarts. When the backend offers it (Welcome flag SESSION_ACK) the client acknowledges
 * the results it reads (ClientSessionAck, once per read batch, before any later request):
 * the backend keeps each result until then and sends the unacknowledged ones again on the
 * next connection, where one already given to the program is dropped
 * (ing_client_duplicates counts them); so a result lost with a connection or a killed
 * backend does not make its job run again. Two clients must not share an id: each takes
 * the session from the other. A backend without sessions gets a plain hello (and today's
 * semantics).
 *
 * Unknown. The backend answers Unknown to a client it does not know. The library then
 * reports the pending jobs lost, says hello again on the same connection and reports
 * ING_CLIENT_EV_UNKNOWN; the hello's answer comes as ING_CLIENT_EV_ENVS.
 *
 * Authentication. With opts.secret the client answers the backend's challenge (proto.md §6)
 * and checks its proof before saying hello; requests are refused (-ENOTCONN) until then.
 * Without a secret, a backend that requires one is refused by ing_client_connect (-EPROTO).
 *
 * Reconnecting. With opts.reconnect a lost connection is retried after a delay doubling
 * from backoff_min_ms to backoff_max_ms (reset by a successful opening); every new
 * connection says hello again and is reported with ING_CLIENT_EV_CONNECTED. Without it,
 * process() returns the error from then on.
 *
 * Two ways to use it:
 *  - non-blocking: watch ing_client_fd() for reading (and writing while
 *    ing_client_want_write() is true) in your own poll/epoll loop, call
 *    ing_client_process() when it is ready or when ing_client_timeout_ms() has passed;
 *    events are delivered to the callback given to process. Requests (submit, kill,
 *    get_queue, ping) only queue a frame and try to send it at once.
 *  - blocking: ing_client_submit_wait(), ing_client_get_queue_wait(), ing_client_ping_wait()
 *    send a request and wait for its answer, delivering every other event to an optional
 *    callback meanwhile.
 * The fd changes across reconnects: re-read it after ING_CLIENT_EV_CONNECTED.
 *
 * Views. Every struct ing_view in an event points into the client's input buffer and is
 * valid only during the callback; copy what you keep (ing_client_result_copy,
 * ing_client_queue_copy). A callback may call the request functions (submit, kill,
 * get_queue, ping) but never process, wait, the *_wait functions, connect or free.
 *
 * Structs that grow. struct ing_client_opts and struct ing_client_job begin with a size
 * field: set it to sizeof the struct (or leave it 0, which means the fields of release
 * 1.0). Later 1.x releases only add fields at their end and read a field only when size
 * covers it, so a program built against older headers keeps working with a newer shared
 * library. Event structs are written by the library and only read by the callback: they may
 * gain fields at the end. struct ing_client_result and struct ing_client_queue keep their
 * 1.0 layout in every 1.x release.
 *
 * Errors: the functions return 0 (or a count) or a negative errno value; err.h lists
 * every one.
 *
 * Thread safety: not thread-safe per object. One struct ing_client is used by one thread at
 * a time (different objects in different threads are independent); the callback runs in
 * the thread that called process or wait. ing_client_uuid4 and the *_copy, *_free and
 * *_to_mp helpers are reentrant. */
#ifndef INGINIOUS_CLIENT_H
#define INGINIOUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inginious/mp.h"
#include "inginious/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ing_client;

#define ING_CLIENT_DEFAULT_ADDR "tcp://127.0.0.1:2000"
#define ING_CLIENT_LOST_TEXT "Backend unavailable, retry later"
#define ING_CLIENT_UUID_SIZE 37 /* 36 characters and the NUL */

struct ing_client_opts {
    size_t size;            /* sizeof(struct ing_client_opts), or 0: the 1.0 fields */
    const char *addr;       /* client endpoint: tcp://HOST:PORT, ipc:///path (NULL: default) */
    const char *name;       /* ClientHello name, at most 255 bytes (NULL: "") */
    bool reconnect;         /* reconnect (with backoff) when the connection drops */
    int backoff_min_ms;     /* first retry delay (default 100) */
    int backoff_max_ms;     /* largest retry delay (default 10000) */
    int connect_timeout_ms; /* the blocking ing_client_connect, and each reconnect (5000) */
    const uint8_t *secret;  /* the client endpoint's secret (proto.md §6), copied; NULL: none */
    size_t secret_len;
    /* Read only when size covers it (size 0: false). acks: ask for BackendJobAccepted (proto.md
     * §7.8): ING_CLIENT_EV_ACCEPTED once the backend has written each job's record. The
     * hello then waits for the Welcome (is_connected is false until it came); a backend
     * that does not offer acknowledgements gets a plain ClientHello (no ACCEPTED events). */
    bool acks;
    /* Read only when size covers it. session: open a session (implies acks); session_id:
     * its 16 bytes (copied), NULL: a random id. */
    bool session;
    const uint8_t *session_id;
    /* Read only when size covers it. session_hold: this client only submits: the session's
     * results are kept by the backend for a later client (proto.md §7.9, HOLD). */
    bool session_hold;
};

/* A job to submit (ClientNewJob, proto.md §5.3). Strings are NUL-terminated UTF-8; the three
 * msgpack fields are views holding one msgpack value each (p == NULL: the empty map). */
struct ing_client_job {
    size_t size;                            /* sizeof(struct ing_client_job), or 0: 1.0 */
    const char *job_id;                     /* required, 1-255 bytes; see ing_client_uuid4 */
    int64_t priority;                       /* smaller is served earlier; INGInious: 0, replays 1 */
    const char *launcher;                   /* shown in the queue (NULL: "") */
    const char *course_id;                  /* NULL: nil (a taskless job) */
    const char *task_id;                    /* NULL: nil */
    const char *environment_type;           /* required, e.g. "docker" */
    const char *environment;                /* required, e.g. "default" */
    enum ing_debug debug;                   /* ING_DEBUG_OFF, _ON, _SSH */
    struct ing_view task_problems;          /* mp map: problem id -> description */
    struct ing_view inputdata;              /* mp map: the input; "@state" is a str */
    struct ing_view environment_parameters; /* mp map, e.g. {"limits": {"time": 30}} */
};

enum ing_client_event_type {
    ING_CLIENT_EV_CONNECTED,    /* connection opened and hello sent (also after reconnects) */
    ING_CLIENT_EV_DISCONNECTED, /* connection lost: err; lost DONE events follow */
    ING_CLIENT_EV_UNKNOWN,      /* the backend answered Unknown: hello sent again; lost DONE
                                   events follow */
    ING_CLIENT_EV_ENVS,         /* BackendUpdateEnvironments: envs */
    ING_CLIENT_EV_STARTED,      /* BackendJobStarted: job_id */
    ING_CLIENT_EV_SSH_DEBUG,    /* BackendJobSSHDebug: job_id, ssh */
    ING_CLIENT_EV_DONE,         /* BackendJobDone (or a lost job): job_id, result, lost */
    ING_CLIENT_EV_QUEUE,        /* BackendGetQueue: queue */
    ING_CLIENT_EV_PONG,         /* Pong: rtt_ms */
    ING_CLIENT_EV_ERROR,        /* the backend sent Error: code, text */
    ING_CLIENT_EV_STATS,        /* BackendStats: stats */
    ING_CLIENT_EV_JOB_INFO,     /* BackendJobInfo: job_id, job_info */
    ING_CLIENT_EV_ACCEPTED,     /* BackendJobAccepted (opts.acks): job_id, pending; the job
                                   is durable as the backend's --fsync mode promises */
    ING_CLIENT_EV_RESUMED,      /* (opts.session) this connection resumed the session: every
                                   job the backend holds is pending, the others were
                                   resubmitted or reported lost */
};

struct ing_client_event {
    enum ing_client_event_type type;
    struct ing_view job_id;              /* ACCEPTED, STARTED, SSH_DEBUG, DONE */
    bool pending;                        /* ACCEPTED, STARTED, SSH_DEBUG, DONE: a job this client
                                            tracks (false: a late or foreign report) */
    const struct ing_job_result *result; /* DONE */
    bool lost;                           /* DONE: synthesised locally because the connection
                                            was lost or the backend forgot this client;
                                            no BackendJobDone will ever come */
    const struct ing_ssh_debug *ssh;     /* SSH_DEBUG */
    const struct ing_get_queue *queue;   /* QUEUE: read it with ing_client_queue_copy */
    struct ing_view envs;                /* ENVS: mp map type -> array of names */
    double rtt_ms;                       /* PONG: round trip of that ping, -1 if unknown */
    uint16_t code;                       /* ERROR: enum ing_error_code */
    struct ing_view text;                /* ERROR */
    int err;                             /* DISCONNECTED: -errno */
    struct ing_view stats;               /* STATS: mp map (proto.md §5.8) */
    struct ing_view job_info;            /* JOB_INFO: mp map (proto.md §5.9) */
};

typedef void ing_client_event_fn(struct ing_client *c, const struct ing_client_event *ev,
                                 void *arg);

/* ing_client_new copies opts and parses the address (a host name is resolved here). Does
 * not connect. Returns NULL on a bad option (errno EINVAL, also for a size field that is
 * neither 0 nor at least the 1.0 struct's size; ing_client_last_error may say
 * why) or no memory. */
struct ing_client *ing_client_new(const struct ing_client_opts *opts);
/* ing_client_free closes the connection and frees everything (pending jobs are dropped
 * without events). NULL is allowed. */
void ing_client_free(struct ing_client *c);

/* ing_client_connect connects (blocking, at most opts.connect_timeout_ms), sends the
 * preamble and ClientHello, and waits for the Welcome and the hello's environments
 * (ing_client_envs). The socket is non-blocking afterwards. Returns 0 or -errno:
 * -ECONNREFUSED, -ENOENT (no unix socket), -ETIMEDOUT, -EPROTO when the server refused
 * (ing_client_last_error: a role, limit or authentication error, a secret missing or
 * wrong, a backend that failed to prove it knows the secret), -EISCONN when already
 * connected. On failure with opts.reconnect,
 * process() retries after the backoff. ING_CLIENT_EV_CONNECTED is delivered by the next
 * process call. */
int ing_client_connect(struct ing_client *c);

/* ing_client_fd: the socket to watch (-1 while disconnected). */
int ing_client_fd(const struct ing_client *c);
/* ing_client_want_write: output is pending (watch for POLLOUT too). */
bool ing_client_want_write(const struct ing_client *c);
/* ing_client_is_connected: requests are accepted: the connection is open, or opening with no
 * authentication to come first. */
bool ing_client_is_connected(const struct ing_client *c);
/* ing_client_timeout_ms: how long the caller may wait before calling process again
 * (0: now; -1: no limit). */
int ing_client_timeout_ms(const struct ing_client *c);

/* ing_client_process does every non-blocking step: reconnects when due, flushes output,
 * reads and handles what arrived, calling fn (may be NULL) for each event. Returns 0, or
 * -errno when disconnected and not reconnecting. */
int ing_client_process(struct ing_client *c, ing_client_event_fn *fn, void *arg);
/* ing_client_wait polls up to timeout_ms (-1: no limit; shortened to the library's own
 * deadlines), then processes. Returns as ing_client_process. */
int ing_client_wait(struct ing_client *c, int timeout_ms, ing_client_event_fn *fn, void *arg);

/* Requests. Each queues one frame and sends it at once when the socket allows; the rest
 * goes out with the next process call. They return 0, -ENOTCONN (no connection), -ENOMEM,
 * and for submit also -EINVAL (a size field that is neither 0 nor at least the 1.0
 * struct's size, a missing or invalid field: job id or environment empty or
 * over 255 bytes, invalid UTF-8, a msgpack view that is not one valid value, debug > 2),
 * -EEXIST (a pending job of this client has that id) or -EMSGSIZE (over the server's
 * max_frame). */

/* ing_client_submit sends ClientNewJob and tracks the job as pending. */
int ing_client_submit(struct ing_client *c, const struct ing_client_job *job);
/* ing_client_kill sends ClientKillJob(job_id): any job of any client (proto.md §7.1). */
int ing_client_kill(struct ing_client *c, const char *job_id);
/* ing_client_get_queue sends ClientGetQueue; the answer is an ING_CLIENT_EV_QUEUE event. */
int ing_client_get_queue(struct ing_client *c);
/* ing_client_get_stats sends ClientGetStats; the answer is an ING_CLIENT_EV_STATS event. */
int ing_client_get_stats(struct ing_client *c);
/* ing_client_get_job_info sends ClientGetJobInfo(job_id): where the job is, its position and
 * ETA; the answer is an ING_CLIENT_EV_JOB_INFO event. Native backends only. */
int ing_client_get_job_info(struct ing_client *c, const char *job_id);
/* ing_client_ping sends Ping; the answer is an ING_CLIENT_EV_PONG event with its rtt. Also
 * returns -ENOBUFS when too many pings are still unanswered. */
int ing_client_ping(struct ing_client *c);

/* ing_client_envs returns the last BackendUpdateEnvironments map (msgpack: type -> array of
 * names), a view valid until the next process call; p == NULL if none was received. */
struct ing_view ing_client_envs(const struct ing_client *c);
/* ing_client_pending returns the number of pending jobs. */
size_t ing_client_pending(const struct ing_client *c);
/* ing_client_is_pending tells whether job_id is one of this client's pending jobs. */
bool ing_client_is_pending(const struct ing_client *c, const char *job_id);
/* ing_client_server returns the server name of the last Welcome ("" before the first). */
const char *ing_client_server(const struct ing_client *c);
/* ing_client_acks: the connection is open and its hello asked for acknowledgements (opts.acks
 * and a backend that offers them): each accepted job gets ING_CLIENT_EV_ACCEPTED. */
bool ing_client_acks(const struct ing_client *c);
/* ing_client_session_id copies the session id (opts.session) to out. Returns 0, or -EINVAL
 * for a client without session. */
int ing_client_session_id(const struct ing_client *c, uint8_t out[ING_SESSION_ID_LEN]);
/* ing_client_resumed: this connection's session list has arrived (ING_CLIENT_EV_RESUMED). */
bool ing_client_resumed(const struct ing_client *c);
/* ing_client_sessions: the connection is open and the backend offers sessions (its Welcome
 * has ING_WELCOME_SESSION). */
bool ing_client_sessions(const struct ing_client *c);
/* ing_client_duplicates: the results the backend sent again that this client had already
 * given the program (their acknowledgement was lost with a connection, proto.md 7.9):
 * dropped, not reported. */
uint64_t ing_client_duplicates(const struct ing_client *c);
/* ing_client_last_error returns the text of the last Error the backend sent (or of the
 * protocol problem that closed the connection), or "". */
const char *ing_client_last_error(const struct ing_client *c);

/* A result copied out of an event: owned by the caller, released with
 * ing_client_result_free. Every non-nil view of r is also NUL-terminated (for printing). */
struct ing_client_result {
    struct ing_job_result r;
    bool lost; /* synthesised locally (see ING_CLIENT_EV_DONE) */
    void *mem; /* private: the copied bytes */
};

/* ing_client_result_copy copies src into *dst. Returns 0 or -ENOMEM (dst zeroed). */
int ing_client_result_copy(struct ing_client_result *dst, const struct ing_job_result *src,
                           bool lost);
/* ing_client_result_free releases a copied result (zeroed struct: nothing to do). */
void ing_client_result_free(struct ing_client_result *res);

/* One queue entry, copied. Views are NUL-terminated. */
struct ing_client_queue_entry {
    struct ing_view job_id;
    bool is_current; /* submitted by this connection */
    bool running;
    struct ing_view agent; /* running: the agent's friendly name; waiting: "" */
    struct ing_view info;  /* "course/task", or the environment name */
    struct ing_view launcher;
    int64_t started_at; /* running: Unix seconds; waiting: 0 */
    int64_t max_time;   /* seconds, -1 unknown */
};

/* A queue snapshot, copied: running jobs in dispatch order, waiting jobs in arrival order. */
struct ing_client_queue {
    size_t n_running;
    size_t n_waiting;
    struct ing_client_queue_entry *running;
    struct ing_client_queue_entry *waiting;
    void *mem; /* private */
};

/* ing_client_queue_copy copies a decoded BackendGetQueue. Returns 0 or -ENOMEM. */
int ing_client_queue_copy(struct ing_client_queue *dst, const struct ing_get_queue *src);
/* ing_client_queue_free releases a copied queue. */
void ing_client_queue_free(struct ing_client_queue *q);

/* Blocking conveniences. Each returns 0 with its answer, or -ETIMEDOUT when timeout_ms
 * (-1: no limit) passed first, -ECONNRESET when the connection was lost or the backend
 * forgot this client before the answer came (get_queue, ping), the request's errors, or
 * the error that closed the connection. fn (may be NULL) receives every other event in
 * the meantime. */

/* ing_client_submit_wait submits job and waits for its result, copied into *result
 * (free it with ing_client_result_free). The job's own STARTED and SSH_DEBUG events go to
 * fn; its DONE does not (it is the result). A job lost with the connection returns 0 and
 * result->lost. On -ETIMEDOUT the job stays pending (its DONE comes later as an event). */
int ing_client_submit_wait(struct ing_client *c, const struct ing_client_job *job, int timeout_ms,
                           struct ing_client_result *result, ing_client_event_fn *fn, void *arg);
/* ing_client_wait_done waits for the result of a job already submitted (pending). Returns
 * as ing_client_submit_wait, or -ENOENT if job_id is not pending. */
int ing_client_wait_done(struct ing_client *c, const char *job_id, int timeout_ms,
                         struct ing_client_result *result, ing_client_event_fn *fn, void *arg);
/* ing_client_get_queue_wait asks for the queue and copies the answer into *q (free it with
 * ing_client_queue_free). */
int ing_client_get_queue_wait(struct ing_client *c, int timeout_ms, struct ing_client_queue *q,
                              ing_client_event_fn *fn, void *arg);
/* ing_client_ping_wait pings and stores the round-trip time in *rtt_ms. */
int ing_client_ping_wait(struct ing_client *c, int timeout_ms, double *rtt_ms,
                         ing_client_event_fn *fn, void *arg);

/* Helpers. */

/* ing_client_uuid4 writes a random UUID version 4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx",
 * lowercase) from the kernel's random source. Returns 0 or -errno. */
int ing_client_uuid4(char out[ING_CLIENT_UUID_SIZE]);

/* ing_client_result_to_mp appends r as one msgpack map (for ing_mp_to_json): job_id, kind,
 * text, grade, problems, tests, custom (the msgpack values themselves), state, archive (nil,
 * or its base64 text when archive_base64, else bin), stdout, stderr (nil or str), lost.
 * Returns 0 or w's error. */
int ing_client_result_to_mp(const struct ing_job_result *r, bool lost, bool archive_base64,
                            struct ing_mp_writer *w);
/* ing_client_queue_to_mp appends q as {"running": [...], "waiting": [...]}, each entry a map
 * with the wire names (job_id, is_current_client_job, agent_friendly_name (running), info,
 * launcher, started_at (running), max_time). Returns 0 or w's error. */
int ing_client_queue_to_mp(const struct ing_client_queue *q, struct ing_mp_writer *w);

#ifdef __cplusplus
}
#endif
#endif
