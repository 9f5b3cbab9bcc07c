/*
 * supervisor.c - the supervisor's event loop.
 *
 * Events: signals (through a signalfd), readiness messages (the notify
 * socket), control commands (control.c), timers, and the health of the held
 * listening sockets.  The loop turns each into what it means for one worker
 * (its W_* state), then for its slot (a slot event, slots.c) or for the
 * reload in flight (ops.c).  The listening sockets are created once and
 * held for the supervisor's whole life (DESIGN.md §1); each worker of slot
 * i, of any generation, gets copies of socket i of every listener at fds 3..
 * (the systemd protocol).
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

#define RETIRE_GRACE_MS 500  /* handshakes in flight when steering changed */
#define NOTIFY_HINT_MS  5000 /* say once why a worker is still not ready */
#define CHECK_EVERY_MS  1000 /* held sockets: are they still listening? */
#define PROBE_EVERY_MS  50   /* --ready auto: a starting worker's kernel view */
#define TREE_EVERY      10   /* ... its descendants', every 10th time */

static void real_signal(struct ps_sup *sup, struct ps_worker *w, int sig)
{
    (void)sup;
    if (w->pid > 0)
        kill(w->pid, sig);
}

const struct ps_sup_sys ps__sup_sys_real = {
    .spawn = ps__sup_spawn,
    .signal = real_signal,
    .kill_tree = ps__tree_kill,
};

void ps__sup_tell_systemd(struct ps_sup *sup, const char *state)
{
    char buf[256];

    if (!sup->systemd_notify[0])
        return;
    if (!strcmp(state, "RELOADING=1")) {
        /* Type=notify-reload wants the time the reload started */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ull +
                     (unsigned long long)ts.tv_nsec / 1000);
        state = buf;
    }
    ps_notify_to(sup->systemd_notify, state);
}

int ps__sup_live_workers(const struct ps_sup *sup)
{
    int i, n = 0;

    for (i = 0; i < sup->nworkers; i++)
        n += sup->workers[i].pid != 0;
    return n;
}

/* What a worker is to its slot. */
enum role { ROLE_CURRENT, ROLE_NEXT, ROLE_OTHER };

static enum role role_of(const struct ps_sup *sup, const struct ps_worker *w)
{
    const struct ps_slot *sl = &sup->slots[w->slot];
    int idx = (int)(w - sup->workers);

    if (w->slot >= sup->nslots)
        return ROLE_OTHER;
    if (sl->current == idx)
        return ROLE_CURRENT;
    if (sl->next == idx)
        return ROLE_NEXT;
    return ROLE_OTHER;
}

/* ---- what a worker's event means, by what it is to its slot --------------------- */

/* The reload's new worker failed (it left, exited, was late or hung): it
 * is no longer the slot's next, and the reload rolls back. */
static void next_failed(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    (void)status;
    sup->slots[w->slot].next = -1;
    ps__reload_next_failed(sup, w->slot, why);
}

static void next_stopping(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    char text[160];

    (void)why;
    snprintf(text, sizeof(text), "new worker %ld of slot %d said STOPPING=1", (long)w->pid,
             w->slot);
    next_failed(sup, w, status, text);
}

static void next_exited(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    char text[192], how[96];

    (void)why;
    snprintf(text, sizeof(text), "new worker %ld of slot %d exited with %s", (long)w->pid, w->slot,
             ps__exit_text(status, how, sizeof(how)));
    next_failed(sup, w, status, text);
}

static void next_ready(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    (void)status, (void)why;
    ps__reload_next_ready(sup, w->slot);
}

static void next_late(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    ps__worker_drain(sup, w, "not ready in time");
    next_failed(sup, w, status, why);
}

static void next_hung(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    ps__sup_log(sup, PS_LOG_ERROR, "watchdog", "%s: SIGABRT", why);
    ps__worker_abort(sup, w);
    next_failed(sup, w, status, why);
}

static void other_late(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    (void)status, (void)why;
    ps__worker_drain(sup, w, "not ready in time");
}

static void other_exited(struct ps_sup *sup, struct ps_worker *w, int status, const char *why)
{
    char how[96];

    (void)why;
    ps__sup_log(sup, PS_LOG_INFO, "worker_exited",
                "worker %ld (slot %d, generation %u) exited with %s", (long)w->pid, w->slot,
                w->generation, ps__exit_text(status, how, sizeof(how)));
}

