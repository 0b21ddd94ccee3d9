/*
 * peer_stream_zmq.c - the stream workload over ZeroMQ: one child process
 * PUSHes J 8-byte values peer_stream_value(0 .. J-1), one message each,
 * over ipc:// to the parent's PULL socket, which checks every one in
 * order.
 *
 * Variant: push-pull (default socket options: the high-water marks of
 * 1000 messages, ZeroMQ's own batching of small messages on the wire).
 *
 * The child is forked before the parent touches ZeroMQ (a context must
 * not cross fork) and waits on a pipe until the parent has bound its
 * socket; the time runs from then to the J-th value.  The child closes
 * its socket only once the parent has every value (child_send); it dies
 * with the parent (PR_SET_PDEATHSIG) and is reaped on every path.  The ipc file lives in a mkdtemp directory, removed as soon
 * as the first value arrives (the connection no longer needs the path).
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

#define POLL_MS 1000 /* check this often that the child is alive */

struct zstream {
    char dir[64], path[96], ep[112];
    int gate[2];     /* closing gate[1] lets the child connect */
    int done[2];     /* closing done[1]: every value arrived, the child may go */
    pid_t pid;
    void *ctx, *pull;
};

/* ------------------------------------------------------------------ */
/* The child                                                           */
/* ------------------------------------------------------------------ */

/* Sends the n values, then waits (fd: EOF) until the parent has them
 * all before it closes the socket: a PUSH socket that closes while its
 * last messages are still on the way may lose some (seen here: hundreds
 * of the last of 10^7 never arrived, with the default linger). */
static int child_send(const char *ep, uint64_t n, int fd)
{
    void *ctx = zmq_ctx_new(), *push = ctx ? zmq_socket(ctx, ZMQ_PUSH) : NULL;
    int rc = push && zmq_connect(push, ep) == 0 ? 0 : -zmq_errno();

    for (uint64_t k = 0; k < n && rc == 0; k++) {
        uint64_t v = peer_stream_value(k);
        while (zmq_send(push, &v, sizeof(v), 0) < 0 && rc == 0)
            if (zmq_errno() != EINTR)
                rc = -zmq_errno();
    }
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR)
        ;
    if (push)
        zmq_close(push); /* linger -1: waits until every value is out */
    if (ctx)
        zmq_ctx_term(ctx);
    return rc;
}

static void child_main(struct zstream *z, pid_t parent, uint64_t n)
{
    char c;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    close(z->gate[1]);
    close(z->done[1]);
    while (read(z->gate[0], &c, 1) < 0 && errno == EINTR)
        ; /* EOF: the parent's socket is bound */
    _exit(child_send(z->ep, n, z->done[0]) ? 1 : 0);
}

/* ------------------------------------------------------------------ */
/* The parent                                                          */
/* ------------------------------------------------------------------ */

static void unlink_ep(struct zstream *z)
{
    if (!z->dir[0])
        return;
    unlink(z->path);
    rmdir(z->dir);
    z->dir[0] = '\0';
}

/* Forks the child and binds the PULL socket.  Returns 0 or -errno;
 * stop() cleans up either way. */
static int start(struct zstream *z, uint64_t n)
{
    pid_t parent = getpid();

    snprintf(z->dir, sizeof(z->dir), "/tmp/peer_stream_zmq.XXXXXX");
    if (!mkdtemp(z->dir)) {
        z->dir[0] = '\0';
        return -errno;
    }
    snprintf(z->path, sizeof(z->path), "%s/s", z->dir);
    snprintf(z->ep, sizeof(z->ep), "ipc://%s", z->path);
    if (pipe2(z->gate, O_CLOEXEC) || pipe2(z->done, O_CLOEXEC))
        return -errno;
    z->pid = fork();
    if (z->pid < 0)
        return -errno;
    if (z->pid == 0)
        child_main(z, parent, n);
    if (!(z->ctx = zmq_ctx_new()) || !(z->pull = zmq_socket(z->ctx, ZMQ_PULL)))
        return -zmq_errno();
    int zero = 0;
    zmq_setsockopt(z->pull, ZMQ_LINGER, &zero, sizeof(zero));
    return zmq_bind(z->pull, z->ep) ? -zmq_errno() : 0;
}

static void stop(struct zstream *z)
{
    if (z->pid > 0) {
        kill(z->pid, SIGKILL); /* done by now, unless on an error path */
        while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    for (int k = 0; k < 2; k++) {
        if (z->gate[k] >= 0)
            close(z->gate[k]);
        if (z->done[k] >= 0)
            close(z->done[k]);
    }
    if (z->pull)
        zmq_close(z->pull);
    if (z->ctx)
        zmq_ctx_term(z->ctx);
    unlink_ep(z);
}

/* Waits until the PULL socket has a message, checking every POLL_MS
 * that the child still runs.  Returns 0 or -errno. */
static int wait_in(struct zstream *z)
{
    for (;;) {
        zmq_pollitem_t it = { .socket = z->pull, .events = ZMQ_POLLIN };
        int n = zmq_poll(&it, 1, POLL_MS);
        if (n < 0 && zmq_errno() != EINTR)
            return -zmq_errno();
        if (n > 0)
            return 0;
        int st;
        if (waitpid(z->pid, &st, WNOHANG) == z->pid) {
            z->pid = 0;
            fprintf(stderr, "peer_stream_zmq: the child ended (status %#x) early\n", st);
            return -ECHILD;
        }
    }
}

/* Receives the J values, each checked.  Returns 0 or -errno. */
static int receive(struct zstream *z, uint64_t n)
{
    uint64_t k = 0;

    while (k < n) {
        uint64_t v;
        int got = zmq_recv(z->pull, &v, sizeof(v), ZMQ_DONTWAIT);
        if (got < 0) {
            int e = zmq_errno(), rc = 0;
            if (e != EINTR && e != EAGAIN)
                return -e;
            if (e == EAGAIN && (rc = wait_in(z)) != 0)
                return rc;
            continue;
        }
        if (got != (int)sizeof(v) || v != peer_stream_value(k)) {
            fprintf(stderr, "peer_stream_zmq: value %llu: %d bytes, %llu, want %llu\n",
                    (unsigned long long)k, got, (unsigned long long)v,
                    (unsigned long long)peer_stream_value(k));
            return -EPROTO;
        }
        if (k++ == 0)
            unlink_ep(z);
    }
    return 0;
}

static int run_push_pull(const struct peer_args *a, struct peer_result *r)
{
    struct zstream z = { .gate = { -1, -1 }, .done = { -1, -1 } };
    int rc = start(&z, a->jobs);

    if (a->workers != 1)
        fprintf(stderr, "peer_stream_zmq: one child streams; --workers %d ignored\n",
                a->workers);
    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        close(z.gate[1]);
        z.gate[1] = -1;
        rc = receive(&z, a->jobs);
        peer_result_wall(r, a, NULL, peer_now_ns() - t0);
    }
    if (rc == 0) { /* every value is in: the child closes and exits 0 */
        int st;
        close(z.done[1]);
        z.done[1] = -1;
        while (waitpid(z.pid, &st, 0) < 0 && errno == EINTR)
            ;
        z.pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = -EPROTO;
    }
    stop(&z);
    return rc ? peer_fail("push-pull stream", rc) : 0;
}

static const struct peer_variant variants[] = {
    { PEER_STREAM, "push-pull", run_push_pull },
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
