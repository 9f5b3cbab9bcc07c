/*
 * endpoint.c - the supervisor's operations listeners, each an ordinary
 * event source of its one loop (like the control socket):
 *
 *   --metrics HOST:PORT  a read-only HTTP/1.0-1.1 server for two resources:
 *                        GET /metrics (the Prometheus text) and GET /healthz
 *                        (200 while serving, 503 in lame duck, stopping, or
 *                        with no worker ready).  HEAD too; another method
 *                        on them is 405, any other path 404.
 *   --agent HOST:PORT    HAProxy's agent-check: a connection gets one line
 *                        ("up ready 75%", "drain", "down #...") at once;
 *                        whatever HAProxy sends (agent-send) is read and
 *                        ignored.
 *
 * Nothing here blocks: a request is read as it comes (at most REQ_MAX
 * bytes of request line and headers, within IDLE_MS of the connection), the
 * answer is queued and written as the socket takes it (within IO_MS), then
 * the write side is shut and what the peer still sends is read until its
 * EOF (for at most LINGER_MS), so that closing never resets the connection
 * under an answer the peer has not read.  Every reply says "Connection:
 * close".  At most PS_EP_MAX_CONNS connections per endpoint: with all of
 * them busy the listener is not polled and new ones wait in its backlog
 * until a slot frees (answers take milliseconds; idle ones time out).
 * EMFILE on accept pauses accepting for PAUSE_MS instead of spinning.
 */
#include "sup_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQ_MAX   4096
#define IDLE_MS   5000 /* the whole request must arrive within this */
#define IO_MS     5000 /* the answer must be read within this */
#define LINGER_MS 1000 /* after our answer: the peer's EOF within this */
#define PAUSE_MS  100

enum conn_state { EC_FREE, EC_READING, EC_WRITING, EC_LINGER };

struct ep_conn {
    int fd;
    enum conn_state state;
    uint64_t deadline;
    size_t inlen;
    char in[REQ_MAX + 1];
    char *out;
    size_t outlen, outoff;
};

struct ps_endpoint {
    uint64_t paused_until;
    int polled; /* entries in the last poll: 0 for an endpoint that is off */
    struct ep_conn conns[PS_EP_MAX_CONNS];
};

static const char *const kind_names[PS_EP_COUNT] = {"metrics", "agent"};

static int *ep_fd(struct ps_sup *sup, int kind)
{
    return kind == PS_EP_METRICS ? &sup->metrics_fd : &sup->agent_fd;
}

static const struct ps_spec *ep_spec(const struct ps_sup *sup, int kind)
{
    return kind == PS_EP_METRICS ? &sup->cfg->metrics : &sup->cfg->agent;
}

static void conn_close(struct ep_conn *c)
{
    ps__close(c->fd);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

int ps__endpoints_init(struct ps_sup *sup)
{
    int k, i;

    if (!sup->endpoints) {
        sup->endpoints = calloc(PS_EP_COUNT, sizeof(*sup->endpoints));
        if (!sup->endpoints)
            return -ENOMEM;
    }
    for (k = 0; k < PS_EP_COUNT; k++) {
        sup->endpoints[k].paused_until = 0;
        for (i = 0; i < PS_EP_MAX_CONNS; i++) {
            free(sup->endpoints[k].conns[i].out);
            memset(&sup->endpoints[k].conns[i], 0, sizeof(struct ep_conn));
            sup->endpoints[k].conns[i].fd = -1;
        }
    }
    return 0;
}

static int open_one(struct ps_sup *sup, int kind, char *err, size_t errlen)
{
    const struct ps_spec *spec = ep_spec(sup, kind);
    char addr[160], comm[64] = "";
    pid_t pid = 0;
    int fd;

    fd = ps_listen_open(spec, PS_LISTEN_NO_REUSEPORT | PS_LISTEN_NONBLOCK);
    if (fd >= 0) {
        *ep_fd(sup, kind) = fd;
        return 0;
    }
    if (ps_spec_format(spec, addr, sizeof(addr)) < 0)
        snprintf(addr, sizeof(addr), "%.159s", spec->text);
    if (fd == -EADDRINUSE && ps_port_owner(spec, &pid, comm, sizeof(comm)) == 0)
        ps__set_error(err, errlen, "cannot bind --%s %s: %s (held by pid %ld, %s)",
                      kind_names[kind], addr, ps_strerror(fd), (long)pid, comm);
    else
        ps__set_error(err, errlen, "cannot bind --%s %s: %s", kind_names[kind], addr,
                      ps_strerror(fd));
    return fd;
}

int ps__endpoints_open(struct ps_sup *sup, char *err, size_t errlen)
{
    char addr[160];
    int kind, r, *fd;

    /* bind every one first, so that a failure logs nothing but itself */
    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        fd = ep_fd(sup, kind);
        if (!ep_spec(sup, kind)->text[0]) {
            if (*fd >= 0) /* carried by an upgrade, no longer asked for */
                ps__close(*fd);
            *fd = -1;
        } else if (*fd < 0) {
            r = open_one(sup, kind, err, errlen);
            if (r < 0)
                return r;
        }
    }
    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        /* the real port (HOST:0 asks the kernel for one) */
        struct ps_spec sp;
        fd = ep_fd(sup, kind);
        if (*fd < 0)
            continue;
        snprintf(addr, sizeof(addr), "%.159s",
                 ps__spec_of_fd(*fd, &sp) == 0 ? sp.text : ep_spec(sup, kind)->text);
        ps__sup_log(sup, PS_LOG_INFO, "listening", "%s endpoint on %s", kind_names[kind], addr);
    }
    return 0;
}

