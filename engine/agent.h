/*
 * agent.h - the session agent's collector jobs (agent_coll.c).
 *
 * A JOB with PP_JOB_F_COLLECT is a client collector's job: it runs on the
 * agent's local server as one job of a collector of the agent's, so its
 * pp_job_send messages travel the local path (message ring, engine,
 * collector).  A reader thread takes them from that collector in the order
 * they come and copies them into a buffer; the agent's loop thread pumps
 * the buffer into MESSAGE and RESULT frames.  The reader thread exists
 * because the collector's waits are futexes and the loop's are not.
 */
#ifndef PP_ENGINE_AGENT_H
#define PP_ENGINE_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pp.h"

struct pp_loop;
struct pp_acoll;

/* What the loop thread does with each message, in order: a job's messages,
 * then its end (status, and err or result bytes; none: no result set). */
struct pp_acoll_ops {
    void (*message)(void *ctx, uint64_t id, const void *data, size_t len);
    void (*end)(void *ctx, uint64_t id, int status, const char *err, size_t err_len,
                const void *res, size_t len, bool none);
};

/* The bridge for srv; the reader wakes loop when it has something. */
PP_HIDDEN int pp__acoll_new(pp_server *srv, struct pp_loop *loop, struct pp_acoll **ret);
/* Submits fn(arg) as the client's job id; arg_shm (or NULL) is freed with
 * pp_shm_free once the job ended.  0 or pp_collector_submit's errors. */
PP_HIDDEN int pp__acoll_submit(struct pp_acoll *ac, pp_fn *fn, const void *arg, size_t len,
                               uint64_t id, void *arg_shm);
/* Loop thread: hands everything read so far to ops.  Returns 0, or the
 * error that stopped the reader (nothing more will come: end the session). */
PP_HIDDEN int pp__acoll_pump(struct pp_acoll *ac, const struct pp_acoll_ops *ops, void *ctx);
/* Stops the reader (before pp_server_destroy), then frees what is left
 * (after it: the jobs still running were cancelled there). */
PP_HIDDEN void pp__acoll_stop(struct pp_acoll *ac);
PP_HIDDEN void pp__acoll_free(struct pp_acoll *ac);

#endif /* PP_ENGINE_AGENT_H */
