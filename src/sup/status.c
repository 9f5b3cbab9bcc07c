/*
 * status.c - what `portshare status` shows, as text and as JSON.
 *
 * Everything comes from the supervisor's own state and from the listening
 * sockets it holds: the accept-queue length and backlog of each socket are
 * read with TCP_INFO at the time of the request.
 */
#include "sup_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define put ps__buf_printf

static const char *slot_state_name(const struct ps_slot *sl)
{
    return ps__slot_state_name(sl->state);
}

static double seconds_since(uint64_t then_ms, uint64_t now)
{
    return then_ms && now > then_ms ? (double)(now - then_ms) / 1000.0 : 0.0;
}

static void group_address(const struct ps_group *g, char *buf, size_t len)
{
    if (ps_spec_format(&g->spec, buf, len) < 0)
        snprintf(buf, len, "%s", g->spec.text);
}

static double lameduck_left(const struct ps_sup *sup, uint64_t now)
{
    return sup->life.lameduck_until > now ? (double)(sup->life.lameduck_until - now) / 1000.0 : 0.0;
}

/* An endpoint's address as bound (its real port), or "" when off. */
static void endpoint_address(int fd, const struct ps_spec *spec, char *buf, size_t len)
{
    struct ps_spec sp;

    buf[0] = '\0';
    if (fd < 0)
        return;
    snprintf(buf, len, "%.*s", (int)(len ? len - 1 : 0),
             ps__spec_of_fd(fd, &sp) == 0 ? sp.text : spec->text);
}

static void text_endpoints(struct ps_buf *o, struct ps_sup *sup)
{
    char addr[160], line[64];
    const char *why;

    int healthy = ps__sup_healthy(sup, &why);

    endpoint_address(sup->metrics_fd, &sup->cfg->metrics, addr, sizeof(addr));
    if (addr[0])
        put(o, "metrics     %s /metrics, /healthz (%s: %s)\n", addr, healthy ? "200" : "503", why);
    endpoint_address(sup->agent_fd, &sup->cfg->agent, addr, sizeof(addr));
    if (addr[0]) {
        ps__agent_text(sup, line, sizeof(line));
        line[strcspn(line, "\n")] = '\0';
        put(o, "agent       %s (HAProxy agent-check answers \"%s\")\n", addr, line);
    }
}

static void put_steering(struct ps_buf *o, const struct ps_sup *sup)
{
    const char *why;

    switch (ps__sup_steering(sup, &why)) {
    case PS_STEER_EBPF:
        put(o, "steering    ebpf (select-or-migrate: a retired socket hands its queue over)\n");
        break;
    case PS_STEER_CBPF:
        put(o, "steering    cbpf (no migration: %s)\n", why);
        break;
    default:
        put(o, "steering    none (no TCP reuseport listener)\n");
        break;
    }
}

/* One line per capability looked at; what fell back says why. */
static void put_capabilities(struct ps_buf *o, struct ps_sup *sup)
{
    int c;

    ps__ready_view_refresh(sup);
    for (c = 0; c < PS_CAP_COUNT; c++) {
        const struct ps_cap_row *r = &sup->caps.rows[c];
        if (r->state == PS_CAP_UNKNOWN)
            continue;
        put(o, "capability  %s %s (%s)", ps__cap_name((enum ps_cap)c), ps__cap_state_name(r->state),
            r->how);
        if (r->state != PS_CAP_OK)
            put(o, ": %s", r->why);
        put(o, "\n");
    }
}

/* How the worker became ready, as one word for the slot table. */
static const char *ready_word(const struct ps_worker *w)
{
    if (!w || w->state == W_STARTING || !w->ready_by[0])
        return "";
    if (!strncmp(w->ready_by, "READY=1", 7))
        return " ready:notify";
    if (strstr(w->ready_by, "--ready-delay"))
        return " ready:delay";
    return " ready:listening";
}

/* A flow-steered listener's table, one line. */
static void text_flows(struct ps_buf *o, struct ps_sup *sup, int g)
{
    static struct ps_flow_report r;
    int k;

    if (ps__flow_report(sup, g, &r) < 0)
        return;
    put(o, "  UDP flows: %llu of %llu (idle after %.1f s), %llu moved, %llu evicted;",
        (unsigned long long)r.group.flows, (unsigned long long)r.capacity,
        (double)r.idle_ms / 1000.0, (unsigned long long)r.group.moved,
        (unsigned long long)r.group.evicted);
    for (k = 0; k < r.ngens; k++)
        put(o, "%s generation %u: %llu", k ? "," : "", r.gens[k].generation,
            (unsigned long long)r.gens[k].flows);
    put(o, "\n");
}

/* The workers that are not their slot's own: a reload's next ones, old
 * generations draining or lingering for their UDP flows. */
