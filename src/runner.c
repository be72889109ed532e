/* SPDX-License-Identifier: MIT */
/* runner.c: see runner.h. One job = one forked process group, two output pipes, a pidfd
 * and a temporary folder. */
#include "runner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inginious/json.h"
#include "inginious/mp.h"
#include "sandbox.h"

#define POLL_NO_PIDFD_MS 50   /* how often the child is checked without a pidfd */
#define POLL_DYING_MS 100     /* re-check period while a killed group dies */
#define POLL_CGROUP_MS 5      /* re-check period while a job's cgroup empties */
#define DYING_MAX_MS 2000     /* longest wait for it (then its processes are left) */
#define READ_CHUNK 16384      /* one read from a pipe */
#define READ_BUDGET 16        /* reads per pipe per runner_process */
#define DRAIN_ROUNDS 16       /* budgets spent draining a pipe once the job is over */
#define TREE_MAX_DEPTH 256    /* folder nesting copied or removed */
#define TIME_MAX 1000000.0    /* seconds: larger limits are clamped */
#define MEMORY_MAX (1u << 30) /* MiB */
#define CRASH_TEXT_MAX 512

static const char JOB_PATH[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
static const char EMPTY_MAP[] = "\x80";

/* One captured output stream. */
struct capture {
    int fd;           /* non-blocking read end; -1 once at end of file */
    char *buf;        /* the bytes kept, at most limit */
    size_t len;       /* bytes in buf */
    size_t limit;     /* bytes kept at most */
    uint64_t dropped; /* bytes read past the limit */
    char *text;       /* the final text: valid UTF-8, plus the truncation note */
    size_t text_len;
};

/* Where the child stopped when it could not exec. */
enum child_stage {
    STAGE_FDS,       /* moving the pipes to 0, 1, 2 */
    STAGE_CHDIR,     /* entering the folder */
    STAGE_RLIMIT,    /* setting limits */
    STAGE_SETGROUPS, /* dropping supplementary groups */
    STAGE_SETGID,    /* switching group */
    STAGE_SETUID,    /* switching user */
    STAGE_EXEC,      /* execve itself */
    STAGE_COPY,      /* copying the task folder */
    STAGE_INPUT,     /* writing input.json */
    STAGE_SANDBOX,   /* the sandbox (the third word of the report is its stage) */
};

static const char *const stage_names[] = {
    "dup2", "chdir", "setrlimit", "setgroups", "setgid", "setuid", "execve", "copy", "input",
    "sandbox",
};

/* What the child needs, all prepared before fork (the child only makes system calls). */
struct child_args {
    const char *path;  /* absolute path of run */
    char *const *argv;
    char *const *envp;
    const char *dir;   /* working directory */
    int in_fd;         /* stdin */
    int out_fd;        /* stdout (write end) */
    int err_fd;        /* stderr (write end) */
    int report_fd;     /* close-on-exec pipe: the failure report */
    const char *src;   /* the task folder to copy, or NULL */
    const char *base;  /* the job folder on the host */
    mode_t base_mode;  /* its mode */
    bool sandbox;
    struct sandbox_job sj;
    struct rlimit cpu;
    bool set_as;
    struct rlimit as;
    bool set_nproc;
    struct rlimit nproc;
    bool drop;         /* switch to uid/gid */
    uid_t uid;
    gid_t gid;
};

struct runner_job {
    char *job_id;             /* NUL-terminated copy */
    size_t job_id_len;
    char *old_state;          /* inputdata["@state"] */
    size_t old_state_len;
    double time_s;            /* CPU limit */
    double wall_s;            /* wall-clock limit */
    uint64_t memory_mib;      /* 0: none */
    pid_t pid;                /* 0 before fork and once reaped */
    int pidfd;                /* -1 when the kernel has none */
    struct capture out;
    struct capture err;
    uint64_t deadline_ms;
    int report_fd;            /* the child's report pipe until exec; -1 after */
    bool starting;            /* forked, not yet exec'd (copying the task folder) */
    bool started;             /* `run` was exec'd */
    bool sandboxed;
    struct sandbox_cg cg;     /* the job's cgroups when sandboxed */
    uint64_t cpu_ns;          /* CPU time of the job, once done */
    unsigned long pids_max;   /* the job's process limit when sandboxed */
    bool dying;               /* reaped, waiting for the cgroup to empty */
    uint64_t dying_until;
    bool killed;              /* runner_kill was called while running */
    bool timed_out;           /* the deadline passed */
    bool done;
    int status;               /* wait status of run */
    struct rusage ru;
    bool drop;                /* jobs run as uid/gid */
    uid_t uid;
    gid_t gid;
    char *base;               /* the job's private directory, or NULL */
    char *run;                /* the run file (for messages) */
    char *rootfs;             /* the environment's rootfs/ when it has one */
    char *dir;                /* base/task: the copied folder */
    struct ing_mp_writer fb;  /* feedback.json as msgpack: result views point into it */
    char crash[CRASH_TEXT_MAX];
    struct ing_job_result res;
};

/* ---- small helpers ------------------------------------------------------------------ */

static void
set_view(struct ing_view *v, const void *p, size_t len)
{
    v->p = p;
    v->len = (uint32_t)len;
}

static void
set_cview(struct ing_view *v, const char *s)
{
    set_view(v, s, strlen(s));
}

static char *
dup_view(struct ing_view v)
{
    char *s = malloc((size_t)v.len + 1);

    if (s == NULL)
        return NULL;
    if (v.len > 0)
        memcpy(s, v.p, v.len);
    s[v.len] = '\0';
    return s;
}

static char *
path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);

    if (s == NULL)
        return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* valid_component tells whether an id can name one directory level. */
static bool
valid_component(struct ing_view v)
{
    if (v.p == NULL || v.len == 0 || v.len > NAME_MAX)
        return false;
    if ((v.len == 1 && v.p[0] == '.') || (v.len == 2 && v.p[0] == '.' && v.p[1] == '.'))
        return false;
    return memchr(v.p, '/', v.len) == NULL && memchr(v.p, '\0', v.len) == NULL;
}

/* mp_number reads a positive limit: a number, or what Python's int() accepts. */
static bool
mp_number(const uint8_t *p, size_t n, double *out)
{
    struct ing_mp_obj o;
    const uint8_t *q = p;
    double v;
    int64_t i;

    if (ing_mp_read(&q, p + n, &o) < 0)
        return false;
    if (o.type == ING_MP_FLOAT)
        v = o.v.f;
    else if (o.type == ING_MP_UINT)
        v = (double)o.v.u;
    else if (ing_mp_py_int(p, n, &i) == 0)
        v = (double)i;
    else
        return false;
    if (!(v > 0.0))
        return false;
    *out = v;
    return true;
}

static bool
limit_get(struct ing_view params, const char *key, double *out)
{
    const char *keys[2] = {"limits", key};
    const uint8_t *val;
    size_t len;

    if (params.p == NULL || params.len == 0)
        return false;
    if (ing_mp_path((const uint8_t *)params.p, params.len, keys, 2, &val, &len) != 0)
        return false;
    return mp_number(val, len, out);
}

static uint64_t
ceil_u64(double v)
{
    uint64_t u = (uint64_t)v;

    if ((double)u < v)
        u++;
    return u;
}

