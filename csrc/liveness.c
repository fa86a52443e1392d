/*
 * Liveness: process identity from /proc, owner words, sweeping dead consumers
 * (see liveness.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "liveness.h"

#include "eventcount.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads /proc/PID/<file> into buf as a C string; 0 if unreadable (gone). */
static int read_proc(uint32_t pid, const char *file, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/%s", pid, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot); 0 if the
 * process is gone. *state gets field 3. The command name (field 2) may hold
 * spaces and ')', so parsing starts after the last ')'. */
static uint64_t proc_stat(uint32_t pid, char *state)
{
    char buf[1024];
    if (!read_proc(pid, "stat", buf, sizeof buf))
        return 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    int field = 2;
    uint64_t start = 0;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3 && state)
            *state = tok[0];
        if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    }
    return start;
}

uint64_t shmr_proc_start_time(uint32_t pid) { return proc_stat(pid, NULL); }

/* Field 39 of /proc/PID/stat: the CPU the process last ran on; -1 if unknown. */
static int proc_cpu(uint32_t pid)
{
    char buf[1024];
    if (!read_proc(pid, "stat", buf, sizeof buf))
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        if (++field == 39)
            return atoi(tok);
    return -1;
}

/* An owner's process can be looked up in our /proc only from its own pid
 * namespace; a peer elsewhere, gone or mid-sweep counts as on another CPU. */
static int owner_on_cpu(uint64_t owner, uint64_t pidns, uint64_t self_ns, int cpu)
{
    if (owner == 0 || SHMR_IS_BUSY(owner) || (pidns != 0 && pidns != self_ns))
        return 0;
    return proc_cpu((uint32_t)owner) == cpu;
}

/* Reads at most this many consumers' /proc entries per look: a producer with
 * many consumers learns enough from the first few. */
#define PEER_LOOKS 8

/* Relaxed loads: the answer only picks how the next waits spin, and an owner
 * word read stale (a consumer leaving, a producer taking over) misjudges one
 * choice that the next probe corrects; nothing is read through it. */
int shmr_peer_shares_cpu(shmr_ring *r, int producer_side)
{
    int cpu = sched_getcpu();
    if (cpu < 0)
        return 0;
    uint64_t self_ns = shmr_self_pidns();
    if (!producer_side)
        return owner_on_cpu(shmr_load_relaxed64(&r->ctl->producer_owner),
                            shmr_load_relaxed64(&r->ctl->producer_pidns), self_ns, cpu);
    uint32_t looked = 0;
    for (uint32_t i = 0; i < r->max_consumers && looked < PEER_LOOKS; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        uint64_t owner = shmr_load_relaxed64(&s->owner);
        if (owner == 0)
            continue;
        looked++;
        if (owner_on_cpu(owner, shmr_load_relaxed64(&s->pidns), self_ns, cpu))
            return 1;
    }
    return 0;
}

/* "Threads:" of /proc/PID/status, 0 if unreadable. */
static int proc_threads(uint32_t pid)
{
    char buf[4096];
    if (!read_proc(pid, "status", buf, sizeof buf))
        return 0;
    char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : 0;
}

/* Three answers, because two would lie: a process we may not inspect (another
 * user's under hidepid, EPERM) or cannot name (another pid namespace, where its
 * pid means some other process here) is UNKNOWN, and UNKNOWN never evicts,
 * reclaims or closes anything. Only ESRCH, a zombie, or a different start time
 * at the same pid in our own namespace proves death. */
int shmr_proc_liveness(uint32_t pid, uint64_t start_time, uint64_t pidns)
{
    if (pid == 0)
        return SHMR_DEAD;
    if (pidns != 0 && pidns != shmr_self_pidns())
        return SHMR_UNKNOWN;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return SHMR_DEAD;
    char state = '?';
    uint64_t st = proc_stat(pid, &state);
    if (st == 0) {
        /* kill() says the pid exists (or may not be signalled); without its
         * stat we cannot tell it from a reuse. A process that exits meanwhile
         * is seen dead (ESRCH) by the next check. */
        return kill((pid_t)pid, 0) != 0 && errno == ESRCH ? SHMR_DEAD : SHMR_UNKNOWN;
    }
    if (state == 'Z' || state == 'X') {
        /* a zombie can do nothing more, unless only its main thread exited
         * and other threads still run (Linux shows the group leader as Z) */
        if (proc_threads(pid) <= 1)
            return SHMR_DEAD;
    }
    if (start_time != 0 && (st & 0xffffffffu) != (start_time & 0xffffffffu))
        return SHMR_DEAD; /* pid reused by another process */
    return SHMR_ALIVE;
}

