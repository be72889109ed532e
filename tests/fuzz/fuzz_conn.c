/* SPDX-License-Identifier: MIT */
/* fuzz_conn.c: libFuzzer target for a whole connection to the server (src/server.c and,
 * through it, src/backend.c, the ZeroMQ dialect and the authentication), in process.
 *
 * Two servers are created once. The open one (no secret) has two well-behaved peers attached
 * through srv_adopt and kept for the whole run:
 *   - the fixed agent provides docker/python3 with FIXED_SLOTS slots; it answers Ping,
 *     reports every job it gets as started, finishes at once the jobs whose id ends in an
 *     odd byte and keeps the others until they are killed, and answers every kill;
 *   - the fixed client has FIXED_JOBS jobs waiting on docker/default (no fixed agent serves
 *     it), and submits again, between inputs, any of them that ended.
 * So a fuzzed client can submit, kill and list jobs that really run, and a fuzzed agent that
 * says hello for docker/default is given the fixed client's jobs to report on. The other
 * server requires authentication (proto.md §6) on both endpoints and has no fixed peers.
 *
 * Per input: byte 0 picks the role (bit 0: 1 agent, 0 client). Byte 1:
 *   bit 0    a valid opening first: the native preamble, or with bit 5 a ZMTP greeting and
 *            READY; on the authenticating server, the preamble and then a valid Auth
 *            computed from the server's Welcome;
 *   bit 1    (with bit 0) then a valid hello (ClientHello, or AgentHello for docker/default
 *            with 2 slots), native or, with bit 5, as a ZeroMQ message;
 *   bits 2-4 how the bytes are cut into writes (see chunks[]);
 *   bit 5    the ZeroMQ dialect for that opening and hello;
 *   bit 6    connect to the authenticating server.
 * The rest goes to one end of a socketpair whose other end the server adopts; the servers run
 * until nothing moves, our end is closed, the servers run until the fuzzed connection is
 * closed on their side too, and the state must be back to rest.
 *
 * Checked besides the sanitizers: every byte a server sends in the native dialect is a
 * well-formed frame (ing_msg_decode accepts it); the fixed peers never get an Error or
 * Unknown; the servers settle within MAX_ROUNDS iterations and close the fuzzed connection
 * once its peer is gone; after every input be_check() holds on both servers, the open one
 * holds exactly the fixed agent, the fixed client and its FIXED_JOBS waiting jobs, and the
 * authenticating one nothing. FUZZ_CONN_DEBUG=1 in the environment traces the fixed peers. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "backend.h"
#include "inginious/mp.h"
#include "inginious/proto.h"
#include "log.h"
#include "server.h"
#include "zmq_msg.h"
#include "zmtp.h"

#include "fuzz.h"

#define FIXED_SLOTS 4
#define FIXED_JOBS 3
#define MAX_ROUNDS 5000 /* server iterations for one phase before it counts as a livelock */

#define F_OPEN 0x01
#define F_HELLO 0x02
#define F_ZMQ 0x20
#define F_AUTH 0x40


/* Our end of a connection to a server. */
struct peer {
    int fd;      /* ours (non-blocking) */
    int srv_fd;  /* the server's end, for FIONREAD; -1 once it is closed */
    bool eof;    /* the server closed its end */
    bool native; /* the server speaks the native protocol to us: check every frame */
    uint8_t *in; /* bytes received, not yet handled */
    size_t len, cap;
};

static const uint8_t secret[] = "fuzz-secret";
static struct server *srv, *srv_auth;
static struct peer agent, client;    /* the fixed peers (on srv) */
static bool outstanding[FIXED_JOBS]; /* the fixed client's job i is in the backend */
static bool debug;

/* ---- I/O ------------------------------------------------------------------------------ */

/* peer_read reads what is there; returns the number of bytes read. */
static size_t
peer_read(struct peer *p)
{
    size_t total = 0;
    while (!p->eof) {
        if (p->cap - p->len < 4096) {
            size_t ncap = p->cap ? p->cap * 2 : 65536;
            p->in = realloc(p->in, ncap);
            CHECK(p->in != NULL);
            p->cap = ncap;
        }
        ssize_t n = read(p->fd, p->in + p->len, p->cap - p->len);
        if (n > 0) {
            p->len += (size_t)n;
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN)
            p->eof = true; /* closed (or reset) by the server */
        break;
    }
    return total;
}

