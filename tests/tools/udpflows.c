/*
 * udpflows.c - a client of many stateful UDP flows that counts every flow
 * that lost its state.
 *
 *   udpflows --connect HOST:PORT --flows N --interval MS --duration SEC
 *            [--until-file F] [--timeout MS] [--source ADDR] [--json]
 *
 * It talks to `testworker --udp-state` (HOST an IPv4 or IPv6 address or
 * name, [V6]:PORT bracketed).  Each flow is one connected UDP socket, so
 * its own source port: the peer a stateful server keys its state on.  Every
 * flow sends its next sequence number ("SEQ\n") every MS milliseconds (the
 * flows' first datagrams spread over the first interval) and expects one
 * line back:
 *   "pid=P gen=G slot=S n=COUNT seq=SEQ"
 * COUNT is the answering process's count of this flow's datagrams, this
 * one included.  A flow "breaks" when an answer's n is not the previous
 * answer's n + 1: another process answered without the flow's state (or
 * the table of the one that did was full: n=0).  Its first answer starts
 * the count (an n other than 1 there is counted as first_n_not_1: a port
 * an earlier flow used, seen by the same process).
 *
 * A datagram is "answered" when its answer came within --timeout ms
 * (default 1000) and "unanswered" otherwise; an answer that came after its
 * timeout is counted as "late" too (late <= unanswered), never as answered.
 * sent = answered + unanswered.  Every answer (late ones too) counts in the
 * state checks and in "gens" (answers per generation).
 *
 * --source ADDR binds every flow's socket to ADDR (port 0) first: a run
 * from 127.0.0.2 can never reuse the 4-tuple of an earlier run's flow from
 * 127.0.0.1, which a flow table that still remembers it would take for
 * that flow.
 *
 * Sending stops at --duration, on SIGINT/SIGTERM, or once --until-file
 * exists (checked every 50 ms; --duration is then the hard cap); it then
 * waits up to --timeout ms for the answers still due.  Single-threaded, one
 * poll() loop: bounded in time and in memory (a ring of the datagrams that
 * may still be answered, per flow).
 *
 * Output: a summary on stderr, one line per broken answer (the first 20),
 * and with --json one object on stdout:
 *   {"flows":N,"sent":N,"answered":N,"unanswered":N,"late":N,
 *    "state_breaks":N,"flows_broken":N,"pid_changes":N,"flows_pid_changed":N,
 *    "flows_gen_changed":N,"first_n_not_1":N,"bad_answers":N,"unexpected":N,
 *    "send_errors":N,"recv_errors":N,"gens":{"G":answers},
 *    "last_gen_of_flows":{"G":flows},"elapsed_s":F}
 * flows_gen_changed counts the flows whose first and last answers came
 * from different generations; unexpected counts answers to no datagram
 * still remembered (a duplicate, or one older than the ring).
 *
 * Exit: 0 once it ran (the numbers say what happened), 2 on a usage error
 * (one line naming it), 3 when it cannot open its sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_GENS     32 /* distinct generations told apart; the rest count as "other" */
#define GEN_LEN      16
#define BREAKS_SHOWN 20

enum pstate { P_FREE, P_WAIT, P_EXPIRED };

struct pending { /* one datagram that may still be answered */
    unsigned long seq;
    long long sent_ms;
    enum pstate state;
};

struct flow {
    int fd;
    unsigned port; /* our source port, for the break lines */
    unsigned long next_seq, answers, last_n, breaks, pid_changes;
    unsigned long oldest; /* no datagram before it waits: where sweep() starts */
    long long next_send;
    long last_pid;
    int first_gen, last_gen; /* indexes into gens[] */
    struct pending *ring;
};

static struct {
    const char *connect, *until_file, *source;
    int flows, interval_ms, timeout_ms, json;
    double duration;
    struct sockaddr_storage addr, src;
    socklen_t addrlen, srclen;
} opt = {.timeout_ms = 1000};

static struct {
    unsigned long long sent, answered, unanswered, late, breaks, pid_changes, first_n_not_1;
    unsigned long long bad, unexpected, send_errors, recv_errors, outstanding;
} st;

static struct flow *flows;
static struct pollfd *pfds;
static int ring_len;
static char gens[MAX_GENS][GEN_LEN];
static unsigned long long gen_answers[MAX_GENS];
static int ngens;
static volatile sig_atomic_t stop_signal;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- options ------------------------------------------------------------------- */

static void usage_error(const char *what, const char *value)
{
    fprintf(stderr,
            "udpflows: usage: %s%s%s (udpflows --connect HOST:PORT --flows N --interval MS "
            "--duration SEC [--until-file F] [--timeout MS] [--source ADDR] [--json])\n",
            what, value ? ": " : "", value ? value : "");
    exit(2);
}

