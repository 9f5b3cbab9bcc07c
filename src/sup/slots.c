/*
 * slots.c - the life cycle of a slot and its worker, as one table.
 *
 * Every change of a slot's state is a row of ps__slot_table, run by
 * ps__slot_event(): the row's action does what the change means (start,
 * drain, count a crash...) and the slot moves to the row's state.  An
 * action may pick one documented alternative (a start that fails backs
 * off).  Nothing else assigns sl->state.  Events about workers that are not
 * a slot's current one (old generations draining, the reloading generation)
 * are not slot events: ops.c handles the reloading generation, the loop
 * logs the rest.  The worker's own state (W_*) is set by whoever learnt it
 * (the notify handler, the reaper) before the slot event.
 */
#include "sup_internal.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#define BACKOFF_FIRST_MS 100 /* second consecutive crash waits this long */
#define BACKOFF_MAX_MS   30000
#define STABLE_READY_MS  1000  /* ready this long: its exit is not a crash loop */
#define STABLE_UPTIME_MS 10000 /* up this long, ready or not: likewise */
#define WATCHDOG_KILL_MS 2000  /* SIGABRT, then SIGKILL after this */
#define KILL_RECHECK_MS  5000  /* SIGKILL sent and still there: send again */

#define T(a, s)                                                                                    \
    {                                                                                              \
        a, s                                                                                       \
    }
#define NO                                                                                         \
    {                                                                                              \
        A_IGNORE, SL_STATE_COUNT                                                                   \
    } /* stays where it is */

/* clang-format off */
const struct ps_slot_transition ps__slot_table[SL_STATE_COUNT][EV_COUNT] = {
    /*              START                    READY                     STOPPING                  EXIT                    READY_LATE              WATCHDOG                RETIRE                    KEEP                   QUEUE_EMPTY                REPLACE              STOP                      LISTENER_LOST             STALL                    RESUME */
    [SL_BACKOFF]  = {T(A_SPAWN, SL_STARTING), NO,                       NO,                       NO,                     NO,                     NO,                     T(A_LOSE, SL_CLOSING),    NO,                    NO,                        T(A_SWAP, SL_READY), T(A_IGNORE, SL_STOPPING), T(A_REVIVE, SL_BACKOFF),  NO,                      NO},
    [SL_STARTING] = {NO,                      T(A_READY, SL_READY),     T(A_RELEASE, SL_BACKOFF), T(A_CRASH, SL_BACKOFF), T(A_LATE, SL_BACKOFF),  NO,                     T(A_RETIRE, SL_RETIRING), NO,                    NO,                        T(A_SWAP, SL_READY), T(A_DRAIN, SL_STOPPING),  T(A_REVIVE, SL_STARTING), NO,                      NO},
    [SL_READY]    = {NO,                      NO,                       T(A_RELEASE, SL_BACKOFF), T(A_CRASH, SL_BACKOFF), NO,                     T(A_ABORT, SL_BACKOFF), T(A_RETIRE, SL_RETIRING), NO,                    NO,                        T(A_SWAP, SL_READY), T(A_DRAIN, SL_STOPPING),  T(A_REVIVE, SL_READY),    T(A_STALL, SL_STALLED),  NO},
    [SL_RETIRING] = {NO,                      T(A_IGNORE, SL_RETIRING), T(A_LOSE, SL_CLOSING),    T(A_LOSE, SL_CLOSING),  T(A_DRAIN, SL_CLOSING), T(A_ABORT, SL_CLOSING), NO,                       T(A_KEEP, SL_READY),   T(A_HANDOVER, SL_CLOSING), NO,                  T(A_DRAIN, SL_STOPPING),  T(A_REVIVE, SL_RETIRING), NO,                      NO},
    [SL_CLOSING]  = {NO,                      NO,                       NO,                       NO,                     NO,                     NO,                     NO,                       T(A_KEEP, SL_BACKOFF), NO,                        NO,                  T(A_IGNORE, SL_STOPPING), T(A_REVIVE, SL_CLOSING),  NO,                      NO},
    [SL_STOPPING] = {NO,                      NO,                       NO,                       NO,                     NO,                     NO,                     NO,                       NO,                    NO,                        NO,                  NO,                       NO,                       NO,                      NO},
    [SL_CLOSED]   = {NO,                      NO,                       NO,                       NO,                     NO,                     NO,                     NO,                       NO,                    NO,                        NO,                  NO,                       NO,                       NO,                      NO},
    [SL_STALLED]  = {NO,                      NO,                       T(A_RELEASE, SL_BACKOFF), T(A_CRASH, SL_BACKOFF), NO,                     T(A_ABORT, SL_BACKOFF), T(A_RETIRE, SL_RETIRING), NO,                    NO,                        T(A_SWAP, SL_READY), T(A_DRAIN, SL_STOPPING),  T(A_REVIVE, SL_STALLED),  T(A_RESCUE, SL_BACKOFF), T(A_RESUME, SL_READY)},
};
/* clang-format on */

