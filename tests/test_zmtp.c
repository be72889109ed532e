/* SPDX-License-Identifier: MIT */
/* test_zmtp.c: the ZMTP 3.x server-side state machine (src/zmtp.c).
 *
 * Every input is fed all at once and one byte at a time, each window copied so that it ends
 * at a PROT_NONE guard page (an over-read crashes), and into a fresh buffer at every call
 * (the machine must keep offsets, not pointers).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zmtp.h"

/* ---- guard-page buffers ---- */

struct guard {
    uint8_t *map;
    size_t map_len;
    uint8_t *p; /* n bytes ending at the guard page */
};

static void
guard_make(struct guard *g, const uint8_t *src, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (n + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    g->map_len = (data_pages + 1) * page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + data_pages * page, page, PROT_NONE), 0);
    g->p = g->map + data_pages * page - n;
    if (n > 0)
        memcpy(g->p, src, n);
}

static void
guard_free(struct guard *g)
{
    munmap(g->map, g->map_len);
}

/* ---- byte-stream builder ---- */

struct bb {
    uint8_t b[70000];
    size_t n;
};

static void
bb_put(struct bb *s, const void *p, size_t n)
{
    assert_true(s->n + n <= sizeof(s->b));
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void
bb_u8(struct bb *s, uint8_t v)
{
    bb_put(s, &v, 1);
}

static void
bb_u32(struct bb *s, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    bb_put(s, b, 4);
}

static void
bb_u64(struct bb *s, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        bb_u8(s, (uint8_t)(v >> (8 * i)));
}

/* A greeting with the given version and mechanism (as libzmq 4.3.4 sends it). */
static void
bb_greeting(struct bb *s, uint8_t major, uint8_t minor, const char *mech)
{
    uint8_t g[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, major, minor};
    memcpy(g + 12, mech, strlen(mech));
    bb_put(s, g, sizeof(g));
}

/* One frame: flags (LONG chosen automatically unless force_long) and body. */
static void
bb_frame(struct bb *s, uint8_t flags, const void *body, size_t len, bool force_long)
{
    if (len > 255 || force_long) {
        bb_u8(s, flags | ZMTP_F_LONG);
        bb_u64(s, len);
    } else {
        bb_u8(s, flags);
        bb_u8(s, (uint8_t)len);
    }
    bb_put(s, body, len);
}

/* A command frame: name and data. */
static void
bb_cmd(struct bb *s, const char *name, const void *data, size_t len)
{
    uint8_t body[1024];
    size_t nl = strlen(name);
    assert_true(1 + nl + len <= sizeof(body));
    body[0] = (uint8_t)nl;
    memcpy(body + 1, name, nl);
    if (len > 0)
        memcpy(body + 1 + nl, data, len);
    bb_frame(s, ZMTP_F_COMMAND, body, 1 + nl + len, false);
}

/* READY metadata: property list "name", value pairs, value NULL ends. */
static void
bb_ready(struct bb *s, const char *n1, const char *v1, const char *n2, const char *v2)
{
    struct bb *m = calloc(1, sizeof(*m));
    const char *names[2] = {n1, n2}, *vals[2] = {v1, v2};
    for (int i = 0; i < 2; i++) {
        if (names[i] == NULL)
            continue;
        bb_u8(m, (uint8_t)strlen(names[i]));
        bb_put(m, names[i], strlen(names[i]));
        bb_u32(m, (uint32_t)strlen(vals[i]));
        bb_put(m, vals[i], strlen(vals[i]));
    }
    bb_cmd(s, "READY", m->b, m->n);
    free(m);
}

static const uint8_t LIBZMQ_GREETING[64] = {
    0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1, 'N', 'U', 'L', 'L',
    /* rest: 16 NULs of mechanism, as-server 0, 31 NULs of filler */
};

static const uint8_t LIBZMQ_DEALER_READY[] = {
    0x04, 0x29, 0x05, 'R', 'E', 'A', 'D', 'Y', 0x0b, 'S', 'o', 'c', 'k', 'e', 't',
    '-',  'T',  'y',  'p', 'e', 0,   0,   0,   6,    'D', 'E', 'A', 'L', 'E', 'R',
    0x08, 'I',  'd',  'e', 'n', 't', 'i', 't', 'y',  0,   0,   0,   0,
};

static const uint8_t OUR_ROUTER_READY[] = {
    0x04, 0x29, 0x05, 'R', 'E', 'A', 'D', 'Y', 0x0b, 'S', 'o', 'c', 'k', 'e', 't',
    '-',  'T',  'y',  'p', 'e', 0,   0,   0,   6,    'R', 'O', 'U', 'T', 'E', 'R',
    0x08, 'I',  'd',  'e', 'n', 't', 'i', 't', 'y',  0,   0,   0,   0,
};

static void
bb_handshake(struct bb *s)
{
    bb_put(s, LIBZMQ_GREETING, sizeof(LIBZMQ_GREETING));
    bb_put(s, LIBZMQ_DEALER_READY, sizeof(LIBZMQ_DEALER_READY));
}

/* ---- driver ---- */

#define REC_MAX 16
#define REC_DATA 512

struct rec_ev {
    enum zmtp_ev_type type;
    uint32_t nframes;
    uint64_t size;
    uint16_t ttl;
    uint8_t major, minor;
    size_t len;             /* of data */
    uint8_t data[REC_DATA]; /* frame 0, identity, ping/pong context or error reason */
    size_t flen[8];         /* body lengths of up to 8 frames (walked with zmtp_frame_next) */
    bool fmore[8];
    uint8_t f1[REC_DATA]; /* body of frame 1 */
    size_t f1len;
};

struct rec {
    int n;
    struct rec_ev ev[REC_MAX];
    const char *why;
    struct zmtp z; /* the machine after the run */
};

static void
rec_copy(uint8_t *dst, size_t *dlen, struct zmtp_span s)
{
    size_t n = s.len < REC_DATA ? s.len : REC_DATA;
    memcpy(dst, s.p, n);
    *dlen = s.len;
}

static void
record(struct rec *r, const struct zmtp_event *ev)
{
    assert_true(r->n < REC_MAX);
    struct rec_ev *e = &r->ev[r->n++];
    memset(e, 0, sizeof(*e));
    e->type = ev->type;
    switch (ev->type) {
    case ZMTP_EV_GREETING:
        e->major = ev->u.greeting.major;
        e->minor = ev->u.greeting.minor;
        break;
    case ZMTP_EV_READY:
        assert_int_equal(ev->u.ready.socket_type.len, 6);
        assert_memory_equal(ev->u.ready.socket_type.p, "DEALER", 6);
        rec_copy(e->data, &e->len, ev->u.ready.identity);
        break;
    case ZMTP_EV_MESSAGE: {
        e->nframes = ev->u.msg.nframes;
        e->size = ev->u.msg.size;
        rec_copy(e->data, &e->len, ev->u.msg.frame[0]);
        if (e->nframes > 1)
            rec_copy(e->f1, &e->f1len, ev->u.msg.frame[1]);
        /* The wire walk agrees with the inline frames. */
        const uint8_t *pos = ev->u.msg.wire.p, *end = pos + ev->u.msg.wire.len;
        struct zmtp_span body;
        bool more;
        uint32_t i = 0;
        uint64_t total = 0;
        while (zmtp_frame_next(&pos, end, &body, &more)) {
            if (i < ZMTP_EV_FRAMES) {
                assert_ptr_equal(body.p, ev->u.msg.frame[i].p);
                assert_int_equal(body.len, ev->u.msg.frame[i].len);
            }
            if (i < 8) {
                e->flen[i] = body.len;
                e->fmore[i] = more;
            }
            assert_true(more == (i + 1 < e->nframes));
            total += body.len;
            i++;
        }
        assert_ptr_equal(pos, end);
        assert_int_equal(i, e->nframes);
        assert_int_equal(total, e->size);
        break;
    }
    case ZMTP_EV_PING:
        e->ttl = ev->u.ping.ttl;
        rec_copy(e->data, &e->len, ev->u.ping.context);
        break;
    case ZMTP_EV_PONG:
        rec_copy(e->data, &e->len, ev->u.pong.context);
        break;
    case ZMTP_EV_PEER_ERROR:
        rec_copy(e->data, &e->len, ev->u.error.reason);
        break;
    case ZMTP_EV_NEED_MORE:
        fail_msg("NEED_MORE recorded");
    }
}

/* Feeds in[0..n) in chunks of `chunk` bytes. Each call sees the unconsumed bytes copied
 * into a fresh guard-page buffer. Returns 0 (all consumed that could be) or the error. */
static int
drive(const uint8_t *in, size_t n, size_t chunk, uint64_t max_msg, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    zmtp_init(&r->z, max_msg);
    size_t start = 0, avail = 0;
    for (;;) {
        avail = avail + chunk > n ? n : avail + chunk;
        for (;;) {
            struct guard g;
            guard_make(&g, in + start, avail - start);
            struct zmtp_event ev;
            ssize_t k = zmtp_input(&r->z, g.p, avail - start, &ev);
            if (k < 0) {
                assert_non_null(ev.why);
                r->why = ev.why;
                guard_free(&g);
                return (int)k;
            }
            assert_true((size_t)k <= avail - start);
            start += (size_t)k;
            if (ev.type == ZMTP_EV_NEED_MORE) {
                /* The contract: need counts from the unconsumed bytes, is more than what
                 * is there, and never more than max_msg. */
                assert_true(ev.need > avail - start);
                assert_true(ev.need <= (max_msg < ZMTP_MIN_MAX_MSG ? ZMTP_MIN_MAX_MSG : max_msg));
                guard_free(&g);
                break;
            }
            record(r, &ev);
            guard_free(&g);
        }
        if (avail == n)
            return 0;
    }
}

/* Runs in both modes, checks they agree, and returns the result. */
static int
drive2(const uint8_t *in, size_t n, uint64_t max_msg, struct rec *r)
{
    struct rec *r1 = calloc(1, sizeof(*r1));
    int a = drive(in, n, n == 0 ? 1 : n, max_msg, r);
    int b = drive(in, n, 1, max_msg, r1);
    assert_int_equal(a, b);
    assert_int_equal(r->n, r1->n);
    for (int i = 0; i < r->n; i++) {
        assert_int_equal(r->ev[i].type, r1->ev[i].type);
        assert_int_equal(r->ev[i].len, r1->ev[i].len);
        assert_memory_equal(r->ev[i].data, r1->ev[i].data,
                            r->ev[i].len < REC_DATA ? r->ev[i].len : REC_DATA);
        assert_int_equal(r->ev[i].nframes, r1->ev[i].nframes);
    }
    if (a < 0)
        assert_string_equal(r->why, r1->why);
    free(r1);
    return a;
}

static struct bb *
bb_new(void)
{
    struct bb *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    return s;
}

static struct rec *
rec_new(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    return r;
}

/* ---- encoders ---- */

static void
test_zmtp_greeting_bytes(void **state)
{
    (void)state;
    uint8_t g[ZMTP_GREETING_LEN];
    memset(g, 0xaa, sizeof(g));
    zmtp_greeting(g);
    assert_memory_equal(g, LIBZMQ_GREETING, sizeof(g));
}

static void
test_zmtp_ready_bytes(void **state)
{
    (void)state;
    uint8_t out[128];
    assert_int_equal(zmtp_ready(out, sizeof(out), "ROUTER"), sizeof(OUR_ROUTER_READY));
    assert_memory_equal(out, OUR_ROUTER_READY, sizeof(OUR_ROUTER_READY));
    for (size_t cap = 0; cap < sizeof(OUR_ROUTER_READY); cap++)
        assert_int_equal(zmtp_ready(out, cap, "ROUTER"), -ENOMEM);
    assert_int_equal(zmtp_ready(out, sizeof(out), ""), -EINVAL);
    /* The DEALER form is what libzmq peers send. */
    assert_int_equal(zmtp_ready(out, sizeof(out), "DEALER"), sizeof(LIBZMQ_DEALER_READY));
    assert_memory_equal(out, LIBZMQ_DEALER_READY, sizeof(LIBZMQ_DEALER_READY));
}

static void
test_zmtp_frame_header(void **state)
{
    (void)state;
    uint8_t h[ZMTP_HDR_MAX];
    assert_int_equal(zmtp_frame_header(h, 0, false), 2);
    assert_memory_equal(h, "\x00\x00", 2);
    assert_int_equal(zmtp_frame_header(h, 255, true), 2);
    assert_memory_equal(h, "\x01\xff", 2);
    assert_int_equal(zmtp_frame_header(h, 256, false), 9);
    assert_memory_equal(h, "\x02\x00\x00\x00\x00\x00\x00\x01\x00", 9);
    assert_int_equal(zmtp_frame_header(h, 0x0102030405060708ull, true), 9);
    assert_memory_equal(h, "\x03\x01\x02\x03\x04\x05\x06\x07\x08", 9);
}

static void
test_zmtp_routing_id(void **state)
{
    (void)state;
    uint32_t c = 0x6b8b4567;
    uint8_t id[ZMTP_ROUTING_ID_LEN];
    zmtp_make_routing_id(&c, id);
    assert_memory_equal(id, "\x00\x6b\x8b\x45\x67", 5);
    zmtp_make_routing_id(&c, id);
    assert_memory_equal(id, "\x00\x6b\x8b\x45\x68", 5);
    c = 0xffffffff;
    zmtp_make_routing_id(&c, id);
    assert_memory_equal(id, "\x00\xff\xff\xff\xff", 5);
    assert_int_equal(c, 0);
    (void)zmtp_routing_seed();
}

static void
test_zmtp_command_encoders(void **state)
{
    (void)state;
    uint8_t out[300];
    assert_int_equal(zmtp_pong(out, sizeof(out), (const uint8_t *)"ctx", 3), 10);
    assert_memory_equal(out, "\x04\x08\x04PONGctx", 10);
    assert_int_equal(zmtp_pong(out, sizeof(out), NULL, 0), 7);
    assert_memory_equal(out, "\x04\x05\x04PONG", 7);
    assert_int_equal(zmtp_pong(out, 9, (const uint8_t *)"ctx", 3), -ENOMEM);
    assert_int_equal(zmtp_pong(out, sizeof(out), out, 17), -EINVAL);
    assert_int_equal(zmtp_ping(out, sizeof(out), 0x0102, (const uint8_t *)"c", 1), 10);
    assert_memory_equal(out,
                        "\x04\x08\x04PING\x01\x02"
                        "c",
                        10);
    assert_int_equal(zmtp_ping(out, sizeof(out), 0, out, 17), -EINVAL);
    assert_int_equal(zmtp_error(out, sizeof(out), "bad"), 12);
    assert_memory_equal(out,
                        "\x04\x0a\x05"
                        "ERROR\x03"
                        "bad",
                        12);
    assert_int_equal(zmtp_error(out, 11, "bad"), -ENOMEM);
    char longr[400];
    memset(longr, 'x', sizeof(longr) - 1);
    longr[sizeof(longr) - 1] = 0;
    assert_int_equal(zmtp_error(out, sizeof(out), longr), 9 + 1 + 5 + 1 + 255);
    assert_int_equal(out[0], ZMTP_F_COMMAND | ZMTP_F_LONG);
    assert_int_equal(out[15], 255);
}

/* ---- handshake and traffic ---- */

static void
test_zmtp_handshake_and_messages(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    bb_handshake(s);
    bb_frame(s, 0, "hello", 5, false);
    uint8_t big[300];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    bb_frame(s, 0, big, sizeof(big), false);
    bb_frame(s, 0, "", 0, false);
    bb_frame(s, 0, "x", 1, true); /* a small body in a long frame is allowed */

    assert_int_equal(drive2(s->b, s->n, 1 << 20, r), 0);
    assert_int_equal(r->n, 6);
    assert_int_equal(r->ev[0].type, ZMTP_EV_GREETING);
    assert_int_equal(r->ev[0].major, 3);
    assert_int_equal(r->ev[0].minor, 1);
    assert_int_equal(r->ev[1].type, ZMTP_EV_READY);
    assert_int_equal(r->ev[1].len, 0);
    assert_int_equal(r->ev[2].type, ZMTP_EV_MESSAGE);
    assert_int_equal(r->ev[2].nframes, 1);
    assert_int_equal(r->ev[2].len, 5);
    assert_memory_equal(r->ev[2].data, "hello", 5);
    assert_int_equal(r->ev[3].type, ZMTP_EV_MESSAGE);
    assert_int_equal(r->ev[3].len, 300);
    assert_memory_equal(r->ev[3].data, big, 300);
    assert_int_equal(r->ev[4].len, 0);
    assert_int_equal(r->ev[5].len, 1);
    assert_memory_equal(r->ev[5].data, "x", 1);
    assert_int_equal(r->z.state, ZMTP_S_TRAFFIC);
    free(s);
    free(r);
}

/* Every prefix of a valid stream is a valid partial stream: no error, and exactly the
 * units that are complete are reported. */
static void
test_zmtp_every_truncation(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    size_t ends[8];
    int nunits = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    ends[nunits++] = s->n;
    bb_ready(s, "Socket-Type", "DEALER", "Identity", "peer1");
    ends[nunits++] = s->n;
    bb_frame(s, ZMTP_F_MORE, "ab", 2, false);
    bb_frame(s, 0, "cde", 3, true);
    ends[nunits++] = s->n;
    uint8_t ctx[16] = "0123456789abcdef";
    uint8_t ping[18] = {0, 10};
    memcpy(ping + 2, ctx, 16);
    bb_cmd(s, "PING", ping, sizeof(ping));
    ends[nunits++] = s->n;
    bb_cmd(s, "PONG", "zz", 2);
    ends[nunits++] = s->n;
    bb_frame(s, 0, "last", 4, false);
    ends[nunits++] = s->n;

    for (size_t k = 0; k <= s->n; k++) {
        assert_int_equal(drive2(s->b, k, 1 << 16, r), 0);
        int expect = 0;
        while (expect < nunits && ends[expect] <= k)
            expect++;
        assert_int_equal(r->n, expect);
    }
    assert_int_equal(r->ev[1].type, ZMTP_EV_READY);
    assert_int_equal(r->ev[1].len, 5);
    assert_memory_equal(r->ev[1].data, "peer1", 5);
    assert_int_equal(r->ev[2].nframes, 2);
    assert_memory_equal(r->ev[2].data, "ab", 2);
    assert_int_equal(r->ev[2].f1len, 3);
    assert_memory_equal(r->ev[2].f1, "cde", 3);
    assert_int_equal(r->ev[3].type, ZMTP_EV_PING);
    assert_int_equal(r->ev[3].ttl, 10);
    assert_int_equal(r->ev[3].len, 16);
    assert_memory_equal(r->ev[3].data, ctx, 16);
    assert_int_equal(r->ev[4].type, ZMTP_EV_PONG);
    assert_int_equal(r->ev[4].len, 2);
    assert_int_equal(r->ev[5].type, ZMTP_EV_MESSAGE);
    free(s);
    free(r);
}

static void
test_zmtp_multipart(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    bb_handshake(s);
    uint8_t big[1000];
    memset(big, 'L', sizeof(big));
    bb_frame(s, ZMTP_F_MORE, "a", 1, false);
    bb_frame(s, ZMTP_F_MORE, "", 0, false);
    bb_frame(s, ZMTP_F_MORE, big, sizeof(big), false);
    bb_frame(s, ZMTP_F_MORE, "dd", 2, false);
    bb_frame(s, ZMTP_F_MORE, "eee", 3, false);
    bb_frame(s, 0, "ffff", 4, false);
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
    assert_int_equal(r->n, 3);
    struct rec_ev *e = &r->ev[2];
    assert_int_equal(e->type, ZMTP_EV_MESSAGE);
    assert_int_equal(e->nframes, 6);
    assert_int_equal(e->size, 1 + 0 + 1000 + 2 + 3 + 4);
    size_t lens[6] = {1, 0, 1000, 2, 3, 4};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(e->flen[i], lens[i]);
        assert_true(e->fmore[i] == (i < 5));
    }
    assert_memory_equal(e->data, "a", 1);
    assert_int_equal(e->f1len, 0);
    free(s);
    free(r);
}

