/*
 * client.c - the client side of the control socket, for `portshare status /
 * reload / scale / stop / upgrade`: where a supervisor's socket is, and one
 * command with its reply.  Runs in the CLI's process, never in the loop.
 */
#include "sup_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int ps_sup_control_candidate(const char *name, int i, char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char dirs[3][80];
    int n = 0, r;

    if (!name || !*name || strchr(name, '/'))
        return -EINVAL;
    /* root's place, then the user's session directory, then one in /tmp:
     * the order that a read-only / or /run falls back in */
    if (geteuid() == 0)
        snprintf(dirs[n++], sizeof(dirs[0]), "/run/portshare");
    if (xdg && *xdg == '/' && strlen(xdg) < sizeof(dirs[0]) - 11)
        snprintf(dirs[n++], sizeof(dirs[0]), "%s/portshare", xdg);
    snprintf(dirs[n++], sizeof(dirs[0]), "/tmp/portshare-%lu", (unsigned long)geteuid());
    if (i < 0 || i >= n)
        return -ENOENT;
    r = snprintf(buf, len, "%s/%s.sock", dirs[i], name);
    return r < 0 || (size_t)r >= len ? -ENAMETOOLONG : 0;
}

int ps_sup_control_path(const char *name, char *buf, size_t len)
{
    return ps_sup_control_candidate(name, 0, buf, len);
}

int ps_sup_control_locate(const char *name, char *buf, size_t len)
{
    struct stat st;
    int i, r;

    for (i = 0; (r = ps_sup_control_candidate(name, i, buf, len)) != -ENOENT; i++)
        if (r == 0 && lstat(buf, &st) == 0 && S_ISSOCK(st.st_mode))
            return 0;
    return ps_sup_control_candidate(name, 0, buf, len);
}

int ps_sup_control_call(const char *path, const char *command, int *ok, char *out, size_t cap,
                        unsigned timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    size_t used = 0;
    char line[300];
    int fd, r;

    r = ps__unix_addr(path, &ss, &len);
    if (r < 0)
        return r;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ps__neg_errno();
    if (connect(fd, (struct sockaddr *)&ss, len) < 0)
        goto error;
    /* the other way round too: only our own uid or root may answer us, or a
     * socket planted in a shared directory could tell us "stopped" */
    {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
            goto error;
        if (cred.uid != 0 && cred.uid != geteuid()) {
            ps__close(fd);
            return -EPERM;
        }
    }
    snprintf(line, sizeof(line), "%s\n", command);
    /* a supervisor that refuses us answers and hangs up at once, maybe
     * before our command arrives: read its answer even when this fails */
    if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
        goto error;
    out[0] = '\0';
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        r = poll(&p, 1, timeout_ms ? (int)timeout_ms : -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            errno = ETIMEDOUT;
            goto error;
        }
        if (used + 1 >= cap) {
            /* more than fits: say so rather than hand back a cut reply
             * (a cut status --json is not JSON) */
            errno = EMSGSIZE;
            goto error;
        }
        n = recv(fd, out + used, cap - used - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto error;
        if (n == 0)
            break;
        used += (size_t)n;
        out[used] = '\0';
    }
    ps__close(fd);
    if (!strncmp(out, "ok\n", 3)) {
        *ok = 1;
        memmove(out, out + 3, used - 2);
    } else if (!strncmp(out, "error\n", 6)) {
        *ok = 0;
        memmove(out, out + 6, used - 5);
    } else {
        return -EBADMSG;
    }
    return 0;

error:
    r = ps__neg_errno();
    ps__close(fd);
    return r;
}
