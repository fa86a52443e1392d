/*
 * qwake.pml -- Promela model of how shmring.Queue wakes its getters: one
 * wake per publish, passed on by the getter that takes an item
 * (csrc/mpqueue.c shmr_mpq_pick, shmr_mpq_taken, shmr_mpq_leave,
 * shmr_mpq_wait_data, shmr_mpq_has_data; csrc/eventcount.h shmr_ec_notify_n;
 * csrc/eventcount.c shmr_ec_wait_marked; the get loop of
 * src/shmring/_queue.pxi, _take and _wait).
 *
 * NPROD producers, each with its own lane, publish ITEMS items each, one or
 * two per publish (chosen at each publish; -DBATCH=1: one): one release
 * store of head per publish, then ONE notify that wakes one sleeper
 * (ring.data_wakes = 1), skipped while an earlier wake is owed (wake_owed,
 * csrc/eventcount.c shmr_ec_wake_one: raised by the notifier that wakes,
 * lowered by every getter returning from FUTEX_WAIT before its re-check, or
 * by the notifier itself when its wake found nobody queued). NGET getters each want WANT items and loop
 * (get until they have them). Total items = total wanted.
 *
 * A getter's get: pick (the lanes read one by one; it names a lane it saw
 * items in and a batch of 1..min(items seen there, wanted) -- the oldest-
 * ticket choice of the C code is one of these, so every choice it can make is
 * explored), claim (a CAS of the lane's tail, fewer or none if another getter
 * took them meanwhile: then pick again), then shmr_mpq_taken: notify one
 * more sleeper if the pick saw items beyond its batch (picked_more: another
 * lane's, or more in this lane). Found nothing: wait on the eventcount,
 * as shmr_ec_wait (spin 0): read epoch, waiters++, re-check every lane,
 * FUTEX_WAIT(epoch, seen), which returns at once if epoch moved, else queues
 * the getter until a wake removes it; waiters--; re-check; not ready: again.
 * FUTEX_WAKE(1) removes one queued getter, any one (the kernel's choice is
 * not modelled). Getter 0 may time out up to NTO times (-DNTO, default 1):
 * its futex wait ends without a wake (if a wake removed it first, the wait
 * returned 0, as in the kernel), or its deadline has passed before it sleeps;
 * it then re-checks, calls shmr_mpq_leave (notify one if waiters != 0 and
 * items remain) and, like an application catching Empty, calls get again.
 * Waits of the others have no time limit: the liveness slice that ends every
 * real wait would hide a lost wake-up, which is what is looked for.
 *
 * Property: no end labels, so a state where every process is blocked and
 * some getter sleeps in FUTEX_WAIT is an invalid end state. With total items
 * = total wanted, a getter that still wants items means items are still
 * queued: a lost wake-up. At a valid end every item was taken exactly once
 * (assert).
 *
 * Memory model: SPIN's interleaving is sequentially consistent. The
 * eventcount's store-buffering pattern (publish, then load waiters / count
 * in, then re-check) is what ring.pml checks under store buffers (-DSB,
 * configurations queue_ec_sb*); the notify here is that same shmr_ec_notify_n,
 * only with a wake count of one, so this model assumes its proof and checks
 * what is new: who gets the single wake, and that it is passed on.
 *
 * Switches:
 *   -DNPROD -DITEMS -DBATCH -DNGET -DWANT  sizes (defaults 1, 2, 2, 2, 1)
 *   -DNTO=n               timeouts getter 0 may take (0: none)
 *   -DBUG_NO_TAKEN_PASS   shmr_mpq_taken never notifies
 *   -DBUG_OWED_CLEAR_LATE getters lower wake_owed when a get has taken its
 *                         item, not on return from FUTEX_WAIT before the
 *                         re-check: a publish that skipped its wake after the
 *                         getter's pick is seen by nobody
 *   -DBUG_OWED_KEPT       a notifier whose wake found nobody queued leaves
 *                         wake_owed raised (no one is left to lower it)
 *   -DBUG_NO_LEAVE_PASS   shmr_mpq_leave never notifies. NOT a lost wake-up
 *                         (configuration qwake_no_leave_pass passes): the wait
 *                         re-checks every lane after counting out, so a getter
 *                         whose wake carried an item returns to take it even
 *                         when its deadline has passed; one that finds nothing
 *                         had its item taken by a getter that passes on what
 *                         it saw. The leave notify is a second safety net.
 */

#ifndef NPROD
#define NPROD 1
#endif
#ifndef ITEMS
#define ITEMS 2
#endif
#ifndef BATCH
#define BATCH 2
#endif
#ifndef NGET
#define NGET 2
#endif
#ifndef WANT
#define WANT 1
#endif
#ifndef NTO
#define NTO 1
#endif
#define TOTAL (NPROD * ITEMS)
#define TO 1                   /* rc: timed out */

byte head[NPROD];              /* published items per lane */
byte tail[NPROD];              /* taken items per lane (the claim CAS) */
byte epoch = 0;                /* data_ec.epoch, the futex word */
byte waiters = 0;              /* data_ec.waiters */
bool inq[NGET];                /* in the futex wait queue of epoch */
byte taken = 0;                /* ghost: items taken */
bool owed = false;             /* data_ec.wake_owed */

/* FUTEX_WAKE(1): one queued getter, any, leaves the queue; wk: one did */
inline futex_wake1() {
    atomic {
        wk = true;
        if
        :: inq[0] -> inq[0] = false
        :: NGET > 1 && inq[1] -> inq[1] = false
        :: NGET > 2 && inq[2] -> inq[2] = false
        :: else -> wk = false
        fi
    }
}

