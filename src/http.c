/* SPDX-License-Identifier: MIT */
/* http.c: see http.h. */
#include "http.h"

#include <string.h>

/* is_tchar: RFC 9110 token characters. */
static bool
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* is_ctl: a byte that may not appear in a head at all (CR and LF are checked apart). */
static bool
is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

static bool
ieq(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)p[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a + 32);
        if (a != b)
            return false;
    }
    return true;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* parse_request_line parses p[0..n) (without its CRLF). Returns 0, -400 or -505. */
static int
parse_request_line(const char *p, size_t n, struct http_req *r)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i > HTTP_MAX_METHOD || i >= n || p[i] != ' ')
        return -400;
    if (i == 3 && memcmp(p, "GET", 3) == 0)
        r->method = HTTP_GET;
    else if (i == 4 && memcmp(p, "HEAD", 4) == 0)
        r->method = HTTP_HEAD;
    else
        r->method = HTTP_OTHER;
    size_t t = ++i;
    if (i >= n || p[i] != '/')
        return -400;
    while (i < n && p[i] > 0x20 && p[i] < 0x7f)
        i++;
    if (i >= n || p[i] != ' ')
        return -400;
    const char *target = p + t;
    size_t tlen = i - t;
    const char *q = memchr(target, '?', tlen);
    r->path = target;
    r->path_len = q != NULL ? (size_t)(q - target) : tlen;
    r->query = q != NULL ? q + 1 : NULL;
    r->query_len = q != NULL ? tlen - r->path_len - 1 : 0;
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
        p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
        return -400;
    if (p[i + 5] != '1' || (p[i + 7] != '0' && p[i + 7] != '1'))
        return -505;
    r->minor = p[i + 7] - '0';
    return 0;
}

/* connection_tokens applies a Connection field's comma-separated options. */
static void
connection_tokens(const char *v, size_t n, bool *close, bool *keep)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && !is_ows(v[i]))
            i++;
        if (ieq(v + s, i - s, "close"))
            *close = true;
        else if (ieq(v + s, i - s, "keep-alive"))
            *keep = true;
    }
}

/* parse_head parses a complete head p[0..n) (ending in CRLF CRLF). */
static int
parse_head(const char *p, size_t n, struct http_req *r)
{
    const char *eol = memchr(p, '\r', n);
    int rc = parse_request_line(p, (size_t)(eol - p), r);
    if (rc < 0)
        return rc;
    const char *line = eol + 2, *end = p + n;
    unsigned fields = 0, hosts = 0;
    bool close = false, keep = false;
    while (line[0] != '\r') {
        eol = memchr(line, '\r', (size_t)(end - line));
        size_t len = (size_t)(eol - line), c = 0;
        if (++fields > HTTP_MAX_FIELDS)
            return -431;
        while (c < len && is_tchar((unsigned char)line[c]))
            c++;
        if (c == 0 || c == len || line[c] != ':') /* also obs-fold and space before ':' */
            return -400;
        const char *v = line + c + 1, *ve = eol;
        while (v < ve && is_ows(*v))
            v++;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (ieq(line, c, "host")) {
            hosts++;
        } else if (ieq(line, c, "content-length")) {
            if (vlen == 0)
                return -400;
            for (size_t k = 0; k < vlen; k++)
                if (v[k] != '0')
                    return -400; /* digits other than 0, or not a number: no body here */
        } else if (ieq(line, c, "transfer-encoding")) {
            return -400;
        } else if (ieq(line, c, "connection")) {
            connection_tokens(v, vlen, &close, &keep);
        }
        line = eol + 2;
    }
    if (hosts > 1 || (r->minor == 1 && hosts == 0))
        return -400;
    r->keep_alive = r->minor == 1 ? !close : (keep && !close);
    r->head_len = n;
    return 0;
}

ssize_t
http_parse(struct http_parser *ps, const char *p, size_t n, struct http_req *r)
{
    size_t lim = n < HTTP_MAX_HEAD ? n : HTTP_MAX_HEAD;
    for (size_t i = ps->scanned; i < lim; i++) {
        unsigned char c = (unsigned char)p[i];
        if (is_ctl(c))
            return -400;
        if (c == '\n') {
            if (i == 0 || p[i - 1] != '\r')
                return -400; /* bare LF */
            if (i == 1)
                return -400; /* an empty request line */
            if (i >= 3 && p[i - 2] == '\n' && p[i - 3] == '\r') {
                ps->scanned = i + 1;
                memset(r, 0, sizeof(*r));
                int rc = parse_head(p, i + 1, r);
                return rc < 0 ? rc : (ssize_t)(i + 1);
            }
        } else if (i > 0 && p[i - 1] == '\r') {
            return -400; /* bare CR */
        }
    }
    ps->scanned = lim;
    return n >= HTTP_MAX_HEAD ? -431 : 0;
}

const char *
http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}
