/* SPDX-License-Identifier: MIT */
/* zbridge.h: the ZeroMQ bridge: a server connection whose first byte is 0xFF speaks ZMTP 3.x
 * (zmtp.h) carrying INGInious msgpack messages (zmq_msg.h). The bridge owns that side of the
 * connection: the ZMTP handshake, routing identities, decoding each message into a struct
 * ing_msg for the server's handlers, and encoding what the backend sends.
 *
 * The seam with server.c is small: server.c keeps its struct conn private and provides the
 * srv_conn_* functions below; the bridge keeps one struct zconn per ZeroMQ connection. */
#ifndef ING_ZBRIDGE_H
#define ING_ZBRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "buf.h"
#include "inginious/mp.h"
#include "inginious/proto.h"
#include "zmq_msg.h"

#define ZB_NAME_MAX 255 /* longest environment name (proto.md §4.2) */

struct conn; /* server.c's connection */
struct sblk; /* a shared block (sblk.h) */
struct zconn;

/* Whether BackendKillJob to a ZeroMQ agent (of v0.7 and later) carries "state": the
 * operator's word for fleets whose release the hello does not tell (--zmq-kill-state). */
enum zb_kill_state {
    ZB_KILL_STATE_AUTO,   /* from the agent's hello (zmq_msg_agent_shape); the default */
    ZB_KILL_STATE_ALWAYS, /* every agent: v0.8.1 and later */
    ZB_KILL_STATE_NEVER,  /* no agent: v0.7.x and v0.8.0 */
};

/* One per server: shared scratch and the routing-id counters. */
struct zbridge {
    struct backend *be;
    uint32_t max_frame;
    int job_field;              /* 0 course_id, 1 taskset_id (srv_config.job_field) */
    int kill_state;             /* enum zb_kill_state (srv_config.zmq_kill_state) */
    struct ing_mp_writer zw;    /* message being encoded */
    struct ing_mp_writer hello; /* an ssh_allowed agent's environments with their twins */
    struct ing_mp_writer legacy; /* a v0.5 - v0.6.2 message rewritten in the main dialect */
    char ssh_env[ZB_NAME_MAX];  /* a job's twin environment name (SSH routing) */
    uint8_t *conv;              /* native re-encoding of a message from a peer */
    size_t conv_cap;
    uint8_t *rel; /* a native body being relayed to a peer, decoded */
    size_t rel_cap;
    uint32_t ids[2];      /* routing id counters, per endpoint ([0] agents, [1] clients) */
    struct zconn *zconns; /* every ZeroMQ connection */
    /* While an agent's result with an integer grade is handled: its job id (a view into
     * the message), so that its relay to a ZeroMQ client keeps the integer. */
    bool int_grade;
    struct ing_view int_grade_job;
    /* While a ClientNewJob or AgentJobDone that the fast path read (ZMQ_DEC_FAST) is
     * handled: its bytes, their layout and the native body the backend relays for it (an
     * AgentJobDone's whole body, a ClientNewJob's job spec), so that its relay to a ZeroMQ
     * peer (the BackendJobDone, or the BackendNewJob when a free slot takes the job at once)
     * copies its pairs instead of encoding them again. pass_mp NULL: none. */
    const uint8_t *pass_mp;
    const uint8_t *pass_nat;
    size_t pass_nat_len;
    uint8_t pass_type;
    struct zmq_msg_layout pass_lay;
    /* While an AgentJobDone read by the fast path is handled: the message, whose native
     * body is built only when a peer needs it (zb_lazy_body): the backend gets it as NULL. */
    const struct ing_msg *lazy_m;
    size_t lazy_mn;
};

/* zb_init prepares zb for a server whose backend is be. */
void zb_init(struct zbridge *zb, struct backend *be, uint32_t max_frame, int job_field);
void zb_fini(struct zbridge *zb);

