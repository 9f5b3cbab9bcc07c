/*
 * stall.c - a worker that stops accepting never stalls its clients.
 *
 * A worker stuck in a busy loop, a deadlock, a frozen cgroup or SIGSTOP
 * tells the supervisor nothing; its socket does: connections wait in its
 * accept queue and the queue does not go down.  Linux shows a listener's
 * queue length (TCP_INFO tcpi_unacked, ps_listen_queue) but counts no
 * accepts per listener, so "accepted nothing" is read as "the queue never
 * went down": a slot whose queued connections (summed over its TCP
 * reuseport sockets) stayed above zero without once decreasing between two
 * looks, for --stall-timeout, is stalled (EV_STALL).  The slot is steered
 * away from at once (its worker stays).  A healthy worker that merely fell
 * behind empties its queue then, and gets traffic again (EV_RESUME, as soon
 * as the queue goes down).  Still stalled half a timeout later, the slot is
 * rescued (EV_STALL again) -- unless its worker was declared ready by
 * --ready-delay alone and has not been seen taking a connection yet: that
 * is a slow start, not a stall (--ready auto's fallback guessed), so it
 * stays steered away until its queue goes down, as it would without
 * stall detection, instead of being killed before it ever served (a
 * program that needs longer than the delay would never come up; while
 * another worker of the slot, a reload's new one or a draining old one,
 * shares the socket, a queue going down is not evidence of which took
 * the connection).  Nor is a slot rescued while a reload's new worker
 * starts on it: that worker takes the queue.  Else the stalled worker
 * leaves its slot as a worker that said STOPPING=1 does (slots.c, leave):
 * under eBPF the slot gets fresh sockets first (ps__group_renew) and the
 * old ones are shut down at once, so what they hold moves to the serving
 * slots (a one-slot group's to the fresh socket), and a fresh worker
 * starts while the stalled one is drained; under CBPF nothing can move:
 * the fresh worker shares the socket and takes its queue.
 *
 * The queues are looked at every timeout / 10 (20 ms to 250 ms), one
 * getsockopt per slot and group, only while the option is on, and only of
 * the slots whose sockets reported a connection queued since their queue
 * was last seen empty (stall_busy: health.c's epoll set) or that are
 * stalled.  An idle supervisor does not look at all; a slot is looked at
 * from the tick after its queue fills, so a stall is still seen within
 * the timeout (plus one tick).
 */
#include "sup_internal.h"

#include <limits.h>
#include <stdio.h>

static unsigned every_ms(const struct ps_sup *sup)
{
    unsigned t = sup->cfg->stall_timeout_ms / 10;

    return t < 20 ? 20 : t > 250 ? 250 : t;
}

static int watched(const struct ps_sup *sup, int s)
{
    return sup->slots[s].state == SL_READY || sup->slots[s].state == SL_STALLED;
}

/* Is slot s looked at on the next tick? */
static int looked_at(const struct ps_sup *sup, int s)
{
    const struct ps_slot *sl = &sup->slots[s];

    return watched(sup, s) &&
           (sl->stall_busy || sl->state == SL_STALLED || !ps__health_sees_queues(sup));
}

uint64_t ps__stall_next(const struct ps_sup *sup)
{
    int s;

    if (!sup->cfg->stall_timeout_ms || ps__stopping(sup))
        return UINT64_MAX;
    for (s = 0; s < sup->nslots; s++)
        if (looked_at(sup, s))
            return sup->stall_checked_ms + every_ms(sup);
    return UINT64_MAX;
}

/* Another live process of slot s than its current worker: the reload's new
 * worker, or an old generation still draining.  They hold the same socket,
 * so its queue going down says nothing about which of them accepted. */
static int slot_shared_with_others(const struct ps_sup *sup, int s)
{
    const struct ps_slot *sl = &sup->slots[s];
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (i != sl->current && sup->workers[i].pid && sup->workers[i].slot == s)
            return 1;
    return 0;
}

static void look(struct ps_sup *sup, int s, uint64_t now)
{
    struct ps_slot *sl = &sup->slots[s];
    unsigned timeout = sup->cfg->stall_timeout_ms;
    long q = ps__slot_queued(sup, s, 1); /* what the slot's steering sends it */
    struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;
    char why[160];

    if (q <= 0) /* empty (or not listening: health.c revives it): armed again */
        sl->stall_busy = 0;
    if (q < 0)
        return;
    if (q == 0 || (unsigned long)q < sl->stall_q) {
        /* it accepted something: the queue went down, or is empty */
        if ((unsigned long)q < sl->stall_q && w && !slot_shared_with_others(sup, s))
            w->ready_guessed = 0; /* seen taking connections */
        sl->stall_q = (unsigned)q;
        sl->stall_since = q ? now : 0;
        if (sl->state == SL_STALLED)
            ps__slot_event(sup, s, EV_RESUME, 0, "its queue drains again");
        return;
    }
    if (!sl->stall_since)
        sl->stall_since = now;
    sl->stall_q = (unsigned)q;
    if (sl->state == SL_READY && now - sl->stall_since >= timeout) {
        snprintf(why, sizeof(why), "%ld connection(s) queued, none accepted for %llu ms", q,
                 (unsigned long long)(now - sl->stall_since));
        ps__slot_event(sup, s, EV_STALL, 0, why);
    } else if (sl->state == SL_STALLED && w && w->ready_guessed) {
        if (w->ready_guessed == 1)
            ps__sup_log(sup, PS_LOG_WARN, "stall_slow_start",
                        "slot %d: worker %ld, ready only by --ready-delay, has not taken a "
                        "connection yet: kept steered away until it does, not replaced",
                        s, (long)w->pid);
        w->ready_guessed = 2;
    } else if (sl->state == SL_STALLED && sl->next >= 0) {
        /* a reload's new worker is starting on this very socket: it takes
         * the queue when it comes up (or the reload rolls back and the slot
         * is looked at again); a fresh socket now would be one it never
         * sees, and a rescue would kill the worker it is to replace anyway */
        if (!sl->stall_reload_said)
            ps__sup_log(sup, PS_LOG_WARN, "stall_reload",
                        "slot %d: stalled while its new generation's worker starts: kept "
                        "steered away for that worker, not rescued",
                        s);
        sl->stall_reload_said = 1;
    } else if (sl->state == SL_STALLED && now - sl->stalled_at >= timeout / 2) {
        snprintf(why, sizeof(why), "still %ld connection(s) queued, none accepted for %llu ms", q,
                 (unsigned long long)(now - sl->stall_since));
        ps__slot_event(sup, s, EV_STALL, 0, why);
    }
}

void ps__sup_check_stalls(struct ps_sup *sup, uint64_t now)
{
    int s;

    if (!sup->cfg->stall_timeout_ms || ps__stopping(sup) || now < ps__stall_next(sup))
        return;
    sup->stall_checked_ms = now;
    for (s = 0; s < sup->nslots; s++) {
        if (looked_at(sup, s))
            look(sup, s, now);
        else /* not ready, or seen empty since its queue last filled */
            sup->slots[s].stall_since = sup->slots[s].stall_q = 0;
    }
}
