/* SPDX-License-Identifier: MIT */
/* httpd.c: see httpd.h. */
#include "httpd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "http.h"
#include "log.h"
#include "net.h"

#define HTTPD_READ_MAX (HTTP_MAX_HEAD + 1) /* bytes kept of a request: one past the cap */
#define HTTPD_WRITE_BUDGET (256 * 1024)    /* bytes written to one peer per wake-up */
#define HTTPD_ACCEPT_BUDGET 64
#define HTTPD_ITER_US 2000 /* past this much time in one loop iteration, requests wait */

struct hconn {
    struct ev_io io;
    struct httpd *h;
    struct hconn *prev, *next; /* by deadline, soonest first */
    uint64_t deadline_ms;
    struct http_parser ps;
    char in[HTTPD_READ_MAX];
    size_t in_len;
    struct buf out;
    uint32_t served;
    uint64_t mem;     /* counted in h->mem: the connection and its output's capacity */
    bool close_after; /* close once out is written */
    bool closing;
};

struct httpd {
    struct httpd_config cfg;
    struct ev_loop *loop;
    struct status *st;
    struct metrics_server *ms;
    struct ev_io lio;
    int lfd;
    char addr[128];
    struct acl_entry loopback[2];
    struct hconn *head, *tail;
    uint32_t nconns;
    struct ev_timer timer;  /* the soonest deadline */
    struct ev_timer second; /* throughput sample */
    struct buf body;        /* scratch: the answer's body */
    uint64_t mem;           /* httpd_mem */
    uint64_t body_mem;      /* body's share of it */
};

/* account brings c's share of h->mem (NULL: the scratch's) up to date. */
static void
account(struct httpd *h, struct hconn *c)
{
    uint64_t *mine = c != NULL ? &c->mem : &h->body_mem;
    uint64_t now = c != NULL ? sizeof(*c) + c->out.cap : h->body.cap;
    h->mem = h->mem - *mine + now;
    *mine = now;
}

/* admit tells whether n more bytes fit in the server's budget. */
static bool
admit(const struct httpd *h, uint64_t n)
{
    return h->cfg.admit == NULL || h->cfg.admit(h->cfg.admit_arg, n);
}

void
httpd_config_default(struct httpd_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_conns = 128;
    cfg->timeout_ms = 10000;
    cfg->keepalive_max = 100;
    cfg->max_out = 16u << 20;
}

static void
arm(struct httpd *h)
{
    if (h->head != NULL)
        ev_timer_start(h->loop, &h->timer, h->head->deadline_ms);
    else
        ev_timer_stop(h->loop, &h->timer);
}

static void
unlink_conn(struct httpd *h, struct hconn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        h->tail = c->prev;
    c->prev = c->next = NULL;
}

/* touch gives c a new deadline, timeout from now: it goes last (deadlines only grow). */
static void
touch(struct httpd *h, struct hconn *c)
{
    unlink_conn(h, c);
    c->deadline_ms = ev_now_ms(h->loop) + h->cfg.timeout_ms;
    c->prev = h->tail;
    if (h->tail != NULL)
        h->tail->next = c;
    else
        h->head = c;
    h->tail = c;
    arm(h);
}

static void
hconn_free(struct httpd *h, struct hconn *c)
{
    unlink_conn(h, c);
    ev_io_set(h->loop, &c->io, 0);
    close(c->io.fd);
    buf_fini(&c->out);
    h->mem -= c->mem;
    free(c);
    h->nconns--;
    arm(h);
}

/* flush writes what it can of c's output. Returns false when c was freed. */
static bool
flush(struct httpd *h, struct hconn *c)
{
    size_t budget = HTTPD_WRITE_BUDGET;
    while (buf_len(&c->out) > 0 && budget > 0) {
        size_t n = buf_len(&c->out) < budget ? buf_len(&c->out) : budget;
        ssize_t w = write(c->io.fd, buf_head(&c->out), n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            hconn_free(h, c);
            return false;
        }
        buf_consume(&c->out, (size_t)w);
        budget -= (size_t)w;
    }
    if (buf_len(&c->out) > 0) {
        ev_io_set(h->loop, &c->io, EV_WRITE);
        return true;
    }
    if (c->close_after) {
        hconn_free(h, c);
        return false;
    }
    buf_shrink(&c->out, 64 * 1024);
    account(h, c);
    ev_io_set(h->loop, &c->io, c->in_len > 0 ? EV_READ | EV_WRITE : EV_READ);
    return true;
}

