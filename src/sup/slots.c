/*
 * slots.c - the life cycle of a slot and its worker, as one table.
 *
 * Every change of a slot's state is a row of ps__slot_table, run by
 * ps__slot_event(): the row's action (one small function each, a_*) does
 * what the change means (start, drain, count a crash...) and picks one of
 * the row's targets: its own, or an alternative the row names (a start that
 * fails backs off; a retiring slot kept by a scale-up serves, starts or gets
 * a fresh worker), or a guard says when a row applies.  Nothing else
 * assigns sl->state: opening and closing a slot are events too.
 * Events about workers that are not a slot's current one (old generations
 * draining, the reloading generation) are not slot events: ops.c handles
 * the reloading generation, the loop logs the rest.  The worker's own state
 * (W_*) is set by whoever learnt it (the notify handler, the reaper) before
 * the slot event.  docs/design/supervisor-machine.md lists the tables.
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

/* A row of the table: action, target, and the alternatives the action may
 * pick (a row without them has SL_STATE_COUNT there).  A cell with no row
 * is zero: A_NONE, the event means nothing in that state. */
/* clang-format off */
#define R(a, to)             {a, to, SL_STATE_COUNT, SL_STATE_COUNT, NULL}
#define R2(a, to, alt)       {a, to, alt, SL_STATE_COUNT, NULL}
#define R3(a, to, alt, alt2) {a, to, alt, alt2, NULL}
#define RG(a, to, alt, when) {a, to, alt, SL_STATE_COUNT, when}
/* clang-format on */

/* The back-off's end starts no worker while a reload's new worker starts on
 * the slot's socket (the reload decides: it commits, and that worker is the
 * slot's, or rolls back, and the slot starts one of the serving generation
 * then), nor once the supervisor stops. */
static int no_successor_starting(const struct ps_sup *sup, int s)
{
    return sup->slots[s].next < 0 && !ps__stopping(sup);
}

/* A retired slot's socket closes once no worker of the slot is left, and
 * only the last slot's: sockets leave a group from the end, so that the
 * others keep their place in it. */
static int closable(const struct ps_sup *sup, int s)
{
    int i;

    if (s != sup->nslots - 1 || sup->nslots <= sup->target || sup->nslots <= 1)
        return 0;
    /* a worker lingering for its UDP flows holds its own copies: the slot
     * goes, its sockets stay with it (and a scale-up binds fresh ones) */
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid && sup->workers[i].slot == s &&
            sup->workers[i].state != W_LINGERING)
            return 0;
    return 1;
}

