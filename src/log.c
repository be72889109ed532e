/* SPDX-License-Identifier: MIT */
/* log.c: see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE 2048
#define LOG_HELD (64 * 1024) /* lines waiting for a full stderr to drain */

int log_level_max = LOG_INFO;
static const char *log_name = "inginious.backend";

static const char *const level_names[] = {"ERROR", "WARNING", "INFO", "DEBUG"};

static int log_fd = STDERR_FILENO;
static bool log_sock;          /* log_fd is a socket: send with MSG_DONTWAIT */
static char held[LOG_HELD];    /* bytes not written yet, in order */
static size_t held_len;
static unsigned long long dropped; /* whole lines dropped: held was full */

void
log_set_name(const char *name)
{
    log_name = name;
}

void
log_nonblocking(void)
{
    struct stat st;
    if (fstat(STDERR_FILENO, &st) != 0)
        return;
    if (S_ISSOCK(st.st_mode)) {
        log_sock = true;
    } else if (S_ISFIFO(st.st_mode)) {
        /* A new open file description of the same pipe: non-blocking for us only, not for
         * the other writers sharing the original one. */
        int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0)
            log_fd = fd;
    }
}

static ssize_t
raw_write(const char *p, size_t n)
{
    for (;;) {
        ssize_t w = log_sock ? send(log_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
                             : write(log_fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        return w < 0 ? 0 : w;
    }
}

static void log_out(const char *p, size_t n);

bool
log_flush(void)
{
    while (held_len > 0) {
        ssize_t w = raw_write(held, held_len);
        if (w <= 0)
            return false;
        memmove(held, held + w, held_len - (size_t)w);
        held_len -= (size_t)w;
    }
    if (dropped > 0) {
        unsigned long long n = dropped;
        dropped = 0;
        log_write(LOG_WARN, "%llu log lines dropped: the log output was not read", n);
    }
    return held_len == 0;
}

/* log_out writes one line, or keeps it (whole) behind the ones already waiting. */
static void
log_out(const char *p, size_t n)
{
    if (held_len > 0)
        log_flush(); /* may itself log (the dropped count) and keep part of that line */
    if (held_len > 0) {
        if (held_len + n > sizeof(held)) {
            dropped++;
            return;
        }
        memcpy(held + held_len, p, n);
        held_len += n;
        return;
    }
    ssize_t w = raw_write(p, n);
    if ((size_t)w == n)
        return;
    memcpy(held, p + w, n - (size_t)w); /* held is empty here and n < LOG_HELD */
    held_len = n - (size_t)w;
}

/* escape copies src[0..n) to dst (capacity cap, > 4), writing every control byte and
 * backslash as \xNN so that text from a peer cannot start a forged line. Returns the
 * length written. */
static size_t
escape(char *dst, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        } else {
            dst[o++] = (char)ch;
        }
    }
    return o;
}

void
log_write(enum log_level lvl, const char *fmt, ...)
{
    char line[LOG_LINE], msg[LOG_LINE];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ",%03ld - %s - %s - ",
                  (long)(tv.tv_usec / 1000), log_name, level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t mlen = (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
    size_t len = (size_t)n + escape(line + n, sizeof(line) - (size_t)n - 1, msg, mlen);
    line[len++] = '\n';
    /* One write per line so lines from several processes do not interleave. */
    log_out(line, len);
}
