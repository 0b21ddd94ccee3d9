/*
 * collect.c - collectors (pprocess Map, Queue, Exchange) on the job path.
 *
 * A collector's job is an ordinary record with PP_RF_COLLECT, finished by
 * its consumer like a plain pp_submit job (QUEUED -> DONE, no engine
 * thread in between): the reader looks at the records of its jobs itself,
 * as pp_task_wait does, and takes the result straight from the record.
 * The consumer rings the collector's doorbell (sh->bells) after DONE, so
 * a reader that sleeps is woken; one that is busy never pays for it.
 *
 * Messages (pp_job_send, worker.c) go through the consumer's message ring
 * (shm/bring.h) to the engine thread, which appends them to the
 * collector's queues here and rings the bell.  The record says how many
 * the job sent (rec->nmsgs, written before DONE); its result is shown
 * once that many were shown, so it always comes last, however far behind
 * the engine is.  A job failed by the engine (its worker died) gets
 * nmsgs = what was drained of it (pp__coll_failing).  Small messages are
 * copied into the queue's chunks (no allocation per message); large ones
 * stay in the page-heap block the worker wrote them into, and the reader
 * sees them there.
 *
 * Queues.  PP_ARRIVAL: one queue of messages; jobs seen DONE wait in
 * `ready` until their messages were shown.  PP_ORDERED: one queue per
 * job, jobs in submission order; the reader drains the oldest job's queue
 * (while it runs, too) and moves on when its end was taken.
 *
 * The reader works in passes: under the lock, one pass moves everything
 * it may show (queued messages, then the ends of finished jobs) into its
 * own queue rq, which it then reads without the lock.  Seeing DONE.
 * PP_ORDERED looks at the oldest jobs only.  PP_ARRIVAL walks `pend`
 * (workers' jobs not seen DONE, in submission order) and stops after
 * OBSERVE_UNQUEUED jobs no consumer owns yet: the submit ring is FIFO, so
 * those behind them have not started either, but for a few that a
 * consumer just took or that were queued again after a worker died,
 * which a later pass finds (every job ahead of them ends, and rings).
 * A walk thus costs what it finds plus a bounded number of looks.
 *
 * Lock order: the server's coll_lock, then a collector's lock (the
 * engine takes both once per drain of a message ring; destroy takes
 * coll_lock alone, to free its jobs).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "collect.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A queue's chunks grow from CHUNK_MIN to CHUNK_MAX bytes: an ordered
 * collector has one queue per job, most of which hold one or two items. */
#define CHUNK_MIN 256u
#define CHUNK_MAX (64u << 10)

struct chunk {
    struct chunk *next;
    size_t used, read, cap;
    /* 1 + where the run (IT_RUN) that the chunk ends with starts, which
     * the next message of that job may join; 0: it ends with anything
     * else. */
    size_t run;
    _Alignas(8) unsigned char buf[];
};

/* A message in a run: its length, then its bytes (to 8 bytes). */
#define RUN_REC_HDR 8u
static size_t run_rec_size(uint32_t len)
{
    return RUN_REC_HDR + (((size_t)len + 7u) & ~(size_t)7u);
}

/* ---------------------------------------------------------------- */
/* Queues                                                             */
/* ---------------------------------------------------------------- */

/* A failure's text is followed by a NUL (pp_collector_error returns it). */
static size_t item_size(const struct item *it)
{
    if (it->kind == IT_RUN) /* and its messages */
        return sizeof(struct item) + (size_t)it->ref;
    size_t n = (size_t)it->len + ((it->flags & IT_F_FAIL) != 0);
    return sizeof(struct item) + (it->kind == IT_DATA ? (n + 7u) & ~(size_t)7u : 0);
}

/* What a worker's message item (not in a run) costs the bound: its item
 * in the queue, and its page-heap block (add_locked adds it, deliver
 * takes it off: the two must agree). */
static size_t msg_bytes(const struct item *it)
{
    return item_size(it) + (it->kind == IT_BLOCK ? it->len : 0);
}

/* need bytes at the end of q's last chunk (a new one when they do not
 * fit); NULL when out of memory. */
static struct chunk *q_room(struct queue *q, size_t need)
{
    struct chunk *c = q->tail;
    if (!c || c->cap - c->used < need) {
        size_t cap = c ? c->cap * 2 : CHUNK_MIN; /* where the queue had got to */
        if (cap > CHUNK_MAX)
            cap = CHUNK_MAX;
        if (cap < need)
            cap = need;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return false;
        c->next = NULL;
        c->used = c->read = c->run = 0;
        c->cap = cap;
        if (q->tail)
            q->tail->next = c;
        else
            q->head = c;
        q->tail = c;
    }
    return c;
}

/* Appends an item; false when out of memory (the message is dropped and
 * the caller says so). */
static bool q_put(struct queue *q, const struct item *it, const void *data)
{
    size_t need = item_size(it);
    struct chunk *c = q_room(q, need);
    if (!c)
        return false;
    c->run = 0;
    memcpy(c->buf + c->used, it, sizeof(*it));
    if (need > sizeof(*it) && it->len && data)
        memcpy(c->buf + c->used + sizeof(*it), data, it->len);
    if (it->kind == IT_DATA && (it->flags & IT_F_FAIL))
        c->buf[c->used + sizeof(*it) + it->len] = '\0';
    c->used += need;
    return true;
}

/* Appends a worker job's small message *it: to the run the queue ends
 * with when that run is the same job's and the chunk has room, else as a
 * new run.  A stream of 8-byte values thus costs 16 bytes a value in the
 * queue, not an item each, and the reader copies no item per value. */
