// Description: net/secure.c: the PSK handshake (both ciphers, wrong secrets,
// every tampered byte, reflection, replay, out-of-order calls, bad lengths,
// the documented construction recomputed with libsodium) and the record
// layer (random streams under every slicing, replayed/swapped/dropped/
// flipped/misdirected records, sticky errors, export/import, boundaries).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <sodium.h>

#include "secure.h"
#include "wire.h"

namespace {

using Bytes = std::vector<uint8_t>;

bool aes_ok()
{
    return sodium_init() >= 0 && crypto_aead_aes256gcm_is_available();
}

// Every cipher this machine can run.
std::vector<uint8_t> ciphers()
{
    std::vector<uint8_t> c{PP_SEC_CHACHA20};
    if (aes_ok())
        c.push_back(PP_SEC_AES256GCM);
    return c;
}

// Sets PP_NET_CIPHER (or unsets it, for nullptr) for its lifetime, then
// restores what the test run started with: CI may run the suite with it set.
struct EnvCipher {
    std::string old;
    bool had;
    explicit EnvCipher(const char *value)
    {
        const char *e = getenv("PP_NET_CIPHER");
        had = e != nullptr;
        if (had)
            old = e;
        if (value)
            setenv("PP_NET_CIPHER", value, 1);
        else
            unsetenv("PP_NET_CIPHER");
    }
    ~EnvCipher()
    {
        if (had)
            setenv("PP_NET_CIPHER", old.c_str(), 1);
        else
            unsetenv("PP_NET_CIPHER");
    }
};

struct ForceChacha : EnvCipher {
    ForceChacha() : EnvCipher("chacha20") {}
};

struct Psk {
    pp_sec_psk k{};
    explicit Psk(const std::string &s) { EXPECT_EQ(pp_sec_psk_init(&k, s.data(), s.size()), 0); }
    ~Psk() { pp_sec_psk_wipe(&k); }
};

bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

template <class T> bool zeroed(const T &v) { return all_zero(&v, sizeof(v)); }

// One complete handshake; the four directions it yields.
struct Session {
    pp_sec_dir c_tx{}, c_rx{}, n_tx{}, n_rx{};
    Bytes m1 = Bytes(PP_SEC_M1_LEN), m2 = Bytes(PP_SEC_M2_LEN), m3 = Bytes(PP_SEC_M3_LEN);
};

void handshake(const pp_sec_psk *cpsk, const pp_sec_psk *npsk, Session *s)
{
    pp_sec_hs c{}, n{};
    ASSERT_EQ(pp_sec_client_start(&c, cpsk, s->m1.data()), 0);
    ASSERT_EQ(pp_sec_node_reply(&n, npsk, s->m1.data(), s->m1.size(), s->m2.data()), 0);
    ASSERT_EQ(pp_sec_client_finish(&c, s->m2.data(), s->m2.size(), s->m3.data()), 0);
    ASSERT_EQ(pp_sec_node_finish(&n, s->m3.data(), s->m3.size()), 0);
    ASSERT_EQ(pp_sec_hs_split(&c, &s->c_tx, &s->c_rx), 0);
    ASSERT_EQ(pp_sec_hs_split(&n, &s->n_tx, &s->n_rx), 0);
    EXPECT_TRUE(zeroed(c));
    EXPECT_TRUE(zeroed(n));
}

void expect_paired(const Session &s, uint8_t cipher)
{
    EXPECT_EQ(s.c_tx.cipher, cipher);
    EXPECT_EQ(s.c_rx.cipher, cipher);
    EXPECT_EQ(s.n_tx.cipher, cipher);
    EXPECT_EQ(s.n_rx.cipher, cipher);
    EXPECT_EQ(memcmp(s.c_tx.key, s.n_rx.key, PP_SEC_KEY_LEN), 0);
    EXPECT_EQ(memcmp(s.n_tx.key, s.c_rx.key, PP_SEC_KEY_LEN), 0);
    EXPECT_NE(memcmp(s.c_tx.key, s.c_rx.key, PP_SEC_KEY_LEN), 0);
    EXPECT_FALSE(all_zero(s.c_tx.key, PP_SEC_KEY_LEN));
    EXPECT_EQ(s.c_tx.seq, 0u);
    EXPECT_EQ(s.n_rx.seq, 0u);
}

// label | m1 | Ns | cipher, as secure.h documents it.
Bytes transcript(const char *label, const Bytes &m1, const uint8_t *ns, uint8_t cipher)
{
    Bytes t(label, label + strlen(label));
    t.insert(t.end(), m1.begin(), m1.end());
    t.insert(t.end(), ns, ns + PP_SEC_NONCE_LEN);
    t.push_back(cipher);
    return t;
}

Bytes hmac(const uint8_t *key, const Bytes &msg)
{
    Bytes tag(crypto_auth_BYTES);
    crypto_auth(tag.data(), msg.data(), msg.size(), key);
    return tag;
}

//// Record helpers

struct Sink {
    Bytes data;
    int calls = 0;
    int fail_at = -1;  // plain() returns -ECANCELED on this call index
};

int collect(void *ctx, const uint8_t *p, size_t n)
{
    Sink *s = static_cast<Sink *>(ctx);
    if (s->fail_at == s->calls)
        return -ECANCELED;
    EXPECT_GE(n, 1u);
    EXPECT_LE(n, PP_SEC_REC_MAX);
    s->calls++;
    s->data.insert(s->data.end(), p, p + n);
    return 0;
}

struct Tx {
    pp_sec_tx t;
    explicit Tx(const pp_sec_dir &d) { EXPECT_EQ(pp_sec_tx_init(&t, &d), 0); }
    ~Tx() { pp_sec_tx_exit(&t); }
    Bytes seal(const Bytes &plain)
    {
        Bytes out(pp_sec_sealed_size(plain.size()));
        size_t n = 1234567;
        EXPECT_EQ(pp_sec_seal(&t, plain.data(), plain.size(), out.data(), out.size(), &n), 0);
        EXPECT_EQ(n, out.size());
        return out;
    }
};

struct Rx {
    pp_sec_rx r;
    Sink sink;
    explicit Rx(const pp_sec_dir &d) { EXPECT_EQ(pp_sec_rx_init(&r, &d), 0); }
    ~Rx() { pp_sec_rx_exit(&r); }
    int feed(const uint8_t *p, size_t n) { return pp_sec_rx_feed(&r, p, n, collect, &sink); }
    int feed(const Bytes &b) { return feed(b.data(), b.size()); }
    // Feed b in slices of 1..max bytes (max 1: byte by byte); returns the
    // records delivered, or the first error.
    int feed_split(const Bytes &b, std::mt19937 &rng, size_t max)
    {
        std::uniform_int_distribution<size_t> d(1, max);
        size_t pos = 0;
        int recs = 0;
        while (pos < b.size()) {
            size_t n = std::min(b.size() - pos, max == 1 ? 1 : d(rng));
            int r = feed(b.data() + pos, n);
            if (r < 0)
                return r;
            recs += r;
            pos += n;
        }
        return recs;
    }
};

Bytes random_bytes(std::mt19937 &rng, size_t n)
{
    Bytes b(n);
    for (auto &x : b)
        x = (uint8_t)rng();
    return b;
}

pp_sec_dir dir_of(uint8_t cipher, uint8_t seed, uint64_t seq = 0)
{
    pp_sec_dir d{};
    d.cipher = cipher;
    for (unsigned i = 0; i < PP_SEC_KEY_LEN; i++)
        d.key[i] = (uint8_t)(seed + i * 7);
    d.seq = seq;
    return d;
}

Bytes cat(std::initializer_list<Bytes> parts)
{
    Bytes out;
    for (const auto &p : parts)
        out.insert(out.end(), p.begin(), p.end());
    return out;
}

// A raw record header with any L.
Bytes len_bytes(uint32_t l)
{
    Bytes h(4);
    pp_wire_put_u32(h.data(), l);
    return h;
}

}  // namespace