/* zb_open makes connection c (of role ING_ROLE_*, named name, whose first input byte is
 * 0xFF) a ZeroMQ peer: sends our greeting at once. auth_required: the endpoint requires
 * authentication, which ZeroMQ peers cannot do: c is then closed. Returns the bridge side of
 * c, or NULL when c was closed. */
struct zconn *zb_open(struct zbridge *zb, struct conn *c, uint8_t role, bool auth_required);
/* zb_close releases z (c is being reaped). */
void zb_close(struct zconn *z);
/* zb_input handles every complete ZMTP unit in in (c's input buffer). */
void zb_input(struct zconn *z, struct buf *in);
/* zb_send encodes m for the peer; zb_relay does it for a native body of type type. */
void zb_send(struct zconn *z, const struct ing_msg *m);
void zb_relay(struct zconn *z, uint8_t type, const uint8_t *body, size_t len);
/* zb_send_shared queues the BackendUpdateEnvironments m, whose map is the whole of blk, as
 * the message's bytes around a reference to blk (srv_conn_share). Returns false when it
 * must be encoded (zb_send) instead: a v0.5 - v0.6.2 peer (another shape of the list), or
 * no room for a reference; nothing queued then. */
bool zb_send_shared(struct zconn *z, const struct ing_msg *m, struct sblk *blk);

/* zb_lazy_body sets *body, *len to the native body of a relayed message of type type that
 * the backend got as NULL (an AgentJobDone read by the fast path, relayed as a
 * BackendJobDone): built now, for a native client or a v0.5 - v0.6.2 one. Returns 0, or
 * -ENOENT (no such message being handled) or -ENOMEM. */
int zb_lazy_body(struct zbridge *zb, uint8_t type, const uint8_t **body, size_t *len);

/* Provided by server.c. */
/* srv_conn_reserve makes room for n more output bytes of c; NULL when c was dropped. */
uint8_t *srv_conn_reserve(struct conn *c, size_t n);
/* srv_conn_produce commits n bytes written at srv_conn_reserve's pointer, to be flushed. */
void srv_conn_produce(struct conn *c, size_t n);
/* srv_conn_share queues pre[0..npre), a reference to the shared block blk (sblk.h) and
 * post[0..npost) in c's output. Returns 0 (queued, or c dropped), or -ENOSPC when c holds
 * too many references already (nothing queued: copy instead). */
int srv_conn_share(struct conn *c, struct sblk *blk, const void *pre, size_t npre,
                   const void *post, size_t npost);
/* srv_conn_close closes c (deferred); srv_conn_close_after_flush once its output is out. */
void srv_conn_close(struct conn *c, const char *why);
void srv_conn_close_after_flush(struct conn *c, const char *why);
/* srv_conn_reading: c's input is still to be handled (not closing); srv_conn_live: c is
 * not closing (it may be closing once its output is out). */
bool srv_conn_reading(const struct conn *c);
bool srv_conn_live(const struct conn *c);
/* srv_conn_spent counts one more unit of c's input in this wake-up (bounded work): true
 * when the rest must wait for the next iteration. */
bool srv_conn_spent(struct conn *c, unsigned *frames);
/* srv_conn_name: "client 12 (tcp://...)"; srv_conn_name_append adds text to it. */
const char *srv_conn_name(const struct conn *c);
void srv_conn_name_append(struct conn *c, const char *text);
/* srv_conn_opened registers c with the backend once its handshake is done. Returns 0, or
 * -ENOMEM (c was closed). */
int srv_conn_opened(struct conn *c);
/* srv_conn_client / srv_conn_agent: c's backend client or agent (NULL if not one);
 * srv_conn_dispatch hands a decoded message (native body body[0..len) where the handler needs one)
 * to c's handler. */
struct be_client *srv_conn_client(const struct conn *c);
struct be_agent *srv_conn_agent(const struct conn *c);
void srv_conn_dispatch(struct conn *c, const struct ing_msg *m, const uint8_t *body, size_t len);

#endif
