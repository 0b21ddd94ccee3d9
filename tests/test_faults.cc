// Description: worker deaths: kill -9 mid-job, segfault, abort, _exit; the task gets -ECHILD and a clear message, the worker is replaced, other jobs go on.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

enum Crash {
    kExternalKill, /* the test sends SIGKILL to the worker running job_block */
    kRaiseSegv,
    kBadPointerWrite,
    kAbort,
    kExit3,
    kExit0,
    kSelfKill,
};

/* Argument: the Crash kind; the address to write for kBadPointerWrite. */
struct CrashArg {
    int kind;
    uintptr_t addr;
};

int job_crash(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    CrashArg c{};
    memcpy(&c, arg, len < sizeof c ? len : sizeof c);
    scratch()->pid[1].store(static_cast<int>(getpid()));
    switch (c.kind) {
    case kRaiseSegv:
        /* A sanitizer runtime may own SIGSEGV; a real crash is the default action. */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        break;
    case kBadPointerWrite:
        signal(SIGSEGV, SIG_DFL);
        *reinterpret_cast<volatile int *>(c.addr) = 1;
        break;
    case kAbort:
        abort();
    case kExit3:
        _exit(3);
    case kExit0:
        _exit(0);
    case kSelfKill:
        kill(getpid(), SIGKILL);
        break;
    default:
        break;
    }
    return pp_job_fail(job, EPROTO, "job_crash: still alive after kind %d", c.kind);
}

struct CrashCase {
    Crash kind;
    const char *name;
    const char *message_re; /* what pp_task_error must match (icase), or NULL */
};

const CrashCase kCases[] = {
    {kExternalKill, "SigkillFromOutside", "signal 9|killed"},
    {kRaiseSegv, "RaiseSigsegv", "signal 11|segmentation"},
    {kBadPointerWrite, "BadPointerWrite", "signal 11|segmentation"},
    {kAbort, "Abort", "signal 6|abort"},
    {kExit3, "Exit3", "(exit|status)[^0-9]*3([^0-9]|$)"},
    {kExit0, "Exit0", "(exit|status)[^0-9]*0([^0-9]|$)"},
    {kSelfKill, "SelfSigkill", "signal 9|killed"},
};

void PrintTo(const CrashCase &c, std::ostream *os)
{
    *os << c.name;
}

class Faults : public ::testing::TestWithParam<CrashCase> {
protected:
    void SetUp() override { scratch_reset(); }
};

std::atomic<int> g_crash_cb_calls{0};
std::atomic<int> g_crash_cb_status{0};
void crash_cb(pp_task *t, void *)
{
    g_crash_cb_status.store(pp_task_result(t, nullptr, nullptr));
    g_crash_cb_calls.fetch_add(1);
}

/* Submits job_square(first..first+n) keeping the handles. */
std::vector<pp_task *> submit_squares(pp_server *srv, uint64_t first, uint64_t n)
{
    std::vector<pp_task *> v;
    for (uint64_t x = first; x < first + n; x++) {
        pp_task *t = nullptr;
        if (pp_submit(srv, job_square, &x, sizeof x, nullptr, &t) == 0)
            v.push_back(t);
    }
    return v;
}

/* Waits for and checks tasks from submit_squares, releasing them. */
void check_squares(std::vector<pp_task *> &v, uint64_t first)
{
    for (size_t i = 0; i < v.size(); i++) {
        uint64_t x = first + i;
        ASSERT_EQ(pp_task_wait(v[i], 20000), 0) << "x=" << x << " never finished";
        const void *d = nullptr;
        size_t len = 0;
        EXPECT_EQ(pp_task_result(v[i], &d, &len), static_cast<int>(x % 1000))
            << "x=" << x << ": " << (pp_task_error(v[i]) ? pp_task_error(v[i]) : "");
        uint64_t r = 0;
        if (len == sizeof r)
            memcpy(&r, d, sizeof r);
        EXPECT_EQ(r, square_of(x)) << "x=" << x;
        pp_task_release(v[i]);
    }
    v.clear();
}

} // namespace

