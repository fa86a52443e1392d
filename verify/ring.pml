/*
 * ring.pml -- Promela model of the shmring delivery protocols (csrc/queue.c,
 * csrc/broadcast.c, csrc/eventcount.c).
 *
 * One file, several configurations, selected with -D switches:
 *
 *   -DQUEUE       queue mode: free-running head, shared tail claimed by CAS
 *                 (q_claim), one release record {tag, len} per released batch,
 *                 kept at the batch's first slot (q_release); the producer
 *                 walks the records batch by batch (writable)
 *   -DBLOCK       broadcast, overflow = block: per-consumer cursors, producer
 *                 checks the minimum cursor (writable / refresh_min / announce)
 *   -DOVERWRITE   broadcast, overflow = overwrite: announce() intent before the
 *                 slot writes, consumer copies then re-checks intent (b_torn)
 *   -DEC          every wait goes through the eventcount (ec_wait / ec_notify /
 *                 futex): consumers sleep on data_ec when empty, the producer
 *                 on space_ec when full. Without -DEC both sides busy-poll.
 *                 With -DEC the store a notify follows (head; a release tag or
 *                 a cursor) goes through a store buffer: it may become visible
 *                 after the notifier's load of waiters (the one reordering the
 *                 eventcount must defeat; see "store buffers" below). The
 *                 notifier puts only a compiler barrier there and the sleeper
 *                 issues membarrier(GLOBAL_EXPEDITED) after raising waiters:
 *                 a full fence on every running thread, i.e. every buffer
 *                 drained at once.
 *   -DSB          (with -DEC) the store buffers below; without it every store
 *                 is visible at once (sequential consistency), which keeps the
 *                 large configurations small; the SB configurations check the
 *                 fence/membarrier pairing itself.
 *   -DSB_CURSOR   (with -DEC -DBLOCK -DSB) buffer the cursor store of a consumer's
 *                 advance too (a larger search: extended set only; without
 *                 it, broadcast consumers' stores are visible at once).
 *   -DSYM_FENCE   (with -DEC) the symmetric protocol of a process that could
 *                 not register for membarrier: the notifier's seq_cst fence
 *                 drains its own buffer before it loads waiters; no membarrier.
 *   -DJOIN        broadcast: consumers run shmr_consumer_open concurrently with
 *                 the producer (start OLDEST or LATEST, chosen
 *                 nondeterministically); checks the join Dekker in announce().
 *                 Without it both consumers open (start OLDEST) before the
 *                 producer starts.
 *   -DRESERVE     broadcast: the producer may use shmr_reserve + shmr_commit,
 *                 writing every reserved slot but committing fewer (intent > head).
 *   -DLEAVE       broadcast: consumer 1 may call shmr_consumer_free at any
 *                 point between pops (the producer may be waiting for it).
 *   -DEVICT       queue: evict_after. Whenever it finds the ring full the
 *                 producer may evict consumer 0's held claim (shmr_q_evict:
 *                 CAS claim_state HELD -> EVICTED, then the release record,
 *                 counted abandoned), as if evict_after had just passed; the
 *                 consumer decides its own release by CAS HELD -> RELEASING
 *                 (shmr_q_release) and, losing, discards what it read and
 *                 stops (its next call raises Evicted). Consumer 1 is never
 *                 evicted, so the stream always drains.
 *   -DSOLO        queue: a ring with one consumer slot, whose claim is a plain
 *                 (release) store of tail, no CAS; with -DNRUN=1. Without
 *                 -DNRUN=1 (two consumers racing with plain stores) it must fail.
 *   -DSIMPLE      one record per push and per pop (keeps -DEC / -DJOIN small).
 *   -DNREC=n      records produced (default 3); -DCAP=c capacity (power of
 *                 two, default 2; CAP=4 needs the queue's max batch of 2 only);
 *                 NC (consumer slots) is 2; -DNRUN=1 runs one consumer (queue).
 *
 * Seeded bugs, to show the properties have teeth (each must FAIL):
 *   -DBUG_EC_NO_RECHECK   ec_wait sleeps without re-checking ready() after
 *                         raising waiters                    -> lost wakeup
 *   -DBUG_EC_SEEN_LATE    ec_wait reads epoch after raising waiters and
 *                         re-checking                        -> lost wakeup
 *   -DBUG_NO_FENCE        no fence in ec_notify and no membarrier in ec_wait
 *                                                            -> lost wakeup
 *   -DBUG_BARRIER_EARLY   ec_wait issues its membarrier before raising
 *                         waiters                            -> lost wakeup
 *   -DBUG_NO_TORN_CHECK   b_torn always returns 0            -> torn record
 *   -DBUG_NO_JOIN_DEKKER  announce() skips the join_epoch check -> overwrite
 *                         of a joining consumer's records in block mode
 *   -DBUG_DONE_EARLY      q_release writes its record before the copy -> overwrite
 *   -DBUG_EVICT_PLAIN_RELEASE  with -DEVICT: the consumer releases with plain
 *                         stores, no CAS against the evictor -> a record both
 *                         abandoned and delivered, or read while rewritten
 *   -DBUG_SHARED_CLAIM    the code before commit ca6bf11 (finding B in
 *                         verify/README.md): the join Dekker stores the
 *                         tentative claim in intent itself, which b_torn reads
 *                         -> a joiner discards valid records (with -DJOIN)
 *   -DBUG_UNCLAMPED_MIN   the code before commit 154b4e4 (finding A in
 *                         verify/README.md): no floor in refresh_min, no clamp
 *                         in writable, no notify at the end of a join
 *                         -> a joiner's provisional cursor makes room wrap and
 *                         the producer laps unread records (with -DJOIN, NREC=4)
 *
 * Each shared-memory access of the C code is one Promela statement (one
 * atomic step); purely local computation is folded into the same or a d_step.
 * Promela interleaving is sequentially consistent; verify/README.md explains
 * which orderings in the C code make that sound for the modelled steps.
 *
 * Properties
 *   queue:      every record is consumed exactly once (got[] at delivery and
 *               at the end); a record read is the right one, never a slot
 *               being rewritten (two halves equal and = position + 1).
 *               With -DEVICT: each record is delivered or counted abandoned,
 *               exactly one of the two, and a delivered one is intact.
 *   block:      each consumer sees every record from its start position, in
 *               order, with no skip and no torn/bad count.
 *   overwrite:  a delivered record is never torn and is the record for its
 *               position; records dropped (skipped + bad) equal exactly the
 *               positions not delivered; after close each consumer has
 *               accounted for every position from its start to head.
 *   EC:         no lost wakeup / no deadlock: every blocked state is an
 *               invalid end state (no end labels: sleeping in FUTEX_WAIT for
 *               ever is an error), plus the final checks in init.
 */

