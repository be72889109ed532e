/* SPDX-License-Identifier: MIT */
/* test_session.c: resumable client sessions (proto.md 7.9) on the wire, against the real
 * binary: a detached session's jobs keep running and their results are kept, resuming
 * delivers them then lists the jobs held, a resubmission is idempotent, a second connection
 * takes a session over, --session-ttl ends a detached session, and with --journal sessions
 * survive kill -9 and SIGTERM (which ends the other jobs, held ones too); an acknowledging
 * connection that leaves over 4 x --max-output of results unacknowledged is cut off, kept results are
 * shed under a small --max-memory, and a job the journal could not write is not listed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inginious/mp.h"
#include "inginious/proto.h"
#include "support/tpeer.h"

static const uint8_t sid_a[ING_SESSION_ID_LEN] = {0xa0, 1, 2, 3, 4, 5, 6, 7,
                                                  8,    9, 10, 11, 12, 13, 14, 15};
static const uint8_t sid_b[ING_SESSION_ID_LEN] = {0xb0, 1, 2, 3, 4, 5, 6, 7,
                                                  8,    9, 10, 11, 12, 13, 14, 15};

/* session_open_f connects a client that opens session id with hello flags (the Welcome
 * says SESSION and SESSION_ACK). */
static struct tp_peer *
session_open_f(struct tp_ctx *c, const uint8_t *id, uint8_t flags)
{
    struct tp_peer *p = tp_connect(c, ING_ROLE_CLIENT);
    uint16_t want = ING_WELCOME_SESSION | ING_WELCOME_SESSION_ACK;
    if ((p->welcome.flags & want) != want)
        tp_fail("Welcome flags 0x%04x: no SESSION and SESSION_ACK", p->welcome.flags);
    struct ing_msg m = {.type = ING_CLIENT_HELLO_SESSION};
    m.u.client_hello.name = (struct ing_view){"sess", 4};
    memcpy(m.u.client_hello.session, id, ING_SESSION_ID_LEN);
    m.u.client_hello.session_flags = flags;
    tp_send(p, &m);
    tp_expect(p, ING_BACKEND_UPDATE_ENVIRONMENTS);
    return p;
}

/* session_open connects a client that opens session id, results not acknowledged. */
static struct tp_peer *
session_open(struct tp_ctx *c, const uint8_t *id)
{
    return session_open_f(c, id, 0);
}

/* send_ack sends ClientSessionAck(count). */
static void
send_ack(struct tp_peer *p, uint64_t count)
{
    struct ing_msg m = {.type = ING_CLIENT_SESSION_ACK};
    m.u.session_ack.count = count;
    tp_send(p, &m);
}

/* wait_log waits (bounded) until the backend's log holds needle n times. */
static void
wait_log(struct tp_ctx *c, const char *needle, int n)
{
    uint64_t deadline = tp_now_ms() + 10000u * (unsigned)tp_slow();
    for (;;) {
        char path[600];
        snprintf(path, sizeof(path), "%s/backend.log", tp_dir(c));
        FILE *f = fopen(path, "r");
        int seen = 0;
        char line[1024];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL)
            seen += strstr(line, needle) != NULL;
        if (f != NULL)
            fclose(f);
        if (seen >= n)
            return;
        if (tp_now_ms() > deadline)
            tp_fail("the backend's log holds \"%s\" %d times, not %d", needle, seen, n);
        poll(NULL, 0, 2);
    }
}

/* wait_detached waits (bounded) until the backend's log says that n sessions were detached:
 * the close reached it, and results from now on are kept. */
static void
wait_detached(struct tp_ctx *c, int n)
{
    wait_log(c, "session detached:", n);
}

/* expect_list expects one BackendSessionJobs, the last, listing exactly the ids of want
 * (space-separated, any order). */
static void
expect_list(struct tp_peer *p, const char *want)
{
    const struct ing_msg *m = tp_expect(p, ING_BACKEND_SESSION_JOBS);
    assert_true(m->u.session_jobs.last);
    const uint8_t *q = (const uint8_t *)m->u.session_jobs.jobs.p;
    const uint8_t *end = q + m->u.session_jobs.jobs.len;
    struct ing_mp_obj o;
    if (ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_ARRAY)
        tp_fail("BackendSessionJobs: not an array");
    char got[512] = "";
    size_t n = o.v.n;
    for (size_t i = 0; i < n; i++) {
        if (ing_mp_read(&q, end, &o) != 0 || o.type != ING_MP_STR)
            tp_fail("BackendSessionJobs: entry %zu not a str", i);
        char one[300];
        snprintf(one, sizeof(one), " %.*s ", (int)o.v.s.len, (const char *)o.v.s.p);
        char pad[520];
        snprintf(pad, sizeof(pad), " %s ", want);
        if (strstr(pad, one) == NULL)
            tp_fail("BackendSessionJobs lists %s, not in [%s]", one, want);
        strncat(got, one, sizeof(got) - strlen(got) - 1);
    }
    size_t nwant = 0;
    for (const char *w = want; *w != '\0'; w++)
        nwant += (*w != ' ' && (w == want || w[-1] == ' '));
    if (n != nwant)
        tp_fail("BackendSessionJobs lists [%s], expected [%s]", got, want);
}

