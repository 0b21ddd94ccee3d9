/*
 * peer_zmq.c - a ZeroMQ task farm over ipc://, as the ZeroMQ guide
 * builds one ("Divide and Conquer"): a ventilator PUSH socket, N worker
 * processes with PULL in and PUSH out, and a sink PULL.  Here the
 * ventilator and the sink are the parent, one thread driving both
 * sockets with zmq_poll, so results are collected while jobs go out.
 *
 * Variants (the first of each workload is the default):
 *   overhead, payload, scaling, imbalance   push-pull | router-lb
 *   latency    push-pull
 *   map        push-pull-batch (J/(4N) items per message)
 *
 * push-pull deals jobs round-robin whatever each worker is doing, which
 * the guide itself points out; router-lb is the guide's answer, the
 * load-balancing pattern: DEALER workers hold two credits each and a
 * ROUTER hands the next job to whichever worker returned a result.
 *
 * Messages are one frame: a struct zhdr, then the body (the uint64
 * argument, B payload bytes, or a batch of uint64 items); the reply
 * repeats the header and carries the result(s).  Workers are forked
 * before the parent touches ZeroMQ (a context must not cross fork) and
 * wait on a pipe until the parent has bound its sockets.  They die with
 * the parent (PR_SET_PDEATHSIG) and are killed and reaped on every exit
 * path; the ipc files live in a mkdtemp directory that is removed.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

enum zkind {
    Z_PROBE = 1, /* push-pull start-up: "who are you"; reply index = worker */
    Z_READY,     /* router-lb: a worker's credit, sent once per window slot */
    Z_JOB,
};

struct zhdr {
    uint32_t kind;
    uint32_t count;  /* items in a map batch, else 1 */
    uint64_t index;  /* job index (first item of a batch) */
};

#define LB_WINDOW 2       /* router-lb: jobs outstanding per worker */
#define SEND_BURST 64     /* sends or receives before looking at the other */
#define POLL_MS 1000      /* wake up this often to check on the workers */
#define INFLIGHT_BYTES (64u << 20) /* queued job bytes, see zrun_init */
#define PROBE_LIMIT_MS 5000

struct zfarm {
    const struct peer_args *a;
    bool lb;              /* router-lb instead of push-pull */
    char dir[64];         /* mkdtemp directory of the ipc files */
    char ep_vent[96], ep_sink[96], ep_lb[96];
    pid_t *pids;          /* N workers; 0 once reaped */
    int gate[2];          /* closing gate[1] lets the workers connect */
    void *ctx, *vent, *sink, *router;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int zerr(void)
{
    return -zmq_errno();
}

/* Sends a header plus an optional body copied behind it, in one frame. */
static int send_frame(void *s, const struct zhdr *h, const void *body,
                      size_t len, int flags)
{
    zmq_msg_t m;

    if (zmq_msg_init_size(&m, sizeof(*h) + len))
        return zerr();
    memcpy(zmq_msg_data(&m), h, sizeof(*h));
    if (len)
        memcpy((char *)zmq_msg_data(&m) + sizeof(*h), body, len);
    if (zmq_msg_send(&m, s, flags) < 0) {
        int err = zerr();
        zmq_msg_close(&m);
        return err;
    }
    return 0;
}

static void set_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof(v));
}

/* ------------------------------------------------------------------ */
/* The worker process                                                  */
/* ------------------------------------------------------------------ */

/*
 * Builds the reply to job message m into r (initialised here).  Echo
 * moves m itself into r: the request already is the reply, so it goes
 * back without another copy.  Returns 0 or -errno.
 */
