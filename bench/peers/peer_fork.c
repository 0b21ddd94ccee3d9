/*
 * peer_fork.c - fork per job, the way pprocess runs jobs without reuse:
 * each job is a child that inherits its argument through fork (copy on
 * write, nothing serialised), runs the job, writes the result into a
 * pipe and exits.  At most N children run at once; every child is
 * reaped before the next one takes its slot, and all of them on error.
 *
 * Variants: fork-pipe for every workload; map is fork-per-chunk (one
 * child per chunk of J/(4N) items, the chunking Pool.map uses).
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* One running child and the result bytes it has sent so far. */
struct child {
    pid_t pid;          /* 0: free slot */
    int fd;             /* read end of its result pipe */
    uint64_t job;       /* job index, or chunk index for map */
    size_t got, want;   /* result bytes read / expected */
    unsigned char *buf; /* room for the largest result */
};

struct fork_run {
    const struct peer_args *a;
    struct peer_plan plan;
    struct peer_payload_ref ref;
    unsigned char *arg;  /* payload: the argument, stamped per job */
    uint64_t *items;     /* map: the J items */
    uint64_t chunk;      /* map: items per child */
    uint64_t njobs;      /* children to run: J, or chunks for map */
    struct child *kids;  /* N slots */
    pid_t parent;
};

/* ------------------------------------------------------------------ */
/* The child side                                                      */
/* ------------------------------------------------------------------ */

/* Writes all n bytes; a job's result may exceed the pipe buffer. */
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

/* Items of map chunk c: [c*chunk, min(J, (c+1)*chunk)). */
static uint64_t chunk_len(const struct fork_run *fr, uint64_t c)
{
    uint64_t first = c * fr->chunk, left = fr->a->jobs - first;
    return left < fr->chunk ? left : fr->chunk;
}

/* Runs job (or chunk) j and writes its result to fd. */
static int child_job(const struct fork_run *fr, uint64_t j, int fd)
{
    const struct peer_args *a = fr->a;

    if (a->workload == PEER_MAP) {
        uint64_t n = chunk_len(fr, j), *out = malloc(n * sizeof(*out));
        if (!out)
            return -ENOMEM;
        for (uint64_t k = 0; k < n; k++)
            out[k] = peer_trivial(fr->items[j * fr->chunk + k]);
        return write_all(fd, out, n * sizeof(*out));
    }
    if (a->workload == PEER_PAYLOAD && a->echo)
        return write_all(fd, fr->arg, a->payload);
    uint64_t res = a->workload == PEER_PAYLOAD
                       ? peer_checksum(fr->arg, a->payload)
                       : peer_u64_job(a->workload, peer_u64_arg(a, &fr->plan, j));
    return write_all(fd, &res, sizeof(res));
}

/* The child: never returns.  _exit, not exit, so the parent's stdio
 * buffers and atexit handlers are not run twice. */
static void child_main(const struct fork_run *fr, uint64_t j, int fd)
{
    /* Die with the parent: a killed benchmark leaves no orphans. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != fr->parent)
        _exit(1);
    _exit(child_job(fr, j, fd) ? 1 : 0);
}

/* ------------------------------------------------------------------ */
/* The parent side                                                     */
/* ------------------------------------------------------------------ */

static size_t result_bytes(const struct fork_run *fr, uint64_t j)
{
    const struct peer_args *a = fr->a;

    if (a->workload == PEER_MAP)
        return chunk_len(fr, j) * sizeof(uint64_t);
    if (a->workload == PEER_PAYLOAD && a->echo)
        return a->payload;
    return sizeof(uint64_t);
}

/* Forks the child of job j into free slot c.  Returns 0 or -errno. */
static int spawn(struct fork_run *fr, struct child *c, uint64_t j)
{
    int p[2];

    if (fr->a->workload == PEER_PAYLOAD)
        peer_payload_stamp(fr->arg, fr->a->payload, j);
    if (pipe2(p, O_CLOEXEC))
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(p[0]);
        close(p[1]);
        return err;
    }
    if (pid == 0) {
        close(p[0]);
        child_main(fr, j, p[1]);
    }
    /* Closed at once, so no later child inherits this write end and the
     * parent sees EOF exactly when this child is gone.  Only the read
     * end is non-blocking: the child writes large results in one go. */
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    *c = (struct child){ .pid = pid, .fd = p[0], .job = j,
                         .want = result_bytes(fr, j), .buf = c->buf };
    return 0;
}

