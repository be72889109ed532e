/* SPDX-License-Identifier: MIT */
/* sandbox.c: see sandbox.h. The job's root, built by I in its own mount namespace:
 *   /                 a 1 MiB tmpfs, read-only once built
 *   /usr /bin /sbin /lib /lib32 /lib64 /libx32    read-only binds of the host's (a host
 *                     symbolic link such as /bin -> usr/bin is recreated as a link)
 *   /etc              passwd, group and hosts written for the job; read-only binds of the
 *                     host's alternatives/, ld.so.cache, ld.so.conf, ld.so.conf.d/,
 *                     localtime, nsswitch.conf, and with the network resolv.conf and ssl/
 *   /env              the environment's directory, read-only
 *   /task             the original task folder, read-only (taskful jobs)
 *   /work             the job's copy of the task folder (cwd and $HOME), writable
 *   /tmp              writable; /work and /tmp share the job's tmpfs (the disk limit)
 *   /dev              a tmpfs with binds of the host's null, zero, full, random, urandom
 *                     and tty, and the links fd, stdin, stdout, stderr
 *   /proc             a fresh proc of the job's PID namespace
 * Every bind is nosuid and nodev (the device binds keep their devices).
 * When the environment has a directory rootfs/ (ENVS/<type>/<name>/rootfs), its top-level
 * entries replace the host's /usr, /bin, ... and /etc: directories and files are bound
 * read-only, links recreated; its dev, proc, tmp, work, task and env are not used (the
 * sandbox's own are), and without an etc/ the generated /etc above is made. */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "seccomp.h"

#define CG_ROOT "/sys/fs/cgroup"
/* Where the kernel ignores mount's source and type (binds, remounts, propagation), "none"
 * is given rather than NULL, which memory checkers read as a string. */
#define ROOT_TMPFS_OPTS "size=1m,nr_inodes=4096,mode=0755"

static const char *const stage_names[] = {
    "mounting the job's tmpfs", "unshare", "writing the uid/gid maps", "fork",
    "mount", "pivot_root", "sethostname", "bringing lo up", "joining the job's cgroup",
    "dropping capabilities", "installing the seccomp filter",
};

const char *
sandbox_stage_name(int stage)
{
    if (stage < 0 || stage >= (int)(sizeof(stage_names) / sizeof(stage_names[0])))
        return "?";
    return stage_names[stage];
}

/* pjoin writes a then b to out. Returns 0 or -ENAMETOOLONG. */
static int
pjoin(char *out, size_t n, const char *a, const char *b)
{
    return (size_t)snprintf(out, n, "%s%s", a, b) < n ? 0 : -ENAMETOOLONG;
}

/* ---- small file helpers (all usable in a forked child) ------------------------------ */

static int
write_file(const char *path, const char *text)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;
    ssize_t w;

    if (fd < 0)
        return -errno;
    do {
        w = write(fd, text, len);
    } while (w < 0 && errno == EINTR);
    if (w < 0)
        rc = -errno;
    else if ((size_t)w != len)
        rc = -EIO;
    close(fd);
    return rc;
}

static int
write_new(const char *path, const char *text, mode_t mode)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode), rc = 0;

    if (fd < 0)
        return -errno;
    if (write(fd, text, len) != (ssize_t)len)
        rc = errno != 0 ? -errno : -EIO;
    close(fd);
    return rc;
}

/* read_u64_key reads the number after "key " in a file of "key value" lines (key NULL:
 * the file's first number). Returns 0 when absent. */
static uint64_t
read_u64_key(const char *dir, const char *file, const char *key)
{
    char path[PATH_MAX + 64], buf[4096], *p;
    size_t kl = key != NULL ? strlen(key) : 0;
    ssize_t n;
    int fd;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (key == NULL)
        return strtoull(buf, NULL, 10);
    for (p = buf; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p != NULL ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
            return strtoull(p + kl + 1, NULL, 10);
    }
    return 0;
}

/* ---- cgroups ------------------------------------------------------------------------ */

/* has_ctl tells whether the comma-separated list (changed) names ctl. */
static bool
has_ctl(char *list, const char *ctl)
{
    char *tok;

    while ((tok = strsep(&list, ",")) != NULL) {
        if (strcmp(tok, ctl) == 0)
            return true;
    }
    return false;
}

