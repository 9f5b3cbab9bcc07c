/*
 * start.c - the supervisor's start and end: what ps_sup_run changes in the
 * process (and puts back), the listening sockets bound or adopted from
 * systemd, the notify socket, the first generation of workers, and at the
 * end every worker tree and socket gone.  The loop in between is
 * supervisor.c's.
 */
#include "sup_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- signals ------------------------------------------------------------------ */

static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGQUIT);
    sigaddset(set, SIGUSR2);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGTTIN);
    sigaddset(set, SIGTTOU);
}

static int open_signals(struct ps_sup *sup)
{
    sigset_t set;

    signal_set(&set);
    sup->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return sup->sigfd < 0 ? ps__neg_errno() : 0;
}

/* ---- startup -------------------------------------------------------------------- */

/* An adopted socket with SO_REUSEPORT (a .socket unit with ReusePort=yes):
 * open the other slots' sockets beside it, same address and options, so
 * that each worker keeps its own queue and the kernel balances, as in
 * reuseport mode.  The kernel lets them join its group only when we have
 * the uid that created it; if not, it stays one shared socket (logged). */
static void adopt_reuseport(struct ps_sup *sup, struct ps_group *g)
{
    struct ps_spec *sp = &g->spec;
    char err[256], addr[160];
    int on = 0, r;
    socklen_t len = sizeof(on);

    /* host, port, v6only and the backlog systemd gave it (Backlog=) are
     * in the spec already (ps__spec_of_fd) */
    if (sp->proto == PS_PROTO_UNIX || sup->cfg->mode == PS_REUSE_SHARED ||
        getsockopt(g->fds[0], SOL_SOCKET, SO_REUSEPORT, &on, &len) < 0 || !on)
        return;
    sp->reuse = PS_REUSE_PORT;
    g->shared = 0;
    g->order[0] = 0;
    r = ps__group_grow(g, sup->target, err, sizeof(err));
    if (r == 0)
        return;
    while (g->nfds > 1)
        ps__group_close_last(g);
    g->shared = 1;
    sp->reuse = PS_REUSE_SHARED;
    ps_spec_format(sp, addr, sizeof(addr));
    ps__sup_log(sup, PS_LOG_WARN, "adopt_shared",
                "the socket for %s from systemd has SO_REUSEPORT, but no socket can join it "
                "(%s; the kernel wants the uid that created it): one shared socket",
                addr, err);
}

/* Adopt sockets systemd passed us (LISTEN_FDS): each is shared by all slots,
 * unless it has SO_REUSEPORT (adopt_reuseport). */
static int adopt_systemd(struct ps_sup *sup, char *err, size_t errlen)
{
    char **names = NULL;
    int n, i;

    n = ps_listen_fds(1, &names);
    if (n < 0) {
        ps__set_error(err, errlen, "bad LISTEN_FDS from systemd: %s", ps_strerror(n));
        return n;
    }
    for (i = 0; i < n && sup->ngroups < PS_SUP_MAX_LISTENERS; i++) {
        struct ps_group *g = &sup->groups[sup->ngroups++];
        struct ps_spec *sp = &g->spec;
        int r;
        memset(g, 0, sizeof(*g));
        ps__lgroup_init(&g->lg, &g->spec, 1); /* no socket yet, none prepared */
        r = ps__spec_of_fd(PS_LISTEN_FDS_START + i, sp);
        if (r < 0) {
            n = r;
            ps__set_error(err, errlen, "LISTEN_FDS: descriptor %d is not a socket: %s",
                          PS_LISTEN_FDS_START + i, ps_strerror(n));
            sup->ngroups--;
            break;
        }
        sp->reuse = PS_REUSE_SHARED; /* until adopt_reuseport finds company for it */
        if (names && strcmp(names[i], "unknown"))
            snprintf(sp->name, sizeof(sp->name), "%s", names[i]);
        g->shared = 1;
        g->inherited = 1;
        g->nfds = 1;
        g->fds[0] = PS_LISTEN_FDS_START + i;
        adopt_reuseport(sup, g);
    }
    ps_listen_names_free(names);
    return n;
}

/* The same address given twice would be two groups on one port: the second
 * would join the first's reuseport group (or fail to bind).  Port 0 twice
 * is two different ports, which is fine. */
