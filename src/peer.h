/* SPDX-License-Identifier: MIT */
/* peer.h: one connection of the client or agent library (client.c, agent.c) to the backend.
 *
 * The connection goes through DOWN -> CONNECTING (a non-blocking connect in progress,
 * preamble queued, and the hello when there is no secret) -> OPENING (waiting for the
 * Welcome, then for AuthOk when the backend asks for proto.md §6 authentication) -> OPEN.
 * A lost connection goes back to DOWN and, with reconnect, is retried after a delay that
 * doubles from backoff_min_ms to backoff_max_ms and is reset by the next opening.
 *
 * This module owns the socket, the input and output buffers and their framing, the opening
 * (preamble, Welcome, Auth/AuthOk), Ping answers, flushing, the blocking connect, the
 * non-blocking process step and the backoff. The owner (struct ing_client, struct
 * ing_agent) embeds a struct peer_conn and supplies what differs through struct peer_ops:
 * its hello, what it keeps from the Welcome, its frames and events. Hooks find their owner
 * from p (offsetof). The ctx of the driving calls (connect, process, wait) is the owner's
 * (its callback and argument), passed untouched to the frame, notify and down hooks. */
#ifndef ING_PEER_H
#define ING_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "inginious/proto.h"
#include "net.h"

enum peer_state {
    PEER_DOWN,       /* no socket */
    PEER_CONNECTING, /* non-blocking connect in progress; preamble (+ hello) queued */
    PEER_OPENING,    /* connected, waiting for the Welcome (and AuthOk) */
    PEER_OPEN,       /* Welcome (and AuthOk) received */
};

struct peer_conn;

/* peer_hello_fn queues the owner's hello. Returns 0 or -errno. */
typedef int peer_hello_fn(struct peer_conn *p);
/* peer_welcome_fn keeps what the owner needs from an accepted Welcome (before the hello or
 * the Auth goes out). send_max and recv_max are already set and may be changed. */
typedef void peer_welcome_fn(struct peer_conn *p, const struct ing_welcome *w);
/* peer_opened_fn tells whether the blocking connect has what it waits for. */
typedef bool peer_opened_fn(struct peer_conn *p);
/* peer_frame_fn acts on a decoded frame that the connection passes on: an Error on an open
 * connection (already kept in last_error), and any type but Welcome, AuthOk and Ping once
 * the Welcome is in. Returns 0, or -errno when the connection must end. */
typedef int peer_frame_fn(struct peer_conn *p, const struct ing_msg *m, void *ctx);
/* peer_notify_fn delivers a due connected event (notify_connected), when ctx has a
 * callback. */
typedef void peer_notify_fn(struct peer_conn *p, void *ctx);
/* peer_down_fn ends the connection for err (calling peer_down) and reports it. */
typedef void peer_down_fn(struct peer_conn *p, int err, void *ctx);
/* peer_check_fn is called at the end of a process step that went well. Returns 0 or the
 * -errno that ends the connection. */
typedef int peer_check_fn(struct peer_conn *p);
/* peer_read_fn is called after the reads of a step (and of the blocking connect's turns),
 * before the output is flushed: it may queue what the frames read call for (the client's
 * ClientSessionAck, one per read batch). Returns 0 or -errno. */
typedef int peer_read_fn(struct peer_conn *p);

struct peer_ops {
    uint8_t role; /* ING_ROLE_CLIENT or ING_ROLE_AGENT */
    /* strict_werr: a write error kept by peer_queue ends the connection at the blocking
     * connect's next turn and right after the reads of a step (the client's rule). Without
     * it (the agent's rule) only the next flush that fails does. */
    bool strict_werr;
    peer_hello_fn *hello;
    peer_welcome_fn *welcome;
    peer_opened_fn *opened;
    peer_frame_fn *frame;
    peer_notify_fn *notify;
    peer_down_fn *down;
    peer_check_fn *check; /* NULL: none */
    peer_read_fn *read_done; /* NULL: none */
};

/* What peer_init copies; the numbers are those of the public opts (0 = default). */
struct peer_config {
    const char *addr;
    bool reconnect;
    int backoff_min_ms;
    int backoff_max_ms;
    int connect_timeout_ms;
    const uint8_t *secret; /* NULL: none */
    size_t secret_len;
    bool hello_waits; /* the hello waits for the Welcome (it depends on the Welcome's flags) */
};

