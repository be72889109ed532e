/* SPDX-License-Identifier: MIT */
/* peer.c: one connection of the client or agent library to the backend (see peer.h). */
#include "peer.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "sha256.h"

#define DEFAULT_BACKOFF_MIN_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define READ_CHUNK 65536    /* bytes reserved per read */
#define READ_BUDGET 16      /* reads per process call */
#define KEEP_BUF (1u << 20) /* buffers above this are released when empty */
#define PASS 1              /* handle: the frame is the owner's to act on */

/* peer_now_ms returns the monotonic clock in milliseconds. */
uint64_t
peer_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* peer_ms_until returns the milliseconds from now to when (0 when past, at most INT32_MAX). */
int
peer_ms_until(uint64_t when, uint64_t now)
{
    if (when <= now)
        return 0;
    return when - now > (uint64_t)INT32_MAX ? INT32_MAX : (int)(when - now);
}

/* ---- life cycle ---- */

/* peer_init sets up p (DOWN) with ops and a copy of cfg. Returns 0, -EINVAL (bad address,
 * reason in last_error) or -ENOMEM; peer_fini must be called in every case. */
int
peer_init(struct peer_conn *p, const struct peer_ops *ops, const struct peer_config *cfg)
{
    char why[160];

    memset(p, 0, sizeof(*p));
    p->ops = ops;
    p->fd = -1;
    buf_init(&p->in);
    buf_init(&p->out);
    p->send_max = p->recv_max = ING_MAX_FRAME_DEFAULT;
    p->fatal = -ENOTCONN;
    if (net_parse(cfg->addr, &p->na, why, sizeof(why)) != 0) {
        snprintf(p->last_error, sizeof(p->last_error), "%s", why);
        return -EINVAL;
    }
    p->reconnect = cfg->reconnect;
    p->hello_waits = cfg->hello_waits;
    p->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    p->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (p->backoff_max_ms < p->backoff_min_ms)
        p->backoff_max_ms = p->backoff_min_ms;
    p->connect_timeout_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    p->backoff_ms = p->backoff_min_ms;
    if (cfg->secret != NULL) {
        p->secret = malloc(cfg->secret_len ? cfg->secret_len : 1);
        if (p->secret == NULL)
            return -ENOMEM;
        memcpy(p->secret, cfg->secret, cfg->secret_len);
        p->secret_len = cfg->secret_len;
    }
    return 0;
}

static void
peer_close(struct peer_conn *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->st = PEER_DOWN;
    p->werr = 0;
    p->authing = false;
    buf_fini(&p->in);
    buf_fini(&p->out);
}

/* peer_fini closes the connection and frees (and wipes) what p holds. */
void
peer_fini(struct peer_conn *p)
{
    peer_close(p);
    if (p->secret != NULL)
        memset(p->secret, 0, p->secret_len);
    free(p->secret);
    p->secret = NULL;
}

/* peer_down closes the connection and schedules the next attempt (reconnect) or keeps err
 * for process(). Returns whether the connection was open. */
bool
peer_down(struct peer_conn *p, int err)
{
    bool was_open = p->st == PEER_OPEN;

    peer_close(p);
    if (p->reconnect) {
        p->retry_at = peer_now_ms() + (uint64_t)p->backoff_ms;
        p->backoff_ms =
            p->backoff_ms > p->backoff_max_ms / 2 ? p->backoff_max_ms : p->backoff_ms * 2;
    } else {
        p->fatal = err;
    }
    if (was_open)
        p->notify_connected = false;
    return was_open;
}

/* ---- output ---- */

/* peer_flush writes pending output without blocking. Returns 0 (all written or EAGAIN) or
 * -errno. */
