// Description: callbacks (exactly once, promptly, on the engine thread, may submit), groups and pp_wait, templates.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Callbacks : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* Per-task record, filled by the callback. */
struct Rec {
    uint64_t x = 0;
    std::atomic<int> calls{0};
    std::atomic<int> status{INT32_MIN};
    std::atomic<uint64_t> result{0};
    std::thread::id thread;
};

/* Shared state of one test's callbacks. */
struct Board {
    std::mutex mu;
    std::condition_variable cv;
    long done = 0;
    std::atomic<int> in_callback{0};
    std::atomic<int> overlap{0};
    std::thread::id main_thread;
    std::atomic<int> on_main_thread{0};

    bool wait_done(long n, int timeout_ms)
    {
        std::unique_lock<std::mutex> lk(mu);
        return cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return done >= n; });
    }
};

Board *g_board = nullptr;

void record_cb(pp_task *t, void *arg)
{
    auto *r = static_cast<Rec *>(arg);
    Board *b = g_board;
    if (b->in_callback.fetch_add(1) != 0)
        b->overlap.fetch_add(1); /* callbacks must run one at a time */
    if (std::this_thread::get_id() == b->main_thread)
        b->on_main_thread.fetch_add(1);
    r->thread = std::this_thread::get_id();
    const void *data = nullptr;
    size_t len = 0;
    int st = pp_task_result(t, &data, &len);
    uint64_t v = 0;
    if (st >= 0 && len == sizeof v)
        memcpy(&v, data, sizeof v);
    r->result.store(v);
    r->status.store(st);
    r->calls.fetch_add(1);
    b->in_callback.fetch_sub(1);
    /* Notify under the lock: a waiter that sees `done` may destroy the
     * board (it lives on the test's stack) as soon as the lock is free. */
    std::lock_guard<std::mutex> lk(b->mu);
    b->done++;
    b->cv.notify_all();
}

/* Callback that submits a follow-up job whose own callback records. */
struct Chain {
    pp_server *srv = nullptr;
    Rec second;
    std::atomic<int> first_calls{0};
    std::atomic<int> submit_rc{INT32_MIN};
};

void chain_cb(pp_task *, void *arg)
{
    auto *c = static_cast<Chain *>(arg);
    c->first_calls.fetch_add(1);
    pp_submit_opts o{};
    o.callback = record_cb;
    o.callback_arg = &c->second;
    c->second.x = 99;
    uint64_t x = 99;
    c->submit_rc.store(pp_submit(c->srv, job_square, &x, sizeof x, &o, nullptr));
}

/* Callback that tries the calls a callback must not make. */
struct Forbidden {
    pp_server *srv = nullptr;
    std::atomic<int> wait_rc{INT32_MIN};
    std::atomic<int> set_ncpus_rc{INT32_MIN};
    std::atomic<int> done{0};
};

void forbidden_cb(pp_task *, void *arg)
{
    auto *f = static_cast<Forbidden *>(arg);
    /* With a timeout, so that an implementation that cannot tell
     * times out instead of hanging the engine thread forever. */
    f->wait_rc.store(pp_wait(f->srv, nullptr, 200));
    f->set_ncpus_rc.store(pp_set_ncpus(f->srv, 1));
    f->done.store(1);
}

} // namespace

/*
 * Callbacks run exactly once per task, without anyone waiting, for
 * server-owned tasks and for tasks with a handle; one at a time, on one
 * thread that is not the submitter's.
 */
