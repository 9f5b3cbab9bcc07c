/*
 * spawn.c - starting one worker: fork, and in the child everything between
 * fork and exec (signal mask, process group, privileges, death signal, the
 * LISTEN_FDS hand-off, the environment).  Only the listener copies of the
 * worker's slot (and cfg->pass_fd, when set) survive the exec; everything
 * else is close-on-exec.
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int free_worker_entry(struct ps_sup *sup)
{
    int i;

    for (i = 0; i < (int)PS__ARRAY_LEN(sup->workers); i++)
        if (sup->workers[i].pid == 0) {
            if (i >= sup->nworkers)
                sup->nworkers = i + 1;
            return i;
        }
    return -EAGAIN;
}

/* "127.0.0.1:8080", "[::1]:8080", "/path" (unix), as Server::Starter names
 * a socket in SERVER_STARTER_PORT: the address its --port/--path said. */
static void starter_name(int fd, char *buf, size_t len)
{
    struct ps_spec sp;
    int n;

    buf[0] = '\0';
    if (ps__spec_of_fd(fd, &sp) < 0)
        return;
    if (sp.proto == PS_PROTO_UNIX)
        n = snprintf(buf, len, "%s", sp.host);
    else if (sp.addr.ss_family == AF_INET6)
        n = snprintf(buf, len, "[%s]:%u", sp.host, sp.port);
    else
        n = snprintf(buf, len, "%s:%u", sp.host, sp.port);
    if (n < 0 || (size_t)n >= len)
        buf[0] = '\0'; /* a cut address would name another one */
}

/* The legacy hand-offs (--handoff), for n descriptors at 3..3+n-1. */
static void set_handoff_env(struct ps_sup *sup, int n, unsigned gen, pid_t parent)
{
    unsigned h = sup->cfg->handoff ? sup->cfg->handoff : PS_HANDOFF_SYSTEMD;
    char name[32], val[32], ports[2048], one[160];
    size_t used = 0;
    int i, w;

    if (!(h & PS_HANDOFF_SYSTEMD)) {
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
    }
    if (h & PS_HANDOFF_EINHORN) {
        /* einhorn's worker libraries: EINHORN_FD_COUNT, EINHORN_FD_<i> = the
         * descriptor number; EINHORN_MASTER_PID must be the parent */
        snprintf(val, sizeof(val), "%d", n);
        setenv("EINHORN_FD_COUNT", val, 1);
        for (i = 0; i < n; i++) {
            snprintf(name, sizeof(name), "EINHORN_FD_%d", i);
            snprintf(val, sizeof(val), "%d", PS_LISTEN_FDS_START + i);
            setenv(name, val, 1);
        }
        snprintf(val, sizeof(val), "%ld", (long)parent);
        setenv("EINHORN_MASTER_PID", val, 1);
    }
    if (h & PS_HANDOFF_SERVER_STARTER) {
        /* Server::Starter: "ADDR=FD;ADDR=FD" in listener order */
        ports[0] = '\0';
        for (i = 0; i < n; i++) {
            starter_name(PS_LISTEN_FDS_START + i, one, sizeof(one));
            w = snprintf(ports + used, sizeof(ports) - used, "%s%s=%d", i ? ";" : "", one,
                         PS_LISTEN_FDS_START + i);
            if (w < 0 || (size_t)w >= sizeof(ports) - used)
                break;
            used += (size_t)w;
        }
        setenv("SERVER_STARTER_PORT", ports, 1);
        snprintf(val, sizeof(val), "%u", gen);
        setenv("SERVER_STARTER_GENERATION", val, 1);
    }
}

/* In the child: no signal blocked (but SIGUSR1 for serve's reopen), and
 * every signal at its default action, as systemd gives a service: a
 * supervisor started in the background of a shell (`portshare run ... &`,
 * nohup) inherited SIGINT and SIGQUIT ignored, and an ignored disposition
 * survives exec -- a worker drained with INT or QUIT would never hear it. */
static void child_signals(const struct ps_sup_config *cfg)
{
    sigset_t mask;
    int sig;

    sigemptyset(&mask);
    if (cfg->on_reopen)
        sigaddset(&mask, SIGUSR1); /* kept blocked across exec: see supervisor.h */
    sigprocmask(SIG_SETMASK, &mask, NULL);
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
}

/* In the child, between fork and exec: never returns.  Only the listener
 * copies of this slot survive the exec; everything else is close-on-exec. */
