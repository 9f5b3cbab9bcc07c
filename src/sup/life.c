/*
 * life.c - the supervisor's own life, as one table: serving, lame duck,
 * stopping.
 *
 *   serving    workers start, crash, reload and scale; operations are taken
 *   lame duck  still serving, but /healthz says 503 and the agent "drain"
 *              so that a balancer moves away; nothing new is taken (what is
 *              queued waits and is answered by the stop).  It ends when the
 *              balancer has moved away (LIFE_QUIET, below) or, at the
 *              latest, when the time asked for is up (LIFE_LAMEDUCK_OVER)
 *   stopping   every worker drains; the loop ends when the last one is gone
 *
 * A reload in flight is not part of this table (ops.c has its own): it may
 * still commit during lame duck, and the stop rolls it back.  Every change
 * of sup->life.state is a row of `rows` below, run by ps__life_event(); the row's
 * action picks its target or the alternative the row names.
 */
#include "sup_internal.h"

#include <stdio.h>

/* The quiet period: this many intervals between the first two "drain" /
 * 503 answers (one health-check interval of the balancer), at least
 * QUIET_MIN_MS.  HAProxy acts on an agent's "drain" at once; on /healthz
 * only after `fall` failures (3 by default), hence three intervals. */
#define QUIET_INTERVALS 3
#define QUIET_MIN_MS    1000

typedef int life_fn(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w);

struct life_row {
    life_fn *act;
    enum ps_life next, alt; /* the action returns 1 to take alt */
};

static void add_stop_waiter(struct ps_sup *sup, const struct ps_waiter *w)
{
    if (!w)
        return;
    if (sup->life.nwaiters < PS_OP_MAX_WAITERS)
        sup->life.waiters[sup->life.nwaiters++] = *w;
    else
        sup->sys->answer(sup, w, 0, "too many clients waiting");
}

/* Drain everything: what is in flight or queued is answered first, then
 * every slot stops and every worker is asked to finish. */
static int a_stop(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    int i, s;

    (void)ms;
    add_stop_waiter(sup, w);
    sup->life.lameduck_until = 0; /* a stop during lame duck: the drain starts now */
    sup->life.stop_deadline = ps__sup_now(sup) + sup->cfg->drain_timeout_ms;
    /* nothing may follow STOPPING=1 (sd_notify(3)): the reload rolled back
     * just below says no READY=1 */
    sup->sys->notify(sup, "STOPPING=1");
    ps__sup_log(sup, PS_LOG_INFO, "stopping", "stopping: draining %d worker(s)",
                ps__sup_live_workers(sup));
    ps__op_cancel_all(sup, "the supervisor is stopping");
    for (s = 0; s < sup->nslots; s++)
        ps__slot_event(sup, s, EV_STOP, 0, "the supervisor is stopping");
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid)
            ps__worker_drain(sup, &sup->workers[i], "the supervisor is stopping");
    return 0;
}

/* Asked to stop again, or the drain timed out: do not wait any longer. */
static int a_kill_all(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    int i;

    (void)ms;
    add_stop_waiter(sup, w);
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid && sup->workers[i].state != W_KILLED)
            ps__worker_kill(sup, &sup->workers[i]);
    return 0;
}

/* Lame duck for ms; none is a plain stop (alt). */
static int a_lameduck(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    if (!ms)
        return a_stop(sup, ms, w), 1;
    add_stop_waiter(sup, w);
    sup->life.lameduck_ms = ms;
    sup->life.lameduck_until = ps__sup_now(sup) + ms;
    sup->life.lameduck_told[0] = sup->life.lameduck_told[1] = 0;
    sup->sys->notify(sup, "STATUS=lame duck: still serving, draining soon");
    ps__sup_log(sup, PS_LOG_INFO, "lameduck",
                "lame duck for %u ms at most: /healthz says 503 and the agent \"drain\"; the "
                "workers keep serving until no new connection comes, then drain",
                ms);
    return 0;
}

/* Asked for a lame duck while already on the way out: no hurry added, the
 * earlier deadline stands; w is answered with the stop. */
static int a_join(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    (void)ms;
    add_stop_waiter(sup, w);
    return 0;
}

static int a_lameduck_over(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    ps__sup_log(sup, PS_LOG_INFO, "lameduck_over", "lame duck over: draining");
    return a_stop(sup, ms, w);
}

/* The balancer was told and has moved away: no need to wait any longer. */
static int a_quiet(struct ps_sup *sup, unsigned ms, const struct ps_waiter *w)
{
    uint64_t now = ps__sup_now(sup);

    ps__sup_log(sup, PS_LOG_INFO, "lameduck_quiet",
                "lame duck over after %llu ms: told twice, then no new connection for %llu ms; "
                "draining",
                (unsigned long long)(now + sup->life.lameduck_ms - sup->life.lameduck_until),
                (unsigned long long)(now - ps__health_quiet_since(sup)));
    return a_stop(sup, ms, w);
}

