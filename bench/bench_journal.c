/* SPDX-License-Identifier: MIT */
/* bench_journal.c: the journal of src/journal.c, one line per case:
 *   name iterations ns/op [extra]
 *
 *   crc32c_4k              CRC-32C of a 4 KiB buffer (ns per buffer; MB/s)
 *   append_never           200,000 records of 253 bytes (a 128-byte job's ClientNewJob body),
 *   append_interval_10ms   flushed every 64 records (one event-loop iteration's batch),
 *   append_always          under each --fsync mode (ns per record; fdatasyncs done)
 *   replay_1M              opening a journal of 1,000,000 such records (ns per record; total
 *                          ms; bytes on disk per record)
 *   compact_step           600,000 such records in 4 MiB segments, one in ten live: the
 *                          compaction steps (256 KiB budget) that bring the disk back within
 *                          2 x live + 2 segments (ns per step; the longest step)
 *   compact_1M_live        1,000,000 live jobs (a table of a million 136-byte objects behind
 *                          a hash index, as the backend's job table: the live callback
 *                          looks each record's job up there) and their records in 64 MiB
 *                          segments; the steps (256 KiB budget) that compact the two oldest
 *                          segments, every record live (the worst case: all copied), unlinks
 *                          included: the longest step in wall time and in CPU time (the wall
 *                          time includes preemption by other processes on a shared machine)
 *
 * The journal lives in a fresh directory under $TMPDIR (else /tmp), removed at the end.
 * Fixed payloads; CLOCK_MONOTONIC around the timed part only. About 5-20 s, depending on the
 * disk's fdatasync latency. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "journal.h"
#include "log.h"

#define BODY 253

static void
rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char path[1024];
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int
count(void *arg, uint8_t type, const uint8_t *p, uint32_t len, journal_ref ref)
{
    (void)type;
    (void)ref;
    (void)p;
    (void)len;
    uint64_t *n = arg;
    *n += 1;
    return 0;
}

static void
mkdir_tmp(char *dir, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, n, "%s/bench_journal.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

/* fill opens a fresh journal in dir (mode, segment size seg) and appends n records, their
 * index in the first bytes, releasing those i % keep != 0 (keep 0: none), flushing every
 * flush_every. Returns 0 or -1. */
static int
fill(struct journal *j, char *dir, size_t dirlen, enum journal_fsync mode, uint64_t seg,
     unsigned n, unsigned keep, unsigned flush_every, uint64_t t0)
{
    mkdir_tmp(dir, dirlen);
    struct journal_config cfg;
    journal_config_default(&cfg);
    cfg.fsync = mode;
    cfg.segment_size = seg;
    uint64_t seen = 0;
    char why[256];
    if (journal_open(j, dir, &cfg, count, &seen, why, sizeof(why)) < 0) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    uint8_t body[BODY];
    memset(body, 0x61, sizeof(body));
    for (unsigned i = 0; i < n; i++) {
        int err;
        memcpy(body, &i, sizeof(i));
        journal_ref r = journal_append(j, JREC_ACCEPTED, body, sizeof(body), &err);
        if (!r)
            return -1;
        if (keep && i % keep != 0)
            journal_release(j, r, sizeof(body));
        if (i % flush_every == flush_every - 1 &&
            journal_flush(j, t0 ? (bc_now_ns() - t0) / 1000000 : 0) < 0)
            return -1;
    }
    return journal_flush(j, UINT64_MAX / 2) < 0 ? -1 : 0;
}

static int
append_case(const char *name, enum journal_fsync mode, unsigned n)
{
    char dir[512];
    struct journal j;
    uint64_t t0 = bc_now_ns();
    if (fill(&j, dir, sizeof(dir), mode, JOURNAL_SEG_DEFAULT, n, 0, 64, t0) < 0)
        return -1;
    uint64_t dt = bc_now_ns() - t0;
    printf("%-22s %8u %8.1f ns/op  %.0f records/s  %llu fdatasync\n", name, n,
           (double)dt / n, n / (dt / 1e9), (unsigned long long)j.n_syncs);
    journal_close(&j);
    rm_dir(dir);
    return 0;
}

