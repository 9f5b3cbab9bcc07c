/*
 * loadgen.c - a bounded HTTP/1.1 load client that counts every failure.
 *
 *   loadgen --connect HOST:PORT [--path /] [--threads T] [--concurrency C]
 *           (--duration SEC | --requests N) [--keepalive] [--timeout MS]
 *           [--until-file PATH] [--json] [--expect-status CODE]
 *
 * wrk reports "errors" as one lump; a supervisor test needs to know exactly
 * which requests failed and how, so every request started here ends in
 * exactly one outcome:
 *
 *   ok             complete response with the expected status
 *   bad_status     complete response, another status (per code in "status")
 *   refused        connect() said ECONNREFUSED
 *   connect_error  any other failure to create or connect the socket
 *   reset          ECONNRESET / EPIPE / any other socket error after connect
 *   eof            the server closed before the response was complete
 *   timeout        no complete response within --timeout ms of the start
 *   bad_response   bytes that are not an HTTP/1.x response we can frame
 *
 * sent = ok + failed, failed = the sum of all outcomes but ok.  Two events
 * are counted but are not failures, as in every browser: "idle_closed", a
 * kept-alive connection that the server had already closed when we wanted
 * to reuse it (we open a new one); and "retried", a request written on a
 * reused connection that was closed or reset before a single response byte
 * came back: it is sent once more on a new connection (RFC 9110 §9.2.2 lets
 * a client retry an idempotent request then).  A reset or EOF in the middle
 * of a response, or on a fresh connection, is always a failure.
 *
 * Each thread runs C connection slots on its own epoll set, non-blocking.
 * Default mode opens a new connection per request ("Connection: close");
 * --keepalive reuses them.  Load stops at --duration, after --requests, on
 * SIGINT/SIGTERM, or as soon as --until-file exists (--duration is then the
 * hard cap).  When it stops no new request starts; those in flight finish or
 * time out, so every sent request has an outcome.  At least one of
 * --duration / --requests is required: the load is always bounded.
 *
 * A response header "X-Worker-Pid: N" is counted per pid over ok responses
 * ("by_pid"), to show how the load spread over workers.
 *
 * Output: a summary on stderr; with --json one object on stdout:
 *   {"sent":N,"ok":N,"failed":N,"refused":N,"reset":N,"eof":N,"timeout":N,
 *    "connect_error":N,"bad_status":N,"bad_response":N,"retried":N,
 *    "idle_closed":N,"connections":N,"elapsed_s":F,"rps":F,
 *    "status":{"200":N},"latency_ms":{"p50":N,"p90":N,"p99":N,"p999":N,"max":N},
 *    "slower_1s":N,"slower_2s":N,"by_pid":{"1234":N}}
 * rps is ok responses per second of elapsed time; latencies are of the ok
 * responses, in ms from the request's start (a retry included), to the ms.
 *
 * Every failed request is also described on stderr, one line each: when it
 * started (UTC wall clock to the ms, as the supervisor's log), its local
 * port, how far it got (connecting / writing / reading), the bytes it had
 * written and received, and the first bytes of the response if any -- so
 * that a failure can be lined up with the supervisor's log and `ss` (the
 * first 100).
 *
 * Exit: 0 when failed == 0 and at least one request was ok, 1 otherwise
 * (a run that did nothing proves nothing), 2 on a usage error.
 */
#include "portshare.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum outcome {
    O_OK,
    O_BAD_STATUS,
    O_REFUSED,
    O_CONNECT_ERROR,
    O_RESET,
    O_EOF,
    O_TIMEOUT,
    O_BAD_RESPONSE,
    O__COUNT
};
static const char *const outcome_name[O__COUNT] = {
    "ok", "bad_status", "refused", "connect_error", "reset", "eof", "timeout", "bad_response"};

struct options {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const char *connect; /* HOST:PORT as given: also the Host header */
    const char *path;
    int threads, concurrency, keepalive, timeout_ms, json, expect_status;
    double duration;    /* seconds; 0 = no time limit */
    long long requests; /* 0 = no count limit */
    const char *until_file;
};

static struct options opt = {
    .path = "/", .threads = 2, .concurrency = 8, .timeout_ms = 5000, .expect_status = 200};
