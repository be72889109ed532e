/* SPDX-License-Identifier: MIT */
/* backend.h: the INGInious backend's state and handlers, with no I/O.
 *
 * The backend owns jobs, environments, agents and clients. It talks to peers only through
 * two callbacks (struct be_ops): send a message, or relay a native body with a given type.
 * Time is given by the caller (be->now_ms, be->wall_s), so tests drive it with a fake
 * clock. Every handler is all-or-nothing: it validates before it changes anything.
 *
 * Scheduling (INGInious' update_queue, done incrementally): free slots
 * form one FIFO (each slot has a sequence number; an agent's free slots are a ring of
 * them); each environment keeps an indexed heap of its waiting jobs keyed (priority,
 * arrival) and an indexed heap of the agents serving it that have a free slot, keyed by
 * the agent's oldest free slot. After every handler, no free slot's agent has a waiting
 * job in any of its environments; so a new job goes to the first free slot (in FIFO
 * order) whose agent serves its environment, and a freed slot takes the best job among
 * its agent's environments. */
#ifndef ING_BACKEND_H
#define ING_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fair.h"
#include "idtab.h"
#include "inginious/proto.h"
#include "metrics.h"
#include "slab.h"

struct job;
struct journal;
struct env;
struct be_agent;
struct be_client;
struct be_reg;
struct be_lbuild;
struct sblk;

struct be_config {
    uint32_t ping_max;          /* an agent is removed at a tick with more missed pings */
    uint64_t kill_timeout_ms;   /* 0 = wait forever for the agent's answer to a kill */
    uint64_t orphan_timeout_ms; /* 0 = a job without provider waits forever */
    uint32_t retry_lost_jobs;   /* requeues of a started job whose agent is lost */
    uint64_t max_waiting;       /* waiting jobs in total */
    uint64_t max_waiting_per_client;
    uint32_t max_frame;           /* largest body we may send (queue snapshot) */
    uint32_t queue_list_max;      /* waiting jobs a queue snapshot lists (0 = all) */
    bool kill_any;                /* a client may kill jobs of other clients */
    uint32_t reap_batch;          /* jobs of a leaving client handled in be_client_gone (the
                                   * rest by be_reap): BE_REAP_BATCH */
    uint32_t max_slots_per_agent; /* a hello announcing more is refused (BE_MAX_SLOTS at most) */
    uint32_t max_envs_per_agent;  /* environments one AgentHello may announce */
    uint64_t max_envs;            /* environments provided by all agents together */
    uint64_t max_env_bytes;       /* size of the environment list (BackendUpdateEnvironments);
                                   * never more than max_frame - BE_FRAME_SLACK */
    uint64_t envs_grace_ms;       /* an update that only withdraws environments waits this
                                   * long for their agent to come back (a reconnect) */
    uint32_t hello_burst;         /* AgentHellos per connection in a burst, then one per
                                   * second (0 = no limit) */
    uint32_t max_requeues;        /* requeues of one job after agent losses; then crash */
    uint32_t lost_batch; /* lost agents' jobs handled per loop iteration, beyond the first
                          * agent (be_ping_tick defers the others to its next tick; the server
                          * its closed connections to its next iteration); 0: no bound */
    uint64_t deadline_margin_ms;  /* added to a running job's time limit (proto.md 7.4) */
    uint64_t resume_grace_ms;     /* --resume-grace: how long the jobs of a lost agent that
                                   * can resume (AgentHelloResume), or of journaled running
                                   * jobs after a restart, wait to be claimed (proto.md 7.10);
                                   * 0 = no wait: lost at once (7.5) */
    enum fair_mode fair_mode;     /* --fair-share: FAIR_NONE = INGInious' order */
    uint64_t priority_aging_ms;   /* --priority-aging: a level per this long (0 = off) */
    const struct fair_weight *fair_weights; /* --fair-weight (kept by the caller) */
    size_t n_fair_weights;
    uint64_t session_ttl_ms; /* --session-ttl: a detached session's jobs wait this long */
    uint64_t session_unacked_max; /* result bytes an acknowledging connection may leave
                                   * unacknowledged, then it is closed (proto.md 7.9): the
                                   * server sets 4 x --max-output */
};