static int
replay_case(unsigned n)
{
    char dir[512];
    struct journal j;
    if (fill(&j, dir, sizeof(dir), JOURNAL_FSYNC_NEVER, JOURNAL_SEG_DEFAULT, n, 0, 4096, 0) < 0)
        return -1;
    journal_close(&j);
    struct journal_config cfg;
    journal_config_default(&cfg);
    uint64_t seen = 0;
    char why[256];
    uint64_t t0 = bc_now_ns();
    if (journal_open(&j, dir, &cfg, count, &seen, why, sizeof(why)) < 0) {
        fprintf(stderr, "%s\n", why);
        return -1;
    }
    uint64_t dt = bc_now_ns() - t0;
    if (seen != n)
        return -1;
    printf("%-22s %8u %8.1f ns/op  %.0f ms total  %.1f bytes/record on disk (payload %u)\n",
           "replay_1M", n, (double)dt / n, dt / 1e6, (double)j.disk_bytes / n, BODY);
    journal_close(&j);
    rm_dir(dir);
    return 0;
}

static bool
live_tenth(void *arg, uint8_t type, const uint8_t *p, uint32_t len, journal_ref ref,
           journal_ref newref)
{
    (void)arg;
    (void)type;
    (void)len;
    (void)ref;
    (void)newref;
    unsigned i;
    memcpy(&i, p, sizeof(i));
    return i % 10 == 0;
}

static int
compact_case(unsigned n)
{
    char dir[512];
    struct journal j;
    if (fill(&j, dir, sizeof(dir), JOURNAL_FSYNC_NEVER, 4u << 20, n, 10, 4096, 0) < 0)
        return -1;
    j.c_seen = j.bytes_appended; /* the steps below are not pushed by fresh writes */
    uint64_t before = j.disk_bytes, max = 0, total = 0;
    unsigned steps = 0;
    bool more = true;
    while (more && steps < 1000000) {
        uint64_t t0 = bc_now_ns();
        more = journal_compact_step(&j, 256 * 1024, 0, live_tenth, NULL);
        uint64_t dt = bc_now_ns() - t0;
        total += dt;
        max = dt > max ? dt : max;
        steps++;
        if (journal_flush(&j, 0) < 0)
            return -1;
    }
    printf("%-22s %8u %8.1f ns/op  longest %.2f ms  disk %.0f -> %.0f MB (live %.0f MB)\n",
           "compact_step", steps, (double)total / steps, max / 1e6, before / 1e6,
           j.disk_bytes / 1e6, j.live_bytes / 1e6);
    journal_close(&j);
    rm_dir(dir);
    return 0;
}

/* A million "jobs" scattered in memory behind an open-addressing index, as the backend's. */
struct fjob {
    uint64_t seq;
    uint8_t pad[128];
};

struct ftab {
    struct fjob **slot;
    uint64_t mask;
};

static uint64_t
mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static bool
live_in_table(void *arg, uint8_t type, const uint8_t *p, uint32_t len, journal_ref ref,
              journal_ref newref)
{
    (void)type;
    (void)len;
    (void)ref;
    if (newref != 0)
        return true;
    const struct ftab *t = arg;
    unsigned i;
    memcpy(&i, p, sizeof(i));
    for (uint64_t h = mix(i) & t->mask;; h = (h + 1) & t->mask) {
        const struct fjob *f = t->slot[h];
        if (f == NULL)
            return false;
        if (f->seq == i)
            return true;
    }
}

