/*
 * futex.c - the two futex system calls pp uses, and time helpers.
 */
#define _GNU_SOURCE
#include "futex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int pp_futex_wait(_Atomic uint32_t *addr, uint32_t expected,
                  const struct timespec *deadline)
{
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
     * loop of spurious wake-ups never stretches the timeout. */
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET, expected,
                     deadline, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return 0;
    if (errno == EAGAIN)
        return 0; /* the value had changed already */
    return -errno;
}

int pp_futex_wake(_Atomic uint32_t *addr, int n)
{
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

uint64_t pp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct timespec *pp_deadline(struct timespec *ts, int timeout_ms)
{
    if (timeout_ms < 0)
        return NULL;
    uint64_t t = pp_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    ts->tv_sec = (time_t)(t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
    return ts;
}
