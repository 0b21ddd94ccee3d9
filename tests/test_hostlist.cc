// Description: net/hostlist.c: Slurm hostlist expansion (plain names,
// separators and empty items, ranges and lists in brackets, zero padding as
// Slurm writes it, Cartesian products in Slurm's order, suffixes, 64+
// names, every kind of malformed list, the max_hosts and name-length
// boundaries, huge ranges refused without looping, fn stopping the walk,
// and fn never called for a list that is refused).
#include <gtest/gtest.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "hostlist.h"

namespace {

using Names = std::vector<std::string>;

int collect(void *ctx, const char *host)
{
    static_cast<Names *>(ctx)->push_back(host);
    return 0;
}

// Expand list (with a generous max_hosts unless told), checking that the
// count returned matches the callbacks and that the counting-only call
// (fn = NULL) agrees.  Returns the names, or {"<errno>"} on failure.
Names expand(const char *list, unsigned max_hosts = 100000)
{
    Names out;
    int r = pp_hostlist_expand(list, collect, &out, max_hosts);
    int counted = pp_hostlist_expand(list, nullptr, nullptr, max_hosts);
    EXPECT_EQ(r, counted) << list;
    if (r < 0) {
        EXPECT_TRUE(out.empty()) << list << ": fn was called for a refused list";
        return { "<" + std::to_string(r) + ">" };
    }
    EXPECT_EQ((size_t)r, out.size()) << list;
    return out;
}

int err(const char *list, unsigned max_hosts = 100000)
{
    Names out;
    int r = pp_hostlist_expand(list, collect, &out, max_hosts);
    EXPECT_TRUE(out.empty()) << list << ": fn was called for a refused list";
    return r;
}

std::string join(const Names &n)
{
    std::string s;
    for (const auto &x : n)
        s += (s.empty() ? "" : " ") + x;
    return s;
}

}  // namespace

TEST(Hostlist, PlainNames)
{
    EXPECT_EQ(expand("tux1"), Names({ "tux1" }));
    EXPECT_EQ(expand("a,b,c"), Names({ "a", "b", "c" }));
    EXPECT_EQ(expand("login.example.org,node-7_x"), Names({ "login.example.org", "node-7_x" }));
    // Digits outside brackets are text, kept as written.
    EXPECT_EQ(expand("n007,n99999999999999999999"), Names({ "n007", "n99999999999999999999" }));
    EXPECT_EQ(expand("a-b,-,x-1-2"), Names({ "a-b", "-", "x-1-2" }));
}

TEST(Hostlist, SeparatorsAndEmptyItems)
{
    EXPECT_EQ(expand(""), Names());
    EXPECT_EQ(expand(",,, \t\n"), Names());
    EXPECT_EQ(expand("a,,b"), Names({ "a", "b" }));
    EXPECT_EQ(expand(",a,"), Names({ "a" }));
    EXPECT_EQ(expand("a b\tc\nd\r\ne"), Names({ "a", "b", "c", "d", "e" }));
    EXPECT_EQ(expand("  n[1-2] , m  "), Names({ "n1", "n2", "m" }));
    EXPECT_EQ(pp_hostlist_expand("", collect, nullptr, 0), 0);  // fn never called
}

TEST(Hostlist, Ranges)
{
    EXPECT_EQ(join(expand("n[1-3]")), "n1 n2 n3");
    EXPECT_EQ(join(expand("n[8-10]")), "n8 n9 n10");
    EXPECT_EQ(join(expand("n[3,1-2]")), "n3 n1 n2");       // as written, not sorted
    EXPECT_EQ(join(expand("n[5]")), "n5");
    EXPECT_EQ(join(expand("n[5-5]")), "n5");
    EXPECT_EQ(join(expand("n[0]")), "n0");
    EXPECT_EQ(join(expand("[1-3]")), "1 2 3");             // no prefix
    EXPECT_EQ(join(expand("n1[0-2]")), "n10 n11 n12");     // prefix ends in a digit
    EXPECT_EQ(join(expand("tux[0-2,5],login")), "tux0 tux1 tux2 tux5 login");
    // Duplicates stay, as scontrol show hostnames prints them.
    EXPECT_EQ(join(expand("n[1-2],n[2-3],n1")), "n1 n2 n2 n3 n1");
    EXPECT_EQ(join(expand("n[4294967294-4294967295]")), "n4294967294 n4294967295");
}