static void
peer_drop(struct peer *p, size_t n)
{
    memmove(p->in, p->in + n, p->len - n);
    p->len -= n;
}

/* peer_next takes the next complete frame out of p's input into *m (views valid until the
 * next call). Returns false when no complete frame is there. Anything a server sends in
 * the native dialect must decode. */
static bool
peer_next(struct peer *p, struct ing_msg *m, size_t *consumed)
{
    if (*consumed > 0) {
        peer_drop(p, *consumed);
        *consumed = 0;
    }
    ssize_t r = ing_msg_decode(p->in, p->len, UINT32_MAX, m);
    if (r < 0)
        fprintf(stderr, "a server sent a frame that does not decode: %zd (type 0x%02x)\n", r,
                p->len > 4 ? p->in[4] : 0);
    CHECK(r >= 0);
    if (r == 0)
        return false;
    *consumed = (size_t)r;
    return true;
}

/* peer_send writes bytes whole (what the harness itself sends is small). */
static void
peer_send_raw(struct peer *p, const void *b, size_t n)
{
    ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL);
    CHECK(w == (ssize_t)n);
}

static void
peer_send(struct peer *p, const struct ing_msg *m)
{
    uint8_t buf[1024];
    ssize_t n = ing_msg_encode(m, buf, sizeof(buf));
    CHECK(n > 0);
    peer_send_raw(p, buf, (size_t)n);
}

/* server_has_input tells whether a server's end fd has unread bytes. */
static bool
server_has_input(int fd)
{
    int n = 0;
    if (fd < 0 || ioctl(fd, FIONREAD, &n) != 0)
        return false;
    return n > 0;
}

static struct ing_view
cview(const char *s)
{
    struct ing_view v = {s, (uint32_t)strlen(s)};
    return v;
}

static struct ing_view
bview(const void *p, size_t n)
{
    struct ing_view v = {p, (uint32_t)n};
    return v;
}

/* ---- the fixed peers ------------------------------------------------------------------ */

static const uint8_t empty_map[] = {0x80};

static void
agent_report_done(struct ing_view id, const char *kind, struct ing_view state)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_JOB_DONE;
    m.u.result.job_id = id;
    m.u.result.result_kind = cview(kind);
    m.u.result.result_text = cview("");
    m.u.result.grade = 100.0;
    m.u.result.problems = m.u.result.tests = m.u.result.custom = bview(empty_map, 1);
    m.u.result.state = state;
    m.u.result.archive.p = NULL;
    m.u.result.stdout_ = cview("ok\n");
    m.u.result.stderr_.p = NULL;
    peer_send(&agent, &m);
}

/* agent_handle plays the fixed agent on what it received; returns the frames handled. */
static size_t
agent_handle(void)
{
    struct ing_msg m, reply;
    size_t consumed = 0, frames = 0;
    while (peer_next(&agent, &m, &consumed)) {
        frames++;
        memset(&reply, 0, sizeof(reply));
        if (debug)
            fprintf(stderr, "fixed agent got %s\n", ing_msg_type_name(m.type));
        switch (m.type) {
        case ING_PING:
            reply.type = ING_PONG;
            peer_send(&agent, &reply);
            break;
        case ING_BACKEND_NEW_JOB: {
            struct ing_view id = m.u.job.job_id;
            reply.type = ING_AGENT_JOB_STARTED;
            reply.u.ref.job_id = id;
            peer_send(&agent, &reply);
            if (id.len > 0 && (id.p[id.len - 1] & 1))
                agent_report_done(id, "success", cview("done"));
            break;
        }
        case ING_BACKEND_KILL_JOB:
            agent_report_done(m.u.kill.job_id, "killed", m.u.kill.state);
            break;
        case ING_WELCOME:
        case ING_PONG:
            break;
        default:
            fprintf(stderr, "fixed agent got type 0x%02x\n", m.type);
            CHECK(!"unexpected message to the fixed agent");
        }
    }
    return frames;
}

static int
fixed_index(struct ing_view id)
{
    if (id.len == 7 && memcmp(id.p, "fixed-", 6) == 0 && id.p[6] >= '0' &&
        id.p[6] < '0' + FIXED_JOBS)
        return id.p[6] - '0';
    return -1;
}

