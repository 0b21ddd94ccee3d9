// Description: a job function from a shared object dlopen()ed after pp_server_new; the host's malloc stays its own in a binary built with -rdynamic.
#include <dlfcn.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

/* The module's path: $PP_DYN_MODULE, else the one meson built. */
std::string module_path()
{
    const char *env = getenv("PP_DYN_MODULE");
    if (env != nullptr && *env != '\0')
        return env;
#ifdef PP_DYN_PATH
    return PP_DYN_PATH;
#else
    return "";
#endif
}

class DynLoad : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

} // namespace

TEST_F(DynLoad, FunctionFromModuleLoadedAfterStart)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    ASSERT_EQ(wait_workers(2, 10000), 2);
    /* Warm the workers with a function of the main program first. */
    uint64_t x = 2;
    pp_task *t0 = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t0), 0);
    ASSERT_EQ(pp_task_wait(t0, 10000), 0);
    pp_task_release(t0);

    const std::string path = module_path();
    ASSERT_FALSE(path.empty()) << "set PP_DYN_MODULE to the path of libppdyn.so";
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(h, nullptr) << dlerror();
    auto *rev = reinterpret_cast<pp_fn *>(dlsym(h, "ppdyn_reverse"));
    auto *cst = reinterpret_cast<pp_fn *>(dlsym(h, "ppdyn_const"));
    ASSERT_NE(rev, nullptr);
    ASSERT_NE(cst, nullptr);

    pp_task *tc = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), cst, nullptr, 0, nullptr, &tc), 0);
    ASSERT_EQ(pp_task_wait(tc, 20000), 0);
    EXPECT_EQ(task_status(tc), 4242) << (pp_task_error(tc) ? pp_task_error(tc) : "");
    pp_task_release(tc);

    /* Many jobs of the module's function: every worker resolves it. */
    std::vector<std::pair<std::string, pp_task *>> tasks;
    for (int i = 0; i < 500; i++) {
        std::string s = "job number " + std::to_string(i) + std::string(i % 300, 'z');
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), rev, s.data(), s.size(), nullptr, &t), 0) << i;
        tasks.emplace_back(s, t);
    }
    for (auto &[s, t] : tasks) {
        ASSERT_EQ(pp_task_wait(t, 20000), 0);
        const void *d = nullptr;
        size_t len = 0;
        EXPECT_EQ(pp_task_result(t, &d, &len), static_cast<int>(s.size()))
            << (pp_task_error(t) ? pp_task_error(t) : "");
        std::string want(s.rbegin(), s.rend());
        EXPECT_EQ(std::string(static_cast<const char *>(d), len), want);
        pp_task_release(t);
    }
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 10000), 0);

    /* pp_map with the module's function. */
    std::vector<char> in(3000), out(3000);
    for (size_t i = 0; i < in.size(); i++)
        in[i] = static_cast<char>('a' + i % 26);
    ASSERT_EQ(pp_map(srv.get(), rev, in.data(), 3, 1000, out.data(), 3), 0);
    for (size_t i = 0; i < 1000; i++)
        ASSERT_EQ(out[3 * i], in[3 * i + 2]) << "item " << i;
    /* All done: the module may go now. */
    EXPECT_EQ(dlclose(h), 0);
    /* And the server still works with its own functions. */
    pp_task *t1 = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, nullptr, &t1), 0);
    ASSERT_EQ(pp_task_wait(t1, 10000), 0);
    EXPECT_EQ(task_status(t1), 2);
    pp_task_release(t1);
}

/* With -rdynamic every global symbol of the binary is exported: libpp's
 * jemalloc must still not leak out and replace malloc. */
TEST_F(DynLoad, HostMallocIsItsOwnWithExportDynamic)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    for (const char *sym : {"mallocx", "rallocx", "sdallocx", "nallocx", "mallctl", "je_mallocx"})
        EXPECT_EQ(dlsym(RTLD_DEFAULT, sym), nullptr) << sym << " is visible to the host";
    Dl_info info{};
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    ASSERT_NE(m, nullptr);
    ASSERT_NE(dladdr(m, &info), 0);
    std::string from = info.dli_fname ? info.dli_fname : "";
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    EXPECT_TRUE(from.find("libasan") != std::string::npos || from.find("libtsan") != std::string::npos)
        << "malloc comes from " << from;
#else
    EXPECT_NE(from.find("libc.so"), std::string::npos) << "malloc comes from " << from;
#endif
}
