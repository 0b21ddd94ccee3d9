/*
 * peer_zmq_tcp.c - ZeroMQ over tcp://127.0.0.1 for the remote workloads.
 * One worker process stands where a pp node would: it binds its
 * socket(s) to tcp://127.0.0.1:* (the kernel picks a free port), tells
 * the parent the endpoints through a pipe, and answers each request; the
 * parent connects and drives the run.  (peer_zmq.c is the local ipc://
 * task farm, where the parent binds and N workers connect.)
 *
 * Variants (the first of each workload is the default):
 *   remote-overhead  dealer-router | push-pull   64 jobs in flight
 *   remote-latency   req-rep                     one in flight
 *   remote-payload   dealer-router               peer_remote_window in
 *                                                flight; the worker
 *                                                sends the request
 *                                                message itself back
 *
 * dealer-router: the parent's DEALER talks to the worker's ROUTER over
 * one connection; the worker replies to the routing id it got.
 * push-pull: two connections, the parent's PUSH to the worker's PULL and
 * the worker's PUSH to the parent's PULL.  A message is one frame: the
 * uint64 argument (its reply: the uint64 result) or the B payload bytes.
 * Replies come back in request order (one peer, ordered pipes), so the
 * collector knows which job each answers.
 *
 * The worker is forked before the parent touches ZeroMQ (a context must
 * not cross fork), dies with the parent (PR_SET_PDEATHSIG) and is killed
 * and reaped on every exit path.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

enum zmode { Z_DEALER_ROUTER, Z_PUSH_PULL, Z_REQ_REP };

#define EP_MAX 64           /* "tcp://127.0.0.1:PORT" */
#define POLL_MS 1000        /* wake up this often to check on the worker */
#define START_MS 10000      /* the worker has this long to bind */

struct zpair {
    const struct peer_args *a;
    enum zmode mode;
    pid_t pid;              /* the worker; 0 once reaped */
    char ep[2][EP_MAX];     /* its endpoints: [0] requests in, [1] replies out */
    void *ctx, *out, *in;   /* parent: requests go out on out, replies come
                               in on in (the same socket but for push-pull) */
};

static int zerr(void)
{
    return -zmq_errno();
}

static void set_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof(v));
}

/* ------------------------------------------------------------------ */
/* The worker process                                                  */
/* ------------------------------------------------------------------ */

/* Builds the reply to request m into r.  The echo moves m itself into r:
 * the request already is the reply.  Returns 0 or -errno. */
static int reply_to(const struct peer_args *a, zmq_msg_t *m, zmq_msg_t *r)
{
    uint64_t v;

    if (a->workload == PEER_REMOTE_PAYLOAD) {
        zmq_msg_init(r);
        return zmq_msg_move(r, m) ? zerr() : 0;
    }
    if (zmq_msg_init_size(r, sizeof(v))) {
        int err = zerr();
        zmq_msg_init(r); /* so the caller may close it */
        return err;
    }
    if (zmq_msg_size(m) != sizeof(v))
        return -EPROTO;
    memcpy(&v, zmq_msg_data(m), sizeof(v));
    v = peer_u64_job(a->workload, v);
    memcpy(zmq_msg_data(r), &v, sizeof(v));
    return 0;
}

/* Answers one request: [routing id] request in, [routing id] reply out.
 * Returns 0 or -errno. */
static int serve_one(const struct peer_args *a, void *in, void *out, bool routed)
{
    zmq_msg_t id, m, r;
    int rc = 0;

    zmq_msg_init(&id);
    zmq_msg_init(&m);
    if (routed && (zmq_msg_recv(&id, in, 0) < 0 || !zmq_msg_more(&id)))
        rc = -EPROTO;
    if (rc == 0 && zmq_msg_recv(&m, in, 0) < 0)
        rc = zerr();
    if (rc == 0) {
        rc = reply_to(a, &m, &r); /* r is initialised, whatever it returns */
        if (rc == 0 && routed && zmq_msg_send(&id, out, ZMQ_SNDMORE) < 0)
            rc = zerr();
        if (rc == 0 && zmq_msg_send(&r, out, 0) < 0)
            rc = zerr();
        zmq_msg_close(&r);
    }
    zmq_msg_close(&id);
    zmq_msg_close(&m);
    return rc;
}

