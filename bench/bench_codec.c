/* SPDX-License-Identifier: MIT */
/* bench_codec.c: encode and decode cost of the native protocol codec (src/proto.c) on
 * a ClientNewJob with about 200 bytes and with 8 KiB of inputdata (a msgpack map of string
 * values), and on an AgentJobDone carrying a small (~64-byte) result. Prints one line per
 * case:
 *   name iterations ns/op MB/s
 * (MB/s counts the frame bytes). Fixed inputs, a short warm-up, CLOCK_MONOTONIC around
 * the timed loop only; about 2 s in total.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inginious/mp.h"
#include "inginious/proto.h"

#define CASE_BUDGET_S 0.3 /* timed seconds per case (6 cases) */
#define WARMUP_S 0.02
#define BATCH 256

static volatile size_t sink;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_codec: %s\n", what);
    exit(1);
}

/* A prepared case: the message, its encoded frame and an output buffer. */
struct bcase {
    struct ing_msg msg;
    uint8_t *frame;
    size_t frame_len;
    uint8_t *out;
};

static void
case_init(struct bcase *c)
{
    struct ing_msg m;
    ssize_t n;

    c->frame_len = ing_msg_size(&c->msg);
    if (c->frame_len == 0)
        die("message cannot be encoded");
    c->frame = malloc(c->frame_len);
    c->out = malloc(c->frame_len);
    if (c->frame == NULL || c->out == NULL)
        die("out of memory");
    n = ing_msg_encode(&c->msg, c->frame, c->frame_len);
    if (n != (ssize_t)c->frame_len)
        die("encode failed");
    if (ing_msg_decode(c->frame, c->frame_len, ING_MAX_FRAME_DEFAULT, &m) != n)
        die("decode failed");
}

static void
case_fini(struct bcase *c)
{
    free(c->frame);
    free(c->out);
}

static size_t
batch_encode(const struct bcase *c)
{
    size_t acc = 0;
    int i;

    for (i = 0; i < BATCH; i++)
        acc += (size_t)ing_msg_encode(&c->msg, c->out, c->frame_len);
    return acc;
}

static size_t
batch_decode(const struct bcase *c)
{
    struct ing_msg m;
    size_t acc = 0;
    int i;

    for (i = 0; i < BATCH; i++) {
        acc += (size_t)ing_msg_decode(c->frame, c->frame_len, ING_MAX_FRAME_DEFAULT, &m);
        acc += m.type;
    }
    return acc;
}

/* run times fn on c in batches for CASE_BUDGET_S after a warm-up, and prints the line. */
static void
run(const char *name, size_t (*fn)(const struct bcase *), const struct bcase *c)
{
    uint64_t iters = 0;
    size_t acc = 0;
    double t0, t;

    t0 = now_s();
    do
        acc += fn(c);
    while (now_s() - t0 < WARMUP_S);
    if (acc == 0)
        die("nothing done");

    t0 = now_s();
    do {
        acc += fn(c);
        iters += BATCH;
        t = now_s() - t0;
    } while (t < CASE_BUDGET_S);
    sink = acc;
    printf("%s %llu %.1f %.1f\n", name, (unsigned long long)iters, t * 1e9 / (double)iters,
           (double)c->frame_len * (double)iters / t / 1e6);
}

/* put_text appends a str of n ASCII bytes of source-like text. */
static void
put_text(struct ing_mp_writer *w, size_t n)
{
    static const char src[] = "def solve(values):\n    return sum(v * v for v in values)\n";
    size_t i;

    ing_mp_put_str_header(w, (uint32_t)n);
    for (i = 0; i < n; i++)
        ing_mp_put_raw(w, &src[i % (sizeof(src) - 1)], 1);
}

/* build_inputdata writes a map {"q0": text, ..., "@lang": "python3", "@state": ""} whose
 * string values bring it to about `size` bytes. */
