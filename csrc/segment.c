/*
 * Segments: names, create, attach and validate, the layout computed from the
 * parameters, and the read-only views (info, consumer infos).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "eventcount.h"
#include "liveness.h"
#include "segment.h"
#include "shmr_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* ---- names -------------------------------------------------------------- */

#define SHMR_PREFIX "/shmr-"
#define SHMR_PATH_MAX (sizeof SHMR_PREFIX + SHMR_NAME_MAX)
#define SHMR_SHM_DIR "/dev/shm" /* where glibc's shm_open puts names on Linux */
#define SHMR_INIT_PREFIX ".shmr-init-" /* a segment being created: ".shmr-init-PID-START-NAME" */
/* the private build name and the published name as files: the build name
 * adds two decimal 32-bit numbers, two dashes and the directory */
#define SHMR_FILE_PATH_MAX (sizeof SHMR_SHM_DIR + sizeof SHMR_INIT_PREFIX + 22 + SHMR_NAME_MAX + 1)

int shmr_name_check(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SHMR_NAME_MAX)
        return -ENAMETOOLONG;
    if (name[0] == '-') /* would read as an option on the command line */
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') && !(ch >= '0' && ch <= '9') &&
            ch != '_' && ch != '-' && ch != '.')
            return -EINVAL;
    }
    return 0;
}

_Static_assert(SHMR_FILE_PATH_MAX <= sizeof(((struct shmr_build *)0)->tmp), "build paths fit");

static int full_name(const char *name, char *out, size_t outlen)
{
    int rc = shmr_name_check(name);
    if (rc)
        return rc;
    snprintf(out, outlen, "%s%s", SHMR_PREFIX, name);
    return 0;
}

/* ---- segment files (segment.h) ------------------------------------------ */

_Static_assert(SHMR_FILE_PATH_MAX <= SHMR_SEG_PATH_MAX, "a segment's file paths fit struct shmr_seg");

