/*
 * udp_flow.c - the loader of the UDP flow program (kern/udp_flow.bpf.c),
 * through libbpf and the skeleton bpftool generates from the program's
 * object at build time (the object is embedded in it: nothing to install).
 *
 * Why libbpf here, while reuseport_bpf.c assembles its program by hand:
 * this program has a hash table keyed by a 40-byte struct, IPv4 and IPv6
 * parsing, nine maps and some six hundred instructions once inlined;
 * written as an instruction table it could not be reviewed, and libbpf's
 * relocation of maps, BTF and its verifier-log handling come for free.
 *
 * What the maps hold (udp_flow_abi.h has the layouts):
 *   socks      id -> socket (REUSEPORT_SOCKARRAY), filled by ps__udp_flow_add
 *   ids        id -> {incarnation, serving}, written here only
 *   serving    two lists of the serving ids; config.half says which one
 *   config     {salt, half, idle_ns}
 *   flows      4-tuple -> {id, incarnation, last_ns} (LRU hash)
 *   last_seen  id -> when it last got a datagram (to 100 ms)
 *   dgrams, idstats, gstats: the counters
 */
#include "udp_flow.h"

#include "kern/udp_flow_abi.h"
#include "udp_flow.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

_Static_assert(PS__FLOW_IDS == UDP_FLOW_IDS, "the loader and the program agree on the ids");
_Static_assert(sizeof(struct udp_flow_key) == 40, "the flow key has no hidden padding");

/* the verifier's log of a refused load: 64 KiB holds this program's log
 * whole (a few hundred instructions) */
#define LOG_SIZE  (64 * 1024)
#define WALK_SIZE 1024 /* flows read per syscall when counting */

struct ps__udp_flow {
    struct udp_flow_bpf *skel;
    int prog, socks, ids, serving, config, flows, last_seen, dgrams, idstats, gstats;
    unsigned max_flows;
    uint64_t idle_ns;
    uint32_t half;            /* the serving list in use */
    int next;                 /* where ps__udp_flow_add looks first */
    int ncpus;                /* possible CPUs: the per-CPU values' count */
    int nserving;             /* the serving list, as last set */
    int *serving_ids;         /* PS__FLOW_IDS of them */
    struct udp_flow_id *info; /* what the ids map holds, PS__FLOW_IDS */
    /* the last ps__udp_flow_walk: live flows per id, in all, in the table */
    uint32_t *live;
    uint64_t live_all, in_table;
};

/* libbpf's messages go nowhere: failures come back as -errno and the
 * verifier's log through the program's log buffer. */
static int drop_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level;
    (void)fmt;
    (void)ap;
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t new_salt(void)
{
    uint32_t s;

    if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
        s = (uint32_t)now_ns() * 2654435761u;
    return s;
}

/* err = "what: strerror", then the log's last lines that fit */
static void say(char *err, size_t errlen, const char *what, int r, const char *log)
{
    size_t n, len = log ? strlen(log) : 0;
    const char *tail;

    if (!err || !errlen)
        return;
    n = (size_t)snprintf(err, errlen, "%s: %s", what, strerror(-r));
    if (!len || n + 16 >= errlen)
        return;
    while (len && log[len - 1] == '\n')
        len--;
    tail = log + len;
    /* whole lines from the end, as many as fit after "; verifier: " */
    while (tail > log && (size_t)(log + len - tail) + n + 13 < errlen) {
        const char *p = tail - 1;

        while (p > log && p[-1] != '\n')
            p--;
        if ((size_t)(log + len - p) + n + 13 >= errlen)
            break;
        tail = p;
    }
    if (tail < log + len)
        snprintf(err + n, errlen - n, "; verifier: %.*s", (int)(log + len - tail), tail);
}

static int write_config(struct ps__udp_flow *f, uint32_t half)
{
    struct udp_flow_config c = {.salt = new_salt(), .half = half, .idle_ns = f->idle_ns};
    uint32_t zero = 0;

    return bpf_map_update_elem(f->config, &zero, &c, BPF_ANY);
}

/* The skeleton's maps in the export order (udp_flow.h, PS__FLOW_NMAPS):
 * the one list both sides of an exec read, so they cannot drift. */