static int check_duplicates(const struct ps_sup_config *cfg, char *err, size_t errlen)
{
    char a[160], b[160];
    int i, j;

    for (i = 0; i < cfg->nspecs; i++)
        for (j = i + 1; j < cfg->nspecs; j++) {
            if (cfg->specs[i].proto != PS_PROTO_UNIX &&
                (cfg->specs[i].port == 0 || cfg->specs[j].port == 0))
                continue;
            ps_spec_format(&cfg->specs[i], a, sizeof(a));
            ps_spec_format(&cfg->specs[j], b, sizeof(b));
            if (!strcmp(a, b)) {
                ps__set_error(err, errlen, "listen address %s is given twice (-l %s, -l %s)", a,
                              cfg->specs[i].text, cfg->specs[j].text);
                return -EINVAL;
            }
        }
    return 0;
}

static int bind_all(struct ps_sup *sup, char *err, size_t errlen)
{
    struct ps_sup_config *cfg = sup->cfg;
    int i, r;

    for (i = 0; i < cfg->nspecs; i++) {
        struct ps_group *g = &sup->groups[sup->ngroups];
        memset(g, 0, sizeof(*g));
        g->spec = cfg->specs[i];
        g->shared = cfg->mode == PS_REUSE_SHARED || g->spec.reuse == PS_REUSE_SHARED;
        r = ps__group_open(g, sup->target, err, errlen);
        if (r < 0)
            return r;

        cfg->specs[i] = g->spec; /* the port the kernel chose, for status */
        sup->ngroups++;
    }
    return 0;
}

/* Each group's steering, decided before any worker runs. */
static int steer_init(struct ps_sup *sup, char *err, size_t errlen)
{
    int g, r;

    for (g = 0; g < sup->ngroups; g++) {
        r = ps__group_steer_init(&sup->groups[g], sup->cfg->steering);
        if (r < 0) {
            ps__set_error(err, errlen, "--steering ebpf: cannot load the eBPF program: %s",
                          sup->groups[g].steer_why);
            return r;
        }
        ps__sup_steer_said(sup, &sup->groups[g]);
    }
    return 0;
}

static void log_listeners(struct ps_sup *sup)
{
    char addr[160];
    int g;

    for (g = 0; g < sup->ngroups; g++) {
        ps_spec_format(&sup->groups[g].spec, addr, sizeof(addr));
        ps__sup_log(sup, PS_LOG_INFO, "listening", "listening on %s (%d socket%s%s%s)", addr,
                    sup->groups[g].nfds, sup->groups[g].nfds == 1 ? "" : "s",
                    sup->groups[g].inherited ? ", from systemd" : "",
                    sup->groups[g].shared ? ", shared" : ", reuseport");
    }
}

static int open_notify(struct ps_sup *sup, char *err, size_t errlen)
{
    unsigned rnd = (unsigned)ps__sup_now(sup) ^ (unsigned)getpid() * 2654435761u;

    /* abstract: nothing on disk to clean up, reachable after a uid drop; a
     * sender is identified by its kernel-checked credentials only */
    snprintf(sup->notify_addr, sizeof(sup->notify_addr), "@portshare/%ld/%08x/notify",
             (long)getpid(), rnd);
    sup->notify_fd = ps_notify_listen(sup->notify_addr);
    if (sup->notify_fd < 0) {
        ps__set_error(err, errlen, "cannot open the notify socket: %s",
                      ps_strerror(sup->notify_fd));
        return sup->notify_fd;
    }
    return 0;
}

/* The first generation: every slot starts at once (its EV_START), and a
 * program that cannot be executed fails the start instead of a crash loop. */
static int start_workers(struct ps_sup *sup)
{
    int s;

    sup->generation = sup->next_generation = 1;
    sup->nslots = sup->target;
    for (s = 0; s < sup->nslots; s++) {
        ps__slot_open(sup, s);
        if (ps__slot_event(sup, s, EV_START, 0, "start") != SL_STARTING)
            return sup->spawn_error; /* said by the caller */
    }
    return 0;
}

