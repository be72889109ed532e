/* SPDX-License-Identifier: MIT */
/* test_httpd.c: the metrics port of the real inginious-backend (--metrics), driven over
 * loopback sockets: after a scripted workload every counter and gauge of /metrics equals
 * what the workload did, read by both real parsers (python3-prometheus-client and promtool)
 * and in /status; the HTTP answers 200/404/405/400/431/505/408/503, HEAD, keep-alive and
 * its cap, the allow-list; 1,000 idle connections and slowloris peers while jobs keep
 * flowing; headless Chromium renders the status page of a backend with a workload. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inginious/err.h"
#include "support/libtest.h"
#include "support/ztpeer.h"

#define CASE(name) cmocka_unit_test_setup_teardown(name, lt_setup, lt_teardown)

/* metrics_port_at reads the metrics port from the backend's port file at path. */
static int
metrics_port_at(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int port = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "metrics tcp://127.0.0.1:%d", &port) == 1)
            break;
    fclose(f);
    assert_true(port > 0);
    return port;
}

static int
metrics_port(struct lt_world *w)
{
    return metrics_port_at(w->port_path);
}

static int
hconnect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* hconnect_nb starts a non-blocking connection to port (a full accept queue must not block
 * this process, and the peers it drives). */
static int
hconnect_nb(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    assert_true(rc == 0 || errno == EINPROGRESS);
    return fd;
}

static void
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        assert_true(k > 0);
        p += k;
        n -= (size_t)k;
    }
}

struct hresp {
    int status;
    char head[2048];
    char *body; /* malloc'd, NUL-terminated */
    size_t len;
    bool eof; /* the server closed after the answer */
};

/* recv_some reads into p (cap bytes) with a deadline; returns bytes, 0 at EOF. */
static ssize_t
recv_some(int fd, char *p, size_t cap)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int rc = poll(&pf, 1, (int)LT_DEADLINE_MS);
    if (rc != 1)
        fail_msg("no answer from the metrics port in time");
    ssize_t n = read(fd, p, cap);
    if (n < 0 && errno == ECONNRESET)
        return 0;
    assert_true(n >= 0);
    return n;
}

/* read_resp reads one answer (head, then Content-Length bytes unless head_only), never a
 * byte past it: the head byte by byte, the body by its length. */
static void
read_resp(int fd, struct hresp *r, bool head_only)
{
    size_t n = 0;
    memset(r, 0, sizeof(*r));
    while (n < 4 || memcmp(r->head + n - 4, "\r\n\r\n", 4) != 0) {
        assert_true(n < sizeof(r->head) - 1);
        if (recv_some(fd, r->head + n, 1) == 0)
            fail_msg("connection closed before an answer (%zu bytes)", n);
        n++;
    }
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    const char *cl = strstr(r->head, "Content-Length: ");
    assert_non_null(cl);
    size_t want = strtoul(cl + 16, NULL, 10), body = head_only ? 0 : want;
    r->len = want;
    r->body = malloc(body + 1);
    for (size_t got = 0; got < body;) {
        ssize_t k = recv_some(fd, r->body + got, body - got);
        if (k == 0)
            fail_msg("connection closed in the body");
        got += (size_t)k;
    }
    r->body[body] = 0;
}

/* get sends one raw request on a new connection and reads the answer and the close. */
static void
get(int port, const char *req, struct hresp *r)
{
    int fd = hconnect(port);
    send_all(fd, req, strlen(req));
    read_resp(fd, r, strncmp(req, "HEAD", 4) == 0);
    char c;
    r->eof = recv_some(fd, &c, 1) == 0;
    close(fd);
}