/* client_handle plays the fixed client on what it received; returns the frames handled. */
static size_t
client_handle(void)
{
    struct ing_msg m, reply;
    size_t consumed = 0, frames = 0;
    while (peer_next(&client, &m, &consumed)) {
        frames++;
        memset(&reply, 0, sizeof(reply));
        if (debug)
            fprintf(stderr, "fixed client got %s\n", ing_msg_type_name(m.type));
        switch (m.type) {
        case ING_BACKEND_JOB_DONE: {
            int i = fixed_index(m.u.result.job_id);
            CHECK(i >= 0);
            outstanding[i] = false;
            break;
        }
        case ING_PING:
            reply.type = ING_PONG;
            peer_send(&client, &reply);
            break;
        case ING_WELCOME:
        case ING_PONG:
        case ING_BACKEND_UPDATE_ENVIRONMENTS:
        case ING_BACKEND_JOB_STARTED:
        case ING_BACKEND_JOB_SSH_DEBUG:
            break;
        default:
            fprintf(stderr, "fixed client got type 0x%02x\n", m.type);
            CHECK(!"unexpected message to the fixed client");
        }
    }
    return frames;
}

/* client_submit sends the fixed client's job i (waiting on docker/default). */
static void
client_submit(int i)
{
    static const uint8_t inputdata[] = {0x81, 0xa6, '@', 's', 't', 'a', 't', 'e', 0xa2, 's', '0'};
    static const uint8_t params[] = {0x81, 0xa6, 'l', 'i', 'm', 'i', 't', 's',
                                     0x81, 0xa4, 't', 'i', 'm', 'e', 0x1e};
    char id[8];
    snprintf(id, sizeof(id), "fixed-%d", i);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.priority = i;
    m.u.new_job.launcher = cview("fixed");
    m.u.new_job.job.job_id = cview(id);
    m.u.new_job.job.course_id = cview("course");
    m.u.new_job.job.task_id = cview("task");
    m.u.new_job.job.environment_type = cview("docker");
    m.u.new_job.job.environment = cview("default");
    m.u.new_job.job.debug = ING_DEBUG_OFF;
    m.u.new_job.job.task_problems = bview(empty_map, 1);
    m.u.new_job.job.inputdata = bview(inputdata, sizeof(inputdata));
    m.u.new_job.job.environment_parameters = bview(params, sizeof(params));
    if (debug)
        fprintf(stderr, "fixed client submits %s\n", id);
    peer_send(&client, &m);
    outstanding[i] = true;
}

/* ---- running the servers -------------------------------------------------------------- */

/* The fuzzed peer of the current input. */
struct fuzzed {
    struct peer p;
    const uint8_t *out; /* bytes still to write */
    size_t out_len;
    size_t chunk;    /* at most this many bytes per write; 0 = as many as fit */
    bool closed;     /* our end is closed */
    bool hold;       /* keep what arrives for the caller (authenticate) */
    bool guarded;    /* on the authenticating server, not authenticated by the harness */
    unsigned frames; /* frames received */
    bool got_error;  /* an Error frame was received (guarded: the last one allowed) */
};

/* check_out checks a frame a server sent to the fuzzed peer: the first one answers the
 * preamble (Welcome, or Error and a close: proto.md §2); a peer that has not authenticated
 * gets nothing but that Welcome and a closing Error (proto.md §6). */
static void
check_out(struct fuzzed *f, const struct ing_msg *m)
{
    if (f->frames++ == 0)
        CHECK(m->type == ING_WELCOME || m->type == ING_ERROR);
    if (!f->guarded)
        return;
    if (m->type != ING_WELCOME && m->type != ING_ERROR)
        fprintf(stderr, "before Auth, the server sent %s\n", ing_msg_type_name(m->type));
    CHECK(m->type == ING_WELCOME || m->type == ING_ERROR);
    CHECK(!f->got_error); /* nothing after the closing Error */
    if (m->type == ING_WELCOME) {
        CHECK(f->frames == 1 && (m->u.welcome.flags & ING_WELCOME_AUTH));
        return;
    }
    f->got_error = true;
    switch (m->u.error.code) {
    case ING_ERR_PREAMBLE:
    case ING_ERR_VERSION:
    case ING_ERR_ROLE:
    case ING_ERR_TOO_BIG:
    case ING_ERR_AUTH:
    case ING_ERR_LIMIT:
    case ING_ERR_TIMEOUT:
    case ING_ERR_SHUTDOWN:
        break;
    default:
        fprintf(stderr,
                "before Auth, the server answered Error %u \"%.*s\" (proto.md §6: Error "
                "AUTH and a close)\n",
                m->u.error.code, (int)m->u.error.text.len, m->u.error.text.p);
        CHECK(!"a frame before Auth answered otherwise than by Error AUTH");
    }
}

