/*
 * peer_common.h - what every C peer of ppbench shares.
 *
 * A peer is a standalone program that runs ONE measurement of one
 * workload on one "other" tool (OpenMP, Open MPI, ZeroMQ, fork-per-job,
 * raw TCP) and prints one JSON line.  ppbench compares those lines with pp's own,
 * so the jobs themselves must be bit-for-bit the same everywhere: they
 * live here, and each peer only supplies the plumbing that carries
 * arguments to workers and results back.
 *
 * Command line (all peers; --workers is 1 for stream, one child):
 *   --workload W --workers N --jobs J [--payload B] [--echo]
 *   [--work-us U] [--seed S] [--variant V]
 *
 * Exit codes (PEER_EXIT_*): 0 measured, 1 failed (a wrong result or a
 * runtime error), 2 bad command line, 3 workload or variant not
 * supported by this peer (nothing printed), 4 skipped because something
 * the peer needs at run time is missing (e.g. mpirun).
 */
#ifndef PP_BENCH_PEER_COMMON_H
#define PP_BENCH_PEER_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PEER_EXIT_OK 0
#define PEER_EXIT_FAIL 1
#define PEER_EXIT_USAGE 2
#define PEER_EXIT_UNSUPPORTED 3
#define PEER_EXIT_SKIPPED 4

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

enum peer_workload {
    PEER_OVERHEAD,  /* J trivial jobs, submitted one by one */
    PEER_MAP,       /* the same J items through the batch path */
    PEER_LATENCY,   /* one job in flight, J round trips */
    PEER_PAYLOAD,   /* B-byte arguments, checksum or echo back */
    PEER_SCALING,   /* J jobs spinning U us each */
    PEER_IMBALANCE, /* J jobs of skewed duration (LCG seeded by S) */
    PEER_STREAM,    /* one child process sends J 8-byte values,
                       peer_stream_value(0 .. J-1), to the parent */
    /* The remote workloads: one worker process reached over loopback
     * TCP (127.0.0.1, a port the peer picks), as a pp node would be. */
    PEER_REMOTE_OVERHEAD, /* J trivial jobs, peer_remote_window in flight */
    PEER_REMOTE_LATENCY,  /* one job in flight, J round trips */
    PEER_REMOTE_PAYLOAD,  /* B-byte arguments echoed back (implies --echo) */
    PEER_NWORKLOADS
};

/* The local workload a remote one is measured like (overhead, latency,
 * payload); w itself for a local one.  Job bodies, checks and JSON fields
 * follow the base workload. */
enum peer_workload peer_workload_base(enum peer_workload w);

static inline bool peer_workload_remote(enum peer_workload w)
{
    return w >= PEER_REMOTE_OVERHEAD && w < PEER_NWORKLOADS;
}

/*
 * Jobs a remote workload keeps in flight at once, the same for every
 * system (ppbench's pp rows use it too): 1 for latency, PEER_REMOTE_WINDOW
 * for overhead, and for payload as many B-byte jobs as fit in
 * PEER_REMOTE_INFLIGHT_BYTES, clamped to 2..PEER_REMOTE_WINDOW (so a
 * 64 MiB echo keeps 4 in flight, not 4 GiB).
 */
#define PEER_REMOTE_WINDOW 64
#define PEER_REMOTE_INFLIGHT_BYTES (256u << 20)
uint64_t peer_remote_window(enum peer_workload w, size_t payload);

struct peer_args {
    enum peer_workload workload;
    int workers;          /* N: worker threads/processes/ranks */
    uint64_t jobs;        /* J */
    size_t payload;       /* B: argument bytes (payload workload) */
    bool echo;            /* payload: result is the argument echoed */
    unsigned work_us;     /* U: spin time of a scaling job */
    uint64_t seed;        /* S: seed of the imbalance durations */
    const char *variant;  /* NULL: the peer's default for the workload */
};

