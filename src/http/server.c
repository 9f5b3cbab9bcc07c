/*
 * server.c - the HTTP worker's event loop: one epoll over the
 * inherited listeners, the connections, and a signalfd.
 *
 * Cost model of the hot path (keep-alive, cached small file): per request
 * one read() and one send(), plus a share of an epoll_wait(); one small
 * malloc/free pair (the request's head, from the allocator's per-thread
 * cache), no epoll_ctl, no timer syscall.
 *
 * Memory: an idle connection holds only its struct conn (a few hundred
 * bytes; checked in the unit tests); the request's head, kept input and
 * unsent output are allocated while needed and freed when it goes idle.  Level-triggered epoll,
 * EPOLLIN while a connection reads and EPOLLOUT only while output is blocked.  Responses are built
 * into one shared buffer and sent at once; only output the socket did not take, and input after a
 * request that must wait, is copied into the connection.
 *
 * States: a connection is in one of a few states (enum conn_state: reading
 * a request, keep-alive idle, drain grace, writing, sending a file,
 * lingering, closed), and a table (conn_states) gives each its timeout,
 * its epoll interest and what an event means; conn_enter() moves a
 * connection between states and is the only code that changes its epoll
 * interest or its timeout list (elsewhere a deadline is only restarted:
 * progress while sending, a fresh head timeout after each response).
 *
 * Timers: a connection waits under one of a few fixed timeouts (request
 * head, keep-alive idle, blocked send, lingering close, drain grace).  All
 * connections under one timeout expire in the order they joined it, so
 * each is a list kept sorted by appending: arming, moving and expiring are
 * O(1), and the loop's epoll_wait timeout is the earliest list head.
 */
#include "http_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE       (64 * 1024)
#define WBUF_SIZE       (4 * PS_HTTP_RESP_MAX)
#define LOG_SIZE        (64 * 1024)
#define ACCEPT_BATCH    64 /* accept4 calls per listener wakeup */
#define MAX_EVENTS      256
#define SEND_TIMEOUT_MS 30000 /* a client that reads nothing this long is dropped */
#define LINGER_MS       2000  /* reading what a client still sends after an error */
#define LINGER_MAX      (256 * 1024)
#define GRACE_MS        1000      /* a fresh connection's chance to send its request */
#define PAUSE_MS        100       /* accepting pauses this long on EMFILE/ENFILE */
#define SENDFILE_BUDGET (4 << 20) /* bytes per connection per wakeup, for fairness */
#define FREE_CONNS_MAX  256
#define CONTINUE        "HTTP/1.1 100 Continue\r\n\r\n"

enum item_kind { ITEM_LISTENER, ITEM_SIGNAL, ITEM_CONN };
enum timer_list { T_NONE = -1, T_HEADER, T_IDLE, T_SEND, T_LINGER, T_GRACE, T_COUNT };

/* Where a connection is in its life.  The state alone says which timeout
 * runs and what epoll waits for (conn_states[] below), and conn_enter() is
 * the one place that changes them.  Whether the connection closes after
 * its output (closing, linger) is a fact about the last response, not a
 * state: it decides where CS_WRITE and CS_SENDFILE lead. */
enum conn_state {
    CS_HEAD,     /* reading a request: its head, or a body to skip */
    CS_IDLE,     /* keep-alive, between requests */
    CS_GRACE,    /* draining: was idle or fresh; one more request, briefly */
    CS_WRITE,    /* response bytes the socket did not take yet (a file may follow) */
    CS_SENDFILE, /* a file body the socket did not take yet */
    CS_LINGER,   /* answered and half-closed: reading what the client still sends */
    CS_CLOSED,   /* closed; its memory is released after the event batch */
    CS_COUNT
};

/* What epoll's data.ptr points at: the first member of each watched thing. */
struct item {
    enum item_kind kind;
    int fd;
};

