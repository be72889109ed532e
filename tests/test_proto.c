/* SPDX-License-Identifier: MIT */
/* test_proto.c: the codec of the native protocol (src/proto.c, proto.md §2-§5).
 *
 * The test vectors below are the ones printed in proto.md §10: the test parses proto.md between
 * the vectors markers and checks that it holds exactly these vectors, so the document cannot
 * drift. `ING_PRINT_VECTORS=1 build/tests/test_proto` prints that section. proto.md is looked
 * for in $ING_PROTO_MD, else in the current directory (the repository root under make test).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bytes.h"
#include "inginious/mp.h"
#include "inginious/proto.h"

/* What a line of a vector holds; drives the corruption tests. */
enum vkind {
    K_END,    /* end of a vector */
    K_HDR,    /* frame header: u32 body length, type, flags */
    K_RAW,    /* fixed-size fields, not corrupted */
    K_STR,    /* str: u32 length + UTF-8 */
    K_NSTR,   /* nstr */
    K_NBYTES, /* nbytes */
    K_MP,     /* mp: u32 length + one msgpack value */
    K_COUNT,  /* u32 count of queue entries */
    K_BOOL,   /* bool byte */
    K_DEBUG,  /* debug byte */
};

/* One field (or group of fixed fields) of a vector: hex bytes and the comment printed in
 * proto.md (NULL for a frame header: the comment is generated). */
struct vline {
    enum vkind kind;
    const char *hex;
    const char *comment;
};

/* clang-format off */
static const struct vline v_preamble[] = {
    {K_RAW, "89 49 4e 47", "magic: 89 'I' 'N' 'G'"},
    {K_RAW, "01", "version 1"},
    {K_RAW, "02", "role 2: client"},
    {K_RAW, "00 00", "flags 0"},
    {K_END, NULL, NULL},
};

static const struct vline v_error[] = {
    {K_HDR, "00 00 00 0f 01 00", NULL},
    {K_RAW, "00 05", "code 5: MALFORMED"},
    {K_STR, "00 00 00 09 62 61 64 20 66 72 61 6d 65", "text: \"bad frame\""},
    {K_END, NULL, NULL},
};

static const struct vline v_error_empty[] = {
    {K_HDR, "00 00 00 06 01 00", NULL},
    {K_RAW, "ff ff", "code 65535 (unknown codes are accepted)"},
    {K_STR, "00 00 00 00", "text: \"\""},
    {K_END, NULL, NULL},
};

static const struct vline v_welcome[] = {
    {K_HDR, "00 00 00 47 02 00", NULL},
    {K_RAW, "01", "version 1"},
    {K_RAW, "02", "role 2: client"},
    {K_RAW, "00 01", "flags 0x0001: AUTH"},
    {K_RAW, "04 00 00 00", "max_frame 67108864"},
    {K_RAW, "00 00 03 e8", "heartbeat_ms 1000"},
    {K_RAW,
     "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f "
     "10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f",
     "nonce 00 01 .. 1f"},
    {K_STR,
     "00 00 00 17 69 6e 67 69 6e 69 6f 75 73 2d 62 61 "
     "63 6b 65 6e 64 20 31 2e 30 2e 30",
     "server: \"inginious-backend 1.0.0\""},
    {K_END, NULL, NULL},
};

static const struct vline v_auth[] = {
    {K_HDR, "00 00 00 40 03 00", NULL},
    {K_RAW,
     "a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af "
     "b0 b1 b2 b3 b4 b5 b6 b7 b8 b9 ba bb bc bd be bf",
     "nonce a0 a1 .. bf"},
    {K_RAW,
     "a0 8e 36 de 0c 6a cc c9 4d bb 73 77 47 97 cf 1f "
     "dd f2 6d ac 1c 69 2e 97 b0 1f fc b3 b2 bb 9e 15",
     "mac = HMAC-SHA-256(\"secret\", \"INGv1-peer\" || 02 || Ns || Nc)"},
    {K_END, NULL, NULL},
};

static const struct vline v_auth_ok[] = {
    {K_HDR, "00 00 00 20 04 00", NULL},
    {K_RAW,
     "18 fe 1d 4a 9c e5 a1 90 4f 01 d3 d2 3a 4c 5b 92 "
     "62 38 06 84 c1 b8 5e 4e 8c 89 34 3e ba 4d ee b9",
     "mac = HMAC-SHA-256(\"secret\", \"INGv1-server\" || 02 || Nc || Ns)"},
    {K_END, NULL, NULL},
};

static const struct vline v_ping[] = {
    {K_HDR, "00 00 00 00 05 00", NULL},
    {K_END, NULL, NULL},
};

static const struct vline v_pong[] = {
    {K_HDR, "00 00 00 00 06 00", NULL},
    {K_END, NULL, NULL},
};

static const struct vline v_unknown[] = {
    {K_HDR, "00 00 00 00 07 00", NULL},
    {K_END, NULL, NULL},
};

static const struct vline v_client_hello[] = {
    {K_HDR, "00 00 00 0a 10 00", NULL},
    {K_STR, "00 00 00 06 77 65 62 61 70 70", "name: \"webapp\""},
    {K_END, NULL, NULL},
};

static const struct vline v_client_hello_empty[] = {
    {K_HDR, "00 00 00 04 10 00", NULL},
    {K_STR, "00 00 00 00", "name: \"\""},
    {K_END, NULL, NULL},
};

static const struct vline v_client_new_job[] = {
    {K_HDR, "00 00 00 88 11 00", NULL},
    {K_RAW, "00 00 00 00 00 00 00 00", "priority 0"},
    {K_STR, "00 00 00 08 66 72 6f 6e 74 65 6e 64", "launcher: \"frontend\""},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_NSTR, "00 00 00 09 4c 49 4e 46 4f 31 31 30 31", "course_id: \"LINFO1101\""},
    {K_NSTR, "00 00 00 05 68 65 6c 6c 6f", "task_id: \"hello\""},
    {K_STR, "00 00 00 06 64 6f 63 6b 65 72", "environment_type: \"docker\""},
    {K_STR, "00 00 00 07 64 65 66 61 75 6c 74", "environment: \"default\""},
    {K_DEBUG, "00", "debug 0: off"},
    {K_MP,
     "00 00 00 0f 81 a2 71 31 81 a4 74 79 70 65 a4 63 "
     "6f 64 65",
     "task_problems: mp {\"q1\": {\"type\": \"code\"}}"},
    {K_MP,
     "00 00 00 15 82 a2 71 31 a8 70 72 69 6e 74 28 31 "
     "29 a6 40 73 74 61 74 65 a0",
     "inputdata: mp {\"q1\": \"print(1)\", \"@state\": \"\"}"},
    {K_MP,
     "00 00 00 0f 81 a6 6c 69 6d 69 74 73 81 a4 74 69 "
     "6d 65 1e",
     "environment_parameters: mp {\"limits\": {\"time\": 30}}"},
    {K_END, NULL, NULL},
};

static const struct vline v_client_new_job_nil[] = {
    {K_HDR, "00 00 00 52 11 00", NULL},
    {K_RAW, "ff ff ff ff ff ff ff ff", "priority -1"},
    {K_STR, "00 00 00 00", "launcher: \"\""},
    {K_STR, "00 00 00 05 6a 6f 62 2d 32", "job_id: \"job-2\""},
    {K_NSTR, "ff ff ff ff", "course_id: nil"},
    {K_NSTR, "ff ff ff ff", "task_id: nil"},
    {K_STR, "00 00 00 03 6d 63 71", "environment_type: \"mcq\""},
    {K_STR, "00 00 00 07 64 65 66 61 75 6c 74", "environment: \"default\""},
    {K_DEBUG, "02", "debug 2: ssh"},
    {K_MP, "00 00 00 01 80", "task_problems: mp {}"},
    {K_MP,
     "00 00 00 14 82 a2 71 31 a5 63 61 66 c3 a9 a6 40 "
     "73 74 61 74 65 a2 73 31",
     "inputdata: mp {\"q1\": \"caf\u00e9\", \"@state\": \"s1\"}"},
    {K_MP, "00 00 00 01 c0", "environment_parameters: mp nil"},
    {K_END, NULL, NULL},
};

