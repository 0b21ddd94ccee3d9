/*
 * consumer.c - taking, completing and (after a death) settling jobs; the
 * same code for every consumer of the submit ring (consumer.h).
 *
 * Ordering labels (besides the ring's and the record's):
 *   F1  fin_tok, fin_ci and fin_val are written before DONE is published,
 *       so a post-mortem that finds DONE (or a reused record) knows which
 *       count to raise; the consumer's death is what orders them for the
 *       engine (the kernel reports it after its last store).
 *   G1  the group count is raised (release) after DONE: pp_wait never
 *       returns before the task is done; pairs with pp__done_sum.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void pp__cons_init(struct pp_cons *k, struct pp_shared *sh, char *base, uint32_t slot)
{
    k->sh = sh;
    k->seg.fd = -1;
    k->seg.base = base;
    k->seg.size = sh->seg_size;
    k->slot = slot;
    k->c = pp__cons_at(sh, slot);
    k->ring = pp_seg_ptr(&k->seg, sh->ring_off);
    k->done = pp__done_ring(sh, slot);
    k->ret = pp__ret_ring(sh, slot);
}

/* ---------------------------------------------------------------- */
/* Taking                                                             */
/* ---------------------------------------------------------------- */

/* After a dequeue: room was made in the ring. */
void pp__taken(struct pp_shared *sh)
{
    /* Pairs with the fence in pp__enqueue: we made room; if jobs wait in
     * the host's overflow queue, have the engine move them in. */
    pp_fence_seq_cst();
    uint32_t ov = 1;
    if (pp_unlikely(pp_load_relaxed(&sh->overflow_waiting) == 1) &&
        atomic_compare_exchange_strong(&sh->overflow_waiting, &ov, 2)) {
        uint64_t one = 1;
        (void)!write(sh->engine_efd, &one, sizeof(one));
    }
    if (pp_unlikely(sh->max_queued_set))
        pp_event_signal(&sh->space, 1);
}

struct pp_rec *pp__cons_take(struct pp_cons *k, uint64_t *ret_tok)
{
    uint64_t tok;

    while (pp_ring_dequeue_mc(k->ring, &tok, &k->c->claim)) {
        pp__taken(k->sh);
        uint32_t idx = pp_tok_idx(tok);
        /* Acquire: pairs with the release of nrecs in pool.c grow(). */
        if (pp_likely(idx < pp_load_acquire(&k->sh->nrecs))) {
            struct pp_rec *r = pp__rec_of(k->sh, idx);
            pp__fault_point(PP_FP_TAKEN, r, tok);
            if (pp__rec_own(r, tok, k->slot)) {
                *ret_tok = tok;
                return r;
            }
        }
        /* A token of a generation that is gone: nothing to run. */
        pp_ring_claim_done(&k->c->claim);
    }
    return NULL;
}

/* ---------------------------------------------------------------- */
/* Completing                                                         */
/* ---------------------------------------------------------------- */

static void kick_engine(struct pp_shared *sh)
{
    uint64_t one = 1;
    if (pp_load_relaxed(&sh->engine_sleeping))
        (void)!write(sh->engine_efd, &one, sizeof(one));
}

/* Hands a record to the engine thread. */
static void to_engine(struct pp_cons *k, uint64_t tok)
{
    while (!pp_spsc_push(k->done, tok)) {
        /* Full: the engine is behind (slow callbacks).  Make sure it is
         * awake, then let it run. */
        uint64_t one = 1;
        (void)!write(k->sh->engine_efd, &one, sizeof(one));
        sched_yield();
    }
    /* Pairs with the engine's fence between setting engine_sleeping and
     * re-checking the rings: one of us sees the other. */
    pp_fence_seq_cst();
    kick_engine(k->sh);
}

void pp__cons_prepare(struct pp_cons *k, struct pp_rec *r, uint64_t tok)
{
    struct pp_consumer *c = k->c;

    if (!(r->flags & PP_RF_ENGINE)) {
        uint32_t ci = r->group;
        c->fin_ci = ci;
        c->fin_val = pp_load_relaxed(&c->group_done[ci]) + 1;
        pp_store_release(&c->fin_tok, tok + 1); /* F1 */
    }
}

