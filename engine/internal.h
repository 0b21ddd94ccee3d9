/*
 * internal.h - the engine's private structures.
 *
 * Two kinds of memory:
 *   - the shared segment (struct pp_shared at its start, then rings, job
 *     records, the jemalloc range and the page heap), mapped at the same
 *     address in the host, the zygote and every worker;
 *   - host-private state (struct pp_server), which workers never read
 *     after they were forked.
 *
 * A job record (struct pp_rec) is the job slot: the submitter writes the
 * function id and the argument into it (inline up to PP_INLINE_MAX bytes),
 * the submit ring carries its offset to a worker, the worker writes the
 * result into it (inline, or a block of the page heap) and flips its
 * state; the submitter's pp_task * is the record itself.
 */
#ifndef PP_ENGINE_INTERNAL_H
#define PP_ENGINE_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pp.h"
#include "../shm/arena.h"
#include "../shm/atomic.h"
#include "../shm/futex.h"
#include "../shm/pages.h"
#include "../shm/ring.h"
#include "../shm/segment.h"

#define PP_HIDDEN __attribute__((visibility("hidden")))

/* ---------------------------------------------------------------- */
/* Sizes                                                              */
/* ---------------------------------------------------------------- */

#define PP_SUBMIT_RING_CAP (1u << 16)  /* jobs waiting in the ring; more
                                          wait in the server's overflow */
#define PP_DONE_RING_CAP (1u << 14)    /* per worker, to the engine */
#define PP_RET_RING_CAP 256u           /* per worker: result blocks the
                                          host freed, back to their worker */
#define PP_BLOCK_STASH 8u              /* a worker's cached blocks per class */
#define PP_REC_CHUNK 1024u             /* records allocated together */
#define PP_REC_MAX_CHUNKS 4096u        /* 4M records in flight at most */
#define PP_MAX_MODULES 256u
#define PP_SYMBOL_MAX 128u
#define PP_DEFAULT_SHM (64ull << 30)

/* ---------------------------------------------------------------- */
/* Job record                                                         */
/* ---------------------------------------------------------------- */

/* rec->state: a phase in the low byte plus flag bits. */
enum {
    PP_ST_FREE = 0,     /* in the record pool */
    PP_ST_QUEUED = 1,   /* submitted, maybe running */
    PP_ST_EXECUTED = 2, /* ran; the engine still has to finish it */
    PP_ST_DONE = 3,     /* result final; waiters may read it */
    PP_ST_PHASE = 0xff,
    PP_ST_WAITER = 1u << 8,  /* someone sleeps on the futex: wake on DONE */
    PP_ST_ORPHAN = 1u << 9,  /* released by the user before DONE */
};

/* Arguments and results of at most PP_TINY bytes travel in the record's
 * first cache line (see struct pp_rec). */
#define PP_TINY 8u
enum { PP_RES_TINY, PP_RES_INLINE, PP_RES_BLOCK }; /* rec->res_where */

/* rec->flags */
enum {
    PP_RF_ENGINE = 1u << 0,   /* finished by the engine: callback and/or
                                 server-owned (auto release) */
    PP_RF_AUTO = 1u << 1,     /* server-owned: free after the callback */
    PP_RF_ARG_ARENA = 1u << 2,/* argument block from the arena: free it */
    PP_RF_ARG_EXT = 1u << 4,  /* argument at arg_off (arena copy, or the
                                 caller's pp_shm_alloc block in place) */
    PP_RF_MAP = 1u << 3,      /* a pp_map chunk */
};

struct pp_rec {
    /* Line 0: everything a tiny job needs (an argument and a result of at
     * most PP_TINY bytes live here too), so such a job moves this one line
     * to the worker and back, besides the ring slot. */
    _Atomic uint32_t state;
    uint32_t flags;
    uint32_t fn_id;
    uint32_t group;      /* counter index: PP_CI(group, bank) */
    uint32_t seq;        /* bumped at each reuse (crash attribution) */
    uint32_t arg_len;    /* <= PP_MAX_PAYLOAD */
    uint32_t res_len;
    int32_t status;
    uint32_t err_len;    /* 0 = no message */
    uint32_t res_where;  /* PP_RES_TINY / PP_RES_INLINE / PP_RES_BLOCK */
    unsigned char tiny_arg[PP_TINY];
    unsigned char tiny_res[PP_TINY];
    /* Line 1: where larger payloads are, and the host's own fields (workers
     * never touch those). */
    pp_cacheline_aligned uint64_t arg_off; /* with PP_RF_ARG_EXT */
    uint64_t res_off;    /* the page-heap block of a PP_RES_BLOCK result */
    uint32_t res_slot;   /* worker slot that allocated it (to return it) */
    struct pp_server *srv;
    void (*cb)(pp_task *, void *);
    void *cb_arg;
    struct pp_rec *next;     /* overflow queue link */
    uint32_t idx;            /* in the record pool */
    _Atomic uint32_t next_free;
    /* Then the inline result and argument, and the error message. */
    pp_cacheline_aligned unsigned char inl_res[PP_INLINE_MAX];
    pp_cacheline_aligned unsigned char inl_arg[PP_INLINE_MAX];
    char err[PP_ERRMSG_MAX];
};

