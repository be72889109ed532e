/* SPDX-License-Identifier: MIT */
/* bench_session: resumable sessions at scale (proto.md 7.9). One library client opens a
 * session and submits N jobs (no agent: they wait) and waits for every acknowledgement; the
 * backend (--journal, spawned here) is killed (-9) and started again on its journal; a new
 * client resumes the session. Prints the submission rate, the journal's size, the restart
 * time (until the port file is written: the replay), the resume time (ClientHelloSession
 * until ING_CLIENT_EV_RESUMED: the list of N ids, the jobs adopted as pending) and the
 * backend's peak RSS after it.
 *
 * usage: bench_session [N [plain]] (N default 200000; plain: the same jobs without a session,
 * acknowledged, for comparison: no resume); $ING_BUILD (default build) finds the backend. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "common.h"
#include "inginious/client.h"

static char dir[64], jdir[96], ports[96], addr[128];

/* spawn starts the backend on the journal and waits (5 s at most) for its port file;
 * returns its pid and the seconds it took, the client address in addr. */
static pid_t
spawn(double *secs)
{
    char bin[256];
    const char *b = getenv("ING_BUILD");
    snprintf(bin, sizeof(bin), "%s/inginious-backend", b != NULL ? b : "build");
    unlink(ports);
    uint64_t t0 = bc_now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 2);
        execl(bin, bin, "--journal", jdir, "--orphan-timeout", "0", "--port-file", ports,
              "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 50000; i++) { /* "agent ADDR\nclient ADDR\n" */
        char text[512];
        const char *cl;
        if (bc_read_small(ports, text, sizeof(text)) > 0 &&
            (cl = strstr(text, "client ")) != NULL && strchr(cl, '\n') != NULL) {
            snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(cl + 7, "\n"), cl + 7);
            break;
        }
        usleep(100);
    }
    *secs = (double)(bc_now_ns() - t0) / 1e9;
    return pid;
}

static size_t accepted;
static bool resumed;
static bool plain; /* no session: ClientHelloAck */

static void
on_event(struct ing_client *c, const struct ing_client_event *ev, void *arg)
{
    (void)c;
    (void)arg;
    accepted += ev->type == ING_CLIENT_EV_ACCEPTED;
    resumed |= ev->type == ING_CLIENT_EV_RESUMED;
}

static struct ing_client *
session(void)
{
    static const uint8_t id[ING_SESSION_ID_LEN] = {0xbe, 0x5e};
    struct ing_client_opts o = {.size = sizeof(o),
                                .addr = addr,
                                .session = !plain,
                                .acks = true,
                                .session_id = id,
                                .connect_timeout_ms = 5000};
    struct ing_client *c = ing_client_new(&o);
    if (c == NULL || ing_client_connect(c) != 0) {
        fprintf(stderr, "bench_session: cannot connect to %s\n", addr);
        exit(1);
    }
    resumed = plain;
    return c;
}

static uint64_t
dir_bytes(const char *path)
{
    uint64_t n = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char p[512];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &st) == 0)
            n += (uint64_t)st.st_size;
    }
    if (d != NULL)
        closedir(d);
    return n;
}

int
main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    plain = argc > 2 && strcmp(argv[2], "plain") == 0;
    snprintf(dir, sizeof(dir), "/tmp/bench_session.XXXXXX");
    if (n <= 0 || mkdtemp(dir) == NULL)
        return 2;
    snprintf(jdir, sizeof(jdir), "%s/journal", dir);
    snprintf(ports, sizeof(ports), "%s/ports", dir);
    double t;
    pid_t pid = spawn(&t);
    struct ing_client *c = session();
    while (!resumed)
        ing_client_wait(c, 1000, on_event, NULL);
    uint64_t t0 = bc_now_ns();
    for (long i = 0; i < n; i++) {
        char jid[32];
        snprintf(jid, sizeof(jid), "job-%ld", i);
        struct ing_client_job j = {
            .job_id = jid, .environment_type = "docker", .environment = "default"};
        int rc;
        while ((rc = ing_client_submit(c, &j)) == -ENOBUFS)
            ing_client_wait(c, 10, on_event, NULL);
        if (rc != 0 || (i % 1024 == 0 && ing_client_wait(c, 0, on_event, NULL) < 0))
            return 1;
    }
    while (accepted < (size_t)n)
        if (ing_client_wait(c, 5000, on_event, NULL) < 0)
            return 1;
    double sub = (double)(bc_now_ns() - t0) / 1e9;
    kill(pid, SIGKILL); /* before the client leaves: a plain client's jobs would go with it */
    waitpid(pid, NULL, 0);
    ing_client_free(c);
    uint64_t bytes = dir_bytes(jdir);
    pid = spawn(&t);
    c = session();
    t0 = bc_now_ns();
    while (!resumed)
        ing_client_wait(c, 1000, on_event, NULL);
    double res = (double)(bc_now_ns() - t0) / 1e9;
    size_t held = plain ? (size_t)n : ing_client_pending(c);
    long hwm = bc_proc_status_kb(pid, "VmHWM");
    ing_client_free(c);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    printf("RESULT %s jobs=%ld submit_acked_per_s=%.0f journal_bytes=%llu bytes_per_job=%.1f "
           "restart_s=%.3f resume_s=%.3f held=%zu backend_hwm_kb=%ld\n",
           plain ? "plain" : "session", n, (double)n / sub, (unsigned long long)bytes, (double)bytes / (double)n, t, res,
           held, hwm);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 && held == (size_t)n ? 0 : 1;
}
