/*
 * peers.c - runs the peer programs (bench/peers/) and folds their JSON
 * lines into ppbench's output.
 *
 * Every variant a peer offers for a workload is run, so no peer is judged
 * by a handicapped way of using it.  A peer whose program is missing, or
 * that says it cannot run (exit 3 unsupported, 4 skipped), is reported on
 * standard error and skipped; a hung peer is killed after PEER_TIMEOUT_S.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PEER_TIMEOUT_S 300

extern char **environ;

struct peer_def {
    const char *prog;      /* file in peers/ */
    bool python;           /* run through python3 */
    bool slow;             /* a process or interpreter per job, or stalls: fewer jobs */
    const char *workload;
    const char *variants[4];
};

static const struct peer_def peer_defs[] = {
    { "peer_omp", false, false, "overhead", { "for-dynamic1", "tasks" } },
    { "peer_omp", false, false, "map", { "for-static" } },
    { "peer_omp", false, false, "latency", { "flag-spin", "parallel-per-job" } },
    { "peer_omp", false, false, "payload", { "for-dynamic1" } },
    { "peer_omp", false, false, "scaling", { "for-dynamic1" } },
    { "peer_omp", false, false, "imbalance", { "for-dynamic1" } },
    { "peer_mpi", false, false, "overhead", { "window2", "window1" } },
    { "peer_mpi", false, false, "map", { "scatter-gather" } },
    { "peer_mpi", false, false, "latency", { "send-recv" } },
    { "peer_mpi", false, false, "payload", { "window2", "window1" } },
    { "peer_mpi", false, false, "scaling", { "window2", "window1" } },
    { "peer_mpi", false, false, "imbalance", { "window2", "window1" } },
    { "peer_zmq", false, false, "overhead", { "push-pull", "router-lb" } },
    { "peer_zmq", false, false, "map", { "push-pull-batch" } },
    { "peer_zmq", false, false, "latency", { "push-pull" } },
    { "peer_zmq", false, false, "payload", { "push-pull", "router-lb" } },
    { "peer_zmq", false, false, "scaling", { "push-pull", "router-lb" } },
    { "peer_zmq", false, false, "imbalance", { "push-pull", "router-lb" } },
    { "peer_fork", false, true, "overhead", { "fork-pipe" } },
    { "peer_fork", false, true, "map", { "fork-per-chunk" } },
    { "peer_fork", false, true, "latency", { "fork-pipe" } },
    { "peer_fork", false, true, "payload", { "fork-pipe" } },
    { "peer_fork", false, true, "scaling", { "fork-pipe" } },
    { "peer_fork", false, true, "imbalance", { "fork-pipe" } },
    { "peer_mp.py", true, true, "overhead", { "apply_async", "map", "imap_unordered" } },
    { "peer_mp.py", true, true, "map", { "map" } },
    { "peer_mp.py", true, true, "latency", { "apply" } },
    { "peer_mp.py", true, true, "payload", { "apply_async", "imap" } },
    { "peer_mp.py", true, true, "scaling", { "apply_async-pyspin" } },
    { "peer_mp.py", true, true, "imbalance", { "apply_async-pyspin" } },
    /* remote-*: one worker process over loopback TCP; raw TCP first,
     * the floor pp's remote rows are compared with */
    { "peer_tcp", false, false, "remote-overhead", { "window64" } },
    { "peer_tcp", false, false, "remote-latency", { "ping-pong" } },
    { "peer_tcp", false, false, "remote-payload", { "echo" } },
    { "peer_zmq_tcp", false, false, "remote-overhead", { "dealer-router", "push-pull" } },
    { "peer_zmq_tcp", false, false, "remote-latency", { "req-rep" } },
    { "peer_zmq_tcp", false, false, "remote-payload", { "dealer-router" } },
    /* slow: Open MPI's TCP transport stalls for milliseconds now and then
     * on this kind of VM (p50 near the floor, the mean 10-100 us) */
    { "peer_mpi", false, true, "remote-overhead", { "tcp-window64" } },
    { "peer_mpi", false, true, "remote-latency", { "tcp-send-recv" } },
    { "peer_mpi", false, false, "remote-payload", { "tcp-window" } },
};

/*
 * The peers of the pprocess-style workloads (collect.c).  as: the
 * workload the peer runs, whose lines are relabelled (NULL = the same);
 * cap: the most jobs it gets, a tenth of it with --quick (0 = as many as
 * pp), in place of slow's cap.
 */
struct peer_def_as {
    struct peer_def def;
    const char *as;
    uint64_t cap;
};