/* step runs one iteration of both servers and lets every peer act. Returns whether anything
 * moved. */
static bool
step(struct fuzzed *f)
{
    bool moved = false;
    if (f != NULL && !f->closed && f->out_len > 0 && !f->p.eof) {
        size_t n = f->chunk != 0 && f->chunk < f->out_len ? f->chunk : f->out_len;
        ssize_t w = send(f->p.fd, f->out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            f->out += w;
            f->out_len -= (size_t)w;
            moved = true;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            f->out_len = 0; /* the server closed: the rest has nowhere to go */
        }
    }
    CHECK(srv_run_once(srv, 0) == 0);
    CHECK(srv_run_once(srv_auth, 0) == 0);
    moved |= peer_read(&agent) > 0;
    moved |= peer_read(&client) > 0;
    moved |= agent_handle() > 0;
    moved |= client_handle() > 0;
    moved |= server_has_input(agent.srv_fd) || server_has_input(client.srv_fd);
    if (f != NULL && !f->closed) {
        moved |= peer_read(&f->p) > 0;
        if (f->hold) {
            /* left in f->p.in */
        } else if (f->p.native) {
            size_t consumed = 0;
            struct ing_msg m;
            while (peer_next(&f->p, &m, &consumed))
                check_out(f, &m);
        } else {
            CHECK(!f->guarded || f->p.len == 0); /* no ZeroMQ with authentication */
            f->p.len = 0;
        }
        moved |= f->out_len > 0 && !f->p.eof;
    }
    if (f != NULL && f->guarded) {
        const struct backend *ba = srv_backend(srv_auth);
        CHECK(ba->n_agents == 0 && ba->n_clients == 0 && ba->jtab.n == 0);
    }
    if (f != NULL && f->p.srv_fd >= 0) {
        if (fcntl(f->p.srv_fd, F_GETFD) == -1 && errno == EBADF)
            f->p.srv_fd = -1; /* the server has closed (and reaped) its end */
        else
            moved |= server_has_input(f->p.srv_fd);
    }
    return moved;
}

/* settle runs the servers until three iterations in a row move nothing (and, with
 * until_gone, until the fuzzed connection is closed on the server's side). Three, because
 * output queued while events are handled leaves at the start of the next iteration, and
 * output queued when a closed connection is reaped (at the start of an iteration) at the
 * one after. */
static void
settle(struct fuzzed *f, bool until_gone)
{
    int quiet = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        bool moved = step(f);
        quiet = moved ? 0 : quiet + 1;
        if (quiet >= 3 && (!until_gone || f->p.srv_fd < 0))
            return;
    }
    fprintf(stderr, "the servers do not settle after %d iterations%s\n", MAX_ROUNDS,
            until_gone && f->p.srv_fd >= 0 ? " (the fuzzed connection is still open)" : "");
    CHECK(!"servers do not settle");
}

static void
make_pair(struct server *s, int role, struct peer *p)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    int fl = fcntl(sv[1], F_GETFL);
    CHECK(fl >= 0 && fcntl(sv[1], F_SETFL, fl | O_NONBLOCK) == 0);
    memset(p, 0, sizeof(*p));
    p->fd = sv[1];
    p->srv_fd = sv[0];
    p->native = true;
    CHECK(srv_adopt(s, sv[0], (uint8_t)role) == 0);
}

/* hello_msg fills a valid hello: ClientHello(name), or AgentHello(name, slots,
 * {"docker": {env: {"id": "sha256:" env, "created": 1700000000}}}) built in envs. */
