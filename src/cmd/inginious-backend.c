/* SPDX-License-Identifier: MIT */
/* inginious-backend: the command. Options, then the server (server.h). The only place that
 * calls exit(). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "auth.h"
#include "inginious/version.h"
#include "journal.h"
#include "log.h"
#include "opt.h"
#include "sd.h"
#include "server.h"
#include "zbridge.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: inginious-backend [options] [AGENT_ADDR [CLIENT_ADDR]]\n"
            "\n"
            "The INGInious job dispatcher. Agents connect to AGENT_ADDR (default\n"
            "tcp://127.0.0.1:2001), clients to CLIENT_ADDR (default tcp://127.0.0.1:2000).\n"
            "Addresses: tcp://HOST:PORT, tcp://*:PORT, tcp://[::1]:PORT, ipc:///path.\n"
            "Durations: N (seconds), Nms, Ns, Nm, Nh, Nd. Sizes: N, NK, NM, NG (bytes).\n"
            "\n"
            "  -v, --verbose               log every message handled (DEBUG)\n"
            "      --debugmode             accepted and ignored (the Python backend's asyncio\n"
            "                              debug flag), so its command lines carry over\n"
            "  -q, --quiet                 log warnings and errors only\n"
            "      --ping-interval DUR     agent heartbeat period (1s; 1ms to 1h)\n"
            "      --ping-max N            unanswered pings before an agent is removed (5)\n"
            "      --kill-timeout DUR      wait for an agent to answer a kill (30s; 0 = forever;\n"
            "                              at most 7d)\n"
            "      --orphan-timeout DUR    wait for an agent providing a job's environment\n"
            "                              (60s; 0 = forever; at most 7d)\n"
            "      --drain-timeout DUR     on SIGTERM, time running jobs get to finish (30s;\n"
            "                              at most 7d)\n"
            "      --handshake-timeout DUR time a new connection gets to open: preamble,\n"
            "                              authentication and hello (10s; 1ms to 1h)\n"
            "      --retry-lost-jobs N     requeue a started job whose agent is lost, N times (0)\n"
            "      --max-requeues N        requeues of one job after agent losses, started or\n"
            "                              not; one more ends it crash (5)\n"
            "      --job-deadline-margin DUR  a running job ends crash \"Agent did not answer in\n"
            "                              time\" after its hard_time (else 3 x time, else 1h)\n"
            "                              plus DUR (30s; proto.md 7.4)\n"
            "      --max-slots-per-agent N a hello announcing more slots is refused (1024)\n"
            "      --max-envs-per-agent N  environments one hello may announce (100000)\n"
            "      --max-envs N            environments of all agents together (1000000)\n"
            "      --max-env-bytes SIZE    size of the environment list sent to clients (16M;\n"
            "                              never more than --max-frame less 256)\n"
            "      --env-grace DUR         a lost agent's environments stay listed this long,\n"
            "                              so that a reconnect sends one list (1s; 0 = none)\n"
            "      --resume-grace DUR      the running jobs of a lost agent that can resume,\n"
            "                              and after a restart those of the journal, wait this\n"
            "                              long for their agent to claim them (10s; 0 = lost\n"
            "                              at once; at most 1h; proto.md 7.10)\n"
            "      --max-frame SIZE        largest message body accepted (64M; at most 1G)\n"
            "      --max-output SIZE       pending output per peer before it is dropped (16M;\n"
            "                              4K to 64G; an environment list it shares counts);\n"
            "                              4 x SIZE: results a session may leave unacknowledged\n"
            "      --max-memory SIZE       budget over buffers, job bodies, environment lists,\n"
            "                              hellos and HTTP (1/4 of the RAM, 256M..16G;\n"
            "                              16M to 1T); at 7/8 of it new\n"
            "                              jobs end crash 'Backend memory full', new input\n"
            "                              gets Error OVERLOAD\n"
            "      --max-job-bytes-per-client SIZE  job bodies one client may have held\n"
            "                              (1/4 of --max-memory; 4K to 1T)\n"
            "      --frame-timeout DUR     time a started frame gets to arrive whole (30s;\n"
            "                              1ms to 1d)\n"
            "      --max-connections-per-address N  connections from one IP address\n"
            "                              (0 = no limit, the default; at most 10000000)\n"
            "      --max-connections N     simultaneous connections (10000; lowered at start to\n"
            "                              what RLIMIT_NOFILE allows, after raising it)\n"
            "      --max-waiting N         waiting jobs in total (10000000; at most 1000000000)\n"
            "      --max-waiting-per-client N  waiting jobs per client (10000000)\n"
            "      --max-errors N          protocol errors before a peer is closed (100)\n"
            "      --kill-policy any|owner which clients may kill a job (any, as INGInious)\n"
            "      --queue-list-max N      waiting jobs a queue snapshot lists, oldest first\n"
            "                              (10000; 0 = all, linear in the queue); with fair\n"
            "                              share, the first in dispatch order\n"
            "      --fair-share none|launcher|course|user  share each environment's slots\n"
            "                              equally between the keys of its waiting jobs of\n"
            "                              one priority: the launcher, the course id or\n"
            "                              inputdata's @username (none: INGInious' order,\n"
            "                              the default; proto.md 7.4)\n"
            "      --fair-weight KEY=N     key KEY gets N shares (1 to 1000; default 1;\n"
            "                              repeatable)\n"
            "      --priority-aging DUR    a waiting job's priority improves by one level every\n"
            "                              DUR (0 = never, the default; at most 7d)\n"
            "      --agent-secret-file F   agents must prove they know the secret in F\n"
            "      --client-secret-file F  clients must prove they know the secret in F\n"
            "                              (HMAC-SHA-256 challenge-response, proto.md 6; the\n"
            "                              secret never crosses the wire; native peers only)\n"
            "      --agent-allow CIDR      accept agents only from these addresses (repeatable,\n"
            "                              or comma-separated: 10.0.0.0/8,::1)\n"
            "      --client-allow CIDR     the same for clients\n"
            "      --agent-allow-file F    more agent addresses, read from F (one or more per\n"
            "                              line, # comments); re-read on SIGHUP\n"
            "      --client-allow-file F   the same for clients\n"
            "      --ipv6-only             tcp://[::]:PORT accepts IPv6 peers only (default:\n"
            "                              IPv4 peers too, as ::ffff:a.b.c.d)\n"
            "      --job-field NAME        course_id (default) or taskset_id: the course field\n"
            "                              sent to ZeroMQ agents (both are accepted from clients)\n"
            "      --zmq-greet-first       send the ZeroMQ greeting as soon as a connection is\n"
            "                              accepted, as libzmq does, for ZeroMQ peers that wait\n"
            "                              for it; endpoints without a secret then serve ZeroMQ\n"
            "                              peers only (proto.md 11.1)\n"
            "      --zmq-kill-state auto|always|never  whether BackendKillJob to ZeroMQ\n"
            "                              agents carries state: auto (default) from each\n"
            "                              hello; never for v0.7.x and v0.8.0 agents, always\n"
            "                              for v0.8.1 and later (proto.md 11.2)\n"
            "      --journal DIR           keep the queue in a write-ahead journal in DIR (off by\n"
            "                              default): waiting jobs survive a crash or a restart\n"
            "                              (README: Durability); DIR is locked (flock): a\n"
            "                              second backend on it refuses to start\n"
            "      --fsync MODE            always, never or 'interval DUR' (default interval\n"
            "                              10ms): when the journal is synced to the disk\n"
            "      --journal-segment-size SIZE  journal file size before the next (64M; 4K to\n"
            "                              4G less 1)\n"
            "      --journal-repair        start on a journal with corruption before its tail:\n"
            "                              keep what precedes it, move the rest to *.corrupt\n"
            "      --session-ttl DUR       a client session's jobs and results wait this long\n"
            "                              for it to reconnect (10m; proto.md 7.9)\n"
            "      --port-file PATH        write the bound addresses to PATH once listening\n"
            "      --metrics ADDR          serve HTTP on ADDR (tcp://HOST:PORT, e.g.\n"
            "                              tcp://127.0.0.1:9464; off by default): /metrics\n"
            "                              (Prometheus), /status (JSON), / (status page)\n"
            "      --metrics-allow CIDR    accept metrics scrapers only from these addresses\n"
            "                              (repeatable; default loopback only)\n"
            "      --metrics-max-envs N    environments with their own label in /metrics, the\n"
            "                              deepest; the others summed as \"other\" (100)\n"
            "      --metrics-timeout DUR   time a request head gets to arrive, and an idle\n"
            "                              keep-alive connection to stay open (10s)\n"
            "      --metrics-max-connections N  simultaneous HTTP connections; more get 503 (128)\n"
            "      --metrics-keepalive N   requests per HTTP connection (100)\n"
            "      --help                  this text\n"
            "      --version               the version\n"
            "\n"
            "Signals: SIGTERM and SIGINT drain (no more dispatch; running jobs get\n"
            "--drain-timeout to finish; a second one exits at once). SIGHUP re-reads the\n"
            "secret and allow-list files; a file that cannot be read or parsed is refused\n"
            "with a log line and the settings in use are kept.\n"
            "systemd: with $LISTEN_FDS (socket activation) the listeners named agents and\n"
            "clients (else in that order) are served instead of binding the addresses;\n"
            "with $NOTIFY_SOCKET it reports READY=1, STATUS=, STOPPING=1 and, with\n"
            "$WATCHDOG_USEC, WATCHDOG=1 (Type=notify).\n");
}

enum {
    OPT_PING_INTERVAL = 256,
    OPT_PING_MAX,
    OPT_KILL_TIMEOUT,
    OPT_ORPHAN_TIMEOUT,
    OPT_DRAIN_TIMEOUT,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_RETRY,
    OPT_MAX_FRAME,
    OPT_MAX_OUTPUT,
    OPT_MAX_CONNS,
    OPT_MAX_WAITING,
    OPT_MAX_WAITING_CLIENT,
    OPT_MAX_ERRORS,
    OPT_KILL_POLICY,
    OPT_QUEUE_LIST_MAX,
    OPT_PORT_FILE,
    OPT_JOB_FIELD,
    OPT_ZMQ_GREET_FIRST,
    OPT_ZMQ_KILL_STATE,
    OPT_AGENT_SECRET,
    OPT_CLIENT_SECRET,
    OPT_AGENT_ALLOW,
    OPT_CLIENT_ALLOW,
    OPT_AGENT_ALLOW_FILE,
    OPT_CLIENT_ALLOW_FILE,
    OPT_IPV6_ONLY,
    OPT_METRICS,
    OPT_METRICS_ALLOW,
    OPT_METRICS_MAX_ENVS,
    OPT_METRICS_TIMEOUT,
    OPT_METRICS_MAX_CONNS,
    OPT_METRICS_KEEPALIVE,
    OPT_HELP,
    OPT_VERSION,
    OPT_DEBUGMODE,
    /* Budgets (issue 13, server part) */
    OPT_MAX_MEMORY,
    OPT_MAX_CLIENT_BYTES,
    OPT_FRAME_TIMEOUT,
    OPT_MAX_CONNS_ADDR,
    OPT_MAX_REQUEUES,
    OPT_DEADLINE_MARGIN,
    OPT_MAX_SLOTS,
    OPT_MAX_ENVS_AGENT,
    OPT_MAX_ENVS,
    OPT_MAX_ENV_BYTES,
    OPT_ENV_GRACE,
    OPT_SESSION_TTL,
    OPT_RESUME_GRACE,
    /* Fair share (issue 18) */
    OPT_FAIR_SHARE,
    OPT_FAIR_WEIGHT,
    OPT_PRIORITY_AGING,
    OPT_JOURNAL,
    OPT_FSYNC,
    OPT_JOURNAL_SEGMENT,
    OPT_JOURNAL_REPAIR,
};

