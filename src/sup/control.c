/*
 * control.c - the control socket: `portshare status / reload / scale / stop
 * / upgrade` talk to a running supervisor through it.
 *
 * A unix stream socket, mode 0600 in a directory only its owner can enter;
 * every peer's credentials (SO_PEERCRED) are checked as well: only the
 * supervisor's own uid and root may talk to it.  The protocol is one command
 * line from the client; the reply is "ok" or "error" on the first line,
 * then free text, then the supervisor closes the connection.  A reload's
 * reply waits until the new generation serves or was rolled back.
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* mkdir -p for the socket's directory; a directory we create is 0700 */
static int make_parent_dirs(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *p;

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
            return ps__neg_errno();
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return ps__neg_errno();
    return 0;
}

int ps__control_open(struct ps_sup *sup, char *err, size_t errlen)
{
    struct ps_sup_config *cfg = sup->cfg;
    struct sockaddr_storage ss;
    socklen_t len;
    mode_t old;
    int fd = -1, probe, r;

    if (!cfg->control_path[0]) {
        r = ps_sup_control_path(cfg->name, cfg->control_path, sizeof(cfg->control_path));
        if (r < 0) {
            ps__set_error(err, errlen, "bad supervisor name '%s'", cfg->name);
            return r;
        }
    }
    r = ps__unix_addr(cfg->control_path, &ss, &len);
    if (r < 0) {
        ps__set_error(err, errlen, "bad control socket path '%s'", cfg->control_path);
        return r;
    }
    r = make_parent_dirs(cfg->control_path);
    if (r < 0) {
        ps__set_error(err, errlen, "cannot create the directory of %s: %s", cfg->control_path,
                      ps_strerror(r));
        return r;
    }
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

void ps__control_close(struct ps_sup *sup)
{
    int i;

    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++) {
        ps__close(sup->clients[i]);
        sup->clients[i] = -1;
    }
    for (i = 0; i < sup->nwaiters; i++)
        ps__close(sup->waiters[i].fd);
    sup->nwaiters = 0;
    if (sup->control_fd >= 0) {
        ps__close(sup->control_fd);
        sup->control_fd = -1;
        if (sup->cfg->control_path[0] == '/')
            unlink(sup->cfg->control_path);
    }
}

static void write_all(int fd, const char *buf, size_t len)
{
    /* the client is waiting for this reply and reads it all: a short
     * blocking write is fine; a stuck client only loses its own answer */
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

void ps__control_reply(int fd, int ok, const char *body)
{
    write_all(fd, ok ? "ok\n" : "error\n", ok ? 3 : 6);
    write_all(fd, body, strlen(body));
    if (body[0] && body[strlen(body) - 1] != '\n')
        write_all(fd, "\n", 1);
}

void ps__control_accept(struct ps_sup *sup)
{
    int fd, i;

    while ((fd = accept4(sup->control_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
        for (i = 0; i < PS_SUP_MAX_CLIENTS && sup->clients[i] >= 0; i++)
            ;
        if (i == PS_SUP_MAX_CLIENTS) {
            ps__control_reply(fd, 0, "busy: too many control connections");
            ps__close(fd);
            continue;
        }
        sup->clients[i] = fd;
    }
}

/* Only the supervisor's owner and root may command it.  Checked once the
 * command has arrived, so that the refusal is read by the client instead of
 * being lost to a reset. */
static int peer_allowed(struct ps_sup *sup, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        (cred.uid == 0 || cred.uid == geteuid()))
        return 1;
    ps__control_reply(fd, 0, "permission denied: only the supervisor's owner or root");
    ps__sup_log(sup, PS_LOG_WARN, "control_refused",
                "refused a control connection from uid %lu (pid %ld)", (unsigned long)cred.uid,
                (long)cred.pid);
    return 0;
}

static void run_command(struct ps_sup *sup, int fd, char *line)
{
    static char big[256 * 1024];
    char err[256];
    long n;

    if (!strcmp(line, "status")) {
        ps__status_text(sup, big, sizeof(big));
        ps__control_reply(fd, 1, big);
    } else if (!strcmp(line, "status json")) {
        ps__status_json(sup, big, sizeof(big));
        ps__control_reply(fd, 1, big);
    } else if (!strcmp(line, "reload")) {
        if (sup->stopping) {
            ps__control_reply(fd, 0, "the supervisor is stopping");
        } else {
            ps__sup_add_waiter(sup, fd, 'r');
            ps__sup_request_reload(sup);
            return; /* answered when the reload ends */
        }
    } else if (!strncmp(line, "scale ", 6)) {
        if (ps__parse_long(line + 6, 1, PS_SUP_MAX_WORKERS, &n) < 0) {
            snprintf(err, sizeof(err), "bad worker count '%.32s' (1-%d)", line + 6,
                     PS_SUP_MAX_WORKERS);
            ps__control_reply(fd, 0, err);
        } else if (ps__sup_request_scale(sup, (int)n, err, sizeof(err)) < 0) {
            ps__control_reply(fd, 0, err);
        } else {
            snprintf(err, sizeof(err), "scaling to %ld workers", n);
            ps__control_reply(fd, 1, err);
        }
    } else if (!strcmp(line, "stop")) {
        ps__sup_add_waiter(sup, fd, 's');
        ps__sup_request_stop(sup);
        return;
    } else if (!strcmp(line, "upgrade")) {
        if (sup->reloading || sup->stopping || sup->upgrade_client >= 0) {
            ps__control_reply(fd, 0, "busy: a reload, stop or upgrade is in progress");
        } else {
            sup->upgrade_requested = 1;
            sup->upgrade_client = fd;
            return;
        }
    } else {
        snprintf(err, sizeof(err), "unknown command '%.64s'", line);
        ps__control_reply(fd, 0, err);
    }
    ps__close(fd);
}

void ps__control_client_ready(struct ps_sup *sup, int idx)
{
    char line[256];
    int fd = sup->clients[idx];
    ssize_t n;

    do
        n = recv(fd, line, sizeof(line) - 1, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    sup->clients[idx] = -1;
    if (n <= 0) {
        ps__close(fd);
        return;
    }
    line[n] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    if (!peer_allowed(sup, fd)) {
        ps__close(fd);
        return;
    }
    run_command(sup, fd, line);
}