/* Checks the result of the child in c against what job c->job must give. */
static bool result_ok(const struct fork_run *fr, const struct child *c)
{
    const struct peer_args *a = fr->a;
    uint64_t v;

    if (c->got != c->want)
        return false;
    if (a->workload == PEER_MAP) {
        for (uint64_t k = 0; k < c->want / 8; k++) {
            memcpy(&v, c->buf + k * 8, 8);
            if (!peer_u64_check(a, &fr->plan, c->job * fr->chunk + k, v))
                return false;
        }
        return true;
    }
    if (a->workload == PEER_PAYLOAD && a->echo)
        return peer_payload_echo_ok(&fr->ref, c->job, c->buf);
    memcpy(&v, c->buf, 8);
    if (a->workload == PEER_PAYLOAD)
        return v == peer_payload_expect(&fr->ref, c->job);
    return peer_u64_check(a, &fr->plan, c->job, v);
}

/* Reaps the child in c and checks its result; frees the slot.
 * Returns 0, or -EPROTO for a wrong result or a failed child. */
static int finish(const struct fork_run *fr, struct child *c)
{
    int status, rc = 0;

    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(c->fd);
    c->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "peer_fork: child of job %llu failed (status %#x)\n",
                (unsigned long long)c->job, status);
        rc = -EPROTO;
    } else if (!result_ok(fr, c)) {
        fprintf(stderr, "peer_fork: job %llu gave a wrong result\n",
                (unsigned long long)c->job);
        rc = -EPROTO;
    }
    return rc;
}

/* Reads what the child in c has sent so far.  Returns 1 at EOF (the
 * child is done), 0 when more may come, or -errno. */
static int drain(struct child *c)
{
    unsigned char scrap[64];

    for (;;) {
        /* Past want, read into scrap so a runaway child still reaches
         * EOF and result_ok() sees got != want. */
        bool room = c->got < c->want;
        ssize_t n = room ? read(c->fd, c->buf + c->got, c->want - c->got)
                         : read(c->fd, scrap, sizeof(scrap));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? 0 : -errno;
        if (n == 0)
            return 1;
        c->got += (size_t)n;
    }
}

/* Kills and reaps every child still running (error path). */
static void kill_all(struct fork_run *fr)
{
    for (int k = 0; k < fr->a->workers; k++) {
        struct child *c = &fr->kids[k];
        if (!c->pid)
            continue;
        kill(c->pid, SIGKILL);
        while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        close(c->fd);
        c->pid = 0;
    }
}

/* Waits for any running child to make progress and handles it.
 * Returns the number of children finished, or -errno. */
static int wait_some(struct fork_run *fr)
{
    struct pollfd pfd[fr->a->workers];
    int slot[fr->a->workers], n = 0, done = 0;

    for (int k = 0; k < fr->a->workers; k++) {
        if (fr->kids[k].pid) {
            pfd[n] = (struct pollfd){ .fd = fr->kids[k].fd, .events = POLLIN };
            slot[n++] = k;
        }
    }
    if (poll(pfd, (nfds_t)n, -1) < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        if (!pfd[i].revents)
            continue;
        struct child *c = &fr->kids[slot[i]];
        int rc = drain(c);
        if (rc == 1)
            rc = finish(fr, c);
        else if (rc == 0)
            continue;
        if (rc)
            return rc;
        done++;
    }
    return done;
}

/* Runs every job with at most N children alive.  Returns 0 or -errno. */
static int run_all(struct fork_run *fr)
{
    uint64_t next = 0, done = 0;
    int rc = 0;

    while (done < fr->njobs && rc >= 0) {
        for (int k = 0; k < fr->a->workers && next < fr->njobs && rc >= 0; k++) {
            if (!fr->kids[k].pid)
                rc = spawn(fr, &fr->kids[k], next++);
        }
        if (rc >= 0)
            rc = wait_some(fr);
        if (rc > 0)
            done += (uint64_t)rc;
    }
    if (rc < 0)
        kill_all(fr);
    return rc < 0 ? rc : 0;
}

