/*
 * wake.c - which sleeping worker is woken when work arrives.
 *
 * Waking a worker costs the waker a system call, and the woken worker
 * takes the CPU it is pinned to at once.  When that CPU is the very one
 * the submitting thread runs on (always so for one of the workers when
 * there are as many workers as CPUs: the default), every wake-up there
 * takes the submitter off its CPU; done per job, that made the default
 * configuration several times slower than one worker fewer.  So:
 *
 *   - a worker spinning for work will take the job: wake nobody;
 *   - else wake a sleeping worker pinned to another CPU than the
 *     submitter's;
 *   - one pinned to the submitter's CPU is woken only when no worker is
 *     awake at all (someone must run the job), or when the submitter is
 *     about to block (pp_task_wait, pp_wait: it leaves its CPU anyway);
 *   - otherwise the job is deferred: the awake workers will take it when
 *     they are done, but one of them may be in a long job, so the first
 *     deferral also wakes one sleeper once and every sleeper then sleeps
 *     with a short timeout (PP_DEFER_MS) while `deferred` is set, looking
 *     at the ring each time; the one that finds it empty clears the flag.
 *     A deferred job thus waits at most that long for a free worker, and
 *     a flood of short jobs costs the submitter's CPU one wake-up per
 *     timeout instead of one per job;
 *   - a spinner that takes a job and was the last spinner wakes one more
 *     worker (not on that job's submitter's CPU) when more jobs wait, so
 *     a burst still spreads over the workers.
 *
 * A job is never left with every worker asleep: a worker sets its
 * `sleeping` bit, then looks at the ring once more (K1) before it sleeps;
 * the waker queues the job, then reads the bits (W1).  Both are seq_cst,
 * so the waker sees the bit, or the worker sees the job (the Dekker
 * pattern).  A waker that sees some worker awake (live, not sleeping)
 * leaves the job to it: that worker looks at the ring before it sleeps.
 *
 * Each worker sleeps on its own futex word (wcb->wake), so the waker
 * chooses whom to wake; clearing the sleeping bit with a fetch_and is the
 * claim, so two wakers never spend two wake-ups on one worker.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>

#define NWORDS (PP_MAX_WORKERS / 64)

void pp__spin_enter(struct pp_shared *sh, uint32_t slot)
{
    atomic_fetch_or_explicit(&sh->spinning[slot / 64], 1ull << (slot % 64),
                             memory_order_seq_cst);
}

static bool anyone_spinning(struct pp_shared *sh)
{
    uint64_t any = 0;
    for (unsigned i = 0; i < NWORDS; i++)
        any |= pp_load_relaxed(&sh->spinning[i]);
    return any != 0;
}

bool pp__spin_leave(struct pp_shared *sh, uint32_t slot)
{
    uint64_t bit = 1ull << (slot % 64);
    uint64_t old = atomic_fetch_and_explicit(&sh->spinning[slot / 64], ~bit,
                                             memory_order_seq_cst);
    return (old & ~bit) == 0 && !anyone_spinning(sh);
}

void pp__set_live(struct pp_shared *sh, uint32_t slot, bool live)
{
    uint64_t bit = 1ull << (slot % 64);
    if (live)
        atomic_fetch_or(&sh->live[slot / 64], bit);
    else
        atomic_fetch_and(&sh->live[slot / 64], ~bit);
    if (!live) {
        /* A dead worker's bits go with it. */
        atomic_fetch_and(&sh->spinning[slot / 64], ~bit);
        atomic_fetch_and(&sh->sleeping[slot / 64], ~bit);
    }
}

void pp__wake_slot(struct pp_shared *sh, uint32_t slot)
{
    _Atomic uint32_t *w = &sh->wcb[slot].wake;
    atomic_fetch_add_explicit(w, 1, memory_order_seq_cst);
    pp_futex_wake(w, 1);
}

/* Claims one sleeping worker not pinned to avoid_cpu (any when
 * avoid_cpu < 0) and wakes it.  Returns false when there is none. */
