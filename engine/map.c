/*
 * map.c - pp_map: one function over an array, results in input order.
 *
 * The input is copied once into the shared arena (or used in place when it
 * already lies there), cut into chunks, and each chunk is one job whose
 * worker loops over its items, calling the function with a job whose
 * argument points at the item and whose result space is the item's output
 * slot.  The cost per item is then a function call and a little
 * bookkeeping; the per-job cost is paid once per chunk.
 */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct map_chunk {           /* the chunk job's inline argument */
    uint64_t in_off, out_off;
    uint64_t in_size, out_size;
    uint64_t first, count;
};

struct map_result {          /* the chunk job's inline result */
    int32_t status;          /* of its lowest failing item, or 0 */
    uint32_t pad;
    uint64_t fail_index;     /* that item, or UINT64_MAX */
};

/* ---------------------------------------------------------------- */
/* Worker side                                                        */
/* ---------------------------------------------------------------- */

static int run_item(struct pp_worker *w, struct pp_rec *rec, pp_fn *fn,
                    const struct map_chunk *c, const char *in, unsigned char *out,
                    uint64_t idx, char *err, uint32_t *err_len)
{
    unsigned char *slot = out + idx * c->out_size;
    struct pp_job job = {
        .w = w,
        .rec = rec,
        .arg = in + idx * c->in_size,
        .arg_len = c->in_size,
        .map_slot = slot,
        .map_cap = c->out_size,
        .err = err,
        .err_len = err_len,
    };
    int st = fn(&job);

    if (job.fail_code)
        st = job.fail_code;
    else if (job.alloc_err)
        st = job.alloc_err; /* as pp__job_finish */
    size_t written = job.res ? job.res_len : 0;
    if (written < c->out_size)
        memset(slot + written, 0, c->out_size - written);
    return st;
}

int pp__map_run(struct pp_worker *w, struct pp_rec *rec, pp_fn *fn)
{
    const struct pp_segment *seg = &w->k.seg;
    struct map_chunk c;
    struct map_result res = { 0, 0, UINT64_MAX };
    char err[PP_ERRMSG_MAX];
    uint32_t err_len = 0;

    memcpy(&c, rec->inl_arg, sizeof(c));
    const char *in = pp_seg_ptr(seg, c.in_off);
    unsigned char *out = pp_seg_ptr(seg, c.out_off);
    for (uint64_t i = c.first; i < c.first + c.count; i++) {
        int st = run_item(w, rec, fn, &c, in, out, i, err, &err_len);
        if (st < 0 && res.fail_index == UINT64_MAX) {
            res.status = st;
            res.fail_index = i;
            memcpy(rec->err, err, err_len);
            rec->err[err_len < PP_ERRMSG_MAX ? err_len : PP_ERRMSG_MAX - 1] = '\0';
            rec->err_len = err_len;
        }
        err_len = 0;
    }
    struct pp_job chunk = { .w = w, .rec = rec };
    memcpy(pp__res_space(&chunk, sizeof(res)), &res, sizeof(res)); /* inline */
    pp__res_settle(&chunk);
    return 0; /* item failures travel in the result, not as chunk status */
}

/* ---------------------------------------------------------------- */
/* Remote nodes (net.c): the node runs the items, the host places them */
/* ---------------------------------------------------------------- */

void pp__map_view(struct pp_server *s, const struct pp_rec *rec, struct pp_map_view *v)
{
    struct map_chunk c;
    memcpy(&c, rec->inl_arg, sizeof(c));
    v->in = (const char *)pp_seg_ptr(&s->seg, c.in_off) + c.first * c.in_size;
    v->out = (char *)pp_seg_ptr(&s->seg, c.out_off) + c.first * c.out_size;
    v->in_size = c.in_size;
    v->out_size = c.out_size;
    v->first = c.first;
    v->count = c.count;
}

