/*
 * disc_client.c - the client of the network-namespace discovery test
 * (test_netns.sh).  Finds its nodes only through discovery ("*:PORT" in
 * ppservers, queries to --broadcast), runs every job remotely (ncpus = 0)
 * and checks that each job was called back exactly once with the right
 * result while the test kills and starts nodes from hook commands.
 *
 * Options (all but --secret-file have defaults):
 *   --secret-file F        the nodes' shared secret (a 0600 file)
 *   --port P               discovery port = the nodes' TCP port (60000)
 *   --broadcast B          where queries go (255.255.255.255)
 *   --jobs N               jobs to run (10000)
 *   --steps S              work per job: S dependent multiply-adds (100000)
 *   --window W             jobs submitted and not called back, at most (1024)
 *   --expect-nodes K       before submitting, wait until K nodes are UP
 *   --discover-ms MS       ... at most this long (20000)
 *   --hook-at N CMD        once N jobs are called back, run /bin/sh -c CMD
 *                          from the main thread and wait for it (submission
 *                          pauses meanwhile; jobs in flight go on); a hook
 *                          that fails fails the run.  Repeatable.
 *   --wait-node-at N HOST MS
 *                          after the hooks at N: wait until a node whose
 *                          host is HOST is UP, at most MS, else fail
 *   --run-ms MS            the whole run, at most (120000)
 *   --linger MS            after the run, keep listening up to MS
 *   --linger-start FILE    created when the linger starts
 *   --linger-end FILE      ends the linger --grace ms after FILE appears
 *   --grace MS             (3000)
 *   --only-addrs A,B,...   every node must have one of these hosts
 *   --require-up HOST      that node must be UP at the end (repeatable)
 *   --require-gone HOST    that node must be PP_NODE_GONE at the end (or,
 *                          built against a pp.h without it, not UP)
 *   --require-jobs HOST    that node must have run > 0 jobs (repeatable)
 *
 * Output: lines starting "disc_client:"; the node table as lines
 *   disc_client: node HOST:PORT state STATE workers W jobs_done J error "..."
 * then "disc_client: PASS" and exit 0, or "disc_client: FAIL ..." lines and
 * exit 1 (2 for a bad command line or a server that cannot start).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <pp.h>

#define MAX_HOOKS 8
#define MAX_REQ 16
#define LCG_A 6364136223846793005ull
#define LCG_C 1442695040888963407ull

struct job_arg {
    uint64_t i, steps;
};
struct job_res {
    uint64_t i, x, steps;
};

static uint64_t seed_of(uint64_t i)
{
    uint64_t z = i + 0x9e3779b97f4a7c15ull; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The job: `steps` dependent steps of an LCG from seed_of(i).  The asm
 * keeps the compiler from collapsing the loop; the checker jumps ahead in
 * O(log steps) instead. */
static int work(pp_job *job)
{
    size_t len;
    const struct job_arg *a = pp_job_arg(job, &len);
    if (len != sizeof(*a))
        return pp_job_fail(job, -EINVAL, "want %zu argument bytes, got %zu", sizeof(*a), len);
    uint64_t x = seed_of(a->i);
    for (uint64_t k = 0; k < a->steps; k++) {
        x = x * LCG_A + LCG_C;
        __asm__ volatile("" : "+r"(x));
    }
    struct job_res *r = pp_job_result(job, sizeof(*r));
    if (!r)
        return pp_job_fail(job, -ENOMEM, "no result space");
    r->i = a->i;
    r->x = x;
    r->steps = a->steps;
    return 0;
}

static uint64_t expected(uint64_t i, uint64_t steps)
{
    /* x -> A x + C applied `steps` times: square the affine map. */
    uint64_t ra = 1, rc = 0, ba = LCG_A, bc = LCG_C;
    while (steps) {
        if (steps & 1) {
            rc = ba * rc + bc;
            ra = ba * ra;
        }
        bc = ba * bc + bc;
        ba = ba * ba;
        steps >>= 1;
    }
    return ra * seed_of(i) + rc;
}

/* ---------------------------------------------------------------- */

