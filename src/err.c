/* SPDX-License-Identifier: MIT */
/* err.c: ing_strerror, text for the negative error codes of libinginious. */
#include "inginious/err.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

struct err_text {
    int code;         /* positive errno value */
    const char *text; /* description */
};

/* The codes the library produces itself (see err.h), with glibc's strerror wording: the
 * common case is answered from this table and never touches strerror's buffer. */
static const struct err_text err_table[] = {
    {EPROTO, "Protocol error"},
    {EMSGSIZE, "Message too long"},
    {ENOMEM, "Cannot allocate memory"},
    {ENOENT, "No such file or directory"},
    {EINVAL, "Invalid argument"},
    {ETIMEDOUT, "Connection timed out"},
    {EAGAIN, "Resource temporarily unavailable"},
    {ENOMSG, "No message of desired type"},
    {EEXIST, "File exists"},
    {ENOBUFS, "No buffer space available"},
    {ENOTCONN, "Transport endpoint is not connected"},
    {EISCONN, "Transport endpoint is already connected"},
    {ECONNRESET, "Connection reset by peer"},
    {ECONNREFUSED, "Connection refused"},
    {EPIPE, "Broken pipe"},
};

/* ing_strerror returns "success" for 0, a fixed text for the codes listed in err.h, and
 * strerror(-err) otherwise (glibc's strerror is thread-safe for known codes; an unknown
 * one goes through its per-thread buffer). A positive err is read as its negation. */
const char *
ing_strerror(int err)
{
    size_t i;
    int e;

    if (err == 0)
        return "success";
    if (err == INT_MIN)
        return "Unknown error";
    e = err < 0 ? -err : err;
    for (i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++) {
        if (err_table[i].code == e)
            return err_table[i].text;
    }
    return strerror(e);
}