static char request[2048];
static size_t request_len;
static atomic_int stopping;
static atomic_llong tickets; /* requests started, against --requests */
static atomic_int threads_done;
static volatile sig_atomic_t got_signal;

#define MAX_PIDS   128
#define LAT_MAX_MS 10000 /* latencies are counted per ms up to here, the rest together */

struct stats {
    long long sent, outcome[O__COUNT], retried, idle_closed, connections;
    long long lat[LAT_MAX_MS + 1]; /* ok responses by ms from the request's start */
    long long lat_max;
    long long status[600];
    long pid[MAX_PIDS];
    long long pid_ok[MAX_PIDS];
    int npids;
};

enum cstate { C_IDLE, C_CONNECTING, C_WRITING, C_READING };
/* where we are in framing the response */
enum bstate {
    B_HEAD,
    B_LENGTH,
    B_TO_EOF,
    B_CHUNK_SIZE,
    B_CHUNK_DATA,
    B_CHUNK_CRLF,
    B_TRAILER,
    B_DONE
};

struct conn {
    int fd;
    unsigned events; /* what epoll watches for fd now */
    enum cstate state;
    int active;  /* a request is in progress in this slot */
    int reused;  /* fd already carried a complete response */
    int retried; /* this request was already retried once */
    long long deadline, started;
    long long started_wall; /* CLOCK_REALTIME ms, for the failure lines */
    size_t woff;
    size_t got; /* response bytes received by this attempt */
    /* response */
    enum bstate body;
    int got_bytes, status, server_close;
    long pid;
    long long left; /* bytes left in the body or the current chunk */
    char line[64];  /* a chunk-size or trailer line (truncated: we only need the size) */
    size_t llen;
    size_t hlen;
    char head[8192];
};

