/* SPDX-License-Identifier: MIT */
/* zmq_msg.c: the INGInious msgpack message dialect <-> struct ing_msg (see zmq_msg.h).
 *
 * Both directions are driven by one table per message class: the fields in declaration
 * order (the Python encoder's order), each with its msgpack shape and where it lives in
 * struct ing_msg.
 */
#include "zmq_msg.h"
#include "mp_int.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Field shapes. */
enum fk {
    FK_STR,      /* str */
    FK_NSTR,     /* str or nil (p == NULL) */
    FK_MAP,      /* map, kept raw */
    FK_NMAP,     /* map or nil, kept raw (nil = the byte c0) */
    FK_BIN_NIL,  /* bin or nil (p == NULL) */
    FK_RESULT,   /* [str kind, str text] -> off, off2 */
    FK_F64,      /* int or float -> double */
    FK_I64,      /* int (int64 range) */
    FK_U32,      /* int 0..UINT32_MAX */
    FK_DEBUG,    /* false / true / "ssh" -> uint8_t enum ing_debug */
    FK_BOOL_IGN, /* bool, not stored */
    FK_QRUN,     /* array of running 7-tuples */
    FK_QWAIT,    /* array of waiting 5-tuples */
};

#define F_JOB_ID 0x01   /* the job id: checked first; a bad one makes the message -EPROTO */
#define F_OPTIONAL 0x02 /* may be absent; never encoded (AgentHello.ssh_allowed) */
#define F_COURSE 0x04   /* named course_id or taskset_id */

/* Room for a field's name (the longest is 22 bytes) and a class's (25), NUL-padded: the
 * encoder copies a name with one fixed-size copy (see fw_key). */
#define KEY_PAD 24
#define NAME_PAD 32

struct field {
    char name[KEY_PAD];
    uint8_t nlen;    /* strlen(name) */
    uint8_t kind;    /* enum fk */
    uint8_t flags;   /* F_* */
    uint16_t off;    /* offset of the value in struct ing_msg */
    uint16_t off2;   /* FK_RESULT: offset of the text view */
    const char *bad; /* the reason given when the value has the wrong type */
};

struct mtype {
    char name[NAME_PAD]; /* the INGInious class name, the value of "@type" */
    uint8_t nlen;     /* strlen(name) */
    uint8_t type;     /* enum ing_msg_type */
    uint8_t nfields;
    const struct field *fields;
};

#define OFF(member) ((uint16_t)offsetof(struct ing_msg, member))
#define NF(a) ((uint8_t)(sizeof(a) / sizeof((a)[0])))
#define MAX_FIELDS 16
_Static_assert(MAX_FIELDS <= ZMQ_LAYOUT_MAX, "zmq_msg_layout too small");
#define PAIRS_SEEN 16 /* pairs of a message zmq_msg_decode keeps from its first pass */

#define COURSE_KEY "course_id"
#define TASKSET_KEY "taskset_id"
#define TYPE_KEY "@type"

static const char type_key_pad[KEY_PAD] = TYPE_KEY;
static const char taskset_key_pad[KEY_PAD] = TASKSET_KEY;

static const struct field f_client_hello[] = {
    {"name", sizeof("name") - 1, FK_STR, 0, OFF(u.client_hello.name), 0, "name is not a str"},
};

static const struct field f_client_new_job[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.new_job.job.job_id), 0, "job_id is not a str"},
    {"priority", sizeof("priority") - 1, FK_I64, 0, OFF(u.new_job.priority), 0, "priority is not an integer"},
    {COURSE_KEY, sizeof(COURSE_KEY) - 1, FK_NSTR, F_COURSE, OFF(u.new_job.job.course_id), 0,
     "course_id is not a str or nil"},
    {"task_id", sizeof("task_id") - 1, FK_NSTR, 0, OFF(u.new_job.job.task_id), 0, "task_id is not a str or nil"},
    {"task_problems", sizeof("task_problems") - 1, FK_NMAP, 0, OFF(u.new_job.job.task_problems), 0,
     "task_problems is not a map"},
    {"inputdata", sizeof("inputdata") - 1, FK_MAP, 0, OFF(u.new_job.job.inputdata), 0, "inputdata is not a map"},
    {"environment_type", sizeof("environment_type") - 1, FK_STR, 0, OFF(u.new_job.job.environment_type), 0,
     "environment_type is not a str"},
    {"environment", sizeof("environment") - 1, FK_STR, 0, OFF(u.new_job.job.environment), 0, "environment is not a str"},
    {"environment_parameters", sizeof("environment_parameters") - 1, FK_MAP, 0, OFF(u.new_job.job.environment_parameters), 0,
     "environment_parameters is not a map"},
    {"debug", sizeof("debug") - 1, FK_DEBUG, 0, OFF(u.new_job.job.debug), 0, "debug is not false, true or \"ssh\""},
    {"launcher", sizeof("launcher") - 1, FK_STR, 0, OFF(u.new_job.launcher), 0, "launcher is not a str"},
};

static const struct field f_backend_new_job[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.job.job_id), 0, "job_id is not a str"},
    {COURSE_KEY, sizeof(COURSE_KEY) - 1, FK_NSTR, F_COURSE, OFF(u.job.course_id), 0, "course_id is not a str or nil"},
    {"task_id", sizeof("task_id") - 1, FK_NSTR, 0, OFF(u.job.task_id), 0, "task_id is not a str or nil"},
    {"task_problems", sizeof("task_problems") - 1, FK_NMAP, 0, OFF(u.job.task_problems), 0, "task_problems is not a map"},
    {"inputdata", sizeof("inputdata") - 1, FK_MAP, 0, OFF(u.job.inputdata), 0, "inputdata is not a map"},
    {"environment_type", sizeof("environment_type") - 1, FK_STR, 0, OFF(u.job.environment_type), 0,
     "environment_type is not a str"},
    {"environment", sizeof("environment") - 1, FK_STR, 0, OFF(u.job.environment), 0, "environment is not a str"},
    {"environment_parameters", sizeof("environment_parameters") - 1, FK_MAP, 0, OFF(u.job.environment_parameters), 0,
     "environment_parameters is not a map"},
    {"debug", sizeof("debug") - 1, FK_DEBUG, 0, OFF(u.job.debug), 0, "debug is not false, true or \"ssh\""},
};

/* ClientKillJob, BackendJobStarted, AgentJobStarted. */
static const struct field f_ref[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.ref.job_id), 0, "job_id is not a str"},
};

static const struct field f_backend_kill_job[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.kill.job_id), 0, "job_id is not a str"},
    {"state", sizeof("state") - 1, FK_STR, 0, OFF(u.kill.state), 0, "state is not a str"},
};

/* BackendJobDone, AgentJobDone. */
static const struct field f_result[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.result.job_id), 0, "job_id is not a str"},
    {"result", sizeof("result") - 1, FK_RESULT, 0, OFF(u.result.result_kind), OFF(u.result.result_text),
     "result is not an array [str, str]"},
    {"grade", sizeof("grade") - 1, FK_F64, 0, OFF(u.result.grade), 0, "grade is not a number"},
    {"problems", sizeof("problems") - 1, FK_MAP, 0, OFF(u.result.problems), 0, "problems is not a map"},
    {"tests", sizeof("tests") - 1, FK_MAP, 0, OFF(u.result.tests), 0, "tests is not a map"},
    {"custom", sizeof("custom") - 1, FK_MAP, 0, OFF(u.result.custom), 0, "custom is not a map"},
    {"state", sizeof("state") - 1, FK_STR, 0, OFF(u.result.state), 0, "state is not a str"},
    {"archive", sizeof("archive") - 1, FK_BIN_NIL, 0, OFF(u.result.archive), 0, "archive is not a bin or nil"},
    {"stdout", sizeof("stdout") - 1, FK_NSTR, 0, OFF(u.result.stdout_), 0, "stdout is not a str or nil"},
    {"stderr", sizeof("stderr") - 1, FK_NSTR, 0, OFF(u.result.stderr_), 0, "stderr is not a str or nil"},
};

/* BackendJobSSHDebug, AgentJobSSHDebug. */
static const struct field f_ssh[] = {
    {"job_id", sizeof("job_id") - 1, FK_STR, F_JOB_ID, OFF(u.ssh.job_id), 0, "job_id is not a str"},
    {"host", sizeof("host") - 1, FK_STR, 0, OFF(u.ssh.host), 0, "host is not a str"},
    {"port", sizeof("port") - 1, FK_U32, 0, OFF(u.ssh.port), 0, "port is not an integer in 0..2^32-1"},
    {"user", sizeof("user") - 1, FK_STR, 0, OFF(u.ssh.user), 0, "user is not a str"},
    {"password", sizeof("password") - 1, FK_STR, 0, OFF(u.ssh.password), 0, "password is not a str"},
};

static const struct field f_update_envs[] = {
    {"available_environments", sizeof("available_environments") - 1, FK_MAP, 0, OFF(u.envs.environments), 0,
     "available_environments is not a map"},
};

static const struct field f_get_queue[] = {
    {"jobs_running", sizeof("jobs_running") - 1, FK_QRUN, 0, OFF(u.queue.n_running), 0,
     "jobs_running is not an array of 7-tuples"},
    {"jobs_waiting", sizeof("jobs_waiting") - 1, FK_QWAIT, 0, OFF(u.queue.n_waiting), 0,
     "jobs_waiting is not an array of 5-tuples"},
};

static const struct field f_agent_hello[] = {
    {"friendly_name", sizeof("friendly_name") - 1, FK_STR, 0, OFF(u.agent_hello.friendly_name), 0, "friendly_name is not a str"},
    {"available_job_slots", sizeof("available_job_slots") - 1, FK_U32, 0, OFF(u.agent_hello.slots), 0,
     "available_job_slots is not an integer in 0..2^32-1"},
    {"available_environments", sizeof("available_environments") - 1, FK_MAP, 0, OFF(u.agent_hello.environments), 0,
     "available_environments is not a map"},
    {"ssh_allowed", sizeof("ssh_allowed") - 1, FK_BOOL_IGN, F_OPTIONAL, 0, 0, "ssh_allowed is not a bool"},
};

/* The messages a server receives most first: decode_fast tries the classes in this order
 * (it takes the first whose field list fits, then looks for the class named from there on
 * among those sharing that list: any order finds it). */