/* clang-format off */
const struct ps_slot_transition ps__slot_table[SL_STATE_COUNT][EV_COUNT] = {
    /* no worker: the next one starts at backoff_until */
    [SL_BACKOFF][EV_START]          = RG(A_SPAWN,    SL_STARTING, SL_BACKOFF, no_successor_starting),
    [SL_BACKOFF][EV_RETIRE]         = R2(A_LOSE,     SL_CLOSING, SL_RETIRING),
    [SL_BACKOFF][EV_REPLACE]        = R(A_SWAP,      SL_READY),
    [SL_BACKOFF][EV_STOP]           = R(A_IGNORE,    SL_STOPPING),
    [SL_BACKOFF][EV_LISTENER_LOST]  = R(A_REVIVE,    SL_BACKOFF),
    /* its worker starts */
    [SL_STARTING][EV_READY]         = R(A_READY,     SL_READY),
    [SL_STARTING][EV_STOPPING]      = R(A_RELEASE,   SL_BACKOFF),
    [SL_STARTING][EV_EXIT]          = R(A_CRASH,     SL_BACKOFF),
    [SL_STARTING][EV_READY_LATE]    = R(A_LATE,      SL_BACKOFF),
    [SL_STARTING][EV_RETIRE]        = R(A_RETIRE,    SL_RETIRING),
    [SL_STARTING][EV_REPLACE]       = R(A_SWAP,      SL_READY),
    [SL_STARTING][EV_STOP]          = R(A_DRAIN,     SL_STOPPING),
    [SL_STARTING][EV_LISTENER_LOST] = R(A_REVIVE,    SL_STARTING),
    /* its worker serves */
    [SL_READY][EV_STOPPING]         = R(A_RELEASE,   SL_BACKOFF),
    [SL_READY][EV_EXIT]             = R(A_CRASH,     SL_BACKOFF),
    [SL_READY][EV_WATCHDOG]         = R(A_ABORT,     SL_BACKOFF),
    [SL_READY][EV_RETIRE]           = R(A_RETIRE,    SL_RETIRING),
    [SL_READY][EV_REPLACE]          = R(A_SWAP,      SL_READY),
    [SL_READY][EV_STOP]             = R(A_DRAIN,     SL_STOPPING),
    [SL_READY][EV_LISTENER_LOST]    = R(A_REVIVE,    SL_READY),
    [SL_READY][EV_STALL]            = R(A_STALL,     SL_STALLED),
    /* steered away from (its queue stopped draining) */
    [SL_STALLED][EV_STOPPING]       = R(A_RELEASE,   SL_BACKOFF),
    [SL_STALLED][EV_EXIT]           = R(A_CRASH,     SL_BACKOFF),
    [SL_STALLED][EV_WATCHDOG]       = R(A_ABORT,     SL_BACKOFF),
    [SL_STALLED][EV_RETIRE]         = R(A_RETIRE,    SL_RETIRING),
    [SL_STALLED][EV_REPLACE]        = R(A_SWAP,      SL_READY),
    [SL_STALLED][EV_STOP]           = R(A_DRAIN,     SL_STOPPING),
    [SL_STALLED][EV_LISTENER_LOST]  = R(A_REVIVE,    SL_STALLED),
    [SL_STALLED][EV_STALL]          = R(A_RESCUE,    SL_BACKOFF),
    [SL_STALLED][EV_RESUME]         = R(A_RESUME,    SL_READY),
    /* scaled down: steered away, its worker empties the queue */
    [SL_RETIRING][EV_READY]         = R(A_IGNORE,    SL_RETIRING),
    [SL_RETIRING][EV_STOPPING]      = R2(A_LOSE,     SL_CLOSING, SL_RETIRING),
    [SL_RETIRING][EV_EXIT]          = R2(A_LOSE,     SL_CLOSING, SL_RETIRING),
    [SL_RETIRING][EV_READY_LATE]    = R(A_DRAIN,     SL_CLOSING),
    [SL_RETIRING][EV_WATCHDOG]      = R(A_ABORT,     SL_CLOSING),
    [SL_RETIRING][EV_KEEP]          = R3(A_KEEP,     SL_READY, SL_STARTING, SL_BACKOFF),
    [SL_RETIRING][EV_QUEUE_EMPTY]   = R(A_HANDOVER,  SL_CLOSING),
    [SL_RETIRING][EV_STOP]          = R(A_DRAIN,     SL_STOPPING),
    [SL_RETIRING][EV_LISTENER_LOST] = R(A_REVIVE,    SL_RETIRING),
    /* retired: its socket closes once no worker of it is left */
    [SL_CLOSING][EV_KEEP]           = R3(A_KEEP,     SL_READY, SL_STARTING, SL_BACKOFF),
    [SL_CLOSING][EV_STOP]           = R(A_IGNORE,    SL_STOPPING),
    [SL_CLOSING][EV_LISTENER_LOST]  = R(A_REVIVE,    SL_CLOSING),
    [SL_CLOSING][EV_CLOSE]          = RG(A_CLOSE,    SL_CLOSED, SL_STATE_COUNT, closable),
    /* gone: only a scale-up brings it back */
    [SL_CLOSED][EV_OPEN]            = R(A_OPEN,      SL_BACKOFF),
    /* SL_STOPPING: the end, no row */
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
    [EV_OPEN] = "open",
    [EV_CLOSE] = "close",
};

