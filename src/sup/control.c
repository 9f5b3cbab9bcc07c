/*
 * control.c - the control socket: `portshare status / reload / scale / stop
 * / upgrade / metrics` talk to a running supervisor through it.
 *
 * A unix stream socket, mode 0600.  Its default directory is the first of
 * ps_sup_control_candidate's places (/run/portshare as root,
 * $XDG_RUNTIME_DIR/portshare, /tmp/portshare-UID) that can be written: a
 * read-only /run (a container's read-only root) falls back to the next,
 * and when none can, the supervisor runs without a control socket
 * (signals still work) and says so at warning.  A default directory must
 * be ours, 0700 and no symlink, or we refuse to start, as ssh-agent and
 * tmux do: another user who made /tmp/portshare-UID first could otherwise
 * swap the socket.  Every peer's credentials (SO_PEERCRED) are checked
 * too: only the supervisor's own uid and root may talk to it.
 *
 * Protocol: one command line from the client; the reply is "ok" or "error"
 * on the first line, then free text, then the supervisor closes the
 * connection.  A reload's or a stop's reply waits for its outcome.  The
 * connections are the connection server's (connsrv.c): a client that
 * sends no command within 10 s or does not read its reply within 10 s is
 * dropped, the oldest idle one makes room when the table is full.
 */
#include "sup_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LINE_MAX_IN (sizeof(((struct ps_conn *)0)->u.ctl.in))

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

/* mkdir -p for the socket's directory (the last one 0700), then with
 * strict the check that it is ours.  *made_fail: the directories could
 * not be made (a place to fall back from), as opposed to refused. */
static int make_parent_dirs(const char *path, int strict, int *made_fail, char *err, size_t errlen)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *p;
    int r;

    *made_fail = 0;
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
    return strict ? check_dir(dir, err, errlen) : 0;
error:
    r = ps__neg_errno();
    *made_fail = 1;
    ps__set_error(err, errlen, "cannot create the directory of %s: %s", path, ps_strerror(r));
    return r;
}

/* Errors of a place we cannot write, where the next default place may do. */
static int cannot_write(int r)
{
    return r == -EROFS || r == -EACCES || r == -EPERM || r == -ENOSPC || r == -ENOENT ||
           r == -ENOTDIR || r == -ENAMETOOLONG || r == -EDQUOT;
}

/* 1 when a live supervisor answers at path (a dead one's socket is stale). */
static int answers(const char *path)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, r = 0;

    if (ps__unix_addr(path, &ss, &len) < 0)
        return 0;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) == 0)
        r = 1;
    ps__close(fd);
    return r;
}

/* Bind the control socket at path.  *fallback: the place cannot be
 * written (try the next).  0 or -errno with err. */
static int open_at(struct ps_sup *sup, const char *path, int strict, int *fallback, char *err,
                   size_t errlen)
{
    struct sockaddr_storage ss;
    int fd = -1, r;
    socklen_t len;
    mode_t old;

    *fallback = 0;
    r = ps__unix_addr(path, &ss, &len);
    if (r < 0) {
        ps__set_error(err, errlen, "bad control socket path '%s'", path);
        return r;
    }
    r = make_parent_dirs(path, strict, fallback, err, errlen);
    if (r < 0) {
        *fallback = *fallback && cannot_write(r);
        return r;
    }
    if (path[0] == '/')
        unlink(path); /* a dead supervisor's (a live one was looked for first) */
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
    *fallback = cannot_write(r);
    ps__set_error(err, errlen, "cannot open control socket %s: %s", path, ps_strerror(r));
    return r;
}

static int refuse_running(const char *path, char *err, size_t errlen)
{
    ps__set_error(err, errlen,
                  "another supervisor is running with control socket %s (use --name or "
                  "--control to run a second one)",
                  path);
    return -EADDRINUSE;
}