static const struct mtype mtypes[] = {
    {"AgentJobStarted", sizeof("AgentJobStarted") - 1, ING_AGENT_JOB_STARTED, NF(f_ref), f_ref},
    {"AgentJobDone", sizeof("AgentJobDone") - 1, ING_AGENT_JOB_DONE, NF(f_result), f_result},
    {"ClientNewJob", sizeof("ClientNewJob") - 1, ING_CLIENT_NEW_JOB, NF(f_client_new_job), f_client_new_job},
    {"ClientHello", sizeof("ClientHello") - 1, ING_CLIENT_HELLO, NF(f_client_hello), f_client_hello},
    {"ClientKillJob", sizeof("ClientKillJob") - 1, ING_CLIENT_KILL_JOB, NF(f_ref), f_ref},
    {"ClientGetQueue", sizeof("ClientGetQueue") - 1, ING_CLIENT_GET_QUEUE, 0, NULL},
    {"BackendUpdateEnvironments", sizeof("BackendUpdateEnvironments") - 1, ING_BACKEND_UPDATE_ENVIRONMENTS, NF(f_update_envs),
     f_update_envs},
    {"BackendJobStarted", sizeof("BackendJobStarted") - 1, ING_BACKEND_JOB_STARTED, NF(f_ref), f_ref},
    {"BackendJobDone", sizeof("BackendJobDone") - 1, ING_BACKEND_JOB_DONE, NF(f_result), f_result},
    {"BackendJobSSHDebug", sizeof("BackendJobSSHDebug") - 1, ING_BACKEND_JOB_SSH_DEBUG, NF(f_ssh), f_ssh},
    {"BackendGetQueue", sizeof("BackendGetQueue") - 1, ING_BACKEND_GET_QUEUE, NF(f_get_queue), f_get_queue},
    {"BackendNewJob", sizeof("BackendNewJob") - 1, ING_BACKEND_NEW_JOB, NF(f_backend_new_job), f_backend_new_job},
    {"BackendKillJob", sizeof("BackendKillJob") - 1, ING_BACKEND_KILL_JOB, NF(f_backend_kill_job), f_backend_kill_job},
    {"AgentHello", sizeof("AgentHello") - 1, ING_AGENT_HELLO, NF(f_agent_hello), f_agent_hello},
    {"AgentJobSSHDebug", sizeof("AgentJobSSHDebug") - 1, ING_AGENT_JOB_SSH_DEBUG, NF(f_ssh), f_ssh},
    {"Ping", sizeof("Ping") - 1, ING_PING, 0, NULL},
    {"Pong", sizeof("Pong") - 1, ING_PONG, 0, NULL},
    {"Unknown", sizeof("Unknown") - 1, ING_UNKNOWN, 0, NULL},
};

#define N_MTYPES (sizeof(mtypes) / sizeof(mtypes[0]))

/* ---- access to struct ing_msg by offset ---- */

static struct ing_view *
view_at(struct ing_msg *m, uint16_t off)
{
    return (struct ing_view *)(void *)((char *)m + off);
}

static const struct ing_view *
cview_at(const struct ing_msg *m, uint16_t off)
{
    return (const struct ing_view *)(const void *)((const char *)m + off);
}

static void *
at(struct ing_msg *m, uint16_t off)
{
    return (char *)m + off;
}

static const void *
cat(const struct ing_msg *m, uint16_t off)
{
    return (const char *)m + off;
}

/* bytes_eq tells whether p[0..len) is the text lit; it never reads lit past its end. */
static bool
bytes_eq(const uint8_t *p, size_t len, const char *lit)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (lit[i] == '\0' || (uint8_t)lit[i] != p[i])
            return false;
    return lit[i] == '\0';
}

static struct ing_view
mkview(const uint8_t *p, size_t len)
{
    struct ing_view v = {(const char *)p, (uint32_t)len};
    return v;
}

/* ---- readers over validated bytes (each still bounds-checked by ing_mp_read) ---- */

/* Reads a str (or nil when nullable) at *q into *v. Returns 0 or -1. */
static int
read_str(const uint8_t **q, const uint8_t *end, struct ing_view *v, bool nullable)
{
    struct ing_mp_obj o;
    if (ing_mp_read(q, end, &o) < 0)
        return -1;
    if (o.type == ING_MP_STR) {
        *v = mkview(o.v.s.p, o.v.s.len);
        return 0;
    }
    if (nullable && o.type == ING_MP_NIL) {
        v->p = NULL;
        v->len = 0;
        return 0;
    }
    return -1;
}

static int
read_bool(const uint8_t **q, const uint8_t *end, bool *b)
{
    struct ing_mp_obj o;
    if (ing_mp_read(q, end, &o) < 0 || o.type != ING_MP_BOOL)
        return -1;
    *b = o.v.b;
    return 0;
}

static int
read_i64(const uint8_t **q, const uint8_t *end, int64_t *i)
{
    struct ing_mp_obj o;
    if (ing_mp_read(q, end, &o) < 0 || o.type != ING_MP_INT)
        return -1;
    *i = o.v.i;
    return 0;
}

/* read_time reads a queue's time: an int in msgpack's range (*wide: above INT64_MAX). */
static int
read_time(const uint8_t **q, const uint8_t *end, int64_t *i, bool *wide)
{
    struct ing_mp_obj o;
    if (ing_mp_read(q, end, &o) < 0 || (o.type != ING_MP_INT && o.type != ING_MP_UINT))
        return -1;
    *wide = o.type == ING_MP_UINT;
    *i = *wide ? (int64_t)o.v.u : o.v.i;
    return 0;
}

/* Reads the header of an array of exactly n elements. */
static int
read_array(const uint8_t **q, const uint8_t *end, uint32_t n)
{
    struct ing_mp_obj o;
    if (ing_mp_read(q, end, &o) < 0 || o.type != ING_MP_ARRAY || o.v.n != n)
        return -1;
    return 0;
}

static const uint8_t *
running_at(const uint8_t *q, const uint8_t *end, struct ing_queue_running *e)
{
    if (read_array(&q, end, 7) < 0 || read_str(&q, end, &e->job_id, false) < 0 ||
        read_bool(&q, end, &e->is_current) < 0 || read_str(&q, end, &e->agent_name, false) < 0 ||
        read_str(&q, end, &e->info, true) < 0 || read_str(&q, end, &e->launcher, false) < 0 ||
        read_i64(&q, end, &e->started_at) < 0 ||
        read_time(&q, end, &e->max_time, &e->max_time_u64) < 0)
        return NULL;
    return q;
}

static const uint8_t *
waiting_at(const uint8_t *q, const uint8_t *end, struct ing_queue_waiting *e)
{
    if (read_array(&q, end, 5) < 0 || read_str(&q, end, &e->job_id, false) < 0 ||
        read_bool(&q, end, &e->is_current) < 0 || read_str(&q, end, &e->info, true) < 0 ||
        read_str(&q, end, &e->launcher, false) < 0 ||
        read_time(&q, end, &e->max_time, &e->max_time_u64) < 0)
        return NULL;
    return q;
}

/* zmq_msg_queue_next_running reads one running tuple of a decoded BackendGetQueue. */
const uint8_t *
zmq_msg_queue_next_running(const uint8_t *pos, const uint8_t *end, struct ing_queue_running *e)
{
    return running_at(pos, end, e);
}

/* zmq_msg_queue_next_waiting reads one waiting tuple of a decoded BackendGetQueue. */
const uint8_t *
zmq_msg_queue_next_waiting(const uint8_t *pos, const uint8_t *end, struct ing_queue_waiting *e)
{
    return waiting_at(pos, end, e);
}

/* ---- decoding ---- */

/* number reads an int, a uint or a float as a double. Returns 0 or -1 (another type). */
static int
number(const struct ing_mp_obj *o, double *d)
{
    if (o->type == ING_MP_INT)
        *d = (double)o->v.i;
    else if (o->type == ING_MP_UINT)
        *d = (double)o->v.u;
    else if (o->type == ING_MP_FLOAT)
        *d = o->v.f;
    else
        return -1;
    return 0;
}

/* Decodes the value v[0..len) of field f into m. Returns 0, or -1 if its type is wrong. */
static int
decode_value(const struct field *f, const uint8_t *v, size_t len, struct ing_msg *m)
{
    const uint8_t *q = v, *end = v + len;
    struct ing_mp_obj o;

    switch ((enum fk)f->kind) {
    case FK_STR:
        return read_str(&q, end, view_at(m, f->off), false);
    case FK_NSTR:
        return read_str(&q, end, view_at(m, f->off), true);
    case FK_MAP:
    case FK_NMAP:
        if (ing_mp_read(&q, end, &o) < 0)
            return -1;
        if (o.type != ING_MP_MAP && !(f->kind == FK_NMAP && o.type == ING_MP_NIL))
            return -1;
        *view_at(m, f->off) = mkview(v, len);
        return 0;
    case FK_BIN_NIL:
        if (ing_mp_read(&q, end, &o) < 0)
            return -1;
        if (o.type == ING_MP_NIL) {
            *view_at(m, f->off) = mkview(NULL, 0);
            return 0;
        }
        if (o.type != ING_MP_BIN)
            return -1;
        *view_at(m, f->off) = mkview(o.v.s.p, o.v.s.len);
        return 0;
    case FK_RESULT:
        if (read_array(&q, end, 2) < 0 || read_str(&q, end, view_at(m, f->off), false) < 0 ||
            read_str(&q, end, view_at(m, f->off2), false) < 0)
            return -1;
        return 0;
    case FK_F64: {
        double d;
        if (ing_mp_read(&q, end, &o) < 0 || number(&o, &d) < 0)
            return -1;
        memcpy(at(m, f->off), &d, sizeof(d));
        return 0;
    }
    case FK_I64: {
        int64_t i;
        if (read_i64(&q, end, &i) < 0)
            return -1;
        memcpy(at(m, f->off), &i, sizeof(i));
        return 0;
    }
    case FK_U32: {
        int64_t i;
        if (read_i64(&q, end, &i) < 0 || i < 0 || i > (int64_t)UINT32_MAX)
            return -1;
        uint32_t u = (uint32_t)i;
        memcpy(at(m, f->off), &u, sizeof(u));
        return 0;
    }
    case FK_DEBUG: {
        uint8_t d;
        if (ing_mp_read(&q, end, &o) < 0)
            return -1;
        if (o.type == ING_MP_BOOL)
            d = o.v.b ? ING_DEBUG_ON : ING_DEBUG_OFF;
        else if (o.type == ING_MP_STR && bytes_eq(o.v.s.p, o.v.s.len, "ssh"))
            d = ING_DEBUG_SSH;
        else
            return -1;
        memcpy(at(m, f->off), &d, sizeof(d));
        return 0;
    }
    case FK_BOOL_IGN: {
        bool b;
        return read_bool(&q, end, &b);
    }
    case FK_QRUN:
    case FK_QWAIT: {
        if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_ARRAY)
            return -1;
        const uint8_t *first = q;
        for (uint32_t i = 0; i < o.v.n; i++) {
            struct ing_queue_running r;
            struct ing_queue_waiting w;
            q = f->kind == FK_QRUN ? running_at(q, end, &r) : waiting_at(q, end, &w);
            if (q == NULL)
                return -1;
        }
        if (f->kind == FK_QRUN) {
            m->u.queue.n_running = o.v.n;
            m->u.queue.running = NULL;
            m->u.queue.wire_running = first;
        } else {
            m->u.queue.n_waiting = o.v.n;
            m->u.queue.waiting = NULL;
            m->u.queue.wire_waiting = first;
        }
        return 0;
    }
    }
    return -1;
}

