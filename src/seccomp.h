/* SPDX-License-Identifier: MIT */
/* seccomp.h: the seccomp-bpf filter of sandboxed jobs, written as BPF instructions.
 *
 * Every system call is allowed except (all answered EPERM unless said otherwise):
 *   - another ABI than the agent's own (the 32-bit i386 ABI on x86-64, x32 system calls):
 *     the process is killed;
 *   - ptrace, process_vm_readv, process_vm_writev;
 *   - mount, umount2, pivot_root, chroot, move_mount, open_tree, fsopen, fsmount, fsconfig,
 *     fspick, mount_setattr; unshare, setns, and clone with any CLONE_NEW* flag; clone3
 *     (ENOSYS, so that the C library falls back to clone, whose flags can be checked);
 *   - kexec_load, kexec_file_load, init_module, finit_module, delete_module, reboot,
 *     swapon, swapoff, acct;
 *   - bpf, perf_event_open, userfaultfd, keyctl, add_key, request_key;
 *   - io_uring_setup, io_uring_enter, io_uring_register;
 *   - socket(AF_PACKET, ...) and socket(AF_INET or AF_INET6, SOCK_RAW, ...).
 * The architectures known are x86-64 and aarch64; elsewhere seccomp_install fails. */
#ifndef ING_SECCOMP_H
#define ING_SECCOMP_H

#include <stdbool.h>

/* seccomp_available tells whether the filter knows this architecture. */
bool seccomp_available(void);

/* seccomp_install sets no_new_privs and installs the filter on the calling process (it
 * applies to everything it execs or forks). Returns 0 or -errno. */
int seccomp_install(void);

#endif