static bool q_put_run(struct queue *q, const struct item *it, const void *data, size_t *added)
{
    size_t rec = run_rec_size(it->len);
    struct chunk *c = q->tail;
    struct item *run = c && c->run ? (struct item *)(void *)(c->buf + c->run - 1) : NULL;
    *added = rec;
    if (!run || run->cj != it->cj || c->cap - c->used < rec) {
        if (!(c = q_room(q, sizeof(struct item) + rec)))
            return false;
        *added += sizeof(struct item);
        run = (struct item *)(void *)(c->buf + c->used);
        *run = *it;
        run->kind = IT_RUN;
        run->len = 0;  /* messages in it */
        run->ref = 0;  /* their bytes */
        c->run = c->used + 1;
        c->used += sizeof(struct item);
    }
    unsigned char *p = c->buf + c->used;
    uint32_t len = it->len;
    memcpy(p, &len, sizeof(len));
    if (len)
        memcpy(p + RUN_REC_HDR, data, len);
    c->used += rec;
    run->len++;
    run->ref += rec;
    return true;
}

/* The oldest item, or NULL.  Frees chunks read to the end. */
static struct item *q_peek(struct queue *q)
{
    struct chunk *c;
    while ((c = q->head) && c->read == c->used) {
        if (c == q->tail) {
            c->read = c->used = c->run = 0; /* keep the last one for reuse */
            return NULL;
        }
        q->head = c->next;
        free(c);
    }
    return c ? (struct item *)(void *)(c->buf + c->read) : NULL;
}

static void q_pop(struct queue *q, struct item *it)
{
    q->head->read += item_size(it);
}

/* Moves every item of src to the end of dst (dst read to the end: at
 * most its last, empty chunk, which goes). */
static void q_splice(struct queue *dst, struct queue *src)
{
    if (!src->head)
        return;
    if (dst->head && dst->head == dst->tail && dst->head->read == dst->head->used) {
        free(dst->head);
        dst->head = dst->tail = NULL;
    }
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL; /* its next item starts a new chunk */
}

static bool q_empty(struct queue *q)
{
    return q_peek(q) == NULL;
}

/* ---------------------------------------------------------------- */
/* What an item holds                                                 */
/* ---------------------------------------------------------------- */

static void item_free(struct pp_server *s, const struct item *it)
{
    if (it->kind == IT_BLOCK && s)
        pp__block_free(s, it->slot, it->ref, it->len);
    else if (it->kind == IT_HEAP)
        free((void *)(uintptr_t)it->ref);
    if (it->task && s) /* a task exists only with its server (see pp__coll_free_orphan) */
        pp_task_release((pp_task *)(uintptr_t)it->task);
}

static void q_free(struct pp_server *s, struct queue *q)
{
    struct item *it;
    while ((it = q_peek(q)) != NULL) {
        item_free(s, it);
        q_pop(q, it);
    }
    free(q->head);
    q->head = q->tail = NULL;
}

static struct queue *job_queue(struct pp_collector *c, struct cjob *j)
{
    return c->order == PP_ORDERED ? &j->q : &c->q;
}

static void ring(struct pp_collector *c)
{
    pp_event_signal(c->bell, INT_MAX);
}

/* ---------------------------------------------------------------- */
/* The bound                                                          */
/* ---------------------------------------------------------------- */

/*
 * Past max_bytes held, the engine stops draining the message ring of a
 * worker whose next message is for this collector (drain_one), and that
 * worker waits in pp_job_send until there is room again: the reader read
 * some (take), or whatever it waits for may depend on that worker.  It
 * never stops one when that could stop the reader for good:
 *   - PP_ORDERED: the oldest job's messages are the reader's next; never
 *     for the oldest job, nor while the oldest has not started (it may
 *     have to start on the very worker that would wait), nor on the
 *     worker where it runs (its messages queue behind);
 *   - while a submitter waits at the collector's limit (its thread may be
 *     the reader's), and from destroy on (nobody reads);
 *   - for remote nodes (the net thread must never wait) and other
 *     sources (created processes, background sockets).
 * Any doubt left over (the oldest job moved to a worker whose ring was
 * stopped before) is settled by the reader: before it sleeps, and when
 * the oldest job changes, it has the engine try every stopped ring again
 * (unpause), which then takes them when they may go on.
 */

static struct pp_task *job_task(const struct cjob *j);

/* Under the lock: the engine stopped a ring for us; have it look again.
 * (Only the engine sets paused: a collector without a server never is.) */
static void unpause(struct pp_collector *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    /* Release: pairs with the engine's acquire of coll_gen (pp__coll_drain). */
    atomic_fetch_add_explicit(&c->s->coll_gen, 1, memory_order_release);
    pp__engine_kick(c->s);
}

/* Under the lock: may the engine stop the ring of slot for job j's
 * message?  (Above max_bytes already.) */
static bool may_pause(struct pp_collector *c, struct cjob *j, uint32_t slot)
{
    if (c->unbound || slot >= PP_MAX_WORKERS)
        return false;
    if (c->order == PP_ARRIVAL)
        return true;
    struct cjob *h = c->first;
    if (!h || h == j)
        return false;
    if (!h->worker)
        return true;
    struct pp_task *t = job_task(h);
    if (!t)
        return false; /* being submitted */
    uint64_t st = pp_load_acquire(&t->rec->state); /* B2 */
    uint64_t own = pp_load_relaxed(&t->rec->own);
    if ((uint32_t)(own >> 32) != pp_st_gen(st))
        return false; /* not started: it may need this very worker */
    return (uint32_t)own != slot + 1; /* its messages would queue behind */
}

/* ---------------------------------------------------------------- */
/* Jobs                                                               */
/* ---------------------------------------------------------------- */

/* Acquire: pairs with the release in pp__coll_bind. */
static struct pp_task *job_task(const struct cjob *j)
{
    return atomic_load_explicit(&j->t, memory_order_acquire);
}

