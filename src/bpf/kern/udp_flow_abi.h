/*
 * udp_flow_abi.h - what the UDP flow program (udp_flow.bpf.c, compiled by
 * clang -target bpf) and its loader (udp_flow.c, compiled by the host
 * compiler) must agree on: map sizes, keys and values.  Only fixed-width
 * kernel types and no implicit padding, so that both compilers lay the
 * structs out alike (a hash key with a hole would hash garbage).
 */
#ifndef PS_UDP_FLOW_ABI_H
#define PS_UDP_FLOW_ABI_H

#include <linux/types.h>

/* socket ids: 0 .. UDP_FLOW_IDS-1; also the global row of the stats */
#define UDP_FLOW_IDS 4096

/* A flow's last_ns, and an id's last_seen, are rewritten only once they are
 * this old: one store per flow per 100 ms instead of one per datagram (a
 * shared cache line written by every CPU that receives the flow).  Idle
 * times are therefore exact to 100 ms. */
#define UDP_FLOW_REFRESH_NS 100000000ull

struct udp_flow_key {
    __u8 family; /* 4 or 6 */
    __u8 pad0;
    __u16 sport; /* network order, as on the wire */
    __u16 dport;
    __u16 pad1;
    __u32 saddr[4]; /* IPv4: saddr[0] only, the rest 0 */
    __u32 daddr[4];
};

struct udp_flow {
    __u32 id;          /* the socket id the flow sticks to */
    __u32 incarnation; /* of that id when the flow was given to it */
    __u64 last_ns;     /* bpf_ktime_get_ns() (CLOCK_MONOTONIC), to 100 ms */
};

/* per id, written by the loader only */
struct udp_flow_id {
    __u32 incarnation; /* bumped each time the id is given to a new socket */
    __u32 serving;     /* 1 while the id is in the serving list */
};

/* config[0], written by the loader only: one update switches the serving
 * list (the half of serving[] in use) and its salt together */
struct udp_flow_config {
    __u32 salt;
    __u32 half; /* serving[half * (UDP_FLOW_IDS + 1)] = n, then the n ids */
    __u64 idle_ns;
};

/* idstats[id], shared by all CPUs: its counters move once per flow, not
 * per datagram, so an atomic add costs little there; the per-datagram
 * count of an id is dgrams[id], a per-CPU u64 (8 bytes per id and CPU
 * instead of 24) */
struct udp_flow_idstats {
    __u64 new_flows; /* flows given to the id: new, or re-picked */
    __u64 moved;     /* of those, re-picked from another socket */
};

/* gstats[0], per CPU: the whole group */
struct udp_flow_gstats {
    __u64 created;    /* flows inserted in the table (their key was absent) */
    __u64 repicked;   /* flows whose socket was gone, or idle off the serving set */
    __u64 dgrams;     /* datagrams steered to a socket of ours */
    __u64 old_dgrams; /* of those, to a non-serving id */
    __u64 unsteered;  /* datagrams left to the kernel's hash: nothing selectable */
};

#endif
