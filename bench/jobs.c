/*
 * jobs.c - ppbench's job functions: thin pp_fn wrappers around the job
 * bodies in peers/peer_common.c, which every peer runs too.
 */
#include "bench.h"
#include "peers/peer_common.h"

#include <errno.h>
#include <string.h>

int job_trivial(pp_job *job)
{
    size_t len;
    const uint64_t *x = pp_job_arg(job, &len);
    uint64_t *r = pp_job_result(job, sizeof(*r));
    if (len != sizeof(*x) || !r)
        return -EINVAL;
    *r = peer_trivial(*x);
    return 0;
}

int job_checksum(pp_job *job)
{
    size_t len;
    const void *p = pp_job_arg(job, &len);
    uint64_t *r = pp_job_result(job, sizeof(*r));
    if (!r)
        return -ENOMEM;
    *r = peer_checksum(p, len);
    return 0;
}

int job_echo(pp_job *job)
{
    size_t len;
    const void *p = pp_job_arg(job, &len);
    void *r = pp_job_result(job, len);
    if (!r)
        return -ENOMEM;
    memcpy(r, p, len);
    return 0;
}

int job_spin(pp_job *job)
{
    size_t len;
    const uint64_t *us = pp_job_arg(job, &len);
    uint64_t *r = pp_job_result(job, sizeof(*r));
    if (len != sizeof(*us) || !r)
        return -EINVAL;
    peer_spin_us((unsigned)*us);
    *r = *us;
    return 0;
}
