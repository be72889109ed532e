/* SPDX-License-Identifier: MIT */
/* client.c: the client side of libinginious (API in include/inginious/client.h).
 *
 * The connection (peer.h) goes through DOWN -> CONNECTING (non-blocking connect in progress,
 * preamble and ClientHello queued) -> OPENING (waiting for the Welcome) -> OPEN, as in
 * agent.c. On top of it the client keeps:
 *  - the pending jobs: a hash table by job id plus a list in submission order (lost jobs are
 *    reported in that order);
 *  - the send times of the pings in flight (the backend answers them in order);
 *  - counters of queue requests sent and answered (answered in order too);
 *  - gen, bumped whenever in-flight requests become void (connection lost, Unknown), so a
 *    blocking wait can tell that its answer will never come.
 * Blocking waits run process() with an internal callback (struct waiter) that catches the
 * awaited answer and forwards every other event to the caller's callback. */
#include "inginious/client.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "peer.h"

#define MAX_NAME_LEN 255 /* proto.md §4.2 */
#define MAX_PINGS 256    /* pings in flight */
#define MAX_SEEN (1u << 16) /* results remembered until their acknowledgement is confirmed */

/* A job submitted on this client with no result yet; or (sessions) a result given to the
 * program whose acknowledgement the backend may not have handled (ing_client.seen). */
struct pending {
    struct pending *prev; /* submission order */
    struct pending *next;
    struct pending *hnext; /* hash chain */
    uint64_t hash;
    uint8_t *frame;  /* sessions: the ClientNewJob frame, to submit it again; NULL: adopted */
    size_t frame_len;
    uint64_t epoch;  /* sessions: the connection (ing_client.epoch) it was last sent on */
    uint64_t ack_tag; /* sessions: ClientSessionAck frames queued on it before it was sent */
    bool held;       /* sessions: listed by the backend's BackendSessionJobs */
    size_t len;
    char id[]; /* NUL-terminated */
};

/* A table of struct pending by job id: hash buckets (cap a power of two), chained by hnext. */
struct idtable {
    struct pending **b;
    size_t cap, n;
};

struct ing_client {
    struct peer_conn conn; /* the connection */
    char *name;
    bool link_envs; /* this connection received its environments */
    bool rehello;   /* hello re-sent after Unknown, its answer not yet received */
    bool acks;        /* opts.acks: ClientHelloAck when the server knows it */
    bool server_acks; /* this connection's Welcome has ING_WELCOME_ACK */
    bool session;        /* opts.session */
    bool session_hold;   /* opts.session_hold */
    bool server_session; /* this connection's Welcome has ING_WELCOME_SESSION */
    bool resumed;        /* this connection's session list has arrived */
    uint8_t sid[ING_SESSION_ID_LEN];
    uint64_t epoch; /* session hellos sent */
    /* Acknowledged results (proto.md 7.9, ClientSessionAck), per connection: */
    bool server_sack; /* this connection's Welcome has ING_WELCOME_SESSION_ACK */
    bool sacking;     /* its hello asked for ING_SESSION_ACK */
    uint64_t recv;    /* BackendJobDone frames read on it since the hello */
    uint64_t ack_sent; /* the count of the last ClientSessionAck queued */
    uint64_t acks_n;   /* ClientSessionAck frames queued on it */
    uint64_t dups;     /* results dropped as given already (ing_client_duplicates) */
    /* The results given to the program whose acknowledgement the backend may not have
     * handled: it sends such a result again on the next connection (before the list),
     * where it is dropped. Oldest first (prev/next); found by id in seen. ack_tag: the
     * ClientSessionAck of connection epoch that covers it. */
    struct pending *seen_head, *seen_tail;
    struct idtable seen;
    char server[128];

    uint8_t *envs; /* last BackendUpdateEnvironments map */
    size_t envs_len;

    struct idtable pt; /* the pending jobs by id */
    size_t npending;
    struct pending *head;
    struct pending *tail;

    uint64_t ping_ts[MAX_PINGS]; /* send times of the pings in flight, a ring */
    uint64_t pings_sent;
    uint64_t pongs_recv; /* answers matched to a ping */
    uint64_t queue_sent;
    uint64_t queue_recv;
    uint64_t gen;
};

/* The callback of one process, wait or connect call (the ctx of the peer hooks). */
struct client_cb {
    ing_client_event_fn *fn;
    void *arg;
};

static const char lost_text[] = ING_CLIENT_LOST_TEXT;
static const struct peer_ops client_ops;

static struct ing_client *
client_of(struct peer_conn *p)
{
    return (struct ing_client *)(void *)((char *)p - offsetof(struct ing_client, conn));
}

static uint64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct ing_view
cview(const char *s)
{
    struct ing_view v = {s, s != NULL ? (uint32_t)strlen(s) : 0};

    return v;
}

static bool
text_ok(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);

    return n >= min && n <= max && ing_mp_utf8_valid((const uint8_t *)s, n);
}

/* ---- pending jobs ---- */

static uint64_t
hash_bytes(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */

    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211u;
    }
    return h;
}

static struct pending *
idt_find(const struct idtable *t, const char *id, size_t len)
{
    uint64_t h;

    if (t->cap == 0)
        return NULL;
    h = hash_bytes(id, len);
    for (struct pending *p = t->b[h & (t->cap - 1)]; p != NULL; p = p->hnext)
        if (p->hash == h && p->len == len && memcmp(p->id, id, len) == 0)
            return p;
    return NULL;
}

/* idt_reserve makes room in t for one more of the records listed from list (next links).
 * Returns 0 or -ENOMEM. */
static int
idt_reserve(struct idtable *t, struct pending *list)
{
    if (t->n + 1 <= t->cap / 4 * 3)
        return 0;
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct pending **b = calloc(cap, sizeof(*b));

    if (b == NULL)
        return -ENOMEM;
    for (struct pending *p = list; p != NULL; p = p->next) {
        p->hnext = b[p->hash & (cap - 1)];
        b[p->hash & (cap - 1)] = p;
    }
    free(t->b);
    t->b = b;
    t->cap = cap;
    return 0;
}

/* idt_new returns a record for id[0..len) (its hash set, its other fields zero) linked in
 * t, which idt_reserve made room in; NULL when out of memory. */
static struct pending *
idt_new(struct idtable *t, const char *id, size_t len)
{
    struct pending *p = calloc(1, sizeof(*p) + len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p->id, id, len);
    p->len = len;
    p->hash = hash_bytes(id, len);
    p->hnext = t->b[p->hash & (t->cap - 1)];
    t->b[p->hash & (t->cap - 1)] = p;
    t->n++;
    return p;
}

