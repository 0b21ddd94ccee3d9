// Description: net/disc.c: authenticated discovery (query/answer round
// trips, wrong secrets, every flipped bit, replays, unknown nonces, the time
// window, beacon order, no amplification, the replay ring's floor, the
// documented construction recomputed), the connection-attempt limiter on a
// fake clock, and one real query/answer over UDP on 127.0.0.1.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "disc.h"
#include "secure.h"

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint64_t T0 = 1700000000000ull;  // a wall-clock ms value to start the fake clock at
constexpr uint16_t TCP_PORT = 60123;

struct Key {
    pp_sec_psk psk{};
    pp_disc_key k{};
    explicit Key(const std::string &secret = "discovery test secret")
    {
        EXPECT_EQ(pp_sec_psk_init(&psk, secret.data(), secret.size()), 0);
        EXPECT_EQ(pp_disc_key_init(&k, &psk), 0);
    }
    ~Key()
    {
        pp_disc_key_wipe(&k);
        pp_sec_psk_wipe(&psk);
    }
};

// The states are large (tens of KiB): on the heap.
struct Client {
    std::unique_ptr<pp_disc_client> c{new pp_disc_client};
    Client() { EXPECT_EQ(pp_disc_client_init(c.get()), 0); }
    pp_disc_client *operator->() { return c.get(); }
    pp_disc_client *get() { return c.get(); }
};

struct Node {
    std::unique_ptr<pp_disc_node> n{new pp_disc_node};
    Node() { EXPECT_EQ(pp_disc_node_init(n.get()), 0); }
    pp_disc_node *operator->() { return n.get(); }
    pp_disc_node *get() { return n.get(); }
};

Bytes query(const Key &k, Client &c, uint64_t now)
{
    Bytes q(PP_DISC_MAX_LEN);
    size_t n = 0;
    EXPECT_EQ(pp_disc_query_build(&k.k, c.get(), now, q.data(), q.size(), &n), 0);
    EXPECT_EQ(n, PP_DISC_QUERY_LEN);
    q.resize(n);
    return q;
}

// The node's answer, or {} with *ret_err set.
Bytes answer(const Key &k, Node &node, const Bytes &q, uint64_t now, int *ret_err = nullptr,
             uint16_t port = TCP_PORT, uint32_t workers = 8)
{
    Bytes a(PP_DISC_MAX_LEN);
    size_t n = 0;
    int r = pp_disc_answer_build(&k.k, node.get(), q.data(), q.size(), now, port, workers,
                                 a.data(), a.size(), &n);
    if (ret_err)
        *ret_err = r;
    if (r != 0)
        return {};
    EXPECT_EQ(n, PP_DISC_ANSWER_LEN);
    a.resize(n);
    return a;
}

Bytes beacon(const Key &k, Node &node, uint64_t now, uint16_t port = TCP_PORT,
             uint32_t workers = 4)
{
    Bytes b(PP_DISC_MAX_LEN);
    size_t n = 0;
    EXPECT_EQ(pp_disc_beacon_build(&k.k, node.get(), now, port, workers, b.data(), b.size(), &n), 0);
    EXPECT_EQ(n, PP_DISC_BEACON_LEN);
    b.resize(n);
    return b;
}

int check_answer(const Key &k, Client &c, const Bytes &a, uint64_t now, pp_disc_found *f = nullptr)
{
    pp_disc_found tmp;
    return pp_disc_answer_check(&k.k, c.get(), a.data(), a.size(), now, f ? f : &tmp);
}

int check_beacon(const Key &k, Client &c, const Bytes &b, uint64_t now, pp_disc_found *f = nullptr)
{
    pp_disc_found tmp;
    return pp_disc_beacon_check(&k.k, c.get(), b.data(), b.size(), now, f ? f : &tmp);
}

// K_disc recomputed from the documented construction (disc.h, secure.h).
Bytes disc_key(const pp_sec_psk &psk)
{
    static const char label[] = "pp-v1 disc";
    Bytes k(32);
    crypto_generichash(k.data(), k.size(), (const unsigned char *)label, sizeof(label) - 1,
                       psk.k_kdf, sizeof(psk.k_kdf));
    return k;
}

// Re-mac a message after editing it, as an authentic sender would.
void remac(const Key &k, Bytes &m)
{
    Bytes key = disc_key(k.psk);
    crypto_auth(m.data() + m.size() - PP_DISC_MAC_LEN, m.data(), m.size() - PP_DISC_MAC_LEN,
                key.data());
}

uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

