// Description: workers killed at every instant of a job's life (fixed points through PP_FAULT, and SIGKILL at random instants) while several threads submit with callbacks: each callback runs once with its own job's result, pp_wait never returns early, nothing hangs, no process is left.
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

constexpr size_t kBig = 100 * 1024; /* every 7th job's result */

struct ChaosArg {
    uint64_t i;
    uint32_t flags;
};
enum : uint32_t { kSleep = 1, kBigResult = 2, kSegv = 4 };

/* Result: 3 * i as 8 bytes, or kBig bytes of fill_pattern(i) for kBigResult.
 * Counts its run in scratch()->seen[i]. */
int job_chaos(pp_job *job)
{
    size_t len = 0;
    const auto *a = static_cast<const ChaosArg *>(pp_job_arg(job, &len));
    if (len != sizeof(ChaosArg))
        return pp_job_fail(job, -EINVAL, "bad argument length %zu", len);
    if (a->i < kMaxSeen)
        scratch()->seen[a->i].fetch_add(1);
    if (a->flags & kSleep) {
        struct timespec ts = { 0, 20000 };
        nanosleep(&ts, nullptr);
    }
    if (a->flags & kSegv) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    if (a->flags & kBigResult) {
        void *r = pp_job_result(job, kBig);
        if (!r)
            return -ENOMEM;
        fill_pattern(r, kBig, a->i);
        return 0;
    }
    auto *r = static_cast<uint64_t *>(pp_job_result(job, sizeof(uint64_t)));
    if (!r)
        return -ENOMEM;
    *r = 3 * a->i;
    return 0;
}

/* What the callbacks saw, per job. */
struct Ledger {
    explicit Ledger(size_t n) : calls(n), bad(n), failed(n), skipped(n) {}
    std::vector<std::atomic<int>> calls;
    std::vector<std::atomic<int>> bad;    /* status 0 but not its own result */
    std::vector<std::atomic<int>> failed; /* status < 0 */
    std::vector<std::atomic<int>> skipped; /* never submitted (time budget) */
    std::atomic<long> total{0};
    std::atomic<int> wrong_failure{0};    /* a failure other than -ECHILD */
    std::string first_error;
};

struct CbArg {
    Ledger *ledger;
    ChaosArg arg;
};

void chaos_cb(pp_task *t, void *p)
{
    std::unique_ptr<CbArg> a(static_cast<CbArg *>(p));
    Ledger *l = a->ledger;
    uint64_t i = a->arg.i;
    const void *d = nullptr;
    size_t len = 0;
    int st = pp_task_result(t, &d, &len);
    l->calls[i].fetch_add(1);
    if (st < 0) {
        l->failed[i].fetch_add(1);
        if (st != -ECHILD)
            l->wrong_failure.fetch_add(1);
    } else if (a->arg.flags & kBigResult) {
        if (len != kBig || !check_pattern(d, len, i))
            l->bad[i].fetch_add(1);
    } else {
        uint64_t v = 0;
        if (len == sizeof v)
            memcpy(&v, d, sizeof v);
        if (len != sizeof v || v != 3 * i)
            l->bad[i].fetch_add(1);
    }
    l->total.fetch_add(1);
}

/* Submits jobs [first, first + n) with callbacks, server-owned. */
void submitter(pp_server *srv, Ledger *l, uint64_t first, uint64_t n, bool segv,
               std::atomic<int> *submit_errors, double deadline_ms = 0)
{
    for (uint64_t i = first; i < first + n; i++) {
        /* A time budget keeps the test to seconds under sanitizers too;
         * jobs never submitted are marked so the checks skip them. */
        if (deadline_ms > 0 && (i & 63) == 0 && now_ms() > deadline_ms) {
            for (uint64_t j = i; j < first + n; j++)
                l->skipped[j].store(1);
            return;
        }
        uint32_t flags = 0;
        if (i % 3 == 0)
            flags |= kSleep;
        if (i % 7 == 0)
            flags |= kBigResult;
        if (segv && i % 5000 == 4999)
            flags |= kSegv;
        auto *a = new CbArg{ l, { i, flags } };
        pp_submit_opts o{};
        o.callback = chaos_cb;
        o.callback_arg = a;
        int r = pp_submit(srv, job_chaos, &a->arg, sizeof a->arg, &o, nullptr);
        if (r < 0) {
            delete a;
            submit_errors->fetch_add(1);
        }
    }
}

