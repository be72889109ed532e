/* SPDX-License-Identifier: MIT */
/* json.c: strict JSON <-> msgpack conversion (API in inginious/json.h).
 *
 * JSON -> msgpack runs the same recursive-descent parser twice. msgpack puts the element
 * count of a container and the byte length of a str BEFORE their contents, which JSON
 * only reveals at the end, so:
 *   pass 1 (check) validates everything, reports the first error with its position, and
 *          records on a "tape" the count of every container and the decoded length of
 *          every string, in document order;
 *   pass 2 (emit) walks the same text again, now known to be valid, and writes the
 *          msgpack, taking each header from the tape.
 * Nothing is written when the text is invalid. Recursion is bounded by ING_MP_MAX_DEPTH.
 *
 * msgpack -> JSON validates the value first (ing_mp_validate), then walks it recursively
 * (depth bounded by the same validation) and rolls the writer back on a late error
 * (non-str key, NaN or infinity).
 *
 * Numbers are converted with strtod_l / snprintf under a private "C" locale, so the
 * program's LC_NUMERIC never changes the decimal point.
 */
#include "inginious/json.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/mp.h"

/* Parser state, shared by both passes. */
struct jp {
    const uint8_t *s;         /* the text */
    size_t n;                 /* its length */
    size_t pos;               /* next byte to look at */
    bool emit;                /* false: pass 1 (check, fill tape); true: pass 2 (write) */
    uint32_t *tape;           /* container counts and string lengths, in document order */
    size_t tlen;              /* entries on the tape (pass 1) */
    size_t tcap;              /* allocated entries */
    size_t tpos;              /* next entry to consume (pass 2) */
    struct ing_mp_writer *w;  /* output (pass 2) */
    struct ing_json_error *err; /* where to report a syntax error, or NULL */
    locale_t cloc;            /* "C" locale for strtod_l, created on first use */
};