struct conn {
    struct item item;
    struct conn *prev, *next; /* in its timer list */
    int list;                 /* enum timer_list */
    uint64_t deadline;
    uint32_t events;      /* EPOLLIN or EPOLLOUT, as registered; 0: not in the set */
    unsigned state : 4;   /* enum conn_state */
    unsigned closing : 1; /* close when the output is out */
    unsigned linger : 1;  /* ... through a lingering close */
    unsigned served : 1;  /* has answered a request */
    unsigned nodelay : 1;
    unsigned why : 4; /* enum ps_http_close of a lingering close */
    char *in;         /* input not yet parsed (waits for output) */
    size_t in_len, in_cap;
    char *out; /* output the socket did not take yet */
    size_t out_off, out_len, out_cap;
    struct ps_http_resp body; /* a file body still to send (body.file) */
    size_t lingered;
    union { /* for the access log; other families are logged as "-" */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    struct ps_http_req req; /* small: a request's buffers are allocated
                             * while it is read, freed when idle */
};

struct list {
    struct conn *head, *tail;
};

struct server {
    const struct ps_http_server_config *cfg;
    int ep;
    struct item signal;
    struct item *listeners;
    int n_listen;
    int watching;          /* listeners are in the epoll set */
    uint64_t paused_until; /* no accepting before this (EMFILE) */
    int stop_requested, draining, reopen_requested;
    uint64_t next_watchdog; /* WATCHDOG=1 due; 0: no watchdog */
    struct list lists[T_COUNT];
    uint64_t timeout[T_COUNT];
    uint64_t now, next_tick;
    struct ps_http_ctx ctx;
    struct ps_http_counters counters, reported;
    struct conn *free_conns, *dead;
    int n_free;
    char *rbuf, *wbuf;
    char *log;
    size_t log_len, log_chunk;
    int log_cut;               /* log starts with the rest of a line partly written */
    int log_reserve;           /* a regular file: reserve space before writing */
    int log_err;               /* errno of the last failed write; 0: writing works */
    uint64_t log_dropped_said; /* counters.log_dropped when last said on stderr */
    time_t log_sec;
    char log_date[32];
};

size_t ps__http_conn_size(void)
{
    return sizeof(struct conn);
}

/* ---- time and timers ------------------------------------------------------ */

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void timer_unset(struct server *s, struct conn *c)
{
    struct list *l;

    if (c->list == T_NONE)
        return;
    l = &s->lists[c->list];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = T_NONE;
}

/* (Re)arm: the connection expires timeout[list] from now.  O(1). */
static void timer_set(struct server *s, struct conn *c, int list)
{
    struct list *l;

    timer_unset(s, c);
    if (list == T_NONE)
        return;
    l = &s->lists[list];
    c->list = list;
    c->deadline = s->now + s->timeout[list];
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* Milliseconds until the earliest deadline, at most 1000 (the tick). */
static int next_timeout(const struct server *s)
{
    uint64_t first = s->next_tick;
    int i;

    for (i = 0; i < T_COUNT; i++)
        if (s->lists[i].head && s->lists[i].head->deadline < first)
            first = s->lists[i].head->deadline;
    if (s->paused_until && s->paused_until < first)
        first = s->paused_until;
    if (s->next_watchdog && s->next_watchdog < first)
        first = s->next_watchdog;
    return first <= s->now ? 0 : (int)(first - s->now);
}

/* ---- access log (common log format) ----------------------------------------- */

/* Say on stderr, once per run of failures, how many lines it cost. */
static void log_say_dropped(struct server *s)
{
    char msg[160];

    if (s->counters.log_dropped == s->log_dropped_said || !s->cfg->warn)
        return;
    snprintf(msg, sizeof(msg), "access log: %llu lines dropped: %s",
             (unsigned long long)(s->counters.log_dropped - s->log_dropped_said),
             strerror(s->log_err ? s->log_err : ENOSPC));
    s->cfg->warn(msg);
    s->log_dropped_said = s->counters.log_dropped;
}

/*
 * Before writing to a regular file: reserve the disk space the buffer
 * needs past the file's end (fallocate, size unchanged), so that a full
 * disk refuses the whole write instead of taking half a line of it.  Other
 * workers may append to the same file meanwhile: a buffer's worth more is
 * reserved for them when there is room.  Returns 0 (go on; also when the
 * file system cannot reserve: the writes then rely on log_cut) or -errno
 * (ENOSPC, EDQUOT: write nothing now).  One fstat and one fallocate.
 */
static int log_reserve(struct server *s)
{
    int fd = s->cfg->access_log_fd;
    struct stat st;

    if (!s->log_reserve || s->log_len == 0 || fstat(fd, &st) < 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, st.st_size, (off_t)(s->log_len + LOG_SIZE)) == 0 ||
        fallocate(fd, FALLOC_FL_KEEP_SIZE, st.st_size, (off_t)s->log_len) == 0)
        return 0;
    if (errno == ENOSPC || errno == EDQUOT)
        return -errno;
    s->log_reserve = 0; /* EOPNOTSUPP, EBADF, ...: plain writes from now on */
    return 0;
}

/*
 * Write the buffered lines.  Into a pipe (several workers may share one)
 * in whole lines of at most PIPE_BUF bytes, which the kernel never
 * interleaves; into a file (O_APPEND) each write is whole anyway.  A
 * write that fails or is short (a full disk) leaves what it did not take
 * at the head of the buffer, to go first at the next flush: the rest of a
 * line half written is never followed by another line, and a line is
 * never lost in the middle.  While the buffer cannot drain, new lines are
 * dropped whole (log_request) and counted.  One write per chunk; O(bytes).
 */
static void log_flush(struct server *s)
{
    size_t off = 0;
    int r = log_reserve(s);

    if (r < 0) {
        s->log_err = -r; /* not even a part: everything stays for the next tick */
        return;
    }
    while (off < s->log_len) {
        size_t len = s->log_len - off;
        ssize_t n;
        if (len > s->log_chunk) {
            const char *nl = memrchr(s->log + off, '\n', s->log_chunk);
            len = nl ? (size_t)(nl - (s->log + off)) + 1 : s->log_chunk;
        }
        n = write(s->cfg->access_log_fd, s->log + off, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* a log that cannot be written must not stop serving: keep
             * the rest for the next tick */
            s->log_err = n < 0 ? errno : ENOSPC;
            break;
        }
        off += (size_t)n;
    }
    if (off > 0) {
        s->log_cut = s->log[off - 1] != '\n';
        memmove(s->log, s->log + off, s->log_len - off);
        s->log_len -= off;
    }
    if (s->log_len == 0) {
        log_say_dropped(s); /* the failures are over: say what they cost */
        s->log_err = 0;
    }
}

/* A line that finds no room (the writes fail): dropped whole, counted, and
 * the first of a run said at once. */
static void log_drop_line(struct server *s)
{
    char msg[160];

    if (s->counters.log_dropped++ != s->log_dropped_said || !s->cfg->warn)
        return;
    snprintf(msg, sizeof(msg), "access log: dropping lines until it can be written: %s",
             strerror(s->log_err ? s->log_err : ENOSPC));
    s->cfg->warn(msg);
}

/* At exit: what still cannot be written is lost; count its lines. */
static void log_close(struct server *s)
{
    const char *p, *end;

    if (s->cfg->access_log_fd < 0)
        return;
    log_flush(s);
    p = s->log;
    end = s->log + s->log_len;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) {
        s->counters.log_dropped++;
        p++;
    }
    s->log_len = 0;
    log_say_dropped(s);
}

