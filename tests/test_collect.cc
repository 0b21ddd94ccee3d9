// Description: collectors and pp_job_send: submission and arrival order, many values per job, limit, failures and crashes mid-stream (also SIGKILLs at random instants), message sizes 0..PP_MAX_PAYLOAD, Exchange (finish), errors; create() (forked children as jobs); background jobs on UNIX sockets (start, creator exits, reconnect from other processes, several sockets, stale sockets, crashes, a pp_server inside).
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <fstream>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

struct StreamArg {
    uint64_t job;      /* its own number */
    uint64_t nvalues;  /* values to send: job * 1000000 + k */
    uint32_t delay_us; /* spin before sending */
    int32_t end;       /* 0: result = job; 1: no result; 2: fail after the values;
                          3: crash (SIGSEGV) after the values; 4: result of `size` bytes */
    uint64_t size;     /* end 4, and the size of each value when > 8 (pattern) */
    uint32_t gap_us;   /* spin between values */
};

void spin_us(uint32_t us)
{
    auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    while (std::chrono::steady_clock::now() < end) {
    }
}

extern "C" int job_stream(pp_job *job)
{
    size_t len;
    StreamArg a;
    memcpy(&a, pp_job_arg(job, &len), sizeof(a));
    long now = scratch()->running.fetch_add(1) + 1;
    long seen = scratch()->max_running.load();
    while (now > seen && !scratch()->max_running.compare_exchange_weak(seen, now)) {
    }
    spin_us(a.delay_us);
    std::vector<unsigned char> big(a.size > 8 ? a.size : 0);
    for (uint64_t k = 0; k < a.nvalues; k++) {
        int r;
        if (a.size > 8) {
            fill_pattern(big.data(), big.size(), a.job * 1000000 + k);
            r = pp_job_send(job, big.data(), big.size());
        } else {
            uint64_t v = a.job * 1000000 + k;
            r = pp_job_send(job, &v, sizeof v);
        }
        if (r < 0) {
            scratch()->running.fetch_sub(1);
            return pp_job_fail(job, r, "pp_job_send: %s", strerror(-r));
        }
        if (a.gap_us)
            spin_us(a.gap_us);
    }
    scratch()->running.fetch_sub(1);
    switch (a.end) {
    case 1:
        return 0;
    case 2:
        return pp_job_fail(job, EIO, "job %llu failed after its values",
                           (unsigned long long)a.job);
    case 3:
        raise(SIGSEGV);
        return 0;
    case 4: {
        void *out = pp_job_result(job, a.size);
        if (!out)
            return -ENOMEM;
        fill_pattern(out, a.size, a.job);
        return 0;
    }
    default: {
        uint64_t *out = static_cast<uint64_t *>(pp_job_result(job, sizeof(uint64_t)));
        *out = a.job;
        return 7;
    }
    }
}

extern "C" int job_send_unconnected(pp_job *job)
{
    uint64_t v = 1;
    int r = pp_job_send(job, &v, sizeof v);
    int *out = static_cast<int *>(pp_job_result(job, sizeof(int)));
    *out = r;
    return 0;
}

class Collect : public ::testing::Test {
protected:
    void SetUp() override
    {
        scratch_reset();
        srv = make_server(4);
        ASSERT_TRUE(srv);
    }
    void TearDown() override
    {
        srv.reset();
        // A background job a failed test did not read to the end waits
        // for a reader forever: stop it by its pid (ids 5..29 are theirs).
        for (int i = 5; i < 30; i++) {
            pid_t p = scratch()->pid[i].load();
            if (p > 1 && kill(p, 0) == 0 && getsid(p) == scratch()->release[i].load())
                kill(p, SIGKILL);
        }
        std::string prefix = "/tmp/pp-bg-" + std::to_string(getpid()) + "-";
        for (const char *n : { "once", "many0", "many1", "many2", "stale", "missing", "crash",
                               "file", "killed", "server" })
            unlink((prefix + n + ".socket").c_str());
    }

    pp_collector *make(pp_order order, unsigned limit = 0)
    {
        pp_collector *c = nullptr;
        EXPECT_EQ(pp_collector_new(srv.get(), order, limit, &c), 0);
        return c;
    }
    ServerPtr srv;
};

struct Msg {
    uint64_t job;
    int status;
    std::string err;
    std::vector<unsigned char> data;
};

// Reads until PP_END (or a failure of next), each message copied; after
// each, after(how many so far), if given (a reader that takes its time).
std::vector<Msg> read_all(pp_collector *c, int timeout_ms = 60000,
                          const std::function<void(size_t)> &after = nullptr)
{
    std::vector<Msg> out;
    const void *d;
    size_t n;
    int r;
    while ((r = pp_collector_next(c, &d, &n, timeout_ms)) == 0) {
        Msg m;
        m.job = pp_collector_job(c);
        m.status = pp_collector_status(c);
        m.err = pp_collector_error(c) ? pp_collector_error(c) : "";
        m.data.assign(static_cast<const unsigned char *>(d),
                      static_cast<const unsigned char *>(d) + n);
        out.push_back(std::move(m));
        if (after)
            after(out.size());
    }
    EXPECT_EQ(r, PP_END);
    return out;
}

uint64_t u64(const Msg &m)
{
    uint64_t v = ~0ull;
    if (m.data.size() == sizeof v)
        memcpy(&v, m.data.data(), sizeof v);
    return v;
}

// The next count messages are 8-byte values first, first + 1, ...
void read_values(pp_collector *c, uint64_t first, uint64_t count)
{
    const void *d;
    size_t n;
    for (uint64_t k = 0; k < count; k++) {
        ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0) << k;
        ASSERT_EQ(n, 8u);
        uint64_t v;
        memcpy(&v, d, 8);
        ASSERT_EQ(v, first + k);
    }
}

// Job i sends i+1 values and finishes last when it was submitted first:
// the reader still gets job 0's messages, then job 1's, ...; the result
// comes after the values, with the job's status.  The collector goes on
// after PP_END.
TEST_F(Collect, OrderedFollowsSubmissionOrder)
{
    pp_collector *c = make(PP_ORDERED);
    const int N = 24;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            StreamArg a{ (uint64_t)i, (uint64_t)i + 1, (uint32_t)(N - i) * 400, 0, 0, 0 };
            ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        }
        std::vector<Msg> m = read_all(c);
        size_t k = 0;
        for (int i = 0; i < N; i++) {
            for (int v = 0; v <= i; v++, k++) {
                ASSERT_LT(k, m.size());
                EXPECT_EQ(m[k].job, (uint64_t)(round * N + i));
                EXPECT_EQ(m[k].status, 0);
                EXPECT_EQ(u64(m[k]), (uint64_t)i * 1000000 + (uint64_t)v) << i << " " << v;
            }
            ASSERT_LT(k, m.size());
            EXPECT_EQ(u64(m[k]), (uint64_t)i); // the result
            EXPECT_EQ(m[k].status, 7);
            EXPECT_EQ(m[k].job, (uint64_t)(round * N + i));
            k++;
        }
        EXPECT_EQ(k, m.size());
    }
    const void *d;
    size_t n;
    EXPECT_EQ(pp_collector_next(c, &d, &n, 0), PP_END);
    pp_collector_destroy(c);
}

