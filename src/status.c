/* SPDX-License-Identifier: MIT */
/* status.c: see status.h. */
#include "status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inginious/mp.h"
#include "journal.h"
#include "inginious/version.h"
#include "status_html.h" /* generated from src/status.html by the Makefile */

const char *
status_page(size_t *len)
{
    *len = sizeof(status_html);
    return (const char *)status_html;
}

void
status_init(struct status *st, const struct backend *be, const struct metrics_server *ms,
            double start_s, size_t max_envs)
{
    memset(st, 0, sizeof(*st));
    st->be = be;
    st->ms = ms;
    st->start_s = start_s;
    st->max_envs = max_envs;
}

void
status_fini(struct status *st)
{
    free(st->envs);
    st->envs = NULL;
    free(st->keys);
    st->keys = NULL;
    free(st->mp);
    st->mp = NULL;
}

static uint64_t
done_total(const struct backend *be)
{
    uint64_t n = 0;
    for (int i = 0; i < METRICS_NRESULT; i++)
        n += be->mc.done[i];
    return n;
}

void
status_sample(struct status *st)
{
    uint64_t d = done_total(st->be);
    uint64_t n = d - st->last_done;
    st->last_done = d;
    st->tput[st->tput_n++ % STATUS_TPUT] = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static void
env_add(void *arg, const char *type, const char *name, uint64_t waiting, uint64_t running,
        uint32_t providers)
{
    struct status *st = arg;
    (void)providers;
    if (st->nenvs == st->envs_cap) /* never: grown before the walk */
        return;
    st->envs[st->nenvs++] = (struct metrics_env){type, name, waiting, running};
}

/* collect_envs fills st->envs with every environment. Returns 0 or -ENOMEM. */
static int
collect_envs(struct status *st)
{
    size_t need = st->be->nenvs;
    if (need > st->envs_cap) {
        struct metrics_env *n = realloc(st->envs, need * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        st->envs = n;
        st->envs_cap = need;
    }
    st->nenvs = 0;
    be_foreach_env(st->be, env_add, st);
    return 0;
}

static void
key_add(void *arg, const void *scope, int64_t prio, const char *key, size_t len, uint32_t nwait)
{
    struct status *st = arg;
    (void)scope;
    (void)prio;
    if (nwait > 0 && st->nkeys < st->keys_cap) /* grown before the walk */
        st->keys[st->nkeys++] = (struct metrics_key){key, len, nwait};
}

/* collect_keys fills st->keys with the fair-share keys, merged. Returns 0 or -ENOMEM. */
static int
collect_keys(struct status *st)
{
    size_t need = st->be->fair.n;
    if (need > st->keys_cap) {
        struct metrics_key *n = realloc(st->keys, need * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        st->keys = n;
        st->keys_cap = need;
    }
    st->nkeys = 0;
    fair_foreach(&st->be->fair, key_add, st);
    st->nkeys = metrics_merge_keys(st->keys, st->nkeys);
    return 0;
}

static void
slots(const struct backend *be, uint64_t *total, uint64_t *busy)
{
    *total = *busy = 0;
    for (const struct be_agent *a = be->agents; a != NULL; a = be_agent_next(a)) {
        *total += be_agent_slots(a);
        *busy += be_agent_busy(a);
    }
}

int
status_metrics(struct status *st, struct buf *out)
{
    const struct backend *be = st->be;
    struct metrics_core core = be->mc;
    core.submitted = be->stats.jobs_submitted;
    core.dispatched = be->stats.jobs_dispatched;
    core.requeued = be->stats.jobs_requeued;
    if (collect_envs(st) < 0)
        return -ENOMEM;
    struct metrics_snap s;
    memset(&s, 0, sizeof(s));
    s.core = &core;
    s.srv = st->ms;
    s.envs = st->envs;
    s.nenvs = st->nenvs;
    s.types = NULL;
    s.ntypes = 0;
    struct metrics_type types[BE_MAX_ETYPES + 1];
    for (size_t i = 0; i < be->n_etypes && i <= BE_MAX_ETYPES; i++)
        types[s.ntypes++] = *be->etypes[i];
    s.types = types;
    s.jobs_killed = be->stats.jobs_killed;
    s.jobs_crashed = be->stats.jobs_crashed;
    s.reports_dropped = be->stats.reports_dropped;
    s.agents_lost = be->stats.agents_lost;
    s.jobs_claimed = be->stats.jobs_claimed;
    s.claims_refused = be->stats.claims_refused;
    s.sessions_resumed = be->stats.sessions_resumed;
    s.kept_shed = be->stats.kept_shed;
    s.sessions = be->n_sessions;
    s.kept_results = be->n_kept;
    s.waiting = be->n_waiting;
    s.running = be->n_running;
    s.agents = be->n_agents;
    slots(be, &s.slots, &s.slots_busy);
    s.max_envs = st->max_envs;
    if (be->fair.mode != FAIR_NONE) {
        static struct metrics_key none;
        if (collect_keys(st) < 0)
            return -ENOMEM;
        s.keys = st->keys != NULL ? st->keys : &none;
        s.nkeys = st->nkeys;
    }
    struct metrics_journal jm;
    if (be->jr != NULL) {
        journal_metrics(be->jr, &jm);
        s.journal = &jm;
    }
    metrics_proc_read(&s.proc, st->start_s);
    return metrics_render(&s, out);
}

__attribute__((format(printf, 2, 3))) static int
put(struct buf *out, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -EINVAL;
    return buf_append(out, tmp, (size_t)n);
}

/* jstr appends s as a JSON string (control bytes escaped; other bytes as they are). */
static int
jstr(struct buf *out, const char *s)
{
    size_t n = strlen(s);
    if (buf_reserve(out, 6 * n + 2) < 0)
        return -ENOMEM;
    char *t = (char *)buf_tail(out), *t0 = t;
    *t++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *t++ = '\\';
            *t++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            t += sprintf(t, "\\u%04x", c);
        } else {
            *t++ = (char)c;
        }
    }
    *t++ = '"';
    buf_produce(out, (size_t)(t - t0));
    return 0;
}

int
status_json(struct status *st, struct buf *out)
{
    const struct backend *be = st->be;
    uint64_t total, busy;
    int rc = collect_envs(st);
    slots(be, &total, &busy);
    uint64_t refused = 0;
    for (int i = 0; i < METRICS_NREFUSE; i++)
        refused += be->mc.refused[i];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double up = (double)ts.tv_sec - st->start_s;
#define P(...)                                                                                     \
    do {                                                                                           \
        if (rc == 0)                                                                               \
            rc = put(out, __VA_ARGS__);                                                            \
    } while (0)
#define S(x)                                                                                       \
    do {                                                                                           \
        if (rc == 0)                                                                               \
            rc = jstr(out, x);                                                                     \
    } while (0)
    P("{\"version\":\"%s\",\"uptime_s\":%.0f,\"now\":%lld,", ING_VERSION,
      up < 0 ? 0 : up, (long long)ts.tv_sec);
    P("\"jobs\":{\"submitted\":%llu,\"refused\":%llu,\"dispatched\":%llu,\"started\":%llu,",
      (unsigned long long)be->stats.jobs_submitted, (unsigned long long)refused,
      (unsigned long long)be->stats.jobs_dispatched, (unsigned long long)be->mc.started);
    P("\"done\":%llu,\"killed\":%llu,\"crashed\":%llu,\"waiting\":%llu,\"running\":%llu},",
      (unsigned long long)done_total(be), (unsigned long long)be->stats.jobs_killed,
      (unsigned long long)be->stats.jobs_crashed, (unsigned long long)be->n_waiting,
      (unsigned long long)be->n_running);
    P("\"slots\":%llu,\"slots_busy\":%llu,\"environments\":[", (unsigned long long)total,
      (unsigned long long)busy);
    for (size_t i = 0; rc == 0 && i < st->nenvs; i++) {
        const struct metrics_env *e = &st->envs[i];
        P("%s{\"type\":", i ? "," : "");
        S(e->type);
        P(",\"name\":");
        S(e->name);
        P(",\"waiting\":%llu,\"running\":%llu}", (unsigned long long)e->waiting,
          (unsigned long long)e->running);
    }
    P("],\"agents\":[");
    bool first = true;
    for (const struct be_agent *a = be->agents; rc == 0 && a != NULL; a = be_agent_next(a)) {
        P("%s{\"name\":", first ? "" : ",");
        first = false;
        S(be_agent_name(a));
        P(",\"slots\":%u,\"busy\":%u,\"environments\":[", be_agent_slots(a), be_agent_busy(a));
        for (uint32_t i = 0; rc == 0 && i < be_agent_nenvs(a); i++) {
            const char *type, *name;
            be_agent_env(a, i, &type, &name);
            char both[600];
            snprintf(both, sizeof(both), "%s/%s", type, name);
            P("%s", i ? "," : "");
            S(both);
        }
        P("]}");
    }
    P("],\"throughput\":[");
    uint64_t n = st->tput_n < STATUS_TPUT ? st->tput_n : STATUS_TPUT;
    for (uint64_t i = 0; i < n; i++)
        P("%s%u", i ? "," : "", st->tput[(st->tput_n - n + i) % STATUS_TPUT]);
    if (be->jr != NULL) {
        struct metrics_journal jm;
        journal_metrics(be->jr, &jm);
        P("],\"journal\":{\"available\":%s,\"bytes\":%llu,\"live_bytes\":%llu,"
          "\"segments\":%llu,\"compactions\":%llu,\"fsyncs\":%llu",
          jm.ok ? "true" : "false", (unsigned long long)jm.bytes,
          (unsigned long long)jm.live_bytes, (unsigned long long)jm.segments,
          (unsigned long long)jm.compactions, (unsigned long long)jm.fsyncs);
        P(",\"fsync_avg_us\":%llu}", (unsigned long long)(jm.fsync->count
                                                            ? jm.fsync->sum_us / jm.fsync->count
                                                            : 0));
        P(",\"failures\":[");
    } else {
        P("],\"failures\":[");
    }
    uint64_t nf = be->nfail < BE_FAILURES ? be->nfail : BE_FAILURES;
    for (uint64_t i = 0; i < nf; i++) { /* newest first */
        const struct be_failure *f = &be->fail[(be->nfail - 1 - i) % BE_FAILURES];
        P("%s{\"time\":%lld,\"job_id\":", i ? "," : "", (long long)f->time_s);
        S(f->job_id);
        P(",\"environment\":");
        S(f->env);
        P(",\"result\":");
        S(f->result);
        P(",\"reason\":");
        S(f->reason);
        P("}");
    }
    P("]}\n");
#undef P
#undef S
    return rc;
}

static void
kv(struct ing_mp_writer *w, const char *k, uint64_t v)
{
    ing_mp_put_cstr(w, k);
    ing_mp_put_uint(w, v);
}

int
status_mp(struct status *st, struct ing_mp_writer *w)
{
    const struct backend *be = st->be;
    uint64_t total, busy, refused = 0;
    if (collect_envs(st) < 0)
        return -ENOMEM;
    metrics_sort_envs(st->envs, st->nenvs);
    slots(be, &total, &busy);
    for (int i = 0; i < METRICS_NREFUSE; i++)
        refused += be->mc.refused[i];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double up = (double)ts.tv_sec - st->start_s;
    struct metrics_journal jm;
    if (be->jr != NULL)
        journal_metrics(be->jr, &jm);
    ing_mp_put_map(w, be->jr != NULL ? 22 : 18);
    ing_mp_put_cstr(w, "version");
    ing_mp_put_cstr(w, ING_VERSION);
    kv(w, "uptime_s", up < 0 ? 0 : (uint64_t)up);
    kv(w, "submitted", be->stats.jobs_submitted);
    kv(w, "refused", refused);
    kv(w, "dispatched", be->stats.jobs_dispatched);
    kv(w, "started", be->mc.started);
    kv(w, "done", done_total(be));
    kv(w, "killed", be->stats.jobs_killed);
    kv(w, "crashed", be->stats.jobs_crashed);
    kv(w, "lost", be->mc.lost);
    kv(w, "requeued", be->stats.jobs_requeued);
    kv(w, "waiting", be->n_waiting);
    kv(w, "running", be->n_running);
    kv(w, "agents", be->n_agents);
    kv(w, "slots", total);
    kv(w, "slots_busy", busy);
    kv(w, "clients", be->n_clients);
    if (be->jr != NULL) {
        kv(w, "journal_available", jm.ok);
        kv(w, "journal_bytes", jm.bytes);
        kv(w, "journal_segments", jm.segments);
        kv(w, "journal_fsyncs", jm.fsyncs);
    }
    /* The deepest environments (as /metrics labels them); the others summed as other. */
    size_t own = st->nenvs < st->max_envs ? st->nenvs : st->max_envs;
    ing_mp_put_cstr(w, "environments");
    ing_mp_put_array(w, (uint32_t)(own + (own < st->nenvs)));
    for (size_t i = 0; i < own; i++) {
        ing_mp_put_array(w, 4);
        ing_mp_put_cstr(w, st->envs[i].type);
        ing_mp_put_cstr(w, st->envs[i].name);
        ing_mp_put_uint(w, st->envs[i].waiting);
        ing_mp_put_uint(w, st->envs[i].running);
    }
    if (own < st->nenvs) {
        uint64_t wsum = 0, rsum = 0;
        for (size_t i = own; i < st->nenvs; i++) {
            wsum += st->envs[i].waiting;
            rsum += st->envs[i].running;
        }
        ing_mp_put_array(w, 4);
        ing_mp_put_cstr(w, "other");
        ing_mp_put_cstr(w, "other");
        ing_mp_put_uint(w, wsum);
        ing_mp_put_uint(w, rsum);
    }
    return w->err;
}

/* mp_key fills k with what status_mp's map shows: any change in it changes one of these. */
static void
mp_key(const struct status *st, uint64_t k[STATUS_MP_KEY])
{
    const struct backend *be = st->be;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t refused = 0;
    for (int i = 0; i < METRICS_NREFUSE; i++)
        refused += be->mc.refused[i];
    double up = (double)ts.tv_sec - st->start_s;
    uint64_t v[STATUS_MP_KEY] = {
        up < 0 ? 0 : (uint64_t)up, be->stats.jobs_submitted, refused, be->stats.jobs_dispatched,
        be->mc.started, done_total(be), be->stats.jobs_killed, be->stats.jobs_crashed,
        be->mc.lost, be->stats.jobs_requeued, be->n_waiting, be->n_running, be->n_agents,
        be->n_clients, be->slot_seq /* every slot given or freed, hellos */, be->nenvs,
        be->n_provided, be->jr != NULL ? be->jr->disk_bytes + 1 : 0,
        be->jr != NULL ? be->jr->nsegs : 0, be->jr != NULL ? be->jr->n_syncs : 0,
        be->jr != NULL ? (uint64_t)be->jr->err : 0,
    };
    memcpy(k, v, sizeof(v));
}

int
status_mp_cached(struct status *st, const uint8_t **p, size_t *len, bool *fresh)
{
    uint64_t k[STATUS_MP_KEY];
    mp_key(st, k);
    /* While a hello's registration is between the removal of the agent's previous one and
     * its end (proto.md 5.6), the last map stands: no half-registered agent in it. */
    *fresh = st->mp == NULL || (memcmp(k, st->mp_key, sizeof(k)) != 0 && !st->be->envs_held);
    if (*fresh) {
        struct ing_mp_writer w;
        ing_mp_writer_init_dyn(&w);
        if (status_mp(st, &w) != 0) {
            ing_mp_writer_fini(&w);
            return -ENOMEM;
        }
        free(st->mp);
        st->mp = w.buf; /* ownership taken from the writer */
        st->mp_len = w.len;
        memcpy(st->mp_key, k, sizeof(k));
    }
    *p = st->mp;
    *len = st->mp_len;
    return 0;
}