TEST_F(Callbacks, ExactlyOncePromptlyWithoutWait)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    Board board;
    board.main_thread = std::this_thread::get_id();
    g_board = &board;
    constexpr int kJobs = 2000;
    std::vector<Rec> recs(kJobs);
    std::vector<TaskPtr> handles;
    pp_submit_opts o{};
    o.callback = record_cb;
    for (int i = 0; i < kJobs; i++) {
        recs[i].x = i;
        o.callback_arg = &recs[i];
        uint64_t x = i;
        bool keep = i % 3 == 0;
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, keep ? &t : nullptr), 0);
        if (keep)
            handles.emplace_back(t);
    }
    /* No pp_wait, no pp_task_wait: the callbacks must come on their own. */
    ASSERT_TRUE(board.wait_done(kJobs, 30000))
        << "only " << board.done << " of " << kJobs << " callbacks ran without a wait call";
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    std::thread::id cb_thread = recs[0].thread;
    for (int i = 0; i < kJobs; i++) {
        EXPECT_EQ(recs[i].calls.load(), 1) << "task " << i;
        EXPECT_EQ(recs[i].status.load(), i % 1000) << "task " << i;
        EXPECT_EQ(recs[i].result.load(), square_of(i)) << "task " << i;
        EXPECT_EQ(recs[i].thread, cb_thread) << "callbacks run on the one engine thread";
    }
    EXPECT_EQ(board.overlap.load(), 0) << "callbacks ran concurrently";
    EXPECT_EQ(board.on_main_thread.load(), 0) << "a callback ran on the submitting thread";
    /* The handles still read the same results after their callbacks. */
    for (auto &h : handles) {
        const void *d = nullptr;
        size_t len = 0;
        int st = pp_task_result(h.get(), &d, &len);
        ASSERT_GE(st, 0);
        ASSERT_EQ(len, sizeof(uint64_t));
    }
    g_board = nullptr;
}

/* A callback is not delayed until the next submission or wait call. */
TEST_F(Callbacks, LoneJobCallbackIsPrompt)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    Board board;
    board.main_thread = std::this_thread::get_id();
    g_board = &board;
    Rec rec;
    pp_submit_opts o{};
    o.callback = record_cb;
    o.callback_arg = &rec;
    TaskPtr t = submit_block(srv.get(), 0, 20000, &o);
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000));
    EXPECT_EQ(rec.calls.load(), 0) << "callback before the job was done";
    scratch()->release[0].store(1);
    EXPECT_TRUE(board.wait_done(1, 10000)) << "the callback did not come within 10 s";
    EXPECT_EQ(rec.calls.load(), 1);
    EXPECT_EQ(rec.status.load(), 100);
    g_board = nullptr;
}

TEST_F(Callbacks, CallbackMaySubmit)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    Board board;
    board.main_thread = std::this_thread::get_id();
    g_board = &board;
    Chain c;
    c.srv = srv.get();
    pp_submit_opts o{};
    o.callback = chain_cb;
    o.callback_arg = &c;
    uint64_t x = 5;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, nullptr), 0);
    ASSERT_TRUE(board.wait_done(1, 20000)) << "the job submitted from a callback never called back";
    EXPECT_EQ(c.first_calls.load(), 1);
    EXPECT_EQ(c.submit_rc.load(), 0) << "pp_submit from a callback";
    EXPECT_EQ(c.second.calls.load(), 1);
    EXPECT_EQ(c.second.status.load(), 99);
    EXPECT_EQ(c.second.result.load(), square_of(99));
    EXPECT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    g_board = nullptr;
}

/* pp_wait and pp_set_ncpus from a callback return -EDEADLK. */
TEST_F(Callbacks, ForbiddenCallsFromCallback)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    Forbidden f;
    f.srv = srv.get();
    pp_submit_opts o{};
    o.callback = forbidden_cb;
    o.callback_arg = &f;
    ASSERT_EQ(pp_submit(srv.get(), job_count, nullptr, 0, &o, nullptr), 0);
    ASSERT_TRUE(wait_until([&] { return f.done.load() != 0; }, 20000));
    EXPECT_EQ(f.wait_rc.load(), -EDEADLK) << "pp_wait from a callback";
    EXPECT_EQ(f.set_ncpus_rc.load(), -EDEADLK) << "pp_set_ncpus from a callback";
    EXPECT_EQ(pp_get_ncpus(srv.get()), 1);
}

/*
 * pp_wait(srv, "a", -1) returns once all "a" jobs are done while a long
 * "b" job still runs; a wait with a timeout gives -ETIMEDOUT meanwhile.
 */