/* ---- UTF-8 clean-up ----------------------------------------------------------------- */

/* utf8_seq returns the length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t
utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t need, i;

    if (c < 0x80)
        return 1;
    if (c < 0xc2)
        return 0;
    if (c < 0xe0) {
        need = 2;
    } else if (c < 0xf0) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c < 0xf5) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    }
    return need;
}

/* capture_finish builds c->text: the kept bytes with every invalid byte replaced by
 * U+FFFD, then the truncation note. Returns 0 or -ENOMEM. */
static int
capture_finish(struct capture *c)
{
    char note[64];
    int nl = 0;
    size_t i = 0, o = 0;
    const uint8_t *s = (const uint8_t *)c->buf;

    if (c->dropped > 0)
        nl = snprintf(note, sizeof(note), "\n[... %llu bytes of output dropped]\n",
                      (unsigned long long)c->dropped);
    c->text = malloc(c->len * 3 + (size_t)nl + 1);
    if (c->text == NULL)
        return -ENOMEM;
    while (i < c->len) {
        size_t k = utf8_seq(s + i, c->len - i);

        if (k == 0) {
            memcpy(c->text + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(c->text + o, s + i, k);
            o += k;
            i += k;
        }
    }
    memcpy(c->text + o, note, (size_t)nl);
    o += (size_t)nl;
    c->text[o] = '\0';
    c->text_len = o;
    return 0;
}

/* capture_read reads what is available (at most budget reads). Returns true when it read
 * anything or reached end of file. */
static bool
capture_read(struct capture *c, int budget)
{
    char tmp[READ_CHUNK];
    bool progress = false;

    while (c->fd >= 0 && budget-- > 0) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));

        if (n > 0) {
            size_t keep = c->limit - c->len;

            if (keep > (size_t)n)
                keep = (size_t)n;
            memcpy(c->buf + c->len, tmp, keep);
            c->len += keep;
            c->dropped += (size_t)n - keep;
            progress = true;
        } else if (n == 0) {
            close_fd(&c->fd);
            return true;
        } else if (errno == EINTR) {
            budget++;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            close_fd(&c->fd);
            return true;
        }
    }
    return progress;
}

/* ---- folders ------------------------------------------------------------------------ */

struct owner {
    bool set; /* chown what is created */
    uid_t uid;
    gid_t gid;
};

/* copy_data copies what is left to read from in to out. Returns 0 or -errno. */
static int
copy_data(int in, int out)
{
    char buf[32768];

    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf)), off = 0;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        while (off < n) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));

            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -errno;
            off += w;
        }
    }
}

static int
copy_file(int sfd, int dfd, const char *name, mode_t mode, const struct owner *own)
{
    int in, out, rc;

    in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (in < 0)
        return -errno;
    out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = -errno;
        close(in);
        return rc;
    }
    rc = copy_data(in, out);
    if (rc == 0 && fchmod(out, (mode & 0777) | S_IRUSR | S_IWUSR) < 0)
        rc = -errno;
    if (rc == 0 && own->set && fchown(out, own->uid, own->gid) < 0)
        rc = -errno;
    close(in);
    close(out);
    return rc;
}

/* copy_tree copies the directory sfd into the (empty) directory dfd: directories, regular
 * files and symbolic links (as links); other file types are skipped. The copy is owned by
 * own when own->set, and its owner can always read and write it. */
static int
copy_tree(int sfd, int dfd, const struct owner *own, unsigned depth)
{
    struct dirent *e;
    DIR *d;
    int fd, rc = 0;

    if (depth > TREE_MAX_DEPTH)
        return -ELOOP;
    fd = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (d == NULL) {
        rc = -errno;
        close(fd);
        return rc;
    }
    while (rc == 0 && (errno = 0, e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        struct stat st;

        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = -errno;
        } else if (S_ISDIR(st.st_mode)) {
            int s2, d2;

            if (mkdirat(dfd, name, 0700) < 0) {
                rc = -errno;
                break;
            }
            s2 = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            d2 = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 || d2 < 0)
                rc = -errno;
            else
                rc = copy_tree(s2, d2, own, depth + 1);
            if (rc == 0 && fchmod(d2, (st.st_mode & 0777) | S_IRWXU) < 0)
                rc = -errno;
            if (rc == 0 && own->set && fchown(d2, own->uid, own->gid) < 0)
                rc = -errno;
            if (s2 >= 0)
                close(s2);
            if (d2 >= 0)
                close(d2);
        } else if (S_ISREG(st.st_mode)) {
            rc = copy_file(sfd, dfd, name, st.st_mode, own);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlinkat(sfd, name, target, sizeof(target) - 1);

            if (n < 0) {
                rc = -errno;
                break;
            }
            target[n] = '\0';
            if (symlinkat(target, dfd, name) < 0)
                rc = -errno;
            else if (own->set && fchownat(dfd, name, own->uid, own->gid, AT_SYMLINK_NOFOLLOW) < 0)
                rc = -errno;
        }
    }
    if (rc == 0 && errno != 0)
        rc = -errno;
    closedir(d);
    return rc;
}

/* rm_tree removes name (in the directory pfd) and everything below it, never following a
 * symbolic link. Best effort: what cannot be removed stays. */
static void
rm_tree(int pfd, const char *name, unsigned depth)
{
    struct dirent *e;
    DIR *d;
    int fd, pass;

    if (unlinkat(pfd, name, 0) == 0 || errno == ENOENT)
        return;
    if (depth > TREE_MAX_DEPTH)
        return;
    fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        /* Not root: a job may have taken the rights away from its own directory. */
        struct stat st;

        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
            fchmodat(pfd, name, S_IRWXU, 0) == 0)
            fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return;
    if (geteuid() != 0)
        (void)fchmod(fd, S_IRWXU);
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return;
    }
    /* Entries removed while a directory is read may make readdir skip others: rescan. */
    for (pass = 0; pass < 3; pass++) {
        bool any = false;

        rewinddir(d);
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            rm_tree(fd, e->d_name, depth + 1);
            any = true;
        }
        if (!any)
            break;
    }
    closedir(d);
    (void)unlinkat(pfd, name, AT_REMOVEDIR);
}

/* remove_base removes the job's folder without blocking the caller on a large one: a
 * sandboxed job's folder is a tmpfs, detached at once; otherwise a grandchild removes it
 * (reparented to the nearest subreaper, the agent, which reaps it). */
static void
remove_base(struct runner_job *r)
{
    pid_t pid;

    if (r->base == NULL)
        return;
    if (r->sandboxed) {
        (void)umount2(r->base, MNT_DETACH);
        rm_tree(AT_FDCWD, r->base, 0);
    } else if ((pid = fork()) == 0) {
        if (fork() == 0) {
            rm_tree(AT_FDCWD, r->base, 0);
            _exit(0);
        }
        _exit(0);
    } else if (pid > 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    } else {
        rm_tree(AT_FDCWD, r->base, 0);
    }
    free(r->base);
    r->base = NULL;
}

/* write_all writes buf to fd. Returns 0 or -errno. */
static int
write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* ---- the result --------------------------------------------------------------------- */