// Arrival order: every message once; each job's own messages in the
// order sent, its result last; the quick jobs' results come before the
// slow job's.
TEST_F(Collect, ArrivalDeliversAsTheyCome)
{
    pp_collector *c = make(PP_ARRIVAL);
    const int N = 16;
    StreamArg slow{ 0, 3, 200000, 0, 0, 0 }; // 200 ms
    ASSERT_EQ(pp_collector_submit(c, job_stream, &slow, sizeof slow), 0);
    for (int i = 1; i < N; i++) {
        StreamArg a{ (uint64_t)i, 5, 0, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    }
    std::vector<Msg> m = read_all(c);
    ASSERT_EQ(m.size(), (size_t)(3 + 1 + (N - 1) * 6));
    std::map<uint64_t, uint64_t> next; // per job: the next value expected
    std::map<uint64_t, bool> ended;
    for (auto &x : m) {
        ASSERT_FALSE(ended[x.job]) << "a message after the job's result";
        if (x.status == 7) {
            EXPECT_EQ(u64(x), x.job);
            EXPECT_EQ(next[x.job], x.job == 0 ? 3u : 5u);
            ended[x.job] = true;
        } else {
            EXPECT_EQ(u64(x), x.job * 1000000 + next[x.job]);
            next[x.job]++;
        }
    }
    EXPECT_EQ(ended.size(), (size_t)N);
    EXPECT_EQ(m.back().job, 0u); // the slow one ends last
    pp_collector_destroy(c);
}

// No more than `limit` of the collector's jobs run at once (the jobs
// count themselves in shared memory), in both orders.
TEST_F(Collect, LimitIsHonoured)
{
    for (pp_order o : { PP_ORDERED, PP_ARRIVAL }) {
        scratch_reset();
        pp_collector *c = make(o, 2);
        for (int i = 0; i < 40; i++) {
            StreamArg a{ (uint64_t)i, 2, 3000, 0, 0, 0 };
            ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        }
        std::vector<Msg> m = read_all(c);
        EXPECT_EQ(m.size(), 40u * 3);
        EXPECT_LE(scratch()->max_running.load(), 2);
        EXPECT_GE(scratch()->max_running.load(), 1);
        pp_collector_destroy(c);
    }
}

// A continuous job: 100,000 values, in order, then its result.
TEST_F(Collect, OneJobStreamsManyValues)
{
    for (pp_order o : { PP_ORDERED, PP_ARRIVAL }) {
        pp_collector *c = make(o);
        StreamArg a{ 3, 100000, 0, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        read_values(c, 3000000, 100000);
        ASSERT_FALSE(HasFatalFailure());
        const void *d;
        size_t n;
        ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
        EXPECT_EQ(pp_collector_status(c), 7);
        EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
        pp_collector_destroy(c);
    }
}

// Small messages of one job are kept as a run (one header, then each
// message's length and bytes): streams of four jobs at once, of four
// sizes, interleave in an arrival-order collector and follow each other
// in an ordered one; every value arrives once, whole, in its job's order,
// named by its job.  Then a collector destroyed in the middle of a run.
TEST_F(Collect, InterleavedStreamsOfSmallMessages)
{
    const uint64_t sizes[] = { 0, 21, 40, 100 }; // 0: 8-byte values
    const uint64_t V = 20000;
    for (pp_order o : { PP_ARRIVAL, PP_ORDERED }) {
        pp_collector *c = make(o);
        for (uint64_t i = 0; i < 4; i++) {
            StreamArg a{ i, V, 0, 0, sizes[i], 0 };
            ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        }
        uint64_t next[4] = { 0, 0, 0, 0 }, switches = 0, last = ~0ull;
        bool ended[4] = { false, false, false, false };
        const void *d;
        size_t n;
        int r;
        while ((r = pp_collector_next(c, &d, &n, 60000)) == 0) {
            uint64_t j = pp_collector_job(c);
            ASSERT_LT(j, 4u);
            ASSERT_FALSE(ended[j]) << "a message after job " << j << "'s result";
            switches += j != last;
            last = j;
            if (pp_collector_status(c) == 7) {
                ASSERT_EQ(next[j], V);
                ended[j] = true;
                continue;
            }
            ASSERT_EQ(pp_collector_status(c), 0);
            uint64_t want = j * 1000000 + next[j];
            if (sizes[j] > 8) {
                ASSERT_EQ(n, sizes[j]);
                EXPECT_TRUE(check_pattern(d, n, want)) << "job " << j << " value " << next[j];
            } else {
                ASSERT_EQ(n, 8u);
                uint64_t v;
                memcpy(&v, d, 8);
                ASSERT_EQ(v, want);
            }
            next[j]++;
        }
        EXPECT_EQ(r, PP_END);
        for (int j = 0; j < 4; j++)
            EXPECT_TRUE(ended[j]) << j;
        if (o == PP_ORDERED) {
            EXPECT_EQ(switches, 4u); // job by job
        }
        pp_collector_destroy(c);
    }
    // Destroyed after 1,000 of 50,000 values: it waits for the job, frees
    // the rest (ASan's leak check runs over this test).
    pp_collector *c = make(PP_ARRIVAL);
    StreamArg a{ 1, 50000, 0, 0, 0, 0 };
    ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    read_values(c, 1000000, 1000);
    pp_collector_destroy(c);
}

// A job that fails or crashes after sending: its values, then its
// failure; the other jobs go on; a job with no result ends silently.
TEST_F(Collect, FailuresComeAfterTheValuesSent)
{
    pp_collector *c = make(PP_ORDERED);
    StreamArg ok{ 0, 2, 0, 0, 0, 0 }, fail{ 1, 3, 0, 2, 0, 0 }, crash{ 2, 4, 0, 3, 0, 0 },
        none{ 3, 1, 0, 1, 0, 0 }, after{ 4, 1, 0, 0, 0, 0 };
    for (StreamArg *a : { &ok, &fail, &crash, &none, &after })
        ASSERT_EQ(pp_collector_submit(c, job_stream, a, sizeof *a), 0);
    std::vector<Msg> m = read_all(c);
    ASSERT_EQ(m.size(), 3u + 4u + 5u + 1u + 2u);
    EXPECT_EQ(m[4].job, 1u);
    EXPECT_EQ(u64(m[5]), 1000002u);
    EXPECT_EQ(m[6].job, 1u);
    EXPECT_EQ(m[6].status, -EIO);
    EXPECT_EQ(m[6].err, "job 1 failed after its values");
    EXPECT_EQ(std::string(m[6].data.begin(), m[6].data.end()), m[6].err);
    for (int k = 0; k < 4; k++)
        EXPECT_EQ(u64(m[7 + k]), 2000000u + (uint64_t)k);
    EXPECT_EQ(m[11].job, 2u);
    EXPECT_EQ(m[11].status, -ECHILD);
    EXPECT_NE(m[11].err.find("signal"), std::string::npos) << m[11].err;
    EXPECT_EQ(m[12].job, 3u); // its one value; no result message
    EXPECT_EQ(m[12].status, 0);
    EXPECT_EQ(m[13].job, 4u);
    EXPECT_EQ(m[14].status, 7);
    pp_collector_destroy(c);
}

// Sizes through the inline path, the block path and the largest payload;
// -E2BIG beyond it.  Each value is a pattern checked in place.
TEST_F(Collect, MessageSizes)
{
    pp_collector *c = make(PP_ARRIVAL);
    for (uint64_t size : { 9ull, 100ull, 192ull, 193ull, 4096ull, 1ull << 20, 16ull << 20 }) {
        StreamArg a{ size, 3, 0, 1, size, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        for (uint64_t k = 0; k < 3; k++) {
            const void *d;
            size_t n;
            ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0) << size;
            ASSERT_EQ(n, size);
            EXPECT_TRUE(check_pattern(d, n, size * 1000000 + k)) << size << " " << k;
        }
    }
    const void *d;
    size_t n;
    EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
    pp_collector_destroy(c);
}

extern "C" int job_send_sizes(pp_job *job)
{
    int r[3];
    static const unsigned char zero = 0;
    r[0] = pp_job_send(job, &zero, 0);
    std::vector<unsigned char> big(PP_MAX_PAYLOAD);
    fill_pattern(big.data(), big.size(), 42);
    r[1] = pp_job_send(job, big.data(), big.size());
    r[2] = pp_job_send(job, big.data(), (size_t)PP_MAX_PAYLOAD + 1);
    int *out = static_cast<int *>(pp_job_result(job, sizeof r));
    memcpy(out, r, sizeof r);
    return 0;
}

TEST_F(Collect, EmptyAndLargestMessages)
{
    pp_collector *c = make(PP_ORDERED);
    ASSERT_EQ(pp_collector_submit(c, job_send_sizes, nullptr, 0), 0);
    const void *d;
    size_t n;
    ASSERT_EQ(pp_collector_next(c, &d, &n, 120000), 0);
    EXPECT_EQ(n, 0u);
    EXPECT_NE(d, nullptr);
    ASSERT_EQ(pp_collector_next(c, &d, &n, 120000), 0);
    ASSERT_EQ(n, (size_t)PP_MAX_PAYLOAD);
    EXPECT_TRUE(check_pattern(d, n, 42));
    ASSERT_EQ(pp_collector_next(c, &d, &n, 120000), 0);
    ASSERT_EQ(n, sizeof(int) * 3);
    int r[3];
    memcpy(r, d, sizeof r);
    EXPECT_EQ(r[0], 0);
    EXPECT_EQ(r[1], 0);
    EXPECT_EQ(r[2], -E2BIG);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 1000), PP_END);
    pp_collector_destroy(c);
}

