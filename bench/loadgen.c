/* SPDX-License-Identifier: MIT */
/* loadgen.c: the load generator of the native protocol (see bench/README.md).
 *
 * Spawns inginious-backend on 127.0.0.1 port 0 (pinned to CPU 0; the load generator pins
 * itself to CPU 1), or attaches to a running one, and drives one workload through the
 * clients and agents of common.h, all on one epoll:
 *   lifecycle  S clients keep up to W jobs in flight each; A agents with K slots answer every
 *              job at once (AgentJobStarted, AgentJobDone): throughput and latency;
 *   latency    the same with one client, one job in flight and one agent;
 *   enqueue    no agent: S clients send N jobs back to back, then a Ping each; the enqueue
 *              rate is N over first submit to last Pong; then the backend's RSS growth per
 *              queued job, and a queue snapshot checks that all N jobs wait (a spawned
 *              backend gets --queue-list-max 0 for it; an attached one needs it too).
 *   drain      S clients queue N jobs as in enqueue (no agent yet); then A agents with K
 *              slots connect and work the queue off: jobs/s and backend CPU per job from the
 *              first agent's connection to the last result (dispatch from a deep queue).
 *   replay     a backend with --journal DIR (in its temporary directory; --fsync as the
 *              --backend-arg options say, else the default) queues N jobs as in enqueue,
 *              is killed (SIGKILL) with its clients connected, and a new one is started on
 *              the same DIR: the time from its start to the first Pong of a new client (the
 *              journal replayed, listening, serving), its RSS against the RSS the first had
 *              with the N jobs queued, and a queue snapshot checks that all N jobs wait.
 * --parked N first parks N jobs in an environment no agent provides (docker/parked), from
 * one more client that stays connected and idle: the run then measures the same work with
 * N jobs waiting (their id-table entries, their memory) beside it.
 * --keys K (any mode) draws each job's fair-share key among K names (k000000 ...), at random
 * per job with a fixed seed, as its launcher (--key-field: or its course id, or inputdata's
 * "@username"); run the backend with --backend-arg --fair-share=launcher (or course, user)
 * to measure fair share end to end. K = 0 (the default) is the workload without keys.
 * Prints one "RESULT key=value ..." line on stdout and a table on stderr. Exit status: 0 when
 * every job got exactly one result (enqueue: is queued), 1 on a failure or timeout, 2 on a
 * usage error. */
#include <dirent.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common.h"

enum mode {
    MODE_LIFECYCLE,
    MODE_LATENCY,
    MODE_ENQUEUE,
    MODE_DRAIN,
    MODE_REPLAY,
};

static const char *const mode_names[] = {"lifecycle", "latency", "enqueue", "drain", "replay"};

struct opts {
    enum mode mode;
    long long jobs, payload, clients, window, agents, slots; /* -1 = the mode's default */
    long long parked;                                        /* jobs parked first */
    long long keys;                                          /* fair-share keys, 0 none */
    uint8_t key_field;                                       /* enum bc_key_field */
    double max_seconds;
    const char *backend_bin;
    const char *agent_addr, *client_addr; /* attach to a running backend */
    pid_t backend_pid;                    /* its PID, for CPU and memory */
    const char *extra[16];                /* more arguments for a spawned backend */
    int nextra;
    bool pin, verify, quiet;
    bool zmq;     /* --dialect zmq */
    uint8_t session; /* --session: 0 none, 1 plain, 2 ack */
    uint8_t zrel; /* --zmq-release: enum bc_zrel */
    int server_cpu, loadgen_cpu;
};

struct backend_proc {
    pid_t pid; /* spawned by us; 0 = attached */
    char dir[64];
    char port_file[96];
    char journal[96]; /* replay: the journal directory, in dir */
    char agent_addr[160], client_addr[160];
};

struct result {
    const char *status;
    uint64_t done;
    double secs, jobs_per_s;
    struct bc_pct pct;
    double cpu0, cpu1, sched0, sched1, self0, self1;
    long hwm_kb, rss_kb, rss_idle_kb, rss_after_kb;
    double queue_ms;
    uint64_t lost, dup;
    double serve_ms;        /* replay: start of the second backend to a client's first Pong */
    long replay_rss_kb;     /* replay: the second backend's RSS once it serves */
    double serve_cpu_ms;    /* replay: the second backend's CPU time (user + system) then */
};

static volatile sig_atomic_t g_signal;