/* ---- AgentJobDone, read as the Python backend relays it ----
 *
 * The Python backend relays an agent's result field for field without looking at the
 * values, and the stock Agent.send_job_result passes state, stdout, the text and archive
 * through unchecked. So an AgentJobDone is read loosely: a value of another type is coerced
 * to the documented type where a conversion keeps its meaning, and refused (the report is
 * unusable: the bridge then ends the job) where none does. */

static const uint8_t empty_map[1] = {0x80};

/* Coerces nil to the empty map; a map is kept. */
static int
loose_map(const uint8_t *v, size_t len, struct ing_view *out, const char **note, const char *nil)
{
    const uint8_t *q = v;
    struct ing_mp_obj o;
    if (ing_mp_read(&q, v + len, &o) < 0)
        return -1;
    if (o.type == ING_MP_MAP) {
        *out = mkview(v, len);
        return 0;
    }
    if (o.type != ING_MP_NIL)
        return -1;
    *out = mkview(empty_map, 1);
    *note = nil;
    return 0;
}

/* A str, or a bin holding valid UTF-8, as a str view. */
static bool
loose_text(const struct ing_mp_obj *o, struct ing_view *out)
{
    if (o->type == ING_MP_STR ||
        (o->type == ING_MP_BIN && ing_mp_utf8_valid(o->v.s.p, o->v.s.len))) {
        *out = mkview(o->v.s.p, o->v.s.len);
        return true;
    }
    return false;
}

/* A grade given as text: a whole decimal number, as Python's float() reads it. */
static int
loose_grade_text(const uint8_t *p, size_t n, double *d)
{
    char tmp[64];
    char *endp;
    while (n > 0 && (*p == ' ' || *p == '\t' || *p == '\n'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(tmp) || memchr(p, 0, n) != NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == '-' || p[i] == '+' ||
              p[i] == 'e' || p[i] == 'E'))
            return -1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    errno = 0;
    *d = strtod(tmp, &endp);
    if (*endp != '\0' || errno != 0 || !isfinite(*d))
        return -1;
    return 0;
}

/* Decodes the value of result field f loosely. Returns 0 (*note names a coerced value), or
 * -1 when the value cannot stand for its field. */
static int
decode_loose(const struct field *f, const uint8_t *v, size_t len, struct ing_msg *m,
             const char **note)
{
    const uint8_t *q = v, *end = v + len;
    struct ing_mp_obj o;
    struct ing_job_result *r = &m->u.result;
    if (f->off == OFF(u.result.problems))
        return loose_map(v, len, &r->problems, note, "problems nil, taken as {}");
    if (f->off == OFF(u.result.tests))
        return loose_map(v, len, &r->tests, note, "tests nil, taken as {}");
    if (f->off == OFF(u.result.custom))
        return loose_map(v, len, &r->custom, note, "custom nil, taken as {}");
    if (ing_mp_read(&q, end, &o) < 0)
        return -1;
    if (f->off == OFF(u.result.result_kind)) {
        struct ing_mp_obj e;
        if (o.type != ING_MP_ARRAY || o.v.n == 0 || ing_mp_read(&q, end, &e) < 0 ||
            !loose_text(&e, &r->result_kind))
            return -1;
        r->result_text = mkview((const uint8_t *)"", 0);
        if (o.v.n == 1) {
            *note = "result has no text, taken as \"\"";
            return 0;
        }
        if (ing_mp_read(&q, end, &e) < 0)
            return -1;
        if (!loose_text(&e, &r->result_text)) {
            if (e.type != ING_MP_NIL)
                return -1;
            *note = "result text nil, taken as \"\"";
        }
        if (o.v.n > 2)
            *note = "result has more than 2 elements: the first two are kept";
        return 0;
    }
    if (f->off == OFF(u.result.grade)) {
        double d;
        if (number(&o, &d) == 0) {
            r->grade = d;
            return 0;
        }
        if (o.type == ING_MP_BOOL) {
            d = o.v.b ? 1.0 : 0.0; /* Python: True == 1 */
            *note = "grade is a bool, taken as 1.0 or 0.0";
        } else if ((o.type == ING_MP_STR || o.type == ING_MP_BIN) &&
                   loose_grade_text(o.v.s.p, o.v.s.len, &d) == 0) {
            *note = "grade is a str, taken as its number";
        } else {
            return -1;
        }
        r->grade = d;
        return 0;
    }
    if (f->off == OFF(u.result.state)) {
        if (loose_text(&o, &r->state))
            return 0;
        if (o.type != ING_MP_NIL)
            return -1;
        r->state = mkview((const uint8_t *)"", 0);
        *note = "state nil, taken as \"\"";
        return 0;
    }
    if (f->off == OFF(u.result.archive)) {
        if (o.type == ING_MP_NIL) {
            r->archive = mkview(NULL, 0);
            return 0;
        }
        if (o.type != ING_MP_BIN && o.type != ING_MP_STR)
            return -1;
        r->archive = mkview(o.v.s.p, o.v.s.len);
        if (o.type == ING_MP_STR)
            *note = "archive is a str, taken as its bytes";
        return 0;
    }
    if (f->off == OFF(u.result.stdout_) || f->off == OFF(u.result.stderr_)) {
        struct ing_view *out = f->off == OFF(u.result.stdout_) ? &r->stdout_ : &r->stderr_;
        if (o.type == ING_MP_NIL) {
            *out = mkview(NULL, 0);
            return 0;
        }
        if (loose_text(&o, out)) {
            if (o.type == ING_MP_BIN)
                *note = "stdout or stderr is bytes, taken as text";
            return 0;
        }
        *out = mkview(NULL, 0);
        *note = "stdout or stderr is neither text nor nil (not UTF-8?): taken as nil";
        return 0;
    }
    return decode_value(f, v, len, m); /* job_id: strict */
}

static int
bad(const char **why, int err, const char *text)
{
    *why = text;
    return err;
}

static const struct mtype *
find_type(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < N_MTYPES; i++) {
        if (bytes_eq(p, len, mtypes[i].name))
            return &mtypes[i];
    }
    return NULL;
}

/* Index of the field named p[0..len) in t, or -1. Field next is tried first: INGInious
 * writes the fields in their declaration order, so it is the one after the previous key's. */
static int
find_field(const struct mtype *t, const uint8_t *p, size_t len, int next)
{
    if (next >= 0 && next < t->nfields && bytes_eq(p, len, t->fields[next].name))
        return next;
    for (int i = 0; i < t->nfields; i++) {
        const struct field *f = &t->fields[i];
        if (bytes_eq(p, len, f->name))
            return i;
        if ((f->flags & F_COURSE) && bytes_eq(p, len, TASKSET_KEY))
            return i;
    }
    return -1;
}

/* ---- the fast path: a message exactly as INGInious writes it ----
 *
 * INGInious writes a message's fields in their declaration order with "@type" last, each
 * value of its documented type. decode_fast reads such a message in one pass: each key is
 * the expected one, each value is checked as the full validation would check it (UTF-8 of
 * every str, a map value validated whole), and decoded. Anything else (another key order,
 * a coerced value, an unknown class, ...) returns -1 and the message goes through
 * zmq_msg_decode's general path, which accepts or refuses it with its reason: this path
 * accepts a subset of what that one accepts, and decodes it the same way. */

/* fast_read is ing_mp_read with the headers INGInious' messages are made of read inline
 * (fixstr, str8, fixmap, fixarray, nil, bool, float64, positive fixint); the others go to
 * ing_mp_read. Same result, same bounds checks. */
static inline __attribute__((always_inline)) int
fast_read(const uint8_t **q, const uint8_t *end, struct ing_mp_obj *o)
{
    const uint8_t *p = *q;
    if (p >= end)
        return -EPROTO;
    uint8_t b = *p;
    size_t avail = (size_t)(end - p);
    if (b >= 0xa0 && b <= 0xbf) {
        uint32_t n = b & 0x1f;
        if (avail < 1 + (size_t)n)
            return -EPROTO;
        o->type = ING_MP_STR;
        o->v.s.p = p + 1;
        o->v.s.len = n;
        *q = p + 1 + n;
        return 0;
    }
    if (b == 0xd9) {
        if (avail < 2 || avail - 2 < p[1])
            return -EPROTO;
        o->type = ING_MP_STR;
        o->v.s.p = p + 2;
        o->v.s.len = p[1];
        *q = p + 2 + p[1];
        return 0;
    }
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        o->type = (b & 0xf0) == 0x80 ? ING_MP_MAP : ING_MP_ARRAY;
        o->v.n = b & 0x0f;
        *q = p + 1;
        return 0;
    }
    if (b <= 0x7f) {
        o->type = ING_MP_INT;
        o->v.i = b;
        *q = p + 1;
        return 0;
    }
    if (b == 0xc0 || b == 0xc2 || b == 0xc3) {
        o->type = b == 0xc0 ? ING_MP_NIL : ING_MP_BOOL;
        o->v.b = b == 0xc3;
        *q = p + 1;
        return 0;
    }
    if (b == 0xcb) {
        if (avail < 9)
            return -EPROTO;
        uint64_t u = 0;
        for (int i = 1; i <= 8; i++)
            u = u << 8 | p[i];
        o->type = ING_MP_FLOAT;
        memcpy(&o->v.f, &u, sizeof(o->v.f));
        *q = p + 9;
        return 0;
    }
    return ing_mp_read(q, end, o);
}

/* fast_utf8 checks a str payload (ing_mp_utf8_valid reads a short ASCII one by words). */
static inline bool
fast_utf8(const uint8_t *p, uint32_t n)
{
    return ing_mp_utf8_valid(p, n);
}

/* fast_value checks the value at *q (ending before end) for field f as the validation of
 * the whole message would, in its canonical type only, decodes it into m as decode_value
 * does, and advances *q past it. */
