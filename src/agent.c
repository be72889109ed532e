/* agent.c: the agent side of libinginious (API in include/inginious/agent.h).
 *
 * One connection at a time, driven by the caller: ing_agent_process() flushes pending
 * output, reads, decodes every complete frame and hands jobs and kills to the caller's
 * callback. The connection goes through DOWN -> CONNECTING (a non-blocking connect in
 * progress) -> OPENING (preamble and AgentHello sent, no Welcome yet) -> OPEN. A lost
 * connection goes back to DOWN and, with opts.reconnect, is retried after a delay that
 * doubles from backoff_min_ms to backoff_max_ms and is reset by the next Welcome.
 *
 * Liveness: the backend pings its agents every heartbeat_ms (from the Welcome); an agent
 * that hears nothing for SILENCE_PERIODS periods (at least SILENCE_MIN_MS) treats the
 * connection as dead, as the INGInious agent does after 10 s of silence. */
#include "inginious/agent.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "inginious/mp.h"
#include "net.h"
#include "sha256.h"

#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define MAX_NAME_LEN 255    /* proto.md §4.2 */
#define MAX_ENVS 100000     /* proto.md §4.2 */
#define READ_CHUNK 65536    /* bytes reserved per read */
#define READ_BUDGET 16      /* reads per process call */
#define KEEP_BUF (1u << 20) /* buffers above this are released when empty */
#define SILENCE_PERIODS 10  /* heartbeats without any frame before the link is dead */
#define SILENCE_MIN_MS 2000

enum agent_state {
    AGENT_DOWN,       /* no socket */
    AGENT_CONNECTING, /* non-blocking connect in progress; preamble + hello queued */
    AGENT_OPENING,    /* connected, waiting for the Welcome */
    AGENT_OPEN,       /* Welcome received */
};

struct env_copy {
    char *type;
    char *name;
    char *id;
    int64_t created;
    bool advertised;
};

struct ing_agent {
    struct net_addr na; /* parsed once by ing_agent_new */
    char *name;         /* friendly name */
    bool reconnect;
    int backoff_min_ms;
    int backoff_max_ms;
    int connect_timeout_ms;
    uint8_t *hello; /* the encoded AgentHello frame */
    size_t hello_len;
    uint8_t *secret; /* proto.md §6, NULL: none */
    size_t secret_len;