/*
 * The slot's own worker's events are its slot's (the table in slots.c);
 * those of the reload's new worker are the reload's, and those of any
 * other worker (an old generation draining, a leaving one) are these rows.
 * A pair without a row means nothing.
 */
typedef void route_fn(struct ps_sup *sup, struct ps_worker *w, int status, const char *why);

/* clang-format off */
static route_fn *const routes[ROLE_OTHER + 1][EV_COUNT] = {
    [ROLE_NEXT][EV_READY]       = next_ready,
    [ROLE_NEXT][EV_STOPPING]    = next_stopping,
    [ROLE_NEXT][EV_EXIT]        = next_exited,
    [ROLE_NEXT][EV_READY_LATE]  = next_late,
    [ROLE_NEXT][EV_WATCHDOG]    = next_hung,
    [ROLE_OTHER][EV_EXIT]       = other_exited,
    [ROLE_OTHER][EV_READY_LATE] = other_late,
};
/* clang-format on */

static void worker_event(struct ps_sup *sup, struct ps_worker *w, enum ps_slot_event ev, int status,
                         const char *why)
{
    enum role r = role_of(sup, w);

    if (r == ROLE_CURRENT)
        ps__slot_event(sup, w->slot, ev, status, why);
    else if (routes[r][ev])
        routes[r][ev](sup, w, status, why);
}

static struct ps_worker *worker_by_pid(struct ps_sup *sup, pid_t pid)
{
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid == pid)
            return &sup->workers[i];
    return NULL;
}

/* ---- what a worker tells us ------------------------------------------------- */

void ps__worker_ready(struct ps_sup *sup, struct ps_worker *w, const char *how)
{
    if (w->state != W_STARTING)
        return;
    w->state = W_READY;
    w->ready_ms = w->ping_ms = ps__now_ms();
    ps__sup_log(sup, PS_LOG_INFO, "worker_ready", "worker %ld (slot %d, generation %u) ready (%s)",
                (long)w->pid, w->slot, w->generation, how);
    worker_event(sup, w, EV_READY, 0, how);
}

void ps__worker_stopping(struct ps_sup *sup, struct ps_worker *w)
{
    if (w->state != W_STARTING && w->state != W_READY)
        return;
    w->state = W_DRAINING;
    w->deadline_ms = ps__now_ms() + sup->cfg->drain_timeout_ms;
    sup->steer_dirty = 1;
    worker_event(sup, w, EV_STOPPING, 0, "it said STOPPING=1");
}

static void handle_notify(struct ps_sup *sup)
{
    struct ps_notify_msg msg;
    struct ps_worker *w;
    char val[128];

    for (;;) {
        int r = ps_notify_recv(sup->notify_fd, &msg);
        if (r == -EBADMSG)
            continue; /* no credentials or truncated: never trusted */
        if (r < 0)
            break; /* -EAGAIN: all read; anything else: try again next wakeup */
        if (msg.len == 0)
            continue;
        w = worker_by_pid(sup, msg.pid);
        if (!w) /* only a worker's main process speaks for it (NotifyAccess=main) */
            continue;
        w->notified = 1;
        /* written only when present: an absent field keeps the last value */
        ps_notify_field(msg.text, "STATUS", w->status, sizeof(w->status));
        ps_notify_field(msg.text, "X_PORTSHARE_STATS", w->stats, sizeof(w->stats));
        ps_notify_field(msg.text, "X_PORTSHARE_CLOSES", w->closes, sizeof(w->closes));
        if (ps_notify_field(msg.text, "WATCHDOG", val, sizeof(val)) >= 0) {
            if (!strcmp(val, "trigger")) /* sd_notify "WATCHDOG=trigger": fail now */
                w->ping_ms = 0;
            else if (!strcmp(val, "1"))
                w->ping_ms = ps__now_ms();
        }
        if (ps_notify_field(msg.text, "READY", val, sizeof(val)) >= 0 && !strcmp(val, "1"))
            ps__worker_ready(sup, w, "READY=1");
        if (ps_notify_field(msg.text, "STOPPING", val, sizeof(val)) >= 0 && !strcmp(val, "1"))
            ps__worker_stopping(sup, w);
    }
}

