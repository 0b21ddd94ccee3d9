/*
 * pages.c - the shared page allocator (see pages.h).
 */
#define _GNU_SOURCE
#include "pages.h"

#include "atomic.h"

#include <errno.h>
#include <sys/mman.h>

/* Size classes in pages: 1, 2, 3, 4, then four steps per doubling:
 * 5,6,7,8, 10,12,14,16, 20,24,28,32, ...  A request of n pages maps to the
 * smallest class >= n. */
static unsigned class_of(uint64_t npages)
{
    uint64_t n = npages - 1;
    if (n < 4)
        return (unsigned)n;
    unsigned b = 63u - (unsigned)__builtin_clzll(n); /* b >= 2 */
    unsigned j = (unsigned)(n >> (b - 2)) & 3u;
    return 4u * (b - 1u) + j;
}

static uint64_t class_pages(unsigned c)
{
    if (c < 4)
        return c + 1;
    unsigned b = c / 4u + 1u, j = c % 4u;
    return (uint64_t)(5u + j) << (b - 2u);
}

unsigned pp_pages_class(size_t len)
{
    uint64_t np = (len + PP_PAGE - 1) / PP_PAGE;
    return class_of(np ? np : 1);
}

size_t pp_pages_class_size(unsigned cls)
{
    return (size_t)(class_pages(cls) * PP_PAGE);
}

int pp_pages_init(struct pp_pages *pa, uint64_t start, uint64_t end)
{
    pthread_mutexattr_t at;
    int r;

    if (start % PP_PAGE || end % PP_PAGE || end <= start || start == 0)
        return -EINVAL;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    r = pthread_mutex_init(&pa->lock, &at);
    pthread_mutexattr_destroy(&at);
    if (r)
        return -r;
    pa->start = start;
    pa->end = end;
    pa->bump = start;
    for (unsigned i = 0; i < PP_PAGES_NCLASS; i++)
        pa->free_head[i] = 0;
    pa->bytes_in_use = 0;
    pa->owner_died = 0;
    return 0;
}

static void lock(struct pp_pages *pa)
{
    int r = pthread_mutex_lock(&pa->lock);
    if (r == EOWNERDEAD) {
        /* The holder died; every update is a single final store, so the
         * state is consistent (pages.h).  Count it for the stats. */
        pa->owner_died++;
        pthread_mutex_consistent(&pa->lock);
    }
}

uint64_t pp_pages_alloc(struct pp_pages *pa, const struct pp_segment *seg,
                        size_t len, bool *zeroed)
{
    uint64_t np = (len + PP_PAGE - 1) / PP_PAGE;
    uint64_t off = 0;
    bool z = false;

    if (len == 0 || np > class_pages(PP_PAGES_NCLASS - 1))
        return 0;
    unsigned c = class_of(np);
    uint64_t bytes = class_pages(c) * PP_PAGE;

    lock(pa);
    off = pa->free_head[c];
    if (off) {
        /* The first 8 bytes of a free block hold the next free offset. */
        pa->free_head[c] = *(uint64_t *)pp_seg_ptr(seg, off);
    } else if (pa->end - pa->bump >= bytes) {
        off = pa->bump;
        pa->bump += bytes; /* memfd pages never touched are zero */
        z = true;
    }
    if (off)
        pa->bytes_in_use += bytes;
    pthread_mutex_unlock(&pa->lock);
    if (zeroed)
        *zeroed = z;
    return off;
}

void pp_pages_free(struct pp_pages *pa, const struct pp_segment *seg,
                   uint64_t off, size_t len)
{
    uint64_t np = (len + PP_PAGE - 1) / PP_PAGE;
    unsigned c = class_of(np ? np : 1);
    uint64_t bytes = class_pages(c) * PP_PAGE;

    if (off == 0)
        return;
    /* Give very large blocks' memory back, outside the lock; keep the first
     * page, which holds the free-list link.  Smaller blocks keep their
     * pages: punching them would make every process fault them in again
     * on reuse. */
    if (bytes >= PP_KEEP_MAX)
        madvise(pp_seg_ptr(seg, off + PP_PAGE), bytes - PP_PAGE, MADV_REMOVE);
    lock(pa);
    *(uint64_t *)pp_seg_ptr(seg, off) = pa->free_head[c];
    pa->free_head[c] = off;
    pa->bytes_in_use -= bytes;
    pthread_mutex_unlock(&pa->lock);
    PP_TSAN_RELEASE(pa); /* pairs with the result reader's (atomic.h) */
}
