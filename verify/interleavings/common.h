/*
 * common.h -- shared scaffolding for the forced-interleaving regression tests
 * in verify/interleavings/ (built and run by verify/run_interleavings.sh).
 *
 * Each test is one C file linked with the C core (csrc/*.c) built with
 * -DSHMR_TEST_HOOKS, so the core calls shmr_test_hook(site) at fixed points and
 * the test can park a thread or fork/kill a process exactly there. The sites
 * are enum shmr_hook_site in csrc/shmr_hooks.h. Every test file must define
 * shmr_test_hook (an empty one if it needs none).
 *
 * What this header gives a test:
 *   t_init(name, timeout_s)  watchdog (SIGALRM) + cleanup at exit / on signals
 *   t_segname(tag)           unique segment name "<tag>-<pid>", unlinked at exit
 *   t_mk(...)                create a fresh ring of 8-byte "<u8" records
 *   t_fork()                 fork a child that dies with us, killed at cleanup
 *   CHECK(call)              fatal if a setup call returns < 0
 *   EXPECT_EQ(got, want, what...) / EXPECT(cond, what...)
 *                            non-fatal check: report, remember, carry on
 *   t_finish("summary")      PASS line and exit 0, or FAIL and exit 1
 * Children report through their exit status (t_child_fail), never through the
 * parent's failure counter.
 */
#ifndef SHMR_INTERLEAVINGS_COMMON_H
#define SHMR_INTERLEAVINGS_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "shmr_hooks.h"
#include "shmring.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>


#define T_UNUSED __attribute__((unused))
#define T_MAX_SEGS 8
#define T_MAX_CHILDREN 16

static const char *t_name = "?";
static pid_t t_parent;
static char t_segs[T_MAX_SEGS][40]; /* full POSIX names, "/shmr-<name>" */
static volatile sig_atomic_t t_nsegs;
static pid_t t_children[T_MAX_CHILDREN];
static volatile sig_atomic_t t_nchildren;
static int t_failures;

/* Async-signal-safe: kill our children, unlink our segments. Only in the
 * process that called t_init; forked children leave the segments alone. */
T_UNUSED static void t_cleanup(void)
{
    if (getpid() != t_parent)
        return;
    for (int i = 0; i < t_nchildren; i++)
        if (t_children[i] > 0)
            kill(t_children[i], SIGKILL);
    for (int i = 0; i < t_nsegs; i++)
        shm_unlink(t_segs[i]);
}

T_UNUSED static void t_write_str(const char *s)
{
    ssize_t rc = write(2, s, strlen(s));
    (void)rc;
}

T_UNUSED static void t_on_signal(int sig)
{
    t_write_str("FAIL ");
    t_write_str(t_name);
    t_write_str(sig == SIGALRM ? ": watchdog timeout (hung interleaving or lost wakeup)\n" : ": killed by a signal\n");
    t_cleanup();
    _exit(sig == SIGALRM ? 124 : 128 + sig);
}

T_UNUSED static void t_init(const char *name, unsigned timeout_s)
{
    t_name = name;
    t_parent = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    atexit(t_cleanup);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = t_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    alarm(timeout_s);
}

/* Fatal failure in the test process: message, cleanup, exit 1. */
__attribute__((format(printf, 1, 2), noreturn, unused)) static void t_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "FAIL %s: ", t_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (getpid() != t_parent)
        _exit(2);
    t_cleanup();
    exit(1);
}

/* Non-fatal: report the deviation and keep going, so one run shows the whole
 * story (a later step can still hang; the watchdog catches that). */
__attribute__((format(printf, 1, 2), unused)) static void t_deviation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "FAIL %s: ", t_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    t_failures++;
}

/* In a forked child: report and exit with a distinctive status the parent checks. */
__attribute__((format(printf, 2, 3), noreturn, unused)) static void t_child_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  child %d of %s: ", (int)getpid(), t_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    _exit(status);
}

#define CHECK(x)                                                                               \
    do {                                                                                       \
        long _rc = (long)(x);                                                                  \
        if (_rc < 0)                                                                           \
            t_fatal("%s:%d: %s returned %ld (%s)", __FILE__, __LINE__, #x, _rc,                \
                    _rc > -SHMR_E_BASE ? strerror((int)-_rc) : "shmring error");               \
    } while (0)

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            char _m[256];                                                                      \
            snprintf(_m, sizeof _m, __VA_ARGS__);                                              \
            t_deviation("%s [line %d: %s]", _m, __LINE__, #cond);                              \
        }                                                                                      \
    } while (0)