void pp__map_settle(struct pp_rec *rec, int status, uint64_t fail_index)
{
    struct map_result res = { status, 0, status < 0 ? fail_index : UINT64_MAX };
    memcpy(rec->inl_res, &res, sizeof(res));
    rec->res_len = sizeof(res);
    rec->res_where = PP_RES_INLINE;
}

/* ---------------------------------------------------------------- */
/* Host side                                                          */
/* ---------------------------------------------------------------- */

static uint64_t nchunks_for(struct pp_server *s, size_t n)
{
    uint64_t w = (uint64_t)pp_load_relaxed(&s->target);
    uint64_t k = (w ? w : 1) * 4; /* a few per worker: balance, few jobs */
    return n < k ? n : k;
}

/* Waits for every chunk and returns pp_map's status. */
static int collect(pp_task **tasks, const uint64_t *firsts, uint64_t k)
{
    int status = 0;
    uint64_t lowest = UINT64_MAX;

    for (uint64_t i = 0; i < k; i++) {
        const void *data;
        size_t len;
        struct map_result mr;
        pp_task_wait(tasks[i], -1);
        int st = pp_task_result(tasks[i], &data, &len);
        if (st < 0) { /* the chunk itself failed (its worker died) */
            mr.status = st;
            mr.fail_index = firsts[i];
        } else {
            memcpy(&mr, data, sizeof(mr));
        }
        if (mr.fail_index < lowest) {
            lowest = mr.fail_index;
            status = mr.status;
        }
    }
    return status;
}

PP_EXPORT int pp_map(pp_server *s, pp_fn *fn, const void *in, size_t in_size,
                     size_t n, void *out, size_t out_size)
{
    uint32_t id;
    int r;

    if (!s || !fn || (!in && in_size && n) || (!out && out_size && n))
        return -EINVAL;
    if (n == 0)
        return 0;
    if (in_size > PP_MAX_PAYLOAD / n || out_size > PP_MAX_PAYLOAD / n)
        return -E2BIG;
    if (pp__in_engine(s))
        return -EDEADLK;
    if ((r = pp__fn_id(s, fn, &id)) < 0)
        return r;

    size_t in_bytes = in_size * n, out_bytes = out_size * n;
    bool in_place = in_bytes && pp_arena_owns(s->arena, in) &&
                    pp_arena_owns(s->arena, (const char *)in + in_bytes - 1);
    void *in_blk = in_place ? (void *)in : pp_arena_alloc(s->arena, in_bytes);
    void *out_blk = pp_arena_alloc(s->arena, out_bytes);
    uint64_t k = nchunks_for(s, n);
    pp_task **tasks = calloc(k, sizeof(*tasks));
    uint64_t *firsts = calloc(k, sizeof(*firsts));
    r = -ENOMEM;
    if (!in_blk || !out_blk || !tasks || !firsts)
        goto out;
    if (!in_place && in_bytes)
        memcpy(in_blk, in, in_bytes);

    uint64_t per = n / k, extra = n % k, first = 0, submitted = 0;
    for (uint64_t i = 0; i < k; i++) {
        struct map_chunk c = { pp_seg_off(&s->seg, in_blk), pp_seg_off(&s->seg, out_blk),
                               in_size, out_size, first, per + (i < extra) };
        r = pp__submit_id(s, id, 0, &c, sizeof(c), PP_RF_MAP, NULL, NULL, &tasks[i]);
        if (r < 0)
            break;
        firsts[i] = first;
        first += c.count;
        submitted++;
    }
    if (submitted == k) {
        r = collect(tasks, firsts, k);
        if (out_bytes)
            memcpy(out, out_blk, out_bytes);
    } else {
        for (uint64_t i = 0; i < submitted; i++)
            pp_task_wait(tasks[i], -1);
    }
    for (uint64_t i = 0; i < submitted; i++)
        pp_task_release(tasks[i]);
out:
    free(tasks);
    free(firsts);
    if (!in_place)
        pp_arena_free(s->arena, in_blk);
    pp_arena_free(s->arena, out_blk);
    return r;
}
