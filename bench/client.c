/*
 * client.c - an HTTP/1.1 load client that counts every failure and can hold
 * a constant request rate.
 *
 *   bench_client --connect HOST:PORT [--duration S] [--connections C]
 *                [--rate R] [--close] [--timeout-ms MS] [--path PATH]
 *                [--spectrum FILE]
 *
 * --rate 0 (default): closed loop, each connection sends its next request
 * as soon as the previous answer is in (load as high as the server takes).
 * --rate R: open loop at R requests/s in total, wrk2-style: connection i
 * sends its k-th request at start + (i + k*C)/R, and latency is measured
 * from that scheduled moment, so a stalled server is charged for every
 * request it delayed (no coordinated omission).
 * --close: one request per connection (Connection: close), as wrk -H.
 *
 * Why not wrk: wrk has no constant-rate mode and no per-kind failure count
 * (wrk2 is not packaged in Debian; h2load's rate mode reports no
 * percentiles).  Throughput figures still come from wrk.
 *
 * SIGINT/SIGTERM end the run early.  Prints one JSON line:
 * requests (finished attempts), ok, failed = connect_errors + resets + eof +
 * timeouts + non2xx + other, unfinished (in flight at the end, not failed),
 * rps, and latency percentiles in microseconds.  --spectrum writes
 * "percentile latency_ms 1/(1-p)" lines for a percentile plot.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF      8192
#define MAX_CONNS 10000

enum cstate { C_DOWN, C_CONNECTING, C_IDLE, C_WAITING };

struct cconn {
    int fd;
    enum cstate state;
    double sched;   /* open loop: when the next request is due */
    double started; /* what this request's latency is measured from */
    size_t len;
    long need; /* bytes of the whole response, -1 until headers are in */
    int status;
    int server_closes;
    char buf[RBUF + 1];
};

struct stats {
    long ok, connect_errors, resets, eof, timeouts, non2xx, other;
    uint32_t *lat; /* microseconds, one per ok response */
    size_t nlat, cap;
};

struct opts {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    double duration, rate, timeout;
    int conns, close_mode;
    const char *spectrum;
    char request[512];
    size_t reqlen;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record(struct stats *st, double seconds)
{
    if (st->nlat == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 1 << 16;
        uint32_t *p = realloc(st->lat, cap * sizeof(*p));
        if (!p)
            return; /* keep counting; the percentiles just see fewer samples */
        st->lat = p;
        st->cap = cap;
    }
    st->lat[st->nlat++] = seconds < 0 ? 0 : (uint32_t)(seconds * 1e6 + 0.5);
}

static void conn_down(int ep, struct cconn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_DOWN;
}

/* A request ended, well or not: free the connection for the next one. */
static void finish(const struct opts *o, int ep, struct cconn *c, int keep)
{
    if (!keep || o->close_mode || c->server_closes)
        conn_down(ep, c);
    else
        c->state = C_IDLE;
    if (o->rate > 0)
        c->sched += (double)o->conns / o->rate;
}

static void send_request(const struct opts *o, int ep, struct cconn *c, struct stats *st)
{
    ssize_t n;

    c->len = 0;
    c->need = -1;
    c->server_closes = 0;
    do
        n = write(c->fd, o->request, o->reqlen);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)o->reqlen) {
        c->state = C_WAITING;
        return;
    }
    if (n < 0 && (errno == ECONNRESET || errno == EPIPE))
        st->resets++;
    else
        st->other++;
    finish(o, ep, c, 0);
}

/* Start the next request on c: connect first when it has no connection. */
static void start(const struct opts *o, int ep, struct cconn *c, struct stats *st, double now)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT};

    c->started = o->rate > 0 ? c->sched : now;
    if (c->state == C_IDLE) {
        send_request(o, ep, c, st);
        return;
    }
    c->fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        st->other++;
        finish(o, ep, c, 0);
        return;
    }
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 ||
        (connect(c->fd, (const struct sockaddr *)&o->addr, o->addrlen) < 0 &&
         errno != EINPROGRESS)) {
        st->connect_errors++;
        finish(o, ep, c, 0);
        return;
    }
    c->state = C_CONNECTING;
}

static void on_connected(const struct opts *o, int ep, struct cconn *c, struct stats *st)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        st->connect_errors++;
        finish(o, ep, c, 0);
        return;
    }
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    send_request(o, ep, c, st);
}

