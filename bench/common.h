/* SPDX-License-Identifier: MIT */
/* common.h: helpers shared by the benchmark programs. The Makefile builds every bench/NAME.c as
 * one program, so the shared code lives here as static inline functions (no unused-function
 * warnings in the programs that do not call all of them):
 *   - a monotonic clock, CPU pinning, /proc readers (CPU time, RSS, peak RSS), a fixed-seed
 *     PRNG and percentiles;
 *   - struct load: native-protocol clients and agents (proto.md) over one epoll, the
 *     workload of loadgen.c and bench_loop.c. A client keeps up to `window` jobs in flight
 *     (or floods its quota, then sends a Ping); an agent answers every BackendNewJob at once
 *     with AgentJobStarted then AgentJobDone. Reads and writes are batched: every frame a
 *     read brings is handled, and output is written once per loop iteration.
 *
 * Job ids are 16 hex digits: 4 for the client number, 12 for the job's index, so a result
 * finds its job (and its submit time) without a table. The ClientNewJob frame and the
 * agent's answer are encoded once with the library codec and copied with the id patched:
 * the load generator must cost far less than the server it measures. A job template may also
 * draw each job's fair-share key among K (loadgen --keys): patched the same way, in place of
 * the launcher, the course id or inputdata's "@username" (bc_job_tmpl_keys, bc_key_of). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "bytes.h"
#include "inginious/mp.h"
#include "inginious/proto.h"
#include "zmq_msg.h"
#include "zmtp.h"

#define BC_TOKLEN 16
#define BC_READ_CHUNK (256u * 1024)
#define BC_READ_ROUNDS 4            /* chunks read from one connection per wake-up */
#define BC_FLOOD_OUT (1024u * 1024) /* pending bytes a flooding client builds before writing */
#define BC_MAX_BODY (256u * 1024 * 1024)

/* ---------------------------------------------------------------------------------------- */
/* Clock, CPUs, /proc                                                                        */

static inline uint64_t
bc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* bc_thread_cpu_ns: the CPU time of the calling thread, so that time slices given to other
 * processes (the machine is shared) are not counted. */
static inline uint64_t
bc_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* bc_pin binds pid (0 = the caller) to one CPU. Returns 0 or -errno. */
static inline int
bc_pin(pid_t pid, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(pid, sizeof(set), &set) == 0 ? 0 : -errno;
}

/* bc_cpu_usable tells whether the caller may run on cpu. */
static inline bool
bc_cpu_usable(int cpu)
{
    cpu_set_t set;
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof(set), &set) != 0)
        return false;
    return CPU_ISSET(cpu, &set);
}

/* bc_read_small reads a small /proc file into b (NUL-terminated). Returns its length or -1. */
static inline ssize_t
bc_read_small(const char *path, char *b, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(b, 1, cap - 1, f);
    fclose(f);
    b[n] = '\0';
    return (ssize_t)n;
}

/* bc_proc_cpu_s returns utime + stime of pid in seconds (/proc/PID/stat), or -1. */
static inline double
bc_proc_cpu_s(pid_t pid)
{
    char path[64], b[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (bc_read_small(path, b, sizeof(b)) < 0)
        return -1;
    const char *p = strrchr(b, ')'); /* the command name may hold spaces */
    if (p == NULL)
        return -1;
    p += 2; /* field 3 */
    unsigned long long ut = 0, st = 0;
    for (int field = 3; field <= 15 && p != NULL; field++) {
        if (field == 14)
            ut = strtoull(p, NULL, 10);
        if (field == 15)
            st = strtoull(p, NULL, 10);
        p = strchr(p, ' ');
        if (p != NULL)
            p++;
    }
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* bc_proc_sched_s returns the on-CPU time of pid's main thread in seconds from
 * /proc/PID/schedstat (nanosecond resolution, unlike the 10 ms ticks of /proc/PID/stat),
 * or -1. The backend is single-threaded. */
static inline double
bc_proc_sched_s(pid_t pid)
{
    char path[64], b[256];
    snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
    if (bc_read_small(path, b, sizeof(b)) < 0)
        return -1;
    return (double)strtoull(b, NULL, 10) * 1e-9;
}

/* bc_proc_status_kb returns the value in kB of the line "key:" of /proc/PID/status
 * (VmRSS, VmHWM), or -1. */
static inline long
bc_proc_status_kb(pid_t pid, const char *key)
{
    char path[64], b[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (bc_read_small(path, b, sizeof(b)) < 0)
        return -1;
    size_t kl = strlen(key);
    for (const char *p = b; p != NULL && *p != '\0';) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':')
            return strtol(p + kl + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

/* bc_self_cpu_s returns the caller's user + system CPU seconds. */
static inline double
bc_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* xorshift64*: a fixed-seed generator, so every run does the same work. */
static inline uint64_t
bc_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static inline int
bc_cmp_u64(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : a > b;
}

/* Latency summary in microseconds. */
struct bc_pct {
    uint64_t n;
    double p50, p90, p99, p999, max, mean;
};

/* bc_percentiles sorts v[0..n) in place and fills *o (nearest rank, as the peers' lg). */
static inline void
bc_percentiles(uint64_t *v, uint64_t n, struct bc_pct *o)
{
    memset(o, 0, sizeof(*o));
    o->n = n;
    if (n == 0)
        return;
    qsort(v, n, sizeof(*v), bc_cmp_u64);
    double sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += (double)v[i];
#define BC_AT(q) ((double)v[(uint64_t)((q) * (double)(n - 1) + 0.5)] / 1000.0)
    o->p50 = BC_AT(0.50);
    o->p90 = BC_AT(0.90);
    o->p99 = BC_AT(0.99);
    o->p999 = BC_AT(0.999);
#undef BC_AT
    o->max = (double)v[n - 1] / 1000.0;
    o->mean = sum / (double)n / 1000.0;
}

/* ---------------------------------------------------------------------------------------- */
/* Frames                                                                                    */

/* A pre-encoded frame with job ids to patch at id_off[0..nid), and for a job drawing its
 * fair-share key among keys (> 0) the key to patch at key_off (BC_KEYLEN bytes). */
struct bc_tmpl {
    uint8_t *frame;
    size_t len;
    size_t id_off[2];
    int nid;
    uint32_t keys;
    size_t key_off;
};

static inline void
bc_put_token(uint8_t *p, uint32_t client, uint64_t idx)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 3; i >= 0; i--, client >>= 4)
        p[i] = (uint8_t)hex[client & 15];
    for (int i = BC_TOKLEN - 1; i >= 4; i--, idx >>= 4)
        p[i] = (uint8_t)hex[idx & 15];
}

/* bc_get_token parses a 16-digit id. Returns 0 or -1. */
static inline int
bc_get_token(const uint8_t *p, uint32_t *client, uint64_t *idx)
{
    uint64_t v = 0;
    for (int i = 0; i < BC_TOKLEN; i++) {
        uint8_t c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return -1;
        v = v << 4 | d;
        if (i == 3) {
            *client = (uint32_t)v;
            v = 0;
        }
    }
    *idx = v;
    return 0;
}

/* bc_encode encodes m into a fresh allocation. Returns the frame (free it) or NULL. */
static inline uint8_t *
bc_encode(const struct ing_msg *m, size_t *len)
{
    size_t n = ing_msg_size(m);
    uint8_t *f = n > 0 ? malloc(n) : NULL;
    if (f == NULL || ing_msg_encode(m, f, n) != (ssize_t)n) {
        free(f);
        return NULL;
    }
    *len = n;
    return f;
}

/* Fair-share keys (loadgen --keys K): a job's key is "k" and 6 decimal digits, BC_KEYLEN
 * bytes like the launcher "loadgen" (so that with the key as launcher the body keeps its
 * size), drawn at random among K per job with a fixed seed: a function of the job's index
 * (bc_key_of), so that whoever reads a job id knows its key. */
#define BC_KEYLEN 7
#define BC_MAX_KEYS 1000000u
#define BC_KEY0 "k000000" /* the key written into a template, patched per job */

/* Where the key goes: the launcher, the course id, or inputdata["@username"] (the three keys
 * of --fair-share, proto.md 7.4). */
enum bc_key_field {
    BC_KEY_LAUNCHER,
    BC_KEY_COURSE,
    BC_KEY_USER,
};

static const char *const bc_key_field_names[] = {"launcher", "course", "user"};

/* bc_key_of returns the key (0..keys-1, keys > 0) of the job of index idx: splitmix64's
 * mix of the index and a fixed seed, reduced modulo keys. */
static inline uint32_t
bc_key_of(uint64_t idx, uint32_t keys)
{
    uint64_t z = idx * 0x9e3779b97f4a7c15ull + 0x243f6a8885a308d3ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint32_t)(z % keys);
}

/* bc_put_key writes the name of key k (< BC_MAX_KEYS) at p: "k" and 6 digits. */
static inline void
bc_put_key(uint8_t *p, uint32_t k)
{
    p[0] = 'k';
    for (int i = BC_KEYLEN - 1; i >= 1; i--, k /= 10)
        p[i] = (uint8_t)('0' + k % 10);
}

/* bc_inputdata returns the msgpack map {"q1": "def fib(n)..."} of exactly size bytes (the
 * student's code, plain ASCII), with user != NULL (at most 31 bytes) the map {"q1": ...,
 * "@username": user} of exactly size bytes, or NULL if size is too small for that (8 bytes
 * without a user, 8 + 11 + strlen(user) with one). */
static inline uint8_t *
bc_inputdata(uint32_t size, const char *user)
{
    static const char code[] = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n";
    size_t ul = user != NULL ? strlen(user) : 0;
    uint32_t user_len = user != NULL ? (uint32_t)(1 + 9 + 1 + ul) : 0; /* "@username", str */
    if (ul > 31 || size < 8 || size - 8 < user_len)
        return NULL;
    /* A map header, "q1" (3 bytes), a str header of h bytes and tl bytes of text, then the
     * user's pair if any. */
    uint32_t rest = size - user_len;
    uint32_t h = rest - 4 - 1 <= 31 ? 1 : rest - 4 - 2 <= 255 ? 2 : rest - 4 - 3 <= 65535 ? 3 : 5;
    uint32_t tl = rest - 4 - h;
    char *text = malloc(tl ? tl : 1);
    uint8_t *out = malloc(size);
    if (text == NULL || out == NULL) {
        free(text);
        free(out);
        return NULL;
    }
    for (uint32_t i = 0; i < tl; i++)
        text[i] = code[i % (sizeof(code) - 1)];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, out, size);
    ing_mp_put_map(&w, user != NULL ? 2 : 1);
    ing_mp_put_cstr(&w, "q1");
    ing_mp_put_str(&w, text, tl);
    if (user != NULL) {
        ing_mp_put_cstr(&w, "@username");
        ing_mp_put_cstr(&w, user);
    }
    free(text);
    if (w.err != 0 || w.len != size) {
        free(out);
        return NULL;
    }
    return out;
}

