/* SPDX-License-Identifier: MIT */
/* journal.c: the write-ahead journal's segments, group commit, recovery and compaction
 * (proto.md section 12). */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "opt.h"

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), eight bytes per step: crc_t[k][b]
 * is the CRC of byte b followed by k zero bytes ("slicing by 8"). */
static uint32_t crc_t[8][256];
static bool crc_ready;
static bool crc_hw; /* the CPU's crc32 instruction computes CRC-32C (SSE4.2) */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_HW_BUILT 1
/* crc_sse42 runs the state crc (inverted) over b[0..n) with the SSE4.2 crc32 instruction,
 * eight bytes at a time (the reflected CRC reads them little-endian, as x86 stores them). */
__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t crc, const uint8_t *b, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        c = __builtin_ia32_crc32di(c, w);
        b += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n-- > 0)
        c32 = __builtin_ia32_crc32qi(c32, *b++);
    return c32;
}
#endif

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_t[k][i] = (crc_t[k - 1][i] >> 8) ^ crc_t[0][crc_t[k - 1][i] & 0xff];
#ifdef CRC_HW_BUILT
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
    crc_ready = true;
}

uint32_t
journal_crc32c(uint32_t crc, const void *p, size_t n)
{
    if (!crc_ready)
        crc_init();
#ifdef CRC_HW_BUILT
    if (crc_hw)
        return ~crc_sse42(~crc, p, n);
#endif
    return journal_crc32c_tables(crc, p, n);
}

