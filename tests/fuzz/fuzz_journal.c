/* SPDX-License-Identifier: MIT */
/* fuzz_journal.c: libFuzzer target for the journal's recovery and replay (src/journal.c,
 * proto.md section 12, and be_journal_replay in src/backend.c): what the backend reads from
 * disk when it starts with --journal.
 *
 * Input: byte 0 is a set of flags, the rest one to three segment files separated by the
 * four bytes "SEG|" (written as 0000000000000001.seg, ...02.seg, ...03.seg; with F_GAP the
 * numbers are 1, 3, 7: missing segments).
 *   F_REPAIR   open with --journal-repair;
 *   F_FIXCRC   the harness makes every CRC right before writing the files: the segment
 *              header's magic, version, number and CRC, and each record's reserved bytes
 *              and CRC (walking the records by their lengths), so that mutations reach the
 *              backend's record decoders behind the CRC instead of stopping at it;
 *   F_COMPACT  after the activity below, append filler records (about 12 KiB: segments are
 *              4 KiB here) so that the journal compacts its oldest segments, asking the
 *              backend which replayed records are live;
 *   F_GAP      segment numbers with gaps;
 *   F_FAIR     the backend shares fairly among launchers (--fair-share launcher).
 * The journal is opened as srv_new does (the job table reserved from journal_dir_bytes,
 * journal_open replaying into a fresh backend through be_journal_replay,
 * be_journal_replayed). If it opens: a client submits two jobs; an agent comes, saying
 * AgentHelloResume with the first agent id the journal names and claiming the jobs the
 * journal dispatched to it (at most 8), and finishes what it is given; a client resumes
 * the first session the journal names and acknowledges what it receives; then the resume
 * grace passes, the journal is flushed (and compacted), everything is closed. The journal
 * the backend leaves must then open again without --journal-repair, and replay.
 *
 * Checked besides the sanitizers (leaks included): no crash, no loop (libFuzzer's timeout);
 * be_check() after every step; an open that fails gives a message; a journal the backend
 * opened and closed opens again, and, if the first was made of the backend's own records
 * (no F_FIXCRC, no record refused), restores the jobs and kept results it had (after the
 * close, as srv_free leaves them: not ended). The backend's clocks are fixed: runs are
 * deterministic. The files go in a directory under /dev/shm (else $TMPDIR, else /tmp),
 * removed after each input (the directory itself at exit). FUZZ_JOURNAL_DEBUG=1 in the
 * environment shows the backend's log. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "inginious/mp.h"
#include "inginious/proto.h"
#include "journal.h"
#include "log.h"

#include "../support/fixtures.h"
#include "fuzz.h"

#define F_REPAIR 0x01
#define F_FIXCRC 0x02
#define F_COMPACT 0x04
#define F_GAP 0x08
#define F_FAIR 0x10

#define SEP "SEG|"
#define MAX_SEGS 3
#define MAX_CLAIMS 8
#define MAX_SENT 64


static char base[256]; /* the process's directory */
static char jdir[300]; /* the journal, made and removed per input */
static bool debug;

/* What the replay showed: the first agent id of a dispatch and the jobs sent to it, the
 * first session id. */
static struct {
    bool has_rid, has_sid;
    uint8_t rid[ING_AGENT_ID_LEN];
    uint8_t sid[ING_SESSION_ID_LEN];
    char claim[MAX_CLAIMS][BE_MAX_ID_LEN + 1];
    size_t nclaim;
} seen;

/* The mock peers: what the backend sent to each. */
struct mpeer {
    char jobs[MAX_SENT][BE_MAX_ID_LEN + 1]; /* BackendNewJob ids (agent) */
    size_t njobs;
    uint64_t results; /* BackendJobDone (client) */
};
static struct mpeer p_client, p_agent, p_sess;

static void
peer_got(struct mpeer *p, uint8_t type, struct ing_view id)
{
    if (type == ING_BACKEND_NEW_JOB && p->njobs < MAX_SENT && id.p != NULL) {
        size_t n = id.len < BE_MAX_ID_LEN ? id.len : BE_MAX_ID_LEN;
        memcpy(p->jobs[p->njobs], id.p, n);
        p->jobs[p->njobs++][n] = '\0';
    }
    if (type == ING_BACKEND_JOB_DONE)
        p->results++;
}