static long parse_num(const char *s, long min, long max, const char *name)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "udpflows: usage: bad %s '%s' (want %ld..%ld)\n", name, s, min, max);
        exit(2);
    }
    return v;
}

/* --source ADDR, a numeric address of the family of --connect's. */
static void resolve_source(const char *a)
{
    struct addrinfo hints = {.ai_family = opt.addr.ss_family,
                             .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE},
                    *ai;

    if (getaddrinfo(a, "0", &hints, &ai)) {
        fprintf(stderr,
                "udpflows: usage: bad --source '%s' (want a numeric address of the "
                "family of --connect's)\n",
                a);
        exit(2);
    }
    memcpy(&opt.src, ai->ai_addr, ai->ai_addrlen);
    opt.srclen = ai->ai_addrlen;
    freeaddrinfo(ai);
}

/* HOST:PORT or [V6]:PORT into opt.addr. */
static void resolve(const char *hp)
{
    char host[256], *port;
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int r;

    if (snprintf(host, sizeof(host), "%s", hp) >= (int)sizeof(host))
        usage_error("--connect too long", NULL);
    port = strrchr(host, ':');
    if (!port || port == host || !port[1])
        usage_error("--connect wants HOST:PORT", hp);
    *port++ = '\0';
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (l < 2 || host[l - 1] != ']')
            usage_error("--connect: unbalanced [", hp);
        host[l - 1] = '\0';
        memmove(host, host + 1, l - 1);
    } else if (strchr(host, ':')) {
        usage_error("--connect: an IPv6 address wants brackets, [V6]:PORT", hp);
    }
    r = getaddrinfo(host, port, &hints, &ai);
    if (r) {
        fprintf(stderr, "udpflows: usage: cannot resolve --connect %s: %s\n", hp, gai_strerror(r));
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
                                             {"interval", required_argument, 0, 'i'},
                                             {"duration", required_argument, 0, 'd'},
                                             {"timeout", required_argument, 0, 'T'},
                                             {"until-file", required_argument, 0, 'u'},
                                             {"source", required_argument, 0, 's'},
                                             {"json", no_argument, 0, 'j'},
                                             {0, 0, 0, 0}};
    char *end;
    int o;

    opterr = 0;
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'c':
            opt.connect = optarg;
            break;
        case 'f':
            opt.flows = (int)parse_num(optarg, 1, 10000, "--flows");
            break;
        case 'i':
            opt.interval_ms = (int)parse_num(optarg, 1, 60000, "--interval");
            break;
        case 'T':
            opt.timeout_ms = (int)parse_num(optarg, 1, 600000, "--timeout");
            break;
        case 'd':
            opt.duration = strtod(optarg, &end);
            if (end == optarg || *end || !(opt.duration > 0 && opt.duration <= 86400))
                usage_error("bad --duration (want seconds, 0 < SEC <= 86400)", optarg);
            break;
        case 'u':
            opt.until_file = optarg;
            break;
        case 's':
            opt.source = optarg;
            break;
        case 'j':
            opt.json = 1;
            break;
        default:
            usage_error("unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
    if (!opt.connect || !opt.flows || !opt.interval_ms || opt.duration == 0)
        usage_error("--connect, --flows, --interval and --duration are required", NULL);
    resolve(opt.connect);
    if (opt.source)
        resolve_source(opt.source);
}

/* ---- flows --------------------------------------------------------------------- */

/* Each flow remembers its datagrams of the last 4 timeouts + 2 s (at most
 * 1024): an answer later than that is "unexpected" rather than "late". */
