/*
 * collect.c - the pprocess-style workloads: pp's side of `stream` and
 * `collect`, and the order in which their peers run.
 *
 *   stream   one job sends N 8-byte values (pp_job_send) to a collector;
 *            the reader takes them one by one (pp_collector_next).  The
 *            figure is per value: ns_per_job is ns/value, jobs_per_s
 *            values/s, jobs the value count.  Peers move the same N
 *            values from one child process to the parent
 *            (bench/peers/peer_stream.c, peer_stream_zmq.c, peer_mp.py).
 *   collect  N trivial jobs (x -> 2x+1, an 8-byte result) through a
 *            PP_ORDERED and a PP_ARRIVAL collector, and the same jobs
 *            through plain pp_submit + pp_task_wait: the baseline,
 *            measured on the same server in interleaved rounds.  Each
 *            collector row carries its ns/job over the baseline's
 *            (baseline_ratio).  Peers: fork per job, a ZeroMQ PUSH/PULL
 *            worker pool and multiprocessing.Pool imap / imap_unordered,
 *            which are the overhead peers run again at collect's size.
 *
 * Both measure the default configuration, pp_config_init's defaults (one
 * worker per effective CPU, adaptive waiting), as users run it;
 * --busy-poll adds rows with busy_poll set, and --workers changes the
 * worker count of every pp row (its wrk column).  Every value and every
 * result is checked; a wrong one fails the workload (no row).
 */
#define _GNU_SOURCE
#include "bench.h"
#include "peers/peer_common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_ROUNDS 3        /* streams per server, after a warm-up */
#define STREAM_SERVERS_FULL 5
#define STREAM_SERVERS_QUICK 2
#define COLLECT_ROUNDS_FULL 5
#define COLLECT_ROUNDS_QUICK 3

static void fill_row(struct bench_result *r, int workers, uint64_t n, double ns)
{
    r->workers = workers;
    r->jobs = n;
    r->ns_per_job = ns / (double)n;
    r->jobs_per_s = 1e9 / r->ns_per_job;
    snprintf(r->version, sizeof(r->version), "pp " PP_VERSION_STRING);
}

/* The server of every row: pp_config_init's defaults, but for what the
 * command line asked (--workers, and busy_poll for that row). */
static int new_server(const struct bench_opts *o, bool busy, pp_server **ret)
{
    struct pp_config c;
    pp_config_init(&c);
    if (o->workers > 0)
        c.ncpus = o->workers;
    c.busy_poll = busy;
    int r = pp_server_new(&c, ret);
    if (r < 0)
        fprintf(stderr, "ppbench: pp_server_new: %s\n", strerror(-r));
    return r;
}

/* The row's variant: what ("ordered"), or "default" without one, and
 * " busy-poll" for that row ("ordered busy-poll", "busy-poll"). */
static void variant(char *buf, size_t n, const char *what, bool busy)
{
    if (what)
        snprintf(buf, n, "%s%s", what, busy ? " busy-poll" : "");
    else
        snprintf(buf, n, "%s", busy ? "busy-poll" : "default");
}

/* ---------------------------------------------------------------- */
/* stream                                                             */
/* ---------------------------------------------------------------- */

/* Sends values peer_stream_value(0 .. n-1), 8 bytes each, then returns n as
 * its result (so the reader can tell a job cut short). */
static int job_stream(pp_job *job)
{
    size_t len;
    const uint64_t *arg = pp_job_arg(job, &len);
    if (len != sizeof(*arg))
        return pp_job_fail(job, -EINVAL, "want one uint64, got %zu bytes", len);
    uint64_t n = *arg;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t v = peer_stream_value(k);
        int r = pp_job_send(job, &v, sizeof(v));
        if (r < 0)
            return pp_job_fail(job, r, "pp_job_send of value %llu: %s",
                               (unsigned long long)k, strerror(-r));
    }
    uint64_t *res = pp_job_result(job, sizeof(*res));
    if (!res)
        return -ENOMEM;
    *res = n;
    return 0;
}

/* Reads one job's stream to PP_END, checking every value.  Returns 0 or
 * -EIO after saying what was wrong. */
