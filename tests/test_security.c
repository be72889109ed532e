/* SPDX-License-Identifier: MIT */
/* test_security.c: authentication, allow-lists, the kill policy and foreign reports (issue
 * "Robustness and security", tests of part 4), against $ING_BUILD/inginious-backend.
 *
 *  - proto.md §6 with --client-secret-file / --agent-secret-file: the Welcome carries the
 *    AUTH flag and a fresh nonce; a correct Auth gets AuthOk with the server's proof, then
 *    normal service; a wrong proof (wrong secret, flipped bit, other role, swapped nonces,
 *    a replay, the server's own proof reflected), or any other frame before Auth, gets
 *    Error AUTH and the close, and nothing sent with it is applied; no Auth within
 *    --handshake-timeout gets Error TIMEOUT; a ZeroMQ greeting on an endpoint with a secret
 *    is closed. Every byte the tests receive is kept and searched: the secrets never cross
 *    the wire (nor reach the log).
 *  - --client-allow / --agent-allow over IPv4 and IPv6 (::1, skipped when unavailable).
 *  - --kill-policy owner against the default any.
 *  - B6: reports about a job from an agent it was not sent to are dropped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "inginious/proto.h"
#include "support/chaos_util.h"
#include "support/tpeer.h"
#include "zmtp.h"

/* The secrets as written in their files (one trailing newline is not part of a secret). */
#define CLIENT_SECRET "client-Secret-7f3a9c1e-of-the-test"
#define AGENT_SECRET "agent-secret:XYZ/99+extra-bytes-of-it"

/* Every byte received by the peers of a test. */
static uint8_t *wire;
static size_t wire_len, wire_cap;

static void
wire_add(const void *p, size_t n)
{
    if (wire_len + n > wire_cap) {
        size_t cap = wire_cap ? wire_cap : 65536;
        uint8_t *w;

        while (cap < wire_len + n)
            cap *= 2;
        w = realloc(wire, cap);
        if (w == NULL)
            tp_fail("out of memory");
        wire = w;
        wire_cap = cap;
    }
    memcpy(wire + wire_len, p, n);
    wire_len += n;
}

/* capture keeps the frame p received last. */
static void
capture(struct tp_peer *p)
{
    size_t len;
    const uint8_t *f = tp_frame(p, &len);

    wire_add(f, len);
}

/* expect_empty_queue asks p for the queue (keeping the answer for scan_secrets) and checks
 * that it lists no job. */
static void
expect_empty_queue(struct tp_peer *p)
{
    struct tp_queue q;
    uint32_t n;

    tp_get_queue(p, &q);
    capture(p);
    n = q.n_running + q.n_waiting;
    tp_queue_free(&q);
    assert_int_equal(n, 0);
}

static int
teardown(void **state)
{
    free(wire);
    wire = NULL;
    wire_len = wire_cap = 0;
    return tp_teardown(state);
}

#define CASE(name) cmocka_unit_test_setup_teardown(name, tp_setup, teardown)

/* ------------------------------------------------------------------------------------------ */
/* Receiving, with every byte kept */

static const struct ing_msg *
sec_expect_at(const char *file, int line, struct tp_peer *p, uint8_t type)
{
    const struct ing_msg *m = tp_expect_at(file, line, p, type);

    capture(p);
    return m;
}
#define sec_expect(...) sec_expect_at(__FILE__, __LINE__, __VA_ARGS__)

static void
sec_expect_error_at(const char *file, int line, struct tp_peer *p, uint16_t code)
{
    const struct ing_msg *m = tp_expect_at(file, line, p, ING_ERROR);
    char t[200];

    capture(p);
    if (m->u.error.code != code)
        tp_fail_at(file, line, "%s: expected Error %u, received Error %u \"%s\"", p->label, code,
                   m->u.error.code, tp_cpy(t, sizeof(t), m->u.error.text));
}
#define sec_expect_error(...) sec_expect_error_at(__FILE__, __LINE__, __VA_ARGS__)

/* sec_expect_closed expects the close, with nothing but Errors before it. */
static void
sec_expect_closed_at(const char *file, int line, struct tp_peer *p)
{
    for (;;) {
        const struct ing_msg *m = NULL;
        int r = tp_recv(p, TP_DEADLINE_MS, &m);

        if (r == -EPIPE)
            return;
        if (r < 0)
            tp_fail_at(file, line, "%s: expected the close (%d)", p->label, r);
        capture(p);
        if (m->type != ING_ERROR)
            tp_fail_at(file, line, "%s: expected the close, received %s", p->label,
                       ing_msg_type_name(m->type));
    }
}
#define sec_expect_closed(...) sec_expect_closed_at(__FILE__, __LINE__, __VA_ARGS__)