static const struct vline v_client_kill_job[] = {
    {K_HDR, "00 00 00 09 12 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_client_get_queue[] = {
    {K_HDR, "00 00 00 00 13 00", NULL},
    {K_END, NULL, NULL},
};

static const struct vline v_client_get_stats[] = {
    {K_HDR, "00 00 00 00 14 00", NULL},
    {K_END, NULL, NULL},
};

static const struct vline v_client_get_job_info[] = {
    {K_HDR, "00 00 00 09 15 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_job_info[] = {
    {K_HDR, "00 00 00 7e 26 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_MP,
     "00 00 00 71 88 a5 73 74 61 74 65 a7 77 61 69 74 "
     "69 6e 67 b0 65 6e 76 69 72 6f 6e 6d 65 6e 74 5f "
     "74 79 70 65 a6 64 6f 63 6b 65 72 ab 65 6e 76 69 "
     "72 6f 6e 6d 65 6e 74 a7 64 65 66 61 75 6c 74 a5 "
     "73 6c 6f 74 73 02 a8 70 6f 73 69 74 69 6f 6e 02 "
     "a9 77 61 69 74 65 64 5f 6d 73 cd 07 d0 a6 65 74 "
     "61 5f 6d 73 cd 0f a0 aa 72 75 6e 5f 61 76 67 5f "
     "6d 73 cd 07 d0",
     "info: mp {\"state\": \"waiting\", \"environment_type\": \"docker\", \"environment\": "
     "\"default\", \"slots\": 2, \"position\": 2, \"waited_ms\": 2000, \"eta_ms\": 4000, "
     "\"run_avg_ms\": 2000}"},
    {K_END, NULL, NULL},
};

static const struct vline v_client_hello_ack[] = {
    {K_HDR, "00 00 00 0a 16 00", NULL},
    {K_STR, "00 00 00 06 77 65 62 61 70 70", "name: \"webapp\""},
    {K_END, NULL, NULL},
};

static const struct vline v_client_hello_session[] = {
    {K_HDR, "00 00 00 1b 17 00", NULL},
    {K_STR, "00 00 00 06 77 65 62 61 70 70", "name: \"webapp\""},
    {K_RAW, "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", "session: 16 bytes 00 01 .. 0f"},
    {K_RAW, "00", "flags: 0 (results delivered)"},
    {K_END, NULL, NULL},
};

static const struct vline v_client_hello_session_ack[] = {
    {K_HDR, "00 00 00 1b 17 00", NULL},
    {K_STR, "00 00 00 06 77 65 62 61 70 70", "name: \"webapp\""},
    {K_RAW, "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", "session: 16 bytes 00 01 .. 0f"},
    {K_RAW, "02", "flags: 0x02 ACK (results acknowledged)"},
    {K_END, NULL, NULL},
};

static const struct vline v_client_session_ack[] = {
    {K_HDR, "00 00 00 08 18 00", NULL},
    {K_RAW, "00 00 00 00 00 00 01 2c", "count: 300 results read"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_session_jobs[] = {
    {K_HDR, "00 00 00 12 28 00", NULL},
    {K_BOOL, "01", "last: true"},
    {K_MP, "00 00 00 0d 92 a5 6a 6f 62 2d 31 a5 6a 6f 62 2d 32",
     "jobs: mp [\"job-1\", \"job-2\"]"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_stats[] = {
    {K_HDR, "00 00 00 39 25 00", NULL},
    {K_MP,
     "00 00 00 35 83 a9 73 75 62 6d 69 74 74 65 64 07 "
     "a7 77 61 69 74 69 6e 67 02 ac 65 6e 76 69 72 6f "
     "6e 6d 65 6e 74 73 91 94 a6 64 6f 63 6b 65 72 a7 "
     "64 65 66 61 75 6c 74 02 01",
     "stats: mp {\"submitted\": 7, \"waiting\": 2, \"environments\": [[\"docker\", \"default\", 2, 1]]}"},
    {K_END, NULL, NULL},
};

static const struct vline v_update_envs[] = {
    {K_HDR, "00 00 00 22 20 00", NULL},
    {K_MP,
     "00 00 00 1e 82 a6 64 6f 63 6b 65 72 92 a7 64 65 "
     "66 61 75 6c 74 a7 70 79 74 68 6f 6e 33 a3 6d 63 "
     "71 90",
     "available_environments: mp {\"docker\": [\"default\", \"python3\"], \"mcq\": []}"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_job_started[] = {
    {K_HDR, "00 00 00 09 21 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_job_accepted[] = {
    {K_HDR, "00 00 00 09 27 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_job_done[] = {
    {K_HDR, "00 00 00 60 22 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_STR, "00 00 00 07 73 75 63 63 65 73 73", "result_kind: \"success\""},
    {K_STR, "00 00 00 09 57 65 6c 6c 20 64 6f 6e 65", "result_text: \"Well done\""},
    {K_RAW, "40 59 00 00 00 00 00 00", "grade 100.0"},
    {K_MP,
     "00 00 00 10 81 a2 71 31 92 a7 73 75 63 63 65 73 "
     "73 a2 6f 6b",
     "problems: mp {\"q1\": [\"success\", \"ok\"]}"},
    {K_MP, "00 00 00 01 80", "tests: mp {}"},
    {K_MP, "00 00 00 01 80", "custom: mp {}"},
    {K_STR, "00 00 00 02 73 32", "state: \"s2\""},
    {K_NBYTES, "00 00 00 04 1f 8b 08 00", "archive: nbytes 1f 8b 08 00"},
    {K_NSTR, "00 00 00 03 6f 6b 0a", "stdout: \"ok\\n\""},
    {K_NSTR, "00 00 00 00", "stderr: \"\""},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_job_done_nil[] = {
    {K_HDR, "00 00 00 4c 22 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 32", "job_id: \"job-2\""},
    {K_STR, "00 00 00 05 63 72 61 73 68", "result_kind: \"crash\""},
    {K_STR,
     "00 00 00 0f 41 67 65 6e 74 20 72 65 73 74 61 72 "
     "74 65 64",
     "result_text: \"Agent restarted\""},
    {K_RAW, "00 00 00 00 00 00 00 00", "grade 0.0"},
    {K_MP, "00 00 00 01 80", "problems: mp {}"},
    {K_MP, "00 00 00 01 80", "tests: mp {}"},
    {K_MP, "00 00 00 01 80", "custom: mp {}"},
    {K_STR, "00 00 00 00", "state: \"\""},
    {K_NBYTES, "ff ff ff ff", "archive: nil"},
    {K_NSTR, "ff ff ff ff", "stdout: nil"},
    {K_NSTR, "ff ff ff ff", "stderr: nil"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_ssh[] = {
    {K_HDR, "00 00 00 2d 23 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_STR, "00 00 00 08 31 30 2e 30 2e 30 2e 35", "host: \"10.0.0.5\""},
    {K_RAW, "00 00 08 ae", "port 2222"},
    {K_STR, "00 00 00 06 77 6f 72 6b 65 72", "user: \"worker\""},
    {K_STR, "00 00 00 06 73 33 63 72 33 74", "password: \"s3cr3t\""},
    {K_END, NULL, NULL},
};

static const struct vline v_queue_empty[] = {
    {K_HDR, "00 00 00 08 24 00", NULL},
    {K_COUNT, "00 00 00 00", "n_running 0"},
    {K_COUNT, "00 00 00 00", "n_waiting 0"},
    {K_END, NULL, NULL},
};

static const struct vline v_queue[] = {
    {K_HDR, "00 00 00 99 24 00", NULL},
    {K_COUNT, "00 00 00 01", "n_running 1"},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "running[0].job_id: \"job-1\""},
    {K_BOOL, "01", "running[0].is_current_client_job true"},
    {K_STR, "00 00 00 07 61 67 65 6e 74 2d 31", "running[0].agent_friendly_name: \"agent-1\""},
    {K_STR,
     "00 00 00 0f 4c 49 4e 46 4f 31 31 30 31 2f 68 65 "
     "6c 6c 6f",
     "running[0].info: \"LINFO1101/hello\""},
    {K_STR, "00 00 00 08 66 72 6f 6e 74 65 6e 64", "running[0].launcher: \"frontend\""},
    {K_RAW, "00 00 00 00 65 53 f1 00", "running[0].started_at 1700000000"},
    {K_RAW, "00 00 00 00 00 00 00 1e", "running[0].max_time 30"},
    {K_COUNT, "00 00 00 02", "n_waiting 2"},
    {K_STR, "00 00 00 05 6a 6f 62 2d 32", "waiting[0].job_id: \"job-2\""},
    {K_BOOL, "00", "waiting[0].is_current_client_job false"},
    {K_STR, "00 00 00 07 64 65 66 61 75 6c 74", "waiting[0].info: \"default\""},
    {K_STR, "00 00 00 00", "waiting[0].launcher: \"\""},
    {K_RAW, "ff ff ff ff ff ff ff ff", "waiting[0].max_time -1"},
    {K_STR, "00 00 00 05 6a 6f 62 2d 33", "waiting[1].job_id: \"job-3\""},
    {K_BOOL, "01", "waiting[1].is_current_client_job true"},
    {K_STR,
     "00 00 00 0f 4c 49 4e 46 4f 31 31 30 31 2f 68 65 "
     "6c 6c 6f",
     "waiting[1].info: \"LINFO1101/hello\""},
    {K_STR, "00 00 00 03 63 6c 69", "waiting[1].launcher: \"cli\""},
    {K_RAW, "00 00 00 00 00 00 00 3c", "waiting[1].max_time 60"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_new_job[] = {
    {K_HDR, "00 00 00 74 30 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_NSTR, "00 00 00 09 4c 49 4e 46 4f 31 31 30 31", "course_id: \"LINFO1101\""},
    {K_NSTR, "00 00 00 05 68 65 6c 6c 6f", "task_id: \"hello\""},
    {K_STR, "00 00 00 06 64 6f 63 6b 65 72", "environment_type: \"docker\""},
    {K_STR, "00 00 00 07 64 65 66 61 75 6c 74", "environment: \"default\""},
    {K_DEBUG, "01", "debug 1: on"},
    {K_MP,
     "00 00 00 0f 81 a2 71 31 81 a4 74 79 70 65 a4 63 "
     "6f 64 65",
     "task_problems: mp {\"q1\": {\"type\": \"code\"}}"},
    {K_MP,
     "00 00 00 15 82 a2 71 31 a8 70 72 69 6e 74 28 31 "
     "29 a6 40 73 74 61 74 65 a0",
     "inputdata: mp {\"q1\": \"print(1)\", \"@state\": \"\"}"},
    {K_MP,
     "00 00 00 0f 81 a6 6c 69 6d 69 74 73 81 a4 74 69 "
     "6d 65 1e",
     "environment_parameters: mp {\"limits\": {\"time\": 30}}"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_new_job_nil[] = {
    {K_HDR, "00 00 00 2f 30 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 32", "job_id: \"job-2\""},
    {K_NSTR, "00 00 00 00", "course_id: \"\""},
    {K_NSTR, "ff ff ff ff", "task_id: nil"},
    {K_STR, "00 00 00 06 64 6f 63 6b 65 72", "environment_type: \"docker\""},
    {K_STR, "00 00 00 00", "environment: \"\""},
    {K_DEBUG, "00", "debug 0: off"},
    {K_MP, "00 00 00 01 80", "task_problems: mp {}"},
    {K_MP, "00 00 00 01 80", "inputdata: mp {}"},
    {K_MP, "00 00 00 01 80", "environment_parameters: mp {}"},
    {K_END, NULL, NULL},
};

static const struct vline v_backend_kill_job[] = {
    {K_HDR, "00 00 00 0f 31 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_STR, "00 00 00 02 73 31", "state: \"s1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_agent_hello[] = {
    {K_HDR, "00 00 00 3f 40 00", NULL},
    {K_STR, "00 00 00 07 61 67 65 6e 74 2d 31", "friendly_name: \"agent-1\""},
    {K_RAW, "00 00 00 04", "available_job_slots 4"},
    {K_MP,
     "00 00 00 2c 81 a6 64 6f 63 6b 65 72 81 a7 64 65 "
     "66 61 75 6c 74 82 a2 69 64 a9 73 68 61 32 35 36 "
     "3a 61 62 a7 63 72 65 61 74 65 64 ce 65 53 f1 00",
     "available_environments: mp {\"docker\": {\"default\": "
     "{\"id\": \"sha256:ab\", \"created\": 1700000000}}}"},
    {K_END, NULL, NULL},
};

static const struct vline v_agent_hello_resume[] = {
    {K_HDR, "00 00 00 67 44 00", NULL},
    {K_RAW, "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", "agent_id: 00 01 .. 0f"},
    {K_STR, "00 00 00 07 61 67 65 6e 74 2d 31", "friendly_name: \"agent-1\""},
    {K_RAW, "00 00 00 04", "available_job_slots 4"},
    {K_MP,
     "00 00 00 2c 81 a6 64 6f 63 6b 65 72 81 a7 64 65 "
     "66 61 75 6c 74 82 a2 69 64 a9 73 68 61 32 35 36 "
     "3a 61 62 a7 63 72 65 61 74 65 64 ce 65 53 f1 00",
     "available_environments: mp {\"docker\": {\"default\": "
     "{\"id\": \"sha256:ab\", \"created\": 1700000000}}}"},
    {K_COUNT, "00 00 00 02", "n_jobs 2"},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "jobs[0].job_id: \"job-1\""},
    {K_BOOL, "01", "jobs[0].started true"},
    {K_STR, "00 00 00 05 6a 6f 62 2d 32", "jobs[1].job_id: \"job-2\""},
    {K_BOOL, "00", "jobs[1].started false"},
    {K_END, NULL, NULL},
};

static const struct vline v_agent_job_started[] = {
    {K_HDR, "00 00 00 09 41 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_END, NULL, NULL},
};

static const struct vline v_agent_job_done[] = {
    {K_HDR, "00 00 00 6c 42 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_STR, "00 00 00 06 66 61 69 6c 65 64", "result_kind: \"failed\""},
    {K_STR,
     "00 00 00 0d 31 20 74 65 73 74 20 66 61 69 6c 65 "
     "64",
     "result_text: \"1 test failed\""},
    {K_RAW, "40 49 00 00 00 00 00 00", "grade 50.0"},
    {K_MP,
     "00 00 00 17 81 a2 71 31 92 a6 66 61 69 6c 65 64 "
     "aa 65 78 70 65 63 74 65 64 20 32",
     "problems: mp {\"q1\": [\"failed\", \"expected 2\"]}"},
    {K_MP, "00 00 00 01 80", "tests: mp {}"},
    {K_MP, "00 00 00 04 81 a1 6e 01", "custom: mp {\"n\": 1}"},
    {K_STR, "00 00 00 02 73 32", "state: \"s2\""},
    {K_NBYTES, "00 00 00 00", "archive: nbytes, empty"},
    {K_NSTR, "ff ff ff ff", "stdout: nil"},
    {K_NSTR, "00 00 00 06 74 72 61 63 65 0a", "stderr: \"trace\\n\""},
    {K_END, NULL, NULL},
};

static const struct vline v_agent_ssh[] = {
    {K_HDR, "00 00 00 20 43 00", NULL},
    {K_STR, "00 00 00 05 6a 6f 62 2d 31", "job_id: \"job-1\""},
    {K_STR, "00 00 00 03 3a 3a 31", "host: \"::1\""},
    {K_RAW, "00 00 00 16", "port 22"},
    {K_STR, "00 00 00 04 72 6f 6f 74", "user: \"root\""},
    {K_STR, "00 00 00 00", "password: \"\""},
    {K_END, NULL, NULL},
};

/* The decoded contents of the vectors, written independently of the hex above. */
#define V(s) {(s), (uint32_t)(sizeof(s) - 1)}
#define NIL {NULL, 0}

#define MP_EMPTY_MAP V("\x80")
#define MP_TASK_PROBLEMS V("\x81\xa2" "q1" "\x81\xa4" "type" "\xa4" "code")
#define MP_INPUTDATA V("\x82\xa2" "q1" "\xa8" "print(1)" "\xa6" "@state" "\xa0")
#define MP_ENV_PARAMS V("\x81\xa6" "limits" "\x81\xa4" "time" "\x1e")

static const struct ing_msg m_error = {
    .type = ING_ERROR,
    .u.error = {ING_ERR_MALFORMED, V("bad frame")},
};

static const struct ing_msg m_error_empty = {
    .type = ING_ERROR,
    .u.error = {0xffff, V("")},
};

static const struct ing_msg m_welcome = {
    .type = ING_WELCOME,
    .u.welcome = {
        .version = 1,
        .role = ING_ROLE_CLIENT,
        .flags = ING_WELCOME_AUTH,
        .max_frame = 67108864,
        .heartbeat_ms = 1000,
        .nonce = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
                  0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                  0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f},
        .server = V("inginious-backend 1.0.0"),
    },
};

static const struct ing_msg m_auth = {
    .type = ING_AUTH,
    .u.auth = {
        .nonce = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
                  0xac, 0xad, 0xae, 0xaf, 0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
                  0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf},
        .mac = {0xa0, 0x8e, 0x36, 0xde, 0x0c, 0x6a, 0xcc, 0xc9, 0x4d, 0xbb, 0x73, 0x77,
                0x47, 0x97, 0xcf, 0x1f, 0xdd, 0xf2, 0x6d, 0xac, 0x1c, 0x69, 0x2e, 0x97,
                0xb0, 0x1f, 0xfc, 0xb3, 0xb2, 0xbb, 0x9e, 0x15},
    },
};

static const struct ing_msg m_auth_ok = {
    .type = ING_AUTH_OK,
    .u.auth_ok = {
        .mac = {0x18, 0xfe, 0x1d, 0x4a, 0x9c, 0xe5, 0xa1, 0x90, 0x4f, 0x01, 0xd3, 0xd2,
                0x3a, 0x4c, 0x5b, 0x92, 0x62, 0x38, 0x06, 0x84, 0xc1, 0xb8, 0x5e, 0x4e,
                0x8c, 0x89, 0x34, 0x3e, 0xba, 0x4d, 0xee, 0xb9},
    },
};

static const struct ing_msg m_ping = {.type = ING_PING};
static const struct ing_msg m_pong = {.type = ING_PONG};
static const struct ing_msg m_unknown = {.type = ING_UNKNOWN};
static const struct ing_msg m_client_get_queue = {.type = ING_CLIENT_GET_QUEUE};
static const struct ing_msg m_client_get_stats = {.type = ING_CLIENT_GET_STATS};
static const struct ing_msg m_client_get_job_info = {
    .type = ING_CLIENT_GET_JOB_INFO,
    .u.ref = {{"job-1", 5}},
};
static const struct ing_msg m_backend_job_info = {
    .type = ING_BACKEND_JOB_INFO,
    .u.job_info = {{"job-1", 5},
                   {"\x88\xa5state\xa7waiting\xb0" "environment_type\xa6" "docker\xab"
                    "environment\xa7" "default\xa5slots\x02\xa8position\x02\xa9waited_ms"
                    "\xcd\x07\xd0\xa6" "eta_ms\xcd\x0f\xa0\xaarun_avg_ms\xcd\x07\xd0",
                    113}},
};
static const struct ing_msg m_backend_stats = {
    .type = ING_BACKEND_STATS,
    .u.stats = {{"\x83\xa9submitted\x07\xa7waiting\x02\xac" "environments\x91\x94\xa6"
                 "docker\xa7" "default\x02\x01", 53}},
};

static const struct ing_msg m_client_hello = {
    .type = ING_CLIENT_HELLO,
    .u.client_hello = {V("webapp")},
};

static const struct ing_msg m_client_hello_ack = {
    .type = ING_CLIENT_HELLO_ACK,
    .u.client_hello = {V("webapp")},
};

static const struct ing_msg m_client_hello_session = {
    .type = ING_CLIENT_HELLO_SESSION,
    .u.client_hello = {V("webapp"), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
};

static const struct ing_msg m_client_hello_session_ack = {
    .type = ING_CLIENT_HELLO_SESSION,
    .u.client_hello = {V("webapp"), {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
                       ING_SESSION_ACK},
};

static const struct ing_msg m_client_session_ack = {
    .type = ING_CLIENT_SESSION_ACK,
    .u.session_ack = {300},
};

static const struct ing_msg m_backend_session_jobs = {
    .type = ING_BACKEND_SESSION_JOBS,
    .u.session_jobs = {true, V("\x92\xa5job-1\xa5job-2")},
};

static const struct ing_msg m_backend_job_accepted = {
    .type = ING_BACKEND_JOB_ACCEPTED,
    .u.ref = {V("job-1")},
};

static const struct ing_msg m_client_hello_empty = {
    .type = ING_CLIENT_HELLO,
    .u.client_hello = {V("")},
};

static const struct ing_msg m_client_new_job = {
    .type = ING_CLIENT_NEW_JOB,
    .u.new_job = {
        .priority = 0,
        .launcher = V("frontend"),
        .job = {
            .job_id = V("job-1"),
            .course_id = V("LINFO1101"),
            .task_id = V("hello"),
            .environment_type = V("docker"),
            .environment = V("default"),
            .debug = ING_DEBUG_OFF,
            .task_problems = MP_TASK_PROBLEMS,
            .inputdata = MP_INPUTDATA,
            .environment_parameters = MP_ENV_PARAMS,
        },
    },
};

static const struct ing_msg m_client_new_job_nil = {
    .type = ING_CLIENT_NEW_JOB,
    .u.new_job = {
        .priority = -1,
        .launcher = V(""),
        .job = {
            .job_id = V("job-2"),
            .course_id = NIL,
            .task_id = NIL,
            .environment_type = V("mcq"),
            .environment = V("default"),
            .debug = ING_DEBUG_SSH,
            .task_problems = MP_EMPTY_MAP,
            .inputdata = V("\x82\xa2" "q1" "\xa5" "caf\xc3\xa9" "\xa6" "@state" "\xa2" "s1"),
            .environment_parameters = V("\xc0"),
        },
    },
};

static const struct ing_msg m_client_kill_job = {
    .type = ING_CLIENT_KILL_JOB,
    .u.ref = {V("job-1")},
};

static const struct ing_msg m_update_envs = {
    .type = ING_BACKEND_UPDATE_ENVIRONMENTS,
    .u.envs = {V("\x82\xa6" "docker" "\x92\xa7" "default" "\xa7" "python3" "\xa3" "mcq" "\x90")},
};

static const struct ing_msg m_backend_job_started = {
    .type = ING_BACKEND_JOB_STARTED,
    .u.ref = {V("job-1")},
};

static const struct ing_msg m_backend_job_done = {
    .type = ING_BACKEND_JOB_DONE,
    .u.result = {
        .job_id = V("job-1"),
        .result_kind = V("success"),
        .result_text = V("Well done"),
        .grade = 100.0,
        .problems = V("\x81\xa2" "q1" "\x92\xa7" "success" "\xa2" "ok"),
        .tests = MP_EMPTY_MAP,
        .custom = MP_EMPTY_MAP,
        .state = V("s2"),
        .archive = V("\x1f\x8b\x08\x00"),
        .stdout_ = V("ok\n"),
        .stderr_ = V(""),
    },
};

static const struct ing_msg m_backend_job_done_nil = {
    .type = ING_BACKEND_JOB_DONE,
    .u.result = {
        .job_id = V("job-2"),
        .result_kind = V("crash"),
        .result_text = V("Agent restarted"),
        .grade = 0.0,
        .problems = MP_EMPTY_MAP,
        .tests = MP_EMPTY_MAP,
        .custom = MP_EMPTY_MAP,
        .state = V(""),
        .archive = NIL,
        .stdout_ = NIL,
        .stderr_ = NIL,
    },
};

static const struct ing_msg m_backend_ssh = {
    .type = ING_BACKEND_JOB_SSH_DEBUG,
    .u.ssh = {V("job-1"), V("10.0.0.5"), 2222, V("worker"), V("s3cr3t")},
};

static const struct ing_msg m_queue_empty = {
    .type = ING_BACKEND_GET_QUEUE,
    .u.queue = {.n_running = 0, .n_waiting = 0},
};

static const struct ing_queue_running q_running[] = {
    {V("job-1"), true, V("agent-1"), V("LINFO1101/hello"), V("frontend"), 1700000000, 30},
};

static const struct ing_queue_waiting q_waiting[] = {
    {V("job-2"), false, V("default"), V(""), -1},
    {V("job-3"), true, V("LINFO1101/hello"), V("cli"), 60},
};

static const struct ing_msg m_queue = {
    .type = ING_BACKEND_GET_QUEUE,
    .u.queue = {.n_running = 1, .n_waiting = 2, .running = q_running, .waiting = q_waiting},
};

static const struct ing_msg m_backend_new_job = {
    .type = ING_BACKEND_NEW_JOB,
    .u.job = {
        .job_id = V("job-1"),
        .course_id = V("LINFO1101"),
        .task_id = V("hello"),
        .environment_type = V("docker"),
        .environment = V("default"),
        .debug = ING_DEBUG_ON,
        .task_problems = MP_TASK_PROBLEMS,
        .inputdata = MP_INPUTDATA,
        .environment_parameters = MP_ENV_PARAMS,
    },
};

static const struct ing_msg m_backend_new_job_nil = {
    .type = ING_BACKEND_NEW_JOB,
    .u.job = {
        .job_id = V("job-2"),
        .course_id = V(""),
        .task_id = NIL,
        .environment_type = V("docker"),
        .environment = V(""),
        .debug = ING_DEBUG_OFF,
        .task_problems = MP_EMPTY_MAP,
        .inputdata = MP_EMPTY_MAP,
        .environment_parameters = MP_EMPTY_MAP,
    },
};

static const struct ing_msg m_backend_kill_job = {
    .type = ING_BACKEND_KILL_JOB,
    .u.kill = {V("job-1"), V("s1")},
};

static const struct ing_msg m_agent_hello = {
    .type = ING_AGENT_HELLO,
    .u.agent_hello = {
        .friendly_name = V("agent-1"),
        .slots = 4,
        .environments = V("\x81\xa6" "docker" "\x81\xa7" "default" "\x82\xa2" "id" "\xa9"
                          "sha256:ab" "\xa7" "created" "\xce\x65\x53\xf1\x00"),
    },
};

static const struct ing_resume_job resume_jobs[] = {{V("job-1"), true}, {V("job-2"), false}};

static const struct ing_msg m_agent_hello_resume = {
    .type = ING_AGENT_HELLO_RESUME,
    .u.agent_resume = {
        .agent_id = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        .hello = {
            .friendly_name = V("agent-1"),
            .slots = 4,
            .environments = V("\x81\xa6" "docker" "\x81\xa7" "default" "\x82\xa2" "id" "\xa9"
                              "sha256:ab" "\xa7" "created" "\xce\x65\x53\xf1\x00"),
        },
        .n_jobs = 2,
        .jobs = resume_jobs,
    },
};

static const struct ing_msg m_agent_job_started = {
    .type = ING_AGENT_JOB_STARTED,
    .u.ref = {V("job-1")},
};

static const struct ing_msg m_agent_job_done = {
    .type = ING_AGENT_JOB_DONE,
    .u.result = {
        .job_id = V("job-1"),
        .result_kind = V("failed"),
        .result_text = V("1 test failed"),
        .grade = 50.0,
        .problems = V("\x81\xa2" "q1" "\x92\xa6" "failed" "\xaa" "expected 2"),
        .tests = MP_EMPTY_MAP,
        .custom = V("\x81\xa1" "n" "\x01"),
        .state = V("s2"),
        .archive = V(""),
        .stdout_ = NIL,
        .stderr_ = V("trace\n"),
    },
};

static const struct ing_msg m_agent_ssh = {
    .type = ING_AGENT_JOB_SSH_DEBUG,
    .u.ssh = {V("job-1"), V("::1"), 22, V("root"), V("")},
};

/* A vector: its title (unique, the bold name in proto.md), the fields in a short line, the
 * bytes, and the expected decode (NULL for the preamble, which is not a frame). */
struct vector {
    const char *title;
    const char *summary;
    const struct vline *lines;
    const struct ing_msg *msg;
};

static const struct vector vectors[] = {
    {"Preamble", "a client's opening, version 1", v_preamble, NULL},
    {"Error (01)", "code 5 MALFORMED, text \"bad frame\"", v_error, &m_error},
    {"Error (01), empty text", "code 65535, text \"\"", v_error_empty, &m_error_empty},
    {"Welcome (02)", "version 1, role client, AUTH, 64 MiB, 1000 ms, nonce, server name",
     v_welcome, &m_welcome},
    {"Auth (03)", "nonce Nc, the real mac of §6 (secret `secret`, role 02, Ns of the Welcome above)",
     v_auth, &m_auth},
    {"AuthOk (04)", "the server's mac for the same secret, role and nonces", v_auth_ok, &m_auth_ok},
    {"Ping (05)", "empty body", v_ping, &m_ping},
    {"Pong (06)", "empty body", v_pong, &m_pong},
    {"Unknown (07)", "empty body", v_unknown, &m_unknown},
    {"ClientHello (10)", "name \"webapp\"", v_client_hello, &m_client_hello},
    {"ClientHello (10), empty name", "name \"\"", v_client_hello_empty, &m_client_hello_empty},
    {"ClientNewJob (11)", "job-1 of LINFO1101/hello on docker/default, from \"frontend\"",
     v_client_new_job, &m_client_new_job},
    {"ClientNewJob (11), nil ids", "priority -1, nil course_id and task_id, debug ssh, UTF-8",
     v_client_new_job_nil, &m_client_new_job_nil},
    {"ClientKillJob (12)", "job_id \"job-1\"", v_client_kill_job, &m_client_kill_job},
    {"ClientGetQueue (13)", "empty body", v_client_get_queue, &m_client_get_queue},
    {"ClientGetStats (14)", "empty body", v_client_get_stats, &m_client_get_stats},
    {"ClientGetJobInfo (15)", "job_id \"job-1\"", v_client_get_job_info, &m_client_get_job_info},
    {"ClientHelloAck (16)", "name \"webapp\", acknowledgements asked (§7.8)", v_client_hello_ack,
     &m_client_hello_ack},
    {"ClientHelloSession (17)", "name \"webapp\", session 00 01 .. 0f (§7.9)",
     v_client_hello_session, &m_client_hello_session},
    {"ClientHelloSession (17), acknowledging",
     "the same, results acknowledged by ClientSessionAck (§7.9)", v_client_hello_session_ack,
     &m_client_hello_session_ack},
    {"ClientSessionAck (18)", "300 results read on this connection (§7.9)",
     v_client_session_ack, &m_client_session_ack},
    {"BackendUpdateEnvironments (20)", "docker: default, python3; mcq: none", v_update_envs,
     &m_update_envs},
    {"BackendJobStarted (21)", "job_id \"job-1\"", v_backend_job_started,
     &m_backend_job_started},
    {"BackendJobDone (22)", "success, grade 100.0, an archive, stdout \"ok\\n\", empty stderr",
     v_backend_job_done, &m_backend_job_done},
    {"BackendJobDone (22), nil fields", "a synthetic crash: nil archive, stdout and stderr",
     v_backend_job_done_nil, &m_backend_job_done_nil},
    {"BackendJobSSHDebug (23)", "job-1 at 10.0.0.5:2222, worker / s3cr3t", v_backend_ssh,
     &m_backend_ssh},
    {"BackendGetQueue (24), empty", "no running job, no waiting job", v_queue_empty,
     &m_queue_empty},
    {"BackendGetQueue (24)", "one running job, two waiting jobs", v_queue, &m_queue},
    {"BackendStats (25)", "a few keys of the stats map (§5.8)", v_backend_stats,
     &m_backend_stats},
    {"BackendJobInfo (26)", "job-1 waits, 2 jobs before it, 2 slots of 2 s: ETA 4 s (§5.9)",
     v_backend_job_info, &m_backend_job_info},
    {"BackendJobAccepted (27)", "job_id \"job-1\" (§7.8)", v_backend_job_accepted,
     &m_backend_job_accepted},
    {"BackendSessionJobs (28)", "the last list: job-1 and job-2 are held (§7.9)",
     v_backend_session_jobs, &m_backend_session_jobs},
    {"BackendNewJob (30)", "the job spec of ClientNewJob (11) with debug on", v_backend_new_job,
     &m_backend_new_job},
    {"BackendNewJob (30), nil task", "empty course_id and environment, nil task_id",
     v_backend_new_job_nil, &m_backend_new_job_nil},
    {"BackendKillJob (31)", "job_id \"job-1\", state \"s1\"", v_backend_kill_job,
     &m_backend_kill_job},
    {"AgentHello (40)", "\"agent-1\", 4 slots, one docker environment", v_agent_hello,
     &m_agent_hello},
    {"AgentJobStarted (41)", "job_id \"job-1\"", v_agent_job_started, &m_agent_job_started},
    {"AgentJobDone (42)", "failed, grade 50.0, empty archive, nil stdout", v_agent_job_done,
     &m_agent_job_done},
    {"AgentJobSSHDebug (43)", "job-1 at ::1:22, root, empty password", v_agent_ssh,
     &m_agent_ssh},
    {"AgentHelloResume (44)", "AgentHello (40) of agent 00..0f, claiming job-1 (started) and "
     "job-2 (§7.10)", v_agent_hello_resume, &m_agent_hello_resume},
};

/* clang-format on */

#define NVEC (sizeof(vectors) / sizeof(vectors[0]))

/* ---- loading the vectors ------------------------------------------------------------- */

#define VMAX 1024 /* bytes of one vector, with room to append a byte */
#define VFMAX 64  /* lines of one vector */

struct vfield {
    enum vkind kind;
    size_t off; /* where the line's bytes start in the vector */
    size_t len; /* how many bytes the line holds */
};

struct vbuf {
    uint8_t b[VMAX];
    size_t n;
    struct vfield f[VFMAX];
    size_t nf;
};

static int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* hex_parse reads blank-separated pairs of hex digits from s[0..len) into out. Returns the
 * byte count, or -1 for anything else or more than cap bytes. */
static long
hex_parse(const char *s, size_t len, uint8_t *out, size_t cap)
{
    size_t i = 0, n = 0;

    while (i < len) {
        if (s[i] == ' ' || s[i] == '\t') {
            i++;
            continue;
        }
        if (len - i < 2 || hexval(s[i]) < 0 || hexval(s[i + 1]) < 0)
            return -1;
        if (len - i > 2 && s[i + 2] != ' ' && s[i + 2] != '\t')
            return -1;
        if (n == cap)
            return -1;
        out[n++] = (uint8_t)(hexval(s[i]) << 4 | hexval(s[i + 1]));
        i += 2;
    }
    return (long)n;
}

static void
vec_load(const struct vector *v, struct vbuf *vb)
{
    const struct vline *l;
    long k;

    vb->n = 0;
    vb->nf = 0;
    for (l = v->lines; l->kind != K_END; l++) {
        k = hex_parse(l->hex, strlen(l->hex), vb->b + vb->n, VMAX - 1 - vb->n);
        if (k < 0 || vb->nf == VFMAX)
            fail_msg("%s: bad vector line \"%s\"", v->title, l->hex);
        vb->f[vb->nf].kind = l->kind;
        vb->f[vb->nf].off = vb->n;
        vb->f[vb->nf].len = (size_t)k;
        vb->nf++;
        vb->n += (size_t)k;
    }
}

/* ---- the guard page: buffers that end right before a PROT_NONE page ------------------ */

struct guard {
    uint8_t *base; /* two pages, the second one PROT_NONE */
    size_t page;
};

static int
guard_setup(void **state)
{
    static struct guard g;
    long ps = sysconf(_SC_PAGESIZE);
    void *p;

    if (ps <= 0)
        return -1;
    g.page = (size_t)ps;
    p = mmap(NULL, 2 * g.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    g.base = p;
    if (mprotect(g.base + g.page, g.page, PROT_NONE) != 0) {
        munmap(g.base, 2 * g.page);
        return -1;
    }
    *state = &g;
    return 0;
}

static int
guard_teardown(void **state)
{
    struct guard *g = *state;

    munmap(g->base, 2 * g->page);
    return 0;
}

/* guard_place copies p[0..n) so that its last byte is the last readable one; returns the
 * copy (valid until the next guard_place). */
static uint8_t *
guard_place(struct guard *g, const uint8_t *p, size_t n)
{
    uint8_t *dst;

    assert_true(n <= g->page);
    dst = g->base + g->page - n;
    if (n > 0)
        memcpy(dst, p, n);
    return dst;
}

static ssize_t
guard_decode(struct guard *g, const uint8_t *p, size_t n, uint32_t max_body, struct ing_msg *m)
{
    return ing_msg_decode(guard_place(g, p, n), n, max_body, m);
}

/* ---- comparing messages -------------------------------------------------------------- */

#define QMAX 64 /* queue entries the tests handle */

struct qarrays {
    struct ing_queue_running r[QMAX];
    struct ing_queue_waiting w[QMAX];
    struct ing_resume_job j[QMAX];
};

/* resume_job_at returns job i of an AgentHelloResume, encoded (array) or decoded (wire). */
static struct ing_resume_job
resume_job_at(const struct ing_agent_hello_resume *r, uint32_t i)
{
    struct ing_resume_job e;
    const uint8_t *pos = r->wire_jobs;

    if (r->jobs != NULL)
        return r->jobs[i];
    for (uint32_t k = 0; k <= i; k++)
        pos = ing_resume_next(pos, &e);
    return e;
}

static void
assert_view_equal(struct ing_view a, struct ing_view b)
{
    if ((a.p == NULL) != (b.p == NULL))
        fail_msg("a view is %s, the other %s", a.p ? "non-nil" : "nil", b.p ? "non-nil" : "nil");
    assert_int_equal(a.len, b.len);
    if (a.len > 0)
        assert_memory_equal(a.p, b.p, a.len);
}

static void
assert_double_equal(double a, double b)
{
    assert_memory_equal(&a, &b, sizeof(a)); /* bit for bit: NaNs and -0.0 included */
}

/* queue_entries copies the entries of q into qa: from the arrays when they are set, else
 * by walking the decoded wire bytes (checking that the running list ends right before the
 * n_waiting field, where wire_waiting points after it). */
static void
queue_entries(const struct ing_get_queue *q, struct qarrays *qa)
{
    const uint8_t *pos;
    uint32_t i;

    assert_true(q->n_running <= QMAX && q->n_waiting <= QMAX);
    if (q->running != NULL || q->waiting != NULL || q->wire_running == NULL) {
        if (q->n_running > 0)
            memcpy(qa->r, q->running, q->n_running * sizeof(qa->r[0]));
        if (q->n_waiting > 0)
            memcpy(qa->w, q->waiting, q->n_waiting * sizeof(qa->w[0]));
        return;
    }
    assert_non_null(q->wire_waiting);
    pos = q->wire_running;
    for (i = 0; i < q->n_running; i++)
        pos = ing_queue_next_running(pos, &qa->r[i]);
    assert_ptr_equal(pos + 4, q->wire_waiting);
    pos = q->wire_waiting;
    for (i = 0; i < q->n_waiting; i++)
        pos = ing_queue_next_waiting(pos, &qa->w[i]);
}

static void
assert_queue_equal(const struct ing_get_queue *a, const struct ing_get_queue *b)
{
    static struct qarrays qa, qb;
    uint32_t i;

    assert_int_equal(a->n_running, b->n_running);
    assert_int_equal(a->n_waiting, b->n_waiting);
    queue_entries(a, &qa);
    queue_entries(b, &qb);
    for (i = 0; i < a->n_running; i++) {
        assert_view_equal(qa.r[i].job_id, qb.r[i].job_id);
        assert_int_equal(qa.r[i].is_current, qb.r[i].is_current);
        assert_view_equal(qa.r[i].agent_name, qb.r[i].agent_name);
        assert_view_equal(qa.r[i].info, qb.r[i].info);
        assert_view_equal(qa.r[i].launcher, qb.r[i].launcher);
        assert_int_equal(qa.r[i].started_at, qb.r[i].started_at);
        assert_int_equal(qa.r[i].max_time, qb.r[i].max_time);
    }
    for (i = 0; i < a->n_waiting; i++) {
        assert_view_equal(qa.w[i].job_id, qb.w[i].job_id);
        assert_int_equal(qa.w[i].is_current, qb.w[i].is_current);
        assert_view_equal(qa.w[i].info, qb.w[i].info);
        assert_view_equal(qa.w[i].launcher, qb.w[i].launcher);
        assert_int_equal(qa.w[i].max_time, qb.w[i].max_time);
    }
}

static void
assert_spec_equal(const struct ing_job_spec *a, const struct ing_job_spec *b)
{
    assert_view_equal(a->job_id, b->job_id);
    assert_view_equal(a->course_id, b->course_id);
    assert_view_equal(a->task_id, b->task_id);
    assert_view_equal(a->environment_type, b->environment_type);
    assert_view_equal(a->environment, b->environment);
    assert_int_equal(a->debug, b->debug);
    assert_view_equal(a->task_problems, b->task_problems);
    assert_view_equal(a->inputdata, b->inputdata);
    assert_view_equal(a->environment_parameters, b->environment_parameters);
}

static void
assert_result_equal(const struct ing_job_result *a, const struct ing_job_result *b)
{
    assert_view_equal(a->job_id, b->job_id);
    assert_view_equal(a->result_kind, b->result_kind);
    assert_view_equal(a->result_text, b->result_text);
    assert_double_equal(a->grade, b->grade);
    assert_view_equal(a->problems, b->problems);
    assert_view_equal(a->tests, b->tests);
    assert_view_equal(a->custom, b->custom);
    assert_view_equal(a->state, b->state);
    assert_view_equal(a->archive, b->archive);
    assert_view_equal(a->stdout_, b->stdout_);
    assert_view_equal(a->stderr_, b->stderr_);
}

/* assert_msg_equal compares every field of two messages of the same type. */
static void
assert_msg_equal(const struct ing_msg *a, const struct ing_msg *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case ING_ERROR:
        assert_int_equal(a->u.error.code, b->u.error.code);
        assert_view_equal(a->u.error.text, b->u.error.text);
        break;
    case ING_WELCOME:
        assert_int_equal(a->u.welcome.version, b->u.welcome.version);
        assert_int_equal(a->u.welcome.role, b->u.welcome.role);
        assert_int_equal(a->u.welcome.flags, b->u.welcome.flags);
        assert_int_equal(a->u.welcome.max_frame, b->u.welcome.max_frame);
        assert_int_equal(a->u.welcome.heartbeat_ms, b->u.welcome.heartbeat_ms);
        assert_memory_equal(a->u.welcome.nonce, b->u.welcome.nonce, ING_NONCE_LEN);
        assert_view_equal(a->u.welcome.server, b->u.welcome.server);
        break;
    case ING_AUTH:
        assert_memory_equal(a->u.auth.nonce, b->u.auth.nonce, ING_NONCE_LEN);
        assert_memory_equal(a->u.auth.mac, b->u.auth.mac, ING_MAC_LEN);
        break;
    case ING_AUTH_OK:
        assert_memory_equal(a->u.auth_ok.mac, b->u.auth_ok.mac, ING_MAC_LEN);
        break;
    case ING_CLIENT_HELLO:
    case ING_CLIENT_HELLO_ACK:
        assert_view_equal(a->u.client_hello.name, b->u.client_hello.name);
        break;
    case ING_CLIENT_HELLO_SESSION:
        assert_view_equal(a->u.client_hello.name, b->u.client_hello.name);
        assert_memory_equal(a->u.client_hello.session, b->u.client_hello.session,
                            ING_SESSION_ID_LEN);
        assert_int_equal(a->u.client_hello.session_flags, b->u.client_hello.session_flags);
        break;
    case ING_CLIENT_SESSION_ACK:
        assert_int_equal(a->u.session_ack.count, b->u.session_ack.count);
        break;
    case ING_BACKEND_SESSION_JOBS:
        assert_int_equal(a->u.session_jobs.last, b->u.session_jobs.last);
        assert_view_equal(a->u.session_jobs.jobs, b->u.session_jobs.jobs);
        break;
    case ING_CLIENT_NEW_JOB:
        assert_int_equal(a->u.new_job.priority, b->u.new_job.priority);
        assert_view_equal(a->u.new_job.launcher, b->u.new_job.launcher);
        assert_spec_equal(&a->u.new_job.job, &b->u.new_job.job);
        break;
    case ING_BACKEND_NEW_JOB:
        assert_spec_equal(&a->u.job, &b->u.job);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_CLIENT_GET_JOB_INFO:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_AGENT_JOB_STARTED:
        assert_view_equal(a->u.ref.job_id, b->u.ref.job_id);
        break;
    case ING_BACKEND_JOB_INFO:
        assert_view_equal(a->u.job_info.job_id, b->u.job_info.job_id);
        assert_view_equal(a->u.job_info.info, b->u.job_info.info);
        break;
    case ING_BACKEND_KILL_JOB:
        assert_view_equal(a->u.kill.job_id, b->u.kill.job_id);
        assert_view_equal(a->u.kill.state, b->u.kill.state);
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        assert_result_equal(&a->u.result, &b->u.result);
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        assert_view_equal(a->u.ssh.job_id, b->u.ssh.job_id);
        assert_view_equal(a->u.ssh.host, b->u.ssh.host);
        assert_int_equal(a->u.ssh.port, b->u.ssh.port);
        assert_view_equal(a->u.ssh.user, b->u.ssh.user);
        assert_view_equal(a->u.ssh.password, b->u.ssh.password);
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        assert_view_equal(a->u.envs.environments, b->u.envs.environments);
        break;
    case ING_AGENT_HELLO:
        assert_view_equal(a->u.agent_hello.friendly_name, b->u.agent_hello.friendly_name);
        assert_int_equal(a->u.agent_hello.slots, b->u.agent_hello.slots);
        assert_view_equal(a->u.agent_hello.environments, b->u.agent_hello.environments);
        break;
    case ING_AGENT_HELLO_RESUME: {
        const struct ing_agent_hello_resume *ra = &a->u.agent_resume, *rb = &b->u.agent_resume;
        assert_memory_equal(ra->agent_id, rb->agent_id, ING_AGENT_ID_LEN);
        assert_view_equal(ra->hello.friendly_name, rb->hello.friendly_name);
        assert_int_equal(ra->hello.slots, rb->hello.slots);
        assert_view_equal(ra->hello.environments, rb->hello.environments);
        assert_int_equal(ra->n_jobs, rb->n_jobs);
        for (uint32_t i = 0; i < ra->n_jobs; i++) {
            struct ing_resume_job ja = resume_job_at(ra, i), jb = resume_job_at(rb, i);
            assert_view_equal(ja.job_id, jb.job_id);
            assert_int_equal(ja.started, jb.started);
        }
        break;
    }
    case ING_BACKEND_GET_QUEUE:
        assert_queue_equal(&a->u.queue, &b->u.queue);
        break;
    case ING_BACKEND_STATS:
        assert_view_equal(a->u.stats.stats, b->u.stats.stats);
        break;
    case ING_PING:
    case ING_PONG:
    case ING_UNKNOWN:
    case ING_CLIENT_GET_QUEUE:
    case ING_CLIENT_GET_STATS:
        break;
    default:
        fail_msg("unexpected type %02x", a->type);
    }
}

/* msg_rearray copies in to out; a decoded BackendGetQueue gets its entries in qa's arrays, so
 * that it can be encoded again. */
static void
msg_rearray(const struct ing_msg *in, struct ing_msg *out, struct qarrays *qa)
{
    *out = *in;
    if (in->type == ING_AGENT_HELLO_RESUME && in->u.agent_resume.jobs == NULL) {
        for (uint32_t i = 0; i < in->u.agent_resume.n_jobs && i < QMAX; i++)
            qa->j[i] = resume_job_at(&in->u.agent_resume, i);
        out->u.agent_resume.jobs = qa->j;
        return;
    }
    if (in->type != ING_BACKEND_GET_QUEUE || in->u.queue.running != NULL ||
        in->u.queue.waiting != NULL)
        return;
    queue_entries(&in->u.queue, qa);
    out->u.queue.running = qa->r;
    out->u.queue.waiting = qa->w;
}

/* The length-prefixed fields of a message (queue entries aside), with their kinds. */
struct fref {
    struct ing_view *v;
    enum vkind kind;
};

#define FMAX 16

static size_t
spec_fields(struct ing_job_spec *j, struct fref *f, size_t n)
{
    f[n++] = (struct fref){&j->job_id, K_STR};
    f[n++] = (struct fref){&j->course_id, K_NSTR};
    f[n++] = (struct fref){&j->task_id, K_NSTR};
    f[n++] = (struct fref){&j->environment_type, K_STR};
    f[n++] = (struct fref){&j->environment, K_STR};
    f[n++] = (struct fref){&j->task_problems, K_MP};
    f[n++] = (struct fref){&j->inputdata, K_MP};
    f[n++] = (struct fref){&j->environment_parameters, K_MP};
    return n;
}

static size_t
msg_fields(struct ing_msg *m, struct fref *f)
{
    size_t n = 0;

    switch (m->type) {
    case ING_ERROR:
        f[n++] = (struct fref){&m->u.error.text, K_STR};
        break;
    case ING_WELCOME:
        f[n++] = (struct fref){&m->u.welcome.server, K_STR};
        break;
    case ING_CLIENT_HELLO:
    case ING_CLIENT_HELLO_ACK:
    case ING_CLIENT_HELLO_SESSION:
        f[n++] = (struct fref){&m->u.client_hello.name, K_STR};
        break;
    case ING_BACKEND_SESSION_JOBS:
        f[n++] = (struct fref){&m->u.session_jobs.jobs, K_MP};
        break;
    case ING_CLIENT_NEW_JOB:
        f[n++] = (struct fref){&m->u.new_job.launcher, K_STR};
        n = spec_fields(&m->u.new_job.job, f, n);
        break;
    case ING_BACKEND_NEW_JOB:
        n = spec_fields(&m->u.job, f, n);
        break;
    case ING_CLIENT_KILL_JOB:
    case ING_CLIENT_GET_JOB_INFO:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_AGENT_JOB_STARTED:
        f[n++] = (struct fref){&m->u.ref.job_id, K_STR};
        break;
    case ING_BACKEND_JOB_INFO:
        f[n++] = (struct fref){&m->u.job_info.job_id, K_STR};
        f[n++] = (struct fref){&m->u.job_info.info, K_MP};
        break;
    case ING_BACKEND_KILL_JOB:
        f[n++] = (struct fref){&m->u.kill.job_id, K_STR};
        f[n++] = (struct fref){&m->u.kill.state, K_STR};
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        f[n++] = (struct fref){&m->u.result.job_id, K_STR};
        f[n++] = (struct fref){&m->u.result.result_kind, K_STR};
        f[n++] = (struct fref){&m->u.result.result_text, K_STR};
        f[n++] = (struct fref){&m->u.result.problems, K_MP};
        f[n++] = (struct fref){&m->u.result.tests, K_MP};
        f[n++] = (struct fref){&m->u.result.custom, K_MP};
        f[n++] = (struct fref){&m->u.result.state, K_STR};
        f[n++] = (struct fref){&m->u.result.archive, K_NBYTES};
        f[n++] = (struct fref){&m->u.result.stdout_, K_NSTR};
        f[n++] = (struct fref){&m->u.result.stderr_, K_NSTR};
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        f[n++] = (struct fref){&m->u.ssh.job_id, K_STR};
        f[n++] = (struct fref){&m->u.ssh.host, K_STR};
        f[n++] = (struct fref){&m->u.ssh.user, K_STR};
        f[n++] = (struct fref){&m->u.ssh.password, K_STR};
        break;
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        f[n++] = (struct fref){&m->u.envs.environments, K_MP};
        break;
    case ING_BACKEND_STATS:
        f[n++] = (struct fref){&m->u.stats.stats, K_MP};
        break;
    case ING_AGENT_HELLO:
        f[n++] = (struct fref){&m->u.agent_hello.friendly_name, K_STR};
        f[n++] = (struct fref){&m->u.agent_hello.environments, K_MP};
        break;
    case ING_AGENT_HELLO_RESUME:
        f[n++] = (struct fref){&m->u.agent_resume.hello.friendly_name, K_STR};
        f[n++] = (struct fref){&m->u.agent_resume.hello.environments, K_MP};
        break;
    default:
        break;
    }
    assert_true(n <= FMAX);
    return n;
}

/* Every version 1 type, in proto.md order. */
/* clang-format off */
static const uint8_t all_types[] = {
    ING_ERROR, ING_WELCOME, ING_AUTH, ING_AUTH_OK, ING_PING, ING_PONG, ING_UNKNOWN,
    ING_CLIENT_HELLO, ING_CLIENT_NEW_JOB, ING_CLIENT_KILL_JOB, ING_CLIENT_GET_QUEUE,
    ING_CLIENT_GET_STATS, ING_CLIENT_GET_JOB_INFO, ING_CLIENT_HELLO_ACK,
    ING_CLIENT_HELLO_SESSION, ING_CLIENT_SESSION_ACK,
    ING_BACKEND_UPDATE_ENVIRONMENTS, ING_BACKEND_JOB_STARTED, ING_BACKEND_JOB_DONE,
    ING_BACKEND_JOB_SSH_DEBUG, ING_BACKEND_GET_QUEUE, ING_BACKEND_STATS, ING_BACKEND_JOB_INFO,
    ING_BACKEND_JOB_ACCEPTED, ING_BACKEND_SESSION_JOBS, ING_BACKEND_NEW_JOB, ING_BACKEND_KILL_JOB,
    ING_AGENT_HELLO, ING_AGENT_JOB_STARTED, ING_AGENT_JOB_DONE, ING_AGENT_JOB_SSH_DEBUG,
    ING_AGENT_HELLO_RESUME,
};
/* clang-format on */

#define NTYPES (sizeof(all_types) / sizeof(all_types[0]))

/* ---- proto.md §10: printing the vectors, and checking the document ------------------- */

#define HEX_COLS 47 /* 16 bytes per row: "xx " * 16 - 1 */

/* print_row prints up to 16 bytes, then "  # comment" when there is one. */
static void
print_row(FILE *out, const uint8_t *b, size_t n, const char *comment)
{
    char row[HEX_COLS + 1];
    size_t i;

    for (i = 0; i < n; i++)
        snprintf(row + 3 * i, sizeof(row) - 3 * i, i + 1 < n ? "%02x " : "%02x", b[i]);
    if (n == 0)
        row[0] = '\0';
    if (comment != NULL)
        fprintf(out, "%-*s  # %s\n", HEX_COLS, row, comment);
    else
        fprintf(out, "%s\n", row);
}

static void
print_line(FILE *out, const struct vline *l)
{
    uint8_t b[VMAX];
    char hdr[96];
    const char *comment = l->comment;
    long n = hex_parse(l->hex, strlen(l->hex), b, sizeof(b));
    size_t i;

    if (n < 0)
        return;
    if (l->kind == K_HDR && n == ING_HDR_LEN) {
        snprintf(hdr, sizeof(hdr), "header: L = %u, %s%s", (unsigned)get_u32be(b),
                 ing_msg_type_name(b[4]), b[5] == 0 ? "" : ", flags not 0");
        comment = hdr;
    }
    if (n <= 16) {
        print_row(out, b, (size_t)n, comment);
        return;
    }
    fprintf(out, "# %s\n", comment);
    for (i = 0; i < (size_t)n; i += 16)
        print_row(out, b + i, (size_t)n - i < 16 ? (size_t)n - i : 16, NULL);
}

/* print_vectors prints what goes between the vectors markers of proto.md. */
static void
print_vectors(FILE *out)
{
    const struct vline *l;
    size_t i;

    fputs("Every frame below is a test vector: `tests/test_proto.c` holds the same bytes\n"
          "and checks that this section matches them exactly, that each decodes to the\n"
          "fields named and that encoding those fields gives the same bytes again. Bytes\n"
          "are hex, one field per line (long ones on several rows); `#` starts a comment.\n"
          "A frame's first line is its 6-byte header (§3). To regenerate the section:\n"
          "`ING_PRINT_VECTORS=1 build/tests/test_proto`.\n",
          out);
    for (i = 0; i < NVEC; i++) {
        fprintf(out, "\n**%s**: %s\n\n```text\n", vectors[i].title, vectors[i].summary);
        for (l = vectors[i].lines; l->kind != K_END; l++)
            print_line(out, l);
        fputs("```\n", out);
    }
}

#define MARK_BEGIN "<!-- vectors:begin -->\n"
#define MARK_END "<!-- vectors:end -->"

/* read_file returns the whole file, NUL-terminated, or NULL. */
static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0, k;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap + 65536);

            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap += 65536;
        }
        k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* A vector as read back from proto.md. */
struct doc_vec {
    char title[128];
    uint8_t b[VMAX];
    size_t n;
};

#define DOC_MAX 64

/* doc_parse reads the vectors of the section s[0..len): a "**title**" line starts one, and
 * the hex before any '#' in the lines of its ``` block are its bytes. Returns the count. */
static size_t
doc_parse(const char *s, size_t len, struct doc_vec *dv, size_t max)
{
    const char *p = s, *end = s + len, *eol, *hash, *close;
    size_t nv = 0;
    bool in_code = false;
    long k;

    while (p < end) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) >= 3 && memcmp(p, "```", 3) == 0) {
            in_code = !in_code;
        } else if (in_code) {
            if (nv == 0)
                fail_msg("proto.md: hex before the first vector title");
            hash = memchr(p, '#', (size_t)(eol - p));
            k = hex_parse(p, (size_t)((hash ? hash : eol) - p), dv[nv - 1].b + dv[nv - 1].n,
                          VMAX - dv[nv - 1].n);
            if (k < 0)
                fail_msg("proto.md: bad hex line \"%.*s\"", (int)(eol - p), p);
            dv[nv - 1].n += (size_t)k;
        } else if ((size_t)(eol - p) > 4 && memcmp(p, "**", 2) == 0) {
            close = strstr(p + 2, "**");
            if (close == NULL || close > eol || nv == max ||
                (size_t)(close - p - 2) >= sizeof(dv[nv].title))
                fail_msg("proto.md: bad vector title \"%.*s\"", (int)(eol - p), p);
            memcpy(dv[nv].title, p + 2, (size_t)(close - p - 2));
            dv[nv].title[close - p - 2] = '\0';
            dv[nv].n = 0;
            nv++;
        }
        p = eol + 1;
    }
    assert_false(in_code);
    return nv;
}

/* The section of proto.md holds exactly the vectors of this file, in order, and is exactly
 * the text ING_PRINT_VECTORS=1 prints. */
static void
test_proto_doc_vectors_match(void **state)
{
    static struct doc_vec dv[DOC_MAX];
    static struct vbuf vb;
    const char *path = getenv("ING_PROTO_MD");
    char *doc, *begin, *end, *gen = NULL;
    size_t len, nv, i, gen_len = 0;
    FILE *mem;

    (void)state;
    if (path == NULL)
        path = "proto.md";
    doc = read_file(path, &len);
    if (doc == NULL) {
        fail_msg("cannot read %s (run from the repository root or set ING_PROTO_MD)", path);
        return;
    }
    begin = strstr(doc, MARK_BEGIN);
    end = begin ? strstr(begin, MARK_END) : NULL;
    if (begin == NULL || end == NULL) {
        free(doc);
        fail_msg("%s: no vectors markers", path);
        return;
    }
    begin += strlen(MARK_BEGIN);

    nv = doc_parse(begin, (size_t)(end - begin), dv, DOC_MAX);
    assert_int_equal(nv, NVEC);
    for (i = 0; i < NVEC; i++) {
        vec_load(&vectors[i], &vb);
        assert_string_equal(dv[i].title, vectors[i].title);
        if (dv[i].n != vb.n || memcmp(dv[i].b, vb.b, vb.n) != 0)
            fail_msg("proto.md vector \"%s\" differs from the test's", vectors[i].title);
    }

    mem = open_memstream(&gen, &gen_len);
    assert_non_null(mem);
    print_vectors(mem);
    fclose(mem);
    if (gen_len != (size_t)(end - begin) || memcmp(gen, begin, gen_len) != 0)
        fail_msg("proto.md §10 is not what ING_PRINT_VECTORS=1 prints: regenerate it");
    free(gen);
    free(doc);
}

/* ---- vectors ------------------------------------------------------------------------- */

/* Each vector decodes to its documented fields, re-encodes byte for byte (from the
 * expected fields and from the decoded ones), and ing_msg_size agrees. */
static void
test_proto_vectors_decode_encode(void **state)
{
    static struct vbuf vb;
    static struct qarrays qa;
    static uint8_t out[VMAX + 16];
    struct guard *g = *state;
    struct ing_msg m, m2;
    const struct vector *v;
    const uint8_t *p;
    uint32_t body;
    size_t i;

    for (i = 0; i < NVEC; i++) {
        v = &vectors[i];
        if (v->msg == NULL)
            continue;
        vec_load(v, &vb);
        p = guard_place(g, vb.b, vb.n);
        memset(&m, 0xa5, sizeof(m));
        if (ing_msg_decode(p, vb.n, ING_MAX_FRAME_DEFAULT, &m) != (ssize_t)vb.n)
            fail_msg("%s: does not decode", v->title);
        assert_msg_equal(v->msg, &m);
        if (m.type == ING_BACKEND_GET_QUEUE) {
            assert_null(m.u.queue.running);
            assert_null(m.u.queue.waiting);
            assert_ptr_equal(m.u.queue.wire_running, p + ING_HDR_LEN + 4);
        }

        assert_int_equal(ing_msg_size(v->msg), vb.n);
        memset(out, 0xee, sizeof(out));
        assert_int_equal(ing_msg_encode(v->msg, out, sizeof(out)), vb.n);
        if (memcmp(out, vb.b, vb.n) != 0)
            fail_msg("%s: encoding the fields gives other bytes", v->title);
        assert_int_equal(out[vb.n], 0xee);

        msg_rearray(&m, &m2, &qa);
        assert_int_equal(ing_msg_size(&m2), vb.n);
        assert_int_equal(ing_msg_encode(&m2, out, vb.n), vb.n);
        assert_memory_equal(out, vb.b, vb.n);

        /* The body length is allowed up to max_body inclusive. */
        body = get_u32be(vb.b);
        assert_int_equal(ing_msg_decode(p, vb.n, body, &m), vb.n);
        if (body > 0)
            assert_int_equal(ing_msg_decode(p, vb.n, body - 1, &m), -EMSGSIZE);

        /* A following frame (pipelining) is not consumed. */
        memcpy(out, vb.b, vb.n);
        memcpy(out + vb.n, "\x00\x00\x00\x00\x05\x00", 6);
        assert_int_equal(ing_msg_decode(out, vb.n + 6, ING_MAX_FRAME_DEFAULT, &m), vb.n);
        assert_msg_equal(v->msg, &m);
    }
}

/* Every strict prefix of a vector is "incomplete", read at the guard page so that a single
 * byte read past the end faults; the whole vector completes. */
static void
test_proto_vectors_prefixes(void **state)
{
    static struct vbuf vb;
    struct guard *g = *state;
    struct ing_msg m;
    size_t i, k;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        for (k = 0; k < vb.n; k++) {
            if (guard_decode(g, vb.b, k, ING_MAX_FRAME_DEFAULT, &m) != 0)
                fail_msg("%s: prefix of %zu bytes not incomplete", vectors[i].title, k);
        }
        assert_int_equal(guard_decode(g, vb.b, vb.n, ING_MAX_FRAME_DEFAULT, &m), vb.n);
        assert_msg_equal(vectors[i].msg, &m);
    }
}

/* msg_job_id is the job id field of a decoded message, or {NULL, 0} for a type without. */
static struct ing_view
msg_job_id(const struct ing_msg *m)
{
    static const struct ing_view none = {NULL, 0};

    switch (m->type) {
    case ING_CLIENT_NEW_JOB:
        return m->u.new_job.job.job_id;
    case ING_CLIENT_KILL_JOB:
    case ING_BACKEND_JOB_STARTED:
    case ING_BACKEND_JOB_ACCEPTED:
    case ING_AGENT_JOB_STARTED:
        return m->u.ref.job_id;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        return m->u.result.job_id;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        return m->u.ssh.job_id;
    case ING_BACKEND_KILL_JOB:
        return m->u.kill.job_id;
    default:
        return none;
    }
}

/* ing_frame_job_id on every vector (ending at a guard page): no answer before the last
 * byte; then the frame's size and type, and the very bytes the decoder takes as the job id
 * (none for a type without). Then frames whose length fields lie: no id, nothing read past
 * the frame. */
static void
test_proto_frame_job_id(void **state)
{
    static struct vbuf vb;
    struct guard *g = *state;
    struct ing_msg m;
    struct ing_view id, want;
    uint8_t type, *p, f[64];
    size_t i, k, nid = 0;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        for (k = 0; k < vb.n; k++)
            if (ing_frame_job_id(guard_place(g, vb.b, k), k, &type, &id) != 0)
                fail_msg("%s: an answer from a prefix of %zu bytes", vectors[i].title, k);
        p = guard_place(g, vb.b, vb.n);
        assert_int_equal(ing_msg_decode(p, vb.n, ING_MAX_FRAME_DEFAULT, &m), vb.n);
        assert_int_equal(ing_frame_job_id(p, vb.n, &type, &id), vb.n);
        assert_int_equal(type, m.type);
        want = msg_job_id(&m);
        assert_ptr_equal(id.p, want.p);
        assert_int_equal(id.len, want.len);
        nid += id.p != NULL;
    }
    assert_true(nid >= 5); /* the vectors hold frames of several id-carrying types */

    /* ClientNewJob: body shorter than priority + launcher length; launcher length over the
     * body; job id length over the rest. Each is the whole frame: complete, no id. */
    memset(f, 0, sizeof(f));
    ing_frame_header(f, ING_CLIENT_NEW_JOB, 11);
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 17), 17, &type, &id), 17);
    assert_null(id.p);
    ing_frame_header(f, ING_CLIENT_NEW_JOB, 20);
    put_u32be(f + ING_HDR_LEN + 8, 0xffffffffu);
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 26), 26, &type, &id), 26);
    assert_null(id.p);
    put_u32be(f + ING_HDR_LEN + 8, 2);  /* launcher of 2 bytes */
    put_u32be(f + ING_HDR_LEN + 14, 3); /* id of 3 bytes: 18 + 3 > 20 */
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 26), 26, &type, &id), 26);
    assert_null(id.p);
    put_u32be(f + ING_HDR_LEN + 14, 2); /* id of 2 bytes: fits exactly */
    memcpy(f + ING_HDR_LEN + 18, "ab", 2);
    p = guard_place(g, f, 26);
    assert_int_equal(ing_frame_job_id(p, 26, &type, &id), 26);
    assert_ptr_equal(id.p, p + ING_HDR_LEN + 18);
    assert_int_equal(id.len, 2);
    /* An id-first type: body under 4 bytes; id length over the body; empty id. */
    ing_frame_header(f, ING_AGENT_JOB_DONE, 3);
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 9), 9, &type, &id), 9);
    assert_null(id.p);
    ing_frame_header(f, ING_CLIENT_KILL_JOB, 5);
    put_u32be(f + ING_HDR_LEN, 2);
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 11), 11, &type, &id), 11);
    assert_null(id.p);
    ing_frame_header(f, ING_AGENT_JOB_STARTED, 4);
    put_u32be(f + ING_HDR_LEN, 0);
    p = guard_place(g, f, 10);
    assert_int_equal(ing_frame_job_id(p, 10, &type, &id), 10);
    assert_ptr_equal(id.p, p + 10);
    assert_int_equal(id.len, 0);
    /* A huge announced body: incomplete, whatever the bytes present. */
    ing_frame_header(f, ING_CLIENT_KILL_JOB, UINT32_MAX);
    assert_int_equal(ing_frame_job_id(guard_place(g, f, 64), 64, &type, &id), 0);
}