void pp__cons_complete(struct pp_cons *k, struct pp_rec *r, uint64_t tok)
{
    struct pp_consumer *c = k->c;
    uint32_t ci = r->group;

    if (r->flags & PP_RF_ENGINE) {
        if (pp__rec_publish(r, tok, k->slot, PP_ST_EXECUTED)) {
            pp__fault_point(PP_FP_EXECUTED, r, tok);
            to_engine(k, tok);
        }
    } else {
        /* Read before publishing: from then on the record may be reused. */
        bool coll = r->flags & PP_RF_COLLECT;
        unsigned bell = r->bell;
        uint64_t old = pp__rec_publish(r, tok, k->slot, PP_ST_DONE);
        if (old) {
            pp__fault_point(PP_FP_EXECUTED, r, tok);
            pp_store_release(&c->group_done[ci], c->fin_val); /* G1 */
            pp__group_signal(k->sh, ci);
            if (coll)
                pp__bell_ring(k->sh, bell); /* B1 */
            if (old & PP_ST_ORPHAN)
                to_engine(k, tok); /* released early: the engine frees it */
        }
        pp_store_release(&c->fin_tok, 0);
    }
    pp__fault_point(PP_FP_HANDED, r, tok);
    pp_ring_claim_done(&c->claim);
}

/* ---------------------------------------------------------------- */
/* Result blocks                                                      */
/* ---------------------------------------------------------------- */

/* Stores that a post-mortem reads are releases: besides ordering for
 * other threads, they keep the compiler from moving the plain stores
 * before them past them (a signal lands between instructions).
 *
 * The order of stores below keeps every block findable by a post-mortem:
 * a block is always in the stash, in held[], in the return ring's claim
 * or named by the record (it may be in two of them for an instant, which
 * the post-mortem de-duplicates), except while the page heap itself hands
 * it out (pages.h: at most that block leaks). */

static void held_set(struct pp_consumer *c, uint64_t v)
{
    int i = pp_load_relaxed(&c->held[0]) == 0 ? 0 : 1;
    pp_store_release(&c->held[i], v);
}

static void held_clear(struct pp_consumer *c, uint64_t off)
{
    for (int i = 0; i < 2; i++)
        if (PP_RET_OFF(pp_load_relaxed(&c->held[i])) == off)
            pp_store_release(&c->held[i], 0);
}

/* Keeps a free block of class cls for later, or gives it to the heap.
 * A block that held[] names stops being named there once it is in the
 * stash (an instant in both is de-duplicated by a post-mortem), but
 * before it goes back to the heap: a post-mortem must never free a block
 * the heap already has (at worst, this one leaks). */
static void stash_put(struct pp_cons *k, unsigned cls, uint64_t off)
{
    struct pp_consumer *c = k->c;
    uint8_t n = pp_load_relaxed(&c->nstash[cls]);
    if (n < PP_BLOCK_STASH) {
        c->stash[cls][n] = off;
        pp_store_release(&c->nstash[cls], n + 1);
        held_clear(c, off);
    } else {
        held_clear(c, off);
        pp_pages_free(&k->sh->pages, &k->seg, off, pp_pages_class_size(cls));
    }
}

uint64_t pp__cons_block_get(struct pp_cons *k, size_t len)
{
    struct pp_consumer *c = k->c;
    unsigned cls = pp_pages_class(len);
    uint64_t v;

    while (k->ret && pp_load_relaxed(&c->nstash[cls]) == 0 &&
           pp_ring_dequeue_mc(k->ret, &v, &c->ret_claim)) {
        stash_put(k, PP_RET_CLASS(v), PP_RET_OFF(v));
        pp_ring_claim_done(&c->ret_claim);
    }
    uint8_t n = pp_load_relaxed(&c->nstash[cls]);
    if (n) {
        uint64_t off = c->stash[cls][n - 1];
        held_set(c, PP_RET_ENC(cls, off));
        pp_store_release(&c->nstash[cls], n - 1); /* after held[] names it */
        return off;
    }
    uint64_t off = pp_pages_alloc(&k->sh->pages, &k->seg, len, NULL);
    if (off)
        held_set(c, PP_RET_ENC(cls, off));
    return off;
}

