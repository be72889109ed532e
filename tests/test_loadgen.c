/* SPDX-License-Identifier: MIT */
/* test_loadgen.c: the load generator's peers (bench/common.h, what bench/loadgen.c drives)
 * against the real backend: a few thousand jobs over the ZeroMQ dialect (ZMTP 3.1 DEALERs,
 * INGInious' msgpack of main, v0.8 and v0.6), every job answered exactly once; the same over
 * the native protocol; a flood then a queue snapshot (loadgen's enqueue mode); and the
 * ZeroMQ reader's refusals (a peer that is not ZMTP, an oversized frame): issue 19; a
 * session client waits for the Welcome before its hello (issue 16); jobs drawing their
 * fair-share key among K (loadgen --keys) in both dialects, queued by a backend with
 * --fair-share in the order of start-time fair queueing, then worked off (issue 18). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <sys/wait.h>

#include "../bench/common.h"
#include "support/tpeer.h"

/* run_until polls L until done() holds, within the tests' deadline. */
static bool
run_until(struct load *L, bool (*done)(const struct load *L, uint64_t arg), uint64_t arg)
{
    uint64_t deadline = bc_now_ns() + (uint64_t)TP_DEADLINE_MS * 4 * 1000000u;
    while (!done(L, arg)) {
        if (bc_now_ns() >= deadline) {
            print_error("deadline: %llu of the jobs done, %s\n", (unsigned long long)L->done,
                        L->err);
            return false;
        }
        if (bc_poll(L, 50) != 0) {
            print_error("bc_poll: %s\n", L->err);
            return false;
        }
    }
    return true;
}

static bool
clients_ponged(const struct load *L, uint64_t n)
{
    return bc_all_pongs(L, ING_ROLE_CLIENT, n);
}

/* lifecycle runs n jobs through 2 clients (32 in flight each) and 2 agents (16 slots each)
 * in dialect zmq (release zrel) or native, and checks that each got exactly one result. */
