/*
 * shared.h - the header of the shared segment.
 *
 * struct pp_shared sits at the start of the segment, mapped at the same
 * address in the host, the zygote and every worker; then come the submit
 * ring, one done ring and one return ring per consumer slot, the job
 * records and large results (page heap) and the jemalloc range (server.c
 * lays it out).  Everything here may be written by a worker: the host
 * keeps its own pointers elsewhere (host.h).
 */
#ifndef PP_ENGINE_SHARED_H
#define PP_ENGINE_SHARED_H

#include <limits.h>
#include <stdint.h>

#include "consumer.h"
#include "fnid.h"
#include "record.h"
#include "../shm/futex.h"
#include "../shm/bring.h"
#include "../shm/pages.h"
#include "../shm/ring.h"

#define PP_SUBMIT_RING_CAP (1u << 16)  /* jobs waiting in the ring; more
                                          wait in the server's overflow */
#define PP_DONE_RING_CAP (1u << 14)    /* per consumer, to the engine */
#define PP_RET_RING_CAP 256u           /* per consumer: result blocks the
                                          host freed, back to their writer */
#define PP_MSG_RING_CAP (128u << 10)   /* per consumer: bytes of messages
                                          (pp_job_send) to the engine */
#define PP_REC_CHUNK 1024u             /* records allocated together */
#define PP_REC_MAX_CHUNKS 4096u        /* 4M records in flight at most */

/* Consumer slots: the local workers', then one per remote node (net.c). */
#define PP_NODE_SLOT0 PP_MAX_WORKERS
#define PP_MAX_SLOTS (PP_MAX_WORKERS + PP_MAX_NODES)

/* A group's jobs are counted in two banks; a job goes to the bank of the
 * group's current wait epoch (group.c). */
#define PP_CI(g, epoch) (((g) << 1) | ((epoch) & 1u))
#define PP_CI_GROUP(ci) ((ci) >> 1)

struct pp_group {
    struct pp_event ev;          /* pp_wait sleeps here */
    _Atomic uint64_t engine_done[2]; /* jobs finished by the engine */
    _Atomic uint64_t wake_at[2]; /* a sleeping pp_wait wants a wake-up
                                    once this many jobs of the bank are
                                    done (0: on every job) */
    char name[PP_GROUP_NAME_MAX + 1];
};

/* Collectors' doorbells: a collector's reader (or a submitter at its
 * limit) sleeps on its bell; whoever finishes one of its jobs (a
 * consumer, the engine failing it) or queues its messages (the engine)
 * signals it.  Collectors share bells when there are more than
 * PP_NBELLS: that costs a spurious wake-up, never a lost one. */
#define PP_NBELLS 64u
struct pp_bell {
    pp_cacheline_aligned struct pp_event ev;
};

/* A local worker's slot: the consumer part, then what only a process of
 * this host has. */
struct pp_wcb {
    struct pp_consumer cons;
    pp_cacheline_aligned _Atomic uint32_t wake; /* its futex: sleeps here */
    _Atomic uint32_t stop;       /* host: exit before the next job */
    _Atomic int32_t pid;
    _Atomic int32_t cpu;         /* -1 = not pinned; read by wakers */
    uint32_t restart;
};

struct pp_shared {
    uint64_t magic;
    uint64_t seg_size;
    uint64_t ring_off;            /* struct pp_ring */
    uint64_t done_off;            /* PP_MAX_WORKERS struct pp_spsc */
    uint64_t done_stride;
    uint64_t ret_off;             /* PP_MAX_WORKERS struct pp_ring */
    uint64_t ret_stride;
    uint64_t msg_off;             /* PP_MAX_SLOTS struct pp_bring */
    uint64_t msg_stride;
    int engine_efd;               /* eventfd: wakes the engine thread */
    uint32_t busy_poll;
    uint64_t spin_ns;
    uint32_t max_queued_set;
    /* Who waits for work (wake.c), one bit per worker slot: bits, not
     * counts, so that a post-mortem can clear a dead worker's bit without
     * knowing whether it got to set it. */
    pp_cacheline_aligned _Atomic uint64_t spinning[PP_MAX_WORKERS / 64];
    pp_cacheline_aligned _Atomic uint64_t sleeping[PP_MAX_WORKERS / 64];
    _Atomic uint64_t live[PP_MAX_WORKERS / 64]; /* set by the engine */
    _Atomic uint32_t deferred;    /* a job waits for a busy worker (wake.c) */
    _Atomic uint32_t has_nodes;   /* set once, when the first node is configured */
    pp_cacheline_aligned struct pp_event space; /* blocked submitters */
    pp_cacheline_aligned _Atomic uint32_t engine_sleeping;
    _Atomic uint32_t overflow_waiting; /* 1 = jobs wait in overflow,
                                          2 = the engine was woken */
    pp_cacheline_aligned struct pp_pages pages;
    _Atomic uint32_t slots_used;  /* worker slots ever used (a bound) */
    _Atomic uint32_t nodes_used;  /* node slots ever used, from PP_NODE_SLOT0 */
    pp_cacheline_aligned _Atomic uint32_t nmodules;
    _Atomic uint32_t nfns;
    /* Where each chunk of records is: a token's index names a record in
     * every process (written before the chunk's records are handed out). */
    uint64_t rec_chunk_off[PP_REC_MAX_CHUNKS];
    _Atomic uint32_t nrecs;       /* records that exist (chunks * PP_REC_CHUNK) */
    struct pp_module modules[PP_MAX_MODULES];
    struct pp_fn_entry fns[PP_MAX_FUNCTIONS];
    struct pp_group groups[PP_MAX_GROUPS];
    struct pp_bell bells[PP_NBELLS];
    struct pp_wcb wcb[PP_MAX_SLOTS];
};