#define BC_LAUNCHER "loadgen"

#define BC_COURSE "bench"

/* bc_job_fill sets m to the ClientNewJob of the workload: priority, launcher (BC_LAUNCHER
 * unless a key takes its place), course (BC_COURSE, the same), task "lifecycle", environment
 * docker/env, task_problems {"q1": {"type": "code"}}, inputdata input[0..payload),
 * environment_parameters {"limits": {"time": 30}}, job id id[0..BC_TOKLEN). */
static inline void
bc_job_fill(struct ing_msg *m, const uint8_t *id, const uint8_t *input, uint32_t payload,
            int64_t priority, const char *env, const char *launcher, const char *course)
{
    static const uint8_t problems[] = {0x81, 0xa2, 'q',  '1', 0x81, 0xa4, 't', 'y',
                                       'p',  'e',  0xa4, 'c', 'o',  'd',  'e'};
    static const uint8_t params[] = {0x81, 0xa6, 'l', 'i', 'm', 'i', 't', 's',
                                     0x81, 0xa4, 't', 'i', 'm', 'e', 0x1e};
    memset(m, 0, sizeof(*m));
    m->type = ING_CLIENT_NEW_JOB;
    struct ing_client_new_job *nj = &m->u.new_job;
    nj->priority = priority;
    nj->launcher = (struct ing_view){launcher, (uint32_t)strlen(launcher)};
    nj->job.job_id = (struct ing_view){(const char *)id, BC_TOKLEN};
    nj->job.course_id = (struct ing_view){course, (uint32_t)strlen(course)};
    nj->job.task_id = (struct ing_view){"lifecycle", 9};
    nj->job.environment_type = (struct ing_view){"docker", 6};
    nj->job.environment = (struct ing_view){env, (uint32_t)strlen(env)};
    nj->job.debug = ING_DEBUG_OFF;
    nj->job.task_problems = (struct ing_view){(const char *)problems, sizeof(problems)};
    nj->job.inputdata = (struct ing_view){(const char *)input, payload};
    nj->job.environment_parameters = (struct ing_view){(const char *)params, sizeof(params)};
}

/* bc_tmpl_key sets t to draw its jobs' keys among keys (0: none, t keeps BC_LAUNCHER and
 * BC_COURSE): the key's place is the only BC_KEY0 of the frame. Returns 0 or -1. */
static inline int
bc_tmpl_key(struct bc_tmpl *t, uint32_t keys)
{
    t->keys = keys;
    t->key_off = 0;
    if (keys == 0)
        return 0;
    const uint8_t *p = memmem(t->frame, t->len, BC_KEY0, BC_KEYLEN);
    if (keys > BC_MAX_KEYS || p == NULL ||
        memmem(p + 1, t->len - (size_t)(p + 1 - t->frame), BC_KEY0, BC_KEYLEN) != NULL)
        return -1;
    t->key_off = (size_t)(p - t->frame);
    return 0;
}

/* bc_key_names gives the launcher, course and user of a job template whose key (keys > 0)
 * is in field: BC_KEY0 there, the workload's own values elsewhere (no user). */
static inline void
bc_key_names(uint32_t keys, uint8_t field, const char **launcher, const char **course,
             const char **user)
{
    *launcher = keys > 0 && field == BC_KEY_LAUNCHER ? BC_KEY0 : BC_LAUNCHER;
    *course = keys > 0 && field == BC_KEY_COURSE ? BC_KEY0 : BC_COURSE;
    *user = keys > 0 && field == BC_KEY_USER ? BC_KEY0 : NULL;
}

/* bc_job_tmpl_keys encodes the ClientNewJob of the workload (bc_job_fill) whose jobs draw
 * their key among keys (0: none, the workload as it always was) in field (enum
 * bc_key_field). *body_len gets the ClientNewJob body size. Returns 0 or -1. */
static inline int
bc_job_tmpl_keys(struct bc_tmpl *t, uint32_t payload, int64_t priority, const char *env,
                 uint32_t keys, uint8_t field, size_t *body_len)
{
    uint8_t id[BC_TOKLEN];
    const char *launcher, *course, *user;
    bc_key_names(keys, field, &launcher, &course, &user);
    memset(t, 0, sizeof(*t));
    uint8_t *input = bc_inputdata(payload, user);
    if (input == NULL)
        return -1;
    bc_put_token(id, 0, 0);
    struct ing_msg m;
    bc_job_fill(&m, id, input, payload, priority, env, launcher, course);
    t->frame = bc_encode(&m, &t->len);
    free(input);
    if (t->frame == NULL)
        return -1;
    /* header, priority i64, launcher str, then the job id's length */
    t->id_off[0] = ING_HDR_LEN + 8 + 4 + strlen(launcher) + 4;
    t->nid = 1;
    *body_len = t->len - ING_HDR_LEN;
    if (bc_tmpl_key(t, keys) != 0) {
        free(t->frame);
        t->frame = NULL;
        return -1;
    }
    return 0;
}

/* bc_job_tmpl: bc_job_tmpl_keys without keys. */
static inline int
bc_job_tmpl(struct bc_tmpl *t, uint32_t payload, int64_t priority, const char *env,
            size_t *body_len)
{
    return bc_job_tmpl_keys(t, payload, priority, env, 0, 0, body_len);
}

/* bc_result_fill sets r to the workload's result: success, "ok", grade 100, empty maps, state
 * "", nil archive, stdout and stderr (a 76-byte body with a 16-byte id). */
static inline void
bc_result_fill(struct ing_job_result *r, struct ing_view id, const char *kind)
{
    static const uint8_t empty_map[1] = {0x80};
    memset(r, 0, sizeof(*r));
    r->job_id = id;
    r->result_kind = (struct ing_view){kind, (uint32_t)strlen(kind)};
    r->result_text = (struct ing_view){"ok", 2};
    r->grade = 100.0;
    r->problems = r->tests = r->custom = (struct ing_view){(const char *)empty_map, 1};
    r->state = (struct ing_view){"", 0};
    r->archive.p = r->stdout_.p = r->stderr_.p = NULL;
}