static void
lifecycle(struct tp_ctx *c, bool zmq, uint8_t zrel, uint64_t n)
{
    struct bc_tmpl job;
    size_t body_len = 0;
    struct load L;
    tp_start(c, "--orphan-timeout", "0", NULL);
    assert_int_equal(bc_load_init(&L, n), 0);
    if (zmq) {
        assert_int_equal(bc_load_dialect(&L, zrel), 0);
        assert_int_equal(bc_zjob_tmpl(&job, 128, 0, "default", zrel, &body_len), 0);
    } else {
        assert_int_equal(bc_job_tmpl(&job, 128, 0, "default", &body_len), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_non_null(bc_add_client(&L, c->be.client_addr, &job, 32));
    assert_true(run_until(&L, clients_ponged, 1));
    for (int i = 0; i < 2; i++)
        assert_non_null(bc_add_agent(&L, c->be.agent_addr, 16, "default"));
    assert_true(run_until(&L, bc_agents_ready, 1));
    L.limit = n;
    L.submitting = true;
    assert_true(run_until(&L, bc_all_done, n));
    L.submitting = false;
    /* Anything late (a duplicate) would arrive with the round trip of a Ping. */
    for (uint32_t i = 0; i < L.nconns; i++)
        if (L.conns[i]->role == ING_ROLE_CLIENT)
            assert_int_equal(bc_send_empty(&L, L.conns[i], ING_PING), 0);
    assert_true(run_until(&L, clients_ponged, 2));
    assert_int_equal(L.submitted, n);
    assert_int_equal(L.done, n);
    assert_int_equal(L.started, n);
    assert_int_equal(L.dup, 0);
    assert_int_equal(L.bad, 0);
    assert_int_equal(L.errors, 0);
    for (uint64_t i = 0; i < n; i++)
        assert_true(L.lat[i] != 0);
    uint64_t handled = 0;
    for (uint32_t i = 0; i < L.nconns; i++)
        if (L.conns[i]->role == ING_ROLE_AGENT) {
            assert_true(L.conns[i]->handled > 0); /* both agents worked */
            handled += L.conns[i]->handled;
        }
    assert_int_equal(handled, n);
    bc_load_fini(&L);
    free(job.frame);
}

TP_TEST(test_lg_zmq_main)
{
    lifecycle(c, true, BC_ZREL_MAIN, 3000);
}

TP_TEST(test_lg_zmq_v08)
{
    lifecycle(c, true, BC_ZREL_V08, 1000);
}

TP_TEST(test_lg_zmq_v06)
{
    lifecycle(c, true, BC_ZREL_V06, 1000);
}

TP_TEST(test_lg_native)
{
    lifecycle(c, false, 0, 2000);
}

/* The enqueue mode over ZeroMQ: a client floods its quota, then a Ping; the queue snapshot
 * lists every job waiting (no agent). */
TP_TEST(test_lg_zmq_enqueue)
{
    struct bc_tmpl job;
    size_t body_len = 0;
    struct load L;
    tp_start(c, "--orphan-timeout", "0", NULL);
    assert_int_equal(bc_load_init(&L, 1500), 0);
    assert_int_equal(bc_load_dialect(&L, BC_ZREL_MAIN), 0);
    assert_int_equal(bc_zjob_tmpl(&job, 512, 0, "default", BC_ZREL_MAIN, &body_len), 0);
    struct bc_conn *cl = bc_add_client(&L, c->be.client_addr, &job, 0);
    assert_non_null(cl);
    cl->quota = 1500;
    cl->ping_after = true;
    assert_true(run_until(&L, clients_ponged, 1));
    L.limit = 1500;
    L.submitting = true;
    assert_true(run_until(&L, clients_ponged, 2));
    L.submitting = false;
    assert_int_equal(L.submitted, 1500);
    assert_int_equal(L.done, 0);
    assert_int_equal(bc_send_empty(&L, cl, ING_CLIENT_GET_QUEUE), 0);
    assert_true(run_until(&L, bc_queue_answered, 1));
    assert_int_equal(L.queue_waiting, 1500);
    assert_int_equal(L.queue_running, 0);
    bc_load_fini(&L);
    free(job.frame);
}

/* The ZeroMQ reader refuses a peer that does not greet in ZMTP 3, and a frame larger than
 * its limit, with an error rather than a crash or a wait. */
static void
feed(struct load *L, struct bc_conn *cn, const void *p, size_t n)
{
    assert_int_equal(buf_reserve(&cn->in, n), 0);
    memcpy(buf_tail(&cn->in), p, n);
    buf_produce(&cn->in, n);
    (void)L;
}

static void
test_lg_zmq_reader_refusals(void **state)
{
    (void)state;
    struct load L;
    assert_int_equal(bc_load_init(&L, 1), 0);
    assert_int_equal(bc_load_dialect(&L, BC_ZREL_MAIN), 0);
    struct bc_conn cn;
    memset(&cn, 0, sizeof(cn));
    cn.role = ING_ROLE_CLIENT;
    cn.zmq = true;
    buf_init(&cn.in);
    buf_init(&cn.out);
    /* A native Welcome instead of a greeting. */
    uint8_t g[ZMTP_GREETING_LEN];
    memset(g, 0, sizeof(g));
    feed(&L, &cn, g, sizeof(g));
    assert_int_equal(bc_zinput(&L, &cn, 1), -1);
    assert_non_null(strstr(L.err, "not a ZMTP 3 greeting"));
    /* A valid greeting and READY, then a frame announcing 2^40 bytes. */
    L.err[0] = '\0';
    buf_consume(&cn.in, buf_len(&cn.in));
    cn.zst = 0;
    zmtp_greeting(g);
    feed(&L, &cn, g, sizeof(g));
    uint8_t ready[64];
    ssize_t rl = zmtp_ready(ready, sizeof(ready), "ROUTER");
    assert_true(rl > 0);
    feed(&L, &cn, ready, (size_t)rl);
    assert_int_equal(bc_zinput(&L, &cn, 1), 0);
    assert_int_equal(cn.zst, 2);
    static const uint8_t big[9] = {ZMTP_F_LONG, 0, 0, 1, 0, 0, 0, 0, 0};
    feed(&L, &cn, big, sizeof(big));
    assert_int_equal(bc_zinput(&L, &cn, 1), -1);
    assert_non_null(strstr(L.err, "ZMTP frame of"));
    /* Reserved flag bits. */
    L.err[0] = '\0';
    buf_consume(&cn.in, buf_len(&cn.in));
    static const uint8_t flags[2] = {0x80, 0};
    feed(&L, &cn, flags, sizeof(flags));
    assert_int_equal(bc_zinput(&L, &cn, 1), -1);
    assert_non_null(strstr(L.err, "bad ZMTP flags"));
    buf_fini(&cn.in);
    buf_fini(&cn.out);
    bc_load_fini(&L);
}

/* recv_within reads what fd has into b (cap bytes) until it holds enough bytes or ms
 * milliseconds have passed, polling; returns the bytes read. L is driven meanwhile. */
static size_t
recv_within(struct load *L, int fd, uint8_t *b, size_t cap, size_t enough, int ms)
{
    uint64_t until = bc_now_ns() + (uint64_t)ms * 1000000u;
    size_t got = 0;
    while (bc_now_ns() < until && got < enough) {
        assert_int_equal(bc_poll(L, 5), 0);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 5) == 1) {
            ssize_t n = recv(fd, b + got, cap - got, MSG_DONTWAIT);
            assert_true(n > 0);
            got += (size_t)n;
        }
    }
    return got;
}

