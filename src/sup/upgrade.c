/*
 * upgrade.c - re-executing the supervisor's own binary in place.
 *
 * The pid stays the same, so workers stay our children and a systemd
 * Type=notify unit never notices.  What must survive the exec survives as
 * descriptors without close-on-exec (listeners, the notify socket, the
 * control socket, the client that asked) plus a text description of the
 * rest in PORTSHARE_UPGRADE_STATE; the new image replays the same command
 * line, finds that variable and adopts instead of binding.  The blocked
 * signal mask and pending signals survive execve(2), so no SIGCHLD is lost.
 *
 * Before the exec the new binary is asked two questions (does it run, which
 * state does it read) by child processes whose output the loop polls like
 * any other descriptor, with one deadline: a binary slow to start never
 * stops status, /metrics or /healthz, and every way the upgrade can fail
 * leaves the old image as it was (nothing open, nothing running).
 */
#include "sup_internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* The format of the state: a new number whenever what
 * ps__upgrade_serialize writes changes (a field table below, or the layout
 * of a line).  tests/unit/test_sup_upgrade.c holds the tables' fingerprint
 * (PS__UPGRADE_TABLES_HASH) to this number, so that a table changed without
 * a new number fails a unit test instead of a user's upgrade. */
#define STATE_MAGIC "portshare-upgrade-4"

const char *ps_sup_upgrade_state_format(void)
{
    return STATE_MAGIC;
}

/* ---- the questions to the new binary, asked without stopping the loop -------- */

/* Both questions get this long, together: a binary that has not answered
 * by then is refused (and killed with what it started). */
#define ASK_TIMEOUT_MS 5000

static void ask_reset(struct ps_upgrade_ask *a)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
}

/* Start "exe arg" with its stdout on a pipe we poll (stderr to /dev/null
 * when quiet), in a process group of its own so that what it starts goes
 * with it.  0, or -errno with nothing left open or running. */
static int ask_start(struct ps_upgrade_ask *a, const char *exe, const char *arg, int quiet)
{
    int p[2], r;

    ask_reset(a);
    if (pipe2(p, O_CLOEXEC) < 0) /* its end blocks: a binary may not expect EAGAIN */
        return ps__neg_errno();
    a->pid = fork();
    if (a->pid < 0) {
        r = ps__neg_errno();
        close(p[0]);
        close(p[1]);
        a->pid = 0;
        return r;
    }
    if (a->pid == 0) {
        int null = quiet ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        dup2(p[1], 1);
        if (null >= 0)
            dup2(null, 2);
        execl(exe, exe, arg, (char *)NULL);
        _exit(127);
    }
    setpgid(a->pid, a->pid); /* as the child does: whichever runs first */
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    a->fd = p[0];
    a->running = 1;
    return 0;
}

/* Read what the question's pipe holds, keeping what fits in out: a
 * talkative binary must never block on a full pipe.  Non-blocking. */
static void ask_read(struct ps_upgrade_ask *a)
{
    char chunk[256];
    ssize_t n;

    while (a->fd >= 0 && (n = read(a->fd, chunk, sizeof(chunk))) != 0) {
        size_t keep;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            break;
        }
        keep = a->len + 1 < sizeof(a->out) ? sizeof(a->out) - 1 - a->len : 0;
        keep = keep < (size_t)n ? keep : (size_t)n;
        memcpy(a->out + a->len, chunk, keep);
        a->len += keep;
    }
    ps__close(a->fd); /* its end, or an error: nothing more to read */
    a->fd = -1;
}

/* Kill what still runs of the question (its process group) and reap it;
 * close its pipe.  SIGKILL is final, so the wait is short. */
static void ask_stop(struct ps_upgrade_ask *a)
{
    if (a->running) {
        kill(-a->pid, SIGKILL);
        kill(a->pid, SIGKILL);
        waitpid(a->pid, &a->status, 0);
        a->running = 0;
    }
    ps__close(a->fd);
    a->fd = -1;
    a->out[a->len] = '\0';
}

int ps__upgrade_reaped(struct ps_sup *sup, pid_t pid, int status)
{
    int i;

    for (i = 0; sup->upgrade.asking && i < 2; i++)
        if (sup->upgrade.asks[i].running && sup->upgrade.asks[i].pid == pid) {
            sup->upgrade.asks[i].running = 0;
            sup->upgrade.asks[i].status = status;
            return 1;
        }
    return 0;
}

int ps__upgrade_children(const struct ps_sup *sup, pid_t *out)
{
    int i, n = 0;

    for (i = 0; sup->upgrade.asking && i < 2; i++)
        if (sup->upgrade.asks[i].running)
            out[n++] = sup->upgrade.asks[i].pid;
    return n;
}

