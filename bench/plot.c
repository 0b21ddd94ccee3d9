/*
 * plot.c - PNG plots of a ppbench run, drawn by gnuplot.
 * (Stub until the plotting lands: says so and fails, never pretends.)
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>

int bench_plot(const char *dir, const struct bench_result *res, size_t n);

int bench_plot(const char *dir, const struct bench_result *res, size_t n)
{
    (void)res;
    (void)n;
    fprintf(stderr, "ppbench: --plot %s: plotting is not built yet\n", dir);
    return -ENOSYS;
}