static char *
scrape(int port)
{
    struct hresp r;
    get(port, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: text/plain; version=0.0.4"));
    return r.body;
}

/* tool runs "pre FILE" on text, returns the exit status, output in out. */
static int
tool(struct lt_world *w, const char *text, const char *pre, char *out, size_t cap)
{
    const char *path = lt_write_file(w, "scrape.txt", text);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", pre, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    return pclose(p);
}

/* promtool_ok checks text with promtool check metrics (out: its output). */
static void
promtool_ok(struct lt_world *w, const char *text, char *out, size_t cap)
{
    if (tool(w, text, "promtool check metrics <", out, cap) != 0)
        fail_msg("promtool check metrics:\n%s", out);
}

/* sample returns the value of the series "name{labels}" (labels sorted by name, as
 * k=v,k=v; "" for none) as python3-prometheus-client parsed it: samples is its output. */
static double
sample(const char *samples, const char *series)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s ", series);
    const char *p = strstr(samples, want);
    if (p == NULL)
        fail_msg("the parser did not see %s in:%s", series, samples);
    return strtod(p + strlen(want), NULL);
}

static const char PY[] =
    "/usr/bin/python3 -c 'import sys\n"
    "from prometheus_client.parser import text_string_to_metric_families as p\n"
    "print()\n"
    "for f in p(open(sys.argv[1]).read()):\n"
    "  for s in f.samples:\n"
    "    print(s.name + \"{\" + \",\".join(k + \"=\" + v for k, v in sorted(s.labels.items()))"
    " + \"}\", repr(float(s.value)))\n'";

static struct ing_client_job
job(struct lt_world *w, const char *id, const char *env, const char *what)
{
    struct ing_client_job j = {
        .job_id = id, .environment_type = "docker", .environment = env, .launcher = "t"};
    /* {"do": what} in msgpack, in a buffer the next call reuses (submit copies it). */
    static uint8_t mp[40];
    size_t n = strlen(what);
    (void)w;
    assert_true(n < 31);
    memcpy(mp, "\x81\xa2" "do", 4);
    mp[4] = (uint8_t)(0xa0 | n);
    memcpy(mp + 5, what, n);
    j.inputdata.p = (const char *)mp;
    j.inputdata.len = 5 + n;
    return j;
}

static void
submit(struct lt_client *cl, struct ing_client_job j)
{
    int rc = ing_client_submit(cl->c, &j);
    if (rc != 0)
        fail_msg("submit %s: %s", j.job_id, ing_strerror(rc));
}