/* own_cgroup finds this process's cgroup path in the hierarchy with controller ctl ("" for
 * the unified one) from /proc/self/cgroup. Returns 0 or -ENOENT. */
static int
own_cgroup(const char *ctl, char *out, size_t len)
{
    char line[1024];
    FILE *f = fopen("/proc/self/cgroup", "re");
    int rc = -ENOENT;

    if (f == NULL)
        return -errno;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *c1 = strchr(line, ':'), *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        char *nl;

        if (c2 == NULL)
            continue;
        *c2 = '\0';
        nl = strchr(c2 + 1, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (ctl[0] == '\0' ? c1[1] == '\0' && line[0] == '0' : has_ctl(c1 + 1, ctl)) {
            if ((size_t)snprintf(out, len, "%s", c2 + 1) < len)
                rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* try_dir checks that a job cgroup can be made under dir. */
static int
try_dir(const char *dir)
{
    char path[PATH_MAX + 32];

    snprintf(path, sizeof(path), "%s/inginious-probe-%d", dir, (int)getpid());
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    rmdir(path);
    return 0;
}

static int
probe_v2(struct sandbox_host *h)
{
    char rel[PATH_MAX], ctl[256] = "";
    char dir[PATH_MAX];
    int fd;
    ssize_t n;
    const char *mnt = NULL;
    struct statvfs sv;

    if (statvfs(CG_ROOT "/unified/cgroup.controllers", &sv) == 0)
        mnt = CG_ROOT "/unified";
    else if (statvfs(CG_ROOT "/cgroup.controllers", &sv) == 0)
        mnt = CG_ROOT;
    if (mnt == NULL || own_cgroup("", rel, sizeof(rel)) < 0)
        return -ENOENT;
    if ((size_t)snprintf(dir, sizeof(dir), "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel) >=
        sizeof(dir))
        return -ENAMETOOLONG;
    {
        char path[PATH_MAX + 32];

        snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    n = read(fd, ctl, sizeof(ctl) - 1);
    close(fd);
    ctl[n > 0 ? n : 0] = '\0';
    if (strstr(ctl, "memory") == NULL || strstr(ctl, "pids") == NULL)
        return -ENOTSUP;
    /* cgroup v2 lets a cgroup give controllers to its children only when it holds no
     * process itself (the root excepted): unless they are already enabled, the agent moves
     * into DIR/agent, enables memory and pids (and cpu, where offered) in DIR, and makes
     * the job cgroups beside it. */
    {
        char path[PATH_MAX + 32], sub[256] = "";

        snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            n = read(fd, sub, sizeof(sub) - 1);
            sub[n > 0 ? n : 0] = '\0';
            close(fd);
        }
        if (strstr(sub, "memory") == NULL || strstr(sub, "pids") == NULL) {
            char leaf[PATH_MAX + 32];

            snprintf(leaf, sizeof(leaf), "%s/agent", dir);
            if (mkdir(leaf, 0755) < 0 && errno != EEXIST)
                return -errno;
            snprintf(leaf, sizeof(leaf), "%s/agent/cgroup.procs", dir);
            if (write_file(leaf, "0") < 0)
                return -EPERM;
            if (write_file(path, "+memory +pids +cpu") < 0 &&
                write_file(path, "+memory +pids") < 0)
                return -ENOTSUP;
        }
    }
    if ((size_t)snprintf(h->cg_dir[0], sizeof(h->cg_dir[0]), "%s", dir) >= sizeof(h->cg_dir[0]))
        return -ENAMETOOLONG;
    h->ncg = 1;
    h->cg_version = 2;
    return try_dir(h->cg_dir[0]);
}

static int
probe_v1(struct sandbox_host *h)
{
    static const char *const ctls[] = {"memory", "pids", "cpuacct"};
    int i, rc;

    for (i = 0; i < 3; i++) {
        char rel[PATH_MAX];

        if (own_cgroup(ctls[i], rel, sizeof(rel)) < 0)
            return -ENOENT;
        if ((size_t)snprintf(h->cg_dir[i], sizeof(h->cg_dir[i]), CG_ROOT "/%s%s", ctls[i],
                             strcmp(rel, "/") == 0 ? "" : rel) >= sizeof(h->cg_dir[i]))
            return -ENAMETOOLONG;
        rc = try_dir(h->cg_dir[i]);
        if (rc < 0)
            return rc;
    }
    h->ncg = 3;
    h->cg_version = 1;
    return 0;
}

static int write_map(const char *file, unsigned outside);

/* probe_ns_child: what a job does up to its mounts, in a throw-away child. */
static _Noreturn void
probe_ns_child(void)
{
    pid_t pid;
    int st;

    /* As a job: an unprivileged user (nobody) on the host. */
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        _exit(16);
    (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                CLONE_NEWUTS | CLONE_NEWCGROUP) < 0)
        _exit(10);
    if (write_file("/proc/self/setgroups", "deny") < 0 ||
        write_map("/proc/self/uid_map", (unsigned)geteuid()) < 0 ||
        write_map("/proc/self/gid_map", (unsigned)getegid()) < 0)
        _exit(17);
    pid = fork();
    if (pid < 0)
        _exit(11);
    if (pid == 0) {
        if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
            _exit(12);
        if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k") < 0)
            _exit(13);
        if (mkdir("/tmp/proc", 0755) < 0 ||
            mount("proc", "/tmp/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            _exit(14);
        _exit(0);
    }
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
        _exit(15);
    _exit(WEXITSTATUS(st));
}

int
sandbox_probe(struct sandbox_host *h, char *why, size_t whylen)
{
    static const char *const ns_why[] = {
        "unshare of the namespaces failed (user namespaces disabled?)",
        "fork in a new PID namespace failed",
        "making the mounts private failed",
        "mounting a tmpfs in a user namespace failed",
        "mounting /proc in a new PID namespace failed",
        "the probe process died",
        "dropping to the user nobody failed",
        "writing the uid/gid maps of a user namespace failed",
    };
    int rc, st;
    pid_t pid;

    memset(h, 0, sizeof(*h));
    {
        uint64_t r = 0;
        struct timespec ts;

        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
            clock_gettime(CLOCK_REALTIME, &ts);
            r = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
        }
        snprintf(h->tag, sizeof(h->tag), "%016llx", (unsigned long long)r);
    }
    if (geteuid() != 0) {
        snprintf(why, whylen, "not running as root: job cgroups and tmpfs mounts need it");
        return -EPERM;
    }
    if (!seccomp_available()) {
        snprintf(why, whylen, "the seccomp filter does not know this architecture");
        return -ENOSYS;
    }
    rc = probe_v2(h);
    if (rc < 0) {
        int rc1;

        memset(h, 0, sizeof(*h));
        rc1 = probe_v1(h);
        if (rc1 < 0) {
            snprintf(why, whylen,
                     "no usable cgroup: v2 without the memory and pids controllers here (%s), "
                     "v1 memory, pids and cpuacct not writable (%s)",
                     strerror(-rc), strerror(-rc1));
            return rc1;
        }
    }
    pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        return -errno;
    }
    if (pid == 0)
        probe_ns_child();
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            snprintf(why, whylen, "waitpid: %s", strerror(errno));
            return -ECHILD;
        }
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        int k = WIFEXITED(st) && WEXITSTATUS(st) >= 10 && WEXITSTATUS(st) <= 17
                    ? WEXITSTATUS(st) - 10
                    : 5;

        snprintf(why, whylen, "%s", ns_why[k]);
        return -EPERM;
    }
    return 0;
}

void
sandbox_describe(const struct sandbox_host *h, char *buf, size_t len)
{
    if (h->cg_version == 2)
        snprintf(buf, len, "cgroup v2 (memory, pids, cpu) under %s", h->cg_dir[0]);
    else
        snprintf(buf, len, "cgroup v1 (memory, pids, cpuacct) under %s, %s, %s",
                 h->cg_dir[0], h->cg_dir[1], h->cg_dir[2]);
}

static int
cg_set(const char *dir, const char *file, const char *val)
{
    char path[PATH_MAX + 64];

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return write_file(path, val);
}

int
sandbox_cg_create(struct sandbox_host *h, struct sandbox_cg *cg, uint64_t mem_bytes,
                  unsigned long pids)
{
    char num[32], pnum[32];
    int i, rc = 0;

    memset(cg, 0, sizeof(*cg));
    cg->version = h->cg_version;
    for (i = 0; i < SANDBOX_CG_MAX; i++)
        cg->procs_fd[i] = -1;
    h->seq++;
    snprintf(num, sizeof(num), "%llu", (unsigned long long)mem_bytes);
    snprintf(pnum, sizeof(pnum), "%lu", pids);
    for (i = 0; i < h->ncg && rc == 0; i++) {
        char path[PATH_MAX + 64];

        if ((size_t)snprintf(cg->dir[i], sizeof(cg->dir[i]), "%s/job-%s-%lu", h->cg_dir[i],
                             h->tag, h->seq) >= sizeof(cg->dir[i])) {
            rc = -ENAMETOOLONG;
            break;
        }
        if (mkdir(cg->dir[i], 0755) < 0) {
            rc = -errno;
            break;
        }
        cg->n = i + 1;
        snprintf(path, sizeof(path), "%s/cgroup.procs", cg->dir[i]);
        cg->procs_fd[i] = open(path, O_WRONLY | O_CLOEXEC);
        if (cg->procs_fd[i] < 0) {
            rc = -errno;
            break;
        }
    }
    if (rc == 0 && cg->version == 2) {
        rc = cg_set(cg->dir[0], "memory.max", num);
        if (rc == 0)
            (void)cg_set(cg->dir[0], "memory.swap.max", "0");
        if (rc == 0)
            rc = cg_set(cg->dir[0], "pids.max", pnum);
    } else if (rc == 0) {
        rc = cg_set(cg->dir[0], "memory.limit_in_bytes", num);
        /* Swap counted where the kernel accounts it; else no swap is used here. */
        if (rc == 0 && cg_set(cg->dir[0], "memory.memsw.limit_in_bytes", num) < 0)
            (void)cg_set(cg->dir[0], "memory.swappiness", "0");
        if (rc == 0)
            rc = cg_set(cg->dir[1], "pids.max", pnum);
    }
    if (rc < 0) {
        sandbox_cg_close_fds(cg);
        (void)sandbox_cg_destroy(cg);
    }
    return rc;
}

void
sandbox_cg_close_fds(struct sandbox_cg *cg)
{
    for (int i = 0; i < SANDBOX_CG_MAX; i++) {
        if (cg->procs_fd[i] >= 0) {
            close(cg->procs_fd[i]);
            cg->procs_fd[i] = -1;
        }
    }
}

uint64_t
sandbox_cg_oom_kills(const struct sandbox_cg *cg)
{
    if (cg->n == 0)
        return 0;
    if (cg->version == 2)
        return read_u64_key(cg->dir[0], "memory.events", "oom_kill");
    return read_u64_key(cg->dir[0], "memory.oom_control", "oom_kill");
}

uint64_t
sandbox_cg_pids_refused(const struct sandbox_cg *cg)
{
    if (cg->n == 0)
        return 0;
    if (cg->version == 2)
        return read_u64_key(cg->dir[0], "pids.events", "max");
    return cg->n > 1 ? read_u64_key(cg->dir[1], "pids.events", "max") : 0;
}

uint64_t
sandbox_cg_cpu_ns(const struct sandbox_cg *cg)
{
    if (cg->n == 0)
        return 0;
    if (cg->version == 2)
        return read_u64_key(cg->dir[0], "cpu.stat", "usage_usec") * 1000u;
    return cg->n > 2 ? read_u64_key(cg->dir[2], "cpuacct.usage", NULL) : 0;
}

/* cg_kill sends SIGKILL to every process listed in dir/cgroup.procs. */
static void
cg_kill(const char *dir)
{
    char path[PATH_MAX + 64], buf[4096];
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    while ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
        char *p = buf;

        buf[n] = '\0';
        while (*p != '\0') {
            char *end;
            long pid = strtol(p, &end, 10);

            if (end == p)
                break;
            if (pid > 0)
                kill((pid_t)pid, SIGKILL);
            p = end;
            while (*p == '\n')
                p++;
        }
    }
    close(fd);
}