#ifndef CAP
#define CAP 2
#endif
#define MASK (CAP - 1)
#ifndef NREC
#define NREC 3
#endif
#define NC 2
#ifndef NRUN
#define NRUN NC         /* consumers that run (-DNRUN=1: one, the other slot stays free) */
#endif

#if !defined(QUEUE) && !defined(BLOCK) && !defined(OVERWRITE)
#define QUEUE
#endif
#if defined(BLOCK) || defined(OVERWRITE)
#define BROADCAST
#endif

#define MIN(a, b) ((a) < (b) -> (a) : (b))

/* ---- shared segment words (struct shmr_prod_block, shmr_tail_block, ...) ---- */
byte head;              /* prod->head: positions < head are published */
byte intent;            /* prod->intent: positions < intent may be being written */
byte jclaim;            /* prod->join_claim (block): the joiners' Dekker word, >= intent */
byte tail;              /* tail_block->tail (queue) */
byte qtag[CAP];         /* r->releases[s].tag (queue): start of the released batch + cap */
byte qlen[CAP];         /* r->releases[s].len: its length, written before tag */
byte slot_lo[CAP];      /* first half of each slot: record id = position + 1 */
byte slot_hi[CAP];      /* second half, written separately (models a torn write) */
bit  owner[NC];         /* cslot.owner != 0 */
bit  ready[NC];         /* cslot.ready */
byte cursor[NC];        /* cslot.cursor (broadcast) */
byte join_epoch;        /* ctl->join_epoch */
bit  closed;            /* ctl->close_reason != SHMR_OPEN */
byte d_epoch;           /* data_ec->epoch (futex word) */
byte d_waiters;         /* data_ec->waiters */
bit  d_sleep[NC];       /* consumer i is queued in FUTEX_WAIT on data_ec->epoch */
byte s_epoch;           /* space_ec->epoch */
byte s_waiters;         /* space_ec->waiters */
bit  s_sleep;           /* the producer is queued in FUTEX_WAIT on space_ec->epoch */

#ifdef EVICT
#define C_NONE 0
#define C_HELD 2
#define C_RELEASING 3
#define C_EVICTED 4
byte cstate[NC];        /* cslot.claim_state */
byte cpos[NC];          /* cslot.claim_pos */
byte cn[NC];            /* cslot.claim_n */
bit  evicted[NC];       /* cslot.ready == SHMR_EVICTED_MARK */
byte ab[NREC];          /* checking: times each record was counted abandoned */
#endif
#ifdef EC
/* ---- store buffers (EC only) ----
 * Each notifier's last publication may still sit in its CPU's store buffer:
 * the producer's head store, each consumer's release tag (queue) or cursor
 * (broadcast-block advance). Loads read memory, so the notifier's load of
 * waiters can go ahead of it. A buffer drains at any moment (Drainer), before
 * its owner's next store or locked RMW (FIFO order, as on x86), at its owner's
 * seq_cst fence, and, all at once, at anyone's membarrier. Nothing reads its
 * own buffered word back (the C code keeps those values locally). */
byte sb_head;           /* the buffered head value */
bit  sb_head_full;
byte sb_rel_idx[NC];    /* queue: slot of the buffered release tag */
byte sb_rel_val[NC];    /* queue: tag value; broadcast: cursor value */
bit  sb_rel_full[NC];
#endif

