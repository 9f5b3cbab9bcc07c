/*
 * spawn.c - starting one worker: vfork, and in the child everything between
 * fork and exec (signal mask, process group, privileges, death signal, the
 * LISTEN_FDS hand-off).  The parent prepares all of it (the environment,
 * the groups, the CPU), so that the child makes system calls only; it is
 * suspended until the child has exec'd, and learns an exec failure from
 * the child's memory, which is its own: "program not found" never looks
 * like a crash, and nothing waits for the child to be scheduled.  Only the
 * listener copies of the worker's slot (and cfg->pass_fd, when set) survive
 * the exec; everything else is close-on-exec.
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
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

/* ---- the child's environment, built by the parent ----------------------------
 *
 * The child of vfork shares our memory and must not allocate (it would take
 * malloc's lock in a copy of a process that may hold it): every variable it
 * gets is set here, before the fork, in an array of its own; environ is not
 * touched.  The two values only the child knows (LISTEN_PID, WATCHDOG_PID)
 * get room here and are written by the child.
 */
#define ENV_OWN_MAX (16 + PS_SUP_MAX_LISTENERS)
#define PID_ROOM    24

struct env {
    char **v; /* NULL-terminated */
    int n, cap, nown, failed;
    char *own[ENV_OWN_MAX];
};

static int env_init(struct env *e)
{
    int i;

    memset(e, 0, sizeof(*e));
    for (i = 0; environ && environ[i]; i++)
        ;
    e->cap = i + ENV_OWN_MAX + 1;
    e->v = malloc((size_t)e->cap * sizeof(char *));
    if (!e->v)
        return -ENOMEM;
    memcpy(e->v, environ, (size_t)i * sizeof(char *));
    e->n = i;
    e->v[i] = NULL;
    return 0;
}

static void env_free(struct env *e)
{
    int i;

    for (i = 0; i < e->nown; i++)
        free(e->own[i]);
    free(e->v);
}

static int env_find(const struct env *e, const char *name)
{
    size_t len = strlen(name);
    int i;

    for (i = 0; i < e->n; i++)
        if (!strncmp(e->v[i], name, len) && e->v[i][len] == '=')
            return i;
    return -1;
}

static void env_unset(struct env *e, const char *name)
{
    int i;

    while ((i = env_find(e, name)) >= 0) {
        memmove(e->v + i, e->v + i + 1, (size_t)(e->n - i) * sizeof(char *));
        e->n--;
    }
}

/* name=value, as setenv(name, value, 1) would (in place when it is set);
 * returns the value's memory, NULL when out of memory (e->failed set). */
static __attribute__((format(printf, 3, 4))) char *env_set(struct env *e, const char *name,
                                                           const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    int i, len;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || e->nown == ENV_OWN_MAX || !(s = malloc(strlen(name) + 1 + (size_t)len + 1))) {
        e->failed = 1;
        return NULL;
    }
    e->own[e->nown++] = s;
    i = sprintf(s, "%s=", name);
    va_start(ap, fmt);
    vsprintf(s + i, fmt, ap);
    va_end(ap);
    if ((len = env_find(e, name)) >= 0) {
        e->v[len] = s;
    } else {
        e->v[e->n++] = s;
        e->v[e->n] = NULL;
    }
    return s + i;
}

/* LISTEN_FDNAMES: the listeners' names joined with ':' ("unknown" for an
 * unnamed one); a ':' in a name would shift every later name. */
static int set_listen_env(struct ps_sup *sup, struct env *e, char **pid_room)
{
    char names[PS_SUP_MAX_LISTENERS * (sizeof(sup->groups[0].spec.name) + 1) + 1];
    size_t used = 0;
    int g;

    names[0] = '\0';
    for (g = 0; g < sup->ngroups; g++) {
        const char *name = sup->groups[g].spec.name[0] ? sup->groups[g].spec.name : "unknown";
        if (strchr(name, ':'))
            return -EINVAL;
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", g ? ":" : "", name);
    }
    env_set(e, "LISTEN_FDS", "%d", sup->ngroups);
    *pid_room = env_set(e, "LISTEN_PID", "%*s", PID_ROOM, "");
    env_set(e, "LISTEN_FDNAMES", "%s", names);
    return 0;
}

/* The legacy hand-offs (--handoff), for the n listeners the child will have
 * at 3..3+n-1 (named from ours: the same sockets). */
