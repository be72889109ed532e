/* SPDX-License-Identifier: MIT */
/* test_sblk.c: shared blocks and an output's references to them (the environment list every
 * client's output writes from): the stream in order across partial writes at every offset,
 * EAGAIN on a real socket, replacement of an unsent block, close with references pending,
 * and the memory counted once per block. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "sblk.h"

/* A block of n bytes, each one (seed + i) & 0xff, counted in *acct. */
static struct sblk *
mkblk(size_t n, uint8_t seed, uint64_t *acct)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i);
    struct sblk *b = sblk_new(p, n, acct);
    assert_non_null(b);
    return b;
}

/* release_all drops the test's references to the n blocks b[] and checks that their memory
 * is no longer counted (every output let go of them). */
static void
release_all(uint64_t *acct, struct sblk **b, int n)
{
    for (int i = 0; i < n; i++)
        sblk_unref(b[i]);
    assert_int_equal(*acct, 0);
}

/* The expected stream, built beside the output: what the output must write, in order. */
struct want {
    uint8_t *p;
    size_t n, cap;
};

static void
want_add(struct want *w, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2;
        w->p = realloc(w->p, w->cap);
        assert_non_null(w->p);
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

/* A test output: its buffer, its references, the stream expected. */
struct tout {
    struct buf b;
    struct sblk_out o;
    struct want w;
};

static void
tout_init(struct tout *t)
{
    buf_init(&t->b);
    sblk_out_init(&t->o);
    memset(&t->w, 0, sizeof(t->w));
}

static void
tout_fini(struct tout *t)
{
    sblk_out_clear(&t->o);
    buf_fini(&t->b);
    free(t->w.p);
}

static void
tout_bytes(struct tout *t, const char *s)
{
    assert_int_equal(buf_append(&t->b, s, strlen(s)), 0);
    want_add(&t->w, s, strlen(s));
}

static void
tout_ref(struct tout *t, struct sblk *b)
{
    assert_int_equal(sblk_out_add(&t->o, &t->b, b), 0);
    want_add(&t->w, b->data, b->len);
}

/* tout_write "writes" at most max bytes (the iovecs copied to sink at *at) and drops them
 * from the output. Returns the bytes written. */
static size_t
tout_write(struct tout *t, size_t max, uint8_t *sink, size_t *at)
{
    struct iovec iov[SBLK_IOV];
    int k = sblk_out_iov(&t->o, &t->b, iov, max);
    size_t n = 0;
    assert_true(k >= 0 && k <= SBLK_IOV);
    for (int i = 0; i < k; i++) {
        memcpy(sink + *at + n, iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    size_t total = sblk_out_total(&t->o, &t->b);
    assert_int_equal(n, max < total ? max : total);
    sblk_out_advance(&t->o, &t->b, n);
    *at += n;
    return n;
}

/* Bytes, a block, bytes, a block, bytes: written with a first write of k bytes for every k,
 * then writes of 1..7 bytes (and more bytes and a third block queued after the first write),
 * the stream comes out whole and in order, and each reference goes once written. */
static void
test_sblk_partial_writes_every_offset(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *x = mkblk(300, 1, &acct), *y = mkblk(200, 77, &acct), *z = mkblk(50, 9, &acct);
    assert_int_equal(acct, 550);
    struct tout t0;
    tout_init(&t0);
    tout_bytes(&t0, "header-one");
    tout_ref(&t0, x);
    tout_bytes(&t0, "between");
    tout_ref(&t0, y);
    tout_bytes(&t0, "tail!");
    size_t total = t0.w.n;
    assert_int_equal(sblk_out_total(&t0.o, &t0.b), total);
    tout_fini(&t0);
    assert_int_equal(x->refs, 1);
    for (size_t k = 0; k <= total; k++) {
        struct tout t;
        tout_init(&t);
        tout_bytes(&t, "header-one");
        tout_ref(&t, x);
        tout_bytes(&t, "between");
        tout_ref(&t, y);
        tout_bytes(&t, "tail!");
        uint8_t *sink = malloc(total + 64 + 50);
        assert_non_null(sink);
        size_t at = 0;
        assert_int_equal(tout_write(&t, k, sink, &at), k);
        assert_int_equal(x->refs, k >= 10 + 300 ? 1 : 2); /* released once written */
        /* More output queued after a partial write: it comes after the rest. */
        tout_bytes(&t, "after");
        tout_ref(&t, z);
        tout_bytes(&t, "end");
        for (size_t step = 1; sblk_out_total(&t.o, &t.b) > 0; step = step % 7 + 1)
            tout_write(&t, step, sink, &at);
        assert_int_equal(at, t.w.n);
        assert_memory_equal(sink, t.w.p, t.w.n);
        assert_int_equal(t.o.n, 0);
        assert_int_equal(t.o.pending, 0);
        assert_int_equal(buf_len(&t.b), 0);
        assert_int_equal(x->refs, 1);
        assert_int_equal(y->refs, 1);
        assert_int_equal(z->refs, 1);
        free(sink);
        tout_fini(&t);
    }
    release_all(&acct, (struct sblk *[]){x, y, z}, 3);
}

/* A block first in the output, then bytes appended while it is written: the buffer grows and
 * compacts under the reference without moving it in the stream. */
static void
test_sblk_buffer_moves_under_reference(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *x = mkblk(5000, 3, &acct);
    struct tout t;
    tout_init(&t);
    tout_ref(&t, x);
    uint8_t *sink = malloc(5000 + 100 * 64);
    assert_non_null(sink);
    size_t at = 0;
    char line[64];
    for (int i = 0; i < 100; i++) {
        snprintf(line, sizeof(line), "line %d of the bytes behind the block\n", i);
        tout_bytes(&t, line);
        tout_write(&t, 37, sink, &at);
    }
    while (sblk_out_total(&t.o, &t.b) > 0)
        tout_write(&t, 4096, sink, &at);
    assert_int_equal(at, t.w.n);
    assert_memory_equal(sink, t.w.p, t.w.n);
    free(sink);
    tout_fini(&t);
    sblk_unref(x);
    assert_int_equal(acct, 0);
}

/* Through a real non-blocking socket with small buffers: writev stops at EAGAIN anywhere in
 * a block and resumes from there once the peer read; the peer gets the stream whole. */
static void
test_sblk_socket_eagain(void **state)
{
    (void)state;
    int sv[2], small = 4096;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    uint64_t acct = 0;
    struct sblk *x = mkblk(200000, 5, &acct), *y = mkblk(70000, 11, &acct);
    struct tout t;
    tout_init(&t);
    tout_bytes(&t, "a frame header");
    tout_ref(&t, x);
    tout_bytes(&t, "the next frame");
    tout_ref(&t, y);
    tout_bytes(&t, "and a last one");
    uint8_t *got = malloc(t.w.n);
    assert_non_null(got);
    size_t have = 0;
    int eagains = 0;
    for (int round = 0; round < 100000 && sblk_out_total(&t.o, &t.b) > 0; round++) {
        struct iovec iov[SBLK_IOV];
        int k = sblk_out_iov(&t.o, &t.b, iov, 65536);
        ssize_t n = writev(sv[0], iov, k);
        if (n > 0) {
            sblk_out_advance(&t.o, &t.b, (size_t)n);
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        eagains++;
        ssize_t r = read(sv[1], got + have, t.w.n - have); /* the peer reads some */
        assert_true(r > 0);
        have += (size_t)r;
    }
    assert_int_equal(sblk_out_total(&t.o, &t.b), 0);
    assert_true(eagains > 10); /* the blocks were cut by EAGAIN many times */
    assert_int_equal(x->refs, 1);
    while (have < t.w.n) {
        ssize_t r = read(sv[1], got + have, t.w.n - have);
        assert_true(r > 0);
        have += (size_t)r;
    }
    assert_memory_equal(got, t.w.p, t.w.n);
    free(got);
    tout_fini(&t);
    release_all(&acct, (struct sblk *[]){x, y}, 2);
    close(sv[0]);
    close(sv[1]);
}

/* sblk_out_cut: a list (header bytes and its block) still unsent is replaced by a newer one
 * at the end; the bytes around it close up; a reference partly written, or a range that
 * splits one, is refused with nothing changed. */
static void
test_sblk_cut_unsent_list(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *old = mkblk(400, 2, &acct), *other = mkblk(100, 40, &acct);
    struct tout t;
    tout_init(&t);
    tout_bytes(&t, "first");    /* 5 */
    tout_bytes(&t, "HDR-OLD");  /* 7: the old list's header */
    tout_ref(&t, old);          /* 400 */
    tout_bytes(&t, "middle");   /* 6 */
    tout_ref(&t, other);        /* 100 */
    tout_bytes(&t, "last");     /* 4 */
    size_t total = sblk_out_total(&t.o, &t.b);
    /* Splitting a reference, or out of range: refused. */
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 5, 7 + 200), -EINVAL);
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 12 + 1, 400), -EINVAL);
    assert_int_equal(sblk_out_cut(&t.o, &t.b, total - 2, 3), -EINVAL);
    assert_int_equal(sblk_out_total(&t.o, &t.b), total);
    assert_int_equal(old->refs, 2);
    /* The old list (header and block) goes: its reference released. */
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 5, 7 + 400), 0);
    assert_int_equal(old->refs, 1);
    assert_int_equal(t.o.n, 1);
    assert_int_equal(sblk_out_total(&t.o, &t.b), total - 407);
    /* The newer list at the end. */
    struct sblk *newer = mkblk(300, 90, &acct);
    assert_int_equal(buf_append(&t.b, "HDR-NEW", 7), 0);
    assert_int_equal(sblk_out_add(&t.o, &t.b, newer), 0);
    struct want w = {0};
    want_add(&w, "first", 5);
    want_add(&w, "middle", 6);
    want_add(&w, other->data, 100);
    want_add(&w, "last", 4);
    want_add(&w, "HDR-NEW", 7);
    want_add(&w, newer->data, 300);
    free(t.w.p);
    t.w = w;
    /* Bytes only, between references: cut too ("middle"). */
    uint8_t *sink = malloc(t.w.n);
    assert_non_null(sink);
    size_t at = 0;
    tout_write(&t, 3, sink, &at); /* "fir" */
    /* A partly written block cannot go; a written prefix is out of range. */
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 2 + 6, 100), 0); /* other, unwritten: goes */
    assert_int_equal(other->refs, 1);
    memmove(t.w.p + 11, t.w.p + 111, t.w.n - 111);
    t.w.n -= 100;
    tout_write(&t, 2 + 6 + 4 + 7 + 10, sink, &at); /* into newer */
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 0, 290), -EINVAL);
    while (sblk_out_total(&t.o, &t.b) > 0)
        tout_write(&t, 64, sink, &at);
    assert_int_equal(at, t.w.n);
    assert_memory_equal(sink, t.w.p, t.w.n);
    free(sink);
    tout_fini(&t);
    sblk_unref(old);
    sblk_unref(other);
    sblk_unref(newer);
    assert_int_equal(acct, 0);
}