/* kill9_restart kills the backend (-9) and starts it again on journal jdir. */
static void
kill9_restart(struct tp_ctx *c, const char *jdir)
{
    tp_signal(c, SIGKILL);
    assert_int_not_equal(tp_wait_exit(c, 10000 * tp_slow()), -1);
    tp_start(c, "--journal", jdir, NULL);
}

/* sigterm_restart stops the backend with SIGTERM: plain client p's job p1 ends crash
 * "Backend shutting down", session client s gets Error SHUTDOWN and no crash before it (its
 * job stays in the journal); the backend exits 0 and starts again on journal jdir. */
static void
sigterm_restart(struct tp_ctx *c, const char *jdir, struct tp_peer *p, struct tp_peer *s)
{
    tp_signal(c, SIGTERM);
    tp_expect_synthetic(p, "p1", "crash", "Backend shutting down", "S-p1");
    tp_expect_error(s, ING_ERR_SHUTDOWN);
    assert_int_equal(tp_wait_exit(c, 10000 * tp_slow()), 0);
    tp_start(c, "--journal", jdir, NULL);
}

/* A detached session: its running job goes on, its waiting job is dispatched, their results
 * are kept; resuming delivers them, then lists the jobs still held; resubmitting a held job
 * is acknowledged and does not run it again; a job that was never received is new. */