static void text_other_workers(struct ps_buf *o, const struct ps_sup *sup, uint64_t now)
{
    char why[256];
    int i;

    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        if (!w->pid || sup->slots[w->slot].current == i)
            continue;
        put(o, "  +   %-8ld %-12s %-4u %-8.0f (slot %d, %s)\n", (long)w->pid,
            ps__worker_state_name(w->state), w->generation, seconds_since(w->started_ms, now),
            w->slot, sup->slots[w->slot].next == i ? "next generation" : "old generation");
        if (w->state == W_LINGERING && ps__flow_linger_why(sup, w, why, sizeof(why)) > 0)
            put(o, "        lingering: %s\n", why);
    }
}

void ps__status_text(struct ps_sup *sup, struct ps_buf *out)
{
    struct ps_buf *o = out;
    uint64_t now = ps__sup_now(sup);
    char addr[160];
    int s, g, i;

    put(o, "supervisor  pid %ld, up %.0f s, generation %u%s%s", (long)getpid(),
        seconds_since(sup->started_ms, now), sup->generation, sup->ops.reload ? " (reloading)" : "",
        ps__stopping(sup) ? " (stopping)" : "");
    if (sup->life.lameduck_until)
        put(o, " (LAME DUCK: unhealthy to load balancers, draining in %.1f s)",
            lameduck_left(sup, now));
    put(o, "\n");
    put(o, "program     %s\n", sup->cfg->argv[0]);
    put(o, "workers     %d (mode %s)\n", sup->target,
        sup->ngroups && sup->groups[0].shared ? "shared" : "reuseport");
    put_steering(o, sup);
    put_capabilities(o, sup);
    if (sup->ops.reload_error[0])
        put(o, "last reload FAILED: %s\n", sup->ops.reload_error);
    put(o, "reloads     %u done, %u rolled back%s\n", sup->ops.reloads_ok, sup->ops.reloads_failed,
        sup->ops.nqueued ? ", more operations queued" : "");
    text_endpoints(o, sup);
    if (sup->strays_killed)
        put(o, "strays      %u process(es) that outlived their worker were killed\n",
            sup->strays_killed);
    put(o, "\nSLOT  PID      STATE        GEN  UPTIME   RESTARTS  STATS / STATUS\n");
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_slot *sl = &sup->slots[s];
        const struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;
        put(o, "%-5d %-8ld %-12s %-4u %-8.0f %-9u %s%s%s", s, w ? (long)w->pid : 0L,
            slot_state_name(sl), w ? w->generation : sup->generation,
            w ? seconds_since(w->started_ms, now) : 0.0, sl->restarts, w ? w->stats : "",
            w && w->stats[0] && w->status[0] ? " / " : "", w ? w->status : "");
        /* one rule for "crash loop", the same as the JSON's crash_loop */
        if (sl->crashes >= 3)
            put(o, " CRASH LOOP (%u failures in a row)", sl->crashes);
        if (sl->state == SL_BACKOFF)
            put(o, " next start in %.1f s",
                sl->backoff_until > now ? (double)(sl->backoff_until - now) / 1000.0 : 0.0);
        if (sl->lost)
            put(o, " (socket stopped listening %u time(s), revived)", sl->lost);
        if (sl->stalls)
            put(o, " (stalled %u time(s), %u rescued)", sl->stalls, sl->rescues);
        put(o, "%s\n", ready_word(w));
    }
    text_other_workers(o, sup, now);
    put(o, "\nLISTENER                                      SOCKETS  QUEUED/BACKLOG per socket\n");
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        group_address(gr, addr, sizeof(addr));
        put(o, "%-45s %-8d", addr, gr->nfds);
        for (i = 0; i < gr->nfds; i++) {
            unsigned q, lim;
            if (ps_listen_queue(gr->fds[i], &q, &lim) == 0)
                put(o, " %u/%u", q, lim);
            else
                put(o, gr->spec.proto == PS_PROTO_TCP ? " NOT-LISTENING" : " -");
        }
        put(o, "%s%s\n", gr->spec.name[0] ? "  name=" : "", gr->spec.name);
        text_flows(o, sup, g);
        if (gr->nforeign)
            put(o, "  WARNING: %d foreign socket(s) in this reuseport group (another process)\n",
                gr->nforeign);
    }
}

static void json_worker(struct ps_buf *o, const struct ps_sup *sup, const struct ps_worker *w,
                        uint64_t now)
{
    char why[256];

    put(o, "{\"pid\":%ld,\"slot\":%d,\"generation\":%u,\"state\":\"%s\",\"uptime_s\":%.3f,",
        (long)w->pid, w->slot, w->generation, ps__worker_state_name(w->state),
        seconds_since(w->started_ms, now));
    if (w->state == W_LINGERING) {
        ps__flow_linger_why(sup, w, why, sizeof(why));
        put(o, "\"lingering\":");
        ps__buf_json_string(o, why);
        put(o, ",");
    }
    put(o, "\"status\":");
    ps__buf_json_string(o, w->status);
    put(o, ",\"stats\":");
    ps__buf_json_string(o, w->stats);
    put(o, "}");
}

