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
 * the load generator must cost far less than the server it measures. */
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

/* A pre-encoded frame with job ids to patch at id_off[0..nid). */
struct bc_tmpl {
    uint8_t *frame;
    size_t len;
    size_t id_off[2];
    int nid;
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

/* bc_inputdata returns the msgpack map {"q1": "print(...)..."} of exactly size bytes (the
 * student's code, plain ASCII), or NULL if size < 8. */
static inline uint8_t *
bc_inputdata(uint32_t size)
{
    static const char code[] = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n";
    if (size < 8)
        return NULL;
    /* 0x81, "q1" (3 bytes), then a str header of h bytes and size - 4 - h bytes of text. */
    uint32_t h = size - 4 - 1 <= 31 ? 1 : size - 4 - 2 <= 255 ? 2 : size - 4 - 3 <= 65535 ? 3 : 5;
    uint32_t tl = size - 4 - h;
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
    ing_mp_put_map(&w, 1);
    ing_mp_put_cstr(&w, "q1");
    ing_mp_put_str(&w, text, tl);
    free(text);
    if (w.err != 0 || w.len != size) {
        free(out);
        return NULL;
    }
    return out;
}

/* bc_job_tmpl encodes the ClientNewJob of the workload: priority, launcher "loadgen",
 * course "bench", task "lifecycle", environment docker/env, task_problems
 * {"q1": {"type": "code"}}, inputdata of payload bytes, environment_parameters
 * {"limits": {"time": 30}}. *body_len gets the ClientNewJob body size. Returns 0 or -1. */
static inline int
bc_job_tmpl(struct bc_tmpl *t, uint32_t payload, int64_t priority, const char *env,
            size_t *body_len)
{
    static const uint8_t problems[] = {0x81, 0xa2, 'q',  '1', 0x81, 0xa4, 't', 'y',
                                       'p',  'e',  0xa4, 'c', 'o',  'd',  'e'};
    static const uint8_t params[] = {0x81, 0xa6, 'l', 'i', 'm', 'i', 't', 's',
                                     0x81, 0xa4, 't', 'i', 'm', 'e', 0x1e};
    static const char launcher[] = "loadgen";
    uint8_t id[BC_TOKLEN];
    uint8_t *input = bc_inputdata(payload);
    if (input == NULL)
        return -1;
    bc_put_token(id, 0, 0);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    struct ing_client_new_job *nj = &m.u.new_job;
    nj->priority = priority;
    nj->launcher = (struct ing_view){launcher, sizeof(launcher) - 1};
    nj->job.job_id = (struct ing_view){(const char *)id, BC_TOKLEN};
    nj->job.course_id = (struct ing_view){"bench", 5};
    nj->job.task_id = (struct ing_view){"lifecycle", 9};
    nj->job.environment_type = (struct ing_view){"docker", 6};
    nj->job.environment = (struct ing_view){env, (uint32_t)strlen(env)};
    nj->job.debug = ING_DEBUG_OFF;
    nj->job.task_problems = (struct ing_view){(const char *)problems, sizeof(problems)};
    nj->job.inputdata = (struct ing_view){(const char *)input, payload};
    nj->job.environment_parameters = (struct ing_view){(const char *)params, sizeof(params)};
    t->frame = bc_encode(&m, &t->len);
    free(input);
    if (t->frame == NULL)
        return -1;
    /* header, priority i64, launcher str, then the job id's length */
    t->id_off[0] = ING_HDR_LEN + 8 + 4 + (sizeof(launcher) - 1) + 4;
    t->nid = 1;
    *body_len = t->len - ING_HDR_LEN;
    return 0;
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
    struct buf in, out;
};

struct load {
    int ep;
    struct bc_conn **conns;
    uint32_t nconns, nclients, nagents;
    struct bc_tmpl reply; /* the agents' answer */
    bool submitting;      /* clients top up their windows / send their quotas */
    bool verify;          /* decode every received frame with the library codec */
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

static inline int
bc_send_empty(struct load *L, struct bc_conn *c, uint8_t type)
{
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
    uint8_t *p = bc_out(L, c, ING_PREAMBLE_LEN);
    if (p == NULL)
        return NULL;
    ing_preamble_encode(p, role);
    buf_produce(&c->out, ING_PREAMBLE_LEN);
    return c;
}

/* bc_add_client connects a client and queues ClientHello then Ping: its first Pong means it
 * is registered (the server handles a connection's frames in order). */
static inline struct bc_conn *
bc_add_client(struct load *L, const char *addr, const struct bc_tmpl *job, uint64_t window)
{
    struct bc_conn *c = bc_add_conn(L, addr, ING_ROLE_CLIENT, L->nclients);
    if (c == NULL)
        return NULL;
    char name[32];
    snprintf(name, sizeof(name), "loadgen-%u", L->nclients);
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_HELLO;
    m.u.client_hello.name = (struct ing_view){name, (uint32_t)strlen(name)};
    if (bc_send(L, c, &m) != 0 || bc_send_empty(L, c, ING_PING) != 0)
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

/* bc_flush writes c's output until it is empty or the socket is full (then EPOLLOUT).
 * Returns 0 or -1. */
static inline int
bc_flush(struct load *L, struct bc_conn *c)
{
    while (buf_len(&c->out) > 0) {
        ssize_t n = write(c->fd, buf_head(&c->out), buf_len(&c->out));
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
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

/* bc_client_frame handles one frame received by a client. Returns 0 or -1. */
static inline int
bc_client_frame(struct load *L, struct bc_conn *c, uint8_t type, const uint8_t *b, uint32_t n,
                uint64_t now)
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
    case ING_BACKEND_UPDATE_ENVIRONMENTS:
        c->updates++;
        return 0;
    case ING_BACKEND_JOB_STARTED:
        L->started++;
        return 0;
    case ING_BACKEND_JOB_DONE: {
        uint32_t client;
        uint64_t idx;
        uint32_t il = n >= 4 ? get_u32be(b) : UINT32_MAX;
        if (il != BC_TOKLEN || n < 4 + BC_TOKLEN + 4 || bc_get_token(b + 4, &client, &idx) != 0 ||
            idx >= L->submitted) {
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
        uint32_t kl = get_u32be(b + 4 + BC_TOKLEN);
        const uint8_t *k = b + 8 + BC_TOKLEN;
        if (kl != 7 || n < 8 + BC_TOKLEN + 7 || memcmp(k, "success", 7) != 0) {
            if (L->errors++ < 5) {
                struct ing_msg m;
                if (ing_msg_decode(b - ING_HDR_LEN, n + ING_HDR_LEN, BC_MAX_BODY, &m) > 0)
                    fprintf(stderr, "loadgen: job %.16s ended %.*s: %.*s\n", (const char *)b + 4,
                            (int)m.u.result.result_kind.len, m.u.result.result_kind.p,
                            (int)m.u.result.result_text.len, m.u.result.result_text.p);
            }
        }
        return 0;
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
