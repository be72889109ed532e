/* SPDX-License-Identifier: MIT */
/* client.c: a small program built against the installed libinginious (pkg-config).
 *
 *   cc -o client client.c $(pkg-config --cflags --libs inginious)
 *   ./client [CLIENT_ADDR]        (default tcp://127.0.0.1:2000)
 *
 * Connects to a backend's client endpoint, prints the library's version, the backend's name
 * and environments (as JSON), pings it and prints the number of running and waiting jobs.
 * Exit status 0 when all of that worked, 1 otherwise. */
#include <stdio.h>
#include <string.h>

#include <inginious/client.h>
#include <inginious/err.h>
#include <inginious/json.h>
#include <inginious/mp.h>
#include <inginious/version.h>

/* print_envs prints the environments map of the last hello as one JSON line. */
static int
print_envs(const struct ing_client *c)
{
    struct ing_view envs = ing_client_envs(c);
    struct ing_mp_writer w;
    int rc;

    if (envs.p == NULL) {
        printf("environments: none received\n");
        return 0;
    }
    ing_mp_writer_init_dyn(&w);
    rc = ing_mp_to_json((const uint8_t *)envs.p, envs.len, &w, 0);
    if (rc == 0)
        printf("environments: %.*s\n", (int)w.len, (const char *)w.buf);
    ing_mp_writer_fini(&w);
    return rc;
}

int
main(int argc, char **argv)
{
    struct ing_client_opts opts;
    struct ing_client_queue q;
    struct ing_client *c;
    double rtt;
    int rc;

    if (argc > 2 || (argc == 2 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [CLIENT_ADDR]\n", argv[0]);
        return 2;
    }
    /* Compiled with one release, maybe running with a newer shared library. */
    printf("libinginious %s (headers %s, %d)\n", ing_version(), ING_VERSION, ING_VERSION_NUMBER);
    if (ing_version_number() / 10000 != ING_VERSION_MAJOR) {
        fprintf(stderr, "library major version %d, headers %d\n", ing_version_number() / 10000,
                ING_VERSION_MAJOR);
        return 1;
    }

    memset(&opts, 0, sizeof(opts));
    opts.size = sizeof(opts);
    opts.addr = argc == 2 ? argv[1] : NULL;
    opts.name = "example-client";
    opts.connect_timeout_ms = 5000;
    c = ing_client_new(&opts);
    if (c == NULL) {
        perror("ing_client_new");
        return 1;
    }
    rc = ing_client_connect(c);
    if (rc == 0) {
        printf("connected to %s\n", ing_client_server(c));
        rc = print_envs(c);
    }
    if (rc == 0)
        rc = ing_client_ping_wait(c, 5000, &rtt, NULL, NULL);
    if (rc == 0) {
        printf("ping: %.3f ms\n", rtt);
        rc = ing_client_get_queue_wait(c, 5000, &q, NULL, NULL);
    }
    if (rc == 0) {
        printf("queue: %zu running, %zu waiting\n", q.n_running, q.n_waiting);
        ing_client_queue_free(&q);
    }
    if (rc != 0) {
        const char *why = ing_client_last_error(c);
        fprintf(stderr, "error: %s%s%s\n", ing_strerror(rc), *why ? ": " : "", why);
    }
    ing_client_free(c);
    return rc == 0 ? 0 : 1;
}