void ps__endpoints_close(struct ps_sup *sup)
{
    int kind, i;

    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        for (i = 0; sup->endpoints && i < PS_EP_MAX_CONNS; i++)
            if (sup->endpoints[kind].conns[i].state != EC_FREE)
                conn_close(&sup->endpoints[kind].conns[i]);
        ps__close(*ep_fd(sup, kind));
        *ep_fd(sup, kind) = -1;
    }
}

/* ---- answers ----------------------------------------------------------------- */

static void conn_write(struct ep_conn *c, uint64_t now)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->outoff += (size_t)n;
    }
    /* all written: our side is done, wait for the peer's EOF */
    shutdown(c->fd, SHUT_WR);
    free(c->out);
    c->out = NULL;
    c->state = EC_LINGER;
    c->deadline = now + LINGER_MS;
}

/* Take over text (malloc'ed, or NULL when out of memory) as the answer. */
static void conn_answer(struct ep_conn *c, char *text, size_t len, uint64_t now)
{
    if (!text) {
        conn_close(c);
        return;
    }
    free(c->out);
    c->out = text;
    c->outlen = len;
    c->outoff = 0;
    c->state = EC_WRITING;
    c->deadline = now + IO_MS;
    conn_write(c, now);
}

static void http_answer(struct ep_conn *c, int code, const char *reason, const char *extra,
                        const char *ctype, const char *body, size_t blen, int head, uint64_t now)
{
    struct ps_buf b = {0};

    ps__buf_printf(&b,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                   code, reason, ctype, blen, extra);
    if (!head && blen) {
        /* the body may be large (a metrics text): appended as bytes */
        ps__buf_printf(&b, "%.*s", (int)blen, body);
    }
    if (b.failed) {
        ps__buf_free(&b);
        conn_close(c);
        return;
    }
    conn_answer(c, b.data, b.len, now);
}

static void http_text(struct ep_conn *c, int code, const char *reason, const char *extra,
                      const char *body, int head, uint64_t now)
{
    http_answer(c, code, reason, extra, "text/plain; charset=utf-8", body, strlen(body), head,
                now);
}

/* A complete request head is in c->in: answer it. */
static void http_request(struct ps_sup *sup, struct ep_conn *c, uint64_t now)
{
    char method[16], target[256], version[16];
    const char *why;
    int head, n = 0;
    size_t plen;

    if (sscanf(c->in, "%15[A-Z] %255[^ \r\n] %15[^ \r\n]%n", method, target, version, &n) != 3 ||
        (c->in[n] != '\r' && c->in[n] != '\n') || strncmp(version, "HTTP/1.", 7) ||
        target[0] != '/') {
        http_text(c, 400, "Bad Request", "", "bad request\n", 0, now);
        return;
    }
    plen = strcspn(target, "?");
    target[plen] = '\0';
    head = !strcmp(method, "HEAD");
    if (strcmp(target, "/metrics") && strcmp(target, "/healthz")) {
        http_text(c, 404, "Not Found", "", "not found: only /metrics and /healthz here\n", head,
                  now);
        return;
    }
    if (!head && strcmp(method, "GET")) {
        http_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n",
                  0, now);
        return;
    }
    if (!strcmp(target, "/healthz")) {
        char body[64];
        int ok = ps__sup_healthy(sup, &why);
        snprintf(body, sizeof(body), "%s\n", why);
        http_text(c, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "", body, head, now);
        return;
    }
    {
        struct ps_buf m = {0};
        ps__metrics_text(sup, &m);
        if (m.failed)
            http_text(c, 500, "Internal Server Error", "", "out of memory\n", head, now);
        else
            http_answer(c, 200, "OK", "", "text/plain; version=0.0.4; charset=utf-8",
                        m.data ? m.data : "", m.len, head, now);
        ps__buf_free(&m);
    }
}

/* ---- reading ----------------------------------------------------------------- */