/* One job from fork to reaped child: a latency round trip. */
static int run_one(struct fork_run *fr, uint64_t j)
{
    struct child *c = &fr->kids[0];
    int rc = spawn(fr, c, j);

    while (rc == 0) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            rc = -errno;
        else
            rc = drain(c);
    }
    if (rc == 1)
        return finish(fr, c);
    kill_all(fr);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Set-up and the workloads                                            */
/* ------------------------------------------------------------------ */

static int setup(struct fork_run *fr, const struct peer_args *a)
{
    size_t room = sizeof(uint64_t);

    *fr = (struct fork_run){ .a = a, .njobs = a->jobs, .parent = getpid() };
    if (peer_plan_init(a, &fr->plan))
        return -ENOMEM;
    if (a->workload == PEER_MAP) {
        uint64_t c = a->jobs / (4 * (uint64_t)a->workers);
        fr->chunk = c ? c : 1;
        fr->njobs = (a->jobs + fr->chunk - 1) / fr->chunk;
        room = fr->chunk * sizeof(uint64_t);
        if (!(fr->items = malloc(a->jobs * sizeof(uint64_t))))
            return -ENOMEM;
        for (uint64_t i = 0; i < a->jobs; i++)
            fr->items[i] = i;
    }
    if (a->workload == PEER_PAYLOAD) {
        room = a->echo ? a->payload : room;
        if (!(fr->arg = malloc(a->payload)))
            return -ENOMEM;
        peer_payload_fill(fr->arg, a->payload);
        /* The reference keeps its own pristine copy: fr->arg is stamped. */
        unsigned char *tmpl = malloc(a->payload);
        if (!tmpl)
            return -ENOMEM;
        memcpy(tmpl, fr->arg, a->payload);
        peer_payload_ref_init(&fr->ref, tmpl, a->payload);
    }
    if (!(fr->kids = calloc((size_t)a->workers, sizeof(*fr->kids))))
        return -ENOMEM;
    for (int k = 0; k < a->workers; k++)
        if (!(fr->kids[k].buf = malloc(room)))
            return -ENOMEM;
    return 0;
}

static void teardown(struct fork_run *fr)
{
    if (fr->kids) {
        kill_all(fr);
        for (int k = 0; k < fr->a->workers; k++)
            free(fr->kids[k].buf);
    }
    free(fr->kids);
    free(fr->items);
    free(fr->arg);
    free((void *)fr->ref.tmpl);
    peer_plan_free(&fr->plan);
}

static int run_batch(const struct peer_args *a, struct peer_result *r)
{
    struct fork_run fr;
    int rc = setup(&fr, a);

    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = run_all(&fr);
        peer_result_wall(r, a, &fr.plan, peer_now_ns() - t0);
    }
    teardown(&fr);
    return rc ? peer_fail("running the jobs", rc) : 0;
}

static int run_latency(const struct peer_args *a, struct peer_result *r)
{
    struct fork_run fr;
    uint64_t *rtt = malloc(a->jobs * sizeof(*rtt)), first = 0;
    int rc = rtt ? setup(&fr, a) : -ENOMEM;

    if (rc == 0) {
        uint64_t t0 = peer_now_ns();
        rc = run_one(&fr, 0); /* the cold first call */
        first = peer_now_ns() - t0;
    }
    for (uint64_t i = 0; i < a->jobs && rc == 0; i++) {
        uint64_t t0 = peer_now_ns();
        rc = run_one(&fr, i);
        rtt[i] = peer_now_ns() - t0;
    }
    if (rc == 0)
        peer_result_latency(r, rtt, a->jobs, first);
    if (rtt)
        teardown(&fr);
    free(rtt);
    return rc ? peer_fail("running the jobs", rc) : 0;
}

static const struct peer_variant variants[] = {
    { PEER_OVERHEAD, "fork-pipe", run_batch },
    { PEER_MAP, "fork-per-chunk", run_batch },
    { PEER_LATENCY, "fork-pipe", run_latency },
    { PEER_PAYLOAD, "fork-pipe", run_batch },
    { PEER_SCALING, "fork-pipe", run_batch },
    { PEER_IMBALANCE, "fork-pipe", run_batch },
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
    peer_result_init(&r, &a, "fork", v->name);
    snprintf(version, sizeof(version), "glibc %s", gnu_get_libc_version());
    r.version = version;
    rc = v->run(&a, &r);
    if (rc)
        return rc;
    return peer_result_print(&r) ? PEER_EXIT_FAIL : 0;
}
