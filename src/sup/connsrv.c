/*
 * connsrv.c - one connection server for the supervisor's own listeners:
 * the control socket, --metrics (/metrics, /healthz) and --agent.  What
 * each speaks is a struct ps_conn_proto (control.c, endpoint.c); what they
 * share is here (docs/design/connection-server.md):
 *
 *   - the states of a connection, one table (what poll waits for, whether
 *     it may make room for a new one, which states may follow);
 *   - one deadline scheme: every state has a fixed timeout per listener,
 *     so a list per listener and state kept in arrival order is in
 *     deadline order too; the nearest deadline is a look at the heads
 *     (O(listeners x states)), whatever the number of connections;
 *   - a full table makes room: the oldest answered connection still
 *     lingering goes first, then the oldest one still sending its request
 *     (once it has had EVICT_MIN_MS to send it), so idle connections
 *     cannot lock a scraper or the owner out; a table full of connections
 *     none of which may go waits (or says "busy", for the control socket);
 *   - one EMFILE pause: out of descriptors, no listener accepts for
 *     PAUSE_MS instead of spinning on what stays queued;
 *   - one close, with a reason, counted per listener;
 *   - only descriptors in use are polled: poll(2) refuses more entries
 *     than RLIMIT_NOFILE.
 *
 * Nothing here blocks, except ps__conns_flush (before an exec or an exit).
 */
#include "sup_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PAUSE_MS     100 /* EMFILE/ENFILE: no accept for this long */
#define EVICT_MIN_MS 10  /* a new connection has this long to send its request */
#define ACCEPT_MAX   256 /* accepts per wakeup and listener: others get their turn */
#define READ_MAX     64  /* reads per wakeup and connection, of IN_CHUNK each */
#define IN_CHUNK     4096

const char *const ps__conn_close_names[PS_CONN_CLOSE_COUNT] = {
    "done", "client", "timeout", "bad_request", "refused", "busy", "evicted", "shutdown", "error",
};

/* The state table.  evict: 2 may go first to make room (already answered),
 * 1 may go once EVICT_MIN_MS old (still sending its request), 0 never.
 * next: the states that may follow (a bit per state). */
#define BIT(s) (1u << (s))
static const struct state_row {
    const char *name;
    short events;
    unsigned char evict;
    unsigned next;
} states[CS_COUNT] = {
    [CS_FREE] = {"free", 0, 0, BIT(CS_READING) | BIT(CS_WAITING)},
    [CS_READING] = {"reading", POLLIN, 1, BIT(CS_WAITING) | BIT(CS_WRITING) | BIT(CS_FREE)},
    [CS_WAITING] = {"waiting", POLLIN, 0, BIT(CS_WRITING) | BIT(CS_FREE)},
    [CS_WRITING] = {"writing", POLLOUT, 0, BIT(CS_LINGER) | BIT(CS_FREE)},
    [CS_LINGER] = {"linger", POLLIN, 2, BIT(CS_FREE)},
};

struct listener {
    const struct ps_conn_proto *proto; /* NULL: not taken */
    int first, cap, used;              /* its range of the table */
    int head[CS_COUNT], tail[CS_COUNT];
    uint64_t closed[PS_CONN_CLOSE_COUNT];
};

/* What a poll set's entry k is: a connection's index and serial, or
 * -1 - listener. */
struct polled {
    int what[PS_CONN_POLL_MAX];
    unsigned serial[PS_CONN_POLL_MAX];
};

struct ps_conns {
    struct ps_conn conn[PS_CONN_MAX];
    struct listener ls[PS_LS_COUNT];
    uint64_t paused_until; /* EMFILE: nothing is accepted until then */
    int pause_said;
    unsigned serials;
    struct polled loop, flush; /* the loop's poll set, and the flush's */
};

static const int ls_first[PS_LS_COUNT] = {0, PS_SUP_MAX_CLIENTS,
                                          PS_SUP_MAX_CLIENTS + PS_EP_MAX_CONNS};
static const int ls_cap[PS_LS_COUNT] = {PS_SUP_MAX_CLIENTS, PS_EP_MAX_CONNS, PS_EP_MAX_CONNS};

static int ls_fd(const struct ps_sup *sup, int k)
{
    return k == PS_LS_CONTROL   ? sup->control_fd
           : k == PS_LS_METRICS ? sup->metrics_fd
                                : sup->agent_fd;
}

static struct listener *ls_of(struct ps_sup *sup, const struct ps_conn *c)
{
    return &sup->conns->ls[c->listener];
}

/* ---- the lists: one per listener and state, in deadline order --------------- */

