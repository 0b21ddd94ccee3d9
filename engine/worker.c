/*
 * worker.c - the loop of a worker process and the pp_job_* API.
 *
 * A worker takes the next record offset from the submit ring (pull: a
 * free worker takes the next job, which is the load balancing), runs the
 * job, writes the result into the record and moves the record's state on
 * (task.c describes the state word).  It never allocates from the host's
 * jemalloc arena; a large result goes into a block of the page heap, which
 * the host frees when the task is released.
 *
 * Waiting for work: spin for spin_ns, then sleep on the `work` event count
 * in the segment (futex.h).  In busy-poll mode it never sleeps.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

struct pp_worker {
    struct pp_shared *sh;
    struct pp_segment seg;
    int slot;
    struct pp_wcb *wcb;
    struct pp_ring *ring;
    struct pp_spsc *done;
    uint64_t spin_ns;             /* adaptive budget (internal.h) */
    struct pp_ring *ret;          /* result blocks the host gave back */
    uint64_t stash[PP_PAGES_NCLASS][PP_BLOCK_STASH]; /* free blocks by class */
    uint8_t nstash[PP_PAGES_NCLASS];
    pp_fn *fns[PP_MAX_FUNCTIONS]; /* resolved functions, by id */
};

/* Only ever one per process: the worker's own state. */
static struct pp_worker the_worker;

PP_HIDDEN int pp__map_run(struct pp_worker *w, struct pp_rec *rec, pp_fn *fn);
PP_HIDDEN pp_fn *pp__worker_fn(struct pp_worker *w, uint32_t id, char *err,
                               size_t errlen);
PP_HIDDEN void pp__job_finish(struct pp_job *job, int *status);
PP_HIDDEN const struct pp_segment *pp__worker_seg(struct pp_worker *w);
PP_HIDDEN struct pp_pages *pp__worker_pages(struct pp_worker *w);

const struct pp_segment *pp__worker_seg(struct pp_worker *w)
{
    return &w->seg;
}

struct pp_pages *pp__worker_pages(struct pp_worker *w)
{
    return &w->sh->pages;
}

/* ---------------------------------------------------------------- */
/* Talking to the engine                                              */
/* ---------------------------------------------------------------- */

static void kick_engine(struct pp_worker *w)
{
    uint64_t one = 1;
    if (pp_load_relaxed(&w->sh->engine_sleeping))
        (void)!write(w->sh->engine_efd, &one, sizeof(one));
}

/* Hands a record to the engine thread. */
static void to_engine(struct pp_worker *w, uint64_t off)
{
    while (!pp_spsc_push(w->done, off)) {
        /* Full: the engine is behind (slow callbacks).  Make sure it is
         * awake, then let it run. */
        uint64_t one = 1;
        (void)!write(w->sh->engine_efd, &one, sizeof(one));
        sched_yield();
    }
    /* Pairs with the engine's fence between setting engine_sleeping and
     * re-checking the rings: one of us sees the other. */
    pp_fence_seq_cst();
    kick_engine(w);
}

/* ---------------------------------------------------------------- */
/* Taking jobs                                                        */
/* ---------------------------------------------------------------- */

static void after_dequeue(struct pp_worker *w)
{
    /* Pairs with the fence in pp__enqueue: we made room; if jobs wait in
     * the host's overflow queue, have the engine move them in. */
    pp_fence_seq_cst();
    uint32_t ov = 1;
    if (pp_unlikely(pp_load_relaxed(&w->sh->overflow_waiting) == 1) &&
        atomic_compare_exchange_strong(&w->sh->overflow_waiting, &ov, 2)) {
        uint64_t one = 1;
        (void)!write(w->sh->engine_efd, &one, sizeof(one));
    }
    if (pp_unlikely(w->sh->max_queued_set))
        pp_event_signal(&w->sh->space, 1);
}

