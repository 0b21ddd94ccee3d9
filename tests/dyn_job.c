// Description: job functions in a shared object that test_dynload dlopen()s after its server has started.
#include <string.h>

#include "pp.h"

#define DYN_EXPORT __attribute__((visibility("default")))

DYN_EXPORT int ppdyn_reverse(pp_job *job);
DYN_EXPORT int ppdyn_const(pp_job *job);

/* Result: the argument bytes reversed.  Status: their count. */
int ppdyn_reverse(pp_job *job)
{
    size_t len = 0;
    const unsigned char *a = pp_job_arg(job, &len);
    unsigned char *out = pp_job_result(job, len);
    if (out == NULL)
        return pp_job_fail(job, 12 /* ENOMEM */, "ppdyn_reverse: no result space");
    for (size_t i = 0; i < len; i++)
        out[i] = a[len - 1 - i];
    return (int)len;
}

/* Uses no pp_* call: status 4242. */
int ppdyn_const(pp_job *job)
{
    (void)job;
    return 4242;
}