TEST(Hostlist, ZeroPaddingFollowsTheLowerBound)
{
    EXPECT_EQ(join(expand("n[01-10]")), "n01 n02 n03 n04 n05 n06 n07 n08 n09 n10");
    EXPECT_EQ(join(expand("n[001-10]")), "n001 n002 n003 n004 n005 n006 n007 n008 n009 n010");
    EXPECT_EQ(join(expand("n[1-010]")), "n1 n2 n3 n4 n5 n6 n7 n8 n9 n10");  // hi's zeros ignored
    EXPECT_EQ(join(expand("n[08-10]")), "n08 n09 n10");
    EXPECT_EQ(join(expand("n[098-100]")), "n098 n099 n100");
    EXPECT_EQ(join(expand("n[99-101]")), "n99 n100 n101");
    EXPECT_EQ(join(expand("n[1,02,003]")), "n1 n02 n003");    // each element its own width
    EXPECT_EQ(join(expand("n[00]")), "n00");
    EXPECT_EQ(join(expand("n[0000000001]")), "n0000000001");
    EXPECT_EQ(join(expand("n[9-11,007-008]")), "n9 n10 n11 n007 n008");
}

TEST(Hostlist, ProductsInSlurmOrder)
{
    EXPECT_EQ(join(expand("r[1-2]n[1-2]")), "r1n1 r1n2 r2n1 r2n2");
    EXPECT_EQ(join(expand("a[1-2][3-4]")), "a13 a14 a23 a24");
    EXPECT_EQ(join(expand("rack[0-1]_blade[0,2]")), "rack0_blade0 rack0_blade2 rack1_blade0 rack1_blade2");
    EXPECT_EQ(join(expand("c[1-2]r[01-02]n[3,1]")),
              "c1r01n3 c1r01n1 c1r02n3 c1r02n1 c2r01n3 c2r01n1 c2r02n3 c2r02n1");
    EXPECT_EQ(join(expand("x[1]y[2]z[3]")), "x1y2z3");
    EXPECT_EQ(expand("a[0-9][0-9][0-9]").size(), 1000u);
    Names n = expand("a[0-9][0-9][0-9]");
    EXPECT_EQ(n.front(), "a000");
    EXPECT_EQ(n[123], "a123");
    EXPECT_EQ(n.back(), "a999");
}

TEST(Hostlist, Suffixes)
{
    EXPECT_EQ(join(expand("n[1-2]-ib")), "n1-ib n2-ib");
    EXPECT_EQ(join(expand("gpu[01-02].cluster,cpu[1].cluster")),
              "gpu01.cluster gpu02.cluster cpu1.cluster");
    EXPECT_EQ(join(expand("a[1-2]b[3]c")), "a1b3c a2b3c");
}

TEST(Hostlist, SixtyFourAndMoreNames)
{
    Names n = expand("node[0001-0100],login[1-2],gpu[00-63]");
    ASSERT_EQ(n.size(), 166u);
    char want[32];
    for (unsigned i = 0; i < 100; i++) {
        snprintf(want, sizeof(want), "node%04u", i + 1);
        EXPECT_EQ(n[i], want);
    }
    EXPECT_EQ(n[100], "login1");
    EXPECT_EQ(n[101], "login2");
    for (unsigned i = 0; i < 64; i++) {
        snprintf(want, sizeof(want), "gpu%02u", i);
        EXPECT_EQ(n[102 + i], want);
    }
    EXPECT_EQ(expand("n[0-65535]", 65536).size(), 65536u);
}

