/* SPDX-License-Identifier: MIT */
/* server.c: see server.h. */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "bytes.h"
#include "ev.h"
#include "inginious/proto.h"
#include "inginious/version.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "sblk.h"
#include "sd.h"
#include "sha256.h"
#include "slab.h"
#include "status.h"
#include "zbridge.h"

#define READ_CHUNK (64 * 1024)
#define READ_BUDGET (256 * 1024) /* bytes read from one peer per wake-up */
/* bytes written to one peer per conn_flush: the rest when the socket is writable again (a
 * single write of megabytes, a large environment list, costs milliseconds of the loop) */
#define WRITE_BUDGET (512 * 1024)
/* An environment list at least this long is shared: every output refers to one block
 * (sblk.h) instead of holding a copy; a shorter one is copied as any message. */
#define SHARE_MIN (64 * 1024)
#define ACCEPT_BUDGET 64
#define FRAME_BUDGET 256     /* frames handled from one peer per wake-up */
#define HINTS 16             /* frames whose job id is prefetched ahead (process_input) */
#define ITER_BUDGET_US 1000  /* past this much time in one iteration, input waits (see below) */
#define LARGE_BUDGET_US 500  /* past this much, large inputs and outputs wait (late_ok) */
#define IN_KEEP (256 * 1024) /* a larger idle input buffer is released */
#define IN_FIRST 4096        /* first input buffer: an idle peer holds no more */
#define HEAVY_FRAME (64 * 1024) /* frames this long are timed one by one (input_spent) */
#define FD_RESERVE 64        /* descriptors kept out of --max-connections' reach */
#define RELIEVE_MIN (64 * 1024) /* unread output below this is never dropped for memory */
#define RELIEVE_MAX 16          /* peers dropped for memory per shortage */
#define LOST_BATCH 4096         /* lost agents' jobs handled per loop iteration (conn_reap) */
#define LOG_BURST 10            /* warnings a peer causes per LOG_WINDOW_MS, then summarised */
#define LOG_WINDOW_MS 10000

/* Timeout lists: connections in the order of their deadline (one timeout per list). */
enum { TL_HS = 0, TL_FRAME = 1, TL_N = 2 };
struct tlink {
    struct conn *prev, *next;
    uint64_t due_ms; /* 0 = not on the list */
};
struct tlist {
    struct conn *head, *tail;
};

enum conn_state {
    CONN_PREAMBLE = 0, /* waiting for the peer's preamble */
    CONN_OPEN = 1,     /* native frames */
    CONN_CLOSING = 2,  /* on the close list: nothing more is read or handled */
};

enum conn_dialect {
    DIALECT_NATIVE = 0, /* proto.md */
    DIALECT_ZMQ = 1,    /* ZMTP 3.x + INGInious msgpack (first byte 0xFF) */
};

struct conn {
    struct ev_io io;
    struct server *srv;
    uint8_t role;    /* ING_ROLE_* of the endpoint */
    uint8_t state;   /* enum conn_state */
    uint8_t dialect; /* enum conn_dialect */
    struct zconn *z; /* DIALECT_ZMQ */
    bool in_pending; /* on the pending-write list */
    bool close_after_flush;
    bool backlog;                 /* frames left unhandled (budget): on the backlog list */
    bool authed;                  /* no secret, or a valid Auth received */
    bool half_closed;             /* shut down its side with jobs: served until they end */
    bool counted;                 /* in ms.conns (its dialect is known) */
    bool acks;                    /* sent ClientHelloAck: each accepted job acknowledged */
    uint8_t nonce[ING_NONCE_LEN]; /* our challenge while !authed */
    uint32_t errors;
    uint64_t id;
    uint64_t frames;     /* native frames completed (the frame timeout's progress) */
    uint64_t spent;      /* input_spent calls (the same for ZeroMQ units) */
    uint64_t mem;        /* bytes of in and out counted in the server's budget */
    uint64_t out_sent;   /* output bytes written so far (positions in the output stream) */
    uint64_t envs_at;    /* where the last environment list starts in the output stream */
    uint64_t envs_len;   /* its size (0: none sent) */
    uint64_t log_win_ms; /* start of the current log window (conn_log_ok) */
    uint32_t log_n;      /* warnings logged in it */
    uint64_t log_held;   /* warnings not logged in it */
    uint8_t addr_key[17]; /* the peer's address for --max-connections-per-address ([0] 0: none) */
    struct buf in, out;
    size_t in_frame; /* the frame being handled: its length at the head of in (be_take) */
    bool in_taken;   /* be_take handed in's memory over: the frame is gone from in */
    struct conn *prev, *next; /* all connections */
    struct tlink tl[TL_N];    /* [TL_HS] opening not finished; [TL_FRAME] a frame incomplete */
    struct conn *pw_next;           /* pending writes */
    struct conn *cl_next;           /* deferred close */
    struct conn *bl_next;           /* backlog: input left for the next iteration */
    struct be_client *client;
    struct be_agent *agent;
    char name[160]; /* "client 12 (tcp://127.0.0.1:5555)" */
    struct sblk_out oref; /* shared blocks in out's stream (a large environment list) */
};

struct listener {
    struct ev_io io;
    struct server *srv;
    int fd;
    uint8_t role;
    bool paused; /* out of file descriptors: accept is retried at the next tick */
    uint32_t log_n; /* refusals logged since the last tick (LOG_BURST per tick, then counted) */
    char addr[128];
    struct net_addr bound;  /* a unix socket file we made is removed at exit */
    struct net_stamp stamp;
};

struct server {
    struct srv_config cfg;
    struct ev_loop *loop;
    struct backend be;
    struct listener lis[2]; /* [0] agents, [1] clients */
    struct slab conn_slab;
    struct conn *conns;
    struct tlist tl[TL_N];
    uint64_t mem_bufs; /* bytes of every connection's buffers (conn_account) */
    uint64_t budget;   /* --max-memory, resolved */
    uint64_t relieve_dry_ms; /* when mem_relieve last found no one to drop */
    uint64_t shed_dry_kept;  /* be.kept_bytes when mem_shed last freed nothing (+1; 0: none) */
    bool iter_check;   /* the last frame was expensive: look at the clock (input_spent) */
    struct addr_count {
        uint8_t key[17];
        uint32_t n;
    } *addrs; /* --max-connections-per-address: open addressing, linear probing */
    size_t addr_mask;
    struct conn *pending; /* pending writes */
    struct conn *closing; /* deferred closes */
    struct conn *backlog; /* connections with complete frames left over (frame budget) */
    struct ev_timer backlog_timer;
    struct ev_timer reap_timer; /* gone clients' jobs left to drop (be_reap) */
    struct ev_timer reg_timer;  /* a large AgentHello being registered (be_register) */
    struct ev_timer envs_timer; /* the environment list's next update is due (be_flush) */
    struct ev_timer lost_timer; /* lost agents left for the next iteration (conn_reap) */
    bool closing_held;          /* closes left for the next iteration */
    struct journal jr;          /* --journal, open when jr_on */
    bool jr_on;
    struct ev_timer jr_timer;   /* the journal's next sync, retry or compaction step */
    uint32_t nconns;
    uint64_t next_id;
    struct ev_timer ping_timer, tick_timer, drain_timer;
    uint64_t tick_ms;
    int sigfd;
    struct ev_io sig_io;
    struct sd_notify sd;      /* systemd notifications (cfg.notify) */
    struct ev_timer sd_timer; /* STATUS= and WATCHDOG=1 */
    char sd_status[192];      /* the last STATUS= sent */
    bool sd_warned;           /* a notification failed (logged once) */
    bool draining, finished;
    struct zbridge zb; /* the ZeroMQ dialect */
    /* Look-ahead over the frames of one read (process_input): the job ids of the next
     * frames, found, hashed and prefetched (be_prefetch_id) before the first is handled. */
    struct hint {
        const char *id;
        uint32_t len;
        uint64_t h;
    } hint[HINTS];
    unsigned hint_n, hint_i;
    const struct conn *hint_conn; /* whose input the hints are in */
    uintptr_t hint_end;           /* end of the frames scanned */
    struct metrics_server ms; /* the server's counters for /metrics */
    struct status st;         /* what the metrics port answers */
    struct httpd *httpd;      /* the metrics port, or NULL */
    /* The connections moving a large input, a large output late in this iteration (late_ok);
     * finishing: the last output leaves without that bound (finish) */
    uint64_t late_reader, late_writer;
    bool finishing;
};

static void conn_on_io(void *arg, unsigned events);

/* arm starts timer t. The loop keeps room for 64 timers from its creation (ev_new) and the
 * server has seven, so this cannot fail; if it ever did, the periodic tick still runs. */
static void
arm(struct server *s, struct ev_timer *t, uint64_t due_ms)
{
    int rc = ev_timer_start(s->loop, t, due_ms);
    if (rc != 0)
        log_msg(LOG_ERR, "cannot arm a timer: %s", strerror(-rc));
}

/* ---------------------------------------------------------------------------------------- */
/* Output                                                                                    */

/* late_ok tells whether c may move on with a large input or output (a large frame being
 * read, megabytes to write), done bytes of it moved in this wake-up. It looks at the clock
 * before the first byte and then every READ_CHUNK moved (*seen: done when it last looked,
 * SIZE_MAX before): in the first LARGE_BUDGET_US of the iteration, c moves on; past it, only
 * the first connection to get there in this iteration (*turn: s->late_reader or
 * s->late_writer) moves one READ_CHUNK more. The others wait for the next iterations
 * (level-triggered), so that many large hellos arriving together, or a list written to many
 * clients, do not all move in one iteration, and one of them progresses at each iteration
 * however long it is. */
static bool
late_ok(struct conn *c, uint64_t *turn, size_t done, size_t *seen)
{
    if (c->srv->finishing || (*seen != SIZE_MAX && done - *seen < READ_CHUNK))
        return true;
    *seen = done;
    if (!ev_iter_longer_than(c->srv->loop, LARGE_BUDGET_US))
        return true;
    if (*turn != 0)
        return false; /* another's turn, or c has had its chunk */
    *turn = c->id;
    return true;
}

/* in_large tells whether c is reading a large frame: its input grew past READ_CHUNK (a busy
 * peer's stays at READ_CHUNK), or the native frame at its head announces a longer body. */
static bool
in_large(const struct conn *c)
{
    if (c->in.cap > READ_CHUNK)
        return true;
    return c->state == CONN_OPEN && c->dialect == DIALECT_NATIVE && buf_len(&c->in) >= 4 &&
           get_u32be(buf_head(&c->in)) > READ_CHUNK;
}

static void
conn_want_flush(struct conn *c)
{
    if (!c->in_pending) {
        c->in_pending = true;
        c->pw_next = c->srv->pending;
        c->srv->pending = c;
    }
}

/* out_pending: c's output not yet written, the unwritten part of the shared blocks it
 * refers to included (what --max-output limits). */
static size_t
out_pending(const struct conn *c)
{
    return sblk_out_total(&c->oref, &c->out);
}

static void conn_close(struct conn *c, const char *why);
static void addr_release(struct server *s, struct conn *c);

/* ---------------------------------------------------------------------------------------- */
/* The memory budget (--max-memory): every connection's input and output buffers, the
 * bodies of the jobs the backend holds and the journal's buffers (journal_mem). New work (jobs, connections, the input of anyone
 * but a registered agent) may use 7/8 of it; the last eighth is kept for what ends work:
 * agents' reports and the output carrying results to clients. */

/* conn_account brings c's share of the budget up to date with its buffers. */
static void
conn_account(struct conn *c)
{
    uint64_t now = (uint64_t)c->in.cap + c->out.cap;
    c->srv->mem_bufs = c->srv->mem_bufs - c->mem + now;
    c->mem = now;
}

static uint64_t
mem_used(const struct server *s)
{
    return s->mem_bufs + s->be.job_bytes + s->be.kept_bytes + s->be.held_bytes +
           httpd_mem(s->httpd) + s->be.jr_fresh.cap + (s->jr_on ? journal_mem(&s->jr) : 0);
}

static uint64_t
mem_limit(const struct server *s, bool reserve)
{
    return reserve ? s->budget : s->budget - s->budget / 8;
}

/* SHED_MAX bounds the kept results looked at in one relief (bounded work per wake-up). */
#define SHED_MAX 4096

/* mem_shed: past the budget (with need more bytes), the results kept for the oldest detached
 * sessions are replaced by short crash results (proto.md 7.7), a bounded number at a time. */