/* The default places, in order: the first that can be written. */
static int open_default(struct ps_sup *sup, char *err, size_t errlen)
{
    struct ps_sup_config *cfg = sup->cfg;
    char path[sizeof(cfg->control_path)], first[512] = "";
    int i, r, fallback;

    /* a live supervisor of this name at any of them keeps the name */
    for (i = 0; (r = ps_sup_control_candidate(cfg->name, i, path, sizeof(path))) != -ENOENT &&
                r != -EINVAL;
         i++)
        if (r == 0 && answers(path))
            return refuse_running(path, err, errlen);
    for (i = 0; (r = ps_sup_control_candidate(cfg->name, i, path, sizeof(path))) != -ENOENT; i++) {
        if (r == -EINVAL) {
            ps__set_error(err, errlen, "bad supervisor name '%s'", cfg->name);
            return r;
        }
        if (r < 0)
            continue;
        r = open_at(sup, path, 1, &fallback, err, errlen);
        if (r == 0) {
            snprintf(cfg->control_path, sizeof(cfg->control_path), "%s", path);
            if (first[0])
                ps__sup_log(sup, PS_LOG_WARN, "control_fallback",
                            "%s; the control socket is %s instead", first, path);
            return 0;
        }
        if (!fallback)
            return r;
        if (!first[0])
            snprintf(first, sizeof(first), "%s", err);
    }
    ps__sup_log(sup, PS_LOG_WARN, "control_none",
                "%s (nor any other default place): running without a control socket; portshare "
                "status/reload/stop cannot reach this supervisor, signals still work (HUP "
                "reloads, TERM stops); give --control PATH in a writable place",
                first);
    sup->control_fd = -1;
    return 0;
}

int ps__control_open(struct ps_sup *sup, char *err, size_t errlen)
{
    struct ps_sup_config *cfg = sup->cfg;
    int fallback;

    if (!cfg->control_path[0])
        return open_default(sup, err, errlen);
    if (answers(cfg->control_path))
        return refuse_running(cfg->control_path, err, errlen);
    return open_at(sup, cfg->control_path, 0, &fallback, err, errlen);
}

void ps__control_close(struct ps_sup *sup)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);

    ps__conns_close_listener(sup, PS_LS_CONTROL);
    if (sup->control_fd < 0)
        return;
    /* the path it is bound to: after an upgrade the configuration does not
     * say it (a default place was chosen by the image before) */
    if (getsockname(sup->control_fd, (struct sockaddr *)&sun, &len) == 0 &&
        len > offsetof(struct sockaddr_un, sun_path) && sun.sun_path[0] == '/') {
        sun.sun_path[sizeof(sun.sun_path) - 1] = '\0';
        unlink(sun.sun_path);
    }
    ps__close(sup->control_fd);
    sup->control_fd = -1;
}

/* ---- replies -------------------------------------------------------------------- */

static void client_reply(struct ps_sup *sup, struct ps_conn *c, int ok, const char *body,
                         size_t len, enum ps_conn_close why)
{
    const char *head = ok ? "ok\n" : "error\n";
    size_t hl = strlen(head), nl = len && body[len - 1] != '\n';
    char *out = malloc(hl + len + nl);

    if (out) {
        memcpy(out, head, hl);
        memcpy(out + hl, body, len);
        if (nl)
            out[hl + len] = '\n';
    }
    ps__conn_answer(sup, c, out, hl + len + nl, why, ps__sup_now(sup));
}

static struct ps_conn *waiter_client(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_conn *c;

    if (!w)
        return NULL;
    c = ps__conn_get(sup, PS_LS_CONTROL, w->client, w->serial);
    return c && c->state == CS_WAITING ? c : NULL;
}

/* An operation's outcome: the body as it is, or for a client that asked
 * with "json" one object {"ok","command","generation","workers","message"}
 * (generation and workers as they are when the outcome is known). */
