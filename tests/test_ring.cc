// Description: the lock-free rings of shm/: semantics, a multi-process
// stress (millions of operations, checksummed) and crash repair of
// consumers SIGKILLed mid-dequeue.
#include <gtest/gtest.h>

#include "ring_harness.h"

TEST(Ring, Semantics)
{
    EXPECT_EQ(ring_check_semantics(), 0) << "number of the failed check";
}

TEST(Spsc, Semantics)
{
    EXPECT_EQ(spsc_check_semantics(), 0) << "number of the failed check";
}

TEST(Bring, SemanticsAndADrainThatStops)
{
    EXPECT_EQ(bring_check_semantics(), 0) << "number of the failed check";
}

static void expect_exact(const ring_report &r, uint64_t total)
{
    ASSERT_EQ(r.error, 0);
    EXPECT_EQ(r.consumed, total);
    EXPECT_EQ(r.duplicates, 0u);
    EXPECT_EQ(r.missing, 0u);
    EXPECT_EQ(r.sum, r.expect_sum);
}

TEST(RingStress, MultiProcessMillionsNoLossNoDuplicate)
{
    // 4 producers x 500k values through a 1024-slot ring, 3 consumers:
    // 2M enqueues and 2M dequeues across processes.
    ring_report r;
    ring_stress(4, 3, 500000, 1024, 0, &r);
    expect_exact(r, 2000000);
}

TEST(RingStress, TinyRingHeavyContention)
{
    ring_report r;
    ring_stress(3, 3, 100000, 2, 0, &r);
    expect_exact(r, 300000);
}

TEST(RingStress, ConsumersKilledMidDequeueAreRepaired)
{
    ring_report r;
    ring_stress(2, 4, 1000000, 64, 200, &r);
    expect_exact(r, 2000000);
    EXPECT_GT(r.kills, 0u);
}

TEST(RingStress, ThreadsNoLossNoDuplicate)
{
    // In-process threads: the run ThreadSanitizer checks in CI.
    ring_report r;
    ring_stress_threads(3, 3, 200000, 256, &r);
    expect_exact(r, 600000);
}