/* bc_reply_tmpl encodes the agent's answer to one job: AgentJobStarted then AgentJobDone. */
static inline int
bc_reply_tmpl(struct bc_tmpl *t)
{
    uint8_t id[BC_TOKLEN];
    bc_put_token(id, 0, 0);
    struct ing_view idv = {(const char *)id, BC_TOKLEN};
    struct ing_msg st, done;
    memset(&st, 0, sizeof(st));
    st.type = ING_AGENT_JOB_STARTED;
    st.u.ref.job_id = idv;
    memset(&done, 0, sizeof(done));
    done.type = ING_AGENT_JOB_DONE;
    bc_result_fill(&done.u.result, idv, "success");
    size_t l1, l2;
    uint8_t *f1 = bc_encode(&st, &l1), *f2 = bc_encode(&done, &l2);
    t->frame = f1 != NULL && f2 != NULL ? malloc(l1 + l2) : NULL;
    if (t->frame != NULL) {
        memcpy(t->frame, f1, l1);
        memcpy(t->frame + l1, f2, l2);
        t->len = l1 + l2;
        t->id_off[0] = ING_HDR_LEN + 4;
        t->id_off[1] = l1 + ING_HDR_LEN + 4;
        t->nid = 2;
    }
    free(f1);
    free(f2);
    return t->frame != NULL ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Connections                                                                               */

/* bc_connect connects to addr ("tcp://HOST:PORT" with an IPv4 or [IPv6] literal, or
 * "ipc:///path"), retrying refused connections for up to 5 s, then makes the socket
 * non-blocking with TCP_NODELAY. Returns the fd or -errno (-EINVAL: bad address). */
static inline int
bc_connect(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (strncmp(addr, "ipc://", 6) == 0) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        if (strlen(addr + 6) >= sizeof(su->sun_path))
            return -EINVAL;
        su->sun_family = AF_UNIX;
        strcpy(su->sun_path, addr + 6);
        sl = sizeof(*su);
    } else if (strncmp(addr, "tcp://", 6) == 0) {
        char host[128];
        const char *h = addr + 6, *colon = strrchr(h, ':');
        if (colon == NULL || (size_t)(colon - h) >= sizeof(host))
            return -EINVAL;
        memcpy(host, h, (size_t)(colon - h));
        host[colon - h] = '\0';
        long port = strtol(colon + 1, NULL, 10);
        if (port <= 0 || port > 65535)
            return -EINVAL;
        if (host[0] == '[') {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            size_t hl = strlen(host);
            if (hl < 3 || host[hl - 1] != ']')
                return -EINVAL;
            host[hl - 1] = '\0';
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)port);
            if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
                return -EINVAL;
            sl = sizeof(*s6);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
                return -EINVAL;
            sl = sizeof(*s4);
        }
    } else {
        return -EINVAL;
    }
    uint64_t t0 = bc_now_ns();
    for (;;) {
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
            int one = 1;
            if (ss.ss_family != AF_UNIX)
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            return fd;
        }
        int e = errno;
        close(fd);
        if (e == EINTR)
            continue;
        if ((e != ECONNREFUSED && e != ENOENT && e != EAGAIN) || bc_now_ns() - t0 > 5000000000ull)
            return -e;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

struct bc_conn {
    int fd;
    uint8_t role;      /* ING_ROLE_CLIENT or ING_ROLE_AGENT */
    uint32_t idx;      /* client or agent number */
    bool epout;        /* EPOLLOUT registered */
    bool welcomed;     /* Welcome received */
    bool ping_after;   /* flood: send a Ping once the quota is sent */
    uint64_t pongs;    /* Pongs received: the first answers the Ping sent after the hello */
    uint64_t window;   /* client: jobs in flight at most; 0 = flood the quota */
    uint64_t quota;    /* client: jobs it may still submit */
    uint64_t inflight; /* client: submitted, no BackendJobDone yet */
    uint64_t updates;  /* client: BackendUpdateEnvironments received */
    uint64_t handled;  /* agent: jobs answered */
    const struct bc_tmpl *tmpl; /* client: its ClientNewJob */
    bool zmq;                   /* speaks ZMTP + INGInious msgpack (L->zmq at connection) */
    uint8_t zst;                /* zmq: 0 greeting awaited, 1 READY awaited, 2 traffic */
    uint8_t zhold;              /* zmq: bytes of our greeting and READY still to write: the
                                 * messages wait for the peer's READY (libzmq drops a
                                 * connection whose first read brings a message too) */
    bool env_default;           /* zmq client: an environment update listed "default" */
    uint64_t srecv, sacked;     /* session client: results read, acknowledged (proto.md 7.9) */
    bool hello_wait;            /* session client: its hello waits for the Welcome (7.9) */
    struct buf in, out;
};

struct load {
    int ep;
    struct bc_conn **conns;
    uint32_t nconns, nclients, nagents;
    struct bc_tmpl reply; /* the agents' answer */
    bool zmq;             /* new connections speak the ZeroMQ dialect (bc_load_dialect) */
    uint8_t zrel;         /* its release: enum bc_zrel */
    struct ing_mp_writer zw; /* zmq: scratch for the messages that are not pre-encoded */
    bool submitting;      /* clients top up their windows / send their quotas */
    bool verify;          /* decode every received frame with the library codec */
    uint8_t session;      /* native clients open a session: 0 none, 1 plain, 2 ACK (7.9) */
    uint64_t cap;         /* jobs the arrays hold */
    uint64_t limit;       /* jobs that may be issued so far (<= cap) */
    uint64_t submitted, done, started, dup, bad, errors;
    uint64_t *t_submit;       /* ns per job index */
    uint64_t *lat;            /* ns per job index, 0 = no result yet */
    uint64_t t_first, t_last; /* first submit, last result (ns) */
    uint64_t queue_answers;
    uint32_t queue_running, queue_waiting;
    uint64_t t_queue; /* when the last BackendGetQueue arrived */
    char err[256];    /* why bc_poll failed */
};

