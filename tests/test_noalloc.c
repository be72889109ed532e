/* SPDX-License-Identifier: MIT */
/* test_noalloc.c: once warm, the steady-state path submit -> dispatch -> started -> done
 * makes no heap allocation in the server, over the native protocol and over the ZeroMQ
 * dialect (a ZMTP client and agent speaking INGInious' msgpack). The server runs in-process (srv_adopt on
 * socketpairs); malloc, calloc and realloc are wrapped by the linker (-Wl,--wrap) and
 * counted while jobs flow. Skipped in the sanitizer build, where slabs pass every object to
 * malloc on purpose.
 *
 * The same wrap injects failures (failing_from): the out-of-memory paths of the server
 * (a new loop, a new connection, input and output that must grow, a job body) each end in a
 * clear refusal, and the server serves everyone once memory is back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/fixtures.h"
#include "log.h"
#include "sblk.h"
#include "server.h"
#include "zmq_msg.h"
#include "zmtp.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

static bool counting;
static size_t nalloc;
static size_t failing_from; /* 0: none; else every request of at least this many bytes fails */
static size_t failing_to;   /* with failing_from: 0, or the first size that succeeds again */

static bool
fails(size_t n)
{
    return failing_from != 0 && n >= failing_from && (failing_to == 0 || n < failing_to);
}

void *
__wrap_malloc(size_t n)
{
    nalloc += counting;
    if (fails(n))
        return NULL;
    return __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t m)
{
    nalloc += counting;
    if (fails(n * m))
        return NULL;
    return __real_calloc(n, m);
}

void *
__wrap_realloc(void *p, size_t n)
{
    nalloc += counting;
    if (fails(n))
        return NULL;
    return __real_realloc(p, n);
}

struct tpipe {
    int fd;
    uint8_t in[1 << 16];
    size_t len;
};

static struct server *srv;

static void
send_msg(struct tpipe *t, const struct ing_msg *m)
{
    uint8_t buf[4096];
    ssize_t n = ing_msg_encode(m, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(write(t->fd, buf, (size_t)n), n);
}

/* pump runs one server iteration and reads what t received. */
static void
pump(struct tpipe *t)
{
    assert_true(srv_run_once(srv, 0) >= 0);
    ssize_t n = recv(t->fd, t->in + t->len, sizeof(t->in) - t->len, MSG_DONTWAIT);
    if (n > 0)
        t->len += (size_t)n;
    else
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* recv_msg runs the server until t has a complete frame, decodes it into m (views into
 * t->in, valid until the next call) and returns its type. */
static uint8_t
recv_msg(struct tpipe *t, struct ing_msg *m, size_t *consumed)
{
    for (int round = 0; round < 10000; round++) {
        if (t->len > 0) {
            ssize_t r = ing_msg_decode(t->in, t->len, 1 << 20, m);
            assert_true(r >= 0);
            if (r > 0) {
                *consumed = (size_t)r;
                return m->type;
            }
        }
        pump(t);
    }
    fail_msg("no message");
    return 0;
}

static uint8_t
next_type(struct tpipe *t, struct ing_msg *m)
{
    size_t used = 0;
    uint8_t type = recv_msg(t, m, &used);
    memmove(t->in, t->in + used, t->len - used);
    t->len -= used;
    return type;
}

/* adopt_pair gives the server one end of a new socket pair as a peer of role; t gets the
 * other. */
static void
adopt_pair(struct tpipe *t, uint8_t role)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(srv_adopt(srv, sv[0], role), 0);
    t->fd = sv[1];
    t->len = 0;
}

static void
open_peer(struct tpipe *t, uint8_t role)
{
    adopt_pair(t, role);
    uint8_t pre[ING_PREAMBLE_LEN];
    ing_preamble_encode(pre, role);
    assert_int_equal(write(t->fd, pre, sizeof(pre)), (ssize_t)sizeof(pre));
    struct ing_msg m;
    assert_int_equal(next_type(t, &m), ING_WELCOME);
}

/* A dialect of the steady-state test: how a peer connects, sends and receives. */
struct dialect {
    void (*open)(struct tpipe *t, uint8_t role);
    void (*send)(struct tpipe *t, const struct ing_msg *m);
    uint8_t (*next)(struct tpipe *t, struct ing_msg *m);
};

static const struct dialect native = {open_peer, send_msg, next_type};

static unsigned nkeys; /* > 0: job i has launcher "k<i % nkeys>" (fair share by launcher) */
static bool sess_ack;  /* the client opens a session that acknowledges results (7.9) */

static void
one_job(const struct dialect *d, struct tpipe *c, struct tpipe *a, unsigned i, const uint8_t *inp,
        size_t inlen)
{
    char key[16] = "bench";
    if (nkeys > 0)
        snprintf(key, sizeof(key), "k%u", i % nkeys);
    char id[32];
    int idlen = snprintf(id, sizeof(id), "job-%08u", i);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.launcher = (struct ing_view){key, (uint32_t)strlen(key)};
    struct ing_job_spec *s = &m.u.new_job.job;
    s->job_id = (struct ing_view){id, (uint32_t)idlen};
    s->course_id = (struct ing_view){"c", 1};
    s->task_id = (struct ing_view){"t", 1};
    s->environment_type = (struct ing_view){"docker", 6};
    s->environment = (struct ing_view){"default", 7};
    s->task_problems = s->environment_parameters = (struct ing_view){"\x80", 1};
    s->inputdata = (struct ing_view){(const char *)inp, (uint32_t)inlen};
    d->send(c, &m);
    struct ing_msg got;
    assert_int_equal(d->next(a, &got), ING_BACKEND_NEW_JOB);
    assert_true(ing_view_eq(got.u.job.job_id, id));
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_STARTED;
    m.u.ref.job_id = (struct ing_view){id, (uint32_t)idlen};
    d->send(a, &m);
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    struct ing_job_result *r = &m.u.result;
    r->job_id = (struct ing_view){id, (uint32_t)idlen};
    r->result_kind = (struct ing_view){"success", 7};
    r->result_text = (struct ing_view){"all good", 8};
    r->grade = 100.0;
    r->problems = r->tests = r->custom = (struct ing_view){"\x80", 1};
    r->state = (struct ing_view){"", 0};
    r->stdout_ = (struct ing_view){"out", 3};
    d->send(a, &m);
    if (sess_ack)
        assert_int_equal(d->next(c, &got), ING_BACKEND_JOB_ACCEPTED);
    assert_int_equal(d->next(c, &got), ING_BACKEND_JOB_STARTED);
    assert_int_equal(d->next(c, &got), ING_BACKEND_JOB_DONE);
    assert_true(ing_view_eq(got.u.result.job_id, id));
    if (sess_ack) { /* the result was kept until this */
        memset(&m, 0, sizeof(m));
        m.type = ING_CLIENT_SESSION_ACK;
        m.u.session_ack.count = i + 1; /* every job gave one result on this connection */
        d->send(c, &m);
    }
}

/* ---- the ZeroMQ dialect (issue 19): a ZMTP DEALER speaking INGInious' msgpack ---- */

/* zsend encodes m as INGInious does and writes it as one ZMTP frame (no allocation). */
static void
zsend(struct tpipe *t, const struct ing_msg *m)
{
    uint8_t buf[4096];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, buf + ZMTP_HDR_MAX, sizeof(buf) - ZMTP_HDR_MAX);
    assert_int_equal(zmq_msg_encode(m, &w, ZMQ_JOB_FIELD_COURSE_ID), 0);
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, w.len, false);
    memcpy(buf + ZMTP_HDR_MAX - hl, hdr, hl);
    ssize_t n = (ssize_t)(hl + w.len);
    assert_int_equal(write(t->fd, buf + ZMTP_HDR_MAX - hl, (size_t)n), n);
}