/* All the vectors, fed one byte at a time into a stream buffer (each step a fresh heap
 * copy of exactly the bytes received, for ASan): each frame completes exactly when its last
 * byte arrives, in order. */
static void
test_proto_vectors_byte_at_a_time(void **state)
{
    static struct vbuf vb;
    static uint8_t stream[NVEC * VMAX];
    size_t ends[NVEC], nframes = 0, total = 0, got = 0, consumed = 0, fed, i;
    const struct ing_msg *want[NVEC];
    struct ing_msg m;
    uint8_t *copy;
    ssize_t rc;

    (void)state;
    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        memcpy(stream + total, vb.b, vb.n);
        total += vb.n;
        ends[nframes] = total;
        want[nframes++] = vectors[i].msg;
    }
    for (fed = 1; fed <= total; fed++) {
        copy = malloc(fed - consumed);
        assert_non_null(copy);
        memcpy(copy, stream + consumed, fed - consumed);
        rc = ing_msg_decode(copy, fed - consumed, ING_MAX_FRAME_DEFAULT, &m);
        if (fed == ends[got]) {
            assert_int_equal(rc, fed - consumed);
            assert_msg_equal(want[got], &m);
            consumed = fed;
            got++;
        } else if (rc != 0) {
            fail_msg("frame %zu completed early (%zd after %zu bytes)", got, rc, fed);
        }
        free(copy);
    }
    assert_int_equal(got, nframes);
}