static void reply(struct ps_sup *sup, struct ps_conn *c, int ok, const char *body)
{
    struct ps_buf b = {0};

    if (!c->u.ctl.json) {
        client_reply(sup, c, ok, body, strlen(body), PS_CONN_DONE);
        return;
    }
    ps__buf_printf(&b, "{\"ok\":%s,\"command\":", ok ? "true" : "false");
    ps__buf_json_string(&b, c->u.ctl.command);
    ps__buf_printf(&b,
                   ",\"generation\":%u,\"workers\":%d,\"pid\":%ld,\"message\":", sup->generation,
                   sup->target, (long)getpid());
    ps__buf_json_string(&b, body);
    ps__buf_printf(&b, "}\n");
    if (b.failed)
        client_reply(sup, c, 0, "out of memory", 13, PS_CONN_ERROR);
    else
        client_reply(sup, c, ok, b.data, b.len, PS_CONN_DONE);
    ps__buf_free(&b);
}

void ps__control_answer(struct ps_sup *sup, const struct ps_waiter *w, int ok, const char *body)
{
    struct ps_conn *c = waiter_client(sup, w);

    if (c)
        reply(sup, c, ok, body);
}

int ps__control_client_json(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_conn *c = waiter_client(sup, w);

    return c ? c->u.ctl.json : 0;
}

int ps__control_client_fd(struct ps_sup *sup, const struct ps_waiter *w)
{
    struct ps_conn *c = waiter_client(sup, w);

    return c ? c->fd : -1;
}

struct ps_waiter ps__control_adopt(struct ps_sup *sup, int fd, int json, const char *command)
{
    struct ps_waiter w = {-1, 0};
    struct ps_conn *c = ps__conns_adopt(sup, PS_LS_CONTROL, fd, ps__sup_now(sup));

    if (!c)
        return w;
    c->u.ctl.json = json;
    snprintf(c->u.ctl.command, sizeof(c->u.ctl.command), "%s", command);
    w.client = ps__conn_index(sup, c);
    w.serial = c->serial;
    return w;
}

void ps__control_refuse_unread(struct ps_sup *sup, const char *why)
{
    ps__conns_last_call(sup, why);
}

void ps__control_flush(struct ps_sup *sup, unsigned timeout_ms)
{
    ps__conns_flush(sup, timeout_ms);
}

/* ---- commands ------------------------------------------------------------------ */

/* Only the supervisor's owner and root may command it.  Checked once the
 * command has arrived, so that the refusal is read by the client instead of
 * being lost to a reset. */
static int peer_allowed(struct ps_sup *sup, struct ps_conn *c)
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
    client_reply(sup, c, 0, no, strlen(no), PS_CONN_REFUSED);
    return 0;
}

/* status (text or JSON) or the metrics text, as the reply */
static void reply_text(struct ps_conn *c, struct ps_sup *sup, const char *what)
{
    struct ps_buf b = {0};

    if (!strcmp(what, "status json"))
        ps__status_json(sup, &b);
    else if (!strcmp(what, "status"))
        ps__status_text(sup, &b);
    else {
        ps__metrics_text(sup, &b);
        ps__conns_metrics_text(sup, &b);
    }
    if (b.failed)
        client_reply(sup, c, 0, "out of memory", 13, PS_CONN_ERROR);
    else
        client_reply(sup, c, 1, b.data ? b.data : "", b.len, PS_CONN_DONE);
    ps__buf_free(&b);
}

/* The commands with a count: "scale N", "stop lameduck MS". */
static void run_counted(struct ps_sup *sup, struct ps_conn *c, const struct ps_waiter *w,
                        char *line)
{
    char err[256];
    long n;

    if (!strncmp(line, "scale ", 6)) {
        if (ps__parse_long(line + 6, 1, PS_SUP_MAX_WORKERS, &n) < 0) {
            snprintf(err, sizeof(err), "bad worker count '%.32s' (1-%d)", line + 6,
                     PS_SUP_MAX_WORKERS);
            reply(sup, c, 0, err);
        } else if (ps__op_request(sup, OP_SCALE, (int)n, w, err, sizeof(err)) < 0) {
            reply(sup, c, 0, err);
        }
    } else if (ps__parse_long(line + 14, 0, 24L * 3600 * 1000, &n) < 0) {
        snprintf(err, sizeof(err), "bad lame duck time '%.32s' (milliseconds)", line + 14);
        reply(sup, c, 0, err);
    } else {
        ps__life_event(sup, LIFE_LAMEDUCK, (unsigned)n, w);
    }
}