static void
test_zmtp_identity_and_properties(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();

    /* Names are case-insensitive; unknown properties are ignored. */
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_ready(s, "X-Custom", "whatever", "socket-TYPE", "DEALER");
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->ev[1].type, ZMTP_EV_READY);
    assert_int_equal(r->ev[1].len, 0);

    /* A 255-byte identity. */
    char id[256];
    memset(id, 'i', 255);
    id[255] = 0;
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_ready(s, "Identity", id, "Socket-Type", "DEALER");
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
    assert_int_equal(r->ev[1].len, 255);
    assert_memory_equal(r->ev[1].data, id, 255);
    free(s);
    free(r);
}

/* Expects in[0..n) to fail with err once all of it is fed; when early, the error shows on
 * the last byte (the prefix without it is fine). The error is sticky. */
static void
expect_error(const uint8_t *in, size_t n, uint64_t max_msg, int err, bool early)
{
    struct rec *r = rec_new();
    assert_int_equal(drive2(in, n, max_msg, r), err);
    assert_int_equal(r->z.state, ZMTP_S_FAILED);
    struct zmtp_event ev;
    assert_int_equal(zmtp_input(&r->z, in, n, &ev), err);
    assert_string_equal(ev.why, r->why);
    if (early)
        assert_int_equal(drive2(in, n - 1, max_msg, r), 0);
    free(r);
}

