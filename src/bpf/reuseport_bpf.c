/*
 * reuseport_bpf.c - the eBPF reuseport steering program, hand-assembled.
 *
 * Why hand-assembled and loaded through bpf(2), not clang -target bpf and
 * libbpf: the program is some sixty instructions without a loop, the
 * project already hand-writes its classic BPF, and this keeps the build free
 * of clang's BPF target, libbpf-dev and a generated object file; the whole
 * program is the table below, to be read next to the verifier's rules, and
 * the loader is plain syscalls.  Should the program grow loops, BTF or many
 * maps, libbpf and a .bpf.c file would be the better trade.
 *
 * The program (BPF_PROG_TYPE_SK_REUSEPORT, attached with
 * SO_ATTACH_REUSEPORT_EBPF as BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, Linux
 * >= 5.14) runs for every new connection of the group (on its SYN) and, when
 * a listener of the group is closed or shut down, for every connection
 * queued in it or still in its handshake (ctx->migrating_sk set).  Three
 * maps, written by the supervisor only:
 *
 *   socks  REUSEPORT_SOCKARRAY, slot -> its socket, only while the slot
 *          serves (the kernel lets a socket be in one sockarray entry only)
 *   list   ARRAY of u32: list[0] = n, list[1..n] = the serving slots
 *   bycpu  ARRAY of u32: cpu -> slot + 1 (0: none), for --cpu-affinity
 *
 * and it picks, in this order:
 *   1. socks[bycpu[this cpu] - 1]: the receiving CPU's slot, if it serves
 *      (sk_reuseport programs may call bpf_get_smp_processor_id: it is in
 *      the kernel's base helper set);
 *   2. socks[list[1 + hash % n]]: a serving slot by the flow hash;
 *   3. socks[list[1]] (the entry picked was being replaced);
 *   4. nothing: SK_PASS without a selection is the kernel's own hash over
 *      the group's listening sockets, a foreign member's too: the
 *      supervisor never leaves the list empty while a socket of its own
 *      listens (with no slot ready it lists them all, and connections
 *      wait there for the next worker), so this is only an entry being
 *      replaced twice over, or no socket of ours listening at all.
 *
 * The hash is the kernel's flow hash (for a migration, the migrating
 * request's), so a SYN-cookie ACK looked up again lands where its SYN did.
 * A socket that stops listening leaves the sockarray by itself, so a
 * migration never picks the socket being closed.
 */
#include "reuseport_bpf.h"

#ifdef __linux__
#include <linux/bpf.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif

/* the few instruction shapes the program uses (the kernel's own macros,
 * include/linux/filter.h, are not part of the uapi) */
