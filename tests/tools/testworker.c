/*
 * testworker.c - a worker program for `portshare run` tests.
 *
 * It behaves like a real socket-activated server (it receives its sockets
 * with ps_listen_fds(), answers HTTP/1.1 on every stream listener, echoes on
 * every datagram socket, sends READY=1, drains on SIGTERM), and it can be
 * told to misbehave so that a test can see what the supervisor does then.
 *
 *   testworker [--ready-after MS] [--never-ready] [--no-notify]
 *              [--exit-after MS CODE] [--crash-on-start] [--delay-response MS]
 *              [--ignore-term] [--dump FILE] [--status TEXT] [--defer-accept SECS]
 *              [--stopping-after MS] [--stopping-on-usr2] [--udp-state]
 *
 * --never-ready sends only STATUS= (it speaks sd_notify, so `--ready auto`
 * waits for a READY=1 that never comes); --ready-after sends STATUS= at
 * once and READY=1 after MS (auto waits for it too); --no-notify sends
 * nothing.
 *
 * HTTP: any request gets "200 OK" with headers X-Worker-Pid, X-Worker-Slot,
 * X-Worker-Generation, Content-Length, and the body
 *   "pid=<pid> slot=<PORTSHARE_SLOT> gen=<PORTSHARE_GENERATION>
 *    fds=<LISTEN_FDS> names=<LISTEN_FDNAMES>\n"
 * ("-" for a variable that was not set).  Keep-alive as HTTP/1.1 says, and
 * pipelined requests are answered in order.  Datagrams come back prefixed
 * with "pid=<pid> ".
 *
 * SIGTERM (and SIGINT): send STOPPING=1, close() every listener copy (never
 * shutdown(): on a shared socket that would stop it for every worker and
 * reset its queue), finish the requests in flight with "Connection: close",
 * close idle keep-alive connections (after reading a request that may
 * already wait in one), answer connections accepted but not yet read from,
 * exit 0.  Connections still queued in the listeners stay there for the
 * next worker of the slot.  Listeners are set O_NONBLOCK, which is shared
 * with every holder of the same file description (the supervisor too).
 *
 * --stopping-after MS sends STOPPING=1 MS after start (after READY=1 when
 * both are due at once) and --stopping-on-usr2 on SIGUSR2: either way it
 * keeps running and accepting as before, as a worker that announces it is
 * leaving but has not stopped yet.
 *
 * --udp-state makes every datagram socket a stateful UDP server, as QUIC,
 * WireGuard or a game server is: the process counts the datagrams it has
 * seen per peer (address and port, IPv4 or IPv6, per socket) and answers
 * each datagram "SEQ" from the same socket with one line
 *   "pid=<pid> gen=<PORTSHARE_GENERATION> slot=<PORTSHARE_SLOT> n=<N> seq=<SEQ>\n"
 * where N counts this one (1 for the first datagram this process has seen
 * from that peer) and SEQ is the datagram's first line, at most 64 bytes.
 * A peer answered by a process that never saw it before gets n=1 again:
 * that is how a client tells that its flow lost its state.  The table holds
 * 65536 peers (open addressing, about 2 MiB); when it is full a new peer
 * is answered with n=0 and stderr says so once.  SIGTERM (and SIGINT) then
 * means exit 0 at once, without STOPPING=1: what almost every UDP server
 * does, and what loses the state of the flows it held.  Stream listeners
 * are served as without the option until then.
 *
 * --defer-accept SECS sets TCP_DEFER_ACCEPT on the stream listeners (the
 * socket, shared with the supervisor): a connection stays in its handshake
 * until the client's first data arrives.
 *
 * Exit codes: 0 after a drain, 1 for --crash-on-start, 2 bad options,
 * 3 a bad environment (no or wrong descriptors, dump not writable),
 * CODE for --exit-after.
 *
 * --dump FILE is written once at start, atomically (FILE.tmp.PID, then
 * rename), one "key=value" per line:
 *   pid=N  ppid=N  uid=N  gid=N
 *   env.NAME=VALUE   LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, PORTSHARE_SLOT,
 *                    PORTSHARE_GENERATION, NOTIFY_SOCKET as received, before
 *                    ps_listen_fds() clears the LISTEN_ ones; no line when unset
 *   fds=0 1 2 3      every descriptor open at start, ascending
 *   fd.N=TARGET      its /proc/self/fd link: "socket:[123]", "/dev/null", ...
 *   fd.N.type=stream|dgram|seqpacket|other      \
 *   fd.N.addr=tcp://127.0.0.1:8080              |  sockets only; addr is
 *   fd.N.listening=0|1                          |  getsockname() as a spec,
 *   fd.N.reuseport=0|1                          /  or "?" when it failed
 *   listen_fds=N     what ps_listen_fds() returned (a negative errno on error)
 *   listen_names=a:b the names it reported
 */