static void list_remove(struct ps_sup *sup, struct ps_conn *c)
{
    struct listener *l = ls_of(sup, c);
    struct ps_conn *t = sup->conns->conn;

    if (c->prev >= 0)
        t[c->prev].next = c->next;
    else
        l->head[c->state] = c->next;
    if (c->next >= 0)
        t[c->next].prev = c->prev;
    else
        l->tail[c->state] = c->prev;
    c->prev = c->next = -1;
}

static void list_append(struct ps_sup *sup, struct ps_conn *c)
{
    struct listener *l = ls_of(sup, c);
    int i = (int)(c - sup->conns->conn);

    c->prev = l->tail[c->state];
    c->next = -1;
    if (c->prev >= 0)
        sup->conns->conn[c->prev].next = i;
    else
        l->head[c->state] = i;
    l->tail[c->state] = i;
}

/* Move c to state st, its deadline that state's timeout from now.  Moves
 * the table does not allow are refused (a bug; c is closed). */
static void conn_set(struct ps_sup *sup, struct ps_conn *c, enum ps_conn_state st, uint64_t now)
{
    unsigned t = ls_of(sup, c)->proto->timeout_ms[st];

    if (!(states[c->state].next & BIT(st))) {
        ps__sup_log(sup, PS_LOG_ERROR, "conn_state", "%s connection: no move from %s to %s",
                    ls_of(sup, c)->proto->name, states[c->state].name, states[st].name);
        ps__conn_close(sup, c, PS_CONN_ERROR);
        return;
    }
    if (c->state != CS_FREE)
        list_remove(sup, c);
    c->state = st;
    c->deadline = t ? now + t : UINT64_MAX;
    list_append(sup, c);
}

void ps__conn_close(struct ps_sup *sup, struct ps_conn *c, enum ps_conn_close why)
{
    struct listener *l = ls_of(sup, c);

    if (c->state == CS_FREE)
        return;
    l->closed[why]++;
    l->used--;
    list_remove(sup, c);
    ps__close(c->fd);
    free(c->out);
    if (l->proto->release)
        l->proto->release(c);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->prev = c->next = -1;
    c->listener = (unsigned char)(l - sup->conns->ls);
}

int ps__conns_init(struct ps_sup *sup, enum ps_conn_listener k, const struct ps_conn_proto *proto)
{
    struct listener *l;
    int i;

    if (!sup->conns) {
        sup->conns = calloc(1, sizeof(*sup->conns));
        if (!sup->conns)
            return -ENOMEM;
        for (i = 0; i < PS_CONN_MAX; i++)
            sup->conns->conn[i].fd = -1;
    }
    l = &sup->conns->ls[k];
    if (l->proto)
        ps__conns_close_listener(sup, k);
    memset(l, 0, sizeof(*l));
    l->proto = proto;
    l->first = ls_first[k];
    l->cap = ls_cap[k];
    for (i = 0; i < CS_COUNT; i++)
        l->head[i] = l->tail[i] = -1;
    for (i = l->first; i < l->first + l->cap; i++) {
        struct ps_conn *c = &sup->conns->conn[i];
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        c->prev = c->next = -1;
        c->listener = (unsigned char)k;
    }
    return 0;
}

void ps__conns_close_listener(struct ps_sup *sup, enum ps_conn_listener k)
{
    struct listener *l;
    int i;

    if (!sup->conns || !sup->conns->ls[k].proto)
        return;
    l = &sup->conns->ls[k];
    for (i = l->first; i < l->first + l->cap; i++)
        ps__conn_close(sup, &sup->conns->conn[i], PS_CONN_SHUTDOWN);
}

/* ---- writing ---------------------------------------------------------------- */

static void conn_write(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            ps__conn_close(sup, c, PS_CONN_CLIENT); /* gone before reading it all */
            return;
        }
        c->outoff += (size_t)n;
    }
    /* all written: our side is done; reading until the peer's EOF means a
     * close that never resets the connection under an unread answer */
    shutdown(c->fd, SHUT_WR);
    free(c->out);
    c->out = NULL;
    conn_set(sup, c, CS_LINGER, now);
}

void ps__conn_answer(struct ps_sup *sup, struct ps_conn *c, char *out, size_t len,
                     enum ps_conn_close why, uint64_t now)
{
    if (!out) {
        ps__conn_close(sup, c, PS_CONN_ERROR);
        return;
    }
    free(c->out);
    c->out = out;
    c->outlen = len;
    c->outoff = 0;
    c->why = (unsigned char)why;
    conn_set(sup, c, CS_WRITING, now);
    if (c->state == CS_WRITING)
        conn_write(sup, c, now);
}

