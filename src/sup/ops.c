/*
 * ops.c - what a user asks the supervisor to do: reload, scale, upgrade,
 * stop.  One runs at a time; a reload is the only one that takes time.
 *
 * Rules when operations meet:
 *   - asked while a reload is in flight: queued, run in order when it ends;
 *   - a reload asked while another reload is queued merges into it, and a
 *     scale into a queued scale (the later count wins): the requesters of
 *     a merged operation all get its outcome;
 *   - every requester is answered with the outcome of the operation it asked
 *     for, never another one's (a queued reload reports its own generation);
 *   - stop preempts: the reload in flight is rolled back, everything queued
 *     is answered "the supervisor is stopping", then every worker drains;
 *   - lame duck is the start of a stop: nothing new is accepted from then
 *     on, what is queued waits and is answered by the stop; a reload in
 *     flight may still commit (the workers keep serving); a plain stop
 *     (or a second SIGTERM) during lame duck starts the drain at once;
 *   - a reload starts a worker of the new generation in every slot that is
 *     not being removed; a removed slot that scaling brings back later gets
 *     a worker of the serving generation (slots.c, A_KEEP).
 */
#include "sup_internal.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void answer(struct ps_sup *sup, struct ps_op *op, int ok, const char *body)
{
    int i;

    for (i = 0; i < op->nwaiters; i++)
        sup->sys->answer(sup, &op->waiters[i], ok, body);
    op->nwaiters = 0;
}

static int add_waiter(struct ps_op *op, const struct ps_waiter *w)
{
    if (!w)
        return 0;
    if (op->nwaiters >= PS_OP_MAX_WAITERS)
        return -EBUSY;
    op->waiters[op->nwaiters++] = *w;
    return 0;
}

/* ---- reload ------------------------------------------------------------------ */

static void reload_done(struct ps_sup *sup, int ok, const char *body)
{
    sup->reloading = 0;
    if (ok)
        sup->reloads_ok++;
    else
        sup->reloads_failed++;
    /* the reload is over for systemd too; but not when a stop rolled it back:
     * STOPPING=1 is said already, and nothing may follow it (sd_notify(3)) */
    if (sup->told_ready && !sup->stopping)
        sup->sys->notify(sup, "READY=1");
    answer(sup, &sup->running, ok, body);
}

static void rollback(struct ps_sup *sup, const char *why)
{
    char body[512];
    int s;

    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (sl->next < 0)
            continue;
        ps__worker_drain(sup, &sup->workers[sl->next], "reload rolled back");
        sl->next = -1;
    }
    snprintf(sup->reload_error, sizeof(sup->reload_error), "%s", why);
    ps__sup_log(sup, PS_LOG_ERROR, "reload_rolled_back",
                "reload to generation %u rolled back: %s; generation %u keeps serving",
                sup->next_generation, why, sup->generation);
    snprintf(body, sizeof(body),
             "reload to generation %u rolled back: %s; generation %u keeps serving",
             sup->next_generation, why, sup->generation);
    reload_done(sup, 0, body);
}

static void commit(struct ps_sup *sup)
{
    char body[128];
    int s;

    sup->generation = sup->next_generation;
    for (s = 0; s < sup->nslots; s++)
        if (sup->slots[s].next >= 0)
            ps__slot_event(sup, s, EV_REPLACE, 0, "reload committed");
    sup->reload_error[0] = '\0';
    sup->steer_dirty = 1;
    ps__sup_log(sup, PS_LOG_INFO, "reload_done", "generation %u is serving", sup->generation);
    snprintf(body, sizeof(body), "generation %u is serving", sup->generation);
    reload_done(sup, 1, body);
}

static void check_commit(struct ps_sup *sup)
{
    int s;

    if (!sup->reloading)
        return;
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_slot *sl = &sup->slots[s];
        if (sl->next >= 0 && sup->workers[sl->next].state != W_READY)
            return;
    }
    commit(sup);
}

static int reloadable(const struct ps_slot *sl)
{
    return sl->state == SL_BACKOFF || sl->state == SL_STARTING || sl->state == SL_READY ||
           sl->state == SL_STALLED;
}