/* ---- exits -------------------------------------------------------------------- */

void ps__worker_exited(struct ps_sup *sup, struct ps_worker *w, int status)
{
    worker_event(sup, w, EV_EXIT, status, "its worker exited");
    ps__slot_leaver_gone(sup, w);
    w->pid = 0;
    sup->steer_dirty = 1;
}

static void reap(struct ps_sup *sup)
{
    struct ps_worker *w;
    int status, any = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        w = worker_by_pid(sup, pid);
        if (w) {
            ps__worker_exited(sup, w, status);
            /* what it started and left in its group goes with it (here, not
             * in ps__worker_exited: that one only keeps the books, and the
             * unit test drives it with pids that are not processes) */
            kill(-pid, SIGKILL);
            any = 1;
        }
    }
    if (any)
        ps__tree_reap_strays(sup, 0);
}

/* ---- timers ------------------------------------------------------------------ */

/* A retiring slot's worker keeps accepting until its socket's queue is
 * empty (closing a reuseport socket would reset what is queued). */
static int retire_done(struct ps_sup *sup, int s, uint64_t now)
{
    int g;

    /* with eBPF its socket hands the queue over when it shuts down: only
     * the steering must have been updated first */
    if (ps__sup_migrates(sup))
        return !sup->steer_dirty;
    if (now - sup->slots[s].retire_since >= sup->cfg->drain_timeout_ms)
        return 1;
    if (now - sup->slots[s].retire_since < RETIRE_GRACE_MS)
        return 0;
    for (g = 0; g < sup->ngroups; g++) {
        unsigned queued = 0, limit = 0;
        if (sup->groups[g].shared)
            continue;
        if (ps_listen_queue(ps__group_fd(&sup->groups[g], s), &queued, &limit) == 0 && queued)
            return 0;
    }
    return 1;
}

static void ready_late(struct ps_sup *sup, struct ps_worker *w)
{
    char why[160];

    snprintf(why, sizeof(why), "worker %ld of slot %d not ready within %u ms", (long)w->pid,
             w->slot, sup->cfg->ready_timeout_ms);
    worker_event(sup, w, EV_READY_LATE, 0, why);
}

static void watchdog_late(struct ps_sup *sup, struct ps_worker *w)
{
    char why[160];

    snprintf(why, sizeof(why), "worker %ld of slot %d sent no WATCHDOG=1 for %u ms", (long)w->pid,
             w->slot, sup->cfg->watchdog_ms);
    worker_event(sup, w, EV_WATCHDOG, 0, why);
}

/* Which readiness rules apply to a starting worker (--ready): a worker that
 * sent anything on NOTIFY_SOCKET speaks the protocol, and --ready auto then
 * waits for its READY=1. */
static int probe_applies(const struct ps_sup_config *cfg, const struct ps_worker *w)
{
    return cfg->ready_mode == PS_READY_AUTO && !w->notified;
}

/* --ready delay: always (a delay of 0: at once); --ready auto: for a worker
 * that does not notify, unless the delay is 0 (no fallback) */
static int delay_applies(const struct ps_sup_config *cfg, const struct ps_worker *w)
{
    return cfg->ready_mode == PS_READY_DELAY || (cfg->ready_delay_ms && probe_applies(cfg, w));
}

/* Look at what the kernel shows of a starting worker, every PROBE_EVERY_MS;
 * every TREE_EVERY-th look at the processes it started instead. */
static void probe_ready(struct ps_sup *sup, struct ps_worker *w, uint64_t now)
{
    char how[192];
    pid_t pid = w->pid;
    int tree;

    if (now < w->probe_ms)
        return;
    tree = w->probes++ % TREE_EVERY == TREE_EVERY - 1;
    w->probe_ms = now + PROBE_EVERY_MS;
    if (!ps__ready_probe(sup, w->pid, w->slot, tree, how, sizeof(how)))
        return;
    /* A datagram may have come in since poll() returned: a worker that said
     * STATUS= before putting its listeners in its epoll set has spoken the
     * protocol by the time we see them there, and must then wait for its
     * READY=1.  Read what is queued before calling it ready. */
    handle_notify(sup);
    if (w->pid == pid && w->state == W_STARTING && probe_applies(sup->cfg, w))
        ps__worker_ready(sup, w, how);
}

