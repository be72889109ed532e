/* SPDX-License-Identifier: MIT */
/* seccomp.c: see seccomp.h. The program is built at run time from the deny list: one
 * compare-and-return pair per denied system call, then the argument checks of clone and
 * socket. */
#include "seccomp.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's ABI, written out here so that no kernel header is needed (musl has none):
 * classic BPF instructions (linux/filter.h), what a filter reads (linux/seccomp.h) and the
 * architecture tokens (linux/audit.h: the ELF machine, 64-bit, little-endian). */
struct bpf_insn {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

struct bpf_prog {
    unsigned short len;
    struct bpf_insn *filter;
};

struct seccomp_data {
    int nr;
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t args[6];
};

#define BPF_LD 0x00
#define BPF_W 0x00
#define BPF_ABS 0x20
#define BPF_ALU 0x04
#define BPF_AND 0x50
#define BPF_JMP 0x05
#define BPF_JEQ 0x10
#define BPF_JGE 0x30
#define BPF_K 0x00
#define BPF_RET 0x06

#define SECCOMP_MODE_FILTER 2
#define SECCOMP_RET_KILL_PROCESS 0x80000000u
#define SECCOMP_RET_ERRNO 0x00050000u
#define SECCOMP_RET_ALLOW 0x7fff0000u

#if defined(__x86_64__)
#define SECCOMP_ARCH 0xc000003eu /* EM_X86_64 (62) | 64-bit | little-endian */
#define SECCOMP_X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define SECCOMP_ARCH 0xc00000b7u /* EM_AARCH64 (183) | 64-bit | little-endian */
#endif

#define PROG_MAX 128

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) ((unsigned)(offsetof(struct seccomp_data, args) + 8 * (i)))
#else
#define ARG_LO(i) ((unsigned)(offsetof(struct seccomp_data, args) + 8 * (i) + 4))
#endif

/* The system calls answered EPERM whatever their arguments. */
static const int denied[] = {
#ifdef __NR_ptrace
    __NR_ptrace,
#endif
#ifdef __NR_process_vm_readv
    __NR_process_vm_readv,
#endif
#ifdef __NR_process_vm_writev
    __NR_process_vm_writev,
#endif
#ifdef __NR_mount
    __NR_mount,
#endif
#ifdef __NR_umount2
    __NR_umount2,
#endif
#ifdef __NR_pivot_root
    __NR_pivot_root,
#endif
#ifdef __NR_chroot
    __NR_chroot,
#endif
#ifdef __NR_move_mount
    __NR_move_mount,
#endif
#ifdef __NR_open_tree
    __NR_open_tree,
#endif
#ifdef __NR_fsopen
    __NR_fsopen,
#endif
#ifdef __NR_fsmount
    __NR_fsmount,
#endif
#ifdef __NR_fsconfig
    __NR_fsconfig,
#endif
#ifdef __NR_fspick
    __NR_fspick,
#endif
#ifdef __NR_mount_setattr
    __NR_mount_setattr,
#endif
#ifdef __NR_unshare
    __NR_unshare,
#endif
#ifdef __NR_setns
    __NR_setns,
#endif
#ifdef __NR_kexec_load
    __NR_kexec_load,
#endif
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
#ifdef __NR_init_module
    __NR_init_module,
#endif
#ifdef __NR_finit_module
    __NR_finit_module,
#endif
#ifdef __NR_delete_module
    __NR_delete_module,
#endif
#ifdef __NR_reboot
    __NR_reboot,
#endif
#ifdef __NR_swapon
    __NR_swapon,
#endif
#ifdef __NR_swapoff
    __NR_swapoff,
#endif
#ifdef __NR_acct
    __NR_acct,
#endif
#ifdef __NR_bpf
    __NR_bpf,
#endif
#ifdef __NR_perf_event_open
    __NR_perf_event_open,
#endif
#ifdef __NR_userfaultfd
    __NR_userfaultfd,
#endif
#ifdef __NR_keyctl
    __NR_keyctl,
#endif
#ifdef __NR_add_key
    __NR_add_key,
#endif
#ifdef __NR_request_key
    __NR_request_key,
#endif
#ifdef __NR_io_uring_setup
    __NR_io_uring_setup,
#endif
#ifdef __NR_io_uring_enter
    __NR_io_uring_enter,
#endif
#ifdef __NR_io_uring_register
    __NR_io_uring_register,
#endif
};

