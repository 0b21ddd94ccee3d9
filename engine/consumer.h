/*
 * consumer.h - what everything that runs jobs has in common.
 *
 * A consumer takes tokens from the submit ring, owns the records they
 * name, runs them (or has them run: a remote node's connection is a
 * consumer too), writes results into the records and hands them back.  Its
 * slot (struct pp_consumer, in shared memory) records, while it owns a
 * record, everything a post-mortem needs: the token it took (the ring
 * claim), the group count it is raising, and the result blocks it holds.
 * Local workers embed it (struct pp_wcb, shared.h), as libuv's handles
 * embed uv__io_t.
 *
 * Death of a consumer, and the one action for each instant (consumer.c,
 * pp__cons_repair), decided from the token's generation and the record's
 * state, never from a claim alone:
 *   took the token, did not own the record yet   -> requeued once
 *   owned it (rec->own = it), not published       -> failed, -ECHILD, once
 *   published EXECUTED, not handed to the engine  -> finished once
 *   published DONE, group count not raised yet    -> count raised once
 *   handed over (or the record reused since)      -> nothing
 */
#ifndef PP_ENGINE_CONSUMER_H
#define PP_ENGINE_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "record.h"
#include "../shm/futex.h"
#include "../shm/pages.h"
#include "../shm/ring.h"
#include "../shm/segment.h"

#define PP_BLOCK_STASH 8u /* cached free result blocks per size class */

/* Counter index of a group's bank (group.c): group * 2 + bank. */
#define PP_NCI (PP_MAX_GROUPS * 2)

struct pp_consumer {
    struct pp_ring_claim claim;     /* the token taken from the submit ring */
    struct pp_ring_claim ret_claim; /* a block taken from the return ring */
    /* DONE published, group count not raised yet: fin_tok = token + 1,
     * and group_done[fin_ci] must reach fin_val. */
    _Atomic uint64_t fin_tok;
    uint32_t fin_ci;
    uint64_t fin_val;
    /* Result blocks: those a job holds now (class << 48 | offset, 0 = none)
     * and a cache of free ones per class, returned to the page heap when
     * the consumer dies.  Written only by the consumer. */
    _Atomic uint64_t held[2];
    uint64_t stash[PP_PAGES_NCLASS][PP_BLOCK_STASH];
    _Atomic uint8_t nstash[PP_PAGES_NCLASS];
    pp_cacheline_aligned _Atomic uint32_t idle; /* a local worker waiting for work */
    /* Signalled by the engine after it took entries from this consumer's
     * message ring: a sender that found it full sleeps here (it stays
     * full while the job's collector is over its bound: collect.c). */
    struct pp_event msg_space;
    _Atomic uint64_t njobs;
    _Atomic uint64_t busy_ticks;
    pp_cacheline_aligned _Atomic uint64_t group_done[PP_NCI]; /* written by it only */
};

struct pp_shared;

/* A consumer's own handle (process-private): where its rings are. */
struct pp_cons {
    struct pp_shared *sh;
    struct pp_segment seg;
    uint32_t slot;               /* index of its pp_consumer */
    struct pp_consumer *c;
    struct pp_ring *ring;        /* the submit ring */
    struct pp_spsc *done;        /* to the engine */
    struct pp_ring *ret;         /* blocks the host gave back (NULL: none) */
};

#define PP_RET_ENC(cls, off) (((uint64_t)(cls) << 48) | (off))
#define PP_RET_CLASS(v) ((unsigned)((v) >> 48))
#define PP_RET_OFF(v) ((v) & ((1ull << 48) - 1))

/* ---- consumer side (consumer.c) ---- */

PP_HIDDEN void pp__cons_init(struct pp_cons *k, struct pp_shared *sh, char *base,
                             uint32_t slot);
/* Takes the next token and owns its record.  Returns the record, or NULL
 * when the ring is empty.  Stale tokens are dropped on the way. */
PP_HIDDEN struct pp_rec *pp__cons_take(struct pp_cons *k, uint64_t *ret_tok);
/* Before the last writes to a record it owns: records, for a
 * post-mortem, the group count that publishing will raise. */
PP_HIDDEN void pp__cons_prepare(struct pp_cons *k, struct pp_rec *r, uint64_t tok);
/* Publishes a record it owns whose status and result are written, hands
 * it to whoever finishes it, and forgets the token. */
PP_HIDDEN void pp__cons_complete(struct pp_cons *k, struct pp_rec *r, uint64_t tok);
/* Result blocks: a block for len bytes (0 = out of memory), and giving one
 * back; both keep held[] and the stash consistent for a post-mortem. */
PP_HIDDEN uint64_t pp__cons_block_get(struct pp_cons *k, size_t len);
PP_HIDDEN void pp__cons_block_put(struct pp_cons *k, uint64_t blk, size_t len);
/* The job no longer holds blk: the record names it now (published). */
PP_HIDDEN void pp__cons_block_release(struct pp_cons *k, uint64_t blk);
/* Messages (pp_job_send) to the engine, which hands them to the job's
 * collector (collect.c): PP_MSG_DATA, the bytes themselves (at most
 * PP_INLINE_MAX), or PP_MSG_BLOCK, a struct pp_msg_block naming a block
 * of this consumer's (pp__cons_block_get) that holds them.  Waits while
 * the consumer's message ring is full (the engine drains it into host
 * memory: briefly).  The kinds are collect.h's IT_DATA and IT_BLOCK. */
enum { PP_MSG_DATA = 0, PP_MSG_BLOCK = 1 };
struct pp_msg_block {
    uint64_t off, len;
};
PP_HIDDEN void pp__cons_msg_queue(struct pp_cons *k, uint16_t kind, uint64_t tok,
                                  const void *p, uint32_t len);
/* Wakes the engine for the messages queued before it (one fence: a
 * sender of many may queue them all, then wake once). */
PP_HIDDEN void pp__cons_msg_wake(struct pp_cons *k);
static inline void pp__cons_msg_put(struct pp_cons *k, uint16_t kind, uint64_t tok,
                                    const void *p, uint32_t len)
{
    pp__cons_msg_queue(k, kind, tok, p, len);
    pp__cons_msg_wake(k);
}
/* Before a planned exit: cached blocks go back to the page heap. */
PP_HIDDEN void pp__cons_flush(struct pp_cons *k);

/* Test-only fault injection (PP_FAULT=point:n, see consumer.c). */
enum { PP_FP_NONE, PP_FP_TAKEN, PP_FP_STARTED, PP_FP_EXECUTED, PP_FP_HANDED };
PP_HIDDEN void pp__fault_setup(void);
PP_HIDDEN void pp__fault_point_slow(int point, struct pp_rec *r, uint64_t tok);
extern PP_HIDDEN int pp__fault_armed;
static inline void pp__fault_point(int point, struct pp_rec *r, uint64_t tok)
{
    if (pp_unlikely(pp__fault_armed == point))
        pp__fault_point_slow(point, r, tok);
}

#endif /* PP_ENGINE_CONSUMER_H */
