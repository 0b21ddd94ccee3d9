/*
 * pp.h - the one public header of libpp, a parallel job engine.
 *
 * A job is a C function (pp_fn) plus argument bytes.  A job server
 * (pp_server) runs jobs on worker processes, one pinned to each allowed CPU
 * by default, fed through lock-free rings in a shared-memory segment.
 *
 * ===================================================================
 * Rules that hold for the whole API
 * ===================================================================
 *
 * Errors.  Functions return 0 (or a count) on success and -errno on
 * failure.  Bad arguments give -EINVAL; nothing in this API aborts on bad
 * input.  Output parameters are named ret / ret_* and are written only on
 * success.  The library never prints, except pp_print_stats to the FILE
 * it is given.
 *
 * Processes and threads the library creates.  pp_server_new starts one
 * engine thread in the calling process (all signals blocked there), one
 * helper process (the "zygote", which forks workers) and the workers.  All
 * of them end in pp_server_destroy, and they also end when the host
 * process dies.  No signal handler is installed in the host.
 *
 * Threading.  Every function taking a pp_server or pp_task may be called
 * from any host thread at any time, concurrently, except:
 *   - pp_server_destroy must not race with any other call on that server;
 *   - pp_task_release must be called once per task handle, after which the
 *     handle must not be used.
 * pp_job_* functions are called only inside a job function, in a worker,
 * on the pp_job it was given.
 *
 * Callbacks.  A callback given at submission runs exactly once per task,
 * in the engine thread, as soon as the job is done (or failed, or was
 * cancelled by pp_server_destroy), without anyone calling a wait function.
 * In a callback you may read the task (pp_task_result, pp_task_error),
 * submit new jobs and call pp_task_release on *other* tasks you own.  You
 * must not call pp_wait, pp_task_wait with a timeout other than 0,
 * pp_set_ncpus or pp_server_destroy from a callback (they return -EDEADLK
 * where they can tell).  Callbacks run one at a time; a slow callback
 * delays the next ones, not the jobs.
 *
 * Ownership and lifetime.
 *   - pp_submit copies the argument bytes into shared memory before it
 *     returns; the caller may reuse its buffer at once.  (An argument that
 *     lies wholly inside a block from pp_shm_alloc, at any offset and of
 *     any size, is not copied: the worker reads it in place, so it must
 *     stay untouched until the task is done.)
 *   - The result view from pp_task_result stays valid until
 *     pp_task_release on that task.  The string from pp_task_error likewise.
 *   - A task submitted with ret == NULL belongs to the server, which
 *     releases it after its callback has returned.
 *   - pp_task_release on a task that is still queued or running is
 *     allowed: the job still runs (its callback too); its result is dropped.
 *   - pp_server_destroy cancels queued jobs (status -ECANCELED), kills
 *     running ones, runs the pending callbacks, and frees every task,
 *     including those the caller had not released: all handles become
 *     invalid.
 *
 * Jobs in shared objects.  A job function may live in a module the host
 * dlopen()s after the server started; workers load it by path.  If such a
 * module calls pp_job_* and libpp is linked statically into the host, the
 * host must export those symbols (link it with -rdynamic), or link libpp.so.
 *
 * Limits (see also the PP_* constants below).
 *   - argument and result sizes: 0 .. PP_MAX_PAYLOAD bytes, else -E2BIG;
 *   - up to PP_MAX_WORKERS local workers, PP_MAX_GROUPS distinct group
 *     names and PP_MAX_FUNCTIONS distinct job functions per server;
 *   - a job function must live in the main program or in a shared object
 *     that stays loaded while its jobs are queued or running.
 */
#ifndef PP_H
#define PP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PP_EXPORT __attribute__((visibility("default")))
#define PP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PP_EXPORT
#define PP_PRINTF(a, b)
#endif

#define PP_VERSION_STRING "0.1.0"

#define PP_AUTODETECT (-1)           /* ncpus: use the effective processors */
#define PP_INLINE_MAX 192            /* arguments/results up to this size
                                        travel inline in the job slot */
