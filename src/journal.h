/* SPDX-License-Identifier: MIT */
/* journal.h: the write-ahead journal of the durable queue (proto.md section 12).
 *
 * A journal is a directory of segment files NNNNNNNNNNNNNNNN.seg (16 hex digits, the
 * segment's number), each a 32-byte header then records. A record is a 12-byte header
 * (payload length, type, CRC-32C) and its payload; the journal does not interpret payloads.
 *
 * Writing: journal_append copies a record into memory and returns its reference (segment
 * number and offset); journal_flush, called once per event-loop iteration before sleeping
 * (group commit), writes every record appended since and, as the fsync mode says, makes
 * them durable with one fdatasync. journal_durable tells which records are safe.
 *
 * Space: each record counts as live until journal_release; journal_compact_step copies
 * the live records of the oldest segment forward (asking the caller, through the relocate
 * callback, whether each is still live and telling it the new reference), a bounded number
 * of bytes per call, and unlinks the segment once its copies are written.
 *
 * Ownership: journal_open takes an exclusive flock on the directory; a second process
 * gets -EWOULDBLOCK. */
#ifndef ING_JOURNAL_H
#define ING_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "metrics.h"

#define JOURNAL_MAGIC "INGJRNL\n"
#define JOURNAL_VERSION 1u
#define JOURNAL_SEG_HDR 32u
#define JOURNAL_REC_HDR 12u
#define JOURNAL_MAX_PAYLOAD (16u << 20) /* a larger length is corruption */
#define JOURNAL_SEG_DEFAULT (64ull << 20)
#define JOURNAL_SEG_MIN 4096ull
#define JOURNAL_INTERVAL_DEFAULT_MS 10
#define JOURNAL_RETRY_MS 100 /* a failed write is tried again this much later */
/* A compaction step reads at most this much (a larger budget is cut to it) and stops
 * copying once it has run this long (the clock is read every JOURNAL_STEP_CHECK records):
 * no step holds the loop much over 1 ms, whatever the budget, the records or the callback. */
#define JOURNAL_STEP_MAX (1u << 20)
#define JOURNAL_STEP_US 1000u
#define JOURNAL_STEP_CHECK 32u
/* A compacted segment is renamed NAME.dead, then cut by this much per step before its
 * unlink: the kernel frees a large file's cached pages in proportion to its size (about
 * 10 ms for 64 MiB in one unlink). A start removes any *.seg.dead left. */
#define JOURNAL_TRUNC_STEP (4u << 20)

/* Record types (proto.md 12.3). The journal itself only reserves 0 (never valid). */
enum journal_rec {
    JREC_ACCEPTED = 1,   /* a job accepted: owner session, arrival, priority, job body */
    JREC_DISPATCHED = 2, /* job sent to an agent */
    JREC_STARTED = 3,
    JREC_DONE = 4,      /* the result, kept until delivered */
    JREC_DELIVERED = 5, /* a kept result reached its owner */
    JREC_ENDED = 6,     /* the job is forgotten: result given, killed or dropped */
    JREC_SESSION_ACCEPTED = 7, /* a job accepted from a session: as 1, with its session id */
    JREC_DISPATCHED_AT = 8, /* as 2 (to an agent), with its wall time and requeue counts */
};

enum journal_fsync {
    JOURNAL_FSYNC_INTERVAL = 0, /* at most one fdatasync per interval_ms (default) */
    JOURNAL_FSYNC_ALWAYS = 1,   /* every flush that wrote something ends with fdatasync */
    JOURNAL_FSYNC_NEVER = 2,    /* the kernel writes when it likes */
};

struct journal_config {
    enum journal_fsync fsync;
    uint64_t interval_ms;  /* JOURNAL_FSYNC_INTERVAL */
    uint64_t segment_size; /* rotate once a segment would exceed it (>= JOURNAL_SEG_MIN) */
    bool repair;           /* corruption before the tail: move the rest aside, go on */
};

void journal_config_default(struct journal_config *cfg);
/* journal_parse_fsync reads "always", "never" or "interval DUR" (DUR as opt_parse_duration:
 * "10ms", "1s"...). Returns 0 or -EINVAL. */
int journal_parse_fsync(const char *s, struct journal_config *cfg);

/* A record's place: segment number << 32 | offset in the segment. */
typedef uint64_t journal_ref;
#define JOURNAL_REF(seg, off) (((uint64_t)(seg) << 32) | (uint32_t)(off))
#define JOURNAL_REF_SEG(r) ((uint32_t)((r) >> 32))
#define JOURNAL_REF_OFF(r) ((uint32_t)(r))

struct journal_seg {
    uint32_t num;
    uint64_t size; /* bytes in the file (header included), written or not */
    uint64_t live; /* bytes of records not released */
};

struct journal {
    struct journal_config cfg;
    int dirfd, fd; /* the directory (locked), the segment being written */
    struct journal_seg *segs; /* oldest first; the last is being written */
    size_t nsegs, cap_segs;
    struct buf out;       /* appended, not yet written */
    uint64_t out_base;    /* offset in the current segment of out's first byte */
    uint64_t lsn_appended; /* records appended since open */
    uint64_t lsn_written;  /* of which written to the file */
    uint64_t lsn_synced;   /* of which fdatasync-ed */
    uint64_t last_sync_ms;
    bool sync_pending;     /* written records wait for an fdatasync */
    int err;               /* 0, or the -errno of the last failed write (records kept) */
    uint64_t retry_ms;     /* while err: when the next flush tries again */
    /* compaction of segs[0] */
    uint64_t c_off;        /* next record offset in the oldest segment, 0 = not started */
    uint64_t c_waitlsn;    /* copies to write before the segment can go */
    uint64_t bytes_appended, c_seen; /* appended in all; as of the last compaction step */
    int c_fd;              /* the oldest segment, open while it is compacted */
    int d_fd;              /* a compacted segment (NAME.dead) being cut, or -1 */
    uint32_t d_num;
    uint64_t d_size;       /* its bytes left (counted in disk_bytes) */
    struct buf c_buf;      /* read buffer: one chunk of it */
    uint64_t disk_bytes, live_bytes;
    bool live_external; /* journal_set_live */
    uint64_t n_syncs, n_compacted; /* fdatasyncs of segments; segments compacted away */
    struct metrics_hist sync_hist; /* each fdatasync's latency (/metrics) */
};

