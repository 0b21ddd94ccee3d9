/*
 * plot.c - PNG plots of a ppbench run, drawn by gnuplot, each readable at
 * a glance: one line per system, in the same colour in every plot.
 *   latency.png  one percentile curve per system (round trip, log scale):
 *                its best variant and round, judged by p50
 *   payload.png  GB/s against argument size, checksum and echo panels:
 *                pp and the best variant of each peer (every variant stays
 *                in the table and the JSON); best of the rounds per size
 *   scaling.png  parallel efficiency against workers, a panel per job
 *                length: pp and the best variant of each peer
 *   c2c.png      the core-to-core round-trip heat map
 * The data files (*.dat) and the gnuplot script stay beside the PNGs.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

int bench_plot(const char *dir, const struct bench_result *res, size_t n);

#define MAX_SERIES 32
#define MAX_POINTS 64

static FILE *open_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return fopen(path, "we");
}

static bool is(const struct bench_result *r, const char *workload)
{
    return strcmp(r->workload, workload) == 0;
}

/* One colour per system, the same in every plot; pp drawn thicker. */
static const char *system_style(const char *system)
{
    static const struct {
        const char *system, *style;
    } styles[] = {
        { "pp", "lc rgb '#d62728' lw 3 pt 7" },
        { "openmp", "lc rgb '#7f7f7f' lw 2 pt 6 dt 2" },
        { "mpi", "lc rgb '#1f77b4' lw 2 pt 5" },
        { "zmq", "lc rgb '#2ca02c' lw 2 pt 9" },
        { "fork", "lc rgb '#9467bd' lw 2 pt 11" },
        { "multiprocessing", "lc rgb '#ff7f0e' lw 2 pt 13" },
    };
    for (size_t i = 0; i < sizeof(styles) / sizeof(styles[0]); i++)
        if (strcmp(styles[i].system, system) == 0)
            return styles[i].style;
    return "lw 2";
}

