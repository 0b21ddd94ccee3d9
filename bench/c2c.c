/*
 * c2c.c - the core-to-core round-trip matrix, measured with pp's own SPSC
 * rings (shm/ring.c) between two pinned processes: what one job hand-off
 * costs between two given cores, the floor under pp's latency.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "ring.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define RING_CAP 64u

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

/* Echoes every value back until it reads UINT64_MAX. */
static void __attribute__((noreturn)) echo_loop(struct pp_spsc *in, struct pp_spsc *out)
{
    uint64_t v;
    for (;;) {
        while (pp_spsc_pop_burst(in, &v, 1) == 0)
            pp_cpu_relax();
        while (!pp_spsc_push(out, v))
            pp_cpu_relax();
        if (v == UINT64_MAX)
            _exit(0);
    }
}

/* Median round trip between cpus a and b, in ns (negative errno on error,
 * including when either side could not be pinned: the figure would not be
 * that pair's). */
static double c2c_pair(int a, int b, unsigned rounds)
{
    size_t rb = (pp_spsc_bytes(RING_CAP) + 4095) & ~(size_t)4095;
    size_t bytes = 2 * rb + 4096; /* two rings, then the echoer's pin status */
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    struct pp_spsc *ab = (struct pp_spsc *)m;
    struct pp_spsc *ba = (struct pp_spsc *)(m + rb);
    volatile int *child_pin = (volatile int *)(m + 2 * rb);
    pp_spsc_init(ab, RING_CAP);
    pp_spsc_init(ba, RING_CAP);
    pid_t pid = fork();
    if (pid < 0) {
        munmap(m, bytes);
        return -errno;
    }
    if (pid == 0) {
        *child_pin = pin(b); /* read after the first echo has come back */
        echo_loop(ab, ba);
    }
    cpu_set_t old;
    sched_getaffinity(0, sizeof(old), &old);
    int pin_err = pin(a);
    double *v = malloc(rounds * sizeof(double));
    const unsigned batch = 100;
    for (unsigned r = 0; v && r < rounds + rounds / 10; r++) {
        double t0 = bench_now_ns();
        for (unsigned i = 0; i < batch; i++) {
            uint64_t x = i, y;
            while (!pp_spsc_push(ab, x))
                pp_cpu_relax();
            while (pp_spsc_pop_burst(ba, &y, 1) == 0)
                pp_cpu_relax();
        }
        if (r >= rounds / 10)
            v[r - rounds / 10] = (bench_now_ns() - t0) / batch;
    }
    uint64_t stop = UINT64_MAX, y;
    while (!pp_spsc_push(ab, stop))
        pp_cpu_relax();
    while (pp_spsc_pop_burst(ba, &y, 1) == 0)
        pp_cpu_relax();
    waitpid(pid, NULL, 0);
    sched_setaffinity(0, sizeof(old), &old);
    if (pin_err == 0)
        pin_err = *child_pin;
    munmap(m, bytes);
    double p50 = -ENOMEM, p99, p999;
    if (pin_err < 0) {
        fprintf(stderr, "ppbench: c2c cpu %d <-> cpu %d: cannot pin: %s\n", a, b,
                strerror(-pin_err));
        p50 = pin_err;
    } else if (v) {
        bench_percentiles(v, rounds, &p50, &p99, &p999);
    }
    free(v);
    return p50;
}

int pp_bench_c2c(const struct bench_opts *o)
{
    cpu_set_t set;
    int cpus[CPU_SETSIZE], n = 0;
    unsigned rounds = o->quick ? 200 : 2000;

    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return -errno;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j)
                continue;
            bench_progress("c2c cpu %d <-> cpu %d", cpus[i], cpus[j]);
            double ns = c2c_pair(cpus[i], cpus[j], rounds);
            if (ns < 0)
                return (int)ns;
            struct bench_result r;
            char v[40];
            snprintf(v, sizeof(v), "cpu%d-cpu%d", cpus[i], cpus[j]);
            bench_result_init(&r, "c2c", "pp", v);
            r.workers = 2;
            r.jobs = (uint64_t)rounds * 100;
            r.p50_ns = ns;
            r.ns_per_job = ns;
            r.jobs_per_s = 1e9 / ns;
            snprintf(r.version, sizeof(r.version), "pp " PP_VERSION_STRING " spsc ring");
            bench_emit(o, &r);
        }
    return 0;
}