/* loopback_listener listens on 127.0.0.1 port 0; its address goes to addr. */
static int
loopback_listener(char *addr, size_t cap)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    snprintf(addr, cap, "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    return ls;
}

/* A loadgen peer writes its greeting and READY at once but its messages only after the
 * backend's READY: libzmq's ROUTER (INGInious' Python backend) drops a connection whose
 * first read brings a message after the handshake. */
static void
test_lg_zmq_waits_for_ready(void **state)
{
    (void)state;
    char addr[64];
    int ls = loopback_listener(addr, sizeof(addr));
    struct load L;
    struct bc_tmpl job;
    size_t body_len = 0;
    assert_int_equal(bc_load_init(&L, 1), 0);
    assert_int_equal(bc_load_dialect(&L, BC_ZREL_MAIN), 0);
    assert_int_equal(bc_zjob_tmpl(&job, 128, 0, "default", BC_ZREL_MAIN, &body_len), 0);
    assert_non_null(bc_add_client(&L, addr, &job, 1)); /* ClientHello and Ping queued */
    int fd = accept(ls, NULL, NULL);
    assert_true(fd >= 0);
    uint8_t ready[64], got[512];
    ssize_t rl = zmtp_ready(ready, sizeof(ready), "DEALER");
    assert_true(rl > 0);
    /* Before our READY: its greeting and READY, nothing more. */
    size_t n = recv_within(&L, fd, got, sizeof(got), sizeof(got), TP_QUIET_MS * tp_slow());
    assert_int_equal(n, ZMTP_GREETING_LEN + (size_t)rl);
    assert_int_equal(got[0], 0xff);
    assert_memory_equal(got + ZMTP_GREETING_LEN, ready, (size_t)rl);
    /* Our greeting and READY: the ClientHello follows. */
    uint8_t g[ZMTP_GREETING_LEN];
    zmtp_greeting(g);
    rl = zmtp_ready(ready, sizeof(ready), "ROUTER");
    assert_int_equal(send(fd, g, sizeof(g), 0), (ssize_t)sizeof(g));
    assert_int_equal(send(fd, ready, (size_t)rl, 0), rl);
    n = recv_within(&L, fd, got, sizeof(got), 2 + 34, TP_DEADLINE_MS); /* the hello frame */
    assert_true(n >= 2 + 34);
    assert_int_equal(got[0], 0); /* a message frame, short */
    assert_non_null(memmem(got, n, "ClientHello", 11));
    close(fd);
    close(ls);
    free(job.frame);
    bc_load_fini(&L);
}

/* send_welcome sends a client's Welcome with the given flags on fd. */
static void
send_welcome(int fd, uint16_t flags)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_WELCOME;
    m.u.welcome.version = 1;
    m.u.welcome.role = ING_ROLE_CLIENT;
    m.u.welcome.flags = flags;
    m.u.welcome.max_frame = 1u << 20;
    m.u.welcome.server = (struct ing_view){"fake", 4};
    uint8_t b[256];
    ssize_t n = ing_msg_encode(&m, b, sizeof(b));
    assert_true(n > 0);
    assert_int_equal(send(fd, b, (size_t)n, 0), n);
}