uint32_t
journal_crc32c_tables(uint32_t crc, const void *p, size_t n)
{
    if (!crc_ready)
        crc_init();
    const uint8_t *b = p;
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24);
        crc = crc_t[7][lo & 0xff] ^ crc_t[6][(lo >> 8) & 0xff] ^ crc_t[5][(lo >> 16) & 0xff] ^
              crc_t[4][lo >> 24] ^ crc_t[3][b[4]] ^ crc_t[2][b[5]] ^ crc_t[1][b[6]] ^
              crc_t[0][b[7]];
        b += 8;
        n -= 8;
    }
    while (n-- > 0)
        crc = crc_t[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void
journal_config_default(struct journal_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->fsync = JOURNAL_FSYNC_INTERVAL;
    cfg->interval_ms = JOURNAL_INTERVAL_DEFAULT_MS;
    cfg->segment_size = JOURNAL_SEG_DEFAULT;
}

int
journal_parse_fsync(const char *s, struct journal_config *cfg)
{
    if (strcmp(s, "always") == 0) {
        cfg->fsync = JOURNAL_FSYNC_ALWAYS;
        return 0;
    }
    if (strcmp(s, "never") == 0) {
        cfg->fsync = JOURNAL_FSYNC_NEVER;
        return 0;
    }
    if (strncmp(s, "interval", 8) == 0 && (s[8] == ' ' || s[8] == '=' || s[8] == '\0')) {
        uint64_t ms = JOURNAL_INTERVAL_DEFAULT_MS;
        if (s[8] != '\0' && opt_parse(OPT_KIND_DURATION, s + 9, 1, 60000, &ms) < 0)
            return -EINVAL;
        cfg->fsync = JOURNAL_FSYNC_INTERVAL;
        cfg->interval_ms = ms;
        return 0;
    }
    return -EINVAL;
}

static void
seg_name(char *out, size_t n, uint32_t num, const char *suffix)
{
    snprintf(out, n, "%016" PRIx32 ".seg%s", num, suffix);
}

static void
seg_header(uint8_t h[JOURNAL_SEG_HDR], uint32_t num)
{
    memset(h, 0, JOURNAL_SEG_HDR);
    memcpy(h, JOURNAL_MAGIC, 8);
    put32(h + 8, JOURNAL_VERSION);
    put32(h + 12, num);
    put32(h + 28, journal_crc32c(0, h, 28));
}

/* seg_header_ok: h is a valid header of segment num. */
static bool
seg_header_ok(const uint8_t *h, uint32_t num)
{
    if (memcmp(h, JOURNAL_MAGIC, 8) != 0 || get32(h + 28) != journal_crc32c(0, h, 28))
        return false;
    return get32(h + 8) == JOURNAL_VERSION && get32(h + 12) == num;
}

static int
segs_push(struct journal *j, uint32_t num, uint64_t size)
{
    if (j->nsegs == j->cap_segs) {
        size_t cap = j->cap_segs ? 2 * j->cap_segs : 16;
        struct journal_seg *s = realloc(j->segs, cap * sizeof(*s));
        if (!s)
            return -ENOMEM;
        j->segs = s;
        j->cap_segs = cap;
    }
    j->segs[j->nsegs++] = (struct journal_seg){.num = num, .size = size};
    j->disk_bytes += size;
    return 0;
}

static struct journal_seg *
seg_find(struct journal *j, uint32_t num)
{
    size_t lo = 0, hi = j->nsegs; /* numbers are increasing */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (j->segs[mid].num < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < j->nsegs && j->segs[lo].num == num ? &j->segs[lo] : NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* list_segments returns the numbers of dir's *.seg files, sorted, in *out (malloc). */
static int
list_segments(int dirfd, uint32_t **out, size_t *n)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint32_t *v = NULL;
    size_t nv = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *s = de->d_name;
        if (strlen(s) == 25 && strcmp(s + 16, ".seg.dead") == 0) {
            (void)unlinkat(dirfd, s, 0); /* compacted: its cut was under way */
            continue;
        }
        if (strlen(s) != 20 || strcmp(s + 16, ".seg") != 0)
            continue;
        uint64_t num = 0;
        bool ok = true;
        for (int i = 0; i < 16 && ok; i++) {
            char c = s[i];
            int dv = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            ok = dv >= 0;
            num = num << 4 | (uint64_t)(dv & 15);
        }
        if (!ok || num == 0 || num > UINT32_MAX)
            continue;
        if (nv == cap) {
            cap = cap ? 2 * cap : 16;
            uint32_t *nw = realloc(v, cap * sizeof(*v));
            if (!nw) {
                rc = -ENOMEM;
                break;
            }
            v = nw;
        }
        v[nv++] = (uint32_t)num;
    }
    closedir(d);
    if (rc < 0) {
        free(v);
        return rc;
    }
    if (nv > 1)
        qsort(v, nv, sizeof(*v), cmp_u32);
    *out = v;
    *n = nv;
    return 0;
}

uint64_t
journal_dir_bytes(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return 0;
    }
    uint64_t n = 0;
    struct dirent *de;
    struct stat st;
    while ((de = readdir(d)) != NULL)
        if (strlen(de->d_name) == 20 && strcmp(de->d_name + 16, ".seg") == 0 &&
            fstatat(dfd, de->d_name, &st, 0) == 0)
            n += (uint64_t)st.st_size;
    closedir(d);
    return n;
}

/* move_aside copies p[0..n) to NAME.corrupt (a new file: never one that exists). */
static int
move_aside(int dirfd, uint32_t num, const uint8_t *p, size_t n)
{
    char name[64];
    int fd = -1;
    for (int k = 0; k < 100 && fd < 0; k++) {
        char sfx[16];
        snprintf(sfx, sizeof(sfx), k ? ".corrupt.%d" : ".corrupt", k);
        seg_name(name, sizeof(name), num, sfx);
        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? -errno : -EIO;
            close(fd);
            return e;
        }
        p += w;
        n -= (size_t)w;
    }
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    log_msg(LOG_WARN, "journal: moved the corrupt rest of segment %s aside", name);
    return rc;
}

/* rec_len: the payload length of the record whose header is at off (of a mapping of size
 * bytes), if that header looks right (a type, reserved bytes zero, a length that fits),
 * else -1. Its CRC is not checked. */
static int64_t
rec_len(const uint8_t *m, uint64_t off, uint64_t size)
{
    if (size - off < JOURNAL_REC_HDR)
        return -1;
    uint32_t len = get32(m + off);
    if (m[off + 4] == 0 || m[off + 5] || m[off + 6] || m[off + 7] ||
        len > JOURNAL_MAX_PAYLOAD || len > size - off - JOURNAL_REC_HDR)
        return -1;
    return len;
}