/* A list between two others goes with the bytes before it; the gaps of the references kept
 * on both sides stay right (the stream written is the rest, in order). */
static void
test_sblk_cut_between_references(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *x = mkblk(30, 1, &acct), *y = mkblk(40, 2, &acct), *z = mkblk(50, 3, &acct);
    struct tout t;
    tout_init(&t);
    tout_bytes(&t, "a");
    tout_ref(&t, x);
    tout_bytes(&t, "bb");
    tout_ref(&t, y);
    tout_bytes(&t, "ccc");
    tout_ref(&t, z);
    tout_bytes(&t, "d");
    assert_int_equal(sblk_out_cut(&t.o, &t.b, 1 + 30, 2 + 40), 0); /* "bb" and y */
    assert_int_equal(y->refs, 1);
    memmove(t.w.p + 31, t.w.p + 73, t.w.n - 73);
    t.w.n -= 42;
    assert_int_equal(t.o.r[0].gap, 1);
    assert_int_equal(t.o.r[1].gap, 3);
    uint8_t sink[128];
    size_t at = 0;
    while (sblk_out_total(&t.o, &t.b) > 0)
        tout_write(&t, 5, sink, &at);
    assert_int_equal(at, t.w.n);
    assert_memory_equal(sink, t.w.p, t.w.n);
    tout_fini(&t);
    release_all(&acct, (struct sblk *[]){x, y, z}, 3);
}

