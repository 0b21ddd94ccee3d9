/*
 * ring.c - the MPMC and SPSC rings of ring.h.
 *
 * Ordering labels (checked in review, DPDK style):
 *   A1/R2  producer's acquire of a slot's seq / consumer's release of it:
 *          the consumer of lap L has read val before the producer of lap
 *          L+1 overwrites it.
 *   R1/A2  producer's release of seq / consumer's acquire: val is written
 *          before the consumer reads it.
 *   C1     the consumer's claim record is written before its CAS on deq,
 *          so a repairer that sees deq past a position also sees the claim
 *          of whoever moved it (pairs with the acquire load of deq in
 *          pp_ring_repair).
 */
#include "ring.h"

#include <errno.h>

static inline struct pp_ring_slot *slot_at(struct pp_ring *r, uint64_t pos)
{
    return &r->slots[pos & r->mask];
}

static inline int64_t diff(uint64_t a, uint64_t b)
{
    return (int64_t)(a - b);
}

size_t pp_ring_bytes(uint64_t cap)
{
    return sizeof(struct pp_ring) + cap * sizeof(struct pp_ring_slot);
}

int pp_ring_init(struct pp_ring *r, uint64_t cap)
{
    if (cap < 2 || (cap & (cap - 1)) != 0)
        return -EINVAL;
    r->cap = cap;
    r->mask = cap - 1;
    atomic_init(&r->enq, 0);
    atomic_init(&r->deq, 0);
    for (uint64_t i = 0; i < cap; i++) {
        atomic_init(&r->slots[i].seq, i);
        r->slots[i].val = 0;
    }
    return 0;
}