static const char *const worker_state_names[W_STATE_COUNT] = {
    [W_STARTING] = "starting", [W_READY] = "ready",   [W_LINGERING] = "lingering",
    [W_DRAINING] = "draining", [W_KILLED] = "killed",
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

/* The slot's current worker stops being its own (it exited, or drains as an
 * old worker whose exit is only logged). */
static struct ps_worker *detach_current(struct ps_sup *sup, struct ps_slot *sl)
{
    struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;

    sl->current = -1;
    ps__steer_later(sup);
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
    uint64_t now = ps__sup_now(sup);
    char who[32] = "a worker"; /* one that could not be started has no pid */
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
    if (w)
        snprintf(who, sizeof(who), "worker %ld", (long)w->pid);
    ps__sup_log(sup, sl->crashes >= 3 ? PS_LOG_ERROR : PS_LOG_WARN,
                sl->crashes >= 3 ? "crash_loop" : "worker_failed",
                "%s (slot %d, generation %u) %s; %u failure(s) in a row, restarting in %u ms", who,
                (int)(sl - sup->slots), w ? w->generation : sup->generation, what, sl->crashes,
                delay);
}

/* A retired slot's sockets under the migrate program: its worker keeps
 * them listening (a server whose listener is shut down under it may spin
 * on accept's EINVAL and never see its drain signal, as kresd's libuv
 * does; a lingering one still serves), nothing new reaches them, and
 * what they hold moves to the serving slots when the last holder closes
 * them.  Only when what is queued there does not go down for
 * HANDOVER_GRACE_MS (a frozen worker, one that closed its copy while ours
 * still listens) are they shut down, so that it moves now.  The 1 s tick
 * looks: no wake-up of its own.  Without the program (CBPF) the queue was
 * left to empty first (retire_done). */
#define HANDOVER_GRACE_MS 500

static long closing_queued(const struct ps_sup *sup, int s)
{
    unsigned queued, limit;
    long sum = 0;
    int g;

    for (g = 0; g < sup->ngroups; g++)
        if (ps__group_migrates(&sup->groups[g]) && s < sup->groups[g].nfds &&
            !sup->groups[g].down[s] && ps_listen_queue(sup->groups[g].fds[s], &queued, &limit) == 0)
            sum += queued;
    return sum;
}

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
                "retired slot %d: its worker does not take what is queued in its socket: shut "
                "down, %u queued connection(s) moved to the serving slots",
                s, moved);
}