static void
on_signal(int sig)
{
    g_signal = sig;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: loadgen [--mode lifecycle|latency|enqueue|drain|replay] [--jobs N] [--payload P]\n"
               "               [--clients S] [--window W] [--agents A] [--slots K]\n"
               "               [--max-seconds T] [--backend PATH] [--backend-arg ARG]...\n"
               "               [--backend-agent ADDR --backend-client ADDR [--backend-pid PID]]\n"
               "               [--parked N] [--no-pin] [--server-cpu C] [--loadgen-cpu C]\n"
               "               [--dialect native|zmq] [--zmq-release main|v0.8|v0.6]\n"
               "               [--session none|plain|ack] [--keys K]\n"
               "               [--key-field launcher|course|user] [--verify] [--quiet]\n"
               "\n"
               "  --mode MODE        lifecycle (throughput), latency (one job in flight), enqueue\n"
               "                     (no agents: enqueue rate and backend bytes per queued job),\n"
               "                     drain (N jobs queued first, then agents work them off),\n"
               "                     replay (N jobs queued with --journal, kill -9, restart on\n"
               "                     the journal: time to serve, RSS before and after)\n"
               "  --jobs N           jobs (1000000; latency 20000)\n"
               "  --payload P        bytes of each job's inputdata msgpack map (128)\n"
               "  --clients S        client connections (4; latency 1)\n"
               "  --window W         jobs in flight per client (64; latency 1)\n"
               "  --agents A         agent connections (8; latency 1; enqueue 0)\n"
               "  --slots K          job slots per agent (64)\n"
               "  --max-seconds T    abort the whole run after T seconds (60)\n"
               "  --backend PATH     the backend to spawn (default: ../inginious-backend next to\n"
               "                     this program, or $ING_BUILD/inginious-backend)\n"
               "  --backend-arg ARG  one more argument for the spawned backend (repeatable)\n"
               "  --backend-agent ADDR, --backend-client ADDR\n"
               "                     attach to a running backend (tcp://HOST:PORT, ipc:///path)\n"
               "  --backend-pid PID  the attached backend's PID (for its CPU time and memory)\n"
               "  --parked N         first park N jobs in docker/parked, which no agent provides,\n"
               "                     from one more client, idle and connected during the run (0)\n"
               "  --no-pin           do not pin the backend to CPU 0 and this program to CPU 1\n"
               "  --dialect D        native (proto.md) or zmq: ZMTP 3.1 DEALERs speaking INGInious'\n"
               "                     msgpack messages, as the webapp and the agents do (native)\n"
               "  --zmq-release R    the zmq messages of INGInious main (v0.8.6 on), v0.8\n"
               "                     (v0.8.0-v0.8.5 agents) or v0.6 (v0.5-v0.6.2) (main)\n"
               "  --session S        native clients open a session (proto.md 7.9): none, plain\n"
               "                     (results not acknowledged) or ack (ClientSessionAck, as the\n"
               "                     library does: each result kept until acknowledged) (none)\n"
               "  --keys K           each job's fair-share key is one of K names (k000000 ...,\n"
               "                     7 bytes like the launcher \"loadgen\"), drawn at random per\n"
               "                     job with a fixed seed; run the backend with --backend-arg\n"
               "                     --fair-share=launcher to share by it (0: no key, 0..1000000)\n"
               "  --key-field F      where the key goes: launcher, course (the course id) or user\n"
               "                     (inputdata[\"@username\"], within the --payload bytes)\n"
               "                     (launcher)\n"
               "  --verify           decode every received frame (message) with the library codec\n"
               "  --quiet            no table on stderr\n");
}

static int
parse_ll(const char *s, long long min, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min)
        return -1;
    *out = v;
    return 0;
}

/* name_index returns the index of s among names[0..n), or -1. */
static int
name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

enum {
    OPT_MODE = 256,
    OPT_JOBS,
    OPT_PAYLOAD,
    OPT_CLIENTS,
    OPT_WINDOW,
    OPT_AGENTS,
    OPT_SLOTS,
    OPT_MAX_SECONDS,
    OPT_BACKEND,
    OPT_BACKEND_ARG,
    OPT_BACKEND_AGENT,
    OPT_BACKEND_CLIENT,
    OPT_BACKEND_PID,
    OPT_NO_PIN,
    OPT_PARKED,
    OPT_SERVER_CPU,
    OPT_LOADGEN_CPU,
    OPT_VERIFY,
    OPT_DIALECT,
    OPT_ZMQ_RELEASE,
    OPT_QUIET,
    OPT_SESSION,
    OPT_KEYS,
    OPT_KEY_FIELD,
    OPT_HELP,
};

static const struct option options[] = {
    {"mode", required_argument, NULL, OPT_MODE},
    {"jobs", required_argument, NULL, OPT_JOBS},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"clients", required_argument, NULL, OPT_CLIENTS},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"agents", required_argument, NULL, OPT_AGENTS},
    {"slots", required_argument, NULL, OPT_SLOTS},
    {"max-seconds", required_argument, NULL, OPT_MAX_SECONDS},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"backend-arg", required_argument, NULL, OPT_BACKEND_ARG},
    {"backend-agent", required_argument, NULL, OPT_BACKEND_AGENT},
    {"backend-client", required_argument, NULL, OPT_BACKEND_CLIENT},
    {"backend-pid", required_argument, NULL, OPT_BACKEND_PID},
    {"no-pin", no_argument, NULL, OPT_NO_PIN},
    {"parked", required_argument, NULL, OPT_PARKED},
    {"server-cpu", required_argument, NULL, OPT_SERVER_CPU},
    {"loadgen-cpu", required_argument, NULL, OPT_LOADGEN_CPU},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"dialect", required_argument, NULL, OPT_DIALECT},
    {"zmq-release", required_argument, NULL, OPT_ZMQ_RELEASE},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"session", required_argument, NULL, OPT_SESSION},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"key-field", required_argument, NULL, OPT_KEY_FIELD},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* parse_opts fills o. Returns 0, 1 (--help printed) or 2 (usage error printed). */
