/* SPDX-License-Identifier: MIT */
/* sblk.c: see sblk.h. */
#include "sblk.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct sblk *
sblk_new(uint8_t *data, size_t len, uint64_t *acct)
{
    struct sblk *b = malloc(sizeof(*b));
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    b->data = data;
    b->acct = acct;
    if (acct != NULL)
        *acct += len;
    return b;
}

struct sblk *
sblk_ref(struct sblk *b)
{
    assert(b->refs > 0 && b->refs < UINT32_MAX);
    b->refs++;
    return b;
}

void
sblk_unref(struct sblk *b)
{
    if (b == NULL)
        return;
    assert(b->refs > 0);
    if (--b->refs > 0)
        return;
    if (b->acct != NULL)
        *b->acct -= b->len;
    free(b->data);
    free(b);
}

void
sblk_out_init(struct sblk_out *o)
{
    memset(o, 0, sizeof(*o));
}

void
sblk_out_clear(struct sblk_out *o)
{
    for (unsigned i = 0; i < o->n; i++)
        sblk_unref(o->r[i].b);
    sblk_out_init(o);
}

size_t
sblk_out_sole(const struct sblk_out *o)
{
    size_t n = 0;
    for (unsigned i = 0; i < o->n; i++)
        if (o->r[i].b->refs == 1)
            n += o->r[i].b->len;
    return n;
}

/* gaps_sum returns the buffer bytes pending before o's last reference. */
static size_t
gaps_sum(const struct sblk_out *o)
{
    size_t s = 0;
    for (unsigned i = 0; i < o->n; i++)
        s += o->r[i].gap;
    return s;
}

int
sblk_out_add(struct sblk_out *o, const struct buf *buf, struct sblk *b)
{
    if (o->n == SBLK_REFS)
        return -ENOSPC;
    size_t before = gaps_sum(o);
    assert(before <= buf_len(buf));
    o->r[o->n++] = (struct sblk_ref){sblk_ref(b), buf_len(buf) - before, 0};
    o->pending += b->len;
    return 0;
}

int
sblk_out_iov(const struct sblk_out *o, const struct buf *buf, struct iovec *iov, size_t max)
{
    int k = 0;
    const uint8_t *p = buf_head(buf);
    size_t bleft = buf_len(buf);
    for (unsigned i = 0; i <= o->n && max > 0; i++) {
        size_t g = i < o->n ? o->r[i].gap : bleft;
        g = g < max ? g : max;
        if (g > 0) {
            iov[k++] = (struct iovec){(void *)p, g};
            p += g;
            bleft -= g;
            max -= g;
        }
        if (i == o->n || max == 0)
            break;
        const struct sblk_ref *r = &o->r[i];
        size_t m = r->b->len - r->off;
        m = m < max ? m : max;
        if (m > 0) {
            iov[k++] = (struct iovec){r->b->data + r->off, m};
            max -= m;
        }
    }
    return k;
}

/* pop releases the first reference (written to its end). */
static void
pop(struct sblk_out *o)
{
    sblk_unref(o->r[0].b);
    memmove(&o->r[0], &o->r[1], (o->n - 1) * sizeof(o->r[0]));
    o->n--;
}

void
sblk_out_advance(struct sblk_out *o, struct buf *buf, size_t n)
{
    while (o->n > 0) {
        struct sblk_ref *r = &o->r[0];
        size_t g = n < r->gap ? n : r->gap;
        if (g > 0) {
            buf_consume(buf, g);
            r->gap -= g;
            n -= g;
        }
        if (r->gap > 0)
            return; /* n used up before the reference */
        size_t m = r->b->len - r->off;
        m = n < m ? n : m;
        r->off += m;
        o->pending -= m;
        n -= m;
        if (r->off < r->b->len)
            return;
        pop(o);
    }
    assert(n <= buf_len(buf));
    if (n > 0)
        buf_consume(buf, n);
}

/* overlap returns how many bytes of [a, a + an) lie in [b, b + bn). */
static size_t
overlap(size_t a, size_t an, size_t b, size_t bn)
{
    size_t lo = a > b ? a : b, hi = a + an < b + bn ? a + an : b + bn;
    return hi > lo ? hi - lo : 0;
}

int
sblk_out_cut(struct sblk_out *o, struct buf *buf, size_t off, size_t n)
{
    size_t total = sblk_out_total(o, buf);
    if (off > total || n > total - off)
        return -EINVAL;
    /* First pass: every reference met lies wholly in the range and is unwritten. */
    size_t pos = 0;
    for (unsigned i = 0; i < o->n; i++) {
        const struct sblk_ref *r = &o->r[i];
        pos += r->gap;
        size_t len = r->b->len - r->off, in = overlap(pos, len, off, n);
        if (in > 0 && (in != len || r->off != 0))
            return -EINVAL;
        pos += len;
    }
    /* Second pass: the buffer bytes cut are contiguous in the buffer; the gaps of the
     * references kept absorb what is left of the gaps before them. */
    size_t bpos = 0, bstart = 0, bn = 0, carry = 0;
    unsigned keep = 0;
    pos = 0;
    for (unsigned i = 0; i <= o->n; i++) {
        size_t g = i < o->n ? o->r[i].gap : buf_len(buf) - bpos;
        size_t cut = overlap(pos, g, off, n);
        if (cut > 0) {
            if (bn == 0)
                bstart = bpos + (off > pos ? off - pos : 0);
            bn += cut;
        }
        carry += g - cut;
        pos += g;
        bpos += g;
        if (i == o->n)
            break;
        struct sblk_ref r = o->r[i];
        size_t len = r.b->len - r.off;
        if (len > 0 && overlap(pos, len, off, n) == len) {
            o->pending -= len;
            sblk_unref(r.b);
        } else {
            r.gap = carry;
            carry = 0;
            o->r[keep++] = r;
        }
        pos += len;
    }
    o->n = keep;
    if (bn > 0)
        buf_cut(buf, bstart, bn);
    return 0;
}
