/*
 * peer_stream.c - the stream workload over a pipe, the way pprocess moves
 * a job's values to its parent: the parent forks a child with one pipe,
 * the child writes J 8-byte values peer_stream_value(0 .. J-1) and exits,
 * the parent reads them to EOF and checks every one in order.
 *
 * Variants:
 *   pipe-write-per-value  one write(2) per value, as pprocess's channel
 *                         sends each value (pickle.dump, then flush) on
 *                         its own; the reader reads whatever is there
 *                         (up to 64 KiB at once), as its buffered file
 *                         object does
 *   pipe-buffered         the child fills a 64 KiB buffer and writes it
 *                         whole: the floor of the transport, but a value
 *                         reaches the reader only when its buffer is full
 *   tcp-write-per-value,  the same two over a loopback TCP connection
 *   tcp-buffered          (TCP_NODELAY; the parent listens on 127.0.0.1,
 *                         port 0, the child connects): the floor of
 *                         remote-stream, a node's values to its client
 *
 * The time runs from the fork to EOF (the child is done and every value
 * read): a job of pprocess starts with its fork, too.  The child dies
 * with the parent (PR_SET_PDEATHSIG) and is reaped on every path.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_BYTES (64u << 10)

/* Writes all n bytes.  Returns 0 or -errno. */
static int write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;

    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The child: J values into fd                                         */
/* ------------------------------------------------------------------ */

static int send_per_value(int fd, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        uint64_t v = peer_stream_value(k);
        int rc = write_all(fd, &v, sizeof(v));
        if (rc)
            return rc;
    }
    return 0;
}

static int send_buffered(int fd, uint64_t n)
{
    static uint64_t buf[BUF_BYTES / sizeof(uint64_t)];
    size_t used = 0;

    for (uint64_t k = 0; k < n; k++) {
        buf[used++] = peer_stream_value(k);
        if (used == BUF_BYTES / sizeof(uint64_t)) {
            int rc = write_all(fd, buf, sizeof(buf));
            if (rc)
                return rc;
            used = 0;
        }
    }
    return used ? write_all(fd, buf, used * sizeof(uint64_t)) : 0;
}

/* Never returns: _exit, so the parent's stdio buffers are not flushed
 * twice. */
static void child_main(pid_t parent, int fd, uint64_t n, bool buffered)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    _exit((buffered ? send_buffered(fd, n) : send_per_value(fd, n)) ? 1 : 0);
}

/* ------------------------------------------------------------------ */
/* The parent: read to EOF, check each value                           */
/* ------------------------------------------------------------------ */

/* Reads fd to EOF; *got counts the values, each checked.  Returns 0, or
 * -EPROTO for a wrong value or a torn one at EOF, or -errno. */
static int read_values(int fd, uint64_t n, uint64_t *got)
{
    static unsigned char buf[BUF_BYTES + sizeof(uint64_t)];
    size_t have = 0; /* bytes of a value cut by the last read */

    *got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, BUF_BYTES);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return have ? -EPROTO : 0;
        have += (size_t)r;
        size_t k = 0;
        for (; k + sizeof(uint64_t) <= have; k += sizeof(uint64_t)) {
            uint64_t v;
            memcpy(&v, buf + k, sizeof(v));
            if (*got >= n || v != peer_stream_value(*got)) {
                fprintf(stderr, "peer_stream: value %llu is %llu, want %llu\n",
                        (unsigned long long)*got, (unsigned long long)v,
                        (unsigned long long)peer_stream_value(*got));
                return -EPROTO;
            }
            ++*got;
        }
        memmove(buf, buf + k, have - k);
        have -= k;
    }
}

/* A listening socket on 127.0.0.1 (port picked by the kernel); its
 * address in *sa.  Returns the fd or -errno. */
static int tcp_listen(struct sockaddr_in *sa)
{
    socklen_t sl = sizeof(*sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(fd, 1) < 0 ||
        getsockname(fd, (struct sockaddr *)sa, &sl) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* The child's end over TCP: connects to sa, never returns. */
static void tcp_child(pid_t parent, const struct sockaddr_in *sa, uint64_t n, bool buffered)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        _exit(1);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    child_main(parent, fd, n, buffered);
}

static int run_stream(const struct peer_args *a, struct peer_result *r, bool buffered, bool tcp)
{
    int p[2], status, rc, lfd = -1;
    struct sockaddr_in sa;
    uint64_t got = 0;

    if (a->workers != 1)
        fprintf(stderr, "peer_stream: one child streams; --workers %d ignored\n", a->workers);
    if (tcp) {
        if ((lfd = tcp_listen(&sa)) < 0)
            return peer_fail("listen on 127.0.0.1", lfd);
    } else if (pipe2(p, O_CLOEXEC)) {
        return peer_fail("pipe", -errno);
    }
    pid_t parent = getpid();
    uint64_t t0 = peer_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        if (tcp) {
            close(lfd);
        } else {
            close(p[0]);
            close(p[1]);
        }
        return peer_fail("fork", rc);
    }
    if (pid == 0) {
        if (tcp)
            tcp_child(parent, &sa, a->jobs, buffered);
        close(p[0]);
        child_main(parent, p[1], a->jobs, buffered);
    }
    int fd;
    if (tcp) {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        rc = fd < 0 ? -errno : 0;
        close(lfd);
    } else {
        close(p[1]); /* EOF comes when the child is done */
        fd = p[0];
        rc = 0;
    }
    if (rc == 0)
        rc = read_values(fd, a->jobs, &got);
    uint64_t el = peer_now_ns() - t0;
    if (fd >= 0)
        close(fd);
    if (rc)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
        fprintf(stderr, "peer_stream: the child failed (status %#x)\n", status);
        rc = -EPROTO;
    }
    if (rc == 0 && got != a->jobs) {
        fprintf(stderr, "peer_stream: %llu values of %llu\n", (unsigned long long)got,
                (unsigned long long)a->jobs);
        rc = -EPROTO;
    }
    if (rc)
        return peer_fail("streaming", rc);
    peer_result_wall(r, a, NULL, el);
    return 0;
}

static int run_per_value(const struct peer_args *a, struct peer_result *r)
{
    return run_stream(a, r, false, false);
}

static int run_buffered(const struct peer_args *a, struct peer_result *r)
{
    return run_stream(a, r, true, false);
}

static int run_tcp_per_value(const struct peer_args *a, struct peer_result *r)
{
    return run_stream(a, r, false, true);
}

static int run_tcp_buffered(const struct peer_args *a, struct peer_result *r)
{
    return run_stream(a, r, true, true);
}

static const struct peer_variant variants[] = {
    { PEER_STREAM, "pipe-write-per-value", run_per_value },
    { PEER_STREAM, "pipe-buffered", run_buffered },
    { PEER_STREAM, "tcp-write-per-value", run_tcp_per_value },
    { PEER_STREAM, "tcp-buffered", run_tcp_buffered },
};

int main(int argc, char **argv)
{
    static char version[64];
    struct peer_args a;
    struct peer_result r;
    int rc = peer_args_parse(argc, argv, &a);

    if (rc)
        return -rc;
    const struct peer_variant *v =
        peer_variant_find(variants, sizeof(variants) / sizeof(variants[0]), &a);
    if (!v)
        return PEER_EXIT_UNSUPPORTED;
    bool tcp = strncmp(v->name, "tcp-", 4) == 0;
    peer_result_init(&r, &a, tcp ? "tcp" : "pipe", v->name);
    snprintf(version, sizeof(version), "glibc %s %s", gnu_get_libc_version(),
             tcp ? "loopback TCP" : "pipe(2)");
    r.version = version;
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