static void
idt_unlink(struct idtable *t, struct pending *p)
{
    struct pending **pp = &t->b[p->hash & (t->cap - 1)];

    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    t->n--;
}

/* list_append / list_unlink: p last in, or out of, the list from *head to *tail. */
static void
list_append(struct pending **head, struct pending **tail, struct pending *p)
{
    p->next = NULL;
    p->prev = *tail;
    if (*tail != NULL)
        (*tail)->next = p;
    else
        *head = p;
    *tail = p;
}

static void
list_unlink(struct pending **head, struct pending **tail, struct pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        *head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        *tail = p->prev;
}

static struct pending *
pending_find(const struct ing_client *c, const char *id, size_t len)
{
    return idt_find(&c->pt, id, len);
}

static struct pending *
pending_add(struct ing_client *c, const char *id, size_t len)
{
    struct pending *p;

    if (idt_reserve(&c->pt, c->head) != 0 || (p = idt_new(&c->pt, id, len)) == NULL)
        return NULL;
    p->epoch = c->epoch;
    list_append(&c->head, &c->tail, p);
    c->npending++;
    return p;
}

static void
pending_remove(struct ing_client *c, struct pending *p)
{
    idt_unlink(&c->pt, p);
    list_unlink(&c->head, &c->tail, p);
    c->npending--;
    free(p->frame);
    free(p);
}

/* pending_detach empties the table and returns the list of every pending job, oldest
 * first; the caller frees it. */
static struct pending *
pending_detach(struct ing_client *c)
{
    struct pending *list = c->head;

    if (c->pt.b != NULL)
        memset(c->pt.b, 0, c->pt.cap * sizeof(*c->pt.b));
    c->pt.n = 0;
    c->head = c->tail = NULL;
    c->npending = 0;
    return list;
}

/* ---- results given, acknowledgement not confirmed (sessions) ---- */

/* seen_unlink takes e out of the list (not of the table). */
static void
seen_unlink(struct ing_client *c, struct pending *e)
{
    list_unlink(&c->seen_head, &c->seen_tail, e);
}

/* seen_append puts e last, tagged for the next ClientSessionAck of this connection. */
static void
seen_append(struct ing_client *c, struct pending *e)
{
    e->epoch = c->epoch;
    e->ack_tag = c->acks_n + 1;
    list_append(&c->seen_head, &c->seen_tail, e);
}

static void
seen_remove(struct ing_client *c, struct pending *e)
{
    idt_unlink(&c->seen, e);
    seen_unlink(c, e);
    free(e);
}

/* seen_note remembers that the result of job id[0..len) was given to the program (the
 * newest one if it was already there). Past MAX_SEEN the oldest is forgotten. Returns 0 or
 * -ENOMEM. */
static int
seen_note(struct ing_client *c, const char *id, size_t len)
{
    struct pending *e = idt_find(&c->seen, id, len);

    if (e != NULL) {
        seen_unlink(c, e);
        seen_append(c, e);
        return 0;
    }
    if (c->seen.n >= MAX_SEEN)
        seen_remove(c, c->seen_head);
    if (idt_reserve(&c->seen, c->seen_head) != 0 || (e = idt_new(&c->seen, id, len)) == NULL)
        return -ENOMEM;
    seen_append(c, e);
    return 0;
}

/* seen_confirm forgets the results the backend surely acknowledged: those of an earlier
 * connection when all (older) is set, else those of this connection covered by the first
 * tag ClientSessionAck frames. */
static void
seen_confirm(struct ing_client *c, bool older, uint64_t tag)
{
    if (older) {
        for (struct pending *e = c->seen_head, *next; e != NULL; e = next) {
            next = e->next;
            if (e->epoch != c->epoch)
                seen_remove(c, e);
        }
        return;
    }
    while (c->seen_head != NULL && c->seen_head->epoch == c->epoch &&
           c->seen_head->ack_tag <= tag)
        seen_remove(c, c->seen_head);
}

/* ---- life cycle ---- */

/* ing_client_new copies opts and parses the address. Returns NULL with errno EINVAL or
 * ENOMEM. */
struct ing_client *
ing_client_new(const struct ing_client_opts *opts)
{
    struct ing_client *c;
    struct peer_config cfg;
    int rc;

    if (opts == NULL || !PEER_SIZE_OK(opts->size, struct ing_client_opts, secret_len) ||
        opts->backoff_min_ms < 0 || opts->backoff_max_ms < 0 ||
        opts->connect_timeout_ms < 0 ||
        (opts->name != NULL && !text_ok(opts->name, 0, MAX_NAME_LEN))) {
        errno = EINVAL;
        return NULL;
    }
    cfg = (struct peer_config){.addr = opts->addr != NULL ? opts->addr : ING_CLIENT_DEFAULT_ADDR,
                               .reconnect = opts->reconnect,
                               .backoff_min_ms = opts->backoff_min_ms,
                               .backoff_max_ms = opts->backoff_max_ms,
                               .connect_timeout_ms = opts->connect_timeout_ms,
                               .secret = opts->secret,
                               .secret_len = opts->secret_len};
    bool acks = opts->size >= offsetof(struct ing_client_opts, acks) + sizeof(opts->acks) &&
                opts->acks;
    bool session = opts->size >= offsetof(struct ing_client_opts, session_id) +
                                     sizeof(opts->session_id) &&
                   opts->session;
    acks |= session;
    cfg.hello_waits = acks;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    rc = peer_init(&c->conn, &client_ops, &cfg);
    if (rc == 0 && session) {
        c->session = true;
        c->session_hold = opts->size >= offsetof(struct ing_client_opts, session_hold) +
                                            sizeof(opts->session_hold) &&
                          opts->session_hold;
        if (opts->session_id != NULL)
            memcpy(c->sid, opts->session_id, ING_SESSION_ID_LEN);
        else if (getrandom(c->sid, sizeof(c->sid), 0) != (ssize_t)sizeof(c->sid))
            rc = -EIO;
    }
    if (rc == 0) {
        c->acks = acks;
        c->name = strdup(opts->name != NULL ? opts->name : "");
        if (c->name == NULL)
            rc = -ENOMEM;
    }
    if (rc != 0) {
        ing_client_free(c);
        errno = -rc;
        return NULL;
    }
    return c;
}

