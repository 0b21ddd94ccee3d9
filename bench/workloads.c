/*
 * workloads.c - pp's side of every ppbench workload.
 *
 * Each function creates the servers it needs, warms them up (the record
 * pool and the function cache are filled once, as in any long-running
 * program), measures, checks every result, and emits one line per
 * measurement.  Peers run the same jobs (jobs.c) in peers/.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "peers/peer_common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pp_version(void)
{
    return "pp " PP_VERSION_STRING;
}

static int new_server(int workers, bool busy, pp_server **ret)
{
    struct pp_config c;
    pp_config_init(&c);
    c.ncpus = workers;
    c.busy_poll = busy;
    int r = pp_server_new(&c, ret);
    if (r < 0)
        fprintf(stderr, "ppbench: pp_server_new: %s\n", strerror(-r));
    return r;
}

/* Workers for the dispatch-bound workloads: the submitting thread needs a
 * core of its own, so one fewer than the CPUs (at least one). */
static int dispatch_workers(const struct bench_opts *o)
{
    if (o->workers > 0)
        return o->workers;
    int n = bench_ncpus() - 1;
    return n > 0 ? n : 1;
}

static void fill(struct bench_result *r, int workers, uint64_t jobs, double ns)
{
    r->workers = workers;
    r->jobs = jobs;
    r->ns_per_job = ns / (double)jobs;
    r->jobs_per_s = 1e9 / r->ns_per_job;
    snprintf(r->version, sizeof(r->version), "%s", pp_version());
}

/* ---------------------------------------------------------------- */
/* overhead: N trivial jobs submitted one by one, all collected        */
/* ---------------------------------------------------------------- */

/* One round: returns elapsed ns, or a negative value on a wrong result. */
static double overhead_round(pp_server *s, pp_template *tpl, pp_task **t, uint64_t n)
{
    double t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        int r = tpl ? pp_template_submit(tpl, &i, sizeof(i), &t[i])
                    : pp_submit(s, job_trivial, &i, sizeof(i), NULL, &t[i]);
        if (r < 0) {
            fprintf(stderr, "ppbench: submit: %s\n", strerror(-r));
            return -1;
        }
    }
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        const void *d;
        size_t len;
        pp_task_wait(t[i], -1);
        if (pp_task_result(t[i], &d, &len) != 0 || len != 8 ||
            *(const uint64_t *)d != peer_trivial(i))
            bad++;
        pp_task_release(t[i]);
    }
    double el = bench_now_ns() - t0;
    if (bad) {
        fprintf(stderr, "ppbench: overhead: %llu wrong results\n", (unsigned long long)bad);
        return -1;
    }
    return el;
}

/* Best of reps rounds after one warm-up round, in ns for all n jobs;
 * negative after a failed round (already reported). */
static double overhead_best(pp_server *s, pp_template *tpl, pp_task **t, uint64_t n, int reps)
{
    if (overhead_round(s, tpl, t, n) < 0) /* warm-up */
        return -1;
    double best = INFINITY;
    for (int rep = 0; rep < reps; rep++) {
        double el = overhead_round(s, tpl, t, n);
        if (el < 0)
            return -1;
        best = el < best ? el : best;
    }
    return best;
}

int pp_bench_overhead(const struct bench_opts *o)
{
    int w = dispatch_workers(o);
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 50000 : 500000);
    pp_server *s;
    pp_template *tpl;
    pp_task **t = calloc(n, sizeof(*t));
    int r;

    if (!t)
        return -ENOMEM;
    if ((r = new_server(w, o->busy_poll, &s)) < 0)
        goto out;
    if ((r = pp_template_new(s, job_trivial, NULL, &tpl)) < 0) {
        fprintf(stderr, "ppbench: pp_template_new: %s\n", strerror(-r));
        goto out_srv;
    }
    const char *variants[] = { "submit", "template" };
    for (int v = 0; v < 2 && r == 0; v++) {
        double best = overhead_best(s, v ? tpl : NULL, t, n, 3);
        if (best < 0) {
            /* No row for a variant whose measurement failed. */
            fprintf(stderr, "ppbench: overhead %s: a round failed: no result\n",
                    variants[v]);
            r = -EIO;
            break;
        }
        struct bench_result res;
        bench_result_init(&res, "overhead", "pp", variants[v]);
        fill(&res, w, n, best);
        bench_emit(o, &res);
    }
    pp_template_destroy(tpl);
