/*
 * slurm_client.c - a pp client run inside a real Slurm job by
 * test_slurm.sh:
 *
 *   slurm_client step N         ppservers = {"slurm"}: pp starts the
 *                               ppserver step itself, with its own secret
 *   slurm_client nodes PORT N   ppservers = {"slurm-nodes:PORT"}: the batch
 *                               script started `srun ppserver` itself; the
 *                               secret is $PP_SECRET
 *
 * Runs N jobs with no local worker (every job on a node), checks that each
 * callback ran once with its own result, prints the nodes, then destroys
 * the server.  With "step", pp_server_destroy ends the step: the script
 * then checks that Slurm shows no step left.  Exit 0 only if all is right.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pp.h"

int slurm_job(pp_job *job);

/* x -> (x * x + 7, the node's host name's first byte): checkable, and
 * proves the work ran through a node (no local worker exists). */
int slurm_job(pp_job *job)
{
    size_t len;
    const uint64_t *x = pp_job_arg(job, &len);
    if (len != sizeof(*x))
        return pp_job_fail(job, -EINVAL, "bad argument length %zu", len);
    uint64_t *out = pp_job_result(job, sizeof(uint64_t));
    if (!out)
        return -ENOMEM;
    *out = *x * *x + 7;
    return 0;
}

static _Atomic unsigned *calls;
static _Atomic unsigned bad;

static void on_done(pp_task *t, void *ctx)
{
    uint64_t i = (uint64_t)(uintptr_t)ctx;
    const void *d;
    size_t len;
    atomic_fetch_add(&calls[i], 1);
    if (pp_task_result(t, &d, &len) != 0 || len != sizeof(uint64_t) ||
        *(const uint64_t *)d != i * i + 7) {
        if (atomic_fetch_add(&bad, 1) < 5)
            fprintf(stderr, "slurm_client: job %llu: %s\n", (unsigned long long)i,
                    pp_task_error(t));
    }
}

static const char *state_name(enum pp_node_state s)
{
    switch (s) {
    case PP_NODE_CONNECTING: return "connecting";
    case PP_NODE_UP:         return "up";
    case PP_NODE_DOWN:       return "down";
    case PP_NODE_REFUSED:    return "refused";
    case PP_NODE_GONE:       return "gone";
    }
    return "?";
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "step") && strcmp(argv[1], "nodes")) ||
        (!strcmp(argv[1], "nodes") && argc < 4)) {
        fprintf(stderr, "usage: slurm_client step N | slurm_client nodes PORT N\n");
        return 2;
    }
    bool step = strcmp(argv[1], "step") == 0;
    char entry[64];
    unsigned long n = strtoul(argv[step ? 2 : 3], NULL, 10);
    if (step)
        snprintf(entry, sizeof(entry), "slurm");
    else
        snprintf(entry, sizeof(entry), "slurm-nodes:%s", argv[2]);
    const char *nodes[] = { entry, NULL };
    char err[PP_ERRMSG_MAX] = "";
    struct pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 0;
    cfg.ppservers = nodes;
    cfg.secret = step ? NULL : getenv("PP_SECRET");
    cfg.error = err;
    pp_server *srv;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int r = pp_server_new(&cfg, &srv);
    if (r < 0) {
        fprintf(stderr, "slurm_client: pp_server_new: %s: %s\n", strerror(-r), err);
        return 1;
    }
    calls = calloc(n ? n : 1, sizeof(*calls));
    for (uint64_t i = 0; i < n; i++) {
        /* The server owns each task (ret NULL): the callback has the index. */
        struct pp_submit_opts o = { .callback = on_done, .callback_arg = (void *)(uintptr_t)i };
        r = pp_submit(srv, slurm_job, &i, sizeof(i), &o, NULL);
        if (r < 0) {
            fprintf(stderr, "slurm_client: pp_submit: %s\n", strerror(-r));
            return 1;
        }
    }
    r = pp_wait(srv, NULL, 120000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsigned missing = 0, twice = 0;
    for (uint64_t i = 0; i < n; i++) {
        unsigned c = atomic_load(&calls[i]);
        missing += c == 0;
        twice += c > 1;
    }
    struct pp_node_info info[8];
    int nn = pp_get_active_nodes(srv, info, 8);
    uint64_t on_nodes = 0;
    for (int i = 0; i < nn && i < 8; i++) {
        printf("node %s: %s, %u workers, %llu jobs\n", info[i].name, state_name(info[i].state),
               info[i].workers, (unsigned long long)info[i].jobs_done);
        on_nodes += info[i].jobs_done;
    }
    printf("slurm_client: %lu jobs in %.2f s (wait %d), %u missing, %u twice, %u bad, "
           "%llu on nodes\n", n,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, r, missing,
           twice, atomic_load(&bad), (unsigned long long)on_nodes);
    fflush(stdout);
    pp_server_destroy(srv);
    free(calls);
    return r == 0 && !missing && !twice && !atomic_load(&bad) && nn >= 1 && on_nodes == n ? 0 : 1;
}
