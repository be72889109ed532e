/* SPDX-License-Identifier: MIT */
/* zbridge.c: the ZeroMQ dialect: ZMTP 3.x framing (zmtp.h) carrying INGInious msgpack maps
 * (zmq_msg.h), on a server connection (see zbridge.h). */
#include "zbridge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "log.h"
#include "sblk.h"
#include "zmq_msg.h"
#include "zmtp.h"

/* The hidden twin of an environment, for jobs asking for SSH (ssh_job). */
#define ZB_SSH_SUFFIX "\x1fssh"
#define ZB_SSH_SUFFIX_LEN 4

/* The ZeroMQ side of a connection. */
struct zconn {
    struct zbridge *zb;
    struct conn *c;
    struct zconn *prev, *next; /* zb->zconns */
    struct zmtp zmtp;
    uint8_t role;     /* ING_ROLE_* */
    bool ready;       /* READY exchanged */
    uint8_t release;  /* agents: enum zmq_agent_release, from the last AgentHello */
    bool ssh_allowed; /* agents of v0.8.0-v0.8.5: the hello's ssh_allowed */
    bool legacy;      /* the peer speaks v0.5 - v0.6.2 ("type" key): answered in kind */
    uint8_t id_len;
    uint8_t identity[ZMTP_IDENTITY_MAX];
};

void
zb_init(struct zbridge *zb, struct backend *be, uint32_t max_frame, int job_field)
{
    memset(zb, 0, sizeof(*zb));
    zb->be = be;
    zb->max_frame = max_frame;
    zb->job_field = job_field;
    ing_mp_writer_init_dyn(&zb->zw);
    ing_mp_writer_init_dyn(&zb->hello);
    ing_mp_writer_init_dyn(&zb->legacy);
    zb->ids[0] = zmtp_routing_seed();
    zb->ids[1] = zmtp_routing_seed();
}

void
zb_fini(struct zbridge *zb)
{
    ing_mp_writer_fini(&zb->zw);
    ing_mp_writer_fini(&zb->hello);
    ing_mp_writer_fini(&zb->legacy);
    free(zb->conv);
    free(zb->rel);
    zb->conv = zb->rel = NULL;
    zb->conv_cap = zb->rel_cap = 0;
}

static void
zconn_raw(struct zconn *z, const void *p, size_t n)
{
    uint8_t *dst = srv_conn_reserve(z->c, n);
    if (dst == NULL)
        return;
    memcpy(dst, p, n);
    srv_conn_produce(z->c, n);
}

/* zconn_encode_direct encodes m (main dialect) straight into z's output as one frame, when
 * it takes at most bound bytes: the hot path, without a copy through the scratch writer.
 * Returns 0, or -ENOMEM (it does not fit: nothing produced), or another encoder error. */
static int
zconn_encode_direct(struct zconn *z, const struct ing_msg *m, unsigned opts, size_t bound)
{
    struct zbridge *zb = z->zb;
    uint8_t *dst = srv_conn_reserve(z->c, ZMTP_HDR_MAX + bound);
    if (dst == NULL)
        return 0; /* z's connection was dropped (output limit, no memory): nothing to send */
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, dst + ZMTP_HDR_MAX, bound);
    int rc = zmq_msg_encode_opt(
        m, &w, zb->job_field ? ZMQ_JOB_FIELD_TASKSET_ID : ZMQ_JOB_FIELD_COURSE_ID, opts);
    if (rc != 0)
        return rc;
    size_t hl = zmtp_frame_header(dst, w.len, false);
    if (hl < ZMTP_HDR_MAX) /* short form: the body moves up to the 2-byte header */
        memmove(dst + hl, dst + ZMTP_HDR_MAX, w.len);
    srv_conn_produce(z->c, hl + w.len);
    return 0;
}

/* kill_without_state tells whether z's agent gets BackendKillJob without "state": as its
 * hello's shape says (v0.7.x), unless the operator said which release the fleet runs. */
static bool
kill_without_state(const struct zconn *z)
{
    switch (z->zb->kill_state) {
    case ZB_KILL_STATE_ALWAYS:
        return false;
    case ZB_KILL_STATE_NEVER:
        return true;
    default:
        return z->release == ZMQ_AGENT_V07;
    }
}

/* zconn_encode sends m to z's peer in the shape of its release (opts: ZMQ_ENC_*). bound:
 * a size the message most likely fits in, to encode it in place (0: unknown). */