#include "portshare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static struct {
    long ready_after, exit_after, delay, defer_accept, stopping_after;
    int never_ready, no_notify, exit_code, crash, ignore_term, stopping_on_usr2, udp_state;
    const char *dump, *status;
} opt = {.exit_after = -1, .stopping_after = -1};

enum kind { K_LISTEN, K_DGRAM, K_CONN, K_SIGNAL };
enum cstate { S_READ, S_DELAY, S_WRITE };

struct item { /* what epoll hands back: the first member of each watched thing */
    enum kind kind;
    int fd;
};

struct listener {
    struct item it;
    int paused;
};

struct conn {
    struct item it;
    enum cstate state;
    unsigned events;
    int head_only, close_after;
    unsigned served; /* responses sent: only a connection that has been
                      * answered can be idle; a new one has a request coming */
    long long respond_at;
    size_t inlen, hdrlen, off, outlen;
    struct conn *prev, *next;
    char hdr[512];
    char in[8192];
};

static pid_t self;
static char slot[64] = "-", gen[64] = "-", fds_env[32] = "-";
static char *body;
static size_t body_len;
static int ep = -1;
static struct item sig_item = {K_SIGNAL, -1};
static struct listener *listeners;
static int nlisteners;
static struct conn *conns;
static int draining;
static long long ready_at = -1, exit_at = -1, resume_at = -1, stopping_at = -1;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fatal(int code, const char *fmt, const char *arg)
{
    fprintf(stderr, "testworker: fatal: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(code);
}

/* ---- options ------------------------------------------------------------------ */

static long parse_ms(const char *s, const char *name)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s ? s : "", &end, 10);
    if (!s || errno || end == s || *end || v < 0 || v > 86400000)
        fatal(2, "bad value for %s (want milliseconds)", name);
    return v;
}

