// Description: correctness under load: 100k jobs, 8 submitting threads, busy-poll mode, a host whose other threads are busy.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Throughput : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* Checks a done job_square task for x. */
::testing::AssertionResult square_ok(pp_task *t, uint64_t x)
{
    const void *data = nullptr;
    size_t len = 0;
    int st = pp_task_result(t, &data, &len);
    if (st != static_cast<int>(x % 1000))
        return ::testing::AssertionFailure() << "x=" << x << ": status " << st << ", error "
                                             << (pp_task_error(t) ? pp_task_error(t) : "(none)");
    if (len != sizeof(uint64_t) || data == nullptr)
        return ::testing::AssertionFailure() << "x=" << x << ": result of " << len << " bytes";
    uint64_t r;
    memcpy(&r, data, sizeof r);
    if (r != square_of(x))
        return ::testing::AssertionFailure() << "x=" << x << ": result " << r << " != " << square_of(x);
    return ::testing::AssertionSuccess();
}

/* Submits n job_square(first..first+n) keeping handles, then checks them all. */
void run_and_check_squares(pp_server *srv, uint64_t first, uint64_t n)
{
    std::vector<pp_task *> tasks(n, nullptr);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = first + i;
        ASSERT_EQ(pp_submit(srv, job_square, &x, sizeof x, nullptr, &tasks[i]), 0) << "x=" << x;
    }
    for (uint64_t i = 0; i < n; i++) {
        ASSERT_EQ(pp_task_wait(tasks[i], 60000), 0) << "x=" << first + i << " never finished";
        EXPECT_TRUE(square_ok(tasks[i], first + i));
        pp_task_release(tasks[i]);
    }
}

/* One per task: the callback checks the result and counts its calls. */
struct Slot {
    uint64_t x = 0;
    std::atomic<int> calls{0};
    std::atomic<int> ok{0};
};

void square_cb(pp_task *t, void *arg)
{
    auto *slot = static_cast<Slot *>(arg);
    if (square_ok(t, slot->x))
        slot->ok.fetch_add(1);
    slot->calls.fetch_add(1);
}

/* Counts slots whose callback ran other than once, or saw a bad result. */
void check_slots(const std::vector<Slot> &slots)
{
    long not_once = 0, bad = 0;
    for (const Slot &s : slots) {
        not_once += s.calls.load() != 1;
        bad += s.ok.load() != 1;
    }
    EXPECT_EQ(not_once, 0) << "tasks whose callback did not run exactly once";
    EXPECT_EQ(bad, 0) << "callbacks that saw a wrong result";
}

} // namespace

/*
 * 100,000 jobs with distinct arguments, all submitted before any is
 * waited for (so with the default ring most wait in the server's queue):
 * every result is right and every argument ran exactly once.
 */
TEST_F(Throughput, HundredThousandJobs)
{
    ServerPtr srv = make_server(PP_AUTODETECT);
    ASSERT_NE(srv, nullptr);
    constexpr uint64_t kJobs = 100000;
    ASSERT_LE(kJobs, kMaxSeen);
    run_and_check_squares(srv.get(), 0, kJobs);
    long dup = 0, lost = 0;
    for (uint64_t x = 0; x < kJobs; x++) {
        uint32_t c = scratch()->seen[x].load();
        if (c == 0)
            lost++;
        else if (c > 1)
            dup++;
    }
    EXPECT_EQ(lost, 0) << "arguments that never ran";
    EXPECT_EQ(dup, 0) << "arguments that ran more than once";
    EXPECT_EQ(scratch()->runs.load(), long(kJobs));
    struct pp_stats st;
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_EQ(st.njobs, kJobs);
}

/* The same with server-owned tasks (ret NULL) and a callback each. */
TEST_F(Throughput, HundredThousandServerOwnedJobs)
{
    ServerPtr srv = make_server(PP_AUTODETECT);
    ASSERT_NE(srv, nullptr);
    constexpr uint64_t kJobs = 100000;
    std::vector<Slot> slots(kJobs);
    pp_submit_opts o{};
    o.callback = square_cb;
    for (uint64_t x = 0; x < kJobs; x++) {
        slots[x].x = x;
        o.callback_arg = &slots[x];
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, nullptr), 0) << "x=" << x;
    }
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 120000), 0);
    check_slots(slots);
    long dup = 0, lost = 0;
    for (uint64_t x = 0; x < kJobs; x++) {
        uint32_t n = scratch()->seen[x].load();
        lost += n == 0;
        dup += n > 1;
    }
    EXPECT_EQ(lost, 0);
    EXPECT_EQ(dup, 0);
}