void pp__cons_block_put(struct pp_cons *k, uint64_t blk, size_t len)
{
    stash_put(k, pp_pages_class(len), blk);
}

void pp__cons_block_release(struct pp_cons *k, uint64_t blk)
{
    held_clear(k->c, blk);
}

void pp__cons_flush(struct pp_cons *k)
{
    struct pp_consumer *c = k->c;
    for (unsigned cls = 0; cls < PP_PAGES_NCLASS; cls++) {
        uint8_t n = pp_load_relaxed(&c->nstash[cls]);
        while (n) {
            pp_store_relaxed(&c->nstash[cls], n - 1);
            pp_pages_free(&k->sh->pages, &k->seg, c->stash[cls][--n],
                          pp_pages_class_size(cls));
        }
    }
}

/* A full ring makes us wait for the engine: briefly, as it drains into
 * host memory, unless the job's collector holds as many unread bytes as
 * it may (collect.c): then until its reader has read some.  A few turns
 * of yielding first, then sleeps on msg_space (with a timeout, and the
 * engine asked again each time, in case a wake-up was missed). */
#define MSG_YIELDS 1000
#define MSG_SLEEP_MS 10

void pp__cons_msg_queue(struct pp_cons *k, uint16_t kind, uint64_t tok, const void *p,
                        uint32_t len)
{
    struct pp_bring *b = pp__msg_ring(k->sh, k->slot);
    uint64_t one = 1;
    for (unsigned i = 0; !pp_bring_put(b, kind, 0, tok, p, len); i++) {
        (void)!write(k->sh->engine_efd, &one, sizeof(one)); /* drain us */
        if (i < MSG_YIELDS) {
            sched_yield();
            continue;
        }
        struct timespec ts;
        uint32_t seq = pp_event_prepare(&k->c->msg_space); /* E1: pairs with the engine's signal */
        if (pp_bring_put(b, kind, 0, tok, p, len)) {
            pp_event_cancel(&k->c->msg_space);
            return;
        }
        pp_event_wait(&k->c->msg_space, seq, pp_deadline(&ts, MSG_SLEEP_MS));
        pp_event_cancel(&k->c->msg_space);
    }
}

/* The engine is woken as for a finished job (Dekker with its sleep flag). */
void pp__cons_msg_wake(struct pp_cons *k)
{
    uint64_t one = 1;
    /* Pairs with the engine's fence between setting engine_sleeping and
     * looking at the rings (engine.c).  Only the sender that clears the
     * flag writes the eventfd: a stream of messages to a sleeping engine
     * costs one system call, not one each (the engine clears the flag
     * itself when it wakes, and a stale eventfd count only makes its next
     * poll return at once). */
    pp_fence_seq_cst();
    if (pp_load_relaxed(&k->sh->engine_sleeping) && atomic_exchange(&k->sh->engine_sleeping, 0))
        (void)!write(k->sh->engine_efd, &one, sizeof(one));
}

/* ---------------------------------------------------------------- */
/* Post-mortem (engine thread)                                        */
/* ---------------------------------------------------------------- */

/* The claims of every consumer that may still be running: not a slot
 * that is empty or already known dead. */
static unsigned live_claims(struct pp_server *s, uint32_t except,
                            struct pp_ring_claim **out)
{
    unsigned n = 0, used = pp_load_relaxed(&s->sh->slots_used);
    for (unsigned i = 0; i < used; i++)
        if (i != except && s->slots[i].state != PP_SLOT_EMPTY && !s->slots[i].repair_pending)
            out[n++] = &pp__cons_at(s->sh, i)->claim;
    return n;
}

