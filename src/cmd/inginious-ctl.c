/* SPDX-License-Identifier: MIT */
/* inginious-ctl: a command-line client of inginious-backend over the client library
 * (include/inginious/client.h). Subcommands envs, submit, kill, queue, watch, ping, stats,
 * top, position; human output by default, JSON with --json. Exit status: 0 success, 1 the operation failed, 2 a
 * usage error. The only place that calls exit() is main. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include "auth.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "inginious/json.h"
#include "inginious/mp.h"
#include "inginious/version.h"
#include "opt.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define DEFAULT_TIMEOUT_MS 10000

/* PLEN is a length for printf's "%.*s": at most INT_MAX (a longer view, which a backend
 * announcing a huge max_frame could send, is cut there instead of wrapping negative, which
 * printf would read as "up to the first NUL"). */
#define PLEN(n) ((int)((n) > (size_t)INT_MAX ? (size_t)INT_MAX : (size_t)(n)))

/* Global options and the connection. */
struct ctl {
    const char *backend; /* client endpoint */
    int timeout_ms;      /* connecting and each answer */
    bool timeout_set;    /* --timeout given: also limits job results */
    bool json;
    bool acks;       /* submit --ack: ask the backend to acknowledge the job */
    uint8_t *secret; /* --secret-file */
    size_t secret_len;
    const char *session_file; /* --session: the session's id is kept there */
    uint8_t sid[ING_SESSION_ID_LEN];
    bool hold;      /* the connection only submits: results stay kept for the session */
    bool reconnect; /* wait: reconnect and resume when the connection is lost */
    struct ing_client *c;
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: inginious-ctl [--backend ADDR] [--timeout DUR] [--secret-file F] [--json]\n"
               "                     COMMAND [ARGS]\n"
               "\n"
               "A command-line client of inginious-backend.\n"
               "\n"
               "Commands (each takes --help):\n"
               "  envs              the environments the backend offers\n"
               "  submit [OPTIONS]  submit a job; --wait prints its result\n"
               "  kill JOB_ID       kill a job, waiting or running, of any client\n"
               "  queue             the running and waiting jobs\n"
               "  watch [OPTIONS]   submit jobs and print their events as they happen\n"
               "  ping [--count N]  round-trip time to the backend\n"
               "  stats             the backend's counters, gauges and environments\n"
               "  top               a live view of stats, refreshed every second (Ctrl-C ends)\n"
               "  position JOB_ID   where a job is: its state, position in the queue and ETA\n"
               "  wait              (--session) print the session's results as they arrive\n"
               "\n"
               "Options:\n"
               "  --backend ADDR  client endpoint: tcp://HOST:PORT or ipc:///path (default\n"
               "                  $INGINIOUS_BACKEND, else " ING_CLIENT_DEFAULT_ADDR ")\n"
               "  --timeout DUR   limit for connecting and for each answer (default 10s); job\n"
               "                  results are awaited without limit unless --timeout is given.\n"
               "                  DUR: N (seconds), Nms, Ns, Nm, Nh, Nd, at most 7d; 0 = no\n"
               "                  limit\n"
               "  --secret-file F the client endpoint's secret, when the backend requires one\n"
               "                  (the file's bytes, one trailing newline removed)\n"
               "  --json          machine-readable output (also accepted after COMMAND)\n"
               "  --session FILE  use the session whose id FILE holds (made, with a random\n"
               "                  id, if missing): submit leaves its jobs to the session, and\n"
               "                  wait prints their results, across restarts of either side\n"
               "  --help, --version\n"
               "\n"
               "Exit status: 0 success, 1 the operation failed (a job that is not a success,\n"
               "backend unreachable, timeout), 2 usage error.\n");
}

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
errmsg(const char *fmt, ...)
{
    va_list ap;

    fputs("inginious-ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* parse_duration reads a duration (opt_parse) of at most OPT_DURATION_MAX_MS (7 days, which
 * fits in an int of milliseconds). Returns 0 or -1. */
static int
parse_duration(const char *s, int *ms)
{
    uint64_t v;

    if (opt_parse(OPT_KIND_DURATION, s, 0, OPT_DURATION_MAX_MS, &v) != 0)
        return -1;
    *ms = (int)v;
    return 0;
}

static int
parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0)
        return -1;
    *out = v;
    return 0;
}

/* parse_count reads a count from 1 to 1000000 (opt_u64). Returns 0 or -1. */
static int
parse_count(const char *s, unsigned *out)
{
    uint64_t v;

    if (opt_u64(s, &v) != 0 || v < 1 || v > 1000000)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* ---- output helpers ---- */

/* print_json writes the msgpack value p[0..n) as JSON (indent 0: one line) and a newline.
 * Returns 0 or -1 after an error message. */
static int
print_json(const uint8_t *p, size_t n, int indent)
{
    struct ing_mp_writer w;
    int rc;

    ing_mp_writer_init_dyn(&w);
    rc = ing_mp_to_json(p, n, &w, indent);
    if (rc == 0) {
        fwrite(w.buf, 1, w.len, stdout);
        fputc('\n', stdout);
    } else {
        errmsg("cannot render the answer as JSON: %s", ing_strerror(rc));
    }
    ing_mp_writer_fini(&w);
    return rc == 0 ? 0 : -1;
}

/* print_id_json prints {"job_id": id} (plus "flag": true when flag is set) as one line. */
static void
print_id_json(const char *id, const char *flag)
{
    struct ing_mp_writer w;

    ing_mp_writer_init_dyn(&w);
    ing_mp_put_map(&w, flag != NULL ? 2 : 1);
    ing_mp_put_cstr(&w, "job_id");
    ing_mp_put_cstr(&w, id);
    if (flag != NULL) {
        ing_mp_put_cstr(&w, flag);
        ing_mp_put_bool(&w, true);
    }
    if (w.err == 0)
        print_json(w.buf, w.len, 0);
    ing_mp_writer_fini(&w);
}

/* value_text renders a small msgpack value as compact JSON into out (for tables). */
static void
value_text(const char *p, size_t n, char *out, size_t cap)
{
    struct ing_mp_writer w;

    ing_mp_writer_init_dyn(&w);
    if (ing_mp_to_json((const uint8_t *)p, n, &w, 0) == 0)
        snprintf(out, cap, "%.*s", PLEN(w.len), (const char *)w.buf);
    else
        snprintf(out, cap, "<%zu bytes of msgpack>", n);
    ing_mp_writer_fini(&w);
}

static double
elapsed_s(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- connection ---- */

/* session_load reads the session id from ctl->session_file (32 hex digits, then an optional
 * newline), or makes a random one and creates the file (mode 0600) when it is missing.
 * Returns 0 or an exit status (the error printed). */
static int
session_load(struct ctl *ctl)
{
    const char *path = ctl->session_file;
    char text[64];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT) {
        if (getrandom(ctl->sid, sizeof(ctl->sid), 0) != (ssize_t)sizeof(ctl->sid)) {
            errmsg("--session: no randomness for a session id: %s", strerror(errno));
            return EXIT_FAIL;
        }
        for (size_t i = 0; i < sizeof(ctl->sid); i++)
            snprintf(text + 2 * i, 3, "%02x", ctl->sid[i]);
        text[32] = '\n';
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            n = write(fd, text, 33);
            if (close(fd) != 0 || n != 33) {
                errmsg("--session: cannot write %s", path);
                unlink(path);
                return EXIT_FAIL;
            }
            return 0;
        }
        if (errno != EEXIST) {
            errmsg("--session: cannot create %s: %s", path, strerror(errno));
            return EXIT_FAIL;
        }
        fd = open(path, O_RDONLY | O_CLOEXEC); /* another process made it meanwhile */
    }
    if (fd < 0) {
        errmsg("--session: cannot read %s: %s", path, strerror(errno));
        return EXIT_FAIL;
    }
    n = read(fd, text, sizeof(text));
    close(fd);
    if (n < 32 || (n > 32 && !(n == 33 && text[32] == '\n'))) {
        errmsg("--session: %s does not hold a session id (32 hexadecimal digits)", path);
        return EXIT_FAIL;
    }
    for (size_t i = 0; i < sizeof(ctl->sid); i++) {
        unsigned v;
        char two[3] = {text[2 * i], text[2 * i + 1], '\0'};
        if (!isxdigit((unsigned char)two[0]) || !isxdigit((unsigned char)two[1]) ||
            sscanf(two, "%2x", &v) != 1) {
            errmsg("--session: %s does not hold a session id (32 hexadecimal digits)", path);
            return EXIT_FAIL;
        }
        ctl->sid[i] = (uint8_t)v;
    }
    return 0;
}