/* respond queues an answer. body may be NULL (HEAD: the length of what GET would send). */
static void
respond(struct httpd *h, struct hconn *c, int status, const char *type, const void *body,
        size_t len, bool head_only, bool keep)
{
    char hdr[512];
    if (!keep)
        c->close_after = true;
    if (status >= 400)
        h->ms->http_errors++;
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s"
                     "Connection: %s\r\n\r\n",
                     status, http_reason(status), type, len,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "", keep ? "keep-alive" : "close");
    size_t need = (size_t)n + (head_only ? 0 : len);
    if (buf_grown_cap(&c->out, need) > c->out.cap &&
        !admit(h, buf_grown_cap(&c->out, need) - c->out.cap)) {
        /* Over the memory budget: a short 503 instead (it fits in what is kept anyway). */
        h->ms->http_errors += status < 400;
        static const char full[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                   "text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
                                   "Connection: close\r\n\r\nbackend memory full\n";
        c->close_after = true;
        if (buf_append(&c->out, full, sizeof(full) - 1) < 0)
            c->out.rpos = c->out.wpos = 0;
        account(h, c);
        return;
    }
    if (buf_append(&c->out, hdr, (size_t)n) < 0 ||
        (!head_only && len > 0 && buf_append(&c->out, body, len) < 0)) {
        c->out.rpos = c->out.wpos = 0;
        c->close_after = true;
    }
    account(h, c);
}

static void
respond_error(struct httpd *h, struct hconn *c, int status)
{
    char text[96];
    int n = snprintf(text, sizeof(text), "%d %s\n", status, http_reason(status));
    respond(h, c, status, "text/plain; charset=utf-8", text, (size_t)n, false, false);
}

