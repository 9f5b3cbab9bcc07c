/*
 * udp_flow.h - the UDP flow table of reuseport groups (kern/udp_flow.bpf.c)
 * and its loader, for the supervisor: each generation of workers gets its
 * own UDP sockets in the group, and this program keeps every flow (4-tuple)
 * on the socket that got its first datagram while that socket lives, and
 * sends new flows to the serving sockets only.
 *
 * The supervisor owns the sockets and the ids: it adds every UDP socket of
 * the group (old generations' too) and says which ids serve.  The loader
 * never closes a socket it did not open, never prints, and returns 0 or
 * -errno.  One ps__udp_flow per reuseport group (a listener): a socket can
 * be in one sockarray entry only, and the program can select only sockets
 * of the group it runs for.
 */
#ifndef PS_UDP_FLOW_H
#define PS_UDP_FLOW_H

#include <stddef.h>
#include <stdint.h>

/* socket ids are 0 .. PS__FLOW_IDS-1 */
#define PS__FLOW_IDS 4096

struct ps__udp_flow_stats {
    uint64_t flows;         /* at the last walk: given to the id's current socket, not idle */
    uint64_t new_flows;     /* flows given to the socket(s): new or moved */
    uint64_t datagrams;     /* datagrams steered to the socket(s) */
    uint64_t moved;         /* flows that came from a closed socket, or idle
                             * from an old one (the group: all re-picks) */
    uint64_t evicted;       /* the group only: an estimate, see ps__udp_flow_stats */
    uint64_t old_datagrams; /* the group only: datagrams to non-serving ids */
    uint64_t unsteered;     /* the group only: left to the kernel's hash */
};

struct ps__udp_flow; /* opaque */

/* Load the program with a table of max_flows flows (>= 1), a flow idle
 * after idle_ms (>= 1) moving off a non-serving socket.  The maps are
 * allocated here: 104 bytes a flow plus 16 a hash bucket (the flows
 * rounded up to a power of two), 0.3 MiB for the per-id maps and 32 KiB
 * per possible CPU for the datagram counters: 4.07 MiB at 32,768 flows on
 * 2 CPUs (README, "The UDP flow table").  On failure, nothing stays
 * open and err has the step and, for a refused load, the verifier's last
 * lines: -EPERM (not privileged), -EINVAL/-EACCES (refused), -ENOMEM.
 * Sets libbpf's print callback to one that drops everything (libbpf keeps
 * one per process; this binary uses libbpf only here). */
int ps__udp_flow_open(struct ps__udp_flow **f, unsigned max_flows, unsigned idle_ms, char *err,
                      size_t errlen);

/* Attach f's program to fd's reuseport group (SO_ATTACH_REUSEPORT_EBPF,
 * replacing any program the group had).  The group keeps it while any of
 * its sockets is open, even after ps__udp_flow_close. */
int ps__udp_flow_attach(const struct ps__udp_flow *f, int fd);

/* Put socket fd in the sockarray at a free id (one whose entry is empty:
 * never used, or its socket closed in every process), after bumping the
 * id's incarnation, so that flows of the id's previous socket do not stick
 * to this one.  The id, or -errno: -ENOSPC no free id; from the kernel's
 * checks (reuseport_array_update_check): -EINVAL fd is not bound or has no
 * SO_REUSEPORT, -EBUSY fd is already in a sockarray (any map: the kernel
 * keeps the map in the socket's sk_user_data), -ENOTSUPP (524) not an
 * IPv4/IPv6 UDP or TCP socket.  The fd stays the caller's.  Cost: one
 * lookup per id tried (round robin from the last id given: usually one)
 * and four map updates. */
int ps__udp_flow_add(struct ps__udp_flow *f, int fd);

/* 1 while socket id is a member (some process holds it open), 0 once the
 * kernel emptied its entry (the socket closed everywhere: the kernel
 * detaches it from the map on its unhash), -errno.  One syscall. */
int ps__udp_flow_alive(const struct ps__udp_flow *f, int id);

/* New flows go to ids[0..n-1] from now on, hashed with a new salt (n may be
 * 0: then the kernel's hash over the whole group).  An id that no longer
 * serves keeps its flows while its socket lives and they are not idle.
 * The ids should hold live sockets: a new flow picked for an empty entry
 * tries one more by hash, then ids[0].  -EINVAL for an id out of range.
 * Cost: O(n + previous n) map updates; the switch is one update. */
int ps__udp_flow_serve(struct ps__udp_flow *f, const int *ids, int n);

/* Milliseconds since the last datagram steered to id (CLOCK_MONOTONIC;
 * exact to 100 ms), or UINT64_MAX when none since the id was given to its
 * socket (or on error).  One syscall. */
