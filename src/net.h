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
/* net_listen binds and listens (non-blocking, close-on-exec, SO_REUSEADDR; a stale unix
 * socket file is replaced). Returns the fd or -errno. */
int net_listen(const struct net_addr *a, int backlog);
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
