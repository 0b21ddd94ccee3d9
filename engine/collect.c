/*
 * collect.c - collectors (pprocess Map, Queue, Exchange) on the job path.
 *
 * A collector's job is an ordinary record with PP_RF_COLLECT and an
 * engine callback whose argument is the job's struct cjob.  Its messages
 * (pp_job_send, worker.c) go through its consumer's message ring
 * (shm/bring.h) to the engine thread, which appends them to the
 * collector's queue here; the job's result or failure is appended by the
 * callback, which the engine runs after it drained that consumer's
 * messages (pp__drain_slot), so it always comes last.  Small messages are
 * copied into the queue's chunks (no allocation per message); large ones
 * stay in the page-heap block the worker wrote them into, and the reader
 * sees them there.
 *
 * Queues.  PP_ARRIVAL: one queue.  PP_ORDERED: one queue per job, jobs in
 * submission order; the reader drains the oldest job's queue (while it
 * runs, too) and moves on when its last message is read.
 *
 * Everything below is under the collector's lock; the engine thread
 * takes it once per run of messages of one collector.
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
    _Alignas(8) unsigned char buf[];
};

/* ---------------------------------------------------------------- */
/* Queues                                                             */
/* ---------------------------------------------------------------- */

/* A failure's text is followed by a NUL (pp_collector_error returns it). */
static size_t item_size(const struct item *it)
{
    size_t n = (size_t)it->len + ((it->flags & IT_F_FAIL) != 0);
    return sizeof(struct item) + (it->kind == IT_DATA ? (n + 7u) & ~(size_t)7u : 0);
}

/* Appends an item; false when out of memory (the message is dropped and
 * the caller says so). */
static bool q_put(struct queue *q, const struct item *it, const void *data)
{
    size_t need = item_size(it);
    struct chunk *c = q->tail;
    if (!c || c->cap - c->used < need) {
        size_t cap = q->cap ? q->cap * 2 : CHUNK_MIN; /* where the queue had got to */
        if (cap > CHUNK_MAX)
            cap = CHUNK_MAX;
        if (cap < need)
            cap = need;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return false;
        c->next = NULL;
        c->used = c->read = 0;
        c->cap = q->cap = cap;
        if (q->tail)
            q->tail->next = c;
        else
            q->head = c;
        q->tail = c;
    }
    memcpy(c->buf + c->used, it, sizeof(*it));
    if (need > sizeof(*it) && it->len)
        memcpy(c->buf + c->used + sizeof(*it), data, it->len);
    if (it->kind == IT_DATA && (it->flags & IT_F_FAIL))
        c->buf[c->used + sizeof(*it) + it->len] = '\0';
    c->used += need;
    return true;
}

