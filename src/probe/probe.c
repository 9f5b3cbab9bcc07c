/*
 * probe.c - running `portshare probe`: a forked child that (as root) enters
 * a private network namespace, starts a helper running as another UID,
 * performs every experiment and sends the results back through a pipe.
 *
 * Why a child: the namespace, the helper, the raised descriptor limit and
 * the tcp_migrate_req written inside the namespace must not outlive the
 * probe or touch the caller.  The result is a flat structure (no pointers),
 * so the child writes it to the pipe as it is.
 */
#include "probe_internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROBE_ALARM_S 120 /* the child's last resort; a normal run takes ~1 s */

/* ---- the namespace ----------------------------------------------------------- */

/* A new network namespace has only `lo`, and it is down. */
static int lo_up(void)
{
    struct ifreq ifr;
    int fd, r = 0;

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ps__neg_errno();
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        r = ps__neg_errno();
    ifr.ifr_flags |= IFF_UP;
    if (r == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        r = ps__neg_errno();
    ps__close(fd);
    return r;
}

static void enter_netns(const struct ps_probe_opts *opts, struct ps_probe_result *res)
{
    int old, r;

    if (!opts->netns) {
        snprintf(res->netns_note, sizeof(res->netns_note),
                 "not asked for: experiments on this host's loopback, on free ports");
        return;
    }
    if (geteuid() != 0) {
        snprintf(res->netns_note, sizeof(res->netns_note),
                 "not root: experiments on this host's loopback, on free ports");
        return;
    }
    old = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (unshare(CLONE_NEWNET) < 0) {
        snprintf(res->netns_note, sizeof(res->netns_note),
                 "unshare(CLONE_NEWNET): %s; experiments on this host's loopback", strerror(errno));
        goto out;
    }
    r = lo_up();
    if (r < 0) {
        /* back to the host's namespace: a dead loopback proves nothing */
        snprintf(res->netns_note, sizeof(res->netns_note),
                 "could not bring lo up in the new namespace: %s", ps_strerror(r));
        if (old < 0 || setns(old, CLONE_NEWNET) < 0)
            _exit(70);
        goto out;
    }
    res->netns = 1;
out:
    ps__close(old);
}

/* ---- the child ------------------------------------------------------------------- */

static int read_int_file(const char *path)
{
    char buf[32] = "";
    int fd, v = -1;
    ssize_t n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n > 0 && sscanf(buf, "%d", &v) != 1)
        v = -1;
    ps__close(fd);
    return v;
}

static int server(enum ps_probe_addr a, unsigned *port)
{
    int fd = ps__probe_socket(PS_PROBE_TCP, a, 0), r;
    struct sockaddr_storage ss;
    socklen_t len;

    if (fd < 0)
        return fd;
    len = (socklen_t)ps__probe_sockaddr(a, 0, &ss);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        goto fail;
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port); /* same place in sin6 */
    return fd;
fail:
    r = ps__neg_errno();
    ps__close(fd);
    return r;
}

static void other_uid_setup(const struct ps_probe_opts *opts, struct ps_probe_result *res,
                            struct ps__probe_env *env, pid_t *pid)
{
    res->other_uid = -1;
    if (opts->other_uid < 0) {
        snprintf(res->other_uid_note, sizeof(res->other_uid_note), "skipped: not asked for");
        return;
    }
    if (geteuid() != 0) {
        snprintf(res->other_uid_note, sizeof(res->other_uid_note),
                 "skipped: only root can make a socket as another user");
        return;
    }
    env->helper = ps__probe_helper_start(opts->other_uid, pid);
    if (env->helper < 0) {
        snprintf(res->other_uid_note, sizeof(res->other_uid_note),
                 "skipped: could not run a helper as uid %d: %s", opts->other_uid,
                 ps_strerror(env->helper));
        return;
    }
    res->other_uid = opts->other_uid;
}

static void run_cases(const struct ps__probe_env *env, struct ps_probe_result *res)
{
    int n, i, r;

    n = ps__probe_enumerate(res->cases, PS_PROBE_MAX_CASES, env->helper >= 0);
    res->ncases = 0;
    for (i = 0; i < n; i++) {
        struct ps_probe_case c = res->cases[i];

        r = ps__probe_case_run(env, &c);
        if (r < 0) {
            if (!res->setup_failures++)
                snprintf(res->setup_note, sizeof(res->setup_note),
                         "first failure: %s first socket %s: %s",
                         c.proto == PS_PROBE_TCP ? "tcp" : "udp",
                         ps_probe_addr_info(c.first_addr)->label, ps_strerror(r));
            continue;
        }
        res->cases[res->ncases++] = c;
    }
}

static void child_main(const struct ps_probe_opts *opts, struct ps_probe_result *res)
{
    struct ps__probe_env env = {-1, -1, 0, 0, -1};
    struct utsname u;
    pid_t helper_pid = -1;

    signal(SIGALRM, SIG_DFL);
    alarm(PROBE_ALARM_S);
    if (uname(&u) == 0)
        snprintf(res->kernel, sizeof(res->kernel), "%s %s", u.sysname, u.release);
    res->euid = (unsigned)geteuid();
    res->host_migrate_req = read_int_file("/proc/sys/net/ipv4/tcp_migrate_req");
    enter_netns(opts, res);
    other_uid_setup(opts, res, &env, &helper_pid);
    env.server4 = server(PS_PA_LO, &env.port4);
    env.server6 = server(PS_PA_LO6, &env.port6); /* may fail without IPv6 */
    run_cases(&env, res);
    for (res->nseqs = 0; res->nseqs < ps_probe_nseqs() && res->nseqs < PS_PROBE_MAX_SEQS;
         res->nseqs++)
        ps__probe_seq_run(ps_probe_seq(res->nseqs), &res->seqs[res->nseqs]);
    ps__probe_spread(opts, res->netns, res);
    ps__probe_features(&env, res);
    ps__probe_ebpf_migrate(opts->queued, res->netns, res);
    ps__close(env.server4);
    ps__close(env.server6);
    if (env.helper >= 0) {
        ps__close(env.helper); /* the helper sees EOF and exits */
        waitpid(helper_pid, NULL, 0);
    }
}

static int io_all(int fd, void *buf, size_t len, int writing)
{
    char *p = buf;
    ssize_t n;

    while (len > 0) {
        n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ps__neg_errno();
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ps_probe_run(const struct ps_probe_opts *opts, struct ps_probe_result *res)
{
    struct timespec t0, t1;
    int p[2], status = 0, r, i;
    pid_t pid;

    memset(res, 0, sizeof(*res));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pipe2(p, O_CLOEXEC) < 0)
        return ps__neg_errno();
    pid = fork();
    if (pid < 0) {
        r = ps__neg_errno();
        goto out;
    }
    if (pid == 0) {
        ps__close(p[0]);
        child_main(opts, res);
        _exit(io_all(p[1], res, sizeof(*res), 1) == 0 ? 0 : 1);
    }
    ps__close(p[1]);
    p[1] = -1;
    r = io_all(p[0], res, sizeof(*res), 0);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        r = -ECHILD;
    if (r < 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        r = -ETIMEDOUT;
    for (i = 0; r == 0 && i < res->ncases; i++)
        ps_probe_expect(&res->cases[i]);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    res->elapsed_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
out:
    ps__close(p[0]);
    ps__close(p[1]);
    return r;
}
