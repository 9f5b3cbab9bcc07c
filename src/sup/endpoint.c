/*
 * endpoint.c - the supervisor's operations listeners, two protocols of its
 * connection server (connsrv.c), like the control socket:
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
 * Requests are read with the project's strict RFC 9112 parser
 * (src/proto/http_request.h), as the HTTP worker reads them: a malformed
 * request line ("GET/healthz HTTP/1.1", a NUL, a bare CR) is 400 at once,
 * a request over REQ_MAX bytes 431.  Every answer says "Connection:
 * close"; the server shuts our side once it is written and reads until the
 * peer's EOF, so that closing never resets the connection under an answer
 * the peer has not read.  Timeouts: the request within 5 s, the answer
 * read within 5 s, the EOF within 1 s; a full table makes room by closing
 * its oldest idle connection.  An empty host (--metrics :9100) is every
 * address: [::] with IPV6_V6ONLY off, so IPv4 and IPv6 both reach it.
 */
#include "sup_internal.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQ_MAX 4096 /* request line and header fields, bytes (431 above) */

static const char *const kind_names[PS_LS_COUNT] = {"control", "metrics", "agent"};

static int *ep_fd(struct ps_sup *sup, int kind)
{
    return kind == PS_LS_METRICS ? &sup->metrics_fd : &sup->agent_fd;
}

static const struct ps_spec *ep_spec(const struct ps_sup *sup, int kind)
{
    return kind == PS_LS_METRICS ? &sup->cfg->metrics : &sup->cfg->agent;
}

/* ---- answers ----------------------------------------------------------------- */

/* What a connection's close counts as, by the status it was answered with:
 * the statuses of a request we could not read are bad requests. */
static enum ps_conn_close close_reason(int code)
{
    switch (code) {
    case 400:
    case 411:
    case 413:
    case 414:
    case 431:
    case 505:
        return PS_CONN_BAD_REQUEST;
    default:
        return PS_CONN_DONE;
    }
}

static void http_answer(struct ps_sup *sup, struct ps_conn *c, int code, const char *reason,
                        const char *extra, const char *ctype, const char *body, size_t blen,
                        int head, uint64_t now)
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
    if (b.failed)
        ps__buf_free(&b); /* b.data NULL: out of memory, closed */
    ps__http_req_release(&c->u.http.req);
    ps__conn_answer(sup, c, b.data, b.len, close_reason(code), now);
}

static void http_text(struct ps_sup *sup, struct ps_conn *c, int code, const char *reason,
                      const char *extra, const char *body, int head, uint64_t now)
{
    http_answer(sup, c, code, reason, extra, "text/plain; charset=utf-8", body, strlen(body), head,
                now);
}

static void http_metrics(struct ps_sup *sup, struct ps_conn *c, int head, uint64_t now)
{
    struct ps_buf m = {0};

    ps__metrics_text(sup, &m);
    ps__conns_metrics_text(sup, &m);
    if (m.failed)
        http_text(sup, c, 500, "Internal Server Error", "", "out of memory\n", head, now);
    else
        http_answer(sup, c, 200, "OK", "", "text/plain; version=0.0.4; charset=utf-8",
                    m.data ? m.data : "", m.len, head, now);
    ps__buf_free(&m);
}

/* A whole request has been read: answer it. */
static void http_request(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    const struct ps_http_req *req = &c->u.http.req;
    const char *url = req->head->url, *why;
    size_t plen = 0; /* of the path: url is not NUL-terminated */
    int head = req->method == PS_HTTP_HEAD, healthz, metrics;

    while (plen < req->head->url_len && url[plen] != '?')
        plen++;
    healthz = plen == 8 && !memcmp(url, "/healthz", 8);
    metrics = plen == 8 && !memcmp(url, "/metrics", 8);
    if (!healthz && !metrics) {
        http_text(sup, c, 404, "Not Found", "", "not found: only /metrics and /healthz here\n",
                  head, now);
    } else if (!head && req->method != PS_HTTP_GET) {
        http_text(sup, c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n",
                  0, now);
    } else if (healthz) {
        char body[64];
        int ok = ps__sup_healthy(sup, &why);
        ps__life_told(sup);
        snprintf(body, sizeof(body), "%s\n", why);
        http_text(sup, c, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "", body, head, now);
    } else {
        http_metrics(sup, c, head, now);
    }
}