static int worker_reply(const struct peer_args *a, zmq_msg_t *m, zmq_msg_t *r)
{
    struct zhdr h;
    const unsigned char *body = (const unsigned char *)zmq_msg_data(m) + sizeof(h);
    size_t len = zmq_msg_size(m) - sizeof(h);
    uint64_t v;

    memcpy(&h, zmq_msg_data(m), sizeof(h));
    if (a->workload == PEER_PAYLOAD && a->echo) {
        zmq_msg_init(r);
        return zmq_msg_move(r, m) ? zerr() : 0;
    }
    size_t n = a->workload == PEER_MAP ? h.count : 1;
    if (a->workload != PEER_PAYLOAD && len != n * sizeof(v))
        return -EPROTO;
    if (zmq_msg_init_size(r, sizeof(h) + n * sizeof(uint64_t)))
        return zerr();
    unsigned char *out = (unsigned char *)zmq_msg_data(r) + sizeof(h);
    memcpy(zmq_msg_data(r), &h, sizeof(h));
    if (a->workload == PEER_PAYLOAD) {
        v = peer_checksum(body, len);
        memcpy(out, &v, sizeof(v));
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        memcpy(&v, body + k * sizeof(v), sizeof(v));
        v = peer_u64_job(a->workload, v);
        memcpy(out + k * sizeof(v), &v, sizeof(v));
    }
    return 0;
}

/* Answers one message from in on out.  Returns 0 or -errno. */
static int worker_serve_one(const struct peer_args *a, void *in, void *out,
                            int id)
{
    zmq_msg_t m, r;
    struct zhdr h;
    int rc;

    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, in, 0) < 0 || zmq_msg_size(&m) < sizeof(h)) {
        zmq_msg_close(&m);
        return -EPROTO;
    }
    memcpy(&h, zmq_msg_data(&m), sizeof(h));
    if (h.kind == Z_PROBE) {
        h.index = (uint64_t)id;
        zmq_msg_close(&m);
        return send_frame(out, &h, NULL, 0, 0);
    }
    rc = worker_reply(a, &m, &r);
    zmq_msg_close(&m);
    if (rc == 0 && zmq_msg_send(&r, out, 0) < 0)
        rc = zerr();
    zmq_msg_close(&r);
    return rc;
}

/* Connects the worker's sockets; router-lb also sends its credits. */
static int worker_connect(struct zfarm *f, void *ctx, void **in, void **out)
{
    struct zhdr ready = { .kind = Z_READY, .count = 1 };

    if (f->lb) {
        *in = *out = zmq_socket(ctx, ZMQ_DEALER);
        if (!*in || zmq_connect(*in, f->ep_lb))
            return zerr();
        for (int k = 0; k < LB_WINDOW; k++)
            if (send_frame(*out, &ready, NULL, 0, 0))
                return zerr();
        return 0;
    }
    *in = zmq_socket(ctx, ZMQ_PULL);
    *out = zmq_socket(ctx, ZMQ_PUSH);
    if (!*in || !*out || zmq_connect(*in, f->ep_vent) || zmq_connect(*out, f->ep_sink))
        return zerr();
    return 0;
}

/* The worker: serves until the parent kills it.  Never returns. */
static void worker_main(struct zfarm *f, int id, pid_t parent)
{
    char c;
    void *in, *out;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    close(f->gate[1]);
    while (read(f->gate[0], &c, 1) < 0 && errno == EINTR)
        ; /* EOF: the parent's sockets are bound */
    void *ctx = zmq_ctx_new();
    if (!ctx || worker_connect(f, ctx, &in, &out))
        _exit(1);
    while (worker_serve_one(f->a, in, out, id) == 0)
        ;
    _exit(1);
}

/* ------------------------------------------------------------------ */
/* Starting and stopping the farm                                      */
/* ------------------------------------------------------------------ */

static int fork_workers(struct zfarm *f)
{
    pid_t parent = getpid();

    if (pipe2(f->gate, O_CLOEXEC))
        return -errno;
    for (int k = 0; k < f->a->workers; k++) {
        pid_t pid = fork();
        if (pid < 0)
            return -errno;
        if (pid == 0)
            worker_main(f, k, parent);
        f->pids[k] = pid;
    }
    return 0;
}