static void
zconn_encode(struct zconn *z, const struct ing_msg *m, unsigned opts, size_t bound)
{
    struct zbridge *zb = z->zb;
    switch (m->type) {
    case ING_ERROR: /* no such message in the dialect: logged by the caller */
    case ING_WELCOME:
    case ING_AUTH:
    case ING_AUTH_OK:
        return;
    default:
        break;
    }
    struct ing_mp_writer *w = &zb->zw;
    w->len = 0;
    w->err = 0;
    if (m->type == ING_BACKEND_KILL_JOB && kill_without_state(z))
        opts |= ZMQ_ENC_KILL_NO_STATE;
    if (bound > 0 && !z->legacy) {
        int drc = zconn_encode_direct(z, m, opts, bound);
        if (drc == 0)
            return;
        if (drc != -ENOMEM) {
            log_msg(LOG_ERR, "%s: cannot encode %s for ZeroMQ: %s", srv_conn_name(z->c),
                    ing_msg_type_name(m->type), strerror(-drc));
            return;
        }
        /* larger than expected: through the scratch writer */
    }
    int rc =
        z->legacy
            ? zmq_msg_legacy_encode(m, w)
            : zmq_msg_encode_opt(
                  m, w, zb->job_field ? ZMQ_JOB_FIELD_TASKSET_ID : ZMQ_JOB_FIELD_COURSE_ID, opts);
    if (rc != 0) {
        log_msg(LOG_ERR, "%s: cannot encode %s for ZeroMQ: %s", srv_conn_name(z->c),
                ing_msg_type_name(m->type), strerror(-rc));
        return;
    }
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, w->len, false);
    uint8_t *dst = srv_conn_reserve(z->c, hl + w->len);
    if (dst == NULL)
        return;
    memcpy(dst, hdr, hl);
    memcpy(dst + hl, w->buf, w->len);
    srv_conn_produce(z->c, hl + w->len);
}

/* What a message the backend makes itself (BackendJobStarted, a result, Pong, ...) most
 * likely takes in the dialect: it is encoded in place when it fits. */
#define ZB_SEND_BOUND 1024

void
zb_send(struct zconn *z, const struct ing_msg *m)
{
    if (m->type == ING_BACKEND_JOB_DONE) {
        /* A result the backend made itself. Python's have stdout and stderr nil, except
         * its "Duplicate job id" crash and its kills, which have "". */
        const struct ing_job_result *r = &m->u.result;
        static const char dup[] = "Duplicate job id";
        bool empty_out = !(r->result_kind.len == 5 && memcmp(r->result_kind.p, "crash", 5) == 0) ||
                         (r->result_text.len == sizeof(dup) - 1 &&
                          memcmp(r->result_text.p, dup, sizeof(dup) - 1) == 0);
        if (!empty_out) {
            struct ing_msg c = *m;
            c.u.result.stdout_.p = c.u.result.stderr_.p = NULL;
            c.u.result.stdout_.len = c.u.result.stderr_.len = 0;
            zconn_encode(z, &c, 0, ZB_SEND_BOUND);
            return;
        }
    }
    /* In place unless it may be large (a queue snapshot, an environment list). */
    bool large = m->type == ING_BACKEND_GET_QUEUE || m->type == ING_BACKEND_UPDATE_ENVIRONMENTS;
    zconn_encode(z, m, 0, large ? 0 : ZB_SEND_BOUND);
}

bool
zb_send_shared(struct zconn *z, const struct ing_msg *m, struct sblk *blk)
{
    /* The main dialect's BackendUpdateEnvironments, as zmq_msg_encode writes it: a map of
     * two, "available_environments" then the list's map as it is, then "@type". */
    static const uint8_t pre[] = "\x82\xb6"
                                 "available_environments";
    static const uint8_t post[] = "\xa5@type\xb9"
                                  "BackendUpdateEnvironments";
    if (z->legacy || m->type != ING_BACKEND_UPDATE_ENVIRONMENTS)
        return false;
    uint8_t head[ZMTP_HDR_MAX + sizeof(pre) - 1];
    size_t hl = zmtp_frame_header(head, sizeof(pre) - 1 + blk->len + sizeof(post) - 1, false);
    memcpy(head + hl, pre, sizeof(pre) - 1);
    return srv_conn_share(z->c, blk, head, hl + sizeof(pre) - 1, post, sizeof(post) - 1) == 0;
}

/* scratch_reserve makes scratch s (of *cap bytes) at least n bytes. */
static uint8_t *
scratch_reserve(uint8_t **s, size_t *cap, size_t n)
{
    if (*cap < n) {
        size_t c = *cap ? *cap : 4096;
        while (c < n)
            c *= 2;
        uint8_t *p = realloc(*s, c);
        if (p == NULL)
            return NULL;
        *s = p;
        *cap = c;
    }
    return *s;
}

/* conv_reserve makes the conversion scratch (messages from peers) at least n bytes. */
static uint8_t *
conv_reserve(struct zbridge *zb, size_t n)
{
    return scratch_reserve(&zb->conv, &zb->conv_cap, n);
}

/* ---- native bodies, read in place ----
 *
 * The bodies the backend relays (a job's spec, an agent's result) and those to_native makes
 * were checked on their way in: by ing_msg_decode (native peers) or by zmq_msg_decode
 * before to_native encoded them. nat_read reads them again without validating their UTF-8
 * and msgpack a second time (the translation's main cost); every length is still checked
 * against the body, and the bytes are only copied, never interpreted further. */
struct ncur {
    const uint8_t *p, *end;
    bool ok;
};

static uint32_t
nc_u32(struct ncur *c)
{
    if (!c->ok || c->end - c->p < 4) {
        c->ok = false;
        return 0;
    }
    uint32_t v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 |
                 c->p[3];
    c->p += 4;
    return v;
}

static uint64_t
nc_u64(struct ncur *c)
{
    uint64_t hi = nc_u32(c);
    return hi << 32 | nc_u32(c);
}

/* nc_field reads a length-prefixed field; nil (length 0xFFFFFFFF) where nullable. */
static void
nc_field(struct ncur *c, struct ing_view *v, bool nullable)
{
    uint32_t n = nc_u32(c);
    v->p = NULL;
    v->len = 0;
    if (!c->ok || (nullable && n == UINT32_MAX))
        return;
    if ((size_t)(c->end - c->p) < n) {
        c->ok = false;
        return;
    }
    v->p = (const char *)c->p;
    v->len = n;
    c->p += n;
}