static int wait_resumed(struct ctl *ctl, ing_client_event_fn *fn, void *arg);

static int
ctl_connect(struct ctl *ctl)
{
    struct ing_client_opts o = {.addr = ctl->backend,
                                .name = "inginious-ctl",
                                .connect_timeout_ms = ctl->timeout_ms,
                                .secret = ctl->secret,
                                .secret_len = ctl->secret_len,
                                .size = sizeof(o),
                                .acks = ctl->acks};
    int rc;

    if (o.connect_timeout_ms == 0)
        o.connect_timeout_ms = INT32_MAX;
    if (ctl->session_file != NULL) {
        if ((rc = session_load(ctl)) != 0)
            return rc;
        o.session = true;
        o.session_id = ctl->sid;
        o.session_hold = ctl->hold;
        o.reconnect = ctl->reconnect;
        o.backoff_min_ms = 50;
        o.backoff_max_ms = 1000;
    }
    ctl->c = ing_client_new(&o);
    if (ctl->c == NULL) {
        errmsg("bad backend address '%s'", ctl->backend);
        return EXIT_USAGE;
    }
    rc = ing_client_connect(ctl->c);
    if (rc != 0) {
        const char *why = ing_client_last_error(ctl->c);
        errmsg("cannot connect to the backend at %s: %s%s%s", ctl->backend, ing_strerror(rc),
               *why ? ": " : "", why);
        return EXIT_FAIL;
    }
    if (ctl->session_file != NULL && !ctl->reconnect)
        return wait_resumed(ctl, NULL, NULL);
    return 0;
}

/* fail_wait reports a failed wait for what. */
static int
fail_wait(struct ctl *ctl, const char *what, int rc)
{
    const char *why = ing_client_last_error(ctl->c);

    if (rc == -ETIMEDOUT)
        errmsg("timed out waiting for %s", what);
    else
        errmsg("waiting for %s: %s%s%s", what, ing_strerror(rc), *why ? ": " : "", why);
    return EXIT_FAIL;
}

static int
answer_timeout(const struct ctl *ctl)
{
    return ctl->timeout_ms == 0 ? -1 : ctl->timeout_ms;
}

static int
result_timeout(const struct ctl *ctl)
{
    return ctl->timeout_set ? answer_timeout(ctl) : -1;
}

/* no_sessions tells (with a message) that the backend connected to offers no sessions. */
static bool
no_sessions(struct ctl *ctl)
{
    if (!ing_client_is_connected(ctl->c) || ing_client_sessions(ctl->c))
        return false;
    errmsg("the backend at %s does not offer sessions (--session)", ctl->backend);
    return true;
}

/* wait_resumed waits (at most --timeout) until the session's list has arrived on this
 * connection (ING_CLIENT_EV_RESUMED), passing the events to fn. Returns 0 or an exit status
 * (the error printed). */
static int
wait_resumed(struct ctl *ctl, ing_client_event_fn *fn, void *arg)
{
    struct timespec t0;
    int limit = answer_timeout(ctl);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!ing_client_resumed(ctl->c)) {
        int left = -1;
        if (no_sessions(ctl))
            return EXIT_FAIL;
        if (limit >= 0) {
            double ms = (double)limit - elapsed_s(&t0) * 1000.0;
            if (ms <= 0)
                return fail_wait(ctl, "the session's list of jobs", -ETIMEDOUT);
            left = (int)ms + 1;
        }
        int rc = ing_client_wait(ctl->c, left, fn, arg);
        if (rc < 0)
            return fail_wait(ctl, "the session's list of jobs", rc);
    }
    return 0;
}

/* sub_help handles the options every subcommand shares: --help and --json. */
enum { OPT_HELP = 'h', OPT_JSON = 0x100 };

/* ---- envs ---- */

static void
envs_usage(FILE *f)
{
    fprintf(f, "usage: inginious-ctl [GLOBAL] envs [--json]\n\n"
               "Lists the environments the backend offers: one line per environment type with\n"
               "its environment names. With --json: the backend's map {type: [names]}.\n");
}

static int
envs_table(struct ing_view envs)
{
    const uint8_t *p = (const uint8_t *)envs.p, *end = p + envs.len;
    struct ing_mp_obj o;

    if (ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_MAP) {
        errmsg("the backend sent an environment list that is not a map");
        return EXIT_FAIL;
    }
    if (o.v.n == 0) {
        printf("no environments (no agent is connected)\n");
        return 0;
    }
    printf("%-16s %s\n", "TYPE", "ENVIRONMENTS");
    for (uint32_t i = 0; i < o.v.n; i++) {
        struct ing_mp_obj k, a;
        if (ing_mp_read(&p, end, &k) != 0 || k.type != ING_MP_STR ||
            ing_mp_read(&p, end, &a) != 0 || a.type != ING_MP_ARRAY) {
            errmsg("the backend sent an environment list of an unexpected shape");
            return EXIT_FAIL;
        }
        printf("%-16.*s", PLEN(k.v.s.len), (const char *)k.v.s.p);
        if (a.v.n == 0)
            printf(" (none advertised)");
        for (uint32_t j = 0; j < a.v.n; j++) {
            struct ing_mp_obj s;
            if (ing_mp_read(&p, end, &s) != 0 || s.type != ING_MP_STR) {
                errmsg("the backend sent an environment name that is not a string");
                return EXIT_FAIL;
            }
            printf(" %.*s", PLEN(s.v.s.len), (const char *)s.v.s.p);
        }
        printf("\n");
    }
    return 0;
}

static int
cmd_envs(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct ing_view envs;
    int ch, rc;

    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == OPT_JSON) {
            ctl->json = true;
        } else if (ch == OPT_HELP) {
            envs_usage(stdout);
            return 0;
        } else {
            envs_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        envs_usage(stderr);
        return EXIT_USAGE;
    }
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    envs = ing_client_envs(ctl->c);
    if (ctl->json)
        return print_json((const uint8_t *)envs.p, envs.len, 0) == 0 ? 0 : EXIT_FAIL;
    return envs_table(envs);
}

/* ---- submit and watch ---- */

/* A job being built from the command line; owns the msgpack buffers. */
struct job_args {
    struct ing_client_job job;
    char id[ING_CLIENT_UUID_SIZE];
    bool id_given;
    bool wait;
    unsigned count;
    struct ing_mp_writer mp[3]; /* task_problems, inputdata, environment_parameters */
};

enum {
    OPT_ENV_TYPE = 0x200,
    OPT_ENV,
    OPT_PRIORITY,
    OPT_COURSE,
    OPT_TASK,
    OPT_INPUT,
    OPT_PARAMS,
    OPT_PROBLEMS,
    OPT_DEBUG,
    OPT_LAUNCHER,
    OPT_JOB_ID,
    OPT_WAIT,
    OPT_COUNT,
    OPT_ACK,
};

