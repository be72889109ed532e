/* SPDX-License-Identifier: MIT */
/* agent.h: the agent side of libinginious (native protocol, proto.md).
 *
 * An agent connects to the backend's agent endpoint, says hello with its name, slots and
 * environments, then receives jobs (BackendNewJob) and kills (BackendKillJob) and reports
 * started / ssh-debug / done. Pings are answered by the library. When the connection is
 * lost and opts.reconnect is set, the library reconnects with exponential backoff and says
 * hello again; jobs of the old connection are reported to the caller as lost
 * (ING_AGENT_EV_DISCONNECTED) since the backend has already ended or requeued them.
 *
 * Resume (opts.resume, proto.md §7.10): the jobs survive a connection loss or a backend
 * restart instead. The library keeps the id of every job it was sent until its result has
 * reached the backend (a Pong to a Ping sent after the result tells it), keeps the results
 * reported while disconnected, and on each reconnect says AgentHelloResume listing them
 * all, then sends the kept results. ING_AGENT_EV_DISCONNECTED then has kept set: the jobs
 * go on. They are void (ING_AGENT_EV_JOBS_VOID: kill them all) only after
 * opts.resume_timeout_ms of backend absence, or when the backend cannot resume (its
 * Welcome lacks the RESUME flag). A job the backend does not give back comes as an
 * ING_AGENT_EV_KILL, as any kill.
 *
 * Non-blocking use: watch ing_agent_fd() for reading (and for writing when
 * ing_agent_want_write() is true) in your own poll/epoll loop, call ing_agent_process()
 * when it is readable or writable, and ing_agent_timeout_ms() tells how long you may wait.
 * Blocking use: ing_agent_wait(). The fd changes across reconnects: re-read it after every
 * ING_AGENT_EV_CONNECTED.
 *
 * Structs that grow. struct ing_agent_opts begins with a size field: set it to sizeof the
 * struct (or leave it 0, which means the fields of release 1.0); later 1.x releases only add
 * fields at its end and read a field only when size covers it. struct ing_agent_env keeps
 * its 1.0 layout in every 1.x release (it is passed as an array). Event structs are written
 * by the library and only read by the callback: they may gain fields at the end.
 *
 * Errors: the functions return 0 or a negative errno value; err.h lists every one.
 *
 * Thread safety: not thread-safe per object. One struct ing_agent is used by one thread at a
 * time (different objects in different threads are independent); the callback runs in the
 * thread that called process or wait. */
#ifndef INGINIOUS_AGENT_H
#define INGINIOUS_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inginious/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ing_agent;

struct ing_agent_env {
    const char *type;  /* e.g. "docker", "process" */
    const char *name;  /* e.g. "default" */
    const char *id;    /* version id (image id, content hash) */
    int64_t created;   /* Unix time this version was made */
    bool advertised;   /* listed to clients */
};

struct ing_agent_opts {
    size_t size;                       /* sizeof(struct ing_agent_opts), or 0: the 1.0 fields */
    const char *addr;                  /* backend agent endpoint, e.g. tcp://127.0.0.1:2001 */
    const char *name;                  /* friendly name */
    uint32_t slots;                    /* concurrent jobs */
    const struct ing_agent_env *envs;  /* copied by ing_agent_new */
    size_t nenvs;
    bool reconnect;                    /* reconnect (with backoff) when the connection drops */
    int backoff_min_ms;                /* first retry delay (default 100) */
    int backoff_max_ms;                /* largest retry delay (default 10000) */
    int connect_timeout_ms;            /* for the blocking ing_agent_connect (default 5000) */
    /* Added (proto.md §6): the secret of the agent endpoint, copied by ing_agent_new; NULL
     * when the backend requires none. With a secret the hello waits for AuthOk, and the
     * reports are refused with -ENOTCONN until then. */
    const uint8_t *secret;
    size_t secret_len;
    /* Added (proto.md §7.10): keep the running jobs across connection losses and backend
     * restarts (see Resume above; implies reconnect). resume_timeout_ms: the backend
     * absence after which they are void (0: 60000). agent_id: ING_AGENT_ID_LEN bytes that
     * name this agent to the backend across its connections (copied), or NULL: a random
     * one, fixed for the life of the struct ing_agent. */
    bool resume;
    int resume_timeout_ms;
    const uint8_t *agent_id;
};