sockaddr_storage v4(const char *ip, uint16_t port = 0)
{
    sockaddr_storage ss{};
    auto *a = reinterpret_cast<sockaddr_in *>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    EXPECT_EQ(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    return ss;
}

sockaddr_storage v6(const char *ip, uint16_t port = 0)
{
    sockaddr_storage ss{};
    auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    EXPECT_EQ(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    return ss;
}

}  // namespace

//// Keys and layout

TEST(DiscKey, MatchesTheDocumentedConstruction)
{
    Key k;
    Bytes want = disc_key(k.psk);
    EXPECT_EQ(memcmp(k.k.k, want.data(), 32), 0);
    EXPECT_NE(memcmp(k.k.k, k.psk.k_auth, 32), 0);
    EXPECT_NE(memcmp(k.k.k, k.psk.k_kdf, 32), 0);

    // A query is magic | type | 0 | 0 | ts | nonce | zero pad | HMAC-SHA-512-256.
    Client c;
    Bytes q = query(k, c, T0);
    EXPECT_EQ(memcmp(q.data(), "PPD1", 4), 0);
    EXPECT_EQ(q[4], PP_DISC_QUERY);
    EXPECT_EQ(q[5], 0);
    EXPECT_EQ(get64(&q[8]), T0);
    for (size_t i = 32; i < 96; i++)
        EXPECT_EQ(q[i], 0) << i;
    Bytes tag(32);
    crypto_auth(tag.data(), q.data(), 96, want.data());
    EXPECT_EQ(memcmp(tag.data(), &q[96], 32), 0);

    // An answer echoes the query's nonce and carries port and workers.
    Node n;
    Bytes a = answer(k, n, q, T0 + 5, nullptr, 0x1234, 0xa0b0c0d);
    EXPECT_EQ(a[4], PP_DISC_ANSWER);
    EXPECT_EQ(a[6] | a[7] << 8, 0x1234);
    EXPECT_EQ(get64(&a[8]), T0 + 5);
    EXPECT_EQ(a[16] | a[17] << 8 | a[18] << 16 | a[19] << 24, 0xa0b0c0d);
    EXPECT_EQ(memcmp(&a[24], &q[16], 16), 0);
    EXPECT_EQ(memcmp(&a[40], n->id, 16), 0);
    crypto_auth(tag.data(), a.data(), 72, want.data());
    EXPECT_EQ(memcmp(tag.data(), &a[72], 32), 0);

    Bytes b = beacon(k, n, T0 + 9);
    EXPECT_EQ(b[4], PP_DISC_BEACON);
    EXPECT_EQ(memcmp(&b[24], n->id, 16), 0);
    crypto_auth(tag.data(), b.data(), 56, want.data());
    EXPECT_EQ(memcmp(tag.data(), &b[56], 32), 0);
}

TEST(DiscKey, RefusedWhenNotInitialised)
{
    pp_sec_psk zero{};
    pp_disc_key k{};
    EXPECT_EQ(pp_disc_key_init(&k, &zero), -EINVAL);
    EXPECT_EQ(pp_disc_key_init(&k, nullptr), -EINVAL);
    EXPECT_EQ(pp_disc_key_init(nullptr, &zero), -EINVAL);
    EXPECT_FALSE(k.ready);

    Client c;
    Bytes q(PP_DISC_MAX_LEN);
    size_t n = 777;
    EXPECT_EQ(pp_disc_query_build(&k, c.get(), T0, q.data(), q.size(), &n), -EINVAL);
    Key good;
    pp_disc_key_wipe(&good.k);
    EXPECT_EQ(pp_disc_query_build(&good.k, c.get(), T0, q.data(), q.size(), &n), -EINVAL);
    EXPECT_EQ(n, 777u);
}

TEST(DiscKey, SizesAndNoAmplification)
{
    static_assert(PP_DISC_ANSWER_LEN <= PP_DISC_QUERY_LEN, "no amplification");
    EXPECT_LE(PP_DISC_ANSWER_LEN, PP_DISC_QUERY_LEN);
    EXPECT_LE(PP_DISC_BEACON_LEN, PP_DISC_MAX_LEN);
    // The doc's sizes, so that nobody puts these on a small stack unawares.
    EXPECT_LT(sizeof(pp_disc_client), 34u * 1024);
    EXPECT_LT(sizeof(pp_disc_node), 26u * 1024);
    RecordProperty("client_bytes", (int)sizeof(pp_disc_client));
    RecordProperty("node_bytes", (int)sizeof(pp_disc_node));
}

//// Query and answer

TEST(DiscQuery, RoundTrip)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    EXPECT_EQ(pp_disc_type(q.data(), q.size()), PP_DISC_QUERY);
    Bytes a = answer(k, n, q, T0 + 3, nullptr, 61000, 12);
    ASSERT_FALSE(a.empty());
    EXPECT_EQ(pp_disc_type(a.data(), a.size()), PP_DISC_ANSWER);
    pp_disc_found f{};
    ASSERT_EQ(check_answer(k, c, a, T0 + 4, &f), 0);
    EXPECT_EQ(f.port, 61000);
    EXPECT_EQ(f.workers, 12u);
    EXPECT_EQ(f.type, PP_DISC_ANSWER);
    EXPECT_EQ(memcmp(f.node_id, n->id, 16), 0);

    // Two nodes answer one query; both are heard, and their beacons name the same ids.
    Node n2;
    Bytes a2 = answer(k, n2, q, T0 + 5, nullptr, 61001, 1);
    ASSERT_EQ(check_answer(k, c, a2, T0 + 6, &f), 0);
    EXPECT_EQ(f.port, 61001);
    EXPECT_EQ(memcmp(f.node_id, n2->id, 16), 0);
    ASSERT_EQ(check_beacon(k, c, beacon(k, n2, T0 + 7), T0 + 8, &f), 0);
    EXPECT_EQ(memcmp(f.node_id, n2->id, 16), 0);
    EXPECT_EQ(f.type, PP_DISC_BEACON);
    EXPECT_NE(memcmp(n->id, n2->id, 16), 0);
}