static void
job_usage(FILE *f, bool watch)
{
    if (watch)
        fprintf(f, "usage: inginious-ctl [GLOBAL] watch [JOB OPTIONS] [--count N] [--json]\n\n"
                   "Submits N jobs (default 1) and prints the events of each (submitted,\n"
                   "started, ssh, done) as they arrive, until all are done. A client only\n"
                   "hears about the jobs it submitted itself on its own connection, so watch\n"
                   "submits the jobs it watches. With --json: one JSON object per line.\n"
                   "With --count N > 1 and --job-id ID, the ids are ID-1 .. ID-N.\n"
                   "Exit status 0 when every job ends with kind success.\n\n");
    else
        fprintf(f, "usage: inginious-ctl [GLOBAL] submit [JOB OPTIONS] [--ack] [--wait] [--json]\n\n"
                   "Submits one job. With --wait, prints its result (kind, grade, text, state,\n"
                   "problems, tests, custom, stdout, stderr, archive size; with --json one JSON\n"
                   "object, the archive in base64) and exits 0 only if the kind is success.\n"
                   "Without --wait (fire and forget), prints the job id once it is sent and\n"
                   "exits 0 at once; a detached background process keeps the connection open\n"
                   "until the job ends, silently (the backend drops the jobs of a client that\n"
                   "disconnects).\n"
                   "With the global --session FILE, the job is left to the session: its id is\n"
                   "printed once the backend acknowledged it, and 'inginious-ctl --session FILE\n"
                   "wait' prints its result later (no background process).\n"
                   "With --ack, the job id is printed only once the backend acknowledged the\n"
                   "job (with --journal: its record is written, and synced under --fsync\n"
                   "always); a job the backend refuses is reported and exits 1; a backend that\n"
                   "does not acknowledge jobs is an error.\n\n");
    fprintf(f, "Job options:\n"
               "  --env-type TYPE     environment type (default docker)\n"
               "  --env NAME          environment name (default default)\n"
               "  --priority N        smaller runs earlier (default 0)\n"
               "  --course ID         course id (default nil: a taskless job)\n"
               "  --task ID           task id (default nil)\n"
               "  --input JSON|@FILE  inputdata, a JSON object (default {})\n"
               "  --params JSON|@FILE environment_parameters, e.g. {\"limits\":{\"time\":30}}\n"
               "  --problems JSON|@FILE  task_problems (default {})\n"
               "  --debug [ssh]       run in debug mode; --debug ssh: with SSH access\n"
               "  --launcher NAME     shown in the queue (default inginious-ctl)\n"
               "  --job-id ID         the job id (default a random UUID4)\n");
}

/* read_arg returns the text of a JSON|@FILE argument (malloc'd in *buf for a file). */
static const char *
read_arg(const char *opt, const char *arg, char **buf, size_t *len)
{
    FILE *f;
    size_t cap = 4096, n = 0;

    *buf = NULL;
    if (arg[0] != '@') {
        *len = strlen(arg);
        return arg;
    }
    f = fopen(arg + 1, "rb");
    if (f == NULL) {
        errmsg("--%s: cannot read %s: %s", opt, arg + 1, strerror(errno));
        return NULL;
    }
    *buf = malloc(cap);
    while (*buf != NULL) {
        size_t got = fread(*buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *nb = realloc(*buf, cap * 2);
            if (nb == NULL) {
                free(*buf);
                *buf = NULL;
            }
            *buf = nb;
            cap *= 2;
        }
    }
    if (*buf == NULL || ferror(f)) {
        errmsg("--%s: cannot read %s", opt, arg + 1);
        fclose(f);
        free(*buf);
        *buf = NULL;
        return NULL;
    }
    fclose(f);
    *len = n;
    return *buf;
}

/* json_arg converts a JSON|@FILE argument into w. Returns 0 or -1 after a message giving
 * the line and column of a syntax error. */
static int
json_arg(const char *opt, const char *arg, struct ing_mp_writer *w)
{
    struct ing_json_error err;
    char *buf;
    size_t len;
    const char *text = read_arg(opt, arg, &buf, &len);
    int rc;

    if (text == NULL)
        return -1;
    w->len = 0;
    rc = ing_json_to_mp(text, len, w, &err);
    if (rc == -EPROTO)
        errmsg("--%s: bad JSON%s%s at line %u, column %u: %s", opt, buf != NULL ? " in " : "",
               buf != NULL ? arg + 1 : "", err.line, err.column, err.msg);
    else if (rc != 0)
        errmsg("--%s: %s", opt, ing_strerror(rc));
    free(buf);
    return rc == 0 ? 0 : -1;
}

static void
job_args_fini(struct job_args *ja)
{
    for (int i = 0; i < 3; i++)
        ing_mp_writer_fini(&ja->mp[i]);
}

/* parse_job reads the job options of submit and watch. Returns 0 or an exit status (0 is
 * never returned for --help: -1 means "help printed"). */