static void
mem_shed(struct server *s, uint64_t need)
{
    uint64_t used = mem_used(s);
    if (used + need <= s->budget || s->be.kept_bytes == 0 ||
        s->shed_dry_kept == s->be.kept_bytes + 1)
        return; /* within it, nothing kept, or nothing more to gain until that changes */
    if (be_sessions_shed(&s->be, used + need - s->budget, SHED_MAX) == 0)
        s->shed_dry_kept = s->be.kept_bytes + 1;
}

/* out_freeable: the memory dropping c frees of its unread output: its own bytes, and the
 * shared blocks only it still refers to. The part of a shared list other outputs (or the
 * backend, the current list) also refer to is counted once in the budget and stays: a peer
 * holding only that is no relief (three clients that had not read the current list were
 * dropped for it, freeing nothing). */
static size_t
out_freeable(const struct conn *c)
{
    return buf_len(&c->out) + sblk_out_sole(&c->oref);
}

/* mem_relieve drops the peers whose unread output frees the most (at least RELIEVE_MIN bytes
 * each, at most RELIEVE_MAX of them) until need bytes are free. Their output is freed at
 * once. */
static void
mem_relieve(struct server *s, uint64_t need)
{
    /* A scan that found no one is not repeated within the same millisecond: at the budget,
     * every message sent would otherwise walk every connection. */
    if (s->relieve_dry_ms == ev_now_ms(s->loop))
        return;
    mem_shed(s, need);
    for (int k = 0; k < RELIEVE_MAX && mem_used(s) + need > s->budget; k++) {
        struct conn *worst = NULL;
        size_t most = 0;
        for (struct conn *o = s->conns; o != NULL; o = o->next) {
            size_t f = o->state != CONN_CLOSING ? out_freeable(o) : 0;
            if (f >= RELIEVE_MIN && (worst == NULL || f > most)) {
                worst = o;
                most = f;
            }
        }
        if (worst == NULL) {
            s->relieve_dry_ms = ev_now_ms(s->loop);
            return;
        }
        log_msg(LOG_WARN, "%s: dropped: backend memory full and %zu bytes of its output unread",
                worst->name, out_pending(worst));
        conn_close(worst, "memory budget");
        buf_fini(&worst->out);
        sblk_out_clear(&worst->oref); /* the last reference frees a list replaced since */
        conn_account(worst);
    }
}

/* mem_admit tells whether n more bytes fit in the budget: new work within 7/8 of it; with
 * reserve, the whole of it, after dropping the peers that read least if need be. */
static bool
mem_admit(struct server *s, uint64_t n, bool reserve)
{
    if (mem_used(s) + n <= mem_limit(s, reserve))
        return true;
    if (!reserve)
        return false;
    mem_relieve(s, n);
    return mem_used(s) + n <= s->budget;
}

/* http_admit: the metrics port's connections and answers are new work in the budget. */
static bool
http_admit(void *arg, uint64_t n)
{
    return mem_admit(arg, n, false);
}

/* conn_grow makes b (c's in or out) able to take n more bytes within the budget. Returns 0,
 * -EOVERFLOW when the budget refuses it, or -ENOMEM. */
static int
conn_grow(struct conn *c, struct buf *b, size_t n, bool reserve)
{
    size_t cap = buf_grown_cap(b, n);
    if (cap == SIZE_MAX)
        return -ENOMEM;
    if (cap > b->cap && !mem_admit(c->srv, cap - b->cap, reserve))
        return -EOVERFLOW;
    if (buf_reserve(b, n) != 0)
        return -ENOMEM;
    conn_account(c);
    return 0;
}

/* out_over tells whether n more bytes of output take c over --max-output, and drops it
 * then (a peer that does not read). */
static bool
out_over(struct conn *c, size_t n)
{
    if (out_pending(c) + n <= c->srv->cfg.max_output)
        return false;
    log_msg(LOG_WARN, "%s: %zu bytes of output pending, over the limit: dropped", c->name,
            out_pending(c));
    conn_close(c, "output limit");
    return true;
}

/* out_reserve makes room for n more output bytes, or drops a peer that does not read. */
static uint8_t *
out_reserve(struct conn *c, size_t n)
{
    if (c->state == CONN_CLOSING)
        return NULL;
    if (out_over(c, n))
        return NULL;
    if (buf_room(&c->out) < n) {
        int rc = conn_grow(c, &c->out, n, true);
        if (c->state == CONN_CLOSING) /* it held the most unread output */
            return NULL;
        if (rc != 0) {
            log_msg(LOG_ERR, "%s: %s for %zu bytes of output: dropped", c->name,
                    rc == -EOVERFLOW ? "backend memory full" : "out of memory", n);
            conn_close(c, rc == -EOVERFLOW ? "memory budget" : "out of memory");
            return NULL;
        }
    }
    return buf_tail(&c->out);
}

/* ---------------------------------------------------------------------------------------- */
/* Logs of what a peer causes: LOG_BURST warnings per LOG_WINDOW_MS, then a summary line
 * (log.c escapes what the peer wrote in them). */

static void
conn_log_summary(struct conn *c)
{
    if (c->log_held == 0)
        return;
    log_msg(LOG_WARN, "%s: ... %llu more like this in the last %llu s", c->name,
            (unsigned long long)c->log_held,
            (unsigned long long)(ev_now_ms(c->srv->loop) - c->log_win_ms + 999) / 1000);
    c->log_held = 0;
}

/* conn_log_ok tells whether one more warning caused by c may be logged now. */
static bool
conn_log_ok(struct conn *c)
{
    uint64_t now = ev_now_ms(c->srv->loop);
    if (now - c->log_win_ms >= LOG_WINDOW_MS) {
        conn_log_summary(c);
        c->log_win_ms = now;
        c->log_n = 0;
    }
    if (c->log_n < LOG_BURST) {
        c->log_n++;
        return true;
    }
    c->log_held++;
    return false;
}

static void conn_warn(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
conn_warn(struct conn *c, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    log_msg(LOG_WARN, "%s: %s", c->name, text);
}

/* log_rl(c, fmt, ...) logs a warning caused by peer c, rate-limited. */
#define log_rl(c, ...)                                                                             \
    do {                                                                                           \
        if ((int)LOG_WARN <= log_level_max && conn_log_ok(c))                                      \
            conn_warn((c), __VA_ARGS__);                                                           \
    } while (0)

static void conn_send_one(struct conn *c, const struct ing_msg *m);
static void conn_send_envs(struct conn *c, const struct ing_msg *m, struct sblk *blk);

/* conn_send queues m for c. */
static void
conn_send(struct conn *c, const struct ing_msg *m)
{
    if (m->type == ING_BACKEND_UPDATE_ENVIRONMENTS)
        conn_send_envs(c, m, NULL);
    else
        conn_send_one(c, m);
}

/* out_share queues pre[0..npre), a reference to blk's bytes, then post[0..npost) in c's
 * output. Returns 0 (queued, or c dropped: over --max-output, the whole of blk counted, or
 * the memory budget), or -ENOSPC when c holds SBLK_REFS references already (nothing
 * queued: the caller copies). */
static int
out_share(struct conn *c, struct sblk *blk, const void *pre, size_t npre, const void *post,
          size_t npost)
{
    if (c->state == CONN_CLOSING)
        return 0;
    if (c->oref.n == SBLK_REFS)
        return -ENOSPC;
    if (out_over(c, npre + blk->len + npost))
        return 0;
    uint8_t *p = out_reserve(c, npre + npost);
    if (p == NULL)
        return 0;
    if (npre > 0)
        memcpy(p, pre, npre);
    buf_produce(&c->out, npre);
    int rc = sblk_out_add(&c->oref, &c->out, blk);
    assert(rc == 0); /* room checked above */
    (void)rc;
    if (npost > 0)
        memcpy(buf_tail(&c->out), post, npost);
    buf_produce(&c->out, npost);
    conn_want_flush(c);
    return 0;
}

/* envs_share queues the environment list m, whose map is the whole of blk, as a reference to
 * blk (both dialects; a v0.5 - v0.6.2 ZeroMQ peer gets its own encoding, copied). Returns
 * false when it must be copied instead (nothing queued). */
static bool
envs_share(struct conn *c, const struct ing_msg *m, struct sblk *blk)
{
    if (blk == NULL || blk->len < SHARE_MIN ||
        m->u.envs.environments.p != (const char *)blk->data ||
        m->u.envs.environments.len != blk->len)
        return false;
    if (c->dialect == DIALECT_ZMQ)
        return zb_send_shared(c->z, m, blk);
    uint8_t pre[ING_HDR_LEN + 4];
    ing_frame_header(pre, ING_BACKEND_UPDATE_ENVIRONMENTS, (uint32_t)(4 + blk->len));
    put_u32be(pre + ING_HDR_LEN, (uint32_t)blk->len);
    return out_share(c, blk, pre, sizeof(pre), NULL, 0) == 0;
}

/* conn_send_envs queues the environment list m for c, shared from blk when it is large
 * (NULL: copied). A list supersedes the previous one while no byte of it is written: a
 * peer that does not read holds at most one list in its output, the newest (issue 13: a
 * copy per change made every non-reader reach --max-output). */
static void
conn_send_envs(struct conn *c, const struct ing_msg *m, struct sblk *blk)
{
    if (c->envs_len != 0 && c->envs_at >= c->out_sent &&
        c->envs_at + c->envs_len <= c->out_sent + out_pending(c) &&
        sblk_out_cut(&c->oref, &c->out, (size_t)(c->envs_at - c->out_sent),
                     (size_t)c->envs_len) == 0)
        c->srv->ms.frames_out--; /* never sent */
    size_t before = out_pending(c);
    c->envs_at = c->out_sent + before;
    if (envs_share(c, m, blk))
        c->srv->ms.frames_out++;
    else
        conn_send_one(c, m);
    c->envs_len = c->state == CONN_CLOSING || out_pending(c) < before ? 0
                                                                     : out_pending(c) - before;
}

static void
conn_send_one(struct conn *c, const struct ing_msg *m)
{
    c->srv->ms.frames_out++;
    if (m->type == ING_ERROR && m->u.error.code < METRICS_NERR)
        c->srv->ms.proto_errors[m->u.error.code]++;
    if (m->type == ING_ERROR && m->u.error.code == ING_ERR_AUTH)
        c->srv->ms.auth_failures++;
    if (c->dialect == DIALECT_ZMQ) {
        zb_send(c->z, m);
        return;
    }
    size_t n = ing_msg_size(m);
    if (n == 0) {
        log_msg(LOG_ERR, "%s: cannot encode %s", c->name, ing_msg_type_name(m->type));
        return;
    }
    uint8_t *p = out_reserve(c, n);
    if (p == NULL)
        return;
    ssize_t w = ing_msg_encode(m, p, buf_room(&c->out));
    if (w < 0) {
        log_msg(LOG_ERR, "%s: cannot encode %s: %s", c->name, ing_msg_type_name(m->type),
                strerror((int)-w));
        return;
    }
    buf_produce(&c->out, (size_t)w);
    conn_want_flush(c);
}

static void
conn_relay(struct conn *c, uint8_t type, const uint8_t *body, size_t len)
{
    c->srv->ms.frames_out++;
    if (c->dialect == DIALECT_ZMQ) {
        zb_relay(c->z, type, body, len);
        return;
    }
    if (body == NULL && type == ING_BACKEND_JOB_DONE &&
        zb_lazy_body(&c->srv->zb, type, &body, &len) != 0) {
        /* a ZeroMQ agent's result, its native body built for this native client */
        log_msg(LOG_ERR, "%s: cannot convert %s", c->name, ing_msg_type_name(type));
        return;
    }
    uint8_t *p = out_reserve(c, ING_HDR_LEN + len);
    if (p == NULL)
        return;
    ing_frame_header(p, type, (uint32_t)len);
    if (len > 0) /* an empty body may come as NULL: no memcpy from NULL */
        memcpy(p + ING_HDR_LEN, body, len);
    buf_produce(&c->out, ING_HDR_LEN + len);
    conn_want_flush(c);
}

/* error_msg fills m with Error(code, text). */
static void
error_msg(struct ing_msg *m, uint16_t code, const char *text)
{
    memset(m, 0, sizeof(*m));
    m->type = ING_ERROR;
    m->u.error.code = code;
    m->u.error.text.p = text;
    m->u.error.text.len = (uint32_t)strlen(text);
}

static void
conn_send_error(struct conn *c, uint16_t code, const char *text)
{
    struct ing_msg m;
    error_msg(&m, code, text);
    conn_send(c, &m);
}

/* Kept results a resumed session is sent at once (at most a quarter of --max-output, at
 * least one result); the next batch when its output drained (conn_flush): a session that
 * kept more than --max-output is not dropped for it. */
#define SESSION_BATCH(s) ((s)->cfg.max_output / 4 < (256u << 10) ? (s)->cfg.max_output / 4 \
                                                                  : (256u << 10))