static inline int bc_fail(struct load *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* bc_fail records the first error. Returns -1. */
static inline int
bc_fail(struct load *L, const char *fmt, ...)
{
    if (L->err[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err, sizeof(L->err), fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* bc_load_init prepares L for cap jobs. Returns 0 or -1 (no memory). */
static inline int
bc_load_init(struct load *L, uint64_t cap)
{
    memset(L, 0, sizeof(*L));
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    L->cap = cap;
    L->t_submit = calloc(cap ? cap : 1, sizeof(*L->t_submit));
    L->lat = calloc(cap ? cap : 1, sizeof(*L->lat));
    ing_mp_writer_init_dyn(&L->zw);
    if (L->ep < 0 || L->t_submit == NULL || L->lat == NULL || bc_reply_tmpl(&L->reply) != 0)
        return -1;
    return 0;
}

/* bc_close_conns closes every connection (the server drops their jobs). */
static inline void
bc_close_conns(struct load *L)
{
    for (uint32_t i = 0; i < L->nconns; i++) {
        struct bc_conn *c = L->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
    }
}

static inline void
bc_load_fini(struct load *L)
{
    bc_close_conns(L);
    for (uint32_t i = 0; i < L->nconns; i++) {
        buf_fini(&L->conns[i]->in);
        buf_fini(&L->conns[i]->out);
        free(L->conns[i]);
    }
    free(L->conns);
    free(L->t_submit);
    free(L->lat);
    free(L->reply.frame);
    ing_mp_writer_fini(&L->zw);
    if (L->ep >= 0)
        close(L->ep);
    memset(L, 0, sizeof(*L));
    L->ep = -1;
}

/* bc_out reserves n output bytes on c. Returns where to write them, or NULL (no memory). */
static inline uint8_t *
bc_out(struct load *L, struct bc_conn *c, size_t n)
{
    if (buf_reserve(&c->out, n) != 0) {
        bc_fail(L, "out of memory for output");
        return NULL;
    }
    return buf_tail(&c->out);
}

/* bc_send encodes m on c's output. Returns 0 or -1. */
static inline int
bc_send(struct load *L, struct bc_conn *c, const struct ing_msg *m)
{
    size_t n = ing_msg_size(m);
    uint8_t *p = n > 0 ? bc_out(L, c, n) : NULL;
    if (p == NULL || ing_msg_encode(m, p, n) != (ssize_t)n)
        return bc_fail(L, "cannot encode %s", ing_msg_type_name(m->type));
    buf_produce(&c->out, n);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The ZeroMQ dialect (loadgen --dialect zmq)                                                */
/*
 * A connection of a load set up with bc_load_dialect speaks ZMTP 3.1 as a DEALER (NULL
 * mechanism: our greeting and READY at once), one frame per message, each an INGInious
 * msgpack map of a release: main (the default), v0.8 (v0.8.0 - v0.8.5: the AgentHello has
 * ssh_allowed; every other message is main's) or v0.6 (v0.5 - v0.6.2: the class under
 * "type" with snake_case names, the agents' job ids as [client address, job id] pairs).
 * The job and the agent's answer are pre-encoded frames (ZMTP header included) patched
 * with the job id, as in the native dialect. A ZeroMQ agent sends no Ping (INGInious'
 * backend exits on one): it is registered once the clients hear of its environment. */

enum bc_zrel {
    BC_ZREL_MAIN,
    BC_ZREL_V08,
    BC_ZREL_V06,
};

static const char *const bc_zrel_names[] = {"main", "v0.8", "v0.6"};

/* The classes loadgen sends or reads: "@type" (main, v0.8) and "type" (v0.6) values. */
static const struct {
    uint8_t type;
    const char *name, *legacy;
} bc_ztypes[] = {
    {ING_PING, "Ping", "ping"},
    {ING_PONG, "Pong", "pong"},
    {ING_UNKNOWN, "Unknown", "unknown"},
    {ING_CLIENT_HELLO, "ClientHello", "client_hello"},
    {ING_CLIENT_NEW_JOB, "ClientNewJob", "client_new_job"},
    {ING_CLIENT_GET_QUEUE, "ClientGetQueue", "client_get_queue"},
    {ING_AGENT_HELLO, "AgentHello", "agent_hello"},
    {ING_AGENT_JOB_STARTED, "AgentJobStarted", "agent_job_started"},
    {ING_AGENT_JOB_DONE, "AgentJobDone", "agent_job_done"},
    {ING_BACKEND_UPDATE_ENVIRONMENTS, "BackendUpdateEnvironments", "backend_update_containers"},
    {ING_BACKEND_JOB_STARTED, "BackendJobStarted", "backend_job_started"},
    {ING_BACKEND_JOB_DONE, "BackendJobDone", "backend_job_done"},
    {ING_BACKEND_GET_QUEUE, "BackendGetQueue", "backend_get_queue"},
    {ING_BACKEND_NEW_JOB, "BackendNewJob", "backend_new_job"},
    {ING_BACKEND_KILL_JOB, "BackendKillJob", "backend_kill_job"},
};

#define BC_NZTYPES (sizeof(bc_ztypes) / sizeof(bc_ztypes[0]))

/* bc_zend writes the class pair, the last of every message. */
static inline void
bc_zend(struct ing_mp_writer *w, uint8_t zrel, uint8_t type)
{
    for (size_t i = 0; i < BC_NZTYPES; i++)
        if (bc_ztypes[i].type == type) {
            ing_mp_put_cstr(w, zrel == BC_ZREL_V06 ? "type" : "@type");
            ing_mp_put_cstr(w, zrel == BC_ZREL_V06 ? bc_ztypes[i].legacy : bc_ztypes[i].name);
            return;
        }
    w->err = -EINVAL;
}

/* bc_zput_id writes the "job_id" pair: the id, or for a v0.6 agent the pair [b"", id]. */
static inline void
bc_zput_id(struct ing_mp_writer *w, uint8_t zrel, bool agent, const char *id, size_t len)
{
    ing_mp_put_cstr(w, "job_id");
    if (agent && zrel == BC_ZREL_V06) {
        ing_mp_put_array(w, 2);
        ing_mp_put_bin(w, "", 0);
    }
    ing_mp_put_str(w, id, len);
}

/* bc_zdone writes the agent's AgentJobDone of the workload (success, "ok", grade 100, empty
 * maps, state "", nil archive, stdout and stderr) with result kind kind. */
static inline void
bc_zdone(struct ing_mp_writer *w, uint8_t zrel, const char *id, size_t len, const char *kind)
{
    static const uint8_t empty_map[1] = {0x80};
    ing_mp_put_map(w, 11);
    bc_zput_id(w, zrel, true, id, len);
    ing_mp_put_cstr(w, "result");
    ing_mp_put_array(w, 2);
    ing_mp_put_cstr(w, kind);
    ing_mp_put_cstr(w, "ok");
    ing_mp_put_cstr(w, "grade");
    ing_mp_put_double(w, 100.0);
    static const char *const maps[] = {"problems", "tests", "custom"};
    for (int i = 0; i < 3; i++) {
        ing_mp_put_cstr(w, maps[i]);
        ing_mp_put_raw(w, empty_map, 1);
    }
    ing_mp_put_cstr(w, "state");
    ing_mp_put_cstr(w, "");
    static const char *const nils[] = {"archive", "stdout", "stderr"};
    for (int i = 0; i < 3; i++) {
        ing_mp_put_cstr(w, nils[i]);
        ing_mp_put_nil(w);
    }
    bc_zend(w, zrel, ING_AGENT_JOB_DONE);
}

/* bc_zstarted writes AgentJobStarted. */
static inline void
bc_zstarted(struct ing_mp_writer *w, uint8_t zrel, const char *id, size_t len)
{
    ing_mp_put_map(w, 2);
    bc_zput_id(w, zrel, true, id, len);
    bc_zend(w, zrel, ING_AGENT_JOB_STARTED);
}

/* bc_zappend appends w's message as one ZMTP frame to the allocation *f of *len bytes.
 * Returns 0 or -1. */
static inline int
bc_zappend(uint8_t **f, size_t *len, const struct ing_mp_writer *w)
{
    uint8_t hdr[ZMTP_HDR_MAX];
    size_t hl = zmtp_frame_header(hdr, w->len, false);
    uint8_t *n = w->err == 0 ? realloc(*f, *len + hl + w->len) : NULL;
    if (n == NULL)
        return -1;
    memcpy(n + *len, hdr, hl);
    memcpy(n + *len + hl, w->buf, w->len);
    *f = n;
    *len += hl + w->len;
    return 0;
}

/* bc_zmark finds the marker id (16 'f') in t->frame from offset from: the id to patch. */
static inline int
bc_zmark(struct bc_tmpl *t, size_t from)
{
    static const char mark[BC_TOKLEN + 1] = "ffffffffffffffff";
    const uint8_t *p = from < t->len ? memmem(t->frame + from, t->len - from, mark, BC_TOKLEN)
                                     : NULL;
    if (p == NULL || t->nid >= 2)
        return -1;
    t->id_off[t->nid++] = (size_t)(p - t->frame);
    return 0;
}

/* bc_zjob_tmpl_keys encodes the workload's ClientNewJob (bc_job_tmpl_keys' values) in
 * release zrel. *body_len gets the msgpack message's size. Returns 0 or -1. */
static inline int
bc_zjob_tmpl_keys(struct bc_tmpl *t, uint32_t payload, int64_t priority, const char *env,
                  uint8_t zrel, uint32_t keys, uint8_t field, size_t *body_len)
{
    uint8_t id[BC_TOKLEN];
    const char *launcher, *course, *user;
    bc_key_names(keys, field, &launcher, &course, &user);
    memset(t, 0, sizeof(*t));
    uint8_t *input = bc_inputdata(payload, user);
    struct ing_mp_writer w;
    int rc = -1;
    if (input == NULL)
        return -1;
    bc_put_token(id, 0xffff, 0xffffffffffffull); /* the marker */
    ing_mp_writer_init_dyn(&w);
    if (zrel == BC_ZREL_V06) {
        ing_mp_put_map(&w, 14);
        bc_zput_id(&w, zrel, false, (const char *)id, BC_TOKLEN);
        ing_mp_put_cstr(&w, "priority");
        ing_mp_put_int(&w, priority);
        ing_mp_put_cstr(&w, "course_id");
        ing_mp_put_cstr(&w, course);
        ing_mp_put_cstr(&w, "task_id");
        ing_mp_put_cstr(&w, "lifecycle");
        ing_mp_put_cstr(&w, "inputdata");
        ing_mp_put_raw(&w, input, payload);
        ing_mp_put_cstr(&w, "environment");
        ing_mp_put_cstr(&w, env);
        ing_mp_put_cstr(&w, "enable_network");
        ing_mp_put_bool(&w, false);
        ing_mp_put_cstr(&w, "time_limit");
        ing_mp_put_int(&w, 30);
        ing_mp_put_cstr(&w, "hard_time_limit");
        ing_mp_put_nil(&w);
        ing_mp_put_cstr(&w, "mem_limit");
        ing_mp_put_int(&w, 1024);
        ing_mp_put_cstr(&w, "debug");
        ing_mp_put_bool(&w, false);
        ing_mp_put_cstr(&w, "launcher");
        ing_mp_put_cstr(&w, launcher);
        ing_mp_put_cstr(&w, "run_cmd");
        ing_mp_put_nil(&w);
        bc_zend(&w, zrel, ING_CLIENT_NEW_JOB);
    } else {
        struct ing_msg m;
        bc_job_fill(&m, id, input, payload, priority, env, launcher, course);
        if (zmq_msg_encode(&m, &w, ZMQ_JOB_FIELD_COURSE_ID) != 0)
            w.err = -EINVAL;
    }
    if (bc_zappend(&t->frame, &t->len, &w) == 0 && bc_zmark(t, 0) == 0 &&
        bc_tmpl_key(t, keys) == 0) {
        *body_len = w.len;
        rc = 0;
    }
    ing_mp_writer_fini(&w);
    free(input);
    return rc;
}

/* bc_zjob_tmpl: bc_zjob_tmpl_keys without keys. */
static inline int
bc_zjob_tmpl(struct bc_tmpl *t, uint32_t payload, int64_t priority, const char *env,
             uint8_t zrel, size_t *body_len)
{
    return bc_zjob_tmpl_keys(t, payload, priority, env, zrel, 0, 0, body_len);
}

/* bc_zreply_tmpl encodes the agent's answer to one job: AgentJobStarted, AgentJobDone. */
static inline int
bc_zreply_tmpl(struct bc_tmpl *t, uint8_t zrel)
{
    static const char mark[BC_TOKLEN + 1] = "ffffffffffffffff";
    struct ing_mp_writer w;
    int rc = -1;
    memset(t, 0, sizeof(*t));
    ing_mp_writer_init_dyn(&w);
    bc_zstarted(&w, zrel, mark, BC_TOKLEN);
    if (bc_zappend(&t->frame, &t->len, &w) == 0 && bc_zmark(t, 0) == 0) {
        size_t first = t->len;
        w.len = 0;
        bc_zdone(&w, zrel, mark, BC_TOKLEN, "success");
        if (bc_zappend(&t->frame, &t->len, &w) == 0 && bc_zmark(t, first) == 0)
            rc = 0;
    }
    ing_mp_writer_fini(&w);
    return rc;
}

/* bc_load_dialect makes L's next connections speak the ZeroMQ dialect of release zrel (its
 * agents' answer re-encoded). Returns 0 or -1. */
static inline int
bc_load_dialect(struct load *L, uint8_t zrel)
{
    struct bc_tmpl t;
    if (bc_zreply_tmpl(&t, zrel) != 0) {
        free(t.frame);
        return -1;
    }
    free(L->reply.frame);
    L->reply = t;
    L->zmq = true;
    L->zrel = zrel;
    return 0;
}

/* bc_zsend_w sends w's message (then reset) on c as one frame. Returns 0 or -1. */
static inline int
bc_zsend_w(struct load *L, struct bc_conn *c, struct ing_mp_writer *w)
{
    if (w->err != 0) {
        w->len = 0;
        w->err = 0;
        return bc_fail(L, "cannot encode a ZeroMQ message");
    }
    uint8_t *p = bc_out(L, c, ZMTP_HDR_MAX + w->len);
    if (p == NULL)
        return -1;
    size_t hl = zmtp_frame_header(p, w->len, false);
    memcpy(p + hl, w->buf, w->len);
    buf_produce(&c->out, hl + w->len);
    w->len = 0;
    return 0;
}

/* bc_zsend_type sends a message without fields (Ping, Pong, ClientGetQueue). */
static inline int
bc_zsend_type(struct load *L, struct bc_conn *c, uint8_t type)
{
    ing_mp_put_map(&L->zw, 1);
    bc_zend(&L->zw, L->zrel, type);
    return bc_zsend_w(L, c, &L->zw);
}

/* bc_zanswer answers a job the slow way (an id of another length than ours: an attached
 * run) or a kill (started false): AgentJobStarted unless killed, then AgentJobDone. */
static inline int
bc_zanswer(struct load *L, struct bc_conn *c, const char *id, size_t len, bool started,
           const char *kind)
{
    if (started) {
        bc_zstarted(&L->zw, L->zrel, id, len);
        if (bc_zsend_w(L, c, &L->zw) != 0)
            return -1;
    }
    bc_zdone(&L->zw, L->zrel, id, len, kind);
    return bc_zsend_w(L, c, &L->zw);
}

/* bc_send_empty sends a message without fields (Ping, Pong, ClientGetQueue) in c's dialect. */
static inline int
bc_send_empty(struct load *L, struct bc_conn *c, uint8_t type)
{
    if (c->zmq)
        return bc_zsend_type(L, c, type);
    uint8_t *p = bc_out(L, c, ING_HDR_LEN);
    if (p == NULL)
        return -1;
    ing_frame_header(p, type, 0);
    buf_produce(&c->out, ING_HDR_LEN);
    return 0;
}

/* bc_add_conn connects one peer, registers it with epoll and queues its preamble. Returns
 * the connection or NULL (L->err says why). */
static inline struct bc_conn *
bc_add_conn(struct load *L, const char *addr, uint8_t role, uint32_t idx)
{
    int fd = bc_connect(addr);
    if (fd < 0) {
        bc_fail(L, "connect %s: %s", addr, strerror(-fd));
        return NULL;
    }
    struct bc_conn *c = calloc(1, sizeof(*c));
    struct bc_conn **nc = realloc(L->conns, (L->nconns + 1) * sizeof(*nc));
    if (c == NULL || nc == NULL) {
        free(c);
        close(fd);
        bc_fail(L, "out of memory");
        return NULL;
    }
    L->conns = nc;
    L->conns[L->nconns++] = c;
    c->fd = fd;
    c->role = role;
    c->idx = idx;
    buf_init(&c->in);
    buf_init(&c->out);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        bc_fail(L, "epoll_ctl: %s", strerror(errno));
        return NULL;
    }
    if (L->zmq) {
        /* Our greeting and READY at once: the backend answers the greeting's first byte. */
        c->zmq = true;
        uint8_t *p = bc_out(L, c, ZMTP_GREETING_LEN + 64);
        if (p == NULL)
            return NULL;
        zmtp_greeting(p);
        ssize_t n = zmtp_ready(p + ZMTP_GREETING_LEN, 64, "DEALER");
        if (n < 0) {
            bc_fail(L, "cannot encode READY");
            return NULL;
        }
        buf_produce(&c->out, ZMTP_GREETING_LEN + (size_t)n);
        c->zhold = (uint8_t)(ZMTP_GREETING_LEN + (size_t)n);
        return c;
    }
    uint8_t *p = bc_out(L, c, ING_PREAMBLE_LEN);
    if (p == NULL)
        return NULL;
    ing_preamble_encode(p, role);
    buf_produce(&c->out, ING_PREAMBLE_LEN);
    return c;
}

/* bc_client_hello queues c's hello (ClientHelloSession when L->session, for a native
 * client; else ClientHello) then Ping: its first Pong means it is registered (the server
 * handles a connection's frames in order). */
static inline int
bc_client_hello(struct load *L, struct bc_conn *c)
{
    char name[32];
    snprintf(name, sizeof(name), "loadgen-%u", c->idx);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name = (struct ing_view){name, (uint32_t)strlen(name)};
    if (L->session != 0 && !c->zmq) { /* one id per client and run */
        m.type = ING_CLIENT_HELLO_SESSION;
        uint64_t r = bc_now_ns() ^ ((uint64_t)getpid() << 32);
        put_u64be(m.u.client_hello.session, r);
        put_u64be(m.u.client_hello.session + 8, c->idx + 1);
        m.u.client_hello.session_flags = L->session == 2 ? ING_SESSION_ACK : 0;
    }
    if (c->zmq) {
        ing_mp_put_map(&L->zw, 2);
        ing_mp_put_cstr(&L->zw, "name");
        ing_mp_put_cstr(&L->zw, name);
        bc_zend(&L->zw, L->zrel, ING_CLIENT_HELLO);
        if (bc_zsend_w(L, c, &L->zw) != 0)
            return -1;
    } else if (bc_send(L, c, &m) != 0) {
        return -1;
    }
    return bc_send_empty(L, c, ING_PING);
}

/* bc_add_client connects a client and queues its hello (bc_client_hello), but for a native
 * session client: proto.md 7.9 asks it not to pipeline ClientHelloSession, so it waits for
 * a Welcome with the SESSION flag (and SESSION_ACK for --session ack), as the library does. */
static inline struct bc_conn *
bc_add_client(struct load *L, const char *addr, const struct bc_tmpl *job, uint64_t window)
{
    struct bc_conn *c = bc_add_conn(L, addr, ING_ROLE_CLIENT, L->nclients);
    if (c == NULL)
        return NULL;
    if (L->session != 0 && !c->zmq)
        c->hello_wait = true;
    else if (bc_client_hello(L, c) != 0)
        return NULL;
    c->tmpl = job;
    c->window = window;
    c->quota = UINT64_MAX;
    L->nclients++;
    return c;
}

/* bc_add_agent connects an agent with slots job slots providing docker/env, and queues
 * AgentHello then Ping. */
static inline struct bc_conn *
bc_add_agent(struct load *L, const char *addr, uint32_t slots, const char *env)
{
    struct bc_conn *c = bc_add_conn(L, addr, ING_ROLE_AGENT, L->nagents);
    if (c == NULL)
        return NULL;
    char name[32];
    snprintf(name, sizeof(name), "loadgen-agent-%u", L->nagents);
    if (c->zmq) {
        /* As the Docker agent of the release: no Ping after it (see above). */
        struct ing_mp_writer *w = &L->zw;
        bool v06 = L->zrel == BC_ZREL_V06, v08 = L->zrel == BC_ZREL_V08;
        ing_mp_put_map(w, v08 ? 5 : 4);
        ing_mp_put_cstr(w, "friendly_name");
        ing_mp_put_cstr(w, name);
        ing_mp_put_cstr(w, "available_job_slots");
        ing_mp_put_uint(w, slots);
        ing_mp_put_cstr(w, v06 ? "available_containers" : "available_environments");
        if (!v06) {
            ing_mp_put_map(w, 1);
            ing_mp_put_cstr(w, "docker");
        }
        ing_mp_put_map(w, 1);
        ing_mp_put_cstr(w, env);
        ing_mp_put_map(w, 2);
        ing_mp_put_cstr(w, "id");
        ing_mp_put_cstr(w, "sha256:loadgen");
        ing_mp_put_cstr(w, "created");
        ing_mp_put_int(w, 1700000000);
        if (v08) {
            ing_mp_put_cstr(w, "ssh_allowed");
            ing_mp_put_bool(w, false);
        }
        bc_zend(w, L->zrel, ING_AGENT_HELLO);
        if (bc_zsend_w(L, c, w) != 0)
            return NULL;
        L->nagents++;
        return c;
    }
    struct ing_mp_writer w;
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "docker");
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, env);
    ing_mp_put_map(&w, 2);
    ing_mp_put_cstr(&w, "id");
    ing_mp_put_cstr(&w, "sha256:loadgen");
    ing_mp_put_cstr(&w, "created");
    ing_mp_put_int(&w, 1700000000);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_AGENT_HELLO;
    m.u.agent_hello.friendly_name = (struct ing_view){name, (uint32_t)strlen(name)};
    m.u.agent_hello.slots = slots;
    m.u.agent_hello.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
    int rc = w.err != 0 ? -1 : bc_send(L, c, &m);
    ing_mp_writer_fini(&w);
    if (rc != 0 || bc_send_empty(L, c, ING_PING) != 0)
        return NULL;
    L->nagents++;
    return c;
}

/* bc_all_pongs tells whether every connection of the role has at least n Pongs. */
static inline bool
bc_all_pongs(const struct load *L, uint8_t role, uint64_t n)
{
    for (uint32_t i = 0; i < L->nconns; i++)
        if (L->conns[i]->role == role && L->conns[i]->fd >= 0 && L->conns[i]->pongs < n)
            return false;
    return true;
}

/* bc_all_done: n results received (a run_until condition). */
static inline bool
bc_all_done(const struct load *L, uint64_t n)
{
    return L->done >= n;
}

/* bc_queue_answered: n BackendGetQueue received. */
static inline bool
bc_queue_answered(const struct load *L, uint64_t n)
{
    return L->queue_answers >= n;
}

/* bc_agents_ready tells whether L's agents are registered: each answered the Ping after its
 * hello (n Pongs); a ZeroMQ agent sends no Ping (INGInious' backend exits on one), so there
 * every client must have heard of docker/default. */
static inline bool
bc_agents_ready(const struct load *L, uint64_t n)
{
    if (!L->zmq || L->nagents == 0)
        return bc_all_pongs(L, ING_ROLE_AGENT, n);
    for (uint32_t i = 0; i < L->nconns; i++)
        if (L->conns[i]->role == ING_ROLE_CLIENT && L->conns[i]->fd >= 0 &&
            !L->conns[i]->env_default)
            return false;
    return true;
}

/* bc_flush writes c's output until it is empty or the socket is full (then EPOLLOUT).
 * Returns 0 or -1. */
static inline int
bc_flush(struct load *L, struct bc_conn *c)
{
    while (buf_len(&c->out) > 0) {
        size_t len = buf_len(&c->out);
        if (c->zmq && c->zst != 2) { /* before the peer's READY: our greeting and READY only */
            if (c->zhold == 0)
                break;
            if (len > c->zhold)
                len = c->zhold;
        }
        ssize_t n = write(c->fd, buf_head(&c->out), len);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            c->zhold = (size_t)n >= c->zhold ? 0 : (uint8_t)(c->zhold - (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->epout) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev);
                c->epout = true;
            }
            return 0;
        }
        return bc_fail(L, "%s %u: write: %s", c->role == ING_ROLE_AGENT ? "agent" : "client",
                       c->idx, n < 0 ? strerror(errno) : "wrote nothing");
    }
    if (c->epout) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->epout = false;
    }
    return 0;
}

