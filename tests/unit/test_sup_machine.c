/*
 * test_sup_machine.c - the supervisor's state machine, without a single
 * process.
 *
 * First every row of the slot table (slots.c) and of the worker's
 * (worker.c): a slot is brought to the
 * state the way the loop brings it there, its worker in the condition the
 * event implies, the event is fired through ps__slot_event() and the new
 * state and what the row's action did to the world are checked.  Then
 * random sequences of what the world does (workers get ready, exit, say
 * STOPPING=1, miss deadlines; reload, scale, upgrade and stop are asked;
 * a held socket stops listening) go through the loop's own handlers,
 * ps__sup_run_timers() and ops.c, and the supervisor's invariants are
 * checked after every step.
 *
 * The world is a fake struct ps_sup_sys: spawn fills a worker entry with a
 * made-up pid, signal and kill_tree only record what they were asked.  The
 * made-up pids are above any pid_max (2^22), and nothing in this program
 * hands them to kill(2): the only real kill() on the loop's paths is in
 * the reaper (supervisor.c), which this test does not call.  Sockets are
 * real (loopback, port 0): closing retired slots, the listener checks and
 * status read them.  So is "systemd": an abstract notify socket of ours,
 * whose messages are checked for their order.
 *
 * PS_TEST_SEED=N replays a run (the seed is printed), PS_TEST_ONLY=K only
 * its sequence K; PS_TEST_SEQUENCES and PS_TEST_STEPS size it;
 * PS_TEST_VERBOSE=1 prints the supervisor's log.
 */
#include "ps_test.h"

#include "sup_internal.h"

#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#define FAKE_PID_BASE 10000000 /* above any pid_max: never a process */
#define DRAIN_SIG     SIGUSR1  /* the configured drain signal (not the default) */
#define MAX_SCALE     6        /* random scale counts: 1..MAX_SCALE */
#define NWORKERS      ((int)PS__ARRAY_LEN(sup.workers))

static struct ps_sup sup, sup2; /* large: the worker tables */
static struct ps_sup_config cfg;
static char *fake_argv[] = {"fake-worker", NULL};

/* ---- failure context: seed, sequence, step and the last steps taken ----- */

#define TRACE_LINES 40

static struct {
    unsigned long long seed;
    int seq, step; /* -1: not in a random run */
    char lines[TRACE_LINES][200];
    int nlines;
} ctx = {0, -1, -1, {{0}}, 0};

static uint64_t trace_digest = 14695981039346656037ull; /* FNV-1a of every line */

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void trace(const char *fmt, ...)
{
    char *line = ctx.lines[ctx.nlines++ % TRACE_LINES];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(ctx.lines[0]), fmt, ap);
    va_end(ap);
    for (; *line; line++)
        trace_digest = (trace_digest ^ (unsigned char)*line) * 1099511628211ull;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int i;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ctx.seq >= 0) {
        fprintf(stderr, "FAILED: seed %llu, sequence %d, step %d (PS_TEST_SEED=%llu replays it)\n",
                ctx.seed, ctx.seq, ctx.step, ctx.seed);
        fprintf(stderr, "the last steps of the sequence:\n");
        i = ctx.nlines > TRACE_LINES ? ctx.nlines - TRACE_LINES : 0;
        for (; i < ctx.nlines; i++)
            fprintf(stderr, "  %s\n", ctx.lines[i % TRACE_LINES]);
    }
    fail_msg("%s", msg);
    abort(); /* fail_msg does not return */
}

/* Like assert_true, with a message and the context above. */
#define CHECK(cond, fmt, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            die("%s:%d: (%s) " fmt, __FILE__, __LINE__, #cond, ##__VA_ARGS__);                     \
    } while (0)

/* ---- the clock ---------------------------------------------------------------- */

/* The supervisor's clock (its seam's now) is this one.  Time passes only
 * when a step says so, which keeps every run of a seed the same. */
#define CLOCK_START 1000000

static uint64_t clock_ms = CLOCK_START;

static uint64_t fake_now(void)
{
    return clock_ms;
}

/* ---- the fake world --------------------------------------------------------- */

enum call_kind { CALL_SIGNAL, CALL_KILL_TREE };

struct call {
    enum call_kind kind;
    int worker; /* index in sup->workers */
    pid_t pid;
    int sig;
};

#define MAX_CALLS 1024

static struct {
    int fail; /* the next `fail` spawns fail with -fail_errno */
    int fail_errno;
    unsigned spawns, failed_spawns;
    pid_t last_pid;
    int ncalls; /* calls since the last fake_calls_reset(); only the first MAX_CALLS kept */
    struct call calls[MAX_CALLS];
    /* per worker entry, since its spawn: drain signals and SIGABRTs sent */
    unsigned char drains[2 * PS_SUP_MAX_WORKERS + 64], aborts[2 * PS_SUP_MAX_WORKERS + 64];
} fake;

static void fake_calls_reset(void)
{
    fake.ncalls = 0;
}

/* The worker entry w, checked to be one of ours and alive. */
static int fake_worker_index(struct ps_sup *s, const struct ps_worker *w, const char *what)
{
    CHECK(s == &sup, "%s: not our supervisor", what);
    CHECK(w >= s->workers && w < s->workers + NWORKERS, "%s: not a worker entry", what);
    CHECK(w->pid >= FAKE_PID_BASE, "%s of a worker entry with pid %ld (free, or not ours)", what,
          (long)w->pid);
    return (int)(w - s->workers);
}

static int fake_spawn(struct ps_sup *s, int slot, unsigned gen)
{
    struct ps_worker *w;
    int i;

    CHECK(s == &sup, "spawn: not our supervisor");
    CHECK(slot >= 0 && slot < s->nslots, "spawn for slot %d of %d", slot, s->nslots);
    CHECK(gen == s->generation || gen == s->next_generation,
          "spawn of generation %u (serving %u, next %u)", gen, s->generation, s->next_generation);
    CHECK(!ps__stopping(s), "spawn while stopping");
    /* a slot whose next generation is starting waits for it (run_timers) */
    CHECK(gen != s->generation || s->slots[slot].next < 0,
          "a worker of the old generation %u started in slot %d, whose next one is starting", gen,
          slot);
    if (fake.fail > 0) {
        CHECK(fake.fail_errno > 0, "a failing spawn needs an errno");
        fake.fail--;
        fake.failed_spawns++;
        return -fake.fail_errno;
    }
    for (i = 0; i < NWORKERS && s->workers[i].pid; i++)
        ;
    if (i == NWORKERS)
        return -EAGAIN;
    if (i >= s->nworkers)
        s->nworkers = i + 1;
    w = &s->workers[i];
    memset(w, 0, sizeof(*w));
    w->pid = fake.last_pid = fake.last_pid < FAKE_PID_BASE ? FAKE_PID_BASE : fake.last_pid + 1;
    w->slot = slot;
    w->generation = gen;
    w->state = W_STARTING;
    w->started_ms = w->ping_ms = fake_now();
    w->deadline_ms = w->started_ms + s->cfg->ready_timeout_ms;
    fake.spawns++;
    fake.drains[i] = fake.aborts[i] = 0;
    return i;
}

static void fake_record(enum call_kind kind, struct ps_sup *s, struct ps_worker *w, int sig)
{
    int idx = fake_worker_index(s, w, kind == CALL_SIGNAL ? "signal" : "kill_tree");

    if (fake.ncalls < MAX_CALLS)
        fake.calls[fake.ncalls] = (struct call){kind, idx, w->pid, sig};
    fake.ncalls++;
}

static void fake_signal(struct ps_sup *s, struct ps_worker *w, int sig)
{
    int drain = s->cfg->drain_signal ? s->cfg->drain_signal : SIGTERM, i;

    fake_record(CALL_SIGNAL, s, w, sig);
    i = (int)(w - s->workers);
    CHECK(sig == drain || sig == SIGABRT, "signal %d sent to worker %d", sig, i);
    /* asked to finish once: a second signal would restart its drain timeout,
     * and no drain signal after the SIGABRT of a watchdog */
    CHECK(!fake.drains[i] && !fake.aborts[i],
          "signal %d to worker %d (pid %ld), which had %u "
          "drain signal(s) and %u SIGABRT already",
          sig, i, (long)w->pid, fake.drains[i], fake.aborts[i]);
    if (sig == SIGABRT)
        fake.aborts[i]++;
    else
        fake.drains[i]++;
}

static void fake_kill_tree(struct ps_sup *s, struct ps_worker *w)
{
    fake_record(CALL_KILL_TREE, s, w, SIGKILL);
}

static const struct ps_sup_sys fake_sys = {
    .spawn = fake_spawn,
    .signal = fake_signal,
    .kill_tree = fake_kill_tree,
    .now = fake_now,
    /* systemd is a socket of ours (sd below), whose messages are checked */
    .notify = ps__sup_notify_systemd,
    /* the waiters are clients of a control socket of ours (control_turn) */
    .answer = ps__control_answer,
    .upgrade = ps__upgrade_start,
};

static unsigned log_lines;
static unsigned long rows_taken[SL_STATE_COUNT][EV_COUNT]; /* that changed the state */

static int state_by_name(const char *name, size_t len)
{
    int i;

    for (i = 0; i < SL_STATE_COUNT; i++)
        if (strlen(ps__slot_state_name(i)) == len && !strncmp(ps__slot_state_name(i), name, len))
            return i;
    return -1;
}

static int event_by_name(const char *name, size_t len)
{
    int i;

    for (i = 0; i < EV_COUNT; i++)
        if (strlen(ps__slot_event_name(i)) == len && !strncmp(ps__slot_event_name(i), name, len))
            return i;
    return -1;
}

/* "slot 3: ready --watchdog--> backing-off": which row a sequence took */
static void count_row(const char *msg)
{
    const char *from = strchr(msg, ':'), *ev = strstr(msg, " --"), *arrow;
    int st, e;

    if (!from || !ev || !(arrow = strstr(ev + 3, "--> ")))
        return;
    st = state_by_name(from + 2, (size_t)(ev - from - 2));
    e = event_by_name(ev + 3, (size_t)(arrow - ev - 3));
    if (st >= 0 && e >= 0)
        rows_taken[st][e]++;
}

static void test_log(void *c, enum ps_log_level level, const char *event, const char *msg)
{
    (void)c;
    log_lines++;
    if (!strcmp(event, "slot_state"))
        count_row(msg);
    if (getenv("PS_TEST_VERBOSE"))
        fprintf(stderr, "  log %d %s: %s\n", (int)level, event, msg);
}

/* ---- "systemd": the notify socket the supervisor reports to ---------------- */

static struct {
    int fd;
    char addr[108];
    int stopping;     /* STOPPING=1 seen */
    int reloading;    /* RELOADING=1 seen, no READY=1 since */
    unsigned readies; /* READY=1 seen */
    unsigned reloads; /* RELOADING=1 seen */
} sd = {-1, "", 0, 0, 0, 0};

static void sd_open(void)
{
    snprintf(sd.addr, sizeof(sd.addr), "@ps-test-machine/%ld", (long)getpid());
    sd.fd = ps_notify_listen(sd.addr);
    assert_true(sd.fd >= 0);
}

static void sd_reset(void)
{
    struct ps_notify_msg msg;

    while (ps_notify_recv(sd.fd, &msg) != -EAGAIN)
        ;
    sd.stopping = sd.reloading = 0;
    sd.readies = sd.reloads = 0;
}

/* Read what the supervisor told systemd and check the protocol's order:
 * RELOADING=1 ... READY=1, and nothing but silence after STOPPING=1. */
static void sd_drain(void)
{
    struct ps_notify_msg msg;
    char val[64];

    for (;;) {
        int r = ps_notify_recv(sd.fd, &msg);
        if (r == -EAGAIN)
            break;
        CHECK(r == 0, "notify recv: %s", ps_strerror(r));
        CHECK(msg.pid == getpid(), "a notify message from pid %ld", (long)msg.pid);
        if (ps_notify_field(msg.text, "READY", val, sizeof(val)) >= 0) {
            CHECK(!sd.stopping, "READY=1 told to systemd after STOPPING=1");
            sd.readies++;
            sd.reloading = 0;
        }
        if (ps_notify_field(msg.text, "RELOADING", val, sizeof(val)) >= 0) {
            CHECK(!sd.stopping, "RELOADING=1 told to systemd after STOPPING=1");
            CHECK(ps_notify_field(msg.text, "MONOTONIC_USEC", val, sizeof(val)) >= 0,
                  "RELOADING=1 without MONOTONIC_USEC: '%s'", msg.text);
            sd.reloads++;
            sd.reloading = 1;
        }
        if (ps_notify_field(msg.text, "STOPPING", val, sizeof(val)) >= 0) {
            CHECK(!sd.stopping, "STOPPING=1 told twice");
            sd.stopping = 1;
        }
    }
}

/* ---- the machine ------------------------------------------------------------- */

struct machine_opts {
    int workers;
    int reuseport_groups; /* reuseport listeners, port 0 */
    int shared_group;     /* plus one shared listener */
    unsigned watchdog_ms;
    int drain_signal;
    unsigned ready_timeout_ms, drain_timeout_ms, ready_delay_ms; /* 0: 60 s, 30 s, 0 */
};

/*
 * The listeners: opened once for the whole program, lent to one machine at
 * a time and given back with a single socket.  Two reuseport groups on
 * port 0, opened by ps__group_grow from nothing: it binds as
 * ps__group_open does, without the look through /proc/net for foreign
 * sockets on the port (slow where many sockets exist; the kernel chose the
 * port for us alone).  One shared group on a port chosen here: a shared
 * socket bound to port 0 would not keep its port across shutdown(2) +
 * listen(2) (group.c binds the port by number only for reuseport groups).
 */
#define POOL_REUSEPORT 2
#define POOL_SIZE      (POOL_REUSEPORT + 1)