////  Key material

TEST(SecPsk, InitRejectsEmptyAndDerivesDeterministically)
{
    pp_sec_psk a{}, b{}, c{};
    EXPECT_EQ(pp_sec_psk_init(&a, nullptr, 5), -EINVAL);
    EXPECT_EQ(pp_sec_psk_init(&a, "x", 0), -EINVAL);
    EXPECT_EQ(pp_sec_psk_init(nullptr, "x", 1), -EINVAL);
    EXPECT_TRUE(zeroed(a));
    ASSERT_EQ(pp_sec_psk_init(&a, "secret", 6), 0);
    ASSERT_EQ(pp_sec_psk_init(&b, "secret", 6), 0);
    ASSERT_EQ(pp_sec_psk_init(&c, "secreT", 6), 0);
    EXPECT_EQ(memcmp(&a, &b, sizeof(a)), 0);
    EXPECT_NE(memcmp(a.k_auth, c.k_auth, PP_SEC_KEY_LEN), 0);
    EXPECT_NE(memcmp(a.k_auth, a.k_kdf, PP_SEC_KEY_LEN), 0);
    pp_sec_psk_wipe(&a);
    pp_sec_psk_wipe(&b);
    pp_sec_psk_wipe(&c);
    EXPECT_TRUE(zeroed(a));
}

TEST(SecPsk, WipedOrZeroedPskIsRefused)
{
    // A zeroed psk would be an all-zero "default secret": never accept it.
    pp_sec_psk z{};
    pp_sec_hs hs{};
    uint8_t m1[PP_SEC_M1_LEN], m2[PP_SEC_M2_LEN];
    EXPECT_EQ(pp_sec_client_start(&hs, &z, m1), -EINVAL);
    Psk p("s");
    ASSERT_EQ(pp_sec_client_start(&hs, &p.k, m1), 0);
    pp_sec_hs n{};
    EXPECT_EQ(pp_sec_node_reply(&n, &z, m1, sizeof(m1), m2), -EINVAL);
    pp_sec_hs_wipe(&hs);
}

////  Handshake

TEST(SecHandshake, DefaultCipherIsAesWhenAvailable)
{
    EnvCipher unset(nullptr);
    Psk p("correct horse battery staple");
    Session s;
    handshake(&p.k, &p.k, &s);
    uint8_t want = aes_ok() ? PP_SEC_AES256GCM : PP_SEC_CHACHA20;
    EXPECT_EQ(s.m1[4], aes_ok() ? PP_SEC_M1_F_AESGCM : 0u);
    EXPECT_EQ(s.m2[PP_SEC_NONCE_LEN], want);
    expect_paired(s, want);
}

TEST(SecHandshake, ChachaForcedByEnvironment)
{
    EnvCipher unset(nullptr);
    Psk p("s3cret");
    {
        ForceChacha f;
        Session s;
        handshake(&p.k, &p.k, &s);
        EXPECT_EQ(s.m1[4], 0u);  // not offered
        expect_paired(s, PP_SEC_CHACHA20);
    }
    // Either side alone is enough: a client that does not offer, and a
    // node that does not choose.
    {
        pp_sec_hs c{}, n{};
        Session s;
        {
            ForceChacha f;
            ASSERT_EQ(pp_sec_client_start(&c, &p.k, s.m1.data()), 0);
        }
        ASSERT_EQ(pp_sec_node_reply(&n, &p.k, s.m1.data(), s.m1.size(), s.m2.data()), 0);
        EXPECT_EQ(s.m2[PP_SEC_NONCE_LEN], PP_SEC_CHACHA20);
        pp_sec_hs_wipe(&c);
        pp_sec_hs_wipe(&n);
    }
    {
        pp_sec_hs c{}, n{};
        Session s;
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, s.m1.data()), 0);
        {
            ForceChacha f;
            ASSERT_EQ(pp_sec_node_reply(&n, &p.k, s.m1.data(), s.m1.size(), s.m2.data()), 0);
        }
        EXPECT_EQ(s.m2[PP_SEC_NONCE_LEN], PP_SEC_CHACHA20);
        ASSERT_EQ(pp_sec_client_finish(&c, s.m2.data(), s.m2.size(), s.m3.data()), 0);
        ASSERT_EQ(pp_sec_node_finish(&n, s.m3.data(), s.m3.size()), 0);
        ASSERT_EQ(pp_sec_hs_split(&c, &s.c_tx, &s.c_rx), 0);
        ASSERT_EQ(pp_sec_hs_split(&n, &s.n_tx, &s.n_rx), 0);
        expect_paired(s, PP_SEC_CHACHA20);
    }
    EXPECT_EQ(getenv("PP_NET_CIPHER"), nullptr);  // each ForceChacha restored it
    // Any other value means the default.
    EnvCipher other("aes256gcm");
    Session s;
    handshake(&p.k, &p.k, &s);
    expect_paired(s, aes_ok() ? PP_SEC_AES256GCM : PP_SEC_CHACHA20);
}

