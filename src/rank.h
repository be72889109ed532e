/* SPDX-License-Identifier: MIT */
/* rank.h: order statistics over a sliding window of ordinals (the position of a waiting job).
 *
 * A group of jobs (one environment and priority, or one fair-share key there) hands each job
 * an ordinal in the order the scheduler takes them; rank_before tells how many live ordinals
 * are below a given one. A ring of cap positions (ordinal & (cap - 1)) covers the window
 * [base, next) of ordinals that may be live: a bit per position says which are, and a
 * Fenwick tree counts the live ones per 64-position word (cap / 64 counters: 16 KiB of tree
 * for a million ordinals, which stays in the caches where a counter per position would not).
 * The window slides as the oldest ordinals die, and the ring doubles when the window
 * outgrows it. Updates and queries cost O(log (cap / 64)) plus a popcount; a group of a
 * million waiting jobs answers in a microsecond. Each position also keeps its ordinal's
 * arrival, and with keys set (fair share) its tag, so that rank_before_seq and
 * rank_before_key count the live entries below any arrival or (tag, arrival) by a search
 * from an interpolated guess (a group's arrivals grow with its ordinals, and so do a key's
 * tags). Arrays come from a struct pool: a warm backend allocates nothing for groups that
 * come and go. */
#ifndef ING_RANK_H
#define ING_RANK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slab.h"

#define RANK_MIN_CAP 64u /* one word of live bits */

struct rank {
    uint32_t *t;          /* Fenwick tree t[1..cap/64] over the words of bits */
    uint64_t *bits;       /* live bit of each ring position 0..cap-1 */
    uint64_t *sq;         /* per position, its ordinal's arrival */
    uint64_t *vt;         /* keys: per position, its ordinal's tag */
    uint32_t cap;       /* a power of two, 0 = nothing allocated yet */
    uint32_t n;         /* live ordinals */
    uint64_t base;      /* no live ordinal is below base */
    uint64_t next;      /* the next ordinal rank_push hands out; all live ones are below */
    uint64_t top_sq;    /* the arrival kept at ordinal next - 1 (rank_before_seq_from) */
    bool keys;
};

/* rank_init prepares r (no allocation); keys: keep a tag per ordinal too. */
void rank_init(struct rank *r, bool keys);
void rank_fini(struct rank *r, struct pool *p);

/* rank_reserve makes room for ordinal lo .. next (lo <= next: an ordinal to live again, or
 * next for a new one) in the window. Returns 0 or -ENOMEM (r unchanged). */
int rank_reserve(struct rank *r, struct pool *p, uint64_t lo);
/* rank_push hands out ordinal next, live (after rank_reserve(r, p, r->next)). */
uint64_t rank_push(struct rank *r, uint64_t vt, uint64_t sq);
/* rank_revive makes dead ordinal ord, of key (vt, sq), live again (after
 * rank_reserve(r, p, ord)). */
void rank_revive(struct rank *r, uint64_t ord, uint64_t vt, uint64_t sq);
/* rank_kill: ordinal ord (live) dies. */
void rank_kill(struct rank *r, uint64_t ord);
/* rank_before: live ordinals below ord (base <= ord <= next). */
uint32_t rank_before(const struct rank *r, uint64_t ord);
/* rank_before_key (keys): live ordinals whose (tag, arrival) is below (vt, sq). */
uint32_t rank_before_key(const struct rank *r, uint64_t vt, uint64_t sq);
/* rank_before_seq: live ordinals whose arrival is below sq. */
uint32_t rank_before_seq(const struct rank *r, uint64_t sq);

/* rank_before_seq_from: rank_before_seq(r, sq) when no ordinal below lo is live and lo
 * (live) arrived at lo_sq: reads no arrival when sq is outside the live ones' range, else
 * searches from guess g (rank_seq_guess; any value is correct, a good one is fast). */
uint32_t rank_before_seq_from(const struct rank *r, uint64_t lo, uint64_t lo_sq, uint64_t g,
                              uint64_t sq);
/* rank_seq_guess: where between lo (arrived at lo_sq, lo_sq < sq) and next - 1 (arrived at
 * top_sq, sq <= top_sq) the first arrival not below sq is likely to be, by interpolation. */
uint64_t rank_seq_guess(const struct rank *r, uint64_t lo, uint64_t lo_sq, uint64_t sq);
/* rank_prefetch_before starts loading what rank_before(r, ord) and a search near ord read
 * (cap > 0): a caller with several groups to count issues them all first, so that the
 * groups' cache misses overlap. */
void rank_prefetch_before(const struct rank *r, uint64_t ord);

#endif
