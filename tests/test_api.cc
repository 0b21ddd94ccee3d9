// Description: the basic contract of pp.h: a job round trip, task states, bad arguments (-EINVAL and friends), statistics, print_stats, a private malloc.
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Api : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

std::atomic<int> g_cb_calls{0};
void count_cb(pp_task *, void *) { g_cb_calls.fetch_add(1); }

int job_fail_with_message(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    int x = 0;
    if (len == sizeof x)
        memcpy(&x, arg, sizeof x);
    /* A positive code must come back negative. */
    return pp_job_fail(job, EDOM, "item %d is out of the domain", x);
}

int job_long_message(pp_job *job)
{
    std::string s(1000, 'm');
    return pp_job_fail(job, -ERANGE, "%s", s.c_str());
}

int job_plain_negative(pp_job *)
{
    return -EPIPE;
}

int job_worker_index(pp_job *job)
{
    return pp_job_worker(job);
}

int job_arg_nonnull(pp_job *job)
{
    size_t len = 12345;
    const void *p = pp_job_arg(job, &len);
    if (p == nullptr)
        return pp_job_fail(job, EFAULT, "pp_job_arg gave NULL");
    return static_cast<int>(len);
}

} // namespace

TEST_F(Api, RoundTripOneJob)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr) << "pp_server_new(ncpus=2) failed";
    uint64_t x = 12;
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t), 0);
    ASSERT_NE(t, nullptr);
    TaskPtr task(t);
    ASSERT_EQ(pp_task_wait(t, 10000), 0);
    const void *data = nullptr;
    size_t len = 0;
    EXPECT_EQ(pp_task_result(t, &data, &len), 12) << "status is what the job returned";
    ASSERT_EQ(len, sizeof(uint64_t));
    ASSERT_NE(data, nullptr);
    uint64_t r;
    memcpy(&r, data, sizeof r);
    EXPECT_EQ(r, square_of(12));
    EXPECT_EQ(pp_task_error(t), nullptr) << "a successful job has no error message";
    EXPECT_EQ(pp_task_wait(t, 0), 0) << "a done task stays done";
}

TEST_F(Api, ZeroLengthArgumentIsNeverNull)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_arg_nonnull, nullptr, 0, nullptr, &t), 0)
        << "arg NULL with len 0 is valid";
    TaskPtr task(t);
    ASSERT_EQ(pp_task_wait(t, 10000), 0);
    EXPECT_EQ(task_status(t), 0) << "pp_job_arg gave non-NULL and len 0; error: "
                                 << (pp_task_error(t) ? pp_task_error(t) : "(none)");
}

TEST_F(Api, JobFailureCarriesCodeAndMessage)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    int x = 42;
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_fail_with_message, &x, sizeof x, nullptr, &t), 0);
    TaskPtr task(t);
    ASSERT_EQ(pp_task_wait(t, 10000), 0);
    EXPECT_EQ(task_status(t), -EDOM) << "pp_job_fail makes a positive code negative";
    const char *err = pp_task_error(t);
    ASSERT_NE(err, nullptr);
    EXPECT_STREQ(err, "item 42 is out of the domain");

    pp_task *t2 = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_long_message, nullptr, 0, nullptr, &t2), 0);
    TaskPtr task2(t2);
    ASSERT_EQ(pp_task_wait(t2, 10000), 0);
    EXPECT_EQ(task_status(t2), -ERANGE);
    const char *err2 = pp_task_error(t2);
    ASSERT_NE(err2, nullptr);
    EXPECT_EQ(strlen(err2), size_t(PP_ERRMSG_MAX - 1)) << "messages are cut to PP_ERRMSG_MAX with the NUL";
    EXPECT_EQ(std::string(err2), std::string(PP_ERRMSG_MAX - 1, 'm'));

    pp_task *t3 = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_plain_negative, nullptr, 0, nullptr, &t3), 0);
    TaskPtr task3(t3);
    ASSERT_EQ(pp_task_wait(t3, 10000), 0);
    EXPECT_EQ(task_status(t3), -EPIPE) << "a negative return is reported as the status";
}