static const struct option options[] = {
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"ping-interval", required_argument, NULL, OPT_PING_INTERVAL},
    {"ping-max", required_argument, NULL, OPT_PING_MAX},
    {"kill-timeout", required_argument, NULL, OPT_KILL_TIMEOUT},
    {"orphan-timeout", required_argument, NULL, OPT_ORPHAN_TIMEOUT},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"retry-lost-jobs", required_argument, NULL, OPT_RETRY},
    {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
    {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNS},
    {"max-waiting", required_argument, NULL, OPT_MAX_WAITING},
    {"max-waiting-per-client", required_argument, NULL, OPT_MAX_WAITING_CLIENT},
    {"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
    {"kill-policy", required_argument, NULL, OPT_KILL_POLICY},
    {"queue-list-max", required_argument, NULL, OPT_QUEUE_LIST_MAX},
    {"port-file", required_argument, NULL, OPT_PORT_FILE},
    {"job-field", required_argument, NULL, OPT_JOB_FIELD},
    {"zmq-greet-first", no_argument, NULL, OPT_ZMQ_GREET_FIRST},
    {"zmq-kill-state", required_argument, NULL, OPT_ZMQ_KILL_STATE},
    {"agent-secret-file", required_argument, NULL, OPT_AGENT_SECRET},
    {"client-secret-file", required_argument, NULL, OPT_CLIENT_SECRET},
    {"agent-allow", required_argument, NULL, OPT_AGENT_ALLOW},
    {"client-allow", required_argument, NULL, OPT_CLIENT_ALLOW},
    {"agent-allow-file", required_argument, NULL, OPT_AGENT_ALLOW_FILE},
    {"client-allow-file", required_argument, NULL, OPT_CLIENT_ALLOW_FILE},
    {"ipv6-only", no_argument, NULL, OPT_IPV6_ONLY},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"metrics-allow", required_argument, NULL, OPT_METRICS_ALLOW},
    {"metrics-max-envs", required_argument, NULL, OPT_METRICS_MAX_ENVS},
    {"metrics-timeout", required_argument, NULL, OPT_METRICS_TIMEOUT},
    {"metrics-max-connections", required_argument, NULL, OPT_METRICS_MAX_CONNS},
    {"metrics-keepalive", required_argument, NULL, OPT_METRICS_KEEPALIVE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"debugmode", no_argument, NULL, OPT_DEBUGMODE},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"max-job-bytes-per-client", required_argument, NULL, OPT_MAX_CLIENT_BYTES},
    {"frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT},
    {"max-connections-per-address", required_argument, NULL, OPT_MAX_CONNS_ADDR},
    {"max-requeues", required_argument, NULL, OPT_MAX_REQUEUES},
    {"job-deadline-margin", required_argument, NULL, OPT_DEADLINE_MARGIN},
    {"max-slots-per-agent", required_argument, NULL, OPT_MAX_SLOTS},
    {"max-envs-per-agent", required_argument, NULL, OPT_MAX_ENVS_AGENT},
    {"max-envs", required_argument, NULL, OPT_MAX_ENVS},
    {"max-env-bytes", required_argument, NULL, OPT_MAX_ENV_BYTES},
    {"env-grace", required_argument, NULL, OPT_ENV_GRACE},
    {"resume-grace", required_argument, NULL, OPT_RESUME_GRACE},
    {"fair-share", required_argument, NULL, OPT_FAIR_SHARE},
    {"fair-weight", required_argument, NULL, OPT_FAIR_WEIGHT},
    {"priority-aging", required_argument, NULL, OPT_PRIORITY_AGING},
    {"journal", required_argument, NULL, OPT_JOURNAL},
    {"fsync", required_argument, NULL, OPT_FSYNC},
    {"journal-segment-size", required_argument, NULL, OPT_JOURNAL_SEGMENT},
    {"journal-repair", no_argument, NULL, OPT_JOURNAL_REPAIR},
    {"session-ttl", required_argument, NULL, OPT_SESSION_TTL},
    {NULL, 0, NULL, 0},
};