static inline __attribute__((always_inline)) bool
fast_value(const struct field *f, const uint8_t **q, const uint8_t *end, struct ing_msg *m)
{
    const uint8_t *v = *q;
    struct ing_mp_obj o, e;
    if (fast_read(q, end, &o) < 0)
        return false;
    switch ((enum fk)f->kind) {
    case FK_STR:
    case FK_NSTR:
        if (o.type == ING_MP_NIL && f->kind == FK_NSTR) {
            *view_at(m, f->off) = mkview(NULL, 0);
            return true;
        }
        if (o.type != ING_MP_STR || !fast_utf8(o.v.s.p, o.v.s.len))
            return false;
        *view_at(m, f->off) = mkview(o.v.s.p, o.v.s.len);
        return true;
    case FK_MAP:
    case FK_NMAP:
        if (f->kind == FK_NMAP && o.type == ING_MP_NIL) {
            *view_at(m, f->off) = mkview(v, 1);
            return true;
        }
        if (o.type != ING_MP_MAP)
            return false;
        *q = v;
        /* Two levels under the limit: the message's map and this one. Deeper values are
         * left to the general path. Found and validated in one walk. */
        if (mp_validate_next(q, end, ING_MP_MAX_DEPTH - 2) < 0)
            return false;
        *view_at(m, f->off) = mkview(v, (size_t)(*q - v));
        return true;
    case FK_BIN_NIL:
        if (o.type != ING_MP_NIL && o.type != ING_MP_BIN)
            return false;
        *view_at(m, f->off) = o.type == ING_MP_NIL ? mkview(NULL, 0) : mkview(o.v.s.p, o.v.s.len);
        return true;
    case FK_RESULT:
        if (o.type != ING_MP_ARRAY || o.v.n != 2)
            return false;
        for (int i = 0; i < 2; i++) {
            if (fast_read(q, end, &e) < 0 || e.type != ING_MP_STR ||
                !fast_utf8(e.v.s.p, e.v.s.len))
                return false;
            *view_at(m, i == 0 ? f->off : f->off2) = mkview(e.v.s.p, e.v.s.len);
        }
        return true;
    case FK_F64:
        if (o.type != ING_MP_FLOAT)
            return false;
        memcpy(at(m, f->off), &o.v.f, sizeof(o.v.f));
        return true;
    case FK_I64:
        if (o.type != ING_MP_INT)
            return false;
        memcpy(at(m, f->off), &o.v.i, sizeof(o.v.i));
        return true;
    case FK_DEBUG: {
        uint8_t d;
        if (o.type == ING_MP_BOOL)
            d = o.v.b ? ING_DEBUG_ON : ING_DEBUG_OFF;
        else if (o.type == ING_MP_STR && bytes_eq(o.v.s.p, o.v.s.len, "ssh"))
            d = ING_DEBUG_SSH;
        else
            return false;
        memcpy(at(m, f->off), &d, sizeof(d));
        return true;
    }
    default: /* the other kinds (AgentHello, BackendGetQueue): the general path */
        return false;
    }
}

/* key_eq tells whether p[0..len) holds the name in the NUL-padded array key (len <= its
 * size: KEY_PAD or NAME_PAD), comparing overlapping words (a call to memcmp cost more than
 * the key's decoding). */
static inline bool
key_eq(const uint8_t *p, const char *key, size_t len)
{
    uint64_t a, b, c, d;
    uint32_t x, y;
    if (len >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, key, 8);
        memcpy(&c, p + len - 8, 8);
        memcpy(&d, key + len - 8, 8);
        if (a != b || c != d)
            return false;
        if (len > 16) {
            memcpy(&a, p + 8, 8);
            memcpy(&b, key + 8, 8);
            if (a != b)
                return false;
        }
        if (len > 24) {
            memcpy(&a, p + 16, 8);
            memcpy(&b, key + 16, 8);
            return a == b;
        }
        return true;
    }
    if (len >= 4) {
        memcpy(&x, p, 4);
        memcpy(&y, key, 4);
        if (x != y)
            return false;
        memcpy(&x, p + len - 4, 4);
        memcpy(&y, key + len - 4, 4);
        return x == y;
    }
    for (size_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)key[i])
            return false;
    return true;
}

/* fast_key reads the key at *q and tells whether it is name, of len bytes (or, for the
 * course field, taskset_id), written as INGInious writes a key: a fixstr (another header
 * takes the general path). */
static inline __attribute__((always_inline)) bool
fast_key(const uint8_t **q, const uint8_t *end, const char name[KEY_PAD], size_t len,
         bool course)
{
    const uint8_t *p = *q;
    size_t avail = (size_t)(end - p);
    if (avail > len && p[0] == (0xa0 | len) && key_eq(p + 1, name, len)) {
        *q = p + 1 + len;
        return true;
    }
    if (course && avail > sizeof(TASKSET_KEY) - 1 && p[0] == (0xa0 | (sizeof(TASKSET_KEY) - 1)) &&
        key_eq(p + 1, taskset_key_pad, sizeof(TASKSET_KEY) - 1)) {
        *q = p + sizeof(TASKSET_KEY);
        return true;
    }
    return false;
}

/* fast_fields reads the nf fields of table fields (keys and values) from *q, message p,
 * noting each key's offset in lay (when not NULL). */
static inline __attribute__((always_inline)) bool
fast_fields(const struct field *fields, int nf, const uint8_t *p, const uint8_t **q,
            const uint8_t *end, struct ing_msg *m, struct zmq_msg_layout *lay)
{
#pragma GCC unroll 16
    for (int i = 0; i < nf; i++) {
        const struct field *f = &fields[i];
        if (lay != NULL)
            lay->key[i] = (uint32_t)(*q - p);
        if ((f->flags & F_OPTIONAL) || !fast_key(q, end, f->name, f->nlen, f->flags & F_COURSE))
            return false;
        if (!fast_value(f, q, end, m))
            return false;
    }
    return true;
}

/* decode_fast decodes p[0..n) into *m if it is written as INGInious writes it. Returns 0,
 * or -1 (*m unspecified): use the general path. */
static int
decode_fast(const uint8_t *p, size_t n, struct ing_msg *m, struct zmq_msg_layout *lay)
{
    const uint8_t *q = p, *end = p + n, *k0;
    struct ing_mp_obj o, k;
    const struct mtype *t = NULL;
    if (fast_read(&q, end, &o) < 0 || o.type != ING_MP_MAP || o.v.n == 0)
        return -1;
    k0 = q;
    if (fast_read(&q, end, &k) < 0 || k.type != ING_MP_STR)
        return -1;
    /* The class whose field list starts with the first key and has the pair count. Classes
     * that share both share their field list too (AgentJobDone / BackendJobDone, ...). */
    for (size_t i = 0; i < N_MTYPES && t == NULL; i++) {
        const struct mtype *c = &mtypes[i];
        if ((uint32_t)c->nfields + 1 != o.v.n)
            continue;
        if (c->nfields == 0 ? bytes_eq(k.v.s.p, k.v.s.len, TYPE_KEY)
                            : k.v.s.len == c->fields[0].nlen &&
                                  key_eq(k.v.s.p, c->fields[0].name, k.v.s.len))
            t = c;
    }
    if (t == NULL)
        return -1;
    /* No memset of *m (gcc writes a rep stos, slow at this size): every member of the
     * class's struct is a field of its table, set below; on failure the general path
     * clears *m. */
    q = k0;
    /* The classes of a job's life get code of their own: their table is a constant there,
     * so that the loop unrolls and each field's kind and name fold into it. */
    bool ok;
    if (t->fields == f_client_new_job)
        ok = fast_fields(f_client_new_job, NF(f_client_new_job), p, &q, end, m, lay);
    else if (t->fields == f_result)
        ok = fast_fields(f_result, NF(f_result), p, &q, end, m, lay);
    else if (t->fields == f_ref)
        ok = fast_fields(f_ref, NF(f_ref), p, &q, end, m, lay);
    else
        ok = fast_fields(t->fields, t->nfields, p, &q, end, m, lay);
    if (!ok)
        return -1;
    if (lay != NULL) {
        lay->key[t->nfields] = (uint32_t)(q - p);
        lay->nfields = t->nfields;
    }
    if (!fast_key(&q, end, type_key_pad, sizeof(TYPE_KEY) - 1, false) ||
        fast_read(&q, end, &o) < 0 ||
        o.type != ING_MP_STR || q != end)
        return -1;
    /* The class named: t or another class of the same field list. */
    const struct mtype *named = NULL;
    for (const struct mtype *c = t; c < mtypes + N_MTYPES && named == NULL; c++)
        if (c->fields == t->fields && c->nfields == t->nfields && o.v.s.len == c->nlen &&
            key_eq(o.v.s.p, c->name, c->nlen))
            named = c;
    if (named == NULL)
        return -1;
    m->type = named->type;
    return 0;
}

/* zmq_msg_decode_ex decodes one msgpack message into *m, zero-copy, and tells how. */
int
zmq_msg_decode_ex(const uint8_t *p, size_t n, struct ing_msg *m, const char **why,
                  unsigned *how, struct zmq_msg_layout *lay)
{
    const char *reason = NULL;
    *how = 0;
    if (p != NULL && n <= UINT32_MAX && decode_fast(p, n, m, lay) == 0) {
        if (why != NULL)
            *why = NULL;
        *how = ZMQ_DEC_FAST;
        return 0; /* a grade there is a float */
    }
    int rc = zmq_msg_decode_general(p, n, m, &reason);
    if (why != NULL)
        *why = reason;
    if (rc == 0 && (m->type == ING_AGENT_JOB_DONE || m->type == ING_BACKEND_JOB_DONE) &&
        zmq_msg_grade_is_int(p, n))
        *how |= ZMQ_DEC_GRADE_INT;
    return rc;
}

/* zmq_msg_decode decodes one msgpack message into *m, zero-copy: the fast path, else the
 * general one. */
int
zmq_msg_decode(const uint8_t *p, size_t n, struct ing_msg *m, const char **why)
{
    if (p != NULL && n <= UINT32_MAX && decode_fast(p, n, m, NULL) == 0) {
        if (why != NULL)
            *why = NULL;
        return 0;
    }
    return zmq_msg_decode_general(p, n, m, why);
}

