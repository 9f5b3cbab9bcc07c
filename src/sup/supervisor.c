/*
 * supervisor.c - the supervisor's event loop.
 *
 * Events: signals (through a signalfd), readiness messages (the notify
 * socket), control commands (control.c), timers, and the health of the held
 * listening sockets.  The loop turns each into what it means for one worker
 * (its W_* state), then for its slot (a slot event, slots.c) or for the
 * reload in flight (ops.c).  The listening sockets are created once and
 * held for the supervisor's whole life (docs/DESIGN.md, "Who owns a socket"); each worker of slot
 * i, of any generation, gets copies of socket i of every listener at fds 3..
 * (the systemd protocol).
 */
#include "sup_internal.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RETIRE_GRACE_MS 500  /* handshakes in flight when steering changed */
#define NOTIFY_HINT_MS  5000 /* say once why a worker is still not ready */
#define CHECK_EVERY_MS  1000 /* held sockets: are they still listening? */
#define NOTIFY_BATCH    64   /* notify datagrams read per wakeup */
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
    .now = ps__now_ms,
    .notify = ps__sup_notify_systemd,
    .answer = ps__control_answer,
    .upgrade = ps__upgrade_start,
};

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
    if (!ps__worker_step(sup, w, WE_READY, how))
        return;
    worker_event(sup, w, EV_READY, 0, how);
}

void ps__worker_stopping(struct ps_sup *sup, struct ps_worker *w)
{
    if (!ps__worker_step(sup, w, WE_STOPPING, "it said STOPPING=1"))
        return;
    worker_event(sup, w, EV_STOPPING, 0, "it said STOPPING=1");
}

