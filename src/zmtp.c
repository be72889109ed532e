/* SPDX-License-Identifier: MIT */
/* zmtp.c: ZMTP 3.x server-side state machine, NULL mechanism (see zmtp.h). */
#include "zmtp.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"

/* Greeting layout (ZMTP 3.x). */
#define G_SIG_END 9 /* signature: byte 0 = 0xFF, bytes 1..8 padding, byte 9 = 0x7F */
#define G_MAJOR 10
#define G_MINOR 11
#define G_MECH 12 /* 20 bytes, NUL padded */
#define G_MECH_LEN 20
#define G_AS_SERVER 32

#define PEER_SOCKET_TYPE "DEALER"

static bool
span_eq(struct zmtp_span s, const char *lit)
{
    size_t len = strlen(lit);
    return s.len == len && memcmp(s.p, lit, len) == 0;
}

/* Property names are case-insensitive (ASCII). */
static bool
name_eq_ci(const uint8_t *p, size_t len, const char *lit)
{
    if (strlen(lit) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        uint8_t a = p[i], b = (uint8_t)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

static bool
is_alpha(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static void
scan_reset(struct zmtp *z)
{
    z->scan_off = 0;
    z->scan_size = 0;
    z->scan_frames = 0;
}

static ssize_t
fail(struct zmtp *z, struct zmtp_event *ev, int err, const char *why)
{
    if (z->state != ZMTP_S_FAILED) {
        z->failed_in = z->state;
        z->state = ZMTP_S_FAILED;
        z->err = err;
        z->why = why;
    }
    ev->why = z->why;
    return z->err;
}

/* zmtp_init prepares z for a new connection. */
void
zmtp_init(struct zmtp *z, uint64_t max_msg)
{
    memset(z, 0, sizeof(*z));
    if (max_msg < ZMTP_MIN_MAX_MSG)
        max_msg = ZMTP_MIN_MAX_MSG;
    if (max_msg > SIZE_MAX / 2)
        max_msg = SIZE_MAX / 2; /* every unit fits in a size_t, with room */
    z->max_msg = max_msg;
    z->state = ZMTP_S_GREETING;
    z->failed_in = ZMTP_S_GREETING;
}

/* zmtp_error_allowed tells whether the peer's greeting was accepted. */
bool
zmtp_error_allowed(const struct zmtp *z)
{
    enum zmtp_state s = z->state == ZMTP_S_FAILED ? z->failed_in : z->state;
    return s == ZMTP_S_READY || s == ZMTP_S_TRAFFIC;
}

/* Checks every greeting byte present (so that an error shows as soon as the bad byte
 * arrives) and consumes the greeting once it is complete. */
static ssize_t
input_greeting(struct zmtp *z, const uint8_t *p, size_t n, struct zmtp_event *ev)
{
    static const uint8_t mech[G_MECH_LEN] = {'N', 'U', 'L', 'L'};

    memset(&ev->u, 0, sizeof(ev->u));

    if (n > 0 && p[0] != 0xff)
        return fail(z, ev, -EPROTO, "bad ZMTP signature (first byte not 0xFF)");
    /* Bytes 1..8 are padding: "not significant", never validated. */
    if (n > G_SIG_END && p[G_SIG_END] != 0x7f)
        return fail(z, ev, -EPROTO, "bad ZMTP signature (byte 9 not 0x7F)");
    if (n > G_MAJOR && p[G_MAJOR] < 3)
        return fail(z, ev, -EPROTO, "peer speaks ZMTP 1.0 or 2.x; 3.x is required");
    /* A higher major version must be accepted (the peer then talks 3.x to us). */
    for (size_t i = G_MECH; i < G_MECH + G_MECH_LEN && i < n; i++) {
        if (p[i] != mech[i - G_MECH])
            return fail(z, ev, -EPROTO, "security mechanism is not NULL");
    }
    /* as-server (byte 32) must be 0 with NULL but libzmq does not check it; neither do we.
     * The filler is not significant either. */
    if (n < ZMTP_GREETING_LEN) {
        ev->type = ZMTP_EV_NEED_MORE;
        ev->need = ZMTP_GREETING_LEN;
        return 0;
    }
    ev->type = ZMTP_EV_GREETING;
    ev->u.greeting.major = p[G_MAJOR];
    ev->u.greeting.minor = p[G_MINOR];
    z->state = ZMTP_S_READY;
    return ZMTP_GREETING_LEN;
}

/* Parses the metadata of a READY command: body[0..len) after the command name. */
static ssize_t
parse_ready(struct zmtp *z, const uint8_t *body, size_t len, struct zmtp_event *ev)
{
    bool have_type = false, have_id = false;
    struct zmtp_span type = {0}, id = {body, 0};
    size_t i = 0;

    while (i < len) {
        size_t nlen = body[i++];
        if (nlen == 0)
            return fail(z, ev, -EPROTO, "READY: empty property name");
        if (len - i < nlen + 4)
            return fail(z, ev, -EPROTO, "READY: truncated property");
        const uint8_t *name = body + i;
        i += nlen;
        uint32_t vlen = get_u32be(body + i);
        i += 4;
        if (vlen > INT32_MAX || vlen > len - i)
            return fail(z, ev, -EPROTO, "READY: bad property value length");
        struct zmtp_span val = {body + i, vlen};
        i += vlen;
        if (name_eq_ci(name, nlen, "Socket-Type")) {
            if (have_type)
                return fail(z, ev, -EPROTO, "READY: Socket-Type given twice");
            have_type = true;
            type = val;
        } else if (name_eq_ci(name, nlen, "Identity")) {
            if (have_id)
                return fail(z, ev, -EPROTO, "READY: Identity given twice");
            have_id = true;
            id = val;
        }
        /* Other properties (Resource, X-*, ...) are ignored. */
    }
    if (!have_type)
        return fail(z, ev, -EPROTO, "READY: no Socket-Type");
    if (!span_eq(type, PEER_SOCKET_TYPE))
        return fail(z, ev, -EPROTO, "READY: Socket-Type must be DEALER");
    if (id.len > ZMTP_IDENTITY_MAX)
        return fail(z, ev, -EPROTO, "READY: Identity longer than 255 bytes");
    if (id.len > 0 && id.p[0] == 0)
        return fail(z, ev, -EPROTO, "READY: Identity starts with a zero byte (reserved)");
    ev->type = ZMTP_EV_READY;
    ev->u.ready.socket_type = type;
    ev->u.ready.identity = id;
    z->state = ZMTP_S_TRAFFIC;
    return 0;
}

/* Handles one complete command frame, body[0..len). Sets ev->type to an event, or leaves
 * it at ZMTP_EV_NEED_MORE for a command that is skipped. Returns 0 or a negative error. */
static ssize_t
handle_command(struct zmtp *z, const uint8_t *body, size_t len, struct zmtp_event *ev)
{
    memset(&ev->u, 0, sizeof(ev->u));
    if (len < 1 || body[0] == 0 || body[0] > len - 1)
        return fail(z, ev, -EPROTO, "malformed command name");
    size_t nlen = body[0];
    const uint8_t *name = body + 1;
    for (size_t i = 0; i < nlen; i++) {
        if (!is_alpha(name[i]))
            return fail(z, ev, -EPROTO, "malformed command name");
    }
    struct zmtp_span cname = {name, nlen};
    const uint8_t *data = body + 1 + nlen;
    size_t dlen = len - 1 - nlen;

    if (span_eq(cname, "ERROR")) {
        /* error-reason = short-size 0*255VCHAR; be lenient with its shape, it is only
         * logged. */
        struct zmtp_span reason = {data, 0};
        if (dlen >= 1) {
            reason.p = data + 1;
            reason.len = data[0] <= dlen - 1 ? data[0] : dlen - 1;
        }
        ev->type = ZMTP_EV_PEER_ERROR;
        ev->u.error.reason = reason;
        fail(z, ev, -ECONNRESET, "peer sent an ERROR command");
        ev->why = NULL;
        return 0;
    }
    if (z->state == ZMTP_S_READY) {
        if (!span_eq(cname, "READY"))
            return fail(z, ev, -EPROTO, "expected READY after the greeting");
        return parse_ready(z, data, dlen, ev);
    }
    if (span_eq(cname, "READY"))
        return fail(z, ev, -EPROTO, "READY after the handshake");
    if (span_eq(cname, "PING")) {
        if (dlen < 2 || dlen - 2 > ZMTP_PING_CONTEXT_MAX)
            return fail(z, ev, -EPROTO, "malformed PING");
        ev->type = ZMTP_EV_PING;
        ev->u.ping.ttl = get_u16be(data);
        ev->u.ping.context.p = data + 2;
        ev->u.ping.context.len = dlen - 2;
        return 0;
    }
    if (span_eq(cname, "PONG")) {
        if (dlen > ZMTP_PING_CONTEXT_MAX)
            return fail(z, ev, -EPROTO, "malformed PONG");
        ev->type = ZMTP_EV_PONG;
        ev->u.pong.context.p = data;
        ev->u.pong.context.len = dlen;
        return 0;
    }
    /* SUBSCRIBE, CANCEL, JOIN, LEAVE mean nothing to a ROUTER, and mechanisms may define
     * their own commands: skip them. */
    return 0;
}

/* Reads the frame header at q[0..m). Returns 1 and sets *flags, *size, *hlen; 0 if more
 * bytes are needed (*hlen then says how many the header needs); or a negative error. */
static int
read_header(struct zmtp *z, const uint8_t *q, size_t m, uint8_t *flags, uint64_t *size,
            size_t *hlen, struct zmtp_event *ev)
{
    *hlen = 2;
    if (m < 1)
        return 0;
    *flags = q[0];
    if (*flags & ~(ZMTP_F_MORE | ZMTP_F_LONG | ZMTP_F_COMMAND))
        return (int)fail(z, ev, -EPROTO, "reserved frame flag bits set");
    if ((*flags & ZMTP_F_COMMAND) && (*flags & ZMTP_F_MORE))
        return (int)fail(z, ev, -EPROTO, "MORE flag on a command");
    *hlen = (*flags & ZMTP_F_LONG) ? 9 : 2;
    if (m < *hlen)
        return 0;
    *size = (*flags & ZMTP_F_LONG) ? get_u64be(q + 1) : q[1];
    return 1;
}

/* Handles the unit at p: one command, or one message (several frames). Returns the bytes
 * it takes (0 with ev->type NEED_MORE when incomplete) or a negative error. A skipped
 * command returns its size with ev->type still NEED_MORE. */
static ssize_t
input_unit(struct zmtp *z, const uint8_t *p, size_t n, struct zmtp_event *ev)
{
    for (;;) {
        const uint8_t *q = p + z->scan_off;
        size_t m = n - z->scan_off;
        uint8_t flags = 0;
        uint64_t size = 0;
        size_t hlen;
        int r = read_header(z, q, m, &flags, &size, &hlen, ev);
        if (r < 0)
            return r;
        if (r == 0) {
            ev->type = ZMTP_EV_NEED_MORE;
            ev->need = z->scan_off + hlen;
            return 0;
        }
        /* Check the size before anything else: the wire bytes of the whole unit so far.
         * scan_off <= max_msg - 2 holds here (zmtp_init and the MORE check below). */
        if (hlen > z->max_msg - z->scan_off)
            return fail(z, ev, -EMSGSIZE, "message larger than the maximum");
        uint64_t room = z->max_msg - z->scan_off - hlen;
        if (size > room)
            return fail(z, ev, -EMSGSIZE,
                        (flags & ZMTP_F_COMMAND) ? "command larger than the maximum"
                                                 : "message larger than the maximum");
        if (flags & ZMTP_F_COMMAND) {
            if (z->scan_frames > 0)
                return fail(z, ev, -EPROTO, "command inside a multi-part message");
        } else if (z->state == ZMTP_S_READY) {
            return fail(z, ev, -EPROTO, "message before READY");
        }
        size_t flen = hlen + (size_t)size; /* size <= max_msg - hlen: no overflow */
        if (m < flen) {
            ev->type = ZMTP_EV_NEED_MORE;
            ev->need = z->scan_off + flen;
            return 0;
        }
        if (flags & ZMTP_F_COMMAND) {
            ssize_t rc = handle_command(z, q + hlen, (size_t)size, ev);
            return rc < 0 ? rc : (ssize_t)flen;
        }
        if (z->scan_frames == UINT32_MAX)
            return fail(z, ev, -EMSGSIZE, "too many frames in a message");
        if (z->scan_frames < ZMTP_EV_FRAMES) {
            z->frame_off[z->scan_frames] = z->scan_off + hlen;
            z->frame_len[z->scan_frames] = (size_t)size;
        }
        z->scan_frames++;
        z->scan_size += size;
        z->scan_off += flen;
        if (flags & ZMTP_F_MORE) {
            /* The next frame header must still fit. */
            if (z->max_msg - z->scan_off < 2)
                return fail(z, ev, -EMSGSIZE, "message larger than the maximum");
            continue;
        }
        ev->type = ZMTP_EV_MESSAGE;
        ev->u.msg.nframes = z->scan_frames;
        ev->u.msg.size = z->scan_size;
        for (uint32_t i = 0; i < z->scan_frames && i < ZMTP_EV_FRAMES; i++) {
            ev->u.msg.frame[i].p = p + z->frame_off[i];
            ev->u.msg.frame[i].len = z->frame_len[i];
        }
        ev->u.msg.wire.p = p;
        ev->u.msg.wire.len = z->scan_off;
        size_t used = z->scan_off;
        scan_reset(z);
        return (ssize_t)used;
    }
}

/* zmtp_input consumes bytes and reports one event. */
ssize_t
zmtp_input(struct zmtp *z, const uint8_t *p, size_t n, struct zmtp_event *ev)
{
    /* Not a memset of the whole event (gcc's rep stos, a tenth of this function's time at
     * one call per message): a message sets every member of u.msg it reports, the greeting
     * and the commands clear u first. */
    ev->type = ZMTP_EV_NEED_MORE;
    ev->need = 0;
    ev->why = NULL;
    if (z->state == ZMTP_S_FAILED)
        return fail(z, ev, z->err, z->why);
    if (z->state == ZMTP_S_GREETING)
        return input_greeting(z, p, n, ev);
    if (n < z->scan_off)
        return fail(z, ev, -EINVAL, "input shorter than the part already checked");

    size_t used = 0;
    for (;;) {
        ssize_t r = input_unit(z, p + used, n - used, ev);
        if (r < 0)
            return r;
        used += (size_t)r;
        if (ev->type != ZMTP_EV_NEED_MORE || r == 0)
            return (ssize_t)used;
        /* A skipped command: go on with the next unit. */
    }
}

/* zmtp_frame_next reads one validated frame of a message's wire bytes. */
bool
zmtp_frame_next(const uint8_t **pos, const uint8_t *end, struct zmtp_span *body, bool *more)
{
    const uint8_t *q = *pos;
    if (q >= end)
        return false;
    size_t hlen = (q[0] & ZMTP_F_LONG) ? 9 : 2;
    uint64_t size = (q[0] & ZMTP_F_LONG) ? get_u64be(q + 1) : q[1];
    *more = (q[0] & ZMTP_F_MORE) != 0;
    body->p = q + hlen;
    body->len = (size_t)size;
    *pos = q + hlen + (size_t)size;
    return true;
}

/* zmtp_greeting writes our greeting. */
void
zmtp_greeting(uint8_t out[ZMTP_GREETING_LEN])
{
    memset(out, 0, ZMTP_GREETING_LEN);
    out[0] = 0xff;
    out[8] = 0x01; /* libzmq: padding = identity length + 1, big-endian */
    out[G_SIG_END] = 0x7f;
    out[G_MAJOR] = 3;
    out[G_MINOR] = 1;
    memcpy(out + G_MECH, "NULL", 4);
    out[G_AS_SERVER] = 0;
}

/* Writes a command header (flags and size) for a body of len bytes; returns its length. */
static size_t
command_header(uint8_t *out, size_t len)
{
    if (len <= 255) {
        out[0] = ZMTP_F_COMMAND;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = ZMTP_F_COMMAND | ZMTP_F_LONG;
    put_u64be(out + 1, len);
    return 9;
}

static size_t
command_header_len(size_t len)
{
    return len <= 255 ? 2 : 9;
}

/* zmtp_ready writes our READY command. */
ssize_t
zmtp_ready(uint8_t *out, size_t cap, const char *socket_type)
{
    size_t tlen = strlen(socket_type);
    if (tlen == 0 || tlen > 255)
        return -EINVAL;
    size_t body = 1 + 5 + (1 + 11 + 4 + tlen) + (1 + 8 + 4);
    size_t total = command_header_len(body) + body;
    if (cap < total)
        return -ENOMEM;
    uint8_t *w = out + command_header(out, body);
    *w++ = 5;
    memcpy(w, "READY", 5);
    w += 5;
    *w++ = 11;
    memcpy(w, "Socket-Type", 11);
    w += 11;
    put_u32be(w, (uint32_t)tlen);
    w += 4;
    memcpy(w, socket_type, tlen);
    w += tlen;
    *w++ = 8;
    memcpy(w, "Identity", 8);
    w += 8;
    put_u32be(w, 0);
    return (ssize_t)total;
}

/* zmtp_pong writes a PONG command. */
ssize_t
zmtp_pong(uint8_t *out, size_t cap, const uint8_t *ctx, size_t len)
{
    if (len > ZMTP_PING_CONTEXT_MAX)
        return -EINVAL;
    size_t body = 1 + 4 + len;
    if (cap < 2 + body)
        return -ENOMEM;
    command_header(out, body);
    out[2] = 4;
    memcpy(out + 3, "PONG", 4);
    if (len > 0)
        memcpy(out + 7, ctx, len);
    return (ssize_t)(2 + body);
}

/* zmtp_ping writes a PING command. */
ssize_t
zmtp_ping(uint8_t *out, size_t cap, uint16_t ttl, const uint8_t *ctx, size_t len)
{
    if (len > ZMTP_PING_CONTEXT_MAX)
        return -EINVAL;
    size_t body = 1 + 4 + 2 + len;
    if (cap < 2 + body)
        return -ENOMEM;
    command_header(out, body);
    out[2] = 4;
    memcpy(out + 3, "PING", 4);
    out[7] = (uint8_t)(ttl >> 8);
    out[8] = (uint8_t)ttl;
    if (len > 0)
        memcpy(out + 9, ctx, len);
    return (ssize_t)(2 + body);
}

/* zmtp_error writes an ERROR command. */
ssize_t
zmtp_error(uint8_t *out, size_t cap, const char *reason)
{
    size_t rlen = strlen(reason);
    if (rlen > 255)
        rlen = 255;
    size_t body = 1 + 5 + 1 + rlen;
    size_t total = command_header_len(body) + body;
    if (cap < total)
        return -ENOMEM;
    uint8_t *w = out + command_header(out, body);
    *w++ = 5;
    memcpy(w, "ERROR", 5);
    w += 5;
    *w++ = (uint8_t)rlen;
    memcpy(w, reason, rlen);
    return (ssize_t)total;
}

/* zmtp_frame_header writes a message frame header. */
size_t
zmtp_frame_header(uint8_t out[ZMTP_HDR_MAX], uint64_t len, bool more)
{
    uint8_t flags = more ? ZMTP_F_MORE : 0;
    if (len <= 255) {
        out[0] = flags;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = flags | ZMTP_F_LONG;
    put_u64be(out + 1, len);
    return 9;
}

/* zmtp_make_routing_id writes 00 + the counter and increments it. */
void
zmtp_make_routing_id(uint32_t *counter, uint8_t out[ZMTP_ROUTING_ID_LEN])
{
    out[0] = 0;
    put_u32be(out + 1, *counter);
    (*counter)++;
}

/* zmtp_routing_seed returns a pseudo-random counter seed. */
uint32_t
zmtp_routing_seed(void)
{
    uint32_t v;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
}
