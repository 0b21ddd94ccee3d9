// Description: the pprocess tutorial's examples ported to pp (pmap, Map, Queue, Exchange, start/channels, a continuous queue, reuse), each checked cell by cell and by its printed text against the sequential result.
//
// Each test is one example of reference/pprocess-tutorial.txt (the files
// named there, examples/simple_*.py of pprocess): `calculate` over an N x N
// array, where cell (i, j) is i * N + j after a simulated delay; the
// parallel result is compared cell by cell with the same array computed
// sequentially (the tutorial's simple_map / simple1 / simple2), and the
// text the example prints (its "Calculating..." / "Finishing..." lines and
// one line of values per row, separated by spaces, as Python 2's
// `print result,` then `print` writes them) is built and compared with the
// text of the sequential array.  "Time taken:" is printed, never compared.
//
// Sizes: the examples use N = 10, limit = 10 and time.sleep(delay) with
// delay = 1 s per cell (100 s sequentially); here N = 10 but the delay is
// about 1 ms (kDelayUs, varied per cell) and the limit 2 on a server of 4
// workers, so that the whole file runs in well under 10 s on two cores,
// sanitizers included, and so that the collector's limit, not the pool
// size, is what bounds the jobs running at once (checked through the
// shared scratch page).
//
// Also: simple_create_map (Map.create(): pp_collector_create forks the
// caller), simple_background_queue (BackgroundCallable + BackgroundQueue:
// pp_background_start in a process that exits at once, pp_background_open
// here) and simple_persistent_queue (N background sockets at once).  The
// two background examples run a pp_server inside each background job (as
// their task() runs a Queue): the thread sanitizer cannot follow that (a
// threaded process forked from a threaded one), so they report themselves
// skipped under it.
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

constexpr int N = 10;              /* the examples' N */
constexpr long kDelayUs = 1000;    /* the examples sleep 1 s per cell; ~1 ms here */
constexpr unsigned kLimit = 2;     /* the examples' limit (10 there) */
constexpr int kWorkers = 4;        /* more workers than the limit */
constexpr int kWaitMs = 30000;     /* pp_collector_next: never hang a broken run */

/* ------------------------------------------------------------------ */
/* The work: calculate, and what the jobs exchange                     */
/* ------------------------------------------------------------------ */

/*
 * time.sleep(delay * random.random()), the examples' other (commented)
 * delay: they simulate work by sleeping.  Here 0.25 to 1.75 times kDelayUs,
 * fixed per cell, so that jobs end out of submission order and the
 * PP_ORDERED examples show that the collector, not the timing, orders
 * them.
 */
void simulate_work(int32_t i, int32_t j)
{
    long us = kDelayUs / 4 + (long)(mix64((uint64_t)i * N + (uint64_t)j) % (uint64_t)(kDelayUs * 3 / 2));
    struct timespec ts = { 0, us * 1000 };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* "A supposedly time-consuming calculation on 'i' and 'j'." */
int64_t calculate(int32_t i, int32_t j)
{
    simulate_work(i, j);
    return (int64_t)i * N + j;
}

struct Cell {            /* the argument: one (i, j) pair */
    int32_t i, j;
};

struct Placed {          /* (i, j, result), what the Queue/Exchange examples return or send */
    int32_t i, j;
    int64_t value;
};

struct Reused {          /* the reusable example's result: the value and who computed it */
    int64_t value;
    int32_t pid;
    int32_t worker;
};

/* Counts the job in scratch()->running / max_running (how many ran at once). */
struct Running {
    Running()
    {
        long now = scratch()->running.fetch_add(1) + 1;
        long seen = scratch()->max_running.load();
        while (now > seen && !scratch()->max_running.compare_exchange_weak(seen, now)) {
        }
    }
    ~Running() { scratch()->running.fetch_sub(1); }
};

/* Reads the job's argument as a T, or fails the job. */
template <typename T> bool arg_as(pp_job *job, T *out)
{
    size_t len;
    const void *a = pp_job_arg(job, &len);
    if (len != sizeof(T))
        return false;
    memcpy(out, a, sizeof(T));
    return true;
}

template <typename T> int set_result(pp_job *job, const T &v)
{
    void *out = pp_job_result(job, sizeof v);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "pp_job_result(%zu) failed", sizeof v);
    memcpy(out, &v, sizeof v);
    return 0;
}