static const char *const state_names[SL_STATE_COUNT] = {
    [SL_BACKOFF] = "backing-off", [SL_STARTING] = "starting", [SL_READY] = "ready",
    [SL_RETIRING] = "retiring",   [SL_CLOSING] = "closing",   [SL_STOPPING] = "stopping",
    [SL_CLOSED] = "closed",       [SL_STALLED] = "stalled",
};

static const char *const event_names[EV_COUNT] = {
    [EV_START] = "start",
    [EV_READY] = "ready",
    [EV_STOPPING] = "stopping",
    [EV_EXIT] = "exit",
    [EV_READY_LATE] = "ready-late",
    [EV_WATCHDOG] = "watchdog",
    [EV_RETIRE] = "retire",
    [EV_KEEP] = "keep",
    [EV_QUEUE_EMPTY] = "queue-empty",
    [EV_REPLACE] = "replace",
    [EV_STOP] = "stop",
    [EV_LISTENER_LOST] = "listener-lost",
    [EV_STALL] = "stall",
    [EV_RESUME] = "resume",
};

static const char *const worker_state_names[W_STATE_COUNT] = {
    [W_STARTING] = "starting",
    [W_READY] = "ready",
    [W_DRAINING] = "draining",
    [W_KILLED] = "killed",
};

const char *ps__slot_state_name(enum ps_slot_state st)
{
    return st < SL_STATE_COUNT ? state_names[st] : "?";
}

const char *ps__slot_event_name(enum ps_slot_event ev)
{
    return ev < EV_COUNT ? event_names[ev] : "?";
}

const char *ps__worker_state_name(enum ps_worker_state st)
{
    return st < W_STATE_COUNT ? worker_state_names[st] : "?";
}

int ps__slot_serving(const struct ps_sup *sup, int s)
{
    return s < sup->nslots && sup->slots[s].state == SL_READY && !sup->slots[s].leaving_shares;
}

const char *ps__exit_text(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
    return buf;
}

void ps__worker_drain(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    if (!w->pid || w->state == W_DRAINING || w->state == W_KILLED)
        return;
    w->state = W_DRAINING;
    w->deadline_ms = ps__now_ms() + sup->cfg->drain_timeout_ms;
    sup->sys->signal(sup, w, sup->cfg->drain_signal ? sup->cfg->drain_signal : SIGTERM);
    ps__sup_log(sup, PS_LOG_INFO, "worker_draining",
                "worker %ld (slot %d, generation %u) draining: %s", (long)w->pid, w->slot,
                w->generation, why);
    sup->steer_dirty = 1;
}

void ps__worker_abort(struct ps_sup *sup, struct ps_worker *w)
{
    w->state = W_DRAINING;
    w->deadline_ms = ps__now_ms() + WATCHDOG_KILL_MS;
    sup->sys->signal(sup, w, SIGABRT);
    sup->steer_dirty = 1;
}

void ps__worker_kill(struct ps_sup *sup, struct ps_worker *w)
{
    w->state = W_KILLED;
    w->deadline_ms = ps__now_ms() + KILL_RECHECK_MS;
    sup->sys->kill_tree(sup, w);
}

/* The slot's current worker stops being its own (it exited, or drains as an
 * old worker whose exit is only logged). */