/* zunit returns the size of the complete ZMTP unit at t->in (a frame or a command), 0 if
 * incomplete; *body / *blen / *flags describe it. */
static size_t
zunit(const struct tpipe *t, const uint8_t **body, size_t *blen, uint8_t *flags)
{
    if (t->len < 2)
        return 0;
    size_t hl = t->in[0] & ZMTP_F_LONG ? 9 : 2;
    if (t->len < hl)
        return 0;
    uint64_t bl = 0;
    if (hl == 2)
        bl = t->in[1];
    else
        for (int i = 1; i < 9; i++)
            bl = bl << 8 | t->in[i];
    if (t->len - hl < bl)
        return 0;
    *body = t->in + hl;
    *blen = (size_t)bl;
    *flags = t->in[0];
    return hl + (size_t)bl;
}

static void
zdrop(struct tpipe *t, size_t used)
{
    memmove(t->in, t->in + used, t->len - used);
    t->len -= used;
}

/* znext_type returns the type of the next message t receives (ZMTP commands skipped),
 * decoded into m, and drops it from t's input, as next_type does. */
static uint8_t
znext_type(struct tpipe *t, struct ing_msg *m)
{
    for (int round = 0; round < 10000; round++) {
        const uint8_t *b;
        size_t bl;
        uint8_t fl;
        size_t u = zunit(t, &b, &bl, &fl);
        if (u == 0) {
            pump(t);
            continue;
        }
        if (!(fl & ZMTP_F_COMMAND))
            assert_int_equal(zmq_msg_decode(b, bl, m, NULL), 0);
        zdrop(t, u);
        if (!(fl & ZMTP_F_COMMAND))
            return m->type;
    }
    fail_msg("no message");
    return 0;
}

static void
zopen_peer(struct tpipe *t, uint8_t role)
{
    adopt_pair(t, role);
    uint8_t hs[ZMTP_GREETING_LEN + 64];
    zmtp_greeting(hs);
    ssize_t rl = zmtp_ready(hs + ZMTP_GREETING_LEN, 64, "DEALER");
    assert_true(rl > 0);
    ssize_t n = ZMTP_GREETING_LEN + rl;
    assert_int_equal(write(t->fd, hs, (size_t)n), n);
    for (int round = 0; round < 10000 && t->len < ZMTP_GREETING_LEN; round++)
        pump(t);
    assert_true(t->len >= ZMTP_GREETING_LEN);
    assert_int_equal(t->in[0], 0xff);
    zdrop(t, ZMTP_GREETING_LEN);
    const uint8_t *b;
    size_t bl, u = 0;
    uint8_t fl;
    for (int round = 0; round < 10000 && (u = zunit(t, &b, &bl, &fl)) == 0; round++)
        pump(t);
    assert_true(u > 0 && (fl & ZMTP_F_COMMAND) && bl > 6 && memcmp(b, "\x05READY", 6) == 0);
    zdrop(t, u);
}

