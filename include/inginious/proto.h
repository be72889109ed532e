/* SPDX-License-Identifier: MIT */
/* proto.h: the native wire protocol, version 1, as specified in proto.md (the source of
 * truth: this header mirrors it field for field), and its codec.
 *
 * Decoding is zero-copy: every string, msgpack value and byte field of a decoded message
 * is a view (struct ing_view) into the caller's buffer, valid as long as those bytes are.
 *
 * The structs of this header mirror protocol version 1 and keep their layout in every 1.x
 * release of the library (a new protocol version comes with new names).
 *
 * Thread safety: reentrant. The codec keeps no global or static state; decoding and
 * encoding touch only the buffers and structs passed to them.
 */
#ifndef INGINIOUS_PROTO_H
#define INGINIOUS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opening: the connecting peer sends an 8-byte preamble: magic, version, role, flags. */
#define ING_PREAMBLE_LEN 8
#define ING_MAGIC0 0x89
#define ING_MAGIC1 'I'
#define ING_MAGIC2 'N'
#define ING_MAGIC3 'G'
#define ING_PROTO_VERSION 1

#define ING_ROLE_AGENT 1
#define ING_ROLE_CLIENT 2

/* Frames: u32 body length (big-endian), u8 type, u8 flags (0 in version 1), then the body. */
#define ING_HDR_LEN 6
#define ING_MAX_FRAME_DEFAULT (64u * 1024 * 1024) /* body bytes */
#define ING_MAX_FRAME_MIN 4096u                   /* a server never advertises less */

/* Welcome flags. */
#define ING_WELCOME_AUTH 0x0001 /* the server requires the challenge-response (proto.md §6) */
#define ING_WELCOME_ACK 0x0002  /* clients: the server knows ClientHelloAck (proto.md §7.8) */
#define ING_WELCOME_SESSION 0x0004 /* clients: the server knows ClientHelloSession (§7.9) */
#define ING_SESSION_ID_LEN 16      /* a session id: 128 bits the client chooses */
#define ING_SESSION_HOLD 0x01 /* ClientHelloSession flag: results stay kept (a submitter) */
#define ING_SESSION_ACK 0x02  /* ClientHelloSession flag: results are acknowledged (§7.9) */
#define ING_WELCOME_RESUME 0x0008 /* agents: the server knows AgentHelloResume (proto.md §7.10) */
#define ING_WELCOME_SESSION_ACK 0x0010 /* clients: the server knows ClientSessionAck (§7.9) */
#define ING_AGENT_ID_LEN 16       /* an agent's resume id (AgentHelloResume) */
#define ING_NONCE_LEN 32
#define ING_MAC_LEN 32

/* Message types. For the three relayed agent reports, backend type = agent type - 0x20. */
enum ing_msg_type {
    ING_ERROR = 0x01,        /* both ways: a protocol violation */
    ING_WELCOME = 0x02,      /* server -> peer, answer to the preamble */
    ING_AUTH = 0x03,         /* peer -> server: challenge response */
    ING_AUTH_OK = 0x04,      /* server -> peer: server's proof */
    ING_PING = 0x05,         /* both ways */
    ING_PONG = 0x06,         /* both ways */
    ING_UNKNOWN = 0x07,      /* backend -> client: "I do not know you" */

    ING_CLIENT_HELLO = 0x10,
    ING_CLIENT_NEW_JOB = 0x11,
    ING_CLIENT_KILL_JOB = 0x12,
    ING_CLIENT_GET_QUEUE = 0x13,
    ING_CLIENT_GET_STATS = 0x14,
    ING_CLIENT_GET_JOB_INFO = 0x15,
    ING_CLIENT_HELLO_ACK = 0x16, /* ClientHello asking for BackendJobAccepted (§7.8) */
    ING_CLIENT_HELLO_SESSION = 0x17, /* ClientHelloAck opening or resuming a session (§7.9) */
    ING_CLIENT_SESSION_ACK = 0x18,   /* the results a session's connection has read (§7.9) */

