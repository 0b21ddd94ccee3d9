// Description: argument and result sizes around every boundary (inline, page, 1 MiB, 64 MiB, PP_MAX_PAYLOAD+1) and zero-copy arguments from pp_shm_alloc.
#include <sys/mman.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "helpers.h"

using namespace pptest;

namespace {

const size_t kSizes[] = {0,    1,    PP_INLINE_MAX - 1, PP_INLINE_MAX, PP_INLINE_MAX + 1,
                         4095, 4096, 4097,              size_t(1) << 20, size_t(64) << 20};

class Payload : public ::testing::TestWithParam<size_t> {
protected:
    static void SetUpTestSuite()
    {
        scratch_reset();
        srv_ = make_server(2).release();
    }
    static void TearDownTestSuite()
    {
        pp_server_destroy(srv_);
        srv_ = nullptr;
    }
    static pp_server *srv_;
};
pp_server *Payload::srv_ = nullptr;

/* Job: asks for a result above PP_MAX_PAYLOAD, then maybe a smaller one. */
int job_too_big_result(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    int then_small = len > 0 ? *static_cast<const unsigned char *>(arg) : 0;
    void *p = pp_job_result(job, PP_MAX_PAYLOAD + 1);
    if (p != nullptr)
        return pp_job_fail(job, EPROTO, "pp_job_result(PP_MAX_PAYLOAD+1) was not NULL");
    if (then_small) {
        void *q = pp_job_result(job, 3);
        if (q == nullptr)
            return pp_job_fail(job, ENOMEM, "pp_job_result(3) failed");
        memcpy(q, "abc", 3);
    }
    return 0;
}

/* Job: writes a 1000-byte result, then replaces it with a 5-byte one. */
int job_replace_result(pp_job *job)
{
    void *p = pp_job_result(job, 1000);
    if (p == nullptr)
        return pp_job_fail(job, ENOMEM, "no result space");
    memset(p, 'x', 1000);
    void *q = pp_job_result(job, 5);
    if (q == nullptr)
        return pp_job_fail(job, ENOMEM, "no result space");
    memcpy(q, "hello", 5);
    return 0;
}

/* Job: result = the address pp_job_arg gave (8 bytes), also in the scratch. */
int job_argaddr(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    uint64_t a = reinterpret_cast<uintptr_t>(arg);
    scratch()->arg_addr.store(a);
    void *out = pp_job_result(job, sizeof a);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "no result space");
    memcpy(out, &a, sizeof a);
    return static_cast<int>(len % 1000);
}

uint64_t result_u64(pp_task *t)
{
    const void *d = nullptr;
    size_t len = 0;
    uint64_t v = 0;
    if (pp_task_result(t, &d, &len) >= 0 && len == sizeof v)
        memcpy(&v, d, sizeof v);
    return v;
}

std::string size_name(const ::testing::TestParamInfo<size_t> &info)
{
    return "bytes_" + std::to_string(info.param);
}

} // namespace

/* Argument of each size: echoed back and hashed in the worker. */
TEST_P(Payload, ArgumentEchoAndHash)
{
    ASSERT_NE(srv_, nullptr);
    const size_t n = GetParam();
    std::vector<unsigned char> buf(n + 1);
    fill_pattern(buf.data(), n, n * 31 + 1);
    const uint64_t want_hash = hash64_bytes(buf.data(), n);

    pp_task *echo = nullptr, *hash = nullptr;
    ASSERT_EQ(pp_submit(srv_, job_echo, buf.data(), n, nullptr, &echo), 0);
    ASSERT_EQ(pp_submit(srv_, job_hash, buf.data(), n, nullptr, &hash), 0);
    TaskPtr e(echo), h(hash);
    /* pp_submit copied the bytes: the buffer may be reused at once. */
    memset(buf.data(), 0xee, n);

    ASSERT_EQ(pp_task_wait(hash, 60000), 0);
    EXPECT_EQ(task_status(hash), 0) << (pp_task_error(hash) ? pp_task_error(hash) : "");
    EXPECT_EQ(result_u64(hash), want_hash) << "the worker saw other bytes than submitted";

    ASSERT_EQ(pp_task_wait(echo, 60000), 0);
    const void *d = nullptr;
    size_t len = 12345;
    ASSERT_EQ(pp_task_result(echo, &d, &len), 0) << (pp_task_error(echo) ? pp_task_error(echo) : "");
    ASSERT_EQ(len, n);
    if (n > 0) {
        ASSERT_NE(d, nullptr);
    }
    EXPECT_TRUE(check_pattern(d, n, n * 31 + 1)) << "echoed bytes differ";
    EXPECT_EQ(hash64_bytes(d, n), want_hash);
}