static void not_ready_hint(struct ps_sup *sup, struct ps_worker *w)
{
    const struct ps_sup_config *cfg = sup->cfg;

    w->hinted = 1;
    if (w->notified)
        ps__sup_log(sup, PS_LOG_WARN, "not_ready_hint",
                    "worker %ld speaks sd_notify but has not sent READY=1 after %d s; a worker "
                    "that notifies is ready on READY=1 only (--ready delay counts it ready "
                    "after --ready-delay anyway)",
                    (long)w->pid, NOTIFY_HINT_MS / 1000);
    else
        ps__sup_log(sup, PS_LOG_WARN, "not_ready_hint",
                    "worker %ld has not sent READY=1 after %d s; if %s does not support "
                    "sd_notify (and does not wait on its listeners), use --ready delay",
                    (long)w->pid, NOTIFY_HINT_MS / 1000, cfg->argv[0]);
}

static void worker_timers(struct ps_sup *sup, struct ps_worker *w, uint64_t now)
{
    const struct ps_sup_config *cfg = sup->cfg;

    switch (w->state) {
    case W_STARTING:
        if (probe_applies(cfg, w)) {
            probe_ready(sup, w, now);
            if (w->state != W_STARTING)
                return;
        }
        /* > and + 1 below: the clock is in whole milliseconds, so ">=" could
         * call it ready up to a millisecond before the delay has passed */
        if (delay_applies(cfg, w) && now - w->started_ms > cfg->ready_delay_ms) {
            w->ready_guessed = 1; /* a guess: stall.c will not kill it for it */
            ps__worker_ready(sup, w, "alive for --ready-delay");
            return;
        }
        if (!delay_applies(cfg, w) && !w->hinted && now - w->started_ms >= NOTIFY_HINT_MS)
            not_ready_hint(sup, w);
        if (now >= w->deadline_ms)
            ready_late(sup, w);
        break;
    case W_READY:
        if (cfg->watchdog_ms && now - w->ping_ms >= cfg->watchdog_ms)
            watchdog_late(sup, w);
        break;
    case W_DRAINING:
    case W_KILLED:
        if (now < w->deadline_ms)
            break;
        ps__sup_log(sup, PS_LOG_WARN, "worker_killed",
                    "worker %ld (slot %d) still running %s: SIGKILL to its process group",
                    (long)w->pid, w->slot,
                    w->state == W_KILLED ? "after SIGKILL" : "after the drain timeout");
        ps__worker_kill(sup, w);
        break;
    case W_STATE_COUNT:
        break;
    }
}

/* A held socket that no longer listens (a worker called shutdown(2) on its
 * copy) refuses every client of its slot, or of all slots when shared:
 * listen on it again and tell the slots. */
static void check_listeners(struct ps_sup *sup)
{
    char why[320], addr[160];
    int g, i, s, r;

    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (gr->spec.proto == PS_PROTO_UDP)
            continue;
        for (i = 0; i < gr->nfds; i++) {
            /* shut down on purpose, for its queue to move on (slots.c) */
            if (gr->down[i])
                continue;
            r = ps__group_revive(gr, i);
            if (r == 0)
                continue;
            ps_spec_format(&gr->spec, addr, sizeof(addr));
            if (r < 0) {
                ps__sup_log(sup, PS_LOG_ERROR, "listener_dead",
                            "socket %d of %s no longer listens and cannot listen again: %s", i,
                            addr, ps_strerror(r));
                continue;
            }
            snprintf(why, sizeof(why),
                     "socket %d of %s had stopped listening (a worker called shutdown() on it); "
                     "listening again",
                     i, addr);
            if (gr->shared) {
                for (s = 0; s < sup->nslots; s++)
                    ps__slot_event(sup, s, EV_LISTENER_LOST, 0, why);
            } else if (i < sup->nslots) {
                ps__slot_event(sup, i, EV_LISTENER_LOST, 0, why);
            }
        }
    }
}