#define MAX_ALLOW 256

/* What SIGHUP re-reads: the secret files and the allow-list files, on top of the
 * --*-allow entries of the command line. Two generations: the server uses gen[cur] while a
 * reload fills the other, which becomes current only when every file was read. [0] agents,
 * [1] clients everywhere. */
struct settings {
    uint8_t *secret[2];
    size_t secret_len[2];
    struct acl_entry allow[2][MAX_ALLOW];
    size_t nallow[2];
};
static struct settings gen[2];
static int cur;
static const char *secret_file[2], *allow_file[2];
static struct acl_entry cmd_allow[2][MAX_ALLOW]; /* --agent-allow, --client-allow */
static size_t ncmd_allow[2];
static struct acl_entry metrics_allow[MAX_ALLOW]; /* --metrics-allow */
static struct fair_weight fair_weights[FAIR_MAX_WEIGHTS]; /* --fair-weight */

static void
settings_clear(struct settings *st)
{
    for (int ep = 0; ep < 2; ep++) {
        if (st->secret[ep] != NULL) {
            explicit_bzero(st->secret[ep], st->secret_len[ep]);
            free(st->secret[ep]);
        }
        st->secret[ep] = NULL;
        st->secret_len[ep] = 0;
        st->nallow[ep] = 0;
    }
}