/* clang-format off */
static const struct life_row rows[PS_LIFE_COUNT][LIFE_EVENT_COUNT] = {
    [PS_LIFE_SERVING][LIFE_LAMEDUCK]       = {a_lameduck,      PS_LIFE_LAMEDUCK, PS_LIFE_STOPPING},
    [PS_LIFE_SERVING][LIFE_STOP]           = {a_stop,          PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_LAMEDUCK][LIFE_LAMEDUCK]      = {a_join,          PS_LIFE_LAMEDUCK, PS_LIFE_LAMEDUCK},
    [PS_LIFE_LAMEDUCK][LIFE_LAMEDUCK_OVER] = {a_lameduck_over, PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_LAMEDUCK][LIFE_QUIET]         = {a_quiet,         PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_LAMEDUCK][LIFE_STOP]          = {a_stop,          PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_STOPPING][LIFE_LAMEDUCK]      = {a_join,          PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_STOPPING][LIFE_STOP]          = {a_kill_all,      PS_LIFE_STOPPING, PS_LIFE_STOPPING},
    [PS_LIFE_STOPPING][LIFE_DRAIN_TIMEOUT] = {a_kill_all,      PS_LIFE_STOPPING, PS_LIFE_STOPPING},
};
/* clang-format on */

static const char *const life_names[PS_LIFE_COUNT] = {
    [PS_LIFE_SERVING] = "serving",
    [PS_LIFE_LAMEDUCK] = "lameduck",
    [PS_LIFE_STOPPING] = "stopping",
};

const char *ps__life_name(enum ps_life l)
{
    return l < PS_LIFE_COUNT ? life_names[l] : "?";
}

int ps__life_event(struct ps_sup *sup, enum ps_life_event ev, unsigned ms,
                   const struct ps_waiter *w)
{
    const struct life_row *r = &rows[sup->life.state][ev];

    /* no row: the event means nothing now (only the timers' events lack
     * rows somewhere, and they carry no waiter to answer) */
    if (!r->act)
        return 0;
    sup->life.state = r->act(sup, ms, w) ? r->alt : r->next;
    return 1;
}

void ps__life_told(struct ps_sup *sup)
{
    uint64_t *t = sup->life.lameduck_told;

    if (sup->life.state != PS_LIFE_LAMEDUCK || t[1])
        return;
    t[t[0] ? 1 : 0] = ps__sup_now(sup);
    if (t[1] && t[1] == t[0])
        t[1] = 0; /* the same instant: two balancers, not one's interval */
}

uint64_t ps__life_quiet_due(const uint64_t told[2], uint64_t since)
{
    uint64_t q, from;

    if (!told[0] || !told[1] || since == UINT64_MAX)
        return UINT64_MAX; /* not told twice yet, or not every listener watched */
    q = QUIET_INTERVALS * (told[1] - told[0]);
    if (q < QUIET_MIN_MS)
        q = QUIET_MIN_MS;
    from = since > told[0] ? since : told[0];
    return from + q; /* q > told[1] - told[0]: never before the second answer */
}

void ps__life_timers(struct ps_sup *sup, uint64_t now)
{
    if (sup->life.state == PS_LIFE_LAMEDUCK &&
        now >= ps__life_quiet_due(sup->life.lameduck_told, ps__health_quiet_since(sup)))
        ps__life_event(sup, LIFE_QUIET, 0, NULL);
    if (sup->life.state == PS_LIFE_LAMEDUCK && now >= sup->life.lameduck_until)
        ps__life_event(sup, LIFE_LAMEDUCK_OVER, 0, NULL);
    if (sup->life.state == PS_LIFE_STOPPING && now >= sup->life.stop_deadline)
        ps__life_event(sup, LIFE_DRAIN_TIMEOUT, 0, NULL);
}

uint64_t ps__life_deadline(const struct ps_sup *sup)
{
    if (sup->life.state == PS_LIFE_LAMEDUCK) {
        uint64_t t = ps__life_quiet_due(sup->life.lameduck_told, ps__health_quiet_since(sup));
        uint64_t r = ps__health_next(sup);
        t = t < r ? t : r;
        return t < sup->life.lameduck_until ? t : sup->life.lameduck_until;
    }
    if (sup->life.state == PS_LIFE_STOPPING)
        return sup->life.stop_deadline;
    return UINT64_MAX;
}

void ps__life_finish(struct ps_sup *sup)
{
    int i;

    ps__op_cancel_all(sup, "the supervisor stopped");
    for (i = 0; i < sup->life.nwaiters; i++)
        sup->sys->answer(sup, &sup->life.waiters[i], 1, "stopped");
    sup->life.nwaiters = 0;
}