static const struct peer_def_as peer_defs_as[] = {
    /* stream: J 8-byte values from one child process to the parent.  A
     * write(2) or a pickled object per value costs microseconds: those
     * get fewer values (the figure is per value). */
    { { "peer_stream", false, false, "stream", { "pipe-write-per-value" } }, NULL, 1000000 },
    { { "peer_stream", false, false, "stream", { "pipe-buffered" } }, NULL, 0 },
    { { "peer_stream_zmq", false, false, "stream", { "push-pull" } }, NULL, 0 },
    { { "peer_mp.py", true, false, "stream", { "queue", "pipe" } }, NULL, 200000 },
    /* remote-stream: the same values from a child over loopback TCP, the
     * floor of pp's node-to-client messages */
    { { "peer_stream", false, false, "remote-stream", { "tcp-write-per-value" } }, "stream",
      1000000 },
    { { "peer_stream", false, false, "remote-stream", { "tcp-buffered" } }, "stream", 0 },
    /* collect: J trivial jobs collected in arrival or submission order.
     * These peers' overhead runs are exactly that (the same jobs, each
     * result checked), measured again at collect's size and workers. */
    { { "peer_fork", false, true, "collect", { "fork-pipe" } }, "overhead", 20000 },
    { { "peer_zmq", false, false, "collect", { "push-pull", "router-lb" } }, "overhead", 0 },
    { { "peer_mp.py", true, false, "collect", { "imap", "imap_unordered" } }, "overhead", 0 },
};

/* ---------------------------------------------------------------- */
/* A minimal reader for the flat JSON objects the peers print          */
/* ---------------------------------------------------------------- */

static const char *field(const char *line, const char *key)
{
    char pat[40];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

static double num(const char *line, const char *key)
{
    const char *p = field(line, key);
    if (!p || strncmp(p, "null", 4) == 0)
        return NAN;
    return strtod(p, NULL);
}

static void str(const char *line, const char *key, char *out, size_t n)
{
    const char *p = field(line, key);
    size_t k = 0;
    if (p && *p == '"')
        for (p++; *p && *p != '"' && k + 1 < n; p++) {
            if (*p == '\\' && p[1])
                p++;
            out[k++] = *p;
        }
    out[k] = '\0';
}

/* "percentiles": [[level, ns], ...]: each level of peer_pct_levels found
 * fills its slot; anything else (null, an unknown level) leaves NaN. */
static void pcts(const char *line, double *out)
{
    const char *p = field(line, "percentiles");
    if (!p || *p != '[')
        return;
    for (p++;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p != '[')
            return;
        char *end;
        double lv = strtod(p + 1, &end);
        if (end == p + 1)
            return;
        p = end;
        while (*p == ' ' || *p == ',')
            p++;
        double v = strncmp(p, "null", 4) == 0 ? NAN : strtod(p, &end);
        p = strchr(p, ']');
        if (!p)
            return;
        p++;
        for (int k = 0; k < PEER_NPCT; k++)
            if (fabs(peer_pct_levels[k] - lv) < 1e-9)
                out[k] = v;
    }
}

static void parse_line(const char *line, struct bench_result *r)
{
    char w[24], sys[24], var[40];
    str(line, "workload", w, sizeof(w));
    str(line, "system", sys, sizeof(sys));
    str(line, "variant", var, sizeof(var));
    bench_result_init(r, w, sys, var);
    r->workers = (int)num(line, "workers");
    r->jobs = (uint64_t)num(line, "jobs");
    double pb = num(line, "payload_bytes");
    r->payload_bytes = isnan(pb) ? 0 : (uint64_t)pb;
    r->ns_per_job = num(line, "ns_per_job");
    r->jobs_per_s = num(line, "jobs_per_s");
    r->p50_ns = num(line, "p50_ns");
    r->p99_ns = num(line, "p99_ns");
    r->p999_ns = num(line, "p999_ns");
    r->gbps = num(line, "gbps");
    r->first_call_ns = num(line, "first_call_ns");
    r->repeat_call_ns = num(line, "repeat_call_ns");
    r->efficiency = num(line, "efficiency");
    pcts(line, r->pct_ns);
    str(line, "version", r->version, sizeof(r->version));
}

/* ---------------------------------------------------------------- */
/* Running one peer                                                   */
/* ---------------------------------------------------------------- */

