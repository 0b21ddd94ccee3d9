/*
 * peer_tcp.c - the floor of the remote workloads: raw TCP over loopback
 * between this process and one worker process, no library in between.
 * Whatever pp's remote path costs beyond these figures is pp's own.
 *
 * The parent binds a listening socket to 127.0.0.1 port 0 (the kernel
 * picks a free port), forks the worker, which accepts one connection,
 * and connects to it.  Both ends set TCP_NODELAY; requests and replies
 * are fixed-size, so neither side needs a header:
 *
 *   remote-overhead  window64   64-byte requests (the uint64 argument,
 *                               then padding), each answered by a 64-byte
 *                               reply (the result, then padding); up to
 *                               64 in flight, written and read in batches
 *   remote-latency   ping-pong  one 64-byte request, its 64-byte reply
 *   remote-payload   echo       B-byte arguments, each read whole by the
 *                               worker and written back (the job returns
 *                               its argument); peer_remote_window in flight
 *
 * Replies come back in request order (one stream), so the collector
 * knows which job each answers.  The worker dies with the parent
 * (PR_SET_PDEATHSIG) and is killed and reaped on every exit path.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MSG 64              /* request and reply of overhead and latency */
#define STALL_MS 10000      /* no byte moved this long: the run failed */
#define MAX_IOV 128         /* iovecs of one writev (2 per request) */

struct tcp_pair {
    int fd;    /* the parent's end of the connection */
    pid_t pid; /* the worker; 0 once reaped */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* Writes all n bytes (blocking socket).  Returns 0 or -errno. */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads exactly n bytes (blocking socket).  Returns 0, -EPIPE when the
 * stream ends first (1 when it ends before the first byte: a clean
 * close between messages), or -errno. */
static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;

    while (got < n) {
        ssize_t k = read(fd, p + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return got ? -EPIPE : 1;
        got += (size_t)k;
    }
    return 0;
}

static uint64_t load_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Bytes of one request (and of its reply). */
static size_t msg_bytes(const struct peer_args *a)
{
    return a->workload == PEER_REMOTE_PAYLOAD ? a->payload : MSG;
}

/* ------------------------------------------------------------------ */
/* The worker process                                                  */
/* ------------------------------------------------------------------ */

/* Answers 64-byte requests until the parent closes: reads what is
 * there, answers every whole request in it with one write.  Returns 0
 * at the parent's close, or -errno. */
static int serve_small(const struct peer_args *a, int fd)
{
    static unsigned char in[MSG * PEER_REMOTE_WINDOW], out[sizeof(in)];
    size_t have = 0;

    for (;;) {
        ssize_t k = read(fd, in + have, sizeof(in) - have);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 && have == 0 ? 0 : (k < 0 ? -errno : -EPIPE);
        have += (size_t)k;
        size_t whole = have / MSG;
        for (size_t i = 0; i < whole; i++) {
            uint64_t v = peer_u64_job(a->workload, load_u64(in + i * MSG));
            memcpy(out + i * MSG, &v, sizeof(v)); /* padding stays zero */
        }
        int rc = write_all(fd, out, whole * MSG);
        if (rc)
            return rc;
        have -= whole * MSG;
        memmove(in, in + whole * MSG, have);
    }
}

/* Echoes B-byte requests, each read whole first (a job sees its whole
 * argument before it runs).  Returns 0 at the parent's close, or -errno. */
static int serve_echo(const struct peer_args *a, int fd)
{
    unsigned char *buf = malloc(a->payload);
    int rc = buf ? 0 : -ENOMEM;

    while (rc == 0) {
        rc = read_full(fd, buf, a->payload);
        if (rc == 0)
            rc = write_all(fd, buf, a->payload);
    }
    free(buf);
    return rc == 1 ? 0 : rc;
}

/* The worker: accepts the parent's connection and serves it.  Never
 * returns. */
static void worker_main(const struct peer_args *a, int lfd, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(PEER_EXIT_FAIL);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    close(lfd);
    if (fd < 0)
        _exit(PEER_EXIT_FAIL);
    set_nodelay(fd);
    int rc = a->workload == PEER_REMOTE_PAYLOAD ? serve_echo(a, fd) : serve_small(a, fd);
    _exit(rc ? PEER_EXIT_FAIL : 0);
}

/* ------------------------------------------------------------------ */
/* Starting and stopping the pair                                      */
/* ------------------------------------------------------------------ */

/* A listening socket on 127.0.0.1 and the port the kernel gave it.
 * Returns the socket, or -errno. */
static int listen_loopback(struct sockaddr_in *ret)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1) ||
        getsockname(fd, (struct sockaddr *)&sa, &len)) {
        int err = -errno;
        close(fd);
        return err;
    }
    *ret = sa;
    return fd;
}

/* Forks the worker and connects to it.  Returns 0 or -errno;
 * pair_stop() cleans up either way. */