/* ing_client_free closes the connection and frees everything. NULL is allowed. */
void
ing_client_free(struct ing_client *c)
{
    struct pending *p;

    if (c == NULL)
        return;
    peer_fini(&c->conn);
    p = pending_detach(c);
    while (p != NULL) {
        struct pending *next = p->next;
        free(p->frame);
        free(p);
        p = next;
    }
    while (c->seen_head != NULL) {
        struct pending *e = c->seen_head;
        c->seen_head = e->next;
        free(e);
    }
    free(c->seen.b);
    free(c->pt.b);
    free(c->envs);
    free(c->name);
    free(c);
}

static void
emit(struct ing_client *c, ing_client_event_fn *fn, void *arg, const struct ing_client_event *ev)
{
    if (fn != NULL)
        fn(c, ev, arg);
}

/* notify delivers a due ING_CLIENT_EV_CONNECTED (kept for later without a callback). */
static void
notify(struct peer_conn *p, void *ctx)
{
    const struct client_cb *cb = ctx;

    if (p->notify_connected && cb->fn != NULL) {
        struct ing_client_event ev = {.type = ING_CLIENT_EV_CONNECTED};
        p->notify_connected = false;
        cb->fn(client_of(p), &ev, cb->arg);
    }
}

/* ---- output ---- */

/* queue_ack queues a ClientSessionAck when results were read since the last one (proto.md
 * 7.9). Returns 0 or -errno. */
static int
queue_ack(struct ing_client *c)
{
    struct ing_msg m;
    int rc;

    if (!c->sacking || c->recv == c->ack_sent || c->conn.st != PEER_OPEN)
        return 0;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_SESSION_ACK;
    m.u.session_ack.count = c->recv;
    rc = peer_queue(&c->conn, &m);
    if (rc == 0) {
        c->ack_sent = c->recv;
        c->acks_n++;
    }
    return rc;
}

/* cqueue queues request m, after the acknowledgement of the results read so far: a job
 * submitted again with the id of one whose result came is then sent after that result's
 * acknowledgement (the backend no longer holds the old result when it takes the new job). */
static int
cqueue(struct ing_client *c, const struct ing_msg *m)
{
    int rc = queue_ack(c);

    return rc != 0 ? rc : peer_queue(&c->conn, m);
}

/* read_done: one ClientSessionAck per read batch. */
static int
read_done(struct peer_conn *p)
{
    return queue_ack(client_of(p));
}

static int
queue_empty(struct ing_client *c, uint8_t type)
{
    struct ing_msg m;

    memset(&m, 0, sizeof(m));
    m.type = type;
    return cqueue(c, &m);
}

/* queue_hello queues the ClientHello: with the preamble, once authenticated, after Unknown.
 * With opts.acks it waits for the Welcome, and is a ClientHelloAck if the Welcome says the
 * server knows it (proto.md §7.8). */
static int
queue_hello(struct peer_conn *p)
{
    struct ing_client *c = client_of(p);
    struct ing_msg m;

    memset(&m, 0, sizeof(m));
    m.type = c->acks && c->server_acks ? ING_CLIENT_HELLO_ACK : ING_CLIENT_HELLO;
    m.u.client_hello.name = cview(c->name);
    if (c->session && c->server_session) {
        m.type = ING_CLIENT_HELLO_SESSION;
        memcpy(m.u.client_hello.session, c->sid, ING_SESSION_ID_LEN);
        m.u.client_hello.session_flags = c->session_hold ? ING_SESSION_HOLD : 0;
        c->sacking = !c->session_hold && c->server_sack;
        if (c->sacking)
            m.u.client_hello.session_flags |= ING_SESSION_ACK;
        c->recv = c->ack_sent = c->acks_n = 0;
        c->epoch++;
        c->resumed = false;
    }
    return peer_queue(p, &m);
}

/* ---- connection ---- */

/* void_requests forgets the pings and queue requests in flight: their answers will never
 * come (or cannot be told apart from later ones). */
static void
void_requests(struct ing_client *c)
{
    c->gen++;
    c->pongs_recv = c->pings_sent;
    c->queue_recv = c->queue_sent;
}

/* emit_lost reports job p (already out of the table) done with the locally made "crash"
 * result. */
static void
emit_lost(struct ing_client *c, const struct pending *p, ing_client_event_fn *fn, void *arg)
{
    struct ing_job_result r;
    struct ing_client_event ev;

    memset(&r, 0, sizeof(r));
    r.job_id.p = p->id;
    r.job_id.len = (uint32_t)p->len;
    r.result_kind = cview("crash");
    r.result_text.p = lost_text;
    r.result_text.len = sizeof(lost_text) - 1;
    r.problems = r.tests = r.custom = cview("\x80");
    r.state = r.stdout_ = r.stderr_ = cview("");
    memset(&ev, 0, sizeof(ev));
    ev.type = ING_CLIENT_EV_DONE;
    ev.job_id = r.job_id;
    ev.pending = true;
    ev.result = &r;
    ev.lost = true;
    emit(c, fn, arg, &ev);
}

/* report_lost reports every pending job done with the locally made "crash" result. */
static void
report_lost(struct ing_client *c, ing_client_event_fn *fn, void *arg)
{
    struct pending *p = pending_detach(c);

    while (p != NULL) {
        struct pending *next = p->next;
        emit_lost(c, p, fn, arg);
        free(p->frame);
        free(p);
        p = next;
    }
}

/* link_down ends the connection: an established one is reported (DISCONNECTED), then every
 * pending job is reported lost. Schedules the next attempt when reconnecting. */
static void
link_down(struct peer_conn *p, int err, void *ctx)
{
    const struct client_cb *cb = ctx;
    struct ing_client *c = client_of(p);
    bool was_open;

    c->rehello = false;
    c->link_envs = false;
    was_open = peer_down(p, err);
    void_requests(c);
    if (was_open) {
        struct ing_client_event ev = {.type = ING_CLIENT_EV_DISCONNECTED, .err = err};
        emit(c, cb->fn, cb->arg, &ev);
    }
    c->resumed = false;
    if (c->session && c->server_session && p->reconnect)
        return; /* the backend keeps them: the next connection resumes the session */
    report_lost(c, cb->fn, cb->arg);
}

/* ---- input ---- */

/* on_welcome keeps the server's name. */
static void
on_welcome(struct peer_conn *p, const struct ing_welcome *w)
{
    struct ing_client *c = client_of(p);

    snprintf(c->server, sizeof(c->server), "%.*s", (int)w->server.len, w->server.p);
    c->server_acks = (w->flags & ING_WELCOME_ACK) != 0;
    c->server_session = (w->flags & ING_WELCOME_SESSION) != 0;
    c->server_sack = (w->flags & ING_WELCOME_SESSION_ACK) != 0;
    c->sacking = false; /* until the session hello asks */
}

