/* SPDX-License-Identifier: MIT */
/* fuzz_proto.c: libFuzzer target for the native codec (src/proto.c, proto.md §2-§5).
 *
 * The input is read as a stream of frames, decoded with several max_body values. Every
 * result is checked against what the header alone says (ing_msg_decode's contract in
 * proto.h); every decoded message is encoded again, which must give back exactly the bytes
 * of the frame (the wire format has one encoding per message), and that is decoded again
 * and compared field by field. Truncated frames, a max_body one byte too small, a buffer one
 * byte too short and a few unencodable variants are checked on the way. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/mp.h"
#include "inginious/proto.h"

#include "fuzz.h"


static uint32_t
be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool
type_known(uint8_t type)
{
    return strcmp(ing_msg_type_name(type), "?") != 0;
}

static bool
view_same(struct ing_view a, struct ing_view b)
{
    if (a.p == NULL || b.p == NULL)
        return a.p == NULL && b.p == NULL;
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* The decoder's promises about a field's contents. */
static void
check_str(struct ing_view v, bool nullable)
{
    if (v.p == NULL) {
        CHECK(nullable);
        return;
    }
    CHECK(ing_mp_utf8_valid((const uint8_t *)v.p, v.len));
}

static void
check_mp(struct ing_view v)
{
    CHECK(v.p != NULL && v.len > 0);
    CHECK(ing_mp_validate((const uint8_t *)v.p, v.len, ING_MP_MAX_DEPTH) == 0);
}

static bool
spec_same(const struct ing_job_spec *a, const struct ing_job_spec *b)
{
    return view_same(a->job_id, b->job_id) && view_same(a->course_id, b->course_id) &&
           view_same(a->task_id, b->task_id) &&
           view_same(a->environment_type, b->environment_type) &&
           view_same(a->environment, b->environment) && a->debug == b->debug &&
           view_same(a->task_problems, b->task_problems) && view_same(a->inputdata, b->inputdata) &&
           view_same(a->environment_parameters, b->environment_parameters);
}

static void
check_spec(const struct ing_job_spec *j)
{
    check_str(j->job_id, false);
    check_str(j->course_id, true);
    check_str(j->task_id, true);
    check_str(j->environment_type, false);
    check_str(j->environment, false);
    CHECK(j->debug <= ING_DEBUG_SSH);
    check_mp(j->task_problems);
    check_mp(j->inputdata);
    check_mp(j->environment_parameters);
}

static bool
result_same(const struct ing_job_result *a, const struct ing_job_result *b)
{
    return view_same(a->job_id, b->job_id) && view_same(a->result_kind, b->result_kind) &&
           view_same(a->result_text, b->result_text) &&
           memcmp(&a->grade, &b->grade, sizeof(a->grade)) == 0 &&
           view_same(a->problems, b->problems) && view_same(a->tests, b->tests) &&
           view_same(a->custom, b->custom) && view_same(a->state, b->state) &&
           view_same(a->archive, b->archive) && view_same(a->stdout_, b->stdout_) &&
           view_same(a->stderr_, b->stderr_);
}

static void
check_result(const struct ing_job_result *r)
{
    check_str(r->job_id, false);
    check_str(r->result_kind, false);
    check_str(r->result_text, false);
    check_mp(r->problems);
    check_mp(r->tests);
    check_mp(r->custom);
    check_str(r->state, false);
    check_str(r->stdout_, true);
    check_str(r->stderr_, true);
}

static bool
ssh_same(const struct ing_ssh_debug *a, const struct ing_ssh_debug *b)
{
    return view_same(a->job_id, b->job_id) && view_same(a->host, b->host) && a->port == b->port &&
           view_same(a->user, b->user) && view_same(a->password, b->password);
}

/* Queue entries, read back from the wire with the iterators into arrays (for encoding). */
struct queue_copy {
    struct ing_queue_running *run;
    struct ing_queue_waiting *wait;
};

