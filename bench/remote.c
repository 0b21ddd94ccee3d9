/*
 * remote.c - the remote workloads: pp with one ppserver node on loopback,
 * against peers that move the same jobs over loopback TCP (peer_tcp, the
 * floor; peer_zmq_tcp; peer_mpi over its TCP transport).
 *
 *   remote-overhead  trivial jobs, pipelined: throughput (ns/job)
 *   remote-latency   one job in flight: round-trip p50/p99/p99.9
 *   remote-payload   echo of 1 KiB .. 64 MiB: GB/s each way (B*J/time)
 *   remote-stream    one job on the node sends N 8-byte values to a
 *                    collector on the client (pp_job_send, MESSAGE
 *                    frames): ns/value, against a child writing the same
 *                    values into loopback TCP (peer_stream tcp-*)
 *   remote-cache     pp only: first call of a never-seen function on a
 *                    live session against a repeat, and a new session's
 *                    time from pp_server_new to its first result with a
 *                    cold node cache (fresh --cache-dir) or a warm one
 *
 * The client is pp_server_new with ncpus = 0 and the node in ppservers,
 * so every job goes to the node.  Each measurement starts its own
 * ppserver (PP_PPSERVER, else <ppbench's directory>/../net/ppserver) as
 *   ppserver -c CONF -i 127.0.0.1 -p 0 -w N --cache-dir DIR
 * with CONF a private file holding a random secret (removed as soon as
 * the node listens).  ppbench reads the port it picked from its
 * "ppserver: listening on 127.0.0.1:PORT" line, waits until
 * pp_get_active_nodes shows the node up, and stops it with SIGTERM
 * (SIGKILL after 5 s) and waitpid on every path; started with
 * PR_SET_PDEATHSIG, it also ends when ppbench is killed.  Everything it
 * writes lives in one mkdtemp directory, removed afterwards.
 *
 * With --nodes (remote-overhead only) no ppserver is started: the
 * submit, template and window64 rows are measured on the running nodes
 * given, the first alone and then all of them, each through a fresh
 * client; the balance row and the peers' rows are skipped (see
 * pp_remote_overhead_given).
 *
 * Without a ppserver, or when the node does not come up, the pp rows are
 * lines with no figures and the reason in "skipped"; the first such
 * reason holds for the rest of the run, so a broken node costs one
 * timeout, not one per row.  Anything that goes wrong once a node is up
 * is a failure like any other workload's (-errno, ppbench exits 1).
 */
#define _GNU_SOURCE
#include "bench.h"
#include "peers/peer_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODE_LISTEN_MS 10000 /* ppserver must say it listens within this */
#define NODE_UP_MS 10000     /* and the node be up for the client within this */
#define NODE_STOP_MS 5000    /* SIGTERM, then SIGKILL after this */
#define JOB_WAIT_MS 30000    /* a job with no result after this failed */
#define WHY_MAX 200          /* = sizeof(bench_result.skipped) */

static const char listen_line[] = "ppserver: listening on ";

/* The first reason a node could not be used; later rows reuse it. */
static char skip_reason[WHY_MAX];

static int node_workers(const struct bench_opts *o)
{
    return o->workers > 0 ? o->workers : 1;
}

/* ================================================================ */
/* The node's environment: ppserver's path, a directory, a secret   */
/* ================================================================ */

struct remote_env {
    char ppserver[PATH_MAX];
    char dir[64];          /* mkdtemp: ppserver.conf and cache-N/ */
    char conf[96];
    char secret[65];       /* 32 random bytes in hex */
    unsigned ncache;       /* cache directories made so far */
};

/* Where ppserver is: $PP_PPSERVER, else next to ppbench's build dir. */
static void find_ppserver(const struct bench_opts *o, char *out, size_t len)
{
    const char *env = getenv("PP_PPSERVER");
    char dir[PATH_MAX + 16], real[PATH_MAX];

    if (env && env[0]) {
        snprintf(out, len, "%s", env);
        return;
    }
    snprintf(dir, sizeof(dir), "%s/../net", o->self_dir);
    snprintf(out, len, "%.4000s/ppserver", realpath(dir, real) ? real : dir);
}

/* A fresh private directory and a new secret.  Returns 0, or -errno
 * with the reason in why. */
static int env_init(const struct bench_opts *o, struct remote_env *env, char *why)
{
    unsigned char raw[32];

    memset(env, 0, sizeof(*env));
    find_ppserver(o, env->ppserver, sizeof(env->ppserver));
    if (access(env->ppserver, X_OK) != 0) {
        snprintf(why, WHY_MAX, "ppserver not found at %.170s", env->ppserver);
        return -ENOENT;
    }
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        snprintf(why, WHY_MAX, "getrandom: %s", strerror(errno));
        return -EIO; /* (a short read leaves errno alone) */
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(env->secret + 2 * i, 3, "%02x", raw[i]);
    snprintf(env->dir, sizeof(env->dir), "/tmp/ppbench-remote.XXXXXX");
    if (!mkdtemp(env->dir)) {
        int err = errno;
        env->dir[0] = '\0';
        snprintf(why, WHY_MAX, "mkdtemp: %s", strerror(err));
        return -err;
    }
    snprintf(env->conf, sizeof(env->conf), "%s/ppserver.conf", env->dir);
    return 0;
}

/*
 * Writes the config file (mode 0600) with the secret.  It exists only
 * while a ppserver starts: node_start removes it once the node listens,
 * so not even a ppbench killed mid-run leaves the secret behind.
 * Returns 0, or -errno with the reason in why.
 */