static void
nc_spec(struct ncur *c, struct ing_job_spec *j)
{
    nc_field(c, &j->job_id, false);
    nc_field(c, &j->course_id, true);
    nc_field(c, &j->task_id, true);
    nc_field(c, &j->environment_type, false);
    nc_field(c, &j->environment, false);
    if (!c->ok || c->p == c->end || *c->p > ING_DEBUG_SSH) {
        c->ok = false;
        return;
    }
    j->debug = *c->p++;
    nc_field(c, &j->task_problems, false);
    nc_field(c, &j->inputdata, false);
    nc_field(c, &j->environment_parameters, false);
}

/* nat_read reads the native body[0..len) of a ClientNewJob, BackendNewJob, AgentJobDone or
 * BackendJobDone into *m (views into body). Returns false for another type or a body whose
 * lengths do not add up (the caller then decodes it the checked way). */
static bool
nat_read(uint8_t type, const uint8_t *body, size_t len, struct ing_msg *m)
{
    struct ncur c = {body, body + len, true};
    /* No memset (a rep stos at this size): each case sets every member of its struct. */
    m->type = type;
    switch (type) {
    case ING_CLIENT_NEW_JOB:
        m->u.new_job.priority = (int64_t)nc_u64(&c);
        nc_field(&c, &m->u.new_job.launcher, false);
        nc_spec(&c, &m->u.new_job.job);
        break;
    case ING_BACKEND_NEW_JOB:
        nc_spec(&c, &m->u.job);
        break;
    case ING_AGENT_JOB_DONE:
    case ING_BACKEND_JOB_DONE: {
        struct ing_job_result *r = &m->u.result;
        nc_field(&c, &r->job_id, false);
        nc_field(&c, &r->result_kind, false);
        nc_field(&c, &r->result_text, false);
        uint64_t g = nc_u64(&c);
        memcpy(&r->grade, &g, sizeof(r->grade));
        nc_field(&c, &r->problems, false);
        nc_field(&c, &r->tests, false);
        nc_field(&c, &r->custom, false);
        nc_field(&c, &r->state, false);
        nc_field(&c, &r->archive, true);
        nc_field(&c, &r->stdout_, true);
        nc_field(&c, &r->stderr_, true);
        break;
    }
    default:
        return false;
    }
    return c.ok && c.p == c.end;
}

/* The msgpack message of a native body of len bytes most likely fits in this much: each
 * field's key (with "@type" and the class name: under 64 bytes each) and a header no longer
 * than the native length prefix. zconn_encode tries it in place first. */
#define ZB_MP_BOUND(len) ((len) + 16 * 64)

struct zb_seg {
    const uint8_t *p;
    size_t n;
};

/* zb_pass writes to z the relay of the message being handled (zb->pass_*) from that
 * message's own bytes, when body[0..len) is the native body relayed for it: a
 * BackendJobDone is the AgentJobDone with another "@type"; a BackendNewJob is the
 * ClientNewJob without its priority and launcher pairs, with another "@type" (the
 * environment keeps the name the client gave: an SSH twin's suffix is in the native body
 * only). Returns true when written (or z was dropped), false when the caller must encode:
 * another body, a v0.5 - v0.6.2 peer, or a course field named otherwise than --job-field. */
static bool
zb_pass(struct zconn *z, uint8_t type, const uint8_t *body, size_t len)
{
    static const uint8_t done_tail[] = "\xa5@type\xae" "BackendJobDone";
    static const uint8_t new_tail[] = "\xa5@type\xad" "BackendNewJob";
    struct zbridge *zb = z->zb;
    const uint8_t *mp = zb->pass_mp;
    const uint32_t *key = zb->pass_lay.key;
    struct zb_seg seg[4];
    int ns = 0;
    if (mp == NULL || z->legacy || len != zb->pass_nat_len ||
        (body != zb->pass_nat && memcmp(body, zb->pass_nat, len) != 0))
        return false;
    if (type == ING_BACKEND_JOB_DONE && zb->pass_type == ING_AGENT_JOB_DONE) {
        /* job_id ... stderr: 10 fields, the map header's count the same */
        seg[ns++] = (struct zb_seg){mp, key[10]};
        seg[ns++] = (struct zb_seg){done_tail, sizeof(done_tail) - 1};
    } else if (type == ING_BACKEND_NEW_JOB && zb->pass_type == ING_CLIENT_NEW_JOB &&
               mp[key[2]] == (zb->job_field ? 0xa0 | 10 : 0xa0 | 9)) {
        /* job_id, [priority], course ... debug, [launcher]: 9 fields and "@type" */
        static const uint8_t hdr = 0x80 | 10;
        seg[ns++] = (struct zb_seg){&hdr, 1};
        seg[ns++] = (struct zb_seg){mp + key[0], key[1] - key[0]};
        seg[ns++] = (struct zb_seg){mp + key[2], key[10] - key[2]};
        seg[ns++] = (struct zb_seg){new_tail, sizeof(new_tail) - 1};
    } else {
        return false;
    }
    size_t n = 0;
    for (int i = 0; i < ns; i++)
        n += seg[i].n;
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, n, false);
    uint8_t *dst = srv_conn_reserve(z->c, hl + n);
    if (dst == NULL)
        return true; /* z's connection was dropped: nothing to send */
    memcpy(dst, hdr, hl);
    uint8_t *o = dst + hl;
    for (int i = 0; i < ns; i++) {
        memcpy(o, seg[i].p, seg[i].n);
        o += seg[i].n;
    }
    srv_conn_produce(z->c, hl + n);
    return true;
}

