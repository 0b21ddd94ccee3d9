/*
 * pool.c - job records, recycled through a lock-free free list.
 *
 * Records live in the shared segment (workers read and write them) and are
 * allocated in chunks of PP_REC_CHUNK from the page heap.  The free list is
 * a Treiber stack of record indices whose head carries a 32-bit tag bumped
 * on every pop, so a pop that read a stale `next_free` cannot succeed (no
 * ABA).  Memory is never returned before pp_server_destroy: the pool keeps
 * the high-water mark of jobs in flight.
 */
#include "internal.h"

#include <string.h>

#define NIL 0xffffffffu

static inline uint64_t pack(uint32_t idx, uint32_t tag)
{
    return ((uint64_t)tag << 32) | idx;
}

static struct pp_rec *rec_of(struct pp_server *s, uint32_t idx)
{
    return &s->chunks[idx / PP_REC_CHUNK][idx % PP_REC_CHUNK];
}

static void push(struct pp_server *s, struct pp_rec *r)
{
    uint64_t h = pp_load_relaxed(&s->free_head);
    do {
        pp_store_relaxed(&r->next_free, (uint32_t)h);
        /* Release: the record's reset fields are visible to the popper. */
    } while (!atomic_compare_exchange_weak_explicit(
        &s->free_head, &h, pack(r->idx, (uint32_t)(h >> 32)),
        memory_order_release, memory_order_relaxed));
}

/* Adds a chunk of records to the free list.  Returns false when out of
 * chunks or memory. */
static bool grow(struct pp_server *s)
{
    bool ok = false;
    pthread_mutex_lock(&s->pool_lock);
    uint32_t n = pp_load_relaxed(&s->nchunks);
    if ((uint32_t)pp_load_acquire(&s->free_head) != NIL) {
        ok = true; /* another thread grew it meanwhile */
        goto out;
    }
    if (n >= PP_REC_MAX_CHUNKS)
        goto out;
    size_t bytes = sizeof(struct pp_rec) * PP_REC_CHUNK;
    uint64_t off = pp_pages_alloc(&s->sh->pages, &s->seg, bytes, NULL);
    if (!off)
        goto out;
    struct pp_rec *c = pp_seg_ptr(&s->seg, off);
    memset(c, 0, bytes);
    s->chunks[n] = c;
    pp_store_release(&s->nchunks, n + 1);
    for (uint32_t i = 0; i < PP_REC_CHUNK; i++) {
        c[i].idx = n * PP_REC_CHUNK + i;
        c[i].srv = s;
        push(s, &c[i]);
    }
    ok = true;
out:
    pthread_mutex_unlock(&s->pool_lock);
    return ok;
}

struct pp_rec *pp__rec_alloc(struct pp_server *s)
{
    for (;;) {
        /* Acquire: pairs with the release in push(). */
        uint64_t h = pp_load_acquire(&s->free_head);
        uint32_t idx = (uint32_t)h;
        if (idx == NIL) {
            if (!grow(s))
                return NULL;
            continue;
        }
        struct pp_rec *r = rec_of(s, idx);
        uint32_t next = pp_load_relaxed(&r->next_free);
        if (atomic_compare_exchange_weak_explicit(
                &s->free_head, &h, pack(next, (uint32_t)(h >> 32) + 1),
                memory_order_acquire, memory_order_relaxed)) {
            /* The next record to hand out was last written by a worker:
             * start taking its lines back now, so that the next submission
             * does not wait for them (prefetch for writing). */
            if (next != NIL) {
                struct pp_rec *n = rec_of(s, next);
                __builtin_prefetch(n, 1, 3);
            }
            return r;
        }
    }
}

void pp__rec_free(struct pp_server *s, struct pp_rec *r)
{
    if (r->flags & PP_RF_ARG_ARENA)
        pp_arena_free(s->arena, pp_seg_ptr(&s->seg, r->arg_off));
    if (r->res_where == PP_RES_BLOCK)
        pp__result_block_free(s, r);
    r->flags = 0;
    r->res_where = PP_RES_TINY;
    r->arg_off = 0;
    r->cb = NULL;
    pp_store_relaxed(&r->state, PP_ST_FREE);
    push(s, r);
}

/* Gives a result block back to the worker that allocated it (or to the
 * page heap when that worker's return ring is full). */
void pp__result_block_free(struct pp_server *s, struct pp_rec *r)
{
    unsigned cls = pp_pages_class(r->res_len);
    if (!pp_ring_enqueue_mp(pp__ret_ring(s->sh, s->seg.base, r->res_slot),
                            PP_RET_ENC(cls, r->res_off)))
        pp_pages_free(&s->sh->pages, &s->seg, r->res_off, r->res_len);
}

