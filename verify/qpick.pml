/*
 * qpick.pml -- Promela model of the order guarantee of shmring.Queue
 * (csrc/mpqueue.c shmr_mpq_pick, raise_lanes_used; csrc/messages.c the ticket
 * fetch_add of a queue lane's put).
 *
 * Guarantee checked: a put that began after another put returned is got after
 * it. Producer PX puts item X; only after that put returned does it hand a
 * token to producer PY, which then puts item Y (the happens-before edge a test
 * or an application makes with a pipe, a join or a lock). A free-running
 * producer PZ puts NZ items at any time, so tickets interleave. Each producer
 * owns one lane; which of X's and Y's lanes is scanned first is chosen at the
 * start (both orders are explored). Every producer counts its lane in
 * lanes_used (the atomic max of raise_lanes_used) when it opens, at any
 * moment before its first put; the lanes start uncounted, so a lane appearing
 * while a getter picks is explored too.
 *
 * One getter loops over shmr_mpq_pick + take until it has every item. A pick
 * makes up to four passes; each reads the ticket counter, then the lanes one
 * by one (one step per lane: the acquire load of the head, then the ticket in
 * the frame at the tail, which the put wrote before its release store of
 * head; or, when the lane's tail has not moved since the getter last found
 * an item there, that item's ticket again, as peek_lane does), and keeps the
 * smallest and second smallest ticket; the chosen lane's head is read after
 * the scan. It stops after a
 * pass whose smallest ticket is below the counter it read first (one-pass
 * rule) or equals the previous pass's (confirmed); each pass reads
 * lanes_used after the counter. It then takes the lane's run of items older than every other lane's
 * oldest (the batch).
 *
 * Property (safety, exhaustive): when the getter takes Y, X was taken before
 * (assert at every take), and at the end every item was taken exactly once.
 *
 * Memory model. SPIN interleaves whole statements (sequential consistency).
 * The C code relies on release/acquire only, and the argument is message
 * passing, so SC outcomes are the only ones allowed: the fetch_add that gives
 * Y its ticket is a release RMW; the getter's acquire load of the counter
 * that reads a value past Y's ticket reads from that RMW or a later one in its
 * release sequence (every later fetch_add continues it), so it synchronizes
 * with PY, and through the token with everything PX did before returning
 * (its seq_cst raise of lanes_used, its release store of X's head). Loads the
 * getter makes after that acquire cannot read older values (coherence), which
 * is what "one step per load, in program order" models. -DSB adds x86-style
 * FIFO store buffers (one entry per producer) for the head stores: a head
 * store becomes visible later, at any moment (Drainer), before its owner's
 * next store and at its locked RMWs (fetch_add, CAS); loads read memory.
 *
 * Switches:
 *   -DNZ=n              items of the free-running producer (default 1)
 *   -DSB                store buffers on the head stores
 *   -DBUG_ONE_PASS      the pick always stops after one pass (ignores the counter)
 *   -DBUG_COUNTER_LATE  the pass reads the counter after scanning the lanes
 *   -DBUG_USED_ONCE     lanes_used read once before the passes rather than
 *                       after each pass's counter load
 *   -DBUG_ONE_LANE      a pass that found one lane in use also stops
 *                       (lanes_used == 1), whatever its counter
 * The code before this model had both of the last two (see verify/README.md):
 * a lane counted after the getter read lanes_used was missed, with its item
 * older than the one taken.
 */

#ifndef NZ
#define NZ 1
#endif
#define NL 3                   /* lanes: X's, Y's (0 or 1, chosen at start), Z's = 2 */
#define M 2                    /* frames per lane tracked (X, Y: 1 item; Z: up to 2) */
#define NITEMS (2 + NZ)
#define NONE 255

byte ticket_next = 0;          /* the queue-wide ticket counter (hdr->ticket.next) */
byte lanes_used = 0;
byte head[NL];                 /* published items per lane (prod->head) */
byte ftk[NL * M];              /* the ticket in each frame */
byte fid[NL * M];              /* ghost: item id in each frame (1 = X, 2 = Y, 3.. = Z) */
bool token = false;            /* X's put returned, handed to PY */
byte xl, yl;                   /* lanes of X and Y */
bool got[NITEMS + 1];          /* ghost: item id taken */
byte ngot = 0;

#ifdef SB
/* one-entry store buffer per lane's producer: the head value not yet in memory */
byte sb_val[NL];
bool sb_full[NL];
inline drain(l) {
    atomic { if :: sb_full[l] -> head[l] = sb_val[l]; sb_full[l] = false :: else -> skip fi }
}
#define STORE_HEAD(l, v) drain(l); atomic { sb_val[l] = v; sb_full[l] = true }
#define DRAIN(l) drain(l);
proctype Drainer() {
    byte l;
end:
    do
    :: atomic { sb_full[0] -> head[0] = sb_val[0]; sb_full[0] = false }
    :: atomic { sb_full[1] -> head[1] = sb_val[1]; sb_full[1] = false }
    :: atomic { sb_full[2] -> head[2] = sb_val[2]; sb_full[2] = false }
    od
}
#else
#define STORE_HEAD(l, v) head[l] = v;
#define DRAIN(l)
#endif

