/*
 * ppbench.c - the benchmark harness: command line, output, and the order
 * in which workloads and their peers run.
 *
 *   ppbench overhead|map|latency|payload|cache|scaling|imbalance|c2c|
 *           stream|collect|remote-overhead|remote-latency|remote-payload|
 *           remote-stream|remote-cache|all [more workloads: they run in all's order]
 *           [--workers N] [--jobs N] [--busy-poll] [--json] [--quick]
 *           [--no-peers] [--plot DIR]
 *   ppbench remote-overhead --nodes HOST:PORT[,...] --secret-file FILE [...]
 *
 * The remote-* workloads (remote.c) run pp against a ppserver node on
 * loopback; without one their pp rows say why they were skipped.  With
 * --nodes, remote-overhead starts no ppserver and measures the running
 * nodes given (the first alone, then all); no other workload takes it.
 *
 * Without --json it prints one table per workload with each peer's ratio
 * to pp; with --json one object per measurement and line, every line with
 * the same keys (null where a figure does not apply).  Progress goes to
 * standard error, never into the JSON.  A measurement that fails prints
 * no line (never an infinite or NaN figure): the reason goes to standard
 * error and ppbench exits 1.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESULTS 4096

static struct bench_result results[MAX_RESULTS];
static size_t nresults;

/* ---------------------------------------------------------------- */
/* Small shared helpers                                               */
/* ---------------------------------------------------------------- */

double bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int bench_ncpus(void)
{
    return pp_detect_ncpus();
}

const char *bench_machine(void)
{
    static char m[160];
    if (m[0])
        return m;
    char model[120] = "unknown CPU", line[256];
    FILE *f = fopen("/proc/cpuinfo", "re");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p += 2;
                p[strcspn(p, "\n")] = '\0';
                snprintf(model, sizeof(model), "%s", p);
            }
            break;
        }
    if (f)
        fclose(f);
    snprintf(m, sizeof(m), "%s, %ld cores", model, sysconf(_SC_NPROCESSORS_ONLN));
    return m;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank (the ceil(p*n)-th smallest), as peer_percentile computes
 * it, so pp's percentiles and the peers' are the same statistic. */
double bench_pct_sorted(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p * (double)n - 1e-9); /* as peer_percentile */
    if (rank < 1)
        rank = 1;
    return v[(rank > n ? n : rank) - 1];
}

void bench_percentiles(double *v, size_t n, double *p50, double *p99, double *p999)
{
    qsort(v, n, sizeof(*v), cmp_double);
    *p50 = bench_pct_sorted(v, n, 0.50);
    *p99 = bench_pct_sorted(v, n, 0.99);
    *p999 = bench_pct_sorted(v, n, 0.999);
}

void bench_progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ppbench: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void bench_result_init(struct bench_result *r, const char *workload,
                       const char *system, const char *variant)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->workload, sizeof(r->workload), "%s", workload);
    snprintf(r->system, sizeof(r->system), "%s", system);
    snprintf(r->variant, sizeof(r->variant), "%s", variant);
    r->ns_per_job = r->jobs_per_s = NAN;
    r->p50_ns = r->p99_ns = r->p999_ns = NAN;
    r->gbps = r->first_call_ns = r->repeat_call_ns = r->efficiency = NAN;
    r->work_us = NAN;
    for (int k = 0; k < PEER_NPCT; k++)
        r->pct_ns[k] = NAN;
    r->servers = 0;
    for (int k = 0; k < BENCH_MAX_SERVERS; k++)
        r->server_ns[k] = NAN;
    r->worst_ns = r->median_ns = r->best_ns = NAN;
    r->nnodes = 0;
    r->throughput_ratio = NAN;
    r->baseline_ratio = NAN;
}

/* ---------------------------------------------------------------- */
/* Output                                                             */
/* ---------------------------------------------------------------- */