struct thread {
    pthread_t tid;
    int ep;
    struct conn *conns;
    struct stats st;
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- framing the response -------------------------------------------------- */

/* Values of the headers we care about; head is NUL-terminated. */
static int parse_head(struct conn *c)
{
    char *line, *next, *val;
    long long length = -1;
    int chunked = 0, minor, keepalive = 0;

    if (sscanf(c->head, "HTTP/1.%d %3d", &minor, &c->status) != 2 || c->status < 100 ||
        c->status > 599)
        return -1;
    for (line = strstr(c->head, "\r\n"); line; line = next) {
        line += 2;
        next = strstr(line, "\r\n");
        if (next)
            *next = '\0';
        val = strchr(line, ':');
        if (!val)
            continue;
        for (*val++ = '\0'; *val == ' ' || *val == '\t'; val++)
            ;
        if (!strcasecmp(line, "content-length")) {
            char *end;
            length = strtoll(val, &end, 10);
            if (end == val || length < 0)
                return -1;
        } else if (!strcasecmp(line, "transfer-encoding")) {
            chunked = strcasestr(val, "chunked") != NULL;
        } else if (!strcasecmp(line, "connection")) {
            c->server_close |= strcasestr(val, "close") != NULL;
            keepalive = strcasestr(val, "keep-alive") != NULL;
        } else if (!strcasecmp(line, "x-worker-pid")) {
            c->pid = strtol(val, NULL, 10);
        }
    }
    if (minor == 0 && !keepalive)
        c->server_close = 1;
    if (c->status < 200) { /* an interim response: the real one follows */
        c->hlen = 0;
        c->server_close = 0;
        return 0;
    }
    c->left = length;
    if (c->status == 204 || c->status == 304 || length == 0) {
        c->body = B_DONE;
    } else if (chunked) {
        c->body = B_CHUNK_SIZE;
    } else if (length > 0) {
        c->body = B_LENGTH;
    } else { /* no framing: the body ends where the connection does */
        c->body = B_TO_EOF;
        c->server_close = 1;
    }
    return 0;
}

/* Take header bytes; returns how many were part of the head, or -1. */
static long feed_head(struct conn *c, const char *p, size_t n)
{
    size_t old = c->hlen, take = n, from = old > 3 ? old - 3 : 0;
    char *end;

    if (take > sizeof(c->head) - 1 - old)
        take = sizeof(c->head) - 1 - old;
    memcpy(c->head + old, p, take);
    c->hlen = old + take;
    c->head[c->hlen] = '\0';
    end = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
    if (!end)
        return c->hlen == sizeof(c->head) - 1 ? -1 : (long)take;
    end[2] = '\0';
    take = (size_t)(end + 4 - c->head) - old;
    return parse_head(c) < 0 ? -1 : (long)take;
}

/* A line of the chunked framing is complete: act on it. */
static int chunk_line(struct conn *c)
{
    char *end;

    c->line[c->llen] = '\0';
    c->llen = 0;
    if (c->body == B_CHUNK_CRLF) {
        c->body = B_CHUNK_SIZE;
        return c->line[0] == '\0' || !strcmp(c->line, "\r") ? 0 : -1;
    }
    if (c->body == B_TRAILER) {
        if (c->line[0] == '\0' || !strcmp(c->line, "\r"))
            c->body = B_DONE;
        return 0;
    }
    c->left = strtoll(c->line, &end, 16);
    if (end == c->line || c->left < 0)
        return -1;
    c->body = c->left ? B_CHUNK_DATA : B_TRAILER;
    return 0;
}

/* Take body bytes; returns how many were consumed, or -1. */
static long feed_body(struct conn *c, const char *p, size_t n)
{
    size_t i;

    switch (c->body) {
    case B_TO_EOF:
        return (long)n;
    case B_LENGTH:
    case B_CHUNK_DATA:
        if ((long long)n > c->left)
            n = (size_t)c->left;
        c->left -= (long long)n;
        if (c->left == 0)
            c->body = c->body == B_LENGTH ? B_DONE : B_CHUNK_CRLF;
        return (long)n;
    default: /* a line of the chunked framing */
        for (i = 0; i < n; i++) {
            if (p[i] == '\n')
                return chunk_line(c) < 0 ? -1 : (long)i + 1;
            if (c->llen < sizeof(c->line) - 1)
                c->line[c->llen++] = p[i];
        }
        return (long)n;
    }
}

/* Returns 1 when the response is complete, 0 when more is needed, -1 when
 * it cannot be framed. */
static int feed(struct conn *c, const char *p, size_t n)
{
    while (n > 0 && c->body != B_DONE) {
        long k = c->body == B_HEAD ? feed_head(c, p, n) : feed_body(c, p, n);
        if (k < 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    if (n > 0)
        c->server_close = 1; /* bytes nobody asked for: do not reuse this one */
    return c->body == B_DONE;
}

/* ---- one connection slot ----------------------------------------------------- */

static void set_events(struct thread *t, struct conn *c, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (c->events == events)
        return;
    epoll_ctl(t->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
    c->events = events;
}

static void close_conn(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* the only reference: epoll forgets it by itself */
    c->fd = -1;
    c->events = 0;
    c->reused = 0;
    c->state = C_IDLE;
}

static void count_pid(struct stats *st, long pid, long long n)
{
    int i;

    for (i = 0; i < st->npids; i++)
        if (st->pid[i] == pid)
            break;
    if (i == st->npids) {
        if (st->npids == MAX_PIDS)
            return;
        st->pid[st->npids++] = pid;
    }
    st->pid_ok[i] += n;
}

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line on stderr per failed request (see the top). */
static void describe_failure(const struct conn *c, enum outcome o)
{
    static const char *const state_name[] = {"idle", "connecting", "writing", "reading"};
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    char when[32], head[64];
    unsigned port = 0;
    time_t secs = (time_t)(c->started_wall / 1000);
    struct tm tm;
    size_t i, n;
    static atomic_int described;

    if (atomic_fetch_add(&described, 1) >= 100) /* tests that expect failures: enough */
        return;
    if (c->fd >= 0 && getsockname(c->fd, (struct sockaddr *)&local, &len) == 0)
        port = local.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&local)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&local)->sin_port);
    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    n = c->hlen < sizeof(head) - 1 ? c->hlen : sizeof(head) - 1;
    for (i = 0; i < n; i++)
        head[i] = c->head[i] >= 0x20 && c->head[i] < 0x7f ? c->head[i] : '.';
    head[n] = '\0';
    fprintf(stderr,
            "loadgen: %s: request started %s.%03lldZ (%lld ms ago), local port %u, %s, "
            "%zu of %zu bytes written, %zu received%s%s%s%s\n",
            outcome_name[o], when, c->started_wall % 1000, now_ms() - c->started, port,
            state_name[c->state], c->woff, request_len, c->got, c->reused ? ", reused" : "",
            n ? ": \"" : "", head, n ? "\"" : "");
}

/* The request is over with this outcome; the slot is free for the next. */
static void finish(struct thread *t, struct conn *c, enum outcome o)
{
    t->st.outcome[o]++;
    if (o != O_OK)
        describe_failure(c, o);
    if (o == O_OK) {
        long long ms = now_ms() - c->started;
        t->st.lat[ms < 0 ? 0 : ms > LAT_MAX_MS ? LAT_MAX_MS : ms]++;
        if (ms > t->st.lat_max)
            t->st.lat_max = ms;
    }
    if (o == O_OK || o == O_BAD_STATUS)
        t->st.status[c->status]++;
    if (o == O_OK && c->pid > 0)
        count_pid(&t->st, c->pid, 1);
    c->active = 0;
    if (o != O_OK && o != O_BAD_STATUS)
        close_conn(c);
    else if (!opt.keepalive || c->server_close)
        close_conn(c);
    else
        c->reused = 1, c->state = C_IDLE;
}

static void begin_attempt(struct thread *t, struct conn *c);

/* This attempt broke; retry it when HTTP allows (see the top), else fail. */
static void attempt_failed(struct thread *t, struct conn *c, enum outcome o)
{
    if ((o == O_RESET || o == O_EOF) && c->reused && !c->got_bytes && !c->retried) {
        t->st.retried++;
        c->retried = 1;
        close_conn(c);
        begin_attempt(t, c);
        return;
    }
    finish(t, c, o);
}

static void do_write(struct thread *t, struct conn *c)
{
    ssize_t n;

    while (c->woff < request_len) {
        n = send(c->fd, request + c->woff, request_len - c->woff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            set_events(t, c, EPOLLOUT);
            return;
        }
        if (n < 0) {
            attempt_failed(t, c, O_RESET);
            return;
        }
        c->woff += (size_t)n;
    }
    c->state = C_READING;
    set_events(t, c, EPOLLIN);
}

static void connect_failed(struct thread *t, struct conn *c, int err)
{
    attempt_failed(t, c,
                   err == ECONNREFUSED ? O_REFUSED
                   : err == ECONNRESET ? O_RESET
                                       : O_CONNECT_ERROR);
}

static void open_conn(struct thread *t, struct conn *c)
{
    int r;

    c->fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        finish(t, c, O_CONNECT_ERROR);
        return;
    }
    t->st.connections++;
    do
        r = connect(c->fd, (struct sockaddr *)&opt.addr, opt.addrlen);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EINPROGRESS) {
        c->state = C_CONNECTING;
        set_events(t, c, EPOLLOUT);
    } else if (r < 0) {
        connect_failed(t, c, errno);
    } else {
        c->state = C_WRITING;
        do_write(t, c);
    }
}