static void parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {{"ready-after", required_argument, 0, 'r'},
                                             {"never-ready", no_argument, 0, 'N'},
                                             {"no-notify", no_argument, 0, 'n'},
                                             {"exit-after", required_argument, 0, 'x'},
                                             {"crash-on-start", no_argument, 0, 'c'},
                                             {"delay-response", required_argument, 0, 'd'},
                                             {"ignore-term", no_argument, 0, 'i'},
                                             {"dump", required_argument, 0, 'D'},
                                             {"status", required_argument, 0, 's'},
                                             {"defer-accept", required_argument, 0, 'A'},
                                             {"stopping-after", required_argument, 0, 'S'},
                                             {"stopping-on-usr2", no_argument, 0, 'U'},
                                             {"udp-state", no_argument, 0, 'u'},
                                             {0, 0, 0, 0}};
    int o;

    opterr = 0;
    /* "+": no permutation, so that --exit-after's second value stays next */
    while ((o = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (o) {
        case 'r':
            opt.ready_after = parse_ms(optarg, "--ready-after");
            break;
        case 'N':
            opt.never_ready = 1;
            break;
        case 'n':
            opt.no_notify = 1;
            break;
        case 'x':
            opt.exit_after = parse_ms(optarg, "--exit-after");
            opt.exit_code = (int)parse_ms(optind < argc ? argv[optind] : NULL, "--exit-after CODE");
            if (opt.exit_code > 255)
                fatal(2, "bad value for %s (want 0..255)", "--exit-after CODE");
            optind++;
            break;
        case 'c':
            opt.crash = 1;
            break;
        case 'd':
            opt.delay = parse_ms(optarg, "--delay-response");
            break;
        case 'i':
            opt.ignore_term = 1;
            break;
        case 'D':
            opt.dump = optarg;
            break;
        case 's':
            opt.status = optarg;
            break;
        case 'S':
            opt.stopping_after = parse_ms(optarg, "--stopping-after");
            break;
        case 'U':
            opt.stopping_on_usr2 = 1;
            break;
        case 'u':
            opt.udp_state = 1;
            break;
        case 'A': /* seconds, as TCP_DEFER_ACCEPT takes them */
            opt.defer_accept = parse_ms(optarg, "--defer-accept");
            break;
        default:
            fatal(2, "unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        fatal(2, "unexpected argument: %s", argv[optind]);
    if (opt.status && strchr(opt.status, '\n'))
        fatal(2, "%s must be one line", "--status");
}

/* ---- --dump ------------------------------------------------------------------- */

static void dump_socket(FILE *m, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0, v = 0;
    char addr[PS_SPEC_TEXT_MAX];
    socklen_t ol = sizeof(type);

    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ol);
    fprintf(m, "fd.%d.type=%s\n", fd,
            type == SOCK_STREAM      ? "stream"
            : type == SOCK_DGRAM     ? "dgram"
            : type == SOCK_SEQPACKET ? "seqpacket"
                                     : "other");
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        ps_sockaddr_format((struct sockaddr *)&ss, len, type, addr, sizeof(addr)) < 0)
        strcpy(addr, "?");
    fprintf(m, "fd.%d.addr=%s\n", fd, addr);
    ol = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &ol) < 0)
        v = 0;
    fprintf(m, "fd.%d.listening=%d\n", fd, !!v);
    ol = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &ol) < 0)
        v = 0;
    fprintf(m, "fd.%d.reuseport=%d\n", fd, !!v);
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Every descriptor we hold, except the one reading the directory. */
static void dump_fds(FILE *m)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int fds[4096], n = 0, i;

    if (!d)
        fatal(3, "cannot list %s", "/proc/self/fd");
    while ((e = readdir(d)) && n < (int)(sizeof(fds) / sizeof(fds[0])))
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
            fds[n++] = atoi(e->d_name);
    closedir(d);
    qsort(fds, (size_t)n, sizeof(int), cmp_int);
    fprintf(m, "fds=");
    for (i = 0; i < n; i++)
        fprintf(m, "%s%d", i ? " " : "", fds[i]);
    fprintf(m, "\n");
    for (i = 0; i < n; i++) {
        char link[64], target[512];
        struct stat st;
        ssize_t l;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fds[i]);
        l = readlink(link, target, sizeof(target) - 1);
        target[l < 0 ? 0 : l] = '\0';
        fprintf(m, "fd.%d=%s\n", fds[i], target);
        if (fstat(fds[i], &st) == 0 && S_ISSOCK(st.st_mode))
            dump_socket(m, fds[i]);
    }
}

/* The part of the dump that must be taken before anything changes. */
static void dump_begin(FILE *m)
{
    static const char *const vars[] = {"LISTEN_FDS",     "LISTEN_PID",           "LISTEN_FDNAMES",
                                       "PORTSHARE_SLOT", "PORTSHARE_GENERATION", "NOTIFY_SOCKET"};
    size_t i;

    fprintf(m, "pid=%ld\nppid=%ld\nuid=%ld\ngid=%ld\n", (long)getpid(), (long)getppid(),
            (long)getuid(), (long)getgid());
    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            fprintf(m, "env.%s=%s\n", vars[i], getenv(vars[i]));
    dump_fds(m);
}

