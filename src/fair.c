/* SPDX-License-Identifier: MIT */
/* fair.c: see fair.h. */
#include "fair.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "idtab.h"
#include "inginious/mp.h"

static const char *const mode_names[] = {"none", "launcher", "course", "user"};

int
fair_mode_parse(const char *s, enum fair_mode *mode)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
        if (strcmp(s, mode_names[i]) == 0) {
            *mode = (enum fair_mode)i;
            return 0;
        }
    return -EINVAL;
}

const char *
fair_mode_name(enum fair_mode mode)
{
    return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[mode] : "?";
}

int
fair_weight_parse(const char *s, struct fair_weight *w)
{
    const char *eq = strrchr(s, '=');
    if (eq == NULL || eq - s > FAIR_KEY_MAX || eq[1] < '0' || eq[1] > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long n = strtoul(eq + 1, &end, 10);
    if (errno != 0 || *end != '\0' || n < 1 || n > FAIR_MAX_WEIGHT)
        return -EINVAL;
    w->len = (uint32_t)(eq - s);
    memcpy(w->key, s, w->len);
    w->key[w->len] = '\0';
    w->weight = (uint32_t)n;
    return 0;
}

int
fair_init(struct fair *f, enum fair_mode mode, const struct fair_weight *w, size_t nw)
{
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    f->w = w;
    f->nw = nw;
    slab_init(&f->slab, sizeof(struct fair_key));
    pool_init(&f->pool);
    f->mask = 63;
    f->tab = calloc(f->mask + 1, sizeof(*f->tab));
    return f->tab != NULL ? 0 : -ENOMEM;
}

void
fair_fini(struct fair *f)
{
    if (f->tab != NULL)
        for (size_t i = 0; i <= f->mask; i++)
            for (struct fair_key *k = f->tab[i]; k != NULL; k = k->hnext)
                rank_fini(&k->rk, &f->pool);
    for (struct fair_key *k = f->spare, *next; k != NULL; k = next) {
        next = k->hnext;
        rank_fini(&k->rk, &f->pool);
        slab_free(&f->slab, k); /* each its own allocation in the sanitizer build */
    }
    f->spare = NULL;
    f->nspare = 0;
    free(f->tab);
    f->tab = NULL;
    slab_fini(&f->slab);
    pool_fini(&f->pool);
}

void
fair_key_of(enum fair_mode mode, const struct ing_client_new_job *m, struct ing_view *key)
{
    key->p = "";
    key->len = 0;
    switch (mode) {
    case FAIR_LAUNCHER:
        *key = m->launcher;
        break;
    case FAIR_COURSE:
        if (m->job.course_id.p != NULL)
            *key = m->job.course_id;
        break;
    case FAIR_USER: {
        const uint8_t *v;
        size_t vlen;
        struct ing_mp_obj o;
        if (ing_mp_map_get((const uint8_t *)m->job.inputdata.p, m->job.inputdata.len,
                           "@username", 9, &v, &vlen) == 0 &&
            ing_mp_read(&v, v + vlen, &o) == 0 && o.type == ING_MP_STR) {
            key->p = (const char *)o.v.s.p;
            key->len = o.v.s.len;
        }
        break;
    }
    case FAIR_NONE:
        break;
    }
}

/* fair_get clears a record in two parts around its rank, up to its key (the last field). */
_Static_assert(offsetof(struct fair_key, brk) == offsetof(struct fair_key, rk) + sizeof(struct rank) &&
                   sizeof(struct fair_key) - offsetof(struct fair_key, key) < FAIR_KEY_MAX + 8,
               "struct fair_key: rk then brk, key last");

static uint64_t
key_hash(const void *scope, int64_t prio, const char *key, size_t len)
{
    uint64_t h = idtab_hash(idtab_hash_seed() ^ (uint64_t)prio, key, len);
    uint64_t s = (uint64_t)(uintptr_t)scope;
    return (h ^ (s * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
}

static uint32_t
weight_of(const struct fair *f, const char *key, size_t len)
{
    for (size_t i = 0; i < f->nw; i++)
        if (f->w[i].len == len && memcmp(f->w[i].key, key, len) == 0)
            return f->w[i].weight;
    return 1;
}

static void
grow(struct fair *f)
{
    size_t nmask = f->mask * 2 + 1;
    struct fair_key **nt = calloc(nmask + 1, sizeof(*nt));
    if (nt == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i <= f->mask; i++)
        for (struct fair_key *k = f->tab[i], *next; k != NULL; k = next) {
            next = k->hnext;
            k->hnext = nt[k->hash & nmask];
            nt[k->hash & nmask] = k;
        }
    free(f->tab);
    f->tab = nt;
    f->mask = nmask;
}

static void
idle_unlink(struct fair *f, struct fair_key *k)
{
    k->idle = false;
    f->nidle--;
}

/* drop unlinks record k (no job holds it) from its scope's list *list and the table and
 * frees it, or keeps it as a spare with its rank arrays when they are small (its rank is
 * empty: every bit and count zero, as rank_reserve leaves a new ring). */
static void
drop(struct fair *f, struct fair_key *k, struct fair_key **list)
{
    if (k->idle)
        idle_unlink(f, k);
    if (k->sprev != NULL)
        k->sprev->snext = k->snext;
    else
        *list = k->snext;
    if (k->snext != NULL)
        k->snext->sprev = k->sprev;
    struct fair_key **pp = &f->tab[k->hash & f->mask];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    f->n--;
    if (f->nspare < FAIR_SPARE_MAX && k->rk.cap <= RANK_MIN_CAP) {
        k->hnext = f->spare;
        f->spare = k;
        f->nspare++;
        return;
    }
    rank_fini(&k->rk, &f->pool);
    slab_free(&f->slab, k);
}

struct fair_key *
fair_use(struct fair *f, struct fair_key *k)
{
    if (!k->idle)
        return k;
    idle_unlink(f, k);
    k->ftag = 0; /* as a new record: its next job starts at the virtual time */
    k->brk_ok = false;
    return k;
}

struct fair_key *
fair_get(struct fair *f, void *scope, int64_t prio, const char *key, size_t len,
         struct fair_key **list)
{
    uint64_t h = key_hash(scope, prio, key, len);
    size_t kl = len < FAIR_KEY_MAX ? len : FAIR_KEY_MAX;
    for (struct fair_key *k = f->tab[h & f->mask]; k != NULL; k = k->hnext)
        if (k->hash == h && k->scope == scope && k->prio == prio && k->klen == len &&
            memcmp(k->key, key, kl) == 0)
            return fair_use(f, k);
    struct fair_key *k = f->spare;
    if (k != NULL) { /* its empty rank (and arrays) kept: what a new record's would be */
        f->spare = k->hnext;
        f->nspare--;
    } else {
        if ((k = slab_alloc(&f->slab)) == NULL)
            return NULL;
        rank_init(&k->rk, f->mode != FAIR_NONE);
    }
    /* All zero but the rank and the key's bytes past its length (never read): two fixed
     * clears, not a string store over the whole record. */
    memset(k, 0, offsetof(struct fair_key, rk));
    memset(&k->brk, 0, offsetof(struct fair_key, key) - offsetof(struct fair_key, brk));
    k->scope = scope;
    k->prio = prio;
    k->hash = h;
    k->klen = (uint32_t)len;
    memcpy(k->key, key, kl);
    k->inc = FAIR_QUANTUM / weight_of(f, key, len);
    k->sprev = NULL;
    k->snext = *list;
    if (*list != NULL)
        (*list)->sprev = k;
    *list = k;
    k->hnext = f->tab[h & f->mask];
    f->tab[h & f->mask] = k;
    if (++f->n > (f->mask + 1) / 4) /* short chains: a walk reads cold records */
        grow(f);
    return k;
}

void
fair_put(struct fair *f, struct fair_key *k, struct fair_key **list)
{
    if (--k->njobs > 0)
        return;
    if (f->nidle >= FAIR_IDLE_MAX) {
        drop(f, k, list);
        return;
    }
    k->idle = true;
    f->nidle++;
}

void
fair_drop_scope(struct fair *f, struct fair_key **list)
{
    while (*list != NULL)
        drop(f, *list, list);
}

void
fair_foreach(const struct fair *f, fair_fn *fn, void *arg)
{
    if (f->tab == NULL)
        return;
    for (size_t i = 0; i <= f->mask; i++)
        for (const struct fair_key *k = f->tab[i]; k != NULL; k = k->hnext)
            if (!k->idle)
                fn(arg, k->scope, k->prio, k->key, k->klen < FAIR_KEY_MAX ? k->klen : FAIR_KEY_MAX,
                   k->nwait);
}

/* ---- fair_q: a ring and a heap of keys ------------------------------------------------- */

int
fair_q_reserve(struct fair_q *q)
{
    /* Room for every key in the heap: a key leaving the ring for the heap (fair_q_raised,
     * on the dispatch path) needs no allocation. */
    if (q->n + q->rn < q->cap)
        return 0;
    uint32_t cap = q->cap ? q->cap * 2 : 8;
    while (cap <= q->n + q->rn)
        cap *= 2;
    struct fair_ent *h = realloc(q->heap, cap * sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    q->heap = h;
    q->cap = cap;
    return 0;
}

void
fair_q_fini(struct fair_q *q)
{
    free(q->heap);
    memset(q, 0, sizeof(*q));
}

static inline void
ent_of(struct fair_ent *x, struct fair_key *k)
{
    x->prio = k->prio;
    x->vt = k->qvt;
    x->seq = k->qseq;
    x->k = k;
}

static inline void
heap_place(struct fair_q *q, uint32_t i, const struct fair_ent *x)
{
    q->heap[i] = *x;
    x->k->hidx = i + 1;
}

static void
heap_up(struct fair_q *q, uint32_t i)
{
    struct fair_ent x = q->heap[i];
    while (i > 0 && fair_ent_less(&x, &q->heap[(i - 1) / 2])) {
        heap_place(q, i, &q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_place(q, i, &x);
}

/* ent_less_nb is fair_ent_less without a branch (every comparison evaluated, combined
 * bitwise): which child of a sift is smaller is unpredictable, a conditional move is not. */
static inline bool
ent_less_nb(const struct fair_ent *a, const struct fair_ent *b)
{
    return (a->prio < b->prio) |
           ((a->prio == b->prio) & ((a->vt < b->vt) | ((a->vt == b->vt) & (a->seq < b->seq))));
}

/* heap_down restores the heap below i, whose entry's key grew. Bottom-up: the hole at i
 * goes down along the smaller children to the bottom (one comparison per level, no branch
 * on the keys), then the entry rises from there (a key just served usually has the largest
 * tag and rises not at all). */
static void
heap_down(struct fair_q *q, uint32_t i)
{
    struct fair_ent x = q->heap[i];
    uint32_t n = q->n, top = i;
    for (uint32_t l = 2 * i + 1; l < n; l = 2 * i + 1) {
        uint32_t m = l + (uint32_t)(l + 1 < n && ent_less_nb(&q->heap[l + 1], &q->heap[l]));
        heap_place(q, i, &q->heap[m]);
        i = m;
    }
    while (i > top && fair_ent_less(&x, &q->heap[(i - 1) / 2])) {
        heap_place(q, i, &q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_place(q, i, &x);
}

static void
heap_del(struct fair_q *q, struct fair_key *k)
{
    uint32_t i = k->hidx - 1;
    k->hidx = 0;
    if (i == --q->n)
        return;
    struct fair_key *m = q->heap[q->n].k;
    heap_place(q, i, &q->heap[q->n]);
    heap_up(q, i);
    if (m->hidx == i + 1)
        heap_down(q, i);
}

static void
ring_unlink(struct fair_q *q, struct fair_key *k)
{
    if (k->rprev != NULL)
        k->rprev->rnext = k->rnext;
    else
        q->rhead = k->rnext;
    if (k->rnext != NULL)
        k->rnext->rprev = k->rprev;
    else
        q->rtail = k->rprev;
    k->rprev = k->rnext = NULL;
    k->hidx = 0;
    q->rn--;
}

/* place puts k (in neither part) at the ring's tail when it does not sort before it, else
 * in the heap. */
static void
place(struct fair_q *q, struct fair_key *k)
{
    struct fair_key *t = q->rtail;
    if (t == NULL || !fair_rec_less(k, t)) {
        k->rprev = t;
        k->rnext = NULL;
        if (t != NULL)
            t->rnext = k;
        else
            q->rhead = k;
        q->rtail = k;
        k->hidx = FAIR_IN_RING;
        q->rn++;
        return;
    }
    struct fair_ent x;
    ent_of(&x, k);
    heap_place(q, q->n++, &x);
    heap_up(q, q->n - 1);
}

void
fair_q_lowered(struct fair_q *q, struct fair_key *k)
{
    if (k->hidx == 0) {
        place(q, k);
    } else if (k->hidx == FAIR_IN_RING) {
        if (k->rprev != NULL && fair_rec_less(k, k->rprev)) { /* out of order: moves */
            ring_unlink(q, k);
            place(q, k);
        }
    } else {
        struct fair_ent x;
        ent_of(&x, k);
        heap_place(q, k->hidx - 1, &x);
        heap_up(q, k->hidx - 1);
    }
}

void
fair_q_raised(struct fair_q *q, struct fair_key *k)
{
    if (k->hidx == FAIR_IN_RING) {
        if (k->rnext != NULL && fair_rec_less(k->rnext, k)) {
            ring_unlink(q, k);
            place(q, k);
        }
    } else if (q->rtail == NULL || !fair_rec_less(k, q->rtail)) {
        heap_del(q, k); /* it goes to the ring's tail */
        place(q, k);
    } else {
        uint32_t i = k->hidx - 1;
        q->heap[i].vt = k->qvt;
        q->heap[i].seq = k->qseq;
        heap_down(q, i);
    }
}

void
fair_q_remove(struct fair_q *q, struct fair_key *k)
{
    if (k->hidx == FAIR_IN_RING)
        ring_unlink(q, k);
    else
        heap_del(q, k);
}

int
fair_q_check(const struct fair_q *q, size_t *nkeys)
{
    for (uint32_t x = 0; x < q->n; x++) {
        const struct fair_ent *h = &q->heap[x];
        const struct fair_key *k = h->k;
        if (k->hidx != x + 1 || h->prio != k->prio || h->vt != k->qvt || h->seq != k->qseq ||
            (x > 0 && fair_ent_less(h, &q->heap[(x - 1) / 2])))
            return -EPROTO;
    }
    uint32_t rn = 0;
    const struct fair_key *prev = NULL;
    for (const struct fair_key *k = q->rhead; k != NULL; prev = k, k = k->rnext) {
        if (++rn > q->rn || k->hidx != FAIR_IN_RING || k->rprev != prev ||
            (prev != NULL && !fair_rec_less(prev, k)))
            return -EPROTO;
    }
    if (rn != q->rn || q->rtail != prev || (rn + q->n > 0 && rn + q->n > q->cap))
        return -EPROTO;
    *nkeys = (size_t)q->n + rn;
    return 0;
}