/* Parses the common command line into *ret.  Returns 0, or after
 * saying why on stderr -PEER_EXIT_UNSUPPORTED for a workload name it
 * does not know and -PEER_EXIT_USAGE for any other mistake. */
int peer_args_parse(int argc, char **argv, struct peer_args *ret);

const char *peer_workload_name(enum peer_workload w);

/*
 * One way a peer runs one workload.  A peer lists its variants in a
 * table; the first entry for a workload is its default.  run() returns
 * 0 after filling the result, or a PEER_EXIT_* code.
 */
struct peer_result;
struct peer_variant {
    enum peer_workload workload;
    const char *name;
    int (*run)(const struct peer_args *a, struct peer_result *r);
};

/* Picks the entry of table[n] for a->workload and a->variant (default
 * when a->variant is NULL).  Returns NULL, after saying so on stderr,
 * when the peer cannot run that combination (exit PEER_EXIT_UNSUPPORTED). */
const struct peer_variant *peer_variant_find(const struct peer_variant *table,
                                             size_t n,
                                             const struct peer_args *a);

/* ------------------------------------------------------------------ */
/* The jobs                                                            */
/* ------------------------------------------------------------------ */

/* The trivial job of overhead/map/latency: result = x*2+1. */
static inline uint64_t peer_trivial(uint64_t x)
{
    return x * 2 + 1;
}

/* Value k of a stream: the trivial job of k, so that a value lost,
 * repeated or out of order shows at the reader. */
static inline uint64_t peer_stream_value(uint64_t k)
{
    return peer_trivial(k);
}

/* Sum of the buffer's little-endian 64-bit words plus, for a tail
 * shorter than a word, its bytes; wraps modulo 2^64. */
uint64_t peer_checksum(const void *buf, size_t n);

/* Fills buf with the payload pattern shared by every job; each job then
 * gets its own first word through peer_payload_stamp(). */
void peer_payload_fill(void *buf, size_t n);

/* Writes job index i into the first min(8, n) bytes of an argument. */
void peer_payload_stamp(void *buf, size_t n, uint64_t i);

/*
 * Precomputed expectations for payload jobs: with the template's
 * checksum and first word known, the checksum of job i's argument costs
 * O(1) instead of another pass over B bytes.
 */
struct peer_payload_ref {
    const unsigned char *tmpl; /* filled template, n bytes */
    size_t n;
    uint64_t sum;              /* checksum of the template */
    uint64_t word0;            /* the template's first word (n >= 8) */
};

void peer_payload_ref_init(struct peer_payload_ref *ref,
                           const void *tmpl, size_t n);
uint64_t peer_payload_expect(const struct peer_payload_ref *ref, uint64_t i);

/* True when echo is exactly job i's argument (stamp + template). */
bool peer_payload_echo_ok(const struct peer_payload_ref *ref, uint64_t i,
                          const void *echo);

/* Busy-waits us microseconds reading CLOCK_MONOTONIC: the body of the
 * scaling and imbalance jobs (CPU-bound, but of a known length). */
void peer_spin_us(unsigned us);

/*
 * What a run needs to know before it starts: the imbalance durations
 * (drawn from the LCG seeded by S: 90% 10 us, 9% 200 us, 1% 2000 us) and
 * the makespan no schedule can beat, which efficiency divides by.
 */
struct peer_plan {
    uint32_t *durations; /* imbalance: us of each job; else NULL */
    double ideal_ns;     /* scaling: J*U/N; imbalance: max(sum/N, max d) */
};

/* Returns 0 or -ENOMEM; release with peer_plan_free(). */
int peer_plan_init(const struct peer_args *a, struct peer_plan *ret);
void peer_plan_free(struct peer_plan *p);

/* The argument of job i of a uint64-argument workload (overhead, map,
 * latency: i; scaling: U; imbalance: durations[i]), the job body, and the
 * result the collector expects.  Spin jobs answer their own argument
 * so the collector can still check that the right job came back. */