/* What the answers say.  --version first: a missing, truncated or foreign
 * binary is refused while the old supervisor still runs.  Then which
 * upgrade state it reads (--upgrade-state-format): another format would
 * fail after the exec, when there is no old supervisor left to fall back
 * to, so it is refused now.  A binary that does not know the question
 * (older than the question, exit 2) is tried as before: *unchecked = 1. */
static int verdict(const char *exe, const struct ps_upgrade_ask *asks, int *unchecked, char *err,
                   size_t errlen)
{
    const struct ps_upgrade_ask *v = &asks[0], *f = &asks[1];
    char said[sizeof(f->out)];

    *unchecked = 0;
    if (!WIFEXITED(v->status) || WEXITSTATUS(v->status) != 0) {
        ps__set_error(err, errlen,
                      "%s does not run (--version failed); still running the old binary", exe);
        return -ENOEXEC;
    }
    if (!WIFEXITED(f->status) || WEXITSTATUS(f->status) != 0) {
        *unchecked = 1;
        return 0;
    }
    snprintf(said, sizeof(said), "%s", f->out);
    said[strcspn(said, "\n")] = '\0';
    if (strcmp(said, STATE_MAGIC)) {
        ps__set_error(err, errlen,
                      "%s reads upgrade state '%.40s', this supervisor writes '%s': it cannot "
                      "take over in place; still running the old binary (restart the "
                      "service to change to it)",
                      exe, said, STATE_MAGIC);
        return -EPROTO;
    }
    return 0;
}

static int set_cloexec(int fd, int on)
{
    int flags = fcntl(fd, F_GETFD);

    if (flags < 0)
        return ps__neg_errno();
    flags = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
    return fcntl(fd, F_SETFD, flags) < 0 ? ps__neg_errno() : 0;
}

static void carry_fds(struct ps_sup *sup, int client, int carry)
{
    int g, i;

    int maps[PS__FLOW_NMAPS], n;

    for (g = 0; g < sup->ngroups; g++) {
        for (i = 0; i < sup->groups[g].nfds; i++)
            set_cloexec(sup->groups[g].fds[i], !carry);
        /* the UDP flow table goes on in the new image (flows.c) */
        n = sup->groups[g].flow ? ps__udp_flow_export(sup->groups[g].flow, maps, PS__FLOW_NMAPS)
                                : 0;
        for (i = 0; i < n; i++)
            set_cloexec(maps[i], !carry);
    }
    set_cloexec(sup->notify_fd, !carry);
    set_cloexec(sup->control_fd, !carry);
    if (sup->metrics_fd >= 0)
        set_cloexec(sup->metrics_fd, !carry);
    if (sup->agent_fd >= 0)
        set_cloexec(sup->agent_fd, !carry);
    if (client >= 0)
        set_cloexec(client, !carry);
}

/* ---- the schema: one table per record, used by both sides -------------------- */

enum ftype { F_INT, F_UINT, F_U64, F_TIME, F_STR, F_ENUM };

struct field {
    const char *name;
    enum ftype type;
    size_t off, size;
    int max; /* F_ENUM: valid values are 0..max-1 */
};

/* clang-format off */
#define FLD(st, m, t)     {#m, t, offsetof(st, m), sizeof(((st *)0)->m), 0}
/* a field of a module's part of struct ps_sup, under the name it had when
 * it was a field of its own (the format stays readable by older binaries) */
#define FLDN(name, st, m, t) {name, t, offsetof(st, m), sizeof(((st *)0)->m), 0}
#define ENUMF(st, m, max) {#m, F_ENUM, offsetof(st, m), sizeof(((st *)0)->m), max}
/* clang-format on */

static const struct field sup_fields[] = {
    FLD(struct ps_sup, generation, F_UINT),
    FLD(struct ps_sup, next_generation, F_UINT),
    FLD(struct ps_sup, target, F_INT),
    FLD(struct ps_sup, nslots, F_INT),
    FLD(struct ps_sup, started_ms, F_U64),
    FLD(struct ps_sup, started_wall, F_TIME),
    FLD(struct ps_sup, notify_fd, F_INT),
    FLD(struct ps_sup, control_fd, F_INT),
    FLDN("upgrade_client", struct ps_sup, upgrade.client, F_INT),
    FLDN("upgrade_json", struct ps_sup, upgrade.json, F_INT),
    FLDN("reloads_ok", struct ps_sup, ops.reloads_ok, F_UINT),
    FLDN("reloads_failed", struct ps_sup, ops.reloads_failed, F_UINT),
    FLD(struct ps_sup, strays_killed, F_UINT),
    FLD(struct ps_sup, told_ready, F_INT),
    FLD(struct ps_sup, notify_addr, F_STR),
    FLDN("reload_error", struct ps_sup, ops.reload_error, F_STR),
    FLD(struct ps_sup, metrics_fd, F_INT),
    FLD(struct ps_sup, agent_fd, F_INT),
    FLDN("caps_said", struct ps_sup, caps.said, F_UINT),
};