TEST_F(Api, RunningTaskStates)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    TaskPtr t = submit_block(srv.get(), 0, 20000);
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000))
        << "the blocking job never started";
    EXPECT_EQ(pp_task_wait(t.get(), 0), -ETIMEDOUT) << "timeout 0 just tests";
    double t0 = now_ms();
    EXPECT_EQ(pp_task_wait(t.get(), 100), -ETIMEDOUT);
    EXPECT_GE(now_ms() - t0, 90.0) << "pp_task_wait(100) returned early";
    const void *data = reinterpret_cast<const void *>(0x1);
    size_t len = 777;
    EXPECT_EQ(pp_task_result(t.get(), &data, &len), -EINPROGRESS);
    EXPECT_EQ(data, reinterpret_cast<const void *>(0x1)) << "data must be left alone while running";
    EXPECT_EQ(len, 777u) << "len must be left alone while running";
    EXPECT_EQ(pp_task_error(t.get()), nullptr) << "no error text while not done";
    scratch()->release[0].store(1);
    ASSERT_EQ(pp_task_wait(t.get(), 10000), 0);
    EXPECT_EQ(task_status(t.get()), 100);
}

TEST_F(Api, ReleaseWhileRunningStillRunsJobAndCallback)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    g_cb_calls = 0;
    pp_submit_opts o{};
    o.callback = count_cb;
    TaskPtr t = submit_block(srv.get(), 0, 20000, &o);
    ASSERT_NE(t, nullptr);
    ASSERT_TRUE(wait_until([] { return scratch()->pid[0].load() != 0; }, 10000));
    t.reset(); /* pp_task_release while running */
    scratch()->release[0].store(1);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);
    EXPECT_EQ(g_cb_calls.load(), 1) << "the callback of a released task still runs, once";
}

TEST_F(Api, WorkerIndexIsInRange)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    std::vector<TaskPtr> tasks;
    for (int i = 0; i < 50; i++) {
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_worker_index, nullptr, 0, nullptr, &t), 0);
        tasks.emplace_back(t);
    }
    for (auto &t : tasks) {
        ASSERT_EQ(pp_task_wait(t.get(), 10000), 0);
        int w = task_status(t.get());
        EXPECT_GE(w, 0);
        EXPECT_LT(w, PP_MAX_WORKERS);
    }
}

TEST_F(Api, ConfigDefaults)
{
    pp_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    pp_config_init(&cfg);
    EXPECT_EQ(cfg.ncpus, PP_AUTODETECT);
    EXPECT_TRUE(cfg.pin) << "defaults: pinned";
    EXPECT_FALSE(cfg.busy_poll) << "defaults: adaptive waiting";
    EXPECT_FALSE(cfg.restart);
    EXPECT_EQ(cfg.max_queued, 0u);
    EXPECT_EQ(cfg.spin_us, 20u) << "documented default";
    EXPECT_EQ(cfg.shm_size, size_t(64) << 30) << "documented default: 64 GiB";
    int n = pp_detect_ncpus();
    EXPECT_GE(n, 1);
    EXPECT_LE(n, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));

    ServerPtr srv = make_server(PP_AUTODETECT);
    ASSERT_NE(srv, nullptr);
    EXPECT_EQ(pp_get_ncpus(srv.get()), n) << "autodetect = pp_detect_ncpus()";
    EXPECT_EQ(wait_workers(n, 10000), n);

    pp_server *s2 = nullptr;
    ASSERT_EQ(pp_server_new(nullptr, &s2), 0) << "cfg NULL = defaults";
    ServerPtr srv2(s2);
    EXPECT_EQ(pp_get_ncpus(s2), n);
}