struct peer_conn {
    const struct peer_ops *ops;
    struct net_addr na; /* parsed once by peer_init */
    uint8_t *secret;    /* proto.md §6, NULL: none */
    size_t secret_len;
    bool hello_waits; /* see struct peer_config */
    bool reconnect;
    int backoff_min_ms;
    int backoff_max_ms;
    int connect_timeout_ms;

    enum peer_state st;
    int fd;            /* -1 when DOWN */
    uint32_t send_max; /* largest body sent (the Welcome's max_frame) */
    uint32_t recv_max; /* largest body accepted from the server */
    struct buf in;
    struct buf out;
    uint64_t deadline;         /* CONNECTING / OPENING: give up at */
    uint64_t retry_at;         /* DOWN with reconnect: next attempt */
    uint64_t last_rx;          /* when the last bytes arrived */
    int backoff_ms;            /* next retry delay */
    int werr;                  /* a write failed outside process(): handled by the next one */
    int fatal;                 /* DOWN without reconnect: what process() returns */
    bool notify_connected;     /* the owner's connected event is due */
    bool authing;              /* OPENING: Auth sent, waiting for AuthOk */
    uint8_t ns[ING_NONCE_LEN]; /* the server's nonce (Welcome) */
    uint8_t nc[ING_NONCE_LEN]; /* ours (Auth) */
    char last_error[256];
};

/* PEER_SIZE_OK tells whether size, the size field of a caller's public struct of type t, is
 * 0 (the layout of release 1.0) or covers t up to last, its last field in release 1.0. A
 * field added later is read only when size covers it too. */
#define PEER_SIZE_OK(size, t, last) \
    ((size) == 0 || (size) >= offsetof(t, last) + sizeof(((const t *)NULL)->last))

/* peer_now_ms returns the monotonic clock in milliseconds. */
uint64_t peer_now_ms(void);
/* peer_ms_until returns the milliseconds from now to when (0 when past, at most INT32_MAX). */
int peer_ms_until(uint64_t when, uint64_t now);

/* peer_init sets up p (DOWN) with ops and a copy of cfg; it does not connect. Returns 0,
 * -EINVAL for a bad address (the reason in last_error) or -ENOMEM. peer_fini must be
 * called in every case. */
int peer_init(struct peer_conn *p, const struct peer_ops *ops, const struct peer_config *cfg);
/* peer_fini closes the connection and frees (and wipes) what p holds. */
void peer_fini(struct peer_conn *p);

/* peer_down closes the connection, schedules the next attempt (reconnect) or keeps err as
 * what process() returns. Returns whether the connection was open (its connected event is
 * then no longer due). */
bool peer_down(struct peer_conn *p, int err);

/* peer_flush writes pending output without blocking. Returns 0 (all written or EAGAIN) or
 * -errno. */
int peer_flush(struct peer_conn *p);
/* peer_queue encodes m at the end of the output and tries to send it at once (not while
 * CONNECTING). A write error is kept in werr for the next process call. Returns 0,
 * -ENOTCONN, -EINVAL, -EMSGSIZE or -ENOMEM. */
int peer_queue(struct peer_conn *p, const struct ing_msg *m);

/* peer_connect connects (blocking, at most connect_timeout_ms), opens and handles frames
 * until the opened hook is satisfied; p must be DOWN. Returns 0 or -errno; the caller
 * ends the connection (peer_down) on failure. */
int peer_connect(struct peer_conn *p, void *ctx);
/* peer_process does every non-blocking step: delivers a due connected event, reconnects
 * when due, flushes, reads and handles frames. Returns 0, or the -errno that closed the
 * connection when not reconnecting. */
int peer_process(struct peer_conn *p, void *ctx);
/* peer_wait polls up to timeout_ms (-1 = no limit), shortened to due_ms (the owner's
 * timeout, -1 = none), then processes. Returns as peer_process, or -errno of poll. */
int peer_wait(struct peer_conn *p, int timeout_ms, int due_ms, void *ctx);

/* peer_want_write tells whether the caller should also watch for POLLOUT. */
bool peer_want_write(const struct peer_conn *p);
/* peer_can_send tells whether requests may be queued: on an open connection, or an
 * opening one when no authentication has to come first. */
bool peer_can_send(const struct peer_conn *p);
/* peer_timeout_ms returns how long the caller may wait before processing: 0 when something
 * is due, the time to the next deadline (reconnect, connect, open_deadline when OPEN; 0 =
 * none), or -1 for no limit. */
int peer_timeout_ms(const struct peer_conn *p, uint64_t open_deadline);

#endif