/* Has the server closed this idle kept-alive connection already? */
static int closed_while_idle(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    /* bytes before we asked are as wrong as a close: do not reuse either way */
    return n >= 0 || errno != EAGAIN;
}

static void begin_attempt(struct thread *t, struct conn *c)
{
    c->woff = 0;
    c->body = B_HEAD;
    c->hlen = c->llen = 0;
    c->got_bytes = c->status = c->server_close = 0;
    c->got = 0;
    c->pid = 0;
    if (c->fd >= 0 && closed_while_idle(c->fd)) {
        t->st.idle_closed++;
        close_conn(c);
    }
    if (c->fd < 0) {
        open_conn(t, c);
        return;
    }
    c->state = C_WRITING;
    do_write(t, c);
}

static int claim_ticket(void)
{
    if (atomic_load(&stopping))
        return 0;
    return opt.requests == 0 || atomic_fetch_add(&tickets, 1) < opt.requests;
}

static int more_work(void)
{
    return !atomic_load(&stopping) && (opt.requests == 0 || atomic_load(&tickets) < opt.requests);
}

static void start_request(struct thread *t, struct conn *c)
{
    if (!claim_ticket()) {
        close_conn(c);
        return;
    }
    t->st.sent++;
    c->active = 1;
    c->retried = 0;
    c->started = now_ms();
    c->started_wall = wall_ms();
    c->deadline = c->started + opt.timeout_ms;
    begin_attempt(t, c);
}

