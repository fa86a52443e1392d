# Declarations mirroring csrc/board.h; nothing else belongs here.
from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "board.h" nogil:
    enum:
        SHMR_BOARD_VERSION
        SHMR_BOARD_MAX_COPIES
        SHMR_BOARD_DESCR_MAX
        SHMR_ENOTBOARD
        SHMR_BOARD_INT_KEYS
        SHMR_BOARD_STR_KEYS

    # 64-bit limits: macros declared as constants, since enums are int
    const uint64_t SHMR_BOARD_MAX_KEYS
    const uint64_t SHMR_BOARD_MAX_VALUE
    const uint64_t SHMR_BOARD_MAX_NAMES

    ctypedef struct shmr_board:
        pass

    ctypedef struct shmr_board_params:
        uint64_t nkeys
        uint64_t value_size
        uint32_t value_align
        uint32_t ncopies
        uint32_t key_kind
        uint32_t descr_len
        const char *descr
        const char *names
        uint64_t names_len

    ctypedef struct shmr_board_key_info:
        uint64_t version
        uint32_t owner_pid
        int owner_alive
        uint32_t last_writer_pid
        int last_writer_alive
        uint64_t write_time_ns
        uint64_t takeovers
        uint32_t waiters

    ctypedef struct shmr_board_info:
        uint64_t nkeys, value_size, segment_size, stride
        uint32_t ncopies, key_kind, version, creator_pid
        uint64_t create_time_ns

    int shmr_board_create(const char *name, const shmr_board_params *p, unsigned mode_bits, shmr_board **out)
    int shmr_board_attach(const char *name, shmr_board **out)
    void shmr_board_file_owner(const shmr_board *b, uint32_t *uid, uint32_t *mode)
    void shmr_board_detach(shmr_board *b)
    int shmr_board_info_get(const shmr_board *b, shmr_board_info *out)
    const char *shmr_board_descr(const shmr_board *b, uint32_t *len)
    const char *shmr_board_names(const shmr_board *b, uint64_t *len)
    uint64_t shmr_board_nkeys(const shmr_board *b)
    uint64_t shmr_board_value_size(const shmr_board *b)
    int shmr_board_key_info_get(const shmr_board *b, uint64_t key, shmr_board_key_info *out)
    int64_t shmr_board_write(shmr_board *b, uint64_t key, const void *src, uint64_t len, int64_t wait_ns,
                             int64_t spin_ns)
    int shmr_board_read(const shmr_board *b, uint64_t key, void *dst, uint64_t len, uint64_t *version,
                        uint32_t max_tries, uint64_t *retries)
    uint64_t shmr_board_version(const shmr_board *b, uint64_t key)
    int shmr_board_view(const shmr_board *b, uint64_t key, const void **ptr, uint64_t *version, uint64_t *token)
    int shmr_board_view_valid(const shmr_board *b, uint64_t key, uint64_t token)
    int shmr_board_wait(shmr_board *b, uint64_t key, uint64_t newer_than, int64_t timeout_ns, int64_t spin_ns)
    int shmr_board_wait_any(shmr_board *b, const uint64_t *keys, const uint64_t *newer_than, uint64_t n,
                            int64_t timeout_ns)
    int shmr_board_arm(shmr_board *b, uint64_t key, uint64_t newer_than, void **word, uint32_t *seen)
    void shmr_board_disarm(shmr_board *b, uint64_t key)
    void shmr_board_wake_all(shmr_board *b)