static const struct field group_fields[] = {
    FLD(struct ps_group, shared, F_INT),
    FLD(struct ps_group, inherited, F_INT),
    FLD(struct ps_group, nfds, F_INT),
    FLD(struct ps_group, relistens, F_UINT),
};

static const struct field slot_fields[] = {
    ENUMF(struct ps_slot, state, SL_STATE_COUNT),
    FLD(struct ps_slot, current, F_INT),
    FLD(struct ps_slot, next, F_INT),
    FLD(struct ps_slot, restarts, F_UINT),
    FLD(struct ps_slot, crashes, F_UINT),
    FLD(struct ps_slot, backoff_until, F_U64),
    FLD(struct ps_slot, retire_since, F_U64),
    FLD(struct ps_slot, last_exit, F_INT),
    FLD(struct ps_slot, lost, F_UINT),
    FLD(struct ps_slot, stalls, F_UINT),
    FLD(struct ps_slot, rescues, F_UINT),
    FLD(struct ps_slot, leaving, F_INT),
    FLD(struct ps_slot, leaving_shares, F_INT),
};

static const struct field worker_fields[] = {
    FLD(struct ps_worker, pid, F_INT),           FLD(struct ps_worker, slot, F_INT),
    FLD(struct ps_worker, generation, F_UINT),   ENUMF(struct ps_worker, state, W_STATE_COUNT),
    FLD(struct ps_worker, started_ms, F_U64),    FLD(struct ps_worker, ready_ms, F_U64),
    FLD(struct ps_worker, deadline_ms, F_U64),   FLD(struct ps_worker, notified, F_INT),
    FLD(struct ps_worker, hinted, F_INT),        FLD(struct ps_worker, status, F_STR),
    FLD(struct ps_worker, ready_guessed, F_INT), FLD(struct ps_worker, stats, F_STR),
    FLD(struct ps_worker, closes, F_STR),        FLD(struct ps_worker, ready_by, F_STR),
};

/* a queued operation asked by a signal (nobody waits for its answer) */
static const struct field op_fields[] = {
    ENUMF(struct ps_op, kind, OP_UPGRADE + 1),
    FLD(struct ps_op, n, F_INT),
};

static uint32_t fnv1a(uint32_t h, const void *data, size_t n)
{
    const unsigned char *p = data;

    while (n--)
        h = (h ^ *p++) * 16777619u;
    return h;
}

uint32_t ps__upgrade_tables_hash(void)
{
    static const struct {
        const struct field *f;
        size_t n;
    } tables[] = {
        {sup_fields, PS__ARRAY_LEN(sup_fields)},   {group_fields, PS__ARRAY_LEN(group_fields)},
        {slot_fields, PS__ARRAY_LEN(slot_fields)}, {worker_fields, PS__ARRAY_LEN(worker_fields)},
        {op_fields, PS__ARRAY_LEN(op_fields)},
    };
    uint32_t h = 2166136261u;
    size_t t, i;

    for (t = 0; t < PS__ARRAY_LEN(tables); t++) {
        for (i = 0; i < tables[t].n; i++) {
            const struct field *f = &tables[t].f[i];
            /* what the other side checks a value against: its name, its
             * type, a string's room and an enum's bound */
            uint32_t shape[3] = {(uint32_t)f->type, f->type == F_STR ? (uint32_t)f->size : 0,
                                 (uint32_t)f->max};
            unsigned char bytes[12];
            int k;
            for (k = 0; k < 12; k++) /* little-endian whatever the machine: one figure everywhere */
                bytes[k] = (unsigned char)(shape[k / 4] >> (8 * (k % 4)));
            h = fnv1a(h, f->name, strlen(f->name) + 1);
            h = fnv1a(h, bytes, sizeof(bytes));
        }
        h = fnv1a(h, "|", 1); /* where one table ends */
    }
    /* an enum travels as its number: the meaning of each number counts */
    for (i = 0; i < SL_STATE_COUNT; i++)
        h = fnv1a(h, ps__slot_state_name((enum ps_slot_state)i),
                  strlen(ps__slot_state_name((enum ps_slot_state)i)) + 1);
    for (i = 0; i < W_STATE_COUNT; i++)
        h = fnv1a(h, ps__worker_state_name((enum ps_worker_state)i),
                  strlen(ps__worker_state_name((enum ps_worker_state)i)) + 1);
    { /* enum ps_op_kind has no names elsewhere: its numbers, here */
        const unsigned char kinds[3] = {OP_RELOAD, OP_SCALE, OP_UPGRADE};
        h = fnv1a(h, kinds, sizeof(kinds));
    }
    return h;
}

struct out {
    char *buf;
    size_t len, cap;
};