/* A loadgen session client (--session ack) does not pipeline its ClientHelloSession (proto.md
 * 7.9): it sends the preamble only, and its hello (flag ACK) then a Ping once a Welcome with
 * SESSION and SESSION_ACK came; a Welcome without SESSION_ACK fails the run clearly. */
static void
test_lg_session_waits_for_welcome(void **state)
{
    (void)state;
    char addr[64];
    int ls = loopback_listener(addr, sizeof(addr));
    struct load L;
    struct bc_tmpl job;
    size_t body_len = 0;
    assert_int_equal(bc_load_init(&L, 1), 0);
    assert_int_equal(bc_job_tmpl(&job, 128, 0, "default", &body_len), 0);
    L.session = 2;
    assert_non_null(bc_add_client(&L, addr, &job, 1));
    int fd = accept(ls, NULL, NULL);
    assert_true(fd >= 0);
    uint8_t got[512];
    size_t n = recv_within(&L, fd, got, sizeof(got), sizeof(got), TP_QUIET_MS * tp_slow());
    assert_int_equal(n, ING_PREAMBLE_LEN); /* nothing before the Welcome */
    send_welcome(fd, ING_WELCOME_SESSION | ING_WELCOME_SESSION_ACK);
    n = recv_within(&L, fd, got, sizeof(got), ING_HDR_LEN * 2 + 1, TP_DEADLINE_MS);
    struct ing_msg m;
    ssize_t f = ing_msg_decode(got, n, 1u << 20, &m);
    assert_true(f > 0);
    assert_int_equal(m.type, ING_CLIENT_HELLO_SESSION);
    assert_int_equal(m.u.client_hello.session_flags, ING_SESSION_ACK);
    if ((size_t)f + ING_HDR_LEN > n) /* the Ping may come in a second read */
        n += recv_within(&L, fd, got + n, sizeof(got) - n, (size_t)f + ING_HDR_LEN - n,
                         TP_DEADLINE_MS);
    assert_true(ing_msg_decode(got + f, n - (size_t)f, 1u << 20, &m) > 0);
    assert_int_equal(m.type, ING_PING);
    close(fd);
    bc_load_fini(&L);

    /* A server without acknowledged results: the run stops with a message. */
    assert_int_equal(bc_load_init(&L, 1), 0);
    L.session = 2;
    assert_non_null(bc_add_client(&L, addr, &job, 1));
    fd = accept(ls, NULL, NULL);
    assert_true(fd >= 0);
    send_welcome(fd, ING_WELCOME_SESSION);
    uint64_t until = bc_now_ns() + (uint64_t)TP_DEADLINE_MS * 1000000u;
    int rc = 0;
    while (rc == 0 && bc_now_ns() < until)
        rc = bc_poll(&L, 5);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(L.err, "does not offer sessions with acknowledged results"));
    close(fd);
    close(ls);
    free(job.frame);
    bc_load_fini(&L);
}

/* The job templates with keys (loadgen --keys): the key patched per job is where the field
 * says, the body keeps its size (launcher: that of the workload without keys; user: the
 * inputdata keeps --payload bytes), and without keys the template is the workload's. */
