/* SPDX-License-Identifier: MIT */
/* httpd.h: the metrics port: a small, strict HTTP/1.1 server in the server's event loop
 * (no thread). GET and HEAD of /metrics (Prometheus text 0.0.4), /status (JSON) and /
 * (the status page); anything else 404, other methods 405, bad heads 400 / 431 / 505.
 *
 * Hostile or slow peers cannot stall the loop: a connection is served at most one request
 * at a time, its head is at most 8 KiB, the whole head must arrive within the read timeout
 * (else 408 and close; no per-byte extension), an idle keep-alive connection is closed at
 * the same timeout, a connection serves at most keepalive_max requests, connections past
 * max_conns are answered 503 and closed, an answer is at most max_out bytes (else 503),
 * each wake-up reads and writes a bounded amount per connection, and requests wait for the
 * next wake-up once the current one has run for 2 ms. Peers outside the
 * allow-list (loopback when none is given) are closed at once. */
#ifndef ING_HTTPD_H
#define ING_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "acl.h"
#include "ev.h"
#include "status.h"

struct httpd_config {
    const char *addr; /* tcp://HOST:PORT */
    const struct acl_entry *allow; /* NULL/0: loopback (127.0.0.0/8, ::1) only */
    size_t nallow;
    uint32_t max_conns;     /* default 128 */
    uint64_t timeout_ms;    /* default 10000 */
    uint32_t keepalive_max; /* default 100 */
    size_t max_out;         /* default 16 MiB */
    /* The server's memory budget (--max-memory): admit(arg, n) tells whether n more bytes
     * fit; NULL: no budget. What the port holds is httpd_mem. */
    bool (*admit)(void *arg, uint64_t n);
    void *admit_arg;
};

struct httpd;

void httpd_config_default(struct httpd_config *cfg);
/* httpd_new binds cfg->addr and serves it in loop, answering from st (borrowed, and
 * sampled once a second). Returns NULL with a reason in err. */
struct httpd *httpd_new(struct ev_loop *loop, const struct httpd_config *cfg, struct status *st,
                        struct metrics_server *ms, char *err, size_t errlen);
/* httpd_free closes every connection and the listener. NULL is fine. */
void httpd_free(struct httpd *h);
/* httpd_mem is the memory the port holds: its connections, their output and its scratch.
 * NULL is fine (0). */
uint64_t httpd_mem(const struct httpd *h);
/* httpd_bound_addr: "tcp://127.0.0.1:PORT". */
const char *httpd_bound_addr(const struct httpd *h);

#endif