static void shutdown_all(struct ps_sup *sup)
{
    uint64_t end;
    int g, i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid) {
            ps__tree_kill(sup, &sup->workers[i]);
            waitpid(sup->workers[i].pid, NULL, 0);
            sup->workers[i].pid = 0;
        }
    ps__sup_reap_strays(sup, 1);
    /* the strays are our children (we are their subreaper): wait until
     * they are gone, or one that still holds a listener would keep the
     * port from the next supervisor for a moment after we exit (seen
     * under load by test_run_tree); bounded, SIGKILL is final */
    for (end = ps__sup_now(sup) + 2000; ps__sup_now(sup) < end;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0) /* ECHILD: none left */
            break;
        if (r == 0) /* still dying */
            poll(NULL, 0, 10);
    }
    for (g = 0; g < sup->ngroups; g++) {
        if (sup->groups[g].spec.proto == PS_PROTO_UNIX && !sup->groups[g].inherited &&
            sup->groups[g].spec.host[0] == '/')
            unlink(sup->groups[g].spec.host);
        ps__group_close(&sup->groups[g]);
    }
    ps__control_close(sup);
    ps__watch_close(sup);
    ps__health_close(sup);
    ps__endpoints_close(sup);
    ps__close(sup->notify_fd);
    ps__close(sup->sigfd);
    sup->notify_fd = sup->sigfd = -1;
}

/* Whatever descriptors we inherited beyond stdio (a shell's, a CI
 * runner's...) must not reach the workers: a worker holds exactly its
 * listeners.  Ours are close-on-exec already; make theirs so too. */
static void cloexec_inherited(void)
{
    struct dirent *de;
    DIR *d = opendir("/proc/self/fd");
    int self_fd, fd, flags;

    if (!d)
        return;
    self_fd = dirfd(d);
    while ((de = readdir(d))) {
        fd = atoi(de->d_name);
        if (de->d_name[0] == '.' || fd < 3 || fd == self_fd)
            continue;
        flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(d);
}

void ps__sup_init(struct ps_sup *sup, struct ps_sup_config *cfg, const struct ps_sup_sys *sys)
{
    struct ps_conns *conns = sup->conns;
    struct ps_health *health = sup->health;
    int s;

    ps__health_reset(sup);
    memset(sup, 0, sizeof(*sup));
    sup->conns = conns;   /* allocated once (connsrv.c) */
    sup->health = health; /* and health.c */
    sup->cfg = cfg;
    sup->sys = sys;
    sup->target = cfg->workers;
    sup->sigfd = sup->notify_fd = sup->control_fd = -1;
    sup->metrics_fd = sup->agent_fd = -1;
    sup->upgrade.client = -1;
    sup->started_ms = sup->checked_ms = ps__sup_now(sup);
    sup->started_wall = time(NULL);
    for (s = 0; s < PS_SUP_MAX_WORKERS; s++) { /* none exists until it is opened */
        sup->slots[s].state = SL_CLOSED;
        sup->slots[s].current = sup->slots[s].next = sup->slots[s].leaving = -1;
    }
}

/* What ps_sup_run changes in the process and puts back when it returns:
 * the signal mask, SIGPIPE, NOTIFY_SOCKET, the subreaper flag. */
struct saved_process {
    sigset_t mask;
    struct sigaction sigpipe;
    char *notify_socket;
    int subreaper;
};

static void save_process(struct saved_process *p)
{
    sigset_t set;
    const char *ns = getenv("NOTIFY_SOCKET");

    signal_set(&set);
    sigprocmask(SIG_BLOCK, &set, &p->mask);
    sigaction(SIGPIPE, &(struct sigaction){.sa_handler = SIG_IGN}, &p->sigpipe);
    p->notify_socket = ns ? strdup(ns) : NULL;
    p->subreaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &p->subreaper);
}

static void restore_process(struct saved_process *p)
{
    if (p->notify_socket)
        setenv("NOTIFY_SOCKET", p->notify_socket, 1);
    free(p->notify_socket);
    p->notify_socket = NULL;
    prctl(PR_SET_CHILD_SUBREAPER, p->subreaper);
    sigaction(SIGPIPE, &p->sigpipe, NULL);
    sigprocmask(SIG_SETMASK, &p->mask, NULL);
}