void ps__slot_handover_check(struct ps_sup *sup, int s, uint64_t now)
{
    struct ps_slot *sl = &sup->slots[s];
    long queued;

    if (sl->state != SL_CLOSING || !ps__sup_migrates(sup))
        return;
    queued = closing_queued(sup, s);
    if (queued == 0 || queued < (long)sl->handover_q || !sl->handover_since) {
        sl->handover_q = (unsigned)queued; /* going down, or nothing to move */
        sl->handover_since = now;
        return;
    }
    sl->handover_q = (unsigned)queued;
    if (now - sl->handover_since >= HANDOVER_GRACE_MS)
        hand_over(sup, s);
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

/* 1 when the slot's sockets can be replaced: no group is steered by
 * classic BPF (a closed socket would reset its queue), and one is steered
 * per generation (eBPF, or the UDP flow table). */
static int renewable(const struct ps_sup *sup)
{
    const char *why;
    int g, any = 0;

    if (ps__sup_steering(sup, &why) == PS_STEER_CBPF)
        return 0;
    for (g = 0; g < sup->ngroups; g++)
        any |= ps__group_per_generation(&sup->groups[g]);
    return any;
}

long ps__slot_renew_sockets(struct ps_sup *sup, int s, int at_once)
{
    unsigned queued;
    long moved = 0;
    int g, r;

    if (!renewable(sup))
        return -1;
    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (!ps__group_per_generation(gr) || s >= gr->nfds)
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
    ps__steer_later(sup);
    return moved;
}

int ps__slot_prepare_sockets(struct ps_sup *sup, int s, char *err, size_t errlen)
{
    char addr[160];
    int g, r;

    for (g = 0; g < sup->ngroups; g++) {
        struct ps_group *gr = &sup->groups[g];
        if (!ps__group_per_generation(gr) || s >= gr->nfds)
            continue;
        r = ps__lgroup_prepare(&gr->lg, s);
        if (r < 0) {
            ps_spec_format(&gr->spec, addr, sizeof(addr));
            snprintf(err, errlen, "slot %d: cannot bind a socket of its own on %s: %s", s, addr,
                     ps_strerror(r));
            return r;
        }
    }
    return 0;
}

void ps__slot_commit_sockets(struct ps_sup *sup, int s)
{
    struct ps_worker *w = sup->slots[s].current >= 0 ? &sup->workers[sup->slots[s].current] : NULL;
    int g;

    if (w) /* it keeps the old ones: their flows stay with it */
        ps__flow_keep(sup, s, w);
    for (g = 0; g < sup->ngroups; g++) {
        if (s < sup->groups[g].nfds && sup->groups[g].nextfds[s] >= 0)
            ps__lgroup_commit(&sup->groups[g].lg, s);
        else if (w && g < PS_SUP_MAX_LISTENERS) /* a socket both generations read */
            w->flow_refs[g] = 0;
    }
    ps__steer_later(sup);
}

void ps__slot_discard_sockets(struct ps_sup *sup, int s)
{
    int g;

    for (g = 0; g < sup->ngroups; g++)
        ps__lgroup_discard(&sup->groups[g].lg, s);
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
    ps__steer_later(sup);
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
    ps__steer_later(sup);
}

/* It said STOPPING=1 (the caller made it W_DRAINING): its successor starts
 * on a socket of its own (leave), at once, unless it follows another quick
 * failure of the slot: a worker that says it before it has served for a
 * second (or run for ten) and exits, or keeps saying it, is a crash loop
 * like any other (back-off, restarts, the crash-loop line).  The first
 * quick one is only remembered (crashes), not counted as a restart: a
 * program may have its reasons to go once. */
static void release(struct ps_sup *sup, int s, struct ps_worker *w)
{
    struct ps_slot *sl = &sup->slots[s];
    char what[160];

    detach_current(sup, sl);
    leave(sup, s, w, ps__slot_renew_sockets(sup, s, 0));
    if (stable(w, ps__sup_now(sup)) || sl->crashes == 0) {
        sl->crashes = !stable(w, ps__sup_now(sup));
        sl->backoff_until = 0;
        ps__sup_log(sup, PS_LOG_INFO, "worker_stopping",
                    "worker %ld (slot %d) said STOPPING=1: steered away, replaced", (long)w->pid,
                    s);
        return;
    }
    snprintf(what, sizeof(what), "said STOPPING=1 %llu ms after it started",
             (unsigned long long)(ps__sup_now(sup) - w->started_ms));
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
    sup->sys->notify(sup, "READY=1");
    ps__sup_log(sup, PS_LOG_INFO, "ready", "all %d worker(s) ready", sup->nslots);
}

/*
 * The actions.  Each gets the slot, its row, and its current worker (or
 * NULL); returns which of the row's targets the slot moves to: 0 the row's
 * own, 1 and 2 its alternatives.
 */
typedef int action_fn(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                      struct ps_worker *w, int status, const char *why);

static int a_ignore(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                    struct ps_worker *w, int status, const char *why)
{
    (void)sup, (void)s, (void)t, (void)w, (void)status, (void)why;
    return 0;
}

static int a_spawn(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    char what[256];
    int idx = sup->sys->spawn(sup, s, sup->generation);

    (void)t, (void)w, (void)status, (void)why;
    if (idx < 0) {
        sup->spawn_error = idx;
        snprintf(what, sizeof(what), "could not be started: %s", ps_strerror(idx));
        count_crash(sup, &sup->slots[s], NULL, 127 << 8, what);
        return 1;
    }
    sup->slots[s].current = idx;
    return 0;
}

/* steer to it (systemd hears of it once the state is set) */
static int a_steer(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    (void)s, (void)t, (void)w, (void)status, (void)why;
    ps__steer_later(sup);
    return 0;
}

static int a_release(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                     struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)status, (void)why;
    release(sup, s, w);
    return 0;
}

