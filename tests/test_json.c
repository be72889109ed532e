/* SPDX-License-Identifier: MIT */
/* test_json.c: strict JSON <-> msgpack conversion (src/json.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/json.h"
#include "inginious/mp.h"

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* to_mp converts NUL-terminated JSON into a fresh dynamic writer; returns the rc. */
static int
to_mp(const char *json, struct ing_mp_writer *w, struct ing_json_error *err)
{
    ing_mp_writer_init_dyn(w);
    return ing_json_to_mp(json, strlen(json), w, err);
}

/* check_mp converts json and compares the msgpack bytes with want[0..n). */
static void
check_mp(const char *json, const uint8_t *want, size_t n)
{
    struct ing_mp_writer w;
    struct ing_json_error err;
    int rc = to_mp(json, &w, &err);

    if (rc != 0)
        fail_msg("%s: rc %d at %zu: %s", json, rc, err.offset, err.msg);
    if (w.len != n || memcmp(w.buf, want, n) != 0)
        fail_msg("%s: unexpected msgpack (%zu bytes, want %zu)", json, w.len, n);
    assert_int_equal(ing_mp_validate(w.buf, w.len, ING_MP_MAX_DEPTH), 0);
    ing_mp_writer_fini(&w);
}

/* json_of converts msgpack p[0..n) to JSON (NUL-terminated copy in out). */
static int
json_of(const uint8_t *p, size_t n, int indent, char *out, size_t outsz)
{
    struct ing_mp_writer w;
    int rc;

    ing_mp_writer_init_dyn(&w);
    rc = ing_mp_to_json(p, n, &w, indent);
    if (rc == 0) {
        assert_true(w.len < outsz);
        memcpy(out, w.buf, w.len);
        out[w.len] = '\0';
    } else {
        assert_int_equal(w.len, 0);
    }
    ing_mp_writer_fini(&w);
    return rc;
}

/* roundtrip: JSON -> msgpack -> JSON (indent) must give want; then want -> msgpack must
 * give the same msgpack bytes again. */
static void
roundtrip(const char *json, int indent, const char *want)
{
    struct ing_mp_writer w, w2;
    struct ing_json_error err;
    char out[4096];
    int rc = to_mp(json, &w, &err);

    if (rc != 0)
        fail_msg("%s: rc %d at %zu: %s", json, rc, err.offset, err.msg);
    rc = json_of(w.buf, w.len, indent, out, sizeof(out));
    if (rc != 0)
        fail_msg("%s: to_json rc %d", json, rc);
    if (strcmp(out, want) != 0)
        fail_msg("%s:\n got  %s\n want %s", json, out, want);
    rc = to_mp(out, &w2, &err);
    if (rc != 0)
        fail_msg("%s: re-parse rc %d at %zu: %s", out, rc, err.offset, err.msg);
    assert_int_equal(w2.len, w.len);
    assert_memory_equal(w2.buf, w.buf, w.len);
    ing_mp_writer_fini(&w);
    ing_mp_writer_fini(&w2);
}

