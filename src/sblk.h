/* SPDX-License-Identifier: MIT */
/* sblk.h: shared, reference-counted blocks of bytes, and an output's references to them.
 *
 * A large message many peers are sent (the environment list: megabytes with hundreds of
 * thousands of environments) is encoded once into a block; every connection's output then
 * holds a reference (block, offset) instead of a copy. An output is its byte buffer (struct
 * buf: the bytes copied into it) plus a short queue of references (struct sblk_out),
 * interleaved in order with the copied bytes: each reference sits after `gap` pending bytes
 * of the buffer (counted from the previous reference, or from the buffer's head for the
 * first). Its pending stream is: gap[0] buffer bytes, block[0] from its offset, gap[1]
 * buffer bytes, block[1], ..., then the rest of the buffer. A reference is released once its
 * block is written to the end, or when the output is cleared (the connection closes).
 *
 * A block counts its length in *acct (a memory budget's counter) from its creation until its
 * last reference goes: once, whatever the number of outputs referring to it. No I/O here
 * but building the iovecs of a writev. */
#ifndef ING_SBLK_H
#define ING_SBLK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"

struct sblk {
    uint32_t refs;
    size_t len;
    uint8_t *data;  /* malloc()ed, owned */
    uint64_t *acct; /* counts len while the block lives; NULL: none */
};

/* sblk_new makes a block of the len bytes at data (malloc()ed), taking them over, with one
 * reference (the caller's). Returns NULL (data left to the caller) when out of memory. */
struct sblk *sblk_new(uint8_t *data, size_t len, uint64_t *acct);
/* sblk_ref takes one more reference to b; returns b. */
struct sblk *sblk_ref(struct sblk *b);
/* sblk_unref drops a reference; the last one frees the block. NULL does nothing. */
void sblk_unref(struct sblk *b);

#define SBLK_REFS 4 /* references an output holds at once (then its owner copies) */
/* The largest number of iovecs sblk_out_iov fills: each reference and the bytes before
 * it, and the buffer's tail. */
#define SBLK_IOV (2 * SBLK_REFS + 1)

struct sblk_ref {
    struct sblk *b;
    size_t gap; /* pending buffer bytes between the previous reference (or the head) and it */
    size_t off; /* bytes of b already written */
};

struct sblk_out {
    struct sblk_ref r[SBLK_REFS];
    unsigned n;
    size_t pending; /* bytes of the references not yet written */
};

void sblk_out_init(struct sblk_out *o);
/* sblk_out_clear releases every reference (the connection closes). */
void sblk_out_clear(struct sblk_out *o);
/* sblk_out_total returns the pending bytes of the whole output: buf's and o's. */
static inline size_t
sblk_out_total(const struct sblk_out *o, const struct buf *buf)
{
    return buf_len(buf) + o->pending;
}
/* sblk_out_sole returns the bytes of the blocks o alone refers to (one reference, o's):
 * what clearing o would free of them. */
size_t sblk_out_sole(const struct sblk_out *o);
/* sblk_out_add queues a reference to b (taking one) after the bytes pending in buf.
 * Returns 0, or -ENOSPC when o holds SBLK_REFS already (nothing taken). */
int sblk_out_add(struct sblk_out *o, const struct buf *buf, struct sblk *b);
/* sblk_out_iov fills iov (at least SBLK_IOV entries) with the first pending bytes of the
 * output, at most max of them. Returns the number of entries (0: nothing pending or max 0). */
int sblk_out_iov(const struct sblk_out *o, const struct buf *buf, struct iovec *iov, size_t max);
/* sblk_out_advance drops the first n pending bytes (written), releasing the references
 * written to their end. n must not exceed sblk_out_total. */
void sblk_out_advance(struct sblk_out *o, struct buf *buf, size_t n);
/* sblk_out_cut removes the n pending bytes at offset off of the output (as buf_cut does
 * for a buffer alone): each reference in the range must lie wholly in it, with nothing of
 * its block written, and is released. Returns 0, or -EINVAL (nothing changed) when the
 * range leaves the pending bytes or splits a reference. */
int sblk_out_cut(struct sblk_out *o, struct buf *buf, size_t off, size_t n);

#endif
