# Declarations mirroring csrc/uring_wait.h; nothing else belongs here.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef extern from "uring_wait.h" nogil:
    ctypedef struct shmr_uring:
        pass
    enum:
        SHMR_WAITV_MAX
    int shmr_uring_open(unsigned entries, unsigned flags, shmr_uring **out)
    unsigned SHMR_URING_ONE_THREAD
    void shmr_uring_close(shmr_uring *u)
    int shmr_uring_eventfd(const shmr_uring *u)
    int shmr_uring_futex_wait(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data)
    int shmr_uring_futex_wait_until(shmr_uring *u, void *word, uint32_t seen, uint64_t user_data, int64_t deadline_ns)
    int shmr_uring_poll(shmr_uring *u, int fd, uint64_t user_data)
    int shmr_uring_timeout(shmr_uring *u, int64_t ns, uint64_t user_data)
    int shmr_uring_cancel(shmr_uring *u, uint64_t user_data)
    int shmr_uring_reap(shmr_uring *u, uint64_t *user_data, int32_t *res, unsigned max)
    int shmr_futex_waitv(void *const *words, const uint32_t *seen, unsigned n, int64_t timeout_ns)
    uint32_t shmr_wakeword_load(void *w)
    void shmr_wakeword_bump(void *w)
    int shmr_wakeword_wait(void *w, uint32_t seen, int64_t timeout_ns)