/* sec_connect opens a peer and checks its Welcome (AUTH flag set or not). */
static struct tp_peer *
sec_connect_at(const char *file, int line, struct tp_ctx *c, uint8_t role, bool auth)
{
    static const uint8_t zero[ING_NONCE_LEN];
    struct tp_peer *p = tp_connect_at(file, line, c, role);

    capture(p); /* the Welcome */
    if (auth) {
        if (!(p->welcome.flags & ING_WELCOME_AUTH))
            tp_fail_at(file, line, "%s: Welcome without the AUTH flag (flags %#x)", p->label,
                       p->welcome.flags);
        if (memcmp(p->welcome.nonce, zero, ING_NONCE_LEN) == 0)
            tp_fail_at(file, line, "%s: Welcome with AUTH and a zero nonce", p->label);
    } else {
        unsigned want = role == ING_ROLE_CLIENT
                            ? ING_WELCOME_ACK | ING_WELCOME_SESSION | ING_WELCOME_SESSION_ACK
                            : ING_WELCOME_RESUME; /* 5.2 */
        if (p->welcome.flags != want)
            tp_fail_at(file, line, "%s: Welcome flags %#x, expected %#x", p->label,
                       p->welcome.flags, want);
        if (memcmp(p->welcome.nonce, zero, ING_NONCE_LEN) != 0)
            tp_fail_at(file, line, "%s: Welcome without AUTH carries a non-zero nonce", p->label);
    }
    return p;
}
#define sec_connect(...) sec_connect_at(__FILE__, __LINE__, __VA_ARGS__)

/* send_auth sends Auth{nc, mac}. */
static void
send_auth_at(const char *file, int line, struct tp_peer *p, const uint8_t nc[ING_NONCE_LEN],
             const uint8_t mac[ING_MAC_LEN])
{
    struct ing_msg m = {.type = ING_AUTH};

    memcpy(m.u.auth.nonce, nc, ING_NONCE_LEN);
    memcpy(m.u.auth.mac, mac, ING_MAC_LEN);
    tp_send_at(file, line, p, &m);
}
#define send_auth(...) send_auth_at(__FILE__, __LINE__, __VA_ARGS__)

/* authenticate answers the challenge with secret and checks AuthOk's proof. Writes the Auth
 * it sent into nc and mac when not NULL (for replays). */
static void
authenticate_at(const char *file, int line, struct tp_peer *p, const char *secret, uint8_t *nc_out,
                uint8_t *mac_out)
{
    uint8_t nc[ING_NONCE_LEN], mac[ING_MAC_LEN], proof[ING_MAC_LEN];
    const struct ing_msg *m;

    assert_int_equal(auth_nonce(nc), 0);
    auth_peer_mac((const uint8_t *)secret, strlen(secret), p->role, p->welcome.nonce, nc, mac);
    send_auth_at(file, line, p, nc, mac);
    m = sec_expect_at(file, line, p, ING_AUTH_OK);
    auth_server_mac((const uint8_t *)secret, strlen(secret), p->role, p->welcome.nonce, nc, proof);
    if (memcmp(m->u.auth_ok.mac, proof, ING_MAC_LEN) != 0)
        tp_fail_at(file, line, "%s: AuthOk carries a wrong server proof", p->label);
    if (nc_out != NULL)
        memcpy(nc_out, nc, ING_NONCE_LEN);
    if (mac_out != NULL)
        memcpy(mac_out, mac, ING_MAC_LEN);
}
#define authenticate(...) authenticate_at(__FILE__, __LINE__, __VA_ARGS__)