int
zmq_msg_decode_general(const uint8_t *p, size_t n, struct ing_msg *m, const char **why)
{
    const char *unused;
    const uint8_t *q, *end, *pairs; /* end = p + n once p is known not NULL */
    const uint8_t *val[MAX_FIELDS];
    size_t vlen[MAX_FIELDS];
    /* The pairs as pass 1 found them (the first PAIRS_SEEN), so that pass 2 does not walk
     * the values again. */
    struct {
        const uint8_t *k, *v;
        uint32_t klen;
        size_t vlen;
    } pair[PAIRS_SEEN];
    const struct mtype *t = NULL;
    struct ing_mp_obj o, k;
    uint32_t npairs, seen = 0;
    bool have_type = false;

    if (why == NULL)
        why = &unused;
    *why = NULL;
    memset(m, 0, sizeof(*m));
    if (n > UINT32_MAX)
        return bad(why, -EMSGSIZE, "message larger than 4 GiB");
    if (p == NULL || ing_mp_validate(p, n, ING_MP_MAX_DEPTH) < 0)
        return bad(why, -EPROTO,
                   "not valid msgpack (truncated, trailing bytes, bad UTF-8, "
                   "ext or too deep)");
    q = p;
    end = p + n;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP)
        return bad(why, -EPROTO, "not a msgpack map");
    npairs = o.v.n;
    pairs = q;

    /* Pass 1: the class, from "@type". Every key must be a str. */
    for (uint32_t i = 0; i < npairs; i++) {
        if (ing_mp_read(&q, end, &k) < 0 || k.type != ING_MP_STR)
            return bad(why, -EPROTO, "a key is not a str");
        if (bytes_eq(k.v.s.p, k.v.s.len, TYPE_KEY)) {
            if (have_type)
                return bad(why, -EPROTO, "repeated key @type");
            have_type = true;
            const uint8_t *v = q;
            if (ing_mp_read(&v, end, &o) < 0 || o.type != ING_MP_STR)
                return bad(why, -EPROTO, "@type is not a str");
            t = find_type(o.v.s.p, o.v.s.len);
            if (t == NULL)
                return bad(why, -EPROTO, "unknown @type");
        }
        const uint8_t *v = q;
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
            return bad(why, -EPROTO, "not valid msgpack");
        if (i < PAIRS_SEEN) {
            pair[i].k = k.v.s.p;
            pair[i].klen = k.v.s.len;
            pair[i].v = v;
            pair[i].vlen = (size_t)(q - v);
        }
    }
    if (!have_type)
        return bad(why, -EPROTO, "no @type");

    /* Pass 2: exactly the fields of the class. */
    const char *key_err = NULL;
    int next = 0;
    q = pairs;
    for (uint32_t i = 0; i < npairs; i++) {
        const uint8_t *v;
        size_t vl;
        if (i < PAIRS_SEEN) {
            k.v.s.p = pair[i].k;
            k.v.s.len = pair[i].klen;
            v = pair[i].v;
            vl = pair[i].vlen;
        } else {
            if (i == PAIRS_SEEN)
                q = pair[i - 1].v + pair[i - 1].vlen;
            if (ing_mp_read(&q, end, &k) < 0)
                return bad(why, -EPROTO, "not valid msgpack");
            v = q;
            if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
                return bad(why, -EPROTO, "not valid msgpack");
            vl = (size_t)(q - v);
        }
        if (bytes_eq(k.v.s.p, k.v.s.len, TYPE_KEY))
            continue;
        int fi = find_field(t, k.v.s.p, k.v.s.len, next);
        next = fi + 1;
        if (fi < 0) {
            if (key_err == NULL)
                key_err = "unexpected key for this @type";
            continue;
        }
        if (seen & (1u << fi)) {
            if (key_err == NULL)
                key_err = "repeated key (or both course_id and taskset_id)";
            continue;
        }
        seen |= 1u << fi;
        val[fi] = v;
        vlen[fi] = vl;
    }
    for (int i = 0; i < t->nfields && key_err == NULL; i++) {
        if (!(seen & (1u << i)) && !(t->fields[i].flags & F_OPTIONAL))
            key_err = "missing key for this @type";
    }

    /* The values: job_id first, so that a bad value elsewhere can still be answered. An
     * agent's result is read loosely (decode_loose); one whose keys are wrong but whose
     * job_id is a str is -EINVAL, so that its job can still be ended. */
    bool loose = t->type == ING_AGENT_JOB_DONE;
    int job = -1;
    for (int i = 0; i < t->nfields; i++) {
        if (t->fields[i].flags & F_JOB_ID) {
            job = i;
            if (!(seen & (1u << i)) || decode_value(&t->fields[i], val[i], vlen[i], m) < 0) {
                memset(m, 0, sizeof(*m));
                if (key_err != NULL)
                    return bad(why, -EPROTO, key_err);
                m->type = t->type; /* for the registration gate */
                return bad(why, -EPROTO, t->fields[i].bad);
            }
        }
    }
    if (key_err != NULL) {
        if (!loose) {
            memset(m, 0, sizeof(*m));
            return bad(why, -EPROTO, key_err);
        }
        m->type = t->type;
        return bad(why, -EINVAL, key_err);
    }
    m->type = t->type;
    const char *note = NULL;
    for (int i = 0; i < t->nfields; i++) {
        if (i == job || !(seen & (1u << i)))
            continue;
        int rc = loose ? decode_loose(&t->fields[i], val[i], vlen[i], m, &note)
                       : decode_value(&t->fields[i], val[i], vlen[i], m);
        if (rc < 0)
            return bad(why, job >= 0 ? -EINVAL : -EPROTO, t->fields[i].bad);
    }
    *why = note;
    return 0;
}

/* ---- encoding ---- */

static int
put_view_str(struct ing_mp_writer *w, const struct ing_view *v, bool nullable)
{
    if (v->p == NULL)
        return nullable ? ing_mp_put_nil(w) : -EINVAL;
    return ing_mp_put_str(w, v->p, v->len);
}

/* queue_end makes a running entry's last field v0.5's: the job's end, started_at plus its
 * time limit (0 when negative or unknown), a Python int packed as msgpack does; -1 past 2^64
 * (where Python's msgpack gives up). */
static void
queue_end(struct ing_queue_running *e)
{
    uint64_t add = e->max_time_u64 || e->max_time > 0 ? (uint64_t)e->max_time : 0;
    uint64_t start = e->started_at > 0 ? (uint64_t)e->started_at : 0; /* a wall clock */
    if (add == 0) {
        e->max_time = e->started_at;
        e->max_time_u64 = false;
        return;
    }
    uint64_t end = start + add;
    bool over = end < add;
    e->max_time = over ? -1 : (int64_t)end;
    e->max_time_u64 = !over && end > (uint64_t)INT64_MAX;
}

static int
put_running(struct ing_mp_writer *w, const struct ing_queue_running *e)
{
    int rc;
    ing_mp_put_array(w, 7);
    if ((rc = put_view_str(w, &e->job_id, false)) < 0)
        return rc;
    ing_mp_put_bool(w, e->is_current);
    if ((rc = put_view_str(w, &e->agent_name, false)) < 0 ||
        (rc = put_view_str(w, &e->info, true)) < 0 ||
        (rc = put_view_str(w, &e->launcher, false)) < 0)
        return rc;
    ing_mp_put_int(w, e->started_at);
    return e->max_time_u64 ? ing_mp_put_uint(w, (uint64_t)e->max_time) : ing_mp_put_int(w, e->max_time);
}

static int
put_waiting(struct ing_mp_writer *w, const struct ing_queue_waiting *e)
{
    int rc;
    ing_mp_put_array(w, 5);
    if ((rc = put_view_str(w, &e->job_id, false)) < 0)
        return rc;
    ing_mp_put_bool(w, e->is_current);
    if ((rc = put_view_str(w, &e->info, true)) < 0 ||
        (rc = put_view_str(w, &e->launcher, false)) < 0)
        return rc;
    return e->max_time_u64 ? ing_mp_put_uint(w, (uint64_t)e->max_time) : ing_mp_put_int(w, e->max_time);
}

/* Writes the value of field f. Returns 0, -EINVAL, or the writer's error. */
static int
encode_value(struct ing_mp_writer *w, const struct field *f, const struct ing_msg *m)
{
    const struct ing_view *v = cview_at(m, f->off);
    int rc;

    switch ((enum fk)f->kind) {
    case FK_STR:
        return put_view_str(w, v, false);
    case FK_NSTR:
        return put_view_str(w, v, true);
    case FK_MAP:
    case FK_NMAP:
        if (v->p == NULL)
            return f->kind == FK_NMAP ? ing_mp_put_nil(w) : -EINVAL;
        if (v->len == 0)
            return -EINVAL;
        return ing_mp_put_raw(w, v->p, v->len);
    case FK_BIN_NIL:
        if (v->p == NULL)
            return ing_mp_put_nil(w);
        return ing_mp_put_bin(w, v->p, v->len);
    case FK_RESULT:
        ing_mp_put_array(w, 2);
        if ((rc = put_view_str(w, v, false)) < 0)
            return rc;
        return put_view_str(w, cview_at(m, f->off2), false);
    case FK_F64: {
        double d;
        memcpy(&d, cat(m, f->off), sizeof(d));
        return ing_mp_put_double(w, d);
    }
    case FK_I64: {
        int64_t i;
        memcpy(&i, cat(m, f->off), sizeof(i));
        return ing_mp_put_int(w, i);
    }
    case FK_U32: {
        uint32_t u;
        memcpy(&u, cat(m, f->off), sizeof(u));
        return ing_mp_put_uint(w, u);
    }
    case FK_DEBUG: {
        uint8_t d;
        memcpy(&d, cat(m, f->off), sizeof(d));
        if (d == ING_DEBUG_OFF || d == ING_DEBUG_ON)
            return ing_mp_put_bool(w, d == ING_DEBUG_ON);
        if (d == ING_DEBUG_SSH)
            return ing_mp_put_cstr(w, "ssh");
        return -EINVAL;
    }
    case FK_BOOL_IGN:
        return 0;
    case FK_QRUN:
        if (m->u.queue.n_running > 0 && m->u.queue.running == NULL)
            return -EINVAL;
        ing_mp_put_array(w, m->u.queue.n_running);
        for (uint32_t i = 0; i < m->u.queue.n_running; i++) {
            if ((rc = put_running(w, &m->u.queue.running[i])) < 0)
                return rc;
        }
        return w->err;
    case FK_QWAIT:
        if (m->u.queue.n_waiting > 0 && m->u.queue.waiting == NULL)
            return -EINVAL;
        ing_mp_put_array(w, m->u.queue.n_waiting);
        for (uint32_t i = 0; i < m->u.queue.n_waiting; i++) {
            if ((rc = put_waiting(w, &m->u.queue.waiting[i])) < 0)
                return rc;
        }
        return w->err;
    }
    return -EINVAL;
}

/* zmq_msg_encode appends m as one msgpack map, as the Python encoder writes it. */
int
zmq_msg_encode(const struct ing_msg *m, struct ing_mp_writer *w, enum zmq_job_field jf)
{
    return zmq_msg_encode_opt(m, w, jf, 0);
}

/* Leaves out field f of m under opts. */
static bool
left_out(const struct ing_msg *m, const struct field *f, unsigned opts)
{
    if (f->flags & F_OPTIONAL)
        return true;
    return (opts & ZMQ_ENC_KILL_NO_STATE) && m->type == ING_BACKEND_KILL_JOB &&
           f->off == OFF(u.kill.state);
}

/* ---- the fast path of the encoder ----
 *
 * When the writer already has room for the whole message (bounded from its views), the
 * fields are written in place, without the writer's per-call checks: the same bytes as the
 * put functions write. Otherwise, or for a message the general encoder must check (a NULL
 * where a value is required, the queue's tuples), the general encoder runs. */

/* fw_sized writes a str (fixtag 0xa0) or bin (fixtag 0) header for len bytes, then the
 * bytes, at *o. */