/* ---- checking state (not part of the segment) ---- */
byte got[NREC];         /* queue: times each record was consumed */
byte nopen;             /* consumers that finished shmr_consumer_open */
byte nfin;              /* processes that finished */

/* ------------------------------------------------------------------------ */
/* eventcount: ec_notify / ec_notify_always / futex                          */
/* ------------------------------------------------------------------------ */

/* futex_wake_all(&data_ec->epoch) */
inline futex_wake_all_data()
{
    atomic { d_sleep[0] = 0; d_sleep[1] = 0 }
}

#ifdef EC
inline drain_head()
{
    atomic {
        if
        :: sb_head_full -> head = sb_head; sb_head_full = 0
        :: else -> skip
        fi
    }
}

inline drain_rel(who)
{
    atomic {
        if
        :: sb_rel_full[who] ->
#if defined(QUEUE)
            qtag[sb_rel_idx[who]] = sb_rel_val[who];
#else
            cursor[who] = sb_rel_val[who];
#endif
            sb_rel_full[who] = 0
        :: else -> skip
        fi
    }
}

/* membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): a full fence on every running
 * thread, so every store buffered anywhere becomes visible before it returns */
inline membarrier()
{
    atomic { drain_head(); drain_rel(0); drain_rel(1) }
}

/* the sleeper's barrier after raising waiters and before its re-check */
inline waiter_barrier()
{
#if !defined(SYM_FENCE) && !defined(BUG_NO_FENCE) && !defined(BUG_BARRIER_EARLY)
    membarrier()
#else
    skip                /* SYM_FENCE: shmr_fence_seqcst orders only our own accesses, and our
                         * only buffered store already drained at the locked RMW */
#endif
}

/* the notifier's barrier between its publication and its load of waiters */
#if defined(SB) && defined(SYM_FENCE)
#define NOTIFY_BARRIER(drain) drain;            /* shmr_fence_seqcst() */
#else
#define NOTIFY_BARRIER(drain)                   /* shmr_compiler_barrier(): no instruction */
#endif

/* the hardware drains buffers whenever it likes */
proctype Drainer()
{
end_drain:
    do
    :: atomic { sb_head_full -> head = sb_head; sb_head_full = 0 }
    :: atomic { sb_rel_full[0] -> drain_rel(0) }
    :: atomic { sb_rel_full[1] -> drain_rel(1) }
    od
}

/* ec_notify(data_ec), called by publish() after the (buffered) store of head:
 * barrier; if (relaxed load waiters != 0) { epoch += 1 (release); futex_wake_all } */
inline ec_notify_data()
{
    NOTIFY_BARRIER(drain_head())
    if
    :: d_waiters != 0 -> d_epoch++; futex_wake_all_data()
    :: else -> skip
    fi
}
/* ec_notify(space_ec), called by q_release / b_advance (block) / consumer_free
 * (who: the notifying consumer, whose release may be buffered) */
inline ec_notify_space_by(who)
{
    NOTIFY_BARRIER(drain_rel(who))
    if
    :: s_waiters != 0 -> s_epoch++; s_sleep = 0
    :: else -> skip
    fi
}
inline ec_notify_space() { ec_notify_space_by(me) }

/* the producer publishes: a release store of head, into the store buffer
 * (the previous one has drained: every store since drained it) */
#ifdef SB
inline store_head(v)
{
    atomic { drain_head(); sb_head = v; sb_head_full = 1 }
}
#else
inline store_head(v) { head = v }
#endif
#else
inline store_head(v) { head = v }
#endif

/* Call-site forms that vanish without -DSB (no extra steps, so the SC
 * configurations keep their size): a drain before a store or locked RMW, the
 * sleeper's barrier, and the seeded early membarrier. */
#if defined(EC) && defined(SB)
#define SB_DRAIN_HEAD drain_head();
#define SB_DRAIN_REL(w) drain_rel(w);
#define WAITER_BARRIER waiter_barrier();
#else
#define SB_DRAIN_HEAD
#define SB_DRAIN_REL(w)
#define WAITER_BARRIER
#endif
#if defined(EC) && defined(SB) && defined(BUG_BARRIER_EARLY)
#define MB_EARLY membarrier();
#else
#define MB_EARLY
#endif

#ifndef EC
/* without -DEC nobody ever sleeps, so waiters stays 0 and notify is a no-op */
inline ec_notify_data() { skip }
inline ec_notify_space() { skip }
#endif

/* ------------------------------------------------------------------------ */
/* producer                                                                  */
/* ------------------------------------------------------------------------ */

/* refresh_min(): lowest cursor of ready consumers (head if none), each
 * clamped to floor = head - cap (a joiner's provisional cursor may lag more) */
inline refresh_min()
{
    m = h;
    fl = (h > CAP -> h - CAP : 0);
    i = 0;
    do
    :: i < NC ->
        if
        :: owner[i] == 0 -> skip                /* seq_cst load of owner */
        :: else ->
            if
            :: ready[i] == 0 -> skip            /* seq_cst load of ready */
            :: else ->
                c = cursor[i];                  /* acquire load of cursor */
                if
#ifndef BUG_UNCLAMPED_MIN
                :: c < m -> m = (c < fl -> fl : c)
#else
                :: c < m -> m = c               /* before 154b4e4: no floor */
#endif
                :: else -> skip
                fi
            fi
        fi;
        i++
    :: else -> break
    od;
    minc = m;
    m = 0; c = 0; i = 0; fl = 0
}