/* A new log file (reopen): the rest of a line whose start went to the old
 * one would begin the new file with half a line; drop it, counted. */
static void log_drop_cut(struct server *s)
{
    const char *nl;
    size_t n;

    if (!s->log_cut || s->log_len == 0)
        return;
    nl = memchr(s->log, '\n', s->log_len);
    n = nl ? (size_t)(nl - s->log) + 1 : s->log_len;
    memmove(s->log, s->log + n, s->log_len - n);
    s->log_len -= n;
    s->log_cut = 0;
    s->counters.log_dropped++;
}

static void log_peer(const struct conn *c, char *buf, size_t cap)
{
    if (c->peer.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &c->peer.in.sin_addr, buf, (socklen_t)cap);
    else if (c->peer.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, buf, (socklen_t)cap);
    else
        snprintf(buf, cap, "-");
}

/* The target as logged: quotes, backslashes and control bytes escaped,
 * cut at 1 KiB so that one line stays bounded. */
static size_t log_target(const struct ps_http_req *req, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = req->head ? req->head->url_len : 0, i, o = 0, n = len < 1024 ? len : 1024;

    for (i = 0; i < n && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)req->head->url[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    return o;
}

static void log_request(struct server *s, const struct conn *c, const struct ps_http_resp *resp)
{
    char peer[INET6_ADDRSTRLEN], target[4200], bytes[24];
    const struct ps_http_req *req = &c->req;
    int n;

    if (s->cfg->access_log_fd < 0)
        return;
    if (s->log_sec != s->ctx.now_sec) {
        struct tm tm;
        s->log_sec = s->ctx.now_sec;
        gmtime_r(&s->log_sec, &tm);
        strftime(s->log_date, sizeof(s->log_date), "%d/%b/%Y:%H:%M:%S +0000", &tm);
    }
    /* while writes fail, the once-a-second tick retries, not every request */
    if (LOG_SIZE - s->log_len < sizeof(target) + 256 && !s->log_err)
        log_flush(s);
    log_peer(c, peer, sizeof(peer));
    log_target(req, target, sizeof(target));
    snprintf(bytes, sizeof(bytes), "%zu", resp->body_len);
    n = snprintf(s->log + s->log_len, LOG_SIZE - s->log_len,
                 "%s - - [%s] \"%s %s HTTP/%u.%u\" %d %s\n", peer, s->log_date,
                 ps__http_method_name(req), target, req->http_major, req->http_minor, resp->status,
                 resp->body_len ? bytes : "-");
    if (n > 0 && (size_t)n < LOG_SIZE - s->log_len)
        s->log_len += (size_t)n;
    else
        log_drop_line(s);
}

/* ---- connections: life and death ------------------------------------------ */

const char *const ps__http_close_names[PS_HTTP_CLOSE_COUNT] = {
    "done", "client", "timeout", "bad_request", "drain", "limit", "error",
};

/* The one way a connection ends: close now and count why.  The memory is
 * released after the event batch (release_dead), so a later event of the
 * same batch, or a caller, can still see fd -1. */
static void conn_close(struct server *s, struct conn *c, enum ps_http_close why)
{
    s->counters.closed[why]++;
    c->state = CS_CLOSED; /* its row: no timer; the close leaves the epoll set */
    timer_unset(s, c);
    ps__close(c->item.fd); /* nobody else holds it */
    c->item.fd = -1;
    ps__http_resp_done(&c->body);
    ps__http_req_release(&c->req);
    free(c->in);
    free(c->out);
    s->counters.active--;
    c->next = s->dead;
    s->dead = c;
}

static void release_dead(struct server *s)
{
    while (s->dead) {
        struct conn *c = s->dead;
        s->dead = c->next;
        if (s->n_free < FREE_CONNS_MAX) {
            c->next = s->free_conns;
            s->free_conns = c;
            s->n_free++;
        } else {
            free(c);
        }
    }
}

static struct conn *conn_new(struct server *s, int fd)
{
    struct conn *c = s->free_conns;

    if (c) {
        s->free_conns = c->next;
        s->n_free--;
    } else if (!(c = malloc(sizeof(*c)))) {
        return NULL;
    }
    memset(c, 0, offsetof(struct conn, req));
    c->item.kind = ITEM_CONN;
    c->item.fd = fd;
    c->list = T_NONE;
    c->events = 0; /* not in the epoll set yet */
    ps__http_req_init(&c->req);
    return c;
}

static int watch(struct server *s, struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = &c->item};
    int op = c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    if (c->events == events)
        return 0;
    c->events = events;
    return epoll_ctl(s->ep, op, c->item.fd, &ev);
}