// Recompute the whole construction from secure.h's description with plain
// libsodium calls: pins the wire format and every label.
TEST(SecHandshake, MatchesTheDocumentedConstruction)
{
    const std::string secret = "a secret of any length";
    Psk p(secret);
    Session s;
    handshake(&p.k, &p.k, &s);

    uint8_t master[32], k_auth[32], k_kdf[32];
    Bytes in = {'p', 'p', '-', 'v', '1', ' ', 'p', 's', 'k'};
    in.insert(in.end(), secret.begin(), secret.end());
    crypto_generichash(master, 32, in.data(), in.size(), nullptr, 0);
    crypto_kdf_derive_from_key(k_auth, 32, 1, "pp-v1psk", master);
    crypto_kdf_derive_from_key(k_kdf, 32, 2, "pp-v1psk", master);
    EXPECT_EQ(memcmp(k_auth, p.k.k_auth, 32), 0);
    EXPECT_EQ(memcmp(k_kdf, p.k.k_kdf, 32), 0);

    EXPECT_EQ(memcmp(s.m1.data(), "PPH1", 4), 0);
    const uint8_t *ns = s.m2.data();
    uint8_t cipher = s.m2[PP_SEC_NONCE_LEN];
    Bytes tag_s = hmac(k_auth, transcript("pp-v1 node", s.m1, ns, cipher));
    EXPECT_EQ(Bytes(s.m2.begin() + 33, s.m2.end()), tag_s);
    EXPECT_EQ(s.m3, hmac(k_auth, transcript("pp-v1 client", s.m1, ns, cipher)));

    Bytes t = transcript("pp-v1 keys", s.m1, ns, cipher);
    uint8_t keys[64];
    crypto_generichash(keys, 64, t.data(), t.size(), k_kdf, 32);
    EXPECT_EQ(memcmp(keys, s.c_tx.key, 32), 0);
    EXPECT_EQ(memcmp(keys + 32, s.c_rx.key, 32), 0);
}

TEST(SecHandshake, NodeWithWrongSecretFailsClientFinish)
{
    Psk good("the secret"), bad("the secreu");
    pp_sec_hs c{}, n{};
    Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3(PP_SEC_M3_LEN, 0xAA);
    ASSERT_EQ(pp_sec_client_start(&c, &good.k, m1.data()), 0);
    ASSERT_EQ(pp_sec_node_reply(&n, &bad.k, m1.data(), m1.size(), m2.data()), 0);
    EXPECT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data()), -EACCES);
    EXPECT_TRUE(zeroed(c));                    // wiped on failure
    EXPECT_EQ(m3, Bytes(PP_SEC_M3_LEN, 0xAA));  // nothing written
    pp_sec_dir tx, rx;
    EXPECT_EQ(pp_sec_hs_split(&c, &tx, &rx), -EPROTO);
    pp_sec_hs_wipe(&n);
}

TEST(SecHandshake, ClientWithWrongSecretFailsNodeFinish)
{
    Psk good("the secret"), bad("another secret");
    for (int forged = 0; forged < 2; forged++) {
        pp_sec_hs c{}, n{};
        Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3;
        ASSERT_EQ(pp_sec_client_start(&c, &bad.k, m1.data()), 0);
        ASSERT_EQ(pp_sec_node_reply(&n, &good.k, m1.data(), m1.size(), m2.data()), 0);
        // This client cannot verify m2, so it would stop here; an attacker
        // sends a tag made with what it knows, or just random bytes.
        EXPECT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), Bytes(32).data()), -EACCES);
        if (forged)
            m3 = hmac(bad.k.k_auth, transcript("pp-v1 client", m1, m2.data(), m2[32]));
        else
            m3 = Bytes(PP_SEC_M3_LEN, 0x5c);
        EXPECT_EQ(pp_sec_node_finish(&n, m3.data(), m3.size()), -EACCES);
        EXPECT_TRUE(zeroed(n));
    }
}

TEST(SecHandshake, EveryTamperedByteIsRejected)
{
    Psk p("tamper");
    for (uint8_t mask : {0x01, 0x80}) {
        // m1: a flip in magic or flags is malformed; in the offer or Nc it
        // passes the node but breaks its tag for the real client.
        for (size_t i = 0; i < PP_SEC_M1_LEN; i++) {
            pp_sec_hs c{}, n{};
            Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3(PP_SEC_M3_LEN);
            ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
            m1[i] ^= mask;
            int r = pp_sec_node_reply(&n, &p.k, m1.data(), m1.size(), m2.data());
            bool malformed = i < 4 || (i == 4 && mask != PP_SEC_M1_F_AESGCM);
            if (malformed) {
                EXPECT_EQ(r, -EPROTO) << i;
            } else {
                EXPECT_EQ(r, 0) << i;
                EXPECT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data()), -EACCES) << i;
            }
            pp_sec_hs_wipe(&c);
            pp_sec_hs_wipe(&n);
        }
        // m2: the client refuses each flip (tag, or cipher it did not offer).
        for (size_t i = 0; i < PP_SEC_M2_LEN; i++) {
            pp_sec_hs c{}, n{};
            Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3(PP_SEC_M3_LEN);
            ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
            ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1.data(), m1.size(), m2.data()), 0);
            m2[i] ^= mask;
            int r = pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data());
            EXPECT_TRUE(r == -EACCES || r == -EPROTO) << i << " " << r;
            pp_sec_hs_wipe(&n);
        }
        // m3: the node refuses each flip.
        for (size_t i = 0; i < PP_SEC_M3_LEN; i++) {
            pp_sec_hs c{}, n{};
            Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3(PP_SEC_M3_LEN);
            ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
            ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1.data(), m1.size(), m2.data()), 0);
            ASSERT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data()), 0);
            m3[i] ^= mask;
            EXPECT_EQ(pp_sec_node_finish(&n, m3.data(), m3.size()), -EACCES) << i;
            pp_sec_hs_wipe(&c);
        }
    }
}

