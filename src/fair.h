/* SPDX-License-Identifier: MIT */
/* fair.h: fair share between the keys of an environment's waiting jobs (proto.md 7.4).
 *
 * Start-time fair queueing. Each (environment, priority, key) that has jobs has a record
 * with the virtual finish tag of its last job; each environment has a virtual time (the
 * start tag of the last job it dispatched). A new job of key k gets the start tag
 *     S = max(V(env), F(k)),  then F(k) = S + FAIR_QUANTUM / weight(k)
 * and the scheduler orders an environment's jobs of one priority by (S, arrival). A key
 * with many jobs waiting has its tags spread far ahead; a key that arrives later starts at
 * the environment's virtual time, so it is served at the next free slot whatever the other
 * keys hold. A record is in use while its key has jobs in the environment at that priority
 * (waiting or running); then it stays, idle, with its arrays (while fewer than
 * FAIR_IDLE_MAX are: past that it is freed), so that a key that comes back takes it again as
 * if new (its next job starts at the virtual time) without making one. Freeing the record
 * just used rather than the least recently used one keeps the work hot; and a freed record
 * (up to FAIR_SPARE_MAX) is kept with its empty rank arrays for the next new key, which then
 * takes it without clearing or allocating anything (a stream of jobs of ever new keys, one
 * at a time, cost a record and its arrays made and freed per job). Records are slab
 * objects, so a key seen before costs no allocation. The backend keeps each record's waiting jobs in a list in their order (the
 * tags of one record only grow), and only the records' first jobs in a heap per
 * environment: a dispatch costs O(log keys), not O(log jobs). */
#ifndef ING_FAIR_H
#define ING_FAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inginious/proto.h"
#include "rank.h"
#include "slab.h"

enum fair_mode {
    FAIR_NONE = 0, /* INGInious' order: priority, then arrival */
    FAIR_LAUNCHER,
    FAIR_COURSE,
    FAIR_USER,
};

#define FAIR_QUANTUM (1ull << 20) /* virtual time of one job of weight 1 */
#define FAIR_MAX_WEIGHT 1000
#define FAIR_KEY_MAX 64 /* key bytes kept (and compared) in a record; longer keys are told
                         * apart by their full hash and length too */
#define FAIR_MAX_WEIGHTS 256
#define FAIR_SPARE_MAX 64 /* records freed past FAIR_IDLE_MAX kept for the next new key, with
                           * their (empty) rank arrays if small */
#define FAIR_IDLE_MAX 256 /* idle records kept (all scopes together): more would make the
                           * table and the records a lookup reads larger than the caches */

struct fair_weight {
    char key[FAIR_KEY_MAX + 1];
    uint32_t len;
    uint32_t weight;
};

struct job;

struct fair_key {
    struct fair_key *hnext;
    struct fair_key *sprev, *snext; /* the scope's records */
    void *scope;       /* the environment */
    int64_t prio;
    uint64_t hash;     /* of scope, prio and the full key */
    uint64_t ftag;     /* virtual finish tag of its last job */
    uint64_t inc;      /* FAIR_QUANTUM / weight */
    uint32_t njobs;    /* jobs of the key held in the scope (waiting or running) */
    uint32_t nwait;    /* of which waiting */
    uint32_t klen;     /* full key length */
    uint32_t hidx;     /* position + 1 in the environment's heap of records, 0 = absent */
    /* The backend's (fair share): the waiting jobs in order (their ordinals' order), and the
     * first one's (tag, arrival) and ordinal (the heap compares records without reading
     * cold jobs). */
    struct job *qhead, *qtail;
    uint64_t qvt, qseq, qord;
    struct rank rk; /* the waiting jobs' ordinals (their position, proto.md 7.4) */
    /* The backend's (fair share): from ordinal brk on, every live ordinal o has the tag
     * brk_vt + (o - brk) * inc (pushed while the key was backlogged), so a position is
     * found without a search when brk_ok. */
    uint64_t brk, brk_vt, brk_sq;
    bool brk_ok;
    bool idle; /* no job (counted in nidle) */
    char key[FAIR_KEY_MAX];
};

struct fair {
    enum fair_mode mode;
    struct fair_key **tab;
    size_t mask, n;                 /* n: records, idle ones included */
    size_t nidle;                   /* idle records */
    struct fair_key *spare;         /* records out of the table, linked by hnext: a new key
                                     * takes one (its rank arrays too) before the slab's */
    size_t nspare;
    struct slab slab;
    struct pool pool; /* the records' rank arrays */
    const struct fair_weight *w; /* --fair-weight, nw of them */
    size_t nw;
};

/* fair_mode_parse reads none|launcher|course|user. Returns 0 or -EINVAL. */
int fair_mode_parse(const char *s, enum fair_mode *mode);
const char *fair_mode_name(enum fair_mode mode);
/* fair_weight_parse reads KEY=N (N in 1..FAIR_MAX_WEIGHT, KEY at most FAIR_KEY_MAX bytes).
 * Returns 0 or -EINVAL. */
int fair_weight_parse(const char *s, struct fair_weight *w);

/* fair_init prepares f. weights stay the caller's. Returns 0 or -ENOMEM. Without fair
 * share the records still exist, with the empty key: one per environment and priority,
 * for the jobs' positions. */
int fair_init(struct fair *f, enum fair_mode mode, const struct fair_weight *w, size_t nw);
void fair_fini(struct fair *f);

/* fair_key_of sets *key to m's key under mode (a view into m's body): the launcher, the
 * course id, or inputdata's "@username" string. A missing course id or username (or one
 * that is not a string) is the empty key: all such jobs share one key. */
void fair_key_of(enum fair_mode mode, const struct ing_client_new_job *m, struct ing_view *key);

/* fair_get returns the record of key in scope at priority prio, made if needed (with no
 * job yet; then linked at *list, the scope's records), or NULL when out of memory. */
struct fair_key *fair_get(struct fair *f, void *scope, int64_t prio, const char *key,
                          size_t len, struct fair_key **list);
/* fair_put: one job of k is gone; with its last job the record goes idle (kept in *list
 * and the table, as if new when taken again), or with FAIR_IDLE_MAX idle already is freed
 * (unlinked from *list). */
void fair_put(struct fair *f, struct fair_key *k, struct fair_key **list);
/* fair_use returns k (found in its scope's list) ready for a job: an idle record as if
 * new. */
struct fair_key *fair_use(struct fair *f, struct fair_key *k);
/* fair_drop_scope frees the records of *list (all idle: the scope goes). */
void fair_drop_scope(struct fair *f, struct fair_key **list);

/* fair_tag gives a new job of k its start tag at virtual time vtime. */
static inline uint64_t
fair_tag(struct fair_key *k, uint64_t vtime)
{
    uint64_t s = k->ftag > vtime ? k->ftag : vtime;
    k->ftag = s + k->inc;
    return s;
}

/* fair_foreach calls fn for every record (metrics: queue depth per key). */
typedef void fair_fn(void *arg, const void *scope, int64_t prio, const char *key, size_t len,
                     uint32_t nwait);
void fair_foreach(const struct fair *f, fair_fn *fn, void *arg);

#endif