static void
queue_copy(struct ing_get_queue *q, const uint8_t *frame_end, struct queue_copy *qc)
{
    qc->run = calloc(q->n_running ? q->n_running : 1, sizeof(*qc->run));
    qc->wait = calloc(q->n_waiting ? q->n_waiting : 1, sizeof(*qc->wait));
    CHECK(qc->run != NULL && qc->wait != NULL);
    const uint8_t *pos = q->wire_running;
    for (uint32_t i = 0; i < q->n_running; i++) {
        pos = ing_queue_next_running(pos, &qc->run[i]);
        CHECK(pos <= frame_end);
        check_str(qc->run[i].job_id, false);
        check_str(qc->run[i].agent_name, false);
        check_str(qc->run[i].info, false);
        check_str(qc->run[i].launcher, false);
    }
    CHECK(pos + 4 == q->wire_waiting); /* then n_waiting */
    pos = q->wire_waiting;
    for (uint32_t i = 0; i < q->n_waiting; i++) {
        pos = ing_queue_next_waiting(pos, &qc->wait[i]);
        CHECK(pos <= frame_end);
        check_str(qc->wait[i].job_id, false);
        check_str(qc->wait[i].info, false);
        check_str(qc->wait[i].launcher, false);
    }
    CHECK(pos == frame_end);
    q->running = qc->run;
    q->waiting = qc->wait;
}

static bool
queue_same(const struct ing_get_queue *a, const struct ing_get_queue *b)
{
    if (a->n_running != b->n_running || a->n_waiting != b->n_waiting)
        return false;
    const uint8_t *pa = a->wire_running, *pb = b->wire_running;
    for (uint32_t i = 0; i < a->n_running; i++) {
        struct ing_queue_running x, y;
        pa = ing_queue_next_running(pa, &x);
        pb = ing_queue_next_running(pb, &y);
        if (!view_same(x.job_id, y.job_id) || x.is_current != y.is_current ||
            !view_same(x.agent_name, y.agent_name) || !view_same(x.info, y.info) ||
            !view_same(x.launcher, y.launcher) || x.started_at != y.started_at ||
            x.max_time != y.max_time)
            return false;
    }
    pa = a->wire_waiting;
    pb = b->wire_waiting;
    for (uint32_t i = 0; i < a->n_waiting; i++) {
        struct ing_queue_waiting x, y;
        pa = ing_queue_next_waiting(pa, &x);
        pb = ing_queue_next_waiting(pb, &y);
        if (!view_same(x.job_id, y.job_id) || x.is_current != y.is_current ||
            !view_same(x.info, y.info) || !view_same(x.launcher, y.launcher) ||
            x.max_time != y.max_time)
            return false;
    }
    return true;
}

/* check_fields checks the decoder's promises on the fields of m. */
static void
check_fields(const struct ing_msg *m)
{
    switch (m->type) {
    case ING_ERROR:
        check_str(m->u.error.text, false);
        break;
    case ING_WELCOME:
        check_str(m->u.welcome.server, false);
        break;
    case ING_CLIENT_HELLO:
        check_str(m->u.client_hello.name, false);
        break;
    case ING_CLIENT_NEW_JOB:
        check_str(m->u.new_job.launcher, false);
        check_spec(&m->u.new_job.job);
        break;
    case ING_BACKEND_NEW_JOB:
        check_spec(&m->u.job);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_BACKEND_JOB_STARTED:
    case ING_AGENT_JOB_STARTED:
        check_str(m->u.ref.job_id, false);
        break;
    case ING_BACKEND_KILL_JOB:
        check_str(m->u.kill.job_id, false);
        check_str(m->u.kill.state, false);
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        check_result(&m->u.result);
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        check_str(m->u.ssh.job_id, false);
        check_str(m->u.ssh.host, false);
        check_str(m->u.ssh.user, false);
        check_str(m->u.ssh.password, false);
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        check_mp(m->u.envs.environments);
        break;
    case ING_AGENT_HELLO:
        check_str(m->u.agent_hello.friendly_name, false);
        check_mp(m->u.agent_hello.environments);
        break;
    default:
        break;
    }
}