TEST(DiscQuery, WrongSecretQueryIsNotAnswered)
{
    Key k, other("another secret");
    Client c, c_other;
    Node n, n_other;

    // A query under another secret: the node does not answer.
    Bytes q_other = query(other, c_other, T0);
    int err = 0;
    EXPECT_TRUE(answer(k, n, q_other, T0, &err).empty());
    EXPECT_EQ(err, -EBADMSG);
    // Nor is ours answered by a node under another secret; and refusing
    // changed nothing: a node with our secret still answers it.
    Bytes q = query(k, c, T0);
    EXPECT_TRUE(answer(other, n_other, q, T0, &err).empty());
    EXPECT_EQ(err, -EBADMSG);
    EXPECT_EQ(check_answer(k, c, answer(k, n, q, T0), T0), 0);
}

TEST(DiscQuery, WrongSecretAnswerAndBeaconAreRejected)
{
    Key k, other("another secret");
    Client c;
    Node n_other;
    Bytes q = query(k, c, T0);
    // A node with another secret cannot even verify our query...
    int err = 0;
    EXPECT_TRUE(answer(other, n_other, q, T0, &err).empty());
    EXPECT_EQ(err, -EBADMSG);
    // ...and an answer it made for a query it could verify (its own
    // secret's), with our nonce pasted in and re-maced under its key, fails
    // our mac.
    Client c_other;
    Bytes q_other = query(other, c_other, T0);
    memcpy(&q_other[16], &q[16], 16);
    remac(other, q_other);
    Bytes a_other = answer(other, n_other, q_other, T0 + 1);
    ASSERT_FALSE(a_other.empty());
    EXPECT_EQ(check_answer(k, c, a_other, T0 + 2), -EBADMSG);
    // Beacons likewise.
    EXPECT_EQ(check_beacon(k, c, beacon(other, n_other, T0), T0), -EBADMSG);
    // Under the right key all of it passes.
    Node n;
    EXPECT_EQ(check_answer(k, c, answer(k, n, q, T0 + 1), T0 + 2), 0);
    EXPECT_EQ(check_beacon(k, c, beacon(k, n, T0), T0), 0);
}

TEST(DiscQuery, EveryFlippedBitIsRejected)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    Bytes a = answer(k, n, q, T0);
    Node nb;
    Bytes b = beacon(k, nb, T0);

    for (size_t i = 0; i < q.size() * 8; i++) {
        Bytes x = q;
        x[i / 8] ^= (uint8_t)(1u << (i % 8));
        int err = 0;
        EXPECT_TRUE(answer(k, n, x, T0, &err).empty()) << "query bit " << i;
        EXPECT_TRUE(err == -EBADMSG || err == -EPROTO) << "query bit " << i << ": " << err;
    }
    for (size_t i = 0; i < a.size() * 8; i++) {
        Bytes x = a;
        x[i / 8] ^= (uint8_t)(1u << (i % 8));
        int err = check_answer(k, c, x, T0);
        EXPECT_TRUE(err == -EBADMSG || err == -EPROTO) << "answer bit " << i << ": " << err;
    }
    for (size_t i = 0; i < b.size() * 8; i++) {
        Bytes x = b;
        x[i / 8] ^= (uint8_t)(1u << (i % 8));
        int err = check_beacon(k, c, x, T0);
        EXPECT_TRUE(err == -EBADMSG || err == -EPROTO) << "beacon bit " << i << ": " << err;
    }
    // None of that touched the state: the genuine messages still pass.
    Node n2;
    EXPECT_FALSE(answer(k, n2, q, T0).empty());
    EXPECT_EQ(check_answer(k, c, a, T0), 0);
    EXPECT_EQ(check_beacon(k, c, b, T0), 0);
}

TEST(DiscQuery, ReplayedQueryIsAnsweredOnce)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    EXPECT_FALSE(answer(k, n, q, T0).empty());
    for (int i = 0; i < 3; i++) {
        int err = 0;
        EXPECT_TRUE(answer(k, n, q, T0 + 1000 * i, &err).empty());
        EXPECT_EQ(err, -EALREADY);
    }
    // Outside the window the same replay reads as stale.
    int err = 0;
    EXPECT_TRUE(answer(k, n, q, T0 + PP_DISC_WINDOW_MS + 1, &err).empty());
    EXPECT_EQ(err, -ETIME);
}

TEST(DiscQuery, ReplayedAnswerIsRejected)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    Bytes a = answer(k, n, q, T0);
    EXPECT_EQ(check_answer(k, c, a, T0), 0);
    EXPECT_EQ(check_answer(k, c, a, T0 + 1), -EALREADY);
    EXPECT_EQ(check_answer(k, c, a, T0 + 2000), -EALREADY);
}