static void skel_maps(const struct udp_flow_bpf *s, struct bpf_map *m[PS__FLOW_NMAPS])
{
    m[0] = s->maps.socks;
    m[1] = s->maps.ids;
    m[2] = s->maps.serving;
    m[3] = s->maps.config;
    m[4] = s->maps.flows;
    m[5] = s->maps.last_seen;
    m[6] = s->maps.dgrams;
    m[7] = s->maps.idstats;
    m[8] = s->maps.gstats;
}

static void take_fds(struct ps__udp_flow *f)
{
    int *const field[PS__FLOW_NMAPS] = {&f->socks,  &f->ids,     &f->serving,
                                        &f->config, &f->flows,   &f->last_seen,
                                        &f->dgrams, &f->idstats, &f->gstats};
    struct bpf_map *m[PS__FLOW_NMAPS];
    int i;

    f->prog = bpf_program__fd(f->skel->progs.udp_flow_select);
    skel_maps(f->skel, m);
    for (i = 0; i < PS__FLOW_NMAPS; i++)
        *field[i] = bpf_map__fd(m[i]);
}

/* fd is a map the program can take as m: the same name (when the kernel
 * keeps names), type, sizes and flags.  Checked here because
 * bpf_map__reuse_fd copies the fd's definition over m's, and libbpf's own
 * check at load then compares the map with itself. */
static int same_map(const struct bpf_map *m, int fd, char *err, size_t errlen)
{
    struct bpf_map_info in;
    uint32_t len = sizeof(in);
    const char *name = bpf_map__name(m);
    char what[256];
    int i, r;

    memset(&in, 0, sizeof(in));
    r = bpf_obj_get_info_by_fd(fd, &in, &len);
    if (r < 0) {
        snprintf(what, sizeof(what), "reading carried UDP flow map %s", name);
        say(err, errlen, what, r, NULL);
        return r;
    }
    if (in.name[0] && strncmp(in.name, name, sizeof(in.name) - 1) != 0) {
        snprintf(what, sizeof(what), "carried UDP flow map %s is named %s", name, in.name);
        say(err, errlen, what, -EINVAL, NULL);
        return -EINVAL;
    }
    const struct {
        const char *what;
        uint32_t have, want;
    } row[] = {
        {"type", in.type, bpf_map__type(m)},
        {"key size", in.key_size, bpf_map__key_size(m)},
        {"value size", in.value_size, bpf_map__value_size(m)},
        {"max_entries", in.max_entries, bpf_map__max_entries(m)},
        {"flags", in.map_flags, bpf_map__map_flags(m)},
    };
    for (i = 0; i < (int)(sizeof(row) / sizeof(row[0])); i++) {
        if (row[i].have == row[i].want)
            continue;
        snprintf(what, sizeof(what), "carried UDP flow map %s has %s %u, %u wanted", name,
                 row[i].what, row[i].have, row[i].want);
        say(err, errlen, what, -EINVAL, NULL);
        return -EINVAL;
    }
    return 0;
}

/* Every carried map checked, then each given to the skeleton (libbpf dups
 * it; the program is then loaded against it instead of a new map). */
static int reuse(struct ps__udp_flow *f, const int *fds, char *err, size_t errlen)
{
    struct bpf_map *m[PS__FLOW_NMAPS];
    int i, r = 0;

    skel_maps(f->skel, m);
    for (i = 0; r == 0 && i < PS__FLOW_NMAPS; i++)
        r = same_map(m[i], fds[i], err, errlen);
    for (i = 0; r == 0 && i < PS__FLOW_NMAPS; i++)
        if ((r = bpf_map__reuse_fd(m[i], fds[i])) < 0)
            say(err, errlen, "taking the carried UDP flow maps", r, NULL);
    return r;
}

/* The skeleton opened, sized, given the carried maps (fds, or NULL for new
 * ones) and loaded; the verifier's log in log. */