static int start_fresh(struct ps_sup *sup, char *err, size_t errlen, enum ps_sup_stage *stage)
{
    int r;

    r = check_duplicates(sup->cfg, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_CONFIG, r;
    r = ps__watch_open(sup, err, errlen);
    if (r < 0)
        return *stage = r == -ENOENT || r == -ENOTDIR || r == -EACCES ? PS_SUP_STAGE_CONFIG
                                                                      : PS_SUP_STAGE_SYSTEM,
               r;
    /* the control socket first: `status` works as soon as the port listens */
    r = ps__control_open(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_CONTROL, r;
    r = adopt_systemd(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_SYSTEM, r;
    if (sup->ngroups + sup->cfg->nspecs == 0) {
        ps__set_error(err, errlen,
                      "nothing to listen on: give -l SPEC (or run under systemd socket "
                      "activation)");
        return *stage = PS_SUP_STAGE_BIND, -EINVAL;
    }
    r = bind_all(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_BIND, r;
    r = ps__endpoints_open(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_BIND, r;
    r = steer_init(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_SYSTEM, r;
    log_listeners(sup);
    r = open_notify(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_SYSTEM, r;
    r = start_workers(sup);
    if (r < 0) /* exit 5 for the program, 6 for the system (the open-file limit) */
        return *stage = ps__sup_spawn_said(sup, r, err, errlen) ? PS_SUP_STAGE_EXEC
                                                                : PS_SUP_STAGE_SYSTEM,
               r;
    return 0;
}

int ps_sup_run(struct ps_sup_config *cfg, char *err, size_t errlen, enum ps_sup_stage *stage)
{
    static struct ps_sup sup; /* large (worker table); one per process */
    const char *state = getenv("PORTSHARE_UPGRADE_STATE");
    struct saved_process saved;
    const char *ns;
    int r;

    *stage = PS_SUP_STAGE_NONE;
    save_process(&saved);
    ps__sup_init(&sup, cfg, &ps__sup_sys_real);
    /* systemd's notify socket is ours; workers get our own */
    ns = getenv("NOTIFY_SOCKET");
    if (ns && *ns)
        snprintf(sup.systemd_notify, sizeof(sup.systemd_notify), "%s", ns);
    unsetenv("NOTIFY_SOCKET");
    cloexec_inherited();
    r = open_signals(&sup);
    if (r == 0)
        r = ps__control_init(&sup);
    if (r == 0)
        r = ps__endpoints_init(&sup);
    if (r == 0)
        r = ps__tree_init();
    if (r < 0) {
        ps__set_error(err, errlen, "cannot set up the supervisor: %s", ps_strerror(r));
        *stage = PS_SUP_STAGE_SYSTEM;
        goto out;
    }
    if (state) {
        r = ps__upgrade_restore(&sup, state, err, errlen);
        unsetenv("PORTSHARE_UPGRADE_STATE");
        if (r == 0)
            r = ps__endpoints_open(&sup, err, errlen); /* adopts what was carried */
        if (r < 0) {
            *stage = PS_SUP_STAGE_SYSTEM;
            goto out;
        }
        if (ps__watch_open(&sup, err, errlen) < 0) /* the new image's own descriptor */
            ps__sup_log(&sup, PS_LOG_WARN, "watch_failed", "%s", err);
        ps__sup_log(&sup, PS_LOG_INFO, "upgraded",
                    "supervisor re-executed in place (pid %ld), %d worker(s) kept", (long)getpid(),
                    ps__sup_live_workers(&sup));
        sup.told_ready = 1;
        sup.sys->notify(&sup, "READY=1");
    } else {
        r = start_fresh(&sup, err, errlen, stage);
        if (r < 0)
            goto out;
    }
    ps__steer_later(&sup);
    r = ps__sup_loop(&sup);
    ps__life_finish(&sup);
    if (r < 0) {
        ps__set_error(err, errlen, "the event loop failed: poll: %s", ps_strerror(r));
        *stage = PS_SUP_STAGE_SYSTEM;
    } else {
        ps__sup_log(&sup, PS_LOG_INFO, "stopped", "stopped");
    }
    ps__control_flush(&sup, 1000);
out:
    shutdown_all(&sup);
    restore_process(&saved);
    return r;
}
