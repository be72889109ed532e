/* SPDX-License-Identifier: MIT */
/* net.h: endpoint addresses and sockets.
 * Addresses: tcp://HOST:PORT, tcp://STAR:PORT (STAR = "*", every interface), tcp://[IPV6]:PORT,
 * ipc:///path (unix stream socket). HOST may be a name: it is resolved once, here,
 * never inside the event loop. */
#ifndef ING_NET_H
#define ING_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int family; /* AF_INET, AF_INET6 or AF_UNIX */
};

/* net_parse parses text into *a. Returns 0, or -EINVAL with a reason in err. */
int net_parse(const char *text, struct net_addr *a, char *err, size_t errlen);
/* net_format writes a as "tcp://1.2.3.4:5", "tcp://[::1]:5" or "ipc:///path". */
void net_format(const struct net_addr *a, char *out, size_t len);
/* net_listen binds and listens (non-blocking, close-on-exec, SO_REUSEADDR). An IPv6 socket
 * is dual-stack (IPv4 peers reach tcp://[::]:PORT as ::ffff:a.b.c.d) unless flags has
 * NET_V6ONLY. A unix socket file already at the path is probed with connect(): when a
 * process answers there the path is left alone and -EADDRINUSE returned; a stale file
 * (nobody listening) is replaced. Returns the fd or -errno. */
#define NET_V6ONLY 1u
int net_listen(const struct net_addr *a, int backlog, unsigned flags);
/* net_unix_stamp records which file a unix listener made at a's path (device, inode), so
 * that net_unix_release removes that file and no other (a path taken over since is left to
 * its new owner). Both do nothing for a TCP address. */
struct net_stamp {
    unsigned long long dev, ino;
    bool set;
};
void net_unix_stamp(const struct net_addr *a, struct net_stamp *st);
void net_unix_release(const struct net_addr *a, const struct net_stamp *st);
/* net_check_listener tells whether fd is a listening stream socket (as a socket handed
 * over by a service manager must be). Returns 0, -ENOTSOCK, -ESOCKTNOSUPPORT (not a
 * stream socket) or -EINVAL (not listening). */
int net_check_listener(int fd);
/* net_bound returns the address a listening/connected fd is bound to. */
int net_bound(int fd, struct net_addr *a);
/* net_peer returns the address of the peer of fd. */
int net_peer(int fd, struct net_addr *a);
/* net_connect connects a stream socket to a (non-blocking if nonblock: then the connect
 * may still be in progress). TCP_NODELAY is set. Returns the fd or -errno. */
int net_connect(const struct net_addr *a, bool nonblock);
/* net_accept accepts one connection (non-blocking, close-on-exec, TCP_NODELAY). Returns
 * the fd, -EAGAIN when none is pending, or -errno. */
int net_accept(int lfd);

#endif