/* "accepted=1 requests=2 active=0" (X_PORTSHARE_STATS) as a JSON object
 * of numbers; only well-formed NAME=DIGITS pairs are kept. */
static void json_counters(struct ps_buf *o, const char *stats)
{
    const char *p = stats, *q;
    char name[32], seen[32];
    unsigned long long v, w;
    int first = 1, dup;

    put(o, "{");
    while (ps__stats_next(&p, name, sizeof(name), &v)) {
        /* a repeated name once (JSON objects want unique keys) */
        for (q = stats, dup = 0; ps__stats_next(&q, seen, sizeof(seen), &w) && q < p;)
            dup |= !strcmp(seen, name);
        if (dup)
            continue;
        put(o, "%s\"%s\":%llu", first ? "" : ",", name, v);
        first = 0;
    }
    put(o, "}");
}

static void json_slots(struct ps_buf *o, struct ps_sup *sup, uint64_t now)
{
    int s;

    put(o, "\"slots\":[");
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_slot *sl = &sup->slots[s];
        const struct ps_worker *w = sl->current >= 0 ? &sup->workers[sl->current] : NULL;
        put(o, "%s{\"slot\":%d,\"state\":\"%s\",\"pid\":%ld,\"generation\":%u,\"uptime_s\":%.3f,",
            s ? "," : "", s, slot_state_name(sl), w ? (long)w->pid : 0L,
            w ? w->generation : sup->generation, w ? seconds_since(w->started_ms, now) : 0.0);
        put(o, "\"listener_lost\":%u,\"stalls\":%u,\"stall_rescues\":%u,", sl->lost, sl->stalls,
            sl->rescues);
        put(o, "\"restarts\":%u,\"consecutive_exits\":%u,\"crash_loop\":%s,\"backoff_s\":%.3f,",
            sl->restarts, sl->crashes, sl->crashes >= 3 ? "true" : "false",
            sl->state == SL_BACKOFF && sl->backoff_until > now
                ? (double)(sl->backoff_until - now) / 1000.0
                : 0.0);
        put(o, "\"status\":");
        ps__buf_json_string(o, w ? w->status : "");
        put(o, ",\"stats\":");
        ps__buf_json_string(o, w ? w->stats : "");
        put(o, ",\"counters\":");
        json_counters(o, w ? w->stats : "");
        put(o, ",\"closes\":");
        json_counters(o, w ? w->closes : "");
        put(o, ",\"ready_by\":");
        ps__buf_json_string(o, w && w->state != W_STARTING ? w->ready_by : "");
        put(o, ",\"next_pid\":%ld}", sl->next >= 0 ? (long)sup->workers[sl->next].pid : 0L);
    }
    put(o, "]");
}

/* A flow-steered listener's table: ,"flows":{...} (nothing for others). */
static void json_flows(struct ps_buf *o, struct ps_sup *sup, int g)
{
    static struct ps_flow_report r;
    int k;

    if (ps__flow_report(sup, g, &r) < 0)
        return;
    put(o,
        ",\"flows\":{\"live\":%llu,\"capacity\":%llu,\"idle_ms\":%u,\"new\":%llu,\"moved\":%llu,"
        "\"evicted\":%llu,\"old_generation_datagrams\":%llu,\"by_generation\":[",
        (unsigned long long)r.group.flows, (unsigned long long)r.capacity, r.idle_ms,
        (unsigned long long)r.group.new_flows, (unsigned long long)r.group.moved,
        (unsigned long long)r.group.evicted, (unsigned long long)r.group.old_datagrams);
    for (k = 0; k < r.ngens; k++)
        put(o, "%s{\"generation\":%u,\"flows\":%llu,\"new\":%llu,\"datagrams\":%llu}", k ? "," : "",
            r.gens[k].generation, (unsigned long long)r.gens[k].flows,
            (unsigned long long)r.gens[k].new_flows, (unsigned long long)r.gens[k].datagrams);
    put(o, "]}");
}

