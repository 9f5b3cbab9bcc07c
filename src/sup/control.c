/*
 * control.c - the control socket: `portshare status / reload / scale / stop
 * / upgrade / metrics` talk to a running supervisor through it.
 *
 * A unix stream socket, mode 0600.  Its default directory (/run/portshare,
 * $XDG_RUNTIME_DIR/portshare, /tmp/portshare-UID) must be ours, 0700 and no
 * symlink, or we refuse to start, as ssh-agent and tmux do: another user who
 * made /tmp/portshare-UID first could otherwise swap the socket.  Every
 * peer's credentials (SO_PEERCRED) are checked too: only the supervisor's
 * own uid and root may talk to it.
 *
 * Protocol: one command line from the client; the reply is "ok" or "error"
 * on the first line, then free text, then the supervisor closes the
 * connection.  A reload's or a stop's reply waits for its outcome.
 *
 * An ordinary event source of the loop, never blocking it: input is
 * line-buffered (a command may arrive in pieces), replies are queued and
 * written as the socket takes them, a client that sends no command within
 * IDLE_MS or does not read its reply within WRITE_MS is dropped, and when
 * the table is full the oldest idle client makes room, so idle connections
 * cannot lock the owner out.  EMFILE on accept pauses accepting for a while
 * instead of spinning.
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define IDLE_MS     10000 /* a command must arrive within this */
#define WRITE_MS    10000 /* a reply must be read within this */
#define PAUSE_MS    100   /* EMFILE/ENFILE: stop accepting this long */
#define LINE_MAX_IN 256

enum client_state { C_FREE, C_READING, C_WAITING, C_WRITING };

struct ps_client {
    int fd;
    unsigned serial;
    enum client_state state;
    uint64_t since;    /* connected (READING) */
    uint64_t deadline; /* READING: command due; WRITING: reply read */
    size_t inlen;
    char in[LINE_MAX_IN];
    char *out;
    size_t outlen, outoff;
    int json;         /* "COMMAND json": the outcome as one JSON object */
    char command[16]; /* its verb, for that object */
};

int ps__control_init(struct ps_sup *sup)
{
    int i;

    if (!sup->clients) {
        sup->clients = calloc(PS_SUP_MAX_CLIENTS, sizeof(*sup->clients));
        if (!sup->clients)
            return -ENOMEM;
    }
    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        free(sup->clients[i].out);
        memset(&sup->clients[i], 0, sizeof(sup->clients[i]));
        sup->clients[i].fd = -1;
    }
    return 0;
}

/* ---- the socket and its directory ----------------------------------------- */

/* A default directory must be ours alone; an explicit --control path is
 * the user's choice of place (the peer checks still apply). */
static int check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;

    if (lstat(dir, &st) < 0)
        return ps__neg_errno();
    if (S_ISLNK(st.st_mode)) {
        ps__set_error(err, errlen, "refusing control directory %s: it is a symlink", dir);
        return -EPERM;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
        ps__set_error(err, errlen,
                      "refusing control directory %s: owned by uid %lu with mode %03o; it must "
                      "be a directory of uid %lu with mode 0700 (remove it, or use --control)",
                      dir, (unsigned long)st.st_uid, (unsigned)(st.st_mode & 0777),
                      (unsigned long)geteuid());
        return -EPERM;
    }
    return 0;
}

/* mkdir -p for the socket's directory; the last one is made 0700 */
static int make_parent_dirs(const char *path, int strict, char *err, size_t errlen)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *p;
    int r;

    snprintf(dir, sizeof(dir), "%s", path);
    p = strrchr(dir, '/');
    if (!p || p == dir)
        return 0;
    *p = '\0';
    for (p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            goto error;
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        goto error;
    if (strict)
        return check_dir(dir, err, errlen);
    return 0;
error:
    r = ps__neg_errno();
    ps__set_error(err, errlen, "cannot create the directory of %s: %s", path, ps_strerror(r));
    return r;
}

