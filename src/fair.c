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