/* ---------------------------------------------------------------- */
/* Shared segment header                                              */
/* ---------------------------------------------------------------- */

struct pp_module {
    char path[PATH_MAX];     /* "" until filled */
    unsigned char build_id[32];
    uint32_t build_id_len;
    uint32_t is_main;        /* the main program (found by its l_name "") */
};

struct pp_fn_entry {
    uint32_t module;
    uint32_t pad;
    uint64_t offset;         /* from the module's load bias (l_addr) */
    char symbol[PP_SYMBOL_MAX]; /* "" when dladdr found none */
};

/* A group's jobs are counted in two banks; a job goes to the bank of the
 * group's current wait epoch (group.c).  Counter index = group * 2 + bank. */
#define PP_CI(g, epoch) (((g) << 1) | ((epoch) & 1u))
#define PP_CI_GROUP(ci) ((ci) >> 1)
#define PP_NCI (PP_MAX_GROUPS * 2)

struct pp_group {
    struct pp_event ev;          /* pp_wait sleeps here */
    _Atomic uint64_t engine_done[2]; /* jobs finished by the engine */
    _Atomic uint64_t wake_at[2]; /* a sleeping pp_wait wants a wake-up
                                    once this many jobs of the bank are
                                    done (0: on every job) */
    char name[PP_GROUP_NAME_MAX + 1];
};

struct pp_wcb {                  /* worker control block, one per slot */
    struct pp_ring_claim claim;  /* what it took from the submit ring */
    struct pp_ring_claim ret_claim; /* ... and from its return ring */
    _Atomic uint64_t started;    /* offset of the record whose function
                                    runs now (0 = none) */
    _Atomic uint64_t held_seq;   /* that record's seq */
    _Atomic uint32_t stop;       /* host: exit before the next job */
    _Atomic int32_t pid;
    int32_t cpu;                 /* -1 = not pinned */
    uint32_t restart;
    pp_cacheline_aligned _Atomic uint64_t njobs;
    _Atomic uint64_t busy_ticks;
    pp_cacheline_aligned _Atomic uint64_t group_done[PP_NCI];
};

struct pp_shared {
    uint64_t magic;
    uint64_t seg_size;
    uint64_t ring_off;            /* struct pp_ring */
    uint64_t done_off;            /* PP_MAX_WORKERS struct pp_spsc */
    uint64_t done_stride;
    uint64_t ret_off;             /* PP_MAX_WORKERS struct pp_ring */
    uint64_t ret_stride;
    int engine_efd;               /* eventfd: wakes the engine thread */
    uint32_t busy_poll;
    uint64_t spin_ns;
    uint32_t max_queued_set;
    pp_cacheline_aligned struct pp_event work;  /* workers sleep here */
    pp_cacheline_aligned struct pp_event space; /* blocked submitters */
    pp_cacheline_aligned _Atomic uint32_t engine_sleeping;
    _Atomic uint32_t overflow_waiting; /* 1 = jobs wait in overflow,
                                          2 = the engine was woken */
    pp_cacheline_aligned struct pp_pages pages;
    _Atomic uint32_t slots_used;  /* worker slots ever used (a bound) */
    pp_cacheline_aligned _Atomic uint32_t nmodules;
    _Atomic uint32_t nfns;
    struct pp_module modules[PP_MAX_MODULES];
    struct pp_fn_entry fns[PP_MAX_FUNCTIONS];
    struct pp_group groups[PP_MAX_GROUPS];
    struct pp_wcb wcb[PP_MAX_WORKERS];
};

#define PP_MAGIC 0x70702d7365676d31ull /* "pp-segm1" */

/* Jobs of counter index ci finished so far: the engine's count plus one
 * count per worker slot.  Every load is an acquire, pairing with the
 * release increments (worker.c complete(), group.c). */
static inline uint64_t pp__done_sum(struct pp_shared *sh, uint32_t ci)
{
    uint64_t done = pp_load_acquire(&sh->groups[ci >> 1].engine_done[ci & 1]);
    uint32_t n = pp_load_acquire(&sh->slots_used);
    for (uint32_t w = 0; w < n; w++)
        done += pp_load_acquire(&sh->wcb[w].group_done[ci]);
    return done;
}

