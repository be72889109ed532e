/* SPDX-License-Identifier: MIT */
/* zmq_msg.h: the INGInious msgpack message dialect (what stock INGInious peers put in a
 * ZeroMQ frame) <-> struct ing_msg.
 *
 * One message = one msgpack map: "@type" = the class name, plus exactly the fields of that
 * class (INGInious main, common/messages.py). Decoding is zero-copy: the views of the
 * decoded struct ing_msg point into the caller's bytes and stay valid as long as they do.
 *   str fields           -> the str payload (not NUL-terminated);
 *   nullable str fields  -> the payload, or p == NULL for nil (course_id, task_id, stdout,
 *                           stderr, and a queue entry's info);
 *   map fields           -> the raw msgpack bytes of the value (task_problems, inputdata,
 *                           environment_parameters, problems, tests, custom,
 *                           available_environments); task_problems may also be nil (raw c0);
 *   archive              -> the bin payload, or p == NULL for nil;
 *   result [kind, text]  -> result_kind, result_text;
 *   debug                -> ING_DEBUG_OFF / ING_DEBUG_ON / ING_DEBUG_SSH (false/true/"ssh");
 *   grade (int or float) -> double; port, available_job_slots (int) -> uint32_t;
 *   priority (int)       -> int64_t;
 *   BackendGetQueue      -> n_running / n_waiting, the arrays NULL, wire_running /
 *                           wire_waiting at the first tuple: read the tuples with
 *                           zmq_msg_queue_next_running / _waiting (not ing_queue_next_*,
 *                           which read the native format).
 * Message types map to enum ing_msg_type (ING_PING, ING_CLIENT_NEW_JOB, ...); the native-only
 * types (ING_ERROR, ING_WELCOME, ING_AUTH, ING_AUTH_OK) have no msgpack form.
 */
#ifndef INGINIOUS_ZMQ_MSG_H
#define INGINIOUS_ZMQ_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inginious/mp.h"
#include "inginious/proto.h"

/* The name of the course field of ClientNewJob and BackendNewJob on the wire. */
enum zmq_job_field {
    ZMQ_JOB_FIELD_COURSE_ID,  /* "course_id": INGInious v0.7 ... v0.9.x and main */
    ZMQ_JOB_FIELD_TASKSET_ID, /* "taskset_id": UCL-INGI master */
};

/* zmq_msg_decode decodes the msgpack map p[0..n) into *m (views into p). Keys may come in
 * any order; ClientNewJob and BackendNewJob accept "course_id" or "taskset_id" (exactly one);
 * AgentHello may carry the v0.8.0-v0.8.5 "ssh_allowed" (a bool, ignored). Returns:
 *   0          *m is filled;
 *   -EPROTO    not a message: invalid msgpack (truncated, trailing bytes, bad UTF-8, ext,
 *              nesting over ING_MP_MAX_DEPTH), not a map, a non-str key, no "@type", an
 *              unknown "@type", a missing, extra or repeated key, a job_id that is not a
 *              str, or a bad value in a message without job_id;
 *   -EINVAL    the keys are right and job_id is a str, but another value has a bad type
 *              (priority not an int, inputdata not a map, debug not false/true/"ssh", ...):
 *              m->type and the job_id view are set (ClientNewJob:
 *              m->u.new_job.job.job_id; the other job messages: their own job_id), so the
 *              backend can answer BackendJobDone(job_id, crash, *why); the other fields are
 *              unspecified;
 *   -EMSGSIZE  n > UINT32_MAX.
 * why (may be NULL) receives a static reason on failure. Never reads outside p[0..n). */
int zmq_msg_decode(const uint8_t *p, size_t n, struct ing_msg *m, const char **why);

/* zmq_msg_decode_general is zmq_msg_decode without its fast path (a message in INGInious'
 * order, read in one pass): the same results, for the tests that compare both. */
int zmq_msg_decode_general(const uint8_t *p, size_t n, struct ing_msg *m, const char **why);

/* The keys' places in a message the fast path read (ZMQ_DEC_FAST): key[i] is the offset of
 * the key of the class's field i (declaration order), key[nfields] that of "@type"; the
 * "@type" pair runs to the end of the message. */
#define ZMQ_LAYOUT_MAX 16
struct zmq_msg_layout {
    uint8_t nfields;
    uint32_t key[ZMQ_LAYOUT_MAX + 1];
};

/* zmq_msg_decode_ex is zmq_msg_decode that also sets *how to ZMQ_DEC_* bits: the shape of
 * what was decoded, learnt without another look at the bytes; and, when the message is in
 * INGInious' order (ZMQ_DEC_FAST) and lay is not NULL, *lay. */
#define ZMQ_DEC_GRADE_INT 0x01 /* an *JobDone's grade is an integer (zmq_msg_grade_is_int) */
#define ZMQ_DEC_FAST 0x02      /* written as INGInious writes it: every field in declaration
                                  order, "@type" last, each value of its documented type
                                  (no coercion): *lay is set */
int zmq_msg_decode_ex(const uint8_t *p, size_t n, struct ing_msg *m, const char **why,
                      unsigned *how, struct zmq_msg_layout *lay);

