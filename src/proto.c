/* SPDX-License-Identifier: MIT */
/* proto.c: the codec of the native protocol (proto.md §2 preamble, §3 framing, §4 field
 * encodings, §5 message layouts).
 *
 * Decoding is zero-copy and validating: the header is checked first, then the body is parsed
 * with a bounds-checked cursor that never reads past the frame. Encoding writes the body with
 * a bounded writer that keeps counting (without writing) once the output is full, so that one
 * pass both measures and writes and an invalid message is told apart from a short buffer.
 * Nothing here allocates.
 */
#include "inginious/proto.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "bytes.h"
#include "inginious/mp.h"

#define NIL_LEN UINT32_MAX /* length of a nil nstr / nbytes */

/* Smallest encoded queue entries: empty strings, a bool and the i64 fields. */
#define RUNNING_MIN (4 + 1 + 4 + 4 + 4 + 8 + 8)
#define WAITING_MIN (4 + 1 + 4 + 4 + 8)
/* Smallest encoded AgentHelloResume job entry: an empty id and the bool. */
#define RESUME_JOB_MIN (4 + 1)

/* What the header alone tells about a type. */
enum type_class {
    TC_UNKNOWN = 0, /* not a version 1 type */
    TC_EMPTY,       /* the body must be empty */
    TC_BODY,        /* a body with fields */
};

static const uint8_t type_class[256] = {
    [ING_ERROR] = TC_BODY,
    [ING_WELCOME] = TC_BODY,
    [ING_AUTH] = TC_BODY,
    [ING_AUTH_OK] = TC_BODY,
    [ING_PING] = TC_EMPTY,
    [ING_PONG] = TC_EMPTY,
    [ING_UNKNOWN] = TC_EMPTY,
    [ING_CLIENT_HELLO] = TC_BODY,
    [ING_CLIENT_NEW_JOB] = TC_BODY,
    [ING_CLIENT_KILL_JOB] = TC_BODY,
    [ING_CLIENT_GET_QUEUE] = TC_EMPTY,
    [ING_CLIENT_GET_STATS] = TC_EMPTY,
    [ING_CLIENT_GET_JOB_INFO] = TC_BODY,
    [ING_CLIENT_HELLO_ACK] = TC_BODY,
    [ING_CLIENT_HELLO_SESSION] = TC_BODY,
    [ING_CLIENT_SESSION_ACK] = TC_BODY,
    [ING_BACKEND_UPDATE_ENVIRONMENTS] = TC_BODY,
    [ING_BACKEND_JOB_STARTED] = TC_BODY,
    [ING_BACKEND_JOB_DONE] = TC_BODY,
    [ING_BACKEND_JOB_SSH_DEBUG] = TC_BODY,
    [ING_BACKEND_GET_QUEUE] = TC_BODY,
    [ING_BACKEND_STATS] = TC_BODY,
    [ING_BACKEND_JOB_INFO] = TC_BODY,
    [ING_BACKEND_JOB_ACCEPTED] = TC_BODY,
    [ING_BACKEND_SESSION_JOBS] = TC_BODY,
    [ING_BACKEND_NEW_JOB] = TC_BODY,
    [ING_BACKEND_KILL_JOB] = TC_BODY,
    [ING_AGENT_HELLO] = TC_BODY,
    [ING_AGENT_JOB_STARTED] = TC_BODY,
    [ING_AGENT_JOB_DONE] = TC_BODY,
    [ING_AGENT_JOB_SSH_DEBUG] = TC_BODY,
    [ING_AGENT_HELLO_RESUME] = TC_BODY,
};

/* ---- byte helpers (get_u*be / put_u*be come from bytes.h) ---------------------------- */

/* u64_to_i64 reinterprets a two's complement bit pattern without implementation-defined
 * conversions (compilers turn it into nothing). */
static inline int64_t
u64_to_i64(uint64_t u)
{
    if (u <= (uint64_t)INT64_MAX)
        return (int64_t)u;
    return -(int64_t)(~u) - 1;
}

/* ---- decoding: the bounds-checked cursor --------------------------------------------- */

/* A cursor over one frame body. The first error empties it (end = p) and clears ok, so
 * every later read fails too and nothing past the error is ever touched. */
struct cursor {
    const uint8_t *p;
    const uint8_t *end;
    bool ok;
};

static inline void
cur_fail(struct cursor *c)
{
    c->ok = false;
    c->end = c->p;
}

/* cur_need tells whether n more bytes are present, failing the cursor if not. */
static inline bool
cur_need(struct cursor *c, size_t n)
{
    if ((size_t)(c->end - c->p) >= n)
        return true;
    cur_fail(c);
    return false;
}

static inline uint8_t
rd_u8(struct cursor *c)
{
    if (!cur_need(c, 1))
        return 0;
    return *c->p++;
}