/* writable(p, nn) -> k: how many of the next nn positions may be written now */
inline writable(nn)
{
#if defined(QUEUE)
    /* while (writable_end_cache < h + n) { d = &releases[writable_end_cache & mask];
     *     if (acquire load d->tag != writable_end_cache) break;
     *     writable_end_cache += relaxed load d->len; (relaxed store prod->writable_end: takeover only, not modelled) } */
    do
    :: lc < h + nn ->
        if
        :: qtag[lc & MASK] == lc ->
            lc = lc + qlen[lc & MASK]
        :: else -> break
        fi
    :: else -> break
    od;
    k = MIN(lc - h, nn)
#elif defined(BLOCK)
    if
    :: h + nn - minc > CAP -> refresh_min()
    :: else -> skip
    fi;
#ifndef BUG_UNCLAMPED_MIN
    room = CAP - MIN(CAP, h - minc);
#else
    room = CAP - (h - minc);                    /* before 154b4e4: uint64_t wraps when h - min_cache > cap
                                                 * (a byte here: wraps to >= 254, same effect on k) */
#endif
    k = MIN(nn, room)
#else
    k = nn                                      /* overwrite: always writable */
#endif
}

/* announce(p, k) -> k: positions [head, head + k) announced before writing.
 * Block mode first runs the join Dekker on its own word, join_claim (which
 * may be cut back), and only then stores intent, the word b_torn reads. */
inline announce()
{
    want = h + k;
    if
    :: want <= pint -> skip                     /* an earlier announcement covers it */
    :: else ->
#if defined(BLOCK)
#ifndef BUG_SHARED_CLAIM
        jclaim = want;                          /* seq_cst store of join_claim */
#else
        intent = want;                          /* before ca6bf11: the Dekker ran on intent itself */
#endif
#ifndef BUG_NO_JOIN_DEKKER
        je = join_epoch;                        /* seq_cst load of join_epoch */
        if
        :: je != js ->
            js = je;
            refresh_min();
            room = CAP - MIN(CAP, h - minc);
            if
            :: room < k ->
                k = room;
                want = h + k;
#ifndef BUG_SHARED_CLAIM
                jclaim = (want > pint -> want : pint)   /* seq_cst store: cut the claim back */
#else
                intent = (want > pint -> want : pint)
#endif
            :: else -> skip
            fi
        :: else -> skip
        fi;
#endif
#endif
        if
        :: k == 0 -> skip                       /* return 0: nothing announced */
        :: else ->
#ifndef BUG_SHARED_CLAIM
            intent = want;                      /* relaxed store; then shmr_fence_release() */
            pint = want
#else
            if
            :: want > pint -> intent = want; pint = want
            :: else -> skip
            fi
#endif
        fi
    fi;
    want = 0; je = 0; room = 0
}

/* shmr_producer_wait -> ec_wait(space_ec, producer_ready) with
 * producer_ready = writable(p, 1) > 0; same loop as consumer_wait */
inline producer_wait()
{
    writable(1);                                /* if (ready(arg)) return 0 */
    do
    :: k > 0 -> break
    :: else ->
        seen = s_epoch;                         /* acquire load of epoch */
        MB_EARLY
        SB_DRAIN_HEAD                           /* a locked RMW drains our own buffer */
        s_waiters++;                            /* seq_cst fetch_add */
        WAITER_BARRIER                          /* fence + membarrier(GLOBAL_EXPEDITED) */
        writable(1);                            /* if (!ready(arg)) */
        if
        :: k == 0 ->                            /* futex_wait(&epoch, seen): sleeps iff epoch == seen */
            atomic {
                if
                :: s_epoch == seen -> s_sleep = 1
                :: else -> skip                 /* EAGAIN */
                fi
            };
            (s_sleep == 0)                      /* blocked until futex_wake_all */
        :: else -> skip
        fi;
        s_waiters--;                            /* seq_cst fetch_sub */
        writable(1)                             /* if (ready(arg)) return 0; else sleep again */
    od;
    k = 0; seen = 0
}