int ps__control_open(struct ps_sup *sup, char *err, size_t errlen)
{
    struct ps_sup_config *cfg = sup->cfg;
    struct sockaddr_storage ss;
    int fd = -1, probe, r, strict = 0;
    socklen_t len;
    mode_t old;

    if (!cfg->control_path[0]) {
        r = ps_sup_control_path(cfg->name, cfg->control_path, sizeof(cfg->control_path));
        if (r < 0) {
            ps__set_error(err, errlen, "bad supervisor name '%s'", cfg->name);
            return r;
        }
        strict = 1;
    }
    r = ps__unix_addr(cfg->control_path, &ss, &len);
    if (r < 0) {
        ps__set_error(err, errlen, "bad control socket path '%s'", cfg->control_path);
        return r;
    }
    r = make_parent_dirs(cfg->control_path, strict, err, errlen);
    if (r < 0)
        return r;
    /* a live supervisor already there keeps it; a dead one's socket is stale */
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&ss, len) == 0) {
        ps__close(probe);
        ps__set_error(err, errlen,
                      "another supervisor is running with control socket %s (use --name or "
                      "--control to run a second one)",
                      cfg->control_path);
        return -EADDRINUSE;
    }
    ps__close(probe);
    if (cfg->control_path[0] == '/')
        unlink(cfg->control_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto error;
    old = umask(0177); /* born 0600: no window where others could connect */
    r = bind(fd, (struct sockaddr *)&ss, len);
    umask(old);
    if (r < 0 || listen(fd, 64) < 0)
        goto error;
    sup->control_fd = fd;
    return 0;

error:
    r = ps__neg_errno();
    ps__close(fd);
    ps__set_error(err, errlen, "cannot open control socket %s: %s", cfg->control_path,
                  ps_strerror(r));
    return r;
}

static void client_close(struct ps_client *c)
{
    ps__close(c->fd);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

void ps__control_close(struct ps_sup *sup)
{
    int i;

    for (i = 0; sup->clients && i < PS_SUP_MAX_CLIENTS; i++)
        if (sup->clients[i].state != C_FREE)
            client_close(&sup->clients[i]);
    if (sup->control_fd >= 0) {
        ps__close(sup->control_fd);
        sup->control_fd = -1;
        if (sup->cfg->control_path[0] == '/')
            unlink(sup->cfg->control_path);
    }
}

/* ---- replies -------------------------------------------------------------------- */

static void client_write(struct ps_client *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            break; /* the client went away: its loss */
        c->outoff += (size_t)n;
    }
    client_close(c);
}

static void client_reply(struct ps_client *c, int ok, const char *body, size_t len)
{
    const char *head = ok ? "ok\n" : "error\n";
    size_t hl = strlen(head), nl = len && body[len - 1] != '\n';

    free(c->out);
    c->out = malloc(hl + len + nl);
    if (!c->out) {
        client_close(c);
        return;
    }
    memcpy(c->out, head, hl);
    memcpy(c->out + hl, body, len);
    if (nl)
        c->out[hl + len] = '\n';
    c->outlen = hl + len + nl;
    c->outoff = 0;
    c->state = C_WRITING;
    c->deadline = ps__now_ms() + WRITE_MS;
    client_write(c);
}

static struct ps_client *waiter_client(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_client *c;

    if (!w || w->client < 0 || w->client >= PS_SUP_MAX_CLIENTS)
        return NULL;
    c = &sup->clients[w->client];
    return c->state == C_WAITING && c->serial == w->serial ? c : NULL;
}

/* An operation's outcome: the body as it is, or for a client that asked
 * with "json" one object {"ok","command","generation","workers","message"}
 * (generation and workers as they are when the outcome is known). */
static void reply(struct ps_sup *sup, struct ps_client *c, int ok, const char *body)
{
    struct ps_buf b = {0};

    if (!c->json) {
        client_reply(c, ok, body, strlen(body));
        return;
    }
    ps__buf_printf(&b, "{\"ok\":%s,\"command\":", ok ? "true" : "false");
    ps__buf_json_string(&b, c->command);
    ps__buf_printf(&b,
                   ",\"generation\":%u,\"workers\":%d,\"pid\":%ld,\"message\":", sup->generation,
                   sup->target, (long)getpid());
    ps__buf_json_string(&b, body);
    ps__buf_printf(&b, "}\n");
    if (b.failed)
        client_reply(c, 0, "out of memory", 13);
    else
        client_reply(c, ok, b.data, b.len);
    ps__buf_free(&b);
}

void ps__control_answer(struct ps_sup *sup, const struct ps_waiter *w, int ok, const char *body)
{
    struct ps_client *c = waiter_client(sup, w);

    if (c)
        reply(sup, c, ok, body);
}

int ps__control_client_json(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_client *c = waiter_client(sup, w);

    return c ? c->json : 0;
}

int ps__control_client_fd(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_client *c = waiter_client(sup, w);

    return c ? c->fd : -1;
}

static int free_client(struct ps_sup *sup, uint64_t now)
{
    int i, oldest = -1;

    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
        if (sup->clients[i].state == C_FREE)
            return i;
    /* full: the client idle longest without a command makes room */
    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
        if (sup->clients[i].state == C_READING &&
            (oldest < 0 || sup->clients[i].since < sup->clients[oldest].since))
            oldest = i;
    if (oldest < 0 || now - sup->clients[oldest].since < 100)
        return -1;
    client_close(&sup->clients[oldest]);
    return oldest;
}

static int client_add(struct ps_sup *sup, int fd, enum client_state st, uint64_t now)
{
    int i = free_client(sup, now);
    struct ps_client *c;

    if (i < 0)
        return -1;
    c = &sup->clients[i];
    c->fd = fd;
    c->serial = ++sup->client_serials;
    c->state = st;
    c->since = now;
    c->deadline = now + IDLE_MS;
    return i;
}