static void
test_roundtrip_documents(void **state)
{
    (void)state;
    roundtrip("{}", 0, "{}");
    roundtrip("[]", 0, "[]");
    roundtrip("null", 0, "null");
    roundtrip("true", 0, "true");
    roundtrip("false", 0, "false");
    roundtrip("0", 0, "0");
    roundtrip("\"\"", 0, "\"\"");
    roundtrip(" \t\r\n [ 1 , 2 ,3 ] \n", 0, "[1,2,3]");
    roundtrip("{\"a\":1,\"b\":[true,false,null],\"c\":\"x\",\"d\":{\"e\":{}}}", 0,
              "{\"a\":1,\"b\":[true,false,null],\"c\":\"x\",\"d\":{\"e\":{}}}");
    roundtrip("[[],{},[[]],[{}],\"\",0,-1,1.5]", 0, "[[],{},[[]],[{}],\"\",0,-1,1.5]");
    /* key order and duplicate keys are kept */
    roundtrip("{\"z\":1,\"a\":2,\"z\":3}", 0, "{\"z\":1,\"a\":2,\"z\":3}");
    roundtrip("{\"task\":\"hello\",\"limits\":{\"time\":30,\"memory\":100.5},"
              "\"input\":{\"q1\":\"print(1)\",\"@lang\":\"python3\"},\"tags\":[]}",
              0,
              "{\"task\":\"hello\",\"limits\":{\"time\":30,\"memory\":100.5},"
              "\"input\":{\"q1\":\"print(1)\",\"@lang\":\"python3\"},\"tags\":[]}");
    /* non-ASCII UTF-8 is kept as is */
    roundtrip("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", 0,
              "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

static void
test_msgpack_forms(void **state)
{
    (void)state;
    check_mp("{\"a\":[1,-1,true,null]}",
             BYTES(0x81, 0xa1, 'a', 0x94, 0x01, 0xff, 0xc3, 0xc0));
    check_mp("\"abc\"", BYTES(0xa3, 'a', 'b', 'c'));
    check_mp("128", BYTES(0xcc, 0x80));
    check_mp("-33", BYTES(0xd0, 0xdf));
    check_mp("1.5", BYTES(0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0));
    check_mp("1e0", BYTES(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0));
    check_mp("-0", BYTES(0x00));
    check_mp("-0.0", BYTES(0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0));
    check_mp("0.0", BYTES(0xcb, 0, 0, 0, 0, 0, 0, 0, 0));
}

/* Containers and strings long enough for the 16- and 32-bit headers. */
static void
test_large_containers(void **state)
{
    size_t n = 70000, i, len;
    char *json = malloc(n * 2 + 16);
    struct ing_mp_writer w;
    struct ing_mp_obj o;
    const uint8_t *q;

    (void)state;
    assert_non_null(json);
    /* [0,0,...] with 70000 elements -> array32 */
    len = 0;
    json[len++] = '[';
    for (i = 0; i < n; i++) {
        json[len++] = '0';
        json[len++] = i + 1 < n ? ',' : ']';
    }
    json[len] = '\0';
    assert_int_equal(to_mp(json, &w, NULL), 0);
    assert_int_equal(w.buf[0], 0xdd);
    assert_int_equal(w.len, 5 + n);
    q = w.buf;
    assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
    assert_int_equal(o.v.n, n);
    ing_mp_writer_fini(&w);
    /* a 70000-byte string -> str32 */
    json[0] = '"';
    memset(json + 1, 'x', n);
    json[n + 1] = '"';
    json[n + 2] = '\0';
    assert_int_equal(to_mp(json, &w, NULL), 0);
    assert_int_equal(w.buf[0], 0xdb);
    assert_int_equal(w.len, 5 + n);
    ing_mp_writer_fini(&w);
    /* 300 bytes with escapes: the header counts decoded bytes (str16 of 256) */
    len = 0;
    json[len++] = '"';
    for (i = 0; i < 128; i++) {
        memcpy(json + len, "\\n", 2);
        len += 2;
    }
    memcpy(json + len, "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                       "\\u00e9\\u00e9\\u00e9\\u00e9\"", 64 * 6 + 1);
    len += 64 * 6 + 1;
    json[len] = '\0';
    assert_int_equal(to_mp(json, &w, NULL), 0);
    assert_memory_equal(w.buf, ((const uint8_t[]){0xda, 0x01, 0x00, '\n'}), 4);
    assert_int_equal(w.len, 3 + 256);
    assert_memory_equal(w.buf + 3 + 128, "\xc3\xa9", 2);
    ing_mp_writer_fini(&w);
    free(json);
}

static void
test_escapes_and_unicode(void **state)
{
    (void)state;
    check_mp("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", BYTES(0xa8, '"', '\\', '/', 8, 12, 10, 13, 9));
    check_mp("\"\\u0041\\u00e9\\u20AC\"", BYTES(0xa6, 'A', 0xc3, 0xa9, 0xe2, 0x82, 0xac));
    check_mp("\"\\u0000\"", BYTES(0xa1, 0x00));
    check_mp("\"\\u07ff\\u0800\\uffff\"",
             BYTES(0xa8, 0xdf, 0xbf, 0xe0, 0xa0, 0x80, 0xef, 0xbf, 0xbf));
    /* surrogate pairs -> one 4-byte character */
    check_mp("\"\\ud83d\\ude00\"", BYTES(0xa4, 0xf0, 0x9f, 0x98, 0x80));
    check_mp("\"\\uD800\\uDC00\"", BYTES(0xa4, 0xf0, 0x90, 0x80, 0x80));
    check_mp("\"\\udbff\\udfff\"", BYTES(0xa4, 0xf4, 0x8f, 0xbf, 0xbf));
    check_mp("\"a\\ud83d\\ude00b\"", BYTES(0xa6, 'a', 0xf0, 0x9f, 0x98, 0x80, 'b'));
    /* raw UTF-8 passes through */
    check_mp("\"\xf0\x9f\x98\x80\"", BYTES(0xa4, 0xf0, 0x9f, 0x98, 0x80));
    /* escaped in keys too */
    check_mp("{\"\\u006b\":1}", BYTES(0x81, 0xa1, 'k', 0x01));
    /* msgpack -> JSON escaping: only '"', '\\' and control characters */
    roundtrip("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\"", 0,
              "\"\\\"\\\\/\\u0008\\u000c\\u000a\\u000d\\u0009\\u0001\\u001f\x7f\"");
    roundtrip("\"\\u0000x\"", 0, "\"\\u0000x\"");
    roundtrip("\"\\ud83d\\ude00\"", 0, "\"\xf0\x9f\x98\x80\"");
}

static void
test_numbers(void **state)
{
    struct ing_mp_writer w;
    struct ing_mp_obj o;
    const uint8_t *q;

    (void)state;
    check_mp("9223372036854775807", BYTES(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    check_mp("-9223372036854775808", BYTES(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0));
    check_mp("9223372036854775808", BYTES(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0));
    check_mp("18446744073709551615", BYTES(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    check_mp("4294967296", BYTES(0xcf, 0, 0, 0, 1, 0, 0, 0, 0));
    check_mp("-2147483649", BYTES(0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff));

    /* beyond uint64 / int64: float64 */
    assert_int_equal(to_mp("18446744073709551616", &w, NULL), 0);
    q = w.buf;
    assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
    assert_int_equal(o.type, ING_MP_FLOAT);
    assert_true(o.v.f == 18446744073709551616.0);
    ing_mp_writer_fini(&w);
    assert_int_equal(to_mp("-9223372036854775809", &w, NULL), 0);
    q = w.buf;
    assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
    assert_int_equal(o.type, ING_MP_FLOAT);
    assert_true(o.v.f == -9223372036854775808.0);
    ing_mp_writer_fini(&w);
    assert_int_equal(to_mp("123456789012345678901234567890", &w, NULL), 0);
    q = w.buf;
    assert_int_equal(ing_mp_read(&q, w.buf + w.len, &o), 0);
    assert_true(o.v.f == 1.2345678901234568e29);
    ing_mp_writer_fini(&w);

    /* double edges, and text that reads back to the same bits */
    roundtrip("1.7976931348623157e308", 0, "1.7976931348623157e+308");
    roundtrip("-1.7976931348623157e308", 0, "-1.7976931348623157e+308");
    roundtrip("5e-324", 0, "4.9406564584124654e-324");
    roundtrip("2.2250738585072014E-308", 0, "2.2250738585072014e-308");
    roundtrip("0.1", 0, "0.10000000000000001");
    roundtrip("1.0", 0, "1.0");
    roundtrip("100e0", 0, "100.0");
    roundtrip("-0.0", 0, "-0.0");
    roundtrip("1E2", 0, "100.0");
    roundtrip("1e+2", 0, "100.0");
    roundtrip("12.5e-1", 0, "1.25");
    roundtrip("1e16", 0, "10000000000000000.0");
    roundtrip("1e17", 0, "1e+17");
    roundtrip("1e-7", 0, "9.9999999999999995e-08");
    roundtrip("18446744073709551615", 0, "18446744073709551615");
    roundtrip("-9223372036854775808", 0, "-9223372036854775808");
    roundtrip("18446744073709551616", 0, "1.8446744073709552e+19");
    roundtrip("0.000000000000000000000000000000000000000000000000000000000000000000001", 0,
              "9.9999999999999996e-70");
    /* underflow to zero is fine */
    roundtrip("1e-400", 0, "0.0");
}

/* Parse error: rc, offset, line, column. */
static void
check_err(const char *json, size_t len, size_t off, unsigned line, unsigned col)
{
    struct ing_mp_writer w;
    struct ing_json_error err;
    int rc;

    ing_mp_writer_init_dyn(&w);
    memset(&err, 0x55, sizeof(err));
    rc = ing_json_to_mp(json, len, &w, &err);
    if (rc != -EPROTO)
        fail_msg("'%s': rc %d, want -EPROTO", json, rc);
    if (err.offset != off || err.line != line || err.column != col)
        fail_msg("'%s': error at %zu (%u:%u) '%s', want %zu (%u:%u)", json, err.offset, err.line,
                 err.column, err.msg, off, line, col);
    assert_true(err.msg[0] != '\0');
    assert_non_null(memchr(err.msg, '\0', sizeof(err.msg)));
    /* nothing was written */
    assert_int_equal(w.len, 0);
    assert_int_equal(w.err, 0);
    /* NULL err is allowed */
    assert_int_equal(ing_json_to_mp(json, len, &w, NULL), -EPROTO);
    ing_mp_writer_fini(&w);
}

#define ERR(json, off, line, col) check_err(json, sizeof(json) - 1, off, line, col)

static void
test_errors_structure(void **state)
{
    (void)state;
    ERR("", 0, 1, 1);
    ERR("   ", 3, 1, 4);
    ERR("[", 1, 1, 2);
    ERR("[1", 2, 1, 3);
    ERR("[1,", 3, 1, 4);
    ERR("[1,]", 3, 1, 4);
    ERR("[1 2]", 3, 1, 4);
    ERR("[1}", 2, 1, 3);
    ERR("{", 1, 1, 2);
    ERR("{\"a\"", 4, 1, 5);
    ERR("{\"a\" 1}", 5, 1, 6);
    ERR("{\"a\":}", 5, 1, 6);
    ERR("{\"a\":1,}", 7, 1, 8);
    ERR("{\"a\":1 \"b\":2}", 7, 1, 8);
    ERR("{1:2}", 1, 1, 2);
    ERR("{'a':2}", 1, 1, 2);
    ERR("{\"a\":1]", 6, 1, 7);
    ERR("]", 0, 1, 1);
    ERR("[1] x", 4, 1, 5);
    ERR("{} {}", 3, 1, 4);
    ERR("1 2", 2, 1, 3);
    ERR("\"a\"\"b\"", 3, 1, 4);
    ERR("nul", 3, 1, 4);
    ERR("tru", 3, 1, 4);
    ERR("trux", 3, 1, 4);
    ERR("truex", 4, 1, 5);
    ERR("True", 0, 1, 1);
    ERR("NaN", 0, 1, 1);
    ERR("Infinity", 0, 1, 1);
    ERR("\xef\xbb\xbf{}", 0, 1, 1); /* a BOM is not whitespace */
    ERR("[1,\f2]", 3, 1, 4);         /* neither is a form feed */
    ERR("/* */ 1", 0, 1, 1);
    check_err("[1,\0]", 5, 3, 1, 4);
    check_err("1\0", 2, 1, 1, 2);
    /* lines and columns */
    ERR("{\n  \"a\": 1,\n  \"b\": ]\n}", 19, 3, 8);
    ERR("[\n\n\n  x]", 6, 4, 3);
    ERR("[1,\r\n 2,\r\n", 10, 3, 1);
    ERR("\n\n", 2, 3, 1);
}

static void
test_errors_strings(void **state)
{
    (void)state;
    ERR("\"abc", 4, 1, 5);                /* unterminated */
    ERR("\"abc\\", 5, 1, 6);
    ERR("\"a\nb\"", 2, 1, 3);             /* raw control characters */
    ERR("\"a\tb\"", 2, 1, 3);
    ERR("\"\x01\"", 1, 1, 2);
    ERR("\"\x1f\"", 1, 1, 2);
    check_err("\"a\0b\"", 5, 2, 1, 3);
    ERR("\"\\x\"", 2, 1, 3);              /* unknown escape: at the letter */
    ERR("\"\\a\"", 2, 1, 3);
    ERR("\"\\U0041\"", 2, 1, 3);
    ERR("\"\\'\"", 2, 1, 3);
    ERR("\"\\u12g4\"", 5, 1, 6);          /* bad hex digit: at the digit */
    ERR("\"\\u123\"", 6, 1, 7);
    ERR("\"\\u12", 5, 1, 6);
    /* lone and reversed surrogates: at the backslash of the bad escape */
    ERR("\"\\ud800\"", 1, 1, 2);
    ERR("\"\\ud800x\"", 1, 1, 2);
    ERR("\"\\ud800\\n\"", 1, 1, 2);
    ERR("\"\\ud800\\u0041\"", 1, 1, 2);
    ERR("\"\\ud800\\ud800\"", 1, 1, 2);
    ERR("\"\\udc00\"", 1, 1, 2);
    ERR("\"ab\\udc00\\ud800\"", 3, 1, 4);
    ERR("\"\\udfff\"", 1, 1, 2);
    ERR("\"\\ud83d\\ude0\"", 12, 1, 13);
    ERR("\"\\ud83d", 7, 1, 8);
    /* invalid UTF-8 in the input: at the first byte of the bad sequence */
    ERR("\"\xc3\x28\"", 1, 1, 2);
    ERR("\"ab\xc0\xaf\"", 3, 1, 4);       /* overlong '/' */
    ERR("\"\xe0\x80\xaf\"", 1, 1, 2);     /* overlong */
    ERR("\"\xed\xa0\x80\"", 1, 1, 2);     /* UTF-8-encoded surrogate */
    ERR("\"\xf4\x90\x80\x80\"", 1, 1, 2); /* above U+10FFFF */
    ERR("\"\xf8\x88\x80\x80\x80\"", 1, 1, 2);
    ERR("\"\x80\"", 1, 1, 2);
    ERR("\"\xe2\x82\"", 1, 1, 2);         /* truncated before the quote */
    ERR("\"\xe2\x82", 1, 1, 2);           /* truncated at the end of input */
    ERR("{\"k\xff\":1}", 3, 1, 4);        /* in a key */
    ERR("[\xff]", 1, 1, 2);               /* outside a string */
    ERR("\n\"\xc3\"", 2, 2, 2);
}

static void
test_errors_numbers(void **state)
{
    (void)state;
    ERR("01", 1, 1, 2);
    ERR("-01", 2, 1, 3);
    ERR("00", 1, 1, 2);
    ERR("1.", 2, 1, 3);
    ERR("1.]", 2, 1, 3);
    ERR("[1.]", 3, 1, 4);
    ERR(".5", 0, 1, 1);
    ERR("[.5]", 1, 1, 2);
    ERR("1e", 2, 1, 3);
    ERR("1e+", 3, 1, 4);
    ERR("1E-x", 3, 1, 4);
    ERR("1.e5", 2, 1, 3);
    ERR("-", 1, 1, 2);
    ERR("-a", 1, 1, 2);
    ERR("--1", 1, 1, 2);
    ERR("+1", 0, 1, 1);
    ERR("0x10", 1, 1, 2);
    ERR("1.5.", 3, 1, 4);
    ERR("1e400", 0, 1, 1); /* not representable as a finite float64 */
    ERR("[0, -1e999]", 4, 1, 5);
    ERR("-", 1, 1, 2);
}

static void
test_depth_limit(void **state)
{
    char buf[300];
    struct ing_mp_writer w;
    int i;

    (void)state;
    /* 64 nested arrays: fine */
    for (i = 0; i < 64; i++) {
        buf[i] = '[';
        buf[64 + i] = ']';
    }
    buf[128] = '\0';
    assert_int_equal(to_mp(buf, &w, NULL), 0);
    assert_int_equal(w.len, 64);
    assert_int_equal(ing_mp_validate(w.buf, w.len, ING_MP_MAX_DEPTH), 0);
    {
        char out[1024];

        assert_int_equal(json_of(w.buf, w.len, 0, out, sizeof(out)), 0);
        assert_string_equal(out, buf);
    }
    ing_mp_writer_fini(&w);
    /* 65: refused at the 65th opener */
    for (i = 0; i < 65; i++) {
        buf[i] = '[';
        buf[65 + i] = ']';
    }
    buf[130] = '\0';
    check_err(buf, 130, 64, 1, 65);
    /* objects count the same way */
    {
        char obj[700];
        size_t len = 0;

        for (i = 0; i < 65; i++) {
            memcpy(obj + len, "{\"k\":", 5);
            len += 5;
        }
        obj[len++] = '1';
        for (i = 0; i < 65; i++)
            obj[len++] = '}';
        obj[len] = '\0';
        check_err(obj, len, 64 * 5, 1, 64 * 5 + 1);
        /* drop the outermost level: 64 is fine */
        assert_int_equal(to_mp(obj + 5, &w, NULL), -EPROTO); /* one '}' too many */
        ing_mp_writer_fini(&w);
        obj[len - 1] = '\0';
        assert_int_equal(to_mp(obj + 5, &w, NULL), 0);
        ing_mp_writer_fini(&w);
    }
    /* a deep bomb does not crash */
    {
        size_t n = 200000;
        char *bomb = malloc(n + 1);

        assert_non_null(bomb);
        memset(bomb, '[', n);
        bomb[n] = '\0';
        check_err(bomb, n, 64, 1, 65);
        free(bomb);
    }
    /* msgpack deeper than 64 is refused by to_json */
    {
        uint8_t deep[66];
        char out[256];

        memset(deep, 0x91, 65);
        deep[65] = 0xc0;
        assert_int_equal(json_of(deep, 66, 0, out, sizeof(out)), -EPROTO);
        assert_int_equal(json_of(deep + 1, 65, 0, out, sizeof(out)), 0);
    }
}

static void
test_bin_output(void **state)
{
    char out[512];

    (void)state;
    /* valid UTF-8 -> plain string */
    assert_int_equal(json_of(BYTES(0xc4, 0x05, 'h', 'e', 'l', 'l', 'o'), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "\"hello\"");
    assert_int_equal(json_of(BYTES(0xc4, 0x02, '"', 0x01), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "\"\\\"\\u0001\"");
    assert_int_equal(json_of(BYTES(0xc4, 0x00), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "\"\"");
    /* otherwise base64, every padding case */
    assert_int_equal(json_of(BYTES(0xc4, 0x03, 0xff, 0x00, 0x01), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "{\"$bin\":\"/wAB\"}");
    assert_int_equal(json_of(BYTES(0xc4, 0x01, 0xff), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "{\"$bin\":\"/w==\"}");
    assert_int_equal(json_of(BYTES(0xc4, 0x02, 0xff, 0xfe), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "{\"$bin\":\"//4=\"}");
    assert_int_equal(json_of(BYTES(0xc5, 0x00, 0x04, 0x80, 'a', 'b', 'c'), 0, out, sizeof(out)),
                     0);
    assert_string_equal(out, "{\"$bin\":\"gGFiYw==\"}");
    /* pretty */
    assert_int_equal(json_of(BYTES(0x91, 0xc4, 0x01, 0xff), 2, out, sizeof(out)), 0);
    assert_string_equal(out, "[\n  {\n    \"$bin\": \"/w==\"\n  }\n]");
    /* long binary: crosses the encoder's chunk size */
    {
        uint8_t bin[3 + 600];
        struct ing_mp_writer w;
        int i;

        bin[0] = 0xc5;
        bin[1] = 600 >> 8;
        bin[2] = 600 & 0xff;
        for (i = 0; i < 600; i++)
            bin[3 + i] = (uint8_t)(0xff - i % 3);
        ing_mp_writer_init_dyn(&w);
        assert_int_equal(ing_mp_to_json(bin, sizeof(bin), &w, 0), 0);
        assert_int_equal(w.len, strlen("{\"$bin\":\"\"}") + 800);
        assert_memory_equal(w.buf + 9, "//79//79", 8);
        assert_memory_equal(w.buf + w.len - 6, "//79\"}", 6);
        ing_mp_writer_fini(&w);
    }
}

static void
test_pretty(void **state)
{
    (void)state;
    roundtrip("{\"a\":[1,2],\"b\":{},\"c\":[],\"d\":{\"e\":null}}", 2,
              "{\n"
              "  \"a\": [\n"
              "    1,\n"
              "    2\n"
              "  ],\n"
              "  \"b\": {},\n"
              "  \"c\": [],\n"
              "  \"d\": {\n"
              "    \"e\": null\n"
              "  }\n"
              "}");
    roundtrip("[1,[2]]", 4, "[\n    1,\n    [\n        2\n    ]\n]");
    roundtrip("\"x\"", 3, "\"x\"");
    roundtrip("{}", 2, "{}");
    /* indents larger than the internal run of spaces */
    {
        struct ing_mp_writer w;
        char want[300];

        memset(want, ' ', sizeof(want));
        want[0] = '[';
        want[1] = '\n';
        want[2 + 100] = '1';
        want[3 + 100] = '\n';
        want[4 + 100] = ']';
        want[5 + 100] = '\0';
        ing_mp_writer_init_dyn(&w);
        assert_int_equal(ing_mp_to_json(BYTES(0x91, 0x01), &w, 100), 0);
        assert_int_equal(w.len, strlen(want));
        assert_memory_equal(w.buf, want, w.len);
        assert_int_equal(ing_mp_to_json(BYTES(0x91, 0x01), &w, -1), -EINVAL);
        ing_mp_writer_fini(&w);
    }
}

static void
test_to_json_values(void **state)
{
    char out[256];

    (void)state;
    assert_int_equal(json_of(BYTES(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 0, out,
                             sizeof(out)), 0);
    assert_string_equal(out, "18446744073709551615");
    assert_int_equal(json_of(BYTES(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "-9223372036854775808");
    assert_int_equal(json_of(BYTES(0xca, 0x3f, 0xc0, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "1.5");
    assert_int_equal(json_of(BYTES(0xca, 0x3d, 0xcc, 0xcc, 0xcd), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "0.10000000149011612");
    assert_int_equal(json_of(BYTES(0xca, 0x42, 0x28, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "42.0");
    assert_int_equal(json_of(BYTES(0xcb, 0x44, 0x30, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "2.9514790517935283e+20");
    assert_int_equal(json_of(BYTES(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "1.0");
    assert_int_equal(json_of(BYTES(0xcb, 0xc0, 0x59, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "-100.0");
    /* str with every control character class */
    assert_int_equal(json_of(BYTES(0xa5, 0x00, 0x1f, 0x20, '\\', 0x7f), 0, out, sizeof(out)), 0);
    assert_string_equal(out, "\"\\u0000\\u001f \\\\\x7f\"");
}

static void
test_to_json_errors(void **state)
{
    char out[256];
    struct ing_mp_writer w;
    uint8_t fixed[4];

    (void)state;
    /* NaN and infinities, float64 and float32, also nested */
    assert_int_equal(json_of(BYTES(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)),
                     -EPROTO);
    assert_int_equal(json_of(BYTES(0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)),
                     -EPROTO);
    assert_int_equal(json_of(BYTES(0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0), 0, out, sizeof(out)),
                     -EPROTO);
    assert_int_equal(json_of(BYTES(0xca, 0x7f, 0xc0, 0, 0), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0xca, 0x7f, 0x80, 0, 0), 2,
                             out, sizeof(out)), -EPROTO);
    /* non-str keys */
    assert_int_equal(json_of(BYTES(0x81, 0x01, 0x02), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x81, 0xc0, 0x02), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x81, 0xc4, 0x01, 'a', 0x02), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x81, 0x90, 0x02), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x92, 0x01, 0x81, 0xa1, 'a', 0x81, 0x05, 0x06), 0, out,
                             sizeof(out)), -EPROTO);
    /* malformed msgpack: truncated, trailing bytes, ext, 0xc1, bad UTF-8, empty */
    assert_int_equal(json_of(BYTES(0x92, 0x01), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0x01, 0x02), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0xd4, 0x01, 0x00), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0xc1), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of(BYTES(0xa1, 0xff), 0, out, sizeof(out)), -EPROTO);
    assert_int_equal(json_of((const uint8_t *)"", 0, 0, out, sizeof(out)), -EPROTO);

    /* a late error leaves the writer as it was */
    ing_mp_writer_init_dyn(&w);
    ing_mp_put_raw(&w, "keep", 4);
    assert_int_equal(ing_mp_to_json(BYTES(0x93, 0x01, 0x02, 0x81, 0x03, 0x04), &w, 0), -EPROTO);
    assert_int_equal(w.len, 4);
    assert_int_equal(w.err, 0);
    /* appends after what is already there */
    assert_int_equal(ing_mp_to_json(BYTES(0x92, 0x01, 0x02), &w, 0), 0);
    assert_int_equal(w.len, 9);
    assert_memory_equal(w.buf, "keep[1,2]", 9);
    ing_mp_writer_fini(&w);

    /* a fixed writer that is too small: -ENOMEM, sticky */
    ing_mp_writer_init(&w, fixed, sizeof(fixed));
    assert_int_equal(ing_mp_to_json(BYTES(0xa5, 'h', 'e', 'l', 'l', 'o'), &w, 0), -ENOMEM);
    assert_int_equal(w.err, -ENOMEM);
    assert_int_equal(ing_mp_to_json(BYTES(0xc0), &w, 0), -ENOMEM);
    /* and for JSON -> msgpack */
    ing_mp_writer_init(&w, fixed, sizeof(fixed));
    assert_int_equal(ing_json_to_mp("\"hello\"", 7, &w, NULL), -ENOMEM);
    ing_mp_writer_init(&w, fixed, sizeof(fixed));
    assert_int_equal(ing_json_to_mp("[1,2,3]", 7, &w, NULL), 0); /* exactly 4 bytes */
    assert_memory_equal(fixed, ((const uint8_t[]){0x93, 1, 2, 3}), 4);
    /* a writer already in error is left alone */
    assert_int_equal(ing_json_to_mp("[]", 2, &w, NULL), -ENOMEM);
    assert_int_equal(w.len, 4);
    assert_int_equal(ing_json_to_mp("[]", 2, &w, NULL), -ENOMEM);
}

/* JSON text that is not NUL-terminated: the parser stops at n. */
static void
test_unterminated_input(void **state)
{
    struct ing_mp_writer w;
    struct ing_json_error err;
    char *buf = malloc(8);

    (void)state;
    assert_non_null(buf);
    memcpy(buf, "[12345]x", 8);
    ing_mp_writer_init_dyn(&w);
    assert_int_equal(ing_json_to_mp(buf, 7, &w, &err), 0);
    assert_int_equal(ing_json_to_mp(buf, 6, &w, &err), -EPROTO);
    assert_int_equal(err.offset, 6);
    memcpy(buf, "1.5e+10x", 8);
    w.len = 0;
    assert_int_equal(ing_json_to_mp(buf, 7, &w, &err), 0);
    assert_int_equal(w.len, 9);
    assert_int_equal(ing_json_to_mp(buf, 5, &w, &err), -EPROTO);
    assert_int_equal(err.offset, 5);
    assert_int_equal(w.len, 9);
    assert_int_equal(ing_json_to_mp(NULL, 0, &w, &err), -EPROTO);
    assert_int_equal(err.offset, 0);
    ing_mp_writer_fini(&w);
    free(buf);
}

/* Numbers ignore the program's LC_NUMERIC (skipped when no comma locale is installed). */
static void
test_locale_independent(void **state)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8",
                                        "fr_FR.utf8", "nl_BE.UTF-8", "de_DE"};
    size_t i;
    bool found = false;

    (void)state;
    for (i = 0; i < sizeof(names) / sizeof(names[0]) && !found; i++) {
        if (setlocale(LC_NUMERIC, names[i]) != NULL &&
            strcmp(localeconv()->decimal_point, ",") == 0)
            found = true;
    }
    if (!found) {
        setlocale(LC_NUMERIC, "C");
        skip();
    }
    roundtrip("[1.5,-0.25e3,1e-7]", 0, "[1.5,-250.0,9.9999999999999995e-08]");
    setlocale(LC_NUMERIC, "C");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_documents),
        cmocka_unit_test(test_msgpack_forms),
        cmocka_unit_test(test_large_containers),
        cmocka_unit_test(test_escapes_and_unicode),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_errors_structure),
        cmocka_unit_test(test_errors_strings),
        cmocka_unit_test(test_errors_numbers),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_bin_output),
        cmocka_unit_test(test_pretty),
        cmocka_unit_test(test_to_json_values),
        cmocka_unit_test(test_to_json_errors),
        cmocka_unit_test(test_unterminated_input),
        cmocka_unit_test(test_locale_independent),
    };

    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
