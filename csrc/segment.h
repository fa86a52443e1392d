/*
 * Segment files, for every kind of segment (rings, boards): a name made
 * public only once its contents are complete, and the checked mapping of an
 * existing one. What lies inside (header, layout, magic) is the caller's.
 */
#ifndef SHMR_SEGMENT_H
#define SHMR_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#define SHMR_SEG_PATH_MAX 512

struct shmr_seg {
    int fd;                 /* -1 once closed */
    uint8_t *base;          /* the whole segment, read-write */
    size_t size;
    uint32_t uid, mode;     /* owner and mode bits of the file (fstat), for owner checks */
    char tmp[SHMR_SEG_PATH_MAX], final[SHMR_SEG_PATH_MAX];
};

/* Builds a segment of size bytes under a private name (the creator's pid and
 * start time in it, so gc can tell a dead creator's leftover), every page
 * reserved: a full /dev/shm fails here with ENOSPC, not with SIGBUS on a later
 * write. first_page (may be NULL) writes into the first page before anything
 * else is done, e.g. the creator's identity. -EEXIST if name is taken. The
 * caller fills s->base, then shmr_seg_publish or shmr_seg_abandon. */
int shmr_seg_create(const char *name, uint64_t size, unsigned mode_bits, void (*first_page)(uint8_t *page),
                    struct shmr_seg *s);
/* Gives the complete segment its name (link: -EEXIST if someone else took it
 * meanwhile, then nothing is published). On failure s is abandoned. */
int shmr_seg_publish(struct shmr_seg *s);
/* Unmaps and removes a segment that was never published. */
void shmr_seg_abandon(struct shmr_seg *s);

/* Opens the segment called name; its descriptor in *fd. */
int shmr_seg_open(const char *name, int *fd);
/* Maps the segment open on fd (consumed): validate(header page, file size)
 * first, on one read-only page, then again on the whole mapping kept
 * (segment size read from the header at size_off). A file of size 0 is
 * -SHMR_EINIT, one shorter than a page -SHMR_ETRUNC. */
int shmr_seg_map(int fd, int (*validate)(const uint8_t *, uint64_t), size_t size_off, struct shmr_seg *s);

#endif