static inline uint16_t
rd_u16(struct cursor *c)
{
    uint16_t v;

    if (!cur_need(c, 2))
        return 0;
    v = get_u16be(c->p);
    c->p += 2;
    return v;
}

static inline uint32_t
rd_u32(struct cursor *c)
{
    uint32_t v;

    if (!cur_need(c, 4))
        return 0;
    v = get_u32be(c->p);
    c->p += 4;
    return v;
}

static inline uint64_t
rd_u64(struct cursor *c)
{
    uint64_t v;

    if (!cur_need(c, 8))
        return 0;
    v = get_u64be(c->p);
    c->p += 8;
    return v;
}

static inline int64_t
rd_i64(struct cursor *c)
{
    uint64_t v;

    if (!cur_need(c, 8))
        return 0;
    v = get_u64be(c->p);
    c->p += 8;
    return u64_to_i64(v);
}

static inline double
rd_f64(struct cursor *c)
{
    uint64_t v;
    double d;

    if (!cur_need(c, 8))
        return 0.0;
    v = get_u64be(c->p);
    c->p += 8;
    memcpy(&d, &v, sizeof(d));
    return d;
}

static inline bool
rd_bool(struct cursor *c)
{
    uint8_t v = rd_u8(c);

    if (v > 1)
        cur_fail(c);
    return v == 1;
}

static inline void
rd_raw(struct cursor *c, uint8_t *out, size_t n)
{
    if (!cur_need(c, n))
        return;
    memcpy(out, c->p, n);
    c->p += n;
}

static inline void
rd_bytes32(struct cursor *c, uint8_t out[32])
{
    rd_raw(c, out, 32);
}

/* Kinds of length-prefixed fields (proto.md §4). */
enum field_kind {
    FK_STR,    /* str: UTF-8, never nil */
    FK_NSTR,   /* nstr: UTF-8 or nil */
    FK_NBYTES, /* nbytes: any bytes or nil */
    FK_MP,     /* mp: one msgpack value, at least one byte */
    FK_MPHELLO, /* AgentHello's environments: FK_MP up to ING_HELLO_CHECK_MAX bytes, else
                 * only a map header first (the backend checks the rest as it registers
                 * it, across loop iterations: proto.md 5.6) */
};

/* str_valid tells whether p[0..n) is valid UTF-8. Short all-ASCII strings (ids, names,
 * kinds: most str fields) are recognised inline, without a call; anything else goes to
 * the full validator of mp.c. */
static inline bool
str_valid(const uint8_t *p, uint32_t n)
{
    uint8_t any = 0;
    uint32_t i;

    if (n <= 64) {
        for (i = 0; i < n; i++)
            any |= p[i];
        if (any < 0x80)
            return true;
    }
    return ing_mp_utf8_valid(p, n);
}

/* rd_field reads one length-prefixed field of the given kind into *v. */
static inline void
rd_field(struct cursor *c, struct ing_view *v, enum field_kind kind)
{
    uint32_t n = rd_u32(c);

    v->p = NULL;
    v->len = 0;
    if (!c->ok)
        return;
    if (n == NIL_LEN && (kind == FK_NSTR || kind == FK_NBYTES))
        return;
    if (!cur_need(c, n))
        return;
    switch (kind) {
    case FK_STR:
    case FK_NSTR:
        if (!str_valid(c->p, n)) {
            cur_fail(c);
            return;
        }
        break;
    case FK_MPHELLO:
        if (n > ING_HELLO_CHECK_MAX) {
            if (!(c->p[0] >= 0x80 && c->p[0] <= 0x8f) && c->p[0] != 0xde && c->p[0] != 0xdf) {
                cur_fail(c);
                return;
            }
            break;
        }
        /* fall through */
    case FK_MP:
        if (n == 0 || ing_mp_validate(c->p, n, ING_MP_MAX_DEPTH) != 0) {
            cur_fail(c);
            return;
        }
        break;
    case FK_NBYTES:
        break;
    }
    v->p = (const char *)c->p;
    v->len = n;
    c->p += n;
}

static void
rd_job_spec(struct cursor *c, struct ing_job_spec *j)
{
    rd_field(c, &j->job_id, FK_STR);
    rd_field(c, &j->course_id, FK_NSTR);
    rd_field(c, &j->task_id, FK_NSTR);
    rd_field(c, &j->environment_type, FK_STR);
    rd_field(c, &j->environment, FK_STR);
    j->debug = rd_u8(c);
    if (j->debug > ING_DEBUG_SSH)
        cur_fail(c);
    rd_field(c, &j->task_problems, FK_MP);
    rd_field(c, &j->inputdata, FK_MP);
    rd_field(c, &j->environment_parameters, FK_MP);
}