static int
on_envs(struct ing_client *c, struct ing_view envs, ing_client_event_fn *fn, void *arg)
{
    struct ing_client_event ev = {.type = ING_CLIENT_EV_ENVS};
    uint8_t *copy = malloc(envs.len);

    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, envs.p, envs.len);
    free(c->envs);
    c->envs = copy;
    c->envs_len = envs.len;
    c->link_envs = true;
    c->rehello = false;
    ev.envs.p = (const char *)copy;
    ev.envs.len = envs.len;
    emit(c, fn, arg, &ev);
    return 0;
}

/* on_unknown: the backend does not know this connection any more (or never did). Every
 * pending job is lost; hello again, once until its answer arrives (the Unknowns until then
 * answer frames sent before it). */
static int
on_unknown(struct ing_client *c, ing_client_event_fn *fn, void *arg)
{
    struct ing_client_event ev = {.type = ING_CLIENT_EV_UNKNOWN};
    int rc;

    if (c->rehello)
        return 0;
    rc = queue_hello(&c->conn);
    if (rc != 0)
        return rc;
    c->rehello = true;
    void_requests(c);
    emit(c, fn, arg, &ev);
    report_lost(c, fn, arg);
    return 0;
}

/* on_job_event reports a job's event. On a connection that acknowledges results, a result
 * given to the program whose acknowledgement the backend did not handle comes again after
 * the hello, before the list (proto.md 7.9): it is dropped (and acknowledged again). Returns
 * 0 or -ENOMEM. */
static int
on_job_event(struct ing_client *c, const struct ing_msg *m, ing_client_event_fn *fn, void *arg)
{
    struct ing_client_event ev;
    struct pending *p;

    memset(&ev, 0, sizeof(ev));
    switch (m->type) {
    case ING_BACKEND_JOB_STARTED:
        ev.type = ING_CLIENT_EV_STARTED;
        ev.job_id = m->u.ref.job_id;
        break;
    case ING_BACKEND_JOB_ACCEPTED:
        ev.type = ING_CLIENT_EV_ACCEPTED;
        ev.job_id = m->u.ref.job_id;
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
        ev.type = ING_CLIENT_EV_SSH_DEBUG;
        ev.job_id = m->u.ssh.job_id;
        ev.ssh = &m->u.ssh;
        break;
    default:
        ev.type = ING_CLIENT_EV_DONE;
        ev.job_id = m->u.result.job_id;
        ev.result = &m->u.result;
        break;
    }
    if (ev.type == ING_CLIENT_EV_DONE && c->sacking) {
        c->recv++;
        struct pending *e = !c->resumed ? idt_find(&c->seen, ev.job_id.p, ev.job_id.len) : NULL;
        if (e != NULL) { /* given already: acknowledged on this connection this time */
            seen_unlink(c, e);
            seen_append(c, e);
            c->dups++;
            return 0;
        }
        if (seen_note(c, ev.job_id.p, ev.job_id.len) != 0)
            return -ENOMEM;
    }
    if (ev.type == ING_CLIENT_EV_ACCEPTED && c->sacking &&
        (p = pending_find(c, ev.job_id.p, ev.job_id.len)) != NULL && p->epoch == c->epoch)
        seen_confirm(c, false, p->ack_tag); /* the acks sent before it were handled */
    p = pending_find(c, ev.job_id.p, ev.job_id.len);
    ev.pending = p != NULL;
    if (p != NULL && ev.type == ING_CLIENT_EV_DONE)
        pending_remove(c, p);
    emit(c, fn, arg, &ev);
    return 0;
}

/* report_one_lost reports pending job p done with the local "crash" and forgets it. The
 * event's views point into p: it is removed once the callback returned. */
static void
report_one_lost(struct ing_client *c, struct pending *p, ing_client_event_fn *fn, void *arg)
{
    emit_lost(c, p, fn, arg);
    pending_remove(c, p);
}

/* resubmit sends pending job p's ClientNewJob again. Returns 0 or -errno. */
static int
resubmit(struct ing_client *c, struct pending *p)
{
    struct ing_msg m;

    if (ing_msg_decode(p->frame, p->frame_len, UINT32_MAX, &m) != (ssize_t)p->frame_len)
        return -EPROTO; /* cannot happen: we encoded it */
    p->epoch = c->epoch;
    p->ack_tag = c->acks_n;
    return cqueue(c, &m);
}

/* on_session_jobs: part of the list of the jobs the backend holds for the session. The
 * listed jobs are marked held (adopted if not pending here); at the last part, the pending
 * jobs not held that an earlier connection sent are submitted again (or reported lost when
 * they cannot be), and ING_CLIENT_EV_RESUMED is reported. */
static int
on_session_jobs(struct ing_client *c, const struct ing_session_jobs *sj, ing_client_event_fn *fn,
                void *arg)
{
    const uint8_t *q = (const uint8_t *)sj->jobs.p;
    const uint8_t *end = q + sj->jobs.len;
    struct ing_mp_obj o;
    uint32_t n;

    if (!c->session)
        return 0;
    if (ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_ARRAY)
        return -EPROTO;
    n = o.v.n;
    for (uint32_t i = 0; i < n; i++) {
        struct pending *p;
        if (ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_STR || o.v.s.len == 0 ||
            o.v.s.len > MAX_NAME_LEN)
            return -EPROTO;
        p = pending_find(c, (const char *)o.v.s.p, o.v.s.len);
        if (p == NULL && (p = pending_add(c, (const char *)o.v.s.p, o.v.s.len)) == NULL)
            return -ENOMEM;
        p->held = true;
    }
    if (!sj->last)
        return 0;
    for (struct pending *p = c->head, *next; p != NULL; p = next) {
        next = p->next;
        if (p->held) {
            p->held = false;
        } else if (p->epoch != c->epoch) {
            int rc = p->frame != NULL ? resubmit(c, p) : -ENOENT;
            if (rc == -ENOMEM || rc == -ENOBUFS)
                return rc;
            if (rc != 0)
                report_one_lost(c, p, fn, arg);
        }
    }
    c->resumed = true;
    /* Every result the backend held unacknowledged came again before the list: those of
     * earlier connections that did not are surely acknowledged. */
    seen_confirm(c, true, 0);
    struct ing_client_event ev = {.type = ING_CLIENT_EV_RESUMED};
    emit(c, fn, arg, &ev);
    return 0;
}