static void
test_zmtp_bad_signature(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    bb_put(s, LIBZMQ_GREETING, 64);
    s->b[0] = 0x00;
    expect_error(s->b, 1, 1 << 16, -EPROTO, true);
    expect_error(s->b, 64, 1 << 16, -EPROTO, false);
    s->b[0] = 0xff;
    s->b[9] = 0x00; /* ZMTP 1.0 style identity frame */
    expect_error(s->b, 10, 1 << 16, -EPROTO, true);
    /* The padding is not significant. */
    memcpy(s->b, LIBZMQ_GREETING, 64);
    memset(s->b + 1, 0x5a, 8);
    struct rec *r = rec_new();
    assert_int_equal(drive2(s->b, 64, 1 << 16, r), 0);
    assert_int_equal(r->n, 1);
    free(r);
    free(s);
}

static void
test_zmtp_versions(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    for (uint8_t major = 0; major < 3; major++) {
        s->n = 0;
        bb_greeting(s, major, 0, "NULL");
        expect_error(s->b, 11, 1 << 16, -EPROTO, true);
        expect_error(s->b, 64, 1 << 16, -EPROTO, false);
    }
    /* ZMTP 3.0 (libzmq 4.0/4.1) is accepted, and so is a higher version (the spec says
     * a peer MUST accept higher versions and talk its own protocol). */
    uint8_t ok[][2] = {{3, 0}, {3, 1}, {3, 2}, {4, 0}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        s->n = 0;
        bb_greeting(s, ok[i][0], ok[i][1], "NULL");
        bb_put(s, LIBZMQ_DEALER_READY, sizeof(LIBZMQ_DEALER_READY));
        bb_frame(s, 0, "m", 1, false);
        assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
        assert_int_equal(r->n, 3);
        assert_int_equal(r->ev[0].major, ok[i][0]);
        assert_int_equal(r->ev[0].minor, ok[i][1]);
    }
    free(r);
    free(s);
}