/* serve answers one parsed request. */
static void
serve(struct httpd *h, struct hconn *c, const struct http_req *r)
{
    h->ms->http_requests++;
    c->served++;
    bool keep = r->keep_alive && c->served < h->cfg.keepalive_max;
    bool head = r->method == HTTP_HEAD;
    if (r->method == HTTP_OTHER) {
        char text[] = "405 Method Not Allowed\n";
        respond(h, c, 405, "text/plain; charset=utf-8", text, sizeof(text) - 1, false, keep);
        return;
    }
#define IS(p) (r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0)
    h->body.rpos = h->body.wpos = 0;
    int rc;
    const char *type;
    if (IS("/metrics")) {
        rc = status_metrics(h->st, &h->body);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (IS("/status")) {
        rc = status_json(h->st, &h->body);
        type = "application/json";
    } else if (IS("/") || IS("/index.html")) {
        size_t len;
        const char *page = status_page(&len);
        respond(h, c, 200, "text/html; charset=utf-8", page, len, head, keep);
        return;
    } else {
        char text[] = "404 Not Found\n";
        respond(h, c, 404, "text/plain; charset=utf-8", text, sizeof(text) - 1, head, keep);
        return;
    }
#undef IS
    account(h, NULL);
    if (rc < 0 || buf_len(&h->body) > h->cfg.max_out) {
        respond_error(h, c, 503);
    } else {
        respond(h, c, 200, type, buf_head(&h->body), buf_len(&h->body), head, keep);
    }
    h->body.rpos = h->body.wpos = 0;
    buf_shrink(&h->body, 1u << 20);
    account(h, NULL);
}

/* process serves the complete requests in c's input, at most 4 per wake-up (pipelining);
 * an answer not written at once waits for EV_WRITE before the next request is read. */
static void
process(struct httpd *h, struct hconn *c)
{
    for (int k = 0; k < 4; k++) {
        struct http_req r;
        if (ev_iter_longer_than(h->loop, HTTPD_ITER_US)) {
            /* This wake-up has worked long enough (jobs first): the next one serves it. */
            ev_io_set(h->loop, &c->io, EV_READ | EV_WRITE);
            return;
        }
        ssize_t got = http_parse(&c->ps, c->in, c->in_len, &r);
        if (got == 0) {
            ev_io_set(h->loop, &c->io, EV_READ);
            return;
        }
        if (got < 0) {
            respond_error(h, c, (int)-got);
            flush(h, c);
            return;
        }
        serve(h, c, &r);
        size_t rest = c->in_len - (size_t)got;
        memmove(c->in, c->in + got, rest);
        c->in_len = rest;
        http_parser_init(&c->ps);
        touch(h, c);
        if (!flush(h, c) || buf_len(&c->out) > 0 || c->in_len == 0)
            return;
    }
    ev_io_set(h->loop, &c->io, EV_READ | EV_WRITE); /* more pipelined: next wake-up */
}

static void
on_conn(void *arg, unsigned events)
{
    struct hconn *c = arg;
    struct httpd *h = c->h;
    if (buf_len(&c->out) > 0) {
        if ((events & EV_WRITE) && flush(h, c) && buf_len(&c->out) == 0 && c->in_len > 0)
            process(h, c);
        return; /* nothing is read while an answer is pending */
    }
    if (c->close_after)
        return;
    if ((events & EV_READ) && c->in_len < sizeof(c->in)) {
        /* One read per wake-up: the head is bounded, so is the work. */
        ssize_t n = read(c->io.fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            hconn_free(h, c);
            return;
        }
        c->in_len += (size_t)n;
    }
    if (c->in_len > 0)
        process(h, c);
}

static void
on_timer(void *arg)
{
    struct httpd *h = arg;
    uint64_t now = ev_now_ms(h->loop);
    while (h->head != NULL && h->head->deadline_ms <= now) {
        struct hconn *c = h->head;
        if (c->in_len > 0 && buf_len(&c->out) == 0 && !c->close_after) {
            /* A request that did not arrive in time: one try to say so, then close. */
            respond_error(h, c, 408);
            ssize_t w = write(c->io.fd, buf_head(&c->out), buf_len(&c->out));
            (void)w;
        }
        hconn_free(h, c);
    }
    arm(h);
}

static void
on_second(void *arg)
{
    struct httpd *h = arg;
    status_sample(h->st);
    ev_timer_start(h->loop, &h->second, ev_now_ms(h->loop) + 1000);
}

static void
on_accept(void *arg, unsigned events)
{
    struct httpd *h = arg;
    (void)events;
    const struct acl_entry *allow = h->cfg.nallow > 0 ? h->cfg.allow : h->loopback;
    size_t nallow = h->cfg.nallow > 0 ? h->cfg.nallow : 2;
    for (int i = 0; i < HTTPD_ACCEPT_BUDGET; i++) {
        int fd = net_accept(h->lfd);
        if (fd < 0)
            return;
        struct net_addr pa;
        if (net_peer(fd, &pa) != 0 || !acl_match(allow, nallow, (struct sockaddr *)&pa.ss)) {
            close(fd);
            continue;
        }
        struct hconn *c = NULL;
        if (h->nconns >= h->cfg.max_conns || !admit(h, sizeof(*c)) ||
            (c = calloc(1, sizeof(*c))) == NULL) {
            static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                       "text/plain\r\nContent-Length: 24\r\nConnection: close"
                                       "\r\n\r\n503 Service Unavailable\n";
            ssize_t w = write(fd, busy, sizeof(busy) - 1);
            (void)w;
            h->ms->http_errors++;
            close(fd);
            continue;
        }
        c->h = h;
        buf_init(&c->out);
        ev_io_init(&c->io, fd, on_conn, c);
        if (ev_io_set(h->loop, &c->io, EV_READ) < 0) {
            close(fd);
            free(c);
            continue;
        }
        h->nconns++;
        account(h, c);
        touch(h, c);
    }
}

struct httpd *
httpd_new(struct ev_loop *loop, const struct httpd_config *cfg, struct status *st,
          struct metrics_server *ms, char *err, size_t errlen)
{
    struct net_addr a;
    if (net_parse(cfg->addr, &a, err, errlen) < 0)
        return NULL;
    if (a.family == AF_UNIX) {
        snprintf(err, errlen, "%s: the metrics port must be tcp://", cfg->addr);
        return NULL;
    }
    struct httpd *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->cfg = *cfg;
    h->loop = loop;
    h->st = st;
    h->ms = ms;
    acl_parse("127.0.0.0/8", &h->loopback[0]);
    acl_parse("::1", &h->loopback[1]);
    buf_init(&h->body);
    h->lfd = net_listen(&a, 1024, 0);
    if (h->lfd < 0) {
        snprintf(err, errlen, "%s: %s", cfg->addr, strerror(-h->lfd));
        free(h);
        return NULL;
    }
    struct net_addr b;
    if (net_bound(h->lfd, &b) == 0)
        net_format(&b, h->addr, sizeof(h->addr));
    ev_io_init(&h->lio, h->lfd, on_accept, h);
    ev_timer_init(&h->timer, on_timer, h);
    ev_timer_init(&h->second, on_second, h);
    if (ev_io_set(loop, &h->lio, EV_READ) < 0) {
        snprintf(err, errlen, "%s: cannot watch the socket", cfg->addr);
        close(h->lfd);
        free(h);
        return NULL;
    }
    ev_timer_start(loop, &h->second, ev_now_ms(loop) + 1000);
    return h;
}

void
httpd_free(struct httpd *h)
{
    if (h == NULL)
        return;
    while (h->head != NULL)
        hconn_free(h, h->head);
    ev_timer_stop(h->loop, &h->timer);
    ev_timer_stop(h->loop, &h->second);
    ev_io_set(h->loop, &h->lio, 0);
    close(h->lfd);
    buf_fini(&h->body);
    free(h);
}

uint64_t
httpd_mem(const struct httpd *h)
{
    return h != NULL ? h->mem : 0;
}

const char *
httpd_bound_addr(const struct httpd *h)
{
    return h->addr;
}