uint64_t ps__udp_flow_idle_ms(const struct ps__udp_flow *f, int id);

/* Count the flows of every id: walks the whole table in batches of 1024
 * (BPF_MAP_LOOKUP_BATCH, Linux >= 5.6), O(max_flows): 4 to 6 ms for
 * 32,768 flows on this machine, so at most once a second.  A flow counts
 * for its id while it is not idle and was given to the id's current
 * socket.  ps__udp_flow_stats reports these counts (flows, evicted) until
 * the next walk. */
int ps__udp_flow_walk(struct ps__udp_flow *f);

/* Counters of socket id, or of the whole group with id -1: a few syscalls,
 * no walk (flows and evicted are the last ps__udp_flow_walk's, 0 before
 * one).  The kernel's LRU evicts silently, so evicted = flows inserted -
 * flows in the table at the walk: exact unless two CPUs inserted the same
 * new flow at once (then one too many).  The id's counters start at zero
 * when ps__udp_flow_add gives it a socket; the group's never restart.
 * -EINVAL for an id out of range. */
int ps__udp_flow_stats(const struct ps__udp_flow *f, int id, struct ps__udp_flow_stats *st);

/* The maps a table is made of, in the order ps__udp_flow_export gives them
 * and ps__udp_flow_import takes them: socks, ids, serving, config, flows,
 * last_seen, dgrams, idstats, gstats (udp_flow.c says what each holds).
 * Fixed: a map added to the program goes at the end, and raises the count,
 * so that an older binary refuses the new layout instead of misreading it. */
#define PS__FLOW_NMAPS 9

/* Carrying a table across execve (upgrade): the descriptors of f's maps,
 * PS__FLOW_NMAPS of them in the order above, into fds[0..max-1].  They
 * stay f's: the caller clears their FD_CLOEXEC for the exec and passes
 * their numbers to the new image, but does not close them
 * (ps__udp_flow_close does, in an image that did not exec).  Returns
 * PS__FLOW_NMAPS, or -ENOSPC when max is smaller.  No syscall. */
int ps__udp_flow_export(const struct ps__udp_flow *f, int *fds, int max);

/* Load the program over carried maps (n descriptors from an old image's
 * ps__udp_flow_export) instead of new ones, so that every flow, socket id
 * and counter the old table held goes on: the group's sockets stay in the
 * carried sockarray, and the old program keeps steering with these same
 * maps until ps__udp_flow_attach replaces it (replacing the program leaves
 * the sockarray as it is: udp_flow.c, above this function, says why).
 * What the loader remembers is read back from the maps: the incarnation
 * and serving flag of every id, the serving list in use, where
 * ps__udp_flow_add looks next.  idle_ms may differ from the old table's (it
 * is written into the config; the salt is kept); max_flows must be the old
 * table's.
 * -EINVAL, err saying what differs, when n is not PS__FLOW_NMAPS or a map
 * is not what this binary's program wants (name, type, key or value size,
 * max_entries, flags: another binary's layout, or another max_flows): the
 * caller then opens a fresh table.  Otherwise ps__udp_flow_open's errors.
 * On success the table holds its own duplicates (close-on-exec) and fds[]
 * are CLOSED here; on failure they stay the caller's to close (they are no
 * longer close-on-exec: do not let them leak into workers).
 * Cost: ps__udp_flow_open's load plus PS__FLOW_IDS + 3 lookups and one
 * update: 15 to 21 ms here against 3 to 13 ms for an open (2 CPUs, load
 * average 6), once per upgrade. */
int ps__udp_flow_import(struct ps__udp_flow **f, const int *fds, int n, unsigned max_flows,
                        unsigned idle_ms, char *err, size_t errlen);

/* The id the table holds each socket at: ids[i] for sockfds[i], -1 when the
 * socket is in no entry of f's sockarray (so a supervisor learns its
 * sockets' ids after an exec without writing them down).  The kernel gives
 * a sockarray entry's socket cookie to a lookup from userspace; each socket
 * gives its own with SO_COOKIE.  Returns how many were found, or -errno
 * (-ENOTSOCK/-EBADF for an fd that is not a socket).  Cost: n getsockopt and
 * at most PS__FLOW_IDS map lookups (fewer once all are found): 8 to 16 ms
 * for the whole sockarray here (2 CPUs, load average 6). */
int ps__udp_flow_find(const struct ps__udp_flow *f, const int *sockfds, int n, int *ids);

/* Close the maps and the program (a group it is attached to keeps it). */
void ps__udp_flow_close(struct ps__udp_flow *f);

#endif