TEST_F(Api, BadArgumentsServer)
{
    pp_config cfg;
    pp_config_init(&cfg);
    pp_server *const sentinel = reinterpret_cast<pp_server *>(0x1234);

    EXPECT_EQ(pp_server_new(&cfg, nullptr), -EINVAL);
    for (int bad : {-2, -100, INT_MIN, PP_MAX_WORKERS + 1, INT_MAX}) {
        cfg.ncpus = bad;
        pp_server *s = sentinel;
        EXPECT_EQ(pp_server_new(&cfg, &s), -EINVAL) << "ncpus=" << bad;
        EXPECT_EQ(s, sentinel) << "ret must not be written on failure (ncpus=" << bad << ")";
        if (s != sentinel)
            pp_server_destroy(s);
    }
    EXPECT_EQ(count_live_children(), 0) << "a refused config must not leave processes";

    pp_server_destroy(nullptr); /* no-op */
    EXPECT_EQ(pp_get_ncpus(nullptr), -EINVAL);
    EXPECT_EQ(pp_set_ncpus(nullptr, 1), -EINVAL);
    struct pp_stats st;
    EXPECT_EQ(pp_get_stats(nullptr, &st), -EINVAL);
    EXPECT_EQ(pp_print_stats(nullptr, stdout), -EINVAL);
    EXPECT_EQ(pp_shm_alloc(nullptr, 16), nullptr);

    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    EXPECT_EQ(pp_set_ncpus(srv.get(), -2), -EINVAL);
    EXPECT_EQ(pp_set_ncpus(srv.get(), PP_MAX_WORKERS + 1), -EINVAL);
    EXPECT_EQ(pp_get_ncpus(srv.get()), 1) << "a refused pp_set_ncpus changes nothing";
    EXPECT_EQ(pp_get_stats(srv.get(), nullptr), -EINVAL);
    EXPECT_EQ(pp_print_stats(srv.get(), nullptr), -EINVAL);
    EXPECT_EQ(pp_shm_alloc(srv.get(), PP_MAX_PAYLOAD + 1), nullptr);
    pp_shm_free(srv.get(), nullptr); /* no-op */
}