#define PP_MAGIC 0x70702d7365676d32ull /* "pp-segm2" */

static inline struct pp_rec *pp__rec_of(struct pp_shared *sh, uint32_t idx)
{
    return (struct pp_rec *)((char *)sh + sh->rec_chunk_off[idx / PP_REC_CHUNK]) +
           idx % PP_REC_CHUNK;
}

/* B1: whoever moves a collector's job to DONE (its consumer, the engine
 * failing it) rings the bell its record names, after DONE; pairs with the
 * waiter's pp_event_prepare before it looks at its jobs (collect.c).
 * bell is read before DONE: from then on the record may be reused. */
static inline void pp__bell_ring(struct pp_shared *sh, unsigned bell)
{
    pp_event_signal(&sh->bells[bell % PP_NBELLS].ev, INT_MAX);
}

static inline struct pp_consumer *pp__cons_at(struct pp_shared *sh, uint32_t slot)
{
    return &sh->wcb[slot].cons;
}

static inline struct pp_spsc *pp__done_ring(struct pp_shared *sh, uint32_t slot)
{
    return (struct pp_spsc *)((char *)sh + sh->done_off + (uint64_t)slot * sh->done_stride);
}

/* Result blocks go back to the consumer that allocated them: the host
 * enqueues (class << 48 | offset) on its return ring, and it reuses the
 * block for its next result of the same class, so neither side takes the
 * page heap's lock on the common path. */
static inline struct pp_ring *pp__ret_ring(struct pp_shared *sh, uint32_t slot)
{
    return (struct pp_ring *)((char *)sh + sh->ret_off + (uint64_t)slot * sh->ret_stride);
}

/* A consumer's messages to the engine (pp_job_send; channel.c). */
static inline struct pp_bring *pp__msg_ring(struct pp_shared *sh, uint32_t slot)
{
    return (struct pp_bring *)((char *)sh + sh->msg_off + (uint64_t)slot * sh->msg_stride);
}

/* Iterating over every consumer slot ever used: workers [0, slots_used),
 * then nodes [PP_NODE_SLOT0, PP_NODE_SLOT0 + nodes_used).  Acquire: pairs
 * with the release that raised either bound. */
static inline uint32_t pp__slot_skip(struct pp_shared *sh, uint32_t i)
{
    if (i < PP_NODE_SLOT0 && i >= pp_load_acquire(&sh->slots_used))
        i = PP_NODE_SLOT0;
    if (i >= PP_NODE_SLOT0 && i >= PP_NODE_SLOT0 + pp_load_acquire(&sh->nodes_used))
        i = PP_MAX_SLOTS;
    return i;
}
#define PP_FOR_EACH_SLOT(sh, w) \
    for (uint32_t w = pp__slot_skip((sh), 0); w < PP_MAX_SLOTS; w = pp__slot_skip((sh), w + 1))

/* Jobs of counter index ci finished so far: the engine's count plus one
 * count per consumer slot.  Every load is an acquire, pairing with the
 * release increments (consumer.c, group.c). */
static inline uint64_t pp__done_sum(struct pp_shared *sh, uint32_t ci)
{
    uint64_t done = pp_load_acquire(&sh->groups[ci >> 1].engine_done[ci & 1]);
    PP_FOR_EACH_SLOT(sh, w)
        done += pp_load_acquire(&pp__cons_at(sh, w)->group_done[ci]);
    return done;
}

