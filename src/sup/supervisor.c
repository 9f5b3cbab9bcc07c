/*
 * supervisor.c - the supervisor: one event loop, a state machine per slot.
 *
 * Events: signals (through a signalfd), readiness messages (the notify
 * socket), control commands (the control socket) and timers.  The listening
 * sockets are created once and held for the supervisor's whole life
 * (DESIGN.md §1); each worker of slot i, of any generation, gets copies of
 * socket i of every listener at fds 3.. (the systemd protocol).
 *
 * Per slot:   ACTIVE --worker exits--> BACKOFF --timer--> ACTIVE
 *             ACTIVE --scale down--> RETIRING --worker gone--> (closed)
 * Per worker: STARTING --READY=1 / ready-delay--> READY --SIGTERM--> DRAINING
 * A reload starts a whole new generation beside the old one and swaps only
 * when every new worker is ready; otherwise it is rolled back.
 */
#include "sup_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_FIRST_MS 100 /* second consecutive crash waits this long */
#define BACKOFF_MAX_MS   30000
#define STABLE_READY_MS  1000  /* ready this long: its exit is not a crash loop */
#define STABLE_UPTIME_MS 10000 /* up this long, ready or not: likewise */
#define RETIRE_GRACE_MS  500   /* handshakes in flight when steering changed */
#define NOTIFY_HINT_MS   5000
#define WATCHDOG_KILL_MS 2000 /* SIGABRT, then SIGKILL after this */

/* Tell systemd (when we run under it) how we are: READY=1, RELOADING=1... */
static void tell_systemd(struct ps_sup *sup, const char *state)
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

static const char *exit_text(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
    return buf;
}

static void drain(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    if (w->state == W_DRAINING)
        return;
    w->state = W_DRAINING;
    w->deadline_ms = ps__now_ms() + sup->cfg->drain_timeout_ms;
    kill(w->pid, sup->cfg->drain_signal ? sup->cfg->drain_signal : SIGTERM);
    ps__sup_log(sup, PS_LOG_INFO, "worker_draining",
                "worker %ld (slot %d, generation %u) draining: %s", (long)w->pid, w->slot,
                w->generation, why);
    sup->steer_dirty = 1;
}

static int live_workers(const struct ps_sup *sup)
{
    int i, n = 0;

    for (i = 0; i < sup->nworkers; i++)
        n += sup->workers[i].pid != 0;
    return n;
}

/* ---- steering: only slots with a ready worker get new connections ----- */

static int slot_serving(const struct ps_sup *sup, int s)
{
    const struct ps_slot *sl = &sup->slots[s];

    if (sl->state != S_ACTIVE)
        return 0;
    if (sl->current >= 0 && sup->workers[sl->current].state == W_READY)
        return 1;
    return sl->next >= 0 && sup->workers[sl->next].state == W_READY;
}

static void update_steering(struct ps_sup *sup)
{
    unsigned char serving[PS_SUP_MAX_WORKERS];
    int s, g, r;

    sup->steer_dirty = 0;
    for (s = 0; s < sup->nslots; s++)
        serving[s] = (unsigned char)slot_serving(sup, s);
    for (g = 0; g < sup->ngroups; g++) {
        r = ps__group_steer(&sup->groups[g], serving);
        if (r < 0 && !sup->steer_warned++)
            ps__sup_log(sup, PS_LOG_WARN, "steer_failed",
                        "cannot attach the reuseport steering program: %s; connections may "
                        "queue on a socket whose worker is restarting",
                        ps_strerror(r));
    }
}

/* ---- reload: a whole new generation, swapped in only when all are ready - */

static void finish_waiters(struct ps_sup *sup, int what, int ok, const char *body)
{
    int i, k = 0;

    for (i = 0; i < sup->nwaiters; i++) {
        if (sup->waiters[i].what == what) {
            ps__control_reply(sup->waiters[i].fd, ok, body);
            ps__close(sup->waiters[i].fd);
        } else {
            sup->waiters[k++] = sup->waiters[i];
        }
    }
    sup->nwaiters = k;
}

