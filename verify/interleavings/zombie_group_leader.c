/*
 * zombie_group_leader -- liveness of a process whose main thread called
 * pthread_exit() while another thread keeps running. Linux then shows the
 * thread-group leader as 'Z' in /proc/PID/stat although the process is alive.
 * (No hook needed: the schedule is set up with pipes.)
 *
 * Race pinned: shmr_proc_alive() used to treat state 'Z' as dead, so a sweeper
 * reclaimed the live thread's queue claim and the producer overwrote records it
 * was still reading (old core: recover -> 1 freed, 4 reclaimed; the child's
 * zero-copy view read 1000.. instead of 0..3).
 *
 * Correct behaviour: such a process counts as alive (a 'Z' leader with other
 * threads): recover frees and reclaims nothing, the producer cannot reuse the
 * held slots (push -> 0) and the holder's records stay 0..3. Once the whole
 * process has exited (an unreaped zombie for real) it counts as dead: recover
 * evicts its slot (1 freed, nothing to reclaim: it had released its claim).
 */
#include "common.h"

#include <fcntl.h>
#include <time.h>

void shmr_test_hook(int site) { (void)site; }

static shmr_ring *R;
static int c2p[2], p2c[2];

static void *holder(void *a)
{
    (void)a;
    shmr_consumer *c;
    CHECK(shmr_consumer_open(R, 0, &c));
    const uint64_t *v;
    int64_t n = shmr_claim(c, 4, (const void **)&v, NULL);
    if (n != 4 || v[0] != 0 || v[1] != 1 || v[2] != 2 || v[3] != 3)
        t_child_fail(3, "holder's claim: got %" PRId64 " records, want 0..3", n);
    t_send(c2p[1], 'c');
    t_recv(p2c[0]); /* parent has swept and pushed */
    if (v[0] != 0 || v[1] != 1 || v[2] != 2 || v[3] != 3)
        t_child_fail(4,
                     "live thread's held claim was overwritten: reads %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                     ", want 0 1 2 3",
                     v[0], v[1], v[2], v[3]);
    shmr_release(c);
    _exit(0); /* whole process exits, consumer slot still owned */
}

/* state letter from /proc/PID/stat, '?' if unreadable */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return '?';
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : '?';
}

int main(void)
{
    t_init("zombie_group_leader", 10);
    R = t_mk(t_segname("zombie-leader"), SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8);
    shmr_producer *p;
    CHECK(shmr_producer_open(R, &p));
    EXPECT_EQ(t_push_seq(p, 0, 8), 8, "initial push 0..7");
    if (pipe(c2p) || pipe(p2c))
        t_fatal("pipe");

    pid_t pid = t_fork();
    if (pid == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, holder, NULL))
            t_child_fail(2, "pthread_create");
        pthread_exit(NULL); /* group leader becomes 'Z', the holder thread lives on */
    }
    t_recv(c2p[0]); /* holder claimed [0,4) */
    char st = '?';
    for (int i = 0; i < 400 && (st = proc_state(pid)) != 'Z'; i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (st != 'Z')
        t_fatal("setup: child's group leader shows state '%c', not 'Z', after pthread_exit", st);
    EXPECT_EQ(kill(pid, 0), 0, "kill(child, 0): the process is alive");

    uint64_t rec = 99;
    int freed = shmr_producer_recover(p, &rec);
    EXPECT_EQ(freed, 0, "recover with a live process whose leader is 'Z': slots freed");
    EXPECT_EQ(rec, 0, "recover with a live process whose leader is 'Z': records reclaimed");
    shmr_consumer *c2;
    CHECK(shmr_consumer_open(R, 0, &c2));
    uint64_t out[8];
    EXPECT_EQ(shmr_pop(c2, out, 8, NULL), 4, "second consumer's pop (4..7)");
    EXPECT_EQ(t_push_seq(p, 1000, 8), 0, "push while the live thread holds [0,4)");
    t_send(p2c[1], 'g');

    /* wait for the whole child to exit but leave it unreaped: a real zombie */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) != 0)
        if (errno != EINTR)
            t_fatal("waitid: %s", strerror(errno));
    if (si.si_code != CLD_EXITED || si.si_status != 0)
        t_deviation("holder process %s %d, want exit status 0 (4 = its live claim was overwritten)",
                    si.si_code == CLD_EXITED ? "exited with status" : "was killed by signal", si.si_status);
    rec = 99;
    freed = shmr_producer_recover(p, &rec);
    EXPECT_EQ(freed, 1, "recover after the whole child exited (unreaped zombie): slots freed");
    EXPECT_EQ(rec, 0, "recover after the whole child exited: records reclaimed (it had released)");
    EXPECT_EQ(t_push_seq(p, 1000, 8), 8, "push after the holder released and exited");
    t_reap(pid);
    shmr_consumer_free(c2);
    t_finish("a process whose main thread exited but another thread runs counts as alive; a real zombie as dead");
}