TEST(SecHandshake, ReflectedNodeTagIsRejected)
{
    // An attacker without the secret answers the node's challenge with the
    // node's own tag: the role labels make it the wrong tag.
    Psk p("reflect");
    pp_sec_hs c{}, n{};
    Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN);
    ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
    ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1.data(), m1.size(), m2.data()), 0);
    EXPECT_EQ(pp_sec_node_finish(&n, m2.data() + 33, PP_SEC_M3_LEN), -EACCES);
    pp_sec_hs_wipe(&c);
}

TEST(SecHandshake, ReplayedTranscriptIsRejected)
{
    // A recorded m1 and m3 replayed to a node: its fresh Ns makes the old
    // m3 worthless.
    Psk p("replay");
    Session s;
    handshake(&p.k, &p.k, &s);
    pp_sec_hs n{};
    Bytes m2(PP_SEC_M2_LEN);
    ASSERT_EQ(pp_sec_node_reply(&n, &p.k, s.m1.data(), s.m1.size(), m2.data()), 0);
    EXPECT_NE(m2, s.m2);
    EXPECT_EQ(pp_sec_node_finish(&n, s.m3.data(), s.m3.size()), -EACCES);
    // And an old m2 replayed to a new client: its fresh Nc breaks the tag.
    pp_sec_hs c{};
    Bytes m1(PP_SEC_M1_LEN), m3(PP_SEC_M3_LEN);
    ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
    EXPECT_EQ(pp_sec_client_finish(&c, s.m2.data(), s.m2.size(), m3.data()), -EACCES);
}

TEST(SecHandshake, OutOfOrderCallsAreProtocolErrors)
{
    Psk p("order");
    uint8_t m1[PP_SEC_M1_LEN], m2[PP_SEC_M2_LEN], m3[PP_SEC_M3_LEN];
    pp_sec_dir tx, rx;
    {
        pp_sec_hs hs{};
        EXPECT_EQ(pp_sec_client_finish(&hs, m2, sizeof(m2), m3), -EPROTO);
        EXPECT_EQ(pp_sec_node_finish(&hs, m3, sizeof(m3)), -EPROTO);
        EXPECT_EQ(pp_sec_hs_split(&hs, &tx, &rx), -EPROTO);
    }
    {
        pp_sec_hs c{};
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1), 0);
        EXPECT_EQ(pp_sec_client_start(&c, &p.k, m1), -EPROTO);  // twice
        EXPECT_TRUE(zeroed(c));
    }
    struct Step { const char *what; int (*call)(pp_sec_hs *, const pp_sec_psk *); };
    // Each wrong call on a client hs that has sent m1.
    const Step on_client[] = {
        { "node_finish", [](pp_sec_hs *h, const pp_sec_psk *) {
              uint8_t m[PP_SEC_M3_LEN] = {0};
              return pp_sec_node_finish(h, m, sizeof(m)); } },
        { "node_reply", [](pp_sec_hs *h, const pp_sec_psk *k) {
              uint8_t a[PP_SEC_M1_LEN], b[PP_SEC_M2_LEN];
              memcpy(a, "PPH1", 4);
              memset(a + 4, 0, sizeof(a) - 4);
              return pp_sec_node_reply(h, k, a, sizeof(a), b); } },
        { "split", [](pp_sec_hs *h, const pp_sec_psk *) {
              pp_sec_dir t, r;
              return pp_sec_hs_split(h, &t, &r); } },
    };
    for (const Step &st : on_client) {
        pp_sec_hs c{};
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1), 0);
        EXPECT_EQ(st.call(&c, &p.k), -EPROTO) << st.what;
        EXPECT_TRUE(zeroed(c)) << st.what;
    }
    // Each wrong call on a node hs that has sent m2.
    {
        pp_sec_hs c{}, n{};
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1), 0);
        ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1, sizeof(m1), m2), 0);
        EXPECT_EQ(pp_sec_client_finish(&n, m2, sizeof(m2), m3), -EPROTO);
        EXPECT_TRUE(zeroed(n));
        ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1, sizeof(m1), m2), 0);
        EXPECT_EQ(pp_sec_hs_split(&n, &tx, &rx), -EPROTO);
        ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1, sizeof(m1), m2), 0);
        EXPECT_EQ(pp_sec_node_reply(&n, &p.k, m1, sizeof(m1), m2), -EPROTO);
        pp_sec_hs_wipe(&c);
    }
    // A finished hs accepts only split.
    {
        pp_sec_hs c{}, n{};
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1), 0);
        ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1, sizeof(m1), m2), 0);
        ASSERT_EQ(pp_sec_client_finish(&c, m2, sizeof(m2), m3), 0);
        EXPECT_EQ(pp_sec_client_finish(&c, m2, sizeof(m2), m3), -EPROTO);
        ASSERT_EQ(pp_sec_node_finish(&n, m3, sizeof(m3)), 0);
        EXPECT_EQ(pp_sec_node_finish(&n, m3, sizeof(m3)), -EPROTO);
        EXPECT_EQ(pp_sec_hs_split(&n, &tx, &rx), -EPROTO);  // already wiped
    }
    // -EINVAL for bad arguments, and the hs survives it.
    {
        pp_sec_hs c{};
        ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1), 0);
        EXPECT_EQ(pp_sec_client_finish(&c, nullptr, 5, m3), -EINVAL);
        EXPECT_EQ(pp_sec_client_finish(&c, m2, sizeof(m2), nullptr), -EINVAL);
        EXPECT_EQ(pp_sec_client_finish(nullptr, m2, sizeof(m2), m3), -EINVAL);
        EXPECT_EQ(pp_sec_hs_split(&c, nullptr, &rx), -EINVAL);
        EXPECT_FALSE(zeroed(c));
        EXPECT_EQ(pp_sec_client_start(&c, nullptr, m1), -EINVAL);
        EXPECT_EQ(pp_sec_node_reply(&c, &p.k, m1, sizeof(m1), nullptr), -EINVAL);
        EXPECT_FALSE(zeroed(c));
        pp_sec_hs_wipe(&c);
    }
}