static void
test_httpd_counters_exact(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", "--max-waiting", "3", NULL);
    int port = metrics_port(w);
    struct lt_client *cl = lt_client_new(w, NULL);
    /* 5 jobs, no agent: 3 wait, 2 are refused (queue full). */
    const char *ids[5] = {"j1", "j2", "j3", "j4", "j5"};
    for (int i = 0; i < 5; i++)
        submit(cl, job(w, ids[i], "default", "success"));
    for (int i = 3; i < 5; i++) {
        struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, ids[i]);
        assert_true(ing_view_eq(e->res.r.result_kind, "crash"));
    }
    lt_barrier(w, cl);
    char *t = scrape(port);
    assert_non_null(strstr(t, "\ninginious_jobs_waiting{environment_type=\"docker\","
                              "environment=\"default\"} 3\n"));
    free(t);
    /* An agent with 2 slots runs them; then two hanging jobs, one killed (the agent
     * answers), one failing job, a kill of a waiting job, and the agent is lost with the
     * other hanging job running. */
    struct lt_agent *ag = lt_agent_new(w, "a1", 2, true, "docker/default", NULL);
    for (int i = 0; i < 3; i++)
        lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, ids[i]);
    submit(cl, job(w, "h1", "default", "hang"));
    submit(cl, job(w, "h2", "default", "hang"));
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "h1");
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "h2");
    submit(cl, job(w, "f1", "default", "fail"));      /* waits for a slot */
    submit(cl, job(w, "w1", "nowhere", "success"));   /* no agent provides it */
    lt_barrier(w, cl);
    assert_int_equal(ing_client_kill(cl->c, "w1"), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "w1");
    assert_int_equal(ing_client_kill(cl->c, "h1"), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "h1");
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "f1");
    lt_barrier(w, cl);
    t = scrape(port);
    assert_non_null(strstr(t, "\ninginious_slots_busy 1\n"));
    assert_non_null(strstr(t, "\ninginious_connections{role=\"agent\",dialect=\"native\"} 1\n"));
    free(t);
    lt_agent_drop(w, ag);
    struct lt_cev *e = lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "h2");
    assert_true(ing_view_eq(e->res.r.result_kind, "crash"));
    lt_barrier(w, cl);

    t = scrape(port);
    static char out[1 << 17];
    assert_null(strstr(t, "inginious_journal_")); /* no --journal: no journal family */
    int st = tool(w, t, PY, out, sizeof(out));
    if (st != 0)
        fail_msg("prometheus_client:\n%s", out);
    static const struct {
        const char *series;
        double v;
    } want[] = {
        {"inginious_jobs_submitted_total{}", 7},
        {"inginious_jobs_refused_total{reason=queue_full}", 2},
        {"inginious_jobs_refused_total{reason=invalid}", 0},
        {"inginious_jobs_dispatched_total{}", 6},
        {"inginious_jobs_started_total{}", 6},
        {"inginious_jobs_done_total{result=success}", 3},
        {"inginious_jobs_done_total{result=failed}", 1},
        {"inginious_jobs_done_total{result=killed}", 1},
        {"inginious_jobs_done_total{result=crash}", 0},
        {"inginious_kills_total{outcome=waiting}", 1},
        {"inginious_kills_total{outcome=agent}", 1},
        {"inginious_kills_total{outcome=timeout}", 0},
        {"inginious_jobs_killed_total{}", 1},
        {"inginious_jobs_lost_total{}", 1},
        {"inginious_jobs_requeued_total{}", 0},
        {"inginious_jobs_crashed_total{}", 1},
        {"inginious_agents_lost_total{}", 1},
        {"inginious_waiting_jobs{}", 0},
        {"inginious_running_jobs{}", 0},
        {"inginious_agents{}", 0},
        {"inginious_slots{}", 0},
        {"inginious_connections{dialect=native,role=client}", 1},
        {"inginious_connections{dialect=native,role=agent}", 0},
        {"inginious_job_wait_seconds_count{environment_type=docker}", 6},
        {"inginious_job_run_seconds_count{environment_type=docker}", 5},
        {"inginious_auth_failures_total{}", 0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        double v = sample(out, want[i].series);
        if (v != want[i].v)
            fail_msg("%s = %g, want %g", want[i].series, v, want[i].v);
    }
    assert_true(sample(out, "inginious_frames_received_total{}") > 10);
    assert_true(sample(out, "inginious_received_bytes_total{}") > 100);
    assert_true(sample(out, "process_resident_memory_bytes{}") > 0);
    assert_true(sample(out, "process_open_fds{}") >= 3);
    promtool_ok(w, t, out, sizeof(out));
    free(t);

    /* /status: the same facts, the failures newest first. */
    struct hresp r;
    get(port, "GET /status HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_true(r.eof); /* HTTP/1.0 without keep-alive */
    assert_non_null(strstr(r.body, "\"submitted\":7,\"refused\":2,\"dispatched\":6,\"started\":6,"));
    assert_non_null(strstr(r.body, "\"done\":5,"));
    assert_non_null(strstr(r.body, "\"failures\":[{\"time\":"));
    const char *h2 = strstr(r.body, "\"job_id\":\"h2\",\"environment\":\"docker/default\","
                                    "\"result\":\"crash\",\"reason\":\"Agent restarted\"");
    const char *h1 = strstr(r.body, "\"job_id\":\"h1\",\"environment\":\"docker/default\","
                                    "\"result\":\"killed\"");
    assert_true(h2 != NULL && h1 != NULL && h2 < h1);
    free(r.body);
    lt_pass(w);
}

static void
test_httpd_answers(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", "--metrics-keepalive", "3",
             "--metrics-timeout", "500ms", NULL);
    int port = metrics_port(w);
    struct hresp r;
    get(port, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    free(r.body);
    get(port, "DELETE /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "Allow: GET, HEAD\r\n"));
    free(r.body);
    get(port, "GET /metrics HTTP/1.1\r\n\r\n", &r); /* no Host */
    assert_int_equal(r.status, 400);
    assert_true(r.eof);
    free(r.body);
    get(port, "GET / HTTP/3.0\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 505);
    free(r.body);
    static char big[10000];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    get(port, big, &r);
    assert_int_equal(r.status, 431);
    assert_true(r.eof);
    free(r.body);
    get(port, "HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Content-Type: text/html"));
    assert_true(r.len > 1000); /* the page's length, without the page */
    free(r.body);

    /* Keep-alive: three requests on one connection, the third closes (cap 3); two
     * pipelined requests are both answered. */
    int fd = hconnect(port);
    const char *req = "GET /status HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, req, strlen(req));
    read_resp(fd, &r, false);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Connection: keep-alive"));
    assert_int_equal(r.body[0], '{');
    free(r.body);
    char two[256];
    snprintf(two, sizeof(two), "%sGET / HTTP/1.1\r\nHost: t\r\n\r\n", req);
    send_all(fd, two, strlen(two));
    read_resp(fd, &r, false);
    assert_int_equal(r.status, 200);
    free(r.body);
    read_resp(fd, &r, false);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Connection: close"));
    assert_non_null(strstr(r.body, "<!DOCTYPE html>"));
    free(r.body);
    char c;
    assert_int_equal(recv_some(fd, &c, 1), 0);
    close(fd);

    /* A request that does not arrive within the timeout: 408, closed. */
    fd = hconnect(port);
    send_all(fd, "GET /metrics HTTP/1.1\r\n", 23);
    read_resp(fd, &r, false);
    assert_int_equal(r.status, 408);
    free(r.body);
    assert_int_equal(recv_some(fd, &c, 1), 0);
    close(fd);
    lt_pass(w);
}

static void
test_httpd_allow_list(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", "--metrics-allow", "10.0.0.0/8",
             NULL);
    int fd = hconnect(metrics_port(w));
    const char *req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    ssize_t k = write(fd, req, strlen(req));
    (void)k; /* may fail: the backend closes at once */
    char c;
    assert_int_equal(recv_some(fd, &c, 1), 0); /* closed without an answer */
    close(fd);
    lt_pass(w);
}

/* scrape_retry GETs /metrics until it is answered 200, at most tries times (closed peers may
 * not be seen by the backend yet), calling wait(arg) after each refusal when wait is set.
 * Returns the body (malloc'd); fails the test after tries refusals. */
static char *
scrape_retry(int port, int tries, void (*wait)(void *), void *arg)
{
    for (int k = 0; k < tries; k++) {
        int fd = hconnect(port);
        const char *req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
        send_all(fd, req, strlen(req));
        struct hresp r;
        read_resp(fd, &r, false);
        close(fd);
        if (r.status == 200)
            return r.body;
        free(r.body);
        if (wait != NULL)
            wait(arg);
    }
    fail_msg("/metrics not answered 200 in %d tries", tries);
    return NULL;
}

/* spin20 lets the world (lt_world) run 20 ms. */
static void
spin20(void *w)
{
    lt_spin(w, 20);
}

static void
test_httpd_idle_and_slowloris(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", "--metrics-max-connections",
             "100", "--metrics-timeout", "2s", NULL);
    int port = metrics_port(w);
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_agent_new(w, "a1", 4, true, "docker/default", NULL);
    lt_wait_envs(w, cl, "docker:[default]");
    /* 1,000 idle connections: 100 are kept, the others answered 503 and closed. Ten of the
     * kept ones are slowloris peers, sending their head one byte at a time. */
    enum { NIDLE = 1000, NSLOW = 10 };
    static int fds[NIDLE];
    for (int i = 0; i < NIDLE; i++) {
        fds[i] = hconnect_nb(port);
        if (i % 50 == 49)
            lt_spin(w, 1);
    }
    int jobs_done = 0, sent = 0, slow_pos = 0;
    const char *slow = "GET /metrics HTTP/1.1\r\nHost: slowloris\r\nX: ";
    char ids[200][16];
    uint64_t t0 = lt_now_ms();
    /* Jobs flow meanwhile: 200 jobs, each submitted as the previous ones end. */
    while (jobs_done < 200) {
        if (lt_now_ms() - t0 > (uint64_t)LT_DEADLINE_MS)
            fail_msg("jobs stalled: %d of 200 done", jobs_done);
        while (sent < 200 && sent - jobs_done < 8) {
            snprintf(ids[sent], sizeof(ids[sent]), "f%d", sent);
            submit(cl, job(w, ids[sent], "default", "success"));
            sent++;
        }
        lt_spin(w, 10);
        for (; jobs_done < sent && lt_find_cev(cl, ING_CLIENT_EV_DONE, ids[jobs_done]); jobs_done++)
            ;
        if (slow_pos < (int)strlen(slow)) {
            for (int i = 0; i < NSLOW; i++) {
                ssize_t k = write(fds[i], slow + slow_pos, 1);
                (void)k;
            }
            slow_pos++;
        }
    }
    /* The connections past the cap got 503. */
    int got503 = 0;
    for (int i = 0; i < NIDLE; i++) {
        struct pollfd pf = {.fd = fds[i], .events = POLLIN};
        if (poll(&pf, 1, 0) == 1) {
            char buf[128] = {0};
            ssize_t k = read(fds[i], buf, sizeof(buf) - 1);
            if (k > 0 && strncmp(buf, "HTTP/1.1 503 ", 13) == 0)
                got503++;
        }
    }
    assert_true(got503 >= NIDLE - 100 - NSLOW);
    for (int i = 0; i < NIDLE; i++)
        close(fds[i]);
    /* The slots free again: a scrape is answered. */
    char *t = scrape_retry(port, 50, spin20, w);
    assert_non_null(strstr(t, "\ninginious_jobs_done_total{result=\"success\"} 200\n"));
    free(t);
    lt_pass(w);
}