static struct ps_worker *detach_current(struct ps_sup *sup, struct ps_slot *sl)
{
    struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;

    sl->current = -1;
    sup->steer_dirty = 1;
    return w;
}

/* A worker that was ready for a second (or up for ten) was no crash loop. */
static int stable(const struct ps_worker *w, uint64_t now)
{
    return w && (now - w->started_ms >= STABLE_UPTIME_MS ||
                 (w->ready_ms && now - w->ready_ms >= STABLE_READY_MS));
}

/* Count a failure of the slot's worker and schedule its restart: at once the
 * first time, then 100 ms, 200 ms... up to 30 s while it keeps failing
 * before it was ready for a second (or up for ten). */
static void count_crash(struct ps_sup *sup, struct ps_slot *sl, const struct ps_worker *w,
                        int status, const char *what)
{
    uint64_t now = ps__now_ms();
    unsigned delay;

    sl->restarts++;
    sl->last_exit = status;
    if (stable(w, now))
        sl->crashes = 0;
    sl->crashes++;
    delay = sl->crashes == 1 ? 0 : BACKOFF_FIRST_MS << (sl->crashes > 10 ? 9 : sl->crashes - 2);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    sl->backoff_until = now + delay;
    ps__sup_log(sup, sl->crashes >= 3 ? PS_LOG_ERROR : PS_LOG_WARN,
                sl->crashes >= 3 ? "crash_loop" : "worker_failed",
                "worker %ld (slot %d, generation %u) %s; %u failure(s) in a row, restarting in "
                "%u ms",
                w ? (long)w->pid : 0L, (int)(sl - sup->slots), w ? w->generation : sup->generation,
                what, sl->crashes, delay);
}

/* A retiring slot, steered away already, closes at once under the migrate
 * program: shut its sockets down and what they hold (queued connections and
 * handshakes in flight) moves to the serving slots.  Without it (CBPF) the
 * queue was left to empty first (retire_done) and nothing is done here. */
static void hand_over(struct ps_sup *sup, int s)
{
    unsigned queued, moved = 0;
    int g, r;

    if (!ps__sup_migrates(sup))
        return;
    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (!ps__group_migrates(gr))
            continue;
        r = ps__group_shutdown(gr, s, &queued);
        if (r < 0)
            ps__sup_log(sup, PS_LOG_WARN, "handover_failed", "slot %d: shutdown: %s", s,
                        ps_strerror(r));
        else
            moved += queued;
    }
    ps__sup_log(sup, PS_LOG_INFO, "slot_handover",
                "slot %d retired at once: its socket is shut down, %u queued connection(s) "
                "moved to the serving slots",
                s, moved);
}

/* Scaled back up: a socket hand_over shut down listens again. */
static void listen_again(struct ps_sup *sup, int s)
{
    int g, r;

    for (g = 0; g < sup->ngroups; g++)
        if (ps__group_migrates(&sup->groups[g])) {
            r = ps__group_listen_again(&sup->groups[g], s);
            if (r < 0)
                ps__sup_log(sup, PS_LOG_ERROR, "listener_dead",
                            "slot %d: its socket cannot listen again: %s", s, ps_strerror(r));
        }
}

long ps__slot_renew_sockets(struct ps_sup *sup, int s, int at_once)
{
    unsigned queued;
    long moved = 0;
    int g, r;

    if (!ps__sup_migrates(sup))
        return -1; /* classic BPF somewhere: a closed socket would reset its queue */
    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (!ps__group_migrates(gr) || s >= gr->nfds)
            continue;
        r = ps__group_renew(gr, s, at_once, &queued);
        if (r < 0) {
            ps__sup_log(sup, PS_LOG_ERROR, "slot_socket",
                        "slot %d: cannot give it a fresh socket: %s", s, ps_strerror(r));
            moved = -1;
        } else if (moved >= 0) {
            moved += queued;
        }
    }
    sup->steer_dirty = 1;
    return moved;
}