/* zmq_msg_encode appends m as one msgpack map to w, as the Python encoder does: fields in
 * declaration order, "@type" last, floats as float64, ints in their smallest form, archive
 * as bin, nil for NULL nullable views, result and queue tuples as arrays, debug as
 * false/true/"ssh", the course field named per jf. Map-typed views are copied raw (they
 * must hold one complete msgpack value; task_problems may be NULL for nil). Returns 0,
 * -EINVAL (type without a msgpack form, NULL in a non-nullable field, an empty map-typed
 * view, a bad debug value or jf, queue counts without arrays; w->len is then restored), or
 * w's sticky error (-ENOMEM when a fixed writer is full). */
int zmq_msg_encode(const struct ing_msg *m, struct ing_mp_writer *w, enum zmq_job_field jf);

/* Options of zmq_msg_encode_opt: the shape a peer's release expects. */
#define ZMQ_ENC_KILL_NO_STATE 0x01 /* BackendKillJob as v0.7.x and v0.8.0 have it: job_id only */
#define ZMQ_ENC_GRADE_INT                                                                          \
    0x02 /* a *JobDone's integral grade as an integer (as relayed                                  \
            by Python when the agent sent an integer) */

/* zmq_msg_encode_opt is zmq_msg_encode with ZMQ_ENC_* options. */
int zmq_msg_encode_opt(const struct ing_msg *m, struct ing_mp_writer *w, enum zmq_job_field jf,
                       unsigned opts);

/* The release family of an agent, told from the shape of its AgentHello. */
enum zmq_agent_release {
    ZMQ_AGENT_MAIN, /* v0.8.6 ... v0.9.x, main (or not told apart): BackendKillJob with state */
    ZMQ_AGENT_V08,  /* v0.8.0 - v0.8.5: "ssh_allowed" in the hello */
    ZMQ_AGENT_V07,  /* v0.7.x: no "ssh_allowed", and an environment's "created" is a float
                       (the Docker agent's, up to v0.8.4; from v0.8.5 on it is an integer):
                       BackendKillJob without state */
};

struct zmq_agent_shape {
    enum zmq_agent_release release;
    bool ssh_allowed; /* ZMQ_AGENT_V08: the hello's ssh_allowed */
};

/* zmq_msg_agent_shape reads the shape of the AgentHello p[0..n) (one that zmq_msg_decode
 * accepted). Never fails: an unknown shape is ZMQ_AGENT_MAIN. */
void zmq_msg_agent_shape(const uint8_t *p, size_t n, struct zmq_agent_shape *out);

/* zmq_msg_grade_is_int tells whether the *JobDone p[0..n) has an integer grade. */
bool zmq_msg_grade_is_int(const uint8_t *p, size_t n);

/* INGInious v0.5 - v0.6.2 (a "type" key with snake_case names instead of "@type").
 *
 * zmq_msg_legacy_to_main rewrites such a message p[0..n) into w (reset first) as the main
 * dialect's message of the same meaning, for zmq_msg_decode: ClientNewJob gets
 * environment_type "mcq" for the container "mcq", else "docker", an empty task_problems and
 * environment_parameters {"limits": {"time", "hard_time", "memory"}, "network_grading",
 * "run_cmd"} from its limits; priority 0 and state "" where v0.5 has none; an agent's
 * [client address, job id] pair becomes the job id; AgentHello's available_containers becomes
 * available_environments (the "mcq" container under "mcq", the others under "docker");
 * AgentJobSSHDebug gets the user "worker". Keys are not checked here (v0.6 does not check
 * them either): zmq_msg_decode does. Returns 0, -ENOENT (not such a message: no "type", or an
 * "@type" too, or not valid msgpack), -EPROTO (why: type not a str or unknown), or w's
 * error. */
int zmq_msg_legacy_to_main(const uint8_t *p, size_t n, struct ing_mp_writer *w, const char **why);

/* zmq_msg_legacy_encode appends m in its v0.6.2 shape ("type" last, fields in the order of
 * v0.6.2's constructors): BackendUpdateContainers with the names of the "docker" and "mcq"
 * environments, job ids of BackendNewJob / BackendKillJob as [b"", job id] pairs, the
 * v0.6 BackendNewJob limits from environment_parameters (defaults: time 20, memory 1024,
 * hard time nil, network false, run_cmd nil), queue entries with a running job's end
 * (start + time limit) and nil infos as "". Returns 0, -EINVAL (no v0.6 form), or w's
 * error. */
int zmq_msg_legacy_encode(const struct ing_msg *m, struct ing_mp_writer *w);

/* zmq_msg_queue_next_running reads the running tuple at pos into *e and returns the
 * position of the next one. pos is inside a BackendGetQueue that zmq_msg_decode accepted
 * (start at m->u.queue.wire_running; read n_running tuples); end is the end of that
 * message (p + n). Returns NULL if the bytes are not such a tuple. */
const uint8_t *zmq_msg_queue_next_running(const uint8_t *pos, const uint8_t *end,
                                          struct ing_queue_running *e);

/* zmq_msg_queue_next_waiting reads the waiting tuple at pos (start at wire_waiting). */
const uint8_t *zmq_msg_queue_next_waiting(const uint8_t *pos, const uint8_t *end,
                                          struct ing_queue_waiting *e);

#endif