/* out_write writes at most max bytes (> 0) of c's pending output (some pending) in one
 * call: write, or writev of the bytes and the shared blocks they refer to, in order; and
 * drops what was written. Returns as write. */
static ssize_t
out_write(struct conn *c, size_t max)
{
    ssize_t n;
    if (c->oref.n == 0) {
        size_t len = buf_len(&c->out) < max ? buf_len(&c->out) : max;
        n = write(c->io.fd, buf_head(&c->out), len);
        if (n > 0)
            buf_consume(&c->out, (size_t)n);
    } else {
        struct iovec iov[SBLK_IOV];
        int k = sblk_out_iov(&c->oref, &c->out, iov, max);
        n = writev(c->io.fd, iov, k);
        if (n > 0)
            sblk_out_advance(&c->oref, &c->out, (size_t)n);
    }
    if (n > 0) {
        c->out_sent += (uint64_t)n;
        c->srv->ms.bytes_out += (uint64_t)n;
    }
    return n;
}

/* out_drop forgets c's pending output (a failed write, a dropped peer). */
static void
out_drop(struct conn *c)
{
    buf_consume(&c->out, buf_len(&c->out));
    sblk_out_clear(&c->oref);
}

/* conn_flush writes pending output. Returns 0, or -1 if the connection was closed. */
static int
conn_flush(struct conn *c)
{
    /* A large output (a list, a large job) goes READ_CHUNK per write, within late_ok: the
     * rest at the next iterations (EV_WRITE). */
    size_t budget = WRITE_BUDGET, seen = SIZE_MAX;
    while (out_pending(c) > 0 && budget > 0) {
        bool large = out_pending(c) > READ_CHUNK;
        if (large && !late_ok(c, &c->srv->late_writer, WRITE_BUDGET - budget, &seen))
            break;
        ssize_t n = out_write(c, large && budget > READ_CHUNK ? READ_CHUNK : budget);
        if (n > 0) {
            budget -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        log_msg(LOG_INFO, "%s: write failed: %s", c->name, n < 0 ? strerror(errno) : "EOF");
        out_drop(c);
        if (c->state != CONN_CLOSING)
            conn_close(c, "write error");
        return -1;
    }
    if (c->state == CONN_CLOSING)
        return 0;
    unsigned want = (c->half_closed ? EV_HUP : EV_READ) | (out_pending(c) > 0 ? EV_WRITE : 0);
    if (ev_io_set(c->srv->loop, &c->io, want) != 0) {
        conn_close(c, "epoll error");
        return -1;
    }
    if (out_pending(c) == 0) {
        buf_shrink(&c->out, 1 << 20);
        conn_account(c);
        if (c->close_after_flush)
            conn_close(c, "closed after error");
        else if (c->half_closed && be_client_job_bytes(c->client) == 0)
            conn_close(c, "half-closed, and its jobs have ended");
        else if (c->client != NULL && be_session_resuming(c->client))
            be_session_deliver(&c->srv->be, c->client, SESSION_BATCH(c->srv));
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Close                                                                                     */

static void
tl_unlink(struct server *s, struct conn *c, int k)
{
    struct tlink *l = &c->tl[k];
    if (l->due_ms == 0)
        return;
    if (l->prev != NULL)
        l->prev->tl[k].next = l->next;
    else
        s->tl[k].head = l->next;
    if (l->next != NULL)
        l->next->tl[k].prev = l->prev;
    else
        s->tl[k].tail = l->prev;
    l->prev = l->next = NULL;
    l->due_ms = 0;
}

/* tl_push (re)places c last on list k, due at due_ms (every entry of a list has the same
 * timeout, so the list stays in deadline order). */
static void
tl_push(struct server *s, struct conn *c, int k, uint64_t due_ms)
{
    struct tlink *l = &c->tl[k];
    tl_unlink(s, c, k);
    l->due_ms = due_ms != 0 ? due_ms : 1;
    l->prev = s->tl[k].tail;
    if (s->tl[k].tail != NULL)
        s->tl[k].tail->tl[k].next = c;
    else
        s->tl[k].head = c;
    s->tl[k].tail = c;
}

static void
hs_unlink(struct server *s, struct conn *c)
{
    tl_unlink(s, c, TL_HS);
}

/* conn_close marks c closing and queues it; the backend is told and the memory freed after
 * the current batch (conn_reap), so no pointer to c dangles inside this batch. */
static void
conn_close(struct conn *c, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    be_agent_hold(c->agent); /* no job for it until conn_reap tells the backend */
    log_msg(LOG_INFO, "%s: closed (%s)", c->name, why);
    ev_io_set(c->srv->loop, &c->io, 0);
    hs_unlink(c->srv, c);
    tl_unlink(c->srv, c, TL_FRAME);
    c->cl_next = c->srv->closing;
    c->srv->closing = c;
}

/* conn_error_close sends Error and closes once it is written (best effort). */
static void
conn_error_close(struct conn *c, uint16_t code, const char *text)
{
    log_msg(LOG_WARN, "%s: %s", c->name, text);
    conn_send_error(c, code, text);
    if (c->state == CONN_CLOSING)
        return;
    if (out_pending(c) == 0) {
        conn_close(c, text);
        return;
    }
    /* Stop reading: nothing more from this peer is handled; close once written. */
    c->close_after_flush = true;
    hs_unlink(c->srv, c);
    tl_unlink(c->srv, c, TL_FRAME);
}

_Static_assert((int)DIALECT_NATIVE == (int)METRICS_DIALECT_NATIVE &&
                   (int)DIALECT_ZMQ == (int)METRICS_DIALECT_ZMQ,
               "ms.conns is indexed by the dialect");

/* conn_set_dialect records c's dialect once known, and counts c in the metrics' open
 * connections until it is reaped. */
static void
conn_set_dialect(struct conn *c, uint8_t dialect)
{
    c->dialect = dialect;
    if (!c->counted)
        c->srv->ms.conns[c->role == ING_ROLE_AGENT ? 0 : 1][dialect]++;
    c->counted = true;
}

static void
conn_reap(struct server *s)
{
    while (s->closing != NULL) {
        struct conn *c = s->closing;
        if (c->agent != NULL && s->be.lost_jobs > 0 &&
            s->be.lost_jobs + be_agent_busy(c->agent) > LOST_BATCH) {
            /* Lost agents' jobs (requeued or ended) are LOST_BATCH per iteration, whatever
             * the number of agents lost at once: the rest waits for the next one. */
            s->closing_held = true;
            arm(s, &s->lost_timer, ev_now_ms(s->loop));
            log_msg(LOG_INFO, "%s: lost with the others next (%llu lost agents' jobs handled in "
                    "this iteration)", c->name, (unsigned long long)s->be.lost_jobs);
            return;
        }
        s->closing = c->cl_next;
        if (c->agent != NULL)
            s->be.lost_jobs += be_agent_busy(c->agent);
        if (c->counted) {
            c->counted = false;
            s->ms.conns[c->role == ING_ROLE_AGENT ? 0 : 1][c->dialect]--;
        }
        if (c->client != NULL && be_client_gone(&s->be, c->client))
            arm(s, &s->reap_timer, ev_now_ms(s->loop));
        if (c->agent != NULL) {
            be_agent_gone(&s->be, c->agent);
            if (be_registering(&s->be) && s->loop != NULL) /* a removal in steps (reg_run) */
                arm(s, &s->reg_timer, ev_now_ms(s->loop));
        }
        c->client = NULL;
        c->agent = NULL;
        conn_log_summary(c);
        if (out_pending(c) > 0) { /* last words (an Error frame): one try, no wait */
            ssize_t n = out_write(c, out_pending(c));
            (void)n;
        }
        /* Read what the peer already sent: closing with unread input makes the kernel send
         * a reset, which can destroy our last words before the peer reads them. */
        shutdown(c->io.fd, SHUT_WR);
        for (int k = 0; k < 16; k++) {
            uint8_t sink[4096];
            ssize_t n = recv(c->io.fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (n <= 0)
                break;
        }
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        if (c->backlog)
            for (struct conn **pp = &s->backlog; *pp != NULL; pp = &(*pp)->bl_next)
                if (*pp == c) {
                    *pp = c->bl_next;
                    break;
                }
        /* It may still be on the pending-write list: unlink it. */
        for (struct conn **pp = &s->pending; *pp != NULL; pp = &(*pp)->pw_next)
            if (*pp == c) {
                *pp = c->pw_next;
                break;
            }
        close(c->io.fd);
        zb_close(c->z);
        c->z = NULL;
        buf_fini(&c->in);
        buf_fini(&c->out);
        sblk_out_clear(&c->oref);
        conn_account(c);
        addr_release(s, c);
        s->nconns--;
        slab_free(&s->conn_slab, c);
        if (s->lis[0].paused || s->lis[1].paused) {
            for (int i = 0; i < 2; i++)
                if (s->lis[i].paused && ev_io_set(s->loop, &s->lis[i].io, EV_READ) == 0)
                    s->lis[i].paused = false;
        }
    }
}

static void update_clock(struct server *s);

/* The journal: records are replayed through the backend at start; compaction asks it which
 * records its jobs still need. */
static int
jr_replay(void *arg, uint8_t type, const uint8_t *p, uint32_t len, journal_ref ref)
{
    (void)ref;
    return be_journal_replay(arg, type, p, len);
}

#define SRV_COMPACT_BUDGET (256u * 1024) /* bytes a compaction step reads per iteration */

/* jr_tick writes this iteration's records (one write, at most one fdatasync: group commit)
 * and takes one compaction step, then arms the timer for what is next. */
static void
jr_tick(struct server *s)
{
    struct journal *j = &s->jr;
    uint64_t now = s->be.now_ms;
    journal_set_live(j, be_journal_live_bytes(&s->be));
    /* A failure is logged once per change; this iteration's jobs are refused after all
     * (their records wait in memory, with the end records of the refusals). */
    be_journal_settle(&s->be, journal_flush(j, now));
    bool more = journal_compact_step(j, SRV_COMPACT_BUDGET, now, be_journal_relocate, &s->be);
    uint64_t next = more ? now : journal_next_ms(j);
    if (next != UINT64_MAX)
        arm(s, &s->jr_timer, next);
}

static void
before_sleep(void *arg)
{
    struct server *s = arg;
    uint64_t due;
    update_clock(s);
    mem_shed(s, 0); /* results kept for detached sessions grow past the budget */
    /* The journal first: what this iteration sends (a result, a pong) leaves after the
     * records it follows from are written (write-ahead; synced too under --fsync always). */
    if (s->be.jr != NULL)
        jr_tick(s);
    /* The environment list when due (once, whatever changed in it; a withdrawal waits
     * --env-grace), flush (which may close), then reap (which may queue output for others,
     * e.g. the crash of a lost agent's jobs), until none has anything left to do. */
    do {
        be_flush(&s->be);
        while (s->pending != NULL) {
            struct conn *c = s->pending;
            s->pending = c->pw_next;
            c->in_pending = false;
            if (c->state != CONN_CLOSING)
                conn_flush(c);
        }
        conn_reap(s);
    } while (s->pending != NULL || (s->closing != NULL && !s->closing_held) ||
             (be_flush_due(&s->be, &due) && due <= s->be.now_ms));
    s->be.lost_jobs = 0; /* a new iteration */
    s->late_reader = s->late_writer = 0;
    s->closing_held = false;
    if (be_flush_due(&s->be, &due))
        arm(s, &s->envs_timer, due);
    else if (be_flush_building(&s->be))
        arm(s, &s->envs_timer, s->be.now_ms); /* the list's build goes on */
    if (s->be.jr != NULL && (due = journal_next_ms(&s->jr)) != UINT64_MAX)
        arm(s, &s->jr_timer, due); /* records of the reaping above: the next iteration */
    log_flush(); /* lines a full stderr kept waiting (log_nonblocking) */
}

/* ---------------------------------------------------------------------------------------- */
/* Backend callbacks                                                                         */

static void
be_send(void *peer, const struct ing_msg *m)
{
    conn_send(peer, m);
}

static void
be_send_shared(void *peer, const struct ing_msg *m, struct sblk *blk)
{
    conn_send_envs(peer, m, blk);
}

static void
be_relay(void *peer, uint8_t type, const uint8_t *body, size_t len)
{
    conn_relay(peer, type, body, len);
}

static void
be_drop(void *peer, uint16_t code, const char *why)
{
    conn_error_close(peer, code, why);
}

static void hello_refused(struct conn *c, const char *why);
static void protocol_error(struct conn *c, uint16_t code, const char *fmt, uint8_t type);

/* be_registered: a hello registered in steps has ended: opened, or refused as it would have
 * been at once (a malformed environments map, which the codec does not check over
 * ING_HELLO_CHECK_MAX bytes, as the codec refuses a malformed frame). */
/* be_take hands c's input buffer over to a registration that would copy [p, p + len) of the
 * frame being handled (ops.take): the bytes after that frame move to a new input buffer
 * (bounded: at most what a wake-up reads), the large frame is not copied. The block taken
 * counts in the budget (be.held_bytes, its whole capacity) until the registration ends. */
static struct sblk *
be_take(void *peer, const void *p, size_t len)
{
    struct conn *c = peer;
    const uint8_t *head = buf_head(&c->in), *q = p;
    if (c->dialect != DIALECT_NATIVE || c->in_frame == 0 || q < head ||
        len > c->in_frame || (size_t)(q - head) > c->in_frame - len)
        return NULL;
    size_t rest = buf_len(&c->in) - c->in_frame;
    struct buf nb;
    buf_init(&nb);
    if (buf_reserve(&nb, rest > IN_FIRST ? rest : IN_FIRST) != 0)
        return NULL;
    struct sblk *block = sblk_new(c->in.data, c->in.cap, &c->srv->be.held_bytes);
    if (block == NULL) {
        buf_fini(&nb);
        return NULL;
    }
    if (rest > 0)
        memcpy(buf_tail(&nb), head + c->in_frame, rest);
    buf_produce(&nb, rest);
    c->in = nb;
    c->in_frame = 0;
    c->in_taken = true;
    c->srv->hint_conn = NULL; /* the hints point into the block */
    conn_account(c);
    return block;
}

static void
be_registered(void *peer, int rc, const char *why)
{
    struct conn *c = peer;
    if (c->state == CONN_CLOSING)
        return;
    if (rc == 0)
        hs_unlink(c->srv, c);
    else if (rc == -EBADMSG)
        protocol_error(c, ING_ERR_MALFORMED, "malformed message", ING_AGENT_HELLO);
    else
        hello_refused(c, why);
}

static void
update_clock(struct server *s)
{
    struct timespec ts;
    s->be.now_ms = ev_now_ms(s->loop);
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    s->be.wall_s = ts.tv_sec;
}

/* ---------------------------------------------------------------------------------------- */
/* Frames                                                                                    */

static void
protocol_error(struct conn *c, uint16_t code, const char *fmt, uint8_t type)
{
    char text[160];
    snprintf(text, sizeof(text), "%s (type 0x%02x %s)", fmt, type, ing_msg_type_name(type));
    log_rl(c, "%s", text);
    conn_send_error(c, code, text);
    if (++c->errors >= c->srv->cfg.max_errors)
        conn_error_close(c, ING_ERR_LIMIT, "too many protocol errors");
}

/* hints_scan looks ahead over the complete frames at p[0..n) (c's input, native dialect):
 * for up to HINTS of them that carry a job id the backend will look up (ClientNewJob and
 * ClientKillJob from a client; AgentJobStarted and AgentJobDone from an agent), it hashes
 * the id and starts loading the job-id table's line for it. With a million jobs that table
 * is far larger than the caches; the loads of the next frames then overlap the handling
 * of the current one instead of each frame waiting for memory in turn. */
static void
hints_scan(struct conn *c, const uint8_t *p, size_t n)
{
    struct server *s = c->srv;
    size_t off = 0;
    unsigned scanned = 0;
    s->hint_n = s->hint_i = 0;
    s->hint_conn = c;
    while (s->hint_n < HINTS && scanned++ < 2 * HINTS && off < n) {
        uint8_t type;
        struct ing_view id;
        size_t fl = ing_frame_job_id(p + off, n - off, &type, &id);
        if (fl == 0)
            break;
        off += fl;
        bool wanted = c->role == ING_ROLE_CLIENT
                          ? type == ING_CLIENT_NEW_JOB || type == ING_CLIENT_KILL_JOB
                          : type == ING_AGENT_JOB_STARTED || type == ING_AGENT_JOB_DONE;
        if (!wanted || id.p == NULL || id.len > BE_MAX_ID_LEN)
            continue;
        struct hint *h = &s->hint[s->hint_n++];
        h->id = id.p;
        h->len = id.len;
        h->h = be_id_hash(id);
        be_prefetch_id(&s->be, h->h);
    }
    s->hint_end = (uintptr_t)(p + off);
}

/* hint_take returns the hash of job id id of the frame c is handling: the one hints_scan
 * computed for it (same bytes of c's input), else computed now. */
static uint64_t
hint_take(struct conn *c, struct ing_view id)
{
    struct server *s = c->srv;
    if (s->hint_conn == c) {
        while (s->hint_i < s->hint_n && (uintptr_t)s->hint[s->hint_i].id < (uintptr_t)id.p)
            s->hint_i++;
        if (s->hint_i < s->hint_n && s->hint[s->hint_i].id == id.p &&
            s->hint[s->hint_i].len == id.len)
            return s->hint[s->hint_i++].h;
    }
    return be_id_hash(id);
}

/* client_session_hello opens or resumes a session (proto.md §7.9): the session's kept
 * results, then the list of its jobs. A session attached to another connection is taken
 * over: that connection is sent Error TAKEN_OVER and closed (a half-open TCP connection
 * must not keep a client from its jobs). */
static void
client_session_hello(struct conn *c, const struct ing_client_hello *h)
{
    struct backend *be = &c->srv->be;
    if (h->name.len > 255 || (h->session_flags & ~(ING_SESSION_HOLD | ING_SESSION_ACK)) != 0) {
        protocol_error(c, ING_ERR_INVALID,
                       h->name.len > 255 ? "client name over 255 bytes" : "unknown session flags",
                       ING_CLIENT_HELLO_SESSION);
        return;
    }
    const uint8_t *cur = be_client_session(c->client);
    if (cur != NULL ? memcmp(cur, h->session, ING_SESSION_ID_LEN) != 0
                    : be_client_job_bytes(c->client) > 0) {
        protocol_error(c, ING_ERR_INVALID, "a connection's jobs belong to one session",
                       ING_CLIENT_HELLO_SESSION);
        return;
    }
    struct be_client *sc = be_session_find(be, h->session);
    struct conn *old = sc != NULL ? be_client_peer(sc) : NULL;
    if (old != NULL && old != c) {
        log_msg(LOG_INFO, "%s: takes over the session of %s", c->name, old->name);
        be_session_detach(be, sc);
        old->client = NULL;
        conn_error_close(old, ING_ERR_TAKEN_OVER, "session resumed by another connection");
    }
    sc = be_session_attach(be, c->client, h->session);
    if (sc == NULL) {
        conn_send_error(c, ING_ERR_LIMIT, "no memory for a session");
        return;
    }
    c->client = sc;
    log_msg(LOG_DEBUG, "%s: session hello (%.*s)", c->name, (int)h->name.len, h->name.p);
    c->srv->iter_check = true; /* the environment list and the session's results are sent */
    c->acks = true;
    be_client_native(sc, true); /* a session's jobs are acknowledged (proto.md 7.9) */
    be_client_hello(be, sc);
    be_session_acks(sc, (h->session_flags & ING_SESSION_ACK) != 0);
    be_session_resume(be, sc, (h->session_flags & ING_SESSION_HOLD) != 0,
                      SESSION_BATCH(c->srv));
    hs_unlink(c->srv, c); /* opened */
}

static void
handle_client(struct conn *c, const struct ing_msg *m, const uint8_t *body, size_t len)
{
    c->srv->ms.frames_in++;
    struct backend *be = &c->srv->be;
    struct ing_msg reply;
    memset(&reply, 0, sizeof(reply));
    switch (m->type) {
    case ING_CLIENT_HELLO:
    case ING_CLIENT_HELLO_ACK:
        if (m->u.client_hello.name.len > 255) {
            protocol_error(c, ING_ERR_INVALID, "client name over 255 bytes", m->type);
            return;
        }
        log_msg(LOG_DEBUG, "%s: hello (%.*s)", c->name, (int)m->u.client_hello.name.len,
                m->u.client_hello.name.p);
        c->srv->iter_check = true; /* the environment list is sent */
        c->acks = m->type == ING_CLIENT_HELLO_ACK; /* the last hello decides */
        be_client_native(c->client, c->acks);
        be_client_hello(be, c->client);
        hs_unlink(c->srv, c); /* opened */
        return;
    case ING_CLIENT_HELLO_SESSION:
        client_session_hello(c, &m->u.client_hello);
        return;
    case ING_CLIENT_NEW_JOB:
    case ING_CLIENT_KILL_JOB:
    case ING_CLIENT_GET_QUEUE:
    case ING_CLIENT_GET_STATS:
    case ING_CLIENT_GET_JOB_INFO:
    case ING_CLIENT_SESSION_ACK:
    case ING_PING:
        break;
    case ING_PONG:
        return;
    case ING_ERROR:
        log_rl(c, "peer reported error %u: %.*s", m->u.error.code,
               (int)(m->u.error.text.len > 512 ? 512 : m->u.error.text.len), m->u.error.text.p);
        return;
    default:
        protocol_error(c, ING_ERR_UNEXPECTED, "message not allowed from a client", m->type);
        return;
    }
    if (!be_client_registered(c->client)) {
        reply.type = ING_UNKNOWN;
        conn_send(c, &reply);
        return;
    }
    switch (m->type) {
    case ING_CLIENT_NEW_JOB:
        if (!mem_admit(c->srv, len, false)) {
            log_rl(c, "job refused: backend memory full (%llu of %llu bytes)",
                   (unsigned long long)mem_used(c->srv), (unsigned long long)c->srv->budget);
            be_client_refuse(be, c->client, m->u.new_job.job.job_id, "Backend memory full");
            break;
        }
        if (be_client_job_bytes(c->client) + len > c->srv->cfg.max_client_bytes) {
            log_rl(c, "job refused: its jobs hold over %llu bytes (--max-job-bytes-per-client)",
                   (unsigned long long)c->srv->cfg.max_client_bytes);
            be_client_refuse(be, c->client, m->u.new_job.job.job_id,
                             "Queue full: this client's jobs hold too many bytes");
            break;
        }
        /* Acknowledged (c->acks) by the backend: at once without a journal, else once
         * before_sleep has written (and under --fsync always synced) its record. */
        (void)be_client_new_job_h(be, c->client, body, len, &m->u.new_job,
                                  hint_take(c, m->u.new_job.job.job_id));
        break;
    case ING_CLIENT_KILL_JOB:
        be_client_kill_h(be, c->client, m->u.ref.job_id, hint_take(c, m->u.ref.job_id));
        break;
    case ING_CLIENT_GET_QUEUE:
        c->srv->iter_check = true; /* linear in the queue listed */
        be_client_get_queue(be, c->client);
        break;
    case ING_CLIENT_GET_JOB_INFO:
        be_client_get_job_info(be, c->client, m->u.ref.job_id);
        break;
    case ING_CLIENT_SESSION_ACK: {
        int rc = be_session_ack(be, c->client, m->u.session_ack.count);
        if (rc != 0)
            protocol_error(c, ING_ERR_INVALID,
                           rc == -ERANGE ? "acknowledges more results than were sent"
                                         : "no session acknowledging its results",
                           m->type);
        else if (out_pending(c) == 0 && be_session_resuming(c->client))
            be_session_deliver(be, c->client, SESSION_BATCH(c->srv)); /* held for acks */
        break;
    }
    case ING_CLIENT_GET_STATS: {
        const uint8_t *p;
        size_t n;
        bool fresh;
        if (status_mp_cached(&c->srv->st, &p, &n, &fresh) != 0 ||
            n > c->srv->cfg.max_frame - 16) {
            conn_send_error(c, ING_ERR_LIMIT, "statistics unavailable (no memory)");
        } else {
            reply.type = ING_BACKEND_STATS;
            reply.u.stats.stats.p = (const char *)p;
            reply.u.stats.stats.len = (uint32_t)n;
            conn_send(c, &reply);
        }
        c->srv->iter_check |= fresh; /* a walk over every environment */
        break;
    }
    default: /* ING_PING */
        reply.type = ING_PONG;
        conn_send(c, &reply);
        break;
    }
}

/* hello_refused: a first hello refused closes the connection, rather than leaving it
 * unregistered in silence; a registered agent's bad hello is dropped: its registration stays
 * as it was. */
static void
hello_refused(struct conn *c, const char *why)
{
    log_rl(c, "AgentHello refused: %s", why);
    if (be_agent_registered(c->agent))
        conn_send_error(c, ING_ERR_INVALID, why);
    else
        conn_error_close(c, ING_ERR_INVALID, why);
}

static void
handle_agent(struct conn *c, const struct ing_msg *m, const uint8_t *body, size_t len)
{
    c->srv->ms.frames_in++;
    struct backend *be = &c->srv->be;
    struct ing_msg reply;
    char why[300];
    memset(&reply, 0, sizeof(reply));
    switch (m->type) {
    case ING_AGENT_HELLO:
    case ING_AGENT_HELLO_RESUME: { /* proto.md 7.10: the same, then its claims */
        c->srv->iter_check = true; /* environments registered and broadcast */
        int rc = m->type == ING_AGENT_HELLO
                     ? be_agent_hello(be, c->agent, &m->u.agent_hello, why, sizeof(why))
                     : be_agent_hello_resume(be, c->agent, &m->u.agent_resume, why, sizeof(why));
        if (rc == BE_HELLO_PENDING) /* registered in steps (reg_run), then be_registered */
            arm(c->srv, &c->srv->reg_timer, ev_now_ms(c->srv->loop));
        else if (rc == 0)
            hs_unlink(c->srv, c); /* opened */
        else
            hello_refused(c, why);
        return;
    }
    case ING_AGENT_JOB_STARTED:
        be_agent_started_h(be, c->agent, m->u.ref.job_id, hint_take(c, m->u.ref.job_id));
        return;
    case ING_AGENT_JOB_DONE:
        be_agent_done_h(be, c->agent, body, len, &m->u.result, hint_take(c, m->u.result.job_id));
        return;
    case ING_AGENT_JOB_SSH_DEBUG:
        be_agent_ssh(be, c->agent, body, len, &m->u.ssh);
        return;
    case ING_PONG:
        be_agent_pong(be, c->agent);
        return;
    case ING_PING:
        reply.type = ING_PONG;
        conn_send(c, &reply);
        return;
    case ING_ERROR:
        log_rl(c, "peer reported error %u: %.*s", m->u.error.code,
               (int)(m->u.error.text.len > 512 ? 512 : m->u.error.text.len), m->u.error.text.p);
        return;
    default:
        protocol_error(c, ING_ERR_UNEXPECTED, "message not allowed from an agent", m->type);
        return;
    }
}

static void
welcome(struct conn *c)
{
    struct server *s = c->srv;
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_WELCOME;
    m.u.welcome.version = ING_PROTO_VERSION;
    m.u.welcome.role = c->role;
    int ep = c->role == ING_ROLE_AGENT ? 0 : 1;
    c->authed = s->cfg.secret[ep] == NULL;
    if (!c->authed) {
        if (auth_nonce(c->nonce) != 0) {
            conn_error_close(c, ING_ERR_AUTH, "no randomness for the challenge");
            return;
        }
        m.u.welcome.flags |= ING_WELCOME_AUTH;
        memcpy(m.u.welcome.nonce, c->nonce, ING_NONCE_LEN);
    }
    if (c->role == ING_ROLE_CLIENT)
        m.u.welcome.flags |= ING_WELCOME_ACK | ING_WELCOME_SESSION | /* proto.md §7.8, §7.9 */
                             ING_WELCOME_SESSION_ACK;
    else
        m.u.welcome.flags |= ING_WELCOME_RESUME; /* AgentHelloResume known (§7.10) */
    m.u.welcome.max_frame = s->cfg.max_frame;
    m.u.welcome.heartbeat_ms = (uint32_t)s->cfg.ping_interval_ms;
    static const char server_name[] = "inginious-backend " ING_VERSION;
    m.u.welcome.server.p = server_name;
    m.u.welcome.server.len = sizeof(server_name) - 1;
    conn_send(c, &m);
}

/* ---------------------------------------------------------------------------------------- */
/* The server side of the ZeroMQ bridge (zbridge.h)                                          */

static bool input_spent(struct conn *c, unsigned *frames);

uint8_t *
srv_conn_reserve(struct conn *c, size_t n)
{
    return out_reserve(c, n);
}

void
srv_conn_produce(struct conn *c, size_t n)
{
    buf_produce(&c->out, n);
    conn_want_flush(c);
}

int
srv_conn_share(struct conn *c, struct sblk *blk, const void *pre, size_t npre, const void *post,
               size_t npost)
{
    return out_share(c, blk, pre, npre, post, npost);
}

void
srv_conn_close(struct conn *c, const char *why)
{
    conn_close(c, why);
}

void
srv_conn_close_after_flush(struct conn *c, const char *why)
{
    c->close_after_flush = true;
    if (out_pending(c) == 0)
        conn_close(c, why);
}

bool
srv_conn_reading(const struct conn *c)
{
    return c->state != CONN_CLOSING && !c->close_after_flush;
}

bool
srv_conn_live(const struct conn *c)
{
    return c->state != CONN_CLOSING;
}

bool
srv_conn_spent(struct conn *c, unsigned *frames)
{
    return input_spent(c, frames);
}

const char *
srv_conn_name(const struct conn *c)
{
    return c->name;
}

void
srv_conn_name_append(struct conn *c, const char *text)
{
    size_t n = strlen(c->name);
    snprintf(c->name + n, sizeof(c->name) - n, "%s", text);
}

int
srv_conn_opened(struct conn *c)
{
    struct server *s = c->srv;
    if (c->role == ING_ROLE_AGENT)
        c->agent = be_agent_new(&s->be, c);
    else
        c->client = be_client_new(&s->be, c);
    if (c->agent == NULL && c->client == NULL) {
        conn_close(c, "out of memory");
        return -ENOMEM;
    }
    c->state = CONN_OPEN; /* the opening ends at the hello, as a native peer's */
    return 0;
}

struct be_client *
srv_conn_client(const struct conn *c)
{
    return c->client;
}

struct be_agent *
srv_conn_agent(const struct conn *c)
{
    return c->agent;
}

void
srv_conn_dispatch(struct conn *c, const struct ing_msg *m, const uint8_t *body, size_t len)
{
    if (c->role == ING_ROLE_CLIENT)
        handle_client(c, m, body, len);
    else
        handle_agent(c, m, body, len);
}

/* handle_preamble returns bytes consumed (0: need more), or -1 when c was closed. */
static ssize_t
handle_preamble(struct conn *c, const uint8_t *p, size_t n)
{
    uint8_t version, role;
    ssize_t r = ing_preamble_decode(p, n, &version, &role);
    if (r == 0)
        return 0;
    if (r < 0) {
        conn_error_close(c, ING_ERR_PREAMBLE, "bad preamble (not an inginious peer?)");
        return -1;
    }
    if (version == 0) {
        conn_error_close(c, ING_ERR_VERSION, "unsupported protocol version 0");
        return -1;
    }
    if (role != c->role) {
        conn_error_close(c, ING_ERR_ROLE,
                         c->role == ING_ROLE_AGENT ? "this endpoint is for agents"
                                                   : "this endpoint is for clients");
        return -1;
    }
    struct backend *be = &c->srv->be;
    if (c->role == ING_ROLE_AGENT)
        c->agent = be_agent_new(be, c);
    else
        c->client = be_client_new(be, c);
    if (c->agent == NULL && c->client == NULL) {
        conn_error_close(c, ING_ERR_LIMIT, "out of memory");
        return -1;
    }
    c->state = CONN_OPEN;
    conn_set_dialect(c, DIALECT_NATIVE);
    welcome(c); /* the opening ends with the hello (handle_client, handle_agent) */
    return r;
}

/* check_auth handles the first frame of a peer that must authenticate (proto.md §6). */
static void
check_auth(struct conn *c, const struct ing_msg *m)
{
    struct server *s = c->srv;
    int ep = c->role == ING_ROLE_AGENT ? 0 : 1;
    if (m->type != ING_AUTH) {
        conn_error_close(c, ING_ERR_AUTH, "authentication required");
        return;
    }
    uint8_t want[ING_MAC_LEN];
    auth_peer_mac(s->cfg.secret[ep], s->cfg.secret_len[ep], c->role, c->nonce, m->u.auth.nonce,
                  want);
    if (!sha256_equal(want, m->u.auth.mac, ING_MAC_LEN)) {
        conn_error_close(c, ING_ERR_AUTH, "authentication failed");
        return;
    }
    c->authed = true;
    struct ing_msg ok;
    memset(&ok, 0, sizeof(ok));
    ok.type = ING_AUTH_OK;
    auth_server_mac(s->cfg.secret[ep], s->cfg.secret_len[ep], c->role, c->nonce, m->u.auth.nonce,
                    ok.u.auth_ok.mac);
    conn_send(c, &ok);
    log_msg(LOG_DEBUG, "%s: authenticated", c->name);
}

/* input_spent counts one more frame of c in this wake-up. Bounded work per wake-up: past
 * FRAME_BUDGET frames, or once the iteration has run ITER_BUDGET_US, the rest of c's input
 * waits on the backlog for the next iteration, after the other peers had their turn. The
 * clock is read before the 33rd, 65th, ... frame, and after every frame that can cost far
 * more than 1/32 of the budget (s->iter_check: a queue snapshot, a hello, a frame of
 * HEAVY_FRAME bytes or more). Every peer with input handles at least one frame per
 * iteration, and at least 32 cheap ones, so none starves. Returns true when c must stop. */
static bool
input_spent(struct conn *c, unsigned *frames)
{
    struct server *s = c->srv;
    ++*frames;
    c->spent++;
    bool look = *frames > 1 && (s->iter_check || (*frames & 31) == 1);
    s->iter_check = false;
    if (*frames <= FRAME_BUDGET && (!look || !ev_iter_longer_than(s->loop, ITER_BUDGET_US)))
        return false;
    if (!c->backlog) {
        c->backlog = true;
        c->bl_next = s->backlog;
        s->backlog = c;
        arm(s, &s->backlog_timer, ev_now_ms(s->loop));
    }
    return true;
}

/* process_input handles every complete frame in c->in. */
static void
process_input(struct conn *c)
{
    struct server *s = c->srv;
    unsigned frames = 0;
    s->hint_conn = NULL; /* hints are only good within this call: the buffer may move after */
    while (c->state != CONN_CLOSING && !c->close_after_flush && buf_len(&c->in) > 0) {
        if (input_spent(c, &frames))
            return;
        const uint8_t *p = buf_head(&c->in);
        size_t n = buf_len(&c->in);
        if (c->dialect == DIALECT_ZMQ) {
            zb_input(c->z, &c->in);
            return;
        }
        if (c->state == CONN_PREAMBLE && p[0] == 0xFF) {
            c->z = zb_open(&s->zb, c, c->role,
                           s->cfg.secret[c->role == ING_ROLE_AGENT ? 0 : 1] != NULL);
            if (c->z != NULL)
                conn_set_dialect(c, DIALECT_ZMQ);
            continue;
        }
        if (c->state == CONN_PREAMBLE) {
            ssize_t r = handle_preamble(c, p, n);
            if (r <= 0)
                return;
            buf_consume(&c->in, (size_t)r);
            c->frames++;
            continue;
        }
        if (!c->authed) {
            /* Before authentication only a 64-byte Auth is acceptable: refuse anything else
             * from its header, before reading or reserving anything for its body. */
            uint8_t type;
            uint32_t blen;
            if (ing_frame_peek(p, n, &type, &blen) != 0)
                return;
            if (type != ING_AUTH || blen != 2 * ING_NONCE_LEN || p[5] != 0 /* flags */) {
                conn_error_close(c, ING_ERR_AUTH, "authentication required");
                return;
            }
        }
        if (c->authed && (s->hint_conn != c || (uintptr_t)p >= s->hint_end) && be_lookahead(&s->be))
            hints_scan(c, p, n);
        struct ing_msg m;
        ssize_t r = ing_msg_decode(p, n, s->cfg.max_frame, &m);
        if (r == 0)
            return; /* the input grows as the rest arrives (conn_on_io), within the budget */
        if (r == -EMSGSIZE) {
            uint8_t type;
            uint32_t blen;
            ing_frame_peek(p, n, &type, &blen);
            char text[120];
            snprintf(text, sizeof(text), "frame of %u bytes over the maximum of %u", blen,
                     s->cfg.max_frame);
            conn_error_close(c, ING_ERR_TOO_BIG, text);
            return;
        }
        if (r < 0) {
            /* Bad flags or an unknown type are reported from the header alone: skip the
             * frame only once all of it is here. */
            uint8_t type;
            uint32_t blen;
            ing_frame_peek(p, n, &type, &blen);
            if (n < ING_HDR_LEN + (size_t)blen)
                return; /* skipped once all of it is here */
            protocol_error(c, r == -ENOMSG ? ING_ERR_UNKNOWN_TYPE : ING_ERR_MALFORMED,
                           r == -ENOMSG ? "unknown message type" : "malformed message", type);
            buf_consume(&c->in, ING_HDR_LEN + (size_t)blen);
            c->frames++;
            continue;
        }
        const uint8_t *body = p + ING_HDR_LEN;
        size_t blen = (size_t)r - ING_HDR_LEN;
        c->frames++;
        if (!c->authed) {
            check_auth(c, &m);
            buf_consume(&c->in, (size_t)r);
            continue;
        }
        if ((size_t)r >= HEAVY_FRAME)
            s->iter_check = true;
        if (c->role == ING_ROLE_CLIENT)
            handle_client(c, &m, body, blen);
        else {
            c->in_frame = (size_t)r;
            handle_agent(c, &m, body, blen);
            c->in_frame = 0;
        }
        if (c->in_taken) /* be_take: the frame left with the old buffer */
            c->in_taken = false;
        else
            buf_consume(&c->in, (size_t)r);
        /* A peer that pipelines many requests: write as we go rather than let its replies
         * pile up to the output limit within one batch. */
        if (out_pending(c) > s->cfg.max_output / 2 && c->state != CONN_CLOSING)
            conn_flush(c);
    }
    if (buf_len(&c->in) == 0)
        buf_shrink(&c->in, IN_KEEP);
}

/* conn_input handles the complete frames in c's input (either dialect), then notes whether
 * an incomplete frame is left: one must complete within --frame-timeout of the previous
 * frame (or of its first byte after a pause), whatever its size. */
static void
conn_input(struct conn *c)
{
    struct server *s = c->srv;
    uint64_t frames = c->frames, spent = c->spent;
    if (c->dialect == DIALECT_ZMQ)
        zb_input(c->z, &c->in);
    else
        process_input(c);
    if (c->state == CONN_CLOSING)
        return;
    conn_account(c);
    if (buf_len(&c->in) == 0 || c->backlog || c->close_after_flush) {
        tl_unlink(s, c, TL_FRAME);
        return;
    }
    /* ZeroMQ units are not counted one by one: a unit handled shows as a second call of
     * input_spent within the same pass. */
    bool progress = c->dialect == DIALECT_ZMQ ? c->spent - spent >= 2 : c->frames != frames;
    if (progress || c->tl[TL_FRAME].due_ms == 0)
        tl_push(s, c, TL_FRAME, ev_now_ms(s->loop) + s->cfg.frame_timeout_ms);
}

/* conn_peer_closed: the peer shut down its side. A native client with jobs may have only
 * half-closed (shutdown(SHUT_WR)): it is served until its jobs end (proto.md §8). TCP tells a
 * closed peer from a half-closed one only when it is written to: it gets one Pong, which a
 * closed peer answers with a reset (EPOLLHUP, then conn_on_io closes it). Anyone else is
 * closed. */
static void
conn_peer_closed(struct conn *c)
{
    if (c->role == ING_ROLE_CLIENT && c->dialect == DIALECT_NATIVE && c->state == CONN_OPEN &&
        c->client != NULL && !c->close_after_flush && buf_len(&c->in) == 0 &&
        be_client_job_bytes(c->client) > 0 && be_client_session(c->client) == NULL) {
        log_msg(LOG_INFO, "%s: half-closed: served until its jobs end", c->name);
        c->half_closed = true;
        struct ing_msg probe = {.type = ING_PONG};
        conn_send(c, &probe);
        conn_flush(c); /* reads no more, watches for a reset */
        return;
    }
    conn_close(c, buf_len(&c->in) > 0 ? "peer closed in the middle of a frame" : "peer closed");
}

static void
conn_on_io(void *arg, unsigned events)
{
    struct conn *c = arg;
    struct server *s = c->srv;
    update_clock(s);
    if (c->state == CONN_CLOSING)
        return;
    if (events & EV_WRITE) {
        uint64_t before = c->out_sent;
        if (conn_flush(c) != 0)
            return;
        if (c->out_sent > before) /* the peer read some: an agent is alive */
            be_agent_alive(c->agent);
    }
    if ((events & EV_READ) && c->half_closed) {
        conn_close(c, "peer gone after its half-close");
        return;
    }
    if (!(events & EV_READ) || c->close_after_flush || c->backlog)
        return;
    size_t budget = READ_BUDGET, seen = SIZE_MAX;
    while (budget > 0 && c->state != CONN_CLOSING &&
           (!in_large(c) || late_ok(c, &s->late_reader, READ_BUDGET - budget, &seen))) {
        /* Grow the input as bytes arrive (never by a frame's announced length): an idle
         * peer holds IN_FIRST bytes, a busy one READ_CHUNK, a large frame what it sent. */
        size_t want = 0;
        if (c->in.cap >= READ_CHUNK)
            want = buf_room(&c->in) < READ_CHUNK ? READ_CHUNK : 0; /* large reads */
        else if (buf_room(&c->in) < IN_FIRST / 2)
            want = c->in.cap < IN_FIRST ? IN_FIRST : c->in.cap; /* doubles up to READ_CHUNK */
        if (want > 0) {
            bool reserve = c->agent != NULL && be_agent_registered(c->agent);
            int rc = conn_grow(c, &c->in, want, reserve);
            if (rc == -EOVERFLOW) {
                log_msg(LOG_WARN, "%s: backend memory full (%llu of %llu bytes): input refused",
                        c->name, (unsigned long long)mem_used(s), (unsigned long long)s->budget);
                conn_error_close(c, ING_ERR_OVERLOAD, "backend memory full");
                return;
            }
            if (rc != 0) {
                conn_close(c, "out of memory");
                return;
            }
        }
        size_t room = buf_room(&c->in) < budget ? buf_room(&c->in) : budget;
        if (room > READ_CHUNK && c->in.cap >= READ_CHUNK)
            room = READ_CHUNK; /* a large frame: the clock looked at between reads */
        ssize_t n = read(c->io.fd, buf_tail(&c->in), room);
        if (n > 0) {
            c->srv->ms.bytes_in += (uint64_t)n;
            buf_produce(&c->in, (size_t)n);
            be_agent_alive(c->agent); /* bytes from an agent: it is alive (issue 13 #15) */
            budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
            conn_input(c);
            if (c->backlog)
                break; /* read more once the backlog is handled */
            if ((size_t)n < room)
                break; /* the socket is drained */
            continue;
        }
        if (n == 0) {
            conn_peer_closed(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        char why[80];
        snprintf(why, sizeof(why), "read error: %s", strerror(errno));
        conn_close(c, why);
        return;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Accept                                                                                    */

/* refuse_fd answers a connection we do not take with Error(code, text), then closes it. */
static void
refuse_fd(int fd, uint16_t code, const char *text)
{
    uint8_t frame[ING_HDR_LEN + 2 + 4 + 64];
    struct ing_msg m;
    error_msg(&m, code, text);
    ssize_t w = ing_msg_encode(&m, frame, sizeof(frame));
    if (w > 0) {
        ssize_t k = write(fd, frame, (size_t)w);
        (void)k;
    }
    close(fd);
}

/* Connections per address (--max-connections-per-address): a table of counts keyed by the
 * peer's IP address (IPv4-mapped IPv6 addresses as IPv4; unix peers are not counted). */

static void
addr_key_of(const struct net_addr *a, uint8_t key[17])
{
    memset(key, 0, 17);
    if (a->family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        key[0] = 4;
        memcpy(key + 1, &in->sin_addr, 4);
    } else if (a->family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(&in6->sin6_addr, mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, (const uint8_t *)&in6->sin6_addr + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, &in6->sin6_addr, 16);
        }
    }
}

static size_t
addr_home(const struct server *s, const uint8_t *key)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 1099511628211ull;
    return (size_t)(h ^ h >> 29) & s->addr_mask;
}

static size_t
addr_slot(const struct server *s, const uint8_t *key)
{
    size_t i = addr_home(s, key);
    while (s->addrs[i].n != 0 && memcmp(s->addrs[i].key, key, 17) != 0)
        i = (i + 1) & s->addr_mask;
    return i;
}

/* addr_full tells whether key already has its --max-connections-per-address. */
static bool
addr_full(const struct server *s, const uint8_t *key)
{
    return s->addrs != NULL && key[0] != 0 &&
           s->addrs[addr_slot(s, key)].n >= s->cfg.max_conns_per_addr;
}

static void
addr_take(struct server *s, struct conn *c, const uint8_t *key)
{
    if (s->addrs == NULL || key[0] == 0)
        return;
    size_t i = addr_slot(s, key);
    memcpy(s->addrs[i].key, key, 17);
    s->addrs[i].n++;
    memcpy(c->addr_key, key, 17);
}

static void
addr_release(struct server *s, struct conn *c)
{
    if (s->addrs == NULL || c->addr_key[0] == 0)
        return;
    size_t i = addr_slot(s, c->addr_key);
    c->addr_key[0] = 0;
    if (s->addrs[i].n == 0 || --s->addrs[i].n > 0)
        return;
    /* Backward-shift deletion: move up the entries of the run whose home is not in (i, j]. */
    for (size_t j = (i + 1) & s->addr_mask; s->addrs[j].n != 0; j = (j + 1) & s->addr_mask) {
        size_t h = addr_home(s, s->addrs[j].key);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            s->addrs[i] = s->addrs[j];
            s->addrs[j].n = 0;
            i = j;
        }
    }
}

/* conn_adopt makes the accepted socket fd (non-blocking) a connection of the given role. */
static int
conn_adopt(struct server *s, struct conn *c, int fd, uint8_t role)
{
    memset(c, 0, sizeof(*c));
    c->srv = s;
    c->role = role;
    c->state = CONN_PREAMBLE;
    c->id = ++s->next_id;
    buf_init(&c->in);
    buf_init(&c->out);
    sblk_out_init(&c->oref);
    struct net_addr pa;
    char addr[100] = "?";
    if (net_peer(fd, &pa) == 0)
        net_format(&pa, addr, sizeof(addr));
    snprintf(c->name, sizeof(c->name), "%s %llu (%s)", role == ING_ROLE_AGENT ? "agent" : "client",
             (unsigned long long)c->id, addr);
    ev_io_init(&c->io, fd, conn_on_io, c);
    if (ev_io_set(s->loop, &c->io, EV_READ) != 0) {
        close(fd);
        slab_free(&s->conn_slab, c);
        return -1;
    }
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    tl_push(s, c, TL_HS, ev_now_ms(s->loop) + s->cfg.handshake_timeout_ms);
    log_msg(LOG_DEBUG, "%s: connected", c->name);
    if (s->cfg.zmq_greet_first && s->cfg.secret[role == ING_ROLE_AGENT ? 0 : 1] == NULL) {
        c->z = zb_open(&s->zb, c, role, false); /* our greeting at once, as libzmq */
        if (c->z != NULL)
            conn_set_dialect(c, DIALECT_ZMQ);
    }
    return 0;
}

static void
listener_on_io(void *arg, unsigned events)
{
    struct listener *l = arg;
    struct server *s = l->srv;
    (void)events;
    update_clock(s);
    for (int i = 0; i < ACCEPT_BUDGET && !s->draining; i++) {
        int fd = net_accept(l->fd);
        if (fd == -EAGAIN)
            return;
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                log_msg(LOG_ERR, "accept on %s: %s: pausing until a connection closes", l->addr,
                        strerror(-fd));
                ev_io_set(s->loop, &l->io, 0);
                l->paused = true;
            }
            return;
        }
        int ep = l->role == ING_ROLE_AGENT ? 0 : 1;
        struct net_addr pa;
        memset(&pa, 0, sizeof(pa));
        bool known = net_peer(fd, &pa) == 0;
        if (s->cfg.nallow[ep] > 0) {
            if (!known ||
                !acl_match(s->cfg.allow[ep], s->cfg.nallow[ep], (struct sockaddr *)&pa.ss)) {
                char addr[100] = "?";
                net_format(&pa, addr, sizeof(addr));
                log_msg(LOG_WARN, "%s: connection from %s refused (not in the allow-list)", l->addr,
                        addr);
                close(fd);
                continue;
            }
        }
        uint8_t key[17];
        addr_key_of(&pa, key);
        if (!known)
            key[0] = 0;
        if (addr_full(s, key)) {
            char addr[100] = "?";
            net_format(&pa, addr, sizeof(addr));
            if (l->log_n++ < LOG_BURST)
                log_msg(LOG_WARN, "%s: connection from %s refused: %u connections from its "
                        "address (--max-connections-per-address)", l->addr, addr,
                        s->cfg.max_conns_per_addr);
            refuse_fd(fd, ING_ERR_LIMIT, "too many connections from this address");
            continue;
        }
        if (!mem_admit(s, IN_FIRST, false)) {
            if (l->log_n++ < LOG_BURST)
                log_msg(LOG_WARN, "%s: connection refused: backend memory full", l->addr);
            refuse_fd(fd, ING_ERR_OVERLOAD, "backend memory full");
            continue;
        }
        struct conn *c = NULL;
        if (s->nconns >= s->cfg.max_conns || (c = slab_alloc(&s->conn_slab)) == NULL) {
            if (l->log_n++ < LOG_BURST)
                log_msg(LOG_WARN, "%s: connection refused: %u connections (limit)", l->addr,
                        s->nconns);
            refuse_fd(fd, ING_ERR_LIMIT, "too many connections");
            continue;
        }
        if (conn_adopt(s, c, fd, l->role) == 0)
            addr_take(s, c, key);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Timers, drain and signals                                                                 */

/* backlog_run gives each backlogged connection one more budget of frames. */
static void
backlog_run(void *arg)
{
    struct server *s = arg;
    struct conn *list = s->backlog;
    s->backlog = NULL;
    update_clock(s);
    while (list != NULL) {
        struct conn *c = list;
        list = c->bl_next;
        c->backlog = false;
        if (c->state != CONN_CLOSING)
            conn_input(c);
    }
}

/* envs_due wakes the loop: the environment list is due (before_sleep sends it); also the
 * journal's timer (before_sleep writes it). */
static void
envs_due(void *arg)
{
    (void)arg;
}

/* reap_run drops another batch of the jobs of clients that left with many. */
/* lost_due wakes the loop: lost agents wait (before_sleep reaps them). */
static void
lost_due(void *arg)
{
    update_clock(arg);
}

/* REG_STEP_US: a registration's work per loop iteration (then the loop serves the others),
 * in units of REG_UNITS (an environment each: about a microsecond). */
#define REG_STEP_US 500
#define REG_UNITS 128

/* reg_run does a step of the registration under way (be_register). */
static void
reg_run(void *arg)
{
    struct server *s = arg;
    update_clock(s);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (!be_register(&s->be, REG_UNITS))
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000 >= REG_STEP_US)
            break;
    }
    arm(s, &s->reg_timer, ev_now_ms(s->loop));
}

static void
reap_run(void *arg)
{
    struct server *s = arg;
    update_clock(s);
    if (be_reap(&s->be, BE_REAP_BATCH))
        arm(s, &s->reap_timer, ev_now_ms(s->loop));
}

static void
ping_tick(void *arg)
{
    struct server *s = arg;
    update_clock(s);
    be_ping_tick(&s->be);
    if (be_registering(&s->be)) /* an agent removed for missed pings, in steps (reg_run) */
        arm(s, &s->reg_timer, ev_now_ms(s->loop));
    arm(s, &s->ping_timer, ev_now_ms(s->loop) + s->cfg.ping_interval_ms);
}

static void finish(struct server *s);

static void
tick(void *arg)
{
    struct server *s = arg;
    update_clock(s);
    uint64_t now = ev_now_ms(s->loop);
    be_timeouts(&s->be);
    be_session_tick(&s->be);
    while (s->tl[TL_HS].head != NULL && s->tl[TL_HS].head->tl[TL_HS].due_ms <= now) {
        struct conn *c = s->tl[TL_HS].head;
        hs_unlink(s, c);
        conn_error_close(c, ING_ERR_TIMEOUT, "opening handshake not finished in time");
    }
    while (s->tl[TL_FRAME].head != NULL && s->tl[TL_FRAME].head->tl[TL_FRAME].due_ms <= now) {
        struct conn *c = s->tl[TL_FRAME].head;
        tl_unlink(s, c, TL_FRAME);
        log_msg(LOG_WARN, "%s: %zu bytes of an incomplete frame for %llu ms: dropped", c->name,
                buf_len(&c->in), (unsigned long long)s->cfg.frame_timeout_ms);
        conn_error_close(c, ING_ERR_TIMEOUT, "frame not completed in time");
    }
    for (int i = 0; i < 2; i++) {
        struct listener *l = &s->lis[i];
        if (l->paused && ev_io_set(s->loop, &l->io, EV_READ) == 0)
            l->paused = false;
        if (l->log_n > LOG_BURST)
            log_msg(LOG_WARN, "%s: ... %u more connections refused like this", l->addr,
                    l->log_n - LOG_BURST);
        l->log_n = 0;
    }
    if (s->draining && s->be.n_running == 0)
        finish(s);
    if (!s->finished)
        arm(s, &s->tick_timer, now + s->tick_ms);
}

/* finish ends the drain: every job left gets its crash, every peer an Error SHUTDOWN. */
static void
finish(struct server *s)
{
    if (s->finished)
        return;
    update_clock(s);
    s->finishing = true;
    /* With a journal, the jobs of sessions stay in it for the next start, and their clients
     * resume them; the others end here, journaled as ended (proto.md 7.6). */
    if (s->be.jr != NULL) /* this iteration's jobs are written (and acknowledged) first */
        be_journal_settle(&s->be, journal_flush(&s->jr, UINT64_MAX / 2));
    be_fail_all(&s->be, "Backend shutting down");
    if (s->be.jr != NULL) {
        be_journal_settle(&s->be, journal_flush(&s->jr, UINT64_MAX / 2));
        s->be.jr = NULL;
    }
    for (struct conn *c = s->conns; c != NULL; c = c->next)
        if (c->state == CONN_OPEN)
            conn_send_error(c, ING_ERR_SHUTDOWN, "the backend is shutting down");
    /* Give the last messages a chance to leave (bounded). */
    for (int round = 0; round < 50; round++) {
        bool left = false;
        for (struct conn *c = s->conns; c != NULL; c = c->next)
            if (c->state != CONN_CLOSING && out_pending(c) > 0) {
                conn_flush(c);
                left |= out_pending(c) > 0;
            }
        if (!left)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    s->finished = true;
    log_msg(LOG_INFO, "shutdown complete");
    ev_stop(s->loop);
}

/* sd_tell sends a notification to the service manager (cfg.notify); a failure is logged
 * once, the service manager being the one to act on missing notifications. */
static void
sd_tell(struct server *s, const char *text)
{
    int rc = sd_notify_send(&s->sd, text);
    if (rc != 0 && !s->sd_warned) {
        s->sd_warned = true;
        log_msg(LOG_WARN, "systemd notification not sent: %s", strerror(-rc));
    }
}

/* sd_status_text writes the STATUS= line: the queue figures. */
static void
sd_status_text(const struct server *s, char *out, size_t len)
{
    snprintf(out, len, "STATUS=%s%u agents, %u clients, %llu jobs waiting, %llu running",
             s->draining ? "draining: " : "", s->be.n_agents, s->be.n_clients,
             (unsigned long long)s->be.n_waiting, (unsigned long long)s->be.n_running);
}

/* sd_tick: WATCHDOG=1 from the loop itself (a stalled loop misses it), and STATUS= when the
 * figures changed. */
static void
sd_tick(void *arg)
{
    struct server *s = arg;
    char text[sizeof(s->sd_status) + 16], status[sizeof(s->sd_status)];
    uint64_t period = SRV_STATUS_MS;
    update_clock(s);
    sd_status_text(s, status, sizeof(status));
    bool changed = strcmp(status, s->sd_status) != 0;
    if (changed)
        memcpy(s->sd_status, status, sizeof(status));
    if (s->sd.watchdog_us != 0) {
        uint64_t half = s->sd.watchdog_us / 2000;
        period = half < 1 ? 1 : half < period ? half : period;
    }
    snprintf(text, sizeof(text), "%s%s%s", s->sd.watchdog_us != 0 ? "WATCHDOG=1" : "",
             s->sd.watchdog_us != 0 && changed ? "\n" : "", changed ? status : "");
    if (text[0] != '\0')
        sd_tell(s, text);
    if (ev_timer_start(s->loop, &s->sd_timer, ev_now_ms(s->loop) + period) != 0)
        log_msg(LOG_ERR, "out of memory: no more STATUS= or WATCHDOG=1 notifications");
}

static void
drain_expired(void *arg)
{
    struct server *s = arg;
    log_msg(LOG_WARN, "drain timeout: %llu jobs still running",
            (unsigned long long)s->be.n_running);
    finish(s);
}

void
srv_shutdown(struct server *s)
{
    if (s->draining)
        return;
    s->draining = true;
    log_msg(LOG_INFO, "longest loop iteration so far: %llu us",
            (unsigned long long)ev_max_iter_us(s->loop));
    log_msg(LOG_INFO, "shutting down: no more dispatch, %llu running jobs may finish (%llu ms)",
            (unsigned long long)s->be.n_running, (unsigned long long)s->cfg.drain_timeout_ms);
    sd_tell(s, "STOPPING=1\nSTATUS=draining");
    be_drain(&s->be);
    for (int i = 0; i < 2; i++)
        ev_io_set(s->loop, &s->lis[i].io, 0);
    if (s->be.n_running == 0) {
        finish(s);
        return;
    }
    arm(s, &s->drain_timer, ev_now_ms(s->loop) + s->cfg.drain_timeout_ms);
}

void
srv_stop(struct server *s)
{
    s->finished = true;
    ev_stop(s->loop);
}

int
srv_reload(struct server *s)
{
    char err[512] = "";
    if (s->cfg.reload == NULL) {
        log_msg(LOG_INFO, "reload: no secret or allow-list file to re-read");
        return 0;
    }
    struct srv_config next = s->cfg;
    if (s->cfg.reload(s->cfg.reload_arg, &next, err, sizeof(err)) != 0) {
        log_msg(LOG_ERR, "reload refused, the settings in use are kept: %s", err);
        return -EINVAL;
    }
    for (int ep = 0; ep < 2; ep++) {
        s->cfg.secret[ep] = next.secret[ep];
        s->cfg.secret_len[ep] = next.secret_len[ep];
        s->cfg.allow[ep] = next.allow[ep];
        s->cfg.nallow[ep] = next.nallow[ep];
    }
    log_msg(LOG_INFO, "reloaded: agents %s, %zu allow-list entries; clients %s, %zu entries",
            s->cfg.secret[0] != NULL ? "need a secret" : "need no secret", s->cfg.nallow[0],
            s->cfg.secret[1] != NULL ? "need a secret" : "need no secret", s->cfg.nallow[1]);
    return 0;
}

static void
on_signal(void *arg, unsigned events)
{
    struct server *s = arg;
    struct signalfd_siginfo si;
    (void)events;
    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) { /* never stops the backend, draining or not */
            log_msg(LOG_INFO, "SIGHUP received: reloading");
            update_clock(s);
            srv_reload(s);
            continue;
        }
        if (s->draining) {
            log_msg(LOG_WARN, "signal %u during shutdown: exiting now", si.ssi_signo);
            srv_stop(s);
            return;
        }
        log_msg(LOG_INFO, "signal %u received", si.ssi_signo);
        srv_shutdown(s);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Setup                                                                                     */

void
srv_config_default(struct srv_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    be_config_default(&cfg->be);
    journal_config_default(&cfg->journal);
    cfg->agent_addr = "tcp://127.0.0.1:2001";
    cfg->client_addr = "tcp://127.0.0.1:2000";
    cfg->max_frame = ING_MAX_FRAME_DEFAULT;
    cfg->max_output = 16ull << 20;
    cfg->max_conns = 10000;
    cfg->frame_timeout_ms = 30000;
    cfg->max_errors = 100;
    cfg->ping_interval_ms = 1000;
    cfg->handshake_timeout_ms = 10000;
    cfg->drain_timeout_ms = 30000;
    httpd_config_default(&cfg->metrics);
    cfg->metrics_max_envs = 100;
}

static uint64_t
min_nz(uint64_t a, uint64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

static int
write_port_file(struct server *s, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->cfg.port_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "agent %s\nclient %s\n", s->lis[0].addr, s->lis[1].addr);
    if (s->httpd != NULL)
        fprintf(f, "metrics %s\n", httpd_bound_addr(s->httpd));
    if (fclose(f) != 0 || rename(tmp, s->cfg.port_file) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", s->cfg.port_file, strerror(errno));
        return -1;
    }
    return 0;
}

/* default_budget: a quarter of the physical memory, between 256 MiB and 16 GiB. */
static uint64_t
default_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t b = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 4 : 0;
    if (b < (256ull << 20))
        b = 256ull << 20;
    return b > (16ull << 30) ? 16ull << 30 : b;
}

/* fit_descriptors raises RLIMIT_NOFILE to what --max-connections needs (plus FD_RESERVE for
 * listeners, logs and the like), or lowers the cap to what the hard limit allows. */
static void
fit_descriptors(struct server *s)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)s->cfg.max_conns + FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
    if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = was;
    if (rl.rlim_cur > was)
        log_msg(LOG_INFO, "descriptor limit raised from %llu to %llu", (unsigned long long)was,
                (unsigned long long)rl.rlim_cur);
    if (rl.rlim_cur < need) {
        uint32_t cap = rl.rlim_cur > 2 * FD_RESERVE ? (uint32_t)(rl.rlim_cur - FD_RESERVE)
                                                    : (uint32_t)(rl.rlim_cur / 2);
        log_msg(LOG_WARN, "descriptor limit %llu (hard limit %llu): --max-connections lowered "
                "from %u to %u", (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max, s->cfg.max_conns, cap);
        s->cfg.max_conns = cap;
    }
}

/* malloc_no_deferred_frees: glibc keeps small freed chunks apart, unmerged ("fastbins"), and
 * merges all of them at once at the next large allocation or free: after 32 agents of 10,000
 * environments left (an environment is a few small allocations, freed in steps as the list
 * is pruned) that one free took 19 ms of a loop iteration. Without fastbins each free merges
 * its own chunk (bounded work), the thread cache still serving the frequent sizes. */
static void
malloc_no_deferred_frees(void)
{
#ifdef M_MXFAST
    mallopt(M_MXFAST, 0);
#endif
}

struct server *
srv_new(const struct srv_config *cfg, char *err, size_t errlen)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.be.max_frame = cfg->max_frame;
    s->sigfd = -1;
    s->sd.fd = -1;
    s->lis[0].fd = s->lis[1].fd = -1;
    zb_init(&s->zb, &s->be, cfg->max_frame, cfg->job_field);
    s->zb.kill_state = cfg->zmq_kill_state;
    slab_init(&s->conn_slab, sizeof(struct conn));
    s->budget = cfg->max_memory != 0 ? cfg->max_memory : default_budget();
    if (s->cfg.max_client_bytes == 0)
        s->cfg.max_client_bytes = s->budget / 4;
    fit_descriptors(s);
    if (cfg->max_conns_per_addr > 0) {
        size_t n = 64;
        while (n < 2 * (size_t)s->cfg.max_conns)
            n *= 2;
        s->addrs = calloc(n, sizeof(*s->addrs));
        if (s->addrs == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        s->addr_mask = n - 1;
    }
    struct be_ops ops = {be_send, be_relay, be_drop, be_registered, be_take, be_send_shared};
    s->cfg.be.lost_batch = LOST_BATCH;
    s->cfg.be.session_unacked_max = 4 * s->cfg.max_output; /* (at most 256 GiB) */
    s->loop = ev_new();
    if (s->loop == NULL || be_init(&s->be, &s->cfg.be, &ops) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->journal_dir != NULL) {
        update_clock(s);
        /* The job table sized once for what the journal may hold (a waiting 128-byte job
         * takes some 280 bytes there): no doubling and rehashing in the middle of it. */
        (void)be_journal_reserve(&s->be, journal_dir_bytes(cfg->journal_dir) / 256);
        if (journal_open(&s->jr, cfg->journal_dir, &cfg->journal, jr_replay, &s->be, err,
                         errlen) != 0)
            goto fail;
        s->jr_on = true;
        s->be.jr = &s->jr;
        be_journal_replayed(&s->be);
        s->be.jr_settled = s->be.arrival_seq; /* the replayed jobs are on disk */
        signal(SIGXFSZ, SIG_IGN); /* a file-size limit is a write error (EFBIG), not death */
        log_msg(LOG_INFO, "journal %s: %llu waiting jobs restored", cfg->journal_dir,
                (unsigned long long)s->be.n_waiting);
        if (s->be.jr_skipped > 0)
            log_msg(LOG_WARN, "journal %s: %llu jobs could not be restored", cfg->journal_dir,
                    (unsigned long long)s->be.jr_skipped);
    }
    const char *addrs[2] = {cfg->agent_addr, cfg->client_addr};
    for (int i = 0; i < 2; i++) {
        struct listener *l = &s->lis[i];
        struct net_addr a;
        l->srv = s;
        l->role = i == 0 ? ING_ROLE_AGENT : ING_ROLE_CLIENT;
        if (cfg->listen_fd[i] > 0) { /* socket activation: the service manager's socket */
            l->fd = cfg->listen_fd[i];
        } else {
            if (net_parse(addrs[i], &a, err, errlen) != 0)
                goto fail;
            l->fd = net_listen(&a, 1024, cfg->ipv6_only ? NET_V6ONLY : 0);
            if (l->fd == -EADDRINUSE && a.family == AF_UNIX) {
                snprintf(err, errlen, "cannot listen on %s: another process is listening there",
                         addrs[i]);
                goto fail;
            }
            if (l->fd < 0) {
                snprintf(err, errlen, "cannot listen on %s: %s", addrs[i], strerror(-l->fd));
                goto fail;
            }
            l->bound = a;
            net_unix_stamp(&a, &l->stamp);
        }
        struct net_addr b;
        if (net_bound(l->fd, &b) == 0)
            net_format(&b, l->addr, sizeof(l->addr));
        ev_io_init(&l->io, l->fd, listener_on_io, l);
        if (ev_io_set(s->loop, &l->io, EV_READ) != 0) {
            snprintf(err, errlen, "epoll: %s", strerror(errno));
            goto fail;
        }
    }
    if (cfg->handle_signals) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGHUP);
        sigprocmask(SIG_BLOCK, &set, NULL);
        s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (s->sigfd < 0) {
            snprintf(err, errlen, "signalfd: %s", strerror(errno));
            goto fail;
        }
        ev_io_init(&s->sig_io, s->sigfd, on_signal, s);
        int rc = ev_io_set(s->loop, &s->sig_io, EV_READ);
        if (rc != 0) {
            /* Never leave SIGTERM blocked with nobody reading it. */
            snprintf(err, errlen, "epoll (signals): %s", strerror(-rc));
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            goto fail;
        }
    }
    if (cfg->notify && sd_notify_open(&s->sd, err, errlen) < 0)
        goto fail;
    signal(SIGPIPE, SIG_IGN);
    malloc_no_deferred_frees();
    ev_set_before_sleep(s->loop, before_sleep, s);
    uint64_t now = ev_now_ms(s->loop);
    ev_timer_init(&s->ping_timer, ping_tick, s);
    ev_timer_init(&s->tick_timer, tick, s);
    ev_timer_init(&s->drain_timer, drain_expired, s);
    ev_timer_init(&s->backlog_timer, backlog_run, s);
    ev_timer_init(&s->reap_timer, reap_run, s);
    ev_timer_init(&s->reg_timer, reg_run, s);
    ev_timer_init(&s->envs_timer, envs_due, s);
    ev_timer_init(&s->lost_timer, lost_due, s);
    ev_timer_init(&s->jr_timer, envs_due, s);
    uint64_t t = min_nz(cfg->ping_interval_ms, cfg->handshake_timeout_ms / 4);
    t = min_nz(t, cfg->be.kill_timeout_ms / 4);
    t = min_nz(t, cfg->be.orphan_timeout_ms / 4);
    t = min_nz(t, cfg->frame_timeout_ms / 4);
    s->tick_ms = t < 5 ? 5 : t > 1000 ? 1000 : t;
    if (ev_timer_start(s->loop, &s->ping_timer, now + cfg->ping_interval_ms) != 0 ||
        ev_timer_start(s->loop, &s->tick_timer, now + s->tick_ms) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    status_init(&s->st, &s->be, &s->ms, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9,
                cfg->metrics_max_envs);
    if (cfg->metrics.addr != NULL) {
        struct httpd_config hc = cfg->metrics;
        hc.admit = http_admit; /* its connections and answers are in the budget */
        hc.admit_arg = s;
        s->httpd = httpd_new(s->loop, &hc, &s->st, &s->ms, err, errlen);
        if (s->httpd == NULL)
            goto fail;
        log_msg(LOG_INFO, "metrics on http://%s/metrics", httpd_bound_addr(s->httpd) + 6);
    }
    if (cfg->port_file != NULL && write_port_file(s, err, errlen) != 0)
        goto fail;
    log_msg(LOG_INFO, "inginious-backend %s: agents on %s, clients on %s", ING_VERSION,
            s->lis[0].addr, s->lis[1].addr);
    if (s->sd.fd >= 0) {
        char ready[sizeof(s->sd_status) + 16];
        sd_status_text(s, s->sd_status, sizeof(s->sd_status));
        snprintf(ready, sizeof(ready), "READY=1\n%s", s->sd_status);
        sd_tell(s, ready);
        ev_timer_init(&s->sd_timer, sd_tick, s);
        uint64_t first = s->sd.watchdog_us != 0 ? s->sd.watchdog_us / 2000 : SRV_STATUS_MS;
        if (first > SRV_STATUS_MS)
            first = SRV_STATUS_MS;
        if (ev_timer_start(s->loop, &s->sd_timer, now + (first > 0 ? first : 1)) != 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    return s;
fail:
    srv_free(s);
    return NULL;
}

void
srv_free(struct server *s)
{
    if (s == NULL)
        return;
    for (struct conn *c = s->conns; c != NULL; c = c->next)
        if (c->state != CONN_CLOSING) {
            c->state = CONN_CLOSING;
            if (s->loop != NULL)
                ev_io_set(s->loop, &c->io, 0);
            c->cl_next = s->closing;
            s->closing = c;
        }
    do { /* every one, LOST_BATCH lost jobs at a time */
        s->be.lost_jobs = 0;
        conn_reap(s);
    } while (s->closing != NULL);
    httpd_free(s->httpd);
    status_fini(&s->st);
    s->be.jr = NULL; /* the jobs freed below are not ended: they stay journaled */
    if (s->loop != NULL)
        be_fini(&s->be);
    if (s->jr_on)
        journal_close(&s->jr);
    for (int i = 0; i < 2; i++)
        if (s->lis[i].fd >= 0) {
            close(s->lis[i].fd);
            net_unix_release(&s->lis[i].bound, &s->lis[i].stamp);
        }
    if (s->sigfd >= 0)
        close(s->sigfd);
    sd_notify_close(&s->sd);
    ev_free(s->loop);
    slab_fini(&s->conn_slab);
    zb_fini(&s->zb);
    free(s->addrs);
    free(s);
}

int
srv_run_once(struct server *s, int timeout_ms)
{
    if (s->finished)
        return 1;
    int rc = ev_run_once(s->loop, timeout_ms);
    if (rc < 0)
        return rc;
    metrics_hist_observe(&s->ms.loop, ev_last_iter_us(s->loop));
    return s->finished ? 1 : 0;
}

int
srv_run(struct server *s)
{
    while (!s->finished) {
        int rc = ev_run_once(s->loop, -1);
        if (rc < 0)
            return rc;
        metrics_hist_observe(&s->ms.loop, ev_last_iter_us(s->loop));
    }
    before_sleep(s);
    return 0;
}

struct backend *
srv_backend(struct server *s)
{
    return &s->be;
}

const char *
srv_bound_addr(const struct server *s, bool agents)
{
    return s->lis[agents ? 0 : 1].addr;
}

int
srv_adopt(struct server *s, int fd, uint8_t role)
{
    struct conn *c;
    if (s->nconns >= s->cfg.max_conns || (c = slab_alloc(&s->conn_slab)) == NULL) {
        close(fd);
        return -EMFILE;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        close(fd);
        slab_free(&s->conn_slab, c);
        return -errno;
    }
    return conn_adopt(s, c, fd, role) == 0 ? 0 : -EIO;
}

const char *
srv_metrics_addr(const struct server *s)
{
    return s->httpd != NULL ? httpd_bound_addr(s->httpd) : NULL;
}

uint64_t
srv_max_iter_us(const struct server *s)
{
    return ev_max_iter_us(s->loop);
}

uint64_t
srv_mem_used(const struct server *s)
{
    return mem_used(s);
}

uint64_t
srv_budget(const struct server *s)
{
    return s->budget;
}