/* jp_fail records a syntax error at byte offset `at` and returns -EPROTO. */
static int
jp_fail(struct jp *jp, size_t at, const char *msg)
{
    struct ing_json_error *e = jp->err;
    size_t i, line_start = 0;
    unsigned line = 1;

    if (e == NULL)
        return -EPROTO;
    for (i = 0; i < at && i < jp->n; i++) {
        if (jp->s[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    }
    e->offset = at;
    e->line = line;
    e->column = (unsigned)(at - line_start + 1);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
    return -EPROTO;
}

static void
skip_ws(struct jp *jp)
{
    while (jp->pos < jp->n) {
        uint8_t c = jp->s[jp->pos];

        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        jp->pos++;
    }
}

/* fail_here reports the byte at pos as unexpected (or the end of input). */
static int
fail_here(struct jp *jp, const char *msg)
{
    if (jp->pos >= jp->n)
        return jp_fail(jp, jp->n, "unexpected end of input");
    return jp_fail(jp, jp->pos, msg);
}

/* tape_push appends v in pass 1 and returns its index through *idx. */
static int
tape_push(struct jp *jp, uint32_t v, size_t *idx)
{
    if (jp->tlen == jp->tcap) {
        size_t ncap = jp->tcap != 0 ? jp->tcap * 2 : 64;
        uint32_t *nt;

        if (ncap > SIZE_MAX / sizeof(*nt))
            return -ENOMEM;
        nt = realloc(jp->tape, ncap * sizeof(*nt));
        if (nt == NULL)
            return -ENOMEM;
        jp->tape = nt;
        jp->tcap = ncap;
    }
    if (idx != NULL)
        *idx = jp->tlen;
    jp->tape[jp->tlen++] = v;
    return 0;
}

/* tape_next returns the next entry in pass 2. The tape was written by pass 1 over the
 * same text, so it cannot run short. */
static uint32_t
tape_next(struct jp *jp)
{
    if (jp->tpos >= jp->tlen)
        return 0;
    return jp->tape[jp->tpos++];
}

static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* read_hex4 reads the 4 hex digits at pos (just after "\u") into *cp. */
static int
read_hex4(struct jp *jp, uint32_t *cp)
{
    uint32_t v = 0;
    int i, h;

    for (i = 0; i < 4; i++) {
        if (jp->pos >= jp->n)
            return jp_fail(jp, jp->n, "unexpected end of input");
        h = hexval(jp->s[jp->pos]);
        if (h < 0)
            return jp_fail(jp, jp->pos, "invalid hex digit in \\u escape");
        v = v << 4 | (uint32_t)h;
        jp->pos++;
    }
    *cp = v;
    return 0;
}

/* put_utf8 encodes cp (a scalar value) into out, returns the byte count. */
static size_t
put_utf8(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* parse_escape decodes the escape whose backslash is at pos into out[0..*len). */
static int
parse_escape(struct jp *jp, uint8_t out[4], size_t *len)
{
    size_t esc = jp->pos;
    uint32_t cp, lo;
    uint8_t c;
    int rc;

    jp->pos++;
    if (jp->pos >= jp->n)
        return jp_fail(jp, jp->n, "unexpected end of input");
    c = jp->s[jp->pos++];
    switch (c) {
    case '"':
    case '\\':
    case '/':
        out[0] = c;
        break;
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        rc = read_hex4(jp, &cp);
        if (rc < 0)
            return rc;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return jp_fail(jp, esc, "lone low surrogate in \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (jp->pos == jp->n || (jp->n - jp->pos == 1 && jp->s[jp->pos] == '\\'))
                return jp_fail(jp, jp->n, "unexpected end of input");
            if (jp->n - jp->pos < 2 || jp->s[jp->pos] != '\\' || jp->s[jp->pos + 1] != 'u')
                return jp_fail(jp, esc, "lone high surrogate in \\u escape");
            jp->pos += 2;
            rc = read_hex4(jp, &lo);
            if (rc < 0)
                return rc;
            if (lo < 0xdc00 || lo > 0xdfff)
                return jp_fail(jp, esc, "lone high surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        *len = put_utf8(cp, out);
        return 0;
    default:
        return jp_fail(jp, jp->pos - 1, "invalid escape");
    }
    *len = 1;
    return 0;
}

/* utf8_seq returns the length of the valid UTF-8 sequence at p (avail bytes), or 0. */
static size_t
utf8_seq(const uint8_t *p, size_t avail)
{
    size_t k;

    if (p[0] < 0xc2)
        return 0;
    else if (p[0] < 0xe0)
        k = 2;
    else if (p[0] < 0xf0)
        k = 3;
    else if (p[0] < 0xf5)
        k = 4;
    else
        return 0;
    if (k > avail || !ing_mp_utf8_valid(p, k))
        return 0;
    return k;
}

/* flush_run writes the unescaped bytes s[from..pos) in pass 2. */
static int
flush_run(struct jp *jp, size_t from)
{
    if (!jp->emit || from == jp->pos)
        return 0;
    return ing_mp_put_raw(jp->w, jp->s + from, jp->pos - from);
}

/* parse_string parses the string whose opening quote is at pos. */
static int
parse_string(struct jp *jp)
{
    size_t open = jp->pos, run;
    uint64_t len = 0;
    uint8_t buf[4];
    size_t k = 0;
    int rc;

    if (jp->emit) {
        rc = ing_mp_put_str_header(jp->w, tape_next(jp));
        if (rc < 0)
            return rc;
    }
    run = ++jp->pos;
    for (;;) {
        uint8_t c;

        if (jp->pos >= jp->n)
            return jp_fail(jp, jp->n, "unterminated string");
        c = jp->s[jp->pos];
        if (c == '"') {
            rc = flush_run(jp, run);
            if (rc < 0)
                return rc;
            jp->pos++;
            break;
        } else if (c == '\\') {
            rc = flush_run(jp, run);
            if (rc < 0)
                return rc;
            rc = parse_escape(jp, buf, &k);
            if (rc < 0)
                return rc;
            if (jp->emit) {
                rc = ing_mp_put_raw(jp->w, buf, k);
                if (rc < 0)
                    return rc;
            }
            len += k;
            run = jp->pos;
        } else if (c < 0x20) {
            return jp_fail(jp, jp->pos, "control character in string");
        } else if (c < 0x80) {
            jp->pos++;
            len++;
        } else {
            k = utf8_seq(jp->s + jp->pos, jp->n - jp->pos);
            if (k == 0)
                return jp_fail(jp, jp->pos, "invalid UTF-8 in string");
            jp->pos += k;
            len += k;
        }
    }
    if (!jp->emit) {
        if (len > UINT32_MAX)
            return jp_fail(jp, open, "string too long");
        return tape_push(jp, (uint32_t)len, NULL);
    }
    return 0;
}

static bool
is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* to_double converts the number s[start..end) with strtod_l in the "C" locale. */
static int
to_double(struct jp *jp, size_t start, size_t end, double *out)
{
    char small[64];
    char *buf = small;
    size_t len = end - start;

    if (jp->cloc == (locale_t)0) {
        jp->cloc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (jp->cloc == (locale_t)0)
            return -ENOMEM;
    }
    if (len >= sizeof(small)) {
        buf = malloc(len + 1);
        if (buf == NULL)
            return -ENOMEM;
    }
    memcpy(buf, jp->s + start, len);
    buf[len] = '\0';
    *out = strtod_l(buf, NULL, jp->cloc);
    if (buf != small)
        free(buf);
    return 0;
}

/* parse_number parses the number at pos (RFC 8259 grammar) and writes it in pass 2. */
static int
parse_number(struct jp *jp)
{
    size_t start = jp->pos;
    bool neg = false, is_float = false;
    uint64_t mag = 0;
    bool overflow = false;
    double d;
    int rc;

    if (jp->s[jp->pos] == '-') {
        neg = true;
        jp->pos++;
    }
    if (jp->pos >= jp->n)
        return jp_fail(jp, jp->n, "unexpected end of input");
    if (jp->s[jp->pos] == '0') {
        jp->pos++;
        if (jp->pos < jp->n && is_digit(jp->s[jp->pos]))
            return jp_fail(jp, jp->pos, "leading zeros are not allowed");
    } else if (is_digit(jp->s[jp->pos])) {
        while (jp->pos < jp->n && is_digit(jp->s[jp->pos])) {
            unsigned dv = (unsigned)(jp->s[jp->pos] - '0');

            if (mag > (UINT64_MAX - dv) / 10)
                overflow = true;
            else
                mag = mag * 10 + dv;
            jp->pos++;
        }
    } else {
        return jp_fail(jp, jp->pos, "expected a digit");
    }
    if (jp->pos < jp->n && jp->s[jp->pos] == '.') {
        is_float = true;
        jp->pos++;
        if (jp->pos >= jp->n || !is_digit(jp->s[jp->pos]))
            return fail_here(jp, "expected a digit after '.'");
        while (jp->pos < jp->n && is_digit(jp->s[jp->pos]))
            jp->pos++;
    }
    if (jp->pos < jp->n && (jp->s[jp->pos] == 'e' || jp->s[jp->pos] == 'E')) {
        is_float = true;
        jp->pos++;
        if (jp->pos < jp->n && (jp->s[jp->pos] == '+' || jp->s[jp->pos] == '-'))
            jp->pos++;
        if (jp->pos >= jp->n || !is_digit(jp->s[jp->pos]))
            return fail_here(jp, "expected a digit in the exponent");
        while (jp->pos < jp->n && is_digit(jp->s[jp->pos]))
            jp->pos++;
    }

    if (!is_float && !overflow) {
        if (!neg) {
            return jp->emit ? ing_mp_put_uint(jp->w, mag) : 0;
        } else if (mag <= (uint64_t)INT64_MAX) {
            return jp->emit ? ing_mp_put_int(jp->w, -(int64_t)mag) : 0;
        } else if (mag == (uint64_t)INT64_MAX + 1) {
            return jp->emit ? ing_mp_put_int(jp->w, INT64_MIN) : 0;
        }
        /* below INT64_MIN: a float64, as for any integer out of range */
    }
    rc = to_double(jp, start, jp->pos, &d);
    if (rc < 0)
        return rc;
    if (!isfinite(d))
        return jp_fail(jp, start, "number out of range");
    return jp->emit ? ing_mp_put_double(jp->w, d) : 0;
}

/* parse_literal matches the word at pos (true, false or null). */
static int
parse_literal(struct jp *jp, const char *word)
{
    size_t i, len = strlen(word);

    for (i = 0; i < len; i++) {
        if (jp->pos >= jp->n)
            return jp_fail(jp, jp->n, "unexpected end of input");
        if (jp->s[jp->pos] != (uint8_t)word[i])
            return jp_fail(jp, jp->pos, "invalid literal");
        jp->pos++;
    }
    if (!jp->emit)
        return 0;
    if (word[0] == 'n')
        return ing_mp_put_nil(jp->w);
    return ing_mp_put_bool(jp->w, word[0] == 't');
}

static int parse_value(struct jp *jp, unsigned depth);

/* parse_container parses an object ('{') or an array ('[') whose opener is at pos;
 * depth is its own nesting level (1 for a top-level container). */
static int
parse_container(struct jp *jp, unsigned depth)
{
    bool is_obj = jp->s[jp->pos] == '{';
    uint8_t close = is_obj ? '}' : ']';
    uint32_t count = 0;
    size_t slot = 0;
    int rc;

    if (depth > ING_MP_MAX_DEPTH)
        return jp_fail(jp, jp->pos, "nesting too deep");
    jp->pos++;
    if (jp->emit) {
        uint32_t n = tape_next(jp);

        rc = is_obj ? ing_mp_put_map(jp->w, n) : ing_mp_put_array(jp->w, n);
        if (rc < 0)
            return rc;
    } else {
        rc = tape_push(jp, 0, &slot);
        if (rc < 0)
            return rc;
    }
    skip_ws(jp);
    if (jp->pos < jp->n && jp->s[jp->pos] == close) {
        jp->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(jp);
        if (is_obj) {
            if (jp->pos >= jp->n || jp->s[jp->pos] != '"')
                return fail_here(jp, "expected a string key");
            rc = parse_string(jp);
            if (rc < 0)
                return rc;
            skip_ws(jp);
            if (jp->pos >= jp->n || jp->s[jp->pos] != ':')
                return fail_here(jp, "expected ':'");
            jp->pos++;
        }
        rc = parse_value(jp, depth);
        if (rc < 0)
            return rc;
        if (count == UINT32_MAX)
            return jp_fail(jp, jp->pos, "too many elements");
        count++;
        skip_ws(jp);
        if (jp->pos < jp->n && jp->s[jp->pos] == ',') {
            jp->pos++;
            continue;
        }
        if (jp->pos < jp->n && jp->s[jp->pos] == close) {
            jp->pos++;
            break;
        }
        return fail_here(jp, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    if (!jp->emit)
        jp->tape[slot] = count;
    return 0;
}

/* parse_value parses one value after optional whitespace; depth is the nesting level of
 * the container holding it (0 at top level). */
static int
parse_value(struct jp *jp, unsigned depth)
{
    uint8_t c;

    skip_ws(jp);
    if (jp->pos >= jp->n)
        return jp_fail(jp, jp->n, "unexpected end of input");
    c = jp->s[jp->pos];
    switch (c) {
    case '{':
    case '[':
        return parse_container(jp, depth + 1);
    case '"':
        return parse_string(jp);
    case 't':
        return parse_literal(jp, "true");
    case 'f':
        return parse_literal(jp, "false");
    case 'n':
        return parse_literal(jp, "null");
    default:
        if (c == '-' || is_digit(c))
            return parse_number(jp);
        return jp_fail(jp, jp->pos, "expected a value");
    }
}

static int
parse_document(struct jp *jp)
{
    int rc;

    jp->pos = 0;
    jp->tpos = 0;
    rc = parse_value(jp, 0);
    if (rc < 0)
        return rc;
    skip_ws(jp);
    if (jp->pos != jp->n)
        return jp_fail(jp, jp->pos, "unexpected data after the value");
    return 0;
}

/* ing_json_to_mp parses the JSON text[0..n) and appends one msgpack value to w. Nothing
 * is appended when the text is invalid. Returns 0, -EPROTO (err filled when not NULL),
 * -ENOMEM, -EINVAL (text NULL with n > 0) or w's error. */
int
ing_json_to_mp(const char *text, size_t n, struct ing_mp_writer *w, struct ing_json_error *err)
{
    struct jp jp;
    int rc;

    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if (w->err)
        return w->err;
    if (text == NULL && n > 0)
        return -EINVAL;
    memset(&jp, 0, sizeof(jp));
    jp.s = (const uint8_t *)(text != NULL ? text : "");
    jp.n = n;
    jp.w = w;
    jp.err = err;
    jp.cloc = (locale_t)0;

    rc = parse_document(&jp);
    if (rc == 0) {
        jp.emit = true;
        jp.err = NULL;
        rc = parse_document(&jp);
        if (rc == 0 && w->err)
            rc = w->err;
    }
    free(jp.tape);
    if (jp.cloc != (locale_t)0)
        freelocale(jp.cloc);
    return rc;
}

/* ---- msgpack -> JSON ---------------------------------------------------------------- */

struct jw {
    struct ing_mp_writer *w;
    const uint8_t *end;
    int indent;    /* spaces per level; 0 = compact */
    locale_t cloc; /* "C" locale for snprintf, created on first float */
};

static int
out(struct jw *jw, const char *s, size_t len)
{
    return ing_mp_put_raw(jw->w, s, len);
}

static int
out_s(struct jw *jw, const char *s)
{
    return out(jw, s, strlen(s));
}

/* newline starts a new line indented for `level` in pretty mode; nothing when compact. */
static int
newline(struct jw *jw, unsigned level)
{
    static const char spaces[] = "                                                                ";
    size_t todo = (size_t)level * (size_t)jw->indent;
    int rc;

    if (jw->indent == 0)
        return 0;
    rc = out(jw, "\n", 1);
    while (rc == 0 && todo > 0) {
        size_t k = todo < sizeof(spaces) - 1 ? todo : sizeof(spaces) - 1;

        rc = out(jw, spaces, k);
        todo -= k;
    }
    return rc;
}

/* write_string writes s[0..len) (valid UTF-8) as a JSON string literal. */
static int
write_string(struct jw *jw, const uint8_t *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    int rc;

    rc = out(jw, "\"", 1);
    for (i = 0; i < len && rc == 0; i++) {
        uint8_t c = s[i];
        char esc[6];
        size_t elen;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        rc = out(jw, (const char *)s + run, i - run);
        if (rc == 0)
            rc = out(jw, esc, elen);
        run = i + 1;
    }
    if (rc == 0)
        rc = out(jw, (const char *)s + run, len - run);
    if (rc == 0)
        rc = out(jw, "\"", 1);
    return rc;
}

/* write_base64 writes p[0..len) as standard padded base64 inside quotes. */
static int
write_base64(struct jw *jw, const uint8_t *p, size_t len)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char chunk[256];
    size_t i = 0, k = 0;
    int rc;

    rc = out(jw, "\"", 1);
    while (rc == 0 && i < len) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t take = len - i < 3 ? len - i : 3;

        if (take > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (take > 2)
            v |= p[i + 2];
        chunk[k++] = b64[v >> 18 & 63];
        chunk[k++] = b64[v >> 12 & 63];
        chunk[k++] = take > 1 ? b64[v >> 6 & 63] : '=';
        chunk[k++] = take > 2 ? b64[v & 63] : '=';
        i += take;
        if (k + 4 > sizeof(chunk) || i == len) {
            rc = out(jw, chunk, k);
            k = 0;
        }
    }
    if (rc == 0)
        rc = out(jw, "\"", 1);
    return rc;
}

/* write_double writes a finite f with %.17g in the "C" locale, made to read back as a
 * float (".0" appended when the text would look like an integer). */
static int
write_double(struct jw *jw, double f)
{
    char buf[40];
    locale_t old;
    int len;

    if (!isfinite(f))
        return -EPROTO;
    if (jw->cloc == (locale_t)0) {
        jw->cloc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (jw->cloc == (locale_t)0)
            return -ENOMEM;
    }
    old = uselocale(jw->cloc);
    len = snprintf(buf, sizeof(buf), "%.17g", f);
    uselocale(old);
    if (len <= 0 || (size_t)len >= sizeof(buf) - 2)
        return -EPROTO;
    if (strpbrk(buf, ".eE") == NULL) {
        buf[len++] = '.';
        buf[len++] = '0';
        buf[len] = '\0';
    }
    return out(jw, buf, (size_t)len);
}

/* write_value writes the (validated) value at *pp; level is its nesting level. */
static int
write_value(struct jw *jw, const uint8_t **pp, unsigned level)
{
    struct ing_mp_obj o, k;
    char num[32];
    uint32_t i;
    int rc;

    rc = ing_mp_read(pp, jw->end, &o);
    if (rc < 0)
        return rc;
    switch (o.type) {
    case ING_MP_NIL:
        return out_s(jw, "null");
    case ING_MP_BOOL:
        return out_s(jw, o.v.b ? "true" : "false");
    case ING_MP_INT:
        snprintf(num, sizeof(num), "%" PRId64, o.v.i);
        return out_s(jw, num);
    case ING_MP_UINT:
        snprintf(num, sizeof(num), "%" PRIu64, o.v.u);
        return out_s(jw, num);
    case ING_MP_FLOAT:
        return write_double(jw, o.v.f);
    case ING_MP_STR:
        return write_string(jw, o.v.s.p, o.v.s.len);
    case ING_MP_BIN:
        if (ing_mp_utf8_valid(o.v.s.p, o.v.s.len))
            return write_string(jw, o.v.s.p, o.v.s.len);
        rc = out(jw, "{", 1);
        if (rc == 0)
            rc = newline(jw, level + 1);
        if (rc == 0)
            rc = out_s(jw, jw->indent ? "\"$bin\": " : "\"$bin\":");
        if (rc == 0)
            rc = write_base64(jw, o.v.s.p, o.v.s.len);
        if (rc == 0)
            rc = newline(jw, level);
        if (rc == 0)
            rc = out(jw, "}", 1);
        return rc;
    case ING_MP_ARRAY:
    case ING_MP_MAP:
        rc = out(jw, o.type == ING_MP_MAP ? "{" : "[", 1);
        for (i = 0; i < o.v.n && rc == 0; i++) {
            if (i > 0)
                rc = out(jw, ",", 1);
            if (rc == 0)
                rc = newline(jw, level + 1);
            if (rc == 0 && o.type == ING_MP_MAP) {
                rc = ing_mp_read(pp, jw->end, &k);
                if (rc == 0 && k.type != ING_MP_STR)
                    rc = -EPROTO;
                if (rc == 0)
                    rc = write_string(jw, k.v.s.p, k.v.s.len);
                if (rc == 0)
                    rc = out_s(jw, jw->indent ? ": " : ":");
            }
            if (rc == 0)
                rc = write_value(jw, pp, level + 1);
        }
        if (rc == 0 && o.v.n > 0)
            rc = newline(jw, level);
        if (rc == 0)
            rc = out(jw, o.type == ING_MP_MAP ? "}" : "]", 1);
        return rc;
    case ING_MP_EXT:
    default:
        return -EPROTO;
    }
}

/* ing_mp_to_json writes the msgpack value p[0..n) as JSON text into w (indent 0: compact,
 * > 0: pretty with that many spaces per level). On -EPROTO nothing is left in w. Returns
 * 0, -EPROTO, -EINVAL (negative indent) or w's error. */
int
ing_mp_to_json(const uint8_t *p, size_t n, struct ing_mp_writer *w, int indent)
{
    struct jw jw;
    const uint8_t *q = p;
    size_t start;
    int rc;

    if (w->err)
        return w->err;
    if (indent < 0)
        return -EINVAL;
    if (p == NULL || ing_mp_validate(p, n, ING_MP_MAX_DEPTH) < 0)
        return -EPROTO;
    jw.w = w;
    jw.end = p + n;
    jw.indent = indent;
    jw.cloc = (locale_t)0;
    start = w->len;
    rc = write_value(&jw, &q, 0);
    if (rc == 0 && w->err)
        rc = w->err;
    if (rc < 0 && w->err == 0)
        w->len = start;
    if (jw.cloc != (locale_t)0)
        freelocale(jw.cloc);
    return rc;
}
