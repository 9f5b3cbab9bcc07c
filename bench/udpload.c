/*
 * udpload.c - a UDP datagram load client: many flows, a fixed payload,
 * counts the answers.
 *
 *   bench_udpload --connect HOST:PORT [--flows N] [--window W] [--size BYTES]
 *                 [--duration S] [--timeout-ms MS]
 *
 * Each flow is a connected UDP socket, so its own source port: one flow of
 * the server's reuseport group, as a QUIC connection or a WireGuard peer
 * is.  A flow keeps W datagrams of BYTES bytes in flight (closed loop: each
 * answer, any datagram back on the flow's socket, sends the next), so the
 * load is as high as the slower side takes and nothing queues without
 * bound: N * W datagrams in flight in all, few enough (64 * 2 by default)
 * for the server socket's default receive buffer.  A flow that has had no
 * answer for --timeout-ms (default 200) while datagrams are outstanding
 * counts them as lost and sends W afresh: a datagram dropped by a full
 * buffer would otherwise stop its flow for good.  An answer that comes
 * after its flow gave up on it counts as late and sends nothing.
 *
 * Why not an existing tool: iperf3 -u sends one flow at a fixed rate and
 * counts nothing back; socat and nc are one flow, one datagram at a time;
 * the steering under test chooses a socket per flow, so the load must be
 * many flows.
 *
 * Bounded: stops after --duration (default 4 s, at most 3600) or on
 * SIGINT/SIGTERM.  Single-threaded, one epoll set.  Prints one JSON line:
 *   {"flows":N,"window":W,"size":B,"sent":N,"answered":N,"lost":N,
 *    "late":N,"send_errors":N,"recv_errors":N,"dps":F,"elapsed_s":F,"cpu_s":F}
 * dps is answered datagrams per second; cpu_s this process's user+system
 * time (getrusage), which on loopback includes the receive path its sends
 * run in softirq, the server's reuseport program among it.
 *
 * Exit: 0 once it ran (the numbers say what happened), 2 on a usage error
 * (one line naming it), 3 when it cannot open its sockets.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FLOWS  10000
#define MAX_WINDOW 64
#define MAX_SIZE   1472 /* one Ethernet-sized datagram: no IP fragments */

struct flow {
    int fd;
    int outstanding;      /* datagrams sent and not yet answered */
    long long last_event; /* ms of its last answer or (re)start */
};

static struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int flows, window, size, timeout_ms;
    double duration;
} opt = {.flows = 64, .window = 2, .size = 64, .timeout_ms = 200, .duration = 4};

static struct {
    unsigned long long sent, answered, lost, late, send_errors, recv_errors;
} st;

static struct flow *flows;
static char payload[MAX_SIZE];
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage_error(const char *what, const char *value)
{
    fprintf(stderr,
            "bench_udpload: usage: %s%s%s (bench_udpload --connect HOST:PORT [--flows N] "
            "[--window W] [--size BYTES] [--duration S] [--timeout-ms MS])\n",
            what, value ? ": " : "", value ? value : "");
    exit(2);
}

static int parse_int(const char *s, int min, int max, const char *name)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "bench_udpload: usage: bad %s '%s' (want %d..%d)\n", name, s, min, max);
        exit(2);
    }
    return (int)v;
}

/* HOST:PORT or [V6]:PORT into opt.addr. */
static void resolve(const char *hp)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char host[256], *port;
    int r;

    if (snprintf(host, sizeof(host), "%s", hp) >= (int)sizeof(host))
        usage_error("--connect too long", NULL);
    port = strrchr(host, ':');
    if (!port || port == host || !port[1])
        usage_error("--connect wants HOST:PORT", hp);
    *port++ = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host[strlen(host) - 1] = '\0';
        memmove(host, host + 1, strlen(host));
    }
    r = getaddrinfo(host, port, &hints, &ai);
    if (r) {
        fprintf(stderr, "bench_udpload: usage: cannot resolve --connect %s: %s\n", hp,
                gai_strerror(r));
        exit(2);
    }
    memcpy(&opt.addr, ai->ai_addr, ai->ai_addrlen);
    opt.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
}