static void start_reload(struct ps_sup *sup);

static void reload_done(struct ps_sup *sup, int ok, const char *body)
{
    sup->reloading = 0;
    if (sup->told_ready)
        tell_systemd(sup, "READY=1");
    finish_waiters(sup, 'r', ok, body);
    if (sup->reload_queued && !sup->stopping) {
        sup->reload_queued = 0;
        start_reload(sup);
    }
}

static void rollback(struct ps_sup *sup, const char *why)
{
    char body[512];
    int s;

    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (sl->next < 0)
            continue;
        if (sup->workers[sl->next].pid)
            drain(sup, &sup->workers[sl->next], "reload rolled back");
        sl->next = -1;
    }
    snprintf(sup->reload_error, sizeof(sup->reload_error), "%s", why);
    ps__sup_log(sup, PS_LOG_ERROR, "reload_rolled_back",
                "reload to generation %u rolled back: %s; generation %u keeps serving",
                sup->next_generation, why, sup->generation);
    snprintf(body, sizeof(body), "reload rolled back: %s; generation %u keeps serving", why,
             sup->generation);
    reload_done(sup, 0, body);
}

static void commit_reload(struct ps_sup *sup)
{
    char body[128];
    int s;

    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (sl->next < 0)
            continue;
        if (sl->current >= 0)
            drain(sup, &sup->workers[sl->current], "replaced by a new generation");
        sl->current = sl->next;
        sl->next = -1;
        if (sl->state == S_BACKOFF) {
            sl->state = S_ACTIVE; /* a reload is how a fixed program gets in */
            sl->crashes = 0;
        }
    }
    sup->generation = sup->next_generation;
    sup->reload_error[0] = '\0';
    sup->steer_dirty = 1;
    ps__sup_log(sup, PS_LOG_INFO, "reload_done", "generation %u is serving", sup->generation);
    snprintf(body, sizeof(body), "generation %u is serving", sup->generation);
    reload_done(sup, 1, body);
}

static void check_reload_ready(struct ps_sup *sup)
{
    int s;

    if (!sup->reloading)
        return;
    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (sl->next >= 0 && sup->workers[sl->next].state != W_READY)
            return;
    }
    commit_reload(sup);
}

static void start_reload(struct ps_sup *sup)
{
    char why[256];
    int s, idx;

    if (sup->stopping)
        return;
    if (sup->reloading) {
        sup->reload_queued = 1; /* picked up when this one ends, never lost */
        ps__sup_log(sup, PS_LOG_INFO, "reload_queued", "reload queued behind the one in progress");
        return;
    }
    sup->reloading = 1;
    sup->next_generation++;
    sup->reload_deadline = ps__now_ms() + sup->cfg->ready_timeout_ms;
    tell_systemd(sup, "RELOADING=1");
    ps__sup_log(sup, PS_LOG_INFO, "reload_started", "starting generation %u", sup->next_generation);
    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (sl->state == S_RETIRING)
            continue;
        idx = ps__sup_spawn(sup, s, sup->next_generation);
        if (idx < 0) {
            snprintf(why, sizeof(why), "cannot start %s: %s", sup->cfg->argv[0], ps_strerror(idx));
            rollback(sup, why);
            return;
        }
        sl->next = idx;
    }
    check_reload_ready(sup);
}

void ps__sup_request_reload(struct ps_sup *sup)
{
    start_reload(sup);
}

/* ---- readiness ------------------------------------------------------------ */

static int all_slots_ready(const struct ps_sup *sup)
{
    int s;

    for (s = 0; s < sup->nslots; s++)
        if (sup->slots[s].current < 0 || sup->workers[sup->slots[s].current].state != W_READY)
            return 0;
    return 1;
}