/* Bytes of a request: to the parser, answered once whole (or wrong). */
static void http_input(struct ps_sup *sup, struct ps_conn *c, const char *buf, size_t len,
                       uint64_t now)
{
    struct ps_http_req *req = &c->u.http.req;
    int code;

    if (len > REQ_MAX - c->u.http.got)
        len = REQ_MAX - c->u.http.got; /* what is beyond is over the limit anyway */
    c->u.http.got += ps__http_parse(req, buf, len);
    if (req->state == PS_HTTP_READY) {
        http_request(sup, c, now);
    } else if (req->state == PS_HTTP_ERROR && req->status == 405) {
        /* the parser reads GET and HEAD only, as we answer them */
        http_text(sup, c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n",
                  0, now);
    } else if (req->state == PS_HTTP_ERROR) {
        code = req->status;
        http_text(sup, c, code, ps__http_reason(code), "", "bad request\n", 0, now);
    } else if (c->u.http.got >= REQ_MAX) {
        http_text(sup, c, 431, ps__http_reason(431), "", "request too large\n", 0, now);
    }
}

/* Before an exec: answer what has arrived (closing the connection at the
 * exec would leave a request sent in time unanswered); a request not
 * whole yet is told to come again. */
static void http_last_call(struct ps_sup *sup, struct ps_conn *c, const char *why, uint64_t now)
{
    char buf[1024];
    ssize_t n;

    (void)why;
    while (c->state == CS_READING && (n = recv(c->fd, buf, sizeof(buf), 0)) > 0)
        http_input(sup, c, buf, (size_t)n, now);
    if (c->state == CS_READING && c->u.http.req.started)
        http_text(sup, c, 503, "Service Unavailable", "Retry-After: 1\r\n",
                  "the supervisor is re-executing itself: ask again\n", 0, now);
}

static void http_release(struct ps_conn *c)
{
    ps__http_req_release(&c->u.http.req);
}

static void http_accepted(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    (void)sup;
    (void)now;
    ps__http_req_init(&c->u.http.req);
}

static void agent_accepted(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    char line[64];

    ps__agent_text(sup, line, sizeof(line));
    ps__life_told(sup);
    ps__conn_answer(sup, c, strdup(line), strlen(line), PS_CONN_DONE, now);
}

static const struct ps_conn_proto http_proto = {
    .name = "metrics",
    .paused_event = "endpoint_paused",
    .timeout_ms = {[CS_READING] = 5000, [CS_WRITING] = 5000, [CS_LINGER] = 1000},
    .accepted = http_accepted,
    .input = http_input,
    .last_call = http_last_call,
    .release = http_release,
};

static const struct ps_conn_proto agent_proto = {
    .name = "agent",
    .paused_event = "endpoint_paused",
    .timeout_ms = {[CS_READING] = 5000, [CS_WRITING] = 5000, [CS_LINGER] = 1000},
    .accepted = agent_accepted,
};

int ps__endpoints_init(struct ps_sup *sup)
{
    int r = ps__conns_init(sup, PS_LS_METRICS, &http_proto);

    return r < 0 ? r : ps__conns_init(sup, PS_LS_AGENT, &agent_proto);
}

/* ---- the sockets --------------------------------------------------------------- */

/* An empty host is every address: [::] dual-stack, where there is IPv6. */
static int listen_any(const struct ps_spec *spec)
{
    struct ps_spec sp = *spec;
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sp.addr;
    int fd;

    if (spec->proto != PS_PROTO_TCP || spec->host[0])
        return ps_listen_open(spec, PS_LISTEN_NO_REUSEPORT | PS_LISTEN_NONBLOCK);
    memset(&sp.addr, 0, sizeof(sp.addr));
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_any;
    a->sin6_port = htons((uint16_t)spec->port);
    sp.addrlen = sizeof(*a);
    sp.v6only = 0;
    fd = ps_listen_open(&sp, PS_LISTEN_NO_REUSEPORT | PS_LISTEN_NONBLOCK);
    if (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL) /* no IPv6 here: 0.0.0.0 */
        fd = ps_listen_open(spec, PS_LISTEN_NO_REUSEPORT | PS_LISTEN_NONBLOCK);
    return fd;
}

static int open_one(struct ps_sup *sup, int kind, char *err, size_t errlen)
{
    const struct ps_spec *spec = ep_spec(sup, kind);
    char addr[160], comm[64] = "";
    pid_t pid = 0;
    int fd;

    fd = listen_any(spec);
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
    for (kind = PS_LS_METRICS; kind <= PS_LS_AGENT; kind++) {
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
    for (kind = PS_LS_METRICS; kind <= PS_LS_AGENT; kind++) {
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
    int kind;

    for (kind = PS_LS_METRICS; kind <= PS_LS_AGENT; kind++) {
        ps__conns_close_listener(sup, kind);
        ps__close(*ep_fd(sup, kind));
        *ep_fd(sup, kind) = -1;
    }
}
