/* SPDX-License-Identifier: MIT */
/* sd.h: the two service-manager protocols of systemd, spoken by hand (libc only).
 *
 * Notifications (sd_notify(3)): when $NOTIFY_SOCKET names a unix datagram socket (a path, or
 * an abstract name written "@name"), state changes go there as datagrams of "KEY=VALUE"
 * lines: READY=1, STATUS=text, STOPPING=1, WATCHDOG=1. $WATCHDOG_USEC asks for WATCHDOG=1
 * more often than that many microseconds, when $WATCHDOG_PID is unset or is our pid.
 *
 * Socket activation (sd_listen_fds(3)): when $LISTEN_PID is our pid, $LISTEN_FDS sockets
 * start at fd 3, named by the colon-separated $LISTEN_FDNAMES.
 *
 * Both read the environment once and unset what they read, so that nothing a child
 * inherits claims to be the service. */
#ifndef ING_SD_H
#define ING_SD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define SD_LISTEN_FDS_START 3
#define SD_LISTEN_MAX 2 /* [0] "agents", [1] "clients" */

struct sd_notify {
    int fd; /* -1: no notifications */
    struct sockaddr_un addr;
    socklen_t addr_len;
    uint64_t watchdog_us; /* 0: no watchdog */
};

/* sd_notify_open reads and unsets NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. Returns 1
 * when notifications are to be sent, 0 when NOTIFY_SOCKET is unset (n->fd = -1), or
 * -EINVAL with a reason in err (a name too long, a bad WATCHDOG_USEC) or -errno. */
int sd_notify_open(struct sd_notify *n, char *err, size_t errlen);
/* sd_notify_send sends one datagram (never blocks). Returns 0 (also when n is closed) or
 * -errno; a lost notification is for the caller to log, never fatal. */
int sd_notify_send(const struct sd_notify *n, const char *text);
void sd_notify_close(struct sd_notify *n);
/* sd_parse_socket fills addr from a NOTIFY_SOCKET value. Returns 0 or -EINVAL. */
int sd_parse_socket(const char *v, struct sockaddr_un *addr, socklen_t *len);
/* sd_parse_watchdog reads WATCHDOG_USEC (usec) and WATCHDOG_PID (pid, or NULL) for process
 * self: *out = the period in microseconds, 0 when the watchdog is for another process.
 * Returns 0 or -EINVAL (not a positive decimal number). */
int sd_parse_watchdog(const char *usec, const char *pid, pid_t self, uint64_t *out);

/* sd_listen_fds takes the sockets passed by the service manager: fds[0] the agents'
 * listener, fds[1] the clients' (0 when not passed; fds 0-2 are never passed). A socket
 * named "agents" or "clients" goes there; the others by their position (first agents,
 * second clients). Each must be a listening stream socket; it is made non-blocking and
 * close-on-exec. Returns how many were taken (0 when LISTEN_PID is unset or another
 * process's), or -EINVAL with a reason in err. */
int sd_listen_fds(int fds[SD_LISTEN_MAX], char *err, size_t errlen);

#endif