int shmr_proc_alive(uint32_t pid, uint64_t start_time)
{
    return shmr_proc_liveness(pid, start_time, 0) != SHMR_DEAD;
}

/* The inode of /proc/self/ns/pid: names our pid namespace. Read each time
 * (one stat, cheaper than the /proc reads around it): a cache would need
 * invalidating after fork into a namespace the parent unshared. */
uint64_t shmr_self_pidns(void)
{
    struct stat sb;
    return stat("/proc/self/ns/pid", &sb) == 0 ? (uint64_t)sb.st_ino : 0;
}

uint64_t shmr_self_owner(void)
{
    uint32_t pid = (uint32_t)getpid();
    uint64_t st = proc_stat(pid, NULL);
    return ((st & 0xffffffffu) << 32) | pid;
}

int shmr_owner_liveness(uint64_t owner, uint64_t pidns)
{
    if (owner == 0)
        return SHMR_DEAD;
    if (SHMR_IS_BUSY(owner)) /* alive while its sweeper is */
        return shmr_proc_liveness((uint32_t)owner, 0, pidns);
    return shmr_proc_liveness((uint32_t)owner, owner >> 32, pidns);
}

int shmr_claim_owner(shmr_a64 *word, shmr_a64 *ns_word, uint64_t me)
{
    uint64_t cur = shmr_load_acquire64(word);
    for (;;) {
        /* the namespace word is written after the owner word: one read after
         * the owner can be stale only for an owner that just changed, and the
         * CAS below fails then */
        if (cur != 0 && shmr_owner_liveness(cur, shmr_load_acquire64(ns_word)) != SHMR_DEAD)
            return -SHMR_EPRODUCER;
        if (shmr_cas_seqcst64(word, &cur, me)) {
            shmr_store_release64(ns_word, shmr_self_pidns());
            return 0;
        }
    }
}

int shmr_peer_add(uint64_t owner, uint64_t pidns, uint64_t self_ns, uint64_t *out, uint32_t cap, uint32_t *n)
{
    if (owner == 0)
        return 0;
    if (SHMR_IS_BUSY(owner))
        return (uint32_t)owner == (uint32_t)getpid() ? 0 : -EXDEV;
    if (pidns != 0 && pidns != self_ns)
        return -EXDEV;
    if ((uint32_t)owner == (uint32_t)getpid())
        return 0;
    uint32_t have = *n < cap ? *n : cap;
    for (uint32_t i = 0; i < have; i++)
        if (out[i] == owner)
            return 0;
    if (*n < cap)
        out[*n] = owner;
    ++*n;
    return 0;
}

/* Safe to run concurrently in several processes: every decisive step is a CAS,
 * and a sweeper that dies mid-way leaves BUSY slots that the next sweep takes
 * over. Every dead slot is marked BUSY(me) before any claim is touched, so all
 * dead records are still there when the protocol judges each one. */
void shmr_sweep_mark(shmr_ring *r, int *alive, int *dead)
{
    uint64_t me = SHMR_OWNER_BUSY((uint32_t)getpid());
    SHMR_HOOK(SHMR_HOOK_SWEEP_START);
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        uint64_t owner = shmr_load_acquire64(&s->owner);
        int l = owner != 0 ? shmr_owner_liveness(owner, shmr_load_acquire64(&s->pidns)) : SHMR_DEAD;
        /* unknown counts as alive: it holds its claims and is never freed */
        alive[i] = owner != 0 && l != SHMR_DEAD;
        dead[i] = owner != 0 && l == SHMR_DEAD && shmr_cas_seqcst64(&s->owner, &owner, me);
        if (dead[i]) /* the slot is ours now: judge us, the sweeper, by our namespace */
            shmr_store_release64(&s->pidns, shmr_self_pidns());
    }
}

int shmr_sweep_free(shmr_ring *r, const int *dead)
{
    int freed = 0;
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        if (!dead[i])
            continue;
        struct shmr_cslot *s = &r->cslots[i];
        shmr_store_release32(&s->claim_state, CLAIM_NONE);
        shmr_store_release64(&s->claim_n, 0);
        /* killed asleep: its count in data_ec->waiters would make every
         * publish a wake syscall for good */
        shmr_ec_uncount_dead(r->data_ec, &s->ready);
        shmr_store_release32(&s->ready, 0);
        /* popped, dropped and abandoned stay in the slot (cumulative): nothing
         * to move, so nothing to lose or double if this sweeper dies here */
        shmr_fetch_add_relaxed64(&r->ctl->evicted, 1);
        shmr_store_relaxed64(&s->pidns, 0);
        shmr_store_release64(&s->owner, 0); /* pairs with the acquire of a joiner's CAS */
        freed++;
    }
    if (freed)
        shmr_ec_notify_always(r->space_ec);
    return freed;
}