out_srv:
    pp_server_destroy(s);
out:
    free(t);
    return r;
}

/* The default configuration, as a user writes it: pp_server_new(NULL),
 * so one worker per effective CPU and adaptive waiting (--busy-poll and
 * --workers do not apply), and the README's loop: submit N jobs keeping
 * the handles, then wait, read and release each.  A fresh server's
 * figure can differ by ten times from another's (where its workers and
 * the submitter land), so the row is measured on several fresh servers
 * and reports the worst one's best-of-rounds; best and median ride along. */
#define DEFAULT_SERVERS_FULL 5
#define DEFAULT_SERVERS_QUICK 3
#define DEFAULT_ROUNDS 5

uint64_t overhead_default_jobs(const struct bench_opts *o)
{
    return o->jobs ? o->jobs : (o->quick ? 20000 : 100000);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int pp_bench_overhead_default(const struct bench_opts *o)
{
    uint64_t n = overhead_default_jobs(o);
    int nsrv = o->quick ? DEFAULT_SERVERS_QUICK : DEFAULT_SERVERS_FULL;
    double per[BENCH_MAX_SERVERS];
    pp_task **t = calloc(n, sizeof(*t));
    int r = 0, w = 0;

    if (!t)
        return -ENOMEM;
    for (int k = 0; k < nsrv && r == 0; k++) {
        pp_server *s;
        if ((r = pp_server_new(NULL, &s)) < 0) {
            fprintf(stderr, "ppbench: overhead default: pp_server_new(NULL): %s\n",
                    strerror(-r));
            break;
        }
        int sw = pp_get_ncpus(s);
        if (k == 0)
            w = sw;
        if (sw != w) { /* the effective CPUs changed between servers */
            fprintf(stderr, "ppbench: overhead default: server %d has %d workers, "
                            "server 1 had %d: no result\n", k + 1, sw, w);
            r = -EAGAIN;
        } else {
            double best = overhead_best(s, NULL, t, n, DEFAULT_ROUNDS);
            if (best < 0) {
                fprintf(stderr, "ppbench: overhead default: server %d: a round failed: "
                                "no result\n", k + 1);
                r = -EIO;
            } else {
                per[k] = best / (double)n;
                bench_progress("overhead default: server %d/%d (%d workers): %.1f ns/job, "
                               "best of %d rounds", k + 1, nsrv, w, per[k], DEFAULT_ROUNDS);
            }
        }
        pp_server_destroy(s);
    }
    if (r == 0) {
        struct bench_result res;
        double sorted[BENCH_MAX_SERVERS];
        memcpy(sorted, per, (size_t)nsrv * sizeof(double));
        qsort(sorted, (size_t)nsrv, sizeof(double), cmp_dbl);
        bench_result_init(&res, "overhead", "pp", "default");
        fill(&res, w, n, sorted[nsrv - 1] * (double)n);
        res.servers = nsrv;
        memcpy(res.server_ns, per, (size_t)nsrv * sizeof(double));
        res.worst_ns = sorted[nsrv - 1];
        res.best_ns = sorted[0];
        res.median_ns = nsrv % 2 ? sorted[nsrv / 2]
                                 : (sorted[nsrv / 2 - 1] + sorted[nsrv / 2]) / 2;
        bench_emit(o, &res);
    }
    free(t);
    return r;
}

/* ---------------------------------------------------------------- */
/* map: the same items through pp_map                                 */
/* ---------------------------------------------------------------- */

int pp_bench_map(const struct bench_opts *o)
{
    int w = o->workers > 0 ? o->workers : bench_ncpus();
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 200000 : 2000000);
    uint64_t *in = malloc(n * 8), *out = malloc(n * 8);
    pp_server *s;
    int r = -ENOMEM;

    if (!in || !out)
        goto out;
    for (uint64_t i = 0; i < n; i++)
        in[i] = i;
    if ((r = new_server(w, o->busy_poll, &s)) < 0)
        goto out;
    double best = INFINITY;
    for (int rep = 0; rep < 4 && r == 0; rep++) {
        memset(out, 0, n * 8);
        double t0 = bench_now_ns();
        r = pp_map(s, job_trivial, in, 8, n, out, 8);
        double el = bench_now_ns() - t0;
        for (uint64_t i = 0; i < n && r == 0; i++)
            if (out[i] != peer_trivial(i))
                r = -EIO;
        if (rep > 0 && el < best)
            best = el; /* rep 0 warms up */
    }
    if (r == 0) {
        struct bench_result res;
        bench_result_init(&res, "map", "pp", "pp_map");
        fill(&res, w, n, best);
        bench_emit(o, &res);
    } else {
        fprintf(stderr, "ppbench: map: %s\n", strerror(-r));
    }
    pp_server_destroy(s);
out:
    free(in);
    free(out);
    return r;
}