/* bc_submit appends up to what c's window (or flood budget) allows. Returns 0 or -1. */
static inline int
bc_submit(struct load *L, struct bc_conn *c, uint64_t now)
{
    const struct bc_tmpl *t = c->tmpl;
    while (c->quota > 0 && L->submitted < L->limit &&
           (c->window > 0 ? c->inflight < c->window : buf_len(&c->out) < BC_FLOOD_OUT)) {
        uint8_t *p = bc_out(L, c, t->len);
        if (p == NULL)
            return -1;
        uint64_t idx = L->submitted++;
        memcpy(p, t->frame, t->len);
        bc_put_token(p + t->id_off[0], c->idx, idx);
        if (t->keys != 0)
            bc_put_key(p + t->key_off, bc_key_of(idx, t->keys));
        buf_produce(&c->out, t->len);
        L->t_submit[idx] = now;
        if (L->t_first == 0)
            L->t_first = now;
        c->inflight++;
        c->quota--;
    }
    if (c->quota == 0 && c->ping_after) {
        c->ping_after = false;
        return bc_send_empty(L, c, ING_PING);
    }
    return 0;
}

/* bc_job_done counts the result of job id[0..il) (a loadgen token), of kind kind[0..kl)
 * (NULL: none): its latency, a duplicate, an unknown id, a kind that is not success.
 * Returns 0. */
