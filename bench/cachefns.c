/*
 * cachefns.c - BENCH_NFNS distinct job functions for the cache workload:
 * each is a separate symbol the workers have never resolved, so its first
 * job pays the whole identification and resolution path.
 */
#include "bench.h"

#include <errno.h>

/* Each function stores its own number here, so no two have the same code
 * and the compiler cannot fold them into one (-fipa-icf). */
volatile int bench_fn_tag;

#define FN(n)                                              \
    static int cf_##n(pp_job *job)                         \
    {                                                      \
        size_t len;                                        \
        const uint64_t *x = pp_job_arg(job, &len);         \
        uint64_t *r = pp_job_result(job, sizeof(*r));      \
        if (len != sizeof(*x) || !r)                       \
            return -EINVAL;                                \
        bench_fn_tag = n;                                  \
        *r = *x * 2 + 1;                                   \
        return 0;                                          \
    }
#define FN10(d) FN(d##0) FN(d##1) FN(d##2) FN(d##3) FN(d##4) \
                FN(d##5) FN(d##6) FN(d##7) FN(d##8) FN(d##9)
#define FN100(d) FN10(d##0) FN10(d##1) FN10(d##2) FN10(d##3) FN10(d##4) \
                 FN10(d##5) FN10(d##6) FN10(d##7) FN10(d##8) FN10(d##9)
FN100(1) FN100(2) FN100(3) FN100(4) FN100(5)
FN100(6) FN100(7) FN100(8) FN100(9) FN100(10)

#define P(n) cf_##n,
#define P10(d) P(d##0) P(d##1) P(d##2) P(d##3) P(d##4) \
               P(d##5) P(d##6) P(d##7) P(d##8) P(d##9)
#define P100(d) P10(d##0) P10(d##1) P10(d##2) P10(d##3) P10(d##4) \
                P10(d##5) P10(d##6) P10(d##7) P10(d##8) P10(d##9)

pp_fn *const bench_fns[BENCH_NFNS] = {
    P100(1) P100(2) P100(3) P100(4) P100(5)
    P100(6) P100(7) P100(8) P100(9) P100(10)
};
