/* SPDX-License-Identifier: MIT */
/* bench_mp.c: ing_mp_validate throughput on a small job header map (~200 bytes) and on
 * an 8 KiB map of mostly-ASCII source code strings, and (worst case) on an 8 KiB map of
 * mostly multi-byte UTF-8 text. Prints one line per case:
 *   name iterations ns/op MB/s
 * and runs about 1 s in total. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inginious/mp.h"

static volatile int sink;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* run validates p[0..n) in batches until `budget` seconds have passed. */
static void
run(const char *name, const uint8_t *p, size_t n, double budget)
{
    uint64_t iters = 0;
    double t0 = now_s(), t;
    int acc = 0;

    if (ing_mp_validate(p, n, ING_MP_MAX_DEPTH) != 0) {
        fprintf(stderr, "%s: document does not validate\n", name);
        exit(1);
    }
    do {
        for (int i = 0; i < 256; i++)
            acc |= ing_mp_validate(p, n, ING_MP_MAX_DEPTH);
        iters += 256;
        t = now_s() - t0;
    } while (t < budget);
    sink = acc;
    printf("%s %llu %.1f %.1f\n", name, (unsigned long long)iters, t * 1e9 / (double)iters,
           (double)n * (double)iters / t / 1e6);
}

static void
build_small(struct ing_mp_writer *w)
{
    ing_mp_put_map(w, 9);
    ing_mp_put_cstr(w, "job_id");
    ing_mp_put_cstr(w, "0f8e2c1a-5b7d-4e3a-9c21-7d6e5f4a3b2c");
    ing_mp_put_cstr(w, "course_id");
    ing_mp_put_cstr(w, "LINGI1101");
    ing_mp_put_cstr(w, "task_id");
    ing_mp_put_cstr(w, "fibonacci");
    ing_mp_put_cstr(w, "environment");
    ing_mp_put_cstr(w, "default");
    ing_mp_put_cstr(w, "time_limit");
    ing_mp_put_int(w, 30);
    ing_mp_put_cstr(w, "hard_time_limit");
    ing_mp_put_int(w, 90);
    ing_mp_put_cstr(w, "memory_limit");
    ing_mp_put_int(w, 100);
    ing_mp_put_cstr(w, "debug");
    ing_mp_put_bool(w, false);
    ing_mp_put_cstr(w, "input");
    ing_mp_put_map(w, 2);
    ing_mp_put_cstr(w, "q1");
    ing_mp_put_cstr(w, "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n");
    ing_mp_put_cstr(w, "@lang");
    ing_mp_put_cstr(w, "python3");
}

static void
build_large(struct ing_mp_writer *w)
{
    static const char line[] =
        "    for (int i = 0; i < n; i++) { total += values[i] * weight; } /* somme pondérée */\n";
    char text[2048];
    size_t len = 0;
    int k;

    while (len + sizeof(line) - 1 < sizeof(text)) {
        memcpy(text + len, line, sizeof(line) - 1);
        len += sizeof(line) - 1;
    }
    ing_mp_put_map(w, 6);
    ing_mp_put_cstr(w, "job_id");
    ing_mp_put_cstr(w, "0f8e2c1a-5b7d-4e3a-9c21-7d6e5f4a3b2c");
    ing_mp_put_cstr(w, "task_id");
    ing_mp_put_cstr(w, "weighted-sum");
    ing_mp_put_cstr(w, "time_limit");
    ing_mp_put_int(w, 30);
    ing_mp_put_cstr(w, "debug");
    ing_mp_put_bool(w, true);
    ing_mp_put_cstr(w, "env");
    ing_mp_put_cstr(w, "cpp");
    ing_mp_put_cstr(w, "input");
    ing_mp_put_map(w, 4);
    for (k = 0; k < 4; k++) {
        const char key[3] = {'q', (char)('1' + k), '\0'};

        ing_mp_put_cstr(w, key);
        /* four ~1.95 KiB strings: 8 KiB in total with the header */
        ing_mp_put_str(w, text, len - (k == 3 ? 30 : 0));
    }
}

/* An 8 KiB map whose strings are mostly multi-byte text (worst case for the validator). */
static void
build_utf8(struct ing_mp_writer *w)
{
    static const char line[] = "Ελληνικά 日本語のテキスト Ünïcödé — ";
    char text[2000];
    size_t len = 0;
    int k;

    while (len + sizeof(line) - 1 < sizeof(text)) {
        memcpy(text + len, line, sizeof(line) - 1);
        len += sizeof(line) - 1;
    }
    ing_mp_put_map(w, 4);
    for (k = 0; k < 4; k++) {
        const char key[3] = {'q', (char)('1' + k), '\0'};

        ing_mp_put_cstr(w, key);
        ing_mp_put_str(w, text, len);
    }
}

int
main(void)
{
    struct ing_mp_writer small, large, utf8;

    ing_mp_writer_init_dyn(&small);
    ing_mp_writer_init_dyn(&large);
    ing_mp_writer_init_dyn(&utf8);
    build_small(&small);
    build_large(&large);
    build_utf8(&utf8);
    if (small.err || large.err || utf8.err) {
        fprintf(stderr, "bench_mp: writer error\n");
        return 1;
    }
    printf("# name iterations ns/op MB/s (sizes: small %zu, 8k_str %zu, 8k_utf8 %zu bytes)\n",
           small.len, large.len, utf8.len);
    run("mp_validate_small", small.buf, small.len, 0.35);
    run("mp_validate_8k_str", large.buf, large.len, 0.35);
    run("mp_validate_8k_utf8", utf8.buf, utf8.len, 0.3);
    ing_mp_writer_fini(&small);
    ing_mp_writer_fini(&large);
    ing_mp_writer_fini(&utf8);
    return 0;
}
