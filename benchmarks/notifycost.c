/*
 * notifycost: what the notify fence costs the publishing side, and what its
 * replacement (a membarrier on the way to sleep) costs the sleeping side.
 * benchmarks/notify_fence.py builds it and runs each mode with and without
 * SHMRING_NOTIFY_FENCE=1 (which keeps the seq_cst fence in every notify).
 *
 *   notifycost inproc N   one process: push 1 record, pop 1 record, N times;
 *                         prints ns per push+pop pair
 *   notifycost spsc N     two processes, not pinned: one pushes N records one
 *                         per call, the other pops one per call (both poll);
 *                         prints M records/s
 *   notifycost barrier N  membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), the
 *                         sleeper's added step; prints ns per call
 *   notifycost sleepy N   ping-pong where both sides sleep in the futex at
 *                         every hand-off (no spinning); prints us per round trip
 */
#define _GNU_SOURCE
#include "shmring.h"

#include <linux/membarrier.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "notifycost: %s: %d\n", what, rc);
    exit(2);
}

static shmr_ring *mk(const char *tag, uint64_t cap)
{
    char name[64];
    snprintf(name, sizeof name, "nc-%s-%d", tag, (int)getpid());
    shmr_unlink(name);
    shmr_params p = {cap, 64, 8, SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8, "|V64", 4, 0};
    shmr_ring *r;
    int rc = shmr_create(name, &p, 0600, &r);
    if (rc < 0)
        die("create", rc);
    shmr_unlink(name); /* the mapping lives on; nothing to clean up */
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s inproc|spsc|barrier|sleepy N\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    uint64_t n = strtoull(argv[2], NULL, 10);
    unsigned char rec[64] = {0};
    if (!strcmp(mode, "inproc")) {
        shmr_ring *r = mk("in", 1024);
        shmr_producer *p;
        shmr_consumer *c;
        if (shmr_producer_open(r, &p) < 0 || shmr_consumer_open(r, 0, &c) < 0)
            die("open", -1);
        double t = now_s();
        for (uint64_t i = 0; i < n; i++) {
            memcpy(rec, &i, 8);
            shmr_push(p, rec, 1);
            shmr_pop(c, rec, 1, NULL);
        }
        t = now_s() - t;
        printf("%.2f\n", t / n * 1e9);
    } else if (!strcmp(mode, "spsc")) {
        shmr_ring *r = mk("sp", 4096);
        shmr_producer *p;
        if (shmr_producer_open(r, &p) < 0)
            die("open", -1);
        pid_t pid = fork();
        if (pid == 0) {
            shmr_consumer *c;
            if (shmr_consumer_open(r, 0, &c) < 0)
                _exit(3);
            for (uint64_t i = 0; i < n;) {
                if (shmr_pop(c, rec, 1, NULL) == 1) {
                    uint64_t v;
                    memcpy(&v, rec, 8);
                    if (v != i)
                        _exit(4);
                    i++;
                }
            }
            _exit(0);
        }
        if (shmr_wait_consumers(r, 1, 10000000000LL, 0) < 0)
            die("wait for the consumer", -1);
        double t = now_s();
        for (uint64_t i = 0; i < n;) {
            memcpy(rec, &i, 8);
            if (shmr_push(p, rec, 1) == 1)
                i++;
        }
        int st;
        waitpid(pid, &st, 0);
        t = now_s() - t;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("consumer", st);
        printf("%.3f\n", n / t / 1e6);
    } else if (!strcmp(mode, "barrier")) {
        shmr_ring *r = mk("mb", 2); /* registers this process */
        (void)r;
        double t = now_s();
        for (uint64_t i = 0; i < n; i++)
            syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
        t = now_s() - t;
        printf("%.1f\n", t / n * 1e9);
    } else if (!strcmp(mode, "sleepy")) {
        shmr_ring *ping = mk("pi", 2), *pong = mk("po", 2);
        pid_t pid = fork();
        if (pid == 0) {
            shmr_consumer *c;
            shmr_producer *p;
            if (shmr_consumer_open(ping, 0, &c) < 0 || shmr_producer_open(pong, &p) < 0)
                _exit(3);
            for (uint64_t i = 0; i < n; i++) {
                while (shmr_pop(c, rec, 1, NULL) != 1)
                    shmr_consumer_wait(c, 1000000000, 0);
                shmr_push(p, rec, 1);
            }
            _exit(0);
        }
        shmr_producer *p;
        shmr_consumer *c;
        if (shmr_producer_open(ping, &p) < 0 || shmr_consumer_open(pong, 0, &c) < 0)
            die("open", -1);
        double t = now_s();
        for (uint64_t i = 0; i < n; i++) {
            shmr_push(p, rec, 1);
            while (shmr_pop(c, rec, 1, NULL) != 1)
                shmr_consumer_wait(c, 1000000000, 0);
        }
        t = now_s() - t;
        int st;
        waitpid(pid, &st, 0);
        printf("%.2f\n", t / n * 1e6);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