static inline int
bc_job_done(struct load *L, struct bc_conn *c, const uint8_t *id, uint32_t il, const uint8_t *kind,
            uint32_t kl, uint64_t now)
{
    uint32_t client;
    uint64_t idx;
    if (il != BC_TOKLEN || bc_get_token(id, &client, &idx) != 0 || idx >= L->submitted) {
        L->bad++;
        return 0;
    }
    if (L->lat[idx] != 0) {
        L->dup++;
        return 0;
    }
    uint64_t d = now - L->t_submit[idx];
    L->lat[idx] = d ? d : 1;
    L->done++;
    L->t_last = now;
    if (c->inflight > 0)
        c->inflight--;
    if (kind == NULL || kl != 7 || memcmp(kind, "success", 7) != 0) {
        if (L->errors++ < 5 && c->zmq)
            fprintf(stderr, "loadgen: job %.16s ended %.*s\n", (const char *)id,
                    kind != NULL ? (int)kl : 4, kind != NULL ? (const char *)kind : "(no kind)");
    }
    return 0;
}

/* bc_client_frame handles one frame received by a client. Returns 0 or -1. */
static inline int
bc_client_frame(struct load *L, struct bc_conn *c, uint8_t type, const uint8_t *b, uint32_t n,
                uint64_t now)
{
    switch (type) {
    case ING_WELCOME: {
        c->welcomed = true;
        if (!c->hello_wait)
            return 0;
        struct ing_msg m;
        uint16_t want = L->session == 2 ? ING_WELCOME_SESSION | ING_WELCOME_SESSION_ACK
                                        : ING_WELCOME_SESSION;
        if (ing_msg_decode(b - ING_HDR_LEN, n + ING_HDR_LEN, BC_MAX_BODY, &m) <= 0)
            return bc_fail(L, "client %u: bad Welcome", c->idx);
        if ((m.u.welcome.flags & want) != want)
            return bc_fail(L, "client %u: the server does not offer sessions%s (Welcome flags "
                           "0x%04x)", c->idx, L->session == 2 ? " with acknowledged results" : "",
                           m.u.welcome.flags);
        c->hello_wait = false;
        return bc_client_hello(L, c);
    }
    case ING_PONG:
        c->pongs++;
        return 0;
    case ING_PING:
        return bc_send_empty(L, c, ING_PONG);
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        c->updates++;
        return 0;
    case ING_BACKEND_JOB_STARTED:
        L->started++;
        return 0;
    case ING_BACKEND_JOB_DONE: {
        uint32_t il = n >= 4 ? get_u32be(b) : UINT32_MAX;
        uint32_t kl = il == BC_TOKLEN && n >= 8 + BC_TOKLEN ? get_u32be(b + 4 + BC_TOKLEN) : 0;
        if (il != BC_TOKLEN || n < 4 + BC_TOKLEN + 4) {
            L->bad++;
            return 0;
        }
        if (kl > n - 8 - BC_TOKLEN)
            kl = 0;
        c->srecv++;
        if (kl != 7 || memcmp(b + 8 + BC_TOKLEN, "success", 7) != 0) {
            struct ing_msg m;
            if (L->errors < 5 && ing_msg_decode(b - ING_HDR_LEN, n + ING_HDR_LEN, BC_MAX_BODY, &m) > 0)
                fprintf(stderr, "loadgen: job %.16s ended %.*s: %.*s\n", (const char *)b + 4,
                        (int)m.u.result.result_kind.len, m.u.result.result_kind.p,
                        (int)m.u.result.result_text.len, m.u.result.result_text.p);
        }
        return bc_job_done(L, c, b + 4, il, b + 8 + BC_TOKLEN, kl, now);
    }
    case ING_BACKEND_GET_QUEUE: {
        struct ing_msg m;
        if (ing_msg_decode(b - ING_HDR_LEN, n + ING_HDR_LEN, BC_MAX_BODY, &m) <= 0)
            return bc_fail(L, "client %u: bad BackendGetQueue", c->idx);
        L->queue_running = m.u.queue.n_running;
        L->queue_waiting = m.u.queue.n_waiting;
        L->queue_answers++;
        L->t_queue = now;
        return 0;
    }
    case ING_ERROR:
        return bc_fail(L, "client %u: server error %u: %.*s", c->idx, n >= 2 ? get_u16be(b) : 0,
                       n >= 6 ? (int)(n - 6) : 0, (const char *)b + 6);
    case ING_UNKNOWN:
        return bc_fail(L, "client %u: the server answered Unknown (not registered?)", c->idx);
    default:
        return 0;
    }
}