/* A title for gnuplot's single-quoted strings. */
static void title_of(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void title_of(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '`';
}

/* "180", "1.2 µs", "34 ms": a latency for a legend. */
static void fmt_ns(char *b, size_t n, double ns)
{
    if (ns < 1e3)
        snprintf(b, n, "%.0f ns", ns);
    else if (ns < 1e6)
        snprintf(b, n, "%.3g µs", ns / 1e3);
    else
        snprintf(b, n, "%.3g ms", ns / 1e6);
}

/* ---------------------------------------------------------------- */
/* The best variant of each system                                    */
/* ---------------------------------------------------------------- */

struct series {
    char system[24], variant[40];
    int np;
    double x[MAX_POINTS], y[MAX_POINTS]; /* best over rounds, per x */
    double score;                        /* higher is better */
};

struct selection {
    const char *workload;
    bool (*keep)(const struct bench_result *r, double arg);
    double arg;
    double (*x)(const struct bench_result *r);
    double (*y)(const struct bench_result *r); /* higher is better; NaN: skip */
};

/* Every (system, variant) of the rows sel keeps, with the best y over
 * rounds at each x; then only the best-scoring variant of each system
 * (geometric mean of its y), pp first, the rest in the order they ran. */
static int select_best(const struct bench_result *res, size_t n, const struct selection *sel,
                       struct series *out)
{
    static struct series all[MAX_SERIES * 4];
    int na = 0, no = 0;

    for (size_t i = 0; i < n; i++) {
        const struct bench_result *r = &res[i];
        if (!is(r, sel->workload) || (sel->keep && !sel->keep(r, sel->arg)))
            continue;
        double x = sel->x(r), y = sel->y(r);
        if (!isfinite(x) || !isfinite(y) || y <= 0)
            continue;
        int k = 0;
        while (k < na && (strcmp(all[k].system, r->system) || strcmp(all[k].variant, r->variant)))
            k++;
        if (k == na) {
            if (na == (int)(sizeof(all) / sizeof(all[0])))
                continue;
            memset(&all[na], 0, sizeof(all[na]));
            snprintf(all[na].system, sizeof(all[na].system), "%s", r->system);
            snprintf(all[na].variant, sizeof(all[na].variant), "%s", r->variant);
            na++;
        }
        struct series *s = &all[k];
        int p = 0;
        while (p < s->np && s->x[p] != x)
            p++;
        if (p == s->np) {
            if (s->np == MAX_POINTS)
                continue;
            s->x[s->np] = x;
            s->y[s->np++] = y;
        } else if (y > s->y[p]) {
            s->y[p] = y;
        }
    }
    for (int k = 0; k < na; k++) {
        struct series *s = &all[k];
        double lsum = 0;
        for (int p = 0; p < s->np; p++)
            lsum += log(s->y[p]);
        s->score = s->np ? lsum / s->np : -INFINITY;
        /* points in x order, for the lines */
        for (int a = 1; a < s->np; a++)
            for (int b = a; b > 0 && s->x[b - 1] > s->x[b]; b--) {
                double tx = s->x[b], ty = s->y[b];
                s->x[b] = s->x[b - 1], s->y[b] = s->y[b - 1];
                s->x[b - 1] = tx, s->y[b - 1] = ty;
            }
    }
    for (int pass = 0; pass < 2; pass++) /* pp, then the others */
        for (int k = 0; k < na; k++) {
            if ((strcmp(all[k].system, "pp") == 0) != (pass == 0))
                continue;
            int j = 0;
            while (j < no && strcmp(out[j].system, all[k].system))
                j++;
            if (j == no) {
                if (no == MAX_SERIES)
                    continue;
                out[no++] = all[k];
            } else if (all[k].score > out[j].score) {
                out[j] = all[k];
            }
        }
    return no;
}

/* Writes each series as one data block (two blank lines between);
 * returns the first block's index in the file. */
static int write_blocks(FILE *f, int *blocks, const struct series *s, int ns)
{
    int first = *blocks;
    for (int k = 0; k < ns; k++) {
        fprintf(f, "# %s %s\n", s[k].system, s[k].variant);
        for (int p = 0; p < s[k].np; p++)
            fprintf(f, "%.9g %.9g\n", s[k].x[p], s[k].y[p]);
        fprintf(f, "\n\n");
        (*blocks)++;
    }
    return first;
}

static void plot_blocks(FILE *gp, const char *file, int first, const struct series *s, int ns,
                        const char *extra)
{
    for (int k = 0; k < ns; k++) {
        char t[96];
        title_of(t, sizeof(t), "%s %s", s[k].system, s[k].variant);
        fprintf(gp, "%s'%s' index %d with linespoints %s title '%s'", k ? ", " : "plot ",
                file, first + k, system_style(s[k].system), t);
    }
    fprintf(gp, "%s\n", extra ? extra : "");
}

/* ---------------------------------------------------------------- */
/* latency: one percentile curve per system                          */
/* ---------------------------------------------------------------- */

/* x of a percentile level on the "nines" scale: 0 -> 0, 90 -> 1, 99 -> 2. */
static double nines(double level)
{
    return 0.0 - log10(1.0 - level / 100.0); /* 0.0 -: no "-0" */
}

static int latency_plot(FILE *gp, const char *dir, const struct bench_result *res, size_t n)
{
    const struct bench_result *best[MAX_SERIES];
    int ns = 0;

    /* Per system, the row (variant and round) with the lowest p50. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            const struct bench_result *r = &res[i];
            if (!is(r, "latency") || isnan(r->p50_ns) || isnan(r->pct_ns[0]) ||
                (strcmp(r->system, "pp") == 0) != (pass == 0))
                continue;
            int j = 0;
            while (j < ns && strcmp(best[j]->system, r->system))
                j++;
            if (j == ns && ns < MAX_SERIES)
                best[ns++] = r;
            else if (j < ns && r->p50_ns < best[j]->p50_ns)
                best[j] = r;
        }
    if (ns == 0)
        return 0;
    FILE *f = open_in(dir, "latency.dat");
    if (!f)
        return -errno;
    for (int k = 0; k < ns; k++) {
        fprintf(f, "# %s %s: nines(percentile) ns percentile\n", best[k]->system,
                best[k]->variant);
        for (int p = 0; p < PEER_NPCT; p++)
            if (peer_pct_levels[p] < 100 && !isnan(best[k]->pct_ns[p]))
                fprintf(f, "%.6g %.6g %g\n", nines(peer_pct_levels[p]), best[k]->pct_ns[p],
                        peer_pct_levels[p]);
        fprintf(f, "\n\n");
    }
    fclose(f);

    double lo = INFINITY, hi = 0;
    for (int k = 0; k < ns; k++)
        for (int p = 0; p < PEER_NPCT; p++)
            if (peer_pct_levels[p] < 100 && !isnan(best[k]->pct_ns[p])) {
                lo = fmin(lo, best[k]->pct_ns[p]);
                hi = fmax(hi, best[k]->pct_ns[p]);
            }
    /* whole decades, a little wider so the end tics are drawn */
    double ylo = pow(10, floor(log10(lo))) * 0.98, yhi = pow(10, ceil(log10(hi))) * 1.02;
    fprintf(gp, "set terminal pngcairo size 1000,%d noenhanced font ',11'\n"
                "set output 'latency.png'\n"
                "set title \"round trip, one job in flight: the percentile curve of each "
                "system\\n(its best variant and round by p50; lower is better)\"\n"
                "set xlabel 'percentile (nines scale)'\nset ylabel 'round trip'\n"
                "set logscale y\nset yrange [%g:%g]\n"
                "set ytics ('10 ns' 10, '100 ns' 100, '1 µs' 1e3, '10 µs' 1e4, "
                "'100 µs' 1e5, '1 ms' 1e6, '10 ms' 1e7, '100 ms' 1e8, '1 s' 1e9)\n"
                "set xrange [0:%g]\n"
                "set xtics ('0' 0, '50' %g, '90' 1, '99' 2, '99.9' 3, '99.99' 4)\n"
                "set key below center Left reverse spacing 1.2 width 2\n",
            610 + 24 * ns, ylo, yhi, nines(99.99) + 0.1, nines(50));
    for (int k = 0; k < ns; k++) {
        char t[160], a[24], b[24];
        fmt_ns(a, sizeof(a), best[k]->p50_ns);
        fmt_ns(b, sizeof(b), best[k]->p99_ns);
        title_of(t, sizeof(t), "%s %s: p50 %s, p99 %s", best[k]->system, best[k]->variant, a,
                 b);
        fprintf(gp, "%s'latency.dat' index %d using 1:2 with linespoints %s title '%s'",
                k ? ", " : "plot ", k, system_style(best[k]->system), t);
    }
    fprintf(gp, "\nunset logscale y\nset autoscale\nset xtics autofreq\nset ytics autofreq\n"
                "set key default\n"
                "set terminal pngcairo size 1000,600 noenhanced font ',11'\n");
    return ns;
}

/* ---------------------------------------------------------------- */
/* payload and scaling                                               */
/* ---------------------------------------------------------------- */

static bool payload_keep(const struct bench_result *r, double echo)
{
    return strcmp(r->system, "memcpy") != 0 &&
           (strstr(r->variant, "echo") != NULL) == (echo != 0);
}
static double x_bytes(const struct bench_result *r) { return (double)r->payload_bytes; }
static double y_gbps(const struct bench_result *r) { return r->gbps; }

static int payload_plot(FILE *gp, const char *dir, const struct bench_result *res, size_t n)
{
    static struct series s[2][MAX_SERIES];
    int ns[2], blocks = 0, first[2];
    double base = 0;

    for (size_t i = 0; i < n; i++)
        if (is(&res[i], "payload") && strcmp(res[i].system, "memcpy") == 0 &&
            res[i].gbps > base)
            base = res[i].gbps;
    for (int e = 0; e < 2; e++) {
        struct selection sel = { "payload", payload_keep, e, x_bytes, y_gbps };
        ns[e] = select_best(res, n, &sel, s[e]);
    }
    if (ns[0] + ns[1] == 0)
        return 0;
    FILE *f = open_in(dir, "payload.dat");
    if (!f)
        return -errno;
    for (int e = 0; e < 2; e++)
        first[e] = write_blocks(f, &blocks, s[e], ns[e]);
    fclose(f);
    /* Both panels on the same axes, so they compare at a glance. */
    double xlo = INFINITY, xhi = 0, ylo = base > 0 ? base : INFINITY, yhi = base;
    for (int e = 0; e < 2; e++)
        for (int k = 0; k < ns[e]; k++)
            for (int p = 0; p < s[e][k].np; p++) {
                xlo = fmin(xlo, s[e][k].x[p]);
                xhi = fmax(xhi, s[e][k].x[p]);
                ylo = fmin(ylo, s[e][k].y[p]);
                yhi = fmax(yhi, s[e][k].y[p]);
            }

    static const char *const panel[2] = {
        "checksum: the argument in, an 8-byte checksum back",
        "echo: the argument in, the same bytes back (GB/s counts both ways)",
    };
    fprintf(gp, "set terminal pngcairo size 1000,1000 noenhanced font ',11'\n"
                "set output 'payload.png'\n"
                "set multiplot layout 2,1 title \"payload throughput: pp and the best "
                "variant of each peer, best round per size (higher is better)\"\n"
                "set logscale x 2\nset format x '%%.0b %%BB'\nset logscale y\nset format y '%%g'\n"
                "set xrange [%g:%g]\nset yrange [%g:%g]\n"
                "set xlabel 'argument bytes'\nset ylabel 'GB/s'\n"
                "set lmargin at screen 0.08\nset rmargin at screen 0.6\n"
                "set key outside right top Left reverse\n",
            xlo / 1.5, xhi * 1.5, pow(10, floor(log10(ylo))) * 0.98,
            pow(10, ceil(log10(yhi))) * 1.02);
    for (int e = 0; e < 2; e++) {
        char extra[160] = "";
        if (base > 0)
            snprintf(extra, sizeof(extra),
                     ", %.6g with lines lc rgb '#000000' dt 3 lw 1 title 'memcpy, one core'",
                     base);
        fprintf(gp, "set title '%s'\n", panel[e]);
        if (ns[e] == 0) {
            fprintf(gp, "set label 1 'not measured' at graph 0.5, graph 0.5 center\n"
                        "plot [1:2] [1:2] NaN notitle\nunset label 1\n");
            continue;
        }
        plot_blocks(gp, "payload.dat", first[e], s[e], ns[e], extra);
    }
    fprintf(gp, "unset multiplot\nunset logscale x\nunset logscale y\nset format x '%%g'\nset format y '%%g'\n"
                "set autoscale\nunset lmargin\nunset rmargin\n"
                "set terminal pngcairo size 1000,600 noenhanced font ',11'\n");
    return ns[0] + ns[1];
}

static bool scaling_keep(const struct bench_result *r, double us)
{
    return r->work_us == us;
}
static double x_workers(const struct bench_result *r) { return r->workers; }
static double y_eff(const struct bench_result *r) { return r->efficiency; }

static int scaling_plot(FILE *gp, const char *dir, const struct bench_result *res, size_t n)
{
    double lens[8];
    int nl = 0, blocks = 0, maxw = 1;
    static struct series s[8][MAX_SERIES];
    int ns[8], first[8];

    for (size_t i = 0; i < n; i++) {
        if (!is(&res[i], "scaling") || !isfinite(res[i].work_us))
            continue;
        maxw = res[i].workers > maxw ? res[i].workers : maxw;
        int k = 0;
        while (k < nl && lens[k] != res[i].work_us)
            k++;
        if (k == nl && nl < 8)
            lens[nl++] = res[i].work_us;
    }
    for (int a = 1; a < nl; a++)
        for (int b = a; b > 0 && lens[b - 1] > lens[b]; b--) {
            double t = lens[b];
            lens[b] = lens[b - 1];
            lens[b - 1] = t;
        }
    if (nl == 0)
        return 0;
    FILE *f = open_in(dir, "scaling.dat");
    if (!f)
        return -errno;
    for (int k = 0; k < nl; k++) {
        struct selection sel = { "scaling", scaling_keep, lens[k], x_workers, y_eff };
        ns[k] = select_best(res, n, &sel, s[k]);
        first[k] = write_blocks(f, &blocks, s[k], ns[k]);
    }
    fclose(f);
    fprintf(gp, "set terminal pngcairo size 1000,%d noenhanced font ',11'\n"
                "set output 'scaling.png'\n"
                "set multiplot layout %d,1 title \"parallel efficiency: pp and the best "
                "variant of each peer (1 = ideal)\"\n"
                "set xlabel 'workers'\nset ylabel 'efficiency'\nset yrange [0:1.1]\n"
                "set xrange [0.8:%g]\nset xtics 1\nset key outside right top Left reverse\n"
                "set lmargin at screen 0.08\nset rmargin at screen 0.6\n",
            nl > 1 ? 330 * nl + 60 : 600, nl, maxw + 0.2);
    for (int k = 0; k < nl; k++) {
        fprintf(gp, "set title 'jobs of %g us each'\n", lens[k]);
        plot_blocks(gp, "scaling.dat", first[k], s[k], ns[k], NULL);
    }
    fprintf(gp, "unset multiplot\nset autoscale\nset xtics autofreq\n"
                "unset lmargin\nunset rmargin\n"
                "set terminal pngcairo size 1000,600 noenhanced font ',11'\n");
    return nl;
}

/* ---------------------------------------------------------------- */
/* c2c                                                                */
/* ---------------------------------------------------------------- */

/* c2c.dat: "i j ns" over the full grid of CPUs seen (0 on the diagonal),
 * which gnuplot draws "with image". */
static double c2c_ns(const struct bench_result *res, size_t n, int a, int b)
{
    for (size_t i = 0; i < n; i++) {
        int x, y;
        if (is(&res[i], "c2c") && sscanf(res[i].variant, "cpu%d-cpu%d", &x, &y) == 2 &&
            x == a && y == b)
            return res[i].p50_ns;
    }
    return a == b ? 0 : NAN;
}

static int c2c_data(const char *dir, const struct bench_result *res, size_t n)
{
    int cpus[256], nc = 0;
    for (size_t i = 0; i < n; i++) {
        int x, y;
        if (!is(&res[i], "c2c") || sscanf(res[i].variant, "cpu%d-cpu%d", &x, &y) != 2)
            continue;
        bool seen = false;
        for (int k = 0; k < nc; k++)
            seen |= cpus[k] == x;
        if (!seen && nc < 256)
            cpus[nc++] = x;
    }
    if (nc < 2)
        return 0;
    FILE *f = open_in(dir, "c2c.dat");
    if (!f)
        return -errno;
    for (int i = 0; i < nc; i++)
        for (int j = 0; j < nc; j++)
            fprintf(f, "%d %d %g\n", cpus[i], cpus[j], c2c_ns(res, n, cpus[i], cpus[j]));
    fclose(f);
    return nc;
}

int bench_plot(const char *dir, const struct bench_result *res, size_t n)
{
    char script[4096];
    int r;

    if (mkdir(dir, 0777) < 0 && errno != EEXIST)
        return -errno;
    snprintf(script, sizeof(script), "%s/plots.gp", dir);
    FILE *gp = fopen(script, "we");
    if (!gp)
        return -errno;
    fprintf(gp, "set terminal pngcairo size 1000,600 noenhanced font ',11'\ncd '%s'\n"
                "set grid\nset style data linespoints\n", dir);
    if ((r = latency_plot(gp, dir, res, n)) < 0 || (r = payload_plot(gp, dir, res, n)) < 0 ||
        (r = scaling_plot(gp, dir, res, n)) < 0) {
        fclose(gp);
        fprintf(stderr, "ppbench: plots: %s\n", strerror(-r));
        return r;
    }
    if ((r = c2c_data(dir, res, n)) < 0) {
        fclose(gp);
        fprintf(stderr, "ppbench: plots: %s\n", strerror(-r));
        return r;
    }
    if (r > 0)
        fprintf(gp, "set output 'c2c.png'\nset title 'core-to-core round trip (ns)'\n"
                    "set xlabel 'cpu'\nset ylabel 'cpu'\nset palette rgb 33,13,10\n"
                    "unset key\nunset grid\nset xtics 1\nset ytics 1\n"
                    "set autoscale xfix\nset autoscale yfix\n"
                    "plot 'c2c.dat' using 1:2:3 with image notitle, "
                    "'' using 1:2:(sprintf('%%.0f',$3)) with labels notitle\n");
    fclose(gp);

    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "gnuplot '%s'", script);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "ppbench: gnuplot failed on %s (is gnuplot installed?)\n", script);
        return -EIO;
    }
    bench_progress("plots written to %s", dir);
    return 0;
}