static void child_exec(struct ps_sup *sup, int slot, unsigned gen, pid_t parent, int errpipe)
{
    struct ps_sup_config *cfg = sup->cfg;
    const char *names[PS_SUP_MAX_LISTENERS];
    int fds[PS_SUP_MAX_LISTENERS];
    /* above the listeners and the passed descriptor */
    int high = PS_LISTEN_FDS_START + sup->ngroups + 1, exec_fd = -1, pass = -1;
    char num[32];
    int g, err;

    child_signals(cfg);
    setpgid(0, 0); /* its own group: ^C reaches the supervisor only; tree.c kills by group */
    if (cfg->cpu_affinity)
        ps__pin_to_slot_cpu(slot); /* best effort: a CPU of our own set */
    /* keep the error pipe out of the 3.. range the listeners will take */
    errpipe = fcntl(errpipe, F_DUPFD_CLOEXEC, high);
    if (errpipe < 0)
        _exit(127);
    /* close-on-exec: the kernel has the file open before it closes these */
    if (cfg->exec_path && (exec_fd = open(cfg->exec_path, O_PATH | O_CLOEXEC)) >= 0)
        exec_fd = fcntl(exec_fd, F_DUPFD_CLOEXEC, high);
    if (cfg->exec_path && exec_fd < 0)
        goto fail;
    if (cfg->pass_fd_env && (pass = fcntl(cfg->pass_fd, F_DUPFD_CLOEXEC, high)) < 0)
        goto fail;
    if (cfg->drop_privileges) {
        if ((cfg->user[0] ? initgroups(cfg->user, cfg->gid) : setgroups(0, NULL)) < 0 ||
            setgid(cfg->gid) < 0 || setuid(cfg->uid) < 0)
            goto fail;
    }
    /* after the uid change, which clears it; then make sure the parent did
     * not die before it took effect.  SIGKILL: a worker that ignores SIGTERM
     * must not outlive the supervisor and hold the port (tree.c). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    for (g = 0; g < sup->ngroups; g++) {
        fds[g] = ps__group_fd(&sup->groups[g], slot);
        names[g] = sup->groups[g].spec.name[0] ? sup->groups[g].spec.name : "unknown";
    }
    err = ps_activation_apply(fds, sup->ngroups, names);
    if (err < 0) {
        errno = -err;
        goto fail;
    }
    set_handoff_env(sup, sup->ngroups, gen, parent);
    if (pass >= 0) { /* dup2 leaves it open across exec */
        if (dup2(pass, PS_LISTEN_FDS_START + sup->ngroups) < 0)
            goto fail;
        snprintf(num, sizeof(num), "%d", PS_LISTEN_FDS_START + sup->ngroups);
        setenv(cfg->pass_fd_env, num, 1);
    }
    snprintf(num, sizeof(num), "%d", slot);
    setenv("PORTSHARE_SLOT", num, 1);
    snprintf(num, sizeof(num), "%u", gen);
    setenv("PORTSHARE_GENERATION", num, 1);
    setenv("NOTIFY_SOCKET", sup->notify_addr, 1);
    if (cfg->watchdog_ms) {
        /* sd_watchdog_enabled(3) reads these */
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cfg->watchdog_ms * 1000ull);
        setenv("WATCHDOG_USEC", num, 1);
        snprintf(num, sizeof(num), "%ld", (long)getpid());
        setenv("WATCHDOG_PID", num, 1);
    }
    if (exec_fd >= 0)
        fexecve(exec_fd, cfg->argv, environ);
    else
        execvp(cfg->argv[0], cfg->argv);
fail:
    err = errno;
    if (write(errpipe, &err, sizeof(err)) < 0) {
        /* the parent then sees a worker that exits with 127 */
    }
    _exit(127);
}

/* An exec failure is reported synchronously (the child writes errno into a
 * close-on-exec pipe), so "program not found" never looks like a crash. */
/* A worker may have called listen(fd, 1) on its copy, which sets the
 * backlog of the socket itself, for every later worker of the slot: each
 * new worker gets the configured one back.  listen() on a listening socket
 * only changes its backlog (it stays in its reuseport group); a socket
 * that does not listen (shut down on purpose, for its queue to move) is
 * left alone. */
static void restore_backlogs(struct ps_sup *sup, int slot)
{
    int g, fd, on;
    socklen_t len;

    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        fd = ps__group_fd(gr, slot);
        len = sizeof(on);
        if (fd < 0 || gr->spec.proto != PS_PROTO_TCP || gr->spec.backlog <= 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on)
            continue;
        (void)listen(fd, gr->spec.backlog);
    }
}

int ps__sup_spawn(struct ps_sup *sup, int slot, unsigned gen)
{
    int idx = free_worker_entry(sup), pipefd[2], err = 0;
    struct ps_worker *w;
    ssize_t n;
    pid_t pid;

    if (idx < 0)
        return idx;
    restore_backlogs(sup, slot);
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return ps__neg_errno();
    pid = fork();
    if (pid < 0) {
        err = ps__neg_errno();
        ps__close(pipefd[0]);
        ps__close(pipefd[1]);
        return err;
    }
    if (pid == 0)
        child_exec(sup, slot, gen, getppid(), pipefd[1]);
    /* the child does the same: whichever runs first, the group exists before
     * anyone signals it (tree.c kills workers by group) */
    setpgid(pid, pid);
    ps__close(pipefd[1]);
    do
        n = read(pipefd[0], &err, sizeof(err));
    while (n < 0 && errno == EINTR);
    ps__close(pipefd[0]);
    if (n == (ssize_t)sizeof(err)) {
        waitpid(pid, NULL, 0);
        return -err;
    }
    w = &sup->workers[idx];
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    w->slot = slot;
    w->generation = gen;
    w->state = W_STARTING;
    w->started_ms = w->ping_ms = ps__sup_now(sup);
    w->deadline_ms = w->started_ms + sup->cfg->ready_timeout_ms;
    ps__sup_log(sup, PS_LOG_INFO, "worker_started", "worker %ld started in slot %d (generation %u)",
                (long)pid, slot, gen);
    return idx;
}