void ps__conn_wait(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    conn_set(sup, c, CS_WAITING, now);
}

/* ---- reading ------------------------------------------------------------------ */

/* The peer's EOF or error, by state: before its answer it gave up; after
 * it, the answer was read (the reason set with the answer). */
static void conn_gone(struct ps_sup *sup, struct ps_conn *c)
{
    ps__conn_close(sup, c, c->state == CS_LINGER ? (enum ps_conn_close)c->why : PS_CONN_CLIENT);
}

/* Read what c has: its request (to the protocol) while reading, else
 * nothing we expect (a body, agent-send, pipelining): dropped. */
static void conn_read(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    const struct ps_conn_proto *p = ls_of(sup, c)->proto;
    char buf[IN_CHUNK];
    unsigned serial = c->serial;
    int i;

    for (i = 0; i < READ_MAX; i++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_gone(sup, c);
            return;
        }
        if (c->state == CS_READING)
            p->input(sup, c, buf, (size_t)n, now);
        if (c->state == CS_FREE || c->serial != serial || c->state == CS_WRITING)
            return; /* closed, or still writing its answer */
    }
}

/* ---- accepting ------------------------------------------------------------------ */

/* The connection that makes room in a full table: the oldest lingering
 * one, else the oldest still reading; -1 when none may go.  *wait gets
 * when the reading one may go, when it is not old enough yet. */
static int evictable(const struct ps_conns *cs, const struct listener *l, uint64_t now,
                     uint64_t *wait)
{
    const struct ps_conn *c;

    *wait = 0;
    if (l->head[CS_LINGER] >= 0)
        return l->head[CS_LINGER];
    if (l->head[CS_READING] < 0)
        return -1;
    c = &cs->conn[l->head[CS_READING]];
    if (now < c->since + EVICT_MIN_MS) {
        *wait = c->since + EVICT_MIN_MS;
        return -1;
    }
    return l->head[CS_READING];
}

static struct ps_conn *free_entry(struct ps_sup *sup, struct listener *l)
{
    int i;

    for (i = l->first; i < l->first + l->cap; i++)
        if (sup->conns->conn[i].state == CS_FREE)
            return &sup->conns->conn[i];
    return NULL;
}

/* Room for one more connection of l: ROOM_FREE, ROOM_EVICT (once one is
 * accepted: make_room), ROOM_WAIT (it waits in the backlog), or ROOM_BUSY
 * (full of connections none of which may go). */
enum room { ROOM_WAIT, ROOM_FREE, ROOM_EVICT, ROOM_BUSY };

static enum room room_for(const struct ps_conns *cs, const struct listener *l, uint64_t now)
{
    uint64_t wait;

    if (l->used < l->cap)
        return ROOM_FREE;
    if (evictable(cs, l, now, &wait) >= 0)
        return ROOM_EVICT;
    return wait ? ROOM_WAIT : ROOM_BUSY;
}

static void make_room(struct ps_sup *sup, struct listener *l, uint64_t now)
{
    uint64_t wait;
    int i = evictable(sup->conns, l, now, &wait);

    if (i >= 0)
        ps__conn_close(sup, &sup->conns->conn[i], PS_CONN_EVICTED);
}

static void pause_accepting(struct ps_sup *sup, struct listener *l, uint64_t now)
{
    struct ps_conns *cs = sup->conns;

    /* the connection stays queued: poll would wake us at once */
    if (!cs->pause_said)
        ps__sup_log(sup, PS_LOG_WARN, l->proto->paused_event,
                    "cannot accept %s connections: %s; pausing %d ms", l->proto->name,
                    strerror(errno), PAUSE_MS);
    cs->pause_said = 1;
    cs->paused_until = now + PAUSE_MS;
}

/* Take fd as a new connection of l in state st (room made before). */
static struct ps_conn *conn_add(struct ps_sup *sup, struct listener *l, int fd,
                                enum ps_conn_state st, uint64_t now)
{
    struct ps_conn *c = free_entry(sup, l);

    if (!c) {
        ps__close(fd);
        return NULL;
    }
    c->fd = fd;
    c->serial = ++sup->conns->serials;
    c->since = now;
    l->used++;
    conn_set(sup, c, st, now);
    return c;
}