static int load(struct ps__udp_flow *f, const int *fds, char *log, char *err, size_t errlen)
{
    struct rlimit lim;
    int r, have_lim;

    f->skel = udp_flow_bpf__open();
    if (!f->skel) {
        r = -errno;
        say(err, errlen, "opening the UDP flow program", r, NULL);
        return r;
    }
    r = bpf_map__set_max_entries(f->skel->maps.flows, f->max_flows);
    if (r == 0)
        r = bpf_program__set_log_buf(f->skel->progs.udp_flow_select, log, LOG_SIZE);
    if (r < 0) {
        say(err, errlen, "sizing the UDP flow table", r, NULL);
        return r;
    }
    if (fds && (r = reuse(f, fds, err, errlen)) < 0)
        return r;
    log[0] = '\0';
    /* libbpf raises RLIMIT_MEMLOCK to infinity on kernels < 5.11 (those
     * without memcg accounting of BPF memory), which the workers would
     * inherit; libbpf_set_memlock_rlim(0) would stop it, but Debian 12's
     * libbpf1 does not export it: put the limit back instead */
    have_lim = getrlimit(RLIMIT_MEMLOCK, &lim) == 0;
    r = udp_flow_bpf__load(f->skel);
    if (have_lim)
        setrlimit(RLIMIT_MEMLOCK, &lim);
    if (r < 0) {
        say(err, errlen, "loading the UDP flow program", r, log);
        return r;
    }
    take_fds(f);
    return 0;
}

/* The loader's state read back from carried maps: each id's incarnation
 * and serving flag, the serving list in use, and where add looks next (one
 * past the highest id ever given: ids are given round robin from 0).  The
 * config is rewritten with this table's idle time, its salt and half kept
 * (new flows hash as they did). */
static int restore(struct ps__udp_flow *f, char *err, size_t errlen)
{
    struct udp_flow_config c = {0, 0, 0};
    uint32_t zero = 0, id = 0, base, k, n = 0;
    int r;

    r = bpf_map_lookup_elem(f->config, &zero, &c);
    for (id = 0; r == 0 && id < PS__FLOW_IDS; id++) {
        r = bpf_map_lookup_elem(f->ids, &id, &f->info[id]);
        if (r == 0 && f->info[id].incarnation)
            f->next = (int)(id + 1) % PS__FLOW_IDS;
    }
    base = (c.half & 1) * (PS__FLOW_IDS + 1);
    if (r == 0)
        r = bpf_map_lookup_elem(f->serving, &base, &n);
    if (r == 0 && n > PS__FLOW_IDS)
        r = -EINVAL;
    for (k = 0; r == 0 && k < n; k++) {
        uint32_t at = base + 1 + k;

        r = bpf_map_lookup_elem(f->serving, &at, &id);
        if (r == 0 && id >= PS__FLOW_IDS)
            r = -EINVAL;
        f->serving_ids[k] = (int)id;
    }
    if (r == 0) {
        f->nserving = (int)n;
        f->half = c.half & 1;
        c.idle_ns = f->idle_ns;
        r = bpf_map_update_elem(f->config, &zero, &c, BPF_ANY);
    }
    if (r < 0)
        say(err, errlen, "reading the carried UDP flow table", r, NULL);
    return r;
}

/* A table loaded over new maps (fds NULL) or carried ones. */
static int start(struct ps__udp_flow **out, unsigned max_flows, unsigned idle_ms, const int *fds,
                 char *err, size_t errlen)
{
    struct ps__udp_flow *f = NULL;
    char *log = NULL;
    int r = -ENOMEM;

    *out = NULL;
    if (max_flows == 0 || idle_ms == 0) {
        say(err, errlen, "UDP flow table of 0 flows or idle after 0 ms", -EINVAL, NULL);
        return -EINVAL;
    }
    libbpf_set_print(drop_print);
    f = calloc(1, sizeof(*f));
    log = malloc(LOG_SIZE);
    if (f) {
        f->serving_ids = calloc(PS__FLOW_IDS, sizeof(*f->serving_ids));
        f->info = calloc(PS__FLOW_IDS, sizeof(*f->info));
        f->live = calloc(PS__FLOW_IDS, sizeof(*f->live));
    }
    if (!f || !log || !f->serving_ids || !f->info || !f->live) {
        say(err, errlen, "loading the UDP flow program", r, NULL);
        goto error;
    }
    f->max_flows = max_flows;
    f->idle_ns = (uint64_t)idle_ms * 1000000u;
    f->ncpus = libbpf_num_possible_cpus();
    r = f->ncpus > 0 ? load(f, fds, log, err, errlen) : f->ncpus;
    if (r == 0)
        r = fds ? restore(f, err, errlen) : write_config(f, 0);
    if (r < 0)
        goto error;
    free(log);
    *out = f;
    return 0;
error:
    free(log);
    ps__udp_flow_close(f);
    return r;
}