TEST_F(Api, BadArgumentsSubmit)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    g_cb_calls = 0;
    pp_submit_opts o{};
    o.callback = count_cb;
    pp_task *const sentinel = reinterpret_cast<pp_task *>(0x1234);
    pp_task *t = sentinel;
    uint64_t x = 1;

    EXPECT_EQ(pp_submit(nullptr, job_square, &x, sizeof x, &o, &t), -EINVAL);
    EXPECT_EQ(pp_submit(srv.get(), nullptr, &x, sizeof x, &o, &t), -EINVAL);
    EXPECT_EQ(pp_submit(srv.get(), job_square, nullptr, 8, &o, &t), -EINVAL)
        << "arg NULL with len > 0";
    std::string long_group(PP_GROUP_NAME_MAX + 1, 'g');
    o.group = long_group.c_str();
    EXPECT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, &t), -EINVAL)
        << "group name of PP_GROUP_NAME_MAX+1 characters";
    EXPECT_EQ(t, sentinel) << "ret must not be written on failure";

    /* A pointer into anonymous memory is in no loaded module. */
    void *anon = mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(anon, MAP_FAILED);
    o.group = nullptr;
    EXPECT_EQ(pp_submit(srv.get(), reinterpret_cast<pp_fn *>(anon), &x, sizeof x, &o, &t), -ENOENT)
        << "fn in no loaded module";
    munmap(anon, 4096);
    EXPECT_EQ(t, sentinel);

    /* The longest valid group name works. */
    std::string max_group(PP_GROUP_NAME_MAX, 'h');
    o.group = max_group.c_str();
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, &t), 0)
        << "group name of exactly PP_GROUP_NAME_MAX characters";
    TaskPtr ok(t);
    EXPECT_EQ(pp_wait(srv.get(), max_group.c_str(), 10000), 0);
    EXPECT_EQ(g_cb_calls.load(), 1) << "failed submissions never call the callback";

    EXPECT_EQ(pp_task_wait(nullptr, 0), -EINVAL);
    EXPECT_EQ(pp_task_result(nullptr, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(pp_task_error(nullptr), nullptr);
    pp_task_release(nullptr); /* no-op */
    EXPECT_EQ(pp_wait(nullptr, nullptr, 0), -EINVAL);
    EXPECT_EQ(pp_wait(srv.get(), long_group.c_str(), 0), -EINVAL) << "bad group name";
    EXPECT_EQ(pp_wait(srv.get(), "never-used", 0), -ENOENT);
    EXPECT_EQ(pp_wait(srv.get(), "never-used", 100), -ENOENT);
}

TEST_F(Api, BadArgumentsMapAndTemplate)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    uint64_t in[4] = {1, 2, 3, 4}, out[4] = {0, 0, 0, 0};
    EXPECT_EQ(pp_map(nullptr, job_square, in, 8, 4, out, 8), -EINVAL);
    EXPECT_EQ(pp_map(srv.get(), nullptr, in, 8, 4, out, 8), -EINVAL);
    EXPECT_EQ(pp_map(srv.get(), job_square, nullptr, 8, 4, out, 8), -EINVAL);
    EXPECT_EQ(pp_map(srv.get(), job_square, in, 8, 4, nullptr, 8), -EINVAL);
    for (uint64_t v : out)
        EXPECT_EQ(v, 0u) << "a refused pp_map writes nothing";

    pp_template *const sentinel = reinterpret_cast<pp_template *>(0x1234);
    pp_template *tpl = sentinel;
    EXPECT_EQ(pp_template_new(nullptr, job_square, nullptr, &tpl), -EINVAL);
    EXPECT_EQ(pp_template_new(srv.get(), nullptr, nullptr, &tpl), -EINVAL);
    EXPECT_EQ(pp_template_new(srv.get(), job_square, nullptr, nullptr), -EINVAL);
    std::string long_group(PP_GROUP_NAME_MAX + 1, 'g');
    pp_submit_opts o{};
    o.group = long_group.c_str();
    EXPECT_EQ(pp_template_new(srv.get(), job_square, &o, &tpl), -EINVAL);
    EXPECT_EQ(tpl, sentinel) << "ret must not be written on failure";
    pp_task *t = nullptr;
    uint64_t x = 3;
    EXPECT_EQ(pp_template_submit(nullptr, &x, sizeof x, &t), -EINVAL);
    pp_template_destroy(nullptr); /* no-op */

    ASSERT_EQ(pp_template_new(srv.get(), job_square, nullptr, &tpl), 0);
    EXPECT_EQ(pp_template_submit(tpl, nullptr, 8, &t), -EINVAL) << "arg NULL with len > 0";
    pp_template_destroy(tpl);
}

TEST_F(Api, StatsCountJobs)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    struct pp_stats st;
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_EQ(st.njobs, 0u);
    EXPECT_EQ(st.ncpus, 2);
    constexpr int kJobs = 321;
    for (int i = 0; i < kJobs; i++) {
        uint64_t x = i;
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    }
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 30000), 0);
    ASSERT_EQ(pp_get_stats(srv.get(), &st), 0);
    EXPECT_EQ(st.njobs, uint64_t(kJobs)) << "njobs = jobs run";
    EXPECT_EQ(scratch()->runs.load(), kJobs);
    EXPECT_EQ(st.active_tasks, 0u) << "all done after pp_wait(NULL)";
    EXPECT_EQ(st.ncpus, 2);
    EXPECT_GT(st.elapsed_s, 0.0);
    EXPECT_LT(st.elapsed_s, 300.0);
    EXPECT_EQ(st.worker_deaths, 0u);
    EXPECT_TRUE(wait_until([&] { return pp_get_stats(srv.get(), &st) == 0 && st.workers_started >= 2; }, 10000))
        << "workers_started " << st.workers_started;
    ASSERT_GE(st.nnodes, 1u);
    ASSERT_LE(st.nnodes, unsigned(PP_MAX_NODES));
    EXPECT_STREQ(st.nodes[0].name, "local");
    EXPECT_EQ(st.nodes[0].njobs, uint64_t(kJobs));
    EXPECT_EQ(st.nodes[0].ncpus, 2);
    EXPECT_GE(st.nodes[0].time_sum_s, 0.0);
}

