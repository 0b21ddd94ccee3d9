// Description: the worker pool: pp_set_ncpus up and down while jobs flow, ncpus 0, restart mode, worker reuse, max_queued.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Workers : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* job_square after spinning ~100 us, so that jobs keep flowing a while. */
int job_slow_square(pp_job *job)
{
    double end = now_ms() + 0.1;
    while (now_ms() < end) {
    }
    return job_square(job);
}

struct Counter {
    std::atomic<long> calls{0};
    std::atomic<long> bad{0};
};

void status_cb(pp_task *t, void *arg)
{
    auto *c = static_cast<Counter *>(arg);
    if (pp_task_result(t, nullptr, nullptr) < 0)
        c->bad.fetch_add(1);
    c->calls.fetch_add(1);
}

} // namespace

/*
 * 1 -> 4 -> 1 -> 2 workers while 20k jobs flow: every job completes once,
 * pp_get_ncpus follows, and the live workers converge to the count.
 */
TEST_F(Workers, SetNcpusWhileJobsFlow)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(1, 10000), 1);
    constexpr long kJobs = 20000;
    Counter c;
    std::atomic<long> submit_failures{0};
    std::thread submitter([&] {
        pp_submit_opts o{};
        o.callback = status_cb;
        o.callback_arg = &c;
        for (uint64_t x = 0; x < uint64_t(kJobs); x++)
            if (pp_submit(srv.get(), job_slow_square, &x, sizeof x, &o, nullptr) != 0)
                submit_failures.fetch_add(1);
    });
    long runs_at_last_change = 0;
    long mark = 0;
    for (int n : {4, 1, 2}) {
        /* Let some jobs run at the current size first. */
        long want = mark + 1500;
        EXPECT_TRUE(wait_until([&] { return scratch()->runs.load() >= want; }, 30000))
            << "jobs stopped flowing before the change to " << n;
        ASSERT_EQ(pp_set_ncpus(srv.get(), n), 0) << "to " << n;
        runs_at_last_change = scratch()->runs.load();
        EXPECT_EQ(pp_get_ncpus(srv.get()), n);
        EXPECT_EQ(wait_workers(n, 10000), n) << "live workers did not converge to " << n;
        mark = scratch()->runs.load();
    }
    submitter.join();
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 60000), 0);
    EXPECT_LT(runs_at_last_change, kJobs) << "test too weak: all jobs ran before the last change";
    EXPECT_EQ(submit_failures.load(), 0);
    EXPECT_EQ(c.calls.load(), kJobs) << "callbacks";
    EXPECT_EQ(c.bad.load(), 0) << "failed jobs";
    long not_once = 0;
    for (long x = 0; x < kJobs; x++)
        not_once += scratch()->seen[x].load() != 1;
    EXPECT_EQ(not_once, 0) << "jobs lost or run twice across resizes";
    EXPECT_EQ(count_workers(), 2);
}

/* ncpus 0: queued jobs wait; adding workers runs them. */
TEST_F(Workers, ZeroWorkersThenBack)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(pp_set_ncpus(srv.get(), 0), 0);
    EXPECT_EQ(pp_get_ncpus(srv.get()), 0);
    EXPECT_EQ(wait_workers(0, 10000), 0) << "workers left with ncpus 0";
    for (uint64_t x = 0; x < 200; x++)
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    EXPECT_EQ(pp_wait(srv.get(), nullptr, 300), -ETIMEDOUT) << "jobs ran with no worker";
    EXPECT_EQ(scratch()->runs.load(), 0);
    ASSERT_EQ(pp_set_ncpus(srv.get(), 2), 0);
    EXPECT_EQ(pp_get_ncpus(srv.get()), 2);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 30000), 0);
    EXPECT_EQ(scratch()->runs.load(), 200);
    EXPECT_EQ(wait_workers(2, 10000), 2);
}

/* A server created with ncpus 0 starts no worker until asked. */
TEST_F(Workers, CreatedWithZeroWorkers)
{
    ServerPtr srv = make_server(0);
    ASSERT_NE(srv, nullptr);
    EXPECT_EQ(pp_get_ncpus(srv.get()), 0);
    EXPECT_EQ(count_workers(), 0);
    uint64_t x = 9;
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t), 0);
    TaskPtr task(t);
    EXPECT_EQ(pp_task_wait(t, 200), -ETIMEDOUT);
    ASSERT_EQ(pp_set_ncpus(srv.get(), PP_AUTODETECT), 0);
    EXPECT_EQ(pp_get_ncpus(srv.get()), pp_detect_ncpus());
    ASSERT_EQ(pp_task_wait(t, 20000), 0);
    EXPECT_EQ(task_status(t), 9);
}