void
zb_relay(struct zconn *z, uint8_t type, const uint8_t *body, size_t len)
{
    if (zb_pass(z, type, body, len))
        return;
    if (body == NULL && type == ING_BACKEND_JOB_DONE &&
        zb_lazy_body(z->zb, type, &body, &len) != 0) {
        log_msg(LOG_ERR, "%s: cannot convert %s", srv_conn_name(z->c), ing_msg_type_name(type));
        return;
    }
    /* A native body: read it (views) and encode it in the dialect. */
    struct ing_msg m;
    if (!nat_read(type, body, len, &m)) {
        /* The other types, decoded the checked way in their own scratch: body may be a
         * peer's message still in conv (an agent's result being relayed while it is
         * handled). */
        uint8_t *p = scratch_reserve(&z->zb->rel, &z->zb->rel_cap, ING_HDR_LEN + len);
        if (p == NULL) {
            log_msg(LOG_ERR, "%s: out of memory converting %s", srv_conn_name(z->c),
                    ing_msg_type_name(type));
            return;
        }
        ing_frame_header(p, type, (uint32_t)len);
        if (len > 0) /* an empty body may come as NULL: no memcpy from NULL */
            memcpy(p + ING_HDR_LEN, body, len);
        if (ing_msg_decode(p, ING_HDR_LEN + len, UINT32_MAX, &m) <= 0) {
            log_msg(LOG_ERR, "%s: cannot convert %s", srv_conn_name(z->c),
                    ing_msg_type_name(type));
            return;
        }
    }
    /* An agent's integer grade is relayed as an integer, as Python relays it: the result
     * being handled (zconn_message) is the one relayed here. */
    struct zbridge *zb = z->zb;
    unsigned opts = 0;
    struct ing_view *env = &m.u.job.environment;
    if (type == ING_BACKEND_NEW_JOB && env->len > ZB_SSH_SUFFIX_LEN &&
        memcmp(env->p + env->len - ZB_SSH_SUFFIX_LEN, ZB_SSH_SUFFIX, ZB_SSH_SUFFIX_LEN) == 0)
        env->len -= ZB_SSH_SUFFIX_LEN; /* an SSH job's twin environment (ssh_job) */
    if (type == ING_BACKEND_JOB_DONE && zb->int_grade &&
        m.u.result.job_id.len == zb->int_grade_job.len &&
        memcmp(m.u.result.job_id.p, zb->int_grade_job.p, m.u.result.job_id.len) == 0)
        opts |= ZMQ_ENC_GRADE_INT;
    zconn_encode(z, &m, opts, ZB_MP_BOUND(len));
}

/* nw_field writes the length-prefixed field v at o (nil: the length 0xFFFFFFFF). */
static inline uint8_t *
nw_field(uint8_t *o, const struct ing_view *v)
{
    if (v->p == NULL) {
        put_u32be(o, UINT32_MAX);
        return o + 4;
    }
    put_u32be(o, v->len);
    memcpy(o + 4, v->p, v->len);
    return o + 4 + v->len;
}

/* nat_new_job writes the native body of the ClientNewJob m into the conversion scratch: the
 * mirror of nat_read, sized first and written without the codec's per-field checks (the
 * same bytes as ing_msg_encode). Returns 0, or -1 for a message the codec must judge (a nil
 * where a value is required, an empty map value, a bad debug) or no memory. */
static int
nat_new_job(struct zbridge *zb, const struct ing_msg *m, const uint8_t **body, size_t *len)
{
    const struct ing_client_new_job *nj = &m->u.new_job;
    const struct ing_job_spec *j = &nj->job;
    const struct ing_view *req[] = {&nj->launcher,         &j->job_id,    &j->environment_type,
                                    &j->environment,       &j->task_problems, &j->inputdata,
                                    &j->environment_parameters};
    size_t n = 8 + 9 * 4 + 1 + (j->course_id.p != NULL ? j->course_id.len : 0) +
               (j->task_id.p != NULL ? j->task_id.len : 0);
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++) {
        if (req[i]->p == NULL || req[i]->len == UINT32_MAX || (i >= 4 && req[i]->len == 0))
            return -1;
        n += req[i]->len;
    }
    if (j->course_id.len == UINT32_MAX || j->task_id.len == UINT32_MAX || j->debug > ING_DEBUG_SSH)
        return -1;
    uint8_t *p = n <= UINT32_MAX ? conv_reserve(zb, n) : NULL, *o = p;
    if (p == NULL)
        return -1;
    put_u64be(o, (uint64_t)nj->priority);
    o = nw_field(o + 8, &nj->launcher);
    o = nw_field(o, &j->job_id);
    o = nw_field(o, &j->course_id);
    o = nw_field(o, &j->task_id);
    o = nw_field(o, &j->environment_type);
    o = nw_field(o, &j->environment);
    *o++ = j->debug;
    o = nw_field(o, &j->task_problems);
    o = nw_field(o, &j->inputdata);
    o = nw_field(o, &j->environment_parameters);
    *body = p;
    *len = (size_t)(o - p);
    return 0;
}