TEST(DiscQuery, AnswerToANonceNeverSentIsRejected)
{
    Key k;
    Client us, them;
    Node n;
    // Someone else's query (same secret): its answer is not ours.
    Bytes theirs = answer(k, n, query(k, them, T0), T0);
    EXPECT_EQ(check_answer(k, us, theirs, T0), -ESRCH);
    EXPECT_EQ(check_answer(k, them, theirs, T0), 0);

    // Our query, but too late by our own clock.
    Bytes q = query(k, us, T0);
    Bytes a = answer(k, n, q, T0);
    EXPECT_EQ(check_answer(k, us, a, T0 + PP_DISC_QUERY_TTL_MS + 1), -ESRCH);
    EXPECT_EQ(check_answer(k, us, a, T0 + PP_DISC_QUERY_TTL_MS), 0);

    // Our query, forgotten after PP_DISC_OUTSTANDING newer ones.
    Client c;
    Bytes old_q = query(k, c, T0);
    Bytes old_a = answer(k, n, old_q, T0);
    for (unsigned i = 0; i < PP_DISC_OUTSTANDING; i++)
        query(k, c, T0 + 1 + i);
    EXPECT_EQ(check_answer(k, c, old_a, T0 + 20), -ESRCH);

    // One fewer and it is still outstanding.
    Client c2;
    Bytes q2 = query(k, c2, T0);
    Bytes a2 = answer(k, n, q2, T0);
    for (unsigned i = 0; i + 1 < PP_DISC_OUTSTANDING; i++)
        query(k, c2, T0 + 1 + i);
    EXPECT_EQ(check_answer(k, c2, a2, T0 + 20), 0);
}

TEST(DiscQuery, StaleAndFutureTimestampsAreRejected)
{
    Key k;
    const uint64_t W = PP_DISC_WINDOW_MS;
    struct Case {
        int64_t skew;  // sender's clock minus receiver's
        int want;
    } cases[] = { { 0, 0 }, { (int64_t)W, 0 }, { -(int64_t)W, 0 },
                  { (int64_t)W + 1, -ETIME }, { -(int64_t)W - 1, -ETIME },
                  { 3600000, -ETIME }, { -3600000, -ETIME } };
    for (const Case &cs : cases) {
        const uint64_t now = T0, sent = T0 + cs.skew;
        Client c;
        Node n;
        int err = 1;
        Bytes q = query(k, c, sent);
        answer(k, n, q, now, &err);
        EXPECT_EQ(err, cs.want) << "query skew " << cs.skew;

        // An answer stamped by a node whose clock is skewed: the client's
        // own query is fresh by the client's clock.
        Client c2;
        Node n2;
        Bytes q2 = query(k, c2, now);
        Bytes a2 = answer(k, n2, q2, now);  // stamped now...
        put64(&a2[8], sent);                // ...then as the skewed node would have
        remac(k, a2);
        EXPECT_EQ(check_answer(k, c2, a2, now), cs.want) << "answer skew " << cs.skew;

        Client c3;
        Node n3;
        EXPECT_EQ(check_beacon(k, c3, beacon(k, n3, sent), now), cs.want) << "beacon skew " << cs.skew;
    }
    // A timestamp near 0 or UINT64_MAX does not wrap into the window.
    Client c;
    Node n;
    EXPECT_EQ(check_beacon(k, c, beacon(k, n, UINT64_MAX), T0), -ETIME);
    Node n0;
    EXPECT_EQ(check_beacon(k, c, beacon(k, n0, 0), T0), -ETIME);
    Node n1;
    EXPECT_EQ(check_beacon(k, c, beacon(k, n1, 5), 0), 0);
}

TEST(DiscQuery, AnswerNeverLargerThanQuery)
{
    Key k;
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; i++) {
        Client c;
        Node n;
        uint64_t now = T0 + rng() % 100000;
        Bytes q = query(k, c, now);
        uint16_t port = (uint16_t)(1 + rng() % 65535);
        uint32_t workers = rng();
        int err = 0;
        Bytes a = answer(k, n, q, now + rng() % PP_DISC_WINDOW_MS, &err, port, workers);
        ASSERT_EQ(err, 0);
        ASSERT_LE(a.size(), q.size());
        pp_disc_found f{};
        ASSERT_EQ(check_answer(k, c, a, now, &f), 0);
        EXPECT_EQ(f.port, port);
        EXPECT_EQ(f.workers, workers);
    }
    // A query cut short is not answered at all, however short.
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    for (size_t len = 0; len < q.size(); len++) {
        Bytes a(PP_DISC_MAX_LEN);
        size_t got = 0;
        EXPECT_EQ(pp_disc_answer_build(&k.k, n.get(), q.data(), len, T0, TCP_PORT, 1, a.data(),
                                       a.size(), &got),
                  -EPROTO)
            << len;
    }
}

TEST(DiscQuery, ReplayRingFloorCatchesEvictedEntries)
{
    Key k;
    Node n;
    Client c;
    // The first query, answered; then enough fresh ones to push it out of
    // the ring, all inside one window.
    Bytes first = query(k, c, T0);
    EXPECT_FALSE(answer(k, n, first, T0).empty());
    for (unsigned i = 0; i < PP_DISC_SEEN_MAX; i++) {
        Bytes q = query(k, c, T0 + 1 + i / 64);
        int err = 0;
        answer(k, n, q, T0 + 1 + i / 64, &err);
        ASSERT_EQ(err, 0) << i;
    }
    int err = 0;
    EXPECT_TRUE(answer(k, n, first, T0 + 20, &err).empty());
    EXPECT_EQ(err, -EALREADY);
    // Newer queries still pass.
    EXPECT_FALSE(answer(k, n, query(k, c, T0 + 100), T0 + 100).empty());
}