/* ec_owed_clear: lower a raised flag (its barrier is implicit here: the
 * model is sequentially consistent, and ring.pml checks that pairing) */
inline owed_clear() {
    owed = false
}

/* shmr_ec_notify_n(ec, 1), after the caller's publication: the load of
 * waiters, then shmr_ec_wake_one: skip while a wake is owed, else raise the
 * flag (an exchange), bump epoch, wake one; a wake that found nobody lowers
 * the flag and, if anyone is still counted, wakes once more without it */
inline notify1() {
    if
    :: waiters != 0 ->
        atomic { sk = owed; owed = true };
        if
        :: sk -> skip
        :: else ->
            epoch++;
            futex_wake1();
#ifndef BUG_OWED_KEPT
            if
            :: !wk ->
                owed_clear();
                if
                :: waiters != 0 -> epoch++; futex_wake1()
                :: else -> skip
                fi
            :: else -> skip
            fi
#endif
        fi
    :: else -> skip
    fi
}

/* shmr_mpq_has_data: the lanes one by one (acquire head, then tail) */
inline has_data(r) {
    r = false;
    l = 0;
    do
    :: l < NPROD -> atomic { r = r || tail[l] < head[l]; l++ }
    :: else -> break
    od
}

proctype Producer(byte me) {
    byte k = 0, b;
    bool wk, sk;
    do
    :: k < ITEMS ->
        /* one put, or a put_many of two (one publish either way) */
        if
        :: b = 1
        :: BATCH > 1 && k + 2 <= ITEMS -> b = 2
        fi;
        head[me] = head[me] + b;       /* shmr_q_publish: release store of head */
        notify1();
        k = k + b
    :: else -> break
    od
}

proctype Getter(byte me) {
    byte got = 0, seen, rc, l, bl, n, avail, k, lanes_seen, to_left;
    bool more, ready, wk, sk;
    to_left = (me == 0 -> NTO : 0);
    do
    :: got == WANT -> break
    :: else ->
take:
        /* ---- shmr_mpq_pick: the lanes one by one; name one seen non-empty ---- */
        lanes_seen = 0;
        avail = 0;
        l = 0;
        do
        :: l < NPROD ->
            atomic {
                if
                :: tail[l] < head[l] ->
                    lanes_seen++;
                    if
                    :: avail == 0 -> bl = l; avail = head[l] - tail[l]
                    :: avail != 0 -> skip                     /* keep the earlier one */
                    :: avail != 0 -> bl = l; avail = head[l] - tail[l] /* or take this one */
                    fi
                :: else -> skip
                fi;
                l++
            }
        :: else -> break
        od;
        if
        :: avail > 0 ->
            /* the batch: 1 .. min(avail, WANT - got) */
            n = 1;
            do
            :: n < avail && n < WANT - got -> n++
            :: true -> break
            od;
            more = lanes_seen > 1 || n < avail;
            /* shmr_msg_claim: CAS of the lane's tail; what is left of the batch */
            atomic {
                k = head[bl] - tail[bl];
                k = (k < n -> k : n);
                tail[bl] = tail[bl] + k;
                got = got + k;
                taken = taken + k
            };
            if
            :: k == 0 -> goto take    /* taken meanwhile: pick again */
            :: else -> skip
            fi;
            /* ---- shmr_mpq_taken ---- */
#ifndef BUG_NO_TAKEN_PASS
            if
            :: more -> notify1()
            :: else -> skip
            fi;
#endif
#ifdef BUG_OWED_CLEAR_LATE
            owed_clear();                      /* after the get: no re-check follows */
#endif
            skip
        :: else ->
            /* ---- shmr_mpq_wait_data -> shmr_ec_wait (spin 0) ---- */
            has_data(ready);
            if
            :: ready -> goto take
            :: else -> skip
            fi;
wait:
            seen = epoch;                      /* before counting in */
            waiters++;
            has_data(ready);                   /* ready() after the count (and its fence) */
            rc = 0;
            if
            :: ready -> skip
            :: !ready && to_left > 0 -> rc = TO   /* the deadline passed before the sleep */
            :: !ready ->
                atomic {
                    if
                    :: epoch != seen -> skip   /* FUTEX_WAIT returns at once (EAGAIN) */
                    :: else -> inq[me] = true
                    fi
                };
                if
                :: !inq[me] -> skip            /* woken (or never queued) */
                :: to_left > 0 ->
                    atomic {
                        if
                        :: inq[me] -> inq[me] = false; rc = TO  /* the timer, before any wake */
                        :: else -> skip                        /* a wake came first: rc 0 */
                        fi
                    }
                fi;
#ifndef BUG_OWED_CLEAR_LATE
                owed_clear()                   /* every return from FUTEX_WAIT */
#else
                skip
#endif
            fi;
            waiters--;
            has_data(ready);

            if
            :: ready -> goto take
            :: else -> skip
            fi;
            if
            :: rc == TO ->
                to_left--;
                /* ---- shmr_mpq_leave, then the caller's next get ---- */
#ifndef BUG_NO_LEAVE_PASS
                if
                :: waiters != 0 ->
                    has_data(ready);
                    if
                    :: ready -> notify1()
                    :: else -> skip
                    fi
                :: else -> skip
                fi;
#endif
                goto take
            :: else -> goto wait
            fi
        fi
    od
}

init {
    byte i;
    atomic {
        i = 0;
        do
        :: i < NPROD -> run Producer(i); i++
        :: else -> break
        od;
        i = 0;
        do
        :: i < NGET -> run Getter(i); i++
        :: else -> break
        od
    };
    /* every process has ended (the model's only valid end): all taken */
    (_nr_pr == 1);
    assert(taken == TOTAL && TOTAL == NGET * WANT)
}