static bool try_take(struct pp_worker *w, uint64_t *off)
{
    if (!pp_ring_dequeue_mc(w->ring, off, &w->wcb->claim))
        return false;
    after_dequeue(w);
    return true;
}

/* Returns a record offset, or 0 when asked to stop. */
static uint64_t take(struct pp_worker *w)
{
    struct pp_shared *sh = w->sh;
    uint64_t off;

    for (;;) {
        if (pp_load_relaxed(&w->wcb->stop))
            return 0;
        if (try_take(w, &off))
            return off;
        uint64_t spin_end = pp_now_ns() + w->spin_ns;
        for (unsigned i = 1;; i++) {
            pp_cpu_relax();
            if (pp_ring_count(w->ring) && try_take(w, &off)) {
                w->spin_ns = pp__spin_adapt(w->spin_ns, true, sh->spin_ns);
                return off;
            }
            if ((i & 255) == 0) {
                if (pp_load_relaxed(&w->wcb->stop))
                    return 0;
                if (!sh->busy_poll && pp_now_ns() >= spin_end)
                    break;
                /* Let a thread that shares our CPU (often the very
                 * submitter we wait for) run; costs little when none.
                 * Busy-poll users asked for a core of their own. */
                if (!sh->busy_poll)
                    sched_yield();
            }
        }
        w->spin_ns = pp__spin_adapt(w->spin_ns, false, sh->spin_ns);
        uint32_t seq = pp_event_prepare(&sh->work);
        if (try_take(w, &off)) {
            pp_event_cancel(&sh->work);
            return off;
        }
        if (!pp_load_relaxed(&w->wcb->stop))
            pp_event_wait(&sh->work, seq, NULL);
        pp_event_cancel(&sh->work);
    }
}

/* ---------------------------------------------------------------- */
/* Running one job                                                    */
/* ---------------------------------------------------------------- */

pp_fn *pp__worker_fn(struct pp_worker *w, uint32_t id, char *err, size_t errlen)
{
    if (id >= PP_MAX_FUNCTIONS) {
        snprintf(err, errlen, "bad function id %u", id);
        return NULL;
    }
    if (pp_likely(w->fns[id] != NULL))
        return w->fns[id];
    return w->fns[id] = pp__fn_resolve(w->sh, id, err, errlen);
}

/* Moves the finished record on (task.c: D1) and counts it. */
static void complete(struct pp_worker *w, struct pp_rec *rec, uint64_t off)
{
    uint32_t flags = rec->flags;
    uint32_t g = rec->group;

    uint32_t old = pp_load_relaxed(&rec->state);
    if (flags & PP_RF_ENGINE) {
        /* D1 (a CAS: the host may be setting WAITER or ORPHAN). */
        while (!atomic_compare_exchange_weak_explicit(
            &rec->state, &old, (old & ~(uint32_t)PP_ST_PHASE) | PP_ST_EXECUTED,
            memory_order_acq_rel, memory_order_relaxed))
            ;
        to_engine(w, off);
        return;
    }
    /* D1: keep ORPHAN so a post-mortem can still tell who must free it. */
    while (!atomic_compare_exchange_weak_explicit(
        &rec->state, &old, PP_ST_DONE | (old & PP_ST_ORPHAN),
        memory_order_acq_rel, memory_order_relaxed))
        ;
    if (old & PP_ST_WAITER)
        pp_futex_wake(&rec->state, INT_MAX);
    /* Only this worker writes its counter: a plain increment, released
     * after DONE so pp_wait never returns before the task is done. */
    _Atomic uint64_t *c = &w->wcb->group_done[g];
    pp_store_release(c, pp_load_relaxed(c) + 1);
    pp__group_signal(w->sh, g);
    if (old & PP_ST_ORPHAN)
        to_engine(w, off);
}