#define PP_MAX_PAYLOAD (1ull << 30)  /* largest argument or result: 1 GiB */
#define PP_MAX_WORKERS 256           /* local workers per server */
#define PP_MAX_GROUPS 1024           /* distinct group names per server */
#define PP_MAX_FUNCTIONS 4096        /* distinct job functions per server */
#define PP_ERRMSG_MAX 160            /* job error messages are cut to this,
                                        terminating NUL included */
#define PP_GROUP_NAME_MAX 63         /* longest group name */

typedef struct pp_server pp_server;     /* the job server */
typedef struct pp_task pp_task;         /* a submitted job, seen by the submitter */
typedef struct pp_job pp_job;           /* a running job, seen by the worker */
typedef struct pp_template pp_template; /* a function + options, fixed once */

/*
 * A job function.  Runs in a worker process.  Returns 0 or a positive
 * value on success (reported as the task's status) or a negative code on
 * failure (also reported; see pp_job_fail to attach a message).
 */
typedef int pp_fn(pp_job *job);

/* ------------------------------------------------------------------ */
/* Server                                                              */
/* ------------------------------------------------------------------ */

struct pp_config {
    int ncpus;            /* PP_AUTODETECT (-1) = effective processors
                             (affinity mask and cgroup CPU quota);
                             0 = no local worker */
    bool restart;         /* replace a worker after each task */
    bool busy_poll;       /* workers and waiters spin instead of sleeping */
    bool pin;             /* pin each worker to one allowed CPU: worker 0
                             to the last, worker 1 to the one before, ...
                             (round robin when ncpus exceeds them) */
    size_t max_queued;    /* 0 = no limit; else at most this many jobs
                             waiting to start, beyond which pp_submit
                             returns -EAGAIN (or blocks, see below) */
    bool block_when_full; /* with max_queued: block instead of -EAGAIN */
    unsigned spin_us;     /* adaptive waits spin this long before they
                             sleep on a futex (default 20) */
    size_t shm_size;      /* virtual size of the shared segment (default
                             64 GiB; pages are used only when touched) */

    /* Remote nodes (ppserver).  None unless ppservers is set. */
    const char *const *ppservers; /* NULL-terminated "host[:port]" list
                                     (port default PP_DEFAULT_PORT);
                                     NULL = no node.  Special entries:
                                     "*" or "*:port": discovery (with
                                     broadcast below);
                                     "slurm": inside a Slurm job, start one
                                     ppserver per node of the job as a step
                                     (srun; $PP_PPSERVER, else ppserver in
                                     PATH) with a fresh random secret
                                     unless one is set, ended by
                                     pp_server_destroy;
                                     "slurm-nodes" or "slurm-nodes:port":
                                     each host of $SLURM_JOB_NODELIST */
    const char *secret;      /* the nodes' shared secret: required with
                                nodes (but "slurm" alone), never a default */
    const char *secret_file; /* or: read it from this file, which only
                                its owner may read (else -EACCES) */
    unsigned node_timeout_ms; /* a node silent this long (heartbeats) is
                                 dead and its jobs run elsewhere
                                 (default 3000) */
    unsigned node_wait_ms;   /* a job no local worker and no node can take
                                fails after this long with -EHOSTUNREACH
                                or -EACCES (default 30000) */
    unsigned node_retries;   /* a job whose node died this many times
                                fails with -ECHILD naming them (default 3) */
    const char *broadcast;  /* where discovery queries for "*" nodes go (default "255.255.255.255") */
    char *error;            /* optional: PP_ERRMSG_MAX bytes where a failed
                               pp_server_new says why (e.g. srun's message) */
};

/* Fills cfg with the defaults: autodetect, pinned, adaptive waiting. */
PP_EXPORT void pp_config_init(struct pp_config *cfg);