TEST(SecHandshake, BadLengthsMagicAndFlags)
{
    Psk p("lengths");
    Bytes m1(PP_SEC_M1_LEN), m2(PP_SEC_M2_LEN), m3(PP_SEC_M3_LEN), big(100);
    pp_sec_hs c{};
    ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
    memcpy(big.data(), m1.data(), m1.size());
    for (size_t len : {0, 1, 36, 38, 100}) {
        pp_sec_hs n{};
        EXPECT_EQ(pp_sec_node_reply(&n, &p.k, big.data(), len, m2.data()), -EPROTO) << len;
        EXPECT_TRUE(zeroed(n));
    }
    {
        pp_sec_hs n{};
        EXPECT_EQ(pp_sec_node_reply(&n, &p.k, nullptr, 0, m2.data()), -EPROTO);
    }
    for (auto bad : {std::make_pair(0, 'Q'), std::make_pair(3, '2'), std::make_pair(4, '\x02'),
                     std::make_pair(4, '\x80'), std::make_pair(4, '\x03')}) {
        Bytes b = m1;
        b[bad.first] = (uint8_t)bad.second;
        pp_sec_hs n{};
        EXPECT_EQ(pp_sec_node_reply(&n, &p.k, b.data(), b.size(), m2.data()), -EPROTO)
            << bad.first << " " << (int)bad.second;
    }
    pp_sec_hs n{};
    ASSERT_EQ(pp_sec_node_reply(&n, &p.k, m1.data(), m1.size(), m2.data()), 0);
    Bytes m2big = m2;
    m2big.push_back(0);
    for (size_t len : {0, 64, 66}) {
        pp_sec_hs cc = c;  // the same client state each time
        EXPECT_EQ(pp_sec_client_finish(&cc, m2big.data(), len, m3.data()), -EPROTO) << len;
        EXPECT_TRUE(zeroed(cc));
    }
    ASSERT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data()), 0);
    Bytes m3big = m3;
    m3big.push_back(0);
    for (size_t len : {0, 31, 33}) {
        pp_sec_hs nn = n;
        EXPECT_EQ(pp_sec_node_finish(&nn, m3big.data(), len), -EPROTO) << len;
        EXPECT_TRUE(zeroed(nn));
    }
    EXPECT_EQ(pp_sec_node_finish(&n, m3.data(), m3.size()), 0);
    pp_sec_hs_wipe(&c);
    pp_sec_hs_wipe(&n);
}

TEST(SecHandshake, AuthenticNodeChoosingAnUnofferedCipherIsRefused)
{
    // A node holding the secret but misbehaving: its tag verifies, so only
    // the cipher check stops it.
    Psk p("cipher");
    for (uint8_t cipher : {0, 2, 3, 255}) {
        pp_sec_hs c{};
        Bytes m1(PP_SEC_M1_LEN), m3(PP_SEC_M3_LEN);
        {
            ForceChacha f;  // the client does not offer AES-GCM
            ASSERT_EQ(pp_sec_client_start(&c, &p.k, m1.data()), 0);
        }
        Bytes m2(PP_SEC_NONCE_LEN, 0x11);
        m2.push_back(cipher);
        Bytes tag = hmac(p.k.k_auth, transcript("pp-v1 node", m1, m2.data(), cipher));
        m2.insert(m2.end(), tag.begin(), tag.end());
        EXPECT_EQ(pp_sec_client_finish(&c, m2.data(), m2.size(), m3.data()), -EPROTO) << (int)cipher;
    }
}

////  Records

TEST(SecRecord, SealedSizeArithmetic)
{
    const size_t M = PP_SEC_REC_MAX, O = PP_SEC_REC_OVERHEAD;
    EXPECT_EQ(O, 20u);
    EXPECT_EQ(pp_sec_sealed_size(0), 0u);
    EXPECT_EQ(pp_sec_sealed_size(1), 21u);
    EXPECT_EQ(pp_sec_sealed_size(M - 1), M - 1 + O);
    EXPECT_EQ(pp_sec_sealed_size(M), M + O);
    EXPECT_EQ(pp_sec_sealed_size(M + 1), M + 1 + 2 * O);
    EXPECT_EQ(pp_sec_sealed_size(4 * M), 4 * M + 4 * O);
    EXPECT_EQ(pp_sec_sealed_size((1u << 20) + 5), (1u << 20) + 5 + 5 * O);
    EXPECT_EQ(pp_sec_sealed_size(SIZE_MAX), SIZE_MAX);
    EXPECT_EQ(pp_sec_sealed_size(SIZE_MAX - 30), SIZE_MAX);
}

TEST(SecRecord, RandomStreamsSurviveEverySlicing)
{
    std::mt19937 rng(7);
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        // Slice limits: byte by byte, tiny, around one record, whole.
        for (size_t max : {(size_t)1, (size_t)7, (size_t)PP_SEC_REC_MAX + 100, (size_t)8 << 20}) {
            SCOPED_TRACE(max);
            pp_sec_dir d = dir_of(cipher, (uint8_t)max);
            Tx tx(d);
            Rx rx(d);
            Bytes all, wire;
            // 1 MiB and some, in seal calls of random sizes (0 included),
            // so records of every size and several full ones.
            std::uniform_int_distribution<size_t> sz(0, 600 << 10);
            for (bool first = true; all.size() < (1u << 20); first = false) {
                size_t n = first ? 0 : sz(rng);
                Bytes chunk = random_bytes(rng, n);
                Bytes sealed = tx.seal(chunk);
                all.insert(all.end(), chunk.begin(), chunk.end());
                wire.insert(wire.end(), sealed.begin(), sealed.end());
            }
            int r = rx.feed_split(wire, rng, max);
            ASSERT_GE(r, 0) << pp_sec_rx_error(&rx.r);
            EXPECT_EQ(r, rx.sink.calls);
            EXPECT_EQ((uint64_t)rx.sink.calls, tx.t.seq);
            EXPECT_GT(rx.sink.calls, 4);
            EXPECT_TRUE(rx.sink.data == all);
            EXPECT_TRUE(pp_sec_rx_idle(&rx.r));
        }
    }
}

