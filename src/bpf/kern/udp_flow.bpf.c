/*
 * udp_flow.bpf.c - the reuseport program of UDP groups: a flow table that
 * keeps each UDP flow (4-tuple) on the socket that got its first datagram
 * for as long as that socket lives, and sends new flows to the serving
 * sockets (the newest ready generation).  Compiled by clang -target bpf,
 * never by the host compiler (it is outside the folder CMake globs), and
 * loaded by udp_flow.c.
 *
 * BPF_PROG_TYPE_SK_REUSEPORT, attach type BPF_SK_REUSEPORT_SELECT (libbpf's
 * "sk_reuseport" section), attached with SO_ATTACH_REUSEPORT_EBPF.  UDP has
 * no migration, so plain SELECT.  Run against Debian 12's own 6.1 kernel
 * (tests/kernel/check_udp_flow.sh) and 6.18; everything below is in 4.19
 * too, but not tried there (and the loader's table walk, a batch lookup,
 * needs 5.6).  What it uses:
 *   helpers  map_lookup_elem, map_update_elem, sk_select_reuseport,
 *            skb_load_bytes, skb_load_bytes_relative, ktime_get_ns
 *            (bpf_base_func_proto and sk_reuseport_func_proto,
 *            net/core/filter.c), none of them GPL-only: so the object
 *            has no "license" section (the kernel then loads it as
 *            non-GPL, which only GPL-only helpers would refuse), and
 *            names no license the project has not chosen.
 *   maps     REUSEPORT_SOCKARRAY, ARRAY, PERCPU_ARRAY, LRU_HASH
 *   ctx      hash only (not ctx->sk or migrating_sk: 5.14+).
 *
 * Where the bytes are.  The program runs inside the UDP socket lookup
 * (udp4_lib_lookup2 / udp6_lib_lookup2 -> reuseport_select_sock(sk, hash,
 * skb, sizeof(struct udphdr)) -> bpf_run_sk_reuseport), after IP has
 * pulled its header: skb->data is the UDP header there, and
 * bpf_init_reuseport_kern takes ctx->data and the base of bpf_skb_load_bytes
 * from skb->data (the hdr_len pull in run_bpf_filter is for classic BPF
 * only).  So the ports are bytes 0..3 of bpf_skb_load_bytes, and the
 * addresses are read relative to the network header
 * (bpf_skb_load_bytes_relative, BPF_HDR_START_NET), by the IP version
 * nibble: an IPv4 datagram to an IPv6 socket is an IPv4 packet.  ctx->hash
 * is the kernel's own 4-tuple hash (udp_ehashfn / udp6_ehashfn, keyed by a
 * boot-time secret): good enough to spread, not to trust as a key.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "udp_flow_abi.h"

struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, UDP_FLOW_IDS);
    __type(key, __u32);
    __type(value, __u64); /* 8 bytes: a lookup from userspace returns the cookie */
} socks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, UDP_FLOW_IDS);
    __type(key, __u32);
    __type(value, struct udp_flow_id);
} ids SEC(".maps");

/* two lists, one in use (config.half): the loader writes the other one and
 * switches in one update, so a datagram never sees half a list */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2 * (UDP_FLOW_IDS + 1));
    __type(key, __u32);
    __type(value, __u32);
} serving SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct udp_flow_config);
} config SEC(".maps");

/* LRU: a full table evicts its least recently used flows instead of
 * refusing new ones (a refused flow could not be kept anyway); the loader
 * sets max_entries */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 32768);
    __type(key, struct udp_flow_key);
    __type(value, struct udp_flow);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, UDP_FLOW_IDS);
    __type(key, __u32);
    __type(value, __u64);
} last_seen SEC(".maps");

/* per CPU: counting a datagram is a plain add in this CPU's copy */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, UDP_FLOW_IDS);
    __type(key, __u32);
    __type(value, __u64);
} dgrams SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, UDP_FLOW_IDS);
    __type(key, __u32);
    __type(value, struct udp_flow_idstats);
} idstats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct udp_flow_gstats);
} gstats SEC(".maps");

