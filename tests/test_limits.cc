// Description: the per-server limits of pp.h: PP_MAX_GROUPS group names and PP_MAX_FUNCTIONS job functions, then -ENOSPC.
#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Limits : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* PP_MAX_FUNCTIONS + 8 distinct job functions: fn<N> returns N. */
template <int N>
int numbered_job(pp_job *)
{
    return N;
}

constexpr int kFns = PP_MAX_FUNCTIONS + 8;

template <int... I>
constexpr std::array<pp_fn *, sizeof...(I)> make_fns(std::integer_sequence<int, I...>)
{
    return {&numbered_job<I>...};
}

const std::array<pp_fn *, kFns> &all_fns()
{
    static const std::array<pp_fn *, kFns> fns = make_fns(std::make_integer_sequence<int, kFns>{});
    return fns;
}

} // namespace

TEST_F(Limits, GroupNames)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    uint64_t x = 1;
    int first_fail = -1, rc_fail = 0;
    for (int i = 0; i < PP_MAX_GROUPS + 4; i++) {
        std::string g = "group-" + std::to_string(i);
        pp_submit_opts o{};
        o.group = g.c_str();
        int rc = pp_submit(srv.get(), job_square, &x, sizeof x, &o, nullptr);
        if (rc != 0) {
            first_fail = i;
            rc_fail = rc;
            break;
        }
    }
    /* "default" may or may not count among the PP_MAX_GROUPS names. */
    EXPECT_GE(first_fail, PP_MAX_GROUPS - 1) << "refused before PP_MAX_GROUPS names";
    EXPECT_LE(first_fail, PP_MAX_GROUPS) << "no limit on group names";
    EXPECT_EQ(rc_fail, -ENOSPC);
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 30000), 0);
    /* Known groups still work, and pp_wait of the refused name is -ENOENT. */
    pp_submit_opts o{};
    o.group = "group-0";
    EXPECT_EQ(pp_submit(srv.get(), job_square, &x, sizeof x, &o, nullptr), 0);
    EXPECT_EQ(pp_wait(srv.get(), "group-0", 10000), 0);
    std::string refused = "group-" + std::to_string(first_fail);
    EXPECT_EQ(pp_wait(srv.get(), refused.c_str(), 0), -ENOENT);
    EXPECT_EQ(scratch()->runs.load(), long(first_fail) + 1);
}

TEST_F(Limits, DistinctFunctions)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    const auto &fns = all_fns();
    for (int i = 0; i < PP_MAX_FUNCTIONS; i++)
        ASSERT_EQ(pp_submit(srv.get(), fns[i], nullptr, 0, nullptr, nullptr), 0) << "function " << i;
    pp_task *t = nullptr;
    EXPECT_EQ(pp_submit(srv.get(), fns[PP_MAX_FUNCTIONS], nullptr, 0, nullptr, &t), -ENOSPC)
        << "function PP_MAX_FUNCTIONS + 1";
    ASSERT_EQ(pp_wait(srv.get(), nullptr, 60000), 0);
    /* Known functions still run, each the right one. */
    for (int i : {0, 1, 999, 2500, PP_MAX_FUNCTIONS - 1}) {
        ASSERT_EQ(pp_submit(srv.get(), fns[i], nullptr, 0, nullptr, &t), 0);
        ASSERT_EQ(pp_task_wait(t, 10000), 0);
        EXPECT_EQ(task_status(t), i) << "function " << i;
        pp_task_release(t);
    }
}