int
peer_flush(struct peer_conn *p)
{
    while (buf_len(&p->out) > 0) {
        ssize_t n = send(p->fd, buf_head(&p->out), buf_len(&p->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&p->out, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    buf_shrink(&p->out, KEEP_BUF);
    return 0;
}

/* peer_queue encodes m at the end of the output and tries to send it at once. A write
 * error is kept in werr for the next process call. */
int
peer_queue(struct peer_conn *p, const struct ing_msg *m)
{
    size_t size;
    ssize_t n;

    if (p->st == PEER_DOWN)
        return -ENOTCONN;
    size = ing_msg_size(m);
    if (size == 0)
        return -EINVAL;
    if (size - ING_HDR_LEN > p->send_max)
        return -EMSGSIZE;
    if (buf_reserve(&p->out, size) != 0)
        return -ENOMEM;
    n = ing_msg_encode(m, buf_tail(&p->out), size);
    if (n < 0)
        return (int)n;
    buf_produce(&p->out, (size_t)n);
    if (p->st != PEER_CONNECTING && p->werr == 0)
        p->werr = peer_flush(p);
    return 0;
}

/* ---- opening ---- */

/* start opens a non-blocking connection and queues the preamble and, without a secret,
 * the hello (proto.md §2.3); with one, the hello waits for AuthOk. */
static int
start(struct peer_conn *p, uint64_t now)
{
    uint8_t pre[ING_PREAMBLE_LEN];
    int fd = net_connect(&p->na, true);
    int rc;

    if (fd < 0)
        return fd;
    p->fd = fd;
    p->st = PEER_CONNECTING;
    p->deadline = now + (uint64_t)p->connect_timeout_ms;
    p->send_max = p->recv_max = ING_MAX_FRAME_DEFAULT;
    ing_preamble_encode(pre, p->ops->role);
    rc = buf_append(&p->out, pre, sizeof(pre));
    if (rc == 0 && p->secret == NULL && !p->hello_waits)
        rc = p->ops->hello(p);
    if (rc != 0)
        peer_close(p);
    return rc;
}

/* check_connected finishes a non-blocking connect: 1 when connected, 0 when still in
 * progress, -errno when it failed. */
static int
check_connected(struct peer_conn *p)
{
    struct pollfd pfd = {.fd = p->fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof(err);

    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -errno;
    if (err != 0)
        return -err;
    p->st = PEER_OPENING;
    return 1;
}

static const char *
error_name(uint16_t code)
{
    static const char *const names[] = {
        "?",         "PREAMBLE",   "VERSION",      "ROLE",    "TOO_BIG",
        "MALFORMED", "UNEXPECTED", "UNKNOWN_TYPE", "AUTH",    "LIMIT",
        "TIMEOUT",   "SHUTDOWN",   "OVERLOAD",     "INVALID",
        "JOURNAL",   "TAKEN_OVER",
    };

    return code < sizeof(names) / sizeof(names[0]) ? names[code] : "?";
}

/* go_open ends the opening: the hello goes out now if it had to wait. */
static int
go_open(struct peer_conn *p)
{
    int rc = p->secret != NULL || p->hello_waits ? p->ops->hello(p) : 0;

    if (rc != 0)
        return rc;
    p->st = PEER_OPEN;
    p->backoff_ms = p->backoff_min_ms;
    p->notify_connected = true;
    return 0;
}

/* on_welcome checks the Welcome and answers the challenge when there is one. Returns 0 or
 * -errno (the connection must be closed). */
static int
on_welcome(struct peer_conn *p, const struct ing_welcome *w)
{
    struct ing_msg m;
    int rc;

    if (w->version != ING_PROTO_VERSION || w->role != p->ops->role) {
        snprintf(p->last_error, sizeof(p->last_error), "unsupported Welcome: version %u, role %u",
                 w->version, w->role);
        return -EPROTO;
    }
    p->send_max = w->max_frame;
    p->recv_max = w->max_frame > ING_MAX_FRAME_DEFAULT ? w->max_frame : ING_MAX_FRAME_DEFAULT;
    p->ops->welcome(p, w);
    if (!(w->flags & ING_WELCOME_AUTH))
        return go_open(p);
    if (p->secret == NULL) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "the backend requires authentication and no secret was given");
        return -EPROTO;
    }
    rc = auth_nonce(p->nc);
    if (rc != 0)
        return rc;
    memcpy(p->ns, w->nonce, ING_NONCE_LEN);
    memset(&m, 0, sizeof(m));
    m.type = ING_AUTH;
    memcpy(m.u.auth.nonce, p->nc, ING_NONCE_LEN);
    auth_peer_mac(p->secret, p->secret_len, p->ops->role, p->ns, p->nc, m.u.auth.mac);
    p->authing = true;
    return peer_queue(p, &m);
}

/* on_auth_ok checks the server's proof, then sends the hello. */
static int
on_auth_ok(struct peer_conn *p, const struct ing_auth_ok *ok)
{
    uint8_t want[ING_MAC_LEN];

    if (!p->authing) {
        snprintf(p->last_error, sizeof(p->last_error), "AuthOk without an Auth");
        return -EPROTO;
    }
    auth_server_mac(p->secret, p->secret_len, p->ops->role, p->ns, p->nc, want);
    if (!sha256_equal(want, ok->mac, ING_MAC_LEN)) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "the backend did not prove it knows the secret");
        return -EPROTO;
    }
    p->authing = false;
    return go_open(p);
}

