/*
 * host.h - the host-private side: the server and its tasks.
 *
 * Workers never read this memory after they were forked (they have a
 * stale copy-on-write view at most), so nothing a job does can change
 * what the host calls or where it links.
 */
#ifndef PP_ENGINE_HOST_H
#define PP_ENGINE_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pp.h"
#include "shared.h"
#include "../shm/arena.h"
#include "../shm/segment.h"

#define PP_DEFAULT_SHM (64ull << 30)

/*
 * The submitter's handle (pp_task *) and the host's half of a record:
 * parallel to the records, chunk by chunk, at the same index.
 */
struct pp_task {
    struct pp_rec *rec;          /* its record in the segment */
    struct pp_server *srv;
    void (*cb)(pp_task *, void *);
    void *cb_arg;
    void *_Atomic coll;          /* a collector's job: its struct cjob
                                    (collect.c), else NULL */
    struct pp_task *next;        /* overflow queue link */
    _Atomic uint32_t next_free;  /* free list link (pool.c) */
    uint32_t idx;
    uint64_t tok;                /* the token it was queued with */
    uint32_t node_fails;         /* nodes that died running it (net.c) */
    uint64_t node_mask;          /* which (node id < 64) */
};

enum { PP_SLOT_EMPTY, PP_SLOT_SPAWNING, PP_SLOT_LIVE, PP_SLOT_STOPPING };

struct pp_slot {                 /* the engine's view of a worker slot */
    int state;
    pid_t pid;
    bool repair_pending;         /* dead; its post-mortem is not done yet */
    int wstatus;
    uint64_t last_msg_blk;       /* the last message block drained from it
                                    (engine thread; pp__cons_repair) */
    /* Its message ring is left as it is (engine thread): the next entry
     * is for a collector over its bound, as of coll_gen = paused_gen. */
    bool msg_paused;
    uint32_t paused_gen;
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

    /* Records and tasks: Treiber stack of free indices (tag in the high
     * half), chunks of records in the segment, tasks beside them here. */
    _Atomic uint64_t free_head;
    pthread_mutex_t pool_lock;   /* growing only */
    _Atomic uint32_t nchunks;
    struct pp_rec *chunks[PP_REC_MAX_CHUNKS];
    struct pp_task *tchunks[PP_REC_MAX_CHUNKS];

    /* Jobs that found the ring full wait here, FIFO. */
    pthread_mutex_t ovf_lock;
    struct pp_task *ovf_head, *ovf_tail;
    _Atomic uint64_t ovf_len;
    /* max_queued: jobs admitted and not yet taken by a consumer. */
    _Atomic uint64_t admitted;

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
    /* The engine holds it while it hands messages to collectors, and
     * pp_collector_destroy takes it to free its jobs, which tasks may
     * still name (t->coll; collect.c). */
    pthread_mutex_t coll_lock;
    /* Raised (and the engine kicked) when a collector the engine paused
     * for may take messages again: paused slots are tried once more. */
    _Atomic uint32_t coll_gen;
    /* Remote nodes (net.c), NULL if none.  Atomic: pp_connect may create
     * it while other threads submit (they only test it for NULL). */
    struct pp_net *_Atomic net;
};

static inline struct pp_task *pp__task_of(struct pp_server *s, uint32_t idx)
{
    return &s->tchunks[idx / PP_REC_CHUNK][idx % PP_REC_CHUNK];
}

/* ---- fncache.c ---- */
PP_HIDDEN int pp__fn_id(struct pp_server *s, pp_fn *fn, uint32_t *ret_id);
PP_HIDDEN pp_fn *pp__fn_resolve(struct pp_shared *sh, uint32_t id, char *err,
                                size_t errlen);

/* ---- template.c: what a collector takes from a template ---- */
PP_HIDDEN void pp__template_ids(const pp_template *t, struct pp_server **srv, uint32_t *fn_id,
                                uint32_t *group);

/* ---- group.c ---- */
PP_HIDDEN int pp__group_index(struct pp_server *s, const char *name, bool create,
                              uint32_t *ret);
PP_HIDDEN uint64_t pp__group_pending(struct pp_server *s, uint32_t ci);
PP_HIDDEN void pp__group_engine_done(struct pp_server *s, uint32_t ci);

/* ---- pool.c ---- */
PP_HIDDEN struct pp_task *pp__task_alloc(struct pp_server *s);
PP_HIDDEN void pp__task_free(struct pp_server *s, struct pp_task *t);
PP_HIDDEN void pp__pool_fini(struct pp_server *s);

/* ---- payload.c: where arguments and results live ---- */
PP_HIDDEN int pp__arg_put(struct pp_server *s, struct pp_rec *r, const void *arg,
                          size_t len);