/* Frees each distinct block in blks[0..n) except `keep`. */
static void free_blocks(struct pp_server *s, uint64_t *blks, unsigned n, uint64_t keep,
                        uint64_t keep2)
{
    for (unsigned i = 0; i < n; i++) {
        uint64_t off = PP_RET_OFF(blks[i]);
        bool dup = off == 0 || off == keep || off == keep2;
        for (unsigned j = 0; j < i && !dup; j++)
            dup = PP_RET_OFF(blks[j]) == off;
        if (!dup)
            pp_pages_free(&s->sh->pages, &s->seg, off,
                          pp_pages_class_size(PP_RET_CLASS(blks[i])));
    }
}

/* Every block the dead consumer held, cached or was taking back. */
static unsigned held_blocks(struct pp_server *s, struct pp_consumer *c, uint32_t slot,
                            uint64_t *out, unsigned max)
{
    unsigned n = 0;
    uint64_t v;

    for (unsigned cls = 0; cls < PP_PAGES_NCLASS; cls++) {
        unsigned k = pp_load_relaxed(&c->nstash[cls]);
        for (unsigned i = 0; i < k && i < PP_BLOCK_STASH && n < max; i++)
            out[n++] = PP_RET_ENC(cls, c->stash[cls][i]);
        pp_store_relaxed(&c->nstash[cls], 0);
    }
    for (int i = 0; i < 2 && n < max; i++)
        if ((v = pp_load_relaxed(&c->held[i])) != 0)
            out[n++] = v;
    /* It was the return ring's only consumer: nobody else holds that
     * claim, and what is still queued there goes back to the heap too. */
    struct pp_ring *ret = pp__ret_ring(s->sh, slot);
    if (pp_ring_repair(ret, &c->ret_claim, NULL, 0, &v) == 1 && n < max)
        out[n++] = v;
    while (n < max && pp_ring_dequeue_mc(ret, &v, NULL))
        out[n++] = v;
    return n;
}

bool pp__cons_repair(struct pp_server *s, uint32_t slot, const char *death)
{
    struct pp_ring_claim *live[PP_MAX_WORKERS];
    struct pp_consumer *c = pp__cons_at(s->sh, slot);
    unsigned nlive = live_claims(s, slot, live);
    uint64_t tok;

    /* What it handed over before it died comes first: a record it
     * finished is then no longer one it "held".  Its messages all go to
     * their collectors now, bound or not: its job's end counts them. */
    pp__coll_drain(s, slot, true);
    pp__drain_slot(s, (int)slot);
    /* It may have died asleep on msg_space: the next one starts clean
     * (a stale sleeper would cost a futex call per drain). */
    atomic_store_explicit(&c->msg_space.sleepers, 0, memory_order_relaxed);

    int r = pp_ring_repair(s->ring, &c->claim, live, nlive, &tok);
    if (r == -EAGAIN)
        return false;

    struct pp_task *t = NULL;
    uint64_t st = 0;
    bool mine = false;
    if (r == 1 && pp_tok_idx(tok) < pp_load_acquire(&s->sh->nrecs)) { /* as handle_done */
        t = pp__task_of(s, pp_tok_idx(tok));
        st = pp_load_acquire(&t->rec->state);
        if (pp_st_gen(st) != pp_tok_gen(tok))
            t = NULL; /* handed over and reused since: nothing to do */
        else
            mine = pp__rec_owned_by(t->rec, tok, slot);
    }

    /* Owned and not published: nobody else touches that record now.  A
     * published one may be the user's already (only its state is read). */
    bool unpublished = t && mine && pp_st_phase(st) == PP_ST_QUEUED;

    /* Blocks first, while the record it owned still names its own (held[]
     * is cleared before publishing, so only an unpublished record can
     * name a block held[] names too). */
    uint64_t blks[PP_PAGES_NCLASS * PP_BLOCK_STASH + 4 + PP_RET_RING_CAP];
    unsigned nb = held_blocks(s, c, slot, blks, sizeof(blks) / sizeof(blks[0]));
    uint64_t keep = unpublished && t->rec->res_where == PP_RES_BLOCK ? t->rec->res_off : 0;
    /* A message block it had sent (the drain above queued it) and not yet
     * cleared from held[]: its collector's now.  Only the last one can be. */
    uint64_t sent = slot < PP_MAX_WORKERS ? s->slots[slot].last_msg_blk : 0;
    free_blocks(s, blks, nb, keep, sent);

    /* A DONE it published whose group count it had not raised yet (the
     * record may be reused by now; the slot says which count). */
    uint64_t fin = pp_load_acquire(&c->fin_tok);
    if (fin != 0 && !unpublished) {
        _Atomic uint64_t *cnt = &c->group_done[c->fin_ci % PP_NCI];
        if (pp_load_relaxed(cnt) < c->fin_val) {
            pp_store_release(cnt, c->fin_val); /* G1 */
            pp__group_signal(s->sh, c->fin_ci % PP_NCI);
        }
    }

    if (t) {
        switch (pp_st_phase(st)) {
        case PP_ST_QUEUED:
            if (mine) /* started, not published: its job failed */
                pp__fail_task(s, t, -ECHILD, death);
            else if (pp_st_gen(pp_load_relaxed(&t->rec->own)) != pp_tok_gen(tok))
                pp__enqueue(s, t, t->rec->submit_cpu); /* taken, never owned */
            break;
        case PP_ST_EXECUTED: /* published, never handed over */
            if (mine)
                pp__finish_by_engine(s, t);
            break;
        case PP_ST_DONE: /* released early, never handed over for freeing */
            if (mine && (st & PP_ST_ORPHAN))
                pp__task_free(s, t);
            break;
        }
    }
    pp__cons_reset(s, slot);
    if (slot < PP_MAX_WORKERS) {
        /* It may have died spinning (with its bit set, submitters would
         * wake nobody), or counted as awake: jobs queued meanwhile need a
         * worker that is. */
        pp__set_live(s->sh, slot, false);
        if (pp_ring_count(s->ring))
            pp__wake_any(s->sh, 1);
    }
    return true;
}