/* handle acts on one decoded frame. Returns 0, or -errno when the connection must end. */
static int
handle(struct peer_conn *p, const struct ing_msg *m, void *ctx)
{
    const struct client_cb *cb = ctx;
    struct ing_client *c = client_of(p);
    struct ing_client_event ev;

    memset(&ev, 0, sizeof(ev));
    switch (m->type) {
    case ING_ERROR:
        ev.type = ING_CLIENT_EV_ERROR;
        ev.code = m->u.error.code;
        ev.text = m->u.error.text;
        emit(c, cb->fn, cb->arg, &ev);
        return 0;
    case ING_PONG:
        ev.type = ING_CLIENT_EV_PONG;
        ev.rtt_ms = -1;
        if (c->pongs_recv < c->pings_sent) {
            uint64_t sent = c->ping_ts[c->pongs_recv % MAX_PINGS];
            c->pongs_recv++;
            ev.rtt_ms = (double)(now_us() - sent) / 1000.0;
        }
        emit(c, cb->fn, cb->arg, &ev);
        return 0;
    case ING_UNKNOWN:
        return on_unknown(c, cb->fn, cb->arg);
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        return on_envs(c, m->u.envs.environments, cb->fn, cb->arg);
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_BACKEND_JOB_DONE:
        return on_job_event(c, m, cb->fn, cb->arg);
    case ING_BACKEND_GET_QUEUE:
        if (c->queue_recv < c->queue_sent)
            c->queue_recv++;
        ev.type = ING_CLIENT_EV_QUEUE;
        ev.queue = &m->u.queue;
        emit(c, cb->fn, cb->arg, &ev);
        return 0;
    case ING_BACKEND_STATS:
        ev.type = ING_CLIENT_EV_STATS;
        ev.stats = m->u.stats.stats;
        emit(c, cb->fn, cb->arg, &ev);
        return 0;
    case ING_BACKEND_SESSION_JOBS:
        return on_session_jobs(c, &m->u.session_jobs, cb->fn, cb->arg);
    case ING_BACKEND_JOB_INFO:
        ev.type = ING_CLIENT_EV_JOB_INFO;
        ev.job_id = m->u.job_info.job_id;
        ev.job_info = m->u.job_info.info;
        emit(c, cb->fn, cb->arg, &ev);
        return 0;
    default:
        return 0; /* a type meant for someone else: ignored */
    }
}

/* opened tells whether the blocking connect has what it waits for: it leaves the frames
 * that follow in the buffer, for the caller's first process call (they may be events). */
static bool
opened(struct peer_conn *p)
{
    return p->st == PEER_OPEN && client_of(p)->link_envs;
}

static const struct peer_ops client_ops = {
    .role = ING_ROLE_CLIENT,
    .strict_werr = true,
    .hello = queue_hello,
    .welcome = on_welcome,
    .opened = opened,
    .frame = handle,
    .notify = notify,
    .down = link_down,
    .check = NULL,
    .read_done = read_done,
};

/* ing_client_connect connects (blocking, at most connect_timeout_ms), says hello and waits
 * for the Welcome and the environments. Returns 0 or -errno (see client.h). */
int
ing_client_connect(struct ing_client *c)
{
    struct client_cb cb = {NULL, NULL};
    int rc;

    if (c->conn.st != PEER_DOWN)
        return -EISCONN;
    rc = peer_connect(&c->conn, &cb);
    if (rc != 0)
        link_down(&c->conn, rc, &cb);
    return rc;
}

/* ing_client_fd returns the socket to watch, -1 while disconnected. */
int
ing_client_fd(const struct ing_client *c)
{
    return c->conn.fd;
}

/* ing_client_want_write tells whether the caller should also watch for POLLOUT. */
bool
ing_client_want_write(const struct ing_client *c)
{
    return peer_want_write(&c->conn);
}

/* ing_client_is_connected tells whether requests can be queued: on an open connection, or
 * an opening one when no authentication has to come first. */
bool
ing_client_is_connected(const struct ing_client *c)
{
    return peer_can_send(&c->conn);
}

/* ing_client_timeout_ms returns how long the caller may wait before processing again. */
int
ing_client_timeout_ms(const struct ing_client *c)
{
    return peer_timeout_ms(&c->conn, 0);
}

/* ing_client_process does every non-blocking step and calls fn for each event. Returns 0
 * or, when not reconnecting, the -errno that closed the connection. */
int
ing_client_process(struct ing_client *c, ing_client_event_fn *fn, void *arg)
{
    struct client_cb cb = {fn, arg};

    return peer_process(&c->conn, &cb);
}

/* ing_client_wait polls up to timeout_ms, then processes. */
int
ing_client_wait(struct ing_client *c, int timeout_ms, ing_client_event_fn *fn, void *arg)
{
    struct client_cb cb = {fn, arg};

    return peer_wait(&c->conn, timeout_ms, ing_client_timeout_ms(c), &cb);
}

/* ---- requests ---- */

static int
mp_field(struct ing_view v, struct ing_view *out)
{
    if (v.p == NULL) {
        *out = cview("\x80");
        return 0;
    }
    if (v.len == 0 || ing_mp_validate((const uint8_t *)v.p, v.len, ING_MP_MAX_DEPTH) != 0)
        return -EINVAL;
    *out = v;
    return 0;
}