static void start_reload(struct ps_sup *sup)
{
    char why[256];
    int s, idx;

    sup->reloading = 1;
    sup->next_generation++;
    /* also before the first READY=1: systemd then only notes it (the unit
     * is still starting) and READY=1 ends both */
    sup->sys->notify(sup, "RELOADING=1");
    ps__sup_log(sup, PS_LOG_INFO, "reload_started", "starting generation %u", sup->next_generation);
    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (!reloadable(sl))
            continue;
        idx = sup->sys->spawn(sup, s, sup->next_generation);
        if (idx < 0) {
            snprintf(why, sizeof(why), "cannot start %s: %s", sup->cfg->argv[0], ps_strerror(idx));
            rollback(sup, why);
            return;
        }
        sl->next = idx;
    }
    check_commit(sup);
}

void ps__reload_next_ready(struct ps_sup *sup, int s)
{
    (void)s;
    check_commit(sup);
}

void ps__reload_next_failed(struct ps_sup *sup, int s, const char *why)
{
    (void)s; /* the caller took the failed worker out of slot s already */
    if (sup->reloading)
        rollback(sup, why);
}

/* ---- scale --------------------------------------------------------------------- */

static int apply_scale(struct ps_sup *sup, int n, char *err, size_t errlen)
{
    int s, r;

    /* all groups or none: a failed scale leaves no socket behind */
    r = ps__groups_grow(sup, n, err, errlen);
    if (r < 0)
        return r;
    ps__sup_log(sup, PS_LOG_INFO, "scale", "scaling from %d to %d workers", sup->target, n);
    sup->target = n;
    for (s = 0; s < n; s++) {
        if (s >= sup->nslots || sup->slots[s].state == SL_CLOSED)
            ps__slot_open(sup, s);
        else
            ps__slot_event(sup, s, EV_KEEP, 0, "scaled up");
    }
    if (n > sup->nslots)
        sup->nslots = n;
    for (s = n; s < sup->nslots; s++)
        ps__slot_event(sup, s, EV_RETIRE, 0, "scaled down");
    sup->steer_dirty = 1;
    ps__sup_close_retired(sup);
    return 0;
}

/* ---- the queue ------------------------------------------------------------------- */

int ps__op_request(struct ps_sup *sup, enum ps_op_kind kind, int n, const struct ps_waiter *w,
                   char *err, size_t errlen)
{
    struct ps_op *op = NULL;
    int i;

    if (sup->stopping || sup->lameduck) {
        ps__set_error(err, errlen, "the supervisor is stopping%s",
                      sup->stopping ? "" : " (lame duck)");
        return -ESHUTDOWN;
    }
    if (kind == OP_SCALE && (n < 1 || n > PS_SUP_MAX_WORKERS)) {
        ps__set_error(err, errlen, "cannot scale to %d workers (1-%d)", n, PS_SUP_MAX_WORKERS);
        return -EINVAL;
    }
    if (kind == OP_UPGRADE)
        for (i = 0; i < sup->nqueued; i++)
            if (sup->queue[i].kind == OP_UPGRADE) {
                ps__set_error(err, errlen, "an upgrade is already queued");
                return -EBUSY;
            }
    if (sup->nqueued && kind != OP_UPGRADE && sup->queue[sup->nqueued - 1].kind == kind) {
        op = &sup->queue[sup->nqueued - 1]; /* merge into the one waiting */
    } else if (sup->nqueued == PS_OP_QUEUE_MAX) {
        ps__set_error(err, errlen, "too many operations queued");
        return -EBUSY;
    } else {
        op = &sup->queue[sup->nqueued++];
        memset(op, 0, sizeof(*op));
        op->kind = kind;
        op->n = n;
        op->id = ++sup->op_ids;
    }
    if (add_waiter(op, w) < 0) {
        ps__set_error(err, errlen, "too many clients waiting");
        return -EBUSY;
    }
    /* a scale merged into a queued one: the later count wins; only now, as
     * a request refused just above must change nothing */
    if (kind == OP_SCALE)
        op->n = n;
    if (sup->reloading)
        ps__sup_log(sup, PS_LOG_INFO, "op_queued", "%s queued behind the reload in progress",
                    kind == OP_RELOAD  ? "reload"
                    : kind == OP_SCALE ? "scale"
                                       : "upgrade");
    return 0;
}

