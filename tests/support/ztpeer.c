/* SPDX-License-Identifier: MIT */
/* ztpeer.c: a ZMTP 3.1 DEALER test peer speaking the INGInious msgpack dialect (ztpeer.h). */
#include "ztpeer.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zmq_msg.h"
#include "zmtp.h"

/* ---- input ---- */

static void
consume(struct tp_peer *t, size_t n)
{
    memmove(t->in, t->in + n, t->in_len - n);
    t->in_len -= n;
}

/* fill reads what is there. Returns bytes read (> 0), 0 at EOF, -EAGAIN, or -errno. */
static ssize_t
fill(struct tp_peer *t)
{
    if (t->in_cap - t->in_len < 65536) {
        size_t cap = t->in_cap ? t->in_cap * 2 : 131072;
        uint8_t *b = realloc(t->in, cap);
        if (b == NULL)
            return -ENOMEM;
        t->in = b;
        t->in_cap = cap;
    }
    ssize_t n = read(t->fd, t->in + t->in_len, t->in_cap - t->in_len);
    if (n > 0) {
        t->in_len += (size_t)n;
        return n;
    }
    if (n == 0) {
        t->eof = true;
        return 0;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* wait_bytes waits until t holds at least n bytes. Returns 0, -EPIPE or -ETIMEDOUT. */
static int
wait_bytes(struct tp_peer *t, size_t n, uint64_t deadline)
{
    while (t->in_len < n) {
        if (t->eof)
            return -EPIPE;
        ssize_t r = fill(t);
        if (r > 0 || r == 0)
            continue;
        if (r != -EAGAIN)
            return -EPIPE;
        uint64_t now = tp_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd pf = {.fd = t->fd, .events = POLLIN};
        poll(&pf, 1, (int)(deadline - now));
    }
    return 0;
}

/* One ZMTP frame at the start of t->in: 0 with *flags, body and lengths set, or -1 when
 * incomplete (*need: bytes needed). */
static int
frame_at(const struct tp_peer *t, uint8_t *flags, const uint8_t **body, size_t *blen, size_t *total,
         size_t *need)
{
    if (t->in_len < 2) {
        *need = 2;
        return -1;
    }
    uint8_t f = t->in[0];
    size_t hl = (f & ZMTP_F_LONG) ? 9 : 2;
    if (t->in_len < hl) {
        *need = hl;
        return -1;
    }
    uint64_t len = 0;
    if (f & ZMTP_F_LONG)
        for (int i = 1; i < 9; i++)
            len = len << 8 | t->in[i];
    else
        len = t->in[1];
    *need = hl + (size_t)len;
    if (t->in_len < *need)
        return -1;
    *flags = f;
    *body = t->in + hl;
    *blen = (size_t)len;
    *total = *need;
    return 0;
}

static void
send_frame(const char *file, int line, struct zt_peer *p, uint8_t flags, const void *body,
           size_t len)
{
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, len, false);
    hdr[0] |= flags;
    tp_send_raw_at(file, line, p->tp, hdr, hl);
    if (len > 0)
        tp_send_raw_at(file, line, p->tp, body, len);
}

/* A command frame: name-length, name, data. */
static bool
is_command(const uint8_t *b, size_t n, const char *name)
{
    size_t l = strlen(name);
    return n >= 1 + l && b[0] == l && memcmp(b + 1, name, l) == 0;
}

/* ---- opening ---- */

static void
greeting(uint8_t g[64])
{
    memset(g, 0, 64);
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 1;
    memcpy(g + 12, "NULL", 4);
}

struct zt_peer *
zt_open_at(const char *file, int line, struct tp_ctx *c, bool agent, bool greeting_first,
           const char *identity)
{
    const char *addr = agent ? c->be.agent_addr : c->be.client_addr;
    struct tp_peer *t = tp_open(c, addr);
    if (t == NULL)
        tp_fail_at(file, line, "connect %s: %s", addr, strerror(errno));
    struct zt_peer *p = calloc(1, sizeof(*p));
    if (p == NULL)
        tp_fail_at(file, line, "out of memory");
    p->tp = t;
    p->agent = agent;
    p->auto_pong = agent;
    snprintf(t->label, sizeof(t->label), "zmq-%s#%u", agent ? "agent" : "client", c->serial);
    uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    int r;
    if (greeting_first && (r = wait_bytes(t, 64, deadline)) != 0)
        tp_fail_at(file, line, "%s: no greeting from the server before ours: %s", t->label,
                   strerror(-r));
    uint8_t g[64];
    greeting(g);
    tp_send_raw_at(file, line, t, g, sizeof(g));
    /* READY: Socket-Type DEALER, and Identity when given. */
    uint8_t ready[300];
    size_t n = 0, idl = identity != NULL ? strlen(identity) : 0;
    ready[n++] = 5;
    memcpy(ready + n, "READY", 5);
    n += 5;
    ready[n++] = 11;
    memcpy(ready + n, "Socket-Type", 11);
    n += 11;
    ready[n++] = 0, ready[n++] = 0, ready[n++] = 0, ready[n++] = 6;
    memcpy(ready + n, "DEALER", 6);
    n += 6;
    if (idl > 0) {
        ready[n++] = 8;
        memcpy(ready + n, "Identity", 8);
        n += 8;
        ready[n++] = 0, ready[n++] = 0, ready[n++] = 0, ready[n++] = (uint8_t)idl;
        memcpy(ready + n, identity, idl);
        n += idl;
    }
    send_frame(file, line, p, ZMTP_F_COMMAND, ready, n);
    if ((r = wait_bytes(t, 64, deadline)) != 0)
        tp_fail_at(file, line, "%s: no greeting from the server: %s", t->label, strerror(-r));
    memcpy(p->greeting, t->in, 64);
    if (t->in[0] != 0xFF || t->in[9] != 0x7F || t->in[10] != 3 || memcmp(t->in + 12, "NULL", 4))
        tp_fail_at(file, line, "%s: bad server greeting", t->label);
    consume(t, 64);
    for (;;) {
        uint8_t f;
        const uint8_t *b;
        size_t bl, total, need;
        if (frame_at(t, &f, &b, &bl, &total, &need) != 0) {
            if ((r = wait_bytes(t, need, deadline)) != 0)
                tp_fail_at(file, line, "%s: no READY from the server: %s", t->label, strerror(-r));
            continue;
        }
        if (!(f & ZMTP_F_COMMAND) || !is_command(b, bl, "READY"))
            tp_fail_at(file, line, "%s: expected the server's READY", t->label);
        if (memmem(b, bl, "Socket-Type\0\0\0\6ROUTER", 21) == NULL)
            tp_fail_at(file, line, "%s: the server's READY is not a ROUTER's", t->label);
        consume(t, total);
        break;
    }
    return p;
}

void
zt_close(struct tp_ctx *c, struct zt_peer *p)
{
    if (p == NULL)
        return;
    tp_close(c, p->tp);
    free(p);
}

/* ---- sending ---- */

void
zt_send_raw_at(const char *file, int line, struct zt_peer *p, const void *body, size_t len)
{
    send_frame(file, line, p, 0, body, len);
}

void
zt_send_at(const char *file, int line, struct zt_peer *p, const struct ing_msg *m)
{
    struct ing_mp_writer w;
    ing_mp_writer_init_dyn(&w);
    int rc = zmq_msg_encode(m, &w, ZMQ_JOB_FIELD_COURSE_ID);
    if (rc != 0) {
        ing_mp_writer_fini(&w);
        tp_fail_at(file, line, "cannot encode %s: %s", ing_msg_type_name(m->type), strerror(-rc));
    }
    zt_send_raw_at(file, line, p, w.buf, w.len);
    ing_mp_writer_fini(&w);
}

void
zt_send_w_at(const char *file, int line, struct zt_peer *p, struct ing_mp_writer *w)
{
    if (w->err != 0) {
        ing_mp_writer_fini(w);
        tp_fail_at(file, line, "message writer error %d", w->err);
    }
    zt_send_raw_at(file, line, p, w->buf, w->len);
    ing_mp_writer_fini(w);
}

void
zt_map_begin(struct ing_mp_writer *w, uint32_t n)
{
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, n);
}