TEST(SecRecord, SessionCarriesBothDirections)
{
    Psk p("both ways");
    std::mt19937 rng(11);
    for (int force = 0; force < 2; force++) {
        Session s;
        if (force) {
            ForceChacha f;
            handshake(&p.k, &p.k, &s);
        } else {
            handshake(&p.k, &p.k, &s);
        }
        Tx ctx(s.c_tx), ntx(s.n_tx);
        Rx crx(s.c_rx), nrx(s.n_rx);
        Bytes up = random_bytes(rng, 3000), down = random_bytes(rng, 70000);
        EXPECT_EQ(nrx.feed_split(ctx.seal(up), rng, 100), 1);
        EXPECT_EQ(crx.feed_split(ntx.seal(down), rng, 1000), 1);
        EXPECT_EQ(nrx.sink.data, up);
        EXPECT_EQ(crx.sink.data, down);
        // A record sent the other way fails: each direction has its key.
        Bytes again = ctx.seal(up);
        Rx wrong(s.c_rx);
        EXPECT_EQ(wrong.feed(again), -EBADMSG);
        Rx own(s.c_tx);  // the sender's own key but the wrong seq
        EXPECT_EQ(own.feed(again), -EBADMSG);
        EXPECT_EQ(own.sink.calls, 0);
    }
}

namespace {

// Three records with distinct plaintexts, sealed separately.
struct Three {
    Bytes p[3], rec[3];
    explicit Three(const pp_sec_dir &d)
    {
        std::mt19937 rng(3);
        Tx tx(d);
        for (int i = 0; i < 3; i++) {
            p[i] = random_bytes(rng, 100 + 30 * (size_t)i);
            rec[i] = tx.seal(p[i]);
        }
    }
};

}  // namespace

TEST(SecRecord, ReplayedSwappedDroppedRecordsAreRejected)
{
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        pp_sec_dir d = dir_of(cipher, 1);
        Three t(d);
        struct Case { const char *what; Bytes stream; int delivered; };
        const Case cases[] = {
            { "replayed", cat({t.rec[0], t.rec[0], t.rec[1]}), 1 },
            { "swapped",  cat({t.rec[1], t.rec[0], t.rec[2]}), 0 },
            { "dropped",  cat({t.rec[0], t.rec[2]}), 1 },
            { "dup last", cat({t.rec[0], t.rec[1], t.rec[2], t.rec[2]}), 3 },
        };
        for (const Case &c : cases) {
            Rx rx(d);
            EXPECT_EQ(rx.feed(c.stream), -EBADMSG) << c.what;
            EXPECT_EQ(rx.sink.calls, c.delivered) << c.what;
            Bytes want;
            for (int i = 0; i < c.delivered; i++)
                want.insert(want.end(), t.p[i].begin(), t.p[i].end());
            EXPECT_EQ(rx.sink.data, want) << c.what;
            EXPECT_STREQ(pp_sec_rx_error(&rx.r), "record failed authentication");
        }
    }
}

TEST(SecRecord, EveryFlippedBitStopsTheStream)
{
    std::mt19937 rng(5);
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        pp_sec_dir d = dir_of(cipher, 2);
        Three t(d);
        Bytes good = cat({t.rec[0], t.rec[1], t.rec[2]});
        size_t start = t.rec[0].size(), end = start + t.rec[1].size();
        for (size_t i = start; i < end; i++) {
            for (int bit = 0; bit < 8; bit++) {
                Bytes b = good;
                b[i] ^= (uint8_t)(1u << bit);
                Rx rx(d);
                // Alternate slicings so both decrypt paths see flips.
                int r = (bit & 1) ? rx.feed(b) : rx.feed_split(b, rng, 40);
                EXPECT_EQ(rx.sink.data, t.p[0]) << i << ":" << bit;
                if (i >= start + 4) {
                    EXPECT_EQ(r, -EBADMSG) << i << ":" << bit;
                } else {
                    // A longer L waits for bytes that never come; any other
                    // L fails its tag or its bounds.
                    EXPECT_TRUE(r < 0 || !pp_sec_rx_idle(&rx.r)) << i << ":" << bit;
                }
            }
        }
    }
}