TEST_P(Faults, WorkerDeathFailsOnlyItsJob)
{
    const CrashCase cc = GetParam();
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    g_crash_cb_calls = 0;
    g_crash_cb_status = 0;

    std::vector<pp_task *> before = submit_squares(srv.get(), 0, 300);
    ASSERT_EQ(before.size(), 300u);

    pp_submit_opts o{};
    o.callback = crash_cb;
    pp_task *victim = nullptr;
    if (cc.kind == kExternalKill) {
        BlockArg b{1, 20000};
        ASSERT_EQ(pp_submit(srv.get(), job_block, &b, sizeof b, &o, &victim), 0);
    } else {
        CrashArg c{cc.kind, 8};
        ASSERT_EQ(pp_submit(srv.get(), job_crash, &c, sizeof c, &o, &victim), 0);
    }
    TaskPtr vt(victim);
    std::vector<pp_task *> after = submit_squares(srv.get(), 1000, 300);
    ASSERT_EQ(after.size(), 300u);

    if (cc.kind == kExternalKill) {
        ASSERT_TRUE(wait_until([] { return scratch()->pid[1].load() != 0; }, 10000))
            << "the job to kill never started";
        pid_t pid = scratch()->pid[1].load();
        std::vector<pid_t> w = worker_pids();
        ASSERT_NE(std::find(w.begin(), w.end(), pid), w.end()) << "the job's pid is not a worker";
        ASSERT_EQ(kill(pid, SIGKILL), 0);
    }
    ASSERT_EQ(pp_task_wait(victim, 20000), 0) << "the task of the dead worker never finished";
    EXPECT_EQ(task_status(victim), -ECHILD);
    const char *err = pp_task_error(victim);
    ASSERT_NE(err, nullptr) << "no message for a dead worker";
    EXPECT_TRUE(std::regex_search(err, std::regex(cc.message_re, std::regex::icase)))
        << "message \"" << err << "\" does not match /" << cc.message_re << "/";
    EXPECT_LT(strlen(err), size_t(PP_ERRMSG_MAX));

    check_squares(before, 0);
    check_squares(after, 1000);
    EXPECT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    EXPECT_EQ(g_crash_cb_calls.load(), 1) << "the dead job's callback runs once";
    EXPECT_EQ(g_crash_cb_status.load(), -ECHILD);

    /* Replaced, and later jobs run. */
    EXPECT_EQ(wait_workers(2, 10000), 2) << "the dead worker was not replaced";
    std::vector<pp_task *> later = submit_squares(srv.get(), 5000, 300);
    check_squares(later, 5000);
    /* The counters may lag the processes a little. */
    struct pp_stats st;
    EXPECT_TRUE(wait_until([&] {
        return pp_get_stats(srv.get(), &st) == 0 && st.workers_started >= 3;
    }, 10000)) << "workers_started " << st.workers_started << ": the replacement is not counted";
    EXPECT_EQ(st.worker_deaths, 1u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Faults, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<CrashCase> &i) { return std::string(i.param.name); });

class FaultsMore : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* An idle worker killed: replaced, no task affected. */
TEST_F(FaultsMore, IdleWorkerKilled)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    std::vector<pid_t> w = worker_pids();
    ASSERT_EQ(kill(w[0], SIGKILL), 0);
    EXPECT_TRUE(wait_until([&] {
        std::vector<pid_t> now = worker_pids();
        return now.size() == 2 && std::find(now.begin(), now.end(), w[0]) == now.end();
    }, 10000)) << "the idle worker was not replaced";
    std::vector<pp_task *> v = submit_squares(srv.get(), 0, 500);
    check_squares(v, 0);
    struct pp_stats st;
    EXPECT_TRUE(wait_until([&] { return pp_get_stats(srv.get(), &st) == 0 && st.worker_deaths >= 1; }, 10000));
    EXPECT_EQ(st.worker_deaths, 1u);
}

/* Many deaths in a row: the pool keeps its size and the server its health. */
TEST_F(FaultsMore, RepeatedCrashes)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    constexpr int kCrashes = 20;
    std::vector<TaskPtr> crashes;
    for (int i = 0; i < kCrashes; i++) {
        CrashArg c{i % 2 ? kExit3 : kSelfKill, 0};
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_crash, &c, sizeof c, nullptr, &t), 0);
        crashes.emplace_back(t);
    }
    std::vector<pp_task *> v = submit_squares(srv.get(), 0, 500);
    for (auto &t : crashes) {
        ASSERT_EQ(pp_task_wait(t.get(), 20000), 0);
        EXPECT_EQ(task_status(t.get()), -ECHILD);
    }
    check_squares(v, 0);
    EXPECT_EQ(wait_workers(2, 10000), 2);
    struct pp_stats st;
    EXPECT_TRUE(wait_until([&] {
        return pp_get_stats(srv.get(), &st) == 0 && st.worker_deaths >= uint64_t(kCrashes);
    }, 10000));
    EXPECT_EQ(st.worker_deaths, uint64_t(kCrashes));
}

