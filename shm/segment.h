/*
 * segment.h - the shared segment: one memfd mapped MAP_SHARED.
 *
 * The server creates it before it forks anything, so every worker maps it
 * at the same address and pointers into it are valid in all of them.
 * Structures inside still store offsets where a value crosses processes
 * (ring values, result locations), so they stay meaningful even in a
 * process that maps the segment elsewhere (a later remote or re-exec'd
 * helper).
 *
 * The segment is reserved large (MAP_NORESERVE) and filled lazily: a page
 * costs memory only once touched, and freed blocks are given back with
 * MADV_REMOVE.
 */
#ifndef PP_SHM_SEGMENT_H
#define PP_SHM_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

struct pp_segment {
    int fd;       /* the memfd, close-on-exec */
    char *base;   /* where it is mapped (same in every process) */
    size_t size;  /* reserved bytes */
};

/* Creates and maps a segment of size bytes (rounded up to pages).
 * Returns 0 or -errno. */
int pp_segment_create(struct pp_segment *seg, size_t size);
/* Unmaps and closes; safe on a zeroed or half-created segment. */
void pp_segment_destroy(struct pp_segment *seg);

static inline void *pp_seg_ptr(const struct pp_segment *seg, uint64_t off)
{
    return seg->base + off;
}

static inline uint64_t pp_seg_off(const struct pp_segment *seg, const void *p)
{
    return (uint64_t)((const char *)p - seg->base);
}

static inline int pp_seg_contains(const struct pp_segment *seg, const void *p,
                                  size_t len)
{
    const char *c = (const char *)p;
    return c >= seg->base && len <= seg->size &&
           (size_t)(c - seg->base) <= seg->size - len;
}

#endif /* PP_SHM_SEGMENT_H */
