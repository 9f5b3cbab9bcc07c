/*
 * helper.c - the other-UID helper of `portshare probe`: a forked child that
 * drops to another uid and binds second sockets on request, so that the
 * probe can see what the kernel lets a different user do to a port.
 * Requests and replies are fixed-size structs over a SOCK_SEQPACKET pair.
 */
#include "probe_internal.h"

#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

struct helper_req {
    int proto, addr, opts;
    unsigned port;
};

struct helper_rep {
    int setup_err; /* the socket could not be made: errno */
    short bind_err, listen_err;
};

static void helper_loop(int sock)
{
    struct helper_req req;
    struct helper_rep rep;
    ssize_t n;

    for (;;) {
        n = recv(sock, &req, sizeof(req), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(req))
            return; /* 0: the probe is done */
        memset(&rep, 0, sizeof(rep));
        if (req.addr < 0 || req.addr >= PS_PA_COUNT)
            rep.setup_err = EINVAL;
        else
            rep.setup_err = -ps__probe_try(req.proto, (enum ps_probe_addr)req.addr, req.opts,
                                           req.port, &rep.bind_err, &rep.listen_err);
        if (send(sock, &rep, sizeof(rep), MSG_NOSIGNAL) < 0)
            return;
    }
}

/* Fork the helper; it drops to uid (and the group of the same number), says
 * so with one byte, then serves requests.  Returns our end or -errno. */
int ps__probe_helper_start(int uid, pid_t *pid)
{
    struct timeval tv = {2, 0};
    int sv[2], r;
    char ok;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return ps__neg_errno();
    *pid = fork();
    if (*pid < 0) {
        r = ps__neg_errno();
        goto fail;
    }
    if (*pid == 0) {
        ps__close(sv[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setgroups(0, NULL) < 0 || setresgid((gid_t)uid, (gid_t)uid, (gid_t)uid) < 0 ||
            setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
            _exit(1);
        ok = 1;
        if (send(sv[1], &ok, 1, MSG_NOSIGNAL) == 1)
            helper_loop(sv[1]);
        _exit(0);
    }
    ps__close(sv[1]);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while ((r = (int)recv(sv[0], &ok, 1, 0)) < 0 && errno == EINTR)
        ;
    if (r == 1)
        return sv[0];
    r = r < 0 ? ps__neg_errno() : -EPERM; /* it exited: setresuid failed */
    ps__close(sv[0]);
    waitpid(*pid, NULL, 0);
    return r;
fail:
    ps__close(sv[0]);
    ps__close(sv[1]);
    return r;
}

int ps__probe_helper_try(int helper, int proto, enum ps_probe_addr a, int opts, unsigned port,
                         short *bind_err, short *listen_err)
{
    struct helper_req req = {proto, (int)a, opts, port};
    struct helper_rep rep;
    ssize_t n;

    if (send(helper, &req, sizeof(req), MSG_NOSIGNAL) < 0)
        return ps__neg_errno();
    while ((n = recv(helper, &rep, sizeof(rep), 0)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return ps__neg_errno();
    if (n != (ssize_t)sizeof(rep))
        return -EPIPE;
    if (rep.setup_err)
        return -rep.setup_err;
    *bind_err = rep.bind_err;
    *listen_err = rep.listen_err;
    return 0;
}
