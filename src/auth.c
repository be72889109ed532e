/* SPDX-License-Identifier: MIT */
/* auth.c: see auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"

int
auth_nonce(uint8_t out[ING_NONCE_LEN])
{
    size_t got = 0;
    while (got < ING_NONCE_LEN) {
        ssize_t n = getrandom(out + got, ING_NONCE_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

static void
mac(const uint8_t *secret, size_t len, const char *label, uint8_t role, const uint8_t *a,
    const uint8_t *b, uint8_t out[ING_MAC_LEN])
{
    struct sha256_hmac h;
    sha256_hmac_init(&h, secret, len);
    sha256_hmac_update(&h, label, strlen(label));
    sha256_hmac_update(&h, &role, 1);
    sha256_hmac_update(&h, a, ING_NONCE_LEN);
    sha256_hmac_update(&h, b, ING_NONCE_LEN);
    sha256_hmac_final(&h, out);
}

void
auth_peer_mac(const uint8_t *secret, size_t len, uint8_t role, const uint8_t ns[ING_NONCE_LEN],
              const uint8_t nc[ING_NONCE_LEN], uint8_t out[ING_MAC_LEN])
{
    mac(secret, len, "INGv1-peer", role, ns, nc, out);
}

void
auth_server_mac(const uint8_t *secret, size_t len, uint8_t role,
                const uint8_t ns[ING_NONCE_LEN], const uint8_t nc[ING_NONCE_LEN],
                uint8_t out[ING_MAC_LEN])
{
    mac(secret, len, "INGv1-server", role, nc, ns, out);
}

int
auth_load_secret(const char *path, uint8_t **secret, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t buf[4096];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof(buf)) {
            close(fd);
            return -EMSGSIZE;
        }
    }
    close(fd);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0)
        return -EINVAL;
    *secret = malloc(n);
    if (*secret == NULL)
        return -ENOMEM;
    memcpy(*secret, buf, n);
    *len = n;
    explicit_bzero(buf, sizeof(buf));
    return 0;
}