static int pair_start(const struct peer_args *a, struct tcp_pair *p)
{
    struct sockaddr_in sa;
    pid_t parent = getpid();
    int lfd = listen_loopback(&sa);

    *p = (struct tcp_pair){ .fd = -1 };
    if (lfd < 0)
        return lfd;
    fflush(NULL);
    p->pid = fork();
    if (p->pid == 0)
        worker_main(a, lfd, parent);
    int err = p->pid < 0 ? -errno : 0;
    if (p->pid < 0)
        p->pid = 0;
    if (err == 0 && (p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        err = -errno;
    if (err == 0 && connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)))
        err = -errno;
    if (err == 0)
        set_nodelay(p->fd);
    close(lfd);
    return err;
}

/* Closes the connection, then stops and reaps the worker. */
static void pair_stop(struct tcp_pair *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    p->pid = 0;
}

/* -ECHILD when the worker has exited, which the stall check reports. */
static int check_worker(struct tcp_pair *p)
{
    int st;

    if (p->pid > 0 && waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->pid = 0;
        fprintf(stderr, "peer_tcp: worker died (status %#x)\n", st);
        return -ECHILD;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* remote-latency: one request, its reply                              */
/* ------------------------------------------------------------------ */

static int ping(const struct peer_args *a, int fd, uint64_t i)
{
    unsigned char m[MSG] = { 0 };
    struct peer_plan none = { 0 };

    memcpy(m, &i, sizeof(i));
    int rc = write_all(fd, m, sizeof(m));
    if (rc == 0)
        rc = read_full(fd, m, sizeof(m));
    if (rc)
        return rc > 0 ? -EPIPE : rc;
    return peer_u64_check(a, &none, i, load_u64(m)) ? 0 : -EPROTO;
}

static int run_ping_pong(const struct peer_args *a, struct peer_result *r)
{
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt)), first = 0;
    struct tcp_pair p;
    int rc = rtt ? pair_start(a, &p) : -ENOMEM;

    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = ping(a, p.fd, 0); /* the first call, on a fresh connection */
        first = peer_now_ns() - t0;
    }
    for (uint64_t i = 0; i < a->jobs && rc == 0; i++) {
        uint64_t t0 = peer_now_ns();
        rc = ping(a, p.fd, i);
        rtt[i] = peer_now_ns() - t0;
    }
    if (rc == 0)
        peer_result_latency(r, rtt, a->jobs, first);
    if (rtt)
        pair_stop(&p);
    free(rtt);
    return rc ? peer_fail("ping-pong", rc) : 0;
}

/* ------------------------------------------------------------------ */
/* remote-overhead and remote-payload: a window of requests            */
/* ------------------------------------------------------------------ */

/*
 * Request j is its first min(8, B) bytes (j: the argument of a trivial
 * job, the stamp of a payload) followed by the template's remaining
 * bytes, so requests go out by writev straight from the template.
 */
struct flow {
    const struct peer_args *a;
    struct peer_plan plan;
    struct peer_payload_ref ref; /* payload: what each echo must be */
    size_t msg, head;            /* request bytes; its leading stamp bytes */
    uint64_t window;
    unsigned char *tmpl;         /* msg bytes */
    unsigned char (*stamp)[8];   /* window slots: request j uses j % window */
    unsigned char *in;           /* replies being read: in_cap bytes */
    size_t in_cap, in_have;
    uint64_t sent, done;         /* requests written whole; replies checked */
    size_t sent_off;             /* bytes of request `sent` written */
};

static int flow_init(struct flow *f, const struct peer_args *a)
{
    *f = (struct flow){ .a = a, .msg = msg_bytes(a),
                        .window = peer_remote_window(a->workload, a->payload) };
    f->head = f->msg < 8 ? f->msg : 8;
    /* Small replies are read many at a time; a big one straight into a
     * buffer of its size, never past its end. */
    f->in_cap = f->msg == MSG ? MSG * f->window : f->msg;
    f->tmpl = calloc(1, f->msg);
    f->stamp = calloc(f->window, sizeof(*f->stamp));
    f->in = malloc(f->in_cap);
    if (!f->tmpl || !f->stamp || !f->in || peer_plan_init(a, &f->plan))
        return -ENOMEM;
    if (a->workload == PEER_REMOTE_PAYLOAD) {
        peer_payload_fill(f->tmpl, f->msg);
        peer_payload_ref_init(&f->ref, f->tmpl, f->msg);
    }
    return 0;
}

static void flow_free(struct flow *f)
{
    peer_plan_free(&f->plan);
    free(f->tmpl);
    free(f->stamp);
    free(f->in);
}

/* Writes as much of the window as the socket takes.  Returns bytes
 * written (0: the socket is full or the window is), or -errno. */
