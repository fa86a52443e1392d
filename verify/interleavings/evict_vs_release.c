/*
 * evict_vs_release -- queue mode with evict_after: the producer takes back the
 * batch of a live consumer S that stopped holding it, while S may resume at
 * any moment and try to release it itself.
 *
 * A: S is parked after copying its batch [0,4) out (hook 9), before its
 *    release. The producer evicts it (abandoned 4), refills, and a live
 *    consumer L releases a new batch at the same slot (tag 16). S resumes: its
 *    pop must fail with -SHMR_EEVICTED, count nothing, and leave the release
 *    record alone. A plain release store (the protocol without the claim_state
 *    CAS) writes tag 8 over 16 and the producer stalls for good at position 16,
 *    or S counts records that were counted abandoned.
 * B: S is parked just after winning HELD -> RELEASING (hook 10). Eviction must
 *    not happen (the record is S's to write); once S goes on, the producer
 *    goes on, and nothing is abandoned.
 * C: a producer killed right after winning HELD -> EVICTED (hook 11), before
 *    the release: a successor finishes the eviction, counted once.
 * Every case ends with popped + abandoned == pushed exactly.
 */
#include "common.h"

#include <time.h>

static __thread int is_S;
static int park_site;
static sem_t parked, go_on;
static int die_at_evict; /* C: the child producer exits at hook 11 */

void shmr_test_hook(int site)
{
    if (site == SHMR_HOOK_EVICT_WON && die_at_evict)
        _exit(0);
    if (is_S && site == park_site) {
        park_site = 0;
        sem_post(&parked);
        t_sem_wait(&go_on);
    }
}

static shmr_ring *mk(const char *tag)
{
    const char *name = t_segname(tag);
    shmr_unlink(name);
    shmr_params p = {8, 8, 8, SHMR_MODE_QUEUE, SHMR_OVERFLOW_BLOCK, 8, "<u8", 3, SHMR_KIND_RECORDS, 1};
    shmr_ring *r;
    CHECK(shmr_create(name, &p, 0600, &r));
    return r;
}

struct s_args {
    shmr_consumer *c;
    int64_t n;
    uint64_t out[4];
};

static void *s_main(void *arg)
{
    struct s_args *a = arg;
    is_S = 1;
    a->n = shmr_pop(a->c, a->out, 4, NULL);
    return NULL;
}

static void pause_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* pops everything there is with L; returns the count, checks the sequence */
static uint64_t drain(shmr_consumer *l, uint64_t *next)
{
    uint64_t got = 0, buf[8];
    int64_t k;
    while ((k = shmr_pop(l, buf, 4, NULL)) > 0) {
        for (int64_t i = 0; i < k; i++, (*next)++)
            if (buf[i] != *next) {
                t_deviation("L got %" PRIu64 ", want %" PRIu64, buf[i], *next);
                return got;
            }
        got += (uint64_t)k;
    }
    return got;
}

static void accounting(shmr_ring *r, uint64_t abandoned, uint64_t evicted, const char *what)
{
    shmr_ring_info i = t_info(r);
    EXPECT_EQ(i.abandoned, abandoned, "%s: abandoned", what);
    EXPECT_EQ(i.evicted_stalled, evicted, "%s: evicted_stalled", what);
    EXPECT_EQ(i.popped + i.abandoned, i.pushed, "%s: popped + abandoned == pushed", what);
    EXPECT_EQ(i.available, 0, "%s: nothing left", what);
}

/* A ring of 8 holding 0..7 with a producer and two consumers: S parked at
 * `park` inside its pop of [0,4), L having popped 4..7. */
struct scene {
    shmr_ring *r;
    shmr_producer *p;
    shmr_consumer *l;
    struct s_args s;
    pthread_t t;
    uint64_t next; /* L's next expected record */
};

static void scene_open(struct scene *sc, const char *tag, int park, const char *what)
{
    memset(sc, 0, sizeof *sc);
    sc->r = mk(tag);
    CHECK(shmr_producer_open(sc->r, &sc->p));
    CHECK(shmr_consumer_open(sc->r, 0, &sc->s.c));
    CHECK(shmr_consumer_open(sc->r, 0, &sc->l));
    EXPECT_EQ(t_push_seq(sc->p, 0, 8), 8, "%s: push 0..7", what);
    park_site = park;
    if (pthread_create(&sc->t, NULL, s_main, &sc->s))
        t_fatal("pthread_create");
    t_sem_wait(&parked);
    sc->next = 4;
    EXPECT_EQ(drain(sc->l, &sc->next), 4, "%s: L pops 4..7", what);
}

static void scene_close(struct scene *sc)
{
    shmr_consumer_free(sc->s.c);
    shmr_consumer_free(sc->l);
    shmr_producer_free(sc->p);
    shmr_detach(sc->r);
}

