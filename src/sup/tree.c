/*
 * tree.c - a worker is its whole process tree.
 *
 * Each worker leads its own process group (spawn.c), so its ordinary
 * children are ended with it: a worker whose time is up gets SIGKILL on the
 * whole group.  A descendant that left the group (setsid, the classic
 * daemon double fork) is caught another way: the supervisor is a child
 * subreaper (PR_SET_CHILD_SUBREAPER), so every orphan of a worker's tree is
 * reparented to us instead of to pid 1.  Such a "stray" is ended as soon as
 * the worker it came from is gone (its environment still names the slot and
 * generation it was started for), and all of them when the supervisor
 * stops.  If the supervisor itself is SIGKILLed, each worker gets SIGKILL
 * from the kernel (PR_SET_PDEATHSIG, which it cannot ignore); a stray that
 * left its worker's group before that is beyond our reach (systemd's
 * KillMode=control-group covers it).
 */
#include "sup_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int ps__tree_init(void)
{
    return prctl(PR_SET_CHILD_SUBREAPER, 1) < 0 ? ps__neg_errno() : 0;
}

void ps__tree_kill(struct ps_sup *sup, struct ps_worker *w)
{
    (void)sup;
    if (w->pid <= 0)
        return;
    kill(-w->pid, SIGKILL); /* its group: pgid == its pid (spawn.c) */
    kill(w->pid, SIGKILL);  /* and itself, should it have left the group */
}

/* /proc/PID/NAME into buf (NUL-terminated); its length, or -1. */
static ssize_t read_proc(const char *pid, const char *name, char *buf, size_t cap)
{
    char path[300];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%s/%s", pid, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* The parent pid from /proc/PID/stat, or -1 (also for a process that is
 * already dying: a zombie, or one with SIGKILL pending, is not a stray to
 * kill and count again); the command name may hold spaces and parentheses,
 * so the fields are read after the last ')'. */
static pid_t parent_of(const char *pid)
{
    char buf[4096], *p, state = '?';
    unsigned long long pending = 0;
    long ppid = -1;

    if (read_proc(pid, "stat", buf, sizeof(buf)) < 0)
        return -1;
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %c %ld", &state, &ppid) != 2 || state == 'Z' || state == 'X')
        return -1;
    /* SIGKILL (bit 8) pending for the process: ours, from an earlier pass */
    if (read_proc(pid, "status", buf, sizeof(buf)) > 0 && (p = strstr(buf, "ShdPnd:")) &&
        sscanf(p + 7, " %llx", &pending) == 1 && (pending & (1ull << (SIGKILL - 1))))
        return -1;
    return (pid_t)ppid;
}

/* PORTSHARE_SLOT and PORTSHARE_GENERATION from a process's environment as it
 * was at its exec; 0 when both were found. */
static int origin_of(const char *pid, int *slot, unsigned *gen)
{
    static char env[65536];
    ssize_t n = read_proc(pid, "environ", env, sizeof(env));
    size_t off = 0;
    int found = 0;

    if (n < 0)
        return -1;
    while (off < (size_t)n) {
        const char *var = env + off;
        if (!strncmp(var, "PORTSHARE_SLOT=", 15)) {
            *slot = atoi(var + 15);
            found |= 1;
        } else if (!strncmp(var, "PORTSHARE_GENERATION=", 21)) {
            *gen = (unsigned)strtoul(var + 21, NULL, 10);
            found |= 2;
        }
        off += strlen(var) + 1;
    }
    return found == 3 ? 0 : -1;
}

static int is_worker(const struct ps_sup *sup, pid_t pid)
{
    int i;

    for (i = 0; i < sup->nworkers; i++)
        if (sup->workers[i].pid == pid)
            return 1;
    return 0;
}

static int origin_alive(const struct ps_sup *sup, int slot, unsigned gen)
{
    int i;

    for (i = 0; i < sup->nworkers; i++) {
        const struct ps_worker *w = &sup->workers[i];
        if (w->pid && w->slot == slot && w->generation == gen && w->state != W_KILLED)
            return 1;
    }
    return 0;
}

void ps__tree_reap_strays(struct ps_sup *sup, int all, const pid_t *keep, int nkeep)
{
    pid_t self = getpid(), pid;
    int k;
    struct dirent *de;
    DIR *proc = opendir("/proc");

    if (!proc)
        return;
    while ((de = readdir(proc))) {
        int slot = -1;
        unsigned gen = 0;
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        if (parent_of(de->d_name) != self)
            continue;
        pid = (pid_t)atoi(de->d_name);
        if (is_worker(sup, pid))
            continue;
        for (k = 0; k < nkeep && keep[k] != pid; k++)
            ;
        if (k < nkeep)
            continue;
        if (!all && origin_of(de->d_name, &slot, &gen) == 0 && origin_alive(sup, slot, gen))
            continue;        /* its worker still runs: it goes when that one goes */
        kill(-pid, SIGKILL); /* a setsid daemon leads a group of its own */
        kill(pid, SIGKILL);
        sup->strays_killed++;
        ps__sup_log(sup, PS_LOG_WARN, "stray_killed",
                    "process %ld (slot %d, generation %u) outlived its worker: SIGKILL", (long)pid,
                    slot, gen);
    }
    closedir(proc);
}

int ps__tree_members(pid_t root, pid_t *out, int cap)
{
    /* no /proc/PID/task/TID/children: not every kernel has
     * CONFIG_PROC_CHILDREN.  Reading a process's parent costs three system
     * calls, for every process of the machine, so one pass over /proc is
     * kept for PASS_KEEP_MS: at most one pass a second, however many
     * workers start at once (a child forked since is seen on the next). */
    enum { MAX_PROCS = 8192, PASS_KEEP_MS = 990 };
    static pid_t pids[MAX_PROCS], parents[MAX_PROCS];
    static int n;
    static uint64_t pass_ms;
    uint64_t now = ps__now_ms();
    struct dirent *de;
    DIR *proc;
    int have = 0, next, i;

    if (cap < 1)
        return 0;
    out[have++] = root;
    if (!pass_ms || now - pass_ms >= PASS_KEEP_MS) {
        proc = opendir("/proc");
        if (!proc)
            return have;
        n = 0;
        while ((de = readdir(proc)) && n < MAX_PROCS) {
            if (de->d_name[0] < '1' || de->d_name[0] > '9')
                continue;
            pids[n] = (pid_t)atoi(de->d_name);
            parents[n] = parent_of(de->d_name);
            n++;
        }
        closedir(proc);
        pass_ms = now;
    }
    for (next = 0; next < have && have < cap; next++)
        for (i = 0; i < n && have < cap; i++)
            if (parents[i] == out[next] && pids[i] != root)
                out[have++] = pids[i];
    return have;
}