TEST(DiscQuery, AuthenticButUnknownFieldsAreProtocolErrors)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    // Each field the sender must leave zero, set by a sender that knows the key.
    for (size_t off : { (size_t)5, (size_t)6, (size_t)7, (size_t)32, (size_t)95 }) {
        Bytes x = q;
        x[off] = 1;
        remac(k, x);
        int err = 0;
        EXPECT_TRUE(answer(k, n, x, T0, &err).empty());
        EXPECT_EQ(err, -EPROTO) << off;
    }
    Bytes a = answer(k, n, q, T0);
    for (size_t off : { (size_t)5, (size_t)20, (size_t)23 }) {
        Bytes x = a;
        x[off] = 1;
        remac(k, x);
        EXPECT_EQ(check_answer(k, c, x, T0), -EPROTO) << off;
    }
    Bytes x = a;
    x[6] = x[7] = 0;  // port 0
    remac(k, x);
    EXPECT_EQ(check_answer(k, c, x, T0), -EPROTO);
    EXPECT_EQ(check_answer(k, c, a, T0), 0);  // the genuine one, after all that

    Node nb;
    Bytes b = beacon(k, nb, T0);
    for (size_t off : { (size_t)5, (size_t)20, (size_t)6 }) {
        Bytes y = b;
        if (off == 6)
            y[6] = y[7] = 0;
        else
            y[off] = 0x80;
        remac(k, y);
        EXPECT_EQ(check_beacon(k, c, y, T0), -EPROTO) << off;
    }
}

TEST(DiscQuery, MalformedInputAndArguments)
{
    Key k;
    Client c;
    Node n;
    Bytes q = query(k, c, T0);
    Bytes a = answer(k, n, q, T0);
    Bytes b = beacon(k, n, T0);
    pp_disc_found f{};

    // Every kind fed to the wrong check.
    int err = 0;
    EXPECT_TRUE(answer(k, n, a, T0, &err).empty());
    EXPECT_EQ(err, -EPROTO);
    EXPECT_EQ(check_answer(k, c, q, T0), -EPROTO);
    EXPECT_EQ(check_answer(k, c, b, T0), -EPROTO);
    EXPECT_EQ(check_beacon(k, c, a, T0), -EPROTO);
    EXPECT_EQ(check_beacon(k, c, q, T0), -EPROTO);

    // Every length but the right one, from a longer buffer.
    Bytes big(300, 0);
    memcpy(big.data(), a.data(), a.size());
    for (size_t len = 0; len <= big.size(); len++) {
        if (len == a.size())
            continue;
        EXPECT_EQ(pp_disc_answer_check(&k.k, c.get(), big.data(), len, T0, &f), -EPROTO) << len;
    }
    EXPECT_EQ(pp_disc_type(nullptr, 0), -EPROTO);
    EXPECT_EQ(pp_disc_type(q.data(), 4), -EPROTO);
    Bytes t = q;
    t[4] = 0;
    EXPECT_EQ(pp_disc_type(t.data(), t.size()), -EPROTO);
    t[4] = 4;
    EXPECT_EQ(pp_disc_type(t.data(), t.size()), -EPROTO);
    t = q;
    t[0] = 'X';
    EXPECT_EQ(pp_disc_type(t.data(), t.size()), -EPROTO);
    EXPECT_EQ(pp_disc_type(b.data(), b.size()), PP_DISC_BEACON);

    // Arguments.
    Bytes out(PP_DISC_MAX_LEN, 0xee);
    size_t len = 999;
    EXPECT_EQ(pp_disc_query_build(&k.k, c.get(), T0, out.data(), PP_DISC_QUERY_LEN - 1, &len), -ENOBUFS);
    EXPECT_EQ(pp_disc_query_build(&k.k, nullptr, T0, out.data(), out.size(), &len), -EINVAL);
    EXPECT_EQ(pp_disc_query_build(&k.k, c.get(), T0, nullptr, out.size(), &len), -EINVAL);
    EXPECT_EQ(pp_disc_query_build(&k.k, c.get(), T0, out.data(), out.size(), nullptr), -EINVAL);
    Node n2;
    Bytes q2 = query(k, c, T0);
    EXPECT_EQ(pp_disc_answer_build(&k.k, n2.get(), q2.data(), q2.size(), T0, TCP_PORT, 1,
                                   out.data(), PP_DISC_ANSWER_LEN - 1, &len), -ENOBUFS);
    EXPECT_EQ(pp_disc_answer_build(&k.k, n2.get(), q2.data(), q2.size(), T0, 0, 1,
                                   out.data(), out.size(), &len), -EINVAL);
    EXPECT_EQ(pp_disc_answer_build(&k.k, n2.get(), nullptr, 5, T0, TCP_PORT, 1,
                                   out.data(), out.size(), &len), -EINVAL);
    EXPECT_EQ(pp_disc_beacon_build(&k.k, n2.get(), T0, TCP_PORT, 1, out.data(),
                                   PP_DISC_BEACON_LEN - 1, &len), -ENOBUFS);
    EXPECT_EQ(pp_disc_beacon_build(&k.k, n2.get(), T0, 0, 1, out.data(), out.size(), &len), -EINVAL);
    EXPECT_EQ(len, 999u);
    for (uint8_t x : out)
        EXPECT_EQ(x, 0xee);
    // The -ENOBUFS answer did not count the query as answered.
    EXPECT_FALSE(answer(k, n2, q2, T0).empty());

    pp_disc_node zn{};
    pp_disc_client zc{};
    EXPECT_EQ(pp_disc_answer_build(&k.k, &zn, q2.data(), q2.size(), T0, TCP_PORT, 1,
                                   out.data(), out.size(), &len), -EINVAL);
    EXPECT_EQ(pp_disc_answer_check(&k.k, &zc, a.data(), a.size(), T0, &f), -EINVAL);
    EXPECT_EQ(pp_disc_beacon_check(&k.k, &zc, b.data(), b.size(), T0, &f), -EINVAL);
    EXPECT_EQ(pp_disc_answer_check(&k.k, c.get(), nullptr, 3, T0, &f), -EINVAL);
    EXPECT_EQ(pp_disc_answer_check(&k.k, c.get(), nullptr, 0, T0, &f), -EPROTO);
    EXPECT_EQ(pp_disc_beacon_check(&k.k, c.get(), b.data(), b.size(), T0, nullptr), -EINVAL);
    EXPECT_EQ(pp_disc_client_init(nullptr), -EINVAL);
    EXPECT_EQ(pp_disc_node_init(nullptr), -EINVAL);
}