static void refuse_busy(struct listener *l, int fd)
{
    if (send(fd, l->proto->busy, strlen(l->proto->busy), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* it only loses its own answer */
    }
    ps__close(fd);
    l->closed[PS_CONN_BUSY]++;
}

static void accept_conns(struct ps_sup *sup, int k, uint64_t now)
{
    struct listener *l = &sup->conns->ls[k];
    struct ps_conn *c;
    enum room room;
    int i, fd;

    for (i = 0; i < ACCEPT_MAX && !sup->conns->paused_until; i++) {
        room = room_for(sup->conns, l, now);
        if (room == ROOM_WAIT || (room == ROOM_BUSY && !l->proto->busy))
            return;
        fd = accept4(ls_fd(sup, k), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(sup, l, now);
            return;
        }
        if (room == ROOM_BUSY) {
            refuse_busy(l, fd);
            continue;
        }
        if (room == ROOM_EVICT) /* only now: accept4 may have found nothing */
            make_room(sup, l, now);
        c = conn_add(sup, l, fd, CS_READING, now);
        if (!c)
            continue;
        /* the agent answers at once; a request has usually arrived by now
         * (always, for one that waited in the backlog): read it at once */
        if (l->proto->accepted)
            l->proto->accepted(sup, c, now);
        if (c->state == CS_READING)
            conn_read(sup, c, now);
    }
}

struct ps_conn *ps__conns_adopt(struct ps_sup *sup, enum ps_conn_listener k, int fd, uint64_t now)
{
    struct listener *l = &sup->conns->ls[k];
    enum room room = room_for(sup->conns, l, now);

    if (room == ROOM_WAIT || room == ROOM_BUSY) {
        ps__close(fd);
        return NULL;
    }
    make_room(sup, l, now);
    return conn_add(sup, l, fd, CS_WAITING, now);
}

struct ps_conn *ps__conn_get(struct ps_sup *sup, enum ps_conn_listener k, int i, unsigned serial)
{
    struct listener *l;
    struct ps_conn *c;

    if (!sup->conns || i < 0 || i >= sup->conns->ls[k].cap)
        return NULL;
    l = &sup->conns->ls[k];
    c = &sup->conns->conn[l->first + i];
    return c->state != CS_FREE && c->serial == serial ? c : NULL;
}

int ps__conn_index(const struct ps_sup *sup, const struct ps_conn *c)
{
    return (int)(c - sup->conns->conn) - sup->conns->ls[c->listener].first;
}

/* ---- the loop's side ------------------------------------------------------------- */

/* 1 when listener k should be polled now: open, not paused, with room or
 * something to say to a newcomer. */
static int may_accept(struct ps_sup *sup, int k, uint64_t now)
{
    struct listener *l = &sup->conns->ls[k];
    enum room room;

    if (!l->proto || ls_fd(sup, k) < 0 || sup->conns->paused_until)
        return 0;
    room = room_for(sup->conns, l, now);
    return room == ROOM_FREE || room == ROOM_EVICT || (room == ROOM_BUSY && l->proto->busy);
}

static int fill(struct ps_sup *sup, struct polled *map, struct pollfd *pfd, uint64_t now,
                int listeners)
{
    struct ps_conns *cs = sup->conns;
    int i, n = 0;

    if (cs->paused_until && now >= cs->paused_until)
        cs->paused_until = 0;
    for (i = 0; listeners && i < PS_LS_COUNT; i++)
        if (may_accept(sup, i, now)) {
            map->what[n] = -1 - i;
            pfd[n++] = (struct pollfd){.fd = ls_fd(sup, i), .events = POLLIN};
        }
    for (i = 0; i < PS_CONN_MAX; i++) {
        const struct ps_conn *c = &cs->conn[i];
        if (c->state == CS_FREE)
            continue;
        map->what[n] = i;
        map->serial[n] = c->serial;
        pfd[n++] = (struct pollfd){.fd = c->fd, .events = states[c->state].events};
    }
    return n;
}

int ps__conns_poll_fill(struct ps_sup *sup, struct pollfd *pfd, uint64_t now)
{
    return sup->conns ? fill(sup, &sup->conns->loop, pfd, now, 1) : 0;
}

/* A connection's poll result: write what waits, or read. */
static void conn_event(struct ps_sup *sup, struct ps_conn *c, uint64_t now)
{
    if (c->state == CS_WRITING)
        conn_write(sup, c, now);
    else
        conn_read(sup, c, now);
}

static void expire(struct ps_sup *sup, uint64_t now)
{
    struct ps_conns *cs = sup->conns;
    int k, st;

    for (k = 0; k < PS_LS_COUNT; k++)
        for (st = CS_READING; st < CS_COUNT; st++) {
            struct listener *l = &cs->ls[k];
            while (l->head[st] >= 0 && cs->conn[l->head[st]].deadline <= now) {
                struct ps_conn *c = &cs->conn[l->head[st]];
                /* no request in time, its answer not read in time; or the
                 * answer had its chance to be read */
                ps__conn_close(sup, c,
                               st == CS_LINGER ? (enum ps_conn_close)c->why : PS_CONN_TIMEOUT);
            }
        }
}

/* The results of a poll set filled by fill(map): an entry whose
 * connection was closed (or its entry reused) meanwhile is skipped. */
static void dispatch(struct ps_sup *sup, const struct polled *map, const struct pollfd *pfd, int n,
                     uint64_t now)
{
    struct ps_conns *cs = sup->conns;
    int k;

    /* connections first: what they free, the listeners can take */
    for (k = 0; k < n; k++) {
        struct ps_conn *c;
        if (!pfd[k].revents || map->what[k] < 0)
            continue;
        c = &cs->conn[map->what[k]];
        if (c->state != CS_FREE && c->serial == map->serial[k])
            conn_event(sup, c, now);
    }
    for (k = 0; k < n; k++)
        if (pfd[k].revents && map->what[k] < 0)
            accept_conns(sup, -1 - map->what[k], now);
}

void ps__conns_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n, uint64_t now)
{
    if (!sup->conns)
        return;
    dispatch(sup, &sup->conns->loop, pfd, n, now);
    expire(sup, now);
    if (!sup->conns->paused_until)
        sup->conns->pause_said = 0;
}