static int
parse_job(struct ctl *ctl, int argc, char **argv, bool watch, struct job_args *ja)
{
    static const struct option opts[] = {
        {"env-type", required_argument, NULL, OPT_ENV_TYPE},
        {"env", required_argument, NULL, OPT_ENV},
        {"priority", required_argument, NULL, OPT_PRIORITY},
        {"course", required_argument, NULL, OPT_COURSE},
        {"task", required_argument, NULL, OPT_TASK},
        {"input", required_argument, NULL, OPT_INPUT},
        {"params", required_argument, NULL, OPT_PARAMS},
        {"problems", required_argument, NULL, OPT_PROBLEMS},
        {"debug", optional_argument, NULL, OPT_DEBUG},
        {"launcher", required_argument, NULL, OPT_LAUNCHER},
        {"job-id", required_argument, NULL, OPT_JOB_ID},
        {"wait", no_argument, NULL, OPT_WAIT},
        {"ack", no_argument, NULL, OPT_ACK},
        {"count", required_argument, NULL, OPT_COUNT},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct ing_client_job *j = &ja->job;
    int ch;

    memset(ja, 0, sizeof(*ja));
    for (int i = 0; i < 3; i++)
        ing_mp_writer_init_dyn(&ja->mp[i]);
    j->environment_type = "docker";
    j->environment = "default";
    j->launcher = "inginious-ctl";
    ja->count = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_ENV_TYPE:
            j->environment_type = optarg;
            break;
        case OPT_ENV:
            j->environment = optarg;
            break;
        case OPT_PRIORITY:
            if (parse_i64(optarg, &j->priority) != 0) {
                errmsg("--priority: not an integer: '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_COURSE:
            j->course_id = optarg;
            break;
        case OPT_TASK:
            j->task_id = optarg;
            break;
        case OPT_PROBLEMS:
        case OPT_INPUT:
        case OPT_PARAMS: {
            int k = ch == OPT_PROBLEMS ? 0 : ch == OPT_INPUT ? 1 : 2;
            const char *name = k == 0 ? "problems" : k == 1 ? "input" : "params";
            if (json_arg(name, optarg, &ja->mp[k]) != 0)
                return EXIT_USAGE;
            break;
        }
        case OPT_DEBUG:
            j->debug = ING_DEBUG_ON;
            if (optarg == NULL && optind < argc && strcmp(argv[optind], "ssh") == 0)
                optarg = argv[optind++];
            if (optarg != NULL && strcmp(optarg, "ssh") == 0) {
                j->debug = ING_DEBUG_SSH;
            } else if (optarg != NULL) {
                errmsg("--debug: expected nothing or 'ssh', not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_LAUNCHER:
            j->launcher = optarg;
            break;
        case OPT_JOB_ID:
            if (strlen(optarg) == 0 || strlen(optarg) > 240) {
                errmsg("--job-id: 1 to 240 bytes");
                return EXIT_USAGE;
            }
            j->job_id = optarg;
            ja->id_given = true;
            break;
        case OPT_WAIT:
            if (watch)
                goto bad;
            ja->wait = true;
            break;
        case OPT_ACK:
            if (watch)
                goto bad;
            ctl->acks = true;
            break;
        case OPT_COUNT:
            if (!watch)
                goto bad;
            if (parse_count(optarg, &ja->count) != 0) {
                errmsg("--count: expected a number from 1 to 1000000, not '%s'", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_JSON:
            ctl->json = true;
            break;
        case OPT_HELP:
            job_usage(stdout, watch);
            return -1;
        default:
            goto bad;
        }
    }
    if (optind != argc) {
        errmsg("unexpected argument '%s'", argv[optind]);
        goto bad;
    }
    for (int i = 0; i < 3; i++) {
        struct ing_view *v = i == 0   ? &j->task_problems
                             : i == 1 ? &j->inputdata
                                      : &j->environment_parameters;
        if (ja->mp[i].len > 0) {
            v->p = (const char *)ja->mp[i].buf;
            v->len = (uint32_t)ja->mp[i].len;
        }
    }
    return 0;
bad:
    job_usage(stderr, watch);
    return EXIT_USAGE;
}

/* print_problems prints a problems map {id: [kind, text]} one line each (JSON otherwise). */
static void
print_problems(struct ing_view v)
{
    const uint8_t *p = (const uint8_t *)v.p, *end = p + v.len;
    struct ing_mp_obj o, k, a, kind, text;
    char buf[4096];

    if (ing_mp_read(&p, end, &o) != 0 || o.type != ING_MP_MAP) {
        value_text(v.p, v.len, buf, sizeof(buf));
        printf("problems: %s\n", buf);
        return;
    }
    printf("problems:%s\n", o.v.n == 0 ? " none" : "");
    for (uint32_t i = 0; i < o.v.n; i++) {
        const uint8_t *val;
        if (ing_mp_read(&p, end, &k) != 0 || k.type != ING_MP_STR)
            return;
        val = p;
        if (ing_mp_skip(&p, end, ING_MP_MAX_DEPTH) != 0)
            return;
        const uint8_t *q = val;
        if (ing_mp_read(&q, p, &a) == 0 && a.type == ING_MP_ARRAY && a.v.n == 2 &&
            ing_mp_read(&q, p, &kind) == 0 && kind.type == ING_MP_STR &&
            ing_mp_read(&q, p, &text) == 0 && text.type == ING_MP_STR) {
            printf("  %.*s: %.*s%s%.*s\n", PLEN(k.v.s.len), (const char *)k.v.s.p,
                   PLEN(kind.v.s.len), (const char *)kind.v.s.p, text.v.s.len ? ": " : "",
                   PLEN(text.v.s.len), (const char *)text.v.s.p);
        } else {
            value_text((const char *)val, (size_t)(p - val), buf, sizeof(buf));
            printf("  %.*s: %s\n", PLEN(k.v.s.len), (const char *)k.v.s.p, buf);
        }
    }
}

static void
print_text_field(const char *name, struct ing_view v)
{
    if (v.p == NULL) {
        printf("%s: (nil)\n", name);
    } else if (v.len == 0) {
        printf("%s: (empty)\n", name);
    } else {
        printf("%s:\n%.*s", name, PLEN(v.len), v.p);
        if (v.p[v.len - 1] != '\n')
            printf("\n");
    }
}

/* print_result prints a result for people, or as one JSON object. Returns the exit status:
 * 0 for kind success. */
static int
print_result(const struct ctl *ctl, const struct ing_job_result *r, bool lost)
{
    char buf[4096];
    bool ok = ing_view_eq(r->result_kind, "success") && !lost;

    if (ctl->json) {
        struct ing_mp_writer w;
        int rc;
        ing_mp_writer_init_dyn(&w);
        rc = ing_client_result_to_mp(r, lost, true, &w);
        if (rc == 0)
            rc = print_json(w.buf, w.len, 0);
        ing_mp_writer_fini(&w);
        return rc == 0 && ok ? 0 : EXIT_FAIL;
    }
    printf("job: %.*s\n", PLEN(r->job_id.len), r->job_id.p);
    printf("result: %.*s%s\n", PLEN(r->result_kind.len), r->result_kind.p,
           lost ? " (made by inginious-ctl: the connection to the backend was lost)" : "");
    printf("grade: %g\n", r->grade);
    printf("text: %.*s\n", PLEN(r->result_text.len), r->result_text.p);
    print_problems(r->problems);
    if (r->tests.len != 1 || r->tests.p[0] != '\x80') {
        value_text(r->tests.p, r->tests.len, buf, sizeof(buf));
        printf("tests: %s\n", buf);
    }
    if (r->custom.len != 1 || r->custom.p[0] != '\x80') {
        value_text(r->custom.p, r->custom.len, buf, sizeof(buf));
        printf("custom: %s\n", buf);
    }
    printf("state: %.*s\n", PLEN(r->state.len), r->state.p);
    if (r->archive.p == NULL)
        printf("archive: (nil)\n");
    else
        printf("archive: %" PRIu32 " bytes\n", r->archive.len);
    print_text_field("stdout", r->stdout_);
    print_text_field("stderr", r->stderr_);
    return ok ? 0 : EXIT_FAIL;
}

static int
submit_one(struct ctl *ctl, const struct ing_client_job *job)
{
    int rc = ing_client_submit(ctl->c, job);

    if (rc == -EINVAL)
        errmsg("invalid job: every id and name must be valid UTF-8, environment type and "
               "name 1 to 255 bytes");
    else if (rc != 0)
        errmsg("cannot submit the job: %s", ing_strerror(rc));
    return rc == -EINVAL ? EXIT_USAGE : rc != 0 ? EXIT_FAIL : 0;
}

/* What submit --ack waits for: the job's acknowledgement, or its result first (a refusal,
 * or a job that ended before the acknowledgement was read). */
struct ack_wait {
    const char *job_id;
    bool accepted;
    bool done;
    int copy_rc;
    struct ing_client_result res;
};

static void
ack_event(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct ack_wait *aw = arg;

    (void)c;
    if (!ing_view_eq(ev->job_id, aw->job_id))
        return;
    if (ev->type == ING_CLIENT_EV_ACCEPTED) {
        aw->accepted = true;
    } else if (ev->type == ING_CLIENT_EV_DONE && !aw->done) {
        aw->done = true;
        aw->copy_rc = ing_client_result_copy(&aw->res, ev->result, ev->lost);
    }
}

/* wait_ack waits (at most --timeout) until the job is acknowledged or has ended. Returns 0
 * or an exit status (the error printed). */
static int
wait_ack(struct ctl *ctl, struct ack_wait *aw)
{
    struct timespec t0;
    int limit = answer_timeout(ctl);

    if (!ing_client_acks(ctl->c)) {
        errmsg("the backend at %s does not acknowledge jobs (--ack)", ctl->backend);
        return EXIT_FAIL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!aw->accepted && !aw->done) {
        int left = -1;
        if (limit >= 0) {
            double ms = (double)limit - elapsed_s(&t0) * 1000.0;
            if (ms <= 0)
                return fail_wait(ctl, "the job's acknowledgement", -ETIMEDOUT);
            left = (int)ms + 1;
        }
        int rc = ing_client_wait(ctl->c, left, ack_event, aw);
        if (rc < 0)
            return fail_wait(ctl, "the job's acknowledgement", rc);
    }
    if (aw->done && aw->copy_rc != 0) {
        errmsg("cannot keep the job's result: %s", ing_strerror(aw->copy_rc));
        return EXIT_FAIL;
    }
    return 0;
}

static int
cmd_submit(struct ctl *ctl, int argc, char **argv)
{
    struct job_args ja;
    struct ing_client_result res;
    struct ack_wait aw = {0};
    int rc = parse_job(ctl, argc, argv, false, &ja);

    if (rc != 0) {
        job_args_fini(&ja);
        return rc < 0 ? 0 : rc;
    }
    if (!ja.id_given) {
        if (ing_client_uuid4(ja.id) != 0) {
            errmsg("cannot make a job id: %s", strerror(errno));
            job_args_fini(&ja);
            return EXIT_FAIL;
        }
        ja.job.job_id = ja.id;
    }
    aw.job_id = ja.job.job_id;
    if (ctl->session_file != NULL) { /* acknowledged, then left to the session */
        ctl->acks = true;
        ctl->hold = !ja.wait;
    }
    rc = ctl_connect(ctl);
    if (rc == 0 && ctl->acks && !ing_client_acks(ctl->c))
        rc = wait_ack(ctl, &aw); /* the error */
    if (rc == 0)
        rc = submit_one(ctl, &ja.job);
    if (rc == 0 && ctl->acks)
        rc = wait_ack(ctl, &aw);
    if (rc == 0 && aw.done && !aw.accepted && !ja.wait) {
        errmsg("job %s refused: %.*s: %.*s", ja.job.job_id, PLEN(aw.res.r.result_kind.len),
               aw.res.r.result_kind.p, PLEN(aw.res.r.result_text.len), aw.res.r.result_text.p);
        rc = EXIT_FAIL;
    }
    if (rc != 0) {
        ing_client_result_free(&aw.res);
        job_args_fini(&ja);
        return rc;
    }
    if (aw.done) { /* refused (--wait prints it), or ended before its acknowledgement was read */
        if (!ja.wait && !ctl->json)
            printf("%s\n", ja.job.job_id);
        else if (!ja.wait)
            print_id_json(ja.job.job_id, NULL);
        rc = ja.wait ? print_result(ctl, &aw.res.r, aw.res.lost)
                     : aw.res.lost ? EXIT_FAIL : 0;
        ing_client_result_free(&aw.res);
        job_args_fini(&ja);
        return rc;
    }
    if (!ja.wait) {
        if (ctl->json)
            print_id_json(ja.job.job_id, NULL);
        else
            printf("%s\n", ja.job.job_id);
        if (ctl->session_file != NULL) { /* the session keeps the job and its result */
            job_args_fini(&ja);
            return 0;
        }
        fflush(stdout);
        fflush(stderr);
        /* Fire and forget: the caller gets its exit status now; a detached child keeps the
         * connection (and so the job) until the job ends. The parent leaves with _exit so
         * that nothing it does touches the shared connection. */
        pid_t pid = fork();
        if (pid < 0) {
            errmsg("cannot detach (fork: %s): waiting for the job here", strerror(errno));
        } else if (pid > 0) {
            _exit(0);
        } else {
            int null = open("/dev/null", O_RDWR | O_CLOEXEC);
            (void)setsid();
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
                close(null);
            }
        }
    }
    rc = ing_client_wait_done(ctl->c, ja.job.job_id, result_timeout(ctl), &res, NULL, NULL);
    if (rc != 0) {
        rc = fail_wait(ctl, "the job's result", rc);
    } else if (ja.wait) {
        rc = print_result(ctl, &res.r, res.lost);
    } else {
        rc = res.lost ? EXIT_FAIL : 0;
        if (res.lost)
            errmsg("the connection to the backend was lost before the job ended");
    }
    ing_client_result_free(&res);
    job_args_fini(&ja);
    return rc;
}

/* The state of watch. */
struct watch {
    struct ctl *ctl;
    struct timespec t0;
    unsigned done;
    unsigned failed;
};

static void watch_line(struct watch *w, const char *event, struct ing_view id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* watch_line prints "+SECONDS EVENT JOB_ID details" (human) */
static void
watch_line(struct watch *w, const char *event, struct ing_view id, const char *fmt, ...)
{
    va_list ap;

    printf("+%.3fs %-9s %.*s", elapsed_s(&w->t0), event, PLEN(id.len), id.p);
    if (fmt != NULL) {
        putchar(' ');
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    fflush(stdout);
}

/* watch_json prints one event as a JSON line; body (a msgpack map's entries, n of them)
 * is appended after "event", "time" and "job_id". */
static void
watch_json(struct watch *w, const char *event, struct ing_view id, struct ing_mp_writer *body,
           uint32_t n)
{
    struct ing_mp_writer m;

    ing_mp_writer_init_dyn(&m);
    ing_mp_put_map(&m, 3 + n);
    ing_mp_put_cstr(&m, "event");
    ing_mp_put_cstr(&m, event);
    ing_mp_put_cstr(&m, "time");
    ing_mp_put_double(&m, elapsed_s(&w->t0));
    ing_mp_put_cstr(&m, "job_id");
    ing_mp_put_str(&m, id.p, id.len);
    if (body != NULL)
        ing_mp_put_raw(&m, body->buf, body->len);
    if (m.err == 0)
        print_json(m.buf, m.len, 0);
    fflush(stdout);
    ing_mp_writer_fini(&m);
}

static void
watch_event(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct watch *w = arg;
    bool json = w->ctl->json;
    struct ing_mp_writer b;

    (void)c;
    ing_mp_writer_init_dyn(&b);
    switch (ev->type) {
    case ING_CLIENT_EV_STARTED:
        if (json)
            watch_json(w, "started", ev->job_id, NULL, 0);
        else
            watch_line(w, "started", ev->job_id, NULL);
        break;
    case ING_CLIENT_EV_SSH_DEBUG:
        if (json) {
            ing_mp_put_cstr(&b, "host");
            ing_mp_put_str(&b, ev->ssh->host.p, ev->ssh->host.len);
            ing_mp_put_cstr(&b, "port");
            ing_mp_put_uint(&b, ev->ssh->port);
            ing_mp_put_cstr(&b, "user");
            ing_mp_put_str(&b, ev->ssh->user.p, ev->ssh->user.len);
            ing_mp_put_cstr(&b, "password");
            ing_mp_put_str(&b, ev->ssh->password.p, ev->ssh->password.len);
            watch_json(w, "ssh", ev->job_id, &b, 4);
        } else {
            watch_line(w, "ssh", ev->job_id, "ssh -p %" PRIu32 " %.*s@%.*s password %.*s",
                       ev->ssh->port, PLEN(ev->ssh->user.len), ev->ssh->user.p,
                       PLEN(ev->ssh->host.len), ev->ssh->host.p, PLEN(ev->ssh->password.len),
                       ev->ssh->password.p);
        }
        break;
    case ING_CLIENT_EV_DONE:
        if (!ev->pending)
            break;
        w->done++;
        if (!ing_view_eq(ev->result->result_kind, "success") || ev->lost)
            w->failed++;
        if (json) {
            ing_mp_put_cstr(&b, "result");
            ing_client_result_to_mp(ev->result, ev->lost, true, &b);
            watch_json(w, "done", ev->job_id, &b, 1);
        } else {
            const struct ing_job_result *r = ev->result;
            watch_line(w, "done", ev->job_id, "%.*s grade %g%s%.*s%s", PLEN(r->result_kind.len),
                       r->result_kind.p, r->grade, r->result_text.len ? ": " : "",
                       PLEN(r->result_text.len), r->result_text.p,
                       ev->lost ? " (connection lost)" : "");
        }
        break;
    case ING_CLIENT_EV_DISCONNECTED:
        errmsg("connection to the backend lost: %s", ing_strerror(ev->err));
        break;
    case ING_CLIENT_EV_ERROR:
        errmsg("the backend sent an error: %.*s", PLEN(ev->text.len), ev->text.p);
        break;
    default:
        break;
    }
    ing_mp_writer_fini(&b);
}

static int
cmd_watch(struct ctl *ctl, int argc, char **argv)
{
    struct job_args ja;
    struct watch w = {.ctl = ctl};
    char idbuf[300];
    int rc = parse_job(ctl, argc, argv, true, &ja);
    int limit;
    struct timespec tl;

    if (rc != 0) {
        job_args_fini(&ja);
        return rc < 0 ? 0 : rc;
    }
    rc = ctl_connect(ctl);
    if (rc != 0) {
        job_args_fini(&ja);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &w.t0);
    for (unsigned i = 0; i < ja.count && rc == 0; i++) {
        if (ja.id_given && ja.count > 1) {
            snprintf(idbuf, sizeof(idbuf), "%s-%u", ja.job.job_id, i + 1);
        } else if (ja.id_given) {
            snprintf(idbuf, sizeof(idbuf), "%s", ja.job.job_id);
        } else if (ing_client_uuid4(idbuf) != 0) {
            errmsg("cannot make a job id: %s", strerror(errno));
            rc = EXIT_FAIL;
            break;
        }
        const char *given = ja.job.job_id;
        ja.job.job_id = idbuf;
        rc = submit_one(ctl, &ja.job);
        ja.job.job_id = given;
        if (rc == 0 && ctl->json)
            watch_json(&w, "submitted", (struct ing_view){idbuf, (uint32_t)strlen(idbuf)}, NULL, 0);
        else if (rc == 0)
            watch_line(&w, "submitted", (struct ing_view){idbuf, (uint32_t)strlen(idbuf)}, NULL);
    }
    tl = w.t0;
    limit = result_timeout(ctl);
    while (rc == 0 && ing_client_pending(ctl->c) > 0) {
        int left = -1;
        if (limit >= 0) {
            left = limit - (int)(elapsed_s(&tl) * 1000.0);
            if (left <= 0) {
                errmsg("timed out with %zu job(s) not done", ing_client_pending(ctl->c));
                rc = EXIT_FAIL;
                break;
            }
        }
        int prc = ing_client_wait(ctl->c, left, watch_event, &w);
        if (prc != 0 && ing_client_pending(ctl->c) > 0) {
            rc = fail_wait(ctl, "the jobs' events", prc);
            break;
        }
    }
    job_args_fini(&ja);
    if (rc != 0)
        return rc;
    return w.failed == 0 ? 0 : EXIT_FAIL;
}

/* ---- kill ---- */

static int
cmd_kill(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *help = "usage: inginious-ctl [GLOBAL] kill [--json] JOB_ID\n\n"
                       "Asks the backend to kill a job, waiting or running, of any client. The\n"
                       "backend does not answer: its owner receives the result (kind killed).\n"
                       "inginious-ctl waits until the backend has processed the request.\n";
    double rtt;
    int ch, rc;

    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == OPT_JSON) {
            ctl->json = true;
        } else if (ch == OPT_HELP) {
            fputs(help, stdout);
            return 0;
        } else {
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        errmsg("kill takes exactly one JOB_ID");
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    rc = ing_client_kill(ctl->c, argv[optind]);
    if (rc == -EINVAL) {
        errmsg("bad job id '%s'", argv[optind]);
        return EXIT_USAGE;
    }
    if (rc == 0) /* a Pong after the kill: the backend has handled it */
        rc = ing_client_ping_wait(ctl->c, answer_timeout(ctl), &rtt, NULL, NULL);
    if (rc != 0)
        return fail_wait(ctl, "the backend", rc);
    if (ctl->json)
        print_id_json(argv[optind], "kill_sent");
    else
        printf("kill sent for %s\n", argv[optind]);
    return 0;
}

/* json_options parses the options of a command that takes only --json and --help, and
 * nargs operands (from argv[optind] on). Returns -1 to go on, else the exit status (help
 * printed, or a usage error). */
static int
json_options(struct ctl *ctl, int argc, char **argv, const char *help, int nargs)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == OPT_JSON) {
            ctl->json = true;
        } else if (ch == OPT_HELP) {
            fputs(help, stdout);
            return 0;
        } else {
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind != nargs) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    return -1;
}

/* ---- queue ---- */

static void
print_entries(const struct ing_client_queue_entry *e, size_t n, bool running)
{
    time_t now = time(NULL);

    for (size_t i = 0; i < n; i++, e++) {
        char max[32], started[32];
        if (e->max_time < 0)
            snprintf(max, sizeof(max), "-");
        else
            snprintf(max, sizeof(max), "%" PRId64 "s", e->max_time);
        snprintf(started, sizeof(started), "%" PRId64 "s ago",
                 (int64_t)now - e->started_at > 0 ? (int64_t)now - e->started_at : 0);
        if (running)
            printf("%-38s %-16s %-24s %-14s %-10s %s%s\n", e->job_id.p, e->agent.p, e->info.p,
                   e->launcher.p, started, max, e->is_current ? " *" : "");
        else
            printf("%-38s %-24s %-14s %s%s\n", e->job_id.p, e->info.p, e->launcher.p, max,
                   e->is_current ? " *" : "");
    }
}

static int
cmd_queue(struct ctl *ctl, int argc, char **argv)
{
    const char *help = "usage: inginious-ctl [GLOBAL] queue [--json]\n\n"
                       "Lists the running jobs (dispatch order) and the waiting jobs (arrival\n"
                       "order). With --json: {\"running\": [...], \"waiting\": [...]}, each\n"
                       "entry an object with the protocol's field names.\n";
    struct ing_client_queue q;
    int rc;

    if ((rc = json_options(ctl, argc, argv, help, 0)) >= 0)
        return rc;
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    rc = ing_client_get_queue_wait(ctl->c, answer_timeout(ctl), &q, NULL, NULL);
    if (rc != 0)
        return fail_wait(ctl, "the queue", rc);
    if (ctl->json) {
        struct ing_mp_writer w;
        ing_mp_writer_init_dyn(&w);
        rc = ing_client_queue_to_mp(&q, &w) == 0 ? print_json(w.buf, w.len, 0) : -1;
        ing_mp_writer_fini(&w);
        ing_client_queue_free(&q);
        return rc == 0 ? 0 : EXIT_FAIL;
    }
    printf("running: %zu\n", q.n_running);
    if (q.n_running > 0) {
        printf("%-38s %-16s %-24s %-14s %-10s %s\n", "JOB_ID", "AGENT", "INFO", "LAUNCHER",
               "STARTED", "MAX_TIME");
        print_entries(q.running, q.n_running, true);
    }
    printf("waiting: %zu\n", q.n_waiting);
    if (q.n_waiting > 0) {
        printf("%-38s %-24s %-14s %s\n", "JOB_ID", "INFO", "LAUNCHER", "MAX_TIME");
        print_entries(q.waiting, q.n_waiting, false);
    }
    ing_client_queue_free(&q);
    return 0;
}

/* ---- ping ---- */

static int
cmd_ping(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, OPT_COUNT},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *help = "usage: inginious-ctl [GLOBAL] ping [--count N] [--json]\n\n"
                       "Sends N pings (default 1), one after the other, and prints each\n"
                       "round-trip time in milliseconds. With --json:\n"
                       "{\"server\": ..., \"rtt_ms\": [...]}.\n";
    unsigned count = 1;
    double *rtt;
    int ch, rc = 0;

    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == OPT_JSON) {
            ctl->json = true;
        } else if (ch == OPT_COUNT && parse_count(optarg, &count) == 0) {
            continue;
        } else if (ch == OPT_HELP) {
            fputs(help, stdout);
            return 0;
        } else {
            if (ch == OPT_COUNT)
                errmsg("--count: expected a number from 1 to 1000000, not '%s'", optarg);
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    rtt = calloc(count, sizeof(*rtt));
    if (rtt == NULL) {
        errmsg("out of memory");
        return EXIT_FAIL;
    }
    for (unsigned i = 0; i < count && rc == 0; i++) {
        rc = ing_client_ping_wait(ctl->c, answer_timeout(ctl), &rtt[i], NULL, NULL);
        if (rc != 0)
            rc = fail_wait(ctl, "the pong", rc);
        else if (!ctl->json)
            printf("pong from %s: %.3f ms\n", ctl->backend, rtt[i]);
    }
    if (rc == 0 && ctl->json) {
        struct ing_mp_writer w;
        ing_mp_writer_init_dyn(&w);
        ing_mp_put_map(&w, 2);
        ing_mp_put_cstr(&w, "server");
        ing_mp_put_cstr(&w, ing_client_server(ctl->c));
        ing_mp_put_cstr(&w, "rtt_ms");
        ing_mp_put_array(&w, count);
        for (unsigned i = 0; i < count; i++)
            ing_mp_put_double(&w, rtt[i]);
        rc = w.err == 0 && print_json(w.buf, w.len, 0) == 0 ? 0 : EXIT_FAIL;
        ing_mp_writer_fini(&w);
    }
    free(rtt);
    return rc;
}

/* ---- stats, top ---- */

struct stats_wait {
    uint8_t *copy; /* the BackendStats (or BackendJobInfo) map, malloc'd */
    size_t len;
    const char *job_id; /* NULL: stats; else the job whose BackendJobInfo is awaited */
};

static void
stats_event(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct stats_wait *sw = arg;
    (void)c;
    struct ing_view v = ev->stats;
    if (sw->job_id != NULL) {
        if (ev->type != ING_CLIENT_EV_JOB_INFO || !ing_view_eq(ev->job_id, sw->job_id))
            return;
        v = ev->job_info;
    } else if (ev->type != ING_CLIENT_EV_STATS) {
        return;
    }
    if (sw->copy != NULL)
        return;
    sw->copy = malloc(v.len ? v.len : 1);
    if (sw->copy != NULL) {
        memcpy(sw->copy, v.p, v.len);
        sw->len = v.len;
    }
}

/* stats_fetch asks for the stats (or sw->job_id's BackendJobInfo) and waits for them (at
 * most the answer timeout). */
static int
stats_fetch(struct ctl *ctl, struct stats_wait *sw)
{
    struct timespec t0;
    int limit = answer_timeout(ctl);
    int rc = sw->job_id != NULL ? ing_client_get_job_info(ctl->c, sw->job_id)
                                : ing_client_get_stats(ctl->c);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sw->copy = NULL;
    while (rc == 0 && sw->copy == NULL) {
        int left = limit < 0 ? 1000 : limit - (int)(elapsed_s(&t0) * 1000);
        if (left <= 0)
            return -ETIMEDOUT;
        rc = ing_client_wait(ctl->c, left < 1000 ? left : 1000, stats_event, sw);
        if (rc == -EINTR)
            return rc;
    }
    return rc;
}

/* mp_count tells whether o is a non-negative integer, and leaves it in o->v.u. */
static bool
mp_count(struct ing_mp_obj *o)
{
    if (o->type == ING_MP_INT && o->v.i >= 0) {
        o->v.u = (uint64_t)o->v.i;
        o->type = ING_MP_UINT;
    }
    return o->type == ING_MP_UINT;
}

/* stats_print renders the BackendStats map: its numbers and strings as "key value" lines
 * (four to a line), then the environments as a table. Returns 0 or -EPROTO. */
static int
stats_print(const uint8_t *p, size_t n, FILE *f)
{
    const uint8_t *q = p, *end = p + n;
    struct ing_mp_obj o, k, v;
    int col = 0;
    if (ing_mp_validate(p, n, 8) != 0 || ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_MAP)
        return -EPROTO;
    const uint8_t *envs = NULL;
    for (uint32_t i = 0; i < o.v.n; i++) {
        if (ing_mp_read(&q, end, &k) != 0 || k.type != ING_MP_STR)
            return -EPROTO;
        const uint8_t *vp = q;
        if (ing_mp_read(&q, end, &v) != 0)
            return -EPROTO;
        char val[64];
        if (v.type == ING_MP_UINT)
            snprintf(val, sizeof(val), "%" PRIu64, v.v.u);
        else if (v.type == ING_MP_INT)
            snprintf(val, sizeof(val), "%" PRId64, v.v.i);
        else if (v.type == ING_MP_STR)
            snprintf(val, sizeof(val), "%.*s", (int)(v.v.s.len < 60 ? v.v.s.len : 60),
                     (const char *)v.v.s.p);
        else
            val[0] = 0;
        if (v.type == ING_MP_ARRAY || v.type == ING_MP_MAP) {
            if (k.v.s.len == 12 && memcmp(k.v.s.p, "environments", 12) == 0)
                envs = vp;
            q = vp;
            if (ing_mp_skip(&q, end, 8) != 0)
                return -EPROTO;
            continue;
        }
        fprintf(f, "%-12.*s %-12s%s", (int)k.v.s.len, (const char *)k.v.s.p, val,
                ++col % 4 == 0 ? "\n" : "  ");
    }
    if (col % 4 != 0)
        fputc('\n', f);
    if (envs == NULL)
        return 0;
    fprintf(f, "\n%-16s %-32s %10s %10s\n", "TYPE", "ENVIRONMENT", "WAITING", "RUNNING");
    q = envs;
    if (ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_ARRAY)
        return -EPROTO;
    for (uint32_t i = 0; i < o.v.n; i++) {
        struct ing_mp_obj a, t, nm, w, r;
        if (ing_mp_read(&q, end, &a) != 0 || a.type != ING_MP_ARRAY || a.v.n != 4 ||
            ing_mp_read(&q, end, &t) != 0 || t.type != ING_MP_STR ||
            ing_mp_read(&q, end, &nm) != 0 || nm.type != ING_MP_STR ||
            ing_mp_read(&q, end, &w) != 0 || !mp_count(&w) || ing_mp_read(&q, end, &r) != 0 ||
            !mp_count(&r))
            return -EPROTO;
        fprintf(f, "%-16.*s %-32.*s %10" PRIu64 " %10" PRIu64 "\n", (int)t.v.s.len,
                (const char *)t.v.s.p, (int)nm.v.s.len, (const char *)nm.v.s.p, w.v.u, r.v.u);
    }
    return 0;
}

static int
cmd_stats(struct ctl *ctl, int argc, char **argv)
{
    const char *help = "usage: inginious-ctl [GLOBAL] stats [--json]\n\n"
                       "Prints the backend's statistics (BackendStats, proto.md 5.8): job\n"
                       "counters, waiting and running jobs, agents and slots, and the\n"
                       "environments by queue depth. With --json: the map as one object.\n";
    int rc;
    if ((rc = json_options(ctl, argc, argv, help, 0)) >= 0)
        return rc;
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    struct stats_wait sw = {0};
    rc = stats_fetch(ctl, &sw);
    if (rc != 0)
        return fail_wait(ctl, "the statistics", rc);
    if (ctl->json)
        rc = print_json(sw.copy, sw.len, 0);
    else if ((rc = stats_print(sw.copy, sw.len, stdout)) != 0)
        errmsg("malformed statistics from the backend");
    free(sw.copy);
    return rc == 0 ? 0 : EXIT_FAIL;
}

static int
cmd_position(struct ctl *ctl, int argc, char **argv)
{
    const char *help =
        "usage: inginious-ctl [GLOBAL] position [--json] JOB_ID\n\n"
        "Where a job is (BackendJobInfo, proto.md 5.9): its state (waiting, dispatched,\n"
        "running, or unknown: no such job); while it waits, how many jobs its agents\n"
        "could take will be dispatched before it (its environment's and those of the\n"
        "environments sharing an agent with it) and an estimate of when it will be;\n"
        "the slots that serve its environment and the mean run time there. With --json:\n"
        "the map as one object. Exit status 1 when the job is unknown.\n";
    int rc;
    if ((rc = json_options(ctl, argc, argv, help, 1)) >= 0)
        return rc;
    struct stats_wait sw = {.job_id = argv[optind]};
    if (*sw.job_id == '\0' || strlen(sw.job_id) > 255) {
        errmsg("bad job id '%s'", sw.job_id);
        return EXIT_USAGE;
    }
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    rc = stats_fetch(ctl, &sw);
    if (rc != 0)
        return fail_wait(ctl, "the job's information", rc);
    const uint8_t *st = NULL;
    size_t stlen = 0;
    bool unknown = ing_mp_map_get(sw.copy, sw.len, "state", 5, &st, &stlen) == 0 &&
                   stlen == 8 && memcmp(st, "\xa7unknown", 8) == 0;
    if (ctl->json)
        rc = print_json(sw.copy, sw.len, 0);
    else if ((rc = stats_print(sw.copy, sw.len, stdout)) != 0)
        errmsg("malformed job information from the backend");
    free(sw.copy);
    return rc == 0 && !unknown ? 0 : EXIT_FAIL;
}

/* The state of wait: results printed, and those that were not a success. */
struct session_wait {
    struct ctl *ctl;
    unsigned done;
    unsigned failed;
};

static void
wait_event(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    struct session_wait *sw = arg;

    (void)c;
    if (ev->type == ING_CLIENT_EV_DONE) {
        if (sw->done > 0 && !sw->ctl->json)
            putchar('\n');
        sw->done++;
        sw->failed += print_result(sw->ctl, ev->result, ev->lost) != 0;
        fflush(stdout);
    } else if (ev->type == ING_CLIENT_EV_ERROR && ev->code == ING_ERR_TAKEN_OVER) {
        errmsg("another client resumed the session: taking it back");
    }
}

static int
cmd_wait(struct ctl *ctl, int argc, char **argv)
{
    const char *help =
        "usage: inginious-ctl [GLOBAL] --session FILE wait [--json]\n\n"
        "Resumes the session whose id FILE holds and prints the result of each of its\n"
        "jobs as it arrives (those kept while no client was connected first), until none\n"
        "is pending; it reconnects and resumes by itself if the connection is lost or\n"
        "the backend restarts. With --json: one JSON object per line. Exit status 0 only\n"
        "if every result was a success (or there was none).\n";
    int rc;
    if ((rc = json_options(ctl, argc, argv, help, 0)) >= 0)
        return rc;
    if (ctl->session_file == NULL) {
        errmsg("wait needs --session FILE");
        return EXIT_USAGE;
    }
    struct session_wait sw = {.ctl = ctl};
    struct timespec t0;
    int limit = result_timeout(ctl);
    ctl->reconnect = true;
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!ing_client_resumed(ctl->c) || ing_client_pending(ctl->c) > 0) {
        int left = -1;
        if (limit >= 0) {
            double ms = (double)limit - elapsed_s(&t0) * 1000.0;
            if (ms <= 0)
                return fail_wait(ctl, "the session's results", -ETIMEDOUT);
            left = (int)ms + 1;
        }
        if (no_sessions(ctl))
            return EXIT_FAIL;
        rc = ing_client_wait(ctl->c, left, wait_event, &sw);
        if (rc < 0)
            return fail_wait(ctl, "the session's results", rc);
    }
    return sw.failed == 0 ? 0 : EXIT_FAIL;
}

static volatile sig_atomic_t top_stop;

static void
top_signal(int sig)
{
    (void)sig;
    top_stop = 1;
}

static int
cmd_top(struct ctl *ctl, int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, OPT_COUNT},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *help = "usage: inginious-ctl [GLOBAL] top [--count N]\n\n"
                       "Shows the statistics of 'stats', refreshed every second, on the\n"
                       "terminal's alternate screen (plain ANSI), until Ctrl-C, SIGTERM or N\n"
                       "refreshes; the terminal is restored on exit.\n";
    unsigned count = 0; /* 0: until stopped */
    int ch, rc;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == OPT_COUNT && parse_count(optarg, &count) == 0) {
            continue;
        } else if (ch == OPT_HELP) {
            fputs(help, stdout);
            return 0;
        } else {
            fputs(help, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    rc = ctl_connect(ctl);
    if (rc != 0)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = top_signal; /* no SA_RESTART: the wait returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    fputs("\033[?1049h\033[?25l", stdout); /* alternate screen, cursor hidden */
    rc = 0;
    for (unsigned i = 0; !top_stop && (count == 0 || i < count); i++) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct stats_wait sw = {0};
        rc = stats_fetch(ctl, &sw);
        if (rc != 0)
            break;
        time_t now = time(NULL);
        char when[32];
        strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
        printf("\033[H\033[2Jinginious-ctl top: %s at %s (Ctrl-C to quit)\n\n",
               ing_client_server(ctl->c), when);
        rc = stats_print(sw.copy, sw.len, stdout);
        free(sw.copy);
        fflush(stdout);
        if (rc != 0)
            break;
        /* The rest of the second, serving the connection (pings) meanwhile. */
        while (!top_stop && (count == 0 || i + 1 < count) && elapsed_s(&t0) < 1.0) {
            int left = 1000 - (int)(elapsed_s(&t0) * 1000);
            if (ing_client_wait(ctl->c, left > 0 ? left : 0, NULL, NULL) < 0 && !top_stop) {
                rc = -ECONNRESET;
                break;
            }
        }
        if (rc != 0)
            break;
    }
    fputs("\033[?25h\033[?1049l", stdout); /* the terminal as it was */
    fflush(stdout);
    if (rc == -EINTR || top_stop)
        return 0;
    if (rc == -EPROTO) {
        errmsg("malformed statistics from the backend");
        return EXIT_FAIL;
    }
    return rc == 0 ? 0 : fail_wait(ctl, "the statistics", rc);
}

/* ---- main ---- */

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"backend", required_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 't'},
        {"secret-file", required_argument, NULL, 's'},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, 'V'},
        {"session", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    static const struct {
        const char *name;
        int (*fn)(struct ctl *, int, char **);
    } cmds[] = {
        {"envs", cmd_envs},   {"submit", cmd_submit}, {"kill", cmd_kill},
        {"queue", cmd_queue}, {"watch", cmd_watch},   {"ping", cmd_ping},
        {"stats", cmd_stats}, {"top", cmd_top},       {"position", cmd_position},
        {"wait", cmd_wait},
    };
    struct ctl ctl = {.timeout_ms = DEFAULT_TIMEOUT_MS};
    const char *env = getenv("INGINIOUS_BACKEND");
    int ch, rc;

    ctl.backend = env != NULL && *env != '\0' ? env : ING_CLIENT_DEFAULT_ADDR;
    while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            ctl.backend = optarg;
            break;
        case 't':
            if (parse_duration(optarg, &ctl.timeout_ms) != 0) {
                errmsg("--timeout: bad duration '%s' (N, Nms, Ns, Nm, Nh, Nd; 0 to 7d)", optarg);
                return EXIT_USAGE;
            }
            ctl.timeout_set = true;
            break;
        case 's':
            free(ctl.secret);
            ctl.secret = NULL;
            rc = auth_load_secret(optarg, &ctl.secret, &ctl.secret_len);
            if (rc != 0) {
                errmsg("--secret-file: cannot read %s: %s", optarg, ing_strerror(rc));
                return EXIT_USAGE;
            }
            break;
        case 'S':
            ctl.session_file = optarg;
            break;
        case OPT_JSON:
            ctl.json = true;
            break;
        case OPT_HELP:
            usage(stdout);
            free(ctl.secret);
            return 0;
        case 'V':
            printf("inginious-ctl %s\n", ING_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        errmsg("missing COMMAND");
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(argv[optind], cmds[i].name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* getopt_long starts over (and re-reads its mode) on the subcommand */
            rc = cmds[i].fn(&ctl, sub_argc, sub_argv);
            ing_client_free(ctl.c);
            free(ctl.secret);
            return rc;
        }
    }
    errmsg("unknown command '%s'", argv[optind]);
    usage(stderr);
    free(ctl.secret);
    return EXIT_USAGE;
}