static struct ps_group pool[POOL_SIZE];
static int pool_of[PS_SUP_MAX_LISTENERS]; /* sup.groups[k] is pool[pool_of[k]] */

static unsigned free_port(void)
{
    struct ps_spec spec;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd;

    assert_int_equal(ps_spec_parse("tcp://127.0.0.1:0?reuse=shared", &spec, NULL, 0), 0);
    fd = ps_listen_open(&spec, PS_LISTEN_NO_REUSEPORT);
    assert_true(fd >= 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void pool_open(void)
{
    char text[64], err[256] = "";
    int j;

    for (j = 0; j < POOL_SIZE; j++) {
        struct ps_group *g = &pool[j];
        int shared = j >= POOL_REUSEPORT;
        int tries = 0, r;
        do {
            /* the free port may be taken by someone else before we bind it */
            if (shared)
                snprintf(text, sizeof(text), "tcp://127.0.0.1:%u?reuse=shared", free_port());
            else
                snprintf(text, sizeof(text), "tcp://127.0.0.1:0?reuse=port");
            struct ps_spec spec;
            memset(g, 0, sizeof(*g));
            assert_int_equal(ps_spec_parse(text, &spec, err, sizeof(err)), 0);
            ps__lgroup_init(&g->lg, &spec, shared); /* no socket, none prepared */
            r = shared ? ps__group_open(g, 1, err, sizeof(err))
                       : ps__group_grow(g, 1, err, sizeof(err));
        } while (r == -EADDRINUSE && ++tries < 10);
        if (r < 0)
            fail_msg("cannot open %s: %s", text, err);
        assert_int_equal(g->nfds, 1);
    }
}

static void pool_close(void)
{
    int j;

    for (j = 0; j < POOL_SIZE; j++)
        ps__group_close(&pool[j]);
}

/* Lend pool[j] to the machine, with a socket for each slot. */
static void lend_group(int j)
{
    struct ps_group *g = &sup.groups[sup.ngroups];
    char err[256] = "";

    *g = pool[j];
    if (ps__group_grow(g, sup.target, err, sizeof(err)) < 0)
        fail_msg("cannot grow %s: %s", g->spec.text, err);
    cfg.specs[sup.ngroups] = g->spec; /* with the port the kernel chose, as bind_all() leaves it */
    cfg.nspecs = sup.ngroups + 1;
    pool_of[sup.ngroups++] = j;
}

/* cfg and sup as start_fresh() leaves them, with the fake world, before the
 * first EV_START: every slot open (backing off, due now). */
static void machine_init(const struct machine_opts *o)
{
    int s, g;

    memset(&cfg, 0, sizeof(cfg));
    cfg.workers = o->workers;
    cfg.mode = PS_REUSE_PORT;
    cfg.ready_timeout_ms = o->ready_timeout_ms ? o->ready_timeout_ms : 60000;
    cfg.drain_timeout_ms = o->drain_timeout_ms ? o->drain_timeout_ms : 30000;
    cfg.ready_delay_ms = o->ready_delay_ms;
    /* a delay is --ready delay's; no delay is --ready notify's strictness
     * (auto would read /proc for the made-up pids: it has tests of its own
     * against real programs, test_run_ready_auto) */
    cfg.ready_mode = o->ready_delay_ms ? PS_READY_DELAY : PS_READY_NOTIFY;
    cfg.watchdog_ms = o->watchdog_ms;
    cfg.drain_signal = o->drain_signal;
    snprintf(cfg.name, sizeof(cfg.name), "machine");
    cfg.argv = fake_argv;
    cfg.log = test_log;
    clock_ms = CLOCK_START;
    ps__sup_init(&sup, &cfg, &fake_sys);
    assert_int_equal(sup.started_ms, CLOCK_START); /* the library reads our clock */
    if (!sup.conns)
        assert_int_equal(ps__control_init(&sup), 0); /* waiters are answered through it */
    for (g = 0; g < o->reuseport_groups && g < POOL_REUSEPORT; g++)
        lend_group(g);
    if (o->shared_group)
        lend_group(POOL_REUSEPORT);
    snprintf(sup.systemd_notify, sizeof(sup.systemd_notify), "%s", sd.addr);
    sd_reset();
    sup.generation = sup.next_generation = 1;
    sup.nslots = sup.target;
    for (s = 0; s < sup.nslots; s++)
        ps__slot_open(&sup, s);
    memset(&fake, 0, sizeof(fake));
}

/* Give the listeners back, down to one socket each. */
static void machine_close(void)
{
    int g;

    for (g = 0; g < sup.ngroups; g++) {
        struct ps_group *gr = &sup.groups[g];
        while (gr->nfds > 1)
            ps__group_close_last(gr);
        pool[pool_of[g]] = *gr;
    }
    sup.ngroups = 0;
}

static int live_workers(void)
{
    return ps__sup_live_workers(&sup);
}

/* ---- the invariants --------------------------------------------------------- */

static int reloadable(enum ps_slot_state st)
{
    return st == SL_BACKOFF || st == SL_STARTING || st == SL_READY || st == SL_STALLED;
}

/* Slot s's own consistency: its worker is in the condition its state says. */
static void check_slot(int s)
{
    const struct ps_slot *sl = &sup.slots[s];
    const struct ps_worker *w = sl->current >= 0 ? &sup.workers[sl->current] : NULL;
    const char *name = ps__slot_state_name(sl->state);

    CHECK(sl->state < SL_STATE_COUNT, "slot %d: state %d", s, (int)sl->state);
    CHECK(strcmp(name, "?"), "slot %d: a state without a name", s);
    CHECK(sl->current >= -1 && sl->current < sup.nworkers, "slot %d: current %d (nworkers %d)", s,
          sl->current, sup.nworkers);
    CHECK(sl->next >= -1 && sl->next < sup.nworkers, "slot %d: next %d", s, sl->next);
    CHECK(sl->current < 0 || sl->current != sl->next, "slot %d: current == next", s);
    if (w) {
        CHECK(w->pid, "slot %d (%s): its current worker %d is gone", s, name, sl->current);
        CHECK(w->slot == s, "slot %d: its current worker belongs to slot %d", s, w->slot);
    }
    switch (sl->state) {
    case SL_BACKOFF:
    case SL_CLOSING:
    case SL_STOPPING:
    case SL_CLOSED:
        CHECK(!w, "slot %d is %s but has a current worker (pid %ld, %s)", s, name, (long)w->pid,
              ps__worker_state_name(w->state));
        break;
    case SL_STARTING:
        CHECK(w && w->state == W_STARTING, "slot %d is starting, its worker %s", s,
              w ? ps__worker_state_name(w->state) : "missing");
        break;
    case SL_READY:
    case SL_STALLED: /* its worker is ready; only its queue says it stalled */
        CHECK(w && w->state == W_READY, "slot %d is %s, its worker %s", s, name,
              w ? ps__worker_state_name(w->state) : "missing");
        break;
    case SL_RETIRING:
        CHECK(w && (w->state == W_STARTING || w->state == W_READY),
              "slot %d is retiring, its worker %s", s,
              w ? ps__worker_state_name(w->state) : "missing");
        break;
    case SL_STATE_COUNT:
        break;
    }
    if (sl->next >= 0) {
        const struct ps_worker *n = &sup.workers[sl->next];
        CHECK(n->pid, "slot %d: its next worker %d is gone", s, sl->next);
        CHECK(n->slot == s, "slot %d: its next worker belongs to slot %d", s, n->slot);
        CHECK(n->state == W_STARTING || n->state == W_READY, "slot %d: its next worker is %s", s,
              ps__worker_state_name(n->state));
    }
}

static int hiwater; /* the most slots this sequence ever had */

static void check_queue(void)
{
    int i, upgrades = 0;

    CHECK(sup.ops.nqueued >= 0 && sup.ops.nqueued <= PS_OP_QUEUE_MAX, "%d operations queued",
          sup.ops.nqueued);
    /* the loop runs the queue whenever nothing is in flight, but during a
     * lame duck: what is queued then waits for the stop's answer */
    CHECK(!sup.ops.nqueued || sup.ops.reload || sup.life.state == PS_LIFE_LAMEDUCK,
          "%d operations queued, nothing in flight", sup.ops.nqueued);
    for (i = 0; i < sup.ops.nqueued; i++) {
        const struct ps_op *op = &sup.ops.queue[i];
        CHECK(op->kind == OP_RELOAD || op->kind == OP_SCALE || op->kind == OP_UPGRADE,
              "queued kind %d", (int)op->kind);
        CHECK(op->kind != OP_SCALE || (op->n >= 1 && op->n <= PS_SUP_MAX_WORKERS),
              "a queued scale to %d", op->n);
        CHECK(op->nwaiters >= 0 && op->nwaiters <= PS_OP_MAX_WAITERS, "%d waiters", op->nwaiters);
        upgrades += op->kind == OP_UPGRADE;
        /* merged by rule: never two reloads or two scales in a row */
        CHECK(!i || op->kind == OP_UPGRADE || op->kind != sup.ops.queue[i - 1].kind,
              "queue[%d] and queue[%d] are both %d: not merged", i - 1, i, (int)op->kind);
    }
    CHECK(upgrades <= 1, "%d upgrades queued", upgrades);
}

static void check_workers(const unsigned char *refd)
{
    int i;

    CHECK(sup.nworkers >= 0 && sup.nworkers <= NWORKERS, "nworkers %d", sup.nworkers);
    for (i = sup.nworkers; i < sup.nworkers + 4 && i < NWORKERS; i++)
        CHECK(!sup.workers[i].pid, "worker %d in use beyond nworkers %d", i, sup.nworkers);
    for (i = 0; i < sup.nworkers; i++) {
        const struct ps_worker *w = &sup.workers[i];
        if (!w->pid)
            continue;
        CHECK(w->pid >= FAKE_PID_BASE, "worker %d: pid %ld is not one of ours", i, (long)w->pid);
        CHECK(w->state < W_STATE_COUNT, "worker %d: state %d", i, (int)w->state);
        CHECK(w->slot >= 0 && w->slot < sup.nslots,
              "worker %d (pid %ld, %s) of slot %d, but only %d slots exist", i, (long)w->pid,
              ps__worker_state_name(w->state), w->slot, sup.nslots);
        CHECK(w->generation >= 1 && w->generation <= sup.next_generation,
              "worker %d of generation %u (next %u)", i, w->generation, sup.next_generation);
        if (refd[i])
            CHECK(w->state == W_STARTING || w->state == W_READY, "worker %d is a slot's but %s", i,
                  ps__worker_state_name(w->state));
        else
            /* nobody's worker any more: it must be on its way out */
            CHECK(w->state == W_DRAINING || w->state == W_KILLED,
                  "worker %d (pid %ld, slot %d, generation %u) is %s but no slot's current or "
                  "next worker: orphaned",
                  i, (long)w->pid, w->slot, w->generation, ps__worker_state_name(w->state));
    }
}

static void check_groups(int listening)
{
    int g, i;

    for (g = 0; g < sup.ngroups; g++) {
        const struct ps_group *gr = &sup.groups[g];
        unsigned char seen[PS_SUP_MAX_WORKERS] = {0};
        CHECK(gr->nfds == (gr->shared ? 1 : sup.nslots), "group %d: %d sockets for %d slots", g,
              gr->nfds, sup.nslots);
        /* the kernel's order of the group's sockets: each slot once */
        for (i = 0; i < gr->nfds; i++) {
            CHECK(gr->order[i] >= 0 && gr->order[i] < gr->nfds && !seen[gr->order[i]],
                  "group %d: order[%d] = %d is not a permutation", g, i, gr->order[i]);
            seen[gr->order[i]] = 1;
        }
        for (i = 0; listening && i < gr->nfds; i++) {
            unsigned q, lim;
            CHECK(ps_listen_queue(gr->fds[i], &q, &lim) == 0, "group %d socket %d not listening", g,
                  i);
        }
    }
}

/* A JSON text's brackets and strings are balanced (status.c writes it by hand). */
static int json_balanced(const char *s)
{
    int depth = 0, in_str = 0;

    for (; *s; s++) {
        if (in_str) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                in_str = 0;
            else if ((unsigned char)*s < 0x20)
                return 0;
        } else if (*s == '"') {
            in_str = 1;
        } else if (*s == '{' || *s == '[') {
            depth++;
        } else if (*s == '}' || *s == ']') {
            if (--depth < 0)
                return 0;
        }
    }
    return depth == 0 && !in_str;
}

/* Status (text and JSON) shows every slot with its state's name. */
static void check_status(void)
{
    struct ps_buf b = {0};
    char want[256];
    int s;

    const char *p, *eol;
    int n;

    /* the slots come in order: each is looked for after the one before */
    ps__status_text(&sup, &b);
    CHECK(!b.failed && b.data, "status text");
    for (s = 0, p = b.data; s < sup.nslots; s++) {
        const struct ps_slot *sl = &sup.slots[s];
        long pid = sl->current >= 0 ? (long)sup.workers[sl->current].pid : 0L;
        n = snprintf(want, sizeof(want), "\n%-5d %-8ld %-12s ", s, pid,
                     ps__slot_state_name(sl->state));
        p = memmem(p, b.len - (size_t)(p - b.data), want, (size_t)n);
        CHECK(p, "status text has no line '%s'", want + 1);
        /* a crash loop is reported (the same rule as the JSON's) */
        eol = memchr(p + 1, '\n', b.len - (size_t)(p + 1 - b.data));
        CHECK(eol, "status text: slot %d's line has no end", s);
        CHECK((memmem(p, (size_t)(eol - p), "CRASH LOOP", 10) != NULL) == (sl->crashes >= 3),
              "status text: slot %d with %u failures in a row: '%.*s'", s, sl->crashes,
              (int)(eol - p - 1), p + 1);
    }
    ps__buf_free(&b);
    ps__status_json(&sup, &b);
    CHECK(!b.failed && b.data, "status json");
    CHECK(json_balanced(b.data), "status json is not balanced: %.300s", b.data);
    n = snprintf(want, sizeof(want), "\"workers\":%d,", sup.target);
    CHECK(memmem(b.data, b.len, want, (size_t)n), "status json has no '%s'", want);
    for (s = 0, p = b.data; s < sup.nslots; s++) {
        const struct ps_slot *sl = &sup.slots[s];
        long pid = sl->current >= 0 ? (long)sup.workers[sl->current].pid : 0L;
        n = snprintf(want, sizeof(want), "{\"slot\":%d,\"state\":\"%s\",\"pid\":%ld,", s,
                     ps__slot_state_name(sl->state), pid);
        p = memmem(p, b.len - (size_t)(p - b.data), want, (size_t)n);
        CHECK(p, "status json has no '%s'", want);
    }
    ps__buf_free(&b);
}

/* What an upgrade carries across the exec comes back as it was (one schema
 * for both sides, upgrade.c). */
static void check_upgrade_round_trip(void)
{
    char err[256] = "", *state;
    int i, g, n;

    if (sup.ops.reload || ps__stopping(&sup))
        return; /* an upgrade only runs when nothing is in flight */
    state = ps__upgrade_serialize(&sup);
    CHECK(state, "serialize");
    ps__sup_init(&sup2, &cfg, &fake_sys);
    i = ps__upgrade_restore(&sup2, state, err, sizeof(err));
    free(state);
    CHECK(i == 0, "restore: %s", err);
    CHECK(sup2.generation == sup.generation && sup2.next_generation == sup.next_generation &&
              sup2.target == sup.target && sup2.nslots == sup.nslots &&
              sup2.told_ready == sup.told_ready && sup2.ops.reloads_ok == sup.ops.reloads_ok &&
              sup2.ops.reloads_failed == sup.ops.reloads_failed &&
              !strcmp(sup2.ops.reload_error, sup.ops.reload_error),
          "the supervisor's fields do not survive an upgrade");
    CHECK(sup2.ngroups == sup.ngroups, "%d groups restored of %d", sup2.ngroups, sup.ngroups);
    for (g = 0; g < sup.ngroups; g++) {
        CHECK(sup2.groups[g].nfds == sup.groups[g].nfds &&
                  sup2.groups[g].shared == sup.groups[g].shared &&
                  sup2.groups[g].relistens == sup.groups[g].relistens,
              "group %d does not survive an upgrade", g);
        for (i = 0; i < sup.groups[g].nfds; i++)
            CHECK(sup2.groups[g].fds[i] == sup.groups[g].fds[i] &&
                      sup2.groups[g].order[i] == sup.groups[g].order[i],
                  "group %d socket %d does not survive an upgrade", g, i);
    }
    for (i = 0; i < sup.nslots; i++) {
        const struct ps_slot *a = &sup.slots[i], *b = &sup2.slots[i];
        CHECK(a->state == b->state && a->current == b->current && a->next == b->next &&
                  a->restarts == b->restarts && a->crashes == b->crashes &&
                  a->backoff_until == b->backoff_until && a->retire_since == b->retire_since &&
                  a->last_exit == b->last_exit && a->lost == b->lost,
              "slot %d does not survive an upgrade", i);
    }
    n = sup.nworkers > sup2.nworkers ? sup.nworkers : sup2.nworkers;
    for (i = 0; i < n; i++) {
        const struct ps_worker *a = &sup.workers[i], *b = &sup2.workers[i];
        CHECK(a->pid == b->pid, "worker %d: pid %ld restored as %ld", i, (long)a->pid,
              (long)b->pid);
        if (!a->pid)
            continue;
        CHECK(a->slot == b->slot && a->generation == b->generation && a->state == b->state &&
                  a->started_ms == b->started_ms && a->ready_ms == b->ready_ms &&
                  a->deadline_ms == b->deadline_ms && a->notified == b->notified &&
                  a->hinted == b->hinted && !strcmp(a->status, b->status) &&
                  !strcmp(a->stats, b->stats),
              "worker %d does not survive an upgrade", i);
    }
}

/* Everything that must hold between two turns of the loop. */
static void check_invariants(void)
{
    static unsigned char refd[PS__ARRAY_LEN(sup.workers)];
    int s, i;

    CHECK(sup.target >= 1 && sup.target <= PS_SUP_MAX_WORKERS, "target %d", sup.target);
    /* the slots beyond the target are the ones being removed */
    CHECK(sup.nslots >= sup.target && sup.nslots <= PS_SUP_MAX_WORKERS, "nslots %d, target %d",
          sup.nslots, sup.target);
    CHECK(sup.generation >= 1 && sup.next_generation >= sup.generation, "generation %u, next %u",
          sup.generation, sup.next_generation);
    CHECK(!sup.ops.reload || sup.next_generation > sup.generation,
          "reloading to generation %u while %u serves", sup.next_generation, sup.generation);
    CHECK(!sup.ops.reload || !ps__stopping(&sup), "reloading while stopping");
    if (sup.nslots > hiwater)
        hiwater = sup.nslots;
    memset(refd, 0, (size_t)sup.nworkers);
    for (s = 0; s < sup.nslots; s++) {
        const struct ps_slot *sl = &sup.slots[s];
        check_slot(s);
        CHECK(sl->state != SL_CLOSED, "slot %d of %d is closed", s, sup.nslots);
        if (ps__stopping(&sup))
            CHECK(sl->state == SL_STOPPING, "stopping, but slot %d is %s", s,
                  ps__slot_state_name(sl->state));
        else if (s < sup.target)
            CHECK(reloadable(sl->state), "slot %d of the %d wanted is %s", s, sup.target,
                  ps__slot_state_name(sl->state));
        else
            CHECK(sl->state == SL_RETIRING || sl->state == SL_CLOSING,
                  "slot %d beyond the %d wanted is %s", s, sup.target,
                  ps__slot_state_name(sl->state));
        if (s < sup.target && (sl->state == SL_STARTING || sl->state == SL_READY))
            CHECK(sup.workers[sl->current].generation == sup.generation,
                  "slot %d serves generation %u, the serving one is %u", s,
                  sup.workers[sl->current].generation, sup.generation);
        /* a reload starts a worker in every slot that is not being removed */
        if (sup.ops.reload)
            CHECK(reloadable(sl->state) == (sl->next >= 0), "reloading: slot %d is %s, next %d", s,
                  ps__slot_state_name(sl->state), sl->next);
        else
            CHECK(sl->next < 0, "slot %d has a next worker, no reload in flight", s);
        if (sl->next >= 0)
            CHECK(sup.workers[sl->next].generation == sup.next_generation,
                  "slot %d: next worker of generation %u, reloading to %u", s,
                  sup.workers[sl->next].generation, sup.next_generation);
        for (i = 0; i < 2; i++) {
            int idx = i ? sl->next : sl->current;
            if (idx < 0)
                continue;
            CHECK(!refd[idx], "worker %d is referenced by two slots (or twice)", idx);
            refd[idx] = 1;
        }
    }
    for (s = sup.nslots; s < hiwater; s++)
        CHECK(sup.slots[s].state == SL_CLOSED && sup.slots[s].current < 0 && sup.slots[s].next < 0,
              "slot %d beyond the %d that exist is %s", s, sup.nslots,
              ps__slot_state_name(sup.slots[s].state));
    check_workers(refd);
    check_queue();
    for (s = 0; s < sup.nslots && sup.slots[s].state == SL_READY; s++)
        ;
    CHECK(s < sup.nslots || sup.told_ready, "every slot is ready, systemd was not told");
    if (ps__stopping(&sup))
        for (i = 0; i < sup.nworkers; i++)
            CHECK(!sup.workers[i].pid || sup.workers[i].state == W_DRAINING ||
                      sup.workers[i].state == W_KILLED,
                  "stopping, but worker %d is %s", i, ps__worker_state_name(sup.workers[i].state));
    check_groups(0);
    sd_drain();
    CHECK(sup.ops.reloads_ok + sup.ops.reloads_failed + (unsigned)sup.ops.reload == sd.reloads,
          "%u reloads started, %u done, %u rolled back, %d in flight", sd.reloads,
          sup.ops.reloads_ok, sup.ops.reloads_failed, sup.ops.reload);
    CHECK(!sup.told_ready || sd.readies, "told_ready, but systemd never heard READY=1");
    /* a reload that ended (either way) told systemd it is ready again */
    CHECK(sup.ops.reload || !sup.told_ready || ps__stopping(&sup) || !sd.reloading,
          "the reload ended, systemd was not told READY=1");
}

#define RETIRE_GRACE_MS 500 /* supervisor.c's: a retiring slot's queue is looked at after it */

/* After the timers ran, nothing they act on is due any more. */
static void check_nothing_due(unsigned failed_spawns_before)
{
    uint64_t now = clock_ms;
    unsigned grace =
        cfg.drain_timeout_ms < RETIRE_GRACE_MS ? cfg.drain_timeout_ms : RETIRE_GRACE_MS;
    int i;

    CHECK(sup.life.state != PS_LIFE_LAMEDUCK || now < sup.life.lameduck_until,
          "the lame duck is over for %llu ms and nothing drains",
          (unsigned long long)(now - sup.life.lameduck_until));
    for (i = 0; i < sup.nworkers; i++) {
        const struct ps_worker *w = &sup.workers[i];
        if (!w->pid)
            continue;
        CHECK(w->state == W_READY || now < w->deadline_ms,
              "worker %d (%s) is past its deadline after the timers ran", i,
              ps__worker_state_name(w->state));
        CHECK(w->state != W_STARTING || !cfg.ready_delay_ms ||
                  now - w->started_ms < cfg.ready_delay_ms,
              "worker %d alive for --ready-delay, still starting", i);
        CHECK(w->state != W_READY || !cfg.watchdog_ms || now - w->ping_ms < cfg.watchdog_ms,
              "worker %d missed its watchdog, still ready", i);
        CHECK(!ps__stopping(&sup) || now < sup.life.stop_deadline || w->state == W_KILLED,
              "stopped %llu ms ago, worker %d is still %s",
              (unsigned long long)(now - sup.life.stop_deadline), i,
              ps__worker_state_name(w->state));
    }
    for (i = 0; i < sup.nslots; i++) {
        const struct ps_slot *sl = &sup.slots[i];
        CHECK(sl->state != SL_BACKOFF || ps__stopping(&sup) || sl->next >= 0 ||
                  now < sl->backoff_until || fake.failed_spawns > failed_spawns_before,
              "slot %d's back-off is over, it did not start", i);
        /* the test's sockets get no connections: their queues are empty */
        CHECK(sl->state != SL_RETIRING || now - sl->retire_since < grace,
              "slot %d retiring for %llu ms with an empty queue", i,
              (unsigned long long)(now - sl->retire_since));
    }
    CHECK(now - sup.checked_ms < 1000, "the sockets were not checked for a second");
    if (sup.nslots > sup.target && sup.slots[sup.nslots - 1].state == SL_CLOSING) {
        int left = 0;
        for (i = 0; i < sup.nworkers; i++)
            left += sup.workers[i].pid && sup.workers[i].slot == sup.nslots - 1;
        CHECK(left, "slot %d is closing with no worker left, not closed", sup.nslots - 1);
    }
}

static void timers(void)
{
    unsigned failed = fake.failed_spawns;

    ps__sup_run_timers(&sup);
    check_nothing_due(failed);
}

/* ---- driving the table directly ------------------------------------------------- */

static void mark_ready(struct ps_worker *w)
{
    /* what the notify handler does before EV_READY */
    w->state = W_READY;
    w->ready_ms = w->ping_ms = fake_now();
}

static enum ps_slot_state fire(int s, enum ps_slot_event ev)
{
    return ps__slot_event(&sup, s, ev, 0, NULL);
}

static void fire_expect(int s, enum ps_slot_event ev, enum ps_slot_state want)
{
    enum ps_slot_state got = fire(s, ev);

    if (got != want || sup.slots[s].state != want)
        fail_msg("slot %d --%s--> %s, expected %s", s, ps__slot_event_name(ev),
                 ps__slot_state_name(got), ps__slot_state_name(want));
}

static void start_ready(int s)
{
    fire_expect(s, EV_START, SL_STARTING);
    mark_ready(&sup.workers[sup.slots[s].current]);
    fire_expect(s, EV_READY, SL_READY);
}

/* How the subject slot's worker is when the event comes. */
enum variant {
    V_PLAIN,           /* the state's only condition */
    V_STARTING_WORKER, /* retiring: its worker is not ready yet */
    V_READY_WORKER,    /* retiring: its worker serves */
    V_OLD_WORKER,      /* retiring: its worker is of a generation a reload replaced */
    V_NO_WORKER,       /* closing: it was backing off when retired */
    V_DRAINING_WORKER, /* closing: its old worker is still draining */
    V_COUNT
};

static const char *const variant_names[V_COUNT] = {
    "plain", "starting worker", "ready worker", "old worker", "no worker", "draining worker",
};

static int variant_of(enum ps_slot_state st, enum variant v)
{
    switch (st) {
    case SL_RETIRING:
        return v == V_STARTING_WORKER || v == V_READY_WORKER || v == V_OLD_WORKER;
    case SL_CLOSING:
        return v == V_NO_WORKER || v == V_DRAINING_WORKER;
    default:
        return v == V_PLAIN;
    }
}

#define SUBJECT 1 /* the slot under test; slot 0 serves throughout, untouched */

/* Two slots; slot 0 ready; the subject brought to st the way the loop does. */
static void pair_setup(enum ps_slot_state st, enum variant v)
{
    struct machine_opts o = {.workers = 2, .drain_signal = DRAIN_SIG, .watchdog_ms = 1000};
    struct ps_slot *sl = &sup.slots[SUBJECT];

    machine_init(&o);
    start_ready(0);
    switch (st) {
    case SL_BACKOFF:
        break;
    case SL_STARTING:
        fire_expect(SUBJECT, EV_START, SL_STARTING);
        break;
    case SL_READY:
        start_ready(SUBJECT);
        break;
    case SL_RETIRING:
        if (v == V_STARTING_WORKER)
            fire_expect(SUBJECT, EV_START, SL_STARTING);
        else
            start_ready(SUBJECT);
        sup.target = SUBJECT; /* a scale-down to one */
        fire_expect(SUBJECT, EV_RETIRE, SL_RETIRING);
        if (v == V_OLD_WORKER) /* a reload committed while it was retiring */
            sup.generation = sup.next_generation = 2;
        break;
    case SL_CLOSING:
        sup.target = SUBJECT;
        if (v == V_NO_WORKER) {
            fire_expect(SUBJECT, EV_RETIRE, SL_CLOSING);
        } else {
            start_ready(SUBJECT);
            fire_expect(SUBJECT, EV_RETIRE, SL_RETIRING);
            fire_expect(SUBJECT, EV_QUEUE_EMPTY, SL_CLOSING);
        }
        break;
    case SL_STOPPING:
        start_ready(SUBJECT);
        sup.life.state = PS_LIFE_STOPPING;
        fire_expect(SUBJECT, EV_STOP, SL_STOPPING);
        break;
    case SL_CLOSED:
        sup.target = SUBJECT;
        fire_expect(SUBJECT, EV_RETIRE, SL_CLOSING);
        ps__sup_close_retired(&sup);
        assert_int_equal(sl->state, SL_CLOSED);
        assert_int_equal(sup.nslots, 1);
        break;
    case SL_STALLED: /* stall.c fires EV_STALL from the socket's queue */
        start_ready(SUBJECT);
        fire_expect(SUBJECT, EV_STALL, SL_STALLED);
        break;
    case SL_STATE_COUNT:
        break;
    }
    assert_int_equal(sl->state, st);
    check_slot(SUBJECT);
    check_slot(0);
}

/* An event that concerns the slot's worker needs it in the matching
 * condition; with no worker the loop never sends it (and the row must say
 * so, test_table_shape). */
static int consistent(enum ps_slot_event ev, const struct ps_worker *w)
{
    switch (ev) {
    case EV_READY:
    case EV_READY_LATE:
        return !w || w->state == W_STARTING;
    case EV_WATCHDOG:
    case EV_STALL:
    case EV_RESUME:
        return !w || w->state == W_READY;
    default:
        return 1;
    }
}

static int is_no(const struct ps_slot_transition *t)
{
    return t->action == A_NONE;
}

struct snap {
    struct ps_slot sl[2];
    struct ps_worker workers[8];
    int nworkers, nslots, target;
    unsigned spawns;
};

static void take(struct snap *sn)
{
    memcpy(sn->sl, sup.slots, sizeof(sn->sl));
    memcpy(sn->workers, sup.workers, sizeof(sn->workers));
    sn->nworkers = sup.nworkers;
    sn->nslots = sup.nslots;
    sn->target = sup.target;
    sn->spawns = fake.spawns;
}

static void expect_one_signal(int worker, int sig)
{
    assert_int_equal(fake.ncalls, 1);
    assert_int_equal(fake.calls[0].kind, CALL_SIGNAL);
    assert_int_equal(fake.calls[0].worker, worker);
    assert_int_equal(fake.calls[0].sig, sig);
}

static void expect_drained(int worker, uint64_t t0, uint64_t t1, unsigned timeout)
{
    const struct ps_worker *w = &sup.workers[worker];

    assert_true(w->pid != 0); /* draining, not gone */
    assert_int_equal(w->state, W_DRAINING);
    assert_true(w->deadline_ms >= t0 + timeout && w->deadline_ms <= t1 + timeout);
}

/* One run of a row: what was there before the event, and when. */
struct pair_run {
    const struct ps_slot_transition *t;
    enum variant v;
    enum ps_slot_state want;
    int cur, nxt, status; /* the slot's worker and next worker before, -1: none */
    struct snap before;
    uint64_t t0, t1;
};

/* What the row's action did to the slot, its worker and the world. */
static void expect_action(const struct pair_run *r)
{
    const struct ps_slot_transition *t = r->t;
    const struct snap *b = &r->before;
    struct ps_slot *sl = &sup.slots[SUBJECT];
    int cur = r->cur, nxt = r->nxt, status = r->status;
    enum ps_slot_state want = r->want;
    enum variant v = r->v;
    uint64_t t0 = r->t0, t1 = r->t1;

    assert_int_equal(sl->lost, b->sl[1].lost + (t->action == A_REVIVE));
    switch (t->action) {
    case A_NONE: /* not run here: is_no() */
    case A_IGNORE:
        assert_int_equal(sl->current, cur);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_SPAWN:
        assert_int_equal(fake.spawns, b->spawns + 1);
        assert_true(sl->current >= 0);
        assert_int_equal(sup.workers[sl->current].slot, SUBJECT);
        assert_int_equal(sup.workers[sl->current].generation, sup.generation);
        assert_int_equal(sup.workers[sl->current].state, W_STARTING);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_READY:
        assert_int_equal(sl->current, cur);
        assert_int_equal(sup.workers[cur].state, W_READY);
        assert_int_equal(fake.ncalls, 0);
        assert_true(sup.steer.dirty);
        break;
    case A_RELEASE: {
        /* it leaves by itself, not signalled, the slot's leaving worker:
         * replaced at once when it had served for a while or is the first
         * quick failure in a row (remembered, not a restart), else counted
         * and backed off as a quick exit */
        const struct ps_worker *lw = &b->workers[cur];
        int quick = !(t0 - lw->started_ms >= 10000 || (lw->ready_ms && t0 - lw->ready_ms >= 1000));
        int counted = quick && b->sl[1].crashes > 0;
        assert_int_equal(sl->current, -1);
        assert_true(sup.workers[cur].pid && sup.workers[cur].state == W_DRAINING);
        assert_int_equal(sl->leaving, cur);
        assert_int_equal(sl->restarts, b->sl[1].restarts + counted);
        assert_int_equal(sl->crashes, counted ? b->sl[1].crashes + 1 : (unsigned)quick);
        if (!counted)
            assert_int_equal(sl->backoff_until, 0);
        else
            assert_true(sl->backoff_until >= t0 && sl->backoff_until <= t1 + 30000);
        assert_int_equal(fake.ncalls, 0);
        break;
    }
    case A_CRASH:
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->restarts, b->sl[1].restarts + 1);
        assert_int_equal(sl->crashes, b->sl[1].crashes + 1);
        assert_int_equal(sl->last_exit, status);
        assert_true(sl->backoff_until >= t0 && sl->backoff_until <= t1); /* first: at once */
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_LATE:
        assert_int_equal(sl->current, -1);
        expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
        expect_one_signal(cur, DRAIN_SIG);
        assert_int_equal(sl->restarts, b->sl[1].restarts + (want == SL_BACKOFF));
        assert_int_equal(sl->crashes, b->sl[1].crashes + (want == SL_BACKOFF));
        break;
    case A_ABORT:
        assert_int_equal(sl->current, -1);
        expect_drained(cur, t0, t1, 2000); /* SIGKILL 2 s after the SIGABRT */
        expect_one_signal(cur, SIGABRT);
        assert_int_equal(sl->restarts, b->sl[1].restarts + (want == SL_BACKOFF));
        if (want == SL_BACKOFF)
            assert_int_equal(sl->last_exit, SIGABRT);
        break;
    case A_RETIRE:
        assert_int_equal(sl->current, cur);
        assert_true(sl->retire_since >= t0 && sl->retire_since <= t1);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_KEEP:
        if (want == SL_BACKOFF) {
            /* an old generation's worker is replaced; a draining one is left alone */
            assert_int_equal(sl->current, -1);
            assert_int_equal(sl->backoff_until, 0);
            if (v == V_OLD_WORKER) {
                expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
                expect_one_signal(cur, DRAIN_SIG);
            } else {
                assert_int_equal(fake.ncalls, 0);
            }
        } else {
            assert_int_equal(sl->current, cur);
            assert_int_equal(fake.ncalls, 0);
        }
        break;
    case A_DRAIN:
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->restarts, b->sl[1].restarts);
        if (cur >= 0) {
            expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
            expect_one_signal(cur, DRAIN_SIG);
        } else {
            assert_int_equal(fake.ncalls, 0);
        }
        break;
    case A_LOSE:
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->restarts, b->sl[1].restarts);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_SWAP:
        assert_true(nxt >= 0);
        assert_int_equal(sl->current, nxt);
        assert_int_equal(sl->next, -1);
        assert_int_equal(sl->crashes, 0);
        if (cur >= 0) {
            expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
            expect_one_signal(cur, DRAIN_SIG);
        } else {
            assert_int_equal(fake.ncalls, 0);
        }
        break;
    case A_REVIVE:
        assert_int_equal(sl->current, cur);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_HANDOVER:
        /* A_DRAIN, after shutting the sockets down under eBPF (no groups
         * here: nothing to shut down) */
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->restarts, b->sl[1].restarts);
        expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
        expect_one_signal(cur, DRAIN_SIG);
        break;
    case A_STALL:
        /* steered away from; its worker stays, untouched */
        assert_int_equal(sl->current, cur);
        assert_int_equal(sl->stalls, b->sl[1].stalls + 1);
        assert_true(sl->stalled_at >= t0 && sl->stalled_at <= t1);
        assert_true(sup.steer.dirty);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_RESUME:
        assert_int_equal(sl->current, cur);
        assert_int_equal(sl->stalls, b->sl[1].stalls);
        assert_true(sup.steer.dirty);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_RESCUE:
        /* a fresh worker at once; the stalled one drains (killed after the
         * drain timeout), counted as a restart, not as a crash */
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->rescues, b->sl[1].rescues + 1);
        assert_int_equal(sl->restarts, b->sl[1].restarts + 1);
        assert_int_equal(sl->crashes, b->sl[1].crashes);
        assert_int_equal(sl->backoff_until, 0);
        expect_drained(cur, t0, t1, cfg.drain_timeout_ms);
        expect_one_signal(cur, DRAIN_SIG);
        assert_int_equal(sl->leaving, cur);
        break;
    case A_OPEN:
        /* a fresh slot: nothing of its past, its start due at once */
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->next, -1);
        assert_int_equal(sl->leaving, -1);
        assert_int_equal(sl->restarts, 0);
        assert_int_equal(sl->crashes, 0);
        assert_int_equal(sl->backoff_until, 0);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_CLOSE:
        /* the last slot's socket closes: one slot less */
        assert_int_equal(sup.nslots, b->nslots - 1);
        assert_int_equal(sl->current, -1);
        assert_int_equal(fake.ncalls, 0);
        break;
    case A_COUNT:
        fail_msg("row with action A_COUNT");
    }
}

