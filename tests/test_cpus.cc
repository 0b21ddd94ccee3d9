// Description: effective processors: the cgroup quota reader on fixture trees (v1, v2, hybrid, containers, garbage) and pp_detect_ncpus in a real nested cgroup.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cpus.h"
#include "pp.h"

namespace fs = std::filesystem;

namespace {

/* ------------------------------------------------------------------ */
/* Fixture trees (tests/fixtures/cgroup/<name>)                        */
/* ------------------------------------------------------------------ */

std::string fixture(const std::string &name)
{
    return std::string(PP_FIXTURES) + "/" + name;
}

/* pp__cgroup_ncpus on fixture <name>: its cgroup, mountinfo and fs/ tree. */
int fixture_ncpus(const std::string &name)
{
    std::string d = fixture(name);
    return pp__cgroup_ncpus((d + "/cgroup").c_str(), (d + "/mountinfo").c_str(),
                            (d + "/fs").c_str());
}

TEST(CgroupFixture, V1NestedTakesTheSmallestOnThePath)
{
    // job_7: 4 CPUs, step_0 below it: 2.5 -> 3; the cpuacct hierarchy and
    // files above the mount point (both 1 CPU) must not count.
    EXPECT_EQ(fixture_ncpus("v1_nested"), 3);
}

TEST(CgroupFixture, V1CoMountedCpuCpuacct)
{
    EXPECT_EQ(fixture_ncpus("v1_comount"), 2) << "CPUQuota=150% on cpu,cpuacct";
}

TEST(CgroupFixture, V1ContainerMountRootIsNotSlash)
{
    // Mount root /docker/0123abcd: our path /docker/0123abcd/app is app/
    // below the mount point, and the mount root itself holds the quota.
    // Mounts of /docker/0123 and /kubepods/other (1 CPU) do not contain us.
    EXPECT_EQ(fixture_ncpus("v1_container"), 2);
}

TEST(CgroupFixture, V1EscapedSpacesInMountinfo)
{
    EXPECT_EQ(fixture_ncpus("v1_escaped"), 1) << "root and mount point with \\040";
}

TEST(CgroupFixture, V2NestedMaxAndQuotas)
{
    // max, 1.5 -> 2, max, 5 from the top down.
    EXPECT_EQ(fixture_ncpus("v2_nested"), 2);
}

TEST(CgroupFixture, HybridCpuOnV1)
{
    EXPECT_EQ(fixture_ncpus("hybrid"), 3);
}

TEST(CgroupFixture, HybridCpuOnUnified)
{
    // The memory hierarchy's cpu.cfs_* files (1 CPU) are not a cpu controller's.
    EXPECT_EQ(fixture_ncpus("hybrid_v2cpu"), 1);
}

TEST(CgroupFixture, UnlimitedEverywhere)
{
    EXPECT_EQ(fixture_ncpus("unlimited"), 0);
}

TEST(CgroupFixture, GarbageLinesAndValuesAreSkipped)
{
    // Bad /proc/self/cgroup and mountinfo lines before the good ones (the
    // last without '\n'); bad quota files at /a and /a/b; 3 at the root.
    EXPECT_EQ(fixture_ncpus("garbage"), 3);
}

TEST(CgroupFixture, MissingInputFiles)
{
    std::string d = fixture("v1_nested");
    std::string none = d + "/no-such-file";
    EXPECT_EQ(pp__cgroup_ncpus(none.c_str(), (d + "/mountinfo").c_str(), ""), -ENOENT);
    EXPECT_EQ(pp__cgroup_ncpus((d + "/cgroup").c_str(), none.c_str(), ""), -ENOENT);
    EXPECT_EQ(pp__cgroup_ncpus(nullptr, none.c_str(), ""), -EINVAL);
    EXPECT_EQ(pp__cgroup_ncpus((d + "/cgroup").c_str(), (d + "/mountinfo").c_str(),
                               (d + "/no-such-dir").c_str()), 0)
        << "no quota files at all: no limit";
}

/* ------------------------------------------------------------------ */
/* Generated trees: sizes a fixture file should not hold               */
/* ------------------------------------------------------------------ */

class CgroupScratch : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/pptest-cpus-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr) << strerror(errno);
        dir_ = tmpl;
    }
    void TearDown() override
    {
        std::error_code ec;
        if (!dir_.empty())
            fs::remove_all(dir_, ec);
    }

    void put(const std::string &rel, const std::string &text)
    {
        fs::path p = fs::path(dir_) / rel;
        fs::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary) << text;
    }

    /* A v1 cpu hierarchy mounted at /cpu, our cgroup /a/b. */
    void v1_tree(const std::string &cgroup_extra = "", const std::string &mount_extra = "")
    {
        put("cgroup", cgroup_extra + "4:cpu:/a/b\n");
        put("mountinfo", mount_extra + "32 31 0:29 / /cpu rw - cgroup cgroup rw,cpu\n");
    }

    int ncpus()
    {
        return pp__cgroup_ncpus((dir_ + "/cgroup").c_str(), (dir_ + "/mountinfo").c_str(),
                                (dir_ + "/fs").c_str());
    }

    std::string dir_;
};