#define I(c, d, s, o, i)                                                                           \
    ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define MOV64_REG(d, s)  I(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i)  I(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD64_IMM(d, i)  I(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define MOD32_REG(d, s)  I(BPF_ALU | BPF_MOD | BPF_X, d, s, 0, 0)
#define LDX_W(d, s, o)   I(BPF_LDX | BPF_MEM | BPF_W, d, s, o, 0)
#define STX_W(d, s, o)   I(BPF_STX | BPF_MEM | BPF_W, d, s, o, 0)
#define ST_W(d, o, i)    I(BPF_ST | BPF_MEM | BPF_W, d, 0, o, i)
#define JEQ_IMM(d, i, o) I(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define CALL(f)          I(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT()           I(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
/* two instructions: dst = the map m (a placeholder the loader patches) */
#define LD_MAP(d, m) I(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, m), I(0, 0, 0, 0, 0)

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };

#define MAP_SOCKS (-101)
#define MAP_LIST  (-102)
#define MAP_BYCPU (-103)

#define HASH_OFF ((short)offsetof(struct sk_reuseport_md, hash))

/* Jumps name a label; the loader resolves them and drops the labels (a
 * LABEL is a "ja +0" whose imm names it: never loaded). */
enum { L_LIST = 1, L_PASS, L_COUNT };
#define TO(l)      (0x7f00 + (l))
#define LABEL_BASE 0x4c00
#define LABEL(l)   I(BPF_JMP | BPF_JA, 0, 0, 0, LABEL_BASE + (l))

/* r1 = socks[*(u32 *)(r10 - 8)]: select it, r0 = 0 when selected */
#define SELECT_SLOT_AT_FP8()                                                                       \
    MOV64_REG(R1, R6), LD_MAP(R2, MAP_SOCKS), MOV64_REG(R3, R10), ADD64_IMM(R3, -8),               \
        MOV64_IMM(R4, 0), CALL(BPF_FUNC_sk_select_reuseport)
/* r0 = &map[*(u32 *)(r10 - 4)] or NULL */
#define LOOKUP_AT_FP4(m)                                                                           \
    LD_MAP(R1, m), MOV64_REG(R2, R10), ADD64_IMM(R2, -4), CALL(BPF_FUNC_map_lookup_elem)

/* r6 = ctx, r7 = n; u32 keys on the stack: r10-4 (arrays), r10-8 (socks) */
static const struct bpf_insn program[] = {
    MOV64_REG(R6, R1),
    /* 1. the receiving CPU's slot */
    CALL(BPF_FUNC_get_smp_processor_id),
    STX_W(R10, R0, -4),
    LOOKUP_AT_FP4(MAP_BYCPU),
    JEQ_IMM(R0, 0, TO(L_LIST)),
    LDX_W(R1, R0, 0),
    JEQ_IMM(R1, 0, TO(L_LIST)), /* no slot for this CPU */
    ADD64_IMM(R1, -1),
    STX_W(R10, R1, -8),
    SELECT_SLOT_AT_FP8(),
    JEQ_IMM(R0, 0, TO(L_PASS)), /* selected; else that slot does not serve */
    LABEL(L_LIST),
    /* 2. n = list[0]; slot = list[1 + hash % n] */
    ST_W(R10, -4, 0),
    LOOKUP_AT_FP4(MAP_LIST),
    JEQ_IMM(R0, 0, TO(L_PASS)),
    LDX_W(R7, R0, 0),
    JEQ_IMM(R7, 0, TO(L_PASS)), /* nobody serves: the kernel's hash */
    LDX_W(R8, R6, HASH_OFF),
    MOD32_REG(R8, R7),
    ADD64_IMM(R8, 1),
    STX_W(R10, R8, -4),
    LOOKUP_AT_FP4(MAP_LIST),
    JEQ_IMM(R0, 0, TO(L_PASS)),
    LDX_W(R1, R0, 0),
    STX_W(R10, R1, -8),
    SELECT_SLOT_AT_FP8(),
    JEQ_IMM(R0, 0, TO(L_PASS)),
    /* 3. that slot's entry was being replaced: the first serving slot */
    ST_W(R10, -4, 1),
    LOOKUP_AT_FP4(MAP_LIST),
    JEQ_IMM(R0, 0, TO(L_PASS)),
    LDX_W(R1, R0, 0),
    STX_W(R10, R1, -8),
    SELECT_SLOT_AT_FP8(),
    LABEL(L_PASS),
    /* with the selection made, or (4.) none: the kernel's hash */
    MOV64_IMM(R0, SK_PASS),
    EXIT(),
};

#define NINSNS (sizeof(program) / sizeof(program[0]))

static int sys_bpf(int cmd, union bpf_attr *attr)
{
    long r;

    do
        r = syscall(SYS_bpf, cmd, attr, sizeof(*attr));
    while (r < 0 && errno == EINTR);
    return r < 0 ? ps__neg_errno() : (int)r;
}

/* bpf(2) descriptors are always close-on-exec: no worker inherits them. */
static int map_create(enum bpf_map_type type, unsigned value_size, unsigned entries)
{
    union bpf_attr a;

    memset(&a, 0, sizeof(a));
    a.map_type = type;
    a.key_size = 4;
    a.value_size = value_size;
    a.max_entries = entries;
    return sys_bpf(BPF_MAP_CREATE, &a);
}

static int map_update(int map, uint32_t key, const void *value)
{
    union bpf_attr a;

    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)value;
    a.flags = BPF_ANY;
    return sys_bpf(BPF_MAP_UPDATE_ELEM, &a);
}

static int map_delete(int map, uint32_t key)
{
    union bpf_attr a;
    int r;

    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)map;
    a.key = (uint64_t)(uintptr_t)&key;
    r = sys_bpf(BPF_MAP_DELETE_ELEM, &a);
    return r == -ENOENT ? 0 : r;
}

static int is_label(const struct bpf_insn *in)
{
    return in->code == (BPF_JMP | BPF_JA) && in->imm > LABEL_BASE && in->imm < LABEL_BASE + L_COUNT;
}