/*
 * After a job of counter index ci finished (its count already raised):
 * wakes a sleeping pp_wait when the bank may be complete.  The fence pairs
 * with the waiter's pp_event_prepare (futex.h); with it, of two workers
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

/* ---------------------------------------------------------------- */
/* Host-private server                                                */
/* ---------------------------------------------------------------- */

enum { PP_SLOT_EMPTY, PP_SLOT_SPAWNING, PP_SLOT_LIVE, PP_SLOT_STOPPING };

struct pp_slot {                 /* the engine's view of a worker slot */
    int state;
    pid_t pid;
    bool repair_pending;         /* dead; its claim is not repaired yet */
    int wstatus;
};

struct pp_fn_hash_ent {
    _Atomic(void *) fn;
    uint32_t id;
};
#define PP_FN_HASH 8192u         /* power of two, > 2 * PP_MAX_FUNCTIONS */

struct pp_server {
    struct pp_config cfg;
    pid_t owner;                 /* the process that created it */
    struct pp_segment seg;
    struct pp_shared *sh;
    struct pp_ring *ring;
    struct pp_arena *arena;
    uint64_t heap_start;         /* the page heap */
    uint64_t created_ns;
    uint64_t tsc0, ns0;          /* for converting worker busy ticks */

    /* Functions: pointer -> id, lock-free lookups, inserts locked. */
    pthread_mutex_t fn_lock;
    struct pp_fn_hash_ent fn_hash[PP_FN_HASH];
    void *module_maps[PP_MAX_MODULES]; /* link_map of each module */

    /* Groups: name -> index; submitted counts (host only). */
    pthread_mutex_t group_lock;
    _Atomic uint32_t ngroups;
    _Atomic uint64_t submitted[PP_NCI];
    _Atomic uint32_t epoch[PP_MAX_GROUPS];
    pthread_mutex_t wait_lock[PP_MAX_GROUPS]; /* one pp_wait per group */

    /* Record pool: Treiber stack of free indices (tag in the high half). */
    _Atomic uint64_t free_head;
    pthread_mutex_t pool_lock;   /* growing only */
    _Atomic uint32_t nchunks;
    struct pp_rec *chunks[PP_REC_MAX_CHUNKS];

    /* Jobs that found the ring full wait here, FIFO. */
    pthread_mutex_t ovf_lock;
    struct pp_rec *ovf_head, *ovf_tail;
    _Atomic uint64_t ovf_len;

    /* Engine thread, zygote, workers. */
    pthread_t engine;
    bool engine_started;
    int zsock;                   /* our end of the zygote socket */
    pid_t zygote;
    pthread_mutex_t ctl_lock;    /* target below, slot table */
    _Atomic int target;          /* wanted local workers */
    struct pp_slot slots[PP_MAX_WORKERS];
    _Atomic uint32_t shutdown;   /* 1: no submissions; engine stops */
    _Atomic uint32_t ctl_dirty;  /* the engine must re-read target */
    pthread_cond_t ctl_cond;     /* engine ready; pool changed */
    int engine_ready;            /* 0 = starting, 1 = up, < 0 = -errno */
    int spawn_errno;             /* last failed spawn (ctl_lock) */
    int nlive;                   /* live workers (ctl_lock) */
    bool zygote_lost;            /* engine: its socket hung up */
    bool spawn_blocked;          /* engine: a fork failed; wait for a change */
    _Atomic uint32_t zygote_failed; /* a replacement zygote could not start */
    int cpus_allowed[PP_MAX_WORKERS];
    int ncpus_allowed;
    _Atomic uint64_t spin_ns;    /* host waiters' adaptive budget */
    _Atomic uint64_t deaths;
    _Atomic uint64_t started_workers;
};

/* ---------------------------------------------------------------- */
/* Worker-side job                                                    */
/* ---------------------------------------------------------------- */

struct pp_worker;

struct pp_job {
    struct pp_worker *w;
    struct pp_rec *rec;
    const void *arg;
    size_t arg_len;
    void *res;               /* where the result is */
    size_t res_len;
    uint64_t res_block;      /* page-heap block holding it, 0 = none */
    size_t res_block_len;
    unsigned char *map_slot; /* map item: its output slot, else NULL */
    size_t map_cap;
    int fail_code;           /* 0 = not failed via pp_job_fail */
    int alloc_err;           /* a result request that failed */
    char *err;               /* where pp_job_fail writes */
    uint32_t *err_len;
};

/* ---------------------------------------------------------------- */
/* Cross-file internal functions (pp__ prefix, hidden)               */
/* ---------------------------------------------------------------- */

