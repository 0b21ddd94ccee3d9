/*
 * futex.h - sleeping on a word in shared memory, and an event count.
 *
 * Overview.  Waiters in pp first spin for a short budget and then sleep on
 * a futex in the shared segment; wakers make a system call only when
 * somebody sleeps.  The futexes are process-shared (no FUTEX_PRIVATE_FLAG)
 * because the word lives in a MAP_SHARED segment used by several processes.
 *
 * Protocol of pp_event (an event count, after ck_ec):
 *
 *   waiter                                  signaller
 *   ------                                  ---------
 *   s = pp_event_prepare(ev)   (E1)         publish the condition
 *   if (condition) { cancel; done }         pp_event_signal(ev)     (E2)
 *   pp_event_wait(ev, s, deadline)
 *   pp_event_cancel(ev)
 *
 * E1 is a seq_cst increment of `sleepers` followed by a read of `seq`; E2
 * is a seq_cst fence followed by a read of `sleepers`.  By the seq_cst
 * total order either the signaller sees the sleeper (and bumps seq and
 * wakes), or the waiter's check sees the condition.  A wake-up between E1
 * and the futex call changes seq, so the futex call returns at once: no
 * lost wake-up.  Spurious wake-ups are possible; callers re-check.
 */
#ifndef PP_SHM_FUTEX_H
#define PP_SHM_FUTEX_H

#include <stdint.h>
#include <time.h>

#include "atomic.h"

/* Blocking.  Sleeps while *addr == expected, until woken or the absolute
 * CLOCK_MONOTONIC deadline (NULL = none).  Returns 0 (woken or value
 * changed), -ETIMEDOUT or -EINTR. */
int pp_futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                  const struct timespec *deadline);
/* Wakes up to n sleepers on addr; returns how many woke. */
int pp_futex_wake(_Atomic uint32_t *addr, int n);

struct pp_event {
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
};

static inline void pp_event_init(struct pp_event *ev)
{
    atomic_init(&ev->seq, 0);
    atomic_init(&ev->sleepers, 0);
}

/* E1. */
static inline uint32_t pp_event_prepare(struct pp_event *ev)
{
    atomic_fetch_add_explicit(&ev->sleepers, 1, memory_order_seq_cst);
    return atomic_load_explicit(&ev->seq, memory_order_seq_cst);
}

static inline void pp_event_cancel(struct pp_event *ev)
{
    atomic_fetch_sub_explicit(&ev->sleepers, 1, memory_order_relaxed);
}

static inline int pp_event_wait(struct pp_event *ev, uint32_t s,
                                const struct timespec *deadline)
{
    return pp_futex_wait(&ev->seq, s, deadline);
}

/* E2.  Wakes up to n sleepers; costs one fence and one load when nobody
 * sleeps. */
static inline void pp_event_signal(struct pp_event *ev, int n)
{
    pp_fence_seq_cst();
    if (pp_unlikely(atomic_load_explicit(&ev->sleepers, memory_order_relaxed))) {
        atomic_fetch_add_explicit(&ev->seq, 1, memory_order_seq_cst);
        pp_futex_wake(&ev->seq, n);
    }
}

/* Time helpers used by every waiting loop. */
uint64_t pp_now_ns(void);
/* Absolute CLOCK_MONOTONIC deadline for timeout_ms (< 0: none -> NULL). */
struct timespec *pp_deadline(struct timespec *ts, int timeout_ms);

#endif /* PP_SHM_FUTEX_H */
