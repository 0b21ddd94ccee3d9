// Description: server lifetime: destroy with jobs in flight, no child process, thread or memfd left after destroy, several servers at once.
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

class Lifecycle : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

struct Rec {
    std::atomic<int> calls{0};
    std::atomic<int> status{INT32_MIN};
    std::atomic<int> submit_rc{INT32_MIN};
    pp_server *srv = nullptr; /* set: the callback tries to submit */
};

void rec_cb(pp_task *t, void *arg)
{
    auto *r = static_cast<Rec *>(arg);
    r->status.store(pp_task_result(t, nullptr, nullptr));
    if (r->srv != nullptr) {
        uint64_t x = 1;
        r->submit_rc.store(pp_submit(r->srv, job_square, &x, sizeof x, nullptr, nullptr));
    }
    r->calls.fetch_add(1);
}

/* Asserts that nothing of a destroyed server is left in this process. */
void expect_nothing_left(const std::vector<ProcInfo> &procs, int threads_before, int memfd_fds_before,
                         int memfd_maps_before)
{
    for (const ProcInfo &p : procs)
        EXPECT_FALSE(process_exists(p)) << "pid " << p.pid << " (depth " << p.depth
                                        << ", state " << p.state << ") survived pp_server_destroy";
    std::vector<ProcInfo> now = descendants(getpid());
    EXPECT_TRUE(now.empty()) << now.size() << " descendant(s) remain, e.g. pid "
                             << (now.empty() ? 0 : now[0].pid) << " state "
                             << (now.empty() ? '-' : now[0].state);
    EXPECT_EQ(count_threads(), threads_before) << "the engine thread is still there";
    EXPECT_EQ(count_memfd_fds(), memfd_fds_before) << "a memfd fd leaked";
    EXPECT_EQ(count_memfd_maps(), memfd_maps_before) << "a memfd mapping leaked";
}

} // namespace

TEST_F(Lifecycle, NormalDestroyLeavesNothing)
{
    const int threads = baseline_threads();
    const int fds = count_memfd_fds();
    const int maps = count_memfd_maps();
    ASSERT_EQ(descendants(getpid()).size(), 0u) << "test process has children before the test";

    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    EXPECT_EQ(count_live_children(), 1) << "one zygote";
    EXPECT_EQ(wait_workers(2, 10000), 2) << "two workers under the zygote";
    EXPECT_EQ(count_threads(), threads + 1) << "pp_server_new starts exactly one engine thread";
    EXPECT_GT(count_memfd_maps(), maps) << "the segment is a memfd mapping (sanity of this test)";
    for (uint64_t x = 0; x < 1000; x++)
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 20000), 0);
    void *blk = pp_shm_alloc(srv.get(), 1 << 20);
    EXPECT_NE(blk, nullptr);
    (void)blk; /* freed with the segment */

    std::vector<ProcInfo> procs = descendants(getpid());
    srv.reset();
    expect_nothing_left(procs, threads, fds, maps);
}

TEST_F(Lifecycle, DestroyRightAfterNew)
{
    const int threads = baseline_threads();
    const int fds = count_memfd_fds();
    const int maps = count_memfd_maps();
    for (int i = 0; i < 5; i++) {
        pp_server *srv = nullptr;
        ASSERT_EQ(pp_server_new(nullptr, &srv), 0);
        std::vector<ProcInfo> procs = descendants(getpid());
        pp_server_destroy(srv);
        expect_nothing_left(procs, threads, fds, maps);
    }
}

/*
 * Destroy while two long jobs run and 200 wait: it returns promptly, every
 * callback runs exactly once with -ECANCELED, and nothing is left.
 */