static inline struct pp_rec *pp__rec_at(const struct pp_server *s, uint64_t off)
{
    return (struct pp_rec *)(s->seg.base + off);
}

/* fncache.c */
PP_HIDDEN int pp__fn_id(struct pp_server *s, pp_fn *fn, uint32_t *ret_id);
PP_HIDDEN pp_fn *pp__fn_resolve(struct pp_shared *sh, uint32_t id,
                                char *err, size_t errlen);

/* group.c */
PP_HIDDEN int pp__group_index(struct pp_server *s, const char *name,
                              bool create, uint32_t *ret);
PP_HIDDEN uint64_t pp__group_pending(struct pp_server *s, uint32_t g);
PP_HIDDEN void pp__group_engine_done(struct pp_server *s, uint32_t g);

/* pool.c */
PP_HIDDEN struct pp_rec *pp__rec_alloc(struct pp_server *s);
PP_HIDDEN void pp__rec_free(struct pp_server *s, struct pp_rec *r);

/* task.c */
PP_HIDDEN int pp__submit_id(struct pp_server *s, uint32_t fn_id, uint32_t g,
                            const void *arg, size_t len, uint32_t extra_flags,
                            void (*cb)(pp_task *, void *), void *cb_arg,
                            pp_task **ret);
PP_HIDDEN void pp__enqueue(struct pp_server *s, struct pp_rec *r);
PP_HIDDEN void pp__overflow_drain(struct pp_server *s);
PP_HIDDEN void pp__finish_by_engine(struct pp_server *s, struct pp_rec *r);
PP_HIDDEN void pp__fail_rec(struct pp_server *s, struct pp_rec *r, int code,
                            const char *msg);

/* engine.c */
PP_HIDDEN int pp__engine_start(struct pp_server *s);
PP_HIDDEN void pp__engine_stop(struct pp_server *s);
PP_HIDDEN void pp__engine_kick(struct pp_server *s);
PP_HIDDEN bool pp__in_engine(struct pp_server *s);

/* zygote.c */
PP_HIDDEN int pp__zygote_start(struct pp_server *s);
PP_HIDDEN int pp__zygote_spawn(struct pp_server *s, int slot, int cpu);
PP_HIDDEN void pp__zygote_shutdown(struct pp_server *s);

/* zygote <-> engine messages */
enum { PP_Z_SPAWN = 1, PP_Z_SHUTDOWN, PP_Z_SPAWNED, PP_Z_SPAWN_FAILED, PP_Z_EXITED };
struct pp_zmsg {
    int32_t type;
    int32_t slot;
    int32_t pid;
    int32_t status;   /* wait status, or errno for SPAWN_FAILED */
    int32_t cpu;
};

/* worker.c */
PP_HIDDEN void pp__worker_main(struct pp_shared *sh, char *base, int slot)
    __attribute__((noreturn));

/*
 * Adaptive spinning.  A waiter spins for its current budget before it
 * sleeps.  When spinning paid off the budget doubles (up to the
 * configured spin time); when it did not, it halves, down to a floor.
 * Waits that always end in sleep (long jobs) thus stop burning the CPU
 * the workers need, while short round trips keep spinning.
 */
#define PP_SPIN_FLOOR_NS 2000 /* never less: a hand-off is ~0.3 us, a
                                 futex wake-up 5-15 us */
static inline uint64_t pp__spin_adapt(uint64_t cur, bool paid_off, uint64_t max)
{
    cur = paid_off ? cur * 2 : cur / 2;
    if (cur < PP_SPIN_FLOOR_NS)
        cur = PP_SPIN_FLOOR_NS;
    return cur > max ? max : cur;
}

/*
 * Result blocks go back to the worker that allocated them: the host
 * enqueues (class << 48 | offset) on that worker's return ring, and the
 * worker reuses the block for its next result of the same class, so
 * neither side takes the page heap's lock on the common path.
 */
static inline struct pp_ring *pp__ret_ring(struct pp_shared *sh, char *base, uint32_t slot)
{
    return (struct pp_ring *)(base + sh->ret_off + (uint64_t)slot * sh->ret_stride);
}
#define PP_RET_ENC(cls, off) (((uint64_t)(cls) << 48) | (off))
#define PP_RET_CLASS(v) ((unsigned)((v) >> 48))
#define PP_RET_OFF(v) ((v) & ((1ull << 48) - 1))
PP_HIDDEN void pp__result_block_free(struct pp_server *s, struct pp_rec *r);

/* time */
static inline uint64_t pp__ticks(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return pp_now_ns();
#endif
}

#endif /* PP_ENGINE_INTERNAL_H */