static void handle_notify(struct ps_sup *sup)
{
    struct ps_notify_msg msg;
    struct ps_worker *w;
    char val[128];
    int n;

    /* At most NOTIFY_BATCH a wakeup: the socket is an abstract one, which
     * any local process can send to; a flood of datagrams must not keep
     * the loop from its other events (what is left is read next turn) */
    for (n = 0; n < NOTIFY_BATCH; n++) {
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
        if (ps_notify_field(msg.text, "STATUS", w->status, sizeof(w->status)) >= 0)
            ps__text_clean(w->status); /* shown on terminals, in JSON */
        if (ps_notify_field(msg.text, "X_PORTSHARE_STATS", w->stats, sizeof(w->stats)) >= 0)
            ps__text_clean(w->stats);
        if (ps_notify_field(msg.text, "X_PORTSHARE_CLOSES", w->closes, sizeof(w->closes)) >= 0)
            ps__text_clean(w->closes);
        if (ps_notify_field(msg.text, "WATCHDOG", val, sizeof(val)) >= 0) {
            if (!strcmp(val, "trigger")) /* sd_notify "WATCHDOG=trigger": fail now */
                w->ping_ms = 0;
            else if (!strcmp(val, "1"))
                w->ping_ms = ps__sup_now(sup);
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
    ps__steer_later(sup);
}

static void reap(struct ps_sup *sup)
{
    struct ps_worker *w;
    int status, any = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (ps__upgrade_reaped(sup, pid, status))
            continue;
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
        ps__sup_reap_strays(sup, 0);
}

void ps__sup_reap_strays(struct ps_sup *sup, int all)
{
    pid_t keep[2];

    ps__tree_reap_strays(sup, all, keep, ps__upgrade_children(sup, keep));
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
        return !sup->steer.dirty;
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
    if (!ps__ready_probe(sup, w->pid, w->slot, w->generation != sup->generation, tree, how,
                         sizeof(how)))
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
    case W_LINGERING:
        ps__flow_linger_check(sup, w, now);
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

void ps__sup_run_timers(struct ps_sup *sup)
{
    uint64_t now = ps__sup_now(sup);
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
        else if (sl->state == SL_CLOSING)
            ps__slot_handover_check(sup, i, now);
    }
    ps__life_timers(sup, now);
    ps__watch_timer(sup, now);
    ps__sup_check_stalls(sup, now);
    ps__health_check(sup, now);
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
    uint64_t now = ps__sup_now(sup), next = now + CHECK_EVERY_MS;
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
    if (sup->steer.dirty) /* an eBPF map update to try again */
        earlier(&next, now + 50);
    earlier(&next, ps__stall_next(sup));
    earlier(&next, ps__life_deadline(sup));
    earlier(&next, ps__conns_next_deadline(sup));
    earlier(&next, ps__watch_deadline(sup));
    earlier(&next, ps__upgrade_deadline(sup));
    return next <= now ? 0 : (int)(next - now);
}

/* ---- signals ------------------------------------------------------------------ */

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
            if (sup->cfg->lameduck_ms && sup->life.state == PS_LIFE_SERVING) {
                ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGTERM: lame duck, then stop");
                ps__life_event(sup, LIFE_LAMEDUCK, sup->cfg->lameduck_ms, NULL);
                break;
            }
            ps__life_event(sup, LIFE_STOP, 0, NULL);
            break;
        case SIGINT:
        case SIGQUIT:
            ps__life_event(sup, LIFE_STOP, 0, NULL);
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
            for (i = 0; i < sup->ops.nqueued; i++)
                if (sup->ops.queue[i].kind == OP_SCALE)
                    n = sup->ops.queue[i].n;
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

/* ---- the loop ------------------------------------------------------------------- */

/* poll(2) failed: EINTR is nothing; EINVAL (more entries than RLIMIT_NOFILE,
 * which polling only open descriptors rules out) and ENOMEM may pass, and
 * the loop goes on after a pause; anything else ends the supervisor with
 * an error (never as a clean stop).  0 to go on, or -errno. */
static int poll_failed(struct ps_sup *sup, int *said)
{
    int r = -errno;

    if (r == -EINTR)
        return 0;
    if (r != -EINVAL && r != -ENOMEM) {
        ps__sup_log(sup, PS_LOG_ERROR, "poll_failed", "poll: %s; stopping", strerror(-r));
        return r;
    }
    if (!*said)
        ps__sup_log(sup, PS_LOG_ERROR, "poll_failed", "poll: %s; trying again", strerror(-r));
    *said = 1;
    poll(NULL, 0, 100);
    return 0;
}

int ps__sup_loop(struct ps_sup *sup)
{
    struct pollfd pfd[4 + PS_CONN_POLL_MAX + PS_UPGRADE_POLL_MAX];
    int n, nconn, nup, said = 0;

    while (!(ps__stopping(sup) && ps__sup_live_workers(sup) == 0)) {
        ps__op_run_queue(sup);
        if (sup->steer.dirty)
            ps__sup_steer(sup);
        pfd[0] = (struct pollfd){.fd = sup->sigfd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = sup->notify_fd, .events = POLLIN};
        pfd[2] = (struct pollfd){.fd = ps__watch_fd(sup), .events = POLLIN}; /* -1: not polled */
        pfd[3] = (struct pollfd){.fd = ps__health_fd(sup), .events = POLLIN};
        nconn = ps__conns_poll_fill(sup, pfd + 4, ps__sup_now(sup));
        nup = ps__upgrade_poll_fill(sup, pfd + 4 + nconn);
        n = poll(pfd, (nfds_t)(4 + nconn + nup), next_timeout(sup));
        if (n < 0 && (n = poll_failed(sup, &said)) < 0)
            return n;
        if (n > 0) {
            said = 0;
            if (pfd[0].revents)
                handle_signals(sup);
            if (pfd[1].revents)
                handle_notify(sup);
            if (pfd[2].revents)
                ps__watch_read(sup);
            if (pfd[3].revents)
                ps__health_read(sup);
        }
        ps__conns_poll_done(sup, pfd + 4, n > 0 ? nconn : 0, ps__sup_now(sup));
        ps__upgrade_poll_done(sup, pfd + 4 + nconn, n > 0 ? nup : 0);
        ps__sup_run_timers(sup);
    }
    return 0;
}