void ps__sup_run_timers(struct ps_sup *sup)
{
    uint64_t now = ps__now_ms();
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid)
            worker_timers(sup, &sup->workers[i], now);
    for (i = 0; i < sup->nslots; i++) {
        const struct ps_slot *sl = &sup->slots[i];
        if (sl->state == SL_BACKOFF && now >= sl->backoff_until)
            ps__slot_event(sup, i, EV_START, 0, "start");
        else if (sl->state == SL_RETIRING && retire_done(sup, i, now))
            ps__slot_event(sup, i, EV_QUEUE_EMPTY, 0, "scaled down");
    }
    if (sup->lameduck_until && now >= sup->lameduck_until) {
        sup->lameduck_until = 0;
        ps__sup_log(sup, PS_LOG_INFO, "lameduck_over", "lame duck over: draining");
        ps__op_stop(sup, NULL);
    }
    if (sup->stopping && now >= sup->stop_deadline)
        for (i = 0; i < sup->nworkers; i++)
            if (sup->workers[i].pid && sup->workers[i].state != W_KILLED)
                ps__worker_kill(sup, &sup->workers[i]);
    ps__watch_timer(sup, now);
    ps__sup_check_stalls(sup, now);
    if (now - sup->checked_ms >= CHECK_EVERY_MS) {
        sup->checked_ms = now;
        check_listeners(sup);
    }
    ps__sup_close_retired(sup);
}

static void earlier(uint64_t *next, uint64_t t)
{
    if (t < *next)
        *next = t;
}

/* How long poll() may sleep: until the nearest deadline, at most 1 s. */
static int next_timeout(const struct ps_sup *sup)
{
    uint64_t now = ps__now_ms(), next = now + CHECK_EVERY_MS;
    int i;

    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        if (!w->pid)
            continue;
        /* only the deadline of the worker's state: a ready worker's old
         * ready deadline must not wake us (busy loop) */
        if (w->state != W_READY)
            earlier(&next, w->deadline_ms);
        if (w->state == W_READY && sup->cfg->watchdog_ms)
            earlier(&next, w->ping_ms + sup->cfg->watchdog_ms);
        if (w->state != W_STARTING)
            continue;
        if (probe_applies(sup->cfg, w))
            earlier(&next, w->probe_ms);
        if (delay_applies(sup->cfg, w))
            earlier(&next, w->started_ms + sup->cfg->ready_delay_ms + 1);
        else if (!w->hinted)
            earlier(&next, w->started_ms + NOTIFY_HINT_MS);
    }
    for (i = 0; i < sup->nslots; i++) {
        const struct ps_slot *sl = &sup->slots[i];
        /* only a back-off the timer can act on (the row's guard) */
        if (sl->state == SL_BACKOFF && ps__slot_can(sup, i, EV_START))
            earlier(&next, sl->backoff_until);
        if (sl->state == SL_RETIRING)
            earlier(&next, now + 50);
    }
    if (sup->steer_dirty) /* an eBPF map update to try again */
        earlier(&next, now + 50);
    earlier(&next, ps__stall_next(sup));
    if (sup->stopping)
        earlier(&next, sup->stop_deadline);
    if (sup->lameduck_until)
        earlier(&next, sup->lameduck_until);
    earlier(&next, ps__control_next_deadline(sup));
    earlier(&next, ps__watch_deadline(sup));
    earlier(&next, ps__endpoints_next_deadline(sup));
    return next <= now ? 0 : (int)(next - now);
}

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

/* SIGUSR1: the configuration's hook (portshare serve reopens its access
 * log), then every live worker gets SIGUSR1 to do the same.  Without a hook
 * (portshare run) it is ignored: SIGUSR1 kills a program that does not
 * expect it, so it is not passed on. */
static void reopen(struct ps_sup *sup)
{
    char err[256] = "";
    int i;

    if (!sup->cfg->on_reopen)
        return;
    ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGUSR1: reopen");
    if (sup->cfg->on_reopen(sup->cfg->reopen_ctx, err, sizeof(err)) < 0)
        ps__sup_log(sup, PS_LOG_WARN, "reopen_failed", "%s", err);
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid > 0)
            sup->sys->signal(sup, &sup->workers[i], SIGUSR1);
}