/* ing_client_submit sends ClientNewJob and tracks the job. */
int
ing_client_submit(struct ing_client *c, const struct ing_client_job *job)
{
    struct ing_msg m;
    struct ing_job_spec *s = &m.u.new_job.job;
    const char *launcher;
    size_t idlen;
    int rc;

    if (job == NULL || !PEER_SIZE_OK(job->size, struct ing_client_job, environment_parameters) ||
        job->job_id == NULL || job->environment_type == NULL ||
        job->environment == NULL || (unsigned)job->debug > ING_DEBUG_SSH)
        return -EINVAL;
    launcher = job->launcher != NULL ? job->launcher : "";
    if (!text_ok(job->job_id, 1, MAX_NAME_LEN) || !text_ok(job->environment_type, 1, 255) ||
        !text_ok(job->environment, 1, 255) || !text_ok(launcher, 0, SIZE_MAX) ||
        (job->course_id != NULL && !text_ok(job->course_id, 0, SIZE_MAX)) ||
        (job->task_id != NULL && !text_ok(job->task_id, 0, SIZE_MAX)))
        return -EINVAL;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.priority = job->priority;
    m.u.new_job.launcher = cview(launcher);
    s->job_id = cview(job->job_id);
    s->course_id = cview(job->course_id);
    s->task_id = cview(job->task_id);
    s->environment_type = cview(job->environment_type);
    s->environment = cview(job->environment);
    s->debug = (uint8_t)job->debug;
    if (mp_field(job->task_problems, &s->task_problems) != 0 ||
        mp_field(job->inputdata, &s->inputdata) != 0 ||
        mp_field(job->environment_parameters, &s->environment_parameters) != 0)
        return -EINVAL;
    if (!ing_client_is_connected(c))
        return -ENOTCONN;
    idlen = strlen(job->job_id);
    if (pending_find(c, job->job_id, idlen) != NULL)
        return -EEXIST;
    struct pending *p = pending_add(c, job->job_id, idlen);
    if (p == NULL)
        return -ENOMEM;
    if (c->session) { /* kept to submit it again after a reconnection */
        size_t n = ing_msg_size(&m);
        p->frame = n > 0 ? malloc(n) : NULL;
        if (p->frame == NULL || ing_msg_encode(&m, p->frame, n) != (ssize_t)n) {
            pending_remove(c, p);
            return n > 0 ? -ENOMEM : -EINVAL;
        }
        p->frame_len = n;
    }
    p->ack_tag = c->acks_n;
    rc = cqueue(c, &m);
    if (rc == 0)
        p->ack_tag = c->acks_n; /* the acknowledgement queued first, if any, counts */
    else
        pending_remove(c, pending_find(c, job->job_id, idlen));
    return rc;
}

/* queue_job_ref queues a message of type whose body is one job id. */
static int
queue_job_ref(struct ing_client *c, uint8_t type, const char *job_id)
{
    struct ing_msg m;

    if (job_id == NULL || !text_ok(job_id, 1, MAX_NAME_LEN))
        return -EINVAL;
    if (!ing_client_is_connected(c))
        return -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.u.ref.job_id = cview(job_id);
    return cqueue(c, &m);
}

/* ing_client_kill sends ClientKillJob(job_id). */
int
ing_client_kill(struct ing_client *c, const char *job_id)
{
    return queue_job_ref(c, ING_CLIENT_KILL_JOB, job_id);
}

/* ing_client_get_job_info sends ClientGetJobInfo(job_id). */
int
ing_client_get_job_info(struct ing_client *c, const char *job_id)
{
    return queue_job_ref(c, ING_CLIENT_GET_JOB_INFO, job_id);
}

/* ing_client_get_queue sends ClientGetQueue. */
int
ing_client_get_queue(struct ing_client *c)
{
    int rc = ing_client_is_connected(c) ? queue_empty(c, ING_CLIENT_GET_QUEUE) : -ENOTCONN;

    if (rc == 0)
        c->queue_sent++;
    return rc;
}

/* ing_client_get_stats sends ClientGetStats. */
int
ing_client_get_stats(struct ing_client *c)
{
    return ing_client_is_connected(c) ? queue_empty(c, ING_CLIENT_GET_STATS) : -ENOTCONN;
}

/* ing_client_ping sends Ping and remembers when. Returns also -ENOBUFS when MAX_PINGS
 * pings are already in flight. */
int
ing_client_ping(struct ing_client *c)
{
    int rc;

    if (!ing_client_is_connected(c))
        return -ENOTCONN;
    if (c->pings_sent - c->pongs_recv >= MAX_PINGS)
        return -ENOBUFS;
    rc = queue_empty(c, ING_PING);
    if (rc == 0)
        c->ping_ts[c->pings_sent++ % MAX_PINGS] = now_us();
    return rc;
}

/* ing_client_envs returns the last environments map (p == NULL: none yet). */
struct ing_view
ing_client_envs(const struct ing_client *c)
{
    struct ing_view v = {(const char *)c->envs, (uint32_t)c->envs_len};

    return v;
}

/* ing_client_pending returns the number of pending jobs. */
size_t
ing_client_pending(const struct ing_client *c)
{
    return c->npending;
}

/* ing_client_is_pending tells whether job_id is pending. */
bool
ing_client_is_pending(const struct ing_client *c, const char *job_id)
{
    return pending_find(c, job_id, strlen(job_id)) != NULL;
}

/* ing_client_server returns the server name from the last Welcome. */
const char *
ing_client_server(const struct ing_client *c)
{
    return c->server;
}

/* ing_client_acks tells whether this connection's jobs are acknowledged. */
bool
ing_client_acks(const struct ing_client *c)
{
    return c->acks && c->server_acks && c->conn.st == PEER_OPEN;
}

int
ing_client_session_id(const struct ing_client *c, uint8_t out[ING_SESSION_ID_LEN])
{
    if (!c->session)
        return -EINVAL;
    memcpy(out, c->sid, ING_SESSION_ID_LEN);
    return 0;
}

bool
ing_client_resumed(const struct ing_client *c)
{
    return c->resumed;
}

bool
ing_client_sessions(const struct ing_client *c)
{
    return c->server_session && c->conn.st == PEER_OPEN;
}

uint64_t
ing_client_duplicates(const struct ing_client *c)
{
    return c->dups;
}

/* ing_client_last_error returns the last Error text, or "". */
const char *
ing_client_last_error(const struct ing_client *c)
{
    return c->conn.last_error;
}

/* ---- copies ---- */

/* copy_view copies v (plus a NUL) at *pos and returns the view of the copy. */
static struct ing_view
copy_view(struct ing_view v, char **pos)
{
    struct ing_view out = {NULL, 0};

    if (v.p == NULL)
        return out;
    memcpy(*pos, v.p, v.len);
    (*pos)[v.len] = '\0';
    out.p = *pos;
    out.len = v.len;
    *pos += (size_t)v.len + 1;
    return out;
}

static size_t
view_size(struct ing_view v)
{
    return v.p == NULL ? 0 : (size_t)v.len + 1;
}