/* rec_ok: a valid record starts at off (of a mapping of size bytes). */
static bool
rec_ok(const uint8_t *m, uint64_t off, uint64_t size)
{
    int64_t n = rec_len(m, off, size);
    if (n < 0)
        return false;
    uint32_t len = (uint32_t)n;
    uint32_t crc = journal_crc32c(0, m + off, 8);
    return journal_crc32c(crc, m + off + JOURNAL_REC_HDR, len) == get32(m + off + 8);
}

/* tail_is_torn: the bad record at off is the end of an interrupted write: no valid record
 * starts anywhere after it (else the damage is before the tail: corruption). A bad header
 * is torn only if the file is shorter than a header or all zeros.
 * Each offset whose header looks right costs a CRC over its length: bytes laid out so that
 * every offset does (a hostile file, 16 MiB lengths in a 64 MiB segment) would cost
 * offsets x lengths: hours of a start. The CRCs are bounded to 16 x the bytes after off
 * (plus 1 MiB): past it the tail counts as corruption (refused, or moved aside with
 * --journal-repair), never as torn. Found by reading what fuzz_journal cannot reach: its
 * inputs are too small for the cost to show. */
static bool
tail_is_torn(const uint8_t *m, uint64_t off, uint64_t size)
{
    if (off == 0) {
        for (uint64_t i = 0; i < size && size >= JOURNAL_SEG_HDR; i++)
            if (m[i] != 0)
                return false;
        return true;
    }
    uint64_t budget = 16 * (size - off) + (1u << 20);
    for (uint64_t p = off + 1; p + JOURNAL_REC_HDR <= size; p++) {
        int64_t len = rec_len(m, p, size);
        if (len < 0)
            continue; /* no CRC to compute */
        if ((uint64_t)len > budget)
            return false;
        budget -= (uint64_t)len;
        if (rec_ok(m, p, size))
            return false;
    }
    return true;
}

/* scan_segment replays segment num (the index-th of n), of size bytes. Returns the
 * length of its valid prefix in *good, 1 in *stop when the segments after it must not be
 * read (corruption moved aside), or a negative error. */
static int
scan_segment(struct journal *j, uint32_t num, bool last, journal_replay_fn *fn, void *arg,
             uint64_t *good, bool *stop, char *why, size_t whylen)
{
    char name[64];
    seg_name(name, sizeof(name), num, "");
    int fd = openat(j->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint64_t size = (uint64_t)st.st_size;
    const uint8_t *m = NULL;
    if (size > 0) {
        m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = -errno;
            close(fd);
            return e;
        }
        madvise((void *)m, size, MADV_SEQUENTIAL);
    }
    int rc = segs_push(j, num, 0);
    uint64_t off = JOURNAL_SEG_HDR;
    bool bad = false;
    if (rc == 0 && (size < JOURNAL_SEG_HDR || !seg_header_ok(m, num))) {
        off = 0;
        bad = true;
    } else if (rc == 0) {
        j->segs[j->nsegs - 1].size = JOURNAL_SEG_HDR;
        j->disk_bytes += JOURNAL_SEG_HDR;
    }
    while (rc == 0 && !bad && off < size) {
        if (!rec_ok(m, off, size)) {
            bad = true;
            break;
        }
        uint32_t len = get32(m + off);
        uint8_t type = m[off + 4];
        uint64_t rl = JOURNAL_REC_HDR + (uint64_t)len;
        struct journal_seg *s = &j->segs[j->nsegs - 1];
        s->size += rl;
        s->live += rl;
        j->disk_bytes += rl;
        j->live_bytes += rl;
        rc = fn(arg, type, m + off + JOURNAL_REC_HDR, len, JOURNAL_REF(num, off));
        off += rl;
    }
    if (rc == 0 && bad) {
        if (last && tail_is_torn(m, off, size)) {
            log_msg(LOG_WARN, "journal: torn tail of %s cut at offset %" PRIu64
                              " (%" PRIu64 " bytes of an interrupted write)",
                    name, off, size - off);
        } else if (!j->cfg.repair) {
            snprintf(why, whylen,
                     "journal: corrupt record in %s at offset %" PRIu64
                     " (before the tail; start with --journal-repair to move the rest aside)",
                     name, off);
            rc = -EBADMSG;
        } else {
            log_msg(LOG_ERR, "journal: corrupt record in %s at offset %" PRIu64
                             ": repairing (the rest is moved aside)", name, off);
            /* An empty file is not mapped (m is NULL): no pointer arithmetic on it. */
            rc = move_aside(j->dirfd, num, m != NULL ? m + off : m, size - off);
            *stop = true;
        }
        if (rc == 0 && ftruncate(fd, (off_t)off) < 0)
            rc = -errno;
        if (rc == 0 && fsync(fd) < 0)
            rc = -errno;
    }
    if (m)
        munmap((void *)m, size);
    close(fd);
    if (rc == 0 && off == 0) { /* not even a header: an interrupted creation */
        j->disk_bytes -= j->segs[j->nsegs - 1].size;
        j->nsegs--;
        if (unlinkat(j->dirfd, name, 0) < 0)
            rc = -errno;
    }
    *good = off;
    return rc;
}