/* ---- corruptions --------------------------------------------------------------------- */

static bool
is_length_kind(enum vkind k)
{
    return k == K_HDR || k == K_STR || k == K_NSTR || k == K_NBYTES || k == K_MP || k == K_COUNT;
}

/* Every length field of every vector incremented, decremented, set to 0 and to 0xFFFFFFFF:
 * rejected, never an over-read (guard page). The only mutations that stay valid are the
 * nil <-> empty ones of nstr/nbytes (0xFFFFFFFF + 1 wraps to 0), which must decode to the
 * mutated bytes. */
static void
test_proto_corrupt_lengths(void **state)
{
    static struct vbuf vb;
    static struct qarrays qa;
    static uint8_t buf[VMAX], out[VMAX];
    struct guard *g = *state;
    struct ing_msg m, m2;
    const struct vfield *f;
    uint32_t orig, nv, muts[4];
    size_t i, j, k;
    ssize_t rc, want;
    bool nullable;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        for (j = 0; j < vb.nf; j++) {
            f = &vb.f[j];
            if (!is_length_kind(f->kind))
                continue;
            orig = get_u32be(vb.b + f->off);
            muts[0] = orig + 1;
            muts[1] = orig - 1;
            muts[2] = 0;
            muts[3] = UINT32_MAX;
            for (k = 0; k < 4; k++) {
                nv = muts[k];
                if (nv == orig)
                    continue;
                memcpy(buf, vb.b, vb.n);
                put_u32be(buf + f->off, nv);
                rc = guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m);
                if (f->kind == K_HDR) {
                    want = nv > ING_MAX_FRAME_DEFAULT ? -EMSGSIZE : nv > orig ? 0 : -EPROTO;
                } else {
                    nullable = f->kind == K_NSTR || f->kind == K_NBYTES;
                    want = -EPROTO;
                    if (nullable &&
                        ((orig == UINT32_MAX && nv == 0) || (orig == 0 && nv == UINT32_MAX)))
                        want = (ssize_t)vb.n;
                }
                if (rc != want)
                    fail_msg("%s: line %zu length %08x -> %08x: got %zd want %zd", vectors[i].title,
                             j, (unsigned)orig, (unsigned)nv, rc, want);
                if (rc > 0) {
                    msg_rearray(&m, &m2, &qa);
                    assert_int_equal(ing_msg_encode(&m2, out, sizeof(out)), vb.n);
                    assert_memory_equal(out, buf, vb.n);
                }
                if (f->kind == K_HDR && nv == orig + 1) {
                    /* With the byte present, it is a trailing byte. */
                    buf[vb.n] = 0;
                    rc = guard_decode(g, buf, vb.n + 1, ING_MAX_FRAME_DEFAULT, &m);
                    if (rc != -EPROTO)
                        fail_msg("%s: trailing byte accepted (%zd)", vectors[i].title, rc);
                }
            }
        }
    }
}