/* One row, one variant: returns 1 when it ran (the variant fits the event). */
static int run_pair(enum ps_slot_state st, enum ps_slot_event ev, enum variant v)
{
    struct pair_run r = {.t = &ps__slot_table[st][ev], .v = v, .status = 3 << 8};
    struct ps_slot *sl = &sup.slots[SUBJECT];
    struct snap *before = &r.before;
    enum ps_slot_state got;
    int guarded;

    pair_setup(st, v);
    r.cur = sl->current;
    /* a row whose guard says no now: the event means nothing */
    guarded = !is_no(r.t) && !ps__slot_can(&sup, SUBJECT, ev);
    if (!is_no(r.t) && !consistent(ev, r.cur >= 0 ? &sup.workers[r.cur] : NULL))
        return 0;
    if (ev == EV_REPLACE && reloadable(st)) {
        /* a reload: the next generation's worker of the slot is ready, and
         * commit() has made its generation the serving one */
        sup.next_generation = 2;
        r.nxt = fake_spawn(&sup, SUBJECT, 2);
        assert_true(r.nxt >= 0);
        sl->next = r.nxt;
        mark_ready(&sup.workers[r.nxt]);
        sup.generation = 2;
        sl->crashes = 2; /* a reload resets the crash count */
    }
    r.nxt = sl->next;
    /* the caller's part: what it learnt about the worker, before the event */
    if (r.cur >= 0 && ev == EV_READY && sup.workers[r.cur].state == W_STARTING)
        mark_ready(&sup.workers[r.cur]);
    if (r.cur >= 0 && ev == EV_STOPPING)
        sup.workers[r.cur].state = W_DRAINING;
    take(before);
    fake_calls_reset();
    r.t0 = fake_now();
    got = ps__slot_event(&sup, SUBJECT, ev, ev == EV_EXIT ? r.status : 0, NULL); /* exit code 3 */
    r.t1 = fake_now();
    if (ev == EV_EXIT && r.cur >= 0)
        sup.workers[r.cur].pid = 0; /* the reaper frees the entry after the event */

    r.want = is_no(r.t) || guarded || r.t->next == SL_STATE_COUNT ? st : r.t->next;
    if (r.t->action == A_KEEP && !guarded) /* the row's alternatives */
        r.want = st == SL_CLOSING || v == V_OLD_WORKER ? r.t->alt2
                 : v == V_STARTING_WORKER              ? r.t->alt
                                                       : r.t->next;
    if (got != r.want || sl->state != r.want)
        fail_msg("%s --%s--> %s (%s), the table says %s", ps__slot_state_name(st),
                 ps__slot_event_name(ev), ps__slot_state_name(got), variant_names[v],
                 ps__slot_state_name(r.want));
    /* the other slot is none of its business */
    assert_memory_equal(&sup.slots[0], &before->sl[0], sizeof(before->sl[0]));
    assert_memory_equal(&sup.workers[sup.slots[0].current], &before->workers[before->sl[0].current],
                        sizeof(struct ps_worker));
    if (is_no(r.t) || guarded) {
        /* nothing at all happens */
        assert_memory_equal(sl, &before->sl[1], sizeof(*sl));
        if (ev != EV_EXIT)
            assert_memory_equal(sup.workers, before->workers, sizeof(before->workers));
        assert_int_equal(fake.ncalls, 0);
        assert_int_equal(fake.spawns, before->spawns);
        return 1;
    }
    expect_action(&r);
    if (r.t->action == A_OPEN) /* beyond nslots until the scale-up counts it */
        return 1;
    check_slot(SUBJECT);
    check_status();
    return 1;
}