static void parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {{"connect", required_argument, 0, 'c'},
                                             {"flows", required_argument, 0, 'f'},
                                             {"window", required_argument, 0, 'w'},
                                             {"size", required_argument, 0, 's'},
                                             {"duration", required_argument, 0, 'd'},
                                             {"timeout-ms", required_argument, 0, 't'},
                                             {0, 0, 0, 0}};
    const char *connect_to = NULL;
    char *end;
    int o;

    opterr = 0;
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'c':
            connect_to = optarg;
            break;
        case 'f':
            opt.flows = parse_int(optarg, 1, MAX_FLOWS, "--flows");
            break;
        case 'w':
            opt.window = parse_int(optarg, 1, MAX_WINDOW, "--window");
            break;
        case 's':
            opt.size = parse_int(optarg, 1, MAX_SIZE, "--size");
            break;
        case 't':
            opt.timeout_ms = parse_int(optarg, 1, 60000, "--timeout-ms");
            break;
        case 'd':
            opt.duration = strtod(optarg, &end);
            if (end == optarg || *end || !(opt.duration > 0 && opt.duration <= 3600))
                usage_error("bad --duration (want seconds, 0 < S <= 3600)", optarg);
            break;
        default:
            usage_error("unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
    if (!connect_to)
        usage_error("--connect is required", NULL);
    resolve(connect_to);
}

/* Send up to n datagrams on flow f; a failed send is counted and not
 * outstanding (the timeout restarts the flow if none is). */
static void flow_send(struct flow *f, int n)
{
    while (n-- > 0) {
        if (send(f->fd, payload, (size_t)opt.size, MSG_DONTWAIT | MSG_NOSIGNAL) == opt.size) {
            st.sent++;
            f->outstanding++;
        } else {
            st.send_errors++;
        }
    }
}

static int open_flows(int ep, long long now)
{
    struct rlimit rl;
    int i;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.flows + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    flows = calloc((size_t)opt.flows, sizeof(*flows));
    if (!flows)
        return -1;
    for (i = 0; i < opt.flows; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        struct flow *f = &flows[i];
        f->fd = socket(opt.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (f->fd < 0 || connect(f->fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, f->fd, &ev) < 0)
            return -1;
        f->last_event = now;
    }
    return 0;
}

/* Read what the flow has (at most what it waits for: no EAGAIN call in the
 * common case; epoll is level-triggered), then send as many as came. */
static void on_readable(struct flow *f, long long now)
{
    char buf[MAX_SIZE + 64];
    int got = 0, i;
    ssize_t n;

    for (i = 0; i < opt.window; i++) {
        n = recv(f->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) { /* ECONNREFUSED: nobody had the port when one arrived */
            st.recv_errors++;
            continue;
        }
        if (f->outstanding == 0) { /* given up on already */
            st.late++;
            continue;
        }
        f->outstanding--;
        st.answered++;
        got++;
    }
    if (got) {
        f->last_event = now;
        flow_send(f, got);
    }
}

/* Restart every flow that waited in vain for --timeout-ms. */
static void restart_stuck(long long now)
{
    int i;

    for (i = 0; i < opt.flows; i++) {
        struct flow *f = &flows[i];
        if (now - f->last_event < opt.timeout_ms)
            continue;
        st.lost += (unsigned long long)f->outstanding;
        f->outstanding = 0;
        f->last_event = now;
        flow_send(f, opt.window);
    }
}

/* The load until the end; returns the seconds it ran. */
static double run(int ep)
{
    struct epoll_event ev[256];
    long long start = now_ms(), end = start + (long long)(opt.duration * 1000), now = start;
    long long next_check = start + opt.timeout_ms / 4 + 1;
    int i, n;

    for (i = 0; i < opt.flows; i++)
        flow_send(&flows[i], opt.window);
    while (!stop_flag && now < end) {
        n = epoll_wait(ep, ev, 256, 10);
        now = now_ms();
        for (i = 0; i < n; i++)
            on_readable(&flows[ev[i].data.u32], now);
        if (now >= next_check) {
            restart_stuck(now);
            next_check = now + opt.timeout_ms / 4 + 1;
        }
    }
    return (double)(now - start) / 1000;
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct rusage ru;
    double elapsed, cpu = 0;
    int ep, i;

    parse_options(argc, argv);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    memset(payload, 'x', sizeof(payload));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || open_flows(ep, now_ms()) < 0) {
        fprintf(stderr, "bench_udpload: fatal: cannot open %d flows to the server: %s\n", opt.flows,
                strerror(errno));
        return 3;
    }
    elapsed = run(ep);
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
              (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("{\"flows\":%d,\"window\":%d,\"size\":%d,\"sent\":%llu,\"answered\":%llu,"
           "\"lost\":%llu,\"late\":%llu,\"send_errors\":%llu,\"recv_errors\":%llu,"
           "\"dps\":%.0f,\"elapsed_s\":%.3f,\"cpu_s\":%.3f}\n",
           opt.flows, opt.window, opt.size, st.sent, st.answered, st.lost, st.late, st.send_errors,
           st.recv_errors, elapsed > 0 ? (double)st.answered / elapsed : 0.0, elapsed, cpu);
    for (i = 0; i < opt.flows; i++)
        close(flows[i].fd);
    free(flows);
    close(ep);
    return 0;
}
