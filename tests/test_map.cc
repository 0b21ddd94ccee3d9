// Description: pp_map: results in input order for 0, 1, 7 and 100000 items, zero fill, failing items, -EOVERFLOW and -E2BIG.
#include <sys/mman.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

class Map : public ::testing::TestWithParam<size_t> {
protected:
    void SetUp() override { scratch_reset(); }
};

/* Item: uint64_t x.  Fails x == 7 (and x % 5000 == 4999) with codes. */
int job_map_fail(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    uint64_t x = 0;
    memcpy(&x, arg, len < sizeof x ? len : sizeof x);
    scratch()->runs.fetch_add(1);
    if (x < kMaxSeen)
        scratch()->seen[x].fetch_add(1);
    if (x % 5000 == 4999)
        return -ERANGE;
    if (x == 7)
        return pp_job_fail(job, EDOM, "item %llu fails", (unsigned long long)x);
    uint64_t r = square_of(x);
    void *out = pp_job_result(job, sizeof r);
    if (out == nullptr)
        return -ENOMEM;
    memcpy(out, &r, sizeof r);
    return 0;
}

/* Item: uint64_t.  Result: 16 bytes, larger than the out_size of 8. */
int job_map_overflow(pp_job *job)
{
    void *out = pp_job_result(job, 16);
    if (out == nullptr)
        return -ENOMEM;
    memset(out, 1, 16);
    return 0;
}

/* Item: uint64_t.  Asks for 16 result bytes; ignores a NULL answer. */
int job_map_overflow_lenient(pp_job *job)
{
    void *out = pp_job_result(job, 16);
    if (out != nullptr)
        memset(out, 1, 16);
    return 0;
}

/* Item: 3 bytes.  Result: the 3 bytes reversed (checks item boundaries). */
int job_reverse3(pp_job *job)
{
    size_t len = 0;
    const auto *a = static_cast<const unsigned char *>(pp_job_arg(job, &len));
    if (len != 3)
        return pp_job_fail(job, EINVAL, "item of %zu bytes", len);
    auto *out = static_cast<unsigned char *>(pp_job_result(job, 3));
    if (out == nullptr)
        return -ENOMEM;
    out[0] = a[2];
    out[1] = a[1];
    out[2] = a[0];
    return 0;
}

std::string n_name(const ::testing::TestParamInfo<size_t> &info)
{
    return "n_" + std::to_string(info.param);
}

} // namespace

TEST_P(Map, ResultsInInputOrder)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    const size_t n = GetParam();
    std::vector<uint64_t> in(n + 1), out(n + 1, 0xdeadbeefdeadbeefull);
    for (size_t i = 0; i < n; i++)
        in[i] = mix64(i) % 1000000007u;
    ASSERT_EQ(pp_map(srv.get(), job_square, in.data(), sizeof(uint64_t), n, out.data(), sizeof(uint64_t)), 0);
    size_t wrong = 0, first_wrong = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != square_of(in[i])) {
            wrong++;
            if (first_wrong == SIZE_MAX)
                first_wrong = i;
        }
    }
    EXPECT_EQ(wrong, 0u) << "first wrong item: " << first_wrong;
    EXPECT_EQ(out[n], 0xdeadbeefdeadbeefull) << "pp_map wrote past n items";
    EXPECT_EQ(scratch()->runs.load(), long(n)) << "each item runs once";
}

INSTANTIATE_TEST_SUITE_P(Counts, Map, ::testing::Values(0, 1, 7, 100000), n_name);

class MapMore : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* out_size larger than what the job writes: the rest is zero-filled. */
TEST_F(MapMore, ZeroFillsPastResult)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    constexpr size_t n = 1000;
    constexpr size_t out_size = 24;
    std::vector<uint64_t> in(n);
    for (size_t i = 0; i < n; i++)
        in[i] = i;
    std::vector<unsigned char> out(n * out_size, 0xaa);
    ASSERT_EQ(pp_map(srv.get(), job_square, in.data(), sizeof(uint64_t), n, out.data(), out_size), 0);
    for (size_t i = 0; i < n; i++) {
        uint64_t r;
        memcpy(&r, &out[i * out_size], sizeof r);
        ASSERT_EQ(r, square_of(i)) << "item " << i;
        for (size_t k = 8; k < out_size; k++)
            ASSERT_EQ(out[i * out_size + k], 0) << "item " << i << " byte " << k << " not zero-filled";
    }
}