/*
 * Creates a job server and starts its workers.  cfg NULL = defaults.
 * Returns 0 and *ret, or -EINVAL (bad config), -ENOMEM, or the -errno of
 * a failed system call (memfd_create, mmap, fork, ...).
 * Thread safety: may be called from any thread, also in a host with other
 * busy threads.
 */
PP_EXPORT int pp_server_new(const struct pp_config *cfg, pp_server **ret);

/*
 * Stops the server: queued jobs are cancelled (-ECANCELED), running jobs
 * are killed (-ECANCELED), pending callbacks run, every task is freed,
 * every worker process has exited and been reaped when this returns, and
 * the shared segment is unmapped.  NULL is a no-op.  Called in a child
 * the host forked, it only frees that child's copy: the parent's server
 * goes on (no other call may be made on a server from such a child).
 */
PP_EXPORT void pp_server_destroy(pp_server *srv);

/* Number of local workers wanted (after pp_set_ncpus), or -EINVAL. */
PP_EXPORT int pp_get_ncpus(pp_server *srv);

/*
 * Grows or shrinks the worker pool while jobs flow.  n = PP_AUTODETECT
 * means the effective processors.  A worker asked to go finishes its
 * current job first; queued jobs stay queued for the others (with n = 0
 * they wait until workers are added again).  Returns 0, or -EINVAL for
 * n < -1 or n > PP_MAX_WORKERS.
 */
PP_EXPORT int pp_set_ncpus(pp_server *srv, int n);

/* Effective processors of this process: affinity mask and cgroup quota. */
PP_EXPORT int pp_detect_ncpus(void);

/* ------------------------------------------------------------------ */
/* Submitting and collecting                                           */
/* ------------------------------------------------------------------ */

struct pp_submit_opts {
    void (*callback)(pp_task *task, void *arg); /* once, when done */
    void *callback_arg;
    const char *group; /* NULL = "default" (which counts among
                          PP_MAX_GROUPS); at most PP_GROUP_NAME_MAX bytes */
};

/*
 * Submits fn(arg[0..len)).  The argument bytes are copied (see the
 * ownership rules above).  fn must be a function of the main program or of
 * a loaded shared object.  ret NULL: the server owns the task and releases
 * it after its callback.
 * Returns 0, -EINVAL (NULL srv or fn, arg NULL with len > 0, bad group
 * name), -E2BIG (len > PP_MAX_PAYLOAD), -ENOENT (fn is in no loaded
 * module), -ENOSPC (too many functions or groups), -EAGAIN (max_queued
 * reached and not blocking), -ENOMEM, -ESHUTDOWN (server being destroyed).
 * When it fails, the callback is never called.
 * Thread safety: any number of threads at once; lock-free when the ring
 * has room, otherwise the job waits in the server's queue.
 */
PP_EXPORT int pp_submit(pp_server *srv, pp_fn *fn, const void *arg, size_t len,
                        const struct pp_submit_opts *opts, pp_task **ret);

/*
 * Waits until the task is done: 0, -ETIMEDOUT, or -EINVAL.
 * timeout_ms: -1 = forever, 0 = just test.
 */
PP_EXPORT int pp_task_wait(pp_task *t, int timeout_ms);

/*
 * The job's status (what the job function returned, or a negative code:
 * -ECHILD when the worker died, -ECANCELED when the server was destroyed)
 * and a view of its result bytes, valid until pp_task_release.  data and
 * len may be NULL.  Returns -EINPROGRESS (and leaves data/len alone) when
 * the task is not done yet, -EINVAL for a NULL task.
 */
PP_EXPORT int pp_task_result(pp_task *t, const void **data, size_t *len);
/* (*data is never NULL once done, even for a 0-byte result; a failed job
 *  has the bytes it wrote before failing, which pp does not interpret.) */

/* The message of a failed job, or NULL (also while not done). */
PP_EXPORT const char *pp_task_error(pp_task *t);

/* Releases a task handle (see ownership above).  NULL is a no-op. */
PP_EXPORT void pp_task_release(pp_task *t);