/* msg_same compares two decoded messages field by field. */
static bool
msg_same(const struct ing_msg *a, const struct ing_msg *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case ING_ERROR:
        return a->u.error.code == b->u.error.code && view_same(a->u.error.text, b->u.error.text);
    case ING_WELCOME:
        return a->u.welcome.version == b->u.welcome.version &&
               a->u.welcome.role == b->u.welcome.role && a->u.welcome.flags == b->u.welcome.flags &&
               a->u.welcome.max_frame == b->u.welcome.max_frame &&
               a->u.welcome.heartbeat_ms == b->u.welcome.heartbeat_ms &&
               memcmp(a->u.welcome.nonce, b->u.welcome.nonce, ING_NONCE_LEN) == 0 &&
               view_same(a->u.welcome.server, b->u.welcome.server);
    case ING_AUTH:
        return memcmp(&a->u.auth, &b->u.auth, sizeof(a->u.auth)) == 0;
    case ING_AUTH_OK:
        return memcmp(&a->u.auth_ok, &b->u.auth_ok, sizeof(a->u.auth_ok)) == 0;
    case ING_CLIENT_HELLO:
        return view_same(a->u.client_hello.name, b->u.client_hello.name);
    case ING_CLIENT_NEW_JOB:
        return a->u.new_job.priority == b->u.new_job.priority &&
               view_same(a->u.new_job.launcher, b->u.new_job.launcher) &&
               spec_same(&a->u.new_job.job, &b->u.new_job.job);
    case ING_BACKEND_NEW_JOB:
        return spec_same(&a->u.job, &b->u.job);
    case ING_CLIENT_KILL_JOB:
    case ING_BACKEND_JOB_STARTED:
    case ING_AGENT_JOB_STARTED:
        return view_same(a->u.ref.job_id, b->u.ref.job_id);
    case ING_BACKEND_KILL_JOB:
        return view_same(a->u.kill.job_id, b->u.kill.job_id) &&
               view_same(a->u.kill.state, b->u.kill.state);
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        return result_same(&a->u.result, &b->u.result);
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        return ssh_same(&a->u.ssh, &b->u.ssh);
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        return view_same(a->u.envs.environments, b->u.envs.environments);
    case ING_AGENT_HELLO:
        return view_same(a->u.agent_hello.friendly_name, b->u.agent_hello.friendly_name) &&
               a->u.agent_hello.slots == b->u.agent_hello.slots &&
               view_same(a->u.agent_hello.environments, b->u.agent_hello.environments);
    case ING_BACKEND_GET_QUEUE:
        return queue_same(&a->u.queue, &b->u.queue);
    default:
        return true; /* no fields */
    }
}

/* check_unencodable: variants of m that the encoder must refuse with -EINVAL. */
static void
check_unencodable(const struct ing_msg *m)
{
    struct ing_msg bad = *m;
    uint8_t out[16];
    bool any = true;
    switch (m->type) {
    case ING_ERROR:
        bad.u.error.text.p = NULL; /* nil in a str */
        break;
    case ING_CLIENT_NEW_JOB:
        bad.u.new_job.job.debug = (uint8_t)(3 + m->u.new_job.job.debug); /* bad debug */
        break;
    case ING_BACKEND_NEW_JOB:
        bad.u.job.inputdata.len = 0; /* an empty mp */
        break;
    case ING_AGENT_JOB_DONE:
        bad.u.result.state.p = NULL;
        break;
    case ING_CLIENT_HELLO:
        bad.u.client_hello.name.len = UINT32_MAX; /* reads as nil */
        break;
    default:
        any = false;
        break;
    }
    if (!any)
        return;
    CHECK(ing_msg_size(&bad) == 0);
    CHECK(ing_msg_encode(&bad, out, sizeof(out)) == -EINVAL);
}