/* settings_load reads every file into st. Returns 0 or -1 with a reason in err. */
static int
settings_load(struct settings *st, char *err, size_t errlen)
{
    settings_clear(st);
    for (int ep = 0; ep < 2; ep++) {
        const char *who = ep == 0 ? "agent" : "client";
        if (secret_file[ep] != NULL) {
            int rc = auth_load_secret(secret_file[ep], &st->secret[ep], &st->secret_len[ep]);
            if (rc != 0) {
                snprintf(err, errlen, "cannot read the %s secret in %s: %s", who, secret_file[ep],
                         rc == -EINVAL ? "empty" : strerror(-rc));
                return -1;
            }
        }
        memcpy(st->allow[ep], cmd_allow[ep], ncmd_allow[ep] * sizeof(cmd_allow[ep][0]));
        st->nallow[ep] = ncmd_allow[ep];
        if (allow_file[ep] != NULL) {
            char why[400];
            if (acl_load_file(allow_file[ep], st->allow[ep], MAX_ALLOW, &st->nallow[ep], why,
                              sizeof(why)) != 0) {
                snprintf(err, errlen, "bad %s allow-list file %s", who, why);
                return -1;
            }
        }
    }
    return 0;
}

/* settings_apply points cfg at st. */
static void
settings_apply(const struct settings *st, struct srv_config *cfg)
{
    for (int ep = 0; ep < 2; ep++) {
        cfg->secret[ep] = st->secret[ep];
        cfg->secret_len[ep] = st->secret_len[ep];
        cfg->allow[ep] = st->nallow[ep] > 0 ? st->allow[ep] : NULL;
        cfg->nallow[ep] = st->nallow[ep];
    }
}