int ps__udp_flow_open(struct ps__udp_flow **out, unsigned max_flows, unsigned idle_ms, char *err,
                      size_t errlen)
{
    return start(out, max_flows, idle_ms, NULL, err, errlen);
}

int ps__udp_flow_export(const struct ps__udp_flow *f, int *fds, int max)
{
    struct bpf_map *m[PS__FLOW_NMAPS];
    int i;

    if (max < PS__FLOW_NMAPS)
        return -ENOSPC;
    skel_maps(f->skel, m);
    for (i = 0; i < PS__FLOW_NMAPS; i++)
        fds[i] = bpf_map__fd(m[i]);
    return PS__FLOW_NMAPS;
}

/*
 * Why the flows survive the exec.  Between the old image's exec and the
 * new image's attach, the group still runs the old program, whose maps
 * are these (a loaded program holds a reference on each map it uses), so
 * steering goes on unchanged.  ps__udp_flow_attach then sets
 * SO_ATTACH_REUSEPORT_EBPF: reuseport_attach_prog (net/core/sock_reuseport.c)
 * only swaps reuse->prog and puts the old program (sk_reuseport_prog_free
 * -> bpf_prog_put), which drops its map references.  Nothing there touches
 * a sockarray.  A REUSEPORT_SOCKARRAY entry is emptied only
 * (kernel/bpf/reuseport_array.c) by bpf_sk_reuseport_detach when its
 * socket leaves the group (unhash: closed in every process), by a delete
 * or a replacing update of the element, or by reuseport_array_free when the
 * map itself is freed, i.e. once no fd and no program refers to it.  The
 * new program refers to the same map (bpf_map__reuse_fd), and this table
 * holds fds on it, so no entry moves: every socket stays at its id, and
 * flows keep matching their id's incarnation.  A fresh table instead would
 * start with an empty sockarray, and the sockets could not even be added
 * to it until the old map is freed (-EBUSY: sk_user_data still points into
 * the old map).
 */
