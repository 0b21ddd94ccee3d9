/*
 * bench.h - what ppbench's parts share: one measurement, its output, and
 * the jobs every system runs.
 */
#ifndef PP_BENCH_H
#define PP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pp.h"

/* One line of output.  NaN = not meaningful (printed as null). */
struct bench_result {
    char workload[24];
    char system[24];
    char variant[40];
    int workers;
    uint64_t jobs;
    uint64_t payload_bytes;
    double ns_per_job, jobs_per_s;
    double p50_ns, p99_ns, p999_ns;
    double gbps;
    double first_call_ns, repeat_call_ns;
    double efficiency;
    char version[96];
};

struct bench_opts {
    int workers;          /* 0 = the workload's default */
    uint64_t jobs;        /* 0 = the workload's default */
    bool busy_poll;
    bool json;
    bool quick;
    bool peers;           /* run the peers too */
    const char *plot_dir; /* NULL = no plots */
    const char *self_dir; /* where ppbench lives (peers/ is next to it) */
};

/* Output (ppbench.c). */
void bench_result_init(struct bench_result *r, const char *workload,
                       const char *system, const char *variant);
void bench_emit(const struct bench_opts *o, const struct bench_result *r);
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *bench_machine(void);
int bench_ncpus(void);
double bench_now_ns(void);

/* Percentiles of n samples (sorts them). */
void bench_percentiles(double *v, size_t n, double *p50, double *p99, double *p999);

/* The jobs (jobs.c), pp_fn wrappers around the bodies every peer runs
 * (bench/peers/peer_common.c), so all systems do the same work. */
int job_trivial(pp_job *job);  /* uint64 x -> x * 2 + 1 */
int job_checksum(pp_job *job); /* bytes -> 8-byte checksum */
int job_echo(pp_job *job);     /* bytes -> the same bytes */
int job_spin(pp_job *job);     /* uint64 us -> spins that long, returns it */

/* Distinct functions for the cache workload (cachefns.c). */
#define BENCH_NFNS 1000
extern pp_fn *const bench_fns[BENCH_NFNS];

/* pp's side of each workload (workloads.c): they emit their results and
 * return 0, or -errno. */
int pp_bench_overhead(const struct bench_opts *o);
int pp_bench_map(const struct bench_opts *o);
int pp_bench_latency(const struct bench_opts *o);
int pp_bench_payload(const struct bench_opts *o);
int pp_bench_cache(const struct bench_opts *o);
int pp_bench_scaling(const struct bench_opts *o);
int pp_bench_imbalance(const struct bench_opts *o);
int pp_bench_c2c(const struct bench_opts *o);

/* Peers (peers.c): runs every peer for a workload, emitting their lines. */
void peers_run(const struct bench_opts *o, const char *workload, int workers,
               uint64_t jobs, uint64_t payload, bool echo, uint64_t work_us);

#endif /* PP_BENCH_H */