/* reload is the server's SIGHUP hook (srv_config.reload). */
static int
reload(void *arg, struct srv_config *next, char *err, size_t errlen)
{
    (void)arg;
    if (settings_load(&gen[!cur], err, errlen) != 0)
        return -1;
    cur = !cur;
    settings_apply(&gen[cur], next);
    return 0;
}

/* need reads an option's value as kind within [min, max], or exits with a clear message
 * (status 2). */
static uint64_t
need(enum opt_kind kind, const char *name, const char *val, uint64_t min, uint64_t max)
{
    uint64_t v = 0;
    if (opt_parse(kind, val, min, max, &v) != 0) {
        char want[96];
        opt_describe(kind, min, max, want, sizeof(want));
        fprintf(stderr, "inginious-backend: bad value for --%s: '%s' (expected %s)\n", name, val,
                want);
        exit(2);
    }
    return v;
}

static void
bad(const char *opt, const char *val)
{
    fprintf(stderr, "inginious-backend: bad value for --%s: '%s'\n", opt, val);
    usage(stderr);
    exit(2);
}

int
main(int argc, char **argv)
{
    struct srv_config cfg;
    srv_config_default(&cfg);
    cfg.handle_signals = true;
    cfg.notify = true;
    cfg.reload = reload;
    int o, idx;
    char err[512];
    while ((o = getopt_long(argc, argv, "vq", options, &idx)) != -1) {
        const char *name = idx >= 0 && o >= 256 ? options[idx].name : "";
        switch (o) {
        case 'v':
            log_level_max = LOG_DEBUG;
            break;
        case 'q':
            log_level_max = LOG_WARN;
            break;
        case OPT_PING_INTERVAL:
            cfg.ping_interval_ms = need(OPT_KIND_DURATION, name, optarg, 1, 3600000);
            break;
        case OPT_PING_MAX:
            cfg.be.ping_max = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, 1000000);
            break;
        case OPT_KILL_TIMEOUT:
            cfg.be.kill_timeout_ms = need(OPT_KIND_DURATION, name, optarg, 0, OPT_DURATION_MAX_MS);
            break;
        case OPT_ORPHAN_TIMEOUT:
            cfg.be.orphan_timeout_ms =
                need(OPT_KIND_DURATION, name, optarg, 0, OPT_DURATION_MAX_MS);
            break;
        case OPT_DRAIN_TIMEOUT:
            cfg.drain_timeout_ms = need(OPT_KIND_DURATION, name, optarg, 0, OPT_DURATION_MAX_MS);
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            cfg.handshake_timeout_ms = need(OPT_KIND_DURATION, name, optarg, 1, 3600000);
            break;
        case OPT_RETRY:
            cfg.be.retry_lost_jobs = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, 255);
            break;
        case OPT_MAX_REQUEUES:
            cfg.be.max_requeues =
                (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, BE_MAX_REQUEUES);
            break;
        case OPT_DEADLINE_MARGIN:
            cfg.be.deadline_margin_ms =
                need(OPT_KIND_DURATION, name, optarg, 0, BE_MAX_DEADLINE_MS);
            break;
        case OPT_MAX_SLOTS:
            cfg.be.max_slots_per_agent =
                (uint32_t)need(OPT_KIND_COUNT, name, optarg, 1, BE_MAX_SLOTS);
            break;
        case OPT_MAX_ENVS_AGENT:
            cfg.be.max_envs_per_agent =
                (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, BE_MAX_ENVS);
            break;
        case OPT_MAX_ENVS:
            cfg.be.max_envs = need(OPT_KIND_COUNT, name, optarg, 0, BE_MAX_ENVS);
            break;
        case OPT_MAX_ENV_BYTES:
            cfg.be.max_env_bytes = need(OPT_KIND_SIZE, name, optarg, 0, UINT32_MAX);
            break;
        case OPT_ENV_GRACE:
            cfg.be.envs_grace_ms = need(OPT_KIND_DURATION, name, optarg, 0, 3600 * 1000);
            break;
        case OPT_SESSION_TTL:
            cfg.be.session_ttl_ms = need(OPT_KIND_DURATION, name, optarg, 0, 30ull * 86400 * 1000);
            break;
        case OPT_RESUME_GRACE:
            cfg.be.resume_grace_ms = need(OPT_KIND_DURATION, name, optarg, 0, 3600 * 1000);
            break;
        case OPT_JOURNAL:
            cfg.journal_dir = optarg;
            break;
        case OPT_FSYNC:
            if (journal_parse_fsync(optarg, &cfg.journal) != 0)
                bad(name, optarg);
            break;
        case OPT_JOURNAL_SEGMENT:
            cfg.journal.segment_size =
                need(OPT_KIND_SIZE, name, optarg, JOURNAL_SEG_MIN, UINT32_MAX);
            break;
        case OPT_JOURNAL_REPAIR:
            cfg.journal.repair = true;
            break;
        case OPT_MAX_FRAME:
            cfg.max_frame =
                (uint32_t)need(OPT_KIND_SIZE, name, optarg, ING_MAX_FRAME_MIN, OPT_FRAME_MAX);
            break;
        case OPT_MAX_OUTPUT:
            cfg.max_output = need(OPT_KIND_SIZE, name, optarg, 4096, 64ull << 30);
            break;
        case OPT_MAX_CONNS:
            cfg.max_conns = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 1, 10000000);
            break;
        case OPT_MAX_WAITING:
            cfg.be.max_waiting = need(OPT_KIND_COUNT, name, optarg, 0, 1000000000);
            break;
        case OPT_MAX_WAITING_CLIENT:
            cfg.be.max_waiting_per_client = need(OPT_KIND_COUNT, name, optarg, 0, 1000000000);
            break;
        case OPT_MAX_ERRORS:
            cfg.max_errors = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 1, UINT32_MAX);
            break;
        case OPT_QUEUE_LIST_MAX:
            cfg.be.queue_list_max = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, UINT32_MAX);
            break;
        case OPT_PRIORITY_AGING:
            cfg.be.priority_aging_ms = need(OPT_KIND_DURATION, name, optarg, 0, 7 * 86400 * 1000);
            break;
        case OPT_FAIR_SHARE:
            if (fair_mode_parse(optarg, &cfg.be.fair_mode) != 0)
                bad(name, optarg);
            break;
        case OPT_FAIR_WEIGHT: {
            size_t k = cfg.be.n_fair_weights;
            if (k == FAIR_MAX_WEIGHTS || fair_weight_parse(optarg, &fair_weights[k]) != 0)
                bad(name, optarg);
            for (size_t x = 0; x < k; x++) /* the last one given wins */
                if (fair_weights[x].len == fair_weights[k].len &&
                    memcmp(fair_weights[x].key, fair_weights[k].key, fair_weights[k].len) == 0) {
                    fair_weights[x].weight = fair_weights[k].weight;
                    k = SIZE_MAX;
                    break;
                }
            if (k != SIZE_MAX)
                cfg.be.n_fair_weights = k + 1;
            cfg.be.fair_weights = fair_weights;
            break;
        }
        case OPT_KILL_POLICY:
            if (strcmp(optarg, "any") == 0)
                cfg.be.kill_any = true;
            else if (strcmp(optarg, "owner") == 0)
                cfg.be.kill_any = false;
            else
                bad(name, optarg);
            break;
        case OPT_ZMQ_GREET_FIRST:
            cfg.zmq_greet_first = true;
            break;
        case OPT_ZMQ_KILL_STATE:
            if (strcmp(optarg, "auto") == 0)
                cfg.zmq_kill_state = ZB_KILL_STATE_AUTO;
            else if (strcmp(optarg, "always") == 0)
                cfg.zmq_kill_state = ZB_KILL_STATE_ALWAYS;
            else if (strcmp(optarg, "never") == 0)
                cfg.zmq_kill_state = ZB_KILL_STATE_NEVER;
            else
                bad(name, optarg);
            break;
        case OPT_JOB_FIELD:
            if (strcmp(optarg, "course_id") == 0)
                cfg.job_field = 0;
            else if (strcmp(optarg, "taskset_id") == 0)
                cfg.job_field = 1;
            else
                bad(name, optarg);
            break;
        case OPT_AGENT_SECRET:
        case OPT_CLIENT_SECRET:
            secret_file[o == OPT_AGENT_SECRET ? 0 : 1] = optarg;
            break;
        case OPT_AGENT_ALLOW:
        case OPT_CLIENT_ALLOW: {
            int ep = o == OPT_AGENT_ALLOW ? 0 : 1;
            /* Every comma-separated entry must parse: an empty list or entry, one too long or
             * one entry too many refuses the whole option (never a shorter, broader list). */
            if (acl_parse_list(optarg, false, cmd_allow[ep], MAX_ALLOW, &ncmd_allow[ep], err,
                               sizeof(err)) != 0) {
                fprintf(stderr, "inginious-backend: bad value for --%s: %s\n", name, err);
                return 2;
            }
            break;
        }
        case OPT_AGENT_ALLOW_FILE:
        case OPT_CLIENT_ALLOW_FILE:
            allow_file[o == OPT_AGENT_ALLOW_FILE ? 0 : 1] = optarg;
            break;
        case OPT_IPV6_ONLY:
            cfg.ipv6_only = true;
            break;
        case OPT_PORT_FILE:
            cfg.port_file = optarg;
            break;
        case OPT_METRICS:
            if (strncmp(optarg, "tcp://", 6) != 0)
                bad(name, optarg);
            cfg.metrics.addr = optarg;
            break;
        case OPT_METRICS_ALLOW:
            if (acl_parse_list(optarg, false, metrics_allow, MAX_ALLOW, &cfg.metrics.nallow, err,
                               sizeof(err)) != 0) {
                fprintf(stderr, "inginious-backend: bad value for --%s: %s\n", name, err);
                return 2;
            }
            cfg.metrics.allow = metrics_allow;
            break;
        case OPT_METRICS_MAX_ENVS:
            cfg.metrics_max_envs = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, 100000);
            break;
        case OPT_METRICS_TIMEOUT:
            cfg.metrics.timeout_ms = need(OPT_KIND_DURATION, name, optarg, 1, 3600000);
            break;
        case OPT_METRICS_MAX_CONNS:
            cfg.metrics.max_conns = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 1, 100000);
            break;
        case OPT_METRICS_KEEPALIVE:
            cfg.metrics.keepalive_max = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 1, UINT32_MAX);
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        case OPT_DEBUGMODE:
            break;
        case OPT_MAX_MEMORY:
            cfg.max_memory = need(OPT_KIND_SIZE, name, optarg, 16ull << 20, 1ull << 40);
            break;
        case OPT_MAX_CLIENT_BYTES:
            cfg.max_client_bytes = need(OPT_KIND_SIZE, name, optarg, 4096, 1ull << 40);
            break;
        case OPT_FRAME_TIMEOUT:
            cfg.frame_timeout_ms = need(OPT_KIND_DURATION, name, optarg, 1, 86400000);
            break;
        case OPT_MAX_CONNS_ADDR:
            cfg.max_conns_per_addr = (uint32_t)need(OPT_KIND_COUNT, name, optarg, 0, 10000000);
            break;
        case OPT_VERSION:
            printf("inginious-backend %s\n", ING_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        idx = -1;
    }
    if (argc - optind > 2) {
        usage(stderr);
        return 2;
    }
    if (optind < argc)
        cfg.agent_addr = argv[optind];
    if (optind + 1 < argc)
        cfg.client_addr = argv[optind + 1];
    if (settings_load(&gen[cur], err, sizeof(err)) != 0) {
        fprintf(stderr, "inginious-backend: %s\n", err);
        settings_clear(&gen[cur]);
        return 2;
    }
    settings_apply(&gen[cur], &cfg);
    log_nonblocking(); /* a stderr nobody reads must not stall the loop */
    int rc = sd_listen_fds(cfg.listen_fd, err, sizeof(err));
    struct server *s = rc < 0 ? NULL : srv_new(&cfg, err, sizeof(err));
    if (s == NULL) {
        log_msg(LOG_ERR, "%s", err);
        settings_clear(&gen[0]);
        settings_clear(&gen[1]);
        return 1;
    }
    if (rc > 0)
        log_msg(LOG_INFO, "socket activation: %d listener%s from the service manager", rc,
                rc > 1 ? "s" : "");
    rc = srv_run(s);
    srv_free(s);
    settings_clear(&gen[0]);
    settings_clear(&gen[1]);
    if (rc < 0) {
        log_msg(LOG_ERR, "event loop failed: %s", strerror(-rc));
        return 1;
    }
    return 0;
}