static struct {
    const char *secret_file, *broadcast;
    unsigned port;
    uint64_t jobs, steps, window;
    int expect_nodes;
    unsigned discover_ms, run_ms, linger_ms, grace_ms;
    const char *linger_start, *linger_end;
    struct { uint64_t at; const char *cmd; bool done; } hook[MAX_HOOKS];
    int nhooks;
    struct { uint64_t at; const char *host; unsigned ms; bool done; } waitn[MAX_HOOKS];
    int nwait;
    const char *only_addrs;
    const char *req_up[MAX_REQ], *req_gone[MAX_REQ], *req_jobs[MAX_REQ];
    int nreq_up, nreq_gone, nreq_jobs;
} opt = {
    .broadcast = "255.255.255.255", .port = PP_DEFAULT_PORT, .jobs = 10000, .steps = 100000,
    .window = 1024, .discover_ms = 20000, .run_ms = 120000, .grace_ms = 3000,
};

static _Atomic uint32_t *calls;      /* callbacks per job index */
static _Atomic uint64_t ndone, nfailed, nbad, ndup;
static pthread_mutex_t msg_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_msgs[8][256];
static unsigned nmsgs;
static int failures;

static void note(const char *fmt, ...) PP_PRINTF(1, 2);
static void note(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&msg_lock);
    if (nmsgs < 8) {
        va_start(ap, fmt);
        vsnprintf(first_msgs[nmsgs++], sizeof(first_msgs[0]), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&msg_lock);
}

static void fail(const char *fmt, ...) PP_PRINTF(1, 2);
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("disc_client: FAIL ");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
    failures++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* In the engine thread: count, check, never block. */
static void on_done(pp_task *t, void *arg)
{
    uint64_t i = (uint64_t)(uintptr_t)arg;
    const void *data = NULL;
    size_t len = 0;
    int st = pp_task_result(t, &data, &len);
    uint32_t before = atomic_fetch_add(&calls[i], 1);
    if (before) {
        atomic_fetch_add(&ndup, 1);
        note("job %llu called back %u times", (unsigned long long)i, before + 1);
    }
    if (st < 0) {
        atomic_fetch_add(&nfailed, 1);
        const char *e = pp_task_error(t);
        note("job %llu failed: %d (%s)", (unsigned long long)i, st, e ? e : strerror(-st));
    } else {
        const struct job_res *r = data;
        if (len != sizeof(*r) || r->i != i || r->steps != opt.steps ||
            r->x != expected(i, opt.steps)) {
            atomic_fetch_add(&nbad, 1);
            note("job %llu: wrong result (%zu bytes)", (unsigned long long)i, len);
        }
    }
    atomic_fetch_add(&ndone, 1);
}

static const char *state_name(enum pp_node_state s)
{
    switch (s) {
    case PP_NODE_CONNECTING: return "CONNECTING";
    case PP_NODE_UP: return "UP";
    case PP_NODE_DOWN: return "DOWN";
    case PP_NODE_REFUSED: return "REFUSED";
    case PP_NODE_GONE: return "GONE";
    }
    return "?";
}

static struct pp_node_info nodes[PP_MAX_NODES];

static int get_nodes(pp_server *srv)
{
    int n = pp_get_active_nodes(srv, nodes, PP_MAX_NODES);
    if (n < 0) {
        fail("pp_get_active_nodes: %s", strerror(-n));
        return 0;
    }
    return n > PP_MAX_NODES ? PP_MAX_NODES : n;
}

/* The host part of "host:port". */
static void host_of(const char *name, char *out, size_t cap)
{
    const char *c = strrchr(name, ':');
    size_t n = c ? (size_t)(c - name) : strlen(name);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, name, n);
    out[n] = 0;
}

static struct pp_node_info *find_host(int n, const char *host)
{
    char h[PP_NODE_NAME_MAX];
    for (int i = 0; i < n; i++) {
        host_of(nodes[i].name, h, sizeof(h));
        if (strcmp(h, host) == 0)
            return &nodes[i];
    }
    return NULL;
}

static int count_up(pp_server *srv)
{
    int n = get_nodes(srv), up = 0;
    for (int i = 0; i < n; i++)
        up += nodes[i].state == PP_NODE_UP;
    return up;
}

static void print_nodes(pp_server *srv, const char *when)
{
    int n = get_nodes(srv);
    printf("disc_client: %d node(s) %s:\n", n, when);
    for (int i = 0; i < n; i++)
        printf("disc_client: node %s state %s workers %u jobs_done %llu in_flight %llu error \"%s\"\n",
               nodes[i].name, state_name(nodes[i].state), nodes[i].workers,
               (unsigned long long)nodes[i].jobs_done, (unsigned long long)nodes[i].in_flight,
               nodes[i].error);
    fflush(stdout);
}

