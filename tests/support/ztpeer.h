/* SPDX-License-Identifier: MIT */
/* ztpeer.h: a ZeroMQ test peer for the integration tests of the ZeroMQ bridge
 * (tests/test_zbridge.c): a hand-written ZMTP 3.1 DEALER (NULL mechanism) speaking the
 * INGInious msgpack dialect to the real backend started by tpeer.h.
 *
 * A zt_peer is a tp_peer (tpeer.h: its socket, input buffer and lifetime belong to the
 * tp_ctx) driven at the ZMTP level: our greeting and READY (Socket-Type DEALER, optional
 * Identity), the server's greeting and READY checked (ROUTER), then single-frame messages.
 * Messages are built with zmq_msg_encode or given as raw msgpack; received ones are decoded
 * with zmq_msg_decode (views into the peer's input, valid until its next receive). PING
 * commands are answered with PONG; msgpack Pings are answered with Pong when auto_pong is
 * set (agents) and skipped unless see_pings is set.
 *
 * Every wait is a poll() with TP_DEADLINE_MS; a failure fails the running cmocka test at the
 * caller's file and line. */
#ifndef ZTPEER_H
#define ZTPEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "tpeer.h"

struct zt_peer {
    struct tp_peer *tp;
    bool agent;
    bool auto_pong;      /* answer msgpack Ping with Pong (default: agents) */
    bool see_pings;      /* return msgpack Pings from zt_recv */
    unsigned pings;      /* msgpack Pings received */
    size_t last;         /* input bytes of the message handed out by the last receive */
    const uint8_t *body; /* that message's msgpack bytes */
    size_t body_len;
    struct ing_msg msg;   /* decoded (views into tp->in) */
    const char *why;      /* zmq_msg_decode's reason when it failed */
    uint8_t greeting[64]; /* the server's greeting */
};

/* zt_open connects a DEALER to the agent (agent) or client endpoint of c's backend.
 * greeting_first: read the server's whole greeting before sending a byte (the server must
 * send it at accept). identity: the READY's Identity (NULL or "" for none). */
struct zt_peer *zt_open_at(const char *file, int line, struct tp_ctx *c, bool agent,
                           bool greeting_first, const char *identity);
#define zt_open(...) zt_open_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_close closes p (its tp_peer too) and frees it. */
void zt_close(struct tp_ctx *c, struct zt_peer *p);

/* zt_send_raw sends one message frame holding body[0..len) (any bytes). */
void zt_send_raw_at(const char *file, int line, struct zt_peer *p, const void *body, size_t len);
#define zt_send_raw(...) zt_send_raw_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_send encodes m as INGInious does (course_id) and sends it. */
void zt_send_at(const char *file, int line, struct zt_peer *p, const struct ing_msg *m);
#define zt_send(...) zt_send_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_send_w sends the message built in w (then freed). */
void zt_send_w_at(const char *file, int line, struct zt_peer *p, struct ing_mp_writer *w);
#define zt_send_w(...) zt_send_w_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_recv returns the next message within timeout_ms: its type (> 0) with *m set, or
 * -ETIMEDOUT, -EPIPE (closed by the backend), -ECONNRESET (ZMTP ERROR received), or the
 * zmq_msg_decode error (p->why says why; p->body holds the bytes). */
int zt_recv(struct zt_peer *p, int timeout_ms, const struct ing_msg **m);

/* zt_expect receives the next message and checks its type. */
const struct ing_msg *zt_expect_at(const char *file, int line, struct zt_peer *p, uint8_t type);
#define zt_expect(...) zt_expect_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_expect_raw receives the next message (Pings skipped, decodable or not) and checks that
 * its msgpack bytes are exactly want[0..len). */
void zt_expect_raw_at(const char *file, int line, struct zt_peer *p, const void *want, size_t len);
#define zt_expect_raw(...) zt_expect_raw_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_has checks that the msgpack bytes of the last message received hold needle[0..len). */
bool zt_has(const struct zt_peer *p, const void *needle, size_t len);
#define zt_has_lit(p, lit) zt_has((p), (lit), sizeof(lit) - 1)

/* zt_expect_nothing checks that nothing arrives within ms and the connection stays open. */
void zt_expect_nothing_at(const char *file, int line, struct zt_peer *p, int ms);
#define zt_expect_nothing(...) zt_expect_nothing_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_expect_closed checks that the backend closes p within the deadline (messages and an
 * ERROR command before the close are skipped). */
void zt_expect_closed_at(const char *file, int line, struct zt_peer *p);
#define zt_expect_closed(...) zt_expect_closed_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_client opens a client, sends ClientHello{name} and expects BackendUpdateEnvironments. */
struct zt_peer *zt_client_at(const char *file, int line, struct tp_ctx *c, const char *name);
#define zt_client(...) zt_client_at(__FILE__, __LINE__, __VA_ARGS__)

/* zt_map_begin starts a dynamic writer with a map of n pairs (the caller adds them, "@type"
 * included). zt_kv_str / zt_kv_raw add one pair. */
void zt_map_begin(struct ing_mp_writer *w, uint32_t n);
void zt_kv_str(struct ing_mp_writer *w, const char *key, const char *value);
void zt_kv_raw(struct ing_mp_writer *w, const char *key, const void *raw, size_t len);
#define zt_kv_lit(w, key, lit) zt_kv_raw((w), (key), (lit), sizeof(lit) - 1)

/* zt_new_job sends a main ClientNewJob for docker/default with the given inputdata (raw
 * msgpack map, NULL: {}) and environment_parameters (NULL: {}). */
void zt_new_job_at(const char *file, int line, struct zt_peer *p, const char *id,
                   const char *inputdata, size_t in_len, const char *params, size_t params_len);
#define zt_new_job(...) zt_new_job_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