/* Binds a socket of type to tcp://127.0.0.1:* and writes its endpoint
 * into ep.  Returns the socket, or NULL. */
static void *bind_any(void *ctx, int type, char *ep)
{
    void *s = zmq_socket(ctx, type);
    size_t len = EP_MAX;

    if (!s)
        return NULL;
    set_int(s, ZMQ_LINGER, 0);
    if (zmq_bind(s, "tcp://127.0.0.1:*") || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len)) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* The worker: binds, reports its endpoints on fd, serves until killed.
 * Never returns. */
static void worker_main(const struct zpair *z, int fd, pid_t parent)
{
    static const int types[][2] = {
        [Z_DEALER_ROUTER] = { ZMQ_ROUTER, 0 },
        [Z_PUSH_PULL] = { ZMQ_PULL, ZMQ_PUSH },
        [Z_REQ_REP] = { ZMQ_REP, 0 },
    };
    char ep[2][EP_MAX] = { "", "" };
    void *s[2] = { NULL, NULL };

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(PEER_EXIT_FAIL);
    void *ctx = zmq_ctx_new();
    for (int k = 0; k < 2 && ctx; k++)
        if (types[z->mode][k] && !(s[k] = bind_any(ctx, types[z->mode][k], ep[k])))
            _exit(PEER_EXIT_FAIL);
    if (!ctx || write(fd, ep, sizeof(ep)) != (ssize_t)sizeof(ep))
        _exit(PEER_EXIT_FAIL);
    close(fd);
    void *out = s[1] ? s[1] : s[0];
    while (serve_one(z->a, s[0], out, z->mode == Z_DEALER_ROUTER) == 0)
        ;
    _exit(PEER_EXIT_FAIL);
}

/* ------------------------------------------------------------------ */
/* Starting and stopping the pair                                      */
/* ------------------------------------------------------------------ */

/* Forks the worker and reads its endpoints (START_MS at most).
 * Returns 0 or -errno. */
static int fork_worker(struct zpair *z)
{
    int fds[2];
    pid_t parent = getpid();

    if (pipe2(fds, O_CLOEXEC))
        return -errno;
    fflush(NULL);
    z->pid = fork();
    if (z->pid == 0) {
        close(fds[0]);
        worker_main(z, fds[1], parent);
    }
    int err = z->pid < 0 ? -errno : 0;
    if (z->pid < 0)
        z->pid = 0;
    close(fds[1]);
    struct pollfd p = { fds[0], POLLIN, 0 };
    if (err == 0 && poll(&p, 1, START_MS) != 1)
        err = -ETIMEDOUT;
    if (err == 0 && read(fds[0], z->ep, sizeof(z->ep)) != (ssize_t)sizeof(z->ep))
        err = -EPROTO; /* the worker could not bind: it exited */
    close(fds[0]);
    z->ep[0][EP_MAX - 1] = z->ep[1][EP_MAX - 1] = '\0';
    return err;
}