struct ps_waiter ps__control_adopt(struct ps_sup *sup, int fd, int json, const char *command)
{
    struct ps_waiter w = {-1, 0};
    int i = client_add(sup, fd, C_WAITING, ps__now_ms());

    if (i < 0) {
        ps__close(fd);
        return w;
    }
    sup->clients[i].json = json;
    snprintf(sup->clients[i].command, sizeof(sup->clients[i].command), "%s", command);
    w.client = i;
    w.serial = sup->clients[i].serial;
    return w;
}

void ps__control_refuse_unread(struct ps_sup *sup, const char *why)
{
    char buf[LINE_MAX_IN];
    int i;

    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        struct ps_client *c = &sup->clients[i];
        if (c->state != C_READING)
            continue;
        /* read what it sent: a socket closed on unread bytes resets its
         * peer, and the client would see no answer at all */
        while (recv(c->fd, buf, sizeof(buf), 0) > 0)
            ;
        client_reply(c, 0, why, strlen(why));
    }
}

void ps__control_flush(struct ps_sup *sup, unsigned timeout_ms)
{
    uint64_t end = ps__now_ms() + timeout_ms;
    int i, busy;

    do {
        busy = 0;
        for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
            if (sup->clients[i].state == C_WRITING) {
                struct pollfd p = {.fd = sup->clients[i].fd, .events = POLLOUT};
                if (poll(&p, 1, 10) > 0)
                    client_write(&sup->clients[i]);
                busy |= sup->clients[i].state == C_WRITING;
            }
    } while (busy && ps__now_ms() < end);
}

/* ---- commands ------------------------------------------------------------------ */

/* Only the supervisor's owner and root may command it.  Checked once the
 * command has arrived, so that the refusal is read by the client instead of
 * being lost to a reset. */
static int peer_allowed(struct ps_sup *sup, struct ps_client *c)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    static const char no[] = "permission denied: only the supervisor's owner or root";

    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        (cred.uid == 0 || cred.uid == geteuid()))
        return 1;
    ps__sup_log(sup, PS_LOG_WARN, "control_refused",
                "refused a control connection from uid %lu (pid %ld)", (unsigned long)cred.uid,
                (long)cred.pid);
    client_reply(c, 0, no, strlen(no));
    return 0;
}

static void reply_status(struct ps_client *c, struct ps_sup *sup, int json)
{
    struct ps_buf b = {0};

    if (json)
        ps__status_json(sup, &b);
    else
        ps__status_text(sup, &b);
    if (b.failed)
        client_reply(c, 0, "out of memory", 13);
    else
        client_reply(c, 1, b.data ? b.data : "", b.len);
    ps__buf_free(&b);
}

static void reply_metrics(struct ps_client *c, struct ps_sup *sup)
{
    struct ps_buf b = {0};

    ps__metrics_text(sup, &b);
    if (b.failed)
        client_reply(c, 0, "out of memory", 13);
    else
        client_reply(c, 1, b.data ? b.data : "", b.len);
    ps__buf_free(&b);
}

static void run_command(struct ps_sup *sup, int idx, char *line)
{
    struct ps_client *c = &sup->clients[idx];
    struct ps_waiter w = {idx, c->serial};
    char err[256];
    size_t len;
    long n;

    c->state = C_WAITING; /* for ps__control_answer; replaced by any reply */
    if (!strcmp(line, "status") || !strcmp(line, "status json")) {
        reply_status(c, sup, line[6] != '\0');
        return;
    }
    /* "reload json", "scale 4 json"...: the outcome as JSON */
    len = strlen(line);
    c->json = len > 5 && !strcmp(line + len - 5, " json");
    if (c->json)
        line[len - 5] = '\0';
    snprintf(c->command, sizeof(c->command), "%.*s", (int)strcspn(line, " "), line);
    if (!strcmp(line, "reload")) {
        if (ps__op_request(sup, OP_RELOAD, 0, &w, err, sizeof(err)) < 0)
            reply(sup, c, 0, err);
    } else if (!strncmp(line, "scale ", 6)) {
        if (ps__parse_long(line + 6, 1, PS_SUP_MAX_WORKERS, &n) < 0) {
            snprintf(err, sizeof(err), "bad worker count '%.32s' (1-%d)", line + 6,
                     PS_SUP_MAX_WORKERS);
            reply(sup, c, 0, err);
        } else if (ps__op_request(sup, OP_SCALE, (int)n, &w, err, sizeof(err)) < 0) {
            reply(sup, c, 0, err);
        }
    } else if (!strcmp(line, "stop")) {
        ps__op_stop(sup, &w);
    } else if (!strncmp(line, "stop lameduck ", 14)) {
        if (ps__parse_long(line + 14, 0, 24L * 3600 * 1000, &n) < 0) {
            snprintf(err, sizeof(err), "bad lame duck time '%.32s' (milliseconds)", line + 14);
            reply(sup, c, 0, err);
        } else {
            ps__op_lameduck(sup, (unsigned)n, &w);
        }
    } else if (!strcmp(line, "metrics")) {
        reply_metrics(c, sup);
    } else if (!strcmp(line, "upgrade")) {
        if (ps__op_request(sup, OP_UPGRADE, 0, &w, err, sizeof(err)) < 0)
            reply(sup, c, 0, err);
    } else {
        snprintf(err, sizeof(err), "unknown command '%.64s'", line);
        reply(sup, c, 0, err);
    }
}