/* 8 host threads submit at once, each many jobs, with handles and without. */
TEST_F(Throughput, EightSubmittingThreads)
{
    ServerPtr srv = make_server(PP_AUTODETECT);
    ASSERT_NE(srv, nullptr);
    constexpr int kThreads = 8;
    constexpr uint64_t kPerThread = 6000; /* half with handles, half server-owned */
    std::vector<Slot> slots(kThreads * kPerThread);
    std::atomic<long> failures{0};
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; th++) {
        threads.emplace_back([&, th] {
            ready.fetch_add(1);
            while (ready.load() < kThreads) {
            }
            pp_submit_opts o{};
            o.callback = square_cb;
            std::vector<std::pair<uint64_t, pp_task *>> mine;
            for (uint64_t i = 0; i < kPerThread; i++) {
                uint64_t x = th * kPerThread + i;
                pp_task *t = nullptr;
                bool keep = (i % 2) == 0;
                slots[x].x = x;
                o.callback_arg = &slots[x];
                if (pp_submit(srv.get(), job_square, &x, sizeof x, &o, keep ? &t : nullptr) != 0) {
                    failures.fetch_add(1);
                    continue;
                }
                if (keep)
                    mine.emplace_back(x, t);
            }
            for (auto &[x, t] : mine) {
                if (pp_task_wait(t, 60000) != 0 || !square_ok(t, x))
                    failures.fetch_add(1);
                pp_task_release(t);
            }
        });
    }
    for (auto &t : threads)
        t.join();
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 60000), 0);
    const long total = kThreads * kPerThread;
    EXPECT_EQ(failures.load(), 0) << "failed submissions or wrong results";
    check_slots(slots);
    EXPECT_EQ(scratch()->runs.load(), total);
    long dup = 0, lost = 0;
    for (long x = 0; x < total; x++) {
        uint32_t n = scratch()->seen[x].load();
        lost += n == 0;
        dup += n > 1;
    }
    EXPECT_EQ(lost, 0);
    EXPECT_EQ(dup, 0);
    struct pp_stats st;
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_EQ(st.njobs, uint64_t(total));
    EXPECT_EQ(st.active_tasks, 0u);
}

TEST_F(Throughput, BusyPollMode)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.busy_poll = true;
    cfg.ncpus = 2;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    run_and_check_squares(srv.get(), 0, 4000);
    /* Also a job that blocks a while: busy waiting must not lose it. */
    TaskPtr t = submit_block(srv.get(), 0, 20000);
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000));
    run_and_check_squares(srv.get(), 4000, 1000);
    scratch()->release[0].store(1);
    ASSERT_EQ(pp_task_wait(t.get(), 10000), 0);
    EXPECT_EQ(task_status(t.get()), 100);
    t.reset();
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    for (uint64_t x = 0; x < 5000; x++)
        ASSERT_EQ(scratch()->seen[x].load(), 1u) << "x=" << x;
}

/*
 * A host with 4 busy threads (2 spinning on an atomic, 2 also calling
 * malloc/free) while the server is created, jobs run, a worker is
 * killed and replaced, and the server is destroyed.
 */
TEST_F(Throughput, HostWithBusyThreads)
{
    std::atomic<bool> stop{false};
    std::atomic<long> spins{0};
    std::vector<std::thread> busy;
    for (int i = 0; i < 4; i++) {
        busy.emplace_back([&, i] {
            while (!stop.load(std::memory_order_relaxed)) {
                if (i % 2) {
                    void *p = malloc(64 + (spins.load(std::memory_order_relaxed) % 4096));
                    free(p);
                }
                spins.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    struct Stop {
        std::atomic<bool> &stop;
        std::vector<std::thread> &busy;
        ~Stop()
        {
            stop = true;
            for (auto &t : busy)
                t.join();
        }
    } stopper{stop, busy};

    for (int round = 0; round < 2; round++) {
        scratch_reset();
        ServerPtr srv = make_server(2);
        ASSERT_NE(srv, nullptr) << "round " << round;
        EXPECT_EQ(wait_workers(2, 10000), 2);
        run_and_check_squares(srv.get(), 0, 2000);

        TaskPtr victim = submit_block(srv.get(), 1, 20000);
        ASSERT_NE(victim, nullptr);
        ASSERT_TRUE(wait_until([] { return scratch()->pid[1].load() != 0; }, 10000));
        ASSERT_EQ(kill(scratch()->pid[1].load(), SIGKILL), 0);
        ASSERT_EQ(pp_task_wait(victim.get(), 10000), 0) << "the killed job never finished";
        EXPECT_EQ(task_status(victim.get()), -ECHILD);
        victim.reset();
        EXPECT_EQ(wait_workers(2, 10000), 2) << "the killed worker was not replaced";
        run_and_check_squares(srv.get(), 2000, 2000);

        std::vector<ProcInfo> before = descendants(getpid());
        ASSERT_FALSE(before.empty());
        double t0 = now_ms();
        srv.reset();
        EXPECT_LT(now_ms() - t0, 5000.0) << "destroy was slow";
        for (const ProcInfo &p : before)
            EXPECT_FALSE(process_exists(p)) << "pid " << p.pid << " survived pp_server_destroy";
    }
    EXPECT_GT(spins.load(), 0);
}