proctype Producer()
{
    byte h, n, k, lc, minc, pint, js, je, want, i, m, c, fl, room, seen, cm;
    bit res, ev;

    /* shmr_producer_open */
    h = head;                                   /* acquire load of head */
    pint = intent;                              /* acquire load of intent */
    lc = h;                                     /* writable_end_cache */
    minc = (h > CAP -> h - CAP : 0);            /* min_cache */
    js = join_epoch - 1;                        /* join_seen: force a refresh */

    do
    :: h >= NREC -> break
    :: else ->
        /* shmr_push(p, src, n) (or shmr_reserve(p, n, &ptr) + shmr_commit) */
#ifndef SIMPLE
        if
        :: n = 1
        :: h + 2 <= NREC -> n = 2
        fi;
#else
        n = 1;
#endif
#ifdef RESERVE
        if
        :: res = 0
        :: res = 1; n = MIN(n, CAP - (h & MASK))  /* shmr_reserve: contiguous part only */
        fi;
#endif
        writable(n);
#ifdef BROADCAST
        if
        :: k > 0 -> SB_DRAIN_HEAD announce()    /* announce stores: the buffered head drains first */
        :: else -> skip
        fi;
#endif
        if
        :: k == 0 ->
#ifdef EVICT
            /* shmr_producer_evict, evict_after having passed at any moment:
             * q_evict takes consumer 0's claim if it is still HELD */
            if
            :: cstate[0] == C_HELD ->
                atomic {                        /* seq_cst CAS HELD -> EVICTED */
                    if
                    :: cstate[0] == C_HELD -> cstate[0] = C_EVICTED; ev = 1
                    :: else -> ev = 0
                    fi
                };
                if
                :: ev ->
                    evicted[0] = 1;             /* release store of ready = EVICTED_MARK */
                    d_step {                    /* abandoned = abandoned_base + n (relaxed) */
                        i = 0;
                        do
                        :: i < cn[0] -> ab[cpos[0] + i]++; assert(got[cpos[0] + i] == 0); i++
                        :: else -> break
                        od;
                        i = 0
                    };
                    qlen[cpos[0] & MASK] = cn[0];         /* relaxed store of len */
                    assert(qtag[cpos[0] & MASK] < cpos[0] + CAP); /* the tag CAS finds it unreleased */
                    qtag[cpos[0] & MASK] = cpos[0] + CAP  /* seq_cst CAS of tag */
                :: else -> skip
                fi;
                ev = 0
            :: else -> skip
            fi
#elif defined(EC) && !defined(OVERWRITE)
            producer_wait()
#else
            skip                                /* busy-poll: try again */
#endif
        :: else ->
            /* copy_in(r, head, src, k): each record written as two halves */
            SB_DRAIN_HEAD                       /* stores drain in order: head before these */
            i = 0;
            do
            :: i < k ->
                slot_lo[(h + i) & MASK] = h + i + 1;
                slot_hi[(h + i) & MASK] = h + i + 1;
                i++
            :: else -> break
            od;
            cm = k;
#ifdef RESERVE
            if
            :: res && k > 1 -> cm = 1           /* shmr_commit(p, fewer than reserved) */
            :: else -> skip
            fi;
#endif
            /* publish(p, cm) */
            h = h + cm;
progress_publish:
            store_head(h);                      /* release store of head */
            ec_notify_data()
        fi;
        n = 0; k = 0; i = 0; cm = 0; res = 0
    od;

    /* shmr_producer_close_stream: release store of close_reason, ec_notify_always(data_ec) */
    SB_DRAIN_HEAD
    closed = 1;
    d_epoch++;                                  /* fence seq_cst; epoch += 1 (release) */
    futex_wake_all_data();
    nfin++
}

/* ------------------------------------------------------------------------ */
/* consumers                                                                 */
/* ------------------------------------------------------------------------ */

/* consumer_ready(): acquire load of head; queue: relaxed tail < head;
 * broadcast: cursor < head; otherwise close_reason != OPEN */
inline consumer_ready()
{
    rh = head;
#if defined(QUEUE)
    if
    :: tail < rh -> rdy = 1
    :: else -> rdy = closed
    fi;
#else
    if
    :: cur < rh -> rdy = 1
    :: else -> rdy = closed
    fi;
#endif
    rh = 0
}

/* shmr_consumer_wait -> ec_wait(data_ec, consumer_ready), infinite timeout, no
 * signals (the worst case for a lost wakeup). The spin/yield phase only
 * repeats ready() and is folded into the first check. A wake that finds
 * nothing ready sleeps again (the for (;;) in ec_wait). */
inline consumer_wait()
{
    consumer_ready();                           /* if (ready(arg)) return 0 */
    do
    :: rdy -> break
    :: else ->
#ifndef BUG_EC_SEEN_LATE
        seen = d_epoch;                         /* acquire load of epoch, before counting ourselves */
        MB_EARLY
        SB_DRAIN_REL(me)                          /* a locked RMW drains our own buffer */
        d_waiters++;                            /* seq_cst fetch_add */
        WAITER_BARRIER                          /* fence + membarrier(GLOBAL_EXPEDITED) */
#ifndef BUG_EC_NO_RECHECK
        consumer_ready();                       /* if (!ready(arg)) */
#else
        rdy = 0;
#endif
#else
        SB_DRAIN_REL(me)
        d_waiters++;                            /* seeded bug: epoch read after the re-check */
        WAITER_BARRIER
        consumer_ready();
        seen = d_epoch;
#endif
        if
        :: !rdy ->                              /* futex_wait(&epoch, seen) */
            atomic {
                if
                :: d_epoch == seen -> d_sleep[me] = 1
                :: else -> skip                 /* EAGAIN: epoch moved */
                fi
            };
            (d_sleep[me] == 0)                  /* blocked until futex_wake_all */
        :: else -> skip
        fi;
        d_waiters--;                            /* seq_cst fetch_sub */
        consumer_ready()                        /* if (ready(arg)) return 0; else sleep again */
    od;
    rdy = 0; seen = 0
}