void pp__cons_reset(struct pp_server *s, uint32_t slot)
{
    struct pp_consumer *c = pp__cons_at(s->sh, slot);
    pp_store_relaxed(&c->claim.pos, 0);
    pp_store_relaxed(&c->claim.taken, 0);
    pp_store_relaxed(&c->ret_claim.pos, 0);
    pp_store_relaxed(&c->ret_claim.taken, 0);
    pp_store_relaxed(&c->fin_tok, 0);
    pp_store_relaxed(&c->held[0], 0);
    pp_store_relaxed(&c->held[1], 0);
    pp_store_relaxed(&c->idle, 0);
    for (unsigned cls = 0; cls < PP_PAGES_NCLASS; cls++)
        pp_store_relaxed(&c->nstash[cls], 0);
}

/* ---------------------------------------------------------------- */
/* Fault injection for the fault tests                               */
/* ---------------------------------------------------------------- */

/*
 * PP_FAULT=point:n makes a worker SIGKILL itself at that point of its
 * n-th job (points: taken, started, executed, handed; consumer.h), so a
 * test can die at an instant it could otherwise only hit by luck.  Read
 * once when the worker starts; unset, it costs one predicted branch.
 */
int pp__fault_armed;
static unsigned fault_every, fault_count;

void pp__fault_setup(void)
{
    static const char *const names[] = { "", "taken", "started", "executed", "handed" };
    const char *e = getenv("PP_FAULT");

    pp__fault_armed = PP_FP_NONE;
    if (!e)
        return;
    for (int i = 1; i < 5; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(e, names[i], n) == 0 && e[n] == ':') {
            fault_every = (unsigned)strtoul(e + n + 1, NULL, 10);
            pp__fault_armed = fault_every ? i : PP_FP_NONE;
        }
    }
}

void pp__fault_point_slow(int point, struct pp_rec *r, uint64_t tok)
{
    if (++fault_count < fault_every)
        return;
    if (point == PP_FP_HANDED) {
        /* Give the engine time to finish the record and a submitter time
         * to reuse it: the window in which a stale claim could mislead a
         * post-mortem. */
        uint64_t end = pp_now_ns() + 20000000;
        while (pp_now_ns() < end &&
               pp_st_gen(pp_load_relaxed(&r->state)) == pp_tok_gen(tok))
            pp_cpu_relax();
    }
    kill(getpid(), SIGKILL);
}
