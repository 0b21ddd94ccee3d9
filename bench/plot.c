/*
 * plot.c - PNG plots of a ppbench run, drawn by gnuplot:
 *   latency.png  p50 / p99 / p99.9 round trip of every system (log scale)
 *   scaling.png  parallel efficiency against workers, per job length
 *   payload.png  GB/s against argument size, per system
 *   c2c.png      the core-to-core round-trip heat map
 * The data files (*.dat) and the gnuplot script stay beside the PNGs.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

int bench_plot(const char *dir, const struct bench_result *res, size_t n);

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

static void series_name(const struct bench_result *r, char *out, size_t n)
{
    snprintf(out, n, "%s %s", r->system, r->variant);
    for (char *p = out; *p; p++)
        if (*p == ' ' || *p == '"')
            *p = '_';
}

/* latency.dat: one row per system: label p50 p99 p999 */
static int latency_data(const char *dir, const struct bench_result *res, size_t n)
{
    FILE *f = open_in(dir, "latency.dat");
    int rows = 0;
    if (!f)
        return -errno;
    for (size_t i = 0; i < n; i++)
        if (is(&res[i], "latency") && !isnan(res[i].p50_ns)) {
            char name[80];
            series_name(&res[i], name, sizeof(name));
            fprintf(f, "\"%s\" %g %g %g\n", name, res[i].p50_ns, res[i].p99_ns,
                    res[i].p999_ns);
            rows++;
        }
    fclose(f);
    return rows;
}

/* A data file with one gnuplot data block per series (two blank lines
 * between), x y per row; returns the number of series, names in names. */
static int series_data(const char *dir, const char *file, const char *workload,
                       const struct bench_result *res, size_t n, char names[][80],
                       int max, double (*x)(const struct bench_result *),
                       double (*y)(const struct bench_result *))
{
    FILE *f = open_in(dir, file);
    int ns = 0;
    if (!f)
        return -errno;
    for (size_t i = 0; i < n; i++) {
        if (!is(&res[i], workload) || isnan(y(&res[i])))
            continue;
        char name[80];
        series_name(&res[i], name, sizeof(name));
        bool seen = false;
        for (int k = 0; k < ns; k++)
            seen |= strcmp(names[k], name) == 0;
        if (seen || ns == max)
            continue;
        snprintf(names[ns++], 80, "%s", name);
        for (size_t j = i; j < n; j++) {
            char other[80];
            series_name(&res[j], other, sizeof(other));
            if (is(&res[j], workload) && strcmp(other, name) == 0 && !isnan(y(&res[j])))
                fprintf(f, "%g %g\n", x(&res[j]), y(&res[j]));
        }
        fprintf(f, "\n\n");
    }
    fclose(f);
    return ns;
}

static double x_workers(const struct bench_result *r) { return r->workers; }
static double y_eff(const struct bench_result *r) { return r->efficiency; }
static double x_bytes(const struct bench_result *r) { return (double)r->payload_bytes; }
static double y_gbps(const struct bench_result *r)
{
    return strcmp(r->system, "memcpy") ? r->gbps : NAN;
}

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

static void plot_series(FILE *gp, const char *file, char names[][80], int ns)
{
    for (int k = 0; k < ns; k++)
        fprintf(gp, "%s'%s' index %d with linespoints title '%s'", k ? ", " : "plot ",
                file, k, names[k]);
    fprintf(gp, "\n");
}

int bench_plot(const char *dir, const struct bench_result *res, size_t n)
{
    char names[64][80], script[4096];
    int r;

    if (mkdir(dir, 0777) < 0 && errno != EEXIST)
        return -errno;
    snprintf(script, sizeof(script), "%s/plots.gp", dir);
    FILE *gp = fopen(script, "we");
    if (!gp)
        return -errno;
    fprintf(gp, "set terminal pngcairo size 1000,600 noenhanced\ncd '%s'\n"
                "set key outside right\nset grid\n", dir);
    if ((r = latency_data(dir, res, n)) > 0)
        fprintf(gp, "set output 'latency.png'\nset title 'round trip, one job in flight'\n"
                    "set logscale y\nset ylabel 'ns'\nset style data histograms\n"
                    "set style fill solid\nset xtics rotate by -30\n"
                    "plot 'latency.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99',"
                    " '' using 4 title 'p99.9'\nunset logscale y\nset xtics norotate\n"
                    "set style data linespoints\n");
    if ((r = series_data(dir, "scaling.dat", "scaling", res, n, names, 64, x_workers,
                         y_eff)) > 0) {
        fprintf(gp, "set output 'scaling.png'\nset title 'parallel efficiency'\n"
                    "set xlabel 'workers'\nset ylabel 'efficiency (1 = ideal)'\n"
                    "set yrange [0:1.1]\n");
        plot_series(gp, "scaling.dat", names, r);
        fprintf(gp, "set autoscale y\n");
    }
    if ((r = series_data(dir, "payload.dat", "payload", res, n, names, 64, x_bytes,
                         y_gbps)) > 0) {
        fprintf(gp, "set output 'payload.png'\nset title 'payload throughput'\n"
                    "set logscale x 2\nset format x '%%.0b %%BB'\n"
                    "set xlabel 'argument bytes'\nset ylabel 'GB/s'\n");
        plot_series(gp, "payload.dat", names, r);
        fprintf(gp, "unset logscale x\nset format x '%%g'\n");
    }
    if ((r = c2c_data(dir, res, n)) > 0)
        fprintf(gp, "set output 'c2c.png'\nset title 'core-to-core round trip (ns)'\n"
                    "set xlabel 'cpu'\nset ylabel 'cpu'\nset palette rgb 33,13,10\n"
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
