/*
 * record.h - the job record in shared memory and its state word.
 *
 * A record is the job slot: the submitter writes the function id and the
 * argument into it, the submit ring carries a token naming it (index and
 * generation) to a consumer, the consumer writes the result into it and
 * moves its state on.  Workers and remote-node connections are consumers
 * alike (consumer.h).  Only data that a worker may read or write lives
 * here: the host's pointers (server, callback, queue links) are in its
 * private struct pp_task (host.h), so a stray write from a job cannot
 * redirect the host.
 *
 * The state word (64 bits, changed only by the functions of rec.c):
 *
 *   bits  0..3   phase: FREE, QUEUED, EXECUTED, DONE
 *   bit   8      WAITER: a host thread sleeps on the futex (low half)
 *   bit   9      ORPHAN: the user released the task before DONE
 *   bits 32..63  generation: raised each time the record is reused
 *
 *   FREE -submit-> QUEUED -consumer publishes-> DONE
 *                         -consumer publishes-> EXECUTED -engine-> DONE
 *
 * and, in the record's second cache line, the ownership word: the
 * generation a consumer owns the record in and that consumer's slot + 1.
 * A consumer owns a record only by a CAS of that word to (gen, me), for
 * the generation its token names while the state is QUEUED(gen), and
 * publishes only a record it owns: a stale ring entry or a late write for
 * a reused record is refused, never applied.  The ownership word lives
 * apart from the state because the host polls the state's line while the
 * job runs: claiming the record there would cost one more transfer of
 * that line per job; the second line is written only by consumers (and
 * by the host for arguments and results outside the record).  The futex
 * lives on the state's low 32 bits, which hold the phase and WAITER
 * (little-endian: the low half is at the word's address; only the kernel
 * reads it as 32 bits).
 */
#ifndef PP_ENGINE_RECORD_H
#define PP_ENGINE_RECORD_H

#include <stdbool.h>
#include <stdint.h>

#include "pp.h"
#include "../shm/atomic.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the record futex is the low half of the state word: little-endian only"
#endif

enum {
    PP_ST_FREE = 0,
    PP_ST_QUEUED = 1,   /* submitted; maybe owned by a consumer (rec->own) */
    PP_ST_EXECUTED = 3, /* ran; the engine still has to finish it */
    PP_ST_DONE = 4,     /* result final; waiters may read it */
};
#define PP_ST_PHASE 0xfull
#define PP_ST_WAITER (1ull << 8)
#define PP_ST_ORPHAN (1ull << 9)

static inline uint32_t pp_st_phase(uint64_t st) { return (uint32_t)(st & PP_ST_PHASE); }
static inline uint32_t pp_st_gen(uint64_t st) { return (uint32_t)(st >> 32); }

/* The ownership word: (generation << 32) | (consumer slot + 1). */
static inline uint64_t pp_own(uint32_t gen, uint32_t slot) { return ((uint64_t)gen << 32) | (slot + 1); }

/* A ring token: the record's index and the generation it was queued in. */
static inline uint64_t pp_tok(uint32_t gen, uint32_t idx) { return ((uint64_t)gen << 32) | idx; }
static inline uint32_t pp_tok_idx(uint64_t tok) { return (uint32_t)tok; }
static inline uint32_t pp_tok_gen(uint64_t tok) { return (uint32_t)(tok >> 32); }

/* Arguments and results of at most PP_TINY bytes travel in line 0. */
#define PP_TINY 8u
enum { PP_RES_TINY, PP_RES_INLINE, PP_RES_BLOCK, /* rec->res_where */
       PP_RES_NONE };  /* a collector's job that set no result (read as TINY, 0 bytes) */
#define PP_RES_OWNER_HEAP 0xffffffffu /* res_slot: free the block to the heap */

/* rec->flags (written by the submitter before QUEUED) */
enum {
    PP_RF_ENGINE = 1u << 0,    /* finished by the engine: callback and/or
                                  server-owned (auto release) */
    PP_RF_AUTO = 1u << 1,      /* server-owned: free after the callback */
    PP_RF_ARG_ARENA = 1u << 2, /* argument block from the arena: free it */
    PP_RF_MAP = 1u << 3,       /* a pp_map chunk */
    PP_RF_ARG_EXT = 1u << 4,   /* argument at arg_off (arena copy, or the
                                  caller's pp_shm_alloc block in place) */
    PP_RF_COLLECT = 1u << 5,   /* a collector's job: pp_job_send works, and
                                  "no result" is told apart (PP_RES_NONE);
                                  finished by its consumer (never ENGINE),
                                  which rings rec->bell */
};