static int env_write_conf(const struct remote_env *env, char *why)
{
    char text[128];
    int n = snprintf(text, sizeof(text), "[general]\nsecret = %s\n", env->secret);
    int fd = open(env->conf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && write(fd, text, (size_t)n) == n;
    int err = ok ? 0 : (errno ? errno : EIO); /* a short write sets no errno */
    if (fd >= 0)
        close(fd);
    if (!ok) {
        if (fd >= 0)
            unlink(env->conf);
        snprintf(why, WHY_MAX, "writing %s: %s", env->conf, strerror(err));
        return -err;
    }
    return 0;
}

/* A new, empty cache directory for a node.  Returns 0 or -errno. */
static int env_cache(struct remote_env *env, char *out, size_t len, char *why)
{
    snprintf(out, len, "%s/cache-%u", env->dir, env->ncache++);
    if (mkdir(out, 0700) == 0)
        return 0;
    int err = errno;
    snprintf(why, WHY_MAX, "mkdir %.120s: %s", out, strerror(err));
    return -err;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    remove(path);
    return 0;
}

/* Removes the directory with everything the nodes wrote into it. */
static void env_free(struct remote_env *env)
{
    if (env->dir[0])
        nftw(env->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    env->dir[0] = '\0';
}

/* ================================================================ */
/* The ppserver process                                             */
/* ================================================================ */

struct remote_node {
    pid_t pid;             /* 0 = not running (reaped) */
    int err_fd;            /* its standard error; -1 = closed */
    pthread_t drain;       /* reads err_fd once it listens */
    bool draining;
    atomic_bool stop;      /* tells drain to end */
    pthread_mutex_t lock;  /* guards last */
    char last[160];        /* the last line it wrote (for reasons) */
    char addr[64];         /* "127.0.0.1:PORT" */
    const char *list[2];   /* { addr, NULL }: the client's ppservers */
};

static void node_set_last(struct remote_node *n, const char *line)
{
    if (!line[0])
        return;
    pthread_mutex_lock(&n->lock);
    snprintf(n->last, sizeof(n->last), "%s", line);
    pthread_mutex_unlock(&n->lock);
}

static void node_get_last(struct remote_node *n, char *out, size_t len)
{
    pthread_mutex_lock(&n->lock);
    snprintf(out, len, "%s", n->last);
    pthread_mutex_unlock(&n->lock);
}

/*
 * Reads what ppserver writes after its listening line and throws it
 * away, keeping the last line: a full pipe would block its logging.
 * Polls so that node_stop can end it even while ppserver's own children
 * still hold the pipe open.
 */
static void *drain_main(void *arg)
{
    struct remote_node *n = arg;
    char buf[4096], line[160];
    size_t have = 0;

    while (!atomic_load_explicit(&n->stop, memory_order_relaxed)) {
        struct pollfd p = { n->err_fd, POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t k = read(n->err_fd, buf, sizeof(buf));
        if (k <= 0)
            break;
        for (ssize_t i = 0; i < k; i++) {
            if (buf[i] == '\n' || have == sizeof(line) - 1) {
                line[have] = '\0';
                node_set_last(n, line);
                have = 0;
            } else {
                line[have++] = buf[i];
            }
        }
    }
    return NULL;
}

/* Parses "ppserver: listening on 127.0.0.1:PORT" into n->addr. */
static bool parse_listening(struct remote_node *n, const char *line)
{
    const char *a = line + sizeof(listen_line) - 1;
    char *end;

    if (strncmp(line, listen_line, sizeof(listen_line) - 1) != 0 ||
        strncmp(a, "127.0.0.1:", 10) != 0)
        return false;
    unsigned long port = strtoul(a + 10, &end, 10);
    if (end == a + 10 || *end || port == 0 || port > 65535)
        return false;
    snprintf(n->addr, sizeof(n->addr), "127.0.0.1:%lu", port);
    return true;
}

/* After ppserver closed its standard error before listening: how it
 * ended, if it did within a second (node_stop deals with it otherwise). */
static void exit_text(struct remote_node *n, char *out, size_t len)
{
    int st;

    snprintf(out, len, "closed its standard error");
    for (int ms = 0; ms < 1000; ms += 5) {
        if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
            n->pid = 0;
            if (WIFEXITED(st))
                snprintf(out, len, "exit %d", WEXITSTATUS(st));
            else if (WIFSIGNALED(st))
                snprintf(out, len, "killed by signal %d", WTERMSIG(st));
            return;
        }
        usleep(5000);
    }
}

/* Reads ppserver's stderr until its listening line (NODE_LISTEN_MS at
 * most); the lines before it (warnings) are kept as its last words.
 * Returns 0, or -errno with the reason in why. */
static int wait_listening(struct remote_node *n, char *why)
{
    char buf[1024], line[160], last[160], how[48];
    size_t have = 0;
    double end = bench_now_ns() + NODE_LISTEN_MS * 1e6;

    for (;;) {
        int left = (int)((end - bench_now_ns()) / 1e6);
        struct pollfd p = { n->err_fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) == 0) {
            node_get_last(n, last, sizeof(last));
            snprintf(why, WHY_MAX, "ppserver did not say it was listening within %d s%s%.120s",
                     NODE_LISTEN_MS / 1000, last[0] ? "; it said: " : "", last);
            return -ETIMEDOUT;
        }
        ssize_t k = read(n->err_fd, buf, sizeof(buf));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            exit_text(n, how, sizeof(how));
            node_get_last(n, last, sizeof(last));
            snprintf(why, WHY_MAX, "ppserver ended before listening (%s)%s%.100s", how,
                     last[0] ? ": " : "", last);
            return -ECHILD;
        }
        for (ssize_t i = 0; i < k; i++) {
            if (buf[i] != '\n' && have < sizeof(line) - 1) {
                line[have++] = buf[i];
                continue;
            }
            line[have] = '\0';
            have = 0;
            if (parse_listening(n, line))
                return 0;
            node_set_last(n, line);
        }
    }
}

/* Starts ppserver with `workers` workers on cache directory cache and
 * waits for its listening line.  n is from node_init, or node_stop after
 * an earlier start.  Returns 0, or -errno with the reason in why;
 * node_stop() cleans up either way. */
static int node_start(const struct remote_env *env, const char *cache, int workers,
                      struct remote_node *n, char *why)
{
    char w[16];
    int fds[2];
    pid_t parent = getpid();

    n->pid = 0;
    n->err_fd = -1;
    n->last[0] = n->addr[0] = '\0';
    snprintf(w, sizeof(w), "%d", workers);
    const char *argv[] = { env->ppserver, "-c", env->conf, "-i", "127.0.0.1", "-p", "0",
                           "-w", w, "--cache-dir", cache, NULL };
    int r = env_write_conf(env, why);
    if (r < 0)
        return r;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || pipe2(fds, O_CLOEXEC)) {
        int err = errno;
        snprintf(why, WHY_MAX, "starting ppserver: %s", strerror(err));
        if (null >= 0)
            close(null);
        unlink(env->conf);
        return -err;
    }
    fflush(NULL);
    n->pid = fork();
    if (n->pid == 0) {
        /* Only async-signal-safe calls until exec: the parent may have
         * threads.  The node dies with ppbench, even killed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        dup2(null, 0);
        dup2(null, 1);
        dup2(fds[1], 2);
        execv(env->ppserver, (char *const *)argv);
        _exit(127);
    }
    int err = n->pid < 0 ? errno : 0;
    close(null);
    close(fds[1]);
    n->err_fd = fds[0];
    if (n->pid < 0) {
        n->pid = 0;
        unlink(env->conf);
        snprintf(why, WHY_MAX, "fork: %s", strerror(err));
        return -err;
    }
    r = wait_listening(n, why);
    unlink(env->conf); /* read by now, or never to be */
    if (r < 0)
        return r;
    n->list[0] = n->addr;
    n->list[1] = NULL;
    atomic_store_explicit(&n->stop, false, memory_order_relaxed);
    if ((err = pthread_create(&n->drain, NULL, drain_main, n)) != 0) {
        snprintf(why, WHY_MAX, "pthread_create: %s", strerror(err));
        return -err;
    }
    n->draining = true;
    return 0;
}

/* Stops ppserver (SIGTERM, SIGKILL after NODE_STOP_MS), reaps it, ends
 * the drain and closes the pipe.  Safe on a node that never started. */