static void json_num(FILE *f, const char *key, double v)
{
    if (isnan(v) || isinf(v))
        fprintf(f, ",\"%s\":null", key);
    else
        fprintf(f, ",\"%s\":%.6g", key, v);
}

static void json_str(FILE *f, const char *key, const char *s, bool first)
{
    fprintf(f, "%s\"%s\":\"", first ? "" : ",", key);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

static void emit_json(FILE *f, const struct bench_result *r)
{
    fputc('{', f);
    json_str(f, "workload", r->workload, true);
    json_str(f, "system", r->system, false);
    json_str(f, "variant", r->variant, false);
    fprintf(f, ",\"workers\":%d,\"jobs\":%llu,\"payload_bytes\":%llu", r->workers,
            (unsigned long long)r->jobs, (unsigned long long)r->payload_bytes);
    json_num(f, "work_us", r->work_us);
    json_num(f, "ns_per_job", r->ns_per_job);
    json_num(f, "jobs_per_s", r->jobs_per_s);
    json_num(f, "p50_ns", r->p50_ns);
    json_num(f, "p99_ns", r->p99_ns);
    json_num(f, "p999_ns", r->p999_ns);
    json_num(f, "gbps", r->gbps);
    json_num(f, "first_call_ns", r->first_call_ns);
    json_num(f, "repeat_call_ns", r->repeat_call_ns);
    json_num(f, "efficiency", r->efficiency);
    bool pct = false;
    for (int k = 0; k < PEER_NPCT; k++)
        pct |= !isnan(r->pct_ns[k]);
    if (pct) {
        fputs(",\"percentiles\":[", f);
        for (int k = 0; k < PEER_NPCT; k++) {
            fprintf(f, "%s[%g,", k ? "," : "", peer_pct_levels[k]);
            if (isnan(r->pct_ns[k]))
                fputs("null]", f);
            else
                fprintf(f, "%.6g]", r->pct_ns[k]);
        }
        fputc(']', f);
    } else {
        fputs(",\"percentiles\":null", f);
    }
    if (r->servers > 0) {
        fprintf(f, ",\"servers\":%d,\"server_ns\":[", r->servers);
        for (int k = 0; k < r->servers; k++)
            fprintf(f, "%s%.6g", k ? "," : "", r->server_ns[k]);
        fputc(']', f);
    } else {
        fputs(",\"servers\":null,\"server_ns\":null", f);
    }
    json_num(f, "worst_ns", r->worst_ns);
    json_num(f, "median_ns", r->median_ns);
    json_num(f, "best_ns", r->best_ns);
    json_num(f, "throughput_ratio", r->throughput_ratio);
    json_num(f, "baseline_ratio", r->baseline_ratio);
    if (r->nnodes > 0) {
        fputs(",\"nodes\":[", f);
        for (int k = 0; k < r->nnodes; k++) {
            fputs(k ? ",{" : "{", f);
            json_str(f, "name", r->nodes[k].name, true);
            fprintf(f, ",\"workers\":%u,\"jobs\":%llu}", r->nodes[k].workers,
                    (unsigned long long)r->nodes[k].jobs);
        }
        fputc(']', f);
    } else {
        fputs(",\"nodes\":null", f);
    }
    json_str(f, "machine", bench_machine(), false);
    json_str(f, "version", r->version, false);
    if (r->skipped[0])
        json_str(f, "skipped", r->skipped, false);
    else
        fputs(",\"skipped\":null", f);
    fputs("}\n", f);
    fflush(f);
}

static int bad_rows; /* lines bench_emit refused: ppbench exits 1 */

/* NaN means "not meaningful"; a figure that is infinite or negative means
 * the measurement failed (a time that was never taken, a division by a
 * zero count) and must not be printed as if it were one. */
static bool figure_ok(double v)
{
    return isnan(v) || (isfinite(v) && v >= 0);
}

static bool result_ok(const struct bench_result *r)
{
    bool ok = figure_ok(r->work_us) && figure_ok(r->ns_per_job) &&
              figure_ok(r->jobs_per_s) && figure_ok(r->p50_ns) && figure_ok(r->p99_ns) &&
              figure_ok(r->p999_ns) && figure_ok(r->gbps) && figure_ok(r->first_call_ns) &&
              figure_ok(r->repeat_call_ns) && figure_ok(r->efficiency) &&
              figure_ok(r->worst_ns) && figure_ok(r->median_ns) && figure_ok(r->best_ns) &&
              figure_ok(r->throughput_ratio) && figure_ok(r->baseline_ratio);
    for (int k = 0; k < PEER_NPCT; k++)
        ok &= figure_ok(r->pct_ns[k]);
    for (int k = 0; k < r->servers && k < BENCH_MAX_SERVERS; k++)
        ok &= figure_ok(r->server_ns[k]);
    return ok && r->servers >= 0 && r->servers <= BENCH_MAX_SERVERS && r->nnodes >= 0 &&
           r->nnodes <= BENCH_MAX_NODES;
}

void bench_emit(const struct bench_opts *o, const struct bench_result *r)
{
    if (!result_ok(r)) {
        fprintf(stderr,
                "ppbench: %s %s %s: measurement failed (a figure is infinite or "
                "negative): no result\n",
                r->workload, r->system, r->variant);
        bad_rows++;
        return;
    }
    if (nresults < MAX_RESULTS)
        results[nresults++] = *r;
    if (o->json)
        emit_json(stdout, r);
}

/* The local workload a remote-* one is judged like ("remote-latency" ->
 * "latency"); the name itself otherwise. */
static const char *base_workload(const char *w)
{
    return strncmp(w, "remote-", 7) == 0 ? w + 7 : w;
}

/* The figure a workload is judged by, and whether lower is better. */
static double metric(const struct bench_result *r, bool *lower_better)
{
    const char *w = base_workload(r->workload);

    *lower_better = true;
    if (r->skipped[0])
        return NAN;
    if (strcmp(w, "latency") == 0 || strcmp(w, "c2c") == 0)
        return r->p50_ns;
    if (strcmp(w, "cache") == 0 && !isnan(r->first_call_ns))
        return r->first_call_ns - r->repeat_call_ns;
    if (strcmp(w, "payload") == 0) {
        *lower_better = false;
        return r->gbps;
    }
    if (strcmp(r->workload, "scaling") == 0 || strcmp(r->workload, "imbalance") == 0) {
        *lower_better = false;
        return r->efficiency;
    }
    return r->ns_per_job;
}

/* collect: the pp collector a peer's row is compared with, by the order
 * it hands results back in (multiprocessing's imap keeps submission
 * order; every other peer variant hands them back as they come). */
static const char *collect_order(const char *peer_variant)
{
    return strcmp(peer_variant, "imap") == 0 ? "ordered" : "arrival";
}

/* The best pp row comparable with r (same workload, payload, and for
 * scaling the same workers and job length). */
static const struct bench_result *pp_ref(const struct bench_result *r)
{
    const struct bench_result *best = NULL;
    bool lb;
    for (size_t i = 0; i < nresults; i++) {
        const struct bench_result *p = &results[i];
        if (strcmp(p->system, "pp") || strcmp(p->workload, r->workload) ||
            p->payload_bytes != r->payload_bytes)
            continue;
        if (strcmp(r->workload, "scaling") == 0 &&
            (p->workers != r->workers || p->work_us != r->work_us))
            continue;
        /* overhead: pp at the same worker count; at the count where the
         * default configuration ran, that row (what users get) is the
         * reference. */
        if (strcmp(r->workload, "overhead") == 0) {
            if (p->workers != r->workers)
                continue;
            if (strcmp(p->variant, "default") == 0)
                return p;
        }
        if (strcmp(r->workload, "payload") == 0 &&
            (strstr(r->variant, "echo") != NULL) != (strstr(p->variant, "echo") != NULL))
            continue;
        /* stream, collect: the default configuration's rows (no
         * busy-poll); for collect the collector of the same order. */
        if ((strcmp(r->workload, "stream") == 0 || strcmp(r->workload, "collect") == 0) &&
            strstr(p->variant, "busy-poll"))
            continue;
        if (strcmp(r->workload, "collect") == 0 &&
            strcmp(p->variant, collect_order(r->variant)) != 0)
            continue;
        double m = metric(p, &lb);
        if (isnan(m))
            continue;
        if (!best || (lb ? m < metric(best, &lb) : m > metric(best, &lb)))
            best = p;
    }
    return best;
}

static void fmt_num(char *b, size_t n, double v)
{
    if (!isfinite(v))
        snprintf(b, n, "-");
    else if (fabs(v) >= 1e6)
        snprintf(b, n, "%.3g", v);
    else if (fabs(v) >= 100)
        snprintf(b, n, "%.0f", v);
    else
        snprintf(b, n, "%.3g", v);
}

static void print_table(const char *workload)
{
    bool any = false, lb;
    for (size_t i = 0; i < nresults; i++)
        any |= strcmp(results[i].workload, workload) == 0;
    if (!any)
        return;
    printf("\n== %s ==\n", workload);
    printf("%-16s %-22s %4s %9s %9s %10s %9s %9s %9s %8s %8s %11s %6s  %s\n", "system",
           "variant", "wrk", "jobs", "bytes", "ns/job", "p50 ns", "p99 ns", "p99.9", "GB/s",
           "eff", "1st-rep ns", "pp x", "");
    for (size_t i = 0; i < nresults; i++) {
        const struct bench_result *r = &results[i];
        if (strcmp(r->workload, workload))
            continue;
        char c[8][24];
        fmt_num(c[0], 24, r->ns_per_job);
        fmt_num(c[1], 24, r->p50_ns);
        fmt_num(c[2], 24, r->p99_ns);
        fmt_num(c[3], 24, r->p999_ns);
        fmt_num(c[4], 24, r->gbps);
        fmt_num(c[5], 24, r->efficiency);
        fmt_num(c[6], 24, isnan(r->first_call_ns) ? NAN : r->first_call_ns - r->repeat_call_ns);
        const struct bench_result *p = strcmp(r->system, "pp") ? pp_ref(r) : NULL;
        double ratio = NAN;
        if (p) {
            double a = metric(r, &lb), b = metric(p, &lb);
            ratio = lb ? a / b : b / a; /* > 1: pp is ahead by that factor */
        }
        fmt_num(c[7], 24, ratio);
        if (r->skipped[0]) {
            printf("%-16s %-22.22s %4d %9llu %9llu skipped: %s\n", r->system, r->variant,
                   r->workers, (unsigned long long)r->jobs,
                   (unsigned long long)r->payload_bytes, r->skipped);
            continue;
        }
        printf("%-16s %-22.22s %4d %9llu %9llu %10s %9s %9s %9s %8s %8s %11s %6s\n",
               r->system, r->variant, r->workers, (unsigned long long)r->jobs,
               (unsigned long long)r->payload_bytes, c[0], c[1], c[2], c[3], c[4], c[5],
               c[6], c[7]);
    }
    /* Rows measured across fresh servers: each server's figure. */
    for (size_t i = 0; i < nresults; i++) {
        const struct bench_result *r = &results[i];
        if (strcmp(r->workload, workload) || r->servers <= 0)
            continue;
        char w[24], m[24], b[24];
        fmt_num(w, 24, r->worst_ns);
        fmt_num(m, 24, r->median_ns);
        fmt_num(b, 24, r->best_ns);
        printf("%s %s: %d fresh servers, %d workers each, ns/job (best of rounds) per "
               "server:",
               r->system, r->variant, r->servers, r->workers);
        for (int k = 0; k < r->servers; k++) {
            char v[24];
            fmt_num(v, 24, r->server_ns[k]);
            printf(" %s", v);
        }
        printf("; the row is the worst: %s (median %s, best %s)\n", w, m, b);
    }
    /* stream: the figures per value; collect: each collector against
     * the plain submit+wait baseline of the same run. */
    for (size_t i = 0; i < nresults; i++) {
        const struct bench_result *r = &results[i];
        if (strcmp(r->workload, workload) || r->skipped[0])
            continue;
        if (strcmp(workload, "stream") == 0)
            printf("%s %s: %.1f ns/value, %.3g values/s\n", r->system, r->variant,
                   r->ns_per_job, r->jobs_per_s);
        else if (!isnan(r->baseline_ratio) && strncmp(r->variant, "submit+wait", 11))
            printf("%s %s: %.1f ns/job, %.2fx plain submit+wait\n", r->system, r->variant,
                   r->ns_per_job, r->baseline_ratio);
    }
    if (strcmp(workload, "collect") == 0)
        printf("collect: pp x compares multiprocessing imap (submission order) with pp "
               "ordered, every other peer with pp arrival\n");
    /* Rows measured on running nodes (--nodes): the jobs each ran, and
     * the all-nodes rows' throughput over the 1-node rows'. */
    for (size_t i = 0; i < nresults; i++) {
        const struct bench_result *r = &results[i];
        if (strcmp(r->workload, workload) || r->nnodes <= 0)
            continue;
        printf("%s %s: jobs per node (best round):", r->system, r->variant);
        for (int k = 0; k < r->nnodes; k++)
            printf("%s %s %llu (%u wrk)", k ? "," : "", r->nodes[k].name,
                   (unsigned long long)r->nodes[k].jobs, r->nodes[k].workers);
        if (!isnan(r->throughput_ratio))
            printf("; throughput %.2fx the 1-node row", r->throughput_ratio);
        putchar('\n');
    }
}

/* ---------------------------------------------------------------- */
/* Workloads with their peers                                         */
/* ---------------------------------------------------------------- */

static int dispatch_workers(const struct bench_opts *o)
{
    if (o->workers > 0)
        return o->workers;
    return bench_ncpus() > 1 ? bench_ncpus() - 1 : 1;
}

static int all_workers(const struct bench_opts *o)
{
    return o->workers > 0 ? o->workers : bench_ncpus();
}

/* Slow peers (a process per job, a Python interpreter) get fewer jobs;
 * their figures are per job, so the comparison holds. */
static int run_overhead(const struct bench_opts *o)
{
    int r = pp_bench_overhead(o);
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 50000 : 500000);
    peers_run(o, "overhead", dispatch_workers(o), n, 0, false, 0);
    /* The default configuration, pp_server_new(NULL): one worker per
     * effective CPU, adaptive waiting, on several fresh servers; the peers
     * again at that worker count unless they just ran at it. */
    int rd = pp_bench_overhead_default(o);
    if (bench_ncpus() != dispatch_workers(o))
        peers_run(o, "overhead", bench_ncpus(), overhead_default_jobs(o), 0, false, 0);
    return r < 0 ? r : rd;
}