static int stream_read(pp_collector *c, uint64_t n)
{
    uint64_t k = 0, v;
    bool end = false;
    const void *d;
    size_t len;
    int r;

    while ((r = pp_collector_next(c, &d, &len, -1)) == 0) {
        int st = pp_collector_status(c);
        if (end || len != sizeof(v)) {
            fprintf(stderr, "ppbench: stream: message after the result or of %zu bytes\n",
                    len);
            return -EIO;
        }
        memcpy(&v, d, sizeof(v));
        if (st < 0) {
            fprintf(stderr, "ppbench: stream: the job failed: %s\n",
                    pp_collector_error(c) ? pp_collector_error(c) : "?");
            return -EIO;
        }
        if (k < n) { /* a value: the job's result comes after the n-th */
            if (v != peer_stream_value(k)) {
                fprintf(stderr, "ppbench: stream: value %llu is %llu, want %llu\n",
                        (unsigned long long)k, (unsigned long long)v,
                        (unsigned long long)peer_stream_value(k));
                return -EIO;
            }
            k++;
        } else {
            end = v == n;
            if (!end) {
                fprintf(stderr, "ppbench: stream: result %llu, want %llu\n",
                        (unsigned long long)v, (unsigned long long)n);
                return -EIO;
            }
        }
    }
    if (r != PP_END || !end) {
        fprintf(stderr, "ppbench: stream: %llu of %llu values, then %s\n",
                (unsigned long long)k, (unsigned long long)n,
                r == PP_END ? "the end without the result" : strerror(-r));
        return -EIO;
    }
    return 0;
}

/* One stream of n values, from the submit to PP_END; ns, or < 0. */
static double stream_round(pp_collector *c, uint64_t n)
{
    double t0 = bench_now_ns();
    int r = pp_collector_submit(c, job_stream, &n, sizeof(n));
    if (r < 0) {
        fprintf(stderr, "ppbench: stream: pp_collector_submit: %s\n", strerror(-r));
        return -1;
    }
    if (stream_read(c, n) < 0)
        return -1;
    return bench_now_ns() - t0;
}

/* A warm-up stream of n/10 values (it fills the collector's chunks and
 * the sender's ring once), then the best of `rounds` streams of n: ns,
 * or < 0 (also remote-stream's, on a node). */
double bench_stream_best(pp_collector *c, uint64_t n, int rounds)
{
    double best = stream_round(c, n / 10 + 1) < 0 ? -1 : INFINITY;
    for (int k = 0; k < rounds && best >= 0; k++) {
        double el = stream_round(c, n);
        best = el < 0 ? -1 : (el < best ? el : best);
    }
    return best;
}

