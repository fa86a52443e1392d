# Declarations mirroring csrc/shmring.h (and the constants of csrc/shmr_layout.h);
# nothing else belongs here.
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "shmring.h" nogil:
    enum:
        SHMR_LAYOUT_VERSION
        SHMR_NAME_MAX
        SHMR_DESCR_MAX
        SHMR_MAX_CONSUMERS
        SHMR_EBADMAGIC
        SHMR_EVERSION
        SHMR_ETRUNC
        SHMR_ECORRUPT
        SHMR_ECLOSED
        SHMR_EPRODUCER
        SHMR_ETABLEFULL
        SHMR_EINIT
        SHMR_ESTATE
        SHMR_ECREATOR
        SHMR_EEVICTED
        SHMR_DEAD
        SHMR_ALIVE
        SHMR_UNKNOWN
        SHMR_MODE_QUEUE
        SHMR_MODE_BROADCAST
        SHMR_OVERFLOW_BLOCK
        SHMR_OVERFLOW_OVERWRITE
        SHMR_START_LATEST
        SHMR_START_OLDEST
        SHMR_OPEN
        SHMR_CLOSED_BY_PRODUCER
        SHMR_CLOSED_PRODUCER_DIED
        SHMR_KIND_RECORDS
        SHMR_KIND_MESSAGES
        SHMR_MSG_UNIT

    ctypedef struct shmr_ring:
        pass
    ctypedef struct shmr_producer:
        pass
    ctypedef struct shmr_consumer:
        pass

    ctypedef struct shmr_params:
        uint64_t capacity
        uint64_t record_size
        uint32_t record_align
        uint32_t mode
        uint32_t overflow
        uint32_t max_consumers
        const char *descr
        uint32_t descr_len
        uint32_t kind
        uint32_t evict_after_ms

    ctypedef struct shmr_consumer_info:
        uint32_t index
        uint32_t pid
        uint64_t start_time
        uint64_t cursor
        uint64_t popped
        uint64_t dropped
        uint64_t dropped_bytes
        uint64_t claim_pos
        uint64_t claimed
        int alive
        int evicted

    ctypedef struct shmr_wait_stats:
        uint64_t waits
        uint64_t spun
        uint64_t spin_won
        uint64_t looks
        uint64_t shared_cpu
        uint64_t slept_at_once
        uint64_t switches
        uint64_t dense
        uint64_t dense_won

    ctypedef struct shmr_waiters:
        uint32_t consumers
        uint32_t producer

    ctypedef struct shmr_ring_info:
        uint64_t capacity, record_size, segment_size
        uint32_t mode, overflow, max_consumers, layout_version
        uint64_t pushed
        uint64_t tail
        uint64_t popped
        uint64_t popped_retired
        uint64_t available
        uint32_t n_consumers
        shmr_waiters waiters
        uint32_t producer_pid
        uint64_t producer_start
        int producer_alive
        uint32_t close_reason
        uint64_t abandoned
        uint64_t evicted
        uint64_t evicted_stalled
        uint32_t evict_after_ms
        uint32_t creator_pid
        uint64_t creator_start
        int creator_alive
        uint64_t create_time_ns
        uint32_t kind
        uint64_t bytes_pushed
        uint64_t abandoned_bytes
        uint64_t max_message

    ctypedef struct shmr_msg:
        const void *body
        uint64_t pos
        uint64_t len
        uint32_t kind

    ctypedef struct shmr_loss:
        uint64_t msgs, bytes

    int shmr_name_check(const char *name)
    int shmr_create(const char *name, const shmr_params *params, unsigned mode_bits, shmr_ring **out)
    int shmr_attach(const char *name, shmr_ring **out)
    int shmr_attach_fd(int fd, shmr_ring **out)
    void shmr_detach(shmr_ring *r)
    int shmr_unlink(const char *name)
    const char *shmr_descr(const shmr_ring *r, uint32_t *len)
    uint64_t shmr_capacity(const shmr_ring *r)
    uint64_t shmr_record_size(const shmr_ring *r)
    uint32_t shmr_mode(const shmr_ring *r)
    uint32_t shmr_overflow(const shmr_ring *r)
    uint32_t shmr_kind(const shmr_ring *r)
    int shmr_info(shmr_ring *r, shmr_ring_info *out)
    int shmr_stall_info(shmr_ring *r, uint32_t *index, uint64_t *ns)
    int shmr_consumer_infos(shmr_ring *r, shmr_consumer_info *out, uint32_t max, uint32_t *n)
    ctypedef struct shmr_layout_field:
        const char *name
        uint64_t offset
        uint64_t size
    const shmr_layout_field *shmr_layout_fields(uint32_t *n)

    uint64_t shmr_proc_start_time(uint32_t pid)
    int shmr_proc_alive(uint32_t pid, uint64_t start_time)
    int shmr_proc_liveness(uint32_t pid, uint64_t start_time, uint64_t pidns)
    uint64_t shmr_self_pidns()
    void shmr_file_owner(const shmr_ring *r, uint32_t *uid, uint32_t *mode)

    int shmr_producer_open(shmr_ring *r, shmr_producer **out)
    void shmr_producer_free(shmr_producer *p)
    int shmr_producer_close_stream(shmr_producer *p)
    int64_t shmr_push(shmr_producer *p, const void *src, uint64_t n)
    int64_t shmr_reserve(shmr_producer *p, uint64_t n, void **ptr)
    void shmr_commit(shmr_producer *p, uint64_t n)
    int shmr_producer_wait(shmr_producer *p, int64_t timeout_ns, int64_t spin_ns)
    void shmr_producer_wait_stats(const shmr_producer *p, shmr_wait_stats *out)
    int shmr_producer_stall(shmr_producer *p, uint32_t *index, uint64_t *behind)
    void shmr_producer_unstall(shmr_producer *p)
    int shmr_producer_recover(shmr_producer *p, uint64_t *reclaimed)
    int shmr_producer_evict(shmr_producer *p)
    uint64_t shmr_producer_room(shmr_producer *p)
    uint32_t shmr_consumer_count(shmr_ring *r)
    int shmr_wait_consumers(shmr_ring *r, uint32_t n, int64_t timeout_ns, int64_t spin_ns)

    int shmr_sweep(shmr_ring *r, uint64_t *reclaimed)
    int shmr_consumer_open(shmr_ring *r, uint32_t start, shmr_consumer **out)
    void shmr_consumer_free(shmr_consumer *c)
    int64_t shmr_pop(shmr_consumer *c, void *dst, uint64_t max, uint64_t *dropped)
    int64_t shmr_claim(shmr_consumer *c, uint64_t max, const void **ptr, uint64_t *dropped)
    int64_t shmr_release(shmr_consumer *c)
    int shmr_consumer_wait(shmr_consumer *c, int64_t timeout_ns, int64_t spin_ns)
    void shmr_consumer_wait_stats(const shmr_consumer *c, shmr_wait_stats *out)
    int shmr_consumer_check_producer(shmr_consumer *c)
    uint64_t shmr_consumer_popped(const shmr_consumer *c)
    uint64_t shmr_consumer_dropped(const shmr_consumer *c)
    uint32_t shmr_consumer_index(const shmr_consumer *c)
    uint64_t shmr_consumer_evicted_claim(const shmr_consumer *c)
    uint64_t shmr_consumer_available(shmr_consumer *c)
    uint32_t shmr_close_reason(const shmr_ring *r)
    void shmr_wake_all(shmr_ring *r)

    uint64_t shmr_msg_max(const shmr_ring *r)
    int shmr_msg_reserve(shmr_producer *p, uint32_t kind, uint64_t len, void **body)
    uint64_t shmr_msg_commit(shmr_producer *p)
    void shmr_msg_set_rewind(shmr_producer *p, uint64_t nbytes)
    uint64_t shmr_msg_lap_offset(const shmr_producer *p)
    void shmr_msg_cancel(shmr_producer *p)
    int shmr_msg_producer_wait(shmr_producer *p, uint64_t len, int64_t timeout_ns, int64_t spin_ns)
    int64_t shmr_msg_claim(shmr_consumer *c, shmr_msg *out, uint64_t max, shmr_loss *loss)
    int64_t shmr_msg_release(shmr_consumer *c, const shmr_msg *msgs, shmr_loss *loss)
    int shmr_msg_intact(shmr_consumer *c, const shmr_msg *msgs)
    uint64_t shmr_consumer_dropped_bytes(const shmr_consumer *c)
    uint64_t shmr_msg_next_seq(const shmr_consumer *c)

cdef extern from "shmr_layout.h" nogil:
    const unsigned long long SHMR_MAGIC
    const unsigned long long SHMR_QMAGIC
    enum:
        SHMR_PAGE
        SHMR_BLOCK


# event-loop waits (the arm/disarm half of an eventcount wait)
cdef extern from "shmring.h" nogil:
    int shmr_consumer_arm(shmr_consumer *c, void **word, uint32_t *seen)
    void shmr_consumer_disarm(shmr_consumer *c)
    int shmr_consumer_ready(shmr_consumer *c)
    int shmr_producer_arm(shmr_producer *p, void **word, uint32_t *seen)
    void shmr_producer_disarm(shmr_producer *p)
    int shmr_producer_ready(shmr_producer *p)
    int shmr_msg_producer_arm(shmr_producer *p, uint64_t len, void **word, uint32_t *seen)
    int shmr_msg_producer_ready(shmr_producer *p, uint64_t len)
    uint64_t shmr_producer_owner(const shmr_ring *r)
    int64_t shmr_ring_peers(const shmr_ring *r, int producer_side, uint64_t *out, uint32_t cap)