/* data_sync: fdatasync(fd), counted and timed for /metrics. Returns 0 or -errno. */
static int
data_sync(struct journal *j, int fd)
{
    uint64_t t0 = ev_clock_us();
    int rc = fdatasync(fd) < 0 ? -errno : 0;
    metrics_hist_observe(&j->sync_hist, ev_clock_us() - t0);
    j->n_syncs++;
    return rc;
}

static int
seg_create(struct journal *j, uint32_t num)
{
    char name[64];
    seg_name(name, sizeof(name), num, "");
    int fd = openat(j->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    uint8_t h[JOURNAL_SEG_HDR];
    seg_header(h, num);
    ssize_t w = pwrite(fd, h, sizeof(h), 0);
    if (w != (ssize_t)sizeof(h)) {
        int e = w < 0 ? -errno : -ENOSPC;
        close(fd);
        unlinkat(j->dirfd, name, 0);
        return e;
    }
    int e = j->cfg.fsync != JOURNAL_FSYNC_NEVER ? data_sync(j, fd) : 0;
    if (e == 0 && j->cfg.fsync != JOURNAL_FSYNC_NEVER && fsync(j->dirfd) < 0)
        e = -errno;
    if (e < 0) {
        close(fd);
        return e;
    }
    int rc = segs_push(j, num, JOURNAL_SEG_HDR);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (j->fd >= 0)
        close(j->fd);
    j->fd = fd;
    j->out_base = JOURNAL_SEG_HDR;
    return 0;
}

int
journal_open(struct journal *j, const char *dir, const struct journal_config *cfg,
             journal_replay_fn *fn, void *arg, char *why, size_t whylen)
{
    memset(j, 0, sizeof(*j));
    j->cfg = *cfg;
    if (j->cfg.segment_size < JOURNAL_SEG_MIN)
        j->cfg.segment_size = JOURNAL_SEG_MIN;
    if (j->cfg.segment_size > UINT32_MAX)
        j->cfg.segment_size = UINT32_MAX; /* offsets are 32 bits */
    j->fd = -1;
    j->c_fd = -1;
    j->d_fd = -1;
    buf_init(&j->out);
    buf_init(&j->c_buf);
    snprintf(why, whylen, "journal: %s: ", dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int e = -errno;
        snprintf(why, whylen, "journal: cannot create %s: %s", dir, strerror(-e));
        return e;
    }
    j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        int e = -errno;
        snprintf(why, whylen, "journal: cannot open %s: %s", dir, strerror(-e));
        return e;
    }
    if (flock(j->dirfd, LOCK_EX | LOCK_NB) < 0) {
        int e = -errno;
        if (e == -EWOULDBLOCK)
            snprintf(why, whylen,
                     "journal: %s is in use by another process (it holds the directory's "
                     "lock): refusing to start",
                     dir);
        else
            snprintf(why, whylen, "journal: cannot lock %s: %s", dir, strerror(-e));
        close(j->dirfd);
        return e;
    }
    uint32_t *nums = NULL;
    size_t n = 0;
    int rc = list_segments(j->dirfd, &nums, &n);
    uint64_t good = 0;
    bool stop = false;
    size_t i;
    for (i = 0; rc == 0 && i < n && !stop; i++)
        rc = scan_segment(j, nums[i], i + 1 == n, fn, arg, &good, &stop, why, whylen);
    for (; rc == 0 && i < n; i++) { /* after a repair: the later segments go aside */
        char from[64], to[64];
        seg_name(from, sizeof(from), nums[i], "");
        seg_name(to, sizeof(to), nums[i], ".corrupt");
        if (renameat(j->dirfd, from, j->dirfd, to) < 0)
            rc = -errno;
        else
            log_msg(LOG_WARN, "journal: segment %s moved aside as %s", from, to);
    }
    uint32_t lastnum = n ? nums[n - 1] : 0;
    free(nums);
    if (rc == 0) {
        struct journal_seg *ls = j->nsegs ? &j->segs[j->nsegs - 1] : NULL;
        if (ls && ls->size < j->cfg.segment_size) {
            char name[64];
            seg_name(name, sizeof(name), ls->num, "");
            j->fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC);
            if (j->fd < 0)
                rc = -errno;
            j->out_base = ls->size;
        } else {
            rc = seg_create(j, lastnum + 1);
        }
    }
    if (rc < 0) {
        if (rc != -EBADMSG)
            snprintf(why, whylen, "journal: %s: %s", dir, strerror(-rc));
        journal_close(j);
        return rc;
    }
    return 0;
}