static void
rd_result(struct cursor *c, struct ing_job_result *r)
{
    rd_field(c, &r->job_id, FK_STR);
    rd_field(c, &r->result_kind, FK_STR);
    rd_field(c, &r->result_text, FK_STR);
    r->grade = rd_f64(c);
    rd_field(c, &r->problems, FK_MP);
    rd_field(c, &r->tests, FK_MP);
    rd_field(c, &r->custom, FK_MP);
    rd_field(c, &r->state, FK_STR);
    rd_field(c, &r->archive, FK_NBYTES);
    rd_field(c, &r->stdout_, FK_NSTR);
    rd_field(c, &r->stderr_, FK_NSTR);
}

static void
rd_ssh(struct cursor *c, struct ing_ssh_debug *s)
{
    rd_field(c, &s->job_id, FK_STR);
    rd_field(c, &s->host, FK_STR);
    s->port = rd_u32(c);
    rd_field(c, &s->user, FK_STR);
    rd_field(c, &s->password, FK_STR);
}

static void
rd_running(struct cursor *c, struct ing_queue_running *e)
{
    rd_field(c, &e->job_id, FK_STR);
    e->is_current = rd_bool(c);
    rd_field(c, &e->agent_name, FK_STR);
    rd_field(c, &e->info, FK_STR);
    rd_field(c, &e->launcher, FK_STR);
    e->started_at = rd_i64(c);
    e->max_time = rd_i64(c);
}

static void
rd_waiting(struct cursor *c, struct ing_queue_waiting *e)
{
    rd_field(c, &e->job_id, FK_STR);
    e->is_current = rd_bool(c);
    rd_field(c, &e->info, FK_STR);
    rd_field(c, &e->launcher, FK_STR);
    e->max_time = rd_i64(c);
}

/* rd_queue validates every entry of a BackendGetQueue and records where each list starts.
 * A count that cannot fit in the remaining bytes is refused before looping over it. */
static void
rd_queue(struct cursor *c, struct ing_get_queue *q)
{
    struct ing_queue_running r;
    struct ing_queue_waiting w;
    uint32_t i;

    q->running = NULL;
    q->waiting = NULL;
    q->n_running = rd_u32(c);
    q->wire_running = c->p;
    if (q->n_running > (size_t)(c->end - c->p) / RUNNING_MIN)
        cur_fail(c);
    for (i = 0; i < q->n_running && c->ok; i++)
        rd_running(c, &r);
    q->n_waiting = rd_u32(c);
    q->wire_waiting = c->p;
    if (q->n_waiting > (size_t)(c->end - c->p) / WAITING_MIN)
        cur_fail(c);
    for (i = 0; i < q->n_waiting && c->ok; i++)
        rd_waiting(c, &w);
}

/* rd_resume reads AgentHelloResume: the agent id, the hello's fields, then validates every
 * job entry (a count that cannot fit in the remaining bytes is refused before looping). */
static void
rd_resume(struct cursor *c, struct ing_agent_hello_resume *r)
{
    struct ing_view id;
    uint32_t i;

    if (cur_need(c, ING_AGENT_ID_LEN)) {
        memcpy(r->agent_id, c->p, ING_AGENT_ID_LEN);
        c->p += ING_AGENT_ID_LEN;
    }
    rd_field(c, &r->hello.friendly_name, FK_STR);
    r->hello.slots = rd_u32(c);
    rd_field(c, &r->hello.environments, FK_MP);
    r->jobs = NULL;
    r->n_jobs = rd_u32(c);
    r->wire_jobs = c->p;
    if (r->n_jobs > (size_t)(c->end - c->p) / RESUME_JOB_MIN)
        cur_fail(c);
    for (i = 0; i < r->n_jobs && c->ok; i++) {
        rd_field(c, &id, FK_STR);
        (void)rd_bool(c);
    }
}

