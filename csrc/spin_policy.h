/*
 * When a wait spins before it sleeps: a process-local policy over
 * shmr_ec_wait's spin budget, one state per producer or consumer handle.
 *
 * A spin pays only while the other side runs on another CPU at the same
 * time. When the scheduler has put both sides on one CPU (it does: a futex
 * wake may pull the wakee next to the waker, and on a busy machine the other
 * CPU may be taken), a spin can never see the peer move, and the sched_yield
 * that follows it hands the CPU to the peer without ever sleeping: the two
 * sides then take turns for the rest of the run, each filling or draining the
 * whole ring while the other waits, and no wake-up ever gives the scheduler a
 * chance to move one of them to the free CPU. Measured with 1024-record
 * batches: no sleep at all, one yield per ring-full, and wall time the sum of
 * the two sides' CPU times (benchmarks/turns.py).
 *
 * So when a spin runs out, the next wait first looks where the peer last ran
 * (/proc/PID/stat: 17-26 us on a loaded 2-CPU machine, about one spin budget,
 * so it is done only after a spin ran out, and at the start of the next wait
 * rather than the end of this one, where it would delay the record that just
 * arrived), and at most once a millisecond. On the
 * same CPU, the waits sleep at once (no spin, no yield): a sleeper is
 * placed afresh when it is woken, on an idle CPU if there is one. On another
 * CPU nothing changes: the peer was preempted or is just slow, and sleeping
 * at once would cost both sides a futex round trip on every wait of a stream
 * that spinning serves in well under a microsecond (and on a busy machine
 * give the CPU away for a whole time slice). Every SHMR_SPIN_PROBE-th sleeping
 * wait spins again and looks again, so the state follows the placement as it
 * changes, at the cost of one spin in SHMR_SPIN_PROBE waits while the sides
 * share a CPU. A budget of 0 (the caller asked never to spin) is passed
 * through untouched.
 */
#ifndef SHMR_SPIN_POLICY_H
#define SHMR_SPIN_POLICY_H

#include <errno.h>
#include <stdint.h>

#include "eventcount.h"
#include "shmring.h"

#define SHMR_SPIN_PROBE 8u /* while sleeping at once, one wait in this many spins anyway */
/* At most one look per this long: a peer preempted over and over on another
 * CPU fails many spins, and a look per failure would cost its partner up to
 * the CPU time of the spins themselves. Placement changes far more slowly. */
#define SHMR_SPIN_LOOK_NS 1000000

struct shmr_spin {
    uint32_t sleeping;  /* a spin ran out with the peer on our CPU: sleep at once */
    uint32_t probe;     /* waits since sleeping began */
    uint32_t look;      /* the last spin ran out: look where the peer runs */
    int64_t looked_ns;  /* CLOCK_MONOTONIC of the last look (0: never) */
    int64_t last_ns;    /* how long the last wait took, if its spin ended it (else INT64_MAX) */
    shmr_wait_stats st; /* counted for tests and benchmarks */
};

/* liveness.c: 1 if a peer of this side (producer_side: any consumer; else the
 * producer) last ran on the CPU we run on. */
int shmr_peer_shares_cpu(shmr_ring *r, int producer_side);

static inline void shmr_spin_set(struct shmr_spin *s, uint32_t sleeping)
{
    if (s->sleeping != sleeping) {
        s->sleeping = sleeping;
        s->probe = 0;
        s->st.switches++;
    }
}

/* mark: the consumer slot's ready word, flagged while counted as a sleeper
 * (shmr_ec_wait_marked); NULL for a producer. more: what a spin waits for
 * beyond ready (shmr_ec_wait_more), NULL for ready alone. */
static inline int shmr_spin_wait_more_for(struct shmr_spin *s, shmr_ring *r, int producer_side, struct shmr_ec *ec,
                                          shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                                          int64_t timeout_ns, int64_t spin_ns, int64_t more_ns)
{
    s->st.waits++;
    s->last_ns = INT64_MAX;
    if (spin_ns <= 0)
        return shmr_ec_wait_marked(ec, mark, ready, arg, timeout_ns, 0);
    if (s->look) {
        int64_t now = shmr_mono_ns();
        if (s->looked_ns == 0 || now - s->looked_ns >= SHMR_SPIN_LOOK_NS) {
            s->look = 0;
            s->looked_ns = now;
            uint32_t shared = (uint32_t)shmr_peer_shares_cpu(r, producer_side);
            s->st.shared_cpu += shared;
            s->st.looks++;
            shmr_spin_set(s, shared);
        }
    }
    if (s->sleeping && ++s->probe % SHMR_SPIN_PROBE != 0) {
        s->st.slept_at_once++;
        return shmr_ec_wait_marked(ec, mark, ready, arg, timeout_ns, 0);
    }
    s->st.spun++;
    int64_t t0 = shmr_mono_ns();
    int rc = more ? shmr_ec_wait_more_for(ec, mark, more, ready, arg, timeout_ns, spin_ns, more_ns)
                  : shmr_ec_wait_marked(ec, mark, ready, arg, timeout_ns, spin_ns);
    if (rc == -EINTR)
        return rc; /* a signal says nothing about where the peer runs */
    /* within the budget: the spin (not the yields or a sleep after it) ended
     * the wait, up to the last clock check's slack; SPUN_OUT: the peer freed
     * something during the spin, only less than more() asked for */
    int64_t took = rc == 0 || rc == SHMR_EC_SPUN_OUT ? shmr_mono_ns() - t0 : INT64_MAX;
    if (rc == SHMR_EC_SPUN_OUT || (rc == 0 && took <= spin_ns)) {
        s->last_ns = took;
        s->st.spin_won++;
        shmr_spin_set(s, 0);
        return 0;
    }
    s->look = 1;
    return rc;
}

static inline int shmr_spin_wait_more(struct shmr_spin *s, shmr_ring *r, int producer_side, struct shmr_ec *ec,
                                      shmr_a32 *mark, shmr_ready_fn more, shmr_ready_fn ready, void *arg,
                                      int64_t timeout_ns, int64_t spin_ns)
{
    return shmr_spin_wait_more_for(s, r, producer_side, ec, mark, more, ready, arg, timeout_ns, spin_ns,
                                   SHMR_EC_MORE_NS);
}

static inline int shmr_spin_wait(struct shmr_spin *s, shmr_ring *r, int producer_side, struct shmr_ec *ec,
                                 shmr_a32 *mark, shmr_ready_fn ready, void *arg, int64_t timeout_ns,
                                 int64_t spin_ns)
{
    return shmr_spin_wait_more(s, r, producer_side, ec, mark, NULL, ready, arg, timeout_ns, spin_ns);
}

#endif