/* The header: every type byte, every flags value, the length limit and the order of the
 * checks (length, then flags, then type, then completeness). */
static void
test_proto_corrupt_header(void **state)
{
    static struct vbuf vb;
    static uint8_t buf[8192];
    struct guard *g = *state;
    struct ing_msg m;
    const uint32_t maxes[] = {1, 2, ING_MAX_FRAME_MIN, ING_MAX_FRAME_DEFAULT, UINT32_MAX - 1};
    size_t i, known = 0;
    unsigned t, fl;
    ssize_t rc;

    for (t = 0; t < 256; t++) {
        ing_frame_header(buf, (uint8_t)t, 0);
        rc = guard_decode(g, buf, ING_HDR_LEN, ING_MAX_FRAME_DEFAULT, &m);
        if (strcmp(ing_msg_type_name((uint8_t)t), "?") == 0) {
            assert_int_equal(rc, -ENOMSG);
            /* Known as unknown from the header alone, whatever the length. */
            put_u32be(buf, 1000);
            assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, 1000, &m), -ENOMSG);
            continue;
        }
        known++;
        if (t == ING_PING || t == ING_PONG || t == ING_UNKNOWN || t == ING_CLIENT_GET_QUEUE ||
            t == ING_CLIENT_GET_STATS) {
            assert_int_equal(rc, ING_HDR_LEN);
            assert_int_equal(m.type, t);
            /* An empty-body type with a body. */
            put_u32be(buf, 1);
            buf[ING_HDR_LEN] = 0;
            assert_int_equal(guard_decode(g, buf, ING_HDR_LEN + 1, 100, &m), -EPROTO);
        } else {
            assert_int_equal(rc, -EPROTO); /* every other type has fields */
        }
    }
    assert_int_equal(known, NTYPES);

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        memcpy(buf, vb.b, vb.n);
        for (fl = 1; fl < 256; fl++) {
            buf[5] = (uint8_t)fl;
            assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m), -EPROTO);
            /* As soon as the header is there. */
            assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, ING_MAX_FRAME_DEFAULT, &m), -EPROTO);
        }
    }

    /* Fewer than 6 bytes are always "incomplete", whatever they hold. */
    memset(buf, 0xff, 8);
    for (i = 0; i < ING_HDR_LEN; i++)
        assert_int_equal(guard_decode(g, buf, i, 0, &m), 0);

    /* Length limit: max_body is accepted, max_body + 1 refused with only the header. */
    for (i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
        ing_frame_header(buf, ING_CLIENT_HELLO, maxes[i]);
        assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, maxes[i], &m), 0);
        ing_frame_header(buf, ING_CLIENT_HELLO, maxes[i] + 1);
        assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, maxes[i], &m), -EMSGSIZE);
        /* The length is judged before the flags and the type. */
        buf[4] = 0xee;
        buf[5] = 0x01;
        assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, maxes[i], &m), -EMSGSIZE);
    }
    ing_frame_header(buf, ING_CLIENT_HELLO, 1);
    assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, 0, &m), -EMSGSIZE);
    ing_frame_header(buf, ING_CLIENT_HELLO, UINT32_MAX);
    assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, UINT32_MAX, &m), 0);
    assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, ING_MAX_FRAME_DEFAULT, &m), -EMSGSIZE);
    /* Flags are judged before the type. */
    ing_frame_header(buf, 0xee, 0);
    buf[5] = 1;
    assert_int_equal(guard_decode(g, buf, ING_HDR_LEN, 10, &m), -EPROTO);

    /* A whole frame of exactly max_body bytes, and the same one with max_body - 1. */
    ing_frame_header(buf, ING_CLIENT_HELLO, ING_MAX_FRAME_MIN);
    put_u32be(buf + ING_HDR_LEN, ING_MAX_FRAME_MIN - 4);
    memset(buf + ING_HDR_LEN + 4, 'x', ING_MAX_FRAME_MIN - 4);
    assert_int_equal(ing_msg_decode(buf, ING_HDR_LEN + ING_MAX_FRAME_MIN, ING_MAX_FRAME_MIN, &m),
                     ING_HDR_LEN + ING_MAX_FRAME_MIN);
    assert_int_equal(m.u.client_hello.name.len, ING_MAX_FRAME_MIN - 4);
    assert_int_equal(
        ing_msg_decode(buf, ING_HDR_LEN + ING_MAX_FRAME_MIN, ING_MAX_FRAME_MIN - 1, &m), -EMSGSIZE);
}