static void on_connected(struct thread *t, struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        connect_failed(t, c, err);
        return;
    }
    c->state = C_WRITING;
    do_write(t, c);
}

static void on_readable(struct thread *t, struct conn *c)
{
    char buf[16384];
    ssize_t n;
    int r;

    do {
        n = recv(c->fd, buf, sizeof(buf), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n < 0) {
        attempt_failed(t, c, O_RESET);
        return;
    }
    if (n == 0) {
        if (c->body == B_TO_EOF)
            finish(t, c, c->status == opt.expect_status ? O_OK : O_BAD_STATUS);
        else
            attempt_failed(t, c, O_EOF);
        return;
    }
    c->got_bytes = 1;
    c->got += (size_t)n;
    r = feed(c, buf, (size_t)n);
    if (r < 0)
        finish(t, c, O_BAD_RESPONSE);
    else if (r > 0)
        finish(t, c, c->status == opt.expect_status ? O_OK : O_BAD_STATUS);
}

static void on_event(struct thread *t, struct conn *c)
{
    if (!c->active || c->fd < 0)
        return;
    if (c->state == C_CONNECTING)
        on_connected(t, c);
    else if (c->state == C_WRITING)
        do_write(t, c);
    else if (c->state == C_READING)
        on_readable(t, c);
}

/* ---- the per-thread loop ----------------------------------------------------- */

/* Start requests in free slots, expire late ones; returns the epoll_wait
 * timeout, or -2 when this thread has nothing left to do. */
static int tend_slots(struct thread *t)
{
    long long now = now_ms(), next = now + 50; /* look at the stop flag at least that often */
    int i, active = 0, idle = 0;

    for (i = 0; i < opt.concurrency; i++) {
        struct conn *c = &t->conns[i];
        if (c->active && now >= c->deadline)
            finish(t, c, O_TIMEOUT);
        if (!c->active)
            start_request(t, c);
        if (c->active) {
            active++;
            if (c->deadline < next)
                next = c->deadline;
        } else if (c->fd < 0 && more_work()) {
            idle++; /* failed at once (refused): try again without sleeping */
        }
    }
    if (!active && !idle)
        return -2;
    return idle ? 0 : (int)(next > now ? next - now : 0);
}

static void *run_thread(void *arg)
{
    struct thread *t = arg;
    struct epoll_event ev[64];
    int i, n, timeout;

    while ((timeout = tend_slots(t)) != -2) {
        n = epoll_wait(t->ep, ev, 64, timeout);
        for (i = 0; i < n; i++)
            on_event(t, ev[i].data.ptr);
    }
    for (i = 0; i < opt.concurrency; i++)
        close_conn(&t->conns[i]);
    atomic_fetch_add(&threads_done, 1);
    return NULL;
}

/* ---- options, output, main --------------------------------------------------- */

static void usage_error(const char *what)
{
    fprintf(stderr,
            "loadgen: usage: %s (loadgen --connect HOST:PORT [--path /] [--threads T] "
            "[--concurrency C] --duration SEC|--requests N [--keepalive] [--timeout MS] "
            "[--until-file PATH] [--json] [--expect-status CODE])\n",
            what);
    exit(2);
}

static long long parse_num(const char *s, long long min, long long max, const char *name)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "loadgen: usage: bad %s '%s' (want %lld..%lld)\n", name, s, min, max);
        exit(2);
    }
    return v;
}

/* HOST:PORT or [V6]:PORT into opt.addr. */
static void resolve(const char *hp)
{
    char host[256], *port;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int r;

    if (snprintf(host, sizeof(host), "%s", hp) >= (int)sizeof(host))
        usage_error("--connect too long");
    port = strrchr(host, ':');
    if (!port || port == host || !port[1])
        usage_error("--connect wants HOST:PORT");
    *port++ = '\0';
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (host[l - 1] != ']')
            usage_error("--connect: unbalanced [");
        host[l - 1] = '\0';
        memmove(host, host + 1, l - 1);
    }
    r = getaddrinfo(host, port, &hints, &ai);
    if (r) {
        fprintf(stderr, "loadgen: usage: cannot resolve %s: %s\n", hp, gai_strerror(r));
        exit(2);
    }
    memcpy(&opt.addr, ai->ai_addr, ai->ai_addrlen);
    opt.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
}

