/*
 * peer_mpi.c - an Open MPI master/worker farm, the pattern MPI texts
 * teach for independent tasks: rank 0 hands jobs to ranks 1..N with
 * point-to-point messages and collects the results; the batch path is a
 * collective (MPI_Scatterv / MPI_Gatherv).
 *
 * Every rank runs this same program with the same command line (SPMD),
 * so the workers know the workload without being told.  Started outside
 * mpirun (no OMPI_COMM_WORLD_SIZE), the program re-executes itself as
 *   mpirun --oversubscribe --allow-run-as-root -np N+1
 *          --mca btl self,vader <itself> <args>
 * (vader is Open MPI 4's shared-memory transport).  The remote
 * workloads run over TCP on loopback instead, as a pp node is reached:
 *   --mca btl tcp,self --mca pml ob1 --mca btl_tcp_if_include lo
 *   --mca oob_tcp_if_include lo
 * (ob1, or the ucx pml would move the bytes through shared memory; the
 * TCP transport binds ports of its own choosing.)  No mpirun in PATH:
 * exit 4, skipped.  When oversubscribed, Open MPI makes waiting ranks
 * yield the CPU by itself (mpi_yield_when_idle), so nothing is tuned.
 *
 * Variants (the first of each workload is the default):
 *   overhead, payload, scaling, imbalance   window2 | window1
 *   latency    send-recv
 *   map        scatter-gather
 *   remote-overhead  tcp-window64
 *   remote-latency   tcp-send-recv
 *   remote-payload   tcp-window  (peer_remote_window jobs in flight)
 * windowW keeps W jobs outstanding per worker, so a worker always has
 * its next job queued instead of waiting out a round trip.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TAG_JOB = 1, TAG_RESULT, TAG_PING, TAG_STOP };

#define MAX_WINDOW PEER_REMOTE_WINDOW

/* ------------------------------------------------------------------ */
/* Launching through mpirun                                            */
/* ------------------------------------------------------------------ */

/* Finds name in PATH; returns 0 with the full path in buf, or -ENOENT. */
static int find_in_path(const char *name, char *buf, size_t len)
{
    const char *path = getenv("PATH");

    while (path && *path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && (size_t)snprintf(buf, len, "%.*s/%s", (int)n, path, name) < len &&
            access(buf, X_OK) == 0)
            return 0;
        path += n + (path[n] == ':');
    }
    return -ENOENT;
}

/* Replaces this process by mpirun running N+1 copies of it, over
 * shared memory or, for a remote workload, loopback TCP.  Returns only
 * on failure, with the exit code to use. */