bool
sandbox_cg_empty(const struct sandbox_cg *cg)
{
    char path[PATH_MAX + 32], c;
    int fd;
    ssize_t n;

    if (cg->n == 0 || cg->dir[0][0] == '\0')
        return true;
    if (pjoin(path, sizeof(path), cg->dir[0], "/cgroup.procs") < 0)
        return true;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    n = read(fd, &c, 1);
    close(fd);
    return n <= 0;
}

void
sandbox_cg_kill(const struct sandbox_cg *cg)
{
    for (int i = 0; i < cg->n; i++) {
        if (cg->dir[i][0] == '\0')
            continue;
        if (cg->version == 2)
            (void)cg_set(cg->dir[i], "cgroup.kill", "1");
        cg_kill(cg->dir[i]);
    }
}

int
sandbox_cg_destroy(struct sandbox_cg *cg)
{
    int i, rc = 0;

    for (i = cg->n - 1; i >= 0; i--) {
        if (cg->dir[i][0] == '\0')
            continue;
        if (rmdir(cg->dir[i]) == 0 || errno == ENOENT) {
            cg->dir[i][0] = '\0';
            continue;
        }
        if (errno == EBUSY) {
            if (cg->version == 2)
                (void)cg_set(cg->dir[i], "cgroup.kill", "1");
            cg_kill(cg->dir[i]);
            if (rmdir(cg->dir[i]) == 0) {
                cg->dir[i][0] = '\0';
                continue;
            }
        }
        rc = -EBUSY;
    }
    if (rc == 0)
        cg->n = 0;
    return rc;
}