static void conn_readable(struct server *s, struct conn *c);
static void conn_writable(struct server *s, struct conn *c);
static void linger_read(struct server *s, struct conn *c);

/* Each state's timeout, epoll interest, what an event means, and why the
 * connection is closed when its timeout runs out. */
static const struct conn_row {
    signed char timer; /* enum timer_list */
    uint32_t events;   /* epoll interest */
    void (*on_event)(struct server *s, struct conn *c);
    signed char expiry; /* enum ps_http_close; -1: the reason of its answer */
} conn_states[CS_COUNT] = {
    [CS_HEAD] = {T_HEADER, EPOLLIN, conn_readable, PS_HTTP_CLOSE_TIMEOUT},
    [CS_IDLE] = {T_IDLE, EPOLLIN, conn_readable, PS_HTTP_CLOSE_TIMEOUT},
    [CS_GRACE] = {T_GRACE, EPOLLIN, conn_readable, PS_HTTP_CLOSE_DRAIN},
    [CS_WRITE] = {T_SEND, EPOLLOUT, conn_writable, PS_HTTP_CLOSE_TIMEOUT},
    [CS_SENDFILE] = {T_SEND, EPOLLOUT, conn_writable, PS_HTTP_CLOSE_TIMEOUT},
    [CS_LINGER] = {T_LINGER, EPOLLIN, linger_read, -1},
    [CS_CLOSED] = {T_NONE, 0, NULL, -1},
};

/* Move to a state: its timeout and its epoll interest.  A state whose
 * timeout list differs from the current one starts a fresh deadline;
 * staying under the same list keeps it (a head arriving in pieces has
 * header_timeout in all).  No syscall when the interest is unchanged.
 * Returns -1 when the connection had to be closed (epoll_ctl failed). */
static int conn_enter(struct server *s, struct conn *c, enum conn_state st)
{
    const struct conn_row *row = &conn_states[st];

    c->state = st;
    if (c->list != row->timer)
        timer_set(s, c, row->timer);
    if (watch(s, c, row->events) < 0) {
        conn_close(s, c, PS_HTTP_CLOSE_ERROR);
        return -1;
    }
    return 0;
}