static void
mock_send(void *peer, const struct ing_msg *m)
{
    peer_got(peer, m->type,
             m->type == ING_BACKEND_NEW_JOB ? m->u.job.job_id : (struct ing_view){NULL, 0});
}

static void
mock_relay(void *peer, uint8_t type, const uint8_t *body, size_t len)
{
    static uint8_t frame[1 << 16];
    struct ing_msg m;
    if (len <= sizeof(frame) - ING_HDR_LEN) {
        ing_frame_header(frame, type, (uint32_t)len);
        memcpy(frame + ING_HDR_LEN, body, len);
        if (ing_msg_decode(frame, ING_HDR_LEN + len, UINT32_MAX, &m) > 0) {
            mock_send(peer, &m);
            return;
        }
    }
    peer_got(peer, type, (struct ing_view){NULL, 0});
}

/* replay: be_journal_replay, as the server's callback, noting ids for the activity. */
static int
replay(void *arg, uint8_t type, const uint8_t *p, uint32_t len, journal_ref ref)
{
    (void)ref;
    if ((type == JREC_DISPATCHED || type == JREC_DISPATCHED_AT) && len >= 8 + ING_AGENT_ID_LEN) {
        static const uint8_t zero[ING_AGENT_ID_LEN];
        const uint8_t *rid = p + 8;
        uint32_t off = 8 + ING_AGENT_ID_LEN + (type == JREC_DISPATCHED_AT ? 10 : 0);
        if (memcmp(rid, zero, sizeof(zero)) != 0 && !seen.has_rid) {
            seen.has_rid = true;
            memcpy(seen.rid, rid, sizeof(seen.rid));
        }
        if (seen.has_rid && memcmp(rid, seen.rid, sizeof(seen.rid)) == 0 && len > off &&
            len - off <= BE_MAX_ID_LEN && seen.nclaim < MAX_CLAIMS) {
            memcpy(seen.claim[seen.nclaim], p + off, len - off);
            seen.claim[seen.nclaim++][len - off] = '\0';
        }
    }
    if ((type == JREC_DONE || type == JREC_DELIVERED || type == JREC_SESSION_ACCEPTED) &&
        len >= 8 + ING_SESSION_ID_LEN && !seen.has_sid) {
        seen.has_sid = true;
        memcpy(seen.sid, p + 8, sizeof(seen.sid));
    }
    return be_journal_replay(arg, type, p, len);
}

static void
rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            (void)unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    (void)rmdir(dir);
}

/* The journal's own integers are little-endian (proto.md 12.1). */
static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* fix_crc makes segment num's header and records check (F_FIXCRC), in place. */
static void
fix_crc(uint8_t *s, size_t n, uint32_t num)
{
    if (n < JOURNAL_SEG_HDR)
        return;
    memcpy(s, JOURNAL_MAGIC, 8);
    put_le32(s + 8, JOURNAL_VERSION);
    put_le32(s + 12, num);
    put_le32(s + 28, journal_crc32c(0, s, 28));
    for (size_t off = JOURNAL_SEG_HDR; n - off >= JOURNAL_REC_HDR;) {
        uint32_t len = le32(s + off);
        if (len > n - off - JOURNAL_REC_HDR)
            break; /* a torn tail */
        s[off + 5] = s[off + 6] = s[off + 7] = 0;
        uint32_t crc = journal_crc32c(0, s + off, 8);
        put_le32(s + off + 8, journal_crc32c(crc, s + off + JOURNAL_REC_HDR, len));
        off += JOURNAL_REC_HDR + (size_t)len;
    }
}

static void
put_seg(uint32_t num, const uint8_t *p, size_t n, bool fix)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%016x.seg", jdir, (unsigned)num);
    uint8_t *copy = malloc(n ? n : 1);
    CHECK(copy != NULL);
    if (n)
        memcpy(copy, p, n);
    if (fix)
        fix_crc(copy, n, num);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, copy, n) == (ssize_t)n);
    close(fd);
    free(copy);
}

static struct backend be;
static bool fair;

