/*
 * slurm.c - ppserver fleets inside a Slurm job: slurm.h.
 *
 * Why a step and not ssh or a daemon per node: inside an allocation the
 * scheduler owns the nodes.  A step is accounted, confined to the job's
 * CPUs, signalled by scancel, and ends with the job; pp then behaves like
 * any well-mannered MPI program.
 */
#define _GNU_SOURCE
#include "slurm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "../shm/futex.h"
#include "hostlist.h"
#include "loop.h"
#include "pp.h"

#define STOP_MS 10000      /* each way of ending the step gets this long */
#define SCANCEL_MS 5000    /* then scancel of the step, waited this long */
#define LINE_MAX_LEN 512   /* an output line of srun's longer than this is cut */

extern char **environ;

struct pipe_in {
    int fd;                       /* read end, -1 once at EOF */
    struct pp_watch *w;
    char buf[LINE_MAX_LEN];
    size_t len;                   /* a partial line */
};

struct pp_slurm {
    pid_t pid;                    /* srun; 0 once reaped */
    int status;                   /* its wait status, once reaped */
    struct pipe_in out, err;      /* its stdout (announcements), stderr */
    unsigned want, have;          /* nodes in the job; announced */
    char step[48];                /* "JOB.STEP" from an announcement, for scancel */
    char tail[PP_ERRMSG_MAX];     /* srun's last stderr line */
    pp__slurm_add_fn *add;
    void *ctx;
};

static uint64_t now_ms(void)
{
    return pp_now_ns() / 1000000u;
}

/* A program name as execvp would find it, resolved before fork (the
 * child only calls async-signal-safe functions). */
static int find_program(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        if ((size_t)snprintf(out, cap, "%s", name) >= cap)
            return -ENAMETOOLONG;
        return access(out, X_OK) == 0 ? 0 : -errno;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, p, name) < cap &&
            access(out, X_OK) == 0)
            return 0;
        p += n + (c != NULL);
    }
    return -ENOENT;
}

/* "ppserver: slurm node HOST:PORT step J.S" (ppserver --slurm, net/ppserver.c). */
static void on_line(struct pp_slurm *sl, struct pipe_in *in, char *line)
{
    if (in == &sl->err) {
        snprintf(sl->tail, sizeof(sl->tail), "%s", line);
        dprintf(STDERR_FILENO, "%s\n", line); /* what srun itself would print */
        return;
    }
    char hp[PP_NODE_NAME_MAX], step[sizeof(sl->step)];
    if (sscanf(line, "ppserver: slurm node %63s step %47s", hp, step) != 2)
        return; /* anything else on a task's stdout is not ours to read */
    if (!sl->step[0])
        snprintf(sl->step, sizeof(sl->step), "%s", step);
    int r = sl->add(sl->ctx, hp);
    if (r == 0)
        sl->have++;
    else if (r != -EEXIST)
        dprintf(STDERR_FILENO, "pp: slurm: node %s not added: %s\n", hp, strerror(-r));
}

