/* Description: C side of the ring tests (ring.h uses C11 _Atomic, which
 * C++ cannot include); test_ring.cc drives these. */
#ifndef PP_TEST_RING_HARNESS_H
#define PP_TEST_RING_HARNESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ring_report {
    uint64_t consumed;    /* values taken, counting repaired ones */
    uint64_t duplicates;  /* values seen twice */
    uint64_t missing;     /* values never seen */
    uint64_t sum;         /* of every value taken */
    uint64_t expect_sum;  /* of every value produced */
    uint64_t kills;       /* consumers killed mid-run */
    uint64_t repaired;    /* values recovered from dead consumers' claims */
    int error;            /* 0, or -errno of a harness failure */
};

/* Single-process semantics: returns 0 or the number of the failed check. */
int ring_check_semantics(void);
int spsc_check_semantics(void);
int bring_check_semantics(void);

/* nprod producer processes each enqueue per_prod distinct values into one
 * MPMC ring of capacity cap; ncons consumer processes drain it.  With
 * kills > 0 the parent SIGKILLs that many consumers at random moments,
 * repairs their claims and starts replacements. */
void ring_stress(unsigned nprod, unsigned ncons, uint64_t per_prod, uint64_t cap,
                 unsigned kills, struct ring_report *out);

/* The same with threads in one process (what ThreadSanitizer can see). */
void ring_stress_threads(unsigned nprod, unsigned ncons, uint64_t per_prod, uint64_t cap,
                         struct ring_report *out);

#ifdef __cplusplus
}
#endif

#endif