static inline uint8_t *
fw_sized(uint8_t *o, bool str, const void *p, size_t len)
{
    if (str && len <= 31) {
        *o++ = (uint8_t)(0xa0 | len);
    } else if (len <= UINT8_MAX) {
        *o++ = str ? 0xd9 : 0xc4;
        *o++ = (uint8_t)len;
    } else if (len <= UINT16_MAX) {
        *o++ = str ? 0xda : 0xc5;
        *o++ = (uint8_t)(len >> 8);
        *o++ = (uint8_t)len;
    } else {
        *o++ = str ? 0xdb : 0xc6;
        *o++ = (uint8_t)(len >> 24);
        *o++ = (uint8_t)(len >> 16);
        *o++ = (uint8_t)(len >> 8);
        *o++ = (uint8_t)len;
    }
    if (len > 0)
        memcpy(o, p, len);
    return o + len;
}

/* fw_key writes the str key of len bytes (a fixstr), from its KEY_PAD-byte NUL-padded
 * array, at o: one fixed-size copy (a variable one of a few bytes cost more than the rest
 * of the encoding), so it writes 1 + KEY_PAD bytes, under the 32 fast_bound counts a key. */
static inline uint8_t *
fw_key(uint8_t *o, const char key[KEY_PAD], size_t len)
{
    o[0] = (uint8_t)(0xa0 | len);
    memcpy(o + 1, key, KEY_PAD);
    return o + 1 + len;
}

/* fw_name writes the class name of len bytes (a fixstr) from its NAME_PAD-byte array:
 * 1 + NAME_PAD bytes written. */
static inline uint8_t *
fw_name(uint8_t *o, const char name[NAME_PAD], size_t len)
{
    o[0] = (uint8_t)(0xa0 | len);
    memcpy(o + 1, name, NAME_PAD);
    return o + 1 + len;
}


/* fast_bound returns the most bytes m's fields can take (keys, "@type" and the map header
 * included), or 0 when the general encoder must run. */
static size_t
fast_bound(const struct ing_msg *m, const struct mtype *t)
{
    size_t b = 5 + 2 * (1 + NAME_PAD); /* the map header, "@type" and the class name */
    for (int i = 0; i < t->nfields; i++) {
        const struct field *f = &t->fields[i];
        const struct ing_view *v = cview_at(m, f->off);
        b += 1 + 31;
        switch ((enum fk)f->kind) {
        case FK_STR:
        case FK_NSTR:
        case FK_BIN_NIL:
            if (v->p == NULL && f->kind == FK_STR)
                return 0;
            b += 5 + (size_t)v->len;
            break;
        case FK_MAP:
        case FK_NMAP:
            if ((v->p == NULL && f->kind == FK_MAP) || (v->p != NULL && v->len == 0))
                return 0;
            b += 1 + (size_t)v->len;
            break;
        case FK_RESULT:
            if (v->p == NULL || cview_at(m, f->off2)->p == NULL)
                return 0;
            b += 11 + (size_t)v->len + cview_at(m, f->off2)->len;
            break;
        case FK_F64:
        case FK_I64:
        case FK_U32:
        case FK_DEBUG:
        case FK_BOOL_IGN:
            b += 9;
            break;
        default:
            return 0;
        }
    }
    return b;
}

/* encode_fast writes m's map (class t, the course field named taskset_id if taskset, else
 * its own name) at w's end, which has room for fast_bound bytes. Returns 0, or -EINVAL (w->len unchanged). */
static int
encode_fast(const struct ing_msg *m, const struct mtype *t, struct ing_mp_writer *w,
            bool taskset, uint32_t count, unsigned opts)
{
    size_t start = w->len;
    uint8_t *o = w->buf + w->len;
    if (count <= 15) {
        *o++ = (uint8_t)(0x80 | count);
    } else {
        *o++ = 0xde;
        *o++ = (uint8_t)(count >> 8);
        *o++ = (uint8_t)count;
    }
    for (int i = 0; i < t->nfields; i++) {
        const struct field *f = &t->fields[i];
        if (left_out(m, f, opts) || f->kind == FK_BOOL_IGN)
            continue;
        if ((f->flags & F_COURSE) && taskset)
            o = fw_key(o, taskset_key_pad, sizeof(TASKSET_KEY) - 1);
        else
            o = fw_key(o, f->name, f->nlen);
        const struct ing_view *v = cview_at(m, f->off);
        switch ((enum fk)f->kind) {
        case FK_STR:
        case FK_NSTR:
        case FK_BIN_NIL:
            if (v->p == NULL)
                *o++ = 0xc0;
            else
                o = fw_sized(o, f->kind != FK_BIN_NIL, v->p, v->len);
            break;
        case FK_MAP:
        case FK_NMAP:
            if (v->p == NULL) {
                *o++ = 0xc0;
            } else {
                memcpy(o, v->p, v->len);
                o += v->len;
            }
            break;
        case FK_RESULT: {
            const struct ing_view *text = cview_at(m, f->off2);
            *o++ = 0x92;
            o = fw_sized(o, true, v->p, v->len);
            o = fw_sized(o, true, text->p, text->len);
            break;
        }
        case FK_DEBUG: {
            uint8_t d;
            memcpy(&d, cat(m, f->off), sizeof(d));
            if (d == ING_DEBUG_SSH) {
                o = fw_sized(o, true, "ssh", 3);
            } else if (d == ING_DEBUG_OFF || d == ING_DEBUG_ON) {
                *o++ = d == ING_DEBUG_ON ? 0xc3 : 0xc2;
            } else {
                w->len = start;
                return -EINVAL;
            }
            break;
        }
        default: { /* numbers: through the writer (their room is counted) */
            double d = 0;
            w->len = (size_t)(o - w->buf);
            if (f->kind == FK_F64)
                memcpy(&d, cat(m, f->off), sizeof(d));
            if (f->kind == FK_F64 && (opts & ZMQ_ENC_GRADE_INT) && d >= -9.0e18 && d <= 9.0e18 &&
                d == (double)(int64_t)d)
                ing_mp_put_int(w, (int64_t)d);
            else
                encode_value(w, f, m);
            o = w->buf + w->len;
            break;
        }
        }
    }
    o = fw_key(o, type_key_pad, sizeof(TYPE_KEY) - 1);
    o = fw_name(o, t->name, t->nlen);
    w->len = (size_t)(o - w->buf);
    return 0;
}

int
zmq_msg_encode_opt(const struct ing_msg *m, struct ing_mp_writer *w, enum zmq_job_field jf,
                   unsigned opts)
{
    const struct mtype *t = NULL;
    size_t start = w->len;
    uint32_t count = 1;
    int rc = 0;

    if (w->err)
        return w->err;
    if (jf != ZMQ_JOB_FIELD_COURSE_ID && jf != ZMQ_JOB_FIELD_TASKSET_ID)
        return -EINVAL;
    for (size_t i = 0; i < N_MTYPES && t == NULL; i++) {
        if (mtypes[i].type == m->type)
            t = &mtypes[i];
    }
    if (t == NULL)
        return -EINVAL;
    for (int i = 0; i < t->nfields; i++) {
        if (!left_out(m, &t->fields[i], opts))
            count++;
    }
    size_t fb = fast_bound(m, t);
    if (fb > 0 && w->cap - w->len >= fb)
        return encode_fast(m, t, w, jf == ZMQ_JOB_FIELD_TASKSET_ID, count,
                           opts);
    ing_mp_put_map(w, count);
    for (int i = 0; i < t->nfields && rc == 0; i++) {
        const struct field *f = &t->fields[i];
        if (left_out(m, f, opts))
            continue;
        const char *key = f->name;
        if ((f->flags & F_COURSE) && jf == ZMQ_JOB_FIELD_TASKSET_ID)
            key = TASKSET_KEY;
        ing_mp_put_cstr(w, key);
        if ((opts & ZMQ_ENC_GRADE_INT) && f->kind == FK_F64 && m->u.result.grade >= -9.0e18 &&
            m->u.result.grade <= 9.0e18 && m->u.result.grade == (double)(int64_t)m->u.result.grade)
            rc = ing_mp_put_int(w, (int64_t)m->u.result.grade);
        else
            rc = encode_value(w, f, m);
    }
    if (rc == 0) {
        ing_mp_put_cstr(w, TYPE_KEY);
        rc = ing_mp_put_cstr(w, t->name);
    }
    if (rc == 0)
        rc = w->err;
    if (rc == -EINVAL && w->err == 0)
        w->len = start;
    return rc;
}

/* ---- release shapes ---- */

/* Whether an environment's info in available_environments v[0..n) (type -> name -> info)
 * has a float "created" (validated bytes). */
static bool
env_created_float(const uint8_t *v, size_t n)
{
    const uint8_t *q = v, *end = v + n;
    struct ing_mp_obj o;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP)
        return false;
    for (uint32_t i = 0; i < o.v.n; i++) {
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0) /* the type */
            return false;
        const uint8_t *names = q;
        struct ing_mp_obj h;
        if (ing_mp_read(&names, end, &h) < 0)
            return false;
        if (h.type == ING_MP_MAP) {
            for (uint32_t j = 0; j < h.v.n; j++) {
                const uint8_t *info;
                if (ing_mp_skip(&names, end, ING_MP_MAX_DEPTH) < 0) /* the name */
                    return false;
                info = names;
                if (ing_mp_skip(&names, end, ING_MP_MAX_DEPTH) < 0)
                    return false;
                const uint8_t *cv;
                size_t cl;
                struct ing_mp_obj c;
                if (ing_mp_map_get(info, (size_t)(names - info), "created", 7, &cv, &cl) == 0 &&
                    ing_mp_read(&cv, cv + cl, &c) == 0 && c.type == ING_MP_FLOAT)
                    return true;
            }
        }
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0) /* the names */
            return false;
    }
    return false;
}

void
zmq_msg_agent_shape(const uint8_t *p, size_t n, struct zmq_agent_shape *out)
{
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    out->release = ZMQ_AGENT_MAIN;
    out->ssh_allowed = false;
    if (ing_mp_map_get(p, n, "ssh_allowed", 11, &v, &vl) == 0) {
        out->release = ZMQ_AGENT_V08;
        out->ssh_allowed = ing_mp_read(&v, v + vl, &o) == 0 && o.type == ING_MP_BOOL && o.v.b;
        return;
    }
    if (ing_mp_map_get(p, n, "available_environments", 22, &v, &vl) == 0 &&
        env_created_float(v, vl))
        out->release = ZMQ_AGENT_V07;
}

bool
zmq_msg_grade_is_int(const uint8_t *p, size_t n)
{
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    return ing_mp_map_get(p, n, "grade", 5, &v, &vl) == 0 && ing_mp_read(&v, v + vl, &o) == 0 &&
           (o.type == ING_MP_INT || o.type == ING_MP_UINT);
}

/* ---- INGInious v0.5 - v0.6.2: the "type" key ----
 *
 * Input: a legacy map is rewritten into the main dialect's map (zmq_msg_legacy_to_main),
 * which zmq_msg_decode then reads with all its rules. Output: zmq_msg_legacy_encode writes
 * the v0.6.2 shape (a superset of v0.5's: those peers do not check the keys they receive). */

#define LEGACY_KEY "type"