void ps__op_run_queue(struct ps_sup *sup)
{
    char err[256], body[300];
    struct ps_op op;

    while (!sup->reloading && !sup->upgrade_asking && !sup->stopping && !sup->lameduck &&
           sup->nqueued) {
        op = sup->queue[0];
        memmove(&sup->queue[0], &sup->queue[1], (size_t)--sup->nqueued * sizeof(sup->queue[0]));
        switch (op.kind) {
        case OP_RELOAD:
            sup->running = op;
            start_reload(sup);
            break;
        case OP_SCALE:
            if (apply_scale(sup, op.n, err, sizeof(err)) < 0) {
                ps__sup_log(sup, PS_LOG_WARN, "scale_failed", "%s", err);
                answer(sup, &op, 0, err);
            } else {
                snprintf(body, sizeof(body), "scaling to %d workers", op.n);
                answer(sup, &op, 1, body);
            }
            break;
        case OP_UPGRADE:
            /* the outcome comes later (upgrade.c), unless it cannot start */
            if (sup->sys->upgrade(sup, op.nwaiters ? &op.waiters[0] : NULL, err, sizeof(err)) < 0) {
                ps__sup_log(sup, PS_LOG_ERROR, "upgrade_failed", "upgrade failed: %s", err);
                answer(sup, &op, 0, err);
            }
            break;
        }
    }
}

/* ---- stop ----------------------------------------------------------------------- */

static void add_stop_waiter(struct ps_sup *sup, const struct ps_waiter *w)
{
    if (!w)
        return;
    if (sup->nstop_waiters < PS_OP_MAX_WAITERS)
        sup->stop_waiters[sup->nstop_waiters++] = *w;
    else
        sup->sys->answer(sup, w, 0, "too many clients waiting");
}

void ps__op_stop(struct ps_sup *sup, const struct ps_waiter *w)
{
    int i, s;

    add_stop_waiter(sup, w);
    if (sup->stopping) {
        /* asked twice: do not wait for the drain */
        for (i = 0; i < sup->nworkers; i++)
            if (sup->workers[i].pid && sup->workers[i].state != W_KILLED)
                ps__worker_kill(sup, &sup->workers[i]);
        return;
    }
    sup->stopping = 1;
    sup->lameduck_until = 0; /* a stop during lame duck: the drain starts now */
    sup->stop_deadline = ps__sup_now(sup) + sup->cfg->drain_timeout_ms;
    sup->sys->notify(sup, "STOPPING=1");
    ps__sup_log(sup, PS_LOG_INFO, "stopping", "stopping: draining %d worker(s)",
                ps__sup_live_workers(sup));
    if (sup->reloading)
        rollback(sup, "the supervisor is stopping");
    for (i = 0; i < sup->nqueued; i++)
        answer(sup, &sup->queue[i], 0, "the supervisor is stopping");
    sup->nqueued = 0;
    for (s = 0; s < sup->nslots; s++)
        ps__slot_event(sup, s, EV_STOP, 0, "the supervisor is stopping");
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid)
            ps__worker_drain(sup, &sup->workers[i], "the supervisor is stopping");
}

void ps__op_lameduck(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    if (sup->stopping || sup->lameduck) {
        add_stop_waiter(sup, w); /* already on its way out: no hurry added */
        return;
    }
    if (!ms) {
        ps__op_stop(sup, w);
        return;
    }
    add_stop_waiter(sup, w);
    sup->lameduck = 1;
    sup->lameduck_until = ps__sup_now(sup) + ms;
    sup->sys->notify(sup, "STATUS=lame duck: still serving, draining soon");
    ps__sup_log(sup, PS_LOG_INFO, "lameduck",
                "lame duck for %u ms: /healthz says 503 and the agent \"drain\"; the workers "
                "keep serving, then drain",
                ms);
}

void ps__op_finish_all(struct ps_sup *sup)
{
    struct ps_op stop = {.kind = OP_RELOAD};
    int i;

    if (sup->reloading)
        rollback(sup, "the supervisor stopped");
    for (i = 0; i < sup->nqueued; i++)
        answer(sup, &sup->queue[i], 0, "the supervisor stopped");
    sup->nqueued = 0;
    memcpy(stop.waiters, sup->stop_waiters, sizeof(stop.waiters));
    stop.nwaiters = sup->nstop_waiters;
    sup->nstop_waiters = 0;
    answer(sup, &stop, 1, "stopped");
}