static void out(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    /* the measuring pass has no buffer yet: vsnprintf(NULL, 0) counts */
    n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf && o->len < o->cap ? o->cap - o->len : 0,
                  fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* Strings travel percent-encoded: no space, newline or '%' in a value. */
static void out_str(struct out *o, const char *s)
{
    if (!*s) {
        out(o, "%%"); /* "%" alone: the empty string */
        return;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '%' || c == '=' || c >= 0x7f)
            out(o, "%%%02X", c);
        else
            out(o, "%c", c);
    }
}

static void out_fields(struct out *o, const struct field *f, size_t n, const void *base)
{
    const char *p = base;
    size_t i;

    for (i = 0; i < n; i++, f++) {
        out(o, " %s=", f->name);
        switch (f->type) {
        case F_INT:
        case F_ENUM:
            out(o, "%d", *(const int *)(p + f->off));
            break;
        case F_UINT:
            out(o, "%u", *(const unsigned *)(p + f->off));
            break;
        case F_U64:
            out(o, "%llu", (unsigned long long)*(const uint64_t *)(p + f->off));
            break;
        case F_TIME:
            out(o, "%lld", (long long)*(const time_t *)(p + f->off));
            break;
        case F_STR:
            out_str(o, p + f->off);
            break;
        }
    }
}

/* A UDP flow table's maps: " flowmaps=FD,..." (nothing without a table). */
static void out_flow_maps(struct out *o, const struct ps_group *gr)
{
    int maps[PS__FLOW_NMAPS], n, i;

    n = gr->flow ? ps__udp_flow_export(gr->flow, maps, PS__FLOW_NMAPS) : 0;
    for (i = 0; i < n; i++)
        out(o, "%s%d", i ? "," : " flowmaps=", maps[i]);
}

/* A lingering worker's table ids, per group: " flow_refs=R,...". */
static void out_flow_refs(struct out *o, const struct ps_sup *sup, const struct ps_worker *w)
{
    int g;

    if (w->state != W_LINGERING)
        return;
    for (g = 0; g < sup->ngroups && g < PS_SUP_MAX_LISTENERS; g++)
        out(o, "%s%d", g ? "," : " flow_refs=", w->flow_refs[g]);
}

char *ps__upgrade_serialize(struct ps_sup *sup)
{
    struct out o = {NULL, 0, 0};
    int g, i, pass;

    /* two passes: measure, then write */
    for (pass = 0; pass < 2; pass++) {
        if (pass) {
            o.cap = o.len + 1;
            o.len = 0;
            o.buf = malloc(o.cap);
            if (!o.buf)
                return NULL;
        }
        out(&o, "%s\n", STATE_MAGIC);
        out(&o, "sup");
        out_fields(&o, sup_fields, PS__ARRAY_LEN(sup_fields), sup);
        out(&o, "\n");
        for (g = 0; g < sup->ngroups; g++) {
            const struct ps_group *gr = &sup->groups[g];
            out(&o, "group");
            out_fields(&o, group_fields, PS__ARRAY_LEN(group_fields), gr);
            out(&o, " name=");
            out_str(&o, gr->spec.name);
            out(&o, " fds=");
            for (i = 0; i < gr->nfds; i++)
                out(&o, "%s%d", i ? "," : "", gr->fds[i]);
            out(&o, " order=");
            for (i = 0; i < gr->nfds; i++)
                out(&o, "%s%d", i ? "," : "", gr->order[i]);
            out_flow_maps(&o, gr);
            out(&o, "\n");
        }
        for (i = 0; i < sup->nslots; i++) {
            out(&o, "slot");
            out_fields(&o, slot_fields, PS__ARRAY_LEN(slot_fields), &sup->slots[i]);
            out(&o, "\n");
        }
        for (i = 0; i < sup->nworkers; i++) {
            if (!sup->workers[i].pid)
                continue;
            out(&o, "worker index=%d", i);
            out_fields(&o, worker_fields, PS__ARRAY_LEN(worker_fields), &sup->workers[i]);
            out_flow_refs(&o, sup, &sup->workers[i]);
            out(&o, "\n");
        }
        /* what signals asked and still waits its turn goes on after the
         * exec, in order (a requester who waits is told to ask again) */
        for (i = 0; i < sup->ops.nqueued; i++) {
            if (sup->ops.queue[i].nwaiters || sup->ops.queue[i].kind == OP_UPGRADE)
                continue;
            out(&o, "op");
            out_fields(&o, op_fields, PS__ARRAY_LEN(op_fields), &sup->ops.queue[i]);
            out(&o, "\n");
        }
    }
    return o.buf;
}

/* What clients asked behind the upgrade does not cross the exec: they are
 * told so, and if the exec fails after all, those operations are dropped
 * as if it had happened (each requester was told to ask again; what
 * signals asked stays queued either way, as ps__upgrade_serialize carries
 * it). */