    ING_BACKEND_UPDATE_ENVIRONMENTS = 0x20,
    ING_BACKEND_JOB_STARTED = 0x21,
    ING_BACKEND_JOB_DONE = 0x22,
    ING_BACKEND_JOB_SSH_DEBUG = 0x23,
    ING_BACKEND_GET_QUEUE = 0x24,
    ING_BACKEND_STATS = 0x25,
    ING_BACKEND_JOB_INFO = 0x26,
    ING_BACKEND_JOB_ACCEPTED = 0x27, /* the job's record is written (§7.8) */
    ING_BACKEND_SESSION_JOBS = 0x28, /* the jobs a resumed session still has (§7.9) */

    ING_BACKEND_NEW_JOB = 0x30,
    ING_BACKEND_KILL_JOB = 0x31,

    ING_AGENT_HELLO = 0x40,
    ING_AGENT_JOB_STARTED = 0x41,
    ING_AGENT_JOB_DONE = 0x42,
    ING_AGENT_JOB_SSH_DEBUG = 0x43,
    ING_AGENT_HELLO_RESUME = 0x44, /* AgentHello with an agent id and its running jobs (§7.10) */
};

/* Error codes carried by ING_ERROR. */
enum ing_error_code {
    ING_ERR_PREAMBLE = 1,   /* bad magic or flags in the preamble; closed */
    ING_ERR_VERSION = 2,    /* no common protocol version; closed */
    ING_ERR_ROLE = 3,       /* role does not match the endpoint; closed */
    ING_ERR_TOO_BIG = 4,    /* frame body over the maximum; closed */
    ING_ERR_MALFORMED = 5,  /* the body does not decode; frame dropped */
    ING_ERR_UNEXPECTED = 6, /* valid type, not allowed for this role or now; frame dropped */
    ING_ERR_UNKNOWN_TYPE = 7, /* type not known to the receiver; frame dropped */
    ING_ERR_AUTH = 8,       /* authentication failed or required; closed */
    ING_ERR_LIMIT = 9,      /* a server limit was hit (connections, slots, envs); see text */
    ING_ERR_TIMEOUT = 10,   /* handshake not finished in time; closed */
    ING_ERR_SHUTDOWN = 11,  /* the server is shutting down; closed */
    ING_ERR_OVERLOAD = 12,  /* the peer does not read its output; closed */
    ING_ERR_INVALID = 13,   /* a field value is refused (see text); frame dropped */
    ING_ERR_JOURNAL = 14,   /* a job refused: the journal cannot write (see text); open */
    ING_ERR_TAKEN_OVER = 15, /* another connection resumed this one's session; closed */
};

/* Debug field of a job. */
enum ing_debug {
    ING_DEBUG_OFF = 0, /* msgpack false */
    ING_DEBUG_ON = 1,  /* msgpack true */
    ING_DEBUG_SSH = 2, /* msgpack "ssh" */
};

/* A view of bytes inside a buffer. p == NULL means nil (only for nullable fields); an
 * empty non-nil value has p != NULL and len == 0. For msgpack fields, the bytes are one
 * complete msgpack value. */
struct ing_view {
    const char *p;
    uint32_t len;
};

struct ing_error_msg {
    uint16_t code;        /* enum ing_error_code */
    struct ing_view text; /* str */
};

struct ing_welcome {
    uint8_t version;
    uint8_t role;
    uint16_t flags;                 /* ING_WELCOME_* */
    uint32_t max_frame;             /* largest body the server accepts */
    uint32_t heartbeat_ms;          /* agents: ping period; clients: suggested ping period */
    uint8_t nonce[ING_NONCE_LEN];   /* server challenge (zeros when no auth) */
    struct ing_view server;         /* str: server name and version */
};

struct ing_auth {
    uint8_t nonce[ING_NONCE_LEN]; /* client challenge */
    uint8_t mac[ING_MAC_LEN];     /* HMAC-SHA-256 proof, proto.md §6 */
};

