/* SPDX-License-Identifier: MIT */
/* sandbox.h: the per-job sandbox of inginious-agent-process (README, "The sandbox").
 *
 * A sandboxed job is three processes:
 *   S  the job's process-group leader, forked by the runner. As root on the host it mounts
 *      a tmpfs of the job's disk limit on the job folder BASE (BASE/task is the work folder,
 *      BASE/tmp the job's /tmp, BASE/root the mount point of its root), copies the task
 *      into it, drops to the job user, then unshares the user, mount, PID, IPC, UTS and
 *      cgroup namespaces (and the network namespace unless the job may use the network)
 *      and maps the job user to uid/gid SANDBOX_UID inside. It forks I and relays I's
 *      report of the grader's wait status as its own exit (so the runner sees the grader's
 *      status), and never runs code of the job.
 *   I  PID 1 of the job's PID namespace: builds the job's root (see sandbox.c), pivots
 *      into it, sets the host name, brings `lo` up, forks G and reaps every process of the
 *      namespace until G has exited; its exit makes the kernel kill every other process of
 *      the namespace (daemons included). It dies with S (PR_SET_PDEATHSIG).
 *   G  the grader: joins the job's cgroups, sets no_new_privs, drops every capability,
 *      installs the seccomp filter (seccomp.h) and returns to the runner, which execs
 *      `run`.
 * The job's cgroups (v2 where the unified hierarchy has the memory and pids controllers,
 * else v1 memory, pids and cpuacct) are made by the agent per job, and G joins them
 * through files the agent opened, so that S and I are never counted nor OOM-killed. */
#ifndef ING_SANDBOX_H
#define ING_SANDBOX_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SANDBOX_UID 4242                            /* the job's uid and gid inside */
#define SANDBOX_HOSTNAME "inginious"                /* the job's host name */
#define SANDBOX_PIDS_DEFAULT 256                    /* pids.max without --nproc */
#define SANDBOX_MEMORY_DEFAULT_MIB 1024             /* without limits.memory */
#define SANDBOX_DISK_DEFAULT (1024ull * 1024 * 1024) /* --disk-limit default, bytes */
#define SANDBOX_CG_MAX 3                            /* cgroup directories per job */

/* What the host offers, found once by sandbox_probe. */
struct sandbox_host {
    int cg_version;                          /* 1 or 2 */
    char cg_dir[SANDBOX_CG_MAX][PATH_MAX];   /* parents of the job cgroups */
    int ncg;
    unsigned long seq;                       /* job cgroups made so far */
    char tag[17];                            /* random: job cgroups are job-TAG-SEQ (cgroup
                                                trees may be shared by PID namespaces) */
};

/* One job's cgroups, made by the agent. */
struct sandbox_cg {
    int version;
    int n;                                   /* directories made */
    char dir[SANDBOX_CG_MAX][PATH_MAX];
    int procs_fd[SANDBOX_CG_MAX];            /* cgroup.procs of each, open for writing */
};

/* What the job's processes need; everything prepared before fork. */
struct sandbox_job {
    const char *base;     /* the job folder on the host (absolute) */
    const char *task_src; /* the original task folder (absolute), or NULL */
    const char *env_dir;  /* the environment's directory (absolute): /env inside */
    const char *rootfs;   /* env_dir/rootfs when it is a directory: the job's root, or NULL */
    bool network;         /* keep the host's network namespace */
    uint64_t disk_bytes;  /* size of the job's tmpfs */
    uid_t uid;            /* the job user on the host */
    gid_t gid;
    int cg_fd[SANDBOX_CG_MAX]; /* cgroup.procs of the job's cgroups (G writes "0"), or -1 */
};

/* Where a sandboxed start failed (sandbox_stage_name). */
enum sandbox_stage {
    SBX_MOUNT_BASE,
    SBX_UNSHARE,
    SBX_IDMAP,
    SBX_FORK,
    SBX_MOUNT,
    SBX_PIVOT,
    SBX_HOSTNAME,
    SBX_NET,
    SBX_CGROUP,
    SBX_CAPS,
    SBX_SECCOMP,
};

/* sandbox_probe checks that this kernel and these permissions allow the sandbox: a job
 * cgroup can be made (v2 preferred, else v1), namespaces can be unshared and proc and
 * tmpfs mounted in them. Returns 0 and fills h, or -errno with the reason in why. */
int sandbox_probe(struct sandbox_host *h, char *why, size_t whylen);

/* sandbox_describe writes what the probe found ("cgroup v1: memory, pids, cpuacct"). */
void sandbox_describe(const struct sandbox_host *h, char *buf, size_t len);

/* sandbox_cg_create makes the job's cgroups with a memory limit (bytes, swap included
 * where the kernel counts it) and a pids limit. Returns 0 or -errno (nothing left). */
int sandbox_cg_create(struct sandbox_host *h, struct sandbox_cg *cg, uint64_t mem_bytes,
                      unsigned long pids);

/* sandbox_cg_close_fds closes the cgroup.procs fds (the agent, once the job is forked). */
void sandbox_cg_close_fds(struct sandbox_cg *cg);

/* sandbox_cg_oom_kills: processes of the job the kernel's OOM killer killed. */
uint64_t sandbox_cg_oom_kills(const struct sandbox_cg *cg);

/* sandbox_cg_pids_refused: forks refused by the pids limit. */
uint64_t sandbox_cg_pids_refused(const struct sandbox_cg *cg);

/* sandbox_cg_cpu_ns: CPU time used by every process of the job (ns). */
uint64_t sandbox_cg_cpu_ns(const struct sandbox_cg *cg);

/* sandbox_cg_empty tells whether no process is left in the job's cgroup. */
bool sandbox_cg_empty(const struct sandbox_cg *cg);

/* sandbox_cg_kill sends SIGKILL to every process left in the job's cgroups. */
void sandbox_cg_kill(const struct sandbox_cg *cg);

/* sandbox_cg_destroy kills what is left in the cgroups and removes them. Returns 0, or
 * -EBUSY when a directory could not be removed yet (call again later). */
int sandbox_cg_destroy(struct sandbox_cg *cg);

/* sandbox_mount_base (S, root, host mount namespace) mounts the job's tmpfs on sj->base
 * and makes task/, tmp/ and root/ in it. Returns 0 or -errno. */
int sandbox_mount_base(const struct sandbox_job *sj);

/* sandbox_enter (S, after dropping to the job user) makes the namespaces and processes
 * above. Returns 0 in G, ready to chdir to /work and exec; S and I never return. On
 * failure returns -errno in the process that failed, with the stage in *stage (that
 * process then reports and exits; S relays I's exit status). */
int sandbox_enter(const struct sandbox_job *sj, enum sandbox_stage *stage);

/* sandbox_stage_name names a stage for error messages. */
const char *sandbox_stage_name(int stage);

#endif