/* auth_client opens, authenticates and registers a client. */
static struct tp_peer *
auth_client_at(const char *file, int line, struct tp_ctx *c, const char *name)
{
    struct tp_peer *p = sec_connect_at(file, line, c, ING_ROLE_CLIENT, true);

    authenticate_at(file, line, p, CLIENT_SECRET, NULL, NULL);
    tp_client_hello_at(file, line, p, name);
    sec_expect_at(file, line, p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    snprintf(p->label, sizeof(p->label), "client %s", name);
    return p;
}
#define auth_client(...) auth_client_at(__FILE__, __LINE__, __VA_ARGS__)

/* auth_agent opens, authenticates and registers an agent with docker/default. */
static struct tp_peer *
auth_agent_at(const char *file, int line, struct tp_ctx *c, const char *name, uint32_t slots)
{
    struct tp_peer *p = sec_connect_at(file, line, c, ING_ROLE_AGENT, true);
    struct tp_env env = {.type = "docker", .name = "default", .id = "i1", .created = 1};

    authenticate_at(file, line, p, AGENT_SECRET, NULL, NULL);
    tp_hello_at(file, line, p, name, slots, &env, 1);
    snprintf(p->label, sizeof(p->label), "agent %s", name);
    return p;
}
#define auth_agent(...) auth_agent_at(__FILE__, __LINE__, __VA_ARGS__)

/* write_secret writes the secret file name in the test directory and returns its path. */
static const char *
write_secret(struct tp_ctx *c, const char *name, const char *content, char *path, size_t cap)
{
    FILE *f;

    snprintf(path, cap, "%s/%s", tp_dir(c), name);
    f = fopen(path, "we");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* start_auth starts the backend with the client secret, the agent secret or both. */
static void
start_auth(struct tp_ctx *c, bool client, bool agent, const char *extra_opt, const char *extra_val)
{
    char cpath[TP_PATH_MAX + 32], apath[TP_PATH_MAX + 32];
    const char *opts[8];
    size_t n = 0;

    if (client) {
        opts[n++] = "--client-secret-file";
        opts[n++] = write_secret(c, "client.secret", CLIENT_SECRET "\n", cpath, sizeof(cpath));
    }
    if (agent) {
        opts[n++] = "--agent-secret-file";
        opts[n++] = write_secret(c, "agent.secret", AGENT_SECRET "\r\n", apath, sizeof(apath));
    }
    if (extra_opt != NULL) {
        opts[n++] = extra_opt;
        opts[n++] = extra_val;
    }
    opts[n] = NULL;
    tp_start_argv_at(__FILE__, __LINE__, c, NULL, NULL, opts);
}

/* scan_secrets fails if a secret (or a 12-byte piece of one) is in the bytes received or in
 * the backend's log. */
static void
scan_secrets_at(const char *file, int line, struct tp_ctx *c)
{
    static const char *const secrets[] = {CLIENT_SECRET, AGENT_SECRET};
    size_t s, off;

    if (wire_len == 0)
        tp_fail_at(file, line, "nothing was captured");
    for (s = 0; s < 2; s++) {
        size_t len = strlen(secrets[s]);

        for (off = 0; off + 12 <= len; off++) {
            char piece[13];

            if (memmem(wire, wire_len, secrets[s] + off, 12) != NULL)
                tp_fail_at(file, line, "12 bytes of a secret crossed the wire (offset %zu)", off);
            memcpy(piece, secrets[s] + off, 12);
            piece[12] = '\0';
            if (tp_log_contains(c, piece))
                tp_fail_at(file, line, "12 bytes of a secret are in the backend's log");
        }
    }
}
#define scan_secrets(...) scan_secrets_at(__FILE__, __LINE__, __VA_ARGS__)

/* ======================================================================================== */
/* Authentication */

/* The Welcome of an endpoint with a secret has AUTH and a fresh nonce; the other endpoint's
 * has neither, and there Auth is just an unexpected message. */
TP_TEST(test_security_welcome_announces_auth)
{
    struct tp_peer *c1, *c2, *a, *cl;
    uint8_t nc[ING_NONCE_LEN] = {1}, mac[ING_MAC_LEN] = {2};

    start_auth(c, true, false, NULL, NULL);
    c1 = sec_connect(c, ING_ROLE_CLIENT, true);
    c2 = sec_connect(c, ING_ROLE_CLIENT, true);
    if (memcmp(c1->welcome.nonce, c2->welcome.nonce, ING_NONCE_LEN) == 0)
        tp_fail("two connections got the same nonce");
    if (strncmp(c1->welcome.server, "inginious-backend", 17) != 0)
        tp_fail("Welcome server \"%s\"", c1->welcome.server);
    /* No secret for agents: no authentication there. */
    a = sec_connect(c, ING_ROLE_AGENT, false);
    tp_hello(a, "A", 1, &(struct tp_env){.type = "docker", .name = "default", .created = 1}, 1);
    send_auth(a, nc, mac);
    sec_expect_error(a, ING_ERR_UNEXPECTED);
    tp_send_type(a, ING_PING);
    sec_expect(a, ING_PONG);
    /* The authenticated client sees the agent. */
    authenticate(c1, CLIENT_SECRET, NULL, NULL);
    tp_client_hello(c1, "c1");
    {
        const struct ing_msg *m = sec_expect(c1, ING_BACKEND_UPDATE_ENVIRONMENTS);
        char got[64];

        tp_envs_render(m->u.envs.environments, got, sizeof(got));
        assert_string_equal(got, "docker:[default]");
    }
    cl = auth_client(c, "c3");
    tp_send_type(cl, ING_PING);
    sec_expect(cl, ING_PONG);
    scan_secrets(c);
}

/* A correct Auth gets AuthOk with the server's proof, then everything works: a job from an
 * authenticated client runs on an authenticated agent. */
TP_TEST(test_security_auth_then_service)
{
    struct tp_peer *c1, *a;
    const struct ing_msg *m;
    uint8_t nc[ING_NONCE_LEN], mac[ING_MAC_LEN];

    start_auth(c, true, true, NULL, NULL);
    c1 = auth_client(c, "c1");
    a = auth_agent(c, "A", 1);
    sec_expect(c1, ING_BACKEND_UPDATE_ENVIRONMENTS);
    tp_submit(c1, "j1", 0);
    m = sec_expect(a, ING_BACKEND_NEW_JOB);
    assert_true(tp_view_is(m->u.job.job_id, "j1"));
    tp_started(a, "j1");
    sec_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_done(a, "j1", "success", "S-next");
    m = sec_expect(c1, ING_BACKEND_JOB_DONE);
    assert_true(tp_view_is(m->u.result.state, "S-next"));
    /* A second Auth once authenticated is just unexpected. */
    assert_int_equal(auth_nonce(nc), 0);
    memset(mac, 0, sizeof(mac));
    send_auth(c1, nc, mac);
    sec_expect_error(c1, ING_ERR_UNEXPECTED);
    tp_send_type(c1, ING_PING);
    sec_expect(c1, ING_PONG);
    expect_empty_queue(c1);
    scan_secrets(c);
}

/* How wrong_auth gets the proof wrong. */
enum wrong {
    WRONG_SECRET,    /* the other endpoint's secret */
    WRONG_BIT,       /* one bit of the right proof flipped */
    WRONG_ROLE,      /* the right secret for the other role */
    WRONG_SWAPPED,   /* the nonces in the other order */
    WRONG_REFLECTED, /* the server's proof instead of the peer's */
    WRONG_ZERO,      /* 32 zero bytes */
    WRONG_NONCE,     /* a proof for another client nonce than the one sent */
};

/* wrong_auth opens a client or agent connection, sends an Auth whose proof is wrong as kind
 * says, followed at once by a hello or a job, and expects Error AUTH and the close. */
static void
wrong_auth(struct tp_ctx *c, uint8_t role, enum wrong kind)
{
    const char *secret = role == ING_ROLE_CLIENT ? CLIENT_SECRET : AGENT_SECRET;
    const char *other = role == ING_ROLE_CLIENT ? AGENT_SECRET : CLIENT_SECRET;
    struct tp_peer *p = sec_connect(c, role, true);
    uint8_t nc[ING_NONCE_LEN], nc2[ING_NONCE_LEN], mac[ING_MAC_LEN];
    const uint8_t *ns = p->welcome.nonce;
    size_t sl = strlen(secret);

    assert_int_equal(auth_nonce(nc), 0);
    assert_int_equal(auth_nonce(nc2), 0);
    switch (kind) {
    case WRONG_SECRET:
        auth_peer_mac((const uint8_t *)other, strlen(other), role, ns, nc, mac);
        break;
    case WRONG_BIT:
        auth_peer_mac((const uint8_t *)secret, sl, role, ns, nc, mac);
        mac[17] ^= 0x08;
        break;
    case WRONG_ROLE:
        auth_peer_mac((const uint8_t *)secret, sl,
                      role == ING_ROLE_CLIENT ? ING_ROLE_AGENT : ING_ROLE_CLIENT, ns, nc, mac);
        break;
    case WRONG_SWAPPED:
        auth_peer_mac((const uint8_t *)secret, sl, role, nc, ns, mac);
        break;
    case WRONG_REFLECTED:
        auth_server_mac((const uint8_t *)secret, sl, role, ns, nc, mac);
        break;
    case WRONG_ZERO:
        memset(mac, 0, sizeof(mac));
        break;
    case WRONG_NONCE:
        auth_peer_mac((const uint8_t *)secret, sl, role, ns, nc2, mac);
        break;
    }
    p->lenient = true;
    send_auth(p, nc, mac);
    /* Sent at once after the Auth: must not be applied. */
    if (role == ING_ROLE_AGENT)
        tp_hello(p, "intruder", 4, &(struct tp_env){.type = "docker", .name = "evil"}, 1);
    else
        tp_submit(p, "intruder-job", 0);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
}

TP_TEST(test_security_wrong_proof_closed)
{
    struct tp_peer *c1, *p;
    uint8_t nc[ING_NONCE_LEN], mac[ING_MAC_LEN];
    int k;

    start_auth(c, true, true, NULL, NULL);
    c1 = auth_client(c, "c1");
    for (k = WRONG_SECRET; k <= WRONG_NONCE; k++) {
        wrong_auth(c, ING_ROLE_CLIENT, (enum wrong)k);
        wrong_auth(c, ING_ROLE_AGENT, (enum wrong)k);
    }
    if (!tp_log_contains(c, "authentication failed"))
        tp_fail("no log line for the failed authentications");
    /* A replay: a valid Auth from one connection is refused on another (new nonce). */
    p = sec_connect(c, ING_ROLE_CLIENT, true);
    authenticate(p, CLIENT_SECRET, nc, mac);
    tp_close(c, p);
    p = sec_connect(c, ING_ROLE_CLIENT, true);
    send_auth(p, nc, mac);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    /* Nothing the intruders sent was applied: no environment "evil", no job. */
    tp_expect_nothing(c1, TP_QUIET_MS);
    expect_empty_queue(c1);
    tp_send_type(c1, ING_PING);
    sec_expect(c1, ING_PONG);
    scan_secrets(c);
}

/* Any frame but Auth first: Error AUTH and the close, and nothing applied. */
TP_TEST(test_security_frames_before_auth_closed)
{
    struct tp_peer *c1, *p;
    uint8_t pre[ING_PREAMBLE_LEN];

    start_auth(c, true, true, NULL, NULL);
    c1 = auth_client(c, "c1");
    /* ClientHello, Ping, ClientGetQueue before Auth. */
    p = sec_connect(c, ING_ROLE_CLIENT, true);
    tp_client_hello(p, "early");
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    p = sec_connect(c, ING_ROLE_CLIENT, true);
    tp_send_type(p, ING_PING);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    /* Preamble, ClientHello and ClientNewJob in one write, as allowed without auth. */
    p = tp_open(c, c->be.client_addr);
    assert_non_null(p);
    p->role = ING_ROLE_CLIENT;
    p->lenient = true;
    ing_preamble_encode(pre, ING_ROLE_CLIENT);
    tp_send_raw(p, pre, sizeof(pre));
    tp_client_hello(p, "pipelined");
    tp_submit(p, "early-job", 0);
    sec_expect(p, ING_WELCOME);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    /* An agent's hello before Auth. */
    p = sec_connect(c, ING_ROLE_AGENT, true);
    p->lenient = true;
    tp_hello(p, "early", 2, &(struct tp_env){.type = "docker", .name = "early"}, 1);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    if (!tp_log_contains(c, "authentication required"))
        tp_fail("no log line for the frames before Auth");
    tp_expect_nothing(c1, TP_QUIET_MS);
    expect_empty_queue(c1);
    scan_secrets(c);
}

/* A frame that does not decode, or of an unknown type, is still a frame before Auth
 * (proto.md §6): Error AUTH and the close, not an answer that keeps the connection. */
TP_TEST(test_security_bad_frames_before_auth_closed)
{
    static const uint8_t bad_body[] = {0, 0, 0, 9, 'a'}; /* a truncated str */
    struct tp_peer *c1, *p;

    start_auth(c, true, true, NULL, NULL);
    c1 = auth_client(c, "c1");
    p = sec_connect(c, ING_ROLE_CLIENT, true);
    p->lenient = true;
    tp_send_frame(p, 0x7f, 0, "", 0);
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    p = sec_connect(c, ING_ROLE_AGENT, true);
    p->lenient = true;
    tp_send_frame(p, ING_CLIENT_HELLO, 0, bad_body, sizeof(bad_body));
    sec_expect_error(p, ING_ERR_AUTH);
    sec_expect_closed(p);
    tp_close(c, p);
    tp_send_type(c1, ING_PING);
    sec_expect(c1, ING_PONG);
    scan_secrets(c);
}

/* No Auth within --handshake-timeout: Error TIMEOUT and the close. An authenticated peer is
 * no longer subject to it. */
TP_TEST(test_security_auth_timeout)
{
    struct tp_peer *late, *ok, *silent;
    char hs[32];

    start_auth(c, true, false, "--handshake-timeout", cu_ms_arg(hs, sizeof(hs), 300));
    late = sec_connect(c, ING_ROLE_CLIENT, true);
    ok = sec_connect(c, ING_ROLE_CLIENT, true);
    authenticate(ok, CLIENT_SECRET, NULL, NULL);
    tp_client_hello(ok, "ok"); /* the opening ends with the hello */
    sec_expect(ok, ING_BACKEND_UPDATE_ENVIRONMENTS);
    silent = tp_open(c, c->be.client_addr); /* not even a preamble */
    assert_non_null(silent);
    sec_expect_error(late, ING_ERR_TIMEOUT);
    sec_expect_closed(late);
    sec_expect_error(silent, ING_ERR_TIMEOUT);
    sec_expect_closed(silent);
    if (!tp_log_contains(c, "opening handshake not finished in time"))
        tp_fail("no log line for the handshake timeout");
    tp_expect_nothing(ok, 400);
    tp_send_type(ok, ING_PING);
    sec_expect(ok, ING_PONG);
    scan_secrets(c);
}

/* A ZeroMQ greeting on an endpoint with a secret is closed (ZeroMQ peers cannot
 * authenticate); on the endpoint without a secret it is answered. */
TP_TEST(test_security_zeromq_refused_with_secret)
{
    uint8_t g[ZMTP_GREETING_LEN];
    struct tp_peer *z, *c1;
    size_t got = 0;
    int r;

    start_auth(c, true, false, NULL, NULL);
    c1 = auth_client(c, "c1");
    zmtp_greeting(g);
    z = tp_open(c, c->be.client_addr);
    assert_non_null(z);
    z->lenient = true;
    tp_send_raw(z, g, sizeof(g));
    r = cu_wait_eof(z->fd, cu_ms(5000), &got);
    if (r != 0)
        tp_fail("ZeroMQ greeting on the client endpoint (with a secret): not closed");
    if (got != 0)
        tp_fail("ZeroMQ greeting on the client endpoint: %zu bytes answered before the close", got);
    tp_close(c, z);
    if (!tp_log_contains(c, "ZeroMQ peer refused"))
        tp_fail("no log line for the refused ZeroMQ peer");
    /* The agent endpoint has no secret: the greeting is answered with ours. */
    z = tp_open(c, c->be.agent_addr);
    assert_non_null(z);
    tp_send_raw(z, g, sizeof(g));
    {
        uint8_t in[ZMTP_GREETING_LEN];
        size_t have = 0;
        uint64_t deadline = tp_now_ms() + (uint64_t)cu_ms(5000);

        while (have < sizeof(in)) {
            struct pollfd pf = {.fd = z->fd, .events = POLLIN};
            uint64_t now = tp_now_ms();
            ssize_t n;

            if (now >= deadline || poll(&pf, 1, (int)(deadline - now)) <= 0)
                break;
            n = recv(z->fd, in + have, sizeof(in) - have, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (n > 0)
                have += (size_t)n;
        }
        if (have < sizeof(in) || in[0] != 0xFF)
            tp_fail("no ZeroMQ greeting from the endpoint without a secret");
        wire_add(in, have);
    }
    tp_close(c, z);
    tp_send_type(c1, ING_PING);
    sec_expect(c1, ING_PONG);
    scan_secrets(c);
}

/* ======================================================================================== */
/* Allow-lists */

/* expect_refused connects to addr and expects a close without a single byte. */
static void
expect_refused_at(const char *file, int line, struct tp_ctx *c, const char *addr, uint8_t role)
{
    struct tp_peer *p = tp_open(c, addr);
    uint8_t pre[ING_PREAMBLE_LEN];
    size_t got = 0;
    int r;

    if (p == NULL)
        tp_fail_at(file, line, "connect %s: %s", addr, strerror(errno));
    ing_preamble_encode(pre, role);
    tp_write(p, pre, sizeof(pre)); /* may fail: the backend closes at once */
    r = cu_wait_eof(p->fd, cu_ms(5000), &got);
    if (r != 0 || got != 0)
        tp_fail_at(file, line, "%s: a peer outside the allow-list was %s", addr,
                   r != 0 ? "not closed" : "answered");
    tp_close(c, p);
}
#define expect_refused(...) expect_refused_at(__FILE__, __LINE__, __VA_ARGS__)

TP_TEST(test_security_client_allow_refuses)
{
    struct tp_peer *a;

    tp_start(c, "--client-allow", "10.0.0.0/8", "--agent-allow", "10.0.0.0/8,127.0.0.0/8", NULL);
    expect_refused(c, c->be.client_addr, ING_ROLE_CLIENT);
    expect_refused(c, c->be.client_addr, ING_ROLE_CLIENT);
    if (!tp_log_contains(c, "refused (not in the allow-list)"))
        tp_fail("no log line for the refused client");
    /* The agent endpoint has its own list, which allows loopback. */
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_send_type(a, ING_PING);
    tp_expect(a, ING_PONG);
}

TP_TEST(test_security_client_allow_accepts)
{
    struct tp_peer *c1, *c2;

    tp_start(c, "--client-allow", "10.0.0.0/8,127.0.0.0/8", "--client-allow", "192.168.1.7",
             "--agent-allow", "192.168.0.0/16", NULL);
    c1 = tp_client(c, "c1", "");
    cu_roundtrip(c1, cu_ms(1000));
    c2 = tp_client(c, "c2", "");
    tp_submit(c2, "j1", 0);
    tp_barrier(c2);
    /* Agents from loopback are not in their list. */
    expect_refused(c, c->be.agent_addr, ING_ROLE_AGENT);
    if (!tp_log_contains(c, "refused (not in the allow-list)"))
        tp_fail("no log line for the refused agent");
    tp_kill(c1, "j1");
    tp_expect_synthetic(c2, "j1", "killed", "You killed the job", "S-j1");
    cu_roundtrip(c1, cu_ms(1000));
}

TP_TEST(test_security_allow_ipv6)
{
    struct tp_peer *c1;

    if (!tp_ipv6_loopback()) {
        print_message("test_security_allow_ipv6: skipped: no IPv6 loopback (::1)\n");
        c->ok = true;
        skip();
    }
    tp_start_addrs(c, "tcp://[::1]:0", "tcp://[::1]:0", "--client-allow", "::1/128",
                   "--agent-allow", "127.0.0.0/8", NULL);
    c1 = tp_client(c, "c1", "");
    cu_roundtrip(c1, cu_ms(1000));
    /* An IPv4 list does not match an IPv6 peer. */
    expect_refused(c, c->be.agent_addr, ING_ROLE_AGENT);
    if (!tp_log_contains(c, "refused (not in the allow-list)"))
        tp_fail("no log line for the refused agent");
    cu_roundtrip(c1, cu_ms(1000));
}

/* ======================================================================================== */

/* run_and_wait: clients c1 and c2, agent A with one slot; c1's job "run" runs on A and its
 * job "wait" waits. */
static void
run_and_wait(struct tp_ctx *c, struct tp_peer **c1, struct tp_peer **c2, struct tp_peer **a)
{
    *c1 = tp_client(c, "c1", "");
    *c2 = tp_client(c, "c2", "");
    *a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(*c1, "docker:[default]");
    tp_expect_envs(*c2, "docker:[default]");
    tp_submit(*c1, "run", 0);
    tp_expect_job(*a, "run");
    tp_submit(*c1, "wait", 0);
    tp_barrier(*c1);
}

/* Kill policy */

TP_TEST(test_security_kill_policy_owner)
{
    struct tp_peer *c1, *c2, *a;
    struct tp_queue q;

    tp_start(c, "--kill-policy", "owner", NULL);
    run_and_wait(c, &c1, &c2, &a);
    /* c2 cannot kill c1's jobs: nobody hears anything, both stay. */
    tp_kill(c2, "run");
    tp_kill(c2, "wait");
    tp_barrier(c2);
    tp_expect_quiet(c, TP_QUIET_MS);
    if (!tp_log_contains(c, "not the client's job"))
        tp_fail("no log line for the refused kill");
    tp_get_queue(c2, &q);
    assert_int_equal(q.n_running, 1);
    assert_string_equal(q.running[0].id, "run");
    assert_int_equal(q.n_waiting, 1);
    assert_string_equal(q.waiting[0].id, "wait");
    tp_queue_free(&q);
    /* The waiting job is still dispatched in turn. */
    tp_done(a, "run", "success", "");
    tp_expect_done(c1, "run", "success", NULL, NULL);
    tp_expect_job(a, "wait");
    /* Its owner can kill it. */
    tp_kill(c1, "wait");
    {
        const struct ing_msg *m = tp_expect(a, ING_BACKEND_KILL_JOB);

        assert_true(tp_view_is(m->u.kill.job_id, "wait"));
    }
    tp_done(a, "wait", "killed", "S-wait");
    tp_expect_done(c1, "wait", "killed", NULL, "S-wait");
    tp_submit(c1, "w2", 0);
    tp_expect_job(a, "w2");
    tp_submit(c1, "w3", 0);
    tp_barrier(c1);
    tp_kill(c1, "w3");
    tp_expect_synthetic(c1, "w3", "killed", "You killed the job", "S-w3");
    tp_expect_nothing(c2, 0);
}

TP_TEST(test_security_kill_policy_any_default)
{
    struct tp_peer *c1, *c2, *a;
    const struct ing_msg *m;

    tp_start(c, NULL);
    run_and_wait(c, &c1, &c2, &a);
    tp_kill(c2, "wait");
    tp_expect_synthetic(c1, "wait", "killed", "You killed the job", "S-wait");
    tp_kill(c2, "run");
    m = tp_expect(a, ING_BACKEND_KILL_JOB);
    assert_true(tp_view_is(m->u.kill.job_id, "run"));
    tp_done(a, "run", "killed", "S-run");
    tp_expect_done(c1, "run", "killed", NULL, "S-run");
    tp_barrier(c2);
    tp_expect_nothing(c2, 0);
}

/* ======================================================================================== */
/* B6: foreign reports */

TP_TEST(test_security_foreign_result_dropped)
{
    struct tp_peer *c1, *a, *b, *u;
    struct tp_queue q;

    tp_start(c, NULL);
    c1 = tp_client(c, "c1", "");
    a = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_envs(c1, "docker:[default]");
    b = tp_agent(c, "B", 1, "docker/default", NULL);
    tp_expect_envs(c1, "docker:[default]");
    tp_submit(c1, "j1", 0);
    tp_expect_job(a, "j1");
    tp_submit(c1, "j2", 0);
    tp_expect_job(b, "j2");
    /* B reports on A's job: started, ssh, done. All dropped. */
    tp_started(b, "j1");
    tp_ssh(b, "j1", "evil.example", 22, "root", "pw");
    tp_done(b, "j1", "success", "forged");
    /* An agent that never said hello reports on it too. */
    u = tp_connect(c, ING_ROLE_AGENT);
    tp_done(u, "j1", "success", "forged");
    tp_expect_quiet(c, TP_QUIET_MS);
    if (!tp_log_contains(c, "not running on this agent"))
        tp_fail("no log line for the dropped report");
    /* j1 still runs on A, and B's slot was not freed by the forged result. */
    tp_get_queue(c1, &q);
    assert_int_equal(q.n_running, 2);
    assert_string_equal(q.running[0].id, "j1");
    assert_string_equal(q.running[0].agent, "A");
    assert_string_equal(q.running[1].id, "j2");
    assert_string_equal(q.running[1].agent, "B");
    tp_queue_free(&q);
    tp_submit(c1, "j3", 0);
    tp_barrier(c1);
    tp_expect_nothing(b, 0);
    /* The real reports go through. */
    tp_started(a, "j1");
    tp_expect(c1, ING_BACKEND_JOB_STARTED);
    tp_done(a, "j1", "failed", "S-real");
    tp_expect_done(c1, "j1", "failed", NULL, "S-real");
    tp_expect_job(a, "j3");
    tp_done(b, "j2", "success", "");
    tp_expect_done(c1, "j2", "success", NULL, NULL);
    tp_done(a, "j3", "success", "");
    tp_expect_done(c1, "j3", "success", NULL, NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_security_welcome_announces_auth),
        CASE(test_security_auth_then_service),
        CASE(test_security_wrong_proof_closed),
        CASE(test_security_frames_before_auth_closed),
        CASE(test_security_bad_frames_before_auth_closed),
        CASE(test_security_auth_timeout),
        CASE(test_security_zeromq_refused_with_secret),
        CASE(test_security_client_allow_refuses),
        CASE(test_security_client_allow_accepts),
        CASE(test_security_allow_ipv6),
        CASE(test_security_kill_policy_owner),
        CASE(test_security_kill_policy_any_default),
        CASE(test_security_foreign_result_dropped),
    };

    return cmocka_run_group_tests_name("security", tests, NULL, NULL);
}