TEST_F(Callbacks, GroupsWaitIndependently)
{
    ServerPtr srv = make_server(3);
    ASSERT_NE(srv, nullptr);
    Board board;
    board.main_thread = std::this_thread::get_id();
    g_board = &board;
    pp_submit_opts ob{};
    ob.group = "b";
    std::vector<TaskPtr> longs;
    for (int slot = 0; slot < 2; slot++) {
        longs.push_back(submit_block(srv.get(), slot, 30000, &ob));
        ASSERT_NE(longs.back(), nullptr);
    }
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() && scratch()->pid[1].load(); }, 10000))
        << "the long b jobs did not start";

    constexpr int kA = 500;
    std::vector<Rec> recs(kA);
    pp_submit_opts oa{};
    oa.group = "a";
    oa.callback = record_cb;
    for (int i = 0; i < kA; i++) {
        recs[i].x = i;
        oa.callback_arg = &recs[i];
        uint64_t x = i;
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &oa, nullptr), 0);
    }
    EXPECT_EQ(pp_wait(srv.get(), "a", -1), 0);
    /* Every "a" job done and its callback returned, "b" still running. */
    for (int i = 0; i < kA; i++) {
        ASSERT_EQ(recs[i].calls.load(), 1) << "a-task " << i << " not called back when pp_wait returned";
        EXPECT_EQ(recs[i].result.load(), square_of(i));
    }
    for (auto &t : longs)
        EXPECT_EQ(pp_task_wait(t.get(), 0), -ETIMEDOUT) << "a b job ended early";
    double t0 = now_ms();
    EXPECT_EQ(pp_wait(srv.get(), "b", 100), -ETIMEDOUT);
    EXPECT_GE(now_ms() - t0, 90.0) << "the timed wait returned early";
    EXPECT_EQ(pp_wait(srv.get(), nullptr, 50), -ETIMEDOUT) << "waiting for all groups";
    EXPECT_EQ(pp_wait(srv.get(), "c", 0), -ENOENT);
    EXPECT_EQ(pp_wait(srv.get(), "a", 0), 0) << "a finished group stays finished";

    scratch()->release[0].store(1);
    scratch()->release[1].store(1);
    EXPECT_EQ(pp_wait(srv.get(), "b", 20000), 0);
    for (auto &t : longs)
        EXPECT_EQ(pp_task_wait(t.get(), 0), 0);
    EXPECT_EQ(pp_wait(srv.get(), nullptr, 0), 0);
    g_board = nullptr;
}

/* The default group is named "default". */
TEST_F(Callbacks, DefaultGroup)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    uint64_t x = 3;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    EXPECT_EQ(pp_wait(srv.get(), "default", 10000), 0);
    EXPECT_EQ(scratch()->runs.load(), 1);
}

/* Templates carry the function, the callback and the group. */
TEST_F(Callbacks, Templates)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    Board board;
    board.main_thread = std::this_thread::get_id();
    g_board = &board;

    /* One record per task: the callback argument is fixed by the template,
     * so the records are found through the result. */
    struct TplState {
        std::atomic<int> calls[1000];
        std::atomic<int> bad{0};
    };
    static TplState st;
    for (auto &c : st.calls)
        c.store(0);
    st.bad.store(0);
    auto cb = [](pp_task *t, void *arg) {
        auto *s = static_cast<TplState *>(arg);
        int status = pp_task_result(t, nullptr, nullptr);
        if (status < 0 || status >= 1000)
            s->bad.fetch_add(1);
        else
            s->calls[status].fetch_add(1);
    };
    pp_submit_opts o{};
    o.callback = cb;
    o.callback_arg = &st;
    o.group = "tpl";
    pp_template *tpl = nullptr;
    ASSERT_EQ(pp_template_new(srv.get(), job_square, &o, &tpl), 0);
    ASSERT_NE(tpl, nullptr);
    std::vector<std::pair<uint64_t, pp_task *>> kept;
    for (uint64_t x = 0; x < 1000; x++) {
        pp_task *t = nullptr;
        bool keep = x % 4 == 0;
        ASSERT_EQ(pp_template_submit(tpl, &x, sizeof x, keep ? &t : nullptr), 0) << "x=" << x;
        if (keep)
            kept.emplace_back(x, t);
    }
    EXPECT_EQ(pp_wait(srv.get(), "tpl", 30000), 0) << "the template's group";
    for (int i = 0; i < 1000; i++)
        EXPECT_EQ(st.calls[i].load(), 1) << "template task " << i;
    EXPECT_EQ(st.bad.load(), 0);
    for (auto &[x, t] : kept) {
        const void *d = nullptr;
        size_t len = 0;
        EXPECT_EQ(pp_task_result(t, &d, &len), static_cast<int>(x % 1000));
        ASSERT_EQ(len, sizeof(uint64_t));
        uint64_t r;
        memcpy(&r, d, sizeof r);
        EXPECT_EQ(r, square_of(x));
        pp_task_release(t);
    }
    EXPECT_EQ(scratch()->runs.load(), 1000);
    pp_template_destroy(tpl);
    /* The server goes on after the template is gone. */
    uint64_t x = 4;
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t), 0);
    EXPECT_EQ(pp_task_wait(t, 10000), 0);
    EXPECT_EQ(task_status(t), 4);
    pp_task_release(t);
    g_board = nullptr;
}