static void became_ready(struct ps_sup *sup, struct ps_worker *w, const char *how)
{
    if (w->state != W_STARTING)
        return;
    w->state = W_READY;
    w->ready_ms = w->ping_ms = ps__now_ms();
    ps__sup_log(sup, PS_LOG_INFO, "worker_ready", "worker %ld (slot %d, generation %u) ready (%s)",
                (long)w->pid, w->slot, w->generation, how);
    sup->steer_dirty = 1;
    check_reload_ready(sup);
    if (!sup->told_ready && all_slots_ready(sup)) {
        sup->told_ready = 1;
        tell_systemd(sup, "READY=1");
        ps__sup_log(sup, PS_LOG_INFO, "ready", "all %d worker(s) ready", sup->target);
    }
}

static struct ps_worker *worker_by_pid(struct ps_sup *sup, pid_t pid)
{
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid == pid)
            return &sup->workers[i];
    return NULL;
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
        if (ps_notify_field(msg.text, "STATUS", val, sizeof(val)) >= 0)
            snprintf(w->status, sizeof(w->status), "%s", val);
        if (ps_notify_field(msg.text, "X_PORTSHARE_STATS", val, sizeof(val)) >= 0)
            snprintf(w->stats, sizeof(w->stats), "%s", val);
        if (ps_notify_field(msg.text, "READY", val, sizeof(val)) >= 0 && !strcmp(val, "1"))
            became_ready(sup, w, "READY=1");
        if (ps_notify_field(msg.text, "WATCHDOG", val, sizeof(val)) >= 0) {
            if (!strcmp(val, "trigger")) /* sd_notify "WATCHDOG=trigger": fail now */
                w->ping_ms = 0;
            else if (!strcmp(val, "1"))
                w->ping_ms = ps__now_ms();
        }
    }
}

/* ---- exits -------------------------------------------------------------------- */

static void close_retired_slots(struct ps_sup *sup)
{
    int g, i;

    while (sup->nslots > sup->target && sup->nslots > 1) {
        int s = sup->nslots - 1, busy = 0;
        if (sup->slots[s].state != S_RETIRING)
            break;
        for (i = 0; i < sup->nworkers; i++)
            busy |= sup->workers[i].pid != 0 && sup->workers[i].slot == s;
        if (busy)
            break;
        for (g = 0; g < sup->ngroups; g++) {
            unsigned queued = 0, limit = 0;
            int fd = ps__group_fd(&sup->groups[g], s);
            if (!sup->groups[g].shared && ps_listen_queue(fd, &queued, &limit) == 0 && queued)
                ps__sup_log(sup, PS_LOG_WARN, "retire_reset",
                            "closing slot %d's socket resets %u queued connection(s)", s, queued);
            ps__group_close_last(&sup->groups[g]);
        }
        sup->nslots--;
        ps__sup_log(sup, PS_LOG_INFO, "slot_closed", "slot %d closed", s);
        sup->steer_dirty = 1;
    }
}

static void crashed(struct ps_sup *sup, struct ps_slot *sl, const struct ps_worker *w, int status)
{
    uint64_t now = ps__now_ms();
    unsigned delay;
    char how[96];

    sl->restarts++;
    sl->last_exit = status;
    if (now - w->started_ms >= STABLE_UPTIME_MS ||
        (w->ready_ms && now - w->ready_ms >= STABLE_READY_MS))
        sl->crashes = 0;
    sl->crashes++;
    delay = sl->crashes == 1 ? 0 : BACKOFF_FIRST_MS << (sl->crashes > 10 ? 9 : sl->crashes - 2);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    sl->state = S_BACKOFF;
    sl->backoff_until = now + delay;
    ps__sup_log(sup, sl->crashes >= 3 ? PS_LOG_ERROR : PS_LOG_WARN,
                sl->crashes >= 3 ? "crash_loop" : "worker_exited",
                "worker %ld (slot %d, generation %u) exited with %s; %u exit(s) in a row, "
                "restarting in %u ms",
                (long)w->pid, w->slot, w->generation, exit_text(status, how, sizeof(how)),
                sl->crashes, delay);
}