static void tell_queued(struct ps_sup *sup, int dropped)
{
    static const char why[] = "the supervisor re-executes itself (upgrade) before this runs: "
                              "ask again";
    int i, k;

    if (dropped) {
        ps__op_keep_unwaited(sup);
        return;
    }
    for (i = 0; i < sup->ops.nqueued; i++)
        for (k = 0; k < sup->ops.queue[i].nwaiters; k++)
            ps__control_answer(sup, &sup->ops.queue[i].waiters[k], 0, why);
    /* and a client connected but not yet read would be closed on its
     * request by the exec: a reset instead of an answer */
    ps__control_refuse_unread(sup, why);
}

/* The exec itself, once the new binary answered.  Returns only on failure
 * (-errno with err), with the old image as it was. */
static int upgrade_exec(struct ps_sup *sup, int unchecked, char *err, size_t errlen)
{
    const struct ps_waiter *w = sup->upgrade.has_waiter ? &sup->upgrade.waiter : NULL;
    const char *exe = sup->cfg->self_exe;
    int r, client = ps__control_client_fd(sup, w);
    char *state;

    if (unchecked)
        ps__sup_log(sup, PS_LOG_WARN, "upgrade_unchecked",
                    "%s does not say which upgrade state it reads (a version older than "
                    "--upgrade-state-format): re-executing it anyway, as that version would",
                    exe);
    sup->upgrade.client = client;
    sup->upgrade.json = ps__control_client_json(sup, w);
    state = ps__upgrade_serialize(sup);
    sup->upgrade.client = -1;
    if (!state) {
        ps__set_error(err, errlen, "cannot describe the supervisor's state");
        return -ENOMEM;
    }
    ps__sup_log(sup, PS_LOG_INFO, "upgrading", "re-executing %s in place", exe);
    tell_queued(sup, 0);
    ps__control_flush(sup, 1000);
    carry_fds(sup, client, 1);
    setenv("PORTSHARE_UPGRADE_STATE", state, 1);
    if (sup->systemd_notify[0])
        setenv("NOTIFY_SOCKET", sup->systemd_notify, 1);
    free(state);
    execv(exe, sup->cfg->self_argv);
    /* still here: the old image goes on as if nothing happened */
    r = ps__neg_errno();
    unsetenv("PORTSHARE_UPGRADE_STATE");
    unsetenv("NOTIFY_SOCKET");
    carry_fds(sup, client, 0);
    tell_queued(sup, 1);
    ps__set_error(err, errlen, "cannot execute %s: %s; still running the old binary", exe,
                  ps_strerror(r));
    return r;
}

/* The upgrade ends without an exec: the questions are stopped, and the
 * requester (if still there) is told why. */
static void upgrade_fail(struct ps_sup *sup, const char *why)
{
    ask_stop(&sup->upgrade.asks[0]);
    ask_stop(&sup->upgrade.asks[1]);
    sup->upgrade.asking = 0;
    ps__sup_log(sup, PS_LOG_ERROR, "upgrade_failed", "upgrade failed: %s", why);
    if (sup->upgrade.has_waiter)
        ps__control_answer(sup, &sup->upgrade.waiter, 0, why);
    sup->upgrade.has_waiter = 0;
}

int ps__upgrade_start(struct ps_sup *sup, const struct ps_waiter *w, char *err, size_t errlen)
{
    const char *exe = sup->cfg->self_exe;
    int r;

    if (!exe || !sup->cfg->self_argv) {
        ps__set_error(err, errlen, "this supervisor does not know its own binary");
        return -ENOEXEC;
    }
    if (sup->upgrade.asking) {
        ps__set_error(err, errlen, "an upgrade is already in progress");
        return -EBUSY;
    }
    ask_reset(&sup->upgrade.asks[1]); /* nothing to stop there if the first fails */
    r = ask_start(&sup->upgrade.asks[0], exe, "--version", 0);
    if (r == 0 && (r = ask_start(&sup->upgrade.asks[1], exe, "--upgrade-state-format", 1)) < 0)
        ask_stop(&sup->upgrade.asks[0]);
    if (r < 0) {
        ps__set_error(err, errlen,
                      "cannot run %s to ask its version: %s; still running the old "
                      "binary",
                      exe, ps_strerror(r));
        return r;
    }
    sup->upgrade.asking = 1;
    sup->upgrade.deadline = ps__sup_now(sup) + ASK_TIMEOUT_MS;
    sup->upgrade.has_waiter = w != NULL;
    if (w)
        sup->upgrade.waiter = *w;
    ps__sup_log(sup, PS_LOG_INFO, "upgrade_asking",
                "upgrade: asking %s for its version and upgrade state format", exe);
    return 0;
}

int ps__upgrade_poll_fill(struct ps_sup *sup, struct pollfd *pfd)
{
    int i, n = 0;

    if (!sup->upgrade.asking)
        return 0;
    if (ps__stopping(sup) || ps__lameduck(sup)) {
        upgrade_fail(sup, "the supervisor is stopping");
        return 0;
    }
    for (i = 0; i < 2; i++)
        if (sup->upgrade.asks[i].fd >= 0)
            pfd[n++] = (struct pollfd){.fd = sup->upgrade.asks[i].fd, .events = POLLIN};
    return n;
}