void
zt_kv_str(struct ing_mp_writer *w, const char *key, const char *value)
{
    ing_mp_put_cstr(w, key);
    ing_mp_put_cstr(w, value);
}

void
zt_kv_raw(struct ing_mp_writer *w, const char *key, const void *raw, size_t len)
{
    ing_mp_put_cstr(w, key);
    ing_mp_put_raw(w, raw, len);
}

void
zt_new_job_at(const char *file, int line, struct zt_peer *p, const char *id, const char *inputdata,
              size_t in_len, const char *params, size_t params_len)
{
    struct ing_mp_writer w;
    zt_map_begin(&w, 12);
    zt_kv_str(&w, "job_id", id);
    zt_kv_lit(&w, "priority", "\x00");
    zt_kv_str(&w, "course_id", "c");
    zt_kv_str(&w, "task_id", "t");
    zt_kv_lit(&w, "task_problems", "\x80");
    zt_kv_raw(&w, "inputdata", inputdata != NULL ? inputdata : "\x80",
              inputdata != NULL ? in_len : 1);
    zt_kv_str(&w, "environment_type", "docker");
    zt_kv_str(&w, "environment", "default");
    zt_kv_raw(&w, "environment_parameters", params != NULL ? params : "\x80",
              params != NULL ? params_len : 1);
    zt_kv_lit(&w, "debug", "\xc2");
    zt_kv_str(&w, "launcher", "L");
    zt_kv_str(&w, "@type", "ClientNewJob");
    zt_send_w_at(file, line, p, &w);
}