uint64_t ps__conns_next_deadline(const struct ps_sup *sup)
{
    const struct ps_conns *cs = sup->conns;
    uint64_t next = UINT64_MAX, wait, now = ps__sup_now(sup);
    int k, st;

    if (!cs)
        return next;
    if (cs->paused_until)
        next = cs->paused_until;
    for (k = 0; k < PS_LS_COUNT; k++) {
        const struct listener *l = &cs->ls[k];
        for (st = CS_READING; st < CS_COUNT; st++)
            if (l->head[st] >= 0 && cs->conn[l->head[st]].deadline < next)
                next = cs->conn[l->head[st]].deadline;
        /* a full table whose oldest idle connection may go soon */
        if (l->proto && l->used == l->cap && evictable(cs, l, now, &wait) < 0 && wait &&
            wait < next)
            next = wait;
    }
    return next;
}

/* ---- before an exec, before an exit ------------------------------------------------ */

void ps__conns_last_call(struct ps_sup *sup, const char *why)
{
    uint64_t now = ps__sup_now(sup);
    int i;

    for (i = 0; sup->conns && i < PS_CONN_MAX; i++) {
        struct ps_conn *c = &sup->conns->conn[i];
        const struct ps_conn_proto *p = ls_of(sup, c)->proto;
        if (c->state == CS_READING && p && p->last_call)
            p->last_call(sup, c, why, now);
    }
}

static int writing(const struct ps_sup *sup)
{
    int i;

    for (i = 0; i < PS_CONN_MAX; i++)
        if (sup->conns->conn[i].state == CS_WRITING)
            return 1;
    return 0;
}

void ps__conns_flush(struct ps_sup *sup, unsigned timeout_ms)
{
    static struct pollfd pfd[PS_CONN_POLL_MAX];
    uint64_t now = ps__sup_now(sup), end = now + timeout_ms;
    int n, r;

    if (!sup->conns)
        return;
    while (writing(sup) && now < end) {
        n = fill(sup, &sup->conns->flush, pfd, now, 0);
        r = poll(pfd, (nfds_t)n, (int)(end - now < 50 ? end - now : 50));
        now = ps__sup_now(sup);
        if (r > 0)
            dispatch(sup, &sup->conns->flush, pfd, n, now);
    }
}

/* ---- what it did ------------------------------------------------------------------ */

void ps__conns_metrics_text(const struct ps_sup *sup, struct ps_buf *out)
{
    int k, r;

    if (!sup->conns)
        return;
    ps__buf_printf(out, "# HELP portshare_supervisor_connections_closed_total Connections to the "
                        "supervisor's control socket, --metrics and --agent closed, by reason.\n"
                        "# TYPE portshare_supervisor_connections_closed_total counter\n");
    for (k = 0; k < PS_LS_COUNT; k++) {
        const struct listener *l = &sup->conns->ls[k];
        if (!l->proto || ls_fd(sup, k) < 0)
            continue;
        for (r = 0; r < PS_CONN_CLOSE_COUNT; r++)
            ps__buf_printf(out,
                           "portshare_supervisor_connections_closed_total{server=\"%s\","
                           "reason=\"%s\"} %llu\n",
                           l->proto->name, ps__conn_close_names[r],
                           (unsigned long long)l->closed[r]);
    }
}