#define EXPECT_EQ(got, want, ...)                                                              \
    do {                                                                                       \
        long long _g = (long long)(got), _w = (long long)(want);                               \
        if (_g != _w) {                                                                        \
            char _m[256];                                                                      \
            snprintf(_m, sizeof _m, __VA_ARGS__);                                              \
            t_deviation("%s: got %lld, want %lld [line %d]", _m, _g, _w, __LINE__);            \
        }                                                                                      \
    } while (0)

/* "<tag>-<pid>", registered for unlinking; <= SHMR_NAME_MAX, [A-Za-z0-9._-]. */
T_UNUSED static const char *t_segname(const char *tag)
{
    static char names[T_MAX_SEGS][SHMR_NAME_MAX + 1];
    if (t_nsegs >= T_MAX_SEGS)
        t_fatal("too many segments");
    char *n = names[t_nsegs];
    int len = snprintf(n, sizeof names[0], "%s-%d", tag, (int)getpid());
    if (len < 0 || len > SHMR_NAME_MAX || shmr_name_check(n) != 0)
        t_fatal("bad segment name for tag %s", tag);
    snprintf(t_segs[t_nsegs], sizeof t_segs[0], "/shmr-%s", n);
    t_nsegs++;
    return n;
}

/* A fresh ring of 8-byte records (uint64 sequence numbers) with `slots` consumer slots. */
T_UNUSED static shmr_ring *t_mk_slots(const char *name, uint32_t mode, uint32_t overflow, uint64_t cap,
                                      uint32_t slots)
{
    shmr_unlink(name);
    shmr_params p = {cap, 8, 8, mode, overflow, slots, "<u8", 3};
    shmr_ring *r;
    CHECK(shmr_create(name, &p, 0600, &r));
    return r;
}

/* A fresh ring of 8-byte records (uint64 sequence numbers). */
T_UNUSED static shmr_ring *t_mk(const char *name, uint32_t mode, uint32_t overflow, uint64_t cap)
{
    shmr_unlink(name);
    shmr_params p = {cap, 8, 8, mode, overflow, 8, "<u8", 3};
    shmr_ring *r;
    CHECK(shmr_create(name, &p, 0600, &r));
    return r;
}

/* fork(); the child is SIGKILLed at our cleanup and if the forking thread dies
 * (PR_SET_PDEATHSIG: fork only from the main thread). */
T_UNUSED static pid_t t_fork(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        t_fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != t_parent)
            _exit(99);
        return 0;
    }
    if (t_nchildren < T_MAX_CHILDREN)
        t_children[t_nchildren++] = pid;
    return pid;
}

/* Reap a child (mark it so cleanup does not signal a recycled pid); returns
 * its exit status, 128+sig if killed. */
T_UNUSED static int t_reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            t_fatal("waitpid(%d): %s", (int)pid, strerror(errno));
    for (int i = 0; i < t_nchildren; i++)
        if (t_children[i] == pid)
            t_children[i] = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Push the records from, from+1, ..., from+n-1 (n <= 64); returns shmr_push's result. */
T_UNUSED static int64_t t_push_seq(shmr_producer *p, uint64_t from, uint64_t n)
{
    uint64_t buf[64];
    if (n > 64)
        t_fatal("t_push_seq: n too large");
    for (uint64_t i = 0; i < n; i++)
        buf[i] = from + i;
    return shmr_push(p, buf, n);
}

T_UNUSED static shmr_ring_info t_info(shmr_ring *r)
{
    shmr_ring_info i;
    CHECK(shmr_info(r, &i));
    return i;
}

/* Blocking one-byte pipe messages between processes. */
T_UNUSED static void t_send(int fd, char c)
{
    while (write(fd, &c, 1) != 1)
        if (errno != EINTR)
            t_fatal("pipe write: %s", strerror(errno));
}
T_UNUSED static char t_recv(int fd)
{
    char c;
    ssize_t n;
    while ((n = read(fd, &c, 1)) != 1) {
        if (n == 0)
            t_fatal("pipe closed (peer died early)");
        if (errno != EINTR)
            t_fatal("pipe read: %s", strerror(errno));
    }
    return c;
}

T_UNUSED static void t_sem_wait(sem_t *s)
{
    while (sem_wait(s) != 0)
        if (errno != EINTR)
            t_fatal("sem_wait: %s", strerror(errno));
}

/* PASS line and exit 0, or a FAIL line and exit 1. */
T_UNUSED __attribute__((noreturn)) static void t_finish(const char *summary)
{
    fflush(stdout);
    if (t_failures) {
        fprintf(stderr, "FAIL %s: %d deviation(s) from the correct behaviour\n", t_name, t_failures);
        t_cleanup();
        exit(1);
    }
    printf("PASS %s: %s\n", t_name, summary);
    t_cleanup();
    exit(0);
}

#endif