TP_TEST(test_session_detach_and_resume)
{
    tp_start(c, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, ""); /* a new session */
    tp_submit(s, "j1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_submit(s, "j2", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_submit(s, "j3", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "j1");
    tp_close(c, s);
    wait_detached(c, 1);
    tp_started(ag, "j1");
    tp_done(ag, "j1", "success", "");
    tp_expect_job(ag, "j2"); /* not killed, not dropped */
    struct tp_peer *other = tp_client(c, "other", NULL);
    tp_kill(other, "j3"); /* a waiting job killed: its answer is kept */
    tp_barrier(other);
    tp_started(ag, "j2");
    struct tp_peer *s2 = session_open(c, sid_a);
    tp_expect_done(s2, "j1", "success", NULL, NULL);
    tp_expect_synthetic(s2, "j3", "killed", "You killed the job", "S-j3");
    expect_list(s2, "j2");
    tp_submit(s2, "j2", 0); /* held: acknowledged again, not run again */
    tp_expect(s2, ING_BACKEND_JOB_ACCEPTED);
    tp_submit(s2, "j4", 0);
    tp_expect(s2, ING_BACKEND_JOB_ACCEPTED);
    tp_done(ag, "j2", "failed", "");
    tp_expect_done(s2, "j2", "failed", NULL, NULL);
    tp_expect_job(ag, "j4"); /* the next job the agent gets: no second j2 */
    tp_done(ag, "j4", "success", "");
    tp_expect_done(s2, "j4", "success", NULL, NULL);
    /* delivered results are not kept: a third connection gets none and an empty list */
    tp_close(c, s2);
    struct tp_peer *s3 = session_open(c, sid_a);
    expect_list(s3, "");
    /* a plain client is unchanged: its jobs go with it, and the same id then is new */
    struct tp_peer *p = tp_client(c, "plain", NULL);
    tp_submit(p, "p1", 0);
    tp_expect_job(ag, "p1");
    tp_close(c, p);
    const struct ing_msg *k = tp_expect(ag, ING_BACKEND_KILL_JOB);
    assert_true(ing_view_eq(k->u.kill.job_id, "p1"));
}

/* A second connection with the id of an attached session takes it over: the first gets
 * Error TAKEN_OVER and is closed, the job goes on and its result reaches the second. A
 * connection cannot switch sessions, nor open one once it holds jobs. */
TP_TEST(test_session_takeover)
{
    tp_start(c, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    tp_submit(s, "t1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "t1");
    struct tp_peer *s2 = session_open(c, sid_a);
    expect_list(s2, "t1");
    tp_expect_error(s, ING_ERR_TAKEN_OVER);
    tp_expect_closed(s);
    tp_done(ag, "t1", "success", "");
    tp_expect_done(s2, "t1", "success", NULL, NULL);
    struct ing_msg m = {.type = ING_CLIENT_HELLO_SESSION};
    m.u.client_hello.name = (struct ing_view){"x", 1};
    memcpy(m.u.client_hello.session, sid_b, ING_SESSION_ID_LEN);
    tp_send(s2, &m);
    tp_expect_error(s2, ING_ERR_INVALID);
    struct tp_peer *p = tp_client(c, "plain", NULL);
    tp_submit(p, "p1", 0);
    tp_expect_job(ag, "p1");
    tp_send(p, &m);
    tp_expect_error(p, ING_ERR_INVALID);
    tp_done(ag, "p1", "success", "");
    tp_expect_done(p, "p1", "success", NULL, NULL); /* still a plain client */
}

/* After --session-ttl detached, a session ends as a client that left: its running job is
 * killed on its agent, its waiting job dropped, and the id is new again. */
TP_TEST(test_session_ttl)
{
    char ttl[32];
    snprintf(ttl, sizeof(ttl), "%dms", 300 * tp_slow());
    tp_start(c, "--session-ttl", ttl, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_b);
    expect_list(s, "");
    tp_submit(s, "e1", 0);
    tp_submit(s, "e2", 0);
    tp_expect_job(ag, "e1");
    tp_close(c, s);
    const struct ing_msg *k = tp_expect(ag, ING_BACKEND_KILL_JOB);
    assert_true(ing_view_eq(k->u.kill.job_id, "e1"));
    if (!tp_log_contains(c, "session detached for"))
        tp_fail("the log does not say that the session ended");
    tp_done(ag, "e1", "killed", "");
    struct tp_peer *s2 = session_open(c, sid_b);
    expect_list(s2, "");
    (void)ag; /* e2 was dropped: the list above does not hold it */
}

/* With --journal, kill -9 then a restart: the session's waiting job and its kept result come
 * back; a resumed session gets the result, then the list. */
TP_TEST(test_session_journal_kill9)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    tp_submit(s, "k1", 0);
    tp_submit(s, "k2", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "k1");
    tp_close(c, s);
    wait_detached(c, 1);
    tp_done(ag, "k1", "success", "kept"); /* state "kept" */
    tp_expect_job(ag, "k2");
    struct tp_peer *plain = tp_client(c, "plain", NULL); /* a barrier: the result is journaled */
    tp_barrier(plain);
    kill9_restart(c, jdir);
    struct tp_peer *s2 = session_open(c, sid_a);
    const struct ing_msg *d = tp_expect_done(s2, "k1", "success", NULL, NULL);
    assert_true(ing_view_eq(d->u.result.state, "kept"));
    expect_list(s2, "k2"); /* it was running: it waits again */
    struct tp_peer *ag2 = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect(s2, ING_BACKEND_UPDATE_ENVIRONMENTS); /* the environment is back */
    tp_expect_job(ag2, "k2");
    tp_done(ag2, "k2", "success", "");
    tp_expect_done(s2, "k2", "success", NULL, NULL);
    tp_barrier(s2); /* k1's delivery and k2's end are journaled */
    kill9_restart(c, jdir);
    struct tp_peer *s3 = session_open(c, sid_a);
    expect_list(s3, ""); /* nothing delivered comes back */
}

/* SIGTERM with --journal: the session's job is not answered and comes back after the
 * restart; a plain client's job is answered crash and does not come back. */
TP_TEST(test_session_journal_sigterm)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, NULL);
    struct tp_peer *s = session_open(c, sid_b);
    expect_list(s, "");
    struct tp_peer *p = tp_client(c, "plain", NULL);
    tp_submit(s, "s1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_submit(p, "p1", 0);
    tp_barrier(p);
    sigterm_restart(c, jdir, p, s);
    if (!tp_log_contains(c, "1 waiting jobs restored"))
        tp_fail("the log does not say that one job was restored");
    struct tp_peer *s2 = session_open(c, sid_b);
    expect_list(s2, "s1");
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    tp_expect_job(ag, "s1");
}

/* Kept results larger together than --max-output reach a resuming session whole, in
 * batches as it reads them, in their order, then the list: it is not dropped for them. */
TP_TEST(test_session_many_kept_results)
{
    tp_start(c, "--max-output", "64K", NULL);
    struct tp_peer *ag = tp_agent(c, "A", 8, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    char id[32];
    for (int i = 0; i < 32; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        tp_submit(s, id, 0);
        tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    }
    tp_close(c, s);
    wait_detached(c, 1);
    static char out[16 * 1024];
    memset(out, 'o', sizeof(out) - 1);
    for (int i = 0; i < 32; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        tp_expect_job(ag, id);
        struct tp_result r = {.id = id, .kind = "success", .out = out};
        tp_done_full(ag, &r);
    }
    tp_barrier(ag);
    struct tp_peer *s2 = session_open(c, sid_a);
    for (int i = 0; i < 32; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        const struct ing_msg *d = tp_expect_done(s2, id, "success", NULL, NULL);
        assert_int_equal(d->u.result.stdout_.len, sizeof(out) - 1);
    }
    expect_list(s2, "");
}

/* A session holding more jobs than one list frame (and --max-output) can carry gets its
 * list in several BackendSessionJobs frames, the last one marked, every job once. */
TP_TEST(test_session_long_list)
{
    tp_start(c, "--max-output", "16K", NULL);
    struct tp_peer *s = session_open(c, sid_b);
    expect_list(s, "");
    enum { N = 800 };
    char id[40];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "listing-job-%04d", i);
        tp_submit(s, id, 0);
        tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    }
    tp_close(c, s);
    wait_detached(c, 1);
    struct tp_peer *s2 = session_open(c, sid_b);
    static bool seen[N];
    int frames = 0, ids = 0;
    for (bool last = false; !last; frames++) {
        const struct ing_msg *m = tp_expect(s2, ING_BACKEND_SESSION_JOBS);
        last = m->u.session_jobs.last;
        const uint8_t *q = (const uint8_t *)m->u.session_jobs.jobs.p;
        const uint8_t *end = q + m->u.session_jobs.jobs.len;
        struct ing_mp_obj o;
        assert_int_equal(ing_mp_read(&q, end, &o), 0);
        assert_int_equal(o.type, ING_MP_ARRAY);
        for (uint32_t k = o.v.n; k > 0; k--) {
            unsigned x;
            assert_int_equal(ing_mp_read(&q, end, &o), 0);
            assert_int_equal(o.type, ING_MP_STR);
            assert_int_equal(sscanf((const char *)o.v.s.p, "listing-job-%4u", &x), 1);
            assert_true(x < N && !seen[x]);
            seen[x] = true;
            ids++;
        }
    }
    assert_int_equal(ids, N);
    assert_true(frames > 1);
    tp_barrier(s2); /* still connected */
}