static const struct dialect zmq = {zopen_peer, zsend, znext_type};

/* steady_state runs jobs through a client and an agent of dialect d, with fair share mode
 * fair over keys launchers: once warm jobs have run, counted more make no allocation. */
static void
steady_state(const struct dialect *d, unsigned warm, unsigned counted, enum fair_mode fair,
             unsigned keys)
{
    nkeys = keys;
    log_level_max = LOG_WARN;
    struct srv_config cfg;
    srv_config_default(&cfg);
    cfg.be.fair_mode = fair;
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    cfg.ping_interval_ms = 3600 * 1000; /* no Ping in the middle of a job (slow valgrind run) */
    char err[256];
    srv = srv_new(&cfg, err, sizeof(err));
    assert_non_null(srv);
    static struct tpipe c, a; /* 64 KiB of input each */
    d->open(&c, ING_ROLE_CLIENT);
    d->open(&a, ING_ROLE_AGENT);
    struct ing_msg m, got;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name = (struct ing_view){"me", 2};
    if (sess_ack) {
        m.type = ING_CLIENT_HELLO_SESSION;
        memset(m.u.client_hello.session, 0x5a, ING_SESSION_ID_LEN);
        m.u.client_hello.session_flags = ING_SESSION_ACK;
    }
    d->send(&c, &m);
    assert_int_equal(d->next(&c, &got), ING_BACKEND_UPDATE_ENVIRONMENTS);
    if (sess_ack)
        assert_int_equal(d->next(&c, &got), ING_BACKEND_SESSION_JOBS);
    uint8_t envs[128];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, envs, sizeof(envs));
    fx_envs(&w, "default");
    assert_int_equal(w.err, 0);
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = (struct ing_view){"A", 1};
    m.u.agent_hello.slots = 4;
    m.u.agent_hello.environments = (struct ing_view){(const char *)envs, (uint32_t)w.len};
    d->send(&a, &m);
    assert_int_equal(d->next(&c, &got), ING_BACKEND_UPDATE_ENVIRONMENTS);
    uint8_t inp[200];
    ing_mp_writer_init(&w, inp, sizeof(inp));
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "q");
    char pad[150];
    memset(pad, 'x', sizeof(pad));
    ing_mp_put_str(&w, pad, sizeof(pad));
    assert_int_equal(w.err, 0);
    unsigned i = 0;
    counting = true; /* the first jobs do allocate: proves the counter sees the server */
    for (; i < 10; i++)
        one_job(d, &c, &a, i, inp, w.len);
    counting = false;
    assert_true(nalloc > 0);
    nalloc = 0;
    for (; i < warm; i++) /* warm up: slabs, tables and buffers reach their size */
        one_job(d, &c, &a, i, inp, w.len);
    counting = true;
    for (; i < warm + counted; i++)
        one_job(d, &c, &a, i, inp, w.len);
    counting = false;
    assert_int_equal(nalloc, 0);
    close(c.fd);
    close(a.fd);
    srv_free(srv);
}

static void
test_noalloc_steady_state_lifecycle(void **state)
{
    (void)state;
#if defined(ING_SAN) && ING_SAN
    skip();
#endif
    steady_state(&native, 3000, 10000, FAIR_NONE, 0);
}

/* Fair share: a key seen before costs no allocation (its record comes from a slab). */
static void
test_noalloc_fair_share(void **state)
{
    (void)state;
#if defined(ING_SAN) && ING_SAN
    skip();
#endif
    steady_state(&native, 2000, 4000, FAIR_LAUNCHER, 7);
}

/* A session acknowledging its results: each result is kept (from the jobs' pool) until the
 * client's ClientSessionAck, and that costs no allocation once warm either. */
static void
test_noalloc_session_ack(void **state)
{
    (void)state;
#if defined(ING_SAN) && ING_SAN
    skip();
#endif
    sess_ack = true;
    steady_state(&native, 2000, 4000, FAIR_NONE, 0);
    sess_ack = false;
}

static void
test_noalloc_steady_state_zmq(void **state)
{
    (void)state;
#if defined(ING_SAN) && ING_SAN
    skip();
#endif
    steady_state(&zmq, 2000, 4000, FAIR_NONE, 0); /* a few seconds under valgrind */
}

/* ---------------------------------------------------------------------------------------- */
/* The memory budget: what a hello registered in steps holds */

static struct server *oom_server(void);
static struct server *server_max_output(uint64_t max_output);
static struct server *server_with(uint64_t max_output, uint64_t max_memory);
static void hello(struct tpipe *c);

/* big_envs_named writes into w (dynamic) a docker environments map of n names prefix%06u;
 * big_envs names them budget-env-%06u. */