static void *bind_socket(struct zfarm *f, int type, const char *ep)
{
    void *s = zmq_socket(f->ctx, type);

    if (!s)
        return NULL;
    set_int(s, ZMQ_LINGER, 0); /* teardown never waits on a dead peer */
    if (zmq_bind(s, ep)) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Forks the workers, binds the parent's sockets and opens the gate.
 * Returns 0 or -errno; farm_stop() cleans up either way. */
static int farm_start(struct zfarm *f, const struct peer_args *a, bool lb)
{
    *f = (struct zfarm){ .a = a, .lb = lb, .gate = { -1, -1 } };
    snprintf(f->dir, sizeof(f->dir), "/tmp/peer_zmq.XXXXXX");
    f->pids = calloc((size_t)a->workers, sizeof(*f->pids));
    if (!f->pids || !mkdtemp(f->dir)) {
        f->dir[0] = '\0';
        return -errno;
    }
    snprintf(f->ep_vent, sizeof(f->ep_vent), "ipc://%s/vent", f->dir);
    snprintf(f->ep_sink, sizeof(f->ep_sink), "ipc://%s/sink", f->dir);
    snprintf(f->ep_lb, sizeof(f->ep_lb), "ipc://%s/lb", f->dir);
    int rc = fork_workers(f);
    if (rc)
        return rc;
    if (!(f->ctx = zmq_ctx_new()))
        return zerr();
    if (lb) {
        if (!(f->router = bind_socket(f, ZMQ_ROUTER, f->ep_lb)))
            return zerr();
    } else if (!(f->vent = bind_socket(f, ZMQ_PUSH, f->ep_vent)) ||
               !(f->sink = bind_socket(f, ZMQ_PULL, f->ep_sink))) {
        return zerr();
    }
    close(f->gate[1]);
    f->gate[1] = -1;
    return 0;
}

/* Returns -ECHILD when a worker has died, which would otherwise leave
 * the parent waiting for results forever. */
static int check_workers(struct zfarm *f)
{
    for (int k = 0; k < f->a->workers; k++) {
        int st;
        if (f->pids[k] && waitpid(f->pids[k], &st, WNOHANG) == f->pids[k]) {
            f->pids[k] = 0;
            fprintf(stderr, "peer_zmq: worker %d died (status %#x)\n", k, st);
            return -ECHILD;
        }
    }
    return 0;
}

static void unlink_endpoint(const char *ep)
{
    unlink(ep + strlen("ipc://"));
}

/*
 * Removes the ipc files and their directory.  Called as soon as every
 * worker is connected (connected ipc sockets no longer need the path),
 * so even a peer killed with SIGKILL mid-run leaves nothing in /tmp.
 */
static void farm_unlink(struct zfarm *f)
{
    if (!f->dir[0])
        return;
    unlink_endpoint(f->ep_vent);
    unlink_endpoint(f->ep_sink);
    unlink_endpoint(f->ep_lb);
    rmdir(f->dir);
    f->dir[0] = '\0';
}

/* Kills and reaps the workers, closes ZeroMQ, removes the ipc files.
 * Nothing is in flight by then, so no stop message is needed. */
static void farm_stop(struct zfarm *f)
{
    for (int k = 0; f->pids && k < f->a->workers; k++) {
        if (f->pids[k] > 0) {
            kill(f->pids[k], SIGTERM);
            while (waitpid(f->pids[k], NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    free(f->pids);
    f->pids = NULL;
    for (int k = 0; k < 2; k++)
        if (f->gate[k] >= 0)
            close(f->gate[k]);
    if (f->vent)
        zmq_close(f->vent);
    if (f->sink)
        zmq_close(f->sink);
    if (f->router)
        zmq_close(f->router);
    if (f->ctx)
        zmq_ctx_term(f->ctx);
    farm_unlink(f);
}

/* Waits until s is ready for events (ZMQ_POLLIN or ZMQ_POLLOUT),
 * checking every POLL_MS that no worker has died, since then it might
 * never be.  Returns 0 or -errno. */
static int wait_sock(struct zfarm *f, void *s, short events)
{
    for (;;) {
        zmq_pollitem_t it = { .socket = s, .events = events };
        int n = zmq_poll(&it, 1, POLL_MS);
        if (n < 0 && zmq_errno() != EINTR)
            return zerr();
        if (n > 0)
            return 0;
        int rc = check_workers(f);
        if (rc)
            return rc;
    }
}

/*
 * The guide's "slow joiner" problem: PUSH deals only to workers already
 * connected, so jobs sent too early all land on the first one.  Probes
 * go out in rounds of N until every worker has answered one, and only
 * then does the timed run start.  Returns 0 or -errno.
 */
static int farm_probe(struct zfarm *f)
{
    int n = f->a->workers, seen = 0;
    bool *got = calloc((size_t)n, sizeof(*got));
    uint64_t deadline = peer_now_ns() + (uint64_t)PROBE_LIMIT_MS * 1000000;
    struct zhdr h = { .kind = Z_PROBE, .count = 1 };
    int rc = got ? 0 : -ENOMEM;

    while (rc == 0 && seen < n) {
        if (peer_now_ns() > deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        /* PUSH blocks while no worker is connected: wait, not block. */
        for (int k = 0; k < n && rc == 0; k++) {
            rc = wait_sock(f, f->vent, ZMQ_POLLOUT);
            if (rc == 0)
                rc = send_frame(f->vent, &h, NULL, 0, ZMQ_DONTWAIT);
        }
        for (int k = 0; k < n && rc == 0; k++) {
            struct zhdr r;
            rc = wait_sock(f, f->sink, ZMQ_POLLIN);
            if (rc == 0 && zmq_recv(f->sink, &r, sizeof(r), 0) < 0)
                rc = zerr();
            if (rc == 0 && r.index < (uint64_t)n && !got[r.index]) {
                got[r.index] = true;
                seen++;
            }
        }
        if (rc == 0 && seen < n)
            usleep(1000); /* let the late ones finish connecting */
    }
    free(got);
    if (rc == 0)
        farm_unlink(f);
    return rc;
}

/* router-lb's credits: the routing ids of workers ready for a job, one
 * entry per free window slot, handed out first come first served. */
struct credits {
    struct { unsigned char id[256]; size_t len; } *slot;
    size_t head, count, cap;
};

static int credit_push(struct credits *cr, const void *id, size_t len)
{
    if (cr->count == cr->cap || len > sizeof(cr->slot[0].id))
        return -EPROTO;
    size_t k = (cr->head + cr->count++) % cr->cap;
    memcpy(cr->slot[k].id, id, len);
    cr->slot[k].len = len;
    return 0;
}

/* Receives [routing id][reply] from the router into id and m. */
static int router_recv(struct zfarm *f, zmq_msg_t *id, zmq_msg_t *m)
{
    int rc = wait_sock(f, f->router, ZMQ_POLLIN);

    if (rc)
        return rc;
    if (zmq_msg_recv(id, f->router, 0) < 0 || !zmq_msg_more(id) ||
        zmq_msg_recv(m, f->router, 0) < 0 || zmq_msg_size(m) < sizeof(struct zhdr))
        return -EPROTO;
    return 0;
}

/* Waits until router-lb holds all N*LB_WINDOW credits, so the timed run
 * starts with every worker connected.  Returns 0 or -errno. */
static int farm_collect_credits(struct zfarm *f, struct credits *cr)
{
    cr->cap = (size_t)f->a->workers * LB_WINDOW;
    cr->head = cr->count = 0;
    if (!(cr->slot = calloc(cr->cap, sizeof(*cr->slot))))
        return -ENOMEM;
    while (cr->count < cr->cap) {
        zmq_msg_t id, m;
        zmq_msg_init(&id);
        zmq_msg_init(&m);
        int rc = router_recv(f, &id, &m);
        if (rc == 0)
            rc = credit_push(cr, zmq_msg_data(&id), zmq_msg_size(&id));
        zmq_msg_close(&id);
        zmq_msg_close(&m);
        if (rc)
            return rc;
    }
    farm_unlink(f);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Jobs out, results in                                                */
/* ------------------------------------------------------------------ */

struct zrun {
    const struct peer_args *a;
    struct peer_plan plan;
    struct peer_payload_ref ref;
    unsigned char *payload; /* payload: the argument, stamped per job */
    uint64_t *batch;        /* map: the items of one message */
    uint64_t chunk, nmsgs;  /* map: items per message; messages to send */
    uint64_t inflight;      /* most jobs sent but not yet collected */
};

static int zrun_init(struct zrun *z, const struct peer_args *a)
{
    *z = (struct zrun){ .a = a, .chunk = 1, .nmsgs = a->jobs };
    if (peer_plan_init(a, &z->plan))
        return -ENOMEM;
    if (a->workload == PEER_MAP) {
        uint64_t c = a->jobs / (4 * (uint64_t)a->workers);
        z->chunk = c ? c : 1;
        z->nmsgs = (a->jobs + z->chunk - 1) / z->chunk;
        if (!(z->batch = malloc(z->chunk * sizeof(*z->batch))))
            return -ENOMEM;
    }
    if (a->workload == PEER_PAYLOAD) {
        unsigned char *tmpl = malloc(a->payload);
        if (!tmpl || !(z->payload = malloc(a->payload))) {
            free(tmpl);
            return -ENOMEM;
        }
        peer_payload_fill(tmpl, a->payload);
        memcpy(z->payload, tmpl, a->payload);
        peer_payload_ref_init(&z->ref, tmpl, a->payload);
    }
    /* ZeroMQ's high-water marks count messages, not bytes: 1000 queued
     * 1 MiB jobs per worker would be gigabytes.  Cap what is queued at
     * INFLIGHT_BYTES, yet never below two jobs per worker. */
    size_t msg = sizeof(struct zhdr) + (a->workload == PEER_PAYLOAD ? a->payload
                                        : z->chunk * sizeof(uint64_t));
    z->inflight = INFLIGHT_BYTES / msg;
    if (z->inflight < 2 * (uint64_t)a->workers)
        z->inflight = 2 * (uint64_t)a->workers;
    return 0;
}

static void zrun_free(struct zrun *z)
{
    peer_plan_free(&z->plan);
    free(z->batch);
    free(z->payload);
    free((void *)z->ref.tmpl);
}

/* Sends message j (a job, or batch j for map) on s.  Returns 0, -EAGAIN
 * when s is full under ZMQ_DONTWAIT, or another -errno. */
static int send_job(struct zrun *z, void *s, uint64_t j, int flags)
{
    const struct peer_args *a = z->a;
    struct zhdr h = { .kind = Z_JOB, .count = 1, .index = j };

    if (a->workload == PEER_PAYLOAD) {
        peer_payload_stamp(z->payload, a->payload, j);
        return send_frame(s, &h, z->payload, a->payload, flags);
    }
    if (a->workload == PEER_MAP) {
        uint64_t first = j * z->chunk, left = a->jobs - first;
        h.count = (uint32_t)(left < z->chunk ? left : z->chunk);
        h.index = first;
        for (uint32_t k = 0; k < h.count; k++)
            z->batch[k] = first + k;
        return send_frame(s, &h, z->batch, h.count * sizeof(uint64_t), flags);
    }
    uint64_t arg = peer_u64_arg(a, &z->plan, j);
    return send_frame(s, &h, &arg, sizeof(arg), flags);
}

/* Checks one reply.  Returns 0 or -EPROTO. */
static int check_reply(struct zrun *z, const zmq_msg_t *m)
{
    const struct peer_args *a = z->a;
    const unsigned char *p = zmq_msg_data((zmq_msg_t *)m);
    size_t len = zmq_msg_size((zmq_msg_t *)m);
    struct zhdr h;
    uint64_t v;

    memcpy(&h, p, sizeof(h));
    p += sizeof(h);
    len -= sizeof(h);
    if (a->workload == PEER_PAYLOAD && a->echo)
        return len == a->payload && peer_payload_echo_ok(&z->ref, h.index, p) ? 0 : -EPROTO;
    if (len != (size_t)h.count * sizeof(v) || h.index + h.count > a->jobs)
        return -EPROTO;
    for (uint32_t k = 0; k < h.count; k++) {
        memcpy(&v, p + k * sizeof(v), sizeof(v));
        bool ok = a->workload == PEER_PAYLOAD
                      ? v == peer_payload_expect(&z->ref, h.index)
                      : peer_u64_check(a, &z->plan, h.index + k, v);
        if (!ok)
            return -EPROTO;
    }
    return 0;
}

/* Receives and checks one reply from s.  Returns 0, -EAGAIN (nothing
 * there under ZMQ_DONTWAIT), or another -errno. */
static int recv_reply(struct zrun *z, void *s, int flags)
{
    zmq_msg_t m;
    int rc = 0;

    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, flags) < 0)
        rc = zerr();
    else if (zmq_msg_size(&m) < sizeof(struct zhdr))
        rc = -EPROTO;
    else
        rc = check_reply(z, &m);
    zmq_msg_close(&m);
    return rc;
}

/* Sends up to SEND_BURST jobs without blocking or going past the
 * in-flight cap; returns how many, or -errno. */
static int push_some(struct zfarm *f, struct zrun *z, uint64_t *sent,
                     uint64_t done)
{
    int n = 0;

    while (n < SEND_BURST && *sent < z->nmsgs && *sent - done < z->inflight) {
        int rc = send_job(z, f->vent, *sent, ZMQ_DONTWAIT);
        if (rc == -EAGAIN)
            break;
        if (rc)
            return rc;
        ++*sent;
        n++;
    }
    return n;
}

static int pull_some(struct zfarm *f, struct zrun *z, uint64_t *done,
                     uint64_t sent)
{
    int n = 0;

    while (n < SEND_BURST && *done < sent) {
        int rc = recv_reply(z, f->sink, ZMQ_DONTWAIT);
        if (rc == -EAGAIN)
            break;
        if (rc)
            return rc;
        ++*done;
        n++;
    }
    return n;
}

/* Blocks until the vent can take a job (while some are left) or the
 * sink has a result, checking on the workers every POLL_MS. */
static int push_pull_wait(struct zfarm *f, bool more)
{
    zmq_pollitem_t it[2] = {
        { .socket = f->sink, .events = ZMQ_POLLIN },
        { .socket = f->vent, .events = ZMQ_POLLOUT },
    };
    int n = zmq_poll(it, more ? 2 : 1, POLL_MS);

    if (n < 0)
        return zmq_errno() == EINTR ? 0 : zerr();
    return n == 0 ? check_workers(f) : 0;
}

/* The ventilator and sink loop: keeps sending while the sockets take
 * jobs and drains results in between.  Returns 0 or -errno. */
static int push_pull_all(struct zfarm *f, struct zrun *z)
{
    uint64_t sent = 0, done = 0;

    while (done < z->nmsgs) {
        int out = push_some(f, z, &sent, done);
        int in = out < 0 ? 0 : pull_some(f, z, &done, sent);
        if (out < 0 || in < 0)
            return out < 0 ? out : in;
        if (out == 0 && in == 0) {
            int rc = push_pull_wait(f, sent < z->nmsgs && sent - done < z->inflight);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* router-lb: a job goes to whichever worker holds a credit, and each
 * result returns the credit of the worker that sent it. */
static int router_all(struct zfarm *f, struct zrun *z, struct credits *cr)
{
    uint64_t sent = 0, done = 0;
    int rc = 0;

    while (done < z->nmsgs && rc == 0) {
        while (cr->count && sent < z->nmsgs && rc == 0) {
            size_t k = cr->head;
            cr->head = (cr->head + 1) % cr->cap;
            cr->count--;
            if (zmq_send(f->router, cr->slot[k].id, cr->slot[k].len, ZMQ_SNDMORE) < 0)
                rc = zerr();
            else
                rc = send_job(z, f->router, sent++, 0);
        }
        zmq_msg_t id, m;
        zmq_msg_init(&id);
        zmq_msg_init(&m);
        if (rc == 0)
            rc = router_recv(f, &id, &m);
        if (rc == 0)
            rc = check_reply(z, &m);
        if (rc == 0)
            rc = credit_push(cr, zmq_msg_data(&id), zmq_msg_size(&id));
        zmq_msg_close(&id);
        zmq_msg_close(&m);
        done += rc == 0;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The workloads                                                       */
/* ------------------------------------------------------------------ */

static int run_push_pull(const struct peer_args *a, struct peer_result *r)
{
    struct zfarm f = { .gate = { -1, -1 } };
    struct zrun z;
    int rc = zrun_init(&z, a);

    if (rc == 0)
        rc = farm_start(&f, a, false);
    if (rc == 0)
        rc = farm_probe(&f);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = push_pull_all(&f, &z);
        peer_result_wall(r, a, &z.plan, peer_now_ns() - t0);
    }
    farm_stop(&f);
    zrun_free(&z);
    return rc ? peer_fail("push-pull farm", rc) : 0;
}

static int run_router(const struct peer_args *a, struct peer_result *r)
{
    struct credits cr = { 0 };
    struct zfarm f = { .gate = { -1, -1 } };
    struct zrun z;
    int rc = zrun_init(&z, a);

    if (rc == 0)
        rc = farm_start(&f, a, true);
    if (rc == 0)
        rc = farm_collect_credits(&f, &cr);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = router_all(&f, &z, &cr);
        peer_result_wall(r, a, &z.plan, peer_now_ns() - t0);
    }
    farm_stop(&f);
    zrun_free(&z);
    free(cr.slot);
    return rc ? peer_fail("router-lb farm", rc) : 0;
}

/* One job out, its result back. */
static int round_trip(struct zfarm *f, struct zrun *z, uint64_t j)
{
    int rc = send_job(z, f->vent, j, 0);

    if (rc == 0)
        rc = wait_sock(f, f->sink, ZMQ_POLLIN);
    return rc ? rc : recv_reply(z, f->sink, 0);
}

static int run_latency(const struct peer_args *a, struct peer_result *r)
{
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt)), first = 0;
    struct zfarm f = { .gate = { -1, -1 } };
    struct zrun z;
    int rc = rtt ? zrun_init(&z, a) : -ENOMEM;

    if (!rtt)
        return peer_fail("allocating", rc);
    if (rc == 0)
        rc = farm_start(&f, a, false);
    if (rc == 0)
        rc = farm_probe(&f);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = round_trip(&f, &z, 0); /* the first call, on a fresh farm */
        first = peer_now_ns() - t0;
    }
    for (uint64_t i = 0; i < a->jobs && rc == 0; i++) {
        uint64_t t0 = peer_now_ns();
        rc = round_trip(&f, &z, i);
        rtt[i] = peer_now_ns() - t0;
    }
    if (rc == 0)
        peer_result_latency(r, rtt, a->jobs, first);
    farm_stop(&f);
    zrun_free(&z);
    free(rtt);
    return rc ? peer_fail("latency", rc) : 0;
}

static const struct peer_variant variants[] = {
    { PEER_OVERHEAD, "push-pull", run_push_pull },
    { PEER_OVERHEAD, "router-lb", run_router },
    { PEER_MAP, "push-pull-batch", run_push_pull },
    { PEER_LATENCY, "push-pull", run_latency },
    { PEER_PAYLOAD, "push-pull", run_push_pull },
    { PEER_PAYLOAD, "router-lb", run_router },
    { PEER_SCALING, "push-pull", run_push_pull },
    { PEER_SCALING, "router-lb", run_router },
    { PEER_IMBALANCE, "push-pull", run_push_pull },
    { PEER_IMBALANCE, "router-lb", run_router },
};

int main(int argc, char **argv)
{
    static char version[32];
    struct peer_args a;
    struct peer_result r;
    int major, minor, patch;
    int rc = peer_args_parse(argc, argv, &a);

    if (rc)
        return -rc;
    const struct peer_variant *v =
        peer_variant_find(variants, sizeof(variants) / sizeof(variants[0]), &a);
    if (!v)
        return PEER_EXIT_UNSUPPORTED;
    zmq_version(&major, &minor, &patch);
    snprintf(version, sizeof(version), "ZeroMQ %d.%d.%d", major, minor, patch);
    peer_result_init(&r, &a, "zmq", v->name);
    r.version = version;
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