/* Memory: a block counts its length once however many outputs refer to it; a replaced list
 * still referred to stays counted until its last reference (a closed connection's output
 * cleared with references pending) goes. */
static void
test_sblk_memory_counted_once(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *list = mkblk(1000, 0, &acct);
    struct tout t[5];
    for (int i = 0; i < 5; i++) {
        tout_init(&t[i]);
        tout_bytes(&t[i], "hdr");
        tout_ref(&t[i], list);
    }
    assert_int_equal(acct, 1000);
    assert_int_equal(list->refs, 6);
    /* The owner replaces it: the old one lives on in the outputs. */
    struct sblk *list2 = mkblk(800, 1, &acct);
    sblk_unref(list);
    assert_int_equal(acct, 1800);
    /* Outputs close with the reference pending (three) or write it (two). */
    for (int i = 0; i < 3; i++)
        tout_fini(&t[i]);
    assert_int_equal(acct, 1800);
    for (int i = 3; i < 5; i++) {
        uint8_t sink[1003];
        size_t at = 0;
        tout_write(&t[i], sizeof(sink), sink, &at);
        assert_memory_equal(sink, t[i].w.p, sizeof(sink));
    }
    assert_int_equal(acct, 800); /* the last reference went with the last write */
    for (int i = 3; i < 5; i++)
        tout_fini(&t[i]);
    sblk_unref(list2);
    assert_int_equal(acct, 0);
    /* A block without a counter. */
    sblk_unref(mkblk(10, 0, NULL));
}