static void run_command(struct ps_sup *sup, struct ps_conn *c, char *line)
{
    struct ps_waiter w = {ps__conn_index(sup, c), c->serial};
    char err[256];
    size_t len;

    ps__conn_wait(sup, c, ps__sup_now(sup)); /* for ps__control_answer; any reply moves it on */
    if (!strcmp(line, "status") || !strcmp(line, "status json") || !strcmp(line, "metrics")) {
        reply_text(c, sup, line);
        return;
    }
    /* "reload json", "scale 4 json"...: the outcome as JSON */
    len = strlen(line);
    c->u.ctl.json = len > 5 && !strcmp(line + len - 5, " json");
    if (c->u.ctl.json)
        line[len - 5] = '\0';
    snprintf(c->u.ctl.command, sizeof(c->u.ctl.command), "%.*s", (int)strcspn(line, " "), line);
    if (!strcmp(line, "reload") || !strcmp(line, "upgrade")) {
        if (ps__op_request(sup, line[0] == 'r' ? OP_RELOAD : OP_UPGRADE, 0, &w, err, sizeof(err)) <
            0)
            reply(sup, c, 0, err);
    } else if (!strncmp(line, "scale ", 6) || !strncmp(line, "stop lameduck ", 14)) {
        run_counted(sup, c, &w, line);
    } else if (!strcmp(line, "stop")) {
        ps__life_event(sup, LIFE_STOP, 0, &w);
    } else {
        snprintf(err, sizeof(err), "unknown command '%.64s'", line);
        reply(sup, c, 0, err);
    }
}

/* Bytes of the command line: one line, maybe in pieces. */
static void control_input(struct ps_sup *sup, struct ps_conn *c, const char *buf, size_t len,
                          uint64_t now)
{
    size_t room = LINE_MAX_IN - 1 - c->u.ctl.len;
    char *nl;

    (void)now;
    if (len > room)
        len = room;
    memcpy(c->u.ctl.in + c->u.ctl.len, buf, len);
    c->u.ctl.len += len;
    c->u.ctl.in[c->u.ctl.len] = '\0';
    nl = strchr(c->u.ctl.in, '\n');
    if (!nl && c->u.ctl.len == LINE_MAX_IN - 1) {
        if (peer_allowed(sup, c))
            client_reply(sup, c, 0, "command line too long", 21, PS_CONN_BAD_REQUEST);
        return;
    }
    if (!nl)
        return;
    *nl = '\0';
    if (nl > c->u.ctl.in && nl[-1] == '\r')
        nl[-1] = '\0';
    if (peer_allowed(sup, c))
        run_command(sup, c, c->u.ctl.in);
}

/* Before an exec: read what the client sent (a socket closed on unread
 * bytes resets its peer, and the client would see no answer at all), and
 * say why its command is not run. */
static void control_last_call(struct ps_sup *sup, struct ps_conn *c, const char *why, uint64_t now)
{
    char buf[LINE_MAX_IN];

    while (recv(c->fd, buf, sizeof(buf), 0) > 0)
        ;
    client_reply(sup, c, 0, why, strlen(why), PS_CONN_DONE);
    (void)now;
}

static const struct ps_conn_proto control_proto = {
    .name = "control",
    .paused_event = "control_paused",
    /* a command within 10 s, its reply read within 10 s, the EOF after it */
    .timeout_ms = {[CS_READING] = 10000, [CS_WRITING] = 10000, [CS_LINGER] = 1000},
    .busy = "error\nbusy: too many control connections\n",
    .input = control_input,
    .last_call = control_last_call,
};

int ps__control_init(struct ps_sup *sup)
{
    return ps__conns_init(sup, PS_LS_CONTROL, &control_proto);
}