static int run_map(const struct bench_opts *o)
{
    int r = pp_bench_map(o);
    peers_run(o, "map", all_workers(o), o->jobs ? o->jobs : (o->quick ? 200000 : 2000000),
              0, false, 0);
    return r;
}

/* Round trips are bounded by the core-to-core latency, which on a virtual
 * machine can change by several times while a run goes on (the host moves
 * the virtual CPUs).  So the full run measures pp and the peers three
 * times, interleaved, and the table compares the best of each. */
static int run_latency(const struct bench_opts *o)
{
    int r = 0;
    for (int round = 0; round < (o->quick ? 1 : 3) && r == 0; round++) {
        r = pp_bench_latency(o);
        peers_run(o, "latency", 1, o->jobs ? o->jobs : (o->quick ? 5000 : 50000), 0, false,
                  0);
    }
    return r;
}

/* Payloads, like latency, move cache lines between cores, whose cost
 * drifts on a virtual machine: the full run measures pp and the peers in
 * three interleaved rounds too. */
static int run_payload(const struct bench_opts *o)
{
    static const uint64_t quick_sizes[] = { 4096, 1 << 20 };
    static const uint64_t sizes[] = { 64, 4096, 65536, 1 << 20, 16 << 20, 64 << 20 };
    const uint64_t *sz = o->quick ? quick_sizes : sizes;
    size_t n = o->quick ? 2 : 6;
    int r = 0;

    for (int round = 0; round < (o->quick ? 1 : 3) && r == 0; round++) {
        r = pp_bench_payload(o);
        for (size_t e = 0; e < 2; e++)
            for (size_t i = 0; i < n; i++) {
                if (o->quick && e && sz[i] != (1 << 20))
                    continue;
                uint64_t budget = o->quick ? (64ull << 20) : (1ull << 30);
                uint64_t jobs = budget / sz[i];
                uint64_t cap = o->quick ? 2000 : 20000;
                jobs = jobs > cap ? cap : (jobs < 4 ? 4 : jobs);
                peers_run(o, "payload", dispatch_workers(o), jobs, sz[i], e, 0);
            }
    }
    return r;
}

