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
#include "log.h"
#include "opt.h"
#include "server.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: inginious-backend [options] [AGENT_ADDR [CLIENT_ADDR]]\n"
            "\n"
            "The INGInious job dispatcher. Agents connect to AGENT_ADDR (default\n"
            "tcp://127.0.0.1:2001), clients to CLIENT_ADDR (default tcp://127.0.0.1:2000).\n"
            "Addresses: tcp://HOST:PORT, tcp://*:PORT, tcp://[::1]:PORT, ipc:///path.\n"
            "Durations: N (seconds), Ns, Nms. Sizes: N, NK, NM, NG (bytes).\n"
            "\n"
            "  -v, --verbose               log every message handled (DEBUG)\n"
            "      --debugmode             accepted and ignored (the Python backend's asyncio\n"
            "                              debug flag), so its command lines carry over\n"
            "  -q, --quiet                 log warnings and errors only\n"
            "      --ping-interval DUR     agent heartbeat period (1s)\n"
            "      --ping-max N            unanswered pings before an agent is removed (5)\n"
            "      --kill-timeout DUR      wait for an agent to answer a kill (30s; 0 = forever)\n"
            "      --orphan-timeout DUR    wait for an agent providing a job's environment\n"
            "                              (60s; 0 = forever)\n"
            "      --drain-timeout DUR     on SIGTERM, time running jobs get to finish (30s)\n"
            "      --handshake-timeout DUR time a new connection gets to open (10s)\n"
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
            "      --max-frame SIZE        largest message body accepted (64M)\n"
            "      --max-output SIZE       pending output per peer before it is dropped (256M)\n"
            "      --max-connections N     simultaneous connections (10000)\n"
            "      --max-waiting N         waiting jobs in total (10000000)\n"
            "      --max-waiting-per-client N  waiting jobs per client (10000000)\n"
            "      --max-errors N          protocol errors before a peer is closed (100)\n"
            "      --kill-policy any|owner which clients may kill a job (any, as INGInious)\n"
            "      --queue-list-max N      waiting jobs a queue snapshot lists, oldest first\n"
            "                              (10000; 0 = all, linear in the queue)\n"
            "      --agent-secret-file F   agents must prove they know the secret in F\n"
            "      --client-secret-file F  clients must prove they know the secret in F\n"
            "                              (HMAC-SHA-256 challenge-response, proto.md 6; the\n"
            "                              secret never crosses the wire; native peers only)\n"
            "      --agent-allow CIDR      accept agents only from these addresses (repeatable,\n"
            "                              or comma-separated: 10.0.0.0/8,::1)\n"
            "      --client-allow CIDR     the same for clients\n"
            "      --job-field NAME        course_id (default) or taskset_id: the course field\n"
            "                              sent to ZeroMQ agents (both are accepted from clients)\n"
            "      --port-file PATH        write the bound addresses to PATH once listening\n"
            "      --help                  this text\n"
            "      --version               the version\n");
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
    OPT_AGENT_SECRET,
    OPT_CLIENT_SECRET,
    OPT_AGENT_ALLOW,
    OPT_CLIENT_ALLOW,
    OPT_HELP,
    OPT_VERSION,
    OPT_DEBUGMODE,
    OPT_MAX_REQUEUES,
    OPT_DEADLINE_MARGIN,
    OPT_MAX_SLOTS,
    OPT_MAX_ENVS_AGENT,
    OPT_MAX_ENVS,
    OPT_MAX_ENV_BYTES,
    OPT_ENV_GRACE,
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
    {"agent-secret-file", required_argument, NULL, OPT_AGENT_SECRET},
    {"client-secret-file", required_argument, NULL, OPT_CLIENT_SECRET},
    {"agent-allow", required_argument, NULL, OPT_AGENT_ALLOW},
    {"client-allow", required_argument, NULL, OPT_CLIENT_ALLOW},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {"debugmode", no_argument, NULL, OPT_DEBUGMODE},
    {"max-requeues", required_argument, NULL, OPT_MAX_REQUEUES},
    {"job-deadline-margin", required_argument, NULL, OPT_DEADLINE_MARGIN},
    {"max-slots-per-agent", required_argument, NULL, OPT_MAX_SLOTS},
    {"max-envs-per-agent", required_argument, NULL, OPT_MAX_ENVS_AGENT},
    {"max-envs", required_argument, NULL, OPT_MAX_ENVS},
    {"max-env-bytes", required_argument, NULL, OPT_MAX_ENV_BYTES},
    {"env-grace", required_argument, NULL, OPT_ENV_GRACE},
    {NULL, 0, NULL, 0},
};

#define MAX_ALLOW 256
static struct acl_entry allow[2][MAX_ALLOW];
static uint8_t *secrets[2];