/*
 * Waits until every job of the group (NULL = of all groups) submitted
 * before the call is done and its callback has returned.  Jobs submitted
 * meanwhile by other threads do not hold it up (it may or may not wait
 * for those that race with the call).  Calls on one group are served one
 * at a time.  "default" always exists.
 * Returns 0, -ETIMEDOUT, -EINVAL, or -ENOENT for a group never used.
 */
PP_EXPORT int pp_wait(pp_server *srv, const char *group, int timeout_ms);

/*
 * Runs fn over n items of in_size bytes from in, writing item i's result
 * (at most out_size bytes, zero-filled past what the job wrote) to
 * out + i * out_size; in input order.  Items are cut into chunks, one job
 * per chunk, so the cost per item approaches a function call.  Blocks
 * until all items are done.  Returns 0 when every item returned >= 0,
 * else the negative status of the lowest failing item (all items still
 * run); -EINVAL, -E2BIG (n * in_size or n * out_size above
 * PP_MAX_PAYLOAD), -ENOMEM.  In an item, pp_job_result(job, len) with
 * len > out_size returns NULL and the item fails with -EOVERFLOW (whatever
 * the function then returns, unless it calls pp_job_fail).
 */
PP_EXPORT int pp_map(pp_server *srv, pp_fn *fn, const void *in, size_t in_size,
                     size_t n, void *out, size_t out_size);

/* ------------------------------------------------------------------ */
/* Templates: a function and options fixed once, cheaper submission    */
/* ------------------------------------------------------------------ */

PP_EXPORT int pp_template_new(pp_server *srv, pp_fn *fn,
                              const struct pp_submit_opts *opts,
                              pp_template **ret);
PP_EXPORT int pp_template_submit(pp_template *tpl, const void *arg, size_t len,
                                 pp_task **ret);
PP_EXPORT void pp_template_destroy(pp_template *tpl);

/* ------------------------------------------------------------------ */
/* Shared memory for zero-copy arguments                               */
/* ------------------------------------------------------------------ */

/*
 * Memory in the server's shared segment.  An argument that lies in such a
 * block is not copied by pp_submit; the worker reads it in place.  NULL on
 * failure or len > PP_MAX_PAYLOAD; len 0 gives a valid, distinct block.
 * Free with pp_shm_free once the tasks that read it are done.
 */
PP_EXPORT void *pp_shm_alloc(pp_server *srv, size_t len);
PP_EXPORT void pp_shm_free(pp_server *srv, void *p);

/* ------------------------------------------------------------------ */
/* Remote nodes                                                        */
/* ------------------------------------------------------------------ */

#define PP_DEFAULT_PORT 60000
#define PP_NODE_NAME_MAX 64

enum pp_node_state {
    PP_NODE_CONNECTING, /* connecting, authenticating or shipping code */
    PP_NODE_UP,         /* takes jobs */
    PP_NODE_DOWN,       /* lost; reconnecting with backoff */
    PP_NODE_REFUSED,    /* authentication failed or incompatible node;
                           retried with backoff, like DOWN */
    PP_NODE_GONE,       /* found by discovery, then lost and not heard
                           from since: left the pool, not retried; joins
                           again when it answers or beacons */
};

struct pp_node_info {
    char name[PP_NODE_NAME_MAX]; /* "host:port" */
    unsigned workers;            /* the node's workers (0 until up) */
    enum pp_node_state state;
    int last_error;              /* 0, or the -errno of the last failure */
    char error[PP_ERRMSG_MAX];   /* its text ("" if none) */
    uint64_t jobs_done;          /* jobs finished on the node */
    uint64_t in_flight;          /* jobs sent and not yet answered */
};

/*
 * Adds a node while the server runs (pp's connect1): "host[:port]".  The
 * connection is made in the background; pp_get_active_nodes shows how it
 * went.  Returns 0, -EINVAL (bad name, or no secret configured), -EEXIST
 * (already a node), -ENOSPC (PP_MAX_NODES - 1 nodes), -ENOMEM.
 */