/* handle does the connection's part of a frame: the Welcome, AuthOk, Error (kept in
 * last_error) and Ping, and refuses any other frame before the Welcome. Returns PASS when
 * the owner must act on the frame (an Error on an open connection, any other type), 0 when
 * done, or -errno when the connection must end. */
static int
handle(struct peer_conn *p, const struct ing_msg *m)
{
    struct ing_msg pong;

    if (p->st == PEER_OPENING && m->type != ING_WELCOME && m->type != ING_ERROR &&
        m->type != ING_AUTH_OK) {
        snprintf(p->last_error, sizeof(p->last_error), "%s before the Welcome",
                 ing_msg_type_name(m->type));
        return -EPROTO;
    }
    switch (m->type) {
    case ING_WELCOME:
        return p->st == PEER_OPENING && !p->authing ? on_welcome(p, &m->u.welcome) : 0;
    case ING_AUTH_OK:
        return p->st == PEER_OPENING ? on_auth_ok(p, &m->u.auth_ok) : 0;
    case ING_ERROR:
        snprintf(p->last_error, sizeof(p->last_error), "%s: %.*s", error_name(m->u.error.code),
                 (int)m->u.error.text.len, m->u.error.text.p);
        /* every Error of the opening is followed by a close */
        return p->st == PEER_OPENING ? -EPROTO : PASS;
    case ING_PING:
        memset(&pong, 0, sizeof(pong));
        pong.type = ING_PONG;
        return peer_queue(p, &pong) == -ENOMEM ? -ENOMEM : 0;
    default:
        return PASS;
    }
}

/* ---- input ---- */

/* has_frame tells whether a whole frame is buffered. */
static bool
has_frame(const struct buf *b)
{
    uint8_t type;
    uint32_t body;

    return ing_frame_peek(buf_head(b), buf_len(b), &type, &body) == 0 &&
           buf_len(b) - ING_HDR_LEN >= body;
}

/* decode handles every complete buffered frame (while opening, up to the opened hook: the
 * frames that follow are left for the caller's first process call, they may be events).
 * Returns 0 or -errno when the connection must end. */
static int
decode(struct peer_conn *p, void *ctx, bool opening)
{
    while (!(opening && p->ops->opened(p))) {
        struct ing_msg m;
        uint8_t type;
        uint32_t body;
        ssize_t f = ing_msg_decode(buf_head(&p->in), buf_len(&p->in), p->recv_max, &m);
        int rc;

        if (f == 0)
            break;
        if (f == -EMSGSIZE) {
            snprintf(p->last_error, sizeof(p->last_error), "frame over %u bytes", p->recv_max);
            return -EMSGSIZE;
        }
        if (f < 0) { /* unknown type or bad body: skip the frame once it is complete */
            if (!has_frame(&p->in))
                break;
            ing_frame_peek(buf_head(&p->in), buf_len(&p->in), &type, &body);
            buf_consume(&p->in, ING_HDR_LEN + (size_t)body);
            continue;
        }
        rc = handle(p, &m);
        if (rc == PASS)
            rc = p->ops->frame(p, &m, ctx);
        buf_consume(&p->in, (size_t)f);
        if (rc != 0)
            return rc;
        p->ops->notify(p, ctx);
    }
    return 0;
}

/* pump handles what is buffered, then reads (at most READ_BUDGET times) and handles every
 * complete frame. Returns 0 or -errno when the connection must end. */
static int
pump(struct peer_conn *p, void *ctx, bool opening)
{
    int rc = decode(p, ctx, opening);

    for (int reads = 0; rc == 0 && reads < READ_BUDGET && !(opening && p->ops->opened(p));
         reads++) {
        size_t want = READ_CHUNK, room;
        uint8_t type;
        uint32_t body;
        ssize_t n;

        if (ing_frame_peek(buf_head(&p->in), buf_len(&p->in), &type, &body) == 0 &&
            body <= p->recv_max && ING_HDR_LEN + (size_t)body > buf_len(&p->in) + want)
            want = ING_HDR_LEN + (size_t)body - buf_len(&p->in);
        if (buf_reserve(&p->in, want) != 0)
            return -ENOMEM;
        room = buf_room(&p->in);
        n = recv(p->fd, buf_tail(&p->in), room, 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -errno;
        }
        buf_produce(&p->in, (size_t)n);
        p->last_rx = peer_now_ms();
        rc = decode(p, ctx, opening);
        if ((size_t)n < room)
            break; /* the socket is drained */
    }
    if (rc == 0)
        buf_shrink(&p->in, KEEP_BUF);
    if (rc == 0 && p->ops->read_done != NULL)
        rc = p->ops->read_done(p);
    return rc;
}