#if defined(QUEUE)

proctype QConsumer(byte me)
{
    byte hc, t, k, pos, max, i, lo, hi, rh, seen;
    bit contig, rdy, claimed;
#ifdef EVICT
    byte rlo[2], rhi[2];
    bit won;
#endif

    /* shmr_consumer_open (queue): CAS owner, release store ready = 1, head_cache */
    owner[me] = 1;
    ready[me] = 1;
    hc = head;                                  /* acquire load of head */
    nopen++;

    do
    :: /* shmr_pop(c, dst, max) (contig = 0) or shmr_claim(c, max) (contig = 1) */
#ifndef SIMPLE
        if
        :: max = 1
        :: max = 2
        fi;
        if
        :: contig = 0
        :: contig = 1
        fi;
#else
        max = 1;
#endif
#ifdef EVICT
        if
        :: evicted[me] -> break                 /* shmr_evicted(): -SHMR_EEVICTED from now on */
        :: else -> skip
        fi;
#endif
        /* q_claim(c, max, contig, &pos) */
        t = tail;                               /* relaxed load of tail */
        claimed = 0;
        do
        :: claimed -> break
        :: !claimed && t >= hc ->
            hc = head;                          /* acquire load of head (pairs with publish) */
            assert(t <= hc);                    /* q_claim reports t > head as corrupt (SHMR_ESTATE) */
            if
            :: t >= hc -> k = 0; break          /* empty: return 0 */
            :: else -> skip
            fi
        :: !claimed && t < hc && hc - t > CAP ->
            /* t predates hc: q_claim re-reads tail; read after head it is never
             * a lap behind (else q_claim reports the ring corrupt) */
            t = tail;                           /* relaxed load of tail */
            assert(t >= hc || hc - t <= CAP)
        :: !claimed && t < hc && hc - t <= CAP ->
            k = MIN(max, hc - t);
            if
            :: contig -> k = MIN(k, CAP - (t & MASK))
            :: else -> skip
            fi;
            /* (claim_pos / claim_n / claim_state = CLAIM_INTENT stores for the sweeper: not modelled) */
#ifdef SOLO
            /* one consumer slot (max_consumers == 1): the claim is a release store
             * of tail from the t read above, no CAS. Checked with -DNRUN=1, the
             * only way it is used; with two consumers running it must fail. */
            atomic {
                tail = t + k; pos = t; claimed = 1
#ifdef EVICT
                ; cpos[me] = t; cn[me] = k
#endif
            }
#else
            atomic {                            /* shmr_cas_seqcst64(&tail, &t, t + k) */
                SB_DRAIN_REL(me)                  /* a locked RMW drains our own buffer */
                if
                :: tail == t -> tail = t + k; pos = t; claimed = 1
#ifdef EVICT
                    ; cpos[me] = t; cn[me] = k  /* claim_pos / claim_n, stored before the CAS */
#endif
                :: else -> t = tail; k = 0      /* failure reloads t */
                fi
            }
#endif
        od;
#ifdef EVICT
        if
        :: claimed -> cstate[me] = C_HELD       /* relaxed store after the CAS */
        :: else -> skip
        fi;
#endif
        if
        :: k == 0 ->
            /* closed_and_drained(c) */
            if
            :: closed ->                        /* acquire load of close_reason */
                hc = head;                      /* acquire load of head */
                if
                :: tail >= hc -> break          /* relaxed load of tail; -SHMR_ECLOSED */
                :: else -> skip
                fi
            :: else -> skip
            fi;
#ifdef EC
            consumer_wait()
#else
            skip                                /* busy-poll: pop again */
#endif
        :: else ->
#ifdef BUG_DONE_EARLY
            qlen[pos & MASK] = k;
            qtag[pos & MASK] = pos + CAP;
#endif
            /* copy_out(r, pos, dst, k) (pop) or the caller reading the claim in place */
            i = 0;
#ifdef EVICT
            /* the copy; judged only once the release says it was ours */
            do
            :: i < k ->
                rlo[i] = slot_lo[(pos + i) & MASK];
                rhi[i] = slot_hi[(pos + i) & MASK];
                i++
            :: else -> break
            od;
            i = 0;
#ifndef BUG_EVICT_PLAIN_RELEASE
            atomic {                            /* seq_cst CAS claim_state HELD -> RELEASING */
                if
                :: cstate[me] == C_HELD -> cstate[me] = C_RELEASING; won = 1
                :: else -> won = 0
                fi
            };
#else
            won = 1;
#endif
            if
            :: !won -> break                    /* -SHMR_EEVICTED: the copy is discarded */
            :: else -> skip
            fi;
            d_step {
                do
                :: i < k ->
                    assert(rlo[i] == pos + i + 1 && rhi[i] == pos + i + 1);
                    assert(got[pos + i] == 0 && ab[pos + i] == 0);
                    got[pos + i]++;
                    rlo[i] = 0; rhi[i] = 0;
                    i++
                :: else -> break
                od
            };
#endif
            do
            :: i < k ->
                lo = slot_lo[(pos + i) & MASK];
                hi = slot_hi[(pos + i) & MASK];
progress_qread:
                d_step {
                    /* the right record, not rewritten while we read it */
                    assert(lo == pos + i + 1 && hi == pos + i + 1);
                    /* exactly once */
                    assert(got[pos + i] == 0);
                    got[pos + i]++;
                    lo = 0; hi = 0;
                    i++
                }
            :: else -> break
            od;
#ifndef BUG_DONE_EARLY
            /* q_release(c, pos, k) (pop, or shmr_release after a claim) */
            SB_DRAIN_REL(me)
            qlen[pos & MASK] = k;                   /* relaxed store of releases[pos & mask].len */
#if defined(EC) && defined(SB)
            atomic {                                /* release store of releases[pos & mask].tag, buffered */
                sb_rel_idx[me] = pos & MASK; sb_rel_val[me] = pos + CAP; sb_rel_full[me] = 1
            }
#else
            qtag[pos & MASK] = pos + CAP;           /* release store of releases[pos & mask].tag */
#endif
#endif
#ifdef EVICT
            cstate[me] = C_NONE;                    /* release store of claim_state */
#endif
            /* (the popped counter is stored before the release record and claim_state =
             * CLAIM_NONE after it, for the sweeper and stats: not modelled; exact
             * counting under kills is pinned by verify/interleavings/kill_accounting.c) */
            ec_notify_space()
        fi;
        d_step { t = 0; k = 0; pos = 0; i = 0; max = 0; contig = 0; claimed = 0 }
    od;
    nfin++
}

