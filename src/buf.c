/* SPDX-License-Identifier: MIT */
/* buf.c: see buf.h. */
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void
buf_init(struct buf *b)
{
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

void
buf_fini(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

size_t
buf_grown_cap(const struct buf *b, size_t n)
{
    size_t len = b->wpos - b->rpos;
    if (b->cap - len >= n)
        return b->cap;
    if (n > SIZE_MAX / 4 - len)
        return SIZE_MAX;
    size_t need = len + n, cap = b->cap ? b->cap : 4096;
    while (cap < need)
        cap *= 2;
    return cap;
}

int
buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->wpos >= n)
        return 0;
    size_t len = b->wpos - b->rpos;
    /* Compact when the bytes already read make enough room and the move is cheap
     * relative to what it frees. */
    if (b->rpos > 0 && b->cap - len >= n) {
        memmove(b->data, b->data + b->rpos, len);
        b->rpos = 0;
        b->wpos = len;
        return 0;
    }
    size_t cap = buf_grown_cap(b, n);
    if (cap == SIZE_MAX)
        return -ENOMEM;
    if (b->rpos > 0) {
        memmove(b->data, b->data + b->rpos, len);
        b->rpos = 0;
        b->wpos = len;
    }
    uint8_t *d = realloc(b->data, cap);
    if (d == NULL)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

void
buf_produce(struct buf *b, size_t n)
{
    b->wpos += n;
}

void
buf_consume(struct buf *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}

void
buf_cut(struct buf *b, size_t off, size_t n)
{
    uint8_t *at = b->data + b->rpos + off;
    memmove(at, at + n, buf_len(b) - off - n);
    b->wpos -= n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
    return 0;
}

void
buf_shrink(struct buf *b, size_t keep)
{
    if (b->rpos == b->wpos && b->cap > keep)
        buf_fini(b);
}
