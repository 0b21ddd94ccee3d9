/*
 * task.c - submitting jobs and collecting their results (host side).
 *
 * A task (host.h) is the submitter's handle and the host's half of a job
 * record; the record's state word (record.h, rec.c) says where the job
 * is.  Callbacks, the server's ownership and early release are decided
 * from the record's flags:
 *
 *   no callback, user handle    QUEUED (owned by a consumer) -> DONE
 *   callback or server-owned    QUEUED (owned) -> EXECUTED -> DONE (engine)
 *
 * ORPHAN (the user released the handle before DONE) makes whoever moves
 * the task to DONE free it; a consumer hands such a record to the engine.
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

/* The CPU this thread runs on (glibc reads it from rseq: a load). */
static inline int my_cpu(void)
{
    return sched_getcpu();
}

/* The host is about to block: workers on its CPU may have its place. */
void pp__before_block(struct pp_server *s)
{
    uint64_t q = pp_ring_count(s->ring);
    if (q)
        pp__wake_any(s->sh, q < PP_MAX_WORKERS ? (unsigned)q : PP_MAX_WORKERS);
}

/* Moves jobs from the overflow queue into the ring while it has room. */
void pp__overflow_drain(struct pp_server *s)
{
    uint64_t toks[OVF_BATCH];
    unsigned moved = 0;

    pthread_mutex_lock(&s->ovf_lock);
    while (s->ovf_head) {
        unsigned n = 0;
        for (struct pp_task *t = s->ovf_head; t && n < OVF_BATCH; t = t->next) {
            toks[n++] = t->tok;
            PP_TSAN_RELEASE(&t->rec->state); /* handed over (atomic.h) */
        }
        unsigned k = pp_ring_enqueue_burst_mp(s->ring, toks, n);
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
        if (!pp__wake_for_jobs(s->sh, moved, my_cpu()) && s->net)
            pp__net_kick(s);
}

void pp__enqueue(struct pp_server *s, struct pp_task *t, int cpu)
{
    uint64_t tok = t->tok;

    /* Fast path: nobody waits in overflow (so FIFO order holds) and the
     * ring has room. */
    PP_TSAN_RELEASE(&t->rec->state); /* handed over (atomic.h) */
    if (pp_likely(pp_load_relaxed(&s->ovf_len) == 0) &&
        pp_likely(pp_ring_enqueue_mp(s->ring, tok))) {
        if (!pp__wake_for_jobs(s->sh, 1, cpu) && s->net)
            pp__net_kick(s);
        return;
    }
    pthread_mutex_lock(&s->ovf_lock);
    t->next = NULL;
    if (s->ovf_tail)
        s->ovf_tail->next = t;
    else
        s->ovf_head = t;
    s->ovf_tail = t;
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

/*
 * max_queued is a hard limit: a submitter reserves its place (admitted
 * counts those between here and their enqueue) before it compares, so
 * concurrent submitters cannot all pass the same test.  A job enqueued
 * but not yet unreserved counts twice for a moment: conservative.
 */
static int admit(struct pp_server *s)
{
    size_t max = s->cfg.max_queued;

    if (max == 0)
        return 0;
    for (;;) {
        uint64_t mine = atomic_fetch_add(&s->admitted, 1) + 1;
        if (queued(s) + mine <= max)
            return 0;
        /* No wake-up for the others: the earliest reserver passes and
         * signals when it is done (admitted_done). */
        atomic_fetch_sub(&s->admitted, 1);
        if (!s->cfg.block_when_full || pp__in_engine(s))
            return -EAGAIN;
        if (pp_load_relaxed(&s->shutdown))
            return -ESHUTDOWN;
        pp__before_block(s);
        uint32_t seq = pp_event_prepare(&s->sh->space);
        if (queued(s) + pp_load_relaxed(&s->admitted) < max ||
            pp_load_acquire(&s->shutdown)) {
            pp_event_cancel(&s->sh->space);
            continue; /* the loop tests both again */
        }
        pp_event_wait(&s->sh->space, seq, NULL);
        pp_event_cancel(&s->sh->space);
    }
}

static void admitted_done(struct pp_server *s)
{
    if (s->cfg.max_queued) {
        atomic_fetch_sub(&s->admitted, 1);
        pp_event_signal(&s->sh->space, 1);
    }
}

/* ---------------------------------------------------------------- */
/* Submission                                                         */
/* ---------------------------------------------------------------- */

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
    struct pp_task *t = pp__task_alloc(s);
    if (pp_unlikely(!t)) {
        admitted_done(s);
        return -ENOMEM;
    }
    struct pp_rec *r = t->rec;
    r->fn_id = fn_id;
    /* The group's counter bank of the current wait epoch (group.c). */
    uint32_t ci = PP_CI(g, pp_load_acquire(&s->epoch[g]));
    r->group = ci;
    r->flags = extra_flags;
    if (cb || !ret) /* never for a collector's job (cb NULL) */
        r->flags |= PP_RF_ENGINE;
    if (!ret)
        r->flags |= PP_RF_AUTO;
    if (pp_unlikely((err = pp__arg_put(s, r, arg, len)) < 0)) {
        r->flags = 0;
        pp__task_free(s, t);
        admitted_done(s);
        return err;
    }
    r->status = 0;
    r->err_len = 0;
    r->res_where = PP_RES_TINY;
    r->res_len = 0;
    int cpu = my_cpu();
    r->submit_cpu = (int16_t)cpu;
    /* A collector's job (collect.c) is finished by its consumer like a
     * plain one; cb_arg is its struct cjob. */
    bool coll = extra_flags & PP_RF_COLLECT;
    if (coll) {
        r->nmsgs = 0;
        r->bell = (uint16_t)pp__coll_bind(cb_arg, t);
    }
    t->cb = cb;
    t->cb_arg = cb_arg;
    pp_store_relaxed(&t->coll, coll ? cb_arg : NULL); /* published by Q1 */
    pp__rec_queue(r, t->idx, &t->tok); /* Q1 (rec.c) */
    atomic_fetch_add_explicit(&s->submitted[ci], 1, memory_order_relaxed);
    if (ret)
        *ret = t;
    pp__enqueue(s, t, cpu); /* t may be gone from here on when !ret */
    admitted_done(s);
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

PP_EXPORT int pp_task_wait(pp_task *t, int timeout_ms)
{
    struct timespec ts, *dl;

    if (!t || timeout_ms < -1)
        return -EINVAL;
    struct pp_rec *r = t->rec;
    /* D2: pairs with D1 (rec.c). */
    uint64_t st = pp_load_acquire(&r->state);
    if (pp_st_phase(st) == PP_ST_DONE)
        return 0;
    if (timeout_ms == 0)
        return -ETIMEDOUT;
    struct pp_server *s = t->srv;
    if (pp__in_engine(s))
        return -EDEADLK;
    dl = pp_deadline(&ts, timeout_ms);
    uint64_t dl_ns = dl ? (uint64_t)dl->tv_sec * 1000000000ull + (uint64_t)dl->tv_nsec
                        : UINT64_MAX;
    uint64_t budget = pp_load_relaxed(&s->spin_ns);
    uint64_t spin_end = s->sh->busy_poll ? dl_ns : pp_now_ns() + budget;
    for (unsigned i = 0;; i++) {
        st = pp_load_acquire(&r->state);
        if (pp_st_phase(st) == PP_ST_DONE) {
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
    pp__before_block(s);
    for (;;) {
        st = pp__rec_flag(r, PP_ST_WAITER);
        if (pp_st_phase(st) == PP_ST_DONE)
            return 0;
        if (pp_futex_wait(pp_rec_futex(r), (uint32_t)st, dl) == -ETIMEDOUT)
            return pp_st_phase(pp_load_acquire(&r->state)) == PP_ST_DONE ? 0 : -ETIMEDOUT;
    }
}

PP_EXPORT int pp_task_result(pp_task *t, const void **data, size_t *len)
{
    if (!t)
        return -EINVAL;
    struct pp_rec *r = t->rec;
    uint64_t st = pp_load_acquire(&r->state); /* D2 */
    if (pp_st_phase(st) < PP_ST_EXECUTED)
        return -EINPROGRESS;
    if (data)
        *data = pp__res_data(t->srv, r);
    if (len)
        *len = r->res_len;
    return r->status;
}

PP_EXPORT const char *pp_task_error(pp_task *t)
{
    if (!t || pp_st_phase(pp_load_acquire(&t->rec->state)) < PP_ST_EXECUTED)
        return NULL;
    return t->rec->status < 0 && t->rec->err_len ? t->rec->err : NULL;
}

PP_EXPORT void pp_task_release(pp_task *t)
{
    if (!t)
        return;
    /* Whoever moves it to DONE frees it once it is ORPHAN. */
    if (pp_st_phase(pp__rec_flag(t->rec, PP_ST_ORPHAN)) == PP_ST_DONE)
        pp__task_free(t->srv, t);
}

/* ---------------------------------------------------------------- */
/* Finishing on the engine side                                       */
/* ---------------------------------------------------------------- */

/* A record in EXECUTED: run the callback, then DONE, then count it. */
void pp__finish_by_engine(struct pp_server *s, struct pp_task *t)
{
    struct pp_rec *r = t->rec;
    uint32_t g = r->group;
    uint32_t flags = r->flags;

    if (t->cb)
        t->cb(t, t->cb_arg);
    uint64_t old = pp__rec_done(r); /* D1 */
    pp__group_engine_done(s, g);
    if ((flags & PP_RF_AUTO) || (old & PP_ST_ORPHAN))
        pp__task_free(s, t);
}

/* Fails a job that no consumer will finish (its consumer died, or the
 * server is going away). */
void pp__fail_task(struct pp_server *s, struct pp_task *t, int code, const char *msg)
{
    struct pp_rec *r = t->rec;

    r->status = code;
    size_t n = strlen(msg);
    if (n >= PP_ERRMSG_MAX)
        n = PP_ERRMSG_MAX - 1;
    memcpy(r->err, msg, n);
    r->err[n] = '\0';
    r->err_len = (uint32_t)n;
    pp__res_free(s, r);
    if (r->flags & PP_RF_ENGINE) {
        pp__rec_executed(r);
        pp__finish_by_engine(s, t);
        return;
    }
    uint32_t g = r->group;
    bool coll = pp_load_relaxed(&t->coll) != NULL;
    if (coll)
        pp__coll_failing(t); /* what it sent before it failed: nmsgs */
    unsigned bell = r->bell; /* read before DONE, as a consumer does */
    uint64_t old = pp__rec_done(r); /* D1 */
    pp__group_engine_done(s, g);
    if (coll)
        pp__bell_ring(s->sh, bell); /* B1 */
    if (old & PP_ST_ORPHAN)
        pp__task_free(s, t);
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
