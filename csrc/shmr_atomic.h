/*
 * Named accessors for every atomic in the shared segment.
 *
 * Nothing else in the C core touches an _Atomic object directly: each access
 * names its ordering here, and each call site says what it pairs with. The
 * words live in memory shared between processes, so they must be lock-free
 * (a lock-based fallback would put a process-private lock next to them).
 */
#ifndef SHMR_ATOMIC_H
#define SHMR_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free to live in shared memory");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free to live in shared memory");

typedef _Atomic uint64_t shmr_a64;
typedef _Atomic uint32_t shmr_a32;

/* 64-bit */
static inline uint64_t shmr_load_relaxed64(const shmr_a64 *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static inline uint64_t shmr_load_acquire64(const shmr_a64 *p) { return atomic_load_explicit(p, memory_order_acquire); }
static inline uint64_t shmr_load_seqcst64(const shmr_a64 *p) { return atomic_load_explicit(p, memory_order_seq_cst); }
static inline void shmr_store_relaxed64(shmr_a64 *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }
static inline void shmr_store_release64(shmr_a64 *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_release); }
static inline void shmr_store_seqcst64(shmr_a64 *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_seq_cst); }
static inline uint64_t shmr_fetch_add_relaxed64(shmr_a64 *p, uint64_t v) { return atomic_fetch_add_explicit(p, v, memory_order_relaxed); }
static inline uint64_t shmr_fetch_add_release64(shmr_a64 *p, uint64_t v) { return atomic_fetch_add_explicit(p, v, memory_order_release); }
static inline int shmr_cas_seqcst64(shmr_a64 *p, uint64_t *expected, uint64_t desired)
{
    return atomic_compare_exchange_strong_explicit(p, expected, desired, memory_order_seq_cst, memory_order_relaxed);
}

/* 32-bit */
static inline uint32_t shmr_load_relaxed32(const shmr_a32 *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static inline uint32_t shmr_load_acquire32(const shmr_a32 *p) { return atomic_load_explicit(p, memory_order_acquire); }
static inline void shmr_store_relaxed32(shmr_a32 *p, uint32_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }
static inline void shmr_store_release32(shmr_a32 *p, uint32_t v) { atomic_store_explicit(p, v, memory_order_release); }
static inline uint32_t shmr_load_seqcst32(const shmr_a32 *p) { return atomic_load_explicit(p, memory_order_seq_cst); }
static inline void shmr_store_seqcst32(shmr_a32 *p, uint32_t v) { atomic_store_explicit(p, v, memory_order_seq_cst); }
static inline uint32_t shmr_fetch_add_seqcst32(shmr_a32 *p, uint32_t v) { return atomic_fetch_add_explicit(p, v, memory_order_seq_cst); }
static inline uint32_t shmr_fetch_sub_seqcst32(shmr_a32 *p, uint32_t v) { return atomic_fetch_sub_explicit(p, v, memory_order_seq_cst); }
static inline uint32_t shmr_fetch_add_release32(shmr_a32 *p, uint32_t v) { return atomic_fetch_add_explicit(p, v, memory_order_release); }
/* relaxed: a flag beside a counter whose own RMWs carry the ordering */
static inline uint32_t shmr_fetch_or_relaxed32(shmr_a32 *p, uint32_t v) { return atomic_fetch_or_explicit(p, v, memory_order_relaxed); }
static inline uint32_t shmr_fetch_and_relaxed32(shmr_a32 *p, uint32_t v) { return atomic_fetch_and_explicit(p, v, memory_order_relaxed); }
static inline uint32_t shmr_swap_relaxed32(shmr_a32 *p, uint32_t v) { return atomic_exchange_explicit(p, v, memory_order_relaxed); }
static inline int shmr_cas_seqcst32(shmr_a32 *p, uint32_t *expected, uint32_t desired)
{
    return atomic_compare_exchange_strong_explicit(p, expected, desired, memory_order_seq_cst, memory_order_relaxed);
}

/* fences */
static inline void shmr_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }
static inline void shmr_fence_release(void) { atomic_thread_fence(memory_order_release); }
static inline void shmr_fence_seqcst(void) { atomic_thread_fence(memory_order_seq_cst); }
/* Orders this thread's accesses for the compiler only (no instruction). The
 * hardware may still reorder them; used where another thread's membarrier()
 * supplies the fence (see shmr_ec_notify). */
static inline void shmr_compiler_barrier(void) { atomic_signal_fence(memory_order_seq_cst); }

static inline void shmr_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