/*
 * The slot's worker w leaves while it still holds the slot's socket: it
 * said STOPPING=1 (and may go on accepting), or a stall rescue drains it.
 * It never shares that socket with its successor: with eBPF the slot gets
 * a fresh one now (ps__slot_renew_sockets) and the old one is never steered
 * to again; what is queued on it moves to the serving sockets when w lets
 * it go (closes it, or exits), or at once for a rescue (stall.c: a stalled
 * worker accepts nothing; renewed says how that went).  With classic BPF
 * nothing can move, so the old socket stays the slot's, keeps its queue
 * for the successor, and the slot is not
 * steered to until w is gone (ps__slot_serving).  A slot keeps one leaving
 * worker: an earlier one still there has had its time and is killed, so
 * that a program saying STOPPING=1 again and again never piles up workers.
 */
static void leave(struct ps_sup *sup, int s, struct ps_worker *w, long renewed)
{
    struct ps_slot *sl = &sup->slots[s];
    struct ps_worker *old = sl->leaving >= 0 ? &sup->workers[sl->leaving] : NULL;

    if (old && old->pid && old != w) {
        ps__sup_log(sup, PS_LOG_WARN, "worker_killed",
                    "slot %d: worker %ld, still leaving when its successor %ld leaves too, is "
                    "killed (a slot keeps one leaving worker)",
                    s, (long)old->pid, w ? (long)w->pid : 0L);
        ps__worker_kill(sup, old);
    }
    sl->leaving = w ? (int)(w - sup->workers) : -1;
    sl->leaving_shares = w && renewed < 0;
    sup->steer_dirty = 1;
}

void ps__slot_leaver_gone(struct ps_sup *sup, const struct ps_worker *w)
{
    struct ps_slot *sl;

    if (w->slot < 0 || w->slot >= PS_SUP_MAX_WORKERS)
        return;
    sl = &sup->slots[w->slot];
    if (sl->leaving != (int)(w - sup->workers))
        return;
    sl->leaving = -1;
    sl->leaving_shares = 0;
    sup->steer_dirty = 1;
}

/* It said STOPPING=1 (the caller made it W_DRAINING): its successor starts
 * on a socket of its own (leave), at once when it had served for a while,
 * else after the back-off of a quick exit, counted as one: a program that
 * says it and exits, or keeps saying it, is a crash loop like any other. */
static void release(struct ps_sup *sup, int s, struct ps_worker *w)
{
    struct ps_slot *sl = &sup->slots[s];
    char what[160];

    detach_current(sup, sl);
    leave(sup, s, w, ps__slot_renew_sockets(sup, s, 0));
    if (stable(w, ps__now_ms())) {
        sl->crashes = 0;
        sl->backoff_until = 0;
        ps__sup_log(sup, PS_LOG_INFO, "worker_stopping",
                    "worker %ld (slot %d) said STOPPING=1: steered away, replaced", (long)w->pid,
                    s);
        return;
    }
    snprintf(what, sizeof(what), "said STOPPING=1 %llu ms after it started",
             (unsigned long long)(ps__now_ms() - w->started_ms));
    count_crash(sup, sl, w, sl->last_exit, what);
}

static void all_ready_check(struct ps_sup *sup)
{
    int s;

    if (sup->told_ready)
        return;
    for (s = 0; s < sup->nslots; s++)
        if (sup->slots[s].state != SL_READY)
            return;
    sup->told_ready = 1;
    ps__sup_tell_systemd(sup, "READY=1");
    ps__sup_log(sup, PS_LOG_INFO, "ready", "all %d worker(s) ready", sup->nslots);
}