enum lhow {
    L_COPY,    /* the legacy value of the same key (or lkey), else dflt, else left out */
    L_PAIR_ID, /* job_id: the second element of a [client address, job id] pair */
    L_CONST,   /* dflt */
    L_ENVTYPE, /* from "environment": "mcq" for the MCQ container, else "docker" */
    L_PARAMS,  /* environment_parameters from the v0.6 limits */
    L_ENVS,    /* available_environments from available_containers */
};

struct lfield {
    const char *key;  /* the main dialect's key */
    uint8_t how;      /* enum lhow */
    const char *lkey; /* the legacy key when it differs (NULL: key) */
    const char *dflt; /* raw msgpack default (NULL: none) */
};

struct ltype {
    const char *legacy; /* value of "type" */
    const char *main;   /* "@type" */
    uint8_t nfields;
    const struct lfield *fields;
};

#define LF(k, h, l, d)                                                                             \
    {                                                                                              \
        k, h, l, d                                                                                 \
    }
static const struct lfield l_client_hello[] = {LF("name", L_COPY, NULL, NULL)};
static const struct lfield l_client_new_job[] = {
    LF("job_id", L_COPY, NULL, NULL),
    LF("priority", L_COPY, NULL, "\x00"), /* v0.5 has none */
    LF("course_id", L_COPY, NULL, NULL),
    LF("task_id", L_COPY, NULL, NULL),
    LF("task_problems", L_CONST, NULL, "\x80"),
    LF("inputdata", L_COPY, NULL, NULL),
    LF("environment_type", L_ENVTYPE, NULL, NULL),
    LF("environment", L_COPY, NULL, NULL),
    LF("environment_parameters", L_PARAMS, NULL, NULL),
    LF("debug", L_COPY, NULL, NULL),
    LF("launcher", L_COPY, NULL, NULL),
};
static const struct lfield l_ref[] = {LF("job_id", L_COPY, NULL, NULL)};
static const struct lfield l_agent_ref[] = {LF("job_id", L_PAIR_ID, NULL, NULL)};
static const struct lfield l_agent_hello[] = {
    LF("friendly_name", L_COPY, NULL, NULL),
    LF("available_job_slots", L_COPY, NULL, NULL),
    LF("available_environments", L_ENVS, "available_containers", NULL),
};
static const struct lfield l_agent_done[] = {
    LF("job_id", L_PAIR_ID, NULL, NULL), LF("result", L_COPY, NULL, NULL),
    LF("grade", L_COPY, NULL, NULL),     LF("problems", L_COPY, NULL, NULL),
    LF("tests", L_COPY, NULL, NULL),     LF("custom", L_COPY, NULL, NULL),
    LF("state", L_COPY, NULL, "\xa0"), /* v0.5 has none */
    LF("archive", L_COPY, NULL, NULL),   LF("stdout", L_COPY, NULL, NULL),
    LF("stderr", L_COPY, NULL, NULL),
};
static const struct lfield l_agent_ssh[] = {
    LF("job_id", L_PAIR_ID, NULL, NULL),
    LF("host", L_COPY, NULL, NULL),
    LF("port", L_COPY, NULL, NULL),
    LF("user", L_CONST, NULL, "\xa6worker"), /* the Docker agent's SSH user */
    LF("password", L_COPY, NULL, NULL),
};
#undef LF

static const struct ltype ltypes[] = {
    {"client_hello", "ClientHello", NF(l_client_hello), l_client_hello},
    {"client_new_job", "ClientNewJob", NF(l_client_new_job), l_client_new_job},
    {"client_kill_job", "ClientKillJob", NF(l_ref), l_ref},
    {"client_get_queue", "ClientGetQueue", 0, NULL},
    {"agent_hello", "AgentHello", NF(l_agent_hello), l_agent_hello},
    {"agent_job_started", "AgentJobStarted", NF(l_agent_ref), l_agent_ref},
    {"agent_job_done", "AgentJobDone", NF(l_agent_done), l_agent_done},
    {"agent_job_ssh_debug", "AgentJobSSHDebug", NF(l_agent_ssh), l_agent_ssh},
    {"ping", "Ping", 0, NULL},
    {"pong", "Pong", 0, NULL},
    {"unknown", "Unknown", 0, NULL},
};

/* The value of key in the map p[0..n), or NULL. */
static const uint8_t *
lget(const uint8_t *p, size_t n, const char *key, size_t *len)
{
    const uint8_t *v;
    if (ing_mp_map_get(p, n, key, strlen(key), &v, len) != 0)
        return NULL;
    return v;
}

static bool
is_mcq(const uint8_t *v, size_t len)
{
    struct ing_mp_obj o;
    return ing_mp_read(&v, v + len, &o) == 0 && o.type == ING_MP_STR &&
           bytes_eq(o.v.s.p, o.v.s.len, "mcq");
}

/* Writes the v0.7 environment_parameters of a v0.6 job: {"limits": {"time", "hard_time" (when
 * not nil), "memory"}, "network_grading", "run_cmd"}, as the Docker frontend fills them. */
static void
put_params(struct ing_mp_writer *w, const uint8_t *p, size_t n)
{
    static const char *const keys[] = {"time_limit", "hard_time_limit", "mem_limit"};
    static const char *const names[] = {"time", "hard_time", "memory"};
    const uint8_t *v[3];
    size_t vl[3];
    uint32_t nl = 0;
    for (int i = 0; i < 3; i++) {
        v[i] = lget(p, n, keys[i], &vl[i]);
        if (v[i] != NULL && !(vl[i] == 1 && v[i][0] == 0xc0))
            nl++;
        else
            v[i] = NULL;
    }
    size_t netl, cmdl;
    const uint8_t *net = lget(p, n, "enable_network", &netl);
    const uint8_t *cmd = lget(p, n, "run_cmd", &cmdl);
    ing_mp_put_map(w, 1 + (net != NULL) + (cmd != NULL));
    ing_mp_put_cstr(w, "limits");
    ing_mp_put_map(w, nl);
    for (int i = 0; i < 3; i++)
        if (v[i] != NULL) {
            ing_mp_put_cstr(w, names[i]);
            ing_mp_put_raw(w, v[i], vl[i]);
        }
    if (net != NULL) {
        ing_mp_put_cstr(w, "network_grading");
        ing_mp_put_raw(w, net, netl);
    }
    if (cmd != NULL) {
        ing_mp_put_cstr(w, "run_cmd");
        ing_mp_put_raw(w, cmd, cmdl);
    }
}

/* Writes available_environments for a v0.5/v0.6 available_containers map c[0..n): the MCQ
 * container under the type "mcq", every other one under "docker". */
static void
put_envs(struct ing_mp_writer *w, const uint8_t *c, size_t n)
{
    const uint8_t *q = c, *end = c + n;
    struct ing_mp_obj o;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP) {
        ing_mp_put_raw(w, c, n); /* refused by the backend */
        return;
    }
    uint32_t count[2] = {0, 0}; /* docker, mcq */
    const uint8_t *first = q;
    for (uint32_t i = 0; i < o.v.n; i++) {
        const uint8_t *k = q;
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
            return;
        count[is_mcq(k, (size_t)(q - k))]++;
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
            return;
    }
    static const char *const types[2] = {"docker", "mcq"};
    ing_mp_put_map(w, (count[0] > 0) + (count[1] > 0));
    for (int t = 0; t < 2; t++) {
        if (count[t] == 0)
            continue;
        ing_mp_put_cstr(w, types[t]);
        ing_mp_put_map(w, count[t]);
        q = first;
        for (uint32_t i = 0; i < o.v.n; i++) {
            const uint8_t *k = q;
            ing_mp_skip(&q, end, ING_MP_MAX_DEPTH);
            const uint8_t *ke = q;
            ing_mp_skip(&q, end, ING_MP_MAX_DEPTH);
            if (is_mcq(k, (size_t)(ke - k)) == (t == 1))
                ing_mp_put_raw(w, k, (size_t)(q - k)); /* name and info */
        }
    }
}

/* has_legacy_key: a cheap look at the top-level keys of p[0..n) (not validated yet: every
 * read is bounds-checked): a "type" key and no "@type", so that main's messages are not
 * validated twice. */
static bool
has_legacy_key(const uint8_t *p, size_t n)
{
    const uint8_t *q = p, *end = p + n;
    struct ing_mp_obj o, k;
    bool legacy = false;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP)
        return false;
    for (uint32_t i = 0; i < o.v.n; i++) {
        if (ing_mp_read(&q, end, &k) < 0 || k.type != ING_MP_STR)
            return false;
        if (bytes_eq(k.v.s.p, k.v.s.len, TYPE_KEY))
            return false;
        legacy |= bytes_eq(k.v.s.p, k.v.s.len, LEGACY_KEY);
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
            return false;
    }
    return legacy;
}

int
zmq_msg_legacy_to_main(const uint8_t *p, size_t n, struct ing_mp_writer *w, const char **why)
{
    const char *unused;
    size_t tl, vl;
    struct ing_mp_obj o;
    if (why == NULL)
        why = &unused;
    *why = NULL;
    if (p == NULL || n > UINT32_MAX || !has_legacy_key(p, n) ||
        ing_mp_validate(p, n, ING_MP_MAX_DEPTH) < 0)
        return -ENOENT; /* zmq_msg_decode says why */
    const uint8_t *tv = lget(p, n, LEGACY_KEY, &tl);
    if (tv == NULL || lget(p, n, TYPE_KEY, &vl) != NULL)
        return -ENOENT;
    if (ing_mp_read(&tv, tv + tl, &o) < 0 || o.type != ING_MP_STR)
        return bad(why, -EPROTO, "type is not a str");
    const struct ltype *t = NULL;
    for (size_t i = 0; i < sizeof(ltypes) / sizeof(ltypes[0]); i++)
        if (bytes_eq(o.v.s.p, o.v.s.len, ltypes[i].legacy))
            t = &ltypes[i];
    if (t == NULL)
        return bad(why, -EPROTO, "unknown type");
    w->len = 0;
    w->err = 0;
    const uint8_t *val[MAX_FIELDS];
    size_t len[MAX_FIELDS];
    uint32_t count = 1;
    for (int i = 0; i < t->nfields; i++) {
        const struct lfield *f = &t->fields[i];
        val[i] = NULL;
        len[i] = 0;
        if (f->how == L_COPY || f->how == L_PAIR_ID || f->how == L_ENVS) {
            val[i] = lget(p, n, f->lkey != NULL ? f->lkey : f->key, &len[i]);
            if (val[i] == NULL && f->dflt != NULL) {
                val[i] = (const uint8_t *)f->dflt;
                len[i] = f->dflt[0] == '\0' ? 1 : strlen(f->dflt);
            }
        } else if (f->how == L_CONST) {
            val[i] = (const uint8_t *)f->dflt;
            len[i] = strlen(f->dflt);
        } else if (f->how == L_ENVTYPE) {
            val[i] = lget(p, n, "environment", &len[i]);
        } else {
            val[i] = p; /* L_PARAMS: from the whole message */
            len[i] = n;
        }
        count += val[i] != NULL;
    }
    ing_mp_put_map(w, count);
    for (int i = 0; i < t->nfields; i++) {
        const struct lfield *f = &t->fields[i];
        if (val[i] == NULL)
            continue; /* missing: zmq_msg_decode says so */
        ing_mp_put_cstr(w, f->key);
        const uint8_t *v = val[i];
        struct ing_mp_obj a;
        switch ((enum lhow)f->how) {
        case L_PAIR_ID:
            if (ing_mp_read(&v, val[i] + len[i], &a) == 0 && a.type == ING_MP_ARRAY && a.v.n == 2 &&
                ing_mp_skip(&v, val[i] + len[i], ING_MP_MAX_DEPTH) == 0)
                ing_mp_put_raw(w, v, (size_t)(val[i] + len[i] - v));
            else
                ing_mp_put_raw(w, val[i], len[i]); /* not a pair: judged as a job id */
            break;
        case L_ENVTYPE:
            ing_mp_put_cstr(w, is_mcq(v, len[i]) ? "mcq" : "docker");
            break;
        case L_PARAMS:
            put_params(w, v, len[i]);
            break;
        case L_ENVS:
            put_envs(w, v, len[i]);
            break;
        default:
            ing_mp_put_raw(w, v, len[i]);
            break;
        }
    }
    ing_mp_put_cstr(w, TYPE_KEY);
    ing_mp_put_cstr(w, t->main);
    return w->err;
}