TEST_F(Api, PrintStatsTable)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    constexpr int kJobs = 1234;
    for (int i = 0; i < kJobs; i++) {
        uint64_t x = i;
        ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, nullptr), 0);
    }
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 30000), 0);
    char *buf = nullptr;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(pp_print_stats(srv.get(), f), 0);
    fclose(f);
    std::string out(buf, size);
    free(buf);
    for (const char *col : {"job count", "% of all jobs", "job time sum", "time per job",
                            "job server", "active tasks", "cores"})
        EXPECT_NE(out.find(col), std::string::npos) << "missing \"" << col << "\" in:\n" << out;
    EXPECT_NE(out.find("local"), std::string::npos) << "the local node's row is missing:\n" << out;
    EXPECT_NE(out.find(std::to_string(kJobs)), std::string::npos)
        << "the job count " << kJobs << " is missing:\n" << out;
    EXPECT_TRUE(out.find("since") != std::string::npos || out.find("elapsed") != std::string::npos ||
                out.find("uptime") != std::string::npos)
        << "no line with the time since creation:\n" << out;
}

/*
 * libpp's jemalloc is private: linking it must not replace the host's
 * allocator, nor export jemalloc's API.
 */
TEST_F(Api, HostMallocIsItsOwn)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    for (const char *sym : {"mallocx", "rallocx", "sdallocx", "nallocx", "mallctl",
                            "je_malloc", "je_mallocx", "malloc_stats_print"})
        EXPECT_EQ(dlsym(RTLD_DEFAULT, sym), nullptr) << sym << " is visible to the host";

    void *def_malloc = dlsym(RTLD_DEFAULT, "malloc");
    void *def_free = dlsym(RTLD_DEFAULT, "free");
    ASSERT_NE(def_malloc, nullptr);
    Dl_info info{};
    ASSERT_NE(dladdr(def_malloc, &info), 0);
    std::string from = info.dli_fname ? info.dli_fname : "";
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* The sanitizer runtime owns malloc; it must still not be the test binary. */
    EXPECT_TRUE(from.find("libasan") != std::string::npos || from.find("libtsan") != std::string::npos)
        << "malloc comes from " << from;
#else
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(libc, nullptr);
    EXPECT_EQ(def_malloc, dlsym(libc, "malloc")) << "malloc comes from " << from << ", not libc";
    EXPECT_EQ(def_free, dlsym(libc, "free")) << "free is not libc's";
    /* What this binary's own calls bind to (a statically linked global
     * malloc would win here even if it were not exported). */
    void *(*my_malloc)(size_t) = &malloc;
    EXPECT_EQ(reinterpret_cast<void *>(my_malloc), dlsym(libc, "malloc"))
        << "the test binary's malloc calls do not reach libc";
    dlclose(libc);
    EXPECT_NE(from.find("libc.so"), std::string::npos) << "malloc comes from " << from;
#endif
    /* And the host's blocks do not come from pp's shared segment. */
    void *p = malloc(1 << 20);
    ASSERT_NE(p, nullptr);
    EXPECT_FALSE(in_memfd_mapping(p)) << "host malloc returned memory of the pp segment";
    free(p);
}

/* A pp_server_new that fails on its arguments closes nothing it did not
 * open (standard input stays open). */
TEST(ApiFds, FailedServerNewClosesNoForeignDescriptor)
{
    int d = dup(0);
    if (d >= 0) {
        close(d);
    } else { /* no stdin in this environment: make descriptor 0 */
        ASSERT_EQ(open("/dev/null", O_RDONLY), 0);
    }
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = -5;
    pp_server *srv = nullptr;
    EXPECT_EQ(pp_server_new(&cfg, &srv), -EINVAL);
    cfg.ncpus = 1;
    cfg.shm_size = 1; /* too small */
    EXPECT_EQ(pp_server_new(&cfg, &srv), -EINVAL);
    EXPECT_NE(fcntl(0, F_GETFD), -1) << "descriptor 0 was closed";
}