/* Runs the action; returns the state to move to (normally `next`). */
static enum ps_slot_state act(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                              int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;
    char what[256], how[96];
    long renewed;
    int idx;

    switch (t->action) {
    case A_IGNORE:
        return t->next;
    case A_SPAWN:
        idx = sup->sys->spawn(sup, s, sup->generation);
        if (idx < 0) {
            sup->spawn_error = idx;
            snprintf(what, sizeof(what), "could not be started: %s", ps_strerror(idx));
            count_crash(sup, sl, NULL, 127 << 8, what);
            return SL_BACKOFF;
        }
        sl->current = idx;
        return t->next;
    case A_READY:
        sup->steer_dirty = 1; /* systemd hears of it once the state is set */
        return t->next;
    case A_RELEASE:
        release(sup, s, w);
        return t->next;
    case A_CRASH:
        detach_current(sup, sl);
        snprintf(what, sizeof(what), "exited with %s", ps__exit_text(status, how, sizeof(how)));
        count_crash(sup, sl, w, status, what);
        return t->next;
    case A_LATE:
        detach_current(sup, sl);
        ps__worker_drain(sup, w, why);
        if (t->next == SL_BACKOFF) {
            snprintf(what, sizeof(what), "was not ready within %u ms (still running: draining it)",
                     sup->cfg->ready_timeout_ms);
            count_crash(sup, sl, w, 0, what);
        }
        return t->next;
    case A_ABORT:
        /* systemd's way: SIGABRT for a core dump of the hang, SIGKILL later */
        detach_current(sup, sl);
        ps__sup_log(sup, PS_LOG_ERROR, "watchdog", "%s: SIGABRT", why);
        ps__worker_abort(sup, w);
        if (t->next == SL_BACKOFF)
            count_crash(sup, sl, w, SIGABRT, "missed its watchdog");
        return t->next;
    case A_RETIRE:
        sl->retire_since = ps__now_ms();
        sup->steer_dirty = 1;
        return t->next;
    case A_KEEP:
        sup->steer_dirty = 1;
        listen_again(sup, s);
        if (w && w->generation == sup->generation && w->state != W_DRAINING)
            return w->state == W_READY ? SL_READY : SL_STARTING;
        /* an older generation's worker (the reload passed this slot by while
         * it was retiring), or none: a fresh worker of the serving one */
        if (w)
            ps__worker_drain(sup, detach_current(sup, sl), "replaced: scaled back up");
        sl->backoff_until = 0;
        return SL_BACKOFF;
    case A_HANDOVER:
        hand_over(sup, s);
        if (w)
            ps__worker_drain(sup, detach_current(sup, sl), why);
        return t->next;
    case A_DRAIN:
        if (w)
            ps__worker_drain(sup, detach_current(sup, sl), why);
        return t->next;
    case A_LOSE:
        detach_current(sup, sl);
        if (w)
            ps__sup_log(sup, PS_LOG_INFO, "worker_gone", "worker %ld of retiring slot %d: %s",
                        (long)w->pid, s, why);
        if (sl->state != SL_RETIRING)
            sl->retire_since = ps__now_ms(); /* retired while backing off */
        /* Connections still wait in the slot's socket (it was steered away
         * from while they queued: its worker was frozen, killed, or had
         * just crashed): closing the socket now would reset them.  A worker
         * of the serving generation empties the queue first, as long as the
         * retire may last; the slot stays retiring. */
        if (ps__slot_queued(sup, s, 0) > 0 &&
            ps__now_ms() - sl->retire_since < sup->cfg->drain_timeout_ms) {
            idx = sup->sys->spawn(sup, s, sup->generation);
            if (idx >= 0) {
                sl->current = idx;
                sl->restarts += w != NULL;
                ps__sup_log(sup, PS_LOG_INFO, "retire_refill",
                            "retiring slot %d still has connections queued: a new worker "
                            "empties its queue",
                            s);
                return SL_RETIRING;
            }
        }
        return t->next;
    case A_SWAP:
        if (w)
            ps__worker_drain(sup, detach_current(sup, sl), "replaced by a new generation");
        sl->current = sl->next;
        sl->next = -1;
        sl->crashes = 0; /* a reload is how a fixed program gets in */
        sup->steer_dirty = 1;
        return t->next;
    case A_REVIVE:
        sl->lost++;
        ps__sup_log(sup, PS_LOG_WARN, "listener_revived", "slot %d: %s", s, why);
        sup->steer_dirty = 1;
        return t->next;
    case A_STALL:
        sl->stalls++;
        sl->stalled_at = ps__now_ms();
        sl->stall_reload_said = 0;
        sup->steer_dirty = 1;
        ps__sup_log(sup, PS_LOG_WARN, "stall",
                    "slot %d stalled (%s): steered away from; its worker %ld has %u ms to "
                    "resume",
                    s, why, w ? (long)w->pid : 0L, sup->cfg->stall_timeout_ms / 2);
        return t->next;
    case A_RESUME:
        sup->steer_dirty = 1;
        ps__sup_log(sup, PS_LOG_INFO, "stall_resumed", "slot %d: worker %ld accepts again (%s)", s,
                    w ? (long)w->pid : 0L, why);
        return t->next;
    case A_RESCUE:
        /* the queue moves first (eBPF), then the stalled tree goes */
        sl->rescues++;
        sl->restarts++;
        /* drained rather than killed at once: a worker that was only paused
         * (SIGSTOP, a frozen cgroup, a long GC) still answers what it had
         * accepted when it comes back; one that does not is killed, its whole
         * tree, after the drain timeout like any draining worker */
        renewed = ps__stall_rescue_sockets(sup, s);
        if (w) {
            leave(sup, s, w, renewed);
            ps__worker_drain(sup, detach_current(sup, sl), why);
        }
        sl->backoff_until = 0;
        sl->stall_since = sl->stall_q = 0;
        return t->next;
    case A_COUNT:
        break;
    }
    return t->next;
}