/* write_out writes the queued records at the end of the current segment. */
static int
write_out(struct journal *j)
{
    while (buf_len(&j->out) > 0) {
        ssize_t w = pwrite(j->fd, buf_head(&j->out), buf_len(&j->out), (off_t)j->out_base);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? -errno : -ENOSPC;
            if (e == -EAGAIN)
                e = -EIO;
            return e;
        }
        buf_consume(&j->out, (size_t)w);
        j->out_base += (uint64_t)w;
    }
    j->lsn_written = j->lsn_appended;
    return 0;
}

static void
set_err(struct journal *j, int e)
{
    if (e != j->err) {
        if (e)
            log_msg(LOG_ERR, "journal: write failed: %s (new jobs are refused until it works)",
                    strerror(-e));
        else
            log_msg(LOG_WARN, "journal: writes work again");
    }
    j->err = e;
}

static int
do_sync(struct journal *j, uint64_t now_ms)
{
    int rc = data_sync(j, j->fd);
    if (rc < 0)
        return rc;
    j->lsn_synced = j->lsn_written;
    j->sync_pending = false;
    j->last_sync_ms = now_ms;
    return 0;
}

int
journal_flush(struct journal *j, uint64_t now_ms)
{
    if (j->fd < 0)
        return -EBADF;
    if (j->err != 0 && now_ms < j->retry_ms)
        return j->err; /* a failed write is retried every JOURNAL_RETRY_MS */
    bool wrote = buf_len(&j->out) > 0;
    int rc = write_out(j);
    if (rc == 0)
        buf_shrink(&j->out, JOURNAL_OUT_KEEP);
    if (rc == 0 && wrote)
        j->sync_pending = j->cfg.fsync != JOURNAL_FSYNC_NEVER;
    if (rc == 0 && j->sync_pending &&
        (j->cfg.fsync == JOURNAL_FSYNC_ALWAYS || now_ms >= j->last_sync_ms + j->cfg.interval_ms))
        rc = do_sync(j, now_ms);
    set_err(j, rc);
    if (rc != 0)
        j->retry_ms = now_ms + JOURNAL_RETRY_MS;
    return rc;
}

uint64_t
journal_mem(const struct journal *j)
{
    return (uint64_t)j->out.cap + j->c_buf.cap + j->cap_segs * sizeof(*j->segs);
}

void
journal_metrics(const struct journal *j, struct metrics_journal *m)
{
    m->bytes = j->disk_bytes;
    m->live_bytes = j->live_bytes;
    m->segments = j->nsegs;
    m->compactions = j->n_compacted;
    m->fsyncs = j->n_syncs;
    m->ok = j->err == 0;
    m->fsync = &j->sync_hist;
}

