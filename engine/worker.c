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
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Only ever one per process: the worker's own state. */
static struct pp_worker the_worker;

/* ---------------------------------------------------------------- */
/* Taking jobs                                                        */
/* ---------------------------------------------------------------- */

static bool stopping(struct pp_worker *w)
{
    return pp_load_relaxed(&w->wcb->stop) != 0;
}

/*
 * Waits for work: spin for the adaptive budget, then sleep on the slot's
 * own futex.  While it spins, the worker's bit is set in sh->spinning, so
 * that a submitter wakes nobody (wake.c has the whole policy).  A spinner
 * that takes a job and was the last one passes the duty on when more jobs
 * wait, so a burst still reaches every worker.
 * Returns the record, or NULL when asked to stop.
 */
static struct pp_rec *take(struct pp_worker *w, uint64_t *tok)
{
    struct pp_shared *sh = w->k.sh;
    struct pp_rec *r;

    for (;;) {
        if (stopping(w))
            return NULL;
        if ((r = pp__cons_take(&w->k, tok)) != NULL)
            return r;
        pp_store_relaxed(&w->k.c->idle, 1);
        uint64_t spin_end = pp_now_ns() + w->spin_ns;
        /* Announced as a spinner only after the first stretch: a job that
         * comes at once (one in flight, a steady stream) then costs no
         * atomic on the shared line, and a submitter that found nobody
         * announced merely wakes a sleeper it did not need to.  Busy-poll
         * workers never sleep, so nobody needs to know they spin. */
        bool announced = false;
        for (unsigned i = 1;; i++) {
            pp_cpu_relax();
            if (pp_ring_count(w->k.ring) && (r = pp__cons_take(&w->k, tok)) != NULL) {
                w->spin_ns = pp__spin_adapt(w->spin_ns, true, sh->spin_ns);
                pp_store_relaxed(&w->k.c->idle, 0);
                if (announced && pp__spin_leave(sh, w->k.slot))
                    pp__pass_duty(sh, w->k.ring, r->submit_cpu);
                return r;
            }
            if ((i & 255) == 0) {
                uint64_t now = pp_now_ns();
                if (stopping(w) || (!sh->busy_poll && now >= spin_end))
                    break;
                /* Busy-poll users asked for a core of their own. */
                if (sh->busy_poll)
                    continue;
                if (!announced) {
                    pp__spin_enter(sh, w->k.slot);
                    announced = true;
                }
                /* Let a thread that shares our CPU (often the very
                 * submitter we wait for) run.  If one did (the yield took
                 * long), our spinning only takes its CPU away: sleep. */
                sched_yield();
                if (pp_now_ns() - now > PP_YIELD_SHARED_NS)
                    break;
            }
        }
        w->spin_ns = pp__spin_adapt(w->spin_ns, false, sh->spin_ns);
        /* S1: leave the spinners before the last look at the ring (in
         * pp__sleep); pairs with the submitter's W1 (wake.c). */
        if (announced)
            pp__spin_leave(sh, w->k.slot);
        r = pp__sleep(&w->k, tok);
        pp_store_relaxed(&w->k.c->idle, 0);
        if (r) {
            /* A submitter may have left this job, and those behind it, to
             * us while we still spun: pass the duty on. */
            pp__pass_duty(sh, w->k.ring, r->submit_cpu);
            return r;
        }
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
    return w->fns[id] = pp__fn_resolve(w->k.sh, id, err, errlen);
}

/* Settles a job's status after its function returned. */
static void job_status(struct pp_job *job, int *status)
{
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
}

/* Runs a record this worker owns and completes it. */
static void run(struct pp_worker *w, struct pp_rec *rec, uint64_t tok)
{
    uint32_t len = rec->arg_len;
    struct pp_job job = {
        .w = w,
        .rec = rec,
        .tok = tok,
        .res = NULL,
        .arg = (rec->flags & PP_RF_ARG_EXT) ? (const void *)pp_seg_ptr(&w->k.seg, rec->arg_off)
               : len <= PP_TINY                ? (const void *)rec->tiny_arg
                                               : (const void *)rec->inl_arg,
        .arg_len = len,
        .err = rec->err,
        .err_len = &rec->err_len,
    };
    int status;

    pp__fault_point(PP_FP_STARTED, rec, tok);
    pp_fn *fn = pp__worker_fn(w, rec->fn_id, rec->err, PP_ERRMSG_MAX);
    uint64_t t0 = pp__ticks();
    bool settle = true;
    if (pp_unlikely(!fn)) {
        rec->err_len = (uint32_t)strlen(rec->err);
        status = -ENOEXEC;
    } else if (rec->flags & PP_RF_MAP) {
        status = pp__map_run(w, rec, fn); /* settled its result itself */
        settle = false;
    } else {
        status = fn(&job);
        job_status(&job, &status);
    }
    uint64_t t1 = pp__ticks();
    struct pp_consumer *c = w->k.c;
    pp_store_relaxed(&c->njobs, pp_load_relaxed(&c->njobs) + 1);
    pp_store_relaxed(&c->busy_ticks, pp_load_relaxed(&c->busy_ticks) + (t1 - t0));
    pp__cons_prepare(&w->k, rec, tok);
    /* The record's first line last, in one burst (see pp_job.tiny). */
    if (settle)
        pp__res_settle(&job);
    rec->status = status;
    pp__cons_complete(&w->k, rec, tok);
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

PP_EXPORT void *pp_job_result(pp_job *job, size_t len)
{
    if (!job)
        return NULL;
    if (len > PP_MAX_PAYLOAD) {
        job->alloc_err = -E2BIG;
        return NULL;
    }
    if (pp_unlikely(job->bg))
        return pp__bg_result(job, len);
    if (job->map_slot) {
        if (len > job->map_cap) {
            job->alloc_err = -EOVERFLOW;
            return NULL;
        }
        job->res = job->map_slot;
        job->res_len = len;
        job->alloc_err = 0;
        return job->res;
    }
    return pp__res_space(job, len);
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
    return !job ? -EINVAL : job->bg ? 0 : (int)job->w->k.slot;
}

/* Kinds of message-ring entries (collect.c reads them). */
/* One entry in our message ring (consumer.c), counted for rec->nmsgs. */
static void msg_put(struct pp_job *job, uint16_t kind, const void *p, uint32_t len)
{
    pp__cons_msg_put(&job->w->k, kind, job->tok, p, len);
    job->nmsgs++;
}

PP_EXPORT int pp_job_send(pp_job *job, const void *data, size_t len)
{
    if (!job || (!data && len))
        return -EINVAL;
    if (len > PP_MAX_PAYLOAD)
        return -E2BIG;
    if (job->bg)
        return pp__bg_send(job, data, len);
    if (!job->rec || !(job->rec->flags & PP_RF_COLLECT) || job->map_slot)
        return -ENOTCONN;
    if (len <= PP_INLINE_MAX) {
        msg_put(job, PP_MSG_DATA, data, (uint32_t)len);
        return 0;
    }
    /* A page-heap block, as for a large result: the reader sees it in
     * place and gives it back through our return ring.  held[] names it
     * until the entry is in the ring (a post-mortem frees it before, the
     * collector after: pp__cons_repair keeps the last one sent). */
    struct pp_cons *k = &job->w->k;
    uint64_t off = pp__cons_block_get(k, len);
    if (!off)
        return -ENOMEM;
    memcpy(pp_seg_ptr(&k->seg, off), data, len);
    struct pp_msg_block ref = { off, len };
    msg_put(job, PP_MSG_BLOCK, &ref, sizeof(ref));
    pp__cons_block_release(k, off);
    return 0;
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
    pp__cons_init(&w->k, sh, base, (uint32_t)slot);
    w->wcb = &sh->wcb[slot];
    w->spin_ns = sh->spin_ns;
    int cpu = pp_load_relaxed(&w->wcb->cpu);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
    }
    prctl(PR_SET_NAME, "pp-worker", 0, 0, 0);
    pp__fault_setup();
    pp_store_release(&w->wcb->pid, (int32_t)getpid());
    for (;;) {
        uint64_t tok;
        struct pp_rec *r = take(w, &tok);
        if (!r)
            break;
        run(w, r, tok);
        if (w->wcb->restart)
            break;
    }
    pp__cons_flush(&w->k);
    /* Leaving: if jobs wait, someone else must be awake for them. */
    pp__set_live(sh, (uint32_t)slot, false);
    if (pp_ring_count(w->k.ring))
        pp__wake_any(sh, 1);
    _exit(0);
}