/* The oldest item, or NULL.  Frees chunks read to the end. */
static struct item *q_peek(struct queue *q)
{
    struct chunk *c;
    while ((c = q->head) && c->read == c->used) {
        if (c == q->tail) {
            c->read = c->used = 0; /* keep the last one for reuse */
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

/* ---------------------------------------------------------------- */
/* What an item holds                                                 */
/* ---------------------------------------------------------------- */

static void item_free(struct pp_server *s, const struct item *it)
{
    if (it->kind == IT_BLOCK && s)
        pp__block_free(s, it->slot, it->ref, it->len);
    else if (it->kind == IT_HEAP)
        free((void *)(uintptr_t)it->ref);
    if (it->task)
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

static void wake_reader(struct pp_collector *c)
{
    if (c->readers_waiting)
        pthread_cond_broadcast(&c->cond);
}

/* ---------------------------------------------------------------- */
/* Sources                                                            */
/* ---------------------------------------------------------------- */

/* wake: tell a waiting reader (the engine's drain does it once per pass). */
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
    if (ok)
        ok = q_put(job_queue(c, j), it, data);
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
            free(j); /* nothing names it any more */
        pthread_cond_broadcast(&c->cond); /* readers, and submitters at the limit */
    } else if (wake) {
        wake_reader(c);
    }
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
    struct cjob *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->c = c;
    pthread_mutex_lock(&c->lock);
    while (c->limit && c->submitted - c->finals >= c->limit)
        pthread_cond_wait(&c->cond, &c->lock);
    j->index = c->submitted++;
    if (c->order == PP_ORDERED) { /* before it can send anything */
        if (c->last)
            c->last->next = j;
        else
            c->first = j;
        c->last = j;
    }
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
    /* Counted as one that ended and was read, so that PP_END and the
     * limit still add up (indices stay as given). */
    c->finals++;
    c->finals_read++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    free(j);
}

int pp__coll_alloc(struct pp_server *s, enum pp_order order, unsigned limit,
                   struct pp_collector **ret)
{
    if (order != PP_ORDERED && order != PP_ARRIVAL)
        return -EINVAL;
    struct pp_collector *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->s = s;
    c->order = order;
    c->limit = limit;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    *ret = c;
    return 0;
}

/* ---------------------------------------------------------------- */
/* The engine side                                                    */
/* ---------------------------------------------------------------- */

/* The job's last message: its result, its failure, or (no result set)
 * nothing the reader sees.  Engine thread, from the task's callback. */
static void on_done(pp_task *t, void *arg)
{
    struct cjob *j = arg;
    const void *data = NULL;
    size_t len = 0;
    int status = pp_task_result(t, &data, &len);
    struct item it = { .status = status, .flags = IT_F_FINAL, .task = (uint64_t)(uintptr_t)t };
    if (status < 0) {
        const char *err = pp_task_error(t);
        if (!err)
            err = strerror(-status);
        it.kind = IT_DATA;
        it.flags |= IT_F_FAIL;
        it.len = (uint32_t)strlen(err);
        data = err;
    } else {
        it.kind = t->rec->res_where == PP_RES_NONE ? IT_NOTHING : IT_TASK;
        it.len = (uint32_t)len;
    }
    pp__coll_add(j->c, j, &it, data);
}

struct drain_ctx {
    struct pp_server *s;
    uint32_t slot;
    struct pp_collector *locked;
};

/* A block message's payload in the ring (worker.c, pp_job_send). */
struct blk_ref {
    uint64_t off, len;
};

/* Where a block could be: page aligned, inside the page heap. */
static bool block_plausible(struct pp_server *s, uint64_t off, uint64_t len)
{
    const struct pp_pages *pa = &s->sh->pages;
    return len && len <= PP_MAX_PAYLOAD && off % PP_PAGE == 0 && off >= pa->start &&
           off < pa->end && len <= pa->end - off;
}

static void drain_one(void *ctx, const struct pp_bring_hdr *h, const unsigned char *payload)
{
    struct drain_ctx *d = ctx;
    struct pp_server *s = d->s;
    uint32_t idx = pp_tok_idx(h->tag);
    bool block = h->kind == IT_BLOCK;
    struct blk_ref b = { 0, 0 };
    if (block) {
        if (h->len != sizeof(b))
            return;
        memcpy(&b, payload, sizeof(b));
        if (!block_plausible(s, b.off, b.len))
            return; /* not a block of ours: nothing to free or show */
        if (d->slot < PP_MAX_WORKERS)
            s->slots[d->slot].last_msg_blk = b.off; /* see pp__cons_repair */
    } else if (h->kind != IT_DATA) {
        return;
    }
    /* Whose job: a collector's record in the token's generation whose
     * callback has not run (running, or published EXECUTED and waiting
     * in the done ring behind this drain); acquire of nrecs: as
     * pp__handle_done. */
    struct pp_task *t = NULL;
    if (idx < pp_load_acquire(&s->sh->nrecs)) {
        t = pp__task_of(s, idx);
        uint64_t st = pp_load_acquire(&t->rec->state);
        uint32_t ph = pp_st_phase(st);
        if (pp_st_gen(st) != pp_tok_gen(h->tag) ||
            (ph != PP_ST_QUEUED && ph != PP_ST_EXECUTED) || t->cb != on_done)
            t = NULL;
    }
    if (!t) {
        if (block)
            pp__block_free(s, d->slot, b.off, (size_t)b.len);
        return;
    }
    struct cjob *j = t->cb_arg;
    struct pp_collector *c = j->c;
    if (d->locked != c) {
        if (d->locked) {
            wake_reader(d->locked);
            pthread_mutex_unlock(&d->locked->lock);
        }
        pthread_mutex_lock(&c->lock);
        d->locked = c;
    }
    struct item it = { .len = block ? (uint32_t)b.len : h->len,
                       .kind = block ? IT_BLOCK : IT_DATA,
                       .slot = (uint16_t)d->slot, .ref = b.off };
    add_locked(c, j, &it, payload, false); /* frees the block if it cannot queue it */
}

void pp__coll_drain(struct pp_server *s, uint32_t slot)
{
    struct pp_bring *b = pp__msg_ring(s->sh, slot);
    if (pp_bring_empty(b))
        return;
    struct drain_ctx d = { s, slot, NULL };
    pp_bring_drain(b, drain_one, &d);
    if (d.locked) {
        wake_reader(d.locked);
        pthread_mutex_unlock(&d.locked->lock);
    }
}

bool pp__coll_pending(struct pp_server *s)
{
    PP_FOR_EACH_SLOT(s->sh, i)
        if (!pp_bring_empty(pp__msg_ring(s->sh, i)))
            return true;
    return false;
}

/* ---------------------------------------------------------------- */
/* API                                                                */
/* ---------------------------------------------------------------- */

PP_EXPORT int pp_collector_new(pp_server *s, enum pp_order order, unsigned limit,
                               pp_collector **ret)
{
    if (!s || !ret)
        return -EINVAL;
    if (pp_load_relaxed(&s->sh->has_nodes))
        return -EOPNOTSUPP;
    return pp__coll_alloc(s, order, limit, ret);
}

static int submit_id(pp_collector *c, uint32_t id, uint32_t group, const void *arg, size_t len)
{
    struct cjob *j = pp__coll_reserve(c);
    if (!j)
        return -ENOMEM;
    /* Not under the lock: the submit may block (max_queued), and the
     * engine takes the lock to deliver. */
    pp_task *t;
    int r = pp__submit_id(c->s, id, group, arg, len, PP_RF_COLLECT, on_done, j, &t);
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
    return r < 0 ? r : submit_id(c, id, 0, arg, len);
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
    return submit_id(c, id, group, arg, len);
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

/* The next item the reader may have, popped, or NULL. */
/* PP_ORDERED: the next item the reader may have, or NULL. */
static struct item *take_item(struct pp_collector *c, struct queue **qp)
{
    struct cjob *j;
    while ((j = c->first) != NULL) {
        struct item *it = q_peek(&j->q);
        if (it) {
            *qp = &j->q;
            return it;
        }
        if (!j->final)
            return NULL; /* the oldest job runs: its next message first */
        c->first = j->next; /* its last message was read */
        if (c->last == j)
            c->last = NULL;
        q_free(c->s, &j->q);
        free(j);
    }
    return NULL;
}

/* The reader's view of *it, popped from q (reader-side state only: no
 * lock needed).  Returns 0, or 1 for an item not shown (IT_NOTHING). */
static int deliver(pp_collector *c, struct queue *q, struct item *it, const void **data,
                   size_t *len, uint64_t *finals)
{
    c->cur = *it;
    const unsigned char *bytes = (const unsigned char *)(it + 1);
    q_pop(q, it); /* the chunk stays until the next call: the view */
    c->cur_valid = true;
    bool final = c->cur.flags & IT_F_FINAL;
    if (final)
        (*finals)++;
    if (c->bg)
        pp__bg_read(c, &c->cur);
    pp_task *t = (pp_task *)(uintptr_t)c->cur.task;
    switch (c->cur.kind) {
    case IT_NOTHING:
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
    default: { /* IT_TASK */
        size_t l;
        pp_task_result(t, data, &l);
        break;
    }
    }
    if (c->cur.flags & IT_F_FAIL) /* the error text, also as pp_collector_error */
        c->cur_err = t && pp_task_error(t) ? pp_task_error(t) : (const char *)*data;
    *len = c->cur.len;
    if (!final)
        c->cur.status = 0;
    return 0;
}

/* Under the lock.  PP_ORDERED: the next item, delivered.  PP_ARRIVAL:
 * everything queued moves to the reader's own queue in one go (returns
 * 2: read it there, without the lock), so that a stream of messages costs
 * the reader one lock per batch, not one per message. */
static int next_locked(pp_collector *c, const void **data, size_t *len, int timeout_ms,
                       const struct timespec *dl)
{
    c->finals_read += c->rq_finals;
    c->rq_finals = 0;
    for (;;) {
        if (c->order == PP_ARRIVAL) {
            if (q_peek(&c->q)) {
                q_free(c->s, &c->rq); /* read to the end: at most its last, empty chunk */
                c->rq.head = c->q.head;
                c->rq.tail = c->q.tail;
                c->q.head = c->q.tail = NULL; /* the engine starts a new chunk */
                return 2;
            }
        } else {
            struct queue *q;
            struct item *it = take_item(c, &q);
            if (it) {
                if (deliver(c, q, it, data, len, &c->finals_read) == 0)
                    return 0;
                continue;
            }
        }
        if (c->finals_read == c->submitted && !c->first)
            return PP_END;
        if (timeout_ms == 0)
            return -ETIMEDOUT;
        if (c->s)
            pp__before_block(c->s); /* a worker may be spinning on our CPU for jobs */
        c->readers_waiting++;
        int w = timeout_ms < 0 ? pthread_cond_wait(&c->cond, &c->lock)
                               : pthread_cond_timedwait(&c->cond, &c->lock, dl);
        c->readers_waiting--;
        if (w == ETIMEDOUT)
            return -ETIMEDOUT;
    }
}

PP_EXPORT int pp_collector_next(pp_collector *c, const void **data, size_t *len, int timeout_ms)
{
    if (!c || !data || !len || timeout_ms < -1)
        return -EINVAL;
    if (c->s && pp__in_engine(c->s))
        return -EDEADLK; /* from a callback: the engine would wait for itself */
    struct timespec dl = { 0, 0 };
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    drop_current(c);
    for (;;) {
        struct item *it;
        if (c->order == PP_ARRIVAL && (it = q_peek(&c->rq)) != NULL) {
            if (deliver(c, &c->rq, it, data, len, &c->rq_finals) == 0)
                return 0;
            continue;
        }
        pthread_mutex_lock(&c->lock);
        int r = next_locked(c, data, len, timeout_ms, &dl);
        pthread_mutex_unlock(&c->lock);
        if (r != 2)
            return r;
    }
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

PP_EXPORT void pp_collector_destroy(pp_collector *c)
{
    if (!c)
        return;
    if (c->bg) {
        pp__bg_fini(c); /* no wait: the background jobs go on, their unread messages kept */
    } else {
        pthread_mutex_lock(&c->lock);
        while (c->finals < c->submitted) /* the engine, created processes deliver to us */
            pthread_cond_wait(&c->cond, &c->lock);
        pthread_mutex_unlock(&c->lock);
    }
    if (c->create)
        pp__create_fini(c);
    pthread_mutex_lock(&c->lock);
    drop_current(c);
    q_free(c->s, &c->q);
    q_free(c->s, &c->rq);
    while (c->first) {
        struct cjob *j = c->first;
        c->first = j->next;
        q_free(c->s, &j->q);
        free(j);
    }
    pthread_mutex_unlock(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