/* Compaction keeps what sessions need: after enough other jobs came and went for the first
 * segments to be compacted away, a kill -9 and a restart still restore the session's
 * waiting jobs (record 7) and its kept result (record 4). */
TP_TEST(test_session_journal_compaction)
{
    char jdir[600], seg1[700];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    snprintf(seg1, sizeof(seg1), "%s/0000000000000001.seg", jdir);
    tp_start(c, "--journal", jdir, "--journal-segment-size", "4K", NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    struct tp_job w = {.id = "w1", .env = "parked"};
    tp_send_job(s, &w);
    w.id = "w2";
    tp_send_job(s, &w);
    tp_submit(s, "keep1", 0);
    for (int i = 0; i < 3; i++)
        tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "keep1");
    tp_close(c, s);
    wait_detached(c, 1);
    tp_done(ag, "keep1", "success", "kept");
    struct tp_peer *p = tp_client(c, "churn", NULL);
    char id[32];
    for (int i = 0; i < 400 && access(seg1, F_OK) == 0; i++) {
        snprintf(id, sizeof(id), "churn-%d", i);
        struct tp_job cj = {.id = id, .pad = 1500}; /* two a segment */
        tp_send_job(p, &cj);
        tp_expect_job(ag, id);
        tp_done(ag, id, "success", "");
        tp_expect_done(p, id, "success", NULL, NULL);
    }
    if (access(seg1, F_OK) == 0)
        tp_fail("the first segment was not compacted away");
    tp_barrier(p);
    kill9_restart(c, jdir);
    struct tp_peer *s2 = session_open(c, sid_a);
    const struct ing_msg *d = tp_expect_done(s2, "keep1", "success", NULL, NULL);
    assert_true(ing_view_eq(d->u.result.state, "kept"));
    expect_list(s2, "w1 w2");
}

/* resume_agent connects an agent that opens with AgentHelloResume (proto.md 7.10) under id
 * rid (16 x rid), 1 slot of docker/default, claiming job claim (started) unless NULL. */
static struct tp_peer *
resume_agent(struct tp_ctx *c, uint8_t rid, const char *claim)
{
    struct tp_peer *p = tp_connect(c, ING_ROLE_AGENT);
    if ((p->welcome.flags & ING_WELCOME_RESUME) == 0)
        tp_fail("Welcome flags 0x%04x: no RESUME", p->welcome.flags);
    static const struct tp_env env = {"docker", "default", "i1", 1, TP_ADV_ABSENT};
    struct ing_mp_writer w;
    tp_envs_mp(&env, 1, &w);
    struct ing_resume_job job = {{claim, claim != NULL ? (uint32_t)strlen(claim) : 0}, true};
    struct ing_msg m = {.type = ING_AGENT_HELLO_RESUME};
    memset(m.u.agent_resume.agent_id, rid, ING_AGENT_ID_LEN);
    m.u.agent_resume.hello.friendly_name = (struct ing_view){"R", 1};
    m.u.agent_resume.hello.slots = 1;
    m.u.agent_resume.hello.environments = (struct ing_view){(const char *)w.buf, (uint32_t)w.len};
    m.u.agent_resume.n_jobs = claim != NULL;
    m.u.agent_resume.jobs = &job;
    tp_send(p, &m);
    ing_mp_writer_fini(&w);
    return p;
}

/* Sessions (7.9) with an agent that keeps its jobs (7.10), across two kill -9 restarts: the
 * session's running job comes back held for its agent (records 7, 2 and 3), is claimed
 * back, and its result, arriving while the session is detached, is kept in the journal
 * (record 4): the next restart still has it, the resumed session gets it once; once
 * delivered (record 5) it does not come back. */
