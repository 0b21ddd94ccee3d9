/*
 * agent.c - the session agent: a client's own program, started by
 * ppserver in agent mode, running that client's jobs on the node.
 *
 * Why the client's program: a job function is named by (module, offset),
 * and the one process in which the main program's offsets mean the same
 * functions is that program.  ppserver caches the client's executable by
 * content hash and execs it with PP_AGENT set; this constructor runs
 * before main and never returns to it.  Functions in shared objects are
 * fetched into the same cache (MODULE / CODE_REQUEST / CODE) and loaded
 * with dlopen by their cache path.
 *
 * The agent is one thread running the event loop (net/loop.h) on the
 * session's socket, plus an ordinary local pp_server whose workers run
 * the jobs.  A JOB frame becomes a pp_submit with a callback; the callback
 * (in that server's engine thread) pushes the finished task on a lock-free
 * stack and wakes the loop, which sends the RESULT straight from the
 * task's result in shared memory and releases the task.  A collector's
 * job (PP_JOB_F_COLLECT) goes through a collector of the agent's instead
 * (agent_coll.c): its pp_job_send messages leave as MESSAGE frames, in
 * order, then its RESULT.  A worker that dies fails its job with -ECHILD,
 * as on the client's own host, and the client names the node in the
 * message; the agent goes on.
 *
 * The session ends on BYE, EOF, a bad frame, silence longer than the
 * node's socket timeout, or SIGTERM (ppserver is stopping): jobs still
 * running are then cancelled here and the client runs them elsewhere.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "chan.h"
#include "loop.h"
#include "msg.h"

#define AGENT_TICK_MS 250
#define RUN_BODY_MAX (64u << 10) /* a MESSAGE RUN's body at most (<= max_body) */

enum { MOD_NONE, MOD_LOADING, MOD_READY, MOD_FAILED };

struct ajob {
    uint64_t id;                 /* the client's job id */
    pp_task *task;
    void *arg_shm;               /* a chunked argument's block */
    uint32_t module;
    uint64_t offset;
    size_t arg_len;
    uint32_t flags;              /* PP_JOB_F_* */
    /* a pp_map chunk (PP_JOB_F_MAP): run by pp_map in a thread of its own */
    pp_fn *map_fn;
    void *map_in, *map_out;
    uint64_t in_size, out_size, count;
    int map_status;
    struct ajob *next;           /* pending list / done stack */
};

struct amod {
    int state;
    uintptr_t base;              /* load bias (l_addr) */
    struct link_map *map;
    void *handle;
    uint8_t hash[PP_HASH_LEN];
    struct pp_code_rx code;
    bool code_started;
    struct ajob *pending;        /* jobs waiting for the module */
    char error[128];
};

struct agent {
    struct pp_agent_state st;
    struct pp_loop *loop;
    struct pp_conn *conn;
    struct pp_chan ch;
    pp_server *srv;
    struct amod mods[PP_MAX_MODULES];
    _Atomic(struct ajob *) done;  /* finished, pushed by the callback */
    struct ajob *rx_job;          /* a chunked JOB whose argument arrives */
    size_t rx_have;
    int rx_code;                  /* or a module whose CODE arrives, or -1 */
    uint64_t last_rx;
    bool ending;
    int workers;
    _Atomic int map_threads;      /* pp_map threads not yet collected */
    struct pp_acoll *coll;        /* collector jobs (agent_coll.c), from the first */
    /* Small messages of one collector job gathered into one MESSAGE RUN
     * frame (net/msg.h): its body so far, how many, whose. */
    uint8_t run[RUN_BODY_MAX];
    size_t run_len;
    unsigned run_n;
    uint64_t run_id;
};

static struct agent *the_agent;
static volatile sig_atomic_t agent_term, agent_usr1;