static void client_read(struct ps_sup *sup, int idx)
{
    struct ps_client *c = &sup->clients[idx];
    char *nl, buf[LINE_MAX_IN];
    ssize_t n;

    for (;;) {
        if (c->state == C_READING)
            n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen, 0);
        else
            n = recv(c->fd, buf, sizeof(buf), 0); /* waiting: nothing more expected */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            client_close(c); /* gone; an answer owed to it is dropped */
            return;
        }
        if (c->state != C_READING)
            continue;
        c->inlen += (size_t)n;
        c->in[c->inlen] = '\0';
        nl = strchr(c->in, '\n');
        if (!nl && c->inlen == sizeof(c->in) - 1) {
            if (peer_allowed(sup, c))
                client_reply(c, 0, "command line too long", 21);
            return;
        }
        if (!nl)
            continue;
        *nl = '\0';
        if (nl > c->in && nl[-1] == '\r')
            nl[-1] = '\0';
        if (peer_allowed(sup, c))
            run_command(sup, idx, c->in);
        return;
    }
}

static void accept_clients(struct ps_sup *sup, uint64_t now)
{
    int fd;

    for (;;) {
        fd = accept4(sup->control_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the connection stays queued: poll would wake us at once */
                if (!sup->control_paused_until)
                    ps__sup_log(sup, PS_LOG_WARN, "control_paused",
                                "cannot accept control connections: %s; pausing %d ms",
                                strerror(errno), PAUSE_MS);
                sup->control_paused_until = now + PAUSE_MS;
            }
            return;
        }
        if (client_add(sup, fd, C_READING, now) < 0) {
            static const char busy[] = "error\nbusy: too many control connections\n";
            if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* it only loses its own answer */
            }
            ps__close(fd);
        }
    }
}

/* ---- the loop's side ------------------------------------------------------------- */

int ps__control_poll_fill(struct ps_sup *sup, struct pollfd *pfd, uint64_t now)
{
    int i, n = 0;

    if (sup->control_paused_until && now >= sup->control_paused_until)
        sup->control_paused_until = 0;
    pfd[n++] =
        (struct pollfd){.fd = sup->control_paused_until ? -1 : sup->control_fd, .events = POLLIN};
    /* only the clients there are: poll(2) refuses (EINVAL) more entries
     * than RLIMIT_NOFILE, and with a limit below the table's size the loop
     * would end at once */
    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        const struct ps_client *c = &sup->clients[i];
        if (c->state != C_FREE)
            pfd[n++] =
                (struct pollfd){.fd = c->fd, .events = c->state == C_WRITING ? POLLOUT : POLLIN};
    }
    return n;
}

/* The index of the client polled as pfd (by its descriptor: entries are
 * only the clients there are), or -1 when it is gone meanwhile. */
static int polled_client(struct ps_sup *sup, const struct pollfd *pfd)
{
    int i;

    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
        if (sup->clients[i].state != C_FREE && sup->clients[i].fd == pfd->fd)
            return i;
    return -1;
}

void ps__control_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n, uint64_t now)
{
    int i, k;

    if (n > 0 && pfd[0].revents && pfd[0].fd >= 0)
        accept_clients(sup, now);
    for (k = 1; k < n; k++) {
        if (!pfd[k].revents || (i = polled_client(sup, &pfd[k])) < 0)
            continue;
        if (sup->clients[i].state == C_WRITING)
            client_write(&sup->clients[i]);
        else
            client_read(sup, i);
    }
    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        struct ps_client *c = &sup->clients[i];
        if ((c->state == C_READING || c->state == C_WRITING) && now >= c->deadline)
            client_close(c); /* idle, or not reading its reply */
    }
}

uint64_t ps__control_next_deadline(const struct ps_sup *sup)
{
    uint64_t next = sup->control_paused_until ? sup->control_paused_until : UINT64_MAX;
    int i;

    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        const struct ps_client *c = &sup->clients[i];
        if ((c->state == C_READING || c->state == C_WRITING) && c->deadline < next)
            next = c->deadline;
    }
    return next;
}