static void
test_httpd_chromium(void **state)
{
    struct lt_world *w = *state;
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", NULL);
    int port = metrics_port(w);
    struct lt_client *cl = lt_client_new(w, NULL);
    lt_agent_new(w, "grader-7", 2, true, "docker/default", "docker/python3", NULL);
    lt_wait_envs(w, cl, "docker:[default,python3]");
    /* Two running (hang), three waiting in python3 (the first runs once r1 is killed: a
     * killed job is a failure on the page), one in an environment nobody serves. */
    submit(cl, job(w, "r1", "python3", "hang"));
    submit(cl, job(w, "r2", "python3", "hang"));
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "r1");
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "r2");
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "q%d", i);
        submit(cl, job(w, id, "python3", "hang"));
    }
    submit(cl, job(w, "lonely", "cobol-74", "success"));
    assert_int_equal(ing_client_kill(cl->c, "r1"), 0);
    lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, "r1");
    lt_expect_cev(w, cl, ING_CLIENT_EV_STARTED, "q0");
    lt_barrier(w, cl);
    char url[64], budget[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    snprintf(budget, sizeof(budget), "--virtual-time-budget=%d", 3000);
    char *argv[] = {"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", budget, "--dump-dom", url,
                    NULL};
    if (access(argv[0], X_OK) != 0)
        fail_msg("chromium is not installed (Debian package chromium; .ci/run installs it)");
    char home[LT_STR + 32];
    snprintf(home, sizeof(home), "HOME=%s", lt_dir(w));
    const char *env[] = {home, NULL};
    lt_run(w, argv, env);
    int rc = lt_proc_wait(w);
    const char *dom = w->proc->out;
    if (rc != 0 || strstr(dom, "<td>python3</td>") == NULL)
        fail_msg("chromium exited %d; DOM:\n%s\nstderr:\n%s", rc, dom, w->proc->err);
    /* Queue by environment: python3 has 2 waiting (q1, q2) and 2 running (r2, q0). */
    assert_non_null(strstr(dom, "<td>docker</td><td>python3</td><td class=\"n\">2</td>"
                                "<td class=\"n\">2</td>"));
    assert_non_null(strstr(dom, "<td>cobol-74</td><td class=\"n\">1</td><td class=\"n\">0</td>"));
    assert_non_null(strstr(dom, "<td>grader-7</td><td class=\"n\">2 / 2</td>"));
    assert_non_null(strstr(dom, "<b id=\"waiting\">3</b>"));
    assert_non_null(strstr(dom, "<td>r1</td><td>docker/python3</td><td>killed</td>"));
    assert_non_null(strstr(dom, "<div id=\"err\"></div>")); /* every /status read worked */
    lt_pass(w);
}