uint64_t
journal_durable(const struct journal *j)
{
    return j->cfg.fsync == JOURNAL_FSYNC_ALWAYS ? j->lsn_synced : j->lsn_written;
}

uint64_t
journal_next_ms(const struct journal *j)
{
    if (j->err != 0)
        return j->retry_ms;
    if (buf_len(&j->out) > 0)
        return 0;
    if (j->sync_pending)
        return j->last_sync_ms + j->cfg.interval_ms;
    return UINT64_MAX;
}

/* rotate writes what is queued, syncs it and starts the next segment. */
static int
rotate(struct journal *j)
{
    int rc = write_out(j);
    if (rc == 0 && j->cfg.fsync != JOURNAL_FSYNC_NEVER)
        rc = data_sync(j, j->fd);
    if (rc == 0)
        rc = seg_create(j, j->segs[j->nsegs - 1].num + 1);
    if (rc < 0)
        set_err(j, rc);
    return rc;
}

journal_ref
journal_appendv(struct journal *j, uint8_t type, const struct journal_iov *iov, int n, int *err)
{
    uint64_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].len;
    if (type == 0 || len > JOURNAL_MAX_PAYLOAD ||
        JOURNAL_SEG_HDR + JOURNAL_REC_HDR + len > j->cfg.segment_size) {
        *err = -EMSGSIZE;
        return 0;
    }
    uint64_t rl = JOURNAL_REC_HDR + len;
    struct journal_seg *s = &j->segs[j->nsegs - 1];
    if (s->size + rl > j->cfg.segment_size && s->size > JOURNAL_SEG_HDR) {
        int rc = rotate(j);
        if (rc < 0) {
            *err = rc;
            return 0;
        }
        s = &j->segs[j->nsegs - 1];
    }
    if (buf_reserve(&j->out, rl) < 0) {
        *err = -ENOMEM;
        return 0;
    }
    uint8_t *h = buf_tail(&j->out);
    put32(h, (uint32_t)len);
    h[4] = type;
    h[5] = h[6] = h[7] = 0;
    uint32_t crc = journal_crc32c(0, h, 8);
    uint8_t *p = h + JOURNAL_REC_HDR;
    for (int i = 0; i < n; i++) {
        if (iov[i].len)
            memcpy(p, iov[i].p, iov[i].len);
        crc = journal_crc32c(crc, p, iov[i].len);
        p += iov[i].len;
    }
    put32(h + 8, crc);
    buf_produce(&j->out, rl);
    journal_ref ref = JOURNAL_REF(s->num, s->size);
    s->size += rl;
    s->live += rl;
    j->disk_bytes += rl;
    if (!j->live_external)
        j->live_bytes += rl;
    j->bytes_appended += rl;
    j->lsn_appended++;
    *err = 0;
    return ref;
}

journal_ref
journal_append(struct journal *j, uint8_t type, const void *p, uint32_t len, int *err)
{
    struct journal_iov v = {p, len};
    return journal_appendv(j, type, &v, 1, err);
}

void
journal_set_live(struct journal *j, uint64_t bytes)
{
    j->live_external = true;
    j->live_bytes = bytes;
}

void
journal_release(struct journal *j, journal_ref ref, uint32_t len)
{
    struct journal_seg *s = seg_find(j, JOURNAL_REF_SEG(ref));
    uint64_t rl = JOURNAL_REC_HDR + (uint64_t)len;
    if (!s || s->live < rl || j->live_external)
        return; /* a segment already compacted away */
    s->live -= rl;
    j->live_bytes -= rl;
}

/* chunk_read reads n bytes of the oldest segment at off into c_buf. Returns 0 or -errno. */
static int
chunk_read(struct journal *j, uint64_t off, size_t n)
{
    j->c_buf.rpos = j->c_buf.wpos = 0;
    if (buf_reserve(&j->c_buf, n) < 0)
        return -ENOMEM;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(j->c_fd, j->c_buf.data + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        got += (size_t)r;
    }
    buf_produce(&j->c_buf, n);
    return 0;
}