static int
parse_opts(int argc, char **argv, struct opts *o)
{
    long long v;
    int c;
    memset(o, 0, sizeof(*o));
    o->mode = MODE_LIFECYCLE;
    o->jobs = o->payload = o->clients = o->window = o->agents = o->slots = -1;
    o->max_seconds = 60;
    o->pin = true;
    o->loadgen_cpu = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        long long *target = NULL, min = 0;
        switch (c) {
        case OPT_MODE:
            if (strcmp(optarg, "lifecycle") == 0)
                o->mode = MODE_LIFECYCLE;
            else if (strcmp(optarg, "latency") == 0)
                o->mode = MODE_LATENCY;
            else if (strcmp(optarg, "enqueue") == 0)
                o->mode = MODE_ENQUEUE;
            else if (strcmp(optarg, "drain") == 0)
                o->mode = MODE_DRAIN;
            else if (strcmp(optarg, "replay") == 0)
                o->mode = MODE_REPLAY;
            else
                goto bad;
            break;
        case OPT_JOBS:
            target = &o->jobs, min = 1;
            break;
        case OPT_PAYLOAD:
            target = &o->payload, min = 8;
            break;
        case OPT_CLIENTS:
            target = &o->clients, min = 1;
            break;
        case OPT_WINDOW:
            target = &o->window, min = 1;
            break;
        case OPT_AGENTS:
            target = &o->agents, min = 0;
            break;
        case OPT_SLOTS:
            target = &o->slots, min = 1;
            break;
        case OPT_MAX_SECONDS:
            o->max_seconds = strtod(optarg, NULL);
            if (!(o->max_seconds > 0))
                goto bad;
            break;
        case OPT_BACKEND:
            o->backend_bin = optarg;
            break;
        case OPT_BACKEND_ARG:
            if (o->nextra >= (int)(sizeof(o->extra) / sizeof(o->extra[0])))
                goto bad;
            o->extra[o->nextra++] = optarg;
            break;
        case OPT_BACKEND_AGENT:
            o->agent_addr = optarg;
            break;
        case OPT_BACKEND_CLIENT:
            o->client_addr = optarg;
            break;
        case OPT_BACKEND_PID:
            if (parse_ll(optarg, 1, &v) != 0)
                goto bad;
            o->backend_pid = (pid_t)v;
            break;
        case OPT_NO_PIN:
            o->pin = false;
            break;
        case OPT_PARKED:
            target = &o->parked, min = 0;
            break;
        case OPT_KEYS:
            target = &o->keys, min = 0;
            break;
        case OPT_KEY_FIELD:
            if ((v = name_index(bc_key_field_names, 3, optarg)) < 0)
                goto bad;
            o->key_field = (uint8_t)v;
            break;
        case OPT_SERVER_CPU:
        case OPT_LOADGEN_CPU:
            if (parse_ll(optarg, 0, &v) != 0 || v >= CPU_SETSIZE)
                goto bad;
            *(c == OPT_SERVER_CPU ? &o->server_cpu : &o->loadgen_cpu) = (int)v;
            break;
        case OPT_VERIFY:
            o->verify = true;
            break;
        case OPT_SESSION:
            if (strcmp(optarg, "none") == 0)
                o->session = 0;
            else if (strcmp(optarg, "plain") == 0)
                o->session = 1;
            else if (strcmp(optarg, "ack") == 0)
                o->session = 2;
            else
                goto bad;
            break;
        case OPT_DIALECT:
            if (strcmp(optarg, "native") != 0 && strcmp(optarg, "zmq") != 0)
                goto bad;
            o->zmq = strcmp(optarg, "zmq") == 0;
            break;
        case OPT_ZMQ_RELEASE:
            if ((v = name_index(bc_zrel_names, 3, optarg)) < 0)
                goto bad;
            o->zrel = (uint8_t)v;
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            goto bad;
        }
        if (target != NULL && (parse_ll(optarg, min, &v) != 0 || v > (1ll << 40)))
            goto bad;
        if (target != NULL)
            *target = v;
    }
    if (optind != argc || (o->agent_addr == NULL) != (o->client_addr == NULL))
        goto bad;
    if (o->keys > 0 && o->key_field == BC_KEY_USER && o->payload >= 0 &&
        o->payload < 8 + 11 + BC_KEYLEN) {
        fprintf(stderr, "loadgen: --key-field user needs --payload %d or more (the inputdata "
                        "holds \"@username\")\n", 8 + 11 + BC_KEYLEN);
        goto bad;
    }
    bool lat = o->mode == MODE_LATENCY;
    if (o->jobs < 0)
        o->jobs = lat ? 20000 : 1000000;
    if (o->payload < 0)
        o->payload = 128;
    if (o->clients < 0)
        o->clients = lat ? 1 : 4;
    if (o->window < 0)
        o->window = lat ? 1 : 64;
    if (o->agents < 0)
        o->agents = lat ? 1 : o->mode == MODE_ENQUEUE || o->mode == MODE_REPLAY ? 0 : 8;
    if (o->slots < 0)
        o->slots = 64;
    if (o->payload > 64 * 1024 * 1024 || o->clients > 4096 || o->agents > 4096 ||
        o->slots > 65536 || o->keys > BC_MAX_KEYS ||
        (o->mode != MODE_ENQUEUE && o->mode != MODE_REPLAY && o->agents == 0) ||
        (o->mode == MODE_REPLAY && (o->agents != 0 || o->agent_addr != NULL)))
        goto bad;
    return 0;
bad:
    usage(stderr);
    return 2;
}

