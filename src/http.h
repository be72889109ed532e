/* SPDX-License-Identifier: MIT */
/* http.h: a strict, pure, incremental HTTP/1.1 request-head parser (RFC 9112), for the
 * metrics port. No I/O, no allocation: the parsed request is a set of views into the
 * caller's bytes, valid while those bytes are.
 *
 * Accepted: a request line "METHOD SP origin-form SP HTTP/1.x CRLF", header fields
 * "name: value CRLF" (token names, no obs-fold, at most HTTP_MAX_FIELDS), an empty line.
 * Every line ends in CRLF (a bare CR or LF is refused). HTTP/1.1 needs exactly one Host.
 * A request may not carry a body: Transfer-Encoding, or Content-Length other than 0, is
 * refused. The whole head (up to and including the empty line) is at most HTTP_MAX_HEAD
 * bytes. Any method token parses; the caller answers 405 to what it does not serve. */
#ifndef ING_HTTP_H
#define ING_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HTTP_MAX_HEAD 8192  /* request line + fields + empty line */
#define HTTP_MAX_FIELDS 64
#define HTTP_MAX_METHOD 16

enum http_method {
    HTTP_GET = 1,  /* GET */
    HTTP_HEAD = 2, /* HEAD */
    HTTP_OTHER = 3 /* any other valid token: answered 405 */
};

struct http_req {
    enum http_method method;
    const char *path; /* the request target up to '?' (starts with '/') */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
    int minor;       /* HTTP/1.minor: 0 or 1 */
    bool keep_alive; /* 1.1 unless "Connection: close"; 1.0 only with "keep-alive" */
    size_t head_len; /* bytes of the head */
};

/* The incremental state: how far the end of the head has been searched. Zero it (or call
 * http_parser_init) for every new request. */
struct http_parser {
    size_t scanned;
};

static inline void
http_parser_init(struct http_parser *ps)
{
    ps->scanned = 0;
}

/* http_parse looks at the first n bytes of a request, which grow between calls with the
 * same parser (the bytes already seen must not change). Returns the head's length (> 0)
 * with *r filled; 0 when the head is not complete yet (more bytes are needed); -400 for a
 * malformed head (a control byte, bare CR or bare LF as soon as it arrives), -431 when no complete head fits in
 * HTTP_MAX_HEAD bytes, -505 for an HTTP version other than 1.0 and 1.1. Bytes after the
 * head (a pipelined request) are not looked at. Each byte is scanned once for the end of
 * the head, and the head is parsed once, when complete. */
ssize_t http_parse(struct http_parser *ps, const char *p, size_t n, struct http_req *r);

/* http_reason returns the reason phrase of a status code this server sends ("" if none). */
const char *http_reason(int status);

#endif