static int
add_allow(struct srv_config *cfg, int ep, const char *list)
{
    /* Every comma-separated entry must parse: an empty list or entry, one too long or one
     * entry too many refuses the whole option (never a silently shorter, broader list). */
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char tok[128];
        if (n == 0 || n >= sizeof(tok) || cfg->nallow[ep] >= MAX_ALLOW)
            return -1;
        memcpy(tok, p, n);
        tok[n] = '\0';
        if (acl_parse(tok, &allow[ep][cfg->nallow[ep]]) != 0)
            return -1;
        cfg->nallow[ep]++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    cfg->allow[ep] = allow[ep];
    return 0;
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
    int o, idx;
    uint64_t v;
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
            if (opt_duration_ms(optarg, &v) != 0 || v == 0)
                bad(name, optarg);
            cfg.ping_interval_ms = v;
            break;
        case OPT_PING_MAX:
            if (opt_u64(optarg, &v) != 0 || v > 1000000)
                bad(name, optarg);
            cfg.be.ping_max = (uint32_t)v;
            break;
        case OPT_KILL_TIMEOUT:
            if (opt_duration_ms(optarg, &v) != 0 || v > (1ull << 31) - 1)
                bad(name, optarg);
            cfg.be.kill_timeout_ms = v;
            break;
        case OPT_ORPHAN_TIMEOUT:
            if (opt_duration_ms(optarg, &v) != 0)
                bad(name, optarg);
            cfg.be.orphan_timeout_ms = v;
            break;
        case OPT_DRAIN_TIMEOUT:
            if (opt_duration_ms(optarg, &v) != 0)
                bad(name, optarg);
            cfg.drain_timeout_ms = v;
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            if (opt_duration_ms(optarg, &v) != 0 || v == 0)
                bad(name, optarg);
            cfg.handshake_timeout_ms = v;
            break;
        case OPT_RETRY:
            if (opt_u64(optarg, &v) != 0 || v > 255)
                bad(name, optarg);
            cfg.be.retry_lost_jobs = (uint32_t)v;
            break;
        case OPT_MAX_REQUEUES:
            if (opt_u64(optarg, &v) != 0 || v > BE_MAX_REQUEUES)
                bad(name, optarg);
            cfg.be.max_requeues = (uint32_t)v;
            break;
        case OPT_DEADLINE_MARGIN:
            if (opt_duration_ms(optarg, &v) != 0 || v > BE_MAX_DEADLINE_MS)
                bad(name, optarg);
            cfg.be.deadline_margin_ms = v;
            break;
        case OPT_MAX_SLOTS:
            if (opt_u64(optarg, &v) != 0 || v == 0 || v > BE_MAX_SLOTS)
                bad(name, optarg);
            cfg.be.max_slots_per_agent = (uint32_t)v;
            break;
        case OPT_MAX_ENVS_AGENT:
            if (opt_u64(optarg, &v) != 0 || v > BE_MAX_ENVS)
                bad(name, optarg);
            cfg.be.max_envs_per_agent = (uint32_t)v;
            break;
        case OPT_MAX_ENVS:
            if (opt_u64(optarg, &v) != 0 || v > BE_MAX_ENVS)
                bad(name, optarg);
            cfg.be.max_envs = v;
            break;
        case OPT_MAX_ENV_BYTES:
            if (opt_size(optarg, &v) != 0 || v > UINT32_MAX)
                bad(name, optarg);
            cfg.be.max_env_bytes = v;
            break;
        case OPT_ENV_GRACE:
            if (opt_duration_ms(optarg, &v) != 0 || v > 3600 * 1000)
                bad(name, optarg);
            cfg.be.envs_grace_ms = v;
            break;
        case OPT_MAX_FRAME:
            if (opt_size(optarg, &v) != 0 || v < ING_MAX_FRAME_MIN || v > UINT32_MAX - 64)
                bad(name, optarg);
            cfg.max_frame = (uint32_t)v;
            break;
        case OPT_MAX_OUTPUT:
            if (opt_size(optarg, &v) != 0 || v < 4096)
                bad(name, optarg);
            cfg.max_output = v;
            break;
        case OPT_MAX_CONNS:
            if (opt_u64(optarg, &v) != 0 || v == 0 || v > 10000000)
                bad(name, optarg);
            cfg.max_conns = (uint32_t)v;
            break;
        case OPT_MAX_WAITING:
            if (opt_u64(optarg, &v) != 0)
                bad(name, optarg);
            cfg.be.max_waiting = v;
            break;
        case OPT_MAX_WAITING_CLIENT:
            if (opt_u64(optarg, &v) != 0)
                bad(name, optarg);
            cfg.be.max_waiting_per_client = v;
            break;
        case OPT_MAX_ERRORS:
            if (opt_u64(optarg, &v) != 0 || v == 0 || v > UINT32_MAX)
                bad(name, optarg);
            cfg.max_errors = (uint32_t)v;
            break;
        case OPT_QUEUE_LIST_MAX:
            if (opt_u64(optarg, &v) != 0 || v > UINT32_MAX)
                bad(name, optarg);
            cfg.be.queue_list_max = (uint32_t)v;
            break;
        case OPT_KILL_POLICY:
            if (strcmp(optarg, "any") == 0)
                cfg.be.kill_any = true;
            else if (strcmp(optarg, "owner") == 0)
                cfg.be.kill_any = false;
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
        case OPT_CLIENT_SECRET: {
            int ep = o == OPT_AGENT_SECRET ? 0 : 1;
            int rc = auth_load_secret(optarg, &secrets[ep], &cfg.secret_len[ep]);
            if (rc != 0) {
                fprintf(stderr, "inginious-backend: cannot read the secret in %s: %s\n", optarg,
                        strerror(-rc));
                return 2;
            }
            cfg.secret[ep] = secrets[ep];
            break;
        }
        case OPT_AGENT_ALLOW:
        case OPT_CLIENT_ALLOW:
            if (add_allow(&cfg, o == OPT_AGENT_ALLOW ? 0 : 1, optarg) != 0)
                bad(name, optarg);
            break;
        case OPT_PORT_FILE:
            cfg.port_file = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        case OPT_DEBUGMODE:
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
    char err[512];
    struct server *s = srv_new(&cfg, err, sizeof(err));
    if (s == NULL) {
        log_msg(LOG_ERR, "%s", err);
        return 1;
    }
    int rc = srv_run(s);
    srv_free(s);
    free(secrets[0]);
    free(secrets[1]);
    if (rc < 0) {
        log_msg(LOG_ERR, "event loop failed: %s", strerror(-rc));
        return 1;
    }
    return 0;
}