/* ZeroMQ peers are counted with dialect "zmq", native ones with "native", while open. */
TP_TEST(test_httpd_zmq_connections)
{
    tp_start(c, "--metrics", "tcp://127.0.0.1:0", NULL);
    int port = metrics_port_at(c->be.port_path);
    struct zt_peer *zc = zt_client(c, "zc");
    struct zt_peer *za = zt_open(c, true, false, NULL);
    char *t = scrape(port);
    assert_non_null(strstr(t, "\ninginious_connections{role=\"client\",dialect=\"zmq\"} 1\n"));
    assert_non_null(strstr(t, "\ninginious_connections{role=\"agent\",dialect=\"zmq\"} 1\n"));
    assert_non_null(strstr(t, "\ninginious_connections{role=\"client\",dialect=\"native\"} 0\n"));
    free(t);
    zt_close(c, zc);
    zt_close(c, za);
    /* Closed: counted out once the backend has seen it (poll the scrape, bounded). */
    uint64_t t0 = tp_now_ms();
    for (;;) {
        t = scrape(port);
        bool gone = strstr(t, "dialect=\"zmq\"} 1\n") == NULL;
        free(t);
        if (gone)
            break;
        if (tp_now_ms() - t0 > (uint64_t)LT_DEADLINE_MS)
            fail_msg("closed ZeroMQ peers still counted");
    }
}