/* Result of each size, generated in the worker. */
TEST_P(Payload, ResultGenerated)
{
    ASSERT_NE(srv_, nullptr);
    const size_t n = GetParam();
    GenArg g{n, n * 17 + 5};
    pp_task *t = nullptr;
    ASSERT_EQ(pp_submit(srv_, job_gen, &g, sizeof g, nullptr, &t), 0);
    TaskPtr task(t);
    ASSERT_EQ(pp_task_wait(t, 60000), 0);
    const void *d = nullptr;
    size_t len = 12345;
    ASSERT_EQ(pp_task_result(t, &d, &len), 0) << (pp_task_error(t) ? pp_task_error(t) : "");
    ASSERT_EQ(len, n);
    if (n > 0) {
        ASSERT_NE(d, nullptr);
    }
    EXPECT_TRUE(check_pattern(d, n, g.seed)) << "generated result differs";
}

/* The argument from pp_shm_alloc is read in place, and results are right. */
TEST_P(Payload, ShmAllocArgumentIsZeroCopy)
{
    ASSERT_NE(srv_, nullptr);
    const size_t n = GetParam();
    void *block = pp_shm_alloc(srv_, n);
    if (n == 0 && block == nullptr)
        GTEST_SKIP() << "pp_shm_alloc(0) gives NULL (allowed?)";
    ASSERT_NE(block, nullptr) << "pp_shm_alloc(" << n << ")";
    fill_pattern(block, n, n + 99);
    pp_task *a = nullptr, *h = nullptr;
    ASSERT_EQ(pp_submit(srv_, job_argaddr, block, n, nullptr, &a), 0);
    ASSERT_EQ(pp_submit(srv_, job_hash, block, n, nullptr, &h), 0);
    TaskPtr ta(a), th(h);
    ASSERT_EQ(pp_task_wait(a, 60000), 0);
    ASSERT_EQ(pp_task_wait(h, 60000), 0);
    EXPECT_EQ(task_status(a), static_cast<int>(n % 1000));
    if (n > 0) {
        EXPECT_EQ(result_u64(a), reinterpret_cast<uintptr_t>(block))
            << "the worker did not read the pp_shm_alloc block in place";
    }
    EXPECT_EQ(result_u64(h), hash64_bytes(block, n));
    ta.reset();
    th.reset();
    pp_shm_free(srv_, block);
}

INSTANTIATE_TEST_SUITE_P(Sizes, Payload, ::testing::ValuesIn(kSizes), size_name);

class PayloadLimits : public ::testing::Test {
protected:
    void SetUp() override { scratch_reset(); }
};

/* An argument above PP_MAX_PAYLOAD is refused; the server keeps working. */
TEST_F(PayloadLimits, ArgumentTooBig)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    /* Reserved, never touched: an implementation that reads before it
     * checks the length gets zeros rather than a crash. */
    const size_t big = PP_MAX_PAYLOAD + 1;
    void *p = mmap(nullptr, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    pp_task *const sentinel = reinterpret_cast<pp_task *>(0x1234);
    pp_task *t = sentinel;
    double t0 = now_ms();
    EXPECT_EQ(pp_submit(srv.get(), job_echo, p, big, nullptr, &t), -E2BIG);
    EXPECT_LT(now_ms() - t0, 1000.0) << "the size check came after touching the bytes";
    EXPECT_EQ(t, sentinel);
    EXPECT_EQ(pp_submit(srv.get(), job_echo, p, SIZE_MAX, nullptr, &t), -E2BIG);
    pp_template *tpl = nullptr;
    ASSERT_EQ(pp_template_new(srv.get(), job_echo, nullptr, &tpl), 0);
    EXPECT_EQ(pp_template_submit(tpl, p, big, &t), -E2BIG);
    pp_template_destroy(tpl);
    munmap(p, big);

    /* Still works. */
    const char msg[] = "still alive";
    ASSERT_EQ(pp_submit(srv.get(), job_echo, msg, sizeof msg, nullptr, &t), 0);
    TaskPtr task(t);
    ASSERT_EQ(pp_task_wait(t, 10000), 0);
    const void *d = nullptr;
    size_t len = 0;
    ASSERT_EQ(pp_task_result(t, &d, &len), 0);
    ASSERT_EQ(len, sizeof msg);
    EXPECT_EQ(memcmp(d, msg, sizeof msg), 0);
}