static void worker_exited(struct ps_sup *sup, struct ps_worker *w, int status)
{
    struct ps_slot *sl = &sup->slots[w->slot];
    int idx = (int)(w - sup->workers);
    char how[96], why[192];

    if (sl->next == idx) {
        sl->next = -1;
        snprintf(why, sizeof(why), "new worker %ld of slot %d exited with %s", (long)w->pid,
                 w->slot, exit_text(status, how, sizeof(how)));
        w->pid = 0;
        rollback(sup, why);
    } else if (sl->current == idx) {
        sl->current = -1;
        if (sup->stopping)
            ;
        else if (sl->state == S_RETIRING)
            ps__sup_log(sup, PS_LOG_INFO, "worker_exited", "worker %ld of retired slot %d exited",
                        (long)w->pid, w->slot);
        else
            crashed(sup, sl, w, status);
    } else {
        ps__sup_log(sup, PS_LOG_INFO, "worker_exited",
                    "worker %ld (slot %d, generation %u) finished draining: %s", (long)w->pid,
                    w->slot, w->generation, exit_text(status, how, sizeof(how)));
    }
    w->pid = 0;
    sup->steer_dirty = 1;
    close_retired_slots(sup);
}

static void reap(struct ps_sup *sup)
{
    struct ps_worker *w;
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        w = worker_by_pid(sup, pid);
        if (w)
            worker_exited(sup, w, status);
    }
}

/* ---- scale ---------------------------------------------------------------- */

