/* SPDX-License-Identifier: MIT */
/* log.h: levelled logging to stderr in the INGInious backend's format:
 *   2026-11-28 12:00:00,123 - inginious.backend - INFO - message
 * The level is checked before anything is formatted. */
#ifndef ING_LOG_H
#define ING_LOG_H

#include <stdbool.h>

enum log_level {
    LOG_ERR = 0,   /* ERROR */
    LOG_WARN = 1,  /* WARNING */
    LOG_INFO = 2,  /* INFO */
    LOG_DEBUG = 3, /* DEBUG */
};

extern int log_level_max; /* messages above this level are dropped; default LOG_INFO */

/* log_write formats and writes one line (use the log_msg macro instead). */
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log_nonblocking makes the log never block the caller when stderr is a pipe or a socket
 * nobody reads: lines wait in a 64 KiB buffer (log_flush retries), and past it whole lines
 * are dropped and counted ("N log lines dropped" once it drains). Control bytes and
 * backslashes of every message are written as \xNN (peer text cannot forge lines). */
void log_nonblocking(void);
/* log_flush writes the lines still waiting. Returns true once none is left. */
bool log_flush(void);

/* log_set_name sets the logger name printed on each line ("inginious.backend"). */
void log_set_name(const char *name);

#define log_msg(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((int)(lvl) <= log_level_max)                                                           \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)

#endif