static void dump_write(const char *path, const char *text, size_t len)
{
    char tmp[4096];
    int fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        fatal(3, "dump path too long: %s", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) < 0 || rename(tmp, path) < 0)
        fatal(3, "cannot write dump %s", path);
}

/* ---- notify -------------------------------------------------------------------- */

static void notify(const char *state)
{
    int r;

    if (opt.no_notify)
        return;
    r = ps_notify(state);
    if (r < 0)
        fprintf(stderr, "testworker: notify %s failed: %s\n", state, ps_strerror(r));
}

static void send_ready(void)
{
    char msg[1024];

    if (opt.status)
        snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", opt.status);
    else
        snprintf(msg, sizeof(msg), "READY=1");
    notify(msg);
}

/* ---- connections --------------------------------------------------------------- */

static void conn_events(struct conn *c, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    if (c->events != events && epoll_ctl(ep, EPOLL_CTL_MOD, c->it.fd, &ev) == 0)
        c->events = events;
}

static void conn_close(struct conn *c)
{
    close(c->it.fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

static void conn_new(int fd)
{
    struct conn *c = calloc(1, sizeof(*c));
    struct epoll_event ev = {.events = EPOLLIN};

    if (!c) {
        close(fd);
        return;
    }
    c->it.kind = K_CONN;
    c->it.fd = fd;
    c->events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        free(c);
        return;
    }
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
}

/* Send what is left of the response; -1 when the connection is gone. */
static int conn_write(struct conn *c)
{
    struct iovec iov[2];
    struct msghdr mh = {.msg_iov = iov};
    ssize_t n;

    while (c->off < c->outlen) {
        if (c->off < c->hdrlen) {
            iov[0] = (struct iovec){c->hdr + c->off, c->hdrlen - c->off};
            iov[1] = (struct iovec){body, c->head_only ? 0 : body_len};
            mh.msg_iovlen = 2;
        } else {
            iov[0] = (struct iovec){body + (c->off - c->hdrlen), c->outlen - c->off};
            mh.msg_iovlen = 1;
        }
        n = sendmsg(c->it.fd, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            c->state = S_WRITE;
            conn_events(c, EPOLLOUT);
            return 0;
        }
        if (n < 0) {
            conn_close(c);
            return -1;
        }
        c->off += (size_t)n;
    }
    if (c->close_after) {
        conn_close(c);
        return -1;
    }
    c->state = S_READ;
    conn_events(c, EPOLLIN);
    return 0;
}

static int conn_respond(struct conn *c)
{
    c->served++;
    c->close_after |= draining;
    c->hdrlen =
        (size_t)snprintf(c->hdr, sizeof(c->hdr),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\nX-Worker-Pid: %ld\r\n"
                         "X-Worker-Slot: %s\r\nX-Worker-Generation: %s\r\n"
                         "Connection: %s\r\n\r\n",
                         body_len, (long)self, slot, gen, c->close_after ? "close" : "keep-alive");
    c->off = 0;
    c->outlen = c->hdrlen + (c->head_only ? 0 : body_len);
    return conn_write(c);
}

/* The value of header name in the head [p, end), or NULL. */
static const char *header(const char *p, const char *end, const char *name, size_t *len)
{
    size_t nl = strlen(name);

    for (p = memmem(p, (size_t)(end - p), "\r\n", 2); p && p + 2 < end;
         p = memmem(p + 2, (size_t)(end - p - 2), "\r\n", 2)) {
        const char *line = p + 2, *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && !strncasecmp(line, name, nl) && line[nl] == ':') {
            for (line += nl + 1; line < eol && (*line == ' ' || *line == '\t'); line++)
                ;
            *len = (size_t)(eol - line);
            return line;
        }
    }
    return NULL;
}

/* Frame one request at the start of c->in; returns its length with body,
 * 0 when incomplete, -1 when it can never fit. */