#define BE_MAX_REQUEUES 100
#define BE_MAX_DEADLINE_MS (20ull * 86400 * 1000) /* 20 days, margin included: < 2^31 ms */
_Static_assert(BE_MAX_DEADLINE_MS < (1ull << 31), "deadlines are compared in 32 bits");
#define BE_MAX_ENVS 10000000
#define BE_FRAME_SLACK 256 /* a frame's envelope around its largest field, either dialect */

#define BE_MAX_SLOTS 65536

/* be_config_default fills the defaults documented in proto.md and the README. */
void be_config_default(struct be_config *cfg);

struct be_ops {
    /* send encodes m for the peer and queues it. */
    void (*send)(void *peer, const struct ing_msg *m);
    /* relay queues a message of the given type whose native body is body[0..len). */
    void (*relay)(void *peer, uint8_t type, const uint8_t *body, size_t len);
    /* drop sends Error(code, why) and closes the peer (a removed agent); may be NULL. */
    void (*drop)(void *peer, uint16_t code, const char *why);
    /* registered: the AgentHello of be_agent_hello's BE_HELLO_PENDING has been registered
     * (rc 0) or refused (rc -EINVAL, its reason in why, as be_agent_hello's would be); may
     * be NULL. Not called for an agent that is gone (be_agent_gone). */
    void (*registered)(void *peer, int rc, const char *why);
    /* take: a hello registered in steps reads its environments [p, p + len) across loop
     * iterations. take may hand over the memory that holds them (the peer's input buffer,
     * replaced by a new one) so that they are not copied: it returns that memory as a block
     * (sblk.h, one reference: the backend's, dropped when the registration ends; the block
     * counts in held_bytes meanwhile), the bytes staying where they are; or NULL (then the
     * backend copies them, counted as well). May be NULL. */
    struct sblk *(*take)(void *peer, const void *p, size_t len);
    /* send_shared: as send, for a BackendUpdateEnvironments whose map is the whole of blk
     * (the list every client is sent): the peer may keep a reference to blk (sblk_ref)
     * rather than copy it. May be NULL (send is used). */
    void (*send_shared)(void *peer, const struct ing_msg *m, struct sblk *blk);
};

struct be_stats {
    uint64_t jobs_submitted, jobs_refused, jobs_dispatched, jobs_done, jobs_killed;
    uint64_t jobs_crashed, jobs_requeued, reports_dropped, agents_lost;
    uint64_t jobs_expired; /* ended by the backend's deadline (proto.md 7.4) */
    uint64_t kept_shed;    /* kept results replaced by crash "Backend memory full" (7.7) */
    uint64_t sessions_resumed; /* detached sessions attached to a new connection (7.9) */
    uint64_t jobs_claimed, claims_refused; /* AgentHelloResume (proto.md 7.10) */
};

/* One recent failure (a result other than success and failed, or a crash the backend
 * gave), for the status page. Strings are truncated copies. */
struct be_failure {
    int64_t time_s;
    char job_id[64];
    char env[96]; /* type/name */
    char result[16];
    char reason[128];
};
#define BE_FAILURES 16
#define BE_MAX_ETYPES 64 /* environment types with their own histograms; the rest: "other" */

struct backend {
    struct be_config cfg;
    struct be_ops ops;
    uint64_t now_ms; /* monotonic ms, set by the caller before each call */
    int64_t wall_s;  /* Unix time in seconds, set by the caller */

    struct pool jobs_pool;
    struct slab client_slab, agent_slab, env_slab;

    struct idtab jtab; /* job id -> job */
    struct env **etab; /* (type, name) -> env, chained */
    size_t emask, nenvs;
    struct env **etab_old; /* while etab grows: the old table, chains emove.. to move */
    size_t eomask, emove;

    uint64_t arrival_seq;  /* global arrival counter (ties between equal priorities) */
    uint64_t slot_seq;     /* free-slot FIFO order */
    uint64_t lost_jobs;    /* lost agents' jobs handled in this loop iteration (the server
                            * resets it; cfg.lost_batch) */
    uint64_t dispatch_seq; /* running jobs' order */
    uint64_t mark_seq;

    struct be_agent *agents;   /* registered agents (doubly linked) */
    struct be_client *clients; /* registered clients (doubly linked) */
    struct be_client *reaping; /* gone clients whose jobs are not all dropped yet */
    struct be_reg *regs, *regs_tail; /* hellos being registered (be_register), in order */
    struct env *orphans;       /* environments with waiting jobs and no provider */
    uint64_t n_waiting, n_running;
    uint64_t job_bytes; /* bodies of the jobs held (waiting and running), for the server's budget */
    uint32_t n_agents, n_clients;
    bool draining; /* no dispatch */
    struct fair fair; /* --fair-share: the keys' records */