/* ---------------------------------------------------------------- */
/* latency: one job in flight                                         */
/* ---------------------------------------------------------------- */

static int latency_one(const struct bench_opts *o, bool busy, uint64_t n)
{
    pp_server *s;
    double *v = malloc(n * sizeof(*v));
    int r;

    if (!v)
        return -ENOMEM;
    if ((r = new_server(1, busy, &s)) < 0) {
        free(v);
        return r;
    }
    for (uint64_t i = 0; i < n + n / 10 && r == 0; i++) {
        pp_task *t;
        double t0 = bench_now_ns();
        if ((r = pp_submit(s, job_trivial, &i, sizeof(i), NULL, &t)) < 0)
            break;
        pp_task_wait(t, -1);
        double el = bench_now_ns() - t0;
        const void *d;
        if (pp_task_result(t, &d, NULL) != 0 || *(const uint64_t *)d != peer_trivial(i))
            r = -EIO;
        pp_task_release(t);
        if (i >= n / 10)
            v[i - n / 10] = el; /* the first tenth warms up */
    }
    if (r == 0) {
        struct bench_result res;
        bench_result_init(&res, "latency", "pp", busy ? "busy-poll" : "adaptive");
        double sum = 0;
        for (uint64_t i = 0; i < n; i++)
            sum += v[i];
        fill(&res, 1, n, sum);
        bench_percentiles(v, n, &res.p50_ns, &res.p99_ns, &res.p999_ns);
        for (int k = 0; k < PEER_NPCT; k++)
            res.pct_ns[k] = bench_pct_sorted(v, n, peer_pct_levels[k] / 100.0);
        bench_emit(o, &res);
    }
    pp_server_destroy(s);
    free(v);
    return r;
}

int pp_bench_latency(const struct bench_opts *o)
{
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 5000 : 50000);
    int r = latency_one(o, false, n);
    if (r == 0)
        r = latency_one(o, true, n);
    return r;
}

/* ---------------------------------------------------------------- */
/* payload: argument sizes, small result and echo                     */
/* ---------------------------------------------------------------- */

/* Single-core memcpy bandwidth, GB/s, over a buffer of len bytes; 0 when
 * the buffers could not be allocated. */
static double memcpy_gbps(size_t len)
{
    char *a = malloc(len), *b = malloc(len);
    double best = 0;
    if (!a || !b)
        goto out;
    memset(a, 1, len);
    memset(b, 2, len);
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now_ns();
        memcpy(b, a, len);
        double el = bench_now_ns() - t0;
        __asm__ __volatile__("" ::"r"(b) : "memory");
        double g = (double)len / el;
        best = g > best ? g : best;
    }
