/*
 * opcount: one process drives the C core through a fixed sequence of calls, so
 * that valgrind --tool=callgrind can count the instructions of each hot path
 * exactly (timing on a shared machine is noisy; instruction counts are not).
 *
 *   opcount SCENARIO N     runs N rounds of SCENARIO after the set-up
 *
 * Scenarios: q1 (queue push 1 / pop 1), q1one (the same on a ring of one consumer
 * slot), qbatch (queue push / pop_many of 1024),
 * qzc (queue reserve+commit / claim+release of 1), b1 (broadcast-block push 1 /
 * pop 1), ow1 (broadcast-overwrite push 1 / pop 1), bzc (broadcast-block
 * reserve+commit / claim+release of 1). benchmarks/opcount.sh runs each with N
 * and 2N rounds under callgrind; the difference over N is the cost of a round,
 * with set-up and teardown cancelled out.
 */
#define _GNU_SOURCE
#include "shmring.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REC 64u
#define CAP 4096u
#define BATCH 1024u

static int die(const char *what, long rc)
{
    fprintf(stderr, "opcount: %s failed (%ld)\n", what, rc);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return fprintf(stderr, "usage: opcount SCENARIO N\n"), 2;
    const char *sc = argv[1];
    long n = atol(argv[2]);
    int bcast = sc[0] == 'b' || sc[0] == 'o';
    char name[32];
    snprintf(name, sizeof name, "opcount-%d", (int)getpid());
    shmr_params prm = {CAP, REC, 8, bcast ? SHMR_MODE_BROADCAST : SHMR_MODE_QUEUE,
                       sc[0] == 'o' ? SHMR_OVERFLOW_OVERWRITE : SHMR_OVERFLOW_BLOCK, 4, "|V64", 4};
    if (strcmp(sc, "q1one") == 0)
        prm.max_consumers = 1; /* one consumer slot: claims by store, no CAS */
    shmr_ring *r;
    shmr_producer *p;
    shmr_consumer *c;
    long rc;
#ifdef OPCOUNT_CREATE_EXIST_OK /* cores before the split took a dead exist_ok argument */
    if ((rc = shmr_create(name, &prm, 0600, 0, &r)))
#else
    if ((rc = shmr_create(name, &prm, 0600, &r)))
#endif
        die("create", rc);
    shmr_unlink(name);
    if ((rc = shmr_producer_open(r, &p)))
        die("producer_open", rc);
    if ((rc = shmr_consumer_open(r, SHMR_START_LATEST, &c)))
        die("consumer_open", rc);
    static uint8_t in[BATCH * REC], out[BATCH * REC];
    memset(in, 7, sizeof in);
    uint64_t sum = 0, dropped = 0;
    int zc = strstr(sc, "zc") != NULL;
    uint64_t per = strcmp(sc, "qbatch") == 0 ? BATCH : 1;
    for (long i = 0; i < n; i++) {
        if (zc) {
            void *w;
            const void *rd;
            if (shmr_reserve(p, 1, &w) != 1)
                die("reserve", i);
            memcpy(w, in, REC);
            shmr_commit(p, 1);
            if (shmr_claim(c, 1, &rd, &dropped) != 1)
                die("claim", i);
            sum += ((const uint8_t *)rd)[0];
            shmr_release(c);
        } else {
            if ((rc = shmr_push(p, in, per)) != (long)per)
                die("push", rc);
            if ((rc = shmr_pop(c, out, per, &dropped)) != (long)per)
                die("pop", rc);
            sum += out[0];
        }
    }
    shmr_consumer_free(c);
    shmr_producer_free(p);
    shmr_detach(r);
    printf("%s rounds=%ld sum=%llu\n", sc, n, (unsigned long long)sum);
    return 0;
}