static void open_flows(void)
{
    struct rlimit rl;
    int i;

    ring_len = (4 * opt.timeout_ms + 2000) / opt.interval_ms + 8;
    if (ring_len > 1024)
        ring_len = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.flows + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    flows = calloc((size_t)opt.flows, sizeof(*flows));
    pfds = calloc((size_t)opt.flows, sizeof(*pfds));
    if (!flows || !pfds) {
        fprintf(stderr, "udpflows: fatal: out of memory for %d flows\n", opt.flows);
        exit(3);
    }
    for (i = 0; i < opt.flows; i++) {
        struct flow *f = &flows[i];
        struct sockaddr_storage me;
        socklen_t len = sizeof(me);
        f->ring = calloc((size_t)ring_len, sizeof(*f->ring));
        f->fd = socket(opt.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (!f->ring || f->fd < 0 ||
            (opt.source && bind(f->fd, (struct sockaddr *)&opt.src, opt.srclen) < 0) ||
            connect(f->fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0 ||
            getsockname(f->fd, (struct sockaddr *)&me, &len) < 0) {
            fprintf(stderr, "udpflows: fatal: cannot open flow %d of %d to %s: %s\n", i + 1,
                    opt.flows, opt.connect, strerror(errno));
            exit(3);
        }
        /* sin_port and sin6_port sit at the same offset */
        f->port = ntohs(((struct sockaddr_in *)&me)->sin_port);
        f->first_gen = f->last_gen = -1;
        pfds[i] = (struct pollfd){.fd = f->fd, .events = POLLIN};
    }
}

static void close_flows(void)
{
    int i;

    for (i = 0; i < opt.flows; i++) {
        close(flows[i].fd);
        free(flows[i].ring);
    }
    free(flows);
    free(pfds);
}

/* The index of generation g in gens[], added when new; the last entry
 * takes every generation past the table's size. */
static int gen_index(const char *g)
{
    int i;

    for (i = 0; i < ngens; i++)
        if (!strcmp(gens[i], g))
            return i;
    if (ngens == MAX_GENS)
        return MAX_GENS - 1;
    snprintf(gens[ngens], GEN_LEN, "%s", ngens == MAX_GENS - 1 ? "other" : g);
    return ngens++;
}

static void expire(struct pending *p)
{
    p->state = P_EXPIRED;
    st.unanswered++;
    st.outstanding--;
}

static void send_one(struct flow *f, long long now)
{
    struct pending *p = &f->ring[f->next_seq % (unsigned long)ring_len];
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "%lu\n", f->next_seq);

    if (send(f->fd, msg, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) != len) {
        st.send_errors++; /* not sent: not counted, and its number is used next time */
        return;
    }
    if (p->state == P_WAIT) /* older than the ring: long past its timeout */
        expire(p);
    *p = (struct pending){.seq = f->next_seq++, .sent_ms = now, .state = P_WAIT};
    st.sent++;
    st.outstanding++;
}

/* Send what is due; returns the time of the next send. */
static long long send_due(long long now)
{
    long long next = now + opt.interval_ms;
    int i;

    for (i = 0; i < opt.flows; i++) {
        struct flow *f = &flows[i];
        if (f->next_send <= now) {
            send_one(f, now);
            f->next_send += opt.interval_ms;
            if (f->next_send <= now) /* fell behind (a stall): no burst to catch up */
                f->next_send = now + opt.interval_ms;
        }
        if (f->next_send < next)
            next = f->next_send;
    }
    return next;
}

/* Every datagram past its timeout (all: every one still waiting) becomes
 * unanswered.  A flow's datagrams wait in the order they were sent, so this
 * is O(flows + datagrams expired). */
static void sweep(long long now, int all)
{
    int i;

    for (i = 0; i < opt.flows; i++) {
        struct flow *f = &flows[i];
        for (; f->oldest < f->next_seq; f->oldest++) {
            struct pending *p = &f->ring[f->oldest % (unsigned long)ring_len];
            if (p->seq != f->oldest || p->state != P_WAIT)
                continue; /* answered, expired, or overwritten (and expired then) */
            if (!all && now - p->sent_ms <= opt.timeout_ms)
                break;
            expire(p);
        }
    }
}

/* ---- answers ------------------------------------------------------------------- */

/* Is this answer's n the continuation of the flow's count? */
static void check_state(struct flow *f, long pid, int g, unsigned long n, unsigned long seq)
{
    if (!f->answers) {
        f->first_gen = g;
        st.first_n_not_1 += n != 1;
    } else {
        if (n != f->last_n + 1) {
            if (st.breaks < BREAKS_SHOWN)
                fprintf(stderr,
                        "udpflows: flow %ld (port %u): seq %lu answered n=%lu by pid %ld gen "
                        "%s, after n=%lu by pid %ld gen %s\n",
                        (long)(f - flows), f->port, seq, n, pid, gens[g], f->last_n, f->last_pid,
                        gens[f->last_gen]);
            f->breaks++;
            st.breaks++;
        }
        if (pid != f->last_pid) {
            f->pid_changes++;
            st.pid_changes++;
        }
    }
    f->answers++;
    f->last_n = n;
    f->last_pid = pid;
    f->last_gen = g;
    gen_answers[g]++;
}

static void on_answer(struct flow *f, char *buf, long long now)
{
    char gen[GEN_LEN], slot[GEN_LEN];
    unsigned long n, seq;
    struct pending *p;
    long pid;
    char *c;

    if (sscanf(buf, "pid=%ld gen=%15s slot=%15s n=%lu seq=%lu", &pid, gen, slot, &n, &seq) != 5) {
        st.bad++;
        return;
    }
    for (c = gen; *c; c++) /* it goes into the JSON as a key */
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || *c == '-'))
            *c = '?';
    p = &f->ring[seq % (unsigned long)ring_len];
    if (p->seq != seq || p->state == P_FREE) {
        st.unexpected++;
    } else if (p->state == P_EXPIRED) {
        st.late++;
    } else if (now - p->sent_ms > opt.timeout_ms) { /* not swept yet */
        expire(p);
        st.late++;
    } else {
        st.answered++;
        st.outstanding--;
    }
    if (p->seq == seq)
        p->state = P_FREE;
    check_state(f, pid, gen_index(gen), n, seq);
}