/* ---- the job's processes ------------------------------------------------------------ */

int
sandbox_mount_base(const struct sandbox_job *sj)
{
    char opts[64], path[PATH_MAX];
    static const char *const dirs[] = {"task", "tmp", "root"};

    snprintf(opts, sizeof(opts), "size=%llu,mode=0711", (unsigned long long)sj->disk_bytes);
    if (mount("tmpfs", sj->base, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return -errno;
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", sj->base, dirs[i]);
        if (mkdir(path, i == 1 ? 01777 : 0755) < 0)
            return -errno;
        if (i == 1 && chmod(path, 01777) < 0)
            return -errno;
    }
    return 0;
}

/* The status I reports to S through a shared page. */
struct relay {
    int valid;
    int status;
};

/* remount_flags: the flags of the mount at path that a user namespace may not drop. */
static unsigned long
remount_flags(const char *path)
{
    struct statvfs sv;
    unsigned long f = 0;

    if (statvfs(path, &sv) < 0)
        return 0;
    if (sv.f_flag & ST_NOEXEC)
        f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        f |= MS_RELATIME;
    if (sv.f_flag & ST_NODEV)
        f |= MS_NODEV;
    if (sv.f_flag & ST_RDONLY)
        f |= MS_RDONLY;
    return f;
}

enum bind_kind { BIND_RO, BIND_RW, BIND_DEV };

/* bind mounts src on root/dst (made as a directory or a file like src). Returns 0,
 * -ENOENT when src does not exist, or -errno. */
static int
bind_at(const char *root, const char *src, const char *dst, enum bind_kind kind)
{
    char path[PATH_MAX];
    struct stat st;
    unsigned long fl;

    if (stat(src, &st) < 0)
        return -errno;
    if ((size_t)snprintf(path, sizeof(path), "%s%s", root, dst) >= sizeof(path))
        return -ENAMETOOLONG;
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -errno;
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

        if (fd < 0)
            return -errno;
        close(fd);
    }
    if (mount(src, path, "none", MS_BIND | MS_REC, NULL) < 0)
        return -errno;
    fl = MS_BIND | MS_REMOUNT | MS_NOSUID | remount_flags(path);
    if (kind == BIND_RO)
        fl |= MS_RDONLY | MS_NODEV;
    else if (kind == BIND_RW)
        fl |= MS_NODEV;
    else
        fl &= ~(unsigned long)MS_NODEV;
    if (mount("none", path, "none", fl, NULL) < 0)
        return -errno;
    return 0;
}