    uint8_t *envs_msg; /* cached BackendUpdateEnvironments map (msgpack), NULL = none */
    size_t envs_msg_len;
    struct env *types_head, *types_tail; /* listed type records, in announcement order */
    uint64_t n_provided;                 /* environments with a provider */
    uint32_t n_types_ann;                /* types some agent announces */
    uint64_t list_bytes; /* bound on the encoded list: every provided name and announced type */
    bool envs_changed;   /* the list differs from envs_msg */
    bool envs_held;      /* a registration is between its removal and its end: no list */
    uint64_t envs_gen;   /* changes of the list (a build in progress starts again) */
    uint64_t envs_serial; /* lists built (envs_msg's number) */
    bool envs_sending;    /* some clients have not been sent envs_msg yet */
    struct be_lbuild *lbuild; /* the list being built in steps (be_flush) */
    bool envs_dirty;     /* clients must be sent the list, at envs_due_ms */
    uint64_t envs_due_ms;

    /* Scratch for the queue snapshot, reused. */
    void *q_run, *q_wait;
    size_t q_run_cap, q_wait_cap;
    struct job **q_sel; /* the waiting jobs a snapshot lists */
    size_t q_sel_cap;
    char *q_text;
    size_t q_text_cap;

    struct be_stats stats;
    struct metrics_core mc; /* the counters of /metrics that be_stats does not hold */
    struct metrics_type **etypes; /* per environment type: wait and run time histograms */
    size_t n_etypes;
    struct be_failure fail[BE_FAILURES]; /* ring: the newest is fail[(nfail - 1) % N] */
    uint64_t nfail;

    /* The journal (--journal; NULL: off), set by the server once replayed: every accepted
     * job and every job's end is recorded there (proto.md 12.3). */
    struct journal *jr;
    char jr_why[96]; /* the refusal text while it is unavailable */
    uint64_t jr_skipped; /* journaled jobs the replay could not restore (e.g. Queue full) */
    bool jr_late; /* the replay restored a job after one that arrived later (a compaction's
                   * copy): be_journal_replayed gives the ordinals again, in arrival order */

    /* Agents that may come back (proto.md 7.10): each holds the running jobs of a lost agent
     * that said AgentHelloResume, or of the journal's dispatched records, until its agent
     * claims them or its grace (dl_ms) ends. Unregistered be_agent records (ghost set). */
    struct be_agent *ghosts;
    uint64_t n_held; /* jobs they hold (counted in n_running too) */
    struct jr_pend *jr_pend; /* replay: dispatch states of jobs whose accepted record comes
                              * later (a compaction's copy); freed by be_journal_replayed */
    size_t jr_npend, jr_pend_cap;
    uint64_t *jr_pbits; /* replay: jr_pend_cap words, a bit per hash of each pending arrival
                         * (never cleared until the replay ends): a restored job whose bit
                         * is clear has no pending dispatch, without a scan */
    /* The jobs accepted since the journal's last flush (be_journal_settle): per job its
     * arrival order (u64), a byte "acknowledge it", its id's length (u8) and its id. */
    struct buf jr_fresh;
    uint64_t jr_settled; /* jobs of a higher arrival order are not settled yet */
    uint64_t jr_refused; /* refused while the journal is unavailable (one log line) */
    /* Sessions (proto.md 7.9): by id; the detached ones listed (be_session_tick). */
    struct idtab stab;
    struct idtab ktab; /* kept results by their job's arrival order */
    struct be_client *detached;
    uint64_t n_sessions;
    uint64_t n_kept, kept_bytes; /* results kept for detached sessions (memory budget) */
    struct sblk *envs_blk; /* the block holding envs_msg, shared with the clients' outputs */
    /* Bytes of the environment lists' blocks (one count per list, however many outputs
     * refer to it) and of the hellos being registered in steps (their copy or the input
     * taken over): the server counts them in --max-memory. */
    uint64_t held_bytes;
    uint64_t entry_stamp; /* the last waiting job's entry stamp (job_enqueue, t.entered) */
};