/* to_native re-encodes a decoded dialect message (of mn msgpack bytes) in the native
 * format, so the backend can store and relay its body; *out views point into the bridge's
 * scratch. out NULL: no read back (the caller hands m's own views to the backend, which
 * only reads them: the same values as the body's). */
static int
to_native(struct zbridge *zb, const struct ing_msg *m, size_t mn, struct ing_msg *out,
          const uint8_t **body, size_t *len)
{
    /* The native frame is no larger than the message plus a 4-byte prefix per field and the
     * header, unless a value was widened (an integer grade, a nil made a str): then sized. */
    if (m->type == ING_CLIENT_NEW_JOB && out == NULL && nat_new_job(zb, m, body, len) == 0)
        return 0;
    size_t cap = ING_HDR_LEN + mn + 16 * 8;
    uint8_t *p = conv_reserve(zb, cap);
    ssize_t n = p != NULL ? ing_msg_encode(m, p, cap) : -ENOMEM;
    if (n == -ENOMEM) {
        cap = ing_msg_size(m);
        p = cap > 0 ? conv_reserve(zb, cap) : NULL;
        n = p != NULL ? ing_msg_encode(m, p, cap) : -ENOMEM;
    }
    if (n < ING_HDR_LEN)
        return -EPROTO;
    *body = p + ING_HDR_LEN;
    *len = (size_t)n - ING_HDR_LEN;
    if (out == NULL)
        return 0;
    if (!nat_read(m->type, *body, *len, out) &&
        ing_msg_decode(p, (size_t)n, UINT32_MAX, out) != n)
        return -EPROTO;
    return 0;
}

int
zb_lazy_body(struct zbridge *zb, uint8_t type, const uint8_t **body, size_t *len)
{
    if (zb->lazy_m == NULL || type != ING_BACKEND_JOB_DONE)
        return -ENOENT;
    int rc = to_native(zb, zb->lazy_m, zb->lazy_mn, NULL, body, len);
    if (rc == 0) { /* built once: a later relay of it finds it (and zb_pass its pointer) */
        zb->lazy_m = NULL;
        zb->pass_nat = *body;
        zb->pass_nat_len = *len;
    }
    return rc;
}

/* zconn_identity_owner is the live connection of z's endpoint using routing identity id,
 * or NULL. */
static struct zconn *
zconn_identity_owner(const struct zconn *z, const uint8_t *id, size_t len)
{
    for (struct zconn *o = z->zb->zconns; o != NULL; o = o->next)
        if (o != z && o->role == z->role && srv_conn_live(o->c) && o->ready && o->id_len == len &&
            memcmp(o->identity, id, len) == 0)
            return o;
    return NULL;
}

/* ---- SSH routing of v0.8.0 - v0.8.5 ----
 *
 * Those backends queue a job by (type, environment, environment_parameters["ssh_allowed"])
 * and send a job that asks for SSH only to an agent whose hello said ssh_allowed. The bridge
 * does the same with a hidden twin of each environment: a ZeroMQ client's job asking for SSH
 * is queued for the environment NAME + ZB_SSH_SUFFIX, which only the ssh_allowed agents of
 * those releases announce (with "advertised": false, so that no client lists it); the
 * suffix is taken off again in the BackendNewJob the agent receives. */
/* Python's truthiness of the msgpack value v[0..n). */
static bool
mp_truthy(const uint8_t *v, size_t n)
{
    struct ing_mp_obj o;
    if (ing_mp_read(&v, v + n, &o) < 0)
        return false;
    switch (o.type) {
    case ING_MP_NIL:
        return false;
    case ING_MP_BOOL:
        return o.v.b;
    case ING_MP_INT:
        return o.v.i != 0;
    case ING_MP_UINT:
        return true;
    case ING_MP_FLOAT:
        return o.v.f != 0.0;
    case ING_MP_STR:
    case ING_MP_BIN:
    case ING_MP_EXT:
        return o.v.s.len > 0;
    case ING_MP_ARRAY:
    case ING_MP_MAP:
        return o.v.n > 0;
    }
    return false;
}

/* ssh_job: a ClientNewJob asking for SSH goes to the environment's twin. */
static void
ssh_job(struct zbridge *zb, struct ing_msg *m)
{
    struct ing_job_spec *j = &m->u.new_job.job;
    const uint8_t *v;
    size_t vl;
    if (ing_mp_map_get((const uint8_t *)j->environment_parameters.p, j->environment_parameters.len,
                       "ssh_allowed", 11, &v, &vl) != 0 ||
        !mp_truthy(v, vl) || j->environment.len + ZB_SSH_SUFFIX_LEN > sizeof(zb->ssh_env))
        return;
    memcpy(zb->ssh_env, j->environment.p, j->environment.len);
    memcpy(zb->ssh_env + j->environment.len, ZB_SSH_SUFFIX, ZB_SSH_SUFFIX_LEN);
    j->environment.p = (const char *)zb->ssh_env;
    j->environment.len += ZB_SSH_SUFFIX_LEN;
}