static void
be_start(void)
{
    struct be_config cfg;
    be_config_default(&cfg);
    cfg.fair_mode = fair ? FAIR_LAUNCHER : FAIR_NONE;
    struct be_ops ops = {mock_send, mock_relay, NULL, NULL, NULL, NULL};
    CHECK(be_init(&be, &cfg, &ops) == 0);
    be.now_ms = 1000;
    be.wall_s = 1700000000;
}

/* open_journal opens jdir as srv_new does. Returns journal_open's result. */
static int
open_journal(struct journal *j, bool repair)
{
    struct journal_config jc;
    journal_config_default(&jc);
    jc.fsync = JOURNAL_FSYNC_NEVER;
    jc.segment_size = JOURNAL_SEG_MIN;
    jc.repair = repair;
    char why[512] = "";
    (void)be_journal_reserve(&be, journal_dir_bytes(jdir) / 256);
    int rc = journal_open(j, jdir, &jc, replay, &be, why, sizeof(why));
    if (debug)
        fprintf(stderr, "journal_open: %d %s\n", rc, rc ? why : "");
    if (rc != 0) {
        CHECK(why[0] != '\0');
        return rc;
    }
    be.jr = j;
    be_journal_replayed(&be);
    be.jr_settled = be.arrival_seq;
    CHECK(be_check(&be) == 0);
    return 0;
}

/* tick: what the server does before it sleeps (jr_tick) and at its timers. */
static bool
tick(struct journal *j)
{
    be_flush(&be);
    for (int k = 0; k < 1000 && be_register(&be, 1000); k++)
        ;
    journal_set_live(j, be_journal_live_bytes(&be));
    be_journal_settle(&be, journal_flush(j, be.now_ms));
    bool more = journal_compact_step(j, 256u * 1024, be.now_ms, be_journal_relocate, &be);
    CHECK(be_check(&be) == 0);
    return more;
}

/* new_job encodes job id for docker/e1 into buf, decodes it into m; returns the body's
 * length (the body at buf + ING_HDR_LEN). */
static size_t
new_job(uint8_t *buf, size_t cap, const char *id, struct ing_msg *m)
{
    ssize_t n = fx_new_job(buf, cap, id, "e1");
    CHECK(n > ING_HDR_LEN);
    CHECK(ing_msg_decode(buf, (size_t)n, UINT32_MAX, m) == n);
    return (size_t)n - ING_HDR_LEN;
}

/* agent_done reports job id done (success) from agent a. */
static void
agent_done(struct be_agent *a, const char *id)
{
    uint8_t buf[512];
    ssize_t n = fx_result(buf, sizeof(buf), ING_AGENT_JOB_DONE, id);
    CHECK(n > 0);
    struct ing_msg d;
    CHECK(ing_msg_decode(buf, (size_t)n, UINT32_MAX, &d) == n);
    be_agent_done(&be, a, buf + ING_HDR_LEN, (size_t)n - ING_HDR_LEN, &d.u.result);
    CHECK(be_check(&be) == 0);
}

/* agent_come: an agent for docker/e1 with 4 slots; resuming (with seen.rid, claiming
 * seen.claim) if the journal named an agent. */
static struct be_agent *
agent_come(void)
{
    uint8_t envs[128];
    struct ing_mp_writer w;
    ing_mp_writer_init(&w, envs, sizeof(envs));
    fx_envs(&w, "e1");
    CHECK(w.err == 0);
    struct be_agent *a = be_agent_new(&be, &p_agent);
    CHECK(a != NULL);
    struct ing_agent_hello h = {{"A", 1}, 4, {(const char *)envs, (uint32_t)w.len}};
    char why[256];
    int rc;
    if (seen.has_rid) {
        struct ing_resume_job jobs[MAX_CLAIMS];
        struct ing_agent_hello_resume m;
        memset(&m, 0, sizeof(m));
        memcpy(m.agent_id, seen.rid, sizeof(m.agent_id));
        m.hello = h;
        for (size_t i = 0; i < seen.nclaim; i++) {
            jobs[i].job_id = (struct ing_view){seen.claim[i], (uint32_t)strlen(seen.claim[i])};
            jobs[i].started = i % 2 == 1;
        }
        m.n_jobs = (uint32_t)seen.nclaim;
        m.jobs = jobs;
        rc = be_agent_hello_resume(&be, a, &m, why, sizeof(why));
    } else {
        rc = be_agent_hello(&be, a, &h, why, sizeof(why));
    }
    for (int k = 0; k < 1000 && be_register(&be, 1000); k++)
        ;
    CHECK(be_check(&be) == 0);
    if (debug)
        fprintf(stderr, "agent hello: %d\n", rc);
    return a;
}

