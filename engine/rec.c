/*
 * rec.c - the transitions of a record's state word (record.h).
 *
 * Ordering labels:
 *   Q1  the release of QUEUED publishes the submitter's writes (function,
 *       argument, flags); pairs with the acquire of the owning CAS (O1).
 *       The ring's own release/acquire carries the same edge; this one is
 *       what ThreadSanitizer can follow within one process.
 *   D1  the release of EXECUTED/DONE publishes status, result and message;
 *       pairs with the acquire loads of state in pp_task_wait /
 *       pp_task_result and in the engine (D2).
 */
#include "record.h"

#include <limits.h>

#include "../shm/futex.h"

static inline uint64_t with_phase(uint64_t st, uint32_t phase)
{
    return (st & ~PP_ST_PHASE) | phase;
}

void pp__rec_queue(struct pp_rec *r, uint32_t idx, uint64_t *ret_tok)
{
    uint32_t gen = pp_st_gen(pp_load_relaxed(&r->state)) + 1;
    *ret_tok = pp_tok(gen, idx); /* before Q1, which must publish it too */
    pp_store_release(&r->state, ((uint64_t)gen << 32) | PP_ST_QUEUED); /* Q1 */
}

void pp__rec_unqueue(struct pp_rec *r)
{
    uint64_t st = pp_load_relaxed(&r->state);
    pp_store_relaxed(&r->state, st & ~(uint64_t)0xffffffffu); /* FREE, gen kept */
}

bool pp__rec_own(struct pp_rec *r, uint64_t tok, uint32_t owner)
{
    uint64_t st = pp_load_relaxed(&r->state);
    for (;;) {
        if (pp_st_gen(st) != pp_tok_gen(tok) || pp_st_phase(st) != PP_ST_QUEUED ||
            pp_st_owner(st) != 0)
            return false;
        uint64_t nst = with_phase(st, PP_ST_RUNNING) |
                       ((uint64_t)(owner + 1) << PP_ST_OWNER_SHIFT);
        /* O1: pairs with Q1.  A CAS, because the host may be setting
         * WAITER or ORPHAN meanwhile. */
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, nst, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
}

uint64_t pp__rec_publish(struct pp_rec *r, uint64_t tok, uint32_t owner, uint32_t phase)
{
    uint64_t st = pp_load_relaxed(&r->state);
    for (;;) {
        if (pp_st_gen(st) != pp_tok_gen(tok) || pp_st_phase(st) != PP_ST_RUNNING ||
            pp_st_owner(st) != owner + 1)
            return 0;
        /* D1. */
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, with_phase(st, phase),
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    if (phase == PP_ST_DONE && (st & PP_ST_WAITER))
        pp_futex_wake(pp_rec_futex(r), INT_MAX);
    return st;
}

uint64_t pp__rec_done(struct pp_rec *r)
{
    uint64_t st = pp_load_relaxed(&r->state);
    /* D1; WAITER, ORPHAN and the owner go: whoever sees ORPHAN in the
     * returned state frees the record. */
    while (!atomic_compare_exchange_weak_explicit(
        &r->state, &st, (st & ~(uint64_t)0xffffffffu) | PP_ST_DONE, memory_order_acq_rel,
        memory_order_relaxed))
        ;
    if (st & PP_ST_WAITER)
        pp_futex_wake(pp_rec_futex(r), INT_MAX);
    return st;
}

void pp__rec_executed(struct pp_rec *r)
{
    uint64_t st = pp_load_relaxed(&r->state);
    while (!atomic_compare_exchange_weak_explicit(&r->state, &st,
                                                  with_phase(st, PP_ST_EXECUTED),
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed))
        ;
}

uint64_t pp__rec_flag(struct pp_rec *r, uint64_t flag)
{
    uint64_t st = pp_load_acquire(&r->state); /* D2 */
    for (;;) {
        if (pp_st_phase(st) == PP_ST_DONE || (st & flag))
            return st;
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, st | flag,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return st | flag;
    }
}