static int relaunch(int argc, char **argv, const struct peer_args *a)
{
    char mpirun[PATH_MAX], self[PATH_MAX], np[16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char **args = calloc((size_t)argc + 24, sizeof(*args));
    int k = 0;

    if (getenv("PEER_MPI_RELAUNCHED")) {
        fprintf(stderr, "peer_mpi: mpirun started us without OMPI_COMM_WORLD_SIZE\n");
        return PEER_EXIT_FAIL;
    }
    if (find_in_path("mpirun", mpirun, sizeof(mpirun))) {
        fprintf(stderr, "peer_mpi: mpirun not found in PATH, skipped\n");
        return PEER_EXIT_SKIPPED;
    }
    if (n < 0 || !args)
        return peer_fail("finding our own executable", n < 0 ? errno : ENOMEM);
    self[n] = '\0';
    snprintf(np, sizeof(np), "%d", a->workers + 1);
    const char *head[] = { "mpirun", "--oversubscribe", "--allow-run-as-root",
                           "-np", np, "--mca", "btl", "self,vader" };
    const char *tcp[] = { "mpirun", "--oversubscribe", "--allow-run-as-root",
                          "-np", np, "--mca", "btl", "tcp,self", "--mca", "pml", "ob1",
                          "--mca", "btl_tcp_if_include", "lo",
                          "--mca", "oob_tcp_if_include", "lo" };
    bool remote = peer_workload_remote(a->workload);
    size_t nh = remote ? sizeof(tcp) / sizeof(tcp[0]) : sizeof(head) / sizeof(head[0]);
    for (size_t i = 0; i < nh; i++)
        args[k++] = (char *)(remote ? tcp[i] : head[i]);
    args[k++] = self;
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    setenv("PEER_MPI_RELAUNCHED", "1", 1); /* guards against a loop */
    fflush(NULL);
    execv(mpirun, args);
    return peer_fail("executing mpirun", errno);
}

/* ------------------------------------------------------------------ */
/* Workers (ranks 1..N)                                                */
/* ------------------------------------------------------------------ */

/* Payload jobs, local or remote (remote-payload always echoes). */
static bool is_payload(const struct peer_args *a)
{
    return peer_workload_base(a->workload) == PEER_PAYLOAD;
}

/* Bytes of a job message: the payload, or one uint64 argument. */
static size_t job_bytes(const struct peer_args *a)
{
    return is_payload(a) ? a->payload : sizeof(uint64_t);
}

/* Bytes of a result message: the echo, or one uint64. */
static size_t result_bytes(const struct peer_args *a)
{
    return is_payload(a) && a->echo ? a->payload : sizeof(uint64_t);
}

/* Serves jobs from rank 0 until TAG_STOP.  Returns 0 or -errno. */
static int worker_loop(const struct peer_args *a)
{
    size_t cap = job_bytes(a);
    unsigned char *buf = malloc(cap);
    MPI_Status st;
    uint64_t v;

    if (!buf)
        return -ENOMEM;
    for (;;) {
        MPI_Recv(buf, (int)cap, MPI_BYTE, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
        if (st.MPI_TAG == TAG_STOP)
            break;
        if (st.MPI_TAG == TAG_PING) {
            MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD);
            continue;
        }
        if (is_payload(a) && a->echo) {
            MPI_Send(buf, (int)cap, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
            continue;
        }
        if (is_payload(a)) {
            v = peer_checksum(buf, cap);
        } else {
            memcpy(&v, buf, sizeof(v));
            v = peer_u64_job(a->workload, v);
        }
        MPI_Send(&v, sizeof(v), MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    }
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The master (rank 0)                                                 */
/* ------------------------------------------------------------------ */

/* The jobs outstanding at one worker, oldest first.  MPI does not let
 * messages between two ranks overtake each other, so results come back
 * in this order and need no job index in them. */
struct outstanding {
    uint64_t job[MAX_WINDOW];
    MPI_Request req[MAX_WINDOW];  /* the Isend of each job */
    unsigned char *buf[MAX_WINDOW]; /* its send buffer, live until sent */
    int head, count;
};

struct master {
    const struct peer_args *a;
    int window, nworkers;
    struct peer_plan plan;
    struct peer_payload_ref ref;
    struct outstanding *w;  /* index 1..N; 0 unused */
    unsigned char *result;  /* receive buffer of one result */
    uint64_t next, done;
};

static int master_init(struct master *m, const struct peer_args *a, int window)
{
    size_t jb = job_bytes(a);

    *m = (struct master){ .a = a, .window = window, .nworkers = a->workers };
    if (peer_plan_init(a, &m->plan))
        return -ENOMEM;
    m->w = calloc((size_t)a->workers + 1, sizeof(*m->w));
    m->result = malloc(result_bytes(a));
    unsigned char *tmpl = is_payload(a) ? malloc(jb) : NULL;
    if (!m->w || !m->result || (is_payload(a) && !tmpl))
        return -ENOMEM;
    if (tmpl) {
        peer_payload_fill(tmpl, jb);
        peer_payload_ref_init(&m->ref, tmpl, jb);
    }
    /* Each slot keeps a filled copy; a job only restamps its first word. */
    for (int r = 1; r <= a->workers; r++) {
        for (int k = 0; k < window; k++) {
            if (!(m->w[r].buf[k] = malloc(jb)))
                return -ENOMEM;
            if (tmpl)
                memcpy(m->w[r].buf[k], tmpl, jb);
        }
    }
    return 0;
}

static void master_free(struct master *m)
{
    for (int r = 1; m->w && r <= m->nworkers; r++)
        for (int k = 0; k < m->window; k++)
            free(m->w[r].buf[k]);
    free(m->w);
    free(m->result);
    free((void *)m->ref.tmpl);
    peer_plan_free(&m->plan);
}

/* Sends job j to worker rank r without waiting for it to be received:
 * a blocking send of a large payload could wait on a worker that is
 * itself blocked sending us a large echo. */
static void dispatch(struct master *m, int r, uint64_t j)
{
    struct outstanding *o = &m->w[r];
    int k = (o->head + o->count++) % m->window;
    size_t jb = job_bytes(m->a);

    if (is_payload(m->a)) {
        peer_payload_stamp(o->buf[k], jb, j);
    } else {
        uint64_t arg = peer_u64_arg(m->a, &m->plan, j);
        memcpy(o->buf[k], &arg, sizeof(arg));
    }
    o->job[k] = j;
    MPI_Isend(o->buf[k], (int)jb, MPI_BYTE, r, TAG_JOB, MPI_COMM_WORLD, &o->req[k]);
}

/* Checks the result in m->result (len bytes) of job j. */
static bool result_ok(const struct master *m, uint64_t j, int len)
{
    const struct peer_args *a = m->a;
    uint64_t v;

    if (len != (int)result_bytes(a))
        return false;
    if (is_payload(a) && a->echo)
        return peer_payload_echo_ok(&m->ref, j, m->result);
    memcpy(&v, m->result, sizeof(v));
    if (is_payload(a))
        return v == peer_payload_expect(&m->ref, j);
    return peer_u64_check(a, &m->plan, j, v);
}

/* Receives one result from any worker, retires that worker's oldest
 * job and refills its window.  Returns 0 or -EPROTO. */
static int collect_one(struct master *m)
{
    MPI_Status st;
    int len;

    MPI_Recv(m->result, (int)result_bytes(m->a), MPI_BYTE, MPI_ANY_SOURCE,
             TAG_RESULT, MPI_COMM_WORLD, &st);
    MPI_Get_count(&st, MPI_BYTE, &len);
    int r = st.MPI_SOURCE;
    struct outstanding *o = &m->w[r];
    int k = o->head;
    if (r < 1 || r > m->nworkers || o->count == 0)
        return -EPROTO;
    MPI_Wait(&o->req[k], MPI_STATUS_IGNORE); /* received, so done */
    if (!result_ok(m, o->job[k], len)) {
        fprintf(stderr, "peer_mpi: job %llu from rank %d is wrong\n",
                (unsigned long long)o->job[k], r);
        return -EPROTO;
    }
    o->head = (o->head + 1) % m->window;
    o->count--;
    m->done++;
    if (m->next < m->a->jobs)
        dispatch(m, r, m->next++);
    return 0;
}

/* Runs all J jobs through the windows.  Returns 0 or -EPROTO. */
static int master_run(struct master *m)
{
    for (int k = 0; k < m->window; k++)
        for (int r = 1; r <= m->nworkers && m->next < m->a->jobs; r++)
            dispatch(m, r, m->next++);
    while (m->done < m->a->jobs) {
        int rc = collect_one(m);
        if (rc)
            return rc;
    }
    return 0;
}

/* One round trip with every worker before timing, so no connection is
 * set up inside the measurement. */
static void ping_all(int nworkers)
{
    for (int r = 1; r <= nworkers; r++) {
        MPI_Send(NULL, 0, MPI_BYTE, r, TAG_PING, MPI_COMM_WORLD);
        MPI_Recv(NULL, 0, MPI_BYTE, r, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
}

static void stop_workers(int first, int last)
{
    for (int r = first; r <= last; r++)
        MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
}

static int run_window(const struct peer_args *a, struct peer_result *r,
                      int window)
{
    struct master m;
    int rc = master_init(&m, a, window);

    if (rc == 0) {
        ping_all(a->workers);
        uint64_t t0 = peer_now_ns();
        rc = master_run(&m);
        peer_result_wall(r, a, &m.plan, peer_now_ns() - t0);
    }
    master_free(&m);
    return rc;
}

static int run_window2(const struct peer_args *a, struct peer_result *r)
{
    return run_window(a, r, 2);
}

static int run_window1(const struct peer_args *a, struct peer_result *r)
{
    return run_window(a, r, 1);
}

/* The remote workloads' window, the same as every system's there. */
static int run_remote_window(const struct peer_args *a, struct peer_result *r)
{
    return run_window(a, r, (int)peer_remote_window(a->workload, a->payload));
}

/* One job to rank 1 and its result back. */
static int round_trip(const struct peer_args *a, uint64_t i)
{
    struct peer_plan none = { 0 };
    uint64_t v = i;

    MPI_Send(&v, sizeof(v), MPI_BYTE, 1, TAG_JOB, MPI_COMM_WORLD);
    MPI_Recv(&v, sizeof(v), MPI_BYTE, 1, TAG_RESULT, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return peer_u64_check(a, &none, i, v) ? 0 : -EPROTO;
}

/* One job in flight, always to rank 1.  Ranks 2..N are stopped first:
 * idle ranks would only compete for the CPUs while polling. */
static int run_send_recv(const struct peer_args *a, struct peer_result *r)
{
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt));

    if (!rtt)
        return -ENOMEM;
    stop_workers(2, a->workers);
    uint64_t t0 = peer_now_ns();
    int rc = round_trip(a, 0); /* the first call: no connection yet */
    uint64_t first = peer_now_ns() - t0;
    for (uint64_t i = 0; i < a->jobs && rc == 0; i++) {
        t0 = peer_now_ns();
        rc = round_trip(a, i);
        rtt[i] = peer_now_ns() - t0;
    }
    if (rc == 0)
        peer_result_latency(r, rtt, a->jobs, first);
    free(rtt);
    return rc;
}

/* ------------------------------------------------------------------ */
/* map: the collective path, run by every rank                         */
/* ------------------------------------------------------------------ */

/* Rank 0 keeps no items: as in the other workloads, it only feeds and
 * collects, and ranks 1..N get J/N items each (the first J%N one more). */
static void map_counts(const struct peer_args *a, int *counts, int *displs)
{
    uint64_t base = a->jobs / (uint64_t)a->workers, extra = a->jobs % (uint64_t)a->workers;
    int off = 0;

    counts[0] = displs[0] = 0;
    for (int r = 1; r <= a->workers; r++) {
        counts[r] = (int)((base + ((uint64_t)(r - 1) < extra)) * sizeof(uint64_t));
        displs[r] = off;
        off += counts[r];
    }
}

/* Every rank calls this.  Rank 0 returns 0 or -errno with r filled in;
 * the workers return 0 or -errno. */
static int run_map(const struct peer_args *a, struct peer_result *r, int rank)
{
    int n = a->workers + 1, counts[n], displs[n], rc = 0;
    uint64_t *all = NULL, *mine = NULL;
    struct peer_plan none = { 0 };

    map_counts(a, counts, displs);
    mine = malloc((size_t)counts[rank] + sizeof(uint64_t)); /* never 0 bytes */
    if (rank == 0 && (all = malloc(a->jobs * sizeof(*all))))
        for (uint64_t i = 0; i < a->jobs; i++)
            all[i] = i;
    if (!mine || (rank == 0 && !all))
        MPI_Abort(MPI_COMM_WORLD, PEER_EXIT_FAIL); /* others wait in the collective */
    MPI_Barrier(MPI_COMM_WORLD);
    uint64_t t0 = peer_now_ns();
    MPI_Scatterv(all, counts, displs, MPI_BYTE, mine, counts[rank], MPI_BYTE, 0, MPI_COMM_WORLD);
    for (size_t k = 0; k < counts[rank] / sizeof(uint64_t); k++)
        mine[k] = peer_trivial(mine[k]);
    MPI_Gatherv(mine, counts[rank], MPI_BYTE, all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    for (uint64_t i = 0; rank == 0 && i < a->jobs && rc == 0; i++)
        rc = peer_u64_check(a, &none, i, all[i]) ? 0 : -EPROTO;
    if (rank == 0)
        peer_result_wall(r, a, &none, peer_now_ns() - t0);
    free(all);
    free(mine);
    return rc;
}

static int run_map_master(const struct peer_args *a, struct peer_result *r)
{
    return run_map(a, r, 0);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static const struct peer_variant variants[] = {
    { PEER_OVERHEAD, "window2", run_window2 },
    { PEER_OVERHEAD, "window1", run_window1 },
    { PEER_MAP, "scatter-gather", run_map_master }, /* ranks 1..N: run_map() */
    { PEER_LATENCY, "send-recv", run_send_recv },
    { PEER_PAYLOAD, "window2", run_window2 },
    { PEER_PAYLOAD, "window1", run_window1 },
    { PEER_SCALING, "window2", run_window2 },
    { PEER_SCALING, "window1", run_window1 },
    { PEER_IMBALANCE, "window2", run_window2 },
    { PEER_IMBALANCE, "window1", run_window1 },
    { PEER_REMOTE_OVERHEAD, "tcp-window64", run_remote_window },
    { PEER_REMOTE_LATENCY, "tcp-send-recv", run_send_recv },
    { PEER_REMOTE_PAYLOAD, "tcp-window", run_remote_window },
};

/* The first line of MPI_Get_library_version, e.g. "Open MPI v4.1.4, ...". */
static const char *mpi_version(void)
{
    static char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;

    MPI_Get_library_version(v, &len);
    v[strcspn(v, "\n")] = '\0';
    return v;
}

/* Rank 0's part: runs the variant, stops the workers, prints the line.
 * Returns the exit code. */
static int master_main(const struct peer_args *a, const struct peer_variant *v)
{
    struct peer_result r;
    int rc;

    peer_result_init(&r, a, "mpi", v->name);
    r.version = mpi_version();
    rc = v->run(a, &r);
    if (rc) {
        peer_fail(v->name, rc);
        MPI_Abort(MPI_COMM_WORLD, PEER_EXIT_FAIL); /* workers may be mid-job */
    }
    if (a->workload != PEER_MAP) /* latency has stopped 2..N already */
        stop_workers(1, peer_workload_base(a->workload) == PEER_LATENCY ? 1 : a->workers);
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}

int main(int argc, char **argv)
{
    struct peer_args a;
    int rc = peer_args_parse(argc, argv, &a), rank, size;

    if (rc)
        return -rc;
    const struct peer_variant *v =
        peer_variant_find(variants, sizeof(variants) / sizeof(variants[0]), &a);
    if (!v)
        return PEER_EXIT_UNSUPPORTED;
    if (!getenv("OMPI_COMM_WORLD_SIZE"))
        return relaunch(argc, argv, &a);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != a.workers + 1) {
        if (rank == 0)
            fprintf(stderr, "peer_mpi: %d ranks for %d workers; want N+1\n", size, a.workers);
        MPI_Abort(MPI_COMM_WORLD, PEER_EXIT_USAGE);
    }
    if (rank == 0)
        rc = master_main(&a, v);
    else if (a.workload == PEER_MAP)
        rc = run_map(&a, NULL, rank) ? PEER_EXIT_FAIL : 0;
    else
        rc = worker_loop(&a) ? PEER_EXIT_FAIL : 0;
    MPI_Finalize();
    return rc;
}