static long frame_request(struct conn *c)
{
    const char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4), *v, *eol;
    size_t vl, head;
    long cl = 0;
    int http10;

    if (!end)
        return c->inlen == sizeof(c->in) ? -1 : 0;
    head = (size_t)(end + 4 - c->in);
    if ((v = header(c->in, end, "Content-Length", &vl)))
        cl = strtol(v, NULL, 10);
    if (cl < 0 || head + (size_t)cl > sizeof(c->in))
        return -1;
    if (c->inlen < head + (size_t)cl)
        return 0;
    eol = memmem(c->in, (size_t)(end + 2 - c->in), "\r\n", 2);
    http10 = eol - c->in >= 8 && !memcmp(eol - 8, "HTTP/1.0", 8);
    c->head_only = !strncmp(c->in, "HEAD ", 5);
    v = header(c->in, end, "Connection", &vl);
    if (http10)
        c->close_after = !(v && memmem(v, vl, "keep-alive", 10));
    else
        c->close_after = v && vl >= 5 && !strncasecmp(v, "close", 5);
    return (long)(head + (size_t)cl);
}

/* Answer every complete request in the buffer; -1 when the connection is gone. */
static int conn_process(struct conn *c)
{
    long len;

    while (c->state == S_READ && (len = frame_request(c)) != 0) {
        if (len < 0) {
            conn_close(c);
            return -1;
        }
        memmove(c->in, c->in + len, c->inlen - (size_t)len);
        c->inlen -= (size_t)len;
        if (opt.delay > 0) {
            c->state = S_DELAY;
            c->respond_at = now_ms() + opt.delay;
            conn_events(c, 0); /* the next request waits until this one is answered */
            return 0;
        }
        if (conn_respond(c) < 0)
            return -1;
    }
    if (draining && c->state == S_READ && c->inlen == 0 && c->served) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Returns -1 when the connection is gone. */
static int conn_event(struct conn *c, unsigned events)
{
    ssize_t n;

    if (c->state == S_WRITE)
        return conn_write(c);
    if (c->state == S_DELAY) { /* only errors are watched while delaying */
        if (!(events & (EPOLLERR | EPOLLHUP)))
            return 0;
        conn_close(c);
        return -1;
    }
    do
        n = recv(c->it.fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return 0;
    if (n <= 0) { /* the client is done, or gone */
        conn_close(c);
        return -1;
    }
    c->inlen += (size_t)n;
    return conn_process(c);
}

/* ---- listeners ------------------------------------------------------------------- */

static void pause_listeners(int pause)
{
    struct epoll_event ev = {.events = EPOLLIN};
    int i;

    for (i = 0; i < nlisteners; i++) {
        if (listeners[i].it.fd < 0 || listeners[i].it.kind != K_LISTEN)
            continue;
        ev.data.ptr = &listeners[i];
        epoll_ctl(ep, pause ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, listeners[i].it.fd, &ev);
        listeners[i].paused = pause;
    }
    resume_at = pause ? now_ms() + 100 : -1;
}

static void on_accept(struct listener *l)
{
    int i, fd;

    for (i = 0; i < 64; i++) { /* a batch, then let the others run */
        fd = accept4(l->it.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            pause_listeners(1); /* rather than spin on a full table */
        return;
    }
}

static void on_datagram(struct listener *l)
{
    static char buf[65536 + 32];
    struct sockaddr_storage peer;
    socklen_t plen;
    int prefix = snprintf(buf, 32, "pid=%ld ", (long)self), i;
    ssize_t n;

    for (i = 0; i < 64; i++) {
        plen = sizeof(peer);
        n = recvfrom(l->it.fd, buf + prefix, sizeof(buf) - (size_t)prefix, MSG_DONTWAIT,
                     (struct sockaddr *)&peer, &plen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        sendto(l->it.fd, buf, (size_t)(prefix + n), MSG_DONTWAIT | MSG_NOSIGNAL,
               (struct sockaddr *)&peer, plen);
    }
}

/* ---- --udp-state: per-peer state -------------------------------------------------- */

#ifndef UDP_FLOWS_MAX /* a power of two; a test build may shrink it to fill it */
#define UDP_FLOWS_MAX 65536
#endif

struct flow {
    unsigned char key[24]; /* socket index, family, port, address: see flow_key() */
    uint32_t count;        /* datagrams seen from that peer; 0 = free entry */
};

static struct flow *flows;
static unsigned nflows;

/* The table key of a peer of socket index sock; 0, or -1 for an address
 * family that is neither IPv4 nor IPv6. */
static int flow_key(int sock, const struct sockaddr_storage *peer, unsigned char key[24])
{
    memset(key, 0, 24);
    key[0] = (unsigned char)(sock >> 8);
    key[1] = (unsigned char)sock;
    key[2] = (unsigned char)peer->ss_family;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        memcpy(key + 4, &in->sin_port, 2);
        memcpy(key + 8, &in->sin_addr, 4);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        memcpy(key + 4, &in6->sin6_port, 2);
        memcpy(key + 8, &in6->sin6_addr, 16);
    } else {
        return -1;
    }
    return 0;
}

/* Count one more datagram from the peer; returns the new count, or 0 when
 * the peer is new and the table is full.  Linear probing, FNV-1a: O(1)
 * while the table is far from full, O(UDP_FLOWS_MAX) at worst. */
static uint32_t flow_count(const unsigned char key[24])
{
    static int full_said;
    uint32_t h = 2166136261u;
    unsigned i, probe;

    if (!flows && !(flows = calloc(UDP_FLOWS_MAX, sizeof(*flows))))
        fatal(3, "%s", "out of memory for the --udp-state table");
    for (i = 0; i < 24; i++)
        h = (h ^ key[i]) * 16777619u;
    for (probe = 0; probe < UDP_FLOWS_MAX; probe++) {
        struct flow *f = &flows[(h + probe) & (UDP_FLOWS_MAX - 1)];
        if (f->count && !memcmp(f->key, key, 24))
            return ++f->count;
        if (f->count)
            continue;
        memcpy(f->key, key, 24);
        nflows++;
        return f->count = 1;
    }
    if (!full_said++)
        fprintf(stderr, "testworker: --udp-state table full (%u peers): new peers get n=0\n",
                nflows);
    return 0;
}

/* Answer each datagram with this process's count for its peer. */
static void on_datagram_state(struct listener *l)
{
    char in[2048], out[256];
    struct sockaddr_storage peer;
    unsigned char key[24];
    socklen_t plen;
    ssize_t n;
    unsigned long count;
    int i, len, seqlen;

    for (i = 0; i < 64; i++) {
        plen = sizeof(peer);
        n = recvfrom(l->it.fd, in, sizeof(in), MSG_DONTWAIT, (struct sockaddr *)&peer, &plen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        for (seqlen = 0; seqlen < n && seqlen < 64 && in[seqlen] != '\n' && in[seqlen] != '\r';
             seqlen++)
            ;
        count = flow_key((int)(l - listeners), &peer, key) < 0 ? 0 : flow_count(key);
        len = snprintf(out, sizeof(out), "pid=%ld gen=%s slot=%s n=%lu seq=%.*s\n", (long)self, gen,
                       slot, count, seqlen, in);
        sendto(l->it.fd, out, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&peer,
               plen);
    }
}

/* Take the descriptors 3..3+n-1: each must be a stream listener or a
 * datagram socket, or the supervisor handed us something wrong. */
static void setup_listeners(int n)
{
    int i, fd;

    listeners = calloc((size_t)n, sizeof(*listeners));
    if (!listeners)
        fatal(3, "%s", "out of memory");
    for (i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listeners[i]};
        char what[32];
        fd = PS_LISTEN_FDS_START + i;
        snprintf(what, sizeof(what), "%d", fd);
        if (ps_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) == 1)
            listeners[i].it.kind = K_LISTEN;
        else if (ps_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) == 1)
            listeners[i].it.kind = K_DGRAM;
        else
            fatal(3, "fd %s is neither a listening stream socket nor a datagram socket", what);
        listeners[i].it.fd = fd;
        /* on the socket itself, which the supervisor holds too: a worker
         * may set it like any server that wants its first data with accept */
        if (opt.defer_accept && listeners[i].it.kind == K_LISTEN) {
            int secs = (int)opt.defer_accept;
            if (setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) < 0)
                fatal(3, "cannot set TCP_DEFER_ACCEPT on fd %s", what);
        }
        /* the file description is shared with the supervisor; every server
         * that multiplexes its listeners does this */
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            fatal(3, "cannot watch fd %s", what);
    }
    nlisteners = n;
}