TEST_F(CgroupScratch, OverlongLinesAreSkippedWhole)
{
    // Lines of many sizes around and beyond the reader's buffer, before
    // the real ones.  Read whole, each is rejected (a path over PATH_MAX,
    // not a cgroup mount); a truncated head of one would parse as our
    // cgroup or as the cpu mount at /wrong, and hide the quota of /a.
    std::string cg, mi;
    for (size_t len : { 4096, 8191, 8192, 8193, 8703, 8704, 8705, 9000, 20000, 100000 }) {
        cg += "4:cpu:/" + std::string(len, 'x') + "\n";
        mi += "98 1 0:9 / /x rw - ext4 /dev/x rw," + std::string(len, 'o') + "\n";
    }
    for (size_t len : { 9000, 20000, 100000 })
        mi += "99 1 0:9 / /wrong rw - cgroup cgroup rw,cpu," + std::string(len, 'o') + "\n";
    v1_tree(cg, mi);
    put("fs/cpu/a/cpu.cfs_quota_us", "100000\n");
    put("fs/cpu/a/cpu.cfs_period_us", "100000\n");
    EXPECT_EQ(ncpus(), 1);
}

TEST_F(CgroupScratch, CgroupPathLongerThanPathMax)
{
    put("cgroup", "4:cpu:/" + std::string(PATH_MAX + 10, 'a') + "\n");
    put("mountinfo", "32 31 0:29 / /cpu rw - cgroup cgroup rw,cpu\n");
    put("fs/cpu/cpu.cfs_quota_us", "100000\n");
    put("fs/cpu/cpu.cfs_period_us", "100000\n");
    EXPECT_EQ(ncpus(), 0);
}

TEST_F(CgroupScratch, PrefixLongerThanPathMax)
{
    v1_tree();
    std::string prefix(2 * PATH_MAX, 'p');
    EXPECT_EQ(pp__cgroup_ncpus((dir_ + "/cgroup").c_str(), (dir_ + "/mountinfo").c_str(),
                               prefix.c_str()), 0);
}

TEST_F(CgroupScratch, HugeAndUnreadableQuotaFiles)
{
    v1_tree();
    // /a/b: a quota file far larger than any quota; /a: quota is a directory.
    put("fs/cpu/a/b/cpu.cfs_quota_us", "1" + std::string(100000, '0') + "\n");
    put("fs/cpu/a/b/cpu.cfs_period_us", "100000\n");
    fs::create_directories(dir_ + "/fs/cpu/a/cpu.cfs_quota_us");
    put("fs/cpu/a/cpu.cfs_period_us", "100000\n");
    EXPECT_EQ(ncpus(), 0);
    put("fs/cpu/cpu.cfs_quota_us", "200000\n");
    put("fs/cpu/cpu.cfs_period_us", "100000\n");
    EXPECT_EQ(ncpus(), 2) << "the readable level still counts";
}

TEST_F(CgroupScratch, V1Values)
{
    v1_tree();
    struct { const char *quota, *period; int want; } cases[] = {
        { "-1\n", "100000\n", 0 },
        { "100000\n", "100000\n", 1 },
        { "100001\n", "100000\n", 2 },
        { "50000", "100000", 1 },
        { "100000\n", "0\n", 0 },
        { "100000\n", "-5\n", 0 },
        { "100000\n", "", 0 },
        { "", "100000\n", 0 },
        { "0\n", "100000\n", 0 },
        { " 100000\n", "100000\n", 0 },
        { "+100000\n", "100000\n", 0 },
        { "100000 7\n", "100000\n", 0 },
        { "9223372036854775807\n", "1\n", INT_MAX },
        { "9223372036854775808\n", "1\n", 0 },
    };
    for (const auto &c : cases) {
        put("fs/cpu/a/b/cpu.cfs_quota_us", c.quota);
        put("fs/cpu/a/b/cpu.cfs_period_us", c.period);
        EXPECT_EQ(ncpus(), c.want) << "quota '" << c.quota << "' period '" << c.period << "'";
    }
}