static void node_stop(struct remote_node *n)
{
    if (n->pid > 0) {
        int st;
        pid_t got = 0;
        kill(n->pid, SIGTERM);
        for (int ms = 0; ms < NODE_STOP_MS && got == 0; ms += 5) {
            got = waitpid(n->pid, &st, WNOHANG);
            if (got == 0)
                usleep(5000);
        }
        if (got == 0) {
            bench_progress("ppserver (pid %d) did not stop within %d s of SIGTERM: "
                           "killed", (int)n->pid, NODE_STOP_MS / 1000);
            kill(n->pid, SIGKILL);
            while (waitpid(n->pid, &st, 0) < 0 && errno == EINTR)
                ;
        }
        n->pid = 0;
    }
    if (n->draining) {
        atomic_store_explicit(&n->stop, true, memory_order_relaxed);
        pthread_join(n->drain, NULL);
        n->draining = false;
    }
    if (n->err_fd >= 0)
        close(n->err_fd);
    n->err_fd = -1;
}

/* A node not started; node_start may then be called any number of
 * times, each after node_stop. */
static void node_init(struct remote_node *n)
{
    memset(n, 0, sizeof(*n));
    n->err_fd = -1;
    n->lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

/* ================================================================ */
/* The client session                                               */
/* ================================================================ */

/* Waits for t and checks it returned peer_trivial(x).  Returns 0, or
 * -errno with what went wrong in msg. */
static int task_check(pp_task *t, uint64_t x, char *msg, size_t len)
{
    const void *d;
    size_t n;
    int r = pp_task_wait(t, JOB_WAIT_MS);

    if (r < 0) {
        snprintf(msg, len, "job %llu: %s", (unsigned long long)x,
                 r == -ETIMEDOUT ? "no result within 30 s" : strerror(-r));
        return r;
    }
    r = pp_task_result(t, &d, &n);
    if (r < 0) {
        const char *e = pp_task_error(t);
        snprintf(msg, len, "job %llu failed: %s", (unsigned long long)x, e ? e : strerror(-r));
        return r;
    }
    if (n != sizeof(uint64_t) || *(const uint64_t *)d != peer_trivial(x)) {
        snprintf(msg, len, "job %llu: wrong result", (unsigned long long)x);
        return -EIO;
    }
    return 0;
}

/* One trivial job through the node, checked.  Returns 0 or -errno with
 * the reason in msg. */
static int one_job(pp_server *s, uint64_t x, char *msg, size_t len)
{
    pp_task *t;
    int r = pp_submit(s, job_trivial, &x, sizeof(x), NULL, &t);

    if (r < 0) {
        snprintf(msg, len, "pp_submit: %s", strerror(-r));
        return r;
    }
    r = task_check(t, x, msg, len);
    pp_task_release(t);
    return r;
}

/* A client with no local worker whose only node is n.  Returns 0 or
 * -errno with the reason in why. */
static int session_new(const struct remote_env *env, const struct remote_node *n, bool busy,
                       pp_server **ret, char *why)
{
    struct pp_config c;

    pp_config_init(&c);
    c.ncpus = 0;
    c.busy_poll = busy;
    c.ppservers = n->list;
    c.secret = env->secret;
    c.node_wait_ms = NODE_UP_MS;
    int r = pp_server_new(&c, ret);
    if (r < 0)
        snprintf(why, WHY_MAX, "pp_server_new (ncpus 0, node %s): %s", n->addr, strerror(-r));
    return r;
}

static const char *state_name(enum pp_node_state s)
{
    switch (s) {
    case PP_NODE_CONNECTING:
        return "still connecting";
    case PP_NODE_UP:
        return "up";
    case PP_NODE_DOWN:
        return "down";
    case PP_NODE_REFUSED:
        return "refused";
    case PP_NODE_GONE:
        return "gone (discovered, then lost)";
    }
    return "in an unknown state";
}

/* Polls pp_get_active_nodes until the node is PP_NODE_UP (NODE_UP_MS at
 * most).  Returns 0, or -errno with the reason in why. */
static int session_wait_up(pp_server *s, struct remote_node *n, char *why)
{
    struct pp_node_info info;
    double end = bench_now_ns() + NODE_UP_MS * 1e6;
    char last[160], err[PP_ERRMSG_MAX + 32] = "";
    int k;

    memset(&info, 0, sizeof(info));
    for (;;) {
        k = pp_get_active_nodes(s, &info, 1);
        if (k < 0) {
            snprintf(why, WHY_MAX, "pp_get_active_nodes: %s", strerror(-k));
            return k;
        }
        if (k >= 1 && info.state == PP_NODE_UP)
            return 0;
        if (bench_now_ns() > end)
            break;
        usleep(1000);
    }
    if (k >= 1 && (info.error[0] || info.last_error))
        snprintf(err, sizeof(err), ": %s", info.error[0] ? info.error : strerror(-info.last_error));
    node_get_last(n, last, sizeof(last));
    snprintf(why, WHY_MAX, "node did not come up in %d s: %s%.70s%s%.50s", NODE_UP_MS / 1000,
             k < 1 ? "no node listed" : state_name(info.state), err,
             last[0] ? "; ppserver said: " : "", last);
    return -ETIMEDOUT;
}

/* ================================================================ */
/* A node with a session: what most rows measure through            */
/* ================================================================ */

struct remote {
    struct remote_env env;
    struct remote_node node;
    pp_server *srv;
};

/* (Re)opens rm's session: a new client, the node seen up, one job
 * through it.  Returns 0 or -errno with the reason in why. */
static int remote_session(struct remote *rm, bool busy, char *why)
{
    char msg[WHY_MAX];
    int r;

    pp_server_destroy(rm->srv);
    rm->srv = NULL;
    if ((r = session_new(&rm->env, &rm->node, busy, &rm->srv, why)) < 0)
        return r;
    if ((r = session_wait_up(rm->srv, &rm->node, why)) < 0)
        return r;
    if ((r = one_job(rm->srv, 1, msg, sizeof(msg))) < 0)
        snprintf(why, WHY_MAX, "first job through the node: %.160s", msg);
    return r;
}

static void remote_close(struct remote *rm)
{
    pp_server_destroy(rm->srv); /* the client first: the node then goes quietly */
    rm->srv = NULL;
    node_stop(&rm->node);
    env_free(&rm->env);
}

/* A ppserver with `workers` workers on a fresh cache, and a session that
 * has run one job on it.  Returns 0, or -errno with the reason in why
 * (also kept in skip_reason for the rest of the run). */
static int remote_open(const struct bench_opts *o, struct remote *rm, int workers, char *why)
{
    char cache[PATH_MAX];
    int r;

    memset(rm, 0, sizeof(*rm));
    node_init(&rm->node);
    if (skip_reason[0]) {
        snprintf(why, WHY_MAX, "%s", skip_reason);
        return -EHOSTUNREACH;
    }
    r = env_init(o, &rm->env, why);
    if (r == 0)
        r = env_cache(&rm->env, cache, sizeof(cache), why);
    if (r == 0)
        r = node_start(&rm->env, cache, workers, &rm->node, why);
    if (r == 0)
        r = remote_session(rm, o->busy_poll, why);
    if (r < 0) {
        snprintf(skip_reason, sizeof(skip_reason), "%s", why);
        remote_close(rm);
    }
    return r;
}

/* ================================================================ */
/* Rows                                                             */
/* ================================================================ */

static void row_init(struct bench_result *r, const char *workload, const char *variant,
                     int workers, uint64_t jobs)
{
    bench_result_init(r, workload, "pp", variant);
    r->workers = workers;
    r->jobs = jobs;
    snprintf(r->version, sizeof(r->version), "pp " PP_VERSION_STRING ", ppserver node");
}

/* n jobs in ns: ns_per_job and jobs_per_s. */
static void row_rate(struct bench_result *r, uint64_t n, double ns)
{
    r->ns_per_job = ns / (double)n;
    r->jobs_per_s = 1e9 / r->ns_per_job;
}

/* A row that could not be measured: no figures, the reason. */
static void emit_skipped(const struct bench_opts *o, const char *workload, const char *variant,
                         int workers, uint64_t jobs, uint64_t payload, const char *why)
{
    struct bench_result r;

    row_init(&r, workload, variant, workers, jobs);
    r.payload_bytes = payload;
    snprintf(r.skipped, sizeof(r.skipped), "%s", why);
    bench_progress("%s pp %s: skipped: %s", workload, variant, why);
    bench_emit(o, &r);
}

/* ================================================================ */
/* remote-overhead                                                  */
/* ================================================================ */

enum ovh_mode { OVH_SUBMIT, OVH_TEMPLATE, OVH_WINDOW, OVH_NMODES };

/* submit, template: all n submitted, then collected (the README loop);
 * window64: PEER_REMOTE_WINDOW in flight, as every peer runs. */
static const char *const ovh_names[OVH_NMODES] = { "submit", "template", "window64" };

/* One round of n trivial jobs.  Returns its ns, or -errno (reported). */
static double overhead_round(pp_server *s, pp_template *tpl, enum ovh_mode m, pp_task **t,
                             uint64_t n)
{
    uint64_t window = m == OVH_WINDOW ? peer_remote_window(PEER_REMOTE_OVERHEAD, 0) : n;
    uint64_t sent = 0, done = 0;
    char msg[WHY_MAX];
    int r = 0;
    double t0 = bench_now_ns();

    while (done < n && r == 0) {
        if (sent < n && sent - done < window) {
            r = m == OVH_TEMPLATE ? pp_template_submit(tpl, &sent, sizeof(sent), &t[sent])
                                  : pp_submit(s, job_trivial, &sent, sizeof(sent), NULL,
                                              &t[sent]);
            if (r < 0)
                snprintf(msg, sizeof(msg), "submit: %s", strerror(-r));
            else
                sent++;
            continue;
        }
        r = task_check(t[done], done, msg, sizeof(msg));
        pp_task_release(t[done++]);
    }
    double el = bench_now_ns() - t0;
    while (done < sent) /* after a failure: still ours to release */
        pp_task_release(t[done++]);
    if (r < 0) {
        fprintf(stderr, "ppbench: remote-overhead %s: %s\n", ovh_names[m], msg);
        return r;
    }
    return el;
}

/* The jobs_done of the session's first k nodes into out.  Returns 0 or
 * -errno (reported). */
static int node_counts(pp_server *s, unsigned k, uint64_t *out)
{
    struct pp_node_info info[BENCH_MAX_NODES];
    int got = pp_get_active_nodes(s, info, k);

    if (got < (int)k) {
        fprintf(stderr, "ppbench: remote-overhead: pp_get_active_nodes: %s\n",
                got < 0 ? strerror(-got) : "a node is missing");
        return got < 0 ? got : -EIO;
    }
    for (unsigned i = 0; i < k; i++)
        out[i] = info[i].jobs_done;
    return 0;
}

/* Best of reps rounds after a warm-up round of n/10 jobs, or -errno.
 * With k > 0 (--nodes), best_jobs[0..k) gets the jobs each of the
 * session's nodes ran in the best round (counted outside the timing). */
static double overhead_best(pp_server *s, pp_template *tpl, enum ovh_mode m, pp_task **t,
                            uint64_t n, int reps, unsigned k, uint64_t *best_jobs)
{
    double best = INFINITY, el = overhead_round(s, tpl, m, t, n / 10 > 0 ? n / 10 : 1);
    uint64_t before[BENCH_MAX_NODES], after[BENCH_MAX_NODES];

    for (int rep = 0; rep < reps && el >= 0; rep++) {
        if (k > 0 && (el = node_counts(s, k, before)) < 0)
            break;
        el = overhead_round(s, tpl, m, t, n);
        if (el >= 0 && k > 0) {
            int r = node_counts(s, k, after);
            if (r < 0)
                return r;
            if (el < best)
                for (unsigned i = 0; i < k; i++)
                    best_jobs[i] = after[i] - before[i];
        }
        best = el >= 0 && el < best ? el : best;
    }
    return el < 0 ? el : best;
}

static int balance_row(const struct bench_opts *o);

static int pp_remote_overhead(const struct bench_opts *o, uint64_t n)
{
    int w = node_workers(o), r;
    char why[WHY_MAX];
    struct remote rm;
    pp_template *tpl = NULL;
    pp_task **t = calloc(n, sizeof(*t));

    if (!t)
        return -ENOMEM;
    if (remote_open(o, &rm, w, why) < 0) {
        for (int m = 0; m < OVH_NMODES; m++)
            emit_skipped(o, "remote-overhead", ovh_names[m], w, n, 0, why);
        free(t);
        return 0;
    }
    if ((r = pp_template_new(rm.srv, job_trivial, NULL, &tpl)) < 0)
        fprintf(stderr, "ppbench: remote-overhead: pp_template_new: %s\n", strerror(-r));
    for (int m = 0; m < OVH_NMODES && r == 0; m++) {
        bench_progress("remote-overhead: pp %s, %llu jobs", ovh_names[m], (unsigned long long)n);
        double best =
            overhead_best(rm.srv, tpl, (enum ovh_mode)m, t, n, o->quick ? 2 : 3, 0, NULL);
        if (best < 0) {
            r = (int)best;
            break;
        }
        struct bench_result res;
        row_init(&res, "remote-overhead", ovh_names[m], w, n);
        row_rate(&res, n, best);
        bench_emit(o, &res);
    }
    pp_template_destroy(tpl);
    remote_close(&rm);
    free(t);
    if (r == 0)
        r = balance_row(o);
    return r;
}

/*
 * The balance row: one local worker plus a node with two, a flood of
 * 1 ms jobs (they sleep, so three can run on this 2-core machine), and the
 * makespan against the ideal for three workers: efficiency = ideal /
 * makespan (1 = perfect split).  It shows that the node's window follows
 * its speed: a node that held many more jobs than it can run would finish
 * last, alone.
 */
static int job_sleep_1ms(pp_job *job)
{
    (void)job;
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
    return 0;
}

static int balance_row(const struct bench_opts *o)
{
    uint64_t n = o->quick ? 600 : 2000;
    char why[WHY_MAX], cache[PATH_MAX];
    struct remote_env env;
    struct remote_node node;
    pp_server *s = NULL;
    int r;

    memset(&env, 0, sizeof(env));
    node_init(&node);
    if (skip_reason[0]) {
        emit_skipped(o, "remote-overhead", "balance", 3, n, 0, skip_reason);
        return 0;
    }
    r = env_init(o, &env, why);
    if (r == 0)
        r = env_cache(&env, cache, sizeof(cache), why);
    if (r == 0)
        r = node_start(&env, cache, 2, &node, why);
    if (r == 0) {
        struct pp_config c;
        pp_config_init(&c);
        c.ncpus = 1;
        c.ppservers = node.list;
        c.secret = env.secret;
        c.node_wait_ms = NODE_UP_MS;
        if ((r = pp_server_new(&c, &s)) < 0)
            snprintf(why, WHY_MAX, "pp_server_new (ncpus 1, node %s): %s", node.addr,
                     strerror(-r));
    }
    if (r == 0)
        r = session_wait_up(s, &node, why);
    if (r < 0) {
        emit_skipped(o, "remote-overhead", "balance", 3, n, 0, why);
        pp_server_destroy(s);
        node_stop(&node);
        env_free(&env);
        return 0;
    }
    /* What one job really takes here (a 1 ms sleep overshoots). */
    double t0 = bench_now_ns();
    for (int i = 0; i < 50; i++)
        job_sleep_1ms(NULL);
    double job_ns = (bench_now_ns() - t0) / 50;
    bench_progress("remote-overhead: pp balance, %llu jobs of 1 ms", (unsigned long long)n);
    double best = 0;
    for (int round = 0; round < (o->quick ? 1 : 3) && r == 0; round++) {
        t0 = bench_now_ns();
        for (uint64_t i = 0; i < n && r == 0; i++)
            r = pp_submit(s, job_sleep_1ms, NULL, 0, NULL, NULL);
        if (r == 0)
            r = pp_wait(s, NULL, 120000);
        double mk = bench_now_ns() - t0;
        if (r == 0 && (best == 0 || mk < best))
            best = mk;
    }
    if (r < 0)
        fprintf(stderr, "ppbench: remote-overhead: balance: %s\n", strerror(-r));
    else {
        struct bench_result res;
        row_init(&res, "remote-overhead", "balance", 3, n);
        row_rate(&res, n, best);
        res.efficiency = (double)n * job_ns / 3 / best;
        bench_emit(o, &res);
    }
    pp_server_destroy(s);
    node_stop(&node);
    env_free(&env);
    return r;
}

/* ================================================================ */
/* remote-overhead --nodes: nodes that are already running          */
/* ================================================================ */

/*
 * No ppserver is started.  Two fresh clients (ncpus = 0), one after the
 * other: one on the first node of --nodes, one on all of them, each
 * waiting (NODE_UP_MS at most) until pp_get_active_nodes shows all its
 * nodes up.  Each runs the submit, template and window64 rounds above,
 * with the same sizes; a row per mode and client ("submit, 1 node",
 * "submit, 3 nodes"), the all-nodes rows with their throughput over the
 * 1-node rows and, every row, the jobs each node ran in its best round.
 * A node that does not come up is a failure (named, with its error), not
 * a skipped row: the user asked for that node.
 */

/* The peers' remote-overhead rows (as peers.c runs them): skipped. */
static const struct {
    const char *system, *variant;
} given_peers[] = {
    { "tcp", "window64" },
    { "zmq", "dealer-router" },
    { "zmq", "push-pull" },
    { "mpi", "tcp-window64" },
};

struct given {
    const char *list[BENCH_MAX_NODES + 1]; /* the client's ppservers */
    unsigned k;
    pp_server *srv;
    struct pp_node_info info[BENCH_MAX_NODES]; /* as they came up */
};

/* "down: cannot connect: Connection refused" for a node that is not up. */
static void given_why(const struct pp_node_info *in, char *out, size_t len)
{
    const char *e = in->error[0] ? in->error : in->last_error ? strerror(-in->last_error) : "";

    snprintf(out, len, "%s%s%s", state_name(in->state), e[0] ? ": " : " (no error reported)", e);
}

/* A client on the first k nodes of --nodes, all of them up.  Returns 0,
 * or -errno after naming, on standard error, each node that did not
 * come up with its error. */
static int given_open(const struct bench_opts *o, struct given *g, unsigned k)
{
    struct pp_config c;
    double end;
    int got, r;

    memset(g, 0, sizeof(*g));
    g->k = k;
    for (unsigned i = 0; i < k; i++)
        g->list[i] = o->nodes[i];
    pp_config_init(&c);
    c.ncpus = 0;
    c.busy_poll = o->busy_poll;
    c.ppservers = g->list;
    c.secret_file = o->secret_file;
    c.node_wait_ms = NODE_UP_MS;
    if ((r = pp_server_new(&c, &g->srv)) < 0) {
        fprintf(stderr, "ppbench: remote-overhead: pp_server_new (ncpus 0, %u node%s, secret "
                "file %s): %s\n", k, k == 1 ? "" : "s", o->secret_file, strerror(-r));
        g->srv = NULL;
        return r;
    }
    end = bench_now_ns() + NODE_UP_MS * 1e6;
    for (;;) {
        unsigned up = 0;
        memset(g->info, 0, sizeof(g->info));
        got = pp_get_active_nodes(g->srv, g->info, k);
        if (got < 0) {
            fprintf(stderr, "ppbench: remote-overhead: pp_get_active_nodes: %s\n",
                    strerror(-got));
            return got;
        }
        for (unsigned i = 0; i < k && i < (unsigned)got; i++)
            up += g->info[i].state == PP_NODE_UP;
        if (up == k)
            break;
        if (bench_now_ns() > end) {
            for (unsigned i = 0; i < k; i++) {
                char why[PP_ERRMSG_MAX + 48];
                if (i >= (unsigned)got)
                    snprintf(why, sizeof(why), "not among the client's nodes");
                else if (g->info[i].state == PP_NODE_UP)
                    continue;
                else
                    given_why(&g->info[i], why, sizeof(why));
                fprintf(stderr, "ppbench: remote-overhead: node %s did not come up within "
                        "%d s: %s\n", i < (unsigned)got ? g->info[i].name : g->list[i],
                        NODE_UP_MS / 1000, why);
            }
            return -EHOSTUNREACH;
        }
        usleep(1000);
    }
    char msg[WHY_MAX];
    if ((r = one_job(g->srv, 1, msg, sizeof(msg))) < 0)
        fprintf(stderr, "ppbench: remote-overhead: first job through the node%s: %s\n",
                k == 1 ? "" : "s", msg);
    return r;
}

/* The pp rows of one client: a row per mode into rows[] (zeroed, and
 * left so for a mode not measured), with the jobs each node ran in its
 * best round.  Returns 0 or -errno (reported). */
static int given_rows(const struct bench_opts *o, unsigned k, uint64_t n, pp_task **t,
                      struct bench_result rows[OVH_NMODES])
{
    pp_template *tpl = NULL;
    unsigned workers = 0;
    struct given g;
    int r = given_open(o, &g, k);

    if (r == 0 && (r = pp_template_new(g.srv, job_trivial, NULL, &tpl)) < 0)
        fprintf(stderr, "ppbench: remote-overhead: pp_template_new: %s\n", strerror(-r));
    for (unsigned i = 0; i < k; i++)
        workers += g.info[i].workers;
    for (int m = 0; m < OVH_NMODES && r == 0; m++) {
        uint64_t jobs[BENCH_MAX_NODES] = { 0 };
        char variant[40];
        bench_progress("remote-overhead: pp %s, %llu jobs, %u running node%s", ovh_names[m],
                       (unsigned long long)n, k, k == 1 ? "" : "s");
        double best = overhead_best(g.srv, tpl, (enum ovh_mode)m, t, n, o->quick ? 2 : 3, k,
                                    jobs);
        if (best < 0) {
            r = (int)best;
            break;
        }
        struct bench_result *res = &rows[m];
        snprintf(variant, sizeof(variant), "%s, %u node%s", ovh_names[m], k, k == 1 ? "" : "s");
        row_init(res, "remote-overhead", variant, (int)workers, n);
        snprintf(res->version, sizeof(res->version),
                 "pp " PP_VERSION_STRING ", %u running ppserver node%s", k, k == 1 ? "" : "s");
        row_rate(res, n, best);
        res->nnodes = (int)k;
        for (unsigned i = 0; i < k; i++) {
            snprintf(res->nodes[i].name, sizeof(res->nodes[i].name), "%s", g.info[i].name);
            res->nodes[i].workers = g.info[i].workers;
            res->nodes[i].jobs = jobs[i];
        }
    }
    pp_template_destroy(tpl);
    pp_server_destroy(g.srv);
    return r;
}

static int pp_remote_overhead_given(const struct bench_opts *o, uint64_t n)
{
    static struct bench_result one[OVH_NMODES], all[OVH_NMODES];
    const char *why = "not run with --nodes: it starts its own 2-worker node beside one "
                      "local worker";
    pp_task **t = calloc(n, sizeof(*t));
    unsigned k = o->nnodes;
    int r;

    if (!t)
        return -ENOMEM;
    memset(one, 0, sizeof(one));
    memset(all, 0, sizeof(all));
    bench_progress("remote-overhead: %u running node%s from --nodes (no ppserver started), "
                   "first %s", k, k == 1 ? "" : "s", o->nodes[0]);
    r = given_rows(o, 1, n, t, one);
    for (int m = 0; m < OVH_NMODES; m++) /* those measured before a failure too */
        if (one[m].workload[0])
            bench_emit(o, &one[m]);
    if (r == 0 && k > 1) {
        r = given_rows(o, k, n, t, all);
        for (int m = 0; m < OVH_NMODES; m++)
            if (all[m].workload[0]) {
                all[m].throughput_ratio = all[m].jobs_per_s / one[m].jobs_per_s;
                bench_emit(o, &all[m]);
            }
    }
    free(t);
    if (r < 0)
        return r;
    /* balance_row's sizes */
    emit_skipped(o, "remote-overhead", "balance", 3, o->quick ? 600 : 2000, 0, why);
    if (!o->peers)
        return 0;
    for (size_t i = 0; i < sizeof(given_peers) / sizeof(given_peers[0]); i++) {
        struct bench_result res;
        bench_result_init(&res, "remote-overhead", given_peers[i].system,
                          given_peers[i].variant);
        res.workers = 1;
        res.jobs = n;
        snprintf(res.skipped, sizeof(res.skipped),
                 "not run with --nodes: the peers need endpoints of their own");
        bench_progress("remote-overhead %s %s: skipped: %s", res.system, res.variant,
                       res.skipped);
        bench_emit(o, &res);
    }
    return 0;
}

/* ================================================================ */
/* remote-latency                                                   */
/* ================================================================ */

/* n round trips, one job in flight, after n/10 unmeasured ones. */
static int latency_row(const struct bench_opts *o, pp_server *s, bool busy, int w, uint64_t n)
{
    uint64_t warm = n / 10;
    double *v = malloc(n * sizeof(*v));
    char msg[WHY_MAX];
    int r = v ? 0 : -ENOMEM;

    for (uint64_t i = 0; i < n + warm && r == 0; i++) {
        pp_task *t;
        double t0 = bench_now_ns();
        if ((r = pp_submit(s, job_trivial, &i, sizeof(i), NULL, &t)) < 0) {
            snprintf(msg, sizeof(msg), "pp_submit: %s", strerror(-r));
            break;
        }
        r = task_check(t, i, msg, sizeof(msg));
        double el = bench_now_ns() - t0;
        pp_task_release(t);
        if (i >= warm)
            v[i - warm] = el;
    }
    if (r == 0) {
        struct bench_result res;
        double sum = 0;
        for (uint64_t i = 0; i < n; i++)
            sum += v[i];
        row_init(&res, "remote-latency", busy ? "busy-poll" : "adaptive", w, n);
        row_rate(&res, n, sum);
        bench_percentiles(v, n, &res.p50_ns, &res.p99_ns, &res.p999_ns);
        for (int k = 0; k < PEER_NPCT; k++)
            res.pct_ns[k] = bench_pct_sorted(v, n, peer_pct_levels[k] / 100.0);
        bench_emit(o, &res);
    } else if (v) {
        fprintf(stderr, "ppbench: remote-latency %s: %s\n", busy ? "busy-poll" : "adaptive",
                msg);
    }
    free(v);
    return r;
}

/* Both waiting modes of the client, each on a session of its own, on one
 * node. */
static int pp_remote_latency(const struct bench_opts *o, uint64_t n)
{
    int w = node_workers(o), r;
    char why[WHY_MAX];
    struct remote rm;

    if (remote_open(o, &rm, w, why) < 0) {
        emit_skipped(o, "remote-latency", "adaptive", w, n, 0, why);
        emit_skipped(o, "remote-latency", "busy-poll", w, n, 0, why);
        return 0;
    }
    r = latency_row(o, rm.srv, false, w, n);
    if (r == 0 && (r = remote_session(&rm, true, why)) < 0)
        fprintf(stderr, "ppbench: remote-latency busy-poll: %s\n", why);
    if (r == 0)
        r = latency_row(o, rm.srv, true, w, n);
    remote_close(&rm);
    return r;
}

/* ================================================================ */
/* remote-payload                                                   */
/* ================================================================ */

static const uint64_t payload_sizes[] = { 1024, 65536, 1 << 20, 16 << 20, 64 << 20 };
#define NPAYLOAD (sizeof(payload_sizes) / sizeof(payload_sizes[0]))
#define NPAYLOAD_QUICK 3 /* up to 1 MiB */

/* Jobs of one size: 64 MiB (quick) or 256 MiB each way, 4 .. 2000/20000
 * jobs (a quarter of the local payload's budget: loopback TCP moves
 * bytes several times slower than shared memory). */
static uint64_t payload_jobs(const struct bench_opts *o, uint64_t size)
{
    uint64_t n = (o->quick ? (64ull << 20) : (256ull << 20)) / size;
    uint64_t cap = o->quick ? 2000 : 20000;
    n = n > cap ? cap : n;
    return n < 4 ? 4 : n;
}

/* Checks echo `i` of size bytes, done or not within JOB_WAIT_MS.
 * Returns 0 or -errno (reported). */
static int echo_check(pp_task *t, const struct peer_payload_ref *ref, uint64_t size,
                      uint64_t i)
{
    const void *d;
    size_t len;
    const char *bad = NULL;
    int r = pp_task_wait(t, JOB_WAIT_MS);

    if (r < 0)
        bad = r == -ETIMEDOUT ? "no result within 30 s" : strerror(-r);
    else if ((r = pp_task_result(t, &d, &len)) < 0)
        bad = pp_task_error(t) ? pp_task_error(t) : strerror(-r);
    else if (len != size || !peer_payload_echo_ok(ref, i, d))
        bad = "the echo differs from its argument", r = -EIO;
    if (r < 0)
        fprintf(stderr, "ppbench: remote-payload %llu B, job %llu: %s\n",
                (unsigned long long)size, (unsigned long long)i, bad);
    return r;
}

/* n echoes of size bytes, peer_remote_window in flight, every result
 * compared with its argument.  Returns the ns, or -errno (reported). */
static double payload_round(pp_server *s, uint64_t size, uint64_t n)
{
    uint64_t window = peer_remote_window(PEER_REMOTE_PAYLOAD, size), sent = 0, done = 0;
    unsigned char *buf = malloc(size);
    pp_task **t = calloc(n, sizeof(*t));
    struct peer_payload_ref ref;
    int r = 0;

    if (!buf || !t) {
        free(buf);
        free(t);
        return -ENOMEM;
    }
    peer_payload_fill(buf, size);
    peer_payload_ref_init(&ref, buf, size);
    double t0 = bench_now_ns();
    while (done < n && r == 0) {
        if (sent < n && sent - done < window) {
            peer_payload_stamp(buf, size, sent);
            if ((r = pp_submit(s, job_echo, buf, size, NULL, &t[sent])) < 0)
                fprintf(stderr, "ppbench: remote-payload %llu B: pp_submit: %s\n",
                        (unsigned long long)size, strerror(-r));
            else
                sent++;
            continue;
        }
        r = echo_check(t[done], &ref, size, done);
        pp_task_release(t[done++]);
    }
    double el = bench_now_ns() - t0;
    while (done < sent) /* after a failure: still ours to release */
        pp_task_release(t[done++]);
    free(buf);
    free(t);
    return r < 0 ? r : el;
}

static int pp_remote_payload(const struct bench_opts *o)
{
    size_t nsz = o->quick ? NPAYLOAD_QUICK : NPAYLOAD;
    int w = node_workers(o), r = 0;
    char why[WHY_MAX];
    struct remote rm;

    if (remote_open(o, &rm, w, why) < 0) {
        for (size_t i = 0; i < nsz; i++)
            emit_skipped(o, "remote-payload", "echo", w, payload_jobs(o, payload_sizes[i]),
                         payload_sizes[i], why);
        return 0;
    }
    for (size_t i = 0; i < nsz && r == 0; i++) {
        uint64_t size = payload_sizes[i], n = payload_jobs(o, size);
        bench_progress("remote-payload: pp echo %llu B x %llu", (unsigned long long)size,
                       (unsigned long long)n);
        /* A quarter round first: buffers and pages on both sides warm. */
        double el = payload_round(rm.srv, size, n / 4 > 2 ? n / 4 : 2);
        if (el >= 0)
            el = payload_round(rm.srv, size, n);
        if (el < 0) {
            r = (int)el;
            break;
        }
        struct bench_result res;
        row_init(&res, "remote-payload", "echo", w, n);
        row_rate(&res, n, el);
        res.payload_bytes = size;
        res.gbps = (double)size * (double)n / el; /* each way */
        bench_emit(o, &res);
    }
    remote_close(&rm);
    return r;
}

/* ================================================================ */
/* remote-cache                                                     */
/* ================================================================ */

/* One round trip of fn(x) on s, in ns; *err is set on a failure. */
static double fn_round_trip(pp_server *s, pp_fn *fn, uint64_t x, int *err)
{
    char msg[WHY_MAX];
    pp_task *t;
    double t0 = bench_now_ns();
    int r = pp_submit(s, fn, &x, sizeof(x), NULL, &t);

    if (r < 0) {
        fprintf(stderr, "ppbench: remote-cache: pp_submit: %s\n", strerror(-r));
        *err = r;
        return 0;
    }
    r = task_check(t, x, msg, sizeof(msg));
    double el = bench_now_ns() - t0;
    pp_task_release(t);
    if (r < 0) {
        fprintf(stderr, "ppbench: remote-cache: %s\n", msg);
        *err = r;
    }
    return el;
}

/* First call of each of nf never-seen functions on a live session, each
 * followed by one repeat: pairs side by side, as the local cache row. */
static int cache_first_vs_repeat(const struct bench_opts *o, unsigned nf)
{
    double *first = calloc(nf, sizeof(double)), *rep = calloc(nf, sizeof(double));
    int w = node_workers(o), err = 0;
    char why[WHY_MAX];
    struct remote rm;

    if (!first || !rep) {
        free(first);
        free(rep);
        return -ENOMEM;
    }
    if (remote_open(o, &rm, w, why) < 0) {
        emit_skipped(o, "remote-cache", "first-vs-repeat", w, nf, 0, why);
        goto out;
    }
    for (unsigned i = 0; i < nf && !err; i++) {
        first[i] = fn_round_trip(rm.srv, bench_fns[i], i, &err);
        rep[i] = fn_round_trip(rm.srv, bench_fns[i], i, &err);
    }
    if (!err) {
        struct bench_result res;
        double p99, p999, f50, r50;
        bench_percentiles(first, nf, &f50, &p99, &p999);
        bench_percentiles(rep, nf, &r50, &p99, &p999);
        row_init(&res, "remote-cache", "first-vs-repeat", w, nf);
        row_rate(&res, nf, f50 * nf);
        res.first_call_ns = f50;
        res.repeat_call_ns = r50;
        res.p50_ns = f50;
        bench_emit(o, &res);
    }
    remote_close(&rm);
out:
    free(first);
    free(rep);
    return err;
}

/* A new session's time from pp_server_new to its first result, in *ns.
 * Returns 0 or -errno with the reason in why. */
static int session_first(const struct bench_opts *o, struct remote_env *env,
                         struct remote_node *n, double *ns, char *why)
{
    char msg[WHY_MAX];
    pp_server *s;
    double t0 = bench_now_ns();
    int r = session_new(env, n, o->busy_poll, &s, why);

    if (r < 0)
        return r;
    if ((r = one_job(s, 7, msg, sizeof(msg))) < 0)
        snprintf(why, WHY_MAX, "new session, first job: %.170s", msg);
    *ns = bench_now_ns() - t0;
    pp_server_destroy(s);
    return r;
}

enum { SESS_COLD, SESS_WARM, SESS_RESTARTED, SESS_N };

static const char *const sess_names[SESS_N] = {
    "session-cold-cache",          /* a node on a fresh --cache-dir */
    "session-warm-cache",          /* a second session on that node */
    "session-warm-restarted",      /* a new node on that --cache-dir */
};

/* One repetition: a node on a fresh cache directory, a cold session and
 * a warm one on it; then a new node on the same directory, one more.
 * The nodes' own start-up is never timed.  Returns 0 or -errno with the
 * reason in why. */
static int cache_sessions_once(const struct bench_opts *o, struct remote_env *env,
                               double ns[SESS_N], char *why)
{
    char cache[PATH_MAX];
    struct remote_node n;
    int w = node_workers(o);
    int r = env_cache(env, cache, sizeof(cache), why);

    node_init(&n);
    for (int k = 0; k < SESS_N && r == 0; k++) {
        if (k == SESS_RESTARTED)
            node_stop(&n);
        if (k != SESS_WARM)
            r = node_start(env, cache, w, &n, why);
        if (r == 0)
            r = session_first(o, env, &n, &ns[k], why);
    }
    node_stop(&n);
    return r;
}

/* Emits the session rows as skipped, keeping the reason for the run. */
static int cache_sessions_skip(const struct bench_opts *o, int reps, const char *why)
{
    if (!skip_reason[0])
        snprintf(skip_reason, sizeof(skip_reason), "%s", why);
    for (int k = 0; k < SESS_N; k++)
        emit_skipped(o, "remote-cache", sess_names[k], node_workers(o), (uint64_t)reps, 0,
                     why);
    return 0;
}

/* Cold against warm node cache: reps repetitions (at most 16), a row per
 * kind; the warm rows carry the cold median as their first call. */
static int cache_sessions(const struct bench_opts *o, int reps)
{
    double ns[SESS_N][16];
    int w = node_workers(o), r = 0;
    char why[WHY_MAX];
    struct remote_env env;

    if (skip_reason[0])
        return cache_sessions_skip(o, reps, skip_reason);
    if (env_init(o, &env, why) < 0) {
        env_free(&env);
        return cache_sessions_skip(o, reps, why);
    }
    for (int rep = 0; rep < reps && r == 0; rep++) {
        double one[SESS_N];
        bench_progress("remote-cache: new sessions, cold and warm node cache (%d/%d)",
                       rep + 1, reps);
        r = cache_sessions_once(o, &env, one, why);
        if (r < 0 && rep == 0) { /* never worked: skipped, not failed */
            env_free(&env);
            return cache_sessions_skip(o, reps, why);
        }
        if (r < 0)
            fprintf(stderr, "ppbench: remote-cache sessions: %s\n", why);
        for (int k = 0; k < SESS_N && r == 0; k++)
            ns[k][rep] = one[k];
    }
    env_free(&env);
    if (r < 0)
        return r;
    double cold50 = NAN;
    for (int k = 0; k < SESS_N; k++) {
        struct bench_result res;
        double sum = 0;
        for (int i = 0; i < reps; i++)
            sum += ns[k][i];
        row_init(&res, "remote-cache", sess_names[k], w, (uint64_t)reps);
        row_rate(&res, (uint64_t)reps, sum);
        bench_percentiles(ns[k], (size_t)reps, &res.p50_ns, &res.p99_ns, &res.p999_ns);
        if (k == SESS_COLD) {
            cold50 = res.p50_ns;
        } else { /* "1st-rep ns": what the warm cache saves */
            res.first_call_ns = cold50;
            res.repeat_call_ns = res.p50_ns;
        }
        bench_emit(o, &res);
    }
    return 0;
}

static int pp_remote_cache(const struct bench_opts *o)
{
    int r = cache_first_vs_repeat(o, o->quick ? 100 : BENCH_NFNS);
    int rs = cache_sessions(o, o->quick ? 2 : 5);
    return r < 0 ? r : rs;
}

/* ================================================================ */
/* The workloads with their peers                                   */
/* ================================================================ */

/* The peers run one worker process, as the node runs one worker.  With
 * --nodes: the running nodes instead, and no peer. */
static int run_remote_overhead(const struct bench_opts *o)
{
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 20000 : 100000);
    if (o->nnodes > 0)
        return pp_remote_overhead_given(o, n);
    int r = pp_remote_overhead(o, n);

    peers_run(o, "remote-overhead", 1, n, 0, false, 0);
    return r;
}