static void
result_base(struct runner_job *r, const char *kind, double grade)
{
    struct ing_job_result *res = &r->res;

    set_view(&res->job_id, r->job_id, r->job_id_len);
    set_cview(&res->result_kind, kind);
    set_view(&res->result_text, r->crash, strlen(r->crash));
    res->grade = grade;
    set_view(&res->problems, EMPTY_MAP, 1);
    set_view(&res->tests, EMPTY_MAP, 1);
    set_view(&res->custom, EMPTY_MAP, 1);
    set_view(&res->state, r->old_state, r->old_state_len);
    set_view(&res->archive, NULL, 0);
    set_view(&res->stdout_, r->out.text != NULL ? r->out.text : "", r->out.text_len);
    set_view(&res->stderr_, r->err.text != NULL ? r->err.text : "", r->err.text_len);
}

/* set_text formats the result text (kept in r->crash). */
static void set_text(struct runner_job *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
set_text(struct runner_job *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->crash, sizeof(r->crash), fmt, ap);
    va_end(ap);
}

/* finish_crash ends a job that could not run: kind crash, the reason as text. */
static void finish_crash(struct runner_job *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
finish_crash(struct runner_job *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->crash, sizeof(r->crash), fmt, ap);
    va_end(ap);
    close_fd(&r->out.fd);
    close_fd(&r->err.fd);
    close_fd(&r->pidfd);
    close_fd(&r->report_fd);
    r->starting = false;
    remove_base(r);
    if (r->sandboxed)
        (void)sandbox_cg_destroy(&r->cg);
    result_base(r, "crash", 0.0);
    r->done = true;
}

/* read_feedback reads the folder's feedback.json into *buf. Returns 1 when read, 0 when
 * there is none, or -1 with the reason in r->crash. */