static void read_answers(struct flow *f, long long now)
{
    char buf[512];
    ssize_t n;
    int i;

    for (i = 0; i < 256; i++) { /* bounded: the others get their turn */
        n = recv(f->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) { /* ECONNREFUSED: nobody bound the port when one arrived */
            st.recv_errors++;
            continue;
        }
        buf[n] = '\0';
        on_answer(f, buf, now);
    }
}

/* ---- the loop, output, main ---------------------------------------------------- */

static int until_file_exists(void)
{
    struct stat sb;

    return opt.until_file && stat(opt.until_file, &sb) == 0;
}

static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

/* Sends until the end, then waits for the answers still due; returns the
 * elapsed seconds. */
static double run(void)
{
    long long start = now_ms(), end = start + (long long)(opt.duration * 1000), now = start;
    long long next_send = start, next_sweep = start, next_file = start, drain_end = -1, wake;
    int i, n;

    for (i = 0; i < opt.flows; i++) /* spread the flows over one interval */
        flows[i].next_send = start + (long long)i * opt.interval_ms / opt.flows;
    for (;;) {
        now = now_ms();
        if (drain_end < 0 && now >= next_file) {
            next_file = now + 50;
            if (now >= end || stop_signal || until_file_exists())
                drain_end = now + opt.timeout_ms;
        }
        if (drain_end >= 0 && (now >= drain_end || st.outstanding == 0))
            break;
        if (drain_end < 0 && now >= next_send)
            next_send = send_due(now);
        if (now >= next_sweep) {
            sweep(now, 0);
            next_sweep = now + 10;
        }
        wake = drain_end >= 0 ? drain_end : next_send < next_file ? next_send : next_file;
        wake = wake < next_sweep ? wake : next_sweep;
        n = poll(pfds, (nfds_t)opt.flows, wake > now ? (int)(wake - now) : 0);
        for (i = 0; n > 0 && i < opt.flows; i++)
            if (pfds[i].revents)
                read_answers(&flows[i], now_ms());
    }
    sweep(now, 1);
    return (double)(now_ms() - start) / 1000;
}

static void print_json(double elapsed)
{
    unsigned long long last[MAX_GENS] = {0}, broken = 0, moved = 0, changed = 0;
    int i;

    for (i = 0; i < opt.flows; i++) {
        broken += flows[i].breaks > 0;
        moved += flows[i].pid_changes > 0;
        changed += flows[i].first_gen != flows[i].last_gen;
        if (flows[i].last_gen >= 0)
            last[flows[i].last_gen]++;
    }
    printf("{\"flows\":%d,\"sent\":%llu,\"answered\":%llu,\"unanswered\":%llu,\"late\":%llu,"
           "\"state_breaks\":%llu,\"flows_broken\":%llu,\"pid_changes\":%llu,"
           "\"flows_pid_changed\":%llu,\"flows_gen_changed\":%llu,\"first_n_not_1\":%llu,",
           opt.flows, st.sent, st.answered, st.unanswered, st.late, st.breaks, broken,
           st.pid_changes, moved, changed, st.first_n_not_1);
    printf("\"bad_answers\":%llu,\"unexpected\":%llu,\"send_errors\":%llu,\"recv_errors\":%llu,"
           "\"gens\":{",
           st.bad, st.unexpected, st.send_errors, st.recv_errors);
    for (i = 0; i < ngens; i++)
        printf("%s\"%s\":%llu", i ? "," : "", gens[i], gen_answers[i]);
    printf("},\"last_gen_of_flows\":{");
    for (i = 0; i < ngens; i++)
        printf("%s\"%s\":%llu", i ? "," : "", gens[i], last[i]);
    printf("},\"elapsed_s\":%.3f}\n", elapsed);
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    double elapsed;

    parse_options(argc, argv);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    open_flows();
    elapsed = run();
    fprintf(stderr,
            "udpflows: %d flows, %.1f s: sent %llu, answered %llu, unanswered %llu (late %llu), "
            "%llu state breaks, %llu pid changes\n",
            opt.flows, elapsed, st.sent, st.answered, st.unanswered, st.late, st.breaks,
            st.pid_changes);
    if (opt.json)
        print_json(elapsed);
    close_flows();
    return 0;
}