#define NS_FLAGS                                                                            \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |           \
     CLONE_NEWPID | CLONE_NEWNET)

struct prog {
    struct bpf_insn f[PROG_MAX];
    unsigned short n;
};

static void
emit(struct prog *p, unsigned short code, unsigned char jt, unsigned char jf, unsigned k)
{
    if (p->n < PROG_MAX)
        p->f[p->n] = (struct bpf_insn){code, jt, jf, k};
    p->n++;
}

#define RET(p, v) emit(p, BPF_RET | BPF_K, 0, 0, (v))
#define LD(p, off) emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, (off))
#define JEQ(p, v, t, f) emit(p, BPF_JMP | BPF_JEQ | BPF_K, (t), (f), (unsigned)(v))

bool
seccomp_available(void)
{
#ifdef SECCOMP_ARCH
    return true;
#else
    return false;
#endif
}

/* seccomp_install builds the program and installs it. */
int
seccomp_install(void)
{
#ifdef SECCOMP_ARCH
    struct prog p;
    struct bpf_prog fp;
    size_t i;

    p.n = 0;
    /* The ABI: anything but the native one kills the process. */
    LD(&p, (unsigned)offsetof(struct seccomp_data, arch));
    JEQ(&p, SECCOMP_ARCH, 1, 0);
    RET(&p, SECCOMP_RET_KILL_PROCESS);
    LD(&p, (unsigned)offsetof(struct seccomp_data, nr));
#ifdef SECCOMP_X32_BIT
    emit(&p, BPF_JMP | BPF_JGE | BPF_K, 0, 1, SECCOMP_X32_BIT);
    RET(&p, SECCOMP_RET_KILL_PROCESS);
#endif
    for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        JEQ(&p, denied[i], 0, 1);
        RET(&p, SECCOMP_RET_ERRNO | EPERM);
    }
#ifdef __NR_clone3
    JEQ(&p, __NR_clone3, 0, 1);
    RET(&p, SECCOMP_RET_ERRNO | ENOSYS);
#endif
    /* clone: no new namespace (the flags are its first argument). */
    JEQ(&p, __NR_clone, 0, 5);
    LD(&p, ARG_LO(0));
    emit(&p, BPF_ALU | BPF_AND | BPF_K, 0, 0, NS_FLAGS);
    JEQ(&p, 0, 1, 0);
    RET(&p, SECCOMP_RET_ERRNO | EPERM);
    RET(&p, SECCOMP_RET_ALLOW);
    /* socket: no packet socket, no raw IP socket. */
    JEQ(&p, __NR_socket, 0, 9);
    LD(&p, ARG_LO(0));
    JEQ(&p, AF_PACKET, 5, 0);
    JEQ(&p, AF_INET, 1, 0);
    JEQ(&p, AF_INET6, 0, 4);
    LD(&p, ARG_LO(1));
    emit(&p, BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xf);
    JEQ(&p, SOCK_RAW, 0, 1);
    RET(&p, SECCOMP_RET_ERRNO | EPERM);
    RET(&p, SECCOMP_RET_ALLOW);
    RET(&p, SECCOMP_RET_ALLOW);
    if (p.n > PROG_MAX)
        return -E2BIG;
    fp.len = p.n;
    fp.filter = p.f;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp) < 0)
        return -errno;
    return 0;
#else
    return -ENOSYS;
#endif
}
