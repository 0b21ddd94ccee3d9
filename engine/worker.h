/*
 * worker.h - a local worker process and the job it runs (worker.c,
 * map.c, payload.c).
 */
#ifndef PP_ENGINE_WORKER_H
#define PP_ENGINE_WORKER_H

#include "internal.h"

struct pp_worker {
    struct pp_cons k;             /* its consumer slot and rings */
    struct pp_wcb *wcb;
    uint64_t spin_ns;             /* adaptive budget (shared.h) */
    pp_fn *fns[PP_MAX_FUNCTIONS]; /* resolved functions, by id */
};

/* What a job function's pp_job * is. */
struct pp_job {
    struct pp_worker *w;
    struct pp_rec *rec;
    uint64_t tok;            /* its token: names it in pp_job_send's messages */
    struct pp_bg *bg;        /* a background job (background.c): no worker, no record */
    const void *arg;
    size_t arg_len;
    void *res;               /* where the result is */
    size_t res_len;
    uint64_t res_block;      /* page-heap block holding it, 0 = none */
    size_t res_block_len;
    unsigned char *map_slot; /* map item: its output slot, else NULL */
    size_t map_cap;
    uint32_t nmsgs;          /* pp_job_send messages in the message ring */
    int fail_code;           /* 0 = not failed via pp_job_fail */
    int alloc_err;           /* a result request that failed */
    char *err;               /* where pp_job_fail writes */
    uint32_t *err_len;
    /* A tiny result is written here and copied into the record's first
     * line with the status, just before it is published: that line moves
     * between the host (which polls its state) and the worker, and one
     * burst of stores takes it once instead of once per store. */
    _Alignas(8) unsigned char tiny[PP_TINY];
};

/* payload.c, consumer side: room for a result of len bytes (tiny, inline
 * or a page-heap block), and writing where it is into the record (call
 * it last before pp__cons_complete: see pp_job.tiny). */
PP_HIDDEN void *pp__res_space(struct pp_job *job, size_t len);
PP_HIDDEN void pp__res_settle(struct pp_job *job);

/* background.c: pp_job_send and pp_job_result of a background job */
PP_HIDDEN int pp__bg_send(struct pp_job *job, const void *data, size_t len);
PP_HIDDEN void *pp__bg_result(struct pp_job *job, size_t len);

/* worker.c */
PP_HIDDEN pp_fn *pp__worker_fn(struct pp_worker *w, uint32_t id, char *err,
                               size_t errlen);

#endif /* PP_ENGINE_WORKER_H */