/*
 * pp_wait waits for the jobs submitted before the call: another thread
 * that keeps submitting must not keep it from returning.
 */
TEST_F(Callbacks, WaitNotStarvedBySubmitters)
{
    /* The feeder is throttled by a bounded queue, so it never stops on
     * its own: a pp_wait that waits for later jobs times out. */
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 2;
    cfg.max_queued = 2000;
    cfg.block_when_full = true;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    std::atomic<bool> stop{false};
    std::atomic<long> extra{0};
    std::thread feeder([&] {
        uint32_t us = 20;
        pp_submit_opts o{};
        o.group = "g";
        while (!stop.load()) {
            if (pp_submit(srv.get(), job_spin, &us, sizeof us, &o, nullptr) == 0)
                extra.fetch_add(1);
        }
    });
    ASSERT_TRUE(wait_until([&] { return extra.load() > 1000; }, 10000));
    pp_submit_opts o{};
    o.group = "g";
    for (uint64_t x = 0; x < 100; x++)
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, nullptr), 0);
    /* At most ~2100 jobs of 20 us were queued before the calls: 4 s is
     * ample for them, while the feeder keeps going all along. */
    double t0 = now_ms();
    int rc_all = pp_wait(srv.get(), nullptr, 4000);
    double t_all = now_ms() - t0;
    int rc_g = pp_wait(srv.get(), "g", 4000);
    stop.store(true);
    feeder.join();
    EXPECT_EQ(rc_all, 0) << "pp_wait(NULL) waited for jobs submitted after it (" << t_all << " ms)";
    EXPECT_EQ(rc_g, 0) << "pp_wait(\"g\") waited for jobs submitted after it";
    for (uint64_t x = 0; x < 100; x++)
        EXPECT_EQ(scratch()->seen[x].load(), 1u) << "x=" << x << " not done when pp_wait returned";
}

/* pp_wait sleeps until its whole batch is done, woken by whichever worker
 * (or the engine, for jobs with callbacks) finishes the last job: many
 * small batches across several workers must never lose that wake-up. */
static void count_cb(pp_task *, void *arg)
{
    static_cast<std::atomic<int> *>(arg)->fetch_add(1);
}

static void wait_batches(bool sleep_at_once)
{
    /* spin_us = 0: every wait goes straight to the futex path. */
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = 4;
    if (sleep_at_once)
        cfg.spin_us = 0;
    ServerPtr srv = make_server(cfg);
    ASSERT_NE(srv, nullptr);
    std::atomic<int> cbs{0};
    uint64_t x = 0;
    for (int round = 0; round < 2000; round++) {
        int k = 1 + round % 8;
        std::vector<pp_task *> t(k);
        for (int i = 0; i < k; i++, x++) {
            pp_submit_opts o{};
            o.group = "batch";
            if (i == k - 1) { /* one job per batch finished by the engine */
                o.callback = count_cb;
                o.callback_arg = &cbs;
            }
            uint64_t arg = x % kMaxSeen;
            ASSERT_EQ(pp_submit(srv.get(), job_square, &arg, sizeof arg, &o, &t[i]), 0);
        }
        ASSERT_EQ(pp_wait(srv.get(), "batch", 10000), 0) << "round " << round;
        for (pp_task *tk : t) {
            EXPECT_EQ(pp_task_wait(tk, 0), 0) << "pp_wait returned before a job was done";
            pp_task_release(tk);
        }
        ASSERT_EQ(cbs.load(), round + 1) << "pp_wait returned before a callback ran";
    }
}

TEST_F(Callbacks, WaitBatchesNeverLoseTheWakeUp) { wait_batches(false); }
TEST_F(Callbacks, WaitBatchesNeverLoseTheWakeUpWhenSleeping) { wait_batches(true); }
