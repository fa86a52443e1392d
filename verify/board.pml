/*
 * board.pml -- Promela model of the board protocol (csrc/board.c).
 *
 * One key, NCOPY copies (default 2), each copy a value of two words so a mix of
 * two writes shows. Two writers and NREADER readers (default 1; 2 in the
 * extended set):
 *   writer A  claims, writes WA values and may die (SIGKILL) at any step,
 *             holding the claim or not, mid-copy included;
 *   writer B  claims (taking over A's claim once A is dead, as claim() does
 *             after its liveness check), writes WB values;
 *   readers   read NREAD values each: version (acquire), seq of the published
 *             copy (must be 2v), copy the two words, re-check seq; retry on
 *             any mismatch (shmr_board_read), or hold a view: the same
 *             check, with the words read between the two seq reads.
 *
 * Each shared-memory access of the C code is one atomic Promela statement;
 * the claim CAS is a d_step. Promela interleaving is sequentially consistent:
 * the C code's release/acquire pairs and the acquire fence before the seq
 * re-check (see board.c) are what makes that sound for these steps
 * (verify/README.md).
 *
 * Properties
 *   - a value a reader returns is never torn and is the value of the version it
 *     was returned with (both words == version);
 *   - versions a reader returns never go backwards;
 *   - no deadlock (every blocked end state is an error): B always finishes,
 *     whatever moment A died at, and a reader always finishes (readers never
 *     wait for a writer);
 *   - at the end: version == the writes that completed (published), B's
 *     writes all among them, and the claim is free or held by the dead A.
 *
 * Seeded bugs (each must FAIL):
 *   -DBUG_NO_RECHECK    the reader does not re-check seq after the copy -> torn
 *   -DBUG_NO_ODD_MARK   the writer does not mark the copy odd before writing
 *                       it -> a slow reader accepts a half-rewritten copy -> torn
 *   -DBUG_NO_TAKEOVER   a writer waits for any claim holder, dead or alive
 *                       -> B waits for ever once A died holding the claim
 *   -DBUG_ONE_COPY      a plain seqlock: every write goes to the one copy
 *                       readers read -> A killed mid-copy leaves it odd for
 *                       ever and readers can never return (deadlock)
 *
 * A reader retries only once the version has moved on ((version != v) guards
 * each retry). In the real protocol that always holds at a retry (a copy is
 * rewritten only for version v + NCOPY, after v + 1 was published), so the
 * guard never blocks there; where a bug makes a reader retry without progress
 * it blocks and the search reports the stuck reader.
 */

#ifndef NCOPY
#define NCOPY 2
#endif
#ifndef WA
#define WA 2
#endif
#ifndef WB
#define WB 2
#endif
#ifndef NREAD
#define NREAD 2
#endif
#ifndef NREADER
#define NREADER 1
#endif

#define FREE 0
#define OWNER_A 1
#define OWNER_B 2

byte version = 0;          /* completed writes */
byte seq[NCOPY];           /* 2w: holds version w; 2w+1: being written */
byte word0[NCOPY];
byte word1[NCOPY];
byte owner = FREE;         /* claim word */
bool alive_a = true;
byte published = 0;        /* writes that reached the version store (ghost) */
byte done_b = 0;           /* ghost: writes B completed */
byte readers_done = 0;

/* A may die before any of its steps; a dead A never runs again. */
#ifdef CRASHY
#define STEP(s) if :: alive_a = false; goto dead :: s fi
#else
#define STEP(s) s
#endif

inline claim(me) {
    do
    :: d_step { owner == FREE -> owner = me }; break
#ifndef BUG_NO_TAKEOVER
    /* claim(): after a failed CAS, look at the holder's liveness; CAS over a dead one */
    :: d_step { owner == OWNER_A && !alive_a -> owner = me }; break
#endif
    od
}

#ifdef BUG_ONE_COPY
#define COPYOF(v) 0
#else
#define COPYOF(v) ((v) % NCOPY)
#endif

proctype WriterA()
{
    byte n = 0, w, c;
    do
    :: n < WA ->
        STEP(claim(OWNER_A));
        STEP(w = version + 1; c = COPYOF(w));
#ifndef BUG_NO_ODD_MARK
        STEP(seq[c] = 2 * w + 1);
#endif
        STEP(word0[c] = w);
        STEP(word1[c] = w);
        STEP(seq[c] = 2 * w);
        STEP(d_step { version = w; published++ });
        STEP(owner = FREE);
        d_step { n++; w = 0; c = 0 }
    :: else -> break
    od;
dead:
    skip
}

proctype WriterB()
{
    byte n = 0, w, c;
    do
    :: n < WB ->
        claim(OWNER_B);
        w = version + 1; c = COPYOF(w);
#ifndef BUG_NO_ODD_MARK
        seq[c] = 2 * w + 1;
#endif
        word0[c] = w;
        word1[c] = w;
        seq[c] = 2 * w;
        d_step { version = w; published++; done_b++ };
        owner = FREE;
        d_step { n++; w = 0; c = 0 }
    :: else -> break
    od
}

proctype Reader()
{
    byte n = 0, v, c, s1, s2, d0, d1, last = 0;
    do
    :: n < NREAD ->
        v = version;
        if
        :: v == 0 -> n++   /* never written: KeyError (not reached: written before the run) */
        :: else ->
            c = COPYOF(v);
            s1 = seq[c];
            if
            :: s1 != 2 * v -> (version != v)   /* a later writer started on this copy: retry */
            :: else ->
                d0 = word0[c];
                d1 = word1[c];
#ifdef BUG_NO_RECHECK
                s2 = s1;
#else
                s2 = seq[c];
#endif
                if
                :: s2 == s1 ->
                    d_step {
                        assert(d0 == v && d1 == v);  /* whole, and the value of version v */
                        assert(v >= last);
                        last = v; n++;
                        c = 0; s1 = 0; s2 = 0; d0 = 0; d1 = 0
                    }
                :: else -> (version != v)   /* overtaken: retry */
                fi
            fi
        fi;
        d_step { c = 0; s1 = 0; s2 = 0; d0 = 0; d1 = 0; v = 0 }
    :: else -> break
    od;
    readers_done++
}

init {
    d_step {
        /* the key was written once before the run (arrays start at 0) */
        version = 1; published = 1;
        seq[COPYOF(1)] = 2; word0[COPYOF(1)] = 1; word1[COPYOF(1)] = 1
    }
    atomic {
        run WriterA();
        run WriterB();
        run Reader();
#if NREADER > 1
        run Reader()
#endif
    }
    (_nr_pr == 1);
    assert(readers_done == NREADER);
    assert(done_b == WB);
    assert(version == published);
    assert(owner == FREE || (owner == OWNER_A && !alive_a))
}