/* Headers complete: status, Content-Length, and whether the server closes. */
static int parse_head(struct cconn *c)
{
    char *end = strstr(c->buf, "\r\n\r\n"), *cl;

    if (!end)
        return c->len >= RBUF ? -1 : 0;
    *end = '\0';
    if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->len < 12)
        return -1;
    c->status = atoi(c->buf + 9);
    cl = strcasestr(c->buf, "\r\ncontent-length:");
    c->need = (long)(end - c->buf) + 4 + (cl ? atol(cl + 17) : 0);
    c->server_closes = strcasestr(c->buf, "\r\nconnection: close") != NULL;
    *end = '\r';
    return 1;
}

static void on_response_done(const struct opts *o, int ep, struct cconn *c, struct stats *st,
                             double now)
{
    if (c->status >= 200 && c->status < 300) {
        st->ok++;
        record(st, now - c->started);
    } else {
        st->non2xx++;
    }
    finish(o, ep, c, 1);
}

static void on_readable(const struct opts *o, int ep, struct cconn *c, struct stats *st, double now)
{
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, RBUF - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (c->state != C_WAITING) { /* an idle keep-alive close is no failure */
                conn_down(ep, c);
                return;
            }
            if (n == 0)
                st->eof++;
            else if (errno == ECONNRESET)
                st->resets++;
            else
                st->other++;
            finish(o, ep, c, 0);
            return;
        }
        if (c->state != C_WAITING)
            continue; /* unsolicited bytes: ignore */
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        if (c->need < 0 && parse_head(c) < 0) {
            st->other++;
            finish(o, ep, c, 0);
            return;
        }
        if (c->need >= 0 && (long)c->len >= c->need) {
            on_response_done(o, ep, c, st, now);
            return;
        }
    }
}

/* A request that got no answer in time is a failure; so is a connect. */
static void check_timeouts(const struct opts *o, int ep, struct cconn *cs, struct stats *st,
                           double now)
{
    int i;

    for (i = 0; i < o->conns; i++) {
        struct cconn *c = &cs[i];
        if ((c->state == C_CONNECTING || c->state == C_WAITING) && now - c->started > o->timeout) {
            st->timeouts++;
            finish(o, ep, c, 0);
        }
    }
}

/* Start every request that is due; returns seconds until the next one. */
static double start_due(const struct opts *o, int ep, struct cconn *cs, struct stats *st,
                        double now)
{
    double next = 0.01; /* also the timeout-check period */
    int i;

    for (i = 0; i < o->conns; i++) {
        struct cconn *c = &cs[i];
        if (c->state != C_DOWN && c->state != C_IDLE)
            continue;
        if (o->rate <= 0 || c->sched <= now)
            start(o, ep, c, st, now);
        else if (c->sched - now < next)
            next = c->sched - now;
    }
    return next;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static uint32_t pct(const struct stats *st, double p)
{
    size_t i;

    if (st->nlat == 0)
        return 0;
    i = (size_t)(p / 100.0 * (double)(st->nlat - 1) + 0.5);
    return st->lat[i < st->nlat ? i : st->nlat - 1];
}

static void write_spectrum(const char *path, const struct stats *st)
{
    static const double ps[] = {0,     10,   20,    30,     40,    50,     60,     70,
                                75,    80,   85,    90,     95,    97.5,   99,     99.5,
                                99.75, 99.9, 99.95, 99.975, 99.99, 99.995, 99.999, 100};
    FILE *f = fopen(path, "w");
    size_t i;

    if (!f)
        return;
    fprintf(f, "# percentile latency_ms 1/(1-p)\n");
    for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double x = ps[i] >= 100 ? 1e6 : 1.0 / (1.0 - ps[i] / 100.0);
        fprintf(f, "%g %.3f %g\n", ps[i], pct(st, ps[i]) / 1000.0, x);
    }
    fclose(f);
}