static int a_crash(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    char what[256], how[96];

    (void)t, (void)why;
    detach_current(sup, &sup->slots[s]);
    snprintf(what, sizeof(what), "exited with %s", ps__exit_text(status, how, sizeof(how)));
    count_crash(sup, &sup->slots[s], w, status, what);
    return 0;
}

/* not ready in time: drained; counted as a crash where the slot backs off
 * (a retiring slot's worker is only drained) */
static int a_late(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                  struct ps_worker *w, int status, const char *why)
{
    char what[256];

    (void)status;
    detach_current(sup, &sup->slots[s]);
    ps__worker_drain(sup, w, why);
    if (t->next == SL_BACKOFF) {
        snprintf(what, sizeof(what), "was not ready within %u ms (still running: draining it)",
                 sup->cfg->ready_timeout_ms);
        count_crash(sup, &sup->slots[s], w, 0, what);
    }
    return 0;
}

/* systemd's way: SIGABRT for a core dump of the hang, SIGKILL later */
static int a_abort(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    (void)status;
    detach_current(sup, &sup->slots[s]);
    ps__sup_log(sup, PS_LOG_ERROR, "watchdog", "%s: SIGABRT", why);
    ps__worker_abort(sup, w);
    if (t->next == SL_BACKOFF)
        count_crash(sup, &sup->slots[s], w, SIGABRT, "missed its watchdog");
    return 0;
}

static int a_retire(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                    struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)w, (void)status, (void)why;
    sup->slots[s].retire_since = ps__sup_now(sup);
    ps__steer_later(sup);
    return 0;
}

/* its own worker stays (ready: 0, starting: 1); one of an older generation
 * (the reload passed this slot by while it was retiring), or none, makes
 * way for a fresh worker of the serving one (2) */
static int a_keep(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                  struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)status, (void)why;
    ps__steer_later(sup);
    listen_again(sup, s);
    if (w && w->generation == sup->generation && w->state != W_DRAINING)
        return w->state == W_READY ? 0 : 1;
    if (w)
        ps__worker_drain(sup, detach_current(sup, &sup->slots[s]), "replaced: scaled back up");
    sup->slots[s].backoff_until = 0;
    return 2;
}

static int a_drain(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)status;
    if (w)
        ps__worker_drain(sup, detach_current(sup, &sup->slots[s]), why);
    return 0;
}

static int a_handover(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                      struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)status;
    sup->slots[s].handover_since = 0; /* ps__slot_handover_check starts looking */
    if (w) {                          /* its UDP flows stay on its sockets while they live */
        ps__flow_keep(sup, s, w);
        ps__flow_retire(sup, detach_current(sup, &sup->slots[s]), why);
    }
    return 0;
}

/* Connections still wait in the slot's socket (it was steered away from
 * while they queued: its worker was frozen, killed, or had just crashed):
 * closing the socket now would reset them.  A worker of the serving
 * generation empties the queue first, as long as the retire may last; the
 * slot stays retiring (1). */
static int a_lose(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                  struct ps_worker *w, int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    int idx;

    (void)t, (void)status;
    detach_current(sup, sl);
    if (w)
        ps__sup_log(sup, PS_LOG_INFO, "worker_gone", "worker %ld of retiring slot %d: %s",
                    (long)w->pid, s, why);
    if (sl->state != SL_RETIRING)
        sl->retire_since = ps__sup_now(sup); /* retired while backing off */
    if (ps__slot_queued(sup, s, 0) <= 0 ||
        ps__sup_now(sup) - sl->retire_since >= sup->cfg->drain_timeout_ms)
        return 0;
    idx = sup->sys->spawn(sup, s, sup->generation);
    if (idx < 0)
        return 0;
    sl->current = idx;
    sl->restarts += w != NULL;
    ps__sup_log(sup, PS_LOG_INFO, "retire_refill",
                "retiring slot %d still has connections queued: a new worker empties its queue", s);
    return 1;
}