static int grow_groups(struct ps_sup *sup, int n, char *err, size_t errlen)
{
    int g, r;

    for (g = 0; g < sup->ngroups; g++) {
        r = ps__group_grow(&sup->groups[g], n, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

int ps__sup_request_scale(struct ps_sup *sup, int n, char *err, size_t errlen)
{
    int s, r;

    if (n < 1 || n > PS_SUP_MAX_WORKERS) {
        ps__set_error(err, errlen, "cannot scale to %d workers (1-%d)", n, PS_SUP_MAX_WORKERS);
        return -EINVAL;
    }
    if (sup->reloading) {
        ps__set_error(err, errlen, "a reload is in progress; scale again once it is done");
        return -EBUSY;
    }
    if (sup->stopping) {
        ps__set_error(err, errlen, "the supervisor is stopping");
        return -ESHUTDOWN;
    }
    if (n > sup->nslots) {
        r = grow_groups(sup, n, err, errlen);
        if (r < 0)
            return r;
    }
    for (s = 0; s < n; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (s >= sup->nslots) {
            memset(sl, 0, sizeof(*sl));
            sl->current = sl->next = -1;
            sl->state = S_BACKOFF; /* start right away, through the timer path */
            sl->backoff_until = 0;
        } else if (sl->state == S_RETIRING) {
            /* scaled back up before the slot was closed: keep it */
            sl->state = sl->current >= 0 ? S_ACTIVE : S_BACKOFF;
            sl->backoff_until = 0;
        }
    }
    for (s = n; s < sup->nslots; s++) {
        if (sup->slots[s].state == S_RETIRING)
            continue;
        sup->slots[s].state = S_RETIRING;
        sup->slots[s].retire_since = ps__now_ms();
    }
    if (n > sup->nslots)
        sup->nslots = n;
    ps__sup_log(sup, PS_LOG_INFO, "scale", "scaling from %d to %d workers", sup->target, n);
    sup->target = n;
    sup->steer_dirty = 1;
    close_retired_slots(sup);
    return 0;
}

/* ---- stop ------------------------------------------------------------------- */

void ps__sup_request_stop(struct ps_sup *sup)
{
    int i;

    if (sup->stopping) {
        /* asked twice: do not wait for the drain */
        for (i = 0; i < sup->nworkers; i++)
            if (sup->workers[i].pid)
                kill(sup->workers[i].pid, SIGKILL);
        return;
    }
    sup->stopping = 1;
    sup->stop_deadline = ps__now_ms() + sup->cfg->drain_timeout_ms;
    tell_systemd(sup, "STOPPING=1");
    ps__sup_log(sup, PS_LOG_INFO, "stopping", "stopping: draining %d worker(s)", live_workers(sup));
    if (sup->reloading)
        rollback(sup, "the supervisor is stopping");
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid)
            drain(sup, &sup->workers[i], "the supervisor is stopping");
}

void ps__sup_add_waiter(struct ps_sup *sup, int fd, int what)
{
    if (sup->nwaiters >= PS_SUP_MAX_WAITERS) {
        ps__control_reply(fd, 0, "too many clients waiting");
        ps__close(fd);
        return;
    }
    sup->waiters[sup->nwaiters].fd = fd;
    sup->waiters[sup->nwaiters].what = what;
    sup->nwaiters++;
}

/* ---- timers ------------------------------------------------------------------ */

static int retire_ready(struct ps_sup *sup, int s, uint64_t now)
{
    int g;

    if (now - sup->slots[s].retire_since >= sup->cfg->drain_timeout_ms)
        return 1;
    if (now - sup->slots[s].retire_since < RETIRE_GRACE_MS)
        return 0;
    /* the worker keeps accepting until its socket's queue is empty */
    for (g = 0; g < sup->ngroups; g++) {
        unsigned queued = 0, limit = 0;
        if (sup->groups[g].shared)
            continue;
        if (ps_listen_queue(ps__group_fd(&sup->groups[g], s), &queued, &limit) == 0 && queued)
            return 0;
    }
    return 1;
}

/* A ready worker went silent for --watchdog (or asked with
 * WATCHDOG=trigger): SIGABRT, as systemd does, for a core dump of the hang;
 * SIGKILL shortly after; its slot restarts like after a crash. */
static void watchdog_expired(struct ps_sup *sup, struct ps_worker *w, uint64_t now)
{
    struct ps_slot *sl = &sup->slots[w->slot];
    int idx = (int)(w - sup->workers);
    char why[160];

    snprintf(why, sizeof(why), "worker %ld of slot %d sent no WATCHDOG=1 for %u ms", (long)w->pid,
             w->slot, sup->cfg->watchdog_ms);
    ps__sup_log(sup, PS_LOG_ERROR, "watchdog", "%s: SIGABRT", why);
    if (sl->next == idx) {
        rollback(sup, why);
    } else if (sl->current == idx) {
        sl->current = -1;
        if (sl->state != S_RETIRING)
            crashed(sup, sl, w, SIGABRT);
    }
    w->state = W_DRAINING;
    w->deadline_ms = now + WATCHDOG_KILL_MS;
    kill(w->pid, SIGABRT);
    sup->steer_dirty = 1;
}

static void worker_timers(struct ps_sup *sup, struct ps_worker *w, uint64_t now)
{
    struct ps_slot *sl = &sup->slots[w->slot];
    int idx = (int)(w - sup->workers);

    if (w->state == W_STARTING) {
        if (sup->cfg->ready_delay_ms && now - w->started_ms >= sup->cfg->ready_delay_ms) {
            became_ready(sup, w, "alive for --ready-delay");
            return;
        }
        if (!sup->cfg->ready_delay_ms && !w->notified && !w->hinted &&
            now - w->started_ms >= NOTIFY_HINT_MS) {
            w->hinted = 1;
            ps__sup_log(sup, PS_LOG_WARN, "not_ready_hint",
                        "worker %ld has not sent READY=1 after %d s; if %s does not support "
                        "sd_notify, use --ready-delay",
                        (long)w->pid, NOTIFY_HINT_MS / 1000, sup->cfg->argv[0]);
        }
        if (now >= w->deadline_ms) {
            if (sl->next == idx) {
                char why[160];
                snprintf(why, sizeof(why), "worker %ld of slot %d not ready within %u ms",
                         (long)w->pid, w->slot, sup->cfg->ready_timeout_ms);
                rollback(sup, why);
            } else if (sl->current == idx) {
                sl->current = -1;
                if (sl->state != S_RETIRING) /* a retiring slot is not restarted */
                    crashed(sup, sl, w, 0);
                drain(sup, w, "not ready in time");
            }
        }
    } else if (w->state == W_READY && sup->cfg->watchdog_ms &&
               now - w->ping_ms >= sup->cfg->watchdog_ms) {
        watchdog_expired(sup, w, now);
    } else if (w->state == W_DRAINING && !w->killed && now >= w->deadline_ms) {
        w->killed = 1;
        kill(w->pid, SIGKILL);
        ps__sup_log(sup, PS_LOG_WARN, "worker_killed",
                    "worker %ld (slot %d) still running after the drain timeout: SIGKILL",
                    (long)w->pid, w->slot);
    }
}

static void slot_timers(struct ps_sup *sup, int s, uint64_t now)
{
    struct ps_slot *sl = &sup->slots[s];
    char why[256];
    int idx;

    if (sl->state == S_BACKOFF && now >= sl->backoff_until && sl->next < 0 && !sup->stopping) {
        idx = ps__sup_spawn(sup, s, sup->generation);
        if (idx < 0) {
            struct ps_worker fake = {
                .pid = 0, .slot = s, .generation = sup->generation, .started_ms = now};
            snprintf(why, sizeof(why), "%s", ps_strerror(idx));
            ps__sup_log(sup, PS_LOG_ERROR, "spawn_failed", "cannot start %s for slot %d: %s",
                        sup->cfg->argv[0], s, why);
            crashed(sup, sl, &fake, 127 << 8);
            return;
        }
        sl->current = idx;
        sl->state = S_ACTIVE;
    } else if (sl->state == S_RETIRING && sl->current >= 0 &&
               sup->workers[sl->current].state != W_DRAINING && retire_ready(sup, s, now)) {
        drain(sup, &sup->workers[sl->current], "scaled down");
        sl->current = -1;
    }
}

static void run_timers(struct ps_sup *sup)
{
    uint64_t now = ps__now_ms();
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid)
            worker_timers(sup, &sup->workers[i], now);
    for (i = 0; i < sup->nslots; i++)
        slot_timers(sup, i, now);
    if (sup->stopping && now >= sup->stop_deadline)
        for (i = 0; i < sup->nworkers; i++)
            if (sup->workers[i].pid && !sup->workers[i].killed) {
                sup->workers[i].killed = 1;
                kill(sup->workers[i].pid, SIGKILL);
            }
}

/* How long poll() may sleep: until the nearest deadline, at most 1 s. */
static int next_timeout(const struct ps_sup *sup)
{
    uint64_t now = ps__now_ms(), next = now + 1000;
    int i;

    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        if (!w->pid || w->killed)
            continue;
        /* a deadline only means something while starting or draining; a
         * ready worker's old ready deadline must not wake us (busy loop) */
        if (w->state != W_READY && w->deadline_ms < next)
            next = w->deadline_ms;
        if (w->state == W_READY && sup->cfg->watchdog_ms &&
            w->ping_ms + sup->cfg->watchdog_ms < next)
            next = w->ping_ms + sup->cfg->watchdog_ms;
        if (w->state == W_STARTING && sup->cfg->ready_delay_ms &&
            w->started_ms + sup->cfg->ready_delay_ms < next)
            next = w->started_ms + sup->cfg->ready_delay_ms;
    }
    for (i = 0; i < sup->nslots; i++) {
        /* only a back-off the timer can act on (see slot_timers) */
        if (sup->slots[i].state == S_BACKOFF && !sup->stopping && sup->slots[i].next < 0 &&
            sup->slots[i].backoff_until < next)
            next = sup->slots[i].backoff_until;
        if (sup->slots[i].state == S_RETIRING && now + 50 < next)
            next = now + 50;
    }
    if (sup->stopping && sup->stop_deadline < next)
        next = sup->stop_deadline;
    return next <= now ? 0 : (int)(next - now);
}