/* ---- receiving ---- */

int
zt_recv(struct zt_peer *p, int timeout_ms, const struct ing_msg **m)
{
    struct tp_peer *t = p->tp;
    uint64_t deadline = tp_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    consume(t, p->last);
    p->last = 0;
    p->body = NULL;
    p->body_len = 0;
    for (;;) {
        uint8_t f;
        const uint8_t *b;
        size_t bl, total, need;
        if (frame_at(t, &f, &b, &bl, &total, &need) != 0) {
            int r = wait_bytes(t, need, deadline);
            if (r != 0)
                return r;
            continue;
        }
        if (f & ZMTP_F_COMMAND) {
            if (is_command(b, bl, "PING")) {
                uint8_t pong[32] = {4, 'P', 'O', 'N', 'G'};
                size_t cl = bl > 7 ? bl - 7 : 0;
                if (cl > 16)
                    cl = 16;
                memcpy(pong + 5, b + 7, cl);
                uint8_t hdr[2] = {ZMTP_F_COMMAND, (uint8_t)(5 + cl)};
                tp_write(t, hdr, 2);
                tp_write(t, pong, 5 + cl);
            } else if (is_command(b, bl, "ERROR")) {
                consume(t, total);
                return -ECONNRESET;
            }
            consume(t, total);
            continue;
        }
        if (f & ZMTP_F_MORE) { /* the server sends single-frame messages */
            consume(t, total);
            return -EPROTO;
        }
        p->body = b;
        p->body_len = bl;
        p->last = total;
        p->why = NULL;
        int rc = zmq_msg_decode(b, bl, &p->msg, &p->why);
        if (rc != 0)
            return rc;
        if (p->msg.type == ING_PING) {
            p->pings++;
            if (p->auto_pong) {
                static const char pong[] = "\x81\xa5@type\xa4Pong";
                uint8_t hdr[2] = {0, sizeof(pong) - 1};
                tp_write(t, hdr, 2);
                tp_write(t, pong, sizeof(pong) - 1);
            }
            if (!p->see_pings) {
                consume(t, total);
                p->last = 0;
                continue;
            }
        }
        *m = &p->msg;
        return p->msg.type;
    }
}

