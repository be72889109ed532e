/* SPDX-License-Identifier: MIT */
/* agent.c: the agent side of libinginious (API in include/inginious/agent.h).
 *
 * One connection at a time (peer.h), driven by the caller: ing_agent_process() flushes
 * pending output, reads, decodes every complete frame and hands jobs and kills to the
 * caller's callback. The connection goes through DOWN -> CONNECTING (a non-blocking connect
 * in progress) -> OPENING (preamble and AgentHello sent, no Welcome yet) -> OPEN. A lost
 * connection goes back to DOWN and, with opts.reconnect, is retried after a delay that
 * doubles from backoff_min_ms to backoff_max_ms and is reset by the next Welcome.
 *
 * Liveness: the backend pings its agents every heartbeat_ms (from the Welcome); an agent
 * that hears nothing for SILENCE_PERIODS periods (at least SILENCE_MIN_MS) treats the
 * connection as dead, as the INGInious agent does after 10 s of silence. */
#include "inginious/agent.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "buf.h"
#include "inginious/mp.h"
#include "peer.h"

#define MAX_NAME_LEN 255   /* proto.md §4.2 */
#define MAX_ENVS 100000    /* proto.md §4.2 */
#define SILENCE_PERIODS 10 /* heartbeats without any frame before the link is dead */
#define SILENCE_MIN_MS 2000
#define RESUME_TIMEOUT_MS 60000 /* opts.resume_timeout_ms by default */

/* A job kept for resume: from BackendNewJob until a Pong confirms its result arrived. */
struct rjob {
    char *id;
    uint32_t id_len;
    bool started;
    uint8_t *done; /* its AgentJobDone frame, NULL while it runs */
    size_t done_len;
    bool sent;    /* done has been written on the current connection */
    uint64_t gen; /* sent: the Ping that confirms it (a->ping_next when it was sent) */
};

struct env_copy {
    char *type;
    char *name;
    char *id;
    int64_t created;
    bool advertised;
};

struct ing_agent {
    struct peer_conn conn; /* the connection; its send_max is its recv_max */
    char *name;            /* friendly name */
    uint8_t *hello;        /* the encoded AgentHello frame */
    size_t hello_len;
    uint32_t heartbeat_ms; /* from the Welcome, 0 = no silence detection; read when OPEN */
    /* Resume (proto.md §7.10). */
    bool resume;
    bool srv_resume;       /* the last Welcome had the RESUME flag */
    bool void_due;         /* ING_AGENT_EV_JOBS_VOID is due (the backend cannot resume) */
    int resume_timeout_ms;
    uint8_t rid[ING_AGENT_ID_LEN];
    struct rjob *rj; /* the jobs kept, nrj of them */
    size_t nrj, rjcap;
    uint64_t down_at;  /* when the backend went away (0: there, hello said) */
    uint64_t ping_next;     /* the generation of the next Ping */
    uint64_t ping_inflight; /* the generation of the Ping awaiting its Pong, 0 = none */
};

/* The callback of one process, wait or connect call (the ctx of the peer hooks). */
struct agent_cb {
    ing_agent_event_fn *fn;
    void *arg;
};

static const struct peer_ops agent_ops;

static struct ing_agent *
agent_of(struct peer_conn *p)
{
    return (struct ing_agent *)(void *)((char *)p - offsetof(struct ing_agent, conn));
}

static char *
dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL ? s : dflt);
}

static bool
name_ok(const char *s, size_t min)
{
    size_t n = strlen(s);

    return n >= min && n <= MAX_NAME_LEN && ing_mp_utf8_valid((const uint8_t *)s, n);
}

static int
env_cmp(const void *pa, const void *pb)
{
    const struct env_copy *a = pa, *b = pb;
    int c = strcmp(a->type, b->type);

    return c != 0 ? c : strcmp(a->name, b->name);
}

static void
envs_free(struct env_copy *e, size_t n)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(e[i].type);
        free(e[i].name);
        free(e[i].id);
    }
    free(e);
}

/* envs_encode writes the available_environments map of proto.md §5.6 (type -> name ->
 * {id, created, advertised}) for the sorted envs e[0..n). */