static void test_every_row(void **state)
{
    int st, ev, v, runs, pairs = 0, total = 0;

    (void)state;
    for (st = 0; st < SL_STATE_COUNT; st++)
        for (ev = 0; ev < EV_COUNT; ev++) {
            runs = 0;
            for (v = 0; v < V_COUNT; v++)
                if (variant_of(st, v))
                    runs += run_pair(st, ev, v);
            if (!runs)
                fail_msg("%s x %s: no condition of the slot fits the event",
                         ps__slot_state_name(st), ps__slot_event_name(ev));
            pairs++;
            total += runs;
            machine_close();
        }
    assert_int_equal(pairs, SL_STATE_COUNT * EV_COUNT);
    print_message("  %d state x event pairs, %d runs with the slot's worker conditions\n", pairs,
                  total);
}

/* Rules the table must follow, whatever its rows say exactly. */
static void test_table_shape(void **state)
{
    int st, ev;

    (void)state;
    for (st = 0; st < SL_STATE_COUNT; st++)
        for (ev = 0; ev < EV_COUNT; ev++) {
            const struct ps_slot_transition *t = &ps__slot_table[st][ev];
            assert_true(t->action < A_COUNT);
            assert_true(t->next <= SL_STATE_COUNT);
            assert_true(t->next < SL_STATE_COUNT || is_no(t));
            /* stopping and closed are the end */
            if (st == SL_STOPPING || (st == SL_CLOSED && ev != EV_OPEN))
                assert_true(is_no(t));
            /* a slot comes into existence and goes only by its events */
            assert_true((t->action == A_OPEN) == (st == SL_CLOSED && ev == EV_OPEN));
            assert_true((t->action == A_CLOSE) == (st == SL_CLOSING && ev == EV_CLOSE));
            /* a slot without a worker hears nothing from one */
            if ((st == SL_BACKOFF || st == SL_CLOSING || st == SL_STOPPING || st == SL_CLOSED) &&
                (ev == EV_READY || ev == EV_STOPPING || ev == EV_EXIT || ev == EV_READY_LATE ||
                 ev == EV_WATCHDOG || ev == EV_STALL || ev == EV_RESUME))
                assert_true(is_no(t));
            /* a worker that leaves, by any way, is never kept as the slot's */
            if (!is_no(t) &&
                (ev == EV_STOPPING || ev == EV_EXIT || ev == EV_READY_LATE || ev == EV_WATCHDOG))
                assert_true(t->action == A_RELEASE || t->action == A_CRASH || t->action == A_LATE ||
                            t->action == A_ABORT || t->action == A_LOSE || t->action == A_DRAIN);
        }
    /* stop reaches every live state */
    for (st = 0; st < SL_STOPPING; st++)
        assert_int_equal(ps__slot_table[st][EV_STOP].next, SL_STOPPING);
    assert_int_equal(ps__slot_table[SL_STALLED][EV_STOP].next, SL_STOPPING);
    /* the only way to start a worker is the back-off's end */
    for (st = 0; st < SL_STATE_COUNT; st++)
        for (ev = 0; ev < EV_COUNT; ev++)
            assert_true((ps__slot_table[st][ev].action == A_SPAWN) ==
                        (st == SL_BACKOFF && ev == EV_START));
}