static void set_nodelay(struct conn *c)
{
    int one = 1;

    /* only once output spans several segments: one small send per
     * response never waits for Nagle, so most connections skip this */
    if (!c->nodelay)
        setsockopt(c->item.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->nodelay = 1;
}

/* Half-close, then read and drop what the client still sends, so that
 * our response is not destroyed by a reset from unread input. */
static void start_linger(struct server *s, struct conn *c)
{
    shutdown(c->item.fd, SHUT_WR);
    c->in_len = 0;
    conn_enter(s, c, CS_LINGER);
}

static void linger_read(struct server *s, struct conn *c)
{
    ssize_t n = read(c->item.fd, s->rbuf, RBUF_SIZE);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        conn_close(s, c, c->why); /* the client has read our answer */
    else if ((c->lingered += (size_t)n) > LINGER_MAX)
        conn_close(s, c, PS_HTTP_CLOSE_LIMIT);
}

/* After the last response of a connection. */
static void finish(struct server *s, struct conn *c)
{
    c->why = c->req.state == PS_HTTP_ERROR ? PS_HTTP_CLOSE_BAD_REQUEST
             : s->draining                 ? PS_HTTP_CLOSE_DRAIN
                                           : PS_HTTP_CLOSE_DONE;
    if (c->linger)
        start_linger(s, c);
    else
        conn_close(s, c, c->why);
}

/* A send that failed: the client went away, or something else broke. */
static enum ps_http_close send_failure(void)
{
    return errno == EPIPE || errno == ECONNRESET ? PS_HTTP_CLOSE_CLIENT : PS_HTTP_CLOSE_ERROR;
}

/* ---- connections: input ------------------------------------------------------ */

/* Keep unparsed input for later; data may point into c->in itself. */
static int keep_input(struct conn *c, const char *data, size_t len)
{
    if (len > c->in_cap) {
        char *p = malloc(len);
        if (!p)
            return -ENOMEM;
        memcpy(p, data, len);
        free(c->in);
        c->in = p;
        c->in_cap = len;
    } else if (len) {
        memmove(c->in, data, len);
    }
    c->in_len = len;
    return 0;
}

/* Parse and answer requests from data into s->wbuf until the input is
 * used up, the buffer is full, a file body must go first, or the
 * connection is to close.  Returns the bytes of output produced. */
static size_t produce(struct server *s, struct conn *c, const char **data, size_t *len)
{
    struct ps_http_resp resp;
    size_t used = 0, n;

    for (;;) {
        if (c->req.state == PS_HTTP_NEED_MORE) {
            if (*len == 0)
                break;
            n = ps__http_parse(&c->req, *data, *len);
            *data += n;
            *len -= n;
            if (c->req.continue_due) {
                /* after the responses before it; not when the body is here */
                c->req.continue_due = 0;
                if (c->req.state == PS_HTTP_NEED_MORE) {
                    memcpy(s->wbuf + used, CONTINUE, sizeof(CONTINUE) - 1);
                    used += sizeof(CONTINUE) - 1;
                }
            }
            if (c->req.state == PS_HTTP_NEED_MORE)
                break;
        }
        if (WBUF_SIZE - used < PS_HTTP_RESP_MAX + sizeof(CONTINUE))
            break; /* send first; this request stays parsed and ready */
        s->counters.requests++;
        /* leaving room for a 100 Continue the next request may need */
        ps__http_respond(&s->ctx, &c->req, s->wbuf + used,
                         WBUF_SIZE - used - (sizeof(CONTINUE) - 1), &resp);
        used += resp.len;
        log_request(s, c, &resp);
        c->served = 1;
        timer_unset(s, c); /* the next request gets a fresh head timeout */
        if (resp.file)
            c->body = resp;
        if (!resp.keep_alive) {
            c->closing = 1;
            c->linger = c->req.state == PS_HTTP_ERROR || *len > 0;
            *len = 0;
            break;
        }
        ps__http_req_next(&c->req);
        if (resp.file)
            break;
    }
    return used;
}

/* ---- connections: output ------------------------------------------------------ */

/* Output is blocked: wait for EPOLLOUT in st (CS_WRITE or CS_SENDFILE).
 * -1: the connection was closed. */
static int wait_writable(struct server *s, struct conn *c, enum conn_state st)
{
    set_nodelay(c);
    timer_unset(s, c); /* a fresh send deadline, whatever came before */
    return conn_enter(s, c, st);
}

/* Send the pending file range: 1 done, 0 blocked, -1 failed. */
static int send_file(struct conn *c)
{
    size_t budget = SENDFILE_BUDGET;

    set_nodelay(c);
    while (c->body.file_len > 0 && budget > 0) {
        size_t want = c->body.file_len < budget ? c->body.file_len : budget;
        ssize_t n = sendfile(c->item.fd, c->body.file->fd, &c->body.file_off, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0)
            return -1; /* the file shrank: the promised length cannot be kept */
        c->body.file_len -= (size_t)n;
        budget -= (size_t)n;
    }
    if (c->body.file_len > 0)
        return 0;
    ps__http_resp_done(&c->body);
    return 1;
}

static ssize_t send_some(struct conn *c, const char *buf, size_t len)
{
    /* MSG_MORE when a file body follows (headers and body share segments)
     * and when we close right after: close() then sends the held tail
     * together with the FIN, one segment fewer per short connection */
    int flags = MSG_NOSIGNAL | (c->body.file || c->closing ? MSG_MORE : 0);
    ssize_t n;

    do
        n = send(c->item.fd, buf, len, flags);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return 0;
    return n;
}

/* Send len bytes of buf and then any file body: 1 all sent, 0 waiting
 * for EPOLLOUT (the rest saved), -1 the connection was closed. */
static int flush(struct server *s, struct conn *c, const char *buf, size_t len)
{
    ssize_t n;
    int r;

    if (c->body.file)
        set_nodelay(c); /* now: turning it on later would push the held headers alone */
    n = len ? send_some(c, buf, len) : 0;
    if (n < 0)
        goto error;
    if ((size_t)n < len) {
        if (len - (size_t)n > c->out_cap) {
            free(c->out);
            c->out_cap = len - (size_t)n;
            if (!(c->out = malloc(c->out_cap)))
                goto error;
        }
        memcpy(c->out, buf + n, len - (size_t)n);
        c->out_off = 0;
        c->out_len = len - (size_t)n;
        return wait_writable(s, c, CS_WRITE);
    }
    if (!c->body.file)
        return 1;
    r = send_file(c);
    if (r < 0)
        goto error;
    if (r == 0)
        return wait_writable(s, c, CS_SENDFILE);
    return 1;

error:
    conn_close(s, c, send_failure());
    return -1;
}

/* Between requests a connection holds nothing but its struct conn. */
static void shed_memory(struct conn *c)
{
    if (!c->req.started)
        ps__http_req_release(&c->req);
    if (c->in_len == 0 && c->in) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Reading again: in a request, or between two. */
static void go_idle(struct server *s, struct conn *c)
{
    enum conn_state st = c->req.started || !c->served ? CS_HEAD : CS_IDLE;

    shed_memory(c);
    if (s->draining && st == CS_IDLE) {
        conn_close(s, c, PS_HTTP_CLOSE_DRAIN);
        return;
    }
    conn_enter(s, c, st);
}

/* Answer what the input holds (data, or the kept input when data is
 * NULL), send it, and repeat while kept input remains and sending does
 * not block.  The one place a connection moves between its states. */
static void serve(struct server *s, struct conn *c, const char *data, size_t len)
{
    for (;;) {
        size_t used;
        int r;

        if (!data) {
            data = c->in;
            len = c->in_len;
        }
        used = produce(s, c, &data, &len);
        if (keep_input(c, data, len) < 0) {
            conn_close(s, c, PS_HTTP_CLOSE_ERROR);
            return;
        }
        r = flush(s, c, s->wbuf, used);
        if (r <= 0)
            return;
        if (c->closing) {
            finish(s, c);
            return;
        }
        if (c->in_len == 0 && c->req.state == PS_HTTP_NEED_MORE)
            break;
        data = NULL;
    }
    go_idle(s, c);
}

static void conn_readable(struct server *s, struct conn *c)
{
    ssize_t n;

    do
        n = read(c->item.fd, s->rbuf, RBUF_SIZE);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        conn_close(s, c, PS_HTTP_CLOSE_CLIENT); /* a half-sent request is void */
        return;
    }
    serve(s, c, s->rbuf, (size_t)n);
}

/* EPOLLOUT in CS_WRITE or CS_SENDFILE: send on; when all is out, close
 * (finish) or read the next request (serve). */
static void conn_writable(struct server *s, struct conn *c)
{
    if (c->state == CS_WRITE) {
        ssize_t n = send_some(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            conn_close(s, c, send_failure());
            return;
        }
        c->out_off += (size_t)n;
        timer_set(s, c, T_SEND); /* progress re-arms the send timeout */
        if (c->out_off < c->out_len)
            return;
        c->out_off = c->out_len = c->out_cap = 0;
        free(c->out);
        c->out = NULL;
        if (c->body.file && conn_enter(s, c, CS_SENDFILE) < 0)
            return;
    }
    if (c->state == CS_SENDFILE) {
        int r = send_file(c);
        if (r < 0) {
            conn_close(s, c, send_failure());
            return;
        }
        timer_set(s, c, T_SEND);
        if (r == 0)
            return;
    }
    timer_unset(s, c);
    if (c->closing)
        finish(s, c);
    else
        serve(s, c, NULL, 0);
}

/* ---- listeners ------------------------------------------------------------------ */

static void watch_listeners(struct server *s, int on)
{
    int i;

    if (on == s->watching)
        return;
    for (i = 0; i < s->n_listen; i++) {
        /* EPOLLEXCLUSIVE: on a socket shared by several workers, wake one */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &s->listeners[i]};
        epoll_ctl(s->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s->listeners[i].fd, &ev);
    }
    s->watching = on;
}