static int run_scaling(const struct bench_opts *o)
{
    int r = pp_bench_scaling(o);
    static const uint64_t works[] = { 10, 100, 1000 };
    for (unsigned k = 0; k < 3; k++) {
        if (o->quick && works[k] != 100)
            continue;
        for (int w = 1; w <= all_workers(o); w++) {
            if (o->quick && w != all_workers(o))
                continue;
            uint64_t n = (o->quick ? 50000 : 400000) * (uint64_t)w / works[k];
            peers_run(o, "scaling", w, n < (uint64_t)(8 * w) ? (uint64_t)(8 * w) : n, 0,
                      false, works[k]);
        }
    }
    return r;
}

static int run_imbalance(const struct bench_opts *o)
{
    int r = pp_bench_imbalance(o);
    peers_run(o, "imbalance", all_workers(o), o->jobs ? o->jobs : (o->quick ? 500 : 4000), 0,
              false, 0);
    return r;
}

static const struct bench_workload workloads[] = {
    { "overhead", run_overhead },   { "map", run_map },
    { "latency", run_latency },     { "payload", run_payload },
    { "cache", pp_bench_cache },    { "scaling", run_scaling },
    { "imbalance", run_imbalance }, { "c2c", pp_bench_c2c },
    { "stream", bench_run_stream }, { "collect", bench_run_collect },
};
#define NLOCAL (sizeof(workloads) / sizeof(workloads[0]))
#define NWORKLOADS (NLOCAL + bench_remote_nworkloads)