/* host_top recreates the host's top-level directory name: a bind when it is a directory, a
 * link when it is a link, nothing when it is absent. */
static int
host_top(const char *root, const char *name)
{
    char path[PATH_MAX], target[PATH_MAX];
    struct stat st;
    ssize_t n;

    if (lstat(name, &st) < 0)
        return 0;
    if (S_ISLNK(st.st_mode)) {
        n = readlink(name, target, sizeof(target) - 1);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        snprintf(path, sizeof(path), "%s%s", root, name);
        return symlink(target, path) < 0 ? -errno : 0;
    }
    if (!S_ISDIR(st.st_mode))
        return 0;
    return bind_at(root, name, name, BIND_RO);
}

/* optional turns "src is absent" into success. */
static int
optional(int rc)
{
    return rc == -ENOENT ? 0 : rc;
}

/* rootfs_tops binds the top-level entries of an environment's rootfs/ on root, read-only
 * (links recreated), except the ones the sandbox provides. */
static int
rootfs_tops(const char *rootfs, const char *root)
{
    static const char *const ours[] = {"dev", "proc", "tmp", "work", "task", "env"};
    DIR *d = opendir(rootfs);
    struct dirent *e;
    int rc = 0;

    if (d == NULL)
        return -errno;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char src[PATH_MAX], dst[NAME_MAX + 2], target[PATH_MAX];
        bool skip = e->d_name[0] == '.' &&
                    (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0'));
        struct stat st;

        for (size_t i = 0; !skip && i < sizeof(ours) / sizeof(ours[0]); i++)
            skip = strcmp(e->d_name, ours[i]) == 0;
        if (skip)
            continue;
        if ((size_t)snprintf(src, sizeof(src), "%s/%s", rootfs, e->d_name) >= sizeof(src)) {
            rc = -ENAMETOOLONG;
            break;
        }
        snprintf(dst, sizeof(dst), "/%s", e->d_name);
        if (lstat(src, &st) < 0) {
            rc = -errno;
        } else if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(src, target, sizeof(target) - 1);
            char path[PATH_MAX];

            if (n < 0 || pjoin(path, sizeof(path), root, dst) < 0) {
                rc = n < 0 ? -errno : -ENAMETOOLONG;
                break;
            }
            target[n] = '\0';
            if (symlink(target, path) < 0)
                rc = -errno;
        } else if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
            rc = bind_at(root, src, dst, BIND_RO);
        }
    }
    closedir(d);
    return rc;
}