PP_EXPORT int pp_connect(pp_server *srv, const char *host_port);

/*
 * Copies up to max nodes' state into out (every node ever added, up or
 * not, in the order they were added; a node that left, PP_NODE_GONE,
 * keeps its row and its jobs_done).  Returns how many nodes there are
 * (may be more than max), or -EINVAL.
 */
PP_EXPORT int pp_get_active_nodes(pp_server *srv, struct pp_node_info *out,
                                  unsigned max);

/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */

#define PP_MAX_NODES 64               /* rows in pp_stats: local + nodes */

struct pp_node_stats {
    char name[64];        /* "local", or host:port of a remote node */
    uint64_t njobs;       /* jobs finished on the node */
    double time_sum_s;    /* sum of their run times */
    int ncpus;            /* its workers */
};

struct pp_stats {
    uint64_t njobs;        /* jobs whose function returned (success or
                              failure), all nodes; not those whose worker
                              died */
    double elapsed_s;      /* since pp_server_new */
    uint64_t active_tasks; /* submitted and not yet done */
    int ncpus;             /* local workers */
    uint64_t worker_deaths;   /* workers that died unexpectedly (a crash,
                                 a kill, an exit during a job; not a stop
                                 asked by pp_set_ncpus or restart mode) */
    uint64_t workers_started; /* worker processes started, all reasons */
    unsigned nnodes;
    struct pp_node_stats nodes[PP_MAX_NODES];
};

PP_EXPORT int pp_get_stats(pp_server *srv, struct pp_stats *ret);

/*
 * Prints pp's table: job count, % of all jobs, job time sum, time per job,
 * job server; then the time since creation, active tasks and cores.
 */
PP_EXPORT int pp_print_stats(pp_server *srv, FILE *out);

/* ------------------------------------------------------------------ */
/* Inside a job (worker side)                                          */
/* ------------------------------------------------------------------ */

/* The argument bytes (never NULL, even for len 0) and their length. */
PP_EXPORT const void *pp_job_arg(pp_job *job, size_t *len);

/*
 * Space for the result, written in place in shared memory.  Calling it
 * again replaces the earlier result.  NULL for len > PP_MAX_PAYLOAD or no
 * memory; the job then fails with -E2BIG or -ENOMEM unless it sets a
 * smaller result.
 */
PP_EXPORT void *pp_job_result(pp_job *job, size_t len);

/*
 * Marks the job failed with a message (printf format) and returns code
 * (made negative if it was not), so a job can `return pp_job_fail(...)`.
 */
PP_EXPORT int pp_job_fail(pp_job *job, int code, const char *fmt, ...)
    PP_PRINTF(3, 4);

/* Index of the worker running the job (0 .. PP_MAX_WORKERS-1). */
PP_EXPORT int pp_job_worker(pp_job *job);

/*
 * Sends one message (len bytes, copied into shared memory) to whoever
 * collects this job (pp_collector_submit), before the job returns; any
 * number of times.  Messages reach the collector in the order sent,
 * before the job's result.  Up to PP_INLINE_MAX bytes travel in the
 * worker's message ring; larger ones in a page-heap block that the
 * reader sees in place.  Returns 0, -E2BIG (len > PP_MAX_PAYLOAD),
 * -ENOMEM, -EINVAL, or -ENOTCONN for a job nobody collects (pp_submit).
 */
PP_EXPORT int pp_job_send(pp_job *job, const void *data, size_t len);

/* ------------------------------------------------------------------ */
/* Collectors (pprocess styles)                                        */
/* ------------------------------------------------------------------ */