/* Like latency: the full run interleaves three rounds of pp and the
 * peers (the VM's core-to-core cost drifts), the table takes the best.
 * 20,000 round trips still put 20 beyond p99.9. */
static int run_remote_latency(const struct bench_opts *o)
{
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 5000 : 20000);
    int r = 0;

    for (int round = 0; round < (o->quick ? 1 : 3) && r == 0; round++) {
        r = pp_remote_latency(o, n);
        peers_run(o, "remote-latency", 1, n, 0, false, 0);
    }
    return r;
}

static int run_remote_payload(const struct bench_opts *o)
{
    size_t nsz = o->quick ? NPAYLOAD_QUICK : NPAYLOAD;
    int r = 0;

    for (int round = 0; round < (o->quick ? 1 : 3) && r == 0; round++) {
        r = pp_remote_payload(o);
        for (size_t i = 0; i < nsz; i++)
            peers_run(o, "remote-payload", 1, payload_jobs(o, payload_sizes[i]),
                      payload_sizes[i], false, 0);
    }
    return r;
}

/* ================================================================ */
/* remote-stream                                                    */
/* ================================================================ */

#define RSTREAM_ROUNDS 3

/* One job streaming n values from the node to a PP_ARRIVAL collector: a
 * warm-up of n/10, then the best of RSTREAM_ROUNDS. */