static int
read_feedback(struct runner_job *r, char **buf, size_t *len)
{
    struct stat st;
    int bfd, dfd, fd;
    char *p;
    size_t got = 0;

    bfd = open(r->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (bfd < 0) {
        set_text(r, "Cannot open the job folder: %s", strerror(errno));
        return -1;
    }
    dfd = openat(bfd, "task", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(bfd);
    if (dfd < 0) {
        set_text(r, "The job folder is gone: %s", strerror(errno));
        return -1;
    }
    fd = openat(dfd, "feedback.json", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    close(dfd);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0) {
        set_text(r, "Cannot read feedback.json: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        set_text(r, "feedback.json is not a regular file");
        return -1;
    }
    if (r->drop && st.st_uid != r->uid) {
        close(fd);
        set_text(r, "feedback.json is not owned by the job's user");
        return -1;
    }
    if ((uint64_t)st.st_size > RUNNER_FEEDBACK_MAX) {
        close(fd);
        set_text(r, "feedback.json is larger than %u bytes", RUNNER_FEEDBACK_MAX);
        return -1;
    }
    p = malloc((size_t)st.st_size + 1);
    if (p == NULL) {
        close(fd);
        set_text(r, "Out of memory reading feedback.json");
        return -1;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *buf = p;
    *len = got;
    return 1;
}

/* fb_get looks key up in the feedback map. Returns true and the value's view when found. */
static bool
fb_get(const struct runner_job *r, const char *key, const uint8_t **val, size_t *len)
{
    return ing_mp_map_get(r->fb.buf, r->fb.len, key, strlen(key), val, len) == 0;
}

static bool
fb_str(const uint8_t *p, size_t n, struct ing_view *out)
{
    struct ing_mp_obj o;
    const uint8_t *q = p;

    if (ing_mp_read(&q, p + n, &o) < 0 || o.type != ING_MP_STR)
        return false;
    set_view(out, o.v.s.p, o.v.s.len);
    return true;
}

static bool
fb_is_map(const uint8_t *p, size_t n)
{
    struct ing_mp_obj o;
    const uint8_t *q = p;

    return ing_mp_read(&q, p + n, &o) == 0 && o.type == ING_MP_MAP;
}

/* apply_feedback turns feedback.json (text[0..n)) into the result. Returns 0, or -1 after
 * finishing the job as crash. */
static int
apply_feedback(struct runner_job *r, const char *text, size_t n, const char *exit_kind)
{
    struct ing_json_error jerr;
    struct ing_job_result *res = &r->res;
    struct ing_view kind = {NULL, 0}, ktext = {NULL, 0};
    const uint8_t *v;
    size_t vl;
    struct ing_mp_obj o;
    const uint8_t *q;
    int rc;

    ing_mp_writer_init_dyn(&r->fb);
    rc = ing_json_to_mp(text, n, &r->fb, &jerr);
    if (rc == -EPROTO) {
        finish_crash(r, "feedback.json is not valid JSON (line %u, column %u: %s)", jerr.line,
                     jerr.column, jerr.msg);
        return -1;
    }
    if (rc < 0 || r->fb.len > UINT32_MAX) {
        finish_crash(r, "Cannot convert feedback.json: %s", strerror(rc < 0 ? -rc : ENOMEM));
        return -1;
    }
    if (!fb_is_map(r->fb.buf, r->fb.len)) {
        finish_crash(r, "feedback.json is not a JSON object");
        return -1;
    }
    if (fb_get(r, "result", &v, &vl)) {
        q = v;
        if (ing_mp_read(&q, v + vl, &o) == 0 && o.type == ING_MP_ARRAY && o.v.n >= 1 &&
            o.v.n <= 2) {
            const uint8_t *end = v + vl, *item = q;

            if (!fb_str(item, (size_t)(end - item), &kind)) {
                finish_crash(r, "feedback.json: \"result\" must be a string or [kind, text]");
                return -1;
            }
            if (o.v.n == 2) {
                if (ing_mp_skip(&item, end, ING_MP_MAX_DEPTH) < 0 ||
                    !fb_str(item, (size_t)(end - item), &ktext)) {
                    finish_crash(r, "feedback.json: \"result\" must be a string or [kind, text]");
                    return -1;
                }
            }
        } else if (!fb_str(v, vl, &kind)) {
            finish_crash(r, "feedback.json: \"result\" must be a string or [kind, text]");
            return -1;
        }
    }
    r->crash[0] = '\0';
    result_base(r, kind.len > 0 ? "" : exit_kind, 0.0);
    if (kind.len > 0)
        res->result_kind = kind;
    if (ktext.p != NULL)
        res->result_text = ktext;
    if (fb_get(r, "text", &v, &vl) && !fb_str(v, vl, &res->result_text)) {
        finish_crash(r, "feedback.json: \"text\" must be a string");
        return -1;
    }
    res->grade = ing_view_eq(res->result_kind, "success") ? 100.0 : 0.0;
    if (fb_get(r, "grade", &v, &vl)) {
        q = v;
        if (ing_mp_read(&q, v + vl, &o) < 0 ||
            (o.type != ING_MP_INT && o.type != ING_MP_UINT && o.type != ING_MP_FLOAT)) {
            finish_crash(r, "feedback.json: \"grade\" must be a number");
            return -1;
        }
        res->grade = o.type == ING_MP_INT    ? (double)o.v.i
                     : o.type == ING_MP_UINT ? (double)o.v.u
                                             : o.v.f;
        if (!(res->grade >= 0.0))
            res->grade = 0.0;
        if (res->grade > 100.0)
            res->grade = 100.0;
    }
    {
        static const char *const maps[] = {"problems", "tests", "custom"};
        struct ing_view *dst[] = {&res->problems, &res->tests, &res->custom};
        size_t i;

        for (i = 0; i < 3; i++) {
            if (!fb_get(r, maps[i], &v, &vl))
                continue;
            if (!fb_is_map(v, vl)) {
                finish_crash(r, "feedback.json: \"%s\" must be an object", maps[i]);
                return -1;
            }
            set_view(dst[i], v, vl);
        }
    }
    if (fb_get(r, "state", &v, &vl) && !fb_str(v, vl, &res->state)) {
        finish_crash(r, "feedback.json: \"state\" must be a string");
        return -1;
    }
    return 0;
}

/* signal_name returns the name of the signals a grader commonly dies of, else "?". */
static const char *
signal_name(int sig)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = {
        {SIGHUP, "HUP"},   {SIGINT, "INT"},   {SIGQUIT, "QUIT"}, {SIGILL, "ILL"},
        {SIGTRAP, "TRAP"}, {SIGABRT, "ABRT"}, {SIGBUS, "BUS"},   {SIGFPE, "FPE"},
        {SIGKILL, "KILL"}, {SIGUSR1, "USR1"}, {SIGSEGV, "SEGV"}, {SIGUSR2, "USR2"},
        {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"}, {SIGTERM, "TERM"}, {SIGXCPU, "XCPU"},
        {SIGXFSZ, "XFSZ"}, {SIGSYS, "SYS"},
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (names[i].sig == sig)
            return names[i].name;
    }
    return "?";
}

/* finish builds the result once run has been reaped (rules of runner.h). */
static void
finish(struct runner_job *r)
{
    int st = r->status;
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    double cpu = (double)r->ru.ru_utime.tv_sec + (double)r->ru.ru_utime.tv_usec / 1e6 +
                 (double)r->ru.ru_stime.tv_sec + (double)r->ru.ru_stime.tv_usec / 1e6;
    const char *exit_kind = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "success" : "failed";
    char *fb = NULL;
    size_t fblen = 0;
    uint64_t oom = 0, refused = 0;
    int rc;

    r->cpu_ns = (uint64_t)(cpu * 1e9);
    if (capture_finish(&r->out) < 0 || capture_finish(&r->err) < 0) {
        finish_crash(r, "Out of memory");
        return;
    }
    r->crash[0] = '\0';
    if (r->sandboxed) {
        oom = sandbox_cg_oom_kills(&r->cg);
        refused = sandbox_cg_pids_refused(&r->cg);
        r->cpu_ns = sandbox_cg_cpu_ns(&r->cg);
    }
    if (r->killed) {
        set_text(r, "The job was killed");
        result_base(r, "killed", 0.0);
    } else if (r->timed_out && !r->started) {
        finish_crash(r, "The job did not start within %g s (copying the task folder)",
                     r->wall_s);
        return;
    } else if (r->timed_out) {
        set_text(r, "Time limit exceeded (%g s of wall-clock time)%s", r->wall_s,
                 refused > 0 ? "; the process limit was reached" : "");
        result_base(r, "timeout", 0.0);
    } else if (sig == SIGXCPU || (sig == SIGKILL && cpu >= (double)ceil_u64(r->time_s))) {
        set_text(r, "Time limit exceeded (%g s of CPU time)", r->time_s);
        result_base(r, "timeout", 0.0);
    } else if (oom > 0) {
        set_text(r, "Memory limit exceeded (%llu MiB): the kernel ended %llu process%s of the job",
                 (unsigned long long)(r->memory_mib != 0 ? r->memory_mib
                                                         : SANDBOX_MEMORY_DEFAULT_MIB),
                 (unsigned long long)oom, oom > 1 ? "es" : "");
        result_base(r, "overflow", 0.0);
    } else if ((rc = read_feedback(r, &fb, &fblen)) != 0) {
        if (rc < 0) {
            char why[CRASH_TEXT_MAX];

            memcpy(why, r->crash, sizeof(why));
            finish_crash(r, "%s", why);
        } else {
            apply_feedback(r, fb, fblen, exit_kind);
        }
        free(fb);
    } else if (refused > 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        set_text(r, "Process limit exceeded (%lu processes): %llu fork%s refused",
                 r->pids_max, (unsigned long long)refused, refused > 1 ? "s" : "");
        result_base(r, "overflow", 0.0);
    } else if (r->memory_mib > 0 &&
               (sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT || sig == SIGKILL)) {
        set_text(r, "Memory limit exceeded (%llu MiB): the grader died of signal %d (SIG%s)",
                 (unsigned long long)r->memory_mib, sig, signal_name(sig));
        result_base(r, "overflow", 0.0);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        result_base(r, "success", 100.0);
    } else {
        if (sig != 0)
            set_text(r, "The grader was killed by signal %d (SIG%s)", sig, signal_name(sig));
        else
            set_text(r, "The grader exited with status %d", WEXITSTATUS(st));
        result_base(r, "failed", 0.0);
    }
    remove_base(r);
    if (r->sandboxed)
        (void)sandbox_cg_destroy(&r->cg);
    r->done = true;
}

/* ---- the child ---------------------------------------------------------------------- */

static _Noreturn void
child_fail3(int report_fd, enum child_stage stage, int err, int sub)
{
    int msg[3] = {(int)stage, err, sub};
    ssize_t w = write(report_fd, msg, sizeof(msg));

    (void)w;
    _exit(127);
}

static _Noreturn void
child_fail(int report_fd, enum child_stage stage)
{
    child_fail3(report_fd, stage, errno, 0);
}

/* child_folder makes the job's folder base/task (on the job's tmpfs when sandboxed), copies
 * the task into it and writes input.json from stdin (fd 0, a private copy). Runs in the
 * child, as root when jobs run as another user. Returns 0 or -errno with *stage set. */
static int
child_folder(const struct child_args *a, enum child_stage *stage)
{
    struct owner own = {a->drop, a->uid, a->gid};
    int bfd, dfd, sfd, fd, rc = 0;

    *stage = STAGE_SANDBOX;
    if (a->sandbox && (rc = sandbox_mount_base(&a->sj)) < 0)
        return rc;
    *stage = STAGE_COPY;
    bfd = open(a->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (bfd < 0)
        return -errno;
    /* The job's user must be able to reach base/task, not to list or change base. */
    if (fchmod(bfd, a->base_mode) < 0 || (!a->sandbox && mkdirat(bfd, "task", 0700) < 0)) {
        rc = -errno;
        close(bfd);
        return rc;
    }
    dfd = openat(bfd, "task", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(bfd);
    if (dfd < 0)
        return -errno;
    if (fchmod(dfd, 0700) < 0 || (own.set && fchown(dfd, own.uid, own.gid) < 0))
        rc = -errno;
    if (rc == 0 && a->src != NULL) {
        sfd = open(a->src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0) {
            rc = -errno;
        } else {
            struct stat st;

            rc = copy_tree(sfd, dfd, &own, 0);
            if (rc == 0 && (fstat(sfd, &st) < 0 || fchmod(dfd, (st.st_mode & 0777) | S_IRWXU) < 0))
                rc = -errno;
            close(sfd);
        }
    }
    if (rc < 0) {
        close(dfd);
        return rc;
    }
    *stage = STAGE_INPUT;
    (void)unlinkat(dfd, "input.json", 0);
    fd = openat(dfd, "input.json", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    close(dfd);
    if (fd < 0)
        return -errno;
    /* stdin is read to its end, then rewound for the job. */
    rc = copy_data(0, fd);
    if (rc == 0 && lseek(0, 0, SEEK_SET) < 0)
        rc = -errno;
    if (rc == 0 && fchmod(fd, 0644) < 0)
        rc = -errno;
    if (rc == 0 && own.set && fchown(fd, own.uid, own.gid) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* child_run runs in the forked child: the folder, the limits, the user, the sandbox, then
 * exec. The agent is single-threaded, so the copy may use the C library freely. */
static _Noreturn void
child_run(const struct child_args *a)
{
    struct sigaction sa;
    sigset_t none;
    struct sandbox_job sj = a->sj;
    enum child_stage stage;
    int fds[4 + SANDBOX_CG_MAX] = {a->in_fd, a->out_fd, a->err_fd, a->report_fd};
    int nfds = 4;
    int i, sig, rc, report = a->report_fd;

    /* Dispositions the agent set (ignored SIGPIPE, blocked SIGTERM) must not leak. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (sig = 1; sig < 32; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL);
    }
    setsid();
    if (a->sandbox) {
        for (i = 0; i < SANDBOX_CG_MAX; i++) {
            if (sj.cg_fd[i] >= 0)
                fds[nfds++] = sj.cg_fd[i];
        }
    }
    /* Move the fds above 10 first so that dup2 to 0..n-1 cannot clobber one. */
    for (i = 0; i < nfds; i++) {
        fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
        if (fds[i] < 0)
            child_fail(report, STAGE_FDS);
        if (i == 3)
            report = fds[i];
    }
    for (i = 0; i < nfds; i++) {
        if (dup2(fds[i], i) < 0)
            child_fail(report, STAGE_FDS);
        if (i >= 3 && fcntl(i, F_SETFD, FD_CLOEXEC) < 0)
            child_fail(report, STAGE_FDS);
    }
    report = 3;
    for (i = 0; i < SANDBOX_CG_MAX; i++)
        sj.cg_fd[i] = 4 + i < nfds ? 4 + i : -1;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)nfds, ~0u, 0u) < 0)
#endif
    {
        for (i = nfds; i < 65536; i++)
            close(i);
    }
    rc = child_folder(a, &stage);
    if (rc < 0)
        child_fail3(report, stage, -rc, SBX_MOUNT_BASE);
    {
        struct rlimit zero = {0, 0};

        if (setrlimit(RLIMIT_CORE, &zero) < 0 || setrlimit(RLIMIT_CPU, &a->cpu) < 0)
            child_fail(report, STAGE_RLIMIT);
        if (a->set_as && setrlimit(RLIMIT_AS, &a->as) < 0)
            child_fail(report, STAGE_RLIMIT);
        if (a->set_nproc && setrlimit(RLIMIT_NPROC, &a->nproc) < 0)
            child_fail(report, STAGE_RLIMIT);
    }
    if (a->drop) {
        if (setgroups(1, &a->gid) < 0)
            child_fail(report, STAGE_SETGROUPS);
        if (setgid(a->gid) < 0)
            child_fail(report, STAGE_SETGID);
        if (setuid(a->uid) < 0)
            child_fail(report, STAGE_SETUID);
    }
    if (a->sandbox) {
        enum sandbox_stage sst = SBX_UNSHARE;

        rc = sandbox_enter(&sj, &sst);
        if (rc < 0)
            child_fail3(report, STAGE_SANDBOX, -rc, (int)sst);
    }
    if (chdir(a->dir) < 0)
        child_fail(report, STAGE_CHDIR);
    execve(a->path, a->argv, a->envp);
    child_fail(report, STAGE_EXEC);
}

/* ---- start -------------------------------------------------------------------------- */

struct env_list {
    char *v[24];
    size_t n;
};

static int
env_add(struct env_list *e, const char *key, const char *val, size_t vlen)
{
    size_t kl = strlen(key);
    char *s;

    if (e->n + 1 >= sizeof(e->v) / sizeof(e->v[0]))
        return -ENOMEM;
    vlen = strnlen(val, vlen); /* an embedded NUL ends the value */
    s = malloc(kl + vlen + 2);
    if (s == NULL)
        return -ENOMEM;
    memcpy(s, key, kl);
    s[kl] = '=';
    memcpy(s + kl + 1, val, vlen);
    s[kl + 1 + vlen] = '\0';
    e->v[e->n++] = s;
    e->v[e->n] = NULL;
    return 0;
}

static int
env_addv(struct env_list *e, const char *key, struct ing_view v)
{
    return env_add(e, key, v.p != NULL ? v.p : "", v.len);
}

static int
env_addf(struct env_list *e, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
env_addf(struct env_list *e, const char *key, const char *fmt, ...)
{
    char buf[64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return env_add(e, key, buf, strlen(buf));
}

static void
env_free(struct env_list *e)
{
    size_t i;

    for (i = 0; i < e->n; i++)
        free(e->v[i]);
    e->n = 0;
}

static int
build_env(struct env_list *e, const struct runner_job *r, const struct ing_job_spec *job,
          const char *dir, const char *run_dir, bool taskless)
{
    static const char *const debug_names[] = {"0", "1", "ssh"};
    char *input = path_join(dir, "input.json");
    char *feedback = path_join(dir, "feedback.json");
    struct ing_view none = {"", 0};
    int rc = 0;

    e->n = 0;
    e->v[0] = NULL;
    if (input == NULL || feedback == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        rc = env_add(e, "PATH", JOB_PATH, strlen(JOB_PATH));
    if (rc == 0)
        rc = env_add(e, "HOME", dir, strlen(dir));
    if (rc == 0)
        rc = env_add(e, "LANG", "C.UTF-8", 7);
    if (rc == 0)
        rc = env_addv(e, "INGINIOUS_JOB_ID", job->job_id);
    if (rc == 0)
        rc = env_addv(e, "INGINIOUS_COURSE", taskless ? none : job->course_id);
    if (rc == 0)
        rc = env_addv(e, "INGINIOUS_TASK", taskless ? none : job->task_id);
    if (rc == 0)
        rc = env_addv(e, "INGINIOUS_ENV_TYPE", job->environment_type);
    if (rc == 0)
        rc = env_addv(e, "INGINIOUS_ENV", job->environment);
    if (rc == 0)
        rc = env_add(e, "INGINIOUS_DEBUG", debug_names[job->debug <= 2 ? job->debug : 0], 3);
    if (rc == 0)
        rc = env_addf(e, "INGINIOUS_TIME_LIMIT", "%g", r->time_s);
    if (rc == 0)
        rc = env_addf(e, "INGINIOUS_MEMORY_LIMIT", "%llu", (unsigned long long)r->memory_mib);
    if (rc == 0)
        rc = env_add(e, "INGINIOUS_TASK_DIR", dir, strlen(dir));
    if (rc == 0)
        rc = env_add(e, "INGINIOUS_ENV_DIR", run_dir, strlen(run_dir));
    if (rc == 0)
        rc = env_add(e, "INGINIOUS_INPUT", input, strlen(input));
    if (rc == 0)
        rc = env_add(e, "INGINIOUS_FEEDBACK", feedback, strlen(feedback));
    free(input);
    free(feedback);
    if (rc < 0)
        env_free(e);
    return rc;
}

/* make_base creates the job's private directory (its folder base/task is made by the
 * child). Returns 0 or -1 after finishing the job as crash. */
static int
make_base(struct runner_job *r, const struct runner_opts *o)
{
    const char *tmp = o->work_dir;
    char *tmpl;

    if (tmp == NULL)
        tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    tmpl = path_join(tmp, "inginious-job-XXXXXX");
    if (tmpl == NULL) {
        finish_crash(r, "Out of memory");
        return -1;
    }
    if (mkdtemp(tmpl) == NULL) {
        finish_crash(r, "Cannot create the job folder in %s: %s", tmp, strerror(errno));
        free(tmpl);
        return -1;
    }
    r->base = tmpl;
    r->dir = path_join(tmpl, "task");
    if (r->dir == NULL) {
        finish_crash(r, "Out of memory");
        return -1;
    }
    return 0;
}

/* make_input returns a readable fd holding the job's inputdata as JSON, from its start:
 * the job's stdin, and what the child writes to input.json. Or -1 after finishing the job
 * as crash. */
static int
make_input(struct runner_job *r, const struct ing_job_spec *job)
{
    struct ing_mp_writer w;
    int in, rc;

    ing_mp_writer_init_dyn(&w);
    rc = ing_mp_to_json((const uint8_t *)job->inputdata.p, job->inputdata.len, &w, 0);
    if (rc < 0) {
        ing_mp_writer_fini(&w);
        finish_crash(r, "The job's inputdata cannot be written as JSON");
        return -1;
    }
    /* A private copy that the job cannot change. */
    in = memfd_create("inginious-input", MFD_CLOEXEC);
    if (in < 0)
        in = open(r->base, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (in < 0) {
        rc = -errno;
    } else {
        rc = write_all(in, w.buf, w.len);
        if (rc == 0 && lseek(in, 0, SEEK_SET) < 0)
            rc = -errno;
    }
    ing_mp_writer_fini(&w);
    if (rc < 0) {
        if (in >= 0)
            close(in);
        finish_crash(r, "Cannot write stdin: %s", strerror(-rc));
        return -1;
    }
    return in;
}

/* spawn forks the child, which copies the folder and execs run. Never waits for it: the
 * job is starting until the report pipe closes (exec) or brings the child's failure.
 * Returns 0 or -1 after finishing the job as crash. */
static int
spawn(struct runner_job *r, struct child_args *a, uint64_t now_ms)
{
    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
    pid_t pid;

    if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
        int e = errno;

        close_fd(&outp[0]);
        close_fd(&outp[1]);
        close_fd(&errp[0]);
        close_fd(&errp[1]);
        finish_crash(r, "Cannot create pipes: %s", strerror(e));
        return -1;
    }
    a->out_fd = outp[1];
    a->err_fd = errp[1];
    a->report_fd = rep[1];
    pid = fork();
    if (pid == 0)
        child_run(a);
    close(outp[1]);
    close(errp[1]);
    close(rep[1]);
    r->out.fd = outp[0];
    r->err.fd = errp[0];
    if (pid < 0) {
        int e = errno;

        close(rep[0]);
        finish_crash(r, "Cannot fork: %s", strerror(e));
        return -1;
    }
    r->pid = pid;
    r->report_fd = rep[0];
    r->starting = true;
#ifdef SYS_pidfd_open
    r->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (r->pidfd >= 0)
        (void)fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
#endif
    (void)fcntl(r->report_fd, F_SETFL, O_NONBLOCK);
    (void)fcntl(r->out.fd, F_SETFL, O_NONBLOCK);
    (void)fcntl(r->err.fd, F_SETFL, O_NONBLOCK);
    /* Until exec the wall-clock limit also bounds the copy of the task folder. */
    r->deadline_ms = now_ms + (uint64_t)(r->wall_s * 1000.0);
    return 0;
}

/* start_failed ends a job whose child reported a failure before exec. */
static void
start_failed(struct runner_job *r, const int msg[3])
{
    int st, stage = msg[0], err = msg[1];

    kill(r->pid, SIGKILL);
    kill(-r->pid, SIGKILL);
    while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR)
        ;
    r->pid = 0;
    if (stage == STAGE_COPY)
        finish_crash(r, "Cannot copy the task folder: %s", strerror(err));
    else if (stage == STAGE_INPUT)
        finish_crash(r, "Cannot write input.json: %s", strerror(err));
    else if (stage == STAGE_SANDBOX)
        finish_crash(r, "Cannot set up the sandbox: %s failed: %s",
                     sandbox_stage_name(msg[2]), strerror(err));
    else
        finish_crash(r, "Cannot run %s: %s failed: %s", r->run != NULL ? r->run : "run",
                     stage >= 0 && stage <= STAGE_SANDBOX ? stage_names[stage] : "?",
                     strerror(err));
}

static void
read_limits(struct runner_job *r, const struct ing_job_spec *job)
{
    double v;

    r->time_s = RUNNER_TIME_DEFAULT;
    if (limit_get(job->environment_parameters, "time", &v))
        r->time_s = v < TIME_MAX ? v : TIME_MAX;
    r->wall_s = 3.0 * r->time_s;
    if (limit_get(job->environment_parameters, "hard_time", &v))
        r->wall_s = v < TIME_MAX ? v : TIME_MAX;
    if (limit_get(job->environment_parameters, "memory", &v))
        r->memory_mib = v < (double)MEMORY_MAX ? ceil_u64(v) : MEMORY_MAX;
}

static void
read_state(struct runner_job *r, const struct ing_job_spec *job)
{
    const uint8_t *v;
    size_t vl;
    struct ing_view s;

    if (job->inputdata.p == NULL || job->inputdata.len == 0)
        return;
    if (ing_mp_map_get((const uint8_t *)job->inputdata.p, job->inputdata.len, "@state", 6, &v,
                       &vl) != 0)
        return;
    if (!fb_str(v, vl, &s))
        return;
    r->old_state = dup_view(s);
    r->old_state_len = r->old_state != NULL ? s.len : 0;
}

/* param_true tells whether environment_parameters[key] is true. */
static bool
param_true(struct ing_view params, const char *key)
{
    const char *keys[1] = {key};
    const uint8_t *val;
    size_t len;
    struct ing_mp_obj o;

    if (params.p == NULL || params.len == 0 ||
        ing_mp_path((const uint8_t *)params.p, params.len, keys, 1, &val, &len) != 0)
        return false;
    return ing_mp_read(&val, val + len, &o) == 0 && o.type == ING_MP_BOOL && o.v.b;
}

/* sandbox_prepare fills the child's sandbox arguments and makes the job's cgroups.
 * Returns 0 or -1 after finishing the job as crash. */
static int
sandbox_prepare(struct runner_job *r, const struct runner_opts *o,
                const struct ing_job_spec *job, struct child_args *a, const char *src,
                const char *run_dir)
{
    uint64_t disk = o->disk_limit != 0 ? o->disk_limit : SANDBOX_DISK_DEFAULT;
    uint64_t mem = r->memory_mib != 0 ? r->memory_mib : SANDBOX_MEMORY_DEFAULT_MIB;
    double v;
    int rc, i;

    if (limit_get(job->environment_parameters, "disk", &v) && v * 1048576.0 < (double)disk)
        disk = ceil_u64(v * 1048576.0);
    r->pids_max = o->nproc != 0 ? o->nproc : SANDBOX_PIDS_DEFAULT;
    rc = sandbox_cg_create(o->sandbox, &r->cg, mem * 1024 * 1024, r->pids_max);
    if (rc < 0) {
        finish_crash(r, "Cannot create the job's cgroup: %s", strerror(-rc));
        return -1;
    }
    r->sandboxed = true;
    a->sandbox = true;
    a->sj.base = r->base;
    a->sj.task_src = src;
    a->sj.env_dir = run_dir;
    {
        struct stat st;

        r->rootfs = path_join(run_dir, "rootfs");
        if (r->rootfs == NULL) {
            finish_crash(r, "Out of memory");
            return -1;
        }
        if (stat(r->rootfs, &st) == 0 && S_ISDIR(st.st_mode)) {
            a->sj.rootfs = r->rootfs;
        } else {
            free(r->rootfs);
            r->rootfs = NULL;
        }
    }
    a->sj.network = param_true(job->environment_parameters, "network_grading");
    a->sj.disk_bytes = disk;
    a->sj.uid = r->drop ? r->uid : geteuid();
    a->sj.gid = r->drop ? r->gid : getegid();
    for (i = 0; i < SANDBOX_CG_MAX; i++)
        a->sj.cg_fd[i] = r->cg.procs_fd[i];
    return 0;
}

/* launch does everything after the job's fields are copied: the job is then running, or
 * finished as crash. */
static void
launch(struct runner_job *r, const struct runner_opts *o, const char *run_path,
       const struct ing_job_spec *job, uint64_t now_ms)
{
    struct child_args a;
    struct env_list env = {{NULL}, 0};
    char *argv[2] = {NULL, NULL};
    char *run_abs = NULL, *run_dir = NULL, *src = NULL, *slash;
    char inside_run[NAME_MAX + 8];
    bool taskless;
    struct stat st;
    int in, rc;

    if (run_path == NULL) {
        finish_crash(r, "Environment %.*s/%.*s is not available on this agent",
                     (int)job->environment_type.len, job->environment_type.p,
                     (int)job->environment.len, job->environment.p);
        return;
    }
    if (geteuid() == 0) {
        const char *user = o->user != NULL ? o->user : "nobody";
        struct passwd *pw = getpwnam(user);

        if (pw == NULL) {
            finish_crash(r, "Unknown user %s", user);
            return;
        }
        r->drop = true;
        r->uid = pw->pw_uid;
        r->gid = pw->pw_gid;
    }
    run_abs = realpath(run_path, NULL);
    if (run_abs == NULL || stat(run_abs, &st) < 0 || !S_ISREG(st.st_mode)) {
        finish_crash(r, "The environment's run file %s is missing", run_path);
        goto out;
    }
    if ((st.st_mode & 0111) == 0) {
        finish_crash(r, "The environment's run file %s is not executable", run_path);
        goto out;
    }
    run_dir = strdup(run_abs);
    if (run_dir == NULL) {
        finish_crash(r, "Out of memory");
        goto out;
    }
    slash = strrchr(run_dir, '/');
    if (slash != NULL)
        slash[slash == run_dir ? 1 : 0] = '\0';

    taskless = job->course_id.p == NULL || job->task_id.p == NULL || job->course_id.len == 0 ||
               job->task_id.len == 0;
    if (!taskless) {
        char course[NAME_MAX + 1], task[NAME_MAX + 1];
        char *cdir;

        if (!valid_component(job->course_id) || !valid_component(job->task_id)) {
            finish_crash(r, "Invalid course or task id");
            goto out;
        }
        memcpy(course, job->course_id.p, job->course_id.len);
        course[job->course_id.len] = '\0';
        memcpy(task, job->task_id.p, job->task_id.len);
        task[job->task_id.len] = '\0';
        if (o->tasks_dir == NULL) {
            finish_crash(r, "Task folder %s/%s not found: this agent has no task directory",
                         course, task);
            goto out;
        }
        cdir = path_join(o->tasks_dir, course);
        src = cdir != NULL ? path_join(cdir, task) : NULL;
        free(cdir);
        if (src == NULL) {
            finish_crash(r, "Out of memory");
            goto out;
        }
        if (stat(src, &st) < 0 || !S_ISDIR(st.st_mode)) {
            finish_crash(r, "Task folder %s/%s not found", course, task);
            goto out;
        }
    }
    if (make_base(r, o) < 0)
        goto out;
    in = make_input(r, job);
    if (in < 0)
        goto out;
    memset(&a, 0, sizeof(a));
    a.src = src;
    a.base = r->base;
    a.base_mode = r->drop ? 0711 : 0700;
    a.cpu.rlim_cur = (rlim_t)ceil_u64(r->time_s);
    a.cpu.rlim_max = a.cpu.rlim_cur + 1;
    a.drop = r->drop;
    a.uid = r->uid;
    a.gid = r->gid;
    if (o->sandbox != NULL) {
        const char *name = strrchr(run_abs, '/');

        if (sandbox_prepare(r, o, job, &a, src, run_dir) < 0) {
            close(in);
            goto out;
        }
        snprintf(inside_run, sizeof(inside_run), "/env/%s", name != NULL ? name + 1 : run_abs);
        argv[0] = inside_run;
        a.path = inside_run;
        a.dir = "/work";
        rc = build_env(&env, r, job, "/work", "/env", taskless);
    } else {
        argv[0] = run_abs;
        a.path = run_abs;
        a.dir = r->dir;
        if (r->memory_mib > 0) {
            a.set_as = true;
            a.as.rlim_cur = a.as.rlim_max = (rlim_t)(r->memory_mib * 1024 * 1024);
        }
        if (o->nproc > 0) {
            a.set_nproc = true;
            a.nproc.rlim_cur = a.nproc.rlim_max = (rlim_t)o->nproc;
        }
        rc = build_env(&env, r, job, r->dir, run_dir, taskless);
    }
    if (rc < 0) {
        close(in);
        finish_crash(r, "Out of memory");
        goto out;
    }
    a.argv = argv;
    a.envp = env.v;
    a.in_fd = in;
    r->run = run_abs;
    run_abs = NULL;
    (void)spawn(r, &a, now_ms);
    if (r->sandboxed)
        sandbox_cg_close_fds(&r->cg);
    close(in);
    env_free(&env);
out:
    free(run_abs);
    free(run_dir);
    free(src);
}

/* runner_start copies the job, prepares its folder and starts run (see runner.h). */
int
runner_start(const struct runner_opts *opts, const char *run_path,
             const struct ing_job_spec *job, uint64_t now_ms, struct runner_job **out)
{
    struct runner_job *r = calloc(1, sizeof(*r));
    size_t limit = opts->output_limit != 0 ? opts->output_limit : RUNNER_OUTPUT_LIMIT_DEFAULT;

    *out = NULL;
    if (r == NULL)
        return -ENOMEM;
    r->pidfd = -1;
    r->report_fd = -1;
    for (int i = 0; i < SANDBOX_CG_MAX; i++)
        r->cg.procs_fd[i] = -1;
    r->out.fd = -1;
    r->err.fd = -1;
    r->out.limit = limit;
    r->err.limit = limit;
    r->job_id = dup_view(job->job_id);
    r->out.buf = malloc(limit);
    r->err.buf = malloc(limit);
    if (r->job_id == NULL || r->out.buf == NULL || r->err.buf == NULL) {
        runner_free(r);
        return -ENOMEM;
    }
    r->job_id_len = job->job_id.len;
    read_state(r, job);
    if (r->old_state == NULL) {
        r->old_state = strdup("");
        if (r->old_state == NULL) {
            runner_free(r);
            return -ENOMEM;
        }
    }
    read_limits(r, job);
    launch(r, opts, run_path, job, now_ms);
    *out = r;
    return 0;
}

/* runner_fds lists the pipes still open and the pidfd. */
int
runner_fds(const struct runner_job *r, int *fds)
{
    int n = 0;

    if (r->done)
        return 0;
    if (r->out.fd >= 0)
        fds[n++] = r->out.fd;
    if (r->err.fd >= 0)
        fds[n++] = r->err.fd;
    if (r->pidfd >= 0)
        fds[n++] = r->pidfd;
    if (r->report_fd >= 0)
        fds[n++] = r->report_fd;
    return n;
}

/* runner_timeout_ms: time to the deadline, bounded by the polling period. */
int
runner_timeout_ms(const struct runner_job *r, uint64_t now_ms)
{
    uint64_t left;

    if (r->done)
        return -1;
    if (r->dying)
        return POLL_CGROUP_MS;
    if (r->killed || r->timed_out)
        return POLL_DYING_MS;
    left = r->deadline_ms > now_ms ? r->deadline_ms - now_ms : 0;
    if (r->pidfd < 0 && left > POLL_NO_PIDFD_MS)
        left = POLL_NO_PIDFD_MS;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* runner_process reads output, enforces the deadline and reaps the finished job. */
int
runner_process(struct runner_job *r, uint64_t now_ms)
{
    siginfo_t si;
    int i;

    if (r->done)
        return 1;
    if (r->dying) {
        /* `run` is reaped; its namespace's last processes are being torn down. */
        if (!sandbox_cg_empty(&r->cg) && now_ms < r->dying_until)
            return 0;
        finish(r);
        return 1;
    }
    if (r->starting) {
        int msg[3];
        ssize_t n = read(r->report_fd, msg, sizeof(msg));

        if (n == (ssize_t)sizeof(msg)) {
            start_failed(r, msg);
            return 1;
        }
        if (n >= 0 || (errno != EAGAIN && errno != EINTR)) {
            /* End of file: exec closed the pipe (or the child died, which waitid sees). */
            close_fd(&r->report_fd);
            r->starting = false;
            if (!r->killed && !r->timed_out) {
                r->started = true;
                r->deadline_ms = now_ms + (uint64_t)(r->wall_s * 1000.0);
            }
        }
    }
    capture_read(&r->out, READ_BUDGET);
    capture_read(&r->err, READ_BUDGET);
    if (!r->timed_out && !r->killed && now_ms >= r->deadline_ms) {
        r->timed_out = true;
        kill(r->pid, SIGKILL);
        kill(-r->pid, SIGKILL);
    }
    /* Look at the leader without reaping it: its pid (the group id) stays reserved until
     * the group has been killed. */
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
        return 0;
    kill(-r->pid, SIGKILL);
    while (wait4(r->pid, &r->status, 0, &r->ru) < 0 && errno == EINTR)
        ;
    r->pid = 0;
    close_fd(&r->pidfd);
    /* What the group wrote before it died is in the pipes: drain it, without waiting for
     * an end of file that a process which left the group could hold back. */
    for (i = 0; i < DRAIN_ROUNDS && capture_read(&r->out, READ_BUDGET); i++)
        ;
    for (i = 0; i < DRAIN_ROUNDS && capture_read(&r->err, READ_BUDGET); i++)
        ;
    close_fd(&r->out.fd);
    close_fd(&r->err.fd);
    if (r->sandboxed && !sandbox_cg_empty(&r->cg)) {
        /* Report the job once every process of it is gone, so that its cgroup can go. */
        sandbox_cg_kill(&r->cg);
        r->dying = true;
        r->dying_until = now_ms + DYING_MAX_MS;
        return 0;
    }
    finish(r);
    return 1;
}

/* runner_kill kills the whole process group. */
void
runner_kill(struct runner_job *r)
{
    if (r->done || r->pid <= 0)
        return;
    r->killed = true;
    kill(r->pid, SIGKILL); /* the child may not have made its group yet */
    kill(-r->pid, SIGKILL);
}

/* runner_done tells whether the result is ready. */
bool
runner_done(const struct runner_job *r)
{
    return r->done;
}

/* runner_result copies the result views. */
void
runner_result(const struct runner_job *r, struct ing_job_result *res)
{
    *res = r->res;
}

/* runner_started tells whether run was exec'd. */
bool
runner_started(const struct runner_job *r)
{
    return r->started;
}

/* runner_cpu_ms returns the job's CPU time once done. */
uint64_t
runner_cpu_ms(const struct runner_job *r)
{
    return r->cpu_ns / 1000000u;
}

/* runner_pid returns the running pid, or 0. */
pid_t
runner_pid(const struct runner_job *r)
{
    return r->pid;
}

/* runner_job_id returns the job id copy. */
const char *
runner_job_id(const struct runner_job *r, size_t *len)
{
    if (len != NULL)
        *len = r->job_id_len;
    return r->job_id;
}

/* runner_free kills, reaps and cleans up what is left, then frees r. */
void
runner_free(struct runner_job *r)
{
    if (r == NULL)
        return;
    if (r->pid > 0) {
        int st;

        kill(r->pid, SIGKILL);
        kill(-r->pid, SIGKILL);
        while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    close_fd(&r->pidfd);
    close_fd(&r->out.fd);
    close_fd(&r->err.fd);
    close_fd(&r->report_fd);
    remove_base(r);
    if (r->sandboxed) {
        sandbox_cg_close_fds(&r->cg);
        /* A job freed while running: its namespace dies with `run`; give it a moment
         * (bounded) so that its cgroup can be removed. */
        for (int i = 0; i < DYING_MAX_MS / POLL_CGROUP_MS && !sandbox_cg_empty(&r->cg); i++) {
            sandbox_cg_kill(&r->cg);
            (void)poll(NULL, 0, POLL_CGROUP_MS);
        }
        (void)sandbox_cg_destroy(&r->cg);
    }
    free(r->run);
    free(r->rootfs);
    free(r->dir);
    free(r->out.buf);
    free(r->err.buf);
    free(r->out.text);
    free(r->err.text);
    free(r->job_id);
    free(r->old_state);
    ing_mp_writer_fini(&r->fb);
    free(r);
}
