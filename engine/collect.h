/*
 * collect.h - a collector's insides, for the sources that feed it:
 * the engine (jobs on workers: collect.c), created processes (create.c)
 * and background sockets (background.c).
 *
 * Every source does the same three things, under the collector's lock
 * (these functions take it): reserve a job (its index; blocks at the
 * limit), add its messages, add its last message.  The reader side
 * (pp_collector_next) never knows where a message came from.
 */
#ifndef PP_ENGINE_COLLECT_H
#define PP_ENGINE_COLLECT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "pp.h"

struct pp_server;

/* Where an item's bytes are.  IT_DATA and IT_BLOCK are also the kinds
 * of the consumers' message-ring entries (consumer.h: PP_MSG_*). */
enum {
    IT_DATA = 0,   /* copied into the queue (at most IT_DATA_MAX bytes) */
    IT_BLOCK = 1,  /* a page-heap block of the segment (ref = offset; slot) */
    IT_HEAP = 2,   /* a malloc block of their own (ref = pointer) */
    IT_TASK = 3,   /* the result of the item's task */
    IT_NOTHING = 4, /* no bytes, nothing shown: a job's end without a result */
    IT_RUN = 5      /* IT_DATA messages of one worker job that follow it in
                       the chunk (len: how many, ref: their bytes; collect.c) */
};
#define IT_DATA_MAX 4096u
enum { IT_F_FINAL = 1u, IT_F_FAIL = 2u }; /* item.flags */

struct item {
    uint32_t len;
    uint16_t kind;
    uint16_t slot;           /* IT_BLOCK: the consumer whose block it is */
    int32_t status;          /* a last message's: the job's status */
    uint32_t flags;          /* IT_F_*: the job's last message; a failure */
    uint64_t job;            /* submission index (set by pp__coll_add) */
    uint64_t ref;
    uint64_t task;           /* a pp_task * to release with the item, or 0 */
    uint64_t cj;             /* a worker job's message: its struct cjob *, to
                                count it delivered (collect.c), else 0 */
};

struct chunk;
struct queue {               /* chunks grow while the queue is not emptied */
    struct chunk *head, *tail;
};

/*
 * One job of a collector.  A job on workers (t set) ends when its record
 * is DONE, which the reader or a submitter sees for itself (no engine
 * thread in between), and its result is shown once all the messages it
 * sent (rec->nmsgs) were shown.  A job of another source (created
 * process, background socket: t NULL) ends with the last message that
 * source adds.
 */
struct cjob {                /* one cache line */
    /* A job on workers: its task, bound just before it is queued
     * (pp__coll_bind; release, read with acquire); NULL until then and
     * once the job was taken. */
    struct pp_task *_Atomic t;
    uint64_t index;
    struct cjob *next;       /* PP_ORDERED: submission order (c->first);
                                PP_ARRIVAL: c->ready; free: c->free */
    struct cjob *pnext;      /* c->pend: workers' jobs not seen DONE */
    struct queue q;          /* PP_ORDERED: its messages */
    uint32_t received;       /* messages of it the engine drained, queued or not */
    uint32_t delivered;      /* messages of it the reader was given (reader's) */
    uint32_t lost;           /* of the received, those not queued (out of memory) */
    uint8_t worker : 1;      /* a job on workers */
    uint8_t done : 1;        /* its record was seen DONE */
    uint8_t final : 1;       /* another source's: its last message is queued */
};

/* Jobs are allocated in slabs that live as long as their collector: the
 * engine may follow a task's t->coll to a job that was taken meanwhile
 * (it checks j->t under the lock), never to freed memory.  A slab is
 * aligned to its size, so a job finds its collector in the slab's head. */
#define CJOB_SLAB_BYTES 16384u
struct cjob_slab {
    struct cjob_slab *next;
    struct pp_collector *c;
    pp_cacheline_aligned struct cjob jobs[];
};
#define CJOB_SLAB ((CJOB_SLAB_BYTES - sizeof(struct cjob_slab)) / sizeof(struct cjob))
_Static_assert(sizeof(struct cjob) == 64, "a collector's job is one cache line");

static inline struct pp_collector *pp__cjob_coll(const struct cjob *j)
{
    return ((const struct cjob_slab *)((uintptr_t)j & ~(uintptr_t)(CJOB_SLAB_BYTES - 1)))->c;
}