static void
test_lg_key_templates(void **state)
{
    (void)state;
    struct bc_tmpl plain, t;
    size_t plain_len = 0, len = 0;
    assert_int_equal(bc_job_tmpl(&plain, 128, 0, "default", &plain_len), 0);
    assert_int_equal(plain_len, 253);
    assert_int_equal(plain.keys, 0);
    assert_int_equal(bc_job_tmpl_keys(&t, 128, 0, "default", 0, BC_KEY_USER, &len), 0);
    assert_int_equal(t.len, plain.len);
    assert_memory_equal(t.frame, plain.frame, plain.len);
    free(t.frame);
    for (uint8_t field = BC_KEY_LAUNCHER; field <= BC_KEY_USER; field++) {
        assert_int_equal(bc_job_tmpl_keys(&t, 128, 0, "default", 1000000, field, &len), 0);
        assert_int_equal(t.keys, 1000000);
        assert_int_equal(len, field == BC_KEY_COURSE ? plain_len + 2 : plain_len);
        bc_put_token(t.frame + t.id_off[0], 3, 77);
        bc_put_key(t.frame + t.key_off, 999042);
        struct ing_msg m;
        assert_int_equal(ing_msg_decode(t.frame, t.len, 1u << 20, &m), (ssize_t)t.len);
        const struct ing_client_new_job *nj = &m.u.new_job;
        assert_memory_equal(nj->job.job_id.p, "000300000000004d", BC_TOKLEN);
        struct ing_view want = {"k999042", 7}, launcher = {"loadgen", 7}, course = {"bench", 5};
        struct ing_view l = field == BC_KEY_LAUNCHER ? want : launcher;
        struct ing_view co = field == BC_KEY_COURSE ? want : course;
        assert_int_equal(nj->launcher.len, l.len);
        assert_memory_equal(nj->launcher.p, l.p, l.len);
        assert_int_equal(nj->job.course_id.len, co.len);
        assert_memory_equal(nj->job.course_id.p, co.p, co.len);
        assert_int_equal(nj->job.inputdata.len, 128);
        const char *user = memmem(nj->job.inputdata.p, nj->job.inputdata.len,
                                  "\xa9@username\xa7k999042", 18);
        assert_true((user != NULL) == (field == BC_KEY_USER));
        free(t.frame);
    }
    /* Too many keys, or no room for the user in the inputdata. */
    assert_int_equal(bc_job_tmpl_keys(&t, 128, 0, "default", 1000001, 0, &len), -1);
    assert_int_equal(bc_job_tmpl_keys(&t, 25, 0, "default", 5, BC_KEY_USER, &len), -1);
    assert_int_equal(bc_job_tmpl_keys(&t, 26, 0, "default", 5, BC_KEY_USER, &len), 0);
    free(t.frame);
    /* The draw: every key of 7 comes up, none outside, the same for the same index. */
    uint32_t seen = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        uint32_t k = bc_key_of(i, 7);
        assert_true(k < 7);
        assert_int_equal(k, bc_key_of(i, 7));
        seen |= 1u << k;
    }
    assert_int_equal(seen, 0x7f);
    free(plain.frame);
}

/* keyed: one client floods n jobs drawing their key among keys in field (in dialect zmq,
 * release zrel, or native) into a backend with --fair-share FIELD and no agent. A native
 * client's queue snapshot, which lists the waiting jobs in dispatch order with fair share
 * (proto.md 5.5, 7.4), must hold every job with its key (as launcher, as the course in
 * info, or not shown for the user) and be exactly the order of start-time fair queueing:
 * a key's j-th job has the start tag j x 2^20 (nothing was dispatched), so the jobs come in
 * rounds (a key's first jobs, then its second jobs, ...) and by arrival within one. Then two
 * agents work them off: every job answered once. */