/* Reads the child's stdout until EOF or the deadline; emits each line. */
static void pump(const struct bench_opts *o, int fd, pid_t pid, bool echo, uint64_t work_us,
                 const char *relabel)
{
    char buf[8192];
    size_t have = 0;
    time_t deadline = time(NULL) + PEER_TIMEOUT_S;

    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        int left = (int)(deadline - time(NULL));
        if (left <= 0 || poll(&p, 1, left * 1000) == 0) {
            fprintf(stderr, "ppbench: peer timed out, killed\n");
            kill(pid, SIGKILL);
            return;
        }
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            return;
        have += (size_t)n;
        buf[have] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = '\0';
            if (buf[0] == '{') {
                struct bench_result r;
                parse_line(buf, &r);
                if (echo) /* name it, as pp's own echo rows are named */
                    strncat(r.variant, " echo", sizeof(r.variant) - strlen(r.variant) - 1);
                if (work_us) /* the job length, which the line does not carry */
                    r.work_us = (double)work_us;
                if (relabel) /* measured as another workload ("as") */
                    snprintf(r.workload, sizeof(r.workload), "%s", relabel);
                bench_emit(o, &r);
            }
            have -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have + 1);
        }
        if (have == sizeof(buf) - 1)
            have = 0; /* an overlong line: drop it */
    }
}

static void run_one(const struct bench_opts *o, const struct peer_def *d, const char *as,
                    const char *variant, int workers, uint64_t jobs,
                    uint64_t payload, bool echo, uint64_t work_us)
{
    char path[4096], sw[16], sj[24], sp[24], su[24];
    const char *argv[24];
    int k = 0, fds[2];

    snprintf(path, sizeof(path), "%s/peers/%s", o->self_dir, d->prog);
    if (access(path, R_OK) != 0) {
        bench_progress("peer %s not built: skipped", d->prog);
        return;
    }
    snprintf(sw, sizeof(sw), "%d", workers);
    snprintf(sj, sizeof(sj), "%llu", (unsigned long long)jobs);
    snprintf(sp, sizeof(sp), "%llu", (unsigned long long)payload);
    snprintf(su, sizeof(su), "%llu", (unsigned long long)work_us);
    if (d->python)
        argv[k++] = "python3";
    argv[k++] = path;
    argv[k++] = "--workload";
    argv[k++] = as ? as : d->workload;
    argv[k++] = "--workers";
    argv[k++] = sw;
    argv[k++] = "--jobs";
    argv[k++] = sj;
    argv[k++] = "--variant";
    argv[k++] = variant;
    if (payload) {
        argv[k++] = "--payload";
        argv[k++] = sp;
    }
    if (echo)
        argv[k++] = "--echo";
    if (work_us) {
        argv[k++] = "--work-us";
        argv[k++] = su;
    }
    argv[k++] = "--seed";
    argv[k++] = "1";
    argv[k] = NULL;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (r != 0) {
        bench_progress("peer %s: cannot start (%s): skipped", d->prog, strerror(r));
        close(fds[0]);
        return;
    }
    pump(o, fds[0], pid, echo, work_us, as ? d->workload : NULL);
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
        bench_progress("peer %s %s: not supported", d->prog, variant);
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 4)
        bench_progress("peer %s: missing a run-time piece: skipped", d->prog);
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bench_progress("peer %s %s: failed (status %d)", d->prog, variant, st);
}

/* Runs every variant of d with n jobs. */
static void run_def(const struct bench_opts *o, const struct peer_def *d, const char *as,
                    int workers, uint64_t n, uint64_t payload, bool echo, uint64_t work_us)
{
    for (int v = 0; v < 4 && d->variants[v]; v++) {
        bench_progress("%s: %s %s", d->workload, d->prog, d->variants[v]);
        run_one(o, d, as, d->variants[v], workers, n, payload, echo, work_us);
    }
}

void peers_run(const struct bench_opts *o, const char *workload, int workers,
               uint64_t jobs, uint64_t payload, bool echo, uint64_t work_us)
{
    if (!o->peers)
        return;
    for (size_t i = 0; i < sizeof(peer_defs) / sizeof(peer_defs[0]); i++) {
        const struct peer_def *d = &peer_defs[i];
        if (strcmp(d->workload, workload) != 0)
            continue;
        /* Per-job figures stay comparable with fewer jobs; a process per
         * job would otherwise dominate the run time. */
        uint64_t cap = o->quick ? 5000 : 20000;
        uint64_t n = d->slow && jobs > cap && !work_us ? cap : jobs;
        run_def(o, d, NULL, workers, n, payload, echo, work_us);
    }
    for (size_t i = 0; i < sizeof(peer_defs_as) / sizeof(peer_defs_as[0]); i++) {
        const struct peer_def_as *d = &peer_defs_as[i];
        if (strcmp(d->def.workload, workload) != 0)
            continue;
        uint64_t cap = o->quick ? d->cap / 10 : d->cap;
        run_def(o, &d->def, d->as, workers, d->cap && jobs > cap ? cap : jobs, payload, echo,
                work_us);
    }
}
