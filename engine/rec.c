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
    /* O1: pairs with Q1.  A shared read of the state's line: the host
     * polls it, so it is not taken away from the host here. */
    uint64_t st = pp_load_acquire(&r->state);
    if (pp_st_gen(st) != pp_tok_gen(tok) || pp_st_phase(st) != PP_ST_QUEUED)
        return false;
    /* One CAS per generation can win: whoever owns gen owns it until the
     * record is reused, so the state is still QUEUED(gen) after a win. */
    uint64_t o = pp_load_relaxed(&r->own);
    for (;;) {
        if (pp_st_gen(o) == pp_tok_gen(tok))
            return false; /* owned already (a duplicate token) */
        if (atomic_compare_exchange_weak_explicit(&r->own, &o, pp_own(pp_tok_gen(tok), owner),
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed))
            return true;
    }
}

uint64_t pp__rec_publish(struct pp_rec *r, uint64_t tok, uint32_t owner, uint32_t phase)
{
    if (!pp__rec_owned_by(r, tok, owner))
        return 0;
    uint64_t st = pp_load_relaxed(&r->state);
    for (;;) {
        if (pp_st_gen(st) != pp_tok_gen(tok) || pp_st_phase(st) != PP_ST_QUEUED)
            return 0;
        /* D1.  A CAS: the host may be setting WAITER or ORPHAN. */
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, with_phase(st, phase),
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    if (phase == PP_ST_DONE && (st & PP_ST_WAITER))
        pp_futex_wake(pp_rec_futex(r), INT_MAX);
    return st;
}

bool pp__rec_requeue(struct pp_rec *r, uint64_t tok, uint32_t owner, uint64_t *ret_tok)
{
    if (!pp__rec_owned_by(r, tok, owner))
        return false;
    uint64_t st = pp_load_relaxed(&r->state);
    for (;;) {
        if (pp_st_gen(st) != pp_tok_gen(tok) || pp_st_phase(st) != PP_ST_QUEUED)
            return false;
        uint64_t next = ((uint64_t)(pp_st_gen(st) + 1) << 32) | (st & 0xffffffffu);
        /* Q1 again (release), for the next owner; a CAS because the host
         * may be setting WAITER or ORPHAN. */
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, next, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            *ret_tok = pp_tok(pp_st_gen(next), pp_tok_idx(tok));
            return true;
        }
    }
}

uint64_t pp__rec_done(struct pp_rec *r)
{
    uint64_t st = pp_load_relaxed(&r->state);
    /* D1; WAITER and ORPHAN go: whoever sees ORPHAN in the returned
     * state frees the record. */
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