/* SIGTERM: let go of the listeners, finish what is in flight. */
static void start_drain(void)
{
    struct conn *c, *next;
    int i;

    if (draining)
        return;
    draining = 1;
    notify("STOPPING=1");
    for (i = 0; i < nlisteners; i++) {
        /* the supervisor shares this file description, so closing our
         * descriptor would not take it out of our epoll set: do it first */
        epoll_ctl(ep, EPOLL_CTL_DEL, listeners[i].it.fd, NULL);
        close(listeners[i].it.fd);
        listeners[i].it.fd = -1;
    }
    resume_at = -1;
    for (c = conns; c; c = next) {
        next = c->next;
        /* idle keep-alive connections go; one accepted but not yet read
         * from has a request on its way and is answered first */
        if (c->state != S_READ || c->inlen != 0 || !c->served)
            continue;
        /* a next request may already sit in the socket buffer: it is in
         * flight too, so read it first (conn_process closes when idle) */
        if (conn_event(c, EPOLLIN) == 0 && c->state == S_READ && c->inlen == 0)
            conn_close(c);
    }
}

static void setup_signals(void)
{
    sigset_t set;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &sig_item};

    signal(SIGPIPE, SIG_IGN);
    /* a signal ignored by our parent stays ignored across exec: reset it */
    signal(SIGTERM, opt.ignore_term ? SIG_IGN : SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    if (opt.stopping_on_usr2)
        sigaddset(&set, SIGUSR2);
    if (!opt.ignore_term)
        sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sig_item.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_item.fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sig_item.fd, &ev) < 0)
        fatal(3, "%s", "cannot set up signalfd");
}