static void conn_read(struct ps_sup *sup, struct ep_conn *c, uint64_t now)
{
    char junk[512];
    ssize_t n;

    for (;;) {
        if (c->state == EC_READING)
            n = recv(c->fd, c->in + c->inlen, REQ_MAX - c->inlen, 0);
        else
            n = recv(c->fd, junk, sizeof(junk), 0); /* a body, agent-send, pipelining */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_close(c); /* EOF or error: done either way */
            return;
        }
        if (c->state != EC_READING)
            continue;
        c->inlen += (size_t)n;
        c->in[c->inlen] = '\0';
        if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n")) {
            http_request(sup, c, now);
            if (c->state != EC_LINGER)
                return; /* still writing (or closed) */
        } else if (c->inlen == REQ_MAX) {
            http_text(c, 431, "Request Header Fields Too Large", "", "request too large\n", 0,
                      now);
            return;
        }
    }
}

static struct ep_conn *free_conn(struct ps_endpoint *ep)
{
    int i;

    for (i = 0; i < PS_EP_MAX_CONNS; i++)
        if (ep->conns[i].state == EC_FREE)
            return &ep->conns[i];
    return NULL;
}

static void accept_conns(struct ps_sup *sup, int kind, uint64_t now)
{
    struct ps_endpoint *ep = &sup->endpoints[kind];
    struct ep_conn *c;
    char line[64];
    int fd;

    while ((c = free_conn(ep))) {
        fd = accept4(*ep_fd(sup, kind), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!ep->paused_until)
                    ps__sup_log(sup, PS_LOG_WARN, "endpoint_paused",
                                "cannot accept %s connections: %s; pausing %d ms",
                                kind_names[kind], strerror(errno), PAUSE_MS);
                ep->paused_until = now + PAUSE_MS;
            }
            return;
        }
        c->fd = fd;
        c->state = EC_READING;
        c->deadline = now + IDLE_MS;
        c->inlen = 0;
        if (kind == PS_EP_AGENT) {
            ps__agent_text(sup, line, sizeof(line));
            conn_answer(c, strdup(line), strlen(line), now);
        }
    }
}

/* ---- the loop's side --------------------------------------------------------- */

int ps__endpoints_poll_fill(struct ps_sup *sup, struct pollfd *pfd, uint64_t now)
{
    int kind, i, n = 0;

    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        struct ps_endpoint *ep = &sup->endpoints[kind];
        int lfd = *ep_fd(sup, kind);
        /* an endpoint that is off takes no entries: poll(2) refuses more
         * entries than RLIMIT_NOFILE, which may be small (ulimit -n 32) */
        ep->polled = lfd >= 0;
        if (!ep->polled)
            continue;
        if (ep->paused_until && now >= ep->paused_until)
            ep->paused_until = 0;
        /* full, or paused: the listener waits (its backlog holds the rest) */
        if (ep->paused_until || !free_conn(ep))
            lfd = -1;
        pfd[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (i = 0; i < PS_EP_MAX_CONNS; i++) {
            const struct ep_conn *c = &ep->conns[i];
            pfd[n++] = (struct pollfd){.fd = c->state == EC_FREE ? -1 : c->fd,
                                       .events = c->state == EC_WRITING ? POLLOUT : POLLIN};
        }
    }
    return n;
}

void ps__endpoints_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n, uint64_t now)
{
    int kind, i;

    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        struct ps_endpoint *ep = &sup->endpoints[kind];
        const struct pollfd *p = pfd;
        if (!ep->polled)
            continue;
        pfd += 1 + PS_EP_MAX_CONNS;
        if (n > 0) {
            for (i = 0; i < PS_EP_MAX_CONNS; i++) {
                struct ep_conn *c = &ep->conns[i];
                if (!p[1 + i].revents || c->state == EC_FREE || c->fd != p[1 + i].fd)
                    continue;
                if (c->state == EC_WRITING)
                    conn_write(c, now);
                else
                    conn_read(sup, c, now);
            }
            if (p[0].revents && p[0].fd >= 0)
                accept_conns(sup, kind, now);
        }
        for (i = 0; i < PS_EP_MAX_CONNS; i++) {
            struct ep_conn *c = &ep->conns[i];
            if (c->state != EC_FREE && now >= c->deadline)
                conn_close(c); /* idle, not reading its answer, or no EOF */
        }
    }
}

uint64_t ps__endpoints_next_deadline(const struct ps_sup *sup)
{
    uint64_t next = UINT64_MAX;
    int kind, i;

    for (kind = 0; kind < PS_EP_COUNT; kind++) {
        const struct ps_endpoint *ep = &sup->endpoints[kind];
        if (ep->paused_until && ep->paused_until < next)
            next = ep->paused_until;
        for (i = 0; i < PS_EP_MAX_CONNS; i++)
            if (ep->conns[i].state != EC_FREE && ep->conns[i].deadline < next)
                next = ep->conns[i].deadline;
    }
    return next;
}