/* A result above PP_MAX_PAYLOAD: NULL, the job fails with -E2BIG unless it
 * sets a smaller result. */
TEST_F(PayloadLimits, ResultTooBig)
{
    ServerPtr srv = make_server(1);
    ASSERT_NE(srv, nullptr);
    unsigned char no = 0, yes = 1;
    pp_task *t1 = nullptr, *t2 = nullptr, *t3 = nullptr;
    ASSERT_EQ(pp_submit(srv.get(), job_too_big_result, &no, 1, nullptr, &t1), 0);
    ASSERT_EQ(pp_submit(srv.get(), job_too_big_result, &yes, 1, nullptr, &t2), 0);
    ASSERT_EQ(pp_submit(srv.get(), job_replace_result, nullptr, 0, nullptr, &t3), 0);
    TaskPtr a(t1), b(t2), c(t3);
    ASSERT_EQ(pp_task_wait(t1, 10000), 0);
    ASSERT_EQ(pp_task_wait(t2, 10000), 0);
    ASSERT_EQ(pp_task_wait(t3, 10000), 0);
    EXPECT_EQ(task_status(t1), -E2BIG) << (pp_task_error(t1) ? pp_task_error(t1) : "");
    const void *d = nullptr;
    size_t len = 0;
    EXPECT_EQ(pp_task_result(t2, &d, &len), 0) << (pp_task_error(t2) ? pp_task_error(t2) : "");
    ASSERT_EQ(len, 3u);
    EXPECT_EQ(memcmp(d, "abc", 3), 0);
    EXPECT_EQ(pp_task_result(t3, &d, &len), 0) << "calling pp_job_result again replaces the result";
    ASSERT_EQ(len, 5u);
    EXPECT_EQ(memcmp(d, "hello", 5), 0);
}

/* Many mid-sized payloads in flight at once, all verified. */
TEST_F(PayloadLimits, ManyMixedSizesInFlight)
{
    ServerPtr srv = make_server(2);
    ASSERT_NE(srv, nullptr);
    std::vector<std::pair<size_t, pp_task *>> tasks;
    std::vector<unsigned char> buf(70000);
    for (size_t i = 0; i < 600; i++) {
        size_t n = (i * 7919) % 70000;
        fill_pattern(buf.data(), n, i);
        pp_task *t = nullptr;
        ASSERT_EQ(pp_submit(srv.get(), job_echo, buf.data(), n, nullptr, &t), 0);
        tasks.emplace_back(n, t);
    }
    for (size_t i = 0; i < tasks.size(); i++) {
        pp_task *t = tasks[i].second;
        ASSERT_EQ(pp_task_wait(t, 30000), 0);
        const void *d = nullptr;
        size_t len = 0;
        EXPECT_EQ(pp_task_result(t, &d, &len), 0);
        EXPECT_EQ(len, tasks[i].first);
        EXPECT_TRUE(check_pattern(d, len, i)) << "task " << i;
        pp_task_release(t);
    }
}

/* Large result blocks go back to the worker slot that allocated them and
 * are reused; in restart mode each job has a new worker in that slot, and
 * blocks of several sizes cross worker generations.  Every result must
 * still be exactly its argument. */
TEST_F(PayloadLimits, ResultBlocksReusedAcrossWorkersAndRestarts)
{
    for (bool restart : {false, true}) {
        pp_config cfg;
        pp_config_init(&cfg);
        cfg.ncpus = 2;
        cfg.restart = restart;
        ServerPtr srv = make_server(cfg);
        ASSERT_NE(srv, nullptr);
        const size_t sizes[] = {4097, 65536, 300000, 1 << 20};
        for (int round = 0; round < (restart ? 12 : 200); round++) {
            size_t len = sizes[round % 4];
            std::vector<unsigned char> buf(len);
            fill_pattern(buf.data(), len, (uint64_t)round);
            pp_task *t = nullptr;
            ASSERT_EQ(pp_submit(srv.get(), job_echo, buf.data(), len, nullptr, &t), 0);
            ASSERT_EQ(pp_task_wait(t, 20000), 0);
            const void *d;
            size_t n;
            EXPECT_EQ(pp_task_result(t, &d, &n), 0);
            ASSERT_EQ(n, len) << "round " << round;
            EXPECT_EQ(memcmp(d, buf.data(), len), 0) << "round " << round << " restart " << restart;
            pp_task_release(t);
        }
    }
}
