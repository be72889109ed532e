/* SPDX-License-Identifier: MIT */
/* test_api.c: the public library's shape (issue 15): the version macros against
 * ing_version() and ing_version_number(), the size fields of the structs that grow
 * (0 and the current size accepted, a size short of release 1.0's fields refused with
 * EINVAL, a larger one from newer headers accepted), and a text for every code err.h lists. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inginious/agent.h"
#include "inginious/client.h"
#include "inginious/err.h"
#include "inginious/version.h"

static void
test_version(void **state)
{
    char text[32];

    (void)state;
    assert_string_equal(ing_version(), ING_VERSION);
    assert_int_equal(ing_version_number(), ING_VERSION_NUMBER);
    snprintf(text, sizeof(text), "%d.%d.%d", ING_VERSION_MAJOR, ING_VERSION_MINOR,
             ING_VERSION_PATCH);
    assert_string_equal(ING_VERSION, text);
    assert_int_equal(ING_VERSION_NUMBER,
                     ING_VERSION_MAJOR * 10000 + ING_VERSION_MINOR * 100 + ING_VERSION_PATCH);
#if ING_VERSION_NUMBER < 10000
#error "ING_VERSION_NUMBER must be usable in #if"
#endif
}

/* A caller built against newer headers: the same fields and one more at the end. */
struct newer_client_opts {
    struct ing_client_opts o;
    long added;
};

static void
test_client_opts_size(void **state)
{
    struct newer_client_opts n;
    struct ing_client_opts o;
    struct ing_client *c;
    size_t sizes[] = {0, sizeof(o), sizeof(n)};

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        memset(&n, 0xff, sizeof(n));
        n.o = (struct ing_client_opts){.size = sizes[i], .addr = "tcp://127.0.0.1:1"};
        c = ing_client_new(&n.o);
        assert_non_null(c);
        ing_client_free(c);
    }
    o = (struct ing_client_opts){.size = offsetof(struct ing_client_opts, secret_len),
                                 .addr = "tcp://127.0.0.1:1"};
    errno = 0;
    assert_null(ing_client_new(&o));
    assert_int_equal(errno, EINVAL);
    o.size = 1;
    assert_null(ing_client_new(&o));
}

static void
test_client_job_size(void **state)
{
    struct ing_client_opts o = {.size = sizeof(o), .addr = "tcp://127.0.0.1:1"};
    struct ing_client_job j = {.job_id = "j1", .environment_type = "docker",
                               .environment = "default"};
    struct ing_client *c = ing_client_new(&o);

    (void)state;
    assert_non_null(c);
    /* A size too small is refused before anything else; the right sizes get as far as the
     * missing connection. */
    j.size = sizeof(size_t);
    assert_int_equal(ing_client_submit(c, &j), -EINVAL);
    j.size = 0;
    assert_int_equal(ing_client_submit(c, &j), -ENOTCONN);
    j.size = sizeof(j);
    assert_int_equal(ing_client_submit(c, &j), -ENOTCONN);
    j.size = sizeof(j) + 64;
    assert_int_equal(ing_client_submit(c, &j), -ENOTCONN);
    ing_client_free(c);
}

static void
test_agent_opts_size(void **state)
{
    struct ing_agent_env env = {.type = "process", .name = "default", .id = "v1"};
    struct ing_agent_opts o = {.addr = "tcp://127.0.0.1:1", .name = "a", .slots = 1,
                               .envs = &env, .nenvs = 1};
    struct ing_agent *a;

    (void)state;
    o.size = 0;
    a = ing_agent_new(&o);
    assert_non_null(a);
    ing_agent_free(a);
    o.size = sizeof(o);
    a = ing_agent_new(&o);
    assert_non_null(a);
    ing_agent_free(a);
    o.size = offsetof(struct ing_agent_opts, secret);
    errno = 0;
    assert_null(ing_agent_new(&o));
    assert_int_equal(errno, EINVAL);
}

/* Every code err.h lists has the system's text. */
static void
test_err_codes(void **state)
{
    static const int codes[] = {EPROTO,   EMSGSIZE, ENOMEM,     ENOENT,     EINVAL,
                                ETIMEDOUT, EAGAIN,  ENOMSG,     EEXIST,     ENOBUFS,
                                ENOTCONN, EISCONN,  ECONNRESET, ECONNREFUSED, EPIPE};

    (void)state;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), "%s", strerror(codes[i]));
        assert_string_equal(ing_strerror(-codes[i]), want);
        assert_string_equal(ing_strerror(codes[i]), want);
    }
    assert_string_equal(ing_strerror(0), "success");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_client_opts_size),
        cmocka_unit_test(test_client_job_size),
        cmocka_unit_test(test_agent_opts_size),
        cmocka_unit_test(test_err_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