static void accept_from(struct server *s, struct item *l)
{
    int i;

    for (i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        struct conn *c;
        int fd;

        if (s->counters.active >= (uint64_t)s->cfg->max_connections)
            return; /* the loop stops watching the listeners until one closes */
        fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                s->paused_until = s->now + PAUSE_MS; /* rather than spin on it */
            return;
        }
        c = conn_new(s, fd);
        if (!c) {
            ps__close(fd);
            continue;
        }
        memcpy(&c->peer, &peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
        s->counters.accepted++;
        s->counters.active++;
        /* CS_HEAD, not yet in the epoll set: the request has usually
         * arrived by now, and reading at once often answers and closes a
         * short connection before it ever needs an epoll_ctl; otherwise
         * (EAGAIN) conn_enter puts it in the set for its state. */
        c->state = CS_HEAD;
        timer_set(s, c, conn_states[CS_HEAD].timer);
        conn_readable(s, c);
        if (c->state != CS_CLOSED && c->events == 0)
            conn_enter(s, c, (enum conn_state)c->state);
    }
}

/* Accept while not draining, below the connection limit, and not paused. */
static void update_accepting(struct server *s)
{
    if (s->paused_until && s->now >= s->paused_until)
        s->paused_until = 0;
    watch_listeners(s, !s->draining && !s->paused_until &&
                           s->counters.active < (uint64_t)s->cfg->max_connections);
}

/* ---- drain ----------------------------------------------------------------------- */

static void close_all(struct server *s, int list)
{
    while (s->lists[list].head)
        conn_close(s, s->lists[list].head, PS_HTTP_CLOSE_DRAIN);
}

/* SIGTERM: stop accepting (close, never shutdown: the supervisor and
 * maybe other workers hold the same sockets), say so, and give idle and
 * fresh connections a moment to send their request. */
