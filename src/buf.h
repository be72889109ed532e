/* SPDX-License-Identifier: MIT */
/* buf.h: a growable byte buffer with a read and a write position. No I/O, no protocol.
 * Bytes [rpos, wpos) are pending. Views into the data are invalidated by buf_reserve
 * (which may move or compact) and by buf_shrink. */
#ifndef ING_BUF_H
#define ING_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t cap;
    size_t rpos;
    size_t wpos;
};

static inline size_t
buf_len(const struct buf *b)
{
    return b->wpos - b->rpos;
}

static inline uint8_t *
buf_head(const struct buf *b)
{
    return b->data + b->rpos;
}

static inline uint8_t *
buf_tail(const struct buf *b)
{
    return b->data + b->wpos;
}

static inline size_t
buf_room(const struct buf *b)
{
    return b->cap - b->wpos;
}

void buf_init(struct buf *b);
void buf_fini(struct buf *b);
/* buf_reserve makes at least n bytes writable at the tail: compacts when that is enough,
 * else grows (doubling). Returns 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
/* buf_grown_cap returns the capacity buf_reserve(b, n) would leave: b->cap when it needs
 * no more memory (room or compaction), else the doubled size; SIZE_MAX if too large. */
size_t buf_grown_cap(const struct buf *b, size_t n);
/* buf_produce marks n bytes written at the tail. */
void buf_produce(struct buf *b, size_t n);
/* buf_consume drops n bytes from the head; an emptied buffer rewinds to offset 0. */
void buf_consume(struct buf *b, size_t n);
/* buf_cut removes n pending bytes at offset off from the head (off + n <= buf_len). */
void buf_cut(struct buf *b, size_t off, size_t n);
/* buf_append copies n bytes to the tail. Returns 0 or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* buf_shrink releases the memory of an empty buffer larger than keep bytes. */
void buf_shrink(struct buf *b, size_t keep);

#endif
