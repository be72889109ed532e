/* SPDX-License-Identifier: MIT */
/* err.h: error convention of libinginious.
 *
 * Every action returns 0 (or a positive count) on success and a negative errno value on
 * failure; constructors return NULL and set errno. Every code the API returns:
 *   -EPROTO       malformed input (bad frame, bad msgpack, bad UTF-8, bad field value), or
 *                 the backend refused the connection (role, limit, authentication: the
 *                 object's last_error says which)
 *   -EMSGSIZE     a length over the configured or protocol maximum
 *   -ENOMEM       out of memory, or a fixed buffer too small for the output
 *   -ENOENT       a key or an object that does not exist (also: no such unix socket)
 *   -EINVAL       a bad argument from the caller (also: a struct's size field too small)
 *   -ETIMEDOUT    a deadline passed
 *   -EAGAIN       ing_frame_peek: fewer than ING_HDR_LEN bytes yet
 *   -ENOMSG       decoding: a frame of an unknown type (skip it: ING_HDR_LEN + body_len)
 *   -EEXIST       ing_client_submit: a pending job of this client has that id
 *   -ENOBUFS      ing_client_ping: too many pings unanswered
 *   -ENOTCONN     a request while not connected (or before authentication ended)
 *   -EISCONN      connect on an object that is already connected
 *   -ECONNRESET   the connection was lost before a blocking call's answer came
 *   -ECONNREFUSED, -EPIPE, -EHOSTUNREACH, ... : a socket call failed (connect, send, recv,
 *                 poll); the system's errno, negated, is passed on as it is.
 * ing_strerror() turns any of them (or any other -errno) into text.
 *
 * Thread safety: ing_strerror is reentrant and returns static text.
 */
#ifndef INGINIOUS_ERR_H
#define INGINIOUS_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* ing_strerror returns a static description of a negative error code (or of 0). */
const char *ing_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