/* ---- signals ------------------------------------------------------------------ */

static int open_signals(struct ps_sup *sup)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTTIN);
    sigaddset(&set, SIGTTOU);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return ps__neg_errno();
    signal(SIGPIPE, SIG_IGN);
    sup->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return sup->sigfd < 0 ? ps__neg_errno() : 0;
}

/* SIGUSR1: the configuration's hook (portshare serve reopens its access
 * log), then every live worker gets SIGUSR1 to do the same. */
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
            kill(sup->workers[i].pid, SIGUSR1);
}

static void handle_signals(struct ps_sup *sup)
{
    struct signalfd_siginfo si;
    char err[256];

    while (read(sup->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(sup);
            break;
        case SIGHUP:
            ps__sup_log(sup, PS_LOG_INFO, "signal", "SIGHUP: reload");
            start_reload(sup);
            break;
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            ps__sup_request_stop(sup);
            break;
        case SIGUSR2:
            sup->upgrade_requested = 1;
            break;
        case SIGUSR1:
            reopen(sup);
            break;
        case SIGTTIN:
        case SIGTTOU: {
            int n = sup->target + (si.ssi_signo == SIGTTIN ? 1 : -1);
            if (ps__sup_request_scale(sup, n, err, sizeof(err)) < 0)
                ps__sup_log(sup, PS_LOG_WARN, "scale_refused", "%s", err);
            break;
        }
        }
    }
}

