/*
 * payload.c - where a job's argument and result bytes live.
 *
 * One decision, made here only, for both directions:
 *   <= PP_TINY bytes        in the record's first cache line
 *   <= PP_INLINE_MAX bytes  inline in the record
 *   larger                  an argument: a block of the host's jemalloc
 *                           arena in the segment (or the caller's own
 *                           pp_shm_alloc block, read in place); a result:
 *                           a page-heap block of the consumer that wrote
 *                           it, which goes back to that consumer's return
 *                           ring when the task is released (or straight
 *                           to the heap for a consumer without one:
 *                           res_slot = PP_RES_OWNER_HEAP).
 */
#include "worker.h"

#include <errno.h>
#include <string.h>

/* ---------------------------------------------------------------- */
/* Host side                                                          */
/* ---------------------------------------------------------------- */

int pp__arg_put(struct pp_server *s, struct pp_rec *r, const void *arg, size_t len)
{
    r->arg_len = (uint32_t)len;
    if (len && pp_arena_owns(s->arena, arg) &&
        pp_arena_owns(s->arena, (const char *)arg + len - 1)) {
        r->arg_off = pp_seg_off(&s->seg, arg); /* zero copy, even small */
        r->flags |= PP_RF_ARG_EXT;
        return 0;
    }
    if (len <= PP_INLINE_MAX) {
        /* arg_off is not written: its line belongs to the consumer. */
        if (len)
            memcpy(len <= PP_TINY ? r->tiny_arg : r->inl_arg, arg, len);
        return 0;
    }
    void *p = pp_arena_alloc(s->arena, len);
    if (!p)
        return -ENOMEM;
    memcpy(p, arg, len);
    r->arg_off = pp_seg_off(&s->seg, p);
    r->flags |= PP_RF_ARG_ARENA | PP_RF_ARG_EXT;
    return 0;
}

void pp__arg_free(struct pp_server *s, struct pp_rec *r)
{
    if (r->flags & PP_RF_ARG_ARENA)
        pp_arena_free(s->arena, pp_seg_ptr(&s->seg, r->arg_off));
    r->flags &= ~(uint32_t)(PP_RF_ARG_ARENA | PP_RF_ARG_EXT);
}

const void *pp__res_data(struct pp_server *s, const struct pp_rec *r)
{
    switch (r->res_where) {
    case PP_RES_INLINE:
        return r->inl_res;
    case PP_RES_BLOCK:
        /* The block may have been freed by another host thread before a
         * worker wrote into it (atomic.h). */
        PP_TSAN_ACQUIRE(&s->sh->pages);
        return pp_seg_ptr(&s->seg, r->res_off);
    default:
        return r->tiny_res;
    }
}

/* Gives a result block back to the consumer that wrote it (or to the page
 * heap when it has no return ring or that ring is full). */
void pp__block_free(struct pp_server *s, uint32_t slot, uint64_t off, size_t len)
{
    unsigned cls = pp_pages_class(len);
    if (slot == PP_RES_OWNER_HEAP || slot >= PP_MAX_SLOTS ||
        !pp_ring_enqueue_mp(pp__ret_ring(s->sh, slot), PP_RET_ENC(cls, off)))
        pp_pages_free(&s->sh->pages, &s->seg, off, len);
}

void pp__res_free(struct pp_server *s, struct pp_rec *r)
{
    if (r->res_where == PP_RES_BLOCK)
        pp__block_free(s, r->res_slot, r->res_off, r->res_len);
    r->res_where = PP_RES_TINY;
    r->res_len = 0;
}

/* ---------------------------------------------------------------- */
/* Consumer side                                                      */
/* ---------------------------------------------------------------- */

static void drop_block(struct pp_job *job)
{
    if (job->res_block) {
        pp__cons_block_put(&job->w->k, job->res_block, job->res_block_len);
        job->res_block = 0;
    }
}

void *pp__res_space(struct pp_job *job, size_t len)
{
    if (len <= PP_TINY) {
        drop_block(job);
        job->res = job->tiny;
    } else if (len <= PP_INLINE_MAX) {
        drop_block(job);
        job->res = job->rec->inl_res;
    } else {
        /* The new block first: if there is none, the old result stays. */
        uint64_t off = pp__cons_block_get(&job->w->k, len);
        if (!off) {
            job->alloc_err = -ENOMEM;
            return NULL;
        }
        drop_block(job);
        job->res_block = off;
        job->res_block_len = len;
        job->res = pp_seg_ptr(&job->w->k.seg, off);
    }
    job->res_len = len;
    job->alloc_err = 0;
    return job->res;
}

void pp__res_settle(struct pp_job *job)
{
    struct pp_rec *rec = job->rec;

    rec->res_len = (uint32_t)job->res_len;
    if (rec->flags & PP_RF_COLLECT)
        rec->nmsgs = job->nmsgs; /* all in the message ring by now */
    if (job->res_block) {
        rec->res_off = job->res_block;
        rec->res_slot = job->w->k.slot;
        rec->res_where = PP_RES_BLOCK;
        /* From here the record names the block (consumer.c: held). */
        pp__cons_block_release(&job->w->k, job->res_block);
    } else if (job->res == rec->inl_res) {
        rec->res_where = PP_RES_INLINE;
    } else if (!job->res && (rec->flags & PP_RF_COLLECT)) {
        rec->res_where = PP_RES_NONE; /* its collector gets no result message */
    } else {
        memcpy(rec->tiny_res, job->tiny, job->res_len <= PP_TINY ? job->res_len : PP_TINY);
        rec->res_where = PP_RES_TINY;
    }
}