TEST_F(Lifecycle, DestroyWithJobsInFlight)
{
    const int threads = baseline_threads();
    const int fds = count_memfd_fds();
    const int maps = count_memfd_maps();
    pp_server *srv = nullptr;
    ASSERT_EQ(pp_server_new(nullptr, &srv), 0);
    ServerPtr guard(srv); /* destroys if an assertion fails early */
    const int ncpus = pp_get_ncpus(srv);
    ASSERT_GE(ncpus, 1);
    ASSERT_LE(ncpus, 16);

    std::vector<Rec> longs(ncpus);
    pp_submit_opts o{};
    o.callback = rec_cb;
    for (int i = 0; i < ncpus; i++) {
        o.callback_arg = &longs[i];
        BlockArg b{i, 30000};
        pp_task *t = nullptr; /* handle kept: destroy frees it */
        ASSERT_EQ(pp_submit(srv, job_block, &b, sizeof b, &o, i % 2 ? &t : nullptr), 0);
    }
    ASSERT_TRUE(wait_until([&] {
        for (int i = 0; i < ncpus; i++)
            if (scratch()->pid[i].load() == 0)
                return false;
        return true;
    }, 10000)) << "the long jobs did not all start";

    constexpr int kQueued = 200;
    std::vector<Rec> queued(kQueued);
    for (int i = 0; i < kQueued; i++) {
        o.callback_arg = &queued[i];
        uint64_t x = i;
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv, job_square, &x, sizeof x, &o, i % 2 ? &t : nullptr), 0);
    }
    EXPECT_EQ(scratch()->runs.load(), 0) << "a queued job ran while every worker was busy";

    std::vector<ProcInfo> procs = descendants(getpid());
    double t0 = now_ms();
    pp_server_destroy(guard.release());
    double took = now_ms() - t0;
    EXPECT_LT(took, 5000.0) << "destroy waited for the long jobs";

    for (int i = 0; i < ncpus; i++) {
        EXPECT_EQ(longs[i].calls.load(), 1) << "running task " << i;
        EXPECT_EQ(longs[i].status.load(), -ECANCELED) << "running task " << i;
    }
    long not_once = 0, not_cancelled = 0;
    for (const Rec &r : queued) {
        not_once += r.calls.load() != 1;
        not_cancelled += r.status.load() != -ECANCELED;
    }
    EXPECT_EQ(not_once, 0) << "queued tasks whose callback did not run exactly once";
    EXPECT_EQ(not_cancelled, 0) << "queued tasks not reported -ECANCELED";
    EXPECT_EQ(scratch()->runs.load(), 0) << "cancelled jobs ran";
    expect_nothing_left(procs, threads, fds, maps);
}

/* A callback run by pp_server_destroy cannot submit: -ESHUTDOWN. */
TEST_F(Lifecycle, SubmitFromCancelledCallback)
{
    pp_server *srv = nullptr;
    ASSERT_EQ(pp_server_new(nullptr, &srv), 0);
    ServerPtr guard(srv);
    const int ncpus = pp_get_ncpus(srv);
    std::vector<TaskPtr> blockers;
    for (int i = 0; i < ncpus; i++)
        blockers.push_back(submit_block(srv, i, 30000));
    ASSERT_TRUE(wait_until([&] {
        for (int i = 0; i < ncpus; i++)
            if (scratch()->pid[i].load() == 0)
                return false;
        return true;
    }, 10000));
    Rec r;
    r.srv = srv;
    pp_submit_opts o{};
    o.callback = rec_cb;
    o.callback_arg = &r;
    uint64_t x = 5;
    ASSERT_EQ(pp_submit(srv, job_square, &x, sizeof x, &o, nullptr), 0);
    for (auto &b : blockers)
        (void)b.release(); /* destroy frees them */
    pp_server_destroy(guard.release());
    EXPECT_EQ(r.calls.load(), 1);
    EXPECT_EQ(r.status.load(), -ECANCELED);
    EXPECT_EQ(r.submit_rc.load(), -ESHUTDOWN) << "pp_submit from a callback during destroy";
}

