/*
 * peer_omp.c - OpenMP in-process threads: the floor every multi-process
 * system is measured against (no copies, no kernel, shared memory for
 * free).
 *
 * Written the way the OpenMP specification and GCC's libgomp manual
 * present work-sharing: a parallel for with the schedule that fits the
 * job mix, tasks for one-by-one submission.  Threads are pinned one per
 * CPU as OMP_PROC_BIND would do; when the user sets OMP_PROC_BIND or
 * OMP_PLACES we leave placement to the runtime instead.
 *
 * Variants (the first of each workload is the default):
 *   overhead   for-dynamic1 | tasks
 *   map        for-static
 *   latency    flag-spin | parallel-per-job
 *   payload, scaling, imbalance   for-dynamic1
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHELINE 64

/* The job functions are called, never inlined into the loop, as any
 * worker calls a job through a function pointer. */
static __attribute__((noinline)) uint64_t job_u64(enum peer_workload w,
                                                  uint64_t arg)
{
    return peer_u64_job(w, arg);
}

static __attribute__((noinline)) uint64_t job_checksum(const void *buf,
                                                       size_t n)
{
    return peer_checksum(buf, n);
}

static __attribute__((noinline)) void job_echo(void *out, const void *in,
                                               size_t n)
{
    memcpy(out, in, n);
}

/* ------------------------------------------------------------------ */
/* The team                                                            */
/* ------------------------------------------------------------------ */

/*
 * Starts the thread team once, outside any timing, and pins thread t to
 * the t-th allowed CPU.  libgomp keeps its pool threads between regions
 * and hands thread number t to the same OS thread in every later team
 * of at most this size, so the pinning carries over.  Returns 0, or
 * -EAGAIN when the runtime gave fewer threads than asked.
 */
static int team_up(int n)
{
    bool pin = !getenv("OMP_PROC_BIND") && !getenv("OMP_PLACES");
    int got = 0;

    omp_set_dynamic(0); /* exactly n threads, or say so */
#pragma omp parallel num_threads(n)
    {
        if (pin)
            peer_pin_self(omp_get_thread_num());
#pragma omp single
        got = omp_get_num_threads();
    }
    return got == n ? 0 : -EAGAIN;
}

static const char *omp_version(void)
{
    static char v[96];

#if defined(__clang__)
    snprintf(v, sizeof(v), "OpenMP %d (libomp, clang %s)", _OPENMP, __clang_version__);
#else
    snprintf(v, sizeof(v), "OpenMP %d (libgomp, GCC %s)", _OPENMP, __VERSION__);
#endif
    return v;
}