/* Writes the names of the environments of types "docker" and "mcq" of a main
 * available_environments map e (type -> array of names), as v0.6 lists its containers. */
static int
put_containers(struct ing_mp_writer *w, struct ing_view e)
{
    const uint8_t *p = (const uint8_t *)e.p, *q = p;
    struct ing_mp_obj o, k, a, s;
    uint32_t total = 0;
    if (p == NULL) /* no pointer arithmetic on NULL, even + 0 */
        return -EINVAL;
    const uint8_t *end = p + e.len;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP)
        return -EINVAL;
    const uint8_t *first = q;
    for (int pass = 0; pass < 2; pass++) {
        q = first;
        if (pass == 1)
            ing_mp_put_array(w, total);
        for (uint32_t i = 0; i < o.v.n; i++) {
            if (ing_mp_read(&q, end, &k) < 0 || k.type != ING_MP_STR)
                return -EINVAL;
            bool want =
                bytes_eq(k.v.s.p, k.v.s.len, "docker") || bytes_eq(k.v.s.p, k.v.s.len, "mcq");
            const uint8_t *arr = q;
            if (ing_mp_read(&arr, end, &a) < 0 || a.type != ING_MP_ARRAY || !want) {
                if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
                    return -EINVAL;
                continue;
            }
            q = arr;
            for (uint32_t x = 0; x < a.v.n; x++) {
                const uint8_t *nv = q;
                if (ing_mp_read(&q, end, &s) < 0 || s.type != ING_MP_STR)
                    return -EINVAL;
                if (pass == 0)
                    total++;
                else
                    ing_mp_put_raw(w, nv, (size_t)(q - nv));
            }
        }
    }
    return 0;
}

/* An int of environment_parameters (path keys[0..nk)), as Python's int(), or dflt. */
static int64_t
param_int(struct ing_view params, const char *const *keys, size_t nk, int64_t dflt, bool *found)
{
    const uint8_t *v;
    size_t vl;
    int64_t i;
    if (ing_mp_path((const uint8_t *)params.p, params.len, keys, nk, &v, &vl) == 0 &&
        ing_mp_py_int(v, vl, &i) == 0) {
        if (found != NULL)
            *found = true;
        return i;
    }
    return dflt;
}

/* Writes a v0.6 job id pair: the client address (empty: the backend routes by job id) and
 * the job id. */
static int
put_pair(struct ing_mp_writer *w, struct ing_view id)
{
    ing_mp_put_array(w, 2);
    ing_mp_put_bin(w, "", 0);
    return put_view_str(w, &id, false);
}

static void
put_key(struct ing_mp_writer *w, const char *key)
{
    ing_mp_put_cstr(w, key);
}

/* The v0.6 BackendNewJob of a job: its limits from environment_parameters, with the
 * defaults of the Docker frontend (time 20 s, memory 1024 MB). */
static int
legacy_new_job(const struct ing_msg *m, struct ing_mp_writer *w)
{
    const struct ing_job_spec *j = &m->u.job;
    static const char *const k_time[] = {"limits", "time"};
    static const char *const k_hard[] = {"limits", "hard_time"};
    static const char *const k_mem[] = {"limits", "memory"};
    static const char *const k_net[] = {"network_grading"};
    static const char *const k_cmd[] = {"run_cmd"};
    static const struct ing_view empty = {"", 0};
    int rc;
    bool hard = false;
    int64_t hard_time = param_int(j->environment_parameters, k_hard, 2, 0, &hard);
    ing_mp_put_map(w, 12);
    put_key(w, "job_id");
    if ((rc = put_pair(w, j->job_id)) < 0)
        return rc;
    put_key(w, "course_id");
    put_view_str(w, j->course_id.p != NULL ? &j->course_id : &empty, false);
    put_key(w, "task_id");
    put_view_str(w, j->task_id.p != NULL ? &j->task_id : &empty, false);
    put_key(w, "inputdata");
    ing_mp_put_raw(w, j->inputdata.p, j->inputdata.len);
    put_key(w, "debug");
    if (j->debug == ING_DEBUG_SSH)
        ing_mp_put_cstr(w, "ssh");
    else
        ing_mp_put_bool(w, j->debug == ING_DEBUG_ON);
    put_key(w, "environment");
    put_view_str(w, &j->environment, false);
    put_key(w, "enable_network");
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    bool net = ing_mp_path((const uint8_t *)j->environment_parameters.p,
                           j->environment_parameters.len, k_net, 1, &v, &vl) == 0 &&
               ing_mp_read(&v, v + vl, &o) == 0 && o.type == ING_MP_BOOL && o.v.b;
    ing_mp_put_bool(w, net);
    put_key(w, "time_limit");
    ing_mp_put_int(w, param_int(j->environment_parameters, k_time, 2, 20, NULL));
    put_key(w, "hard_time_limit");
    if (hard)
        ing_mp_put_int(w, hard_time);
    else
        ing_mp_put_nil(w);
    put_key(w, "mem_limit");
    ing_mp_put_int(w, param_int(j->environment_parameters, k_mem, 2, 1024, NULL));
    put_key(w, "run_cmd");
    if (ing_mp_path((const uint8_t *)j->environment_parameters.p, j->environment_parameters.len,
                    k_cmd, 1, &v, &vl) == 0 &&
        ing_mp_read(&v, v + vl, &o) == 0 && o.type == ING_MP_STR)
        ing_mp_put_str(w, (const char *)o.v.s.p, o.v.s.len);
    else
        ing_mp_put_nil(w);
    return 0;
}

int
zmq_msg_legacy_encode(const struct ing_msg *m, struct ing_mp_writer *w)
{
    size_t start = w->len;
    const char *type = NULL;
    int rc = 0;
    if (w->err)
        return w->err;
    switch (m->type) {
    case ING_PING:
        type = "ping";
        ing_mp_put_map(w, 1);
        break;
    case ING_PONG:
        type = "pong";
        ing_mp_put_map(w, 1);
        break;
    case ING_UNKNOWN:
        type = "unknown";
        ing_mp_put_map(w, 1);
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        type = "backend_update_containers";
        ing_mp_put_map(w, 2);
        put_key(w, "available_containers");
        rc = put_containers(w, m->u.envs.environments);
        break;
    case ING_BACKEND_JOB_STARTED:
        type = "backend_job_started";
        ing_mp_put_map(w, 2);
        put_key(w, "job_id");
        rc = put_view_str(w, &m->u.ref.job_id, false);
        break;
    case ING_BACKEND_JOB_DONE: {
        /* The v0.6.2 fields are main's, in the same order. */
        const struct mtype *t = find_type((const uint8_t *)"BackendJobDone", 14);
        type = "backend_job_done";
        ing_mp_put_map(w, (uint32_t)t->nfields + 1);
        for (int i = 0; i < t->nfields && rc == 0; i++) {
            put_key(w, t->fields[i].name);
            rc = encode_value(w, &t->fields[i], m);
        }
        break;
    }
    case ING_BACKEND_JOB_SSH_DEBUG:
        type = "backend_job_ssh_debug";
        ing_mp_put_map(w, 5);
        put_key(w, "job_id");
        put_view_str(w, &m->u.ssh.job_id, false);
        put_key(w, "host");
        put_view_str(w, &m->u.ssh.host, false);
        put_key(w, "port");
        ing_mp_put_uint(w, m->u.ssh.port);
        put_key(w, "password");
        rc = put_view_str(w, &m->u.ssh.password, false);
        break;
    case ING_BACKEND_GET_QUEUE: {
        /* v0.6: a running job's last field is its end (start + time limit), a waiting
         * job's its time limit. */
        static const struct ing_view empty = {"", 0};
        type = "backend_get_queue";
        if ((m->u.queue.n_running > 0 && m->u.queue.running == NULL) ||
            (m->u.queue.n_waiting > 0 && m->u.queue.waiting == NULL))
            return -EINVAL;
        ing_mp_put_map(w, 3);
        put_key(w, "jobs_running");
        ing_mp_put_array(w, m->u.queue.n_running);
        for (uint32_t i = 0; i < m->u.queue.n_running && rc == 0; i++) {
            struct ing_queue_running e = m->u.queue.running[i];
            if (e.info.p == NULL)
                e.info = empty;
            queue_end(&e);
            rc = put_running(w, &e);
        }
        put_key(w, "jobs_waiting");
        ing_mp_put_array(w, m->u.queue.n_waiting);
        for (uint32_t i = 0; i < m->u.queue.n_waiting && rc == 0; i++) {
            struct ing_queue_waiting e = m->u.queue.waiting[i];
            if (e.info.p == NULL)
                e.info = empty;
            rc = put_waiting(w, &e);
        }
        break;
    }
    case ING_BACKEND_NEW_JOB:
        type = "backend_new_job";
        rc = legacy_new_job(m, w);
        break;
    case ING_BACKEND_KILL_JOB:
        type = "backend_kill_job";
        ing_mp_put_map(w, 2);
        put_key(w, "job_id");
        rc = put_pair(w, m->u.kill.job_id);
        break;
    default:
        return -EINVAL;
    }
    if (rc == 0) {
        put_key(w, LEGACY_KEY);
        rc = ing_mp_put_cstr(w, type);
    }
    if (rc == 0)
        rc = w->err;
    if (rc == -EINVAL && w->err == 0)
        w->len = start;
    return rc;
}