TEST_F(CgroupScratch, V2Values)
{
    put("cgroup", "0::/a\n");
    put("mountinfo", "26 25 0:23 / /cg rw - cgroup2 cgroup2 rw\n");
    struct { const char *max; int want; } cases[] = {
        { "max 100000\n", 0 },
        { "150000 100000\n", 2 },
        { "200000 100000", 2 },
        { "max\n", 0 },
        { "100000\n", 0 },
        { "100000  100000\n", 0 },
        { "100000 100000 1\n", 0 },
        { "100000 0\n", 0 },
        { "\n", 0 },
        { "", 0 },
        { "9223372036854775807 1\n", INT_MAX },
    };
    for (const auto &c : cases) {
        put("fs/cg/a/cpu.max", c.max);
        EXPECT_EQ(ncpus(), c.want) << "cpu.max '" << c.max << "'";
    }
    fs::remove(dir_ + "/fs/cg/a/cpu.max");
    fs::create_directories(dir_ + "/fs/cg/a/cpu.max");
    EXPECT_EQ(ncpus(), 0) << "cpu.max is a directory";
}

TEST_F(CgroupScratch, EmptyInputs)
{
    put("cgroup", "");
    put("mountinfo", "");
    EXPECT_EQ(ncpus(), 0);
    v1_tree();
    put("mountinfo", "");
    EXPECT_EQ(ncpus(), 0) << "cpu hierarchy not mounted";
}

/* ------------------------------------------------------------------ */
/* The real system                                                     */
/* ------------------------------------------------------------------ */

int affinity_count()
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 0;
    return CPU_COUNT(&set);
}

TEST(DetectNcpus, WithinTheAffinityMask)
{
    int aff = affinity_count();
    ASSERT_GT(aff, 0);
    int n = pp_detect_ncpus();
    EXPECT_GE(n, 1);
    EXPECT_LE(n, aff);
    int q = pp__cgroup_ncpus("/proc/self/cgroup", "/proc/self/mountinfo", "");
    EXPECT_GE(q, 0) << "/proc/self/cgroup and mountinfo are readable here";
    EXPECT_EQ(n, q > 0 && q < aff ? q : aff);
}

std::vector<std::string> split(const std::string &s, char sep)
{
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(s);
    while (std::getline(in, item, sep))
        out.push_back(item);
    return out;
}

bool has_item(const std::string &list, char sep, const std::string &word)
{
    for (const auto &w : split(list, sep))
        if (w == word)
            return true;
    return false;
}

/* Where this test may make cgroups under a cpu controller, found
 * independently of the code under test. */
struct CpuHierarchy {
    std::string parent; /* directory to create pptest-<pid> in */
    bool v2 = false;
};

bool find_cpu_hierarchy(CpuHierarchy *ret, std::string *why)
{
    std::ifstream cg("/proc/self/cgroup"), mi("/proc/self/mountinfo");
    std::string line, v1_path, v2_path;
    while (std::getline(cg, line)) {
        auto a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos)
            continue;
        std::string id = line.substr(0, a), ctl = line.substr(a + 1, b - a - 1);
        if (id == "0" && ctl.empty())
            v2_path = line.substr(b + 1);
        else if (has_item(ctl, ',', "cpu"))
            v1_path = line.substr(b + 1);
    }
    while (std::getline(mi, line)) {
        std::vector<std::string> f = split(line, ' ');
        size_t dash = 6;
        while (dash < f.size() && f[dash] != "-")
            dash++;
        if (dash + 3 >= f.size() || f[4].find('\\') != std::string::npos)
            continue;
        const std::string &root = f[3], &mnt = f[4], &type = f[dash + 1];
        if (type == "cgroup" && has_item(f[dash + 3], ',', "cpu") && !v1_path.empty()) {
            if (root != "/" && v1_path.compare(0, root.size(), root) != 0)
                continue;
            std::string rel = root == "/" ? v1_path : v1_path.substr(root.size());
            ret->parent = rel == "/" ? mnt : mnt + rel;
            ret->v2 = false;
            return true;
        }
        if (type == "cgroup2" && !v2_path.empty() && root == "/") {
            std::ifstream c(mnt + "/cgroup.controllers");
            std::string ctl;
            std::getline(c, ctl);
            if (!has_item(ctl, ' ', "cpu"))
                continue;
            // Under the v2 root: it may hold processes and still enable
            // cpu for its children (our own cgroup may not).
            ret->parent = mnt;
            ret->v2 = true;
            return true;
        }
    }
    *why = "no cgroup v1 cpu controller or cgroup v2 with cpu in this mount namespace";
    return false;
}