int ps__udp_flow_import(struct ps__udp_flow **out, const int *fds, int n, unsigned max_flows,
                        unsigned idle_ms, char *err, size_t errlen)
{
    char what[128];
    int i, r;

    *out = NULL;
    if (!fds || n != PS__FLOW_NMAPS) {
        snprintf(what, sizeof(what), "carried UDP flow table has %d maps, this binary's %d", n,
                 PS__FLOW_NMAPS);
        say(err, errlen, what, -EINVAL, NULL);
        return -EINVAL;
    }
    r = start(out, max_flows, idle_ms, fds, err, errlen);
    if (r < 0)
        return r;
    for (i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

int ps__udp_flow_find(const struct ps__udp_flow *f, const int *sockfds, int n, int *ids)
{
    uint64_t *want, cookie;
    socklen_t len;
    uint32_t id;
    int i, found = 0, r = 0;

    if (n < 0 || (n > 0 && (!sockfds || !ids)))
        return -EINVAL;
    want = calloc((size_t)n + 1, sizeof(*want));
    if (!want)
        return -ENOMEM;
    for (i = 0; i < n; i++)
        ids[i] = -1;
    for (i = 0; i < n; i++) {
        len = sizeof(want[i]);
        if (getsockopt(sockfds[i], SOL_SOCKET, SO_COOKIE, &want[i], &len) < 0) {
            r = -errno;
            goto out;
        }
    }
    /* the sockarray read once; each entry compared with every socket */
    for (id = 0; found < n && id < PS__FLOW_IDS; id++) {
        r = bpf_map_lookup_elem(f->socks, &id, &cookie);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            goto out;
        for (i = 0; i < n; i++)
            if (ids[i] < 0 && want[i] == cookie) {
                ids[i] = (int)id;
                found++;
            }
    }
    r = found;
out:
    free(want);
    return r;
}

int ps__udp_flow_attach(const struct ps__udp_flow *f, int fd)
{
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &f->prog, sizeof(f->prog)) < 0
               ? -errno
               : 0;
}

/* id starts afresh for a new socket: a new incarnation, no datagram seen,
 * counters at zero (the group's own are kept). */
static int renew(struct ps__udp_flow *f, uint32_t id)
{
    struct udp_flow_id info = f->info[id];
    struct udp_flow_idstats zs = {0, 0};
    uint64_t zero = 0, *zc;
    int r;

    info.incarnation++;
    r = bpf_map_update_elem(f->ids, &id, &info, BPF_ANY);
    if (r < 0)
        return r;
    f->info[id] = info;
    zc = calloc((size_t)f->ncpus, sizeof(*zc));
    if (!zc)
        return -ENOMEM;
    r = bpf_map_update_elem(f->last_seen, &id, &zero, BPF_ANY);
    if (r == 0)
        r = bpf_map_update_elem(f->idstats, &id, &zs, BPF_ANY);
    if (r == 0)
        r = bpf_map_update_elem(f->dgrams, &id, zc, BPF_ANY);
    free(zc);
    return r;
}

int ps__udp_flow_add(struct ps__udp_flow *f, int fd)
{
    uint64_t cookie, v = (uint64_t)fd;
    uint32_t id;
    int r, tries;

    if (fd < 0)
        return -EBADF;
    for (tries = 0; tries < PS__FLOW_IDS; tries++) {
        id = (uint32_t)f->next;
        f->next = (f->next + 1) % PS__FLOW_IDS;
        r = bpf_map_lookup_elem(f->socks, &id, &cookie);
        if (r == 0)
            continue; /* a live socket */
        if (r != -ENOENT)
            return r;
        /* incarnation first: a flow of the id's previous socket, looked
         * up between the two updates, moves instead of sticking here */
        r = renew(f, id);
        if (r < 0)
            return r;
        r = bpf_map_update_elem(f->socks, &id, &v, BPF_NOEXIST);
        if (r == -EEXIST)
            continue;
        return r < 0 ? r : (int)id;
    }
    return -ENOSPC;
}

int ps__udp_flow_alive(const struct ps__udp_flow *f, int id)
{
    uint32_t k = (uint32_t)id;
    uint64_t cookie;
    int r;

    if (id < 0 || id >= PS__FLOW_IDS)
        return -EINVAL;
    r = bpf_map_lookup_elem(f->socks, &k, &cookie);
    return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

static int set_serving_flag(struct ps__udp_flow *f, uint32_t id, uint32_t on)
{
    struct udp_flow_id info = f->info[id];
    int r;

    if (info.serving == on)
        return 0;
    info.serving = on;
    r = bpf_map_update_elem(f->ids, &id, &info, BPF_ANY);
    if (r == 0)
        f->info[id] = info;
    return r;
}

/* the other list written whole, its length last */
static int write_list(struct ps__udp_flow *f, uint32_t half, const int *idv, int n)
{
    uint32_t base = half * (PS__FLOW_IDS + 1), k, v;
    int i, r;

    for (i = 0; i < n; i++) {
        k = base + 1 + (uint32_t)i;
        v = (uint32_t)idv[i];
        r = bpf_map_update_elem(f->serving, &k, &v, BPF_ANY);
        if (r < 0)
            return r;
    }
    v = (uint32_t)n;
    return bpf_map_update_elem(f->serving, &base, &v, BPF_ANY);
}

int ps__udp_flow_serve(struct ps__udp_flow *f, const int *idv, int n)
{
    uint8_t want[PS__FLOW_IDS / 8] = {0};
    uint32_t half = f->half ^ 1;
    int i, r;

    if (n < 0 || n > PS__FLOW_IDS || (n > 0 && !idv))
        return -EINVAL;
    for (i = 0; i < n; i++) {
        if (idv[i] < 0 || idv[i] >= PS__FLOW_IDS)
            return -EINVAL;
        want[idv[i] / 8] |= (uint8_t)(1u << (idv[i] % 8));
    }
    r = write_list(f, half, idv, n);
    /* flags on before the switch, off after it: an id is never in the
     * list in use without its flag (that would count its datagrams as
     * old ones, and move its idle flows) */
    for (i = 0; r == 0 && i < n; i++)
        r = set_serving_flag(f, (uint32_t)idv[i], 1);
    if (r == 0)
        r = write_config(f, half);
    if (r < 0)
        return r;
    f->half = half;
    for (i = 0; r == 0 && i < f->nserving; i++) {
        int id = f->serving_ids[i];

        if (!(want[id / 8] & (1u << (id % 8))))
            r = set_serving_flag(f, (uint32_t)id, 0);
    }
    if (n > 0)
        memcpy(f->serving_ids, idv, (size_t)n * sizeof(*idv));
    f->nserving = n;
    return r;
}

uint64_t ps__udp_flow_idle_ms(const struct ps__udp_flow *f, int id)
{
    uint32_t k = (uint32_t)id;
    uint64_t seen, now;

    if (id < 0 || id >= PS__FLOW_IDS || bpf_map_lookup_elem(f->last_seen, &k, &seen) < 0 ||
        seen == 0)
        return UINT64_MAX;
    now = now_ns();
    return now > seen ? (now - seen) / 1000000u : 0;
}

/* one batch of the table counted into f's live counts */
static void count_batch(struct ps__udp_flow *f, const struct udp_flow *vals, uint32_t n,
                        uint64_t now)
{
    uint32_t i;

    for (i = 0; i < n; i++) {
        const struct udp_flow *v = &vals[i];

        f->in_table++;
        if (v->id < PS__FLOW_IDS && v->incarnation == f->info[v->id].incarnation &&
            now - v->last_ns < f->idle_ns) {
            f->live[v->id]++;
            f->live_all++;
        }
    }
}

int ps__udp_flow_walk(struct ps__udp_flow *f)
{
    struct udp_flow_key *keys = calloc(WALK_SIZE, sizeof(*keys));
    struct udp_flow *vals = calloc(WALK_SIZE, sizeof(*vals));
    uint64_t now = now_ns();
    uint32_t batch, n;
    unsigned rounds;
    int r = -ENOMEM;

    memset(f->live, 0, PS__FLOW_IDS * sizeof(*f->live));
    f->live_all = f->in_table = 0;
    if (!keys || !vals)
        goto out;
    /* each round reads at least one bucket; bounded all the same */
    for (rounds = 0, r = 0; rounds <= f->max_flows + 1; rounds++) {
        n = WALK_SIZE;
        r = bpf_map_lookup_batch(f->flows, rounds ? &batch : NULL, &batch, keys, vals, &n, NULL);
        if (r < 0 && r != -ENOENT)
            goto out;
        count_batch(f, vals, n, now);
        if (r == -ENOENT) {
            r = 0;
            break;
        }
    }
out:
    free(keys);
    free(vals);
    return r;
}

/* the per-CPU values of key in map, summed: n u64 counters */
static int sum_percpu(const struct ps__udp_flow *f, int map, uint32_t key, uint64_t *sum, int n)
{
    uint64_t *v = calloc((size_t)f->ncpus * (size_t)n, sizeof(*v));
    int c, i, r;

    if (!v)
        return -ENOMEM;
    r = bpf_map_lookup_elem(map, &key, v);
    for (c = 0; r == 0 && c < f->ncpus; c++)
        for (i = 0; i < n; i++)
            sum[i] += v[c * n + i];
    free(v);
    return r;
}

int ps__udp_flow_stats(const struct ps__udp_flow *f, int id, struct ps__udp_flow_stats *st)
{
    struct udp_flow_idstats is = {0, 0};
    uint64_t g[5] = {0}; /* struct udp_flow_gstats, in its order */
    uint32_t k = (uint32_t)id;
    uint64_t d = 0;
    int r;

    memset(st, 0, sizeof(*st));
    if (id < -1 || id >= PS__FLOW_IDS)
        return -EINVAL;
    st->flows = id < 0 ? f->live_all : f->live[id];
    if (id >= 0) {
        r = bpf_map_lookup_elem(f->idstats, &k, &is);
        if (r == 0)
            r = sum_percpu(f, f->dgrams, k, &d, 1);
        st->new_flows = is.new_flows;
        st->moved = is.moved;
        st->datagrams = d;
        return r;
    }
    _Static_assert(sizeof(struct udp_flow_gstats) == sizeof(g), "gstats is five counters");
    r = sum_percpu(f, f->gstats, 0, g, 5);
    st->new_flows = g[0] + g[1];
    st->moved = g[1];
    st->datagrams = g[2];
    st->old_datagrams = g[3];
    st->unsteered = g[4];
    /* LRU evictions are silent: what was inserted and is no longer there */
    st->evicted = g[0] > f->in_table ? g[0] - f->in_table : 0;
    return r;
}

void ps__udp_flow_close(struct ps__udp_flow *f)
{
    if (!f)
        return;
    udp_flow_bpf__destroy(f->skel);
    free(f->serving_ids);
    free(f->info);
    free(f->live);
    free(f);
}