/* bc_agent_frame handles one frame received by an agent. Returns 0 or -1. */
static inline int
bc_agent_frame(struct load *L, struct bc_conn *c, uint8_t type, const uint8_t *b, uint32_t n)
{
    switch (type) {
    case ING_WELCOME:
        c->welcomed = true;
        return 0;
    case ING_PONG:
        c->pongs++;
        return 0;
    case ING_PING:
        return bc_send_empty(L, c, ING_PONG);
    case ING_BACKEND_NEW_JOB: {
        uint32_t il = n >= 4 ? get_u32be(b) : UINT32_MAX;
        if (il > n - 4)
            return bc_fail(L, "agent %u: bad BackendNewJob", c->idx);
        c->handled++;
        if (il == BC_TOKLEN) {
            const struct bc_tmpl *t = &L->reply;
            uint8_t *p = bc_out(L, c, t->len);
            if (p == NULL)
                return -1;
            memcpy(p, t->frame, t->len);
            memcpy(p + t->id_off[0], b + 4, BC_TOKLEN);
            memcpy(p + t->id_off[1], b + 4, BC_TOKLEN);
            buf_produce(&c->out, t->len);
            return 0;
        }
        /* Someone else's job (an attached run): answer it the slow way. */
        struct ing_view id = {(const char *)b + 4, il};
        struct ing_msg m;
        memset(&m, 0, sizeof(m));
        m.type = ING_AGENT_JOB_STARTED;
        m.u.ref.job_id = id;
        if (bc_send(L, c, &m) != 0)
            return -1;
        m.type = ING_AGENT_JOB_DONE;
        bc_result_fill(&m.u.result, id, "success");
        return bc_send(L, c, &m);
    }
    case ING_BACKEND_KILL_JOB: {
        struct ing_msg k, m;
        if (ing_msg_decode(b - ING_HDR_LEN, n + ING_HDR_LEN, BC_MAX_BODY, &k) <= 0)
            return bc_fail(L, "agent %u: bad BackendKillJob", c->idx);
        memset(&m, 0, sizeof(m));
        m.type = ING_AGENT_JOB_DONE;
        bc_result_fill(&m.u.result, k.u.kill.job_id, "killed");
        m.u.result.state = k.u.kill.state;
        return bc_send(L, c, &m);
    }
    case ING_ERROR:
        return bc_fail(L, "agent %u: server error %u: %.*s", c->idx, n >= 2 ? get_u16be(b) : 0,
                       n >= 6 ? (int)(n - 6) : 0, (const char *)b + 6);
    default:
        return 0;
    }
}

/* bc_zclass reads the class of the message p[0..n) in release zrel: an ING_* type, or 0
 * (unknown, or not a map). */
static inline uint8_t
bc_zclass(uint8_t zrel, const uint8_t *p, size_t n)
{
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    bool legacy = zrel == BC_ZREL_V06;
    if (ing_mp_map_get(p, n, legacy ? "type" : "@type", legacy ? 4 : 5, &v, &vl) != 0 ||
        ing_mp_read(&v, v + vl, &o) != 0 || o.type != ING_MP_STR)
        return 0;
    for (size_t i = 0; i < BC_NZTYPES; i++) {
        const char *name = legacy ? bc_ztypes[i].legacy : bc_ztypes[i].name;
        if (strlen(name) == o.v.s.len && memcmp(name, o.v.s.p, o.v.s.len) == 0)
            return bc_ztypes[i].type;
    }
    return 0;
}

/* bc_zstr reads the str at key (or, for a pair [address, id], its second element) in the
 * map p[0..n). Returns 0 or -1. */
static inline int
bc_zstr(const uint8_t *p, size_t n, const char *key, const uint8_t **s, uint32_t *len)
{
    const uint8_t *v, *end;
    size_t vl;
    struct ing_mp_obj o;
    if (ing_mp_map_get(p, n, key, strlen(key), &v, &vl) != 0)
        return -1;
    end = v + vl;
    if (ing_mp_read(&v, end, &o) != 0)
        return -1;
    if (o.type == ING_MP_ARRAY && o.v.n == 2 &&
        (ing_mp_skip(&v, end, ING_MP_MAX_DEPTH) != 0 || ing_mp_read(&v, end, &o) != 0))
        return -1;
    if (o.type != ING_MP_STR)
        return -1;
    *s = o.v.s.p;
    *len = o.v.s.len;
    return 0;
}

/* bc_zcount reads the number of elements of the array at key in the map p[0..n), or 0. */
static inline uint32_t
bc_zcount(const uint8_t *p, size_t n, const char *key)
{
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    if (ing_mp_map_get(p, n, key, strlen(key), &v, &vl) != 0 || ing_mp_read(&v, v + vl, &o) != 0 ||
        o.type != ING_MP_ARRAY)
        return 0;
    return o.v.n;
}

/* bc_zclient_msg handles one message received by a ZeroMQ client. Returns 0 or -1. */
static inline int
bc_zclient_msg(struct load *L, struct bc_conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    const uint8_t *id, *kind = NULL;
    uint32_t il, kl = 0;
    switch (bc_zclass(L->zrel, p, n)) {
    case ING_PONG:
        c->pongs++;
        return 0;
    case ING_PING:
        return bc_zsend_type(L, c, ING_PONG);
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        c->updates++;
        if (memmem(p, n, "\xa7" "default", 8) != NULL)
            c->env_default = true;
        return 0;
    case ING_BACKEND_JOB_STARTED:
        L->started++;
        return 0;
    case ING_BACKEND_JOB_DONE: {
        const uint8_t *v;
        size_t vl;
        struct ing_mp_obj o;
        if (bc_zstr(p, n, "job_id", &id, &il) != 0) {
            L->bad++;
            return 0;
        }
        if (ing_mp_map_get(p, n, "result", 6, &v, &vl) == 0 && ing_mp_read(&v, v + vl, &o) == 0 &&
            o.type == ING_MP_ARRAY && o.v.n >= 1 && ing_mp_read(&v, v + vl, &o) == 0 &&
            o.type == ING_MP_STR) {
            kind = o.v.s.p;
            kl = o.v.s.len;
        }
        return bc_job_done(L, c, id, il, kind, kl, now);
    }
    case ING_BACKEND_GET_QUEUE:
        L->queue_running = bc_zcount(p, n, "jobs_running");
        L->queue_waiting = bc_zcount(p, n, "jobs_waiting");
        L->queue_answers++;
        L->t_queue = now;
        return 0;
    case ING_UNKNOWN:
        return bc_fail(L, "client %u: the backend answered Unknown (not registered?)", c->idx);
    default:
        return 0;
    }
}

/* bc_zagent_msg handles one message received by a ZeroMQ agent. Returns 0 or -1. */
static inline int
bc_zagent_msg(struct load *L, struct bc_conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *id;
    uint32_t il;
    switch (bc_zclass(L->zrel, p, n)) {
    case ING_PING:
        return bc_zsend_type(L, c, ING_PONG);
    case ING_BACKEND_NEW_JOB:
        if (bc_zstr(p, n, "job_id", &id, &il) != 0)
            return bc_fail(L, "agent %u: bad BackendNewJob", c->idx);
        c->handled++;
        if (il == BC_TOKLEN) {
            const struct bc_tmpl *t = &L->reply;
            uint8_t *o = bc_out(L, c, t->len);
            if (o == NULL)
                return -1;
            memcpy(o, t->frame, t->len);
            memcpy(o + t->id_off[0], id, BC_TOKLEN);
            memcpy(o + t->id_off[1], id, BC_TOKLEN);
            buf_produce(&c->out, t->len);
            return 0;
        }
        return bc_zanswer(L, c, (const char *)id, il, true, "success");
    case ING_BACKEND_KILL_JOB:
        if (bc_zstr(p, n, "job_id", &id, &il) != 0)
            return bc_fail(L, "agent %u: bad BackendKillJob", c->idx);
        return bc_zanswer(L, c, (const char *)id, il, false, "killed");
    default:
        return 0;
    }
}