/* ---- startup -------------------------------------------------------------------- */

/* Adopt sockets systemd passed us (LISTEN_FDS): each is shared by all slots. */
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
        getsockname(PS_LISTEN_FDS_START + i, (struct sockaddr *)&sp->addr, &sp->addrlen);
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
    }
    ps_listen_names_free(names);
    return n;
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

static int start_workers(struct ps_sup *sup, char *err, size_t errlen)
{
    int s, idx;

    sup->generation = sup->next_generation = 1;
    sup->nslots = sup->target;
    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        memset(sl, 0, sizeof(*sl));
        sl->next = -1;
        idx = ps__sup_spawn(sup, s, sup->generation);
        if (idx < 0) {
            ps__set_error(err, errlen, "cannot execute %s: %s", sup->cfg->argv[0],
                          ps_strerror(idx));
            return idx;
        }
        sl->current = idx;
        sl->state = S_ACTIVE;
    }
    return 0;
}

static void shutdown_all(struct ps_sup *sup)
{
    int g, i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid) {
            kill(sup->workers[i].pid, SIGKILL);
            waitpid(sup->workers[i].pid, NULL, 0);
            sup->workers[i].pid = 0;
        }
    for (g = 0; g < sup->ngroups; g++) {
        if (sup->groups[g].spec.proto == PS_PROTO_UNIX && !sup->groups[g].inherited &&
            sup->groups[g].spec.host[0] == '/')
            unlink(sup->groups[g].spec.host);
        ps__group_close(&sup->groups[g]);
    }
    ps__control_close(sup);
    ps__close(sup->notify_fd);
    ps__close(sup->sigfd);
}

/* ---- the loop ------------------------------------------------------------------- */