struct pp_rec {
    /* Line 0: everything a tiny job needs (an argument and a result of at
     * most PP_TINY bytes live here too), so such a job moves this one line
     * to the consumer and back, besides the ring slot. */
    _Atomic uint64_t state;
    uint32_t flags;
    uint32_t fn_id;
    uint32_t group;      /* counter index: PP_CI(group, bank) */
    uint32_t arg_len;    /* <= PP_MAX_PAYLOAD */
    uint32_t res_len;
    int32_t status;
    uint32_t err_len;    /* 0 = no message */
    uint16_t res_where;  /* PP_RES_TINY / PP_RES_INLINE / PP_RES_BLOCK */
    int16_t submit_cpu;  /* where the submitter ran (-1: unknown): a worker
                            that wakes another avoids that CPU (wake.c) */
    _Alignas(8) unsigned char tiny_arg[PP_TINY]; /* 8-aligned, as users read them */
    unsigned char tiny_res[PP_TINY];
    /* PP_RF_COLLECT only: messages the job sent (pp_job_send; written by
     * its consumer before it publishes DONE, or by the engine when it
     * fails the job: collect.c), and the collector's doorbell
     * (sh->bells, written by the submitter). */
    uint32_t nmsgs;
    uint16_t bell;
    /* Line 1: who owns it, and where larger payloads are. */
    pp_cacheline_aligned _Atomic uint64_t own; /* pp_own(gen, slot) of its owner */
    uint64_t arg_off;    /* with PP_RF_ARG_EXT (else not written) */
    uint64_t res_off;    /* the page-heap block of a PP_RES_BLOCK result */
    uint32_t res_slot;   /* its consumer's return ring, or PP_RES_OWNER_HEAP */
    /* Then the inline result and argument, and the error message. */
    pp_cacheline_aligned unsigned char inl_res[PP_INLINE_MAX];
    pp_cacheline_aligned unsigned char inl_arg[PP_INLINE_MAX];
    char err[PP_ERRMSG_MAX];
};

_Static_assert(__builtin_offsetof(struct pp_rec, bell) + sizeof(uint16_t) <= PP_CACHELINE,
               "a tiny job's record must fit one cache line");

static inline _Atomic uint32_t *pp_rec_futex(struct pp_rec *r)
{
    return (_Atomic uint32_t *)(void *)&r->state;
}

/* ---- rec.c: every state transition, written once ---- */

#ifndef PP_HIDDEN
#define PP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* Submitter: a fresh record (FREE) becomes QUEUED in the next generation;
 * *ret_tok gets the ring token.  Release: publishes the submitter's
 * writes, *ret_tok included. */
PP_HIDDEN void pp__rec_queue(struct pp_rec *r, uint32_t idx, uint64_t *ret_tok);
/* Back to FREE (generation kept; the next pp__rec_queue raises it). */
PP_HIDDEN void pp__rec_unqueue(struct pp_rec *r);
/* Consumer: owns a QUEUED(gen of tok) record.  False for a token whose
 * generation is gone or a record someone owns already: drop the token. */
PP_HIDDEN bool pp__rec_own(struct pp_rec *r, uint64_t tok, uint32_t owner);
/* True when consumer slot owns the record in tok's generation. */
static inline bool pp__rec_owned_by(struct pp_rec *r, uint64_t tok, uint32_t slot)
{
    return pp_load_relaxed(&r->own) == pp_own(pp_tok_gen(tok), slot);
}
/* Consumer: QUEUED(gen) owned by it -> phase (EXECUTED or DONE), flags
 * kept.  Returns the old state, or 0 when it does not own the record in
 * tok's generation (then nothing changed).  Release: publishes status and
 * result (D1). */
PP_HIDDEN uint64_t pp__rec_publish(struct pp_rec *r, uint64_t tok, uint32_t owner,
                                   uint32_t phase);
/* Consumer: a record it owns, still QUEUED(gen of tok), is queued again
 * in the next generation, so that another consumer can own it and no
 * late write for tok applies.  *ret_tok = the new token.  False when it
 * does not own it (nothing changed). */
PP_HIDDEN bool pp__rec_requeue(struct pp_rec *r, uint64_t tok, uint32_t owner,
                               uint64_t *ret_tok);
/* Engine: any phase before DONE -> DONE.  Returns the old state; wakes a
 * WAITER.  D1. */
PP_HIDDEN uint64_t pp__rec_done(struct pp_rec *r);
/* Engine: QUEUED -> EXECUTED (a failure it reports itself). */
PP_HIDDEN void pp__rec_executed(struct pp_rec *r);
/* Host: sets WAITER or ORPHAN unless the record is DONE.  Returns the
 * state it set the flag in, or the DONE state it found (check the phase). */
PP_HIDDEN uint64_t pp__rec_flag(struct pp_rec *r, uint64_t flag);

#endif /* PP_ENGINE_RECORD_H */