/* be_init prepares be. Returns 0 or -ENOMEM. */
int be_init(struct backend *be, const struct be_config *cfg, const struct be_ops *ops);
/* be_fini frees everything (jobs, registered agents and clients) without sending anything.
 * Handles of unregistered peers must be released with be_*_gone first. */
void be_fini(struct backend *be);

/* Clients. be_client_new is called when a client connection is open; the returned handle
 * lives until be_client_gone. */
struct be_client *be_client_new(struct backend *be, void *peer);
/* be_client_gone: c's connection closed. Nothing is sent to it any more; its waiting jobs
 * are dropped and its running jobs killed on their agents, cfg.reap_batch of them now and
 * the rest by be_reap (a client leaving with a million jobs must not stall the loop).
 * Returns true while some gone client still has jobs: call be_reap soon. */
#define BE_REAP_BATCH 2048
bool be_client_gone(struct backend *be, struct be_client *c);
/* be_reap handles up to budget more jobs of gone clients; true while some remain. */
bool be_reap(struct backend *be, size_t budget);
bool be_client_registered(const struct be_client *c);
/* be_client_job_bytes: the bytes of the bodies of c's jobs the backend holds. */
uint64_t be_client_job_bytes(const struct be_client *c);
void be_client_hello(struct backend *be, struct be_client *c);
/* be_client_native: c speaks the native protocol (it gets Error JOURNAL with a refusal for
 * the journal's sake, proto.md 5.1) and, with acks, BackendJobAccepted for each job it is
 * accepted (proto.md 7.8): at once without a journal, else from be_journal_settle. */
void be_client_native(struct be_client *c, bool acks);
/* Look-ahead: be_id_hash is the hash the backend keys job id id with, and be_prefetch_id
 * starts loading the job-id table's line for hash h without waiting for it. A caller that
 * holds several frames (server.c) prefetches the ids of the next ones while it handles the
 * current one, then passes each hash to the _h variant of the handler below, which is the
 * handler without computing the hash again. With a million jobs the table is far larger
 * than the caches: this overlaps its memory accesses instead of waiting for each in turn. */
uint64_t be_id_hash(struct ing_view id);
void be_prefetch_id(const struct backend *be, uint64_t h);
#define BE_MAX_ID_LEN 255 /* longer job ids are refused before any lookup: no need to hash */

/* be_lookahead tells whether looking ahead pays: whether the job-id table has outgrown the
 * caches (1 MiB, some 70,000 jobs). Below that every line is cached and the extra pass
 * over the frames would only cost (3-5 % of the CPU time per job in bench/loadgen). */
#define BE_LOOKAHEAD_BUCKETS 16384
static inline bool
be_lookahead(const struct backend *be)
{
    return be->jtab.mask + 1 >= BE_LOOKAHEAD_BUCKETS;
}

/* be_client_new_job: body[0..len) is the native ClientNewJob body and m its decoded views
 * (pointing into body). The body is copied if the job is accepted. */
void be_client_new_job(struct backend *be, struct be_client *c, const uint8_t *body, size_t len,
                       const struct ing_client_new_job *m);
/* be_client_new_job_h: returns true if the job was accepted (false: refused with a crash). */
bool be_client_new_job_h(struct backend *be, struct be_client *c, const uint8_t *body, size_t len,
                         const struct ing_client_new_job *m, uint64_t idh);
/* be_client_refuse answers job id with crash "why" without storing anything (a job whose
 * message could not be taken as it is). */
void be_client_refuse(struct backend *be, struct be_client *c, struct ing_view id, const char *why);
void be_client_kill(struct backend *be, struct be_client *c, struct ing_view job_id);
void be_client_kill_h(struct backend *be, struct be_client *c, struct ing_view job_id,
                      uint64_t idh);
void be_client_get_queue(struct backend *be, struct be_client *c);

/* Sessions (proto.md 7.9). A session is a client whose jobs outlive its connection: when
 * be_client_gone is called for it, it is detached (unregistered, peer NULL) instead, its
 * jobs go on, and their results are kept (in memory, counted in kept_bytes, and in the
 * journal) until a connection resumes it, or until it has been detached for
 * cfg.session_ttl_ms (be_session_tick: then its client is gone as any other). */