struct ing_auth_ok {
    uint8_t mac[ING_MAC_LEN]; /* server proof, proto.md §6 */
};

struct ing_client_hello {
    struct ing_view name; /* str */
    uint8_t session[ING_SESSION_ID_LEN]; /* ING_CLIENT_HELLO_SESSION only: the session id */
    uint8_t session_flags;               /* ING_CLIENT_HELLO_SESSION only: ING_SESSION_* */
};

/* The part of a job that is relayed to the agent (BackendNewJob is exactly this). */
struct ing_job_spec {
    struct ing_view job_id;                 /* str */
    struct ing_view course_id;              /* nstr */
    struct ing_view task_id;                /* nstr */
    struct ing_view environment_type;       /* str */
    struct ing_view environment;            /* str */
    uint8_t debug;                          /* enum ing_debug */
    struct ing_view task_problems;          /* mp (a map for INGInious) */
    struct ing_view inputdata;              /* mp (a map) */
    struct ing_view environment_parameters; /* mp (a map) */
};

struct ing_client_new_job {
    int64_t priority;         /* i64, smaller = earlier */
    struct ing_view launcher; /* str */
    struct ing_job_spec job;
};

struct ing_job_ref {
    struct ing_view job_id; /* str */
};

struct ing_kill_job {
    struct ing_view job_id; /* str */
    struct ing_view state;  /* str: the job's inputdata["@state"], "" if none */
};

struct ing_job_result {
    struct ing_view job_id;      /* str */
    struct ing_view result_kind; /* str: success failed error timeout overflow killed crash ... */
    struct ing_view result_text; /* str */
    double grade;                /* f64 */
    struct ing_view problems;    /* mp */
    struct ing_view tests;       /* mp */
    struct ing_view custom;      /* mp */
    struct ing_view state;       /* str */
    struct ing_view archive;     /* nbytes */
    struct ing_view stdout_;     /* nstr */
    struct ing_view stderr_;     /* nstr */
};

struct ing_ssh_debug {
    struct ing_view job_id;   /* str */
    struct ing_view host;     /* str */
    uint32_t port;            /* u32 */
    struct ing_view user;     /* str */
    struct ing_view password; /* str */
};

struct ing_update_envs {
    struct ing_view environments; /* mp: map type -> array of names */
};

struct ing_agent_hello {
    struct ing_view friendly_name; /* str */
    uint32_t slots;                /* u32 available_job_slots */
    struct ing_view environments;  /* mp: map type -> map name -> map info; over
                                    * ING_HELLO_CHECK_MAX bytes the codec checks only that
                                    * it starts with a map header: the reader checks the
                                    * rest of proto.md 4.1 as it reads it (the backend: in
                                    * steps, proto.md 5.6) */
};
#define ING_HELLO_CHECK_MAX 65536

/* One job an agent claims in AgentHelloResume (proto.md §7.10). */
struct ing_resume_job {
    struct ing_view job_id; /* str */
    bool started;           /* bool: the agent reported it started (or will) */
};

/* AgentHelloResume: the hello's fields after the agent's id, then the jobs it still holds.
 * To encode, set n_jobs and jobs. After a decode, jobs is NULL and the entries are read
 * with ing_resume_next, starting at wire_jobs (already validated by the decoder). */
struct ing_agent_hello_resume {
    uint8_t agent_id[ING_AGENT_ID_LEN]; /* bytes16, chosen by the agent (random) */
    struct ing_agent_hello hello;
    uint32_t n_jobs;
    const struct ing_resume_job *jobs;
    const uint8_t *wire_jobs;
};

struct ing_queue_running {
    struct ing_view job_id;
    bool is_current;
    struct ing_view agent_name;
    struct ing_view info;
    struct ing_view launcher;
    int64_t started_at; /* epoch seconds */
    int64_t max_time;   /* seconds, -1 unknown */
    bool max_time_u64;  /* max_time is above INT64_MAX: (uint64_t)max_time (ZeroMQ lists it;
                         * the native frame carries -1) */
};

