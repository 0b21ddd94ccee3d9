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
#include "peers/peer_common.h" /* PEER_NPCT, peer_pct_levels */

/* Fresh servers a row may be measured across (overhead "default"). */
#define BENCH_MAX_SERVERS 16
/* Running nodes --nodes may name (remote-overhead). */
#define BENCH_MAX_NODES 16

/* One node of a remote-overhead --nodes row: the jobs it ran. */
struct bench_node_jobs {
    char name[PP_NODE_NAME_MAX]; /* "host:port" */
    unsigned workers;            /* as the node reported them */
    uint64_t jobs;               /* jobs it finished in the row's best round */
};

/*
 * One line of output.  NaN = not meaningful (printed as null).  A
 * measurement that failed is never a line: the workload says why on
 * standard error and returns -errno (ppbench then exits 1), and
 * bench_emit drops, with an error, any line whose figures are infinite
 * or negative.  A row that could not be measured at all because
 * something it needs is missing (a remote row without a ppserver) is a
 * line with every figure NaN and the reason in skipped.
 */
struct bench_result {
    char workload[24];
    char system[24];
    char variant[40];
    int workers;
    uint64_t jobs;
    uint64_t payload_bytes;
    double work_us;  /* scaling: the spin time of one job */
    double ns_per_job, jobs_per_s;
    double p50_ns, p99_ns, p999_ns;
    double pct_ns[PEER_NPCT]; /* latency: at peer_pct_levels */
    double gbps;
    double first_call_ns, repeat_call_ns;
    double efficiency;
    /* A row measured on several fresh servers (overhead "default"):
     * ns_per_job is the worst server's; each server's figure, and the
     * worst, median and best of them. */
    int servers;
    double server_ns[BENCH_MAX_SERVERS];
    double worst_ns, median_ns, best_ns;
    /* remote-overhead --nodes: the row's nodes and the jobs each ran;
     * on an "N nodes" row, its jobs_per_s over the "1 node" row's. */
    int nnodes;
    struct bench_node_jobs nodes[BENCH_MAX_NODES];
    double throughput_ratio;
    /* collect: this row's ns_per_job over the baseline's (plain
     * pp_submit + pp_task_wait of the same jobs, same server and run) */
    double baseline_ratio;
    char version[96];
    char skipped[200]; /* "" = measured; else why the row was not */
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
    /* --nodes: running ppservers ("host:port", NULL-terminated), which
     * remote-overhead measures instead of starting its own; NULL = none */
    const char *const *nodes;
    unsigned nnodes;
    const char *secret_file; /* --secret-file: their secret */
};

/* A workload as ppbench runs it: pp's rows, then its peers'. */
struct bench_workload {
    const char *name;
    int (*run)(const struct bench_opts *o);
};

/* The remote workloads (remote.c): pp with one ppserver node on
 * loopback, and peers over loopback TCP; remote-overhead also against
 * running nodes (--nodes). */
extern const struct bench_workload bench_remote_workloads[];
extern const size_t bench_remote_nworkloads;

/* Output (ppbench.c). */
void bench_result_init(struct bench_result *r, const char *workload,
                       const char *system, const char *variant);
void bench_emit(const struct bench_opts *o, const struct bench_result *r);
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *bench_machine(void);
int bench_ncpus(void);
double bench_now_ns(void);

/* Percentiles of n samples (sorts them), nearest rank as the peers'. */
void bench_percentiles(double *v, size_t n, double *p50, double *p99, double *p999);
/* The nearest-rank p-quantile (0 <= p <= 1) of n sorted samples. */
double bench_pct_sorted(const double *v, size_t n, double p);

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
int pp_bench_overhead_default(const struct bench_opts *o);
uint64_t overhead_default_jobs(const struct bench_opts *o);
int pp_bench_map(const struct bench_opts *o);
int pp_bench_latency(const struct bench_opts *o);
int pp_bench_payload(const struct bench_opts *o);
int pp_bench_cache(const struct bench_opts *o);
int pp_bench_scaling(const struct bench_opts *o);
int pp_bench_imbalance(const struct bench_opts *o);
int pp_bench_c2c(const struct bench_opts *o);

/* The pprocess-style workloads (collect.c): pp's rows, then the peers'. */
int bench_run_stream(const struct bench_opts *o);
int bench_run_collect(const struct bench_opts *o);
uint64_t bench_stream_values(const struct bench_opts *o);
/* One job streaming n values to collector c (collect.c): a warm-up, then
 * the best of `rounds` streams: ns, or < 0. */
double bench_stream_best(pp_collector *c, uint64_t n, int rounds);
uint64_t bench_collect_jobs(const struct bench_opts *o);

/* Peers (peers.c): runs every peer for a workload, emitting their lines. */
void peers_run(const struct bench_opts *o, const char *workload, int workers,
               uint64_t jobs, uint64_t payload, bool echo, uint64_t work_us);

#endif /* PP_BENCH_H */