/* be_session_find returns the client of session id, or NULL. */
struct be_client *be_session_find(const struct backend *be, const uint8_t id[ING_SESSION_ID_LEN]);
/* be_client_peer: c's peer (NULL: a detached session); be_client_session: its session id,
 * or NULL. */
void *be_client_peer(const struct be_client *c);
const uint8_t *be_client_session(const struct be_client *c);
/* be_session_detach detaches the attached session c (another connection takes it over). */
void be_session_detach(struct backend *be, struct be_client *c);
/* be_session_attach: the connection of client c (with no job) opens session id. A new id
 * makes c the session; a detached session is attached to c's peer and c released (it must
 * not be used again). Returns the session's client, or NULL (no memory, or the session is
 * attached to another connection: detach it first). */
struct be_client *be_session_attach(struct backend *be, struct be_client *c,
                                    const uint8_t id[ING_SESSION_ID_LEN]);
/* be_session_resume starts delivering the session's kept results to its peer (unless hold:
 * then they stay kept, and so do the results that arrive while this connection holds the
 * session), about budget bytes of them; the list of the jobs it holds (BackendSessionJobs)
 * follows the last. Results that arrive meanwhile are kept, behind the others. Returns true
 * while some remain: call be_session_deliver when the peer's output has drained. */
bool be_session_resume(struct backend *be, struct be_client *c, bool hold, size_t budget);
bool be_session_deliver(struct backend *be, struct be_client *c, size_t budget);
/* be_session_acks: the connection of session c opened with ING_SESSION_ACK (on) or without:
 * with it, each result sent is kept (and journaled) until a ClientSessionAck covers it, and
 * the next connection is sent it again (proto.md 7.9). Call before be_session_resume. */
void be_session_acks(struct be_client *c, bool on);
/* be_session_ack: c's connection has read count BackendJobDone frames since its hello (a
 * ClientSessionAck): the kept results among them are forgotten, journaled as delivered.
 * Returns 0, -EPERM (c does not acknowledge) or -ERANGE (more than were sent). */
int be_session_ack(struct backend *be, struct be_client *c, uint64_t count);
/* be_sessions_shed relieves the memory budget (proto.md 7.7): the results kept for the
 * oldest detached sessions (oldest first, in their order) are replaced by short crash
 * "Backend memory full" results of the same jobs, until need bytes are freed or max results
 * looked at. Returns the bytes freed. */
uint64_t be_sessions_shed(struct backend *be, uint64_t need, size_t max);
bool be_session_resuming(const struct be_client *c);
/* be_session_tick ends the sessions detached for cfg.session_ttl_ms or longer. */
void be_session_tick(struct backend *be);
/* Agents. */
struct be_agent *be_agent_new(struct backend *be, void *peer);
/* be_agent_gone: a's connection closed (a goes). A registered agent leaves the agents at
 * once (its jobs requeued or ended, proto.md 7.5); one with more than BE_UNREG_INLINE
 * environments and types lets them go in steps, queued with the registrations (be_register,
 * be_registering: the caller runs them), getting no job meanwhile, and clients are sent no
 * environment list until it ends (they see the list before or after, never half of it).
 * be_ping_tick removes an agent that missed its pings the same way. */
void be_agent_gone(struct backend *be, struct be_agent *a);
#define BE_UNREG_INLINE 256
bool be_agent_registered(const struct be_agent *a);
/* be_agent_hello validates then applies the hello. Returns 0, or -EINVAL with a reason in
 * why (nothing changed), or BE_HELLO_PENDING: a large hello (its environments map over
 * BE_REG_INLINE_BYTES, or a re-hello of an agent with over BE_REG_INLINE_ENVS environments),
 * or any hello while another registration is under way, is registered across loop
 * iterations by be_register (the environments are copied: m may go), then ops.registered
 * says how it ended. Registrations are done one at a time, in arrival order. While its
 * hello is being registered an agent gets no job once its previous registration (a
 * re-hello) is being removed, and clients are sent no environment list between that removal
 * and the end of the new registration (they see the list before or after, never half of
 * it). A second hello of an agent whose hello is being registered is refused. */
#define BE_HELLO_PENDING 1
#define BE_REG_INLINE_BYTES 16384
#define BE_REG_INLINE_ENVS 512
int be_agent_hello(struct backend *be, struct be_agent *a, const struct ing_agent_hello *m,
                   char *why, size_t whylen);