/* Reads what is there; complete lines go to on_line.  False at EOF. */
static bool drain(struct pp_slurm *sl, struct pipe_in *in)
{
    for (;;) {
        if (in->fd < 0)
            return false;
        ssize_t n = read(in->fd, in->buf + in->len, sizeof(in->buf) - 1 - in->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return true; /* EAGAIN */
        if (n == 0) {
            if (in->len) { /* a last line without its newline */
                in->buf[in->len] = '\0';
                in->len = 0;
                on_line(sl, in, in->buf);
            }
            if (in->w)
                pp_watch_close(in->w);
            in->w = NULL;
            close(in->fd);
            in->fd = -1;
            return false;
        }
        in->len += (size_t)n;
        char *start = in->buf, *nl;
        while ((nl = memchr(start, '\n', in->len - (size_t)(start - in->buf)))) {
            *nl = '\0';
            on_line(sl, in, start);
            start = nl + 1;
        }
        size_t rest = in->len - (size_t)(start - in->buf);
        if (rest == sizeof(in->buf) - 1) { /* a line too long: cut */
            in->buf[rest] = '\0';
            on_line(sl, in, in->buf);
            rest = 0;
        }
        memmove(in->buf, start, rest);
        in->len = rest;
    }
}

static bool reap(struct pp_slurm *sl, bool block)
{
    if (!sl->pid)
        return true;
    int st;
    pid_t p;
    while ((p = waitpid(sl->pid, &st, block ? 0 : WNOHANG)) < 0 && errno == EINTR)
        ;
    if (p == 0)
        return false;
    sl->status = p > 0 ? st : 0; /* ECHILD: the host reaped it (waitpid(-1)) */
    sl->pid = 0;
    return true;
}

static void describe_exit(const struct pp_slurm *sl, char *err, size_t errlen)
{
    char how[48];
    if (WIFSIGNALED(sl->status))
        snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(sl->status));
    else
        snprintf(how, sizeof(how), "exit status %d", WEXITSTATUS(sl->status));
    snprintf(err, errlen, "slurm: srun ended (%s) with %u of %u ppservers started%s%s", how,
             sl->have, sl->want, sl->tail[0] ? ": " : "", sl->tail);
}

/* fork + exec of srun with its output on two pipes: only async-signal-safe
 * calls between the two. */
static int spawn(struct pp_slurm *sl, const char *srun, char *const argv[], char *const envp[])
{
    int o[2], e[2], null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        return -errno;
    if (pipe2(o, O_CLOEXEC) < 0) {
        close(null);
        return -errno;
    }
    if (pipe2(e, O_CLOEXEC) < 0) {
        int r = -errno;
        close(null), close(o[0]), close(o[1]);
        return r;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        /* Its own process group: a Ctrl-C of the terminal reaches the
         * program, whose end (this thread's) then ends srun. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL); /* the net thread blocks all */
        if (dup2(null, 0) < 0 || dup2(o[1], 1) < 0 || dup2(e[1], 2) < 0)
            _exit(127);
        execve(srun, argv, envp);
        _exit(127);
    }
    int r = pid < 0 ? -errno : 0;
    close(null), close(o[1]), close(e[1]);
    if (r < 0) {
        close(o[0]), close(e[0]);
        return r;
    }
    sl->pid = pid;
    sl->out.fd = o[0];
    sl->err.fd = e[0];
    fcntl(o[0], F_SETFL, O_NONBLOCK);
    fcntl(e[0], F_SETFL, O_NONBLOCK);
    return 0;
}