static void
hello_msg(int role, const char *name, const char *env, uint32_t slots, uint8_t envs[64],
          struct ing_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (role == ING_ROLE_CLIENT) {
        m->type = ING_CLIENT_HELLO;
        m->u.client_hello.name = cview(name);
        return;
    }
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, envs, 64);
    char id[32];
    snprintf(id, sizeof(id), "sha256:%s", env);
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, env);
    ing_mp_put_map(&w, 2);
    ing_mp_put_cstr(&w, "id");
    ing_mp_put_cstr(&w, id);
    ing_mp_put_cstr(&w, "created");
    ing_mp_put_int(&w, 1700000000);
    CHECK(w.err == 0);
    m->type = ING_AGENT_HELLO;
    m->u.agent_hello.friendly_name = cview(name);
    m->u.agent_hello.slots = slots;
    m->u.agent_hello.environments = bview(envs, w.len);
}

/* zmq_message writes m as one ZeroMQ message (frame header + msgpack map) into out. */
static size_t
zmq_message(const struct ing_msg *m, uint8_t *out, size_t cap)
{
    uint8_t body[256];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, body, sizeof(body));
    CHECK(zmq_msg_encode(m, &w, ZMQ_JOB_FIELD_COURSE_ID) == 0);
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, w.len, false);
    CHECK(hl + w.len <= cap);
    memcpy(out, hdr, hl);
    memcpy(out + hl, body, w.len);
    return hl + w.len;
}

/* setup creates the servers and the fixed peers, once. */
static void
setup(void)
{
    debug = getenv("FUZZ_CONN_DEBUG") != NULL;
    log_level_max = -1;
    struct srv_config cfg;
    char err[256];
    srv_config_default(&cfg);
    cfg.agent_addr = "tcp://127.0.0.1:0";
    cfg.client_addr = "tcp://127.0.0.1:0";
    cfg.max_frame = 1u << 20;            /* a declared length cannot reserve much */
    cfg.ping_interval_ms = 3600u * 1000; /* no pings during a run: inputs stay reproducible */
    cfg.be.orphan_timeout_ms = 0;        /* the fixed client's jobs wait forever */
    cfg.be.kill_timeout_ms = 0;          /* kills wait for the agent's answer */
    srv = srv_new(&cfg, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "srv_new: %s\n", err);
        abort();
    }
    for (int ep = 0; ep < 2; ep++) {
        cfg.secret[ep] = secret;
        cfg.secret_len[ep] = sizeof(secret) - 1;
    }
    srv_auth = srv_new(&cfg, err, sizeof(err));
    if (srv_auth == NULL) {
        fprintf(stderr, "srv_new (auth): %s\n", err);
        abort();
    }

    uint8_t buf[256], envs[64];
    struct ing_msg m;
    make_pair(srv, ING_ROLE_AGENT, &agent);
    ing_preamble_encode(buf, ING_ROLE_AGENT);
    peer_send_raw(&agent, buf, ING_PREAMBLE_LEN);
    hello_msg(ING_ROLE_AGENT, "fixed-agent", "python3", FIXED_SLOTS, envs, &m);
    peer_send(&agent, &m);
    make_pair(srv, ING_ROLE_CLIENT, &client);
    ing_preamble_encode(buf, ING_ROLE_CLIENT);
    peer_send_raw(&client, buf, ING_PREAMBLE_LEN);
    hello_msg(ING_ROLE_CLIENT, "fixed-client", NULL, 0, envs, &m);
    peer_send(&client, &m);
    for (int i = 0; i < FIXED_JOBS; i++)
        client_submit(i);
    settle(NULL, false);
}

/* authenticate does the opening of proto.md §6 for the fuzzed peer: its preamble is out;
 * wait for the Welcome and send the Auth it asks for. */
static void
authenticate(struct fuzzed *f, int role)
{
    struct ing_msg m;
    size_t consumed = 0;
    f->hold = true;
    for (int round = 0; !peer_next(&f->p, &m, &consumed); round++) {
        CHECK(round < MAX_ROUNDS && !f->p.eof);
        step(f);
    }
    f->hold = false;
    CHECK(m.type == ING_WELCOME && (m.u.welcome.flags & ING_WELCOME_AUTH));
    f->frames++;
    struct ing_msg a;
    memset(&a, 0, sizeof(a));
    a.type = ING_AUTH;
    memset(a.u.auth.nonce, 0x5c, ING_NONCE_LEN);
    auth_peer_mac(secret, sizeof(secret) - 1, (uint8_t)role, m.u.welcome.nonce, a.u.auth.nonce,
                  a.u.auth.mac);
    peer_drop(&f->p, consumed);
    peer_send(&f->p, &a);
}