/* Values inside fields: bools, debug, UTF-8 of every str line, the msgpack of every mp line,
 * bytes of nbytes (anything goes). */
static void
test_proto_corrupt_values(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        bool at_end; /* placed at the end of the string rather than the start */
    } bad_utf8[] = {
        {"\xff", 1, false},
        {"\xfe", 1, true},
        {"\x80", 1, false},             /* stray continuation byte */
        {"\xc0\x80", 2, false},         /* overlong NUL */
        {"\xc1\xbf", 2, false},         /* overlong */
        {"\xe0\x80\xaf", 3, false},     /* overlong '/' */
        {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, false}, /* above U+10FFFF */
        {"\xe2\x82", 2, true},          /* truncated at the end */
        {"\xc3", 1, true},              /* truncated at the end */
    };
    static struct vbuf vb;
    static uint8_t buf[VMAX];
    struct guard *g = *state;
    struct ing_msg m;
    const struct vfield *f;
    const uint8_t *pl;
    size_t i, j, k, plen, at;
    unsigned b;
    ssize_t rc;
    int nstr = 0, nmp = 0, nbool = 0, ndebug = 0;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        for (j = 0; j < vb.nf; j++) {
            f = &vb.f[j];
            memcpy(buf, vb.b, vb.n);
            if (f->kind == K_BOOL || f->kind == K_DEBUG) {
                unsigned top = f->kind == K_BOOL ? 1 : 2;

                for (b = 0; b < 256; b++) {
                    buf[f->off] = (uint8_t)b;
                    rc = guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m);
                    if (rc != (b <= top ? (ssize_t)vb.n : -EPROTO))
                        fail_msg("%s: line %zu value %u: %zd", vectors[i].title, j, b, rc);
                }
                if (f->kind == K_BOOL)
                    nbool++;
                else
                    ndebug++;
                continue;
            }
            if (f->kind != K_STR && f->kind != K_NSTR && f->kind != K_NBYTES && f->kind != K_MP)
                continue;
            plen = get_u32be(vb.b + f->off);
            if (plen == UINT32_MAX || plen == 0)
                continue;
            pl = vb.b + f->off + 4;
            if (f->kind == K_NBYTES) {
                buf[f->off + 4] = 0xff; /* arbitrary bytes are fine */
                assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m), vb.n);
                continue;
            }
            if (f->kind == K_MP) {
                static const uint8_t bad_first[] = {0xc1, 0xd4, 0xd5, 0xd6, 0xd7,
                                                    0xd8, 0xc7, 0xc8, 0xc9};

                for (k = 0; k < sizeof(bad_first); k++) {
                    buf[f->off + 4] = bad_first[k];
                    rc = guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m);
                    if (rc != -EPROTO)
                        fail_msg("%s: line %zu mp byte %02x: %zd", vectors[i].title, j,
                                 bad_first[k], rc);
                }
                if (plen > 1) {
                    buf[f->off + 4] = 0xc0; /* nil then the rest: trailing bytes in the field */
                    assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m),
                                     -EPROTO);
                }
                if ((pl[0] & 0xf0) == 0x80 && (pl[0] & 0x0f) < 15) {
                    buf[f->off + 4] = (uint8_t)(pl[0] + 1); /* one more pair than present */
                    assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m),
                                     -EPROTO);
                }
                if ((pl[0] & 0xf0) == 0x80 && (pl[0] & 0x0f) > 0) {
                    buf[f->off + 4] = (uint8_t)(pl[0] - 1); /* one pair left over */
                    assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m),
                                     -EPROTO);
                }
                nmp++;
                continue;
            }
            for (k = 0; k < sizeof(bad_utf8) / sizeof(bad_utf8[0]); k++) {
                if (bad_utf8[k].len > plen)
                    continue;
                memcpy(buf, vb.b, vb.n);
                at = bad_utf8[k].at_end ? plen - bad_utf8[k].len : 0;
                memcpy(buf + f->off + 4 + at, bad_utf8[k].bytes, bad_utf8[k].len);
                rc = guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m);
                if (rc != -EPROTO)
                    fail_msg("%s: line %zu bad UTF-8 #%zu accepted: %zd", vectors[i].title, j, k,
                             rc);
            }
            /* NUL bytes are valid UTF-8 and allowed. */
            memcpy(buf, vb.b, vb.n);
            buf[f->off + 4] = 0;
            assert_int_equal(guard_decode(g, buf, vb.n, ING_MAX_FRAME_DEFAULT, &m), vb.n);
            nstr++;
        }
    }
    assert_true(nstr > 50);
    assert_true(nmp > 20);
    assert_int_equal(nbool, 6); /* 3 in the queue, 1 in BackendSessionJobs, 2 in AgentHelloResume */
    assert_int_equal(ndebug, 4);
}

/* Every str field of every message type refuses bad UTF-8 and every mp field refuses bad
 * msgpack (built with the encoder, which does not judge contents). */
static void
test_proto_corrupt_fields_by_type(void **state)
{
    /* clang-format off */
    static const struct ing_view bad_str[] = {
        V("\xff"), V("ok\xc3"), V("\xed\xbf\xbf"), V("\xf8\x88\x80\x80\x80"), V("a\xe0\x9f\x80"),
        V("\x80"), V("\0\x80"), V("\xc2"),
    };
    static const struct ing_view good_str[] = {
        V("caf\xc3\xa9"), V("\xe2\x82\xac"), V("\xf0\x9f\x98\x80"), V("\xf4\x8f\xbf\xbf"),
        V("a\0b"), V("\xef\xbf\xbf"),
    };
    static const struct ing_view bad_mp[] = {
        V("\xc1"),                           /* never used */
        V("\xd4\x01\x00"),                   /* fixext 1 */
        V("\xc7\x01\x05\x00"),               /* ext 8 */
        V("\xd6\xff\x00\x00\x00\x00"),       /* timestamp 32 */
        V("\x81\xa1" "a"),                   /* map missing its value */
        V("\x80\x80"),                       /* two values */
        V("\x81\xa1\xff\x01"),               /* key with bad UTF-8 */
        V("\x81\xa1" "a" "\xa2\xc3\x28"),    /* value with bad UTF-8 */
        V("\x91\xd9\x01\xed"),               /* str8 with bad UTF-8 */
        V("\xdb\xff\xff\xff\xff" "a"),       /* str32 longer than the field */
        V("\xdd\x00\x01\x00\x00"),           /* array32 of 65536 with nothing */
        V("\xcb\x00\x00"),                   /* truncated float64 */
    };
    static const struct ing_view good_mp[] = {
        V("\xc0"), V("\x7f"), V("\xe0"), V("\xcb\x40\x59\x00\x00\x00\x00\x00\x00"),
        V("\xca\x3f\x80\x00\x00"), V("\xc4\x02\xff\x00"), V("\x92\xc2\xc3"),
        V("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), V("\xa3" "\xe2\x82\xac"),
        V("\x81\x01\x02"), /* int key: well formed, the backend judges maps */
    };
    /* clang-format on */
    static uint8_t depth[80];
    static uint8_t out[4096];
    struct guard *g = *state;
    struct ing_msg m, d;
    struct fref f[FMAX], fd[FMAX];
    size_t i, j, k, nf;
    ssize_t n;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        m = *vectors[i].msg;
        nf = msg_fields(&m, f);
        for (j = 0; j < nf; j++) {
            struct ing_view keep = *f[j].v;
            const struct ing_view *bad = f[j].kind == K_MP ? bad_mp : bad_str;
            const struct ing_view *good = f[j].kind == K_MP ? good_mp : good_str;
            size_t nbad = f[j].kind == K_MP ? sizeof(bad_mp) / sizeof(bad_mp[0])
                                            : sizeof(bad_str) / sizeof(bad_str[0]);
            size_t ngood = f[j].kind == K_MP ? sizeof(good_mp) / sizeof(good_mp[0])
                                             : sizeof(good_str) / sizeof(good_str[0]);

            if (f[j].kind == K_NBYTES)
                continue;
            for (k = 0; k < nbad; k++) {
                *f[j].v = bad[k];
                n = ing_msg_encode(&m, out, sizeof(out));
                assert_true(n > 0);
                if (guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d) != -EPROTO)
                    fail_msg("%s: field %zu accepts bad value #%zu", vectors[i].title, j, k);
            }
            for (k = 0; k < ngood; k++) {
                *f[j].v = good[k];
                n = ing_msg_encode(&m, out, sizeof(out));
                assert_true(n > 0);
                if (guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d) != n)
                    fail_msg("%s: field %zu refuses good value #%zu", vectors[i].title, j, k);
                msg_fields(&d, fd);
                assert_view_equal(*fd[j].v, good[k]);
            }
            *f[j].v = keep;
        }
    }

    /* Nesting: 64 levels are allowed, 65 are not. */
    m = m_client_new_job;
    memset(depth, 0x91, sizeof(depth));
    for (k = 63; k <= 66; k++) {
        depth[k] = 0x90; /* k one-element arrays around an empty one: depth k + 1 */
        m.u.new_job.job.inputdata.p = (const char *)depth;
        m.u.new_job.job.inputdata.len = (uint32_t)(k + 1);
        n = ing_msg_encode(&m, out, sizeof(out));
        assert_true(n > 0);
        assert_int_equal(guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d),
                         k + 1 <= ING_MP_MAX_DEPTH ? n : -EPROTO);
        depth[k] = 0x91;
    }
}

