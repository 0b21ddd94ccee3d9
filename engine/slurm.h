/*
 * slurm.h - ppserver fleets inside a Slurm job (ppservers "slurm" and
 * "slurm-nodes"), for the client's net thread (net.c).
 *
 * "slurm": one job step, srun one ppserver per allocated node (every CPU
 * Slurm gave the job on that node: --whole, ppserver --slurm), the
 * secret in the step's environment (PP_SECRET), never on a command line.
 * Each ppserver says "ppserver: slurm node HOST:PORT step J.S" on its
 * stdout once it listens; srun forwards that to our pipe and each line
 * becomes a node.  The step ends with the net thread: SIGTERM to srun,
 * which signals its tasks; SIGKILL and scancel of the step if it lingers.
 *
 * "slurm-nodes[:port]": the nodes of the job (SLURM_JOB_NODELIST,
 * expanded as Slurm does: net/hostlist.h) at that port, for a batch script
 * that runs `srun ppserver ...` itself.
 */
#ifndef PP_ENGINE_SLURM_H
#define PP_ENGINE_SLURM_H

#include <stddef.h>
#include <stdint.h>

struct pp_loop;
struct pp_slurm;

/* Adds "host:port" as a node; 0, -EEXIST (ignored) or -errno. */
typedef int pp__slurm_add_fn(void *ctx, const char *host_port);

/*
 * Starts the step and waits (wait_ms at most) until every node's ppserver
 * listens; each one is handed to add as it says so.  Called on the net
 * thread before its loop runs: srun gets PR_SET_PDEATHSIG for that thread,
 * so the step also ends if the program dies.  Returns 0 and *ret, or
 * -EINVAL (not inside a Slurm job), -ECHILD (srun ended first),
 * -ETIMEDOUT, -errno; err then says why, with srun's last words.
 */
int pp__slurm_start(struct pp_slurm **ret, const char *secret, size_t secret_len,
                    unsigned wait_ms, pp__slurm_add_fn *add, void *ctx, char *err,
                    size_t errlen);

/* Keeps srun's stdout and stderr drained on the loop (its stderr, the
 * ppservers' log lines, goes on to ours) and late announcements added. */
int pp__slurm_watch(struct pp_slurm *sl, struct pp_loop *loop);

/* Ends the step (bounded), reaps srun, frees.  Not from a loop callback:
 * it closes the watches.  NULL is a no-op. */
void pp__slurm_stop(struct pp_slurm *sl);

/* A forked child's copy: forget srun without signalling it. */
void pp__slurm_forget(struct pp_slurm *sl);

/*
 * "slurm-nodes": add each host of SLURM_JOB_NODELIST at port.  Returns the
 * number of nodes, or -EINVAL (not set, or malformed: err says), -E2BIG.
 */
int pp__slurm_nodelist(uint16_t port, unsigned max, pp__slurm_add_fn *add, void *ctx,
                       char *err, size_t errlen);

#endif