/* build_root makes the job's root under base/root (I, before pivot_root). */
static int
build_root(const struct sandbox_job *sj, const char *root)
{
    static const char *const tops[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                       "/libx32"};
    static const char *const etc[] = {"/etc/alternatives", "/etc/ld.so.cache",
                                      "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                                      "/etc/localtime", "/etc/nsswitch.conf"};
    static const char *const etc_net[] = {"/etc/resolv.conf", "/etc/ssl"};
    static const char *const devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char *const links[][2] = {{"/proc/self/fd", "fd"},
                                           {"/proc/self/fd/0", "stdin"},
                                           {"/proc/self/fd/1", "stdout"},
                                           {"/proc/self/fd/2", "stderr"}};
    char path[PATH_MAX], src[PATH_MAX];
    size_t i;
    int rc;

    if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, ROOT_TMPFS_OPTS) < 0)
        return -errno;
    if (sj->rootfs != NULL) {
        rc = rootfs_tops(sj->rootfs, root);
        if (rc < 0)
            return rc;
    }
    for (i = 0; sj->rootfs == NULL && i < sizeof(tops) / sizeof(tops[0]); i++) {
        rc = host_top(root, tops[i]);
        if (rc < 0)
            return rc;
    }
    if (pjoin(path, sizeof(path), root, "/etc") < 0)
        return -ENAMETOOLONG;
    if (mkdir(path, 0755) < 0) {
        if (errno != EEXIST || sj->rootfs == NULL)
            return -errno;
        goto dev; /* the environment's own /etc */
    }
    for (i = 0; sj->rootfs == NULL && i < sizeof(etc) / sizeof(etc[0]); i++) {
        rc = optional(bind_at(root, etc[i], etc[i], BIND_RO));
        if (rc < 0)
            return rc;
    }
    for (i = 0; sj->network && i < sizeof(etc_net) / sizeof(etc_net[0]); i++) {
        rc = optional(bind_at(root, etc_net[i], etc_net[i], BIND_RO));
        if (rc < 0)
            return rc;
    }
    if (pjoin(path, sizeof(path), root, "/etc/passwd") < 0)
        return -ENAMETOOLONG;
    rc = write_new(path,
                   "root:x:0:0:root:/root:/bin/sh\n"
                   "worker:x:4242:4242:INGInious job:/work:/bin/sh\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                   0644);
    if (rc == 0) {
        if (pjoin(path, sizeof(path), root, "/etc/group") < 0)
            return -ENAMETOOLONG;
        rc = write_new(path, "root:x:0:\nworker:x:4242:\nnogroup:x:65534:\n", 0644);
    }
    if (rc == 0) {
        if (pjoin(path, sizeof(path), root, "/etc/hosts") < 0)
            return -ENAMETOOLONG;
        rc = write_new(path,
                       "127.0.0.1 localhost " SANDBOX_HOSTNAME "\n::1 localhost ip6-localhost\n",
                       0644);
    }
    if (rc < 0)
        return rc;
dev:
    /* /dev */
    if (pjoin(path, sizeof(path), root, "/dev") < 0)
        return -ENAMETOOLONG;
    if (mkdir(path, 0755) < 0 ||
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") < 0)
        return -errno;
    for (i = 0; i < sizeof(devs) / sizeof(devs[0]); i++) {
        char dst[64];

        snprintf(src, sizeof(src), "/dev/%s", devs[i]);
        snprintf(dst, sizeof(dst), "/dev/%s", devs[i]);
        rc = optional(bind_at(root, src, dst, BIND_DEV));
        if (rc < 0)
            return rc;
    }
    for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        if ((size_t)snprintf(path, sizeof(path), "%s/dev/%s", root, links[i][1]) >= sizeof(path))
            return -ENAMETOOLONG;
        if (symlink(links[i][0], path) < 0)
            return -errno;
    }
    if (pjoin(path, sizeof(path), root, "/dev") < 0)
        return -ENAMETOOLONG;
    if (mount("none", path, "none", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) <
        0)
        return -errno;
    /* the job's folders */
    if (pjoin(src, sizeof(src), sj->base, "/task") < 0)
        return -ENAMETOOLONG;
    rc = bind_at(root, src, "/work", BIND_RW);
    if (rc == 0) {
        if (pjoin(src, sizeof(src), sj->base, "/tmp") < 0)
            return -ENAMETOOLONG;
        rc = bind_at(root, src, "/tmp", BIND_RW);
    }
    if (rc == 0)
        rc = bind_at(root, sj->env_dir, "/env", BIND_RO);
    if (rc == 0 && sj->task_src != NULL)
        rc = bind_at(root, sj->task_src, "/task", BIND_RO);
    if (rc < 0)
        return rc;
    if (pjoin(path, sizeof(path), root, "/proc") < 0)
        return -ENAMETOOLONG;
    if (mkdir(path, 0555) < 0 ||
        mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return -errno;
    return 0;
}

static int
lo_up(void)
{
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = 0;

    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        rc = -errno;
    } else {
        ifr.ifr_flags = (short)(ifr.ifr_flags | IFF_UP);
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
            rc = -errno;
    }
    close(fd);
    return rc;
}