enum ps_slot_state ps__slot_event(struct ps_sup *sup, int s, enum ps_slot_event ev, int status,
                                  const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    const struct ps_slot_transition *t;
    enum ps_slot_state from = sl->state, to;

    if (from >= SL_STATE_COUNT || ev >= EV_COUNT)
        return from;
    t = &ps__slot_table[from][ev];
    if (t->action == A_IGNORE && t->next == SL_STATE_COUNT)
        return from;
    to = act(sup, s, t, status, why ? why : ps__slot_event_name(ev));
    if (to == SL_STATE_COUNT)
        to = from;
    sl->state = to;
    if (to == SL_READY)
        all_ready_check(sup);
    if (to != from)
        ps__sup_log(sup, PS_LOG_DEBUG, "slot_state", "slot %d: %s --%s--> %s", s,
                    ps__slot_state_name(from), ps__slot_event_name(ev), ps__slot_state_name(to));
    return to;
}

/* A slot comes into existence (start, scale-up) with no worker and a start
 * due at once: the timer's EV_START takes it from there. */
void ps__slot_open(struct ps_sup *sup, int s)
{
    struct ps_slot *sl = &sup->slots[s];

    memset(sl, 0, sizeof(*sl));
    sl->current = sl->next = sl->leaving = -1;
    sl->state = SL_BACKOFF;
    sl->backoff_until = 0;
    sup->steer_dirty = 1;
}

static int slot_has_workers(const struct ps_sup *sup, int s)
{
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid && sup->workers[i].slot == s)
            return 1;
    return 0;
}

void ps__sup_close_retired(struct ps_sup *sup)
{
    int g, closed = 0;

    /* sockets leave the group from the end only: the others keep their place */
    while (sup->nslots > sup->target && sup->nslots > 1) {
        int s = sup->nslots - 1;
        if (sup->slots[s].state != SL_CLOSING || slot_has_workers(sup, s))
            break;
        for (g = 0; g < sup->ngroups; g++) {
            unsigned queued = 0, limit = 0;
            int fd = ps__group_fd(&sup->groups[g], s);
            if (!sup->groups[g].shared && ps_listen_queue(fd, &queued, &limit) == 0 && queued) {
                if (ps__group_migrates(&sup->groups[g]))
                    ps__sup_log(sup, PS_LOG_INFO, "retire_moved",
                                "closing slot %d's socket moves %u queued connection(s) to the "
                                "serving slots",
                                s, queued);
                else
                    ps__sup_log(sup, PS_LOG_WARN, "retire_reset",
                                "closing slot %d's socket resets %u queued connection(s)", s,
                                queued);
            }
            ps__group_close_last(&sup->groups[g]);
        }
        sup->slots[s].state = SL_CLOSED;
        sup->nslots--;
        ps__sup_log(sup, PS_LOG_INFO, "slot_closed", "slot %d closed", s);
        sup->steer_dirty = 1;
        closed = 1;
    }
    /* the slot that kept systemd waiting may be the one that went (a start
     * that failed, scaled away): no slot becomes ready to say so */
    if (closed)
        all_ready_check(sup);
}