/* rd_body parses the body of a known type; the caller checks c->ok and trailing bytes. */
static void
rd_body(struct cursor *c, struct ing_msg *m)
{
    switch (m->type) {
    case ING_ERROR:
        m->u.error.code = rd_u16(c);
        rd_field(c, &m->u.error.text, FK_STR);
        break;
    case ING_WELCOME:
        m->u.welcome.version = rd_u8(c);
        m->u.welcome.role = rd_u8(c);
        m->u.welcome.flags = rd_u16(c);
        m->u.welcome.max_frame = rd_u32(c);
        m->u.welcome.heartbeat_ms = rd_u32(c);
        rd_bytes32(c, m->u.welcome.nonce);
        rd_field(c, &m->u.welcome.server, FK_STR);
        break;
    case ING_AUTH:
        rd_bytes32(c, m->u.auth.nonce);
        rd_bytes32(c, m->u.auth.mac);
        break;
    case ING_AUTH_OK:
        rd_bytes32(c, m->u.auth_ok.mac);
        break;
    case ING_CLIENT_HELLO:
    case ING_CLIENT_HELLO_ACK:
        rd_field(c, &m->u.client_hello.name, FK_STR);
        break;
    case ING_CLIENT_HELLO_SESSION:
        rd_field(c, &m->u.client_hello.name, FK_STR);
        rd_raw(c, m->u.client_hello.session, ING_SESSION_ID_LEN);
        m->u.client_hello.session_flags = rd_u8(c);
        break;
    case ING_CLIENT_SESSION_ACK:
        m->u.session_ack.count = rd_u64(c);
        break;
    case ING_BACKEND_SESSION_JOBS:
        m->u.session_jobs.last = rd_bool(c);
        rd_field(c, &m->u.session_jobs.jobs, FK_MP);
        break;
    case ING_CLIENT_NEW_JOB:
        m->u.new_job.priority = rd_i64(c);
        rd_field(c, &m->u.new_job.launcher, FK_STR);
        rd_job_spec(c, &m->u.new_job.job);
        break;
    case ING_BACKEND_NEW_JOB:
        rd_job_spec(c, &m->u.job);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_CLIENT_GET_JOB_INFO:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_AGENT_JOB_STARTED:
        rd_field(c, &m->u.ref.job_id, FK_STR);
        break;
    case ING_BACKEND_JOB_INFO:
        rd_field(c, &m->u.job_info.job_id, FK_STR);
        rd_field(c, &m->u.job_info.info, FK_MP);
        break;
    case ING_BACKEND_KILL_JOB:
        rd_field(c, &m->u.kill.job_id, FK_STR);
        rd_field(c, &m->u.kill.state, FK_STR);
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        rd_result(c, &m->u.result);
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        rd_ssh(c, &m->u.ssh);
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        rd_field(c, &m->u.envs.environments, FK_MP);
        break;
    case ING_AGENT_HELLO:
        rd_field(c, &m->u.agent_hello.friendly_name, FK_STR);
        m->u.agent_hello.slots = rd_u32(c);
        rd_field(c, &m->u.agent_hello.environments, FK_MPHELLO);
        break;
    case ING_AGENT_HELLO_RESUME:
        rd_resume(c, &m->u.agent_resume);
        break;
    case ING_BACKEND_GET_QUEUE:
        rd_queue(c, &m->u.queue);
        break;
    case ING_BACKEND_STATS:
        rd_field(c, &m->u.stats.stats, FK_MP);
        break;
    default:
        /* ING_PING, ING_PONG, ING_UNKNOWN, ING_CLIENT_GET_QUEUE: no fields. */
        break;
    }
}

/* ---- encoding: the bounded writer ---------------------------------------------------- */

/* A writer over out[0..cap). Past cap it only counts; len saturates at SIZE_MAX. inval is
 * set when the message cannot be encoded whatever the room. */
struct writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool inval;
};

static inline void
wr_bytes(struct writer *w, const void *src, size_t n)
{
    if (n == 0)
        return;
    if (w->len <= w->cap && n <= w->cap - w->len)
        memcpy(w->buf + w->len, src, n);
    w->len = n <= SIZE_MAX - w->len ? w->len + n : SIZE_MAX;
}

static inline void
wr_u8(struct writer *w, uint8_t v)
{
    wr_bytes(w, &v, 1);
}

static inline void
wr_u16(struct writer *w, uint16_t v)
{
    uint8_t b[2];

    put_u16be(b, v);
    wr_bytes(w, b, sizeof(b));
}

static inline void
wr_u32(struct writer *w, uint32_t v)
{
    uint8_t b[4];

    put_u32be(b, v);
    wr_bytes(w, b, sizeof(b));
}

static inline void
wr_u64(struct writer *w, uint64_t v)
{
    uint8_t b[8];

    put_u64be(b, v);
    wr_bytes(w, b, sizeof(b));
}

static inline void
wr_i64(struct writer *w, int64_t v)
{
    uint8_t b[8];

    put_u64be(b, (uint64_t)v);
    wr_bytes(w, b, sizeof(b));
}

static inline void
wr_f64(struct writer *w, double d)
{
    uint8_t b[8];
    uint64_t v;

    memcpy(&v, &d, sizeof(v));
    put_u64be(b, v);
    wr_bytes(w, b, sizeof(b));
}

/* wr_field writes one length-prefixed field. A nil view (p == NULL) is only allowed for
 * nstr and nbytes; a length of 0xFFFFFFFF cannot be written (it would read as nil); an mp
 * field holds at least one byte. */
static void
wr_field(struct writer *w, struct ing_view v, enum field_kind kind)
{
    if (v.p == NULL) {
        if (kind == FK_NSTR || kind == FK_NBYTES)
            wr_u32(w, NIL_LEN);
        else
            w->inval = true;
        return;
    }
    if (v.len == NIL_LEN || (kind == FK_MP && v.len == 0)) {
        w->inval = true;
        return;
    }
    wr_u32(w, v.len);
    wr_bytes(w, v.p, v.len);
}