TP_TEST(test_session_journal_agent_resume)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, NULL);
    struct tp_peer *ag = resume_agent(c, 0x42, NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    tp_submit(s, "h1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "h1");
    tp_started(ag, "h1");
    tp_expect(s, ING_BACKEND_JOB_STARTED);
    tp_barrier(ag); /* the started record is written */
    tp_close(c, s);
    kill9_restart(c, jdir);
    tp_close(c, ag);
    if (!tp_log_contains(c, "journal: 1 running jobs wait"))
        tp_fail("the restart does not hold the session's running job for its agent");
    struct tp_peer *ag2 = resume_agent(c, 0x42, "h1");
    tp_barrier(ag2); /* claimed: no BackendKillJob before the Pong */
    if (!tp_log_contains(c, "claimed 1 jobs back (0 refused)"))
        tp_fail("the agent did not claim the session's job back");
    tp_done(ag2, "h1", "success", "held");
    tp_barrier(ag2); /* the result is kept for the detached session, and journaled */
    kill9_restart(c, jdir);
    tp_close(c, ag2);
    struct tp_peer *s2 = session_open(c, sid_a);
    const struct ing_msg *d = tp_expect_done(s2, "h1", "success", NULL, NULL);
    assert_true(ing_view_eq(d->u.result.state, "held"));
    expect_list(s2, "");
    tp_barrier(s2); /* its delivery is journaled */
    kill9_restart(c, jdir);
    struct tp_peer *s3 = session_open(c, sid_a);
    expect_list(s3, ""); /* neither the job nor its result comes back */
}

/* A connection that acknowledges its results (flag ACK, proto.md 7.9): a result read but
 * not acknowledged when the connection closes is sent again to the next one, then the list;
 * an acknowledged one is not; an acknowledgement past what was sent, or from a connection
 * without the flag, is refused (Error INVALID) and changes nothing. */
TP_TEST(test_session_ack_resends_unacknowledged)
{
    tp_start(c, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 2, "docker/default", NULL);
    struct tp_peer *s = session_open_f(c, sid_a, ING_SESSION_ACK);
    expect_list(s, "");
    tp_submit(s, "a1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_submit(s, "a2", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "a1");
    tp_expect_job(ag, "a2");
    tp_done(ag, "a1", "success", "");
    tp_expect_done(s, "a1", "success", NULL, NULL);
    send_ack(s, 2); /* one result was sent */
    tp_expect_error(s, ING_ERR_INVALID);
    send_ack(s, 1);
    tp_done(ag, "a2", "failed", "");
    tp_expect_done(s, "a2", "failed", NULL, NULL); /* read, not acknowledged */
    send_ack(s, 1);                                /* again: changes nothing */
    tp_barrier(s);
    tp_close(c, s);
    wait_detached(c, 1);
    struct tp_peer *s2 = session_open_f(c, sid_a, ING_SESSION_ACK);
    tp_expect_done(s2, "a2", "failed", NULL, NULL); /* sent again: never acknowledged */
    expect_list(s2, "");
    send_ack(s2, 1);
    tp_barrier(s2);
    tp_close(c, s2);
    wait_detached(c, 2);
    struct tp_peer *s3 = session_open(c, sid_a); /* without ACK: nothing comes again */
    expect_list(s3, "");
    send_ack(s3, 0);
    tp_expect_error(s3, ING_ERR_INVALID);
    struct tp_peer *p = tp_client(c, "plain", NULL);
    send_ack(p, 0);
    tp_expect_error(p, ING_ERR_INVALID);
}

/* With --journal and ACK, a result read but not acknowledged survives kill -9: the resumed
 * session gets it again (the job does not run again: it is not in the list); acknowledged,
 * it does not come back after the next kill -9. */
TP_TEST(test_session_ack_journal_kill9)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 1, "docker/default", NULL);
    struct tp_peer *s = session_open_f(c, sid_b, ING_SESSION_ACK);
    expect_list(s, "");
    tp_submit(s, "r1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "r1");
    tp_done(ag, "r1", "success", "once");
    tp_expect_done(s, "r1", "success", NULL, NULL); /* read; its acknowledgement never sent */
    struct tp_peer *plain = tp_client(c, "plain", NULL); /* a barrier: the result is journaled */
    tp_barrier(plain);
    kill9_restart(c, jdir);
    struct tp_peer *s2 = session_open_f(c, sid_b, ING_SESSION_ACK);
    const struct ing_msg *d = tp_expect_done(s2, "r1", "success", NULL, NULL);
    assert_true(ing_view_eq(d->u.result.state, "once"));
    expect_list(s2, ""); /* ended: it does not run again */
    send_ack(s2, 1);
    tp_barrier(s2); /* the delivery is journaled */
    kill9_restart(c, jdir);
    struct tp_peer *s3 = session_open_f(c, sid_b, ING_SESSION_ACK);
    expect_list(s3, "");
}

/* big_done sends AgentJobDone(id, "success", state) whose stdout is kib KiB of 'o'. */
static void
big_done(struct tp_peer *ag, const char *id, const char *state, size_t kib)
{
    size_t n = kib << 10;
    char *out = malloc(n + 1);
    assert_non_null(out);
    memset(out, 'o', n);
    out[n] = '\0';
    struct tp_result r = {.id = id, .kind = "success", .state = state, .out = out};
    tp_done_full(ag, &r);
    free(out);
}

/* An acknowledging connection (flag ACK) that reads its results and never acknowledges them
 * is sent Error OVERLOAD and closed once it leaves over 4 x --max-output of them
 * unacknowledged (proto.md 7.9; here 4 MiB: six results of 768 KiB); its session is
 * detached with the results kept: the next connection gets all six again and, acknowledging
 * as it reads, is not cut off. */
TP_TEST(test_session_ack_unacked_cutoff)
{
    tp_start(c, "--max-output", "1M", NULL);
    struct tp_peer *ag = tp_agent(c, "A", 6, "docker/default", NULL);
    struct tp_peer *s = session_open_f(c, sid_a, ING_SESSION_ACK);
    expect_list(s, "");
    static const char *const ids[] = {"u1", "u2", "u3", "u4", "u5", "u6"};
    for (int i = 0; i < 6; i++) {
        tp_submit(s, ids[i], 0);
        tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
        tp_expect_job(ag, ids[i]);
    }
    for (int i = 0; i < 5; i++) {
        big_done(ag, ids[i], ids[i], 768);
        tp_expect_done(s, ids[i], "success", NULL, ids[i]);
    }
    tp_barrier(s); /* 3.75 MiB unacknowledged: still served */
    big_done(ag, ids[5], ids[5], 768);
    tp_expect_done(s, ids[5], "success", NULL, ids[5]); /* 4.5 MiB: past the bound */
    tp_expect_error(s, ING_ERR_OVERLOAD);
    tp_expect_closed(s);
    if (!tp_log_contains(c, "over 4194304 bytes of results not acknowledged"))
        tp_fail("the backend did not log the cut-off at 4 x --max-output");
    wait_detached(c, 1);
    struct tp_peer *s2 = session_open_f(c, sid_a, ING_SESSION_ACK);
    for (int i = 0; i < 6; i++) {
        const struct ing_msg *d = tp_expect_done(s2, ids[i], "success", NULL, ids[i]);
        assert_int_equal(d->u.result.stdout_.len, 768u << 10);
        send_ack(s2, (uint64_t)i + 1);
    }
    expect_list(s2, "");
    tp_barrier(s2); /* acknowledged as read: never past the bound, not closed */
    tp_close(c, s2);
    wait_detached(c, 2);
    struct tp_peer *s3 = session_open_f(c, sid_a, ING_SESSION_ACK);
    expect_list(s3, ""); /* all acknowledged: nothing comes again */
}

/* Under a small --max-memory (16 MiB), results kept for a detached session (four of 3 MiB)
 * leave no room for another client's result of 5 MiB: the oldest kept results are replaced
 * by a short crash "Backend memory full" that keeps their state (proto.md 7.7; logged), and
 * the other client gets its result and goes on being served; on resuming, the session gets
 * one result per job, the first shed, each either its own or the crash. */
TP_TEST(test_session_kept_shed_max_memory)
{
    tp_start(c, "--max-memory", "32M", NULL);
    struct tp_peer *ag = tp_agent(c, "A", 7, "docker/default", NULL);
    struct tp_peer *plain = tp_client(c, "plain", NULL);
    struct tp_peer *s = session_open(c, sid_b);
    expect_list(s, "");
    static const char *const ids[] = {"m1", "m2", "m3", "m4", "m5", "m6"};
    for (int i = 0; i < 6; i++) {
        tp_submit(s, ids[i], 0);
        tp_expect_job(ag, ids[i]);
    }
    tp_submit(plain, "other", 0);
    tp_expect_job(ag, "other");
    tp_close(c, s);
    wait_detached(c, 1);
    for (int i = 0; i < 6; i++) {
        big_done(ag, ids[i], ids[i], 3 << 10);
        tp_barrier(ag); /* kept before the next */
    }
    if (tp_log_contains(c, "kept results of the oldest detached sessions replaced"))
        tp_fail("18 MiB kept under a 32 MiB budget: shed too early");
    big_done(ag, "other", "other", 5 << 10);
    const struct ing_msg *o = tp_expect_done(plain, "other", "success", NULL, "other");
    assert_int_equal(o->u.result.stdout_.len, 5u << 20); /* served, whole */
    if (!tp_log_contains(c, "kept results of the oldest detached sessions replaced"))
        tp_fail("no room for the other client's result, yet nothing was shed");
    tp_submit(plain, "after", 0); /* new jobs still run */
    tp_expect_job(ag, "after");
    tp_done(ag, "after", "success", "");
    tp_expect_done(plain, "after", "success", NULL, NULL);
    struct tp_peer *s2 = session_open(c, sid_b);
    int shed = 0;
    for (int i = 0; i < 6; i++) {
        const struct ing_msg *d = tp_expect(s2, ING_BACKEND_JOB_DONE);
        if (!ing_view_eq(d->u.result.job_id, ids[i]))
            tp_fail("kept result %d is for %.*s, not %s", i, (int)d->u.result.job_id.len,
                    d->u.result.job_id.p, ids[i]);
        if (!ing_view_eq(d->u.result.state, ids[i]))
            tp_fail("%s: its state was not kept", ids[i]);
        bool is_shed = ing_view_eq(d->u.result.result_kind, "crash");
        if (is_shed) {
            if (!ing_view_eq(d->u.result.result_text, "Backend memory full"))
                tp_fail("%s: crash, but not \"Backend memory full\"", ids[i]);
            tp_check_synthetic(d);
        } else if (!ing_view_eq(d->u.result.result_kind, "success") ||
                   d->u.result.stdout_.len != 3u << 20) {
            tp_fail("%s: neither its own result nor the crash", ids[i]);
        }
        if (i == 0 && !is_shed)
            tp_fail("the oldest kept result was not the first shed");
        shed += is_shed;
    }
    expect_list(s2, "");
    if (shed == 6)
        tp_fail("every kept result was shed: more than the other result needed");
}

/* SIGTERM with --journal while agents that keep their jobs (7.10) are away: their held jobs
 * ("ghosts") are a session's and a plain client's. The plain client's job ends crash
 * "Backend shutting down"; the session's is not answered, is kept in the journal and comes
 * back held for its agent (7.6), which claims it back after the restart: its result reaches
 * the resumed session once. The backend exits 0 (no leak, no crash under the sanitizers). */
TP_TEST(test_session_journal_sigterm_held)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, "--resume-grace", "1h", NULL);
    struct tp_peer *ag = resume_agent(c, 0x42, NULL);
    struct tp_peer *s = session_open(c, sid_a);
    expect_list(s, "");
    struct tp_peer *p = tp_client(c, "plain", NULL);
    tp_submit(s, "h1", 0);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "h1");
    tp_started(ag, "h1");
    tp_expect(s, ING_BACKEND_JOB_STARTED);
    struct tp_peer *ag2 = resume_agent(c, 0x43, NULL);
    tp_expect(p, ING_BACKEND_UPDATE_ENVIRONMENTS); /* after every agent's hello */
    tp_expect(s, ING_BACKEND_UPDATE_ENVIRONMENTS);
    tp_submit(p, "p1", 0);
    tp_expect_job(ag2, "p1");
    tp_started(ag2, "p1");
    tp_expect(p, ING_BACKEND_JOB_STARTED);
    tp_barrier(ag); /* the started records are written */
    tp_barrier(ag2);
    tp_close(c, ag);
    tp_close(c, ag2);
    wait_log(c, "agent R lost: its 1 jobs wait", 2); /* both held */
    sigterm_restart(c, jdir, p, s);
    if (!tp_log_contains(c, "journal: 1 running jobs wait"))
        tp_fail("the restart does not hold the session's job (and only it) for its agent");
    struct tp_peer *back = resume_agent(c, 0x42, "h1");
    tp_barrier(back);
    if (!tp_log_contains(c, "claimed 1 jobs back (0 refused)"))
        tp_fail("the agent did not claim the session's job back");
    tp_done(back, "h1", "success", "after");
    tp_barrier(back);
    struct tp_peer *s2 = session_open(c, sid_a);
    tp_expect_done(s2, "h1", "success", NULL, "after");
    expect_list(s2, "");
}