static void run(struct pp_worker *w, uint64_t off)
{
    struct pp_rec *rec = pp_seg_ptr(&w->seg, off);
    uint32_t len = rec->arg_len;
    struct pp_job job = {
        .w = w,
        .rec = rec,
        .arg = (rec->flags & PP_RF_ARG_EXT) ? (const void *)pp_seg_ptr(&w->seg, rec->arg_off)
               : len <= PP_TINY                ? (const void *)rec->tiny_arg
                                               : (const void *)rec->inl_arg,
        .arg_len = len,
        .res = rec->tiny_res,
        .err = rec->err,
        .err_len = &rec->err_len,
    };
    int status;

    pp_store_relaxed(&w->wcb->held_seq, rec->seq);
    pp_store_release(&w->wcb->started, off);
    pp_fn *fn = pp__worker_fn(w, rec->fn_id, rec->err, PP_ERRMSG_MAX);
    uint64_t t0 = pp__ticks();
    if (pp_unlikely(!fn)) {
        rec->err_len = (uint32_t)strlen(rec->err);
        status = -ENOEXEC;
    } else if (rec->flags & PP_RF_MAP) {
        status = pp__map_run(w, rec, fn);
    } else {
        status = fn(&job);
        pp__job_finish(&job, &status);
    }
    uint64_t t1 = pp__ticks();
    rec->status = status;
    pp_store_relaxed(&w->wcb->njobs, pp_load_relaxed(&w->wcb->njobs) + 1);
    pp_store_relaxed(&w->wcb->busy_ticks,
                     pp_load_relaxed(&w->wcb->busy_ticks) + (t1 - t0));
    complete(w, rec, off);
    pp_store_release(&w->wcb->started, 0);
    pp_ring_claim_done(&w->wcb->claim);
}

/* Settles a job's status and result after its function returned. */
void pp__job_finish(struct pp_job *job, int *status)
{
    struct pp_rec *rec = job->rec;

    /* An explicit pp_job_fail wins; then a result request that failed
     * (and was not followed by one that worked) is the real cause. */
    if (job->fail_code)
        *status = job->fail_code;
    else if (job->alloc_err)
        *status = job->alloc_err;
    if (*status < 0 && *job->err_len == 0) {
        char buf[64];
        int n = snprintf(job->err, PP_ERRMSG_MAX, "job failed with %d (%s)",
                         *status, strerror_r(-*status, buf, sizeof(buf)));
        *job->err_len = (uint32_t)(n < PP_ERRMSG_MAX ? n : PP_ERRMSG_MAX - 1);
    }
    if (job->map_slot)
        return; /* map items: pp__map_run settles the slot */
    rec->res_len = (uint32_t)job->res_len;
    if (job->res_block) {
        rec->res_off = job->res_block;
        rec->res_slot = (uint32_t)job->w->slot;
        rec->res_where = PP_RES_BLOCK;
    } else {
        rec->res_where = job->res == rec->inl_res ? PP_RES_INLINE : PP_RES_TINY;
    }
}

/* ---------------------------------------------------------------- */
/* The job API                                                        */
/* ---------------------------------------------------------------- */

PP_EXPORT const void *pp_job_arg(pp_job *job, size_t *len)
{
    if (!job)
        return NULL;
    if (len)
        *len = job->arg_len;
    return job->arg;
}

/* ---------------------------------------------------------------- */
/* Result blocks: a small cache per size class, fed by the return ring */
/* ---------------------------------------------------------------- */

/* Keeps a free block of class cls for later, or gives it to the heap. */
static void stash_put(struct pp_worker *w, unsigned cls, uint64_t off)
{
    if (w->nstash[cls] < PP_BLOCK_STASH)
        w->stash[cls][w->nstash[cls]++] = off;
    else
        pp_pages_free(&w->sh->pages, &w->seg, off, pp_pages_class_size(cls));
}

/* A block for len bytes: from the stash, then from what the host gave
 * back, then from the page heap.  Returns its offset, or 0. */