static void
wr_job_spec(struct writer *w, const struct ing_job_spec *j)
{
    wr_field(w, j->job_id, FK_STR);
    wr_field(w, j->course_id, FK_NSTR);
    wr_field(w, j->task_id, FK_NSTR);
    wr_field(w, j->environment_type, FK_STR);
    wr_field(w, j->environment, FK_STR);
    if (j->debug > ING_DEBUG_SSH)
        w->inval = true;
    wr_u8(w, j->debug);
    wr_field(w, j->task_problems, FK_MP);
    wr_field(w, j->inputdata, FK_MP);
    wr_field(w, j->environment_parameters, FK_MP);
}

static void
wr_result(struct writer *w, const struct ing_job_result *r)
{
    wr_field(w, r->job_id, FK_STR);
    wr_field(w, r->result_kind, FK_STR);
    wr_field(w, r->result_text, FK_STR);
    wr_f64(w, r->grade);
    wr_field(w, r->problems, FK_MP);
    wr_field(w, r->tests, FK_MP);
    wr_field(w, r->custom, FK_MP);
    wr_field(w, r->state, FK_STR);
    wr_field(w, r->archive, FK_NBYTES);
    wr_field(w, r->stdout_, FK_NSTR);
    wr_field(w, r->stderr_, FK_NSTR);
}

static void
wr_ssh(struct writer *w, const struct ing_ssh_debug *s)
{
    wr_field(w, s->job_id, FK_STR);
    wr_field(w, s->host, FK_STR);
    wr_u32(w, s->port);
    wr_field(w, s->user, FK_STR);
    wr_field(w, s->password, FK_STR);
}

/* wr_queue writes the two entry arrays; it stops early once the body is already too big
 * for a frame, so absurd counts cannot keep it busy. */
static void
wr_queue(struct writer *w, const struct ing_get_queue *q)
{
    uint32_t i;

    if ((q->n_running > 0 && q->running == NULL) || (q->n_waiting > 0 && q->waiting == NULL)) {
        w->inval = true;
        return;
    }
    wr_u32(w, q->n_running);
    for (i = 0; i < q->n_running && w->len <= UINT32_MAX; i++) {
        const struct ing_queue_running *e = &q->running[i];

        wr_field(w, e->job_id, FK_STR);
        wr_u8(w, e->is_current ? 1 : 0);
        wr_field(w, e->agent_name, FK_STR);
        wr_field(w, e->info, FK_STR);
        wr_field(w, e->launcher, FK_STR);
        wr_i64(w, e->started_at);
        wr_i64(w, e->max_time_u64 ? -1 : e->max_time);
    }
    wr_u32(w, q->n_waiting);
    for (i = 0; i < q->n_waiting && w->len <= UINT32_MAX; i++) {
        const struct ing_queue_waiting *e = &q->waiting[i];

        wr_field(w, e->job_id, FK_STR);
        wr_u8(w, e->is_current ? 1 : 0);
        wr_field(w, e->info, FK_STR);
        wr_field(w, e->launcher, FK_STR);
        wr_i64(w, e->max_time_u64 ? -1 : e->max_time);
    }
}

static void
wr_resume(struct writer *w, const struct ing_agent_hello_resume *r)
{
    uint32_t i;

    wr_bytes(w, r->agent_id, ING_AGENT_ID_LEN);
    wr_field(w, r->hello.friendly_name, FK_STR);
    wr_u32(w, r->hello.slots);
    wr_field(w, r->hello.environments, FK_MP);
    wr_u32(w, r->n_jobs);
    if (r->n_jobs > 0 && r->jobs == NULL)
        w->inval = true;
    for (i = 0; i < r->n_jobs && !w->inval && w->len <= UINT32_MAX; i++) {
        wr_field(w, r->jobs[i].job_id, FK_STR);
        wr_u8(w, r->jobs[i].started ? 1 : 0);
    }
}