static void
test_zmtp_mechanisms(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    const char *mechs[] = {"PLAIN", "CURVE", "GSSAPI", "NULLX"};
    size_t bad_at[] = {12, 12, 12, 16};
    for (size_t i = 0; i < 4; i++) {
        s->n = 0;
        bb_greeting(s, 3, 1, mechs[i]);
        expect_error(s->b, bad_at[i] + 1, 1 << 16, -EPROTO, true);
        expect_error(s->b, 64, 1 << 16, -EPROTO, false);
        struct rec *r = rec_new();
        drive2(s->b, 64, 1 << 16, r);
        assert_string_equal(r->why, "security mechanism is not NULL");
        assert_false(zmtp_error_allowed(&r->z));
        free(r);
    }
    free(s);
}

static void
test_zmtp_socket_types(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    const char *types[] = {"PUB", "REQ", "ROUTER", "dealer", "DEALERX", ""};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        s->n = 0;
        bb_put(s, LIBZMQ_GREETING, 64);
        bb_ready(s, "Socket-Type", types[i], "Identity", "");
        struct rec *r = rec_new();
        assert_int_equal(drive2(s->b, s->n, 1 << 16, r), -EPROTO);
        assert_string_equal(r->why, "READY: Socket-Type must be DEALER");
        assert_int_equal(r->n, 1); /* the greeting was reported */
        assert_true(zmtp_error_allowed(&r->z));
        /* Sticky. */
        struct zmtp_event ev;
        assert_int_equal(zmtp_input(&r->z, s->b, s->n, &ev), -EPROTO);
        assert_string_equal(ev.why, "READY: Socket-Type must be DEALER");
        free(r);
    }
    /* No Socket-Type at all. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_ready(s, "Identity", "", NULL, NULL);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    free(s);
}

static void
test_zmtp_bad_ready(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct bb *m = bb_new();

    /* Identity starting with a zero byte (reserved for generated ids). */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    m->n = 0;
    bb_u8(m, 11);
    bb_put(m, "Socket-Type", 11);
    bb_u32(m, 6);
    bb_put(m, "DEALER", 6);
    bb_u8(m, 8);
    bb_put(m, "Identity", 8);
    bb_u32(m, 2);
    bb_put(m, "\x00\x01", 2);
    bb_cmd(s, "READY", m->b, m->n);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* Identity over 255 bytes. */
    char id[300];
    memset(id, 'i', 299);
    id[299] = 0;
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    m->n = 0;
    bb_u8(m, 8);
    bb_put(m, "Identity", 8);
    bb_u32(m, 299);
    bb_put(m, id, 299);
    bb_u8(m, 11);
    bb_put(m, "Socket-Type", 11);
    bb_u32(m, 6);
    bb_put(m, "DEALER", 6);
    uint8_t body[1024] = {5, 'R', 'E', 'A', 'D', 'Y'};
    memcpy(body + 6, m->b, m->n);
    bb_frame(s, ZMTP_F_COMMAND, body, 6 + m->n, false);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* Socket-Type twice. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_ready(s, "Socket-Type", "DEALER", "Socket-Type", "DEALER");
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* Truncated property: value length past the end of the command. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    m->n = 0;
    bb_u8(m, 11);
    bb_put(m, "Socket-Type", 11);
    bb_u32(m, 7);
    bb_put(m, "DEALER", 6);
    bb_cmd(s, "READY", m->b, m->n);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* Truncated property: no room for the value length. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_cmd(s, "READY", "\x0bSocket-Type\x00\x00", 14);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* Empty property name. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_cmd(s, "READY", "\x00\x00\x00\x00\x00", 5);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* A message, or another command, instead of READY. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_frame(s, 0, "early", 5, false);
    expect_error(s->b, s->n - 5, 1 << 16, -EPROTO, true); /* known from the header */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_cmd(s, "PING", "\x00\x00", 2);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_cmd(s, "HELLO", "", 0);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);

    /* A second READY. */
    s->n = 0;
    bb_handshake(s);
    bb_put(s, LIBZMQ_DEALER_READY, sizeof(LIBZMQ_DEALER_READY));
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    free(m);
    free(s);
}