/* activity: submit, dispatch, finish, resume a session, pass the grace, flush. */
static void
activity(struct journal *j, bool compact)
{
    uint8_t buf[512];
    struct ing_msg m;
    struct be_client *c = be_client_new(&be, &p_client);
    CHECK(c != NULL);
    be_client_native(c, true);
    be_client_hello(&be, c);
    for (int i = 0; i < 2; i++) {
        size_t n = new_job(buf, sizeof(buf), i ? "fz-2" : "fz-1", &m);
        be_client_new_job(&be, c, buf + ING_HDR_LEN, n, &m.u.new_job);
        CHECK(be_check(&be) == 0);
    }
    tick(j);
    struct be_client *s = NULL;
    if (seen.has_sid) { /* the session's client comes back */
        struct be_client *sc = be_client_new(&be, &p_sess);
        CHECK(sc != NULL);
        be_client_native(sc, true);
        s = be_session_attach(&be, sc, seen.sid);
        if (s != NULL) {
            be_session_acks(s, true);
            be_client_hello(&be, s);
            for (int k = 0; k < 1000 && be_session_resume(&be, s, false, 4096); k++)
                ;
            CHECK(be_check(&be) == 0);
            (void)be_session_ack(&be, s, p_sess.results);
            size_t n = new_job(buf, sizeof(buf), "fz-s", &m);
            be_client_new_job(&be, s, buf + ING_HDR_LEN, n, &m.u.new_job);
            CHECK(be_check(&be) == 0);
        } else {
            be_client_gone(&be, sc);
        }
    }
    struct be_agent *a = agent_come();
    tick(j);
    for (size_t i = 0; i < p_agent.njobs; i++) {
        be_agent_started(&be, a, (struct ing_view){p_agent.jobs[i],
                                                    (uint32_t)strlen(p_agent.jobs[i])});
        if (i % 3 != 2)
            agent_done(a, p_agent.jobs[i]);
    }
    if (s != NULL)
        (void)be_session_ack(&be, s, p_sess.results);
    tick(j);
    be.now_ms += be.cfg.resume_grace_ms + 1;
    be.wall_s += (int64_t)(be.cfg.resume_grace_ms / 1000) + 1;
    be_timeouts(&be);
    tick(j);
    if (compact) { /* filler: dead records, so that the oldest segments compact */
        static uint8_t fill[1024];
        for (int i = 0; i < 12; i++) {
            int err;
            journal_append(j, JREC_ENDED, fill, sizeof(fill), &err);
            CHECK(err == 0 || err == -ENOMEM);
            be_journal_settle(&be, journal_flush(j, be.now_ms));
        }
        for (int k = 0; k < 64 && tick(j); k++)
            ;
        if (debug)
            fprintf(stderr, "segments compacted: %llu\n", (unsigned long long)j->n_compacted);
    }
    be_agent_gone(&be, a);
    if (s != NULL && be_client_gone(&be, s))
        while (be_reap(&be, 1000))
            ;
    if (be_client_gone(&be, c))
        while (be_reap(&be, 1000))
            ;
    tick(j);
}


/* ---- seeds ------------------------------------------------------------------------------ */
/* FUZZ_JOURNAL_SEEDS=DIR build/fuzz/fuzz_journal writes the seed corpus into DIR and exits:
 * journals written by the real backend code (this file's mock peers driving it), each as
 * an input of this target, with flags 0 and F_FIXCRC (and F_COMPACT for the last). */