static void set_handoff_env(struct ps_sup *sup, struct env *e, int slot, unsigned gen)
{
    unsigned h = sup->cfg->handoff ? sup->cfg->handoff : PS_HANDOFF_SYSTEMD;
    char name[32], ports[2048], one[160];
    size_t used = 0;
    int i, w, n = sup->ngroups;

    if (!(h & PS_HANDOFF_SYSTEMD)) {
        env_unset(e, "LISTEN_FDS");
        env_unset(e, "LISTEN_PID");
        env_unset(e, "LISTEN_FDNAMES");
    }
    if (h & PS_HANDOFF_EINHORN) {
        /* einhorn's worker libraries: EINHORN_FD_COUNT, EINHORN_FD_<i> = the
         * descriptor number; EINHORN_MASTER_PID must be the parent */
        env_set(e, "EINHORN_FD_COUNT", "%d", n);
        for (i = 0; i < n; i++) {
            snprintf(name, sizeof(name), "EINHORN_FD_%d", i);
            env_set(e, name, "%d", PS_LISTEN_FDS_START + i);
        }
        env_set(e, "EINHORN_MASTER_PID", "%ld", (long)getpid());
    }
    if (h & PS_HANDOFF_SERVER_STARTER) {
        /* Server::Starter: "ADDR=FD;ADDR=FD" in listener order */
        ports[0] = '\0';
        for (i = 0; i < n; i++) {
            starter_name(ps__group_fd(&sup->groups[i], slot), one, sizeof(one));
            w = snprintf(ports + used, sizeof(ports) - used, "%s%s=%d", i ? ";" : "", one,
                         PS_LISTEN_FDS_START + i);
            if (w < 0 || (size_t)w >= sizeof(ports) - used)
                break;
            used += (size_t)w;
        }
        env_set(e, "SERVER_STARTER_PORT", "%s", ports);
        env_set(e, "SERVER_STARTER_GENERATION", "%u", gen);
    }
}

/* ---- the child ---------------------------------------------------------------- */

/* What the child of vfork needs, all of it computed before the fork: the
 * child only makes system calls (async-signal-safe) and writes its pid
 * into the room left for it and its errno into err. */
struct plan {
    const struct ps_sup_config *cfg;
    int fds[PS_SUP_MAX_LISTENERS], n; /* the listeners, to 3..3+n-1 */
    int pass_at;                      /* where cfg->pass_fd goes, or -1 */
    int cpu;                          /* --cpu-affinity: the slot's CPU, or -1 */
    pid_t parent;
    gid_t *gids; /* --user: the supplementary groups (initgroups reads files) */
    int ngids;
    sigset_t mask; /* the worker's signal mask */
    char **envp;
    char *listen_pid, *watchdog_pid; /* rooms for the child's pid, or NULL */
    volatile int err;                /* the child's errno when it did not exec */
};

/* No signal blocked (but SIGUSR1 for serve's reopen), and every signal at
 * its default action, as systemd gives a service: a supervisor started in
 * the background of a shell (`portshare run ... &`, nohup) inherited SIGINT
 * and SIGQUIT ignored, and an ignored disposition survives exec -- a worker
 * drained with INT or QUIT would never hear it.  The parent blocked every
 * signal around vfork (a handler of ours must not run in the child, on our
 * memory): the defaults go in first, then the worker's mask. */
static void child_signals(const struct plan *p)
{
    struct sigaction dfl;
    int sig;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigprocmask(SIG_SETMASK, &p->mask, NULL);
}

/* "123" into room (PID_ROOM bytes), without stdio */
static void put_pid(char *room, pid_t pid)
{
    char digits[PID_ROOM];
    unsigned long v = (unsigned long)pid;
    int n = 0, i;

    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < PID_ROOM - 1);
    for (i = 0; i < n; i++)
        room[i] = digits[n - 1 - i];
    room[n] = '\0';
}

/* The listeners to 3..3+n-1: first lifted above that range so that no dup2
 * overwrites one still needed (the lifted copies are close-on-exec; dup2
 * leaves FD_CLOEXEC clear on its copy). */