/* After pp_wait returned 0: every callback ran, none twice, each result its own. */
void check_ledger(Ledger &l, uint64_t n, bool allow_failures, bool allow_rerun)
{
    long ran_twice = 0, missing = 0, bad = 0, failed = 0, reruns = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (l.skipped[i].load())
            continue;
        int c = l.calls[i].load();
        missing += c == 0;
        ran_twice += c > 1;
        bad += l.bad[i].load();
        failed += l.failed[i].load();
        uint32_t runs = i < kMaxSeen ? scratch()->seen[i].load() : 1;
        /* A job whose worker died before it started ran 0 times (then once
         * elsewhere); one that succeeded ran exactly once. */
        if (l.failed[i].load() == 0 && runs != 1)
            reruns++;
    }
    EXPECT_EQ(missing, 0) << "callbacks missing after pp_wait returned 0";
    EXPECT_EQ(ran_twice, 0) << "callbacks that ran more than once";
    EXPECT_EQ(bad, 0) << "successful jobs whose result was not their own";
    EXPECT_EQ(l.wrong_failure.load(), 0) << "failures other than -ECHILD";
    if (!allow_failures) {
        EXPECT_EQ(failed, 0) << "jobs failed where every death should be repaired";
    }
    if (!allow_rerun) {
        EXPECT_EQ(reruns, 0) << "successful jobs whose function ran other than once";
    }
}

/* Every process this test started is gone after destroy. */
void expect_no_descendants()
{
    EXPECT_TRUE(wait_until([] { return count_live_children() == 0 && count_workers() == 0; },
                           5000))
        << "processes left after pp_server_destroy";
}

/* -------------------------------------------------------------------- */
/* Fixed kill points                                                     */
/* -------------------------------------------------------------------- */

struct Point {
    const char *name;
    bool failures; /* jobs killed there fail with -ECHILD */
};

class KillPoint : public ::testing::TestWithParam<Point> {
protected:
    void SetUp() override { scratch_reset(); }
    void TearDown() override { unsetenv("PP_FAULT"); }
};

void PrintTo(const Point &p, std::ostream *os)
{
    *os << p.name;
}

/*
 * Each worker kills itself at one point of its 5th job: after taking it
 * (requeued once), after starting it (fails once with -ECHILD), after
 * executing it but before handing it to the engine (finished once), or
 * after the hand-over, once the host has had time to reuse the record
 * (nothing to do: the old code requeued the reused record a second time).
 */
TEST_P(KillPoint, EachDeathSettlesItsJobOnce)
{
    const Point p = GetParam();
    std::string v = std::string(p.name) + ":5";
    ASSERT_EQ(setenv("PP_FAULT", v.c_str(), 1), 0);
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 2;
    constexpr uint64_t kPerThread = 800, kThreads = 3, kN = kPerThread * kThreads;
    Ledger l(kN); /* outlives the server, whose destroy may run callbacks */
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);

    std::atomic<int> submit_errors{0};
    std::vector<std::thread> th;
    for (uint64_t t = 0; t < kThreads; t++)
        th.emplace_back(submitter, srv.get(), &l, t * kPerThread, kPerThread, false,
                        &submit_errors, 0.0);
    for (auto &t : th)
        t.join();
    ASSERT_EQ(submit_errors.load(), 0);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 120000), 0) << "pp_wait timed out";
    EXPECT_EQ(l.total.load(), static_cast<long>(kN));
    check_ledger(l, kN, p.failures, false);
    pp_stats st{};
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_GT(st.worker_deaths, 10u) << "the fault point never fired";
    srv.reset();
    expect_no_descendants();
}

const Point kPoints[] = {
    { "taken", false },
    { "started", true },
    { "executed", false },
    { "handed", false },
};

INSTANTIATE_TEST_SUITE_P(Points, KillPoint, ::testing::ValuesIn(kPoints),
                         [](const ::testing::TestParamInfo<Point> &i) {
                             return std::string(i.param.name);
                         });

/*
 * Tasks with handles and no callback: the worker itself moves them to DONE
 * and raises its group count.  Killed between the two (executed:5), the
 * post-mortem raises the count, so pp_wait returns, and every task has
 * its own result.
 */
