/*
 * Named points in the protocols where a forced-interleaving test may park a
 * thread or kill a process (verify/interleavings/). The core calls
 * shmr_test_hook(site) there only when built with -DSHMR_TEST_HOOKS; the test
 * program supplies shmr_test_hook.
 */
#ifndef SHMR_HOOKS_H
#define SHMR_HOOKS_H

enum shmr_hook_site {
    SHMR_HOOK_JOIN_READ_HEAD = 1,   /* broadcast join, right after reading head */
    SHMR_HOOK_JOIN_PROVISIONAL = 2, /* broadcast join, provisional cursor + ready stored,
                                     * join_epoch not yet bumped */
    SHMR_HOOK_CLAIM_INTENT = 3,     /* queue claim, CLAIM_INTENT record written, before the tail CAS */
    SHMR_HOOK_SWEEP_START = 4,      /* sweep, before scanning owners */
    SHMR_HOOK_PRODUCER_DEAD = 5,    /* consumer found the producer dead, stream not yet closed */
    SHMR_HOOK_CLAIM_WON = 6,        /* queue claim, tail CAS succeeded, before CLAIM_HELD */
    SHMR_HOOK_SLOT_TAKEN = 7,       /* consumer open, slot owner CAS won, nothing else written */
    SHMR_HOOK_RELEASE_COUNTED = 8,  /* queue release, popped stored, release record not yet */
    SHMR_HOOK_CLAIM_COPIED = 9,     /* queue pop, batch copied out, release not begun */
    SHMR_HOOK_RELEASE_WON = 10,     /* queue release with evict_after, HELD -> RELEASING won */
    SHMR_HOOK_EVICT_WON = 11,       /* producer's eviction, HELD -> EVICTED won, batch not yet released */
    SHMR_HOOK_PICK_PASS = 12,       /* queue pick (shmr_mpq_pick), a pass begins, ticket counter not yet read */
};

#ifdef SHMR_TEST_HOOKS
void shmr_test_hook(int site);
#define SHMR_HOOK(site) shmr_test_hook(site)
#else
#define SHMR_HOOK(site) ((void)0)
#endif

#endif
