/*
 * activation.c - the systemd socket-activation protocol, both sides.
 *
 * Giving: descriptors at 3..3+n-1 plus LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES, exactly what systemd and systemd-socket-activate do, so
 * that programs written for sd_listen_fds(3) (lighttpd, gunicorn, ...) run
 * unchanged.  Receiving: the same checks as sd_listen_fds().
 */
#include "core.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* LISTEN_FDNAMES: names joined with ':', "unknown" for a missing one, into
 * a malloc'd string. */
static int join_names(const char *const *names, int n, char **out)
{
    size_t len = 1;
    char *joined;
    int i;

    for (i = 0; i < n; i++) {
        /* a ':' would shift every later name onto the wrong descriptor */
        if (names[i] && strchr(names[i], ':'))
            return -EINVAL;
        len += strlen(names[i] && *names[i] ? names[i] : "unknown") + 1;
    }
    joined = malloc(len);
    if (!joined)
        return -ENOMEM;
    joined[0] = '\0';
    for (i = 0; i < n; i++) {
        if (i)
            strcat(joined, ":");
        strcat(joined, names[i] && *names[i] ? names[i] : "unknown");
    }
    *out = joined;
    return 0;
}

static int set_env_long(const char *name, long value)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%ld", value);
    return setenv(name, buf, 1) < 0 ? ps__neg_errno() : 0;
}

int ps_activation_apply(const int *fds, int n, const char *const *names)
{
    int moved[PS_FDPASS_MAX];
    char *joined = NULL;
    int i, lifted = 0, r = 0;

    if (n < 0 || n > PS_FDPASS_MAX)
        return -EINVAL;
    /* names are checked before anything moves, so a refusal changes nothing */
    if (names && (r = join_names(names, n, &joined)) < 0)
        return r;
    /* First lift every descriptor above the target range so that dup2 onto
     * 3.. cannot overwrite one we still need; then place them in order. */
    for (lifted = 0; lifted < n; lifted++) {
        moved[lifted] = fcntl(fds[lifted], F_DUPFD_CLOEXEC, PS_LISTEN_FDS_START + n);
        if (moved[lifted] < 0) {
            r = ps__neg_errno();
            goto out;
        }
    }
    for (i = 0; i < n; i++) {
        /* dup2 leaves FD_CLOEXEC clear on the new descriptor */
        if (dup2(moved[i], PS_LISTEN_FDS_START + i) < 0) {
            r = ps__neg_errno();
            goto out;
        }
    }
    r = set_env_long("LISTEN_FDS", n);
    if (r == 0)
        r = set_env_long("LISTEN_PID", (long)getpid());
    if (r == 0 && joined && setenv("LISTEN_FDNAMES", joined, 1) < 0)
        r = ps__neg_errno();
    if (r == 0 && !joined)
        unsetenv("LISTEN_FDNAMES");

out:
    for (i = 0; i < lifted; i++)
        ps__close(moved[i]);
    free(joined);
    return r;
}

static void unset_all(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

void ps_listen_names_free(char **names)
{
    char **p;

    if (!names)
        return;
    for (p = names; *p; p++)
        free(*p);
    free(names);
}

/* Split LISTEN_FDNAMES into n names, "unknown" for missing ones. */
static int split_names(const char *joined, int n, char ***out)
{
    char **names = calloc((size_t)n + 1, sizeof(char *));
    const char *p = joined;
    int i;

    if (!names)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        size_t len = 0;
        if (p) {
            len = strcspn(p, ":");
            names[i] = len ? strndup(p, len) : strdup("unknown");
            p = p[len] == ':' ? p + len + 1 : NULL;
        } else {
            names[i] = strdup("unknown");
        }
        if (!names[i]) {
            ps_listen_names_free(names);
            return -ENOMEM;
        }
    }
    *out = names;
    return 0;
}

int ps_listen_fds(int unset_env, char ***names)
{
    const char *e_pid = getenv("LISTEN_PID"), *e_fds = getenv("LISTEN_FDS");
    long pid, n;
    int i, r;

    if (names)
        *names = NULL;
    if (!e_pid || !e_fds) {
        r = 0;
        goto done;
    }
    if (ps__parse_long(e_pid, 1, 0x7fffffff, &pid) < 0) {
        r = -EINVAL;
        goto done;
    }
    if ((pid_t)pid != getpid()) {
        r = 0; /* meant for another process: not ours, like systemd */
        goto done;
    }
    if (ps__parse_long(e_fds, 0, PS_FDPASS_MAX, &n) < 0) {
        r = -EINVAL;
        goto done;
    }
    for (i = 0; i < n; i++) {
        int fd = PS_LISTEN_FDS_START + i, flags = fcntl(fd, F_GETFD);
        if (flags < 0) {
            r = -EBADF;
            goto done;
        }
        /* the descriptors are ours now: keep them out of our own children */
        if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
            r = ps__neg_errno();
            goto done;
        }
    }
    if (names) {
        r = split_names(getenv("LISTEN_FDNAMES"), (int)n, names);
        if (r < 0)
            goto done;
    }
    r = (int)n;

done:
    if (unset_env)
        unset_all();
    return r;
}

int ps_is_socket(int fd, int family, int type, int listening)
{
    struct sockaddr_storage ss;
    socklen_t len;
    struct stat st;
    int v;

    if (fd < 0)
        return -EBADF;
    if (fstat(fd, &st) < 0)
        return ps__neg_errno();
    if (!S_ISSOCK(st.st_mode))
        return 0;
    if (type != 0) {
        len = sizeof(v);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0)
            return ps__neg_errno();
        if (v != type)
            return 0;
    }
    if (family != AF_UNSPEC) {
        len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            return ps__neg_errno();
        if (ss.ss_family != family)
            return 0;
    }
    if (listening >= 0) {
        len = sizeof(v);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0)
            return ps__neg_errno();
        if (!!v != !!listening)
            return 0;
    }
    return 1;
}