/* pmap / Map (MakeParallel(calculate)): the value alone is the result. */
extern "C" int job_calculate(pp_job *job)
{
    Cell c;
    if (!arg_as(job, &c))
        return pp_job_fail(job, EINVAL, "want a Cell");
    Running r;
    return set_result(job, calculate(c.i, c.j));
}

/* Queue / Exchange (simple_managed_queue, simple_managed): returns (i, j, value). */
extern "C" int job_calculate_placed(pp_job *job)
{
    Cell c;
    if (!arg_as(job, &c))
        return pp_job_fail(job, EINVAL, "want a Cell");
    Running r;
    return set_result(job, Placed{ c.i, c.j, calculate(c.i, c.j) });
}

/* simple_start: calculate(ch, i, j) sends (i, j, value) and returns nothing. */
extern "C" int job_calculate_send(pp_job *job)
{
    Cell c;
    if (!arg_as(job, &c))
        return pp_job_fail(job, EINVAL, "want a Cell");
    Running r;
    Placed p{ c.i, c.j, calculate(c.i, c.j) };
    int rc = pp_job_send(job, &p, sizeof p);
    if (rc < 0)
        return pp_job_fail(job, rc, "pp_job_send: %s", strerror(-rc));
    return 0;
}

/* simple_continuous_queue: calculate(ch, i) sends a whole row, cell by cell. */
extern "C" int job_calculate_row(pp_job *job)
{
    int32_t i;
    if (!arg_as(job, &i))
        return pp_job_fail(job, EINVAL, "want a row number");
    Running r;
    for (int32_t j = 0; j < N; j++) {
        Placed p{ i, j, calculate(i, j) };
        int rc = pp_job_send(job, &p, sizeof p);
        if (rc < 0)
            return pp_job_fail(job, rc, "pp_job_send: %s", strerror(-rc));
    }
    return 0;
}

/* simple_managed_map_reusable: the value, and the process that computed it. */
extern "C" int job_calculate_reused(pp_job *job)
{
    Cell c;
    if (!arg_as(job, &c))
        return pp_job_fail(job, EINVAL, "want a Cell");
    Running r;
    return set_result(job, Reused{ calculate(c.i, c.j), (int32_t)getpid(),
                                   (int32_t)pp_job_worker(job) });
}

/* ------------------------------------------------------------------ */
/* The sequential version and the printed text                         */
/* ------------------------------------------------------------------ */

/* simple_map.py / simple1.py: every cell in turn, in this process. */
const std::vector<int64_t> &sequential()
{
    static const std::vector<int64_t> results = [] {
        std::vector<int64_t> r;
        for (int32_t i = 0; i < N; i++)
            for (int32_t j = 0; j < N; j++)
                r.push_back(calculate(i, j));
        return r;
    }();
    return results;
}

/* "# Show the results.": one line per row, the values separated by spaces. */
std::string show(const std::vector<int64_t> &results)
{
    std::string out;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++) {
            if (j > 0)
                out += ' ';
            out += std::to_string(results[(size_t)i * N + j]);
        }
        out += '\n';
    }
    return out;
}

void expect_cells(const std::vector<int64_t> &got)
{
    const std::vector<int64_t> &want = sequential();
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < want.size(); k++)
        EXPECT_EQ(got[k], want[k]) << "cell (" << k / N << ", " << k % N << ")";
}

std::vector<Cell> sequence()
{
    std::vector<Cell> s;
    for (int32_t i = 0; i < N; i++)
        for (int32_t j = 0; j < N; j++)
            s.push_back(Cell{ i, j });
    return s;
}