static void
compact_stop(struct journal *j)
{
    if (j->c_fd >= 0)
        close(j->c_fd);
    j->c_fd = -1;
    j->c_off = 0;
}

/* compact_copy copies forward the live records of the oldest segment from c_off, about
 * budget bytes (one read), stopping early once JOURNAL_STEP_US have passed since t0_us.
 * Returns 0, or -errno (compaction starts again later). */
static int
compact_copy(struct journal *j, size_t budget, uint64_t t0_us, journal_relocate_fn *fn,
             void *arg)
{
    struct journal_seg *s = &j->segs[0];
    uint64_t left = s->size - j->c_off;
    size_t n = budget < 4096 ? 4096 : budget;
    if (n > left)
        n = (size_t)left;
    int rc = chunk_read(j, j->c_off, n);
    if (rc < 0)
        return rc;
    uint64_t base = j->c_off;
    size_t pos = 0, done = 0;
    for (unsigned nrec = 1; pos < buf_len(&j->c_buf) && done < budget; nrec++) {
        if (nrec % JOURNAL_STEP_CHECK == 0 && ev_clock_us() - t0_us >= JOURNAL_STEP_US)
            break; /* the rest at the next step */
        if (!rec_ok(j->c_buf.data, pos, buf_len(&j->c_buf))) {
            uint32_t len = buf_len(&j->c_buf) - pos >= 4 ? get32(j->c_buf.data + pos) : 0;
            if (pos > 0 || len > JOURNAL_MAX_PAYLOAD || len + JOURNAL_REC_HDR <= n ||
                len + JOURNAL_REC_HDR > left)
                break; /* next call, from this record; or damage (below) */
            rc = chunk_read(j, j->c_off, len + JOURNAL_REC_HDR); /* one large record */
            if (rc < 0)
                return rc;
            if (!rec_ok(j->c_buf.data, 0, buf_len(&j->c_buf)))
                break;
        }
        const uint8_t *h = j->c_buf.data + pos;
        uint32_t len = get32(h);
        uint8_t type = h[4];
        journal_ref ref = JOURNAL_REF(s->num, base + pos);
        if (fn(arg, type, h + JOURNAL_REC_HDR, len, ref, 0)) {
            int err;
            journal_ref nr = journal_append(j, type, h + JOURNAL_REC_HDR, len, &err);
            if (!nr)
                return err;
            s = &j->segs[0]; /* a rotation may have moved the array */
            fn(arg, type, h + JOURNAL_REC_HDR, len, ref, nr);
        }
        pos += JOURNAL_REC_HDR + len;
        done += JOURNAL_REC_HDR + len;
        j->c_off = base + pos;
    }
    if (pos == 0) {
        log_msg(LOG_ERR, "journal: compaction cannot read a record of segment %016" PRIx32
                         " at offset %" PRIu64, s->num, j->c_off);
        return -EBADMSG;
    }
    return 0;
}

/* dead_cut cuts the compacted segment by JOURNAL_TRUNC_STEP, and unlinks it once it is
 * no larger. */
static void
dead_cut(struct journal *j)
{
    uint64_t left = j->d_size > JOURNAL_TRUNC_STEP ? j->d_size - JOURNAL_TRUNC_STEP : 0;
    if (left > 0 && ftruncate(j->d_fd, (off_t)left) < 0)
        left = 0; /* then at once */
    if (left == 0) {
        char name[64];
        seg_name(name, sizeof(name), j->d_num, ".dead");
        close(j->d_fd);
        j->d_fd = -1;
        if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
            log_msg(LOG_WARN, "journal: cannot remove %s: %s", name, strerror(errno));
    }
    j->disk_bytes -= j->d_size - left;
    j->d_size = left;
}

/* seg_retire takes the compacted oldest segment out of the journal: renamed NAME.dead (a
 * start ignores and removes it), then cut a step at a time by dead_cut. Returns 0 or
 * -errno. */
