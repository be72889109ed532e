/* SPDX-License-Identifier: MIT */
/* auth.h: the opening challenge-response of proto.md §6 (HMAC-SHA-256 over both nonces).
 * Shared by the server and the client/agent libraries. */
#ifndef ING_AUTH_H
#define ING_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "inginious/proto.h"

/* auth_nonce fills out with ING_NONCE_LEN random bytes. Returns 0 or -errno. */
int auth_nonce(uint8_t out[ING_NONCE_LEN]);
/* auth_peer_mac: HMAC-SHA-256(secret, "INGv1-peer" || role || ns || nc). */
void auth_peer_mac(const uint8_t *secret, size_t len, uint8_t role,
                   const uint8_t ns[ING_NONCE_LEN], const uint8_t nc[ING_NONCE_LEN],
                   uint8_t out[ING_MAC_LEN]);
/* auth_server_mac: HMAC-SHA-256(secret, "INGv1-server" || role || nc || ns). */
void auth_server_mac(const uint8_t *secret, size_t len, uint8_t role,
                     const uint8_t ns[ING_NONCE_LEN], const uint8_t nc[ING_NONCE_LEN],
                     uint8_t out[ING_MAC_LEN]);
/* auth_load_secret reads a secret file (one trailing "\n" or "\r\n" removed) into a malloc'd
 * buffer. Returns 0 or -errno (-EINVAL for an empty secret). */
int auth_load_secret(const char *path, uint8_t **secret, size_t *len);

#endif
