/*
 * pages.h - a page allocator over the shared segment, usable from every
 * process that maps it.
 *
 * It serves two clients: the jemalloc arena of the host (arena.c: jemalloc
 * asks it for extents) and workers that write a result too large to travel
 * inline.  Blocks are whole pages, rounded up to size classes (four per
 * doubling, so at most 25% is lost to rounding); freed blocks go on a free
 * list per class; those of PP_KEEP_MAX bytes or more give their pages
 * beyond the first back to the kernel (MADV_REMOVE).  Address space is taken from a bump pointer and
 * never returned, which is why the segment is reserved large.
 *
 * Locking: one process-shared, robust mutex.  A process killed while it
 * holds it leaves the structure consistent, because every update is a
 * single store of a list head or of the bump pointer made last; at worst
 * the block it was taking is leaked.  Blocking (short critical sections).
 */
#ifndef PP_SHM_PAGES_H
#define PP_SHM_PAGES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"

#define PP_PAGE 4096u
#define PP_PAGES_NCLASS 84 /* classes up to 2^21 pages (8 GiB) */
#define PP_KEEP_MAX (32u << 20) /* freed blocks at least this big give
                                   their memory back (MADV_REMOVE) */

struct pp_pages {
    pthread_mutex_t lock; /* process-shared, robust */
    uint64_t start;       /* first offset of the heap */
    uint64_t end;         /* one past the last */
    uint64_t bump;        /* next never-used offset */
    uint64_t free_head[PP_PAGES_NCLASS]; /* offset of first free block, 0 = none */
    uint64_t bytes_in_use;
    uint64_t owner_died;  /* times a dead holder's lock was recovered */
};

/* Sets up the allocator over [start, end) of the segment (page aligned). */
int pp_pages_init(struct pp_pages *pa, uint64_t start, uint64_t end);

/* The size class of a block of len > 0 bytes: blocks of one class are
 * interchangeable (a cache of freed blocks can hand one out again). */
unsigned pp_pages_class(size_t len);
/* The bytes of a block of class cls. */
size_t pp_pages_class_size(unsigned cls);

/*
 * Allocates a block of at least len bytes (len > 0).  Returns its offset,
 * or 0 when the heap is exhausted or len is too large.  *zeroed (may be
 * NULL) tells whether the block is known to be all zero bytes.
 */
uint64_t pp_pages_alloc(struct pp_pages *pa, const struct pp_segment *seg,
                        size_t len, bool *zeroed);
/* Frees a block from pp_pages_alloc; len is the length asked for. */
void pp_pages_free(struct pp_pages *pa, const struct pp_segment *seg,
                   uint64_t off, size_t len);

#endif /* PP_SHM_PAGES_H */