/* Checks and sums every result, as the other peers' collectors do. */
static int collect_u64(const struct peer_args *a, const struct peer_plan *p,
                       const uint64_t *res)
{
    volatile uint64_t sum = 0; /* kept, so the check is not dead code */

    for (uint64_t i = 0; i < a->jobs; i++) {
        if (!peer_u64_check(a, p, i, res[i]))
            return -EPROTO;
        sum += res[i];
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* overhead, scaling, imbalance                                        */
/* ------------------------------------------------------------------ */

/* One job per chunk: the schedule that balances uneven jobs, and the
 * one with the most per-job scheduling cost for trivial ones. */
static int run_dynamic(const struct peer_args *a, struct peer_result *r)
{
    struct peer_plan plan;
    uint64_t *res = malloc(a->jobs * sizeof(*res));
    int rc = peer_plan_init(a, &plan);

    if (rc || !res) {
        free(res);
        return peer_fail("allocating", ENOMEM);
    }
    uint64_t t0 = peer_now_ns();
#pragma omp parallel for schedule(dynamic, 1) num_threads(a->workers)
    for (uint64_t i = 0; i < a->jobs; i++)
        res[i] = job_u64(a->workload, peer_u64_arg(a, &plan, i));
    rc = collect_u64(a, &plan, res);
    peer_result_wall(r, a, &plan, peer_now_ns() - t0);
    peer_plan_free(&plan);
    free(res);
    return rc ? PEER_EXIT_FAIL : 0;
}

/* One task per job, created by a single thread while the rest of the
 * team runs them: OpenMP's closest match to submitting one by one. */
static int run_tasks(const struct peer_args *a, struct peer_result *r)
{
    struct peer_plan plan;
    uint64_t *res = malloc(a->jobs * sizeof(*res));
    int rc = peer_plan_init(a, &plan);

    if (rc || !res) {
        free(res);
        return peer_fail("allocating", ENOMEM);
    }
    uint64_t t0 = peer_now_ns();
#pragma omp parallel num_threads(a->workers)
#pragma omp single
    for (uint64_t i = 0; i < a->jobs; i++) {
#pragma omp task firstprivate(i) shared(res, plan)
        res[i] = job_u64(a->workload, peer_u64_arg(a, &plan, i));
    }
    rc = collect_u64(a, &plan, res);
    peer_result_wall(r, a, &plan, peer_now_ns() - t0);
    peer_plan_free(&plan);
    free(res);
    return rc ? PEER_EXIT_FAIL : 0;
}

/* ------------------------------------------------------------------ */
/* map                                                                 */
/* ------------------------------------------------------------------ */

/* The batch path: equal contiguous blocks, no scheduling per item. */
static int run_map(const struct peer_args *a, struct peer_result *r)
{
    struct peer_plan plan = { 0 };
    uint64_t *in = malloc(a->jobs * sizeof(*in));
    uint64_t *out = malloc(a->jobs * sizeof(*out));
    int rc = 0;

    if (!in || !out) {
        rc = peer_fail("allocating", ENOMEM);
        goto out;
    }
    for (uint64_t i = 0; i < a->jobs; i++)
        in[i] = i;
    uint64_t t0 = peer_now_ns();
#pragma omp parallel for schedule(static) num_threads(a->workers)
    for (uint64_t i = 0; i < a->jobs; i++)
        out[i] = job_u64(PEER_MAP, in[i]);
    rc = collect_u64(a, &plan, out) ? PEER_EXIT_FAIL : 0;
    peer_result_wall(r, a, &plan, peer_now_ns() - t0);
out:
    free(in);
    free(out);
    return rc;
}

/* ------------------------------------------------------------------ */
/* latency                                                             */
/* ------------------------------------------------------------------ */

/*
 * A one-slot mailbox between two pinned threads.  The client writes arg
 * then publishes call number k in req (release, R1); the server's
 * acquire of req (A1) makes arg visible.  The server writes result then
 * publishes k in rep (R2), which pairs with the client's acquire (A2).
 * req and rep sit on separate lines so each is written by one side.
 */
struct mailbox {
    _Alignas(CACHELINE) _Atomic uint64_t req;
    uint64_t arg;
    _Alignas(CACHELINE) _Atomic uint64_t rep;
    uint64_t result;
};

#define MAILBOX_STOP UINT64_MAX

/* Spins until *v differs from old and returns the new value; it
 * yields when the two threads share a CPU so the other one can run. */
static uint64_t wait_change(_Atomic uint64_t *v, uint64_t old, bool yield)
{
    uint64_t k;

    while ((k = atomic_load_explicit(v, memory_order_acquire)) == old) {
        if (yield)
            sched_yield();
        else
            peer_cpu_relax();
    }
    return k;
}

static void mailbox_serve(struct mailbox *mb, bool yield)
{
    uint64_t last = 0;

    for (;;) {
        uint64_t k = wait_change(&mb->req, last, yield); /* A1 */
        if (k == MAILBOX_STOP)
            return;
        mb->result = job_u64(PEER_LATENCY, mb->arg);
        atomic_store_explicit(&mb->rep, k, memory_order_release); /* R2 */
        last = k;
    }
}

/* One round trip of call k (k >= 1) with argument x; returns the result. */
static uint64_t mailbox_call(struct mailbox *mb, uint64_t k, uint64_t x,
                             bool yield)
{
    mb->arg = x;
    atomic_store_explicit(&mb->req, k, memory_order_release); /* R1 */
    wait_change(&mb->rep, k - 1, yield);                      /* A2 */
    return mb->result;
}

/* The client side: call 1 is the cold first call, calls 2..J+1 are the
 * timed round trips.  Returns 0 or -EPROTO on a wrong result. */
static int mailbox_client(const struct peer_args *a, struct mailbox *mb,
                          uint64_t *rtt, uint64_t *first, bool yield)
{
    struct peer_plan none = { 0 };
    uint64_t t0 = peer_now_ns();
    int rc = 0;

    if (mailbox_call(mb, 1, 0, yield) != peer_trivial(0))
        rc = -EPROTO;
    *first = peer_now_ns() - t0;
    for (uint64_t i = 0; i < a->jobs && !rc; i++) {
        t0 = peer_now_ns();
        uint64_t res = mailbox_call(mb, i + 2, i, yield);
        rtt[i] = peer_now_ns() - t0;
        if (!peer_u64_check(a, &none, i, res))
            rc = -EPROTO;
    }
    atomic_store_explicit(&mb->req, MAILBOX_STOP, memory_order_release);
    return rc;
}

/* Thread 0 of a two-thread team posts each job to thread 1 through the
 * mailbox and spins on the reply: the in-process round-trip floor. */
static int run_flag_spin(const struct peer_args *a, struct peer_result *r)
{
    static struct mailbox mb;
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt));
    bool yield = peer_allowed_cpus() < 2;
    uint64_t first = 0;
    int rc = 0;

    if (!rtt)
        return peer_fail("allocating", ENOMEM);
#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 0)
            rc = mailbox_client(a, &mb, rtt, &first, yield);
        else
            mailbox_serve(&mb, yield);
    }
    if (!rc)
        peer_result_latency(r, rtt, a->jobs, first);
    free(rtt);
    return rc ? PEER_EXIT_FAIL : 0;
}