static void loop(struct ps_sup *sup)
{
    struct pollfd pfd[3 + PS_SUP_MAX_CLIENTS];
    int i, n;

    while (!(sup->stopping && live_workers(sup) == 0)) {
        if (sup->upgrade_requested && !sup->reloading && !sup->stopping) {
            char err[256];
            sup->upgrade_requested = 0;
            if (ps__upgrade_exec(sup, err, sizeof(err)) < 0) {
                ps__sup_log(sup, PS_LOG_ERROR, "upgrade_failed", "upgrade failed: %s", err);
                if (sup->upgrade_client >= 0) {
                    ps__control_reply(sup->upgrade_client, 0, err);
                    ps__close(sup->upgrade_client);
                    sup->upgrade_client = -1;
                }
            }
        }
        if (sup->steer_dirty)
            update_steering(sup);
        pfd[0] = (struct pollfd){.fd = sup->sigfd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = sup->notify_fd, .events = POLLIN};
        pfd[2] = (struct pollfd){.fd = sup->control_fd, .events = POLLIN};
        for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
            pfd[3 + i] = (struct pollfd){.fd = sup->clients[i], .events = POLLIN};
        n = poll(pfd, PS__ARRAY_LEN(pfd), next_timeout(sup));
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0) {
            if (pfd[0].revents)
                handle_signals(sup);
            if (pfd[1].revents)
                handle_notify(sup);
            if (pfd[2].revents)
                ps__control_accept(sup);
            for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
                if (pfd[3 + i].revents && sup->clients[i] >= 0)
                    ps__control_client_ready(sup, i);
        }
        run_timers(sup);
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

static void init_sup(struct ps_sup *sup, struct ps_sup_config *cfg)
{
    const char *ns = getenv("NOTIFY_SOCKET");
    int i;

    memset(sup, 0, sizeof(*sup));
    sup->cfg = cfg;
    sup->target = cfg->workers;
    sup->sigfd = sup->notify_fd = sup->control_fd = -1;
    sup->upgrade_client = -1;
    for (i = 0; i < PS_SUP_MAX_CLIENTS; i++)
        sup->clients[i] = -1;
    /* systemd's notify socket is ours; workers get our own */
    if (ns && *ns)
        snprintf(sup->systemd_notify, sizeof(sup->systemd_notify), "%s", ns);
    unsetenv("NOTIFY_SOCKET");
    sup->started_ms = ps__now_ms();
    sup->started_wall = time(NULL);
}

static int fail(struct ps_sup *sup, enum ps_sup_stage *stage, enum ps_sup_stage which, int r)
{
    *stage = which;
    shutdown_all(sup);
    return r;
}

int ps_sup_run(struct ps_sup_config *cfg, char *err, size_t errlen, enum ps_sup_stage *stage)
{
    static struct ps_sup sup; /* large (worker table); one per process */
    const char *state = getenv("PORTSHARE_UPGRADE_STATE");
    int r;

    *stage = PS_SUP_STAGE_NONE;
    init_sup(&sup, cfg);
    cloexec_inherited();
    r = open_signals(&sup);
    if (r < 0) {
        ps__set_error(err, errlen, "cannot set up signal handling: %s", ps_strerror(r));
        return fail(&sup, stage, PS_SUP_STAGE_SYSTEM, r);
    }
    if (state) {
        r = ps__upgrade_restore(&sup, state, err, errlen);
        unsetenv("PORTSHARE_UPGRADE_STATE");
        if (r == 0 && !cfg->control_path[0])
            r = ps_sup_control_path(cfg->name, cfg->control_path, sizeof(cfg->control_path));
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_SYSTEM, r);
        ps__sup_log(&sup, PS_LOG_INFO, "upgraded",
                    "supervisor re-executed in place (pid %ld), %d worker(s) kept", (long)getpid(),
                    live_workers(&sup));
    } else {
        r = adopt_systemd(&sup, err, errlen);
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_SYSTEM, r);
        if (sup.ngroups + cfg->nspecs == 0) {
            ps__set_error(err, errlen,
                          "nothing to listen on: give -l SPEC (or run under systemd "
                          "socket activation)");
            return fail(&sup, stage, PS_SUP_STAGE_BIND, -EINVAL);
        }
        r = bind_all(&sup, err, errlen);
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_BIND, r);
        log_listeners(&sup);
        r = ps__control_open(&sup, err, errlen);
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_CONTROL, r);
        r = open_notify(&sup, err, errlen);
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_SYSTEM, r);
        r = start_workers(&sup, err, errlen);
        if (r < 0)
            return fail(&sup, stage, PS_SUP_STAGE_EXEC, r);
    }
    if (state) {
        sup.told_ready = 1;
        tell_systemd(&sup, "READY=1");
    }
    sup.steer_dirty = 1;
    loop(&sup);
    finish_waiters(&sup, 's', 1, "stopped");
    finish_waiters(&sup, 'r', 0, "the supervisor stopped");
    ps__sup_log(&sup, PS_LOG_INFO, "stopped", "stopped");
    shutdown_all(&sup);
    return 0;
}