TEST(Hostlist, Malformed)
{
    const char *bad[] = {
        "n[]",          // empty brackets
        "n[",           // unbalanced
        "n[1-2",
        "n]",
        "n1-2]",
        "a,b]",
        "n[1-2]]",
        "n[[1]]",       // nested
        "n[1[2]]",
        "n[1,[2]]",
        "n[2-1]",       // hi < lo
        "n[10-9]",
        "n[a]",         // not digits
        "n[1-b]",
        "n[1x2]",       // Slurm's boxes: not supported
        "n[+1]",
        "n[-1]",
        "n[1-]",
        "n[1--2]",
        "n[1-2-3]",
        "n[,1]",        // empty elements
        "n[1,]",
        "n[1,,2]",
        "n[ 1]",        // blanks inside brackets
        "n[1, 2]",
        "n[1\t]",
        "n[4294967296]",           // beyond 2^32 - 1
        "n[0-4294967296]",
        "n[99999999999999999999999]",
        "a\x01b",        // bytes no host name has
        "a\x7f",
        "caf\xc3\xa9",
        "ok,n[",         // a good item does not save a bad one
        "n[1-3],b[x]",
    };
    for (const char *b : bad)
        EXPECT_EQ(err(b), -EINVAL) << b;
    EXPECT_EQ(pp_hostlist_expand(nullptr, collect, nullptr, 10), -EINVAL);
    // Malformed wins over too big, wherever each is.
    EXPECT_EQ(err("n[0-4000000000],x[", 10), -EINVAL);
    EXPECT_EQ(err("n[", 0), -EINVAL);
}

TEST(Hostlist, MaxHostsBoundary)
{
    EXPECT_EQ(pp_hostlist_expand("n[1-64]", nullptr, nullptr, 64), 64);
    EXPECT_EQ(err("n[1-64]", 63), -E2BIG);
    EXPECT_EQ(pp_hostlist_expand("n[1-32],m[1-32]", nullptr, nullptr, 64), 64);
    EXPECT_EQ(err("n[1-32],m[1-32],x", 64), -E2BIG);
    EXPECT_EQ(pp_hostlist_expand("r[1-8]n[1-8]", nullptr, nullptr, 64), 64);
    EXPECT_EQ(err("r[1-8]n[1-9]", 64), -E2BIG);
    EXPECT_EQ(err("a", 0), -E2BIG);
    EXPECT_EQ(pp_hostlist_expand(",", nullptr, nullptr, 0), 0);
    EXPECT_EQ(pp_hostlist_expand("a", nullptr, nullptr, 1), 1);
    EXPECT_EQ(err("a,b", 1), -E2BIG);
}

TEST(Hostlist, HugeRangesAreRefusedWithoutLooping)
{
    // Each of these would run for hours if anything were expanded first.
    EXPECT_EQ(err("n[0-4294967295]", 1000), -E2BIG);
    EXPECT_EQ(err("a[0-4294967295][0-4294967295][0-4294967295]", UINT_MAX), -E2BIG);
    EXPECT_EQ(err("a[0-65535]b[0-65535]", INT_MAX), -E2BIG);  // 2^32 > INT_MAX
    EXPECT_EQ(err("n[0-4294967295],n[0-4294967295]", UINT_MAX), -E2BIG);
    // The count is an int: max_hosts above INT_MAX means INT_MAX.
    EXPECT_EQ(pp_hostlist_expand("n[0-2147483646]", nullptr, nullptr, UINT_MAX), INT_MAX);
    EXPECT_EQ(pp_hostlist_expand("n[1-2147483648]", nullptr, nullptr, UINT_MAX), -E2BIG);
}