/* be_agent_hello_resume is be_agent_hello for AgentHelloResume (proto.md 7.10): the agent
 * gets its id, then claims the jobs it lists (before any new job takes its slots); a claim
 * the backend cannot grant is answered with BackendKillJob(job_id, ""). */
int be_agent_hello_resume(struct backend *be, struct be_agent *a,
                          const struct ing_agent_hello_resume *m, char *why, size_t whylen);
/* be_register does up to budget units of registration work (a unit: one environment or type
 * read, looked up, announced or let go; every unit O(1) but for the hash table's growth),
 * lost agents' removals (be_agent_gone) included. Returns true while some registration
 * remains (call it again at the next iteration). */
bool be_register(struct backend *be, size_t budget);
/* be_registering tells whether some hello (or lost agent's removal) is being registered. */
bool be_registering(const struct backend *be);
void be_agent_started(struct backend *be, struct be_agent *a, struct ing_view job_id);
void be_agent_started_h(struct backend *be, struct be_agent *a, struct ing_view job_id,
                        uint64_t idh);
/* be_agent_done / be_agent_ssh: body is the native body of the report, m its views. */
void be_agent_done(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
                   const struct ing_job_result *m);
void be_agent_done_h(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
                     const struct ing_job_result *m, uint64_t idh);
void be_agent_ssh(struct backend *be, struct be_agent *a, const uint8_t *body, size_t len,
                  const struct ing_ssh_debug *m);
void be_agent_pong(struct backend *be, struct be_agent *a);
/* be_agent_alive: a's connection shows progress (bytes received from it, or output it has
 * read): proof of life, as a Pong is (an agent busy reading a large job answers its pings
 * late). */
void be_agent_alive(struct be_agent *a);
/* be_agent_job_unusable ends job id, running on a, whose report from a cannot be used
 * (a result whose fields cannot stand for the documented types): its owner gets crash with
 * a text naming why, its inputdata["@state"] kept; the slot is freed. */
void be_agent_job_unusable(struct backend *be, struct be_agent *a, struct ing_view id,
                           const char *why);
const char *be_agent_name(const struct be_agent *a);

/* be_ping_tick: one heartbeat tick: remove agents with too many missed pings, ping the
 * others. */
void be_ping_tick(struct backend *be);
/* be_flush sends the environment list to every registered client if it is due: at most one
 * BackendUpdateEnvironments per call, whatever the number of changes since the last one (the
 * server calls it once per event-loop iteration, before sleeping). A change that only
 * withdraws environments is held cfg.envs_grace_ms, so that an agent that reconnects at
 * once causes a single update with the final list. be_flush_due tells when the next
 * update is due (false: none pending). */
void be_flush(struct backend *be);
bool be_flush_due(const struct backend *be, uint64_t *due_ms);
/* The list is built (and the withdrawn environments pruned) BE_FLUSH_UNITS environments per
 * be_flush call (a pruned one, freed, counts as 8): a list of 100,000 is sent a few
 * iterations after it changed, and no
 * iteration walks all of it. be_flush_building: a build is under way (call be_flush at the
 * next iteration; be_flush_due says false meanwhile). */
#define BE_FLUSH_UNITS 4096
/* Once built, the list is copied to about BE_FLUSH_BYTES of clients' output per be_flush
 * call (the others at the next ones, still building: be_flush_building). */
#define BE_FLUSH_BYTES (512u << 10)
/* What sending a list costs against BE_FLUSH_BYTES when the peers share it (ops.send_shared):
 * a header, a reference (128 clients per call). */
#define BE_SHARED_COST 4096u
bool be_flush_building(const struct backend *be);
/* be_timeouts: end the running jobs, kills and orphan waits whose deadline has passed. */
void be_timeouts(struct backend *be);

/* Shutdown: be_drain stops dispatching; be_fail_all ends every waiting and running job
 * with crash "text" (state kept) to its owner. */
void be_drain(struct backend *be);
void be_fail_all(struct backend *be, const char *text);

/* Read-only views for /metrics and /status (no side effect). */
typedef void be_env_fn(void *arg, const char *type, const char *name, uint64_t waiting,
                       uint64_t running, uint32_t providers);
/* be_foreach_env calls fn for every environment the backend knows. */
void be_foreach_env(const struct backend *be, be_env_fn *fn, void *arg);
/* be_agent_env returns the i-th environment of a (i < be_agent_nenvs(a)). */
uint32_t be_agent_nenvs(const struct be_agent *a);
void be_agent_env(const struct be_agent *a, uint32_t i, const char **type, const char **name);
const struct be_agent *be_agent_next(const struct be_agent *a);

