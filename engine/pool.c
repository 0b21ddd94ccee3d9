/*
 * pool.c - job records and their host-side tasks, recycled through a
 * lock-free free list.
 *
 * Records live in the shared segment (consumers read and write them) and
 * are allocated in chunks of PP_REC_CHUNK from the page heap; each chunk
 * has a parallel chunk of struct pp_task in host memory.  The free list is
 * a Treiber stack of indices whose head carries a 32-bit tag bumped on
 * every pop, so a pop that read a stale `next_free` cannot succeed (no
 * ABA).  Memory is never returned before pp_server_destroy: the pool keeps
 * the high-water mark of jobs in flight.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define NIL 0xffffffffu

static inline uint64_t pack(uint32_t idx, uint32_t tag)
{
    return ((uint64_t)tag << 32) | idx;
}

static void push(struct pp_server *s, struct pp_task *t)
{
    uint64_t h = pp_load_relaxed(&s->free_head);
    do {
        pp_store_relaxed(&t->next_free, (uint32_t)h);
        /* Release: the task's reset fields are visible to the popper. */
    } while (!atomic_compare_exchange_weak_explicit(
        &s->free_head, &h, pack(t->idx, (uint32_t)(h >> 32)),
        memory_order_release, memory_order_relaxed));
}

/* Adds a chunk of records and tasks to the free list.  Returns false when
 * out of chunks or memory. */
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
    struct pp_task *tc = calloc(PP_REC_CHUNK, sizeof(*tc));
    size_t bytes = sizeof(struct pp_rec) * PP_REC_CHUNK;
    uint64_t off = tc ? pp_pages_alloc(&s->sh->pages, &s->seg, bytes, NULL) : 0;
    if (!off) {
        free(tc);
        goto out;
    }
    struct pp_rec *c = pp_seg_ptr(&s->seg, off);
    memset(c, 0, bytes);
    s->chunks[n] = c;
    s->tchunks[n] = tc;
    s->sh->rec_chunk_off[n] = off;
    for (uint32_t i = 0; i < PP_REC_CHUNK; i++) {
        tc[i].rec = &c[i];
        tc[i].srv = s;
        tc[i].idx = n * PP_REC_CHUNK + i;
    }
    pp_store_release(&s->nchunks, n + 1);
    /* Release: whoever sees an index below nrecs (acquire) also sees the
     * chunk's offset and its tasks (consumer.c, engine.c). */
    pp_store_release(&s->sh->nrecs, (n + 1) * PP_REC_CHUNK);
    for (uint32_t i = 0; i < PP_REC_CHUNK; i++)
        push(s, &tc[i]);
    ok = true;
out:
    pthread_mutex_unlock(&s->pool_lock);
    return ok;
}

struct pp_task *pp__task_alloc(struct pp_server *s)
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
        struct pp_task *t = pp__task_of(s, idx);
        uint32_t next = pp_load_relaxed(&t->next_free);
        if (atomic_compare_exchange_weak_explicit(
                &s->free_head, &h, pack(next, (uint32_t)(h >> 32) + 1),
                memory_order_acquire, memory_order_relaxed)) {
            /* The next record to hand out was last written by a worker:
             * start taking its lines back now, so that the next submission
             * does not wait for them (prefetch for writing). */
            if (next != NIL)
                __builtin_prefetch(pp__task_of(s, next)->rec, 1, 3);
            return t;
        }
    }
}

void pp__task_free(struct pp_server *s, struct pp_task *t)
{
    struct pp_rec *r = t->rec;

    pp__arg_free(s, r);
    pp__res_free(s, r);
    r->flags = 0;
    t->cb = NULL;
    t->node_fails = 0;
    t->node_mask = 0;
    pp__rec_unqueue(r);
    push(s, t);
}

/* After pp_server_destroy stopped every consumer. */
void pp__pool_fini(struct pp_server *s)
{
    uint32_t n = pp_load_relaxed(&s->nchunks);
    for (uint32_t i = 0; i < n; i++)
        free(s->tchunks[i]);
}