/* Appends j to a list linked through next (c->first, c->ready). */
static void append(struct cjob **head, struct cjob **tail, struct cjob *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static void pend_link(struct pp_collector *c, struct cjob *j)
{
    j->pnext = NULL;
    if (c->pend_tail)
        c->pend_tail->pnext = j;
    else
        c->pend_head = j;
    c->pend_tail = j;
}

/* Unlinks j, which follows prev (NULL: j is the head). */
static void pend_unlink(struct pp_collector *c, struct cjob *prev, struct cjob *j)
{
    if (prev)
        prev->pnext = j->pnext;
    else
        c->pend_head = j->pnext;
    if (c->pend_tail == j)
        c->pend_tail = prev;
    j->pnext = NULL;
}

/* Unlinks j wherever it is (a submit that failed: rare). */
static void pend_remove(struct pp_collector *c, struct cjob *j)
{
    struct cjob *prev = NULL;
    for (struct cjob *x = c->pend_head; x; prev = x, x = x->pnext)
        if (x == j) {
            pend_unlink(c, prev, j);
            return;
        }
}

/* A worker's job whose record is DONE: it ended (the limit), and an
 * arrival-order reader may show its end once its messages were shown.
 * prev: the job before it in pend, or NULL for the head (or untracked). */
static void mark_done(struct pp_collector *c, struct cjob *prev, struct cjob *j)
{
    if (c->track)
        pend_unlink(c, prev, j);
    j->done = true;
    c->finals++;
    if (c->order == PP_ARRIVAL)
        append(&c->ready, &c->ready_tail, j);
}

/* B2: acquire, pairs with the consumer's publish (D1); after DONE the
 * status, result and nmsgs are final. */
static bool rec_done(struct pp_task *t)
{
    return pp_st_phase(pp_load_acquire(&t->rec->state)) == PP_ST_DONE;
}

/* Consumers that own a job hold at most one each, and one that just took
 * a token owns it a moment later; these many unowned jobs in a row mean
 * the walk has reached the jobs still queued. */
#define OBSERVE_UNQUEUED 16u
/* What one pass takes at most, so that the lock is not held long. */
#define PASS_MAX 256u

/* Walks pend (see the top of the file); returns how many ended. */
static unsigned observe(struct pp_collector *c, unsigned max)
{
    unsigned found = 0, unowned = 0;
    struct cjob *j = c->pend_head, *prev = NULL, *nx;
    for (; j && found < max; j = nx) {
        nx = j->pnext;
        struct pp_task *t = job_task(j);
        if (!t) { /* being submitted: as good as queued */
            if (++unowned >= OBSERVE_UNQUEUED)
                break;
            prev = j;
            continue;
        }
        struct pp_rec *r = t->rec;
        uint64_t st = pp_load_acquire(&r->state); /* B2 */
        if (pp_st_phase(st) == PP_ST_DONE) {
            mark_done(c, prev, j);
            found++;
            continue;
        }
        prev = j;
        if ((uint32_t)(pp_load_relaxed(&r->own) >> 32) != pp_st_gen(st) &&
            ++unowned >= OBSERVE_UNQUEUED)
            break;
    }
    return found;
}

/* A worker's job whose end may be shown: DONE, and every message it sent
 * was shown (or lost). */
static bool end_due(const struct cjob *j, struct pp_task *t)
{
    return j->done && j->delivered + j->lost >= t->rec->nmsgs;
}

/* Queues the end of worker job j on q (the reader's): its result, its
 * failure, or nothing shown (no result set).  The item keeps the task
 * (the view of the result) until it was read. */
static void put_end(struct pp_collector *c, struct queue *q, struct cjob *j, struct pp_task *t)
{
    struct pp_rec *r = t->rec;
    struct item it = { .status = r->status, .flags = IT_F_FINAL, .job = j->index,
                       .task = (uint64_t)(uintptr_t)t, .kind = IT_TASK };
    if (it.status < 0)
        it.flags |= IT_F_FAIL;
    else if (r->res_where == PP_RES_NONE)
        it.kind = IT_NOTHING;
    if (!q_put(q, &it, NULL)) { /* out of memory: the end is counted read, unseen */
        pp_task_release(t);
        c->finals_read++;
    }
}

/* Under the lock: a job fully taken goes back to the collector's pool.
 * Its task may still name it (t->coll): the engine checks j->t. */
static void retire(struct pp_collector *c, struct cjob *j)
{
    if (j->q.head)
        free(j->q.head); /* at most an empty chunk */
    atomic_store_explicit(&j->t, NULL, memory_order_relaxed);
    j->next = c->free;
    c->free = j;
}

/* Under the lock: a job from the pool (a new slab when it is empty). */
static struct cjob *job_get(struct pp_collector *c, bool worker)
{
    if (!c->free) {
        struct cjob_slab *sl = aligned_alloc(CJOB_SLAB_BYTES, CJOB_SLAB_BYTES);
        if (!sl)
            return NULL;
        memset(sl, 0, CJOB_SLAB_BYTES);
        sl->c = c;
        sl->next = c->slabs;
        c->slabs = sl;
        for (size_t i = CJOB_SLAB; i-- > 0;) {
            sl->jobs[i].next = c->free;
            c->free = &sl->jobs[i];
        }
    }
    struct cjob *j = c->free;
    c->free = j->next;
    /* Every field but t (NULL since it was taken). */
    j->index = 0;
    j->next = j->pnext = NULL;
    j->q.head = j->q.tail = NULL;
    j->received = j->lost = j->delivered = 0;
    j->worker = worker;
    j->done = j->final = 0;
    return j;
}

/* Waits on the bell (under the lock, which it drops while asleep) unless
 * ready(c) holds after the waiter announced itself.  Returns 0 (woken or
 * ready: look again) or -ETIMEDOUT. */
static int bell_wait(struct pp_collector *c, bool (*ready)(struct pp_collector *),
                     const struct timespec *dl)
{
    uint32_t seq = pp_event_prepare(c->bell); /* E1: pairs with B1 and ring() */
    if (ready(c)) {
        pp_event_cancel(c->bell);
        return 0;
    }
    pthread_mutex_unlock(&c->lock);
    if (c->s)
        pp__before_block(c->s); /* a worker may be spinning on our CPU for jobs */
    int w = pp_event_wait(c->bell, seq, dl);
    pthread_mutex_lock(&c->lock);
    pp_event_cancel(c->bell);
    return w == -ETIMEDOUT ? -ETIMEDOUT : 0;
}

static bool below_limit(struct pp_collector *c)
{
    if (c->submitted - c->finals < c->limit)
        return true;
    if (c->pend_head)
        observe(c, UINT_MAX);
    return c->submitted - c->finals < c->limit;
}

/* Under the lock: a new job with the next index, once the limit lets one
 * more start; NULL when out of memory. */
static struct cjob *admit_locked(struct pp_collector *c, bool worker)
{
    if (c->limit && !below_limit(c)) {
        /* This thread may be the reader: the jobs must not wait for it. */
        c->unbound++;
        unpause(c);
        while (!below_limit(c))
            bell_wait(c, below_limit, NULL);
        c->unbound--;
    }
    struct cjob *j = job_get(c, worker);
    if (!j)
        return NULL;
    j->index = c->submitted++;
    if (worker && c->track)
        pend_link(c, j);
    if (c->order == PP_ORDERED) /* before it can send anything */
        append(&c->first, &c->last, j);
    return j;
}

/* ---------------------------------------------------------------- */
/* Other sources                                                      */
/* ---------------------------------------------------------------- */

/* wake: ring the bell (the engine's drain does it once per pass). */
static bool add_locked(struct pp_collector *c, struct cjob *j, struct item *it,
                       const void *data, bool wake)
{
    it->job = j->index;
    bool ok = true;
    if (it->kind == IT_DATA && it->len > IT_DATA_MAX) {
        char *p = malloc((size_t)it->len + 1);
        if (p) {
            memcpy(p, data, it->len);
            p[it->len] = '\0'; /* a failure's text is read as a string */
            it->kind = IT_HEAP;
            it->ref = (uint64_t)(uintptr_t)p;
        } else {
            ok = false;
        }
    }
    if (ok) {
        size_t added = 0;
        if (it->cj && it->kind == IT_DATA && !it->flags) {
            ok = q_put_run(job_queue(c, j), it, data, &added);
        } else {
            ok = q_put(job_queue(c, j), it, data);
            added = msg_bytes(it);
        }
        if (ok && it->cj) /* a worker's message: what the bound counts (the reader: shown()) */
            c->held_bytes += added;
    }
    if (!ok) {
        item_free(c->s, it);
        if (it->flags & IT_F_FINAL) { /* the job still ends: nothing to show */
            struct item end = { .kind = IT_NOTHING, .flags = IT_F_FINAL, .job = j->index };
            if (!q_put(job_queue(c, j), &end, NULL))
                c->finals_read++; /* not even that: count it read, or PP_END never comes */
        }
    }
    if (it->flags & IT_F_FINAL) {
        j->final = true;
        c->finals++;
        if (c->order == PP_ARRIVAL)
            retire(c, j); /* nothing names it any more */
    }
    if (wake || (it->flags & IT_F_FINAL))
        ring(c);
    return ok;
}

bool pp__coll_add(struct pp_collector *c, struct cjob *j, struct item *it, const void *data)
{
    pthread_mutex_lock(&c->lock);
    bool ok = add_locked(c, j, it, data, true);
    pthread_mutex_unlock(&c->lock);
    return ok;
}

struct cjob *pp__coll_reserve(struct pp_collector *c)
{
    pthread_mutex_lock(&c->lock);
    struct cjob *j = admit_locked(c, false);
    pthread_mutex_unlock(&c->lock);
    return j;
}

static void unlink_job(struct pp_collector *c, struct cjob *j)
{
    struct cjob **p = &c->first, *prev = NULL;
    while (*p && *p != j) {
        prev = *p;
        p = &(*p)->next;
    }
    if (!*p)
        return;
    *p = j->next;
    if (c->last == j)
        c->last = prev;
}

void pp__coll_unreserve(struct pp_collector *c, struct cjob *j)
{
    pthread_mutex_lock(&c->lock);
    if (c->order == PP_ORDERED)
        unlink_job(c, j);
    if (j->worker && c->track)
        pend_remove(c, j);
    /* Counted as one that ended and was read, so that PP_END and the
     * limit still add up (indices stay as given). */
    c->finals++;
    c->finals_read++;
    ring(c);
    retire(c, j);
    pthread_mutex_unlock(&c->lock);
}

int pp__coll_alloc(struct pp_server *s, enum pp_order order, unsigned limit,
                   struct pp_collector **ret)
{
    static _Atomic unsigned next_bell;
    if (order != PP_ORDERED && order != PP_ARRIVAL)
        return -EINVAL;
    struct pp_collector *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->s = s;
    c->order = order;
    c->limit = limit;
    c->track = order == PP_ARRIVAL || limit;
    pthread_mutex_init(&c->lock, NULL);
    pp_event_init(&c->own_bell);
    c->bell_no = atomic_fetch_add_explicit(&next_bell, 1, memory_order_relaxed) % PP_NBELLS;
    c->bell = s ? &s->sh->bells[c->bell_no].ev : &c->own_bell;
    *ret = c;
    return 0;
}

unsigned pp__coll_bind(void *cjob, struct pp_task *t)
{
    struct cjob *j = cjob;
    atomic_store_explicit(&j->t, t, memory_order_release);
    return pp__cjob_coll(j)->bell_no;
}

/* ---------------------------------------------------------------- */
/* The engine side                                                    */
/* ---------------------------------------------------------------- */

struct drain_ctx {
    struct pp_server *s;
    uint32_t slot;
    struct pp_collector *locked;
    /* The job the last entry was for, and its tag: while `locked` stays
     * locked, a job bound to its task cannot be taken (that needs the
     * lock), so its task is not released and keeps its generation; the
     * next entries of one stream need no look at the record.  Reset
     * whenever the lock changes hands. */
    uint64_t last_tag;
    struct cjob *last_j;
    bool force;   /* the worker is dead: no pausing */
    bool paused;  /* a collector over its bound stopped the pass */
};

/* The message ring's kinds are the items' (consumer.h). */
_Static_assert((int)PP_MSG_DATA == (int)IT_DATA && (int)PP_MSG_BLOCK == (int)IT_BLOCK,
               "message kinds");

/* Where a block could be: page aligned, inside the page heap. */
static bool block_plausible(struct pp_server *s, uint64_t off, uint64_t len)
{
    const struct pp_pages *pa = &s->sh->pages;
    return len && len <= PP_MAX_PAYLOAD && off % PP_PAGE == 0 && off >= pa->start &&
           off < pa->end && len <= pa->end - off;
}

/* The task a message-ring entry names, if it is a collector's job in the
 * entry's generation that was not freed (QUEUED while it runs, DONE while
 * its reader waits for this very message: it is not released before
 * every message it sent was drained).  The host-side t->coll says it is
 * a collector's, not the record's flags, which a job could overwrite. */
static struct pp_task *entry_task(struct pp_server *s, uint64_t tag)
{
    uint32_t idx = pp_tok_idx(tag);
    /* Acquire of nrecs: as pp__handle_done. */
    if (idx >= pp_load_acquire(&s->sh->nrecs))
        return NULL;
    struct pp_task *t = pp__task_of(s, idx);
    uint64_t st = pp_load_acquire(&t->rec->state);
    uint32_t ph = pp_st_phase(st);
    if (pp_st_gen(st) != pp_tok_gen(tag) || (ph != PP_ST_QUEUED && ph != PP_ST_DONE))
        return NULL;
    return t;
}

/* The job an entry is for, with its collector locked (d->locked), or
 * NULL.  A job's memory outlives any use here (coll_lock, held by our
 * caller), but it may have been taken and reused since: under its
 * collector's lock, it must still be bound to this task, which must still
 * be in the entry's generation.  The next entries of the same stream hit
 * d->last_j. */
static struct cjob *entry_job(struct drain_ctx *d, uint64_t tag)
{
    if (d->last_j && d->last_tag == tag)
        return d->last_j;
    d->last_j = NULL;
    struct pp_task *t = entry_task(d->s, tag);
    struct cjob *j = t ? pp_load_relaxed(&t->coll) : NULL;
    if (!j)
        return NULL;
    struct pp_collector *c = pp__cjob_coll(j);
    if (d->locked != c) {
        if (d->locked) {
            struct pp_event *bell = d->locked->bell;
            pthread_mutex_unlock(&d->locked->lock);
            pp_event_signal(bell, INT_MAX);
        }
        pthread_mutex_lock(&c->lock);
        d->locked = c;
    }
    if (pp_load_relaxed(&j->t) != t || entry_task(d->s, tag) != t)
        return NULL;
    d->last_tag = tag;
    d->last_j = j;
    return j;
}

static bool drain_one(void *ctx, const struct pp_bring_hdr *h, const unsigned char *payload)
{
    struct drain_ctx *d = ctx;
    struct pp_server *s = d->s;
    bool block = h->kind == IT_BLOCK;
    struct pp_msg_block b = { 0, 0 };
    if (block && h->len == sizeof(b))
        memcpy(&b, payload, sizeof(b));
    bool valid = block ? h->len == sizeof(b) && block_plausible(s, b.off, b.len)
                       : h->kind == IT_DATA;
    if (valid && block && d->slot < PP_MAX_WORKERS)
        s->slots[d->slot].last_msg_blk = b.off; /* see pp__cons_repair */
    struct cjob *j = entry_job(d, h->tag);
    if (!j) {
        if (valid && block)
            pp__block_free(s, d->slot, b.off, (size_t)b.len);
        return true;
    }
    struct pp_collector *c = d->locked;
    if (c->max_bytes && c->held_bytes >= c->max_bytes && !d->force &&
        may_pause(c, j, d->slot)) {
        c->paused = true; /* the entry stays: the ring waits for the reader */
        d->paused = true;
        return false;
    }
    j->received++; /* counted even when not shown: its end waits for nmsgs */
    struct item it = { .len = block ? (uint32_t)b.len : h->len,
                       .kind = block ? IT_BLOCK : IT_DATA,
                       .slot = (uint16_t)d->slot, .ref = b.off,
                       .cj = (uint64_t)(uintptr_t)j };
    if (!valid || !add_locked(c, j, &it, payload, false)) /* frees the block if it cannot */
        j->lost++;
    return true;
}

/* A ring stopped as of the current coll_gen (acquire: pairs with
 * unpause's release) is left alone until a reader raises it. */
static bool slot_paused(struct pp_server *s, uint32_t slot)
{
    if (slot >= PP_MAX_WORKERS || !s->slots[slot].msg_paused)
        return false;
    return s->slots[slot].paused_gen == atomic_load_explicit(&s->coll_gen, memory_order_acquire);
}

void pp__coll_drain(struct pp_server *s, uint32_t slot, bool force)
{
    struct pp_bring *b = pp__msg_ring(s->sh, slot);
    if (pp_bring_empty(b) || (!force && slot_paused(s, slot)))
        return;
    struct drain_ctx d = { .s = s, .slot = slot, .force = force };
    /* Read before the pass: a reader that unpauses during it raises it
     * after, and the next pass tries again. */
    uint32_t gen = atomic_load_explicit(&s->coll_gen, memory_order_acquire);
    /* A sender waits for room only after it found the ring over 3/4 full
     * (an entry is at most a quarter of it), and it asks for a pass after
     * that: a pass that starts below half full has nobody to wake, and
     * saves the signal's fence. */
    uint64_t used = pp_load_acquire(&b->tail) - pp_load_relaxed(&b->head);
    pthread_mutex_lock(&s->coll_lock); /* the jobs tasks name stay (destroy) */
    unsigned took = pp_bring_drain(b, drain_one, &d);
    struct pp_event *bell = NULL;
    if (d.locked) {
        bell = d.locked->bell;
        pthread_mutex_unlock(&d.locked->lock);
    }
    pthread_mutex_unlock(&s->coll_lock);
    if (slot < PP_MAX_WORKERS) {
        s->slots[slot].msg_paused = d.paused;
        s->slots[slot].paused_gen = gen;
    }
    if (bell) /* in the segment: valid even if the collector is gone now */
        pp_event_signal(bell, INT_MAX);
    if (took && used >= b->cap / 2) /* a sender waiting for room (consumer.c) */
        pp_event_signal(&pp__cons_at(s->sh, slot)->msg_space, INT_MAX);
}

bool pp__coll_pending(struct pp_server *s)
{
    PP_FOR_EACH_SLOT(s->sh, i)
        if (!pp_bring_empty(pp__msg_ring(s->sh, i)) && !slot_paused(s, i))
            return true;
    return false;
}

void pp__coll_failing(struct pp_task *t)
{
    struct cjob *j = pp_load_relaxed(&t->coll);
    struct pp_collector *c = pp__cjob_coll(j);
    pthread_mutex_lock(&c->lock);
    t->rec->nmsgs = j->received; /* before DONE (pp__fail_task): B2 reads it */
    pthread_mutex_unlock(&c->lock);
}

/* ---------------------------------------------------------------- */
/* API                                                                */
/* ---------------------------------------------------------------- */

PP_EXPORT int pp_collector_new(pp_server *s, enum pp_order order, unsigned limit,
                               pp_collector **ret)
{
    if (!s || !ret)
        return -EINVAL;
    return pp__coll_alloc(s, order, limit, ret);
}

static int submit_id(pp_collector *c, uint32_t id, uint32_t group, const void *arg, size_t len,
                     uint64_t *index)
{
    pthread_mutex_lock(&c->lock);
    struct cjob *j = admit_locked(c, true);
    pthread_mutex_unlock(&c->lock);
    if (!j)
        return -ENOMEM;
    if (index) /* now: once queued, the job may end, be read and be reused */
        *index = j->index;
    /* Not under the lock: the submit may block (max_queued), and the
     * engine takes the lock to deliver its messages.  It binds the task
     * to j (pp__coll_bind) before it queues it. */
    pp_task *t;
    int r = pp__submit_id(c->s, id, group, arg, len, PP_RF_COLLECT, NULL, j, &t);
    if (r < 0)
        pp__coll_unreserve(c, j);
    return r;
}

PP_EXPORT int pp_collector_submit(pp_collector *c, pp_fn *fn, const void *arg, size_t len)
{
    if (!c || !c->s || !fn || (!arg && len))
        return -EINVAL;
    uint32_t id;
    int r = pp__fn_id(c->s, fn, &id);
    return r < 0 ? r : submit_id(c, id, 0, arg, len, NULL);
}

int pp__coll_submit(pp_collector *c, pp_fn *fn, const void *arg, size_t len, uint64_t *index)
{
    uint32_t id;
    int r = pp__fn_id(c->s, fn, &id);
    return r < 0 ? r : submit_id(c, id, 0, arg, len, index);
}

PP_EXPORT int pp_collector_submit_template(pp_collector *c, pp_template *tpl, const void *arg,
                                           size_t len)
{
    if (!c || !c->s || !tpl || (!arg && len))
        return -EINVAL;
    struct pp_server *s;
    uint32_t id, group;
    pp__template_ids(tpl, &s, &id, &group);
    if (s != c->s)
        return -EINVAL;
    return submit_id(c, id, group, arg, len, NULL);
}

/* What the reader was given last goes (a block back to its consumer, a
 * task released). */
static void drop_current(struct pp_collector *c)
{
    if (c->cur_valid)
        item_free(c->s, &c->cur);
    c->cur_valid = false;
    c->cur_err = NULL;
}

/* Messages shown are counted per job (j->delivered, which its end waits
 * for), but not one by one: the engine writes the same line (received)
 * while a stream runs, and a write per message from here would take the
 * line from it each time.  A run of one job's messages is counted here
 * and added when another job's comes or a pass looks (under the lock;
 * the job is not taken before: its end waits for this count). */
static void flush_shown(struct pp_collector *c)
{
    if (c->shown_job) {
        c->shown_job->delivered += c->shown_n;
        c->shown_job = NULL;
        c->shown_n = 0;
    }
}

static void count_shown(struct pp_collector *c, struct cjob *j)
{
    if (j != c->shown_job) {
        flush_shown(c);
        c->shown_job = j;
    }
    c->shown_n++;
}

/* PP_ORDERED, under the lock: takes what the oldest jobs have, up to the
 * first that has not ended.  Returns true when rq got something. */
static bool take_ordered(struct pp_collector *c)
{
    bool got = false;
    struct cjob *j;
    for (unsigned n = 0; (j = c->first) != NULL && n < PASS_MAX; n++) {
        if (!q_empty(&j->q)) {
            q_splice(&c->rq, &j->q);
            got = true;
        }
        if (!j->worker) {
            if (!j->final)
                break; /* its source goes on */
        } else {
            struct pp_task *t = job_task(j);
            if (!t)
                break; /* being submitted */
            if (!j->done && rec_done(t))
                mark_done(c, NULL, j); /* pend's head: every older job was taken */
            if (!end_due(j, t))
                break; /* running, or its messages are still to come or to show */
            put_end(c, &c->rq, j, t);
            got = true;
        }
        c->first = j->next;
        if (c->last == j)
            c->last = NULL;
        retire(c, j);
    }
    return got;
}

/* PP_ARRIVAL, under the lock: the messages queued, then the ends due. */
static bool take_arrival(struct pp_collector *c)
{
    bool got = false;
    if (!q_empty(&c->q)) {
        q_splice(&c->rq, &c->q);
        got = true;
    }
    for (int round = 0; round < 2; round++) {
        struct cjob **p = &c->ready, *prev = NULL;
        while (*p) {
            struct cjob *j = *p;
            struct pp_task *t = job_task(j);
            if (!end_due(j, t)) {
                prev = j;
                p = &j->next;
                continue;
            }
            *p = j->next;
            if (c->ready_tail == j)
                c->ready_tail = prev;
            put_end(c, &c->rq, j, t);
            retire(c, j);
            got = true;
        }
        if (got || !c->pend_head || !observe(c, PASS_MAX))
            break;
    }
    return got;
}

static bool take(struct pp_collector *c)
{
    c->finals_read += c->rq_finals;
    c->rq_finals = 0;
    flush_shown(c);
    c->held_bytes -= c->rd_bytes;
    c->rd_bytes = 0;
    struct cjob *first = c->first;
    bool got = c->order == PP_ORDERED ? take_ordered(c) : take_arrival(c);
    /* Room again (with some slack, so that a ring is not stopped and
     * started for every message), or the reader waits for another job. */
    if (c->paused && (c->held_bytes < c->max_bytes / 2 || c->first != first))
        unpause(c);
    return got;
}

/* PP_END: every job submitted so far ended and was read. */
static bool at_end(const struct pp_collector *c)
{
    return c->finals_read == c->submitted && !c->first;
}

/* A reader's pass between spins: something to read, or the end. */
static bool take_or_end(struct pp_collector *c)
{
    return take(c) || at_end(c);
}

/* The pass of a reader about to sleep.  Before it sleeps, every ring
 * stopped for it is tried again (see "The bound"): the engine stops it
 * again if it must. */
static bool take_or_sleep(struct pp_collector *c)
{
    if (take_or_end(c))
        return true;
    unpause(c);
    return false;
}

/* The reader's view of *it, popped from rq.  Returns 0, or 1 for an item
 * not shown (IT_NOTHING). */
static int deliver(pp_collector *c, struct item *it, const void **data, size_t *len)
{
    c->cur = *it;
    const unsigned char *bytes = (const unsigned char *)(it + 1);
    q_pop(&c->rq, it); /* the chunk stays until the next call: the view */
    c->cur_valid = true;
    bool final = c->cur.flags & IT_F_FINAL;
    if (final) {
        c->rq_finals++;
    } else if (c->cur.cj) {
        count_shown(c, (struct cjob *)(uintptr_t)c->cur.cj);
        c->rd_bytes += msg_bytes(&c->cur);
    }
    if (c->bg)
        pp__bg_read(c, &c->cur);
    pp_task *t = (pp_task *)(uintptr_t)c->cur.task;
    switch (c->cur.kind) {
    case IT_NOTHING:
        if (c->show_ends) { /* an empty last message (the agent's) */
            *data = "";
            break;
        }
        drop_current(c);
        return 1;
    case IT_DATA:
        *data = bytes;
        break;
    case IT_BLOCK:
        *data = pp_seg_ptr(&c->s->seg, c->cur.ref);
        break;
    case IT_HEAP:
        *data = (const void *)(uintptr_t)c->cur.ref;
        break;
    default: { /* IT_TASK: the result, or the failure's text */
        size_t l;
        if (pp_task_result(t, data, &l) < 0) {
            const char *e = pp_task_error(t);
            *data = e ? e : strerror(-c->cur.status);
            l = strlen(*data);
        }
        c->cur.len = (uint32_t)l;
        break;
    }
    }
    if (c->cur.flags & IT_F_FAIL) /* the error text, also as pp_collector_error */
        c->cur_err = (const char *)*data;
    *len = c->cur.len;
    if (!final)
        c->cur.status = 0;
    return 0;
}

/* A run at the head of rq: its header is the current item for all its
 * messages (their job; no task, no block). */
static void run_start(struct pp_collector *c, struct item *it)
{
    c->cur = *it;
    c->cur.kind = IT_DATA;
    c->cur.ref = 0;
    c->run_left = it->len;
    c->rq.head->read += sizeof(struct item);
    c->rd_bytes += sizeof(struct item);
}

/* The next message of the run being read (run_left > 0: it is in rq's
 * head chunk, where the reader is). */
static void run_next(struct pp_collector *c, const void **data, size_t *len)
{
    struct chunk *ch = c->rq.head;
    const unsigned char *p = ch->buf + ch->read;
    uint32_t l;
    memcpy(&l, p, sizeof(l));
    ch->read += run_rec_size(l);
    c->rd_bytes += run_rec_size(l);
    c->run_left--;
    c->cur.len = l;
    c->cur_valid = true;
    count_shown(c, (struct cjob *)(uintptr_t)c->cur.cj);
    *data = p + RUN_REC_HDR;
    *len = l;
}

/* How long a reader spins for a job to end before it sleeps: the
 * server's adaptive budget, as pp_task_wait's. */
static bool spin_for(pp_collector *c, const struct timespec *dl)
{
    struct pp_server *s = c->s;
    if (!s)
        return false;
    uint64_t budget = pp_load_relaxed(&s->spin_ns);
    uint64_t end = s->sh->busy_poll ? UINT64_MAX : pp_now_ns() + budget;
    if (dl) {
        uint64_t d = (uint64_t)dl->tv_sec * 1000000000ull + (uint64_t)dl->tv_nsec;
        if (d < end)
            end = d;
    }
    for (unsigned i = 1;; i++) {
        pp_cpu_relax();
        if ((i & 15) == 0) {
            pthread_mutex_lock(&c->lock);
            bool got = take_or_end(c);
            pthread_mutex_unlock(&c->lock);
            if (got) {
                pp_store_relaxed(&s->spin_ns, pp__spin_adapt(budget, true, s->sh->spin_ns));
                return true;
            }
            uint64_t now = pp_now_ns();
            if (now >= end)
                break;
            if ((i & 1023) == 0 && !s->sh->busy_poll)
                sched_yield(); /* the worker may share our CPU */
        }
    }
    pp_store_relaxed(&s->spin_ns, pp__spin_adapt(budget, false, s->sh->spin_ns));
    return false;
}

PP_EXPORT int pp_collector_next(pp_collector *c, const void **data, size_t *len, int timeout_ms)
{
    if (!c || !data || !len || timeout_ms < -1)
        return -EINVAL;
    if (c->s && pp__in_engine(c->s))
        return -EDEADLK; /* from a callback: the engine would wait for itself */
    /* The deadline is taken when a wait starts, not per call: a reader
     * that finds a message ready pays no clock read. */
    struct timespec ts, *dl = NULL;
    bool spun = false;
    drop_current(c);
    for (;;) {
        struct item *it;
        for (;;) {
            if (c->run_left) {
                run_next(c, data, len);
                return 0;
            }
            if (!(it = q_peek(&c->rq)))
                break;
            if (it->kind == IT_RUN)
                run_start(c, it);
            else if (deliver(c, it, data, len) == 0)
                return 0;
        }
        pthread_mutex_lock(&c->lock);
        int r = 0;
        while (!take(c) && q_empty(&c->rq)) {
            if (at_end(c)) {
                r = PP_END;
            } else if (timeout_ms == 0) {
                r = -ETIMEDOUT;
            } else if (!spun) {
                spun = true;
                dl = pp_deadline(&ts, timeout_ms);
                pthread_mutex_unlock(&c->lock);
                spin_for(c, dl);
                pthread_mutex_lock(&c->lock);
                continue;
            } else {
                r = bell_wait(c, take_or_sleep, dl);
            }
            if (r != 0)
                break;
        }
        pthread_mutex_unlock(&c->lock);
        if (r != 0)
            return r;
    }
}

PP_EXPORT int pp_collector_set_max_bytes(pp_collector *c, size_t max)
{
    if (!c)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    c->max_bytes = max;
    unpause(c); /* a higher bound (or none) may let a stopped ring go on */
    pthread_mutex_unlock(&c->lock);
    return 0;
}

PP_EXPORT size_t pp_collector_held_bytes(pp_collector *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    uint64_t h = c->held_bytes - c->rd_bytes; /* rd_bytes: the reader's; exact from its thread */
    pthread_mutex_unlock(&c->lock);
    return (size_t)h;
}

PP_EXPORT int pp_collector_status(pp_collector *c)
{
    return c && c->cur_valid ? c->cur.status : 0;
}

PP_EXPORT const char *pp_collector_error(pp_collector *c)
{
    return c && c->cur_valid ? c->cur_err : NULL;
}

PP_EXPORT uint64_t pp_collector_job(pp_collector *c)
{
    return c && c->cur_valid ? c->cur.job : 0;
}

PP_EXPORT int pp_collector_finish(pp_collector *c,
                                  void (*handler)(const void *data, size_t len, void *arg),
                                  void *arg)
{
    if (!c || !handler)
        return -EINVAL;
    int first_fail = 0, r;
    const void *d;
    size_t n;
    while ((r = pp_collector_next(c, &d, &n, -1)) == 0) {
        if ((c->cur.flags & IT_F_FAIL) && !first_fail)
            first_fail = c->cur.status;
        handler(d, n, arg);
    }
    return r == PP_END ? first_fail : r;
}

/* Destroy may free the jobs: every one ended, and the engine drained
 * every message of the workers' ones. */
static bool all_settled(struct pp_collector *c)
{
    if (c->pend_head)
        observe(c, UINT_MAX);
    bool drained = true;
    for (struct cjob *j = c->order == PP_ORDERED ? c->first : c->ready; j; j = j->next) {
        struct pp_task *t = j->worker ? job_task(j) : NULL;
        if (!t)
            continue;
        if (!c->track && !j->done && rec_done(t)) /* else observe's to see */
            mark_done(c, NULL, j);
        if (j->done && j->received < t->rec->nmsgs)
            drained = false;
    }
    return drained && c->finals == c->submitted;
}

PP_EXPORT void pp_collector_destroy(pp_collector *c)
{
    if (!c)
        return;
    if (c->bg) {
        pp__bg_fini(c); /* no wait: the background jobs go on, their unread messages kept */
    } else {
        pthread_mutex_lock(&c->lock);
        c->unbound++; /* nobody reads from here on: nothing may wait for it */
        unpause(c);
        while (!all_settled(c)) /* the engine, created processes deliver to us */
            bell_wait(c, all_settled, NULL);
        pthread_mutex_unlock(&c->lock);
    }
    if (c->create)
        pp__create_fini(c);
    pthread_mutex_lock(&c->lock);
    drop_current(c);
    while (c->run_left) { /* the rest of a run being read: nothing to free */
        const void *d;
        size_t n;
        run_next(c, &d, &n);
    }
    q_free(c->s, &c->q);
    q_free(c->s, &c->rq);
    for (struct cjob *j = c->order == PP_ORDERED ? c->first : c->ready; j; j = j->next) {
        q_free(c->s, &j->q);
        struct pp_task *t = job_task(j);
        if (t)
            pp_task_release(t);
    }
    pthread_mutex_unlock(&c->lock);
    /* The engine may be following a task's t->coll to one of our jobs
     * (a message it drains): it does so under coll_lock. */
    if (c->s)
        pthread_mutex_lock(&c->s->coll_lock);
    while (c->slabs) {
        struct cjob_slab *sl = c->slabs;
        c->slabs = sl->next;
        free(sl);
    }
    if (c->s)
        pthread_mutex_unlock(&c->s->coll_lock);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int pp__coll_current(pp_collector *c)
{
    if (!c->cur_valid || !(c->cur.flags & IT_F_FINAL))
        return 0;
    return PP_COLL_LAST | (c->cur.kind == IT_NOTHING ? PP_COLL_NONE : 0);
}

void pp__coll_free_orphan(pp_collector *c)
{
    /* Its server is gone, and with it every task, block and bell: only
     * the host memory that is the collector's own is freed. */
    c->s = NULL;
    c->cur_valid = false;
    while (c->run_left) {
        const void *d;
        size_t n;
        run_next(c, &d, &n);
    }
    q_free(NULL, &c->q);
    q_free(NULL, &c->rq);
    for (struct cjob *j = c->order == PP_ORDERED ? c->first : c->ready; j; j = j->next)
        q_free(NULL, &j->q);
    while (c->slabs) {
        struct cjob_slab *sl = c->slabs;
        c->slabs = sl->next;
        free(sl);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}