static void parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"connect", required_argument, 0, 'c'},       {"path", required_argument, 0, 'p'},
        {"threads", required_argument, 0, 't'},       {"concurrency", required_argument, 0, 'C'},
        {"duration", required_argument, 0, 'd'},      {"requests", required_argument, 0, 'n'},
        {"keepalive", no_argument, 0, 'k'},           {"timeout", required_argument, 0, 'T'},
        {"until-file", required_argument, 0, 'u'},    {"json", no_argument, 0, 'j'},
        {"expect-status", required_argument, 0, 's'}, {0, 0, 0, 0}};
    char *end;
    int o;

    opterr = 0;
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'c':
            opt.connect = optarg;
            break;
        case 'p':
            opt.path = optarg;
            break;
        case 't':
            opt.threads = (int)parse_num(optarg, 1, 64, "--threads");
            break;
        case 'C':
            opt.concurrency = (int)parse_num(optarg, 1, 10000, "--concurrency");
            break;
        case 'n':
            opt.requests = parse_num(optarg, 1, 1000000000000LL, "--requests");
            break;
        case 'k':
            opt.keepalive = 1;
            break;
        case 'T':
            opt.timeout_ms = (int)parse_num(optarg, 1, 3600000, "--timeout");
            break;
        case 'u':
            opt.until_file = optarg;
            break;
        case 'j':
            opt.json = 1;
            break;
        case 's':
            opt.expect_status = (int)parse_num(optarg, 100, 599, "--expect-status");
            break;
        case 'd':
            opt.duration = strtod(optarg, &end);
            if (end == optarg || *end || !(opt.duration > 0 && opt.duration <= 86400))
                usage_error("bad --duration");
            break;
        default:
            usage_error("unknown option or missing value");
        }
    }
    if (optind < argc)
        usage_error("unexpected argument");
    if (!opt.connect)
        usage_error("--connect is required");
    if (opt.duration == 0 && opt.requests == 0)
        usage_error("--duration or --requests is required (load must be bounded)");
    if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n"))
        usage_error("--path must start with / and contain no space or line break");
    resolve(opt.connect);
    request_len =
        (size_t)snprintf(request, sizeof(request),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: portshare-loadgen\r\n"
                         "Connection: %s\r\n\r\n",
                         opt.path, opt.connect, opt.keepalive ? "keep-alive" : "close");
    if (request_len >= sizeof(request))
        usage_error("--path too long");
}

static void merge(struct stats *to, const struct stats *from)
{
    int i;

    to->sent += from->sent;
    to->retried += from->retried;
    to->idle_closed += from->idle_closed;
    to->connections += from->connections;
    for (i = 0; i < O__COUNT; i++)
        to->outcome[i] += from->outcome[i];
    for (i = 0; i < 600; i++)
        to->status[i] += from->status[i];
    for (i = 0; i <= LAT_MAX_MS; i++)
        to->lat[i] += from->lat[i];
    if (from->lat_max > to->lat_max)
        to->lat_max = from->lat_max;
    for (i = 0; i < from->npids; i++)
        count_pid(to, from->pid[i], from->pid_ok[i]);
}

/* the latency under which a share q of the ok responses came (ms) */
static long long percentile(const struct stats *st, double q)
{
    long long n = st->outcome[O_OK], seen = 0;
    int i;

    for (i = 0; i <= LAT_MAX_MS; i++) {
        seen += st->lat[i];
        if (n && (double)seen >= q * (double)n)
            return i == LAT_MAX_MS ? st->lat_max : i;
    }
    return 0;
}

/* ok responses that took longer than ms */
static long long slower(const struct stats *st, int ms)
{
    long long n = 0;
    int i;

    for (i = ms + 1; i <= LAT_MAX_MS; i++)
        n += st->lat[i];
    return n;
}