/* journal_replay_fn is called for each valid record, in order. A negative return stops
 * the open with that error. A record copied by a compaction that a crash cut short comes
 * twice (the same bytes): the reader must be idempotent. */
typedef int journal_replay_fn(void *arg, uint8_t type, const uint8_t *p, uint32_t len,
                              journal_ref ref);
/* journal_relocate_fn: during compaction, the record at ref is live? Return false (it
 * will not be copied) or true; if true and newref != 0, the record was copied to newref
 * (the callback is called a second time with the new reference). */
typedef bool journal_relocate_fn(void *arg, uint8_t type, const uint8_t *p, uint32_t len,
                                 journal_ref ref, journal_ref newref);

/* journal_open locks dir (creating it if missing), replays every record through fn, cuts a
 * torn tail (logged with file and offset), and prepares to append. Corruption before the
 * tail fails with -EBADMSG and a message in why naming file and offset, unless
 * cfg->repair (the rest is renamed *.corrupt). Other errors: -EWOULDBLOCK (another
 * process holds the lock), -errno. */
int journal_open(struct journal *j, const char *dir, const struct journal_config *cfg,
                 journal_replay_fn *fn, void *arg, char *why, size_t whylen);
/* journal_dir_bytes: the total size of dir's segment files (0 if there is none), before
 * journal_open: a reader may size its tables from it. */
uint64_t journal_dir_bytes(const char *dir);
/* journal_close writes what is appended (with an fdatasync unless the mode is never),
 * then releases everything, the lock included. */
void journal_close(struct journal *j);

/* journal_append queues a record. Returns its reference, or 0 with -errno in *err
 * (-ENOMEM, -EMSGSIZE, or the journal's write error when it is unavailable). */
journal_ref journal_append(struct journal *j, uint8_t type, const void *p, uint32_t len,
                           int *err);
/* journal_appendv: the payload is the concatenation of n pieces. */
struct journal_iov {
    const void *p;
    uint32_t len;
};
journal_ref journal_appendv(struct journal *j, uint8_t type, const struct journal_iov *iov,
                            int n, int *err);
/* journal_release: the record at ref, of payload length len, is no longer needed. */
void journal_release(struct journal *j, journal_ref ref, uint32_t len);
/* journal_set_live: the caller counts the live bytes itself (records included) instead of
 * releasing each record; from then on appends and compaction leave live_bytes to it. */
void journal_set_live(struct journal *j, uint64_t bytes);

/* journal_flush writes the queued records and, as the mode says, syncs them (at most one
 * fdatasync). now_ms is the caller's monotonic clock. Returns 0 or the -errno of a failed
 * write (ENOSPC, EIO, EFBIG...): the records stay queued and a flush from JOURNAL_RETRY_MS
 * later tries again (the ones before return the error at once). */
int journal_flush(struct journal *j, uint64_t now_ms);
/* journal_durable: records up to this sequence number (1 = the first appended since open)
 * are as durable as the mode promises: written under never, synced under always; under
 * interval, written (their sync follows within the interval). */
uint64_t journal_durable(const struct journal *j);
/* journal_next_ms: when the next flush has work (a sync due), or UINT64_MAX. */
uint64_t journal_next_ms(const struct journal *j);
/* journal_mem: the bytes of memory the journal holds (its write and compaction buffers and
 * its list of segments), for the server's memory budget (proto.md 7.7). After a flush that
 * wrote everything, a write buffer grown past JOURNAL_OUT_KEEP by a burst is released. */
#define JOURNAL_OUT_KEEP (4u << 20)
uint64_t journal_mem(const struct journal *j);

/* journal_metrics fills m with the journal's figures for /metrics and /status (m->fsync
 * points into j). */
void journal_metrics(const struct journal *j, struct metrics_journal *m);

/* journal_ok: the last write succeeded. */
static inline bool
journal_ok(const struct journal *j)
{
    return j->err == 0;
}

/* journal_compact_step: if the disk use exceeds 2 x live + 2 segments, copy forward up to
 * budget bytes (or twice the bytes appended since the previous step, if more: compaction
 * keeps pace with the writes; at most JOURNAL_STEP_MAX, and for at most JOURNAL_STEP_US) of
 * the oldest segment's records (fn decides which are live) and unlink it once done and
 * written. Returns true while compaction has more to do. */
bool journal_compact_step(struct journal *j, size_t budget, uint64_t now_ms,
                          journal_relocate_fn *fn, void *arg);

/* crc32c of p[0..n), starting from crc (0 for a new checksum). */
uint32_t journal_crc32c(uint32_t crc, const void *p, size_t n);
/* journal_crc32c_tables: the same, always by tables (journal_crc32c uses the CPU's crc32
 * instruction when it has one); for tests. */
uint32_t journal_crc32c_tables(uint32_t crc, const void *p, size_t n);

#endif