static ssize_t flow_send(struct flow *f, int fd, uint64_t jobs)
{
    struct iovec iov[MAX_IOV];
    int n = 0;

    for (uint64_t j = f->sent; j < jobs && j - f->done < f->window && n + 2 <= MAX_IOV;
         j++) {
        /* The slot of j is free: request j - window was written whole
         * before reply j - window could be checked.  A request begun
         * earlier gets the same stamp again. */
        unsigned char *st = f->stamp[j % f->window];
        peer_payload_stamp(st, f->head, j);
        size_t off = j == f->sent ? f->sent_off : 0;
        if (off < f->head)
            iov[n++] = (struct iovec){ st + off, f->head - off };
        size_t body = off > f->head ? off : f->head;
        if (body < f->msg)
            iov[n++] = (struct iovec){ f->tmpl + body, f->msg - body };
    }
    if (n == 0)
        return 0;
    ssize_t k = writev(fd, iov, n);
    if (k < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    size_t left = (size_t)k + f->sent_off;
    f->sent += left / f->msg;
    f->sent_off = left % f->msg;
    return k;
}

/* Checks reply `done` at p.  Returns 0 or -EPROTO. */
static int flow_check(struct flow *f, const unsigned char *p)
{
    if (f->a->workload == PEER_REMOTE_PAYLOAD) {
        if (peer_payload_echo_ok(&f->ref, f->done, p))
            return 0;
        fprintf(stderr, "peer_tcp: echo %llu differs from its argument\n",
                (unsigned long long)f->done);
        return -EPROTO;
    }
    return peer_u64_check(f->a, &f->plan, f->done, load_u64(p)) ? 0 : -EPROTO;
}

/* Reads what has arrived and checks every whole reply.  Returns bytes
 * read (0: nothing there), or -errno. */
static ssize_t flow_recv(struct flow *f, int fd)
{
    ssize_t k = read(fd, f->in + f->in_have, f->in_cap - f->in_have);

    if (k < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    if (k == 0)
        return -EPIPE;
    f->in_have += (size_t)k;
    size_t used = 0;
    while (f->in_have - used >= f->msg) {
        int rc = flow_check(f, f->in + used);
        if (rc)
            return rc;
        used += f->msg;
        f->done++;
    }
    f->in_have -= used;
    memmove(f->in, f->in + used, f->in_have);
    return k;
}

/* Runs requests 0..jobs-1 through the window on the non-blocking
 * connection, from a fresh count.  Returns 0 or -errno. */
static int flow_run(struct flow *f, struct tcp_pair *p, uint64_t jobs)
{
    int idle_ms = 0;

    f->sent = f->done = 0;
    f->sent_off = f->in_have = 0;
    while (f->done < jobs) {
        ssize_t out = flow_send(f, p->fd, jobs);
        ssize_t in = out < 0 ? 0 : flow_recv(f, p->fd);
        if (out < 0 || in < 0)
            return out < 0 ? (int)out : (int)in;
        if (out > 0 || in > 0) {
            idle_ms = 0;
            continue;
        }
        bool more = f->sent < jobs && f->sent - f->done < f->window;
        struct pollfd pf = { p->fd, (short)(POLLIN | (more ? POLLOUT : 0)), 0 };
        int n = poll(&pf, 1, 1000);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n == 0) {
            int rc = check_worker(p);
            if (rc)
                return rc;
            if ((idle_ms += 1000) >= STALL_MS)
                return -ETIMEDOUT;
        }
    }
    return 0;
}

static int run_window(const struct peer_args *a, struct peer_result *r)
{
    struct flow f;
    struct tcp_pair p = { .fd = -1 };
    int rc = flow_init(&f, a);

    if (rc == 0)
        rc = pair_start(a, &p);
    if (rc == 0 && fcntl(p.fd, F_SETFL, fcntl(p.fd, F_GETFL) | O_NONBLOCK))
        rc = -errno;
    /* One request and its reply before timing: the connection is up and
     * both ends have run their path once. */
    if (rc == 0)
        rc = flow_run(&f, &p, 1);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = flow_run(&f, &p, a->jobs);
        peer_result_wall(r, a, &f.plan, peer_now_ns() - t0);
    }
    pair_stop(&p);
    flow_free(&f);
    return rc ? peer_fail(a->workload == PEER_REMOTE_PAYLOAD ? "echo" : "window64", rc) : 0;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static const struct peer_variant variants[] = {
    { PEER_REMOTE_OVERHEAD, "window64", run_window },
    { PEER_REMOTE_LATENCY, "ping-pong", run_ping_pong },
    { PEER_REMOTE_PAYLOAD, "echo", run_window },
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
    signal(SIGPIPE, SIG_IGN); /* a dead worker is an error, not a signal */
    peer_result_init(&r, &a, "tcp", v->name);
    r.version = "Linux TCP, loopback";
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
