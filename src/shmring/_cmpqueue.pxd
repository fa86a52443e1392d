# Declarations mirroring csrc/mpqueue.h; nothing else belongs here.
from libc.stdint cimport int64_t, uint32_t, uint64_t

from shmring._cshmring cimport shmr_producer, shmr_ring

cdef extern from "mpqueue.h" nogil:
    enum:
        SHMR_MPQ_MAX_LANES
        SHMR_MPQ_MIN_LANE_BYTES
        SHMR_ELANES
        SHMR_ENOTQUEUE

    ctypedef struct shmr_mpq:
        pass

    ctypedef struct shmr_mpq_params:
        uint32_t lanes
        uint32_t max_consumers
        uint64_t lane_bytes
        int64_t maxsize

    ctypedef struct shmr_mpq_info:
        uint32_t lanes, lanes_used, max_consumers, layout_version
        int64_t maxsize
        uint64_t lane_bytes, segment_size
        uint64_t items
        uint64_t bytes
        uint64_t put
        uint64_t got
        uint64_t abandoned
        uint64_t lost
        uint64_t admitted
        uint64_t done
        uint32_t producers
        uint32_t consumers
        uint32_t creator_pid
        uint64_t create_time_ns

    int shmr_mpq_create(const char *name, const shmr_mpq_params *p, unsigned mode_bits, shmr_mpq **out)
    int shmr_mpq_attach(const char *name, shmr_mpq **out)
    int shmr_mpq_attach_fd(int fd, shmr_mpq **out)
    void shmr_mpq_detach(shmr_mpq *q)
    int shmr_mpq_fd(const shmr_mpq *q)
    void shmr_mpq_params_of(const shmr_mpq *q, shmr_mpq_params *out)
    void shmr_mpq_file_owner(const shmr_mpq *q, uint32_t *uid, uint32_t *mode)
    uint32_t shmr_mpq_lanes_used(const shmr_mpq *q)
    int shmr_mpq_lane_open(shmr_mpq *q, uint32_t i, shmr_ring **out)
    int shmr_mpq_producer_open(shmr_mpq *q, shmr_ring **ring, shmr_producer **out, uint32_t *lane)
    int shmr_mpq_admit(shmr_mpq *q, uint32_t lane, uint64_t n, uint64_t *consumed)
    void shmr_mpq_unadmit(shmr_mpq *q, uint32_t lane, uint64_t n)
    int shmr_mpq_wait_room(shmr_mpq *q, uint64_t n, int64_t timeout_ns, int64_t spin_ns)
    int shmr_mpq_wait_data(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns)
    int shmr_mpq_has_data(shmr_mpq *q)
    int shmr_mpq_pick(shmr_mpq *q, uint64_t max, uint32_t *lane, uint64_t *count)
    void shmr_mpq_taken(shmr_mpq *q)
    void shmr_mpq_leave(shmr_mpq *q)
    uint64_t shmr_mpq_items(shmr_mpq *q)
    int shmr_mpq_task_done(shmr_mpq *q)
    uint64_t shmr_mpq_unfinished(shmr_mpq *q)
    int shmr_mpq_wait_join(shmr_mpq *q, int64_t timeout_ns, int64_t spin_ns)
    uint64_t shmr_mpq_recover(shmr_mpq *q)
    int64_t shmr_mpq_peers(shmr_mpq *q, uint64_t *out, uint32_t cap)
    void shmr_mpq_joined(shmr_mpq *q)
    int shmr_mpq_stats(shmr_mpq *q, shmr_mpq_info *out)
    void shmr_mpq_wake_all(shmr_mpq *q)
    int shmr_mpq_arm_data(shmr_mpq *q, void **word, uint32_t *seen)
    void shmr_mpq_disarm_data(shmr_mpq *q)
    int shmr_mpq_room_ready(shmr_mpq *q, uint64_t n)
    int shmr_mpq_arm_room(shmr_mpq *q, uint64_t n, void **word, uint32_t *seen)
    void shmr_mpq_disarm_room(shmr_mpq *q)