TEST(SecRecord, ErrorsAreSticky)
{
    pp_sec_dir d = dir_of(PP_SEC_CHACHA20, 3);
    Three t(d);
    Rx rx(d);
    Bytes bad = t.rec[0];
    bad.back() ^= 1;  // tag
    EXPECT_EQ(rx.feed(bad), -EBADMSG);
    EXPECT_FALSE(pp_sec_rx_idle(&rx.r));
    // The genuine record now: still refused, nothing delivered.
    EXPECT_EQ(rx.feed(t.rec[0]), -EBADMSG);
    EXPECT_EQ(rx.feed(t.rec[0].data(), 0), -EBADMSG);
    EXPECT_EQ(rx.sink.calls, 0);
    pp_sec_dir out;
    EXPECT_EQ(pp_sec_rx_export(&rx.r, &out), -EBADMSG);
    EXPECT_STREQ(pp_sec_rx_error(&rx.r), "record failed authentication");
    // -EINVAL is not sticky and does not replace the error.
    EXPECT_EQ(pp_sec_rx_feed(&rx.r, nullptr, 3, collect, &rx.sink), -EINVAL);
    EXPECT_EQ(pp_sec_rx_feed(&rx.r, t.rec[1].data(), 3, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(rx.feed(t.rec[1]), -EBADMSG);
    EXPECT_EQ(pp_sec_rx_error(nullptr), nullptr);
}

TEST(SecRecord, ConsumerErrorBecomesSticky)
{
    pp_sec_dir d = dir_of(PP_SEC_CHACHA20, 4);
    Three t(d);
    Rx rx(d);
    rx.sink.fail_at = 1;
    EXPECT_EQ(rx.feed(cat({t.rec[0], t.rec[1], t.rec[2]})), -ECANCELED);
    EXPECT_EQ(rx.sink.calls, 1);
    EXPECT_EQ(rx.feed(t.rec[2]), -ECANCELED);
    EXPECT_EQ(rx.sink.calls, 1);
    EXPECT_STREQ(pp_sec_rx_error(&rx.r), "record rejected by its consumer");
    EXPECT_EQ(rx.sink.data, t.p[0]);
}

TEST(SecRecord, ExportedDirectionsContinueTheStream)
{
    std::mt19937 rng(9);
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        pp_sec_dir d = dir_of(cipher, 5);
        Bytes a = random_bytes(rng, PP_SEC_REC_MAX + 10), b = random_bytes(rng, 500);
        Bytes c = random_bytes(rng, 77);
        Bytes wire;
        pp_sec_dir mid;
        {
            Tx tx(d);
            wire = tx.seal(a);
            pp_sec_tx_export(&tx.t, &mid);
            EXPECT_EQ(mid.seq, 2u);
        }  // the exporter stops here
        {
            // As if through a pipe: the dir is plain bytes.
            uint8_t pipe[sizeof(pp_sec_dir)];
            memcpy(pipe, &mid, sizeof(pipe));
            pp_sec_dir in;
            memcpy(&in, pipe, sizeof(in));
            Tx tx2(in);
            Bytes more = cat({tx2.seal(b), tx2.seal(c)});
            wire.insert(wire.end(), more.begin(), more.end());
        }
        // One receiver keeps decoding across the hand-over...
        Rx rx(d);
        EXPECT_EQ(rx.feed_split(wire, rng, 5000), 4);
        EXPECT_EQ(rx.sink.data, cat({a, b, c}));
        // ...and a receiver handed over between records does too.
        Rx rx1(d);
        size_t cut = pp_sec_sealed_size(a.size()) + pp_sec_sealed_size(b.size());
        EXPECT_EQ(rx1.feed(wire.data(), cut), 3);
        EXPECT_EQ(rx1.feed(wire.data() + cut, 3), 0);
        pp_sec_dir rmid;
        EXPECT_EQ(pp_sec_rx_export(&rx1.r, &rmid), -EBUSY);  // 3 length bytes in
        Rx rx1b(d);
        EXPECT_EQ(rx1b.feed(wire.data(), cut), 3);
        ASSERT_EQ(pp_sec_rx_export(&rx1b.r, &rmid), 0);
        EXPECT_EQ(rmid.seq, 3u);
        Rx rx2(rmid);
        EXPECT_EQ(rx2.feed(wire.data() + cut, wire.size() - cut), 1);
        EXPECT_EQ(rx2.sink.data, c);
    }
}

TEST(SecRecord, LengthBoundaries)
{
    std::mt19937 rng(13);
    const size_t M = PP_SEC_REC_MAX;
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        pp_sec_dir d = dir_of(cipher, 6);
        for (size_t n : {(size_t)0, (size_t)1, (size_t)16, M - 1, M, M + 1, 2 * M}) {
            Tx tx(d);
            Rx rx(d);
            Bytes p = random_bytes(rng, n);
            Bytes w = tx.seal(p);
            ASSERT_EQ(w.size(), pp_sec_sealed_size(n));
            if (n) {
                EXPECT_EQ(pp_wire_get_u32(w.data()), std::min(n, M) + PP_SEC_TAG_LEN) << n;
            }
            int want = (int)((n + M - 1) / M);
            EXPECT_EQ(rx.feed(w), want) << n;
            EXPECT_EQ(rx.sink.data, p) << n;
        }
        // Raw lengths: judged the moment the 4th byte arrives, even one
        // byte at a time, before any body byte.
        struct Case { uint32_t l; int err; };
        const Case cases[] = {
            { 0, -EPROTO }, { 1, -EPROTO }, { 16, -EPROTO }, { 17, 0 },
            { (uint32_t)M + 16, 0 }, { (uint32_t)M + 17, -EMSGSIZE }, { UINT32_MAX, -EMSGSIZE },
        };
        for (const Case &c : cases) {
            Rx rx(d);
            Bytes h = len_bytes(c.l);
            for (int i = 0; i < 3; i++) {
                EXPECT_EQ(rx.feed(&h[i], 1), 0) << c.l;
                EXPECT_FALSE(pp_sec_rx_idle(&rx.r));
            }
            EXPECT_EQ(rx.feed(&h[3], 1), c.err) << c.l;
            if (c.err == 0) {
                // A well-sized record of garbage still fails its tag.
                Bytes body(c.l, 0x42);
                EXPECT_EQ(rx.feed(body), -EBADMSG) << c.l;
            } else {
                EXPECT_NE(pp_sec_rx_error(&rx.r), nullptr);
            }
        }
        {
            Rx rx(d);
            EXPECT_EQ(rx.feed(len_bytes((uint32_t)M + 17)), -EMSGSIZE);
            EXPECT_STREQ(pp_sec_rx_error(&rx.r), "record longer than the maximum");
        }
    }
}

TEST(SecRecord, IdleOnlyBetweenRecords)
{
    pp_sec_dir d = dir_of(PP_SEC_CHACHA20, 7);
    Three t(d);
    Rx rx(d);
    EXPECT_TRUE(pp_sec_rx_idle(&rx.r));
    EXPECT_FALSE(pp_sec_rx_idle(nullptr));
    for (int r = 0; r < 2; r++) {
        const Bytes &rec = t.rec[r];
        for (size_t i = 0; i + 1 < rec.size(); i++) {
            ASSERT_EQ(rx.feed(&rec[i], 1), 0);
            EXPECT_FALSE(pp_sec_rx_idle(&rx.r)) << r << ":" << i;
        }
        EXPECT_EQ(rx.feed(&rec.back(), 1), 1);
        EXPECT_TRUE(pp_sec_rx_idle(&rx.r));
    }
    EXPECT_EQ(rx.sink.data, cat({t.p[0], t.p[1]}));
}