static void
big_envs_named(struct ing_mp_writer *w, const char *prefix, uint32_t n)
{
    char name[32];
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, 1);
    ing_mp_put_cstr(w, "docker");
    ing_mp_put_map(w, n);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "%s%06u", prefix, i);
        ing_mp_put_cstr(w, name);
        fx_env_entry(w);
    }
    assert_int_equal(w->err, 0);
}

static void
big_envs(struct ing_mp_writer *w, uint32_t n)
{
    big_envs_named(w, "budget-env-", n);
}

/* send_all writes p[0..n) to fd, running the server as it goes (a socket pair holds less). */
static void
send_all(int fd, const void *p, size_t n)
{
    size_t off = 0;
    for (int round = 0; round < 1000000 && off < n; round++) {
        ssize_t k = send(fd, (const uint8_t *)p + off, n - off, MSG_DONTWAIT);
        if (k > 0)
            off += (size_t)k;
        else
            assert_true(srv_run_once(srv, 0) >= 0);
    }
    assert_int_equal(off, n);
}

/* send_big_hello sends AgentHello{name, 1 slot, the environments in envs} on fd. */
static void
send_big_hello(int fd, const char *name, const struct ing_mp_writer *envs)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = (struct ing_view){name, (uint32_t)strlen(name)};
    m.u.agent_hello.slots = 1;
    m.u.agent_hello.environments = (struct ing_view){(const char *)envs->buf, (uint32_t)envs->len};
    size_t n = ing_msg_size(&m);
    uint8_t *frame = malloc(n);
    assert_non_null(frame);
    assert_int_equal(ing_msg_encode(&m, frame, n), (ssize_t)n);
    send_all(fd, frame, n);
    free(frame);
}

/* held_until_registered runs the server until the hello being read is registering, checks
 * that the budget counts at least want bytes held for it (be.held_bytes, in srv_mem_used),
 * then runs it to the end: only the environment list's block stays held. */
static void
held_until_registered(uint64_t want)
{
    struct backend *be = srv_backend(srv);
    int round = 0;
    for (; round < 100000 && !be_registering(be); round++)
        assert_true(srv_run_once(srv, 0) >= 0);
    assert_true(be_registering(be));
    uint64_t list = be->envs_blk != NULL ? be->envs_blk->len : 0;
    assert_true(be->held_bytes >= list + want);
    assert_true(srv_mem_used(srv) >= be->held_bytes);
    for (round = 0; round < 100000 && (be_registering(be) || be->n_agents == 0 ||
                                       be->envs_dirty || be_flush_building(be));
         round++)
        assert_true(srv_run_once(srv, 1) >= 0);
    assert_false(be_registering(be));
    assert_non_null(be->envs_blk);
    assert_int_equal(be->held_bytes, be->envs_blk->len);
}

/* Item 2 of the shared list's work (issue 13): a large native hello's input buffer, taken
 * over by its registration (no copy), counts in --max-memory until the registration ends;
 * a ZeroMQ agent's large hello, whose frames the ZMTP layer reassembled, is copied, and
 * the copy counts the same way. */
static void
test_budget_held_hellos(void **state)
{
    (void)state;
    srv = oom_server();
    struct tpipe *a = malloc(sizeof(*a)), *z = malloc(sizeof(*z));
    assert_non_null(a);
    assert_non_null(z);
    struct ing_mp_writer w;
    big_envs(&w, 4000); /* over BE_REG_INLINE_BYTES: registered in steps */
    assert_true(w.len > 64 * 1024);
    /* Native: the frame read into the agent's input, taken over. */
    open_peer(a, ING_ROLE_AGENT);
    send_big_hello(a->fd, "A", &w);
    held_until_registered(w.len);
    /* ZeroMQ: the same hello in the dialect. */
    zopen_peer(z, ING_ROLE_AGENT);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = (struct ing_view){"Z", 1};
    m.u.agent_hello.slots = 1;
    m.u.agent_hello.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
    struct ing_mp_writer zw;
    ing_mp_writer_init_dyn(&zw);
    assert_int_equal(zmq_msg_encode(&m, &zw, ZMQ_JOB_FIELD_COURSE_ID), 0);
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, zw.len, false);
    assert_int_equal(write(z->fd, hdr, hl), (ssize_t)hl);
    send_all(z->fd, zw.buf, zw.len);
    ing_mp_writer_fini(&zw);
    held_until_registered(w.len);
    ing_mp_writer_fini(&w);
    close(a->fd);
    close(z->fd);
    free(a);
    free(z);
    srv_free(srv);
}

/* next_list runs the server until fd has received a whole BackendUpdateEnvironments (other
 * frames skipped) into the growing buffer *buf (*len bytes in it) and returns the length of
 * its environments map; the frames read are dropped from *buf. */