/* segment_size returns the size of the journal's first segment in jdir. */
static off_t
segment_size(const char *jdir)
{
    char path[700];
    struct stat st;
    snprintf(path, sizeof(path), "%s/0000000000000001.seg", jdir);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* A session's job whose record cannot be written (a file-size limit: EFBIG), its
 * connection closed right after it: the backend goes on; the job was never acknowledged,
 * so the resumed session does not find it in its list (proto.md 7.9: submit it again), and
 * once the disk takes writes again the job submitted again is acknowledged and runs once.
 * (The refusal reaching a session detached before it: test_backend.) */
TP_TEST(test_session_journal_refusal_close)
{
    char jdir[600];
    snprintf(jdir, sizeof(jdir), "%s/journal", tp_dir(c));
    tp_start(c, "--journal", jdir, "--orphan-timeout", "0", NULL);
    struct tp_peer *s = session_open_f(c, sid_b, ING_SESSION_ACK);
    expect_list(s, "");
    struct tp_job big = {.id = "big", .pad = 96 << 10}; /* the segment outgrows the log */
    tp_send_job(s, &big);
    tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
    struct rlimit old, lim;
    assert_int_equal(prlimit(c->be.pid, RLIMIT_FSIZE, NULL, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)segment_size(jdir) + 256; /* no room for the next job's record */
    assert_int_equal(prlimit(c->be.pid, RLIMIT_FSIZE, &lim, NULL), 0);
    struct tp_job r = {.id = "r1", .pad = 2000};
    tp_send_job(s, &r);
    tp_close(c, s);
    wait_detached(c, 1);
    wait_log(c, "journal unavailable", 1);
    assert_int_equal(prlimit(c->be.pid, RLIMIT_FSIZE, &old, NULL), 0);
    wait_log(c, "journal: writes work again", 1); /* its retry (every 100 ms) */
    struct tp_peer *s2 = session_open_f(c, sid_b, ING_SESSION_ACK);
    expect_list(s2, "big"); /* r1: never acknowledged, not held */
    tp_send_job(s2, &r);
    tp_expect(s2, ING_BACKEND_JOB_ACCEPTED); /* writes work again */
    struct tp_peer *ag = tp_agent(c, "A", 2, "docker/default", NULL);
    tp_expect(s2, ING_BACKEND_UPDATE_ENVIRONMENTS);
    const struct ing_msg *m = tp_expect(ag, ING_BACKEND_NEW_JOB);
    bool big_first = ing_view_eq(m->u.job.job_id, "big");
    tp_expect_job(ag, big_first ? "r1" : "big");
    tp_done(ag, "r1", "success", "");
    tp_expect_done(s2, "r1", "success", NULL, NULL);
    tp_expect_nothing(ag, TP_QUIET_MS); /* r1 runs once */
}

/* A connection that only submits (flag HOLD, as inginious-ctl submit --session) is told at
 * once when a job of it is refused (here: Duplicate job id, another client's job): a refusal
 * answers the submission, it is no result of the session (proto.md 7.8: never acknowledged;
 * 7.9: counted, not kept). Kept for the session instead, the submitter waited for an answer
 * that never came, and the next connection of the session got a crash for a job it never
 * held. */
TP_TEST(test_session_hold_refusal_answered)
{
    tp_start(c, NULL);
    struct tp_peer *p = tp_client(c, "plain", NULL);
    tp_submit(p, "dup", 0);
    tp_barrier(p);
    struct tp_peer *h = session_open_f(c, sid_a, ING_SESSION_HOLD);
    expect_list(h, "");
    tp_submit(h, "dup", 0);
    tp_expect_synthetic(h, "dup", "crash", "Duplicate job id", "");
    tp_submit(h, "fine", 0);
    tp_expect(h, ING_BACKEND_JOB_ACCEPTED);
    tp_close(c, h);
    wait_detached(c, 1);
    struct tp_peer *s2 = session_open(c, sid_a);
    expect_list(s2, "fine"); /* no kept refusal first */
}

/* Acknowledgement counts at their edges (proto.md 7.9): 0 before any result changes
 * nothing; UINT64_MAX is refused (Error INVALID) and changes nothing; one count covers
 * many results and only those (3 of 5: the next connection is sent the last two again, in
 * their order); a lower count after it changes nothing. A take-over renumbers from the new
 * hello: the results the old connection read unacknowledged are sent again and acknowledged
 * by the new connection's count, whatever the old one sends after it lost the session. An
 * agent's ClientSessionAck is refused (Error UNEXPECTED) and it is still served. */
TP_TEST(test_session_ack_counts)
{
    tp_start(c, NULL);
    struct tp_peer *ag = tp_agent(c, "A", 5, "docker/default", NULL);
    struct tp_peer *s = session_open_f(c, sid_a, ING_SESSION_ACK);
    expect_list(s, "");
    send_ack(s, 0); /* before any result: nothing to acknowledge, no error */
    static const char *const ids[] = {"c1", "c2", "c3", "c4", "c5"};
    for (int i = 0; i < 5; i++) {
        tp_submit(s, ids[i], 0);
        tp_expect(s, ING_BACKEND_JOB_ACCEPTED);
        tp_expect_job(ag, ids[i]);
    }
    for (int i = 0; i < 5; i++) {
        tp_done(ag, ids[i], "success", ids[i]);
        tp_expect_done(s, ids[i], "success", NULL, ids[i]);
    }
    send_ack(s, UINT64_MAX);
    tp_expect_error(s, ING_ERR_INVALID);
    send_ack(s, 3); /* c1 .. c3 at once */
    send_ack(s, 2); /* lower: nothing */
    tp_barrier(s);
    tp_close(c, s);
    wait_detached(c, 1);
    /* The next connection: c4 and c5 only, in order, numbered 1 and 2 on it. */
    struct tp_peer *s2 = session_open_f(c, sid_a, ING_SESSION_ACK);
    tp_expect_done(s2, "c4", "success", NULL, "c4");
    tp_expect_done(s2, "c5", "success", NULL, "c5");
    expect_list(s2, "");
    send_ack(s2, 3); /* two were sent on this connection */
    tp_expect_error(s2, ING_ERR_INVALID);
    /* Taken over before acknowledging: the third connection gets both again, numbered from
     * its own hello; the second's late acknowledgement is never handled. */
    struct tp_peer *s3 = session_open_f(c, sid_a, ING_SESSION_ACK);
    tp_expect_done(s3, "c4", "success", NULL, "c4");
    tp_expect_done(s3, "c5", "success", NULL, "c5");
    expect_list(s3, "");
    tp_expect_error(s2, ING_ERR_TAKEN_OVER);
    s2->lenient = true; /* closed by the backend: the write may fail */
    send_ack(s2, 2);
    tp_expect_closed(s2);
    send_ack(s3, 2);
    tp_barrier(s3);
    tp_close(c, s3);
    wait_detached(c, 3);
    struct tp_peer *s4 = session_open_f(c, sid_a, ING_SESSION_ACK);
    expect_list(s4, ""); /* all acknowledged */
    tp_expect_nothing(s4, TP_QUIET_MS);
    /* From an agent: refused, the agent still gets jobs. */
    send_ack(ag, 1);
    tp_expect_error(ag, ING_ERR_UNEXPECTED);
    tp_submit(s4, "c6", 0);
    tp_expect(s4, ING_BACKEND_JOB_ACCEPTED);
    tp_expect_job(ag, "c6");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        TP_CASE(test_session_detach_and_resume), TP_CASE(test_session_takeover),
        TP_CASE(test_session_ttl), TP_CASE(test_session_journal_kill9),
        TP_CASE(test_session_journal_sigterm), TP_CASE(test_session_many_kept_results),
        TP_CASE(test_session_long_list), TP_CASE(test_session_journal_compaction),
        TP_CASE(test_session_journal_agent_resume),
        TP_CASE(test_session_ack_resends_unacknowledged), TP_CASE(test_session_ack_journal_kill9),
        TP_CASE(test_session_ack_unacked_cutoff), TP_CASE(test_session_kept_shed_max_memory),
        TP_CASE(test_session_journal_sigterm_held), TP_CASE(test_session_journal_refusal_close),
        TP_CASE(test_session_hold_refusal_answered), TP_CASE(test_session_ack_counts),
    };
    /* TP_FILTER=pattern runs only the matching tests (cmocka wildcards). */
    if (getenv("TP_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TP_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