/* wr_body writes the body of m (its type is known). */
static void
wr_body(struct writer *w, const struct ing_msg *m)
{
    switch (m->type) {
    case ING_ERROR:
        wr_u16(w, m->u.error.code);
        wr_field(w, m->u.error.text, FK_STR);
        break;
    case ING_WELCOME:
        wr_u8(w, m->u.welcome.version);
        wr_u8(w, m->u.welcome.role);
        wr_u16(w, m->u.welcome.flags);
        wr_u32(w, m->u.welcome.max_frame);
        wr_u32(w, m->u.welcome.heartbeat_ms);
        wr_bytes(w, m->u.welcome.nonce, ING_NONCE_LEN);
        wr_field(w, m->u.welcome.server, FK_STR);
        break;
    case ING_AUTH:
        wr_bytes(w, m->u.auth.nonce, ING_NONCE_LEN);
        wr_bytes(w, m->u.auth.mac, ING_MAC_LEN);
        break;
    case ING_AUTH_OK:
        wr_bytes(w, m->u.auth_ok.mac, ING_MAC_LEN);
        break;
    case ING_CLIENT_HELLO:
    case ING_CLIENT_HELLO_ACK:
        wr_field(w, m->u.client_hello.name, FK_STR);
        break;
    case ING_CLIENT_HELLO_SESSION:
        wr_field(w, m->u.client_hello.name, FK_STR);
        wr_bytes(w, m->u.client_hello.session, ING_SESSION_ID_LEN);
        wr_u8(w, m->u.client_hello.session_flags);
        break;
    case ING_CLIENT_SESSION_ACK:
        wr_u64(w, m->u.session_ack.count);
        break;
    case ING_BACKEND_SESSION_JOBS:
        wr_u8(w, m->u.session_jobs.last ? 1 : 0);
        wr_field(w, m->u.session_jobs.jobs, FK_MP);
        break;
    case ING_CLIENT_NEW_JOB:
        wr_i64(w, m->u.new_job.priority);
        wr_field(w, m->u.new_job.launcher, FK_STR);
        wr_job_spec(w, &m->u.new_job.job);
        break;
    case ING_BACKEND_NEW_JOB:
        wr_job_spec(w, &m->u.job);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_CLIENT_GET_JOB_INFO:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_AGENT_JOB_STARTED:
        wr_field(w, m->u.ref.job_id, FK_STR);
        break;
    case ING_BACKEND_JOB_INFO:
        wr_field(w, m->u.job_info.job_id, FK_STR);
        wr_field(w, m->u.job_info.info, FK_MP);
        break;
    case ING_BACKEND_KILL_JOB:
        wr_field(w, m->u.kill.job_id, FK_STR);
        wr_field(w, m->u.kill.state, FK_STR);
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        wr_result(w, &m->u.result);
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        wr_ssh(w, &m->u.ssh);
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        wr_field(w, m->u.envs.environments, FK_MP);
        break;
    case ING_AGENT_HELLO:
        wr_field(w, m->u.agent_hello.friendly_name, FK_STR);
        wr_u32(w, m->u.agent_hello.slots);
        wr_field(w, m->u.agent_hello.environments, FK_MP);
        break;
    case ING_AGENT_HELLO_RESUME:
        wr_resume(w, &m->u.agent_resume);
        break;
    case ING_BACKEND_GET_QUEUE:
        wr_queue(w, &m->u.queue);
        break;
    case ING_BACKEND_STATS:
        wr_field(w, m->u.stats.stats, FK_MP);
        break;
    default:
        /* ING_PING, ING_PONG, ING_UNKNOWN, ING_CLIENT_GET_QUEUE: no fields. */
        break;
    }
}

/* encode_frame writes m's frame into out[0..cap) (cap may be 0 to only measure) and returns
 * the frame size, or -EINVAL if m cannot be encoded. A size above cap means "too small". */
static int
encode_frame(const struct ing_msg *m, uint8_t *out, size_t cap, size_t *size)
{
    struct writer w;

    if (type_class[m->type] == TC_UNKNOWN)
        return -EINVAL;
    w.buf = out;
    w.cap = cap;
    w.len = ING_HDR_LEN;
    w.inval = false;
    wr_body(&w, m);
    if (w.inval || w.len - ING_HDR_LEN > UINT32_MAX || w.len > (size_t)SSIZE_MAX)
        return -EINVAL;
    if (w.len <= cap)
        ing_frame_header(out, m->type, (uint32_t)(w.len - ING_HDR_LEN));
    *size = w.len;
    return 0;
}

/* ---- public API ---------------------------------------------------------------------- */

/* ing_preamble_encode writes the 8-byte preamble for role (ING_ROLE_*). */
void
ing_preamble_encode(uint8_t out[ING_PREAMBLE_LEN], uint8_t role)
{
    out[0] = ING_MAGIC0;
    out[1] = ING_MAGIC1;
    out[2] = ING_MAGIC2;
    out[3] = ING_MAGIC3;
    out[4] = ING_PROTO_VERSION;
    out[5] = role;
    out[6] = 0;
    out[7] = 0;
}

/* ing_preamble_decode reads a preamble: ING_PREAMBLE_LEN, 0 for a valid prefix, or -EPROTO
 * as soon as a bad magic or flags byte is present. Version and role are not judged here. */
ssize_t
ing_preamble_decode(const uint8_t *p, size_t n, uint8_t *version, uint8_t *role)
{
    static const uint8_t expect[ING_PREAMBLE_LEN] = {ING_MAGIC0, ING_MAGIC1, ING_MAGIC2, ING_MAGIC3,
                                                     0,          0,          0,          0};
    size_t i;

    for (i = 0; i < n && i < ING_PREAMBLE_LEN; i++) {
        if ((i < 4 || i >= 6) && p[i] != expect[i])
            return -EPROTO;
    }
    if (n < ING_PREAMBLE_LEN)
        return 0;
    *version = p[4];
    *role = p[5];
    return ING_PREAMBLE_LEN;
}