/* A datagram went to id: count it, and note when (at most every 100 ms). */
static __always_inline void touch(struct udp_flow_gstats *g, __u32 id,
                                  const struct udp_flow_id *info, __u64 now)
{
    __u64 *seen = bpf_map_lookup_elem(&last_seen, &id);
    __u64 *n = bpf_map_lookup_elem(&dgrams, &id);

    if (seen && now - *seen >= UDP_FLOW_REFRESH_NS)
        *seen = now;
    if (n)
        (*n)++;
    g->dgrams++;
    if (!info->serving)
        g->old_dgrams++;
}

/* A flow was given to id (new, or moved from another socket).  Shared
 * counters: atomic adds (BPF_XADD, there since the first eBPF kernels). */
static __always_inline void given(__u32 id, int moved)
{
    struct udp_flow_idstats *s = bpf_map_lookup_elem(&idstats, &id);

    if (!s)
        return;
    __sync_fetch_and_add(&s->new_flows, 1);
    if (moved)
        __sync_fetch_and_add(&s->moved, 1);
}

/* The flow's 4-tuple; -1 for what is neither IPv4 nor IPv6, or too short. */
static __always_inline int parse(struct sk_reuseport_md *ctx, struct udp_flow_key *k)
{
    __u32 h[5]; /* the first 20 bytes: an IPv4 header without options, or
                 * the start of an IPv6 one; one helper call, not three */
    __u8 v;

    if (bpf_skb_load_bytes_relative(ctx, 0, h, sizeof(h), BPF_HDR_START_NET))
        return -1;
    v = *(__u8 *)h >> 4;
    if (v == 4) {
        /* saddr at 12, daddr at 16: fixed whatever the options */
        k->saddr[0] = h[3];
        k->daddr[0] = h[4];
        k->family = 4;
    } else if (v == 6) {
        /* saddr at 8, daddr at 24, contiguous as in the key; extension
         * headers come after them */
        if (bpf_skb_load_bytes_relative(ctx, 8, k->saddr, 32, BPF_HDR_START_NET))
            return -1;
        k->family = 6;
    } else {
        return -1;
    }
    /* the UDP header: source port, destination port */
    if (bpf_skb_load_bytes(ctx, 0, &k->sport, 4))
        return -1;
    return 0;
}

/* lowbias32 (a multiply/xor finalizer): with a new salt, the flows that one
 * socket had (all sharing mix(hash, old salt) % old n) spread over every
 * serving socket, instead of following each other onto one. */
static __always_inline __u32 mix(__u32 h, __u32 salt)
{
    h ^= salt;
    h ^= h >> 16;
    h *= 0x7feb352d;
    h ^= h >> 15;
    h *= 0x846ca68b;
    h ^= h >> 16;
    return h;
}

/* serving[at], or UDP_FLOW_IDS when none */
static __always_inline __u32 serving_id(__u32 at)
{
    __u32 *v = bpf_map_lookup_elem(&serving, &at);

    return v && *v < UDP_FLOW_IDS ? *v : UDP_FLOW_IDS;
}

/* Select socket id, its incarnation read first: a flow must not be stored
 * with an incarnation newer than the socket it was sent to (the loader
 * bumps the incarnation before it puts a new socket at the id).  Returns
 * the id's info, or NULL when id holds no socket now. */
static __always_inline const struct udp_flow_id *try_select(struct sk_reuseport_md *ctx, __u32 id,
                                                            struct udp_flow_id *out)
{
    struct udp_flow_id *info = bpf_map_lookup_elem(&ids, &id);

    if (!info)
        return 0;
    *out = *info;
    if (bpf_sk_select_reuseport(ctx, &socks, &id, 0))
        return 0;
    return out;
}

