/*
 * agent_coll.c - a session's collector jobs on the node (agent.h).
 *
 * One PP_ARRIVAL collector per session, made at its first collector job:
 * messages leave the node as they come, whichever job sent them, and the
 * client puts them in its own collector's order.  The collector shows an
 * end without a result too (show_ends), so that each job's RESULT can say
 * so (PP_WIRE_F_NONE).
 *
 * Records in the buffer: struct orec, then len bytes (to 8).  The reader
 * gathers what is there at once in a buffer of its own, then hands the
 * batch over under `lock` (a swap when the loop took the last one) and
 * wakes the loop when the shared buffer was empty; the loop swaps that for
 * its own (empty) one and reads it without the lock.
 * Messages wait here and in the connection's send buffer until the
 * client's socket takes them: a client that does not read makes the node
 * hold them (no bound, as a collector's own queue).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "agent.h"
#include "collect.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"

#define READ_TICK_MS 100   /* how often a reader with nothing to read looks at stop */
#define NBUCKETS 4096u     /* jobs in flight: about the client's window */

struct orec {
    uint64_t index;        /* the collector's job index */
    uint64_t len;
    int32_t status;
    uint32_t what;         /* 0: a message; PP_COLL_LAST | PP_COLL_NONE */
};

struct obuf {
    unsigned char *p;
    size_t len, cap;
};

/* A job in flight: the collector's index to the client's id. */
struct ajent {
    uint64_t index, id;
    void *arg_shm;
    struct ajent *next;
};

struct pp_acoll {
    pp_server *srv;
    struct pp_loop *loop;
    pp_collector *c;
    pthread_t th;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t more;   /* a submit, or stop */
    struct obuf fill;      /* the reader's (lock) */
    uint64_t submitted;    /* submits made (lock) */
    bool stop;             /* (lock) */
    int read_err;          /* the reader's error, if it gave up (lock) */
    struct obuf mine;      /* the loop's */
    struct ajent *tab[NBUCKETS]; /* loop thread only */
};

static size_t pad8(uint64_t n)
{
    return (size_t)((n + 7u) & ~(uint64_t)7u);
}

/* Room for need more bytes in b (it doubles); false when out of memory. */
static bool reserve(struct obuf *b, size_t need)
{
    if (b->cap - b->len >= need)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < need)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* Appends one record; false when out of memory. */
static bool put(struct obuf *b, const struct orec *r, const void *data)
{
    size_t need = sizeof(*r) + pad8(r->len);
    if (!reserve(b, need))
        return false;
    memcpy(b->p + b->len, r, sizeof(*r));
    if (r->len)
        memcpy(b->p + b->len + sizeof(*r), data, (size_t)r->len);
    b->len += need;
    return true;
}

/* Moves what the reader gathered into the loop's buffer (one lock and at
 * most one wake-up per batch).  False: the reader stops (stop, or out of
 * memory: the loop is told). */
static bool flush(struct pp_acoll *ac, struct obuf *mine)
{
    if (!mine->len)
        return true;
    pthread_mutex_lock(&ac->lock);
    bool was_empty = ac->fill.len == 0, ok = true;
    if (was_empty) { /* the common case: swap, no copy */
        struct obuf t = ac->fill;
        ac->fill = *mine;
        *mine = t;
    } else if (reserve(&ac->fill, mine->len)) {
        memcpy(ac->fill.p + ac->fill.len, mine->p, mine->len);
        ac->fill.len += mine->len;
    } else {
        ac->read_err = -ENOMEM; /* nothing more can leave: the session is no use */
        ok = false;
    }
    mine->len = 0;
    pthread_mutex_unlock(&ac->lock);
    if (was_empty || !ok)
        pp_loop_wake(ac->loop);
    return ok;
}

/* Batches: messages go into the reader's own buffer while more are
 * there at once (a look with timeout 0), up to FLUSH_BYTES; the batch
 * goes to the loop before the reader waits. */
#define FLUSH_BYTES (256u << 10)

static void *reader(void *arg)
{
    struct pp_acoll *ac = arg;
    struct obuf mine = { NULL, 0, 0 };
    uint64_t idle_at = UINT64_MAX; /* PP_END came when this many were submitted */
    unsigned ticks = 1023;
    uint64_t subs = 0;
    for (;;) {
        /* The lock only after PP_END (to wait for a submit) and now and
         * then (stop): not per message. */
        if (idle_at != UINT64_MAX || ++ticks % 1024 == 0) {
            pthread_mutex_lock(&ac->lock);
            while (!ac->stop && ac->submitted == idle_at)
                pthread_cond_wait(&ac->more, &ac->lock);
            bool stop = ac->stop;
            subs = ac->submitted;
            pthread_mutex_unlock(&ac->lock);
            idle_at = UINT64_MAX;
            if (stop)
                break;
        }
        const void *d;
        size_t len;
        int r = pp_collector_next(ac->c, &d, &len, 0);
        if (r == -ETIMEDOUT || r == PP_END) {
            if (!flush(ac, &mine))
                break;
            if (r == -ETIMEDOUT)
                r = pp_collector_next(ac->c, &d, &len, READ_TICK_MS);
        }
        if (r == PP_END) {
            /* Every job submitted when that call began was read: at least
             * the subs seen before it, perhaps more; a look at the count
             * under the lock tells, before any wait. */
            pthread_mutex_lock(&ac->lock);
            idle_at = ac->submitted == subs ? subs : UINT64_MAX;
            subs = ac->submitted;
            pthread_mutex_unlock(&ac->lock);
            continue;
        }
        if (r == -ETIMEDOUT) {
            ticks = 1023; /* nothing for a while: look at stop */
            continue;
        }
        struct orec o = { .index = pp_collector_job(ac->c), .len = len };
        o.what = r == 0 ? (uint32_t)pp__coll_current(ac->c) : 0;
        o.status = o.what ? pp_collector_status(ac->c) : 0;
        if (r < 0 || !put(&mine, &o, d)) {
            flush(ac, &mine);
            pthread_mutex_lock(&ac->lock);
            ac->read_err = r < 0 ? r : -ENOMEM;
            pthread_mutex_unlock(&ac->lock);
            pp_loop_wake(ac->loop);
            break;
        }
        if (mine.len >= FLUSH_BYTES && !flush(ac, &mine))
            break;
    }
    free(mine.p);
    return NULL;
}