/* 0, or -errno. */
int write_file(const std::string &path, const std::string &text)
{
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text.data(), text.size());
    int e = n < 0 ? -errno : n == static_cast<ssize_t>(text.size()) ? 0 : -EIO;
    close(fd);
    return e;
}

/* Removes the test's cgroups, inner first, even when the test failed.
 * A reaped child may linger in the cgroup for a moment (EBUSY). */
struct ScratchCgroups {
    std::vector<std::string> dirs; /* outer first */
    ~ScratchCgroups()
    {
        for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
            for (int i = 0; i < 200 && rmdir(it->c_str()) != 0 && errno == EBUSY; i++)
                usleep(10000);
    }
};

/* Kills and reaps the child unless the test reaped it. */
struct ChildGuard {
    pid_t pid = -1;
    ~ChildGuard()
    {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
};

TEST(DetectNcpus, RealNestedCgroupQuota)
{
    int aff = affinity_count();
    if (aff < 2)
        GTEST_SKIP() << "affinity mask allows " << aff << " CPU: a 1-CPU quota would not show";
    if (geteuid() != 0)
        GTEST_SKIP() << "needs root to create cgroups";
    int before = pp_detect_ncpus();
    if (before < 2)
        GTEST_SKIP() << "this process is already limited to " << before << " CPU";
    CpuHierarchy h;
    std::string why;
    if (!find_cpu_hierarchy(&h, &why))
        GTEST_SKIP() << why;
    if (h.v2) {
        std::ifstream sc(h.parent + "/cgroup.subtree_control");
        std::string ctl;
        std::getline(sc, ctl);
        if (!has_item(ctl, ' ', "cpu") && write_file(h.parent + "/cgroup.subtree_control", "+cpu") < 0)
            GTEST_SKIP() << "cannot enable cpu in " << h.parent << "/cgroup.subtree_control";
    }

    // Declared before the child guard: the child is reaped first, then
    // the cgroups go.
    ScratchCgroups cgs;
    std::string outer = h.parent + "/pptest-" + std::to_string(getpid());
    std::string inner = outer + "/inner";
    for (const std::string &d : { outer, inner }) {
        if (mkdir(d.c_str(), 0755) != 0) {
            int e = errno;
            GTEST_SKIP() << "mkdir " << d << ": " << strerror(e);
        }
        cgs.dirs.push_back(d);
    }
    int e = h.v2 ? write_file(outer + "/cpu.max", "100000 100000")
                 : write_file(outer + "/cpu.cfs_period_us", "100000");
    if (e == 0 && !h.v2)
        e = write_file(outer + "/cpu.cfs_quota_us", "100000");
    if (e < 0)
        GTEST_SKIP() << "cannot set a quota on " << outer << ": " << strerror(-e);

    int go[2], res[2];
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(res, O_CLOEXEC), 0);
    ChildGuard child;
    child.pid = fork();
    ASSERT_GE(child.pid, 0) << strerror(errno);
    if (child.pid == 0) {
        char c;
        close(go[1]);
        close(res[0]);
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        int n = pp_detect_ncpus();
        _exit(write(res[1], &n, sizeof(n)) == sizeof(n) ? 0 : 1);
    }
    close(go[0]);
    close(res[1]);
    e = write_file(inner + "/cgroup.procs", std::to_string(child.pid));
    if (e < 0) {
        close(go[1]);
        close(res[0]);
        GTEST_SKIP() << "cannot move a process into " << inner << ": " << strerror(-e);
    }
    int n = -1;
    EXPECT_EQ(write(go[1], "g", 1), 1);
    close(go[1]);
    EXPECT_EQ(read(res[0], &n, sizeof(n)), static_cast<ssize_t>(sizeof(n)));
    close(res[0]);
    int status = 0;
    EXPECT_EQ(waitpid(child.pid, &status, 0), child.pid);
    child.pid = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    EXPECT_EQ(n, 1) << "quota 100000/100000 on " << outer << ", child in " << inner
                    << " (unlimited); " << before << " CPUs outside";
}

} // namespace