//// Beacons

TEST(DiscBeacon, EachNodesBeaconsMustIncrease)
{
    Key k;
    Client c;
    Node n;
    Bytes b1 = beacon(k, n, T0);
    Bytes b2 = beacon(k, n, T0);  // same ms: stamped one later
    Bytes b3 = beacon(k, n, T0 - 500);  // clock stepped back: still later
    EXPECT_EQ(get64(&b1[8]), T0);
    EXPECT_EQ(get64(&b2[8]), T0 + 1);
    EXPECT_EQ(get64(&b3[8]), T0 + 2);

    EXPECT_EQ(check_beacon(k, c, b2, T0), 0);
    EXPECT_EQ(check_beacon(k, c, b1, T0), -EALREADY);  // older than the last heard
    EXPECT_EQ(check_beacon(k, c, b2, T0), -EALREADY);  // replay
    EXPECT_EQ(check_beacon(k, c, b3, T0), 0);
    EXPECT_EQ(check_beacon(k, c, b3, T0 + 10000), -EALREADY);

    // Another node's beacons are ordered on their own.
    Node m;
    EXPECT_EQ(check_beacon(k, c, beacon(k, m, T0 - 1000), T0), 0);
}

TEST(DiscBeacon, ReplayCaughtAfterItsNodeIsForgotten)
{
    Key k;
    Client c;
    Node first;
    Bytes b = beacon(k, first, T0);
    ASSERT_EQ(check_beacon(k, c, b, T0), 0);
    // More nodes than the table holds, all newer: the first one's entry goes.
    for (unsigned i = 0; i < PP_DISC_NODES_MAX + 10; i++) {
        Node n;
        ASSERT_EQ(check_beacon(k, c, beacon(k, n, T0 + 1 + i), T0 + 1 + i), 0) << i;
    }
    // Its replay is still refused, by the seen ring.
    EXPECT_EQ(check_beacon(k, c, b, T0 + 400), -EALREADY);
    // And a new beacon from it is heard.
    EXPECT_EQ(check_beacon(k, c, beacon(k, first, T0 + 500), T0 + 500), 0);
}

//// Addresses

TEST(DiscTarget, SourceAddressWithThePayloadPort)
{
    sockaddr_storage src = v4("192.0.2.7", 40000), out{};
    ASSERT_EQ(pp_disc_target(&src, sizeof(sockaddr_in), 60001, &out), 0);
    auto *a = reinterpret_cast<sockaddr_in *>(&out);
    EXPECT_EQ(a->sin_family, AF_INET);
    EXPECT_EQ(ntohs(a->sin_port), 60001);
    char ip[64];
    EXPECT_STREQ(inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip)), "192.0.2.7");

    sockaddr_storage s6 = v6("2001:db8::5", 1);
    reinterpret_cast<sockaddr_in6 *>(&s6)->sin6_scope_id = 3;
    ASSERT_EQ(pp_disc_target(&s6, sizeof(sockaddr_in6), 7, &out), 0);
    auto *b = reinterpret_cast<sockaddr_in6 *>(&out);
    EXPECT_EQ(ntohs(b->sin6_port), 7);
    EXPECT_EQ(b->sin6_scope_id, 3u);  // link-local answers stay on their link
    EXPECT_STREQ(inet_ntop(AF_INET6, &b->sin6_addr, ip, sizeof(ip)), "2001:db8::5");

    sockaddr_storage un{};
    un.ss_family = AF_UNIX;
    sockaddr_storage keep = out;
    EXPECT_EQ(pp_disc_target(&un, sizeof(sockaddr_un), 7, &out), -EAFNOSUPPORT);
    EXPECT_EQ(pp_disc_target(&src, sizeof(sockaddr_in) - 1, 7, &out), -EINVAL);
    EXPECT_EQ(pp_disc_target(&s6, sizeof(sockaddr_in), 7, &out), -EINVAL);
    EXPECT_EQ(pp_disc_target(&src, sizeof(sockaddr_in), 0, &out), -EINVAL);
    EXPECT_EQ(memcmp(&out, &keep, sizeof(out)), 0);
}

//// The limiter