static void
seed_write(const char *out, const char *name, uint8_t flags)
{
    struct dirent **ents;
    int n = scandir(jdir, &ents, NULL, alphasort);
    CHECK(n >= 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", out, name);
    FILE *o = fopen(path, "wb");
    CHECK(o != NULL);
    fputc(flags, o);
    int nseg = 0;
    for (int i = 0; i < n; i++) {
        const char *d = ents[i]->d_name;
        if (strlen(d) == 20 && strcmp(d + 16, ".seg") == 0 && nseg < MAX_SEGS) {
            if (nseg++ > 0)
                fwrite(SEP, 1, 4, o);
            snprintf(path, sizeof(path), "%s/%s", jdir, d);
            FILE *f = fopen(path, "rb");
            CHECK(f != NULL);
            uint8_t b[4096];
            size_t k;
            while ((k = fread(b, 1, sizeof(b), f)) > 0)
                fwrite(b, 1, k, o);
            fclose(f);
        }
        free(ents[i]);
    }
    free(ents);
    CHECK(fclose(o) == 0);
}

/* seed_begin: a fresh journal and backend; seed_end closes them and writes the seeds. */
static void
seed_begin(struct journal *j)
{
    rm_dir(jdir);
    fair = false;
    memset(&seen, 0, sizeof(seen));
    memset(&p_client, 0, sizeof(p_client));
    memset(&p_agent, 0, sizeof(p_agent));
    memset(&p_sess, 0, sizeof(p_sess));
    be_start();
    CHECK(open_journal(j, false) == 0);
}

static void
seed_end(struct journal *j, const char *out, const char *name, uint8_t extra)
{
    tick(j);
    be.jr = NULL;
    be_fini(&be);
    journal_close(j);
    char n2[128];
    seed_write(out, name, extra);
    snprintf(n2, sizeof(n2), "%s-fixcrc", name);
    seed_write(out, n2, extra | F_FIXCRC);
}

static void
submit(struct be_client *c, const char *id)
{
    uint8_t buf[512];
    struct ing_msg m;
    size_t n = new_job(buf, sizeof(buf), id, &m);
    be_client_new_job(&be, c, buf + ING_HDR_LEN, n, &m.u.new_job);
    CHECK(be_check(&be) == 0);
}

static struct be_client *
client_come(struct mpeer *p)
{
    struct be_client *c = be_client_new(&be, p);
    CHECK(c != NULL);
    be_client_native(c, true);
    be_client_hello(&be, c);
    return c;
}

static void
make_seeds(const char *out)
{
    struct journal j;
    char id[32];
    /* waiting jobs */
    seed_begin(&j);
    struct be_client *c = client_come(&p_client);
    submit(c, "w1");
    submit(c, "w2");
    seed_end(&j, out, "waiting", 0);
    /* running jobs, held for a resuming agent (records 8 and 3) */
    seed_begin(&j);
    c = client_come(&p_client);
    submit(c, "r1");
    submit(c, "r2");
    submit(c, "r3");
    seen.has_rid = true;
    memset(seen.rid, 0x11, sizeof(seen.rid));
    struct be_agent *a = agent_come();
    tick(&j);
    be_agent_started(&be, a, (struct ing_view){"r1", 2});
    seed_end(&j, out, "running", 0);
    /* ended jobs (record 6) and a waiting one */
    seed_begin(&j);
    c = client_come(&p_client);
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        submit(c, id);
    }
    a = agent_come();
    tick(&j);
    for (size_t i = 0; i < p_agent.njobs; i++)
        agent_done(a, p_agent.jobs[i]);
    seed_end(&j, out, "ended", 0);
    /* a session: results kept (record 4), one acknowledged (5), session jobs (7) */
    seed_begin(&j);
    static const uint8_t sid[ING_SESSION_ID_LEN] = {0x5e, 0x55, 1, 2, 3};
    struct be_client *sc = be_client_new(&be, &p_sess);
    CHECK(sc != NULL);
    be_client_native(sc, true);
    struct be_client *s = be_session_attach(&be, sc, sid);
    CHECK(s != NULL);
    be_session_acks(s, true);
    be_client_hello(&be, s);
    for (int k = 0; k < 100 && be_session_resume(&be, s, false, 4096); k++)
        ;
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        submit(s, id);
    }
    tick(&j);
    a = agent_come();
    tick(&j);
    CHECK(p_agent.njobs == 4);
    agent_done(a, p_agent.jobs[0]);
    agent_done(a, p_agent.jobs[1]);
    tick(&j);
    CHECK(be_session_ack(&be, s, 1) == 0);
    tick(&j);
    be_session_detach(&be, s);
    agent_done(a, p_agent.jobs[2]);
    be_agent_gone(&be, a);
    seed_end(&j, out, "session", 0);
    /* compaction: many jobs through 4 KiB segments; what is left after it */
    seed_begin(&j);
    c = client_come(&p_client);
    a = agent_come();
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 6; i++) {
            snprintf(id, sizeof(id), "c%d-%d", round, i);
            submit(c, id);
        }
        tick(&j);
        for (size_t i = 0; i < p_agent.njobs; i++)
            if (round > 0 || i > 0) /* the first stays running: its records are copied */
                agent_done(a, p_agent.jobs[i]);
        p_agent.njobs = 0;
        for (int k = 0; k < 16 && tick(&j); k++)
            ;
    }
    CHECK(j.n_compacted > 0);
    seed_end(&j, out, "compacted", F_COMPACT);
    rm_dir(jdir);
}