static int
compact_live_case(unsigned n)
{
    struct ftab t = {.mask = (2ull << 20) - 1};
    t.slot = calloc(t.mask + 1, sizeof(*t.slot));
    struct fjob *jobs = malloc((size_t)n * sizeof(*jobs));
    unsigned *perm = malloc((size_t)n * sizeof(*perm));
    if (!t.slot || !jobs || !perm)
        return -1;
    for (unsigned i = 0; i < n; i++)
        perm[i] = i;
    uint64_t r = 88172645463325252ull;
    for (unsigned i = n - 1; i > 0; i--) { /* jobs scattered: record i's job anywhere */
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        unsigned k = (unsigned)(r % (i + 1)), x = perm[i];
        perm[i] = perm[k];
        perm[k] = x;
    }
    for (unsigned i = 0; i < n; i++) {
        struct fjob *f = &jobs[perm[i]];
        f->seq = i;
        uint64_t h = mix(i) & t.mask;
        while (t.slot[h] != NULL)
            h = (h + 1) & t.mask;
        t.slot[h] = f;
    }
    char dir[512];
    struct journal j;
    if (fill(&j, dir, sizeof(dir), JOURNAL_FSYNC_NEVER, JOURNAL_SEG_DEFAULT, n, 0, 64, 0) < 0)
        return -1;
    journal_set_live(&j, 0); /* compaction starts: every record it reads is live */
    j.c_seen = j.bytes_appended;
    uint64_t max = 0, max_cpu = 0, total = 0, unlink_max = 0;
    static uint64_t walls[100000];
    unsigned steps = 0;
    while (j.n_compacted < 2 && steps < 100000) {
        uint64_t t0 = bc_now_ns(), c0 = bc_thread_cpu_ns(), nc = j.n_compacted;
        journal_compact_step(&j, 256 * 1024, 0, live_in_table, &t);
        uint64_t dt = bc_now_ns() - t0, dc = bc_thread_cpu_ns() - c0;
        total += dt;
        max = dt > max ? dt : max;
        max_cpu = dc > max_cpu ? dc : max_cpu;
        if (j.n_compacted != nc && dt > unlink_max)
            unlink_max = dt;
        walls[steps] = dt;
        steps++;
        if (journal_flush(&j, 0) < 0)
            return -1;
    }
    qsort(walls, steps, sizeof(walls[0]), bc_cmp_u64);
    printf("%-22s %8u %8.1f ns/op  longest %.2f ms CPU; wall p99 %.2f ms, longest %.2f ms; "
           "retiring step %.2f ms (%u live jobs, %llu MB copied)\n",
           "compact_1M_live", steps, (double)total / steps, max_cpu / 1e6,
           walls[steps * 99 / 100] / 1e6, max / 1e6, unlink_max / 1e6, n,
           (unsigned long long)(2 * JOURNAL_SEG_DEFAULT >> 20));
    journal_close(&j);
    rm_dir(dir);
    free(t.slot);
    free(jobs);
    free(perm);
    return 0;
}

int
main(void)
{
    log_level_max = LOG_WARN;
    static uint8_t b[4096];
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (uint8_t)(i * 31);
    uint32_t c = 0;
    unsigned it = 20000;
    uint64_t t0 = bc_now_ns();
    for (unsigned i = 0; i < it; i++)
        c = journal_crc32c(c, b, sizeof(b));
    uint64_t dt = bc_now_ns() - t0;
    printf("%-22s %8u %8.1f ns/op  %.0f MB/s (%08x)\n", "crc32c_4k", it, (double)dt / it,
           (double)it * sizeof(b) / (dt / 1e3), c);
    int rc = append_case("append_never", JOURNAL_FSYNC_NEVER, 200000);
    if (rc == 0)
        rc = append_case("append_interval_10ms", JOURNAL_FSYNC_INTERVAL, 200000);
    if (rc == 0)
        rc = append_case("append_always", JOURNAL_FSYNC_ALWAYS, 50000);
    if (rc == 0)
        rc = replay_case(1000000);
    if (rc == 0)
        rc = compact_case(600000);
    if (rc == 0)
        rc = compact_live_case(1000000);
    if (rc < 0)
        fprintf(stderr, "bench_journal: failed\n");
    return rc < 0;
}