/*
 * A collector groups jobs and hands their messages (each pp_job_send,
 * then the job's result if it set one, or its failure) to one reader:
 *   PP_ORDERED  job by job in submission order, each job's messages in
 *               the order sent (pprocess Map); a job's messages are
 *               delivered as they come while it is the oldest unread one
 *   PP_ARRIVAL  as they arrive, whichever job sent them (pprocess Queue)
 * with at most `limit` of its jobs in flight (0 = no limit).
 *
 * Threads.  Each call takes the collector's lock; submit may run in one
 * thread while another reads.  Destroy a collector before its server.
 * Nodes.  A collector's jobs run on remote nodes too (local workers
 * first, as any job); their messages come back over the connection in
 * the order sent.  A node lost while one of them runs: a job that had
 * sent nothing runs elsewhere, one that had sent messages fails
 * (-ECHILD, naming the node) after them, since running it again would
 * repeat them.
 * Messages wait in host memory until read: with no bound by default, a
 * reader that falls behind a fast sender makes the host's memory grow
 * (pp_collector_set_max_bytes bounds it for jobs on local workers; on a
 * node, messages also wait in the agent until the connection takes them).
 */
typedef struct pp_collector pp_collector;
enum pp_order { PP_ORDERED, PP_ARRIVAL };
#define PP_END 1 /* pp_collector_next: every job submitted so far is done and read */

/* 0 and *ret, or -EINVAL, -ENOMEM. */
PP_EXPORT int pp_collector_new(pp_server *srv, enum pp_order order, unsigned limit,
                               pp_collector **ret);

/*
 * Submits fn(arg) as one of the collector's jobs; blocks while `limit`
 * of them are in flight (sent, and their last message not yet arrived).
 * Returns 0, or pp_submit's errors.  It may be called after
 * pp_collector_next returned PP_END: the collector goes on.
 */
PP_EXPORT int pp_collector_submit(pp_collector *c, pp_fn *fn, const void *arg, size_t len);
/* The same with a template's function and group (pp_wait on that group
 * waits for these jobs too); its callback is not called: the collector
 * takes the job's messages.  -EINVAL for a template of another server. */
PP_EXPORT int pp_collector_submit_template(pp_collector *c, pp_template *tpl, const void *arg,
                                           size_t len);

/*
 * The next message: 0 with *data and *len (a view valid until the next
 * call on the collector); PP_END when every job submitted so far is done
 * and each of its messages was read; -ETIMEDOUT after timeout_ms (-1 =
 * no limit, 0 = only what is there); -EINVAL.  After it returned 0,
 * pp_collector_status, pp_collector_error and pp_collector_job describe
 * the message.  A failed job (its function returned < 0, it crashed, the
 * server was destroyed) is delivered after the messages it sent, as one
 * message holding its error text.
 */
PP_EXPORT int pp_collector_next(pp_collector *c, const void **data, size_t *len,
                                int timeout_ms);

/* The message last returned: 0 for a value the job sent; for its last
 * message (its result or its failure) the job's status (>= 0, or < 0). */
PP_EXPORT int pp_collector_status(pp_collector *c);
/* Its job's error text (a failure), else NULL. */
PP_EXPORT const char *pp_collector_error(pp_collector *c);
/* Its job's submission index on this collector (0, 1, ...). */
PP_EXPORT uint64_t pp_collector_job(pp_collector *c);

/*
 * A bound on the memory a collector's messages take while unread (0, the
 * default: none).  Once its jobs' unread messages hold max bytes or more
 * (copies in host memory, and shared-memory blocks of large ones), a job
 * on a local worker that sends another waits in pp_job_send until the
 * reader has read some (below max/2), as a writer to a full pipe does;
 * the job's own CPU sleeps meanwhile.  It never waits when that could
 * stop the reader: in PP_ORDERED for the oldest unread job, nor while
 * that job has not started; while a submitter waits at the collector's
 * limit (that thread may be the reader); from pp_collector_destroy on.
 * Not bounded: messages of jobs on remote nodes, of create() children and
 * of background sockets.  Do not wait for the collector's jobs in a way
 * that needs them to end (pp_wait on their template's group) from the
 * reader's thread without reading: they may be waiting for it.  0 or
 * -EINVAL; any time, from any thread.
 */
PP_EXPORT int pp_collector_set_max_bytes(pp_collector *c, size_t max);
/* Bytes the bound counts now, from the reader's thread (exact there: it
 * includes what that thread read since its last pass). */