static int a_swap(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                  struct ps_worker *w, int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];

    (void)t, (void)status, (void)why;
    if (w)
        ps__flow_retire(sup, detach_current(sup, sl), "replaced by a new generation");
    sl->current = sl->next;
    sl->next = -1;
    sl->crashes = 0; /* a reload is how a fixed program gets in */
    ps__steer_later(sup);
    return 0;
}

static int a_revive(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                    struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)w, (void)status;
    sup->slots[s].lost++;
    ps__sup_log(sup, PS_LOG_WARN, "listener_revived", "slot %d: %s", s, why);
    ps__steer_later(sup);
    return 0;
}

static int a_stall(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];

    (void)t, (void)status;
    sl->stalls++;
    sl->stalled_at = ps__sup_now(sup);
    sl->stall_reload_said = 0;
    ps__steer_later(sup);
    ps__sup_log(sup, PS_LOG_WARN, "stall",
                "slot %d stalled (%s): steered away from; its worker %ld has %u ms to resume", s,
                why, w ? (long)w->pid : 0L, sup->cfg->stall_timeout_ms / 2);
    return 0;
}

static int a_resume(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                    struct ps_worker *w, int status, const char *why)
{
    (void)t, (void)status;
    ps__steer_later(sup);
    ps__sup_log(sup, PS_LOG_INFO, "stall_resumed", "slot %d: worker %ld accepts again (%s)", s,
                w ? (long)w->pid : 0L, why);
    return 0;
}

/* A stalled slot gets a fresh socket (eBPF): what is queued on the old one
 * moves to the serving slots. */
static long rescue_sockets(struct ps_sup *sup, int s)
{
    long moved = ps__slot_renew_sockets(sup, s, 1);

    if (moved >= 0)
        ps__sup_log(sup, PS_LOG_WARN, "stall_rescue",
                    "slot %d: %ld queued connection(s) moved to the serving slots; fresh "
                    "socket, fresh worker",
                    s, moved);
    else
        ps__sup_log(sup, PS_LOG_WARN, "stall_rescue",
                    "slot %d: fresh worker (its queue waits for it in the same socket; the slot "
                    "is steered to again once the stalled worker is gone)",
                    s);
    return moved;
}

/* The queue moves first (eBPF), then the stalled worker goes: drained
 * rather than killed at once, since a worker that was only paused
 * (SIGSTOP, a frozen cgroup, a long GC) still answers what it had accepted
 * when it comes back; one that does not is killed, its whole tree, after
 * the drain timeout like any draining worker. */
static int a_rescue(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                    struct ps_worker *w, int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    long renewed;

    (void)t, (void)status;
    sl->rescues++;
    sl->restarts++;
    renewed = rescue_sockets(sup, s);
    if (w) {
        leave(sup, s, w, renewed);
        ps__worker_drain(sup, detach_current(sup, sl), why);
    }
    sl->backoff_until = 0;
    sl->stall_since = sl->stall_q = 0;
    return 0;
}

static int a_open(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                  struct ps_worker *w, int status, const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    enum ps_slot_state st = sl->state;

    (void)t, (void)w, (void)status, (void)why;
    memset(sl, 0, sizeof(*sl));
    sl->state = st; /* the dispatcher moves it */
    sl->current = sl->next = sl->leaving = -1;
    ps__steer_later(sup);
    return 0;
}

/* What waits in its sockets moves with eBPF, is reset without (the retire
 * waited for it to empty, as long as it could). */
static int a_close(struct ps_sup *sup, int s, const struct ps_slot_transition *t,
                   struct ps_worker *w, int status, const char *why)
{
    unsigned queued, limit;
    int g, fd;