    enum agent_state st;
    int fd;                /* -1 when DOWN */
    uint32_t max_frame;    /* largest body accepted from the server */
    uint32_t heartbeat_ms; /* from the Welcome, 0 = no silence detection */
    struct buf in;
    struct buf out;
    uint64_t deadline;         /* CONNECTING / OPENING: give up at */
    uint64_t retry_at;         /* DOWN with reconnect: next attempt */
    uint64_t last_rx;          /* OPEN: when the last bytes arrived */
    int backoff_ms;            /* next retry delay */
    int werr;                  /* a write failed outside process(): handled by the next one */
    int fatal;                 /* DOWN without reconnect: what process() returns */
    bool notify_connected;     /* ING_AGENT_EV_CONNECTED is due */
    bool authing;              /* OPENING: Auth sent, waiting for AuthOk */
    uint8_t ns[ING_NONCE_LEN]; /* the server's nonce (Welcome) */
    uint8_t nc[ING_NONCE_LEN]; /* ours (Auth) */
    char last_error[256];
};

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int
ms_until(uint64_t when, uint64_t now)
{
    if (when <= now)
        return 0;
    return when - now > (uint64_t)INT32_MAX ? INT32_MAX : (int)(when - now);
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
    char why[160];
    int rc;

    if (opts == NULL || opts->addr == NULL || (opts->envs == NULL && opts->nenvs > 0) ||
        opts->nenvs > MAX_ENVS || opts->backoff_min_ms < 0 || opts->backoff_max_ms < 0 ||
        opts->connect_timeout_ms < 0 || (opts->name != NULL && !name_ok(opts->name, 0))) {
        errno = EINVAL;
        return NULL;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->fd = -1;
    buf_init(&a->in);
    buf_init(&a->out);
    if (net_parse(opts->addr, &a->na, why, sizeof(why)) != 0) {
        snprintf(a->last_error, sizeof(a->last_error), "%s", why);
        rc = -EINVAL;
        goto fail;
    }
    a->name = dup_or(opts->name, "");
    if (a->name == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    a->reconnect = opts->reconnect;
    a->backoff_min_ms = opts->backoff_min_ms ? opts->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    a->backoff_max_ms = opts->backoff_max_ms ? opts->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (a->backoff_max_ms < a->backoff_min_ms)
        a->backoff_max_ms = a->backoff_min_ms;
    a->connect_timeout_ms =
        opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    a->backoff_ms = a->backoff_min_ms;
    a->max_frame = ING_MAX_FRAME_DEFAULT;
    if (opts->secret != NULL) {
        a->secret = malloc(opts->secret_len ? opts->secret_len : 1);
        if (a->secret == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(a->secret, opts->secret, opts->secret_len);
        a->secret_len = opts->secret_len;
    }
    a->fatal = -ENOTCONN;
    rc = make_hello(a, opts);
    if (rc != 0)
        goto fail;
    return a;
fail:
    ing_agent_free(a);
    errno = -rc;
    return NULL;
}

static void
close_link(struct ing_agent *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    a->st = AGENT_DOWN;
    a->werr = 0;
    a->authing = false;
    buf_fini(&a->in);
    buf_fini(&a->out);
}

/* ing_agent_free closes the connection and frees everything. NULL is allowed. */
void
ing_agent_free(struct ing_agent *a)
{
    if (a == NULL)
        return;
    close_link(a);
    free(a->name);
    free(a->hello);
    if (a->secret != NULL)
        memset(a->secret, 0, a->secret_len);
    free(a->secret);
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
notify(struct ing_agent *a, ing_agent_event_fn *fn, void *arg)
{
    if (a->notify_connected && fn != NULL) {
        struct ing_agent_event ev = {.type = ING_AGENT_EV_CONNECTED};
        a->notify_connected = false;
        fn(a, &ev, arg);
    }
}

/* flush writes pending output without blocking. Returns 0 (all written or EAGAIN) or
 * -errno. */
static int
flush(struct ing_agent *a)
{
    while (buf_len(&a->out) > 0) {
        ssize_t n = send(a->fd, buf_head(&a->out), buf_len(&a->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&a->out, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    buf_shrink(&a->out, KEEP_BUF);
    return 0;
}

/* queue_msg encodes m at the end of the output and tries to send it at once. A write
 * error is kept in werr for the next process call. */
static int
queue_msg(struct ing_agent *a, const struct ing_msg *m)
{
    size_t size;
    ssize_t n;

    if (a->st == AGENT_DOWN)
        return -ENOTCONN;
    size = ing_msg_size(m);
    if (size == 0)
        return -EINVAL;
    if (size - ING_HDR_LEN > a->max_frame)
        return -EMSGSIZE;
    if (buf_reserve(&a->out, size) != 0)
        return -ENOMEM;
    n = ing_msg_encode(m, buf_tail(&a->out), size);
    if (n < 0)
        return (int)n;
    buf_produce(&a->out, (size_t)n);
    if (a->st != AGENT_CONNECTING && a->werr == 0)
        a->werr = flush(a);
    return 0;
}

/* start_link opens a non-blocking connection and queues the preamble (and the hello). */
static int
start_link(struct ing_agent *a, uint64_t now)
{
    uint8_t pre[ING_PREAMBLE_LEN];
    int fd = net_connect(&a->na, true);

    if (fd < 0)
        return fd;
    a->fd = fd;
    a->st = AGENT_CONNECTING;
    a->deadline = now + (uint64_t)a->connect_timeout_ms;
    a->max_frame = ING_MAX_FRAME_DEFAULT;
    a->heartbeat_ms = 0;
    ing_preamble_encode(pre, ING_ROLE_AGENT);
    /* Without a secret the hello goes with the preamble (proto.md §2.3); with one, it waits
     * for the end of the authentication. */
    if (buf_append(&a->out, pre, sizeof(pre)) != 0 ||
        (a->secret == NULL && buf_append(&a->out, a->hello, a->hello_len) != 0)) {
        close_link(a);
        return -ENOMEM;
    }
    return 0;
}

/* check_connected finishes a non-blocking connect: 1 when connected, 0 when still in
 * progress, -errno when it failed. */
static int
check_connected(struct ing_agent *a)
{
    struct pollfd p = {.fd = a->fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof(err);

    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -errno;
    if (err != 0)
        return -err;
    a->st = AGENT_OPENING;
    return 1;
}

/* link_down ends the current connection. An established one is reported with
 * ING_AGENT_EV_DISCONNECTED. With reconnect the next attempt is scheduled, else process()
 * returns err from now on. */
static void
link_down(struct ing_agent *a, int err, ing_agent_event_fn *fn, void *arg)
{
    bool was_open = a->st == AGENT_OPEN;
    uint64_t now = now_ms();

    close_link(a);
    if (a->reconnect) {
        a->retry_at = now + (uint64_t)a->backoff_ms;
        a->backoff_ms =
            a->backoff_ms > a->backoff_max_ms / 2 ? a->backoff_max_ms : a->backoff_ms * 2;
    } else {
        a->fatal = err;
    }
    if (was_open) {
        struct ing_agent_event ev = {.type = ING_AGENT_EV_DISCONNECTED, .err = err};
        a->notify_connected = false;
        emit(a, fn, arg, &ev);
    }
}

static const char *
error_name(uint16_t code)
{
    static const char *const names[] = {
        "?",         "PREAMBLE",   "VERSION",      "ROLE",    "TOO_BIG",
        "MALFORMED", "UNEXPECTED", "UNKNOWN_TYPE", "AUTH",    "LIMIT",
        "TIMEOUT",   "SHUTDOWN",   "OVERLOAD",     "INVALID",
    };

    return code < sizeof(names) / sizeof(names[0]) ? names[code] : "?";
}

/* go_open ends the opening: the hello goes out now if it had to wait. */
static int
go_open(struct ing_agent *a)
{
    if (a->secret != NULL && buf_append(&a->out, a->hello, a->hello_len) != 0)
        return -ENOMEM;
    a->st = AGENT_OPEN;
    a->backoff_ms = a->backoff_min_ms;
    a->notify_connected = true;
    return 0;
}

/* on_welcome checks the Welcome and answers the challenge when there is one. Returns 0 or
 * -errno (the connection must be closed). */
static int
on_welcome(struct ing_agent *a, const struct ing_welcome *w)
{
    struct ing_msg m;
    int rc;

    if (w->version != ING_PROTO_VERSION || w->role != ING_ROLE_AGENT) {
        snprintf(a->last_error, sizeof(a->last_error), "unsupported Welcome: version %u, role %u",
                 w->version, w->role);
        return -EPROTO;
    }
    a->max_frame = w->max_frame > ING_MAX_FRAME_DEFAULT ? w->max_frame : ING_MAX_FRAME_DEFAULT;
    a->heartbeat_ms = w->heartbeat_ms;
    if (!(w->flags & ING_WELCOME_AUTH))
        return go_open(a);
    if (a->secret == NULL) {
        snprintf(a->last_error, sizeof(a->last_error),
                 "the backend requires authentication and no secret was given");
        return -EPROTO;
    }
    rc = auth_nonce(a->nc);
    if (rc != 0)
        return rc;
    memcpy(a->ns, w->nonce, ING_NONCE_LEN);
    memset(&m, 0, sizeof(m));
    m.type = ING_AUTH;
    memcpy(m.u.auth.nonce, a->nc, ING_NONCE_LEN);
    auth_peer_mac(a->secret, a->secret_len, ING_ROLE_AGENT, a->ns, a->nc, m.u.auth.mac);
    a->authing = true;
    return queue_msg(a, &m);
}

/* on_auth_ok checks the server's proof, then sends the hello. */
static int
on_auth_ok(struct ing_agent *a, const struct ing_auth_ok *ok)
{
    uint8_t want[ING_MAC_LEN];

    if (!a->authing) {
        snprintf(a->last_error, sizeof(a->last_error), "AuthOk without an Auth");
        return -EPROTO;
    }
    auth_server_mac(a->secret, a->secret_len, ING_ROLE_AGENT, a->ns, a->nc, want);
    if (!sha256_equal(want, ok->mac, ING_MAC_LEN)) {
        snprintf(a->last_error, sizeof(a->last_error),
                 "the backend did not prove it knows the secret");
        return -EPROTO;
    }
    a->authing = false;
    return go_open(a);
}

/* handle acts on one decoded frame. Returns 0, or -errno when the connection must end. */
static int
handle(struct ing_agent *a, const struct ing_msg *m, ing_agent_event_fn *fn, void *arg)
{
    struct ing_agent_event ev;
    struct ing_msg pong;

    memset(&ev, 0, sizeof(ev));
    if (a->st == AGENT_OPENING && m->type != ING_WELCOME && m->type != ING_ERROR &&
        m->type != ING_AUTH_OK) {
        snprintf(a->last_error, sizeof(a->last_error), "%s before the Welcome",
                 ing_msg_type_name(m->type));
        return -EPROTO;
    }
    switch (m->type) {
    case ING_WELCOME:
        if (a->st == AGENT_OPENING && !a->authing)
            return on_welcome(a, &m->u.welcome);
        return 0;
    case ING_AUTH_OK:
        return a->st == AGENT_OPENING ? on_auth_ok(a, &m->u.auth_ok) : 0;
    case ING_ERROR:
        snprintf(a->last_error, sizeof(a->last_error), "%s: %.*s", error_name(m->u.error.code),
                 (int)m->u.error.text.len, m->u.error.text.p);
        if (a->st == AGENT_OPENING)
            return -EPROTO; /* every Error of the opening is followed by a close */
        ev.type = ING_AGENT_EV_ERROR;
        ev.code = m->u.error.code;
        ev.text = m->u.error.text;
        emit(a, fn, arg, &ev);
        return 0;
    case ING_PING:
        memset(&pong, 0, sizeof(pong));
        pong.type = ING_PONG;
        return queue_msg(a, &pong) == -ENOMEM ? -ENOMEM : 0;
    case ING_BACKEND_NEW_JOB:
        ev.type = ING_AGENT_EV_JOB;
        ev.job = &m->u.job;
        ev.job_id = m->u.job.job_id;
        emit(a, fn, arg, &ev);
        return 0;
    case ING_BACKEND_KILL_JOB:
        ev.type = ING_AGENT_EV_KILL;
        ev.job_id = m->u.kill.job_id;
        ev.state = m->u.kill.state;
        emit(a, fn, arg, &ev);
        return 0;
    default:
        return 0; /* Pong, or a type meant for someone else: ignored */
    }
}

/* has_frame tells whether a whole frame is buffered. */
static bool
has_frame(const struct buf *b)
{
    uint8_t type;
    uint32_t body;

    return ing_frame_peek(buf_head(b), buf_len(b), &type, &body) == 0 &&
           buf_len(b) - ING_HDR_LEN >= body;
}

/* opened tells whether the blocking connect has what it waits for: it leaves the frames
 * that follow in the buffer, for the caller's first process call (they may be events). */
static bool
opened(const struct ing_agent *a)
{
    return a->st == AGENT_OPEN;
}

/* decode handles every complete buffered frame (while opening, up to opened()). Returns 0
 * or -errno when the connection must end. */
static int
decode(struct ing_agent *a, ing_agent_event_fn *fn, void *arg, bool opening)
{
    while (!(opening && opened(a))) {
        struct ing_msg m;
        uint8_t type;
        uint32_t body;
        ssize_t f = ing_msg_decode(buf_head(&a->in), buf_len(&a->in), a->max_frame, &m);
        int rc;

        if (f == 0)
            break;
        if (f == -EMSGSIZE) {
            snprintf(a->last_error, sizeof(a->last_error), "frame over %u bytes", a->max_frame);
            return -EMSGSIZE;
        }
        if (f < 0) { /* unknown type or bad body: skip the frame once it is complete */
            if (!has_frame(&a->in))
                break;
            ing_frame_peek(buf_head(&a->in), buf_len(&a->in), &type, &body);
            buf_consume(&a->in, ING_HDR_LEN + (size_t)body);
            continue;
        }
        rc = handle(a, &m, fn, arg);
        buf_consume(&a->in, (size_t)f);
        if (rc != 0)
            return rc;
        notify(a, fn, arg);
    }
    return 0;
}

/* pump handles what is buffered, then reads (at most READ_BUDGET times) and handles every
 * complete frame. Returns 0 or -errno when the connection must end. */
static int
pump(struct ing_agent *a, ing_agent_event_fn *fn, void *arg, bool opening)
{
    int rc = decode(a, fn, arg, opening);

    for (int reads = 0; rc == 0 && reads < READ_BUDGET && !(opening && opened(a)); reads++) {
        size_t want = READ_CHUNK, room;
        uint8_t type;
        uint32_t body;
        ssize_t n;

        if (ing_frame_peek(buf_head(&a->in), buf_len(&a->in), &type, &body) == 0 &&
            body <= a->max_frame && ING_HDR_LEN + (size_t)body > buf_len(&a->in) + want)
            want = ING_HDR_LEN + (size_t)body - buf_len(&a->in);
        if (buf_reserve(&a->in, want) != 0)
            return -ENOMEM;
        room = buf_room(&a->in);
        n = recv(a->fd, buf_tail(&a->in), room, 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -errno;
        }
        buf_produce(&a->in, (size_t)n);
        a->last_rx = now_ms();
        rc = decode(a, fn, arg, opening);
        if ((size_t)n < room)
            break; /* the socket is drained */
    }
    if (rc == 0)
        buf_shrink(&a->in, KEEP_BUF);
    return rc;
}

/* ing_agent_connect connects (blocking, opts.connect_timeout_ms), sends the preamble and
 * AgentHello, and waits for the Welcome. Returns 0 or -errno: -ECONNREFUSED, -ETIMEDOUT,
 * -EPROTO when the server answered with an Error (ing_agent_last_error), -EISCONN when a
 * connection exists. On failure with opts.reconnect, process() retries after the backoff. */
int
ing_agent_connect(struct ing_agent *a)
{
    uint64_t now = now_ms();
    int rc;

    if (a->st != AGENT_DOWN)
        return -EISCONN;
    a->last_error[0] = '\0';
    rc = start_link(a, now);
    while (rc == 0 && a->st != AGENT_OPEN) {
        struct pollfd p = {.fd = a->fd, .events = POLLIN};
        int left = ms_until(a->deadline, now_ms());
        if (left == 0) {
            rc = -ETIMEDOUT;
            break;
        }
        if (a->st == AGENT_CONNECTING || buf_len(&a->out) > 0)
            p.events |= POLLOUT;
        if (poll(&p, 1, left) < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (a->st == AGENT_CONNECTING) {
            rc = check_connected(a);
            if (rc <= 0)
                continue;
            rc = 0;
        }
        rc = flush(a);
        if (rc == 0)
            rc = pump(a, NULL, NULL, true);
    }
    if (rc == 0)
        rc = flush(a); /* the hello, when it waited for the authentication */
    if (rc != 0)
        link_down(a, rc, NULL, NULL);
    return rc;
}

/* ing_agent_fd returns the socket to watch, -1 while disconnected. */
int
ing_agent_fd(const struct ing_agent *a)
{
    return a->fd;
}

/* ing_agent_want_write tells whether the caller should also watch for POLLOUT. */
bool
ing_agent_want_write(const struct ing_agent *a)
{
    return a->st == AGENT_CONNECTING || buf_len(&a->out) > 0;
}

/* silence_deadline returns when an open connection that stays silent is declared dead, or
 * 0 when the backend announced no heartbeat. */
static uint64_t
silence_deadline(const struct ing_agent *a)
{
    uint64_t period;

    if (a->st != AGENT_OPEN || a->heartbeat_ms == 0)
        return 0;
    period = (uint64_t)a->heartbeat_ms * SILENCE_PERIODS;
    return a->last_rx + (period < SILENCE_MIN_MS ? SILENCE_MIN_MS : period);
}

/* ing_agent_timeout_ms returns how long the caller may wait before the next process call:
 * 0 when something is due, the time to the next deadline (reconnect, connect, silence),
 * or -1 for no limit. */
int
ing_agent_timeout_ms(const struct ing_agent *a)
{
    uint64_t now = now_ms();

    if ((a->notify_connected && a->st == AGENT_OPEN) || a->werr != 0 ||
        (a->st != AGENT_DOWN && has_frame(&a->in)))
        return 0; /* due: an event, a write error, frames left by the blocking connect */
    switch (a->st) {
    case AGENT_DOWN:
        return a->reconnect ? ms_until(a->retry_at, now) : -1;
    case AGENT_CONNECTING:
    case AGENT_OPENING:
        return ms_until(a->deadline, now);
    case AGENT_OPEN:
        if (silence_deadline(a) != 0)
            return ms_until(silence_deadline(a), now);
        return -1;
    }
    return -1;
}

/* step does the work of process() for the current state. Returns 0 or the -errno that
 * ends the connection. */
static int
step(struct ing_agent *a, ing_agent_event_fn *fn, void *arg, uint64_t now)
{
    int rc;

    if (a->st == AGENT_CONNECTING) {
        rc = check_connected(a);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return now >= a->deadline ? -ETIMEDOUT : 0;
    }
    if (a->werr != 0)
        return a->werr;
    rc = flush(a);
    if (rc == 0)
        rc = pump(a, fn, arg, false);
    if (rc == 0)
        rc = flush(a);
    if (rc == 0 && a->st == AGENT_OPENING && now >= a->deadline)
        rc = -ETIMEDOUT;
    if (rc == 0 && silence_deadline(a) != 0 && now_ms() >= silence_deadline(a))
        rc = -ETIMEDOUT;
    return rc;
}

/* ing_agent_process does every non-blocking step: reconnects when due, flushes output,
 * reads and handles what arrived (answering pings, calling fn for events). fn may call the
 * report functions, never process, wait, connect or free. Returns 0, or the -errno that
 * closed the connection when not reconnecting. */
int
ing_agent_process(struct ing_agent *a, ing_agent_event_fn *fn, void *arg)
{
    uint64_t now = now_ms();
    int rc;

    notify(a, fn, arg);
    if (a->st == AGENT_DOWN) {
        if (!a->reconnect)
            return a->fatal;
        if (now < a->retry_at)
            return 0;
        rc = start_link(a, now);
        if (rc != 0) {
            link_down(a, rc, fn, arg);
            return 0;
        }
    }
    rc = step(a, fn, arg, now);
    if (rc != 0) {
        link_down(a, rc, fn, arg);
        return a->reconnect ? 0 : rc;
    }
    return 0;
}

/* ing_agent_wait polls the connection up to timeout_ms (-1 = no limit; shortened to the
 * library's own deadlines), then processes. Returns as ing_agent_process. */
int
ing_agent_wait(struct ing_agent *a, int timeout_ms, ing_agent_event_fn *fn, void *arg)
{
    int t = ing_agent_timeout_ms(a);
    struct pollfd p = {.fd = a->fd, .events = POLLIN};

    if (a->st == AGENT_DOWN && !a->reconnect)
        return a->fatal;
    if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
        t = timeout_ms;
    if (ing_agent_want_write(a))
        p.events |= POLLOUT;
    if (poll(&p, a->fd >= 0 ? 1 : 0, t) < 0 && errno != EINTR)
        return -errno;
    return ing_agent_process(a, fn, arg);
}

/* can_report tells whether reports may be queued now: on an open connection, or an opening
 * one when no authentication has to come first. */
static bool
can_report(const struct ing_agent *a)
{
    return a->st == AGENT_OPEN || (a->st != AGENT_DOWN && a->secret == NULL);
}

/* ing_agent_started queues AgentJobStarted(job_id). Returns 0, -ENOTCONN or -ENOMEM. */
int
ing_agent_started(struct ing_agent *a, struct ing_view job_id)
{
    struct ing_msg m;

    if (!can_report(a))
        return -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_STARTED;
    m.u.ref.job_id = job_id;
    return queue_msg(a, &m);
}

/* ing_agent_ssh_debug queues AgentJobSSHDebug. Returns 0, -ENOTCONN or -ENOMEM. */
int
ing_agent_ssh_debug(struct ing_agent *a, const struct ing_ssh_debug *ssh)
{
    struct ing_msg m;

    if (!can_report(a))
        return -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_SSH_DEBUG;
    m.u.ssh = *ssh;
    return queue_msg(a, &m);
}

/* ing_agent_done queues AgentJobDone. Returns 0, -ENOTCONN, -ENOMEM, or -EINVAL for a
 * result that cannot be encoded (nil in a non-nullable field, empty msgpack). */
int
ing_agent_done(struct ing_agent *a, const struct ing_job_result *result)
{
    struct ing_msg m;

    if (!can_report(a))
        return -ENOTCONN;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    m.u.result = *result;
    return queue_msg(a, &m);
}

/* ing_agent_last_error returns the text of the last Error the backend sent (or of the
 * protocol problem that closed the connection), or "". */
const char *
ing_agent_last_error(const struct ing_agent *a)
{
    return a->last_error;
}