static void handle_signals(struct ps_sup *sup)
{
    struct signalfd_siginfo si;
    char err[256];
    int r = 0;

    while (read(sup->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(sup);
            break;
        case SIGHUP:
            ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGHUP: reload");
            r = ps__op_request(sup, OP_RELOAD, 0, NULL, err, sizeof(err));
            break;
        case SIGTERM:
            /* --lameduck: first tell the balancer; a second SIGTERM, or
             * SIGINT / SIGQUIT, stops at once */
            if (sup->cfg->lameduck_ms && !sup->lameduck && !sup->stopping) {
                ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGTERM: lame duck, then stop");
                ps__op_lameduck(sup, sup->cfg->lameduck_ms, NULL);
                break;
            }
            ps__op_stop(sup, NULL);
            break;
        case SIGINT:
        case SIGQUIT:
            ps__op_stop(sup, NULL);
            break;
        case SIGUSR2:
            ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGUSR2: upgrade");
            r = ps__op_request(sup, OP_UPGRADE, 0, NULL, err, sizeof(err));
            break;
        case SIGUSR1:
            reopen(sup);
            break;
        case SIGTTIN:
        case SIGTTOU: {
            /* relative to the last count asked for, queued ones included */
            int n = sup->target, i;
            for (i = 0; i < sup->nqueued; i++)
                if (sup->queue[i].kind == OP_SCALE)
                    n = sup->queue[i].n;
            n += si.ssi_signo == SIGTTIN ? 1 : -1;
            r = ps__op_request(sup, OP_SCALE, n, NULL, err, sizeof(err));
            break;
        }
        }
        if (r < 0) {
            ps__sup_log(sup, PS_LOG_WARN, "signal_refused", "%s: %s", strsignal((int)si.ssi_signo),
                        err);
            r = 0;
        }
    }
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
    unsigned queued = 0, limit = 0;
    int on = 0, r;
    socklen_t len = sizeof(on);

    if (sp->proto == PS_PROTO_UNIX || sup->cfg->mode == PS_REUSE_SHARED ||
        getsockopt(g->fds[0], SOL_SOCKET, SO_REUSEPORT, &on, &len) < 0 || !on)
        return;
    if (sp->addr.ss_family == AF_INET) {
        sp->port = ntohs(((struct sockaddr_in *)&sp->addr)->sin_port);
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sp->addr)->sin_addr, sp->host,
                  sizeof(sp->host));
    } else if (sp->addr.ss_family == AF_INET6) {
        sp->port = ntohs(((struct sockaddr_in6 *)&sp->addr)->sin6_port);
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sp->addr)->sin6_addr, sp->host,
                  sizeof(sp->host));
        len = sizeof(sp->v6only);
        getsockopt(g->fds[0], IPPROTO_IPV6, IPV6_V6ONLY, &sp->v6only, &len);
    } else {
        return;
    }
    /* the backlog systemd gave it (Backlog=): a listener's TCP_INFO says */
    sp->backlog =
        sp->proto == PS_PROTO_TCP && ps_listen_queue(g->fds[0], &queued, &limit) == 0 && limit
            ? (int)limit
            : 4096;
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
        int type = 0;
        socklen_t len = sizeof(type);
        memset(g, 0, sizeof(*g));
        sp->addrlen = sizeof(sp->addr);
        if (getsockname(PS_LISTEN_FDS_START + i, (struct sockaddr *)&sp->addr, &sp->addrlen) < 0) {
            n = ps__neg_errno();
            ps__set_error(err, errlen, "LISTEN_FDS: descriptor %d is not a socket: %s",
                          PS_LISTEN_FDS_START + i, ps_strerror(n));
            sup->ngroups--;
            break;
        }
        getsockopt(PS_LISTEN_FDS_START + i, SOL_SOCKET, SO_TYPE, &type, &len);
        sp->proto = sp->addr.ss_family == AF_UNIX ? PS_PROTO_UNIX
                    : type == SOCK_DGRAM          ? PS_PROTO_UDP
                                                  : PS_PROTO_TCP;
        sp->reuse = PS_REUSE_SHARED;
        if (names && strcmp(names[i], "unknown"))
            snprintf(sp->name, sizeof(sp->name), "%s", names[i]);
        ps_spec_format(sp, sp->text, sizeof(sp->text));
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
    unsigned rnd = (unsigned)ps__now_ms() ^ (unsigned)getpid() * 2654435761u;

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
static int start_workers(struct ps_sup *sup, char *err, size_t errlen)
{
    int s;

    sup->generation = sup->next_generation = 1;
    sup->nslots = sup->target;
    for (s = 0; s < sup->nslots; s++) {
        ps__slot_open(sup, s);
        if (ps__slot_event(sup, s, EV_START, 0, "start") != SL_STARTING) {
            ps__set_error(err, errlen, "cannot execute %s: %s", sup->cfg->argv[0],
                          ps_strerror(sup->spawn_error));
            return sup->spawn_error;
        }
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
    ps__tree_reap_strays(sup, 1);
    /* the strays are our children (we are their subreaper): wait until
     * they are gone, or one that still holds a listener would keep the
     * port from the next supervisor for a moment after we exit (seen
     * under load by test_run_tree); bounded, SIGKILL is final */
    for (end = ps__now_ms() + 2000; ps__now_ms() < end;) {
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
    ps__endpoints_close(sup);
    ps__close(sup->notify_fd);
    ps__close(sup->sigfd);
    sup->notify_fd = sup->sigfd = -1;
}

/* ---- the loop ------------------------------------------------------------------- */

static void loop(struct ps_sup *sup)
{
    struct pollfd pfd[3 + 1 + PS_SUP_MAX_CLIENTS + PS_EP_POLL_MAX];
    int n, nctl, nep;

    while (!(sup->stopping && ps__sup_live_workers(sup) == 0)) {
        ps__op_run_queue(sup);
        if (sup->steer_dirty)
            ps__sup_steer(sup);
        pfd[0] = (struct pollfd){.fd = sup->sigfd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = sup->notify_fd, .events = POLLIN};
        pfd[2] = (struct pollfd){.fd = sup->watch_fd, .events = POLLIN}; /* -1: not polled */
        nctl = ps__control_poll_fill(sup, pfd + 3, ps__now_ms());
        nep = ps__endpoints_poll_fill(sup, pfd + 3 + nctl, ps__now_ms());
        n = poll(pfd, (nfds_t)(3 + nctl + nep), next_timeout(sup));
        if (n < 0 && errno != EINTR) {
            ps__sup_log(sup, PS_LOG_ERROR, "poll_failed", "poll: %s; stopping", strerror(errno));
            break;
        }
        if (n > 0) {
            if (pfd[0].revents)
                handle_signals(sup);
            if (pfd[1].revents)
                handle_notify(sup);
            if (pfd[2].revents)
                ps__watch_read(sup);
        }
        ps__control_poll_done(sup, pfd + 3, n > 0 ? nctl : 0, ps__now_ms());
        ps__endpoints_poll_done(sup, pfd + 3 + nctl, n > 0 ? nep : 0, ps__now_ms());
        ps__sup_run_timers(sup);
    }
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

void ps__sup_init(struct ps_sup *sup, struct ps_sup_config *cfg)
{
    struct ps_client *clients = sup->clients;
    struct ps_endpoint *endpoints = sup->endpoints;
    int s;

    memset(sup, 0, sizeof(*sup));
    sup->clients = clients;     /* allocated once (control.c) */
    sup->endpoints = endpoints; /* and endpoint.c */
    sup->cfg = cfg;
    sup->sys = &ps__sup_sys_real;
    sup->target = cfg->workers;
    sup->sigfd = sup->notify_fd = sup->control_fd = sup->watch_fd = -1;
    sup->metrics_fd = sup->agent_fd = -1;
    sup->upgrade_client = -1;
    for (s = 0; s < PS_SUP_MAX_WORKERS; s++) { /* none exists until it is opened */
        sup->slots[s].state = SL_CLOSED;
        sup->slots[s].current = sup->slots[s].next = sup->slots[s].leaving = -1;
    }
    sup->started_ms = sup->checked_ms = ps__now_ms();
    sup->started_wall = time(NULL);
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
    r = start_workers(sup, err, errlen);
    if (r < 0)
        return *stage = PS_SUP_STAGE_EXEC, r;
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
    ps__sup_init(&sup, cfg);
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
        ps__sup_tell_systemd(&sup, "READY=1");
    } else {
        r = start_fresh(&sup, err, errlen, stage);
        if (r < 0)
            goto out;
    }
    sup.steer_dirty = 1;
    loop(&sup);
    ps__op_finish_all(&sup);
    ps__sup_log(&sup, PS_LOG_INFO, "stopped", "stopped");
    ps__control_flush(&sup, 1000);
    r = 0;
out:
    shutdown_all(&sup);
    restore_process(&saved);
    return r;
}