TEST(DiscLimit, PerSourceBucket)
{
    pp_disc_limit l;
    ASSERT_EQ(pp_disc_limit_init(&l, 2, 5000, 100, 1), 0);
    sockaddr_storage a = v4("10.0.0.1", 1), a_other_port = v4("10.0.0.1", 2),
                     b = v4("10.0.0.2");
    uint64_t t = 1000;
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a, t));
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a_other_port, t));  // ports do not matter
    EXPECT_FALSE(pp_disc_limit_allow(&l, &a, t));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &a, t + 4999));
    EXPECT_TRUE(pp_disc_limit_allow(&l, &b, t));  // another source is not held back
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a, t + 5000));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &a, t + 5001));
    // A long silence refills to the burst, not beyond.
    t += 1000000;
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a, t));
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a, t));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &a, t));
    // A clock that steps back refills nothing.
    EXPECT_FALSE(pp_disc_limit_allow(&l, &a, t - 100000));
    EXPECT_TRUE(pp_disc_limit_allow(&l, &a, t + 5000));

    // IPv4 and IPv4-mapped IPv6 are one host.
    sockaddr_storage m = v6("::ffff:10.0.0.2");
    EXPECT_TRUE(pp_disc_limit_allow(&l, &m, 1000));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &b, 1000));
    sockaddr_storage un{};
    un.ss_family = AF_UNIX;
    EXPECT_FALSE(pp_disc_limit_allow(&l, &un, t));
    EXPECT_FALSE(pp_disc_limit_allow(&l, nullptr, t));
    EXPECT_FALSE(pp_disc_limit_allow(nullptr, &a, t));
    pp_disc_limit z{};
    EXPECT_FALSE(pp_disc_limit_allow(&z, &a, t));
}

TEST(DiscLimit, GlobalCapHoldsAgainstManySources)
{
    pp_disc_limit l;
    ASSERT_EQ(pp_disc_limit_init(&l, PP_DISC_LIMIT_SRC_BURST, PP_DISC_LIMIT_SRC_MS,
                                 PP_DISC_LIMIT_ALL_BURST, PP_DISC_LIMIT_ALL_MS), 0);
    // A flood of answers from 10000 distinct sources over 10 s of fake
    // time, 1 ms apart: at most the burst plus one per 100 ms get through.
    unsigned allowed = 0;
    const uint64_t t0 = 50000;
    for (unsigned i = 0; i < 10000; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        sockaddr_storage s = v4(ip);
        allowed += pp_disc_limit_allow(&l, &s, t0 + i);
    }
    EXPECT_LE(allowed, PP_DISC_LIMIT_ALL_BURST + 10000 / PP_DISC_LIMIT_ALL_MS);
    EXPECT_GE(allowed, PP_DISC_LIMIT_ALL_BURST + 10000 / PP_DISC_LIMIT_ALL_MS - 1);

    // A refusal by the overall bucket does not cost the source: when the
    // overall bucket refills, that source still has its burst.
    pp_disc_limit g;
    ASSERT_EQ(pp_disc_limit_init(&g, 2, 60000, 1, 1000), 0);
    sockaddr_storage x = v4("192.0.2.1"), y = v4("192.0.2.2");
    EXPECT_TRUE(pp_disc_limit_allow(&g, &x, 0));
    EXPECT_FALSE(pp_disc_limit_allow(&g, &y, 10));  // overall empty
    EXPECT_FALSE(pp_disc_limit_allow(&g, &y, 20));
    EXPECT_TRUE(pp_disc_limit_allow(&g, &y, 1000));
    EXPECT_TRUE(pp_disc_limit_allow(&g, &y, 2000));  // y's second, never charged before
    EXPECT_FALSE(pp_disc_limit_allow(&g, &y, 3000));  // y's own bucket is empty now
}

TEST(DiscLimit, FullTableForgetsARefilledSourceBeforeTheStalest)
{
    // Per source: 2 at once, one per second; overall: one per ms.
    pp_disc_limit l;
    ASSERT_EQ(pp_disc_limit_init(&l, 2, 1000, 1, 1), 0);
    auto src = [](unsigned i) {
        char ip[32];
        snprintf(ip, sizeof(ip), "198.51.100.%u", i);
        return v4(ip);
    };
    sockaddr_storage s0 = src(0);
    EXPECT_TRUE(pp_disc_limit_allow(&l, &s0, 0));  // s0: one of two used
    for (unsigned i = 1; i < PP_DISC_LIMIT_SLOTS; i++) {  // s1..s63 drained, 1 ms apart
        sockaddr_storage s = src(i);
        EXPECT_TRUE(pp_disc_limit_allow(&l, &s, 2 * i - 1));
        EXPECT_TRUE(pp_disc_limit_allow(&l, &s, 2 * i));
    }
    // At 1500 s0 is full again; s1 takes that ms's overall token, so s0's
    // own call is refused overall, which makes s0 recent without using it.
    sockaddr_storage s1 = src(1), s2 = src(2);
    EXPECT_TRUE(pp_disc_limit_allow(&l, &s1, 1500));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &s0, 1500));
    // The table is full; a new source takes s0's slot (full, so forgetting
    // it changes nothing), not the stalest one, s2's.
    sockaddr_storage fresh = src(200);
    EXPECT_TRUE(pp_disc_limit_allow(&l, &fresh, 1501));
    // s2 still has its partly refilled bucket: one more, not a fresh two.
    EXPECT_TRUE(pp_disc_limit_allow(&l, &s2, 1502));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &s2, 1503));
}