/* Every row of the worker's table (worker.c), and every pair without one:
 * the state it moves to and what it does to the world. */
static void test_worker_rows(void **state)
{
    static const int want[W_STATE_COUNT][WE_COUNT] = {
        /* READY, STOPPING, DRAIN, ABORT, KILL, LINGER; -1: no row */
        [W_STARTING] = {W_READY, W_DRAINING, W_DRAINING, W_DRAINING, W_KILLED, -1},
        [W_READY] = {-1, W_DRAINING, W_DRAINING, W_DRAINING, W_KILLED, W_LINGERING},
        [W_LINGERING] = {-1, W_DRAINING, W_DRAINING, W_DRAINING, W_KILLED, -1},
        [W_DRAINING] = {-1, -1, -1, W_DRAINING, W_KILLED, -1},
        [W_KILLED] = {-1, -1, -1, -1, W_KILLED, -1},
    };
    struct machine_opts o = {.workers = 1, .drain_signal = DRAIN_SIG};
    struct ps_worker *w;
    int st, ev, idx, moved;

    (void)state;
    for (st = 0; st < W_STATE_COUNT; st++)
        for (ev = 0; ev < WE_COUNT; ev++) {
            machine_init(&o);
            idx = fake_spawn(&sup, 0, 1);
            assert_true(idx >= 0);
            w = &sup.workers[idx];
            w->state = (enum ps_worker_state)st;
            w->deadline_ms = w->ready_ms = 0;
            fake_calls_reset();
            assert_int_equal(ps__worker_can(w, ev), want[st][ev] >= 0);
            moved = ps__worker_step(&sup, w, (enum ps_worker_event)ev, "test");
            assert_int_equal(moved, want[st][ev] >= 0);
            if (!moved) {
                assert_int_equal(w->state, st);
                assert_int_equal(fake.ncalls, 0);
                continue;
            }
            assert_int_equal(w->state, want[st][ev]);
            switch (ev) {
            case WE_READY:
                assert_int_equal(w->ready_ms, clock_ms);
                assert_int_equal(fake.ncalls, 0);
                break;
            case WE_STOPPING: /* it goes by itself: no signal, a deadline */
                assert_int_equal(fake.ncalls, 0);
                assert_int_equal(w->deadline_ms, clock_ms + cfg.drain_timeout_ms);
                break;
            case WE_DRAIN:
                expect_one_signal(idx, DRAIN_SIG);
                assert_int_equal(w->deadline_ms, clock_ms + cfg.drain_timeout_ms);
                break;
            case WE_ABORT:
                expect_one_signal(idx, SIGABRT);
                assert_int_equal(w->deadline_ms, clock_ms + 2000);
                break;
            case WE_KILL:
                assert_int_equal(fake.ncalls, 1);
                assert_int_equal(fake.calls[0].kind, CALL_KILL_TREE);
                assert_int_equal(w->deadline_ms, clock_ms + 5000);
                break;
            case WE_LINGER: /* no signal while its flows live; --flow-linger bounds it */
                assert_int_equal(fake.ncalls, 0);
                assert_int_equal(w->deadline_ms, clock_ms + cfg.flow_linger_ms);
                break;
            }
            w->pid = 0;
            machine_close();
        }
    /* a free entry hears nothing */
    machine_init(&o);
    idx = fake_spawn(&sup, 0, 1);
    sup.workers[idx].pid = 0;
    assert_int_equal(ps__worker_step(&sup, &sup.workers[idx], WE_KILL, "test"), 0);
    machine_close();
}

static void test_names(void **state)
{
    int i, j;

    (void)state;
    for (i = 0; i < SL_STATE_COUNT; i++) {
        assert_string_not_equal(ps__slot_state_name(i), "?");
        for (j = 0; j < i; j++)
            assert_string_not_equal(ps__slot_state_name(i), ps__slot_state_name(j));
    }
    for (i = 0; i < EV_COUNT; i++) {
        assert_string_not_equal(ps__slot_event_name(i), "?");
        for (j = 0; j < i; j++)
            assert_string_not_equal(ps__slot_event_name(i), ps__slot_event_name(j));
    }
    for (i = 0; i < W_STATE_COUNT; i++)
        assert_string_not_equal(ps__worker_state_name(i), "?");
    assert_string_equal(ps__slot_state_name(SL_STATE_COUNT), "?");
    assert_string_equal(ps__slot_event_name(EV_COUNT), "?");
    assert_string_equal(ps__worker_state_name(W_STATE_COUNT), "?");
}

/* The alternative of A_SPAWN: a start that fails backs off, longer and
 * longer (0, 100 ms, 200 ms ... 30 s), and says why. */
static void test_start_fails(void **state)
{
    static const unsigned delays[] = {0,    100,  200,   400,   800,   1600,
                                      3200, 6400, 12800, 25600, 30000, 30000};
    struct machine_opts o = {.workers = 2};
    struct ps_slot *sl = &sup.slots[1];
    uint64_t t0, t1;
    size_t k;

    (void)state;
    machine_init(&o);
    start_ready(0);
    for (k = 0; k < PS__ARRAY_LEN(delays); k++) {
        fake.fail = 1;
        fake.fail_errno = k % 2 ? EAGAIN : ENOEXEC;
        t0 = fake_now();
        fire_expect(1, EV_START, SL_BACKOFF);
        t1 = fake_now();
        assert_int_equal(sup.spawn_error, -fake.fail_errno);
        assert_int_equal(sl->current, -1);
        assert_int_equal(sl->restarts, k + 1);
        assert_int_equal(sl->crashes, k + 1);
        assert_int_equal(sl->last_exit, 127 << 8);
        assert_true(sl->backoff_until >= t0 + delays[k] && sl->backoff_until <= t1 + delays[k]);
        check_slot(1);
    }
    assert_int_equal(fake.spawns, 1); /* slot 0's */
    assert_int_equal(fake.failed_spawns, PS__ARRAY_LEN(delays));
    /* the next start works: a worker that then served for a second and
     * exits is not part of the crash loop any more */
    fire_expect(1, EV_START, SL_STARTING);
    mark_ready(&sup.workers[sl->current]);
    sup.workers[sl->current].ready_ms -= 1500;
    fire_expect(1, EV_READY, SL_READY);
    t0 = fake_now();
    fire_expect(1, EV_EXIT, SL_BACKOFF);
    assert_int_equal(sl->crashes, 1);
    assert_true(sl->backoff_until >= t0 && sl->backoff_until <= fake_now());
    machine_close();
}

/* The default drain signal is SIGTERM. */
static void test_default_drain_signal(void **state)
{
    struct machine_opts o = {.workers = 1};
    int w;

    (void)state;
    machine_init(&o);
    start_ready(0);
    w = sup.slots[0].current;
    fake_calls_reset();
    sup.life.state = PS_LIFE_STOPPING;
    fire_expect(0, EV_STOP, SL_STOPPING);
    expect_one_signal(w, SIGTERM);
    machine_close();
}

/* ---- operations through the real control socket ------------------------------ */

/* One turn of the loop's control side; nothing blocks (all is local). */
static void control_turn(void)
{
    struct pollfd pfd[PS_CONN_POLL_MAX];
    int n = ps__conns_poll_fill(&sup, pfd, clock_ms), r;

    r = poll(pfd, (nfds_t)n, 0);
    ps__conns_poll_done(&sup, pfd, r > 0 ? n : 0, clock_ms);
}

/* A client that sends one command line; the loop takes it in (accept, then
 * read) and runs the queue, as it does after every wakeup. */
static int client(const char *command)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char line[64];
    int fd, n;

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", cfg.control_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    n = snprintf(line, sizeof(line), "%s\n", command);
    assert_int_equal(send(fd, line, (size_t)n, MSG_NOSIGNAL), n);
    control_turn();
    control_turn();
    ps__op_run_queue(&sup);
    return fd;
}