static void
test_zmtp_malformed_commands(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    /* Name length 0, name longer than the body, non-alphabetic name, empty body. */
    const uint8_t *bodies[] = {(const uint8_t *)"\x00PING", (const uint8_t *)"\x09PING",
                               (const uint8_t *)"\x04PI-G\x00\x00", (const uint8_t *)""};
    size_t lens[] = {5, 5, 7, 0};
    for (size_t i = 0; i < 4; i++) {
        s->n = 0;
        bb_handshake(s);
        bb_frame(s, ZMTP_F_COMMAND, bodies[i], lens[i], false);
        expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    }
    /* PING without its TTL, PING or PONG with a context over 16 bytes. */
    uint8_t ctx[19] = {0};
    s->n = 0;
    bb_handshake(s);
    bb_cmd(s, "PING", ctx, 1);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    s->n = 0;
    bb_handshake(s);
    bb_cmd(s, "PING", ctx, 19);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    s->n = 0;
    bb_handshake(s);
    bb_cmd(s, "PONG", ctx, 17);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    free(s);
}

static void
test_zmtp_commands_with_more(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    uint8_t flags[] = {ZMTP_F_COMMAND | ZMTP_F_MORE, ZMTP_F_COMMAND | ZMTP_F_MORE | ZMTP_F_LONG};
    for (size_t i = 0; i < 2; i++) {
        /* In the handshake and in traffic: refused at the flags byte. */
        s->n = 0;
        bb_put(s, LIBZMQ_GREETING, 64);
        bb_u8(s, flags[i]);
        expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
        s->n = 0;
        bb_handshake(s);
        bb_u8(s, flags[i]);
        expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    }
    /* Reserved flag bits. */
    for (unsigned bit = 3; bit < 8; bit++) {
        s->n = 0;
        bb_handshake(s);
        bb_u8(s, (uint8_t)(1u << bit));
        expect_error(s->b, s->n, 1 << 16, -EPROTO, true);
    }
    /* A command between the frames of a message. */
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, "a", 1, false);
    bb_cmd(s, "PING", "\x00\x00", 2);
    expect_error(s->b, s->n, 1 << 16, -EPROTO, false);
    free(s);
}