/* When the host process dies, the zygote and the workers end too. */
TEST_F(FaultsMore, HostDeathEndsWorkers)
{
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        /* The host: start a server, prove it works, wait, die by SIGKILL. */
        pp_server *srv = nullptr;
        if (pp_server_new(nullptr, &srv) != 0)
            _exit(2);
        uint64_t x = 3;
        pp_task *t = nullptr;
        if (pp_submit(srv, job_square, &x, sizeof x, nullptr, &t) != 0 || pp_task_wait(t, 20000) != 0)
            _exit(3);
        scratch()->pid[0].store(1);
        double deadline = now_ms() + 20000;
        while (!scratch()->release[0].load() && now_ms() < deadline) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, nullptr);
        }
        raise(SIGKILL);
        _exit(4);
    }
    bool ready = wait_until([] { return scratch()->pid[0].load() != 0; }, 20000);
    std::vector<ProcInfo> procs = descendants(getpid());
    scratch()->release[0].store(1);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(ready) << "the child host never got its server working (exit "
                       << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ")";
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* The child itself, its zygote and at least one worker. */
    EXPECT_GE(procs.size(), 3u);
    for (const ProcInfo &p : procs) {
        if (p.pid == child)
            continue;
        EXPECT_TRUE(wait_until([&] { return !process_alive(p); }, 10000))
            << "pid " << p.pid << " (depth " << p.depth << ") outlived its host";
    }
}

/* The zygote killed from outside: its workers die with it (PDEATHSIG);
 * the job that was running fails with -ECHILD, a new zygote and new
 * workers take over, and every other job completes. */
TEST_F(FaultsMore, ZygoteKilledPoolRecovers)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    std::vector<pid_t> zygotes;
    for (const ProcInfo &p : descendants(getpid()))
        if (p.depth == 1 && p.state != 'Z')
            zygotes.push_back(p.pid);
    ASSERT_EQ(zygotes.size(), 1u) << "one zygote per server";

    pp_task *victim = nullptr;
    BlockArg b{2, 20000};
    ASSERT_EQ(pp_submit(srv.get(), job_block, &b, sizeof b, nullptr, &victim), 0);
    TaskPtr vt(victim);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[2].load() != 0; }, 10000));
    std::vector<pp_task *> queued = submit_squares(srv.get(), 0, 200);
    ASSERT_EQ(kill(zygotes[0], SIGKILL), 0);

    ASSERT_EQ(pp_task_wait(victim, 20000), 0) << "the running job was never settled";
    EXPECT_EQ(task_status(victim), -ECHILD);
    /* The other worker died too, so the one square it was running (if
     * any) fails with -ECHILD; every other one completes, and nothing
     * is left unsettled. */
    int lost = 0;
    for (uint64_t i = 0; i < queued.size(); i++) {
        ASSERT_EQ(pp_task_wait(queued[i], 20000), 0) << "x=" << i << " never settled";
        const void *d;
        size_t len;
        int st = pp_task_result(queued[i], &d, &len);
        if (st == -ECHILD) {
            lost++;
            EXPECT_NE(pp_task_error(queued[i]), nullptr);
        } else {
            EXPECT_EQ(st, static_cast<int>(i % 1000)) << "x=" << i;
            ASSERT_EQ(len, sizeof(uint64_t));
            EXPECT_EQ(*static_cast<const uint64_t *>(d), square_of(i)) << "x=" << i;
        }
        pp_task_release(queued[i]);
    }
    EXPECT_LE(lost, 1) << "more jobs failed than were running";
    EXPECT_EQ(wait_workers(2, 10000), 2) << "the pool was not rebuilt";
    std::vector<pp_task *> later = submit_squares(srv.get(), 3000, 200);
    check_squares(later, 3000);
}
