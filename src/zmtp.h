/* SPDX-License-Identifier: MIT */
/* zmtp.h: ZMTP 3.1 (accepting 3.0 and later 3.x), server side, NULL security mechanism.
 *
 * Pure byte-level state machine: no I/O, no allocation. The caller owns the input and output
 * buffers; struct zmtp is embedded in the caller's connection.
 *
 * Driving it from a non-blocking read loop:
 *
 *   1. The peer speaks first. Once its first byte (0xFF) selected this dialect, send our
 *      greeting (zmtp_greeting) AT ONCE: libzmq sends only the first 10 bytes of its greeting
 *      and waits for ours before sending the rest, so waiting for the full peer greeting
 *      before answering deadlocks.
 *   2. Call zmtp_input() on the unconsumed input bytes [p, p + n) until it reports
 *      ZMTP_EV_NEED_MORE. Each call handles ONE event and returns how many bytes it consumed
 *      (possibly 0, also with an event): drop exactly those bytes. Bytes it did not consume
 *      MUST be presented again, unchanged, at the start of the next call (they may move in
 *      memory: the machine keeps offsets, never pointers). A message is consumed only when it
 *      is complete, so every view in the event points into the caller's buffer: into the
 *      bytes just consumed. They stay valid until the caller reuses that memory (compacts,
 *      reads over it): handle the event first.
 *   3. ZMTP_EV_NEED_MORE: read more. ev.need says how many bytes, counted from p + the
 *      returned value, the next unit needs at least (at most max_msg: the input buffer must
 *      be able to hold max_msg bytes). Compacting the buffer is allowed at this point.
 *   4. ZMTP_EV_GREETING: nothing to do (our greeting is already out). ZMTP_EV_READY: the peer
 *      is a DEALER; take a copy of ev.u.ready.identity (0..255 bytes) if it is not empty, or
 *      make a routing id (zmtp_make_routing_id), then send our READY (zmtp_ready). Messages
 *      may be sent from then on, each frame preceded by zmtp_frame_header().
 *      ZMTP_EV_MESSAGE: see struct zmtp_event. ZMTP_EV_PING: send zmtp_pong() with
 *      ev.u.ping.context. ZMTP_EV_PONG: liveness only. ZMTP_EV_PEER_ERROR: the peer sent an
 *      ERROR command (fatal): log ev.u.error.reason and close.
 *   5. A negative return is fatal: log ev.why and close. If the failure happened after the
 *      peer's greeting was accepted (z->state was ZMTP_S_READY or ZMTP_S_TRAFFIC when the call
 *      started; zmtp_error_allowed() tells), the spec lets the server send an ERROR command
 *      (zmtp_error) before closing, e.g. for a refused Socket-Type. Later calls return the
 *      same error.
 *
 * Limits: one message (all its frames, headers included) or one command may occupy at most
 * max_msg bytes on the wire; -EMSGSIZE is returned as soon as a frame size pushes past it,
 * before the body is read.
 */
#ifndef INGINIOUS_ZMTP_H
#define INGINIOUS_ZMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZMTP_GREETING_LEN 64
#define ZMTP_HDR_MAX 9           /* largest frame header: flags + 8-byte size */
#define ZMTP_EV_FRAMES 4         /* frames of a message given directly in the event */
#define ZMTP_PING_CONTEXT_MAX 16 /* ping-context bytes, at most */
#define ZMTP_ROUTING_ID_LEN 5    /* libzmq's generated routing ids: 00 + u32 big-endian */
#define ZMTP_IDENTITY_MAX 255    /* longest Identity property */
#define ZMTP_MIN_MAX_MSG 300     /* zmtp_init raises a smaller max_msg to this (READY fits) */

/* Frame flag bits. */
#define ZMTP_F_MORE 0x01
#define ZMTP_F_LONG 0x02
#define ZMTP_F_COMMAND 0x04

enum zmtp_state {
    ZMTP_S_GREETING, /* waiting for the peer's 64-byte greeting */
    ZMTP_S_READY,    /* greeting accepted, waiting for the peer's READY (or ERROR) */
    ZMTP_S_TRAFFIC,  /* handshake done: messages and commands */
    ZMTP_S_FAILED,   /* a fatal error happened: every call returns it again */
};

enum zmtp_ev_type {
    ZMTP_EV_NEED_MORE,  /* the next unit is incomplete: read more (ev.need) */
    ZMTP_EV_GREETING,   /* the peer's greeting is valid (ZMTP 3.x, NULL mechanism) */
    ZMTP_EV_READY,      /* the peer's READY: Socket-Type DEALER, Identity in ev.u.ready */
    ZMTP_EV_MESSAGE,    /* one complete (possibly multi-part) message: ev.u.msg */
    ZMTP_EV_PING,       /* a PING command: answer zmtp_pong(ev.u.ping.context) */
    ZMTP_EV_PONG,       /* a PONG command (answer to a PING of ours) */
    ZMTP_EV_PEER_ERROR, /* an ERROR command: fatal, close the connection */
};

/* A view of bytes inside the caller's input buffer. */
struct zmtp_span {
    const uint8_t *p;
    size_t len;
};

struct zmtp_event {
    enum zmtp_ev_type type;
    size_t need;     /* NEED_MORE: bytes needed from p + return value, at least */
    const char *why; /* on a negative return: static text saying what was wrong */
    union {
        struct {
            uint8_t major, minor; /* the peer's version (3.0, 3.1, ...) */
        } greeting;
        struct {
            struct zmtp_span socket_type; /* "DEALER" */
            struct zmtp_span identity;    /* 0..255 bytes; empty = make a routing id */
        } ready;
        struct {
            uint32_t nframes;                       /* >= 1 */
            uint64_t size;                          /* sum of the frame bodies */
            struct zmtp_span frame[ZMTP_EV_FRAMES]; /* bodies of the first frames */
            struct zmtp_span wire;                  /* the whole message, headers included:
                                                       walk it with zmtp_frame_next() */
        } msg;
        struct {
            uint16_t ttl;             /* tenths of a second, 0 = none */
            struct zmtp_span context; /* 0..16 bytes, to echo in the PONG */
        } ping;
        struct {
            struct zmtp_span context;
        } pong;
        struct {
            struct zmtp_span reason; /* 0..255 bytes of text from the peer */
        } error;
    } u;
};

