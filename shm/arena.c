/*
 * arena.c - jemalloc extent hooks over a range of the shared segment.
 *
 * Address space is handed out by a bump pointer and never returned to us:
 * dalloc opts out, so jemalloc keeps ("retains") extents and reuses them,
 * splitting and merging as it likes (all within our range).  Physical
 * memory does go back: purge drops pages with MADV_REMOVE, which on a
 * shared memfd mapping frees them and makes them read back as zeros.
 */
#define _GNU_SOURCE
#include "arena.h"
#include "atomic.h"

#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct pp_arena {
    extent_hooks_t hooks; /* first: jemalloc gives us back this pointer */
    char *base;           /* of the segment */
    uint64_t start, end;
    _Atomic uint64_t bump; /* next free offset in [start, end) */
    unsigned ind;          /* jemalloc arena index */
    int flags;             /* for mallocx/dallocx */
};

/* What experimental.arenas_create_ext takes (jemalloc >= 5.3). */
struct pp_je_arena_config {
    extent_hooks_t *extent_hooks;
    bool metadata_use_hooks;
};

static struct pp_arena *arena_of(extent_hooks_t *h)
{
    return (struct pp_arena *)h;
}

static void *h_alloc(extent_hooks_t *h, void *new_addr, size_t size,
                     size_t alignment, bool *zero, bool *commit,
                     unsigned arena_ind)
{
    struct pp_arena *a = arena_of(h);
    uint64_t cur, off;

    (void)arena_ind;
    if (new_addr != NULL)
        return NULL; /* no growing in place; jemalloc copes */
    if (alignment == 0)
        alignment = 1;
    cur = pp_load_relaxed(&a->bump);
    do {
        off = (cur + alignment - 1) & ~((uint64_t)alignment - 1);
        if (off > a->end || a->end - off < size)
            return NULL;
    } while (!atomic_compare_exchange_weak_explicit(
        &a->bump, &cur, off + size, memory_order_relaxed, memory_order_relaxed));
    /* Never-touched memfd pages read as zero. */
    *zero = true;
    *commit = true;
    return a->base + off;
}

static bool h_dalloc(extent_hooks_t *h, void *addr, size_t size,
                     bool committed, unsigned arena_ind)
{
    (void)h; (void)addr; (void)size; (void)committed; (void)arena_ind;
    return true; /* opt out: jemalloc retains the extent for reuse */
}

static void h_destroy(extent_hooks_t *h, void *addr, size_t size,
                      bool committed, unsigned arena_ind)
{
    (void)h; (void)committed; (void)arena_ind;
    madvise(addr, size, MADV_REMOVE);
}

static bool h_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
                     size_t length, unsigned arena_ind)
{
    (void)h; (void)addr; (void)size; (void)offset; (void)length; (void)arena_ind;
    return false; /* always committed */
}

static bool h_decommit(extent_hooks_t *h, void *addr, size_t size,
                       size_t offset, size_t length, unsigned arena_ind)
{
    (void)h; (void)addr; (void)size; (void)offset; (void)length; (void)arena_ind;
    return true; /* opt out: stays committed (purge frees the pages) */
}

static bool h_purge_forced(extent_hooks_t *h, void *addr, size_t size,
                           size_t offset, size_t length, unsigned arena_ind)
{
    (void)h; (void)size; (void)arena_ind;
    return madvise((char *)addr + offset, length, MADV_REMOVE) != 0;
}

static bool h_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a,
                    size_t size_b, bool committed, unsigned arena_ind)
{
    (void)h; (void)addr; (void)size; (void)size_a; (void)size_b;
    (void)committed; (void)arena_ind;
    return false; /* any split is fine: it is all our range */
}

static bool h_merge(extent_hooks_t *h, void *addr_a, size_t size_a,
                    void *addr_b, size_t size_b, bool committed,
                    unsigned arena_ind)
{
    (void)h; (void)addr_a; (void)size_a; (void)addr_b; (void)size_b;
    (void)committed; (void)arena_ind;
    return false;
}

static const extent_hooks_t pp_hooks = {
    .alloc = h_alloc,
    .dalloc = h_dalloc,
    .destroy = h_destroy,
    .commit = h_commit,
    .decommit = h_decommit,
    .purge_lazy = NULL, /* MADV_FREE means nothing on a shared mapping */
    .purge_forced = h_purge_forced,
    .split = h_split,
    .merge = h_merge,
};

int pp_arena_create(const struct pp_segment *seg, uint64_t start, uint64_t end,
                    struct pp_arena **ret)
{
    struct pp_arena *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->hooks = pp_hooks;
    a->base = seg->base;
    a->start = start;
    a->end = end;
    atomic_init(&a->bump, start);

    struct pp_je_arena_config conf = { &a->hooks, false };
    size_t sz = sizeof(a->ind);
    int r = mallctl("experimental.arenas_create_ext", &a->ind, &sz, &conf,
                    sizeof(conf));
    if (r != 0) {
        free(a);
        return -r;
    }
    a->flags = MALLOCX_ARENA(a->ind) | MALLOCX_TCACHE_NONE;
    /* Purging gives pages back, and every process that maps the segment
     * then faults them in again on the next job: keep freed pages for
     * reuse (the arena's footprint is the high-water mark of arguments in
     * flight), except that very large frees are purged (see PP_KEEP_MAX
     * in pages.h for the same rule on results). */
    ssize_t never = -1;
    char name[64];
    snprintf(name, sizeof(name), "arena.%u.dirty_decay_ms", a->ind);
    mallctl(name, NULL, NULL, &never, sizeof(never));
    snprintf(name, sizeof(name), "arena.%u.muzzy_decay_ms", a->ind);
    mallctl(name, NULL, NULL, &never, sizeof(never));
    *ret = a;
    return 0;
}

void pp_arena_destroy(struct pp_arena *a)
{
    char name[64];

    if (!a)
        return;
    snprintf(name, sizeof(name), "arena.%u.destroy", a->ind);
    mallctl(name, NULL, NULL, NULL, 0);
    free(a);
}

void *pp_arena_alloc(struct pp_arena *a, size_t len)
{
    return mallocx(len ? len : 1, a->flags);
}

void pp_arena_free(struct pp_arena *a, void *p)
{
    if (p)
        dallocx(p, a->flags);
}

int pp_arena_owns(const struct pp_arena *a, const void *p)
{
    const char *c = p;
    return c >= a->base + a->start && c < a->base + pp_load_relaxed(&((struct pp_arena *)a)->bump);
}