static void print_result(const struct opts *o, struct stats *st, const struct cconn *cs,
                         double elapsed)
{
    long failed = st->connect_errors + st->resets + st->eof + st->timeouts + st->non2xx + st->other;
    long unfinished = 0;
    int i;

    for (i = 0; i < o->conns; i++)
        unfinished += cs[i].state == C_CONNECTING || cs[i].state == C_WAITING;
    if (st->nlat > 0)
        qsort(st->lat, st->nlat, sizeof(*st->lat), cmp_u32);
    printf("{\"connections\":%d,\"rate\":%.0f,\"close\":%s,\"elapsed_s\":%.3f,"
           "\"requests\":%ld,\"ok\":%ld,\"failed\":%ld,\"connect_errors\":%ld,"
           "\"resets\":%ld,\"eof\":%ld,\"timeouts\":%ld,\"non2xx\":%ld,\"other\":%ld,"
           "\"unfinished\":%ld,\"rps\":%.1f,\"latency_us\":{\"p50\":%u,\"p90\":%u,"
           "\"p99\":%u,\"p999\":%u,\"p9999\":%u,\"max\":%u}}\n",
           o->conns, o->rate, o->close_mode ? "true" : "false", elapsed, st->ok + failed, st->ok,
           failed, st->connect_errors, st->resets, st->eof, st->timeouts, st->non2xx, st->other,
           unfinished, elapsed > 0 ? (double)st->ok / elapsed : 0.0, pct(st, 50), pct(st, 90),
           pct(st, 99), pct(st, 99.9), pct(st, 99.99), pct(st, 100));
    if (o->spectrum)
        write_spectrum(o->spectrum, st);
}

static int run(const struct opts *o)
{
    struct cconn *cs = calloc((size_t)o->conns, sizeof(*cs));
    struct stats st = {0};
    struct epoll_event evs[256];
    double t0 = now_s(), now = t0;
    int ep = epoll_create1(EPOLL_CLOEXEC), i, n;

    if (!cs || ep < 0)
        return 6;
    for (i = 0; i < o->conns; i++) {
        cs[i].fd = -1;
        cs[i].sched = t0 + (o->rate > 0 ? (double)i / o->rate : 0);
    }
    while (!stop_flag && now - t0 < o->duration) {
        double wait = start_due(o, ep, cs, &st, now);
        n = epoll_wait(ep, evs, 256, (int)(wait * 1000));
        now = now_s();
        for (i = 0; i < n; i++) {
            struct cconn *c = evs[i].data.ptr;
            if (c->state == C_CONNECTING)
                on_connected(o, ep, c, &st);
            else if (c->fd >= 0)
                on_readable(o, ep, c, &st, now);
        }
        check_timeouts(o, ep, cs, &st, now);
    }
    print_result(o, &st, cs, now - t0);
    for (i = 0; i < o->conns; i++)
        if (cs[i].fd >= 0)
            close(cs[i].fd);
    close(ep);
    free(cs);
    free(st.lat);
    return 0;
}

static int resolve(const char *hostport, struct opts *o)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    size_t hl;

    if (!colon || (hl = (size_t)(colon - hostport)) >= sizeof(host))
        return -1;
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    if (hl > 2 && host[0] == '[') { /* [::1]:80 */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_client --connect HOST:PORT [--duration S] [--connections C]\n"
                    "                    [--rate R] [--close] [--timeout-ms MS] [--path PATH]\n"
                    "                    [--spectrum FILE]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"connect", required_argument, NULL, 'a'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"connections", required_argument, NULL, 'c'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"close", no_argument, NULL, 'k'},
                                             {"timeout-ms", required_argument, NULL, 't'},
                                             {"path", required_argument, NULL, 'p'},
                                             {"spectrum", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {0, 0, 0, 0}};
    struct opts o = {.duration = 10, .timeout = 2.0, .conns = 16};
    const char *target = NULL, *path = "/";
    struct sigaction sa = {.sa_handler = on_signal};
    struct rlimit rl;
    int opt;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            target = optarg;
            break;
        case 'd':
            o.duration = atof(optarg);
            break;
        case 'c':
            o.conns = atoi(optarg);
            break;
        case 'r':
            o.rate = atof(optarg);
            break;
        case 'k':
            o.close_mode = 1;
            break;
        case 't':
            o.timeout = atof(optarg) / 1000.0;
            break;
        case 'p':
            path = optarg;
            break;
        case 's':
            o.spectrum = optarg;
            break;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (!target || o.conns < 1 || o.conns > MAX_CONNS || o.duration <= 0 || o.rate < 0 ||
        o.timeout <= 0) {
        usage();
        return 2;
    }
    if (resolve(target, &o) < 0) {
        fprintf(stderr, "bench_client: cannot resolve %s\n", target);
        return 2;
    }
    o.reqlen =
        (size_t)snprintf(o.request, sizeof(o.request), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
                         path, target, o.close_mode ? "Connection: close\r\n" : "");
    if (o.reqlen >= sizeof(o.request))
        return 2;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return run(&o);
}