/* One fork/join of a two-thread team per job: thread 1 runs it, the
 * implicit barrier brings the result back to thread 0. */
static uint64_t parallel_call(uint64_t x)
{
    uint64_t res = 0;

#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 1)
            res = job_u64(PEER_LATENCY, x);
    }
    return res;
}

static int run_parallel_per_job(const struct peer_args *a,
                                struct peer_result *r)
{
    struct peer_plan none = { 0 };
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt));
    uint64_t t0 = peer_now_ns(), first;

    if (!rtt)
        return peer_fail("allocating", ENOMEM);
    int bad = parallel_call(0) != peer_trivial(0);
    first = peer_now_ns() - t0;
    for (uint64_t i = 0; i < a->jobs && !bad; i++) {
        t0 = peer_now_ns();
        uint64_t res = parallel_call(i);
        rtt[i] = peer_now_ns() - t0;
        bad = !peer_u64_check(a, &none, i, res);
    }
    if (!bad)
        peer_result_latency(r, rtt, a->jobs, first);
    free(rtt);
    return bad ? PEER_EXIT_FAIL : 0;
}

/* ------------------------------------------------------------------ */
/* payload                                                             */
/* ------------------------------------------------------------------ */

/* Distinct argument buffers kept in memory at once: enough that the
 * jobs do not all read one cache-hot buffer, bounded for large B. */
#define PAYLOAD_POOL_BYTES (64u << 20)

/*
 * Payload arguments are already in shared memory, so a job reads its
 * buffer in place: that is the point of threads.  Job i reads buffer
 * i % m.  With --echo the job copies the argument into its thread's
 * output buffer and the same thread, as collector, checks the copy.
 */
struct payload_run {
    const struct peer_args *a;
    struct peer_payload_ref ref;
    unsigned char *in;   /* m buffers of B bytes, buffer k stamped k */
    unsigned char *out;  /* one echo buffer per thread */
    uint64_t m;
    uint64_t *res;       /* checksum, or 1 for a correct echo */
};