/* An output holds SBLK_REFS references at most (the caller copies then); an empty block
 * goes at once when reached. */
static void
test_sblk_refs_bounded(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *b = mkblk(16, 0, &acct), *e = mkblk(0, 0, &acct);
    struct tout t;
    tout_init(&t);
    tout_ref(&t, e);
    for (int i = 1; i < SBLK_REFS; i++)
        tout_ref(&t, b);
    assert_int_equal(sblk_out_add(&t.o, &t.b, b), -ENOSPC);
    assert_int_equal(b->refs, SBLK_REFS);
    uint8_t sink[16 * SBLK_REFS];
    size_t at = 0;
    tout_write(&t, sizeof(sink), sink, &at);
    assert_int_equal(at, t.w.n);
    assert_memory_equal(sink, t.w.p, t.w.n);
    assert_int_equal(t.o.n, 0);
    assert_int_equal(e->refs, 1);
    struct iovec iov[SBLK_IOV];
    assert_int_equal(sblk_out_iov(&t.o, &t.b, iov, 100), 0); /* nothing pending */
    tout_fini(&t);
    sblk_unref(b);
    sblk_unref(e);
    assert_int_equal(acct, 0);
}

/* sblk_out_sole counts the blocks an output alone refers to: what clearing it frees (the
 * memory budget's relief weighs peers by it). */
static void
test_sblk_sole(void **state)
{
    (void)state;
    uint64_t acct = 0;
    struct sblk *cur = mkblk(100, 0, &acct), *old = mkblk(40, 1, &acct);
    struct sblk_out o;
    struct buf b;
    sblk_out_init(&o);
    buf_init(&b);
    assert_int_equal(sblk_out_sole(&o), 0);
    assert_int_equal(sblk_out_add(&o, &b, old), 0);
    assert_int_equal(sblk_out_add(&o, &b, cur), 0);
    assert_int_equal(sblk_out_sole(&o), 0); /* both held elsewhere too */
    sblk_unref(old);                        /* replaced: o alone holds it now */
    assert_int_equal(sblk_out_sole(&o), 40);
    sblk_out_clear(&o);
    assert_int_equal(acct, 100); /* the replaced one freed with o */
    sblk_unref(cur);
    assert_int_equal(acct, 0);
    buf_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sblk_partial_writes_every_offset),
        cmocka_unit_test(test_sblk_buffer_moves_under_reference),
        cmocka_unit_test(test_sblk_socket_eagain),
        cmocka_unit_test(test_sblk_cut_unsent_list),
        cmocka_unit_test(test_sblk_cut_between_references),
        cmocka_unit_test(test_sblk_memory_counted_once),
        cmocka_unit_test(test_sblk_refs_bounded),
        cmocka_unit_test(test_sblk_sole),
    };
    return cmocka_run_group_tests_name("sblk", tests, NULL, NULL);
}