static void
test_zmtp_ping_pong(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    uint8_t cmd[64];
    bb_handshake(s);
    ssize_t k = zmtp_ping(cmd, sizeof(cmd), 300, (const uint8_t *)"hb-1", 4);
    assert_true(k > 0);
    bb_put(s, cmd, (size_t)k);
    bb_cmd(s, "PING", "\x00\x00", 2); /* empty context */
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
    assert_int_equal(r->n, 4);
    assert_int_equal(r->ev[2].type, ZMTP_EV_PING);
    assert_int_equal(r->ev[2].ttl, 300);
    assert_int_equal(r->ev[2].len, 4);
    assert_memory_equal(r->ev[2].data, "hb-1", 4);
    /* The answer echoes the context. */
    k = zmtp_pong(cmd, sizeof(cmd), r->ev[2].data, r->ev[2].len);
    assert_int_equal(k, 11);
    assert_memory_equal(cmd, "\x04\x09\x04PONGhb-1", 11);
    assert_int_equal(r->ev[3].type, ZMTP_EV_PING);
    assert_int_equal(r->ev[3].len, 0);
    free(r);
    free(s);
}

static void
test_zmtp_skipped_commands(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    bb_handshake(s);
    bb_cmd(s, "SUBSCRIBE", "topic", 5);
    bb_cmd(s, "CANCEL", "", 0);
    bb_frame(s, 0, "after", 5, false);
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), 0);
    assert_int_equal(r->n, 3);
    assert_int_equal(r->ev[2].type, ZMTP_EV_MESSAGE);
    assert_memory_equal(r->ev[2].data, "after", 5);

    /* One call consumes the skipped commands and the message. */
    struct zmtp z;
    struct zmtp_event ev;
    zmtp_init(&z, 1 << 16);
    size_t off = 0;
    off += (size_t)zmtp_input(&z, s->b, s->n, &ev);
    off += (size_t)zmtp_input(&z, s->b + off, s->n - off, &ev);
    assert_int_equal(ev.type, ZMTP_EV_READY);
    ssize_t k = zmtp_input(&z, s->b + off, s->n - off, &ev);
    assert_int_equal(ev.type, ZMTP_EV_MESSAGE);
    assert_int_equal(off + (size_t)k, s->n);
    free(r);
    free(s);
}