/* a producer's open: raise_lanes_used, a seq_cst CAS (atomic max), locked */
inline open_lane(l) {
    DRAIN(l)
    atomic { if :: lanes_used < l + 1 -> lanes_used = l + 1 :: else -> skip fi }
}

/* one put of item id into lane l: the release fetch_add of the ticket, the
 * frame written, the release store of head (a separate step from the ticket:
 * the gap where a ticket is taken and its item not yet visible) */
inline put(l, id, pos) {
    DRAIN(l)
    atomic { ftk[l * M + pos] = ticket_next; ticket_next++ }
    fid[l * M + pos] = id;
    STORE_HEAD(l, pos + 1)
}

proctype PX() {
    open_lane(xl);
    put(xl, 1, 0);
    /* the put returned; handing the token on is a later store (it drains our buffer first) */
    DRAIN(xl)
    token = true
}

proctype PY() {
    open_lane(yl);
    token;                     /* acquire: PX's put returned before this put begins */
    put(yl, 2, 0)
}

proctype PZ() {
    byte k = 0;
    open_lane(2);
    do
    :: k < NZ -> put(2, 3 + k, k); k++
    :: else -> break
    od
}

proctype Getter() {
    byte tail[NL];
    byte seen_tail[NL], seen_tk[NL];   /* per lane: the item the last peek found (peek_lane) */
    byte used, began, prev, best, second, bl, btail, bhead, pass, i, t, pos, n;
    d_step { seen_tk[0] = NONE; seen_tk[1] = NONE; seen_tk[2] = NONE }
    do
    :: ngot == NITEMS -> break
    :: else ->
        /* ---- shmr_mpq_pick ---- */
#ifdef BUG_USED_ONCE
        used = lanes_used;
#endif
        prev = NONE;
        pass = 0;
        do
        :: pass < 4 ->
#ifndef BUG_COUNTER_LATE
            began = ticket_next;           /* acquire: pairs with every put's release fetch_add */
#endif
#ifndef BUG_USED_ONCE
            used = lanes_used;             /* acquire, after the counter */
#endif
            best = NONE;
            second = NONE;
            i = 0;
            do
            :: i < used ->
                /* peek_lane: a tail unchanged since the item found there gives
                 * that item's ticket again; otherwise head (acquire), then the
                 * ticket of the frame at our tail, remembered */
                atomic {
                    if
                    :: seen_tk[i] != NONE && seen_tail[i] == tail[i] -> t = seen_tk[i]
                    :: else ->
                        if
                        :: tail[i] < head[i] -> t = ftk[i * M + tail[i]]; seen_tail[i] = tail[i]; seen_tk[i] = t
                        :: else -> t = NONE
                        fi
                    fi;
                    if
                    :: t == NONE -> skip
                    :: t != NONE && t < best -> second = best; best = t; bl = i; btail = tail[i]
                    :: t != NONE && t >= best && t < second -> second = t
                    :: else -> skip
                    fi;
                    i++
                }
            :: else -> break
            od;
#ifdef BUG_COUNTER_LATE
            began = ticket_next;
#endif
            if
            :: best == NONE -> break
            :: else -> skip
            fi;
#ifdef BUG_ONE_PASS
            break;
#else
            if
            :: best == prev || best < began -> break
#ifdef BUG_ONE_LANE
            :: used == 1 -> break
#endif
            :: else -> prev = best; pass++
            fi
#endif
        :: else -> break
        od;
        /* ---- the batch: the lane's items older than every other lane's oldest;
         * one getter, so the claim always gets them ---- */
        if
        :: best == NONE -> skip        /* nothing seen: pick again */
        :: else ->
            bhead = head[bl];          /* acquire, after the scan */
            pos = btail;
            n = 0;
            do
            :: pos < bhead && (n == 0 || ftk[bl * M + pos] < second) ->
                d_step {
                    assert(!got[fid[bl * M + pos]]);
                    assert(!(fid[bl * M + pos] == 2 && !got[1]));  /* Y only after X */
                    got[fid[bl * M + pos]] = true;
                    ngot++
                }
                pos++;
                n++
            :: else -> break
            od;
            tail[bl] = pos
        fi
    od;
    assert(got[1] && got[2])
}

init {
    atomic {
        if
        :: xl = 0; yl = 1
        :: xl = 1; yl = 0
        fi;
        run PX();
        run PY();
        run PZ();
        run Getter()
#ifdef SB
        ; run Drainer()
#endif
    }
}
