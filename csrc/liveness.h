/*
 * Liveness: who holds a role or a consumer slot, and whether that process is
 * still alive. An owner word is (start time low 32 bits << 32) | pid, so a
 * reused pid cannot pass for the process that died. Sweeping frees the
 * consumer slots of dead processes in two steps around whatever the protocol
 * must undo for them (queue mode releases their claims in between).
 */
#ifndef SHMR_LIVENESS_H
#define SHMR_LIVENESS_H

#include <stdint.h>

#include "shmr_internal.h"

/* This process as an owner word. */
uint64_t shmr_self_owner(void);
/* enum shmr_liveness of the owner word's process (a BUSY word: of its
 * sweeper); pidns is the namespace recorded beside the word (0: not recorded). */
int shmr_owner_liveness(uint64_t owner, uint64_t pidns);
/* Takes *word for me unless an owner not known dead holds it: 0 or
 * -SHMR_EPRODUCER; records our namespace in *ns_word after taking it. */
int shmr_claim_owner(shmr_a64 *word, shmr_a64 *ns_word, uint64_t me);

/* Event-loop waits watch the processes whose exit could matter to them
 * through pidfds instead of polling. Adds owner (recorded with pidns) to the
 * distinct owner words out[0..*n) (stored while *n < cap; *n counts on past
 * cap, so the caller can size its array). An empty word and this process are
 * skipped: neither can die under us. -EXDEV: the owner cannot be watched from
 * here (another pid namespace, or a sweeper's BUSY mark, which carries no
 * start time), so the caller keeps its liveness timer. */
int shmr_peer_add(uint64_t owner, uint64_t pidns, uint64_t self_ns, uint64_t *out, uint32_t cap, uint32_t *n);

/* Sweep step 1: marks every dead consumer slot BUSY(this process); alive[i] /
 * dead[i] say what was found. Step 3: frees the slots marked dead, counts them
 * as evicted, wakes the producer; returns how many. */
void shmr_sweep_mark(shmr_ring *r, int *alive, int *dead);
int shmr_sweep_free(shmr_ring *r, const int *dead);

#endif