static void *connect_to(struct zpair *z, int type, const char *ep)
{
    void *s = zmq_socket(z->ctx, type);

    if (!s)
        return NULL;
    set_int(s, ZMQ_LINGER, 0); /* teardown never waits on a dead peer */
    if (zmq_connect(s, ep)) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Starts the worker and connects the parent's socket(s).  Returns 0 or
 * -errno; pair_stop() cleans up either way. */
static int pair_start(struct zpair *z, const struct peer_args *a, enum zmode mode)
{
    *z = (struct zpair){ .a = a, .mode = mode };
    int rc = fork_worker(z);

    if (rc)
        return rc;
    if (!(z->ctx = zmq_ctx_new()))
        return zerr();
    switch (mode) {
    case Z_DEALER_ROUTER:
        z->out = z->in = connect_to(z, ZMQ_DEALER, z->ep[0]);
        break;
    case Z_PUSH_PULL:
        z->out = connect_to(z, ZMQ_PUSH, z->ep[0]);
        z->in = connect_to(z, ZMQ_PULL, z->ep[1]);
        break;
    case Z_REQ_REP:
        z->out = z->in = connect_to(z, ZMQ_REQ, z->ep[0]);
        break;
    }
    return z->out && z->in ? 0 : zerr();
}

/* Closes ZeroMQ, then kills and reaps the worker. */
static void pair_stop(struct zpair *z)
{
    if (z->in && z->in != z->out)
        zmq_close(z->in);
    if (z->out)
        zmq_close(z->out);
    if (z->ctx)
        zmq_ctx_term(z->ctx);
    z->in = z->out = z->ctx = NULL;
    if (z->pid > 0) {
        kill(z->pid, SIGTERM);
        while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    z->pid = 0;
}

/* Waits for a reply, checking every POLL_MS that the worker lives (a
 * dead one would leave us waiting forever).  Returns 0 or -errno. */
static int wait_reply(struct zpair *z)
{
    for (;;) {
        zmq_pollitem_t it = { .socket = z->in, .events = ZMQ_POLLIN };
        int n = zmq_poll(&it, 1, POLL_MS);
        if (n < 0 && zmq_errno() != EINTR)
            return zerr();
        if (n > 0)
            return 0;
        int st;
        if (z->pid > 0 && waitpid(z->pid, &st, WNOHANG) == z->pid) {
            z->pid = 0;
            fprintf(stderr, "peer_zmq_tcp: worker died (status %#x)\n", st);
            return -ECHILD;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Jobs out, results in                                                */
/* ------------------------------------------------------------------ */

struct zrun {
    const struct peer_args *a;
    struct peer_plan plan;
    struct peer_payload_ref ref;
    unsigned char *payload; /* payload: the argument, stamped per job */
    uint64_t window;
};

static int zrun_init(struct zrun *r, const struct peer_args *a)
{
    *r = (struct zrun){ .a = a, .window = peer_remote_window(a->workload, a->payload) };
    if (peer_plan_init(a, &r->plan))
        return -ENOMEM;
    if (a->workload != PEER_REMOTE_PAYLOAD)
        return 0;
    unsigned char *tmpl = malloc(a->payload);
    if (!tmpl || !(r->payload = malloc(a->payload))) {
        free(tmpl);
        return -ENOMEM;
    }
    peer_payload_fill(tmpl, a->payload);
    memcpy(r->payload, tmpl, a->payload);
    peer_payload_ref_init(&r->ref, tmpl, a->payload);
    return 0;
}

static void zrun_free(struct zrun *r)
{
    peer_plan_free(&r->plan);
    free(r->payload);
    free((void *)r->ref.tmpl);
}

/* Sends request j (copied into its message, as a ZeroMQ program
 * builds one).  Returns 0 or -errno. */
static int send_job(struct zrun *r, void *s, uint64_t j)
{
    const void *body = &j;
    size_t len = sizeof(j);

    if (r->a->workload == PEER_REMOTE_PAYLOAD) {
        peer_payload_stamp(r->payload, r->a->payload, j);
        body = r->payload;
        len = r->a->payload;
    }
    return zmq_send(s, body, len, 0) < 0 ? zerr() : 0;
}

/* Receives and checks the reply to request j.  Returns 0 or -errno. */
static int recv_reply(struct zpair *z, struct zrun *r, uint64_t j)
{
    zmq_msg_t m;
    int rc = wait_reply(z);

    if (rc)
        return rc;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, z->in, 0) < 0) {
        rc = zerr();
    } else if (r->a->workload == PEER_REMOTE_PAYLOAD) {
        if (zmq_msg_size(&m) != r->a->payload ||
            !peer_payload_echo_ok(&r->ref, j, zmq_msg_data(&m)))
            rc = -EPROTO;
    } else {
        uint64_t v;
        if (zmq_msg_size(&m) != sizeof(v))
            rc = -EPROTO;
        else
            memcpy(&v, zmq_msg_data(&m), sizeof(v));
        if (rc == 0 && !peer_u64_check(r->a, &r->plan, j, v))
            rc = -EPROTO;
    }
    zmq_msg_close(&m);
    return rc;
}

/* Runs requests 0..jobs-1 with up to the window in flight: the queue
 * never reaches the high-water mark, so sends do not block.  Returns 0
 * or -errno. */
static int run_all(struct zpair *z, struct zrun *r, uint64_t jobs)
{
    uint64_t sent = 0, done = 0;
    int rc = 0;

    while (done < jobs && rc == 0) {
        while (sent < jobs && sent - done < r->window && rc == 0)
            rc = send_job(r, z->out, sent++);
        if (rc == 0)
            rc = recv_reply(z, r, done++);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The workloads                                                       */
/* ------------------------------------------------------------------ */

static int run_window(const struct peer_args *a, struct peer_result *res, enum zmode mode)
{
    struct zpair z = { 0 };
    struct zrun r;
    int rc = zrun_init(&r, a);

    if (rc == 0)
        rc = pair_start(&z, a, mode);
    if (rc == 0) /* one round trip first: the connection is up */
        rc = run_all(&z, &r, 1);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = run_all(&z, &r, a->jobs);
        peer_result_wall(res, a, &r.plan, peer_now_ns() - t0);
    }
    pair_stop(&z);
    zrun_free(&r);
    return rc ? peer_fail(mode == Z_PUSH_PULL ? "push-pull" : "dealer-router", rc) : 0;
}

static int run_dealer_router(const struct peer_args *a, struct peer_result *r)
{
    return run_window(a, r, Z_DEALER_ROUTER);
}

static int run_push_pull(const struct peer_args *a, struct peer_result *r)
{
    return run_window(a, r, Z_PUSH_PULL);
}

static int run_req_rep(const struct peer_args *a, struct peer_result *res)
{
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt)), first = 0;
    struct zpair z = { 0 };
    struct zrun r;
    int rc = rtt ? zrun_init(&r, a) : -ENOMEM;

    if (!rtt)
        return peer_fail("allocating", rc);
    if (rc == 0)
        rc = pair_start(&z, a, Z_REQ_REP);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = run_all(&z, &r, 1); /* the first call, on a fresh connection */
        first = peer_now_ns() - t0;
    }
    for (uint64_t i = 0; i < a->jobs && rc == 0; i++) {
        uint64_t t0 = peer_now_ns();
        rc = send_job(&r, z.out, i);
        if (rc == 0)
            rc = recv_reply(&z, &r, i);
        rtt[i] = peer_now_ns() - t0;
    }
    if (rc == 0)
        peer_result_latency(res, rtt, a->jobs, first);
    pair_stop(&z);
    zrun_free(&r);
    free(rtt);
    return rc ? peer_fail("req-rep", rc) : 0;
}

static const struct peer_variant variants[] = {
    { PEER_REMOTE_OVERHEAD, "dealer-router", run_dealer_router },
    { PEER_REMOTE_OVERHEAD, "push-pull", run_push_pull },
    { PEER_REMOTE_LATENCY, "req-rep", run_req_rep },
    { PEER_REMOTE_PAYLOAD, "dealer-router", run_dealer_router },
};

int main(int argc, char **argv)
{
    static char version[48];
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
    snprintf(version, sizeof(version), "ZeroMQ %d.%d.%d, tcp", major, minor, patch);
    peer_result_init(&r, &a, "zmq", v->name);
    r.version = version;
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