TEST(DiscLimit, BusySourceSurvivesAFloodOfNewOnes)
{
    pp_disc_limit l;
    ASSERT_EQ(pp_disc_limit_init(&l, 1, 1000000, 65536, 1), 0);
    sockaddr_storage hot = v4("172.16.0.1");
    EXPECT_TRUE(pp_disc_limit_allow(&l, &hot, 0));
    EXPECT_FALSE(pp_disc_limit_allow(&l, &hot, 1));
    // Fill the table with other sources, then many more: those slots are
    // drained (burst 1), so eviction falls to the stalest, which is hot.
    // Keep hot fresh by asking for it in between: it stays refused.
    for (unsigned i = 0; i < 4 * PP_DISC_LIMIT_SLOTS; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "172.17.%u.%u", i >> 8, i & 255);
        sockaddr_storage s = v4(ip);
        EXPECT_TRUE(pp_disc_limit_allow(&l, &s, 10 + i));
        EXPECT_FALSE(pp_disc_limit_allow(&l, &hot, 10 + i)) << i;
    }
    EXPECT_EQ(pp_disc_limit_init(&l, 0, 1, 1, 1), -EINVAL);
    EXPECT_EQ(pp_disc_limit_init(&l, 1, 0, 1, 1), -EINVAL);
    EXPECT_EQ(pp_disc_limit_init(&l, 1, 1, 65537, 1), -EINVAL);
    EXPECT_EQ(pp_disc_limit_init(&l, 1, 1, 1, 86400001), -EINVAL);
    EXPECT_EQ(pp_disc_limit_init(nullptr, 1, 1, 1, 1), -EINVAL);
}

//// Real UDP on loopback

namespace {

uint64_t wall_ms()
{
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int udp_socket(sockaddr_in *ret_addr)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len), 0);
    *ret_addr = a;
    return fd;
}

// The one blocking helper: wait up to ms for a datagram on fd.  Returns
// its length (0 on timeout) and the source in *ret_src.
ssize_t recv_wait(int fd, uint8_t *buf, size_t cap, int ms, sockaddr_storage *ret_src,
                  socklen_t *ret_len)
{
    pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, ms) != 1)
        return 0;
    *ret_len = sizeof(*ret_src);
    return recvfrom(fd, buf, cap, 0, reinterpret_cast<sockaddr *>(ret_src), ret_len);
}

}  // namespace

TEST(DiscUdp, QueryAndAnswerOverLoopback)
{
    Key k;
    Node node;
    sockaddr_in node_addr, client_addr;
    int nfd = udp_socket(&node_addr);
    int cfd = udp_socket(&client_addr);
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0}, refused{0};

    // The node: answer what verifies, to the datagram's source, drop the rest.
    std::thread t([&] {
        uint8_t in[2048], out[PP_DISC_MAX_LEN];
        while (!stop.load()) {
            sockaddr_storage src;
            socklen_t slen;
            ssize_t n = recv_wait(nfd, in, sizeof(in), 50, &src, &slen);
            if (n <= 0)
                continue;
            size_t alen = 0;
            int r = pp_disc_answer_build(&k.k, node.get(), in, (size_t)n, wall_ms(), TCP_PORT, 6,
                                         out, sizeof(out), &alen);
            if (r < 0) {
                refused++;
                continue;
            }
            sendto(nfd, out, alen, 0, reinterpret_cast<sockaddr *>(&src), slen);
            answered++;
        }
    });

    Client c;
    Bytes q = query(k, c, wall_ms());
    const uint8_t junk[] = "PPD1\x01 not a query";
    auto *na = reinterpret_cast<sockaddr *>(&node_addr);
    ASSERT_EQ(sendto(cfd, junk, sizeof(junk), 0, na, sizeof(node_addr)), (ssize_t)sizeof(junk));
    ASSERT_EQ(sendto(cfd, q.data(), q.size(), 0, na, sizeof(node_addr)), (ssize_t)q.size());
    ASSERT_EQ(sendto(cfd, q.data(), q.size(), 0, na, sizeof(node_addr)), (ssize_t)q.size());  // replay

    uint8_t buf[2048];
    sockaddr_storage src;
    socklen_t slen;
    ssize_t n = recv_wait(cfd, buf, sizeof(buf), 2000, &src, &slen);
    ASSERT_GT(n, 0);
    EXPECT_LE((size_t)n, q.size());
    pp_disc_found f{};
    ASSERT_EQ(pp_disc_answer_check(&k.k, c.get(), buf, (size_t)n, wall_ms(), &f), 0);
    EXPECT_EQ(f.port, TCP_PORT);
    EXPECT_EQ(f.workers, 6u);

    // Where to connect: the answer's source address, the payload's port.
    sockaddr_storage to;
    ASSERT_EQ(pp_disc_target(&src, slen, f.port, &to), 0);
    auto *ta = reinterpret_cast<sockaddr_in *>(&to);
    EXPECT_EQ(ta->sin_addr.s_addr, node_addr.sin_addr.s_addr);
    EXPECT_EQ(ntohs(ta->sin_port), TCP_PORT);
    EXPECT_NE(ta->sin_port, node_addr.sin_port);  // not the UDP port it came from

    // The junk and the replay got nothing back.
    EXPECT_EQ(recv_wait(cfd, buf, sizeof(buf), 200, &src, &slen), 0);
    stop = true;
    t.join();
    EXPECT_EQ(answered.load(), 1);
    EXPECT_EQ(refused.load(), 2);
    close(nfd);
    close(cfd);
}