struct pp_collector {
    struct pp_server *s;     /* NULL: a background collector */
    enum pp_order order;
    unsigned limit;
    pthread_mutex_t lock;    /* everything but the reader's own (below) */
    /* Where waiters sleep (futex.h's event count): the server's bell
     * sh->bells[..], which consumers ring, or own_bell without a server. */
    struct pp_event *bell;
    struct pp_event own_bell;
    unsigned bell_no;        /* bell = &sh->bells[bell_no].ev */
    /* The bound (pp_collector_set_max_bytes): bytes of local workers'
     * messages queued here and not read yet.  At max_bytes or more, the
     * engine leaves a job's next message in its worker's ring, so the
     * worker waits in pp_job_send (collect.c: when it may not). */
    size_t max_bytes;        /* 0: no bound */
    uint64_t held_bytes;     /* queued (+ by the engine), read (- in take) */
    bool paused;             /* the engine left a slot for us: retry when below */
    unsigned unbound;        /* submitters waiting at the limit, or destroy: no pausing */
    uint64_t submitted;      /* jobs accepted */
    uint64_t finals;         /* of which known ended (the limit counts the rest) */
    uint64_t finals_read;    /* of which the last message was read */
    struct queue q;          /* PP_ARRIVAL: messages, other sources' ends */
    struct cjob *first, *last; /* PP_ORDERED: jobs not fully taken */
    bool track;              /* pend is kept: PP_ARRIVAL, or a limit */
    struct cjob *pend_head, *pend_tail; /* workers' jobs not seen DONE (pnext) */
    struct cjob *free;       /* jobs to reuse */
    struct cjob_slab *slabs;
    struct cjob *ready, *ready_tail;    /* PP_ARRIVAL: seen DONE, end not taken */
    /* The reader's own (one reader at a time): what a pass took, in the
     * order it is shown, and the message last returned. */
    struct queue rq;
    uint64_t rq_finals;      /* last messages read from rq, not yet in finals_read */
    uint64_t rd_bytes;       /* bytes of workers' messages read since take() */
    struct cjob *shown_job;  /* a job some of whose messages were shown... */
    uint32_t shown_n;        /* ...this many, not yet in its delivered */
    struct item cur;
    uint32_t run_left;       /* messages of the run being read still in rq */
    bool show_ends;          /* an end without a result is shown, empty (the agent) */
    const char *cur_err;
    bool cur_valid;
    /* Other sources: their state, stopped and freed by destroy (after
     * every job's last message arrived); told of each item read. */
    void *create;            /* create.c */
    void *bg;                /* background.c */
};

/* A collector with nobody's jobs yet (s may be NULL). */
PP_HIDDEN int pp__coll_alloc(struct pp_server *s, enum pp_order order, unsigned limit,
                             struct pp_collector **ret);
/* The next job of another source: its index, linked in submission
 * order; blocks while the limit is reached.  NULL: out of memory. */
PP_HIDDEN struct cjob *pp__coll_reserve(struct pp_collector *c);
/* A reserved job that could not start: counted as ended and read. */
PP_HIDDEN void pp__coll_unreserve(struct pp_collector *c, struct cjob *j);
/* Adds the message *it of job j; its bytes: IT_DATA, data (copied; more
 * than IT_DATA_MAX bytes are copied into an IT_HEAP block), IT_HEAP: ref
 * (the collector's now), IT_BLOCK: ref and slot.  A last message
 * (IT_F_FINAL) ends the job.  False: out of memory (the message is
 * dropped and its resources freed; a last one still ends the job). */
PP_HIDDEN bool pp__coll_add(struct pp_collector *c, struct cjob *j, struct item *it,
                            const void *data);

/* The session agent's (agent.c): a submit that says the job's index; what
 * the message last returned is (PP_COLL_LAST: its job's last; PP_COLL_NONE:
 * an end without a result, shown because show_ends is set); and freeing a
 * collector whose server was destroyed first (its jobs cancelled there). */
PP_HIDDEN int pp__coll_submit(struct pp_collector *c, pp_fn *fn, const void *arg, size_t len,
                              uint64_t *index);
enum { PP_COLL_LAST = 1, PP_COLL_NONE = 2 };
PP_HIDDEN int pp__coll_current(struct pp_collector *c);
PP_HIDDEN void pp__coll_free_orphan(struct pp_collector *c);

/* create.c: all n bytes to fd (a pipe or a socket; SIGPIPE must be
 * ignored by the caller): 0 or -errno. */
PP_HIDDEN int pp__write_all(int fd, const void *p, size_t n);

/* create.c: stop the watcher (every created process has ended). */
PP_HIDDEN void pp__create_fini(struct pp_collector *c);
/* background.c: a message of this collector was read / stop and close. */
PP_HIDDEN void pp__bg_read(struct pp_collector *c, const struct item *it);
PP_HIDDEN void pp__bg_fini(struct pp_collector *c);

#endif /* PP_ENGINE_COLLECT_H */