static void start_drain(struct server *s)
{
    struct conn *c, *next;
    int i;

    s->draining = 1;
    s->ctx.draining = 1;
    watch_listeners(s, 0);
    for (i = 0; i < s->n_listen; i++)
        ps__close(s->listeners[i].fd);
    s->n_listen = 0;
    ps_notify("STOPPING=1");
    /* An idle keep-alive client may be sending its next request right now:
     * closing under it would fail that request.  Answer one more (with
     * "Connection: close") within the grace period, then close. */
    while (s->lists[T_IDLE].head) /* every CS_IDLE connection */
        conn_enter(s, s->lists[T_IDLE].head, CS_GRACE);
    for (c = s->lists[T_HEADER].head; c; c = next) { /* CS_HEAD */
        next = c->next;
        if (!c->req.started)
            conn_enter(s, c, CS_GRACE);
    }
}

static void read_signals(struct server *s)
{
    struct signalfd_siginfo si;

    while (read(s->signal.fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR1)
            s->reopen_requested = 1;
        else
            s->stop_requested = 1;
    }
}

/* SIGUSR1 (logrotate; the supervisor has reopened the file first and made
 * it ours): write what is buffered to the old file, then put the file now
 * at the path on the same descriptor.  On failure the old one stays. */
static void reopen_log(struct server *s)
{
    char msg[400];
    int fd;

    s->reopen_requested = 0;
    if (s->cfg->access_log_fd < 0)
        return;
    log_flush(s);
    if (!s->cfg->access_log_path)
        return;
    fd = open(s->cfg->access_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && dup3(fd, s->cfg->access_log_fd, O_CLOEXEC) >= 0) {
        ps__close(fd);
        log_drop_cut(s);
        s->log_err = 0; /* a new file: worth trying at once */
        s->log_reserve = 1;
        return;
    }
    snprintf(msg, sizeof(msg), "STATUS=cannot reopen the access log %s: %s",
             s->cfg->access_log_path, strerror(errno));
    if (fd >= 0)
        ps__close(fd);
    ps_notify(msg);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* Why a connection whose timeout ran out is closed: its state's row says;
 * a lingering one closes for the reason of its answer, which had its
 * chance. */
static enum ps_http_close expiry_reason(const struct conn *c)
{
    int why = conn_states[c->state].expiry;

    return why < 0 ? (enum ps_http_close)c->why : (enum ps_http_close)why;
}

static void expire(struct server *s)
{
    struct conn *c;
    int i;

    for (i = 0; i < T_COUNT; i++)
        while ((c = s->lists[i].head) && c->deadline <= s->now)
            conn_close(s, c, expiry_reason(c));
}

/* "X_PORTSHARE_STATS=accepted=N requests=N active=N[ log_dropped=N]\nX_PORTSHARE_CLOSES=done=N
 * client=N ...": one datagram.  The closes are a field of their own so that
 * the stats line keeps what a supervisor with a small buffer shows. */
static void format_stats(const struct ps_http_counters *c, char *buf, size_t cap)
{
    char dropped[40] = "";
    size_t n;
    int i, k;

    /* only when there were any: the usual line stays as short as it was */
    if (c->log_dropped)
        snprintf(dropped, sizeof(dropped), " log_dropped=%llu", (unsigned long long)c->log_dropped);
    k = snprintf(buf, cap,
                 "X_PORTSHARE_STATS=accepted=%llu requests=%llu active=%llu%s\nX_PORTSHARE_CLOSES=",
                 (unsigned long long)c->accepted, (unsigned long long)c->requests,
                 (unsigned long long)c->active, dropped);
    n = k > 0 && (size_t)k < cap ? (size_t)k : cap - 1;
    for (i = 0; i < PS_HTTP_CLOSE_COUNT && n < cap - 1; i++) {
        k = snprintf(buf + n, cap - n, "%s%s=%llu", i ? " " : "", ps__http_close_names[i],
                     (unsigned long long)c->closed[i]);
        n = k > 0 && (size_t)k < cap - n ? n + (size_t)k : cap - 1;
    }
}

/* Once a second: counters to the supervisor when they changed, the log. */
static void tick(struct server *s)
{
    char msg[512];

    if (s->now < s->next_tick)
        return;
    s->next_tick = s->now + 1000;
    if (memcmp(&s->counters, &s->reported, sizeof(s->counters)) != 0) {
        format_stats(&s->counters, msg, sizeof(msg));
        ps_notify(msg);
        s->reported = s->counters;
    }
    if (s->log_len)
        log_flush(s);
}

static void dispatch(struct server *s, struct epoll_event *ev)
{
    struct item *it = ev->data.ptr;

    if (it->kind == ITEM_CONN) {
        struct conn *c = (struct conn *)it;
        /* NULL for CS_CLOSED: closed earlier in this batch */
        if (conn_states[c->state].on_event)
            conn_states[c->state].on_event(s, c);
    } else if (it->kind == ITEM_LISTENER) {
        accept_from(s, it);
    } else {
        read_signals(s);
    }
}

static int run(struct server *s)
{
    struct epoll_event events[MAX_EVENTS];

    while (!s->draining || s->counters.active > 0) {
        int i, n = epoll_wait(s->ep, events, MAX_EVENTS, next_timeout(s));
        if (n < 0 && errno != EINTR)
            return ps__neg_errno();
        s->now = monotonic_ms();
        ps__http_ctx_tick(&s->ctx, s->now);
        for (i = 0; i < n; i++)
            dispatch(s, &events[i]);
        /* after the batch: these may close connections other events name */
        if (s->stop_requested && !s->draining)
            start_drain(s);
        if (s->reopen_requested)
            reopen_log(s);
        if (s->next_watchdog && s->now >= s->next_watchdog) {
            /* from the loop itself: a loop that is stuck stops sending it */
            ps_notify("WATCHDOG=1");
            s->next_watchdog = s->now + (uint64_t)s->cfg->watchdog_ms;
        }
        expire(s);
        release_dead(s);
        update_accepting(s);
        tick(s);
    }
    return 0;
}

/* ---- setup ---------------------------------------------------------------------------- */

static int setup(struct server *s, const struct ps_http_server_config *cfg, sigset_t *mask)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->signal};
    struct stat st;
    int i, r;

    s->cfg = cfg;
    s->timeout[T_HEADER] = (uint64_t)cfg->header_timeout_ms;
    s->timeout[T_IDLE] = (uint64_t)cfg->idle_timeout_ms;
    s->timeout[T_SEND] = SEND_TIMEOUT_MS;
    s->timeout[T_LINGER] = LINGER_MS;
    s->timeout[T_GRACE] = GRACE_MS;
    s->ctx.counters = &s->counters;
    s->ctx.pid = (long)getpid();
    s->ctx.slot = cfg->slot;
    s->ctx.generation = cfg->generation;
    if (cfg->root && (r = ps__http_files_open(cfg->root, &s->ctx.files)) < 0)
        return r;
    s->rbuf = malloc(RBUF_SIZE);
    s->wbuf = malloc(WBUF_SIZE);
    s->log = malloc(LOG_SIZE);
    s->listeners = calloc((size_t)cfg->n_listen + 1, sizeof(*s->listeners));
    if (!s->rbuf || !s->wbuf || !s->log || !s->listeners)
        return -ENOMEM;
    for (i = 0; i < cfg->n_listen; i++) {
        int fl = fcntl(cfg->listen_fds[i], F_GETFL);
        /* accept4 after a wakeup must not block: another worker sharing
         * the socket may have taken the connection */
        if (fl < 0 || fcntl(cfg->listen_fds[i], F_SETFL, fl | O_NONBLOCK) < 0)
            return ps__neg_errno();
        s->listeners[i].kind = ITEM_LISTENER;
        s->listeners[i].fd = cfg->listen_fds[i];
    }
    s->n_listen = cfg->n_listen;
    s->log_chunk = LOG_SIZE;
    if (cfg->access_log_fd >= 0 && fstat(cfg->access_log_fd, &st) == 0) {
        if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
            s->log_chunk = PIPE_BUF;
        s->log_reserve = S_ISREG(st.st_mode);
    }
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    if (s->ep < 0)
        return ps__neg_errno();
    s->signal.kind = ITEM_SIGNAL;
    s->signal.fd = signalfd(-1, mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal.fd < 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, s->signal.fd, &ev) < 0)
        return ps__neg_errno();
    s->now = monotonic_ms();
    s->next_tick = s->now + 1000;
    if (cfg->watchdog_ms > 0)
        s->next_watchdog = s->now + (uint64_t)cfg->watchdog_ms;
    ps__http_ctx_tick(&s->ctx, s->now);
    update_accepting(s);
    return 0;
}

