/*
 * ring.h - bounded lock-free rings of 64-bit values in shared memory.
 *
 * Two kinds, named by their concurrency contract (ck/DPDK style):
 *
 *   pp_ring   multi-producer / multi-consumer (MPMC).  Producers are host
 *             threads, consumers are worker processes.  Each slot carries
 *             a sequence number (the bounded MPMC queue of D. Vyukov), so
 *             a producer never waits for another producer and a consumer
 *             never waits for another consumer.
 *   pp_spsc   single producer / single consumer; a worker hands finished
 *             jobs back to the engine thread.
 *
 * Positions are free-running 64-bit counters masked by (capacity - 1):
 * they never wrap in practice (2^64 operations), so every comparison below
 * is a plain signed difference with no wraparound case.
 *
 * Neither ring holds a pointer: values are offsets or indices chosen by the
 * caller, so a ring works in every process that maps the segment.
 *
 * Crash repair.  A consumer process can be killed at any instruction.
 * pp_ring_dequeue_mc announces in a pp_ring_claim (which the caller keeps
 * in shared memory, one per consumer) which position it is about to take
 * and what it took; after the consumer died, pp_ring_repair reads that
 * record, releases a slot the dead consumer had claimed but not released,
 * and reports the value it took.  That is all it knows: the claim keeps
 * the value until the consumer calls pp_ring_claim_done, so a value
 * reported by repair may already have been handed on.  The caller must
 * tell that case apart itself (the engine puts a generation in each value
 * and compares it with the record's own; engine/consumer.c).
 */
#ifndef PP_SHM_RING_H
#define PP_SHM_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atomic.h"

struct pp_ring_slot {
    _Atomic uint64_t seq; /* == pos: free for the producer of pos;
                             == pos + 1: full, for the consumer of pos */
    uint64_t val;
};

struct pp_ring {
    uint64_t cap; /* power of two */
    uint64_t mask;
    pp_cacheline_aligned _Atomic uint64_t enq; /* next position to fill */
    pp_cacheline_aligned _Atomic uint64_t deq; /* next position to take */
    pp_cacheline_aligned struct pp_ring_slot slots[];
};

/* What one consumer is doing; lives in shared memory (see ring.c). */
struct pp_ring_claim {
    _Atomic uint64_t pos;   /* position + 1 being claimed, 0 = none */
    _Atomic uint64_t taken; /* value taken + 1, 0 = none */
};

size_t pp_ring_bytes(uint64_t cap);
/* Initialises a ring in caller-provided memory.  -EINVAL unless cap is a
 * power of two >= 2.  Not thread-safe (setup). */
int pp_ring_init(struct pp_ring *r, uint64_t cap);

/* Lock-free, any number of producers.  False when the ring is full. */
bool pp_ring_enqueue_mp(struct pp_ring *r, uint64_t val);

/* Lock-free, any number of producers.  Enqueues the first k <= n values,
 * k as large as the free slots at the tail allow; returns k (0 = full).
 * The k values occupy consecutive positions, in order. */
unsigned pp_ring_enqueue_burst_mp(struct pp_ring *r, const uint64_t *vals,
                                  unsigned n);

/* Lock-free, any number of consumers.  False when the ring is empty.
 * claim may be NULL when the consumer cannot die separately. */
bool pp_ring_dequeue_mc(struct pp_ring *r, uint64_t *ret_val,
                        struct pp_ring_claim *claim);

/* Values waiting (a snapshot; exact only when the ring is quiescent). */
uint64_t pp_ring_count(const struct pp_ring *r);

/* Repair after the consumer owning claim died.  Returns 1 and sets
 * *ret_val when the dead consumer had taken a value and not called
 * pp_ring_claim_done for it (it may or may not have handed it on: see
 * above), 0 when nothing is
 * left to do, -EAGAIN when a live consumer may still own the claimed slot
 * (call again later), and clears claim when done.  blocking-free: it only
 * reads the ring and may release one slot.  Call it from one thread only,
 * and only once the owner of claim is known to be dead.  live[] lists the
 * claims of every consumer that may still run (nlive of them): not those
 * known dead, whose claims cannot move on. */
int pp_ring_repair(struct pp_ring *r, struct pp_ring_claim *claim,
                   struct pp_ring_claim *const *live, unsigned nlive,
                   uint64_t *ret_val);

/* The consumer is done with the value it took: clears claim->taken, so a
 * later post-mortem does not report it.  Call before the next dequeue. */
static inline void pp_ring_claim_done(struct pp_ring_claim *claim)
{
    pp_store_release(&claim->taken, 0);
}

/* ---------------------------------------------------------------------- */

struct pp_spsc {
    uint64_t cap;
    uint64_t mask;
    pp_cacheline_aligned _Atomic uint64_t head; /* consumer: next to read */
    pp_cacheline_aligned _Atomic uint64_t tail; /* producer: next to write */
    pp_cacheline_aligned uint64_t vals[];
};

size_t pp_spsc_bytes(uint64_t cap);
int pp_spsc_init(struct pp_spsc *r, uint64_t cap);
/* Wait-free.  False when full. */
bool pp_spsc_push(struct pp_spsc *r, uint64_t val);
/* Wait-free.  Takes up to n values; returns how many. */
unsigned pp_spsc_pop_burst(struct pp_spsc *r, uint64_t *vals, unsigned n);

#endif /* PP_SHM_RING_H */