TEST(KillPointHandles, DoneBeforeCountRaised)
{
    scratch_reset();
    ASSERT_EQ(setenv("PP_FAULT", "executed:5", 1), 0);
    ServerPtr srv = make_server(2);
    unsetenv("PP_FAULT");
    ASSERT_NE(srv, nullptr);
    constexpr uint64_t kN = 3000;
    std::vector<pp_task *> tasks(kN, nullptr);
    std::vector<std::thread> th;
    for (uint64_t t = 0; t < 3; t++)
        th.emplace_back([&, t] {
            for (uint64_t i = t; i < kN; i += 3) {
                ChaosArg a{ i, i % 7 == 0 ? kBigResult : 0u };
                EXPECT_EQ(pp_submit(srv.get(), job_chaos, &a, sizeof a, nullptr, &tasks[i]), 0);
            }
        });
    for (auto &t : th)
        t.join();
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 60000), 0) << "pp_wait never saw every job done";
    long bad = 0, reruns = 0;
    for (uint64_t i = 0; i < kN; i++) {
        ASSERT_EQ(pp_task_wait(tasks[i], 0), 0) << "pp_wait returned before job " << i;
        const void *d = nullptr;
        size_t len = 0;
        if (pp_task_result(tasks[i], &d, &len) != 0)
            bad++;
        else if (i % 7 == 0 ? (len != kBig || !check_pattern(d, len, i))
                            : (len != 8 || *static_cast<const uint64_t *>(d) != 3 * i))
            bad++;
        reruns += scratch()->seen[i].load() != 1;
        pp_task_release(tasks[i]);
    }
    EXPECT_EQ(bad, 0) << "tasks without their own result";
    EXPECT_EQ(reruns, 0) << "jobs that ran other than once";
    pp_stats st{};
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_GT(st.worker_deaths, 10u) << "the fault point never fired";
    srv.reset();
    expect_no_descendants();
}

/* -------------------------------------------------------------------- */
/* SIGKILL at random instants                                            */
/* -------------------------------------------------------------------- */

/*
 * Four threads submit 12,000 jobs each (a third sleep 20 us, every 7th
 * writes a 100 KB result, 1 in 5000 segfaults) into a queue capped at
 * 20,000 with block_when_full, while a killer thread SIGKILLs a random
 * worker every 2-20 ms.  Every job is done exactly once, with its own
 * result or -ECHILD.
 */
TEST(Chaos, RandomSigkillsWhileSubmitting)
{
    scratch_reset();
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 2;
    cfg.max_queued = 20000;
    cfg.block_when_full = true;
    constexpr uint64_t kPerThread = 12000, kThreads = 4, kN = kPerThread * kThreads;
    Ledger l(kN); /* outlives the server, whose destroy may run callbacks */
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    const double deadline = now_ms() + 5000;
    std::atomic<int> submit_errors{0};
    std::atomic<bool> stop{false};
    std::atomic<int> kills{0};
    std::thread killer([&] {
        std::mt19937 rng(static_cast<unsigned>(time(nullptr)) ^ static_cast<unsigned>(getpid()));
        while (!stop.load()) {
            std::vector<pid_t> w = worker_pids();
            if (!w.empty()) {
                pid_t victim = w[rng() % w.size()];
                if (kill(victim, SIGKILL) == 0)
                    kills.fetch_add(1);
            }
            usleep(2000 + rng() % 18000);
        }
    });
    std::vector<std::thread> th;
    for (uint64_t t = 0; t < kThreads; t++)
        th.emplace_back(submitter, srv.get(), &l, t * kPerThread, kPerThread, true,
                        &submit_errors, deadline);
    for (auto &t : th)
        t.join();
    int r = pp_wait(srv.get(), nullptr, 180000);
    stop.store(true);
    killer.join();
    ASSERT_EQ(r, 0) << "pp_wait timed out";
    ASSERT_EQ(submit_errors.load(), 0);
    long submitted = 0;
    for (uint64_t i = 0; i < kN; i++)
        submitted += !l.skipped[i].load();
    EXPECT_GT(submitted, 2000) << "too few jobs in the time budget to mean anything";
    EXPECT_EQ(l.total.load(), submitted);
    /* Killed jobs fail with -ECHILD; a job that succeeded ran once (a job
     * runs elsewhere only if its first worker died before starting it). */
    check_ledger(l, kN, true, false);
    EXPECT_GT(kills.load(), 5) << "the killer never fired";
    srv.reset();
    expect_no_descendants();
}

} // namespace