TEST(Hostlist, LongNames)
{
    std::string name(PP_HOSTLIST_NAME_MAX, 'x');
    EXPECT_EQ(expand(name.c_str()), Names({ name }));
    EXPECT_EQ(err((name + "y").c_str()), -E2BIG);

    // The longest name of a range counts: 252 + 3 digits fits, 4 does not.
    std::string p(PP_HOSTLIST_NAME_MAX - 3, 'p');
    Names n = expand((p + "[998-999]").c_str());
    ASSERT_EQ(n.size(), 2u);
    EXPECT_EQ(n[1].size(), PP_HOSTLIST_NAME_MAX);
    EXPECT_EQ(err((p + "[998-1000]").c_str()), -E2BIG);
    // Padding counts too, and so does a suffix.
    EXPECT_EQ(err((p + "[0001]").c_str()), -E2BIG);
    EXPECT_EQ(err((p + "[1]abc").c_str()), -E2BIG);
    EXPECT_EQ(expand((p + "[1]ab").c_str()).size(), 1u);
    // Even when only one combination of several groups is too long.
    std::string q(PP_HOSTLIST_NAME_MAX - 4, 'q');
    EXPECT_EQ(err((q + "[1,10][1,100]").c_str()), -E2BIG);
    EXPECT_EQ(expand((q + "[1,10][1,10]").c_str()).size(), 4u);
    // Leading zeros beyond the limit are too long, not malformed.
    std::string zeros = "n[" + std::string(400, '0') + "1]";
    EXPECT_EQ(err(zeros.c_str()), -E2BIG);
    // A long list of short names is fine.
    std::string many;
    for (int i = 0; i < 500; i++)
        many += "host" + std::to_string(i) + ",";
    EXPECT_EQ(expand(many.c_str()).size(), 500u);
}

TEST(Hostlist, GroupsPerItem)
{
    std::string ok, over;
    for (unsigned i = 0; i < PP_HOSTLIST_GROUPS_MAX; i++)
        ok += "[1]";
    over = ok + "[1]";
    EXPECT_EQ(join(expand(ok.c_str())), std::string(PP_HOSTLIST_GROUPS_MAX, '1'));
    EXPECT_EQ(err(over.c_str()), -E2BIG);
    EXPECT_EQ(err((over + "[").c_str()), -EINVAL);
}

namespace {

struct Stopper {
    Names seen;
    size_t stop_at;
    int rc;
};

int stop_after(void *ctx, const char *host)
{
    auto *s = static_cast<Stopper *>(ctx);
    s->seen.push_back(host);
    return s->seen.size() == s->stop_at ? s->rc : 7;  // >= 0 goes on
}

int count_nested(void *ctx, const char *host)
{
    // fn may expand another list.
    int r = pp_hostlist_expand(host, nullptr, nullptr, 1);
    if (r != 1)
        return -EPROTO;
    ++*static_cast<int *>(ctx);
    return 0;
}

}  // namespace

TEST(Hostlist, FnStopsTheWalk)
{
    Stopper s{ {}, 3, -ECANCELED };
    EXPECT_EQ(pp_hostlist_expand("n[1-10]", stop_after, &s, 100), -ECANCELED);
    EXPECT_EQ(join(s.seen), "n1 n2 n3");

    Stopper t{ {}, 1, -1 };
    EXPECT_EQ(pp_hostlist_expand("a,b", stop_after, &t, 100), -1);
    EXPECT_EQ(join(t.seen), "a");

    // Positive returns go on; the count is still the number of names.
    Stopper u{ {}, 0, 0 };
    EXPECT_EQ(pp_hostlist_expand("r[1-2]n[1-2],x", stop_after, &u, 100), 5);
    EXPECT_EQ(join(u.seen), "r1n1 r1n2 r2n1 r2n2 x");

    // Stopping in a later item.
    Stopper v{ {}, 4, -EINTR };
    EXPECT_EQ(pp_hostlist_expand("a,b[1-2],c[1-2]", stop_after, &v, 100), -EINTR);
    EXPECT_EQ(join(v.seen), "a b1 b2 c1");

    int n = 0;
    EXPECT_EQ(pp_hostlist_expand("n[1-3],m", count_nested, &n, 100), 4);
    EXPECT_EQ(n, 4);
}