/* The i-th workload in the order `all` runs them: local, then remote. */
static const struct bench_workload *workload_at(size_t i)
{
    return i < NLOCAL ? &workloads[i] : &bench_remote_workloads[i - NLOCAL];
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ppbench WORKLOAD [WORKLOAD...] [options]\n"
            "  WORKLOAD: overhead map latency payload cache scaling imbalance c2c\n"
            "            stream collect (collectors, pprocess styles)\n"
            "            remote-overhead remote-latency remote-payload remote-stream\n"
            "            remote-cache all\n"
            "            (remote-*: pp with one ppserver node on 127.0.0.1, found at\n"
            "            $PP_PPSERVER or <ppbench's directory>/../net/ppserver)\n"
            "  --workers N   workers (default: per workload, see README); overhead's\n"
            "                'default' row is always pp_server_new(NULL): all CPUs\n"
            "  --jobs N      jobs or items per measurement\n"
            "  --busy-poll   pp workers and waiters spin instead of sleeping (not in\n"
            "                overhead's 'default' row; stream and collect add a\n"
            "                busy-poll row to their default ones)\n"
            "  --json        one JSON object per measurement on stdout\n"
            "  --quick       small sizes (all --quick runs in under a minute)\n"
            "  --no-peers    measure pp only\n"
            "  --plot DIR    write PNG plots (gnuplot) into DIR\n"
            "  --nodes HOST:PORT[,HOST:PORT...]\n"
            "                remote-overhead only: measure these running ppservers\n"
            "                (none is started): the first alone, then all of them,\n"
            "                with the all/1 throughput ratio and the jobs per node;\n"
            "                at most %d nodes; no peers, no balance row, no --workers\n"
            "  --secret-file FILE\n"
            "                the nodes' secret (required with --nodes); FILE must be\n"
            "                a regular file of yours that only you may read (0600)\n",
            BENCH_MAX_NODES);
}