/* ---- the loop -------------------------------------------------------------------- */

static long long earliest(long long a, long long b)
{
    return a < 0 ? b : b < 0 || a < b ? a : b;
}

/* Fire what is due; returns the epoll_wait timeout until the next one. */
static int run_timers(void)
{
    long long now = now_ms(), next = -1;
    struct conn *c, *nc;

    if (ready_at >= 0 && now >= ready_at) {
        ready_at = -1;
        send_ready();
    }
    if (stopping_at >= 0 && now >= stopping_at && ready_at < 0) {
        stopping_at = -1;
        notify("STOPPING=1"); /* and keeps serving */
    }
    if (exit_at >= 0 && now >= exit_at)
        _exit(opt.exit_code); /* abrupt on purpose: a crash, as far as anyone can tell */
    if (resume_at >= 0 && now >= resume_at)
        pause_listeners(0);
    for (c = conns; c && opt.delay > 0; c = nc) {
        nc = c->next;
        /* answering may free c, or delay its next pipelined request */
        if (c->state == S_DELAY && now >= c->respond_at &&
            (conn_respond(c) < 0 || conn_process(c) < 0))
            continue;
        if (c->state == S_DELAY)
            next = earliest(next, c->respond_at);
    }
    next = earliest(earliest(next, ready_at), earliest(exit_at, resume_at));
    next = earliest(next, stopping_at);
    return next < 0 ? -1 : (int)(next > now ? next - now : 0);
}

static void on_signal(void)
{
    struct signalfd_siginfo si;

    while (read(sig_item.fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR2)
            notify("STOPPING=1"); /* --stopping-on-usr2: and keeps serving */
        else if (opt.udp_state)
            exit(0); /* as a UDP server does: its flows' state goes with it */
        else
            start_drain();
    }
}