static uint64_t block_get(struct pp_worker *w, size_t len)
{
    unsigned cls = pp_pages_class(len);
    uint64_t v;

    while (w->nstash[cls] == 0 && pp_ring_dequeue_mc(w->ret, &v, &w->wcb->ret_claim)) {
        pp_ring_claim_done(&w->wcb->ret_claim);
        stash_put(w, PP_RET_CLASS(v), PP_RET_OFF(v));
    }
    if (w->nstash[cls])
        return w->stash[cls][--w->nstash[cls]];
    return pp_pages_alloc(&w->sh->pages, &w->seg, len, NULL);
}

/* Before a planned exit: the stash goes back to the page heap. */
static void stash_flush(struct pp_worker *w)
{
    for (unsigned c = 0; c < PP_PAGES_NCLASS; c++)
        while (w->nstash[c])
            pp_pages_free(&w->sh->pages, &w->seg, w->stash[c][--w->nstash[c]],
                          pp_pages_class_size(c));
}

static void drop_block(struct pp_job *job)
{
    if (job->res_block) {
        stash_put(job->w, pp_pages_class(job->res_block_len), job->res_block);
        job->res_block = 0;
    }
}

PP_EXPORT void *pp_job_result(pp_job *job, size_t len)
{
    if (!job)
        return NULL;
    if (len > PP_MAX_PAYLOAD) {
        job->alloc_err = -E2BIG;
        return NULL;
    }
    if (job->map_slot) {
        if (len > job->map_cap) {
            job->alloc_err = -EOVERFLOW;
            return NULL;
        }
        job->res = job->map_slot;
    } else if (len <= PP_TINY) {
        drop_block(job);
        job->res = job->rec->tiny_res;
    } else if (len <= PP_INLINE_MAX) {
        drop_block(job);
        job->res = job->rec->inl_res;
    } else {
        uint64_t off = block_get(job->w, len);
        if (!off) {
            job->alloc_err = -ENOMEM;
            return NULL;
        }
        drop_block(job);
        job->res_block = off;
        job->res_block_len = len;
        job->res = pp_seg_ptr(&job->w->seg, off);
    }
    job->res_len = len;
    job->alloc_err = 0;
    return job->res;
}

PP_EXPORT int pp_job_fail(pp_job *job, int code, const char *fmt, ...)
{
    code = code < 0 ? code : (code == 0 ? -EIO : -code);
    if (!job)
        return code;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(job->err, PP_ERRMSG_MAX, fmt, ap);
        va_end(ap);
        if (n < 0)
            n = 0;
        *job->err_len = (uint32_t)(n < PP_ERRMSG_MAX ? n : PP_ERRMSG_MAX - 1);
    }
    job->fail_code = code;
    return code;
}

PP_EXPORT int pp_job_worker(pp_job *job)
{
    return job ? job->w->slot : -EINVAL;
}

/* ---------------------------------------------------------------- */
/* Process set-up and the loop                                        */
/* ---------------------------------------------------------------- */

static void reset_signals(void)
{
    sigset_t none;
    struct sigaction dfl;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

void pp__worker_main(struct pp_shared *sh, char *base, int slot)
{
    struct pp_worker *w = &the_worker;

    reset_signals();
    w->sh = sh;
    w->seg.fd = -1;
    w->seg.base = base;
    w->seg.size = sh->seg_size;
    w->slot = slot;
    w->spin_ns = sh->spin_ns;
    w->wcb = &sh->wcb[slot];
    w->ring = pp_seg_ptr(&w->seg, sh->ring_off);
    w->done = pp_seg_ptr(&w->seg, sh->done_off + (uint64_t)slot * sh->done_stride);
    w->ret = pp__ret_ring(sh, base, (uint32_t)slot);
    if (w->wcb->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->wcb->cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    prctl(PR_SET_NAME, "pp-worker", 0, 0, 0);
    pp_store_release(&w->wcb->pid, (int32_t)getpid());
    for (;;) {
        uint64_t off = take(w);
        if (off == 0)
            break;
        run(w, off);
        if (w->wcb->restart)
            break;
    }
    stash_flush(w);
    _exit(0);
}