/* The table without its labels, jumps resolved, maps patched in; returns
 * the instruction count. */
static unsigned assemble(const struct ps__rp_bpf *b, struct bpf_insn *code)
{
    int at[L_COUNT] = {0};
    unsigned i, n = 0;

    for (i = 0; i < NINSNS; i++) {
        if (is_label(&program[i]))
            at[program[i].imm - LABEL_BASE] = (int)n;
        else
            code[n++] = program[i];
    }
    for (i = 0; i < n; i++) {
        if (code[i].code == (BPF_LD | BPF_DW | BPF_IMM))
            code[i].imm = code[i].imm == MAP_SOCKS  ? b->socks
                          : code[i].imm == MAP_LIST ? b->list
                                                    : b->bycpu;
        if (BPF_CLASS(code[i].code) == BPF_JMP && code[i].off >= TO(1) && code[i].off < TO(L_COUNT))
            code[i].off = (short)(at[code[i].off - TO(0)] - (int)(i + 1));
    }
    return n;
}

static int load(const struct ps__rp_bpf *b, char *log, size_t loglen)
{
    struct bpf_insn code[NINSNS];
    union bpf_attr a;

    memset(&a, 0, sizeof(a));
    a.insn_cnt = assemble(b, code);
    a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
    a.expected_attach_type = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE;
    a.insns = (uint64_t)(uintptr_t)code;
    /* the kernel reads the license only to allow GPL-only helpers, and
     * this program calls none */
    a.license = (uint64_t)(uintptr_t) "portshare";
    if (log && loglen > 1) {
        log[0] = '\0';
        a.log_buf = (uint64_t)(uintptr_t)log;
        a.log_size = (uint32_t)loglen;
        a.log_level = 1;
    }
    return sys_bpf(BPF_PROG_LOAD, &a);
}

void ps__rp_bpf_init(struct ps__rp_bpf *b)
{
    int i;

    b->prog = b->socks = b->list = b->bycpu = -1;
    b->nlist = 0;
    for (i = 0; i < PS__GROUP_MAX; i++) {
        b->slotfd[i] = -1;
        b->slotino[i] = 0;
    }
}

/* The verifier's last line (its verdict), or "" */
static const char *last_line(char *log)
{
    size_t n = strlen(log);
    const char *last;

    while (n && log[n - 1] == '\n')
        log[--n] = '\0';
    last = strrchr(log, '\n');
    return last ? last + 1 : log;
}

int ps__rp_bpf_open(struct ps__rp_bpf *b, char *err, size_t errlen)
{
    static char log[16384];
    uint32_t zero = 0;
    int r;

    ps__rp_bpf_init(b);
    r = b->list = map_create(BPF_MAP_TYPE_ARRAY, 4, PS__GROUP_MAX + 1);
    if (r >= 0)
        r = b->bycpu = map_create(BPF_MAP_TYPE_ARRAY, 4, PS__RP_BPF_CPUS);
    if (r < 0) {
        ps__set_error(err, errlen, "bpf(BPF_MAP_CREATE array): %s", ps_strerror(r));
        goto error;
    }
    r = b->socks = map_create(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 8, PS__GROUP_MAX);
    if (r < 0) {
        ps__set_error(err, errlen, "bpf(BPF_MAP_CREATE reuseport_sockarray): %s", ps_strerror(r));
        goto error;
    }
    r = map_update(b->list, 0, &zero);
    if (r < 0) {
        ps__set_error(err, errlen, "bpf(BPF_MAP_UPDATE_ELEM): %s", ps_strerror(r));
        goto error;
    }
    r = b->prog = load(b, NULL, 0);
    if (r < 0) {
        /* again, for the verifier's reason (a log too long for the buffer
         * fails a load with ENOSPC, so only once it failed anyway); EINVAL
         * without a log: a kernel without SELECT_OR_MIGRATE (< 5.14) */
        log[0] = '\0';
        load(b, log, sizeof(log));
        const char *why = last_line(log);
        ps__set_error(err, errlen, "bpf(BPF_PROG_LOAD sk_reuseport select_or_migrate): %s%s%s",
                      ps_strerror(r), *why ? "; verifier: " : "", why);
        goto error;
    }
    return 0;

error:
    ps__rp_bpf_close(b);
    return r;
}

int ps__rp_bpf_attach(const struct ps__rp_bpf *b, int fd)
{
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &b->prog, sizeof(b->prog)) < 0)
        return ps__neg_errno();
    return 0;
}