void ps__upgrade_poll_done(struct ps_sup *sup, const struct pollfd *pfd, int n)
{
    struct ps_upgrade_ask *asks = sup->upgrade.asks;
    const char *exe = sup->cfg->self_exe;
    int i, k = 0, unchecked = 0, r;
    char err[512];

    if (!sup->upgrade.asking)
        return;
    for (i = 0; i < 2; i++) /* the entries ps__upgrade_poll_fill added, in its order */
        if (asks[i].fd >= 0 && k < n && pfd[k++].revents)
            ask_read(&asks[i]);
    if (asks[0].running || asks[1].running) { /* reaped by the loop: ps__upgrade_reaped */
        if (ps__sup_now(sup) < sup->upgrade.deadline)
            return;
        ps__set_error(err, sizeof(err), "%s %s did not answer within %d s", exe,
                      asks[0].running ? "--version" : "--upgrade-state-format",
                      ASK_TIMEOUT_MS / 1000);
        upgrade_fail(sup, err);
        return;
    }
    for (i = 0; i < 2; i++) { /* what it wrote before it exited is in the pipe */
        ask_read(&asks[i]);
        ask_stop(&asks[i]);
    }
    sup->upgrade.asking = 0;
    r = verdict(exe, asks, &unchecked, err, sizeof(err));
    if (r == 0)
        upgrade_exec(sup, unchecked, err, sizeof(err)); /* returns only when it failed */
    upgrade_fail(sup, err);
}

uint64_t ps__upgrade_deadline(const struct ps_sup *sup)
{
    return sup->upgrade.asking ? sup->upgrade.deadline : UINT64_MAX;
}

/* ---- the new image ----------------------------------------------------------- */