/* Issue 13: the metrics port's connections count in --max-memory. With queued jobs holding
 * most of the budget's share for new work, idle HTTP connections past what is left get 503
 * (all 1000 were kept before, up to --metrics-max-connections); once they are gone, a scrape
 * is answered. */
TP_TEST(test_httpd_connections_in_memory_budget)
{
    enum { NCONN = 1000, JOBS = 11 };
    static int fds[NCONN];
    static bool seen[NCONN];
    tp_start(c, "--metrics", "tcp://127.0.0.1:0", "--metrics-max-connections", "2000",
             "--max-memory", "16M", "--max-job-bytes-per-client", "16M", "--orphan-timeout", "0",
             NULL);
    int port = metrics_port_at(c->be.port_path);
    struct tp_peer *c1 = tp_client(c, "c1", "");
    for (int i = 0; i < JOBS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "big%d", i);
        tp_send_job(c1, &(struct tp_job){.id = id, .env = "nobody", .pad = 1u << 20});
    }
    tp_barrier(c1); /* held: 11 MiB of the 14 MiB new work may use */
    for (int i = 0; i < NCONN; i++) {
        fds[i] = hconnect_nb(port);
        seen[i] = false;
    }
    int got503 = 0;
    uint64_t t0 = tp_now_ms();
    while (got503 < NCONN / 2) {
        if (tp_now_ms() - t0 > (uint64_t)TP_DEADLINE_MS)
            fail_msg("%d of %d idle HTTP connections refused: memory not counted", got503, NCONN);
        static struct pollfd pf[NCONN];
        for (int i = 0; i < NCONN; i++)
            pf[i] = (struct pollfd){.fd = seen[i] ? -1 : fds[i], .events = POLLIN};
        if (poll(pf, NCONN, 100) <= 0)
            continue;
        for (int i = 0; i < NCONN; i++) {
            if (seen[i] || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[128] = {0};
            ssize_t k = read(fds[i], buf, sizeof(buf) - 1);
            seen[i] = k != -1 || errno != EAGAIN;
            got503 += k > 0 && strncmp(buf, "HTTP/1.1 503 ", 13) == 0;
        }
    }
    for (int i = 0; i < NCONN; i++)
        close(fds[i]);
    free(scrape_retry(port, 200, NULL, NULL));
    tp_barrier(c1);
}