/* What is in socks is known by the socket's inode, not its descriptor: a
 * slot's socket replaced by a fresh one may get a number its old one, or
 * another slot's, had before. */
static int socks_set(struct ps__rp_bpf *b, int slot, int fd)
{
    uint64_t v = (uint64_t)fd;
    unsigned long ino = 0;
    struct stat st;
    int r;

    if (fd >= 0 && fstat(fd, &st) == 0)
        ino = (unsigned long)st.st_ino;
    if (b->slotfd[slot] == fd && (fd < 0 || b->slotino[slot] == ino))
        return 0;
    r = fd < 0 ? map_delete(b->socks, (uint32_t)slot) : map_update(b->socks, (uint32_t)slot, &v);
    if (r == 0) {
        b->slotfd[slot] = fd;
        b->slotino[slot] = ino;
    }
    return r;
}

/*
 * New sockets enter socks before the list names them, the list's entries
 * before its count, and sockets leave socks after the list stopped naming
 * them.  A program running meanwhile sees the old list or the new one, or
 * an empty entry (then list[1], then the kernel's hash).
 */
int ps__rp_bpf_set(struct ps__rp_bpf *b, const int *slotfds, int nslots)
{
    uint32_t n = 0, slot;
    int s, r;

    if (nslots < 0 || nslots > PS__GROUP_MAX)
        return -EINVAL;
    for (s = 0; s < nslots; s++) {
        if (slotfds[s] < 0)
            continue;
        r = socks_set(b, s, slotfds[s]);
        if (r < 0)
            return r;
        slot = (uint32_t)s;
        r = map_update(b->list, 1 + n++, &slot);
        if (r < 0)
            return r;
    }
    r = map_update(b->list, 0, &n);
    if (r < 0)
        return r;
    b->nlist = (int)n;
    for (s = 0; s < PS__GROUP_MAX; s++)
        if (s >= nslots || slotfds[s] < 0) {
            r = socks_set(b, s, -1);
            if (r < 0)
                return r;
        }
    return 0;
}

void ps__rp_bpf_forget(struct ps__rp_bpf *b, int slot)
{
    if (slot >= 0 && slot < PS__GROUP_MAX && b->slotfd[slot] >= 0) {
        map_delete(b->socks, (uint32_t)slot);
        b->slotfd[slot] = -1;
    }
}

int ps__rp_bpf_set_cpu(struct ps__rp_bpf *b, unsigned cpu, int slot)
{
    uint32_t v = slot < 0 ? 0 : (uint32_t)slot + 1;

    if (cpu >= PS__RP_BPF_CPUS)
        return -EINVAL;
    return map_update(b->bycpu, cpu, &v);
}

void ps__rp_bpf_close(struct ps__rp_bpf *b)
{
    if (b->prog >= 0)
        ps__close(b->prog);
    if (b->socks >= 0)
        ps__close(b->socks);
    if (b->list >= 0)
        ps__close(b->list);
    if (b->bycpu >= 0)
        ps__close(b->bycpu);
    ps__rp_bpf_init(b);
}

#else /* no eBPF reuseport programs here */

void ps__rp_bpf_init(struct ps__rp_bpf *b)
{
    b->prog = b->socks = b->list = b->bycpu = -1;
}
int ps__rp_bpf_open(struct ps__rp_bpf *b, char *err, size_t errlen)
{
    ps__rp_bpf_init(b);
    ps__set_error(err, errlen, "eBPF reuseport programs are Linux only");
    return -ENOTSUP;
}
int ps__rp_bpf_attach(const struct ps__rp_bpf *b, int fd)
{
    (void)b, (void)fd;
    return -ENOTSUP;
}
int ps__rp_bpf_set(struct ps__rp_bpf *b, const int *slotfds, int nslots)
{
    (void)b, (void)slotfds, (void)nslots;
    return -ENOTSUP;
}
int ps__rp_bpf_set_cpu(struct ps__rp_bpf *b, unsigned cpu, int slot)
{
    (void)b, (void)cpu, (void)slot;
    return -ENOTSUP;
}
void ps__rp_bpf_forget(struct ps__rp_bpf *b, int slot)
{
    (void)b, (void)slot;
}
void ps__rp_bpf_close(struct ps__rp_bpf *b)
{
    ps__rp_bpf_init(b);
}
#endif