/* ---- driving ---- */

/* peer_connect connects (blocking, at most connect_timeout_ms), opens and handles frames
 * until the opened hook is satisfied; p must be DOWN. Returns 0 or -errno. */
int
peer_connect(struct peer_conn *p, void *ctx)
{
    int rc;

    p->last_error[0] = '\0';
    rc = start(p, peer_now_ms());
    while (rc == 0 && !p->ops->opened(p)) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        int left = peer_ms_until(p->deadline, peer_now_ms());

        if (left == 0) {
            rc = -ETIMEDOUT;
            break;
        }
        if (peer_want_write(p))
            pfd.events |= POLLOUT;
        if (poll(&pfd, 1, left) < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (p->st == PEER_CONNECTING) {
            rc = check_connected(p);
            if (rc <= 0)
                continue;
            rc = 0;
        }
        rc = p->ops->strict_werr && p->werr != 0 ? p->werr : peer_flush(p);
        if (rc == 0)
            rc = pump(p, ctx, true);
    }
    return rc;
}

/* step does the work of process() for the current state. Returns 0 or the -errno that
 * ends the connection. */
static int
step(struct peer_conn *p, void *ctx, uint64_t now)
{
    int rc;

    if (p->st == PEER_CONNECTING) {
        rc = check_connected(p);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return now >= p->deadline ? -ETIMEDOUT : 0;
    }
    if (p->werr != 0)
        return p->werr;
    rc = peer_flush(p);
    if (rc == 0)
        rc = pump(p, ctx, false);
    if (rc == 0 && p->ops->strict_werr && p->werr != 0)
        rc = p->werr;
    if (rc == 0)
        rc = peer_flush(p);
    if (rc == 0 && p->st == PEER_OPENING && now >= p->deadline)
        rc = -ETIMEDOUT;
    if (rc == 0 && p->ops->check != NULL)
        rc = p->ops->check(p);
    return rc;
}

/* peer_process does every non-blocking step. Returns 0, or the -errno that closed the
 * connection when not reconnecting. */
int
peer_process(struct peer_conn *p, void *ctx)
{
    uint64_t now = peer_now_ms();
    int rc;

    p->ops->notify(p, ctx);
    if (p->st == PEER_DOWN) {
        if (!p->reconnect)
            return p->fatal;
        if (now < p->retry_at)
            return 0;
        rc = start(p, now);
        if (rc != 0) {
            p->ops->down(p, rc, ctx);
            return 0;
        }
    }
    rc = step(p, ctx, now);
    if (rc != 0) {
        p->ops->down(p, rc, ctx);
        return p->reconnect ? 0 : rc;
    }
    return 0;
}

/* peer_wait polls up to timeout_ms, shortened to due_ms, then processes. */
int
peer_wait(struct peer_conn *p, int timeout_ms, int due_ms, void *ctx)
{
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    int t = due_ms;

    if (p->st == PEER_DOWN && !p->reconnect)
        return p->fatal;
    if (t < 0 || (timeout_ms >= 0 && timeout_ms < t))
        t = timeout_ms;
    if (peer_want_write(p))
        pfd.events |= POLLOUT;
    if (poll(&pfd, p->fd >= 0 ? 1 : 0, t) < 0 && errno != EINTR)
        return -errno;
    return peer_process(p, ctx);
}

/* ---- state ---- */

/* peer_want_write tells whether the caller should also watch for POLLOUT. */
bool
peer_want_write(const struct peer_conn *p)
{
    return p->st == PEER_CONNECTING || buf_len(&p->out) > 0;
}

/* peer_can_send tells whether requests may be queued now. */
bool
peer_can_send(const struct peer_conn *p)
{
    return p->st == PEER_OPEN || (p->st != PEER_DOWN && p->secret == NULL && !p->hello_waits);
}

/* peer_timeout_ms returns how long the caller may wait before processing again. */
int
peer_timeout_ms(const struct peer_conn *p, uint64_t open_deadline)
{
    uint64_t now = peer_now_ms();

    if ((p->notify_connected && p->st == PEER_OPEN) || p->werr != 0 ||
        (p->st != PEER_DOWN && has_frame(&p->in)))
        return 0; /* due: an event, a write error, frames left by the blocking connect */
    switch (p->st) {
    case PEER_DOWN:
        return p->reconnect ? peer_ms_until(p->retry_at, now) : -1;
    case PEER_CONNECTING:
    case PEER_OPENING:
        return peer_ms_until(p->deadline, now);
    case PEER_OPEN:
        return open_deadline != 0 ? peer_ms_until(open_deadline, now) : -1;
    }
    return -1;
}