static int
envs_encode(const struct env_copy *e, size_t n, struct ing_mp_writer *w)
{
    uint32_t ntypes = 0;

    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(e[i].type, e[i - 1].type) != 0)
            ntypes++;
    ing_mp_put_map(w, ntypes);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(e[j].type, e[i].type) == 0)
            j++;
        ing_mp_put_cstr(w, e[i].type);
        ing_mp_put_map(w, (uint32_t)(j - i));
        for (; i < j; i++) {
            ing_mp_put_cstr(w, e[i].name);
            ing_mp_put_map(w, 3);
            ing_mp_put_cstr(w, "id");
            ing_mp_put_cstr(w, e[i].id);
            ing_mp_put_cstr(w, "created");
            ing_mp_put_int(w, e[i].created);
            ing_mp_put_cstr(w, "advertised");
            ing_mp_put_bool(w, e[i].advertised);
        }
    }
    return w->err;
}

/* make_hello encodes the AgentHello frame once: it is the same for every connection. */
static int
make_hello(struct ing_agent *a, const struct ing_agent_opts *o)
{
    struct env_copy *e = NULL;
    struct ing_mp_writer w;
    struct ing_msg m;
    int rc = -ENOMEM;

    if (o->nenvs > 0) {
        e = calloc(o->nenvs, sizeof(*e));
        if (e == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < o->nenvs; i++) {
        const struct ing_agent_env *s = &o->envs[i];
        if (s->type == NULL || s->name == NULL || !name_ok(s->type, 1) || !name_ok(s->name, 1) ||
            (s->id != NULL && !name_ok(s->id, 0))) {
            envs_free(e, o->nenvs);
            return -EINVAL;
        }
        e[i].type = strdup(s->type);
        e[i].name = strdup(s->name);
        e[i].id = dup_or(s->id, "");
        e[i].created = s->created;
        e[i].advertised = s->advertised;
        if (e[i].type == NULL || e[i].name == NULL || e[i].id == NULL) {
            envs_free(e, o->nenvs);
            return -ENOMEM;
        }
    }
    if (o->nenvs > 1)
        qsort(e, o->nenvs, sizeof(*e), env_cmp);
    for (size_t i = 1; i < o->nenvs; i++) {
        if (env_cmp(&e[i - 1], &e[i]) == 0) { /* a map cannot hold the same key twice */
            envs_free(e, o->nenvs);
            return -EINVAL;
        }
    }
    ing_mp_writer_init_dyn(&w);
    if (envs_encode(e, o->nenvs, &w) == 0) {
        memset(&m, 0, sizeof(m));
        m.type = ING_AGENT_HELLO;
        m.u.agent_hello.friendly_name.p = a->name;
        m.u.agent_hello.friendly_name.len = (uint32_t)strlen(a->name);
        m.u.agent_hello.slots = o->slots;
        m.u.agent_hello.environments.p = (const char *)w.buf;
        m.u.agent_hello.environments.len = (uint32_t)w.len;
        a->hello_len = ing_msg_size(&m);
        a->hello = a->hello_len > 0 ? malloc(a->hello_len) : NULL;
        if (a->hello != NULL && ing_msg_encode(&m, a->hello, a->hello_len) > 0)
            rc = 0;
        else if (a->hello_len == 0)
            rc = -EINVAL;
    }
    ing_mp_writer_fini(&w);
    envs_free(e, o->nenvs);
    return rc;
}

/* ing_agent_new copies opts and encodes the hello; it does not connect. Returns NULL with
 * errno EINVAL (bad option) or ENOMEM. */
struct ing_agent *
ing_agent_new(const struct ing_agent_opts *opts)
{
    struct ing_agent *a;
    struct peer_config cfg;
    int rc;

    bool resume = opts != NULL && opts->size >= offsetof(struct ing_agent_opts, agent_id) +
                                                   sizeof(opts->agent_id) &&
                  opts->resume;
    if (opts == NULL || !PEER_SIZE_OK(opts->size, struct ing_agent_opts, secret_len) ||
        (resume && opts->resume_timeout_ms < 0) ||
        opts->addr == NULL || (opts->envs == NULL && opts->nenvs > 0) ||
        opts->nenvs > MAX_ENVS || opts->backoff_min_ms < 0 || opts->backoff_max_ms < 0 ||
        opts->connect_timeout_ms < 0 || (opts->name != NULL && !name_ok(opts->name, 0))) {
        errno = EINVAL;
        return NULL;
    }
    cfg = (struct peer_config){.addr = opts->addr,
                               .reconnect = opts->reconnect || resume,
                               .hello_waits = resume,
                               .backoff_min_ms = opts->backoff_min_ms,
                               .backoff_max_ms = opts->backoff_max_ms,
                               .connect_timeout_ms = opts->connect_timeout_ms,
                               .secret = opts->secret,
                               .secret_len = opts->secret_len};
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    rc = peer_init(&a->conn, &agent_ops, &cfg);
    if (rc != 0)
        goto fail;
    a->name = dup_or(opts->name, "");
    if (a->name == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = make_hello(a, opts);
    if (rc != 0)
        goto fail;
    if (resume) {
        uint8_t r[ING_NONCE_LEN];
        a->resume = true;
        a->resume_timeout_ms = opts->resume_timeout_ms ? opts->resume_timeout_ms
                                                       : RESUME_TIMEOUT_MS;
        a->ping_next = 1;
        if (opts->agent_id != NULL) {
            memcpy(a->rid, opts->agent_id, ING_AGENT_ID_LEN);
        } else if ((rc = auth_nonce(r)) == 0) {
            memcpy(a->rid, r, ING_AGENT_ID_LEN);
        } else {
            goto fail;
        }
    }
    return a;
fail:
    ing_agent_free(a);
    errno = -rc;
    return NULL;
}

/* ---- resume: the jobs kept ---------------------------------------------------------- */

static struct rjob *
rj_find(struct ing_agent *a, struct ing_view id)
{
    for (size_t i = 0; i < a->nrj; i++)
        if (a->rj[i].id_len == id.len && memcmp(a->rj[i].id, id.p, id.len) == 0)
            return &a->rj[i];
    return NULL;
}

static void
rj_remove(struct ing_agent *a, struct rjob *r)
{
    free(r->id);
    free(r->done);
    *r = a->rj[--a->nrj];
}

static void
rj_drop_all(struct ing_agent *a)
{
    while (a->nrj > 0)
        rj_remove(a, &a->rj[a->nrj - 1]);
}

/* rj_add keeps job id (a new BackendNewJob). Returns 0 or -ENOMEM. */
static int
rj_add(struct ing_agent *a, struct ing_view id)
{
    struct rjob *r = rj_find(a, id);
    if (r != NULL) { /* sent again (a claim refused, then the job dispatched anew) */
        free(r->done);
        r->done = NULL;
        r->started = r->sent = false;
        return 0;
    }
    if (a->nrj == a->rjcap) {
        size_t cap = a->rjcap ? a->rjcap * 2 : 16;
        struct rjob *n = realloc(a->rj, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        a->rj = n;
        a->rjcap = cap;
    }
    r = &a->rj[a->nrj];
    memset(r, 0, sizeof(*r));
    r->id = malloc(id.len ? id.len : 1);
    if (r->id == NULL)
        return -ENOMEM;
    memcpy(r->id, id.p, id.len);
    r->id_len = id.len;
    a->nrj++;
    return 0;
}

/* ping_queue appends a Ping that confirms every result sent so far, unless one is out. */
static int
ping_queue(struct ing_agent *a)
{
    uint8_t h[ING_HDR_LEN];
    if (a->ping_inflight != 0)
        return 0;
    ing_frame_header(h, ING_PING, 0);
    if (buf_append(&a->conn.out, h, sizeof(h)) != 0)
        return -ENOMEM;
    a->ping_inflight = a->ping_next++;
    return 0;
}

/* rj_send appends r's result to the output (the hello is out). Returns 0 or -ENOMEM. */
static int
rj_send(struct ing_agent *a, struct rjob *r)
{
    if (buf_append(&a->conn.out, r->done, r->done_len) != 0)
        return -ENOMEM;
    r->sent = true;
    r->gen = a->ping_next;
    return ping_queue(a);
}

/* on_pong forgets the results the answered Ping confirms, then asks about the others. */
static int
on_pong(struct ing_agent *a)
{
    uint64_t g = a->ping_inflight;
    bool more = false;
    if (g == 0)
        return 0;
    a->ping_inflight = 0;
    for (size_t i = a->nrj; i-- > 0;) {
        struct rjob *r = &a->rj[i];
        if (r->sent && r->gen <= g)
            rj_remove(a, r);
        else
            more |= r->sent;
    }
    return more ? ping_queue(a) : 0;
}

/* resume_hello queues AgentHelloResume listing the jobs kept, then their results. */
static int
resume_hello(struct ing_agent *a)
{
    struct ing_msg h, m;
    struct ing_resume_job *jobs = NULL;
    uint8_t *f = NULL;
    size_t n;
    int rc = -ENOMEM;

    if (ing_msg_decode(a->hello, a->hello_len, UINT32_MAX, &h) <= 0)
        return -EINVAL;
    if (a->nrj > 0 && (jobs = calloc(a->nrj, sizeof(*jobs))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < a->nrj; i++) {
        jobs[i].job_id.p = a->rj[i].id;
        jobs[i].job_id.len = a->rj[i].id_len;
        jobs[i].started = a->rj[i].started || a->rj[i].done != NULL;
    }
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO_RESUME;
    memcpy(m.u.agent_resume.agent_id, a->rid, ING_AGENT_ID_LEN);
    m.u.agent_resume.hello = h.u.agent_hello;
    m.u.agent_resume.n_jobs = (uint32_t)a->nrj;
    m.u.agent_resume.jobs = jobs;
    n = ing_msg_size(&m);
    if (n == 0)
        rc = -EINVAL;
    else if ((f = malloc(n)) != NULL && ing_msg_encode(&m, f, n) > 0 &&
             buf_append(&a->conn.out, f, n) == 0)
        rc = 0;
    free(f);
    free(jobs);
    a->ping_inflight = 0; /* a Ping of the old connection is never answered */
    for (size_t i = 0; rc == 0 && i < a->nrj; i++)
        if (a->rj[i].done != NULL)
            rc = rj_send(a, &a->rj[i]);
    return rc;
}

/* ing_agent_free closes the connection and frees everything. NULL is allowed. */
void
ing_agent_free(struct ing_agent *a)
{
    if (a == NULL)
        return;
    peer_fini(&a->conn);
    free(a->name);
    free(a->hello);
    rj_drop_all(a);
    free(a->rj);
    free(a);
}

static void
emit(struct ing_agent *a, ing_agent_event_fn *fn, void *arg, struct ing_agent_event *ev)
{
    if (fn != NULL)
        fn(a, ev, arg);
}

/* notify delivers a due ING_AGENT_EV_CONNECTED (not when there is no callback: the blocking
 * connect leaves it to the next process call). */
static void
notify(struct peer_conn *p, void *ctx)
{
    const struct agent_cb *cb = ctx;
    struct ing_agent *a = agent_of(p);

    if (a->void_due && cb->fn != NULL) {
        struct ing_agent_event ev = {.type = ING_AGENT_EV_JOBS_VOID};
        a->void_due = false;
        cb->fn(a, &ev, cb->arg);
    }
    if (p->notify_connected && cb->fn != NULL) {
        struct ing_agent_event ev = {.type = ING_AGENT_EV_CONNECTED};
        p->notify_connected = false;
        cb->fn(agent_of(p), &ev, cb->arg);
    }
}

/* queue_hello appends the hello, sent with the preamble or, with a secret, once the
 * authentication has succeeded (the next flush sends it). */
static int
queue_hello(struct peer_conn *p)
{
    struct ing_agent *a = agent_of(p);

    if (a->resume) {
        a->down_at = 0;
        if (a->srv_resume)
            return resume_hello(a);
        if (a->nrj > 0) { /* a backend that cannot resume: the jobs are void */
            rj_drop_all(a);
            a->void_due = true;
        }
    }
    return buf_append(&p->out, a->hello, a->hello_len) != 0 ? -ENOMEM : 0;
}

/* on_welcome keeps the heartbeat; the largest body sent is that accepted. */
static void
on_welcome(struct peer_conn *p, const struct ing_welcome *w)
{
    p->send_max = p->recv_max;
    agent_of(p)->heartbeat_ms = w->heartbeat_ms;
    agent_of(p)->srv_resume = (w->flags & ING_WELCOME_RESUME) != 0;
}

/* link_down ends the current connection. An established one is reported with
 * ING_AGENT_EV_DISCONNECTED. With reconnect the next attempt is scheduled, else process()
 * returns err from now on. */
static void
link_down(struct peer_conn *p, int err, void *ctx)
{
    const struct agent_cb *cb = ctx;

    struct ing_agent *a = agent_of(p);

    if (a->resume) { /* every result kept goes again after the next hello */
        for (size_t i = 0; i < a->nrj; i++)
            a->rj[i].sent = false;
        a->ping_inflight = 0;
        if (a->down_at == 0)
            a->down_at = peer_now_ms();
    }
    if (peer_down(p, err)) {
        struct ing_agent_event ev = {.type = ING_AGENT_EV_DISCONNECTED, .err = err,
                                     .kept = a->resume};
        emit(a, cb->fn, cb->arg, &ev);
    }
}

/* handle acts on one decoded frame. Returns 0, or -errno when the connection must end. */
static int
handle(struct peer_conn *p, const struct ing_msg *m, void *ctx)
{
    const struct agent_cb *cb = ctx;
    struct ing_agent_event ev;

    memset(&ev, 0, sizeof(ev));
    switch (m->type) {
    case ING_ERROR:
        ev.type = ING_AGENT_EV_ERROR;
        ev.code = m->u.error.code;
        ev.text = m->u.error.text;
        break;
    case ING_BACKEND_NEW_JOB:
        ev.type = ING_AGENT_EV_JOB;
        ev.job = &m->u.job;
        ev.job_id = m->u.job.job_id;
        if (agent_of(p)->resume && rj_add(agent_of(p), ev.job_id) != 0)
            return -ENOMEM;
        break;
    case ING_PONG:
        return agent_of(p)->resume ? on_pong(agent_of(p)) : 0;
    case ING_BACKEND_KILL_JOB:
        if (agent_of(p)->resume) {
            struct rjob *r = rj_find(agent_of(p), m->u.kill.job_id);
            if (r != NULL && r->done != NULL) /* over: its result is on its way */
                return 0;
        }
        ev.type = ING_AGENT_EV_KILL;
        ev.job_id = m->u.kill.job_id;
        ev.state = m->u.kill.state;
        break;
    default:
        return 0; /* Pong, or a type meant for someone else: ignored */
    }
    emit(agent_of(p), cb->fn, cb->arg, &ev);
    return 0;
}

/* opened tells whether the blocking connect has what it waits for: it leaves the frames
 * that follow in the buffer, for the caller's first process call (they may be events). */
static bool
opened(struct peer_conn *p)
{
    return p->st == PEER_OPEN;
}

/* silence_deadline returns when an open connection that stays silent is declared dead, or
 * 0 when the backend announced no heartbeat. */
static uint64_t
silence_deadline(const struct ing_agent *a)
{
    uint64_t period;

    if (a->conn.st != PEER_OPEN || a->heartbeat_ms == 0)
        return 0;
    period = (uint64_t)a->heartbeat_ms * SILENCE_PERIODS;
    return a->conn.last_rx + (period < SILENCE_MIN_MS ? SILENCE_MIN_MS : period);
}

/* check_silence ends a connection that has been silent for too long. */
static int
check_silence(struct peer_conn *p)
{
    uint64_t dl = silence_deadline(agent_of(p));

    return dl != 0 && peer_now_ms() >= dl ? -ETIMEDOUT : 0;
}

static const struct peer_ops agent_ops = {
    .role = ING_ROLE_AGENT,
    .strict_werr = false,
    .hello = queue_hello,
    .welcome = on_welcome,
    .opened = opened,
    .frame = handle,
    .notify = notify,
    .down = link_down,
    .check = check_silence,
};

/* ing_agent_connect connects (blocking, opts.connect_timeout_ms), sends the preamble and
 * AgentHello, and waits for the Welcome. Returns 0 or -errno: -ECONNREFUSED, -ETIMEDOUT,
 * -EPROTO when the server answered with an Error (ing_agent_last_error), -EISCONN when a
 * connection exists. On failure with opts.reconnect, process() retries after the backoff. */
int
ing_agent_connect(struct ing_agent *a)
{
    struct agent_cb cb = {NULL, NULL};
    int rc;

    if (a->conn.st != PEER_DOWN)
        return -EISCONN;
    rc = peer_connect(&a->conn, &cb);
    if (rc == 0)
        rc = peer_flush(&a->conn); /* the hello, when it waited for the authentication */
    if (rc != 0)
        link_down(&a->conn, rc, &cb);
    return rc;
}

/* ing_agent_fd returns the socket to watch, -1 while disconnected. */
int
ing_agent_fd(const struct ing_agent *a)
{
    return a->conn.fd;
}

/* ing_agent_want_write tells whether the caller should also watch for POLLOUT. */
bool
ing_agent_want_write(const struct ing_agent *a)
{
    return peer_want_write(&a->conn);
}

/* ing_agent_timeout_ms returns how long the caller may wait before the next process call:
 * 0 when something is due, the time to the next deadline (reconnect, connect, silence),
 * or -1 for no limit. */
int
ing_agent_timeout_ms(const struct ing_agent *a)
{
    int t = peer_timeout_ms(&a->conn, silence_deadline(a));

    if (a->down_at != 0 && a->nrj > 0) { /* the resume timeout */
        int r = peer_ms_until(a->down_at + (uint64_t)a->resume_timeout_ms, peer_now_ms());
        t = t < 0 || r < t ? r : t;
    }
    return a->void_due ? 0 : t;
}

/* resume_expire voids the jobs kept once the backend has been away too long. */
static void
resume_expire(struct ing_agent *a, const struct agent_cb *cb)
{
    if (a->down_at == 0 || a->nrj == 0 ||
        peer_now_ms() < a->down_at + (uint64_t)a->resume_timeout_ms)
        return;
    rj_drop_all(a);
    a->void_due = true;
    notify(&a->conn, (void *)cb);
}

/* ing_agent_process does every non-blocking step: reconnects when due, flushes output,
 * reads and handles what arrived (answering pings, calling fn for events). fn may call the
 * report functions, never process, wait, connect or free. Returns 0, or the -errno that
 * closed the connection when not reconnecting. */
int
ing_agent_process(struct ing_agent *a, ing_agent_event_fn *fn, void *arg)
{
    struct agent_cb cb = {fn, arg};

    resume_expire(a, &cb);
    return peer_process(&a->conn, &cb);
}

/* ing_agent_wait polls the connection up to timeout_ms (-1 = no limit; shortened to the
 * library's own deadlines), then processes. Returns as ing_agent_process. */
int
ing_agent_wait(struct ing_agent *a, int timeout_ms, ing_agent_event_fn *fn, void *arg)
{
    struct agent_cb cb = {fn, arg};

    resume_expire(a, &cb);
    return peer_wait(&a->conn, timeout_ms, ing_agent_timeout_ms(a), &cb);
}

/* ing_agent_started queues AgentJobStarted(job_id). Returns 0, -ENOTCONN or -ENOMEM. */
int
ing_agent_started(struct ing_agent *a, struct ing_view job_id)
{
    struct ing_msg m;
    struct rjob *r = a->resume ? rj_find(a, job_id) : NULL;

    if (r != NULL)
        r->started = true; /* a later AgentHelloResume says so */
    if (!peer_can_send(&a->conn))
        return r != NULL ? 0 : -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_STARTED;
    m.u.ref.job_id = job_id;
    return peer_queue(&a->conn, &m);
}

/* ing_agent_ssh_debug queues AgentJobSSHDebug. Returns 0, -ENOTCONN or -ENOMEM. */
int
ing_agent_ssh_debug(struct ing_agent *a, const struct ing_ssh_debug *ssh)
{
    struct ing_msg m;

    if (!peer_can_send(&a->conn))
        return -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_SSH_DEBUG;
    m.u.ssh = *ssh;
    return peer_queue(&a->conn, &m);
}

/* ing_agent_done queues AgentJobDone. Returns 0, -ENOTCONN, -ENOMEM, or -EINVAL for a
 * result that cannot be encoded (nil in a non-nullable field, empty msgpack). */
int
ing_agent_done(struct ing_agent *a, const struct ing_job_result *result)
{
    struct ing_msg m;
    struct rjob *r = a->resume ? rj_find(a, result->job_id) : NULL;

    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    m.u.result = *result;
    if (r != NULL && r->done == NULL) { /* kept until a Pong confirms it arrived */
        size_t n = ing_msg_size(&m);
        if (n == 0)
            return -EINVAL;
        if (n - ING_HDR_LEN > a->conn.send_max && a->conn.send_max > 0)
            return -EMSGSIZE;
        if ((r->done = malloc(n)) == NULL)
            return -ENOMEM;
        (void)ing_msg_encode(&m, r->done, n);
        r->done_len = n;
        if (!peer_can_send(&a->conn))
            return 0; /* sent after the next hello */
        int rc = rj_send(a, r);
        if (rc == 0 && a->conn.werr == 0) /* a write error: for the next process call, the
                                           * result being kept for the next connection */
            a->conn.werr = peer_flush(&a->conn);
        return rc;
    }
    if (!peer_can_send(&a->conn))
        return -ENOTCONN;
    return peer_queue(&a->conn, &m);
}

/* ing_agent_last_error returns the text of the last Error the backend sent (or of the
 * protocol problem that closed the connection), or "". */
const char *
ing_agent_last_error(const struct ing_agent *a)
{
    return a->conn.last_error;
}