#else /* BROADCAST */

proctype BConsumer(byte me)
{
    byte cur, hc, h, k, from, i, in, bad, skipped, max, expect, rh, seen, ndeliv;
    byte lo[2], hi[2];
    bit claim, rdy, oldest, stop, left;

    /* shmr_consumer_open (broadcast) */
    owner[me] = 1;                              /* CAS owner 0 -> me */
    h = head;                                   /* acquire load of head */
#ifdef JOIN
    if
    :: oldest = 1
    :: oldest = 0
    fi;
#else
    oldest = 1;
#endif
    cur = (oldest -> (h > CAP -> h - CAP : 0) : h);
    cursor[me] = cur;                           /* seq_cst store of cursor */
    ready[me] = 1;                              /* seq_cst store of ready */
    join_epoch++;                               /* seq_cst fetch_add of join_epoch */
#if defined(BLOCK) && !defined(BUG_SHARED_CLAIM)
    in = jclaim;                                /* seq_cst load of join_claim */
#else
    in = intent;                                /* seq_cst load of intent */
#endif
    if
    :: in > cur + CAP ->
        cur = in - CAP;
        cursor[me] = cur                        /* seq_cst store of cursor */
    :: else -> skip
    fi;
#if defined(BLOCK) && !defined(BUG_UNCLAMPED_MIN)
    ec_notify_space();                          /* a producer may have seen our provisional cursor */
#endif
    hc = head;                                  /* head_cache: acquire load of head */
    expect = cur;                               /* checking: start + delivered + dropped */
    d_step { h = 0; in = 0; oldest = 0 }
    nopen++;

    do
#ifdef LEAVE
    :: me == 1 && !left -> left = 1; break      /* consumer 1 may leave at any time (shmr_consumer_free) */
#endif
    :: /* shmr_pop(c, dst, max, &dropped) (claim = 0) or shmr_claim + shmr_release (claim = 1) */
#ifndef SIMPLE
        if
        :: max = 1
        :: max = 2
        fi;
        if
        :: claim = 0
        :: claim = 1
        fi;
#else
        max = 1;
#endif
        do      /* shmr_pop's for (;;); shmr_claim runs once */
        :: skipped = 0;
            /* b_ready(c, max, contiguous = claim, &skipped) */
            k = 0;
            if
            :: cur >= hc -> hc = head           /* acquire load of head (pairs with publish) */
            :: else -> skip
            fi;
            if
            :: cur >= hc -> skip                /* k = 0 */
            :: else ->
                d_step {
                    h = hc;
                    if
                    :: h - cur > CAP ->         /* lapped: skip to the oldest slot */
                        skipped = h - CAP - cur;
                        cur = h - CAP
                    :: else -> skip
                    fi;
                    k = MIN(max, h - cur);
                    if
                    :: claim -> k = MIN(k, CAP - (cur & MASK))
                    :: else -> skip
                    fi;
                    h = 0
                }
            fi;
#ifdef BLOCK
            assert(skipped == 0);               /* block mode never laps a consumer */
#endif
            if
            :: claim && skipped > 0 ->
                /* shmr_claim: b_advance(c, c->cursor, 0, skipped) at once */
                SB_DRAIN_REL(me)
                cursor[me] = cur;               /* release store of cursor */
                d_step { expect = expect + skipped; skipped = 0 }
            :: else -> skip
            fi;
            if
            :: k == 0 ->
                if
                :: skipped > 0 ->               /* shmr_pop: b_advance(c, c->cursor, 0, skipped) */
                    SB_DRAIN_REL(me)
                    cursor[me] = cur;
                    d_step { expect = expect + skipped; skipped = 0 }
                :: else -> skip
                fi;
                /* closed_and_drained(c) */
                if
                :: closed ->                    /* acquire load of close_reason */
                    hc = head;                  /* acquire load of head */
                    if
                    :: cur >= hc -> stop = 1
                    :: else -> skip
                    fi
                :: else -> skip
                fi;
                break
            :: else ->
                from = cur;
                /* copy_out(r, from, dst, k) (pop) or the caller reading the claim in place */
                i = 0;
                do
                :: i < k ->
#ifdef OVERWRITE
                    if                          /* memcpy reads the halves in either order */
                    :: lo[i] = slot_lo[(from + i) & MASK]; hi[i] = slot_hi[(from + i) & MASK]
                    :: hi[i] = slot_hi[(from + i) & MASK]; lo[i] = slot_lo[(from + i) & MASK]
                    fi;
#else
                    lo[i] = slot_lo[(from + i) & MASK];
                    hi[i] = slot_hi[(from + i) & MASK];
#endif
                    i++
                :: else -> break
                od;
                /* b_torn(c, from, k) (pop, or shmr_release after a claim):
                 * shmr_fence_acquire(); relaxed load of intent */
#if defined(BUG_NO_TORN_CHECK)
                in = 0;
#else
                in = intent;
#endif
                d_step {
                    bad = (in <= from + CAP -> 0 : MIN(k, in - CAP - from));
#ifdef BLOCK
                    assert(bad == 0);           /* block mode never overwrites unread records */
#endif
                    /* loss accounting: every position below from + bad is
                     * delivered or counted (skipped + bad) exactly once */
                    expect = expect + skipped + bad;
                    assert(expect == from + bad);
                    i = bad;
                    do
                    :: i < k ->
                        assert(lo[i] == hi[i]);         /* not torn */
                        assert(lo[i] == from + i + 1);  /* the record for its position */
                        expect++;
                        ndeliv++;
                        i++
                    :: else -> break
                    od;
                    lo[0] = 0; lo[1] = 0; hi[0] = 0; hi[1] = 0; in = 0; i = 0;
                    cur = from + k
                }
                /* b_advance(c, from + k, k - bad, skipped + bad) */
progress_advance:
#if defined(EC) && defined(BLOCK) && defined(SB) && defined(SB_CURSOR)
                atomic {                        /* release store of cursor, buffered */
                    drain_rel(me); sb_rel_val[me] = cur; sb_rel_full[me] = 1
                }
#else
                cursor[me] = cur;               /* release store of cursor */
#endif
#ifdef BLOCK
                ec_notify_space();              /* block mode: a producer may wait for us */
#endif
                if
                :: k > bad || claim -> break    /* records returned (claim returns k, release bad) */
                :: else -> skip                 /* shmr_pop: every record was torn, loop */
                fi
            fi
        od;
        if
        :: stop -> break
        :: else -> skip
        fi;
#ifdef EC
        if
        :: k == 0 -> consumer_wait()
        :: else -> skip
        fi;
#endif
        d_step { k = 0; from = 0; bad = 0; skipped = 0; max = 0; claim = 0 }
    od;

    /* closed and drained: every position from the start to head is accounted for */
    assert(left || (expect == NREC && cur == NREC));
#ifdef BLOCK
#ifndef JOIN
    assert(left || ndeliv == NREC);             /* joined before the first record: saw them all */
#endif
#endif
    /* shmr_consumer_free (broadcast): release store ready = 0, CAS owner -> 0, ec_notify(space_ec) */
    SB_DRAIN_REL(me)
    ready[me] = 0;
    owner[me] = 0;
    ec_notify_space();
    nfin++
}

#endif

init
{
    byte i;
    /* shmr_create: the first lap is one free batch: releases[0] = {tag 0, len cap} */
    d_step {
        qlen[0] = CAP;
        qtag[0] = 0
    }
#if defined(QUEUE)
    run QConsumer(0);
#if NRUN > 1
    run QConsumer(1);
#endif
    (nopen == NRUN);                              /* queue: joining is not part of the protocol */
#else
    run BConsumer(0);
    run BConsumer(1);
#ifndef JOIN
    (nopen == NC);                              /* both consumers joined before the first record */
#endif
#endif
#if defined(EC) && defined(SB)
    run Drainer();
#endif
    run Producer();
    (nfin == NRUN + 1);
#if defined(QUEUE)
    /* every record consumed exactly once (or, evicted, counted abandoned instead) */
    d_step {
        i = 0;
        do
#ifdef EVICT
        :: i < NREC -> assert(got[i] + ab[i] == 1); i++
#else
        :: i < NREC -> assert(got[i] == 1); i++
#endif
        :: else -> break
        od
    }
#endif
    assert(d_waiters == 0 && s_waiters == 0)
}