    (void)t, (void)w, (void)status, (void)why;
    for (g = 0; g < sup->ngroups; g++) {
        queued = limit = 0;
        fd = ps__group_fd(&sup->groups[g], s);
        if (!sup->groups[g].shared && ps_listen_queue(fd, &queued, &limit) == 0 && queued) {
            if (ps__group_migrates(&sup->groups[g]))
                ps__sup_log(sup, PS_LOG_INFO, "retire_moved",
                            "closing slot %d's socket moves %u queued connection(s) to the "
                            "serving slots",
                            s, queued);
            else
                ps__sup_log(sup, PS_LOG_WARN, "retire_reset",
                            "closing slot %d's socket resets %u queued connection(s)", s, queued);
        }
        ps__group_close_last(&sup->groups[g]);
    }
    sup->nslots--;
    ps__sup_log(sup, PS_LOG_INFO, "slot_closed", "slot %d closed", s);
    ps__steer_later(sup);
    return 0;
}

/* clang-format off */
static action_fn *const actions[A_COUNT] = {
    [A_NONE]     = a_ignore,   [A_IGNORE]   = a_ignore,
    [A_SPAWN]    = a_spawn,    [A_READY]    = a_steer,
    [A_RELEASE]  = a_release,  [A_CRASH]    = a_crash,
    [A_LATE]     = a_late,     [A_ABORT]    = a_abort,
    [A_RETIRE]   = a_retire,   [A_KEEP]     = a_keep,
    [A_DRAIN]    = a_drain,    [A_HANDOVER] = a_handover,
    [A_LOSE]     = a_lose,     [A_SWAP]     = a_swap,
    [A_REVIVE]   = a_revive,   [A_STALL]    = a_stall,
    [A_RESUME]   = a_resume,   [A_RESCUE]   = a_rescue,
    [A_OPEN]     = a_open,     [A_CLOSE]    = a_close,
};
/* clang-format on */

enum ps_slot_state ps__slot_event(struct ps_sup *sup, int s, enum ps_slot_event ev, int status,
                                  const char *why)
{
    struct ps_slot *sl = &sup->slots[s];
    const struct ps_slot_transition *t;
    enum ps_slot_state from = sl->state, to;
    struct ps_worker *w;
    int pick;

    if (from >= SL_STATE_COUNT || ev >= EV_COUNT)
        return from;
    if (!ps__slot_can(sup, s, ev))
        return from;
    t = &ps__slot_table[from][ev];
    w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;
    pick = actions[t->action](sup, s, t, w, status, why ? why : ps__slot_event_name(ev));
    to = pick == 2 ? t->alt2 : pick == 1 ? t->alt : t->next;
    if (to >= SL_STATE_COUNT)
        to = from;
    sl->state = to;
    if (to == SL_READY)
        all_ready_check(sup);
    if (to != from)
        ps__sup_log(sup, PS_LOG_DEBUG, "slot_state", "slot %d: %s --%s--> %s", s,
                    ps__slot_state_name(from), ps__slot_event_name(ev), ps__slot_state_name(to));
    return to;
}

int ps__slot_can(const struct ps_sup *sup, int s, enum ps_slot_event ev)
{
    const struct ps_slot_transition *t;

    if (sup->slots[s].state >= SL_STATE_COUNT || ev >= EV_COUNT)
        return 0;
    t = &ps__slot_table[sup->slots[s].state][ev];
    return t->action != A_NONE && t->action < A_COUNT && (!t->guard || t->guard(sup, s));
}

void ps__slot_open(struct ps_sup *sup, int s)
{
    ps__slot_event(sup, s, EV_OPEN, 0, "opened");
}

void ps__sup_close_retired(struct ps_sup *sup)
{
    int closed = 0;

    while (sup->nslots > 1 &&
           ps__slot_event(sup, sup->nslots - 1, EV_CLOSE, 0, "retired") == SL_CLOSED)
        closed = 1;
    /* the slot that kept systemd waiting may be the one that went (a start
     * that failed, scaled away): no slot becomes ready to say so */
    if (closed)
        all_ready_check(sup);
}
