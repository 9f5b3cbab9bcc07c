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

/*
 * A reload is a small table of its own: idle, or starting the next
 * generation (a worker of it in every slot, sl->next, on the slot's
 * sockets).  Its events are what those workers do; every change of
 * sup->ops.reload is a row of reload_rows, run by reload_event().
 *
 *   idle      start       -> starting (every slot's next is spawned), or
 *                            idle again when one could not be (rolled back)
 *   starting  next ready  -> starting, or idle once every next is ready
 *                            (committed: each slot's EV_REPLACE)
 *   starting  next failed -> idle (rolled back: the other next workers
 *                            drain, the serving generation stays)
 *   starting  cancel      -> idle (rolled back by a stop; systemd, told
 *                            STOPPING=1 already, hears nothing more)
 */
enum reload_event { R_START, R_NEXT_READY, R_NEXT_FAILED, R_CANCEL, R_EVENT_COUNT };

typedef int reload_fn(struct ps_sup *sup, int s, const char *why);

struct reload_row {
    reload_fn *act;
    enum ps_reload_state next, alt; /* the action returns 1 to take alt */
};

static void reload_done(struct ps_sup *sup, int ok, int tell, const char *body)
{
    if (ok)
        sup->ops.reloads_ok++;
    else
        sup->ops.reloads_failed++;
    /* the reload is over for systemd too */
    if (sup->told_ready && tell)
        sup->sys->notify(sup, "READY=1");
    answer(sup, &sup->ops.running, ok, body);
}

static void rollback(struct ps_sup *sup, int tell, const char *why)
{
    char body[512];
    int s;

    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        /* what a next worker had queued moves to the serving sockets */
        ps__slot_discard_sockets(sup, s);
        if (sl->next < 0)
            continue;
        ps__worker_drain(sup, &sup->workers[sl->next], "reload rolled back");
        sl->next = -1;
    }
    snprintf(sup->ops.reload_error, sizeof(sup->ops.reload_error), "%s", why);
    snprintf(body, sizeof(body),
             "reload to generation %u rolled back: %s; generation %u keeps serving",
             sup->next_generation, why, sup->generation);
    ps__sup_log(sup, PS_LOG_ERROR, "reload_rolled_back", "%s", body);
    reload_done(sup, 0, tell, body);
}

/* Every next worker ready: they become their slots' own (EV_REPLACE). */
static int commit_when_ready(struct ps_sup *sup, int s_, const char *why_)
{
    char body[128];
    int s;

    (void)s_, (void)why_;
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_slot *sl = &sup->slots[s];
        if (sl->next >= 0 && sup->workers[sl->next].state != W_READY)
            return 0;
    }
    sup->generation = sup->next_generation;
    /* the new generation's sockets become the slots', and are steered to
     * before any old worker hears its drain signal: an old worker that
     * closes its copy at once hands what it had queued to the program,
     * which must then pick a new socket, not another old one that its
     * worker is closing at the same moment (a connection moved there as it
     * stops listening is reset) */
    for (s = 0; s < sup->nslots; s++)
        if (sup->slots[s].next >= 0)
            ps__slot_commit_sockets(sup, s);
    ps__sup_steer_decided(sup);
    for (s = 0; s < sup->nslots; s++)
        if (sup->slots[s].next >= 0)
            ps__slot_event(sup, s, EV_REPLACE, 0, "reload committed");
    sup->ops.reload_error[0] = '\0';
    ps__steer_later(sup);
    ps__sup_log(sup, PS_LOG_INFO, "reload_done", "generation %u is serving", sup->generation);
    snprintf(body, sizeof(body), "generation %u is serving", sup->generation);
    reload_done(sup, 1, 1, body);
    return 1;
}

static int reloadable(const struct ps_slot *sl)
{
    return sl->state == SL_BACKOFF || sl->state == SL_STARTING || sl->state == SL_READY ||
           sl->state == SL_STALLED;
}

static int a_start(struct ps_sup *sup, int s_, const char *why_)
{
    char why[256];
    int s, idx;

    (void)s_, (void)why_;
    sup->next_generation++;
    /* also before the first READY=1: systemd then only notes it (the unit
     * is still starting) and READY=1 ends both */
    sup->sys->notify(sup, "RELOADING=1");
    ps__sup_log(sup, PS_LOG_INFO, "reload_started", "starting generation %u", sup->next_generation);
    for (s = 0; s < sup->nslots; s++) {
        struct ps_slot *sl = &sup->slots[s];
        if (!reloadable(sl))
            continue;
        idx = ps__slot_prepare_sockets(sup, s, why, sizeof(why));
        if (idx == 0 && (idx = sup->sys->spawn(sup, s, sup->next_generation)) < 0)
            ps__sup_spawn_said(sup, idx, why, sizeof(why));
        if (idx < 0) {
            rollback(sup, 1, why);
            return 1;
        }
        sl->next = idx;
    }
    return commit_when_ready(sup, -1, NULL);
}

/* Slot s's next worker left, exited, was late or hung: it is out of the
 * reload (the caller has dealt with the process), the others drain. */
static int a_next_failed(struct ps_sup *sup, int s, const char *why)
{
    sup->slots[s].next = -1;
    rollback(sup, 1, why);
    return 0;
}

static int a_cancel(struct ps_sup *sup, int s, const char *why)
{
    (void)s;
    rollback(sup, 0, why);
    return 0;
}