static int run_hook(const char *cmd)
{
    double t0 = now_s();
    printf("disc_client: hook at %llu done: %s\n", (unsigned long long)atomic_load(&ndone), cmd);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fail("fork for hook: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        close_range(3, ~0u, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    printf("disc_client: hook took %.3f s, status %d\n", now_s() - t0,
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    fflush(stdout);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail("hook '%s' failed", cmd);
        return -1;
    }
    return 0;
}

/* Hooks and node waits whose threshold the callbacks have reached. */
static void due_hooks(pp_server *srv)
{
    uint64_t d = atomic_load(&ndone);
    for (int h = 0; h < opt.nhooks; h++)
        if (!opt.hook[h].done && d >= opt.hook[h].at) {
            opt.hook[h].done = true;
            run_hook(opt.hook[h].cmd);
        }
    for (int w = 0; w < opt.nwait; w++) {
        if (opt.waitn[w].done || d < opt.waitn[w].at)
            continue;
        opt.waitn[w].done = true;
        double t0 = now_s();
        bool up = false;
        while (!up && now_s() - t0 < opt.waitn[w].ms / 1000.0) {
            int n = get_nodes(srv);
            struct pp_node_info *ni = find_host(n, opt.waitn[w].host);
            up = ni && ni->state == PP_NODE_UP;
            if (!up)
                sleep_ms(10);
        }
        if (up)
            printf("disc_client: node %s UP %.3f s after the wait began (at %llu done)\n",
                   opt.waitn[w].host, now_s() - t0, (unsigned long long)atomic_load(&ndone));
        else
            fail("node %s not UP within %u ms", opt.waitn[w].host, opt.waitn[w].ms);
        fflush(stdout);
    }
}

static bool file_exists(const char *p)
{
    struct stat sb;
    return p && stat(p, &sb) == 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: disc_client --secret-file F [--port P] [--broadcast B] [--jobs N] "
                    "[--steps S] [--window W] [--expect-nodes K] [--discover-ms MS] "
                    "[--hook-at N CMD]... [--wait-node-at N HOST MS]... [--run-ms MS] "
                    "[--linger MS] [--linger-start F] [--linger-end F] [--grace MS] "
                    "[--only-addrs A,B] [--require-up H]... [--require-gone H]... "
                    "[--require-jobs H]...\n");
    exit(2);
}

static uint64_t num(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        usage();
    return v;
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--secret-file")) opt.secret_file = ARG();
        else if (!strcmp(a, "--port")) opt.port = (unsigned)num(ARG());
        else if (!strcmp(a, "--broadcast")) opt.broadcast = ARG();
        else if (!strcmp(a, "--jobs")) opt.jobs = num(ARG());
        else if (!strcmp(a, "--steps")) opt.steps = num(ARG());
        else if (!strcmp(a, "--window")) opt.window = num(ARG());
        else if (!strcmp(a, "--expect-nodes")) opt.expect_nodes = (int)num(ARG());
        else if (!strcmp(a, "--discover-ms")) opt.discover_ms = (unsigned)num(ARG());
        else if (!strcmp(a, "--run-ms")) opt.run_ms = (unsigned)num(ARG());
        else if (!strcmp(a, "--linger")) opt.linger_ms = (unsigned)num(ARG());
        else if (!strcmp(a, "--linger-start")) opt.linger_start = ARG();
        else if (!strcmp(a, "--linger-end")) opt.linger_end = ARG();
        else if (!strcmp(a, "--grace")) opt.grace_ms = (unsigned)num(ARG());
        else if (!strcmp(a, "--only-addrs")) opt.only_addrs = ARG();
        else if (!strcmp(a, "--hook-at") && opt.nhooks < MAX_HOOKS) {
            opt.hook[opt.nhooks].at = num(ARG());
            opt.hook[opt.nhooks++].cmd = ARG();
        } else if (!strcmp(a, "--wait-node-at") && opt.nwait < MAX_HOOKS) {
            opt.waitn[opt.nwait].at = num(ARG());
            opt.waitn[opt.nwait].host = ARG();
            opt.waitn[opt.nwait++].ms = (unsigned)num(ARG());
        } else if (!strcmp(a, "--require-up") && opt.nreq_up < MAX_REQ)
            opt.req_up[opt.nreq_up++] = ARG();
        else if (!strcmp(a, "--require-gone") && opt.nreq_gone < MAX_REQ)
            opt.req_gone[opt.nreq_gone++] = ARG();
        else if (!strcmp(a, "--require-jobs") && opt.nreq_jobs < MAX_REQ)
            opt.req_jobs[opt.nreq_jobs++] = ARG();
        else
            usage();
#undef ARG
    }
    if (!opt.secret_file || !opt.jobs || !opt.window || !opt.port || opt.port > 65535)
        usage();
}