static bool wake_one(struct pp_shared *sh, int avoid_cpu)
{
    for (unsigned i = 0; i < NWORDS; i++) {
        uint64_t m = pp_load_relaxed(&sh->sleeping[i]);
        while (m) {
            unsigned b = (unsigned)__builtin_ctzll(m);
            uint64_t bit = 1ull << b;
            m &= ~bit;
            uint32_t slot = i * 64 + b;
            if (avoid_cpu >= 0 && pp_load_relaxed(&sh->wcb[slot].cpu) == avoid_cpu)
                continue;
            if (atomic_fetch_and(&sh->sleeping[i], ~bit) & bit) {
                pp__wake_slot(sh, slot);
                return true;
            }
        }
    }
    return false;
}

/* True when every live worker sleeps. */
static bool nobody_awake(struct pp_shared *sh)
{
    for (unsigned i = 0; i < NWORDS; i++)
        if (pp_load_relaxed(&sh->live[i]) & ~pp_load_relaxed(&sh->sleeping[i]))
            return false;
    return true;
}

static bool anyone_sleeping(struct pp_shared *sh)
{
    uint64_t any = 0;
    for (unsigned i = 0; i < NWORDS; i++)
        any |= pp_load_relaxed(&sh->sleeping[i]);
    return any != 0;
}

/* Returns false when no local worker is about to take the jobs (all are
 * busy, or there are none): then remote nodes may (net.c).  Without
 * nodes the answer is not computed where it would cost a load. */
bool pp__wake_for_jobs(struct pp_shared *sh, unsigned n, int cpu)
{
    pp_fence_seq_cst(); /* W1: our enqueue before the reads of the bits */
    /* The sleeping bits change only when a worker falls asleep or wakes,
     * so this line stays in the submitter's cache; the spinning bits
     * change with every job a spinner takes and are read only when
     * someone sleeps. */
    if (pp_likely(!anyone_sleeping(sh)))
        return pp_likely(!pp_load_relaxed(&sh->has_nodes)) || anyone_spinning(sh);
    if (anyone_spinning(sh))
        return true;
    unsigned woke = 0;
    while (woke < n && wake_one(sh, cpu))
        woke++;
    if (woke)
        return true;
    /* Only workers on our own CPU sleep, if any: wake one of them if
     * nobody else would run the job, else defer (see above). */
    if (nobody_awake(sh))
        return wake_one(sh, -1);
    if (pp_load_relaxed(&sh->deferred) == 0 && atomic_exchange(&sh->deferred, 1) == 0)
        wake_one(sh, -1);
    return false;
}

void pp__pass_duty(struct pp_shared *sh, struct pp_ring *ring, int cpu)
{
    /* The sleeping bits first: they are read-mostly, while the ring's
     * positions were just written by the submitter (a cache miss on the
     * round trip of every job). */
    if (anyone_sleeping(sh) && pp_ring_count(ring))
        pp__wake_for_jobs(sh, 1, cpu);
}

void pp__wake_any(struct pp_shared *sh, unsigned n)
{
    pp_fence_seq_cst(); /* W1 */
    for (unsigned i = 0; i < n; i++)
        if (!wake_one(sh, -1))
            break;
}

struct pp_rec *pp__sleep(struct pp_cons *k, uint64_t *tok)
{
    struct pp_shared *sh = k->sh;
    uint32_t slot = k->slot;
    uint64_t bit = 1ull << (slot % 64);
    _Atomic uint32_t *w = &sh->wcb[slot].wake;
    struct pp_rec *r;

    uint32_t seq = pp_load_acquire(w);
    atomic_fetch_or_explicit(&sh->sleeping[slot / 64], bit, memory_order_seq_cst);
    /* K1: the last look, after the bit is visible (pairs with W1). */
    if ((r = pp__cons_take(k, tok)) == NULL && !pp_load_relaxed(&sh->wcb[slot].stop)) {
        if (pp_load_relaxed(&sh->deferred)) {
            struct timespec ts;
            if (pp_futex_wait(w, seq, pp_deadline(&ts, PP_DEFER_MS)) == -ETIMEDOUT &&
                (r = pp__cons_take(k, tok)) == NULL)
                pp_store_relaxed(&sh->deferred, 0); /* nothing was left */
        } else {
            pp_futex_wait(w, seq, NULL);
        }
    }
    atomic_fetch_and_explicit(&sh->sleeping[slot / 64], ~bit, memory_order_relaxed);
    return r;
}