int pp__slurm_start(struct pp_slurm **ret, const char *secret, size_t secret_len,
                    unsigned wait_ms, pp__slurm_add_fn *add, void *ctx, char *err,
                    size_t errlen)
{
    const char *job = getenv("SLURM_JOB_ID");
    const char *nn = getenv("SLURM_JOB_NUM_NODES");
    if (!nn)
        nn = getenv("SLURM_NNODES");
    if (!job || !*job || !nn) {
        snprintf(err, errlen, "ppservers \"slurm\": not inside a Slurm job (SLURM_JOB_ID "
                              "is not set): run the program under sbatch or salloc");
        return -EINVAL;
    }
    char *end;
    unsigned long nodes = strtoul(nn, &end, 10);
    if (*end || nodes == 0 || nodes >= PP_MAX_NODES) {
        snprintf(err, errlen, "slurm: the job has %s nodes; pp takes 1..%u", nn,
                 PP_MAX_NODES - 1);
        return nodes >= PP_MAX_NODES ? -E2BIG : -EINVAL;
    }
    const char *srun_name = getenv("PP_SRUN") ? getenv("PP_SRUN") : "srun";
    const char *ppserver = getenv("PP_PPSERVER") ? getenv("PP_PPSERVER") : "ppserver";
    char srun[PATH_MAX];
    int r = find_program(srun_name, srun, sizeof(srun));
    if (r < 0) {
        snprintf(err, errlen, "slurm: cannot run %s: %s", srun_name, strerror(-r));
        return r;
    }
    struct pp_slurm *sl = calloc(1, sizeof(*sl));
    if (!sl)
        return -ENOMEM;
    sl->out.fd = sl->err.fd = -1;
    sl->want = (unsigned)nodes;
    sl->add = add;
    sl->ctx = ctx;

    /* The environment: ours, without any PP_SECRET or PP_AGENT, plus the
     * secret (srun passes its environment to the tasks: --export=ALL). */
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof(*envp));
    size_t slen = sizeof("PP_SECRET=") + secret_len;
    char *sec = malloc(slen);
    if (!envp || !sec) {
        free(envp), free(sec), free(sl);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "PP_SECRET=", 10) && strncmp(environ[i], "PP_AGENT=", 9))
            envp[k++] = environ[i];
    memcpy(sec, "PP_SECRET=", 10);
    memcpy(sec + 10, secret, secret_len);
    sec[10 + secret_len] = '\0';
    envp[k++] = sec;
    envp[k] = NULL;
    char nodes_arg[32], tasks_arg[32];
    snprintf(nodes_arg, sizeof(nodes_arg), "--nodes=%lu", nodes);
    snprintf(tasks_arg, sizeof(tasks_arg), "--ntasks=%lu", nodes);
    char *argv[] = { srun, "--job-name=ppserver", nodes_arg, tasks_arg,
                     "--ntasks-per-node=1", "--whole", "--overlap", "--kill-on-bad-exit=0",
                     (char *)ppserver, "--slurm", "-i", "0.0.0.0", "-p", "0", NULL };
    r = spawn(sl, srun, argv, envp);
    sodium_memzero(sec, slen);
    free(sec);
    free(envp);
    if (r < 0) {
        snprintf(err, errlen, "slurm: cannot start srun: %s", strerror(-r));
        free(sl);
        return r;
    }

    /* Every node says it listens, or srun ends, or the wait does. */
    uint64_t deadline = now_ms() + wait_ms;
    while (sl->have < sl->want) {
        struct pollfd p[2] = { { sl->out.fd, POLLIN, 0 }, { sl->err.fd, POLLIN, 0 } };
        uint64_t t = now_ms();
        if (t >= deadline)
            break;
        if (sl->out.fd < 0 && sl->err.fd < 0) { /* both at EOF: srun is ending */
            reap(sl, true);
            break;
        }
        int pr = poll(p, 2, (int)(deadline - t > 100 ? 100 : deadline - t));
        if (pr < 0 && errno != EINTR)
            break;
        drain(sl, &sl->out);
        drain(sl, &sl->err);
        if (reap(sl, false)) {
            drain(sl, &sl->out); /* what it said before it went */
            drain(sl, &sl->err);
            break;
        }
    }
    if (sl->have == sl->want || (sl->have && sl->pid)) {
        *ret = sl; /* all there; or some, and the rest may come (the watch) */
        return 0;
    }
    if (!sl->pid) {
        describe_exit(sl, err, errlen);
        r = -ECHILD;
    } else {
        snprintf(err, errlen, "slurm: no ppserver of the step listened within %u ms%s%s",
                 wait_ms, sl->tail[0] ? "; srun said: " : "", sl->tail);
        r = -ETIMEDOUT;
    }
    pp__slurm_stop(sl);
    return r;
}

static void on_out(void *ctx)
{
    struct pp_slurm *sl = ctx;
    drain(sl, &sl->out);
}

static void on_err(void *ctx)
{
    struct pp_slurm *sl = ctx;
    drain(sl, &sl->err);
}

int pp__slurm_watch(struct pp_slurm *sl, struct pp_loop *loop)
{
    int r = 0;
    if (sl->out.fd >= 0)
        r = pp_loop_watch(loop, sl->out.fd, on_out, sl, &sl->out.w);
    if (r == 0 && sl->err.fd >= 0)
        r = pp_loop_watch(loop, sl->err.fd, on_err, sl, &sl->err.w);
    return r;
}