/* rm_base removes the process's directory at exit (a crash leaves it). */
static void
rm_base(void)
{
    rm_dir(jdir);
    (void)rmdir(base);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        init = true;
        debug = getenv("FUZZ_JOURNAL_DEBUG") != NULL;
        log_level_max = debug ? LOG_DEBUG : -1;
        const char *t = getenv("TMPDIR");
        struct stat st;
        if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
            t = "/dev/shm";
        snprintf(base, sizeof(base), "%s/fuzz_journal.XXXXXX", t != NULL ? t : "/tmp");
        CHECK(mkdtemp(base) != NULL);
        snprintf(jdir, sizeof(jdir), "%s/j", base);
        atexit(rm_base);
        const char *out = getenv("FUZZ_JOURNAL_SEEDS");
        if (out != NULL) {
            make_seeds(out);
            rmdir(base);
            _exit(0);
        }
    }
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    rm_dir(jdir);
    CHECK(mkdir(jdir, 0700) == 0);
    static const uint32_t nums[2][MAX_SEGS] = {{1, 2, 3}, {1, 3, 7}};
    for (int i = 0; i < MAX_SEGS; i++) {
        const uint8_t *q = i + 1 < MAX_SEGS ? memmem(p, (size_t)(end - p), SEP, 4) : NULL;
        const uint8_t *e = q != NULL ? q : end;
        put_seg(nums[(flags & F_GAP) != 0][i], p, (size_t)(e - p), (flags & F_FIXCRC) != 0);
        if (q == NULL)
            break;
        p = q + 4;
    }

    memset(&seen, 0, sizeof(seen));
    memset(&p_client, 0, sizeof(p_client));
    memset(&p_agent, 0, sizeof(p_agent));
    memset(&p_sess, 0, sizeof(p_sess));
    struct journal j;
    fair = (flags & F_FAIR) != 0;
    be_start();
    int rc = open_journal(&j, (flags & F_REPAIR) != 0);
    if (rc == 0) {
        /* "Nothing lost" holds for journals of the backend's own records: not with
         * F_FIXCRC, whose records are anything, nor after the replay refused one. */
        bool absurd = (flags & F_FIXCRC) || be.jr_skipped > 0;
        activity(&j, (flags & F_COMPACT) != 0);
        uint64_t jobs = be.n_waiting + be.n_running, kept = be.n_kept;
        be.jr = NULL; /* as srv_free: the jobs freed are not ended */
        be_fini(&be);
        journal_close(&j);
        /* What the backend left opens again, without repair, and replays. */
        memset(&seen, 0, sizeof(seen));
        be_start();
        rc = open_journal(&j, false);
        if (rc != 0)
            fprintf(stderr, "the journal left by the backend does not open again: %d\n", rc);
        CHECK(rc == 0);
        if (absurd)
            jobs = be.n_waiting + be.n_held, kept = be.n_kept;
        if (be.n_waiting + be.n_held != jobs || be.n_kept != kept)
            fprintf(stderr, "restored %llu jobs and %llu results, the backend had %llu and %llu\n",
                    (unsigned long long)(be.n_waiting + be.n_held), (unsigned long long)be.n_kept,
                    (unsigned long long)jobs, (unsigned long long)kept);
        CHECK(be.n_waiting + be.n_held == jobs && be.n_kept == kept); /* nothing lost */
        be.jr = NULL;
        be_fini(&be);
        journal_close(&j);
    } else {
        CHECK(rc == -EBADMSG && !(flags & F_REPAIR)); /* a repair always opens */
        be_fini(&be);
    }
    rm_dir(jdir);
    return 0;
}