/* Every job called back exactly once (after the run, and again after the
 * linger: a late duplicate would show there). */
static void check_once(const char *when)
{
    uint64_t missing = 0, dup = 0, first_missing = UINT64_MAX, first_dup = UINT64_MAX;
    for (uint64_t i = 0; i < opt.jobs; i++) {
        uint32_t c = atomic_load(&calls[i]);
        if (c == 0 && missing++ == 0)
            first_missing = i;
        if (c > 1 && dup++ == 0)
            first_dup = i;
    }
    if (missing)
        fail("%s: %llu job(s) never called back (first: %llu)", when,
             (unsigned long long)missing, (unsigned long long)first_missing);
    if (dup)
        fail("%s: %llu job(s) called back more than once (first: %llu)", when,
             (unsigned long long)dup, (unsigned long long)first_dup);
    if (!missing && !dup)
        printf("disc_client: %s: each of the %llu jobs called back exactly once\n", when,
               (unsigned long long)opt.jobs);
}

static bool addr_allowed(const char *host)
{
    if (!opt.only_addrs)
        return true;
    size_t hl = strlen(host);
    for (const char *p = opt.only_addrs; *p;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n == hl && strncmp(p, host, n) == 0)
            return true;
        p += n + (c ? 1 : 0);
    }
    return false;
}