struct Sum {
    uint64_t values = 0, sum = 0, fails = 0;
    pp_collector *c = nullptr;
};

void add_value(const void *data, size_t len, void *arg)
{
    Sum *s = static_cast<Sum *>(arg);
    if (pp_collector_status(s->c) < 0) {
        s->fails++;
        return;
    }
    uint64_t v;
    ASSERT_EQ(len, 8u);
    memcpy(&v, data, 8);
    s->values++;
    s->sum += v;
}

// Exchange: the handler sees every message in the calling thread;
// finish returns the first failure's status.
TEST_F(Collect, FinishCallsTheHandlerForEveryMessage)
{
    pp_collector *c = make(PP_ARRIVAL, 3);
    uint64_t want = 0;
    for (int i = 0; i < 10; i++) {
        StreamArg a{ (uint64_t)i, 10, 0, i == 6 ? 2 : 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        for (uint64_t k = 0; k < 10; k++)
            want += (uint64_t)i * 1000000 + k;
        if (i != 6)
            want += (uint64_t)i; // its result
    }
    Sum s;
    s.c = c;
    EXPECT_EQ(pp_collector_finish(c, add_value, &s), -EIO);
    EXPECT_EQ(s.values, 100u + 9u);
    EXPECT_EQ(s.fails, 1u);
    EXPECT_EQ(s.sum, want);
    pp_collector_destroy(c);
}

// Workers SIGKILLed at random instants while jobs stream: each job
// delivers a prefix of its values in order and then either its result or
// its failure (-ECHILD), exactly once; nothing hangs.  max_bytes: the
// bound, with a reader that pauses now and then so that jobs wait at it
// (and are killed there too).
static void random_kills(pp_collector *c, size_t max_bytes, unsigned seed)
{
    ASSERT_EQ(pp_collector_set_max_bytes(c, max_bytes), 0);
    const int N = 60;
    for (int i = 0; i < N; i++) {
        StreamArg a{ (uint64_t)i, 200, 0, 0, 0, 20 }; // ~4 ms of sending
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    }
    std::atomic<bool> stop{ false };
    std::thread killer([&] {
        std::mt19937 rng(seed);
        while (!stop) {
            std::this_thread::sleep_for(std::chrono::microseconds(1000 + rng() % 9000));
            std::vector<pid_t> w = worker_pids();
            if (!w.empty())
                kill(w[rng() % w.size()], SIGKILL);
        }
    });
    std::vector<Msg> m = read_all(c, 60000, [&](size_t k) {
        if (max_bytes && k % 64 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(300));
    });
    stop = true;
    killer.join();
    std::map<uint64_t, uint64_t> next;
    std::map<uint64_t, int> ends;
    int crashed = 0;
    for (auto &x : m) {
        ASSERT_EQ(ends[x.job], 0) << "job " << x.job << ": a message after its end";
        if (x.status == 7) {
            EXPECT_EQ(next[x.job], 200u);
            ends[x.job]++;
        } else if (x.status < 0) {
            EXPECT_EQ(x.status, -ECHILD) << x.err;
            ends[x.job]++;
            crashed++;
        } else {
            ASSERT_EQ(u64(x), x.job * 1000000 + next[x.job]) << "job " << x.job;
            next[x.job]++;
        }
    }
    EXPECT_EQ(ends.size(), (size_t)N);
    printf("random kills (bound %zu): %d of %d jobs crashed mid-stream\n", max_bytes, crashed,
           N);
}

TEST_F(Collect, RandomKillsWhileStreaming)
{
    pp_collector *c = make(PP_ARRIVAL);
    random_kills(c, 0, 12345);
    pp_collector_destroy(c);
}

TEST_F(Collect, RandomKillsWhileStreamingAtTheBound)
{
    for (pp_order o : { PP_ARRIVAL, PP_ORDERED }) {
        pp_collector *c = make(o);
        random_kills(c, 2048, o == PP_ARRIVAL ? 777 : 4242);
        pp_collector_destroy(c);
    }
}

// Errors and edges: a job nobody collects cannot send; an empty collector
// is at its end; a timeout; destroy with messages unread and jobs running.
TEST_F(Collect, ErrorsAndEdges)
{
    pp_task *t;
    ASSERT_EQ(pp_submit(srv.get(), job_send_unconnected, nullptr, 0, nullptr, &t), 0);
    ASSERT_EQ(pp_task_wait(t, 30000), 0);
    const void *d;
    size_t n;
    ASSERT_EQ(pp_task_result(t, &d, &n), 0);
    EXPECT_EQ(*static_cast<const int *>(d), -ENOTCONN);
    pp_task_release(t);

    EXPECT_EQ(pp_collector_new(nullptr, PP_ORDERED, 0, nullptr), -EINVAL);
    pp_collector *c = nullptr;
    EXPECT_EQ(pp_collector_new(srv.get(), (pp_order)7, 0, &c), -EINVAL);
    c = make(PP_ORDERED);
    EXPECT_EQ(pp_collector_next(c, &d, &n, -1), PP_END);
    EXPECT_EQ(pp_collector_next(c, nullptr, &n, 0), -EINVAL);
    EXPECT_EQ(pp_collector_submit(c, nullptr, nullptr, 0), -EINVAL);
    StreamArg slow{ 0, 1, 300000, 0, 0, 0 };
    ASSERT_EQ(pp_collector_submit(c, job_stream, &slow, sizeof slow), 0);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 0), -ETIMEDOUT);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 50), -ETIMEDOUT);
    for (int i = 1; i < 20; i++) {
        StreamArg a{ (uint64_t)i, 50, 0, 4, 5000, 0 }; // values and a 5000-byte result
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    }
    pp_collector_destroy(c); // waits for them; frees what was not read
    pp_collector_destroy(nullptr);
}