/* ---- random round trips -------------------------------------------------------------- */

static uint64_t rnd_state;

/* rnd: splitmix64, deterministic from the seed. */
static uint64_t
rnd(void)
{
    uint64_t z = (rnd_state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint32_t
rnd_below(uint32_t n)
{
    return (uint32_t)(rnd() % n);
}

static int64_t
rnd_i64(void)
{
    uint64_t u = rnd() >> rnd_below(64);
    int64_t v;

    if (rnd() & 1)
        u = ~u;
    memcpy(&v, &u, sizeof(v));
    return v;
}

#define ARENA_MAX (4u << 20)

static uint8_t arena[ARENA_MAX];
static size_t arena_used;

static uint8_t *
arena_alloc(size_t n)
{
    uint8_t *p = arena + arena_used;

    assert_true(n <= ARENA_MAX - arena_used);
    arena_used += n;
    return p;
}

/* rand_utf8 fills out[0..len) with valid UTF-8: ASCII (NUL included) and 2-, 3- and 4-byte
 * sequences over their whole ranges, surrogates excepted. */
static void
rand_utf8(uint8_t *out, size_t len)
{
    size_t i = 0, w;
    uint32_t cp;

    while (i < len) {
        uint32_t r = rnd_below(16);

        w = r < 10 ? 1 : r < 12 ? 2 : r < 15 ? 3 : 4;
        if (w > len - i)
            w = len - i;
        switch (w) {
        case 1:
            out[i] = (uint8_t)rnd_below(0x80);
            break;
        case 2:
            cp = 0x80 + rnd_below(0x800 - 0x80);
            out[i] = (uint8_t)(0xc0 | cp >> 6);
            out[i + 1] = (uint8_t)(0x80 | (cp & 0x3f));
            break;
        case 3:
            cp = 0x800 + rnd_below(0x10000 - 0x800 - 0x800);
            if (cp >= 0xd800)
                cp += 0x800; /* skip the surrogates */
            out[i] = (uint8_t)(0xe0 | cp >> 12);
            out[i + 1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            out[i + 2] = (uint8_t)(0x80 | (cp & 0x3f));
            break;
        default:
            cp = 0x10000 + rnd_below(0x110000 - 0x10000);
            out[i] = (uint8_t)(0xf0 | cp >> 18);
            out[i + 1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            out[i + 2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            out[i + 3] = (uint8_t)(0x80 | (cp & 0x3f));
            break;
        }
        i += w;
    }
}

/* Shapes of the random messages. */
enum rmode {
    RM_EMPTY, /* every str empty, nullable fields empty (not nil), minimal mp values */
    RM_NIL,   /* every nullable field nil */
    RM_BIG,   /* large fields (str16/str32 and map16 inside mp) */
    RM_MIXED, /* a bit of everything */
};

static size_t
rand_len(enum rmode mode)
{
    uint32_t r = rnd_below(100);

    switch (mode) {
    case RM_EMPTY:
        return 0;
    case RM_BIG:
        return 4096 + rnd_below(70000);
    default:
        return r < 15 ? 0 : r < 70 ? 1 + rnd_below(16) : r < 95 ? rnd_below(300) : rnd_below(5000);
    }
}

static struct ing_view
rand_str(enum vkind kind, enum rmode mode)
{
    bool nullable = kind == K_NSTR || kind == K_NBYTES;
    struct ing_view v = {NULL, 0};
    size_t len, i;
    uint8_t *p;

    if (nullable && (mode == RM_NIL || (mode == RM_MIXED && rnd_below(6) == 0)))
        return v;
    len = rand_len(mode);
    p = arena_alloc(len);
    if (kind == K_NBYTES) {
        for (i = 0; i < len; i++)
            p[i] = (uint8_t)rnd();
    } else {
        rand_utf8(p, len);
    }
    v.p = (const char *)p;
    v.len = (uint32_t)len;
    return v;
}

static void
rand_mp_str(struct ing_mp_writer *w, size_t len)
{
    static uint8_t tmp[80000];

    assert_true(len <= sizeof(tmp));
    rand_utf8(tmp, len);
    ing_mp_put_str_header(w, (uint32_t)len);
    ing_mp_put_raw(w, tmp, len);
}

/* rand_mp_value writes one random msgpack value, nested at most 4 deep. */
static void
rand_mp_value(struct ing_mp_writer *w, int depth)
{
    uint8_t bin[64];
    uint32_t i, n;
    double d;

    switch (rnd_below(depth >= 4 ? 8 : 11)) {
    case 0:
        ing_mp_put_nil(w);
        break;
    case 1:
        ing_mp_put_bool(w, rnd() & 1);
        break;
    case 2:
        ing_mp_put_int(w, rnd_i64());
        break;
    case 3:
        ing_mp_put_uint(w, rnd());
        break;
    case 4:
        d = (double)rnd_i64() / 7.0;
        ing_mp_put_double(w, d);
        break;
    case 5:
    case 6:
        rand_mp_str(w, rnd_below(8) == 0 ? rnd_below(400) : rnd_below(40));
        break;
    case 7:
        n = rnd_below(sizeof(bin));
        for (i = 0; i < n; i++)
            bin[i] = (uint8_t)rnd();
        ing_mp_put_bin(w, bin, n);
        break;
    case 8:
        n = rnd_below(6);
        ing_mp_put_array(w, n);
        for (i = 0; i < n; i++)
            rand_mp_value(w, depth + 1);
        break;
    default:
        n = rnd_below(6);
        ing_mp_put_map(w, n);
        for (i = 0; i < n; i++) {
            rand_mp_str(w, rnd_below(12));
            rand_mp_value(w, depth + 1);
        }
        break;
    }
}

static struct ing_view
rand_mp(enum rmode mode)
{
    struct ing_mp_writer w;
    struct ing_view v;
    uint32_t i, n;

    ing_mp_writer_init(&w, arena + arena_used, ARENA_MAX - arena_used);
    if (mode == RM_EMPTY) {
        ing_mp_put_raw(&w, rnd() & 1 ? "\x80" : "\xc0", 1);
    } else if (mode == RM_BIG) {
        n = 16 + rnd_below(8); /* map16 */
        ing_mp_put_map(&w, n);
        for (i = 0; i < n; i++) {
            rand_mp_str(&w, 1 + rnd_below(20));
            if (i == 0)
                rand_mp_str(&w, 66000 + rnd_below(4000)); /* str32 */
            else
                rand_mp_value(&w, 1);
        }
    } else {
        rand_mp_value(&w, 0);
    }
    assert_int_equal(w.err, 0);
    v.p = (const char *)arena_alloc(w.len);
    v.len = (uint32_t)w.len;
    return v;
}

static void
rand_bytes(uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* rand_msg fills m with a random message of the given type; queue entries go in qa. */
static void
rand_msg(struct ing_msg *m, uint8_t type, enum rmode mode, struct qarrays *qa)
{
    struct fref f[FMAX];
    uint64_t bits;
    size_t nf, i;
    uint32_t max;

    memset(m, 0, sizeof(*m));
    m->type = type;
    switch (type) {
    case ING_ERROR:
        m->u.error.code = (uint16_t)rnd();
        break;
    case ING_WELCOME:
        m->u.welcome.version = (uint8_t)rnd();
        m->u.welcome.role = (uint8_t)rnd();
        m->u.welcome.flags = (uint16_t)rnd();
        m->u.welcome.max_frame = (uint32_t)rnd();
        m->u.welcome.heartbeat_ms = (uint32_t)rnd();
        rand_bytes(m->u.welcome.nonce, ING_NONCE_LEN);
        break;
    case ING_AUTH:
        rand_bytes(m->u.auth.nonce, ING_NONCE_LEN);
        rand_bytes(m->u.auth.mac, ING_MAC_LEN);
        break;
    case ING_AUTH_OK:
        rand_bytes(m->u.auth_ok.mac, ING_MAC_LEN);
        break;
    case ING_CLIENT_NEW_JOB:
        m->u.new_job.priority = rnd_i64();
        m->u.new_job.job.debug = (uint8_t)rnd_below(3);
        break;
    case ING_BACKEND_NEW_JOB:
        m->u.job.debug = (uint8_t)rnd_below(3);
        break;
    case ING_BACKEND_JOB_DONE:
    case ING_AGENT_JOB_DONE:
        bits = rnd(); /* any bit pattern, NaNs included, goes through unchanged */
        memcpy(&m->u.result.grade, &bits, sizeof(bits));
        break;
    case ING_BACKEND_JOB_SSH_DEBUG:
    case ING_AGENT_JOB_SSH_DEBUG:
        m->u.ssh.port = (uint32_t)rnd();
        break;
    case ING_AGENT_HELLO:
        m->u.agent_hello.slots = (uint32_t)rnd();
        break;
    case ING_AGENT_HELLO_RESUME:
        rand_bytes(m->u.agent_resume.agent_id, ING_AGENT_ID_LEN);
        m->u.agent_resume.hello.slots = (uint32_t)rnd();
        m->u.agent_resume.n_jobs = rnd_below(mode == RM_EMPTY ? 9 : mode == RM_BIG ? 4 : QMAX);
        for (i = 0; i < m->u.agent_resume.n_jobs; i++) {
            qa->j[i].job_id = rand_str(K_STR, mode);
            qa->j[i].started = rnd() & 1;
        }
        m->u.agent_resume.jobs = qa->j;
        break;
    case ING_BACKEND_GET_QUEUE:
        max = mode == RM_EMPTY ? 9 : mode == RM_BIG ? 4 : QMAX;
        m->u.queue.n_running = rnd_below(max);
        m->u.queue.n_waiting = rnd_below(max);
        for (i = 0; i < m->u.queue.n_running; i++) {
            qa->r[i].job_id = rand_str(K_STR, mode);
            qa->r[i].is_current = rnd() & 1;
            qa->r[i].agent_name = rand_str(K_STR, mode);
            qa->r[i].info = rand_str(K_STR, mode);
            qa->r[i].launcher = rand_str(K_STR, mode);
            qa->r[i].started_at = rnd_i64();
            qa->r[i].max_time = rnd_i64();
        }
        for (i = 0; i < m->u.queue.n_waiting; i++) {
            qa->w[i].job_id = rand_str(K_STR, mode);
            qa->w[i].is_current = rnd() & 1;
            qa->w[i].info = rand_str(K_STR, mode);
            qa->w[i].launcher = rand_str(K_STR, mode);
            qa->w[i].max_time = rnd_i64();
        }
        m->u.queue.running = qa->r;
        m->u.queue.waiting = qa->w;
        break;
    default:
        break;
    }
    nf = msg_fields(m, f);
    for (i = 0; i < nf; i++)
        *f[i].v = f[i].kind == K_MP ? rand_mp(mode) : rand_str(f[i].kind, mode);
}

#define ENC_MAX (4u << 20)
#define ROUND_TRIPS 4000

/* Random messages of every type: encode, size, decode, compare, encode again. */
static void
test_proto_round_trip_random(void **state)
{
    static uint8_t out[ENC_MAX], out2[ENC_MAX];
    static struct qarrays qa, qa2;
    struct ing_msg m, d, d2;
    enum rmode mode;
    size_t size;
    uint32_t iter;
    uint8_t type;
    ssize_t n;

    (void)state;
    rnd_state = UINT64_C(0x1e51ca7ed0c0ffee);
    for (iter = 0; iter < ROUND_TRIPS; iter++) {
        type = all_types[iter % NTYPES];
        switch ((iter / NTYPES) % 10) {
        case 0:
            mode = RM_EMPTY;
            break;
        case 1:
            mode = RM_NIL;
            break;
        case 2:
            mode = (iter / NTYPES) % 40 == 2 ? RM_BIG : RM_MIXED;
            break;
        default:
            mode = RM_MIXED;
            break;
        }
        arena_used = 0;
        rand_msg(&m, type, mode, &qa);

        size = ing_msg_size(&m);
        assert_true(size >= ING_HDR_LEN && size <= ENC_MAX);
        n = ing_msg_encode(&m, out, sizeof(out));
        assert_int_equal(n, size);
        assert_int_equal(ing_msg_encode(&m, out2, size - 1), -ENOMEM);

        memset(&d, 0x5a, sizeof(d));
        assert_int_equal(ing_msg_decode(out, size, (uint32_t)(size - ING_HDR_LEN), &d), size);
        assert_msg_equal(&m, &d);
        assert_int_equal(ing_msg_decode(out, size - 1, ING_MAX_FRAME_DEFAULT, &d2), 0);

        msg_rearray(&d, &d2, &qa2);
        assert_int_equal(ing_msg_encode(&d2, out2, size), size);
        if (memcmp(out, out2, size) != 0)
            fail_msg("iteration %u (%s): re-encoding differs", iter, ing_msg_type_name(type));
    }
}

/* Queues of minimal entries (every str empty): the smallest bodies the decoder must take,
 * right at its "count cannot fit" bound; one entry more than present is refused. */
static void
test_proto_queue_minimal_entries(void **state)
{
    static const uint32_t counts[] = {0, 1, 2, 5, 40, QMAX};
    static struct qarrays qa, qb;
    static uint8_t out[8192];
    const struct ing_view empty = V("");
    struct guard *g = *state;
    struct ing_msg m, d;
    size_t i, j;
    ssize_t n;

    memset(&qa, 0, sizeof(qa));
    for (j = 0; j < QMAX; j++) {
        qa.r[j].job_id = qa.r[j].agent_name = qa.r[j].info = qa.r[j].launcher = empty;
        qa.w[j].job_id = qa.w[j].info = qa.w[j].launcher = empty;
        qa.r[j].max_time = qa.w[j].max_time = -1;
    }
    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        memset(&m, 0, sizeof(m));
        m.type = ING_BACKEND_GET_QUEUE;
        m.u.queue.running = qa.r;
        m.u.queue.waiting = qa.w;
        m.u.queue.n_running = counts[i];
        m.u.queue.n_waiting = 0;
        for (j = 0; j < 3; j++) {
            n = ing_msg_encode(&m, out, sizeof(out));
            assert_true(n > 0 && (size_t)n <= g->page);
            assert_int_equal(n,
                             ING_HDR_LEN + 8 + 33 * m.u.queue.n_running + 21 * m.u.queue.n_waiting);
            assert_int_equal(guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d), n);
            assert_msg_equal(&m, &d);
            queue_entries(&d.u.queue, &qb);
            /* One more running or waiting entry than the body holds. */
            put_u32be(out + ING_HDR_LEN, m.u.queue.n_running + 1);
            assert_int_equal(guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d), -EPROTO);
            put_u32be(out + ING_HDR_LEN, m.u.queue.n_running);
            put_u32be(out + (size_t)n - 21 * m.u.queue.n_waiting - 4, m.u.queue.n_waiting + 1);
            assert_int_equal(guard_decode(g, out, (size_t)n, ING_MAX_FRAME_DEFAULT, &d), -EPROTO);
            /* next shape: waiting only, then both */
            m.u.queue.n_waiting = counts[i];
            m.u.queue.n_running = j == 0 ? 0 : counts[i];
        }
    }
}

/* ---- encoding errors ----------------------------------------------------------------- */

static void
test_proto_encode_errors(void **state)
{
    static struct vbuf vb;
    static uint8_t out[VMAX];
    static const char one[1] = {'x'};
    struct guard *g = *state;
    struct ing_msg m;
    struct fref f[FMAX];
    struct ing_queue_waiting w[2];
    size_t i, j, nf, cap;
    uint8_t *dst;
    unsigned t;

    for (i = 0; i < NVEC; i++) {
        if (vectors[i].msg == NULL)
            continue;
        vec_load(&vectors[i], &vb);
        /* Every capacity below the size: -ENOMEM and no byte written past cap (the
         * guard page follows out[cap - 1]). */
        for (cap = 0; cap < vb.n; cap++) {
            dst = g->base + g->page - cap;
            if (ing_msg_encode(vectors[i].msg, dst, cap) != -ENOMEM)
                fail_msg("%s: cap %zu", vectors[i].title, cap);
        }
        dst = g->base + g->page - vb.n;
        assert_int_equal(ing_msg_encode(vectors[i].msg, dst, vb.n), vb.n);
        assert_memory_equal(dst, vb.b, vb.n);

        /* nil where it is not allowed: -EINVAL, and size 0; where it is, 4 bytes. */
        m = *vectors[i].msg;
        nf = msg_fields(&m, f);
        for (j = 0; j < nf; j++) {
            struct ing_view keep = *f[j].v;

            f[j].v->p = NULL;
            f[j].v->len = 0;
            if (f[j].kind == K_STR || f[j].kind == K_MP) {
                assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
                assert_int_equal(ing_msg_encode(&m, out, 0), -EINVAL); /* before -ENOMEM */
                assert_int_equal(ing_msg_size(&m), 0);
            } else {
                assert_int_equal(ing_msg_size(&m), vb.n - (keep.p ? keep.len : 0));
            }
            /* A length that would read as nil. */
            f[j].v->p = one;
            f[j].v->len = UINT32_MAX;
            assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
            assert_int_equal(ing_msg_size(&m), 0);
            /* An empty msgpack field. */
            if (f[j].kind == K_MP) {
                f[j].v->len = 0;
                assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
                assert_int_equal(ing_msg_size(&m), 0);
            }
            *f[j].v = keep;
        }
    }

    /* debug above 2. */
    for (t = 3; t < 256; t += 84) {
        m = m_client_new_job;
        m.u.new_job.job.debug = (uint8_t)t;
        assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
        assert_int_equal(ing_msg_size(&m), 0);
        m = m_backend_new_job;
        m.u.job.debug = (uint8_t)t;
        assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
        assert_int_equal(ing_msg_size(&m), 0);
    }

    /* Unknown types. */
    for (t = 0; t < 256; t++) {
        if (strcmp(ing_msg_type_name((uint8_t)t), "?") != 0)
            continue;
        memset(&m, 0, sizeof(m));
        m.type = (uint8_t)t;
        assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
        assert_int_equal(ing_msg_size(&m), 0);
    }

    /* Queue counts without their arrays. */
    m = m_queue;
    m.u.queue.running = NULL;
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
    m = m_queue;
    m.u.queue.waiting = NULL;
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
    assert_int_equal(ing_msg_size(&m), 0);
    m = m_queue_empty; /* zero counts need no arrays */
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), 14);

    /* Bodies over UINT32_MAX: measured without reading the (absent) bytes, refused. */
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name.p = one;
    m.u.client_hello.name.len = UINT32_MAX - 4; /* body exactly UINT32_MAX: allowed */
#if SIZE_MAX > UINT32_MAX
    assert_int_equal(ing_msg_size(&m), (size_t)ING_HDR_LEN + UINT32_MAX);
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -ENOMEM);
#endif
    m.u.client_hello.name.len = UINT32_MAX - 3;
    assert_int_equal(ing_msg_size(&m), 0);
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
    memset(&m, 0, sizeof(m));
    m.type = ING_BACKEND_GET_QUEUE;
    m.u.queue.n_waiting = 2;
    m.u.queue.waiting = w;
    memset(w, 0, sizeof(w));
    for (i = 0; i < 2; i++) {
        w[i].job_id.p = one;
        w[i].job_id.len = 0x7ffffff0;
        w[i].info.p = one;
        w[i].launcher.p = one;
    }
    assert_int_equal(ing_msg_size(&m), 0);
    assert_int_equal(ing_msg_encode(&m, out, sizeof(out)), -EINVAL);
}