static void
test_zmtp_peer_error(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_cmd(s, "ERROR", "\x04nope", 5);
    /* The event, then the sticky -ECONNRESET on the next call. */
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), -ECONNRESET);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->ev[1].type, ZMTP_EV_PEER_ERROR);
    assert_int_equal(r->ev[1].len, 4);
    assert_memory_equal(r->ev[1].data, "nope", 4);
    struct zmtp_event ev;
    assert_int_equal(zmtp_input(&r->z, s->b, 0, &ev), -ECONNRESET);
    assert_non_null(ev.why);

    /* In traffic too. */
    s->n = 0;
    bb_handshake(s);
    bb_cmd(s, "ERROR", "", 0);
    assert_int_equal(drive2(s->b, s->n, 1 << 16, r), -ECONNRESET);
    assert_int_equal(r->n, 3);
    assert_int_equal(r->ev[2].type, ZMTP_EV_PEER_ERROR);
    assert_int_equal(r->ev[2].len, 0);
    free(r);
    free(s);
}

static void
test_zmtp_oversized(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    struct rec *r = rec_new();
    const uint64_t max = 1000;

    /* A long frame over the maximum: refused on its header, no body needed. */
    s->n = 0;
    bb_handshake(s);
    bb_u8(s, ZMTP_F_LONG);
    bb_u64(s, 2000);
    expect_error(s->b, s->n, max, -EMSGSIZE, true);
    drive2(s->b, s->n, max, r);
    assert_string_equal(r->why, "message larger than the maximum");

    /* Exactly at the maximum (wire bytes, header included) is fine; one more is not. */
    static uint8_t body[1000];
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, 0, body, max - 9, false);
    assert_int_equal(drive2(s->b, s->n, max, r), 0);
    assert_int_equal(r->n, 3);
    s->n = 0;
    bb_handshake(s);
    bb_u8(s, ZMTP_F_LONG);
    bb_u64(s, max - 8);
    expect_error(s->b, s->n, max, -EMSGSIZE, true);

    /* Huge sizes (top bit set, all ones). */
    uint64_t huge[] = {UINT64_MAX, 1ull << 63, (1ull << 63) - 1};
    for (size_t i = 0; i < 3; i++) {
        s->n = 0;
        bb_handshake(s);
        bb_u8(s, ZMTP_F_LONG);
        bb_u64(s, huge[i]);
        expect_error(s->b, s->n, UINT64_MAX, -EMSGSIZE, true); /* clamped to SIZE_MAX/2 */
        s->n = 0;
        bb_handshake(s);
        bb_u8(s, ZMTP_F_LONG | ZMTP_F_COMMAND);
        bb_u64(s, huge[i]);
        expect_error(s->b, s->n, max, -EMSGSIZE, true);
    }

    /* Short frames: a multi-part message whose frames add up past the maximum is refused
     * on the header of the frame that crosses it. With the smallest maximum (300). */
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, body, 255, false);
    bb_u8(s, 0);
    bb_u8(s, 100);
    expect_error(s->b, s->n, 0, -EMSGSIZE, true);
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, body, 255, false);
    bb_frame(s, 0, body, 41, false); /* 257 + 43 = 300: fits */
    assert_int_equal(drive2(s->b, s->n, 0, r), 0);
    assert_int_equal(r->n, 3);
    assert_int_equal(r->ev[2].size, 296);

    /* A MORE frame that fills the maximum leaves no room for the next header. */
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, body, 299, false); /* 9 + 299 = 308 > 300 */
    expect_error(s->b, 64 + sizeof(LIBZMQ_DEALER_READY) + 9, 0, -EMSGSIZE, true);
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, body, 289, true); /* 9 + 289 = 298: 2 bytes left */
    bb_frame(s, 0, "", 0, false);              /* an empty last frame fits exactly */
    assert_int_equal(drive2(s->b, s->n, 0, r), 0);
    assert_int_equal(r->ev[2].nframes, 2);
    s->n = 0;
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, body, 290, true); /* 299: 1 byte left, no header fits */
    expect_error(s->b, s->n, 0, -EMSGSIZE, true);

    /* An oversized READY. */
    s->n = 0;
    bb_put(s, LIBZMQ_GREETING, 64);
    bb_u8(s, ZMTP_F_COMMAND | ZMTP_F_LONG);
    bb_u64(s, 5000);
    expect_error(s->b, s->n, max, -EMSGSIZE, true);
    free(r);
    free(s);
}