int shmr_seg_create(const char *name, uint64_t size, unsigned mode_bits, void (*first_page)(uint8_t *page),
                    struct shmr_seg *s)
{
    int rc = shmr_name_check(name);
    if (rc)
        return rc;
    if (size > (uint64_t)SIZE_MAX / 2)
        return -ENOMEM;
    uint64_t me = shmr_self_owner();
    s->base = MAP_FAILED;
    s->size = (size_t)size;
    s->uid = (uint32_t)geteuid();
    s->mode = mode_bits & 0777;
    snprintf(s->tmp, sizeof s->tmp, SHMR_SHM_DIR "/" SHMR_INIT_PREFIX "%u-%u-%s", (uint32_t)me, (uint32_t)(me >> 32),
             name);
    snprintf(s->final, sizeof s->final, SHMR_SHM_DIR SHMR_PREFIX "%s", name);
    struct stat taken;
    if (stat(s->final, &taken) == 0)
        return -EEXIST; /* the common case, without building a segment first */
    s->fd = open(s->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_bits & 0777);
    if (s->fd < 0)
        return -errno;
    if (fchmod(s->fd, mode_bits & 0777) != 0 || ftruncate(s->fd, SHMR_PAGE) != 0)
        goto fail_errno;
    if (first_page) {
        uint8_t *page = mmap(NULL, SHMR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
        if (page == MAP_FAILED)
            goto fail_errno;
        first_page(page);
        munmap(page, SHMR_PAGE);
    }
    if (ftruncate(s->fd, (off_t)size) != 0)
        goto fail_errno;
    if ((rc = posix_fallocate(s->fd, 0, (off_t)size)) != 0) {
        rc = -rc;
        goto fail;
    }
    s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (s->base == MAP_FAILED)
        goto fail_errno;
    return 0;
fail_errno:
    rc = -errno;
fail:
    shmr_seg_abandon(s);
    return rc;
}

int shmr_seg_publish(struct shmr_seg *s)
{
    int rc = link(s->tmp, s->final) == 0 ? 0 : -errno;
    if (rc) {
        shmr_seg_abandon(s);
        return rc;
    }
    unlink(s->tmp);
    close(s->fd);
    s->fd = -1;
    return 0;
}

void shmr_seg_abandon(struct shmr_seg *s)
{
    if (s->base != MAP_FAILED)
        munmap(s->base, s->size);
    s->base = MAP_FAILED;
    if (s->fd >= 0) {
        close(s->fd);
        unlink(s->tmp);
    }
    s->fd = -1;
}

int shmr_seg_open(const char *name, int *fd)
{
    char path[SHMR_PATH_MAX];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    *fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    return *fd < 0 ? -errno : 0;
}

int shmr_seg_map(int fd, int (*validate)(const uint8_t *, uint64_t), size_t size_off, struct shmr_seg *s)
{
    struct stat st;
    int rc = 0;
    s->fd = -1;
    s->base = MAP_FAILED;
    if (fstat(fd, &st) != 0)
        rc = -errno;
    else if (st.st_size == 0)
        rc = -SHMR_EINIT;
    else if ((uint64_t)st.st_size < SHMR_PAGE)
        rc = -SHMR_ETRUNC;
    if (rc) {
        close(fd);
        return rc;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    s->uid = (uint32_t)st.st_uid;
    s->mode = (uint32_t)st.st_mode & 07777;
    uint8_t *hp = mmap(NULL, SHMR_PAGE, PROT_READ, MAP_SHARED, fd, 0);
    if (hp == MAP_FAILED) {
        rc = -errno;
        close(fd);
        return rc;
    }
    rc = validate(hp, fsize);
    uint64_t size;
    memcpy(&size, hp + size_off, sizeof size);
    munmap(hp, SHMR_PAGE);
    if (rc) {
        close(fd);
        return rc;
    }
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    rc = base == MAP_FAILED ? -errno : 0;
    close(fd);
    if (rc)
        return rc;
    /* the header is immutable once published, but re-check the mapping we keep */
    uint64_t size2;
    memcpy(&size2, base + size_off, sizeof size2);
    if (size2 != size)
        rc = -SHMR_ECORRUPT;
    else
        rc = validate(base, fsize);
    if (rc) {
        munmap(base, size);
        return rc;
    }
    s->base = base;
    s->size = size;
    return 0;
}

/* ---- layout ------------------------------------------------------------- */

struct layout {
    uint64_t consumers, releases, slots, size;
};

static struct layout compute_layout(uint64_t cap, uint64_t stride, uint32_t mode, uint32_t max_consumers,
                                    uint32_t kind)
{
    struct layout l;
    l.consumers = OFF_CONSUMERS;
    uint64_t end = l.consumers + (uint64_t)max_consumers * SHMR_BLOCK;
    /* a message ring keeps its release records in the frames (messages.c) */
    if (mode == SHMR_MODE_QUEUE && kind == SHMR_KIND_RECORDS) {
        l.releases = round_up(end, SHMR_BLOCK);
        end = l.releases + cap * sizeof(struct shmr_release_rec);
    } else {
        l.releases = 0;
    }
    l.slots = round_up(end, SHMR_PAGE);
    l.size = round_up(l.slots + cap * stride, SHMR_PAGE);
    return l;
}

static void bind(shmr_ring *r)
{
    struct shmr_header *h = (struct shmr_header *)r->base;
    r->hdr = h;
    r->prod = (struct shmr_prod_block *)(r->base + OFF_PROD);
    r->tail_block = (struct shmr_tail_block *)(r->base + OFF_TAIL);
    r->data_ec = (struct shmr_ec *)(r->base + OFF_DATA_EC);
    r->space_ec = (struct shmr_ec *)(r->base + OFF_SPACE_EC);
    r->data_wakes = SHMR_WAKE_ALL;
    r->ctl = (struct shmr_ctl *)(r->base + OFF_CTL);
    r->cslots = (struct shmr_cslot *)(r->base + h->consumers_offset);
    r->releases = h->releases_offset ? (struct shmr_release_rec *)(r->base + h->releases_offset) : NULL;
    r->slots = r->base + h->slots_offset;
    r->kind = h->kind;
    if (r->kind == SHMR_KIND_MESSAGES && h->mode == SHMR_MODE_QUEUE)
        r->releases = (struct shmr_release_rec *)r->slots; /* one unit = one release record */
    r->cap = h->capacity;
    r->mask = h->capacity - 1;
    r->stride = h->stride;
    r->mode = h->mode;
    r->overflow = h->overflow;
    r->max_consumers = h->max_consumers;
    r->evict_after_ns = (uint64_t)h->evict_after_ms * 1000000u;
    r->descr_len = h->descr_len < SHMR_DESCR_MAX ? h->descr_len : 0;
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static int check_params(const shmr_params *p)
{
    if (!is_pow2(p->capacity) || p->capacity > SHMR_MAX_CAPACITY)
        return -EINVAL;
    if (p->record_size == 0 || p->record_size > SHMR_MAX_RECORD)
        return -EINVAL;
    if (!is_pow2(p->record_align) || p->record_align > SHMR_PAGE)
        return -EINVAL;
    if (p->mode > SHMR_MODE_BROADCAST || p->overflow > SHMR_OVERFLOW_OVERWRITE)
        return -EINVAL;
    if (p->max_consumers == 0 || p->max_consumers > SHMR_MAX_CONSUMERS)
        return -EINVAL;
    if (p->descr_len == 0 || p->descr_len >= SHMR_DESCR_MAX)
        return -E2BIG;
    if (p->capacity > (UINT64_MAX / 4) / p->record_size)
        return -EINVAL;
    if (p->kind > SHMR_KIND_MESSAGES)
        return -EINVAL;
    /* eviction stops a consumer from holding the producer back: block mode only,
     * rings of records only */
    if (p->evict_after_ms && (p->kind != SHMR_KIND_RECORDS || p->overflow != SHMR_OVERFLOW_BLOCK))
        return -EINVAL;
    /* messages: whole units, and room for a frame header and a body of at least
     * one unit in half the ring */
    if (p->kind == SHMR_KIND_MESSAGES &&
        (p->record_size != SHMR_MSG_UNIT || p->record_align != SHMR_MSG_UNIT || p->capacity < 16))
        return -EINVAL;
    return 0;
}

/* ---- ring images -------------------------------------------------------- */

/* A ring image is a header page, the control blocks and the slots, at any
 * page-aligned base: a ring segment holds one, a queue segment one per lane
 * (mpqueue.c). Both format and bind them here. */

int shmr_image_size(const shmr_params *p, uint64_t *size)
{
    int rc = check_params(p);
    if (rc)
        return rc;
    *size = compute_layout(p->capacity, p->record_size, p->mode, p->max_consumers, p->kind).size;
    return 0;
}

/* Writes a complete image at base (its pages must exist), magic last; me is
 * the creator's owner word. The caller has checked p. */
void shmr_image_format(uint8_t *base, const shmr_params *p, uint64_t me)
{
    struct layout l = compute_layout(p->capacity, p->record_size, p->mode, p->max_consumers, p->kind);
    struct shmr_header *h = (struct shmr_header *)base;
    h->creator_pid = (uint32_t)me;
    h->creator_start = me >> 32;
    h->creator_pidns = shmr_self_pidns();
    h->version = SHMR_LAYOUT_VERSION;
    h->header_size = sizeof(struct shmr_header);
    h->segment_size = l.size;
    h->capacity = p->capacity;
    h->record_size = p->record_size;
    h->stride = p->record_size;
    h->record_align = p->record_align;
    h->mode = p->mode;
    h->overflow = p->mode == SHMR_MODE_BROADCAST ? p->overflow : SHMR_OVERFLOW_BLOCK;
    h->max_consumers = p->max_consumers;
    h->consumers_offset = l.consumers;
    h->releases_offset = l.releases;
    h->slots_offset = l.slots;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->create_time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    h->descr_len = p->descr_len;
    h->kind = p->kind;
    h->evict_after_ms = p->evict_after_ms;
    memcpy(h->descr, p->descr, p->descr_len);
    if (p->mode == SHMR_MODE_QUEUE) {
        /* the first lap is one free batch; other records are never read before
         * written (a message ring keeps its release records in its units) */
        struct shmr_release_rec *rel =
            (struct shmr_release_rec *)(base + (p->kind == SHMR_KIND_MESSAGES ? l.slots : l.releases));
        shmr_store_relaxed64(&rel[0].len, p->capacity);
        shmr_store_relaxed64(&rel[0].tag, 0);
    }
    /* publishes every field above; pairs with the acquire load in validate() */
    shmr_store_release64(&h->magic, SHMR_MAGIC);
}

/* ---- create / attach ---------------------------------------------------- */

/* A segment is built under a private name and linked to its real name only
 * once complete, so no one ever attaches to a half-made ring, and a creator
 * killed mid-way leaves only its private file, named after it (pid and start
 * time: `shmring gc` removes it once that process is dead). link() fails with
 * EEXIST if the name is taken, which keeps create's exclusive semantics. An
 * anonymous segment (name NULL) is a memfd: nothing to link, nothing to leave.
 * Ring segments (here) and queue segments (mpqueue.c) are built alike. */
int shmr_build_open(struct shmr_build *b, const char *name, unsigned mode_bits, uint64_t me)
{
    b->base = MAP_FAILED;
    b->size = 0;
    b->tmp[0] = b->final[0] = 0;
    if (!name) {
        b->fd = memfd_create("shmring", MFD_CLOEXEC);
        return b->fd < 0 ? -errno : 0;
    }
    char path[SHMR_PATH_MAX];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    snprintf(b->tmp, sizeof b->tmp, SHMR_SHM_DIR "/" SHMR_INIT_PREFIX "%u-%u-%s", (uint32_t)me,
             (uint32_t)(me >> 32), name);
    snprintf(b->final, sizeof b->final, SHMR_SHM_DIR "%s", path);
    struct stat taken;
    if (stat(b->final, &taken) == 0)
        return -EEXIST; /* the common case, without building a segment first */
    b->fd = open(b->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode_bits & 0777);
    if (b->fd < 0)
        return -errno;
    if (fchmod(b->fd, mode_bits & 0777) != 0) {
        rc = -errno;
        shmr_build_abort(b);
        return rc;
    }
    return 0;
}

/* Sizes the file, reserves its first `reserve` bytes and maps all of it. */
int shmr_build_map(struct shmr_build *b, uint64_t size, uint64_t reserve)
{
    if (ftruncate(b->fd, (off_t)size) != 0)
        return -errno;
    /* Reserve pages now: on a full /dev/shm a bare ftruncate succeeds and the
     * first write to a missing page later dies with SIGBUS. */
    int rc = reserve ? posix_fallocate(b->fd, 0, (off_t)reserve) : 0;
    if (rc != 0)
        return -rc;
    b->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
    if (b->base == MAP_FAILED)
        return -errno;
    b->size = size;
    return 0;
}

/* The segment is complete: give it its name. The fd stays open. */
int shmr_build_publish(struct shmr_build *b)
{
    if (!b->tmp[0])
        return 0;
    if (link(b->tmp, b->final) != 0)
        return -errno;
    unlink(b->tmp);
    return 0;
}

void shmr_build_abort(struct shmr_build *b)
{
    if (b->base != MAP_FAILED)
        munmap(b->base, b->size);
    b->base = MAP_FAILED;
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    if (b->tmp[0])
        unlink(b->tmp);
}

int shmr_create(const char *name, const shmr_params *p, unsigned mode_bits, shmr_ring **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    int rc = shmr_name_check(name);
    if (rc)
        return rc;
    if ((rc = check_params(p)))
        return rc;
    struct layout l = compute_layout(p->capacity, p->record_size, p->mode, p->max_consumers, p->kind);
    if (l.size > (uint64_t)SIZE_MAX / 2)
        return -ENOMEM;
    uint64_t me = shmr_self_owner();
    struct shmr_build b;
    if ((rc = shmr_build_open(&b, name, mode_bits, me)))
        return rc;
    /* the creator is the first thing written: an attacher of a segment made
     * by an older version that never finished learns whether it still can */
    if ((rc = shmr_build_map(&b, SHMR_PAGE, 0)))
        goto fail;
    struct shmr_header *h = (struct shmr_header *)b.base;
    h->creator_pid = (uint32_t)me;
    h->creator_start = me >> 32;
    h->creator_pidns = shmr_self_pidns();
    munmap(b.base, SHMR_PAGE);
    b.base = MAP_FAILED;
    if ((rc = shmr_build_map(&b, l.size, l.size)))
        goto fail;
    shmr_ring *r = calloc(1, sizeof *r);
    if (!r) {
        rc = -ENOMEM;
        goto fail;
    }
    shmr_image_format(b.base, p, me);
    shmr_image_bind(b.base, l.size, r); /* cannot fail: we just wrote it */
    r->file_uid = (uint32_t)geteuid();
    r->file_mode = mode_bits & 0777;
    if ((rc = shmr_build_publish(&b))) {
        free(r);
        goto fail;
    }
    close(b.fd);
    *out = r;
    return 0;
fail:
    shmr_build_abort(&b);
    return rc;
}

static int validate(const uint8_t *base, uint64_t file_size)
{
    const struct shmr_header *h = (const struct shmr_header *)base;
    uint64_t magic = shmr_load_acquire64((shmr_a64 *)&h->magic); /* pairs with the creator's release */
    if (magic == 0) {
        /* only a segment not made by this version's create (which links the
         * name when complete) is seen unfinished: the creator, if recorded,
         * says whether it can still finish */
        if (h->creator_pid != 0 &&
            shmr_proc_liveness(h->creator_pid, h->creator_start, h->creator_pidns) == SHMR_DEAD)
            return -SHMR_ECREATOR;
        return -SHMR_EINIT;
    }
    if (magic != SHMR_MAGIC)
        return -SHMR_EBADMAGIC;
    if (h->version != SHMR_LAYOUT_VERSION)
        return -SHMR_EVERSION;
    if (h->header_size != sizeof(struct shmr_header))
        return -SHMR_ECORRUPT;
    /* evict_after_ms is not judged: any value is safe in any mode (a producer
     * that never waits never evicts), so a peer's odd value costs nothing */
    shmr_params p = {h->capacity, h->record_size, h->record_align, h->mode, h->overflow,
                     h->max_consumers, h->descr, h->descr_len, h->kind, 0};
    if (check_params(&p) || h->stride != h->record_size)
        return -SHMR_ECORRUPT;
    if (h->mode == SHMR_MODE_QUEUE && h->overflow != SHMR_OVERFLOW_BLOCK)
        return -SHMR_ECORRUPT;
    for (uint32_t i = 0; i < h->descr_len; i++)
        if (h->descr[i] < 0x20 || h->descr[i] > 0x7e)
            return -SHMR_ECORRUPT;
    struct layout l = compute_layout(h->capacity, h->stride, h->mode, h->max_consumers, h->kind);
    if (h->consumers_offset != l.consumers || h->releases_offset != l.releases || h->slots_offset != l.slots ||
        h->segment_size != l.size)
        return -SHMR_ECORRUPT;
    if (file_size < h->segment_size)
        return -SHMR_ETRUNC;
    return 0;
}

/* Validates the image at base (avail bytes mapped there) and points r into it. */
int shmr_image_bind(uint8_t *base, uint64_t avail, shmr_ring *r)
{
    int rc = validate(base, avail);
    if (rc)
        return rc;
    r->base = base;
    r->size = ((struct shmr_header *)base)->segment_size;
    bind(r);
    return 0;
}

int shmr_attach_fd(int fd, shmr_ring **out)
{
    shmr_ec_setup(); /* before this process can notify anyone (eventcount.c) */
    /* map and validate as boards do; the kept mapping is validated again there */
    struct shmr_seg seg;
    int rc = shmr_seg_map(fd, validate, offsetof(struct shmr_header, segment_size), &seg);
    if (rc)
        return rc;
    shmr_ring *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(seg.base, seg.size);
        return -ENOMEM;
    }
    r->base = seg.base;
    r->size = seg.size;
    bind(r);
    r->file_uid = seg.uid;
    r->file_mode = seg.mode;
    *out = r;
    return 0;
}

void shmr_file_owner(const shmr_ring *r, uint32_t *uid, uint32_t *mode)
{
    *uid = r->file_uid;
    *mode = r->file_mode;
}

int shmr_attach(const char *name, shmr_ring **out)
{
    int fd, rc = shmr_open_name(name, &fd);
    return rc ? rc : shmr_attach_fd(fd, out);
}

int shmr_open_name(const char *name, int *fd)
{
    char path[SHMR_PATH_MAX];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    *fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    return *fd < 0 ? -errno : 0;
}

void shmr_detach(shmr_ring *r)
{
    if (!r)
        return;
    if (!r->borrowed) /* a queue's lane lives in the queue's mapping */
        munmap(r->base, r->size);
    free(r);
}

int shmr_unlink(const char *name)
{
    char path[SHMR_PATH_MAX];
    int rc = full_name(name, path, sizeof path);
    if (rc)
        return rc;
    return shm_unlink(path) == 0 ? 0 : -errno;
}

const char *shmr_descr(const shmr_ring *r, uint32_t *len)
{
    *len = r->descr_len; /* the bound checked at attach, not today's header word */
    return r->hdr->descr;
}
uint64_t shmr_capacity(const shmr_ring *r) { return r->cap; }
uint64_t shmr_record_size(const shmr_ring *r) { return r->stride; }
uint32_t shmr_mode(const shmr_ring *r) { return r->mode; }
uint32_t shmr_overflow(const shmr_ring *r) { return r->overflow; }
uint32_t shmr_kind(const shmr_ring *r) { return r->kind; }

/* Map every page of the segment into this process up front, once a producer or
 * consumer is opened here: the pages exist already (posix_fallocate), but the
 * first touch of each would otherwise take a page fault on the hot path. A
 * mapping made only to read stats skips this. Best effort: old kernels lack it. */
void shmr_populate(shmr_ring *r)
{
    if (shmr_swap_relaxed32(&r->populated, 1)) /* only once; nothing is published through it */
        return;
#ifdef MADV_POPULATE_WRITE
    madvise(r->base, r->populate_bytes && r->populate_bytes < r->size ? r->populate_bytes : r->size,
            MADV_POPULATE_WRITE);
#endif
}

/* ---- layout export ------------------------------------------------------ */

#define FIELD(region, base, type, member) \
    {region "." #member, (base) + offsetof(struct type, member), sizeof(((struct type *)0)->member)}
#define REGION(region, base, type) {region, (base), sizeof(struct type)}

static const shmr_layout_field layout_fields[] = {
    REGION("header", 0, shmr_header),
    FIELD("header", 0, shmr_header, magic),
    FIELD("header", 0, shmr_header, version),
    FIELD("header", 0, shmr_header, header_size),
    FIELD("header", 0, shmr_header, segment_size),
    FIELD("header", 0, shmr_header, capacity),
    FIELD("header", 0, shmr_header, record_size),
    FIELD("header", 0, shmr_header, stride),
    FIELD("header", 0, shmr_header, record_align),
    FIELD("header", 0, shmr_header, mode),
    FIELD("header", 0, shmr_header, overflow),
    FIELD("header", 0, shmr_header, max_consumers),
    FIELD("header", 0, shmr_header, consumers_offset),
    FIELD("header", 0, shmr_header, releases_offset),
    FIELD("header", 0, shmr_header, slots_offset),
    FIELD("header", 0, shmr_header, create_time_ns),
    FIELD("header", 0, shmr_header, creator_pid),
    FIELD("header", 0, shmr_header, descr_len),
    FIELD("header", 0, shmr_header, kind),
    FIELD("header", 0, shmr_header, evict_after_ms),
    FIELD("header", 0, shmr_header, creator_start),
    FIELD("header", 0, shmr_header, creator_pidns),
    FIELD("header", 0, shmr_header, descr),
    REGION("prod", OFF_PROD, shmr_prod_block),
    FIELD("prod", OFF_PROD, shmr_prod_block, head),
    FIELD("prod", OFF_PROD, shmr_prod_block, intent),
    FIELD("prod", OFF_PROD, shmr_prod_block, join_claim),
    FIELD("prod", OFF_PROD, shmr_prod_block, writable_end),
    FIELD("prod", OFF_PROD, shmr_prod_block, msgs),
    FIELD("prod", OFF_PROD, shmr_prod_block, bytes),
    FIELD("prod", OFF_PROD, shmr_prod_block, oldest),
    FIELD("prod", OFF_PROD, shmr_prod_block, last_frame),
    REGION("tail", OFF_TAIL, shmr_tail_block),
    FIELD("tail", OFF_TAIL, shmr_tail_block, tail),
    REGION("data_ec", OFF_DATA_EC, shmr_ec),
    FIELD("data_ec", OFF_DATA_EC, shmr_ec, epoch),
    FIELD("data_ec", OFF_DATA_EC, shmr_ec, waiters),
    REGION("space_ec", OFF_SPACE_EC, shmr_ec),
    FIELD("space_ec", OFF_SPACE_EC, shmr_ec, epoch),
    FIELD("space_ec", OFF_SPACE_EC, shmr_ec, waiters),
    REGION("ctl", OFF_CTL, shmr_ctl),
    FIELD("ctl", OFF_CTL, shmr_ctl, producer_owner),
    FIELD("ctl", OFF_CTL, shmr_ctl, stream),
    FIELD("ctl", OFF_CTL, shmr_ctl, join_epoch),
    FIELD("ctl", OFF_CTL, shmr_ctl, pad0),
    FIELD("ctl", OFF_CTL, shmr_ctl, producer_pidns),
    FIELD("ctl", OFF_CTL, shmr_ctl, evicted),
    FIELD("ctl", OFF_CTL, shmr_ctl, stall),
    FIELD("ctl", OFF_CTL, shmr_ctl, stall_since_ns),
    FIELD("ctl", OFF_CTL, shmr_ctl, evicted_stalled),
    REGION("cslot", OFF_CONSUMERS, shmr_cslot),
    FIELD("cslot", 0, shmr_cslot, owner),
    FIELD("cslot", 0, shmr_cslot, ready),
    FIELD("cslot", 0, shmr_cslot, claim_state),
    FIELD("cslot", 0, shmr_cslot, cursor),
    FIELD("cslot", 0, shmr_cslot, claim_pos),
    FIELD("cslot", 0, shmr_cslot, claim_n),
    FIELD("cslot", 0, shmr_cslot, popped),
    FIELD("cslot", 0, shmr_cslot, dropped),
    FIELD("cslot", 0, shmr_cslot, claim_pbase),
    FIELD("cslot", 0, shmr_cslot, abandoned),
    FIELD("cslot", 0, shmr_cslot, abandoned_base),
    FIELD("cslot", 0, shmr_cslot, popped_base),
    FIELD("cslot", 0, shmr_cslot, dropped_base),
    FIELD("cslot", 0, shmr_cslot, pidns),
    FIELD("cslot", 0, shmr_cslot, dropped_bytes),
    FIELD("cslot", 0, shmr_cslot, abandoned_bytes),
    FIELD("cslot", 0, shmr_cslot, abandoned_bytes_base),
    REGION("release", 0, shmr_release_rec),
    FIELD("release", 0, shmr_release_rec, tag),
    FIELD("release", 0, shmr_release_rec, len),
    REGION("frame", 0, shmr_frame),
    FIELD("frame", 0, shmr_frame, tag),
    FIELD("frame", 0, shmr_frame, info),
    FIELD("frame", 0, shmr_frame, seq),
    FIELD("frame", 0, shmr_frame, cum),
    /* queue segments (mpqueue.c): the header page, then one lane block per lane */
    REGION("qheader", 0, shmr_qheader),
    FIELD("qheader", 0, shmr_qheader, magic),
    FIELD("qheader", 0, shmr_qheader, version),
    FIELD("qheader", 0, shmr_qheader, lanes),
    FIELD("qheader", 0, shmr_qheader, segment_size),
    FIELD("qheader", 0, shmr_qheader, lane_offset),
    FIELD("qheader", 0, shmr_qheader, lane_stride),
    FIELD("qheader", 0, shmr_qheader, lane_units),
    FIELD("qheader", 0, shmr_qheader, max_consumers),
    FIELD("qheader", 0, shmr_qheader, creator_pid),
    FIELD("qheader", 0, shmr_qheader, creator_start),
    FIELD("qheader", 0, shmr_qheader, creator_pidns),
    FIELD("qheader", 0, shmr_qheader, maxsize),
    FIELD("qheader", 0, shmr_qheader, create_time_ns),
    FIELD("qheader", 0, shmr_qheader, data_ec),
    FIELD("qheader", 0, shmr_qheader, space_ec),
    FIELD("qheader", 0, shmr_qheader, join_ec),
    {"qheader.lanes_used", offsetof(struct shmr_qheader, shared.lanes_used), sizeof(shmr_a64)},
    {"qheader.done", offsetof(struct shmr_qheader, shared.done), sizeof(shmr_a64)},
    {"qheader.ticket", offsetof(struct shmr_qheader, ticket.next), sizeof(shmr_a64)},
    REGION("lane", OFF_QLANES, shmr_lane_block),
    FIELD("lane", 0, shmr_lane_block, state),
    FIELD("lane", 0, shmr_lane_block, admitted),
    FIELD("lane", 0, shmr_lane_block, lost),
};

const shmr_layout_field *shmr_layout_fields(uint32_t *n)
{
    *n = (uint32_t)(sizeof layout_fields / sizeof layout_fields[0]);
    return layout_fields;
}

/* ---- stats -------------------------------------------------------------- */

int shmr_info(shmr_ring *r, shmr_ring_info *o)
{
    memset(o, 0, sizeof *o);
    struct shmr_header *h = r->hdr;
    o->capacity = r->cap;
    o->record_size = r->stride;
    o->segment_size = r->size;
    o->mode = r->mode;
    o->overflow = r->overflow;
    o->max_consumers = r->max_consumers;
    o->layout_version = h->version;
    o->pushed = shmr_load_acquire64(&r->prod->head);
    uint64_t owner = shmr_load_acquire64(&r->ctl->producer_owner);
    o->producer_pid = (uint32_t)owner;
    o->producer_start = owner >> 32;
    o->producer_alive = owner ? shmr_owner_liveness(owner, shmr_load_acquire64(&r->ctl->producer_pidns)) : SHMR_DEAD;
    o->close_reason = shmr_stream_reason(r);
    o->waiters.consumers = shmr_load_relaxed32(&r->data_ec->waiters);
    o->waiters.producer = shmr_load_relaxed32(&r->space_ec->waiters);
    o->evicted = shmr_load_relaxed64(&r->ctl->evicted);
    o->evicted_stalled = shmr_load_relaxed64(&r->ctl->evicted_stalled);
    o->evict_after_ms = h->evict_after_ms;
    /* cumulative per slot (see struct shmr_cslot): the sums cover every
     * consumer that ever used the ring, whatever became of it */
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        o->popped += shmr_load_relaxed64(&r->cslots[i].popped);
        o->abandoned += shmr_load_relaxed64(&r->cslots[i].abandoned);
    }
    o->creator_pid = h->creator_pid;
    o->creator_start = h->creator_start;
    o->creator_alive = shmr_proc_liveness(h->creator_pid, h->creator_start, h->creator_pidns);
    o->create_time_ns = h->create_time_ns;
    /* of which by consumers that have left: all but the current occupants' own shares */
    o->popped_retired = o->popped;
    uint64_t minc = o->pushed;
    for (uint32_t i = 0; i < r->max_consumers; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        uint64_t so = shmr_load_acquire64(&s->owner);
        if (so != 0 && !SHMR_IS_BUSY(so))
            o->popped_retired -= shmr_load_relaxed64(&s->popped) - shmr_load_relaxed64(&s->popped_base);
        if (so == 0 || (shmr_load_acquire32(&s->ready) & SHMR_SLOT_STATE) != SHMR_READY)
            continue;
        o->n_consumers++;
        uint64_t cur = shmr_load_acquire64(&s->cursor);
        if (cur < minc)
            minc = cur;
    }
    o->tail = r->mode == SHMR_MODE_QUEUE ? shmr_load_acquire64(&r->tail_block->tail) : minc;
    o->available = o->pushed > o->tail ? o->pushed - o->tail : 0;
    o->kind = r->kind;
    if (r->kind == SHMR_KIND_MESSAGES) {
        /* positions count units: report messages, and what is waiting in bytes */
        o->available *= SHMR_MSG_UNIT;
        o->pushed = shmr_load_relaxed64(&r->prod->msgs);
        o->bytes_pushed = shmr_load_relaxed64(&r->prod->bytes);
        for (uint32_t i = 0; i < r->max_consumers; i++) /* cumulative per slot, as abandoned */
            o->abandoned_bytes += shmr_load_relaxed64(&r->cslots[i].abandoned_bytes);
        o->max_message = shmr_msg_max(r);
    }
    return 0;
}

int shmr_stall_info(shmr_ring *r, uint32_t *index, uint64_t *ns)
{
    /* hints written by the producer alone (shmr_producer_stall), read relaxed */
    uint64_t stall = shmr_load_relaxed64(&r->ctl->stall);
    if (stall == 0 || stall > r->max_consumers)
        return 0;
    *index = (uint32_t)(stall - 1);
    int64_t since = (int64_t)shmr_load_relaxed64(&r->ctl->stall_since_ns);
    int64_t now = shmr_mono_ns();
    *ns = now > since ? (uint64_t)(now - since) : 0;
    return 1;
}

int shmr_consumer_infos(shmr_ring *r, shmr_consumer_info *out, uint32_t max, uint32_t *n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->max_consumers && k < max; i++) {
        struct shmr_cslot *s = &r->cslots[i];
        uint64_t owner = shmr_load_acquire64(&s->owner);
        if (owner == 0 || SHMR_IS_BUSY(owner))
            continue;
        shmr_consumer_info *o = &out[k++];
        o->index = i;
        o->pid = (uint32_t)owner;
        o->start_time = owner >> 32;
        o->cursor = shmr_load_acquire64(&s->cursor);
        o->popped = shmr_load_relaxed64(&s->popped) - shmr_load_relaxed64(&s->popped_base);
        o->dropped = shmr_load_relaxed64(&s->dropped) - shmr_load_relaxed64(&s->dropped_base);
        o->dropped_bytes = shmr_load_relaxed64(&s->dropped_bytes);
        o->claim_pos = shmr_load_relaxed64(&s->claim_pos);
        uint32_t cs = shmr_load_relaxed32(&s->claim_state);
        o->claimed = cs == CLAIM_HELD || cs == CLAIM_RELEASING ? shmr_load_relaxed64(&s->claim_n) : 0;
        o->evicted = (shmr_load_relaxed32(&s->ready) & SHMR_SLOT_STATE) == SHMR_EVICTED_MARK;
        o->alive = shmr_owner_liveness(owner, shmr_load_acquire64(&s->pidns));
    }
    *n = k;
    return 0;
}