/* Odd item sizes: items are cut exactly at in_size. */
TEST_F(MapMore, OddItemSize)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    constexpr size_t n = 5001;
    std::vector<unsigned char> in(n * 3), out(n * 3, 0);
    fill_pattern(in.data(), in.size(), 3);
    ASSERT_EQ(pp_map(srv.get(), job_reverse3, in.data(), 3, n, out.data(), 3), 0);
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(out[3 * i], in[3 * i + 2]) << "item " << i;
        ASSERT_EQ(out[3 * i + 1], in[3 * i + 1]) << "item " << i;
        ASSERT_EQ(out[3 * i + 2], in[3 * i]) << "item " << i;
    }
}

/* Failing items: pp_map returns the lowest failing item's code; all ran. */
TEST_F(MapMore, FailingItemsStillRunAll)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    constexpr size_t n = 20000;
    std::vector<uint64_t> in(n), out(n, 0);
    for (size_t i = 0; i < n; i++)
        in[i] = i;
    EXPECT_EQ(pp_map(srv.get(), job_map_fail, in.data(), 8, n, out.data(), 8), -EDOM)
        << "the lowest failing item (7) fails with -EDOM; later ones with -ERANGE";
    EXPECT_EQ(scratch()->runs.load(), long(n)) << "every item must run despite the failures";
    long not_once = 0;
    for (size_t i = 0; i < n; i++)
        not_once += scratch()->seen[i].load() != 1;
    EXPECT_EQ(not_once, 0);
    for (size_t i = 0; i < n; i++) {
        if (i != 7 && i % 5000 != 4999) {
            ASSERT_EQ(out[i], square_of(i)) << "a successful item's result is still written: " << i;
        }
    }

    /* Only the late failure: its own code. */
    scratch_reset();
    std::vector<uint64_t> in2(in.begin() + 8, in.end());
    EXPECT_EQ(pp_map(srv.get(), job_map_fail, in2.data(), 8, in2.size(), out.data(), 8), -ERANGE);
    EXPECT_EQ(scratch()->runs.load(), long(in2.size()));
}

/*
 * pp.h: pp_job_result gives NULL only above PP_MAX_PAYLOAD or without
 * memory, and "a job that returns a result larger than out_size fails
 * with -EOVERFLOW".  job_map_overflow treats NULL as no memory, as the
 * pp_job_result documentation says; the lenient job ignores it.
 */
TEST_F(MapMore, ResultLargerThanOutSizeLenientJob)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    std::vector<uint64_t> in(100), out(100);
    EXPECT_EQ(pp_map(srv.get(), job_map_overflow_lenient, in.data(), 8, in.size(), out.data(), 8), -EOVERFLOW);
}

TEST_F(MapMore, ResultLargerThanOutSize)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    std::vector<uint64_t> in(100), out(100);
    EXPECT_EQ(pp_map(srv.get(), job_map_overflow, in.data(), 8, in.size(), out.data(), 8), -EOVERFLOW);
    /* The server still works. */
    in[0] = 6;
    EXPECT_EQ(pp_map(srv.get(), job_square, in.data(), 8, 1, out.data(), 8), 0);
    EXPECT_EQ(out[0], square_of(6));
}

TEST_F(MapMore, TotalAboveMaxPayload)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    /* Reserved and untouched: 1025 items of 1 MiB in and out. */
    const size_t item = size_t(1) << 20, n = 1025;
    void *in = mmap(nullptr, item * n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *out = mmap(nullptr, item * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(in, MAP_FAILED);
    ASSERT_NE(out, MAP_FAILED);
    double t0 = now_ms();
    EXPECT_EQ(pp_map(srv.get(), job_echo, in, item, n, out, item), -E2BIG);
    EXPECT_LT(now_ms() - t0, 2000.0) << "the total was checked late";
    munmap(in, item * n);
    munmap(out, item * n);
}
