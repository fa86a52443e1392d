/*
 * messages.pml -- Promela model of the queue-mode message protocol
 * (csrc/messages.c m_q_claim / shmr_msg_reserve, csrc/queue.c q_writable,
 * shmr_q_try_claim, shmr_q_release).
 *
 * What differs from the record protocol of ring.pml, and is checked here:
 *   - a message is a frame of 1..CAP/2 units; one that does not fit before
 *     the end of the ring is preceded by a padding frame to the end, published
 *     together with it;
 *   - a consumer reads the frame headers from tail to size its claim BEFORE the
 *     tail CAS, and trusts them only once the CAS succeeded;
 *   - the release record of a batch overwrites the header of its first frame
 *     (same two words, tag and len), and the producer walks them to learn how
 *     far it may write;
 *   - with -DREWIND, the producer may also pad early (a frame that fits is put
 *     at offset 0 of the next lap when that room is free now), as a queue
 *     lane's producer does to keep its working set small: a placement choice
 *     the consumers need not know about.
 *
 * One producer, NC = 2 consumers, CAP = 4 units, NMSG messages of a size
 * chosen nondeterministically (1 or 2 units). Every unit of a frame carries
 * the message's id, so a read of a unit being rewritten is seen.
 *
 * Properties (safety, exhaustive):
 *   - after a successful claim, every header read for it is the header the
 *     producer published at that position (ghost pub_id / pub_units);
 *   - every unit read belongs to the message claimed (no torn read);
 *   - every message is delivered exactly once (got[] at delivery and at the end).
 *
 * Seeded bugs (each must FAIL):
 *   -DBUG_RELEASE_EARLY  the consumer writes its release record before reading
 *                        the bodies                          -> torn read
 *   -DBUG_NO_CAS         the consumer stores tail instead of CASing it
 *                        -> a message delivered twice / a stale header trusted
 *   -DBUG_NO_PAD         the producer places a frame across the end of the ring
 *                        (its units wrap) instead of padding -> the claim runs
 *                        past the ring's end and reads the wrong units
 */

#ifndef NMSG
#define NMSG 3
#endif
#define CAP 4
#define NC 2
#define PAD 0
#ifdef REWIND
#define NPOS 24          /* ghost positions tracked; NMSG * (pad + frame) < NPOS */
#else
#define NPOS 16
#endif

byte tag[CAP];           /* frame tag = position; release record: position + CAP */
byte info[CAP];          /* frame: units (PAD = 0 for padding); release record: batch length */
byte data[CAP];          /* message id + 1 in every unit of a frame */
byte head = 0;           /* published up to here */
byte tail = 0;           /* claimed up to here */
byte writable_end = 0;   /* producer's walk of release records (its private cache) */

byte pub_id[NPOS];       /* ghost: message id + 1 at a frame position (0: padding/none) */
byte pub_units[NPOS];
byte got[NMSG];
byte delivered = 0;

inline walk(need) {
    /* q_writable: follow release records while they say the next batch is free */
    do
    :: writable_end < head + need && tag[writable_end % CAP] == writable_end ->
        writable_end = writable_end + info[writable_end % CAP]
    :: else -> break
    od
}

proctype producer() {
    byte id = 0, u, pad, s, k;
    do
    :: id == NMSG -> break
    :: id < NMSG ->
        if
        :: u = 1
        :: u = 2
        fi;
        s = head % CAP;
#ifdef BUG_NO_PAD
        pad = 0;
#else
        pad = (u > CAP - s -> CAP - s : 0);
#endif
#ifdef REWIND
        /* m_rewind_pad: a frame that fits may still be preceded by a padding
         * frame to the end of the lap, if the room for both is there now
         * (any offset but 0; the producer's window is abstracted away) */
        if
        :: pad == 0 && s > 0 ->
            atomic {
                walk(CAP - s + u);
                if
                :: head + CAP - s + u <= writable_end -> pad = CAP - s
                :: else -> skip
                fi
            }
        :: else -> skip
        fi;
#endif
        /* wait for room: pad + u units from head */
        do
        :: atomic { walk(pad + u); if :: head + pad + u <= writable_end -> break :: else -> skip fi }
        od;
        if
        :: pad > 0 ->
            tag[s] = head; info[s] = PAD; pub_units[head] = pad;
        :: else -> skip
        fi;
        k = 0;
        do
        :: k < u -> data[(head + pad + k) % CAP] = id + 1; k++
        :: else -> break
        od;
        tag[(head + pad) % CAP] = head + pad;
        info[(head + pad) % CAP] = u;
        pub_id[head + pad] = id + 1; pub_units[head + pad] = u;
        head = head + pad + u;   /* release store: publishes both frames */
        id++
    od
}

proctype consumer() {
    byte t, q, tg, inf, u, n, k, first, m;
    byte ids[2];             /* messages in this claim (at most 2) */
    byte at[2];
    do
    :: delivered == NMSG -> break
    :: delivered < NMSG && tail < head ->
       t = tail;
       /* size the claim from the headers, before the CAS (m_q_claim) */
       q = t; n = 0;
       do
       :: n < 2 && q < head ->
           tg = tag[q % CAP];
           inf = info[q % CAP];
           if
           :: tg != q -> goto retry          /* stale: tail moved on */
           :: else -> skip
           fi;
           if
           :: inf == PAD -> u = CAP - q % CAP
           :: else -> u = inf; ids[n] = q; n++
           fi;
           if
           :: u == 0 || q + u > head -> goto retry
           :: else -> skip
           fi;
           q = q + u
       :: else -> break
       od;
       if
       :: n == 0 -> goto retry
       :: else -> skip
       fi;
       /* claim (shmr_q_try_claim) */
#ifdef BUG_NO_CAS
       tail = q;
#else
       atomic { if :: tail == t -> tail = q :: else -> goto retry fi }
#endif
       /* the headers read above must be the published ones */
       k = 0;
       do
       :: k < n -> assert(pub_id[ids[k]] != 0); k++
       :: else -> break
       od;
#ifdef BUG_RELEASE_EARLY
       info[t % CAP] = q - t; tag[t % CAP] = t + CAP;
#endif
       /* read the bodies */
       k = 0;
       do
       :: k < n ->
           first = ids[k];
           m = 0;
           do
           :: m < pub_units[first] ->
               assert(data[(first + m) % CAP] == pub_id[first]);
#ifdef BUG_NO_PAD
               assert(first % CAP + m < CAP);  /* a body is contiguous in the ring */
#endif
               m++
           :: else -> break
           od;
           got[pub_id[first] - 1]++;
           assert(got[pub_id[first] - 1] == 1);
           delivered++;
           k++
       :: else -> break
       od;
#ifndef BUG_RELEASE_EARLY
       /* release (shmr_q_release): len, then tag with release */
       info[t % CAP] = q - t;
       tag[t % CAP] = t + CAP;
#endif
retry: skip
    od;
    /* every message exactly once */
    k = 0;
    do
    :: k < NMSG -> assert(got[k] == 1); k++
    :: else -> break
    od
}

init {
    /* the first lap is one free batch */
    tag[0] = 0; info[0] = CAP;
    atomic {
        run producer();
        run consumer();
        run consumer()
    }
}