static int child_place_fds(const struct plan *p)
{
    int moved[PS_SUP_MAX_LISTENERS], i;

    for (i = 0; i < p->n; i++)
        if ((moved[i] = fcntl(p->fds[i], F_DUPFD_CLOEXEC, PS_LISTEN_FDS_START + p->n)) < 0)
            return -1;
    for (i = 0; i < p->n; i++)
        if (dup2(moved[i], PS_LISTEN_FDS_START + i) < 0)
            return -1;
    return 0;
}

/* Privileges by system call: glibc's setuid() signals every other thread of
 * the process to follow, and initgroups() reads /etc/group (malloc, locks);
 * the groups were read by the parent. */
static int child_drop(const struct plan *p)
{
    if (syscall(SYS_setgroups, (long)p->ngids, p->gids) < 0 ||
        syscall(SYS_setgid, (long)p->cfg->gid) < 0 || syscall(SYS_setuid, (long)p->cfg->uid) < 0)
        return -1;
    return 0;
}

/* In the child of vfork, between fork and exec: never returns.  System
 * calls only (the parent's memory, its malloc and its locks are ours). */
static __attribute__((noreturn, noinline)) void child_exec(struct plan *p)
{
    const struct ps_sup_config *cfg = p->cfg;
    /* above the listeners and the passed descriptor */
    int high = PS_LISTEN_FDS_START + p->n + 1, exec_fd = -1, pass = -1;

    child_signals(p);
    setpgid(0, 0);     /* its own group: ^C reaches the supervisor only; tree.c kills by group */
    if (p->cpu >= 0) { /* best effort: a CPU of our own set */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(p->cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    /* close-on-exec: the kernel has the file open before it closes these */
    if (cfg->exec_path && (exec_fd = open(cfg->exec_path, O_PATH | O_CLOEXEC)) >= 0)
        exec_fd = fcntl(exec_fd, F_DUPFD_CLOEXEC, high);
    if (cfg->exec_path && exec_fd < 0)
        goto fail;
    if (p->pass_at >= 0 && (pass = fcntl(cfg->pass_fd, F_DUPFD_CLOEXEC, high)) < 0)
        goto fail;
    if (cfg->drop_privileges && child_drop(p) < 0)
        goto fail;
    /* after the uid change, which clears it; then make sure the parent did
     * not die before it took effect.  SIGKILL: a worker that ignores SIGTERM
     * must not outlive the supervisor and hold the port (tree.c). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->parent)
        _exit(0);
    if (child_place_fds(p) < 0)
        goto fail;
    if (pass >= 0 && dup2(pass, p->pass_at) < 0) /* dup2 leaves it open across exec */
        goto fail;
    if (p->listen_pid)
        put_pid(p->listen_pid, getpid());
    if (p->watchdog_pid)
        put_pid(p->watchdog_pid, getpid());
    if (exec_fd >= 0)
        fexecve(exec_fd, cfg->argv, p->envp);
    else
        execvpe(cfg->argv[0], cfg->argv, p->envp); /* glibc, musl: no malloc since 2.26 */
fail:
    p->err = errno ? errno : ENOEXEC;
    _exit(127);
}

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

/* --user NAME: its supplementary groups, as initgroups() would set them
 * (malloc'd into p->gids); none for a numeric --user. */
static int plan_groups(struct plan *p)
{
    int n = 64;

    if (!p->cfg->drop_privileges || !p->cfg->user[0])
        return 0;
    for (;;) {
        gid_t *g = realloc(p->gids, (size_t)n * sizeof(gid_t));
        int got = n;
        if (!g)
            return -ENOMEM;
        p->gids = g;
        if (getgrouplist(p->cfg->user, p->cfg->gid, p->gids, &got) >= 0) {
            p->ngids = got;
            return 0;
        }
        if (got <= n) /* no growth asked for: the database failed */
            return -EPERM;
        n = got;
    }
}

/* Everything the child needs, computed here: the environment (e), the
 * listeners of the slot, the groups, the CPU. */
static int plan_make(struct ps_sup *sup, int slot, unsigned gen, struct plan *p, struct env *e)
{
    const struct ps_sup_config *cfg = sup->cfg;
    char *listen_pid = NULL;
    int g, r;

    memset(p, 0, sizeof(*p));
    p->cfg = cfg;
    p->n = sup->ngroups;
    p->parent = getpid();
    p->pass_at = cfg->pass_fd_env ? PS_LISTEN_FDS_START + sup->ngroups : -1;
    p->cpu = cfg->cpu_affinity ? ps__slot_cpu(slot) : -1;
    for (g = 0; g < sup->ngroups; g++) /* a reload's next worker: its generation's own */
        p->fds[g] = ps__group_fd_of(&sup->groups[g], slot, gen != sup->generation);
    sigemptyset(&p->mask);
    if (cfg->on_reopen)
        sigaddset(&p->mask, SIGUSR1); /* kept blocked across exec: see supervisor.h */
    if ((r = env_init(e)) < 0 || (r = plan_groups(p)) < 0 ||
        (r = set_listen_env(sup, e, &listen_pid)) < 0)
        return r;
    set_handoff_env(sup, e, slot, gen);
    if (cfg->pass_fd_env)
        env_set(e, cfg->pass_fd_env, "%d", p->pass_at);
    env_set(e, "PORTSHARE_SLOT", "%d", slot);
    env_set(e, "PORTSHARE_GENERATION", "%u", gen);
    env_set(e, "NOTIFY_SOCKET", "%s", sup->notify_addr);
    if (cfg->watchdog_ms) { /* sd_watchdog_enabled(3) reads these */
        env_set(e, "WATCHDOG_USEC", "%llu", (unsigned long long)cfg->watchdog_ms * 1000ull);
        p->watchdog_pid = env_set(e, "WATCHDOG_PID", "%*s", PID_ROOM, "");
    }
    /* a hand-off that dropped LISTEN_PID leaves its room unused */
    p->listen_pid = listen_pid;
    p->envp = e->v;
    return e->failed ? -ENOMEM : 0;
}

/* vfork: we are suspended until the child has exec'd or exited, with no
 * copy of our page tables (fork cost ~1.7 ms for the supervisor) and no
 * wait for the child to be scheduled (a pipe read cost ~5 ms a worker under
 * load): its exec error is in p->err when we resume.  Every signal stays
 * blocked meanwhile: a handler of ours must not run in the child. */
static pid_t fork_exec(struct plan *p)
{
    sigset_t all, old;
    pid_t pid;

    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid = vfork();
    if (pid == 0)
        child_exec(p);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return pid;
}

int ps__sup_spawn(struct ps_sup *sup, int slot, unsigned gen)
{
    int idx = free_worker_entry(sup), err;
    struct ps_worker *w;
    struct plan p;
    struct env e;
    pid_t pid;

    if (idx < 0)
        return idx;
    restore_backlogs(sup, slot);
    err = plan_make(sup, slot, gen, &p, &e);
    pid = err < 0 ? -1 : fork_exec(&p);
    if (err == 0 && pid < 0)
        err = ps__neg_errno();
    env_free(&e);
    free(p.gids);
    if (err < 0)
        return err;
    /* the child's group exists already: it made it before its exec */
    if (p.err) {
        waitpid(pid, NULL, 0);
        return -p.err;
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

/* Errors that mean the program itself cannot be run (exit 5 at start). */
static int exec_error(int err)
{
    switch (-err) {
    case ENOENT:
    case EACCES:
    case ENOEXEC:
    case ENOTDIR:
    case ELOOP:
    case ENAMETOOLONG:
    case ETXTBSY:
    case EPERM:
    case E2BIG:
        return 1;
    default:
        return 0;
    }
}

int ps__sup_spawn_said(const struct ps_sup *sup, int err, char *buf, size_t len)
{
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};

    if (exec_error(err)) {
        ps__set_error(buf, len, "cannot execute %s: %s", sup->cfg->argv[0], ps_strerror(err));
        return 1;
    }
    if (err != -EMFILE && err != -ENFILE) {
        ps__set_error(buf, len, "cannot start a worker: %s", ps_strerror(err));
        return 0;
    }
    /* the child needs room to move the listeners into place: a limit the
     * listeners just fit under is too low by about one slot's worth */
    getrlimit(RLIMIT_NOFILE, &rl);
    ps__set_error(buf, len,
                  "cannot start a worker: %s (the open-file limit is %lld, hard %lld; a worker "
                  "needs about %d free for a moment: raise LimitNOFILE= or ulimit -n)",
                  ps_strerror(err), rl.rlim_cur == RLIM_INFINITY ? -1LL : (long long)rl.rlim_cur,
                  rl.rlim_max == RLIM_INFINITY ? -1LL : (long long)rl.rlim_max, sup->ngroups + 2);
    return 0;
}