enum ing_agent_event_type {
    ING_AGENT_EV_CONNECTED,    /* connected and hello sent (also after a reconnect) */
    ING_AGENT_EV_DISCONNECTED, /* connection lost; err says why; running jobs are void */
    ING_AGENT_EV_JOB,          /* a new job: ev->job */
    ING_AGENT_EV_KILL,         /* kill ev->job_id; ev->state is the job's @state */
    ING_AGENT_EV_ERROR,        /* the backend sent Error: ev->code, ev->text */
    ING_AGENT_EV_JOBS_VOID,    /* resume: every job received so far is void (kill them; their
                                * reports are no longer wanted) */
};

struct ing_agent_event {
    enum ing_agent_event_type type;
    const struct ing_job_spec *job; /* ING_AGENT_EV_JOB: views valid during the callback */
    struct ing_view job_id;         /* ING_AGENT_EV_JOB, ING_AGENT_EV_KILL */
    struct ing_view state;          /* ING_AGENT_EV_KILL */
    uint16_t code;                  /* ING_AGENT_EV_ERROR */
    struct ing_view text;           /* ING_AGENT_EV_ERROR */
    int err;                        /* ING_AGENT_EV_DISCONNECTED: -errno */
    bool kept;                      /* ING_AGENT_EV_DISCONNECTED: the jobs go on (resume) */
};

typedef void ing_agent_event_fn(struct ing_agent *a, const struct ing_agent_event *ev, void *arg);

/* ing_agent_new copies opts (strings and environments included). Does not connect.
 * Returns NULL on a bad option (errno EINVAL, also for a size field that is neither 0 nor
 * at least the 1.0 struct's size) or no memory. */
struct ing_agent *ing_agent_new(const struct ing_agent_opts *opts);
/* ing_agent_free closes the connection and frees everything. NULL is allowed. */
void ing_agent_free(struct ing_agent *a);

/* ing_agent_connect connects (blocking, opts.connect_timeout_ms), sends the preamble and
 * AgentHello and waits for the Welcome. Returns 0 or -errno (-ECONNREFUSED, -ETIMEDOUT,
 * -EPROTO when the server answered with an Error: see ing_agent_last_error, -EISCONN when
 * already connected). */
int ing_agent_connect(struct ing_agent *a);

/* ing_agent_fd: the socket to watch (-1 while disconnected). */
int ing_agent_fd(const struct ing_agent *a);
/* ing_agent_want_write: output is pending (watch for POLLOUT too). */
bool ing_agent_want_write(const struct ing_agent *a);
/* ing_agent_timeout_ms: how long the caller may wait before calling ing_agent_process
 * again (reconnect backoff), or -1 for no limit. */
int ing_agent_timeout_ms(const struct ing_agent *a);

/* ing_agent_process does every non-blocking step: flushes output, reads and handles what
 * arrived (answering pings, calling fn for events), reconnects when due. Returns 0, or
 * -errno when disconnected and not reconnecting. */
int ing_agent_process(struct ing_agent *a, ing_agent_event_fn *fn, void *arg);
/* ing_agent_wait polls up to timeout_ms (-1 = forever) then processes. */
int ing_agent_wait(struct ing_agent *a, int timeout_ms, ing_agent_event_fn *fn, void *arg);

/* Reports. They queue a frame (flushed by the next process/wait call, or at once when
 * possible). Return 0, -ENOTCONN, or -ENOMEM. */
int ing_agent_started(struct ing_agent *a, struct ing_view job_id);
int ing_agent_ssh_debug(struct ing_agent *a, const struct ing_ssh_debug *ssh);
int ing_agent_done(struct ing_agent *a, const struct ing_job_result *result);

/* ing_agent_last_error: text of the last Error the backend sent, or "". */
const char *ing_agent_last_error(const struct ing_agent *a);

#ifdef __cplusplus
}
#endif
#endif