/* Two servers at once are independent. */
TEST_F(Lifecycle, TwoServersIndependent)
{
    const int threads = baseline_threads();
    const int fds = count_memfd_fds();
    const int maps = count_memfd_maps();
    ServerPtr a = make_server(1);
    ServerPtr b = make_server(2);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(count_live_children(), 2) << "one zygote per server";
    EXPECT_EQ(wait_workers(3, 10000), 3);
    for (uint64_t x = 0; x < 500; x++) {
        ASSERT_EQ(pp_submit(a.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
        uint64_t y = x + 500;
        ASSERT_EQ(pp_submit(b.get(), job_square, &y, sizeof y, nullptr, nullptr), 0);
    }
    ASSERT_EQ(pp_wait(a.get(), nullptr, 20000), 0);
    ASSERT_EQ(pp_wait(b.get(), nullptr, 20000), 0);
    struct pp_stats sa, sb;
    ASSERT_EQ(pp_get_stats(a.get(), &sa), 0);
    ASSERT_EQ(pp_get_stats(b.get(), &sb), 0);
    EXPECT_EQ(sa.njobs, 500u);
    EXPECT_EQ(sb.njobs, 500u);
    a.reset();
    EXPECT_EQ(count_live_children(), 1);
    EXPECT_EQ(wait_workers(2, 10000), 2) << "destroying a touched b's workers";
    uint64_t x = 5077;
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(b.get(), job_square, &x, sizeof x, nullptr, &t), 0);
    ASSERT_EQ(pp_task_wait(t, 10000), 0);
    EXPECT_EQ(task_status(t), 77);
    pp_task_release(t);
    std::vector<ProcInfo> procs = descendants(getpid());
    b.reset();
    expect_nothing_left(procs, threads, fds, maps);
    for (uint64_t v = 0; v < 1000; v++)
        ASSERT_EQ(scratch()->seen[v].load(), 1u) << "x=" << v;
}

/* No signal handler is installed in the host. */
TEST_F(Lifecycle, NoSignalHandlerInHost)
{
    struct sigaction before[65];
    for (int s = 1; s < 65; s++)
        sigaction(s, nullptr, &before[s]);
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    uint64_t x = 1;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    for (int s = 1; s < 65; s++) {
        struct sigaction now;
        if (sigaction(s, nullptr, &now) != 0)
            continue;
        EXPECT_EQ(reinterpret_cast<void *>(now.sa_handler), reinterpret_cast<void *>(before[s].sa_handler))
            << "handler of signal " << s << " changed";
    }
}

/*
 * A server created by a thread that then exits keeps working (a zygote or
 * worker tied to the creating thread, e.g. by PR_SET_PDEATHSIG, would die
 * with it), and it is still torn down cleanly.
 */
TEST_F(Lifecycle, CreatorThreadExits)
{
    const int threads = baseline_threads();
    const int fds = count_memfd_fds();
    const int maps = count_memfd_maps();
    pp_server *srv = nullptr;
    int rc = INT32_MIN;
    std::thread creator([&] { rc = pp_server_new(nullptr, &srv); });
    creator.join();
    ASSERT_EQ(rc, 0);
    ServerPtr guard(srv);
    const int n = pp_get_ncpus(srv);
    /* Give a death signal time to land before looking. */
    ASSERT_EQ(wait_workers(n, 10000), n);
    EXPECT_FALSE(wait_until([&] { return count_live_children() != 1 || count_workers() != n; }, 300))
        << "the zygote or a worker died after its creating thread exited";
    std::vector<TaskPtr> tasks;
    for (uint64_t x = 0; x < 200; x++) {
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv, job_square, &x, sizeof x, nullptr, &t), 0);
        tasks.emplace_back(t);
    }
    for (uint64_t x = 0; x < 200; x++) {
        ASSERT_EQ(pp_task_wait(tasks[x].get(), 10000), 0) << "x=" << x;
        EXPECT_EQ(task_status(tasks[x].get()), static_cast<int>(x));
    }
    tasks.clear();
    struct pp_stats st;
    ASSERT_EQ(pp_get_stats(srv, &st), 0);
    EXPECT_EQ(st.worker_deaths, 0u);
    std::vector<ProcInfo> procs = descendants(getpid());
    guard.reset();
    expect_nothing_left(procs, threads, fds, maps);
}

/* A child the host forks may free its copy of a server; the parent's
 * server, its zygote and its workers are untouched. */
TEST(LifecycleFork, DestroyInForkedChildLeavesParentServer)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        pp_server_destroy(srv.get());
        _exit(0);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
    EXPECT_EQ(wait_workers(2, 1000), 2) << "the child's destroy touched the parent's workers";
    for (uint64_t x = 0; x < 50; x++) {
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t), 0);
        ASSERT_EQ(pp_task_wait(t, 10000), 0);
        const void *d;
        EXPECT_EQ(pp_task_result(t, &d, nullptr), static_cast<int>(x % 1000));
        EXPECT_EQ(*static_cast<const uint64_t *>(d), square_of(x));
        pp_task_release(t);
    }
}