/* ssh_hello: the hello of an ssh_allowed agent (v0.8.0 - v0.8.5) also announces the hidden
 * twin of each of its environments. Returns 0, or -ENOMEM (the hello is then taken as is). */
static int
ssh_hello(struct zbridge *zb, struct ing_msg *m)
{
    const uint8_t *p = (const uint8_t *)m->u.agent_hello.environments.p;
    const uint8_t *end = p + m->u.agent_hello.environments.len, *q = p;
    struct ing_mp_writer *w = &zb->hello;
    struct ing_mp_obj o, names;
    w->len = 0;
    w->err = 0;
    if (ing_mp_read(&q, end, &o) < 0 || o.type != ING_MP_MAP)
        return 0; /* refused by the backend */
    ing_mp_put_map(w, o.v.n);
    for (uint32_t i = 0; i < o.v.n; i++) {
        const uint8_t *k = q;
        if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
            return 0;
        ing_mp_put_raw(w, k, (size_t)(q - k));
        const uint8_t *nv = q;
        if (ing_mp_read(&q, end, &names) < 0 || names.type != ING_MP_MAP) {
            q = nv;
            if (ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
                return 0;
            ing_mp_put_raw(w, nv, (size_t)(q - nv)); /* refused by the backend */
            continue;
        }
        const uint8_t *first = q;
        uint32_t twins = 0;
        for (uint32_t x = 0; x < names.v.n; x++) {
            struct ing_mp_obj nm;
            const uint8_t *nk = q;
            if (ing_mp_read(&nk, end, &nm) < 0 || ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0 ||
                ing_mp_skip(&q, end, ING_MP_MAX_DEPTH) < 0)
                return 0;
            twins += nm.type == ING_MP_STR && nm.v.s.len + ZB_SSH_SUFFIX_LEN <= ZB_NAME_MAX;
        }
        ing_mp_put_map(w, names.v.n + twins);
        ing_mp_put_raw(w, first, (size_t)(q - first));
        const uint8_t *r = first;
        for (uint32_t x = 0; x < names.v.n; x++) {
            struct ing_mp_obj nm, info;
            if (ing_mp_read(&r, end, &nm) < 0)
                return 0;
            const uint8_t *iv = r;
            if (ing_mp_skip(&r, end, ING_MP_MAX_DEPTH) < 0)
                return 0;
            if (nm.type != ING_MP_STR || nm.v.s.len + ZB_SSH_SUFFIX_LEN > ZB_NAME_MAX)
                continue;
            ing_mp_put_str_header(w, nm.v.s.len + ZB_SSH_SUFFIX_LEN);
            ing_mp_put_raw(w, nm.v.s.p, nm.v.s.len);
            ing_mp_put_raw(w, ZB_SSH_SUFFIX, ZB_SSH_SUFFIX_LEN);
            const uint8_t *ib = iv;
            if (ing_mp_read(&ib, r, &info) < 0 || info.type != ING_MP_MAP) {
                ing_mp_put_raw(w, iv, (size_t)(r - iv)); /* refused by the backend */
                continue;
            }
            /* "advertised": false first: the first occurrence of a key is the one read. */
            ing_mp_put_map(w, info.v.n + 1);
            ing_mp_put_cstr(w, "advertised");
            ing_mp_put_bool(w, false);
            ing_mp_put_raw(w, ib, (size_t)(r - ib));
        }
    }
    if (w->err != 0)
        return w->err;
    m->u.agent_hello.environments.p = (const char *)w->buf;
    m->u.agent_hello.environments.len = (uint32_t)w->len;
    return 0;
}

static void
zconn_message(struct zconn *z, const struct zmtp_event *ev)
{
    struct zbridge *zb = z->zb;
    struct conn *c = z->c;
    const struct zmtp_span *f = &ev->u.msg.frame[0];
    struct ing_msg m, nm;
    const char *why = NULL;
    if (ev->u.msg.nframes > 1)
        log_msg(LOG_DEBUG, "%s: %u-frame message: reading the first frame only", srv_conn_name(c),
                ev->u.msg.nframes);
    /* m is set by every path below that reads it (each decodes, or returns first). */
    /* A v0.5 - v0.6.2 message is read as its main-dialect equivalent; the peer is then
     * answered in its own dialect. Such a message has no "@type", so that the main
     * dialect's decoder refuses it: a peer not yet known to speak v0.5 - v0.6.2 is tried
     * in the main dialect first (no look for "type" in every message), a legacy one in its
     * own. */
    const uint8_t *mp = f->p;
    size_t mn = f->len;
    unsigned how = 0;
    int rc = z->legacy ? -EPROTO : zmq_msg_decode_ex(mp, mn, &m, &why, &how, &zb->pass_lay);
    if (rc == -EPROTO) {
        const char *lwhy = NULL;
        int lrc = zmq_msg_legacy_to_main(mp, mn, &zb->legacy, &lwhy);
        if (lrc == 0) {
            if (!z->legacy)
                log_msg(LOG_INFO, "%s: speaks INGInious v0.5 - v0.6.2", srv_conn_name(c));
            z->legacy = true;
            mp = zb->legacy.buf;
            mn = zb->legacy.len;
            rc = zmq_msg_decode_ex(mp, mn, &m, &why, &how, NULL);
        } else if (lrc != -ENOENT) {
            log_msg(LOG_WARN, "%s: undecodable message dropped (%s)", srv_conn_name(c),
                    lwhy != NULL ? lwhy : strerror(-lrc));
            return;
        } else if (z->legacy) {
            rc = zmq_msg_decode_ex(mp, mn, &m, &why, &how, NULL); /* a main-dialect message */
        }
    }
    struct be_client *client = srv_conn_client(c);
    if (rc < 0 && z->role == ING_ROLE_CLIENT && !be_client_registered(client) &&
        (m.type == ING_CLIENT_NEW_JOB || m.type == ING_CLIENT_KILL_JOB ||
         m.type == ING_CLIENT_GET_QUEUE)) {
        /* The registration gate comes first, as in INGInious, whatever the values. */
        struct ing_msg unknown = {.type = ING_UNKNOWN};
        zb_send(z, &unknown);
        return;
    }
    if (rc == -EINVAL && z->role == ING_ROLE_CLIENT && m.type == ING_CLIENT_NEW_JOB &&
        be_client_registered(client)) {
        be_client_refuse(zb->be, client, m.u.new_job.job.job_id, why);
        return;
    }
    if (rc == -EINVAL && m.type == ING_AGENT_JOB_DONE && z->role == ING_ROLE_AGENT) {
        /* A result that cannot stand for its job: the job ends (crash), never hangs. */
        log_msg(LOG_WARN, "%s: unusable AgentJobDone (%s)", srv_conn_name(c), why);
        be_agent_job_unusable(zb->be, srv_conn_agent(c), m.u.result.job_id, why);
        return;
    }
    if (rc != 0) {
        log_msg(LOG_WARN, "%s: undecodable message dropped (%s)", srv_conn_name(c),
                why != NULL ? why : strerror(-rc));
        return;
    }
    if (why != NULL) /* a value coerced to its documented type */
        log_msg(LOG_DEBUG, "%s: %s: %s", srv_conn_name(c), ing_msg_type_name(m.type), why);
    const uint8_t *body = NULL;
    size_t len = 0;
    const struct ing_msg *use = &m;
    if (m.type == ING_CLIENT_NEW_JOB)
        ssh_job(zb, &m);
    struct zmq_agent_shape shape = {ZMQ_AGENT_MAIN, false};
    if (m.type == ING_AGENT_HELLO) {
        zmq_msg_agent_shape(mp, mn, &shape);
        if (shape.ssh_allowed && ssh_hello(zb, &m) != 0)
            log_msg(LOG_ERR, "%s: out of memory: SSH jobs will not be routed to this agent",
                    srv_conn_name(c));
    }
    bool lazy = m.type == ING_AGENT_JOB_DONE && (how & ZMQ_DEC_FAST) && !z->legacy;
    if (lazy) {
        /* Its native body only if a peer needs it (zb_lazy_body): a ZeroMQ client gets
         * its BackendJobDone from mp (zb_pass). */
        zb->lazy_m = &m;
        zb->lazy_mn = mn;
    } else if (m.type == ING_CLIENT_NEW_JOB || m.type == ING_AGENT_JOB_DONE ||
               m.type == ING_AGENT_JOB_SSH_DEBUG) {
        /* A job or a result: the backend reads m's views (into mp) and stores the native
         * body; an SSH debug report is read back from its body. */
        bool own = m.type != ING_AGENT_JOB_SSH_DEBUG;
        if (to_native(zb, &m, mn, own ? NULL : &nm, &body, &len) != 0) {
            log_msg(LOG_WARN, "%s: %s cannot be converted: dropped", srv_conn_name(c),
                    ing_msg_type_name(m.type));
            if (m.type == ING_AGENT_JOB_DONE && z->role == ING_ROLE_AGENT)
                be_agent_job_unusable(zb->be, srv_conn_agent(c), m.u.result.job_id,
                                      "it cannot be converted");
            return;
        }
        use = own ? &m : &nm;
    }
    if (m.type == ING_AGENT_HELLO) {
        z->release = (uint8_t)shape.release;
        z->ssh_allowed = shape.ssh_allowed;
        log_msg(LOG_DEBUG, "%s: AgentHello of %s; its kills %s state", srv_conn_name(c),
                z->legacy                        ? "v0.5 - v0.6.2"
                : shape.release == ZMQ_AGENT_V07 ? "v0.7.x"
                : shape.release == ZMQ_AGENT_V08 ? "v0.8.0-v0.8.5 (SSH routing)"
                                                 : "v0.8.6 or later",
                z->legacy || kill_without_state(z) ? "without" : "with");
    }
    if (m.type == ING_AGENT_JOB_DONE && (how & ZMQ_DEC_GRADE_INT)) {
        zb->int_grade = true;
        zb->int_grade_job = m.u.result.job_id;
    }
    if ((how & ZMQ_DEC_FAST) && !z->legacy &&
        (m.type == ING_AGENT_JOB_DONE ||
         (m.type == ING_CLIENT_NEW_JOB && 12 + (size_t)m.u.new_job.launcher.len <= len))) {
        /* Its relay is written from mp (zb_pass): the native body relayed for it is the
         * whole body of an AgentJobDone, the job spec (after the priority and the
         * launcher) of a ClientNewJob. */
        size_t off = m.type == ING_CLIENT_NEW_JOB ? 12 + (size_t)m.u.new_job.launcher.len : 0;
        zb->pass_mp = mp;
        zb->pass_type = m.type;
        zb->pass_nat = body != NULL ? body + off : NULL; /* NULL: lazy */
        zb->pass_nat_len = len - off;
    }
    srv_conn_dispatch(c, use, body, len);
    zb->int_grade = false;
    zb->pass_mp = NULL;
    zb->lazy_m = NULL;
}

struct zconn *
zb_open(struct zbridge *zb, struct conn *c, uint8_t role, bool auth_required)
{
    if (auth_required) {
        log_msg(LOG_WARN, "%s: ZeroMQ peer refused: this endpoint requires authentication",
                srv_conn_name(c));
        srv_conn_close(c, "ZeroMQ peers cannot authenticate");
        return NULL;
    }
    struct zconn *z = calloc(1, sizeof(*z));
    if (z == NULL) {
        srv_conn_close(c, "out of memory");
        return NULL;
    }
    z->zb = zb;
    z->c = c;
    z->role = role;
    z->next = zb->zconns;
    if (z->next != NULL)
        z->next->prev = z;
    zb->zconns = z;
    zmtp_init(&z->zmtp, (uint64_t)zb->max_frame + 64);
    uint8_t g[ZMTP_GREETING_LEN];
    zmtp_greeting(g); /* at once: libzmq waits for ours after 10 bytes of its own */
    zconn_raw(z, g, sizeof(g));
    srv_conn_name_append(c, " zmq");
    return z;
}

void
zb_close(struct zconn *z)
{
    if (z == NULL)
        return;
    if (z->prev != NULL)
        z->prev->next = z->next;
    else
        z->zb->zconns = z->next;
    if (z->next != NULL)
        z->next->prev = z->prev;
    free(z);
}

static void
zconn_ready(struct zconn *z, const struct zmtp_event *ev)
{
    struct zbridge *zb = z->zb;
    const struct zmtp_span *id = &ev->u.ready.identity;
    if (id->len > 0) {
        struct zconn *old = zconn_identity_owner(z, id->p, id->len);
        if (old != NULL) {
            /* As libzmq's ROUTER_HANDOVER: the new connection takes the identity over (a
             * DEALER that reconnects before its old connection is seen closed). */
            log_msg(LOG_WARN, "%s: identity in use: %s taken over, closing it", srv_conn_name(z->c),
                    srv_conn_name(old->c));
            srv_conn_close(old->c, "identity taken over by a new connection");
        }
        memcpy(z->identity, id->p, id->len);
        z->id_len = (uint8_t)id->len;
    } else {
        zmtp_make_routing_id(&zb->ids[z->role == ING_ROLE_AGENT ? 0 : 1], z->identity);
        z->id_len = ZMTP_ROUTING_ID_LEN;
    }
    z->ready = true;
    if (srv_conn_opened(z->c) != 0)
        return;
    log_msg(LOG_DEBUG, "%s: ZeroMQ peer ready (identity of %u bytes)", srv_conn_name(z->c),
            z->id_len);
}

void
zb_input(struct zconn *z, struct buf *in)
{
    struct conn *c = z->c;
    unsigned frames = 0;
    while (srv_conn_reading(c) && buf_len(in) > 0) {
        if (srv_conn_spent(c, &frames))
            return;
        struct zmtp_event ev;
        ssize_t r = zmtp_input(&z->zmtp, buf_head(in), buf_len(in), &ev);
        if (r < 0) {
            log_msg(LOG_WARN, "%s: ZMTP error: %s", srv_conn_name(c),
                    ev.why != NULL ? ev.why : "?");
            if (zmtp_error_allowed(&z->zmtp)) {
                uint8_t e[300];
                ssize_t n = zmtp_error(e, sizeof(e), ev.why != NULL ? ev.why : "error");
                if (n > 0)
                    zconn_raw(z, e, (size_t)n);
            }
            srv_conn_close_after_flush(c, "ZMTP error");
            return;
        }
        uint8_t tmp[64];
        ssize_t n;
        switch (ev.type) {
        case ZMTP_EV_NEED_MORE:
            /* Nothing reserved on a frame's announced size: the server grows the input as
             * bytes arrive, within --max-memory, and times out a frame that does not
             * complete (--frame-timeout), as for native frames. */
            buf_consume(in, (size_t)r);
            return;
        case ZMTP_EV_GREETING: {
            uint8_t ready[128];
            n = zmtp_ready(ready, sizeof(ready), "ROUTER");
            if (n > 0)
                zconn_raw(z, ready, (size_t)n);
            break;
        }
        case ZMTP_EV_READY:
            zconn_ready(z, &ev);
            break;
        case ZMTP_EV_MESSAGE:
            if (z->ready)
                zconn_message(z, &ev);
            break;
        case ZMTP_EV_PING:
            n = zmtp_pong(tmp, sizeof(tmp), ev.u.ping.context.p, ev.u.ping.context.len);
            if (n > 0)
                zconn_raw(z, tmp, (size_t)n);
            break;
        case ZMTP_EV_PONG:
            break;
        case ZMTP_EV_PEER_ERROR:
            log_msg(LOG_INFO, "%s: peer sent ERROR: %.*s", srv_conn_name(c),
                    (int)ev.u.error.reason.len, (const char *)ev.u.error.reason.p);
            srv_conn_close(c, "peer error");
            return;
        }
        buf_consume(in, (size_t)r);
    }
}