static void json_listeners(struct ps_buf *o, struct ps_sup *sup)
{
    char addr[160];
    int g, i;

    put(o, "\"listeners\":[");
    for (g = 0; g < sup->ngroups; g++) {
        const struct ps_group *gr = &sup->groups[g];
        group_address(gr, addr, sizeof(addr));
        put(o, "%s{\"name\":", g ? "," : "");
        ps__buf_json_string(o, gr->spec.name);
        put(o, ",\"address\":");
        ps__buf_json_string(o, addr);
        put(o,
            ",\"shared\":%s,\"inherited\":%s,\"revived\":%u,\"steering\":\"%s\",\"foreign\":%d,"
            "\"sockets\":[",
            gr->shared ? "true" : "false", gr->inherited ? "true" : "false", gr->relistens,
            ps__steer_name(gr->steer), gr->nforeign);
        for (i = 0; i < gr->nfds; i++) {
            unsigned q = 0, lim = 0;
            int have = ps_listen_queue(gr->fds[i], &q, &lim) == 0;
            put(o, "%s{\"slot\":%d,", i ? "," : "", gr->shared ? -1 : i);
            if (have)
                put(o, "\"queued\":%u,\"backlog\":%u}", q, lim);
            else
                put(o, "\"queued\":null,\"backlog\":null}");
        }
        put(o, "]");
        json_flows(o, sup, g);
        put(o, "}");
    }
    put(o, "]");
}

static void json_capabilities(struct ps_buf *o, struct ps_sup *sup)
{
    int c, first = 1;

    ps__ready_view_refresh(sup);
    put(o, "\"capabilities\":[");
    for (c = 0; c < PS_CAP_COUNT; c++) {
        const struct ps_cap_row *r = &sup->caps.rows[c];
        if (r->state == PS_CAP_UNKNOWN)
            continue;
        put(o, "%s{\"name\":\"%s\",\"state\":\"%s\",\"how\":", first ? "" : ",",
            ps__cap_name((enum ps_cap)c), ps__cap_state_name(r->state));
        ps__buf_json_string(o, r->how);
        put(o, ",\"why\":");
        ps__buf_json_string(o, r->why);
        put(o, "}");
        first = 0;
    }
    put(o, "],");
}

static void json_endpoints(struct ps_buf *o, struct ps_sup *sup, uint64_t now)
{
    char addr[160], line[64];
    const char *why;
    int healthy = ps__sup_healthy(sup, &why);

    put(o, "\"lameduck\":%s,\"lameduck_left_s\":%.3f,\"healthy\":%s,\"health\":",
        ps__lameduck(sup) ? "true" : "false", lameduck_left(sup, now), healthy ? "true" : "false");
    ps__buf_json_string(o, why);
    endpoint_address(sup->metrics_fd, &sup->cfg->metrics, addr, sizeof(addr));
    put(o, ",\"metrics\":");
    ps__buf_json_string(o, addr);
    endpoint_address(sup->agent_fd, &sup->cfg->agent, addr, sizeof(addr));
    put(o, ",\"agent\":");
    ps__buf_json_string(o, addr);
    ps__agent_text(sup, line, sizeof(line));
    line[strcspn(line, "\n")] = '\0';
    put(o, ",\"agent_reply\":");
    ps__buf_json_string(o, line);
    put(o, ",");
}

void ps__status_json(struct ps_sup *sup, struct ps_buf *out)
{
    struct ps_buf *o = out;
    uint64_t now = ps__sup_now(sup);
    int i, first = 1;

    put(o, "{\"pid\":%ld,\"name\":", (long)getpid());
    ps__buf_json_string(o, sup->cfg->name);
    put(o, ",\"program\":");
    ps__buf_json_string(o, sup->cfg->argv[0]);
    put(o, ",\"uptime_s\":%.3f,\"started\":%ld,\"generation\":%u,\"workers\":%d,",
        seconds_since(sup->started_ms, now), (long)sup->started_wall, sup->generation, sup->target);
    put(o, "\"mode\":\"%s\",\"reloading\":%s,\"stopping\":%s,\"last_reload_error\":",
        sup->ngroups && sup->groups[0].shared ? "shared" : "reuseport",
        sup->ops.reload ? "true" : "false", ps__stopping(sup) ? "true" : "false");
    ps__buf_json_string(o, sup->ops.reload_error);
    put(o, ",\"reloads\":{\"done\":%u,\"rolled_back\":%u},\"queued_operations\":%d,",
        sup->ops.reloads_ok, sup->ops.reloads_failed, sup->ops.nqueued);
    put(o, "\"strays_killed\":%u,", sup->strays_killed);
    json_endpoints(o, sup, now);
    {
        const char *why;
        put(o, "\"steering\":\"%s\",\"steering_reason\":",
            ps__steer_name(ps__sup_steering(sup, &why)));
        ps__buf_json_string(o, why);
        put(o, ",\"stall_timeout_ms\":%u,", sup->cfg->stall_timeout_ms);
    }
    json_capabilities(o, sup);
    json_slots(o, sup, now);
    put(o, ",\"other_workers\":[");
    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        if (!w->pid || sup->slots[w->slot].current == i)
            continue;
        put(o, "%s", first ? "" : ",");
        json_worker(o, sup, w, now);
        first = 0;
    }
    put(o, "],");
    json_listeners(o, sup);
    put(o, "}\n");
}