/* The whole answer (the supervisor closes after it), or "" when none yet. */
static const char *answer_of(int fd)
{
    static char buf[4096];
    size_t len = 0;
    ssize_t n;

    for (;;) {
        n = recv(fd, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN && len == 0)
            return "";
        assert_true(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void expect_no_answer(int fd)
{
    char c;

    assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
}

/* Operations that meet are queued or merged by rule, and each requester is
 * told the outcome of the operation it asked for (docs/DESIGN.md, "The supervisor"; ops.c):
 * here through the real control socket, with clients that are sockets of
 * this test and workers that are not processes. */
static void test_each_requester_gets_its_own_outcome(void **state)
{
    struct machine_opts o = {.workers = 1};
    char dir[64], err[256] = "", want[256];
    int a, b, c, d, e, i;
    pid_t pid;

    (void)state;
    make_temp_dir(dir, sizeof(dir));
    machine_init(&o);
    snprintf(cfg.control_path, sizeof(cfg.control_path), "%s/control.sock", dir);
    assert_int_equal(ps__control_open(&sup, err, sizeof(err)), 0);
    start_ready(0);

    a = client("reload"); /* runs at once: generation 2 starts */
    assert_true(sup.ops.reload);
    b = client("reload");  /* queued behind it */
    c = client("reload");  /* merged into b's */
    d = client("scale 2"); /* queued behind that */
    assert_int_equal(sup.ops.nqueued, 2);
    assert_int_equal(sup.ops.queue[0].nwaiters, 2);
    e = client("status");
    assert_non_null(strstr(answer_of(e), "\n0     "));

    ps__worker_ready(&sup, &sup.workers[sup.slots[0].next], "READY=1");
    assert_string_equal(answer_of(a), "ok\ngeneration 2 is serving\n");
    expect_no_answer(b);
    ps__op_run_queue(&sup); /* b's and c's reload: generation 3 */
    assert_true(sup.ops.reload);
    assert_int_equal(sup.next_generation, 3);
    expect_no_answer(b);
    expect_no_answer(c);
    expect_no_answer(d);

    pid = sup.workers[sup.slots[0].next].pid;
    ps__worker_exited(&sup, &sup.workers[sup.slots[0].next], 1 << 8);
    snprintf(want, sizeof(want),
             "error\nreload to generation 3 rolled back: new worker %ld of slot 0 exited with "
             "exit code 1; generation 2 keeps serving\n",
             (long)pid);
    assert_string_equal(answer_of(b), want);
    assert_string_equal(answer_of(c), want);
    expect_no_answer(d);
    ps__op_run_queue(&sup);
    assert_string_equal(answer_of(d), "ok\nscaling to 2 workers\n");
    assert_int_equal(sup.target, 2);

    /* a stop is answered when everything is gone */
    e = client("stop");
    assert_true(ps__stopping(&sup));
    a = client("reload");
    assert_string_equal(answer_of(a), "error\nthe supervisor is stopping\n");
    expect_no_answer(e);
    for (i = 0; i < sup.nworkers; i++)
        if (sup.workers[i].pid)
            ps__worker_exited(&sup, &sup.workers[i], 0);
    ps__life_finish(&sup);
    assert_string_equal(answer_of(e), "ok\nstopped\n");
    check_invariants();
    ps__control_close(&sup);
    rm_tree(dir);
    machine_close();
}

/* A held socket that stops listening (a worker's shutdown(2) on its copy)
 * is found by the once-a-second check, listens again, and its slots are
 * told (A_REVIVE): one slot for a reuseport socket, every slot for the
 * shared one. */
static void test_listener_revived(void **state)
{
    struct machine_opts o = {.workers = 3, .reuseport_groups = 1, .shared_group = 1};
    struct ps_group *rp = &sup.groups[0], *sh = &sup.groups[1];
    unsigned q, lim;
    int s;

    (void)state;
    machine_init(&o);
    timers(); /* every slot starts */
    ps__worker_ready(&sup, &sup.workers[sup.slots[0].current], "READY=1");
    for (s = 0; s < 3; s++)
        assert_int_equal(sup.slots[s].lost, 0);
    assert_int_equal(shutdown(rp->fds[1], SHUT_RDWR), 0);
    assert_int_not_equal(ps_listen_queue(rp->fds[1], &q, &lim), 0);
    clock_ms += 999;
    timers(); /* not checked yet */
    assert_int_equal(sup.slots[1].lost, 0);
    clock_ms += 1;
    timers();
    assert_int_equal(ps_listen_queue(rp->fds[1], &q, &lim), 0);
    assert_int_equal(rp->relistens, 1);
    assert_int_equal(sup.slots[0].lost, 0);
    assert_int_equal(sup.slots[1].lost, 1);
    assert_int_equal(sup.slots[2].lost, 0);
    assert_int_equal(sup.slots[0].state, SL_READY);
    assert_int_equal(sup.slots[1].state, SL_STARTING);

    assert_int_equal(shutdown(sh->fds[0], SHUT_RDWR), 0);
    clock_ms += 1000;
    timers();
    assert_int_equal(ps_listen_queue(sh->fds[0], &q, &lim), 0);
    assert_int_equal(sh->relistens, 1);
    for (s = 0; s < 3; s++)
        assert_int_equal(sup.slots[s].lost, 1 + (s == 1));
    check_invariants();
    check_status();
    machine_close();
}

/* ---- the supervisor's life and the reload: every row -------------------------- */

static uint64_t lameduck_left_ms(void)
{
    return sup.life.lameduck_until > clock_ms ? sup.life.lameduck_until - clock_ms : 0;
}

/* Each row of life.c's table, from each state it starts in. */
static void test_life_rows(void **state)
{
    struct machine_opts o = {.workers = 2};
    struct ps_waiter w = {0, 1};
    int i;

    (void)state;
    /* serving: lame duck for a while, then its end drains */
    machine_init(&o);
    start_ready(0);
    start_ready(1);
    assert_int_equal(ps__life_event(&sup, LIFE_LAMEDUCK_OVER, 0, NULL), 0); /* no row */
    assert_int_equal(ps__life_event(&sup, LIFE_LAMEDUCK, 3000, &w), 1);
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    assert_true(ps__lameduck(&sup));
    assert_int_equal(lameduck_left_ms(), 3000);
    assert_int_equal(sup.slots[0].state, SL_READY); /* the workers keep serving */
    /* asked again: joins, the earlier deadline stands */
    clock_ms += 1000;
    assert_int_equal(ps__life_event(&sup, LIFE_LAMEDUCK, 60000, NULL), 1);
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    assert_int_equal(lameduck_left_ms(), 2000);
    assert_int_equal(sup.life.nwaiters, 1);
    clock_ms += 2000;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    assert_true(ps__lameduck(&sup)); /* it stays said while stopping */
    assert_int_equal(sup.slots[0].state, SL_STOPPING);
    /* stopping: a lame duck only joins; the deadline kills */
    assert_int_equal(ps__life_event(&sup, LIFE_LAMEDUCK, 100, &w), 1);
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    assert_int_equal(sup.life.nwaiters, 2);
    clock_ms = sup.life.stop_deadline;
    timers();
    for (i = 0; i < sup.nworkers; i++)
        assert_true(!sup.workers[i].pid || sup.workers[i].state == W_KILLED);
    machine_close();

    /* serving: a lame duck of 0 ms is a stop; a stop during lame duck
     * starts the drain at once; a second stop kills */
    machine_init(&o);
    start_ready(0);
    assert_int_equal(ps__life_event(&sup, LIFE_LAMEDUCK, 0, NULL), 1);
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    assert_false(ps__lameduck(&sup));
    machine_close();
    machine_init(&o);
    start_ready(0);
    ps__life_event(&sup, LIFE_LAMEDUCK, 5000, NULL);
    assert_int_equal(ps__life_event(&sup, LIFE_STOP, 0, NULL), 1);
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    assert_int_equal(sup.life.lameduck_until, 0);
    assert_int_equal(sup.slots[0].state, SL_STOPPING);
    assert_int_equal(ps__life_event(&sup, LIFE_STOP, 0, NULL), 1);
    for (i = 0; i < sup.nworkers; i++)
        assert_true(!sup.workers[i].pid || sup.workers[i].state == W_KILLED);
    sd_drain(); /* STOPPING=1 once, nothing after it */
    assert_true(sd.stopping);
    machine_close();

    /* lame duck: the balancer has moved away (LIFE_QUIET) drains before
     * the time is up; serving or stopping it means nothing */
    machine_init(&o);
    start_ready(0);
    assert_int_equal(ps__life_event(&sup, LIFE_QUIET, 0, NULL), 0); /* no row */
    ps__life_event(&sup, LIFE_LAMEDUCK, 5000, &w);
    assert_int_equal(ps__life_event(&sup, LIFE_QUIET, 0, NULL), 1);
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    assert_int_equal(sup.life.lameduck_until, 0);
    assert_int_equal(sup.slots[0].state, SL_STOPPING);
    assert_true(ps__lameduck(&sup));
    assert_int_equal(ps__life_event(&sup, LIFE_QUIET, 0, NULL), 0); /* no row */
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    machine_close();
}

/* When the lame duck may end early: told twice, then three of those
 * intervals (at least 1 s) with every listener watched and nothing new. */
static void test_lameduck_quiet_due(void **state)
{
    uint64_t none[2] = {0, 0}, once[2] = {1000, 0}, t[2] = {1000, 1200}, slow[2] = {1000, 3000};

    (void)state;
    assert_true(ps__life_quiet_due(none, 500) == UINT64_MAX);
    assert_true(ps__life_quiet_due(once, 500) == UINT64_MAX);
    assert_true(ps__life_quiet_due(t, UINT64_MAX) == UINT64_MAX); /* not watched */
    assert_true(ps__life_quiet_due(t, 500) == 1000 + 1000);       /* from the first answer */
    assert_true(ps__life_quiet_due(t, 1500) == 1500 + 1000);      /* from the last connection */
    t[1] = 1010; /* two checks close together: at least 1 s */
    assert_true(ps__life_quiet_due(t, 500) == 1000 + 1000);
    assert_true(ps__life_quiet_due(slow, 500) == 1000 + 6000); /* three 2 s intervals */
    assert_true(ps__life_quiet_due(slow, 4000) == 4000 + 6000);
}

/* accept every connection queued in the machine's group g */
static int accept_all(int g)
{
    const struct ps_group *gr = &sup.groups[g];
    int i, fd, n = 0;

    for (i = 0; i < gr->nfds; i++) {
        struct pollfd p = {.fd = gr->fds[i], .events = POLLIN};
        while (poll(&p, 1, 0) == 1 && (fd = accept4(gr->fds[i], NULL, NULL, SOCK_CLOEXEC)) >= 0)
            close(fd), n++;
    }
    return n;
}

/* A real connection to the machine's group g; its fd. */
static int connect_group(int g)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd;

    assert_int_equal(getsockname(sup.groups[g].fds[0], (struct sockaddr *)&ss, &len), 0);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
    return fd;
}

/* The lame duck against real held sockets: a new connection in the quiet
 * period (a balancer that still sends) keeps it going; once none came for
 * the quiet period it drains before its time is up.  Untold, or with a
 * socket epoll cannot watch (shared), it lasts its whole time. */
static void test_lameduck_quiet(void **state)
{
    struct machine_opts o = {.workers = 2, .reuseport_groups = 1};
    struct pollfd p;
    int c, s;

    (void)state;
    machine_init(&o);
    for (s = 0; s < 2; s++)
        start_ready(s);
    timers();
    ps__life_event(&sup, LIFE_LAMEDUCK, 10000, NULL);
    timers(); /* every socket armed for new connections: watched from now */
    assert_true(ps__health_quiet_since(&sup) == clock_ms);
    ps__life_told(&sup); /* agent: "drain" */
    clock_ms += 200;
    ps__life_told(&sup); /* 200 ms later: the quiet period is 1 s (3 x 200 ms, at least 1 s) */
    clock_ms += 200;
    c = connect_group(0); /* the balancer has not moved away yet */
    p = (struct pollfd){.fd = ps__health_fd(&sup), .events = POLLIN};
    assert_int_equal(poll(&p, 1, 1000), 1);
    ps__health_read(&sup);
    assert_true(ps__health_quiet_since(&sup) == UINT64_MAX); /* unread: not known quiet */
    clock_ms += 700; /* past the quiet period, but the report is read first */
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    assert_true(ps__health_quiet_since(&sup) == UINT64_MAX);
    assert_true(ps__health_next(&sup) == clock_ms + 50); /* watched again then */
    assert_true(ps__life_deadline(&sup) == clock_ms + 50);
    assert_int_equal(accept_all(0), 1); /* a worker took it */
    close(c);
    clock_ms += 50;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    assert_true(ps__health_quiet_since(&sup) == clock_ms); /* watched again */
    assert_true(ps__life_deadline(&sup) == clock_ms + 1000);
    clock_ms += 999;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    clock_ms += 1;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING); /* 2.15 s of 10 */
    assert_int_equal(sup.slots[0].state, SL_STOPPING);
    machine_close();

    /* never told: the whole time */
    machine_init(&o);
    start_ready(0);
    ps__life_event(&sup, LIFE_LAMEDUCK, 3000, NULL);
    clock_ms += 2999;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    clock_ms += 1;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    machine_close();

    /* a shared socket: its new connections cannot be seen */
    o.shared_group = 1;
    machine_init(&o);
    start_ready(0);
    ps__life_event(&sup, LIFE_LAMEDUCK, 3000, NULL);
    timers();
    ps__life_told(&sup);
    clock_ms += 100;
    ps__life_told(&sup);
    clock_ms += 2899;
    timers();
    assert_true(ps__health_quiet_since(&sup) == UINT64_MAX);
    assert_int_equal(sup.life.state, PS_LIFE_LAMEDUCK);
    clock_ms += 1;
    timers();
    assert_int_equal(sup.life.state, PS_LIFE_STOPPING);
    machine_close();
}

/* Each row of ops.c's reload table. */
static void test_reload_rows(void **state)
{
    struct machine_opts o = {.workers = 2};
    char err[128];
    int n0, n1;

    (void)state;
    machine_init(&o);
    start_ready(0);
    start_ready(1);
    /* idle, start: a next worker in every slot */
    assert_int_equal(ps__op_request(&sup, OP_RELOAD, 0, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    assert_int_equal(sup.ops.reload, PS_RELOAD_STARTING);
    n0 = sup.slots[0].next, n1 = sup.slots[1].next;
    assert_true(n0 >= 0 && n1 >= 0);
    /* starting, one next ready: still starting; both: committed */
    ps__worker_ready(&sup, &sup.workers[n0], "test");
    assert_int_equal(sup.ops.reload, PS_RELOAD_STARTING);
    ps__worker_ready(&sup, &sup.workers[n1], "test");
    assert_int_equal(sup.ops.reload, PS_RELOAD_IDLE);
    assert_int_equal(sup.slots[0].current, n0);
    assert_int_equal(sup.slots[1].current, n1);
    assert_int_equal(sup.ops.reloads_ok, 1);
    assert_int_equal(sup.generation, sup.next_generation);
    /* starting, a next worker fails: rolled back, the other one drains */
    assert_int_equal(ps__op_request(&sup, OP_RELOAD, 0, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    n0 = sup.slots[0].next, n1 = sup.slots[1].next;
    ps__worker_exited(&sup, &sup.workers[n0], 1 << 8);
    assert_int_equal(sup.ops.reload, PS_RELOAD_IDLE);
    assert_int_equal(sup.ops.reloads_failed, 1);
    assert_int_equal(sup.slots[0].next, -1);
    assert_int_equal(sup.slots[1].next, -1);
    assert_int_equal(sup.workers[n1].state, W_DRAINING);
    assert_true(sup.ops.reload_error[0]);
    /* starting, cancelled (a stop): rolled back too, no READY=1 after it */
    assert_int_equal(ps__op_request(&sup, OP_RELOAD, 0, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    assert_int_equal(sup.ops.reload, PS_RELOAD_STARTING);
    ps__life_event(&sup, LIFE_STOP, 0, NULL);
    assert_int_equal(sup.ops.reload, PS_RELOAD_IDLE);
    assert_int_equal(sup.ops.reloads_failed, 2);
    sd_drain();
    machine_close();
}

/* ---- regressions: sequences the random run found ---------------------------- */

/* Seed 20240610, sequence 0: a stop while a reload is in flight rolls the
 * reload back, and the rollback told systemd READY=1 after the stop had
 * told it STOPPING=1. */
static void test_stop_during_reload_tells_systemd_nothing_after_stopping(void **state)
{
    struct machine_opts o = {.workers = 2};
    char err[128];
    int s;

    (void)state;
    machine_init(&o);
    start_ready(0);
    start_ready(1);
    assert_true(sup.told_ready);
    assert_int_equal(ps__op_request(&sup, OP_RELOAD, 0, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    assert_true(sup.ops.reload);
    ps__life_event(&sup, LIFE_STOP, 0, NULL);
    assert_false(sup.ops.reload);
    assert_int_equal(sup.ops.reloads_failed, 1);
    for (s = 0; s < 2; s++) {
        assert_int_equal(sup.slots[s].state, SL_STOPPING);
        assert_int_equal(sup.slots[s].next, -1);
    }
    sd_drain(); /* fails on READY=1 after STOPPING=1 */
    assert_true(sd.stopping);
    assert_int_equal(sd.reloads, 1);
    machine_close();
}

/* Seed 20240610 (with the test's clock): a scale request merged into a
 * queued scale whose waiters were full was refused ("too many clients
 * waiting"), but its count had replaced the queued one all the same. */
static void test_refused_scale_changes_nothing(void **state)
{
    struct machine_opts o = {.workers = 1};
    struct ps_waiter w = {0, 1};
    char err[128] = "";
    int i;

    (void)state;
    machine_init(&o);
    start_ready(0);
    for (i = 0; i < PS_OP_MAX_WAITERS; i++)
        assert_int_equal(ps__op_request(&sup, OP_SCALE, 2, &w, err, sizeof(err)), 0);
    assert_int_equal(sup.ops.nqueued, 1);
    assert_int_equal(sup.ops.queue[0].nwaiters, PS_OP_MAX_WAITERS);
    assert_int_equal(ps__op_request(&sup, OP_SCALE, 5, &w, err, sizeof(err)), -EBUSY);
    assert_string_equal(err, "too many clients waiting");
    assert_int_equal(sup.ops.queue[0].n, 2); /* refused: not applied */
    /* asked without a waiter (a signal): nobody to add, the count merges */
    assert_int_equal(ps__op_request(&sup, OP_SCALE, 4, NULL, err, sizeof(err)), 0);
    assert_int_equal(sup.ops.queue[0].n, 4);
    ps__op_run_queue(&sup);
    assert_int_equal(sup.target, 4);
    assert_int_equal(sup.ops.nqueued, 0);
    machine_close();
}

/* Seed 208, sequence 4: READY=1 was only told to systemd when a slot became
 * ready and found every other one ready too; a slot that was not ready and
 * went away (scaled down: closed) left the others all ready, and systemd
 * was never told.  Here the way out of a crash loop at startup: scale the
 * failing slot away. */
static void test_ready_told_when_the_last_unready_slot_closes(void **state)
{
    struct machine_opts o = {.workers = 3};
    char err[128];

    (void)state;
    machine_init(&o);
    start_ready(0);
    start_ready(1);
    fake.fail = 1;
    fake.fail_errno = ENOEXEC;
    fire_expect(2, EV_START, SL_BACKOFF); /* slot 2 cannot start */
    sd_drain();
    assert_false(sup.told_ready);
    assert_int_equal(sd.readies, 0);
    assert_int_equal(ps__op_request(&sup, OP_SCALE, 2, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    assert_int_equal(sup.nslots, 2); /* closed at once: no worker to wait for */
    assert_true(sup.told_ready);
    sd_drain();
    assert_int_equal(sd.readies, 1);

    /* the same when the slot that is not ready closes later, its worker gone */
    o.workers = 2;
    machine_init(&o);
    start_ready(0);
    fire_expect(1, EV_START, SL_STARTING);
    assert_int_equal(ps__op_request(&sup, OP_SCALE, 1, NULL, err, sizeof(err)), 0);
    ps__op_run_queue(&sup);
    assert_int_equal(sup.slots[1].state, SL_RETIRING);
    ps__worker_exited(&sup, &sup.workers[sup.slots[1].current], 1 << 8);
    assert_int_equal(sup.slots[1].state, SL_CLOSING);
    timers();
    assert_int_equal(sup.nslots, 1);
    assert_true(sup.told_ready);
    sd_drain();
    assert_int_equal(sd.readies, 1);
    machine_close();
}

/* ---- random sequences -------------------------------------------------------- */

static uint64_t rng;

static uint64_t rnd64(void)
{
    /* splitmix64: tiny, fast, and the same everywhere */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int rnd(int n)
{
    return n > 0 ? (int)(rnd64() % (uint64_t)n) : 0;
}

/* A random live worker for which pred holds (any when NULL), or NULL. */
static struct ps_worker *pick_worker(int (*pred)(const struct ps_worker *))
{
    int i, n = 0, k;

    for (i = 0; i < sup.nworkers; i++)
        n += sup.workers[i].pid && (!pred || pred(&sup.workers[i]));
    if (!n)
        return NULL;
    k = rnd(n);
    for (i = 0; i < sup.nworkers; i++)
        if (sup.workers[i].pid && (!pred || pred(&sup.workers[i])) && k-- == 0)
            return &sup.workers[i];
    return NULL;
}

static int is_starting(const struct ps_worker *w)
{
    return w->state == W_STARTING;
}

static int is_ready(const struct ps_worker *w)
{
    return w->state == W_READY;
}

static int is_serving_or_starting(const struct ps_worker *w)
{
    return w->state == W_STARTING || w->state == W_READY;
}

static const char *role(const struct ps_worker *w)
{
    int i = (int)(w - sup.workers);

    if (sup.slots[w->slot].current == i)
        return "current";
    return sup.slots[w->slot].next == i ? "next" : "other";
}

static void worker_ready(struct ps_worker *w)
{
    trace("worker %ld (slot %d, gen %u, %s) READY=1", (long)w->pid, w->slot, w->generation,
          role(w));
    ps__worker_ready(&sup, w, "READY=1");
}

static void worker_exit(struct ps_worker *w)
{
    static const int statuses[] = {0, 1 << 8, SIGKILL, SIGSEGV, 3 << 8};
    int status = statuses[rnd(PS__ARRAY_LEN(statuses))];

    trace("worker %ld (slot %d, gen %u, %s, %s) exits, status 0x%x", (long)w->pid, w->slot,
          w->generation, role(w), ps__worker_state_name(w->state), status);
    ps__worker_exited(&sup, w, status);
}

static void worker_stopping(struct ps_worker *w)
{
    trace("worker %ld (slot %d, gen %u, %s) STOPPING=1", (long)w->pid, w->slot, w->generation,
          role(w));
    ps__worker_stopping(&sup, w);
}

static struct ps_waiter random_waiter(void)
{
    /* an index of a client that is not waiting: its answer goes nowhere */
    struct ps_waiter w;

    /* one draw per statement: the order of an initializer's (or a call's
     * arguments') evaluation is the compiler's choice, and a seed must
     * replay the same with gcc and clang */
    w.client = rnd(PS_SUP_MAX_CLIENTS);
    w.serial = 0x5eed0000u + (unsigned)rnd(1000);
    return w;
}

/* ops.c's rules for one request, as a model: what it must return and how
 * the queue must look afterwards. */
static void request(enum ps_op_kind kind, int n, int with_waiter)
{
    static const char *const kinds[] = {"reload", "scale", "upgrade"};
    struct ps_op before[PS_OP_QUEUE_MAX], *last;
    struct ps_waiter w = random_waiter();
    int nbefore = sup.ops.nqueued, want = 0, merge = 0, i, r;
    char err[256] = "";

    memcpy(before, sup.ops.queue, sizeof(before));
    last = nbefore ? &before[nbefore - 1] : NULL;
    if (sup.life.state != PS_LIFE_SERVING)
        want = -ESHUTDOWN;
    else if (kind == OP_SCALE && (n < 1 || n > PS_SUP_MAX_WORKERS))
        want = -EINVAL;
    else if (kind == OP_UPGRADE) {
        for (i = 0; i < nbefore; i++)
            if (before[i].kind == OP_UPGRADE)
                want = -EBUSY;
    }
    if (!want && last && kind != OP_UPGRADE && last->kind == kind) {
        merge = 1;
        if (with_waiter && last->nwaiters == PS_OP_MAX_WAITERS)
            want = -EBUSY;
    } else if (!want && nbefore == PS_OP_QUEUE_MAX) {
        want = -EBUSY;
    }
    trace("request %s %d%s -> expect %d", kinds[kind], n, with_waiter ? " (waiter)" : "", want);
    r = ps__op_request(&sup, kind, n, with_waiter ? &w : NULL, err, sizeof(err));
    CHECK(r == want, "request %s %d returned %d (%s), expected %d", kinds[kind], n, r, err, want);
    CHECK(r == 0 || err[0], "refused without saying why");
    if (r < 0) {
        /* refused outright: nothing changed */
        CHECK(sup.ops.nqueued == nbefore, "a refused request changed the queue length");
        for (i = 0; i < nbefore; i++)
            CHECK(sup.ops.queue[i].kind == before[i].kind && sup.ops.queue[i].n == before[i].n &&
                      sup.ops.queue[i].nwaiters == before[i].nwaiters,
                  "a refused %s %d changed queued operation %d (%s %d, %d waiters -> %s %d, %d)",
                  kinds[kind], n, i, kinds[before[i].kind], before[i].n, before[i].nwaiters,
                  kinds[sup.ops.queue[i].kind], sup.ops.queue[i].n, sup.ops.queue[i].nwaiters);
        return;
    }
    if (merge) {
        CHECK(sup.ops.nqueued == nbefore, "a merged request added an operation");
        last = &sup.ops.queue[nbefore - 1];
        CHECK(kind != OP_SCALE || last->n == n, "merged scale: count %d, asked %d", last->n, n);
        CHECK(last->nwaiters == before[nbefore - 1].nwaiters + with_waiter, "merged waiters");
        CHECK(last->id == before[nbefore - 1].id, "a merged operation changed its id");
    } else {
        CHECK(sup.ops.nqueued == nbefore + 1, "a request did not queue");
        last = &sup.ops.queue[nbefore];
        CHECK(last->kind == kind && last->nwaiters == with_waiter, "the queued operation");
        CHECK(kind != OP_SCALE || last->n == n, "queued scale: count %d, asked %d", last->n, n);
        CHECK(last->id == sup.ops.ids, "ids are handed out in order");
    }
}

static int random_count(void)
{
    int r = rnd(40);

    return r == 0 ? 0 : r == 1 ? PS_SUP_MAX_WORKERS + 1 : 1 + rnd(MAX_SCALE);
}

/* The loop's turn after what happened: run what is queued. */
static void run_queue(void)
{
    ps__op_run_queue(&sup);
}

static void stop(void)
{
    int again = ps__stopping(&sup), i;

    if (rnd(3) == 0) {
        enum ps_life was = sup.life.state;
        unsigned ms = rnd(4) ? 1 + (unsigned)rnd(3000) : 0;
        trace("lame duck %u ms", ms);
        ps__life_event(&sup, LIFE_LAMEDUCK, ms,
                       rnd(2) ? NULL : &(struct ps_waiter){rnd(PS_SUP_MAX_CLIENTS), 1});
        CHECK(sup.life.state == (was != PS_LIFE_SERVING ? was
                                 : ms                   ? PS_LIFE_LAMEDUCK
                                                        : PS_LIFE_STOPPING),
              "lame duck %u ms from %s: %s", ms, ps__life_name(was), ps__life_name(sup.life.state));
        return;
    }

    trace("stop%s", again ? " (again: kill everything)" : "");
    ps__life_event(&sup, LIFE_STOP, 0,
                   rnd(2) ? NULL : &(struct ps_waiter){rnd(PS_SUP_MAX_CLIENTS), 1});
    for (i = 0; again && i < sup.nworkers; i++)
        CHECK(!sup.workers[i].pid || sup.workers[i].state == W_KILLED,
              "stop asked twice, worker %d is %s", i, ps__worker_state_name(sup.workers[i].state));
}

/* A held socket stops listening (a worker called shutdown(2) on its copy);
 * the next socket check revives it and tells the slot(s). */
static void listener_lost(int g, int i)
{
    struct ps_group *gr = &sup.groups[g];
    unsigned lost_before[MAX_SCALE + 1], relistens = gr->relistens, q, lim;
    int s, nslots = sup.nslots;

    for (s = 0; s < nslots && s <= MAX_SCALE; s++)
        lost_before[s] = sup.slots[s].lost;
    trace("group %d socket %d stops listening", g, i);
    CHECK(shutdown(gr->fds[i], SHUT_RDWR) == 0, "shutdown: %s", strerror(errno));
    sup.checked_ms = clock_ms - 1000; /* the sockets are checked once a second */
    timers();
    /* (unless it was the socket of a retired slot: closed in the same turn) */
    CHECK(i >= gr->nfds || ps_listen_queue(gr->fds[i], &q, &lim) == 0,
          "group %d socket %d not revived", g, i);
    CHECK(gr->relistens == relistens + 1, "group %d: relistens %u", g, gr->relistens);
    for (s = 0; s < nslots && s < sup.nslots && s <= MAX_SCALE; s++) {
        int told = (gr->shared || s == i) && sup.slots[s].state != SL_STOPPING;
        CHECK(sup.slots[s].lost == lost_before[s] + told, "slot %d: lost %u, was %u", s,
              sup.slots[s].lost, lost_before[s]);
    }
}

static void step_listener_lost(void)
{
    int g;

    if (!sup.ngroups) {
        timers();
        return;
    }
    g = rnd(sup.ngroups);
    listener_lost(g, rnd(sup.groups[g].nfds));
}

/* Time passes: for everything (the clock moves), or for one thing (its
 * deadline is now); then the timers run. */
static void step_time_passes(void)
{
    static const unsigned jumps[] = {1,    20,   99,   100,  250,   499,   500,
                                     1000, 1600, 2500, 5000, 12000, 31000, 61000};
    struct ps_worker *w;
    unsigned ms;
    int s;

    switch (rnd(8)) {
    case 0:
        if ((w = pick_worker(NULL))) {
            trace("worker %ld (slot %d, %s, %s): its deadline passes", (long)w->pid, w->slot,
                  role(w), ps__worker_state_name(w->state));
            w->deadline_ms = clock_ms;
        }
        break;
    case 1:
        if ((w = pick_worker(is_ready)) && cfg.watchdog_ms) {
            trace("worker %ld (slot %d, %s): no WATCHDOG=1 for too long", (long)w->pid, w->slot,
                  role(w));
            w->ping_ms = clock_ms - cfg.watchdog_ms;
        }
        break;
    case 2:
        s = rnd(sup.nslots);
        if (sup.slots[s].state == SL_BACKOFF) {
            trace("slot %d: its back-off is over", s);
            sup.slots[s].backoff_until = clock_ms;
        }
        break;
    case 3:
        s = rnd(sup.nslots);
        if (sup.slots[s].state == SL_RETIRING) {
            trace("slot %d: its retire time is over", s);
            sup.slots[s].retire_since = clock_ms - cfg.drain_timeout_ms;
        }
        break;
    default:
        ms = jumps[rnd(PS__ARRAY_LEN(jumps))];
        trace("%u ms pass", ms);
        clock_ms += ms;
        break;
    }
    timers();
}

/* A random event for a random slot, brought about the way the world brings
 * it about (so that the loop's own paths fire it). */
static void step_slot_event(void)
{
    int s = rnd(sup.nslots), ev = rnd(EV_COUNT), i;
    struct ps_slot *sl = &sup.slots[s];
    struct ps_worker *w = sl->current >= 0 ? &sup.workers[sl->current] : NULL;

    trace("slot %d (%s): bring about %s", s, ps__slot_state_name(sl->state),
          ps__slot_event_name(ev));
    switch (ev) {
    case EV_START:
        if (sl->state == SL_BACKOFF)
            sl->backoff_until = clock_ms;
        timers();
        break;
    case EV_READY:
        if (w)
            worker_ready(w);
        break;
    case EV_STOPPING:
        if (w)
            worker_stopping(w);
        break;
    case EV_EXIT:
        if (w)
            worker_exit(w);
        break;
    case EV_READY_LATE:
        if (w && w->state == W_STARTING)
            w->deadline_ms = clock_ms;
        timers();
        break;
    case EV_WATCHDOG:
        if (w && w->state == W_READY && cfg.watchdog_ms)
            w->ping_ms = clock_ms - cfg.watchdog_ms;
        timers();
        break;
    case EV_RETIRE:
        if (s >= 1)
            request(OP_SCALE, s, rnd(2));
        break;
    case EV_KEEP:
        if (s < PS_SUP_MAX_WORKERS)
            request(OP_SCALE, s + 1, rnd(2));
        break;
    case EV_QUEUE_EMPTY:
        if (sl->state == SL_RETIRING)
            sl->retire_since = clock_ms - cfg.drain_timeout_ms;
        timers();
        break;
    case EV_REPLACE:
        /* a reload whose every new worker gets ready */
        request(OP_RELOAD, 0, rnd(2));
        run_queue();
        for (i = 0; i < sup.nslots && sup.ops.reload; i++)
            if (sup.slots[i].next >= 0)
                worker_ready(&sup.workers[sup.slots[i].next]);
        break;
    case EV_STOP:
        if (!rnd(10))
            stop();
        break;
    case EV_STALL:
    case EV_RESUME:
        /* stall.c fires these from the held sockets' queues, which this
         * test does not fill: fired directly, for a ready worker only */
        if (w && w->state == W_READY)
            ps__slot_event(&sup, s, (enum ps_slot_event)ev, 0, "test");
        break;
    case EV_LISTENER_LOST:
        for (i = 0; i < sup.ngroups; i++)
            if (sup.groups[i].shared || s < sup.groups[i].nfds) {
                listener_lost(i, sup.groups[i].shared ? 0 : s);
                break;
            }
        break;
    case EV_OPEN: /* a scale-up opens the slots beyond the last */
        if (sup.nslots < MAX_SCALE)
            request(OP_SCALE, sup.nslots + 1, rnd(2));
        break;
    case EV_CLOSE: /* a retired slot closes when the loop finds it idle */
        timers();
        break;
    }
}

static void step_burst(void)
{
    int n, kind = rnd(3), i;

    if (rnd(6)) {
        /* mostly one kind (merging), sometimes mixed (queueing) */
        n = 2 + rnd(5);
        trace("a burst of %d requests", n);
        for (i = 0; i < n; i++) {
            int k = rnd(4) ? kind : rnd(3), count = random_count(), waiter = rnd(4) != 0;
            request(k, count, waiter);
        }
    } else {
        /* a flood of one kind, each with a waiter: more than one operation
         * can have waiting */
        n = PS_OP_MAX_WAITERS - 2 + rnd(6);
        kind = rnd(2) ? OP_RELOAD : OP_SCALE;
        trace("a flood of %d %s requests", n, kind == OP_RELOAD ? "reload" : "scale");
        for (i = 0; i < n; i++)
            request(kind, 1 + rnd(MAX_SCALE), 1);
    }
}

static void step(void)
{
    struct ps_worker *w;
    int r = rnd(1000);

    if (r < 170) {
        if ((w = pick_worker(is_starting)))
            worker_ready(w);
    } else if (r < 280) {
        if ((w = pick_worker(NULL)))
            worker_exit(w);
    } else if (r < 310) {
        if ((w = pick_worker(is_serving_or_starting)))
            worker_stopping(w);
    } else if (r < 450) {
        step_time_passes();
    } else if (r < 520) {
        trace("timers");
        timers();
    } else if (r < 550) {
        step_listener_lost();
    } else if (r < 640) {
        request(OP_RELOAD, 0, rnd(2));
    } else if (r < 730) {
        int count = random_count();
        request(OP_SCALE, count, rnd(2));
    } else if (r < 745) {
        request(OP_UPGRADE, 0, rnd(2)); /* fails: cfg.self_exe is NULL */
    } else if (r < 775) {
        step_burst();
    } else if (r < 790) {
        fake.fail = 1 + rnd(3);
        fake.fail_errno = rnd(2) ? EAGAIN : ENOEXEC;
        trace("the next %d spawns fail with %s", fake.fail, strerror(fake.fail_errno));
    } else if (r < 995) {
        step_slot_event();
    } else {
        stop();
    }
}

/* States the loop can never leave, except CLOSED by a scale-up reopening
 * the slot (its EV_OPEN). */
static void check_absorbing(const enum ps_slot_state *before, int target_before)
{
    int s;

    for (s = 0; s < hiwater; s++) {
        if (before[s] == SL_STOPPING)
            CHECK(sup.slots[s].state == SL_STOPPING, "slot %d left stopping for %s", s,
                  ps__slot_state_name(sup.slots[s].state));
        if (before[s] == SL_CLOSED && sup.slots[s].state != SL_CLOSED)
            CHECK(sup.target > s && sup.target != target_before,
                  "slot %d left closed for %s without a scale-up", s,
                  ps__slot_state_name(sup.slots[s].state));
    }
}

static int states_changed(const enum ps_slot_state *before, int nslots_before)
{
    int s;

    if (sup.nslots != nslots_before)
        return 1;
    for (s = 0; s < sup.nslots; s++)
        if (sup.slots[s].state != before[s])
            return 1;
    return 0;
}

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);

    return v && *v ? atoi(v) : def;
}

/* One sequence: a machine of random shape, nsteps random steps, then a stop
 * that is driven until every worker is gone. */
static void run_sequence(int nsteps)
{
    static enum ps_slot_state before[PS_SUP_MAX_WORKERS];
    struct machine_opts o;
    int target_before, nslots_before, n;

    static const unsigned ready_timeouts[] = {1000, 5000, 60000};
    static const unsigned drain_timeouts[] = {500, 2000, 30000};
    static const unsigned watchdogs[] = {0, 0, 3000, 20000};

    o.workers = 1 + rnd(4);
    o.reuseport_groups = 1 + (rnd(4) == 0);
    o.shared_group = rnd(3) == 0;
    o.watchdog_ms = watchdogs[rnd(4)];
    o.drain_signal = rnd(2) ? DRAIN_SIG : 0;
    o.ready_timeout_ms = ready_timeouts[rnd(3)];
    o.drain_timeout_ms = drain_timeouts[rnd(3)];
    o.ready_delay_ms = rnd(4) ? 0 : 300;
    trace("machine: %d workers, %d reuseport + %d shared listeners, watchdog %u, ready timeout "
          "%u, drain timeout %u, ready delay %u",
          o.workers, o.reuseport_groups, o.shared_group, o.watchdog_ms, o.ready_timeout_ms,
          o.drain_timeout_ms, o.ready_delay_ms);
    machine_init(&o);
    hiwater = sup.nslots;
    timers(); /* the first EV_START of every slot */
    check_invariants();
    for (ctx.step = 0; ctx.step < nsteps; ctx.step++) {
        for (n = 0; n < hiwater; n++)
            before[n] = sup.slots[n].state;
        target_before = sup.target;
        nslots_before = sup.nslots;
        fake_calls_reset();
        step();
        run_queue();
        check_absorbing(before, target_before);
        check_invariants();
        /* status costs the most (printf, TCP_INFO): after every change of
         * a slot's state, and every 8th step */
        if (ctx.step % 8 == 0 || states_changed(before, nslots_before))
            check_status();
        if (ctx.step % 25 == 0)
            check_upgrade_round_trip();
        if (ps__stopping(&sup) && live_workers() == 0)
            break; /* the loop ends here */
    }
    check_groups(1);
    /* the end: stop, and drive every worker out */
    if (!ps__stopping(&sup))
        stop();
    check_invariants();
    for (n = 0; live_workers() && n < 10 * NWORKERS; n++) {
        struct ps_worker *w = pick_worker(NULL);
        if (rnd(3))
            worker_exit(w);
        else
            step_time_passes();
        run_queue();
        check_invariants();
    }
    CHECK(live_workers() == 0, "workers left after the stop");
    check_status();
    ps__life_finish(&sup);
    CHECK(sup.ops.nqueued == 0 && sup.life.nwaiters == 0 && !sup.ops.reload, "finish_all");
    check_invariants();
    machine_close();
}

static void test_random_sequences(void **state)
{
    unsigned long long seed = 20240610;
    const char *env = getenv("PS_TEST_SEED");
    int nseq = env_int("PS_TEST_SEQUENCES", 200), nsteps = env_int("PS_TEST_STEPS", 200);
    int only = env_int("PS_TEST_ONLY", -1);
    unsigned long long steps = 0;
    struct timespec t0, t1;
    int st, ev, changing = 0, taken = 0;

    (void)state;
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    ctx.seed = seed;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    print_message("  seed %llu (PS_TEST_SEED=%llu replays it), %d sequences x %d steps\n", seed,
                  seed, nseq, nsteps);
    for (ctx.seq = only >= 0 ? only : 0; ctx.seq < (only >= 0 ? only + 1 : nseq); ctx.seq++) {
        /* each sequence from its own seed: one can be replayed alone */
        rng = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(ctx.seq + 1));
        ctx.nlines = 0;
        run_sequence(nsteps);
        steps += (unsigned long long)ctx.step;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_message("  %llu steps, %u log lines, trace digest %016llx, %.0f ms\n", steps, log_lines,
                  (unsigned long long)trace_digest,
                  (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    /* how much of the table the sequences went through */
    for (st = 0; st < SL_STATE_COUNT; st++)
        for (ev = 0; ev < EV_COUNT; ev++) {
            const struct ps_slot_transition *t = &ps__slot_table[st][ev];
            if (is_no(t) || (int)t->next == st)
                continue;
            changing++;
            if (rows_taken[st][ev])
                taken++;
            else if (getenv("PS_TEST_VERBOSE"))
                print_message("  row never taken: %s --%s-->\n", ps__slot_state_name(st),
                              ps__slot_event_name(ev));
        }
    print_message("  %d of the %d rows that change a slot's state were taken\n", taken, changing);
    ctx.seq = ctx.step = -1;
}

static int group_setup(void **state)
{
    (void)state;
    sd_open();
    pool_open();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    machine_close();
    pool_close();
    free(sup.conns);
    sup.conns = NULL;
    close(sd.fd);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_every_row),
        cmocka_unit_test(test_worker_rows),
        cmocka_unit_test(test_life_rows),
        cmocka_unit_test(test_lameduck_quiet_due),
        cmocka_unit_test(test_lameduck_quiet),
        cmocka_unit_test(test_reload_rows),
        cmocka_unit_test(test_start_fails),
        cmocka_unit_test(test_default_drain_signal),
        cmocka_unit_test(test_each_requester_gets_its_own_outcome),
        cmocka_unit_test(test_listener_revived),
        cmocka_unit_test(test_stop_during_reload_tells_systemd_nothing_after_stopping),
        cmocka_unit_test(test_refused_scale_changes_nothing),
        cmocka_unit_test(test_ready_told_when_the_last_unready_slot_closes),
        cmocka_unit_test(test_random_sequences),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