static int payload_setup(const struct peer_args *a, struct payload_run *p,
                         unsigned char *tmpl)
{
    size_t b = a->payload;

    p->a = a;
    p->m = PAYLOAD_POOL_BYTES / b;
    p->m = p->m < 1 ? 1 : (p->m > a->jobs ? a->jobs : p->m);
    p->in = malloc(p->m * b);
    p->out = malloc((size_t)a->workers * b);
    p->res = malloc(a->jobs * sizeof(*p->res));
    if (!p->in || !p->out || !p->res)
        return -ENOMEM;
    peer_payload_fill(tmpl, b);
    peer_payload_ref_init(&p->ref, tmpl, b);
    for (uint64_t k = 0; k < p->m; k++) {
        memcpy(p->in + k * b, tmpl, b);
        peer_payload_stamp(p->in + k * b, b, k);
    }
    return 0;
}

static uint64_t payload_job(struct payload_run *p, uint64_t i)
{
    size_t b = p->a->payload;
    const unsigned char *arg = p->in + (i % p->m) * b;

    if (!p->a->echo)
        return job_checksum(arg, b);
    unsigned char *out = p->out + (size_t)omp_get_thread_num() * b;
    job_echo(out, arg, b);
    return peer_payload_echo_ok(&p->ref, i % p->m, out);
}

static int payload_collect(struct payload_run *p)
{
    for (uint64_t i = 0; i < p->a->jobs; i++) {
        uint64_t want = p->a->echo ? 1 : peer_payload_expect(&p->ref, i % p->m);
        if (p->res[i] != want) {
            fprintf(stderr, "peer_omp: payload job %llu is wrong\n",
                    (unsigned long long)i);
            return -EPROTO;
        }
    }
    return 0;
}

static int run_payload(const struct peer_args *a, struct peer_result *r)
{
    struct payload_run p = { 0 };
    struct peer_plan none = { 0 };
    unsigned char *tmpl = malloc(a->payload);
    int rc = tmpl ? payload_setup(a, &p, tmpl) : -ENOMEM;

    if (rc) {
        rc = peer_fail("allocating", rc);
        goto out;
    }
    uint64_t t0 = peer_now_ns();
#pragma omp parallel for schedule(dynamic, 1) num_threads(a->workers)
    for (uint64_t i = 0; i < a->jobs; i++)
        p.res[i] = payload_job(&p, i);
    rc = payload_collect(&p) ? PEER_EXIT_FAIL : 0;
    peer_result_wall(r, a, &none, peer_now_ns() - t0);
out:
    free(p.in);
    free(p.out);
    free(p.res);
    free(tmpl);
    return rc;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static const struct peer_variant variants[] = {
    { PEER_OVERHEAD, "for-dynamic1", run_dynamic },
    { PEER_OVERHEAD, "tasks", run_tasks },
    { PEER_MAP, "for-static", run_map },
    { PEER_LATENCY, "flag-spin", run_flag_spin },
    { PEER_LATENCY, "parallel-per-job", run_parallel_per_job },
    { PEER_PAYLOAD, "for-dynamic1", run_payload },
    { PEER_SCALING, "for-dynamic1", run_dynamic },
    { PEER_IMBALANCE, "for-dynamic1", run_dynamic },
};

int main(int argc, char **argv)
{
    struct peer_args a;
    struct peer_result r;
    int rc = peer_args_parse(argc, argv, &a);

    if (rc)
        return -rc;
    const struct peer_variant *v =
        peer_variant_find(variants, sizeof(variants) / sizeof(variants[0]), &a);
    if (!v)
        return PEER_EXIT_UNSUPPORTED;
    /* latency always uses a client and a server thread, whatever N. */
    rc = team_up(a.workload == PEER_LATENCY ? 2 : a.workers);
    if (rc)
        return peer_fail("starting the thread team", rc);
    peer_result_init(&r, &a, "openmp", v->name);
    r.version = omp_version();
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
