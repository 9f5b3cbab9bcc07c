/*
 * worker.c - the life of one worker process, as a table.
 *
 * A worker is born W_STARTING (spawn.c) and its entry is freed when it is
 * reaped (supervisor.c); in between every change of its state is a row of
 * the table below, run by ps__worker_step().  What the change means to its
 * slot or to the reload is decided after, by the slot's table (slots.c)
 * and the loop's routing (supervisor.c).
 */
#include "sup_internal.h"

#include <signal.h>
#include <stdio.h>

#define WATCHDOG_KILL_MS 2000 /* SIGABRT, then SIGKILL after this */
#define KILL_RECHECK_MS  5000 /* SIGKILL sent and still there: send again */

typedef void worker_action_fn(struct ps_sup *sup, struct ps_worker *w, const char *why);

struct worker_row {
    worker_action_fn *action; /* NULL: no row, the event means nothing */
    enum ps_worker_state next;
};

/* it said READY=1, or the kernel or the clock says it is */
static void w_ready(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    w->ready_ms = w->ping_ms = ps__sup_now(sup);
    snprintf(w->ready_by, sizeof(w->ready_by), "%s", why);
    ps__sup_log(sup, PS_LOG_INFO, "worker_ready", "worker %ld (slot %d, generation %u) ready (%s)",
                (long)w->pid, w->slot, w->generation, why);
}

/* it said STOPPING=1: it goes by itself (no signal), killed if it is still
 * there after the drain timeout */
static void w_leave(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    (void)why;
    w->deadline_ms = ps__sup_now(sup) + sup->cfg->drain_timeout_ms;
    ps__steer_later(sup);
}

static void w_drain(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    w->deadline_ms = ps__sup_now(sup) + sup->cfg->drain_timeout_ms;
    sup->sys->signal(sup, w, sup->cfg->drain_signal ? sup->cfg->drain_signal : SIGTERM);
    ps__sup_log(sup, PS_LOG_INFO, "worker_draining",
                "worker %ld (slot %d, generation %u) draining: %s", (long)w->pid, w->slot,
                w->generation, why);
    ps__steer_later(sup);
}

/* replaced while it holds UDP flows: no signal while they live (flows.c),
 * drained at --flow-linger at the latest */
static void w_linger(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    w->deadline_ms = ps__sup_now(sup) + sup->cfg->flow_linger_ms;
    ps__sup_log(sup, PS_LOG_INFO, "worker_lingering",
                "worker %ld (slot %d, generation %u) %s, lingers while its UDP flows live "
                "(drained when they are idle, in %u ms at most)",
                (long)w->pid, w->slot, w->generation, why, sup->cfg->flow_linger_ms);
    ps__steer_later(sup);
}

/* a watchdog miss: SIGABRT for a core dump of the hang, as systemd does */
static void w_abort(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    (void)why;
    w->deadline_ms = ps__sup_now(sup) + WATCHDOG_KILL_MS;
    sup->sys->signal(sup, w, SIGABRT);
    ps__steer_later(sup);
}

/* its whole tree, and again if it is still there a while later */
static void w_kill(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    (void)why;
    w->deadline_ms = ps__sup_now(sup) + KILL_RECHECK_MS;
    sup->sys->kill_tree(sup, w);
}

/* clang-format off */
static const struct worker_row table[W_STATE_COUNT][WE_COUNT] = {
    [W_STARTING][WE_READY]    = {w_ready, W_READY},
    [W_STARTING][WE_STOPPING] = {w_leave, W_DRAINING},
    [W_STARTING][WE_DRAIN]    = {w_drain, W_DRAINING},
    [W_STARTING][WE_ABORT]    = {w_abort, W_DRAINING},
    [W_STARTING][WE_KILL]     = {w_kill,  W_KILLED},
    [W_READY][WE_STOPPING]    = {w_leave, W_DRAINING},
    [W_READY][WE_DRAIN]       = {w_drain, W_DRAINING},
    [W_READY][WE_ABORT]       = {w_abort, W_DRAINING},
    [W_READY][WE_KILL]        = {w_kill,  W_KILLED},
    [W_READY][WE_LINGER]      = {w_linger, W_LINGERING},
    [W_LINGERING][WE_STOPPING] = {w_leave, W_DRAINING},
    [W_LINGERING][WE_DRAIN]   = {w_drain, W_DRAINING},
    [W_LINGERING][WE_ABORT]   = {w_abort, W_DRAINING},
    [W_LINGERING][WE_KILL]    = {w_kill,  W_KILLED},
    [W_DRAINING][WE_ABORT]    = {w_abort, W_DRAINING},
    [W_DRAINING][WE_KILL]     = {w_kill,  W_KILLED},
    [W_KILLED][WE_KILL]       = {w_kill,  W_KILLED},
};
/* clang-format on */

int ps__worker_step(struct ps_sup *sup, struct ps_worker *w, enum ps_worker_event ev,
                    const char *why)
{
    const struct worker_row *r;

    if (!w->pid || w->state >= W_STATE_COUNT || ev >= WE_COUNT)
        return 0;
    r = &table[w->state][ev];
    if (!r->action)
        return 0;
    r->action(sup, w, why);
    w->state = r->next;
    return 1;
}

int ps__worker_can(const struct ps_worker *w, enum ps_worker_event ev)
{
    return w->pid && w->state < W_STATE_COUNT && ev < WE_COUNT && table[w->state][ev].action;
}

void ps__worker_drain(struct ps_sup *sup, struct ps_worker *w, const char *why)
{
    ps__worker_step(sup, w, WE_DRAIN, why);
}

void ps__worker_abort(struct ps_sup *sup, struct ps_worker *w)
{
    ps__worker_step(sup, w, WE_ABORT, "watchdog");
}

void ps__worker_kill(struct ps_sup *sup, struct ps_worker *w)
{
    ps__worker_step(sup, w, WE_KILL, "kill");
}

int ps__sup_live_workers(const struct ps_sup *sup)
{
    int i, n = 0;

    for (i = 0; i < sup->nworkers; i++)
        n += sup->workers[i].pid != 0;
    return n;
}