static struct ing_view
build_inputdata(struct ing_mp_writer *w, size_t size)
{
    size_t nq = size < 1024 ? 2 : 16, i, each;
    char key[8];

    each = (size - 40) / nq - 4;
    ing_mp_writer_init_dyn(w);
    ing_mp_put_map(w, (uint32_t)(nq + 2));
    for (i = 0; i < nq; i++) {
        snprintf(key, sizeof(key), "q%zu", i);
        ing_mp_put_cstr(w, key);
        put_text(w, each);
    }
    ing_mp_put_cstr(w, "@lang");
    ing_mp_put_cstr(w, "python3");
    ing_mp_put_cstr(w, "@state");
    ing_mp_put_cstr(w, "");
    if (w->err != 0)
        die("msgpack writer failed");
    return (struct ing_view){(const char *)w->buf, (uint32_t)w->len};
}

/* clang-format off: msgpack literals are split where a \x escape must end */
#define S(s) ((struct ing_view){(s), (uint32_t)(sizeof(s) - 1)})

static void
new_job(struct ing_msg *m, struct ing_view inputdata)
{
    memset(m, 0, sizeof(*m));
    m->type = ING_CLIENT_NEW_JOB;
    m->u.new_job.priority = 0;
    m->u.new_job.launcher = S("frontend");
    m->u.new_job.job.job_id = S("0f8e2c1a-5b7d-4e3a-9c21-7d6e5f4a3b2c");
    m->u.new_job.job.course_id = S("LINFO1101");
    m->u.new_job.job.task_id = S("fibonacci");
    m->u.new_job.job.environment_type = S("docker");
    m->u.new_job.job.environment = S("default");
    m->u.new_job.job.debug = ING_DEBUG_OFF;
    m->u.new_job.job.task_problems = S("\x81\xa2"
                                       "q1"
                                       "\x81\xa4"
                                       "type"
                                       "\xa4"
                                       "code");
    m->u.new_job.job.inputdata = inputdata;
    m->u.new_job.job.environment_parameters = S("\x81\xa6"
                                                "limits"
                                                "\x83\xa4"
                                                "time"
                                                "\x1e\xa6"
                                                "memory"
                                                "\x64\xa9"
                                                "hard_time"
                                                "\x5a");
}

static void
job_done(struct ing_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = ING_AGENT_JOB_DONE;
    m->u.result.job_id = S("0f8e2c1a-5b7d-4e3a-9c21-7d6e5f4a3b2c");
    m->u.result.result_kind = S("success");
    m->u.result.result_text = S("All tests passed.");
    m->u.result.grade = 100.0;
    m->u.result.problems = S("\x81\xa2"
                             "q1"
                             "\x92\xa7"
                             "success"
                             "\xa6"
                             "Right!");
    m->u.result.tests = S("\x80");
    m->u.result.custom = S("\x80");
    m->u.result.state = S("");
    m->u.result.archive = (struct ing_view){NULL, 0};
    m->u.result.stdout_ = S("");
    m->u.result.stderr_ = S("");
}

/* clang-format on */

int
main(void)
{
    struct ing_mp_writer w200, w8k;
    struct bcase small, large, done;

    new_job(&small.msg, build_inputdata(&w200, 200));
    new_job(&large.msg, build_inputdata(&w8k, 8192));
    job_done(&done.msg);
    case_init(&small);
    case_init(&large);
    case_init(&done);

    run("encode_new_job_200B", batch_encode, &small);
    run("decode_new_job_200B", batch_decode, &small);
    run("encode_new_job_8KiB", batch_encode, &large);
    run("decode_new_job_8KiB", batch_decode, &large);
    run("encode_job_done_64B", batch_encode, &done);
    run("decode_job_done_64B", batch_decode, &done);

    case_fini(&small);
    case_fini(&large);
    case_fini(&done);
    ing_mp_writer_fini(&w200);
    ing_mp_writer_fini(&w8k);
    return 0;
}