/* ---------------------------------------------------------------------------------------- */
/* The backend process                                                                       */

static void
default_backend(char *out, size_t cap)
{
    const char *b = getenv("ING_BUILD");
    if (b != NULL && b[0] != '\0') {
        snprintf(out, cap, "%s/inginious-backend", b);
        return;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(out, cap, "build/inginious-backend");
        return;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/'); /* .../build/bench/loadgen */
    if (slash != NULL)
        *slash = '\0';
    slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    snprintf(out, cap, "%s/inginious-backend", self);
}

static int
read_port_file(struct backend_proc *bp)
{
    char b[512], *line, *save = NULL;
    if (bc_read_small(bp->port_file, b, sizeof(b)) <= 0)
        return -1;
    for (line = strtok_r(b, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "agent ", 6) == 0)
            snprintf(bp->agent_addr, sizeof(bp->agent_addr), "%s", line + 6);
        else if (strncmp(line, "client ", 7) == 0)
            snprintf(bp->client_addr, sizeof(bp->client_addr), "%s", line + 7);
    }
    return bp->agent_addr[0] != '\0' && bp->client_addr[0] != '\0' ? 0 : -1;
}

/* spawn_backend starts the backend and waits for its port file. Returns 0 or -1 (message
 * printed). */
static int
spawn_backend(const struct opts *o, struct backend_proc *bp)
{
    char bin[4200], maxw[32];
    const char *argv[48];
    int n = 0;
    if (o->backend_bin != NULL)
        snprintf(bin, sizeof(bin), "%s", o->backend_bin);
    else
        default_backend(bin, sizeof(bin));
    if (bp->dir[0] == '\0') { /* else a restart (replay): the same directory and journal */
        snprintf(bp->dir, sizeof(bp->dir), "/tmp/loadgen.XXXXXX");
        if (mkdtemp(bp->dir) == NULL) {
            fprintf(stderr, "loadgen: mkdtemp: %s\n", strerror(errno));
            bp->dir[0] = '\0';
            return -1;
        }
    }
    snprintf(bp->port_file, sizeof(bp->port_file), "%s/ports", bp->dir);
    snprintf(bp->journal, sizeof(bp->journal), "%s/journal", bp->dir);
    unlink(bp->port_file);
    bp->agent_addr[0] = bp->client_addr[0] = '\0';
    snprintf(maxw, sizeof(maxw), "%lld", o->jobs + 1024 > 10000000 ? o->jobs + 1024 : 10000000);
    argv[n++] = bin;
    argv[n++] = "-q";
    argv[n++] = "--port-file";
    argv[n++] = bp->port_file;
    argv[n++] = "--orphan-timeout";
    argv[n++] = "0";
    argv[n++] = "--max-waiting";
    argv[n++] = maxw;
    argv[n++] = "--max-waiting-per-client";
    argv[n++] = maxw;
    if (o->mode == MODE_ENQUEUE || o->mode == MODE_REPLAY) { /* the check counts the waiting
                                                               * jobs the snapshot lists */
        argv[n++] = "--queue-list-max";
        argv[n++] = "0";
        argv[n++] = "--max-output"; /* a snapshot of a million jobs is over the 16M default */
        argv[n++] = "256M";
    }
    if (o->mode == MODE_REPLAY) {
        argv[n++] = "--journal";
        argv[n++] = bp->journal;
    }
    for (int i = 0; i < o->nextra; i++)
        argv[n++] = o->extra[i];
    argv[n++] = "tcp://127.0.0.1:0";
    argv[n++] = "tcp://127.0.0.1:0";
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "loadgen: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (o->pin && bc_pin(0, o->server_cpu) != 0)
            fprintf(stderr, "loadgen: cannot pin the backend to CPU %d\n", o->server_cpu);
        signal(SIGINT, SIG_IGN); /* ^C stops the load generator, which stops the backend */
        execv(bin, (char *const *)argv);
        fprintf(stderr, "loadgen: cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    bp->pid = pid;
    uint64_t t0 = bc_now_ns();
    while (read_port_file(bp) != 0) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            bp->pid = 0;
            fprintf(stderr, "loadgen: the backend (%s) exited before listening\n", bin);
            return -1;
        }
        if (bc_now_ns() - t0 > 10000000000ull || g_signal != 0) {
            fprintf(stderr, "loadgen: the backend did not write %s in 10 s\n", bp->port_file);
            return -1;
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* rm_journal removes the replay's journal directory and its files. */
static void
rm_journal(const struct backend_proc *bp)
{
    DIR *d = bp->journal[0] != '\0' ? opendir(bp->journal) : NULL;
    if (d == NULL)
        return;
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", bp->journal, de->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(bp->journal);
}

/* stop_backend stops a spawned backend by its PID: SIGTERM, up to 5 s, then SIGKILL. */
static void
stop_backend(struct backend_proc *bp)
{
    if (bp->pid > 0) {
        int st;
        kill(bp->pid, SIGTERM);
        uint64_t t0 = bc_now_ns();
        pid_t r;
        while ((r = waitpid(bp->pid, &st, WNOHANG)) == 0 && bc_now_ns() - t0 < 5000000000ull) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (r == 0) {
            fprintf(stderr, "loadgen: the backend ignored SIGTERM for 5 s: SIGKILL\n");
            kill(bp->pid, SIGKILL);
            waitpid(bp->pid, &st, 0);
        }
        bp->pid = 0;
    }
    if (bp->port_file[0] != '\0')
        unlink(bp->port_file);
    rm_journal(bp);
    if (bp->dir[0] != '\0')
        rmdir(bp->dir);
}

/* ---------------------------------------------------------------------------------------- */
/* The run                                                                                   */

typedef bool until_fn(const struct load *L, uint64_t arg);

static bool
clients_ready(const struct load *L, uint64_t n)
{
    return bc_all_pongs(L, ING_ROLE_CLIENT, n);
}

static bool
agents_ready(const struct load *L, uint64_t n)
{
    return bc_agents_ready(L, n);
}

static bool
all_done(const struct load *L, uint64_t n)
{
    return bc_all_done(L, n);
}

static bool
queue_answered(const struct load *L, uint64_t n)
{
    return bc_queue_answered(L, n);
}

/* run_until polls until until(L, arg) holds. Returns 0, or -1 (L->err), -2 (deadline),
 * -3 (signal). */
static int
run_until(struct load *L, until_fn *until, uint64_t arg, uint64_t deadline)
{
    while (!until(L, arg)) {
        if (g_signal != 0)
            return -3;
        if (bc_now_ns() >= deadline)
            return -2;
        if (bc_poll(L, 50) != 0)
            return -1;
    }
    return 0;
}

static const char *
status_of(int rc)
{
    return rc == 0 ? "ok" : rc == -2 ? "timeout" : rc == -3 ? "interrupted" : "error";
}

static void
report_abort(const struct load *L, const struct opts *o, int rc, const char *phase)
{
    if (rc == -1)
        fprintf(stderr, "loadgen: %s: %s\n", phase, L->err);
    else if (rc == -2)
        fprintf(stderr,
                "loadgen: --max-seconds %.0f reached during %s (%llu of %lld jobs done): "
                "aborting\n",
                o->max_seconds, phase, (unsigned long long)L->done, o->jobs);
    else if (rc == -3)
        fprintf(stderr, "loadgen: signal %d during %s: aborting\n", (int)g_signal, phase);
}

static void
server_sample(pid_t pid, double *cpu, double *sched)
{
    *cpu = pid > 0 ? bc_proc_cpu_s(pid) : -1;
    *sched = pid > 0 ? bc_proc_sched_s(pid) : -1;
}

/* run_load connects the peers and runs the mode. Returns 0 or a run_until code. */
/* queue_all lets L's flooding clients send their quotas (n jobs in all) and waits for the
 * Pong each sends after its last job: every job is then queued (or refused). */
static int
queue_all(struct load *L, uint64_t n, uint64_t deadline)
{
    L->limit = n;
    L->submitting = true;
    int rc = run_until(L, clients_ready, 2, deadline);
    L->submitting = false;
    return rc;
}

/* run_start notes, where the measured run starts, the backend's RSS and CPU time and ours. */
static void
run_start(struct result *r, pid_t pid)
{
    r->rss_idle_kb = pid > 0 ? bc_proc_status_kb(pid, "VmRSS") : -1;
    server_sample(pid, &r->cpu0, &r->sched0);
    r->self0 = bc_self_cpu_s();
}

static int
run_load(const struct opts *o, struct load *L, const char *aaddr, const char *caddr, pid_t pid,
         const struct bc_tmpl *job, struct result *r, uint64_t deadline)
{
    int rc;
    bool enq = o->mode == MODE_ENQUEUE || o->mode == MODE_REPLAY, drain = o->mode == MODE_DRAIN;
    bool flood = enq || drain; /* clients send their quotas back to back, then a Ping */
    for (long long i = 0; i < o->clients; i++) {
        struct bc_conn *c = bc_add_client(L, caddr, job, flood ? 0 : (uint64_t)o->window);
        if (c == NULL) {
            report_abort(L, o, -1, "client connection");
            return -1;
        }
        if (flood) {
            c->quota = (uint64_t)(o->jobs / o->clients + (i < o->jobs % o->clients));
            c->ping_after = true;
        }
    }
    if ((rc = run_until(L, clients_ready, 1, deadline)) != 0) {
        report_abort(L, o, rc, "client registration");
        return rc;
    }
    if (drain) {
        /* Queue every job first (no agent yet); the run starts as the agents connect. */
        rc = queue_all(L, (uint64_t)o->jobs, deadline);
        if (rc != 0 || L->done != 0) {
            report_abort(L, o, rc != 0 ? rc : -1, "queueing the jobs");
            return rc != 0 ? rc : -1;
        }
        run_start(r, pid);
        L->t_first = bc_now_ns();
    }
    for (long long i = 0; i < o->agents; i++)
        if (bc_add_agent(L, aaddr, (uint32_t)o->slots, "default") == NULL) {
            report_abort(L, o, -1, "agent connection");
            return -1;
        }
    if ((rc = run_until(L, agents_ready, 1, deadline)) != 0) {
        report_abort(L, o, rc, "agent registration");
        return rc;
    }
    if (!drain) {
        run_start(r, pid);
        L->limit = (uint64_t)o->jobs;
        L->submitting = true;
    }
    if (enq) {
        rc = run_until(L, clients_ready, 2, deadline);
        L->t_last = bc_now_ns();
    } else {
        rc = run_until(L, all_done, (uint64_t)o->jobs, deadline);
    }
    L->submitting = false;
    server_sample(pid, &r->cpu1, &r->sched1);
    r->self1 = bc_self_cpu_s();
    r->rss_after_kb = pid > 0 ? bc_proc_status_kb(pid, "VmRSS") : -1;
    r->hwm_kb = pid > 0 ? bc_proc_status_kb(pid, "VmHWM") : -1;
    r->rss_kb = r->rss_after_kb;
    if (rc != 0) {
        report_abort(L, o, rc, enq ? "the enqueue" : "the run");
        return rc;
    }
    if (enq && o->mode == MODE_REPLAY)
        return 0; /* the check is the restarted backend's (replay) */
    if (enq) {
        /* Every job must be waiting: ask for the queue (the snapshot is one big frame). */
        struct bc_conn *c = L->conns[0];
        uint64_t t0 = bc_now_ns();
        if (bc_send_empty(L, c, ING_CLIENT_GET_QUEUE) != 0) {
            report_abort(L, o, -1, "the queue check");
            return -1;
        }
        if ((rc = run_until(L, queue_answered, 1, deadline)) != 0) {
            report_abort(L, o, rc, "the queue check");
            return rc;
        }
        r->queue_ms = (double)(L->t_queue - t0) / 1e6;
    }
    return 0;
}

static void
print_result(const struct opts *o, const struct load *L, struct result *r, size_t body_len)
{
    bool enq = o->mode == MODE_ENQUEUE || o->mode == MODE_REPLAY, drain = o->mode == MODE_DRAIN;
    double cpu = r->cpu0 >= 0 && r->cpu1 >= 0 ? r->cpu1 - r->cpu0 : -1;
    double sched = r->sched0 >= 0 && r->sched1 >= 0 ? r->sched1 - r->sched0 : -1;
    double per_job = cpu >= 0 && o->jobs > 0 ? cpu * 1e6 / (double)o->jobs : -1;
    double bpj = -1, ovh = -1;
    if (enq && r->rss_idle_kb >= 0 && r->rss_after_kb >= 0) {
        bpj = (double)(r->rss_after_kb - r->rss_idle_kb) * 1024.0 / (double)o->jobs;
        ovh = bpj - (double)body_len;
    }
    printf("RESULT status=%s mode=%s jobs=%lld done=%llu payload=%lld job_body_bytes=%zu "
           "clients=%lld window=%lld agents=%lld slots=%lld secs=%.4f jobs_per_s=%.1f "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
           "started=%llu lost=%llu dup=%llu bad=%llu errors=%llu server_cpu_s=%.3f "
           "server_sched_s=%.3f server_cpu_us_per_job=%.3f server_hwm_kb=%ld server_rss_kb=%ld "
           "loadgen_cpu_s=%.3f parked=%lld keys=%lld dialect=%s",
           r->status, mode_names[o->mode], o->jobs, (unsigned long long)r->done, o->payload,
           body_len, o->clients, enq || drain ? 0 : o->window, o->agents, o->slots, r->secs,
           r->jobs_per_s, r->pct.p50, r->pct.p90, r->pct.p99, r->pct.p999, r->pct.max, r->pct.mean,
           (unsigned long long)L->started, (unsigned long long)r->lost, (unsigned long long)r->dup,
           (unsigned long long)L->bad, (unsigned long long)L->errors, cpu, sched, per_job,
           r->hwm_kb, r->rss_kb, r->self1 - r->self0, o->parked, o->keys,
           o->zmq ? "zmq" : "native");
    if (o->keys > 0)
        printf(" key_field=%s", bc_key_field_names[o->key_field]);
    if (o->zmq)
        printf(" zmq_release=%s", bc_zrel_names[o->zrel]);
    if (o->session != 0)
        printf(" session=%s", o->session == 2 ? "ack" : "plain");
    if (enq)
        printf(" rss_idle_kb=%ld rss_after_kb=%ld bytes_per_job=%.1f overhead_per_job=%.1f "
               "queue_waiting=%u queue_ms=%.1f",
               r->rss_idle_kb, r->rss_after_kb, bpj, ovh, L->queue_waiting, r->queue_ms);
    if (o->mode == MODE_REPLAY)
        printf(" serve_ms=%.1f serve_cpu_ms=%.1f replay_rss_kb=%ld replay_rss_ratio=%.3f",
               r->serve_ms, r->serve_cpu_ms, r->replay_rss_kb,
               r->rss_after_kb > 0 ? (double)r->replay_rss_kb / (double)r->rss_after_kb : -1.0);
    printf("\n");
    fflush(stdout);
    if (o->quiet)
        return;
    fprintf(stderr, "loadgen: %s, %s dialect, %lld jobs, inputdata %lld B (ClientNewJob %s %zu B), ",
            mode_names[o->mode], o->zmq ? "zmq" : "native", o->jobs, o->payload,
            o->zmq ? "message" : "body", body_len);
    if (enq)
        fprintf(stderr, "%lld clients flooding, no agent\n", o->clients);
    else if (drain)
        fprintf(stderr, "%lld clients queue them all, then %lld agents x %lld slots\n", o->clients,
                o->agents, o->slots);
    else
        fprintf(stderr, "%lld clients x %lld in flight, %lld agents x %lld slots\n", o->clients,
                o->window, o->agents, o->slots);
    if (o->keys > 0)
        fprintf(stderr, "  %-16s %lld names (k000000 ...) as the %s, drawn per job\n",
                "fair-share keys", o->keys, bc_key_field_names[o->key_field]);
    fprintf(stderr, "  %-16s %.0f jobs/s (%.3f s, %s to last %s)\n",
            enq ? "enqueue rate" : "throughput", r->jobs_per_s, r->secs,
            drain ? "first agent" : "first submit", enq ? "Pong" : "result");
    if (!enq)
        fprintf(stderr, "  %-16s p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n",
                drain ? "in system (us)" : "latency (us)", r->pct.p50, r->pct.p90, r->pct.p99,
                r->pct.p999, r->pct.max, r->pct.mean);
    fprintf(stderr, "  %-16s %.3f s utime+stime (%.3f us/job), schedstat %.3f s; peak RSS %ld kB\n",
            "backend CPU", cpu, per_job, sched, r->hwm_kb);
    if (enq)
        fprintf(stderr,
                "  %-16s RSS %ld kB idle -> %ld kB with %lld jobs: %.1f B/job, %.1f B over "
                "the %zu-byte body\n"
                "  %-16s %u waiting (snapshot round trip %.1f ms)\n",
                "memory", r->rss_idle_kb, r->rss_after_kb, o->jobs, bpj, ovh, body_len,
                "queue check", L->queue_waiting, r->queue_ms);
    if (o->mode == MODE_REPLAY)
        fprintf(stderr,
                "  %-16s kill -9, restart on the journal: serving after %.1f ms (%.1f ms of "
                "CPU); RSS %ld kB (%.1f %% of the %ld kB before)\n",
                "replay", r->serve_ms, r->serve_cpu_ms, r->replay_rss_kb,
                r->rss_after_kb > 0 ? 100.0 * (double)r->replay_rss_kb / (double)r->rss_after_kb
                                    : -1.0,
                r->rss_after_kb);
    fprintf(stderr, "  %-16s %.3f s CPU\n", "load generator", r->self1 - r->self0);
    fprintf(stderr, "  %-16s %llu done, %llu started, lost %llu, dup %llu, bad %llu, errors %llu\n",
            "check", (unsigned long long)r->done, (unsigned long long)L->started,
            (unsigned long long)r->lost, (unsigned long long)r->dup, (unsigned long long)L->bad,
            (unsigned long long)L->errors);
}

static void
compute(const struct opts *o, struct load *L, struct result *r)
{
    uint64_t n = 0;
    uint64_t *v = malloc((L->submitted ? L->submitted : 1) * sizeof(*v));
    for (uint64_t i = 0; v != NULL && i < L->submitted; i++)
        if (L->lat[i] != 0)
            v[n++] = L->lat[i];
    if (o->mode != MODE_ENQUEUE && o->mode != MODE_REPLAY && v != NULL)
        bc_percentiles(v, n, &r->pct);
    free(v);
    r->secs = L->t_last > L->t_first ? (double)(L->t_last - L->t_first) / 1e9 : 0;
    if (o->mode == MODE_ENQUEUE || o->mode == MODE_REPLAY) {
        /* Queued = waiting in the snapshot; refused jobs came back as results. */
        uint64_t seen = L->queue_waiting + L->done;
        r->done = L->queue_waiting;
        r->lost = (uint64_t)o->jobs > seen ? (uint64_t)o->jobs - seen : 0;
        r->dup = L->dup + (seen > (uint64_t)o->jobs ? seen - (uint64_t)o->jobs : 0);
        r->jobs_per_s = r->secs > 0 ? (double)L->submitted / r->secs : 0;
    } else {
        r->done = L->done;
        r->lost = (uint64_t)o->jobs - L->done;
        r->dup = L->dup;
        r->jobs_per_s = r->secs > 0 ? (double)L->done / r->secs : 0;
    }
}

/* replay kills the backend (SIGKILL) that queued the jobs, its clients still connected, and
 * starts another on its journal: the time until a new client's first Pong, its RSS, and
 * its queue snapshot (into L->queue_waiting). Returns 0 or a run_until code. */
static int
replay(const struct opts *o, struct backend_proc *bp, struct load *L, const struct bc_tmpl *job,
       struct result *r, uint64_t deadline)
{
    int st;
    kill(bp->pid, SIGKILL);
    waitpid(bp->pid, &st, 0);
    bp->pid = 0;
    uint64_t t0 = bc_now_ns();
    if (spawn_backend(o, bp) != 0)
        return -1;
    struct load R;
    if (bc_load_init(&R, 1) != 0)
        return -1;
    int rc = bc_add_client(&R, bp->client_addr, job, 0) != NULL ? 0 : -1;
    if (rc == 0)
        rc = run_until(&R, clients_ready, 1, deadline);
    r->serve_ms = (double)(bc_now_ns() - t0) / 1e6;
    r->serve_cpu_ms = bc_proc_cpu_s(bp->pid) * 1e3;
    r->replay_rss_kb = bc_proc_status_kb(bp->pid, "VmRSS");
    uint64_t tq = bc_now_ns();
    if (rc == 0)
        rc = bc_send_empty(&R, R.conns[0], ING_CLIENT_GET_QUEUE) != 0 ? -1 : 0;
    if (rc == 0)
        rc = run_until(&R, queue_answered, 1, deadline);
    r->queue_ms = (double)(R.t_queue - tq) / 1e6;
    L->queue_waiting = R.queue_waiting;
    if (rc != 0)
        report_abort(&R, o, rc, "the restart on the journal");
    bc_load_fini(&R);
    return rc;
}

/* park sends o->parked jobs for docker/parked (no agent provides it) from a client of P,
 * then waits for its Pong: they all wait in the backend. P stays open during the run. */
static int
park(const struct opts *o, struct load *P, const struct bc_tmpl *t, const char *caddr,
     uint64_t deadline)
{
    struct bc_conn *c = bc_add_client(P, caddr, t, 0);
    if (c == NULL) {
        fprintf(stderr, "loadgen: parking client: %s\n", P->err);
        return -1;
    }
    c->idx = 0xffff; /* ids apart from the run's clients' (0, 1, ...) */
    c->quota = (uint64_t)o->parked;
    c->ping_after = true;
    int rc = run_until(P, clients_ready, 1, deadline);
    if (rc == 0)
        rc = queue_all(P, (uint64_t)o->parked, deadline);
    if (rc != 0 || P->errors != 0 || P->done != 0) {
        fprintf(stderr, "loadgen: parking %lld jobs failed: %s\n", o->parked,
                P->err[0] ? P->err : "refused or answered");
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc != 0)
        return prc == 1 ? 0 : 2;
    uint64_t deadline = bc_now_ns() + (uint64_t)(o.max_seconds * 1e9);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (o.pin && !(bc_cpu_usable(o.loadgen_cpu) && bc_cpu_usable(o.server_cpu))) {
        fprintf(stderr, "loadgen: CPUs %d and %d are not both usable: not pinning\n", o.server_cpu,
                o.loadgen_cpu);
        o.pin = false;
    }
    if (o.pin && bc_pin(0, o.loadgen_cpu) != 0)
        fprintf(stderr, "loadgen: cannot pin to CPU %d\n", o.loadgen_cpu);

    struct bc_tmpl job;
    size_t body_len = 0;
    memset(&job, 0, sizeof(job));
    uint32_t keys = (uint32_t)o.keys;
    if ((o.zmq ? bc_zjob_tmpl_keys(&job, (uint32_t)o.payload, 0, "default", o.zrel, keys,
                                   o.key_field, &body_len)
               : bc_job_tmpl_keys(&job, (uint32_t)o.payload, 0, "default", keys, o.key_field,
                                  &body_len)) != 0) {
        fprintf(stderr, "loadgen: cannot encode the job\n");
        free(job.frame);
        return 1;
    }
    struct load L;
    if (bc_load_init(&L, (uint64_t)o.jobs) != 0 || (o.zmq && bc_load_dialect(&L, o.zrel) != 0)) {
        fprintf(stderr, "loadgen: out of memory\n");
        bc_load_fini(&L);
        free(job.frame);
        return 1;
    }
    L.verify = o.verify;
    L.session = o.session;
    struct backend_proc bp;
    memset(&bp, 0, sizeof(bp));
    const char *aaddr = o.agent_addr, *caddr = o.client_addr;
    pid_t pid = o.backend_pid;
    if (aaddr == NULL) {
        if (spawn_backend(&o, &bp) != 0) {
            stop_backend(&bp);
            bc_load_fini(&L);
            free(job.frame);
            return 1;
        }
        aaddr = bp.agent_addr;
        caddr = bp.client_addr;
        pid = bp.pid;
    }
    struct result r;
    memset(&r, 0, sizeof(r));
    r.rss_idle_kb = r.rss_after_kb = r.hwm_kb = r.rss_kb = -1;
    r.cpu0 = r.cpu1 = r.sched0 = r.sched1 = -1;
    struct bc_tmpl ptmpl;
    size_t pbody = 0;
    struct load P;
    memset(&ptmpl, 0, sizeof(ptmpl));
    int rc = bc_load_init(&P, (uint64_t)o.parked);
    if (rc == 0 && o.zmq)
        rc = bc_load_dialect(&P, o.zrel);
    if (rc == 0 && o.parked > 0)
        rc = (o.zmq ? bc_zjob_tmpl(&ptmpl, (uint32_t)o.payload, 0, "parked", o.zrel, &pbody)
                    : bc_job_tmpl(&ptmpl, (uint32_t)o.payload, 0, "parked", &pbody)) != 0
                 ? -1
                 : park(&o, &P, &ptmpl, caddr, deadline);
    if (rc == 0)
        rc = run_load(&o, &L, aaddr, caddr, pid, &job, &r, deadline);
    else
        r.status = "park_failed";
    if (rc == 0 && o.mode == MODE_REPLAY)
        rc = replay(&o, &bp, &L, &job, &r, deadline);
    if (r.status == NULL)
        r.status = status_of(rc);
    compute(&o, &L, &r);
    if (rc == 0 && (r.lost != 0 || r.dup != 0 || L.bad != 0 || L.errors != 0))
        r.status = "check_failed";
    print_result(&o, &L, &r, body_len);
    /* Close first: the backend drops what is still queued, then SIGTERM finds no job. */
    bc_load_fini(&L);
    bc_load_fini(&P);
    stop_backend(&bp);
    free(job.frame);
    free(ptmpl.frame);
    return strcmp(r.status, "ok") == 0 ? 0 : 1;
}
