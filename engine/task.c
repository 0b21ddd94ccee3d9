/*
 * task.c - submitting jobs and collecting their results (host side).
 *
 * The life of a record's state word (internal.h):
 *
 *   QUEUED --worker--> DONE                      (no callback, user handle)
 *   QUEUED --worker--> EXECUTED --engine--> DONE (callback and/or owned by
 *                                                 the server)
 *
 * plus two flag bits any time before DONE: WAITER (a thread sleeps on the
 * futex) and ORPHAN (the user released the handle early, so whoever moves
 * the task to DONE frees it; a worker hands such a record to the engine).
 *
 * Ordering labels:
 *   D1  the release of state to DONE/EXECUTED (worker or engine) publishes
 *       status, result and message; pairs with the acquire loads of state
 *       in pp_task_wait / pp_task_result (D2).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define OVF_BATCH 64u

/* ---------------------------------------------------------------- */
/* Enqueueing, and the overflow queue                                 */
/* ---------------------------------------------------------------- */

/* Moves jobs from the overflow queue into the ring while it has room. */
void pp__overflow_drain(struct pp_server *s)
{
    uint64_t offs[OVF_BATCH];
    unsigned moved = 0;

    pthread_mutex_lock(&s->ovf_lock);
    while (s->ovf_head) {
        unsigned n = 0;
        for (struct pp_rec *r = s->ovf_head; r && n < OVF_BATCH; r = r->next)
            offs[n++] = pp_seg_off(&s->seg, r);
        unsigned k = pp_ring_enqueue_burst_mp(s->ring, offs, n);
        for (unsigned i = 0; i < k; i++)
            s->ovf_head = s->ovf_head->next;
        moved += k;
        if (k < n)
            break;
    }
    if (!s->ovf_head)
        s->ovf_tail = NULL;
    pp_store_relaxed(&s->ovf_len, pp_load_relaxed(&s->ovf_len) - moved);
    /* 1 while jobs still wait: workers kick the engine after they dequeue. */
    pp_store_relaxed(&s->sh->overflow_waiting, s->ovf_head ? 1u : 0u);
    pthread_mutex_unlock(&s->ovf_lock);
    if (moved)
        pp_event_signal(&s->sh->work, (int)moved);
}

void pp__enqueue(struct pp_server *s, struct pp_rec *r)
{
    uint64_t off = pp_seg_off(&s->seg, r);

    /* Fast path: nobody waits in overflow (so FIFO order holds) and the
     * ring has room. */
    if (pp_likely(pp_load_relaxed(&s->ovf_len) == 0) &&
        pp_likely(pp_ring_enqueue_mp(s->ring, off))) {
        pp_event_signal(&s->sh->work, 1);
        return;
    }
    pthread_mutex_lock(&s->ovf_lock);
    r->next = NULL;
    if (s->ovf_tail)
        s->ovf_tail->next = r;
    else
        s->ovf_head = r;
    s->ovf_tail = r;
    pp_store_relaxed(&s->ovf_len, pp_load_relaxed(&s->ovf_len) + 1);
    pp_store_relaxed(&s->sh->overflow_waiting, 1);
    pthread_mutex_unlock(&s->ovf_lock);
    /* Pairs with the fence a worker makes after it dequeues: either we see
     * the room it made, or it sees overflow_waiting and kicks the engine. */
    pp_fence_seq_cst();
    pp__overflow_drain(s);
}

/* Jobs waiting to start: in the ring and in overflow. */
static uint64_t queued(struct pp_server *s)
{
    return pp_ring_count(s->ring) + pp_load_relaxed(&s->ovf_len);
}

static int admit(struct pp_server *s)
{
    size_t max = s->cfg.max_queued;

    if (max == 0 || queued(s) < max)
        return 0;
    if (!s->cfg.block_when_full || pp__in_engine(s))
        return -EAGAIN;
    while (queued(s) >= max) {
        if (pp_load_relaxed(&s->shutdown))
            return -ESHUTDOWN;
        uint32_t seq = pp_event_prepare(&s->sh->space);
        if (queued(s) < max || pp_load_acquire(&s->shutdown)) {
            pp_event_cancel(&s->sh->space);
            continue; /* the loop tests both again */
        }
        pp_event_wait(&s->sh->space, seq, NULL);
        pp_event_cancel(&s->sh->space);
    }
    return 0;
}

/* ---------------------------------------------------------------- */
/* Submission                                                         */
/* ---------------------------------------------------------------- */