static void
keyed(struct tp_ctx *c, bool zmq, uint8_t zrel, uint8_t field, uint32_t keys, uint32_t n)
{
    struct bc_tmpl job;
    size_t body_len = 0;
    struct load L;
    tp_start(c, "--orphan-timeout", "0", "--fair-share", bc_key_field_names[field], NULL);
    assert_int_equal(bc_load_init(&L, n), 0);
    if (zmq) {
        assert_int_equal(bc_load_dialect(&L, zrel), 0);
        assert_int_equal(bc_zjob_tmpl_keys(&job, 128, 0, "default", zrel, keys, field, &body_len),
                         0);
    } else {
        assert_int_equal(bc_job_tmpl_keys(&job, 128, 0, "default", keys, field, &body_len), 0);
    }
    struct bc_conn *cl = bc_add_client(&L, c->be.client_addr, &job, 0);
    assert_non_null(cl);
    cl->quota = n;
    cl->ping_after = true;
    assert_true(run_until(&L, clients_ponged, 1));
    L.limit = n;
    L.submitting = true;
    assert_true(run_until(&L, clients_ponged, 2));
    L.submitting = false;
    assert_int_equal(L.submitted, n);
    assert_int_equal(L.done, 0);

    /* The expected order: (round, index), the round being the key's jobs before it. */
    uint32_t *round = calloc(n, sizeof(*round)), *per_key = calloc(keys, sizeof(*per_key));
    uint64_t *want = calloc(n, sizeof(*want));
    assert_non_null(round);
    assert_non_null(per_key);
    assert_non_null(want);
    for (uint32_t i = 0; i < n; i++) {
        round[i] = per_key[bc_key_of(i, keys)]++;
        want[i] = (uint64_t)round[i] << 32 | i;
    }
    qsort(want, n, sizeof(*want), bc_cmp_u64);
    for (uint32_t k = 0; k < keys; k++)
        assert_true(per_key[k] > 0); /* every key drawn */

    struct tp_peer *q = tp_client(c, "queue", NULL);
    tp_send_type(q, ING_CLIENT_GET_QUEUE);
    const struct ing_msg *m = tp_expect(q, ING_BACKEND_GET_QUEUE);
    assert_int_equal(m->u.queue.n_running, 0);
    assert_int_equal(m->u.queue.n_waiting, n);
    const uint8_t *pos = m->u.queue.wire_waiting;
    for (uint32_t i = 0; i < n; i++) {
        struct ing_queue_waiting e;
        uint32_t client;
        uint64_t idx;
        pos = ing_queue_next_waiting(pos, &e);
        assert_int_equal(e.job_id.len, BC_TOKLEN);
        assert_int_equal(bc_get_token((const uint8_t *)e.job_id.p, &client, &idx), 0);
        if (idx != (want[i] & 0xffffffffu))
            fail_msg("entry %u: job %llu (round %u), expected job %llu (round %u)", i,
                     (unsigned long long)idx, idx < n ? round[idx] : 0,
                     (unsigned long long)(want[i] & 0xffffffffu), (unsigned)(want[i] >> 32));
        uint8_t name[BC_KEYLEN];
        bc_put_key(name, bc_key_of(idx, keys));
        if (field == BC_KEY_LAUNCHER) {
            assert_int_equal(e.launcher.len, BC_KEYLEN);
            assert_memory_equal(e.launcher.p, name, BC_KEYLEN);
        } else {
            assert_int_equal(e.launcher.len, 7);
            assert_memory_equal(e.launcher.p, "loadgen", 7);
        }
        const char *course = field == BC_KEY_COURSE ? (const char *)name : "bench";
        assert_true(e.info.len > 5);
        assert_memory_equal(e.info.p, course, field == BC_KEY_COURSE ? BC_KEYLEN : 5);
    }
    free(round);
    free(per_key);
    free(want);

    /* Work them off. */
    L.limit = n;
    for (int i = 0; i < 2; i++)
        assert_non_null(bc_add_agent(&L, c->be.agent_addr, 16, "default"));
    assert_true(run_until(&L, bc_all_done, n));
    assert_int_equal(L.done, n);
    assert_int_equal(L.started, n);
    assert_int_equal(L.dup, 0);
    assert_int_equal(L.bad, 0);
    assert_int_equal(L.errors, 0);
    bc_load_fini(&L);
    free(job.frame);
}

TP_TEST(test_lg_keys_native_launcher)
{
    keyed(c, false, 0, BC_KEY_LAUNCHER, 7, 2000);
}

TP_TEST(test_lg_keys_native_course)
{
    keyed(c, false, 0, BC_KEY_COURSE, 5, 1000);
}

TP_TEST(test_lg_keys_zmq_user)
{
    keyed(c, true, BC_ZREL_MAIN, BC_KEY_USER, 7, 1000);
}

TP_TEST(test_lg_keys_zmq_v06_launcher)
{
    keyed(c, true, BC_ZREL_V06, BC_KEY_LAUNCHER, 3, 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_lg_zmq_main),
        TP_CASE(test_lg_zmq_v08),
        TP_CASE(test_lg_zmq_v06),
        TP_CASE(test_lg_native),
        TP_CASE(test_lg_zmq_enqueue),
        cmocka_unit_test(test_lg_zmq_reader_refusals),
        cmocka_unit_test(test_lg_zmq_waits_for_ready),
        cmocka_unit_test(test_lg_session_waits_for_welcome),
        cmocka_unit_test(test_lg_key_templates),
        TP_CASE(test_lg_keys_native_launcher),
        TP_CASE(test_lg_keys_native_course),
        TP_CASE(test_lg_keys_zmq_user),
        TP_CASE(test_lg_keys_zmq_v06_launcher),
    };
    return cmocka_run_group_tests_name("loadgen", tests, NULL, NULL);
}
