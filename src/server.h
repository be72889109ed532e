/* SPDX-License-Identifier: MIT */
/* server.h: the inginious-backend server: listeners, connections (handshake, framing,
 * batched reads and writes, bounded output, deferred close), timers and signals, around
 * the backend state machine (backend.h).
 *
 * One connection = one peer. Its wire dialect is chosen by the first byte it sends: the
 * native protocol (proto.md) or, where compiled in, another dialect. */
#ifndef ING_SERVER_H
#define ING_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acl.h"
#include "backend.h"
#include "httpd.h"
#include "journal.h"

struct srv_config {
    struct be_config be;
    const char *agent_addr;  /* default tcp://127.0.0.1:2001 */
    const char *client_addr; /* default tcp://127.0.0.1:2000 */
    uint32_t max_frame;
    uint64_t max_output;    /* per connection: pending output bytes before it is dropped */
    uint64_t max_memory;    /* the budget over buffers and job bodies; 0 = 1/4 of the RAM */
    uint64_t max_client_bytes; /* job bodies one client may have held; 0 = max_memory / 4 */
    uint64_t frame_timeout_ms; /* an incomplete frame older than this closes its peer */
    uint32_t max_conns;     /* lowered at start to what RLIMIT_NOFILE allows */
    uint32_t max_conns_per_addr; /* 0 = no limit */
    uint32_t max_errors;    /* protocol errors before a peer is closed */
    uint64_t ping_interval_ms;
    uint64_t handshake_timeout_ms;
    uint64_t drain_timeout_ms;
    const char *port_file;  /* written with the bound addresses, or NULL */
    const uint8_t *secret[2];  /* [0] agents, [1] clients: shared secret, NULL = no auth */
    size_t secret_len[2];
    const struct acl_entry *allow[2]; /* [0] agents, [1] clients: empty = everyone */
    size_t nallow[2];
    int job_field;          /* ZeroMQ agents get the course as 0 course_id, 1 taskset_id */
    bool zmq_greet_first;   /* ZMTP greeting at accept; endpoints without a secret: ZeroMQ only */
    int zmq_kill_state;     /* enum zb_kill_state: BackendKillJob's state to ZeroMQ agents */
    bool handle_signals;    /* SIGTERM/SIGINT/SIGHUP through signalfd (the command) */
    bool ipv6_only;         /* IPv6 listeners refuse IPv4 peers (default: dual-stack) */
    /* Socket activation: a listening socket to serve instead of binding the address, [0]
     * agents, [1] clients; 0 = none (the server owns and closes it). */
    int listen_fd[2];
    /* systemd notifications from $NOTIFY_SOCKET (sd.h): READY=1 once listening, STATUS=
     * with the queue figures every SRV_STATUS_MS, STOPPING=1 on drain, WATCHDOG=1 at half
     * of $WATCHDOG_USEC. */
    bool notify;
    /* SIGHUP (srv_reload): reload fills next, a copy of the settings in use, with freshly
     * read secrets and allow-lists, and returns 0; or returns -1 with a reason in err, and
     * the settings in use are kept. Whatever next points to must stay valid until the
     * next successful reload. NULL: SIGHUP only logs. */
    int (*reload)(void *arg, struct srv_config *next, char *err, size_t errlen);
    void *reload_arg;
    struct httpd_config metrics; /* the metrics port (httpd.h); metrics.addr NULL = off */
    uint32_t metrics_max_envs;   /* environments with their own label in /metrics */
    /* --journal: the directory of the write-ahead journal (NULL: off) and its settings. The
     * server opens it (locked) before listening, replays it into the backend, and writes
     * and compacts it once per loop iteration, before sleeping. */
    const char *journal_dir;
    struct journal_config journal;
};

#define SRV_STATUS_MS 2000 /* STATUS= period (sent only when it changed) */

struct server;

/* srv_config_default fills the documented defaults. */
void srv_config_default(struct srv_config *cfg);
/* srv_new binds both endpoints. Returns NULL with a reason in err. */
struct server *srv_new(const struct srv_config *cfg, char *err, size_t errlen);
void srv_free(struct server *s);
/* srv_run serves until the server has shut down (after SIGTERM and the drain, or
 * srv_stop). Returns 0 or -errno. */
int srv_run(struct server *s);
/* srv_run_once runs one loop iteration waiting at most timeout_ms. Returns 0, 1 when the
 * server has finished shutting down, or -errno. */
int srv_run_once(struct server *s, int timeout_ms);
/* srv_reload re-reads the secrets and allow-lists (cfg.reload), as SIGHUP does: new
 * handshakes and connections get the new settings; peers already in keep their session.
 * Returns 0, or -EINVAL when the reload was refused (logged, old settings kept). */
int srv_reload(struct server *s);
/* srv_shutdown starts a drain (as SIGTERM does); srv_stop exits at once. */
void srv_shutdown(struct server *s);
void srv_stop(struct server *s);
struct backend *srv_backend(struct server *s);
/* srv_bound_addr returns the bound address of an endpoint ("tcp://127.0.0.1:PORT"). */
const char *srv_bound_addr(const struct server *s, bool agents);
/* srv_adopt makes an already connected socket (e.g. one end of a socketpair) a peer of the
 * given role (ING_ROLE_*), as if accepted on that endpoint. Takes ownership of fd (closed on
 * failure). Returns 0 or -errno. Used by in-process tests and fuzzing. */
int srv_adopt(struct server *s, int fd, uint8_t role);
/* srv_metrics_addr: the metrics port's bound address, or NULL when off. */
const char *srv_metrics_addr(const struct server *s);
/* srv_max_iter_us: the longest event-loop iteration so far, in microseconds. */
uint64_t srv_max_iter_us(const struct server *s);
/* srv_mem_used: the bytes counted in the memory budget (buffers and job bodies); srv_budget:
 * the budget. */
uint64_t srv_mem_used(const struct server *s);
uint64_t srv_budget(const struct server *s);

#endif