PP_EXPORT size_t pp_collector_held_bytes(pp_collector *c);

/*
 * Exchange (pprocess store_data): calls handler(data, len, arg) in the
 * calling thread for every message, failures included (see
 * pp_collector_status inside the handler), until PP_END.  Returns 0, or
 * the status of the first job that failed (all messages are still
 * delivered).
 */
PP_EXPORT int pp_collector_finish(pp_collector *c,
                                  void (*handler)(const void *data, size_t len, void *arg),
                                  void *arg);

/*
 * Waits for the collector's jobs and created processes to finish, drops
 * what was not read, frees it.  A background collector (pp_background_open)
 * does not wait: its connections close, and what was not read stays with
 * the background jobs for a later pp_background_open.  NULL is a no-op.
 */
PP_EXPORT void pp_collector_destroy(pp_collector *c);

/*
 * create() (pprocess): forks the calling process here, as one more job of
 * the collector (the limit counts it; it blocks at the limit).  In the
 * child: 0 and *ret = a channel; the child sends with pp_channel_send and
 * ends with pp_channel_exit, and must not use the server or the
 * collector.  In the caller: 0 and *ret = NULL.  Or -EINVAL, -ENOMEM, or
 * fork's -errno.  A child that crashes or exits without pp_channel_exit
 * is reported like a crashed job (-ECHILD and a message); the collector
 * reaps every child (no zombie).  Its messages larger than PP_INLINE_MAX
 * travel in the shared segment's page heap, smaller ones through a pipe.
 */
typedef struct pp_channel pp_channel;
PP_EXPORT int pp_collector_create(pp_collector *c, pp_channel **ret);
/* 0, -EINVAL, -E2BIG (len > PP_MAX_PAYLOAD), -ENOMEM, -EPIPE (the
 * collector is gone). */
PP_EXPORT int pp_channel_send(pp_channel *ch, const void *data, size_t len);
/* Says the child ended in order and exits it (status 0); does not return. */
PP_EXPORT void pp_channel_exit(pp_channel *ch) __attribute__((noreturn));

/*
 * Background jobs (pprocess BackgroundCallable).  Runs fn(arg) in a new
 * process detached from the caller (its own session; it survives the
 * caller's exit), which serves fn's messages (pp_job_send) and its result
 * on a UNIX socket at path, mode 0600, created before this returns.  A
 * socket file left by a background job that died is replaced; any other
 * existing file is not (-EEXIST), nor a socket someone listens on
 * (-EADDRINUSE).  fn runs in a process of its own under the background
 * process, with standard input, output and error on /dev/null and no
 * other descriptor of the caller's (it is detached); it may
 * create its own pp_server and run jobs.  A crash of fn is delivered as
 * its last message (-ECHILD) after what it sent.  The
 * background process keeps every message until a reader has read it,
 * then removes the socket and exits.  Returns 0, -EINVAL, -ENAMETOOLONG
 * (path longer than a socket address holds), -EEXIST, -EADDRINUSE, or the
 * -errno of a failed fork, socket, bind.
 */
PP_EXPORT int pp_background_start(const char *path, pp_fn *fn, const void *arg, size_t len);

/*
 * Reconnects to background jobs (BackgroundQueue; several paths:
 * PersistentQueue): an arrival-order collector whose job i is paths[i]
 * (NULL-terminated).  Each job's messages are read exactly once over all
 * the processes that open it: one not read when its collector is
 * destroyed is delivered to the next.  A path where no background job
 * listens (it died, or never was) is one failed job: -ECONNREFUSED or
 * -ENOENT with an error naming the path; one that dies mid-way fails
 * with -ECONNRESET.  Returns 0 and *ret, or -EINVAL, -ENOMEM.
 */
PP_EXPORT int pp_background_open(const char *const *paths, pp_collector **ret);

#ifdef __cplusplus
}
#endif

#endif /* PP_H */