static void print_json(const struct stats *st, long long failed, double elapsed)
{
    const char *sep = "";
    int i;

    printf("{\"sent\":%lld,\"ok\":%lld,\"failed\":%lld", st->sent, st->outcome[O_OK], failed);
    for (i = 1; i < O__COUNT; i++)
        printf(",\"%s\":%lld", outcome_name[i], st->outcome[i]);
    printf(",\"retried\":%lld,\"idle_closed\":%lld,\"connections\":%lld", st->retried,
           st->idle_closed, st->connections);
    printf(",\"elapsed_s\":%.3f,\"rps\":%.1f,\"status\":{", elapsed,
           elapsed > 0 ? st->outcome[O_OK] / elapsed : 0.0);
    for (i = 0; i < 600; i++) {
        if (st->status[i]) {
            printf("%s\"%d\":%lld", sep, i, st->status[i]);
            sep = ",";
        }
    }
    printf("},\"latency_ms\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,\"max\":%lld}",
           percentile(st, 0.5), percentile(st, 0.9), percentile(st, 0.99), percentile(st, 0.999),
           st->lat_max);
    printf(",\"slower_1s\":%lld,\"slower_2s\":%lld", slower(st, 1000), slower(st, 2000));
    printf(",\"by_pid\":{");
    for (sep = "", i = 0; i < st->npids; i++) {
        printf("%s\"%ld\":%lld", sep, st->pid[i], st->pid_ok[i]);
        sep = ",";
    }
    printf("}}\n");
    fflush(stdout);
}

static void print_summary(const struct stats *st, long long failed, double elapsed)
{
    int i;

    fprintf(stderr, "loadgen: %s %s: %lld sent, %lld ok, %lld failed (", opt.connect,
            opt.keepalive ? "keep-alive" : "close", st->sent, st->outcome[O_OK], failed);
    for (i = 1; i < O__COUNT; i++)
        fprintf(stderr, "%s%s %lld", i > 1 ? ", " : "", outcome_name[i], st->outcome[i]);
    fprintf(stderr, "), retried %lld, idle_closed %lld, %lld connections, %.2f s, %.0f req/s\n",
            st->retried, st->idle_closed, st->connections, elapsed,
            elapsed > 0 ? st->outcome[O_OK] / elapsed : 0.0);
    if (st->npids) {
        fprintf(stderr, "loadgen: ok by worker pid:");
        for (i = 0; i < st->npids; i++)
            fprintf(stderr, " %ld=%lld", st->pid[i], st->pid_ok[i]);
        fprintf(stderr, "\n");
    }
}

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

/* Watch the stop conditions until every thread has finished. */
static void supervise(long long start)
{
    const struct timespec tick = {0, 10 * 1000 * 1000};

    while (atomic_load(&threads_done) < opt.threads) {
        nanosleep(&tick, NULL);
        if (got_signal ||
            (opt.duration > 0 && now_ms() - start >= (long long)(opt.duration * 1000)) ||
            (opt.until_file && access(opt.until_file, F_OK) == 0))
            atomic_store(&stopping, 1);
    }
}

static void setup_process(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct rlimit rl;

    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* threads x concurrency sockets, plus connections closing behind them */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct thread *threads;
    struct stats total;
    long long start, failed;
    double elapsed;
    int i, k;

    parse_options(argc, argv);
    setup_process();
    threads = calloc((size_t)opt.threads, sizeof(*threads));
    if (!threads)
        return 1;
    start = now_ms();
    for (i = 0; i < opt.threads; i++) {
        threads[i].conns = calloc((size_t)opt.concurrency, sizeof(struct conn));
        threads[i].ep = epoll_create1(EPOLL_CLOEXEC);
        if (!threads[i].conns || threads[i].ep < 0) {
            fprintf(stderr, "loadgen: fatal: cannot set up thread %d: %s\n", i, strerror(errno));
            return 1;
        }
        for (k = 0; k < opt.concurrency; k++)
            threads[i].conns[k].fd = -1;
        if (pthread_create(&threads[i].tid, NULL, run_thread, &threads[i]) != 0) {
            fprintf(stderr, "loadgen: fatal: cannot start thread %d\n", i);
            return 1;
        }
    }
    supervise(start);
    memset(&total, 0, sizeof(total));
    for (i = 0; i < opt.threads; i++) {
        pthread_join(threads[i].tid, NULL);
        merge(&total, &threads[i].st);
        close(threads[i].ep);
        free(threads[i].conns);
    }
    free(threads);
    elapsed = (double)(now_ms() - start) / 1000.0;
    for (failed = 0, i = 1; i < O__COUNT; i++)
        failed += total.outcome[i];
    print_summary(&total, failed, elapsed);
    if (opt.json)
        print_json(&total, failed, elapsed);
    return failed == 0 && total.outcome[O_OK] > 0 ? 0 : 1;
}