static void alog(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void alog(struct agent *a, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n = snprintf(buf, sizeof(buf), "ppserver[%d]: session %s: ", (int)getpid(), a->st.peer);
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(buf);
    if (len < sizeof(buf) - 1)
        buf[len++] = '\n';
    (void)!write(2, buf, len);
}

/* ---- results ---- */

/* Called in the local server's engine thread. */
static void push_done(struct agent *a, struct ajob *j);

static void job_done(pp_task *t, void *arg)
{
    (void)t;
    push_done(the_agent, arg);
}

/* The CHUNK frames of a chunked payload. */
static int send_chunks(struct agent *a, uint64_t id, const void *data, size_t len)
{
    for (size_t off = 0; off < len; off += PP_WIRE_MAX_BODY) {
        size_t n = len - off < PP_WIRE_MAX_BODY ? len - off : PP_WIRE_MAX_BODY;
        int r = pp_chan_send(&a->ch, PP_WIRE_CHUNK, 0, id, (const char *)data + off, n);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Sends one RESULT (chunked beyond max_body) for a status, message (el
 * bytes) and result bytes; flags: PP_WIRE_F_NONE for a collector's job
 * that set no result. */
static int send_result_n(struct agent *a, uint64_t id, uint16_t flags, int status,
                         const char *err, size_t el, const void *data, size_t len)
{
    if (el > PP_ERRMSG_MAX)
        el = PP_ERRMSG_MAX;
    size_t whole = PP_RES_HDR + el + len;

    if (whole <= PP_WIRE_MAX_BODY) {
        uint8_t *p = pp_chan_send_begin(&a->ch, PP_WIRE_RESULT, flags, id, whole);
        if (!p)
            return a->ch.err;
        struct pp_wr w = pp_wr_of(p, whole);
        pp_wr_u32(&w, (uint32_t)status);
        pp_wr_u32(&w, (uint32_t)el);
        pp_wr_u64(&w, 0);
        pp_wr_bytes(&w, err, el);
        pp_wr_bytes(&w, data, len);
        return 0;
    }
    uint8_t *p = pp_chan_send_begin(&a->ch, PP_WIRE_RESULT, PP_WIRE_F_CHUNKED, id,
                                    8 + PP_RES_HDR + el);
    if (!p)
        return a->ch.err;
    struct pp_wr w = pp_wr_of(p, 8 + PP_RES_HDR + el);
    pp_wr_u64(&w, len);
    pp_wr_u32(&w, (uint32_t)status);
    pp_wr_u32(&w, (uint32_t)el);
    pp_wr_u64(&w, 0);
    pp_wr_bytes(&w, err, el);
    return send_chunks(a, id, data, len);
}

static int send_result(struct agent *a, uint64_t id, int status, const char *err,
                       const void *data, size_t len)
{
    /* err: a C string; longer than PP_ERRMSG_MAX is cut there */
    return send_result_n(a, id, 0, status, err, err ? strlen(err) : 0, data, len);
}

static void free_job(struct agent *a, struct ajob *j)
{
    if (j->task)
        pp_task_release(j->task);
    if (j->arg_shm)
        pp_shm_free(a->srv, j->arg_shm);
    free(j->map_in);
    free(j->map_out);
    free(j);
}

/* Release: the loop thread's exchange (acquire) sees j whole.  One
 * wake-up per batch: a non-empty stack means the loop has one coming (it
 * empties the stack only after it woke). */
static void push_done(struct agent *a, struct ajob *j)
{
    struct ajob *head = atomic_load_explicit(&a->done, memory_order_relaxed);
    do {
        j->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&a->done, &head, j, memory_order_release,
                                                    memory_order_relaxed));
    if (!head)
        pp_loop_wake(a->loop);
}

static void send_done(struct agent *a)
{
    struct ajob *j = atomic_exchange_explicit(&a->done, NULL, memory_order_acquire);
    while (j) {
        struct ajob *next = j->next;
        if (j->flags & PP_JOB_F_MAP) {
            char msg[64] = "";
            if (j->map_status < 0)
                snprintf(msg, sizeof(msg), "a pp_map item failed with status %d",
                         j->map_status);
            send_result(a, j->id, j->map_status, msg[0] ? msg : NULL, j->map_out,
                        (size_t)(j->out_size * j->count));
            free_job(a, j);
            atomic_fetch_sub(&a->map_threads, 1);
            j = next;
            continue;
        }
        const void *data = NULL;
        size_t len = 0;
        int st = pp_task_result(j->task, &data, &len);
        send_result(a, j->id, st, st < 0 ? pp_task_error(j->task) : NULL, data, len);
        free_job(a, j);
        j = next;
    }
}

/* Sends the run gathered so far: one message alone as a plain MESSAGE. */
static void run_flush(struct agent *a)
{
    if (a->run_n == 1)
        pp_chan_send(&a->ch, PP_WIRE_MESSAGE, 0, a->run_id, a->run + 4, a->run_len - 4);
    else if (a->run_n > 1)
        pp_chan_send(&a->ch, PP_WIRE_MESSAGE, PP_WIRE_F_RUN, a->run_id, a->run, a->run_len);
    a->run_n = 0;
    a->run_len = 0;
}

/* A collector job's message and end (agent_coll.c, in order).  Small
 * ones of the same job in a row share a frame (a stream of 8-byte
 * values: 12 bytes a value on the wire instead of a 24-byte frame). */
static void coll_message(void *ctx, uint64_t id, const void *data, size_t len)
{
    struct agent *a = ctx;
    if (len <= PP_RUN_MSG_MAX) {
        if (a->run_n && (a->run_id != id || a->run_len + 4 + len > RUN_BODY_MAX))
            run_flush(a);
        struct pp_wr w = pp_wr_of(a->run + a->run_len, 4 + len);
        pp_wr_u32(&w, (uint32_t)len);
        pp_wr_bytes(&w, data, len);
        a->run_len += 4 + len;
        a->run_id = id;
        a->run_n++;
        return;
    }
    run_flush(a);
    if (len <= PP_WIRE_MAX_BODY) {
        pp_chan_send(&a->ch, PP_WIRE_MESSAGE, 0, id, data, len);
        return;
    }
    uint8_t total[8];
    struct pp_wr w = pp_wr_of(total, sizeof(total));
    pp_wr_u64(&w, len);
    if (pp_chan_send(&a->ch, PP_WIRE_MESSAGE, PP_WIRE_F_CHUNKED, id, total, sizeof(total)) == 0)
        send_chunks(a, id, data, len);
}

static void coll_end(void *ctx, uint64_t id, int status, const char *err, size_t err_len,
                     const void *res, size_t len, bool none)
{
    run_flush(ctx); /* a job's messages go before its end */
    send_result_n(ctx, id, none ? PP_WIRE_F_NONE : 0, status, err, err_len, res, len);
}

static const struct pp_acoll_ops coll_ops = { .message = coll_message, .end = coll_end };

static void send_collected(struct agent *a)
{
    int e = a->coll ? pp__acoll_pump(a->coll, &coll_ops, a) : 0;
    run_flush(a); /* what this pump gathered leaves now */
    if (e < 0 && !a->ending) {
        alog(a, "cannot read the collector jobs' messages: %s: ending the session",
             strerror(-e));
        a->ending = true;
    }
}

/* ---- jobs ---- */

static void fail_job(struct agent *a, struct ajob *j, int code, const char *msg)
{
    send_result(a, j->id, code, msg, NULL, 0);
    free_job(a, j);
}

/* pp_map blocks until its items are done: it gets a thread, and the
 * loop goes on serving everything else. */
static void *map_thread(void *arg)
{
    struct ajob *j = arg;
    struct agent *a = the_agent;
    j->map_status = pp_map(a->srv, j->map_fn, j->map_in, (size_t)j->in_size,
                           (size_t)j->count, j->map_out, (size_t)j->out_size);
    push_done(a, j);
    return NULL;
}

static void run_map(struct agent *a, struct ajob *j, pp_fn *fn, const void *arg)
{
    struct pp_rd rd = pp_rd_of(arg, j->arg_len);
    j->in_size = pp_rd_u64(&rd);
    j->out_size = pp_rd_u64(&rd);
    j->count = pp_rd_u64(&rd);
    if (rd.err || !j->count || j->in_size > PP_MAX_PAYLOAD / j->count ||
        j->out_size > PP_MAX_PAYLOAD / j->count || pp_rd_left(&rd) != j->in_size * j->count) {
        fail_job(a, j, -EINVAL, "malformed pp_map chunk");
        return;
    }
    j->map_fn = fn;
    j->map_in = malloc(pp_rd_left(&rd) ? pp_rd_left(&rd) : 1);
    size_t out_bytes = (size_t)(j->out_size * j->count);
    j->map_out = malloc(out_bytes ? out_bytes : 1);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (!j->map_in || !j->map_out) {
        fail_job(a, j, -ENOMEM, "out of memory on the node");
    } else {
        memcpy(j->map_in, rd.p, pp_rd_left(&rd));
        if (pthread_create(&th, &at, map_thread, j) != 0)
            fail_job(a, j, -EAGAIN, "the node cannot start a thread for pp_map");
        else
            atomic_fetch_add(&a->map_threads, 1);
    }
    pthread_attr_destroy(&at);
}

static void run_job(struct agent *a, struct ajob *j, const void *arg)
{
    struct amod *m = &a->mods[j->module];
    pp_fn *fn = (pp_fn *)(m->base + j->offset);
    Dl_info info;
    struct link_map *lm = NULL;

    /* The offset must land in that module: anything else would call
     * whatever lies there. */
    if (!dladdr1((void *)fn, &info, (void **)&lm, RTLD_DL_LINKMAP) || lm != m->map) {
        fail_job(a, j, -EINVAL, "function offset outside its module");
        return;
    }
    if (j->flags & PP_JOB_F_MAP) {
        run_map(a, j, fn, j->arg_shm ? j->arg_shm : arg);
        return;
    }
    if (j->flags & PP_JOB_F_COLLECT) {
        int r = a->coll ? 0 : pp__acoll_new(a->srv, a->loop, &a->coll);
        if (r == 0)
            r = pp__acoll_submit(a->coll, fn, j->arg_shm ? j->arg_shm : arg, j->arg_len, j->id,
                                 j->arg_shm);
        if (r < 0) {
            char msg[96];
            snprintf(msg, sizeof(msg), "the node could not queue the job: %s", strerror(-r));
            fail_job(a, j, r, msg);
            return;
        }
        j->arg_shm = NULL; /* the collector's now, until the job ended */
        free_job(a, j);
        return;
    }
    struct pp_submit_opts o = { .callback = job_done, .callback_arg = j };
    int r = pp_submit(a->srv, fn, j->arg_shm ? j->arg_shm : arg, j->arg_len, &o, &j->task);
    if (r < 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the node could not queue the job: %s", strerror(-r));
        fail_job(a, j, r, msg);
    }
}

static void run_pending(struct agent *a, struct amod *m)
{
    struct ajob *j = m->pending, *rev = NULL;
    m->pending = NULL;
    while (j) { /* back to arrival order */
        struct ajob *n = j->next;
        j->next = rev;
        rev = j;
        j = n;
    }
    while (rev) {
        struct ajob *n = rev->next;
        if (m->state == MOD_READY)
            run_job(a, rev, NULL);
        else
            fail_job(a, rev, -ENOEXEC, m->error);
        rev = n;
    }
}

/* A job whose argument is complete (inline, or in arg_shm). */
static void job_ready(struct agent *a, struct ajob *j, const void *arg)
{
    struct amod *m = &a->mods[j->module];
    if (m->state == MOD_READY) {
        run_job(a, j, arg);
    } else if (m->state == MOD_LOADING) {
        if (!j->arg_shm && j->arg_len) { /* keep the bytes until then */
            j->arg_shm = pp_shm_alloc(a->srv, j->arg_len);
            if (!j->arg_shm) {
                fail_job(a, j, -ENOMEM, "out of shared memory on the node");
                return;
            }
            memcpy(j->arg_shm, arg, j->arg_len);
        }
        j->next = m->pending;
        m->pending = j;
    } else {
        fail_job(a, j, -ENOEXEC, m->state == MOD_FAILED ? m->error : "module not declared");
    }
}

static int on_job(struct agent *a, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    bool chunked = f->hdr.flags & PP_WIRE_F_CHUNKED;
    uint64_t total = chunked ? pp_rd_u64(&rd) : 0;
    uint32_t module = pp_rd_u32(&rd);
    uint32_t flags = pp_rd_u32(&rd);
    uint64_t offset = pp_rd_u64(&rd);
    if (rd.err || module >= PP_MAX_MODULES || (chunked && total > PP_MAX_PAYLOAD + 64) ||
        (flags & ~(PP_JOB_F_MAP | PP_JOB_F_COLLECT)) ||
        flags == (PP_JOB_F_MAP | PP_JOB_F_COLLECT))
        return -EPROTO;
    struct ajob *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->id = f->hdr.reqid;
    j->flags = flags;
    j->module = module;
    j->offset = offset;
    if (!chunked) {
        j->arg_len = pp_rd_left(&rd);
        job_ready(a, j, rd.p);
        return 0;
    }
    if (pp_rd_left(&rd))
        return free(j), -EPROTO;
    j->arg_len = (size_t)total;
    j->arg_shm = pp_shm_alloc(a->srv, j->arg_len);
    if (!j->arg_shm) {
        /* The chunks still come: read and drop them, fail the job. */
        free(j);
        return -ENOMEM;
    }
    a->rx_job = j;
    a->rx_have = 0;
    if (total == 0) {
        a->rx_job = NULL;
        job_ready(a, j, NULL);
    }
    return 0;
}

static int on_chunk(struct agent *a, const struct pp_wire_frame *f)
{
    if (a->rx_job) {
        struct ajob *j = a->rx_job;
        if (f->hdr.reqid != j->id || f->hdr.len > j->arg_len - a->rx_have)
            return -EPROTO;
        memcpy((char *)j->arg_shm + a->rx_have, f->body, f->hdr.len);
        a->rx_have += f->hdr.len;
        if (a->rx_have == j->arg_len) {
            a->rx_job = NULL;
            job_ready(a, j, NULL);
        }
        return 0;
    }
    if (a->rx_code >= 0 && f->hdr.reqid == (uint64_t)a->rx_code) {
        struct amod *m = &a->mods[a->rx_code];
        int r = pp_code_rx_add(&m->code, f->body, f->hdr.len);
        if (r < 0)
            return r;
        return 0; /* completion is checked by the caller */
    }
    return -EPROTO;
}

/* ---- modules ---- */

static void module_loaded(struct agent *a, struct amod *m, const char *path)
{
    m->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!m->handle || dlinfo(m->handle, RTLD_DI_LINKMAP, &m->map) != 0) {
        const char *e = dlerror();
        m->state = MOD_FAILED;
        snprintf(m->error, sizeof(m->error), "the node cannot load the module: %s",
                 e ? e : "?");
        alog(a, "%s", m->error);
    } else {
        m->base = m->map->l_addr;
        m->state = MOD_READY;
    }
    run_pending(a, m);
}

static void code_complete(struct agent *a, int idx)
{
    struct amod *m = &a->mods[idx];
    a->rx_code = -1;
    m->code_started = false;
    int r = pp_code_rx_end(&m->code);
    if (r < 0) {
        m->state = MOD_FAILED;
        snprintf(m->error, sizeof(m->error), "%s",
                 r == -EBADMSG ? "the module sent does not match its hash"
                               : "the node cannot store the module");
        alog(a, "%s", m->error);
        run_pending(a, m);
        return;
    }
    module_loaded(a, m, m->code.path);
}

static int on_code(struct agent *a, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    uint64_t idx = f->hdr.reqid;
    if (idx >= PP_MAX_MODULES || a->mods[idx].state != MOD_LOADING || a->rx_code >= 0 ||
        a->mods[idx].code_started)
        return -EPROTO;
    struct amod *m = &a->mods[idx];
    bool chunked = f->hdr.flags & PP_WIRE_F_CHUNKED;
    uint64_t total = chunked ? pp_rd_u64(&rd) : 0;
    const uint8_t *h = pp_rd_take(&rd, PP_HASH_LEN);
    if (rd.err || memcmp(h, m->hash, PP_HASH_LEN) != 0 || total > (1ull << 32))
        return -EPROTO;
    if (!chunked)
        total = pp_rd_left(&rd);
    int r = pp_code_rx_begin(&m->code, a->st.cache_dir, "mod", m->hash, total);
    if (r < 0)
        return r;
    m->code_started = true;
    if ((r = pp_code_rx_add(&m->code, rd.p, pp_rd_left(&rd))) < 0)
        return r;
    if (pp_code_rx_complete(&m->code))
        code_complete(a, (int)idx);
    else
        a->rx_code = (int)idx;
    return 0;
}

static int on_module(struct agent *a, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    uint64_t idx = f->hdr.reqid;
    const uint8_t *h = pp_rd_take(&rd, PP_HASH_LEN);
    pp_rd_u64(&rd); /* size */
    uint32_t is_main = pp_rd_u32(&rd);
    char path[256];
    pp_rd_str(&rd, path, sizeof(path));
    if (rd.err || idx >= PP_MAX_MODULES || a->mods[idx].state != MOD_NONE)
        return -EPROTO;
    struct amod *m = &a->mods[idx];
    memcpy(m->hash, h, PP_HASH_LEN);
    if (is_main) {
        if (memcmp(h, a->st.exe_hash, PP_HASH_LEN) != 0) {
            m->state = MOD_FAILED;
            snprintf(m->error, sizeof(m->error), "a second main program in one session");
            return 0;
        }
        void *self = dlopen(NULL, RTLD_NOW);
        if (!self || dlinfo(self, RTLD_DI_LINKMAP, &m->map) != 0)
            return -ENOEXEC;
        m->handle = self;
        m->base = m->map->l_addr;
        m->state = MOD_READY;
        return 0;
    }
    char cpath[PATH_MAX];
    pp_cache_path(cpath, sizeof(cpath), a->st.cache_dir, "mod", h);
    if (pp_cache_ok(cpath, h)) {
        module_loaded(a, m, cpath);
        return 0;
    }
    m->state = MOD_LOADING;
    if (a->st.debug)
        alog(a, "fetching module %s", path);
    return pp_chan_send(&a->ch, PP_WIRE_CODE_REQUEST, 0, idx, h, PP_HASH_LEN);
}

/* ---- the connection ---- */

static int on_frame(void *ctx, const struct pp_wire_frame *f)
{
    struct agent *a = ctx;
    int r;

    switch (f->hdr.type) {
    case PP_WIRE_JOB:
        if (a->rx_job || a->rx_code >= 0)
            return -EPROTO; /* chunks of one payload come together */
        return on_job(a, f);
    case PP_WIRE_CHUNK: {
        int code = a->rx_code;
        if ((r = on_chunk(a, f)) < 0)
            return r;
        if (code >= 0 && pp_code_rx_complete(&a->mods[code].code))
            code_complete(a, code);
        return 0;
    }
    case PP_WIRE_MODULE:
        return on_module(a, f);
    case PP_WIRE_CODE:
        return on_code(a, f);
    case PP_WIRE_HEARTBEAT:
        return pp_chan_send(&a->ch, PP_WIRE_HEARTBEAT, 0, f->hdr.reqid, NULL, 0);
    case PP_WIRE_BYE:
        a->ending = true;
        return 0;
    case PP_WIRE_ERROR:
        if (f->hdr.len >= 4)
            alog(a, "client error: %.*s", (int)(f->hdr.len - 4), (const char *)f->body + 4);
        a->ending = true;
        return 0;
    default:
        return -EPROTO;
    }
}

static int on_data(void *ctx, const uint8_t *data, size_t len)
{
    struct agent *a = ctx;
    a->last_rx = pp_loop_now_ms(a->loop);
    int r = pp_chan_data(&a->ch, data, len);
    if (r < 0) {
        const char *why = pp_chan_error(&a->ch);
        alog(a, "closing: %s", why ? why : strerror(-r));
        a->ending = true;
    }
    return r;
}

static void on_close(void *ctx, int err)
{
    struct agent *a = ctx;
    a->conn = NULL;
    a->ending = true;
    if (err && err != -ECANCELED && a->st.debug)
        alog(a, "connection lost: %s", strerror(-err));
}

static void on_tick(void *ctx)
{
    struct agent *a = ctx;
    uint64_t now = pp_loop_now_ms(a->loop);
    if (a->st.socket_timeout_ms && now - a->last_rx > a->st.socket_timeout_ms * 2u + 1000u) {
        alog(a, "client silent for %llu ms: ending the session",
             (unsigned long long)(now - a->last_rx));
        a->ending = true;
    }
}

static void on_wake(void *ctx)
{
    send_done(ctx);
    send_collected(ctx);
}

static void agent_signal(int sig)
{
    if (sig == SIGTERM || sig == SIGINT)
        agent_term = 1;
    else
        agent_usr1 = 1;
    if (the_agent && the_agent->loop)
        pp_loop_wake(the_agent->loop);
}

static int agent_run(int sock, int pipefd)
{
    static const struct pp_conn_ops ops = {
        .on_data = on_data,
        .on_close = on_close,
    };
    struct agent *a = calloc(1, sizeof(*a));
    int code = 1;

    if (!a) {
        close(sock);
        close(pipefd);
        return 1;
    }
    a->rx_code = -1;
    for (unsigned i = 0; i < PP_MAX_MODULES; i++)
        a->mods[i].code.fd = -1;
    the_agent = a;
    size_t got = 0;
    while (got < sizeof(a->st)) {
        ssize_t n = read(pipefd, (char *)&a->st + got, sizeof(a->st) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pipefd);
    if (got != sizeof(a->st) || a->st.magic != PP_AGENT_MAGIC) {
        fprintf(stderr, "pp agent: no session state\n");
        close(sock);
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = agent_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = a->st.workers;
    cfg.restart = a->st.restart;
    int r = pp_server_new(&cfg, &a->srv);
    if (r < 0) {
        alog(a, "cannot start the workers: %s", strerror(-r));
        close(sock);
        goto out;
    }
    a->workers = pp_get_ncpus(a->srv);
    if (pp_loop_new(&a->loop) < 0 || pp_chan_init(&a->ch, NULL, on_frame, a) < 0 ||
        pp_loop_add(a->loop, sock, &ops, a, &a->conn) < 0) {
        alog(a, "cannot set up the connection");
        goto out;
    }
    a->ch.conn = a->conn;
    if (pp_chan_seal_tx(&a->ch, &a->st.tx) < 0 || pp_chan_seal_rx(&a->ch, &a->st.rx) < 0)
        goto out;
    a->ch.switched = false; /* sealed from the first byte: no handshake here */
    sodium_memzero(&a->st.tx, sizeof(a->st.tx));
    sodium_memzero(&a->st.rx, sizeof(a->st.rx));
    pp_loop_set_wake(a->loop, on_wake, a);
    pp_loop_set_tick(a->loop, AGENT_TICK_MS, on_tick, a);
    a->last_rx = pp_loop_now_ms(a->loop);
    {
        uint8_t buf[16];
        struct pp_wr w = pp_wr_of(buf, sizeof(buf));
        pp_wr_u32(&w, (uint32_t)a->workers);
        pp_wr_u32(&w, (uint32_t)getpid());
        pp_chan_send(&a->ch, PP_WIRE_READY, 0, 0, buf, (size_t)(w.p - buf));
    }
    if (a->st.debug)
        alog(a, "agent running, %d workers", a->workers);
    while (!a->ending) {
        if (agent_term) {
            alog(a, "ppserver is stopping: handing the jobs back");
            pp_chan_send(&a->ch, PP_WIRE_BYE, 0, 0, NULL, 0);
            break;
        }
        if (agent_usr1) {
            agent_usr1 = 0;
            fprintf(stderr, "session %s:\n", a->st.peer);
            pp_print_stats(a->srv, stderr);
        }
        send_done(a);
        send_collected(a);
        if (pp_chan_flush(&a->ch) < 0)
            break;
        if (pp_loop_run(a->loop, -1) < 0)
            break;
    }
    code = 0;
out:
    if (a->conn) {
        pp_chan_flush(&a->ch);
        pp_conn_close(a->conn, 0);
        for (int i = 0; i < 100 && a->conn; i++)
            pp_loop_run(a->loop, 10);
    }
    /* pp_map threads finish their chunk (the workers go on) before the
     * server goes; jobs still running are then cancelled. */
    for (int i = 0; i < 3000 && atomic_load(&a->map_threads) > 0; i++) {
        struct ajob *d = atomic_exchange(&a->done, NULL);
        while (d) {
            struct ajob *n = d->next;
            if (d->flags & PP_JOB_F_MAP)
                atomic_fetch_sub(&a->map_threads, 1);
            free_job(a, d);
            d = n;
        }
        usleep(1000);
    }
    pp__acoll_stop(a->coll); /* it reads from the server */
    if (a->srv)
        pp_server_destroy(a->srv);
    pp__acoll_free(a->coll);
    struct ajob *j = atomic_exchange(&a->done, NULL);
    while (j) {
        struct ajob *n = j->next;
        j->task = NULL; /* freed with the server */
        j->arg_shm = NULL;
        free(j);
        j = n;
    }
    for (unsigned i = 0; i < PP_MAX_MODULES; i++) {
        struct amod *m = &a->mods[i];
        pp_code_rx_abort(&m->code);
        for (struct ajob *p = m->pending, *n; p; p = n) {
            n = p->next;
            free(p);
        }
        if (m->handle)
            dlclose(m->handle);
    }
    if (a->rx_job)
        free(a->rx_job);
    pp_chan_exit(&a->ch);
    if (a->loop)
        pp_loop_free(a->loop);
    the_agent = NULL;
    sodium_memzero(a, sizeof(*a));
    free(a);
    return code;
}

/* In every program that links libpp: one getenv, then main as usual. */
__attribute__((constructor)) static void pp__agent_ctor(void)
{
    const char *e = getenv(PP_AGENT_ENV);
    int sock, pipefd;
    if (!e || sscanf(e, "%d,%d", &sock, &pipefd) != 2)
        return;
    unsetenv(PP_AGENT_ENV);
    exit(agent_run(sock, pipefd));
}
