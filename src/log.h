/* SPDX-License-Identifier: MIT */
/* log.h: levelled logging to stderr in the INGInious backend's format:
 *   2026-11-28 12:00:00,123 - inginious.backend - INFO - message
 * The level is checked before anything is formatted. */
#ifndef ING_LOG_H
#define ING_LOG_H

enum log_level {
    LOG_ERR = 0,   /* ERROR */
    LOG_WARN = 1,  /* WARNING */
    LOG_INFO = 2,  /* INFO */
    LOG_DEBUG = 3, /* DEBUG */
};

extern int log_level_max; /* messages above this level are dropped; default LOG_INFO */

/* log_write formats and writes one line (use the log_msg macro instead). */
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log_set_name sets the logger name printed on each line ("inginious.backend"). */
void log_set_name(const char *name);

#define log_msg(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((int)(lvl) <= log_level_max)                                                           \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)

#endif