struct CollectorDeleter {
    void operator()(pp_collector *c) const { pp_collector_destroy(c); }
};
using CollectorPtr = std::unique_ptr<pp_collector, CollectorDeleter>;

/* The Exchange's D and its store_data (pp_collector_finish's handler). */
struct Exchange {
    pp_collector *c = nullptr;      /* the handler has no collector argument */
    std::vector<int64_t> D = std::vector<int64_t>((size_t)N * N, 0);
    std::vector<int> stored = std::vector<int>((size_t)N * N, 0);
    int messages = 0, bad = 0;
};

void store_data(const void *data, size_t len, void *arg)
{
    Exchange *x = static_cast<Exchange *>(arg);
    x->messages++;
    Placed p;
    if (pp_collector_status(x->c) < 0 || len != sizeof p) {
        x->bad++;
        ADD_FAILURE() << "job " << pp_collector_job(x->c) << ": status "
                      << pp_collector_status(x->c) << ", " << len << " bytes: "
                      << (pp_collector_error(x->c) ? pp_collector_error(x->c) : "");
        return;
    }
    memcpy(&p, data, sizeof p);
    if (p.i < 0 || p.i >= N || p.j < 0 || p.j >= N) {
        x->bad++;
        ADD_FAILURE() << "cell (" << p.i << ", " << p.j << ") out of range";
        return;
    }
    x->D[(size_t)p.i * N + p.j] = p.value;
    x->stored[(size_t)p.i * N + p.j]++;
}

class Tutorial : public ::testing::Test {
protected:
    void SetUp() override
    {
        sequential(); /* computed once, before any timing */
        scratch_reset();
        t0 = now_ms();
    }
    void TearDown() override { srv.reset(); }

    void start(int ncpus)
    {
        srv = make_server(ncpus);
        ASSERT_TRUE(srv);
    }
    CollectorPtr collector(pp_order order, unsigned limit)
    {
        pp_collector *c = nullptr;
        EXPECT_EQ(pp_collector_new(srv.get(), order, limit, &c), 0);
        return CollectorPtr(c);
    }
    /* print "Time taken:", time.time() - t (shown, not compared) */
    void time_taken(const char *example)
    {
        printf("%s: Time taken: %.3f s (max %ld jobs at once)\n", example,
               (now_ms() - t0) / 1000.0, scratch()->max_running.load());
    }
    /* Each job ran (once it counts itself), and no more than limit at a time. */
    void expect_limit(long limit)
    {
        EXPECT_GE(scratch()->max_running.load(), 1);
        EXPECT_LE(scratch()->max_running.load(), limit);
        EXPECT_EQ(scratch()->running.load(), 0);
    }

    ServerPtr srv;
    double t0 = 0;
};

/* ------------------------------------------------------------------ */
/* The examples                                                        */
/* ------------------------------------------------------------------ */