/* seg_files counts dir's segment files and sums their sizes. */
static uint64_t
seg_files(const char *dir, uint64_t *bytes)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    uint64_t n = 0;
    *bytes = 0;
    struct dirent *de;
    char path[LT_STR + 16 + 260]; /* dir, "/", a name */
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 4, ".seg") != 0)
            continue;
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        assert_int_equal(stat(path, &sb), 0);
        *bytes += (uint64_t)sb.st_size;
        n++;
    }
    closedir(d);
    return n;
}

/* The journal's family after a scripted run (--journal, --fsync always, 4 KiB segments):
 * 150 jobs accepted then killed fill several segments, compaction removes them; the bytes
 * and segments equal the files on disk, every fsync is in the latency histogram, both real
 * parsers accept it; /status says the same. */
static void
test_httpd_journal_metrics(void **state)
{
    struct lt_world *w = *state;
    char dir[LT_STR + 16];
    snprintf(dir, sizeof(dir), "%s/journal", lt_dir(w));
    lt_start(w, NULL, NULL, "--metrics", "tcp://127.0.0.1:0", "--journal", dir, "--fsync",
             "always", "--journal-segment-size", "4K", "--orphan-timeout", "0", NULL);
    int port = metrics_port(w);
    struct lt_client *cl = lt_client_new(w, NULL);
    char id[16];
    for (int i = 0; i < 150; i++) {
        snprintf(id, sizeof(id), "k%d", i);
        submit(cl, job(w, id, "default", "success"));
    }
    lt_barrier(w, cl);
    for (int i = 0; i < 150; i++) {
        snprintf(id, sizeof(id), "k%d", i);
        assert_int_equal(ing_client_kill(cl->c, id), 0);
        lt_expect_cev(w, cl, ING_CLIENT_EV_DONE, id);
    }
    static char out[1 << 17];
    char *t = NULL;
    uint64_t end = lt_now_ms() + LT_DEADLINE_MS;
    do { /* compaction runs a bounded step per loop iteration: until it is done */
        free(t);
        lt_barrier(w, cl);
        t = scrape(port);
        int st = tool(w, t, PY, out, sizeof(out));
        if (st != 0)
            fail_msg("prometheus_client:\n%s", out);
    } while ((sample(out, "inginious_journal_compactions_total{}") < 1 ||
              sample(out, "inginious_journal_segments{}") > 3) &&
             lt_now_ms() < end);
    uint64_t bytes, nseg = seg_files(dir, &bytes);
    assert_true(sample(out, "inginious_journal_compactions_total{}") >= 1);
    assert_true(nseg <= 3);
    assert_true(sample(out, "inginious_journal_segments{}") == (double)nseg);
    assert_true(sample(out, "inginious_journal_bytes{}") == (double)bytes);
    assert_true(sample(out, "inginious_journal_live_bytes{}") == 0);
    assert_true(sample(out, "inginious_journal_available{}") == 1);
    double fs = sample(out, "inginious_journal_fsyncs_total{}");
    assert_true(fs >= 150); /* one per iteration that wrote, at least: a kill each */
    assert_true(sample(out, "inginious_journal_fsync_seconds_count{}") == fs);
    assert_true(sample(out, "inginious_journal_fsync_seconds_bucket{le=+Inf}") == fs);
    assert_true(sample(out, "inginious_jobs_submitted_total{}") == 150);
    promtool_ok(w, t, out, sizeof(out));
    free(t);
    struct hresp r;
    get(port, "GET /status HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    char want[128];
    snprintf(want, sizeof(want), "\"journal\":{\"available\":true,\"bytes\":%llu,",
             (unsigned long long)bytes);
    if (strstr(r.body, want) == NULL)
        fail_msg("/status lacks %s: %s", want, r.body);
    free(r.body);
    lt_pass(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(test_httpd_counters_exact),
        CASE(test_httpd_journal_metrics),
        CASE(test_httpd_answers),
        CASE(test_httpd_allow_list),
        CASE(test_httpd_idle_and_slowloris),
        CASE(test_httpd_chromium),
        TP_CASE(test_httpd_zmq_connections),
        TP_CASE(test_httpd_connections_in_memory_budget),
    };
    return cmocka_run_group_tests_name("httpd", tests, NULL, NULL);
}