static void teardown(struct server *s)
{
    struct conn *c;
    int i;

    for (i = 0; i < T_COUNT; i++)
        close_all(s, i);
    release_dead(s);
    while ((c = s->free_conns)) {
        s->free_conns = c->next;
        free(c);
    }
    if (s->cfg->access_log_fd >= 0 && s->log)
        log_flush(s);
    for (i = 0; i < s->n_listen; i++)
        ps__close(s->listeners[i].fd);
    if (s->signal.fd >= 0)
        ps__close(s->signal.fd);
    if (s->ep >= 0)
        ps__close(s->ep);
    ps__http_files_close(s->ctx.files);
    free(s->listeners);
    free(s->rbuf);
    free(s->wbuf);
    free(s->log);
}

int ps_http_serve(const struct ps_http_server_config *cfg)
{
    struct server s;
    sigset_t mask, old;
    int r;

    if (cfg->n_listen < 1 || cfg->max_connections < 1 || cfg->header_timeout_ms < 1 ||
        cfg->idle_timeout_ms < 1)
        return -EINVAL;
    memset(&s, 0, sizeof(s));
    s.ep = s.signal.fd = -1;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, &old);
    r = setup(&s, cfg, &mask);
    if (r == 0) {
        ps_notify("READY=1");
        r = run(&s);
        log_close(&s);
        s.next_tick = s.now; /* the last counts, whenever the last tick was */
        tick(&s);
    }
    teardown(&s);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return r;
}