out:
    free(a);
    free(b);
    return best;
}

static const uint64_t payload_sizes[] = { 64, 4096, 65536, 1 << 20, 16 << 20, 64 << 20 };
#define NPAYLOAD (sizeof(payload_sizes) / sizeof(payload_sizes[0]))

static uint64_t payload_jobs(const struct bench_opts *o, uint64_t size)
{
    uint64_t budget = o->quick ? (64ull << 20) : (1ull << 30);
    uint64_t n = budget / size;
    uint64_t cap = o->quick ? 2000 : 20000;
    n = n > cap ? cap : n;
    return n < 4 ? 4 : n;
}

static int payload_size(const struct bench_opts *o, pp_server *s, int w, uint64_t size,
                        bool echo, double base_gbps, bool emit)
{
    uint64_t n = payload_jobs(o, size);
    unsigned char *buf = malloc(size);
    pp_task **t = calloc(n, sizeof(*t));
    struct peer_payload_ref ref;
    int r = 0;

    if (!buf || !t) {
        r = -ENOMEM;
        goto out;
    }
    peer_payload_fill(buf, size);
    peer_payload_ref_init(&ref, buf, size);
    double t0 = bench_now_ns();
    /* Jobs in flight at once are bounded so 64 MiB echoes do not need
     * gigabytes: submit ahead by a window, collect in order. */
    uint64_t window = 64, done = 0;
    for (uint64_t i = 0; i < n || done < n;) {
        if (i < n && i - done < window) {
            peer_payload_stamp(buf, size, i);
            r = pp_submit(s, echo ? job_echo : job_checksum, buf, size, NULL, &t[i]);
            if (r < 0)
                break;
            i++;
            continue;
        }
        const void *d;
        size_t len;
        pp_task_wait(t[done], -1);
        int st = pp_task_result(t[done], &d, &len);
        bool ok = st == 0 && (echo ? len == size && peer_payload_echo_ok(&ref, done, d)
                                   : len == 8 && *(const uint64_t *)d ==
                                                     peer_payload_expect(&ref, done));
        pp_task_release(t[done]);
        done++;
        if (!ok) {
            fprintf(stderr, "ppbench: payload %llu: wrong result\n", (unsigned long long)size);
            r = -EIO;
            break;
        }
    }
    double el = bench_now_ns() - t0;
    if (r == 0 && emit) {
        struct bench_result res;
        bench_result_init(&res, "payload", "pp", echo ? "echo" : "checksum");
        fill(&res, w, n, el);
        res.payload_bytes = size;
        res.gbps = (double)size * (echo ? 2.0 : 1.0) * (double)n / el;
        res.efficiency = base_gbps > 0 ? res.gbps / base_gbps : NAN;
        bench_emit(o, &res);
    }
out:
    free(buf);
    free(t);
    return r;
}