static int put_arg(struct pp_server *s, struct pp_rec *r, const void *arg,
                   size_t len)
{
    r->arg_len = (uint32_t)len;
    if (len && pp_arena_owns(s->arena, arg) &&
        pp_arena_owns(s->arena, (const char *)arg + len - 1)) {
        r->arg_off = pp_seg_off(&s->seg, arg); /* zero copy, even small */
        r->flags |= PP_RF_ARG_EXT;
        return 0;
    }
    if (len <= PP_INLINE_MAX) {
        r->arg_off = 0;
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

int pp__submit_id(struct pp_server *s, uint32_t fn_id, uint32_t g,
                  const void *arg, size_t len, uint32_t extra_flags,
                  void (*cb)(pp_task *, void *), void *cb_arg, pp_task **ret)
{
    int err;

    if (pp_unlikely(pp_load_relaxed(&s->shutdown)))
        return -ESHUTDOWN;
    if (pp_unlikely(len > PP_MAX_PAYLOAD))
        return -E2BIG;
    if (pp_unlikely((err = admit(s)) < 0))
        return err;
    struct pp_rec *r = pp__rec_alloc(s);
    if (pp_unlikely(!r))
        return -ENOMEM;
    r->seq++;
    r->fn_id = fn_id;
    /* The group's counter bank of the current wait epoch (group.c). */
    uint32_t ci = PP_CI(g, pp_load_acquire(&s->epoch[g]));
    r->group = ci;
    r->flags = extra_flags;
    if (cb || !ret)
        r->flags |= PP_RF_ENGINE;
    if (!ret)
        r->flags |= PP_RF_AUTO;
    if (pp_unlikely((err = put_arg(s, r, arg, len)) < 0)) {
        r->flags = 0;
        pp__rec_free(s, r);
        return err;
    }
    r->status = 0;
    r->err_len = 0;
    r->res_where = PP_RES_TINY;
    r->res_len = 0;
    r->cb = cb;
    r->cb_arg = cb_arg;
    /* Published to the worker by the ring's release (R1).  The release
     * here also orders this thread's writes before the engine's acquire
     * of state after the job (the worker's part of that chain happens in
     * another process, where ThreadSanitizer cannot follow it). */
    pp_store_release(&r->state, PP_ST_QUEUED);
    atomic_fetch_add_explicit(&s->submitted[ci], 1, memory_order_relaxed);
    if (ret)
        *ret = (pp_task *)r;
    pp__enqueue(s, r); /* r may be gone from here on when !ret */
    return 0;
}

PP_EXPORT int pp_submit(pp_server *s, pp_fn *fn, const void *arg, size_t len,
                        const struct pp_submit_opts *opts, pp_task **ret)
{
    uint32_t id, g = 0;
    int r;

    if (!s || !fn || (!arg && len))
        return -EINVAL;
    if (len > PP_MAX_PAYLOAD)
        return -E2BIG;
    if (opts && opts->group && (r = pp__group_index(s, opts->group, true, &g)) < 0)
        return r;
    if ((r = pp__fn_id(s, fn, &id)) < 0)
        return r;
    return pp__submit_id(s, id, g, arg, len, 0, opts ? opts->callback : NULL,
                         opts ? opts->callback_arg : NULL, ret);
}

/* ---------------------------------------------------------------- */
/* Waiting and reading                                                */
/* ---------------------------------------------------------------- */

static inline uint32_t phase(uint32_t st)
{
    return st & PP_ST_PHASE;
}

PP_EXPORT int pp_task_wait(pp_task *t, int timeout_ms)
{
    struct pp_rec *r = (struct pp_rec *)t;
    struct timespec ts, *dl;

    if (!r || timeout_ms < -1)
        return -EINVAL;
    /* D2: pairs with D1. */
    uint32_t st = pp_load_acquire(&r->state);
    if (phase(st) == PP_ST_DONE)
        return 0;
    if (timeout_ms == 0)
        return -ETIMEDOUT;
    struct pp_server *s = r->srv;
    if (pp__in_engine(s))
        return -EDEADLK;
    dl = pp_deadline(&ts, timeout_ms);
    uint64_t dl_ns = dl ? (uint64_t)dl->tv_sec * 1000000000ull + (uint64_t)dl->tv_nsec
                        : UINT64_MAX;
    uint64_t budget = pp_load_relaxed(&s->spin_ns);
    uint64_t spin_end = s->sh->busy_poll ? dl_ns : pp_now_ns() + budget;
    for (unsigned i = 0;; i++) {
        st = pp_load_acquire(&r->state);
        if (phase(st) == PP_ST_DONE) {
            pp_store_relaxed(&s->spin_ns, pp__spin_adapt(budget, true, s->sh->spin_ns));
            return 0;
        }
        pp_cpu_relax();
        if ((i & 63) == 0) {
            uint64_t now = pp_now_ns();
            if (now >= dl_ns)
                return -ETIMEDOUT;
            if (now >= spin_end)
                break;
            if ((i & 1023) == 1023 && !s->sh->busy_poll)
                sched_yield(); /* the worker may share our CPU */
        }
    }
    pp_store_relaxed(&s->spin_ns, pp__spin_adapt(budget, false, s->sh->spin_ns));
    for (;;) {
        st = pp_load_acquire(&r->state);
        if (phase(st) == PP_ST_DONE)
            return 0;
        if (!(st & PP_ST_WAITER) &&
            !atomic_compare_exchange_weak_explicit(&r->state, &st, st | PP_ST_WAITER,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        if (pp_futex_wait(&r->state, st | PP_ST_WAITER, dl) == -ETIMEDOUT)
            return phase(pp_load_acquire(&r->state)) == PP_ST_DONE ? 0 : -ETIMEDOUT;
    }
}

PP_EXPORT int pp_task_result(pp_task *t, const void **data, size_t *len)
{
    struct pp_rec *r = (struct pp_rec *)t;

    if (!r)
        return -EINVAL;
    uint32_t st = pp_load_acquire(&r->state); /* D2 */
    if (phase(st) < PP_ST_EXECUTED)
        return -EINPROGRESS;
    if (data)
        *data = r->res_where == PP_RES_TINY     ? (const void *)r->tiny_res
                : r->res_where == PP_RES_INLINE ? (const void *)r->inl_res
                                                : (const void *)pp_seg_ptr(&r->srv->seg, r->res_off);
    if (len)
        *len = r->res_len;
    return r->status;
}

PP_EXPORT const char *pp_task_error(pp_task *t)
{
    struct pp_rec *r = (struct pp_rec *)t;

    if (!r || phase(pp_load_acquire(&r->state)) < PP_ST_EXECUTED)
        return NULL;
    return r->status < 0 && r->err_len ? r->err : NULL;
}

PP_EXPORT void pp_task_release(pp_task *t)
{
    struct pp_rec *r = (struct pp_rec *)t;

    if (!r)
        return;
    uint32_t st = pp_load_acquire(&r->state);
    for (;;) {
        if (phase(st) == PP_ST_DONE) {
            pp__rec_free(r->srv, r);
            return;
        }
        /* Whoever moves it to DONE frees it (D1 side sees ORPHAN). */
        if (atomic_compare_exchange_weak_explicit(&r->state, &st, st | PP_ST_ORPHAN,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return;
    }
}

/* ---------------------------------------------------------------- */
/* Finishing on the engine side                                       */
/* ---------------------------------------------------------------- */

/* A record in EXECUTED: run the callback, then DONE, then count it. */
void pp__finish_by_engine(struct pp_server *s, struct pp_rec *r)
{
    uint32_t g = r->group;
    uint32_t flags = r->flags;

    if (r->cb)
        r->cb((pp_task *)r, r->cb_arg);
    /* D1 */
    uint32_t old = atomic_exchange_explicit(&r->state, PP_ST_DONE,
                                            memory_order_acq_rel);
    if (old & PP_ST_WAITER)
        pp_futex_wake(&r->state, INT_MAX);
    pp__group_engine_done(s, g);
    if ((flags & PP_RF_AUTO) || (old & PP_ST_ORPHAN))
        pp__rec_free(s, r);
}

/* Fails a job that no worker will finish (its worker died, or the server
 * is going away). */
void pp__fail_rec(struct pp_server *s, struct pp_rec *r, int code, const char *msg)
{
    r->status = code;
    size_t n = strlen(msg);
    if (n >= PP_ERRMSG_MAX)
        n = PP_ERRMSG_MAX - 1;
    memcpy(r->err, msg, n);
    r->err[n] = '\0';
    r->err_len = (uint32_t)n;
    if (r->res_where == PP_RES_BLOCK)
        pp__result_block_free(s, r);
    r->res_where = PP_RES_TINY;
    r->res_len = 0;
    if (r->flags & PP_RF_ENGINE) {
        uint32_t st = pp_load_relaxed(&r->state);
        while (!atomic_compare_exchange_weak_explicit(
            &r->state, &st, (st & ~(uint32_t)PP_ST_PHASE) | PP_ST_EXECUTED,
            memory_order_acq_rel, memory_order_relaxed))
            ;
        pp__finish_by_engine(s, r);
        return;
    }
    uint32_t g = r->group;
    uint32_t old = atomic_exchange_explicit(&r->state, PP_ST_DONE,
                                            memory_order_acq_rel); /* D1 */
    if (old & PP_ST_WAITER)
        pp_futex_wake(&r->state, INT_MAX);
    pp__group_engine_done(s, g);
    if (old & PP_ST_ORPHAN)
        pp__rec_free(s, r);
}

/* ---------------------------------------------------------------- */
/* Shared memory for arguments                                        */
/* ---------------------------------------------------------------- */

PP_EXPORT void *pp_shm_alloc(pp_server *s, size_t len)
{
    if (!s || len > PP_MAX_PAYLOAD)
        return NULL;
    return pp_arena_alloc(s->arena, len);
}

PP_EXPORT void pp_shm_free(pp_server *s, void *p)
{
    if (s && p && pp_arena_owns(s->arena, p))
        pp_arena_free(s->arena, p);
}