static const char *
recv_error(int r)
{
    switch (r) {
    case -ETIMEDOUT:
        return "timed out";
    case -EPIPE:
        return "connection closed";
    case -ECONNRESET:
        return "ZMTP ERROR received";
    default:
        return strerror(-r);
    }
}

const struct ing_msg *
zt_expect_at(const char *file, int line, struct zt_peer *p, uint8_t type)
{
    const struct ing_msg *m = NULL;
    int r = zt_recv(p, TP_DEADLINE_MS, &m);
    if (r < 0)
        tp_fail_at(file, line, "%s: expected %s: %s%s%s", p->tp->label, ing_msg_type_name(type),
                   recv_error(r), p->why != NULL ? ": " : "", p->why != NULL ? p->why : "");
    if (m->type != type)
        tp_fail_at(file, line, "%s: expected %s, received %s", p->tp->label,
                   ing_msg_type_name(type), ing_msg_type_name(m->type));
    return m;
}

void
zt_expect_raw_at(const char *file, int line, struct zt_peer *p, const void *want, size_t len)
{
    const struct ing_msg *m = NULL;
    int r = zt_recv(p, TP_DEADLINE_MS, &m);
    if (r < 0 && (r == -ETIMEDOUT || r == -EPIPE || r == -ECONNRESET || p->body == NULL))
        tp_fail_at(file, line, "%s: expected a message: %s", p->tp->label, recv_error(r));
    if (p->body_len != len || memcmp(p->body, want, len) != 0) {
        size_t i = 0;
        while (i < len && i < p->body_len && p->body[i] == ((const uint8_t *)want)[i])
            i++;
        tp_fail_at(file, line,
                   "%s: message differs from the vector (%zu bytes received, %zu expected, "
                   "first difference at byte %zu)",
                   p->tp->label, p->body_len, len, i);
    }
}

bool
zt_has(const struct zt_peer *p, const void *needle, size_t len)
{
    return p->body != NULL && memmem(p->body, p->body_len, needle, len) != NULL;
}

void
zt_expect_nothing_at(const char *file, int line, struct zt_peer *p, int ms)
{
    const struct ing_msg *m = NULL;
    int r = zt_recv(p, ms, &m);
    if (r == -ETIMEDOUT)
        return;
    if (r > 0)
        tp_fail_at(file, line, "%s: expected nothing, received %s", p->tp->label,
                   ing_msg_type_name(m->type));
    tp_fail_at(file, line, "%s: expected nothing: %s", p->tp->label, recv_error(r));
}

void
zt_expect_closed_at(const char *file, int line, struct zt_peer *p)
{
    uint64_t deadline = tp_now_ms() + (uint64_t)TP_DEADLINE_MS;
    for (;;) {
        const struct ing_msg *m = NULL;
        uint64_t now = tp_now_ms();
        int r = zt_recv(p, now < deadline ? (int)(deadline - now) : 0, &m);
        if (r == -EPIPE)
            return;
        if (r == -ETIMEDOUT)
            tp_fail_at(file, line, "%s: expected the connection to close", p->tp->label);
    }
}

struct zt_peer *
zt_client_at(const char *file, int line, struct tp_ctx *c, const char *name)
{
    struct zt_peer *p = zt_open_at(file, line, c, false, false, NULL);
    struct ing_mp_writer w;
    zt_map_begin(&w, 2);
    zt_kv_str(&w, "name", name);
    zt_kv_str(&w, "@type", "ClientHello");
    zt_send_w_at(file, line, p, &w);
    zt_expect_at(file, line, p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    return p;
}