/* One fresh server: bench_stream_best with STREAM_ROUNDS.  ns, or < 0. */
static double stream_server(const struct bench_opts *o, uint64_t n, bool busy, int *workers)
{
    pp_server *s;
    pp_collector *c;
    int r = new_server(o, busy, &s);

    if (r < 0)
        return -1;
    if ((r = pp_collector_new(s, PP_ARRIVAL, 0, &c)) < 0) {
        fprintf(stderr, "ppbench: stream: pp_collector_new: %s\n", strerror(-r));
        pp_server_destroy(s);
        return -1;
    }
    double best = bench_stream_best(c, n, STREAM_ROUNDS);
    *workers = pp_get_ncpus(s);
    pp_collector_destroy(c);
    pp_server_destroy(s);
    return best;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Where a fresh server's workers and the reader land changes a stream
 * by several times on a small virtual machine, so the row is measured
 * on several fresh servers, as overhead's default row: it reports the
 * worst one's best round, with the median and the best beside it. */
static int stream_row(const struct bench_opts *o, uint64_t n, bool busy)
{
    int nsrv = o->quick ? STREAM_SERVERS_QUICK : STREAM_SERVERS_FULL, w = 0;
    double per[BENCH_MAX_SERVERS], sorted[BENCH_MAX_SERVERS];
    char v[40];

    variant(v, sizeof(v), NULL, busy);
    for (int k = 0; k < nsrv; k++) {
        double el = stream_server(o, n, busy, &w);
        if (el < 0)
            return -EIO;
        per[k] = el / (double)n;
        bench_progress("stream %s: server %d/%d: %.1f ns/value, best of %d rounds", v, k + 1,
                       nsrv, per[k], STREAM_ROUNDS);
    }
    memcpy(sorted, per, (size_t)nsrv * sizeof(double));
    qsort(sorted, (size_t)nsrv, sizeof(double), cmp_dbl);
    struct bench_result res;
    bench_result_init(&res, "stream", "pp", v);
    fill_row(&res, w, n, sorted[nsrv - 1] * (double)n);
    res.servers = nsrv;
    memcpy(res.server_ns, per, (size_t)nsrv * sizeof(double));
    res.worst_ns = sorted[nsrv - 1];
    res.best_ns = sorted[0];
    res.median_ns = nsrv % 2 ? sorted[nsrv / 2] : (sorted[nsrv / 2 - 1] + sorted[nsrv / 2]) / 2;
    bench_emit(o, &res);
    return 0;
}

uint64_t bench_stream_values(const struct bench_opts *o)
{
    return o->jobs ? o->jobs : (o->quick ? 1000000 : 10000000);
}

int bench_run_stream(const struct bench_opts *o)
{
    uint64_t n = bench_stream_values(o);
    int r = stream_row(o, n, false);
    if (r == 0 && o->busy_poll)
        r = stream_row(o, n, true);
    peers_run(o, "stream", 1, n, 0, false, 0);
    return r;
}

/* ---------------------------------------------------------------- */
/* collect                                                            */
/* ---------------------------------------------------------------- */

enum { C_PLAIN, C_ORDERED, C_ARRIVAL, C_NKINDS };
static const char *const kind_name[C_NKINDS] = { "submit+wait", "ordered", "arrival" };

/* The baseline: the README's loop, submit n jobs keeping the handles,
 * then wait, read and release each.  Returns ns, or < 0. */
static double plain_round(pp_server *s, pp_task **t, uint64_t n)
{
    double t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        int r = pp_submit(s, job_trivial, &i, sizeof(i), NULL, &t[i]);
        if (r < 0) {
            fprintf(stderr, "ppbench: collect: pp_submit: %s\n", strerror(-r));
            for (uint64_t k = 0; k < i; k++)
                pp_task_release(t[k]);
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
        fprintf(stderr, "ppbench: collect: %llu wrong results\n", (unsigned long long)bad);
        return -1;
    }
    return el;
}

/* Checks one collector message: the result of the round's job j (its
 * collector index minus base, the round's first).  seen[] (arrival)
 * marks each job once.  Returns true when right. */
static bool result_ok(pp_collector *c, const void *d, size_t len, uint64_t base, uint64_t n,
                      uint64_t want_job, unsigned char *seen)
{
    uint64_t j = pp_collector_job(c) - base, v;
    if (pp_collector_status(c) != 0 || len != sizeof(v) || j >= n)
        return false;
    if (seen ? seen[j]++ != 0 : j != want_job)
        return false;
    memcpy(&v, d, sizeof(v));
    return v == peer_trivial(j);
}

/* The same n jobs through a collector: submit them all, then read every
 * result to PP_END (pprocess's Map/Queue loop).  Returns ns, or < 0. */
static double collector_round(pp_collector *c, uint64_t base, uint64_t n, bool ordered,
                              unsigned char *seen)
{
    uint64_t got = 0, bad = 0;
    const void *d;
    size_t len;
    int r = 0;

    if (seen)
        memset(seen, 0, n);
    double t0 = bench_now_ns();
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = pp_collector_submit(c, job_trivial, &i, sizeof(i));
    /* Read to the end even after a failed submit: PP_END then means
     * every job accepted is done, and the next round starts clean. */
    int e;
    while ((e = pp_collector_next(c, &d, &len, -1)) == 0) {
        bad += !result_ok(c, d, len, base, n, got, ordered ? NULL : seen);
        got++;
    }
    double el = bench_now_ns() - t0;
    if (r < 0 || e != PP_END || bad || got != n) {
        fprintf(stderr, "ppbench: collect %s: %s; %llu results, %llu wrong\n",
                ordered ? "ordered" : "arrival",
                r < 0 ? strerror(-r) : (e != PP_END ? strerror(-e) : "read to the end"),
                (unsigned long long)got, (unsigned long long)bad);
        return -1;
    }
    return el;
}

struct collect_run {
    pp_server *s;
    pp_collector *c[C_NKINDS]; /* [C_ORDERED], [C_ARRIVAL] */
    pp_task **t;
    unsigned char *seen;
    uint64_t n;
    uint64_t base[C_NKINDS]; /* collector index of the next round's first job */
};

static double collect_one(struct collect_run *cr, int kind)
{
    if (kind == C_PLAIN)
        return plain_round(cr->s, cr->t, cr->n);
    double el = collector_round(cr->c[kind], cr->base[kind], cr->n, kind == C_ORDERED, cr->seen);
    cr->base[kind] += cr->n;
    return el;
}

/* Best of the rounds for each kind, the kinds interleaved in each round
 * (so a drift of the virtual machine weighs on all three alike), after
 * one warm-up round of each. */
static int collect_measure(struct collect_run *cr, int rounds, double best[C_NKINDS])
{
    for (int k = 0; k < C_NKINDS; k++)
        best[k] = INFINITY;
    for (int round = -1; round < rounds; round++)
        for (int k = 0; k < C_NKINDS; k++) {
            double el = collect_one(cr, k);
            if (el < 0)
                return -EIO;
            if (round >= 0 && el < best[k])
                best[k] = el;
        }
    return 0;
}

static int collect_rows(const struct bench_opts *o, uint64_t n, bool busy)
{
    struct collect_run cr = { .n = n };
    double best[C_NKINDS];
    int r = -ENOMEM;

    cr.t = calloc(n, sizeof(*cr.t));
    cr.seen = malloc(n);
    if (!cr.t || !cr.seen)
        goto out;
    if ((r = new_server(o, busy, &cr.s)) < 0)
        goto out;
    r = pp_collector_new(cr.s, PP_ORDERED, 0, &cr.c[C_ORDERED]);
    if (r == 0)
        r = pp_collector_new(cr.s, PP_ARRIVAL, 0, &cr.c[C_ARRIVAL]);
    if (r < 0)
        fprintf(stderr, "ppbench: collect: pp_collector_new: %s\n", strerror(-r));
    else
        r = collect_measure(&cr, o->quick ? COLLECT_ROUNDS_QUICK : COLLECT_ROUNDS_FULL, best);
    int w = pp_get_ncpus(cr.s);
    pp_collector_destroy(cr.c[C_ORDERED]);
    pp_collector_destroy(cr.c[C_ARRIVAL]);
    pp_server_destroy(cr.s);
    for (int k = 0; k < C_NKINDS && r == 0; k++) {
        struct bench_result res;
        char v[40];
        variant(v, sizeof(v), kind_name[k], busy);
        bench_result_init(&res, "collect", "pp", v);
        fill_row(&res, w, n, best[k]);
        res.baseline_ratio = best[k] / best[C_PLAIN];
        bench_progress("collect %s: %.1f ns/job, %.2fx submit+wait", v, res.ns_per_job,
                       res.baseline_ratio);
        bench_emit(o, &res);
    }
out:
    free(cr.t);
    free(cr.seen);
    return r;
}

uint64_t bench_collect_jobs(const struct bench_opts *o)
{
    return o->jobs ? o->jobs : (o->quick ? 20000 : 100000);
}

int bench_run_collect(const struct bench_opts *o)
{
    uint64_t n = bench_collect_jobs(o);
    int r = collect_rows(o, n, false);
    if (r == 0 && o->busy_poll)
        r = collect_rows(o, n, true);
    /* The peers at the default row's worker count. */
    int w = o->workers > 0 ? o->workers : bench_ncpus();
    peers_run(o, "collect", w, n, 0, false, 0);
    return r;
}