static int
seg_retire(struct journal *j)
{
    char name[64], dead[64];
    seg_name(name, sizeof(name), j->segs[0].num, "");
    seg_name(dead, sizeof(dead), j->segs[0].num, ".dead");
    if (j->segs[0].size <= JOURNAL_TRUNC_STEP) { /* small: at once */
        if (unlinkat(j->dirfd, name, 0) < 0 && errno != ENOENT)
            return -errno;
        j->disk_bytes -= j->segs[0].size;
        return 0;
    }
    int fd = openat(j->dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return -errno;
    if (fd >= 0 && renameat(j->dirfd, name, j->dirfd, dead) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (fd >= 0) {
        j->d_fd = fd;
        j->d_num = j->segs[0].num;
        j->d_size = j->segs[0].size;
    } else {
        j->disk_bytes -= j->segs[0].size; /* gone already */
    }
    return 0;
}

bool
journal_compact_step(struct journal *j, size_t budget, uint64_t now_ms,
                     journal_relocate_fn *fn, void *arg)
{
    (void)now_ms;
    uint64_t t0 = ev_clock_us();
    /* Keep pace with the writes: at least twice what was appended since the last step. */
    uint64_t fresh = j->bytes_appended - j->c_seen;
    j->c_seen = j->bytes_appended;
    if (fresh <= SIZE_MAX / 2 && budget < 2 * fresh)
        budget = (size_t)(2 * fresh);
    if (budget > JOURNAL_STEP_MAX)
        budget = JOURNAL_STEP_MAX;
    bool cut = j->d_fd >= 0;
    if (cut) /* a piece of the last compacted segment; the time left goes to copies */
        dead_cut(j);
    if (j->err || j->nsegs < 2)
        return j->d_fd >= 0;
    char name[64];
    seg_name(name, sizeof(name), j->segs[0].num, "");
    if (j->c_off == 0) {
        if (j->disk_bytes <= 2 * j->live_bytes + 2 * j->cfg.segment_size)
            return j->d_fd >= 0;
        if (cut && j->d_fd < 0)
            return true; /* the next segment's opening next time: one unlink per step */
        j->c_fd = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (j->c_fd < 0)
            return j->d_fd >= 0;
        j->c_off = JOURNAL_SEG_HDR;
        j->c_waitlsn = 0;
    }
    if (j->c_off < j->segs[0].size) {
        int rc = compact_copy(j, budget, t0, fn, arg);
        j->c_seen = j->bytes_appended; /* the copies are not new work */
        if (rc < 0) {
            compact_stop(j);
            return j->d_fd >= 0;
        }
        if (j->c_off < j->segs[0].size)
            return true;
        j->c_waitlsn = j->lsn_appended;
    }
    uint64_t have = j->cfg.fsync == JOURNAL_FSYNC_NEVER ? j->lsn_written : j->lsn_synced;
    if (have < j->c_waitlsn)
        return true; /* the copies are not on disk yet */
    if (cut || seg_retire(j) < 0) { /* one retired segment at a time */
        if (!cut)
            compact_stop(j);
        return cut;
    }
    struct journal_seg *s = &j->segs[0];
    if (!j->live_external)
        j->live_bytes -= s->live;
    memmove(&j->segs[0], &j->segs[1], (j->nsegs - 1) * sizeof(*s));
    j->nsegs--;
    compact_stop(j);
    j->n_compacted++;
    return j->d_fd >= 0 || j->disk_bytes > 2 * j->live_bytes + 2 * j->cfg.segment_size;
}

void
journal_close(struct journal *j)
{
    compact_stop(j);
    while (j->d_fd >= 0)
        dead_cut(j);
    if (j->fd >= 0) {
        if (write_out(j) == 0 && j->cfg.fsync != JOURNAL_FSYNC_NEVER)
            (void)fdatasync(j->fd);
        close(j->fd);
        j->fd = -1;
    }
    if (j->dirfd >= 0) {
        close(j->dirfd); /* releases the lock */
        j->dirfd = -1;
    }
    free(j->segs);
    j->segs = NULL;
    j->nsegs = j->cap_segs = 0;
    buf_fini(&j->out);
    buf_fini(&j->c_buf);
}