static int pp_remote_stream(const struct bench_opts *o, uint64_t n)
{
    int w = node_workers(o), r = 0;
    char why[WHY_MAX];
    struct remote rm;
    pp_collector *c = NULL;

    if (remote_open(o, &rm, w, why) < 0) {
        emit_skipped(o, "remote-stream", "default", w, n, 0, why);
        return 0;
    }
    if ((r = pp_collector_new(rm.srv, PP_ARRIVAL, 0, &c)) < 0) {
        fprintf(stderr, "ppbench: remote-stream: pp_collector_new: %s\n", strerror(-r));
        remote_close(&rm);
        return r;
    }
    double best = bench_stream_best(c, n, RSTREAM_ROUNDS);
    pp_collector_destroy(c);
    remote_close(&rm);
    if (best < 0)
        return -EIO;
    struct bench_result res;
    row_init(&res, "remote-stream", "default", w, n);
    row_rate(&res, n, best);
    bench_progress("remote-stream pp: %.1f ns/value, %.3g values/s", res.ns_per_job,
                   res.jobs_per_s);
    bench_emit(o, &res);
    return 0;
}

static int run_remote_stream(const struct bench_opts *o)
{
    uint64_t n = o->jobs ? o->jobs : (o->quick ? 100000 : 2000000);
    int r = pp_remote_stream(o, n);
    peers_run(o, "remote-stream", 1, n, 0, false, 0);
    return r;
}

const struct bench_workload bench_remote_workloads[] = {
    { "remote-overhead", run_remote_overhead },
    { "remote-latency", run_remote_latency },
    { "remote-payload", run_remote_payload },
    { "remote-stream", run_remote_stream },
    { "remote-cache", pp_remote_cache },
};
const size_t bench_remote_nworkloads =
    sizeof(bench_remote_workloads) / sizeof(bench_remote_workloads[0]);