/* --nodes: "host:port[,host:port...]" into nodes[] (NULL-terminated).
 * Returns the count, or 0 after saying what is wrong. */
static unsigned parse_nodes(const char *arg, const char **nodes)
{
    static char buf[BENCH_MAX_NODES * PP_NODE_NAME_MAX];
    unsigned k = 0;
    char *save = NULL;

    if (strlen(arg) >= sizeof(buf) || !arg[0] || arg[0] == ',' ||
        arg[strlen(arg) - 1] == ',' || strstr(arg, ",,")) {
        fprintf(stderr, "ppbench: --nodes %s: want host:port[,host:port...], at most %d\n",
                arg, BENCH_MAX_NODES);
        return 0;
    }
    snprintf(buf, sizeof(buf), "%s", arg);
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        const char *colon = strrchr(e, ':');
        char *end;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
        if (!colon || colon == e || !colon[1] || *end || colon[1] == '-' ||
            colon[1] == '+' || port == 0 || port > 65535 || strcspn(e, " \t") != strlen(e) ||
            strlen(e) >= PP_NODE_NAME_MAX - 7 || (colon - e == 1 && e[0] == '*')) {
            fprintf(stderr, "ppbench: --nodes: \"%s\": want host:port (port 1..65535, "
                    "host not \"*\", at most %d characters)\n", e, PP_NODE_NAME_MAX - 8);
            return 0;
        }
        for (unsigned i = 0; i < k; i++)
            if (strcmp(nodes[i], e) == 0) {
                fprintf(stderr, "ppbench: --nodes: %s is listed twice\n", e);
                return 0;
            }
        if (k == BENCH_MAX_NODES) {
            fprintf(stderr, "ppbench: --nodes: more than %d nodes\n", BENCH_MAX_NODES);
            return 0;
        }
        nodes[k++] = e;
    }
    nodes[k] = NULL;
    return k;
}