/* ing_frame_header writes a 6-byte frame header with flags 0. */
void
ing_frame_header(uint8_t out[ING_HDR_LEN], uint8_t type, uint32_t body_len)
{
    put_u32be(out, body_len);
    out[4] = type;
    out[5] = 0;
}

/* ing_frame_peek reads the header at p: 0, or -EAGAIN if fewer than ING_HDR_LEN bytes. */
int
ing_frame_peek(const uint8_t *p, size_t n, uint8_t *type, uint32_t *body_len)
{
    if (n < ING_HDR_LEN)
        return -EAGAIN;
    *body_len = get_u32be(p);
    *type = p[4];
    return 0;
}

size_t
ing_frame_job_id(const uint8_t *p, size_t n, uint8_t *type, struct ing_view *id)
{
    uint8_t t;
    uint32_t blen;
    id->p = NULL;
    id->len = 0;
    if (ing_frame_peek(p, n, &t, &blen) != 0 || n - ING_HDR_LEN < blen)
        return 0;
    *type = t;
    const uint8_t *b = p + ING_HDR_LEN;
    size_t off;
    switch (t) {
    case ING_CLIENT_NEW_JOB: /* priority i64, launcher str, job_id str */
        if (blen < 12 || get_u32be(b + 8) > blen - 12)
            return ING_HDR_LEN + (size_t)blen;
        off = 12 + (size_t)get_u32be(b + 8);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_DONE:
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_BACKEND_KILL_JOB:
    case ING_AGENT_JOB_STARTED:
    case ING_AGENT_JOB_DONE:
    case ING_AGENT_JOB_SSH_DEBUG:
        off = 0;
        break;
    default:
        return ING_HDR_LEN + (size_t)blen;
    }
    if (blen - off >= 4 && get_u32be(b + off) <= blen - off - 4) {
        id->p = (const char *)b + off + 4;
        id->len = get_u32be(b + off);
    }
    return ING_HDR_LEN + (size_t)blen;
}

/* ing_msg_decode decodes one frame. The header is judged as soon as it is present (length,
 * then flags, then type), the body only once the whole frame is present. Returns the frame
 * size, 0 (incomplete), -EMSGSIZE, -ENOMSG or -EPROTO; *m is meaningful only on success. */
ssize_t
ing_msg_decode(const uint8_t *p, size_t n, uint32_t max_body, struct ing_msg *m)
{
    struct cursor c;
    uint32_t len;
    uint8_t type, tc;

    if (n < ING_HDR_LEN)
        return 0;
    len = get_u32be(p);
    if (len > max_body)
        return -EMSGSIZE;
#if SIZE_MAX <= UINT32_MAX
    if (len > (size_t)SSIZE_MAX - ING_HDR_LEN) /* the frame size must fit the return value */
        return -EMSGSIZE;
#endif
    if (p[5] != 0)
        return -EPROTO;
    type = p[4];
    tc = type_class[type];
    if (tc == TC_UNKNOWN)
        return -ENOMSG;
    if (n - ING_HDR_LEN < len)
        return 0;
    if (tc == TC_EMPTY) {
        if (len != 0)
            return -EPROTO;
        m->type = type;
        return ING_HDR_LEN;
    }
    c.p = p + ING_HDR_LEN;
    c.end = c.p + len;
    c.ok = true;
    m->type = type;
    rd_body(&c, m);
    if (!c.ok || c.p != c.end)
        return -EPROTO;
    return (ssize_t)(ING_HDR_LEN + (size_t)len);
}

/* ing_msg_size returns the frame size of m, or 0 when ing_msg_encode would refuse it with
 * -EINVAL (unknown type, nil in a str or mp field, empty mp, bad debug, body too big). */
size_t
ing_msg_size(const struct ing_msg *m)
{
    size_t size;

    if (encode_frame(m, NULL, 0, &size) < 0)
        return 0;
    return size;
}

/* ing_msg_encode writes m as one frame into out[0..cap): the frame size, -EINVAL if m
 * cannot be encoded (checked first), or -ENOMEM if cap is too small (out may then hold
 * a partial frame). */
ssize_t
ing_msg_encode(const struct ing_msg *m, uint8_t *out, size_t cap)
{
    size_t size;
    int rc;

    rc = encode_frame(m, out, cap, &size);
    if (rc < 0)
        return rc;
    if (size > cap)
        return -ENOMEM;
    return (ssize_t)size;
}

/* Unchecked readers for the queue iterators: the decoder has validated the entries. */
static const uint8_t *
raw_str(const uint8_t *p, struct ing_view *v)
{
    v->len = get_u32be(p);
    v->p = (const char *)p + 4;
    return p + 4 + v->len;
}

