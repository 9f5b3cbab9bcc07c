/*
 * reuseport_bpf.h - the eBPF reuseport steering program, for the layers
 * that steer (the supervisor) or measure it (the probe).  A private static
 * layer: not part of libportshare, whose users have no use for it without
 * the supervisor's slots, and whose ABI should not carry it.
 */
#ifndef PS_REUSEPORT_BPF_H
#define PS_REUSEPORT_BPF_H

#include "core.h"

/*
 * The eBPF reuseport steering program (reuseport_bpf.c): SK_REUSEPORT,
 * SELECT_OR_MIGRATE (Linux >= 5.14, CAP_BPF or root), hand-assembled.  It
 * sends each new connection, and each connection that a closed or shut-down
 * listener of the group had queued or in its handshake, to the serving
 * socket of the receiving CPU's slot if one is set (ps__rp_bpf_set_cpu),
 * else to a serving socket by flow hash (ps__rp_bpf_set); with none in the
 * list (none given, or an entry being replaced), the kernel's hash.  Descriptors are -1 when
 * closed.
 */
#define PS__RP_BPF_CPUS 1024
struct ps__rp_bpf {
    int prog, socks, list, bycpu;
    int nlist;                            /* serving slots in the list */
    int slotfd[PS__GROUP_MAX];            /* what socks holds per slot, -1: nothing */
    unsigned long slotino[PS__GROUP_MAX]; /* and that socket's inode */
};

/* All descriptors -1 (nothing open). */
void ps__rp_bpf_init(struct ps__rp_bpf *b);

/* Create the maps and load the program.  0, or -errno with err saying which
 * step failed (EPERM: not privileged; EINVAL: a kernel without
 * SELECT_OR_MIGRATE, or the verifier's reason); nothing stays open. */
int ps__rp_bpf_open(struct ps__rp_bpf *b, char *err, size_t errlen);

/* Attach b's program to fd's reuseport group (replacing any program). */
int ps__rp_bpf_attach(const struct ps__rp_bpf *b, int fd);

/* The slots new connections go to: slot s serves when slotfds[s] >= 0 (a
 * listening member of the group); none serving: the kernel's hash over all.
 * -EBUSY: a socket is still in another sockarray (the previous image's,
 * after an upgrade, until the kernel frees it): try again later.
 * O(PS__GROUP_MAX) work, one syscall per change. */
int ps__rp_bpf_set(struct ps__rp_bpf *b, const int *slotfds, int nslots);

/* Slot s's socket stops listening (closed, shut down, or found so): the
 * kernel took it out of the sockarray; forget it, so that the next
 * ps__rp_bpf_set puts the slot's socket (maybe a new one) in again. */
void ps__rp_bpf_forget(struct ps__rp_bpf *b, int slot);

/* The slot for connections received on cpu (-1: none, use the hash). */
int ps__rp_bpf_set_cpu(struct ps__rp_bpf *b, unsigned cpu, int slot);

/* Close what b holds (an attached program stays with the group until it is
 * replaced or the group's last socket closes). */
void ps__rp_bpf_close(struct ps__rp_bpf *b);

#endif