/* check_rest checks the state between inputs. */
static void
check_rest(void)
{
    struct backend *be = srv_backend(srv), *ba = srv_backend(srv_auth);
    if (debug)
        fprintf(stderr, "rest: %u agents, %u clients, %llu running, %llu waiting, %zu jobs\n",
                be->n_agents, be->n_clients, (unsigned long long)be->n_running,
                (unsigned long long)be->n_waiting, be->jtab.n);
    CHECK(be_check(be) == 0);
    CHECK(be->n_agents == 1 && be->n_clients == 1);
    CHECK(be->n_running == 0);
    CHECK(be->n_waiting == FIXED_JOBS && be->jtab.n == FIXED_JOBS);
    CHECK(!agent.eof && !client.eof);
    CHECK(be_check(ba) == 0);
    CHECK(ba->n_agents == 0 && ba->n_clients == 0 && ba->jtab.n == 0);
}

/* LLVMFuzzerTestOneInput is the libFuzzer entry point: data is what a peer sends. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = {0, 1, 2, 3, 7, 16, 100, 0};
    if (srv == NULL)
        setup();
    if (size < 2)
        return 0;
    int role = (data[0] & 1) ? ING_ROLE_AGENT : ING_ROLE_CLIENT;
    uint8_t flags = data[1];
    bool zmq = (flags & F_ZMQ) != 0, auth = (flags & F_AUTH) != 0;

    struct fuzzed f;
    memset(&f, 0, sizeof(f));
    make_pair(auth ? srv_auth : srv, role, &f.p);
    bool opened = false; /* the preamble is already out (authenticating server) */

    /* What the fuzzed peer sends: [opening [hello]] then the rest of the input. */
    uint8_t head[512], envs[64];
    size_t hlen = 0;
    if (flags & F_OPEN) {
        if (zmq) {
            zmtp_greeting(head);
            hlen = ZMTP_GREETING_LEN;
            ssize_t n = zmtp_ready(head + hlen, sizeof(head) - hlen, "DEALER");
            CHECK(n > 0);
            hlen += (size_t)n;
        } else {
            ing_preamble_encode(head, (uint8_t)role);
            hlen = ING_PREAMBLE_LEN;
            if (auth) {
                peer_send_raw(&f.p, head, hlen);
                hlen = 0;
                opened = true;
                authenticate(&f, role);
            }
        }
        if (flags & F_HELLO) {
            struct ing_msg m;
            hello_msg(role, "fuzzed", "default", 2, envs, &m);
            if (zmq) {
                hlen += zmq_message(&m, head + hlen, sizeof(head) - hlen);
            } else {
                ssize_t n = ing_msg_encode(&m, head + hlen, sizeof(head) - hlen);
                CHECK(n > 0);
                hlen += (size_t)n;
            }
        }
    }
    size_t rest = size - 2;
    uint8_t *out = malloc(hlen + rest + 1);
    CHECK(out != NULL);
    memcpy(out, head, hlen);
    memcpy(out + hlen, data + 2, rest);
    if (!opened && hlen + rest > 0 && out[0] == 0xff)
        f.p.native = false; /* the first byte picks the ZeroMQ dialect */
    f.out = out;
    f.out_len = hlen + rest;
    f.chunk = chunks[(flags >> 2) & 7];
    f.guarded = auth && !opened;
    /* Small chunks make many iterations: keep them for short inputs. */
    if (f.chunk != 0 && f.out_len / f.chunk > 512)
        f.chunk = f.out_len / 512 + 1;

    settle(&f, false);
    close(f.p.fd);
    f.closed = true;
    settle(&f, true);
    free(f.p.in);
    free(out);

    /* Back to rest: the fixed client submits again what ended. */
    for (int i = 0; i < FIXED_JOBS; i++)
        if (!outstanding[i])
            client_submit(i);
    settle(NULL, false);
    check_rest();
    return 0;
}