bool pp_ring_enqueue_mp(struct pp_ring *r, uint64_t val)
{
    uint64_t pos = pp_load_relaxed(&r->enq);
    struct pp_ring_slot *s;

    /* The one-value case of pp_ring_enqueue_burst_mp, without its loops:
     * it is the hot path of every pp_submit. */
    for (;;) {
        s = slot_at(r, pos);
        uint64_t seq = pp_load_acquire(&s->seq); /* A1 */
        int64_t d = diff(seq, pos);
        if (d < 0)
            return false; /* full */
        if (d > 0) {
            pos = pp_load_relaxed(&r->enq);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&r->enq, &pos, pos + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    s->val = val;
    pp_store_release(&s->seq, pos + 1); /* R1 */
    return true;
}

/* Counts how many slots from pos on are free for this lap (at most n);
 * *first_seq gets the first slot's seq for the caller's full/raced test. */
static unsigned free_run(struct pp_ring *r, uint64_t pos, unsigned n,
                         uint64_t *first_seq)
{
    unsigned k = 0;
    while (k < n) {
        /* A1: pairs with R2 in pp_ring_dequeue_mc. */
        uint64_t seq = pp_load_acquire(&slot_at(r, pos + k)->seq);
        if (k == 0)
            *first_seq = seq;
        if (seq != pos + k)
            break;
        k++;
    }
    return k;
}

unsigned pp_ring_enqueue_burst_mp(struct pp_ring *r, const uint64_t *vals,
                                  unsigned n)
{
    uint64_t pos = pp_load_relaxed(&r->enq);
    unsigned k;

    if (n == 0)
        return 0;
    for (;;) {
        uint64_t seq0 = 0;
        k = free_run(r, pos, n, &seq0);
        if (k == 0) {
            if (diff(seq0, pos) < 0)
                return 0; /* the slot still holds last lap's value: full */
            pos = pp_load_relaxed(&r->enq); /* another producer won pos */
            continue;
        }
        /* Relaxed is enough: the slots' seq (A1) already ordered us after
         * their consumers; the CAS only divides positions among producers. */
        if (atomic_compare_exchange_weak_explicit(&r->enq, &pos, pos + k,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    for (unsigned i = 0; i < k; i++) {
        struct pp_ring_slot *s = slot_at(r, pos + i);
        s->val = vals[i];
        /* R1: publishes val; pairs with A2 in pp_ring_dequeue_mc. */
        pp_store_release(&s->seq, pos + i + 1);
    }
    return k;
}

bool pp_ring_dequeue_mc(struct pp_ring *r, uint64_t *ret_val,
                        struct pp_ring_claim *claim)
{
    uint64_t pos = pp_load_relaxed(&r->deq);
    struct pp_ring_slot *s;

    for (;;) {
        s = slot_at(r, pos);
        /* A2: pairs with R1; val is visible once seq says full. */
        uint64_t seq = pp_load_acquire(&s->seq);
        int64_t d = diff(seq, pos + 1);
        if (d < 0) {
            /* Not filled yet: empty.  A claim left from a CAS we lost
             * would make a repairer wait for us forever (-EAGAIN). */
            if (claim)
                pp_store_relaxed(&claim->pos, 0);
            return false;
        }
        if (d > 0) {
            pos = pp_load_relaxed(&r->deq); /* another consumer took it */
            continue;
        }
        if (claim)
            pp_store_relaxed(&claim->pos, pos + 1);
        /* C1: acq_rel so the claim store above is visible to anyone who
         * acquires deq past pos (pp_ring_repair). */
        if (atomic_compare_exchange_weak_explicit(&r->deq, &pos, pos + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    uint64_t val = s->val;
    if (claim)
        pp_store_relaxed(&claim->taken, val + 1);
    /* R2: the slot is free for the next lap only after val was read (and
     * the claim says what we took); pairs with A1. */
    pp_store_release(&s->seq, pos + r->cap);
    if (claim)
        pp_store_release(&claim->pos, 0);
    *ret_val = val;
    return true;
}

uint64_t pp_ring_count(const struct pp_ring *r)
{
    uint64_t d = pp_load_relaxed(&((struct pp_ring *)r)->deq);
    uint64_t e = pp_load_relaxed(&((struct pp_ring *)r)->enq);
    return diff(e, d) > 0 ? e - d : 0;
}

/*
 * Post-mortem of a consumer.  The dead process executed a program-order
 * prefix of pp_ring_dequeue_mc (a signal lands between instructions and
 * its stores reached the shared pages before the kernel reported the
 * death), so the claim tells which of these happened:
 *   pos == 0, taken != 0   it held a value (finished dequeue): report it;
 *   pos != 0, taken != 0   it read val but may not have released the slot;
 *   pos != 0, taken == 0   it may have won the CAS for pos and died before
 *                          reading val.  If deq moved past pos and the slot
 *                          is still full, then whoever won pos has not
 *                          released it yet: a live consumer whose claim
 *                          names pos (wait for it), or else the dead one.
 */
int pp_ring_repair(struct pp_ring *r, struct pp_ring_claim *claim,
                   struct pp_ring_claim *const *live, unsigned nlive,
                   uint64_t *ret_val)
{
    uint64_t c = pp_load_acquire(&claim->pos);
    uint64_t t = pp_load_acquire(&claim->taken);
    int ret = 0;

    if (c != 0) {
        uint64_t pos = c - 1;
        struct pp_ring_slot *s = slot_at(r, pos);
        if (t != 0) {
            if (pp_load_acquire(&s->seq) == pos + 1)
                pp_store_release(&s->seq, pos + r->cap);
        } else if (pp_load_acquire(&s->seq) == pos + 1 &&
                   diff(pp_load_acquire(&r->deq), pos) > 0) {
            for (unsigned i = 0; i < nlive; i++)
                if (pp_load_acquire(&live[i]->pos) == c)
                    return -EAGAIN;
            if (pp_load_acquire(&s->seq) == pos + 1) {
                t = s->val + 1;
                pp_store_release(&s->seq, pos + r->cap);
            }
        }
    }
    if (t != 0) {
        *ret_val = t - 1;
        ret = 1;
    }
    pp_store_relaxed(&claim->pos, 0);
    pp_store_relaxed(&claim->taken, 0);
    return ret;
}

/* ---------------------------------------------------------------------- */

size_t pp_spsc_bytes(uint64_t cap)
{
    return sizeof(struct pp_spsc) + cap * sizeof(uint64_t);
}

int pp_spsc_init(struct pp_spsc *r, uint64_t cap)
{
    if (cap < 2 || (cap & (cap - 1)) != 0)
        return -EINVAL;
    r->cap = cap;
    r->mask = cap - 1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    return 0;
}

bool pp_spsc_push(struct pp_spsc *r, uint64_t val)
{
    uint64_t t = pp_load_relaxed(&r->tail);
    /* S1: pairs with S4; the consumer is done with the slot we reuse. */
    uint64_t h = pp_load_acquire(&r->head);
    if (t - h >= r->cap)
        return false;
    r->vals[t & r->mask] = val;
    /* S2: publishes the value; pairs with S3. */
    pp_store_release(&r->tail, t + 1);
    return true;
}

unsigned pp_spsc_pop_burst(struct pp_spsc *r, uint64_t *vals, unsigned n)
{
    uint64_t h = pp_load_relaxed(&r->head);
    /* S3: pairs with S2. */
    uint64_t t = pp_load_acquire(&r->tail);
    unsigned k = 0;
    while (k < n && h + k != t) {
        vals[k] = r->vals[(h + k) & r->mask];
        k++;
    }
    if (k)
        pp_store_release(&r->head, h + k); /* S4: pairs with S1. */
    return k;
}