static void
test_zmtp_input_contract(void **state)
{
    (void)state;
    struct bb *s = bb_new();
    bb_handshake(s);
    bb_frame(s, ZMTP_F_MORE, "abc", 3, false);
    struct zmtp z;
    struct zmtp_event ev;
    zmtp_init(&z, 1 << 16);
    size_t off = 0;
    off += (size_t)zmtp_input(&z, s->b, s->n, &ev);
    off += (size_t)zmtp_input(&z, s->b + off, s->n - off, &ev);
    assert_int_equal(ev.type, ZMTP_EV_READY);
    assert_int_equal(zmtp_input(&z, s->b + off, s->n - off, &ev), 0);
    assert_int_equal(ev.type, ZMTP_EV_NEED_MORE);
    assert_int_equal(ev.need, 5 + 2);
    /* Presenting less than what was already checked is a caller bug. */
    assert_int_equal(zmtp_input(&z, s->b + off, 4, &ev), -EINVAL);
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zmtp_greeting_bytes),
        cmocka_unit_test(test_zmtp_ready_bytes),
        cmocka_unit_test(test_zmtp_frame_header),
        cmocka_unit_test(test_zmtp_routing_id),
        cmocka_unit_test(test_zmtp_command_encoders),
        cmocka_unit_test(test_zmtp_handshake_and_messages),
        cmocka_unit_test(test_zmtp_every_truncation),
        cmocka_unit_test(test_zmtp_multipart),
        cmocka_unit_test(test_zmtp_identity_and_properties),
        cmocka_unit_test(test_zmtp_bad_signature),
        cmocka_unit_test(test_zmtp_versions),
        cmocka_unit_test(test_zmtp_mechanisms),
        cmocka_unit_test(test_zmtp_socket_types),
        cmocka_unit_test(test_zmtp_bad_ready),
        cmocka_unit_test(test_zmtp_malformed_commands),
        cmocka_unit_test(test_zmtp_commands_with_more),
        cmocka_unit_test(test_zmtp_ping_pong),
        cmocka_unit_test(test_zmtp_skipped_commands),
        cmocka_unit_test(test_zmtp_peer_error),
        cmocka_unit_test(test_zmtp_oversized),
        cmocka_unit_test(test_zmtp_input_contract),
    };
    return cmocka_run_group_tests_name("zmtp", tests, NULL, NULL);
}