PP_HIDDEN void pp__arg_free(struct pp_server *s, struct pp_rec *r);
PP_HIDDEN const void *pp__res_data(struct pp_server *s, const struct pp_rec *r);
PP_HIDDEN void pp__res_free(struct pp_server *s, struct pp_rec *r);
/* A page-heap block a consumer wrote (a result, a message) goes back to
 * it through its return ring, or to the heap. */
PP_HIDDEN void pp__block_free(struct pp_server *s, uint32_t slot, uint64_t off, size_t len);

/* ---- collect.c: collectors, the engine's side ---- */
/* Moves the messages in slot's message ring to their collectors; a
 * collector over its bound stops it there (unless force: the slot's
 * worker is dead and what it sent is wanted now). */
PP_HIDDEN void pp__coll_drain(struct pp_server *s, uint32_t slot, bool force);
/* True when some message ring that is not paused has messages. */
PP_HIDDEN bool pp__coll_pending(struct pp_server *s);
/* pp__submit_id, for a collector's job (its struct cjob) just before it
 * is queued: binds task t to it; returns the collector's doorbell. */
PP_HIDDEN unsigned pp__coll_bind(void *cjob, struct pp_task *t);
/* Engine: a collector's job t is being failed (its consumer died, the
 * server is going away): its record's nmsgs becomes what was drained of
 * it, so that its reader does not wait for more. */
PP_HIDDEN void pp__coll_failing(struct pp_task *t);

/* ---- task.c ---- */
/* extra_flags PP_RF_COLLECT: cb must be NULL and cb_arg is the job's
 * struct cjob (collect.c). */
PP_HIDDEN int pp__submit_id(struct pp_server *s, uint32_t fn_id, uint32_t g,
                            const void *arg, size_t len, uint32_t extra_flags,
                            void (*cb)(pp_task *, void *), void *cb_arg,
                            pp_task **ret);
/* Queues a task submitted from CPU cpu (wake.c), or requeues one. */
PP_HIDDEN void pp__enqueue(struct pp_server *s, struct pp_task *t, int cpu);
PP_HIDDEN void pp__overflow_drain(struct pp_server *s);
PP_HIDDEN void pp__finish_by_engine(struct pp_server *s, struct pp_task *t);
PP_HIDDEN void pp__fail_task(struct pp_server *s, struct pp_task *t, int code,
                             const char *msg);
PP_HIDDEN void pp__taken(struct pp_shared *sh);
/* A host thread is about to sleep: queued jobs may use its CPU. */
PP_HIDDEN void pp__before_block(struct pp_server *s);

/* ---- net.c: remote nodes ---- */
PP_HIDDEN int pp__net_init(struct pp_server *s);
PP_HIDDEN void pp__net_kick(struct pp_server *s);
PP_HIDDEN void pp__net_stop(struct pp_server *s);
PP_HIDDEN void pp__net_free(struct pp_server *s, bool forked);
PP_HIDDEN void pp__net_stats(struct pp_server *s, struct pp_stats *st);
/* Blocks every signal in the calling thread (threads of the library). */
PP_HIDDEN void pp__block_signals(void);

/* ---- engine.c ---- */
PP_HIDDEN int pp__engine_start(struct pp_server *s);
PP_HIDDEN void pp__engine_stop(struct pp_server *s);
PP_HIDDEN void pp__engine_kick(struct pp_server *s);
PP_HIDDEN bool pp__in_engine(struct pp_server *s);
PP_HIDDEN void pp__handle_done(struct pp_server *s, uint64_t tok);
/* Handles every token in a consumer's done ring; returns how many. */
PP_HIDDEN unsigned pp__drain_slot(struct pp_server *s, int slot);

/* ---- consumer.c, the engine's side: a dead consumer's post-mortem ---- */
/* Settles what the dead consumer of slot held (see consumer.h).  death is
 * the message a job it was running fails with.  Returns false when a live
 * consumer is mid-dequeue on the same ring position: call again. */
PP_HIDDEN bool pp__cons_repair(struct pp_server *s, uint32_t slot, const char *death);
/* Clears a slot's consumer state before a new consumer uses it. */
PP_HIDDEN void pp__cons_reset(struct pp_server *s, uint32_t slot);

/* ---- map.c (worker side) ---- */
struct pp_worker;
PP_HIDDEN int pp__map_run(struct pp_worker *w, struct pp_rec *rec, pp_fn *fn);
/* A map chunk for a remote node (net.c): its items' input and output
 * space in the host's segment, and its result once the node answered. */
struct pp_map_view {
    const void *in;          /* count * in_size bytes */
    void *out;               /* count * out_size bytes */
    uint64_t in_size, out_size, first, count;
};
PP_HIDDEN void pp__map_view(struct pp_server *s, const struct pp_rec *rec,
                            struct pp_map_view *v);
PP_HIDDEN void pp__map_settle(struct pp_rec *rec, int status, uint64_t fail_index);

#endif /* PP_ENGINE_HOST_H */