static const uint8_t *
raw_i64(const uint8_t *p, int64_t *v)
{
    *v = u64_to_i64(get_u64be(p));
    return p + 8;
}

/* ing_queue_next_running reads the running entry at pos (inside a decoded, hence validated,
 * BackendGetQueue) into *e and returns the position of the next one. */
const uint8_t *
ing_queue_next_running(const uint8_t *pos, struct ing_queue_running *e)
{
    pos = raw_str(pos, &e->job_id);
    e->is_current = *pos++ == 1;
    pos = raw_str(pos, &e->agent_name);
    pos = raw_str(pos, &e->info);
    pos = raw_str(pos, &e->launcher);
    pos = raw_i64(pos, &e->started_at);
    return raw_i64(pos, &e->max_time);
}

/* ing_queue_next_waiting reads the waiting entry at pos (inside a decoded, hence validated,
 * BackendGetQueue) into *e and returns the position of the next one. */
const uint8_t *
ing_queue_next_waiting(const uint8_t *pos, struct ing_queue_waiting *e)
{
    pos = raw_str(pos, &e->job_id);
    e->is_current = *pos++ == 1;
    pos = raw_str(pos, &e->info);
    pos = raw_str(pos, &e->launcher);
    return raw_i64(pos, &e->max_time);
}

/* ing_resume_next reads the job entry at pos (inside a decoded, hence validated,
 * AgentHelloResume) into *e and returns the position of the next one. */
const uint8_t *
ing_resume_next(const uint8_t *pos, struct ing_resume_job *e)
{
    pos = raw_str(pos, &e->job_id);
    e->started = *pos == 1;
    return pos + 1;
}

/* ing_msg_type_name returns the INGInious class name of a type, or "?" if unknown. */
const char *
ing_msg_type_name(uint8_t type)
{
    switch (type) {
    case ING_ERROR:
        return "Error";
    case ING_WELCOME:
        return "Welcome";
    case ING_AUTH:
        return "Auth";
    case ING_AUTH_OK:
        return "AuthOk";
    case ING_PING:
        return "Ping";
    case ING_PONG:
        return "Pong";
    case ING_UNKNOWN:
        return "Unknown";
    case ING_CLIENT_HELLO:
        return "ClientHello";
    case ING_CLIENT_NEW_JOB:
        return "ClientNewJob";
    case ING_CLIENT_KILL_JOB:
        return "ClientKillJob";
    case ING_CLIENT_GET_QUEUE:
        return "ClientGetQueue";
    case ING_CLIENT_GET_STATS:
        return "ClientGetStats";
    case ING_CLIENT_GET_JOB_INFO:
        return "ClientGetJobInfo";
    case ING_CLIENT_HELLO_ACK:
        return "ClientHelloAck";
    case ING_CLIENT_HELLO_SESSION:
        return "ClientHelloSession";
    case ING_CLIENT_SESSION_ACK:
        return "ClientSessionAck";
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        return "BackendUpdateEnvironments";
    case ING_BACKEND_JOB_STARTED:
        return "BackendJobStarted";
    case ING_BACKEND_JOB_DONE:
        return "BackendJobDone";
    case ING_BACKEND_JOB_SSH_DEBUG:
        return "BackendJobSSHDebug";
    case ING_BACKEND_GET_QUEUE:
        return "BackendGetQueue";
    case ING_BACKEND_STATS:
        return "BackendStats";
    case ING_BACKEND_JOB_INFO:
        return "BackendJobInfo";
    case ING_BACKEND_JOB_ACCEPTED:
        return "BackendJobAccepted";
    case ING_BACKEND_SESSION_JOBS:
        return "BackendSessionJobs";
    case ING_BACKEND_NEW_JOB:
        return "BackendNewJob";
    case ING_BACKEND_KILL_JOB:
        return "BackendKillJob";
    case ING_AGENT_HELLO:
        return "AgentHello";
    case ING_AGENT_JOB_STARTED:
        return "AgentJobStarted";
    case ING_AGENT_JOB_DONE:
        return "AgentJobDone";
    case ING_AGENT_JOB_SSH_DEBUG:
        return "AgentJobSSHDebug";
    case ING_AGENT_HELLO_RESUME:
        return "AgentHelloResume";
    default:
        return "?";
    }
}

/* ing_view_eq compares a view with a C string: a nil view equals only NULL, a non-nil view
 * equals a string of the same bytes (so a view holding a NUL never equals a C string). */
bool
ing_view_eq(struct ing_view v, const char *s)
{
    size_t n;

    if (v.p == NULL || s == NULL)
        return v.p == NULL && s == NULL;
    n = strlen(s);
    return n == v.len && (n == 0 || memcmp(v.p, s, n) == 0);
}
