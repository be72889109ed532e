/* SPDX-License-Identifier: MIT */
/* status.h: what the metrics port answers, built from the backend (read only) and the
 * server's counters: the Prometheus exposition (GET /metrics), the JSON status (GET
 * /status) and the embedded status page (GET /). Also a ring of jobs done per second
 * for the page's throughput chart, sampled once a second. */
#ifndef ING_STATUS_H
#define ING_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "buf.h"
#include "metrics.h"

#define STATUS_TPUT 300 /* seconds of throughput kept */

#define STATUS_MP_KEY 21 /* counters a BackendStats map depends on */

struct status {
    const struct backend *be;
    const struct metrics_server *ms;
    double start_s;  /* Unix time the process started */
    size_t max_envs; /* --metrics-max-envs */
    struct metrics_env *envs; /* scratch for one snapshot */
    size_t nenvs, envs_cap;
    struct metrics_key *keys; /* scratch: fair-share keys */
    size_t nkeys, keys_cap;
    uint32_t tput[STATUS_TPUT]; /* jobs done per second, ring */
    uint64_t tput_n;            /* samples taken */
    uint64_t last_done;
    /* The last BackendStats map (status_mp_cached) and what it was made from. */
    uint8_t *mp;
    size_t mp_len;
    uint64_t mp_key[STATUS_MP_KEY];
};

void status_init(struct status *st, const struct backend *be, const struct metrics_server *ms,
                 double start_s, size_t max_envs);
void status_fini(struct status *st);
/* status_sample records the jobs done since the previous sample (call once a second). */
void status_sample(struct status *st);
/* status_metrics / status_json append the answer's body to out. Return 0 or -ENOMEM. */
int status_metrics(struct status *st, struct buf *out);
int status_json(struct status *st, struct buf *out);
/* status_mp writes the BackendStats map (proto.md §5.8). Returns 0 or the writer's error. */
struct ing_mp_writer;
int status_mp(struct status *st, struct ing_mp_writer *w);
/* status_mp_cached returns the BackendStats map in *p (owned by st, valid until the next
 * call): the last one made when nothing it shows has changed since (same second of uptime,
 * same counters), else a new one; *fresh tells which. A flood of ClientGetStats costs one
 * walk over the environments per change, not one per request. Returns 0 or -ENOMEM. */
int status_mp_cached(struct status *st, const uint8_t **p, size_t *len, bool *fresh);
/* status_page returns the embedded HTML page. */
const char *status_page(size_t *len);

#endif