/* A worker asked to go finishes its current job first. */
TEST_F(Workers, ShrinkLetsRunningJobFinish)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    TaskPtr a = submit_block(srv.get(), 0, 20000);
    TaskPtr b = submit_block(srv.get(), 1, 20000);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() && scratch()->pid[1].load(); }, 10000));
    ASSERT_EQ(pp_set_ncpus(srv.get(), 1), 0);
    EXPECT_EQ(pp_task_wait(a.get(), 100), -ETIMEDOUT) << "the shrink ended a running job";
    EXPECT_EQ(count_workers(), 2) << "a busy worker went before its job was done";
    scratch()->release[0].store(1);
    scratch()->release[1].store(1);
    ASSERT_EQ(pp_task_wait(a.get(), 10000), 0);
    ASSERT_EQ(pp_task_wait(b.get(), 10000), 0);
    EXPECT_EQ(task_status(a.get()), 100) << "not killed: finished normally";
    EXPECT_EQ(task_status(b.get()), 101);
    EXPECT_EQ(wait_workers(1, 10000), 1);
}

/* Without restart, jobs run on the long-lived workers. */
TEST_F(Workers, WorkersAreReused)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    std::vector<pid_t> live = worker_pids();
    std::set<int> pids;
    for (int i = 0; i < 200; i++) {
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_getpid, nullptr, 0, nullptr, &t), 0);
        ASSERT_EQ(pp_task_wait(t, 10000), 0);
        pids.insert(task_status(t));
        pp_task_release(t);
    }
    EXPECT_LE(pids.size(), 2u) << "more worker pids than workers without restart";
    for (int p : pids)
        EXPECT_NE(std::find(live.begin(), live.end(), p), live.end())
            << "job pid " << p << " is not one of the workers";
    struct pp_stats st;
    EXPECT_TRUE(wait_until([&] { return pp_get_stats(srv.get(), &st) == 0 && st.workers_started >= 2; }, 10000));
    EXPECT_EQ(st.workers_started, 2u) << "workers were restarted without restart mode";
}

/* restart = true: every job sees a fresh worker; the count stays right. */
TEST_F(Workers, RestartModeFreshWorkerPerJob)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 2;
    cfg.restart = true;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    constexpr int kJobs = 60;
    std::vector<TaskPtr> tasks;
    for (int i = 0; i < kJobs; i++) {
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_getpid, nullptr, 0, nullptr, &t), 0);
        tasks.emplace_back(t);
    }
    std::set<int> pids;
    for (auto &t : tasks) {
        ASSERT_EQ(pp_task_wait(t.get(), 20000), 0);
        int pid = task_status(t.get());
        EXPECT_GT(pid, 0) << (pp_task_error(t.get()) ? pp_task_error(t.get()) : "");
        EXPECT_NE(pid, getpid());
        pids.insert(pid);
    }
    EXPECT_EQ(pids.size(), size_t(kJobs)) << "two jobs shared a worker in restart mode";
    EXPECT_EQ(scratch()->runs.load(), kJobs);
    EXPECT_EQ(wait_workers(2, 10000), 2) << "worker count after restarts";
    struct pp_stats st;
    EXPECT_TRUE(wait_until([&] {
        return pp_get_stats(srv.get(), &st) == 0 && st.workers_started >= uint64_t(kJobs);
    }, 10000)) << "workers_started " << st.workers_started << ": each job needs its own worker";
    EXPECT_EQ(st.worker_deaths, 0u) << "planned restarts are not deaths";
    EXPECT_EQ(st.njobs, uint64_t(kJobs));
}

/* max_queued without blocking: -EAGAIN past the limit. */
TEST_F(Workers, MaxQueuedGivesEagain)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 1;
    cfg.max_queued = 4;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    TaskPtr blocker = submit_block(srv.get(), 0, 20000);
    ASSERT_NE(blocker, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000));
    for (uint64_t x = 0; x < 4; x++)
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0)
            << "job " << x << " of max_queued 4";
    uint64_t x = 4;
    pp_task *const sentinel = reinterpret_cast<pp_task *>(0x1234);
    pp_task *t = sentinel;
    EXPECT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t), -EAGAIN);
    EXPECT_EQ(t, sentinel);
    scratch()->release[0].store(1);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    EXPECT_EQ(scratch()->runs.load(), 4) << "the refused job must not run";
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0) << "room again";
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
}