struct ing_queue_waiting {
    struct ing_view job_id;
    bool is_current;
    struct ing_view info;
    struct ing_view launcher;
    int64_t max_time;
    bool max_time_u64; /* as in ing_queue_running */
};

/* BackendGetQueue. To encode, set the counts and the arrays. After a decode, the arrays
 * are NULL and the entries are read with ing_queue_next_running / _waiting, starting at
 * wire_running / wire_waiting (already validated by the decoder). */
struct ing_get_queue {
    uint32_t n_running;
    uint32_t n_waiting;
    const struct ing_queue_running *running;
    const struct ing_queue_waiting *waiting;
    const uint8_t *wire_running;
    const uint8_t *wire_waiting;
};

/* BackendStats (proto.md §5.8): one msgpack map. */
struct ing_stats_msg {
    struct ing_view stats; /* mp map */
};

/* BackendSessionJobs (proto.md §7.9): some of the job ids a resumed session still has. */
struct ing_session_jobs {
    bool last;            /* bool: the last frame of the list */
    struct ing_view jobs; /* mp: an array of str job ids */
};

/* ClientSessionAck (proto.md §7.9): the BackendJobDone frames read on this connection since
 * its ClientHelloSession (cumulative). */
struct ing_session_ack {
    uint64_t count; /* u64 */
};

/* BackendJobInfo (proto.md §5.9): the job asked about and one msgpack map. */
struct ing_job_info_msg {
    struct ing_view job_id; /* str */
    struct ing_view info;   /* mp map */
};

struct ing_msg {
    uint8_t type; /* enum ing_msg_type */
    union {
        struct ing_error_msg error;           /* ING_ERROR */
        struct ing_welcome welcome;           /* ING_WELCOME */
        struct ing_auth auth;                 /* ING_AUTH */
        struct ing_auth_ok auth_ok;           /* ING_AUTH_OK */
        struct ing_client_hello client_hello; /* ING_CLIENT_HELLO, ING_CLIENT_HELLO_ACK,
                                               * ING_CLIENT_HELLO_SESSION */
        struct ing_client_new_job new_job;    /* ING_CLIENT_NEW_JOB */
        struct ing_job_spec job;              /* ING_BACKEND_NEW_JOB */
        struct ing_job_ref ref;     /* ING_CLIENT_KILL_JOB, ING_*_JOB_STARTED,
                                     * ING_CLIENT_GET_JOB_INFO, ING_BACKEND_JOB_ACCEPTED */
        struct ing_kill_job kill;   /* ING_BACKEND_KILL_JOB */
        struct ing_job_result result;         /* ING_*_JOB_DONE */
        struct ing_ssh_debug ssh;             /* ING_*_JOB_SSH_DEBUG */
        struct ing_update_envs envs;          /* ING_BACKEND_UPDATE_ENVIRONMENTS */
        struct ing_agent_hello agent_hello;   /* ING_AGENT_HELLO */
        struct ing_agent_hello_resume agent_resume; /* ING_AGENT_HELLO_RESUME */
        struct ing_get_queue queue;           /* ING_BACKEND_GET_QUEUE */
        struct ing_stats_msg stats;           /* ING_BACKEND_STATS */
        struct ing_job_info_msg job_info;     /* ING_BACKEND_JOB_INFO */
        struct ing_session_jobs session_jobs; /* ING_BACKEND_SESSION_JOBS */
        struct ing_session_ack session_ack;   /* ING_CLIENT_SESSION_ACK */
    } u; /* ING_PING, ING_PONG, ING_UNKNOWN, ING_CLIENT_GET_QUEUE, ING_CLIENT_GET_STATS have
          * no body */
};

/* ing_preamble_encode writes the 8-byte preamble for role (ING_ROLE_*). */
void ing_preamble_encode(uint8_t out[ING_PREAMBLE_LEN], uint8_t role);