/* ing_client_result_copy copies src (every view NUL-terminated) into *dst. */
int
ing_client_result_copy(struct ing_client_result *dst, const struct ing_job_result *src, bool lost)
{
    const struct ing_view *v[] = {
        &src->job_id, &src->result_kind, &src->result_text, &src->problems, &src->tests,
        &src->custom, &src->state,       &src->archive,     &src->stdout_,  &src->stderr_};
    struct ing_view *d[] = {&dst->r.job_id,   &dst->r.result_kind, &dst->r.result_text,
                            &dst->r.problems, &dst->r.tests,       &dst->r.custom,
                            &dst->r.state,    &dst->r.archive,     &dst->r.stdout_,
                            &dst->r.stderr_};
    size_t total = 1;
    char *pos;

    memset(dst, 0, sizeof(*dst));
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        total += view_size(*v[i]);
    dst->mem = malloc(total);
    if (dst->mem == NULL)
        return -ENOMEM;
    pos = dst->mem;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        *d[i] = copy_view(*v[i], &pos);
    dst->r.grade = src->grade;
    dst->lost = lost;
    return 0;
}

/* ing_client_result_free releases a copied result. */
void
ing_client_result_free(struct ing_client_result *res)
{
    if (res == NULL)
        return;
    free(res->mem);
    memset(res, 0, sizeof(*res));
}

/* ing_client_queue_copy copies a decoded queue snapshot into one allocation: the entries,
 * then their strings. */
int
ing_client_queue_copy(struct ing_client_queue *dst, const struct ing_get_queue *src)
{
    size_t n = (size_t)src->n_running + src->n_waiting, total = 0;
    const uint8_t *pos = src->wire_running;
    struct ing_client_queue_entry *e;
    char *sp;

    memset(dst, 0, sizeof(*dst));
    for (uint32_t i = 0; i < src->n_running; i++) {
        struct ing_queue_running r;
        pos = ing_queue_next_running(pos, &r);
        total += view_size(r.job_id) + view_size(r.agent_name) + view_size(r.info) +
                 view_size(r.launcher);
    }
    pos = src->wire_waiting;
    for (uint32_t i = 0; i < src->n_waiting; i++) {
        struct ing_queue_waiting w;
        pos = ing_queue_next_waiting(pos, &w);
        total += view_size(w.job_id) + 1 + view_size(w.info) + view_size(w.launcher);
    }
    dst->mem = malloc(n * sizeof(*e) + total + 1);
    if (dst->mem == NULL)
        return -ENOMEM;
    e = dst->mem;
    sp = (char *)(e + n);
    pos = src->wire_running;
    for (uint32_t i = 0; i < src->n_running; i++, e++) {
        struct ing_queue_running r;
        pos = ing_queue_next_running(pos, &r);
        e->job_id = copy_view(r.job_id, &sp);
        e->is_current = r.is_current;
        e->running = true;
        e->agent = copy_view(r.agent_name, &sp);
        e->info = copy_view(r.info, &sp);
        e->launcher = copy_view(r.launcher, &sp);
        e->started_at = r.started_at;
        e->max_time = r.max_time;
    }
    pos = src->wire_waiting;
    for (uint32_t i = 0; i < src->n_waiting; i++, e++) {
        struct ing_queue_waiting w;
        pos = ing_queue_next_waiting(pos, &w);
        e->job_id = copy_view(w.job_id, &sp);
        e->is_current = w.is_current;
        e->running = false;
        e->agent = copy_view(cview(""), &sp);
        e->info = copy_view(w.info, &sp);
        e->launcher = copy_view(w.launcher, &sp);
        e->started_at = 0;
        e->max_time = w.max_time;
    }
    dst->n_running = src->n_running;
    dst->n_waiting = src->n_waiting;
    dst->running = dst->mem;
    dst->waiting = dst->running + src->n_running;
    return 0;
}

/* ing_client_queue_free releases a copied queue. */
void
ing_client_queue_free(struct ing_client_queue *q)
{
    if (q == NULL)
        return;
    free(q->mem);
    memset(q, 0, sizeof(*q));
}

/* ---- blocking waits ---- */

enum wait_kind {
    WAIT_DONE,  /* the result of job_id */
    WAIT_QUEUE, /* the answer number seq to a queue request */
    WAIT_PONG,  /* the answer number seq to a ping */
};

struct waiter {
    enum wait_kind kind;
    const char *job_id;
    uint64_t seq;
    uint64_t gen;
    bool got;
    int err; /* copying the answer failed */
    struct ing_client_result *result;
    struct ing_client_queue *queue;
    double rtt_ms;
    ing_client_event_fn *fn;
    void *arg;
};

static void
wait_cb(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct waiter *w = arg;

    if (!w->got) {
        if (w->kind == WAIT_DONE && ev->type == ING_CLIENT_EV_DONE && ev->pending &&
            ing_view_eq(ev->job_id, w->job_id)) {
            w->got = true;
            w->err = ing_client_result_copy(w->result, ev->result, ev->lost);
            return;
        }
        if (w->kind == WAIT_QUEUE && ev->type == ING_CLIENT_EV_QUEUE && c->queue_recv == w->seq &&
            c->gen == w->gen) {
            w->got = true;
            w->err = ing_client_queue_copy(w->queue, ev->queue);
            return;
        }
        if (w->kind == WAIT_PONG && ev->type == ING_CLIENT_EV_PONG && c->pongs_recv == w->seq &&
            c->gen == w->gen) {
            w->got = true;
            w->rtt_ms = ev->rtt_ms;
            return;
        }
    }
    emit(c, w->fn, w->arg, ev);
}

/* wait_for processes until the waiter has its answer, the deadline passes or the answer
 * cannot come any more. */
static int
wait_for(struct ing_client *c, struct waiter *w, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : peer_now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        int left = deadline == UINT64_MAX ? -1 : peer_ms_until(deadline, peer_now_ms());
        int rc = ing_client_wait(c, left, wait_cb, w);

        if (w->got)
            return w->err;
        if (rc != 0)
            return rc;
        if (w->kind != WAIT_DONE && c->gen != w->gen)
            return -ECONNRESET;
        if (w->kind == WAIT_DONE && !ing_client_is_pending(c, w->job_id))
            return -ENOENT; /* its DONE went by outside this wait */
        if (left == 0)
            return -ETIMEDOUT;
    }
}

/* ing_client_wait_done waits for the result of the pending job job_id. */
int
ing_client_wait_done(struct ing_client *c, const char *job_id, int timeout_ms,
                     struct ing_client_result *result, ing_client_event_fn *fn, void *arg)
{
    struct waiter w = {.kind = WAIT_DONE, .job_id = job_id, .result = result, .fn = fn, .arg = arg};

    memset(result, 0, sizeof(*result));
    if (!ing_client_is_pending(c, job_id))
        return -ENOENT;
    return wait_for(c, &w, timeout_ms);
}