/* --secret-file must satisfy pp_config.secret_file (a regular file, not
 * a symbolic link, owned by us, mode & 077 == 0): checked here so that a
 * bad one is a usage error naming the file, not a failed pp_server_new.
 * Returns true, or false after saying why. */
static bool secret_file_ok(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    bool ok = false;

    if (fd < 0)
        fprintf(stderr, "ppbench: --secret-file %s: %s\n", path,
                errno == ELOOP ? "a symbolic link (name the file itself)" : strerror(errno));
    else if (fstat(fd, &st) < 0)
        fprintf(stderr, "ppbench: --secret-file %s: %s\n", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        fprintf(stderr, "ppbench: --secret-file %s: not a regular file\n", path);
    else if (st.st_uid != geteuid())
        fprintf(stderr, "ppbench: --secret-file %s: owned by uid %u, not you (uid %u)\n", path,
                (unsigned)st.st_uid, (unsigned)geteuid());
    else if (st.st_mode & 077)
        fprintf(stderr, "ppbench: --secret-file %s: group or others may use it (mode %04o); "
                "chmod 600 it\n", path, (unsigned)(st.st_mode & 07777));
    else if (st.st_size == 0)
        fprintf(stderr, "ppbench: --secret-file %s: is empty\n", path);
    else
        ok = true;
    if (fd >= 0)
        close(fd);
    return ok;
}

int bench_plot(const char *dir, const struct bench_result *res, size_t n);

int main(int argc, char **argv)
{
    struct bench_opts o = { .peers = true };
    const char *which = NULL;   /* the first workload named */
    const char *names[16];      /* every one named: they run in `all`'s order */
    int nnames = 0;
    static char self[4096];
    static const char *nodes[BENCH_MAX_NODES + 1];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--workers") && i + 1 < argc)
            o.workers = atoi(argv[++i]);
        else if (!strcmp(a, "--jobs") && i + 1 < argc)
            o.jobs = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--busy-poll"))
            o.busy_poll = true;
        else if (!strcmp(a, "--json"))
            o.json = true;
        else if (!strcmp(a, "--quick"))
            o.quick = true;
        else if (!strcmp(a, "--no-peers"))
            o.peers = false;
        else if (!strcmp(a, "--plot") && i + 1 < argc)
            o.plot_dir = argv[++i];
        else if (!strcmp(a, "--nodes") && i + 1 < argc) {
            if (!(o.nnodes = parse_nodes(argv[++i], nodes))) {
                usage(stderr);
                return 2;
            }
            o.nodes = nodes;
        } else if (!strcmp(a, "--secret-file") && i + 1 < argc)
            o.secret_file = argv[++i];
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] != '-' && nnames < (int)(sizeof(names) / sizeof(names[0]))) {
            names[nnames++] = a;
            which = which ? which : a;
        }
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!which || o.workers < 0 || o.workers > PP_MAX_WORKERS) {
        usage(stderr);
        return 2;
    }
    if (o.nnodes || o.secret_file) {
        const char *bad = NULL;
        if (strcmp(which, "remote-overhead") != 0 || nnames > 1)
            bad = "--nodes and --secret-file go with remote-overhead only";
        else if (!o.nnodes)
            bad = "--secret-file goes with --nodes";
        else if (!o.secret_file)
            bad = "--nodes needs --secret-file (the nodes' secret)";
        else if (o.workers)
            bad = "--workers does not apply with --nodes (each node's -w sets its workers)";
        if (bad) {
            fprintf(stderr, "ppbench: %s\n", bad);
            usage(stderr);
            return 2;
        }
        if (!secret_file_ok(o.secret_file))
            return 2;
    }
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[k > 0 ? k : 0] = '\0';
    o.self_dir = dirname(self);

    int status = 0;
    bool all = false;
    for (int k = 0; k < nnames; k++) { /* every name must be a workload */
        bool known = strcmp(names[k], "all") == 0;
        all |= known;
        for (size_t i = 0; i < NWORKLOADS && !known; i++)
            known = strcmp(names[k], workload_at(i)->name) == 0;
        if (!known) {
            usage(stderr);
            return 2;
        }
    }
    for (size_t i = 0; i < NWORKLOADS; i++) {
        const struct bench_workload *w = workload_at(i);
        bool named = all;
        for (int k = 0; k < nnames && !named; k++)
            named = strcmp(names[k], w->name) == 0;
        if (!named)
            continue;
        bench_progress("workload %s", w->name);
        int r = w->run(&o);
        if (r < 0) {
            fprintf(stderr, "ppbench: %s failed: %s\n", w->name, strerror(-r));
            status = 1;
        }
    }
    if (!o.json) {
        printf("machine: %s; pp %s\n", bench_machine(), PP_VERSION_STRING);
        printf("pp x: how many times pp is ahead of that row (time ratio, or GB/s and "
               "efficiency ratio); < 1 means pp is behind\n");
        for (size_t i = 0; i < NWORKLOADS; i++)
            print_table(workload_at(i)->name);
    }
    if (o.plot_dir && bench_plot(o.plot_dir, results, nresults) < 0)
        status = 1;
    if (bad_rows)
        status = 1;
    return status;
}