/* ing_preamble_decode reads a preamble. Returns ING_PREAMBLE_LEN and sets *version, *role;
 * 0 if fewer than 8 bytes are present (and those present are a valid prefix); -EPROTO on a
 * bad magic byte or non-zero flags (as soon as the bad byte is present). */
ssize_t ing_preamble_decode(const uint8_t *p, size_t n, uint8_t *version, uint8_t *role);

/* ing_frame_header writes a 6-byte frame header. */
void ing_frame_header(uint8_t out[ING_HDR_LEN], uint8_t type, uint32_t body_len);

/* ing_frame_peek reads the header at p. Returns 0 and sets *type and *body_len if at least
 * ING_HDR_LEN bytes are present, -EAGAIN otherwise. */
int ing_frame_peek(const uint8_t *p, size_t n, uint8_t *type, uint32_t *body_len);

/* ing_msg_decode decodes one frame from p[0..n). Returns:
 *   > 0        the frame's total size (header + body): *m is filled;
 *   0          the frame is not complete yet (read more);
 *   -EMSGSIZE  the body length exceeds max_body: framing is lost, the peer must be closed
 *              (returned as soon as the header is present, before anything else);
 *   -ENOMSG    unknown type (the frame can be skipped: ING_HDR_LEN + body_len bytes);
 *   -EPROTO    the body does not decode (non-zero flags, truncated or trailing bytes, bad
 *              UTF-8, invalid msgpack, bad bool/debug value); the frame can be skipped.
 * Every length is checked against the bytes present before it is used. */
ssize_t ing_msg_decode(const uint8_t *p, size_t n, uint32_t max_body, struct ing_msg *m);

/* ing_frame_job_id finds the job id a frame is about without decoding the rest, so a
 * receiver can look ahead over the frames it holds (the backend starts loading the id
 * table's lines for the next frames while it handles the current one). The id is the first
 * field of types 0x12, 0x21, 0x22, 0x23, 0x27, 0x31, 0x41, 0x42, 0x43, and follows `priority` and
 * `launcher` in 0x11. Returns the frame's total size if p[0..n) holds the whole frame (and
 * then *type; *id is the id, or {NULL, 0} for another type or an id field that does not fit
 * in the body), 0 if the frame is not complete. The frame is not validated otherwise: a
 * frame ing_msg_decode refuses may still yield an id. */
size_t ing_frame_job_id(const uint8_t *p, size_t n, uint8_t *type, struct ing_view *id);

/* ing_msg_size returns the encoded frame size (header + body) of m, or 0 if m cannot be
 * encoded (unknown type, a body over UINT32_MAX). */
size_t ing_msg_size(const struct ing_msg *m);

/* ing_msg_encode writes m as one frame into out[0..cap). Returns the bytes written, or
 * -ENOMEM if cap is too small, -EINVAL if m cannot be encoded (unknown type, nil in a
 * field that is not nullable, bad debug value, body over UINT32_MAX). Encoding does not
 * validate UTF-8 or msgpack contents: the caller provides valid values. */
ssize_t ing_msg_encode(const struct ing_msg *m, uint8_t *out, size_t cap);

/* ing_queue_next_running reads the running entry at pos (inside a decoded
 * BackendGetQueue) into *e and returns the position of the next one. */
const uint8_t *ing_queue_next_running(const uint8_t *pos, struct ing_queue_running *e);
const uint8_t *ing_queue_next_waiting(const uint8_t *pos, struct ing_queue_waiting *e);
/* ing_resume_next reads the job entry at pos (inside a decoded AgentHelloResume) into *e
 * and returns the position of the next one. */
const uint8_t *ing_resume_next(const uint8_t *pos, struct ing_resume_job *e);

/* ing_msg_type_name returns "ClientNewJob" etc. (the INGInious class name), "Error",
 * "Welcome", "Auth", "AuthOk", or "?" for an unknown type. */
const char *ing_msg_type_name(uint8_t type);

/* ing_view_eq compares a view with a C string. */
bool ing_view_eq(struct ing_view v, const char *s);

#ifdef __cplusplus
}
#endif
#endif