static void case_a(void)
{
    struct scene sc;
    scene_open(&sc, "ev-a", SHMR_HOOK_CLAIM_COPIED, "A"); /* S holds [0,4), copied, not released */
    EXPECT_EQ(t_push_seq(sc.p, 8, 8), 0, "A: full while S holds its batch");
    uint32_t idx;
    uint64_t behind;
    EXPECT_EQ(shmr_producer_stall(sc.p, &idx, &behind), 1, "A: a stall is named");
    EXPECT_EQ(idx, shmr_consumer_index(sc.s.c), "A: S is named");
    pause_ms(5); /* evict_after is 1 ms */
    EXPECT_EQ(shmr_producer_evict(sc.p), 1, "A: S evicted");
    EXPECT_EQ(t_push_seq(sc.p, 8, 8), 8, "A: push 8..15 into the space taken back");
    EXPECT_EQ(drain(sc.l, &sc.next), 8, "A: L pops 8..15 (its batch at slot 0 tags 16)");
    sem_post(&go_on);
    pthread_join(sc.t, NULL);
    EXPECT_EQ(sc.s.n, -SHMR_EEVICTED, "A: S's pop after its batch was taken back");
    EXPECT_EQ(shmr_pop(sc.s.c, sc.s.out, 4, NULL), -SHMR_EEVICTED, "A: S's next pop");
    EXPECT_EQ(t_push_seq(sc.p, 16, 8), 8, "A: push 16..23 (a clobbered release record stalls here)");
    EXPECT_EQ(drain(sc.l, &sc.next), 8, "A: L pops 16..23");
    accounting(sc.r, 4, 1, "A");
    scene_close(&sc);
}

static void case_b(void)
{
    struct scene sc;
    scene_open(&sc, "ev-b", SHMR_HOOK_RELEASE_WON, "B"); /* S won HELD -> RELEASING, record not written */
    shmr_producer_evict(sc.p); /* starts the stall clock */
    pause_ms(5);
    EXPECT_EQ(shmr_producer_evict(sc.p), 0, "B: a releasing consumer is not evicted");
    EXPECT_EQ(t_push_seq(sc.p, 8, 4), 0, "B: still full");
    sem_post(&go_on);
    pthread_join(sc.t, NULL);
    EXPECT_EQ(sc.s.n, 4, "B: S's pop delivers its batch");
    for (int i = 0; i < 4 && sc.s.n == 4; i++)
        EXPECT_EQ(sc.s.out[i], (uint64_t)i, "B: S's record %d", i);
    EXPECT_EQ(t_push_seq(sc.p, 8, 8), 8, "B: push 8..15 after S released");
    EXPECT_EQ(drain(sc.l, &sc.next), 8, "B: L pops 8..15");
    accounting(sc.r, 0, 0, "B");
    scene_close(&sc);
}

static void case_c(void)
{
    shmr_ring *r = mk("ev-c");
    shmr_producer *p;
    shmr_consumer *l;
    struct s_args s = {0};
    CHECK(shmr_consumer_open(r, 0, &s.c));
    CHECK(shmr_consumer_open(r, 0, &l));
    pid_t pid = t_fork();
    if (pid == 0) { /* a producer that dies inside its eviction */
        shmr_producer *cp;
        if (shmr_producer_open(r, &cp) || t_push_seq(cp, 0, 8) != 8)
            t_child_fail(3, "child producer setup");
        while (shmr_producer_stall(cp, &(uint32_t){0}, &(uint64_t){0}) == 0 || t_push_seq(cp, 8, 1) != 0)
            pause_ms(1); /* until S holds [0,4) and L drained the rest */
        pause_ms(5);
        die_at_evict = 1;
        shmr_producer_evict(cp);
        t_child_fail(4, "child producer did not reach its eviction");
    }
    /* S takes [0,4) and stops (parked) before releasing; L drains 4..7 */
    for (int i = 0; i < 2000 && t_info(r).pushed < 8; i++)
        pause_ms(1);
    park_site = SHMR_HOOK_CLAIM_COPIED;
    pthread_t t;
    if (pthread_create(&t, NULL, s_main, &s))
        t_fatal("pthread_create");
    t_sem_wait(&parked);
    uint64_t next = 4;
    EXPECT_EQ(drain(l, &next), 4, "C: L pops 4..7");
    EXPECT_EQ(t_reap(pid), 0, "C: the child producer died inside its eviction");
    EXPECT_EQ(t_info(r).evicted_stalled, 0, "C: nothing counted by the dead producer");
    CHECK(shmr_producer_open(r, &p));
    EXPECT_EQ(t_push_seq(p, 8, 4), 0, "C: the successor finds the batch still held");
    /* the stall word and its clock are the ring's: they carry over */
    EXPECT_EQ(shmr_producer_evict(p), 1, "C: the successor finishes the eviction");
    EXPECT_EQ(shmr_producer_evict(p), 0, "C: and only once");
    EXPECT_EQ(t_push_seq(p, 8, 8), 8, "C: push 8..15");
    sem_post(&go_on);
    pthread_join(t, NULL);
    EXPECT_EQ(s.n, -SHMR_EEVICTED, "C: S's pop after its batch was taken back");
    EXPECT_EQ(drain(l, &next), 8, "C: L pops 8..15");
    accounting(r, 4, 1, "C");
    shmr_consumer_free(s.c);
    shmr_consumer_free(l);
    shmr_producer_free(p);
    shmr_detach(r);
}

int main(void)
{
    t_init("evict_vs_release", 30);
    sem_init(&parked, 0, 0);
    sem_init(&go_on, 0, 0);
    case_a();
    case_b();
    case_c();
    t_finish("an evicted consumer's late release neither counts nor clobbers a later lap; a releasing one is not "
             "evicted; a producer killed mid-eviction is finished by its successor");
}
