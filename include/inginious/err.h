/* SPDX-License-Identifier: MIT */
/* err.h: error convention of libinginious.
 *
 * Every action returns 0 (or a positive count) on success and a negative errno value on
 * failure. The values the library itself produces:
 *   -EPROTO    malformed input (bad frame, bad msgpack, bad UTF-8, bad field value)
 *   -EMSGSIZE  a length over the configured or protocol maximum
 *   -ENOMEM    out of memory, or a fixed buffer too small for the output
 *   -ENOENT    a key or an object that does not exist
 *   -EINVAL    a bad argument from the caller
 *   -ETIMEDOUT a deadline passed
 * ing_strerror() turns any of them (or any other -errno) into text.
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