TEST(SecRecord, SealArgumentsAndBuffers)
{
    pp_sec_dir d = dir_of(PP_SEC_CHACHA20, 8);
    Tx tx(d);
    Bytes p(1000, 0x33);
    size_t need = pp_sec_sealed_size(p.size()), n = 99;
    Bytes out(need + 3, 0xEE);
    // Too small: -ENOBUFS, nothing written, seq unchanged.
    EXPECT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data(), need - 1, &n), -ENOBUFS);
    EXPECT_EQ(n, 99u);
    EXPECT_EQ(out, Bytes(need + 3, 0xEE));
    EXPECT_EQ(tx.t.seq, 0u);
    EXPECT_EQ(pp_sec_seal(&tx.t, nullptr, 5, out.data(), out.size(), &n), -EINVAL);
    EXPECT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), nullptr, out.size(), &n), -EINVAL);
    EXPECT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data(), out.size(), nullptr), -EINVAL);
    EXPECT_EQ(pp_sec_seal(nullptr, p.data(), p.size(), out.data(), out.size(), &n), -EINVAL);
    // Empty: nothing to write, no record, any buffer.
    EXPECT_EQ(pp_sec_seal(&tx.t, nullptr, 0, nullptr, 0, &n), 0);
    EXPECT_EQ(n, 0u);
    EXPECT_EQ(tx.t.seq, 0u);
    // After other data in a buffer, unaligned.
    ASSERT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data() + 3, need, &n), 0);
    EXPECT_EQ(n, need);
    Rx rx(d);
    EXPECT_EQ(rx.feed(out.data() + 3, n), 1);
    EXPECT_EQ(rx.sink.data, p);
    // A tx after exit refuses to seal.
    pp_sec_tx_exit(&tx.t);
    EXPECT_TRUE(zeroed(tx.t));
    EXPECT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data(), out.size(), &n), -EINVAL);
}

TEST(SecRecord, InitRejectsUnknownCiphers)
{
    for (uint8_t cipher : {0, 3, 255}) {
        pp_sec_dir d = dir_of(cipher, 9);
        pp_sec_tx tx;
        pp_sec_rx rx;
        EXPECT_EQ(pp_sec_tx_init(&tx, &d), -EINVAL);
        EXPECT_EQ(pp_sec_rx_init(&rx, &d), -EINVAL);
    }
    pp_sec_dir d = dir_of(PP_SEC_CHACHA20, 9);
    pp_sec_rx rx{};
    EXPECT_EQ(pp_sec_rx_init(nullptr, &d), -EINVAL);
    EXPECT_EQ(pp_sec_rx_init(&rx, nullptr), -EINVAL);
    uint8_t b = 0;
    EXPECT_EQ(pp_sec_rx_feed(&rx, &b, 1, collect, nullptr), -EINVAL);  // never initialised
    pp_sec_rx_exit(&rx);  // safe on a zeroed rx
    pp_sec_tx tx{};
    pp_sec_tx_exit(&tx);
}

TEST(SecRecord, SequenceNumberExhaustion)
{
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        pp_sec_dir d = dir_of(cipher, 10, UINT64_MAX - 1);
        Tx tx(d);
        Bytes p(10, 1), out(200);
        size_t n = 0;
        // Two records would need seq UINT64_MAX: refused whole.
        Bytes two(PP_SEC_REC_MAX + 1);
        Bytes out2(pp_sec_sealed_size(two.size()));
        EXPECT_EQ(pp_sec_seal(&tx.t, two.data(), two.size(), out2.data(), out2.size(), &n), -EOVERFLOW);
        EXPECT_EQ(tx.t.seq, UINT64_MAX - 1);
        ASSERT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data(), out.size(), &n), 0);
        EXPECT_EQ(pp_sec_seal(&tx.t, p.data(), p.size(), out.data() + n, out.size() - n, &n),
                  -EOVERFLOW);
        Rx rx(d);
        EXPECT_EQ(rx.feed(out.data(), 30), 1);
        EXPECT_EQ(rx.sink.data, p);
        // Any further record is refused as soon as its length is in.
        EXPECT_EQ(rx.feed(len_bytes(30)), -EOVERFLOW);
    }
}

// Open sealed records with plain libsodium calls, from secure.h's
// description: pins the record format (length, AD, nonce, tag position).
TEST(SecRecord, MatchesTheDocumentedFormat)
{
    std::mt19937 rng(17);
    for (uint8_t cipher : ciphers()) {
        SCOPED_TRACE(cipher);
        const uint64_t seq = 0x0102030405060708ull;
        pp_sec_dir d = dir_of(cipher, 11, seq);
        Tx tx(d);
        Bytes p = random_bytes(rng, 300);
        Bytes w = tx.seal(p);
        ASSERT_EQ(w.size(), 4 + p.size() + 16);
        EXPECT_EQ(pp_wire_get_u32(w.data()), p.size() + 16);
        uint8_t nonce[12] = {0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
        Bytes m(p.size());
        const uint8_t *c = w.data() + 4, *mac = c + p.size();
        int r = cipher == PP_SEC_AES256GCM
            ? crypto_aead_aes256gcm_decrypt_detached(m.data(), nullptr, c, p.size(), mac,
                                                     w.data(), 4, nonce, d.key)
            : crypto_aead_chacha20poly1305_ietf_decrypt_detached(m.data(), nullptr, c, p.size(), mac,
                                                                 w.data(), 4, nonce, d.key);
        EXPECT_EQ(r, 0);
        EXPECT_EQ(m, p);
        EXPECT_EQ(tx.t.seq, seq + 1);
    }
}