// A collector's jobs from a template: its function and group (pp_wait on
// the group waits for them; the template's callback is not called), and
// they count in the server's stats like any job.
static std::atomic<int> template_callbacks{ 0 };
static void count_callback(pp_task *, void *) { template_callbacks++; }

TEST_F(Collect, TemplatesGroupsAndStats)
{
    pp_stats before;
    ASSERT_EQ(pp_get_stats(srv.get(), &before), 0);
    pp_submit_opts o{};
    o.group = "streams";
    o.callback = count_callback;
    pp_template *tpl;
    ASSERT_EQ(pp_template_new(srv.get(), job_stream, &o, &tpl), 0);
    pp_collector *c = make(PP_ORDERED);
    for (int i = 0; i < 20; i++) {
        StreamArg a{ (uint64_t)i, 3, 2000, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit_template(c, tpl, &a, sizeof a), 0);
    }
    ASSERT_EQ(pp_wait(srv.get(), "streams", 30000), 0);
    pp_stats after;
    ASSERT_EQ(pp_get_stats(srv.get(), &after), 0);
    EXPECT_EQ(after.njobs - before.njobs, 20u);
    std::vector<Msg> m = read_all(c);
    ASSERT_EQ(m.size(), 20u * 4);
    for (size_t k = 0; k < m.size(); k++) {
        EXPECT_EQ(m[k].job, k / 4);
        EXPECT_EQ(u64(m[k]), k % 4 == 3 ? k / 4 : (k / 4) * 1000000 + k % 4);
    }
    EXPECT_EQ(template_callbacks.load(), 0);
    // A template of another server is refused.
    ServerPtr other = make_server(1);
    pp_template *foreign;
    ASSERT_EQ(pp_template_new(other.get(), job_stream, nullptr, &foreign), 0);
    StreamArg a{ 0, 0, 0, 0, 0, 0 };
    EXPECT_EQ(pp_collector_submit_template(c, foreign, &a, sizeof a), -EINVAL);
    EXPECT_EQ(pp_collector_submit_template(c, nullptr, &a, sizeof a), -EINVAL);
    pp_template_destroy(foreign);
    pp_collector_destroy(c);
    pp_template_destroy(tpl);
}

// A server with a node that is not there: its collectors' jobs run on
// the local worker (remote collectors, against real nodes: test_remote).
TEST(CollectNodes, LocalWorkersRunThemWhileNodesAreDown)
{
    const char *nodes[] = { "127.0.0.1:9", nullptr };
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 1;
    cfg.ppservers = nodes;
    cfg.secret = "a-secret-for-a-node-that-is-not-there";
    pp_server *s = nullptr;
    ASSERT_EQ(pp_server_new(&cfg, &s), 0);
    pp_collector *c = nullptr;
    ASSERT_EQ(pp_collector_new(s, PP_ORDERED, 0, &c), 0);
    StreamArg a{ 2, 500, 0, 0, 0, 0 };
    ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    read_values(c, 2000000, 500);
    const void *d;
    size_t n;
    ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
    EXPECT_EQ(pp_collector_status(c), 7);
    ASSERT_EQ(n, 8u);
    EXPECT_EQ(*(const uint64_t *)d, 2u);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
    pp_collector_destroy(c);
    pp_server_destroy(s);
}

// ------------------------------------------------------------------
// The bound (pp_collector_set_max_bytes)
// ------------------------------------------------------------------

// Sends its worker's pid (8 bytes), then nvalues values, then result job.
extern "C" int job_pid_then_stream(pp_job *job)
{
    size_t len;
    StreamArg a;
    memcpy(&a, pp_job_arg(job, &len), sizeof(a));
    uint64_t pid = (uint64_t)getpid();
    pp_job_send(job, &pid, sizeof pid);
    for (uint64_t k = 0; k < a.nvalues; k++) {
        uint64_t v = a.job * 1000000 + k;
        int r = pp_job_send(job, &v, sizeof v);
        if (r < 0)
            return pp_job_fail(job, r, "pp_job_send: %s", strerror(-r));
    }
    *static_cast<uint64_t *>(pp_job_result(job, sizeof(uint64_t))) = a.job;
    return 7;
}