/* capset's arguments (linux/capability.h, version 3: two 32-bit words per set). */
struct cap_header {
    uint32_t version;
    int pid;
};

struct cap_data {
    uint32_t effective;
    uint32_t permitted;
    uint32_t inheritable;
};

#define CAP_VERSION_3 0x20080522u

/* drop_caps empties the bounding, ambient, inheritable, permitted and effective sets. */
static int
drop_caps(void)
{
    struct cap_header hdr = {CAP_VERSION_3, 0};
    struct cap_data data[2];

    for (int c = 0; c < 64; c++) {
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    }
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    return 0;
}

static void
close_from(int lo)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lo, ~0u, 0u) == 0)
        return;
#endif
    for (int i = lo; i < 65536; i++)
        close(i);
}

/* init_main is I: the root, then G, then PID 1's reaping until G is gone. */
static int
init_main(const struct sandbox_job *sj, struct relay *rel, enum sandbox_stage *stage)
{
    char root[PATH_MAX];
    pid_t g;
    int rc;

    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    *stage = SBX_MOUNT;
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
        return -errno;
    if (pjoin(root, sizeof(root), sj->base, "/root") < 0)
        return -ENAMETOOLONG;
    rc = build_root(sj, root);
    if (rc < 0)
        return rc;
    *stage = SBX_PIVOT;
    if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return -errno;
    if (mount("none", "/", "none", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
        0)
        return -errno;
    *stage = SBX_HOSTNAME;
    if (sethostname(SANDBOX_HOSTNAME, strlen(SANDBOX_HOSTNAME)) < 0)
        return -errno;
    if (!sj->network) {
        *stage = SBX_NET;
        rc = lo_up();
        if (rc < 0)
            return rc;
    }
    *stage = SBX_FORK;
    g = fork();
    if (g < 0)
        return -errno;
    if (g == 0)
        return 0;
    /* I: nothing of the job's; reap until G is gone. */
    close_from(0);
    for (;;) {
        int st;
        pid_t p = waitpid(-1, &st, 0);

        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            _exit(0);
        if (p == g) {
            rel->status = st;
            __atomic_store_n(&rel->valid, 1, __ATOMIC_SEQ_CST);
            _exit(0);
        }
    }
}

/* relay_main is S after forking I: wait for I, then end as G ended. */
static _Noreturn void
relay_main(pid_t init, struct relay *rel)
{
    int st = 0, sig;
    struct sigaction sa;
    sigset_t none;

    close_from(0);
    while (waitpid(init, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && __atomic_load_n(&rel->valid, __ATOMIC_SEQ_CST))
        st = rel->status;
    if (WIFEXITED(st))
        _exit(WEXITSTATUS(st));
    sig = WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
}

static int
write_map(const char *file, unsigned outside)
{
    char text[64];

    snprintf(text, sizeof(text), "%u %u 1\n", (unsigned)SANDBOX_UID, outside);
    return write_file(file, text);
}

/* join_cgroups (G) moves the calling process into the job's cgroups. */
static int
join_cgroups(const struct sandbox_job *sj)
{
    for (int i = 0; i < SANDBOX_CG_MAX; i++) {
        if (sj->cg_fd[i] < 0)
            continue;
        if (write(sj->cg_fd[i], "0", 1) != 1)
            return -errno;
        close(sj->cg_fd[i]);
    }
    return 0;
}

int
sandbox_enter(const struct sandbox_job *sj, enum sandbox_stage *stage)
{
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                CLONE_NEWCGROUP;
    struct relay *rel;
    pid_t init;
    int rc;

    if (!sj->network)
        flags |= CLONE_NEWNET;
    /* After setuid the process is not dumpable, and its /proc/self files belong to root. */
    (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    *stage = SBX_UNSHARE;
    if (unshare(flags) < 0)
        return -errno;
    *stage = SBX_IDMAP;
    rc = write_file("/proc/self/setgroups", "deny");
    if (rc == 0 || rc == -ENOENT)
        rc = write_map("/proc/self/uid_map", (unsigned)sj->uid);
    if (rc == 0)
        rc = write_map("/proc/self/gid_map", (unsigned)sj->gid);
    if (rc < 0)
        return rc;
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no host process of this user may trace it */
    *stage = SBX_FORK;
    rel = mmap(NULL, sizeof(*rel), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rel == MAP_FAILED)
        return -errno;
    init = fork();
    if (init < 0)
        return -errno;
    if (init > 0)
        relay_main(init, rel);
    rc = init_main(sj, rel, stage);
    if (rc < 0)
        return rc;
    /* G */
    munmap(rel, sizeof(*rel));
    *stage = SBX_CGROUP;
    rc = join_cgroups(sj);
    if (rc < 0)
        return rc;
    *stage = SBX_CAPS;
    rc = drop_caps();
    if (rc < 0)
        return rc;
    *stage = SBX_SECCOMP;
    return seccomp_install();
}