// simple_pmap: pprocess.pmap(calculate, sequence, limit=limit).  pp_map
// has no limit argument: the server's worker count is the limit, so the
// server gets kLimit workers.  Results come back in input order.
TEST_F(Tutorial, SimplePmap)
{
    start((int)kLimit);
    std::vector<Cell> seq = sequence();
    std::vector<int64_t> results(seq.size(), -1);
    ASSERT_EQ(pp_map(srv.get(), job_calculate, seq.data(), sizeof(Cell), seq.size(),
                     results.data(), sizeof(int64_t)),
              0);
    expect_cells(results);
    EXPECT_EQ(show(results), show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_pmap");
}

// simple_managed_map: pprocess.Map(limit=limit), calc(i, j) for each cell,
// then results[i*N:i*N+N] row by row: a PP_ORDERED collector, one job per
// cell, whose messages (one result each) come back in submission order.
TEST_F(Tutorial, SimpleManagedMap)
{
    start(kWorkers);
    CollectorPtr results = collector(PP_ORDERED, kLimit);
    ASSERT_TRUE(results);
    std::string out = "Calculating...\n";
    for (const Cell &c : sequence())
        ASSERT_EQ(pp_collector_submit(results.get(), job_calculate, &c, sizeof c), 0);

    std::vector<int64_t> got;
    const void *d;
    size_t len;
    int r;
    while ((r = pp_collector_next(results.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_EQ(pp_collector_status(results.get()), 0) << pp_collector_error(results.get());
        ASSERT_EQ(pp_collector_job(results.get()), got.size()) << "out of submission order";
        ASSERT_EQ(len, sizeof(int64_t));
        int64_t v;
        memcpy(&v, d, sizeof v);
        got.push_back(v);
    }
    ASSERT_EQ(r, PP_END);
    expect_cells(got);
    out += show(got);
    EXPECT_EQ(out, "Calculating...\n" + show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_managed_map");
}

// simple_managed_queue: pprocess.Queue(limit=limit); calculate returns
// (i, j, value) and `for i, j, result in queue: results[i*N+j] = result`
// places each one as it arrives: a PP_ARRIVAL collector.
TEST_F(Tutorial, SimpleManagedQueue)
{
    start(kWorkers);
    CollectorPtr queue = collector(PP_ARRIVAL, kLimit);
    ASSERT_TRUE(queue);
    std::vector<int64_t> results((size_t)N * N, 0);
    std::vector<int> placed((size_t)N * N, 0);
    std::string out = "Calculating...\n";
    for (const Cell &c : sequence())
        ASSERT_EQ(pp_collector_submit(queue.get(), job_calculate_placed, &c, sizeof c), 0);

    out += "Finishing...\n";
    const void *d;
    size_t len;
    int r, n = 0;
    while ((r = pp_collector_next(queue.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_EQ(pp_collector_status(queue.get()), 0) << pp_collector_error(queue.get());
        ASSERT_EQ(len, sizeof(Placed));
        Placed p;
        memcpy(&p, d, sizeof p);
        ASSERT_TRUE(p.i >= 0 && p.i < N && p.j >= 0 && p.j < N) << p.i << " " << p.j;
        /* the job that computed (i, j) is the one submitted for it */
        EXPECT_EQ(pp_collector_job(queue.get()), (uint64_t)p.i * N + p.j);
        results[(size_t)p.i * N + p.j] = p.value;
        placed[(size_t)p.i * N + p.j]++;
        n++;
    }
    ASSERT_EQ(r, PP_END);
    EXPECT_EQ(n, N * N);
    for (size_t k = 0; k < placed.size(); k++)
        EXPECT_EQ(placed[k], 1) << "cell " << k;
    expect_cells(results);
    out += show(results);
    EXPECT_EQ(out, "Calculating...\nFinishing...\n" + show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_managed_queue");
}

// simple_managed: MyExchange(limit=limit) with store_data putting each
// (i, j, result) into exchange.D, then exchange.finish():
// pp_collector_finish with a handler, in this thread.
TEST_F(Tutorial, SimpleManaged)
{
    start(kWorkers);
    CollectorPtr c = collector(PP_ARRIVAL, kLimit);
    ASSERT_TRUE(c);
    Exchange exchange;
    exchange.c = c.get();
    std::string out = "Calculating...\n";
    for (const Cell &cell : sequence())
        ASSERT_EQ(pp_collector_submit(c.get(), job_calculate_placed, &cell, sizeof cell), 0);

    out += "Finishing...\n";
    EXPECT_EQ(pp_collector_finish(c.get(), store_data, &exchange), 0);
    EXPECT_EQ(exchange.messages, N * N);
    EXPECT_EQ(exchange.bad, 0);
    for (size_t k = 0; k < exchange.stored.size(); k++)
        EXPECT_EQ(exchange.stored[k], 1) << "cell " << k;
    expect_cells(exchange.D);
    out += show(exchange.D);
    EXPECT_EQ(out, "Calculating...\nFinishing...\n" + show(sequential()));
    const void *d;
    size_t len;
    EXPECT_EQ(pp_collector_next(c.get(), &d, &len, 0), PP_END); /* finish read everything */
    expect_limit(kLimit);
    time_taken("simple_managed");
}

// simple_start: exchange.start(calculate, i, j) where calculate(ch, i, j)
// does ch.send((i, j, i * N + j)) and returns nothing: the job sends its
// one message with pp_job_send and sets no result, so each job delivers
// exactly that message (no result message follows); collected with the
// same Exchange.
TEST_F(Tutorial, SimpleStart)
{
    start(kWorkers);
    CollectorPtr c = collector(PP_ARRIVAL, kLimit);
    ASSERT_TRUE(c);
    Exchange exchange;
    exchange.c = c.get();
    std::string out = "Calculating...\n";
    for (const Cell &cell : sequence())
        ASSERT_EQ(pp_collector_submit(c.get(), job_calculate_send, &cell, sizeof cell), 0);

    out += "Finishing...\n";
    EXPECT_EQ(pp_collector_finish(c.get(), store_data, &exchange), 0);
    EXPECT_EQ(exchange.messages, N * N); /* the sends alone: no empty result messages */
    EXPECT_EQ(exchange.bad, 0);
    for (size_t k = 0; k < exchange.stored.size(); k++)
        EXPECT_EQ(exchange.stored[k], 1) << "cell " << k;
    expect_cells(exchange.D);
    out += show(exchange.D);
    EXPECT_EQ(out, "Calculating...\nFinishing...\n" + show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_start");
}

// simple_continuous_queue: Queue(limit=limit, continuous=1), one job per
// row i that sends (i, j, value) for each j; the reader places them as they
// arrive.  Rows interleave; each row's cells arrive in the order sent.
TEST_F(Tutorial, SimpleContinuousQueue)
{
    start(kWorkers);
    CollectorPtr queue = collector(PP_ARRIVAL, kLimit);
    ASSERT_TRUE(queue);
    std::vector<int64_t> results((size_t)N * N, 0);
    std::vector<int> placed((size_t)N * N, 0);
    std::vector<int32_t> next_j(N, 0);
    std::string out = "Calculating...\n";
    for (int32_t i = 0; i < N; i++)
        ASSERT_EQ(pp_collector_submit(queue.get(), job_calculate_row, &i, sizeof i), 0);

    out += "Finishing...\n";
    const void *d;
    size_t len;
    int r, n = 0;
    while ((r = pp_collector_next(queue.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_EQ(pp_collector_status(queue.get()), 0) << pp_collector_error(queue.get());
        ASSERT_EQ(len, sizeof(Placed));
        Placed p;
        memcpy(&p, d, sizeof p);
        ASSERT_TRUE(p.i >= 0 && p.i < N && p.j >= 0 && p.j < N) << p.i << " " << p.j;
        EXPECT_EQ(pp_collector_job(queue.get()), (uint64_t)p.i); /* row i's job */
        EXPECT_EQ(p.j, next_j[p.i]) << "row " << p.i << " out of order";
        next_j[p.i] = p.j + 1;
        results[(size_t)p.i * N + p.j] = p.value;
        placed[(size_t)p.i * N + p.j]++;
        n++;
    }
    ASSERT_EQ(r, PP_END);
    EXPECT_EQ(n, N * N);
    for (size_t k = 0; k < placed.size(); k++)
        EXPECT_EQ(placed[k], 1) << "cell " << k;
    expect_cells(results);
    out += show(results);
    EXPECT_EQ(out, "Calculating...\nFinishing...\n" + show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_continuous_queue");
}

struct Ran {
    std::vector<int64_t> values;
    std::set<int32_t> pids, workers;
};

/* Runs the Map (PP_ORDERED) over every cell with job_calculate_reused. */
void run_reused_map(pp_server *srv, unsigned limit, Ran *ran)
{
    pp_collector *raw = nullptr;
    ASSERT_EQ(pp_collector_new(srv, PP_ORDERED, limit, &raw), 0);
    CollectorPtr results(raw);
    for (const Cell &c : sequence())
        ASSERT_EQ(pp_collector_submit(results.get(), job_calculate_reused, &c, sizeof c), 0);
    const void *d;
    size_t len;
    int r;
    while ((r = pp_collector_next(results.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_EQ(pp_collector_status(results.get()), 0) << pp_collector_error(results.get());
        ASSERT_EQ(pp_collector_job(results.get()), ran->values.size());
        ASSERT_EQ(len, sizeof(Reused));
        Reused u;
        memcpy(&u, d, sizeof u);
        ran->values.push_back(u.value);
        ran->pids.insert(u.pid);
        ran->workers.insert(u.worker);
    }
    ASSERT_EQ(r, PP_END);
}

// simple_managed_map_reusable (the tutorial calls it
// simple_manage_map_reusable): Map(limit=limit, reuse=1) with
// MakeReusable(calculate).  In pp every worker is a long-lived process
// that runs job after job, so reuse needs no flag and no wrapper: N * N
// jobs run in at most kWorkers processes, which are still the server's
// workers afterwards.
TEST_F(Tutorial, SimpleManagedMapReusable)
{
    start(kWorkers);
    std::string out = "Calculating...\n";
    Ran ran;
    run_reused_map(srv.get(), kLimit, &ran);
    ASSERT_FALSE(HasFatalFailure());
    expect_cells(ran.values);
    out += show(ran.values);
    EXPECT_EQ(out, "Calculating...\n" + show(sequential()));

    EXPECT_LT(ran.pids.size(), ran.values.size()); /* processes were reused */
    EXPECT_GE(ran.pids.size(), 1u);
    EXPECT_LE(ran.pids.size(), (size_t)kWorkers);
    EXPECT_LE(ran.workers.size(), ran.pids.size()); /* a worker slot keeps its process */
    for (int32_t w : ran.workers) {
        EXPECT_GE(w, 0);
        EXPECT_LT(w, kWorkers);
    }
    std::vector<pid_t> live = worker_pids();
    for (int32_t pid : ran.pids)
        EXPECT_NE(std::find(live.begin(), live.end(), (pid_t)pid), live.end())
            << "pid " << pid << " is not a live worker of the server";
    expect_limit(kLimit);
    time_taken("simple_managed_map_reusable");
}

// The contrast that shows the pid check above can tell: pprocess without
// reuse starts a process per computation; pp's restart mode (a fresh
// worker after each task) does the same, and then every job reports its
// own pid.
TEST_F(Tutorial, SimpleManagedMapWithoutReuse)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = kWorkers;
    cfg.restart = true;
    srv = make_server(cfg);
    ASSERT_TRUE(srv);
    Ran ran;
    run_reused_map(srv.get(), kLimit, &ran);
    ASSERT_FALSE(HasFatalFailure());
    expect_cells(ran.values);
    EXPECT_EQ(ran.pids.size(), ran.values.size()); /* one process per job */
    expect_limit(kLimit);
    time_taken("simple_managed_map without reuse (restart)");
}

// simple_create_map: results = pprocess.Map(limit=limit); for each cell,
// ch = results.create(); in the child: ch.send(calculate(i, j)), then the
// process exits (the try...finally): the PP_ORDERED collector gives the
// values in the order the children were created.
TEST_F(Tutorial, SimpleCreateMap)
{
    start(kWorkers);
    CollectorPtr results = collector(PP_ORDERED, kLimit);
    ASSERT_TRUE(results);
    std::string out = "Calculating...\n";
    for (int32_t i = 0; i < N; i++) {
        for (int32_t j = 0; j < N; j++) {
            pp_channel *ch = nullptr;
            ASSERT_EQ(pp_collector_create(results.get(), &ch), 0);
            if (ch) { /* the created process: calculation work, then its end */
                int64_t v;
                {
                    Running r;
                    v = calculate(i, j);
                }
                pp_channel_send(ch, &v, sizeof v);
                pp_channel_exit(ch);
            }
        }
    }
    std::vector<int64_t> got;
    const void *d;
    size_t len;
    int r;
    while ((r = pp_collector_next(results.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_EQ(pp_collector_status(results.get()), 0) << pp_collector_error(results.get());
        ASSERT_EQ(pp_collector_job(results.get()), got.size());
        ASSERT_EQ(len, sizeof(int64_t));
        int64_t v;
        memcpy(&v, d, sizeof v);
        got.push_back(v);
    }
    ASSERT_EQ(r, PP_END);
    expect_cells(got);
    out += show(got);
    EXPECT_EQ(out, "Calculating...\n" + show(sequential()));
    expect_limit(kLimit);
    time_taken("simple_create_map");
}

/* The result: a vector's bytes. */
int set_result_vec(pp_job *job, const std::vector<int64_t> &v)
{
    void *out = pp_job_result(job, v.size() * sizeof(int64_t));
    if (!out)
        return -ENOMEM;
    memcpy(out, v.data(), v.size() * sizeof(int64_t));
    return 0;
}

/* task() of the background examples: a Queue over the cells of rows
 * [first, first + rows), results placed as they arrive, returned whole
 * (with the first row's number in front, for the persistent example). */
struct TaskArg {
    int32_t first, rows;
};

extern "C" int job_task(pp_job *job)
{
    TaskArg a;
    if (!arg_as(job, &a))
        return pp_job_fail(job, EINVAL, "want a TaskArg");
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 2;
    pp_server *s = nullptr;
    int rc = pp_server_new(&cfg, &s);
    if (rc < 0)
        return pp_job_fail(job, rc, "pp_server_new: %s", strerror(-rc));
    pp_collector *queue = nullptr;
    rc = pp_collector_new(s, PP_ARRIVAL, kLimit, &queue);
    std::vector<int64_t> results((size_t)a.rows * N + 1, -1);
    results[0] = a.first;
    for (int32_t i = a.first; rc == 0 && i < a.first + a.rows; i++)
        for (int32_t j = 0; rc == 0 && j < N; j++) {
            Cell c{ i, j };
            rc = pp_collector_submit(queue, job_calculate_placed, &c, sizeof c);
        }
    const void *d;
    size_t len;
    while (rc == 0 && (rc = pp_collector_next(queue, &d, &len, kWaitMs)) == 0) {
        Placed p;
        if (len != sizeof p || pp_collector_status(queue) < 0)
            rc = -EPROTO;
        memcpy(&p, d, sizeof p);
        results[1 + (size_t)(p.i - a.first) * N + (size_t)p.j] = p.value;
    }
    pp_collector_destroy(queue);
    pp_server_destroy(s);
    if (rc != PP_END)
        return pp_job_fail(job, rc < 0 ? rc : EPROTO, "the task's queue failed");
    return set_result_vec(job, results);
}

std::string socket_path(const std::string &name)
{
    return "/tmp/pp-tutorial-" + std::to_string(getpid()) + "-" + name;
}

/* The --start half: a process that starts the callables and exits. */
void start_in_a_process_that_exits(const std::vector<std::string> &paths,
                                   const std::vector<TaskArg> &args)
{
    pid_t p = fork();
    if (p == 0) {
        for (size_t k = 0; k < paths.size(); k++)
            if (pp_background_start(paths[k].c_str(), job_task, &args[k], sizeof args[k]) != 0)
                _exit(1);
        _exit(0); /* "Discarded the callable." */
    }
    int st;
    ASSERT_EQ(waitpid(p, &st, 0), p);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
}

// simple_background_queue: BackgroundCallable("task.socket", task) started
// by a process that exits (--start), then BackgroundQueue("task.socket")
// here (--reconnect): one element, the whole results list.
TEST_F(Tutorial, SimpleBackgroundQueue)
{
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "the thread sanitizer cannot follow the pp_server the background task runs";
#endif
    std::string path = socket_path("task.socket");
    start_in_a_process_that_exits({ path }, { TaskArg{ 0, N } });
    ASSERT_FALSE(HasFatalFailure());
    std::string out = "Opening a queue.\nWaiting for persistent results\n";
    const char *paths[] = { path.c_str(), nullptr };
    pp_collector *q = nullptr;
    ASSERT_EQ(pp_background_open(paths, &q), 0);
    CollectorPtr queue(q);
    std::vector<int64_t> results;
    const void *d;
    size_t len;
    int r, elements = 0;
    while ((r = pp_collector_next(queue.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_GE(pp_collector_status(queue.get()), 0) << pp_collector_error(queue.get());
        ASSERT_EQ(len, ((size_t)N * N + 1) * sizeof(int64_t));
        results.resize((size_t)N * N + 1);
        memcpy(results.data(), d, len);
        elements++;
    }
    ASSERT_EQ(r, PP_END);
    EXPECT_EQ(elements, 1); /* "should only be one element" */
    results.erase(results.begin());
    expect_cells(results);
    out += show(results);
    EXPECT_EQ(out, "Opening a queue.\nWaiting for persistent results\n" + show(sequential()));
    queue.reset();
    struct stat st;
    EXPECT_TRUE(wait_until([&] { return lstat(path.c_str(), &st) != 0; }, 10000))
        << "the socket was not removed after its results were read";
    time_taken("simple_background_queue");
}

// simple_persistent_queue: one BackgroundCallable per row ("task-%d.socket"),
// then a PersistentQueue connected to all of them; each element is
// (i, results of row i).
TEST_F(Tutorial, SimplePersistentQueue)
{
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "the thread sanitizer cannot follow the pp_server each background task runs";
#endif
    std::vector<std::string> paths;
    std::vector<TaskArg> args;
    for (int32_t i = 0; i < N; i++) {
        paths.push_back(socket_path("task-" + std::to_string(i) + ".socket"));
        args.push_back(TaskArg{ i, 1 });
    }
    start_in_a_process_that_exits(paths, args);
    ASSERT_FALSE(HasFatalFailure());
    std::vector<const char *> p;
    for (auto &x : paths)
        p.push_back(x.c_str());
    p.push_back(nullptr);
    pp_collector *q = nullptr;
    ASSERT_EQ(pp_background_open(p.data(), &q), 0);
    CollectorPtr queue(q);
    std::vector<std::vector<int64_t>> rows((size_t)N);
    const void *d;
    size_t len;
    int r;
    while ((r = pp_collector_next(queue.get(), &d, &len, kWaitMs)) == 0) {
        ASSERT_GE(pp_collector_status(queue.get()), 0) << pp_collector_error(queue.get());
        ASSERT_EQ(len, ((size_t)N + 1) * sizeof(int64_t));
        std::vector<int64_t> v((size_t)N + 1);
        memcpy(v.data(), d, len);
        ASSERT_GE(v[0], 0);
        ASSERT_LT(v[0], N);
        ASSERT_TRUE(rows[(size_t)v[0]].empty()) << "row " << v[0] << " twice";
        EXPECT_EQ(pp_collector_job(queue.get()), (uint64_t)v[0]); /* task-i is job i */
        rows[(size_t)v[0]].assign(v.begin() + 1, v.end());
    }
    ASSERT_EQ(r, PP_END);
    std::vector<int64_t> results;
    for (auto &row : rows)
        results.insert(results.end(), row.begin(), row.end());
    expect_cells(results);
    EXPECT_EQ(show(results), show(sequential()));
    time_taken("simple_persistent_queue");
}

} // namespace