/* check_frame checks a frame that decoded (r bytes at p, message m). */
static void
check_frame(const uint8_t *p, size_t r, struct ing_msg *m)
{
    uint32_t len = be32(p);
    struct queue_copy qc = {NULL, NULL};
    CHECK(r == ING_HDR_LEN + (size_t)len);
    CHECK(type_known(m->type) && m->type == p[4]);
    check_fields(m);
    if (m->type == ING_BACKEND_GET_QUEUE)
        queue_copy(&m->u.queue, p + r, &qc);

    /* The same bytes again, and nothing else. */
    CHECK(ing_msg_size(m) == r);
    uint8_t *enc = malloc(r);
    CHECK(enc != NULL);
    CHECK(ing_msg_encode(m, enc, r) == (ssize_t)r);
    CHECK(memcmp(enc, p, r) == 0);
    CHECK(ing_msg_encode(m, enc, r - 1) == -ENOMEM);
    check_unencodable(m);

    /* Decoded again from a private copy: the same message. */
    struct ing_msg m2;
    memset(&m2, 0xa5, sizeof(m2));
    CHECK(ing_msg_encode(m, enc, r) == (ssize_t)r);
    CHECK(ing_msg_decode(enc, r, len, &m2) == (ssize_t)r);
    CHECK(msg_same(m, &m2));
    free(enc);

    /* The header is fine, so any prefix is "incomplete", whatever max_body allows it. */
    static const size_t cuts[] = {0, 1, 5, 6, 7};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
        if (cuts[i] < r)
            CHECK(ing_msg_decode(p, cuts[i], len, &m2) == 0);
    CHECK(ing_msg_decode(p, r - 1, len, &m2) == 0 || r == ING_HDR_LEN);
    if (len > 0) {
        CHECK(ing_msg_decode(p, r, len - 1, &m2) == -EMSGSIZE);
        CHECK(ing_msg_decode(p, ING_HDR_LEN, len - 1, &m2) == -EMSGSIZE);
    }
    free(qc.run);
    free(qc.wait);
}

/* decode_stream decodes the frames of p[0..n) one after the other, as a receiver does:
 * skipping frames of an unknown type or with a bad body, stopping at an incomplete frame or
 * one over max_body. */
static void
decode_stream(const uint8_t *p, size_t n, uint32_t max_body)
{
    size_t pos = 0;
    while (pos < n) {
        const uint8_t *f = p + pos;
        size_t left = n - pos;
        struct ing_msg m;
        ssize_t r = ing_msg_decode(f, left, max_body, &m);
        if (left < ING_HDR_LEN) {
            CHECK(r == 0);
            return;
        }
        uint32_t len = be32(f);
        uint8_t type;
        uint32_t plen;
        CHECK(ing_frame_peek(f, left, &type, &plen) == 0 && type == f[4] && plen == len);
        if (len > max_body) {
            CHECK(r == -EMSGSIZE);
            return;
        }
        if (f[5] != 0) {
            CHECK(r == -EPROTO);
        } else if (!type_known(f[4])) {
            CHECK(r == -ENOMSG);
        } else if (left - ING_HDR_LEN < len) {
            CHECK(r == 0);
            return;
        } else {
            CHECK(r == (ssize_t)(ING_HDR_LEN + (size_t)len) || r == -EPROTO);
        }
        if (r > 0)
            check_frame(f, (size_t)r, &m);
        if (left - ING_HDR_LEN < len)
            return; /* a bad header before the whole frame is there */
        pos += ING_HDR_LEN + (size_t)len;
    }
}

/* check_preamble checks ing_preamble_decode against proto.md §2. */
static void
check_preamble(const uint8_t *p, size_t n)
{
    static const uint8_t magic[4] = {ING_MAGIC0, ING_MAGIC1, ING_MAGIC2, ING_MAGIC3};
    uint8_t version = 0xee, role = 0xee;
    ssize_t r = ing_preamble_decode(p, n, &version, &role);
    bool bad = false;
    for (size_t i = 0; i < n && i < ING_PREAMBLE_LEN; i++)
        if ((i < 4 && p[i] != magic[i]) || (i >= 6 && p[i] != 0))
            bad = true;
    if (bad) {
        CHECK(r == -EPROTO);
    } else if (n < ING_PREAMBLE_LEN) {
        CHECK(r == 0);
    } else {
        CHECK(r == ING_PREAMBLE_LEN && version == p[4] && role == p[5]);
        uint8_t again[ING_PREAMBLE_LEN];
        ing_preamble_encode(again, role);
        CHECK(memcmp(again, p, ING_PREAMBLE_LEN) == 0 || version != ING_PROTO_VERSION);
    }
}

/* LLVMFuzzerTestOneInput is the libFuzzer entry point: data is a stream of frames. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_preamble(data, size);
    /* A private copy of exactly size bytes, so ASan sees any read past the end. */
    uint8_t *p = malloc(size ? size : 1);
    CHECK(p != NULL);
    if (size > 0)
        memcpy(p, data, size);
    decode_stream(p, size, UINT32_MAX);
    decode_stream(p, size, ING_MAX_FRAME_MIN);
    decode_stream(p, size, 64);
    decode_stream(p, size, 0);
    free(p);
    return 0;
}