int pp_bench_payload(const struct bench_opts *o)
{
    int w = dispatch_workers(o);
    pp_server *s;
    int r;
    double base = memcpy_gbps(64 << 20);

    if (base <= 0) {
        fprintf(stderr, "ppbench: payload: memcpy baseline: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    struct bench_result b;
    bench_result_init(&b, "payload", "memcpy", "single-core baseline");
    b.workers = 1;
    b.jobs = 1;
    b.payload_bytes = 64 << 20;
    b.gbps = base;
    b.efficiency = 1.0;
    snprintf(b.version, sizeof(b.version), "libc memcpy");
    bench_emit(o, &b);
    if ((r = new_server(w, o->busy_poll, &s)) < 0)
        return r;
    for (unsigned e = 0; e < 2 && r == 0; e++)
        for (unsigned i = 0; i < NPAYLOAD && r == 0; i++) {
            bench_progress("payload %s %llu B", e ? "echo" : "checksum",
                           (unsigned long long)payload_sizes[i]);
            /* The first round faults the shared pages in (host and
             * worker page tables); the second measures steady state. */
            r = payload_size(o, s, w, payload_sizes[i], e, base, false);
            if (r == 0)
                r = payload_size(o, s, w, payload_sizes[i], e, base, true);
        }
    pp_server_destroy(s);
    return r;
}

/* ---------------------------------------------------------------- */
/* cache: first call of a never-seen function against repeated calls   */
/* ---------------------------------------------------------------- */

static double round_trip(pp_server *s, pp_fn *fn, uint64_t x, int *err)
{
    pp_task *t;
    double t0 = bench_now_ns();
    int r = pp_submit(s, fn, &x, sizeof(x), NULL, &t);
    if (r < 0) {
        *err = r;
        return 0;
    }
    pp_task_wait(t, -1);
    double el = bench_now_ns() - t0;
    const void *d;
    if (pp_task_result(t, &d, NULL) != 0 || *(const uint64_t *)d != peer_trivial(x))
        *err = -EIO;
    pp_task_release(t);
    return el;
}

int pp_bench_cache(const struct bench_opts *o)
{
    unsigned nf = o->quick ? 200 : BENCH_NFNS;
    double *first = calloc(nf, sizeof(double)), *rep = calloc(nf, sizeof(double));
    pp_server *s;
    int err = 0;

    if (!first || !rep)
        return -ENOMEM;
    if ((err = new_server(1, o->busy_poll, &s)) < 0)
        goto out;
    round_trip(s, job_trivial, 1, &err); /* worker and pool warm */
    /* First call of each never-seen function, then one repeated call of
     * the same function: pairs measured side by side. */
    for (unsigned i = 0; i < nf && !err; i++) {
        first[i] = round_trip(s, bench_fns[i], i, &err);
        rep[i] = round_trip(s, bench_fns[i], i, &err);
    }
    if (!err) {
        struct bench_result res;
        double p99, p999, f50, r50;
        bench_percentiles(first, nf, &f50, &p99, &p999);
        bench_percentiles(rep, nf, &r50, &p99, &p999);
        bench_result_init(&res, "cache", "pp", "first-vs-repeat");
        fill(&res, 1, nf, f50 * nf);
        res.first_call_ns = f50;
        res.repeat_call_ns = r50;
        res.p50_ns = f50;
        bench_emit(o, &res);
    }
    pp_server_destroy(s);
    if (err)
        goto out;

    /* Throughput: nf distinct functions once each against one function nf
     * times, on fresh servers (nothing cached). */
    const char *names[] = { "distinct-fns", "one-fn" };
    for (int v = 0; v < 2 && !err; v++) {
        if ((err = new_server(1, o->busy_poll, &s)) < 0)
            break;
        round_trip(s, job_trivial, 1, &err);
        pp_task *t[BENCH_NFNS];
        unsigned sent = 0;
        double t0 = bench_now_ns();
        for (; sent < nf && !err; sent++) {
            uint64_t x = sent;
            err = pp_submit(s, v ? bench_fns[nf - 1] : bench_fns[sent], &x, 8, NULL, &t[sent]);
            if (err < 0)
                break;
        }
        for (unsigned i = 0; i < sent; i++) { /* every task submitted is released */
            const void *d;
            pp_task_wait(t[i], -1);
            if (!err && (pp_task_result(t[i], &d, NULL) != 0 ||
                         *(const uint64_t *)d != peer_trivial(i)))
                err = -EIO;
            pp_task_release(t[i]);
        }
        double el = bench_now_ns() - t0;
        if (!err) {
            struct bench_result res;
            bench_result_init(&res, "cache", "pp", names[v]);
            fill(&res, 1, nf, el);
            bench_emit(o, &res);
        }
        pp_server_destroy(s);
    }
out:
    free(first);
    free(rep);
    return err;
}

/* ---------------------------------------------------------------- */
/* scaling and imbalance: CPU-bound jobs                              */
/* ---------------------------------------------------------------- */

/* Runs n spin jobs of the given durations; returns wall ns.  A batch, as
 * pp users run one: submit everything, pp_wait for all, then read. */
static double spin_run(pp_server *s, const uint64_t *us, uint64_t n, int *err)
{
    pp_task **t = calloc(n, sizeof(*t));
    if (!t) {
        *err = -ENOMEM;
        return 0;
    }
    double t0 = bench_now_ns();
    for (uint64_t i = 0; i < n && !*err; i++)
        *err = pp_submit(s, job_spin, &us[i], 8, NULL, &t[i]);
    if (!*err)
        *err = pp_wait(s, NULL, -1);
    double el = bench_now_ns() - t0;
    for (uint64_t i = 0; i < n; i++) {
        if (!t[i])
            continue;
        const void *d;
        if (!*err && (pp_task_result(t[i], &d, NULL) != 0 || *(const uint64_t *)d != us[i]))
            *err = -EIO;
        pp_task_release(t[i]);
    }
    free(t);
    return el;
}

int pp_bench_scaling(const struct bench_opts *o)
{
    static const uint64_t works[] = { 10, 100, 1000 };
    int maxw = o->workers > 0 ? o->workers : bench_ncpus();
    int err = 0;

    for (unsigned k = 0; k < 3 && !err; k++)
        for (int w = 1; w <= maxw && !err; w++) {
            uint64_t n = (o->quick ? 50000 : 400000) * (uint64_t)w / works[k];
            n = n < (uint64_t)(8 * w) ? (uint64_t)(8 * w) : n;
            uint64_t *us = malloc(n * 8);
            pp_server *s;
            if (!us)
                return -ENOMEM;
            for (uint64_t i = 0; i < n; i++)
                us[i] = works[k];
            bench_progress("scaling %llu us on %d workers", (unsigned long long)works[k], w);
            if ((err = new_server(w, o->busy_poll, &s)) == 0) {
                spin_run(s, us, n / 8 + 1, &err); /* warm-up */
                double el = spin_run(s, us, n, &err);
                if (!err) {
                    struct bench_result res;
                    char v[40];
                    snprintf(v, sizeof(v), "%llu us", (unsigned long long)works[k]);
                    bench_result_init(&res, "scaling", "pp", v);
                    fill(&res, w, n, el);
                    res.work_us = (double)works[k];
                    res.efficiency = (double)n * (double)works[k] * 1000.0 / ((double)w * el);
                    bench_emit(o, &res);
                }
                pp_server_destroy(s);
            }
            free(us);
        }
    return err;
}

int pp_bench_imbalance(const struct bench_opts *o)
{
    int w = o->workers > 0 ? o->workers : bench_ncpus();
    struct peer_args a = { .workload = PEER_IMBALANCE, .workers = w,
                           .jobs = o->jobs ? o->jobs : (o->quick ? 500 : 4000),
                           .seed = 1 };
    struct peer_plan plan;
    pp_server *s;
    int err;

    if ((err = peer_plan_init(&a, &plan)) < 0)
        return err;
    uint64_t *us = malloc(a.jobs * 8);
    if (!us) {
        peer_plan_free(&plan);
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < a.jobs; i++)
        us[i] = plan.durations[i];
    if ((err = new_server(w, o->busy_poll, &s)) == 0) {
        double el = spin_run(s, us, a.jobs, &err);
        if (!err) {
            struct bench_result res;
            bench_result_init(&res, "imbalance", "pp", "skewed");
            fill(&res, w, a.jobs, el);
            res.efficiency = plan.ideal_ns / el;
            bench_emit(o, &res);
        }
        pp_server_destroy(s);
    }
    free(us);
    peer_plan_free(&plan);
    return err;
}