/* max_queued with block_when_full: pp_submit waits for room. */
TEST_F(Workers, MaxQueuedBlocks)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 1;
    cfg.max_queued = 2;
    cfg.block_when_full = true;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    TaskPtr blocker = submit_block(srv.get(), 0, 20000);
    ASSERT_NE(blocker, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000));
    for (uint64_t x = 0; x < 2; x++)
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    std::atomic<int> rc{INT32_MIN};
    std::thread late([&] {
        uint64_t x = 2;
        rc.store(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr));
    });
    EXPECT_FALSE(wait_until([&] { return rc.load() != INT32_MIN; }, 300))
        << "pp_submit did not block on a full queue (rc " << rc.load() << ")";
    scratch()->release[0].store(1);
    late.join();
    EXPECT_EQ(rc.load(), 0);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    EXPECT_EQ(scratch()->runs.load(), 3);
}

/*
 * With one worker per CPU (the default), a job is not handed to the worker
 * on the submitter's CPU while another worker is awake; but when every
 * other worker is busy in a long job, a queued job still starts soon
 * (wake.c: deferral), even though the submitter never blocks in pp.
 * Three rounds: the first deferral, then later ones while it is set.
 */
TEST_F(Workers, QueuedJobStartsWhileOthersRunLongJobs)
{
    ServerPtr srv = make_server(PP_AUTODETECT);
    ASSERT_NE(srv, nullptr);
    const int n = pp_get_ncpus(srv.get());
    ASSERT_GE(n, 1);
    if (n < 2)
        GTEST_SKIP() << "needs 2 or more CPUs (this process may use " << n << ")";
    ASSERT_LE(n + 3, kSlots);
    std::vector<TaskPtr> keep;
    /* n - 1 workers busy for the whole test. */
    for (int i = 0; i < n - 1; i++)
        keep.push_back(submit_block(srv.get(), i, 30000));
    for (int round = 0; round < 3; round++) {
        int slot = n - 1 + round;
        TaskPtr t = submit_block(srv.get(), slot, 30000);
        ASSERT_NE(t, nullptr);
        /* Polling without any pp call: the submitter keeps its CPU. */
        ASSERT_TRUE(wait_until([&] { return scratch()->pid[slot].load() != 0; }, 5000))
            << "round " << round << ": the job never started although a worker was free";
        scratch()->release[slot].store(1);
        ASSERT_EQ(pp_task_wait(t.get(), 10000), 0);
        EXPECT_EQ(task_status(t.get()), 100 + slot);
    }
    for (int i = 0; i < n - 1; i++)
        scratch()->release[i].store(1);
    for (auto &t : keep)
        ASSERT_EQ(pp_task_wait(t.get(), 10000), 0);
}

/*
 * max_queued is a hard limit with many submitting threads at once: with
 * no worker taking jobs, exactly max_queued submissions succeed, however
 * the threads interleave (a check-then-act admission let several pass the
 * same test).
 */
TEST_F(Workers, MaxQueuedIsExactUnderConcurrentSubmitters)
{
    for (int round = 0; round < 20; round++) {
        pp_config cfg;
        pp_config_init(&cfg);
        cfg.ncpus = 0;
        cfg.max_queued = 64;
        ServerPtr srv = make_server(cfg);
        ASSERT_NE(srv, nullptr);
        std::atomic<int> ok{0}, eagain{0}, other{0}, go{0};
        std::vector<std::thread> th;
        for (int t = 0; t < 8; t++)
            th.emplace_back([&] {
                go.fetch_add(1);
                while (go.load() < 8) {
                }
                for (uint64_t x = 0; x < 40; x++) {
                    int r = pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr);
                    (r == 0 ? ok : r == -EAGAIN ? eagain : other).fetch_add(1);
                }
            });
        for (auto &t : th)
            t.join();
        ASSERT_EQ(other.load(), 0);
        ASSERT_EQ(ok.load(), 64) << "round " << round << ": max_queued 64 let " << ok.load()
                                 << " jobs in";
        ASSERT_EQ(eagain.load(), 8 * 40 - 64);
        ASSERT_EQ(pp_set_ncpus(srv.get(), 1), 0);
        ASSERT_EQ(pp_wait(srv.get(), nullptr, 20000), 0);
    }
}
