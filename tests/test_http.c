/* SPDX-License-Identifier: MIT */
/* test_http.c: the HTTP/1.1 request-head parser (src/http.c): valid heads, every
 * truncation, byte-at-a-time feeding, every refusal, and reads that stay inside the input
 * (the input ends at a page followed by an inaccessible page). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http.h"

static ssize_t
parse_once(const char *s, size_t n, struct http_req *r)
{
    struct http_parser ps;
    http_parser_init(&ps);
    return http_parse(&ps, s, n, r);
}

/* guarded copies s to the very end of a readable page followed by a PROT_NONE page. */
static char *
guarded(const char *s, size_t n, void **map, size_t *maplen)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (n + pg - 1) / pg + 1;
    char *m = mmap(NULL, pages * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + (pages - 1) * pg, pg, PROT_NONE), 0);
    char *p = m + (pages - 1) * pg - n;
    memcpy(p, s, n);
    *map = m;
    *maplen = pages * pg;
    return p;
}

/* check_all_ways: s parses to want (> 0 or < 0) at once, fed one byte at a time with the
 * same parser, and every proper prefix of a valid head is "incomplete" (0). */
static void
check_all_ways(const char *s, ssize_t want)
{
    size_t n = strlen(s);
    struct http_req r;
    void *map;
    size_t maplen;
    assert_int_equal(parse_once(s, n, &r), want);
    if (want > 0) {
        for (size_t k = 0; k < (size_t)want; k++) {
            char *g = guarded(s, k, &map, &maplen);
            assert_int_equal(parse_once(g, k, &r), 0);
            munmap(map, maplen);
        }
    }
    struct http_parser ps;
    http_parser_init(&ps);
    ssize_t got = 0;
    for (size_t k = 1; k <= n; k++) {
        char *g = guarded(s, k, &map, &maplen);
        got = http_parse(&ps, g, k, &r);
        munmap(map, maplen);
        if (got != 0)
            break;
    }
    assert_int_equal(got, want);
}

static void
test_http_get_minimal(void **state)
{
    (void)state;
    const char *s = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    struct http_req r;
    assert_int_equal(parse_once(s, strlen(s), &r), (ssize_t)strlen(s));
    assert_int_equal(r.method, HTTP_GET);
    assert_int_equal(r.path_len, 8);
    assert_memory_equal(r.path, "/metrics", 8);
    assert_null(r.query);
    assert_int_equal(r.minor, 1);
    assert_true(r.keep_alive);
    assert_int_equal(r.head_len, strlen(s));
    check_all_ways(s, (ssize_t)strlen(s));
}

static void
test_http_fields_query_pipelined(void **state)
{
    (void)state;
    const char *s = "HEAD /status?x=1&y HTTP/1.1\r\nHost: 127.0.0.1:9464\r\n"
                    "User-Agent: Prometheus/2.45\r\nAccept:  text/plain;version=0.0.4 \t\r\n"
                    "Connection: Upgrade, Close\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n";
    size_t head = strstr(s, "\r\n\r\n") - s + 4;
    struct http_req r;
    assert_int_equal(parse_once(s, strlen(s), &r), (ssize_t)head);
    assert_int_equal(r.method, HTTP_HEAD);
    assert_memory_equal(r.path, "/status", r.path_len);
    assert_int_equal(r.path_len, 7);
    assert_int_equal(r.query_len, 5);
    assert_memory_equal(r.query, "x=1&y", 5);
    assert_false(r.keep_alive);
    char copy[512];
    memcpy(copy, s, head);
    copy[head] = 0;
    check_all_ways(copy, (ssize_t)head);
}

static void
test_http_versions_and_keepalive(void **state)
{
    (void)state;
    struct http_req r;
    const char *a = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(parse_once(a, strlen(a), &r), (ssize_t)strlen(a));
    assert_int_equal(r.minor, 0);
    assert_false(r.keep_alive);
    const char *b = "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    assert_int_equal(parse_once(b, strlen(b), &r), (ssize_t)strlen(b));
    assert_true(r.keep_alive);
    const char *c = "PUT / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(parse_once(c, strlen(c), &r), (ssize_t)strlen(c));
    assert_int_equal(r.method, HTTP_OTHER);
    check_all_ways("GET / HTTP/2.0\r\nHost: h\r\n\r\n", -505);
    check_all_ways("GET / HTTP/1.2\r\nHost: h\r\n\r\n", -505);
}

static void
test_http_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\r\n\r\n",                                     /* empty request line */
        "GET / HTTP/1.1\r\n\r\n",                       /* 1.1 without Host */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", /* two Hosts */
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",           /* two spaces */
        "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",      /* not origin-form */
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",           /* trailing space */
        "GET / http/1.1\r\nHost: a\r\n\r\n",            /* version case */
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",           /* space before colon */
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\nHost: a\r\n\r\n", /* 17-byte method */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("bad[%zu]\n", i);
        check_all_ways(bad[i], -400);
    }
}

static void
test_http_early_refusal(void **state)
{
    (void)state;
    struct http_req r;
    /* Control bytes, bare LF and bare CR are refused as soon as they are seen. */
    assert_int_equal(parse_once("GET /\n", 6, &r), -400);
    assert_int_equal(parse_once("GET /\rX", 7, &r), -400);
    assert_int_equal(parse_once("GET /\r", 6, &r), 0);
    assert_int_equal(parse_once("GE\0T", 4, &r), -400);
    assert_int_equal(parse_once("GET \x7f", 5, &r), -400);
    assert_int_equal(parse_once("\n", 1, &r), -400);
}

static void
test_http_too_large(void **state)
{
    (void)state;
    static char big[HTTP_MAX_HEAD + 64];
    struct http_req r;
    /* A head of exactly HTTP_MAX_HEAD bytes parses; one byte more is 431. */
    const char *pre = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t pl = strlen(pre);
    for (int extra = 0; extra <= 1; extra++) {
        size_t total = HTTP_MAX_HEAD + (size_t)extra;
        memcpy(big, pre, pl);
        memset(big + pl, 'v', total - pl - 4);
        memcpy(big + total - 4, "\r\n\r\n", 4);
        ssize_t want = extra ? -431 : (ssize_t)total;
        assert_int_equal(parse_once(big, total, &r), want);
        struct http_parser ps;
        http_parser_init(&ps);
        ssize_t got = 0;
        for (size_t k = 1; k <= total && got == 0; k += 97)
            got = http_parse(&ps, big, k, &r);
        if (got == 0)
            got = http_parse(&ps, big, total, &r);
        assert_int_equal(got, want);
    }
    /* Too many fields is 431 too. */
    size_t n = 0;
    n += (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < HTTP_MAX_FIELDS; i++)
        n += (size_t)sprintf(big + n, "X%d: y\r\n", i);
    n += (size_t)sprintf(big + n, "\r\n");
    assert_int_equal(parse_once(big, n, &r), -431);
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(999), "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_get_minimal),
        cmocka_unit_test(test_http_fields_query_pipelined),
        cmocka_unit_test(test_http_versions_and_keepalive),
        cmocka_unit_test(test_http_refusals),
        cmocka_unit_test(test_http_early_refusal),
        cmocka_unit_test(test_http_too_large),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