static int unhex(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int parse_str(const char *v, char *dst, size_t cap)
{
    size_t n = 0;

    for (; *v; v++) {
        int c = (unsigned char)*v;
        if (c == '%') {
            if (!v[1]) /* "%" alone marks an empty value */
                break;
            if (unhex(v[1]) < 0 || unhex(v[2]) < 0)
                return -EINVAL;
            c = unhex(v[1]) * 16 + unhex(v[2]);
            v += 2;
        }
        if (n + 1 >= cap)
            return -EINVAL;
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return 0;
}

static int parse_num(const char *v, long long min, long long max, long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(v, &end, 10);
    return errno || end == v || *end || *out < min || *out > max ? -EINVAL : 0;
}

/* key=value into the field of that name; unknown keys are an error: both
 * sides are the same binary's table, so a mismatch means a foreign state */
static int set_field(const struct field *f, size_t n, void *base, const char *key, const char *v)
{
    char *p = base;
    long long x;
    size_t i;

    for (i = 0; i < n; i++, f++) {
        if (strcmp(f->name, key))
            continue;
        switch (f->type) {
        case F_STR:
            return parse_str(v, p + f->off, f->size);
        case F_ENUM:
            if (parse_num(v, 0, f->max - 1, &x) < 0)
                return -EINVAL;
            *(int *)(p + f->off) = (int)x;
            return 0;
        case F_INT:
            if (parse_num(v, -2147483647LL - 1, 2147483647LL, &x) < 0)
                return -EINVAL;
            *(int *)(p + f->off) = (int)x;
            return 0;
        case F_UINT:
            if (parse_num(v, 0, 4294967295LL, &x) < 0)
                return -EINVAL;
            *(unsigned *)(p + f->off) = (unsigned)x;
            return 0;
        case F_U64:
            errno = 0;
            *(uint64_t *)(p + f->off) = strtoull(v, NULL, 10);
            return errno ? -EINVAL : 0;
        case F_TIME:
            if (parse_num(v, 0, 1LL << 62, &x) < 0)
                return -EINVAL;
            *(time_t *)(p + f->off) = (time_t)x;
            return 0;
        }
    }
    return -ENOENT;
}

static int parse_list(const char *v, int *dst, int n, int min, int max)
{
    int i;
    char *end;

    for (i = 0; i < n; i++) {
        long x = strtol(v, &end, 10);
        if (end == v || x < min || x > max || (*end && *end != ','))
            return -EINVAL;
        dst[i] = (int)x;
        v = *end ? end + 1 : end;
    }
    return *v ? -EINVAL : 0;
}

static int restore_group(struct ps_sup *sup, char *line, int *next_spec)
{
    struct ps_group *g;
    struct ps_spec real;
    char *tok, *save = NULL, *fds = NULL, *order = NULL, *flowmaps = NULL;
    char name[PS_SPEC_NAME_MAX] = "";
    int i, r;

    if (sup->ngroups >= PS_SUP_MAX_LISTENERS)
        return -EINVAL;
    g = &sup->groups[sup->ngroups];
    memset(g, 0, sizeof(*g));
    ps__lgroup_init(&g->lg, &g->spec, 0); /* no socket yet, none prepared */
    strtok_r(line, " ", &save);           /* "group" */
    while ((tok = strtok_r(NULL, " ", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return -EINVAL;
        *eq++ = '\0';
        if (!strcmp(tok, "fds"))
            fds = eq;
        else if (!strcmp(tok, "order"))
            order = eq;
        else if (!strcmp(tok, "flowmaps"))
            flowmaps = eq;
        else if (!strcmp(tok, "name")) {
            if (parse_str(eq, name, sizeof(name)) < 0)
                return -EINVAL;
        } else if (set_field(group_fields, PS__ARRAY_LEN(group_fields), g, tok, eq) < 0)
            return -EINVAL;
    }
    if (g->nfds < 1 || g->nfds > PS_SUP_MAX_WORKERS || !fds || !order ||
        parse_list(fds, g->fds, g->nfds, 0, 1 << 20) < 0 ||
        parse_list(order, g->order, g->nfds, 0, g->nfds - 1) < 0)
        return -EINVAL;
    for (i = 0; i < g->nfds; i++)
        if (set_cloexec(g->fds[i], 1) < 0)
            return -EBADF;
    /* the flow table's maps wait for its import (flows.c), close-on-exec
     * meanwhile: no worker may inherit them */
    if (flowmaps) {
        if (parse_list(flowmaps, g->flow_maps, PS__FLOW_NMAPS, 0, 1 << 20) < 0)
            return -EINVAL;
        for (i = 0; i < PS__FLOW_NMAPS; i++)
            if (set_cloexec(g->flow_maps[i], 1) < 0)
                return -EBADF;
        g->nflow_maps = PS__FLOW_NMAPS;
    }
    if (!g->inherited && *next_spec < sup->cfg->nspecs)
        g->spec = sup->cfg->specs[(*next_spec)++];
    snprintf(g->spec.name, sizeof(g->spec.name), "%s", name);
    /* the real address (a port 0 spec got its port at the first start) */
    r = ps__spec_of_fd(g->fds[0], &real);
    if (r < 0)
        return r;
    g->spec.addr = real.addr;
    g->spec.addrlen = real.addrlen;
    g->spec.port = real.port;
    if (g->inherited) {
        snprintf(real.name, sizeof(real.name), "%s", g->spec.name);
        g->spec = real;
        g->spec.reuse = g->shared ? PS_REUSE_SHARED : PS_REUSE_PORT; /* ReusePort=yes */
    }
    sup->ngroups++;
    return 0;
}

static int restore_fields(char *line, const struct field *f, size_t n, void *base, int *index)
{
    char *tok, *save = NULL;
    long long x;

    strtok_r(line, " ", &save); /* the record's kind */
    while ((tok = strtok_r(NULL, " ", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return -EINVAL;
        *eq++ = '\0';
        if (index && !strcmp(tok, "index")) {
            if (parse_num(eq, 0, 2 * PS_SUP_MAX_WORKERS + 63, &x) < 0)
                return -EINVAL;
            *index = (int)x;
            continue;
        }
        if (set_field(f, n, base, tok, eq) < 0)
            return -EINVAL;
    }
    return 0;
}

/* " flow_refs=R,..." out of a worker's line (the groups are restored by
 * then: their lines come first), into w. */
static int take_flow_refs(char *line, const struct ps_sup *sup, struct ps_worker *w)
{
    int refs[PS_SUP_MAX_LISTENERS], g,
        n = sup->ngroups < PS_SUP_MAX_LISTENERS ? sup->ngroups : PS_SUP_MAX_LISTENERS;
    char *at = strstr(line, " flow_refs="), *end, list[6 * PS_SUP_MAX_LISTENERS + 1];
    size_t len;

    if (!at)
        return 0;
    end = strchr(at + 1, ' ');
    len = end ? (size_t)(end - at) : strlen(at);
    if (len - 11 >= sizeof(list))
        return -EINVAL;
    memcpy(list, at + 11, len - 11);
    list[len - 11] = '\0';
    if (parse_list(list, refs, n, 0, PS__FLOW_IDS) < 0)
        return -EINVAL;
    for (g = 0; g < n; g++)
        w->flow_refs[g] = (short)refs[g];
    memmove(at, at + len, strlen(at + len) + 1); /* the line without it */
    return 0;
}

static int restore_line(struct ps_sup *sup, char *line, int *next_spec, int *slot_i)
{
    if (!strncmp(line, "sup ", 4))
        return restore_fields(line, sup_fields, PS__ARRAY_LEN(sup_fields), sup, NULL);
    if (!strncmp(line, "group ", 6))
        return restore_group(sup, line, next_spec);
    if (!strncmp(line, "slot ", 5)) {
        if (*slot_i >= PS_SUP_MAX_WORKERS)
            return -EINVAL;
        return restore_fields(line, slot_fields, PS__ARRAY_LEN(slot_fields),
                              &sup->slots[(*slot_i)++], NULL);
    }
    if (!strncmp(line, "op ", 3)) {
        struct ps_op op;
        memset(&op, 0, sizeof(op));
        if (restore_fields(line, op_fields, PS__ARRAY_LEN(op_fields), &op, NULL) < 0)
            return -EINVAL;
        return ps__op_restore(sup, &op);
    }
    if (!strncmp(line, "worker ", 7)) {
        struct ps_worker w;
        int idx = -1;
        memset(&w, 0, sizeof(w));
        if (take_flow_refs(line, sup, &w) < 0 ||
            restore_fields(line, worker_fields, PS__ARRAY_LEN(worker_fields), &w, &idx) < 0 ||
            idx < 0 || w.pid <= 0)
            return -EINVAL;
        w.ping_ms = ps__sup_now(sup); /* the watchdog period starts anew */
        sup->workers[idx] = w;
        if (idx >= sup->nworkers)
            sup->nworkers = idx + 1;
        return 0;
    }
    return -EINVAL;
}

/* Indices that point into the tables must point at something. */
static int validate(const struct ps_sup *sup, int nslots_seen)
{
    int s, i;

    if (sup->nslots != nslots_seen || sup->nslots < 1 || sup->target < 1 ||
        sup->target > PS_SUP_MAX_WORKERS)
        return -EINVAL;
    for (s = 0; s < sup->nslots; s++) {
        const struct ps_slot *sl = &sup->slots[s];
        if (sl->current >= sup->nworkers || sl->next >= sup->nworkers ||
            sl->leaving >= sup->nworkers || (sl->leaving >= 0 && !sup->workers[sl->leaving].pid) ||
            (sl->current >= 0 && !sup->workers[sl->current].pid) ||
            (sl->next >= 0 && !sup->workers[sl->next].pid))
            return -EINVAL;
    }
    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid &&
            (sup->workers[i].slot < 0 || sup->workers[i].slot >= PS_SUP_MAX_WORKERS))
            return -EINVAL;
    return 0;
}

/* The control socket's path, so that it is unlinked at exit: a default
 * path was chosen by ps__control_open in the first image, which this one
 * does not run, and a path given with --control came back with the
 * command line.  The socket itself knows where it was bound. */
static void control_path_of(struct ps_sup *sup)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    size_t n;

    if (sup->cfg->control_path[0] || sup->control_fd < 0 ||
        getsockname(sup->control_fd, (struct sockaddr *)&sa, &len) < 0 ||
        sa.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) ||
        sa.sun_path[0] != '/')
        return;
    n = len - offsetof(struct sockaddr_un, sun_path);
    n = strnlen(sa.sun_path, n < sizeof(sa.sun_path) ? n : sizeof(sa.sun_path));
    if (n < sizeof(sup->cfg->control_path))
        snprintf(sup->cfg->control_path, sizeof(sup->cfg->control_path), "%.*s", (int)n,
                 sa.sun_path);
}

int ps__upgrade_restore(struct ps_sup *sup, const char *state, char *err, size_t errlen)
{
    char *copy = strdup(state), *line, *save = NULL;
    int next_spec = 0, slot_i = 0, r = 0;

    if (!copy)
        return -ENOMEM;
    line = strtok_r(copy, "\n", &save);
    if (!line || strcmp(line, STATE_MAGIC)) {
        ps__set_error(err, errlen, "upgrade state from an incompatible version");
        r = -EINVAL;
        goto out;
    }
    while ((line = strtok_r(NULL, "\n", &save))) {
        r = restore_line(sup, line, &next_spec, &slot_i);
        if (r < 0) {
            ps__set_error(err, errlen, "bad upgrade state line '%.60s'", line);
            goto out;
        }
    }
    r = validate(sup, slot_i);
    if (r < 0) {
        ps__set_error(err, errlen, "inconsistent upgrade state");
        goto out;
    }
    set_cloexec(sup->notify_fd, 1);
    set_cloexec(sup->control_fd, 1);
    control_path_of(sup);
    if (sup->metrics_fd >= 0 && set_cloexec(sup->metrics_fd, 1) < 0)
        sup->metrics_fd = -1; /* not carried after all: bound again */
    if (sup->agent_fd >= 0 && set_cloexec(sup->agent_fd, 1) < 0)
        sup->agent_fd = -1;
    if (sup->upgrade.client >= 0) {
        struct ps_waiter w;
        char body[96];
        set_cloexec(sup->upgrade.client, 1);
        w = ps__control_adopt(sup, sup->upgrade.client, sup->upgrade.json, "upgrade");
        snprintf(body, sizeof(body), "upgraded in place: pid %ld", (long)getpid());
        ps__control_answer(sup, &w, 1, body);
        sup->upgrade.client = -1;
    }
out:
    free(copy);
    return r;
}