/* Where is my job (proto.md 7.4, ClientGetJobInfo). */
enum be_job_state {
    BE_JOB_WAITING = 1,
    BE_JOB_DISPATCHED = 2, /* sent to an agent, not reported started */
    BE_JOB_RUNNING = 3,
};
struct be_job_info {
    enum be_job_state state;
    const char *env_type, *env_name; /* valid until the next handler */
    uint64_t position;   /* waiting: jobs ranked before it among those its agents could take:
                          * in its environment and those sharing an agent (proto.md 7.4) */
    uint64_t slots;      /* slots of the agents that provide its environment */
    uint64_t run_avg_ms; /* moving average of run times there; UINT64_MAX = none yet */
    uint64_t eta_ms;     /* waiting: time until it is dispatched; UINT64_MAX = unknown */
    uint64_t age_ms;     /* since it (re-)entered the queue, or since its dispatch */
};
/* be_job_info describes job id. Returns 0, or -ENOENT (no such job held, or its client has
 * gone). Cost: O(agent-environment pairs + environments sharing an agent with its own x
 * their records x log n), no allocation; it only marks environments (env->mark). */
int be_job_info(struct backend *be, struct ing_view id, struct be_job_info *out);

struct ing_mp_writer;
/* be_job_info_mp writes the BackendJobInfo map of job id (proto.md 5.9) into w. */
void be_job_info_mp(struct backend *be, struct ing_view id, struct ing_mp_writer *w);
/* be_client_get_job_info answers ClientGetJobInfo(id) with BackendJobInfo. */
void be_client_get_job_info(struct backend *be, struct be_client *c, struct ing_view id);

/* The journal (proto.md 12.3). be_journal_replay applies one record read back at start
 * (be->jr still NULL): an accepted job comes back waiting, with its arrival order and
 * priority and no owner; an end record forgets it. Returns 0 (a record that does not apply
 * is logged and skipped). be_journal_live tells the compaction whether a record is still
 * needed; be_journal_live_bytes is the size of the records of the jobs held. */
int be_journal_replay(struct backend *be, uint8_t type, const uint8_t *p, uint32_t len);
bool be_journal_live(const struct backend *be, uint8_t type, const uint8_t *p, uint32_t len);
/* be_journal_relocate is the compaction's journal_relocate_fn (journal.h; arg: the backend):
 * a record already copied (newref != 0) stays, another one while be_journal_live says so. */
bool be_journal_relocate(void *arg, uint8_t type, const uint8_t *p, uint32_t len, uint64_t ref,
                         uint64_t newref);
uint64_t be_journal_live_bytes(const struct backend *be);
/* be_journal_replayed ends the replay: the running jobs it restored (dispatched records of
 * agents that can resume) wait cfg.resume_grace_ms from now for their agents. */
void be_journal_replayed(struct backend *be);
/* be_journal_settle is called after each flush of the journal (err: its result, 0 or
 * -errno) with the jobs accepted since the previous call (proto.md 7.8): on success their
 * records are written (synced under --fsync always) and the clients that asked hear
 * BackendJobAccepted; on failure each is refused after all with crash "Journal unavailable:
 * ..." (and Error JOURNAL to native clients): a waiting one is forgotten, one already sent
 * to an agent is killed there and its client told at once. */
void be_journal_settle(struct backend *be, int err);
/* be_journal_reserve sizes the job table for about n jobs before a replay (0 or -ENOMEM). */
int be_journal_reserve(struct backend *be, uint64_t n);

/* be_check verifies internal invariants (tests). Returns 0 or -EPROTO. */
int be_check(const struct backend *be);
/* Counters for tests and metrics. */
/* be_agent_hold: a's connection is closed and be_agent_gone waits (until the end of the
 * batch, or a later loop iteration: the work of lost agents is bounded per iteration): no job
 * goes to it meanwhile. O(1): its slots stay counted until be_agent_gone. NULL or
 * unregistered: nothing. */
void be_agent_hold(struct be_agent *a);
uint32_t be_agent_busy(const struct be_agent *a);
uint32_t be_agent_slots(const struct be_agent *a);

#endif