static uint32_t
next_list(int fd, uint8_t **buf, size_t *len, size_t *cap)
{
    for (int round = 0; round < 1000000; round++) {
        struct ing_msg m;
        ssize_t r = *len > 0 ? ing_msg_decode(*buf, *len, 1u << 30, &m) : 0;
        assert_true(r >= 0);
        if (r > 0) {
            uint32_t n = m.type == ING_BACKEND_UPDATE_ENVIRONMENTS ? m.u.envs.environments.len : 0;
            memmove(*buf, *buf + r, *len - (size_t)r);
            *len -= (size_t)r;
            if (n > 0)
                return n;
            continue;
        }
        if (*cap - *len < 65536) {
            *cap = *cap * 2 + 65536;
            *buf = realloc(*buf, *cap);
            assert_non_null(*buf);
        }
        assert_true(srv_run_once(srv, 0) >= 0);
        ssize_t k = recv(fd, *buf + *len, *cap - *len, MSG_DONTWAIT);
        if (k > 0)
            *len += (size_t)k;
        else
            assert_true(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
    fail_msg("no environment list");
    return 0;
}

/* A native agent's large hello, its input taken over by the registration (counted in
 * --max-memory), whose connection closes while it is being registered: the registration
 * lets it go and the memory it held is counted no more (be.held_bytes back to the list's
 * block alone); a hello after it registers and is counted the same way. */
static void
test_budget_held_hello_abandoned(void **state)
{
    (void)state;
    srv = oom_server();
    struct backend *be = srv_backend(srv);
    struct tpipe *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    assert_true(a != NULL && b != NULL);
    struct ing_mp_writer w;
    big_envs(&w, 20000); /* registered in steps, over several iterations */
    open_peer(a, ING_ROLE_AGENT);
    send_big_hello(a->fd, "A", &w);
    for (int round = 0; round < 100000 && !be_registering(be); round++)
        assert_true(srv_run_once(srv, 0) >= 0);
    assert_true(be_registering(be));
    assert_true(be->held_bytes >= w.len); /* its input, taken over */
    close(a->fd); /* its EOF is read before the registration's next step */
    for (int round = 0; round < 100000 && be_registering(be); round++)
        assert_true(srv_run_once(srv, 1) >= 0);
    assert_false(be_registering(be));
    assert_int_equal(be->n_agents, 0); /* abandoned, never registered */
    assert_int_equal(be->held_bytes, be->envs_blk != NULL ? be->envs_blk->len : 0);
    open_peer(b, ING_ROLE_AGENT);
    send_big_hello(b->fd, "B", &w);
    held_until_registered(w.len);
    ing_mp_writer_fini(&w);
    close(b->fd);
    free(a);
    free(b);
    srv_free(srv);
}

/* small_client opens a registered client on a socket pair with a few KiB of buffers on
 * both sides (a slow reader's), into t. */
static void
small_client(struct tpipe *t)
{
    int sv[2], small = 4096;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    assert_int_equal(srv_adopt(srv, sv[0], ING_ROLE_CLIENT), 0);
    t->fd = sv[1];
    t->len = 0;
    uint8_t pre[ING_PREAMBLE_LEN];
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    assert_int_equal(write(t->fd, pre, sizeof(pre)), (ssize_t)sizeof(pre));
    struct ing_msg m;
    assert_int_equal(next_type(t, &m), ING_WELCOME);
    hello(t);
}

/* The --max-output rule with a shared list: a client's pending output counts the part of a
 * shared list it has not read. One client reads; the other never does (socket buffers of a
 * few KiB): its first list (72 KiB, over SHARE_MIN) stays mostly unwritten, the next one
 * (which cannot replace it: part of it is written) takes its pending output over
 * --max-output (1.5 lists), and it is dropped; the reader gets every list whole. */
static void
test_budget_shared_list_output_limit(void **state)
{
    (void)state;
    struct ing_mp_writer w;
    big_envs(&w, 4000);
    const uint64_t max_output = 4000 * 18 * 3 / 2; /* 1.5 lists of 4,000 names of 17 bytes */
    srv = server_max_output(max_output);
    struct tpipe *rd = malloc(sizeof(*rd)), *stuck = malloc(sizeof(*stuck));
    struct tpipe *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    assert_true(rd != NULL && stuck != NULL && a != NULL && b != NULL);
    open_peer(rd, ING_ROLE_CLIENT);
    hello(rd);
    small_client(stuck); /* the non-reader */
    struct ing_msg m, got;
    size_t cap = 0, len = 0;
    uint8_t *buf = NULL;
    open_peer(a, ING_ROLE_AGENT);
    send_big_hello(a->fd, "A", &w);
    size_t list = next_list(rd->fd, &buf, &len, &cap);
    assert_true(list >= 64 * 1024 && list <= max_output); /* shared; one fits */
    for (int i = 0; i < 100; i++) /* the non-reader's socket fills */
        assert_true(srv_run_once(srv, 0) >= 0);
    uint8_t probe;
    assert_int_equal(recv(stuck->fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT), 1); /* open */
    /* A change: the next list goes to both; the non-reader is over its limit. */
    open_peer(b, ING_ROLE_AGENT);
    struct ing_mp_writer one;
    big_envs_named(&one, "other-", 1);
    send_big_hello(b->fd, "B", &one);
    ing_mp_writer_fini(&one);
    assert_true(next_list(rd->fd, &buf, &len, &cap) > list); /* one name more, whole */
    bool closed = false;
    for (int round = 0; round < 100000 && !closed; round++) { /* read it all: then EOF */
        uint8_t sink[65536];
        ssize_t k = recv(stuck->fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            closed = true;
        else if (k < 0)
            assert_true(srv_run_once(srv, 0) >= 0);
    }
    assert_true(closed);
    /* The reader is still served. */
    memset(&m, 0, sizeof(m));
    m.type = ING_PING;
    send_msg(rd, &m);
    rd->len = 0;
    assert_int_equal(next_type(rd, &got), ING_PONG);
    free(buf);
    ing_mp_writer_fini(&w);
    int fds[] = {rd->fd, stuck->fd, a->fd, b->fd};
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    free(rd);
    free(stuck);
    free(a);
    free(b);
    srv_free(srv);
}

/* settle runs the server until agents agents are registered and no registration, list
 * build or list sending is under way. */
static void
settle(uint64_t agents)
{
    struct backend *be = srv_backend(srv);
    for (int round = 0; round < 100000 && (be->n_agents < agents || be_registering(be) ||
                                           be->envs_dirty || be_flush_building(be) ||
                                           be->envs_sending);
         round++)
        assert_true(srv_run_once(srv, 1) >= 0);
    assert_false(be_registering(be) || be->envs_dirty || be_flush_building(be));
}

/* The shared list replaced many times while a client reads it a few KiB at a time, and
 * another, which never reads, closes with references pending half way: each block is freed
 * once no output refers to it any more. At the end only the current list's block is
 * counted in --max-memory (be.held_bytes, in srv_mem_used): back to the baseline. */
static void
test_budget_lists_replaced_slow_reader(void **state)
{
    (void)state;
    enum { CHANGES = 24 };
    srv = oom_server();
    struct backend *be = srv_backend(srv);
    struct tpipe *slow = malloc(sizeof(*slow)), *stuck = malloc(sizeof(*stuck));
    struct tpipe *a = malloc(sizeof(*a)), *ag[CHANGES];
    assert_true(slow != NULL && stuck != NULL && a != NULL);
    small_client(slow);
    small_client(stuck);
    struct ing_mp_writer w;
    big_envs(&w, 4000); /* a list of 72 KiB: shared */
    open_peer(a, ING_ROLE_AGENT);
    send_big_hello(a->fd, "A", &w);
    settle(1);
    assert_true(be->envs_blk != NULL && be->envs_blk->len >= 64 * 1024);
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    bool older_held = false; /* a replaced list was still held by an output at some point */
    for (int k = 0; k < CHANGES; k++) {
        ag[k] = malloc(sizeof(*ag[k]));
        assert_non_null(ag[k]);
        open_peer(ag[k], ING_ROLE_AGENT);
        char name[16];
        snprintf(name, sizeof(name), "chg%02d-", k);
        struct ing_mp_writer one;
        big_envs_named(&one, name, 1);
        send_big_hello(ag[k]->fd, name, &one);
        ing_mp_writer_fini(&one);
        for (int r = 0; r < 8; r++) { /* a few iterations; the slow client reads 4 KiB */
            assert_true(srv_run_once(srv, 0) >= 0);
            if (cap - len < 4096) {
                cap = cap * 2 + 65536;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            ssize_t n = recv(slow->fd, buf + len, 4096, MSG_DONTWAIT);
            if (n > 0)
                len += (size_t)n;
            older_held |= be->envs_blk != NULL && be->held_bytes > be->envs_blk->len;
        }
        if (k == CHANGES / 2) {
            close(stuck->fd); /* its references pending: released when it is reaped */
            stuck->fd = -1;
        }
    }
    assert_true(older_held);
    settle(1 + CHANGES);
    uint32_t want = (uint32_t)be->envs_blk->len, got;
    int lists = 0;
    do { /* every list whole, the newest last */
        got = next_list(slow->fd, &buf, &len, &cap);
        lists++;
    } while (got != want && lists < CHANGES + 2);
    assert_int_equal(got, want);
    for (int r = 0; r < 4; r++)
        assert_true(srv_run_once(srv, 0) >= 0);
    /* Only the current list is held: every block replaced was freed, none counted twice. */
    assert_int_equal(be->held_bytes, be->envs_blk->len);
    assert_true(srv_mem_used(srv) >= be->held_bytes);
    free(buf);
    ing_mp_writer_fini(&w);
    close(slow->fd);
    close(a->fd);
    for (int k = 0; k < CHANGES; k++) {
        close(ag[k]->fd);
        free(ag[k]);
    }
    free(slow);
    free(stuck);
    free(a);
    srv_free(srv);
}

/* still_open drains what t's socket holds, running the server, and tells whether the
 * connection is still open once nothing more comes (false: the server closed it). */
static bool
still_open(struct tpipe *t)
{
    uint8_t sink[65536];
    int idle = 0;
    for (int round = 0; round < 1000000 && idle < 50; round++) {
        ssize_t k = recv(t->fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            return false;
        if (k > 0) {
            idle = 0;
            continue;
        }
        idle++;
        assert_true(srv_run_once(srv, 0) >= 0);
    }
    return true;
}

/* The memory budget's relief drops the peers whose unread output it frees: three clients
 * that do not read, each with a shared environment list of 1 MiB unwritten (counted once in
 * the budget, held by the backend anyway), are not dropped when a registered agent's large
 * frame needs more than the budget has (dropping them freed nothing: they were dropped, and
 * the agent's input refused all the same). The agent's input is refused (Error OVERLOAD). */
static void
test_budget_relief_skips_shared_list(void **state)
{
    (void)state;
    srv = server_with(0, 8u << 20);
    struct tpipe *slow[3], *a = malloc(sizeof(*a));
    assert_non_null(a);
    for (int i = 0; i < 3; i++) {
        slow[i] = malloc(sizeof(*slow[i]));
        assert_non_null(slow[i]);
        small_client(slow[i]);
    }
    struct ing_mp_writer w;
    big_envs(&w, 60000); /* a list of 1 MiB, shared */
    open_peer(a, ING_ROLE_AGENT);
    send_big_hello(a->fd, "A", &w);
    ing_mp_writer_fini(&w);
    settle(1);
    for (int r = 0; r < 20; r++) /* the slow clients' sockets fill */
        assert_true(srv_run_once(srv, 0) >= 0);
    /* The agent's large frame (a result of 7 MiB for no job): its input must grow past the
     * budget. */
    static char out[7 << 20];
    memset(out, 'o', sizeof(out));
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    struct ing_job_result *r = &m.u.result;
    r->job_id = (struct ing_view){"none", 4};
    r->result_kind = (struct ing_view){"success", 7};
    r->problems = r->tests = r->custom = (struct ing_view){"\x80", 1};
    r->result_text = r->state = r->stderr_ = (struct ing_view){"", 0};
    r->stdout_ = (struct ing_view){out, (uint32_t)sizeof(out)};
    size_t n = ing_msg_size(&m);
    uint8_t *frame = malloc(n);
    assert_non_null(frame);
    assert_int_equal(ing_msg_encode(&m, frame, n), (ssize_t)n);
    size_t off = 0;
    bool refused = false;
    for (int round = 0; round < 1000000 && !refused; round++) {
        ssize_t k = off < n ? send(a->fd, frame + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL) : -1;
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        refused = k < 0 && (errno == EPIPE || errno == ECONNRESET);
        assert_true(srv_run_once(srv, 0) >= 0);
        refused |= !still_open(a);
    }
    free(frame);
    assert_true(refused); /* the agent's input did not fit */
    for (int i = 0; i < 3; i++) {
        if (!still_open(slow[i]))
            fail_msg("slow client %d was dropped: its unread list freed no memory", i);
        close(slow[i]->fd);
        free(slow[i]);
    }
    close(a->fd);
    free(a);
    srv_free(srv);
}

/* ---------------------------------------------------------------------------------------- */
/* Out of memory */

/* server_with starts a server with --max-output max_output and --max-memory max_memory
 * (0: the defaults). */
static struct server *
server_with(uint64_t max_output, uint64_t max_memory)
{
    log_level_max = LOG_ERR;
    struct srv_config cfg;
    srv_config_default(&cfg);
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    cfg.ping_interval_ms = 3600 * 1000;
    if (max_output != 0)
        cfg.max_output = max_output;
    if (max_memory != 0)
        cfg.max_memory = max_memory;
    char err[256];
    struct server *s = srv_new(&cfg, err, sizeof(err));
    assert_non_null(s);
    return s;
}

/* server_max_output starts a server with --max-output max_output (0: the default). */
static struct server *
server_max_output(uint64_t max_output)
{
    return server_with(max_output, 0);
}

static struct server *
oom_server(void)
{
    return server_max_output(0);
}

static void
hello(struct tpipe *c)
{
    struct ing_msg m, got;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name = (struct ing_view){"me", 2};
    send_msg(c, &m);
    assert_int_equal(next_type(c, &got), ING_BACKEND_UPDATE_ENVIRONMENTS);
}

/* two_clients starts the server and opens two registered clients. */
static void
two_clients(struct tpipe *c, struct tpipe *d)
{
    srv = oom_server();
    open_peer(c, ING_ROLE_CLIENT);
    open_peer(d, ING_ROLE_CLIENT);
    hello(c);
    hello(d);
}

/* served_then_stop checks that d is still served (Ping, Pong), closes it and frees the
 * server. */
static void
served_then_stop(struct tpipe *d)
{
    struct ing_msg m, got;
    memset(&m, 0, sizeof(m));
    m.type = ING_PING;
    send_msg(d, &m);
    assert_int_equal(next_type(d, &got), ING_PONG);
    close(d->fd);
    srv_free(srv);
}

/* wait_eof runs the server until the backend closes t (a read of 0 or a reset). */
static void
wait_eof(struct tpipe *t)
{
    for (int round = 0; round < 10000; round++) {
        assert_true(srv_run_once(srv, 1) >= 0);
        uint8_t sink[4096];
        ssize_t n = recv(t->fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return;
    }
    fail_msg("the backend did not close the connection");
}

/* A new loop, a new connection: refused cleanly when memory is out. */
static void
test_oom_setup_and_adopt(void **state)
{
    (void)state;
    struct srv_config cfg;
    srv_config_default(&cfg);
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    char err[256] = "";
    failing_from = 1;
    assert_null(srv_new(&cfg, err, sizeof(err)));
    failing_from = 0;
    assert_string_equal(err, "out of memory");
    srv = oom_server();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    failing_from = 1;
    assert_int_equal(srv_adopt(srv, sv[0], ING_ROLE_CLIENT), -EMFILE); /* no conn page */
    failing_from = 0;
    close(sv[1]);
    struct tpipe c;
    open_peer(&c, ING_ROLE_CLIENT);
    hello(&c);
    close(c.fd);
    srv_free(srv);
}

/* Input that must grow and a job body that cannot be stored: the connection is closed
 * ("out of memory"), the job refused with crash; the others are served. */
static void
test_oom_input_and_job(void **state)
{
    (void)state;
    struct tpipe c, d;
    two_clients(&c, &d);
    /* A 100 KiB job: its body goes to malloc (past the pools' 64 KiB). */
    static uint8_t inp[100 * 1024];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, inp, sizeof(inp));
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "q");
    static char pad[90 * 1024];
    memset(pad, 'x', sizeof(pad));
    ing_mp_put_str(&w, pad, sizeof(pad));
    assert_int_equal(w.err, 0);
    struct ing_msg m, got;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.launcher = (struct ing_view){"t", 1};
    struct ing_job_spec *sp = &m.u.new_job.job;
    sp->job_id = (struct ing_view){"big", 3};
    sp->environment_type = (struct ing_view){"docker", 6};
    sp->environment = (struct ing_view){"default", 7};
    sp->task_problems = sp->environment_parameters = (struct ing_view){"\x80", 1};
    sp->inputdata = (struct ing_view){(const char *)inp, (uint32_t)w.len};
    static uint8_t frame[110 * 1024];
    ssize_t n = ing_msg_encode(&m, frame, sizeof(frame));
    assert_true(n > 0);
    /* c's input cannot grow to the frame's size: closed. */
    failing_from = 32 * 1024;
    assert_int_equal(write(c.fd, frame, (size_t)n), n);
    wait_eof(&c);
    close(c.fd);
    /* d's input grows (memory back) to all but the last bytes of the frame; then the job
     * body cannot be stored: crash. */
    failing_from = 0;
    size_t off = 0;
    while (off < (size_t)n - 16) {
        ssize_t w2 = write(d.fd, frame + off, (size_t)n - 16 - off);
        if (w2 > 0)
            off += (size_t)w2;
        assert_true(srv_run_once(srv, 0) >= 0);
    }
    for (int k = 0; k < 20; k++)
        assert_true(srv_run_once(srv, 0) >= 0);
    failing_from = 64 * 1024; /* the job's copy (~92 KiB), not the input buffer (256 KiB) */
    failing_to = 200 * 1024;
    assert_int_equal(write(d.fd, frame + off, 16), 16);
    uint8_t type = next_type(&d, &got);
    failing_from = failing_to = 0;
    assert_int_equal(type, ING_BACKEND_JOB_DONE);
    assert_true(ing_view_eq(got.u.result.result_kind, "crash"));
    assert_true(ing_view_eq(got.u.result.result_text, "Backend out of memory"));
    /* Memory back: the same job is accepted (no answer: it waits for an agent). */
    for (off = 0; off < (size_t)n;) {
        ssize_t w2 = write(d.fd, frame + off, (size_t)n - off);
        if (w2 > 0)
            off += (size_t)w2;
        assert_true(srv_run_once(srv, 0) >= 0);
    }
    served_then_stop(&d);
}

/* Output that must grow: the peer is dropped, the server goes on. */
static void
test_oom_output(void **state)
{
    (void)state;
    struct tpipe c, d;
    two_clients(&c, &d);
    /* 2,000 pipelined Pings: their Pongs outgrow c's first output buffer. */
    static uint8_t pings[2000 * ING_HDR_LEN];
    for (int k = 0; k < 2000; k++)
        ing_frame_header(pings + k * ING_HDR_LEN, ING_PING, 0);
    failing_from = 8 * 1024;
    assert_int_equal(write(c.fd, pings, sizeof(pings)), (ssize_t)sizeof(pings));
    wait_eof(&c);
    failing_from = 0;
    close(c.fd);
    served_then_stop(&d);
}

/* memory_back ends any failure injection, even after a failed test. */
static int
memory_back(void **state)
{
    (void)state;
    failing_from = failing_to = 0;
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_noalloc_steady_state_lifecycle),
        cmocka_unit_test(test_noalloc_session_ack),
        cmocka_unit_test(test_noalloc_steady_state_zmq),
        cmocka_unit_test(test_noalloc_fair_share),
        cmocka_unit_test(test_budget_held_hellos),
        cmocka_unit_test(test_budget_held_hello_abandoned),
        cmocka_unit_test(test_budget_shared_list_output_limit),
        cmocka_unit_test(test_budget_lists_replaced_slow_reader),
        cmocka_unit_test(test_budget_relief_skips_shared_list),
        cmocka_unit_test_teardown(test_oom_setup_and_adopt, memory_back),
        cmocka_unit_test_teardown(test_oom_input_and_job, memory_back),
        cmocka_unit_test_teardown(test_oom_output, memory_back),
    };
    return cmocka_run_group_tests_name("noalloc", tests, NULL, NULL);
}