static void close_in(struct pipe_in *in)
{
    if (in->w)
        pp_watch_close(in->w);
    in->w = NULL;
    if (in->fd >= 0)
        close(in->fd);
    in->fd = -1;
}

/* scancel [--signal=SIG] JOB.STEP: false if it could not be run. */
static bool scancel(const char *step, const char *sig)
{
    char prog[PATH_MAX];
    if (!step[0] || strchr(step, 'n') || find_program("scancel", prog, sizeof(prog)) < 0)
        return false; /* "none.none": not a step */
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0)
            dup2(null, 0), dup2(null, 1);
        if (sig)
            execl(prog, prog, "--quiet", sig, step, (char *)NULL);
        else
            execl(prog, prog, "--quiet", step, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return false;
    uint64_t deadline = now_ms() + SCANCEL_MS;
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        usleep(10000);
    }
    return true;
}

/* Waits up to ms for srun to end, keeping its pipes drained. */
static bool wait_srun(struct pp_slurm *sl, unsigned ms)
{
    uint64_t deadline = now_ms() + ms;
    while (!reap(sl, false)) {
        if (now_ms() >= deadline)
            return false;
        struct pollfd p[2] = { { sl->out.fd, POLLIN, 0 }, { sl->err.fd, POLLIN, 0 } };
        poll(p, 2, 20);
        drain(sl, &sl->out);
        drain(sl, &sl->err);
    }
    return true;
}

void pp__slurm_stop(struct pp_slurm *sl)
{
    if (!sl)
        return;
    /* SIGTERM to each ppserver through Slurm (they stop in order and
     * exit 0, and srun with them); a SIGTERM to srun itself would have
     * slurmstepd SIGKILL the tasks at once: that is the fallback, then
     * SIGKILL and a plain scancel of the step. */
    if (sl->pid && !(scancel(sl->step, "--signal=TERM") && wait_srun(sl, STOP_MS))) {
        kill(sl->pid, SIGTERM);
        if (!wait_srun(sl, STOP_MS)) {
            kill(sl->pid, SIGKILL);
            reap(sl, true);
            scancel(sl->step, NULL);
        }
    }
    drain(sl, &sl->err);
    close_in(&sl->out);
    close_in(&sl->err);
    free(sl);
}

void pp__slurm_forget(struct pp_slurm *sl)
{
    if (!sl)
        return;
    sl->out.w = sl->err.w = NULL; /* freed with the parent's loop copy */
    close_in(&sl->out);
    close_in(&sl->err);
    free(sl);
}

struct nodelist_ctx {
    uint16_t port;
    pp__slurm_add_fn *add;
    void *ctx;
};

static int nodelist_one(void *ctx, const char *host)
{
    struct nodelist_ctx *c = ctx;
    char hp[PP_NODE_NAME_MAX];
    if ((size_t)snprintf(hp, sizeof(hp), "%s:%u", host, c->port) >= sizeof(hp))
        return -ENAMETOOLONG;
    int r = c->add(c->ctx, hp);
    return r == -EEXIST ? 0 : r;
}

int pp__slurm_nodelist(uint16_t port, unsigned max, pp__slurm_add_fn *add, void *ctx,
                       char *err, size_t errlen)
{
    const char *list = getenv("SLURM_JOB_NODELIST");
    if (!list)
        list = getenv("SLURM_NODELIST");
    if (!list || !*list) {
        snprintf(err, errlen, "ppservers \"slurm-nodes\": SLURM_JOB_NODELIST is not set "
                              "(not inside a Slurm job)");
        return -EINVAL;
    }
    struct nodelist_ctx c = { port, add, ctx };
    int r = pp_hostlist_expand(list, nodelist_one, &c, max);
    if (r < 0)
        snprintf(err, errlen, "slurm-nodes: SLURM_JOB_NODELIST=\"%.80s\": %s", list,
                 r == -E2BIG ? "more nodes than pp takes, or a name too long"
                 : r == -EINVAL ? "not a host list" : strerror(-r));
    return r;
}