/* bc_zcommand handles a ZMTP command of c: READY (once), PING (PONG), ERROR (fatal). */
static inline int
bc_zcommand(struct load *L, struct bc_conn *c, const uint8_t *b, size_t n)
{
    const char *who = c->role == ING_ROLE_AGENT ? "agent" : "client";
    size_t nl = n > 0 ? b[0] : 0;
    if (n < 1 + nl)
        return bc_fail(L, "%s %u: malformed ZMTP command", who, c->idx);
    if (nl == 5 && memcmp(b + 1, "READY", 5) == 0) {
        c->zst = 2;
        return 0;
    }
    if (nl == 5 && memcmp(b + 1, "ERROR", 5) == 0)
        return bc_fail(L, "%s %u: ZMTP ERROR from the backend: %.*s", who, c->idx,
                       n > 7 ? (int)(n - 7) : 0, (const char *)b + 7);
    if (nl == 4 && memcmp(b + 1, "PING", 4) == 0 && n >= 7) {
        uint8_t pong[32];
        size_t cl = n - 7 > ZMTP_PING_CONTEXT_MAX ? ZMTP_PING_CONTEXT_MAX : n - 7;
        ssize_t pl = zmtp_pong(pong, sizeof(pong), b + 7, cl);
        uint8_t *o = pl > 0 ? bc_out(L, c, (size_t)pl) : NULL;
        if (o == NULL)
            return -1;
        memcpy(o, pong, (size_t)pl);
        buf_produce(&c->out, (size_t)pl);
    }
    return 0;
}

/* bc_zinput handles every complete ZMTP unit in c's input. Returns 0 or -1. */
static inline int
bc_zinput(struct load *L, struct bc_conn *c, uint64_t now)
{
    const char *who = c->role == ING_ROLE_AGENT ? "agent" : "client";
    if (c->zst == 0) {
        if (buf_len(&c->in) < ZMTP_GREETING_LEN)
            return 0;
        const uint8_t *g = buf_head(&c->in);
        if (g[0] != 0xff || g[9] != 0x7f || g[10] < 3)
            return bc_fail(L, "%s %u: not a ZMTP 3 greeting", who, c->idx);
        buf_consume(&c->in, ZMTP_GREETING_LEN);
        c->zst = 1;
    }
    while (buf_len(&c->in) >= 2) {
        const uint8_t *p = buf_head(&c->in);
        size_t avail = buf_len(&c->in), hl = p[0] & ZMTP_F_LONG ? 9 : 2;
        if (p[0] & ~(ZMTP_F_MORE | ZMTP_F_LONG | ZMTP_F_COMMAND))
            return bc_fail(L, "%s %u: bad ZMTP flags 0x%02x", who, c->idx, p[0]);
        if (avail < hl)
            break;
        uint64_t bl = hl == 2 ? p[1] : get_u64be(p + 1);
        if (bl > BC_MAX_BODY)
            return bc_fail(L, "%s %u: ZMTP frame of %llu bytes", who, c->idx,
                           (unsigned long long)bl);
        if (avail - hl < bl)
            break;
        const uint8_t *b = p + hl;
        int rc = 0;
        if (p[0] & ZMTP_F_COMMAND)
            rc = bc_zcommand(L, c, b, (size_t)bl);
        else if (c->zst != 2)
            rc = bc_fail(L, "%s %u: a message before READY", who, c->idx);
        else if (p[0] & ZMTP_F_MORE)
            rc = 0; /* a routing frame: the message is its last frame */
        else if (L->verify && L->zrel != BC_ZREL_V06 &&
                 zmq_msg_decode(b, (size_t)bl, &(struct ing_msg){0}, NULL) != 0)
            rc = bc_fail(L, "%s %u: a message that does not decode", who, c->idx);
        else if (L->verify && ing_mp_validate(b, (size_t)bl, ING_MP_MAX_DEPTH) != 0)
            rc = bc_fail(L, "%s %u: a message that is not msgpack", who, c->idx);
        else
            rc = c->role == ING_ROLE_CLIENT ? bc_zclient_msg(L, c, b, (size_t)bl, now)
                                            : bc_zagent_msg(L, c, b, (size_t)bl);
        if (rc != 0)
            return -1;
        buf_consume(&c->in, hl + (size_t)bl);
    }
    return 0;
}

/* bc_read reads what c has (bounded) and handles every complete frame. Returns 0 or -1
 * (the server closed, an error frame, a bad frame). */
static inline int
bc_read(struct load *L, struct bc_conn *c)
{
    const char *who = c->role == ING_ROLE_AGENT ? "agent" : "client";
    for (int round = 0; round < BC_READ_ROUNDS; round++) {
        if (buf_reserve(&c->in, BC_READ_CHUNK) != 0)
            return bc_fail(L, "out of memory for input");
        size_t room = buf_room(&c->in);
        ssize_t r = read(c->fd, buf_tail(&c->in), room);
        if (r == 0)
            return bc_fail(L, "%s %u: the server closed the connection", who, c->idx);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return bc_fail(L, "%s %u: read: %s", who, c->idx, strerror(errno));
        }
        buf_produce(&c->in, (size_t)r);
        uint64_t now = bc_now_ns(); /* one stamp per read: these frames arrived together */
        if (c->zmq) {
            if (bc_zinput(L, c, now) != 0)
                return -1;
            if ((size_t)r < room)
                return 0;
            continue;
        }
        while (buf_len(&c->in) >= ING_HDR_LEN) {
            const uint8_t *p = buf_head(&c->in);
            uint32_t blen = get_u32be(p);
            if (blen > BC_MAX_BODY)
                return bc_fail(L, "%s %u: frame of %u bytes", who, c->idx, blen);
            if (buf_len(&c->in) < ING_HDR_LEN + (size_t)blen)
                break;
            if (L->verify) {
                struct ing_msg m;
                ssize_t d = ing_msg_decode(p, ING_HDR_LEN + (size_t)blen, BC_MAX_BODY, &m);
                if (d != (ssize_t)(ING_HDR_LEN + blen))
                    return bc_fail(L, "%s %u: frame type 0x%02x does not decode (%zd)", who, c->idx,
                                   p[4], d);
            }
            int rc = c->role == ING_ROLE_CLIENT
                         ? bc_client_frame(L, c, p[4], p + ING_HDR_LEN, blen, now)
                         : bc_agent_frame(L, c, p[4], p + ING_HDR_LEN, blen);
            if (rc != 0)
                return -1;
            buf_consume(&c->in, ING_HDR_LEN + (size_t)blen);
        }
        if (L->session == 2 && c->srecv != c->sacked) { /* one acknowledgement per read */
            struct ing_msg m;
            memset(&m, 0, sizeof(m));
            m.type = ING_CLIENT_SESSION_ACK;
            m.u.session_ack.count = c->srecv;
            if (bc_send(L, c, &m) != 0)
                return -1;
            c->sacked = c->srecv;
        }
        if ((size_t)r < room)
            return 0; /* drained */
    }
    return 0;
}

/* bc_poll runs one iteration: clients top up, every pending output is written, then one
 * epoll_wait of at most timeout_ms and its events. Returns 0 or -1 (L->err says why). */
static inline int
bc_poll(struct load *L, int timeout_ms)
{
    if (L->submitting) {
        uint64_t now = bc_now_ns(); /* one stamp per batch: these jobs leave together */
        for (uint32_t i = 0; i < L->nconns; i++) {
            struct bc_conn *c = L->conns[i];
            if (c->role == ING_ROLE_CLIENT && c->fd >= 0 && c->tmpl != NULL &&
                bc_submit(L, c, now) != 0)
                return -1;
        }
    }
    for (uint32_t i = 0; i < L->nconns; i++) {
        struct bc_conn *c = L->conns[i];
        if (c->fd >= 0 && buf_len(&c->out) > 0 && !c->epout && bc_flush(L, c) != 0)
            return -1;
        /* A flooding client whose socket took everything has more to send: do not sleep. */
        if (L->submitting && c->window == 0 && c->tmpl != NULL && c->quota > 0 && !c->epout &&
            L->submitted < L->limit)
            timeout_ms = 0;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(L->ep, evs, 64, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : bc_fail(L, "epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct bc_conn *c = evs[i].data.ptr;
        if ((evs[i].events & EPOLLOUT) && bc_flush(L, c) != 0)
            return -1;
        if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && bc_read(L, c) != 0)
            return -1;
    }
    return 0;
}

#endif