/* ---- preamble, header, names, views -------------------------------------------------- */

static void
test_proto_preamble(void **state)
{
    static struct vbuf vb;
    uint8_t p[ING_PREAMBLE_LEN], bad[ING_PREAMBLE_LEN];
    uint8_t version = 0, role = 0;
    struct guard *g = *state;
    size_t i, k;
    unsigned b;

    vec_load(&vectors[0], &vb);
    assert_int_equal(vb.n, ING_PREAMBLE_LEN);
    ing_preamble_encode(p, ING_ROLE_CLIENT);
    assert_memory_equal(p, vb.b, ING_PREAMBLE_LEN);
    assert_int_equal(ing_preamble_decode(guard_place(g, p, 8), 8, &version, &role), 8);
    assert_int_equal(version, ING_PROTO_VERSION);
    assert_int_equal(role, ING_ROLE_CLIENT);
    ing_preamble_encode(p, ING_ROLE_AGENT);
    assert_int_equal(ing_preamble_decode(guard_place(g, p, 8), 8, &version, &role), 8);
    assert_int_equal(role, ING_ROLE_AGENT);

    /* Short prefixes of a valid preamble: "read more", outputs untouched. */
    for (k = 0; k < ING_PREAMBLE_LEN; k++) {
        version = role = 0x77;
        assert_int_equal(ing_preamble_decode(guard_place(g, p, k), k, &version, &role), 0);
        assert_int_equal(version, 0x77);
        assert_int_equal(role, 0x77);
    }

    /* Version and role are the caller's to judge (Error VERSION / ROLE). */
    memcpy(bad, p, 8);
    bad[4] = 0;
    bad[5] = 9;
    assert_int_equal(ing_preamble_decode(guard_place(g, bad, 8), 8, &version, &role), 8);
    assert_int_equal(version, 0);
    assert_int_equal(role, 9);

    /* Each magic and flags byte, every wrong value: refused as soon as it is present. */
    for (i = 0; i < ING_PREAMBLE_LEN; i++) {
        if (i == 4 || i == 5)
            continue;
        for (b = 0; b < 256; b++) {
            if (b == p[i])
                continue;
            memcpy(bad, p, 8);
            bad[i] = (uint8_t)b;
            for (k = i + 1; k <= ING_PREAMBLE_LEN; k++)
                assert_int_equal(ing_preamble_decode(guard_place(g, bad, k), k, &version, &role),
                                 -EPROTO);
            for (k = 0; k <= i; k++)
                assert_int_equal(ing_preamble_decode(guard_place(g, bad, k), k, &version, &role),
                                 0);
        }
    }
    /* A ZeroMQ greeting and an HTTP request are not preambles. */
    assert_int_equal(
        ing_preamble_decode((const uint8_t *)"\xff\0\0\0\0\0\0\0\x01\x7f", 10, &version, &role),
        -EPROTO);
    assert_int_equal(
        ing_preamble_decode((const uint8_t *)"GET / HTTP/1.1\r\n", 16, &version, &role), -EPROTO);
}

static void
test_proto_frame_header_peek(void **state)
{
    uint8_t h[ING_HDR_LEN];
    uint8_t type = 0;
    uint32_t len = 0;
    size_t k;

    (void)state;
    ing_frame_header(h, ING_AGENT_JOB_DONE, 0x01020304);
    assert_memory_equal(h, "\x01\x02\x03\x04\x42\x00", ING_HDR_LEN);
    for (k = 0; k < ING_HDR_LEN; k++)
        assert_int_equal(ing_frame_peek(h, k, &type, &len), -EAGAIN);
    assert_int_equal(ing_frame_peek(h, ING_HDR_LEN, &type, &len), 0);
    assert_int_equal(type, ING_AGENT_JOB_DONE);
    assert_int_equal(len, 0x01020304);
    ing_frame_header(h, 0xfe, UINT32_MAX); /* peek judges nothing */
    assert_int_equal(ing_frame_peek(h, ING_HDR_LEN, &type, &len), 0);
    assert_int_equal(type, 0xfe);
    assert_int_equal(len, UINT32_MAX);
}

static void
test_proto_type_names(void **state)
{
    static const char *const names[NTYPES] = {
        "Error",
        "Welcome",
        "Auth",
        "AuthOk",
        "Ping",
        "Pong",
        "Unknown",
        "ClientHello",
        "ClientNewJob",
        "ClientKillJob",
        "ClientGetQueue",
        "ClientGetStats",
        "ClientGetJobInfo",
        "ClientHelloAck",
        "ClientHelloSession",
        "ClientSessionAck",
        "BackendUpdateEnvironments",
        "BackendJobStarted",
        "BackendJobDone",
        "BackendJobSSHDebug",
        "BackendGetQueue",
        "BackendStats",
        "BackendJobInfo",
        "BackendJobAccepted",
        "BackendSessionJobs",
        "BackendNewJob",
        "BackendKillJob",
        "AgentHello",
        "AgentJobStarted",
        "AgentJobDone",
        "AgentJobSSHDebug",
        "AgentHelloResume",
    };
    size_t i, known = 0;
    unsigned t;

    (void)state;
    for (i = 0; i < NTYPES; i++)
        assert_string_equal(ing_msg_type_name(all_types[i]), names[i]);
    for (t = 0; t < 256; t++)
        known += strcmp(ing_msg_type_name((uint8_t)t), "?") != 0;
    assert_int_equal(known, NTYPES);
    assert_string_equal(ing_msg_type_name(0x00), "?");
    assert_string_equal(ing_msg_type_name(0x45), "?");
    assert_string_equal(ing_msg_type_name(0xff), "?");
    /* The relayed agent reports are their backend types + 0x20. */
    assert_int_equal(ING_AGENT_JOB_STARTED - 0x20, ING_BACKEND_JOB_STARTED);
    assert_int_equal(ING_AGENT_JOB_DONE - 0x20, ING_BACKEND_JOB_DONE);
    assert_int_equal(ING_AGENT_JOB_SSH_DEBUG - 0x20, ING_BACKEND_JOB_SSH_DEBUG);
}

static void
test_proto_view_eq(void **state)
{
    struct ing_view nil = {NULL, 0};
    struct ing_view empty = {"", 0};
    struct ing_view abc = {"abcdef", 3};
    struct ing_view nul = {"a\0b", 3};

    (void)state;
    assert_true(ing_view_eq(abc, "abc"));
    assert_false(ing_view_eq(abc, "ab"));
    assert_false(ing_view_eq(abc, "abcd"));
    assert_false(ing_view_eq(abc, "abd"));
    assert_true(ing_view_eq(empty, ""));
    assert_false(ing_view_eq(empty, "a"));
    assert_false(ing_view_eq(nil, ""));
    assert_true(ing_view_eq(nil, NULL));
    assert_false(ing_view_eq(empty, NULL));
    assert_false(ing_view_eq(nul, "a"));
}

/* AgentHello's environments over ING_HELLO_CHECK_MAX bytes: the codec checks only the map
 * header (the backend checks the rest of proto.md 4.1 while registering, in steps); up to
 * that size, the whole value, as every mp field. */
static void
test_proto_hello_large_environments_checked_later(void **state)
{
    const size_t sizes[] = {64, ING_HELLO_CHECK_MAX, ING_HELLO_CHECK_MAX + 1, 200000};
    (void)state;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
        for (int first = 0; first < 2; first++) {
            size_t n = sizes[k];
            uint8_t *env = malloc(n);
            struct ing_msg m, d;

            assert_non_null(env);
            memset(env, 0xc1, n); /* never valid msgpack */
            env[0] = first == 0 ? 0x81 : 0x91; /* a map, or an array */
            memset(&m, 0, sizeof(m));
            m.type = ING_AGENT_HELLO;
            m.u.agent_hello.friendly_name = (struct ing_view){"a", 1};
            m.u.agent_hello.slots = 1;
            m.u.agent_hello.environments = (struct ing_view){(const char *)env, (uint32_t)n};
            size_t len = ing_msg_size(&m);
            assert_true(len > n);
            uint8_t *f = malloc(len);
            assert_non_null(f);
            assert_int_equal(ing_msg_encode(&m, f, len), (ssize_t)len);
            ssize_t r = ing_msg_decode(f, len, ING_MAX_FRAME_DEFAULT, &d);
            if (first == 0 && n > ING_HELLO_CHECK_MAX) {
                assert_int_equal(r, (ssize_t)len);
                assert_int_equal(d.u.agent_hello.environments.len, n);
            } else {
                assert_true(r < 0);
            }
            free(f);
            free(env);
        }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_doc_vectors_match),
        cmocka_unit_test_setup_teardown(test_proto_vectors_decode_encode, guard_setup,
                                        guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_vectors_prefixes, guard_setup, guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_frame_job_id, guard_setup, guard_teardown),
        cmocka_unit_test(test_proto_vectors_byte_at_a_time),
        cmocka_unit_test_setup_teardown(test_proto_corrupt_lengths, guard_setup, guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_corrupt_header, guard_setup, guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_corrupt_values, guard_setup, guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_corrupt_fields_by_type, guard_setup,
                                        guard_teardown),
        cmocka_unit_test(test_proto_round_trip_random),
        cmocka_unit_test_setup_teardown(test_proto_queue_minimal_entries, guard_setup,
                                        guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_encode_errors, guard_setup, guard_teardown),
        cmocka_unit_test_setup_teardown(test_proto_preamble, guard_setup, guard_teardown),
        cmocka_unit_test(test_proto_frame_header_peek),
        cmocka_unit_test(test_proto_type_names),
        cmocka_unit_test(test_proto_view_eq),
        cmocka_unit_test(test_proto_hello_large_environments_checked_later),
    };

    if (getenv("ING_PRINT_VECTORS") != NULL) {
        print_vectors(stdout);
        return 0;
    }
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