struct zmtp {
    uint64_t max_msg;          /* wire bytes of one message or command, at most */
    enum zmtp_state state;     /* where the handshake is */
    enum zmtp_state failed_in; /* ZMTP_S_FAILED: the state the error happened in */
    int err;                   /* ZMTP_S_FAILED: the negative errno returned */
    const char *why;           /* ZMTP_S_FAILED: its reason */
    /* A message whose first frames arrived but not its last one. Offsets are counted from
     * the first byte of the message, which is p at the next call. */
    size_t scan_off;                  /* bytes of complete MORE frames already checked */
    uint64_t scan_size;               /* their body bytes */
    uint32_t scan_frames;             /* their number */
    size_t frame_off[ZMTP_EV_FRAMES]; /* body offsets of the first frames */
    size_t frame_len[ZMTP_EV_FRAMES]; /* and their lengths */
};

/* zmtp_init prepares z for a new connection, before its first byte. max_msg bounds one
 * message or command on the wire (frame headers included); values below ZMTP_MIN_MAX_MSG
 * are raised to it, values above SIZE_MAX / 2 lowered to that. */
void zmtp_init(struct zmtp *z, uint64_t max_msg);

/* zmtp_input consumes bytes from p[0..n) (the unconsumed input, see the top of this file)
 * and reports one event in *ev. Returns the number of bytes consumed (>= 0; consumed
 * commands that need no action, such as SUBSCRIBE, are skipped silently and counted), or:
 *   -EPROTO    a protocol violation (bad signature, ZMTP < 3, mechanism not NULL,
 *              Socket-Type not DEALER, malformed command, reserved flag bits, MORE on a
 *              command, a command inside a multi-part message, a message before READY,
 *              a second READY, ...); ev->why says which;
 *   -EMSGSIZE  a frame size makes a message or command exceed max_msg;
 *   -EINVAL    n is smaller than the part of a message already checked (the caller did not
 *              present the unconsumed bytes again).
 *   -ECONNRESET on every call after a ZMTP_EV_PEER_ERROR event.
 * Errors are sticky. Never reads outside p[0..n). */
ssize_t zmtp_input(struct zmtp *z, const uint8_t *p, size_t n, struct zmtp_event *ev);

/* zmtp_error_allowed tells whether an ERROR command may be sent to the peer before closing:
 * true when the peer's greeting was accepted. Call it with the state saved before the
 * failing zmtp_input call, or after it: the machine records where it failed. */
bool zmtp_error_allowed(const struct zmtp *z);

/* zmtp_frame_next walks a message's wire bytes (ev.u.msg.wire, already validated): reads the
 * frame at *pos (before end) into *body and *more and advances *pos. Returns true, or false
 * when *pos reached end. */
bool zmtp_frame_next(const uint8_t **pos, const uint8_t *end, struct zmtp_span *body, bool *more);

/* zmtp_greeting writes our 64-byte greeting: signature FF 00x7 01 7F, version 3.1,
 * mechanism "NULL", as-server 0, filler. */
void zmtp_greeting(uint8_t out[ZMTP_GREETING_LEN]);

/* zmtp_ready writes our READY command with Socket-Type = socket_type (e.g. "ROUTER") and an
 * empty Identity. Returns its length, or -ENOMEM if cap is too small, -EINVAL if
 * socket_type is empty or longer than 255 bytes. 43 bytes for "ROUTER". */
ssize_t zmtp_ready(uint8_t *out, size_t cap, const char *socket_type);

/* zmtp_pong writes a PONG command echoing ctx[0..len) (a PING's context). Returns its length
 * (7 + len), -ENOMEM if cap is too small, -EINVAL if len > ZMTP_PING_CONTEXT_MAX. */
ssize_t zmtp_pong(uint8_t *out, size_t cap, const uint8_t *ctx, size_t len);

/* zmtp_ping writes a PING command with ttl (tenths of a second) and ctx[0..len). Returns
 * its length (9 + len), -ENOMEM if cap is too small, -EINVAL if len > 16. */
ssize_t zmtp_ping(uint8_t *out, size_t cap, uint16_t ttl, const uint8_t *ctx, size_t len);

/* zmtp_error writes an ERROR command carrying reason (truncated to 255 bytes). Returns its
 * length, or -ENOMEM if cap is too small (271 bytes always suffice). */
ssize_t zmtp_error(uint8_t *out, size_t cap, const char *reason);

/* zmtp_frame_header writes the header of a message frame of len body bytes (short form
 * below 256 bytes, else long) with the MORE flag if more. Returns its length, 2 or 9. */
size_t zmtp_frame_header(uint8_t out[ZMTP_HDR_MAX], uint64_t len, bool more);

/* zmtp_make_routing_id writes the routing id libzmq gives a peer without identity: 0x00
 * then *counter big-endian; then increments *counter. Seed the counter once per listening
 * socket with zmtp_routing_seed(). */
void zmtp_make_routing_id(uint32_t *counter, uint8_t out[ZMTP_ROUTING_ID_LEN]);

/* zmtp_routing_seed returns a pseudo-random starting value for a routing-id counter
 * (getrandom, falling back to the clock and the pid). */
uint32_t zmtp_routing_seed(void);

#endif