static void final_checks(pp_server *srv)
{
    int n = get_nodes(srv);
    uint64_t sum = 0;
    char h[PP_NODE_NAME_MAX];
    for (int i = 0; i < n; i++) {
        sum += nodes[i].jobs_done;
        host_of(nodes[i].name, h, sizeof(h));
        if (!addr_allowed(h))
            fail("node %s: address not in --only-addrs (%s)", nodes[i].name, opt.only_addrs);
        const char *colon = strrchr(nodes[i].name, ':');
        if (!colon || (unsigned)atoi(colon + 1) != opt.port)
            fail("node %s: not at port %u", nodes[i].name, opt.port);
    }
    if (sum != opt.jobs)
        fail("the nodes' jobs_done add up to %llu, not %llu", (unsigned long long)sum,
             (unsigned long long)opt.jobs);
    else
        printf("disc_client: the nodes' jobs_done add up to %llu\n", (unsigned long long)sum);
    for (int r = 0; r < opt.nreq_up; r++) {
        struct pp_node_info *ni = find_host(n, opt.req_up[r]);
        if (!ni || ni->state != PP_NODE_UP)
            fail("node %s: want UP, is %s", opt.req_up[r], ni ? state_name(ni->state) : "absent");
    }
    for (int r = 0; r < opt.nreq_gone; r++) {
        struct pp_node_info *ni = find_host(n, opt.req_gone[r]);
        if (!ni || ni->state != PP_NODE_GONE)
            fail("node %s: want GONE, is %s", opt.req_gone[r], ni ? state_name(ni->state) : "absent");
    }
    for (int r = 0; r < opt.nreq_jobs; r++) {
        struct pp_node_info *ni = find_host(n, opt.req_jobs[r]);
        if (!ni || ni->jobs_done == 0)
            fail("node %s: want > 0 jobs, has %s%llu", opt.req_jobs[r], ni ? "" : "no row, ",
                 ni ? (unsigned long long)ni->jobs_done : 0ull);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    calls = calloc(opt.jobs, sizeof(*calls));
    if (!calls)
        return 2;

    /* What one job costs here (this host's CPU), for the timings. */
    double t0 = now_s();
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < 32; i++) {
        uint64_t x = seed_of(i);
        for (uint64_t k = 0; k < opt.steps; k++) {
            x = x * LCG_A + LCG_C;
            __asm__ volatile("" : "+r"(x));
        }
        if (x != expected(i, opt.steps)) {
            fprintf(stderr, "disc_client: the checker disagrees with the job\n");
            return 2;
        }
        sink += x;
    }
    printf("disc_client: one job is about %.0f us of CPU here (%llu steps)\n",
           (now_s() - t0) / 32 * 1e6, (unsigned long long)opt.steps);

    char star[32];
    snprintf(star, sizeof(star), "*:%u", opt.port);
    const char *servers[] = { star, NULL };
    struct pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 0;
    cfg.ppservers = servers;
    cfg.secret_file = opt.secret_file;
    cfg.broadcast = opt.broadcast;
    pp_server *srv;
    double start = now_s();
    int r = pp_server_new(&cfg, &srv);
    if (r < 0) {
        printf("disc_client: FAIL pp_server_new: %s\n", strerror(-r));
        return 2;
    }

    /* Discovery. */
    if (opt.expect_nodes > 0) {
        int up = 0;
        while ((up = count_up(srv)) < opt.expect_nodes && now_s() - start < opt.discover_ms / 1000.0)
            sleep_ms(10);
        if (up < opt.expect_nodes) {
            fail("%d node(s) UP after %u ms, want %d", up, opt.discover_ms, opt.expect_nodes);
            print_nodes(srv, "when discovery gave up");
            pp_server_destroy(srv);
            return 1;
        }
        printf("disc_client: %d node(s) UP %.3f s after pp_server_new\n", up, now_s() - start);
        print_nodes(srv, "found");
    }

    /* The run. */
    double run0 = now_s();
    uint64_t next = 0, limit = opt.jobs; /* limit: what was submitted, if a submit failed */
    while (atomic_load(&ndone) < limit) {
        if (now_s() - run0 > opt.run_ms / 1000.0) {
            fail("run: only %llu of %llu jobs called back after %u ms",
                 (unsigned long long)atomic_load(&ndone), (unsigned long long)opt.jobs, opt.run_ms);
            break;
        }
        due_hooks(srv);
        bool more = false;
        while (next < limit && next - atomic_load(&ndone) < opt.window) {
            struct job_arg a = { next, opt.steps };
            struct pp_submit_opts so = { .callback = on_done, .callback_arg = (void *)(uintptr_t)next };
            r = pp_submit(srv, work, &a, sizeof(a), &so, NULL);
            if (r < 0) {
                fail("pp_submit job %llu: %s", (unsigned long long)next, strerror(-r));
                limit = next; /* stop submitting; wait for what was */
                break;
            }
            next++;
            more = true;
            if ((next & 63) == 0)
                break; /* look at the hooks now and then */
        }
        if (!more)
            sleep_ms(1);
    }
    due_hooks(srv); /* a threshold == jobs */
    r = pp_wait(srv, NULL, 30000);
    if (r < 0)
        fail("pp_wait: %s", strerror(-r));
    double run_s = now_s() - run0;
    printf("disc_client: run: %llu jobs called back in %.3f s (%.0f jobs/s); %llu failed, "
           "%llu wrong results, %llu duplicate callbacks\n",
           (unsigned long long)atomic_load(&ndone), run_s, atomic_load(&ndone) / run_s,
           (unsigned long long)atomic_load(&nfailed), (unsigned long long)atomic_load(&nbad),
           (unsigned long long)atomic_load(&ndup));
    for (unsigned i = 0; i < nmsgs; i++)
        printf("disc_client:   %s\n", first_msgs[i]);
    if (atomic_load(&nfailed))
        fail("%llu job(s) failed", (unsigned long long)atomic_load(&nfailed));
    if (atomic_load(&nbad))
        fail("%llu wrong result(s)", (unsigned long long)atomic_load(&nbad));
    for (int h = 0; h < opt.nhooks; h++)
        if (!opt.hook[h].done)
            fail("hook at %llu never ran", (unsigned long long)opt.hook[h].at);
    check_once("after the run");
    print_nodes(srv, "after the run");

    /* The linger: the test sends forged and replayed beacons meanwhile. */
    if (opt.linger_ms) {
        double l0 = now_s();
        if (opt.linger_start) {
            FILE *f = fopen(opt.linger_start, "w");
            if (f) {
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
            }
        }
        printf("disc_client: lingering (at most %u ms)\n", opt.linger_ms);
        fflush(stdout);
        bool ended = false;
        while (now_s() - l0 < opt.linger_ms / 1000.0) {
            if (file_exists(opt.linger_end)) {
                ended = true;
                break;
            }
            sleep_ms(50);
        }
        if (ended)
            sleep_ms(opt.grace_ms);
        printf("disc_client: lingered %.3f s (%s)\n", now_s() - l0,
               ended ? "ended by --linger-end, plus --grace" : "the whole --linger");
    }
    check_once("after the linger");
    final_checks(srv);
    print_nodes(srv, "at the end");
    pp_print_stats(srv, stdout);
    pp_server_destroy(srv);
    free(calls);
    (void)sink;
    if (failures) {
        printf("disc_client: FAIL (%d check(s))\n", failures);
        return 1;
    }
    printf("disc_client: PASS\n");
    return 0;
}