/*
 * After a job of counter index ci finished (its count already raised):
 * wakes a sleeping pp_wait when the bank may be complete.  The fence pairs
 * with the waiter's pp_event_prepare (futex.h); with it, of two consumers
 * that finish the last two jobs at once, at least one sees both counts.
 * With many slots the sum costs more than a spurious wake-up: just wake.
 */
static inline void pp__group_signal(struct pp_shared *sh, uint32_t ci)
{
    struct pp_group *g = &sh->groups[ci >> 1];

    pp_fence_seq_cst();
    /* Acquire: pairs with the waiter's increment of sleepers, so wake_at,
     * stored before it, is current (a stale one is lower: only a spurious
     * wake-up). */
    if (pp_likely(atomic_load_explicit(&g->ev.sleepers, memory_order_acquire) == 0))
        return;
    uint64_t at = pp_load_acquire(&g->wake_at[ci & 1]);
    if (at && pp_load_relaxed(&sh->slots_used) <= 32 && pp__done_sum(sh, ci) < at)
        return;
    atomic_fetch_add_explicit(&g->ev.seq, 1, memory_order_seq_cst);
    pp_futex_wake(&g->ev.seq, INT_MAX);
}

/* ---- wake.c: who is woken when work arrives ---- */

/* A worker spins for work (enter) or stops spinning (leave; returns true
 * when no worker spins any more). */
PP_HIDDEN void pp__spin_enter(struct pp_shared *sh, uint32_t slot);
PP_HIDDEN bool pp__spin_leave(struct pp_shared *sh, uint32_t slot);
/* A worker sleeps until woken, unless take() finds work after it
 * announced itself (returns that record then). */
PP_HIDDEN struct pp_rec *pp__sleep(struct pp_cons *k, uint64_t *tok);
/* n jobs were queued by a thread on CPU cpu (-1: unknown). */
PP_HIDDEN bool pp__wake_for_jobs(struct pp_shared *sh, unsigned n, int cpu);
/* A worker took a job that a submitter may have left to it: if more wait
 * and someone sleeps, wake one (not on CPU cpu, that job's submitter's). */
PP_HIDDEN void pp__pass_duty(struct pp_shared *sh, struct pp_ring *ring, int cpu);
/* Wakes up to n sleeping workers, wherever they are (the host is about
 * to block, or a worker went away). */
PP_HIDDEN void pp__wake_any(struct pp_shared *sh, unsigned n);
/* Wakes the worker of slot (to see its stop flag). */
PP_HIDDEN void pp__wake_slot(struct pp_shared *sh, uint32_t slot);
/* The engine marks a slot live before it spawns and not live after the
 * post-mortem. */
PP_HIDDEN void pp__set_live(struct pp_shared *sh, uint32_t slot, bool live);

/* Local workers waiting for work now (a snapshot). */
static inline unsigned pp__idle_workers(struct pp_shared *sh)
{
    unsigned n = 0, used = pp_load_relaxed(&sh->slots_used);
    for (unsigned i = 0; i < used; i++)
        n += pp_load_relaxed(&sh->wcb[i].cons.idle);
    return n;
}

/*
 * Adaptive spinning.  A waiter spins for its current budget before it
 * sleeps.  When spinning paid off the budget doubles (up to the
 * configured spin time); when it did not, it halves, down to a floor.
 * Waits that always end in sleep (long jobs) thus stop burning the CPU
 * the workers need, while short round trips keep spinning.
 */
#define PP_SPIN_FLOOR_NS 2000 /* never less: a hand-off is ~0.3 us, a
                                 futex wake-up 5-15 us */
/* A sched_yield that returns after this long ran another thread: the CPU
 * is shared, and spinning there slows that thread down. */
#define PP_YIELD_SHARED_NS 3000
/* How long a deferred job waits at most for a worker (wake.c). */
#define PP_DEFER_MS 16

static inline uint64_t pp__spin_adapt(uint64_t cur, bool paid_off, uint64_t max)
{
    cur = paid_off ? cur * 2 : cur / 2;
    if (cur < PP_SPIN_FLOOR_NS)
        cur = PP_SPIN_FLOOR_NS;
    return cur > max ? max : cur;
}

static inline uint64_t pp__ticks(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return pp_now_ns();
#endif
}

#endif /* PP_ENGINE_SHARED_H */