/* clang-format off */
static const struct reload_row reload_rows[PS_RELOAD_COUNT][R_EVENT_COUNT] = {
    [PS_RELOAD_IDLE][R_START]           = {a_start,           PS_RELOAD_STARTING, PS_RELOAD_IDLE},
    [PS_RELOAD_STARTING][R_NEXT_READY]  = {commit_when_ready, PS_RELOAD_STARTING, PS_RELOAD_IDLE},
    [PS_RELOAD_STARTING][R_NEXT_FAILED] = {a_next_failed,     PS_RELOAD_IDLE,     PS_RELOAD_IDLE},
    [PS_RELOAD_STARTING][R_CANCEL]      = {a_cancel,          PS_RELOAD_IDLE,     PS_RELOAD_IDLE},
};
/* clang-format on */

static void reload_event(struct ps_sup *sup, enum reload_event ev, int s, const char *why)
{
    const struct reload_row *r = &reload_rows[sup->ops.reload][ev];

    if (r->act)
        sup->ops.reload = r->act(sup, s, why) ? r->alt : r->next;
    else if (ev == R_NEXT_FAILED && s >= 0)
        sup->slots[s].next = -1; /* no reload to roll back: only out of it */
}

void ps__reload_next_ready(struct ps_sup *sup, int s)
{
    reload_event(sup, R_NEXT_READY, s, NULL);
}

void ps__reload_next_failed(struct ps_sup *sup, int s, const char *why)
{
    reload_event(sup, R_NEXT_FAILED, s, why);
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
    ps__steer_later(sup);
    ps__sup_close_retired(sup);
    return 0;
}

/* ---- the queue ------------------------------------------------------------------- */

int ps__op_request(struct ps_sup *sup, enum ps_op_kind kind, int n, const struct ps_waiter *w,
                   char *err, size_t errlen)
{
    struct ps_op *op = NULL;
    int i;

    if (sup->life.state != PS_LIFE_SERVING) {
        ps__set_error(err, errlen, "the supervisor is stopping%s",
                      sup->life.state == PS_LIFE_LAMEDUCK ? " (lame duck)" : "");
        return -ESHUTDOWN;
    }
    if (kind == OP_SCALE && (n < 1 || n > PS_SUP_MAX_WORKERS)) {
        ps__set_error(err, errlen, "cannot scale to %d workers (1-%d)", n, PS_SUP_MAX_WORKERS);
        return -EINVAL;
    }
    if (kind == OP_UPGRADE)
        for (i = 0; i < sup->ops.nqueued; i++)
            if (sup->ops.queue[i].kind == OP_UPGRADE) {
                ps__set_error(err, errlen, "an upgrade is already queued");
                return -EBUSY;
            }
    if (sup->ops.nqueued && kind != OP_UPGRADE &&
        sup->ops.queue[sup->ops.nqueued - 1].kind == kind) {
        op = &sup->ops.queue[sup->ops.nqueued - 1]; /* merge into the one waiting */
    } else if (sup->ops.nqueued == PS_OP_QUEUE_MAX) {
        ps__set_error(err, errlen, "too many operations queued");
        return -EBUSY;
    } else {
        op = &sup->ops.queue[sup->ops.nqueued++];
        memset(op, 0, sizeof(*op));
        op->kind = kind;
        op->n = n;
        op->id = ++sup->ops.ids;
    }
    if (add_waiter(op, w) < 0) {
        ps__set_error(err, errlen, "too many clients waiting");
        return -EBUSY;
    }
    /* a scale merged into a queued one: the later count wins; only now, as
     * a request refused just above must change nothing */
    if (kind == OP_SCALE)
        op->n = n;
    if (sup->ops.reload)
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

    while (!sup->ops.reload && !sup->upgrade.asking && sup->life.state == PS_LIFE_SERVING &&
           sup->ops.nqueued) {
        op = sup->ops.queue[0];
        memmove(&sup->ops.queue[0], &sup->ops.queue[1],
                (size_t)--sup->ops.nqueued * sizeof(sup->ops.queue[0]));
        switch (op.kind) {
        case OP_RELOAD:
            sup->ops.running = op;
            reload_event(sup, R_START, -1, NULL);
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

/* ---- the end ----------------------------------------------------------------- */

void ps__op_cancel_all(struct ps_sup *sup, const char *why)
{
    int i;

    reload_event(sup, R_CANCEL, -1, why);
    for (i = 0; i < sup->ops.nqueued; i++)
        answer(sup, &sup->ops.queue[i], 0, why);
    sup->ops.nqueued = 0;
}

/* ---- across an upgrade ---------------------------------------------------------- */

void ps__op_keep_unwaited(struct ps_sup *sup)
{
    int i, kept = 0;

    for (i = 0; i < sup->ops.nqueued; i++)
        if (!sup->ops.queue[i].nwaiters && sup->ops.queue[i].kind != OP_UPGRADE)
            sup->ops.queue[kept++] = sup->ops.queue[i];
    sup->ops.nqueued = kept;
}

int ps__op_restore(struct ps_sup *sup, const struct ps_op *op)
{
    if (sup->ops.nqueued >= PS_OP_QUEUE_MAX || op->nwaiters || op->kind > OP_UPGRADE ||
        (op->kind == OP_SCALE && (op->n < 1 || op->n > PS_SUP_MAX_WORKERS)))
        return -EINVAL;
    sup->ops.queue[sup->ops.nqueued] = *op;
    sup->ops.queue[sup->ops.nqueued++].id = ++sup->ops.ids;
    return 0;
}