uint64_t peer_u64_arg(const struct peer_args *a, const struct peer_plan *p,
                      uint64_t i);
uint64_t peer_u64_job(enum peer_workload w, uint64_t arg);
uint64_t peer_u64_expect(enum peer_workload w, uint64_t arg);

/* The collector's check of job i's result.  Returns true when right;
 * otherwise says what came back on stderr. */
bool peer_u64_check(const struct peer_args *a, const struct peer_plan *p,
                    uint64_t i, uint64_t result);

/* ------------------------------------------------------------------ */
/* Measuring and reporting                                             */
/* ------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in ns: the one clock of every timing. */
uint64_t peer_now_ns(void);

/* Sorts v[n] in place and returns the nearest-rank p-quantile (0<p<=1). */
uint64_t peer_percentile(uint64_t *v, size_t n, double p);

/*
 * The fixed percentiles every latency line carries (JSON "percentiles":
 * [[level, ns], ...] in this order; null on other lines), from which
 * ppbench draws one percentile curve per system.  0 is the fastest round
 * trip, 100 the slowest.  peer_mp.py and ppbench's own latency rows use
 * the same levels and the same nearest-rank rule.
 */
#define PEER_NPCT 13
#define PEER_PCT_LEVELS { 0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100 }
extern const double peer_pct_levels[PEER_NPCT];

/* Pins the calling thread to the idx-th CPU it is allowed on (modulo
 * their count).  Returns 0 or -errno. */
int peer_pin_self(int idx);

/* Online CPUs, as the machine string reports them. */
int peer_online_cpus(void);

/* CPUs this process may run on: spin-waits yield when it is below the
 * number of spinning threads, or they would starve each other. */
int peer_allowed_cpus(void);

/* One spin-wait step: frees the core's sibling thread, keeps the CPU. */
static inline void peer_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/*
 * One JSON line.  Numbers that are NaN print as null ("not meaningful
 * for this workload"); peer_result_init sets them all to NaN, so a
 * workload fills in only what it measured.
 */
struct peer_result {
    const char *workload;
    const char *system;    /* "openmp", "mpi", "zmq", "fork", "tcp" */
    const char *variant;
    int workers;
    uint64_t jobs;
    double payload_bytes;
    double ns_per_job;
    double jobs_per_s;
    double p50_ns, p99_ns, p999_ns;
    double gbps;
    double first_call_ns;
    double repeat_call_ns;
    double efficiency;
    double pct_ns[PEER_NPCT]; /* at peer_pct_levels; NaN (all null) if none */
    const char *version;   /* the peer library's own version */
};

void peer_result_init(struct peer_result *r, const struct peer_args *a,
                      const char *system, const char *variant);

/* Fills what follows from the wall time of the whole run: ns_per_job
 * and jobs_per_s, plus gbps (payload) or efficiency (scaling, imbalance).
 * Local payload echoes count the bytes both ways; remote-payload counts
 * the payload bytes each way (B*J / time): its echo carries as many back
 * at the same time over a full-duplex connection. */
void peer_result_wall(struct peer_result *r, const struct peer_args *a,
                      const struct peer_plan *p, uint64_t wall_ns);

/* Fills the latency fields (p50/p99/p99.9 and the percentile curve)
 * from the J round trips in rtt[] (sorted in place) and the cold first
 * call. */
void peer_result_latency(struct peer_result *r, uint64_t *rtt, uint64_t n,
                         uint64_t first_ns);

/* Prints r as one line on stdout with the machine string.  Returns 0 or
 * -errno when stdout could not be written. */
int peer_result_print(const struct peer_result *r);

/* "CPU model, N cores" from /proc/cpuinfo; a static buffer. */
const char *peer_machine(void);

/* Prints "peer_X: msg: strerror(-err)" on stderr and returns
 * PEER_EXIT_FAIL, so error paths read "return peer_fail(...)". */
int peer_fail(const char *what, int err);

#endif /* PP_BENCH_PEER_COMMON_H */
