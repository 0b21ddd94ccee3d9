/*
 * arena.h - a jemalloc arena whose memory is a range of the shared segment.
 *
 * The host allocates large job arguments here (mallocx with MALLOCX_ARENA),
 * so a worker reads an argument where the submitter wrote it.  jemalloc's
 * extent hooks hand out address space from a dedicated range of the
 * segment; jemalloc's own metadata stays in private memory
 * (metadata_use_hooks = false), so forked processes never touch it.
 *
 * Only the host process allocates and frees here; workers only read and
 * write the bytes.  The thread cache is bypassed (MALLOCX_TCACHE_NONE):
 * jemalloc's per-thread caches are shared by all arenas of a thread, and a
 * block of one server's segment must never be handed to another server.
 *
 * jemalloc itself is private to libpp (see engine/meson.build): linking
 * libpp does not replace the host's malloc.
 */
#ifndef PP_SHM_ARENA_H
#define PP_SHM_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "segment.h"

struct pp_arena;

/* Creates an arena over [start, end) of seg.  Returns 0 or -errno. */
int pp_arena_create(const struct pp_segment *seg, uint64_t start, uint64_t end,
                    struct pp_arena **ret);
/* Destroys the arena (all its blocks at once).  NULL is a no-op. */
void pp_arena_destroy(struct pp_arena *a);

/* MT-safe.  NULL when out of memory.  len 0 is served as 1 byte. */
void *pp_arena_alloc(struct pp_arena *a, size_t len);
void pp_arena_free(struct pp_arena *a, void *p);
/* Whether p is a block start of this arena (for zero-copy detection). */
int pp_arena_owns(const struct pp_arena *a, const void *p);

#endif /* PP_SHM_ARENA_H */