/* A new flow, or one whose socket is gone: a serving socket by hash, then a
 * second hash (the first one's entry is empty while a socket is replaced:
 * do not pile its flows on one neighbour), then the first serving socket.
 * Stores the flow when k is set.  Always SK_PASS: with nothing selected,
 * the kernel hashes over the whole group, old generations included, which
 * only happens with no serving list (n == 0: the loader was never told) or
 * every entry tried empty at once. */
static __always_inline int pick(struct sk_reuseport_md *ctx, const struct udp_flow_config *cfg,
                                struct udp_flow_gstats *g, const struct udp_flow_key *k, int moved,
                                __u64 now)
{
    __u32 base = (cfg->half & 1) * (UDP_FLOW_IDS + 1);
    __u32 *np = bpf_map_lookup_elem(&serving, &base);
    __u32 n = np ? *np : 0, h, id;
    const struct udp_flow_id *got;
    struct udp_flow_id info;
    struct udp_flow f;

    if (n == 0 || n > UDP_FLOW_IDS)
        goto unsteered;
    h = mix(ctx->hash, cfg->salt);
    id = serving_id(base + 1 + h % n);
    got = try_select(ctx, id, &info);
    if (!got) {
        id = serving_id(base + 1 + mix(h, 0x9e3779b9) % n);
        got = try_select(ctx, id, &info);
    }
    if (!got) {
        id = serving_id(base + 1);
        got = try_select(ctx, id, &info);
    }
    if (!got)
        goto unsteered;
    if (k) {
        f.id = id;
        f.incarnation = got->incarnation;
        f.last_ns = now;
        /* counted only when stored: the evicted estimate is created
         * minus what the table holds */
        if (bpf_map_update_elem(&flows, k, &f, BPF_ANY) == 0) {
            if (moved)
                g->repicked++;
            else
                g->created++;
        }
    }
    given(id, moved);
    touch(g, id, got, now);
    return SK_PASS;
unsteered:
    g->unsteered++;
    return SK_PASS;
}

/* The flow stays where it is: its socket is the same one (incarnation),
 * still a member (the select succeeds), and the flow is either not idle or
 * already on a serving socket (an idle flow on a serving socket has no
 * better place to go; on an old one it moves to the new generation, whose
 * sockets then take it from its next datagram on). */
static __always_inline int stick(struct sk_reuseport_md *ctx, const struct udp_flow_config *cfg,
                                 struct udp_flow_gstats *g, struct udp_flow *f, __u64 now)
{
    __u32 id = f->id;
    struct udp_flow_id *info = bpf_map_lookup_elem(&ids, &id);

    if (!info || info->incarnation != f->incarnation)
        return 0;
    if (now - f->last_ns >= cfg->idle_ns && !info->serving)
        return 0;
    if (bpf_sk_select_reuseport(ctx, &socks, &id, 0))
        return 0;
    if (now - f->last_ns >= UDP_FLOW_REFRESH_NS)
        f->last_ns = now;
    touch(g, id, info, now);
    return 1;
}

SEC("sk_reuseport")
int udp_flow_select(struct sk_reuseport_md *ctx)
{
    struct udp_flow_key k = {};
    const struct udp_flow_config *cfg;
    struct udp_flow_gstats *g;
    struct udp_flow *f;
    __u32 zero = 0;
    __u64 now;

    /* both are arrays of one entry: NULL only to please the verifier */
    cfg = bpf_map_lookup_elem(&config, &zero);
    g = bpf_map_lookup_elem(&gstats, &zero);
    if (!cfg || !g)
        return SK_PASS;
    now = bpf_ktime_get_ns();
    /* unparsable: steered like a new flow, not stored (there is no key) */
    if (parse(ctx, &k))
        return pick(ctx, cfg, g, 0, 0, now);
    f = bpf_map_lookup_elem(&flows, &k);
    if (f && stick(ctx, cfg, g, f, now))
        return SK_PASS;
    return pick(ctx, cfg, g, &k, f != 0, now);
}
