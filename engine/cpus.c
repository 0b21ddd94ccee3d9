/*
 * cpus.c - how many processors this process may really use.
 *
 * "Effective processors", as pp's autodetect means it: the CPUs in our
 * affinity mask, capped by the cgroup CPU quota (a container limited to
 * 1.5 CPUs gets 2 workers, not one per host core).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>

/* ceil(quota / period) from a cgroup file, or 0 when unlimited/absent. */
static int quota_v2(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
    long long q, p;
    char word[32];
    int n = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%31s %lld", word, &p) == 2 && sscanf(word, "%lld", &q) == 1 &&
        q > 0 && p > 0)
        n = (int)((q + p - 1) / p);
    fclose(f);
    return n;
}

static long long read_ll(const char *path)
{
    FILE *f = fopen(path, "re");
    long long v = -1;
    if (!f)
        return -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static int quota_v1(void)
{
    static const char *dirs[] = { "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct" };
    char path[128];

    for (unsigned i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dirs[i]);
        long long q = read_ll(path);
        snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dirs[i]);
        long long p = read_ll(path);
        if (q > 0 && p > 0)
            return (int)((q + p - 1) / p);
    }
    return 0;
}

/* The CPUs of our affinity mask, capped by the cgroup quota (>= 1). */
static int effective_cpus(void)
{
    cpu_set_t set;
    int n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n == 0)
        n = 1;
    int q = quota_v2();
    if (q == 0)
        q = quota_v1();
    if (q > 0 && q < n)
        n = q;
    return n;
}

PP_EXPORT int pp_detect_ncpus(void)
{
    return effective_cpus();
}