int pp__acoll_new(pp_server *srv, struct pp_loop *loop, struct pp_acoll **ret)
{
    struct pp_acoll *ac = calloc(1, sizeof(*ac));
    if (!ac)
        return -ENOMEM;
    ac->srv = srv;
    ac->loop = loop;
    int r = pp_collector_new(srv, PP_ARRIVAL, 0, &ac->c);
    if (r < 0) {
        free(ac);
        return r;
    }
    ac->c->show_ends = true;
    pthread_mutex_init(&ac->lock, NULL);
    pthread_cond_init(&ac->more, NULL);
    if (pthread_create(&ac->th, NULL, reader, ac) != 0) {
        pp_collector_destroy(ac->c);
        pthread_cond_destroy(&ac->more);
        pthread_mutex_destroy(&ac->lock);
        free(ac);
        return -EAGAIN;
    }
    ac->started = true;
    *ret = ac;
    return 0;
}

int pp__acoll_submit(struct pp_acoll *ac, pp_fn *fn, const void *arg, size_t len, uint64_t id,
                     void *arg_shm)
{
    struct ajent *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    uint64_t index;
    int r = pp__coll_submit(ac->c, fn, arg, len, &index);
    if (r < 0) {
        free(e);
        return r;
    }
    /* Before the pump can see its messages: the pump runs in this thread. */
    e->index = index;
    e->id = id;
    e->arg_shm = arg_shm;
    struct ajent **b = &ac->tab[index % NBUCKETS];
    e->next = *b;
    *b = e;
    pthread_mutex_lock(&ac->lock);
    ac->submitted++;
    pthread_cond_signal(&ac->more);
    pthread_mutex_unlock(&ac->lock);
    return 0;
}

static struct ajent *find(struct pp_acoll *ac, uint64_t index, bool take)
{
    for (struct ajent **p = &ac->tab[index % NBUCKETS]; *p; p = &(*p)->next)
        if ((*p)->index == index) {
            struct ajent *e = *p;
            if (take)
                *p = e->next;
            return e;
        }
    return NULL;
}

int pp__acoll_pump(struct pp_acoll *ac, const struct pp_acoll_ops *ops, void *ctx)
{
    pthread_mutex_lock(&ac->lock);
    int err = ac->read_err;
    struct obuf t = ac->fill;
    ac->mine.len = 0;
    ac->fill = ac->mine; /* its allocation is reused */
    ac->mine = t;
    pthread_mutex_unlock(&ac->lock);
    for (size_t off = 0; off < ac->mine.len;) {
        struct orec o;
        memcpy(&o, ac->mine.p + off, sizeof(o));
        const unsigned char *d = ac->mine.p + off + sizeof(o);
        off += sizeof(o) + pad8(o.len);
        struct ajent *e = find(ac, o.index, o.what != 0);
        if (!e)
            continue; /* cannot be: every index read was submitted here */
        if (!o.what) {
            ops->message(ctx, e->id, d, (size_t)o.len);
            continue;
        }
        bool failed = o.status < 0;
        ops->end(ctx, e->id, o.status, failed ? (const char *)d : NULL,
                 failed ? (size_t)o.len : 0, failed ? NULL : d, failed ? 0 : (size_t)o.len,
                 o.what & PP_COLL_NONE);
        if (e->arg_shm)
            pp_shm_free(ac->srv, e->arg_shm);
        free(e);
    }
    return err;
}

void pp__acoll_stop(struct pp_acoll *ac)
{
    if (!ac || !ac->started)
        return;
    pthread_mutex_lock(&ac->lock);
    ac->stop = true;
    pthread_cond_signal(&ac->more);
    pthread_mutex_unlock(&ac->lock);
    pthread_join(ac->th, NULL);
    ac->started = false;
}

void pp__acoll_free(struct pp_acoll *ac)
{
    if (!ac)
        return;
    pp__acoll_stop(ac);
    pp__coll_free_orphan(ac->c);
    for (unsigned i = 0; i < NBUCKETS; i++)
        for (struct ajent *e = ac->tab[i], *n; e; e = n) {
            n = e->next;
            free(e); /* arg_shm went with the server */
        }
    free(ac->fill.p);
    free(ac->mine.p);
    pthread_cond_destroy(&ac->more);
    pthread_mutex_destroy(&ac->lock);
    free(ac);
}