/* ing_client_submit_wait submits job and waits for its result. */
int
ing_client_submit_wait(struct ing_client *c, const struct ing_client_job *job, int timeout_ms,
                       struct ing_client_result *result, ing_client_event_fn *fn, void *arg)
{
    int rc;

    memset(result, 0, sizeof(*result));
    rc = ing_client_submit(c, job);
    if (rc != 0)
        return rc;
    return ing_client_wait_done(c, job->job_id, timeout_ms, result, fn, arg);
}

/* ing_client_get_queue_wait asks for the queue and copies the answer. */
int
ing_client_get_queue_wait(struct ing_client *c, int timeout_ms, struct ing_client_queue *q,
                          ing_client_event_fn *fn, void *arg)
{
    struct waiter w = {.kind = WAIT_QUEUE, .queue = q, .fn = fn, .arg = arg};
    int rc;

    memset(q, 0, sizeof(*q));
    rc = ing_client_get_queue(c);
    if (rc != 0)
        return rc;
    w.seq = c->queue_sent;
    w.gen = c->gen;
    return wait_for(c, &w, timeout_ms);
}

/* ing_client_ping_wait pings and waits for the Pong. */
int
ing_client_ping_wait(struct ing_client *c, int timeout_ms, double *rtt_ms, ing_client_event_fn *fn,
                     void *arg)
{
    struct waiter w = {.kind = WAIT_PONG, .fn = fn, .arg = arg};
    int rc = ing_client_ping(c);

    if (rc != 0)
        return rc;
    w.seq = c->pings_sent;
    w.gen = c->gen;
    rc = wait_for(c, &w, timeout_ms);
    if (rc == 0 && rtt_ms != NULL)
        *rtt_ms = w.rtt_ms;
    return rc;
}

/* ---- helpers ---- */

/* ing_client_uuid4 writes a random version 4 UUID. */
int
ing_client_uuid4(char out[ING_CLIENT_UUID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    size_t got = 0;
    char *o = out;

    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) { /* no getrandom: the device */
            int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return -errno;
            while (got < sizeof(b)) {
                n = read(fd, b + got, sizeof(b) - got);
                if (n <= 0 && !(n < 0 && errno == EINTR)) {
                    int e = n < 0 ? errno : EIO;
                    close(fd);
                    return -e;
                }
                if (n > 0)
                    got += (size_t)n;
            }
            close(fd);
            break;
        }
        got += (size_t)n;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10xx */
    for (size_t i = 0; i < sizeof(b); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
    return 0;
}

static void
put_view_str(struct ing_mp_writer *w, struct ing_view v)
{
    if (v.p == NULL)
        ing_mp_put_nil(w);
    else
        ing_mp_put_str(w, v.p, v.len);
}

static void
put_base64(struct ing_mp_writer *w, const uint8_t *p, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out = (n + 2) / 3 * 4;

    if (out > UINT32_MAX) {
        ing_mp_put_nil(w); /* cannot happen for a frame field (at most 4 GiB) */
        return;
    }
    ing_mp_put_str_header(w, (uint32_t)out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        char q[4];
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        q[0] = b64[v >> 18 & 63];
        q[1] = b64[v >> 12 & 63];
        q[2] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? b64[v & 63] : '=';
        ing_mp_put_raw(w, q, sizeof(q));
    }
}

/* ing_client_result_to_mp appends r as one msgpack map. */
int
ing_client_result_to_mp(const struct ing_job_result *r, bool lost, bool archive_base64,
                        struct ing_mp_writer *w)
{
    ing_mp_put_map(w, 12);
    ing_mp_put_cstr(w, "job_id");
    put_view_str(w, r->job_id);
    ing_mp_put_cstr(w, "kind");
    put_view_str(w, r->result_kind);
    ing_mp_put_cstr(w, "text");
    put_view_str(w, r->result_text);
    ing_mp_put_cstr(w, "grade");
    ing_mp_put_double(w, r->grade);
    ing_mp_put_cstr(w, "problems");
    ing_mp_put_raw(w, r->problems.p, r->problems.len);
    ing_mp_put_cstr(w, "tests");
    ing_mp_put_raw(w, r->tests.p, r->tests.len);
    ing_mp_put_cstr(w, "custom");
    ing_mp_put_raw(w, r->custom.p, r->custom.len);
    ing_mp_put_cstr(w, "state");
    put_view_str(w, r->state);
    ing_mp_put_cstr(w, "archive");
    if (r->archive.p == NULL)
        ing_mp_put_nil(w);
    else if (archive_base64)
        put_base64(w, (const uint8_t *)r->archive.p, r->archive.len);
    else
        ing_mp_put_bin(w, r->archive.p, r->archive.len);
    ing_mp_put_cstr(w, "stdout");
    put_view_str(w, r->stdout_);
    ing_mp_put_cstr(w, "stderr");
    put_view_str(w, r->stderr_);
    ing_mp_put_cstr(w, "lost");
    ing_mp_put_bool(w, lost);
    return w->err;
}

static void
put_entry(struct ing_mp_writer *w, const struct ing_client_queue_entry *e)
{
    ing_mp_put_map(w, e->running ? 7 : 5);
    ing_mp_put_cstr(w, "job_id");
    put_view_str(w, e->job_id);
    ing_mp_put_cstr(w, "is_current_client_job");
    ing_mp_put_bool(w, e->is_current);
    if (e->running) {
        ing_mp_put_cstr(w, "agent_friendly_name");
        put_view_str(w, e->agent);
    }
    ing_mp_put_cstr(w, "info");
    put_view_str(w, e->info);
    ing_mp_put_cstr(w, "launcher");
    put_view_str(w, e->launcher);
    if (e->running) {
        ing_mp_put_cstr(w, "started_at");
        ing_mp_put_int(w, e->started_at);
    }
    ing_mp_put_cstr(w, "max_time");
    ing_mp_put_int(w, e->max_time);
}

/* ing_client_queue_to_mp appends q as {"running": [...], "waiting": [...]}. */
int
ing_client_queue_to_mp(const struct ing_client_queue *q, struct ing_mp_writer *w)
{
    ing_mp_put_map(w, 2);
    ing_mp_put_cstr(w, "running");
    ing_mp_put_array(w, (uint32_t)q->n_running);
    for (size_t i = 0; i < q->n_running; i++)
        put_entry(w, &q->running[i]);
    ing_mp_put_cstr(w, "waiting");
    ing_mp_put_array(w, (uint32_t)q->n_waiting);
    for (size_t i = 0; i < q->n_waiting; i++)
        put_entry(w, &q->waiting[i]);
    return w->err;
}