// Submits job_pid_then_stream(a) and reads its first message: the pid
// of the worker that runs it (-1 if that went wrong).
static pid_t start_pid_stream(pp_collector *c, const StreamArg &a)
{
    const void *d;
    size_t n;
    if (pp_collector_submit(c, job_pid_then_stream, &a, sizeof a) != 0 ||
        pp_collector_next(c, &d, &n, 60000) != 0 || n != 8)
        return -1;
    return (pid_t) * (const uint64_t *)d;
}

// CPU time (user + system) of process pid so far, in ms; < 0 if gone.
static double proc_cpu_ms(pid_t pid)
{
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string st;
    if (!std::getline(f, st))
        return -1;
    size_t p = st.rfind(')');
    if (p == std::string::npos)
        return -1;
    std::istringstream in(st.substr(p + 2));
    std::string field;
    unsigned long ut = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; i++) { // fields 14, 15: utime, stime
        if (i == 14)
            ut = std::stoul(field);
        if (i == 15)
            stime = std::stoul(field);
    }
    return (double)(ut + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

// Bytes a stopped collector may hold past its bound: the message that
// found it full went in before the check (a run header and one record).
static const size_t kBoundSlack = 4096;

// A reader that does not read: the job waits at the bound (its values
// stay in its worker); then every value comes, in order, while the bound
// holds.
TEST_F(Collect, BoundStopsAJobWhileItsReaderDoesNotRead)
{
    pp_collector *c = make(PP_ARRIVAL);
    const size_t max = 256 << 10;
    ASSERT_EQ(pp_collector_set_max_bytes(c, max), 0);
    StreamArg a{ 3, 1000000, 0, 0, 0, 0 }; // 16 MB of queue unbounded
    pid_t pid = start_pid_stream(c, a);
    ASSERT_GT(pid, 1);
    const void *d;
    size_t n;
    std::this_thread::sleep_for(std::chrono::milliseconds(100)); // at the bound by now
    size_t held = pp_collector_held_bytes(c);
    EXPECT_GE(held, max - kBoundSlack) << "it stopped before the bound";
    EXPECT_LE(held, max + kBoundSlack);
    // It waits asleep: a few ms of CPU in 300 ms, not a spin.
    double cpu0 = proc_cpu_ms(pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    double cpu1 = proc_cpu_ms(pid);
    ASSERT_GE(cpu0, 0);
    EXPECT_LT(cpu1 - cpu0, 100) << "the waiting worker used the CPU";
    EXPECT_LE(pp_collector_held_bytes(c), max + kBoundSlack);
    for (uint64_t k = 0; k < a.nvalues; k++) {
        ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0) << k;
        ASSERT_EQ(n, 8u);
        ASSERT_EQ(*(const uint64_t *)d, 3000000 + k);
        if (k % 5000 == 0) {
            ASSERT_LE(pp_collector_held_bytes(c), max + kBoundSlack) << k;
        }
    }
    ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
    EXPECT_EQ(pp_collector_status(c), 7);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
    EXPECT_EQ(pp_collector_held_bytes(c), 0u);
    pp_collector_destroy(c);
}

// Ordered: the oldest job never waits for the bound; a younger one that
// streams meanwhile does, and both come whole, job by job.
TEST_F(Collect, BoundNeverStopsTheOldestJob)
{
    pp_collector *c = make(PP_ORDERED);
    const size_t max = 64 << 10;
    ASSERT_EQ(pp_collector_set_max_bytes(c, max), 0);
    StreamArg old{ 0, 20000, 200000, 0, 0, 0 }, young{ 1, 300000, 0, 0, 0, 0 };
    ASSERT_EQ(pp_collector_submit(c, job_stream, &old, sizeof old), 0);
    ASSERT_EQ(pp_collector_submit(c, job_stream, &young, sizeof young), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_LE(pp_collector_held_bytes(c), max + kBoundSlack) << "the young job did not wait";
    read_values(c, 0, 20000);
    const void *d;
    size_t n;
    ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
    EXPECT_EQ(pp_collector_status(c), 7);
    EXPECT_EQ(pp_collector_job(c), 0u);
    read_values(c, 1000000, 300000);
    ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
    EXPECT_EQ(pp_collector_job(c), 1u);
    EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
    pp_collector_destroy(c);
}

// The reader's own thread submits more jobs than the limit before it
// reads (pprocess's usual loop): the jobs in flight must not wait for
// it, or the submit would wait for ever.
TEST_F(Collect, BoundAndLimitFromTheReadersThread)
{
    pp_collector *c = make(PP_ARRIVAL, 2);
    ASSERT_EQ(pp_collector_set_max_bytes(c, 32 << 10), 0);
    const int N = 6;
    for (int i = 0; i < N; i++) {
        StreamArg a{ (uint64_t)i, 50000, 0, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
    }
    std::vector<uint64_t> next(N, 0);
    int ends = 0;
    for (const Msg &m : read_all(c)) {
        ASSERT_LT(m.job, (uint64_t)N);
        if (m.status == 7) {
            EXPECT_EQ(next[m.job], 50000u) << m.job;
            ends++;
            continue;
        }
        ASSERT_EQ(u64(m), m.job * 1000000 + next[m.job]) << m.job;
        next[m.job]++;
    }
    EXPECT_EQ(ends, N);
    EXPECT_LE(scratch()->max_running.load(), 2);
    pp_collector_destroy(c);
}

// A job waiting at the bound: destroy does not hang (it lifts the bound);
// a worker killed there fails its job after the values that arrived; a
// raised bound lets a waiting job go on.
TEST_F(Collect, BoundWithDestroyKillAndChange)
{
    {
        pp_collector *c = make(PP_ARRIVAL);
        ASSERT_EQ(pp_collector_set_max_bytes(c, 16 << 10), 0);
        StreamArg a{ 1, 1000000, 0, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        read_values(c, 1000000, 100);
        pp_collector_destroy(c); // waits for the job, which runs on to its end
    }
    {
        pp_collector *c = make(PP_ARRIVAL);
        ASSERT_EQ(pp_collector_set_max_bytes(c, 16 << 10), 0);
        StreamArg a{ 2, 1000000, 0, 0, 0, 0 };
        pid_t pid = start_pid_stream(c, a);
        ASSERT_GT(pid, 1);
        const void *d;
        size_t n;
        std::this_thread::sleep_for(std::chrono::milliseconds(100)); // it waits at the bound
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        uint64_t k = 0;
        int r;
        while ((r = pp_collector_next(c, &d, &n, 60000)) == 0 && pp_collector_status(c) == 0) {
            ASSERT_EQ(n, 8u);
            ASSERT_EQ(*(const uint64_t *)d, 2000000 + k) << k;
            k++;
        }
        ASSERT_EQ(r, 0);
        EXPECT_EQ(pp_collector_status(c), -ECHILD) << pp_collector_error(c);
        EXPECT_LT(k, 1000000u);
        EXPECT_GE(k, 500u) << "fewer values than the bound holds";
        EXPECT_EQ(pp_collector_next(c, &d, &n, 60000), PP_END);
        pp_collector_destroy(c);
    }
    {
        pp_collector *c = make(PP_ARRIVAL);
        ASSERT_EQ(pp_collector_set_max_bytes(c, 16 << 10), 0);
        StreamArg a{ 4, 200000, 0, 0, 0, 0 };
        ASSERT_EQ(pp_collector_submit(c, job_stream, &a, sizeof a), 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_LE(pp_collector_held_bytes(c), (16u << 10) + kBoundSlack);
        ASSERT_EQ(pp_collector_set_max_bytes(c, 0), 0);
        // Unbounded now: the job runs to its end without a reader.
        for (int i = 0; i < 600 && pp_collector_held_bytes(c) < 200000 * 16; i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        EXPECT_GE(pp_collector_held_bytes(c), 200000u * 16);
        read_values(c, 4000000, 200000);
        const void *d;
        size_t n;
        ASSERT_EQ(pp_collector_next(c, &d, &n, 60000), 0);
        EXPECT_EQ(pp_collector_status(c), 7);
        pp_collector_destroy(c);
    }
}

// ------------------------------------------------------------------
// create()
// ------------------------------------------------------------------

static uint64_t g_before; // set before each create; changed in the parent after

// Each child sees the caller's memory as it was at its create (copy on
// write), sends its values (one large), ends with pp_channel_exit; the
// ordered collector gives them child by child.  No zombie is left.
TEST_F(Collect, CreateForksTheCallerAtThatPoint)
{
    pp_collector *c = make(PP_ORDERED);
    const int N = 8;
    for (int i = 0; i < N; i++) {
        g_before = 1000 + (uint64_t)i;
        pp_channel *ch = nullptr;
        ASSERT_EQ(pp_collector_create(c, &ch), 0);
        if (ch) { // the child
            spin_us((uint32_t)(N - i) * 2000); // the first ends last
            uint64_t v = g_before;
            pp_channel_send(ch, &v, sizeof v);
            if (i == 3) {
                std::vector<unsigned char> big(1 << 20);
                fill_pattern(big.data(), big.size(), 77);
                pp_channel_send(ch, big.data(), big.size());
            }
            uint64_t pid = (uint64_t)getpid();
            pp_channel_send(ch, &pid, sizeof pid);
            pp_channel_exit(ch);
        }
        g_before = 0; // the child does not see this
    }
    const void *d;
    size_t n;
    std::vector<uint64_t> pids;
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(pp_collector_next(c, &d, &n, 30000), 0);
        EXPECT_EQ(pp_collector_job(c), (uint64_t)i);
        ASSERT_EQ(n, 8u);
        uint64_t v;
        memcpy(&v, d, 8);
        EXPECT_EQ(v, 1000u + (uint64_t)i);
        if (i == 3) {
            ASSERT_EQ(pp_collector_next(c, &d, &n, 30000), 0);
            ASSERT_EQ(n, (size_t)1 << 20);
            EXPECT_TRUE(check_pattern(d, n, 77));
        }
        ASSERT_EQ(pp_collector_next(c, &d, &n, 30000), 0);
        memcpy(&v, d, 8);
        EXPECT_NE(v, (uint64_t)getpid());
        pids.push_back(v);
    }
    EXPECT_EQ(pp_collector_next(c, &d, &n, 30000), PP_END);
    pp_collector_destroy(c);
    for (uint64_t p : pids) // reaped: no such process, not even a zombie
        EXPECT_NE(kill((pid_t)p, 0), 0) << p;
}

// A child that crashes, or exits without pp_channel_exit, is a failed job
// after what it sent; the limit counts created children.
TEST_F(Collect, CreatedChildrenThatCrashOrJustExit)
{
    pp_collector *c = make(PP_ARRIVAL, 2);
    for (int i = 0; i < 6; i++) {
        pp_channel *ch = nullptr;
        ASSERT_EQ(pp_collector_create(c, &ch), 0);
        if (ch) {
            long now = scratch()->running.fetch_add(1) + 1;
            long seen = scratch()->max_running.load();
            while (now > seen && !scratch()->max_running.compare_exchange_weak(seen, now)) {
            }
            uint64_t v = (uint64_t)i;
            pp_channel_send(ch, &v, sizeof v);
            spin_us(5000);
            scratch()->running.fetch_sub(1);
            if (i == 1) // a crash (SIGKILL: sanitizers turn SIGSEGV into an exit)
                kill(getpid(), SIGKILL);
            if (i == 2)
                _exit(3);
            pp_channel_exit(ch);
        }
    }
    std::vector<Msg> m = read_all(c, 30000);
    ASSERT_EQ(m.size(), 6u + 2u);
    int fails = 0;
    for (auto &x : m) {
        if (x.status < 0) {
            fails++;
            EXPECT_EQ(x.status, -ECHILD);
            if (x.job == 1)
                EXPECT_NE(x.err.find("killed by signal 9"), std::string::npos) << x.err;
            else
                EXPECT_NE(x.err.find("exited with status 3 without pp_channel_exit"),
                          std::string::npos) << x.err;
        }
    }
    EXPECT_EQ(fails, 2);
    EXPECT_LE(scratch()->max_running.load(), 2);
    pp_collector_destroy(c);
    for (const ProcInfo &p : descendants(getpid()))
        EXPECT_NE(p.state, 'Z') << p.pid;
}

// ------------------------------------------------------------------
// Background jobs
// ------------------------------------------------------------------

struct BgArg {
    uint64_t id, nvalues;
    int32_t end;      /* 0: result id; 1: killed after the values; 2: a pp_server inside */
    uint32_t gap_us;
};

extern "C" int job_bg(pp_job *job)
{
    size_t len;
    BgArg a;
    memcpy(&a, pp_job_arg(job, &len), sizeof a);
    if (a.id < (uint64_t)kSlots) { // the background process (our parent), its session
        scratch()->pid[a.id].store((int)getppid());
        scratch()->release[a.id].store((int)getsid(0));
    }
    for (uint64_t k = 0; k < a.nvalues; k++) {
        uint64_t v = a.id * 1000000 + k;
        if (pp_job_send(job, &v, sizeof v) < 0)
            return -EIO;
        if (a.gap_us)
            spin_us(a.gap_us);
    }
    if (a.end == 1) // a crash (SIGKILL: sanitizers turn SIGSEGV into an exit)
        kill(getpid(), SIGKILL);
    uint64_t r = a.id;
    if (a.end == 2) { // its own server and jobs
        pp_config cfg;
        pp_config_init(&cfg);
        cfg.ncpus = 2;
        pp_server *s = nullptr;
        if (pp_server_new(&cfg, &s) != 0)
            return -ENOMEM;
        r = 0;
        for (uint64_t x = 0; x < 100; x++) {
            pp_task *t;
            if (pp_submit(s, job_square, &x, sizeof x, nullptr, &t) != 0)
                return -EIO;
            pp_task_wait(t, -1);
            const void *d;
            size_t n;
            pp_task_result(t, &d, &n);
            r += *static_cast<const uint64_t *>(d);
            pp_task_release(t);
        }
        pp_server_destroy(s);
    }
    uint64_t *out = static_cast<uint64_t *>(pp_job_result(job, sizeof r));
    *out = r;
    return 0;
}

// "Another process" that reads part of a background job's messages: this
// binary run again with PP_TEST_BG_READ="PATH N ID" reads N values of job
// ID and exits before gtest starts (exit 0 when they were right).  A fresh
// exec, not a fork: an unrelated process, and one the thread sanitizer
// can follow (it cannot follow threads started after a fork of a
// threaded process).
__attribute__((constructor)) static void bg_reader_process()
{
    const char *e = getenv("PP_TEST_BG_READ");
    if (!e)
        return;
    char path[256];
    unsigned long long n, id;
    if (sscanf(e, "%255s %llu %llu", path, &n, &id) != 3)
        _exit(10);
    const char *paths[] = { path, nullptr };
    pp_collector *c;
    if (pp_background_open(paths, &c) != 0)
        _exit(2);
    for (unsigned long long k = 0; k < n; k++) {
        const void *d;
        size_t len;
        uint64_t v;
        if (pp_collector_next(c, &d, &len, 30000) != 0 || len != 8)
            _exit(3);
        memcpy(&v, d, 8);
        if (v != id * 1000000 + k)
            _exit(4);
    }
    pp_collector_destroy(c);
    _exit(0);
}

static std::string sock_path(const std::string &name)
{
    return "/tmp/pp-bg-" + std::to_string(getpid()) + "-" + name + ".socket";
}

static bool file_exists(const std::string &p)
{
    struct stat st;
    return lstat(p.c_str(), &st) == 0;
}

static bool session_empty(pid_t sid)
{
    return wait_until([&] {
        for (const ProcInfo &p : descendants(1)) {
            (void)p;
        }
        DIR *d = opendir("/proc");
        bool any = false;
        struct dirent *e;
        while (d && (e = readdir(d))) {
            pid_t pid = atoi(e->d_name);
            if (pid <= 0)
                continue;
            if (getsid(pid) == sid) {
                char st = 0;
                std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
                std::string line;
                std::getline(f, line);
                auto p = line.rfind(')');
                if (p != std::string::npos && p + 2 < line.size())
                    st = line[p + 2];
                if (st != 'Z')
                    any = true;
            }
        }
        if (d)
            closedir(d);
        return !any;
    }, 10000);
}

// The creator exits right after starting it; another process reads half
// and goes; this one reads the rest: every message once, the socket is
// removed at the end, nothing of the background job is left.
TEST_F(Collect, BackgroundOutlivesItsCreatorAndIsReadOnce)
{
    std::string path = sock_path("once");
    pid_t creator = fork();
    if (creator == 0) {
        BgArg a{ 5, 2000, 0, 0 };
        _exit(pp_background_start(path.c_str(), job_bg, &a, sizeof a) == 0 ? 0 : 1);
    }
    int st;
    ASSERT_EQ(waitpid(creator, &st, 0), creator);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct stat sb;
    ASSERT_EQ(lstat(path.c_str(), &sb), 0);
    EXPECT_TRUE(S_ISSOCK(sb.st_mode));
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
    const char *paths[] = { path.c_str(), nullptr };
    pid_t reader = fork();
    if (reader == 0) { // another process reads 700 values, then goes away
        std::string arg = path + " 700 5";
        setenv("PP_TEST_BG_READ", arg.c_str(), 1);
        execl("/proc/self/exe", "test_collect", (char *)nullptr);
        _exit(127);
    }
    ASSERT_EQ(waitpid(reader, &st, 0), reader);
    ASSERT_TRUE(WIFEXITED(st)) << st;
    ASSERT_EQ(WEXITSTATUS(st), 0);
    // It holds nothing of ours (our pp_server's segment, its zygote's socket).
    bool bg_fds_clean = true;
    {
        pid_t bg = scratch()->pid[5].load();
        std::string dir = "/proc/" + std::to_string(bg) + "/fd";
        DIR *d = opendir(dir.c_str());
        struct dirent *e;
        int n = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char buf[256] = "";
            ssize_t k = readlink((dir + "/" + e->d_name).c_str(), buf, sizeof(buf) - 1);
            if (k > 0 && (strstr(buf, "memfd:") || strstr(buf, "anon_inode")))
                bg_fds_clean = false;
            n++;
        }
        if (d)
            closedir(d);
        EXPECT_LE(n, 6) << "fds of the background process"; // stdio, listener, job pipe, a reader
    }
    pp_collector *c;
    ASSERT_EQ(pp_background_open(paths, &c), 0);
    std::vector<Msg> m = read_all(c, 30000);
    ASSERT_EQ(m.size(), 2000u - 700u + 1u);
    for (size_t k = 0; k + 1 < m.size(); k++)
        ASSERT_EQ(u64(m[k]), 5000000u + 700u + k) << k;
    EXPECT_EQ(u64(m.back()), 5u);
    EXPECT_EQ(m.back().status, 0);
    pp_collector_destroy(c);
    EXPECT_TRUE(wait_until([&] { return !file_exists(path); }, 10000)) << path;
    pid_t sid = scratch()->release[5].load();
    EXPECT_GT(sid, 1);
    EXPECT_TRUE(bg_fds_clean) << "the background process kept one of the caller's descriptors";
    EXPECT_TRUE(session_empty(sid)) << "the background job's session still has processes";
}

// PersistentQueue: several sockets at once, each read whole; one of them
// a job that runs a pp_server of its own.
TEST_F(Collect, SeveralBackgroundSockets)
{
    std::vector<std::string> names;
    for (uint64_t i = 0; i < 3; i++) {
        names.push_back(sock_path("many" + std::to_string(i)));
        BgArg a{ 10 + i, 100 + i, 0, 20 };
        ASSERT_EQ(pp_background_start(names.back().c_str(), job_bg, &a, sizeof a), 0);
    }
    std::vector<const char *> paths;
    for (auto &n : names)
        paths.push_back(n.c_str());
    paths.push_back(nullptr);
    pp_collector *c;
    ASSERT_EQ(pp_background_open(paths.data(), &c), 0);
    std::vector<Msg> m = read_all(c, 60000);
    std::map<uint64_t, uint64_t> next;
    std::map<uint64_t, uint64_t> result;
    for (auto &x : m) {
        if (next[x.job] == 100 + x.job) {
            result[x.job] = u64(x);
            continue;
        }
        ASSERT_EQ(u64(x), (10 + x.job) * 1000000 + next[x.job]);
        next[x.job]++;
    }
    ASSERT_EQ(result.size(), 3u);
    for (uint64_t i = 0; i < 3; i++)
        EXPECT_EQ(result[i], 10u + i);
    pp_collector_destroy(c);
    for (auto &n : names)
        EXPECT_TRUE(wait_until([&] { return !file_exists(n); }, 10000)) << n;
    for (int i = 10; i < 13; i++)
        EXPECT_TRUE(session_empty(scratch()->release[i].load())) << i;
}

// A stale socket and a missing one are failed jobs naming the path; a
// background job that crashes mid-way fails after what it sent; start
// replaces a stale socket file, refuses a regular file.
TEST_F(Collect, StaleAndCrashedBackgroundJobs)
{
    std::string stale = sock_path("stale"), missing = sock_path("missing"),
                crash = sock_path("crash"), file = sock_path("file");
    {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        strcpy(a.sun_path, stale.c_str());
        ASSERT_EQ(bind(fd, (sockaddr *)&a, sizeof a), 0);
        close(fd); // a socket file nobody listens on
    }
    BgArg a{ 20, 3, 1, 0 };
    ASSERT_EQ(pp_background_start(crash.c_str(), job_bg, &a, sizeof a), 0);
    const char *paths[] = { stale.c_str(), missing.c_str(), crash.c_str(), nullptr };
    pp_collector *c;
    ASSERT_EQ(pp_background_open(paths, &c), 0);
    std::vector<Msg> m = read_all(c, 30000);
    std::map<uint64_t, Msg> last;
    uint64_t crash_values = 0;
    for (auto &x : m) {
        if (x.status < 0) {
            last[x.job] = x;
        } else if (x.job == 2) {
            EXPECT_EQ(u64(x), 20000000u + crash_values++);
        }
    }
    ASSERT_EQ(last.size(), 3u);
    EXPECT_EQ(last[0].status, -ECONNREFUSED);
    EXPECT_NE(last[0].err.find(stale), std::string::npos) << last[0].err;
    EXPECT_EQ(last[1].status, -ENOENT);
    EXPECT_NE(last[1].err.find(missing), std::string::npos) << last[1].err;
    EXPECT_EQ(crash_values, 3u);
    EXPECT_EQ(last[2].status, -ECHILD); // the job's process crashed; its server said so
    EXPECT_NE(last[2].err.find("killed by signal 9"), std::string::npos) << last[2].err;
    pp_collector_destroy(c);
    // The crashed job left its socket file: starting there replaces it.
    BgArg b{ 21, 1, 0, 0 };
    ASSERT_EQ(pp_background_start(crash.c_str(), job_bg, &b, sizeof b), 0);
    const char *again[] = { crash.c_str(), nullptr };
    ASSERT_EQ(pp_background_open(again, &c), 0);
    m = read_all(c, 30000);
    ASSERT_EQ(m.size(), 2u);
    EXPECT_EQ(u64(m[1]), 21u);
    pp_collector_destroy(c);
    { std::ofstream f(file); f << "not a socket\n"; }
    EXPECT_EQ(pp_background_start(file.c_str(), job_bg, &b, sizeof b), -EEXIST);
    std::string longp(200, 'x');
    EXPECT_EQ(pp_background_start(longp.c_str(), job_bg, &b, sizeof b), -ENAMETOOLONG);
    EXPECT_EQ(pp_background_start(nullptr, job_bg, &b, sizeof b), -EINVAL);
    unlink(stale.c_str());
    unlink(file.c_str());
    EXPECT_TRUE(wait_until([&] { return !file_exists(crash); }, 10000));
}

// The background process itself killed while a reader reads: what
// arrived, then a failure naming the path; the job's own process ends
// with it (its pipe breaks).
TEST_F(Collect, BackgroundProcessKilledMidStream)
{
    std::string path = sock_path("killed");
    BgArg a{ 25, 400, 0, 2000 }; // about 0.8 s of values
    ASSERT_EQ(pp_background_start(path.c_str(), job_bg, &a, sizeof a), 0);
    const char *paths[] = { path.c_str(), nullptr };
    pp_collector *c;
    ASSERT_EQ(pp_background_open(paths, &c), 0);
    const void *d;
    size_t n;
    for (uint64_t k = 0; k < 10; k++) {
        ASSERT_EQ(pp_collector_next(c, &d, &n, 30000), 0);
        uint64_t v;
        memcpy(&v, d, 8);
        ASSERT_EQ(v, 25000000u + k);
    }
    ASSERT_TRUE(wait_until([] { return scratch()->pid[25].load() > 1; }, 5000));
    pid_t server = scratch()->pid[25].load();
    ASSERT_EQ(kill(server, SIGKILL), 0);
    std::vector<Msg> m = read_all(c, 30000);
    ASSERT_FALSE(m.empty());
    for (size_t k = 0; k + 1 < m.size(); k++)
        ASSERT_EQ(u64(m[k]), 25000000u + 10 + k);
    EXPECT_EQ(m.back().status, -ECONNRESET);
    EXPECT_NE(m.back().err.find(path), std::string::npos) << m.back().err;
    pp_collector_destroy(c);
    EXPECT_TRUE(session_empty(scratch()->release[25].load())) << "the job's process is left";
}

// A background job that runs a pp_server of its own (100 jobs), and
// leaves nothing behind.
TEST_F(Collect, BackgroundJobRunsItsOwnServer)
{
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "the thread sanitizer cannot follow a pp_server (threads) started in a "
                    "process forked from a threaded one (the background job's)";
#endif
    std::string path = sock_path("server");
    BgArg a{ 26, 5, 2, 0 };
    ASSERT_EQ(pp_background_start(path.c_str(), job_bg, &a, sizeof a), 0);
    const char *paths[] = { path.c_str(), nullptr };
    pp_collector *c;
    ASSERT_EQ(pp_background_open(paths, &c), 0);
    std::vector<Msg> m = read_all(c, 60000);
    ASSERT_EQ(m.size(), 6u);
    uint64_t want = 0;
    for (uint64_t x = 0; x < 100; x++)
        want += square_of(x);
    EXPECT_EQ(u64(m.back()), want) << m.back().err;
    pp_collector_destroy(c);
    EXPECT_TRUE(wait_until([&] { return !file_exists(path); }, 10000));
    EXPECT_TRUE(session_empty(scratch()->release[26].load()));
}

} // namespace