static void serve(void)
{
    struct epoll_event ev[64];
    int i, n, timeout;

    for (;;) {
        timeout = run_timers(); /* may answer the last delayed request */
        if (draining && !conns)
            break;
        n = epoll_wait(ep, ev, 64, timeout);
        for (i = 0; i < n; i++) {
            struct item *it = ev[i].data.ptr;
            if (it->kind == K_SIGNAL)
                on_signal();
            else if (it->kind == K_LISTEN && it->fd >= 0)
                on_accept((struct listener *)it);
            else if (it->kind == K_DGRAM && it->fd >= 0 && opt.udp_state)
                on_datagram_state((struct listener *)it);
            else if (it->kind == K_DGRAM && it->fd >= 0)
                on_datagram((struct listener *)it);
            else if (it->kind == K_CONN)
                conn_event((struct conn *)it, ev[i].events);
        }
    }
}

/* Remember what we were given, for the response body, before it is cleared. */
static void capture_env(void)
{
    const char *s = getenv("PORTSHARE_SLOT"), *g = getenv("PORTSHARE_GENERATION"),
               *f = getenv("LISTEN_FDS"), *names = getenv("LISTEN_FDNAMES");
    size_t len;

    if (s)
        snprintf(slot, sizeof(slot), "%s", s);
    if (g)
        snprintf(gen, sizeof(gen), "%s", g);
    if (f)
        snprintf(fds_env, sizeof(fds_env), "%s", f);
    len = strlen(names ? names : "-") + 128 + sizeof(slot) + sizeof(gen) + sizeof(fds_env);
    body = malloc(len);
    if (!body)
        fatal(3, "%s", "out of memory");
    body_len = (size_t)snprintf(body, len, "pid=%ld slot=%s gen=%s fds=%s names=%s\n", (long)self,
                                slot, gen, fds_env, names ? names : "-");
}

int main(int argc, char **argv)
{
    char **names = NULL, *text = NULL;
    size_t textlen = 0;
    FILE *m = NULL;
    int n, i;

    parse_options(argc, argv);
    if (opt.crash)
        return 1;
    self = getpid();
    if (opt.dump) {
        m = open_memstream(&text, &textlen); /* memory only: opens no descriptor */
        if (!m)
            fatal(3, "%s", "out of memory");
        dump_begin(m);
    }
    capture_env();
    n = ps_listen_fds(1, &names);
    if (m) {
        fprintf(m, "listen_fds=%d\nlisten_names=", n);
        for (i = 0; names && names[i]; i++)
            fprintf(m, "%s%s", i ? ":" : "", names[i]);
        fprintf(m, "\n");
        fclose(m);
        dump_write(opt.dump, text, textlen);
        free(text);
    }
    ps_listen_names_free(names);
    if (n < 0)
        fatal(3, "bad LISTEN_FDS: %s", ps_strerror(n));
    if (n == 0)
        fatal(3, "%s", "no sockets received (LISTEN_FDS unset or LISTEN_PID not ours)");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fatal(3, "%s", "cannot create epoll");
    setup_signals();
    /* it speaks sd_notify, and says so before its listeners are in its epoll
     * set: --ready auto, seeing them there, would otherwise be right to call
     * it ready (a worker that has said nothing yet) */
    if (opt.never_ready)
        notify("STATUS=never ready (--never-ready)");
    else if (opt.ready_after > 0 && !opt.no_notify)
        notify("STATUS=starting (--ready-after)");
    setup_listeners(n);
    if (opt.exit_after >= 0)
        exit_at = now_ms() + opt.exit_after;
    if (!opt.never_ready && !opt.no_notify)
        ready_at = now_ms() + opt.ready_after;
    if (opt.stopping_after >= 0)
        stopping_at = now_ms() + opt.stopping_after;
    serve();
    free(listeners);
    free(body);
    close(sig_item.fd);
    close(ep);
    return 0;
}
